/* fig_curves: learning curves. `curves` holds the best configuration of each method (by the mean
 * validation value), `curves_METHOD` the best REPORT_MAX_CURVES configurations of one method;
 * each is a train-loss and an eval-loss panel against step, the mean over seeds with a shaded band
 * of ±1 sd where two seeds or more logged the step.
 *
 * Invariants
 *   - A series is a configuration: the same style (rp_method_style when series are methods,
 *     rp_series_style otherwise) in both panels, and one legend for both, drawn under them, so the
 *     key never hides a curve; a series absent from the last panel still gets its key entry.
 *   - Train curves are dense: a line with a marker every few points (pointinterval), so greyscale
 *     prints keep the series apart by marker and dash, not by colour alone.
 *   - Panels sit side by side at page width, stacked at column width; the figure's height grows
 *     with the legend.
 *   - Every .dat block exists for every series and panel (a placeholder row for an empty curve),
 *     so block numbers follow the series order; an empty block is never plotted.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Loss curves of one group, averaged over its seeds. */
static LLStatus group_curve(RpCtx *c, const ReportGroup *g, const char *split, ReportCurve *out, LLError *err) {
    int k = g->n_runs;
    int **steps = ll_calloc((size_t)(k ? k : 1), sizeof *steps);
    double **vals = ll_calloc((size_t)(k ? k : 1), sizeof *vals);
    int *lens = ll_calloc((size_t)(k ? k : 1), sizeof *lens);
    LLStatus st = LL_OK;
    for (int i = 0; i < k && !st; i++)
        st = store_get_metrics(c->store, g->run_ids[i], split, "loss", &steps[i], &vals[i], &lens[i], err);
    if (!st) report_curve(k, (const int *const *)steps, (const double *const *)vals, lens, out);
    for (int i = 0; i < k; i++) {
        free(steps[i]);
        free(vals[i]);
    }
    free(steps);
    free(vals);
    free(lens);
    return st;
}

/* Writes one block (step mean sd n); sd is 0 where fewer than two seeds logged the step so the
 * band collapses onto the line there. An empty curve still gets a placeholder row so that block
 * numbers stay aligned; the script never plots such a block. Returns 1 when any step has a band. */
static int dat_curve(TextBuf *d, const ReportCurve *cv, const char *label, const char *split) {
    int band = 0;
    gp_comment(d, "%s, %s loss: step mean sd n", label, split);
    int rows = 0;
    for (int i = 0; i < cv->len; i++) {
        if (!isfinite(cv->mean[i])) continue;
        double sd = cv->n[i] >= 2 ? cv->sd[i] : 0.0;
        band |= cv->n[i] >= 2;
        tb_printf(d, "%d %.9g %.9g %d\n", cv->steps[i], cv->mean[i], sd, cv->n[i]);
        rows++;
    }
    if (!rows) tb_puts(d, "0 NaN 0 0\n");
    rp_dat_next_block(d);
    return band;
}

static int curve_points(const ReportCurve *cv) {
    int n = 0;
    for (int i = 0; i < cv->len; i++) n += isfinite(cv->mean[i]);
    return n;
}

