/* vera: VeRA, vector-based random matrix adaptation (Kopiczko, Blankevoort, Asano, ICLR 2024,
 * arXiv 2310.11454), as PEFT's VeraModel computes it (peft-spec.md section 3).
 *
 * One pair of frozen random projections is shared by every adapted site: vera_A (r x max_in) and
 * vera_B (max_out x r), (max_out, max_in) the element-wise maximum of the sites' (out, in). A site
 * of another shape uses the top-left corner: A_s = vera_A[:, :in] (row stride max_in) and
 * B_s = vera_B[:out, :]. Per site the trainable floats are [lambda_d (r) | lambda_b (out)], so a
 * site costs r + out parameters. No alpha/r scaling:
 *
 *     y += lambda_b ⊙ ( (lambda_d ⊙ (drop(x)·A_sᵀ)) · B_sᵀ ),    ΔW = diag(lambda_b)·B_s·diag(lambda_d)·A_s
 *
 * Saved for backward, per row: t = drop(x)·A_sᵀ (r) and w = (lambda_d ⊙ t)·B_sᵀ (out).
 * Backward (g = dL/dy): dlambda_b += Σ_rows g ⊙ w; dv = (g ⊙ lambda_b)·B_s; dlambda_d += Σ_rows dv ⊙ t;
 * dx += drop'((dv ⊙ lambda_d)·A_s).
 *
 * The projections are generated exactly as PEFT does on the CPU: a torch Generator (MT19937)
 * seeded with projection_prng_key fills vera_A, then vera_B from the same stream, each
 * Kaiming-uniform with gain sqrt(2): bound = sqrt(3)·sqrt(2)/sqrt(fan_in), fan_in = max_in for A and
 * r for B. They are saved as base_model.vera_A / base_model.vera_B when save_projection is set
 * (PEFT's default) and read back from the file; with save_projection false they are regenerated
 * from the key on load, and a file that claims save_projection but lacks them is refused (PEFT
 * raises there too).
 */
#include "adapter.h"
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

typedef struct {
    int max_in, max_out, r;
    float *A; /* r x max_in */
    float *B; /* max_out x r */
} Vera;

static size_t vera_site_size(Adapter *a, AdapterSite *s) {
    s->r = a->cfg.r; /* VeRA has one rank for all sites (no rank_pattern) */
    s->scale = 1.0f;
    return (size_t)s->r + (size_t)s->out;
}

static size_t vera_saved_per_row(const Adapter *a, const AdapterSite *s) {
    (void)a;
    return (size_t)s->r + (size_t)s->out;
}

static float *lambda_d(const Adapter *a, const AdapterSite *s) { return a->params + s->off; }
static float *lambda_b(const Adapter *a, const AdapterSite *s) { return a->params + s->off + s->r; }

/* PEFT's _kaiming_init: bound computed in double as Python does, then torch's uniform_ casts
 * the bounds to float32 and draws one 32-bit word per element. */
static void kaiming_fill_torch(Mt19937 *g, float *x, size_t n, int fan_in) {
    double gain = sqrt(2.0);
    double stdv = gain / sqrt((double)fan_in);
    double bound = sqrt(3.0) * stdv;
    mt_fill_uniform_torch(g, x, n, (float)-bound, (float)bound);
}

static void vera_generate(Vera *v, uint32_t key) {
    Mt19937 g;
    mt_seed(&g, key);
    kaiming_fill_torch(&g, v->A, (size_t)v->r * v->max_in, v->max_in);
    kaiming_fill_torch(&g, v->B, (size_t)v->max_out * v->r, v->r);
}

/* What vera_init allocates: the shared projections A (r x max_in) and B (max_out x r). */
static double vera_state_floats(const Adapter *a) {
    double max_in = 0.0, max_out = 0.0;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        max_in = s->in > max_in ? s->in : max_in;
        max_out = s->out > max_out ? s->out : max_out;
    }
    return (double)a->cfg.r * (max_in + max_out);
}

