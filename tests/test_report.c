/* Tests of the report (analysis/report.c): exact aggregates (means, sample sds, seed grouping,
 * diverged runs kept apart), grouping by the seedless config (a dropout or precision sweep gives
 * one group per value, rows without a config fall back to the five fields) and the variant text
 * naming what sets a group apart, in the legends and tables too; Pareto membership, best-in-column, curves averaged over seeds with
 * different step sets; the written report from a fixture database (every file there and
 * non-empty, the tables' numbers and bold cells, a figure re-rendered by hand from its folder,
 * index.html loaded in headless Chromium with every image decoded); figures left out with their
 * reason; and the messages for an empty database, an unknown sweep, a newer schema and a missing
 * gnuplot. Every script and data file written passes tests/gp_check.h.
 *
 * hostile: a database written to attack the report (issue 21): methods, targets, config members
 * and values, run keys, the sweep name, an AdaLoRA module name and the database's own path carry
 * newlines followed by system("touch PWNED..."), `!cmd`, backquotes, quotes, trailing backslashes,
 * LaTeX, Markdown and HTML specials; the curves hold NaN and Inf. `loralab report` (the real
 * binary, gnuplot rendering when installed) exits 0, no PWNED file appears anywhere, every .gp
 * and .dat passes the checker, three methods spelled lora/LoRA get three figure files, the
 * tables and index.html show the values as text, and the terminal output holds no control
 * character.
 *
 * The fixture database is written through the store's API in an mkdtemp folder (an unchecked
 * fixture: it is removed in the runner even when a test fails). Checks that need gnuplot or
 * Chromium print "SKIPPED: ..." when the program is absent instead of passing silently.
 */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "report"
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

#include <dirent.h>
#include <ftw.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "analysis/report.h"
#include "core.h"
#include "experiments/store.h"
#include "gp_check.h"
#include "util.h"

#define TOL 1e-12

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---- the fixture database -------------------------------------------------------------------- */

typedef struct {
    const char *method, *targets;
    int r;
    double alpha;
    int64_t seed;
    const char *status; /* "done", "diverged", "pending" */
    double eval_loss, wall_s;
    int64_t trainable, peak_mib;
} FxRun;

/* LoRA r in {4, 8} x alpha in {8, 16} x seeds {0, 1} on q,v; LoRA on q,k,v,o; full fine-tuning
 * over two seeds; one AdaLoRA run; a diverged and a pending run. Numbers chosen so that means and
 * sds are known in closed form. */
static const FxRun FX[] = {
    {"lora", "q_proj,v_proj", 4, 8, 0, "done", 2.0, 10, 4096, 100},
    {"lora", "q_proj,v_proj", 4, 8, 1, "done", 2.4, 12, 4096, 100},
    {"lora", "q_proj,v_proj", 4, 8, 2, "diverged", NAN, 3, 4096, 100},
    {"lora", "q_proj,v_proj", 4, 16, 0, "done", 1.9, 10, 4096, 100},
    {"lora", "q_proj,v_proj", 4, 16, 1, "done", 2.0, 12, 4096, 100},
    {"lora", "q_proj,v_proj", 8, 8, 0, "done", 1.8, 14, 8192, 110},
    {"lora", "q_proj,v_proj", 8, 8, 1, "done", 1.9, 16, 8192, 110},
    {"lora", "q_proj,v_proj", 8, 16, 0, "done", 1.5, 14, 8192, 110},
    {"lora", "q_proj,v_proj", 8, 16, 1, "done", 1.7, 16, 8192, 110},
    {"lora", "q_proj,k_proj,v_proj,o_proj", 8, 16, 0, "done", 1.50, 20, 16384, 130},
    {"lora", "q_proj,k_proj,v_proj,o_proj", 8, 16, 1, "done", 1.56, 22, 16384, 130},
    {"lora", "q_proj,k_proj,v_proj,o_proj", 16, 32, 0, "pending", NAN, NAN, -1, -1},
    {"full", "", 0, 0, 0, "done", 1.4, 30, 1000000, 400},
    {"full", "", 0, 0, 1, "done", 1.6, 34, 1000000, 400},
    {"adalora", "q_proj,v_proj", 8, 16, 0, "done", 1.7, 25, 9000, 120},
};
#define N_FX (int)(sizeof FX / sizeof FX[0])
#define TOTAL_PARAMS 1000000
#define STEPS 10

/* A run's canonical config, as the sweep writes it (keys sorted): the five grouping fields and the
 * seeds, plus extra members ("\"adapter.dropout\":0.1"; NULL: none), put last on purpose: the
 * report must not depend on the members' order. */
static void fx_config(const FxRun *f, const char *extra, char *out, size_t cap) {
    snprintf(out, cap,
             "{\"adapter.alpha\":%g,\"adapter.method\":\"%s\",\"adapter.r\":%d,\"adapter.seed\":%lld,"
             "\"adapter.targets\":\"%s\",\"base.steps\":1200,\"train.lr\":0.001,\"train.seed\":%lld,"
             "\"train.steps\":%d%s%s}",
             f->alpha, f->method, f->r, (long long)f->seed, f->targets, (long long)f->seed, STEPS,
             extra ? "," : "", extra ? extra : "");
}

/* Writes runs [0, n) of fx into db (sweep name sweep); extra[i] (extra may be NULL) are config
 * members of run i beyond fx_config's. */
static void write_fixture_x(const char *db, const char *sweep, const FxRun *fx, int n, const char *const *extra) {
    LLError err = {0};
    Store *s = tu_store_open(db, 0);
    int64_t sw = 0;
    CK_OK(store_upsert_sweep(s, sweep, NULL, NULL, &sw, &err));
    for (int i = 0; i < n; i++) {
        const FxRun *f = &fx[i];
        char key[64], cfg[512];
        snprintf(key, sizeof key, "%s-%d", sweep, i);
        fx_config(f, extra ? extra[i] : NULL, cfg, sizeof cfg);
        RunInfo in = {key, cfg, f->method, f->targets, f->r, f->alpha, 1e-3, f->seed};
        int64_t run = 0;
        CK_OK(store_add_run(s, sw, &in, &run, &err));
        if (strcmp(f->status, "pending") == 0) continue;
        int claimed = 0;
        CK_OK(store_claim_run(s, run, &claimed, &err));
        ck_assert_int_eq(claimed, 1);
        /* Train loss each step, eval loss every 5 steps ending at the run's final eval loss. */
        for (int step = 1; step <= STEPS; step++) {
            double tl = 3.0 - 0.1 * step + 0.01 * (double)f->seed;
            CK_OK(store_add_metric(s, run, step, "train", "loss", tl, &err));
            if (step % 5 == 0) {
                double el = step == STEPS ? f->eval_loss : f->eval_loss + 0.5;
                CK_OK(store_add_metric(s, run, step, "eval", "loss", el, &err));
            }
        }
        if (strcmp(f->method, "adalora") == 0) {
            static const char *const mods[] = {"q_proj", "v_proj"};
            static const int ranks[2][2] = {{2, 5}, {8, 3}};
            for (int l = 0; l < 2; l++)
                for (int m = 0; m < 2; m++) CK_OK(store_add_rank(s, run, l, mods[m], ranks[l][m], 8, &err));
        }
        RunResult res = {f->status, 1000.0, f->wall_s, f->trainable, TOTAL_PARAMS, f->peak_mib << 20,
                         3.0 - 0.1 * STEPS, f->eval_loss, exp(f->eval_loss), NAN, NAN, NULL, NULL};
        CK_OK(store_finish_run(s, run, &res, &err));
    }
    store_close(s);
}

static void write_fixture(const char *db, const char *sweep, const FxRun *fx, int n) {
    write_fixture_x(db, sweep, fx, n, NULL);
}

static RunRow *fixture_rows(int *n) {
    char db[256];
    LLError err = {0};
    write_fixture(tu_path(db, sizeof db, "agg.db"), "fx", FX, N_FX);
    Store *s = tu_store_open(db, 1);
    RunRow *rows = NULL;
    CK_OK(store_list_runs(s, NULL, &rows, n, &err));
    store_close(s);
    unlink(db);
    return rows;
}

/* ---- core: statistics and aggregation -------------------------------------------------------- */

START_TEST(t_stat) {
    ReportStat st;
    double x[] = {1, 2, NAN, 3, 4, INFINITY};
    report_stat(x, 6, &st);
    ck_assert_int_eq(st.n, 4);
    ck_assert_double_eq_tol(st.mean, 2.5, TOL);
    ck_assert_double_eq_tol(st.sd, sqrt(5.0 / 3.0), TOL); /* sample sd: n - 1 */
    report_stat(x, 1, &st);
    ck_assert(st.n == 1 && st.mean == 1.0 && isnan(st.sd));
    report_stat(x + 2, 1, &st);
    ck_assert(st.n == 0 && isnan(st.mean) && isnan(st.sd));
}
END_TEST

static const ReportGroup *find_group(const ReportGroup *g, int n, const char *method, const char *targets, int r,
                                     double alpha) {
    for (int i = 0; i < n; i++)
        if (strcmp(g[i].method, method) == 0 && strcmp(g[i].targets, targets) == 0 && g[i].r == r &&
            g[i].alpha == alpha)
            return &g[i];
    ck_abort_msg("no group %s %s r=%d alpha=%g", method, targets, r, alpha);
    return NULL;
}

START_TEST(t_aggregate) {
    int n = 0;
    RunRow *rows = fixture_rows(&n);
    ck_assert_int_eq(n, N_FX);
    ck_assert_int_eq(report_metric_of(rows, n), REPORT_EVAL_LOSS);
    ReportGroup *g = NULL;
    int ng = report_aggregate(rows, n, REPORT_EVAL_LOSS, &g);
    /* 4 LoRA q,v + 1 LoRA q,k,v,o (the pending run forms no group) + full + AdaLoRA. */
    ck_assert_int_eq(ng, 7);
    /* Order: full, then lora by targets ("q_proj,k_..." < "q_proj,v_..."), r, alpha; adalora. */
    ck_assert_str_eq(g[0].method, "full");
    ck_assert_str_eq(g[1].targets, "q_proj,k_proj,v_proj,o_proj");
    ck_assert(g[2].r == 4 && g[2].alpha == 8 && g[3].r == 4 && g[3].alpha == 16);
    ck_assert(g[4].r == 8 && g[4].alpha == 8 && g[5].r == 8 && g[5].alpha == 16);
    ck_assert_str_eq(g[6].method, "adalora");

    const ReportGroup *a = find_group(g, ng, "lora", "q_proj,v_proj", 4, 8);
    ck_assert_int_eq(a->n_runs, 2);
    ck_assert_int_eq(a->n_diverged, 1);
    ck_assert(a->seeds[0] == 0 && a->seeds[1] == 1);
    ck_assert_double_eq_tol(a->metric.mean, 2.2, TOL);
    ck_assert_double_eq_tol(a->metric.sd, sqrt(0.08), TOL);
    ck_assert_double_eq_tol(a->wall_s.mean, 11.0, TOL);
    ck_assert_double_eq_tol(a->wall_s.sd, sqrt(2.0), TOL);
    ck_assert_double_eq_tol(a->trainable.mean, 4096, TOL);
    ck_assert_double_eq_tol(a->trainable_pct.mean, 0.4096, TOL);
    ck_assert_double_eq_tol(a->peak_mem.mean, 100.0 * (1 << 20), TOL);
    ck_assert_double_eq_tol(a->train_loss.mean, 2.0, TOL);

    const ReportGroup *b = find_group(g, ng, "lora", "q_proj,v_proj", 8, 16);
    ck_assert_double_eq_tol(b->metric.mean, 1.6, TOL);
    ck_assert_double_eq_tol(b->metric.sd, sqrt(0.02), TOL);
    const ReportGroup *q = find_group(g, ng, "lora", "q_proj,k_proj,v_proj,o_proj", 8, 16);
    ck_assert_double_eq_tol(q->metric.mean, 1.53, TOL);
    ck_assert_double_eq_tol(q->metric.sd, sqrt(0.0018), TOL);
    const ReportGroup *f = find_group(g, ng, "full", "", 0, 0);
    ck_assert_double_eq_tol(f->metric.mean, 1.5, TOL);
    ck_assert_double_eq_tol(f->metric.sd, sqrt(0.02), TOL);
    ck_assert_double_eq_tol(f->trainable_pct.mean, 100.0, TOL);
    const ReportGroup *ada = find_group(g, ng, "adalora", "q_proj,v_proj", 8, 16);
    ck_assert(ada->n_runs == 1 && ada->metric.n == 1 && isnan(ada->metric.sd));
    ck_assert_double_eq_tol(ada->metric.mean, 1.7, TOL);

    /* Pareto (fewer params, lower loss): r=4 a=16, r=8 a=16, q,k,v,o and full; the others are
     * dominated (r=4 a=8 by r=4 a=16 at equal cost; AdaLoRA by r=8 a=16). */
    double cost[7], val[7];
    int front[7];
    for (int i = 0; i < ng; i++) {
        cost[i] = g[i].trainable.mean;
        val[i] = g[i].metric.mean;
    }
    ck_assert_int_eq(report_pareto(cost, val, ng, 0, front), 4);
    int expect[7] = {1, 1, 0, 1, 0, 1, 0}; /* in group order */
    for (int i = 0; i < ng; i++) ck_assert_msg(front[i] == expect[i], "group %d: front %d", i, front[i]);
    /* Best in column: lowest loss is full FT; lowest time the r=4 rows (first of equals). */
    ck_assert_int_eq(report_best(val, ng, 0), 0);
    double wall[7];
    for (int i = 0; i < ng; i++) wall[i] = g[i].wall_s.mean;
    ck_assert_int_eq(report_best(wall, ng, 0), 2);
    ck_assert_int_eq(report_best(val, ng, 1), 2); /* highest: r=4 a=8 (2.2) */
    report_free_groups(g, ng);
    store_free_runs(rows, n);
}
END_TEST

