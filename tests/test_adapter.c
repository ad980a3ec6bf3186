/* test_adapter: the adapter interface and its methods (LoRA, rsLoRA, DoRA, PiSSA, AdaLoRA, VeRA)
 * on a tiny Llama (V=32, C=16, L=2, NH=4, NKV=2, HS=4, F=24, batch 2 x 5).
 *
 * core:   identity at init (bitwise), frozen base after updates (bitwise), merge/unmerge,
 *         parameter counts and PEFT's report string, patterns and layers_to_transform, VeRA's
 *         projections, AdaLoRA's budget schedule and rank allocator, save -> load -> same logits.
 * grad:   central finite differences of the model's own cross-entropy for every adapter float
 *         (and every base float with train_base), with and without dropout (the dropout stream is
 *         rewound before every forward so that all evaluations see one mask), and AdaLoRA's
 *         orthogonality regulariser on its own.
 * limits: bad configurations and bad adapter folders give the right status and message.
 */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "adapter"
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <unistd.h>

#include "adapter.h"
#include "data.h"
#include "model.h"
#include "ops.h"
#include "safetensors.h"
#include "train.h"
#include "blas_probe.h"
#include "util.h"

enum { TB = 2, TT = 5 };

/* config.json options of the tiny model (issue 15): hidden_act and both biases; a test that sets
 * them runs in its own forked process, so they never leak into another test. */
static Activation tiny_act = ACT_SILU;
static int tiny_biases = 0;

static ModelConfig tiny_config(void) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.V = 32, c.C = 16, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = 4, c.F = 24, c.max_T = 16;
    c.eps = 1e-5f, c.rope_theta = 10000.0f;
    c.init_range = 0.25f; /* larger than HF's 0.02 so that gradients are far above float noise */
    c.tied = 0, c.n_labels = 0, c.bos_id = 1, c.eos_id = 2, c.pad_id = 0;
    c.act = (int)tiny_act, c.attn_bias = c.mlp_bias = tiny_biases;
    return c;
}

static void make_model(Model *m, int train_base, int tied) {
    ModelConfig c = tiny_config();
    c.tied = tied;
    ModelOptions o = {.B = TB, .T = TT, .training = 1, .train_base = train_base};
    LLError err;
    ck_assert_msg(model_init(m, &c, &o, &err) == LL_OK, "%s", err.msg);
    model_init_weights(m, 1234);
    if (tiny_biases) /* zero at init (HF): non-zero here, so that the forward's use of them is checked */
        for (int l = 0; l < c.L; l++)
            for (int mod = 0; mod < MOD_COUNT; mod++) {
                int in, out;
                model_module_dims(&c, mod, &in, &out);
                Rng r;
                rng_seed(&r, (uint64_t)(l * MOD_COUNT + mod + 1));
                rng_fill_normal(&r, model_bias(m, l, mod), (size_t)out, 0.3f);
            }
}

typedef struct {
    int ids[TB * TT], targets[TB * TT];
    Batch b;
} TestBatch;

static void make_batch(TestBatch *tb) {
    Rng r;
    rng_seed(&r, 99);
    for (int i = 0; i < TB * TT; i++) tb->ids[i] = (int)rng_below(&r, 32);
    for (int b = 0; b < TB; b++)
        for (int t = 0; t < TT; t++)
            tb->targets[b * TT + t] = t + 1 < TT ? tb->ids[b * TT + t + 1] : -1; /* LM shift, last ignored */
    tb->targets[1] = -1; /* one more ignored row */
    memset(&tb->b, 0, sizeof tb->b);
    tb->b.B = TB, tb->b.T = TT, tb->b.ids = tb->ids, tb->b.targets = tb->targets;
}

static Adapter *make_adapter(const AdapterConfig *c, Model *m) {
    Adapter *a = NULL;
    LLError err;
    ck_assert_msg(adapter_create(c, m, &a, &err) == LL_OK, "%s", err.msg);
    return a;
}

static void randomize(float *x, size_t n, float std, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    rng_fill_normal(&r, x, n, std);
}

static size_t n_logits(void) { return (size_t)TB * TT * 32; }

static float *copy_logits(const Model *m) {
    float *out = malloc(sizeof(float) * n_logits());
    memcpy(out, model_logits(m, 0, 0), sizeof(float) * n_logits());
    return out;
}

static AdapterConfig lora_cfg(int r, float alpha) {
    AdapterConfig c;
    adapter_config_defaults(&c, ADAPTER_LORA);
    c.r = r, c.alpha = alpha, c.seed = 7;
    return c;
}

static AdapterConfig vera_cfg(int r) {
    AdapterConfig c;
    adapter_config_defaults(&c, ADAPTER_VERA);
    c.r = r, c.seed = 7;
    return c;
}

static AdapterConfig adalora_cfg(void) {
    AdapterConfig c;
    adapter_config_defaults(&c, ADAPTER_ADALORA);
    c.init_r = 6, c.target_r = 2, c.alpha = 8.0f, c.seed = 7;
    c.total_step = 20, c.tinit = 3, c.tfinal = 5, c.deltaT = 2;
    return c;
}

/* The adapter's E floats of AdaLoRA, or B of LoRA: the block that makes the method a no-op. */
static AdapterConfig cfg_for(AdapterMethod m) {
    if (m == ADAPTER_LORA) return lora_cfg(4, 8.0f);
    if (m == ADAPTER_VERA) return vera_cfg(6);
    return adalora_cfg();
}

/* ---- identity at init --------------------------------------------------------------------- */

static void check_identity(AdapterConfig c) {
    Model m;
    make_model(&m, 0, 0);
    TestBatch tb;
    make_batch(&tb);
    float base_loss = model_forward(&m, &tb.b, 0);
    float *base = copy_logits(&m);
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    for (int train = 0; train <= 1; train++) {
        float loss = model_forward(&m, &tb.b, train);
        ck_assert_msg(memcmp(base, model_logits(&m, 0, 0), sizeof(float) * n_logits()) == 0,
                      "%s (train=%d, dropout=%g): logits differ from the base model at init",
                      adapter_method_name(c.method), train, c.dropout);
        ck_assert(memcmp(&loss, &base_loss, sizeof loss) == 0);
    }
    adapter_free(a);
    free(base);
    model_free(&m);
}

START_TEST(test_identity_at_init) {
    AdapterMethod ms[3] = {ADAPTER_LORA, ADAPTER_VERA, ADAPTER_ADALORA};
    for (int i = 0; i < 3; i++) {
        AdapterConfig c = cfg_for(ms[i]);
        c.targets = (1u << MOD_COUNT) - 1;
        check_identity(c);
        c.dropout = 0.3f; /* the base path never sees the dropout */
        check_identity(c);
    }
}
END_TEST

/* ---- frozen base ---------------------------------------------------------------------------- */

START_TEST(test_frozen_base_unchanged) {
    AdapterMethod ms[3] = {ADAPTER_LORA, ADAPTER_VERA, ADAPTER_ADALORA};
    for (int i = 0; i < 3; i++) {
        Model m;
        make_model(&m, 0, 0);
        ck_assert(m.grads == NULL);
        TestBatch tb;
        make_batch(&tb);
        float *before = malloc(sizeof(float) * m.n_params);
        memcpy(before, m.params, sizeof(float) * m.n_params);
        AdapterConfig c = cfg_for(ms[i]);
        c.targets = (1u << MOD_COUNT) - 1;
        c.dropout = 0.1f;
        Adapter *a = make_adapter(&c, &m);
        adapter_attach(&m, a);
        float *p0 = malloc(sizeof(float) * a->n_params);
        memcpy(p0, a->params, sizeof(float) * a->n_params);
        for (int step = 0; step < 3; step++) {
            model_zero_grad(&m);
            adapter_zero_grad(a);
            model_forward(&m, &tb.b, 1);
            model_backward(&m, &tb.b, 1.0f);
            adapter_reg_loss(a, c.orth_reg_weight);
            for (size_t j = 0; j < a->n_params; j++) a->params[j] -= 0.5f * a->grads[j];
            adapter_on_step(a, step);
        }
        ck_assert_msg(memcmp(before, m.params, sizeof(float) * m.n_params) == 0, "%s changed the frozen base",
                      adapter_method_name(c.method));
        ck_assert_msg(memcmp(p0, a->params, sizeof(float) * a->n_params) != 0, "%s: the adapter did not train",
                      adapter_method_name(c.method));
        free(p0);
        free(before);
        adapter_free(a);
        model_free(&m);
    }
}
END_TEST

/* ---- finite differences ------------------------------------------------------------------- */

typedef struct {
    Model *m;
    Adapter *a; /* may be NULL */
    TestBatch *tb;
    int train;
    Rng rng0; /* dropout stream at the analytic forward, rewound before every evaluation */
} FdCtx;

static double fd_loss(FdCtx *f) {
    if (f->a) f->a->drop_rng = f->rng0;
    return model_forward(f->m, &f->tb->b, f->train);
}

/* Checks analytic[i] against central differences of the loss in param[i] for every i. */
static void fd_check(const char *what, FdCtx *f, float *param, const float *analytic, size_t n, float eps,
                     double atol, double rtol) {
    int bad = 0;
    double worst = 0.0;
    size_t worst_i = 0;
    double worst_a = 0, worst_n = 0;
    for (size_t i = 0; i < n; i++) {
        float v = param[i];
        double d[2];
        for (int k = 0; k < 2; k++) {
            float h = k == 0 ? eps : eps / 2;
            param[i] = v + h;
            double lp = fd_loss(f);
            param[i] = v - h;
            double lm = fd_loss(f);
            d[k] = (lp - lm) / ((double)(v + h) - (double)(v - h));
        }
        param[i] = v;
        /* Richardson: two central differences cancel the h² term, so that h can stay large
         * against the float loss's rounding noise without the curvature biasing the estimate */
        double num = (4.0 * d[1] - d[0]) / 3.0;
        double an = analytic[i];
        double tol = atol + rtol * fmax(fabs(an), fabs(num));
        double ratio = fabs(an - num) / tol;
        if (ratio > worst) worst = ratio, worst_i = i, worst_a = an, worst_n = num;
        if (ratio > 1.0 && bad++ < 8) fprintf(stderr, "%s: [%zu] analytic %.8g numeric %.8g\n", what, i, an, num);
    }
    if (getenv("FD_VERBOSE")) /* how close the worst element came to the tolerance */
        fprintf(stderr, "%s: worst %.3f of tol ([%zu] %.6g vs %.6g)\n", what, worst, worst_i, worst_a, worst_n);
    ck_assert_msg(bad == 0, "%s: %d of %zu gradients off; worst [%zu] analytic %.8g numeric %.8g (%.2fx tol)", what,
                  bad, n, worst_i, worst_a, worst_n, worst);
}

/* Analytic adapter (and base) gradients of the model's mean cross-entropy. */
static void analytic_grads(FdCtx *f) {
    model_zero_grad(f->m);
    if (f->a) {
        adapter_zero_grad(f->a);
        f->rng0 = f->a->drop_rng;
    }
    model_forward(f->m, &f->tb->b, f->train);
    model_backward(f->m, &f->tb->b, 1.0f);
}

static void check_base_grads(int tied);

static void check_adapter_grads(AdapterConfig c, const char *what, int train) {
    Model m;
    make_model(&m, 0, 0);
    TestBatch tb;
    make_batch(&tb);
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    randomize(a->params, a->n_params, 0.3f, 4242); /* B, lambda_b, E non-zero: non-trivial gradients */
    FdCtx f = {.m = &m, .a = a, .tb = &tb, .train = train};
    analytic_grads(&f);
    float *g = malloc(sizeof(float) * a->n_params);
    memcpy(g, a->grads, sizeof(float) * a->n_params);
    double gmax = 0;
    for (size_t i = 0; i < a->n_params; i++) gmax = fmax(gmax, fabs(g[i]));
    ck_assert_msg(gmax > 1e-3, "%s: gradients are trivially small (%g)", what, gmax);
    fd_check(what, &f, a->params, g, a->n_params, 1e-2f, 2e-4, 2e-2);
    free(g);
    adapter_free(a);
    model_free(&m);
}

START_TEST(test_grad_lora) {
    AdapterConfig c = lora_cfg(3, 6.0f);
    c.targets = (1u << MOD_COUNT) - 1;
    check_adapter_grads(c, "lora all-linear", 1);
    c.dropout = 0.25f;
    check_adapter_grads(c, "lora all-linear, dropout 0.25", 1);
    c = lora_cfg(4, 8.0f);
    c.use_rslora = 1;
    c.n_rank_pattern = 1;
    snprintf(c.rank_pattern[0].key, sizeof c.rank_pattern[0].key, "v_proj");
    c.rank_pattern[0].value = 2;
    check_adapter_grads(c, "rslora q,v with rank_pattern", 1);
    c = lora_cfg(13, 16.0f); /* more rows than one register tile (12) in the products over r */
    check_adapter_grads(c, "lora q,v r=13", 1);
}
END_TEST

/* Issue 15: PEFT's lora_bias (y += s·(B·A·x + b)) and a base with attention_bias, mlp_bias and
 * each hidden_act: every gradient against finite differences (the adapter's, and under full
 * fine-tuning the base's, biases included). */
