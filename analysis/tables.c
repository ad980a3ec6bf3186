/* tables: the report's tables (Markdown, LaTeX) and its index.html.
 *
 * Two tables. The configurations table: one row per configuration, its validation value as
 * mean ± 95% interval over seeds, its parameters, time and memory. The selection table (select.c):
 * one row per method (and group_by value), the chosen configuration's test value as mean ± 95%
 * interval, n, the chosen lr and every other searched value, and the validation mean it was chosen
 * on. With a selection, table.* is the selection and configs.* the configurations; without one,
 * table.* is the configurations.
 *
 * Invariants
 *   - Bold marks only the metric column, only the best row (of its task, or of its group_by value),
 *     and only when its interval does not overlap the next best's (rp_bold_rule, stats_separated).
 *     Parameters, times and memory are never bold.
 *   - Every value from the database reaches a file through md_text, tex_text or html_text; the
 *     LaTeX label is the unit's name reduced to [A-Za-z0-9.-] (tab:NAME, tab:NAME-configs), so
 *     two units' tables never clash in one paper.
 *   - The LaTeX tables are compact unless the options say wide: the method, the configuration's
 *     values (the searched ones, in the selection), the metric and n, at \footnotesize, so a table
 *     fits a column of a two-column paper; a column that holds one value in every row is left out
 *     and its value said once in the caption; targets abbreviated to one capital per module, the
 *     letters explained in the caption. Markdown and HTML show every column.
 *   - Every caption names the unit (task and sweep) and says what the numbers are.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COL 20

typedef struct {
    char text[200];
    char tex[64]; /* the LaTeX text when it differs (abbreviated targets); "" otherwise */
    int bold;
} Cell;

typedef struct {
    int ncol, nrow;
    char head[MAX_COL][64];
    char tex_head[MAX_COL][40]; /* the LaTeX head, shorter ("" = head): the caption says the rest */
    int right[MAX_COL];   /* numbers: right-aligned */
    int compact[MAX_COL]; /* in the compact LaTeX table */
    int keep[MAX_COL];    /* kept there even when every row holds the same value (method, metric) */
    Cell *cells;          /* nrow x ncol */
    char caption[1400];
    char tex_extra[400];  /* appended to the LaTeX caption (the targets legend) */
    char label[96];
    char file[16];        /* "table" | "configs" */
} Table;

struct RpTables {
    Table t[2];
    int n;
};

static int add_col(Table *t, const char *head, int right, int compact) {
    LL_ASSERT(t->ncol < MAX_COL);
    int j = t->ncol++;
    snprintf(t->head[j], sizeof t->head[j], "%s", head);
    static const char *const short_heads[][2] = {{"trainable params", "params"}, {"% of total", "% params"},
                                                 {"other chosen values", "other"}, {"time / run", "time"},
                                                 {"peak memory", "memory"}};
    for (size_t i = 0; i < sizeof short_heads / sizeof short_heads[0]; i++)
        if (strcmp(head, short_heads[i][0]) == 0) snprintf(t->tex_head[j], sizeof t->tex_head[j], "%s", short_heads[i][1]);
    t->right[j] = right;
    t->compact[j] = compact;
    return j;
}

static Cell *cell(Table *t, int i, int j) { return &t->cells[(size_t)i * MAX_COL + (size_t)j]; }
static const Cell *ccell(const Table *t, int i, int j) { return &t->cells[(size_t)i * MAX_COL + (size_t)j]; }