START_TEST(t_pareto_and_best) {
    /* Accuracy (higher is better): (10, .5) (20, .7) (20, .6) (30, .7) (5, NaN) (40, .9) (40, .9). */
    double cost[] = {10, 20, 20, 30, 5, 40, 40}, acc[] = {0.5, 0.7, 0.6, 0.7, NAN, 0.9, 0.9};
    int front[7];
    ck_assert_int_eq(report_pareto(cost, acc, 7, 1, front), 4);
    int expect[7] = {1, 1, 0, 0, 0, 1, 1}; /* exact ties are both on the front */
    for (int i = 0; i < 7; i++) ck_assert_msg(front[i] == expect[i], "point %d", i);
    ck_assert_int_eq(report_best(acc, 7, 1), 5);
    ck_assert_int_eq(report_best(acc, 7, 0), 0);
    double none[] = {NAN, INFINITY};
    ck_assert_int_eq(report_best(none, 2, 0), -1);
    ck_assert_int_eq(report_pareto(cost, acc, 0, 1, front), 0);

    /* A classification sweep reports accuracy. */
    RunRow rows[2];
    memset(rows, 0, sizeof rows);
    char m[] = "lora", t[] = "q_proj";
    for (int i = 0; i < 2; i++) {
        rows[i].method = m;
        rows[i].targets = t;
        rows[i].r = 4;
        rows[i].alpha = 8;
        rows[i].lr = 1e-3;
        rows[i].seed = i;
        rows[i].eval_loss = 1.0;
        rows[i].accuracy = 0.8 + 0.1 * i;
        rows[i].trainable = rows[i].total = rows[i].peak_mem = -1;
        rows[i].wall_s = NAN;
        snprintf(rows[i].status, sizeof rows[i].status, "done");
    }
    ck_assert_int_eq(report_metric_of(rows, 2), REPORT_ACCURACY);
    ReportGroup *g = NULL;
    ck_assert_int_eq(report_aggregate(rows, 2, REPORT_ACCURACY, &g), 1);
    ck_assert_double_eq_tol(g[0].metric.mean, 0.85, TOL);
    ck_assert(isnan(g[0].trainable.mean) && isnan(g[0].peak_mem.mean) && g[0].trainable.n == 0);
    report_free_groups(g, 1);
    ck_assert_int_eq(report_aggregate(rows, 0, REPORT_ACCURACY, &g), 0);
    ck_assert_ptr_null(g);
}
END_TEST

START_TEST(t_curve) {
    /* Runs logged different steps, one with a NaN: the union of steps, n per step. */
    int s0[] = {1, 2, 3}, s1[] = {2, 3, 4};
    double v0[] = {1, 2, 3}, v1[] = {3, NAN, 5};
    const int *steps[] = {s0, s1};
    const double *vals[] = {v0, v1};
    int lens[] = {3, 3};
    ReportCurve c;
    report_curve(2, steps, vals, lens, &c);
    ck_assert_int_eq(c.len, 4);
    int es[] = {1, 2, 3, 4}, en[] = {1, 2, 1, 1};
    double em[] = {1, 2.5, 3, 5};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(c.steps[i], es[i]);
        ck_assert_int_eq(c.n[i], en[i]);
        ck_assert_double_eq_tol(c.mean[i], em[i], TOL);
    }
    ck_assert_double_eq_tol(c.sd[1], sqrt(0.5), TOL);
    ck_assert(isnan(c.sd[0]) && isnan(c.sd[3]));
    report_free_curve(&c);
    report_curve(0, NULL, NULL, NULL, &c);
    ck_assert_int_eq(c.len, 0);
    report_free_curve(&c);
}
END_TEST

START_TEST(t_short_targets) {
    char out[64];
    report_short_targets("q_proj,k_proj,v_proj,o_proj", out, sizeof out);
    ck_assert_str_eq(out, "q,k,v,o");
    report_short_targets("all-linear", out, sizeof out);
    ck_assert_str_eq(out, "all-linear");
    report_short_targets("", out, sizeof out);
    ck_assert_str_eq(out, "-");
    report_short_targets("my_proj_x,gate_proj", out, sizeof out);
    ck_assert_str_eq(out, "my_proj_x,gate");
}
END_TEST

/* ---- render: the full report of the fixture, written once ----------------------------------- */

static char g_db[256], g_out[256];
static LLStatus g_render_st;
static LLError g_render_err;
static ReportSummary g_sum;
static int g_have_gnuplot;

static const char *const FIGS[] = {"curves", "curves_lora", "rank", "rank_alpha", "params", "targets",
                                   "adalora_ranks"};
#define N_FIGS (int)(sizeof FIGS / sizeof FIGS[0])

static void render_setup(void) {
    tu_tmpdir_setup();
    tu_path(g_db, sizeof g_db, "fx.db");
    tu_path(g_out, sizeof g_out, "report");
    write_fixture(g_db, "fx", FX, N_FX);
    g_have_gnuplot = tu_have_program("gnuplot");
    memset(&g_render_err, 0, sizeof g_render_err);
    g_render_st = report_write(g_db, "fx", g_out, &g_sum, &g_render_err);
}

static const ReportFigure *summary_fig(const ReportSummary *s, const char *name) {
    for (int i = 0; i < s->n_figs; i++)
        if (strcmp(s->figs[i].name, name) == 0) return &s->figs[i];
    return NULL;
}

START_TEST(t_render_files) {
    ck_assert_msg(g_render_st == LL_OK, "report_write: %s", g_render_err.msg);
    ck_assert_int_eq(g_sum.n_rows, N_FX);
    ck_assert_int_eq(g_sum.n_done, 13);
    ck_assert_int_eq(g_sum.n_diverged, 1);
    ck_assert_int_eq(g_sum.n_other, 1);
    ck_assert_int_eq(g_sum.n_groups, 7);
    ck_assert_int_eq(g_sum.n_figs, N_FIGS + 1); /* and lr, left out: one learning rate */
    const ReportFigure *lr = summary_fig(&g_sum, "lr");
    ck_assert_msg(lr && lr->skipped && strstr(lr->note, "every method ran at a single learning rate (full FT 0.001, "
                                                        "LoRA 0.001, AdaLoRA 0.001)"),
                  "lr: %s", lr ? lr->note : "absent");
    static const char *const always[] = {"table.md", "table.tex", "index.html"};
    char p[512], name[128];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", g_out, always[i]);
        ck_assert_msg(file_size(p) > 0, "%s missing or empty", p);
    }
    if (!g_have_gnuplot) printf("SKIPPED: rendered figures not checked: gnuplot not installed (scripts/deps.sh)\n");
    for (int i = 0; i < N_FIGS; i++) {
        const ReportFigure *f = summary_fig(&g_sum, FIGS[i]);
        ck_assert_msg(f != NULL, "figure %s absent from the summary", FIGS[i]);
        ck_assert_msg(!f->skipped, "figure %s left out: %s", FIGS[i], f->note);
        ck_assert_int_eq(f->rendered, g_have_gnuplot);
        static const char *const ext[] = {"gp", "dat", "pdf", "svg", "png"};
        for (int e = 0; e < (g_have_gnuplot ? 5 : 2); e++) {
            snprintf(name, sizeof name, "%s.%s", FIGS[i], ext[e]);
            snprintf(p, sizeof p, "%s/%s", g_out, name);
            ck_assert_msg(file_size(p) > 0, "%s missing or empty", p);
        }
        /* Scripts are self-contained: reset first, close the output last, no absolute paths. */
        snprintf(p, sizeof p, "%s/%s.gp", g_out, FIGS[i]);
        char *gp = tu_slurp(p, NULL);
        ck_assert_ptr_nonnull(gp);
        ck_assert_ptr_nonnull(strstr(gp, "\nreset\n"));
        size_t len = strlen(gp);
        ck_assert_msg(len > 13 && strcmp(gp + len - 13, "unset output\n") == 0, "%s does not end with unset output",
                      p);
        /* Only statements the report writes (tests/gp_check.h), in the script and its data. */
        char why[256];
        ck_assert_msg(gp_check_script(gp, strlen(gp), why, sizeof why), "%s: %s", p, why);
        snprintf(p, sizeof p, "%s/%s.dat", g_out, FIGS[i]);
        char *dat = tu_slurp(p, NULL);
        ck_assert_msg(gp_check_data(dat, strlen(dat), why, sizeof why), "%s: %s", p, why);
        free(dat);
        snprintf(p, sizeof p, "%s/%s.gp", g_out, FIGS[i]);
        /* Only the provenance comments may name the database's path. */
        for (const char *line = gp; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
            const char *end = strchr(line, '\n'), *hit = strstr(line, tu_dir);
            ck_assert_msg(line[0] == '#' || !hit || (end && hit > end), "%s uses an absolute path: %.80s", p, line);
        }
        free(gp);
    }
    /* A PNG is a PNG, a PDF a PDF. */
    if (g_have_gnuplot) {
        snprintf(p, sizeof p, "%s/rank.png", g_out);
        char *png = tu_slurp(p, NULL);
        ck_assert(png && memcmp(png, "\x89PNG", 4) == 0);
        free(png);
        snprintf(p, sizeof p, "%s/rank.pdf", g_out);
        char *pdf = tu_slurp(p, NULL);
        ck_assert(pdf && memcmp(pdf, "%PDF", 4) == 0);
        free(pdf);
    }
    /* The figures' notes: bands over two seeds, full FT as reference. */
    const ReportFigure *c = summary_fig(&g_sum, "curves");
    ck_assert_ptr_nonnull(strstr(c->note, "±1 sd"));
    const ReportFigure *pa = summary_fig(&g_sum, "params");
    ck_assert_ptr_nonnull(strstr(pa->note, "4 of 7 configurations on the Pareto front"));
}
END_TEST

START_TEST(t_render_data) {
    ck_assert_msg(g_render_st == LL_OK, "report_write: %s", g_render_err.msg);
    char p[512];
    /* rank.dat: the best LoRA configuration at r=4 is alpha=16 (1.95), at r=8 q,k,v,o (1.53). */
    snprintf(p, sizeof p, "%s/rank.dat", g_out);
    char *d = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_msg(strstr(d, "\n4 1.95 0.0707106781 2 16 0.001\n") != NULL, "rank.dat:\n%s", d);
    ck_assert_msg(strstr(d, "\n8 1.53 0.0424264069 2 16 0.001\n") != NULL, "rank.dat:\n%s", d);
    free(d);
    /* The Pareto block of params.dat, ascending in parameters. */
    snprintf(p, sizeof p, "%s/params.dat", g_out);
    d = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_msg(strstr(d, "# Pareto front: trainable mean (ascending)\n4096 1.95\n8192 1.6\n16384 1.53\n"
                            "1000000 1.5\n") != NULL,
                  "params.dat:\n%s", d);
    free(d);
    /* The AdaLoRA heatmap: layer 1, v_proj (module index 1) has rank 3 of 8. */
    snprintf(p, sizeof p, "%s/adalora_ranks.dat", g_out);
    d = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_msg(strstr(d, "\n1 1 3 3 0xffffff 8 1\n") != NULL, "adalora_ranks.dat:\n%s", d);
    free(d);
    /* curves.dat: the eval loss of LoRA q,k,v,o r=8 averaged over two seeds at step 10. */
    snprintf(p, sizeof p, "%s/curves.dat", g_out);
    d = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_msg(strstr(d, "\n10 1.53 0.0424264069 2\n") != NULL, "curves.dat:\n%s", d);
    free(d);
}
END_TEST

