/* cmd_report: `loralab report --db FILE [--sweep NAME] [--out DIR]`: figures (gnuplot), tables
 * (Markdown, LaTeX) and an index.html from a results database; see analysis/report.h. The output
 * folder defaults to results/report/<sweep name, or "all">. Prints what was written and, for each
 * figure left out, why. Exit status: 0 written (also without gnuplot: then only scripts, data and
 * tables), 1 gnuplot failed on a script (the other figures, tables and index are written), 2 bad
 * usage or bad input (no database, not a loralab database or a newer schema, no finished runs, an
 * output folder that cannot be created). */
#include "commands.h"

#include <stdio.h>
#include <string.h>

#include "analysis/report.h"
#include "core.h"
#include "experiments/store.h"
#include "outdir.h"

static void usage(FILE *f) {
    fprintf(f, "usage: loralab report --db FILE [--sweep NAME] [--out DIR]\n"
               "  --db FILE      results database (default %s)\n"
               "  --sweep NAME   only the runs of this sweep (default: all runs)\n"
               "  --out DIR      output folder (default results/report/<sweep name or \"all\">)\n"
               "writes NAME.gp + NAME.dat + NAME.{pdf,svg,png} per figure, table.md, table.tex and index.html\n",
               STORE_DEFAULT_PATH);
}

/* A sweep name as one folder name: path separators and odd characters become '_'. */
static void default_out(const char *sweep, char *out, size_t cap) {
    char safe[128];
    size_t o = 0;
    const char *s = sweep ? sweep : "all";
    for (; *s && o + 1 < sizeof safe; s++) {
        char ch = *s;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '-' || ch == '_' || ch == '.';
        safe[o++] = ok ? ch : '_';
    }
    safe[o] = '\0';
    if (strcmp(safe, ".") == 0 || strcmp(safe, "..") == 0 || !safe[0]) snprintf(safe, sizeof safe, "_");
    snprintf(out, cap, "results/report/%s", safe);
}

int cmd_report(int argc, char **argv) {
    const char *db = STORE_DEFAULT_PATH, *sweep = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (cli_flag(argc, argv, &i, "--db", &db) || cli_flag(argc, argv, &i, "--sweep", &sweep) ||
                   cli_flag(argc, argv, &i, "--out", &out)) {
            continue;
        } else {
            fprintf(stderr, "loralab report: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char out_buf[256];
    if (!out) {
        default_out(sweep, out_buf, sizeof out_buf);
        out = out_buf;
    }
    ReportSummary sum;
    LLError err = {0};
    /* A report writes file by file into its folder: only into one that is new, empty or a report's. */
    if (outdir_claim(out, "report", &err)) {
        fprintf(stderr, "loralab report: %s\n", err.msg);
        return 2;
    }
    LLStatus st = report_write(db, sweep, out, &sum, &err);
    if (st != LL_OK && (st != LL_ERR_IO || sum.n_figs == 0)) {
        /* Nothing was drawn: no database or no finished runs in it, a foreign or newer database,
         * an output folder that cannot be made. The input is at fault. */
        fprintf(stderr, "loralab report: %s\n", err.msg);
        return 2;
    }
    printf("report of %s (%s): %d run%s, %d done, %d configuration%s; final metric: %s\n", db,
           sweep ? sweep : "all sweeps", sum.n_rows, sum.n_rows == 1 ? "" : "s", sum.n_done, sum.n_groups,
           sum.n_groups == 1 ? "" : "s", report_metric_label(sum.metric));
    for (int i = 0; i < sum.n_figs; i++) {
        const ReportFigure *f = &sum.figs[i];
        if (f->skipped) printf("  left out %-14s %s\n", f->name, f->note);
        else if (f->rendered) printf("  figure   %-14s %s/%s.{pdf,svg,png}\n", f->name, out, f->name);
        else printf("  script   %-14s %s/%s.gp (not rendered)\n", f->name, out, f->name);
    }
    printf("  table    %s/table.md, %s/table.tex\n  index    %s/index.html\n", out, out, out);
    if (sum.gnuplot_missing)
        fprintf(stderr,
                "loralab report: gnuplot not found: figures were not rendered (tables and scripts were "
                "written). Install it with scripts/deps.sh, then run `gnuplot NAME.gp` in %s, or rerun "
                "this command.\n",
                out);
    if (sum.unsandboxed[0])
        fprintf(stderr, "loralab report: note: gnuplot ran without its process sandbox (%s)\n", sum.unsandboxed);
    if (st != LL_OK) {
        fprintf(stderr, "loralab report: %s\n", err.msg);
        return 1;
    }
    return 0;
}
