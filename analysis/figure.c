/* figure: what every figure of the report shares: its entry in the summary (name, title, notes, or
 * the reason it was left out), the script prologue at the chosen size, the series styles, labels,
 * and rendering.
 *
 * Invariants
 *   - Styles: rp_series_style(i) for i < REPORT_MAX_SERIES are pairwise distinct as (colour, dash,
 *     point) and as (dash, point) alone, so a greyscale print still tells them apart; the colours
 *     are the Okabe-Ito palette (Okabe & Ito 2008; Wong 2011, Nature Methods 8:441) without its
 *     yellow (faint on white) and its black, which is full fine-tuning's alone (rp_full_style).
 *     A method keeps its style in every figure of a unit (its order among the unit's methods).
 *   - Sizes: column figures are 3.3 in wide with 8 pt fonts, page figures 6.8 in with 9 pt, in the
 *     PDF at print size; heights grow with the legend so the key never covers the plot.
 *   - Every script starts with `reset` and ends with `unset output`, and each rendering iteration
 *     starts with `reset` (gnuplot.h), so the three formats are drawn from identical state; a
 *     script reads and writes only files of its own stem (the database path appears in a
 *     provenance comment only).
 *   - Heatmaps use a viridis-like palette defined by hand (gnuplot 5.4 has no `set palette
 *     viridis`), monotone in lightness.
 *   - A figure left out has its files of an earlier report removed, so the folder never shows a
 *     figure the index says is absent; titles and notes hold no control character (they are
 *     printed to a terminal too).
 *   - gnuplot is run only by rp_render_all, after the Store is closed: no SQLite connection
 *     crosses fork().
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- series styles --------------------------------------------------------------------------- */

static const char *const SERIES_COLOURS[6] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"};
/* (dash, point) per series: the colours cycle with period 6, the dashes (1-5: solid, dashed,
 * dotted, dash-dot, dash-dot-dot) with period 5, and the points (filled circle, square, triangle,
 * inverted triangle, diamond, pentagon, then their open forms, then +, x, *) never repeat but once,
 * with another dash. */
static const int SERIES_DT[REPORT_MAX_SERIES] = {1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 3};
static const int SERIES_PT[REPORT_MAX_SERIES] = {7, 5, 9, 11, 13, 15, 6, 4, 8, 10, 12, 14, 1, 2, 3, 7};

RpStyle rp_series_style(int i) {
    if (i < 0) i = 0;
    i %= REPORT_MAX_SERIES;
    return (RpStyle){SERIES_COLOURS[i % 6], SERIES_DT[i], SERIES_PT[i]};
}

RpStyle rp_full_style(void) { return (RpStyle){"#000000", 2, 3}; }

RpStyle rp_method_style(const RpCtx *c, const char *method) {
    if (report_is_full(method)) return rp_full_style();
    int k = 0;
    for (int i = 0; i < c->n_methods; i++) {
        if (strcmp(c->methods[i], method) == 0) return rp_series_style(k);
        if (!report_is_full(c->methods[i])) k++;
    }
    return rp_series_style(0);
}

void rp_put_style(TextBuf *b, RpStyle s) { tb_printf(b, " lc rgb '%s' dt %d pt %d", s.lc, s.dt, s.pt); }

void rp_plot_method(const RpCtx *c, TextBuf *gp, int *first, const char *stem, int block, const char *with,
                    const char *method) {
    tb_printf(gp, "%s'%s.dat' index %d using 1:2:3 with %s", *first ? "" : ", \\\n         ", stem, block, with);
    rp_put_style(gp, rp_method_style(c, method));
    tb_puts(gp, " title ");
    gp_quote(gp, rp_method_label(method));
    *first = 0;
}

/* ---- sizes ----------------------------------------------------------------------------------- */

static int want_column(const RpCtx *c) { return c->opt->size != REPORT_SIZE_PAGE; }

/* Inches per legend row at a font size (the key's spacing 1.1 over the font's line). */
static double key_row_in(int font) { return font * 1.25 / 72.0; }

RpSize rp_size_single(const RpCtx *c, int n_key) {
    RpSize s;
    if (want_column(c)) {
        s.column = 1;
        s.font = 8;
        s.w = 3.3;
        s.key_rows = n_key <= 3 ? n_key : (n_key + 1) / 2; /* one column, or two below the plot */
        s.h = 2.45 + s.key_rows * key_row_in(s.font);
    } else {
        s.column = 0;
        s.key_rows = n_key;
        s.font = 9;
        s.w = 6.8;
        s.h = 3.3;
        double need = 0.9 + n_key * key_row_in(s.font);
        if (need > s.h) s.h = need;
    }
    return s;
}

