/* Tests of sweep expansion and the sweep runner (experiments/sweep.c).
 *
 * Expansion: grid sizes and order, merging of runs a method cannot tell apart, derived keys,
 * exclusions, seeded random search, --set collapsing an axis, sharding (disjoint, complete), and the
 * dry-run table (the SLURM script: tests/test_slurm.c). The runner is driven with injected fake run functions that
 * record through the real store: a clean 12-run sweep on 2 jobs, a worker that SIGKILLs itself on
 * its first attempt (recorded failed, then finished by a second invocation with no duplicate
 * metric rows), and SIGINT to the sweep's parent (running runs end `interrupted`).
 *
 * Every file lives in one mkdtemp folder per TCase (an unchecked fixture, removed even when a test
 * fails). The runner forks: no Store is ever held open across a fork here either.
 */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "sweep"
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buildinfo.h"
#include "core.h"
#include "experiments/config.h"
#include "experiments/store.h"
#include "experiments/sweep.h"
#include "util.h"

#define BASE "base: {path: models/base}\ntask: {data: data/brown}\n"

static ConfigDoc *load(const char *text, const char *const *sets, int n_sets) {
    ConfigDoc *d = NULL;
    LLError err;
    LLStatus st = config_load_text("s.yaml", text, sets, n_sets, &d, &err);
    ck_assert_msg(st == LL_OK, "load: %s", err.msg);
    return d;
}

static void expand(ConfigDoc *d, SweepPlan *p) {
    LLError err;
    LLStatus st = sweep_expand(d, p, &err);
    ck_assert_msg(st == LL_OK, "expand: %s", err.msg);
}

static void canon(const SweepPoint *pt, const char *key, char *out, size_t cap) {
    if (!config_canonical_get(&pt->rc, key, out, cap)) snprintf(out, cap, "-");
}

/* ---- expansion ------------------------------------------------------------------------------- */

START_TEST(t_grid_count_and_order) {
    ConfigDoc *d = load(BASE "sweep:\n  grid:\n    adapter.r: [4, 8, 16]\n    train.lr: [0.001, 0.002]\n"
                             "    adapter:\n      dropout: [0.0, 0.1]\n", NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 12);
    ck_assert_int_eq(p.n_raw, 12);
    ck_assert_int_eq(p.n_merged, 0);
    /* File order, last key fastest. */
    static const char *const want[12][3] = {
        {"4", "0.001", "0"},  {"4", "0.001", "0.1"},  {"4", "0.002", "0"},  {"4", "0.002", "0.1"},
        {"8", "0.001", "0"},  {"8", "0.001", "0.1"},  {"8", "0.002", "0"},  {"8", "0.002", "0.1"},
        {"16", "0.001", "0"}, {"16", "0.001", "0.1"}, {"16", "0.002", "0"}, {"16", "0.002", "0.1"}};
    char v[64];
    for (int i = 0; i < 12; i++) {
        ck_assert_int_eq(p.points[i].index, i);
        canon(&p.points[i], "adapter.r", v, sizeof v);
        ck_assert_str_eq(v, want[i][0]);
        canon(&p.points[i], "train.lr", v, sizeof v);
        ck_assert_str_eq(v, want[i][1]);
        canon(&p.points[i], "adapter.dropout", v, sizeof v);
        ck_assert_str_eq(v, want[i][2]);
        for (int j = 0; j < i; j++) ck_assert_str_ne(p.points[i].rc.key, p.points[j].rc.key);
    }
    ck_assert_int_eq(p.n_vary, 3);
    ck_assert_str_eq(p.vary[2], "adapter.dropout");
    /* The dry-run table. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    sweep_print_plan(f, &p, 0, 0);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, p.points[11].rc.key));
    ck_assert_ptr_nonnull(strstr(buf, "12 runs (12 points, 0 excluded, 0 merged as duplicates)"));
    free(buf);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

START_TEST(t_seeds_axis) {
    ConfigDoc *d = load(BASE "sweep:\n  seeds: [0, 1, 2]\n  grid: {adapter.r: [4, 8]}\n", NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 6);
    /* Seeds are the slowest axis; adapter.seed follows train.seed. */
    for (int i = 0; i < 6; i++) {
        ck_assert_uint_eq(p.points[i].rc.train.seed, (uint64_t)(i / 2));
        ck_assert_uint_eq(p.points[i].rc.adapter.seed, (uint64_t)(i / 2));
        ck_assert_int_eq(p.points[i].rc.adapter.r, i % 2 ? 8 : 4);
    }
    ck_assert_str_eq(p.vary[0], "train.seed");
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

START_TEST(t_dedup_irrelevant) {
    /* Full fine-tuning ignores r: 3 points, 1 run. */
    ConfigDoc *d = load(BASE "adapter: {method: full}\nsweep: {grid: {adapter.r: [1, 2, 4]}}\n", NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 1);
    ck_assert_int_eq(p.n_raw, 3);
    ck_assert_int_eq(p.n_merged, 2);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* method x r: full merges to 1, lora keeps 3, vera keeps 3 (VeRA ignores alpha, not r). */
    d = load(BASE "sweep:\n  grid:\n    adapter.method: [full, lora, vera]\n    adapter.r: [1, 2, 4]\n"
                  "    adapter.alpha: [8, 16]\n", NULL, 0);
    expand(d, &p);
    ck_assert_int_eq(p.n_raw, 18);
    ck_assert_int_eq(p.n, 1 + 6 + 3);
    ck_assert_int_eq(p.points[0].rc.adapter.method, ADAPTER_FULL);
    char v[64];
    canon(&p.points[0], "adapter.r", v, sizeof v);
    ck_assert_str_eq(v, "-");
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

START_TEST(t_derived) {
    ConfigDoc *d = load(BASE "sweep:\n  grid: {adapter.r: [2, 8, 32]}\n  derived:\n    adapter.alpha: \"2*r\"\n"
                             "    train.lr: \"0.01 / (adapter.alpha + 4) - -0.001\"\n", NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 3);
    static const int r[3] = {2, 8, 32};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(p.points[i].rc.adapter.r, r[i]);
        ck_assert(p.points[i].rc.adapter.alpha == 2.0f * r[i]);
        ck_assert(p.points[i].rc.train.lr == (float)(0.01 / (2.0 * r[i] + 4) + 0.001));
    }
    sweep_plan_free(&p);
    config_doc_free(d);
    /* A constant, and a default read through a short name (VeRA's default r = 256). */
    d = load(BASE "adapter: {method: lora}\nsweep:\n  grid: {train.steps: [10, 20]}\n  derived:\n"
                  "    adapter.alpha: 16\n    train.warmup: \"steps / 10\"\n", NULL, 0);
    expand(d, &p);
    ck_assert(p.points[0].rc.adapter.alpha == 16.0f);
    ck_assert_int_eq(p.points[1].rc.train.warmup, 2);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* Errors name the file, line, key and point. */
    LLError err;
    d = load(BASE "sweep:\n  grid: {adapter.r: [3]}\n  derived: {adapter.init_r: \"r/2\"}\n", NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:5: sweep.derived: adapter.init_r at point {adapter.r=3}") &&
                  strstr(err.msg, "'r/2' = 1.5 is not a whole number"), "%s", err.msg);
    config_doc_free(d);
    d = load(BASE "sweep:\n  derived: {adapter.alpha: \"2*rr\"}\n", NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "expression '2*rr': unknown name 'rr'"), "%s", err.msg);
    config_doc_free(d);
    d = load(BASE "sweep:\n  derived: {adapter.alpha: \"r/(r-r)\"}\n", NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "division by zero"), "%s", err.msg);
    config_doc_free(d);
    /* Derived values are checked against the key's bounds. */
    d = load(BASE "sweep:\n  derived: {adapter.dropout: \"r/4\"}\n", NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "adapter.dropout: 2 is outside [0, 1)"), "%s", err.msg);
    config_doc_free(d);
}
END_TEST

