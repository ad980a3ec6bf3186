/* lora: LoRA (Hu et al. 2021, arXiv 2106.09685) with rsLoRA scaling (Kalajdzievski 2023), DoRA
 * (Liu et al. 2024, arXiv 2402.09353) and PiSSA init (Meng et al. 2024, arXiv 2404.02948), as
 * PEFT computes them (peft-spec.md sections 1 and 4).
 *
 * Per site, trainable floats [A (r x in) | B (out x r) | m (out), DoRA only | b (out), lora_bias
 * only], ΔW = s·B·A with
 * s = alpha/r, or alpha/sqrt(r) under rsLoRA. LoRA+ (lr_ratio): [B | m] train at lr·lr_ratio, A at
 * lr (ratio_from; the optimizer's ranges come from adapter_lr_ranges).
 *
 * lora_bias (PEFT >= 0.14): lora_B is a Linear with a bias, so y += s·(u·Bᵀ + b); db += s·Σ_rows g;
 * merge adds s·b to the base layer's bias (b_base += s·b; PEFT refuses a base without one). Zero
 * at init. Not with DoRA (PEFT's rule).
 *
 * LoRA. Forward: y += s·(drop(x)·Aᵀ)·Bᵀ as two skinny products (register tiles, ops_tile.c); B·A is
 * only ever formed for merge.
 * Saved for backward: u = drop(x)·Aᵀ (N x r). Backward (g = dL/dy): dB += s·gᵀ·u; du = s·g·B;
 * dA += duᵀ·drop(x); dx += drop'(du·A).
 *
 * DoRA (use_dora). W' = m ⊙ (W0 + s·B·A)/‖W0 + s·B·A‖_row, the row norm DETACHED (a constant in
 * backward, paper section 4.3). With ms = m/‖·‖_row and z = drop(x)·W0ᵀ (the base result y itself
 * when no dropout is active), PEFT's forward is
 *     y += (ms − 1) ⊙ z + ms ⊙ (s·u·Bᵀ)
 * The norm is computed without forming B·A (out x in): per row o,
 *     ‖W0_o + s·B_o·A‖² = ‖W0_o‖² + 2s·B_o·(W0·Aᵀ)_oᵀ + s²·B_o·(A·Aᵀ)·B_oᵀ,
 * costing out·in·r + r²·in, in double where it sums. Saved per row: u (r) and h = z + s·u·Bᵀ (out).
 * Backward: dm += Σ_rows g ⊙ h / ‖·‖_row; the LoRA backward with g replaced by ms ⊙ g; and
 * dx += drop'(((ms − 1) ⊙ g)·W0), the part of W0's path that the model's own backward (which
 * adds g·W0) does not cover. The base weights must be frozen: the model's dW0 = gᵀ·x is not
 * DoRA's (ms ⊙ g)ᵀ·x. Merge: W ← (m/‖W + ΔW‖_row) ⊙ (W + ΔW), the norm cached for unmerge
 * (W ← W/(m/norm) − ΔW), as PEFT does.
 *
 * LoftQ (init_lora_weights = loftq, Li et al. 2023, arXiv 2310.08659, one alternation): on a
 * quantized base, A and B as PiSSA's but from the SVD of the residual W0 − dequant(Q), so that the
 * adapted model starts at dequant(Q) + s·B·A ≈ W0; the base stays Q. S is divided by the scale s
 * as for PiSSA, so s·B·A is the residual's rank-r part whatever lora_alpha (PEFT's loftq_init
 * takes B = U·√S, A = √S·Vᵀ and ignores the scale: the same when lora_alpha = r). It needs the
 * fp32 W0, which the model keeps until model_release_fp32; loaded, A and B come from the file.
 * PiSSA (init_lora_weights = pissa). SVD of each targeted W0 = U·diag(S)·Vᵀ (LAPACK dgesvd, in
 * double); with S' = S[:r]/s: A = diag(√S')·Vᵀ[:r], B = U[:, :r]·diag(√S'), and W0 is replaced
 * by its residual W0 − (s·B)·A in the model's base weights. Loading a PiSSA adapter re-runs this
 * on the base it is loaded into (PEFT does the same), which recreates the residual the adapter
 * was trained against when that base is the original model.
 */
