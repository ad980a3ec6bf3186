/* Tests of engine/train_state.c and train_run's checkpoints (engine/train.c): a run stopped at step
 * k (through the stop hook, which writes a checkpoint) and resumed from that checkpoint in a fresh
 * process state (model, adapter and optimizer rebuilt from their seeds) ends with bitwise the
 * weights, method state, result and metric rows of the run that was never stopped, for LoRA (with
 * dropout), AdaLoRA (masks and importance averages across the stop), VeRA, DoRA, full fine-tuning
 * and LoRA on a classifier (its head, accuracy and macro-F1 rows); a periodic checkpoint
 * (train.checkpoint_every) resumed after a "kill" (the rows past it dropped) gives the same; a
 * truncated, corrupt or foreign checkpoint, or one of another adapter size, is refused with a
 * message naming it, and the run starts from step 0 and still ends like the uninterrupted run. */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "train_state"
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter.h"
#include "data.h"
#include "model.h"
#include "train.h"
#include "train_state.h"
#include "tiny.h"
#include "util.h"

enum { RS_STEPS = 20, RS_EVERY = 5, RS_LOG = 3, RS_STOP = 7, RS_MAX_ROWS = 512 };

typedef enum { V_LORA, V_ADALORA, V_VERA, V_DORA, V_FULL, V_CLS } Variant;
static const char *const VARIANT_NAMES[] = {"lora", "adalora", "vera", "dora", "full", "cls"};

/* n classification examples of 3 to 8 tokens below 30, labelled by their first token mod 3 (so
 * there is something to learn). */
static void fake_cls(Dataset *d, int n, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->kind = DATA_CLS;
    d->path = ll_strdup("fake.jsonl");
    d->n_ex = n, d->n_labels = 3;
    d->ex_off = ll_malloc((size_t)n, sizeof(size_t));
    d->ex_len = ll_malloc((size_t)n, sizeof(int));
    d->ex_label = ll_malloc((size_t)n, sizeof(int));
    d->ex_line = ll_malloc((size_t)n, sizeof(int));
    d->ex_tokens = ll_malloc((size_t)n * 8, sizeof(int));
    Rng r;
    rng_seed(&r, seed);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        int len = 3 + (int)rng_below(&r, 6);
        d->ex_off[i] = off, d->ex_len[i] = len, d->ex_line[i] = i + 1;
        for (int k = 0; k < len; k++) d->ex_tokens[off + k] = (int)rng_below(&r, 30);
        d->ex_label[i] = d->ex_tokens[off] % 3;
        off += (size_t)len;
    }
}

/* The metric rows a run handed out, as a store would keep them: (step, split, name) -> value;
 * `resumed` drops the rows past the step resumed at, as run.c trims the store. */
typedef struct {
    int n;
    int step[RS_MAX_ROWS];
    char split[RS_MAX_ROWS][8], name[RS_MAX_ROWS][16];
    double value[RS_MAX_ROWS];
} Rows;

typedef struct {
    Rows rows;
    int stop_at;   /* the stop hook says stop after this step (0: never) */
    int calls;     /* stop hook calls = steps done in this attempt */
    int copy_at;   /* at this stop call, the checkpoint file is copied to copy_path (0: never) */
    const char *path, *copy_path;
    char log[2048];
} Ctx;

static void on_metric(void *user, int step, const char *split, const char *name, double value) {
    Ctx *c = user;
    Rows *r = &c->rows;
    for (int i = 0; i < r->n; i++)
        if (r->step[i] == step && strcmp(r->split[i], split) == 0 && strcmp(r->name[i], name) == 0) {
            r->value[i] = value; /* replaced, as the store does */
            return;
        }
    ck_assert_int_lt(r->n, RS_MAX_ROWS);
    r->step[r->n] = step;
    snprintf(r->split[r->n], sizeof r->split[0], "%s", split);
    snprintf(r->name[r->n], sizeof r->name[0], "%s", name);
    r->value[r->n++] = value;
}

static void copy_file(const char *from, const char *to) {
    size_t len;
    char *data = tu_slurp(from, &len);
    FILE *f = fopen(to, "wb");
    ck_assert_msg(f && fwrite(data, 1, len, f) == len && fclose(f) == 0, "cannot copy %s to %s", from, to);
    free(data);
}

