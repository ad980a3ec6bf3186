/* cmd_runs: `loralab runs [--db FILE] [--sweep NAME]`: a table of the runs in a results database
 * (id, sweep, method, targets, r, alpha, lr, seed, status, eval loss, tokens/s, wall time) and a
 * count per status. Opens the database read-only, so it is safe while a sweep is writing it.
 *   --csv, --json   every column of the runs table and every resolved config key as its own column
 *                   (experiments/runs_export.h), to stdout
 *   --diff          only the config keys whose values differ between the runs
 *   RUN...          (with --diff, --csv or --json) only these runs: ids or run keys (a prefix of
 *                   4+ hex digits that one run has), in the order given */
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "experiments/runs_export.h"
#include "experiments/store.h"

enum { N_COLS = 12, CELL = 48 };

static const char *const HEAD[N_COLS] = {"id",   "sweep", "method", "targets",   "r",     "alpha",
                                         "lr",   "seed",  "status", "eval_loss", "tok/s", "wall"};
/* Numbers align right, words left. */
static const int RIGHT[N_COLS] = {1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1};

static void usage(FILE *f) {
    fprintf(f, "usage: loralab runs [--db FILE] [--sweep NAME] [--diff] [--csv | --json] [RUN...]\n"
               "  --db FILE      results database (default %s)\n"
               "  --sweep NAME   only the runs of this sweep\n"
               "  --diff         only the configuration keys that differ between the runs\n"
               "  --csv, --json  every run column and every resolved config key as a column, to stdout\n"
               "  RUN...         with --diff, --csv or --json: only these runs (ids or run keys, 4+ hex digits)\n",
               STORE_DEFAULT_PATH);
}

/* --diff as a table: id (sweep when there are several), key, method, status, eval loss, then the
 * config keys that differ. */
static void print_diff(const RunsExport *t, int n_same) {
    static const char *const ident[] = {"id", "sweep", "key", "method", "status", "eval_loss"};
    enum { N_IDENT = 6, DCELL = 96 };
    int col[N_IDENT + 512], nc = 0, csweep = runs_export_col(t, "sweep"), many_sweeps = 0;
    for (int r = 1; r < t->n_rows && csweep >= 0; r++) {
        const RxCell *a = &t->cells[csweep], *b = &t->cells[(size_t)r * t->n_cols + csweep];
        many_sweeps |= a->type != b->type || (a->s && b->s && strcmp(a->s, b->s) != 0);
    }
    for (int k = 0; k < N_IDENT; k++) {
        int c = runs_export_col(t, ident[k]);
        if (c >= 0 && (k != 1 || many_sweeps)) col[nc++] = c;
    }
    for (int c = t->n_run_cols; c < t->n_cols && nc < (int)(sizeof col / sizeof col[0]); c++) col[nc++] = c;
    int *w = ll_calloc((size_t)nc, sizeof(int));
    char text[DCELL];
    for (int k = 0; k < nc; k++) {
        w[k] = (int)strlen(t->cols[col[k]]);
        for (int r = 0; r < t->n_rows; r++) {
            runs_export_cell_text(&t->cells[(size_t)r * t->n_cols + col[k]], text, sizeof text);
            if ((int)strlen(text) > w[k]) w[k] = (int)strlen(text);
        }
    }
    for (int k = 0; k < nc; k++) printf("%-*s%s", k + 1 < nc ? w[k] : 0, t->cols[col[k]], k + 1 < nc ? "  " : "\n");
    for (int r = 0; r < t->n_rows; r++)
        for (int k = 0; k < nc; k++) {
            runs_export_cell_text(&t->cells[(size_t)r * t->n_cols + col[k]], text, sizeof text);
            printf("%-*s%s", k + 1 < nc ? w[k] : 0, text, k + 1 < nc ? "  " : "\n");
        }
    int n_diff = t->n_cols - t->n_run_cols;
    printf("%d run%s: %d configuration key%s differ%s, %d the same in all\n", t->n_rows, t->n_rows == 1 ? "" : "s",
           n_diff, n_diff == 1 ? "" : "s", n_diff == 1 ? "s" : "", n_same);
    ll_free(w);
}

/* --diff, --csv, --json: the export table, narrowed to the listed runs and (--diff) keys. */
static int export_runs(Store *s, const char *sweep, const char *const *which, int n_which, int diff, int csv,
                       int json) {
    RunsExport t;
    LLError err = {0};
    LLStatus st = runs_export_load(s, sweep, &t, &err);
    if (st) {
        fprintf(stderr, "loralab runs: %s\n", err.msg);
        return 1;
    }
    if (n_which && runs_export_select(&t, which, n_which, &err) != LL_OK) {
        fprintf(stderr, "loralab runs: %s\n", err.msg);
        runs_export_free(&t);
        return 2;
    }
    int n_same = diff ? runs_export_keep_differing(&t) : 0;
    if (csv) st = runs_export_csv(&t, stdout);
    else if (json) st = runs_export_json(&t, stdout);
    else print_diff(&t, n_same);
    runs_export_free(&t);
    if (st || fflush(stdout) != 0) {
        fprintf(stderr, "loralab runs: writing to stdout failed\n");
        return 1;
    }
    return 0;
}

static void fmt_real(char *cell, const char *fmt, double v) {
    if (isnan(v)) snprintf(cell, CELL, "-");
    else snprintf(cell, CELL, fmt, v);
}