static void set(Table *t, int i, int j, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void set(Table *t, int i, int j, const char *fmt, ...) {
    if (j < 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cell(t, i, j)->text, sizeof cell(t, i, j)->text, fmt, ap);
    va_end(ap);
}

/* "1.5000 ± 0.1414", "1.5000" (one seed: no interval), "-" (none). */
static void fmt_ci(char *out, size_t cap, const StatsSummary *s) {
    if (s->n >= 2) snprintf(out, cap, "%.4f ± %.4f", s->mean, s->half);
    else if (s->n == 1) snprintf(out, cap, "%.4f", s->mean);
    else snprintf(out, cap, "-");
}

static void fmt_targets(const ReportGroup *g, Cell *cl) {
    if (report_is_full(g->method) && !*g->targets) {
        snprintf(cl->text, sizeof cl->text, "all");
        return;
    }
    report_short_targets(g->targets, cl->text, sizeof cl->text);
    report_abbrev_targets(g->targets, cl->tex, sizeof cl->tex);
}

static void fmt_r(const ReportGroup *g, char *out, size_t cap) {
    if (report_is_full(g->method) || g->r <= 0) snprintf(out, cap, "-");
    else snprintf(out, cap, "%d", g->r);
}

static void fmt_alpha(const ReportGroup *g, char *out, size_t cap) {
    if (report_is_full(g->method) || !isfinite(g->alpha) || g->alpha <= 0) snprintf(out, cap, "-");
    else snprintf(out, cap, "%g", g->alpha);
}

static void fmt_pct(const ReportGroup *g, char *out, size_t cap) {
    if (isfinite(g->trainable_pct.mean)) snprintf(out, cap, "%.3g%%", g->trainable_pct.mean);
    else snprintf(out, cap, "-");
}

/* The letters of the abbreviated targets that the table uses, explained. */
static void targets_legend(const Table *t, int col, char *out, size_t cap) {
    static const char *const mods[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    static const char letters[] = "QKVOGUD";
    int used[7] = {0};
    for (int i = 0; i < t->nrow; i++)
        for (const char *p = ccell(t, i, col)->tex; *p; p++)
            for (int m = 0; m < 7; m++) used[m] |= *p == letters[m];
    size_t o = 0;
    out[0] = '\0';
    for (int m = 0; m < 7; m++)
        if (used[m] && o < cap)
            o += (size_t)snprintf(out + o, cap - o, "%s%c = %s", o ? ", " : " Targets: ", letters[m], mods[m]);
    if (o && o < cap) snprintf(out + o, cap - o, ".");
}

static void unit_label(const RpCtx *c, const char *suffix, char *out, size_t cap) {
    char stem[80];
    size_t o = 0;
    for (const char *p = c->stem; *p && o + 1 < sizeof stem; p++) {
        char ch = *p;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                 ch == '-';
        stem[o++] = ok ? ch : '-';
    }
    stem[o] = '\0';
    snprintf(out, cap, "tab:%s%s", o ? stem : "loralab", suffix);
}

/* A table of task labels (multi-task units) or NULL, for rp_bold_rule's groups. */
static const char *const *bold_groups_tasks(const RpCtx *c, const int *gi, int n, const char **buf) {
    if (!c->multi_task) return NULL;
    for (int i = 0; i < n; i++) buf[i] = c->group_task[gi[i]];
    return buf;
}

/* ---- the configurations table ---------------------------------------------------------------- */

static void build_configs(const RpCtx *c, Table *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->file, sizeof t->file, "%s", c->select_valid ? "configs" : "table");
    unit_label(c, c->select_valid ? "-configs" : "", t->label, sizeof t->label);
    int c_task = c->multi_task ? add_col(t, "task", 0, 1) : -1;
    int c_method = add_col(t, "method", 0, 1), c_targets = add_col(t, "targets", 0, 1);
    t->keep[c_method] = 1;
    int c_r = add_col(t, "r", 1, 1), c_alpha = add_col(t, "α", 1, 1), c_lr = add_col(t, "lr", 1, 1);
    int c_var = c->has_variant ? add_col(t, "variant", 0, 1) : -1;
    int c_params = add_col(t, "trainable params", 1, 0), c_pct = add_col(t, "% of total", 1, 0);
    char head[64];
    snprintf(head, sizeof head, "%s ± 95%% CI", report_metric_label(c->metric));
    int c_metric = add_col(t, head, 1, 1), c_n = add_col(t, "n", 1, 1);
    snprintf(t->tex_head[c_metric], sizeof t->tex_head[c_metric], "%s", report_metric_label(c->metric));
    t->keep[c_metric] = 1;
    int c_time = add_col(t, "time / run", 1, 0), c_mem = add_col(t, "peak memory", 1, 0);
    t->nrow = c->ng;
    t->cells = ll_calloc((size_t)(c->ng ? c->ng : 1) * MAX_COL, sizeof *t->cells);
    const StatsSummary **st = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *st);
    const char **tasks = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *tasks);
    int *gi = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *gi), *bold = ll_malloc((size_t)(c->ng ? c->ng : 1),
                                                                                       sizeof *bold);
    for (int i = 0; i < c->ng; i++) {
        const ReportGroup *g = &c->g[i];
        st[i] = &g->val;
        gi[i] = i;
        if (c_task >= 0) set(t, i, c_task, "%s", c->group_task[i][0] ? c->group_task[i] : "-");
        set(t, i, c_method, "%s", rp_method_label(g->method));
        fmt_targets(g, cell(t, i, c_targets));
        fmt_r(g, cell(t, i, c_r)->text, sizeof cell(t, i, c_r)->text);
        fmt_alpha(g, cell(t, i, c_alpha)->text, sizeof cell(t, i, c_alpha)->text);
        set(t, i, c_lr, "%g", g->lr);
        set(t, i, c_var, "%s", *g->variant ? g->variant : "-");
        rp_fmt_count(cell(t, i, c_params)->text, sizeof cell(t, i, c_params)->text, g->trainable.mean);
        fmt_pct(g, cell(t, i, c_pct)->text, sizeof cell(t, i, c_pct)->text);
        if (g->val.n == 0 && g->n_diverged) set(t, i, c_metric, "diverged");
        else fmt_ci(cell(t, i, c_metric)->text, sizeof cell(t, i, c_metric)->text, &g->val);
        if (g->n_diverged) set(t, i, c_n, "%d (+%d diverged)", g->val.n, g->n_diverged);
        else set(t, i, c_n, "%d", g->val.n);
        rp_fmt_time(cell(t, i, c_time)->text, sizeof cell(t, i, c_time)->text, g->wall_s.mean);
        rp_fmt_mem(cell(t, i, c_mem)->text, sizeof cell(t, i, c_mem)->text, g->peak_mem.mean);
    }
    rp_bold_rule(st, bold_groups_tasks(c, gi, c->ng, tasks), c->ng, c->hb, bold);
    for (int i = 0; i < c->ng; i++) cell(t, i, c_metric)->bold = bold[i];
    free(st);
    free(tasks);
    free(gi);
    free(bold);
    size_t o = (size_t)snprintf(
        t->caption, sizeof t->caption,
        "%s%s on the validation split (%s is better) of every configuration; %s. Mean ± 95%% confidence interval "
        "(Student t over the n seeds; no interval for n = 1). Bold: the best row%s, only where its interval does not "
        "overlap the next best's. Time and peak memory are means per run.",
        c->select_valid ? "Every configuration: " : "",
        report_metric_label(c->metric), c->hb ? "higher" : "lower", c->where,
        c->multi_task ? " of each task" : "");
    if (c->has_variant && o < sizeof t->caption)
        snprintf(t->caption + o, sizeof t->caption - o,
                 " Variant: the config values that set a row apart from rows with the same method, targets, r, α and "
                 "lr.");
    targets_legend(t, c_targets, t->tex_extra, sizeof t->tex_extra);
}