START_TEST(t_render_tables) {
    ck_assert_msg(g_render_st == LL_OK, "report_write: %s", g_render_err.msg);
    char p[512];
    snprintf(p, sizeof p, "%s/table.md", g_out);
    char *md = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(md);
    /* Means ± 95% intervals over two seeds (t = 12.7062): they all overlap, so nothing is bold;
     * diverged runs are said; the time and parameter columns are never bold. */
    ck_assert_msg(strstr(md, "| full FT | all | - | - | 0.001 | 1,000,000 | 100% | 1.5000 ± 1.2706 | 2 | 32.0 s | "
                             "400.0 MiB |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "| LoRA | q,v | 4 | 8 | 0.001 | 4,096 | 0.41% | 2.2000 ± 2.5412 | 2 (+1 diverged) | "
                             "11.0 s | 100.0 MiB |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "| AdaLoRA | q,v | 8 | 16 | 0.001 | 9,000 | 0.9% | 1.7000 | 1 |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "**") == NULL, "table.md:\n%s", md);
    /* No configuration shares its five fields with another: no variant column. */
    ck_assert_msg(strstr(md, "variant") == NULL, "table.md:\n%s", md);
    free(md);
    snprintf(p, sizeof p, "%s/table.tex", g_out);
    char *tex = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(tex);
    ck_assert_ptr_nonnull(strstr(tex, "\\toprule"));
    ck_assert_ptr_nonnull(strstr(tex, "\\bottomrule"));
    ck_assert_msg(strstr(tex, "1.5000 $\\pm$ 1.2706") != NULL, "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, "\\textbf") == NULL, "table.tex:\n%s", tex);
    /* Targets abbreviated, the letters explained in the caption. */
    ck_assert_msg(strstr(tex, "LoRA & QKVO & 8 & 16 & 1.5300 $\\pm$ 0.3812 & 2 \\\\") != NULL,
                  "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, "Targets: Q = q\\_proj, K = k\\_proj, V = v\\_proj, O = o\\_proj.}") != NULL,
                  "table.tex:\n%s", tex);
    free(tex);
    snprintf(p, sizeof p, "%s/index.html", g_out);
    char *html = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(strstr(html, "<td class=\"num\">1.5000 ± 1.2706</td>"));
    int imgs = 0;
    for (const char *q = html; (q = strstr(q, "<img ")); q++) imgs++;
    ck_assert_int_eq(imgs, g_have_gnuplot ? N_FIGS : 0);
    free(html);
}
END_TEST

/* The .gp reproduces its renderings when run by hand in its folder. */
START_TEST(t_render_by_hand) {
    ck_assert_msg(g_render_st == LL_OK, "report_write: %s", g_render_err.msg);
    if (!g_have_gnuplot) {
        printf("SKIPPED: re-rendering by hand not checked: gnuplot not installed (scripts/deps.sh)\n");
        return;
    }
    char p[512];
    snprintf(p, sizeof p, "%s/targets.png", g_out);
    ck_assert_int_eq(unlink(p), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot -e 'formats=\"png\"' targets.gp 2>&1", g_out);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_gt(file_size(p), 0);
}
END_TEST

/* Runs argv with stdout into out_path; kills it after timeout_s. Returns the exit status, or -1. */
static int run_capture(char *const argv[], const char *out_path, int timeout_s) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int dn = open("/dev/null", O_RDWR);
        if (fd < 0 || dn < 0) _exit(126);
        dup2(dn, 0);
        dup2(fd, 1);
        dup2(dn, 2);
        setpgid(0, 0); /* its own group: a timeout kills the browser's helpers too */
        execv(argv[0], argv);
        _exit(127);
    }
    setpgid(pid, pid);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int wst = 0;
        pid_t r = waitpid(pid, &wst, WNOHANG);
        if (r == pid) return WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > timeout_s) {
            kill(-pid, SIGKILL);
            waitpid(pid, &wst, 0);
            return -1;
        }
        struct timespec nap = {0, 50 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

START_TEST(t_index_in_chromium) {
    ck_assert_msg(g_render_st == LL_OK, "report_write: %s", g_render_err.msg);
    if (access("/usr/bin/chromium", X_OK) != 0) {
        printf("SKIPPED: chromium not installed (scripts/deps.sh --browser)\n");
        return;
    }
    if (!g_have_gnuplot) {
        printf("SKIPPED: index.html in chromium not checked: gnuplot not installed, no images (scripts/deps.sh)\n");
        return;
    }
    char profile[512], url[600], udd[600], dom[512];
    snprintf(profile, sizeof profile, "%s/chromium-profile", tu_dir);
    ck_assert_int_eq(mkdir(profile, 0700), 0);
    snprintf(udd, sizeof udd, "--user-data-dir=%s", profile);
    snprintf(url, sizeof url, "file://%s/index.html", g_out);
    snprintf(dom, sizeof dom, "%s/dom.html", tu_dir);
    char *argv[] = {"/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", udd, "--virtual-time-budget=5000", "--dump-dom", url, NULL};
    int rc = run_capture(argv, dom, 25);
    ck_assert_msg(rc == 0, "chromium exited with %d", rc);
    char *html = tu_slurp(dom, NULL);
    ck_assert_ptr_nonnull(html);
    char want[64];
    snprintf(want, sizeof want, "images: loaded %d/%d", N_FIGS, N_FIGS);
    ck_assert_msg(strstr(html, want) != NULL, "chromium's DOM lacks '%s': %.400s", want,
                  strstr(html, "img-status") ? strstr(html, "img-status") : "(no status element)");
    free(html);
}
END_TEST

/* ---- limits: absent data, empty and foreign databases, no gnuplot ---------------------------- */

/* PATH set for one call (restored, so the tests also hold with CK_FORK=no). */
static char *path_override(const char *path) {
    const char *old = getenv("PATH");
    char *saved = strdup(old ? old : "/usr/bin:/bin");
    setenv("PATH", path, 1);
    return saved;
}

static void path_restore(char *saved) {
    setenv("PATH", saved, 1);
    free(saved);
}

/* One LoRA configuration, one seed: every comparison figure is left out with its reason, the
 * curves are drawn without a band. */
START_TEST(t_skipped_figures) {
    char db[256], out[256], p[512];
    LLError err = {0};
    static const FxRun one[] = {{"lora", "q_proj,v_proj", 8, 16, 0, "done", 1.5, 10, 8192, 100}};
    write_fixture(tu_path(db, sizeof db, "one.db"), "one", one, 1);
    tu_path(out, sizeof out, "one-report");
    ReportSummary sum;
    /* No gnuplot needed for what is checked here: keep the test fast. */
    char *old_path = path_override("/nonexistent");
    LLStatus st = report_write(db, NULL, out, &sum, &err);
    path_restore(old_path);
    CK_OK(st);
    ck_assert_int_eq(sum.gnuplot_missing, 1);
    static const struct {
        const char *name, *reason;
    } want[] = {{"rank", "fewer than 2 ranks in the runs (only r=8)"},
                {"rank_alpha", "no rank was run with two alphas or more (r=8: alpha=16)"},
                {"params", "fewer than 2 configurations"},
                {"targets", "a single target-module set in the adapter runs (q,v)"},
                {"adalora_ranks", "no AdaLoRA runs"}};
    snprintf(p, sizeof p, "%s/index.html", out);
    char *html = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(html);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const ReportFigure *f = summary_fig(&sum, want[i].name);
        ck_assert_msg(f && f->skipped, "%s not left out", want[i].name);
        ck_assert_msg(strstr(f->note, want[i].reason) != NULL, "%s: '%s'", want[i].name, f->note);
        ck_assert_msg(strstr(html, want[i].reason) != NULL, "index.html lacks '%s'", want[i].reason);
        snprintf(p, sizeof p, "%s/%s.gp", out, want[i].name);
        ck_assert_int_eq(ll_file_exists(p), 0);
    }
    const ReportFigure *c = summary_fig(&sum, "curves");
    ck_assert(c && !c->skipped && !c->rendered);
    ck_assert_ptr_nonnull(strstr(c->note, "single seed"));
    ck_assert_ptr_null(summary_fig(&sum, "curves_lora")); /* one configuration: no per-method figure */
    /* Without gnuplot: scripts, data and tables are written, and the index says how to render. */
    static const char *const files[] = {"curves.gp", "curves.dat", "table.md", "table.tex"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", out, files[i]);
        ck_assert_msg(file_size(p) > 0, "%s missing", p);
    }
    snprintf(p, sizeof p, "%s/curves.png", out);
    ck_assert_int_eq(ll_file_exists(p), 0);
    ck_assert_ptr_nonnull(strstr(html, "scripts/deps.sh"));
    ck_assert_ptr_null(strstr(html, "<img "));
    /* The curves script draws no band for one seed. */
    snprintf(p, sizeof p, "%s/curves.gp", out);
    char *gp = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(gp);
    ck_assert_ptr_null(strstr(gp, "filledcurves"));
    free(gp);
    free(html);
}
END_TEST

START_TEST(t_empty_and_unknown) {
    char db[256], out[256];
    LLError err = {0};
    store_close(tu_store_open(tu_path(db, sizeof db, "empty.db"), 0));
    tu_path(out, sizeof out, "empty-report");
    ReportSummary sum;
    ck_assert_int_eq(report_write(db, NULL, out, &sum, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "holds no runs: nothing to report") != NULL, "%s", err.msg);
    ck_assert_int_eq(ll_file_exists(out), 0);

    /* A sweep that is not there: the message names the sweeps that are. */
    static const FxRun one[] = {{"lora", "q_proj", 4, 8, 0, "done", 1.0, 1, 10, 1}};
    write_fixture(db, "present", one, 1);
    ck_assert_int_eq(report_write(db, "absent", out, &sum, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "no runs of sweep 'absent'") && strstr(err.msg, "its sweeps: present"), "%s",
                  err.msg);

    /* Only unfinished runs. */
    static const FxRun pend[] = {{"lora", "q_proj", 4, 8, 0, "pending", NAN, NAN, -1, -1}};
    write_fixture(db, "later", pend, 1);
    ck_assert_int_eq(report_write(db, "later", out, &sum, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "none done") != NULL, "%s", err.msg);

    /* No database at all. */
    ck_assert_int_eq(report_write(tu_path(db, sizeof db, "missing.db"), NULL, out, &sum, &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "no database at") != NULL, "%s", err.msg);
    ck_assert_int_eq(report_write(NULL, NULL, out, &sum, &err), LL_ERR_CONFIG);
}
END_TEST

START_TEST(t_newer_schema) {
    char db[256], out[256];
    LLError err = {0};
    store_close(tu_store_open(tu_path(db, sizeof db, "newer.db"), 0));
    /* user_version lives at offset 60 of the header, big-endian. */
    int fd = open(db, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    unsigned char v[4] = {0, 0, 0, 99};
    ck_assert_int_eq(pwrite(fd, v, 4, 60), 4);
    close(fd);
    ReportSummary sum;
    ck_assert_int_eq(report_write(db, NULL, tu_path(out, sizeof out, "newer-report"), &sum, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "upgrade loralab") != NULL, "%s", err.msg);
}
END_TEST

/* gnuplot that fails: LL_ERR_IO with its exit status and stderr; the other figures, the tables
 * and the index are still written, and the index says which figure failed. */
START_TEST(t_gnuplot_fails) {
    char db[256], out[256], bin[256], p[512];
    LLError err = {0};
    static const FxRun one[] = {{"lora", "q_proj", 4, 8, 0, "done", 1.0, 1, 10, 1}};
    write_fixture(tu_path(db, sizeof db, "fail.db"), "f", one, 1);
    tu_path(bin, sizeof bin, "fakebin");
    ck_assert_int_eq(mkdir(bin, 0755), 0);
    snprintf(p, sizeof p, "%s/gnuplot", bin);
    FILE *fp = fopen(p, "w");
    ck_assert_ptr_nonnull(fp);
    fputs("#!/bin/sh\necho \"\\\"$1\\\" line 7: invalid command\" >&2\nexit 3\n", fp);
    fclose(fp);
    ck_assert_int_eq(chmod(p, 0755), 0);
    char *old_path = path_override(bin);
    ReportSummary sum;
    LLStatus st = report_write(db, NULL, tu_path(out, sizeof out, "fail-report"), &sum, &err);
    path_restore(old_path);
    ck_assert_int_eq(st, LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "gnuplot failed on") && strstr(err.msg, "curves.gp (exit status 3)") &&
                      strstr(err.msg, "\"curves.gp\" line 7: invalid command"),
                  "%s", err.msg);
    ck_assert_int_eq(sum.gnuplot_missing, 0);
    const ReportFigure *c = summary_fig(&sum, "curves");
    ck_assert(c && !c->rendered && strstr(c->note, "NOT RENDERED"));
    snprintf(p, sizeof p, "%s/index.html", out);
    char *html = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(strstr(html, "gnuplot failed"));
    free(html);
    snprintf(p, sizeof p, "%s/table.md", out);
    ck_assert_int_gt(file_size(p), 0);
}
END_TEST