#include "adapter.h"
#include "ops.h"
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* LAPACK (Fortran): the SVD. The two trailing lengths are gfortran's hidden CHARACTER lengths. */
extern void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt, double *work,
                    const int *lwork, int *info, size_t jobu_len, size_t jobvt_len);

typedef struct {
    size_t *vec_off; /* per site: offset of its out-long vectors in ms and norm */
    float *ms;       /* DoRA: m / ‖W0 + s·B·A‖_row of the last forward */
    float *norm;     /* DoRA: the row norm of the last forward, or the one cached at merge */
    float *P, *G;    /* DoRA norm scratch: W0·Aᵀ (out x r), A·Aᵀ (r x r) */
    float *work;     /* DoRA backward scratch, N_max x max(in, out) */
    float *t;        /* Aᵀ or Bᵀ for the forward products, max r x max(in, out) */
    /* DoRA on a quantized base (sites with q0): W0's products dequantize through qs (ops_quant);
     * Pt = A·W0ᵀ (r x out), row = one row of W0 */
    float *qs, *Pt, *row;
    double *w2;      /* ‖W0_o‖² of a quantized W0, per row */
} Lora;

static size_t lora_site_size(Adapter *a, AdapterSite *s) {
    s->scale = a->cfg.use_rslora ? s->alpha / sqrtf((float)s->r) : s->alpha / (float)s->r;
    return (size_t)s->r * s->in + (size_t)s->out * s->r + (a->cfg.use_dora ? (size_t)s->out : 0) +
           (a->cfg.lora_bias ? (size_t)s->out : 0);
}

static size_t lora_saved_per_row(const Adapter *a, const AdapterSite *s) {
    return (size_t)s->r + (a->cfg.use_dora ? (size_t)s->out : 0);
}

static float *lora_A(const Adapter *a, const AdapterSite *s) { return a->params + s->off; }
static float *lora_B(const Adapter *a, const AdapterSite *s) { return a->params + s->off + (size_t)s->r * s->in; }
static float *lora_m(const Adapter *a, const AdapterSite *s) {
    return a->params + s->off + (size_t)s->r * s->in + (size_t)s->out * s->r;
}

static float *lora_b(const Adapter *a, const AdapterSite *s) { /* lora_bias only: DoRA excludes it */
    return a->params + s->off + (size_t)s->r * s->in + (size_t)s->out * s->r;
}

static size_t site_index(const Adapter *a, const AdapterSite *s) { return (size_t)(s - a->sites); }

/* ---- DoRA's row norm ---------------------------------------------------------------------- */

/* norm[o] = ‖W_o + s·B_o·A‖ for the site's A, B and the given W (out x in), without forming B·A;
 * W NULL: the site's quantized W0 = dequant(q0). */
static void dora_row_norm(const Adapter *a, const AdapterSite *s, const float *W, float *norm) {
    const Lora *p = a->priv;
    const int r = s->r, in = s->in, out = s->out;
    const float *A = lora_A(a, s), *B = lora_B(a, s);
    const double sc = s->scale;
    /* P = W·Aᵀ (out x r), G = A·Aᵀ (r x r) */
    if (W) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, out, r, in, 1.0f, W, in, A, in, 0.0f, p->P, r);
    } else { /* P = (A·W0ᵀ)ᵀ, and ‖W0_o‖² row by row */
        LL_ASSERT(s->q0);
        matmul_forward_q(p->Pt, A, s->q0, r, p->qs);
        gemm_transpose(p->P, p->Pt, r, out, out);
        for (int o = 0; o < out; o++) {
            quant_dequant(s->q0, (size_t)o * in, (size_t)in, p->row);
            double w2 = 0.0;
            for (int j = 0; j < in; j++) w2 += (double)p->row[j] * p->row[j];
            p->w2[o] = w2;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, in, 1.0f, A, in, A, in, 0.0f, p->G, r);
    #pragma omp parallel for schedule(static) if ((size_t)out * (in + r * r) >= LL_OMP_MIN_WORK)
    for (int o = 0; o < out; o++) {
        const float *Bo = B + (size_t)o * r, *Po = p->P + (size_t)o * r;
        double w2 = 0.0, cross = 0.0, quad = 0.0;
        if (W)
            for (int j = 0; j < in; j++) w2 += (double)W[(size_t)o * in + j] * W[(size_t)o * in + j];
        else
            w2 = p->w2[o];
        for (int i = 0; i < r; i++) {
            cross += (double)Bo[i] * Po[i];
            double gi = 0.0;
            for (int k = 0; k < r; k++) gi += (double)p->G[(size_t)i * r + k] * Bo[k];
            quad += (double)Bo[i] * gi;
        }
        double n2 = w2 + 2.0 * sc * cross + sc * sc * quad;
        norm[o] = (float)sqrt(n2 > 0.0 ? n2 : 0.0); /* rounding can take an exact 0 below it */
    }
}

