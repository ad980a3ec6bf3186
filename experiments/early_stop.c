/* early_stop: see early_stop.h. */
#include "early_stop.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

const char *es_type_name(EarlyStopType t) {
    return t == ES_ASHA ? "asha" : t == ES_MEDIAN ? "median" : "none";
}

int es_metric(const char *metric, const char **name, int *higher_better) {
    static const struct {
        const char *key, *name;
        int hb;
    } M[] = {{"eval_loss", "loss", 0}, {"loss", "loss", 0}, {"eval_ppl", "ppl", 0}, {"ppl", "ppl", 0},
             {"accuracy", "accuracy", 1}, {"eval_accuracy", "accuracy", 1}, {"macro_f1", "macro_f1", 1},
             {"eval_macro_f1", "macro_f1", 1}};
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++)
        if (strcmp(metric, M[i].key) == 0) {
            if (name) *name = M[i].name;
            if (higher_better) *higher_better = M[i].hb;
            return 1;
        }
    return 0;
}

int es_rungs(const EarlyStopPolicy *p, int *steps, int cap) {
    if (p->type != ES_ASHA || p->min_steps < 1 || p->reduction_factor < 2) return 0;
    int n = 0;
    for (long long s = p->min_steps; s < p->max_steps; s *= p->reduction_factor) {
        if (n < cap && steps) steps[n] = (int)s;
        n++;
    }
    return n;
}

int es_asha_rung_at(const EarlyStopPolicy *p, int prev_step, int step) {
    int rungs[64];
    int n = es_rungs(p, rungs, 64), found = -1;
    for (int k = 0; k < n && k < 64; k++)
        if (rungs[k] > prev_step && rungs[k] <= step) found = k;
    return found;
}

/* a better than b; a non-finite value is never better, and any finite one beats it */
static int better(double a, double b, int higher_better) {
    if (!isfinite(a)) return 0;
    if (!isfinite(b)) return 1;
    return higher_better ? a > b : a < b;
}

/* Insertion sort, best first: n is a rung's population (small), and it keeps the module free of
 * state that qsort's missing context argument would need. */