START_TEST(test_grad_hf_options) {
    AdapterConfig c = lora_cfg(3, 6.0f);
    c.targets = (1u << MOD_COUNT) - 1;
    c.lora_bias = 1;
    check_adapter_grads(c, "lora_bias all-linear", 1);
    c.dropout = 0.25f;
    check_adapter_grads(c, "lora_bias all-linear, dropout 0.25", 1);
    tiny_biases = 1;
    for (int act = 0; act < ACT_COUNT; act++) {
        tiny_act = (Activation)act;
        /* ReLU: a step of 1e-2 in a weight moves some pre-activations across the kink, where the
         * central difference averages the two slopes (and smaller steps drown in the float loss's
         * rounding): its gradient is checked at the op (test_ops, away from 0) and its forward by
         * the parity fixture (test_parity's test_hf_options) */
        if (act == ACT_RELU) continue;
        check_base_grads(0);
        c.dropout = 0.0f;
        check_adapter_grads(c, act_name((Activation)act), 1);
    }
    tiny_biases = 0, tiny_act = ACT_SILU;
}
END_TEST

START_TEST(test_grad_vera) {
    AdapterConfig c = vera_cfg(5);
    c.targets = (1u << MOD_COUNT) - 1; /* sites of several shapes share the projections */
    check_adapter_grads(c, "vera all-linear", 1);
    c.dropout = 0.25f;
    check_adapter_grads(c, "vera all-linear, dropout 0.25", 1);
}
END_TEST

START_TEST(test_grad_adalora) {
    AdapterConfig c = adalora_cfg();
    c.targets = (1u << MOD_COUNT) - 1;
    check_adapter_grads(c, "adalora all-linear", 1);
    c.dropout = 0.25f;
    check_adapter_grads(c, "adalora all-linear, dropout 0.25", 1);
}
END_TEST

START_TEST(test_grad_adalora_regulariser) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = adalora_cfg();
    c.targets = (1u << MOD_Q) | (1u << MOD_DOWN);
    Adapter *a = make_adapter(&c, &m);
    randomize(a->params, a->n_params, 0.4f, 77);
    adapter_zero_grad(a);
    float R = adapter_reg_loss(a, 1.0f);
    /* the value by hand: mean over the 2·n matrices of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F */
    double want = 0.0;
    int nm = 0;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        const float *A = a->params + s->off, *B = A + (size_t)s->r * s->in + s->r;
        double fa = 0, fb = 0;
        for (int p = 0; p < s->r; p++)
            for (int q = 0; q < s->r; q++) {
                double ga = 0, gb = 0;
                for (int j = 0; j < s->in; j++) ga += (double)A[p * s->in + j] * A[q * s->in + j];
                for (int o = 0; o < s->out; o++) gb += (double)B[o * s->r + p] * B[o * s->r + q];
                ga -= p == q, gb -= p == q;
                fa += ga * ga, fb += gb * gb;
            }
        want += sqrt(fa) + sqrt(fb);
        nm += 2;
    }
    want /= nm;
    ck_assert_int_eq(nm, 8);
    ck_assert_msg(fabs(R - want) <= 1e-5 * want, "orth reg %.9g, by hand %.9g", R, want);
    float *g = malloc(sizeof(float) * a->n_params);
    memcpy(g, a->grads, sizeof(float) * a->n_params);
    /* weight 0 adds nothing to the gradients and returns the same value */
    adapter_zero_grad(a);
    ck_assert(adapter_reg_loss(a, 0.0f) == R);
    for (size_t i = 0; i < a->n_params; i++) ck_assert(a->grads[i] == 0.0f);
    int bad = 0;
    for (size_t i = 0; i < a->n_params; i++) {
        float v = a->params[i];
        a->params[i] = v + 1e-3f;
        double lp = adapter_reg_loss(a, 0.0f);
        a->params[i] = v - 1e-3f;
        double lm = adapter_reg_loss(a, 0.0f);
        a->params[i] = v;
        double num = (lp - lm) / ((double)(v + 1e-3f) - (double)(v - 1e-3f));
        if (fabs(num - g[i]) > 2e-4 + 1e-2 * fmax(fabs(num), fabs(g[i]))) {
            if (bad++ < 3) fprintf(stderr, "reg grad [%zu]: analytic %g numeric %g\n", i, g[i], num);
        }
    }
    ck_assert_int_eq(bad, 0);
    /* E gets no regulariser gradient; the weight scales linearly */
    adapter_zero_grad(a);
    adapter_reg_loss(a, 0.5f);
    for (size_t i = 0; i < a->n_params; i++) ck_assert(fabsf(a->grads[i] - 0.5f * g[i]) <= 1e-6f + 1e-5f * fabsf(g[i]));
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        for (int k = 0; k < s->r; k++) ck_assert(g[s->off + (size_t)s->r * s->in + k] == 0.0f);
    }
    free(g);
    adapter_free(a);
    model_free(&m);
}
END_TEST

static void check_base_grads(int tied) {
    Model m;
    make_model(&m, 1, tied);
    TestBatch tb;
    make_batch(&tb);
    FdCtx f = {.m = &m, .a = NULL, .tb = &tb, .train = 1};
    analytic_grads(&f);
    float *g = malloc(sizeof(float) * m.n_params);
    memcpy(g, m.grads, sizeof(float) * m.n_params);
    fd_check(tied ? "base weights (tied head)" : "base weights", &f, m.params, g, m.n_params, 1e-2f, 2e-4, 2e-2);
    free(g);
    model_free(&m);
}

START_TEST(test_grad_base_model) {
    check_base_grads(0);
    check_base_grads(1);
}
END_TEST

/* Base and adapter gradients together: with train_base the base still gets its full gradient
 * and the adapter path adds into dx. */
START_TEST(test_grad_base_with_adapter) {
    Model m;
    make_model(&m, 1, 0);
    TestBatch tb;
    make_batch(&tb);
    AdapterConfig c = lora_cfg(2, 4.0f);
    c.targets = (1u << MOD_V) | (1u << MOD_UP);
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    randomize(a->params, a->n_params, 0.3f, 5);
    FdCtx f = {.m = &m, .a = a, .tb = &tb, .train = 1};
    analytic_grads(&f);
    float *g = malloc(sizeof(float) * m.n_params);
    memcpy(g, m.grads, sizeof(float) * m.n_params);
    /* the layer-0 weights only: their gradient flows back through both layers' adapters */
    size_t lo = m.lay[0].ln1, hi = m.lay[1].ln1;
    fd_check("base weights of layer 0 with a LoRA attached", &f, m.params + lo, g + lo, hi - lo, 1e-2f, 2e-4, 2e-2);
    free(g);
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* Thread-count independence: adapter and base gradients are bitwise the same with 1 and 2
 * threads (kernels split over the dimension that owns the output, no float reductions across
 * threads). The model is wider than the tiny one so that the element-wise kernels pass the size
 * at which they go parallel (LL_OMP_MIN_WORK). */
START_TEST(test_threads_bitwise) {
    AdapterMethod ms[4] = {ADAPTER_LORA, ADAPTER_VERA, ADAPTER_ADALORA, ADAPTER_LORA};
    const int first_threads = blas_thread_independent() ? 1 : 2;
    for (int k = 0; k < 4; k++) {
        float *g[2] = {NULL, NULL}, loss[2];
        size_t n = 0;
        for (int th = 1; th <= 2; th++) {
            omp_set_num_threads(th == 1 ? first_threads : 2);
            Model m;
            ModelConfig mc = tiny_config();
            mc.C = 64, mc.HS = 16, mc.F = 512, mc.max_T = 64;
            ModelOptions mo = {.B = 2, .T = 64, .training = 1, .train_base = 1};
            LLError err;
            ck_assert_msg(model_init(&m, &mc, &mo, &err) == LL_OK, "%s", err.msg);
            model_init_weights(&m, 5);
            int ids[128], targets[128];
            Rng r;
            rng_seed(&r, 6);
            for (int i = 0; i < 128; i++) ids[i] = (int)rng_below(&r, 32);
            for (int i = 0; i < 128; i++) targets[i] = i % 64 == 63 ? -1 : ids[i + 1];
            Batch bt = {.B = 2, .T = 64, .ids = ids, .targets = targets};
            ck_assert((size_t)bt.B * bt.T * mc.F >= LL_OMP_MIN_WORK);
            AdapterConfig c = cfg_for(ms[k]);
            c.targets = (1u << MOD_COUNT) - 1;
            c.dropout = 0.2f;
            c.use_dora = k == 3;
            Adapter *a = make_adapter(&c, &m);
            adapter_attach(&m, a);
            randomize(a->params, a->n_params, 0.3f, 17);
            model_zero_grad(&m);
            adapter_zero_grad(a);
            loss[th - 1] = model_forward(&m, &bt, 1);
            model_backward(&m, &bt, 1.0f);
            n = a->n_params + m.n_params;
            g[th - 1] = malloc(sizeof(float) * n);
            memcpy(g[th - 1], a->grads, sizeof(float) * a->n_params);
            memcpy(g[th - 1] + a->n_params, m.grads, sizeof(float) * m.n_params);
            adapter_free(a);
            model_free(&m);
        }
        ck_assert(memcmp(&loss[0], &loss[1], sizeof(float)) == 0);
        ck_assert_msg(memcmp(g[0], g[1], sizeof(float) * n) == 0, "method %d: gradients depend on the thread count", k);
        free(g[0]);
        free(g[1]);
    }
}
END_TEST

/* ---- merge -------------------------------------------------------------------------------- */

static void check_merge(AdapterConfig c) {
    Model m;
    make_model(&m, 0, 0);
    TestBatch tb;
    make_batch(&tb);
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    randomize(a->params, a->n_params, 0.3f, 31);
    model_forward(&m, &tb.b, 0);
    float *want = copy_logits(&m);
    float *w0 = malloc(sizeof(float) * m.n_params);
    memcpy(w0, m.params, sizeof(float) * m.n_params);
    adapter_merge(a, &m);
    ck_assert(a->merged);
    ck_assert(memcmp(w0, m.params, sizeof(float) * m.n_params) != 0);
    model_forward(&m, &tb.b, 0);
    const float *got = model_logits(&m, 0, 0);
    double maxd = 0, maxv = 0;
    for (size_t i = 0; i < n_logits(); i++) {
        maxd = fmax(maxd, fabs((double)got[i] - want[i]));
        maxv = fmax(maxv, fabs((double)want[i]));
    }
    ck_assert_msg(maxd / maxv < 1e-5, "%s: merged forward differs, relative error %g", adapter_method_name(c.method),
                  maxd / maxv);
    adapter_unmerge(a, &m);
    ck_assert(!a->merged);
    for (size_t i = 0; i < m.n_params; i++)
        ck_assert_msg(fabsf(m.params[i] - w0[i]) <= 1e-6f + 1e-5f * fabsf(w0[i]), "%s: unmerge left %g, want %g",
                      adapter_method_name(c.method), m.params[i], w0[i]);
    /* and the adapter runs again after unmerge */
    model_forward(&m, &tb.b, 0);
    got = model_logits(&m, 0, 0);
    for (size_t i = 0; i < n_logits(); i++) ck_assert(fabsf(got[i] - want[i]) <= 1e-5f * (float)maxv);
    free(w0);
    free(want);
    adapter_free(a);
    model_free(&m);
}

static cJSON *read_json(const char *dir);
static Adapter *roundtrip(Adapter *a, Model *m, const char *dir, Model *m2);

/* lora_bias merges into the base's bias (attention_bias, mlp_bias), and is refused, naming the
 * layer, on a base without one (as PEFT). Saved and loaded with PEFT's names (lora_B.bias). */
START_TEST(test_lora_bias_merge_save_load) {
    AdapterConfig c = lora_cfg(4, 8.0f);
    c.targets = (1u << MOD_COUNT) - 1;
    c.lora_bias = 1;
    Model m;
    make_model(&m, 0, 0);
    Adapter *a = make_adapter(&c, &m);
    LLError err;
    ck_assert_int_eq(adapter_merge_check(a, &m, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "lora_bias") && strstr(err.msg, "attention_bias"), "%s", err.msg);
    adapter_free(a);
    model_free(&m);
    tiny_biases = 1, tiny_act = ACT_GELU_TANH;
    make_model(&m, 0, 0);
    a = make_adapter(&c, &m);
    CK_OK(adapter_merge_check(a, &m, &err));
    adapter_free(a);
    model_free(&m);
    check_merge(c); /* merged forward = unmerged, unmerge restores W and b */
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    Model m2;
    make_model(&m, 0, 0);
    a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    randomize(a->params, a->n_params, 0.3f, 12);
    Adapter *b = roundtrip(a, &m, dir, &m2);
    ck_assert(b->cfg.lora_bias == 1);
    cJSON *j = read_json(dir);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "lora_bias")));
    cJSON_Delete(j);
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors st;
    CK_OK(st_load(path, &st, &err));
    const StTensor *t = st_find(&st, "base_model.model.model.layers.1.mlp.down_proj.lora_B.bias");
    ck_assert(t && t->ndim == 1 && t->shape[0] == 16);
    ck_assert_int_eq(st.n, 2 * MOD_COUNT * 3);
    st_free(&st);
    /* a tensor the config would not use is refused, not dropped: lora_B.bias without lora_bias, a
     * module outside target_modules */
    char cfgp[512];
    snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", dir);
    const char *unused[][2] = {
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": \"all-linear\"}", "lora_bias is false"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"lora_bias\": true, \"target_modules\": [\"q_proj\"]}",
         "belongs to no module"},
    };
    for (int i = 0; i < 2; i++) {
        tu_write_text(cfgp, unused[i][0]);
        Adapter *u = NULL;
        ck_assert_int_eq(adapter_load(dir, &m2, &u, &err), LL_ERR_FORMAT);
        ck_assert_msg(strstr(err.msg, unused[i][1]) && strstr(err.msg, "adapter_model.safetensors"), "%s", err.msg);
    }
    /* lora_bias with DoRA, or on AdaLoRA, is refused (PEFT's rule) */
    c.use_dora = 1;
    Adapter *refused = NULL;
    ck_assert_int_eq(adapter_create(&c, &m2, &refused, &err), LL_ERR_CONFIG);
    ck_assert_ptr_null(refused);
    c.use_dora = 0, c.method = ADAPTER_ADALORA;
    ck_assert_int_eq(adapter_create(&c, &m2, &refused, &err), LL_ERR_CONFIG);
    adapter_free(b);
    adapter_free(a);
    model_free(&m2);
    model_free(&m);
    tu_tmpdir_remove(dir);
    tiny_biases = 0, tiny_act = ACT_SILU;
}
END_TEST

