/* fig_heatmap: the two heatmaps. `rank_alpha`: LoRA's final (validation) metric by rank and alpha,
 * each cell the best configuration at that (r, alpha); `adalora_ranks`: the final rank AdaLoRA
 * gave each (layer, module) in its best configuration, mean over seeds.
 *
 * Invariants
 *   - rank_alpha is drawn only for ranks that were run with at least two alphas: a grid with
 *     alpha tied to r (alpha = 2r) is a diagonal of empty cells and says nothing about alpha; those
 *     ranks are left out (the note names them), and the figure too when no rank is left, with the
 *     reason.
 *   - Cells without a finished run are hatched and labelled "no run", never coloured as a value.
 *   - Cell labels are black on the light end of the palette and white on the dark end (viridis is
 *     monotone in lightness), so they stay legible in greyscale.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int find_double(const double *v, int n, double x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return i;
    return -1;
}

LLStatus rp_fig_rank_alpha(RpCtx *c, LLError *err) {
    char title[160];
    rp_title(c, title, sizeof title, "LoRA, final %s by rank and alpha", report_metric_label(c->metric));
    ReportFigure *f = rp_fig_new(c, "rank_alpha", title);
    int *ranks = ll_malloc((size_t)c->ng + 1, sizeof *ranks), nr = 0, na = 0, n_lora = 0;
    double *alphas = ll_malloc((size_t)c->ng + 1, sizeof *alphas), *ra = ll_malloc((size_t)c->ng + 1, sizeof *ra);
    for (int i = 0; i < c->ng; i++) {
        if (strcmp(c->g[i].method, "lora") != 0 || !isfinite(rp_gmetric(c, i))) continue;
        n_lora++;
        int seen = 0;
        for (int j = 0; j < nr; j++) seen |= ranks[j] == c->g[i].r;
        if (!seen) ranks[nr++] = c->g[i].r;
    }
    qsort(ranks, (size_t)nr, sizeof *ranks, rp_cmp_int);
    /* Keep the ranks run with two alphas or more; say which were not. */
    char single[200] = "";
    int kept = 0;
    for (int y = 0; y < nr; y++) {
        int nra = 0;
        for (int i = 0; i < c->ng; i++)
            if (strcmp(c->g[i].method, "lora") == 0 && isfinite(rp_gmetric(c, i)) && c->g[i].r == ranks[y] &&
                find_double(ra, nra, c->g[i].alpha) < 0)
                ra[nra++] = c->g[i].alpha;
        if (nra < 2) {
            size_t len = strlen(single);
            snprintf(single + len, sizeof single - len, "%sr=%d: alpha=%g", len ? ", " : "", ranks[y], ra[0]);
            continue;
        }
        ranks[kept++] = ranks[y];
        for (int a = 0; a < nra; a++)
            if (find_double(alphas, na, ra[a]) < 0) alphas[na++] = ra[a];
    }
    int n_single = nr - kept;
    nr = kept;
    free(ra);
    qsort(alphas, (size_t)na, sizeof *alphas, rp_cmp_dbl);
    int n_cells = 0, chose = 0;
    int *cell = ll_malloc((size_t)(nr * na) + 1, sizeof *cell);
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx);
    double lo = INFINITY, hi = -INFINITY;
    for (int y = 0; y < nr; y++)
        for (int x = 0; x < na; x++) {
            int k = 0;
            for (int i = 0; i < c->ng; i++)
                if (strcmp(c->g[i].method, "lora") == 0 && c->g[i].r == ranks[y] && c->g[i].alpha == alphas[x])
                    idx[k++] = i;
            int b = rp_best_group(c, idx, k);
            cell[y * na + x] = b;
            chose |= k > 1;
            if (b >= 0) {
                n_cells++;
                if (rp_gmetric(c, b) < lo) lo = rp_gmetric(c, b);
                if (rp_gmetric(c, b) > hi) hi = rp_gmetric(c, b);
            }
        }
    free(idx);
    LLStatus st = LL_OK;
    if (n_lora == 0) {
        rp_fig_skip(c, f, "no finished LoRA runs");
    } else if (nr == 0) {
        rp_fig_skip(c, f, "no rank was run with two alphas or more (%s): a rank x alpha map would be a diagonal "
                          "of empty cells", single);
    } else {
        TextBuf gp = {0}, d = {0};
        rp_dat_header(c, &d, f);
        tb_puts(&d, "# cells: alpha_index rank_index mean label text_colour r alpha sd n\n");
        for (int y = 0; y < nr; y++)
            for (int x = 0; x < na; x++) {
                int b = cell[y * na + x];
                if (b < 0) continue;
                const ReportStat *s = &c->g[b].metric;
                tb_printf(&d, "%d %d %.9g %.3f %s %d %g %.9g %d\n", x, y, s->mean, s->mean,
                          rp_cell_text_colour(s->mean, lo, hi), ranks[y], alphas[x], s->n >= 2 ? s->sd : 0.0, s->n);
            }
        rp_dat_next_block(&d);
        tb_puts(&d, "# cells without a finished run: alpha_index rank_index\n");
        int missing = 0;
        for (int y = 0; y < nr; y++)
            for (int x = 0; x < na; x++)
                if (cell[y * na + x] < 0) {
                    tb_printf(&d, "%d %d\n", x, y);
                    missing++;
                }
        if (!missing) tb_puts(&d, "NaN NaN\n");
        rp_dat_next_block(&d);
        RpSize sz = rp_size_heatmap(c);
        if (nr > 4) sz.h += 0.2 * (nr - 4);
        rp_gp_begin(c, &gp, f, sz);
        tb_puts(&gp, "    set title ");
        gp_quote(&gp, title);
        tb_printf(&gp, "\n    set xlabel 'alpha'\n    set ylabel 'rank r'\n    set cblabel '%s'\n",
                  report_metric_label(c->metric));
        tb_printf(&gp, "    set xrange [-0.5:%g]\n    set yrange [-0.5:%g]\n", na - 0.5, nr - 0.5);
        tb_puts(&gp, "    set xtics (");
        for (int x = 0; x < na; x++) tb_printf(&gp, "%s'%g' %d", x ? ", " : "", alphas[x], x);
        tb_puts(&gp, ")\n    set ytics (");
        for (int y = 0; y < nr; y++) tb_printf(&gp, "%s'%d' %d", y ? ", " : "", ranks[y], y);
        tb_puts(&gp, ")\n    unset grid\n    set border 15\n    unset key\n");
        rp_gp_viridis(&gp);
        if (hi > lo) tb_printf(&gp, "    set cbrange [%.9g:%.9g]\n", lo, hi);
        tb_puts(&gp, "    plot 'rank_alpha.dat' index 0 using 1:2:(0.5):(0.5):3 with boxxyerror "
                      "fs solid 1.0 border lc rgb '#ffffff' lw 1.5 lc palette, \\\n"
                      "         '' index 0 using 1:2:4:5 with labels tc rgb variable");
        if (missing)
            tb_puts(&gp, ", \\\n         '' index 1 using 1:2:(0.5):(0.5) with boxxyerror fs pattern 4 "
                          "lc rgb '#999999', \\\n"
                          "         '' index 1 using 1:2:('no run') with labels tc rgb '#555555'");
        tb_puts(&gp, "\n");
        gp_formats_end(&gp);
        if (chose)
            rp_fig_note(f, "each cell: the best targets%s and lr at that (r, alpha), mean over seeds",
                     c->has_variant ? ", variant" : "");
        else rp_fig_note(f, "each cell: mean over seeds");
        if (missing) rp_fig_note(f, "%d cell%s without a finished run", missing, missing == 1 ? "" : "s");
        if (n_single) rp_fig_note(f, "left out, run with one alpha only: %s", single);
        st = rp_fig_finish(c, f, &gp, &d, err);
    }
    free(cell);
    free(ranks);
    free(alphas);
    return st;
}



