/* replay: a sweep's early-stopping policy applied, after the fact, to the curves of a sweep that ran
 * without it (`loralab sweep FILE --replay-early-stop`). Every done run of the plan, in the order the
 * runs ended, walks its stored validation curve and is decided against the runs before it, by the
 * same functions the online decisions use (es_replay -> es_asha_decide, es_median_decide), in the
 * brackets the online path uses (one per seed). So a sweep run online with one worker takes the
 * decisions the replay reports for its curves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "sweep.h"

typedef struct {
    RunRow *row;
    int point; /* index into the plan */
} ReplayRun;

static int cmp_ended(const void *a, const void *b) {
    const ReplayRun *x = a, *y = b;
    if (x->row->ended != y->row->ended) return x->row->ended < y->row->ended ? -1 : 1;
    return x->row->id < y->row->id ? -1 : x->row->id > y->row->id;
}

/* The label of a configuration: its point's assignments but the seeds ("adapter.r=8 train.lr=0.001"). */
static void config_label(const SweepPoint *pt, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < pt->n_assign && len + 1 < cap; i++) {
        const ConfigAssign *a = &pt->assign[i];
        if (strcmp(a->key, "train.seed") == 0 || strcmp(a->key, "adapter.seed") == 0) continue;
        char v[64];
        if (a->value.type == CFG_INT) snprintf(v, sizeof v, "%lld", (long long)a->value.i);
        else if (a->value.type == CFG_FLOAT) snprintf(v, sizeof v, "%g", a->value.f);
        else if (a->value.type == CFG_BOOL) snprintf(v, sizeof v, "%s", a->value.i ? "true" : "false");
        else if (a->value.type == CFG_STRING) snprintf(v, sizeof v, "%s", a->value.s);
        else snprintf(v, sizeof v, "(list)");
        len += (size_t)snprintf(out + len, cap - len, "%s%s=%s", len ? " " : "", a->key, v);
    }
    if (!out[0]) snprintf(out, cap, "(the one configuration)");
}