/* target_modules as a regular expression (PEFT: re.fullmatch against the module's full name):
 * the sites it selects, the same adapter as the list form when it names the same modules, written
 * back as the string, its gradients, and Python-only syntax or modules loralab cannot adapt refused
 * by name. */
START_TEST(test_target_regex) {
    LLError err;
    AdapterConfig c;
    const char *json = "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": \"model\\\\.layers\\\\.1\\\\..*(q|down)_proj\"}";
    CK_OK(adapter_config_parse(json, strlen(json), "x/adapter_config.json", &c, &err));
    ck_assert_str_eq(c.target_regex, "model\\.layers\\.1\\..*(q|down)_proj");
    Model m;
    make_model(&m, 0, 0);
    Adapter *a = make_adapter(&c, &m);
    for (int i = 0; i < a->n_sites; i++)
        ck_assert_msg(a->sites[i].active == (i == MOD_COUNT + MOD_Q || i == MOD_COUNT + MOD_DOWN), "site %d", i);
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    CK_OK(adapter_save(a, &m, dir, NULL, &err));
    cJSON *j = read_json(dir);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "target_modules")->valuestring, c.target_regex);
    cJSON_Delete(j);
    Adapter *b = NULL;
    CK_OK(adapter_load(dir, &m, &b, &err));
    ck_assert_uint_eq(b->n_params, a->n_params);
    adapter_free(b);
    adapter_free(a);
    tu_tmpdir_remove(dir);
    /* the same sites as the list form: the same parameters, bitwise the same logits */
    const char *rx = "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": \".*\\\\.(q_proj|v_proj)\"}";
    const char *ls = "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\", \"v_proj\"]}";
    AdapterConfig cr, cl;
    CK_OK(adapter_config_parse(rx, strlen(rx), "rx", &cr, &err));
    CK_OK(adapter_config_parse(ls, strlen(ls), "ls", &cl, &err));
    Adapter *ar = make_adapter(&cr, &m), *al = make_adapter(&cl, &m);
    ck_assert_uint_eq(ar->n_params, al->n_params);
    ck_assert(memcmp(ar->params, al->params, sizeof(float) * ar->n_params) == 0);
    adapter_free(ar);
    adapter_free(al);
    model_free(&m);
    check_adapter_grads(cr, "regex target_modules", 1);
    const char *bad[][2] = {
        {"model\\\\.layers\\\\.\\\\d+\\\\.self_attn\\\\.q_proj", "Python character class"},
        {"(?:.*q_proj)", "(?...) group"},
        {".*q_proj.*?", "lazy quantifier"},
        {".*", "lm_head"},
        {".*(proj|score)", "score"},
        {"q_proj(", "cannot compile"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"peft_type\": \"LORA\", \"target_modules\": \"%s\"}", bad[i][0]);
        ck_assert_int_eq(adapter_config_parse(text, strlen(text), "x/adapter_config.json", &c, &err), LL_ERR_FORMAT);
        ck_assert_msg(strstr(err.msg, "x/adapter_config.json") && strstr(err.msg, "target_modules") && strstr(err.msg, bad[i][1]),
                      "%s: %s", bad[i][0], err.msg);
    }
    const char *with_layers = "{\"peft_type\": \"LORA\", \"target_modules\": \".*q_proj\", \"layers_to_transform\": [0]}";
    ck_assert_int_eq(adapter_config_parse(with_layers, strlen(with_layers), "x", &c, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "layers_to_transform"), "%s", err.msg);
    /* a pattern that selects no layer of this model */
    const char *none = "{\"peft_type\": \"LORA\", \"target_modules\": \"model\\\\.layers\\\\.7\\\\..*\"}";
    CK_OK(adapter_config_parse(none, strlen(none), "x", &c, &err));
    make_model(&m, 0, 0);
    Adapter *z = NULL;
    ck_assert_int_eq(adapter_create(&c, &m, &z, &err), LL_ERR_CONFIG);
    model_free(&m);
}
END_TEST

START_TEST(test_merge_unmerge) {
    AdapterMethod ms[3] = {ADAPTER_LORA, ADAPTER_VERA, ADAPTER_ADALORA};
    for (int i = 0; i < 3; i++) {
        AdapterConfig c = cfg_for(ms[i]);
        c.targets = (1u << MOD_COUNT) - 1;
        check_merge(c);
    }
}
END_TEST

/* ---- bf16 base products --------------------------------------------------------------------- */

static double rel_diff(const float *a, const float *b, size_t n) { /* ‖a − b‖ / ‖b‖ */
    double d = 0.0, nb = 0.0;
    for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), nb += (double)b[i] * b[i];
    return sqrt(d / nb);
}

/* Logits, loss and gradients (the adapter's, and the base's under full fine-tuning) with bf16 base
 * products stay within bf16 rounding of fp32; the packs follow merge, unmerge and writes announced
 * by model_base_changed (a stale pack would give last version's numbers). */
START_TEST(test_bf16_model) {
    if (!bf16_supported()) {
        fprintf(stderr, "adapter: this CPU has no AVX512_BF16, bf16 model not tested\n");
        return;
    }
    LLError err;
    TestBatch tb;
    make_batch(&tb);
    for (int full = 0; full <= 1; full++) {
        Model m;
        make_model(&m, full, full);
        AdapterConfig c = lora_cfg(4, 8.0f);
        c.targets = (1u << MOD_COUNT) - 1;
        Adapter *a = full ? NULL : make_adapter(&c, &m);
        adapter_attach(&m, a);
        if (a) randomize(a->params, a->n_params, 0.3f, 41);
        size_t ng = full ? m.n_params : a->n_params;
        float *g32 = malloc(sizeof(float) * ng);
        float loss[2], *logits[2];
        for (int bf = 0; bf <= 1; bf++) {
            ck_assert_msg(model_set_bf16(&m, bf, &err) == LL_OK, "%s", err.msg);
            loss[bf] = model_forward(&m, &tb.b, 1);
            logits[bf] = copy_logits(&m);
            model_zero_grad(&m);
            if (a) adapter_zero_grad(a);
            model_backward(&m, &tb.b, 1.0f);
            const float *g = full ? m.grads : a->grads;
            if (!bf) memcpy(g32, g, sizeof(float) * ng);
            /* Rounding only the weights of this model to bf16 moves the LoRA gradients by 2.7%;
             * bf16 activations too give 4.3% (LoRA) and 1.3% (full). A wrong operand layout is O(1). */
            else ck_assert_msg(rel_diff(g, g32, ng) < 8e-2, "full=%d: bf16 gradients off by %g", full, rel_diff(g, g32, ng));
        }
        ck_assert_msg(fabsf(loss[1] - loss[0]) < 1e-2f * fabsf(loss[0]), "full=%d: loss %g (bf16) vs %g", full, loss[1],
                      loss[0]);
        ck_assert_msg(rel_diff(logits[1], logits[0], n_logits()) < 1e-2, "full=%d: logits off by %g", full,
                      rel_diff(logits[1], logits[0], n_logits()));
        ck_assert(memcmp(logits[1], logits[0], sizeof(float) * n_logits()) != 0); /* bf16 really ran */
        /* Write the base and announce it (merge does; the optimizer step does for full FT). */
        if (a) adapter_merge(a, &m), adapter_attach(&m, NULL);
        else {
            for (size_t i = 0; i < m.n_params; i++) m.params[i] -= 0.05f * m.grads[i];
            model_base_changed(&m);
        }
        model_forward(&m, &tb.b, 0);
        float *after = copy_logits(&m);
        ck_assert(memcmp(after, logits[1], sizeof(float) * n_logits()) != 0);
        ck_assert(model_set_bf16(&m, 1, &err) == LL_OK); /* forces a repack */
        model_forward(&m, &tb.b, 0);
        ck_assert_msg(memcmp(after, model_logits(&m, 0, 0), sizeof(float) * n_logits()) == 0,
                      "full=%d: the packs did not follow the base", full);
        free(after), free(logits[0]), free(logits[1]), free(g32);
        if (a) adapter_free(a);
        model_free(&m);
    }
}
END_TEST

/* ---- counts, report, targets, patterns ---------------------------------------------------- */

START_TEST(test_param_counts) {
    Model m;
    make_model(&m, 0, 0);
    ck_assert_uint_eq(m.n_params, 4944); /* 512 + 2·1952 + 16 + 512 by hand */
    AdapterMethod ms[3] = {ADAPTER_LORA, ADAPTER_VERA, ADAPTER_ADALORA};
    for (int k = 0; k < 3; k++) {
        AdapterConfig c = cfg_for(ms[k]);
        c.targets = (1u << MOD_COUNT) - 1;
        Adapter *a = make_adapter(&c, &m);
        size_t want = 0;
        for (int l = 0; l < 2; l++)
            for (int mod = 0; mod < MOD_COUNT; mod++) {
                int in, out;
                model_module_dims(&m.cfg, mod, &in, &out);
                if (ms[k] == ADAPTER_LORA) want += (size_t)c.r * (in + out);       /* r(in + out) */
                else if (ms[k] == ADAPTER_VERA) want += (size_t)c.r + out;         /* r + out */
                else want += (size_t)c.init_r * (in + out) + c.init_r;             /* A, B and E */
            }
        ck_assert_uint_eq(a->n_params, want);
        ck_assert_uint_eq(adapter_trainable_count(&m, a), want);
        size_t off = 0;
        for (int i = 0; i < a->n_sites; i++) {
            ck_assert(a->sites[i].active);
            ck_assert_uint_eq(a->sites[i].off, off);
            off += a->sites[i].n;
        }
        adapter_free(a);
    }
    model_free(&m);
}
END_TEST

START_TEST(test_report_string) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = lora_cfg(4, 8.0f); /* q, v: 2 · (4·(16+16) + 4·(16+8)) = 448 */
    Adapter *a = make_adapter(&c, &m);
    char buf[200];
    adapter_param_report(&m, a, buf, sizeof buf);
    ck_assert_str_eq(buf, "trainable params: 448 || all params: 5,392 || trainable%: 8.3086");
    adapter_param_report(&m, NULL, buf, sizeof buf);
    ck_assert_str_eq(buf, "trainable params: 4,944 || all params: 4,944 || trainable%: 100.0000");
    adapter_free(a);
    model_free(&m);
}
END_TEST

START_TEST(test_targets_parse) {
    unsigned mask;
    LLError err;
    ck_assert_int_eq(adapter_parse_targets("q_proj,v_proj", &mask, &err), LL_OK);
    ck_assert_uint_eq(mask, (1u << MOD_Q) | (1u << MOD_V));
    ck_assert_int_eq(adapter_parse_targets("[k, o, down]", &mask, &err), LL_OK);
    ck_assert_uint_eq(mask, (1u << MOD_K) | (1u << MOD_O) | (1u << MOD_DOWN));
    ck_assert_int_eq(adapter_parse_targets("all-linear", &mask, &err), LL_OK);
    ck_assert_uint_eq(mask, (1u << MOD_COUNT) - 1);
    char s[128];
    adapter_targets_string((1u << MOD_Q) | (1u << MOD_UP), s, sizeof s);
    ck_assert_str_eq(s, "q_proj,up_proj");
}
END_TEST