/* A numeric axis may hold expressions of the point's other keys: alpha in {r, 2r, 16}. */
START_TEST(t_grid_expressions) {
    ConfigDoc *d = load(BASE "sweep:\n  grid:\n    adapter.r: [1, 2, 16]\n    adapter.alpha: [\"r\", \"2*r\", 16]\n",
                        NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 8); /* 9 points; r=16 with alpha r and with alpha 16 are one run */
    ck_assert_int_eq(p.n_merged, 1);
    static const float want[8][2] = {{1, 1}, {1, 2}, {1, 16}, {2, 2}, {2, 4}, {2, 16}, {16, 16}, {16, 32}};
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(p.points[i].rc.adapter.r, (int)want[i][0]);
        ck_assert(p.points[i].rc.adapter.alpha == want[i][1]);
    }
    sweep_plan_free(&p);
    config_doc_free(d);
    LLError err;
    d = load(BASE "sweep:\n  grid:\n    adapter.r: [3]\n    adapter.init_r: [\"r/2\"]\n", NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "adapter.init_r: 'r/2'") && strstr(err.msg, "not a whole number"), "%s", err.msg);
    config_doc_free(d);
}
END_TEST

START_TEST(t_exclude) {
    ConfigDoc *d = load(BASE "sweep:\n  grid:\n    adapter.method: [lora, vera]\n    adapter.r: [4, 8, 16]\n"
                             "  exclude:\n    - {adapter.method: vera, adapter.r: 4}\n    - {adapter.r: 16}\n",
                        NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n_raw, 6);
    ck_assert_int_eq(p.n_excluded, 3);
    ck_assert_int_eq(p.n, 3);
    ck_assert_int_eq(p.points[0].rc.adapter.method, ADAPTER_LORA);
    ck_assert_int_eq(p.points[0].rc.adapter.r, 4);
    ck_assert_int_eq(p.points[1].rc.adapter.r, 8);
    ck_assert_int_eq(p.points[2].rc.adapter.method, ADAPTER_VERA);
    ck_assert_int_eq(p.points[2].rc.adapter.r, 8);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* A list under a one-value key means any of its values. */
    d = load(BASE "sweep:\n  grid:\n    adapter.method: [lora, vera]\n    adapter.r: [4, 8, 16]\n"
                  "  exclude:\n    - {adapter.method: vera, adapter.r: [4, 16]}\n", NULL, 0);
    expand(d, &p);
    ck_assert_int_eq(p.n_excluded, 2);
    ck_assert_int_eq(p.n, 4);
    ck_assert_int_eq(p.points[3].rc.adapter.method, ADAPTER_VERA);
    ck_assert_int_eq(p.points[3].rc.adapter.r, 8);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* Exclusions also match values fixed in the file, and target lists as sets. */
    d = load(BASE "adapter: {targets: [v, q]}\nsweep:\n  grid: {adapter.r: [4, 8]}\n"
                  "  exclude:\n    - {adapter.targets: \"q_proj,v_proj\", adapter.r: 8}\n", NULL, 0);
    expand(d, &p);
    ck_assert_int_eq(p.n, 1);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

/* An exclude entry that drops nothing is refused (a typo would leave the runs it meant to drop), by
 * file and line, unless --set fixed a key it names; `seeds: 2` is refused for a list. */
START_TEST(t_exclude_and_seeds_typos) {
    LLError err;
    SweepPlan p;
    const char *text = BASE "sweep:\n  grid:\n    adapter.r: [4, 8]\n  exclude:\n    - {adapter.r: 8}\n"
                            "    - {adapter.r: 6}\n";
    ConfigDoc *d = load(text, NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:8: sweep.exclude: the entry {adapter.r=6} matches no point"), "%s", err.msg);
    config_doc_free(d);
    /* the same entries with r fixed on the command line: not refused */
    const char *sets[] = {"adapter.r=4"};
    d = load(text, sets, 1);
    expand(d, &p);
    ck_assert_int_eq(p.n, 1);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* an entry whose points an earlier entry already drops still counts as matching */
    d = load(BASE "sweep:\n  grid:\n    adapter.r: [4, 8]\n    train.lr: [0.001, 0.002]\n  exclude:\n"
                  "    - {adapter.r: 8}\n    - {adapter.r: 8, train.lr: 0.001}\n", NULL, 0);
    expand(d, &p);
    ck_assert_int_eq(p.n, 2);
    sweep_plan_free(&p);
    config_doc_free(d);
    d = NULL;
    ck_assert_int_eq(config_load_text("s.yaml", BASE "sweep:\n  grid: {adapter.r: [4]}\n  seeds: 2\n", NULL, 0, &d, &err),
                     LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:5: sweep.seeds: expected a list, got '2': write [2]"), "%s", err.msg);
    config_doc_free(d);
}
END_TEST

/* sweep_check_data: a corpus folder that is missing, not a folder, or lacks a split is refused
 * before anything runs, naming the key and the folder; a complete one passes. */
START_TEST(t_check_data) {
    char dir[] = "/tmp/loralab-data-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char text[4096], path[600];
    LLError err;
    SweepPlan p;
    snprintf(text, sizeof text,
             "base: {path: models/base}\ntask: {data: %s/none}\nsweep:\n  grid: {adapter.r: [4, 8]}\n", dir);
    ConfigDoc *d = load(text, NULL, 0);
    ck_assert_int_eq(config_has_sweep(d), 1); /* what `loralab train` says it ignores */
    expand(d, &p);
    ck_assert_int_eq(sweep_check_data(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml: task.data '") && strstr(err.msg, "/none': No such file"), "%s", err.msg);
    sweep_plan_free(&p);
    config_doc_free(d);
    snprintf(path, sizeof path, "%s/c", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/c/train.txt", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("some text\n", f);
    fclose(f);
    snprintf(text, sizeof text, "base: {path: models/base}\ntask: {data: %s/c}\n", dir);
    d = load(text, NULL, 0);
    ck_assert_int_eq(config_has_sweep(d), 0);
    expand(d, &p);
    ck_assert_int_eq(sweep_check_data(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "has no valid split") && strstr(err.msg, "/c/valid.txt is missing"), "%s", err.msg);
    snprintf(path, sizeof path, "%s/c/valid.txt", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0); /* a folder where the split's file belongs */
    ck_assert_int_eq(sweep_check_data(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "/c/valid.txt is not a regular file"), "%s", err.msg);
    ck_assert_int_eq(rmdir(path), 0);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(sweep_check_data(d, &p, &err), LL_OK);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* an eval set, named by its key */
    snprintf(text, sizeof text, "base: {path: models/base}\ntask: {data: %s/c, eval_sets: {other: %s/c/train.txt}}\n",
             dir, dir);
    d = load(text, NULL, 0);
    expand(d, &p);
    ck_assert_int_eq(sweep_check_data(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "task.eval_sets.other '") && strstr(err.msg, "is not a folder"), "%s", err.msg);
    sweep_plan_free(&p);
    config_doc_free(d);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(path), 0);
}
END_TEST

START_TEST(t_random_search) {
    const char *text =
        BASE "sweep:\n  grid: {adapter.method: [lora, vera]}\n  random:\n    n: 8\n    seed: 42\n    space:\n"
             "      train.lr: {log_uniform: [1e-4, 1e-2]}\n      adapter.r: {int_log2: [2, 64]}\n"
             "      adapter.dropout: {uniform: [0, 0.2]}\n      train.steps: {uniform: [10, 20]}\n"
             "      adapter.targets: [q, \"q,v\", all-linear]\n";
    ConfigDoc *d = load(text, NULL, 0);
    SweepPlan a, b;
    expand(d, &a);
    config_doc_free(d);
    d = load(text, NULL, 0);
    expand(d, &b);
    ck_assert_int_eq(a.n, 16); /* 2 methods x 8 samples, all distinct */
    ck_assert_int_eq(b.n, a.n);
    for (int i = 0; i < a.n; i++) {
        ck_assert_str_eq(a.points[i].rc.key, b.points[i].rc.key); /* deterministic */
        const RunConfig *rc = &a.points[i].rc;
        ck_assert(rc->train.lr >= 1e-4f && rc->train.lr <= 1e-2f);
        ck_assert(rc->adapter.r >= 2 && rc->adapter.r <= 64 && (rc->adapter.r & (rc->adapter.r - 1)) == 0);
        ck_assert(rc->adapter.dropout >= 0.0f && rc->adapter.dropout <= 0.2f);
        ck_assert(rc->train.steps >= 10 && rc->train.steps <= 20);
    }
    /* The same 8 samples are crossed with each method: lr of point i equals lr of point 8 + i. */
    for (int i = 0; i < 8; i++) ck_assert(a.points[i].rc.train.lr == a.points[8 + i].rc.train.lr);
    /* Golden first draw (splitmix64 of fnv1a64("train.lr") ^ 42, log-uniform, 4 digits): the plan must
     * not change between builds or machines. */
    char v[64];
    canon(&a.points[0], "train.lr", v, sizeof v);
    ck_assert_str_eq(v, "0.003512");
    sweep_plan_free(&a);
    sweep_plan_free(&b);
    config_doc_free(d);
    /* Another seed, other draws. */
    const char *sets[] = {"sweep.random.seed=43"};
    d = load(text, sets, 1);
    expand(d, &b);
    config_doc_free(d);
    d = load(text, NULL, 0);
    expand(d, &a);
    int differ = 0;
    for (int i = 0; i < a.n && i < b.n; i++) differ += strcmp(a.points[i].rc.key, b.points[i].rc.key) != 0;
    ck_assert_int_gt(differ, 0);
    sweep_plan_free(&a);
    sweep_plan_free(&b);
    config_doc_free(d);
}
END_TEST

/* The example: five methods, each at its own learning rates (and ranks), three seeds. */
#define PER_METHOD                                                                                                   \
    BASE "adapter: {targets: all-linear}\n"                                                                          \
         "sweep:\n"                                                                                                  \
         "  grid:\n"                                                                                                 \
         "    adapter.method: [lora, dora, vera, adalora, full]\n"                                                   \
         "  per_method:\n"                                                                                           \
         "    full:    {train.lr: [3.0e-4, 1.0e-3, 3.0e-3]}\n"                                                       \
         "    lora:    {train.lr: [1.0e-3, 3.0e-3, 1.0e-2], adapter.r: [8]}\n"                                       \
         "    dora:    {train.lr: [1.0e-3, 3.0e-3, 1.0e-2], adapter.r: [8]}\n"                                       \
         "    vera:    {train.lr: [1.0e-2, 3.0e-2, 1.0e-1], adapter.r: [256]}\n"                                     \
         "    adalora: {train.lr: [3.0e-3, 1.0e-2, 3.0e-2]}\n"                                                       \
         "  seeds: [0, 1, 2]\n"

START_TEST(t_per_method_grid) {
    ConfigDoc *d = load(PER_METHOD, NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 45); /* 5 methods x 3 lrs x 3 seeds */
    ck_assert_int_eq(p.n_raw, 45);
    ck_assert_int_eq(p.n_merged, 0);
    static const char *const method[5] = {"lora", "dora", "vera", "adalora", "full"};
    static const double lrs[5][3] = {
        {1e-3, 3e-3, 1e-2}, {1e-3, 3e-3, 1e-2}, {1e-2, 3e-2, 1e-1}, {3e-3, 1e-2, 3e-2}, {3e-4, 1e-3, 3e-3}};
    static const int rank[5] = {8, 8, 256, -1, -1}; /* -1: not part of the run */
    /* Order: seed, then the grid's method, then the method's own lr (fastest). Each method gets
     * exactly its own values, every one with every seed. */
    char v[64];
    for (int i = 0; i < 45; i++) {
        int seed = i / 15, m = (i / 3) % 5, k = i % 3;
        const RunConfig *rc = &p.points[i].rc;
        ck_assert_str_eq(adapter_variant_name(&rc->adapter), method[m]);
        ck_assert_uint_eq(rc->train.seed, (uint64_t)seed);
        ck_assert_msg(rc->train.lr == (float)lrs[m][k], "point %d: lr %g", i, rc->train.lr);
        canon(&p.points[i], "adapter.r", v, sizeof v);
        if (rank[m] < 0) ck_assert_str_eq(v, "-");
        else ck_assert_int_eq(atoi(v), rank[m]);
    }
    /* The dry run names the methods and counts their runs. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    sweep_print_plan(f, &p, 0, 0);
    fclose(f);
    ck_assert_msg(strstr(buf, "45 runs (45 points, 0 excluded, 0 merged as duplicates)\n"
                              "runs per method: lora 9, dora 9, vera 9, adalora 9, full 9\n"), "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "  dora  ")); /* the method column shows the variant */
    free(buf);
    /* A point's run key is the key of the same run written without per_method: runs done by an
     * older sweep of the same configurations count as done. */
    ConfigDoc *flat = load(BASE "adapter: {targets: all-linear, method: vera, r: 256}\ntrain: {lr: 0.03, seed: 1}\n",
                           NULL, 0);
    RunConfig rc;
    LLError err;
    ck_assert_int_eq(config_resolve(flat, NULL, 0, &rc, &err), LL_OK);
    ck_assert_str_eq(rc.key, p.points[15 + 6 + 1].rc.key); /* seed 1, vera, lr 3e-2 */
    run_config_free(&rc);
    config_doc_free(flat);
    sweep_plan_free(&p);
    config_doc_free(d);
    /* --set of the method narrows the sweep: the other methods' entries are then ignored. */
    const char *sets[] = {"adapter.method=vera"};
    d = load(PER_METHOD, sets, 1);
    expand(d, &p);
    ck_assert_int_eq(p.n, 9);
    for (int i = 0; i < p.n; i++) ck_assert_str_eq(adapter_variant_name(&p.points[i].rc.adapter), "vera");
    sweep_plan_free(&p);
    config_doc_free(d);
    /* --set of a per-method key collapses it for every method. */
    const char *lr[] = {"train.lr=0.005"};
    d = load(PER_METHOD, lr, 1);
    expand(d, &p);
    ck_assert_int_eq(p.n, 15);
    for (int i = 0; i < p.n; i++) ck_assert(p.points[i].rc.train.lr == 0.005f);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

/* LoRA+ as a method of its own: its points are loraplus from the grid's name on, so its entry can
 * give the ratio; a ratio under lora would make loraplus runs and is refused. */
START_TEST(t_per_method_loraplus) {
    ConfigDoc *d = load(BASE "sweep:\n  grid: {adapter.method: [lora, loraplus]}\n  per_method:\n"
                             "    lora: {train.lr: [0.001, 0.002]}\n    loraplus: {adapter.lr_ratio: [4, 16]}\n",
                        NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 4);
    static const char *const want[4] = {"lora", "lora", "loraplus", "loraplus"};
    for (int i = 0; i < 4; i++) ck_assert_str_eq(adapter_variant_name(&p.points[i].rc.adapter), want[i]);
    ck_assert(p.points[2].rc.adapter.lr_ratio == 4.0f && p.points[3].rc.adapter.lr_ratio == 16.0f);
    sweep_plan_free(&p);
    config_doc_free(d);
    d = load(BASE "sweep:\n  grid: {adapter.method: [lora, full]}\n  per_method:\n"
                  "    lora: {adapter.lr_ratio: [1, 4]}\n",
             NULL, 0);
    LLError err;
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:6: sweep.per_method.lora: adapter.lr_ratio: 4 makes the run 'loraplus', "
                                  "not 'lora'"), "%s", err.msg);
    config_doc_free(d);
}
END_TEST

/* Per-method random-search keys: each method draws from its own range; the grid's own axes and the
 * seeds are crossed as usual. */
START_TEST(t_per_method_random) {
    ConfigDoc *d = load(BASE "sweep:\n  grid: {adapter.method: [lora, full]}\n  seeds: [0, 1]\n"
                             "  random: {n: 4, seed: 7}\n  per_method:\n"
                             "    lora: {train.lr: {log_uniform: [1e-4, 1e-2]}, adapter.r: [4, 8]}\n"
                             "    full:\n      train:\n        lr: {log_uniform: [1e-6, 1e-5]}\n",
                        NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 2 * (2 * 4 + 4)); /* seeds x (lora: 2 ranks x 4 samples + full: 4 samples) */
    int n_lora = 0;
    for (int i = 0; i < p.n; i++) {
        const RunConfig *rc = &p.points[i].rc;
        if (rc->adapter.method == ADAPTER_LORA) {
            n_lora++;
            ck_assert(rc->train.lr >= 1e-4f && rc->train.lr <= 1e-2f);
            ck_assert(rc->adapter.r == 4 || rc->adapter.r == 8);
        } else {
            ck_assert(rc->train.lr >= 1e-6f && rc->train.lr <= 1e-5f);
        }
        ck_assert_uint_eq(rc->train.seed, (uint64_t)(i / 12));
    }
    ck_assert_int_eq(n_lora, 16);
    /* Sample j of each method sits at the same quantile of its own range (the same u per key). */
    double ql = log(p.points[0].rc.train.lr / 1e-4) / log(100.0), qf = log(p.points[8].rc.train.lr / 1e-6) / log(10.0);
    ck_assert_msg(fabs(ql - qf) < 1e-3, "%g vs %g", ql, qf);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

/* Every per_method mistake is a config error naming file:line, the entry and the key. */
START_TEST(t_per_method_errors) {
    static const struct {
        const char *sweep, *want;
    } cases[] = {
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    full: {adapter.r: [8]}\n",
         "s.yaml:6: sweep.per_method.full: adapter.r: full fine-tuning has no rank"},
        {"  grid: {adapter.method: [lora, vera]}\n  per_method:\n    vera:\n      adapter: {alpha: [1, 2]}\n",
         "s.yaml:7: sweep.per_method.vera: adapter.alpha: VeRA has no alpha"},
        {"  grid: {adapter.method: [lora, adalora]}\n  per_method:\n    adalora: {adapter.r: [4]}\n",
         "s.yaml:6: sweep.per_method.adalora: adapter.r: AdaLoRA allocates its ranks"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {adapter.tinit: [4]}\n",
         "s.yaml:6: sweep.per_method.lora: adapter.tinit: it is an AdaLoRA key"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lorra: {train.lr: [0.1]}\n",
         "s.yaml:6: sweep.per_method: unknown method 'lorra' (methods: full, lora, rslora, dora, pissa, loraplus"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {train.lr: [0.1]}\n    lora: {}\n",
         "s.yaml:7: sweep.per_method: duplicate method 'lora' (first at line 6)"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {adapter.method: [dora]}\n",
         "s.yaml:6: sweep.per_method.lora: adapter.method: per_method is keyed by the method"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {train.seed: [1, 2]}\n",
         "s.yaml:6: sweep.per_method.lora: train.seed: seeds are crossed with every method"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {train.lr: [0.1], train.lrr: [1]}\n",
         "s.yaml:6: sweep.per_method.lora: unknown key 'train.lrr'; did you mean 'train.lr'?"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {train.lr: [0.1, 11]}\n",
         "s.yaml:6: train.lr: 11 is outside (0, 10]"},
        {"  grid: {adapter.method: [lora, full], train.lr: [0.1]}\n  per_method:\n    lora: {train.lr: [0.2]}\n",
         "s.yaml:6: sweep.per_method.lora: train.lr is also a sweep.grid axis (line 4)"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {train.lr: {log_uniform: [1e-4, 1e-2]}}\n",
         "s.yaml:6: sweep.per_method.lora: train.lr: a distribution needs sweep.random.n"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora: {train.lr: [0.1], name: [x]}\n",
         "s.yaml:6: sweep.per_method.lora: 'name' is not a run setting and cannot be swept"},
    };
    char text[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ConfigDoc *d = NULL;
        LLError err;
        err.msg[0] = '\0';
        snprintf(text, sizeof text, BASE "sweep:\n%s", cases[i].sweep);
        ck_assert_msg(config_load_text("s.yaml", text, NULL, 0, &d, &err) == LL_ERR_CONFIG, "case %zu loaded", i);
        ck_assert_msg(strstr(err.msg, cases[i].want), "case %zu:\n  %s\nlacks\n  %s", i, err.msg, cases[i].want);
    }
    /* Found by the expansion: an entry for a method the grid does not have, and an entry value that
     * turns its points into another method. */
    static const struct {
        const char *sweep, *want;
    } late[] = {
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    vera: {train.lr: [0.1]}\n",
         "s.yaml:6: sweep.per_method: no point of the grid is a 'vera' run (its methods: lora, full)"},
        {"  grid: {adapter.method: [lora, full]}\n  per_method:\n    lora:\n      adapter.use_dora: [false, true]\n",
         "s.yaml:7: sweep.per_method.lora: adapter.use_dora: true makes the run 'dora', not 'lora'"},
    };
    for (size_t i = 0; i < sizeof late / sizeof late[0]; i++) {
        snprintf(text, sizeof text, BASE "sweep:\n%s", late[i].sweep);
        ConfigDoc *d = load(text, NULL, 0);
        SweepPlan p;
        LLError err;
        ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
        ck_assert_msg(strstr(err.msg, late[i].want), "late %zu:\n  %s\nlacks\n  %s", i, err.msg, late[i].want);
        config_doc_free(d);
    }
}
END_TEST

START_TEST(t_set_collapses_axis) {
    const char *sets[] = {"adapter.r=4"};
    ConfigDoc *d = load(BASE "sweep:\n  grid: {adapter.r: [4, 8, 16], train.lr: [0.1, 0.2]}\n", sets, 1);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 2);
    ck_assert_int_eq(p.points[0].rc.adapter.r, 4);
    ck_assert_int_eq(p.points[1].rc.adapter.r, 4);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

START_TEST(t_key_independent_of_order) {
    ConfigDoc *d1 = load(BASE "train: {steps: 30, lr: 0.01}\nsweep: {grid: {adapter.r: [4]}}\n", NULL, 0);
    ConfigDoc *d2 =
        load("sweep:\n  grid:\n    adapter:\n      r: [4]\ntrain:\n  lr: 1e-2\n  steps: 30\n" BASE, NULL, 0);
    SweepPlan a, b;
    expand(d1, &a);
    expand(d2, &b);
    ck_assert_str_eq(a.points[0].rc.key, b.points[0].rc.key);
    sweep_plan_free(&a);
    sweep_plan_free(&b);
    config_doc_free(d1);
    config_doc_free(d2);
}
END_TEST

START_TEST(t_shards) {
    ConfigDoc *d = load(BASE "sweep:\n  grid: {adapter.r: [1, 2, 3, 4, 5, 6, 7], train.lr: [0.1, 0.2]}\n", NULL, 0);
    SweepPlan p;
    expand(d, &p);
    ck_assert_int_eq(p.n, 14);
    for (int n = 1; n <= 5; n++) {
        int *owner = calloc((size_t)p.n, sizeof(int));
        for (int i = 0; i < n; i++)
            for (int j = 0; j < p.n; j++)
                if (sweep_in_shard(p.points[j].index, i, n)) owner[j]++;
        for (int j = 0; j < p.n; j++) ck_assert_int_eq(owner[j], 1); /* disjoint, and the union is all */
        free(owner);
    }
    int i, n;
    LLError err;
    ck_assert_int_eq(sweep_parse_shard("2/5", &i, &n, &err), LL_OK);
    ck_assert(i == 2 && n == 5);
    ck_assert_int_eq(sweep_parse_shard("5/5", &i, &n, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(sweep_parse_shard("a/5", &i, &n, &err), LL_ERR_CONFIG);
    ck_assert_int_eq(sweep_parse_shard("1/0", &i, &n, &err), LL_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "need 0 <= I < N"));
    /* The dry run of one shard lists its runs only. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    sweep_print_plan(f, &p, 1, 4);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "shard 1/4: 4 of 14 runs"));
    ck_assert_ptr_nonnull(strstr(buf, p.points[13].rc.key));
    ck_assert_ptr_null(strstr(buf, p.points[12].rc.key));
    free(buf);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

START_TEST(t_expand_limits) {
    LLError err;
    SweepPlan p;
    ConfigDoc *d = NULL;
    /* Conflicts are config errors with file:line. */
    ck_assert_int_eq(
        config_load_text("s.yaml", BASE "adapter: {r: 4}\nsweep: {grid: {adapter.r: [1, 2]}}\n", NULL, 0, &d, &err),
        LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:4: adapter.r is set (line 3) and is a grid axis"), "%s", err.msg);
    ck_assert_int_eq(
        config_load_text("s.yaml", BASE "sweep: {seeds: [0], grid: {train.seed: [1]}}\n", NULL, 0, &d, &err),
        LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "sweep.seeds and a train.seed grid axis"), "%s", err.msg);
    ck_assert_int_eq(config_load_text("s.yaml", BASE "sweep: {random: {n: 3}}\n", NULL, 0, &d, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:3: sweep.random.n needs sweep.random.space"), "%s", err.msg);
    ck_assert_int_eq(config_load_text("s.yaml",
                                      BASE "sweep: {random: {n: 3, space: {adapter.r: {int_log2: [3, 64]}}}}\n", NULL,
                                      0, &d, &err),
                     LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "int_log2 needs a whole-number key and powers of two"), "%s", err.msg);
    ck_assert_int_eq(config_load_text("s.yaml", BASE "sweep: {random: {n: 3, space: {train.lr: {normal: [0, 1]}}}}\n",
                                      NULL, 0, &d, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "unknown distribution 'normal'"), "%s", err.msg);
    ck_assert_int_eq(config_load_text("s.yaml", BASE "sweep: {grid: {name: [a, b]}}\n", NULL, 0, &d, &err),
                     LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:3: sweep.grid: 'name' is not a run setting and cannot be swept"), "%s",
                  err.msg);
    ck_assert_int_eq(
        config_load_text("s.yaml", BASE "sweep: {grid: {adapter.dropout: [0.1, 1.5]}}\n", NULL, 0, &d, &err),
        LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "s.yaml:3: adapter.dropout: 1.5 is outside [0, 1)"), "%s", err.msg);
    /* A point that fails resolution is named. */
    d = load(BASE "adapter: {method: adalora}\ntrain: {steps: 100}\nsweep: {grid: {adapter.tinit: [10, 100]}}\n", NULL,
             0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "sweep point {adapter.tinit=100}") &&
                      strstr(err.msg, "AdaLoRA needs adapter.tinit (100)"),
                  "%s", err.msg);
    config_doc_free(d);
    /* Too many points. */
    d = load(BASE "sweep: {grid: {train.steps: [1,2,3,4,5,6,7,8,9,10], adapter.r: [1,2,3,4,5,6,7,8,9,10],"
                  " train.batch: [1,2,3,4,5,6,7,8,9,10], train.seq: [1,2,3,4,5,6,7,8,9,10],"
                  " train.accum: [1,2,3,4,5,6,7,8,9,10], train.warmup: [0, 1]}}\n", NULL, 0);
    ck_assert_int_eq(sweep_expand(d, &p, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "the sweep expands to 200000 points; the limit is 100000"), "%s", err.msg);
    config_doc_free(d);
}
END_TEST

/* ---- the runner ------------------------------------------------------------------------------ */

/* Fakes share one convention: rc->out_dir is the test's folder; each execution appends the run
 * key to OUT/executions. They record through env->store like run_execute. */
static void note_execution(const RunConfig *rc) {
    char path[1200];
    snprintf(path, sizeof path, "%s/executions", rc->out_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "%s\n", rc->key);
        ssize_t w = write(fd, line, (size_t)n);
        (void)w;
        close(fd);
    }
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static LLStatus finish(const RunEnv *env, RunOutcome *out, const char *status, double loss, LLError *err) {
    RunResult res = {status, 1000.0, 0.01, 10, 100, -1, loss + 0.5, loss, exp(loss), NAN, NAN, NULL, NULL};
    snprintf(out->status, sizeof out->status, "%s", status);
    return store_finish_run(env->store, env->run_id, &res, err);
}

static LLStatus fake_ok(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err) {
    note_execution(rc);
    for (int step = 1; step <= 3; step++) {
        LLStatus st = store_add_metric(env->store, env->run_id, step, "train", "loss", 3.0 / step, err);
        if (st) return st;
    }
    nap_ms(15);
    return finish(env, out, "done", 1.0 + 0.01 * rc->adapter.r + rc->train.lr, err);
}

/* Kills itself (SIGKILL: no handler, no cleanup) on its first attempt of adapter.r == 2, after
 * its first metrics reached the database. */
static LLStatus fake_crash_once(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err) {
    char marker[1200];
    snprintf(marker, sizeof marker, "%s/crashed", rc->out_dir);
    if (rc->adapter.r == 2 && !ll_file_exists(marker)) {
        note_execution(rc);
        ll_write_file_atomic(marker, "x", 1, NULL);
        store_add_metric(env->store, env->run_id, 1, "train", "loss", 9.0, err);
        store_add_metric(env->store, env->run_id, 7, "train", "loss", 9.0, err);
        store_flush(env->store, err);
        raise(SIGKILL);
    }
    return fake_ok(rc, env, out, err);
}

/* Runs until told to stop; stubborn ignores the flag (only SIGKILL ends it). */
static LLStatus fake_slow(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err) {
    note_execution(rc);
    for (int i = 0; i < 1000 && !*env->stop; i++) nap_ms(10);
    LLStatus st = finish(env, out, "interrupted", NAN, err);
    return st ? st : ll_err(err, LL_ERR_INTERRUPTED, "stopped at the next step");
}

static LLStatus fake_stubborn(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err) {
    (void)env, (void)out, (void)err;
    note_execution(rc);
    for (int i = 0; i < 2000; i++) nap_ms(10);
    return LL_OK;
}

static LLStatus fake_base(const RunConfig *rc, const RunEnv *env, char *path, size_t cap, LLError *err) {
    (void)env, (void)err;
    char p[1200];
    snprintf(p, sizeof p, "%s/base_calls", rc->out_dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, "b\n", 2);
        (void)w;
        close(fd);
    }
    snprintf(path, cap, "%s", rc->base_path);
    return LL_OK;
}

static LLStatus fake_base_fails(const RunConfig *rc, const RunEnv *env, char *path, size_t cap, LLError *err) {
    (void)rc, (void)env, (void)path, (void)cap;
    return ll_err(err, LL_ERR_IO, "no corpus at data/nowhere/train.txt");
}

/* Runner tests share the TCase's folder: each works in its own sub-folder. */
static char g_work[128];

static void work_dir(const char *name) {
    tu_path(g_work, sizeof g_work, name);
    ck_assert_int_eq(mkdir(g_work, 0755), 0);
}

static int count_lines(const char *name, const char *key) {
    char path[256], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", g_work, name);
    if (ll_read_file(path, &text, &len, NULL) != LL_OK) return 0;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) n += !key || strcmp(line, key) == 0;
    ll_free(text);
    return n;
}

static ConfigDoc *runner_doc(const char *grid) {
    char text[2048];
    snprintf(text, sizeof text, "name: fake\nbase: {path: %s/base}\ntask: {data: %s/data}\noutput: {dir: %s}\n"
             "train: {steps: 10}\nsweep:\n  grid:\n%s", g_work, g_work, g_work, grid);
    return load(text, NULL, 0);
}

static void runner_opts(SweepOptions *o, SweepRunFn fn, const char *db, FILE *log) {
    sweep_options_defaults(o);
    o->jobs = 2, o->threads = 1;
    o->db_path = db;
    o->progress = 0;
    o->run_fn = fn;
    o->base_fn = fake_base;
    o->log = log;
}

/* One runner test's sweep in its own folder g_work = tu_dir/<name>: the plan of `grid`, options
 * running `fn` on 2 jobs into the database g_work/<db name>, and the log file g_work/log. */
typedef struct {
    ConfigDoc *doc;
    SweepPlan plan;
    SweepOptions opts;
    char db[256];
    FILE *log;
} RunnerFx;

/* Makes the folder, the plan, the log and the options; asserts each step. */
static void runner_begin(RunnerFx *r, const char *name, const char *grid, const char *db_name, SweepRunFn fn) {
    work_dir(name);
    r->doc = runner_doc(grid);
    expand(r->doc, &r->plan);
    char logp[256];
    snprintf(r->db, sizeof r->db, "%s/%s", g_work, db_name);
    snprintf(logp, sizeof logp, "%s/log", g_work);
    r->log = fopen(logp, "w");
    ck_assert_msg(r->log != NULL, "cannot write %s", logp);
    runner_opts(&r->opts, fn, r->db, r->log);
}

/* Closes the log and frees the plan and the config of runner_begin. */
static void runner_end(RunnerFx *r) {
    fclose(r->log);
    sweep_plan_free(&r->plan);
    config_doc_free(r->doc);
}

/* The runs of the sweep "fake" in the database db, through a read-only Store the caller closes
 * (after store_free_runs); asserts the open and the listing. */
static Store *list_fake_runs(const char *db, RunRow **rows, int *n) {
    LLError err;
    Store *s = tu_store_open(db, 1);
    ck_assert_msg(store_list_runs(s, "fake", rows, n, &err) == LL_OK, "%s", err.msg);
    return s;
}

#define GRID12 "    adapter.r: [1, 2, 4]\n    train.lr: [0.001, 0.002]\n    adapter.dropout: [0.0, 0.1]\n"

START_TEST(t_runner_completes) {
    RunnerFx r;
    runner_begin(&r, "completes", GRID12, "fake.db", fake_ok);
    ck_assert_int_eq(r.plan.n, 12);
    SweepSummary sum;
    LLError err;
    LLStatus st = sweep_run(r.doc, &r.plan, &r.opts, &sum, &err);
    ck_assert_msg(st == LL_OK, "%s", err.msg);
    ck_assert_int_eq(sum.total, 12);
    ck_assert_int_eq(sum.done, 12);
    ck_assert_int_eq(sum.failed + sum.diverged + sum.interrupted + sum.skipped, 0);
    ck_assert_int_eq(sum.exit_code, 0);
    ck_assert_int_eq(count_lines("base_calls", NULL), 1); /* the base is prepared once */
    ck_assert_int_eq(count_lines("executions", NULL), 12);
    /* The store has each run once, done, with its 3 metric rows and final numbers. */
    RunRow *rows;
    int n;
    Store *s = list_fake_runs(r.db, &rows, &n);
    ck_assert_int_eq(n, 12);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(rows[i].status, "done");
        ck_assert_int_eq(rows[i].attempt, 1);
        ck_assert_str_eq(rows[i].method, "lora");
        ck_assert(isfinite(rows[i].eval_loss));
        int *steps;
        double *vals;
        int nm;
        ck_assert_int_eq(store_get_metrics(s, rows[i].id, "train", "loss", &steps, &vals, &nm, &err), LL_OK);
        ck_assert_int_eq(nm, 3);
        free(steps);
        free(vals);
    }
    store_free_runs(rows, n);
    store_close(s);
    /* Again: everything is done, nothing runs. */
    st = sweep_run(r.doc, &r.plan, &r.opts, &sum, &err);
    ck_assert_int_eq(st, LL_OK);
    ck_assert_int_eq(sum.skipped, 12);
    ck_assert_int_eq(sum.done, 0);
    ck_assert_int_eq(sum.exit_code, 0);
    ck_assert_int_eq(count_lines("executions", NULL), 12);
    runner_end(&r);
}
END_TEST

