/* report_int: what the report's files share (not an API: only analysis/report*.c, fig_*.c,
 * tables.c, select.c and groups.c include it).
 *
 * The report of one unit is built around one RpCtx: the unit's groups (report_aggregate), its
 * methods in group order, the options, the figure list of the summary. Files and their jobs:
 *   groups.c      statistics, grouping by configuration, variants, curves over seeds, Pareto;
 *   select.c      the choice on validation (per method and group_by value), lr grids and edges;
 *   figure.c      figure bookkeeping (names, notes, left-out figures), script prologue, sizes,
 *                 series styles, labels, rendering;
 *   fig_curves.c  loss curves; fig_rank.c rank and target-module figures; fig_heatmap.c the
 *                 rank x alpha and AdaLoRA heatmaps; fig_pareto.c parameters and the Pareto front;
 *                 fig_lr.c learning-rate sensitivity;
 *   tables.c      the Markdown and LaTeX tables and index.html;
 *   report.c      units, and the order in which one unit's files are written.
 *
 * Invariants every figure writer keeps:
 *   - A plotted series (a term with a title, or a keyentry) carries its style inline as
 *     `lc rgb '#RRGGBB' dt N pt N`, from rp_series_style or rp_full_style, so a script read alone
 *     shows that no two series of a plot statement share the triple (the report's test parses it).
 *   - Bands and error areas are `notitle` and coloured like their series.
 *   - Nothing from the database is written but through gp_quote / gp_comment (gnuplot.h) or the
 *     escapes of escape.h; figure stems are rp_fig_stem's.
 */
#ifndef LL_REPORT_INT_H
#define LL_REPORT_INT_H

#include "analysis/escape.h"
#include "analysis/gnuplot.h"
#include "analysis/report.h"

typedef struct {
    const char *db, *dir;
    const ReportOptions *opt;
    const ReportUnit *unit; /* NULL: everything the options select, as one unit */
    char where[240];        /* "task sotu (data/sotu), sweep quickstart" (cleaned): captions, index */
    char tag[80];           /* the task's label ("sotu"), else the sweep's: the start of every title */
    char stem[72];          /* the unit's name for LaTeX labels ("all" without a unit) */
    Store *store;
    ReportGroup *g;
    int ng;
    ReportMetric metric;
    int hb;                 /* higher is better */
    int select_valid;       /* the table is the selection (report.h, "Selection") */
    int has_test;
    char gnuplot[1024];     /* full path, "" when not found */
    ReportSummary *sum;
    const char *methods[64]; /* distinct methods of the groups, in group order */
    int n_methods;
    int has_variant;        /* some group has a variant: the tables get a "variant" column */
    int multi_task;         /* groups of several tasks (mix): a task column, tasks in legends */
    char **group_task;      /* task label of each group ("sotu"), when multi_task */
    LLStatus render_rc;     /* first gnuplot failure (rendering goes on for the other figures) */
    LLError render_err;
} RpCtx;

/* ---- groups.c -------------------------------------------------------------------------------- */

int rp_better(double a, double b, int higher_better);
int rp_cmp_double(double a, double b);
int rp_cmp_int(const void *a, const void *b);
int rp_cmp_dbl(const void *a, const void *b);
/* The task label of a task.data path: its last component ("data/sotu/" -> "sotu"); "" -> "". */
void rp_task_label(const char *task_data, char *out, size_t cap);
/* The task.data member of a run's config (malloc'd; "" when absent or no config). */
char *rp_config_task(const char *config_json);
/* Among groups idx[0..k): the config members (other than the seeds, the grouping fields' keys and
 * `also`) whose values differ, rendered "name=value, ..." for group idx[which] the way variants
 * are (malloc'd; "" when none differ). */
char *rp_differing(const ReportGroup *g, const int *idx, int k, int which, const char *also);

/* ---- select.c -------------------------------------------------------------------------------- */

typedef struct {
    char *value;        /* the group_by value ("" without group_by) */
    const char *method; /* the groups' string */
    int chosen;         /* group index: best mean validation value among the candidates */
    int n_candidates;   /* configurations of (value, method) with a finite validation mean */
    char *searched;     /* the chosen values of other searched keys (rp_differing), "" when none */
    int n_lr;           /* distinct learning rates among the candidates */
    double lr_min, lr_max;
    int lr_edge;        /* -1: the chosen lr is the smallest of >= 2, +1 the largest, 0 otherwise */
    int bold;           /* best test mean of its value, separated from the next (stats_separated) */
} RpSel;

/* The selection rows, sorted by value, then method order; *out NULL when 0. */
int rp_select(const RpCtx *c, RpSel **out);
void rp_free_select(RpSel *s, int n);
/* Which rows[0..n) to bold: the best of those with equal group (group[i], may be NULL: one group)
 * by stats mean, when separated from the next best of its group. bold[] is written for all. */