/* The command's exit codes and messages, when the command is built (make test builds it). */
START_TEST(t_command) {
    const char *bin = "build/loralab";
    if (access(bin, X_OK) != 0) {
        printf("SKIPPED: %s not built: `loralab report` exit codes not checked\n", bin);
        return;
    }
    char db[256], out[256], cmd[1024];
    store_close(tu_store_open(tu_path(db, sizeof db, "cmd.db"), 0));
    tu_path(out, sizeof out, "cmd-report");
    snprintf(cmd, sizeof cmd, "%s report --db '%s' --out '%s' >/dev/null 2>&1", bin, db, out);
    int rc = system(cmd);
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "empty database: exit %d", WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "%s report --bogus >/dev/null 2>&1", bin);
    rc = system(cmd);
    ck_assert_int_eq(WEXITSTATUS(rc), 2);
    static const FxRun one[] = {{"lora", "q_proj", 4, 8, 0, "done", 1.0, 1, 10, 1}};
    write_fixture(db, "c", one, 1);
    snprintf(cmd, sizeof cmd, "PATH=/nonexistent %s report --db '%s' --out '%s' >/dev/null 2>&1", bin, db, out);
    rc = system(cmd);
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "no gnuplot: exit %d", WEXITSTATUS(rc));
    /* One folder per sweep under --out, and an index linking them. */
    snprintf(cmd, sizeof cmd, "%s/c/table.md", out);
    ck_assert_int_gt(file_size(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/index.html", out);
    char *root = tu_slurp(cmd, NULL);
    ck_assert_msg(root && strstr(root, "<a href=\"c/index.html\">"), "%s", root ? root : "(none)");
    free(root);
}
END_TEST

/* ---- hostile: a database written to attack the report --------------------------------------- */

/* Every string a database can carry into a figure, a table or the index, each with a newline and
 * a command after it, quotes, backslashes (a trailing one continues a gnuplot comment), gnuplot
 * backquotes and macros, LaTeX and HTML specials. Each command would create a file PWNED...; the
 * test looks for any such file. */
#define HX_NL_SYSTEM "\nsystem(\"touch PWNED_a\")\n"
static const char *const HX_METHOD1 = "lora" HX_NL_SYSTEM "x\\";
static const char *const HX_METHOD2 = "m'; system('touch PWNED_b') #\\";
static const char *const HX_METHOD3 = "LoRA"; /* curves_LoRA must not overwrite curves_lora */
static const char *const HX_TARGETS = "q_proj\n!touch PWNED_c\n,v_proj`touch PWNED_d`\\";
static const char *const HX_SWEEP = "sweep" HX_NL_SYSTEM "'\"\\";
static const char *const HX_KEY_MEMBER = "adapter.drop\n!touch PWNED_e\n";
static const char *const HX_VALUES[] = {"\"`touch PWNED_f`\" @x <script>alert(1)</script>",
                                        "\\input{/etc/passwd} | a | b |\n\n\\end{table}' \\"};
static const char *const HX_MODULE = "q_proj'\nsystem('touch PWNED_g')";

/* Writes the hostile database at db: LoRA under a hostile method name and under "lora" and
 * "LoRA", a second hostile method, AdaLoRA with a hostile module name, full fine-tuning; hostile
 * targets, config members, run keys and sweep name; two seeds each; NaN and Inf in the curves. */
static void write_hostile_db(const char *db) {
    LLError err = {0};
    Store *s = tu_store_open(db, 0);
    int64_t sw = 0;
    CK_OK(store_upsert_sweep(s, HX_SWEEP, "cfg\n!touch PWNED_h", "x", &sw, &err));
    static const struct {
        const char *const *method;
        int r, variant;
        double alpha;
    } cfgs[] = {{&HX_METHOD1, 4, 0, 8},  {&HX_METHOD1, 4, 1, 8},  {&HX_METHOD1, 8, 0, 16}, {&HX_METHOD2, 4, 0, 8},
                {&HX_METHOD2, 8, 1, 8},  {&HX_METHOD3, 4, 0, 8},  {&HX_METHOD3, 8, 0, 8},  {NULL, 4, 0, 8},
                {NULL, 8, 1, 16},        {NULL, 16, 0, 32}};
    static const char *const lora = "lora", *const adalora = "adalora", *const full = "full";
    int n_run = 0;
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0] + 2; c++) {
        const char *method = c < 10 ? (cfgs[c].method ? *cfgs[c].method : lora) : c == 10 ? adalora : full;
        int r = c < 10 ? cfgs[c].r : c == 10 ? 8 : 0;
        double alpha = c < 10 ? cfgs[c].alpha : c == 10 ? 16 : 0;
        const char *targets = c == 11 ? "" : c == 9 ? "q_proj" : HX_TARGETS;
        for (int seed = 0; seed < 2; seed++) {
            cJSON *cfg = cJSON_CreateObject();
            cJSON_AddStringToObject(cfg, "adapter.method", method);
            cJSON_AddStringToObject(cfg, "adapter.targets", targets);
            cJSON_AddNumberToObject(cfg, "adapter.r", r);
            cJSON_AddNumberToObject(cfg, "adapter.alpha", alpha);
            cJSON_AddNumberToObject(cfg, "train.seed", seed);
            cJSON_AddStringToObject(cfg, HX_KEY_MEMBER, HX_VALUES[c < 10 ? cfgs[c].variant : 0]);
            char *json = cJSON_PrintUnformatted(cfg);
            cJSON_Delete(cfg);
            char key[64];
            snprintf(key, sizeof key, "k%d\nsystem(\"touch PWNED_k\")", n_run++);
            RunInfo in = {key, json, method, targets, r, alpha, 1e-3, seed};
            int64_t run = 0;
            CK_OK(store_add_run(s, sw, &in, &run, &err));
            cJSON_free(json);
            int claimed = 0;
            CK_OK(store_claim_run(s, run, &claimed, &err));
            for (int step = 0; step <= 6; step++) {
                double tl = 3.0 - 0.1 * step - 0.01 * (double)c;
                if (seed && step == 2) tl = NAN;
                if (seed && step == 3) tl = INFINITY;
                CK_OK(store_add_metric(s, run, step, "train", "loss", tl, &err));
                if (step % 3 == 0) CK_OK(store_add_metric(s, run, step, "eval", "loss", tl + 0.2, &err));
            }
            if (method == adalora)
                for (int l = 0; l < 2; l++) {
                    CK_OK(store_add_rank(s, run, l, HX_MODULE, 3 + l, 8, &err));
                    CK_OK(store_add_rank(s, run, l, "v_proj", 5 - l, 8, &err));
                }
            double el = 2.0 - 0.01 * (double)c - 0.002 * r + 0.01 * seed;
            RunResult res = {"done", 1000.0, 10.0 + seed, 1000 * (r + 1), TOTAL_PARAMS, 100 << 20, 2.5, el,
                             exp(el), NAN, NAN, "error\n!touch PWNED_i", NULL};
            CK_OK(store_finish_run(s, run, &res, &err));
        }
    }
    store_close(s);
}

/* nftw callback: counts entries whose name starts with PWNED. */
static int g_pwned;
static int count_pwned(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag;
    if (strncmp(path + ftw->base, "PWNED", 5) == 0) g_pwned++;
    return 0;
}

/* Runs argv (no shell); stdout and stderr into log. Returns the exit status, or -1. */
static int run_argv(char *const argv[], const char *log) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int wst = 0;
    if (waitpid(pid, &wst, 0) != pid) return -1;
    return WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
}

/* The one folder in dir (hidden entries aside), as dir/NAME into out; 0 when there is not exactly one. */
static int only_subdir(const char *dir, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode) && n++ == 0) snprintf(out, cap, "%s", p);
    }
    closedir(d);
    return n == 1;
}

/* `loralab report` on the hostile database, through the real binary, with gnuplot when there is
 * one: exit 0, no PWNED file anywhere, every script and data file holds only what the report
 * writes (tests/gp_check.h), the tables and the index show the values as text. */
