/* cmd_report: `loralab report [--db FILE] [--sweep NAME] [--out DIR] [--group-by KEY] [--mix]
 * [--select valid|all] [--size column|page] [--wide]`: figures (gnuplot), tables (Markdown,
 * LaTeX) and an index.html from a results database, one folder per unit (a sweep and its task; see
 * analysis/report.h) under the output folder, which defaults to results/report/<database name
 * without .db>; an index.html there links the units. Prints what was written and, for each figure
 * left out, why. Exit status: 0 written (also without gnuplot: then only scripts, data and tables),
 * 1 gnuplot failed on a script (the other figures, tables and index are written), 2 bad usage or
 * bad input (no database, not a loralab database or a newer schema, no finished runs, an unknown
 * --group-by key, an output folder that is not the report's). */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/report.h"
#include "core.h"
#include "experiments/keys.h"
#include "experiments/store.h"
#include "outdir.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loralab report [--db FILE] [--sweep NAME] [--out DIR] [--group-by KEY] [--mix]\n"
            "                      [--select valid|all] [--size column|page] [--wide]\n"
            "  --db FILE         results database (default %s)\n"
            "  --sweep NAME      only the runs of this sweep (default: every sweep)\n"
            "  --out DIR         output folder (default results/report/<database name>); each unit of the report\n"
            "                    (one sweep and its task) gets its folder DIR/<sweep> and DIR/index.html links them\n"
            "  --group-by KEY    one table row per method and value of KEY (a config key or its short name:\n"
            "                    r, alpha, dropout, ...); `task` makes one unit per task, pooling its sweeps\n"
            "  --mix             one report of everything selected (sweeps and tasks on the same axes)\n"
            "  --select valid    table: each method's configuration with the best mean validation metric,\n"
            "                    its TEST metric as mean and 95%% interval over seeds (default when runs have\n"
            "                    test metrics); --select all: every configuration's validation metric\n"
            "  --size column     figures 3.3 in wide with 8 pt fonts; --size page: 6.8 in, 9 pt (default:\n"
            "                    column for single plots, page for the two-panel loss curves)\n"
            "  --wide            LaTeX tables with every column (default: compact, for a paper's column)\n"
            "writes per unit NAME.gp + NAME.dat + NAME.{pdf,svg,png} per figure, table.md, table.tex\n"
            "(+ configs.md, configs.tex beside a selection) and index.html\n",
            STORE_DEFAULT_PATH);
}

/* results/report/<the database's file name without .db>, as one folder name. */
static void default_root(const char *db, char *out, size_t cap) {
    const char *base = strrchr(db, '/');
    base = base ? base + 1 : db;
    char stem[128];
    snprintf(stem, sizeof stem, "%s", base);
    size_t n = strlen(stem);
    if (n > 3 && strcmp(stem + n - 3, ".db") == 0) stem[n - 3] = '\0';
    for (char *p = stem; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                 *p == '_' || *p == '.';
        if (!ok) *p = '_';
    }
    if (!stem[0] || stem[0] == '.') stem[0] = '_';
    snprintf(out, cap, "results/report/%s", stem);
}

static void print_unit(const char *dir, const ReportUnit *u, const ReportSummary *sum) {
    printf("%s (%s): %d run%s, %d done, %d configuration%s; metric: %s%s\n", u->name, u->title, sum->n_rows,
           sum->n_rows == 1 ? "" : "s", sum->n_done, sum->n_groups, sum->n_groups == 1 ? "" : "s",
           report_metric_label(sum->metric),
           sum->selected ? (sum->has_test ? "; chosen on validation, reported on test" : "; chosen on validation")
                         : "");
    for (int i = 0; i < sum->n_figs; i++) {
        const ReportFigure *f = &sum->figs[i];
        if (f->skipped) printf("  left out %-14s %s\n", f->name, f->note);
        else if (f->rendered) printf("  figure   %-14s %s/%s.{pdf,svg,png}\n", f->name, dir, f->name);
        else printf("  script   %-14s %s/%s.gp (not rendered)\n", f->name, dir, f->name);
    }
    printf("  table    %s/table.md, %s/table.tex\n", dir, dir);
    if (sum->selected) printf("  configs  %s/configs.md, %s/configs.tex\n", dir, dir);
    printf("  index    %s/index.html\n", dir);
    for (const char *p = sum->notes; *p;) {
        const char *e = strchr(p, '\n');
        int len = e ? (int)(e - p) : (int)strlen(p);
        printf("  note     %.*s\n", len, p);
        p += len + (e != NULL);
    }
}

