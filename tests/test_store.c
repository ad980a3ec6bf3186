/* Tests of the results store (experiments/store.c): schema creation and migration (a version 1
 * file written as the first loralab wrote it), refusal of newer and foreign files, the run state
 * machine, the kept-weights and test columns, idempotent and NaN-safe metrics, batching, lock
 * contention between processes, concurrent writers, resume after an interrupt, and merging.
 *
 * Every database lives in one mkdtemp folder per TCase (an unchecked fixture, so it is removed in
 * the runner process even when a test fails). Tests that fork never carry an open Store across
 * fork(): SQLite's per-process lock bookkeeping would be wrong in the child, so children open their
 * own connection and parents (re)open theirs only after forking.
 */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "store"
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buildinfo.h"
#include "core.h"
#include "experiments/store.h"
#include "util.h"

static RunInfo make_info(const char *key, int r, int64_t seed) {
    static char cfg[16][128];
    static int next = 0;
    char *c = cfg[next++ % 16];
    snprintf(c, 128, "{\"key\":\"%s\",\"r\":%d,\"seed\":%lld}", key, r, (long long)seed);
    RunInfo in = {key, c, "lora", "q_proj,v_proj", r, 2.0 * r, 1e-3, seed};
    return in;
}

static RunResult done_result(double eval_loss) {
    RunResult res = {"done", 1234.5, 6.25, 1000, 50000, 1 << 20, 2.5, eval_loss, exp(eval_loss),
                     NAN, NAN, NULL, NULL};
    return res;
}

static int count_metrics(Store *s, int64_t run, const char *split, const char *name) {
    int *steps = NULL, n = -1;
    double *vals = NULL;
    LLError err = {0};
    LLStatus st = store_get_metrics(s, run, split, name, &steps, &vals, &n, &err);
    ck_assert_msg(st == LL_OK, "get_metrics: %s", err.msg);
    free(steps);
    free(vals);
    return n;
}

static DiagnosticRow diag_row(int layer, const char *module, const char *name, double value) {
    DiagnosticRow r;
    memset(&r, 0, sizeof r);
    r.layer = layer;
    snprintf(r.module, sizeof r.module, "%s", module);
    snprintf(r.name, sizeof r.name, "%s", name);
    r.value = value;
    return r;
}

static void status_of(Store *s, int64_t sweep, const char *key, char status[16], int64_t *id) {
    LLError err = {0};
    CK_OK(store_run_status(s, sweep, key, status, id, &err));
}

/* Overwrites a 4-byte big-endian field of the SQLite header (user_version at 60, application_id
 * at 68) of a closed database. */
static void patch_header(const char *path, long offset, uint32_t value) {
    unsigned char b[4] = {(unsigned char)(value >> 24), (unsigned char)(value >> 16),
                          (unsigned char)(value >> 8), (unsigned char)value};
    int fd = open(path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, b, 4, offset), 4);
    close(fd);
}

/* A writable store at path whose sweep `sweep` holds the pending run `in`; their ids in *sw and
 * *run. Asserts every step. */
static Store *open_with_run(const char *path, const char *sweep, const RunInfo *in, int64_t *sw, int64_t *run) {
    LLError err = {0};
    Store *s = tu_store_open(path, 0);
    CK_OK(store_upsert_sweep(s, sweep, NULL, NULL, sw, &err));
    CK_OK(store_add_run(s, *sw, in, run, &err));
    return s;
}

/* ---- core ----------------------------------------------------------------------------------- */

START_TEST(t_create_reopen) {
    char p[256];
    LLError err = {0};
    /* The parent folder does not exist yet: a writable open creates it. */
    Store *s = tu_store_open(tu_path(p, sizeof p, "sub/dir/create.db"), 0);
    ck_assert_int_eq(store_schema_version(s), STORE_SCHEMA_VERSION);
    ck_assert_str_eq(store_path(s), p);
    int64_t sw = 0, sw2 = 0, run = 0, run2 = 0;
    CK_OK(store_upsert_sweep(s, "grid", "configs/experiments/grid.yaml", "a: 1\n", &sw, &err));
    ck_assert_int_gt(sw, 0);
    RunInfo in = make_info("k1", 8, 0);
    CK_OK(store_add_run(s, sw, &in, &run, &err));
    ck_assert_int_gt(run, 0);
    store_close(s);

    /* Reopening is a no-op for the schema and keeps every row; adding again is idempotent. */
    CK_OK(store_open(p, 0, &s, &err));
    ck_assert_int_eq(store_schema_version(s), STORE_SCHEMA_VERSION);
    CK_OK(store_upsert_sweep(s, "grid", "configs/experiments/grid.yaml", "a: 2\n", &sw2, &err));
    ck_assert_int_eq(sw2, sw);
    CK_OK(store_add_run(s, sw, &in, &run2, &err));
    ck_assert_int_eq(run2, run);
    char st[16];
    int64_t id = 0;
    status_of(s, sw, "k1", st, &id);
    ck_assert_str_eq(st, "pending");
    ck_assert_int_eq(id, run);
    status_of(s, sw, "absent", st, &id);
    ck_assert_str_eq(st, "");
    ck_assert_int_eq(id, 0);
    RunRow *rows = NULL;
    int n = 0;
    CK_OK(store_list_runs(s, NULL, &rows, &n, &err));
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(rows[0].sweep, "grid");
    ck_assert_str_eq(rows[0].key, "k1");
    ck_assert_str_eq(rows[0].config_json, in.config_json);
    ck_assert_str_eq(rows[0].method, "lora");
    ck_assert_str_eq(rows[0].targets, "q_proj,v_proj");
    ck_assert_int_eq(rows[0].r, 8);
    ck_assert(rows[0].alpha == 16.0 && rows[0].lr == 1e-3);
    ck_assert_int_eq(rows[0].attempt, 0);
    ck_assert(isnan(rows[0].eval_loss) && rows[0].trainable == -1 && rows[0].host == NULL);
    store_free_runs(rows, n);
    store_close(s);

    /* A read-only open sees the same and refuses writes. */
    CK_OK(store_open(p, 1, &s, &err));
    CK_OK(store_list_runs(s, "grid", &rows, &n, &err));
    ck_assert_int_eq(n, 1);
    store_free_runs(rows, n);
    CK_OK(store_list_runs(s, "other", &rows, &n, &err));
    ck_assert_int_eq(n, 0);
    store_free_runs(rows, n);
    ck_assert_int_eq(store_upsert_sweep(s, "x", NULL, NULL, &sw2, &err), LL_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(err.msg, "read-only"));
    ck_assert_int_eq(store_add_metric(s, run, 0, "train", "loss", 1.0, &err), LL_ERR_STATE);
    store_close(s);
}
END_TEST

