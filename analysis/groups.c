/* groups: the report's numbers. Runs -> configurations (groups) with their statistics, variant
 * names, curves averaged over seeds, the best of a column and the Pareto front (report.h says what
 * each means).
 *
 * Invariants
 *   - Pure functions of their arguments: no store, no files, no globals; the tests call them on
 *     rows built in memory.
 *   - Non-finite values never enter a mean: a NaN seed is left out and counted (n).
 *   - A group's config is the run's canonical config without the seed members, re-printed by cJSON
 *     with sorted keys, so two spellings of one number (1e-3, 0.001) and two member orders are one
 *     group; the order of groups is total (cmp_group_sort), so reports are reproducible.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---- statistics ------------------------------------------------------------------------------ */

void report_stat(const double *x, int n, ReportStat *out) {
    StatsSummary s;
    stats_summary(x, n, &s);
    out->mean = s.mean;
    out->sd = s.sd;
    out->n = s.n;
}

ReportMetric report_metric_of(const RunRow *rows, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].status, "done") == 0 && isfinite(rows[i].accuracy)) return REPORT_ACCURACY;
    return REPORT_EVAL_LOSS;
}

double report_run_val(const RunRow *r, ReportMetric m) {
    /* The best evaluation is the kept weights' when the run kept its best (a row of an older
     * database has no best: its last evaluation is what its weights scored). */
    const char *name = m == REPORT_ACCURACY ? "accuracy" : "loss";
    if (r->best_metric_name && strcmp(r->best_metric_name, name) == 0 && isfinite(r->best_metric) &&
        (r->kept_step < 0 || r->kept_step == r->best_step))
        return r->best_metric;
    return m == REPORT_ACCURACY ? r->accuracy : r->eval_loss;
}

double report_run_test(const RunRow *r, ReportMetric m) {
    return m == REPORT_ACCURACY ? r->test_accuracy : r->test_loss;
}

const char *report_metric_label(ReportMetric m) {
    return m == REPORT_ACCURACY ? "accuracy" : "eval loss";
}

int report_higher_better(ReportMetric m) { return m == REPORT_ACCURACY; }

int report_is_full(const char *method) { return method && strcmp(method, "full") == 0; }

/* Known methods first, in the order a paper lists them (the baseline, then by novelty). */
static int method_order(const char *m) {
    static const char *const known[] = {"full", "lora", "rslora", "dora", "pissa", "adalora", "vera"};
    for (int i = 0; i < 7; i++)
        if (strcmp(m, known[i]) == 0) return i;
    return 7;
}

static int cmp_method(const char *a, const char *b) {
    int ra = method_order(a), rb = method_order(b);
    if (ra != rb) return ra < rb ? -1 : 1;
    return strcmp(a, b);
}

int rp_cmp_double(double a, double b) { return a < b ? -1 : a > b ? 1 : 0; }
int rp_cmp_dbl(const void *a, const void *b) { return rp_cmp_double(*(const double *)a, *(const double *)b); }

/* The five fields a group has always been keyed by. */
static int cmp_fields(const ReportGroup *a, const ReportGroup *b) {
    int c = cmp_method(a->method, b->method);
    if (c) return c;
    if ((c = strcmp(a->targets, b->targets))) return c;
    if (a->r != b->r) return a->r < b->r ? -1 : 1;
    if ((c = rp_cmp_double(a->alpha, b->alpha))) return c;
    return rp_cmp_double(a->lr, b->lr);
}

/* ---- configurations: grouping key, order, variant -------------------------------------------- */

/* Members that only pick a seed: runs that differ in nothing else are seeds of one configuration.
 * (base.seed is not one of them: it picks the pretrained base model.) */
static int is_seed_key(const char *k) { return strcmp(k, "train.seed") == 0 || strcmp(k, "adapter.seed") == 0; }