static int on_stop(void *user) {
    Ctx *c = user;
    c->calls++;
    if (c->copy_at && c->calls == c->copy_at) copy_file(c->path, c->copy_path);
    return c->stop_at && c->calls == c->stop_at;
}

static void on_resumed(void *user, int step) {
    Ctx *c = user;
    Rows *r = &c->rows;
    int k = 0;
    for (int i = 0; i < r->n; i++)
        if (step > 0 && r->step[i] <= step) { /* a fresh start keeps none */
            r->step[k] = r->step[i], r->value[k] = r->value[i];
            memcpy(r->split[k], r->split[i], sizeof r->split[0]);
            memcpy(r->name[k], r->name[i], sizeof r->name[0]);
            k++;
        }
    r->n = k;
}

static void on_log(void *user, LLLogLevel level, const char *msg) {
    Ctx *c = user;
    size_t used = strlen(c->log);
    snprintf(c->log + used, sizeof c->log - used, "%s%s\n", level == LL_LOG_WARN ? "warn: " : "", msg);
}

/* What a run ended with. */
typedef struct {
    LLStatus st;
    TrainResult res;
    float *trained, *head;
    size_t n, n_head;
    unsigned char *state;
    size_t state_bytes;
    int resumed_step, written;
    Rows rows;
    char log[2048];
} Outcome;

static void outcome_free(Outcome *o) {
    free(o->trained), free(o->head), free(o->state);
    memset(o, 0, sizeof *o);
}

/* One attempt of the run `v` (r = rank of LoRA-family methods) from a model, adapter and optimizer
 * built from their seeds. rows: the rows of earlier attempts (the store), or NULL. ck_path NULL: no
 * checkpoint hook. */
static void attempt(Variant v, int r, const char *ck_path, const char *tag, int every, int stop_at,
                    const Rows *rows, int copy_at, const char *copy_path, Outcome *o) {
    memset(o, 0, sizeof *o);
    const int full = v == V_FULL;
    Model m;
    ModelConfig mc = tiny_config();
    if (v == V_CLS) mc.n_labels = 3;
    ModelOptions mo = {4, 8, 1, full};
    LLError err;
    CK_OK(model_init(&m, &mc, &mo, &err));
    model_init_weights(&m, 21);
    if (m.head) model_init_head(&m, 5);
    Adapter *a = NULL;
    if (!full) {
        AdapterConfig ac;
        adapter_config_defaults(&ac, v == V_ADALORA ? ADAPTER_ADALORA : v == V_VERA ? ADAPTER_VERA : ADAPTER_LORA);
        ac.r = r, ac.alpha = 8.0f, ac.seed = 2, ac.dropout = v == V_DORA ? 0.0f : 0.1f;
        ac.use_dora = v == V_DORA;
        ac.init_r = 6, ac.target_r = 2, ac.total_step = RS_STEPS, ac.tinit = 3, ac.tfinal = 5, ac.deltaT = 2;
        CK_OK(adapter_create(&ac, &m, &a, &err));
    }
    Dataset train, valid;
    if (v == V_CLS) fake_cls(&train, 300, 12), fake_cls(&valid, 40, 13);
    else fake_lm(&train, 3000, 33, 12), fake_lm(&valid, 400, 33, 13);
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.steps = RS_STEPS, tc.batch = 4, tc.seq = 8, tc.lr = full ? 3e-3f : 3e-2f, tc.eval_every = RS_EVERY;
    tc.log_every = RS_LOG, tc.schedule = SCHED_COSINE, tc.warmup = 2, tc.weight_decay = 0.01f;
    tc.keep = TRAIN_KEEP_BEST, tc.seed = 4, tc.accum = 2, tc.checkpoint_every = every;
    Ctx *c = calloc(1, sizeof *c);
    if (rows) c->rows = *rows;
    c->stop_at = stop_at, c->copy_at = copy_at, c->path = ck_path, c->copy_path = copy_path;
    TrainCheckpoint ck = {ck_path, tag, {on_log, c}, c, on_resumed, NULL, -1, -1};
    TrainHooks hooks = {on_metric, NULL, on_stop, c, NULL, NULL, NULL, 0, ck_path ? &ck : NULL};
    o->st = train_run(&m, a, &tc, &train, &valid, &hooks, &o->res, &err);
    size_t n = a ? a->n_params : m.n_params;
    o->n = n, o->n_head = m.head ? m.n_head : 0;
    o->trained = malloc(sizeof(float) * n);
    memcpy(o->trained, a ? a->params : m.params, sizeof(float) * n);
    o->head = malloc(sizeof(float) * (o->n_head + 1));
    if (o->n_head) memcpy(o->head, m.head, sizeof(float) * o->n_head);
    size_t rb = 0;
    const void *resume = a ? adapter_resume_state(a, &rb) : NULL;
    o->state_bytes = (a ? adapter_state_bytes(a) : 0) + rb;
    o->state = malloc(o->state_bytes + 1);
    if (a) {
        adapter_state_get(a, o->state);
        if (rb) memcpy(o->state + adapter_state_bytes(a), resume, rb);
    }
    o->resumed_step = ck.resumed_step, o->written = ck.written;
    o->rows = c->rows;
    memcpy(o->log, c->log, sizeof o->log);
    free(c);
    data_free(&train);
    data_free(&valid);
    adapter_free(a);
    model_free(&m);
}