/* ---- the selection table --------------------------------------------------------------------- */

/* Whether a field varies among the groups of some one method (it was searched). */
static int field_searched(const RpCtx *c, int field) {
    for (int i = 0; i < c->ng; i++)
        for (int j = i + 1; j < c->ng; j++) {
            const ReportGroup *a = &c->g[i], *b = &c->g[j];
            if (strcmp(a->method, b->method) != 0) continue;
            if (field == 0 && a->r != b->r) return 1;
            if (field == 1 && a->alpha != b->alpha) return 1;
            if (field == 2 && strcmp(a->targets, b->targets) != 0) return 1;
        }
    return 0;
}

static void build_selection(const RpCtx *c, const RpSel *s, int ns, Table *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->file, sizeof t->file, "table");
    unit_label(c, "", t->label, sizeof t->label);
    const char *key = c->opt->group_by;
    char head[96];
    int c_key = -1;
    if (key) {
        const char *dot = strrchr(key, '.');
        c_key = add_col(t, strcmp(key, "task.data") == 0 ? "task" : dot ? dot + 1 : key, 0, 1);
    }
    int c_task = c->multi_task && !(key && strcmp(key, "task.data") == 0) ? add_col(t, "task", 0, 1) : -1;
    int c_method = add_col(t, "method", 0, 1), c_lr = add_col(t, "lr", 1, 1);
    t->keep[c_method] = t->keep[c_lr] = 1; /* the chosen lr is the point of the table */
    int c_r = field_searched(c, 0) ? add_col(t, "r", 1, 1) : -1;
    int c_alpha = field_searched(c, 1) ? add_col(t, "α", 1, 1) : -1;
    int c_targets = field_searched(c, 2) ? add_col(t, "targets", 0, 1) : -1;
    int any_searched = 0;
    for (int i = 0; i < ns; i++) any_searched |= s[i].searched[0] != '\0';
    int c_other = any_searched ? add_col(t, "other chosen values", 0, 1) : -1;
    snprintf(head, sizeof head, "%s %s ± 95%% CI", c->has_test ? "test" : "valid.", report_metric_label(c->metric));
    int c_metric = add_col(t, head, 1, 1), c_n = add_col(t, "n", 1, 1);
    snprintf(t->tex_head[c_metric], sizeof t->tex_head[c_metric], "%s %s", c->has_test ? "test" : "valid.",
             report_metric_label(c->metric));
    t->keep[c_metric] = 1;
    if (c_key >= 0) t->keep[c_key] = 1;
    snprintf(head, sizeof head, "valid. %s", report_metric_label(c->metric));
    int c_val = c->has_test ? add_col(t, head, 1, 1) : -1;
    if (c_val >= 0) snprintf(t->tex_head[c_val], sizeof t->tex_head[c_val], "valid.");
    int c_cand = add_col(t, "configs", 1, 0);
    int c_pct = add_col(t, "% of total", 1, 0), c_params = add_col(t, "trainable params", 1, 0);
    int c_time = add_col(t, "time / run", 1, 0), c_mem = add_col(t, "peak memory", 1, 0);
    t->nrow = ns;
    t->cells = ll_calloc((size_t)(ns ? ns : 1) * MAX_COL, sizeof *t->cells);
    for (int i = 0; i < ns; i++) {
        const ReportGroup *g = &c->g[s[i].chosen];
        set(t, i, c_key, "%s", s[i].value);
        if (c_task >= 0) set(t, i, c_task, "%s", c->group_task[s[i].chosen][0] ? c->group_task[s[i].chosen] : "-");
        set(t, i, c_method, "%s", rp_method_label(g->method));
        set(t, i, c_lr, "%g%s", g->lr, s[i].lr_edge ? (s[i].lr_edge < 0 ? " (min)" : " (max)") : "");
        if (c_r >= 0) fmt_r(g, cell(t, i, c_r)->text, sizeof cell(t, i, c_r)->text);
        if (c_alpha >= 0) fmt_alpha(g, cell(t, i, c_alpha)->text, sizeof cell(t, i, c_alpha)->text);
        if (c_targets >= 0) fmt_targets(g, cell(t, i, c_targets));
        set(t, i, c_other, "%s", s[i].searched[0] ? s[i].searched : "-");
        const StatsSummary *m = c->has_test ? &g->test : &g->val;
        fmt_ci(cell(t, i, c_metric)->text, sizeof cell(t, i, c_metric)->text, m);
        cell(t, i, c_metric)->bold = s[i].bold;
        if (g->n_diverged) set(t, i, c_n, "%d (+%d diverged)", m->n, g->n_diverged);
        else set(t, i, c_n, "%d", m->n);
        if (c_val >= 0) set(t, i, c_val, "%.4f", g->val.mean);
        set(t, i, c_cand, "%d", s[i].n_candidates);
        fmt_pct(g, cell(t, i, c_pct)->text, sizeof cell(t, i, c_pct)->text);
        rp_fmt_count(cell(t, i, c_params)->text, sizeof cell(t, i, c_params)->text, g->trainable.mean);
        rp_fmt_time(cell(t, i, c_time)->text, sizeof cell(t, i, c_time)->text, g->wall_s.mean);
        rp_fmt_mem(cell(t, i, c_mem)->text, sizeof cell(t, i, c_mem)->text, g->peak_mem.mean);
    }
    char per[160] = "";
    if (key) snprintf(per, sizeof per, ", for each value of %s", key);
    size_t o = (size_t)snprintf(
        t->caption, sizeof t->caption,
        "%s %s (%s is better) of each method's configuration with the best mean validation %s over its seeds%s; %s. "
        "Mean ± 95%% confidence interval (Student t over the n seeds; no interval for n = 1). The row holds the chosen "
        "lr (min/max: at the edge of the method's grid) and every other value that was searched%s. Bold: the best "
        "method%s, only where its interval does not overlap the next best's.",
        c->has_test ? "Test" : "Validation", report_metric_label(c->metric), c->hb ? "higher" : "lower",
        report_metric_label(c->metric), per, c->where,
        c->has_test ? "; valid. is the validation mean the choice was made on, among configs configurations" : "",
        key ? " of each value" : "");
    if (!c->has_test && o < sizeof t->caption)
        snprintf(t->caption + o, sizeof t->caption - o,
                 " These runs have no test values: the numbers are the validation values the choice was made on, an "
                 "optimistic estimate.");
    if (c_targets >= 0) targets_legend(t, c_targets, t->tex_extra, sizeof t->tex_extra);
}