START_TEST(t_state_machine) {
    char p[256];
    LLError err = {0};
    int64_t sw, run;
    RunInfo in = make_info("a", 4, 1);
    Store *s = open_with_run(tu_path(p, sizeof p, "state.db"), "sm", &in, &sw, &run);
    /* Finishing an unclaimed run is a state error. */
    RunResult res = done_result(1.75);
    ck_assert_int_eq(store_finish_run(s, run, &res, &err), LL_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(err.msg, "'pending'"));

    int claimed = -1;
    CK_OK(store_claim_run(s, run, &claimed, &err));
    ck_assert_int_eq(claimed, 1);
    char st[16];
    status_of(s, sw, "a", st, NULL);
    ck_assert_str_eq(st, "running");
    CK_OK(store_add_metric(s, run, 10, "train", "loss", 2.0, &err));
    res.adapter_dir = "results/sm/a/adapter";
    CK_OK(store_finish_run(s, run, &res, &err));
    status_of(s, sw, "a", st, NULL);
    ck_assert_str_eq(st, "done");
    /* done is final. */
    CK_OK(store_claim_run(s, run, &claimed, &err));
    ck_assert_int_eq(claimed, 0);
    ck_assert_int_eq(store_finish_run(s, run, &res, &err), LL_ERR_STATE);

    RunRow *rows = NULL;
    int n = 0;
    CK_OK(store_list_runs(s, "sm", &rows, &n, &err));
    ck_assert_int_eq(n, 1);
    RunRow *r = &rows[0];
    ck_assert_str_eq(r->status, "done");
    ck_assert_int_eq(r->attempt, 1);
    ck_assert_int_eq(r->pid, (int64_t)getpid());
    ck_assert_ptr_nonnull(r->host);
    ck_assert(r->started > 1.6e9 && r->ended >= r->started);
    ck_assert(r->tokens_per_s == 1234.5 && r->wall_s == 6.25);
    ck_assert_int_eq(r->trainable, 1000);
    ck_assert_int_eq(r->total, 50000);
    ck_assert_int_eq(r->peak_mem, 1 << 20);
    ck_assert(r->train_loss == 2.5 && r->eval_loss == 1.75 && r->eval_ppl == exp(1.75));
    ck_assert(isnan(r->accuracy) && isnan(r->macro_f1));
    ck_assert_ptr_null(r->error);
    ck_assert_str_eq(r->adapter_dir, "results/sm/a/adapter");
    store_free_runs(rows, n);
    ck_assert_int_eq(count_metrics(s, run, "train", "loss"), 1);
    { /* the claim recorded the build that ran it (schema 5) */
        sqlite3 *db;
        sqlite3_stmt *q;
        ck_assert_int_eq(sqlite3_open(p, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT build FROM runs WHERE id = ?1", -1, &q, NULL), SQLITE_OK);
        sqlite3_bind_int64(q, 1, run);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), build_info());
        sqlite3_finalize(q);
        sqlite3_close(db);
    }
    ArtifactRow *arts = NULL;
    CK_OK(store_list_artifacts(s, run, &arts, &n, &err));
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(arts[0].kind, "adapter");
    ck_assert_str_eq(arts[0].path, "results/sm/a/adapter");
    store_free_artifacts(arts, n);

    /* failed -> claimable again, with attempt 2; the error text is kept until then. */
    RunInfo in2 = make_info("b", 4, 2);
    int64_t run2;
    CK_OK(store_add_run(s, sw, &in2, &run2, &err));
    CK_OK(store_claim_run(s, run2, &claimed, &err));
    RunResult bad = done_result(NAN);
    bad.status = "failed";
    bad.error = "out of memory for batch 8";
    CK_OK(store_finish_run(s, run2, &bad, &err));
    CK_OK(store_list_runs(s, "sm", &rows, &n, &err));
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(rows[1].status, "failed");
    ck_assert_str_eq(rows[1].error, "out of memory for batch 8");
    store_free_runs(rows, n);
    CK_OK(store_claim_run(s, run2, &claimed, &err));
    ck_assert_int_eq(claimed, 1);
    CK_OK(store_list_runs(s, "sm", &rows, &n, &err));
    ck_assert_str_eq(rows[1].status, "running");
    ck_assert_int_eq(rows[1].attempt, 2);
    ck_assert_ptr_null(rows[1].error);
    store_free_runs(rows, n);

    /* AdaLoRA ranks: upsert per (layer, module), listed in order. */
    CK_OK(store_add_rank(s, run2, 1, "v_proj", 3, 8, &err));
    CK_OK(store_add_rank(s, run2, 0, "q_proj", 5, 8, &err));
    CK_OK(store_add_rank(s, run2, 1, "v_proj", 2, 8, &err));
    RankRow *ranks = NULL;
    CK_OK(store_list_ranks(s, run2, &ranks, &n, &err));
    ck_assert_int_eq(n, 2);
    ck_assert(ranks[0].layer == 0 && strcmp(ranks[0].module, "q_proj") == 0 && ranks[0].rank == 5);
    ck_assert(ranks[1].layer == 1 && ranks[1].rank == 2 && ranks[1].init_rank == 8);
    free(ranks);
    store_close(s);
}
END_TEST

/* A claim for a run resuming at step k keeps its metric rows of steps <= k (committed and
 * buffered), deletes the later ones and every rank; store_trim_metrics cuts again, to nothing at -1. */
START_TEST(t_claim_resuming) {
    char p[256];
    LLError err = {0};
    int64_t sw, run;
    RunInfo in = make_info("a", 4, 1);
    Store *s = open_with_run(tu_path(p, sizeof p, "resume.db"), "rs", &in, &sw, &run);
    int claimed = -1;
    CK_OK(store_claim_run(s, run, &claimed, &err));
    for (int step = 0; step <= 50; step += 10) CK_OK(store_add_metric(s, run, step, "train", "loss", step, &err));
    CK_OK(store_add_rank(s, run, 0, "q_proj", 2, 4, &err));
    RunResult res = done_result(1.0);
    res.status = "interrupted";
    CK_OK(store_finish_run(s, run, &res, &err));
    CK_OK(store_claim_run_resuming(s, run, 30, &claimed, &err));
    ck_assert_int_eq(claimed, 1);
    int *steps = NULL, n = 0;
    double *vals = NULL;
    CK_OK(store_get_metrics(s, run, "train", "loss", &steps, &vals, &n, &err));
    ck_assert_int_eq(n, 4); /* 0, 10, 20, 30 */
    ck_assert(steps[3] == 30 && vals[3] == 30.0);
    free(steps), free(vals);
    RankRow *ranks = NULL;
    CK_OK(store_list_ranks(s, run, &ranks, &n, &err));
    ck_assert_int_eq(n, 0);
    free(ranks);
    CK_OK(store_add_metric(s, run, 40, "train", "loss", 40, &err)); /* buffered */
    CK_OK(store_trim_metrics(s, run, 20, &err));
    CK_OK(store_flush(s, &err));
    ck_assert_int_eq(count_metrics(s, run, "train", "loss"), 3);
    CK_OK(store_trim_metrics(s, run, -1, &err));
    ck_assert_int_eq(count_metrics(s, run, "train", "loss"), 0);
    store_close(s);
}
END_TEST

START_TEST(t_metric_idempotent) {
    char p[256];
    LLError err = {0};
    int64_t sw, run;
    RunInfo in = make_info("m1", 8, 0);
    Store *s = open_with_run(tu_path(p, sizeof p, "idem.db"), "m", &in, &sw, &run);
    for (int rep = 0; rep < 3; rep++) {
        for (int step = 0; step < 5; step++)
            CK_OK(store_add_metric(s, run, step * 10, "train", "loss", 3.0 - step, &err));
        CK_OK(store_flush(s, &err));
    }
    /* The same key twice in one batch and across batches: last value wins, one row. */
    CK_OK(store_add_metric(s, run, 20, "train", "loss", 9.0, &err));
    CK_OK(store_add_metric(s, run, 20, "train", "loss", 0.5, &err));
    CK_OK(store_add_metric(s, run, 20, "eval", "loss", 0.75, &err));
    CK_OK(store_flush(s, &err));
    int *steps = NULL, n = 0;
    double *v = NULL;
    CK_OK(store_get_metrics(s, run, "train", "loss", &steps, &v, &n, &err));
    ck_assert_int_eq(n, 5);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(steps[i], i * 10);
    ck_assert(v[0] == 3.0 && v[1] == 2.0 && v[2] == 0.5 && v[3] == 0.0 && v[4] == -1.0);
    free(steps);
    free(v);
    ck_assert_int_eq(count_metrics(s, run, "eval", "loss"), 1);
    ck_assert_int_eq(count_metrics(s, run, "eval", "accuracy"), 0);
    store_close(s);
}
END_TEST

START_TEST(t_nan_roundtrip) {
    char p[256];
    LLError err = {0};
    int64_t sw, run;
    RunInfo in = make_info("hi-lr", 8, 0);
    in.lr = 10.0;
    Store *s = open_with_run(tu_path(p, sizeof p, "nan.db"), "n", &in, &sw, &run);
    int claimed;
    CK_OK(store_claim_run(s, run, &claimed, &err));
    const double vals[] = {2.25, 0.1, INFINITY, -INFINITY, NAN, -0.0, 1e-300};
    const int nv = (int)(sizeof vals / sizeof vals[0]);
    for (int i = 0; i < nv; i++) CK_OK(store_add_metric(s, run, i, "train", "loss", vals[i], &err));
    RunResult res = done_result(NAN);
    res.status = "diverged";
    res.train_loss = NAN;
    res.eval_ppl = INFINITY;
    res.error = "loss became NaN at step 4";
    CK_OK(store_finish_run(s, run, &res, &err));
    store_close(s);

    /* Read back through a fresh read-only connection: nothing came from a cache. */
    CK_OK(store_open(p, 1, &s, &err));
    int *steps = NULL, n = 0;
    double *v = NULL;
    CK_OK(store_get_metrics(s, run, "train", "loss", &steps, &v, &n, &err));
    ck_assert_int_eq(n, nv);
    for (int i = 0; i < nv; i++) {
        ck_assert_int_eq(steps[i], i);
        if (isnan(vals[i])) ck_assert_msg(isnan(v[i]), "step %d: NaN came back as %g", i, v[i]);
        else if (vals[i] == 0.0) ck_assert(v[i] == 0.0); /* SQLite stores -0.0 as integer 0 */
        else ck_assert_msg(memcmp(&v[i], &vals[i], sizeof(double)) == 0,
                           "step %d: %.17g came back as %.17g", i, vals[i], v[i]);
    }
    free(steps);
    free(v);
    RunRow *rows = NULL;
    CK_OK(store_list_runs(s, "n", &rows, &n, &err));
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(rows[0].status, "diverged");
    ck_assert(isnan(rows[0].train_loss) && isnan(rows[0].eval_loss));
    ck_assert(isinf(rows[0].eval_ppl) && rows[0].eval_ppl > 0);
    ck_assert_str_eq(rows[0].error, "loss became NaN at step 4");
    ck_assert(rows[0].lr == 10.0);
    store_free_runs(rows, n);
    store_close(s);
}
END_TEST