/* Every row of want is in got with bitwise the same value, and got has no other. */
static void same_rows(const Rows *got, const Rows *want, const char *what) {
    ck_assert_msg(got->n == want->n, "%s: %d metric rows, the uninterrupted run has %d", what, got->n, want->n);
    for (int i = 0; i < want->n; i++) {
        int j = 0;
        while (j < got->n && !(got->step[j] == want->step[i] && strcmp(got->split[j], want->split[i]) == 0 &&
                               strcmp(got->name[j], want->name[i]) == 0))
            j++;
        ck_assert_msg(j < got->n, "%s: no row %s/%s at step %d", what, want->split[i], want->name[i], want->step[i]);
        ck_assert_msg(memcmp(&got->value[j], &want->value[i], sizeof(double)) == 0,
                      "%s: %s/%s at step %d is %.17g, uninterrupted %.17g", what, want->split[i], want->name[i],
                      want->step[i], got->value[j], want->value[i]);
    }
}

static void same_run(const Outcome *got, const Outcome *want, const char *what) {
    ck_assert_msg(got->st == LL_OK, "%s: status %s", what, ll_status_name(got->st));
    ck_assert(got->n == want->n && got->state_bytes == want->state_bytes && got->n_head == want->n_head);
    ck_assert_msg(memcmp(got->head, want->head, sizeof(float) * want->n_head) == 0,
                  "%s: the classification head differs from the uninterrupted run's", what);
    ck_assert_msg(memcmp(got->trained, want->trained, sizeof(float) * want->n) == 0,
                  "%s: the final weights differ from the uninterrupted run's", what);
    ck_assert_msg(memcmp(got->state, want->state, want->state_bytes) == 0,
                  "%s: the method's state differs from the uninterrupted run's", what);
    same_rows(&got->rows, &want->rows, what);
    const TrainResult *g = &got->res, *w = &want->res;
    ck_assert_int_eq(g->steps_done, w->steps_done);
    ck_assert_int_eq(g->best_step, w->best_step);
    ck_assert_int_eq(g->kept_step, w->kept_step);
    ck_assert(memcmp(&g->train_loss, &w->train_loss, sizeof(double)) == 0);
    ck_assert(memcmp(&g->eval.loss, &w->eval.loss, sizeof(double)) == 0);
    ck_assert(memcmp(&g->best.loss, &w->best.loss, sizeof(double)) == 0);
}