static LLStatus vera_init(Adapter *a, Model *m, LLError *err) {
    (void)m;
    if (a->cfg.r < 1) return ll_err(err, LL_ERR_CONFIG, "VeRA rank r = %d must be at least 1", a->cfg.r);
    Vera *v = ll_calloc(1, sizeof *v);
    a->priv = v;
    v->r = a->cfg.r;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        v->max_in = s->in > v->max_in ? s->in : v->max_in;
        v->max_out = s->out > v->max_out ? s->out : v->max_out;
    }
    v->A = ll_alloc_floats((size_t)v->r * v->max_in);
    v->B = ll_alloc_floats((size_t)v->max_out * v->r);
    vera_generate(v, a->cfg.projection_prng_key);
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        float *d = lambda_d(a, s);
        for (int j = 0; j < s->r; j++) d[j] = a->cfg.d_initial; /* PEFT: fill d_initial (0.1) */
        memset(lambda_b(a, s), 0, sizeof(float) * (size_t)s->out); /* b = 0: a no-op at step 0 */
    }
    return LL_OK;
}

static void vera_free_priv(Adapter *a) {
    Vera *v = a->priv;
    if (!v) return;
    ll_free(v->A);
    ll_free(v->B);
    ll_free(v);
    a->priv = NULL;
}

static void vera_forward(Adapter *a, AdapterSite *s, const float *x, float *y, int N, int train) {
    const Vera *v = a->priv;
    const float *xd = adapter_dropout(a, s, x, N, train);
    const int r = s->r, out = s->out;
    float *t = s->saved, *w = s->saved + (size_t)N * r;
    const float *ld = lambda_d(a, s), *lb = lambda_b(a, s);
    /* t = drop(x)·A_sᵀ: A_s is the first `in` columns of vera_A, row stride max_in */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, s->in, 1.0f, xd, s->in, v->A, v->max_in, 0.0f, t,
                r);
    /* v = lambda_d ⊙ t, kept in scratch2 so t stays as saved */
    float *dv = a->scratch2;
    #pragma omp parallel for schedule(static) if ((size_t)N * r >= LL_OMP_MIN_WORK)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < r; i++) dv[(size_t)n * r + i] = ld[i] * t[(size_t)n * r + i];
    /* w = v·B_sᵀ: B_s is the first `out` rows of vera_B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, r, 1.0f, dv, r, v->B, r, 0.0f, w, out);
    #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) y[(size_t)n * out + o] += lb[o] * w[(size_t)n * out + o];
}

static void vera_backward(Adapter *a, AdapterSite *s, const float *x, const float *dy, float *dx, int N) {
    const Vera *v = a->priv;
    (void)x; /* no parameter gradient needs x: t and w were saved */
    const int drop = a->cfg.dropout > 0.0f;
    const int r = s->r, out = s->out;
    const float *t = s->saved, *w = s->saved + (size_t)N * r;
    const float *ld = lambda_d(a, s), *lb = lambda_b(a, s);
    float *gd = a->grads + s->off, *gb = gd + r;
    /* dlambda_b[o] += Σ_n dy[n,o]·w[n,o]: each thread owns its o, rows summed in order */
    #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
    for (int o = 0; o < out; o++) {
        float acc = 0.0f;
        for (int n = 0; n < N; n++) acc += dy[(size_t)n * out + o] * w[(size_t)n * out + o];
        gb[o] += acc;
    }
    /* dw = dy ⊙ lambda_b (N x out), in scratch */
    float *dw = a->scratch;
    #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) dw[(size_t)n * out + o] = dy[(size_t)n * out + o] * lb[o];
    /* dv = dw·B_s (N x r), in scratch2 */
    float *dv = a->scratch2;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, out, 1.0f, dw, out, v->B, r, 0.0f, dv, r);
    /* dlambda_d[i] += Σ_n dv[n,i]·t[n,i]; then dv becomes dt = dv ⊙ lambda_d */
    for (int i = 0; i < r; i++) {
        float acc = 0.0f;
        for (int n = 0; n < N; n++) acc += dv[(size_t)n * r + i] * t[(size_t)n * r + i];
        gd[i] += acc;
    }
    #pragma omp parallel for schedule(static) if ((size_t)N * r >= LL_OMP_MIN_WORK)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < r; i++) dv[(size_t)n * r + i] *= ld[i];
    if (!dx) return;
    if (!drop) { /* dx += dt·A_s */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, r, 1.0f, dv, r, v->A, v->max_in, 1.0f, dx,
                    s->in);
    } else {
        float *tmp = a->scratch; /* dw is no longer needed */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, r, 1.0f, dv, r, v->A, v->max_in, 0.0f, tmp,
                    s->in);
        adapter_dropout_backward(a, s, tmp, dx, N);
    }
}