/* One or two panels (train loss, eval loss), a line per listed group. */
static LLStatus fig_curves(RpCtx *c, const char *name, const char *title, const int *gi, int k, int with_method,
                           LLError *err) {
    ReportFigure *f = rp_fig_new(c, name, title);
    TextBuf gp = {0}, d = {0};
    rp_dat_header(c, &d, f);
    int n_train = 0, n_eval = 0, any_band = 0;
    int *has_train = ll_calloc((size_t)k, sizeof *has_train), *has_eval = ll_calloc((size_t)k, sizeof *has_eval);
    int *band_train = ll_calloc((size_t)k, sizeof *band_train), *band_eval = ll_calloc((size_t)k, sizeof *band_eval);
    int *pts_train = ll_calloc((size_t)k, sizeof *pts_train);
    char **labels = ll_calloc((size_t)k, sizeof *labels);
    LLStatus st = LL_OK;
    for (int i = 0; i < k && !st; i++) {
        ReportCurve tr = {0}, ev = {0};
        char label[256];
        rp_group_label(c, gi[i], with_method, label, sizeof label);
        labels[i] = ll_strdup(label);
        st = group_curve(c, &c->g[gi[i]], "train", &tr, err);
        if (!st) st = group_curve(c, &c->g[gi[i]], "eval", &ev, err);
        if (!st) {
            pts_train[i] = curve_points(&tr);
            has_train[i] = pts_train[i] > 0;
            has_eval[i] = curve_points(&ev) > 0;
            n_train += has_train[i];
            n_eval += has_eval[i];
            band_train[i] = dat_curve(&d, &tr, label, "train");
            band_eval[i] = dat_curve(&d, &ev, label, "eval");
            any_band |= band_train[i] | band_eval[i];
        }
        report_free_curve(&tr);
        report_free_curve(&ev);
    }
    if (!st && n_train + n_eval == 0) {
        rp_fig_skip(c, f, "no loss curves were recorded for these runs");
        tb_free(&gp);
        tb_free(&d);
    } else if (!st) {
        int panels = (n_train > 0) + (n_eval > 0);
        /* Two panels default to the page's width; one panel, or --size column, to a column's. */
        int column = c->opt->size == REPORT_SIZE_COLUMN || (c->opt->size == REPORT_SIZE_AUTO && panels == 1);
        RpSize sz = {column ? 3.3 : 6.8, 0, column ? 8 : 9, column, 0};
        int grid_rows = column && panels == 2 ? 2 : 1, grid_cols = !column && panels == 2 ? 2 : 1;
        int key_cols = column ? 1 : 2, key_rows = (k + key_cols - 1) / key_cols;
        /* Margins in inches, turned into screen fractions once the height is known: the panels keep
         * their size and the figure grows with the legend under them. */
        double line = sz.font * 1.25 / 72.0, key_h = key_rows * line + 0.12;
        double panel_h = column ? 1.75 : 2.3, top_in = 0.55, bottom_in = 0.6, gap_in = 0.62;
        sz.h = top_in + grid_rows * panel_h + (grid_rows - 1) * gap_in + bottom_in + key_h;
        rp_gp_begin(c, &gp, f, sz);
        tb_printf(&gp, "    set multiplot layout %d,%d margins %.3f,%.3f,%.3f,%.3f spacing %.3f,%.3f title ", grid_rows,
                  grid_cols, 0.6 / sz.w, 1.0 - 0.15 / sz.w, (bottom_in + key_h) / sz.h, 1.0 - top_in / sz.h,
                  0.7 / sz.w, gap_in / sz.h);
        gp_quote(&gp, title);
        tb_puts(&gp, "\n");
        int last = n_eval > 0 ? 1 : 0;
        for (int p = 0; p < 2; p++) {
            const int *has = p == 0 ? has_train : has_eval, *band = p == 0 ? band_train : band_eval;
            if ((p == 0 ? n_train : n_eval) == 0) continue;
            const char *split = p == 0 ? "train" : "eval";
            tb_printf(&gp, "    set xlabel 'step'\n    set ylabel '%s loss'\n    set title '%s loss'\n", split, split);
            /* One key for both panels, drawn by the last one. */
            if (p != last) tb_puts(&gp, "    unset key\n");
            else
                tb_printf(&gp, "    set key at screen 0.5,%.3f center top vertical maxrows %d Left reverse "
                               "box lc rgb '#bbbbbb' samplen 2.5 spacing 1.1 width 1\n",
                          key_h / sz.h, key_rows);
            tb_puts(&gp, "    plot ");
            int first = 1;
            for (int i = 0; i < k; i++) {
                RpStyle style = with_method ? rp_method_style(c, c->g[gi[i]].method) : rp_series_style(i);
                int block = 2 * i + p;
                if (!has[i]) {
                    /* No data in this panel, but the key still lists the series. */
                    if (p == last && (has_train[i] || has_eval[i])) {
                        tb_printf(&gp, "%skeyentry with linespoints", first ? "" : ", \\\n         ");
                        rp_put_style(&gp, style);
                        tb_puts(&gp, " title ");
                        gp_quote(&gp, labels[i]);
                        first = 0;
                    }
                    continue;
                }
                if (band[i]) {
                    tb_printf(&gp, "%s'%s.dat' index %d using 1:($2-$3):($2+$3) with filledcurves "
                                   "fs transparent solid 0.2 noborder lc rgb '%s' notitle",
                              first ? "" : ", \\\n         ", name, block, style.lc);
                    first = 0;
                }
                /* Eval points are sparse: each one marked; train curves are dense: a marker about
                 * every sixth point. */
                if (p == 0) {
                    int pi = pts_train[i] / 6 > 1 ? pts_train[i] / 6 : 1;
                    tb_printf(&gp, "%s'%s.dat' index %d using 1:2 with linespoints pointinterval %d ps 0.55 lw 1.5",
                              first ? "" : ", \\\n         ", name, block, pi);
                } else {
                    tb_printf(&gp, "%s'%s.dat' index %d using 1:2 with linespoints ps 0.7 lw 1.5",
                              first ? "" : ", \\\n         ", name, block);
                }
                rp_put_style(&gp, style);
                tb_puts(&gp, " title ");
                gp_quote(&gp, labels[i]);
                first = 0;
            }
            tb_puts(&gp, "\n");
        }
        tb_puts(&gp, "    unset multiplot\n");
        gp_formats_end(&gp);
        if (any_band) rp_fig_note(f, "mean over seeds, shaded band: ±1 sd");
        else rp_fig_note(f, "single seed per configuration: no band");
        st = rp_fig_finish(c, f, &gp, &d, err);
    }
    if (st) {
        tb_free(&gp);
        tb_free(&d);
    }
    for (int i = 0; i < k; i++) free(labels[i]);
    free(labels);
    free(has_train);
    free(has_eval);
    free(band_train);
    free(band_eval);
    free(pts_train);
    return st;
}