/* ---- writers ---------------------------------------------------------------------------------- */

/* Which columns the LaTeX table shows: every one when wide; else the compact ones, less those that
 * hold one value in every row (of two rows or more), which the caption states once instead. */
static void tex_columns(const RpCtx *c, const Table *t, int *show, TextBuf *same) {
    for (int j = 0; j < t->ncol; j++) {
        show[j] = c->opt->wide || t->compact[j];
        if (!show[j] || c->opt->wide || t->keep[j] || t->nrow < 2) continue;
        int constant = 1;
        for (int i = 1; i < t->nrow && constant; i++)
            constant = strcmp(ccell(t, i, j)->text, ccell(t, 0, j)->text) == 0 &&
                       strcmp(ccell(t, i, j)->tex, ccell(t, 0, j)->tex) == 0;
        if (!constant) continue;
        show[j] = 0;
        tb_printf(same, "%s%s = ", same->len ? "; " : " All rows: ", t->tex_head[j][0] ? t->tex_head[j] : t->head[j]);
        tb_puts(same, ccell(t, 0, j)->tex[0] ? ccell(t, 0, j)->tex : ccell(t, 0, j)->text);
    }
    if (same->len) tb_puts(same, ".");
}

static void write_md(const RpCtx *c, const Table *t, TextBuf *md) {
    tb_puts(md, "<!-- generated by `loralab report` from ");
    md_text(md, c->db);
    tb_puts(md, " (");
    md_text(md, c->where);
    tb_puts(md, ") -->\n\n|");
    for (int j = 0; j < t->ncol; j++) {
        tb_puts(md, " ");
        md_text(md, t->head[j]);
        tb_puts(md, " |");
    }
    tb_puts(md, "\n|");
    for (int j = 0; j < t->ncol; j++) tb_puts(md, t->right[j] ? " ---: |" : " :--- |");
    tb_puts(md, "\n");
    for (int i = 0; i < t->nrow; i++) {
        tb_puts(md, "|");
        for (int j = 0; j < t->ncol; j++) {
            const Cell *cl = ccell(t, i, j);
            tb_puts(md, cl->bold ? " **" : " ");
            md_text(md, cl->text);
            tb_puts(md, cl->bold ? "** |" : " |");
        }
        tb_puts(md, "\n");
    }
    tb_puts(md, "\n");
    md_text(md, t->caption);
    tb_puts(md, "\n");
}