/* ---- init: Kaiming / Gaussian / PiSSA, then DoRA's magnitude ------------------------------ */

/* A, B from the top-r singular triplets of W (out x in) so that s·B·A is W's best rank-r part.
 * PiSSA (residual 1): W is W0, then replaced by the residual W0 − s·B·A. LoftQ (residual 0): W is
 * the quantization residual W0 − dequant(Q), the base stays Q (Li et al. 2023, one iteration). */
static LLStatus svd_site(Adapter *a, AdapterSite *s, float *W, int residual, const char *what, LLError *err) {
    const int in = s->in, out = s->out, r = s->r, k = in < out ? in : out;
    LL_ASSERT(r <= k); /* checked by lora_init */
    /* Row-major W (out x in) is the column-major matrix Wᵀ (in x out). dgesvd of Wᵀ = U2·S·V2ᵀ gives
     * W = V2·S·U2ᵀ, so U2's columns are W's right singular vectors (U2's memory, read row-major
     * k x in, is Vᵀ) and V2ᵀ's memory, read row-major out x k, is W's U. */
    double *M = ll_malloc((size_t)in * out, sizeof(double));
    double *S = ll_malloc((size_t)k, sizeof(double));
    double *U2 = ll_malloc((size_t)in * k, sizeof(double));
    double *VT2 = ll_malloc((size_t)k * out, sizeof(double));
    for (size_t i = 0; i < (size_t)in * out; i++) M[i] = W[i];
    int m_ = in, n_ = out, lda = in, ldu = in, ldvt = k, lwork = -1, info = 0;
    double wq;
    dgesvd_("S", "S", &m_, &n_, M, &lda, S, U2, &ldu, VT2, &ldvt, &wq, &lwork, &info, 1, 1);
    lwork = (int)wq;
    double *work = ll_malloc((size_t)(lwork > 1 ? lwork : 1), sizeof(double));
    if (info == 0) dgesvd_("S", "S", &m_, &n_, M, &lda, S, U2, &ldu, VT2, &ldvt, work, &lwork, &info, 1, 1);
    ll_free(work);
    LLStatus st = LL_OK;
    if (info != 0) {
        st = ll_err(err, LL_ERR_STATE, "%s: the SVD of layer %d %s did not converge (LAPACK info %d)", what, s->layer,
                    model_module_name(s->mod), info);
    } else {
        float *A = lora_A(a, s), *B = lora_B(a, s);
        for (int i = 0; i < r; i++) {
            /* PEFT: Sr /= scaling; A = diag(sqrt(Sr))·Vᵀ[:r]; B = U[:, :r]·diag(sqrt(Sr)) (fp32) */
            float sr = sqrtf((float)S[i] / s->scale);
            for (int j = 0; j < in; j++) A[(size_t)i * in + j] = sr * (float)U2[(size_t)i * in + j];
            for (int o = 0; o < out; o++) B[(size_t)o * r + i] = (float)VT2[(size_t)o * k + i] * sr;
        }
        /* W0 ← W0 − (s·B)·A, PEFT's order of operations */
        if (residual) {
            float *sB = ll_alloc_floats((size_t)out * r);
            for (size_t i = 0; i < (size_t)out * r; i++) sB[i] = s->scale * B[i];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, -1.0f, sB, r, A, in, 1.0f, W, in);
            ll_free(sB);
        }
    }
    ll_free(M);
    ll_free(S);
    ll_free(U2);
    ll_free(VT2);
    return st;
}

static void lora_free_priv(Adapter *a) {
    Lora *p = a->priv;
    if (!p) return;
    ll_free(p->vec_off);
    ll_free(p->ms);
    ll_free(p->norm);
    ll_free(p->P);
    ll_free(p->G);
    ll_free(p->work);
    ll_free(p->t);
    ll_free(p->qs);
    ll_free(p->Pt);
    ll_free(p->row);
    ll_free(p->w2);
    ll_free(p);
    a->priv = NULL;
}

