/* Tests of engine/optim.c, engine/train.c and engine/checkpoint.c: AdamW against hand-computed
 * steps, learning-rate scales, learning-rate schedules, a tiny model overfitting one batch,
 * identical losses with 1 and 2 threads, divergence detection, the model folder round trip, and
 * keeping the best weights (train.keep) with an evaluation at step 0 and NaN evaluations, and more
 * validation sets (eval sets) that are reported at every evaluation and change nothing else.
 *
 * run: the same through experiments/run.c (run_execute), whose folder and row must describe the
 * kept weights: best_step, the best metric, kept_step and the test-split metrics in the store,
 * the folder's weights evaluated again give the recorded validation loss of the kept step and the
 * recorded test loss; train.keep: last; a task without a test split; SIGKILL of a run while it
 * writes its folder and while it trains past a new best (the folder is a complete one or absent,
 * never partial); task.eval_sets (the base's loss on them, resumed runs) and train.diagnostics; a
 * truncated checkpoint refused by a resumed run, which restarts from step 0 with each row once. */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "train"
#include <check.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "analysis/diagnostics.h"
#include "blas_probe.h"
#include "checkpoint.h"
#include "experiments/config.h"
#include "experiments/run.h"
#include "outdir.h"
#include "tokenizer.h"
#include "model.h"
#include "optim.h"
#include "train.h"
#include "tiny.h"
#include "util.h"

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

/* Segments at lr_scale 1 are bitwise one segment at lr; a segment at scale k moves as a segment at
 * lr·k (decoupled decay included). */
START_TEST(test_adamw_lr_scale) {
    enum { N = 37 };
    float p1[N], p2[N], p3[N], p4[N], g[N];
    Rng r;
    rng_seed(&r, 8);
    rng_fill_normal(&r, p1, N, 1.0f);
    rng_fill_normal(&r, g, N, 0.1f);
    memcpy(p2, p1, sizeof p1), memcpy(p3, p1, sizeof p1), memcpy(p4, p1, sizeof p1);
    AdamW a, b, c, d;
    adamw_init(&a, 0.9f, 0.999f, 1e-8f, 0.1f);
    adamw_init(&b, 0.9f, 0.999f, 1e-8f, 0.1f);
    adamw_init(&c, 0.9f, 0.999f, 1e-8f, 0.1f);
    adamw_init(&d, 0.9f, 0.999f, 1e-8f, 0.1f);
    adamw_add(&a, p1, g, N, 1);
    adamw_add_scaled(&b, p2, g, 20, 1, 1.0f); /* split, at scale 1 */
    adamw_add_scaled(&b, p2 + 20, g + 20, N - 20, 1, 1.0f);
    adamw_add_scaled(&c, p3, g, N, 1, 4.0f);
    adamw_add(&d, p4, g, N, 1);
    adamw_ready(&a), adamw_ready(&b), adamw_ready(&c), adamw_ready(&d);
    for (int t = 0; t < 3; t++) {
        adamw_step(&a, 0.01f);
        adamw_step(&b, 0.01f);
        adamw_step(&c, 0.01f);
        adamw_step(&d, 0.04f);
    }
    ck_assert(memcmp(p1, p2, sizeof p1) == 0);
    ck_assert(memcmp(p3, p4, sizeof p1) == 0); /* 0.01f·4 == 0.04f exactly */
    ck_assert(memcmp(p1, p3, sizeof p1) != 0);
    adamw_free(&a), adamw_free(&b), adamw_free(&c), adamw_free(&d);
}
END_TEST

/* ---- keeping the best weights ------------------------------------------------------------------ */

START_TEST(test_eval_better) {
    const EvalResult none = {NAN, NAN, NAN, NAN, 0};
    EvalResult lm = {2.0, exp(2.0), NAN, NAN, 100}, lower = {1.5, exp(1.5), NAN, NAN, 100};
    EvalResult nan = {NAN, NAN, NAN, NAN, 100}, inf = {INFINITY, INFINITY, NAN, NAN, 100};
    ck_assert(train_eval_better(&lm, &none));
    ck_assert(train_eval_better(&lower, &lm));
    ck_assert(!train_eval_better(&lm, &lower));
    ck_assert(!train_eval_better(&lm, &lm)); /* equal: the earlier stays */
    ck_assert(!train_eval_better(&nan, &none) && !train_eval_better(&nan, &lm));
    ck_assert(!train_eval_better(&inf, &none) && !train_eval_better(&inf, &lm));
    ck_assert(!train_eval_better(&none, &none)); /* nothing counted */
    /* classification: accuracy first, the loss breaks ties; NaN logits still give an accuracy */
    EvalResult c1 = {0.7, 2.0, 0.80, 0.5, 50}, c2 = {0.9, 2.5, 0.84, 0.6, 50}, c3 = {0.6, 1.8, 0.80, 0.5, 50};
    EvalResult cnan = {NAN, NAN, 0.90, 0.47, 50};
    ck_assert(train_eval_better(&c2, &c1) && !train_eval_better(&c1, &c2));
    ck_assert(train_eval_better(&c3, &c1) && !train_eval_better(&c1, &c3));
    ck_assert(!train_eval_better(&cnan, &c1) && !train_eval_better(&cnan, &none));
    ck_assert_str_eq(train_eval_metric_name(&c1), "accuracy");
    ck_assert(train_eval_metric(&c1) == 0.80);
    ck_assert_str_eq(train_eval_metric_name(&lm), "loss");
    ck_assert(train_eval_metric(&lm) == 2.0);
}
END_TEST

enum { KB_STEPS = 20, KB_EVERY = 5, KB_EVALS = KB_STEPS / KB_EVERY + 1, KB_RARE = 33 };

