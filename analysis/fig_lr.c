/* fig_lr: learning-rate sensitivity. The final validation metric against the learning rate (log10
 * axis), a line per method, each point the best configuration of that method at that lr (mean
 * over seeds, error bars ±1 sd), so a reader sees whether each method's chosen lr sits inside its
 * grid or at its edge.
 *
 * Invariants
 *   - Methods keep their style (rp_method_style) as in the unit's other figures; full fine-tuning
 *     is a method here like the others (black, dashed).
 *   - The note names every method whose chosen lr (select.c) is at the edge of its grid and every
 *     method run at one lr only; the figure is left out, with the reason, when no method was run
 *     at two learning rates or more.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The distinct positive learning rates of a method's configurations with a finite mean, ascending. */
static int method_lrs(const RpCtx *c, const char *method, double *lrs) {
    int nl = 0;
    for (int i = 0; i < c->ng; i++) {
        if (strcmp(c->g[i].method, method) != 0 || !isfinite(rp_gmetric(c, i)) || !(c->g[i].lr > 0)) continue;
        int seen = 0;
        for (int j = 0; j < nl && !seen; j++) seen = lrs[j] == c->g[i].lr;
        if (!seen) lrs[nl++] = c->g[i].lr;
    }
    qsort(lrs, (size_t)nl, sizeof *lrs, rp_cmp_dbl);
    return nl;
}

LLStatus rp_fig_lr(RpCtx *c, const RpSel *s, int ns, LLError *err) {
    char title[160];
    rp_title(c, title, sizeof title, "validation %s against learning rate", report_metric_label(c->metric));
    ReportFigure *f = rp_fig_new(c, "lr", title);
    double *lrs = ll_malloc((size_t)c->ng + 1, sizeof *lrs);
    int *n_lr = ll_calloc((size_t)c->n_methods + 1, sizeof *n_lr), multi = 0;
    char single[300] = "";
    double lo = INFINITY, hi = -INFINITY;
    for (int m = 0; m < c->n_methods; m++) {
        int nl = method_lrs(c, c->methods[m], lrs);
        n_lr[m] = nl;
        if (nl >= 2) {
            multi++;
            for (int j = 0; j < nl; j++) {
                if (lrs[j] < lo) lo = lrs[j];
                if (lrs[j] > hi) hi = lrs[j];
            }
        } else if (nl == 1) {
            size_t len = strlen(single);
            snprintf(single + len, sizeof single - len, "%s%s %g", len ? ", " : "", rp_method_label(c->methods[m]),
                     lrs[0]);
        }
    }
    if (!multi) {
        rp_fig_skip(c, f, "every method ran at a single learning rate (%s)", single[0] ? single : "none finished");
        free(lrs);
        free(n_lr);
        return LL_OK;
    }
    RpSize sz = rp_size_single(c, multi);
    TextBuf gp = {0}, d = {0};
    rp_dat_header(c, &d, f);
    rp_gp_begin(c, &gp, f, sz);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'learning rate (log scale)'\n    set ylabel 'validation %s'\n",
              report_metric_label(c->metric));
    tb_printf(&gp, "    set logscale x 10\n    set xrange [%.9g:%.9g]\n    set format x '%%g'\n", lo / 1.6, hi * 1.6);
    tb_puts(&gp, "    set offsets 0, 0, graph 0.05, graph 0.05\n");
    rp_put_key(&gp, sz);
    tb_puts(&gp, "    plot ");
    int first = 1, block = 0, chose = 0, single_seed = 1;
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        if (n_lr[m] < 2) continue;
        int nl = method_lrs(c, c->methods[m], lrs);
        gp_comment(&d, "%s: lr mean sd n r alpha (the best configuration at each lr)", c->methods[m]);
        for (int j = 0; j < nl; j++) {
            int k = 0;
            for (int i = 0; i < c->ng; i++)
                if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].lr == lrs[j]) idx[k++] = i;
            int b = rp_best_group(c, idx, k);
            chose |= k > 1;
            const ReportStat *st = &c->g[b].metric;
            single_seed &= st->n < 2;
            tb_printf(&d, "%.9g %.9g %.9g %d %d %g\n", lrs[j], st->mean, st->n >= 2 ? st->sd : 0.0, st->n, c->g[b].r,
                      c->g[b].alpha);
        }
        rp_dat_next_block(&d);
        rp_plot_method(c, &gp, &first, "lr", block++, "yerrorlines lw 1.5", c->methods[m]);
    }
    tb_puts(&gp, "\n");
    gp_formats_end(&gp);
    free(idx);
    if (chose) rp_fig_note(f, "each point: the best configuration of the method at that lr");
    rp_fig_note(f, single_seed ? "single seed: no error bars" : "error bars: ±1 sd over seeds");
    char edge[300] = "";
    for (int i = 0; i < ns; i++) {
        if (!s[i].lr_edge) continue;
        size_t len = strlen(edge);
        snprintf(edge + len, sizeof edge - len, "%s%s %g (%s)", len ? ", " : "", rp_method_label(s[i].method),
                 c->g[s[i].chosen].lr, s[i].lr_edge < 0 ? "smallest" : "largest");
    }
    if (edge[0]) rp_fig_note(f, "chosen lr at the edge of its grid: %s", edge);
    else if (ns) rp_fig_note(f, "the chosen lr of every method with a grid lies inside it");
    if (single[0]) rp_fig_note(f, "one lr only, not drawn: %s", single);
    free(lrs);
    free(n_lr);
    return rp_fig_finish(c, f, &gp, &d, err);
}
