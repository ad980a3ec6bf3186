/* fig_pareto: the final (validation) metric against trainable parameters (log axis), a series per
 * method, with the Pareto front: the configurations no other beats with as few parameters or
 * fewer (report_pareto), drawn as a staircase and ringed.
 *
 * Invariants
 *   - Every configuration with a parameter count and a finite mean is a point (not only the best
 *     per method): the front is over all of them.
 *   - Error bars are ±1 sd over seeds, where there are two or more; the front's ring and staircase
 *     are grey and unlisted by method, so they never take a method's style.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

LLStatus rp_fig_params(RpCtx *c, LLError *err) {
    char title[160];
    rp_title(c, title, sizeof title, "final %s against trainable parameters", report_metric_label(c->metric));
    ReportFigure *f = rp_fig_new(c, "params", title);
    double *cost = ll_malloc((size_t)c->ng + 1, sizeof *cost), *val = ll_malloc((size_t)c->ng + 1, sizeof *val);
    int *front = ll_malloc((size_t)c->ng + 1, sizeof *front), np = 0;
    for (int i = 0; i < c->ng; i++) {
        int ok = isfinite(c->g[i].trainable.mean) && c->g[i].trainable.mean > 0 && isfinite(rp_gmetric(c, i));
        cost[i] = ok ? c->g[i].trainable.mean : NAN;
        val[i] = ok ? rp_gmetric(c, i) : NAN;
        np += ok;
    }
    if (np < 2) {
        rp_fig_skip(c, f, "fewer than 2 configurations with a trainable-parameter count and a final metric");
        free(cost);
        free(val);
        free(front);
        return LL_OK;
    }
    int nf = report_pareto(cost, val, c->ng, c->hb, front);
    TextBuf gp = {0}, d = {0};
    rp_dat_header(c, &d, f);
    RpSize sz = rp_size_single(c, c->n_methods + 1);
    rp_gp_begin(c, &gp, f, sz);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'trainable parameters (log scale)'\n    set ylabel '%s'\n",
              report_metric_label(c->metric));
    /* "%.0s%c" prints 10k, 100k, 1M: readable without enhanced text. */
    tb_puts(&gp, "    set logscale x 10\n    set format x '%.0s%c'\n    set offsets graph 0.05, graph 0.05, "
                  "graph 0.05, graph 0.05\n");
    rp_put_key(&gp, sz);
    tb_puts(&gp, "    plot ");
    int first = 1, block = 0, single = 1;
    for (int m = 0; m < c->n_methods; m++) {
        int rows = 0;
        for (int i = 0; i < c->ng; i++) {
            if (strcmp(c->g[i].method, c->methods[m]) != 0 || !isfinite(cost[i])) continue;
            if (!rows) gp_comment(&d, "%s: trainable mean sd n on_front r alpha lr", c->methods[m]);
            const ReportStat *s = &c->g[i].metric;
            single &= s->n < 2;
            tb_printf(&d, "%.0f %.9g %.9g %d %d %d %g %g\n", cost[i], s->mean, s->n >= 2 ? s->sd : 0.0, s->n,
                      front[i], c->g[i].r, c->g[i].alpha, c->g[i].lr);
            rows++;
        }
        if (!rows) continue;
        rp_dat_next_block(&d);
        rp_plot_method(c, &gp, &first, "params", block++, "yerrorbars", c->methods[m]);
    }
    /* The front, ascending in cost: a staircase (what is reachable with at most that many
     * parameters), its points ringed. */
    tb_puts(&d, "# Pareto front: trainable mean (ascending)\n");
    int *order = ll_malloc((size_t)nf + 1, sizeof *order), k = 0;
    for (int i = 0; i < c->ng; i++)
        if (front[i]) order[k++] = i;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && cost[order[b]] < cost[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int a = 0; a < k; a++) tb_printf(&d, "%.0f %.9g\n", cost[order[a]], val[order[a]]);
    rp_dat_next_block(&d);
    tb_printf(&gp, ", \\\n         'params.dat' index %d using 1:2 with steps lw 1.5 lc rgb '#777777' dt 4 pt 6 "
                   "title 'Pareto front', \\\n"
                   "         '' index %d using 1:2 with points pt 6 ps 2.2 lc rgb '#777777' notitle\n",
              block, block);
    gp_formats_end(&gp);
    rp_fig_note(f, "%d of %d configurations on the Pareto front (ringed; %s with fewer parameters)", nf, np,
             c->hb ? "higher accuracy" : "lower loss");
    if (single) rp_fig_note(f, "single seed: no error bars");
    free(order);
    free(cost);
    free(val);
    free(front);
    return rp_fig_finish(c, f, &gp, &d, err);
}