/* Token streams below 30 (train) and the same with KB_RARE every 7th token (valid): poisoning
 * KB_RARE's embedding row makes every evaluation NaN and leaves training untouched. */
static void keep_data(Dataset *train, Dataset *valid) {
    fake_lm(train, 3000, 33, 12); /* ids below 30 */
    fake_lm(valid, 400, 33, 13);
    for (size_t i = 0; i < valid->n_tokens; i += 7) valid->tokens[i] = KB_RARE;
}

typedef struct {
    Model *m;
    float *trained; /* what the run trains: the adapter's params or the model's */
    size_t n;
    int poison_after; /* poison KB_RARE's embedding row after the evaluation at this step (-1: never) */
    double loss[KB_EVALS];
    float *copy[KB_EVALS]; /* the trained floats at each evaluation */
    Adapter *a;
    size_t state_bytes;
    unsigned char *state[KB_EVALS]; /* and the method's state (AdaLoRA's masks) */
    int n_eval;
} KeepCtx;

static void keep_metric(void *user, int step, const char *split, const char *name, double value) {
    KeepCtx *k = user;
    if (strcmp(split, "eval") != 0 || strcmp(name, "loss") != 0) return;
    ck_assert_int_eq(step, k->n_eval * KB_EVERY); /* 0, 5, 10, ...: the first before any update */
    k->loss[k->n_eval] = value;
    k->copy[k->n_eval] = malloc(sizeof(float) * k->n);
    memcpy(k->copy[k->n_eval], k->trained, sizeof(float) * k->n);
    k->state[k->n_eval] = malloc(k->state_bytes + 1);
    if (k->state_bytes) adapter_state_get(k->a, k->state[k->n_eval]);
    k->n_eval++;
    if (step == k->poison_after)
        for (int c = 0; c < k->m->cfg.C; c++) k->m->params[k->m->off_embed + (size_t)KB_RARE * k->m->cfg.C + c] = NAN;
}

/* Trains KB_STEPS steps (LoRA r 4 on q, v; AdaLoRA from rank 6 to 2, masking every 2 steps from
 * step 3, the final mask at 15; or full fine-tuning, ADAPTER_FULL) with an evaluation every
 * KB_EVERY; checks that the weights (and AdaLoRA's masks) at the end are those of the best finite
 * evaluation (keep best) or of the last step (keep last), and returns the result. */