LLStatus rp_figs_curves(RpCtx *c, LLError *err) {
    /* The best configuration of each method in one figure, so methods compare at a glance. */
    int *best = ll_malloc((size_t)c->n_methods + 1, sizeof *best), nb = 0;
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        int k = 0;
        for (int i = 0; i < c->ng; i++)
            if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].n_runs > 0) idx[k++] = i;
        int b = rp_best_group(c, idx, k);
        if (b < 0 && k > 0) b = idx[0];
        if (b >= 0) best[nb++] = b;
    }
    LLStatus st = LL_OK;
    char title[160];
    rp_title(c, title, sizeof title, "loss curves, best configuration of each method");
    if (nb == 0) rp_fig_skip(c, rp_fig_new(c, "curves", title), "no finished runs");
    else st = fig_curves(c, "curves", title, best, nb, 1, err);
    /* Then one figure per method with several configurations: its best REPORT_MAX_CURVES. */
    for (int m = 0; m < c->n_methods && !st && c->sum->n_figs < REPORT_MAX_FIGS - 7; m++) {
        int k = 0;
        for (int i = 0; i < c->ng; i++)
            if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].n_runs > 0) idx[k++] = i;
        if (k < 2) continue;
        /* Selection sort of the best first: k is small. */
        for (int a = 0; a < k; a++)
            for (int b = a + 1; b < k; b++) {
                double va = rp_gmetric(c, idx[a]), vb = rp_gmetric(c, idx[b]);
                if ((!isfinite(va) && isfinite(vb)) || (isfinite(vb) && rp_better(vb, va, c->hb))) {
                    int t = idx[a];
                    idx[a] = idx[b];
                    idx[b] = t;
                }
            }
        int shown = k < REPORT_MAX_CURVES ? k : REPORT_MAX_CURVES;
        char name[48];
        rp_fig_stem(c, "curves", c->methods[m], name, sizeof name);
        if (shown < k)
            rp_title(c, title, sizeof title, "%s, loss curves of the %d best of %d configurations",
                     rp_method_label(c->methods[m]), shown, k);
        else rp_title(c, title, sizeof title, "%s, loss curves of each configuration", rp_method_label(c->methods[m]));
        st = fig_curves(c, name, title, idx, shown, 0, err);
    }
    free(best);
    free(idx);
    return st;
}