static void sort_best_first(double *v, int n, int higher_better) {
    for (int i = 1; i < n; i++) {
        double x = v[i];
        int j = i - 1;
        while (j >= 0 && better(x, v[j], higher_better)) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

EsDecision es_asha_decide(const EarlyStopPolicy *p, int rung, double value, const double *recorded, int n_recorded) {
    EsDecision d = {0, rung, value, NAN, n_recorded + 1};
    double *all = ll_malloc((size_t)n_recorded + 1, sizeof *all);
    if (n_recorded) memcpy(all, recorded, (size_t)n_recorded * sizeof *all);
    all[n_recorded] = value;
    sort_best_first(all, n_recorded + 1, p->higher_better);
    int idx = (n_recorded + 1) / p->reduction_factor - 1;
    if (idx < 0) idx = 0;
    d.threshold = all[idx];
    /* continue when not worse than the cut: ties continue, a non-finite value never does */
    d.stop = !isfinite(value) || better(d.threshold, value, p->higher_better);
    ll_free(all);
    return d;
}

/* Mean of the finite values at steps <= step; NaN when there is none. */
static double running_average(const EsCurve *c, int step) {
    double sum = 0.0;
    int k = 0;
    for (int i = 0; i < c->n && c->steps[i] <= step; i++)
        if (isfinite(c->values[i])) {
            sum += c->values[i];
            k++;
        }
    return k ? sum / k : NAN;
}

static int reached(const EsCurve *c, int step) { return c->n > 0 && c->steps[c->n - 1] >= step; }

EsDecision es_median_decide(const EarlyStopPolicy *p, int step, const EsCurve *run, const EsCurve *others,
                            int n_others) {
    EsDecision d = {0, -1, NAN, NAN, 0};
    for (int i = 0; i < run->n && run->steps[i] <= step; i++)
        if (better(run->values[i], d.value, p->higher_better)) d.value = run->values[i];
    if (step < p->min_steps) return d;
    double *avg = ll_malloc((size_t)n_others + 1, sizeof *avg);
    int k = 0;
    for (int i = 0; i < n_others; i++) {
        if (!reached(&others[i], step)) continue;
        avg[k++] = running_average(&others[i], step); /* NaN (a run with no finite value) sorts last */
    }
    d.n_compared = k;
    if (k >= p->grace_runs && k > 0) {
        sort_best_first(avg, k, p->higher_better);
        /* the median of k values, best first: the middle one, or the mean of the middle two */
        double med = (k % 2) ? avg[k / 2] : 0.5 * (avg[k / 2 - 1] + avg[k / 2]);
        d.threshold = med;
        d.stop = better(med, d.value, p->higher_better);
    }
    if (!isfinite(d.value)) d.stop = 1; /* no finite value up to a decision step: diverged */
    ll_free(avg);
    return d;
}

/* ---- replay ---------------------------------------------------------------------------------- */

typedef struct {
    double *v;
    int n, cap;
} Values;

static void values_add(Values *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = ll_realloc(s->v, (size_t)s->cap, sizeof *s->v);
    }
    s->v[s->n++] = x;
}

/* Mean final metric per configuration (NaN when a run of it failed to give one) into mean[n_cfg]. */
static void config_means(const EsRun *runs, int n, int n_cfg, double *mean) {
    int *cnt = ll_calloc((size_t)n_cfg, sizeof *cnt);
    for (int c = 0; c < n_cfg; c++) mean[c] = 0.0;
    for (int i = 0; i < n; i++) {
        mean[runs[i].config] += runs[i].final; /* a NaN poisons its configuration: never best */
        cnt[runs[i].config]++;
    }
    for (int c = 0; c < n_cfg; c++) mean[c] = cnt[c] ? mean[c] / cnt[c] : NAN;
    ll_free(cnt);
}

void es_replay(const EarlyStopPolicy *p, const EsRun *runs, int n, EsReplay *out) {
    memset(out, 0, sizeof *out);
    out->stop_step = ll_malloc((size_t)(n > 0 ? n : 1), sizeof *out->stop_step);
    out->best_true = out->best_pruned = -1;
    out->best_true_value = out->best_pruned_value = NAN;
    int n_rungs = es_rungs(p, NULL, 0), n_brackets = 0, n_cfg = 0;
    for (int i = 0; i < n; i++) {
        if (runs[i].bracket + 1 > n_brackets) n_brackets = runs[i].bracket + 1;
        if (runs[i].config + 1 > n_cfg) n_cfg = runs[i].config + 1;
    }
    /* ASHA's records per (bracket, rung); the median rule's truncated curves per run */
    Values *rec = ll_calloc((size_t)(n_brackets * (n_rungs > 0 ? n_rungs : 1) + 1), sizeof *rec);
    EsCurve *seen = ll_calloc((size_t)(n > 0 ? n : 1), sizeof *seen);
    for (int i = 0; i < n; i++) {
        const EsRun *r = &runs[i];
        out->stop_step[i] = -1;
        int prev = -1;
        for (int e = 0; e < r->curve.n && out->stop_step[i] < 0; e++) {
            int step = r->curve.steps[e];
            EsDecision d = {0};
            int decided = 0;
            if (p->type == ES_ASHA) {
                int k = es_asha_rung_at(p, prev, step);
                if (k >= 0) {
                    Values *v = &rec[r->bracket * n_rungs + k];
                    d = es_asha_decide(p, k, r->curve.values[e], v->v, v->n);
                    values_add(v, r->curve.values[e]);
                    decided = 1;
                }
            } else if (p->type == ES_MEDIAN && step >= p->min_steps) {
                EsCurve upto = {r->curve.steps, r->curve.values, e + 1};
                EsCurve *others = ll_malloc((size_t)(i > 0 ? i : 1), sizeof *others);
                int k = 0;
                for (int j = 0; j < i; j++)
                    if (runs[j].bracket == r->bracket) others[k++] = seen[j];
                d = es_median_decide(p, step, &upto, others, k);
                ll_free(others);
                decided = 1;
            }
            if (decided && d.stop && step < r->total_steps) out->stop_step[i] = step;
            prev = step;
        }
        int end = out->stop_step[i] >= 0 ? out->stop_step[i] : r->total_steps;
        int kept = 0;
        while (kept < r->curve.n && r->curve.steps[kept] <= end) kept++;
        seen[i] = (EsCurve){r->curve.steps, r->curve.values, kept};
        out->steps_run += end;
        out->steps_total += r->total_steps;
        out->n_stopped += out->stop_step[i] >= 0;
    }
    for (int k = 0; k < n_brackets * (n_rungs > 0 ? n_rungs : 1) + 1; k++) ll_free(rec[k].v);
    ll_free(rec);
    ll_free(seen);
    if (n_cfg == 0) return;
    double *mean = ll_malloc((size_t)n_cfg, sizeof *mean);
    config_means(runs, n, n_cfg, mean);
    char *pruned = ll_calloc((size_t)n_cfg, 1);
    for (int i = 0; i < n; i++)
        if (out->stop_step[i] >= 0) pruned[runs[i].config] = 1;
    for (int c = 0; c < n_cfg; c++) {
        if (!isfinite(mean[c])) continue;
        if (out->best_true < 0 || better(mean[c], mean[out->best_true], p->higher_better)) out->best_true = c;
        if (!pruned[c] && (out->best_pruned < 0 || better(mean[c], mean[out->best_pruned], p->higher_better)))
            out->best_pruned = c;
    }
    if (out->best_true >= 0) out->best_true_value = mean[out->best_true];
    if (out->best_pruned >= 0) {
        out->best_pruned_value = mean[out->best_pruned];
        out->best_pruned_rank = 1;
        for (int c = 0; c < n_cfg; c++)
            if (better(mean[c], mean[out->best_pruned], p->higher_better)) out->best_pruned_rank++;
    }
    ll_free(pruned);
    ll_free(mean);
}

void es_replay_free(EsReplay *r) {
    ll_free(r->stop_step);
    memset(r, 0, sizeof *r);
}
