/* fig_rank: the final (validation) metric against a configuration axis, a series per adapter
 * method and full fine-tuning as a reference band: `rank` (against r, log2 axis) and `targets`
 * (per target-module set, fewest modules first).
 *
 * Invariants
 *   - Each point is the best configuration of its method at that rank or target set (by the mean
 *     validation value); the note says when that was a choice among several, and the .dat names
 *     the chosen alpha and lr (and r) beside each point.
 *   - Error bars are ±1 sd over seeds, and only where there are two seeds or more (the note says
 *     which); a method keeps its style (rp_method_style) as in every other figure of the unit.
 *   - A figure is left out, with the reason, when there are fewer than two ranks (target sets):
 *     one point per method compares nothing along the axis.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

LLStatus rp_fig_rank(RpCtx *c, LLError *err) {
    char title[160];
    rp_title(c, title, sizeof title, "final %s against rank", report_metric_label(c->metric));
    ReportFigure *f = rp_fig_new(c, "rank", title);
    int *ranks = ll_malloc((size_t)c->ng + 1, sizeof *ranks), nr = 0;
    for (int i = 0; i < c->ng; i++) {
        if (report_is_full(c->g[i].method) || c->g[i].r <= 0 || !isfinite(rp_gmetric(c, i))) continue;
        int seen = 0;
        for (int j = 0; j < nr; j++) seen |= ranks[j] == c->g[i].r;
        if (!seen) ranks[nr++] = c->g[i].r;
    }
    qsort(ranks, (size_t)nr, sizeof *ranks, rp_cmp_int);
    if (nr < 2) {
        if (nr == 1) rp_fig_skip(c, f, "fewer than 2 ranks in the runs (only r=%d)", ranks[0]);
        else rp_fig_skip(c, f, "no finished adapter runs with a rank");
        free(ranks);
        return LL_OK;
    }
    int fr = rp_full_ref(c), n_key = fr >= 0;
    for (int m = 0; m < c->n_methods; m++) n_key += !report_is_full(c->methods[m]);
    RpSize sz = rp_size_single(c, n_key);
    TextBuf gp = {0}, d = {0};
    rp_dat_header(c, &d, f);
    rp_gp_begin(c, &gp, f, sz);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'rank r (log2 scale)'\n    set ylabel '%s'\n", report_metric_label(c->metric));
    tb_printf(&gp, "    set logscale x 2\n    set xrange [%g:%g]\n    set xtics (", ranks[0] / 1.5, ranks[nr - 1] * 1.5);
    for (int j = 0; j < nr; j++) tb_printf(&gp, "%s'%d' %d", j ? ", " : "", ranks[j], ranks[j]);
    tb_puts(&gp, ")\n");
    rp_put_key(&gp, sz);
    rp_gp_full_vars(c, fr, &gp, &d);
    tb_puts(&gp, "    plot ");
    int first = 1, block = 0, chose = 0, single = 1;
    rp_gp_full_terms(c, fr, &gp, &first);
    if (fr < 0) rp_fig_note(f, "no full fine-tuning runs: no reference band");
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        if (report_is_full(c->methods[m])) continue;
        int rows = 0;
        for (int j = 0; j < nr; j++) {
            int k = 0;
            for (int i = 0; i < c->ng; i++)
                if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].r == ranks[j]) idx[k++] = i;
            int b = rp_best_group(c, idx, k);
            if (b < 0) continue;
            chose |= k > 1;
            const ReportStat *s = &c->g[b].metric;
            single &= s->n < 2;
            if (!rows) gp_comment(&d, "%s: r mean sd n alpha lr (the best configuration at each rank)", c->methods[m]);
            tb_printf(&d, "%d %.9g %.9g %d %g %g\n", ranks[j], s->mean, s->n >= 2 ? s->sd : 0.0, s->n, c->g[b].alpha,
                      c->g[b].lr);
            rows++;
        }
        if (!rows) continue; /* no block: block numbers stay contiguous */
        rp_dat_next_block(&d);
        rp_plot_method(c, &gp, &first, "rank", block++, "yerrorlines lw 1.5", c->methods[m]);
    }
    tb_puts(&gp, "\n");
    gp_formats_end(&gp);
    free(idx);
    free(ranks);
    if (chose)
        rp_fig_note(f, "each point: the best alpha, targets%s and lr at that rank", c->has_variant ? ", variant" : "");
    rp_fig_note(f, single ? "single seed: no error bars" : "error bars: ±1 sd over seeds");
    return rp_fig_finish(c, f, &gp, &d, err);
}

