/* report: turns a results database into paper figures, tables and an HTML index.
 *
 * Units. A report is written per UNIT, one folder each, and never mixes units in a figure or a
 * table: by default a unit is one sweep (runs.sweep) and one task (the config member task.data;
 * a sweep whose runs name several tasks gives one unit per task); with group_by "task.data" a
 * unit is one task, pooling the sweeps that ran it; with mix = 1 everything selected is one unit
 * (the only way to put several sweeps or tasks on one axis; the tables then gain a task column).
 * Every title, table caption and index page names the unit's task and sweep.
 *
 * What it reads: the runs of a unit, their metric curves and AdaLoRA's final ranks, through the
 * store's read-only query functions (no SQL here). Only runs whose status is `done` enter the
 * statistics; `diverged` runs are counted beside their configuration, so a table says "n=2, 1
 * diverged" instead of hiding them; other statuses are left out and counted.
 *
 * Groups: runs that differ only by seed form one group: same method, targets, r, alpha, lr, and
 * equal canonical configs (runs.config_json) once the seed members "train.seed" and
 * "adapter.seed" are removed. So a sweep over dropout, steps, precision, ... gives one group per
 * value, never a pool of different configurations. Rows without a config_json, or with one that
 * is not a JSON object (older or hand-made databases), are grouped by the five fields alone.
 *
 * Metrics. The unit's metric is the accuracy (higher is better) when any done run recorded one (a
 * classification task), else the loss (lower is better). A run's VALIDATION value is that metric
 * on the validation split for the weights the run kept: its best evaluation (runs.best_metric)
 * when it kept its best weights, else its last evaluation (eval_loss or accuracy). Its TEST value
 * is the kept weights' test_accuracy or test_loss. A group's numbers are the mean, the sample
 * standard deviation (n - 1) and the 95% Student t interval over its seeds (analysis/stats.h).
 *
 * Selection (select = VALID, the default when any run of the unit has a test value): for each
 * method (the variant name: lora, rslora, dora, pissa, loraplus, adalora, vera, full) and each
 * value of group_by (when given), the configuration with the best mean validation value over its
 * seeds is chosen, and the table gives its TEST value (mean ± 95% interval, n) with the chosen lr
 * and every other value that was searched. Choosing on validation and reporting test keeps the
 * number that is compared from being the one that was maximised.
 *
 * Bold: only the metric column, only the best row, and only when its 95% interval does not
 * overlap that of the next best row (stats_separated); within each group_by value. Times and
 * memory are never bold (a run that shared its core is not a better configuration).
 *
 * Variant: what tells a group apart from the other groups with the same (method, targets, r,
 * alpha, lr): the config members whose values differ among them, "key=value" in key order joined
 * by ", " ("dropout=0.1", "precision=bf16, train.steps=600"). A "train." or "adapter." prefix is
 * dropped when no other key of those configs ends in the same name (base.steps exists, so
 * train.steps keeps its prefix). A member absent from some configs counts as differing and shows
 * its default there: "fp32" for train.precision (the config leaves it out at fp32), "default" for
 * any other key. A group whose runs have no config says "config unknown". The variant is "" for a
 * group alone of its kind, and is shown in figure legends, the tables (a "variant" column, only
 * when some group has one) and index.html.
 *
 * What it writes into a unit's folder:
 *   NAME.gp + NAME.dat -> NAME.pdf, NAME.svg, NAME.png   for each figure (below); the .gp script
 *       sets its own terminals and reads NAME.dat by relative path, so `gnuplot NAME.gp` in the
 *       folder redraws all three, and `gnuplot -e 'formats="png"' NAME.gp` one of them;
 *   table.md, table.tex   the selection table (select = VALID), else every configuration;
 *   configs.md, configs.tex  every configuration (only beside a selection table);
 *   runs.csv              the runs of the unit's sweep (every sweep selected, when the unit has none),
 *                         every resolved config key a column (experiments/runs_export.h);
 *   index.html            every figure, the tables, and one line for each figure left out, saying why.
 * LaTeX tables are labelled tab:UNIT (tab:UNIT-configs), use booktabs, and are compact unless
 * wide = 1: targets abbreviated (Q K V O G U D, explained in the caption), no times or memory.
 * Figures: curves (train and eval loss against step: the best configuration of each method, mean
 * over seeds with a band of one sd), curves_METHOD (the same, a line per configuration, the best
 * REPORT_MAX_CURVES of the method), rank (final metric against r, best configuration per rank),
 * rank_alpha (LoRA heatmap, only where ranks were run with two alphas or more), params (final
 * metric against trainable parameters, Pareto front), targets (final metric per target-module
 * set), lr (validation metric against the learning rate, a line per method; it says when a
 * chosen lr is at the edge of its grid), adalora_ranks (layer x module heatmap of the final ranks
 * of the best AdaLoRA configuration, mean over its seeds).
 *
 * Figure sizes: column (3.3 in wide, 8 pt fonts) or page (6.8 in, 9 pt), fonts at print size in
 * the PDF (pdfcairo embeds them). REPORT_SIZE_AUTO: column for single plots, page for the two-panel
 * curves. Series: up to 16 lines per figure, each with its own colour, dash type and point type
 * together (no two series of a plot share the triple; the dash and point pair alone differs too, so
 * greyscale prints keep them apart); no yellow; full fine-tuning black.
 *
 * gnuplot runs as an external program (fork + exec of `gnuplot NAME.gp` in the folder) and its
 * exit status is checked; its stderr goes into the error message. Without gnuplot the scripts,
 * data and tables are still written and the index says how to render them.
 *
 * Untrusted input: every value read from the database (methods, targets, config members, sweep
 * names, ranks' module names) is data to print, never syntax. Strings reach scripts and data files
 * only through analysis/gnuplot.c (gp_quote, gp_comment), tables and the index only through
 * analysis/escape.c (tex_text, md_text, html_text); a figure or folder named after a value gets a
 * sanitized, unique file stem (curves_METHOD); titles and notes, printed to the terminal too, hold
 * no control characters. gnuplot runs under a seccomp filter that lets it start no process
 * (gnuplot.h); where the system has none, ReportSummary.unsandboxed says why and index.html
 * repeats it.
 */
