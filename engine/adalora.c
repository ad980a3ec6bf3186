/* adalora: AdaLoRA, adaptive budget allocation for LoRA (Zhang et al., ICLR 2023), as PEFT's
 * AdaLoraModel / RankAllocator compute it (peft-spec.md section 2; where PEFT's code and the paper
 * differ, the code wins: Frobenius norm not squared, ranknum fixed at init_r).
 *
 * Per site, r = init_r and the trainable floats are [A (r x in) | E (r) | B (out x r)], PEFT's
 * lora_A (Q), lora_E (the singular values λ, saved as (r, 1)) and lora_B (P). With
 * scale = lora_alpha (or r when lora_alpha <= 0) / (init_r + 1e-5):
 *
 *     y += ((drop(x)·(A⊙E)ᵀ)·Bᵀ)·scale          (A⊙E scales row i of A by E_i)
 *
 * Saved for backward, per row: u = drop(x)·(A⊙E)ᵀ (r). Backward (g = dL/dy): dB += scale·gᵀ·u;
 * du = scale·g·B; dAE = duᵀ·drop(x); dA += dAE ⊙ E (row-wise); dE_i += Σ_j dAE_ij·A_ij;
 * dx += drop'(du·(A⊙E)).
 *
 * Orthogonality regulariser (reg_loss): R = (1/n)·Σ_sites (‖A·Aᵀ − I‖_F + ‖Bᵀ·B − I‖_F), n = 2·sites.
 *
 * Rank allocation (on_step, PEFT's update_and_allocate, called after the optimizer step with the
 * step's gradients still in a->grads): the importance EMAs Ī, Ū of |p·∇p| over every A, E, B
 * float; triplet scores S_i = s(E_i) + mean_j s(A_ij) + mean_o s(B_oi) with s = Ī⊙Ū; the cubic
 * budget b(t); masking zeroes E_i wherever S_i <= the (init_bgt − b)-th smallest score (ties are
 * all pruned) and records the mask (PEFT's rank_pattern). Pruned triplets stay in memory and stay
 * trainable (their E may regrow until the next mask), as in PEFT; after the final mask at
 * t == total_step − tfinal the stored mask is re-applied every step.
 *
 * Saving truncates each site to its kept triplets (lora_A (r_k, in), lora_E (r_k, 1), lora_B
 * (out, r_k)) and writes the masks as the boolean rank_pattern of adapter_config.json, keyed
 * "model.layers.N.self_attn.q_proj.lora_E"; loading reads the pattern first (config_load) and
 * scatters the truncated tensors back into the full-size layout, the pruned entries zero. The
 * scale keeps init_r in its denominator after loading, as PEFT restores ranknum.
 */
#include "adapter.h"
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int r;               /* init_r */
    int n_active;
    float *ipt_avg;      /* Ī, same layout as params, then Ū in the same allocation */
    float *unc_avg;      /* Ū = ipt_avg + n_params */
    float *scores;       /* init_bgt triplet scores, site order */
    float *sorted;       /* copy of scores for the threshold */
    uint8_t *mask;       /* n_sites x r: 1 = kept; meaningful when has_pattern */
    int has_pattern;
    float *ae, *dae;     /* A⊙E and its gradient, r x max in */
    float *export_buf;   /* truncated copies handed to the writer (alive until the next export) */
} AdaLora;

static size_t site_index(const Adapter *a, const AdapterSite *s) { return (size_t)(s - a->sites); }

static size_t adalora_site_size(Adapter *a, AdapterSite *s) {
    /* PEFT creates every AdaLoRA layer at init_r (LoraConfig's r, rank_pattern and alpha_pattern
     * do not apply) and never changes ranknum. */
    s->r = a->cfg.init_r;
    s->alpha = a->cfg.alpha;
    float scaling = a->cfg.alpha > 0.0f ? a->cfg.alpha : (float)s->r;
    s->scale = scaling / ((float)a->cfg.init_r + 1e-5f);
    return (size_t)s->r * s->in + (size_t)s->r + (size_t)s->out * s->r;
}