/* Straight, then stopped at RS_STOP and resumed: the same run. */
static void stop_and_resume(Variant v) {
    char path[512], what[64];
    tu_path(path, sizeof path, VARIANT_NAMES[v]);
    strcat(path, ".ckpt");
    snprintf(what, sizeof what, "%s resumed at step %d", VARIANT_NAMES[v], RS_STOP);
    Outcome straight, stopped, resumed;
    attempt(v, 4, NULL, "k", 0, 0, NULL, 0, NULL, &straight);
    ck_assert_msg(straight.st == LL_OK, "%s: %s", VARIANT_NAMES[v], ll_status_name(straight.st));
    attempt(v, 4, path, "run-1", 0, RS_STOP, NULL, 0, NULL, &stopped);
    ck_assert_int_eq(stopped.st, LL_ERR_INTERRUPTED);
    ck_assert_int_eq(stopped.res.steps_done, RS_STOP);
    ck_assert_int_eq(stopped.written, 1);
    ck_assert_int_eq(stopped.resumed_step, 0);
    ck_assert_msg(access(path, F_OK) == 0, "no checkpoint at %s", path);
    attempt(v, 4, path, "run-1", 0, 0, &stopped.rows, 0, NULL, &resumed);
    ck_assert_msg(resumed.resumed_step == RS_STOP, "%s: resumed at %d; log: %s", what, resumed.resumed_step,
                  resumed.log);
    ck_assert_msg(strstr(resumed.log, "resumed from the checkpoint") && strstr(resumed.log, path), "log: %s",
                  resumed.log);
    ck_assert_int_eq(resumed.written, 0);
    same_run(&resumed, &straight, what);
    outcome_free(&straight), outcome_free(&stopped), outcome_free(&resumed);
}

START_TEST(test_resume_lora) { stop_and_resume(V_LORA); }
END_TEST
START_TEST(test_resume_adalora) { stop_and_resume(V_ADALORA); }
END_TEST
START_TEST(test_resume_vera) { stop_and_resume(V_VERA); }
END_TEST
START_TEST(test_resume_dora) { stop_and_resume(V_DORA); }
END_TEST
START_TEST(test_resume_full) { stop_and_resume(V_FULL); }
END_TEST
START_TEST(test_resume_cls) { stop_and_resume(V_CLS); }
END_TEST

/* checkpoint_every 4: the file of step 8, copied aside before the run went on (as a kill at step 9
 * would leave it), resumed with the rows past step 8 dropped: the uninterrupted run again. */
START_TEST(test_resume_periodic) {
    char path[512], saved[512];
    tu_path(path, sizeof path, "periodic.ckpt");
    tu_path(saved, sizeof saved, "periodic.saved");
    Outcome straight, killed, resumed;
    attempt(V_ADALORA, 4, NULL, "k", 0, 0, NULL, 0, NULL, &straight);
    attempt(V_ADALORA, 4, path, "run-2", 4, 11, NULL, 9, saved, &killed);
    ck_assert_int_eq(killed.st, LL_ERR_INTERRUPTED);
    ck_assert_int_eq(killed.written, 3); /* steps 4, 8 and the stop at 11 */
    ck_assert(rename(saved, path) == 0);
    attempt(V_ADALORA, 4, path, "run-2", 4, 0, &killed.rows, 0, NULL, &resumed);
    ck_assert_int_eq(resumed.resumed_step, 8);
    ck_assert_int_eq(resumed.written, 2); /* 12 and 16; never after the last step */
    same_run(&resumed, &straight, "adalora resumed from the periodic checkpoint of step 8");
    outcome_free(&straight), outcome_free(&killed), outcome_free(&resumed);
}
END_TEST

/* A checkpoint that does not fit is refused by name with the reason, the run starts from step 0
 * and ends as the uninterrupted run. */
static void refused(const char *path, const char *tag, int r, const char *reason) {
    Outcome straight, again;
    attempt(V_LORA, r, NULL, "k", 0, 0, NULL, 0, NULL, &straight);
    attempt(V_LORA, r, path, tag, 0, 0, NULL, 0, NULL, &again);
    ck_assert_int_eq(again.resumed_step, 0);
    ck_assert_msg(strstr(again.log, "checkpoint refused, so the run restarts from step 0") && strstr(again.log, path) &&
                      strstr(again.log, reason),
                  "expected a refusal naming %s and '%s'; log: %s", path, reason, again.log);
    same_run(&again, &straight, reason);
    outcome_free(&straight), outcome_free(&again);
}