static void keep_run(AdapterMethod method, TrainKeep keep, int poison_after, TrainResult *res, KeepCtx *k) {
    const int full = method == ADAPTER_FULL;
    Model m;
    ModelConfig c = tiny_config();
    ModelOptions o = {4, 8, 1, full};
    LLError err;
    ck_assert_msg(model_init(&m, &c, &o, &err) == LL_OK, "%s", err.msg);
    model_init_weights(&m, 21);
    Adapter *a = NULL;
    if (!full) {
        AdapterConfig ac;
        adapter_config_defaults(&ac, method);
        ac.r = 4, ac.alpha = 8.0f, ac.seed = 2;
        ac.init_r = 6, ac.target_r = 2, ac.total_step = KB_STEPS, ac.tinit = 3, ac.tfinal = 5, ac.deltaT = 2;
        ck_assert_msg(adapter_create(&ac, &m, &a, &err) == LL_OK, "%s", err.msg);
    }
    Dataset train, valid;
    keep_data(&train, &valid);
    memset(k, 0, sizeof *k);
    k->m = &m;
    k->trained = a ? a->params : m.params;
    k->n = a ? a->n_params : m.n_params;
    k->poison_after = poison_after;
    k->a = a;
    k->state_bytes = a ? adapter_state_bytes(a) : 0;
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.steps = KB_STEPS, tc.batch = 4, tc.seq = 8, tc.lr = full ? 3e-3f : 3e-2f, tc.eval_every = KB_EVERY;
    tc.schedule = SCHED_CONSTANT, tc.keep = keep, tc.seed = 4;
    TrainHooks hooks = {keep_metric, NULL, NULL, k, NULL, NULL, NULL, 0, NULL};
    ck_assert_msg(train_run(&m, a, &tc, &train, &valid, &hooks, res, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(k->n_eval, KB_EVALS);
    /* the best finite evaluation, the earliest of equals */
    int best = -1;
    for (int i = 0; i < KB_EVALS; i++)
        if (isfinite(k->loss[i]) && (best < 0 || k->loss[i] < k->loss[best])) best = i;
    ck_assert_int_eq(res->best_step, best < 0 ? -1 : best * KB_EVERY);
    if (best >= 0) ck_assert(res->best.loss == k->loss[best]);
    int kept = keep == TRAIN_KEEP_BEST && best >= 0 ? best : KB_EVALS - 1;
    ck_assert_int_eq(res->kept_step, kept * KB_EVERY);
    ck_assert_msg(memcmp(k->trained, k->copy[kept], sizeof(float) * k->n) == 0,
                  "the weights at the end are not those of step %d", kept * KB_EVERY);
    if (kept != KB_EVALS - 1)
        ck_assert(memcmp(k->copy[kept], k->copy[KB_EVALS - 1], sizeof(float) * k->n) != 0);
    if (k->state_bytes) {
        unsigned char *now = malloc(k->state_bytes);
        adapter_state_get(a, now);
        ck_assert_msg(memcmp(now, k->state[kept], k->state_bytes) == 0, "the masks are not those of step %d",
                      kept * KB_EVERY);
        if (kept != KB_EVALS - 1) /* the final mask (step 15) differs from any before it */
            ck_assert(memcmp(k->state[kept], k->state[KB_EVALS - 1], k->state_bytes) != 0);
        free(now);
    }
    for (int i = 0; i < KB_EVALS; i++) free(k->copy[i]), free(k->state[i]);
    data_free(&train);
    data_free(&valid);
    adapter_free(a);
    model_free(&m);
}

/* Eval sets: reported under their own split at every evaluation (step 0 included), each value what
 * evaluating the set by hand at that moment gives (a set equal to valid gives valid's loss); they
 * change nothing else: weights, the validation curve and the best step are bitwise those of a run
 * without them. */
typedef struct {
    Model *m;
    const Dataset *other;
    int n, n_valid;
    int steps[16];
    char split[16][16];
    double loss[16], by_hand[16], valid_loss[16];
} SetCtx;

static void set_metric(void *user, int step, const char *split, const char *name, double value) {
    SetCtx *c = user;
    if (strcmp(name, "loss") != 0 || strcmp(split, "train") == 0) return;
    if (strcmp(split, "eval") == 0) {
        ck_assert_int_lt(c->n_valid, 16);
        c->valid_loss[c->n_valid++] = value;
        return;
    }
    ck_assert_int_lt(c->n, 16);
    c->steps[c->n] = step;
    snprintf(c->split[c->n], sizeof c->split[0], "%s", split);
    c->loss[c->n] = value;
    EvalResult e = {NAN, NAN, NAN, NAN, 0};
    LLError err;
    if (strcmp(split, "other") == 0) CK_OK(eval_split(c->m, c->other, 4, 8, &e, &err));
    c->by_hand[c->n] = e.loss;
    c->n++;
}

static void sets_run(int with_sets, SetCtx *c, float **params, size_t *n, TrainResult *res) {
    Model m;
    ModelConfig mc = tiny_config();
    ModelOptions o = {4, 8, 1, 0};
    LLError err;
    CK_OK(model_init(&m, &mc, &o, &err));
    model_init_weights(&m, 21);
    AdapterConfig ac;
    adapter_config_defaults(&ac, ADAPTER_LORA);
    ac.r = 4, ac.alpha = 8.0f, ac.seed = 2;
    Adapter *a;
    CK_OK(adapter_create(&ac, &m, &a, &err));
    Dataset train, valid, other;
    keep_data(&train, &valid);
    fake_lm(&other, 300, 33, 99);
    memset(c, 0, sizeof *c);
    c->m = &m, c->other = &other;
    const Dataset *sets[2] = {&other, &valid};
    const char *names[2] = {"other", "same"};
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.steps = 15, tc.batch = 4, tc.seq = 8, tc.lr = 3e-2f, tc.eval_every = 5, tc.schedule = SCHED_CONSTANT;
    tc.keep = TRAIN_KEEP_BEST, tc.seed = 4;
    TrainHooks hooks = {set_metric, NULL, NULL, c, NULL, with_sets ? sets : NULL, with_sets ? names : NULL,
                        with_sets ? 2 : 0, NULL};
    CK_OK(train_run(&m, a, &tc, &train, &valid, &hooks, res, &err));
    *n = a->n_params;
    *params = malloc(sizeof(float) * *n);
    memcpy(*params, a->params, sizeof(float) * *n);
    data_free(&train), data_free(&valid), data_free(&other);
    adapter_free(a);
    model_free(&m);
}

START_TEST(test_eval_sets) {
    SetCtx with, without;
    float *p1, *p0;
    size_t n1, n0;
    TrainResult r1, r0;
    sets_run(1, &with, &p1, &n1, &r1);
    sets_run(0, &without, &p0, &n0, &r0);
    ck_assert_int_eq(without.n, 0);
    ck_assert_int_eq(with.n, 8); /* 2 sets x steps 0, 5, 10, 15 */
    ck_assert_int_eq(with.n_valid, 4);
    for (int i = 0; i < with.n; i++) {
        ck_assert_int_eq(with.steps[i], 5 * (i / 2));
        ck_assert_str_eq(with.split[i], i % 2 ? "same" : "other");
        if (i % 2) ck_assert(with.loss[i] == with.valid_loss[i / 2]);
        else ck_assert_msg(with.loss[i] == with.by_hand[i], "step %d: %.9g reported, %.9g by hand", with.steps[i],
                           with.loss[i], with.by_hand[i]);
    }
    ck_assert(with.loss[0] != with.loss[2] && with.loss[0] != with.loss[1]); /* a real, moving curve */
    ck_assert(n1 == n0 && memcmp(p1, p0, sizeof(float) * n1) == 0);
    ck_assert(memcmp(with.valid_loss, without.valid_loss, sizeof(double) * 4) == 0);
    ck_assert(r1.best_step == r0.best_step && r1.kept_step == r0.kept_step);
    free(p1), free(p0);
}
END_TEST

/* A NaN evaluation after good ones never becomes best: the weights of the best good one stay. */
START_TEST(test_keep_best_nan_after_good) {
    static const AdapterMethod methods[] = {ADAPTER_LORA, ADAPTER_FULL, ADAPTER_ADALORA};
    for (int i = 0; i < 3; i++) {
        TrainResult res;
        KeepCtx k;
        keep_run(methods[i], TRAIN_KEEP_BEST, 10, &res, &k);
        ck_assert(isfinite(k.loss[2]) && isnan(k.loss[3]) && isnan(k.loss[4]));
        ck_assert(isnan(res.eval.loss)); /* the last evaluation */
        ck_assert_int_le(res.best_step, 10);
        ck_assert_msg(res.best_step > 0, "%s: training should beat the start before the NaN",
                      adapter_method_name(methods[i]));
    }
}
END_TEST

/* Without NaNs the best is kept, step 0 included as a candidate; keep last keeps the last but
 * still reports the best; all-NaN evaluations leave the last weights and no best. */
START_TEST(test_keep_best_and_last) {
    TrainResult res;
    KeepCtx k;
    keep_run(ADAPTER_LORA, TRAIN_KEEP_BEST, -1, &res, &k);
    ck_assert(isfinite(k.loss[0]) && res.best_step >= 0);
    keep_run(ADAPTER_LORA, TRAIN_KEEP_LAST, 10, &res, &k);
    ck_assert_int_le(res.best_step, 10);
    ck_assert_int_eq(res.kept_step, KB_STEPS);
    keep_run(ADAPTER_LORA, TRAIN_KEEP_BEST, 0, &res, &k); /* NaN from step 5 on: only step 0 is finite */
    ck_assert_int_eq(res.best_step, 0);
    ck_assert_int_eq(res.kept_step, 0);
}
END_TEST

/* ---- run: the kept weights through run_execute ------------------------------------------------ */

/* tiny_config with the byte tokenizer's vocabulary as a base model folder at dir. */
static void run_base(const char *dir) {
    Tokenizer *tok = tok_new_bytes();
    ModelConfig c = tiny_config();
    c.V = tok_vocab_size(tok), c.max_T = 32, c.init_range = 0.25f;
    c.bos_id = tok_bos(tok), c.eos_id = tok_eos(tok), c.pad_id = tok_pad(tok);
    Model m;
    init_model(&m, &c, 1, 8, 0, 3);
    LLError err;
    CK_OK(checkpoint_save(&m, tok, NULL, dir, &err));
    model_free(&m);
    tok_free(tok);
}

/* `n` bytes of words drawn from words[0..nw) with the generator seeded by x, into path. */
static void run_text(const char *path, const char *const *words, int nw, unsigned x, size_t n) {
    char *text = malloc(n + 16);
    size_t at = 0;
    while (at < n) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 16) % (unsigned)nw];
        memcpy(text + at, w, strlen(w));
        at += strlen(w);
    }
    text[at] = '\0';
    tu_write_text(path, text);
    free(text);
}