START_TEST(test_patterns_and_layers) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = lora_cfg(4, 8.0f);
    c.targets = (1u << MOD_Q) | (1u << MOD_V) | (1u << MOD_DOWN);
    c.n_rank_pattern = 2;
    snprintf(c.rank_pattern[0].key, sizeof c.rank_pattern[0].key, "model.layers.1.self_attn.q_proj");
    c.rank_pattern[0].value = 3;
    snprintf(c.rank_pattern[1].key, sizeof c.rank_pattern[1].key, "q_proj"); /* first match wins */
    c.rank_pattern[1].value = 2;
    c.n_alpha_pattern = 1;
    snprintf(c.alpha_pattern[0].key, sizeof c.alpha_pattern[0].key, "mlp.down_proj");
    c.alpha_pattern[0].value = 16;
    Adapter *a = make_adapter(&c, &m);
    const AdapterSite *q0 = &a->sites[0 * MOD_COUNT + MOD_Q], *q1 = &a->sites[1 * MOD_COUNT + MOD_Q];
    const AdapterSite *v0 = &a->sites[MOD_V], *d1 = &a->sites[MOD_COUNT + MOD_DOWN];
    ck_assert(q0->active && q1->active && v0->active && d1->active);
    ck_assert(!a->sites[MOD_K].active && !a->sites[MOD_COUNT + MOD_O].active);
    ck_assert_int_eq(q0->r, 2);
    ck_assert_int_eq(q1->r, 3);
    ck_assert_int_eq(v0->r, 4);
    ck_assert(q0->scale == 8.0f / 2 && q1->scale == 8.0f / 3 && v0->scale == 2.0f);
    ck_assert(d1->alpha == 16.0f && d1->scale == 4.0f && d1->r == 4);
    ck_assert_uint_eq(a->n_params, 2 * 32 + 3 * 32 + 4 * 24 * 2 + 4 * (24 + 16) * 2);
    adapter_free(a);
    /* a pattern key must match whole path components: "_proj" alone matches nothing */
    c = lora_cfg(4, 8.0f);
    c.n_rank_pattern = 1;
    snprintf(c.rank_pattern[0].key, sizeof c.rank_pattern[0].key, "proj");
    c.rank_pattern[0].value = 1;
    a = make_adapter(&c, &m);
    ck_assert_int_eq(a->sites[MOD_Q].r, 4);
    adapter_free(a);
    /* rsLoRA */
    c = lora_cfg(4, 8.0f);
    c.use_rslora = 1;
    a = make_adapter(&c, &m);
    ck_assert(a->sites[MOD_Q].scale == 8.0f / 2.0f);
    adapter_free(a);
    /* layers_to_transform */
    c = lora_cfg(4, 8.0f);
    c.n_layers = 1, c.layers[0] = 1;
    a = make_adapter(&c, &m);
    for (int i = 0; i < a->n_sites; i++)
        ck_assert_int_eq(a->sites[i].active,
                         a->sites[i].layer == 1 && (a->sites[i].mod == MOD_Q || a->sites[i].mod == MOD_V));
    adapter_free(a);
    /* the same selection for VeRA and AdaLoRA; VeRA sizes its projections from the kept sites */
    c = vera_cfg(4);
    c.targets = (1u << MOD_K) | (1u << MOD_DOWN);
    c.n_layers = 1, c.layers[0] = 0;
    a = make_adapter(&c, &m);
    int n_active = 0;
    for (int i = 0; i < a->n_sites; i++) n_active += a->sites[i].active;
    ck_assert_int_eq(n_active, 2);
    ck_assert_uint_eq(a->n_params, (4 + 8) + (4 + 16));
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* ---- VeRA projections ----------------------------------------------------------------------- */

START_TEST(test_vera_projections) {
    /* torch.manual_seed(0); torch.rand(4) (peft-spec.md section 3.1) */
    Mt19937 g;
    mt_seed(&g, 0);
    float u[4];
    mt_fill_uniform_torch(&g, u, 4, 0.0f, 1.0f);
    const float want[4] = {0.49625659f, 0.76822180f, 0.08847743f, 0.13203049f};
    for (int i = 0; i < 4; i++) ck_assert_msg(fabsf(u[i] - want[i]) < 1e-7f, "u[%d] = %.8f", i, u[i]);
    /* the adapter's projections: A (r x max_in) then B (max_out x r) from one stream */
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = vera_cfg(3);
    c.targets = (1u << MOD_COUNT) - 1;
    c.projection_prng_key = 5;
    Adapter *a = make_adapter(&c, &m);
    /* max_in = F = 24 (down_proj), max_out = F = 24 (gate/up) */
    float *ref = malloc(sizeof(float) * (3 * 24 + 24 * 3));
    mt_seed(&g, 5);
    float ba = (float)(sqrt(3.0) * (sqrt(2.0) / sqrt(24.0))), bb = (float)(sqrt(3.0) * (sqrt(2.0) / sqrt(3.0)));
    mt_fill_uniform_torch(&g, ref, 3 * 24, -ba, ba);
    mt_fill_uniform_torch(&g, ref + 3 * 24, 24 * 3, -bb, bb);
    for (int i = 0; i < 72; i++) ck_assert(fabsf(ref[i]) <= ba && fabsf(ref[72 + i]) <= bb);
    /* recover the projections through the merge delta of one site with unit vectors:
     * lambda_b = e_o, lambda_d = e_i gives ΔW[o, j] = B[o, i]·A[i, j] */
    const AdapterSite *s = &a->sites[MOD_DOWN]; /* in 24, out 16: a top-left corner */
    float *dW = malloc(sizeof(float) * 16 * 24);
    memset(a->params + s->off, 0, sizeof(float) * s->n);
    a->params[s->off + 1] = 1.0f;        /* lambda_d[1] */
    a->params[s->off + 3 + 2] = 1.0f;    /* lambda_b[2] */
    a->ops->delta(a, s, dW);
    for (int o = 0; o < 16; o++)
        for (int j = 0; j < 24; j++) {
            float w = o == 2 ? ref[72 + 2 * 3 + 1] * ref[1 * 24 + j] : 0.0f;
            ck_assert_msg(dW[o * 24 + j] == w, "delta[%d,%d] = %g, want %g", o, j, dW[o * 24 + j], w);
        }
    /* a narrower site (q_proj: in 16, out 16) uses the first 16 columns of the same A */
    s = &a->sites[MOD_Q];
    memset(a->params + s->off, 0, sizeof(float) * s->n);
    a->params[s->off + 0] = 1.0f;
    a->params[s->off + 3 + 15] = 1.0f;
    a->ops->delta(a, s, dW);
    for (int j = 0; j < 16; j++) ck_assert(dW[15 * 16 + j] == ref[72 + 15 * 3 + 0] * ref[j]);
    /* init values */
    adapter_free(a);
    a = make_adapter(&c, &m);
    for (int i = 0; i < a->n_sites; i++) {
        s = &a->sites[i];
        for (int k = 0; k < s->r; k++) ck_assert(a->params[s->off + k] == 0.1f);
        for (int o = 0; o < s->out; o++) ck_assert(a->params[s->off + s->r + o] == 0.0f);
    }
    free(dW);
    free(ref);
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* ---- AdaLoRA schedule and allocator ------------------------------------------------------- */

START_TEST(test_adalora_budget_schedule) {
    AdapterConfig c = adalora_cfg(); /* init_r 6, target_r 2, T 20, tinit 3, tfinal 5, deltaT 2 */
    const int n = 4;                 /* init_bgt 24, target_bgt 8 */
    /* by hand: m = 1 - (t-3)/12, b = floor(16·m³ + 8) */
    struct { int t, b, mask; } want[] = {
        {0, 24, 0}, {3, 24, 0},  {4, 20, 1},  {5, 17, 0}, {8, 11, 1}, {9, 10, 0},
        {10, 9, 1}, {14, 8, 1},  {15, 8, 0},  {16, 8, 1}, {19, 8, 1}, {25, 8, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int mask = -1;
        int b = adalora_budget(&c, n, want[i].t, &mask);
        ck_assert_msg(b == want[i].b && mask == want[i].mask, "t=%d: budget %d mask %d, want %d %d", want[i].t, b, mask,
                      want[i].b, want[i].mask);
    }
    /* PEFT's defaults with a 1000-step run: 12·L → 8·L */
    AdapterConfig d;
    adapter_config_defaults(&d, ADAPTER_ADALORA);
    d.total_step = 1000, d.tinit = 200, d.tfinal = 300, d.deltaT = 10;
    ck_assert_int_eq(adalora_budget(&d, 10, 450, NULL), 85); /* 40·0.125 + 80 */
    ck_assert_int_eq(adalora_budget(&d, 10, 700, NULL), 80);
    ck_assert_int_eq(adalora_budget(&d, 10, 201, NULL), 119); /* 40·(1-1/500)³ + 80 = 119.76 */
}
END_TEST

/* Runs the allocator over a whole schedule with synthetic gradients. */
START_TEST(test_adalora_allocator_reaches_target) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = adalora_cfg();
    Adapter *a = make_adapter(&c, &m);
    const int n_sites = 4, init_bgt = 24, target_bgt = 8;
    Rng r;
    rng_seed(&r, 3);
    int final_step = c.total_step - c.tfinal;
    for (int t = 0; t < c.total_step; t++) {
        /* an "optimizer step" that regrows every E, then gradients for the allocator */
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            float *E = a->params + s->off + (size_t)s->r * s->in;
            for (int k = 0; k < s->r; k++) E[k] += 0.01f + 0.01f * rng_uniform(&r);
        }
        rng_fill_normal(&r, a->grads, a->n_params, 1.0f);
        adapter_on_step(a, t);
        int total = 0, zeros = 0;
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            total += adalora_site_rank(a, s);
            const float *E = a->params + s->off + (size_t)s->r * s->in;
            for (int k = 0; k < s->r; k++) zeros += E[k] == 0.0f;
        }
        int mask;
        int b = adalora_budget(&c, n_sites, t, &mask);
        if (t <= c.tinit) {
            ck_assert_int_eq(total, init_bgt);
            ck_assert_int_eq(zeros, 0);
        } else if (t < final_step && mask) {
            ck_assert_msg(total == b, "t=%d: %d kept, budget %d", t, total, b); /* no ties with random scores */
            ck_assert_int_eq(zeros, init_bgt - b);
        } else if (t >= final_step) {
            ck_assert_int_eq(total, target_bgt);
            ck_assert_int_eq(zeros, init_bgt - target_bgt); /* re-masked every step after the final mask */
        }
    }
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* Several importance updates and one masking step, checked against the formulas of
 * peft-spec.md section 2.5 computed here independently in double: the weights change between
 * steps (post-step weights times that step's gradients) and half of the triplets are pruned, so
 * both EMAs and the triplet combination decide the outcome. */
START_TEST(test_adalora_allocator_scores) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = adalora_cfg();
    c.tinit = 4, c.deltaT = 1, c.total_step = 8, c.tfinal = 1, c.beta1 = 0.7f, c.beta2 = 0.6f;
    ck_assert_int_eq(adalora_budget(&c, 4, 5, NULL), 12); /* 16·(2/3)³ + 8 = 12.74: prune 12 of 24 */
    Adapter *a = make_adapter(&c, &m);
    const size_t np = a->n_params;
    const int steps = 6; /* t = 0..4 update only, t = 5 updates and masks */
    double *ia = calloc(np, sizeof(double)), *ua = calloc(np, sizeof(double));
    const double b1 = c.beta1, b2 = c.beta2;
    Rng r;
    rng_seed(&r, 8);
    float *pE = malloc(sizeof(float) * np);
    for (int t = 0; t < steps; t++) {
        for (size_t j = 0; j < np; j++) {
            a->params[j] = rng_normal(&r);
            /* gradients whose size varies a lot between steps and between floats */
            a->grads[j] = rng_normal(&r) * (rng_uniform(&r) < 0.3f ? 5.0f : 0.2f);
            double ipt = fabs((double)a->params[j] * a->grads[j]);
            ia[j] = b1 * ia[j] + (1 - b1) * ipt;
            ua[j] = b2 * ua[j] + (1 - b2) * fabs(ipt - ia[j]);
        }
        memcpy(pE, a->params, sizeof(float) * np);
        adapter_on_step(a, t);
        if (t < steps - 1)
            for (int i = 0; i < a->n_sites; i++)
                ck_assert_int_eq(adalora_site_rank(a, &a->sites[i]), a->sites[i].active ? 6 : 0);
    }
    double S[24];
    int q = 0;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        const size_t oE = s->off + (size_t)s->r * s->in, oB = oE + s->r;
        for (int k = 0; k < s->r; k++, q++) {
            double sa = 0, sb = 0;
            for (int j = 0; j < s->in; j++) {
                size_t e = s->off + (size_t)k * s->in + j;
                sa += ia[e] * ua[e];
            }
            for (int o = 0; o < s->out; o++) sb += ia[oB + (size_t)o * s->r + k] * ua[oB + (size_t)o * s->r + k];
            S[q] = ia[oE + k] * ua[oE + k] + sa / s->in + sb / s->out;
        }
    }
    ck_assert_int_eq(q, 24);
    /* the 12 smallest are pruned, the others keep their E */
    q = 0;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        for (int k = 0; k < s->r; k++, q++) {
            int smaller = 0;
            for (int z = 0; z < 24; z++) smaller += S[z] < S[q];
            int pruned = smaller < 12;
            const float *E = a->params + s->off + (size_t)s->r * s->in;
            ck_assert_msg((E[k] == 0.0f) == pruned, "site %d triplet %d: pruned %d, expected %d", i, k, E[k] == 0.0f,
                          pruned);
            if (!pruned) ck_assert(E[k] == pE[s->off + (size_t)s->r * s->in + k]);
        }
    }
    int total = 0;
    for (int i = 0; i < a->n_sites; i++) total += adalora_site_rank(a, &a->sites[i]);
    ck_assert_int_eq(total, 12);
    free(pE);
    free(ia);
    free(ua);
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* Ties at the threshold are all pruned (PEFT masks score <= threshold). */
START_TEST(test_adalora_ties) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = adalora_cfg();
    c.tinit = 0, c.deltaT = 1, c.total_step = 10, c.tfinal = 2;
    Adapter *a = make_adapter(&c, &m);
    /* every param 1, every gradient 1: all scores equal, so pruning 1 prunes all 24 */
    for (size_t j = 0; j < a->n_params; j++) a->params[j] = 1.0f, a->grads[j] = 1.0f;
    adapter_on_step(a, 0);
    adapter_on_step(a, 1);
    int total = 0;
    for (int i = 0; i < a->n_sites; i++) total += adalora_site_rank(a, &a->sites[i]);
    ck_assert_int_eq(total, 0);
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* ---- save / load -------------------------------------------------------------------------- */