START_TEST(t_batched_flush) {
    char p[256];
    LLError err = {0};
    Store *w = tu_store_open(tu_path(p, sizeof p, "batch.db"), 0);
    Store *r = tu_store_open(p, 1);
    int64_t sw, run;
    CK_OK(store_upsert_sweep(w, "b", NULL, NULL, &sw, &err));
    RunInfo in = make_info("b1", 8, 0);
    CK_OK(store_add_run(w, sw, &in, &run, &err));
    int claimed;
    CK_OK(store_claim_run(w, run, &claimed, &err));
    /* Below one batch nothing is committed yet (the reader is another connection). */
    for (int i = 0; i < STORE_METRIC_BATCH - 1; i++)
        CK_OK(store_add_metric(w, run, i, "train", "loss", 1.0 / (i + 1), &err));
    ck_assert_int_eq(count_metrics(r, run, "train", "loss"), 0);
    /* The 64th row commits the batch. */
    CK_OK(store_add_metric(w, run, STORE_METRIC_BATCH - 1, "train", "loss", 0.0, &err));
    ck_assert_int_eq(count_metrics(r, run, "train", "loss"), STORE_METRIC_BATCH);
    for (int i = 0; i < 6; i++) CK_OK(store_add_metric(w, run, 100 + i, "eval", "loss", 0.5, &err));
    ck_assert_int_eq(count_metrics(r, run, "eval", "loss"), 0);
    /* finish_run writes the rest in its own transaction. */
    RunResult res = done_result(0.5);
    CK_OK(store_finish_run(w, run, &res, &err));
    ck_assert_int_eq(count_metrics(r, run, "eval", "loss"), 6);
    ck_assert_int_eq(count_metrics(r, run, "train", "loss"), STORE_METRIC_BATCH);
    /* store_close flushes what is left. */
    int64_t run2;
    RunInfo in2 = make_info("b2", 8, 1);
    CK_OK(store_add_run(w, sw, &in2, &run2, &err));
    CK_OK(store_add_metric(w, run2, 0, "train", "loss", 4.0, &err));
    ck_assert_int_eq(count_metrics(r, run2, "train", "loss"), 0);
    store_close(w);
    ck_assert_int_eq(count_metrics(r, run2, "train", "loss"), 1);
    store_close(r);
}
END_TEST

START_TEST(t_resume_after_interrupt) {
    char p[256];
    LLError err = {0};
    int64_t sw, run, other;
    RunInfo in = make_info("r1", 8, 0), in2 = make_info("r2", 8, 1);
    Store *s = open_with_run(tu_path(p, sizeof p, "resume.db"), "r", &in, &sw, &run);
    CK_OK(store_add_run(s, sw, &in2, &other, &err));
    int claimed;
    CK_OK(store_claim_run(s, run, &claimed, &err));
    CK_OK(store_claim_run(s, other, &claimed, &err));
    for (int i = 0; i < 10; i++) CK_OK(store_add_metric(s, run, i, "train", "loss", 5.0 - i, &err));
    for (int i = 0; i < 3; i++) CK_OK(store_add_metric(s, other, i, "train", "loss", 1.0, &err));
    CK_OK(store_flush(s, &err));
    CK_OK(store_add_metric(s, run, 10, "train", "loss", -5.0, &err)); /* still buffered */
    CK_OK(store_add_rank(s, run, 0, "q_proj", 4, 8, &err));
    CK_OK(store_add_artifact(s, run, "figure", "results/figs/r1.pdf", &err));

    /* Ctrl-C: this process's running rows become interrupted. */
    int marked = -1;
    CK_OK(store_mark_running_interrupted(s, sw, &marked, &err));
    ck_assert_int_eq(marked, 2);
    char st[16];
    status_of(s, sw, "r1", st, NULL);
    ck_assert_str_eq(st, "interrupted");
    CK_OK(store_mark_running_interrupted(s, sw, &marked, &err));
    ck_assert_int_eq(marked, 0);

    /* Resume: the new attempt starts with no rows of the old one, the other run keeps its rows. */
    CK_OK(store_claim_run(s, run, &claimed, &err));
    ck_assert_int_eq(claimed, 1);
    ck_assert_int_eq(count_metrics(s, run, "train", "loss"), 0);
    RankRow *ranks = NULL;
    int n = -1;
    CK_OK(store_list_ranks(s, run, &ranks, &n, &err));
    ck_assert_int_eq(n, 0);
    free(ranks);
    ArtifactRow *arts = NULL;
    CK_OK(store_list_artifacts(s, run, &arts, &n, &err));
    ck_assert_int_eq(n, 0);
    store_free_artifacts(arts, n);
    ck_assert_int_eq(count_metrics(s, other, "train", "loss"), 3);
    for (int i = 0; i < 4; i++) CK_OK(store_add_metric(s, run, i, "train", "loss", 7.0, &err));
    RunResult res = done_result(1.0);
    CK_OK(store_finish_run(s, run, &res, &err));
    int *steps = NULL;
    double *v = NULL;
    CK_OK(store_get_metrics(s, run, "train", "loss", &steps, &v, &n, &err));
    ck_assert_int_eq(n, 4);
    for (int i = 0; i < n; i++) ck_assert(steps[i] == i && v[i] == 7.0);
    free(steps);
    free(v);
    RunRow *rows = NULL;
    CK_OK(store_list_runs(s, "r", &rows, &n, &err));
    ck_assert_int_eq(rows[0].attempt, 2);
    ck_assert_str_eq(rows[0].status, "done");
    ck_assert_str_eq(rows[1].status, "interrupted");
    ck_assert_ptr_nonnull(strstr(rows[1].error, "interrupted"));
    store_free_runs(rows, n);
    store_close(s);
}
END_TEST

/* A run owned by a live process of this host is neither claimed nor marked; once it is dead, it
 * is marked interrupted and can be claimed. */
START_TEST(t_live_owner) {
    char p[256];
    LLError err = {0};
    int64_t sw, run;
    RunInfo in = make_info("o1", 8, 0);
    Store *s = open_with_run(tu_path(p, sizeof p, "owner.db"), "o", &in, &sw, &run);
    store_close(s);

    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        Store *c = NULL;
        LLError ce = {0};
        int claimed = 0;
        char ok = 'n';
        if (store_open(p, 0, &c, &ce) == LL_OK && store_claim_run(c, run, &claimed, &ce) == LL_OK &&
            claimed)
            ok = 'y';
        store_close(c);
        if (write(ready[1], &ok, 1) != 1) _exit(1);
        pause(); /* owned until killed */
        _exit(0);
    }
    close(ready[1]);
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    ck_assert_int_eq(ok, 'y');

    CK_OK(store_open(p, 0, &s, &err));
    int claimed = -1, marked = -1;
    CK_OK(store_claim_run(s, run, &claimed, &err));
    ck_assert_int_eq(claimed, 0);
    CK_OK(store_mark_running_interrupted(s, 0, &marked, &err));
    ck_assert_int_eq(marked, 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    CK_OK(store_mark_running_interrupted(s, 0, &marked, &err));
    ck_assert_int_eq(marked, 1);
    char st[16];
    status_of(s, sw, "o1", st, NULL);
    ck_assert_str_eq(st, "interrupted");
    CK_OK(store_claim_run(s, run, &claimed, &err));
    ck_assert_int_eq(claimed, 1);
    store_close(s);
}
END_TEST

/* Builds one shard: sweep "s1" with runs given as key=status pairs, metrics (steps 0..k-1 with
 * value base + step), one rank per run, and sweep "s2" when with_s2. */
typedef struct {
    const char *sweep, *key, *status;
    int n_metrics;
    double base;
} ShardRun;