static void vera_delta(const Adapter *a, const AdapterSite *s, float *dW) {
    const Vera *v = a->priv;
    const int r = s->r;
    const float *ld = lambda_d(a, s), *lb = lambda_b(a, s);
    /* ΔW[o, j] = lambda_b[o] · Σ_i B[o,i]·lambda_d[i]·A[i,j]: scale B's rows and columns into a
     * small (out x r) copy, then one product with A_s. */
    float *Bs = ll_alloc_floats((size_t)s->out * r);
    for (int o = 0; o < s->out; o++)
        for (int i = 0; i < r; i++) Bs[(size_t)o * r + i] = lb[o] * v->B[(size_t)o * r + i] * ld[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out, s->in, r, 1.0f, Bs, r, v->A, v->max_in, 0.0f, dW,
                s->in);
    ll_free(Bs);
}

static void vera_export(const Adapter *a, AdapterTensorFn fn, void *ctx) {
    const Vera *v = a->priv;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        int64_t sb[1] = {s->out}, sd[1] = {s->r};
        fn(ctx, s, "vera_lambda_b", 1, sb, lambda_b(a, s));
        fn(ctx, s, "vera_lambda_d", 1, sd, lambda_d(a, s));
    }
    if (a->cfg.save_projection) {
        int64_t sa[2] = {v->r, v->max_in}, sB[2] = {v->max_out, v->r};
        fn(ctx, NULL, "base_model.vera_A", 2, sa, v->A);
        fn(ctx, NULL, "base_model.vera_B", 2, sB, v->B);
    }
}

static LLStatus vera_import(Adapter *a, const SafeTensors *st, const char *path, LLError *err) {
    Vera *v = a->priv;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        int64_t sb[1] = {s->out}, sd[1] = {s->r};
        LLStatus rc = adapter_read_site_tensor(st, path, s, "vera_lambda_b", 1, sb, lambda_b(a, s), err);
        if (!rc) rc = adapter_read_site_tensor(st, path, s, "vera_lambda_d", 1, sd, lambda_d(a, s), err);
        if (rc) return rc;
    }
    const int has_a = st_find(st, "base_model.vera_A") != NULL, has_b = st_find(st, "base_model.vera_B") != NULL;
    if (!a->cfg.save_projection) return LL_OK; /* regenerated from projection_prng_key in init, as PEFT does */
    if (!has_a || !has_b)
        return ll_err(err, LL_ERR_FORMAT,
                      "%s: save_projection is true but 'base_model.vera_%s' is missing (set save_projection to "
                      "false in adapter_config.json to regenerate the projections from projection_prng_key %u)",
                      path, has_a ? "B" : "A", (unsigned)a->cfg.projection_prng_key);
    /* A file from a model with larger layers would need a bigger corner; the shapes must be exactly
     * the ones this model's targets imply (PEFT requires the same). */
    int64_t sa[2] = {v->r, v->max_in}, sB[2] = {v->max_out, v->r};
    LLStatus rc = st_read_f32(st, "base_model.vera_A", 2, sa, v->A, err);
    if (!rc) rc = st_read_f32(st, "base_model.vera_B", 2, sB, v->B, err);
    if (rc) ll_err_prefix(err, "%s", path);
    return rc;
}

static void vera_config_json(const Adapter *a, cJSON *c) {
    cJSON_AddNumberToObject(c, "r", a->cfg.r);
    cJSON_AddNumberToObject(c, "projection_prng_key", a->cfg.projection_prng_key);
    cJSON_AddBoolToObject(c, "save_projection", a->cfg.save_projection);
    cJSON_AddNumberToObject(c, "vera_dropout", adapter_json_float(a->cfg.dropout));
    cJSON_AddNumberToObject(c, "d_initial", adapter_json_float(a->cfg.d_initial));
    cJSON_AddBoolToObject(c, "init_weights", 1);
}

static const AdapterOps VERA_OPS = {
    .name = "vera",
    .peft_type = "VERA",
    .site_size = vera_site_size,
    .saved_per_row = vera_saved_per_row,
    .state_floats = vera_state_floats,
    .init = vera_init,
    .forward = vera_forward,
    .backward = vera_backward,
    .delta = vera_delta,
    .export_tensors = vera_export,
    .import_tensors = vera_import,
    .config_json = vera_config_json,
    .free_priv = vera_free_priv,
};

const AdapterOps *vera_ops(void) { return &VERA_OPS; }