/* Each save/load test works in its own folder from tu_tmpdir_new (see util.h for the fixture). */
static cJSON *read_json(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    char *text = tu_slurp(path, NULL);
    cJSON *c = cJSON_Parse(text);
    ll_free(text);
    ck_assert(c != NULL);
    return c;
}

/* Saves a, loads it into a fresh copy of the base, and compares logits bitwise. */
static Adapter *roundtrip(Adapter *a, Model *m, const char *dir, Model *m2) {
    TestBatch tb;
    make_batch(&tb);
    model_forward(m, &tb.b, 0);
    float *want = copy_logits(m);
    LLError err;
    ck_assert_msg(adapter_save(a, m, dir, "tiny-base", &err) == LL_OK, "%s", err.msg);
    make_model(m2, 0, 0);
    Adapter *b = NULL;
    ck_assert_msg(adapter_load(dir, m2, &b, &err) == LL_OK, "%s", err.msg);
    adapter_attach(m2, b);
    ck_assert_uint_eq(b->n_params, a->n_params);
    model_forward(m2, &tb.b, 0);
    ck_assert_msg(memcmp(want, model_logits(m2, 0, 0), sizeof(float) * n_logits()) == 0,
                  "%s: loaded adapter gives different logits", adapter_method_name(a->cfg.method));
    free(want);
    return b;
}

START_TEST(test_save_load_lora) {
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    Model m, m2;
    make_model(&m, 0, 0);
    AdapterConfig c = lora_cfg(4, 16.0f);
    c.targets = (1u << MOD_Q) | (1u << MOD_V) | (1u << MOD_GATE);
    c.dropout = 0.05f;
    c.n_rank_pattern = 1;
    snprintf(c.rank_pattern[0].key, sizeof c.rank_pattern[0].key, "gate_proj");
    c.rank_pattern[0].value = 2;
    c.n_alpha_pattern = 1;
    snprintf(c.alpha_pattern[0].key, sizeof c.alpha_pattern[0].key, "model.layers.1.self_attn.v_proj");
    c.alpha_pattern[0].value = 4;
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    randomize(a->params, a->n_params, 0.3f, 11);
    Adapter *b = roundtrip(a, &m, dir, &m2);
    ck_assert(b->cfg.dropout == 0.05f && b->cfg.alpha == 16.0f && b->cfg.r == 4);
    ck_assert_int_eq(b->sites[MOD_COUNT + MOD_GATE].r, 2);
    ck_assert(b->sites[MOD_COUNT + MOD_V].scale == 1.0f);
    cJSON *j = read_json(dir);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "peft_type")->valuestring, "LORA");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "inference_mode")));
    ck_assert(cJSON_GetObjectItem(j, "lora_dropout")->valuedouble == 0.05);
    ck_assert(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "rank_pattern"), "gate_proj")->valuedouble == 2.0);
    for (const cJSON *k = j->child; k && k->next; k = k->next) ck_assert(strcmp(k->string, k->next->string) < 0);
    cJSON_Delete(j);
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors st;
    LLError err;
    ck_assert_msg(st_load(path, &st, &err) == LL_OK, "%s", err.msg);
    const StTensor *t = st_find(&st, "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight");
    ck_assert(t && t->ndim == 2 && t->shape[0] == 24 && t->shape[1] == 2);
    ck_assert(st_find(&st, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") != NULL);
    ck_assert_int_eq(st.n, 12);
    ck_assert_str_eq(st_meta_get(&st, "format"), "pt");
    st_free(&st);
    adapter_free(b);
    adapter_free(a);
    model_free(&m2);
    model_free(&m);
    tu_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_save_load_vera) {
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    for (int save_proj = 1; save_proj >= 0; save_proj--) {
        Model m, m2;
        make_model(&m, 0, 0);
        AdapterConfig c = vera_cfg(6);
        c.targets = (1u << MOD_COUNT) - 1;
        c.save_projection = save_proj;
        c.projection_prng_key = 17;
        Adapter *a = make_adapter(&c, &m);
        adapter_attach(&m, a);
        randomize(a->params, a->n_params, 0.3f, 12);
        Adapter *b = roundtrip(a, &m, dir, &m2);
        ck_assert_int_eq(b->cfg.save_projection, save_proj);
        ck_assert_uint_eq(b->cfg.projection_prng_key, 17);
        char path[512];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        SafeTensors st;
        LLError err;
        ck_assert_msg(st_load(path, &st, &err) == LL_OK, "%s", err.msg);
        const StTensor *t = st_find(&st, "base_model.vera_A");
        if (save_proj) {
            ck_assert(t && t->shape[0] == 6 && t->shape[1] == 24);
            t = st_find(&st, "base_model.vera_B");
            ck_assert(t && t->shape[0] == 24 && t->shape[1] == 6);
        } else {
            ck_assert(t == NULL); /* regenerated from the key on load */
        }
        t = st_find(&st, "base_model.model.model.layers.0.mlp.down_proj.vera_lambda_b");
        ck_assert(t && t->ndim == 1 && t->shape[0] == 16);
        t = st_find(&st, "base_model.model.model.layers.0.mlp.down_proj.vera_lambda_d");
        ck_assert(t && t->ndim == 1 && t->shape[0] == 6);
        st_free(&st);
        cJSON *j = read_json(dir);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "peft_type")->valuestring, "VERA");
        ck_assert(cJSON_GetObjectItem(j, "d_initial")->valuedouble == 0.1);
        cJSON_Delete(j);
        adapter_free(b);
        adapter_free(a);
        model_free(&m2);
        model_free(&m);
    }
    tu_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_save_load_adalora) {
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    Model m, m2;
    make_model(&m, 0, 0);
    AdapterConfig c = adalora_cfg();
    c.targets = (1u << MOD_Q) | (1u << MOD_V);
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    /* before any masking: rank_pattern null, full-size tensors */
    randomize(a->params, a->n_params, 0.3f, 13);
    Adapter *b = roundtrip(a, &m, dir, &m2);
    cJSON *j = read_json(dir);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "rank_pattern")));
    ck_assert_int_eq(cJSON_GetObjectItem(j, "total_step")->valueint, 20);
    ck_assert(cJSON_GetObjectItem(j, "beta1")->valuedouble == 0.85);
    cJSON_Delete(j);
    adapter_free(b);
    model_free(&m2);
    /* through the final mask, with one site pruned to rank 0 */
    Rng r;
    rng_seed(&r, 21);
    for (int t = 0; t <= c.total_step - c.tfinal; t++) {
        rng_fill_normal(&r, a->grads, a->n_params, 1.0f);
        /* make layer 1's v_proj the least important by far */
        const AdapterSite *s = &a->sites[MOD_COUNT + MOD_V];
        for (size_t k = 0; k < s->n; k++) a->grads[s->off + k] *= 1e-6f;
        adapter_on_step(a, t);
    }
    int ranks[4], n = 0, total = 0;
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].active) total += ranks[n++] = adalora_site_rank(a, &a->sites[i]);
    ck_assert_int_eq(total, 8);
    ck_assert_int_eq(ranks[3], 0);
    b = roundtrip(a, &m, dir, &m2);
    for (int i = 0, k = 0; i < b->n_sites; i++)
        if (b->sites[i].active) ck_assert_int_eq(adalora_site_rank(b, &b->sites[i]), ranks[k++]);
    ck_assert(b->sites[0].scale == a->sites[0].scale); /* ranknum stays init_r */
    j = read_json(dir);
    const cJSON *rp = cJSON_GetObjectItem(j, "rank_pattern");
    ck_assert(cJSON_IsObject(rp) && cJSON_GetArraySize(rp) == 4);
    const cJSON *l0 = cJSON_GetObjectItem(rp, "model.layers.0.self_attn.q_proj.lora_E");
    ck_assert(cJSON_IsArray(l0) && cJSON_GetArraySize(l0) == 6 && cJSON_IsBool(l0->child));
    cJSON_Delete(j);
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors st;
    LLError err;
    ck_assert_msg(st_load(path, &st, &err) == LL_OK, "%s", err.msg);
    const StTensor *t = st_find(&st, "base_model.model.model.layers.0.self_attn.q_proj.lora_A");
    ck_assert(t && t->shape[0] == ranks[0] && t->shape[1] == 16);
    t = st_find(&st, "base_model.model.model.layers.0.self_attn.q_proj.lora_E");
    ck_assert(t && t->ndim == 2 && t->shape[0] == ranks[0] && t->shape[1] == 1);
    t = st_find(&st, "base_model.model.model.layers.1.self_attn.v_proj.lora_B");
    ck_assert(t && t->shape[0] == 8 && t->shape[1] == 0);
    st_free(&st);
    adapter_free(b);
    adapter_free(a);
    model_free(&m2);
    model_free(&m);
    tu_tmpdir_remove(dir);
}
END_TEST

/* adapter_config.json byte for byte as PEFT's json.dumps(indent=2, sort_keys=True) writes it. */
START_TEST(test_config_json_golden) {
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = lora_cfg(8, 16.0f);
    c.dropout = 0.05f;
    c.n_alpha_pattern = 2;
    snprintf(c.alpha_pattern[0].key, sizeof c.alpha_pattern[0].key, "v_proj");
    c.alpha_pattern[0].value = 32;
    snprintf(c.alpha_pattern[1].key, sizeof c.alpha_pattern[1].key, "q_proj");
    c.alpha_pattern[1].value = 0.5f;
    Adapter *a = make_adapter(&c, &m);
    LLError err;
    ck_assert_msg(adapter_save(a, &m, dir, "tiny-base", &err) == LL_OK, "%s", err.msg);
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    char *text = tu_slurp(path, NULL);
    const char *want =
        "{\n"
        "  \"alpha_pattern\": {\n"
        "    \"q_proj\": 0.5,\n"
        "    \"v_proj\": 32\n"
        "  },\n"
        "  \"auto_mapping\": null,\n"
        "  \"base_model_name_or_path\": \"tiny-base\",\n"
        "  \"bias\": \"none\",\n"
        "  \"exclude_modules\": null,\n"
        "  \"fan_in_fan_out\": false,\n"
        "  \"inference_mode\": true,\n"
        "  \"init_lora_weights\": true,\n"
        "  \"layer_replication\": null,\n"
        "  \"layers_pattern\": null,\n"
        "  \"layers_to_transform\": null,\n"
        "  \"loftq_config\": {},\n"
        "  \"lora_alpha\": 16,\n"
        "  \"lora_bias\": false,\n"
        "  \"lora_dropout\": 0.05,\n"
        "  \"modules_to_save\": null,\n"
        "  \"peft_type\": \"LORA\",\n"
        "  \"r\": 8,\n"
        "  \"rank_pattern\": {},\n"
        "  \"revision\": null,\n"
        "  \"target_modules\": [\n"
        "    \"q_proj\",\n"
        "    \"v_proj\"\n"
        "  ],\n"
        "  \"task_type\": \"CAUSAL_LM\",\n"
        "  \"use_dora\": false,\n"
        "  \"use_rslora\": false\n"
        "}";
    ck_assert_str_eq(text, want);
    ll_free(text);
    adapter_free(a);
    model_free(&m);
    tu_tmpdir_remove(dir);
}
END_TEST

/* ---- DoRA and PiSSA ----------------------------------------------------------------------- */

static AdapterConfig dora_cfg(void) {
    AdapterConfig c = lora_cfg(3, 6.0f);
    c.use_dora = 1;
    c.targets = (1u << MOD_COUNT) - 1;
    return c;
}

