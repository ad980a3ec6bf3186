/* select: the choice of a configuration on validation, for the test table (report.h, "Selection").
 *
 * Invariants
 *   - The choice reads only validation values (ReportGroup.val, the kept weights' validation
 *     metric, mean over seeds); test values are never looked at before the row is fixed, so the
 *     reported test number is not the maximum of many.
 *   - Candidates of a row are the configurations of one method (the variant name) and one value of
 *     group_by with a finite validation mean; ties go to the first in group order (report_aggregate's
 *     total order), so the choice is reproducible.
 *   - A row's searched values are those that differ among its candidates (rp_differing), so a key
 *     held fixed in the sweep is never shown as a choice.
 *   - The lr edge is judged against the row's own candidates: a chosen lr that is the smallest or
 *     the largest of two or more is "at the edge" (the optimum may lie outside the grid), and the
 *     report says so; one lr is no grid, and is said too.
 *   - Bold (rp_bold_rule) is the only licence to mark a row: the best mean of its group, when its
 *     95% interval and the next best's are separated (stats_separated).
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values sort as numbers when both read as one, else by bytes. */
static int cmp_value(const char *a, const char *b) {
    char *ea, *eb;
    double x = strtod(a, &ea), y = strtod(b, &eb);
    if (*a && *b && !*ea && !*eb) {
        int c = rp_cmp_double(x, y);
        if (c) return c;
    }
    return strcmp(a, b);
}

static int cmp_value_ptr(const void *a, const void *b) {
    return cmp_value(*(const char *const *)a, *(const char *const *)b);
}

void rp_bold_rule(const StatsSummary *const *s, const char *const *group, int n, int higher_better, int *bold) {
    for (int i = 0; i < n; i++) bold[i] = 0;
    for (int i = 0; i < n; i++) {
        /* i leads its group: the first row with that group. */
        int lead = 1;
        for (int j = 0; j < i && lead; j++) lead = !(group ? strcmp(group[j], group[i]) == 0 : 1);
        if (!lead) continue;
        int best = -1, next = -1;
        for (int j = i; j < n; j++) {
            if (group && strcmp(group[j], group[i]) != 0) continue;
            if (!isfinite(s[j]->mean)) continue;
            if (best < 0 || rp_better(s[j]->mean, s[best]->mean, higher_better)) {
                next = best;
                best = j;
            } else if (next < 0 || rp_better(s[j]->mean, s[next]->mean, higher_better)) {
                next = j;
            }
        }
        /* One row is not a comparison; overlapping intervals are no difference. */
        if (best >= 0 && next >= 0 && stats_separated(s[best], s[next])) bold[best] = 1;
    }
}

int rp_select(const RpCtx *c, RpSel **out) {
    *out = NULL;
    const char *key = c->opt->group_by;
    char **val = ll_calloc((size_t)(c->ng ? c->ng : 1), sizeof *val);
    for (int i = 0; i < c->ng; i++) val[i] = key ? report_group_value(&c->g[i], key) : ll_strdup("");
    /* The distinct values, in order. */
    const char **vals = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *vals);
    int nv = 0;
    for (int i = 0; i < c->ng; i++) {
        int seen = 0;
        for (int j = 0; j < nv && !seen; j++) seen = strcmp(vals[j], val[i]) == 0;
        if (!seen) vals[nv++] = val[i];
    }
    qsort(vals, (size_t)nv, sizeof *vals, cmp_value_ptr);
    RpSel *s = NULL;
    int ns = 0;
    int *cand = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *cand);
    double *lrs = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *lrs);
    for (int v = 0; v < nv; v++)
        for (int m = 0; m < c->n_methods; m++) {
            int k = 0, which = -1;
            for (int i = 0; i < c->ng; i++) {
                if (strcmp(c->g[i].method, c->methods[m]) != 0 || strcmp(val[i], vals[v]) != 0) continue;
                if (!isfinite(c->g[i].val.mean)) continue;
                if (which < 0 || rp_better(c->g[i].val.mean, c->g[cand[which]].val.mean, c->hb)) which = k;
                cand[k++] = i;
            }
            if (k == 0) continue;
            s = ll_realloc(s, (size_t)ns + 1, sizeof *s);
            RpSel *r = &s[ns++];
            memset(r, 0, sizeof *r);
            r->value = ll_strdup(vals[v]);
            r->method = c->methods[m];
            r->chosen = cand[which];
            r->n_candidates = k;
            r->searched = rp_differing(c->g, cand, k, which, key);
            int nl = 0;
            for (int a = 0; a < k; a++) {
                int seen = 0;
                for (int b = 0; b < nl && !seen; b++) seen = lrs[b] == c->g[cand[a]].lr;
                if (!seen) lrs[nl++] = c->g[cand[a]].lr;
            }
            qsort(lrs, (size_t)nl, sizeof *lrs, rp_cmp_dbl);
            r->n_lr = nl;
            r->lr_min = lrs[0];
            r->lr_max = lrs[nl - 1];
            double lr = c->g[r->chosen].lr;
            r->lr_edge = nl < 2 ? 0 : lr == lrs[0] ? -1 : lr == lrs[nl - 1] ? 1 : 0;
        }
    free(cand);
    free(lrs);
    free(vals);
    for (int i = 0; i < c->ng; i++) free(val[i]);
    free(val);
    if (ns) {
        const StatsSummary **st = ll_malloc((size_t)ns, sizeof *st);
        const char **grp = ll_malloc((size_t)ns, sizeof *grp);
        int *bold = ll_malloc((size_t)ns, sizeof *bold);
        for (int i = 0; i < ns; i++) {
            st[i] = c->has_test ? &c->g[s[i].chosen].test : &c->g[s[i].chosen].val;
            grp[i] = s[i].value;
        }
        rp_bold_rule(st, grp, ns, c->hb, bold);
        for (int i = 0; i < ns; i++) s[i].bold = bold[i];
        free(st);
        free(grp);
        free(bold);
    }
    *out = s;
    return ns;
}

void rp_free_select(RpSel *s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) {
        free(s[i].value);
        free(s[i].searched);
    }
    free(s);
}

void rp_lr_edge_notes(RpCtx *c, const RpSel *s, int n) {
    for (int i = 0; i < n; i++) {
        if (!s[i].lr_edge) continue;
        char where[160] = "";
        if (c->opt->group_by) snprintf(where, sizeof where, " at %s=%s", c->opt->group_by, s[i].value);
        rp_summary_note(c,
                        "%s%s: the chosen lr %g is the %s of its grid (%d values, %g to %g); a better one may lie "
                        "%s it",
                        rp_method_label(s[i].method), where, c->g[s[i].chosen].lr,
                        s[i].lr_edge < 0 ? "smallest" : "largest", s[i].n_lr, s[i].lr_min, s[i].lr_max,
                        s[i].lr_edge < 0 ? "below" : "above");
    }
}