START_TEST(test_refused) {
    char path[512];
    tu_path(path, sizeof path, "bad.ckpt");
    Outcome stopped;
    attempt(V_LORA, 4, path, "run-3", 0, RS_STOP, NULL, 0, NULL, &stopped);
    ck_assert_int_eq(stopped.written, 1);
    size_t len;
    char *good = tu_slurp(path, &len);
    refused(path, "run-4", 4, "belongs to run 'run-3', not to 'run-4'");
    refused(path, "run-3", 2, "section 'params' holds"); /* rank 2: another size */
    /* truncated by one byte, and by all but the header */
    ck_assert(truncate(path, (off_t)len - 1) == 0);
    refused(path, "run-3", 4, "is truncated");
    ck_assert(truncate(path, 100) == 0);
    refused(path, "run-3", 4, "truncated");
    /* one flipped byte inside the weights */
    good[len / 2] ^= 0x10;
    FILE *f = fopen(path, "wb");
    ck_assert(f && fwrite(good, 1, len, f) == len && fclose(f) == 0);
    refused(path, "run-3", 4, "checksum does not match");
    tu_write_text(path, "not a checkpoint at all, but a text long enough to hold the header of ninety-six bytes that a checkpoint has");
    refused(path, "run-3", 4, "is not a loralab checkpoint");
    free(good);
    outcome_free(&stopped);
}
END_TEST

/* train_state_load refuses before writing anything into the caller's buffers. */
START_TEST(test_load_untouched) {
    char path[512];
    tu_path(path, sizeof path, "s.ckpt");
    LLError err;
    float a[5] = {1, 2, 3, 4, 5}, b[3] = {6, 7, 8};
    TrainStateSection secs[2] = {{"a", a, sizeof a}, {"b", b, sizeof b}};
    CK_OK(train_state_save(path, "tag", 3, 10, secs, 2, &err));
    TrainStateInfo info;
    CK_OK(train_state_peek(path, &info, &err));
    ck_assert_str_eq(info.tag, "tag");
    ck_assert_int_eq(info.step, 3);
    ck_assert_int_eq(info.steps, 10);
    float a2[5] = {0}, b2[4] = {0};
    TrainStateSection in[2] = {{"a", a2, sizeof a2}, {"b", b2, sizeof b2}};
    int step = -1;
    ck_assert_int_eq(train_state_load(path, "tag", 10, in, 2, &step, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "section 'b' holds 12 bytes, this run's holds 16"), "%s", err.msg);
    for (int i = 0; i < 5; i++) ck_assert(a2[i] == 0.0f);
    ck_assert_int_eq(train_state_load(path, "tag", 11, in, 2, &step, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "step 3 of 10, this run trains 11 steps"), "%s", err.msg);
    in[1].bytes = sizeof b;
    CK_OK(train_state_load(path, "tag", 10, in, 2, &step, &err));
    ck_assert_int_eq(step, 3);
    ck_assert(memcmp(a, a2, sizeof a) == 0 && memcmp(b, b2, sizeof b) == 0);
    ck_assert_int_eq(train_state_load("/nonexistent/x.ckpt", "tag", 10, in, 2, &step, &err), LL_ERR_IO);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp"), 0); /* no temporary file left behind */
    /* a stale temporary file (a write killed half-way) goes with the checkpoint */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    tu_write_text(tmp, "half a checkpoint");
    train_state_remove(path);
    ck_assert_int_eq(tu_count_entries(tu_dir, "s.ckpt"), 0);
}
END_TEST

Suite *train_state_suite(void) {
    Suite *s = suite_create("train_state");
    TCase *core = tu_tcase(s, "core", 1, 120);
    tcase_add_test(core, test_load_untouched);
    tcase_add_test(core, test_resume_lora);
    tcase_add_test(core, test_resume_adalora);
    tcase_add_test(core, test_resume_vera);
    tcase_add_test(core, test_resume_dora);
    tcase_add_test(core, test_resume_full);
    tcase_add_test(core, test_resume_cls);
    tcase_add_test(core, test_resume_periodic);
    TCase *limits = tu_tcase(s, "limits", 1, 120);
    tcase_add_test(limits, test_refused);
    return s;
}