/* What lora_init allocates (fp32 bases; a quantized base's DoRA scratch is a few rows more). */
static double lora_state_floats(const Adapter *a) {
    double t = 1.0, nv = 0.0, pr = 1.0, rr = 1.0, wide = 1.0;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        double w = s->in > s->out ? s->in : s->out;
        t = (double)s->r * w > t ? (double)s->r * w : t;
        nv += s->out;
        pr = (double)s->out * s->r > pr ? (double)s->out * s->r : pr;
        rr = (double)s->r * s->r > rr ? (double)s->r * s->r : rr;
        wide = w > wide ? w : wide;
    }
    if (!a->cfg.use_dora) return t;
    return t + 2.0 * nv + pr + rr + (double)a->N_max * wide; /* t, ms, norm, P, G, work */
}

static LLStatus lora_init(Adapter *a, Model *m, LLError *err) {
    (void)m;
    Lora *p = ll_calloc(1, sizeof *p);
    a->priv = p;
    size_t tr = 1;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        size_t w = (size_t)s->r * (size_t)(s->in > s->out ? s->in : s->out);
        if (s->active && w > tr) tr = w;
    }
    p->t = ll_alloc_floats(tr);
    if (a->cfg.use_dora) {
        p->vec_off = ll_calloc((size_t)a->n_sites, sizeof(size_t));
        size_t nv = 0, pr = 1, rr = 1, wide = 1;
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            p->vec_off[i] = nv;
            nv += (size_t)s->out;
            pr = (size_t)s->out * s->r > pr ? (size_t)s->out * s->r : pr;
            rr = (size_t)s->r * s->r > rr ? (size_t)s->r * s->r : rr;
            size_t w = (size_t)(s->in > s->out ? s->in : s->out);
            wide = w > wide ? w : wide;
        }
        p->ms = ll_alloc_floats(nv);
        p->norm = ll_alloc_floats(nv);
        p->P = ll_alloc_floats(pr);
        p->G = ll_alloc_floats(rr);
        p->work = ll_alloc_floats((size_t)a->N_max * wide);
        size_t qs = 0, pt = 0, in_max = 0, out_max = 0;
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active || !s->q0) continue;
            qs = matmul_q_scratch_floats(s->in) > qs ? matmul_q_scratch_floats(s->in) : qs;
            pt = (size_t)s->r * s->out > pt ? (size_t)s->r * s->out : pt;
            in_max = (size_t)s->in > in_max ? (size_t)s->in : in_max;
            out_max = (size_t)s->out > out_max ? (size_t)s->out : out_max;
        }
        if (qs) {
            p->qs = ll_alloc_floats(qs);
            p->Pt = ll_alloc_floats(pt);
            p->row = ll_alloc_floats(in_max);
            p->w2 = ll_malloc(out_max, sizeof(double));
        }
    }
    if (a->cfg.init == ADAPTER_INIT_LOFTQ)
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            int k = s->in < s->out ? s->in : s->out;
            if (s->active && !s->q0)
                return ll_err(err, LL_ERR_CONFIG, "LoftQ starts from the quantization residual, and layer %d %s is not "
                              "quantized: set train.base_quant nf4 or q8_0", s->layer, model_module_name(s->mod));
            if (s->active && (s->r > k || !(s->scale > 0.0f)))
                return ll_err(err, LL_ERR_CONFIG, "LoftQ needs rank <= min(in, out) = %d and lora_alpha > 0 (layer %d %s)",
                              k, s->layer, model_module_name(s->mod));
        }
    if (a->cfg.init == ADAPTER_INIT_PISSA) /* refuse before any base weight is replaced */
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            int k = s->in < s->out ? s->in : s->out;
            if (s->active && s->q0)
                return ll_err(err, LL_ERR_CONFIG,
                              "PiSSA rewrites the base weights, and this base is quantized (%s): use adapter.init loftq "
                              "to start from the quantization residual instead", quant_format_name(s->q0->fmt));
            if (s->active && s->r > k)
                return ll_err(err, LL_ERR_CONFIG, "PiSSA rank %d exceeds min(in, out) = %d of layer %d %s", s->r, k,
                              s->layer, model_module_name(s->mod));
            if (s->active && !(s->scale > 0.0f)) /* S/s must be a finite square */
                return ll_err(err, LL_ERR_CONFIG, "PiSSA needs lora_alpha > 0 (layer %d %s has alpha %g)", s->layer,
                              model_module_name(s->mod), s->alpha);
        }
    Rng r;
    rng_seed(&r, rng_derive(a->cfg.seed, 12));
    for (int i = 0; i < a->n_sites; i++) {
        AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        float *A = lora_A(a, s);
        size_t nA = (size_t)s->r * s->in;
        if (a->cfg.init == ADAPTER_INIT_PISSA) {
            LLStatus st = svd_site(a, s, s->w0, 1, "PiSSA", err);
            if (st) return st;
        } else if (a->cfg.init == ADAPTER_INIT_LOFTQ && s->w0) {
            /* the residual of this site's quantization, against the fp32 weights the model still holds */
            float *R = ll_alloc_floats(s->q0->n);
            quant_dequant(s->q0, 0, s->q0->n, R);
            for (size_t j = 0; j < s->q0->n; j++) R[j] = s->w0[j] - R[j];
            LLStatus st = svd_site(a, s, R, 0, "LoftQ", err);
            ll_free(R);
            if (st) return st;
        } else if (a->cfg.init == ADAPTER_INIT_LOFTQ) { /* loading: A and B come from the file */
            memset(A, 0, sizeof(float) * nA);
            memset(lora_B(a, s), 0, sizeof(float) * (size_t)s->out * s->r);
        } else {
            if (a->cfg.init == ADAPTER_INIT_GAUSSIAN) {
                rng_fill_normal(&r, A, nA, 1.0f / (float)s->r); /* PEFT: std 1/r, not 1/sqrt(r) */
            } else {
                /* kaiming_uniform_(a=sqrt(5)): bound = gain*sqrt(3/fan_in) = 1/sqrt(in) */
                float bound = 1.0f / sqrtf((float)s->in);
                rng_fill_uniform(&r, A, nA, -bound, bound);
            }
            memset(lora_B(a, s), 0, sizeof(float) * (size_t)s->out * s->r); /* B = 0: a no-op at step 0 */
        }
        if (a->cfg.lora_bias) memset(lora_b(a, s), 0, sizeof(float) * (size_t)s->out); /* PEFT: zeros */
        /* DoRA: m = ‖W0 + s·B·A‖_row after the LoRA init (PiSSA included), computed by the very
         * function the forward uses, so that m/‖·‖ is exactly 1 at step 0. */
        if (a->cfg.use_dora) dora_row_norm(a, s, s->q0 ? NULL : s->w0, lora_m(a, s));
    }
    return LL_OK;
}