static void build_shard(const char *path, const ShardRun *runs, int n) {
    LLError err = {0};
    Store *s = tu_store_open(path, 0);
    for (int i = 0; i < n; i++) {
        int64_t sw, run;
        CK_OK(store_upsert_sweep(s, runs[i].sweep, NULL, "grid", &sw, &err));
        RunInfo in = make_info(runs[i].key, 8, 0);
        CK_OK(store_add_run(s, sw, &in, &run, &err));
        if (strcmp(runs[i].status, "pending") == 0) continue;
        int claimed;
        CK_OK(store_claim_run(s, run, &claimed, &err));
        for (int k = 0; k < runs[i].n_metrics; k++)
            CK_OK(store_add_metric(s, run, k, "train", "loss", runs[i].base + k, &err));
        CK_OK(store_add_rank(s, run, 0, "q_proj", runs[i].n_metrics, 8, &err));
        CK_OK(store_set_eval_ctx(s, run, "ctx", &err));
        CK_OK(store_add_base_eval(s, run, "brown", "loss", 4.0 + runs[i].base, &err));
        DiagnosticRow dr = diag_row(0, "q_proj", "intruders", runs[i].n_metrics);
        CK_OK(store_add_diagnostics(s, run, &dr, 1, &err));
        if (strcmp(runs[i].status, "running") == 0) {
            CK_OK(store_flush(s, &err));
            continue;
        }
        RunResult res = done_result(runs[i].base);
        res.status = runs[i].status;
        CK_OK(store_finish_run(s, run, &res, &err));
    }
    store_close(s);
}

static const RunRow *find_run(const RunRow *rows, int n, const char *sweep, const char *key) {
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].sweep, sweep) == 0 && strcmp(rows[i].key, key) == 0) return &rows[i];
    return NULL;
}

START_TEST(t_merge) {
    char pa[256], pb[256], po[256];
    tu_path(pa, sizeof pa, "shard_a.db");
    tu_path(pb, sizeof pb, "shard_b.db");
    tu_path(po, sizeof po, "merged.db");
    const ShardRun a[] = {{"s1", "k1", "done", 5, 10.0}, {"s1", "k2", "failed", 3, 20.0},
                          {"s1", "k4", "interrupted", 2, 40.0}};
    const ShardRun b[] = {{"s1", "k2", "done", 4, 30.0}, {"s1", "k3", "pending", 0, 0.0},
                          {"s2", "k1", "done", 2, 50.0}, {"s1", "k4", "failed", 1, 60.0},
                          {"s1", "k1", "failed", 7, 70.0}};
    build_shard(pa, a, 3);
    build_shard(pb, b, 5);

    LLError err = {0};
    Store *o = tu_store_open(po, 0);
    StoreMergeCounts c;
    CK_OK(store_merge(o, pa, &c, &err));
    ck_assert(c.added == 3 && c.upgraded == 0 && c.unchanged == 0);
    /* b adds k3 and s2/k1, upgrades k2 (done > failed) and k4 (failed > interrupted), and leaves
     * k1 (done stays done). */
    CK_OK(store_merge(o, pb, &c, &err));
    ck_assert_msg(c.added == 2 && c.upgraded == 2 && c.unchanged == 1, "%d %d %d", c.added, c.upgraded, c.unchanged);
    CK_OK(store_merge(o, pa, &c, &err));
    ck_assert(c.added == 0 && c.upgraded == 0 && c.unchanged == 3);
    CK_OK(store_merge(o, pb, &c, &err));
    ck_assert(c.added == 0 && c.upgraded == 0 && c.unchanged == 5);

    RunRow *rows = NULL;
    int n = 0;
    CK_OK(store_list_runs(o, NULL, &rows, &n, &err));
    ck_assert_int_eq(n, 5);
    struct {
        const char *sweep, *key, *status;
        int n_metrics;
        double base;
    } want[] = {{"s1", "k1", "done", 5, 10.0}, {"s1", "k2", "done", 4, 30.0},
                {"s1", "k3", "pending", 0, 0.0}, {"s1", "k4", "failed", 1, 60.0},
                {"s2", "k1", "done", 2, 50.0}};
    int total = 0;
    for (int i = 0; i < 5; i++) {
        const RunRow *r = find_run(rows, n, want[i].sweep, want[i].key);
        ck_assert_msg(r != NULL, "%s/%s missing", want[i].sweep, want[i].key);
        ck_assert_str_eq(r->status, want[i].status);
        int *steps = NULL, m = 0;
        double *v = NULL;
        CK_OK(store_get_metrics(o, r->id, "train", "loss", &steps, &v, &m, &err));
        ck_assert_int_eq(m, want[i].n_metrics);
        for (int k = 0; k < m; k++) ck_assert(steps[k] == k && v[k] == want[i].base + k);
        free(steps);
        free(v);
        total += m;
        RankRow *ranks = NULL;
        CK_OK(store_list_ranks(o, r->id, &ranks, &m, &err));
        ck_assert_int_eq(m, want[i].n_metrics > 0 ? 1 : 0);
        if (m) ck_assert_int_eq(ranks[0].rank, want[i].n_metrics);
        free(ranks);
        DiagnosticRow *dg = NULL;
        CK_OK(store_list_diagnostics(o, r->id, &dg, &m, &err));
        ck_assert_int_eq(m, want[i].n_metrics > 0 ? 1 : 0);
        if (m) ck_assert(dg[0].value == want[i].n_metrics);
        free(dg);
        if (m) ck_assert_str_eq(r->eval_ctx, "ctx");
        if (strcmp(want[i].status, "done") == 0) ck_assert(r->eval_loss == want[i].base);
    }
    ck_assert_int_eq(total, 12);
    store_free_runs(rows, n);
    /* the base's numbers: one row per sweep, the first shard's (s1: a's last write, 4 + 40) */
    BaseEvalRow *be;
    CK_OK(store_list_base_evals(o, NULL, &be, &n, &err));
    ck_assert_int_eq(n, 2);
    ck_assert(strcmp(be[0].sweep, "s1") == 0 && be[0].value == 44.0);
    ck_assert(strcmp(be[1].sweep, "s2") == 0 && be[1].value == 54.0);
    store_free_base_evals(be, n);

    /* A database cannot be merged into itself. */
    ck_assert_int_eq(store_merge(o, po, NULL, &err), LL_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "into itself"));
    store_close(o);
}
END_TEST

/* ---- the kept weights and their test metrics (schema version 2) ---------------------------- */

static const RunRow *row_by_id(const RunRow *rows, int n, int64_t id) {
    for (int i = 0; i < n; i++)
        if (rows[i].id == id) return &rows[i];
    ck_abort_msg("no run %lld", (long long)id);
    return NULL;
}

START_TEST(t_kept_columns) {
    char p[256];
    LLError err = {0};
    int64_t sw, r1, r2, r3;
    RunInfo i1 = make_info("k1", 8, 0), i2 = make_info("k2", 8, 1), i3 = make_info("k3", 8, 2);
    Store *s = open_with_run(tu_path(p, sizeof p, "kept.db"), "kept", &i1, &sw, &r1);
    CK_OK(store_add_run(s, sw, &i2, &r2, &err));
    CK_OK(store_add_run(s, sw, &i3, &r3, &err));
    int claimed;
    CK_OK(store_claim_run(s, r1, &claimed, &err));
    CK_OK(store_claim_run(s, r2, &claimed, &err));
    CK_OK(store_claim_run(s, r3, &claimed, &err));
    RunResult res = done_result(0.7);
    RunKept cls = {"accuracy", 40, 0.875, 1, 40, 1, 0.31, 0.8125, 0.79, NULL};
    CK_OK(store_finish_run_kept(s, r1, &res, &cls, &err));
    /* language modelling, no test split: accuracy NaN -> NULL, the note says why */
    RunKept lm = {"loss", 0, 2.5, 1, 0, 0, 0.0, 0.0, 0.0, "no test split: 'd/test.txt' does not exist"};
    RunResult failed = done_result(2.5);
    failed.status = "failed"; /* so that it can be claimed again below */
    CK_OK(store_finish_run_kept(s, r2, &failed, &lm, &err));
    CK_OK(store_finish_run(s, r3, &res, &err)); /* nothing known: NULLs */
    RunRow *rows;
    int n;
    CK_OK(store_list_runs(s, "kept", &rows, &n, &err));
    ck_assert_int_eq(n, 3);
    const RunRow *a = row_by_id(rows, n, r1), *b = row_by_id(rows, n, r2), *c = row_by_id(rows, n, r3);
    ck_assert(a->best_step == 40 && a->best_metric == 0.875 && a->kept_step == 40);
    ck_assert_str_eq(a->best_metric_name, "accuracy");
    ck_assert(a->test_loss == 0.31 && a->test_accuracy == 0.8125 && a->test_macro_f1 == 0.79);
    ck_assert_ptr_null(a->test_note);
    ck_assert(b->best_step == 0 && b->best_metric == 2.5 && b->kept_step == 0);
    ck_assert_str_eq(b->best_metric_name, "loss");
    ck_assert(isnan(b->test_loss) && isnan(b->test_accuracy) && isnan(b->test_macro_f1));
    ck_assert_str_eq(b->test_note, "no test split: 'd/test.txt' does not exist");
    ck_assert(c->best_step == -1 && isnan(c->best_metric) && c->kept_step == -1 && isnan(c->test_loss));
    ck_assert_ptr_null(c->best_metric_name);
    ck_assert_ptr_null(c->test_note);
    store_free_runs(rows, n);
    /* a new attempt starts without the previous one's numbers */
    CK_OK(store_claim_run(s, r2, &claimed, &err));
    ck_assert_int_eq(claimed, 1);
    CK_OK(store_list_runs(s, "kept", &rows, &n, &err));
    b = row_by_id(rows, n, r2);
    ck_assert(b->best_step == -1 && b->kept_step == -1 && isnan(b->best_metric));
    ck_assert_ptr_null(b->best_metric_name);
    ck_assert_ptr_null(b->test_note);
    store_free_runs(rows, n);
    /* a best metric other than accuracy or loss is refused before anything is written */
    RunKept bad = {"f1", 1, 0.5, 0, 0, 0, 0, 0, 0, NULL};
    ck_assert_int_eq(store_finish_run_kept(s, r2, &res, &bad, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "'f1'") != NULL, "%s", err.msg);
    store_close(s);

    /* merge carries the columns */
    char po[256];
    Store *o = tu_store_open(tu_path(po, sizeof po, "kept_merged.db"), 0);
    StoreMergeCounts mc;
    CK_OK(store_merge(o, p, &mc, &err));
    ck_assert_int_eq(mc.added, 3);
    CK_OK(store_list_runs(o, "kept", &rows, &n, &err));
    a = find_run(rows, n, "kept", "k1");
    ck_assert(a && a->best_step == 40 && a->kept_step == 40 && a->test_accuracy == 0.8125);
    ck_assert_str_eq(a->best_metric_name, "accuracy");
    store_free_runs(rows, n);
    store_close(o);
}
END_TEST