LLStatus sweep_replay_early_stop(const ConfigDoc *doc, const SweepPlan *plan, const SweepOptions *o, FILE *f,
                                 LLError *err) {
    const EarlyStopSpec *es = &doc->sweep.early_stop;
    if (es->type == ES_NONE)
        return ll_err(err, LL_ERR_CONFIG, "%s: --replay-early-stop needs a sweep.early_stop section (the policy to replay)",
                      doc->path);
    if (plan->n == 0) return ll_err(err, LL_ERR_CONFIG, "%s: the plan has no runs", doc->path);
    const char *name = plan->points[0].rc.name;
    char db[1100];
    if (o->db_path) snprintf(db, sizeof db, "%s", o->db_path);
    else snprintf(db, sizeof db, "results/%s.db", name);
    Store *s = NULL;
    RunRow *rows = NULL;
    int n_rows = 0;
    LLStatus st = store_open(db, 1, &s, err);
    if (!st) st = store_list_runs(s, name, &rows, &n_rows, err);
    if (st) {
        if (s) store_close(s);
        return st;
    }
    const char *metric;
    EarlyStopPolicy p = {es->type, 0, es->min_steps, es->reduction_factor, es->grace_runs, 0};
    es_metric(es->metric, &metric, &p.higher_better);
    /* configurations: plan points that differ only by seed share one id */
    int *cfg_of = ll_malloc((size_t)plan->n, sizeof *cfg_of), n_cfg = 0;
    char (*labels)[512] = ll_malloc((size_t)plan->n, sizeof *labels);
    for (int i = 0; i < plan->n; i++) {
        config_label(&plan->points[i], labels[i], sizeof labels[i]);
        cfg_of[i] = -1;
        for (int j = 0; j < i && cfg_of[i] < 0; j++)
            if (strcmp(labels[i], labels[j]) == 0) cfg_of[i] = cfg_of[j];
        if (cfg_of[i] < 0) cfg_of[i] = n_cfg++;
    }
    ReplayRun *rr = ll_malloc((size_t)(n_rows > 0 ? n_rows : 1), sizeof *rr);
    int n = 0, not_done = 0;
    for (int i = 0; i < n_rows; i++) {
        int pt = -1;
        for (int j = 0; j < plan->n && pt < 0; j++)
            if (strcmp(plan->points[j].rc.key, rows[i].key) == 0) pt = j;
        if (pt < 0) continue;
        if (strcmp(rows[i].status, "done") != 0) {
            not_done++;
            continue;
        }
        rr[n++] = (ReplayRun){&rows[i], pt};
    }
    qsort(rr, (size_t)n, sizeof *rr, cmp_ended);
    EsRun *runs = ll_calloc((size_t)(n > 0 ? n : 1), sizeof *runs);
    int **steps = ll_calloc((size_t)(n > 0 ? n : 1), sizeof *steps);
    double **vals = ll_calloc((size_t)(n > 0 ? n : 1), sizeof *vals);
    for (int i = 0; i < n && !st; i++) {
        const RunConfig *rc = &plan->points[rr[i].point].rc;
        int len = 0;
        st = store_get_metrics(s, rr[i].row->id, "eval", metric, &steps[i], &vals[i], &len, err);
        /* the curve's last value is the run's final metric (the last evaluation) */
        runs[i] = (EsRun){{steps[i], vals[i], len}, (int)(rc->train.seed % 1000000), cfg_of[rr[i].point],
                          len > 0 ? vals[i][len - 1] : NAN, rc->train.steps};
        if (p.max_steps < rc->train.steps) p.max_steps = rc->train.steps;
    }
    store_close(s);
    if (!st && n == 0)
        st = ll_err(err, LL_ERR_CONFIG, "%s: no done run of the plan in '%s' to replay (%d not done)", doc->path, db,
                    not_done);
    if (!st) {
        /* brackets: one per seed value, numbered densely */
        int64_t *seeds = ll_malloc((size_t)n, sizeof *seeds);
        int n_seeds = 0;
        for (int i = 0; i < n; i++) {
            int64_t sd = (int64_t)plan->points[rr[i].point].rc.train.seed, b = -1;
            for (int j = 0; j < n_seeds && b < 0; j++)
                if (seeds[j] == sd) b = j;
            if (b < 0) seeds[b = n_seeds++] = sd;
            runs[i].bracket = (int)b;
        }
        ll_free(seeds);
        EsReplay r;
        es_replay(&p, runs, n, &r);
        fprintf(f, "replay of %s (%s on %s from step %d, reduction factor %d, grace %d runs; brackets: seeds) on %d "
                   "done runs of %s, in the order they ended%s\n",
                es_type_name(p.type), es_type_name(p.type), es->metric, p.min_steps, p.reduction_factor, p.grace_runs,
                n, db, not_done ? " (runs not done are left out)" : "");
        fprintf(f, "  runs stopped: %d of %d\n", r.n_stopped, n);
        fprintf(f, "  training steps: %lld of %lld (%.1f%% saved, %.2fx fewer)\n", r.steps_run, r.steps_total,
                r.steps_total ? 100.0 * (double)(r.steps_total - r.steps_run) / (double)r.steps_total : 0.0,
                r.steps_run ? (double)r.steps_total / (double)r.steps_run : 0.0);
        const char *best_true = NULL, *best_pruned = NULL;
        for (int i = 0; i < plan->n; i++) {
            if (cfg_of[i] == r.best_true && !best_true) best_true = labels[i];
            if (cfg_of[i] == r.best_pruned && !best_pruned) best_pruned = labels[i];
        }
        fprintf(f, "  best configuration (mean final %s over its runs): %s, %.4f\n", es->metric,
                best_true ? best_true : "-", r.best_true_value);
        if (r.best_pruned < 0) fprintf(f, "  with pruning: no configuration ran every run to the end\n");
        else
            fprintf(f, "  with pruning: %s, %.4f: %s (rank %d of %d; gap %.4f)\n", best_pruned, r.best_pruned_value,
                    r.best_pruned == r.best_true ? "the same configuration" : "another configuration",
                    r.best_pruned_rank, n_cfg, fabs(r.best_pruned_value - r.best_true_value));
        for (int i = 0; i < n; i++)
            if (r.stop_step[i] >= 0)
                fprintf(f, "  would stop %s at step %d of %d (seed %lld): %s\n", rr[i].row->key, r.stop_step[i],
                        runs[i].total_steps, (long long)rr[i].row->seed, labels[rr[i].point]);
        es_replay_free(&r);
    }
    for (int i = 0; i < n; i++) free(steps[i]), free(vals[i]);
    ll_free(steps), ll_free(vals), ll_free(runs), ll_free(rr), ll_free(cfg_of), ll_free(labels);
    store_free_runs(rows, n_rows);
    return st;
}