/* ---- forward / backward ------------------------------------------------------------------- */

static void lora_forward(Adapter *a, AdapterSite *s, const float *x, float *y, int N, int train) {
    const float *xd = adapter_dropout(a, s, x, N, train);
    float *u = s->saved;
    Lora *p = a->priv;
    /* u = drop(x)·Aᵀ, then y += s·u·Bᵀ: skinny products as register tiles (ops_tile.c), each
     * against a transposed copy of the small factor */
    gemm_transpose(p->t, lora_A(a, s), s->r, s->in, s->in);
    gemm_small(N, s->r, s->in, 1.0f, xd, s->in, 1, p->t, s->r, u, s->r, 0);
    if (!a->cfg.use_dora) {
        gemm_transpose(p->t, lora_B(a, s), s->out, s->r, s->r);
        gemm_small(N, s->out, s->r, s->scale, u, s->r, 1, p->t, s->out, y, s->out, 1);
        if (a->cfg.lora_bias) {
            const float *b = lora_b(a, s), sc = s->scale;
            const int out = s->out;
            #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
            for (int n = 0; n < N; n++)
                for (int o = 0; o < out; o++) y[(size_t)n * out + o] += sc * b[o];
        }
        return;
    }
    const int out = s->out;
    float *ms = p->ms + p->vec_off[site_index(a, s)], *nrm = p->norm + p->vec_off[site_index(a, s)];
    const float *mag = lora_m(a, s);
    dora_row_norm(a, s, s->q0 ? NULL : s->w0, nrm);
    for (int o = 0; o < out; o++) ms[o] = mag[o] / nrm[o];
    /* h = u·Bᵀ (the LoRA result before scaling), then z = x·W0ᵀ: y itself when the branch sees the
     * undropped x (PEFT reuses the base result), else recomputed on drop(x) */
    float *h = s->saved + (size_t)N * s->r;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, s->r, 1.0f, u, s->r, lora_B(a, s), s->r, 0.0f, h,
                out);
    const float *z = y;
    if (xd != x) {
        float *zz = a->scratch;
        if (s->q0) matmul_forward_q(zz, xd, s->q0, N, p->qs);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, s->in, 1.0f, xd, s->in, s->w0, s->in, 0.0f,
                        zz, out);
        z = zz;
    }
    const float sc = s->scale;
    #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            size_t k = (size_t)n * out + o;
            float lora = h[k] * sc, base = z[k];
            h[k] = base + lora;                                  /* saved for dm */
            y[k] = y[k] + ((ms[o] - 1.0f) * base + ms[o] * lora); /* PEFT: result + result_dora */
        }
}