/* ---- eval sets, the base's evaluations and diagnostics (schema version 4) ------------------- */

/* An eval set's curve under its own split; the base's numbers once per (sweep, context), found
 * through a run's context; diagnostics rows; a claim (resume) drops the run's set metrics and
 * diagnostics but keeps the base's numbers; names outside the rule refused. */
START_TEST(t_eval_sets_and_diagnostics) {
    char p[256];
    LLError err = {0};
    Store *s = tu_store_open(tu_path(p, sizeof p, "sets.db"), 0);
    int64_t sw, a, b;
    int claimed, found;
    double v;
    CK_OK(store_upsert_sweep(s, "fg", NULL, NULL, &sw, &err));
    RunInfo ia = make_info("a", 4, 0), ib = make_info("b", 8, 0);
    CK_OK(store_add_run(s, sw, &ia, &a, &err));
    CK_OK(store_add_run(s, sw, &ib, &b, &err));
    CK_OK(store_claim_run(s, a, &claimed, &err));
    /* no context yet: nothing found, and no base row can be written */
    CK_OK(store_run_base_eval(s, a, "brown", "loss", &v, &found, &err));
    ck_assert(!found && isnan(v));
    ck_assert_int_eq(store_add_base_eval(s, a, "brown", "loss", 3.5, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "no evaluation context"), "%s", err.msg);
    CK_OK(store_set_eval_ctx(s, a, "base B seq 32", &err));
    CK_OK(store_add_base_eval(s, a, "brown", "loss", 3.5, &err));
    CK_OK(store_add_base_eval(s, a, "brown", "ppl", NAN, &err));
    CK_OK(store_add_base_eval(s, a, "moby.v2", "loss", 4.25, &err));
    CK_OK(store_run_base_eval(s, a, "brown", "loss", &v, &found, &err));
    ck_assert(found && v == 3.5);
    CK_OK(store_run_base_eval(s, a, "brown", "ppl", &v, &found, &err));
    ck_assert(found && isnan(v));
    /* b: same context sees a's rows; another context does not */
    CK_OK(store_set_eval_ctx(s, b, "base B seq 32", &err));
    CK_OK(store_run_base_eval(s, b, "moby.v2", "loss", &v, &found, &err));
    ck_assert(found && v == 4.25);
    CK_OK(store_set_eval_ctx(s, b, "base B seq 64", &err));
    CK_OK(store_run_base_eval(s, b, "moby.v2", "loss", &v, &found, &err));
    ck_assert(!found);
    for (int step = 0; step <= 20; step += 10) {
        CK_OK(store_add_metric(s, a, step, "eval", "loss", 2.0 - 0.1 * step, &err));
        CK_OK(store_add_metric(s, a, step, "brown", "loss", 3.5 + 0.01 * step, &err));
        CK_OK(store_add_metric(s, a, step, "moby.v2", "loss", 4.25 + 0.02 * step, &err));
    }
    ck_assert_int_eq(count_metrics(s, a, "brown", "loss"), 3);
    ck_assert_int_eq(count_metrics(s, a, "eval", "loss"), 3);
    const char *bad[] = {"", ".hidden", "-x", "a b", "brown/loss", "x'", "0123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!store_split_name_ok(bad[i]), "'%s' accepted", bad[i]);
        ck_assert_int_eq(store_add_metric(s, a, 0, bad[i], "loss", 1.0, &err), LL_ERR_CONFIG);
    }
    ck_assert(store_split_name_ok("eval") && !store_eval_set_name_ok("eval") && !store_eval_set_name_ok("train"));
    ck_assert(store_eval_set_name_ok("Brown_1.valid-2") && store_eval_set_name_ok("0123456789012345678901234567890"));
    ck_assert_int_eq(store_add_base_eval(s, a, "test", "loss", 1.0, &err), LL_ERR_CONFIG);

    DiagnosticRow rows[] = {diag_row(1, "v_proj", "intruders", 2), diag_row(0, "q_proj", "eff_rank", 3.75),
                            diag_row(0, "q_proj", "intruders", 0), diag_row(0, "q_proj", "dw_fro", INFINITY)};
    CK_OK(store_add_diagnostics(s, a, rows, 4, &err));
    CK_OK(store_add_diagnostics(s, a, rows, 2, &err)); /* upsert: no duplicates */
    DiagnosticRow nan_row = diag_row(0, "k_proj", "d_dir", NAN);
    ck_assert_int_eq(store_add_diagnostics(s, a, &nan_row, 1, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "NaN"), "%s", err.msg);
    DiagnosticRow *got;
    int n;
    CK_OK(store_list_diagnostics(s, a, &got, &n, &err));
    ck_assert_int_eq(n, 4);
    ck_assert(got[0].layer == 0 && strcmp(got[0].module, "q_proj") == 0 && strcmp(got[0].name, "dw_fro") == 0 &&
              isinf(got[0].value));
    ck_assert(strcmp(got[1].name, "eff_rank") == 0 && got[1].value == 3.75);
    ck_assert(got[3].layer == 1 && got[3].value == 2);
    free(got);

    char **sets;
    CK_OK(store_list_eval_sets(s, "fg", &sets, &n, &err));
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(sets[0], "brown");
    ck_assert_str_eq(sets[1], "moby.v2");
    store_free_names(sets, n);
    BaseEvalRow *be;
    CK_OK(store_list_base_evals(s, "fg", &be, &n, &err));
    ck_assert_int_eq(n, 3);
    ck_assert(strcmp(be[0].set, "brown") == 0 && strcmp(be[0].name, "loss") == 0 && be[0].value == 3.5);
    ck_assert(isnan(be[1].value) && strcmp(be[2].set, "moby.v2") == 0);
    ck_assert_str_eq(be[0].ctx, "base B seq 32");
    ck_assert_str_eq(be[0].sweep, "fg");
    store_free_base_evals(be, n);

    /* a resumed attempt starts without the killed one's set metrics and diagnostics */
    RunResult res = done_result(1.0);
    res.status = "interrupted";
    CK_OK(store_finish_run(s, a, &res, &err));
    CK_OK(store_claim_run(s, a, &claimed, &err));
    ck_assert(claimed);
    ck_assert_int_eq(count_metrics(s, a, "brown", "loss"), 0);
    CK_OK(store_list_diagnostics(s, a, &got, &n, &err));
    ck_assert_int_eq(n, 0);
    free(got);
    CK_OK(store_run_base_eval(s, a, "brown", "loss", &v, &found, &err));
    ck_assert(found && v == 3.5);
    RunRow *runs;
    CK_OK(store_list_runs(s, "fg", &runs, &n, &err));
    ck_assert_str_eq(row_by_id(runs, n, a)->eval_ctx, "base B seq 32");
    ck_assert_str_eq(row_by_id(runs, n, b)->eval_ctx, "base B seq 64");
    store_free_runs(runs, n);
    store_close(s);
}
END_TEST