/* YAML text -> a resolved RunConfig (run_config_free it); asserts both steps. */
static void resolve_text(const char *yaml, RunConfig *rc) {
    ConfigDoc *doc = NULL;
    LLError err;
    CK_OK(config_load_text("keep.yaml", yaml, NULL, 0, &doc, &err));
    LLStatus st = config_resolve(doc, NULL, 0, rc, &err);
    config_doc_free(doc);
    ck_assert_msg(st == LL_OK, "resolve: %s", err.msg);
}

/* tu_dir/name/{base, data, out}: a base, and text whose train split repeats a few words while
 * valid and test share only some of them, so that validation improves first and then suffers
 * from the narrow training text. with_test 0: no test.txt. The run's YAML (keys `train` inside
 * train:, `extra` lines after) resolved into rc; out receives the output folder. */
static void run_setup_extra(const char *name, int with_test, const char *train, const char *extra, RunConfig *rc,
                            char *out, size_t cap) {
    char sub[96], base[256], data[256], path[400], yaml[2048];
    char *made[2] = {base, data};
    for (int i = 0; i < 3; i++) { /* the base and data folders exist, the output one not yet */
        snprintf(sub, sizeof sub, "%s/%s", name, i == 0 ? "base" : i == 1 ? "data" : "out");
        if (i < 2) tu_subdir(made[i], 256, sub);
        else tu_path(out, cap, sub);
    }
    run_base(base);
    static const char *const narrow[] = {"the cat ", "sat on ", "the mat. "};
    static const char *const wide[] = {"the cat ", "a dog ", "ran far ", "sat on ", "its mat. ", "and hid. "};
    snprintf(path, sizeof path, "%s/train.txt", data);
    run_text(path, narrow, 3, 7, 3000);
    snprintf(path, sizeof path, "%s/valid.txt", data);
    run_text(path, wide, 6, 11, 600);
    if (with_test) {
        snprintf(path, sizeof path, "%s/test.txt", data);
        run_text(path, wide, 6, 13, 600);
    }
    snprintf(yaml, sizeof yaml,
             "name: %s\nbase: {path: %s}\ntask: {type: lm, data: %s}\n"
             "train: {batch: 2, seq: 16, schedule: constant, log_every: 10, seed: 1, %s}\n"
             "adapter: {method: lora, r: 4, alpha: 16, targets: all-linear}\noutput: {dir: %s}\n%s",
             name, base, data, train, out, extra);
    resolve_text(yaml, rc);
}

static void run_setup(const char *name, int with_test, const char *train, RunConfig *rc, char *out, size_t cap) {
    run_setup_extra(name, with_test, train, "", rc, out, cap);
}

/* Runs rc recorded in the store at tu_dir/<name>.db; returns its row (store_free_runs) and the
 * run id in *id. */
static RunRow *run_recorded(const RunConfig *rc, RunOutcome *o, Store **sp) {
    char db[300], file[128];
    snprintf(file, sizeof file, "%s.db", rc->name);
    Store *s = tu_store_open(tu_path(db, sizeof db, file), 0);
    LLError err;
    int64_t sw, run;
    int claimed;
    RunInfo info = {rc->key, rc->canonical_json, adapter_variant_name(&rc->adapter), "q_proj,v_proj", rc->adapter.r,
                    rc->adapter.alpha, rc->train.lr, (int64_t)rc->train.seed};
    CK_OK(store_upsert_sweep(s, rc->name, NULL, NULL, &sw, &err));
    CK_OK(store_add_run(s, sw, &info, &run, &err));
    CK_OK(store_claim_run(s, run, &claimed, &err));
    RunEnv env = {0};
    env.store = s, env.run_id = run;
    CK_OK(run_execute(rc, &env, o, &err));
    RunRow *rows;
    int n;
    CK_OK(store_list_runs(s, rc->name, &rows, &n, &err));
    ck_assert_int_eq(n, 1);
    *sp = s;
    return rows;
}