START_TEST(t_runner_worker_killed) {
    RunnerFx r;
    runner_begin(&r, "killed", "    adapter.r: [1, 2, 4, 8]\n", "crash.db", fake_crash_once);
    SweepSummary sum;
    LLError err;
    ck_assert_int_eq(sweep_run(r.doc, &r.plan, &r.opts, &sum, &err), LL_OK);
    ck_assert_int_eq(sum.done, 3);
    ck_assert_int_eq(sum.failed, 1);
    ck_assert_int_eq(sum.exit_code, 1);
    const char *crashed = r.plan.points[1].rc.key; /* r = 2 */
    RunRow *rows;
    int n;
    Store *s = list_fake_runs(r.db, &rows, &n);
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].key, crashed) != 0) continue;
        ck_assert_str_eq(rows[i].status, "failed");
        ck_assert_msg(rows[i].error && strstr(rows[i].error, "killed by signal 9") &&
                      strstr(rows[i].error, "before recording a result"), "error: %s", rows[i].error);
    }
    store_free_runs(rows, n);
    store_close(s);
    /* The second invocation runs only the failed run; its earlier metrics are gone. */
    ck_assert_int_eq(sweep_run(r.doc, &r.plan, &r.opts, &sum, &err), LL_OK);
    ck_assert_int_eq(sum.skipped, 3);
    ck_assert_int_eq(sum.done, 1);
    ck_assert_int_eq(sum.exit_code, 0);
    s = list_fake_runs(r.db, &rows, &n);
    ck_assert_int_eq(n, 4);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(rows[i].status, "done");
        int is_crashed = strcmp(rows[i].key, crashed) == 0;
        ck_assert_int_eq(rows[i].attempt, is_crashed ? 2 : 1);
        /* Each run executed to the end exactly once; the crashed one was also started once before. */
        ck_assert_int_eq(count_lines("executions", rows[i].key), is_crashed ? 2 : 1);
        int *steps;
        double *vals;
        int nm;
        ck_assert_int_eq(store_get_metrics(s, rows[i].id, "train", "loss", &steps, &vals, &nm, &err), LL_OK);
        ck_assert_int_eq(nm, 3); /* steps 1..3; the dead attempt's rows (steps 1 and 7) were cleared */
        for (int k = 0; k < nm; k++) ck_assert_int_eq(steps[k], k + 1);
        ck_assert(vals[0] == 3.0);
        free(steps);
        free(vals);
    }
    store_free_runs(rows, n);
    store_close(s);
    runner_end(&r);
}
END_TEST