/* The first schema, as loralab wrote it before version 2: a file made with it must open, migrate
 * in place, and keep its rows (their new columns NULL). */
static const char V1_SCHEMA[] =
    "CREATE TABLE sweeps (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, config_path TEXT,"
    " config_text TEXT, created REAL NOT NULL, updated REAL NOT NULL) STRICT;"
    "CREATE TABLE runs (id INTEGER PRIMARY KEY,"
    " sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE, key TEXT NOT NULL,"
    " config_json TEXT NOT NULL, method TEXT NOT NULL, r INTEGER, alpha REAL, targets TEXT, lr REAL,"
    " seed INTEGER, status TEXT NOT NULL CHECK (status IN"
    " ('pending','running','done','failed','diverged','interrupted')),"
    " attempt INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, started REAL, ended REAL, host TEXT,"
    " pid INTEGER, trainable_params INTEGER, total_params INTEGER, peak_mem_bytes INTEGER,"
    " tokens_per_s REAL, wall_s REAL, train_loss REAL, eval_loss REAL, eval_ppl REAL, accuracy REAL,"
    " macro_f1 REAL, error TEXT, adapter_dir TEXT, UNIQUE (sweep_id, key)) STRICT;"
    "CREATE INDEX runs_status ON runs(status);"
    "CREATE TABLE metrics (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " split TEXT NOT NULL CHECK (split IN ('train','eval','test')), name TEXT NOT NULL,"
    " step INTEGER NOT NULL CHECK (step >= 0), value REAL, is_nan INTEGER NOT NULL DEFAULT 0,"
    " t REAL NOT NULL, PRIMARY KEY (run_id, split, name, step),"
    " CHECK ((is_nan = 1 AND value IS NULL) OR (is_nan = 0 AND value IS NOT NULL))) STRICT, WITHOUT ROWID;"
    "CREATE TABLE adalora_ranks (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " layer INTEGER NOT NULL, module TEXT NOT NULL, rank INTEGER NOT NULL, init_rank INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, layer, module)) STRICT, WITHOUT ROWID;"
    "CREATE TABLE artifacts (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " kind TEXT NOT NULL CHECK (kind IN ('adapter','model','figure')), path TEXT NOT NULL,"
    " PRIMARY KEY (run_id, kind, path)) STRICT, WITHOUT ROWID;"
    "INSERT INTO sweeps VALUES (1, 'old', NULL, 'a: 1', 1.0, 1.0);"
    "INSERT INTO runs (id, sweep_id, key, config_json, method, r, alpha, targets, lr, seed, status,"
    " attempt, created, eval_loss, adapter_dir) VALUES (1, 1, 'k1', '{}', 'lora', 8, 16.0, 'q_proj',"
    " 0.001, 0, 'done', 1, 1.0, 1.25, 'out/old/k1');"
    "INSERT INTO metrics VALUES (1, 'eval', 'loss', 50, 1.25, 0, 1.0);"
    "PRAGMA application_id = 1282363969; PRAGMA user_version = 1;";

START_TEST(t_migrate_v1) {
    char p[256];
    tu_path(p, sizeof p, "v1.db");
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(p, &db), SQLITE_OK);
    ck_assert_msg(sqlite3_exec(db, V1_SCHEMA, NULL, NULL, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    LLError err = {0};
    Store *s = NULL;
    /* read-only: refused with the way out */
    ck_assert_int_eq(store_open(p, 1, &s, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "schema version 1 and needs migrating to 5"), "%s", err.msg);
    s = tu_store_open(p, 0);
    ck_assert_int_eq(store_schema_version(s), 5);
    RunRow *rows;
    int n;
    CK_OK(store_list_runs(s, "old", &rows, &n, &err));
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(rows[0].status, "done");
    ck_assert(rows[0].eval_loss == 1.25);
    ck_assert_str_eq(rows[0].adapter_dir, "out/old/k1");
    ck_assert(rows[0].best_step == -1 && rows[0].kept_step == -1 && isnan(rows[0].test_loss));
    ck_assert_ptr_null(rows[0].best_metric_name);
    int64_t id = rows[0].id;
    store_free_runs(rows, n);
    ck_assert_int_eq(count_metrics(s, id, "eval", "loss"), 1);
    /* the migrated file takes version-2 rows */
    int64_t sw, run;
    RunInfo in = make_info("k2", 8, 0);
    CK_OK(store_upsert_sweep(s, "old", NULL, NULL, &sw, &err));
    CK_OK(store_add_run(s, sw, &in, &run, &err));
    int claimed;
    CK_OK(store_claim_run(s, run, &claimed, &err));
    RunResult res = done_result(0.5);
    RunKept k = {"loss", 10, 0.5, 1, 10, 1, 0.6, NAN, NAN, NULL};
    CK_OK(store_finish_run_kept(s, run, &res, &k, &err));
    /* version 3: the status CHECK of the migrated table takes `pruned` */
    RunInfo in3 = make_info("k3", 8, 0);
    CK_OK(store_add_run(s, sw, &in3, &run, &err));
    CK_OK(store_claim_run(s, run, &claimed, &err));
    res.status = "pruned";
    CK_OK(store_finish_run(s, run, &res, &err));
    /* version 4: the split CHECK of the migrated metrics table takes an eval set's name (and still
     * refuses a name outside the rule when SQL bypasses store_add_metric), and the new tables exist */
    RunInfo in4 = make_info("k4", 8, 0);
    int64_t run4;
    CK_OK(store_add_run(s, sw, &in4, &run4, &err));
    CK_OK(store_claim_run(s, run4, &claimed, &err));
    CK_OK(store_add_metric(s, run4, 0, "brown", "loss", 4.5, &err));
    CK_OK(store_set_eval_ctx(s, run4, "ctx", &err));
    CK_OK(store_add_base_eval(s, run4, "brown", "loss", 4.0, &err));
    DiagnosticRow dr = diag_row(0, "q_proj", "intruders", 1);
    CK_OK(store_add_diagnostics(s, run4, &dr, 1, &err));
    res.status = "done";
    CK_OK(store_finish_run(s, run4, &res, &err));
    store_close(s);
    ck_assert_int_eq(sqlite3_open(p, &db), SQLITE_OK);
    char *emsg = NULL;
    ck_assert_int_ne(sqlite3_exec(db, "INSERT INTO metrics VALUES (1, 'a b', 'loss', 1, 1.0, 0, 1.0)", NULL, NULL, &emsg),
                     SQLITE_OK);
    ck_assert_msg(emsg && strstr(emsg, "CHECK"), "%s", emsg ? emsg : "(no message)");
    sqlite3_free(emsg);
    ck_assert_int_eq(sqlite3_exec(db, "INSERT INTO metrics VALUES (1, 'sotu', 'loss', 1, 1.0, 0, 1.0)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    /* and reopens without migrating again */
    s = tu_store_open(p, 1);
    CK_OK(store_list_runs(s, "old", &rows, &n, &err));
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(row_by_id(rows, n, run)->status, "pruned");
    run = rows[1].id;
    ck_assert(row_by_id(rows, n, run)->best_step == 10 && row_by_id(rows, n, run)->test_loss == 0.6);
    store_free_runs(rows, n);
    store_close(s);
}
END_TEST


/* Early stopping through the store: ASHA's rung records per bracket, the median rule over stored
 * curves, a pruned run final, and a decision taken before a kill given back to the resumed run. */
static int64_t es_run(Store *s, int64_t sw, const char *key, const char *bracket) {
    LLError err = {0};
    RunInfo in = make_info(key, 4, 0);
    int64_t id;
    int claimed;
    CK_OK(store_add_run(s, sw, &in, &id, &err));
    CK_OK(store_set_bracket(s, id, bracket, &err));
    CK_OK(store_claim_run(s, id, &claimed, &err));
    ck_assert(claimed);
    return id;
}

START_TEST(t_early_stop_decisions) {
    char p[256];
    LLError err = {0};
    Store *s = tu_store_open(tu_path(p, sizeof p, "es.db"), 0);
    int64_t sw;
    CK_OK(store_upsert_sweep(s, "es", NULL, NULL, &sw, &err));
    EarlyStopPolicy asha = {ES_ASHA, 0, 10, 2, 0, 100};
    int64_t a = es_run(s, sw, "a", "seed0"), b = es_run(s, sw, "b", "seed0"), c = es_run(s, sw, "c", "seed1");
    EsDecision d;
    int replayed;
    CK_OK(store_es_decide(s, a, &asha, "loss", 10, 0, 1.0, NULL, &d, &replayed, &err));
    ck_assert(!d.stop && d.n_compared == 1 && !replayed);
    CK_OK(store_es_decide(s, b, &asha, "loss", 10, 0, 2.0, NULL, &d, &replayed, &err));
    ck_assert(d.stop && d.threshold == 1.0 && d.n_compared == 2);
    CK_OK(store_es_decide(s, c, &asha, "loss", 10, 0, 5.0, NULL, &d, &replayed, &err)); /* its own bracket */
    ck_assert(!d.stop && d.n_compared == 1);
    /* b killed after its decision, before it took effect: claimed again, the same decision back */
    pid_t pid = fork();
    if (pid == 0) _exit(0); /* b's owner, gone */
    waitpid(pid, NULL, 0);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(p, &db), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE runs SET pid = %d WHERE id = %lld", (int)pid, (long long)b);
    ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    int claimed;
    CK_OK(store_claim_run(s, b, &claimed, &err));
    ck_assert(claimed);
    CK_OK(store_es_decide(s, b, &asha, "loss", 10, 0, 2.0, NULL, &d, &replayed, &err));
    ck_assert(d.stop && replayed && d.threshold == 1.0);
    /* pruned is final: not claimed again */
    RunResult res = done_result(2.0);
    res.status = "pruned";
    CK_OK(store_finish_run(s, b, &res, &err));
    CK_OK(store_claim_run(s, b, &claimed, &err));
    ck_assert(!claimed);
    /* the median rule reads the bracket's other curves from the metrics table */
    EarlyStopPolicy med = {ES_MEDIAN, 0, 20, 0, 1, 100};
    for (int st = 10; st <= 20; st += 10) CK_OK(store_add_metric(s, a, st, "eval", "loss", st == 10 ? 4.0 : 2.0, &err));
    int64_t e = es_run(s, sw, "e", "seed0");
    const int steps[] = {10, 20};
    EsCurve own = {steps, (const double[]){5.0, 3.5}, 2};
    /* a's running average at 20: 3; b's curve is empty; e's best 3.5 is worse: stop */
    CK_OK(store_es_decide(s, e, &med, "loss", 20, -1, 3.5, &own, &d, &replayed, &err));
    ck_assert_msg(d.stop && d.threshold == 3.0 && d.n_compared == 1, "stop %d thr %g n %d", d.stop, d.threshold,
                  d.n_compared);
    store_close(s);
}
END_TEST

/* ---- limits --------------------------------------------------------------------------------- */

START_TEST(t_newer_version_refused) {
    char p[256];
    LLError err = {0};
    Store *s = tu_store_open(tu_path(p, sizeof p, "newer.db"), 0);
    store_close(s);
    patch_header(p, 60, STORE_SCHEMA_VERSION + 6);
    char want[512];
    snprintf(want, sizeof want,
             "database %s has schema version %d, this loralab knows up to %d; upgrade loralab", p,
             STORE_SCHEMA_VERSION + 6, STORE_SCHEMA_VERSION);
    for (int ro = 0; ro < 2; ro++) {
        err.msg[0] = '\0';
        ck_assert_int_eq(store_open(p, ro, &s, &err), LL_ERR_FORMAT);
        ck_assert_ptr_null(s);
        /* The message quotes the path: compare without the quotes. */
        char plain[1024];
        size_t k = 0;
        for (const char *c = err.msg; *c && k + 1 < sizeof plain; c++)
            if (*c != '\'') plain[k++] = *c;
        plain[k] = '\0';
        ck_assert_msg(strstr(plain, want) != NULL, "message was: %s", err.msg);
    }
    /* A newer shard is refused by merge too. */
    char po[256];
    s = tu_store_open(tu_path(po, sizeof po, "newer_out.db"), 0);
    ck_assert_int_eq(store_merge(s, p, NULL, &err), LL_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "upgrade loralab"));
    store_close(s);
}
END_TEST

START_TEST(t_foreign_files) {
    char p[256];
    LLError err = {0};
    Store *s = NULL;
    ck_assert_int_eq(store_open(tu_path(p, sizeof p, "missing.db"), 1, &s, &err), LL_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "no database at"));
    ck_assert_ptr_nonnull(strstr(err.msg, "missing.db"));
    ck_assert_int_eq(ll_file_exists(p), 0); /* a read-only open never creates */

    tu_path(p, sizeof p, "garbage.db");
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++) fputs("this is not sqlite ", f);
    fclose(f);
    for (int ro = 0; ro < 2; ro++) {
        ck_assert_int_eq(store_open(p, ro, &s, &err), LL_ERR_FORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "not a loralab database"));
    }

    store_close(tu_store_open(tu_path(p, sizeof p, "otherapp.db"), 0));
    patch_header(p, 68, 0x12345678);
    ck_assert_int_eq(store_open(p, 0, &s, &err), LL_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "another program"));

    /* Tables but no version: someone else's database; refused, not migrated. */
    store_close(tu_store_open(tu_path(p, sizeof p, "noversion.db"), 0));
    patch_header(p, 60, 0);
    patch_header(p, 68, 0);
    ck_assert_int_eq(store_open(p, 0, &s, &err), LL_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "no loralab schema version"));

    ck_assert_int_eq(store_open("", 0, &s, &err), LL_ERR_CONFIG);
}
END_TEST