/* dx += g·W0 (N x in), W0 fp32 or quantized */
static void w0_backward(const AdapterSite *s, const Lora *p, const float *g, float *dx, int N) {
    if (s->q0) matmul_backward_q(dx, g, s->q0, N, 1, p->qs);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, s->out, 1.0f, g, s->out, s->w0, s->in, 1.0f,
                    dx, s->in);
}

static void lora_backward(Adapter *a, AdapterSite *s, const float *x, const float *dy, float *dx, int N) {
    const int drop = a->cfg.dropout > 0.0f;
    const float *xd = drop ? s->xdrop : x;
    const float *u = s->saved;
    float *gA = a->grads + s->off, *gB = gA + (size_t)s->r * s->in;
    float *du = a->scratch2;
    const float *g = dy;
    const int out = s->out;
    const Lora *p = a->priv;
    const float *ms = NULL;
    if (a->cfg.use_dora) {
        const size_t vo = p->vec_off[site_index(a, s)];
        ms = p->ms + vo;
        const float *nrm = p->norm + vo, *h = s->saved + (size_t)N * s->r;
        float *gm = gB + (size_t)out * s->r;
        /* dm[o] += Σ_n dy[n,o]·h[n,o] / norm[o] (norm detached); each thread owns its o */
        #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += (double)dy[(size_t)n * out + o] * h[(size_t)n * out + o];
            gm[o] += (float)(acc / nrm[o]);
        }
        /* the LoRA branch sees ms ⊙ dy */
        float *gs = a->scratch;
        #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) gs[(size_t)n * out + o] = ms[o] * dy[(size_t)n * out + o];
        g = gs;
    }
    /* dB += s·gᵀ·u (gᵀ read in place: row o of gᵀ is column o of g); du = s·g·B; dA += duᵀ·drop(x) */
    gemm_small(out, s->r, N, s->scale, g, 1, out, u, s->r, gB, s->r, 1);
    gemm_small(N, s->r, out, s->scale, g, out, 1, lora_B(a, s), s->r, du, s->r, 0);
    gemm_small(s->r, s->in, N, 1.0f, du, 1, s->r, xd, s->in, gA, s->in, 1);
    if (a->cfg.lora_bias) { /* db[o] += s·Σ_n g[n,o]; each thread owns its o */
        float *gb = gB + (size_t)out * s->r;
        #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += g[(size_t)n * out + o];
            gb[o] += (float)(s->scale * acc);
        }
    }
    if (!dx) return;
    float *gz = NULL; /* DoRA: (ms − 1) ⊙ dy, W0's extra path */
    if (ms) {
        gz = a->scratch; /* g (ms ⊙ dy) is no longer needed */
        #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) gz[(size_t)n * out + o] = (ms[o] - 1.0f) * dy[(size_t)n * out + o];
    }
    if (!drop) { /* dx += du·A (+ gz·W0) */
        gemm_small(N, s->in, s->r, 1.0f, du, s->r, 1, lora_A(a, s), s->in, dx, s->in, 1);
        if (gz) w0_backward(s, p, gz, dx, N);
    } else {
        float *t = gz ? p->work : a->scratch;
        gemm_small(N, s->in, s->r, 1.0f, du, s->r, 1, lora_A(a, s), s->in, t, s->in, 0);
        if (gz) w0_backward(s, p, gz, t, N);
        adapter_dropout_backward(a, s, t, dx, N);
    }
}