static size_t adalora_saved_per_row(const Adapter *a, const AdapterSite *s) {
    (void)a;
    return (size_t)s->r;
}

static float *ada_A(const Adapter *a, const AdapterSite *s) { return a->params + s->off; }
static float *ada_E(const Adapter *a, const AdapterSite *s) { return a->params + s->off + (size_t)s->r * s->in; }
static float *ada_B(const Adapter *a, const AdapterSite *s) {
    return a->params + s->off + (size_t)s->r * s->in + s->r;
}

LLStatus adalora_validate(const AdapterConfig *c, LLError *err) {
    if (c->init_r < 1) return ll_err(err, LL_ERR_CONFIG, "AdaLoRA init_r = %d must be at least 1", c->init_r);
    if (c->target_r < 0 || c->target_r >= c->init_r)
        return ll_err(err, LL_ERR_CONFIG,
                      "AdaLoRA target_r = %d must be in [0, init_r = %d): the budget must shrink (with equal "
                      "ranks there is nothing to allocate; use LoRA)", c->target_r, c->init_r);
    if (c->total_step <= 0)
        return ll_err(err, LL_ERR_CONFIG, "AdaLoRA needs total_step > 0 (got %d): the budget schedule spans it",
                      c->total_step);
    if (c->tinit < 0 || c->tfinal < 0)
        return ll_err(err, LL_ERR_CONFIG, "AdaLoRA tinit (%d) and tfinal (%d) must not be negative", c->tinit,
                      c->tfinal);
    if (c->tinit >= c->total_step - c->tfinal)
        return ll_err(err, LL_ERR_CONFIG,
                      "AdaLoRA schedule has no budgeting phase: tinit (%d) must be < total_step (%d) - tfinal (%d); "
                      "decrease tinit/tfinal or increase total_step", c->tinit, c->total_step, c->tfinal);
    if (c->deltaT < 1) return ll_err(err, LL_ERR_CONFIG, "AdaLoRA deltaT = %d must be at least 1", c->deltaT);
    if (!(c->beta1 > 0.0f && c->beta1 < 1.0f) || !(c->beta2 > 0.0f && c->beta2 < 1.0f))
        return ll_err(err, LL_ERR_CONFIG, "AdaLoRA beta1 (%g) and beta2 (%g) must be in (0, 1)", c->beta1, c->beta2);
    if (!(c->orth_reg_weight >= 0.0f))
        return ll_err(err, LL_ERR_CONFIG, "AdaLoRA orth_reg_weight = %g must be >= 0", c->orth_reg_weight);
    if (c->use_dora) return ll_err(err, LL_ERR_CONFIG, "AdaLoRA does not support DoRA (use_dora)");
    if (c->init == ADAPTER_INIT_PISSA) return ll_err(err, LL_ERR_CONFIG, "AdaLoRA does not support PiSSA init");
    return LL_OK;
}

/* What adalora_init allocates: Ī, Ū and the export copy (each n_params), the scores and their
 * sorted copy, the masks (bytes), A⊙E and its gradient. */
static double adalora_state_floats(const Adapter *a) {
    double r = a->cfg.init_r, n_active = 0.0, max_in = 1.0;
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].active) {
            n_active++;
            max_in = a->sites[i].in > max_in ? a->sites[i].in : max_in;
        }
    return 3.0 * (double)a->n_params + 2.0 * n_active * r + a->n_sites * r / sizeof(float) + 2.0 * r * max_in;
}

