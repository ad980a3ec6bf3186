/* Tests of engine/optim.c, engine/train.c and engine/checkpoint.c: AdamW against hand-computed
 * steps, learning-rate schedules, a tiny model overfitting one batch, identical losses with 1 and
 * 2 threads, divergence detection, and the model folder round trip. */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "train"
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas_probe.h"
#include "checkpoint.h"
#include "model.h"
#include "optim.h"
#include "train.h"
#include "util.h"

static ModelConfig tiny_config(void) {
    ModelConfig c = {0};
    c.V = 40, c.C = 16, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = 4, c.F = 24, c.max_T = 32;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.02f, c.tied = 0;
    c.bos_id = 37, c.eos_id = 38, c.pad_id = 39;
    return c;
}

/* A model of config c for batches of B x T, trainable (base included) when train, weights from
 * seed; asserts that model_init succeeded. */
static void init_model(Model *m, const ModelConfig *c, int B, int T, int train, uint64_t seed) {
    ModelOptions o = {B, T, train, train};
    LLError e;
    ck_assert_int_eq(model_init(m, c, &o, &e), LL_OK);
    model_init_weights(m, seed);
}

/* tiny_config widened to C = 32, F = 64, HS = 8: a trainable model for batches of 4 x T, weights
 * from seed. */
static void wide_model(Model *m, int T, uint64_t seed) {
    ModelConfig c = tiny_config();
    c.C = 32, c.F = 64, c.HS = 8;
    init_model(m, &c, 4, T, 1, seed);
}

START_TEST(test_adamw_hand) {
    /* Two steps of torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
     * on p = [1, -2] with gradients g1 = [0.5, 0.1], g2 = [-0.2, 0.3], computed by hand:
     * step 1: p *= 1 - 0.1*0.01; m = 0.1 g; v = 0.001 g²; m̂ = g; v̂ = g²; p -= 0.1 * sign(g)
     *         (up to eps) -> [0.899, -2.098].
     * step 2: p *= 0.999; m = 0.09 g1 + 0.1 g2, v = 0.999*0.001 g1² + 0.001 g2²; m̂ = m/0.19,
     *         v̂ = v/0.001999. */
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.1f};
    AdamW o;
    adamw_init(&o, 0.9f, 0.999f, 1e-8f, 0.01f);
    adamw_add(&o, p, g, 2, 1);
    adamw_ready(&o);
    adamw_step(&o, 0.1f);
    ck_assert(fabs(p[0] - 0.899) < 1e-6 && fabs(p[1] - (-2.098)) < 1e-6);
    g[0] = -0.2f, g[1] = 0.3f;
    adamw_step(&o, 0.1f);
    double gs[2][2] = {{0.5, 0.1}, {-0.2, 0.3}}, want[2] = {0.899, -2.098};
    for (int i = 0; i < 2; i++) {
        double m = 0.09 * gs[0][i] + 0.1 * gs[1][i];
        double v = 0.999 * 0.001 * gs[0][i] * gs[0][i] + 0.001 * gs[1][i] * gs[1][i];
        double mh = m / (1 - 0.81), vh = v / (1 - 0.999 * 0.999);
        want[i] = want[i] * (1 - 0.1 * 0.01) - 0.1 * mh / (sqrt(vh) + 1e-8);
        ck_assert_msg(fabs(p[i] - want[i]) < 1e-5, "p[%d] = %.7f, want %.7f", i, p[i], want[i]);
    }
    adamw_free(&o);
}
END_TEST

START_TEST(test_grad_norm_and_clip) {
    float p[3] = {0}, g[3] = {3.0f, 0.0f, 4.0f};
    AdamW o;
    adamw_init(&o, 0.9f, 0.999f, 1e-8f, 0.0f);
    adamw_add(&o, p, g, 3, 0);
    adamw_ready(&o);
    ck_assert(fabs(adamw_grad_norm(&o) - 5.0) < 1e-12);
    adamw_scale_grads(&o, 0.2f);
    ck_assert(fabs(adamw_grad_norm(&o) - 1.0) < 1e-6);
    adamw_free(&o);
}
END_TEST