RpSize rp_size_heatmap(const RpCtx *c) {
    if (want_column(c)) return (RpSize){3.3, 2.7, 8, 1, 0};
    return (RpSize){6.8, 4.0, 9, 0, 0};
}

void rp_put_key(TextBuf *gp, RpSize sz) {
    if (sz.column)
        tb_printf(gp, "    set key outside bottom center vertical maxrows %d Left reverse samplen 2 spacing 1.1 "
                      "width 1\n", sz.key_rows > 0 ? sz.key_rows : 1);
    else
        tb_puts(gp, "    set key outside right top vertical Left reverse box lc rgb '#bbbbbb' samplen 2.5 "
                    "spacing 1.15\n");
}

/* ---- labels ---------------------------------------------------------------------------------- */

void report_short_targets(const char *targets, char *out, size_t cap) {
    if (!targets || !*targets) {
        snprintf(out, cap, "-");
        return;
    }
    size_t o = 0;
    for (const char *p = targets; *p && o + 1 < cap; p++) {
        if (strncmp(p, "_proj", 5) == 0 && (p[5] == ',' || p[5] == '\0')) {
            p += 4;
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

void report_abbrev_targets(const char *targets, char *out, size_t cap) {
    static const char *const mods[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    static const char letters[] = "QKVOGUD";
    char buf[256];
    size_t o = 0;
    int known = targets && *targets;
    for (const char *p = targets ? targets : ""; *p && known;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int m = 0;
        while (m < 7 && !(strlen(mods[m]) == n && strncmp(p, mods[m], n) == 0)) m++;
        if (m == 7 || o + 1 >= sizeof buf) known = 0;
        else buf[o++] = letters[m];
        p += n + (e != NULL);
    }
    if (!known) {
        report_short_targets(targets, out, cap);
        return;
    }
    buf[o] = '\0';
    snprintf(out, cap, "%s", buf);
}

/* A method as people write it. */
const char *rp_method_label(const char *m) {
    static const char *const names[][2] = {{"full", "full FT"}, {"lora", "LoRA"},     {"adalora", "AdaLoRA"},
                                           {"vera", "VeRA"},    {"dora", "DoRA"},     {"rslora", "rsLoRA"},
                                           {"pissa", "PiSSA"},  {"loraplus", "LoRA+"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(m, names[i][0]) == 0) return names[i][1];
    return m;
}

void rp_fmt_count(char *out, size_t cap, double v) {
    if (!isfinite(v)) {
        snprintf(out, cap, "-");
        return;
    }
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t nd = strlen(digits), o = 0;
    for (size_t i = 0; i < nd && o + 2 < cap; i++) {
        if (i > 0 && (nd - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

void rp_fmt_time(char *out, size_t cap, double s) {
    if (!isfinite(s)) snprintf(out, cap, "-");
    else if (s < 120) snprintf(out, cap, "%.1f s", s);
    else if (s < 7200) snprintf(out, cap, "%.1f min", s / 60);
    else snprintf(out, cap, "%.2f h", s / 3600);
}

void rp_fmt_mem(char *out, size_t cap, double bytes) {
    double mib = bytes / (1024.0 * 1024.0);
    if (!isfinite(bytes)) snprintf(out, cap, "-");
    else if (mib < 1024) snprintf(out, cap, "%.1f MiB", mib);
    else snprintf(out, cap, "%.2f GiB", mib / 1024);
}

/* "LoRA q,v r=8 α=16 lr=0.001 (n=2)", with the variant before the count when there is one
 * ("... lr=0.001 dropout=0.1 (n=2)"); the method is left out inside a per-method figure; the
 * task leads when the unit holds several. */
void rp_group_label(const RpCtx *c, int gi, int with_method, char *out, size_t cap) {
    const ReportGroup *g = &c->g[gi];
    char t[128], v[160] = "", task[96] = "";
    report_short_targets(g->targets, t, sizeof t);
    if (g->variant && *g->variant) snprintf(v, sizeof v, " %s", g->variant);
    if (c->multi_task) snprintf(task, sizeof task, "%s: ", c->group_task[gi][0] ? c->group_task[gi] : "no task");
    const char *m = with_method ? rp_method_label(g->method) : "", *sp = with_method ? " " : "";
    if (report_is_full(g->method))
        snprintf(out, cap, "%s%s%slr=%g%s (n=%d)", task, m, sp, g->lr, v, g->n_runs);
    else if (g->alpha > 0)
        snprintf(out, cap, "%s%s%s%s r=%d α=%g lr=%g%s (n=%d)", task, m, sp, t, g->r, g->alpha, g->lr, v, g->n_runs);
    else /* no alpha (VeRA): the store records 0 */
        snprintf(out, cap, "%s%s%s%s r=%d lr=%g%s (n=%d)", task, m, sp, t, g->r, g->lr, v, g->n_runs);
}

double rp_gmetric(const RpCtx *c, int i) { return c->g[i].metric.mean; }

int rp_best_group(const RpCtx *c, const int *idx, int k) {
    int best = -1;
    for (int i = 0; i < k; i++) {
        double v = rp_gmetric(c, idx[i]);
        if (isfinite(v) && (best < 0 || rp_better(v, rp_gmetric(c, best), c->hb))) best = idx[i];
    }
    return best;
}

void rp_title(const RpCtx *c, char *out, size_t cap, const char *fmt, ...) {
    char body[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (c->tag[0]) snprintf(out, cap, "%s: %s", c->tag, body);
    else snprintf(out, cap, "%s", body);
    esc_clean(out);
}

void rp_summary_note(RpCtx *c, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    esc_clean(line);
    size_t len = strlen(c->sum->notes);
    snprintf(c->sum->notes + len, sizeof c->sum->notes - len, "%s\n", line);
}

/* ---- figures: bookkeeping, script prologue, rendering ---------------------------------------- */

ReportFigure *rp_fig_new(RpCtx *c, const char *name, const char *title) {
    LL_ASSERT(c->sum->n_figs < REPORT_MAX_FIGS);
    LL_ASSERT(gp_stem_ok(name) && strlen(name) < sizeof c->sum->figs[0].name);
    ReportFigure *f = &c->sum->figs[c->sum->n_figs++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->title, sizeof f->title, "%s", title);
    esc_clean(f->title);
    return f;
}

/* "PREFIX_VALUE" as a file stem for a figure named after a value from the database: the value
 * through esc_file_stem (at most 30 bytes of it), then "_2", "_3", ... until no figure of this
 * report has the name, compared without case (two methods "LoRA" and "lora" must not share a
 * file on a case-insensitive file system). */
void rp_fig_stem(const RpCtx *c, const char *prefix, const char *value, char *out, size_t cap) {
    char stem[31];
    esc_file_stem(stem, sizeof stem, value);
    for (int k = 1;; k++) {
        if (k == 1) snprintf(out, cap, "%s_%s", prefix, stem);
        else snprintf(out, cap, "%s_%s_%d", prefix, stem, k);
        int taken = 0;
        for (int i = 0; i < c->sum->n_figs && !taken; i++) taken = strcasecmp(c->sum->figs[i].name, out) == 0;
        if (!taken) return;
    }
}

void rp_fig_note(ReportFigure *f, const char *fmt, ...) {
    size_t len = strlen(f->note);
    if (len && len + 2 < sizeof f->note) {
        snprintf(f->note + len, sizeof f->note - len, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->note + len, sizeof f->note - len, fmt, ap);
    va_end(ap);
    esc_clean(f->note);
}

static const char *const FIG_EXT[] = {"gp", "dat", "pdf", "svg", "png"};

void rp_fig_skip(RpCtx *c, ReportFigure *f, const char *fmt, ...) {
    f->skipped = 1;
    f->note[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->note, sizeof f->note, fmt, ap);
    va_end(ap);
    esc_clean(f->note);
    for (size_t i = 0; i < sizeof FIG_EXT / sizeof FIG_EXT[0]; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s.%s", c->dir, f->name, FIG_EXT[i]);
        unlink(path);
    }
}

void rp_gp_begin(const RpCtx *c, TextBuf *b, const ReportFigure *f, RpSize sz) {
    gp_comment(b, "%s: %s", f->name, f->title);
    gp_comment(b, "Generated by `loralab report` from the results database %s (%s).", c->db, c->where);
    gp_comment(b, "Size: %s, %.1f x %.2f in, %d pt fonts at print size. Each series has its own colour, dash and "
                  "point type (lc, dt, pt).",
               sz.column ? "column" : "page", sz.w, sz.h, sz.font);
    gp_script_head(b, f->name);
    gp_formats_begin_font(b, f->name, sz.w, sz.h, sz.font);
    tb_puts(b, "    set grid lc rgb '#dddddd' lw 0.8\n    set tics out nomirror\n    set border 3\n");
}

void rp_dat_header(const RpCtx *c, TextBuf *d, const ReportFigure *f) {
    gp_comment(d, "%s.dat: data of %s.gp (%s)", f->name, f->name, f->title);
    gp_comment(d, "from %s, %s; metric: %s; blocks are separated by two blank lines (gnuplot `index`)", c->db, c->where,
               report_metric_label(c->metric));
}

void rp_dat_next_block(TextBuf *d) { tb_puts(d, "\n\n"); }

LLStatus rp_fig_finish(RpCtx *c, ReportFigure *f, TextBuf *gp, TextBuf *dat, LLError *err) {
    char name[128];
    snprintf(name, sizeof name, "%s.dat", f->name);
    LLStatus st = tb_save(dat, c->dir, name, err);
    snprintf(name, sizeof name, "%s.gp", f->name);
    if (!st) st = tb_save(gp, c->dir, name, err);
    tb_free(gp);
    tb_free(dat);
    return st;
}

/* A failure is noted on its figure and the first one kept for the caller; the other figures are
 * still rendered. */
void rp_render_all(RpCtx *c) {
    if (!c->gnuplot[0]) return;
    for (int i = 0; i < c->sum->n_figs; i++) {
        ReportFigure *f = &c->sum->figs[i];
        if (f->skipped) continue;
        LLError e = {0};
        GnuplotSandbox sb = {1, ""};
        LLStatus st = gnuplot_render(c->gnuplot, c->dir, f->name, FIG_EXT + 2, 3, &sb, &e);
        if (!sb.sandboxed && !c->sum->unsandboxed[0])
            snprintf(c->sum->unsandboxed, sizeof c->sum->unsandboxed, "%s", sb.why_not);
        if (st == LL_OK) {
            f->rendered = 1;
        } else {
            rp_fig_note(f, "NOT RENDERED: %s", e.msg);
            if (c->render_rc == LL_OK) {
                c->render_rc = e.code;
                c->render_err = e;
            }
        }
    }
}

/* viridis (van der Walt & Smith 2015) by its anchor colours: perceptually uniform and readable
 * by colour-blind viewers; gnuplot 5.4 lacks the named palette. */
void rp_gp_viridis(TextBuf *b) {
    tb_puts(b, "    set palette defined (0 '#440154', 0.25 '#3B528B', 0.5 '#21908C', 0.75 '#5DC863', "
               "1 '#FDE725')\n");
}

/* Text colour for a heatmap cell: black on the light end of viridis, white on the dark end. */
const char *rp_cell_text_colour(double v, double lo, double hi) {
    double t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    return t > 0.55 ? "0x000000" : "0xffffff";
}

/* ---- the full fine-tuning reference ---------------------------------------------------------- */

int rp_full_ref(const RpCtx *c) {
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx), k = 0;
    for (int i = 0; i < c->ng; i++)
        if (report_is_full(c->g[i].method)) idx[k++] = i;
    int b = rp_best_group(c, idx, k);
    free(idx);
    return b;
}

/* Its numbers as script variables (easy to restyle or correct by hand), repeated in the .dat. */
void rp_gp_full_vars(const RpCtx *c, int fr, TextBuf *gp, TextBuf *d) {
    if (fr < 0) return;
    const ReportStat *s = &c->g[fr].metric;
    double sd = s->n >= 2 ? s->sd : 0.0;
    tb_printf(gp, "    # full fine-tuning reference: mean and sd over %d seed%s (also in the .dat)\n"
                  "    full_mean = %.9g\n    full_sd = %.9g\n",
              s->n, s->n == 1 ? "" : "s", s->mean, sd);
    tb_printf(d, "# full fine-tuning reference (script variables full_mean, full_sd): mean %.9g sd %.9g n %d\n",
              s->mean, sd, s->n);
}

/* Plot terms of the reference over the current x range: a band of ±1 sd (with two seeds or more,
 * no title: it belongs to the line) and a dashed mean. Uses the pseudo-file '+', so the script
 * fixes the x range first. */
void rp_gp_full_terms(const RpCtx *c, int fr, TextBuf *gp, int *first) {
    if (fr < 0) return;
    const ReportStat *s = &c->g[fr].metric;
    if (s->n >= 2) {
        tb_printf(gp, "%s'+' using 1:(full_mean-full_sd):(full_mean+full_sd) with filledcurves "
                      "fs transparent solid 0.15 noborder lc rgb '#000000' notitle",
                  *first ? "" : ", \\\n         ");
        *first = 0;
    }
    /* Markers every 20 of the 100 samples of '+': the line keeps a point type like every series. */
    tb_printf(gp, "%s'+' using 1:(full_mean) with linespoints pointinterval 20 ps 0.6 lw 1.5",
              *first ? "" : ", \\\n         ");
    rp_put_style(gp, rp_full_style());
    tb_printf(gp, " title 'full FT%s (n=%d)'", s->n >= 2 ? " ±1 sd" : "", s->n);
    *first = 0;
}