START_TEST(test_dora_identity_at_init) {
    AdapterConfig c = dora_cfg();
    check_identity(c); /* m = ‖W0‖_row by the forward's own norm: m/‖·‖ is exactly 1 */
    c.dropout = 0.3f;
    check_identity(c);
    /* m is the row norm of W0 */
    Model m;
    make_model(&m, 0, 0);
    Adapter *a = make_adapter(&c, &m);
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        const float *W = model_weight(&m, s->layer, s->mod);
        const float *mag = a->params + s->off + (size_t)s->r * (s->in + s->out);
        for (int o = 0; o < s->out; o++) {
            double ss = 0;
            for (int j = 0; j < s->in; j++) ss += (double)W[o * s->in + j] * W[o * s->in + j];
            ck_assert(fabs(mag[o] - sqrt(ss)) <= 1e-6 * sqrt(ss));
        }
    }
    ck_assert_uint_eq(a->sites[MOD_K].n, 3 * (16 + 8) + 8); /* A, B and m (out) */
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* DoRA's output of one site in double, y_add = (ms − 1)⊙(x·W0ᵀ) + ms⊙(s·x·Aᵀ·Bᵀ), and the loss
 * Σ G⊙y_add. With `frozen` non-NULL the row norm is taken from it (the detached norm); otherwise
 * it is computed from the materialised W0 + s·B·A and written to `norm_out`. */
static double dora_ref(const double *A, const double *B, const double *mag, const double *x, const float *W0,
                       const double *G, int N, int in, int out, int r, double sc, const double *frozen,
                       double *norm_out) {
    double L = 0.0;
    for (int o = 0; o < out; o++) {
        double nrm;
        if (frozen) {
            nrm = frozen[o];
        } else {
            double ss = 0;
            for (int j = 0; j < in; j++) {
                double w = W0[o * in + j];
                for (int i = 0; i < r; i++) w += sc * B[o * r + i] * A[i * in + j];
                ss += w * w;
            }
            nrm = sqrt(ss);
            if (norm_out) norm_out[o] = nrm;
        }
        double ms = mag[o] / nrm;
        for (int n = 0; n < N; n++) {
            double z = 0, l = 0;
            for (int j = 0; j < in; j++) z += x[n * in + j] * W0[o * in + j];
            for (int i = 0; i < r; i++) {
                double u = 0;
                for (int j = 0; j < in; j++) u += x[n * in + j] * A[i * in + j];
                l += u * B[o * r + i];
            }
            L += G[n * out + o] * ((ms - 1.0) * z + ms * sc * l);
        }
    }
    return L;
}

static void fd_vec(double *v, size_t n, double *grad, double (*f)(void *), void *ctx) {
    for (size_t i = 0; i < n; i++) {
        double keep = v[i], h = 1e-6 * fmax(1.0, fabs(keep));
        v[i] = keep + h;
        double lp = f(ctx);
        v[i] = keep - h;
        double lm = f(ctx);
        v[i] = keep;
        grad[i] = (lp - lm) / (2 * h);
    }
}

typedef struct {
    double *A, *B, *mag, *x, *G, *norm;
    const float *W0;
    int N, in, out, r;
    double sc;
} DoraRef;

static double dora_ref_loss(void *p) {
    DoraRef *d = p;
    return dora_ref(d->A, d->B, d->mag, d->x, d->W0, d->G, d->N, d->in, d->out, d->r, d->sc, d->norm, NULL);
}

/* One DoRA site against the double reference: forward, and gradients that treat the norm as a
 * constant (finite differences of the reference with the norm frozen). */
START_TEST(test_dora_site_reference) {
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = dora_cfg();
    Adapter *a = make_adapter(&c, &m);
    adapter_attach(&m, a);
    randomize(a->params, a->n_params, 0.3f, 55);
    for (size_t i = 0; i < a->n_params; i++) a->params[i] += 0.5f * (a->params[i] > 0); /* m well away from 0 */
    const int sites[2] = {MOD_K, MOD_COUNT + MOD_DOWN}; /* out < in and out > in... and in = F */
    for (int si = 0; si < 2; si++) {
        AdapterSite *s = &a->sites[sites[si]];
        const int N = 7, in = s->in, out = s->out, r = s->r;
        const float *W0 = s->w0;
        float *xf = malloc(sizeof(float) * N * in), *y = malloc(sizeof(float) * N * out);
        float *Gf = malloc(sizeof(float) * N * out), *dx = calloc((size_t)N * in, sizeof(float));
        randomize(xf, (size_t)N * in, 1.0f, 60 + si);
        randomize(Gf, (size_t)N * out, 1.0f, 70 + si);
        DoraRef d = {.W0 = W0, .N = N, .in = in, .out = out, .r = r, .sc = s->scale};
        d.A = malloc(sizeof(double) * r * in), d.B = malloc(sizeof(double) * out * r);
        d.mag = malloc(sizeof(double) * out), d.x = malloc(sizeof(double) * N * in);
        d.G = malloc(sizeof(double) * N * out), d.norm = malloc(sizeof(double) * out);
        const float *A = a->params + s->off, *B = A + (size_t)r * in, *mag = B + (size_t)out * r;
        for (int i = 0; i < r * in; i++) d.A[i] = A[i];
        for (int i = 0; i < out * r; i++) d.B[i] = B[i];
        for (int i = 0; i < out; i++) d.mag[i] = mag[i];
        for (int i = 0; i < N * in; i++) d.x[i] = xf[i];
        for (int i = 0; i < N * out; i++) d.G[i] = Gf[i];
        /* forward: y starts as the base result */
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) {
                double z = 0;
                for (int j = 0; j < in; j++) z += (double)xf[n * in + j] * W0[o * in + j];
                y[n * out + o] = (float)z;
            }
        float *ybase = malloc(sizeof(float) * N * out);
        memcpy(ybase, y, sizeof(float) * N * out);
        a->ops->forward(a, s, xf, y, N, 0);
        double L = 0;
        for (int i = 0; i < N * out; i++) L += (double)Gf[i] * ((double)y[i] - ybase[i]);
        double Lref = dora_ref(d.A, d.B, d.mag, d.x, W0, d.G, N, in, out, r, d.sc, NULL, d.norm);
        ck_assert_msg(fabs(L - Lref) <= 1e-4 * (1 + fabs(Lref)), "site %d: forward loss %.9g, reference %.9g", si, L,
                      Lref);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) {
                double ms = d.mag[o] / d.norm[o], want = 0;
                for (int j = 0; j < in; j++) {
                    double w = W0[o * in + j];
                    for (int i = 0; i < r; i++) w += d.sc * d.B[o * r + i] * d.A[i * in + j];
                    want += ms * w * d.x[n * in + j];
                }
                ck_assert_msg(fabs(y[n * out + o] - want) <= 1e-5 * (1 + fabs(want)), "y[%d,%d] = %g, want %g", n, o,
                              y[n * out + o], want); /* = x·W'ᵀ */
            }
        /* backward against the frozen-norm reference */
        adapter_zero_grad(a);
        a->ops->backward(a, s, xf, Gf, dx, N);
        double *gA = malloc(sizeof(double) * r * in), *gB = malloc(sizeof(double) * out * r);
        double *gm = malloc(sizeof(double) * out), *gx = malloc(sizeof(double) * N * in);
        fd_vec(d.A, (size_t)r * in, gA, dora_ref_loss, &d);
        fd_vec(d.B, (size_t)out * r, gB, dora_ref_loss, &d);
        fd_vec(d.mag, (size_t)out, gm, dora_ref_loss, &d);
        fd_vec(d.x, (size_t)N * in, gx, dora_ref_loss, &d);
        const float *eA = a->grads + s->off, *eB = eA + (size_t)r * in, *em = eB + (size_t)out * r;
        struct { const char *name; const float *got; const double *want; int n; } cmp[4] = {
            {"dA", eA, gA, r * in}, {"dB", eB, gB, out * r}, {"dm", em, gm, out}, {"dx", dx, gx, N * in}};
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < cmp[k].n; i++)
                ck_assert_msg(fabs(cmp[k].got[i] - cmp[k].want[i]) <= 1e-5 + 1e-4 * fabs(cmp[k].want[i]),
                              "site %d %s[%d] = %.8g, frozen-norm reference %.8g", si, cmp[k].name, i, cmp[k].got[i],
                              cmp[k].want[i]);
        /* and the detached gradient really differs from the full one (the norm depends on A, B) */
        double *full = malloc(sizeof(double) * out * r);
        DoraRef e = d;
        e.norm = NULL;
        fd_vec(e.B, (size_t)out * r, full, dora_ref_loss, &e);
        double diff = 0;
        for (int i = 0; i < out * r; i++) diff = fmax(diff, fabs(full[i] - gB[i]));
        ck_assert(diff > 1e-3);
        free(full);
        free(gA), free(gB), free(gm), free(gx);
        free(d.A), free(d.B), free(d.mag), free(d.x), free(d.G), free(d.norm);
        free(xf), free(y), free(ybase), free(Gf), free(dx);
    }
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* Model-level finite differences of DoRA's magnitude vectors (the norm does not depend on m, so
 * these are the true derivatives), with and without dropout. */
START_TEST(test_grad_dora_magnitude) {
    for (int pass = 0; pass < 2; pass++) {
        Model m;
        make_model(&m, 0, 0);
        TestBatch tb;
        make_batch(&tb);
        AdapterConfig c = dora_cfg();
        c.dropout = pass ? 0.25f : 0.0f;
        Adapter *a = make_adapter(&c, &m);
        adapter_attach(&m, a);
        Rng r;
        rng_seed(&r, 91);
        for (int i = 0; i < a->n_sites; i++) { /* random B and a perturbed m */
            AdapterSite *s = &a->sites[i];
            float *B = a->params + s->off + (size_t)s->r * s->in, *mag = B + (size_t)s->out * s->r;
            rng_fill_normal(&r, B, (size_t)s->out * s->r, 0.3f);
            for (int o = 0; o < s->out; o++) mag[o] *= 0.7f + 0.6f * rng_uniform(&r);
        }
        FdCtx f = {.m = &m, .a = a, .tb = &tb, .train = 1};
        analytic_grads(&f);
        for (int i = 0; i < a->n_sites; i++) {
            AdapterSite *s = &a->sites[i];
            size_t om = s->off + (size_t)s->r * (s->in + s->out);
            float *g = malloc(sizeof(float) * s->out);
            memcpy(g, a->grads + om, sizeof(float) * s->out);
            char what[64];
            snprintf(what, sizeof what, "dora m, site %d, dropout %g", i, c.dropout);
            fd_check(what, &f, a->params + om, g, (size_t)s->out, 1e-2f, 2e-4, 2e-2);
            free(g);
        }
        adapter_free(a);
        model_free(&m);
    }
}
END_TEST

START_TEST(test_merge_dora) {
    check_merge(dora_cfg());
}
END_TEST

START_TEST(test_pissa_init) {
    Model m, ref;
    make_model(&m, 0, 0);
    make_model(&ref, 0, 0);
    TestBatch tb;
    make_batch(&tb);
    model_forward(&ref, &tb.b, 0);
    AdapterConfig c = lora_cfg(3, 6.0f);
    c.targets = (1u << MOD_COUNT) - 1;
    c.init = ADAPTER_INIT_PISSA;
    for (int dora = 0; dora <= 1; dora++) {
        c.use_dora = dora;
        memcpy(m.params, ref.params, sizeof(float) * m.n_params);
        Adapter *a = make_adapter(&c, &m);
        adapter_attach(&m, a);
        /* the adapted model computes what the original base did */
        model_forward(&m, &tb.b, 0);
        const float *got = model_logits(&m, 0, 0), *want = model_logits(&ref, 0, 0);
        double maxd = 0, maxv = 0;
        for (size_t i = 0; i < n_logits(); i++) {
            maxd = fmax(maxd, fabs((double)got[i] - want[i]));
            maxv = fmax(maxv, fabs((double)want[i]));
        }
        ck_assert_msg(maxd / maxv < 1e-5, "PiSSA (dora %d) changes the function: relative error %g", dora, maxd / maxv);
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            const float *A = a->params + s->off, *B = A + (size_t)s->r * s->in;
            const float *W = s->w0, *W0 = model_weight(&ref, s->layer, s->mod);
            /* A's rows are orthogonal with ‖A_i‖² = S_i/s = ‖B_:i‖², in decreasing order */
            double S[3], w0 = 0, wres = 0;
            for (int p = 0; p < s->r; p++) {
                for (int q = 0; q < s->r; q++) {
                    double dot = 0;
                    for (int j = 0; j < s->in; j++) dot += (double)A[p * s->in + j] * A[q * s->in + j];
                    if (p == q) S[p] = dot * s->scale;
                    else ck_assert(fabs(dot) < 1e-5);
                }
                double bb = 0;
                for (int o = 0; o < s->out; o++) bb += (double)B[o * s->r + p] * B[o * s->r + p];
                ck_assert(fabs(bb * s->scale - S[p]) <= 1e-5 * S[p]);
                if (p) ck_assert(S[p] <= S[p - 1]);
            }
            /* the residual holds the remaining singular values: ‖W_res‖² = ‖W0‖² − Σ_{i<r} S_i² */
            for (int k = 0; k < s->in * s->out; k++) w0 += (double)W0[k] * W0[k], wres += (double)W[k] * W[k];
            ck_assert_msg(fabs(wres - (w0 - S[0] * S[0] - S[1] * S[1] - S[2] * S[2])) <= 1e-4 * w0,
                          "site %d: residual %g, want %g", i, wres, w0 - S[0] * S[0] - S[1] * S[1] - S[2] * S[2]);
            /* and is orthogonal to the extracted right singular vectors */
            for (int o = 0; o < s->out; o++)
                for (int p = 0; p < s->r; p++) {
                    double dot = 0;
                    for (int j = 0; j < s->in; j++) dot += (double)W[o * s->in + j] * A[p * s->in + j];
                    ck_assert(fabs(dot) < 1e-5);
                }
        }
        adapter_free(a);
    }
    model_free(&ref);
    model_free(&m);
}
END_TEST