START_TEST(t_hostile_database) {
    char bin[1024], cwd[900];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(bin, sizeof bin, "%s/build/loralab", cwd);
    if (access(bin, X_OK) != 0) {
        printf("SKIPPED: build/loralab not built: the hostile database not checked end to end\n");
        return;
    }
    char db[512], out[512], log[512], p[1024];
    /* The database's own path is hostile too: it is quoted in comments and the index. */
    tu_path(db, sizeof db, "db" HX_NL_SYSTEM "'`touch PWNED_p`\\.db");
    write_hostile_db(db);
    tu_path(out, sizeof out, "out");
    tu_path(log, sizeof log, "report.log");
    char *argv[] = {bin, "report", "--db", db, "--out", out, NULL};
    int rc = run_argv(argv, log);
    char *said = tu_slurp(log, NULL);
    ck_assert_msg(rc == 0, "loralab report exited %d:\n%s", rc, said);
    g_pwned = 0;
    ck_assert_int_eq(nftw(tu_dir, count_pwned, 16, FTW_PHYS), 0);
    ck_assert_int_eq(nftw(cwd, count_pwned, 16, FTW_PHYS), 0);
    ck_assert_msg(g_pwned == 0, "%d PWNED file(s) were created", g_pwned);
    /* The terminal output carries no control character but newlines. */
    for (const char *q = said; *q; q++)
        ck_assert_msg((unsigned char)*q >= 0x20 || *q == '\n', "control character 0x%02x in the output:\n%s",
                      (unsigned char)*q, said);
    free(said);
    int have_gnuplot = tu_have_program("gnuplot");
    /* The report of the one sweep is in its folder under out, named after the sweep as a file stem. */
    ck_assert_msg(only_subdir(out, p, sizeof p), "no single unit folder in %s", out);
    ck_assert_msg(strncmp(p + strlen(out) + 1, "sweep_system_", 13) == 0, "unit folder %s", p);
    snprintf(out, sizeof out, "%s", p);
    /* Each written figure: a clean script and clean data; rendered when gnuplot exists. */
    ReportSummary sum;
    LLError err = {0};
    char *old_path = path_override("/nonexistent"); /* the summary only: no second rendering */
    tu_path(p, sizeof p, "out2");
    CK_OK(report_write(db, NULL, p, &sum, &err));
    path_restore(old_path);
    int n_lora_curves = 0, n_written = 0;
    for (int i = 0; i < sum.n_figs; i++) {
        const ReportFigure *f = &sum.figs[i];
        n_lora_curves += strncasecmp(f->name, "curves_lora", 11) == 0;
        if (f->skipped) continue;
        n_written++;
        static const char *const ext[] = {"gp", "dat", "pdf", "svg", "png"};
        for (int e = 0; e < (have_gnuplot ? 5 : 2); e++) {
            snprintf(p, sizeof p, "%s/%s.%s", out, f->name, ext[e]);
            ck_assert_msg(file_size(p) > 0, "%s missing or empty", p);
        }
        size_t len = 0;
        char why[256];
        snprintf(p, sizeof p, "%s/%s.gp", out, f->name);
        char *gp = tu_slurp(p, &len);
        ck_assert_msg(gp_check_script(gp, len, why, sizeof why), "%s: %s\n%s", p, why, gp);
        free(gp);
        snprintf(p, sizeof p, "%s/%s.dat", out, f->name);
        char *dat = tu_slurp(p, &len);
        ck_assert_msg(gp_check_data(dat, len, why, sizeof why), "%s: %s\n%s", p, why, dat);
        free(dat);
    }
    ck_assert_int_ge(n_written, 6);
    ck_assert_int_eq(n_lora_curves, 3); /* "lora...x\", "lora" and "LoRA": three distinct stems */
    /* Tables and index: the values are there as text, never as markup. */
    snprintf(p, sizeof p, "%s/table.tex", out);
    char *tex = tu_slurp(p, NULL);
    ck_assert_msg(strstr(tex, "\\input{") == NULL && strstr(tex, "\\end{table}'") == NULL, "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, "\\textbackslash{}input\\{/etc/passwd\\}") != NULL, "table.tex:\n%s", tex);
    for (const char *q = strchr(tex, '\n'); q; q = strchr(q + 1, '\n'))
        ck_assert_msg(strncmp(q + 1, "system", 6) != 0 && strncmp(q + 1, "!touch", 6) != 0, "table.tex:\n%s", tex);
    free(tex);
    snprintf(p, sizeof p, "%s/table.md", out);
    char *md = tu_slurp(p, NULL);
    ck_assert_msg(strstr(md, "<script>") == NULL && strstr(md, "\\| a \\| b \\|") != NULL, "table.md:\n%s", md);
    for (const char *q = strchr(md, '\n'); q; q = strchr(q + 1, '\n'))
        ck_assert_msg(strncmp(q + 1, "system", 6) != 0 && strncmp(q + 1, "!touch", 6) != 0, "table.md:\n%s", md);
    free(md);
    snprintf(p, sizeof p, "%s/index.html", out);
    char *html = tu_slurp(p, NULL);
    ck_assert_msg(strstr(html, "<script>alert") == NULL && strstr(html, "&lt;script&gt;alert(1)") != NULL,
                  "index.html:\n%s", html);
    free(html);
}
END_TEST

/* ---- core: grouping by configuration, variants ------------------------------------------------ */

/* A done LoRA q,v r=8 alpha=16 lr=1e-3 row with the given config (NULL: none), seed and loss. */
static void mem_row(RunRow *r, int64_t id, const char *config, int64_t seed, double eval_loss) {
    static char method[] = "lora", targets[] = "q_proj,v_proj";
    memset(r, 0, sizeof *r);
    r->id = id;
    r->config_json = (char *)config;
    r->method = method;
    r->targets = targets;
    r->r = 8;
    r->alpha = 16;
    r->lr = 1e-3;
    r->seed = seed;
    snprintf(r->status, sizeof r->status, "done");
    r->eval_loss = eval_loss;
    r->train_loss = r->wall_s = r->accuracy = r->macro_f1 = NAN;
    r->trainable = r->total = r->peak_mem = -1;
}

/* A canonical config of that row: sorted keys, the seed in train.seed and adapter.seed, members
 * (may be "") between adapter.r and adapter.seed (where "adapter.dropout" would not sort: the
 * report sorts). */
static const char *mem_config(char *out, size_t cap, const char *members, int seed) {
    snprintf(out, cap,
             "{\"adapter.alpha\":16,\"adapter.method\":\"lora\",\"adapter.r\":8%s%s,\"adapter.seed\":%d,"
             "\"adapter.targets\":[\"q_proj\",\"v_proj\"],\"base.steps\":1200,\"train.lr\":0.001,"
             "\"train.seed\":%d}",
             *members ? "," : "", members, seed, seed);
    return out;
}

/* (a) Two dropout values x seeds {0, 1}: two groups of two seeds, not one of four. */
START_TEST(t_group_by_config) {
    char c[4][512];
    RunRow rows[4];
    /* dropout 0.1 first: the groups are sorted by value, not by first appearance. */
    mem_row(&rows[0], 1, mem_config(c[0], sizeof c[0], "\"adapter.dropout\":0.1", 0), 0, 1.5);
    mem_row(&rows[1], 2, mem_config(c[1], sizeof c[1], "\"adapter.dropout\":0", 0), 0, 2.0);
    mem_row(&rows[2], 3, mem_config(c[2], sizeof c[2], "\"adapter.dropout\":0", 1), 1, 2.2);
    mem_row(&rows[3], 4, mem_config(c[3], sizeof c[3], "\"adapter.dropout\":0.1", 1), 1, 1.9);
    ReportGroup *g = NULL;
    int ng = report_aggregate(rows, 4, REPORT_EVAL_LOSS, &g);
    ck_assert_int_eq(ng, 2);
    ck_assert_str_eq(g[0].variant, "dropout=0");
    ck_assert_str_eq(g[1].variant, "dropout=0.1");
    ck_assert(g[0].n_runs == 2 && g[1].n_runs == 2);
    ck_assert(g[0].run_ids[0] == 2 && g[0].run_ids[1] == 3 && g[0].seeds[0] == 0 && g[0].seeds[1] == 1);
    ck_assert(g[1].run_ids[0] == 1 && g[1].run_ids[1] == 4);
    ck_assert_double_eq_tol(g[0].metric.mean, 2.1, TOL);
    ck_assert_double_eq_tol(g[0].metric.sd, sqrt(0.02), TOL);
    ck_assert_double_eq_tol(g[1].metric.mean, 1.7, TOL);
    ck_assert_double_eq_tol(g[1].metric.sd, sqrt(0.08), TOL);
    /* The group's config: sorted, without the seeds. */
    ck_assert_ptr_nonnull(g[1].config);
    ck_assert_msg(strstr(g[1].config, "seed") == NULL, "%s", g[1].config);
    ck_assert_msg(strncmp(g[1].config, "{\"adapter.alpha\":16,\"adapter.dropout\":0.1,\"adapter.method\"", 58) == 0,
                  "%s", g[1].config);
    report_free_groups(g, ng);
}
END_TEST

/* (b) Configs that differ only in the seed members form one group with no variant; so do
 * spellings of one number (1e-3, 0.001) and members in another order. */
START_TEST(t_group_seeds_only) {
    char c0[512];
    const char *c1 = "{\"train.seed\":7,\"train.lr\":1e-3,\"base.steps\":1200,\"adapter.targets\":[\"q_proj\","
                     "\"v_proj\"],\"adapter.seed\":7,\"adapter.r\":8,\"adapter.method\":\"lora\",\"adapter.alpha\":16}";
    RunRow rows[2];
    mem_row(&rows[0], 1, mem_config(c0, sizeof c0, "", 0), 0, 2.0);
    mem_row(&rows[1], 2, c1, 7, 2.4);
    ReportGroup *g = NULL;
    int ng = report_aggregate(rows, 2, REPORT_EVAL_LOSS, &g);
    ck_assert_int_eq(ng, 1);
    ck_assert_int_eq(g[0].n_runs, 2);
    ck_assert(g[0].seeds[0] == 0 && g[0].seeds[1] == 7);
    ck_assert_str_eq(g[0].variant, "");
    ck_assert_double_eq_tol(g[0].metric.mean, 2.2, TOL);
    ck_assert_double_eq_tol(g[0].metric.sd, sqrt(0.08), TOL);
    report_free_groups(g, ng);
}
END_TEST

/* (c) train.precision is in the config only at bf16: absent (fp32) and bf16 are two groups, and
 * the absent side reads as its default. */
START_TEST(t_group_precision) {
    char c[4][512];
    RunRow rows[4];
    for (int s = 0; s < 2; s++) {
        mem_row(&rows[2 * s], 2 * s + 1, mem_config(c[2 * s], sizeof c[2 * s], "\"train.precision\":\"bf16\"", s), s,
                1.0 + s);
        mem_row(&rows[2 * s + 1], 2 * s + 2, mem_config(c[2 * s + 1], sizeof c[2 * s + 1], "", s), s, 3.0 + s);
    }
    ReportGroup *g = NULL;
    int ng = report_aggregate(rows, 4, REPORT_EVAL_LOSS, &g);
    ck_assert_int_eq(ng, 2);
    /* The absent member sorts first. */
    ck_assert_str_eq(g[0].variant, "precision=fp32");
    ck_assert_str_eq(g[1].variant, "precision=bf16");
    ck_assert(g[0].n_runs == 2 && g[1].n_runs == 2);
    ck_assert_double_eq_tol(g[0].metric.mean, 3.5, TOL);
    ck_assert_double_eq_tol(g[1].metric.mean, 1.5, TOL);
    report_free_groups(g, ng);
}
END_TEST

/* Variant text: only the members that differ, in key order; a prefix kept where the short name
 * is taken (base.steps), dropped elsewhere; other keys absent on one side read "default";
 * strings unquoted, other values as JSON; lone groups have none. */
START_TEST(t_variant_names) {
    char c[5][512];
    RunRow rows[5];
    mem_row(&rows[0], 1, mem_config(c[0], sizeof c[0], "\"adapter.dropout\":0,\"train.steps\":600", 0), 0, 1.0);
    mem_row(&rows[1], 2, mem_config(c[1], sizeof c[1], "\"adapter.dropout\":0,\"train.steps\":1200", 0), 0, 1.0);
    mem_row(&rows[2], 3,
            mem_config(c[2], sizeof c[2], "\"adapter.dropout\":0,\"train.steps\":600,\"adapter.layers\":[0,1]", 0), 0,
            1.0);
    mem_row(&rows[3], 4,
            mem_config(c[3], sizeof c[3], "\"adapter.dropout\":0,\"train.steps\":600,\"train.schedule\":\"linear\"", 0),
            0, 1.0);
    mem_row(&rows[4], 5, mem_config(c[4], sizeof c[4], "", 0), 0, 1.0);
    rows[4].r = 4; /* alone of its kind: no variant though its config differs */
    ReportGroup *g = NULL;
    int ng = report_aggregate(rows, 5, REPORT_EVAL_LOSS, &g);
    ck_assert_int_eq(ng, 5);
    ck_assert(g[0].r == 4);
    ck_assert_str_eq(g[0].variant, "");
    /* Order: absent layers and schedule first, then steps by value (600 < 1200), then layers,
     * then schedule (keys in byte order: adapter.layers < train.schedule < train.steps). */
    ck_assert_str_eq(g[1].variant, "layers=default, schedule=default, train.steps=600");
    ck_assert_str_eq(g[2].variant, "layers=default, schedule=default, train.steps=1200");
    ck_assert_str_eq(g[3].variant, "layers=default, schedule=linear, train.steps=600");
    ck_assert_str_eq(g[4].variant, "layers=[0,1], schedule=default, train.steps=600");
    report_free_groups(g, ng);
}
END_TEST

/* (d) Rows without a usable config_json (NULL, not JSON, not an object) keep the five-field key;
 * beside a row with a config of the same fields they are a group of their own. */
START_TEST(t_group_no_config) {
    char c0[512];
    RunRow rows[5];
    mem_row(&rows[0], 1, NULL, 0, 2.0);
    mem_row(&rows[1], 2, NULL, 1, 2.4);
    mem_row(&rows[2], 3, "not json", 2, 2.6);
    mem_row(&rows[3], 4, "[1,2]", 3, 2.6);
    mem_row(&rows[4], 5, NULL, 0, 1.0);
    rows[4].r = 4;
    ReportGroup *g = NULL;
    int ng = report_aggregate(rows, 5, REPORT_EVAL_LOSS, &g);
    ck_assert_int_eq(ng, 2);
    ck_assert(g[0].r == 4 && g[0].n_runs == 1 && g[0].config == NULL);
    ck_assert(g[1].r == 8 && g[1].n_runs == 4 && g[1].config == NULL);
    ck_assert_str_eq(g[1].variant, "");
    ck_assert_double_eq_tol(g[1].metric.mean, 2.4, TOL);
    report_free_groups(g, ng);

    mem_row(&rows[4], 5, mem_config(c0, sizeof c0, "", 0), 0, 1.0);
    ng = report_aggregate(rows, 5, REPORT_EVAL_LOSS, &g);
    ck_assert_int_eq(ng, 2);
    ck_assert(g[0].config == NULL && g[0].n_runs == 4); /* no config sorts first */
    ck_assert_str_eq(g[0].variant, "config unknown");
    ck_assert(g[1].config != NULL && g[1].n_runs == 1);
    ck_assert_str_eq(g[1].variant, "");
    report_free_groups(g, ng);
}
END_TEST

/* (e) The written report of a dropout sweep: a variant column in both tables and index.html,
 * one row per dropout value; the legends name the variant. */
START_TEST(t_variant_report) {
    char db[256], out[256], p[512];
    LLError err = {0};
    static const FxRun fx[] = {
        {"lora", "q_proj,v_proj", 8, 16, 0, "done", 2.0, 10, 8192, 100},
        {"lora", "q_proj,v_proj", 8, 16, 1, "done", 2.2, 12, 8192, 100},
        {"lora", "q_proj,v_proj", 8, 16, 0, "done", 1.5, 10, 8192, 100},
        {"lora", "q_proj,v_proj", 8, 16, 1, "done", 1.9, 12, 8192, 100},
        {"full", "", 0, 0, 0, "done", 1.4, 30, 1000000, 400},
    };
    static const char *const extra[] = {"\"adapter.dropout\":0", "\"adapter.dropout\":0", "\"adapter.dropout\":0.1",
                                        "\"adapter.dropout\":0.1", NULL};
    write_fixture_x(tu_path(db, sizeof db, "variant.db"), "drop", fx, 5, extra);
    tu_path(out, sizeof out, "variant-report");
    ReportSummary sum;
    char *old_path = path_override("/nonexistent"); /* no rendering needed here */
    LLStatus st = report_write(db, NULL, out, &sum, &err);
    path_restore(old_path);
    CK_OK(st);
    ck_assert_int_eq(sum.n_groups, 3);
    snprintf(p, sizeof p, "%s/table.md", out);
    char *md = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(md);
    ck_assert_msg(strstr(md, "| method | targets | r | α | lr | variant | trainable params |") != NULL, "table.md:\n%s",
                  md);
    ck_assert_msg(strstr(md, "| full FT | all | - | - | 0.001 | - | 1,000,000 |") != NULL, "table.md:\n%s", md);
    /* mean ± t(0.975, 1) sd / sqrt(2): 12.7062 x 0.1414 / 1.4142 = 1.2706 */
    ck_assert_msg(strstr(md, "| LoRA | q,v | 8 | 16 | 0.001 | dropout=0 | 8,192 | 0.819% | 2.1000 ± 1.2706 | 2 |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "| LoRA | q,v | 8 | 16 | 0.001 | dropout=0.1 | 8,192 | 0.819% | 1.7000 ± 2.5412 | 2 |") !=
                      NULL,
                  "table.md:\n%s", md);
    free(md);
    snprintf(p, sizeof p, "%s/table.tex", out);
    char *tex = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(tex);
    /* Compact: no parameter count, time or memory. */
    /* ... and no column that holds one value in every row: the caption says it once. */
    ck_assert_msg(strstr(tex, "\\begin{tabular}{llrrlrr}") != NULL, "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, " & variant & eval loss & n \\\\") != NULL, "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, " & $\\alpha$ & variant & ") != NULL, "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, " & 16 & dropout=0.1 & ") != NULL, "table.tex:\n%s", tex);
    ck_assert_msg(strstr(tex, "All rows: lr = 0.001.") != NULL, "table.tex:\n%s", tex);
    free(tex);
    snprintf(p, sizeof p, "%s/index.html", out);
    char *html = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(strstr(html, "<th>variant</th>"));
    ck_assert_ptr_nonnull(strstr(html, "<td>dropout=0.1</td>"));
    free(html);
    snprintf(p, sizeof p, "%s/curves_lora.gp", out);
    char *gp = tu_slurp(p, NULL);
    ck_assert_ptr_nonnull(gp);
    ck_assert_msg(strstr(gp, "'q,v r=8 α=16 lr=0.001 dropout=0.1 (n=2)'") != NULL, "curves_lora.gp:\n%s", gp);
    free(gp);
}
END_TEST

/* ---- paper: units, selection, styles, sizes, LaTeX ------------------------------------------- */

/* One run of the paper fixtures: its sweep and task, its configuration, and its kept weights'
 * validation and test values (accuracy for a classification fixture, loss otherwise). */
typedef struct {
    const char *sweep, *task, *method;
    int r;
    double alpha, lr;
    int64_t seed;
    double val, test; /* test NaN: none */
    double wall_s;
} SxRun;

/* Writes the runs through the store as a sweep would: a canonical config with task.data, metrics,
 * and the kept weights (best_metric = val; the last evaluation is worse by 0.01, so a report that
 * read the last one instead would show it). */
static void write_sx(const char *db, const SxRun *x, int n, int cls) {
    LLError err = {0};
    Store *s = tu_store_open(db, 0);
    for (int i = 0; i < n; i++) {
        int64_t sw = 0;
        CK_OK(store_upsert_sweep(s, x[i].sweep, NULL, NULL, &sw, &err));
        cJSON *cfg = cJSON_CreateObject();
        cJSON_AddStringToObject(cfg, "adapter.method", x[i].method);
        if (strcmp(x[i].method, "full") != 0) {
            cJSON_AddNumberToObject(cfg, "adapter.r", x[i].r);
            cJSON_AddNumberToObject(cfg, "adapter.alpha", x[i].alpha);
            cJSON_AddStringToObject(cfg, "adapter.targets", "q_proj,v_proj");
        }
        cJSON_AddNumberToObject(cfg, "train.lr", x[i].lr);
        cJSON_AddNumberToObject(cfg, "train.seed", (double)x[i].seed);
        cJSON_AddStringToObject(cfg, "task.data", x[i].task);
        cJSON_AddStringToObject(cfg, "task.type", cls ? "cls" : "lm");
        char *json = cJSON_PrintUnformatted(cfg);
        cJSON_Delete(cfg);
        char key[64];
        snprintf(key, sizeof key, "sx%d", i);
        int full = strcmp(x[i].method, "full") == 0;
        RunInfo in = {key, json, x[i].method, full ? "" : "q_proj,v_proj", full ? 0 : x[i].r, full ? 0 : x[i].alpha,
                      x[i].lr, x[i].seed};
        int64_t run = 0;
        CK_OK(store_add_run(s, sw, &in, &run, &err));
        cJSON_free(json);
        int claimed = 0;
        CK_OK(store_claim_run(s, run, &claimed, &err));
        for (int step = 0; step <= 4; step++) {
            CK_OK(store_add_metric(s, run, step, "train", "loss", 3.0 - 0.2 * step - 0.01 * i, &err));
            if (step % 2 == 0) CK_OK(store_add_metric(s, run, step, "eval", "loss", 3.1 - 0.2 * step - 0.01 * i, &err));
        }
        double last = cls ? x[i].val - 0.01 : x[i].val + 0.01;
        RunResult res = {"done", 1000.0, x[i].wall_s, full ? TOTAL_PARAMS : 1000 * (x[i].r + 1), TOTAL_PARAMS,
                         100 << 20, 2.2, cls ? 0.5 : last, cls ? exp(0.5) : exp(last), cls ? last : NAN, NAN, NULL,
                         NULL};
        RunKept kept = {cls ? "accuracy" : "loss", 4, x[i].val, 1, 4, isfinite(x[i].test),
                        cls ? 0.4 : x[i].test, cls ? x[i].test : NAN, NAN, NULL};
        CK_OK(store_finish_run_kept(s, run, &res, &kept, &err));
    }
    store_close(s);
}

/* Runs `loralab report ARGS` in tu_dir (without gnuplot unless render), output into log; the exit status. */
static int report_cli(const char *args, int render, const char *log) {
    char cwd[900], cmd[2400];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(cmd, sizeof cmd, "cd '%s' && %s'%s/build/loralab' report %s > '%s' 2>&1", tu_dir,
             render ? "" : "PATH=/nonexistent ", cwd, args, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int have_cli(void) {
    if (access("build/loralab", X_OK) == 0) return 1;
    printf("SKIPPED: build/loralab not built: the command's reports not checked\n");
    return 0;
}

static char *slurp_at(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *t = tu_slurp(p, NULL);
    ck_assert_msg(t != NULL, "%s missing", p);
    return t;
}

static int count_str(const char *s, const char *needle) {
    int n = 0;
    for (const char *q = s; (q = strstr(q, needle)); q++) n++;
    return n;
}

/* Three sweeps, two tasks (language modelling, two seeds): sotu-a (LoRA with alpha = 2r, full FT),
 * moby (LoRA r x alpha grid, DoRA), sotu-b (LoRA r=16) on the same task as sotu-a. */
static const SxRun UNITS[] = {
    {"sotu-a", "data/sotu", "lora", 4, 8, 1e-3, 0, 2.0, NAN, 10},    {"sotu-a", "data/sotu", "lora", 4, 8, 1e-3, 1, 2.1, NAN, 11},
    {"sotu-a", "data/sotu", "lora", 8, 16, 1e-3, 0, 1.8, NAN, 10},   {"sotu-a", "data/sotu", "lora", 8, 16, 1e-3, 1, 1.9, NAN, 11},
    {"sotu-a", "data/sotu", "full", 0, 0, 1e-3, 0, 1.5, NAN, 30},    {"sotu-a", "data/sotu", "full", 0, 0, 1e-3, 1, 1.6, NAN, 31},
    {"moby", "data/moby-dick", "lora", 4, 8, 1e-3, 0, 3.0, NAN, 10}, {"moby", "data/moby-dick", "lora", 4, 16, 1e-3, 0, 2.9, NAN, 10},
    {"moby", "data/moby-dick", "lora", 8, 8, 1e-3, 0, 2.8, NAN, 10}, {"moby", "data/moby-dick", "lora", 8, 16, 1e-3, 0, 2.7, NAN, 10},
    {"moby", "data/moby-dick", "dora", 8, 16, 1e-3, 0, 2.6, NAN, 12}, {"sotu-b", "data/sotu", "lora", 16, 32, 1e-3, 0, 1.7, NAN, 12},
};
#define N_UNITS_RUNS (int)(sizeof UNITS / sizeof UNITS[0])

/* Issue 14 items 1, 8 and 10: one folder per sweep under results/report/<database name>, nothing of
 * one sweep in another's figures or tables, the task in titles and captions; the rank x alpha map
 * left out where alpha = 2r; --group-by task pools the sweeps of a task; --mix puts them together
 * with a task column and the task in every legend. */
START_TEST(t_units) {
    if (!have_cli()) return;
    char db[256], log[256], dir[512];
    write_sx(tu_path(db, sizeof db, "units.db"), UNITS, N_UNITS_RUNS, 0);
    tu_path(log, sizeof log, "units.log");
    ck_assert_int_eq(report_cli("--db units.db", 0, log), 0);
    char *said = tu_slurp(log, NULL);
    ck_assert_msg(strstr(said, "3 units under results/report/units") != NULL, "%s", said);
    ck_assert_msg(strstr(said, "left out rank_alpha     no rank was run with two alphas or more (r=4: alpha=8, r=8: "
                               "alpha=16)") != NULL,
                  "%s", said);
    free(said);
    snprintf(dir, sizeof dir, "%s/results/report/units", tu_dir);
    char *root = slurp_at(dir, "index.html");
    for (int i = 0; i < 3; i++) {
        static const char *const names[] = {"sotu-a", "moby", "sotu-b"};
        char want[64];
        snprintf(want, sizeof want, "<a href=\"%s/index.html\">", names[i]);
        ck_assert_msg(strstr(root, want) != NULL, "index.html lacks %s:\n%s", want, root);
    }
    free(root);
    /* sotu-a holds its three configurations and nothing of moby or sotu-b. */
    snprintf(dir, sizeof dir, "%s/results/report/units/sotu-a", tu_dir);
    char *md = slurp_at(dir, "table.md");
    ck_assert_int_eq(count_str(md, "\n| LoRA |") + count_str(md, "\n| full FT |") + count_str(md, "\n| DoRA |"), 3);
    ck_assert_msg(strstr(md, "| q,v | 16 |") == NULL && strstr(md, "DoRA") == NULL, "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "task sotu (data/sotu), sweep sotu-a") != NULL, "table.md:\n%s", md);
    free(md);
    char *tex = slurp_at(dir, "table.tex");
    ck_assert_msg(strstr(tex, "\\label{tab:sotu-a}") != NULL, "table.tex:\n%s", tex);
    free(tex);
    char *gp = slurp_at(dir, "rank.gp");
    ck_assert_msg(strstr(gp, "set title 'sotu: final eval loss against rank'") != NULL, "rank.gp:\n%s", gp);
    free(gp);
    char p[1024];
    snprintf(p, sizeof p, "%s/rank_alpha.gp", dir);
    ck_assert_int_eq(ll_file_exists(p), 0);
    /* moby: DoRA beside LoRA, its grid of alphas drawn, its own label. */
    snprintf(dir, sizeof dir, "%s/results/report/units/moby", tu_dir);
    md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "| DoRA |") && !strstr(md, "full FT"), "table.md:\n%s", md);
    free(md);
    gp = slurp_at(dir, "rank_alpha.gp");
    ck_assert_msg(strstr(gp, "moby-dick: LoRA, final eval loss by rank and alpha") != NULL, "%s", gp);
    free(gp);
    tex = slurp_at(dir, "table.tex");
    ck_assert_msg(strstr(tex, "\\label{tab:moby}") != NULL, "table.tex:\n%s", tex);
    free(tex);

    /* --group-by task: the two sotu sweeps in one unit, moby-dick in another. */
    ck_assert_int_eq(report_cli("--db units.db --group-by task --out bytask", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/bytask/sotu", tu_dir);
    md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "| LoRA | q,v | 16 | 32 |") && strstr(md, "| LoRA | q,v | 4 | 8 |") && !strstr(md, "DoRA"),
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "task sotu (data/sotu), sweeps sotu-a, sotu-b") != NULL, "table.md:\n%s", md);
    free(md);
    snprintf(p, sizeof p, "%s/bytask/moby-dick/table.md", tu_dir);
    ck_assert_int_gt(file_size(p), 0);

    /* --mix: one unit, a task column, the task in every legend. */
    ck_assert_int_eq(report_cli("--db units.db --mix --out mixed", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/mixed/all", tu_dir);
    md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "| task | method |") && strstr(md, "| sotu | LoRA |") && strstr(md, "| moby-dick | DoRA |"),
                  "table.md:\n%s", md);
    free(md);
    gp = slurp_at(dir, "curves_lora.gp");
    ck_assert_msg(strstr(gp, "title 'sotu: q,v r=4") && strstr(gp, "title 'moby-dick: q,v r=8"), "curves_lora.gp:\n%s",
                  gp);
    free(gp);

    /* An unknown --group-by key is refused with the key named. */
    ck_assert_int_eq(report_cli("--db units.db --group-by rnak", 0, log), 2);
    said = tu_slurp(log, NULL);
    ck_assert_msg(strstr(said, "unknown name 'rnak'") != NULL, "%s", said);
    free(said);
}
END_TEST

/* Issue 13 item 4 on a classification sweep (accuracy) with three seeds: LoRA at three lrs and two
 * ranks, VeRA at two lrs, full FT at one. LoRA's best test (lr 0.01) is not its best validation
 * (lr 0.003): the table reports lr 0.003's test accuracy. */
static const SxRun SEL[] = {
#define SX3(m, r, a, lr, v, t)                                                                                        \
    {"sel", "data/spam", m, r, a, lr, 0, v - 0.01, t - 0.01, 10}, {"sel", "data/spam", m, r, a, lr, 1, v, t, 20},     \
        {"sel", "data/spam", m, r, a, lr, 2, v + 0.01, t + 0.01, 30}
    SX3("lora", 8, 16, 1e-3, 0.81, 0.80), SX3("lora", 8, 16, 3e-3, 0.89, 0.91), SX3("lora", 8, 16, 1e-2, 0.86, 0.96),
    SX3("lora", 4, 8, 3e-3, 0.85, 0.85),  SX3("vera", 256, 0, 1e-2, 0.71, 0.71), SX3("vera", 256, 0, 3e-2, 0.76, 0.75),
    SX3("full", 0, 0, 1e-3, 0.87, 0.81),
#undef SX3
};
#define N_SEL (int)(sizeof SEL / sizeof SEL[0])

START_TEST(t_select_valid_report_test) {
    if (!have_cli()) return;
    char db[256], log[256], dir[512];
    write_sx(tu_path(db, sizeof db, "sel.db"), SEL, N_SEL, 1);
    tu_path(log, sizeof log, "sel.log");
    ck_assert_int_eq(report_cli("--db sel.db --out o", 0, log), 0);
    char *said = tu_slurp(log, NULL);
    ck_assert_msg(strstr(said, "chosen on validation, reported on test") != NULL, "%s", said);
    ck_assert_msg(strstr(said, "note     VeRA: the chosen lr 0.03 is the largest of its grid (2 values, 0.01 to 0.03)") !=
                      NULL,
                  "%s", said);
    free(said);
    snprintf(dir, sizeof dir, "%s/o/sel", tu_dir);
    char *md = slurp_at(dir, "table.md");
    /* 4.302653 x 0.01 / sqrt(3) = 0.0248; LoRA's interval is clear of full FT's: bold. */
    ck_assert_msg(strstr(md, "| method | lr | r | α | test accuracy ± 95% CI | n | valid. accuracy | configs |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "| full FT | 0.001 | - | - | 0.8100 ± 0.0248 | 3 | 0.8700 | 1 |") != NULL, "table.md:\n%s",
                  md);
    ck_assert_msg(strstr(md, "| LoRA | 0.003 | 8 | 16 | **0.9100 ± 0.0248** | 3 | 0.8900 | 4 |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "| VeRA | 0.03 (max) | 256 | - | 0.7500 ± 0.0248 | 3 | 0.7600 | 2 |") != NULL,
                  "table.md:\n%s", md);
    ck_assert_int_eq(count_str(md, "**"), 2);
    free(md);
    /* Every configuration beside it, on validation (the best value, not the last one). */
    md = slurp_at(dir, "configs.md");
    ck_assert_msg(strstr(md, "| LoRA | q,v | 8 | 16 | 0.01 | 9,000 | 0.9% | 0.8600 ± 0.0248 | 3 |") != NULL,
                  "configs.md:\n%s", md);
    ck_assert_int_eq(count_str(md, "\n| "), 9); /* head, rule, 7 configurations */
    free(md);
    char *tex = slurp_at(dir, "configs.tex");
    ck_assert_msg(strstr(tex, "\\label{tab:sel-configs}") != NULL, "%s", tex);
    free(tex);
    /* The lr figure: LoRA and VeRA drawn, full FT's single lr said. */
    char *gp = slurp_at(dir, "lr.gp");
    ck_assert_msg(strstr(gp, "set logscale x 10") && count_str(gp, "with yerrorlines") == 2, "lr.gp:\n%s", gp);
    free(gp);
    char *dat = slurp_at(dir, "lr.dat");
    ck_assert_msg(strstr(dat, "\n0.003 0.89 0.01 3 8 16\n") != NULL, "lr.dat:\n%s", dat);
    free(dat);
    char *html = slurp_at(dir, "index.html");
    ck_assert_msg(strstr(html, "one lr only, not drawn: full FT 0.001") && strstr(html, "VeRA 0.03 (largest)"),
                  "index.html lacks the lr notes");
    free(html);

    /* --group-by r: a row per method and rank; one row per value is no comparison: no bold. */
    ck_assert_int_eq(report_cli("--db sel.db --out g --group-by r", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/g/sel", tu_dir);
    md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "| r | method | lr |") && strstr(md, "| 4 | LoRA | 0.003 |") &&
                      strstr(md, "| 8 | LoRA | 0.003 |") && strstr(md, "| 256 | VeRA | 0.03 (max) |") &&
                      strstr(md, "| default | full FT | 0.001 |"),
                  "table.md:\n%s", md);
    ck_assert_msg(strstr(md, "**") == NULL, "table.md:\n%s", md);
    free(md);

    /* --select all: the configurations are the table, and no configs.* is left from before. */
    ck_assert_int_eq(report_cli("--db sel.db --out o --select all", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/o/sel", tu_dir);
    md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "| LoRA | q,v | 8 | 16 | 0.01 |") != NULL, "table.md:\n%s", md);
    free(md);
    char p[1024];
    snprintf(p, sizeof p, "%s/configs.md", dir);
    ck_assert_int_eq(ll_file_exists(p), 0);
    ck_assert_int_eq(report_cli("--db sel.db --select best", 0, log), 2);
}
END_TEST

/* The bold rule on a table: the best row only where its interval is clear of the next best's;
 * times never (the fastest run here is not the best). */
START_TEST(t_bold_rule) {
    if (!have_cli()) return;
    char db[256], log[256], dir[512];
    static const SxRun sep[] = {
        {"b", "data/x", "lora", 4, 8, 1e-3, 0, 1.00, NAN, 50}, {"b", "data/x", "lora", 4, 8, 1e-3, 1, 1.01, NAN, 50},
        {"b", "data/x", "lora", 4, 8, 1e-3, 2, 1.02, NAN, 50}, {"b", "data/x", "lora", 8, 16, 1e-3, 0, 2.00, NAN, 5},
        {"b", "data/x", "lora", 8, 16, 1e-3, 1, 2.01, NAN, 5}, {"b", "data/x", "lora", 8, 16, 1e-3, 2, 2.02, NAN, 5},
        /* a second sweep whose best overlaps its next */
        {"o", "data/x", "lora", 4, 8, 1e-3, 0, 1.00, NAN, 50}, {"o", "data/x", "lora", 4, 8, 1e-3, 1, 1.50, NAN, 50},
        {"o", "data/x", "lora", 8, 16, 1e-3, 0, 1.20, NAN, 5}, {"o", "data/x", "lora", 8, 16, 1e-3, 1, 1.30, NAN, 5},
    };
    write_sx(tu_path(db, sizeof db, "bold.db"), sep, 10, 0);
    tu_path(log, sizeof log, "bold.log");
    ck_assert_int_eq(report_cli("--db bold.db --out o", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/o/b", tu_dir);
    char *md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "| **1.0100 ± 0.0248** | 3 | 50.0 s |") && strstr(md, "| 2.0100 ± 0.0248 | 3 | 5.0 s |"),
                  "table.md:\n%s", md);
    ck_assert_int_eq(count_str(md, "**"), 2);
    free(md);
    char *tex = slurp_at(dir, "table.tex");
    ck_assert_msg(strstr(tex, "\\textbf{1.0100 $\\pm$ 0.0248}") != NULL, "table.tex:\n%s", tex);
    free(tex);
    snprintf(dir, sizeof dir, "%s/o/o", tu_dir);
    md = slurp_at(dir, "table.md");
    ck_assert_msg(strstr(md, "**") == NULL, "table.md:\n%s", md);
    free(md);
}
END_TEST

/* ---- series styles: no two plotted series of a plot share (lc, dt, pt) ------------------------ */

/* Relative luminance of #RRGGBB (sRGB, WCAG's formula). */
static double luminance(const char *hex) {
    double ch[3];
    for (int i = 0; i < 3; i++) {
        char b[3] = {hex[1 + 2 * i], hex[2 + 2 * i], 0};
        double v = strtol(b, NULL, 16) / 255.0;
        ch[i] = v <= 0.04045 ? v / 12.92 : pow((v + 0.055) / 1.055, 2.4);
    }
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}

/* Reads `lc rgb 'X'`, `dt N`, `pt N` from one plot term; 0 when one is missing. */
static int term_style(const char *t, size_t n, char lc[16], int *dt, int *pt) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf ? n : sizeof buf - 1), t);
    const char *l = strstr(buf, " lc rgb '"), *d = strstr(buf, " dt "), *p = strstr(buf, " pt ");
    if (!l || !d || !p) return 0;
    snprintf(lc, 16, "%.7s", l + 9);
    *dt = atoi(d + 4);
    *pt = atoi(p + 4);
    return 1;
}

/* 1 when every titled series (and keyentry) of every plot statement of the script has its own
 * (lc, dt, pt) and its own (dt, pt), and no series is lighter than luminance 0.5 (no yellow on
 * white); else 0 and why. Terms split at commas outside quotes and brackets; continuation lines
 * joined. */
static int gp_series_distinct(const char *gp, char *why, size_t cap) {
    size_t len = strlen(gp);
    char *s = malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (gp[i] == '\\' && i + 1 < len && gp[i + 1] == '\n') {
            i++;
            continue;
        }
        s[o++] = gp[i];
    }
    s[o] = '\0';
    int ok = 1;
    for (char *line = s; ok && line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char *e = strchr(line, '\n');
        size_t n = e ? (size_t)(e - line) : strlen(line);
        const char *q = line;
        while (*q == ' ') q++;
        if (strncmp(q, "plot ", 5) != 0) continue;
        char lcs[32][16];
        int dts[32], pts[32], ns = 0, depth = 0, quote = 0;
        const char *term = q + 5;
        for (const char *c = term;; c++) {
            int end = (size_t)(c - line) >= n;
            if (!end && quote) {
                if (*c == '\'') quote = 0;
                continue;
            }
            if (!end && *c == '\'') quote = 1;
            else if (!end && (*c == '(' || *c == '[')) depth++;
            else if (!end && (*c == ')' || *c == ']')) depth--;
            if (end || (*c == ',' && depth == 0)) {
                size_t tn = (size_t)(c - term);
                char t[1024];
                snprintf(t, sizeof t, "%.*s", (int)(tn < sizeof t ? tn : sizeof t - 1), term);
                if (!strstr(t, " notitle") && (strstr(t, " title ") || strstr(t, "keyentry"))) {
                    if (ns == 32 || !term_style(t, strlen(t), lcs[ns], &dts[ns], &pts[ns])) {
                        snprintf(why, cap, "a series without lc rgb, dt and pt: %s", t);
                        ok = 0;
                        break;
                    }
                    if (luminance(lcs[ns]) > 0.5) {
                        snprintf(why, cap, "a series too light for white paper (%s): %s", lcs[ns], t);
                        ok = 0;
                        break;
                    }
                    for (int j = 0; j < ns && ok; j++)
                        if (dts[j] == dts[ns] && pts[j] == pts[ns]) {
                            snprintf(why, cap, "two series share dt %d pt %d%s: %s", dts[ns], pts[ns],
                                     strcmp(lcs[j], lcs[ns]) == 0 ? " and lc" : " (greyscale)", t);
                            ok = 0;
                        }
                    ns++;
                }
                if (end) break;
                term = c + 1;
            }
        }
    }
    free(s);
    return ok;
}