/* Modules in the order of a Llama block. */
static int module_order(const char *m) {
    static const char *const known[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (int i = 0; i < 7; i++)
        if (strcmp(m, known[i]) == 0) return i;
    return 7;
}

LLStatus rp_fig_adalora(RpCtx *c, LLError *err) {
    char ftitle[160];
    rp_title(c, ftitle, sizeof ftitle, "AdaLoRA, final rank per layer and module");
    ReportFigure *f = rp_fig_new(c, "adalora_ranks", ftitle);
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx), k = 0, any = 0;
    for (int i = 0; i < c->ng; i++)
        if (strcmp(c->g[i].method, "adalora") == 0) {
            any = 1;
            if (c->g[i].n_runs > 0) idx[k++] = i;
        }
    int b = rp_best_group(c, idx, k);
    if (b < 0 && k > 0) b = idx[0];
    free(idx);
    if (!any || b < 0) {
        rp_fig_skip(c, f, any ? "no finished AdaLoRA runs" : "no AdaLoRA runs");
        return LL_OK;
    }
    const ReportGroup *g = &c->g[b];
    /* Sum and count per (layer, module) over the seeds of the best configuration. */
    typedef struct {
        int layer;
        char module[32];
        double sum;
        int n, init;
    } RankCell;
    RankCell *cells = NULL;
    int ncell = 0, cap = 0, max_init = 0;
    LLStatus st = LL_OK;
    for (int r = 0; r < g->n_runs && !st; r++) {
        RankRow *rows = NULL;
        int n = 0;
        st = store_list_ranks(c->store, g->run_ids[r], &rows, &n, err);
        for (int i = 0; i < n && !st; i++) {
            int j = 0;
            while (j < ncell && !(cells[j].layer == rows[i].layer && strcmp(cells[j].module, rows[i].module) == 0))
                j++;
            if (j == ncell) {
                if (ncell == cap) {
                    cap = cap ? 2 * cap : 64;
                    cells = ll_realloc(cells, (size_t)cap, sizeof *cells);
                }
                memset(&cells[j], 0, sizeof cells[j]);
                cells[j].layer = rows[i].layer;
                snprintf(cells[j].module, sizeof cells[j].module, "%s", rows[i].module);
                ncell++;
            }
            cells[j].sum += rows[i].rank;
            cells[j].n++;
            if (rows[i].init_rank > cells[j].init) cells[j].init = rows[i].init_rank;
            if (rows[i].init_rank > max_init) max_init = rows[i].init_rank;
        }
        free(rows);
    }
    if (st) {
        free(cells);
        return st;
    }
    if (ncell == 0) {
        rp_fig_skip(c, f, "the AdaLoRA runs recorded no final ranks");
        return LL_OK;
    }
    const char *mods[64];
    int nm = 0, max_layer = 0;
    for (int j = 0; j < ncell; j++) {
        int seen = 0;
        for (int m = 0; m < nm; m++) seen |= strcmp(mods[m], cells[j].module) == 0;
        if (!seen && nm < 64) mods[nm++] = cells[j].module;
        if (cells[j].layer > max_layer) max_layer = cells[j].layer;
    }
    for (int a = 1; a < nm; a++)
        for (int bb = a; bb > 0; bb--) {
            int oa = module_order(mods[bb]), ob = module_order(mods[bb - 1]);
            if (oa > ob || (oa == ob && strcmp(mods[bb], mods[bb - 1]) >= 0)) break;
            const char *t = mods[bb];
            mods[bb] = mods[bb - 1];
            mods[bb - 1] = t;
        }
    double hi = max_init > 0 ? max_init : 1;
    TextBuf gp = {0}, d = {0};
    rp_dat_header(c, &d, f);
    char label[256];
    rp_group_label(c, b, 0, label, sizeof label);
    gp_comment(&d, "configuration: %s; mean over %d seed%s", label, g->n_runs, g->n_runs == 1 ? "" : "s");
    tb_puts(&d, "# module_index layer mean_rank label text_colour init_rank n\n");
    for (int j = 0; j < ncell; j++) {
        int m = 0;
        while (m < nm && strcmp(mods[m], cells[j].module) != 0) m++;
        double mean = cells[j].sum / cells[j].n;
        char lab[32];
        if (mean == floor(mean)) snprintf(lab, sizeof lab, "%.0f", mean);
        else snprintf(lab, sizeof lab, "%.1f", mean);
        tb_printf(&d, "%d %d %.9g %s %s %d %d\n", m, cells[j].layer, mean, lab, rp_cell_text_colour(mean, 0, hi),
                  cells[j].init, cells[j].n);
    }
    rp_dat_next_block(&d);
    char title[320];
    rp_title(c, title, sizeof title, "AdaLoRA final ranks, %s", label);
    RpSize sz = rp_size_heatmap(c);
    if (max_layer > 8) sz.h += 0.12 * (max_layer - 8);
    rp_gp_begin(c, &gp, f, sz);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_puts(&gp, "\n    set xlabel 'module'\n    set ylabel 'layer'\n    set cblabel 'final rank'\n");
    tb_printf(&gp, "    set xrange [-0.5:%g]\n    set yrange [-0.5:%g]\n    set xtics (", nm - 0.5, max_layer + 0.5);
    for (int m = 0; m < nm; m++) {
        tb_printf(&gp, "%s", m ? ", " : "");
        gp_quote(&gp, mods[m]);
        tb_printf(&gp, " %d", m);
    }
    tb_puts(&gp, ")\n");
    if (nm > 4) tb_puts(&gp, "    set xtics rotate by -25 left\n");
    tb_printf(&gp, "    set ytics 1\n    unset grid\n    set border 15\n    unset key\n    set cbrange [0:%g]\n", hi);
    rp_gp_viridis(&gp);
    tb_puts(&gp, "    plot 'adalora_ranks.dat' index 0 using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 "
                  "border lc rgb '#ffffff' lw 1.5 lc palette, \\\n"
                  "         '' index 0 using 1:2:4:5 with labels tc rgb variable\n");
    gp_formats_end(&gp);
    rp_fig_note(f, "colour scale from 0 to the initial rank %d; mean over %d seed%s of the best AdaLoRA configuration",
             max_init, g->n_runs, g->n_runs == 1 ? "" : "s");
    free(cells);
    return rp_fig_finish(c, f, &gp, &d, err);
}

/* ---- the table ------------------------------------------------------------------------------- */