static void write_tex(const RpCtx *c, const Table *t, TextBuf *tex) {
    tb_puts(tex, "% generated by `loralab report` (");
    tex_text(tex, c->where);
    tb_printf(tex, "); needs \\usepackage{booktabs}; %s columns (`loralab report --wide` for all)\n",
              c->opt->wide ? "all" : "compact");
    /* Compact tables at \\footnotesize (8 pt in a 10 pt paper) fit a column of two; wide ones \\small. */
    tb_printf(tex, "\\begin{table}[t]\n\\centering\n%s\n\\setlength{\\tabcolsep}{%s}\n\\caption{",
              c->opt->wide ? "\\small" : "\\footnotesize", c->opt->wide ? "4pt" : "3pt");
    int show[MAX_COL];
    TextBuf same = {0};
    tex_columns(c, t, show, &same);
    tex_text(tex, t->caption);
    if (same.p) tex_text(tex, same.p);
    tb_free(&same);
    tex_text(tex, t->tex_extra);
    tb_puts(tex, "}\n\\label{");
    tb_puts(tex, t->label); /* [A-Za-z0-9.:-] by construction */
    tb_puts(tex, "}\n\\begin{tabular}{");
    for (int j = 0; j < t->ncol; j++)
        if (show[j]) tb_puts(tex, t->right[j] ? "r" : "l");
    tb_puts(tex, "}\n\\toprule\n");
    int first = 1;
    for (int j = 0; j < t->ncol; j++) {
        if (!show[j]) continue;
        if (!first) tb_puts(tex, " & ");
        first = 0;
        if (strcmp(t->head[j], "r") == 0) tb_puts(tex, "$r$");
        else tex_text(tex, t->tex_head[j][0] ? t->tex_head[j] : t->head[j]);
    }
    tb_puts(tex, " \\\\\n\\midrule\n");
    for (int i = 0; i < t->nrow; i++) {
        first = 1;
        for (int j = 0; j < t->ncol; j++) {
            if (!show[j]) continue;
            const Cell *cl = ccell(t, i, j);
            if (!first) tb_puts(tex, " & ");
            first = 0;
            if (cl->bold) tb_puts(tex, "\\textbf{");
            tex_text(tex, cl->tex[0] ? cl->tex : cl->text);
            if (cl->bold) tb_puts(tex, "}");
        }
        tb_puts(tex, " \\\\\n");
    }
    tb_puts(tex, "\\bottomrule\n\\end{tabular}\n\\end{table}\n");
}