static LLStatus adalora_init(Adapter *a, Model *m, LLError *err) {
    (void)m;
    LLStatus st = adalora_validate(&a->cfg, err);
    if (st) return st;
    AdaLora *p = ll_calloc(1, sizeof *p);
    a->priv = p;
    p->r = a->cfg.init_r;
    int max_in = 1;
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].active) {
            p->n_active++;
            max_in = a->sites[i].in > max_in ? a->sites[i].in : max_in;
        }
    p->ipt_avg = ll_alloc_floats(2 * a->n_params); /* Ī then Ū, one buffer (adalora_resume_state) */
    p->unc_avg = p->ipt_avg + a->n_params;
    p->scores = ll_alloc_floats((size_t)p->n_active * p->r);
    p->sorted = ll_alloc_floats((size_t)p->n_active * p->r);
    p->mask = ll_malloc((size_t)a->n_sites * p->r, 1);
    memset(p->mask, 1, (size_t)a->n_sites * p->r);
    p->ae = ll_alloc_floats((size_t)p->r * max_in);
    p->dae = ll_alloc_floats((size_t)p->r * max_in);
    p->export_buf = ll_alloc_floats(a->n_params);
    /* PEFT: E = 0, A and B ~ N(0, 0.02²) (both PEFT and the reference repo) */
    Rng r;
    rng_seed(&r, rng_derive(a->cfg.seed, 13));
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        rng_fill_normal(&r, ada_A(a, s), (size_t)s->r * s->in, 0.02f);
        memset(ada_E(a, s), 0, sizeof(float) * (size_t)s->r);
        rng_fill_normal(&r, ada_B(a, s), (size_t)s->out * s->r, 0.02f);
    }
    return LL_OK;
}

static void adalora_free_priv(Adapter *a) {
    AdaLora *p = a->priv;
    if (!p) return;
    ll_free(p->ipt_avg); /* Ū lives in the same buffer */
    ll_free(p->scores);
    ll_free(p->sorted);
    ll_free(p->mask);
    ll_free(p->ae);
    ll_free(p->dae);
    ll_free(p->export_buf);
    ll_free(p);
    a->priv = NULL;
}

/* AE = A ⊙ E into p->ae (r x in). */
static void form_ae(const Adapter *a, const AdapterSite *s, float *ae) {
    const float *A = ada_A(a, s), *E = ada_E(a, s);
    for (int i = 0; i < s->r; i++)
        for (int j = 0; j < s->in; j++) ae[(size_t)i * s->in + j] = A[(size_t)i * s->in + j] * E[i];
}

static void adalora_forward(Adapter *a, AdapterSite *s, const float *x, float *y, int N, int train) {
    AdaLora *p = a->priv;
    const float *xd = adapter_dropout(a, s, x, N, train);
    float *u = s->saved;
    /* PEFT's order: A⊙E first, then x·(A⊙E)ᵀ, then ·Bᵀ, then the scale */
    form_ae(a, s, p->ae);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, s->r, s->in, 1.0f, xd, s->in, p->ae, s->in, 0.0f, u,
                s->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, s->out, s->r, s->scale, u, s->r, ada_B(a, s), s->r,
                1.0f, y, s->out);
}

static void adalora_backward(Adapter *a, AdapterSite *s, const float *x, const float *dy, float *dx, int N) {
    AdaLora *p = a->priv;
    const int drop = a->cfg.dropout > 0.0f;
    const float *xd = drop ? s->xdrop : x;
    const float *u = s->saved;
    const float *A = ada_A(a, s), *E = ada_E(a, s);
    float *gA = a->grads + s->off, *gE = gA + (size_t)s->r * s->in, *gB = gE + s->r;
    float *du = a->scratch2;
    /* dB += scale·dyᵀ·u */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->out, s->r, N, s->scale, dy, s->out, u, s->r, 1.0f, gB,
                s->r);
    /* du = scale·dy·B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->r, s->out, s->scale, dy, s->out, ada_B(a, s), s->r,
                0.0f, du, s->r);
    /* dAE = duᵀ·drop(x), then split into dA (rows times E) and dE (row dot A) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->r, s->in, N, 1.0f, du, s->r, xd, s->in, 0.0f, p->dae,
                s->in);
    for (int i = 0; i < s->r; i++) {
        const float *d = p->dae + (size_t)i * s->in, *Ai = A + (size_t)i * s->in;
        float *gAi = gA + (size_t)i * s->in;
        double dot = 0.0;
        for (int j = 0; j < s->in; j++) {
            gAi[j] += d[j] * E[i];
            dot += (double)d[j] * Ai[j];
        }
        gE[i] += (float)dot;
    }
    if (!dx) return;
    form_ae(a, s, p->ae);
    if (!drop) { /* dx += du·(A⊙E) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, s->r, 1.0f, du, s->r, p->ae, s->in, 1.0f, dx,
                    s->in);
    } else {
        float *t = a->scratch;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, s->r, 1.0f, du, s->r, p->ae, s->in, 0.0f, t,
                    s->in);
        adapter_dropout_backward(a, s, t, dx, N);
    }
}

/* ‖M − I‖_F for M = X·Xᵀ (rows of X, r x n, row stride ld) when `rows`, or M = Xᵀ·X (columns of
 * X, n x r) otherwise; writes M − I into D (r x r). Double accumulation: r is small. */