/* The validation loss recorded at `step`. */
static double eval_loss_at(Store *s, int64_t run, int step, int *best_step, double *best) {
    int *steps, n;
    double *v;
    LLError err;
    CK_OK(store_get_metrics(s, run, "eval", "loss", &steps, &v, &n, &err));
    ck_assert_msg(n > 0 && steps[0] == 0, "the first evaluation is at step %d, not 0", n ? steps[0] : -1);
    double at = NAN;
    *best_step = -1, *best = NAN;
    for (int i = 0; i < n; i++) {
        if (steps[i] == step) at = v[i];
        if (isfinite(v[i]) && (*best_step < 0 || v[i] < *best)) *best = v[i], *best_step = steps[i];
    }
    free(steps), free(v);
    return at;
}

/* The adapter folder at dir on the run's base: its loss on the task's split `split`. */
static double folder_loss(const RunConfig *rc, const char *dir, const char *split) {
    LoadedModel lm;
    ModelOptions mo = {rc->train.batch, rc->train.seq, 0, 0};
    LLError err;
    CK_OK(checkpoint_open(rc->base_path, &mo, 0, &lm, &err));
    Adapter *a = NULL;
    CK_OK(adapter_load(dir, &lm.model, &a, &err));
    adapter_attach(&lm.model, a);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.txt", rc->task_data, split);
    Dataset d;
    CK_OK(data_load_text(path, lm.tok, &d, &err));
    EvalResult e;
    CK_OK(eval_split(&lm.model, &d, rc->train.batch, rc->train.seq, &e, &err));
    data_free(&d);
    adapter_free(a);
    checkpoint_close(&lm);
    return e.loss;
}

/* keep: best (the default): the row names the best validation evaluation (step 0 among the
 * candidates) and keeps it; the folder's weights give back the validation loss recorded at that
 * step and the test loss recorded in the row. */
START_TEST(test_run_keeps_best) {
    RunConfig rc;
    char out[300];
    run_setup("best", 1, "steps: 80, lr: 1.0e-2, eval_every: 10", &rc, out, sizeof out);
    ck_assert_int_eq(rc.train.keep, TRAIN_KEEP_BEST);
    RunOutcome o;
    Store *s;
    RunRow *r = run_recorded(&rc, &o, &s);
    int best_step;
    double best;
    eval_loss_at(s, r->id, 0, &best_step, &best);
    ck_assert_msg(best_step > 0 && best_step < 80, "the data should make the best step interior, not %d", best_step);
    ck_assert_int_eq(r->best_step, best_step);
    ck_assert(r->best_metric == best);
    ck_assert_str_eq(r->best_metric_name, "loss");
    ck_assert_int_eq(r->kept_step, best_step);
    ck_assert(isfinite(r->test_loss) && isnan(r->test_accuracy) && isnan(r->test_macro_f1));
    ck_assert_ptr_null(r->test_note);
    double last = eval_loss_at(s, r->id, 80, &best_step, &best);
    ck_assert(r->eval_loss == last); /* eval_loss stays the last evaluation */
    double fv = folder_loss(&rc, r->adapter_dir, "valid"), ft = folder_loss(&rc, r->adapter_dir, "test");
    ck_assert_msg(fabs(fv - best) <= 1e-6 * best, "the folder's valid loss %.9g is not the best %.9g", fv, best);
    ck_assert_msg(fabs(ft - r->test_loss) <= 1e-6 * ft, "the folder's test loss %.9g, recorded %.9g", ft,
                  r->test_loss);
    store_free_runs(r, 1);
    store_close(s);
    run_config_free(&rc);
}
END_TEST

/* keep: last keeps the last step's weights (and still records where the best was); it is another
 * run key than the default, which the existing configs' keys leave out. */
START_TEST(test_run_keep_last) {
    RunConfig rc, rb;
    char out[300];
    run_setup("last", 1, "steps: 80, lr: 1.0e-2, eval_every: 10, keep: last", &rc, out, sizeof out);
    run_setup("last_b", 1, "steps: 80, lr: 1.0e-2, eval_every: 10", &rb, out, sizeof out);
    ck_assert_str_ne(rc.key, rb.key);
    ck_assert_msg(strstr(rc.canonical_json, "\"train.keep\":\"last\""), "%s", rc.canonical_json);
    ck_assert_msg(!strstr(rb.canonical_json, "train.keep"), "the default left out: %s", rb.canonical_json);
    RunOutcome o;
    Store *s;
    RunRow *r = run_recorded(&rc, &o, &s);
    int best_step;
    double best, last = eval_loss_at(s, r->id, 80, &best_step, &best);
    ck_assert_int_eq(r->kept_step, 80);
    ck_assert_int_eq(r->best_step, best_step);
    ck_assert(best_step < 80 && r->best_metric == best);
    double fv = folder_loss(&rc, r->adapter_dir, "valid");
    ck_assert_msg(fabs(fv - last) <= 1e-6 * last, "the folder's valid loss %.9g is not the last %.9g", fv, last);
    store_free_runs(r, 1);
    store_close(s);
    run_config_free(&rc);
    run_config_free(&rb);
}
END_TEST

/* A task folder without test.txt: the run is done, its test metrics NULL and test_note says why. */
START_TEST(test_run_without_test_split) {
    RunConfig rc;
    char out[300];
    run_setup("notest", 0, "steps: 10, lr: 1.0e-2, eval_every: 5", &rc, out, sizeof out);
    RunOutcome o;
    Store *s;
    RunRow *r = run_recorded(&rc, &o, &s);
    ck_assert_str_eq(r->status, "done");
    ck_assert(isnan(r->test_loss) && r->best_step >= 0);
    ck_assert_msg(r->test_note && strstr(r->test_note, "no test split") && strstr(r->test_note, "test.txt"), "%s",
                  r->test_note ? r->test_note : "(null)");
    store_free_runs(r, 1);
    store_close(s);
    run_config_free(&rc);
}
END_TEST