/* Forks a process that runs the sweep (jobs 2) with fn, waits until two runs are `running`, sends
 * SIGINT `signals` times (50 ms apart) to it, and returns its wait status. */
static int interrupt_sweep(SweepRunFn fn, const char *db, int signals) {
    ConfigDoc *d = runner_doc("    adapter.r: [1, 2, 4, 8, 16]\n");
    SweepPlan p;
    expand(d, &p);
    char logp[256];
    snprintf(logp, sizeof logp, "%s/log", g_work);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *log = fopen(logp, "w");
        SweepOptions o;
        runner_opts(&o, fn, db, log);
        SweepSummary sum;
        LLError err;
        LLStatus st = sweep_run(d, &p, &o, &sum, &err);
        fclose(log);
        _exit(st == LL_ERR_INTERRUPTED ? 130 : 10 + sum.exit_code);
    }
    /* Two rows running: both workers are inside the fake. */
    int running = 0;
    for (int tries = 0; tries < 1000 && running < 2; tries++) {
        nap_ms(10);
        Store *s;
        LLError err;
        if (store_open(db, 1, &s, &err) != LL_OK) continue;
        RunRow *rows;
        int n;
        running = 0;
        if (store_list_runs(s, "fake", &rows, &n, &err) == LL_OK) {
            for (int i = 0; i < n; i++) running += strcmp(rows[i].status, "running") == 0;
            store_free_runs(rows, n);
        }
        store_close(s);
    }
    ck_assert_int_eq(running, 2);
    nap_ms(50); /* past the claim: the workers are in the run function */
    for (int k = 0; k < signals; k++) {
        kill(pid, SIGINT);
        nap_ms(50);
    }
    int wstatus = 0;
    ck_assert_int_eq(waitpid(pid, &wstatus, 0), pid);
    sweep_plan_free(&p);
    config_doc_free(d);
    return wstatus;
}