static double gram_minus_eye(const float *X, int r, int n, int rows, double *D) {
    double ss = 0.0;
    for (int i = 0; i < r; i++)
        for (int k = 0; k < r; k++) {
            double acc = 0.0;
            if (rows)
                for (int j = 0; j < n; j++) acc += (double)X[(size_t)i * n + j] * X[(size_t)k * n + j];
            else
                for (int j = 0; j < n; j++) acc += (double)X[(size_t)j * r + i] * X[(size_t)j * r + k];
            if (i == k) acc -= 1.0;
            D[(size_t)i * r + k] = acc;
            ss += acc * acc;
        }
    return sqrt(ss);
}

static float adalora_reg_loss(Adapter *a, float weight) {
    AdaLora *p = a->priv;
    const int r = p->r, n = 2 * p->n_active;
    double *D = ll_malloc((size_t)r * r, sizeof(double));
    double total = 0.0;
    for (int si = 0; si < a->n_sites; si++) {
        const AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        const float *A = ada_A(a, s), *B = ada_B(a, s);
        float *gA = a->grads + s->off, *gB = gA + (size_t)r * s->in + r;
        /* A (r x in): M = A·Aᵀ − I, ∂‖M‖_F/∂A = 2·M·A/‖M‖_F (M symmetric) */
        double nA = gram_minus_eye(A, r, s->in, 1, D);
        total += nA;
        if (weight != 0.0f && nA > 0.0) {
            double c = (double)weight * 2.0 / ((double)n * nA);
            for (int i = 0; i < r; i++)
                for (int j = 0; j < s->in; j++) {
                    double acc = 0.0;
                    for (int k = 0; k < r; k++) acc += D[(size_t)i * r + k] * A[(size_t)k * s->in + j];
                    gA[(size_t)i * s->in + j] += (float)(c * acc);
                }
        }
        /* B (out x r): M = Bᵀ·B − I, ∂‖M‖_F/∂B = 2·B·M/‖M‖_F */
        double nB = gram_minus_eye(B, r, s->out, 0, D);
        total += nB;
        if (weight != 0.0f && nB > 0.0) {
            double c = (double)weight * 2.0 / ((double)n * nB);
            for (int o = 0; o < s->out; o++)
                for (int i = 0; i < r; i++) {
                    double acc = 0.0;
                    for (int k = 0; k < r; k++) acc += (double)B[(size_t)o * r + k] * D[(size_t)k * r + i];
                    gB[(size_t)o * r + i] += (float)(c * acc);
                }
        }
    }
    ll_free(D);
    return n > 0 ? (float)(total / n) : 0.0f;
}

int adalora_budget(const AdapterConfig *c, int n_sites, int step, int *mask_now) {
    const int init_bgt = c->init_r * n_sites, target_bgt = c->target_r * n_sites;
    const int ti = c->tinit, tf = c->tfinal, T = c->total_step;
    int budget, mask;
    if (step <= ti) {
        budget = init_bgt, mask = 0;
    } else if (step > T - tf) {
        budget = target_bgt, mask = 1;
    } else {
        /* PEFT computes this in Python floats and truncates with int(); pow as CPython's ** does */
        double mul = 1.0 - (double)(step - ti) / (double)(T - tf - ti);
        budget = (int)((double)(init_bgt - target_bgt) * pow(mul, 3.0) + (double)target_bgt);
        mask = step % c->deltaT == 0;
    }
    if (mask_now) *mask_now = mask;
    return budget;
}