/* Every .gp in dir passes gp_series_distinct; returns how many were checked. */
static int check_series_in(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot list %s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 3, ".gp") != 0) continue;
        char *gp = slurp_at(dir, e->d_name);
        char why[1200];
        ck_assert_msg(gp_series_distinct(gp, why, sizeof why), "%s/%s: %s", dir, e->d_name, why);
        free(gp);
        n++;
    }
    closedir(d);
    return n;
}

/* Issue 14 item 2: sixteen methods on one axis keep sixteen styles; every script of the other
 * reports too; and the checker does fail on a shared style and on yellow. */
START_TEST(t_series_styles) {
    const char *dup = "plot 'a.dat' index 0 using 1:2 with lines lc rgb '#0072B2' dt 1 pt 7 title 'a', \\\n"
                      "     'a.dat' index 1 using 1:2 with lines lc rgb '#0072B2' dt 1 pt 7 title 'b'\n";
    const char *grey = "plot 'a.dat' index 0 using 1:2 with lines lc rgb '#0072B2' dt 2 pt 7 title 'a', "
                       "'' index 1 using 1:2 with lines lc rgb '#D55E00' dt 2 pt 7 title 'b'\n";
    const char *yellow = "plot 'a.dat' using 1:2 with lines lc rgb '#F0E442' dt 1 pt 7 title 'a'\n";
    const char *bare = "plot 'a.dat' using 1:2 with lines lt 3 title 'a'\n";
    char why[1200];
    ck_assert(!gp_series_distinct(dup, why, sizeof why) && strstr(why, "and lc"));
    ck_assert(!gp_series_distinct(grey, why, sizeof why) && strstr(why, "greyscale"));
    ck_assert(!gp_series_distinct(yellow, why, sizeof why));
    ck_assert(!gp_series_distinct(bare, why, sizeof why));
    /* Sixteen methods, two ranks each, two seeds. */
    SxRun x[64];
    char names[16][8];
    int n = 0;
    for (int m = 0; m < 16; m++) {
        snprintf(names[m], sizeof names[m], "m%02d", m);
        for (int r = 4; r <= 8; r += 4)
            for (int seed = 0; seed < 2; seed++)
                x[n++] = (SxRun){"s16", "data/x", names[m], r, 2 * r, 1e-3, seed, 2.0 - 0.01 * m - 0.02 * r + 0.01 * seed,
                                 NAN, 10};
    }
    char db[256], out[256];
    write_sx(tu_path(db, sizeof db, "s16.db"), x, n, 0);
    LLError err = {0};
    ReportSummary sum;
    char *old_path = path_override("/nonexistent");
    LLStatus st = report_write(db, NULL, tu_path(out, sizeof out, "s16"), &sum, &err);
    path_restore(old_path);
    CK_OK(st);
    char *gp = slurp_at(out, "rank.gp");
    ck_assert_int_eq(count_str(gp, "with yerrorlines"), 16);
    free(gp);
    gp = slurp_at(out, "curves.gp");
    ck_assert_int_eq(count_str(gp, "title 'm"), 32); /* sixteen series in each panel */
    free(gp);
    ck_assert_int_ge(check_series_in(out), 4);
    /* Every script of the fixture's report and of a report of several tasks mixed. */
    write_fixture(tu_path(db, sizeof db, "fx16.db"), "fx", FX, N_FX);
    old_path = path_override("/nonexistent");
    st = report_write(db, NULL, tu_path(out, sizeof out, "fx16"), &sum, &err);
    if (!st) {
        write_sx(tu_path(db, sizeof db, "mix16.db"), UNITS, N_UNITS_RUNS, 0);
        st = report_write(db, NULL, tu_path(out, sizeof out, "mix16"), &sum, &err);
    }
    path_restore(old_path);
    CK_OK(st);
    tu_path(out, sizeof out, "fx16");
    ck_assert_int_ge(check_series_in(out), 6);
    tu_path(out, sizeof out, "mix16");
    ck_assert_int_ge(check_series_in(out), 5);
}
END_TEST