START_TEST(t_bad_input) {
    char p[256];
    LLError err = {0};
    int64_t sw, run, id;
    RunInfo in = make_info("x", 8, 0);
    Store *s = open_with_run(tu_path(p, sizeof p, "bad.db"), "bad", &in, &sw, &run);

    ck_assert_int_eq(store_add_metric(s, run, 0, "valid split", "loss", 1, &err), LL_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "'valid split'"));
    char longname[100];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ck_assert_int_eq(store_add_metric(s, run, 0, "train", longname, 1, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(store_add_metric(s, run, -1, "train", "loss", 1, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(store_add_metric(s, run + 99, 0, "train", "loss", 1, &err), LL_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(err.msg, "no run with id"));
    /* None of the rejected rows poisoned the buffer. */
    CK_OK(store_add_metric(s, run, 0, "train", "loss", 1, &err));
    CK_OK(store_flush(s, &err));

    int claimed;
    ck_assert_int_eq(store_claim_run(s, run + 99, &claimed, &err), LL_ERR_STATE);
    CK_OK(store_claim_run(s, run, &claimed, &err));
    RunResult res = done_result(1.0);
    res.status = "running";
    ck_assert_int_eq(store_finish_run(s, run, &res, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(store_finish_run(s, run + 99, &(RunResult){.status = "done"}, &err),
                     LL_ERR_STATE);

    RunInfo nan_lr = make_info("y", 8, 0);
    nan_lr.lr = NAN;
    ck_assert_int_eq(store_add_run(s, sw, &nan_lr, &id, &err), LL_ERR_CONFIG);
    RunInfo no_key = make_info("", 8, 0);
    ck_assert_int_eq(store_add_run(s, sw, &no_key, &id, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(store_add_run(s, sw + 5, &in, &id, &err), LL_ERR_STATE);
    /* The same key with another config: refused. */
    RunInfo clash = make_info("x", 16, 0);
    ck_assert_int_eq(store_add_run(s, sw, &clash, &id, &err), LL_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(err.msg, "different config"));

    ck_assert_int_eq(store_add_rank(s, run, -1, "q_proj", 1, 2, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(store_add_rank(s, run, 0, "a_module_name_longer_than_31_bytes", 1, 2, &err),
                     LL_ERR_CONFIG);
    ck_assert_int_eq(store_add_rank(s, run + 99, 0, "q_proj", 1, 2, &err), LL_ERR_STATE);
    ck_assert_int_eq(store_add_artifact(s, run, "checkpoint", "x", &err), LL_ERR_CONFIG);
    ck_assert_int_eq(store_upsert_sweep(s, "", NULL, NULL, &id, &err), LL_ERR_CONFIG);

    char missing[256];
    ck_assert_int_eq(store_merge(s, tu_path(missing, sizeof missing, "nope.db"), NULL, &err),
                     LL_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "nope.db"));
    ck_assert_int_eq(ll_file_exists(missing), 0); /* ATTACH would have created it */
    ck_assert_int_eq(store_unlock(s, &err), LL_ERR_STATE);
    store_close(s);
}
END_TEST

/* A child of a process with an open Store may not open one (SQLite's lock bookkeeping would be
 * inherited without the locks); closing the inherited Store in the child leaves the parent's
 * connection working. */
START_TEST(t_fork_guard) {
    char p[256], q[256];
    LLError err = {0};
    Store *s = tu_store_open(tu_path(p, sizeof p, "fork.db"), 0);
    int64_t sw;
    CK_OK(store_upsert_sweep(s, "f", NULL, NULL, &sw, &err));
    tu_path(q, sizeof q, "fork_child.db"); /* the parent checks it below: set it before fork() */
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        Store *c = NULL;
        LLError ce = {0};
        LLStatus st = store_open(tu_path(q, sizeof q, "fork_child.db"), 0, &c, &ce);
        int ok = st == LL_ERR_STATE && c == NULL && strstr(ce.msg, "fork()") != NULL;
        store_close(s); /* releases memory only */
        _exit(ok ? 0 : 1);
    }
    int wst = 0;
    ck_assert_int_eq(waitpid(child, &wst, 0), child);
    ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "the child could open a Store");
    ck_assert_int_eq(ll_file_exists(q), 0);
    int64_t sw2;
    CK_OK(store_upsert_sweep(s, "g", NULL, NULL, &sw2, &err));
    ck_assert_int_ne(sw2, sw);
    store_close(s);
}
END_TEST

/* ---- processes ------------------------------------------------------------------------------ */

/* Another process holds the write lock longer than our busy timeout: writes fail with LL_ERR_BUSY
 * naming the file, committed rows survive, buffered rows are written once the lock is gone. */
START_TEST(t_locked_by_other_process) {
    char p[256];
    LLError err = {0};
    int64_t sw, run;
    RunInfo in = make_info("l1", 8, 0);
    Store *s = open_with_run(tu_path(p, sizeof p, "locked.db"), "l", &in, &sw, &run);
    for (int i = 0; i < 10; i++) CK_OK(store_add_metric(s, run, i, "train", "loss", i, &err));
    CK_OK(store_flush(s, &err));
    store_close(s);

    int locked[2], release[2];
    ck_assert_int_eq(pipe(locked), 0);
    ck_assert_int_eq(pipe(release), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(locked[0]);
        close(release[1]);
        Store *c = NULL;
        LLError ce = {0};
        char ok = 'n';
        if (store_open(p, 0, &c, &ce) == LL_OK && store_lock_exclusive(c, &ce) == LL_OK) ok = 'y';
        if (write(locked[1], &ok, 1) != 1) _exit(1);
        char b;
        if (read(release[0], &b, 1) < 0) _exit(1); /* held until the parent says so (or dies) */
        int rc = store_unlock(c, &ce) == LL_OK ? 0 : 1;
        store_close(c);
        _exit(rc);
    }
    close(locked[1]);
    close(release[0]);
    char ok = 0;
    ck_assert_int_eq(read(locked[0], &ok, 1), 1);
    ck_assert_int_eq(ok, 'y');

    CK_OK(store_open(p, 0, &s, &err));
    store_set_busy_timeout(s, 100);
    double t0 = ll_now();
    RunInfo in2 = make_info("l2", 8, 1);
    int64_t run2 = 0;
    ck_assert_int_eq(store_add_run(s, sw, &in2, &run2, &err), LL_ERR_BUSY);
    double waited = ll_now() - t0;
    ck_assert_ptr_nonnull(strstr(err.msg, p));
    ck_assert_ptr_nonnull(strstr(err.msg, "another process holds the lock"));
    ck_assert_msg(waited >= 0.3 && waited < 3.0, "waited %.2f s", waited);
    /* Reads go on while the other process writes (WAL). */
    ck_assert_int_eq(count_metrics(s, run, "train", "loss"), 10);
    /* A full batch cannot be written: it stays buffered. */
    for (int i = 0; i < STORE_METRIC_BATCH - 1; i++)
        CK_OK(store_add_metric(s, run, 100 + i, "eval", "loss", 0.5, &err));
    ck_assert_int_eq(store_add_metric(s, run, 999, "eval", "loss", 0.25, &err), LL_ERR_BUSY);
    ck_assert_int_eq(store_flush(s, &err), LL_ERR_BUSY);

    ck_assert_int_eq(write(release[1], "x", 1), 1);
    int wst = 0;
    waitpid(child, &wst, 0);
    ck_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    close(locked[0]);
    close(release[1]);

    CK_OK(store_flush(s, &err));
    CK_OK(store_add_run(s, sw, &in2, &run2, &err));
    ck_assert_int_eq(count_metrics(s, run, "train", "loss"), 10);
    ck_assert_int_eq(count_metrics(s, run, "eval", "loss"), STORE_METRIC_BATCH);
    RunRow *rows = NULL;
    int n = 0;
    CK_OK(store_list_runs(s, NULL, &rows, &n, &err));
    ck_assert_int_eq(n, 2);
    store_free_runs(rows, n);
    store_close(s);
}
END_TEST

enum { N_WRITERS = 4, RUNS_PER_WRITER = 12, METRICS_PER_RUN = 150 };

/* One writer process: its own runs in a shared sweep, each claimed, logged and finished. */
static int writer_main(const char *path, int w) {
    LLError err = {0};
    Store *s = NULL;
    if (store_open(path, 0, &s, &err) != LL_OK) goto fail;
    int64_t sw;
    if (store_upsert_sweep(s, "shared", "sweep.yaml", "grid", &sw, &err) != LL_OK) goto fail;
    for (int i = 0; i < RUNS_PER_WRITER; i++) {
        char key[32];
        snprintf(key, sizeof key, "w%d-r%d", w, i);
        RunInfo in = make_info(key, 4 << (i % 3), i);
        int64_t run;
        int claimed;
        if (store_add_run(s, sw, &in, &run, &err) != LL_OK) goto fail;
        if (store_claim_run(s, run, &claimed, &err) != LL_OK || !claimed) goto fail;
        for (int k = 0; k < METRICS_PER_RUN; k++)
            if (store_add_metric(s, run, k, k % 5 ? "train" : "eval", "loss", w + 0.001 * k,
                                 &err) != LL_OK)
                goto fail;
        RunResult res = done_result(w);
        if (store_finish_run(s, run, &res, &err) != LL_OK) goto fail;
    }
    store_close(s);
    return 0;
fail:
    fprintf(stderr, "writer %d: %s\n", w, err.msg);
    store_close(s);
    return 1;
}

START_TEST(t_concurrent_writers) {
    char p[256];
    tu_path(p, sizeof p, "concurrent.db"); /* created by whichever writer comes first */
    pid_t kids[N_WRITERS];
    for (int w = 0; w < N_WRITERS; w++) {
        kids[w] = fork();
        ck_assert_int_ge(kids[w], 0);
        if (kids[w] == 0) _exit(writer_main(p, w));
    }
    for (int w = 0; w < N_WRITERS; w++) {
        int wst = 0;
        ck_assert_int_eq(waitpid(kids[w], &wst, 0), kids[w]);
        ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "writer %d failed", w);
    }
    LLError err = {0};
    Store *s = tu_store_open(p, 1);
    RunRow *rows = NULL;
    int n = 0;
    CK_OK(store_list_runs(s, "shared", &rows, &n, &err));
    ck_assert_int_eq(n, N_WRITERS * RUNS_PER_WRITER);
    long total = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(rows[i].status, "done");
        int tr = count_metrics(s, rows[i].id, "train", "loss");
        int ev = count_metrics(s, rows[i].id, "eval", "loss");
        ck_assert_int_eq(tr + ev, METRICS_PER_RUN);
        ck_assert_int_eq(ev, METRICS_PER_RUN / 5);
        total += tr + ev;
    }
    ck_assert_int_eq(total, (long)N_WRITERS * RUNS_PER_WRITER * METRICS_PER_RUN);
    /* All writers joined one sweep row. */
    for (int i = 1; i < n; i++) ck_assert_int_eq(rows[i].sweep_id, rows[0].sweep_id);
    store_free_runs(rows, n);
    store_close(s);
}
END_TEST

Suite *store_suite(void) {
    Suite *s = suite_create("store");
    TCase *core = tu_tcase(s, "core", 1, 20);
    tcase_add_test(core, t_create_reopen);
    tcase_add_test(core, t_state_machine);
    tcase_add_test(core, t_claim_resuming);
    tcase_add_test(core, t_metric_idempotent);
    tcase_add_test(core, t_nan_roundtrip);
    tcase_add_test(core, t_batched_flush);
    tcase_add_test(core, t_resume_after_interrupt);
    tcase_add_test(core, t_live_owner);
    tcase_add_test(core, t_merge);
    tcase_add_test(core, t_kept_columns);
    tcase_add_test(core, t_migrate_v1);
    tcase_add_test(core, t_eval_sets_and_diagnostics);
    tcase_add_test(core, t_early_stop_decisions);

    TCase *limits = tu_tcase(s, "limits", 1, 20);
    tcase_add_test(limits, t_newer_version_refused);
    tcase_add_test(limits, t_foreign_files);
    tcase_add_test(limits, t_bad_input);
    tcase_add_test(limits, t_fork_guard);

    TCase *procs = tu_tcase(s, "processes", 1, 60);
    tcase_add_test(procs, t_locked_by_other_process);
    tcase_add_test(procs, t_concurrent_writers);
    return s;
}