/* The curve of split `split`, name loss: its steps into steps (at most 16), the value at step 0. */
static int set_curve(Store *s, int64_t run, const char *split, int *out_steps, double *at0) {
    int *steps, n;
    double *v;
    LLError err;
    CK_OK(store_get_metrics(s, run, split, "loss", &steps, &v, &n, &err));
    ck_assert_int_le(n, 16);
    *at0 = NAN;
    for (int i = 0; i < n; i++) {
        out_steps[i] = steps[i];
        if (steps[i] == 0) *at0 = v[i];
    }
    free(steps), free(v);
    return n;
}

/* The store tu_dir/<name>.db holding rc as a claimed run of sweep `name` (ids in *sw, *run). */
static Store *claimed_run(const RunConfig *rc, const char *name, int64_t *sw, int64_t *run) {
    char file[100], db[300];
    snprintf(file, sizeof file, "%s.db", name);
    Store *s = tu_store_open(tu_path(db, sizeof db, file), 0);
    LLError err;
    int claimed;
    RunInfo info = {rc->key, rc->canonical_json, "lora", "all", 4, 16, rc->train.lr, 1};
    CK_OK(store_upsert_sweep(s, name, NULL, NULL, sw, &err));
    CK_OK(store_add_run(s, *sw, &info, run, &err));
    CK_OK(store_claim_run(s, *run, &claimed, &err));
    ck_assert(claimed);
    return s;
}

/* A checkpoint whose header is fine but whose body is cut short: the sweep claims the run keeping
 * the rows up to its step (run_resume_step reads the header alone), the run then refuses the file,
 * says so in the log naming it, starts from step 0 and records each row once, the base_bytes row
 * included; the file is removed when the run is done. */
static void log_into(void *user, LLLogLevel level, const char *msg) {
    char *buf = user;
    size_t used = strlen(buf);
    snprintf(buf + used, 4096 - used, "%d %s\n", (int)level, msg);
}

START_TEST(test_run_refused_checkpoint) {
    RunConfig rc;
    char out[300], ck[2048];
    run_setup("refuse", 0, "steps: 20, lr: 1.0e-2, eval_every: 5", &rc, out, sizeof out);
    int64_t sw, run;
    Store *s = claimed_run(&rc, "refuse", &sw, &run);
    LLError err;
    int claimed;
    volatile sig_atomic_t stop = 1;
    static char log[4096];
    RunEnv env = {0};
    env.store = s, env.run_id = run, env.stop = &stop, env.log = (LLLog){log_into, log};
    RunOutcome o;
    ck_assert_int_eq(run_execute(&rc, &env, &o, &err), LL_ERR_INTERRUPTED);
    run_checkpoint_path(&rc, ck, sizeof ck);
    struct stat sb;
    ck_assert_int_eq(stat(ck, &sb), 0);
    ck_assert_int_eq(truncate(ck, sb.st_size - 8), 0);
    ck_assert_int_eq(run_resume_step(&rc), 1);
    CK_OK(store_claim_run_resuming(s, run, run_resume_step(&rc), &claimed, &err));
    stop = 0;
    log[0] = '\0';
    CK_OK(run_execute(&rc, &env, &o, &err));
    ck_assert_msg(strstr(log, "checkpoint refused, so the run restarts from step 0") && strstr(log, ck) &&
                      strstr(log, "truncated"),
                  "%s", log);
    int steps[16];
    double at0;
    ck_assert_int_eq(set_curve(s, run, "eval", steps, &at0), 5);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(steps[i], 5 * i);
    int *st_steps, n;
    double *v;
    CK_OK(store_get_metrics(s, run, "train", "base_bytes", &st_steps, &v, &n, &err));
    ck_assert_int_eq(n, 1);
    ck_assert(st_steps[0] == 0 && v[0] > 0);
    free(st_steps), free(v);
    ck_assert_msg(access(ck, F_OK) != 0, "the finished run left its checkpoint %s", ck);
    store_close(s);
    run_config_free(&rc);
}
END_TEST

/* task.eval_sets and train.diagnostics through run_execute: an attempt stopped after its first
 * step records the base's loss on the set (equal to the step-0 loss there: LoRA starts at the
 * base) and its step-0 row; the attempt that resumes it from its checkpoint (claimed keeping the
 * rows the checkpoint accounts for) continues with one row per evaluation, none doubled, the step-0
 * row the first attempt's, and stores a diagnostics row per adapted matrix and
 * value; with train.diagnostics: false none, and a second run of the sweep reads the base's loss
 * (a sentinel written in its place stays), it does not measure it again. */