/* ---- sizes and fonts ------------------------------------------------------------------------- */

/* Issue 14 item 6: --size column and page set width and font; single plots default to a column,
 * the two-panel curves to a page; the PDF embeds its fonts (pdffonts, where installed). */
START_TEST(t_sizes) {
    if (!have_cli()) return;
    char db[256], log[256], dir[512];
    write_sx(tu_path(db, sizeof db, "sz.db"), UNITS, 6, 0); /* sotu-a */
    tu_path(log, sizeof log, "sz.log");
    ck_assert_int_eq(report_cli("--db sz.db --out auto", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/auto/sotu-a", tu_dir);
    char *gp = slurp_at(dir, "rank.gp");
    ck_assert_msg(strstr(gp, "pdfcairo size 3.30in,") && strstr(gp, "font 'Sans,8'"), "rank.gp:\n%s", gp);
    free(gp);
    gp = slurp_at(dir, "curves.gp");
    ck_assert_msg(strstr(gp, "pdfcairo size 6.80in,") && strstr(gp, "font 'Sans,9'") && strstr(gp, "layout 1,2"),
                  "curves.gp:\n%s", gp);
    free(gp);
    ck_assert_int_eq(report_cli("--db sz.db --out col --size column", 0, log), 0);
    snprintf(dir, sizeof dir, "%s/col/sotu-a", tu_dir);
    gp = slurp_at(dir, "curves.gp");
    ck_assert_msg(strstr(gp, "pdfcairo size 3.30in,") && strstr(gp, "font 'Sans,8'") && strstr(gp, "layout 2,1"),
                  "curves.gp:\n%s", gp);
    free(gp);
    int render = tu_have_program("gnuplot");
    ck_assert_int_eq(report_cli("--db sz.db --out page --size page", render, log), 0);
    snprintf(dir, sizeof dir, "%s/page/sotu-a", tu_dir);
    gp = slurp_at(dir, "rank.gp");
    ck_assert_msg(strstr(gp, "pdfcairo size 6.80in,") && strstr(gp, "font 'Sans,9'"), "rank.gp:\n%s", gp);
    free(gp);
    if (!render) {
        printf("SKIPPED: PDF fonts not checked: gnuplot not installed (scripts/deps.sh)\n");
        return;
    }
    if (!tu_have_program("pdffonts")) {
        printf("SKIPPED: PDF font embedding not checked: pdffonts not installed (scripts/deps.sh --latex)\n");
        return;
    }
    char cmd[1200], fonts[600];
    snprintf(fonts, sizeof fonts, "%s/fonts.txt", tu_dir);
    snprintf(cmd, sizeof cmd, "pdffonts '%s/rank.pdf' > '%s' 2>&1", dir, fonts);
    ck_assert_int_eq(system(cmd), 0);
    char *t = tu_slurp(fonts, NULL);
    /* name type encoding emb sub uni object ID: every font line says "yes" in the emb column. */
    int lines = 0;
    for (char *l = strstr(t, "\n---"); l && (l = strchr(l + 1, '\n')) && l[1];) {
        char name[128], type[64], emb[8] = "";
        if (sscanf(l + 1, "%127s %63s", name, type) != 2) continue;
        ck_assert_msg(strstr(l + 1, " yes ") != NULL, "a font not embedded in rank.pdf:\n%s", t);
        (void)emb;
        lines++;
    }
    ck_assert_msg(lines > 0, "pdffonts listed no font:\n%s", t);
    free(t);
}
END_TEST

/* ---- LaTeX ----------------------------------------------------------------------------------- */

/* Compiles tex_path in a two-column article (booktabs); 1 when pdflatex succeeded; *overfull is
 * set when the log reports an overfull box (the table is wider than the column). */
static int latex_compiles(const char *tex_path, int *overfull, char *log_out, size_t cap) {
    char dir[512], doc[600], cmd[1400];
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(doc, sizeof doc, "%s/doc.tex", dir);
    FILE *f = fopen(doc, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
               "\\begin{document}\n\\input{%s}\n\\end{document}\n",
            tex_path);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd '%s' && pdflatex -interaction=nonstopmode -halt-on-error doc.tex > out.txt 2>&1", dir);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "%s/doc.log", dir);
    char *log = tu_slurp(cmd, NULL);
    *overfull = log && strstr(log, "Overfull \\hbox") != NULL;
    snprintf(log_out, cap, "%s", log ? (strstr(log, "Overfull") ? strstr(log, "Overfull") : log + (strlen(log) > 800 ? strlen(log) - 800 : 0)) : "(no log)");
    free(log);
    tu_tmpdir_remove(dir);
    return WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

/* Issue 14 item 7: every table the report writes compiles with pdflatex, and the compact ones fit
 * a column of a two-column paper; --wide adds the columns back. */
START_TEST(t_latex_tables) {
    if (!have_cli()) return;
    char db[256], log[256];
    write_sx(tu_path(db, sizeof db, "tex.db"), SEL, N_SEL, 1);
    write_sx(db, UNITS, N_UNITS_RUNS, 0);
    tu_path(log, sizeof log, "tex.log");
    ck_assert_int_eq(report_cli("--db tex.db --out t", 0, log), 0);
    ck_assert_int_eq(report_cli("--db tex.db --out w --wide", 0, log), 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/w/sel/table.tex", tu_dir);
    char *wide = tu_slurp(p, NULL);
    ck_assert_msg(wide && strstr(wide, " & time & memory \\\\") && strstr(wide, " & params & "), "%s", wide);
    free(wide);
    snprintf(p, sizeof p, "%s/t/sel/table.tex", tu_dir);
    char *compact = tu_slurp(p, NULL);
    ck_assert_msg(compact && !strstr(compact, "& time") && !strstr(compact, "memory") && strstr(compact, "\\footnotesize"),
                  "%s", compact);
    free(compact);
    if (!tu_have_program("pdflatex")) {
        printf("SKIPPED: LaTeX tables not compiled: pdflatex not installed (scripts/deps.sh --latex)\n");
        return;
    }
    static const char *const tables[] = {"t/sel/table.tex", "t/sel/configs.tex", "t/sotu-a/table.tex", "t/moby/table.tex",
                                         "t/sotu-b/table.tex", "w/sel/table.tex", "w/sel/configs.tex"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        int overfull = 0;
        char why[1000];
        snprintf(p, sizeof p, "%s/%s", tu_dir, tables[i]);
        ck_assert_msg(latex_compiles(p, &overfull, why, sizeof why), "%s does not compile:\n%s", tables[i], why);
        if (tables[i][0] == 't')
            ck_assert_msg(!overfull, "%s is wider than a column of a two-column paper:\n%s", tables[i], why);
    }
    /* The hostile database's values (LaTeX specials, \input, newlines) still make a valid table. */
    char hdb[256], hout[256];
    write_hostile_db(tu_path(hdb, sizeof hdb, "hostile.db"));
    LLError err = {0};
    char *old_path = path_override("/nonexistent");
    LLStatus st = report_write(hdb, NULL, tu_path(hout, sizeof hout, "hostile-out"), NULL, &err);
    path_restore(old_path);
    CK_OK(st);
    int overfull = 0;
    char why[1000];
    snprintf(p, sizeof p, "%s/table.tex", hout);
    ck_assert_msg(latex_compiles(p, &overfull, why, sizeof why), "the hostile table does not compile:\n%s", why);
}
END_TEST

Suite *report_suite(void) {
    Suite *s = suite_create("report");
    TCase *core = tu_tcase(s, "core", 1, 20);
    tcase_add_test(core, t_stat);
    tcase_add_test(core, t_aggregate);
    tcase_add_test(core, t_pareto_and_best);
    tcase_add_test(core, t_curve);
    tcase_add_test(core, t_short_targets);
    tcase_add_test(core, t_group_by_config);
    tcase_add_test(core, t_group_seeds_only);
    tcase_add_test(core, t_group_precision);
    tcase_add_test(core, t_variant_names);
    tcase_add_test(core, t_group_no_config);
    tcase_add_test(core, t_variant_report);

    TCase *render = tu_tcase(s, "render", 0, 40);
    tcase_add_unchecked_fixture(render, render_setup, tu_tmpdir_teardown);
    tcase_add_test(render, t_render_files);
    tcase_add_test(render, t_render_data);
    tcase_add_test(render, t_render_tables);
    tcase_add_test(render, t_render_by_hand);
    tcase_add_test(render, t_index_in_chromium);

    TCase *limits = tu_tcase(s, "limits", 1, 20);
    tcase_add_test(limits, t_skipped_figures);
    tcase_add_test(limits, t_empty_and_unknown);
    tcase_add_test(limits, t_newer_schema);
    tcase_add_test(limits, t_gnuplot_fails);
    tcase_add_test(limits, t_command);

    TCase *paper = tu_tcase(s, "paper", 1, 120);
    tcase_add_test(paper, t_units);
    tcase_add_test(paper, t_select_valid_report_test);
    tcase_add_test(paper, t_bold_rule);
    tcase_add_test(paper, t_series_styles);
    tcase_add_test(paper, t_sizes);
    tcase_add_test(paper, t_latex_tables);

    TCase *hostile = tu_tcase(s, "hostile", 1, 120);
    tcase_add_test(hostile, t_hostile_database);
    return s;
}