int cmd_report(int argc, char **argv) {
    const char *db = STORE_DEFAULT_PATH, *out = NULL, *group = NULL, *select = NULL, *size = NULL;
    ReportOptions o = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--mix") == 0) {
            o.mix = 1;
        } else if (strcmp(argv[i], "--wide") == 0) {
            o.wide = 1;
        } else if (cli_flag(argc, argv, &i, "--db", &db) || cli_flag(argc, argv, &i, "--sweep", &o.sweep) ||
                   cli_flag(argc, argv, &i, "--out", &out) || cli_flag(argc, argv, &i, "--group-by", &group) ||
                   cli_flag(argc, argv, &i, "--select", &select) || cli_flag(argc, argv, &i, "--size", &size)) {
            continue;
        } else {
            fprintf(stderr, "loralab report: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (select && strcmp(select, "valid") == 0) o.select = REPORT_SELECT_VALID;
    else if (select && strcmp(select, "all") == 0) o.select = REPORT_SELECT_ALL;
    else if (select) {
        fprintf(stderr, "loralab report: --select '%s': expected valid or all\n", select);
        return 2;
    }
    if (size && strcmp(size, "column") == 0) o.size = REPORT_SIZE_COLUMN;
    else if (size && strcmp(size, "page") == 0) o.size = REPORT_SIZE_PAGE;
    else if (size) {
        fprintf(stderr, "loralab report: --size '%s': expected column or page\n", size);
        return 2;
    }
    char key[128];
    LLError err = {0};
    if (group) {
        if (strcmp(group, "task") == 0) snprintf(key, sizeof key, "task.data");
        else if (!config_short_name(group, key, sizeof key, &err)) {
            fprintf(stderr, "loralab report: --group-by: %s\n", err.msg);
            return 2;
        }
        o.group_by = key;
    }
    char root[256];
    if (out) snprintf(root, sizeof root, "%s", out);
    else default_root(db, root, sizeof root);
    /* A report writes file by file into its folders: only into ones that are new, empty or a report's. */
    if (outdir_claim(root, "report", &err)) {
        fprintf(stderr, "loralab report: %s\n", err.msg);
        return 2;
    }
    ReportUnit *units = NULL;
    int n = 0;
    if (report_units(db, &o, &units, &n, &err)) {
        fprintf(stderr, "loralab report: %s\n", err.msg);
        return 2;
    }
    ReportSummary *sums = calloc((size_t)n, sizeof *sums);
    const ReportSummary **written = calloc((size_t)n, sizeof *written);
    LL_ASSERT(sums && written);
    int rc = 0, gnuplot_missing = 0;
    char unsandboxed[128] = "";
    printf("report of %s: %d unit%s under %s\n", db, n, n == 1 ? "" : "s", root);
    for (int k = 0; k < n && rc != 2; k++) {
        if (units[k].n_done == 0) {
            printf("%s (%s): %d run%s, none finished: no report\n", units[k].name, units[k].title, units[k].n_runs,
                   units[k].n_runs == 1 ? "" : "s");
            continue;
        }
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", root, units[k].name);
        if (outdir_claim(dir, "report", &err)) {
            fprintf(stderr, "loralab report: %s\n", err.msg);
            rc = 2;
            break;
        }
        LLStatus st = report_write_unit(db, &o, &units[k], dir, &sums[k], &err);
        if (st != LL_OK && (st != LL_ERR_IO || sums[k].n_figs == 0)) {
            /* Nothing was drawn: a foreign or newer database, a folder that cannot be made. */
            fprintf(stderr, "loralab report: %s\n", err.msg);
            rc = 2;
            break;
        }
        written[k] = &sums[k];
        print_unit(dir, &units[k], &sums[k]);
        gnuplot_missing |= sums[k].gnuplot_missing;
        if (sums[k].unsandboxed[0] && !unsandboxed[0]) snprintf(unsandboxed, sizeof unsandboxed, "%s", sums[k].unsandboxed);
        if (st != LL_OK) {
            fprintf(stderr, "loralab report: %s\n", err.msg);
            rc = 1;
        }
    }
    if (rc != 2 && report_write_root_index(root, db, units, written, n, &err)) {
        fprintf(stderr, "loralab report: %s\n", err.msg);
        rc = 2;
    }
    if (rc != 2) printf("index of the units: %s/index.html\n", root);
    if (gnuplot_missing)
        fprintf(stderr,
                "loralab report: gnuplot not found: figures were not rendered (tables and scripts were written). "
                "Install it with scripts/deps.sh, then run `gnuplot NAME.gp` in a unit's folder, or rerun this "
                "command.\n");
    if (unsandboxed[0]) fprintf(stderr, "loralab report: note: gnuplot ran without its process sandbox (%s)\n", unsandboxed);
    free(sums);
    free(written);
    report_free_units(units, n);
    return rc;
}