static int cmp_item_key(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* cJSON returns NULL from its printers only when out of memory. */
static char *json_text(const cJSON *v) {
    char *t = cJSON_PrintUnformatted(v);
    LL_ASSERT(t != NULL);
    return t;
}

/* The config without its seed members, keys in byte order, as compact JSON (malloc'd): the
 * grouping key. Printing through cJSON also makes equal numbers one spelling (1e-3, 0.001). NULL
 * when json is NULL or not a JSON object. */
static char *seedless_config(const char *json) {
    if (!json) return NULL;
    cJSON *o = cJSON_Parse(json);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return NULL;
    }
    int n = cJSON_GetArraySize(o), k = 0;
    const cJSON **items = ll_malloc((size_t)(n > 0 ? n : 1), sizeof *items);
    for (const cJSON *it = o->child; it; it = it->next)
        if (it->string && !is_seed_key(it->string)) items[k++] = it;
    qsort(items, (size_t)k, sizeof *items, cmp_item_key);
    TextBuf b = {0};
    tb_puts(&b, "{");
    for (int i = 0; i < k; i++) {
        cJSON *key = cJSON_CreateString(items[i]->string);
        LL_ASSERT(key != NULL);
        char *ks = json_text(key), *vs = json_text(items[i]);
        tb_printf(&b, "%s%s:%s", i ? "," : "", ks, vs);
        cJSON_free(ks);
        cJSON_free(vs);
        cJSON_Delete(key);
    }
    tb_puts(&b, "}");
    free(items);
    cJSON_Delete(o);
    return b.p;
}

/* Numbers, then strings, then booleans, null, and arrays and objects (by their JSON text). */
static int json_rank(const cJSON *v) {
    return cJSON_IsNumber(v) ? 0 : cJSON_IsString(v) ? 1 : cJSON_IsBool(v) ? 2 : cJSON_IsNull(v) ? 3 : 4;
}

static int cmp_json_value(const cJSON *a, const cJSON *b) {
    int ra = json_rank(a), rb = json_rank(b);
    if (ra != rb) return ra < rb ? -1 : 1;
    if (ra == 0) return rp_cmp_double(a->valuedouble, b->valuedouble);
    if (ra == 1) return strcmp(a->valuestring, b->valuestring);
    if (ra == 2) return cJSON_IsTrue(a) - cJSON_IsTrue(b);
    if (ra == 3) return 0;
    char *ta = json_text(a), *tb = json_text(b);
    int c = strcmp(ta, tb);
    cJSON_free(ta);
    cJSON_free(tb);
    return c;
}

/* Order of two configs whose members are sorted by key (seedless_config's output): at the first
 * key where they differ, the one without the member comes first, else the smaller value. A
 * lexicographic order over (key -> value or absent) with "absent" the least value: total, so
 * qsort sees a consistent order. A missing config (NULL) comes first of all. */
static int cmp_config(const cJSON *a, const cJSON *b) {
    if (!a || !b) return (a != NULL) - (b != NULL);
    const cJSON *x = a->child, *y = b->child;
    for (; x || y; x = x->next, y = y->next) {
        if (!x) return -1;
        if (!y) return 1;
        int c = strcmp(x->string, y->string);
        if (c) return c < 0 ? 1 : -1; /* x's key is absent from b: b first */
        if ((c = cmp_json_value(x, y))) return c;
    }
    return 0;
}

typedef struct {
    ReportGroup g;
    cJSON *cfg; /* g.config parsed; NULL when g.config is NULL */
} GroupSort;

static int cmp_group_sort(const void *pa, const void *pb) {
    const GroupSort *a = pa, *b = pb;
    int c = cmp_fields(&a->g, &b->g);
    if (c) return c;
    if ((c = cmp_config(a->cfg, b->cfg))) return c;
    /* Distinct texts never compare equal above; this only keeps qsort deterministic regardless. */
    return strcmp(a->g.config ? a->g.config : "", b->g.config ? b->g.config : "");
}

/* "train.steps" -> "steps"; other keys have no short form (base.*, task.* name other phases). */
static const char *short_key(const char *k) {
    if (strncmp(k, "train.", 6) == 0) return k + 6;
    if (strncmp(k, "adapter.", 8) == 0) return k + 8;
    return k;
}