LLStatus rp_fig_targets(RpCtx *c, LLError *err) {
    char title[160];
    rp_title(c, title, sizeof title, "final %s by target modules", report_metric_label(c->metric));
    ReportFigure *f = rp_fig_new(c, "targets", title);
    const char **cats = ll_malloc((size_t)c->ng + 1, sizeof *cats);
    int nc = 0;
    for (int i = 0; i < c->ng; i++) {
        if (report_is_full(c->g[i].method) || !isfinite(rp_gmetric(c, i))) continue;
        int seen = 0;
        for (int j = 0; j < nc; j++) seen |= strcmp(cats[j], c->g[i].targets) == 0;
        if (!seen) cats[nc++] = c->g[i].targets;
    }
    if (nc < 2) {
        char t[128];
        report_short_targets(nc ? cats[0] : "", t, sizeof t);
        if (nc) rp_fig_skip(c, f, "a single target-module set in the adapter runs (%s)", t);
        else rp_fig_skip(c, f, "no finished adapter runs");
        free(cats);
        return LL_OK;
    }
    /* Fewest modules first: the usual order of such a comparison. */
    for (int a = 1; a < nc; a++)
        for (int b = a; b > 0; b--) {
            size_t la = strlen(cats[b]), lb = strlen(cats[b - 1]);
            if (la > lb || (la == lb && strcmp(cats[b], cats[b - 1]) >= 0)) break;
            const char *t = cats[b];
            cats[b] = cats[b - 1];
            cats[b - 1] = t;
        }
    int n_adapter_methods = 0, long_labels = 0, fr = rp_full_ref(c);
    for (int m = 0; m < c->n_methods; m++) n_adapter_methods += !report_is_full(c->methods[m]);
    RpSize sz = rp_size_single(c, n_adapter_methods + (fr >= 0));
    TextBuf gp = {0}, d = {0};
    rp_dat_header(c, &d, f);
    rp_gp_begin(c, &gp, f, sz);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'target modules'\n    set ylabel '%s'\n", report_metric_label(c->metric));
    tb_printf(&gp, "    set xrange [-0.5:%g]\n    set xtics (", nc - 0.5);
    for (int j = 0; j < nc; j++) {
        char t[128];
        report_short_targets(cats[j], t, sizeof t);
        long_labels |= strlen(t) > (sz.column ? 6u : 12u);
        tb_printf(&gp, "%s", j ? ", " : "");
        gp_quote(&gp, t);
        tb_printf(&gp, " %d", j);
    }
    tb_puts(&gp, ")\n");
    if (long_labels) tb_puts(&gp, "    set xtics rotate by -25 left\n");
    tb_puts(&gp, "    set grid noxtics\n");
    rp_put_key(&gp, sz);
    rp_gp_full_vars(c, fr, &gp, &d);
    tb_puts(&gp, "    plot ");
    int first = 1, block = 0, chose = 0, single = 1, mi = 0;
    rp_gp_full_terms(c, fr, &gp, &first);
    if (fr < 0) rp_fig_note(f, "no full fine-tuning runs: no reference band");
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        if (report_is_full(c->methods[m])) continue;
        /* Methods side by side within a category, so error bars do not overlap. */
        double off = n_adapter_methods > 1 ? (mi - (n_adapter_methods - 1) / 2.0) * 0.5 / n_adapter_methods : 0;
        mi++;
        int rows = 0;
        for (int j = 0; j < nc; j++) {
            int k = 0;
            for (int i = 0; i < c->ng; i++)
                if (strcmp(c->g[i].method, c->methods[m]) == 0 && strcmp(c->g[i].targets, cats[j]) == 0) idx[k++] = i;
            int b = rp_best_group(c, idx, k);
            if (b < 0) continue;
            chose |= k > 1;
            if (!rows) gp_comment(&d, "%s: x mean sd n category r alpha lr", c->methods[m]);
            const ReportStat *s = &c->g[b].metric;
            single &= s->n < 2;
            tb_printf(&d, "%.4f %.9g %.9g %d %d %d %g %g\n", j + off, s->mean, s->n >= 2 ? s->sd : 0.0, s->n, j,
                      c->g[b].r, c->g[b].alpha, c->g[b].lr);
            rows++;
        }
        if (!rows) continue;
        rp_dat_next_block(&d);
        rp_plot_method(c, &gp, &first, "targets", block++, "yerrorbars ps 1.1", c->methods[m]);
    }
    tb_puts(&gp, "\n");
    gp_formats_end(&gp);
    free(idx);
    free(cats);
    if (chose) rp_fig_note(f, "each point: the best r, alpha%s and lr for that set", c->has_variant ? ", variant" : "");
    rp_fig_note(f, single ? "single seed: no error bars" : "error bars: ±1 sd over seeds");
    return rp_fig_finish(c, f, &gp, &d, err);
}