static void write_html_table(const Table *t, TextBuf *h) {
    tb_puts(h, "<p>");
    html_text(h, t->caption);
    tb_printf(h, " Also as <a href=\"%s.md\">Markdown</a> and <a href=\"%s.tex\">LaTeX</a>.</p>\n<table>\n<tr>",
              t->file, t->file);
    for (int j = 0; j < t->ncol; j++) {
        tb_printf(h, "<th%s>", t->right[j] ? " class=\"num\"" : "");
        html_text(h, t->head[j]);
        tb_puts(h, "</th>");
    }
    tb_puts(h, "</tr>\n");
    for (int i = 0; i < t->nrow; i++) {
        tb_puts(h, "<tr>");
        for (int j = 0; j < t->ncol; j++) {
            const Cell *cl = ccell(t, i, j);
            tb_printf(h, "<td%s>%s", t->right[j] ? " class=\"num\"" : "", cl->bold ? "<b>" : "");
            html_text(h, cl->text);
            tb_printf(h, "%s</td>", cl->bold ? "</b>" : "");
        }
        tb_puts(h, "</tr>\n");
    }
    tb_puts(h, "</table>\n");
}

LLStatus rp_write_tables(RpCtx *c, const RpSel *s, int ns, RpTables **out, LLError *err) {
    RpTables *tb = ll_calloc(1, sizeof *tb);
    if (c->select_valid) build_selection(c, s, ns, &tb->t[tb->n++]);
    build_configs(c, &tb->t[tb->n++]);
    LLStatus st = LL_OK;
    for (int k = 0; k < tb->n && !st; k++) {
        TextBuf md = {0}, tex = {0};
        write_md(c, &tb->t[k], &md);
        write_tex(c, &tb->t[k], &tex);
        char name[32];
        snprintf(name, sizeof name, "%s.md", tb->t[k].file);
        st = tb_save(&md, c->dir, name, err);
        snprintf(name, sizeof name, "%s.tex", tb->t[k].file);
        if (!st) st = tb_save(&tex, c->dir, name, err);
        tb_free(&md);
        tb_free(&tex);
    }
    if (!c->select_valid) {
        /* No selection now: a configs.* of an earlier report would pass for this one's. */
        char path[2048];
        snprintf(path, sizeof path, "%s/configs.md", c->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/configs.tex", c->dir);
        unlink(path);
    }
    *out = tb;
    return st;
}

void rp_free_tables(RpTables *t) {
    if (!t) return;
    for (int k = 0; k < t->n; k++) free(t->t[k].cells);
    free(t);
}

/* ---- index.html ------------------------------------------------------------------------------ */

static void html_head(TextBuf *h, const char *title) {
    tb_puts(h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>loralab report: ");
    html_text(h, title);
    tb_puts(h, "</title>\n<style>\n"
               "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\n"
               "figure{margin:1.5em 0;border-top:1px solid #ddd;padding-top:1em}\n"
               "figure img{max-width:100%;height:auto;display:block}\n"
               "figcaption{font-size:0.9em;color:#444}\n"
               "table{border-collapse:collapse;font-size:0.9em}\n"
               "th,td{padding:3px 8px;border-bottom:1px solid #ddd}\n"
               "th{border-bottom:2px solid #444;text-align:left}\n"
               "td.num,th.num{text-align:right}\n"
               ".left{color:#8a4b00}\n"
               "</style>\n</head>\n<body>\n<h1>loralab report: ");
    html_text(h, title);
    tb_puts(h, "</h1>\n");
}

LLStatus rp_write_index(RpCtx *c, const RpTables *t, LLError *err) {
    const ReportSummary *s = c->sum;
    TextBuf h = {0};
    html_head(&h, c->where);
    tb_puts(&h, "<p>Database <code>");
    html_text(&h, c->db);
    tb_printf(&h, "</code>: %d run%s (%d done, %d diverged, %d other), %d configuration%s. Metric: %s (%s is better)%s.</p>\n",
              s->n_rows, s->n_rows == 1 ? "" : "s", s->n_done, s->n_diverged, s->n_other, s->n_groups,
              s->n_groups == 1 ? "" : "s", report_metric_label(c->metric), c->hb ? "higher" : "lower",
              c->select_valid ? (c->has_test ? "; each method's configuration chosen on validation, reported on test"
                                             : "; each method's configuration chosen on validation (no test values)")
                              : "");
    if (s->gnuplot_missing)
        tb_puts(&h, "<p class=\"left\">gnuplot was not found, so no figure was rendered: install it "
                    "(<code>scripts/deps.sh</code>), then run <code>gnuplot NAME.gp</code> in this folder for "
                    "each script.</p>\n");
    if (s->unsandboxed[0]) {
        tb_puts(&h, "<p class=\"left\">Note: gnuplot ran without its process sandbox (");
        html_text(&h, s->unsandboxed);
        tb_puts(&h, "); the scripts' strings are escaped all the same.</p>\n");
    }
    if (s->notes[0]) {
        tb_puts(&h, "<ul class=\"notes\">\n");
        for (const char *p = s->notes; *p;) {
            const char *e = strchr(p, '\n');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char line[600];
            snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), p);
            tb_puts(&h, "<li class=\"left\">");
            html_text(&h, line);
            tb_puts(&h, "</li>\n");
            p += n + (e != NULL);
        }
        tb_puts(&h, "</ul>\n");
    }
    tb_puts(&h, "<h2>Tables</h2>\n");
    for (int k = 0; k < t->n; k++) write_html_table(&t->t[k], &h);
    tb_puts(&h, "<h2>Figures</h2>\n");
    int n_left = 0;
    for (int i = 0; i < s->n_figs; i++) {
        const ReportFigure *f = &s->figs[i];
        if (f->skipped) {
            n_left++;
            continue;
        }
        tb_printf(&h, "<figure id=\"%s\">\n", f->name);
        if (f->rendered) {
            tb_printf(&h, "<img src=\"%s.png\" alt=\"", f->name);
            html_text(&h, f->title);
            tb_puts(&h, "\">\n");
        } else {
            tb_printf(&h, "<p class=\"left\">%s: not rendered (%s).</p>\n", f->name,
                      s->gnuplot_missing ? "gnuplot not found; install it with scripts/deps.sh" : "gnuplot failed");
        }
        tb_puts(&h, "<figcaption><b>");
        html_text(&h, f->title);
        tb_puts(&h, "</b>");
        if (f->note[0]) {
            tb_puts(&h, ". ");
            html_text(&h, f->note);
        }
        tb_puts(&h, ".<br>");
        if (f->rendered)
            tb_printf(&h, "<a href=\"%s.pdf\">PDF</a> · <a href=\"%s.svg\">SVG</a> · <a href=\"%s.png\">PNG</a> · ",
                      f->name, f->name, f->name);
        tb_printf(&h, "<a href=\"%s.gp\">%s.gp</a> · <a href=\"%s.dat\">%s.dat</a></figcaption>\n</figure>\n",
                  f->name, f->name, f->name, f->name);
    }
    if (n_left) {
        tb_puts(&h, "<h3>Figures left out</h3>\n<ul>\n");
        for (int i = 0; i < s->n_figs; i++) {
            const ReportFigure *f = &s->figs[i];
            if (!f->skipped) continue;
            tb_printf(&h, "<li class=\"left\" id=\"left-%s\"><b>%s</b> (", f->name, f->name);
            html_text(&h, f->title);
            tb_puts(&h, ") left out: ");
            html_text(&h, f->note);
            tb_puts(&h, "</li>\n");
        }
        tb_puts(&h, "</ul>\n");
    }
    /* Reports, in the page and its title, how many figures actually loaded: a headless browser
     * (the report's test) reads it with --dump-dom. */
    tb_puts(&h, "<p id=\"img-status\">images: not checked (scripts disabled)</p>\n"
                "<script>\n"
                "function llCheckImages() {\n"
                "  var im = document.images, ok = 0;\n"
                "  for (var i = 0; i < im.length; i++) if (im[i].complete && im[i].naturalWidth > 0) ok++;\n"
                "  var s = 'loaded ' + ok + '/' + im.length;\n"
                "  document.title = s;\n"
                "  document.getElementById('img-status').textContent = 'images: ' + s;\n"
                "}\n"
                "window.addEventListener('load', llCheckImages);\n"
                "</script>\n</body>\n</html>\n");
    LLStatus st = tb_save(&h, c->dir, "index.html", err);
    tb_free(&h);
    return st;
}