/* 9.5s, 4m05s, 2h03m: short enough for a table, exact enough to compare runs. */
static void fmt_wall(char *cell, double s) {
    if (isnan(s)) snprintf(cell, CELL, "-");
    else if (s < 60) snprintf(cell, CELL, "%.1fs", s);
    else if (s < 3600) snprintf(cell, CELL, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(cell, CELL, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void fill_row(const RunRow *r, char cells[N_COLS][CELL]) {
    snprintf(cells[0], CELL, "%lld", (long long)r->id);
    snprintf(cells[1], CELL, "%s", r->sweep ? r->sweep : "");
    snprintf(cells[2], CELL, "%s", r->method ? r->method : "");
    snprintf(cells[3], CELL, "%s", r->targets && *r->targets ? r->targets : "-");
    snprintf(cells[4], CELL, "%d", r->r);
    fmt_real(cells[5], "%g", r->alpha);
    fmt_real(cells[6], "%g", r->lr);
    snprintf(cells[7], CELL, "%lld", (long long)r->seed);
    snprintf(cells[8], CELL, "%s", r->status);
    fmt_real(cells[9], "%.4f", r->eval_loss);
    fmt_real(cells[10], "%.0f", r->tokens_per_s);
    fmt_wall(cells[11], r->wall_s);
}

static void print_line(char cells[N_COLS][CELL], const int *width) {
    for (int c = 0; c < N_COLS; c++) {
        const char *sep = c + 1 < N_COLS ? "  " : "\n";
        if (RIGHT[c]) printf("%*s%s", width[c], cells[c], sep);
        else if (c + 1 < N_COLS) printf("%-*s%s", width[c], cells[c], sep);
        else printf("%s%s", cells[c], sep);
    }
}

static void print_summary(const RunRow *rows, int n) {
    static const char *const order[] = {"done",   "running",     "pending",
                                        "failed", "diverged",    "interrupted"};
    printf("%d run%s:", n, n == 1 ? "" : "s");
    const char *sep = " ";
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        int cnt = 0;
        for (int i = 0; i < n; i++) cnt += strcmp(rows[i].status, order[k]) == 0;
        if (cnt) {
            printf("%s%d %s", sep, cnt, order[k]);
            sep = ", ";
        }
    }
    printf("\n");
}

int cmd_runs(int argc, char **argv) {
    const char *db = STORE_DEFAULT_PATH, *sweep = NULL;
    const char **which = ll_calloc((size_t)argc, sizeof(char *));
    int n_which = 0, diff = 0, csv = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            ll_free(which);
            return 0;
        } else if (cli_flag(argc, argv, &i, "--db", &db) || cli_flag(argc, argv, &i, "--sweep", &sweep)) {
            continue;
        } else if (strcmp(argv[i], "--diff") == 0) {
            diff = 1;
        } else if (strcmp(argv[i], "--csv") == 0) {
            csv = 1;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (argv[i][0] != '-') {
            which[n_which++] = argv[i];
        } else {
            ll_free(which);
            fprintf(stderr, "loralab runs: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (csv && json) {
        fprintf(stderr, "loralab runs: --csv and --json are both given; pick one\n");
        ll_free(which);
        return 2;
    }
    if (n_which && !diff && !csv && !json) {
        fprintf(stderr, "loralab runs: runs ('%s') are listed only with --diff, --csv or --json\n", which[0]);
        usage(stderr);
        ll_free(which);
        return 2;
    }
    if (!ll_file_exists(db)) {
        ll_free(which);
        fprintf(stderr,
                "loralab runs: no database at '%s' (run `loralab sweep` first, or pass --db "
                "FILE)\n",
                db);
        return 2;
    }
    LLError err = {0};
    Store *s = NULL;
    LLStatus st = store_open(db, 1, &s, &err);
    if (st != LL_OK) {
        fprintf(stderr, "loralab runs: %s\n", err.msg);
        ll_free(which);
        return st == LL_ERR_FORMAT || st == LL_ERR_IO ? 2 : 1;
    }
    if (diff || csv || json) {
        int rc = export_runs(s, sweep, which, n_which, diff, csv, json);
        store_close(s);
        ll_free(which);
        return rc;
    }
    ll_free(which);
    RunRow *rows = NULL;
    int n = 0;
    st = store_list_runs(s, sweep, &rows, &n, &err);
    store_close(s);
    if (st != LL_OK) {
        fprintf(stderr, "loralab runs: %s\n", err.msg);
        return 1;
    }
    if (n == 0) {
        if (sweep) printf("no runs of sweep '%s' in %s\n", sweep, db);
        else printf("no runs in %s\n", db);
        store_free_runs(rows, n);
        return 0;
    }
    char (*cells)[N_COLS][CELL] = ll_malloc((size_t)n, sizeof *cells);
    int width[N_COLS];
    for (int c = 0; c < N_COLS; c++) width[c] = (int)strlen(HEAD[c]);
    for (int i = 0; i < n; i++) {
        fill_row(&rows[i], cells[i]);
        for (int c = 0; c < N_COLS; c++) {
            int w = (int)strlen(cells[i][c]);
            if (w > width[c]) width[c] = w;
        }
    }
    char head[N_COLS][CELL];
    for (int c = 0; c < N_COLS; c++) snprintf(head[c], CELL, "%s", HEAD[c]);
    print_line(head, width);
    for (int i = 0; i < n; i++) print_line(cells[i], width);
    print_summary(rows, n);
    free(cells);
    store_free_runs(rows, n);
    return 0;
}
