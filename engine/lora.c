/* lora: LoRA (Hu et al. 2021, arXiv 2106.09685) with rsLoRA scaling (Kalajdzievski 2023) as PEFT
 * computes it (peft-spec.md section 1).
 *
 * Per site, trainable floats [A (r x in) | B (out x r)], ΔW = s·B·A with s = alpha/r, or
 * alpha/sqrt(r) under rsLoRA. Forward: y += s·(drop(x)·Aᵀ)·Bᵀ as two skinny products; B·A is only
 * ever formed for merge. Saved for backward: u = drop(x)·Aᵀ (N x r).
 * Backward (g = dL/dy): dB += s·gᵀ·u; du = s·g·B; dA += duᵀ·drop(x); dx += drop'(du·A).
 */
#include "adapter.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static size_t lora_site_size(Adapter *a, AdapterSite *s) {
    s->scale = a->cfg.use_rslora ? s->alpha / sqrtf((float)s->r) : s->alpha / (float)s->r;
    return (size_t)s->r * s->in + (size_t)s->out * s->r;
}

static size_t lora_saved_per_row(const Adapter *a, const AdapterSite *s) {
    (void)a;
    return (size_t)s->r;
}

static float *lora_A(Adapter *a, const AdapterSite *s) { return a->params + s->off; }
static float *lora_B(Adapter *a, const AdapterSite *s) { return a->params + s->off + (size_t)s->r * s->in; }

static LLStatus lora_init(Adapter *a, Model *m, LLError *err) {
    (void)m;
    (void)err;
    Rng r;
    rng_seed(&r, rng_derive(a->cfg.seed, 12));
    for (int i = 0; i < a->n_sites; i++) {
        AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        float *A = lora_A(a, s);
        size_t nA = (size_t)s->r * s->in;
        if (a->cfg.init == ADAPTER_INIT_GAUSSIAN) {
            rng_fill_normal(&r, A, nA, 1.0f / (float)s->r); /* PEFT: std 1/r, not 1/sqrt(r) */
        } else {
            /* kaiming_uniform_(a=sqrt(5)): bound = gain*sqrt(3/fan_in) = 1/sqrt(in) */
            float bound = 1.0f / sqrtf((float)s->in);
            rng_fill_uniform(&r, A, nA, -bound, bound);
        }
        memset(lora_B(a, s), 0, sizeof(float) * (size_t)s->out * s->r); /* B = 0: a no-op at step 0 */
    }
    return LL_OK;
}

static void lora_forward(Adapter *a, AdapterSite *s, const float *x, float *y, int N, int train) {
    const float *xd = adapter_dropout(a, s, x, N, train);
    float *u = s->saved;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, s->r, s->in, 1.0f, xd, s->in, lora_A(a, s), s->in,
                0.0f, u, s->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, s->out, s->r, s->scale, u, s->r, lora_B(a, s), s->r,
                1.0f, y, s->out);
}

static void lora_backward(Adapter *a, AdapterSite *s, const float *x, const float *dy, float *dx, int N) {
    const int drop = a->cfg.dropout > 0.0f;
    const float *xd = drop ? s->xdrop : x;
    const float *u = s->saved;
    float *gA = a->grads + s->off, *gB = gA + (size_t)s->r * s->in;
    float *du = a->scratch2;
    /* dB += s·dyᵀ·u */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->out, s->r, N, s->scale, dy, s->out, u, s->r, 1.0f,
                gB, s->r);
    /* du = s·dy·B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->r, s->out, s->scale, dy, s->out, lora_B(a, s),
                s->r, 0.0f, du, s->r);
    /* dA += duᵀ·drop(x) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->r, s->in, N, 1.0f, du, s->r, xd, s->in, 1.0f, gA,
                s->in);
    if (!dx) return;
    if (!drop) { /* dx += du·A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, s->r, 1.0f, du, s->r, lora_A(a, s), s->in,
                    1.0f, dx, s->in);
    } else {
        float *t = a->scratch;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, s->in, s->r, 1.0f, du, s->r, lora_A(a, s), s->in,
                    0.0f, t, s->in);
        adapter_dropout_backward(a, s, t, dx, N);
    }
}

static void lora_delta(const Adapter *a, const AdapterSite *s, float *dW) {
    Adapter *m = (Adapter *)a; /* accessors are non-const; nothing is written */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out, s->in, s->r, s->scale, lora_B(m, s), s->r,
                lora_A(m, s), s->in, 0.0f, dW, s->in);
}

static void lora_export(const Adapter *a, AdapterTensorFn fn, void *ctx) {
    Adapter *m = (Adapter *)a;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        int64_t sa[2] = {s->r, s->in}, sb[2] = {s->out, s->r};
        fn(ctx, s, "lora_A.weight", 2, sa, lora_A(m, s));
        fn(ctx, s, "lora_B.weight", 2, sb, lora_B(m, s));
    }
}

static LLStatus lora_import(Adapter *a, const SafeTensors *st, const char *path, LLError *err) {
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        int64_t sa[2] = {s->r, s->in}, sb[2] = {s->out, s->r};
        LLStatus rc = adapter_read_site_tensor(st, path, s, "lora_A.weight", 2, sa, lora_A(a, s), err);
        if (!rc) rc = adapter_read_site_tensor(st, path, s, "lora_B.weight", 2, sb, lora_B(a, s), err);
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
    cJSON_AddBoolToObject(c, "use_dora", 0);
    cJSON_AddBoolToObject(c, "lora_bias", 0);
    if (a->cfg.init == ADAPTER_INIT_GAUSSIAN) cJSON_AddStringToObject(c, "init_lora_weights", "gaussian");
    else cJSON_AddBoolToObject(c, "init_lora_weights", 1);
    add_patterns(c, "rank_pattern", a->cfg.rank_pattern, a->cfg.n_rank_pattern);
    add_patterns(c, "alpha_pattern", a->cfg.alpha_pattern, a->cfg.n_alpha_pattern);
    cJSON_AddItemToObject(c, "exclude_modules", cJSON_CreateNull());
    cJSON_AddItemToObject(c, "layer_replication", cJSON_CreateNull());
    cJSON_AddItemToObject(c, "loftq_config", cJSON_CreateObject());
}

static const AdapterOps LORA_OPS = {
    .name = "lora",
    .peft_type = "LORA",
    .site_size = lora_site_size,
    .saved_per_row = lora_saved_per_row,
    .init = lora_init,
    .forward = lora_forward,
    .backward = lora_backward,
    .delta = lora_delta,
    .export_tensors = lora_export,
    .import_tensors = lora_import,
    .config_json = lora_config_json,
};

const AdapterOps *lora_ops(void) { return &LORA_OPS; }