/* The key after its first dotted segment ("base.steps" -> "steps"), or the key itself. */
static const char *key_tail(const char *k) {
    const char *dot = strchr(k, '.');
    return dot ? dot + 1 : k;
}

/* How a member absent from a canonical config reads. The config leaves out train.precision at
 * fp32 (experiments/config.c, key_relevant: older run keys stay valid); any other key a config
 * of the same method lacks has no default known here. */
static const char *absent_value(const char *key) {
    return strcmp(key, "train.precision") == 0 ? "fp32" : "default";
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The members of a set of configs (the seedless configs of some groups; NULL entries are groups
 * without a config and are skipped): every key of any of them, sorted and unique, and whether
 * its value differs among them (a member absent from some counts as differing). */
typedef struct {
    const char **keys;
    int n;
    int *differs;
} KeySet;

static void keyset_build(cJSON *const *cfg, int n, KeySet *ks) {
    int total = 0;
    for (int i = 0; i < n; i++)
        if (cfg[i]) total += cJSON_GetArraySize(cfg[i]);
    ks->keys = ll_malloc((size_t)(total > 0 ? total : 1), sizeof *ks->keys);
    int nk = 0;
    for (int i = 0; i < n; i++)
        if (cfg[i])
            for (const cJSON *it = cfg[i]->child; it; it = it->next) ks->keys[nk++] = it->string;
    qsort(ks->keys, (size_t)nk, sizeof *ks->keys, cmp_str_ptr);
    int u = 0;
    for (int i = 0; i < nk; i++)
        if (u == 0 || strcmp(ks->keys[u - 1], ks->keys[i]) != 0) ks->keys[u++] = ks->keys[i];
    ks->n = u;
    ks->differs = ll_calloc((size_t)(u > 0 ? u : 1), sizeof *ks->differs);
    for (int j = 0; j < u; j++) {
        const cJSON *first = NULL;
        int differs = 0, seen = 0;
        for (int i = 0; i < n && !differs; i++) {
            if (!cfg[i]) continue;
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(cfg[i], ks->keys[j]);
            if (!m) differs = 1;
            else if (!seen++) first = m;
            else differs = cmp_json_value(first, m) != 0;
        }
        ks->differs[j] = differs;
    }
}

static void keyset_free(KeySet *ks) {
    free(ks->keys);
    free(ks->differs);
}

/* The name key j is shown by: the short name only when no other key of the set reads the same. */
static const char *keyset_name(const KeySet *ks, int j) {
    const char *name = short_key(ks->keys[j]);
    for (int q = 0; q < ks->n && name != ks->keys[j]; q++)
        if (q != j && strcmp(key_tail(ks->keys[q]), name) == 0) name = ks->keys[j];
    return name;
}

/* "name=value" of member key (m NULL: absent, its default) after a ", " when b holds text. */
static void put_member(TextBuf *b, const char *name, const char *key, const cJSON *m) {
    tb_printf(b, "%s%s=", b->len ? ", " : "", name);
    if (!m) {
        tb_puts(b, absent_value(key));
    } else if (cJSON_IsString(m)) {
        tb_puts(b, m->valuestring);
    } else {
        char *t = json_text(m);
        tb_puts(b, t);
        cJSON_free(t);
    }
}

/* Variants of the sibling groups s[0..n) (equal five fields, n >= 2): the members whose values
 * are not the same in every config, as "name=value" in key order. */
static void name_variants(GroupSort *s, int n) {
    cJSON **cfg = ll_malloc((size_t)n, sizeof *cfg);
    for (int i = 0; i < n; i++) cfg[i] = s[i].cfg;
    KeySet ks;
    keyset_build(cfg, n, &ks);
    TextBuf *v = ll_calloc((size_t)n, sizeof *v);
    for (int j = 0; j < ks.n; j++) {
        if (!ks.differs[j]) continue;
        const char *name = keyset_name(&ks, j);
        for (int i = 0; i < n; i++)
            if (s[i].cfg) put_member(&v[i], name, ks.keys[j], cJSON_GetObjectItemCaseSensitive(s[i].cfg, ks.keys[j]));
    }
    for (int i = 0; i < n; i++) {
        free(s[i].g.variant);
        s[i].g.variant = ll_strdup(!s[i].cfg ? "config unknown" : v[i].p ? v[i].p : "");
        tb_free(&v[i]);
    }
    free(v);
    free(cfg);
    keyset_free(&ks);
}

/* Same five fields and the same seedless config (both absent counts as the same). */
static int same_config(const ReportGroup *g, const RunRow *r, const char *config) {
    const char *t = r->targets ? r->targets : "";
    const char *m = r->method ? r->method : "";
    if (!(strcmp(g->method, m) == 0 && strcmp(g->targets, t) == 0 && g->r == r->r && g->alpha == r->alpha &&
          g->lr == r->lr))
        return 0;
    if (!g->config || !config) return !g->config && !config;
    return strcmp(g->config, config) == 0;
}

/* Sorts the groups (see report_aggregate) and names their variants. */
static void sort_and_name(ReportGroup *g, int ng) {
    GroupSort *s = ll_malloc((size_t)ng, sizeof *s);
    for (int k = 0; k < ng; k++) {
        s[k].g = g[k];
        s[k].cfg = g[k].config ? cJSON_Parse(g[k].config) : NULL;
        /* seedless_config printed it, so it parses back (cJSON fails only out of memory). */
        LL_ASSERT(!g[k].config || s[k].cfg != NULL);
    }
    qsort(s, (size_t)ng, sizeof *s, cmp_group_sort);
    for (int a = 0; a < ng;) {
        int b = a + 1;
        while (b < ng && cmp_fields(&s[a].g, &s[b].g) == 0) b++;
        if (b - a > 1) name_variants(s + a, b - a);
        a = b;
    }
    for (int k = 0; k < ng; k++) {
        g[k] = s[k].g;
        cJSON_Delete(s[k].cfg);
    }
    free(s);
}

int report_aggregate(const RunRow *rows, int n, ReportMetric metric, ReportGroup **out) {
    *out = NULL;
    ReportGroup *g = NULL;
    int ng = 0;
    int *owner = ll_malloc((size_t)(n > 0 ? n : 1), sizeof *owner);
    for (int i = 0; i < n; i++) {
        owner[i] = -1;
        int done = strcmp(rows[i].status, "done") == 0;
        if (!done && strcmp(rows[i].status, "diverged") != 0) continue;
        char *config = seedless_config(rows[i].config_json);
        int k = 0;
        while (k < ng && !same_config(&g[k], &rows[i], config)) k++;
        if (k == ng) {
            g = ll_realloc(g, (size_t)ng + 1, sizeof *g);
            memset(&g[k], 0, sizeof g[k]);
            g[k].method = ll_strdup(rows[i].method ? rows[i].method : "");
            g[k].targets = ll_strdup(rows[i].targets ? rows[i].targets : "");
            g[k].r = rows[i].r;
            g[k].alpha = rows[i].alpha;
            g[k].lr = rows[i].lr;
            g[k].config = config;
            g[k].variant = ll_strdup("");
            config = NULL;
            ng++;
        }
        free(config);
        if (done) {
            owner[i] = k;
            g[k].n_runs++;
        } else {
            g[k].n_diverged++;
        }
    }
    double *x = ll_malloc((size_t)(n > 0 ? n : 1), 7 * sizeof *x);
    for (int k = 0; k < ng; k++) {
        ReportGroup *gk = &g[k];
        int m = gk->n_runs;
        gk->run_ids = ll_malloc((size_t)(m > 0 ? m : 1), sizeof *gk->run_ids);
        gk->seeds = ll_malloc((size_t)(m > 0 ? m : 1), sizeof *gk->seeds);
        const RunRow **mine = ll_malloc((size_t)(m > 0 ? m : 1), sizeof *mine);
        int j = 0;
        for (int i = 0; i < n; i++)
            if (owner[i] == k) mine[j++] = &rows[i];
        /* Insertion sort by seed (then id): a group has a handful of seeds. */
        for (int a = 1; a < m; a++)
            for (int b = a; b > 0 && (mine[b]->seed < mine[b - 1]->seed ||
                                      (mine[b]->seed == mine[b - 1]->seed && mine[b]->id < mine[b - 1]->id));
                 b--) {
                const RunRow *t = mine[b];
                mine[b] = mine[b - 1];
                mine[b - 1] = t;
            }
        double *xm = x, *xt = x + m, *xw = x + 2 * m, *xp = x + 3 * m, *xn = x + 4 * m, *xc = x + 5 * m,
               *xs = x + 6 * m;
        for (int a = 0; a < m; a++) {
            const RunRow *r = mine[a];
            gk->run_ids[a] = r->id;
            gk->seeds[a] = r->seed;
            xm[a] = report_run_val(r, metric);
            xs[a] = report_run_test(r, metric);
            xt[a] = r->train_loss;
            xw[a] = r->wall_s;
            /* Negative integers mean "unknown" in the store. */
            xp[a] = r->peak_mem >= 0 ? (double)r->peak_mem : NAN;
            xn[a] = r->trainable >= 0 ? (double)r->trainable : NAN;
            xc[a] = r->trainable >= 0 && r->total > 0 ? 100.0 * (double)r->trainable / (double)r->total : NAN;
        }
        report_stat(xm, m, &gk->metric);
        stats_summary(xm, m, &gk->val);
        stats_summary(xs, m, &gk->test);
        report_stat(xt, m, &gk->train_loss);
        report_stat(xw, m, &gk->wall_s);
        report_stat(xp, m, &gk->peak_mem);
        report_stat(xn, m, &gk->trainable);
        report_stat(xc, m, &gk->trainable_pct);
        free(mine);
    }
    free(x);
    free(owner);
    if (ng) sort_and_name(g, ng);
    *out = g;
    return ng;
}

void report_free_groups(ReportGroup *g, int n) {
    if (!g) return;
    for (int i = 0; i < n; i++) {
        free(g[i].method);
        free(g[i].targets);
        free(g[i].config);
        free(g[i].variant);
        free(g[i].run_ids);
        free(g[i].seeds);
    }
    free(g);
}

int rp_better(double a, double b, int higher_better) { return higher_better ? a > b : a < b; }

int report_best(const double *v, int n, int higher_better) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]) && (best < 0 || rp_better(v[i], v[best], higher_better))) best = i;
    return best;
}

