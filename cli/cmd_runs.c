/* cmd_runs: `loralab runs [--db FILE] [--sweep NAME]`: a table of the runs in a results database
 * (id, sweep, method, targets, r, alpha, lr, seed, status, eval loss, tokens/s, wall time) and a
 * count per status. Opens the database read-only, so it is safe while a sweep is writing it. */
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "experiments/store.h"

enum { N_COLS = 12, CELL = 48 };

static const char *const HEAD[N_COLS] = {"id",   "sweep", "method", "targets",   "r",     "alpha",
                                         "lr",   "seed",  "status", "eval_loss", "tok/s", "wall"};
/* Numbers align right, words left. */
static const int RIGHT[N_COLS] = {1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1};

static void usage(FILE *f) {
    fprintf(f, "usage: loralab runs [--db FILE] [--sweep NAME]\n"
               "  --db FILE      results database (default %s)\n"
               "  --sweep NAME   only the runs of this sweep\n",
               STORE_DEFAULT_PATH);
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
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (cli_flag(argc, argv, &i, "--db", &db) || cli_flag(argc, argv, &i, "--sweep", &sweep)) {
            continue;
        } else {
            fprintf(stderr, "loralab runs: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!ll_file_exists(db)) {
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
        return st == LL_ERR_FORMAT || st == LL_ERR_IO ? 2 : 1;
    }
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