START_TEST(test_save_load_dora_pissa) {
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    for (int pass = 0; pass < 3; pass++) { /* DoRA, PiSSA, both */
        Model m, m2;
        make_model(&m, 0, 0);
        AdapterConfig c = lora_cfg(2, 4.0f);
        c.targets = (1u << MOD_Q) | (1u << MOD_V) | (1u << MOD_DOWN);
        c.use_dora = pass != 1;
        if (pass > 0) c.init = ADAPTER_INIT_PISSA;
        Adapter *a = make_adapter(&c, &m);
        adapter_attach(&m, a);
        Rng r;
        rng_seed(&r, 100 + pass);
        for (size_t i = 0; i < a->n_params; i++) a->params[i] += 0.05f * rng_normal(&r); /* "trained" */
        Adapter *b = roundtrip(a, &m, dir, &m2); /* PiSSA re-runs on the original base of m2 */
        ck_assert_int_eq(b->cfg.use_dora, c.use_dora);
        ck_assert_int_eq(b->cfg.init, c.init);
        cJSON *j = read_json(dir);
        ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItem(j, "use_dora")), c.use_dora);
        const cJSON *ilw = cJSON_GetObjectItem(j, "init_lora_weights");
        if (pass > 0) ck_assert_str_eq(ilw->valuestring, "pissa");
        else ck_assert(cJSON_IsTrue(ilw));
        cJSON_Delete(j);
        char path[512];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        SafeTensors st;
        LLError err;
        ck_assert_msg(st_load(path, &st, &err) == LL_OK, "%s", err.msg);
        const StTensor *t = st_find(&st, "base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector");
        if (c.use_dora) ck_assert(t && t->ndim == 1 && t->shape[0] == 8);
        else ck_assert(t == NULL);
        st_free(&st);
        /* the residual base of the loaded model is the trained one's */
        if (pass > 0) ck_assert(memcmp(m.params, m2.params, sizeof(float) * m.n_params) == 0);
        adapter_free(b);
        adapter_free(a);
        model_free(&m2);
        model_free(&m);
    }
    tu_tmpdir_remove(dir);
}
END_TEST

/* ---- LoRA+ --------------------------------------------------------------------------------- */

/* lr_ratio 1 is one range over the whole buffer at scale 1 (the optimizer sees what it saw before
 * LoRA+ existed); another ratio puts every site's [B | m] at the ratio and its A at 1, and the
 * ranges tile the buffer in order. */
START_TEST(test_loraplus_ranges) {
    Model m;
    make_model(&m, 0, 0);
    for (int dora = 0; dora <= 1; dora++) {
        AdapterConfig c = lora_cfg(3, 6.0f);
        c.use_dora = dora;
        Adapter *a = make_adapter(&c, &m);
        AdapterLrRange *r;
        int n = adapter_lr_ranges(a, &r);
        ck_assert_int_eq(n, 1);
        ck_assert(r[0].off == 0 && r[0].n == a->n_params && r[0].lr_scale == 1.0f);
        ll_free(r);
        adapter_free(a);

        c.lr_ratio = 16.0f;
        a = make_adapter(&c, &m);
        n = adapter_lr_ranges(a, &r);
        int sites = 0;
        for (int i = 0; i < a->n_sites; i++) sites += a->sites[i].active;
        ck_assert_int_eq(n, 2 * sites);
        size_t at = 0;
        for (int i = 0, k = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            size_t nA = (size_t)s->r * s->in, nB = (size_t)s->out * s->r + (dora ? (size_t)s->out : 0);
            ck_assert(r[k].off == at && r[k].n == nA && r[k].lr_scale == 1.0f);
            ck_assert(r[k + 1].off == at + nA && r[k + 1].n == nB && r[k + 1].lr_scale == 16.0f);
            at += nA + nB, k += 2;
        }
        ck_assert(at == a->n_params);
        ll_free(r);
        ck_assert_str_eq(adapter_variant_name(&c), dora ? "dora" : "loraplus");
        adapter_free(a);
    }
    model_free(&m);
}
END_TEST

/* Random tokens below 30 as a language-modelling dataset. */
static void loraplus_data(Dataset *d) {
    memset(d, 0, sizeof *d);
    d->kind = DATA_LM;
    d->path = ll_strdup("loraplus");
    d->n_tokens = 400;
    d->tokens = ll_malloc(d->n_tokens, sizeof(int));
    Rng r;
    rng_seed(&r, 5);
    for (size_t i = 0; i < d->n_tokens; i++) d->tokens[i] = (int)rng_below(&r, 30);
}

/* A LoRA adapter on q, v with every float random (so that A has a gradient too), lr_ratio ratio,
 * DoRA when dora. */
static Adapter *loraplus_adapter(Model *m, float ratio, int dora) {
    AdapterConfig c = lora_cfg(3, 6.0f);
    c.lr_ratio = ratio, c.use_dora = dora;
    Adapter *a = make_adapter(&c, m);
    randomize(a->params, a->n_params, 0.3f, 11);
    if (dora) /* magnitudes near the row norms, as at init */
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            float *mag = a->params + s->off + (size_t)s->r * s->in + (size_t)s->out * s->r;
            for (int o = 0; o < s->out; o++) mag[o] = 1.0f + 0.1f * mag[o];
        }
    return a;
}

static void loraplus_train_config(TrainConfig *tc, int steps) {
    train_config_defaults(tc);
    tc->steps = steps, tc->batch = TB, tc->seq = TT, tc->lr = 1e-2f, tc->clip = 0.0f;
    tc->weight_decay = 0.1f, tc->schedule = SCHED_CONSTANT, tc->seed = 3;
}

/* The exact first AdamW step of train_run under LoRA+: the gradients of the batch train_run draws
 * first, then per float p1 = p0·(1 − l·wd) − l·m̂/(√v̂ + eps) with l = lr for A and lr·16 for B
 * and DoRA's magnitude (PEFT's create_loraplus_optimizer: lora_B and 1-D parameters at the ratio),
 * in the optimizer's float operations and order. */
START_TEST(test_loraplus_one_step) {
    for (int dora = 0; dora <= 1; dora++) {
        Model m, mg;
        make_model(&m, 0, 0);
        make_model(&mg, 0, 0);
        Adapter *a = loraplus_adapter(&m, 16.0f, dora), *ag = loraplus_adapter(&mg, 16.0f, dora);
        float *p0 = malloc(sizeof(float) * a->n_params);
        memcpy(p0, a->params, sizeof(float) * a->n_params);
        TrainConfig tc;
        loraplus_train_config(&tc, 1);
        Dataset d;
        loraplus_data(&d);
        /* the gradient train_run sees: its first batch (its data stream) on an identical adapter */
        Batch b;
        batch_alloc(&b, TB, TT);
        Rng rng;
        rng_seed(&rng, rng_derive(tc.seed, 21));
        data_sample(&d, &rng, &b, TB, TT, mg.cfg.bos_id, mg.cfg.pad_id);
        adapter_attach(&mg, ag);
        adapter_zero_grad(ag);
        model_forward(&mg, &b, 1);
        model_backward(&mg, &b, 1.0f);
        TrainResult res;
        LLError err;
        ck_assert_msg(train_run(&m, a, &tc, &d, NULL, NULL, &res, &err) == LL_OK, "%s", err.msg);
        const float b1 = tc.beta1, b2 = tc.beta2, c1 = 1.0f - powf(b1, 1.0f), c2 = 1.0f - powf(b2, 1.0f);
        int movedA = 0, movedB = 0;
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            for (size_t k = 0; k < s->n; k++) {
                size_t j = s->off + k;
                int isB = k >= (size_t)s->r * s->in;
                float l = isB ? tc.lr * 16.0f : tc.lr, g = ag->grads[j];
                float mm = (1.0f - b1) * g, vv = (1.0f - b2) * g * g;
                float want = p0[j] * (1.0f - l * tc.weight_decay) - l * (mm / c1) / (sqrtf(vv / c2) + tc.eps);
                ck_assert_msg(fabsf(a->params[j] - want) <= 1e-6f * fabsf(want) + 1e-9f,
                              "dora=%d site %d float %zu (%s): %.9g, want %.9g", dora, i, k, isB ? "B" : "A",
                              a->params[j], want);
                /* |Δ| is about l where |g| >> eps: B moved 16 times as far as A */
                float step = fabsf(a->params[j] - p0[j] * (1.0f - l * tc.weight_decay));
                if (fabsf(g) > 1e-4f) {
                    ck_assert_msg(fabsf(step - l) < 1e-3f * l, "dora=%d: %s moved %.3g, not lr%s = %.3g", dora,
                                  isB ? "B" : "A", step, isB ? "·16" : "", l);
                    movedA += !isB, movedB += isB;
                }
            }
        }
        ck_assert_msg(movedA > 0 && movedB > 0, "A and B both need gradients: %d, %d", movedA, movedB);
        free(p0);
        batch_free(&b);
        data_free(&d);
        adapter_free(a);
        adapter_free(ag);
        model_free(&m);
        model_free(&mg);
    }
}
END_TEST

/* lr_ratio 1 trains bitwise as plain LoRA did before LoRA+: train_run against the loop it ran
 * then (one optimizer segment over the whole flat buffer), five steps with clipping and a cosine
 * schedule. A ratio of 2 must differ, or the comparison proves nothing. */
static void old_lora_loop(Model *m, Adapter *a, const TrainConfig *tc, const Dataset *d) {
    adapter_attach(m, a);
    AdamW opt;
    adamw_init(&opt, tc->beta1, tc->beta2, tc->eps, tc->weight_decay);
    adamw_add(&opt, a->params, a->grads, a->n_params, 1);
    adamw_ready(&opt);
    Batch b;
    batch_alloc(&b, tc->batch, tc->seq);
    Rng rng;
    rng_seed(&rng, rng_derive(tc->seed, 21));
    for (int step = 0; step < tc->steps; step++) {
        float lr = lr_at(tc->schedule, step, tc->steps, tc->warmup, tc->lr, tc->min_lr_ratio);
        adamw_zero_grad(&opt);
        data_sample(d, &rng, &b, tc->batch, tc->seq, m->cfg.bos_id, m->cfg.pad_id);
        model_forward(m, &b, 1);
        model_backward(m, &b, 1.0f);
        double gnorm = adamw_grad_norm(&opt);
        if (tc->clip > 0.0f && gnorm > tc->clip) adamw_scale_grads(&opt, (float)(tc->clip / gnorm));
        adamw_step(&opt, lr);
        adapter_on_step(a, step);
    }
    batch_free(&b);
    adamw_free(&opt);
}

START_TEST(test_loraplus_ratio_one_bitwise) {
    Model m1, m2, m3;
    make_model(&m1, 0, 0);
    make_model(&m2, 0, 0);
    make_model(&m3, 0, 0);
    Adapter *a1 = loraplus_adapter(&m1, 1.0f, 0), *a2 = loraplus_adapter(&m2, 1.0f, 0);
    Adapter *a3 = loraplus_adapter(&m3, 2.0f, 0);
    TrainConfig tc;
    loraplus_train_config(&tc, 5);
    tc.schedule = SCHED_COSINE, tc.clip = 0.05f, tc.warmup = 1;
    Dataset d;
    loraplus_data(&d);
    TrainResult res;
    LLError err;
    ck_assert_msg(train_run(&m1, a1, &tc, &d, NULL, NULL, &res, &err) == LL_OK, "%s", err.msg);
    ck_assert_msg(train_run(&m3, a3, &tc, &d, NULL, NULL, &res, &err) == LL_OK, "%s", err.msg);
    old_lora_loop(&m2, a2, &tc, &d);
    ck_assert_msg(memcmp(a1->params, a2->params, sizeof(float) * a1->n_params) == 0,
                  "lr_ratio 1 is not bitwise plain LoRA");
    ck_assert_msg(memcmp(a1->params, a3->params, sizeof(float) * a1->n_params) != 0, "lr_ratio 2 changed nothing");
    ck_assert_str_eq(adapter_variant_name(&a1->cfg), "lora");
    data_free(&d);
    adapter_free(a1), adapter_free(a2), adapter_free(a3);
    model_free(&m1), model_free(&m2), model_free(&m3);
}
END_TEST

/* The ratio is a training setting: adapter_config.json is the same as without it (PEFT's
 * LoraConfig has no loraplus key and refuses unknown ones), and the folder loads back. */