int report_pareto(const double *cost, const double *value, int n, int higher_better, int *on_front) {
    int count = 0;
    for (int i = 0; i < n; i++) {
        on_front[i] = 0;
        if (!isfinite(cost[i]) || !isfinite(value[i])) continue;
        int dominated = 0;
        for (int j = 0; j < n && !dominated; j++) {
            if (j == i || !isfinite(cost[j]) || !isfinite(value[j])) continue;
            int no_worse = cost[j] <= cost[i] && !rp_better(value[i], value[j], higher_better);
            int strictly = cost[j] < cost[i] || rp_better(value[j], value[i], higher_better);
            dominated = no_worse && strictly;
        }
        on_front[i] = !dominated;
        count += on_front[i];
    }
    return count;
}

int rp_cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Index of step s in an ascending array, or -1. */
static int find_step(const int *steps, int len, int s) {
    int lo = 0, hi = len - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (steps[mid] == s) return mid;
        if (steps[mid] < s) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void report_curve(int k, const int *const *steps, const double *const *values, const int *lens,
                  ReportCurve *out) {
    memset(out, 0, sizeof *out);
    size_t total = 0;
    for (int r = 0; r < k; r++) total += (size_t)lens[r];
    int *all = ll_malloc(total ? total : 1, sizeof *all);
    size_t m = 0;
    for (int r = 0; r < k; r++)
        for (int i = 0; i < lens[r]; i++) all[m++] = steps[r][i];
    qsort(all, m, sizeof *all, rp_cmp_int);
    int u = 0;
    for (size_t i = 0; i < m; i++)
        if (u == 0 || all[u - 1] != all[i]) all[u++] = all[i];
    out->len = u;
    out->steps = ll_malloc((size_t)(u ? u : 1), sizeof *out->steps);
    out->n = ll_malloc((size_t)(u ? u : 1), sizeof *out->n);
    out->mean = ll_malloc((size_t)(u ? u : 1), sizeof *out->mean);
    out->sd = ll_malloc((size_t)(u ? u : 1), sizeof *out->sd);
    double *x = ll_malloc((size_t)(k ? k : 1), sizeof *x);
    for (int i = 0; i < u; i++) {
        for (int r = 0; r < k; r++) {
            int j = find_step(steps[r], lens[r], all[i]);
            x[r] = j >= 0 ? values[r][j] : NAN;
        }
        ReportStat st;
        report_stat(x, k, &st);
        out->steps[i] = all[i];
        out->n[i] = st.n;
        out->mean[i] = st.mean;
        out->sd[i] = st.sd;
    }
    free(x);
    free(all);
}

void report_free_curve(ReportCurve *c) {
    free(c->steps);
    free(c->n);
    free(c->mean);
    free(c->sd);
    memset(c, 0, sizeof *c);
}

/* ---- values of a configuration --------------------------------------------------------------- */

char *report_group_value(const ReportGroup *g, const char *key) {
    if (!g->config) return ll_strdup("unknown");
    cJSON *o = cJSON_Parse(g->config);
    LL_ASSERT(o != NULL); /* seedless_config printed it */
    TextBuf b = {0};
    put_member(&b, "", key, cJSON_GetObjectItemCaseSensitive(o, key));
    cJSON_Delete(o);
    char *out = ll_strdup(b.p + 1); /* past the "=" */
    tb_free(&b);
    return out;
}

/* The keys whose values the tables show in columns of their own. */
static int is_field_key(const char *k) {
    return strcmp(k, "adapter.method") == 0 || strcmp(k, "adapter.targets") == 0 || strcmp(k, "adapter.r") == 0 ||
           strcmp(k, "adapter.alpha") == 0 || strcmp(k, "train.lr") == 0;
}

char *rp_differing(const ReportGroup *g, const int *idx, int k, int which, const char *also) {
    cJSON **cfg = ll_calloc((size_t)(k > 0 ? k : 1), sizeof *cfg);
    for (int i = 0; i < k; i++) cfg[i] = g[idx[i]].config ? cJSON_Parse(g[idx[i]].config) : NULL;
    KeySet ks;
    keyset_build(cfg, k, &ks);
    TextBuf b = {0};
    for (int j = 0; j < ks.n && cfg[which]; j++) {
        const char *key = ks.keys[j];
        if (!ks.differs[j] || is_seed_key(key) || is_field_key(key) || (also && strcmp(key, also) == 0)) continue;
        put_member(&b, keyset_name(&ks, j), key, cJSON_GetObjectItemCaseSensitive(cfg[which], key));
    }
    keyset_free(&ks); /* before the configs: its keys point into them */
    for (int i = 0; i < k; i++) cJSON_Delete(cfg[i]);
    free(cfg);
    char *out = ll_strdup(b.p ? b.p : "");
    tb_free(&b);
    return out;
}

void rp_task_label(const char *task_data, char *out, size_t cap) {
    size_t n = task_data ? strlen(task_data) : 0;
    while (n > 1 && task_data[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && task_data[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), task_data ? task_data + b : "");
}

char *rp_config_task(const char *config_json) {
    cJSON *o = config_json ? cJSON_Parse(config_json) : NULL;
    const cJSON *t = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "task.data") : NULL;
    char *out = ll_strdup(cJSON_IsString(t) ? t->valuestring : "");
    cJSON_Delete(o);
    return out;
}