int adalora_site_rank(const Adapter *a, const AdapterSite *s) {
    LL_ASSERT(a->ops == adalora_ops() && s >= a->sites && s < a->sites + a->n_sites);
    const AdaLora *p = a->priv;
    if (!s->active) return 0;
    if (!p->has_pattern) return p->r;
    const uint8_t *mk = p->mask + site_index(a, s) * p->r;
    int k = 0;
    for (int i = 0; i < p->r; i++) k += mk[i];
    return k;
}

/* PEFT's update_ipt: I = |p·∇p|, Ī ← β1·Ī + (1−β1)·I, Ū ← β2·Ū + (1−β2)·|I − Ī| (with the new
 * Ī), element-wise in fp32 with no bias correction. */
static void update_ipt(Adapter *a, AdaLora *p) {
    const float b1 = a->cfg.beta1, b2 = a->cfg.beta2;
    const float c1 = (float)(1.0 - (double)b1), c2 = (float)(1.0 - (double)b2);
    const float *w = a->params, *g = a->grads;
    float *ia = p->ipt_avg, *ua = p->unc_avg;
    const size_t n = a->n_params;
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t j = 0; j < n; j++) {
        float ipt = fabsf(w[j] * g[j]);
        ia[j] = b1 * ia[j] + c1 * ipt;
        ua[j] = b2 * ua[j] + c2 * fabsf(ipt - ia[j]);
    }
}

static int cmp_float(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* PEFT's mask_to_budget: triplet scores, the kthvalue threshold, E zeroed in place where the
 * score is <= the threshold, the mask recorded. */
static void mask_to_budget(Adapter *a, AdaLora *p, int budget) {
    const int r = p->r;
    size_t q = 0;
    for (int si = 0; si < a->n_sites; si++) {
        const AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        const size_t oA = s->off, oE = oA + (size_t)r * s->in, oB = oE + r;
        for (int i = 0; i < r; i++) {
            double sa = 0.0, sb = 0.0;
            for (int j = 0; j < s->in; j++) {
                size_t k = oA + (size_t)i * s->in + j;
                sa += (double)(p->ipt_avg[k] * p->unc_avg[k]);
            }
            for (int o = 0; o < s->out; o++) {
                size_t k = oB + (size_t)o * r + i;
                sb += (double)(p->ipt_avg[k] * p->unc_avg[k]);
            }
            float mean_a = (float)(sa / s->in), mean_b = (float)(sb / s->out);
            float se = p->ipt_avg[oE + i] * p->unc_avg[oE + i];
            p->scores[q++] = se + (mean_a + mean_b); /* PEFT: E + sum over [A mean, B mean] */
        }
    }
    const int init_bgt = r * p->n_active, k = init_bgt - budget;
    float tau = -INFINITY; /* k <= 0 (PEFT's kthvalue would fail): prune nothing */
    if (k > 0) {
        memcpy(p->sorted, p->scores, sizeof(float) * (size_t)init_bgt);
        qsort(p->sorted, (size_t)init_bgt, sizeof(float), cmp_float);
        tau = p->sorted[(k < init_bgt ? k : init_bgt) - 1]; /* kthvalue is 1-based */
    }
    q = 0;
    for (int si = 0; si < a->n_sites; si++) {
        AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        float *E = ada_E(a, s);
        uint8_t *mk = p->mask + (size_t)si * r;
        for (int i = 0; i < r; i++, q++) {
            mk[i] = !(p->scores[q] <= tau); /* ties at tau are all pruned */
            if (!mk[i]) E[i] = 0.0f;
        }
    }
    p->has_pattern = 1;
}

static void mask_with_pattern(Adapter *a, const AdaLora *p) {
    if (!p->has_pattern) return;
    for (int si = 0; si < a->n_sites; si++) {
        AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        float *E = ada_E(a, s);
        const uint8_t *mk = p->mask + (size_t)si * p->r;
        for (int i = 0; i < p->r; i++)
            if (!mk[i]) E[i] = 0.0f;
    }
}

/* PEFT's AdaLoraModel.update_and_allocate(global_step). */
static void adalora_on_step(Adapter *a, int step) {
    AdaLora *p = a->priv;
    const int final_step = a->cfg.total_step - a->cfg.tfinal;
    if (step < final_step) {
        update_ipt(a, p);
        int mask;
        int b = adalora_budget(&a->cfg, p->n_active, step, &mask);
        if (mask) mask_to_budget(a, p, b);
    } else if (step == final_step) {
        /* forced final mask at the target budget, no importance update, then the EMAs reset */
        mask_to_budget(a, p, adalora_budget(&a->cfg, p->n_active, step, NULL));
        memset(p->ipt_avg, 0, sizeof(float) * a->n_params);
        memset(p->unc_avg, 0, sizeof(float) * a->n_params);
    } else {
        mask_with_pattern(a, p);
    }
}

static void adalora_delta(const Adapter *a, const AdapterSite *s, float *dW) {
    AdaLora *p = a->priv;
    form_ae(a, s, p->ae);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out, s->in, s->r, s->scale, ada_B(a, s), s->r, p->ae,
                s->in, 0.0f, dW, s->in);
}