START_TEST(test_lr_schedule) {
    ck_assert(fabs(lr_at(SCHED_COSINE, 0, 100, 10, 1.0f, 0.1f) - 0.1) < 1e-6);   /* warmup (step+1)/10 */
    ck_assert(fabs(lr_at(SCHED_COSINE, 9, 100, 10, 1.0f, 0.1f) - 1.0) < 1e-6);
    ck_assert(fabs(lr_at(SCHED_COSINE, 10, 100, 10, 1.0f, 0.1f) - 1.0) < 1e-6);  /* peak after warmup */
    ck_assert(fabs(lr_at(SCHED_COSINE, 99, 100, 10, 1.0f, 0.1f) - 0.1) < 1e-6);  /* floor at the end */
    ck_assert(fabs(lr_at(SCHED_LINEAR, 54, 100, 10, 1.0f, 0.0f) - 0.5) < 1e-2);
    ck_assert(fabs(lr_at(SCHED_CONSTANT, 70, 100, 0, 0.3f, 0.0f) - 0.3) < 1e-7);
}
END_TEST

/* A fixed random "text" as a language-modelling dataset. */
static void fake_lm(Dataset *d, int n, int V, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->kind = DATA_LM;
    d->path = ll_strdup("fake");
    d->n_tokens = (size_t)n;
    d->tokens = ll_malloc((size_t)n, sizeof(int));
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) d->tokens[i] = (int)rng_below(&r, (uint32_t)(V - 3));
}

START_TEST(test_overfit_one_batch) {
    /* One fixed batch of random tokens, trained on again and again: the model must memorise it. */
    Model m;
    wide_model(&m, 16, 1);
    Batch b;
    batch_alloc(&b, 4, 16);
    Rng r;
    rng_seed(&r, 2);
    for (int i = 0; i < 4 * 16; i++) b.ids[i] = (int)rng_below(&r, 37), b.targets[i] = (int)rng_below(&r, 37);
    AdamW opt;
    adamw_init(&opt, 0.9f, 0.999f, 1e-8f, 0.0f);
    adamw_add(&opt, m.params, m.grads, m.n_params, 1);
    adamw_ready(&opt);
    float first = 0.0f, loss = 0.0f;
    for (int s = 0; s < 200; s++) {
        model_zero_grad(&m);
        loss = model_forward(&m, &b, 1);
        if (s == 0) first = loss;
        model_backward(&m, &b, 1.0f);
        adamw_step(&opt, 1e-2f);
    }
    loss = model_forward(&m, &b, 0);
    ck_assert_msg(fabsf(first - logf(40.0f)) < 0.2f, "initial loss %.4f should be near ln V = %.4f", first, logf(40.0f));
    ck_assert_msg(loss < 0.1f, "one batch should be memorised: loss %.4f after 200 steps", loss);
    adamw_free(&opt);
    batch_free(&b);
    model_free(&m);
}
END_TEST

static void train_losses(int threads, float *out, int steps) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    Model m;
    wide_model(&m, 24, 3);
    Dataset d;
    fake_lm(&d, 5000, m.cfg.V, 4);
    Batch b;
    batch_alloc(&b, 4, 24);
    Rng r;
    rng_seed(&r, 5);
    AdamW opt;
    adamw_init(&opt, 0.9f, 0.999f, 1e-8f, 0.0f);
    adamw_add(&opt, m.params, m.grads, m.n_params, 1);
    adamw_ready(&opt);
    for (int s = 0; s < steps; s++) {
        data_sample(&d, &r, &b, 4, 24, m.cfg.bos_id, m.cfg.pad_id);
        model_zero_grad(&m);
        out[s] = model_forward(&m, &b, 1);
        model_backward(&m, &b, 1.0f);
        adamw_step(&opt, 3e-3f);
    }
    adamw_free(&opt);
    batch_free(&b);
    data_free(&d);
    model_free(&m);
}