/* ---- merge -------------------------------------------------------------------------------- */

/* s·B·A (out x in) */
static void lora_ba(const Adapter *a, const AdapterSite *s, float *dW) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out, s->in, s->r, s->scale, lora_B(a, s), s->r,
                lora_A(a, s), s->in, 0.0f, dW, s->in);
}

/* ΔW as the site acts in forward on the unmerged base: s·B·A, or for DoRA
 * (m/‖W0 + s·B·A‖_row) ⊙ (W0 + s·B·A) − W0. Merging uses lora_merge_site instead. */
static void lora_delta(const Adapter *a, const AdapterSite *s, float *dW) {
    lora_ba(a, s, dW);
    if (!a->cfg.use_dora) return;
    float *nrm = ll_alloc_floats((size_t)s->out), *w0q = NULL;
    const float *W0 = s->w0;
    if (s->q0) { /* the W0 forward uses: dequant(q0) */
        w0q = ll_alloc_floats(s->q0->n);
        quant_dequant(s->q0, 0, s->q0->n, w0q);
        W0 = w0q;
    }
    dora_row_norm(a, s, W0, nrm);
    const float *mag = lora_m(a, s);
    for (int o = 0; o < s->out; o++) {
        float f = mag[o] / nrm[o];
        for (int j = 0; j < s->in; j++) {
            size_t k = (size_t)o * s->in + j;
            dW[k] = f * (W0[k] + dW[k]) - W0[k];
        }
    }
    ll_free(nrm);
    ll_free(w0q);
}

static void lora_merge_site(Adapter *a, AdapterSite *s, float *W, float sign) {
    const size_t n = (size_t)s->in * s->out;
    float *dW = ll_alloc_floats(n);
    lora_ba(a, s, dW);
    if (!a->cfg.use_dora) {
        for (size_t j = 0; j < n; j++) W[j] += sign * dW[j];
        ll_free(dW);
        return;
    }
    /* PEFT's DoRA merge: the norm of W + ΔW is cached, so that unmerge divides by the same factor */
    Lora *p = a->priv;
    float *nrm = p->norm + p->vec_off[site_index(a, s)];
    const float *mag = lora_m(a, s);
    if (sign > 0.0f) {
        for (int o = 0; o < s->out; o++) {
            double ss = 0.0;
            for (int j = 0; j < s->in; j++) {
                float w = W[(size_t)o * s->in + j] + dW[(size_t)o * s->in + j];
                ss += (double)w * w;
            }
            nrm[o] = (float)sqrt(ss);
            float f = mag[o] / nrm[o];
            for (int j = 0; j < s->in; j++) {
                size_t k = (size_t)o * s->in + j;
                W[k] = f * (W[k] + dW[k]);
            }
        }
    } else {
        for (int o = 0; o < s->out; o++) {
            float f = mag[o] / nrm[o];
            for (int j = 0; j < s->in; j++) {
                size_t k = (size_t)o * s->in + j;
                W[k] = W[k] / f - dW[k];
            }
        }
    }
    ll_free(dW);
}

/* ---- files -------------------------------------------------------------------------------- */

static void lora_export(const Adapter *a, AdapterTensorFn fn, void *ctx) {
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        int64_t sa[2] = {s->r, s->in}, sb[2] = {s->out, s->r}, sm[1] = {s->out};
        fn(ctx, s, "lora_A.weight", 2, sa, lora_A(a, s));
        fn(ctx, s, "lora_B.weight", 2, sb, lora_B(a, s));
        if (a->cfg.use_dora) fn(ctx, s, "lora_magnitude_vector", 1, sm, lora_m(a, s)); /* no .weight (PEFT) */
        if (a->cfg.lora_bias) fn(ctx, s, "lora_B.bias", 1, sm, lora_b(a, s));
    }
}

static LLStatus lora_import(Adapter *a, const SafeTensors *st, const char *path, LLError *err) {
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        int64_t sa[2] = {s->r, s->in}, sb[2] = {s->out, s->r}, sm[1] = {s->out};
        LLStatus rc = adapter_read_site_tensor(st, path, s, "lora_A.weight", 2, sa, lora_A(a, s), err);
        if (!rc) rc = adapter_read_site_tensor(st, path, s, "lora_B.weight", 2, sb, lora_B(a, s), err);
        if (!rc && a->cfg.use_dora)
            rc = adapter_read_site_tensor(st, path, s, "lora_magnitude_vector", 1, sm, lora_m(a, s), err);
        if (!rc && a->cfg.lora_bias) rc = adapter_read_site_tensor(st, path, s, "lora_B.bias", 1, sm, lora_b(a, s), err);
        if (rc) return rc;
    }
    return LL_OK;
}