void rp_bold_rule(const StatsSummary *const *s, const char *const *group, int n, int higher_better, int *bold);
/* "LoRA: the chosen lr 0.01 is the largest of its grid (0.001 to 0.01); ..." into the summary notes. */
void rp_lr_edge_notes(RpCtx *c, const RpSel *s, int n);

/* ---- figure.c -------------------------------------------------------------------------------- */

typedef struct {
    const char *lc; /* "#RRGGBB" */
    int dt, pt;
} RpStyle;

/* Series i (0-based) of a plot; i < REPORT_MAX_SERIES are pairwise distinct in (lc, dt, pt) and in
 * (dt, pt); beyond, the table wraps. */
RpStyle rp_series_style(int i);
RpStyle rp_full_style(void); /* black, dashed: full fine-tuning, in every figure */
/* A method's style in figures whose series are methods: full -> rp_full_style, others by their
 * order among the non-full methods of the unit. */
RpStyle rp_method_style(const RpCtx *c, const char *method);
/* " lc rgb '#RRGGBB' dt N pt N" */
void rp_put_style(TextBuf *b, RpStyle s);
/* A method's series of a plot statement: 'STEM.dat' index BLOCK using 1:2:3 with WITH, the method's
 * style and its label as title; ", \\" and a new line before all but the first (*first). */
void rp_plot_method(const RpCtx *c, TextBuf *gp, int *first, const char *stem, int block, const char *with,
                    const char *method);

/* Figure geometry for the size option: width, height and font (pt at print size). */
typedef struct {
    double w, h;
    int font;
    int column; /* 1: column width (key below the plot), 0: page width (key right of it) */
    int key_rows;
} RpSize;
/* A single-panel plot with n_key legend entries. */
RpSize rp_size_single(const RpCtx *c, int n_key);
/* A heatmap (no legend). */
RpSize rp_size_heatmap(const RpCtx *c);
/* The key of a single-panel plot, for its size. */
void rp_put_key(TextBuf *gp, RpSize sz);

ReportFigure *rp_fig_new(RpCtx *c, const char *name, const char *title);
void rp_fig_stem(const RpCtx *c, const char *prefix, const char *value, char *out, size_t cap);
void rp_fig_note(ReportFigure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rp_fig_skip(RpCtx *c, ReportFigure *f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Script header: provenance, and the loop over output formats at size sz. */
void rp_gp_begin(const RpCtx *c, TextBuf *b, const ReportFigure *f, RpSize sz);
void rp_dat_header(const RpCtx *c, TextBuf *d, const ReportFigure *f);
void rp_dat_next_block(TextBuf *d);
LLStatus rp_fig_finish(RpCtx *c, ReportFigure *f, TextBuf *gp, TextBuf *dat, LLError *err);
void rp_render_all(RpCtx *c);
void rp_gp_viridis(TextBuf *b);
const char *rp_cell_text_colour(double v, double lo, double hi);
/* "TITLE (task T)" style: the figure title with the unit appended, into out. */
void rp_title(const RpCtx *c, char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void rp_summary_note(RpCtx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *rp_method_label(const char *m);
void rp_group_label(const RpCtx *c, int gi, int with_method, char *out, size_t cap);
void rp_fmt_count(char *out, size_t cap, double v);
void rp_fmt_time(char *out, size_t cap, double s);
void rp_fmt_mem(char *out, size_t cap, double bytes);
double rp_gmetric(const RpCtx *c, int i);
int rp_best_group(const RpCtx *c, const int *idx, int k);
/* The full fine-tuning reference: its best configuration, or -1. */
int rp_full_ref(const RpCtx *c);
void rp_gp_full_vars(const RpCtx *c, int fr, TextBuf *gp, TextBuf *d);
void rp_gp_full_terms(const RpCtx *c, int fr, TextBuf *gp, int *first);

/* ---- the figures and tables ------------------------------------------------------------------ */

LLStatus rp_figs_curves(RpCtx *c, LLError *err);
LLStatus rp_fig_rank(RpCtx *c, LLError *err);
LLStatus rp_fig_targets(RpCtx *c, LLError *err);
LLStatus rp_fig_rank_alpha(RpCtx *c, LLError *err);
LLStatus rp_fig_adalora(RpCtx *c, LLError *err);
LLStatus rp_fig_params(RpCtx *c, LLError *err);
LLStatus rp_fig_lr(RpCtx *c, const RpSel *s, int ns, LLError *err);

typedef struct RpTables RpTables;
/* Builds the tables' cells (the selection's too when c->select_valid) and writes table.* (and
 * configs.*); the index writes them again as HTML. */
LLStatus rp_write_tables(RpCtx *c, const RpSel *s, int ns, RpTables **out, LLError *err);
LLStatus rp_write_index(RpCtx *c, const RpTables *t, LLError *err);
void rp_free_tables(RpTables *t);

#endif