static void check_interrupted(const char *db, const char *want_error) {
    RunRow *rows;
    int n, interrupted = 0, pending = 0;
    Store *s = list_fake_runs(db, &rows, &n);
    ck_assert_int_eq(n, 5);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(strcmp(rows[i].status, "running") != 0, "run %s still running", rows[i].key);
        if (strcmp(rows[i].status, "interrupted") == 0) {
            interrupted++;
            if (want_error)
                ck_assert_msg(rows[i].error && strstr(rows[i].error, want_error), "error: %s", rows[i].error);
        }
        pending += strcmp(rows[i].status, "pending") == 0;
    }
    ck_assert_int_eq(interrupted, 2);
    ck_assert_int_eq(pending, 3); /* no new worker started after the signal */
    store_free_runs(rows, n);
    store_close(s);
}

START_TEST(t_runner_sigint) {
    char db[256];
    work_dir("sigint");
    snprintf(db, sizeof db, "%s/int.db", g_work);
    int ws = interrupt_sweep(fake_slow, db, 1);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 130, "wait status %d", ws);
    check_interrupted(db, NULL);
}
END_TEST

START_TEST(t_runner_sigint_twice_kills) {
    char db[256];
    work_dir("sigint2");
    snprintf(db, sizeof db, "%s/int2.db", g_work);
    int ws = interrupt_sweep(fake_stubborn, db, 2);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 130, "wait status %d", ws);
    check_interrupted(db, "killed by signal 9");
}
END_TEST