#ifndef LL_REPORT_H
#define LL_REPORT_H

#include <stdint.h>

#include "analysis/stats.h"
#include "core.h"
#include "experiments/store.h"

#define REPORT_MAX_FIGS 32
#define REPORT_MAX_CURVES 8  /* lines in one per-method curves figure (the best configurations) */
#define REPORT_MAX_SERIES 16 /* series with distinct styles in one plot */

typedef enum { REPORT_EVAL_LOSS, REPORT_ACCURACY } ReportMetric;
typedef enum { REPORT_SELECT_AUTO, REPORT_SELECT_VALID, REPORT_SELECT_ALL } ReportSelect;
typedef enum { REPORT_SIZE_AUTO, REPORT_SIZE_COLUMN, REPORT_SIZE_PAGE } ReportSize;

/* What to report and how. Zeroed: every sweep, one unit per sweep and task, selection when there
 * are test values, automatic sizes, compact LaTeX. */
typedef struct {
    const char *sweep;    /* only this sweep; NULL: every sweep */
    const char *group_by; /* a canonical config key ("adapter.r"; "task.data" makes units per task); NULL */
    int mix;              /* 1: one unit of everything selected */
    ReportSelect select;
    ReportSize size;
    int wide;             /* LaTeX tables with every column */
} ReportOptions;

/* Mean and sample standard deviation of the finite values; n counts them. mean is NaN when
 * n = 0, sd is NaN when n < 2 (one seed has no spread). */
typedef struct {
    double mean, sd;
    int n;
} ReportStat;
void report_stat(const double *x, int n, ReportStat *out);

/* One configuration (everything but the seed) and its seeds. */
typedef struct {
    char *method, *targets; /* targets as stored ("q_proj,v_proj"; "" when none) */
    int r;
    double alpha, lr;
    char *config;           /* canonical config without the seed members, keys sorted (compact
                             * JSON); NULL when the runs had none (grouped by the fields above) */
    char *variant;          /* what sets it apart from groups with equal fields above (see the
                             * header); "" when none does */
    int n_runs;             /* done runs (seeds) */
    int n_diverged;         /* diverged runs of this configuration (not in the statistics) */
    int64_t *run_ids, *seeds; /* of the done runs, ascending by seed */
    ReportStat metric;      /* the validation value (see the header) */
    StatsSummary val, test; /* validation and test values with their 95% intervals; test.n = 0 without */
    ReportStat train_loss, wall_s, peak_mem, trainable;
    ReportStat trainable_pct; /* 100 * trainable / total */
} ReportGroup;

/* REPORT_ACCURACY when any done run has a finite accuracy, else REPORT_EVAL_LOSS. */
ReportMetric report_metric_of(const RunRow *rows, int n);
const char *report_metric_label(ReportMetric m); /* "eval loss" | "accuracy" */
int report_higher_better(ReportMetric m);
/* Full fine-tuning ("full"): no rank, drawn as a reference. */
int report_is_full(const char *method);
/* A run's validation and test values under metric m (see the header); NaN when absent. */
double report_run_val(const RunRow *r, ReportMetric m);
double report_run_test(const RunRow *r, ReportMetric m);

/* Groups the done and diverged rows by configuration (see "Groups" above) and names each
 * group's variant; returns the number of groups, sorted by method (full, lora, adalora, vera, then
 * by name), targets, r, alpha, lr, then by the rest of the config: at the first key (in byte
 * order) where two configs differ, an absent member sorts first, numbers by value, strings by
 * bytes; a group without a config sorts before those with one. *out is NULL when 0. Free with
 * report_free_groups. */
int report_aggregate(const RunRow *rows, int n, ReportMetric metric, ReportGroup **out);
void report_free_groups(ReportGroup *g, int n);