START_TEST(test_threads_identical) {
    enum { STEPS = 8 };
    float one[STEPS], two[STEPS], again[STEPS];
    train_losses(blas_thread_independent() ? 1 : 2, one, STEPS);
    train_losses(2, two, STEPS);
    train_losses(2, again, STEPS);
    for (int s = 0; s < STEPS; s++) {
        ck_assert_msg(two[s] == again[s], "step %d: same seed, same threads, different loss", s);
        ck_assert_msg(one[s] == two[s], "step %d: 1 thread %.9g vs 2 threads %.9g", s, one[s], two[s]);
    }
    ck_assert(one[STEPS - 1] < one[0]);
}
END_TEST

START_TEST(test_diverged) {
    ModelConfig c = tiny_config();
    Model m;
    init_model(&m, &c, 2, 8, 1, 1);
    m.params[m.lay[1].w[MOD_UP] + 3] = NAN; /* a poisoned weight: the loss becomes NaN at step 0 */
    Dataset d;
    fake_lm(&d, 200, c.V, 2);
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.steps = 5, tc.batch = 2, tc.seq = 8;
    TrainResult res;
    LLError e;
    ck_assert_int_eq(train_run(&m, NULL, &tc, &d, NULL, NULL, &res, &e), LL_ERR_DIVERGED);
    ck_assert_int_eq(res.diverged_step, 0);
    ck_assert_msg(strstr(e.msg, "step 0") && strstr(e.msg, "NaN"), "message: %s", e.msg);
    data_free(&d);
    model_free(&m);
}
END_TEST

START_TEST(test_checkpoint_round_trip) {
    char tmp[256], dir[300];
    tu_tmpdir_new(tmp, sizeof tmp);
    snprintf(dir, sizeof dir, "%s/model", tmp);
    ModelConfig c = tiny_config();
    Model m;
    init_model(&m, &c, 2, 8, 0, 9);
    LLError e;
    ck_assert_msg(checkpoint_save(&m, NULL, NULL, dir, &e) == LL_OK, "%s", e.msg);
    ModelConfig c2;
    ck_assert_msg(checkpoint_load_config(dir, &c2, &e) == LL_OK, "%s", e.msg);
    ck_assert_int_eq(c2.V, c.V);
    ck_assert_int_eq(c2.NKV, c.NKV);
    ck_assert(c2.eps == c.eps && c2.tied == c.tied && c2.n_labels == 0);
    Model m2;
    ModelOptions o = {2, 8, 0, 0};
    ck_assert_int_eq(model_init(&m2, &c2, &o, &e), LL_OK);
    ck_assert_msg(checkpoint_load_weights(dir, &m2, NULL, &e) == LL_OK, "%s", e.msg);
    ck_assert(memcmp(m.params, m2.params, sizeof(float) * m.n_params) == 0);
    /* saving again replaces the folder whole */
    m.params[0] = 42.0f;
    ck_assert_int_eq(checkpoint_save(&m, NULL, NULL, dir, &e), LL_OK);
    ck_assert_int_eq(checkpoint_load_weights(dir, &m2, NULL, &e), LL_OK);
    ck_assert(m2.params[0] == 42.0f);
    /* a truncated weights file is refused with its path in the message */
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_int_eq(truncate(path, 100), 0);
    ck_assert_int_ne(checkpoint_load_weights(dir, &m2, NULL, &e), LL_OK);
    ck_assert_msg(strstr(e.msg, "model.safetensors") != NULL, "message: %s", e.msg);
    model_free(&m);
    model_free(&m2);
    tu_tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_memory_estimate) {
    ModelConfig c = tiny_config();
    ModelOptions o = {4, 16, 1, 1};
    double est = model_memory_estimate(&c, &o);
    ck_assert(est > (double)model_param_count(&c) * 4 * sizeof(float));
}
END_TEST

Suite *train_suite(void) {
    Suite *s = suite_create("train");
    TCase *core = tu_tcase(s, "core", 1, 120);
    tcase_add_test(core, test_adamw_hand);
    tcase_add_test(core, test_grad_norm_and_clip);
    tcase_add_test(core, test_lr_schedule);
    tcase_add_test(core, test_overfit_one_batch);
    tcase_add_test(core, test_threads_identical);
    tcase_add_test(core, test_checkpoint_round_trip);
    tcase_add_test(core, test_memory_estimate);
    TCase *limits = tu_tcase(s, "limits", 0, 0);
    tcase_add_test(limits, test_diverged);
    return s;
}