START_TEST(t_runner_base_fails) {
    RunnerFx r;
    runner_begin(&r, "base_fails", "    adapter.r: [1, 2]\n", "base.db", fake_ok);
    r.opts.base_fn = fake_base_fails;
    SweepSummary sum;
    LLError err;
    ck_assert_int_eq(sweep_run(r.doc, &r.plan, &r.opts, &sum, &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "no corpus at data/nowhere/train.txt"), "%s", err.msg);
    ck_assert_int_eq(sum.exit_code, 1);
    ck_assert_int_eq(count_lines("executions", NULL), 0); /* no run started */
    runner_end(&r);
}
END_TEST

START_TEST(t_parallelism) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int j = 0, t = 0;
    sweep_pick_parallelism(100, &j, &t);
    ck_assert_int_eq(j, cores);
    ck_assert_int_eq(t, 1);
    j = 0, t = 0;
    sweep_pick_parallelism(1, &j, &t);
    ck_assert_int_eq(j, 1);
    ck_assert_int_eq(t, cores);
    j = 0, t = 2;
    sweep_pick_parallelism(100, &j, &t);
    ck_assert_int_eq(j, cores / 2 > 0 ? cores / 2 : 1);
    /* the reasons the sweep prints */
    j = 1, t = 0;
    const char *why = sweep_pick_parallelism(100, &j, &t);
    ck_assert_int_eq(t, cores);
    ck_assert_msg(strstr(why, "--jobs 1: the one job gets all") != NULL, "%s", why);
    j = 0, t = 0;
    why = sweep_pick_parallelism(100, &j, &t);
    ck_assert_msg(strstr(why, "default: one single-threaded job per core") != NULL, "%s", why);
    j = (int)cores, t = 2;
    why = sweep_pick_parallelism(100, &j, &t);
    ck_assert_msg(strstr(why, "oversubscribed") != NULL, "%s", why);
    /* the build line the sweep prints and --version spells out */
    const char *b = build_info();
    ck_assert_msg(strncmp(b, "loralab " LORALAB_VERSION " (git ", 16) == 0 && strstr(b, "; bf16 ") && strstr(b, "kernels "),
                  "%s", b);
    ck_assert_str_ne(build_git_commit(), "");
}
END_TEST