LLStatus report_write_root_index(const char *root, const char *db, const ReportUnit *u,
                                 const ReportSummary *const *sums, int n, LLError *err) {
    TextBuf h = {0};
    html_head(&h, db);
    tb_puts(&h, "<p>One report per unit (a sweep and its task; see <code>loralab report --help</code>):</p>\n<ul>\n");
    for (int i = 0; i < n; i++) {
        tb_puts(&h, "<li>");
        if (sums[i]) {
            tb_printf(&h, "<a href=\"%s/index.html\">", u[i].name); /* [A-Za-z0-9._-] */
            html_text(&h, u[i].title);
            tb_printf(&h, "</a>: %d run%s, %d done, %d configuration%s", sums[i]->n_rows, sums[i]->n_rows == 1 ? "" : "s",
                      sums[i]->n_done, sums[i]->n_groups, sums[i]->n_groups == 1 ? "" : "s");
        } else {
            html_text(&h, u[i].title);
            tb_printf(&h, ": %d run%s, none finished: no report", u[i].n_runs, u[i].n_runs == 1 ? "" : "s");
        }
        tb_puts(&h, "</li>\n");
    }
    tb_puts(&h, "</ul>\n</body>\n</html>\n");
    LLStatus st = tb_save(&h, root, "index.html", err);
    tb_free(&h);
    return st;
}