static void add_patterns(cJSON *obj, const char *key, const AdapterPattern *p, int n) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < n; i++) cJSON_AddNumberToObject(o, p[i].key, adapter_json_float(p[i].value));
    cJSON_AddItemToObject(obj, key, o);
}

static void lora_config_json(const Adapter *a, cJSON *c) {
    cJSON_AddNumberToObject(c, "r", a->cfg.r);
    cJSON_AddNumberToObject(c, "lora_alpha", adapter_json_float(a->cfg.alpha));
    cJSON_AddNumberToObject(c, "lora_dropout", adapter_json_float(a->cfg.dropout));
    cJSON_AddBoolToObject(c, "use_rslora", a->cfg.use_rslora);
    cJSON_AddBoolToObject(c, "use_dora", a->cfg.use_dora);
    cJSON_AddBoolToObject(c, "lora_bias", a->cfg.lora_bias);
    if (a->cfg.init == ADAPTER_INIT_GAUSSIAN) cJSON_AddStringToObject(c, "init_lora_weights", "gaussian");
    else if (a->cfg.init == ADAPTER_INIT_PISSA) cJSON_AddStringToObject(c, "init_lora_weights", "pissa");
    else if (a->cfg.init == ADAPTER_INIT_LOFTQ) cJSON_AddStringToObject(c, "init_lora_weights", "loftq");
    else cJSON_AddBoolToObject(c, "init_lora_weights", 1);
    add_patterns(c, "rank_pattern", a->cfg.rank_pattern, a->cfg.n_rank_pattern);
    add_patterns(c, "alpha_pattern", a->cfg.alpha_pattern, a->cfg.n_alpha_pattern);
    cJSON_AddItemToObject(c, "exclude_modules", cJSON_CreateNull());
    cJSON_AddItemToObject(c, "layer_replication", cJSON_CreateNull());
    cJSON *lq = cJSON_CreateObject();
    if (a->cfg.init == ADAPTER_INIT_LOFTQ) { /* PEFT's LoftQConfig: bits of the base, one alternation */
        const QuantTensor *q = NULL;
        for (int i = 0; i < a->n_sites && !q; i++) q = a->sites[i].active ? a->sites[i].q0 : NULL;
        if (q) cJSON_AddNumberToObject(lq, "loftq_bits", q->fmt == QUANT_NF4 ? 4 : 8);
        cJSON_AddNumberToObject(lq, "loftq_iter", 1);
    }
    cJSON_AddItemToObject(c, "loftq_config", lq);
}

static int lora_site_has_bias(const Adapter *a) { return a->cfg.lora_bias; }

static void lora_merge_bias(Adapter *a, AdapterSite *s, float *b, float sign) {
    const float *lb = lora_b(a, s);
    for (int o = 0; o < s->out; o++) b[o] += sign * s->scale * lb[o];
}

/* LoRA+: B and DoRA's magnitude (and lora_bias's b) train at lr·lr_ratio (see adapter_lr_ranges); they follow A in
 * the site's layout [A | B | m]. */
static size_t lora_ratio_from(const Adapter *a, const AdapterSite *s) {
    (void)a;
    return (size_t)s->r * s->in;
}

static const AdapterOps LORA_OPS = {
    .name = "lora",
    .peft_type = "LORA",
    .site_size = lora_site_size,
    .saved_per_row = lora_saved_per_row,
    .state_floats = lora_state_floats,
    .init = lora_init,
    .forward = lora_forward,
    .backward = lora_backward,
    .delta = lora_delta,
    .merge_site = lora_merge_site,
    .merge_bias = lora_merge_bias,
    .site_has_bias = lora_site_has_bias,
    .ratio_from = lora_ratio_from,
    .export_tensors = lora_export,
    .import_tensors = lora_import,
    .config_json = lora_config_json,
    .free_priv = lora_free_priv,
};

const AdapterOps *lora_ops(void) { return &LORA_OPS; }