static void adalora_export(const Adapter *a, AdapterTensorFn fn, void *ctx) {
    const AdaLora *p = a->priv;
    const int r = p->r;
    /* The writer keeps pointers until it writes, so truncated copies live in export_buf, which
     * has room for every site at full rank and is only rewritten by the next export. */
    float *buf = p->export_buf;
    for (int si = 0; si < a->n_sites; si++) {
        const AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        const uint8_t *mk = p->mask + (size_t)si * r;
        const int full = !p->has_pattern;
        const int rk = adalora_site_rank(a, s);
        const float *A = ada_A(a, s), *E = ada_E(a, s), *B = ada_B(a, s);
        float *tA = buf, *tE = tA + (size_t)rk * s->in, *tB = tE + rk;
        buf = tB + (size_t)s->out * rk;
        int q = 0;
        for (int i = 0; i < r; i++) {
            if (!full && !mk[i]) continue;
            memcpy(tA + (size_t)q * s->in, A + (size_t)i * s->in, sizeof(float) * (size_t)s->in);
            tE[q] = E[i];
            for (int o = 0; o < s->out; o++) tB[(size_t)o * rk + q] = B[(size_t)o * r + i];
            q++;
        }
        int64_t sa[2] = {rk, s->in}, se[2] = {rk, 1}, sb[2] = {s->out, rk};
        fn(ctx, s, "lora_A", 2, sa, tA);
        fn(ctx, s, "lora_E", 2, se, tE);
        fn(ctx, s, "lora_B", 2, sb, tB);
    }
}

/* Matches a rank_pattern key ("model.layers.0.self_attn.q_proj.lora_E", possibly with the
 * adapter name after lora_E or the base_model.model. prefix, as PEFT tolerates) to a site. */
static AdapterSite *site_for_key(Adapter *a, const char *key) {
    const char *k = key;
    if (strncmp(k, "base_model.model.", 17) == 0) k += 17;
    const char *e = strstr(k, ".lora_E");
    if (!e || (e[7] != '\0' && e[7] != '.')) return NULL;
    for (int si = 0; si < a->n_sites; si++) {
        AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        char path[128];
        adapter_site_path(s, path, sizeof path);
        if (strlen(path) == (size_t)(e - k) && strncmp(path, k, (size_t)(e - k)) == 0) return s;
    }
    return NULL;
}