START_TEST(test_loraplus_config_json) {
    char dir1[256], dir2[256];
    tu_tmpdir_new(dir1, sizeof dir1);
    tu_tmpdir_new(dir2, sizeof dir2);
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = lora_cfg(4, 8.0f);
    Adapter *a = make_adapter(&c, &m);
    c.lr_ratio = 16.0f;
    Adapter *ap = make_adapter(&c, &m);
    LLError err;
    ck_assert_msg(adapter_save(a, &m, dir1, "tiny-base", &err) == LL_OK, "%s", err.msg);
    ck_assert_msg(adapter_save(ap, &m, dir2, "tiny-base", &err) == LL_OK, "%s", err.msg);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/adapter_config.json", dir1);
    snprintf(p2, sizeof p2, "%s/adapter_config.json", dir2);
    char *t1 = tu_slurp(p1, NULL), *t2 = tu_slurp(p2, NULL);
    ck_assert_str_eq(t1, t2);
    ck_assert_msg(strstr(t2, "ratio") == NULL && strstr(t2, "plus") == NULL, "%s", t2);
    Adapter *back = NULL;
    ck_assert_msg(adapter_load(dir2, &m, &back, &err) == LL_OK, "%s", err.msg);
    ck_assert(back->cfg.lr_ratio == 1.0f); /* a loaded adapter is not being trained */
    ll_free(t1), ll_free(t2);
    adapter_free(back), adapter_free(a), adapter_free(ap);
    model_free(&m);
    tu_tmpdir_remove(dir1);
    tu_tmpdir_remove(dir2);
}
END_TEST

/* ---- limits ------------------------------------------------------------------------------- */

/* adapter_create of c (when c is not NULL) or else adapter_load of dir, on a fresh tiny model:
 * asserts status code, a NULL adapter and a message that contains needle. */
static void expect_adapter_error(const AdapterConfig *c, const char *dir, LLStatus code, const char *needle) {
    Model m;
    make_model(&m, 0, 0);
    Adapter *a = (Adapter *)1;
    LLError err = {0};
    LLStatus st = c ? adapter_create(c, &m, &a, &err) : adapter_load(dir, &m, &a, &err);
    ck_assert_msg(st == code, "status %d (%s), want %d", st, err.msg, code);
    ck_assert(a == NULL);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    model_free(&m);
}

START_TEST(test_limits_config) {
    AdapterConfig c = lora_cfg(4, 8.0f);
    c.dropout = 1.0f;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "dropout");
    c = lora_cfg(4, 8.0f);
    c.n_layers = 1, c.layers[0] = 2;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "layers 0..1");
    c = lora_cfg(0, 8.0f);
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "at least 1");
    c = adalora_cfg();
    c.tinit = 15;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "budgeting phase");
    c = adalora_cfg();
    c.total_step = 0;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "total_step");
    c = adalora_cfg();
    c.target_r = 6;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "target_r");
    c = adalora_cfg();
    c.beta1 = 1.0f;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "beta1");
    c = adalora_cfg();
    c.orth_reg_weight = -1.0f;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "orth_reg_weight");
    c = vera_cfg(0);
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "at least 1");
    c = lora_cfg(4, 8.0f);
    c.method = ADAPTER_FULL;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "no adapter");
    c = adalora_cfg();
    c.use_dora = 1;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "DoRA");
    c = lora_cfg(4, 8.0f);
    c.lr_ratio = 0.0f;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "lr_ratio 0 must be a positive number");
    c.lr_ratio = NAN;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "must be a positive number");
    c = vera_cfg(4);
    c.lr_ratio = 16.0f;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "LoRA-family methods, not vera");
    /* PiSSA's rank must fit the smallest targeted layer; the base is refused untouched */
    c = lora_cfg(9, 8.0f);
    c.targets = (1u << MOD_Q) | (1u << MOD_K); /* k_proj is 8 x 16 */
    c.init = ADAPTER_INIT_PISSA;
    expect_adapter_error(&c, NULL, LL_ERR_CONFIG, "exceeds min(in, out) = 8");
    Model m;
    make_model(&m, 0, 0);
    float *w = malloc(sizeof(float) * m.n_params);
    memcpy(w, m.params, sizeof(float) * m.n_params);
    Adapter *a = NULL;
    LLError err;
    ck_assert(adapter_create(&c, &m, &a, &err) == LL_ERR_CONFIG);
    ck_assert(memcmp(w, m.params, sizeof(float) * m.n_params) == 0);
    free(w);
    model_free(&m);
}
END_TEST

START_TEST(test_limits_targets) {
    unsigned mask = 123;
    LLError err = {0};
    ck_assert_int_eq(adapter_parse_targets("q_proj,qq_proj", &mask, &err), LL_ERR_CONFIG);
    ck_assert(strstr(err.msg, "'qq_proj'") != NULL);
    const char *names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all-linear"};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(strstr(err.msg, names[i]) != NULL, "'%s' not listed: %s", names[i], err.msg);
    ck_assert_int_eq(adapter_parse_targets(" , ", &mask, &err), LL_ERR_CONFIG);
    ck_assert(strstr(err.msg, "empty") != NULL);
}
END_TEST

START_TEST(test_limits_load) {
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir);
    char missing[512], cfg[512];
    snprintf(missing, sizeof missing, "%s/nothing", dir);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    expect_adapter_error(NULL, missing, LL_ERR_IO, "nothing");
    tu_write_text(cfg, "[1, 2]");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "not a JSON object");
    tu_write_text(cfg, "{\"r\": 4}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "peft_type");
    tu_write_text(cfg, "{\"peft_type\": \"IA3\"}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "IA3");
    tu_write_text(cfg, "{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\", \"zz\"]}");
    expect_adapter_error(NULL, dir, LL_ERR_CONFIG, "'zz'");
    tu_write_text(cfg, "{\"peft_type\": \"LORA\", \"init_lora_weights\": \"olora\"}");
    expect_adapter_error(NULL, dir, LL_ERR_CONFIG, "olora");
    /* a real adapter, then damage it */
    Model m;
    make_model(&m, 0, 0);
    AdapterConfig c = lora_cfg(4, 8.0f);
    Adapter *a = make_adapter(&c, &m);
    LLError err;
    ck_assert(adapter_save(a, &m, dir, NULL, &err) == LL_OK);
    adapter_free(a);
    tu_write_text(cfg, "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\", \"k_proj\"]}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "k_proj.lora_A.weight' is missing");
    tu_write_text(cfg, "{\"peft_type\": \"LORA\", \"r\": 5, \"target_modules\": \".*\\\\.(q_proj|v_proj)\"}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "q_proj.lora_A.weight");
    /* AdaLoRA: a rank_pattern naming a module that is not adapted, or of the wrong length */
    AdapterConfig d = adalora_cfg();
    a = make_adapter(&d, &m);
    ck_assert(adapter_save(a, &m, dir, NULL, &err) == LL_OK);
    adapter_free(a);
    tu_write_text(cfg,
                  "{\"peft_type\": \"ADALORA\", \"init_r\": 6, \"target_r\": 2, \"total_step\": 20, \"tinit\": 3, "
                  "\"tfinal\": 5, \"rank_pattern\": {\"model.layers.0.self_attn.k_proj.lora_E\": [true]}}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "k_proj.lora_E");
    tu_write_text(cfg,
                  "{\"peft_type\": \"ADALORA\", \"init_r\": 6, \"target_r\": 2, \"total_step\": 20, \"tinit\": 3, "
                  "\"tfinal\": 5, \"rank_pattern\": {\"model.layers.0.self_attn.q_proj.lora_E\": [true, false]}}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "init_r = 6");
    /* a rank pattern that truncates, against full-size tensors: the shape check catches it */
    tu_write_text(cfg,
                  "{\"peft_type\": \"ADALORA\", \"init_r\": 6, \"target_r\": 2, \"rank_pattern\": "
                  "{\"model.layers.0.self_attn.q_proj.lora_E\": [true, false, true, true, true, true]}}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "q_proj.lora_A");
    /* VeRA saved with projections, then told they were saved but they are gone */
    AdapterConfig v = vera_cfg(4);
    v.save_projection = 0;
    a = make_adapter(&v, &m);
    ck_assert(adapter_save(a, &m, dir, NULL, &err) == LL_OK);
    adapter_free(a);
    tu_write_text(cfg, "{\"peft_type\": \"VERA\", \"r\": 4, \"save_projection\": true}");
    expect_adapter_error(NULL, dir, LL_ERR_FORMAT, "vera_A");
    model_free(&m);
    tu_tmpdir_remove(dir);
}
END_TEST

/* ---- several adapters on one base ---------------------------------------------------------- */

/* Adapters of different methods live side by side on one model; attaching is a pointer swap, so
 * switching back and forth gives each adapter's own logits, bitwise, and detaching the base's. */
START_TEST(test_switch_adapters) {
    Model m;
    make_model(&m, 0, 0);
    TestBatch tb;
    make_batch(&tb);
    model_forward(&m, &tb.b, 0);
    float *base = copy_logits(&m);
    AdapterConfig cl = lora_cfg(4, 8.0f), cv = vera_cfg(6);
    Adapter *lora = make_adapter(&cl, &m), *vera = make_adapter(&cv, &m);
    randomize(lora->params, lora->n_params, 0.3f, 1);
    randomize(vera->params, vera->n_params, 0.3f, 2);
    adapter_attach(&m, lora);
    model_forward(&m, &tb.b, 0);
    float *la = copy_logits(&m);
    adapter_attach(&m, vera);
    model_forward(&m, &tb.b, 0);
    float *lv = copy_logits(&m);
    ck_assert(memcmp(la, lv, sizeof(float) * n_logits()) != 0);
    ck_assert(memcmp(la, base, sizeof(float) * n_logits()) != 0);
    adapter_attach(&m, lora);
    model_forward(&m, &tb.b, 0);
    ck_assert(memcmp(model_logits(&m, 0, 0), la, sizeof(float) * n_logits()) == 0);
    adapter_attach(&m, NULL);
    model_forward(&m, &tb.b, 0);
    ck_assert(memcmp(model_logits(&m, 0, 0), base, sizeof(float) * n_logits()) == 0);
    adapter_attach(&m, vera);
    model_forward(&m, &tb.b, 0);
    ck_assert(memcmp(model_logits(&m, 0, 0), lv, sizeof(float) * n_logits()) == 0);
    free(base), free(la), free(lv);
    adapter_free(lora);
    adapter_free(vera);
    model_free(&m);
}
END_TEST

Suite *adapter_suite(void) {
    Suite *s = suite_create("adapter");
    TCase *core = tu_tcase(s, "core", 1, 60); /* seconds in all; generous for a loaded machine */
    tcase_add_test(core, test_identity_at_init);
    tcase_add_test(core, test_switch_adapters);
    tcase_add_test(core, test_frozen_base_unchanged);
    tcase_add_test(core, test_merge_unmerge);
    tcase_add_test(core, test_lora_bias_merge_save_load);
    tcase_add_test(core, test_target_regex);
    tcase_add_test(core, test_bf16_model);
    tcase_add_test(core, test_param_counts);
    tcase_add_test(core, test_report_string);
    tcase_add_test(core, test_targets_parse);
    tcase_add_test(core, test_patterns_and_layers);
    tcase_add_test(core, test_vera_projections);
    tcase_add_test(core, test_adalora_budget_schedule);
    tcase_add_test(core, test_adalora_allocator_reaches_target);
    tcase_add_test(core, test_adalora_allocator_scores);
    tcase_add_test(core, test_adalora_ties);
    tcase_add_test(core, test_save_load_lora);
    tcase_add_test(core, test_save_load_vera);
    tcase_add_test(core, test_save_load_adalora);
    tcase_add_test(core, test_config_json_golden);
    tcase_add_test(core, test_threads_bitwise);
    tcase_add_test(core, test_dora_identity_at_init);
    tcase_add_test(core, test_merge_dora);
    tcase_add_test(core, test_pissa_init);
    tcase_add_test(core, test_save_load_dora_pissa);
    tcase_add_test(core, test_loraplus_ranges);
    tcase_add_test(core, test_loraplus_ratio_one_bitwise);
    tcase_add_test(core, test_loraplus_config_json);
    TCase *grad = tu_tcase(s, "grad", 0, 120);
    tcase_add_test(grad, test_grad_base_model);
    tcase_add_test(grad, test_grad_base_with_adapter);
    tcase_add_test(grad, test_grad_lora);
    tcase_add_test(grad, test_grad_hf_options);
    tcase_add_test(grad, test_grad_vera);
    tcase_add_test(grad, test_grad_adalora);
    tcase_add_test(grad, test_grad_adalora_regulariser);
    tcase_add_test(grad, test_dora_site_reference);
    tcase_add_test(grad, test_grad_dora_magnitude);
    tcase_add_test(grad, test_loraplus_one_step);
    TCase *limits = tu_tcase(s, "limits", 1, 60);
    tcase_add_test(limits, test_limits_config);
    tcase_add_test(limits, test_limits_targets);
    tcase_add_test(limits, test_limits_load);
    return s;
}