START_TEST(test_run_eval_sets_and_diagnostics) {
    char other[300], path[400], extra[600];
    tu_subdir(other, sizeof other, "sets_other");
    static const char *const words[] = {"a dog ", "ran far ", "and hid. ", "the end. "};
    snprintf(path, sizeof path, "%s/valid.txt", other);
    run_text(path, words, 4, 5, 500);
    snprintf(extra, sizeof extra, "task.eval_sets: {other: %s}\n", other);
    RunConfig rc;
    char out[300];
    run_setup_extra("sets", 0, "steps: 40, lr: 1.0e-2, eval_every: 10", extra, &rc, out, sizeof out);
    ck_assert_int_eq(rc.n_eval_sets, 1);
    int64_t sw, run;
    Store *s = claimed_run(&rc, "sets", &sw, &run);
    LLError err;
    int claimed;
    volatile sig_atomic_t stop = 1;
    RunEnv env = {0};
    env.store = s, env.run_id = run, env.stop = &stop;
    RunOutcome o;
    ck_assert_int_eq(run_execute(&rc, &env, &o, &err), LL_ERR_INTERRUPTED);
    int steps[16];
    double at0, base;
    int found;
    ck_assert_int_eq(set_curve(s, run, "other", steps, &at0), 1);
    CK_OK(store_run_base_eval(s, run, "other", "loss", &base, &found, &err));
    ck_assert_msg(found && base == at0 && isfinite(base), "base %.9g, step 0 %.9g", base, at0);
    DiagnosticRow *dr;
    int nd;
    CK_OK(store_list_diagnostics(s, run, &dr, &nd, &err));
    ck_assert_int_eq(nd, 0);
    free(dr);

    ck_assert_int_eq(run_resume_step(&rc), 1);
    CK_OK(store_claim_run_resuming(s, run, run_resume_step(&rc), &claimed, &err));
    ck_assert(claimed);
    stop = 0;
    CK_OK(run_execute(&rc, &env, &o, &err));
    ck_assert_int_eq(set_curve(s, run, "other", steps, &at0), 5);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(steps[i], 10 * i);
    ck_assert(at0 == base);
    CK_OK(store_list_diagnostics(s, run, &dr, &nd, &err));
    ck_assert_int_eq(nd, 2 * MOD_COUNT * DIAG_N_VALUES); /* all-linear on 2 layers */
    for (int i = 0; i < nd; i++) {
        if (strcmp(dr[i].name, "intruders") == 0) ck_assert(dr[i].value >= 0 && dr[i].value <= 10 && dr[i].value == floor(dr[i].value));
        if (strcmp(dr[i].name, "eff_rank") == 0) ck_assert(dr[i].value > 0.5 && dr[i].value <= 4.0 + 1e-9);
        if (strcmp(dr[i].name, "dw_fro") == 0) ck_assert(dr[i].value > 0);
    }
    free(dr);
    RunRow *rows;
    int n;
    CK_OK(store_list_runs(s, "sets", &rows, &n, &err));
    ck_assert_str_eq(rows[0].status, "done");
    ck_assert_msg(rows[0].eval_ctx && strstr(rows[0].eval_ctx, "seq 16 rows all"), "%s", rows[0].eval_ctx);
    store_free_runs(rows, n);
    run_config_free(&rc);

    /* diagnostics off: no rows; same base (and context) in the same sweep: read, not remeasured */
    run_setup_extra("sets", 0, "steps: 20, lr: 2.0e-2, eval_every: 10, diagnostics: false", extra, &rc, out, sizeof out);
    CK_OK(store_add_base_eval(s, run, "other", "loss", 123.0, &err)); /* a sentinel: read, or measured again? */
    RunInfo info2 = {rc.key, rc.canonical_json, "lora", "all", 4, 16, rc.train.lr, 1};
    CK_OK(store_add_run(s, sw, &info2, &run, &err));
    CK_OK(store_claim_run(s, run, &claimed, &err));
    env.run_id = run;
    CK_OK(run_execute(&rc, &env, &o, &err));
    CK_OK(store_list_diagnostics(s, run, &dr, &nd, &err));
    ck_assert_int_eq(nd, 0);
    free(dr);
    ck_assert_int_eq(set_curve(s, run, "other", steps, &at0), 3);
    ck_assert(at0 == base);
    BaseEvalRow *be;
    CK_OK(store_list_base_evals(s, "sets", &be, &n, &err));
    ck_assert_int_eq(n, 2); /* loss and ppl, once */
    ck_assert(strcmp(be[0].name, "loss") == 0 && be[0].value == 123.0);
    store_free_base_evals(be, n);
    store_close(s);
    run_config_free(&rc);
}
END_TEST

/* adapter.lr_ratio enters the run key only away from 1, and only for LoRA; its variant is loraplus. */
START_TEST(test_lr_ratio_key) {
    const char *base = "name: k\nbase: {path: b}\ntask: {data: d}\nadapter: {method: %s%s}\n";
    const char *cases[][2] = {{"lora", ""}, {"lora", ", lr_ratio: 1"}, {"lora", ", lr_ratio: 16"}, {"vera", ""},
                              {"vera", ", lr_ratio: 16"}};
    char keys[5][17], yaml[256];
    for (int i = 0; i < 5; i++) {
        snprintf(yaml, sizeof yaml, base, cases[i][0], cases[i][1]);
        RunConfig rc;
        resolve_text(yaml, &rc);
        snprintf(keys[i], sizeof keys[i], "%s", rc.key);
        if (i == 2) {
            ck_assert_str_eq(adapter_variant_name(&rc.adapter), "loraplus");
            ck_assert_msg(strstr(rc.canonical_json, "\"adapter.lr_ratio\":16"), "%s", rc.canonical_json);
        } else {
            ck_assert_msg(!strstr(rc.canonical_json, "adapter.lr_ratio"), "%s", rc.canonical_json);
        }
        if (i == 4) ck_assert(rc.adapter.lr_ratio == 1.0f); /* VeRA ignores it */
        run_config_free(&rc);
    }
    ck_assert_str_eq(keys[0], keys[1]);
    ck_assert_str_ne(keys[0], keys[2]);
    ck_assert_str_eq(keys[3], keys[4]);
}
END_TEST

/* ---- run: SIGKILL ------------------------------------------------------------------------------ */

/* Child: run_execute(rc) then _exit (0 on success). */
static pid_t run_in_child(const RunConfig *rc) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        RunEnv env = {0};
        RunOutcome o;
        LLError err;
        _exit(run_execute(rc, &env, &o, &err) == LL_OK ? 0 : 1);
    }
    return pid;
}