static LLStatus adalora_config_load(Adapter *a, const cJSON *obj, const char *path, LLError *err) {
    AdaLora *p = a->priv;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(obj, "rank_pattern");
    if (!rp || cJSON_IsNull(rp)) return LL_OK; /* saved before the first mask: full-rank tensors */
    if (!cJSON_IsObject(rp)) return ll_err(err, LL_ERR_FORMAT, "%s: 'rank_pattern' must be an object or null", path);
    for (const cJSON *c = rp->child; c; c = c->next) {
        AdapterSite *s = site_for_key(a, c->string);
        if (!s)
            return ll_err(err, LL_ERR_FORMAT,
                          "%s: rank_pattern key '%s' names no adapted module of this model (expected keys like "
                          "'model.layers.0.self_attn.q_proj.lora_E')", path, c->string);
        if (!cJSON_IsArray(c) || cJSON_GetArraySize(c) != p->r)
            return ll_err(err, LL_ERR_FORMAT, "%s: rank_pattern '%s' must be a list of init_r = %d booleans", path,
                          c->string, p->r);
        uint8_t *mk = p->mask + site_index(a, s) * p->r;
        int i = 0;
        for (const cJSON *b = c->child; b; b = b->next, i++) {
            if (cJSON_IsBool(b))
                mk[i] = cJSON_IsTrue(b) ? 1 : 0;
            else if (cJSON_IsNumber(b) && (b->valuedouble == 0.0 || b->valuedouble == 1.0))
                mk[i] = b->valuedouble != 0.0;
            else
                return ll_err(err, LL_ERR_FORMAT, "%s: rank_pattern '%s' entry %d is not a boolean", path, c->string,
                              i);
        }
    }
    p->has_pattern = 1;
    return LL_OK;
}

static LLStatus adalora_import(Adapter *a, const SafeTensors *st, const char *path, LLError *err) {
    AdaLora *p = a->priv;
    const int r = p->r;
    float *tmp = p->export_buf; /* room for any site at full rank */
    for (int si = 0; si < a->n_sites; si++) {
        AdapterSite *s = &a->sites[si];
        if (!s->active) continue;
        const int rk = adalora_site_rank(a, s);
        const uint8_t *mk = p->mask + (size_t)si * r;
        float *tA = tmp, *tE = tA + (size_t)rk * s->in, *tB = tE + rk;
        int64_t sa[2] = {rk, s->in}, se[2] = {rk, 1}, sb[2] = {s->out, rk};
        LLStatus rc = adapter_read_site_tensor(st, path, s, "lora_A", 2, sa, tA, err);
        if (!rc) rc = adapter_read_site_tensor(st, path, s, "lora_E", 2, se, tE, err);
        if (!rc) rc = adapter_read_site_tensor(st, path, s, "lora_B", 2, sb, tB, err);
        if (rc) return rc;
        float *A = ada_A(a, s), *E = ada_E(a, s), *B = ada_B(a, s);
        memset(A, 0, sizeof(float) * (size_t)r * s->in);
        memset(E, 0, sizeof(float) * (size_t)r);
        memset(B, 0, sizeof(float) * (size_t)s->out * r);
        int q = 0;
        for (int i = 0; i < r; i++) {
            if (p->has_pattern && !mk[i]) continue;
            memcpy(A + (size_t)i * s->in, tA + (size_t)q * s->in, sizeof(float) * (size_t)s->in);
            E[i] = tE[q];
            for (int o = 0; o < s->out; o++) B[(size_t)o * r + i] = tB[(size_t)o * rk + q];
            q++;
        }
        /* PEFT's resize re-runs update_layer with the kept rank, so with lora_alpha <= 0 the
         * scaling becomes that rank; ranknum (the denominator) stays init_r. */
        if (a->cfg.alpha <= 0.0f) s->scale = (float)rk / ((float)r + 1e-5f);
    }
    return LL_OK;
}