Suite *sweep_suite(void) {
    Suite *s = suite_create("sweep");
    TCase *core = tu_tcase(s, "core", 1, 0);
    tcase_add_test(core, t_grid_count_and_order);
    tcase_add_test(core, t_seeds_axis);
    tcase_add_test(core, t_dedup_irrelevant);
    tcase_add_test(core, t_derived);
    tcase_add_test(core, t_grid_expressions);
    tcase_add_test(core, t_exclude);
    tcase_add_test(core, t_exclude_and_seeds_typos);
    tcase_add_test(core, t_check_data);
    tcase_add_test(core, t_random_search);
    tcase_add_test(core, t_set_collapses_axis);
    tcase_add_test(core, t_per_method_grid);
    tcase_add_test(core, t_per_method_random);
    tcase_add_test(core, t_per_method_loraplus);
    tcase_add_test(core, t_key_independent_of_order);
    tcase_add_test(core, t_shards);
    tcase_add_test(core, t_parallelism);
    TCase *limits = tu_tcase(s, "limits", 0, 0);
    tcase_add_test(limits, t_expand_limits);
    tcase_add_test(limits, t_per_method_errors);
    TCase *runner = tu_tcase(s, "runner", 1, 60);
    tcase_add_test(runner, t_runner_completes);
    tcase_add_test(runner, t_runner_worker_killed);
    tcase_add_test(runner, t_runner_sigint);
    tcase_add_test(runner, t_runner_sigint_twice_kills);
    tcase_add_test(runner, t_runner_base_fails);
    return s;
}