/* Whether dir holds an entry whose name starts with prefix. */
static int has_entry(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) found = strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return found;
}

/* The folder is absent, or it holds exactly the entries of the complete folder ref, byte for byte. */
static int folder_absent_or_equal(const char *dir, const char *ref) {
    if (access(dir, F_OK) != 0) return 1;
    DIR *d = opendir(ref);
    ck_assert_msg(d != NULL, "cannot list %s", ref);
    int n = 0, same = 1;
    for (struct dirent *e; same && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char a[1400], b[1400];
        snprintf(a, sizeof a, "%s/%s", dir, e->d_name);
        snprintf(b, sizeof b, "%s/%s", ref, e->d_name);
        n++;
        if (access(a, R_OK) != 0) {
            same = 0;
            break;
        }
        size_t na, nb;
        char *x = tu_slurp(a, &na), *y = tu_slurp(b, &nb);
        same = na == nb && memcmp(x, y, na) == 0;
        free(x), free(y);
    }
    closedir(d);
    return same && n >= 2 && tu_count_entries(dir, "") == n;
}

/* Killed while it writes its folder (the moment any entry named after the run appears beside
 * where the folder goes): what sits at the folder's path is absent or the complete folder a
 * finished run writes, never a part of it. Killed while it trains past new bests, with a complete
 * earlier folder at its path: that folder is untouched (a run writes no folder before it ends). */
START_TEST(test_run_killed) {
    RunConfig rc;
    char out[300], ref[1200], dir[1200], parent[1200];
    run_setup("kill", 1, "steps: 60, lr: 1.0e-2, eval_every: 5", &rc, out, sizeof out);
    /* the folder a finished run writes, from a run elsewhere (the output folder is not in the key) */
    char refout[320];
    snprintf(refout, sizeof refout, "%s_ref", out);
    snprintf(rc.out_dir, sizeof rc.out_dir, "%s", refout);
    RunOutcome o;
    LLError err;
    RunEnv env = {0};
    double t0 = ll_now();
    CK_OK(run_execute(&rc, &env, &o, &err));
    double took = ll_now() - t0;
    snprintf(ref, sizeof ref, "%s", o.out_dir);
    snprintf(rc.out_dir, sizeof rc.out_dir, "%s", out);
    snprintf(parent, sizeof parent, "%s/%s", out, rc.name);
    snprintf(dir, sizeof dir, "%s/%s", parent, rc.key);

    /* while writing: poll for the first entry named after the run, then SIGKILL at once */
    int caught = 0;
    for (int attempt = 0; attempt < 5 && !caught; attempt++) {
        tu_rm_tree(out);
        pid_t pid = run_in_child(&rc);
        const struct timespec poll = {0, 50000}; /* 50 µs: the write takes milliseconds */
        while (!has_entry(parent, rc.key)) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) ck_abort_msg("the run ended before anything was seen");
            nanosleep(&poll, NULL);
        }
        kill(pid, SIGKILL);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        caught = WIFSIGNALED(st);
        ck_assert_msg(folder_absent_or_equal(dir, ref), "attempt %d: a partial folder at %s", attempt, dir);
    }
    ck_assert_msg(caught, "the run always finished before the kill: nothing was tested");

    /* while training: a complete earlier folder stays as it was */
    tu_rm_tree(out);
    char sub[128];
    snprintf(sub, sizeof sub, "kill/out/%s/%s", rc.name, rc.key);
    char made[1200];
    tu_subdir(made, sizeof made, sub);
    static const char *const files[] = {"adapter_config.json", "adapter_model.safetensors", OUTDIR_MARKER};
    for (int i = 0; i < 3; i++) {
        char a[1300], b[1300];
        snprintf(a, sizeof a, "%s/%s", ref, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        size_t n;
        char *x = tu_slurp(a, &n);
        FILE *f = fopen(b, "wb");
        ck_assert(f && fwrite(x, 1, n, f) == n && fclose(f) == 0);
        free(x);
    }
    for (int k = 1; k <= 3; k++) {
        pid_t pid = run_in_child(&rc);
        struct timespec ts = {0, (long)(took * k / 4.0 * 1e9)};
        ts.tv_sec = ts.tv_nsec / 1000000000L, ts.tv_nsec %= 1000000000L;
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(folder_absent_or_equal(dir, ref) && access(dir, F_OK) == 0,
                      "killed at %d/4 of the run: the earlier folder changed", k);
        /* beside it, at most temporary folders of writes the kills interrupted (the next writer
         * removes them: outdir_recover) */
        char tmpname[300];
        snprintf(tmpname, sizeof tmpname, "%s.tmp.", rc.key);
        ck_assert_int_eq(tu_count_entries(parent, ""), 1 + tu_count_entries(parent, tmpname));
    }
    run_config_free(&rc);
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
    tcase_add_test(core, test_adamw_lr_scale);
    TCase *keep = tu_tcase(s, "keep", 0, 120);
    tcase_add_test(keep, test_eval_better);
    tcase_add_test(keep, test_keep_best_nan_after_good);
    tcase_add_test(keep, test_keep_best_and_last);
    tcase_add_test(keep, test_eval_sets);
    TCase *run = tu_tcase(s, "run", 1, 240);
    tcase_add_test(run, test_run_keeps_best);
    tcase_add_test(run, test_run_keep_last);
    tcase_add_test(run, test_run_without_test_split);
    tcase_add_test(run, test_run_eval_sets_and_diagnostics);
    tcase_add_test(run, test_run_refused_checkpoint);
    tcase_add_test(run, test_lr_ratio_key);
    tcase_add_test(run, test_run_killed);
    TCase *limits = tu_tcase(s, "limits", 0, 0);
    tcase_add_test(limits, test_diverged);
    return s;
}