/* The value of config key `key` in a group's config, as text (malloc'd): strings without quotes,
 * other values as JSON; "fp32"/"default" when the member is absent (as in variants), "unknown"
 * when the group has no config. */
char *report_group_value(const ReportGroup *g, const char *key);

/* Index of the best finite value (lowest, or highest when higher_better); the first of equals;
 * -1 when none is finite. */
int report_best(const double *v, int n, int higher_better);

/* Pareto front of (cost, value) points: on_front[i] = 1 when no other point has cost <= and a
 * value at least as good, with one of the two strictly better. Points with a non-finite
 * coordinate are never on the front. Returns the number of points on the front. */
int report_pareto(const double *cost, const double *value, int n, int higher_better,
                  int *on_front /* OUT, n */);

/* A curve averaged over k runs: at every step logged by any run, mean and sd over the runs that
 * logged a finite value there. Each run's steps must be ascending (the store returns them so). */
typedef struct {
    int len;
    int *steps, *n;
    double *mean, *sd;
} ReportCurve;
void report_curve(int k, const int *const *steps, const double *const *values, const int *lens,
                  ReportCurve *out);
void report_free_curve(ReportCurve *c);

/* One figure of the report: written and rendered, written only (no gnuplot), or left out. */
typedef struct {
    char name[48];     /* file stem: NAME.gp, NAME.dat, NAME.{pdf,svg,png} */
    char title[160];
    int skipped;       /* 1: left out, reason says why */
    int rendered;      /* 1: gnuplot made the pdf, svg and png */
    char note[320];    /* skipped: the reason; otherwise remarks ("single seed: no band") */
} ReportFigure;

typedef struct {
    int n_rows;        /* runs read */
    int n_done, n_diverged, n_other; /* by status; n_other: pending, running, failed, ... */
    int n_groups;
    ReportMetric metric;
    int selected;      /* 1: table.* is the selection table (configs.* beside it) */
    int has_test;      /* some done run has a test value */
    int gnuplot_missing;
    char unsandboxed[128]; /* "" when gnuplot ran under its seccomp filter (gnuplot.h), else why
                            * it ran without one (a note for the user, not an error) */
    char notes[1024];  /* remarks for the reader, one per line ("LoRA: the chosen lr 0.01 is the
                        * largest of its grid ..."); no other control character */
    int n_figs;
    ReportFigure figs[REPORT_MAX_FIGS];
} ReportSummary;

/* One unit (see the header). */
typedef struct {
    char name[72];     /* its folder's name: [A-Za-z0-9._-], unique without case among the units */
    char *sweep;       /* NULL: several (group_by task, or mix) */
    char *task;        /* task.data of its runs; NULL: several (mix); "" when the runs name none */
    char title[200];   /* "sweep S, task T" for titles and captions (control characters cleaned) */
    int n_runs, n_done;
} ReportUnit;

/* The units of the database under o (o->sweep, o->group_by, o->mix), in the order of their sweeps,
 * then of their tasks' first runs. LL_ERR_IO: no database; LL_ERR_FORMAT: not a loralab database
 * or a newer schema; LL_ERR_STATE: no runs (of that sweep: the message names the sweeps there
 * are), or no finished run in any unit. Units without a finished run are listed (n_done = 0).
 * Free with report_free_units. */
LLStatus report_units(const char *db, const ReportOptions *o, ReportUnit **units, int *n, LLError *err);
void report_free_units(ReportUnit *u, int n);

/* Writes the report of unit u (NULL: every run o selects, as one unit) into out_dir (created).
 * LL_ERR_IO: db missing or unwritable folder; LL_ERR_FORMAT: not a loralab database or a newer
 * schema (the store's message); LL_ERR_STATE: no finished runs to report (the message says what
 * the database holds); LL_ERR_IO also when gnuplot fails on a script (its stderr in the message).
 * A missing gnuplot is not an error: sum->gnuplot_missing = 1 and only scripts, data, tables and
 * the index are written. sum may be NULL. */
LLStatus report_write_unit(const char *db, const ReportOptions *o, const ReportUnit *u, const char *out_dir,
                           ReportSummary *sum, LLError *err);
/* report_write_unit of every run of sweep (NULL: all) as one unit, default options otherwise. */
LLStatus report_write(const char *db, const char *sweep, const char *out_dir, ReportSummary *sum, LLError *err);

/* index.html of a folder of unit reports: a link to each unit's folder with its counts. sums[i]
 * is unit i's summary, or NULL when it was not written (no finished runs). */
LLStatus report_write_root_index(const char *root, const char *db, const ReportUnit *u,
                                 const ReportSummary *const *sums, int n, LLError *err);

/* "targets" for people: "q_proj,v_proj" -> "q,v" (the "_proj" suffixes dropped); "" -> "-". */
void report_short_targets(const char *targets, char *out, size_t cap);
/* "targets" for a narrow LaTeX column: one capital per module of a Llama block ("q_proj,v_proj"
 * -> "QV", all seven -> "QKVOGUD"); other names as report_short_targets writes them. */
void report_abbrev_targets(const char *targets, char *out, size_t cap);

#endif