static void adalora_config_json(const Adapter *a, cJSON *c) {
    const AdaLora *p = a->priv;
    const AdapterConfig *k = &a->cfg;
    cJSON_AddNumberToObject(c, "r", k->r);
    cJSON_AddNumberToObject(c, "lora_alpha", adapter_json_float(k->alpha));
    cJSON_AddNumberToObject(c, "lora_dropout", adapter_json_float(k->dropout));
    cJSON_AddBoolToObject(c, "use_rslora", 0);
    cJSON_AddBoolToObject(c, "use_dora", 0);
    cJSON_AddBoolToObject(c, "lora_bias", 0);
    cJSON_AddBoolToObject(c, "init_lora_weights", 1);
    cJSON_AddNumberToObject(c, "target_r", k->target_r);
    cJSON_AddNumberToObject(c, "init_r", k->init_r);
    cJSON_AddNumberToObject(c, "tinit", k->tinit);
    cJSON_AddNumberToObject(c, "tfinal", k->tfinal);
    cJSON_AddNumberToObject(c, "deltaT", k->deltaT);
    cJSON_AddNumberToObject(c, "beta1", adapter_json_float(k->beta1));
    cJSON_AddNumberToObject(c, "beta2", adapter_json_float(k->beta2));
    cJSON_AddNumberToObject(c, "orth_reg_weight", adapter_json_float(k->orth_reg_weight));
    cJSON_AddNumberToObject(c, "total_step", k->total_step);
    if (p->has_pattern) {
        cJSON *rp = cJSON_CreateObject();
        for (int si = 0; si < a->n_sites; si++) {
            const AdapterSite *s = &a->sites[si];
            if (!s->active) continue;
            char path[160];
            adapter_site_path(s, path, sizeof path);
            strcat(path, ".lora_E");
            cJSON *list = cJSON_CreateArray();
            for (int i = 0; i < p->r; i++) cJSON_AddItemToArray(list, cJSON_CreateBool(p->mask[(size_t)si * p->r + i]));
            cJSON_AddItemToObject(rp, path, list);
        }
        cJSON_AddItemToObject(c, "rank_pattern", rp);
    } else {
        cJSON_AddItemToObject(c, "rank_pattern", cJSON_CreateNull());
    }
    cJSON_AddItemToObject(c, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddItemToObject(c, "exclude_modules", cJSON_CreateNull());
    cJSON_AddItemToObject(c, "layer_replication", cJSON_CreateNull());
    cJSON_AddItemToObject(c, "loftq_config", cJSON_CreateObject());
}

/* The rank masks and whether one exists: what saving truncates by, so a snapshot of the trainable
 * state (keeping a run's best weights) must carry them beside params. */
static size_t adalora_state_bytes(const Adapter *a) {
    const AdaLora *p = a->priv;
    return 1 + (size_t)a->n_sites * p->r;
}

static void adalora_state_get(const Adapter *a, void *buf) {
    const AdaLora *p = a->priv;
    uint8_t *b = buf;
    b[0] = (uint8_t)p->has_pattern;
    memcpy(b + 1, p->mask, (size_t)a->n_sites * p->r);
}

static void adalora_state_set(Adapter *a, const void *buf) {
    AdaLora *p = a->priv;
    const uint8_t *b = buf;
    p->has_pattern = b[0];
    memcpy(p->mask, b + 1, (size_t)a->n_sites * p->r);
}

/* The importance averages Ī and Ū, one buffer: the next rank allocation reads them. */
static void *adalora_resume_state(Adapter *a, size_t *bytes) {
    AdaLora *p = a->priv;
    *bytes = 2 * sizeof(float) * a->n_params;
    return p->ipt_avg;
}

static const AdapterOps ADALORA_OPS = {
    .name = "adalora",
    .peft_type = "ADALORA",
    .site_size = adalora_site_size,
    .saved_per_row = adalora_saved_per_row,
    .state_floats = adalora_state_floats,
    .init = adalora_init,
    .forward = adalora_forward,
    .backward = adalora_backward,
    .reg_loss = adalora_reg_loss,
    .on_step = adalora_on_step,
    .delta = adalora_delta,
    .state_bytes = adalora_state_bytes,
    .state_get = adalora_state_get,
    .state_set = adalora_state_set,
    .resume_state = adalora_resume_state,
    .export_tensors = adalora_export,
    .import_tensors = adalora_import,
    .config_json = adalora_config_json,
    .config_load = adalora_config_load,
    .free_priv = adalora_free_priv,
};

const AdapterOps *adalora_ops(void) { return &ADALORA_OPS; }
