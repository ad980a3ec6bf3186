/* report: figures, tables and an HTML index from a results database (see report.h for what is
 * written and why).
 *
 * Invariants
 *   - The database is opened read-only and read only through the store's query functions; the
 *     report never changes it, so it is safe to run while a sweep is writing.
 *   - Every figure is NAME.gp + NAME.dat, and the .gp reads and writes only files of its own stem
 *     (the database path appears in a provenance comment only): the folder can be moved or
 *     zipped and re-rendered by hand. Scripts start with `reset` and end with
 *     `unset output` (an unclosed PDF is incomplete; state left by one plot leaks into the next).
 *   - Each rendering iteration of a script starts with `reset` (which keeps terminal, output and
 *     line types), so the three formats are drawn from identical state.
 *   - Colours: the Okabe-Ito palette (Okabe & Ito 2008; Wong 2011, Nature Methods 8:441), one
 *     colour per method in every figure, full fine-tuning always black; point types also differ
 *     per method so figures survive greyscale printing. Heatmaps use a viridis-like palette
 *     defined by hand (gnuplot 5.4 has no `set palette viridis`), monotone in lightness.
 *   - gnuplot is forked only after the Store is closed: no SQLite connection crosses fork().
 *   - Statistics use only `done` runs; a figure whose data is absent is left out with a reason,
 *     never drawn empty and never an error.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report.h"
#include "analysis/gnuplot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "experiments/runs_export.h"

extern char **environ;

static void path_join(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- statistics ------------------------------------------------------------------------------ */

void report_stat(const double *x, int n, ReportStat *out) {
    double sum = 0.0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) {
            sum += x[i];
            k++;
        }
    out->n = k;
    out->mean = k ? sum / k : NAN;
    out->sd = NAN;
    if (k >= 2) {
        /* Two passes: the textbook one-pass formula loses digits when the mean is large. */
        double ss = 0.0;
        for (int i = 0; i < n; i++)
            if (isfinite(x[i])) {
                double d = x[i] - out->mean;
                ss += d * d;
            }
        out->sd = sqrt(ss / (k - 1));
    }
}

ReportMetric report_metric_of(const RunRow *rows, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].status, "done") == 0 && isfinite(rows[i].accuracy)) return REPORT_ACCURACY;
    return REPORT_EVAL_LOSS;
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

static int cmp_double(double a, double b) { return a < b ? -1 : a > b ? 1 : 0; }

/* The five fields a group has always been keyed by. */
static int cmp_fields(const ReportGroup *a, const ReportGroup *b) {
    int c = cmp_method(a->method, b->method);
    if (c) return c;
    if ((c = strcmp(a->targets, b->targets))) return c;
    if (a->r != b->r) return a->r < b->r ? -1 : 1;
    if ((c = cmp_double(a->alpha, b->alpha))) return c;
    return cmp_double(a->lr, b->lr);
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
    if (ra == 0) return cmp_double(a->valuedouble, b->valuedouble);
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

/* Variants of the sibling groups s[0..n) (equal five fields, n >= 2): the members whose values
 * are not the same in every config, as "name=value" in key order. */
static void name_variants(GroupSort *s, int n) {
    int total = 0;
    for (int i = 0; i < n; i++)
        if (s[i].cfg) total += cJSON_GetArraySize(s[i].cfg);
    const char **keys = ll_malloc((size_t)(total > 0 ? total : 1), sizeof *keys);
    int nk = 0;
    for (int i = 0; i < n; i++)
        if (s[i].cfg)
            for (const cJSON *it = s[i].cfg->child; it; it = it->next) keys[nk++] = it->string;
    qsort(keys, (size_t)nk, sizeof *keys, cmp_str_ptr);
    int u = 0;
    for (int i = 0; i < nk; i++)
        if (u == 0 || strcmp(keys[u - 1], keys[i]) != 0) keys[u++] = keys[i];
    nk = u;
    TextBuf *v = ll_calloc((size_t)n, sizeof *v);
    for (int j = 0; j < nk; j++) {
        const cJSON *first = NULL;
        int differs = 0, seen = 0;
        for (int i = 0; i < n && !differs; i++) {
            if (!s[i].cfg) continue;
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(s[i].cfg, keys[j]);
            if (!m) differs = 1;
            else if (!seen++) first = m;
            else differs = cmp_json_value(first, m) != 0;
        }
        if (!differs) continue;
        /* The short name only when no other key of these configs reads the same. */
        const char *name = short_key(keys[j]);
        for (int q = 0; q < nk && name != keys[j]; q++)
            if (q != j && strcmp(key_tail(keys[q]), name) == 0) name = keys[j];
        for (int i = 0; i < n; i++) {
            if (!s[i].cfg) continue;
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(s[i].cfg, keys[j]);
            tb_printf(&v[i], "%s%s=", v[i].len ? ", " : "", name);
            if (!m) {
                tb_puts(&v[i], absent_value(keys[j]));
            } else if (cJSON_IsString(m)) {
                tb_puts(&v[i], m->valuestring);
            } else {
                char *t = json_text(m);
                tb_puts(&v[i], t);
                cJSON_free(t);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        free(s[i].g.variant);
        s[i].g.variant = ll_strdup(!s[i].cfg ? "config unknown" : v[i].p ? v[i].p : "");
        tb_free(&v[i]);
    }
    free(v);
    free(keys);
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
    double *x = ll_malloc((size_t)(n > 0 ? n : 1), 6 * sizeof *x);
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
        double *xm = x, *xt = x + m, *xw = x + 2 * m, *xp = x + 3 * m, *xn = x + 4 * m, *xc = x + 5 * m;
        for (int a = 0; a < m; a++) {
            const RunRow *r = mine[a];
            gk->run_ids[a] = r->id;
            gk->seeds[a] = r->seed;
            xm[a] = metric == REPORT_ACCURACY ? r->accuracy : r->eval_loss;
            xt[a] = r->train_loss;
            xw[a] = r->wall_s;
            /* Negative integers mean "unknown" in the store. */
            xp[a] = r->peak_mem >= 0 ? (double)r->peak_mem : NAN;
            xn[a] = r->trainable >= 0 ? (double)r->trainable : NAN;
            xc[a] = r->trainable >= 0 && r->total > 0 ? 100.0 * (double)r->trainable / (double)r->total : NAN;
        }
        report_stat(xm, m, &gk->metric);
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

static int better(double a, double b, int higher_better) { return higher_better ? a > b : a < b; }

int report_best(const double *v, int n, int higher_better) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]) && (best < 0 || better(v[i], v[best], higher_better))) best = i;
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
            int no_worse = cost[j] <= cost[i] && !better(value[i], value[j], higher_better);
            int strictly = cost[j] < cost[i] || better(value[j], value[i], higher_better);
            dominated = no_worse && strictly;
        }
        on_front[i] = !dominated;
        count += on_front[i];
    }
    return count;
}

static int cmp_int(const void *a, const void *b) {
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
    qsort(all, m, sizeof *all, cmp_int);
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

/* ---- text helpers ---------------------------------------------------------------------------- */

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

/* A method as people write it. */
static const char *method_label(const char *m) {
    if (strcmp(m, "full") == 0) return "full FT";
    if (strcmp(m, "lora") == 0) return "LoRA";
    if (strcmp(m, "adalora") == 0) return "AdaLoRA";
    if (strcmp(m, "vera") == 0) return "VeRA";
    if (strcmp(m, "dora") == 0) return "DoRA";
    if (strcmp(m, "rslora") == 0) return "rsLoRA";
    if (strcmp(m, "pissa") == 0) return "PiSSA";
    return m;
}

static void fmt_count(char *out, size_t cap, double v) {
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

static void fmt_time(char *out, size_t cap, double s) {
    if (!isfinite(s)) snprintf(out, cap, "-");
    else if (s < 120) snprintf(out, cap, "%.1f s", s);
    else if (s < 7200) snprintf(out, cap, "%.1f min", s / 60);
    else snprintf(out, cap, "%.2f h", s / 3600);
}

static void fmt_mem(char *out, size_t cap, double bytes) {
    double mib = bytes / (1024.0 * 1024.0);
    if (!isfinite(bytes)) snprintf(out, cap, "-");
    else if (mib < 1024) snprintf(out, cap, "%.1f MiB", mib);
    else snprintf(out, cap, "%.2f GiB", mib / 1024);
}

/* "LoRA q,v r=8 α=16 lr=0.001 (n=2)", with the variant before the count when there is one
 * ("... lr=0.001 dropout=0.1 (n=2)"); the method is left out inside a per-method figure. */
static void group_label(const ReportGroup *g, int with_method, char *out, size_t cap) {
    char t[128], v[160] = "";
    report_short_targets(g->targets, t, sizeof t);
    if (g->variant && *g->variant) snprintf(v, sizeof v, " %s", g->variant);
    if (report_is_full(g->method))
        snprintf(out, cap, "%s%slr=%g%s (n=%d)", with_method ? method_label(g->method) : "",
                 with_method ? " " : "", g->lr, v, g->n_runs);
    else if (g->alpha > 0)
        snprintf(out, cap, "%s%s%s r=%d α=%g lr=%g%s (n=%d)", with_method ? method_label(g->method) : "",
                 with_method ? " " : "", t, g->r, g->alpha, g->lr, v, g->n_runs);
    else /* no alpha (VeRA): the store records 0 */
        snprintf(out, cap, "%s%s%s r=%d lr=%g%s (n=%d)", with_method ? method_label(g->method) : "",
                 with_method ? " " : "", t, g->r, g->lr, v, g->n_runs);
}

/* ---- the report's state ---------------------------------------------------------------------- */

typedef struct {
    const char *db, *sweep, *dir;
    Store *store;
    ReportGroup *g;
    int ng;
    ReportMetric metric;
    int hb;              /* higher is better */
    char gnuplot[1024];  /* full path, "" when not found */
    ReportSummary *sum;
    const char *methods[64]; /* distinct methods of the groups, in group order */
    int n_methods;
    int has_variant;     /* some group has a variant: the tables get a "variant" column */
    LLStatus render_rc;  /* first gnuplot failure (rendering goes on for the other figures) */
    LLError render_err;
} Ctx;

/* Okabe-Ito colours in the order used for methods (yellow last: faint on white); black is kept
 * for full fine-tuning. Point and dash types vary with the colour. */
static const char *const OKABE_ITO[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                        "#E69F00", "#56B4E9", "#F0E442", "#000000"};
#define LT_FULL 8
#define N_SERIES_LT 7

/* Line type of a method: full -> black; others by their order among the non-full methods. */
static int method_lt(const Ctx *c, const char *method) {
    if (report_is_full(method)) return LT_FULL;
    int k = 0;
    for (int i = 0; i < c->n_methods; i++) {
        if (strcmp(c->methods[i], method) == 0) return k % N_SERIES_LT + 1;
        if (!report_is_full(c->methods[i])) k++;
    }
    return 1;
}

static double gmetric(const Ctx *c, int i) { return c->g[i].metric.mean; }

/* Best of the listed groups by mean metric (the first of equals); -1 when none is finite. */
static int best_group(const Ctx *c, const int *idx, int k) {
    int best = -1;
    for (int i = 0; i < k; i++) {
        double v = gmetric(c, idx[i]);
        if (isfinite(v) && (best < 0 || better(v, gmetric(c, best), c->hb))) best = idx[i];
    }
    return best;
}

/* ---- figures: bookkeeping, script prologue, rendering ---------------------------------------- */

/* A figure named stem (a file stem, gp_stem_ok); its title and notes are kept free of control
 * characters, since they are printed to a terminal too. */
static ReportFigure *fig_new(Ctx *c, const char *name, const char *title) {
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
static void fig_stem(const Ctx *c, const char *prefix, const char *value, char *out, size_t cap) {
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

static void fig_note(ReportFigure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fig_note(ReportFigure *f, const char *fmt, ...) {
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

/* Left out: the reason is kept, and files of an earlier report under that name are removed so
 * the folder never shows a figure the index says is absent. */
static void fig_skip(Ctx *c, ReportFigure *f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fig_skip(Ctx *c, ReportFigure *f, const char *fmt, ...) {
    f->skipped = 1;
    f->note[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->note, sizeof f->note, fmt, ap);
    va_end(ap);
    esc_clean(f->note);
    for (size_t i = 0; i < sizeof FIG_EXT / sizeof FIG_EXT[0]; i++) {
        char name[128], path[2048];
        snprintf(name, sizeof name, "%s.%s", f->name, FIG_EXT[i]);
        path_join(path, sizeof path, c->dir, name);
        unlink(path);
    }
}

/* Script header: provenance, line types, and the loop over output formats (gnuplot.h). */
static void gp_begin(const Ctx *c, TextBuf *b, const ReportFigure *f, double w_in, double h_in) {
    gp_comment(b, "%s: %s", f->name, f->title);
    gp_comment(b, "Generated by `loralab report` from the results database %s (sweep: %s).", c->db,
               c->sweep ? c->sweep : "all");
    gp_script_head(b, f->name);
    tb_puts(b, "# Okabe-Ito colours (colour-blind safe); point and dash types differ too.\n");
    for (int i = 0; i < 8; i++)
        tb_printf(b, "set linetype %d lc rgb '%s' lw 1.5 pt %d ps 1.0 dt %d\n", i + 1, OKABE_ITO[i],
                  (int[]){7, 5, 9, 11, 13, 15, 4, 6}[i], i % 5 + 1);
    gp_formats_begin(b, f->name, w_in, h_in);
    tb_puts(b, "    set grid lc rgb '#dddddd' lw 0.8\n    set tics out nomirror\n    set border 3\n");
}

static void dat_header(const Ctx *c, TextBuf *d, const ReportFigure *f) {
    gp_comment(d, "%s.dat: data of %s.gp (%s)", f->name, f->name, f->title);
    gp_comment(d, "from %s, sweep %s; metric: %s; blocks are separated by two blank lines (gnuplot `index`)", c->db,
               c->sweep ? c->sweep : "all", report_metric_label(c->metric));
}

/* Ends a data block so the next one is a new gnuplot `index`. */
static void dat_next_block(TextBuf *d) { tb_puts(d, "\n\n"); }

/* Saves NAME.gp and NAME.dat; rendering comes after the database is closed (render_all). */
static LLStatus fig_finish(Ctx *c, ReportFigure *f, TextBuf *gp, TextBuf *dat, LLError *err) {
    char name[128];
    snprintf(name, sizeof name, "%s.dat", f->name);
    LLStatus st = tb_save(dat, c->dir, name, err);
    snprintf(name, sizeof name, "%s.gp", f->name);
    if (!st) st = tb_save(gp, c->dir, name, err);
    tb_free(gp);
    tb_free(dat);
    return st;
}

/* Runs gnuplot on every written figure. A failure is noted on its figure and the first one is
 * kept for the caller; the other figures are still rendered. Called with the Store closed, so no
 * SQLite connection is open across fork(). */
static void render_all(Ctx *c) {
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
            fig_note(f, "NOT RENDERED: %s", e.msg);
            if (c->render_rc == LL_OK) {
                c->render_rc = e.code;
                c->render_err = e;
            }
        }
    }
}

/* Single-panel figures keep their key right of the plot, so it never hides a point. */
#define KEY_OUTSIDE "    set key outside right top vertical Left reverse box lc rgb '#bbbbbb' samplen 2.5 spacing 1.15\n"

/* viridis (van der Walt & Smith 2015) by its anchor colours: perceptually uniform and readable
 * by colour-blind viewers; gnuplot 5.4 lacks the named palette. */
static void gp_viridis(TextBuf *b) {
    tb_puts(b, "    set palette defined (0 '#440154', 0.25 '#3B528B', 0.5 '#21908C', 0.75 '#5DC863', "
                "1 '#FDE725')\n");
}

/* Text colour for a heatmap cell: black on the light end of viridis, white on the dark end. */
static const char *cell_text_colour(double v, double lo, double hi) {
    double t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    return t > 0.55 ? "0x000000" : "0xffffff";
}

/* ---- figure: learning curves ----------------------------------------------------------------- */

/* Loss curves of one group, averaged over its seeds. */
static LLStatus group_curve(Ctx *c, const ReportGroup *g, const char *split, ReportCurve *out, LLError *err) {
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
    dat_next_block(d);
    return band;
}

static int curve_points(const ReportCurve *cv) {
    int n = 0;
    for (int i = 0; i < cv->len; i++) n += isfinite(cv->mean[i]);
    return n;
}

/* One or two panels (train loss, eval loss), a line per listed group. */
static LLStatus fig_curves(Ctx *c, const char *name, const char *title, const int *gi, int k, int with_method,
                           LLError *err) {
    ReportFigure *f = fig_new(c, name, title);
    TextBuf gp = {0}, d = {0};
    dat_header(c, &d, f);
    int n_train = 0, n_eval = 0, any_band = 0;
    int *has_train = ll_calloc((size_t)k, sizeof *has_train), *has_eval = ll_calloc((size_t)k, sizeof *has_eval);
    int *band_train = ll_calloc((size_t)k, sizeof *band_train), *band_eval = ll_calloc((size_t)k, sizeof *band_eval);
    char **labels = ll_calloc((size_t)k, sizeof *labels);
    LLStatus st = LL_OK;
    for (int i = 0; i < k && !st; i++) {
        ReportCurve tr = {0}, ev = {0};
        char label[256];
        group_label(&c->g[gi[i]], with_method, label, sizeof label);
        labels[i] = ll_strdup(label);
        st = group_curve(c, &c->g[gi[i]], "train", &tr, err);
        if (!st) st = group_curve(c, &c->g[gi[i]], "eval", &ev, err);
        if (!st) {
            has_train[i] = curve_points(&tr) > 0;
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
        fig_skip(c, f, "no loss curves were recorded for these runs");
        tb_free(&gp);
        tb_free(&d);
    } else if (!st) {
        int panels = (n_train > 0) + (n_eval > 0);
        /* The key sits under the panels, two columns, so it never hides a curve: panel margins
         * are fixed in screen units and the figure grows with the number of key rows. */
        int key_rows = (k + 1) / 2;
        double w = panels == 2 ? 10.0 : 7.0, h = 3.8 + 0.2 * key_rows;
        double bottom = (0.85 + 0.2 * key_rows) / h, top = 1.0 - 0.7 / h;
        gp_begin(c, &gp, f, w, h);
        tb_printf(&gp, "    set multiplot layout 1,%d margins %.3f,%.3f,%.3f,%.3f spacing %.3f title ", panels,
                  0.75 / w, 1.0 - 0.25 / w, bottom, top, 0.9 / w);
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
                                "box lc rgb '#bbbbbb' samplen 2.5 spacing 1.15 width 1\n",
                          (0.2 + 0.2 * key_rows) / h, key_rows);
            tb_puts(&gp, "    plot ");
            int first = 1;
            for (int i = 0; i < k; i++) {
                int lt = with_method ? method_lt(c, c->g[gi[i]].method) : i % N_SERIES_LT + 1;
                int block = 2 * i + p;
                if (!has[i]) {
                    /* No data in this panel, but the key still lists the series. */
                    if (p == last && (has_train[i] || has_eval[i])) {
                        tb_printf(&gp, "%skeyentry with linespoints lt %d dt 1 title ", first ? "" : ", \\\n         ",
                                  lt);
                        gp_quote(&gp, labels[i]);
                        first = 0;
                    }
                    continue;
                }
                if (band[i]) {
                    tb_printf(&gp, "%s'%s.dat' index %d using 1:($2-$3):($2+$3) with filledcurves "
                                    "fs transparent solid 0.2 noborder lc rgb '%s' notitle",
                              first ? "" : ", \\\n         ", name, block, OKABE_ITO[lt - 1]);
                    first = 0;
                }
                /* Eval points are sparse: mark them; train curves are dense: a plain line. */
                tb_printf(&gp, "%s'%s.dat' index %d using 1:2 with %s lt %d dt 1 title ",
                          first ? "" : ", \\\n         ", name, block, p == 0 ? "lines" : "linespoints ps 0.7",
                          lt);
                gp_quote(&gp, labels[i]);
                first = 0;
            }
            tb_puts(&gp, "\n");
        }
        tb_puts(&gp, "    unset multiplot\n");
        gp_formats_end(&gp);
        if (any_band) fig_note(f, "mean over seeds, shaded band: ±1 sd");
        else fig_note(f, "single seed per configuration: no band");
        st = fig_finish(c, f, &gp, &d, err);
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
    return st;
}

static LLStatus figs_curves(Ctx *c, LLError *err) {
    /* The best configuration of each method in one figure, so methods compare at a glance. */
    int *best = ll_malloc((size_t)c->n_methods + 1, sizeof *best), nb = 0;
    int *idx = ll_malloc((size_t)c->ng, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        int k = 0;
        for (int i = 0; i < c->ng; i++)
            if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].n_runs > 0) idx[k++] = i;
        int b = best_group(c, idx, k);
        if (b < 0 && k > 0) b = idx[0];
        if (b >= 0) best[nb++] = b;
    }
    LLStatus st = LL_OK;
    char title[160];
    snprintf(title, sizeof title, "Loss curves: best configuration of each method (by final %s)",
             report_metric_label(c->metric));
    if (nb == 0) {
        fig_skip(c, fig_new(c, "curves", title), "no finished runs");
    } else {
        st = fig_curves(c, "curves", title, best, nb, 1, err);
    }
    /* Then one figure per method with several configurations: its best REPORT_MAX_CURVES. */
    for (int m = 0; m < c->n_methods && !st && c->sum->n_figs < REPORT_MAX_FIGS - 6; m++) {
        int k = 0;
        for (int i = 0; i < c->ng; i++)
            if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].n_runs > 0) idx[k++] = i;
        if (k < 2) continue;
        /* Selection sort of the best first: k is small. */
        for (int a = 0; a < k; a++)
            for (int b = a + 1; b < k; b++) {
                double va = gmetric(c, idx[a]), vb = gmetric(c, idx[b]);
                if ((!isfinite(va) && isfinite(vb)) || (isfinite(vb) && better(vb, va, c->hb))) {
                    int t = idx[a];
                    idx[a] = idx[b];
                    idx[b] = t;
                }
            }
        int shown = k < REPORT_MAX_CURVES ? k : REPORT_MAX_CURVES;
        char name[48];
        fig_stem(c, "curves", c->methods[m], name, sizeof name);
        if (shown < k)
            snprintf(title, sizeof title, "%s: loss curves of the %d best of %d configurations",
                     method_label(c->methods[m]), shown, k);
        else
            snprintf(title, sizeof title, "%s: loss curves of each configuration", method_label(c->methods[m]));
        st = fig_curves(c, name, title, idx, shown, 0, err);
    }
    free(best);
    free(idx);
    return st;
}

/* ---- figure: final metric against rank ------------------------------------------------------- */

/* The full fine-tuning reference: the best full fine-tuning configuration, or -1. */
static int full_ref(const Ctx *c) {
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx), k = 0;
    for (int i = 0; i < c->ng; i++)
        if (report_is_full(c->g[i].method)) idx[k++] = i;
    int b = best_group(c, idx, k);
    free(idx);
    return b;
}

/* Its numbers as script variables (easy to restyle or correct by hand), repeated in the .dat. */
static void gp_full_vars(const Ctx *c, int fr, TextBuf *gp, TextBuf *d) {
    if (fr < 0) return;
    const ReportStat *s = &c->g[fr].metric;
    double sd = s->n >= 2 ? s->sd : 0.0;
    tb_printf(gp, "    # full fine-tuning reference: mean and sd over %d seed%s (also in the .dat)\n"
                   "    full_mean = %.9g\n    full_sd = %.9g\n",
              s->n, s->n == 1 ? "" : "s", s->mean, sd);
    tb_printf(d, "# full fine-tuning reference (script variables full_mean, full_sd): mean %.9g sd %.9g n %d\n",
              s->mean, sd, s->n);
}

/* Plot terms of the reference over the current x range: a band of ±1 sd (with two seeds or more)
 * and a dashed mean. Uses the pseudo-file '+', so the script fixes the x range first. */
static void gp_full_terms(const Ctx *c, int fr, TextBuf *gp, int *first) {
    if (fr < 0) return;
    const ReportStat *s = &c->g[fr].metric;
    if (s->n >= 2) {
        tb_printf(gp, "%s'+' using 1:(full_mean-full_sd):(full_mean+full_sd) with filledcurves "
                       "fs transparent solid 0.15 noborder lc rgb '#000000' title 'full FT ±1 sd'",
                  *first ? "" : ", \\\n         ");
        *first = 0;
    }
    tb_printf(gp, "%s'+' using 1:(full_mean) with lines lt %d dt 2 title 'full FT mean (n=%d)'",
              *first ? "" : ", \\\n         ", LT_FULL, s->n);
    *first = 0;
}

static LLStatus fig_rank(Ctx *c, LLError *err) {
    char title[160];
    snprintf(title, sizeof title, "Final %s against rank", report_metric_label(c->metric));
    ReportFigure *f = fig_new(c, "rank", title);
    int *ranks = ll_malloc((size_t)c->ng + 1, sizeof *ranks), nr = 0;
    for (int i = 0; i < c->ng; i++) {
        if (report_is_full(c->g[i].method) || c->g[i].r <= 0 || !isfinite(gmetric(c, i))) continue;
        int seen = 0;
        for (int j = 0; j < nr; j++) seen |= ranks[j] == c->g[i].r;
        if (!seen) ranks[nr++] = c->g[i].r;
    }
    qsort(ranks, (size_t)nr, sizeof *ranks, cmp_int);
    if (nr < 2) {
        if (nr == 1) fig_skip(c, f, "fewer than 2 ranks in the runs (only r=%d)", ranks[0]);
        else fig_skip(c, f, "no finished adapter runs with a rank");
        free(ranks);
        return LL_OK;
    }
    TextBuf gp = {0}, d = {0};
    dat_header(c, &d, f);
    gp_begin(c, &gp, f, 7.6, 4.0);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'rank r (log2 scale)'\n    set ylabel '%s'\n", report_metric_label(c->metric));
    tb_printf(&gp, "    set logscale x 2\n    set xrange [%g:%g]\n    set xtics (", ranks[0] / 1.5,
              ranks[nr - 1] * 1.5);
    for (int j = 0; j < nr; j++) tb_printf(&gp, "%s'%d' %d", j ? ", " : "", ranks[j], ranks[j]);
    tb_puts(&gp, ")\n");
    tb_puts(&gp, KEY_OUTSIDE);
    int fr = full_ref(c);
    gp_full_vars(c, fr, &gp, &d);
    tb_puts(&gp, "    plot ");
    int first = 1, block = 0, chose = 0, single = 1;
    gp_full_terms(c, fr, &gp, &first);
    if (fr < 0) fig_note(f, "no full fine-tuning runs: no reference band");
    int *idx = ll_malloc((size_t)c->ng, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        if (report_is_full(c->methods[m])) continue;
        int rows = 0;
        for (int j = 0; j < nr; j++) {
            int k = 0;
            for (int i = 0; i < c->ng; i++)
                if (strcmp(c->g[i].method, c->methods[m]) == 0 && c->g[i].r == ranks[j]) idx[k++] = i;
            int b = best_group(c, idx, k);
            if (b < 0) continue;
            chose |= k > 1;
            const ReportStat *s = &c->g[b].metric;
            single &= s->n < 2;
            if (!rows)
                gp_comment(&d, "%s: r mean sd n alpha lr (the best configuration at each rank)",
                           c->methods[m]);
            tb_printf(&d, "%d %.9g %.9g %d %g %g\n", ranks[j], s->mean, s->n >= 2 ? s->sd : 0.0, s->n,
                      c->g[b].alpha, c->g[b].lr);
            rows++;
        }
        if (!rows) continue; /* no block: block numbers stay contiguous */
        dat_next_block(&d);
        int lt = method_lt(c, c->methods[m]);
        tb_printf(&gp, "%s'rank.dat' index %d using 1:2:3 with yerrorlines lt %d dt %d title ",
                  first ? "" : ", \\\n         ", block++, lt, (lt - 1) % 5 + 1);
        gp_quote(&gp, method_label(c->methods[m]));
        first = 0;
    }
    tb_puts(&gp, "\n");
    gp_formats_end(&gp);
    free(idx);
    free(ranks);
    if (chose)
        fig_note(f, "each point: the best alpha, targets%s and lr at that rank", c->has_variant ? ", variant" : "");
    fig_note(f, single ? "single seed: no error bars" : "error bars: ±1 sd over seeds");
    return fig_finish(c, f, &gp, &d, err);
}

/* ---- figure: rank x alpha heatmap (LoRA) ------------------------------------------------------ */

static int find_double(const double *v, int n, double x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return i;
    return -1;
}

static int cmp_dbl(const void *a, const void *b) { return cmp_double(*(const double *)a, *(const double *)b); }

static LLStatus fig_rank_alpha(Ctx *c, LLError *err) {
    char title[160];
    snprintf(title, sizeof title, "LoRA: final %s by rank and alpha", report_metric_label(c->metric));
    ReportFigure *f = fig_new(c, "rank_alpha", title);
    int *ranks = ll_malloc((size_t)c->ng + 1, sizeof *ranks), nr = 0, na = 0;
    double *alphas = ll_malloc((size_t)c->ng + 1, sizeof *alphas);
    for (int i = 0; i < c->ng; i++) {
        if (strcmp(c->g[i].method, "lora") != 0 || !isfinite(gmetric(c, i))) continue;
        int seen = 0;
        for (int j = 0; j < nr; j++) seen |= ranks[j] == c->g[i].r;
        if (!seen) ranks[nr++] = c->g[i].r;
        if (find_double(alphas, na, c->g[i].alpha) < 0) alphas[na++] = c->g[i].alpha;
    }
    qsort(ranks, (size_t)nr, sizeof *ranks, cmp_int);
    qsort(alphas, (size_t)na, sizeof *alphas, cmp_dbl);
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
            int b = best_group(c, idx, k);
            cell[y * na + x] = b;
            chose |= k > 1;
            if (b >= 0) {
                n_cells++;
                if (gmetric(c, b) < lo) lo = gmetric(c, b);
                if (gmetric(c, b) > hi) hi = gmetric(c, b);
            }
        }
    free(idx);
    LLStatus st = LL_OK;
    if (nr == 0) {
        fig_skip(c, f, "no finished LoRA runs");
    } else if (n_cells < 2) {
        fig_skip(c, f, "a single (rank, alpha) cell in the LoRA runs (r=%d, alpha=%g)", ranks[0], alphas[0]);
    } else {
        TextBuf gp = {0}, d = {0};
        dat_header(c, &d, f);
        tb_puts(&d, "# cells: alpha_index rank_index mean label text_colour r alpha sd n\n");
        for (int y = 0; y < nr; y++)
            for (int x = 0; x < na; x++) {
                int b = cell[y * na + x];
                if (b < 0) continue;
                const ReportStat *s = &c->g[b].metric;
                tb_printf(&d, "%d %d %.9g %.3f %s %d %g %.9g %d\n", x, y, s->mean, s->mean,
                          cell_text_colour(s->mean, lo, hi), ranks[y], alphas[x], s->n >= 2 ? s->sd : 0.0, s->n);
            }
        dat_next_block(&d);
        tb_puts(&d, "# cells without a finished run: alpha_index rank_index\n");
        int missing = 0;
        for (int y = 0; y < nr; y++)
            for (int x = 0; x < na; x++)
                if (cell[y * na + x] < 0) {
                    tb_printf(&d, "%d %d\n", x, y);
                    missing++;
                }
        if (!missing) tb_puts(&d, "NaN NaN\n");
        dat_next_block(&d);
        gp_begin(c, &gp, f, 6.4, 4.4);
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
        gp_viridis(&gp);
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
            fig_note(f, "each cell: the best targets%s and lr at that (r, alpha), mean over seeds",
                     c->has_variant ? ", variant" : "");
        else fig_note(f, "each cell: mean over seeds");
        if (missing) fig_note(f, "%d cell%s without a finished run", missing, missing == 1 ? "" : "s");
        st = fig_finish(c, f, &gp, &d, err);
    }
    free(cell);
    free(ranks);
    free(alphas);
    return st;
}

/* ---- figure: final metric against trainable parameters (Pareto) ------------------------------ */

static LLStatus fig_params(Ctx *c, LLError *err) {
    char title[160];
    snprintf(title, sizeof title, "Final %s against trainable parameters", report_metric_label(c->metric));
    ReportFigure *f = fig_new(c, "params", title);
    double *cost = ll_malloc((size_t)c->ng + 1, sizeof *cost), *val = ll_malloc((size_t)c->ng + 1, sizeof *val);
    int *front = ll_malloc((size_t)c->ng + 1, sizeof *front), np = 0;
    for (int i = 0; i < c->ng; i++) {
        int ok = isfinite(c->g[i].trainable.mean) && c->g[i].trainable.mean > 0 && isfinite(gmetric(c, i));
        cost[i] = ok ? c->g[i].trainable.mean : NAN;
        val[i] = ok ? gmetric(c, i) : NAN;
        np += ok;
    }
    if (np < 2) {
        fig_skip(c, f, "fewer than 2 configurations with a trainable-parameter count and a final metric");
        free(cost);
        free(val);
        free(front);
        return LL_OK;
    }
    int nf = report_pareto(cost, val, c->ng, c->hb, front);
    TextBuf gp = {0}, d = {0};
    dat_header(c, &d, f);
    gp_begin(c, &gp, f, 7.6, 4.2);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'trainable parameters (log scale)'\n    set ylabel '%s'\n",
              report_metric_label(c->metric));
    /* "%.0s%c" prints 10k, 100k, 1M: readable without enhanced text. */
    tb_puts(&gp, "    set logscale x 10\n    set format x '%.0s%c'\n    set offsets graph 0.05, graph 0.05, "
                  "graph 0.05, graph 0.05\n");
    tb_puts(&gp, KEY_OUTSIDE);
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
        dat_next_block(&d);
        tb_printf(&gp, "%s'params.dat' index %d using 1:2:3 with yerrorbars lt %d dt 1 title ",
                  first ? "" : ", \\\n         ", block++, method_lt(c, c->methods[m]));
        gp_quote(&gp, method_label(c->methods[m]));
        first = 0;
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
    dat_next_block(&d);
    tb_printf(&gp, ", \\\n         'params.dat' index %d using 1:2 with steps lc rgb '#444444' dt 2 lw 1.5 "
                    "title 'Pareto front', \\\n"
                    "         '' index %d using 1:2 with points pt 6 ps 2.2 lc rgb '#555555' notitle\n",
              block, block);
    gp_formats_end(&gp);
    fig_note(f, "%d of %d configurations on the Pareto front (ringed; %s with fewer parameters)", nf, np,
             c->hb ? "higher accuracy" : "lower loss");
    if (single) fig_note(f, "single seed: no error bars");
    free(order);
    free(cost);
    free(val);
    free(front);
    return fig_finish(c, f, &gp, &d, err);
}

/* ---- figure: target-module sets --------------------------------------------------------------- */

static LLStatus fig_targets(Ctx *c, LLError *err) {
    char title[160];
    snprintf(title, sizeof title, "Final %s by target modules", report_metric_label(c->metric));
    ReportFigure *f = fig_new(c, "targets", title);
    const char **cats = ll_malloc((size_t)c->ng + 1, sizeof *cats);
    int nc = 0;
    for (int i = 0; i < c->ng; i++) {
        if (report_is_full(c->g[i].method) || !isfinite(gmetric(c, i))) continue;
        int seen = 0;
        for (int j = 0; j < nc; j++) seen |= strcmp(cats[j], c->g[i].targets) == 0;
        if (!seen) cats[nc++] = c->g[i].targets;
    }
    if (nc < 2) {
        char t[128];
        report_short_targets(nc ? cats[0] : "", t, sizeof t);
        if (nc) fig_skip(c, f, "a single target-module set in the adapter runs (%s)", t);
        else fig_skip(c, f, "no finished adapter runs");
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
    int n_adapter_methods = 0, long_labels = 0;
    for (int m = 0; m < c->n_methods; m++) n_adapter_methods += !report_is_full(c->methods[m]);
    TextBuf gp = {0}, d = {0};
    dat_header(c, &d, f);
    gp_begin(c, &gp, f, 7.6, 4.2);
    tb_puts(&gp, "    set title ");
    gp_quote(&gp, title);
    tb_printf(&gp, "\n    set xlabel 'target modules'\n    set ylabel '%s'\n", report_metric_label(c->metric));
    tb_printf(&gp, "    set xrange [-0.5:%g]\n    set xtics (", nc - 0.5);
    for (int j = 0; j < nc; j++) {
        char t[128];
        report_short_targets(cats[j], t, sizeof t);
        long_labels |= strlen(t) > 12;
        tb_printf(&gp, "%s", j ? ", " : "");
        gp_quote(&gp, t);
        tb_printf(&gp, " %d", j);
    }
    tb_puts(&gp, ")\n");
    if (long_labels) tb_puts(&gp, "    set xtics rotate by -25 left\n");
    tb_puts(&gp, "    set grid noxtics\n");
    tb_puts(&gp, KEY_OUTSIDE);
    int fr = full_ref(c);
    gp_full_vars(c, fr, &gp, &d);
    tb_puts(&gp, "    plot ");
    int first = 1, block = 0, chose = 0, single = 1, mi = 0;
    gp_full_terms(c, fr, &gp, &first);
    if (fr < 0) fig_note(f, "no full fine-tuning runs: no reference band");
    int *idx = ll_malloc((size_t)c->ng, sizeof *idx);
    for (int m = 0; m < c->n_methods; m++) {
        if (report_is_full(c->methods[m])) continue;
        /* Methods side by side within a category, so error bars do not overlap. */
        double off = n_adapter_methods > 1 ? (mi - (n_adapter_methods - 1) / 2.0) * 0.5 / n_adapter_methods : 0;
        mi++;
        int rows = 0;
        for (int j = 0; j < nc; j++) {
            int k = 0;
            for (int i = 0; i < c->ng; i++)
                if (strcmp(c->g[i].method, c->methods[m]) == 0 && strcmp(c->g[i].targets, cats[j]) == 0)
                    idx[k++] = i;
            int b = best_group(c, idx, k);
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
        dat_next_block(&d);
        tb_printf(&gp, "%s'targets.dat' index %d using 1:2:3 with yerrorbars lt %d dt 1 ps 1.3 title ",
                  first ? "" : ", \\\n         ", block++, method_lt(c, c->methods[m]));
        gp_quote(&gp, method_label(c->methods[m]));
        first = 0;
    }
    tb_puts(&gp, "\n");
    gp_formats_end(&gp);
    free(idx);
    free(cats);
    if (chose) fig_note(f, "each point: the best r, alpha%s and lr for that set", c->has_variant ? ", variant" : "");
    fig_note(f, single ? "single seed: no error bars" : "error bars: ±1 sd over seeds");
    return fig_finish(c, f, &gp, &d, err);
}

/* ---- figure: AdaLoRA's final rank allocation -------------------------------------------------- */

/* Modules in the order of a Llama block. */
static int module_order(const char *m) {
    static const char *const known[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (int i = 0; i < 7; i++)
        if (strcmp(m, known[i]) == 0) return i;
    return 7;
}

static LLStatus fig_adalora(Ctx *c, LLError *err) {
    ReportFigure *f = fig_new(c, "adalora_ranks", "AdaLoRA: final rank per layer and module");
    int *idx = ll_malloc((size_t)c->ng + 1, sizeof *idx), k = 0, any = 0;
    for (int i = 0; i < c->ng; i++)
        if (strcmp(c->g[i].method, "adalora") == 0) {
            any = 1;
            if (c->g[i].n_runs > 0) idx[k++] = i;
        }
    int b = best_group(c, idx, k);
    if (b < 0 && k > 0) b = idx[0];
    free(idx);
    if (!any || b < 0) {
        fig_skip(c, f, any ? "no finished AdaLoRA runs" : "no AdaLoRA runs");
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
        fig_skip(c, f, "the AdaLoRA runs recorded no final ranks");
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
    dat_header(c, &d, f);
    char label[256];
    group_label(g, 0, label, sizeof label);
    gp_comment(&d, "configuration: %s; mean over %d seed%s", label, g->n_runs, g->n_runs == 1 ? "" : "s");
    tb_puts(&d, "# module_index layer mean_rank label text_colour init_rank n\n");
    for (int j = 0; j < ncell; j++) {
        int m = 0;
        while (m < nm && strcmp(mods[m], cells[j].module) != 0) m++;
        double mean = cells[j].sum / cells[j].n;
        char lab[32];
        if (mean == floor(mean)) snprintf(lab, sizeof lab, "%.0f", mean);
        else snprintf(lab, sizeof lab, "%.1f", mean);
        tb_printf(&d, "%d %d %.9g %s %s %d %d\n", m, cells[j].layer, mean, lab, cell_text_colour(mean, 0, hi),
                  cells[j].init, cells[j].n);
    }
    dat_next_block(&d);
    char title[320];
    snprintf(title, sizeof title, "AdaLoRA final ranks: %s", label);
    gp_begin(c, &gp, f, nm > 4 ? 7.2 : 6.0, max_layer > 8 ? 6.0 : 4.4);
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
    gp_viridis(&gp);
    tb_puts(&gp, "    plot 'adalora_ranks.dat' index 0 using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 "
                  "border lc rgb '#ffffff' lw 1.5 lc palette, \\\n"
                  "         '' index 0 using 1:2:4:5 with labels tc rgb variable\n");
    gp_formats_end(&gp);
    fig_note(f, "colour scale from 0 to the initial rank %d; mean over %d seed%s of the best AdaLoRA configuration",
             max_init, g->n_runs, g->n_runs == 1 ? "" : "s");
    free(cells);
    return fig_finish(c, f, &gp, &d, err);
}

/* ---- the table ------------------------------------------------------------------------------- */

enum {
    COL_METHOD, COL_TARGETS, COL_R, COL_ALPHA, COL_LR, COL_VARIANT, COL_PARAMS, COL_PCT, COL_METRIC, COL_TIME,
    COL_MEM, N_COL
};

typedef struct {
    char text[160];
    int bold;
} Cell;

static const int COL_RIGHT[N_COL] = {0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1};

/* The variant column only when some group has a variant: reports of sweeps that vary nothing
 * beyond the five fields stay as they were. */
static int col_shown(const Ctx *c, int col) { return col != COL_VARIANT || c->has_variant; }

static void col_heads(const Ctx *c, char heads[N_COL][48]) {
    static const char *const fixed[N_COL] = {"method", "targets", "r", "α", "lr", "variant", "trainable params",
                                             "% of total",
                                             "", "time / run", "peak memory"};
    for (int i = 0; i < N_COL; i++) snprintf(heads[i], 48, "%s", fixed[i]);
    snprintf(heads[COL_METRIC], 48, "%s (mean ± sd)", report_metric_label(c->metric));
}

/* Cells of every group; bold marks the best value of each numeric column (ties all bold). */
static Cell (*table_cells(const Ctx *c))[N_COL] {
    Cell(*cells)[N_COL] = ll_calloc((size_t)(c->ng ? c->ng : 1), sizeof *cells);
    double *v = ll_malloc((size_t)(c->ng ? c->ng : 1), sizeof *v);
    static const int numeric[] = {COL_PARAMS, COL_PCT, COL_METRIC, COL_TIME, COL_MEM};
    for (size_t q = 0; q < sizeof numeric / sizeof numeric[0]; q++) {
        int col = numeric[q], hb = col == COL_METRIC && c->hb;
        for (int i = 0; i < c->ng; i++) {
            const ReportGroup *g = &c->g[i];
            v[i] = col == COL_PARAMS  ? g->trainable.mean
                   : col == COL_PCT   ? g->trainable_pct.mean
                   : col == COL_METRIC ? g->metric.mean
                   : col == COL_TIME  ? g->wall_s.mean
                                      : g->peak_mem.mean;
        }
        int b = report_best(v, c->ng, hb);
        /* One row is not a comparison: nothing to mark. */
        if (b >= 0 && c->ng > 1)
            for (int i = 0; i < c->ng; i++) cells[i][col].bold = isfinite(v[i]) && v[i] == v[b];
    }
    free(v);
    for (int i = 0; i < c->ng; i++) {
        const ReportGroup *g = &c->g[i];
        Cell *row = cells[i];
        int full = report_is_full(g->method);
        snprintf(row[COL_METHOD].text, sizeof row[0].text, "%s", method_label(g->method));
        if (full && !*g->targets) snprintf(row[COL_TARGETS].text, sizeof row[0].text, "all");
        else report_short_targets(g->targets, row[COL_TARGETS].text, sizeof row[0].text);
        if (full || g->r <= 0) snprintf(row[COL_R].text, sizeof row[0].text, "-");
        else snprintf(row[COL_R].text, sizeof row[0].text, "%d", g->r);
        if (full || !isfinite(g->alpha) || g->alpha <= 0) snprintf(row[COL_ALPHA].text, sizeof row[0].text, "-");
        else snprintf(row[COL_ALPHA].text, sizeof row[0].text, "%g", g->alpha);
        snprintf(row[COL_LR].text, sizeof row[0].text, "%g", g->lr);
        snprintf(row[COL_VARIANT].text, sizeof row[0].text, "%s", *g->variant ? g->variant : "-");
        fmt_count(row[COL_PARAMS].text, sizeof row[0].text, g->trainable.mean);
        if (isfinite(g->trainable_pct.mean))
            snprintf(row[COL_PCT].text, sizeof row[0].text, "%.3g%%", g->trainable_pct.mean);
        else snprintf(row[COL_PCT].text, sizeof row[0].text, "-");
        char div[48] = "";
        if (g->n_diverged) snprintf(div, sizeof div, ", %d diverged", g->n_diverged);
        const ReportStat *s = &g->metric;
        if (s->n >= 2)
            snprintf(row[COL_METRIC].text, sizeof row[0].text, "%.4f ± %.4f (n=%d%s)", s->mean, s->sd, s->n, div);
        else if (s->n == 1)
            snprintf(row[COL_METRIC].text, sizeof row[0].text, "%.4f (n=1%s)", s->mean, div);
        else if (g->n_diverged)
            snprintf(row[COL_METRIC].text, sizeof row[0].text, "diverged (%d run%s)", g->n_diverged,
                     g->n_diverged == 1 ? "" : "s");
        else snprintf(row[COL_METRIC].text, sizeof row[0].text, "- (n=%d)", g->n_runs);
        fmt_time(row[COL_TIME].text, sizeof row[0].text, g->wall_s.mean);
        fmt_mem(row[COL_MEM].text, sizeof row[0].text, g->peak_mem.mean);
    }
    return cells;
}

static void table_caption(const Ctx *c, char *out, size_t cap) {
    snprintf(out, cap,
             "Final %s (%s is better) per configuration, mean ± sample sd over n seeds; time and peak "
             "memory are means per run. Best value of each column in bold. Targets: q = q_proj, etc.%s",
             report_metric_label(c->metric), c->hb ? "higher" : "lower",
             c->has_variant ? " Variant: the config values that set a row apart from rows with the same "
                              "method, targets, r, α and lr."
                            : "");
}

static LLStatus write_tables(Ctx *c, Cell (*cells)[N_COL], LLError *err) {
    char heads[N_COL][48], caption[512];
    col_heads(c, heads);
    table_caption(c, caption, sizeof caption);
    TextBuf md = {0}, tex = {0};
    tb_puts(&md, "<!-- generated by `loralab report` from ");
    md_text(&md, c->db);
    tb_puts(&md, " (sweep: ");
    md_text(&md, c->sweep ? c->sweep : "all");
    tb_puts(&md, ") -->\n\n");
    tb_puts(&md, "|");
    for (int j = 0; j < N_COL; j++) {
        if (!col_shown(c, j)) continue;
        tb_puts(&md, " ");
        md_text(&md, heads[j]);
        tb_puts(&md, " |");
    }
    tb_puts(&md, "\n|");
    for (int j = 0; j < N_COL; j++)
        if (col_shown(c, j)) tb_puts(&md, COL_RIGHT[j] ? " ---: |" : " :--- |");
    tb_puts(&md, "\n");
    for (int i = 0; i < c->ng; i++) {
        tb_puts(&md, "|");
        for (int j = 0; j < N_COL; j++) {
            if (!col_shown(c, j)) continue;
            tb_puts(&md, cells[i][j].bold ? " **" : " ");
            md_text(&md, cells[i][j].text);
            tb_puts(&md, cells[i][j].bold ? "** |" : " |");
        }
        tb_puts(&md, "\n");
    }
    tb_puts(&md, "\n");
    md_text(&md, caption);
    tb_puts(&md, "\n");

    tb_puts(&tex, "% generated by `loralab report` (sweep: ");
    tex_text(&tex, c->sweep ? c->sweep : "all");
    tb_puts(&tex, "); needs \\usepackage{booktabs}\n");
    tb_puts(&tex, "\\begin{table}[t]\n\\centering\n\\small\n\\caption{");
    tex_text(&tex, caption);
    tb_puts(&tex, "}\n\\label{tab:loralab}\n\\begin{tabular}{");
    for (int j = 0; j < N_COL; j++)
        if (col_shown(c, j)) tb_puts(&tex, COL_RIGHT[j] ? "r" : "l");
    tb_puts(&tex, "}\n\\toprule\n");
    for (int j = 0; j < N_COL; j++) {
        if (!col_shown(c, j)) continue;
        if (j) tb_puts(&tex, " & ");
        if (j == COL_R) tb_puts(&tex, "$r$");
        else tex_text(&tex, heads[j]);
    }
    tb_puts(&tex, " \\\\\n\\midrule\n");
    for (int i = 0; i < c->ng; i++) {
        for (int j = 0; j < N_COL; j++) {
            if (!col_shown(c, j)) continue;
            if (j) tb_puts(&tex, " & ");
            if (cells[i][j].bold) tb_puts(&tex, "\\textbf{");
            tex_text(&tex, cells[i][j].text);
            if (cells[i][j].bold) tb_puts(&tex, "}");
        }
        tb_puts(&tex, " \\\\\n");
    }
    tb_puts(&tex, "\\bottomrule\n\\end{tabular}\n\\end{table}\n");
    LLStatus st = tb_save(&md, c->dir, "table.md", err);
    if (!st) st = tb_save(&tex, c->dir, "table.tex", err);
    tb_free(&md);
    tb_free(&tex);
    return st;
}

/* ---- index.html ------------------------------------------------------------------------------ */

static LLStatus write_index(Ctx *c, Cell (*cells)[N_COL], LLError *err) {
    const ReportSummary *s = c->sum;
    TextBuf h = {0};
    char heads[N_COL][48], caption[512];
    col_heads(c, heads);
    table_caption(c, caption, sizeof caption);
    tb_puts(&h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>loralab report: ");
    html_text(&h, c->sweep ? c->sweep : "all sweeps");
    tb_puts(&h, "</title>\n<style>\n"
                 "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\n"
                 "figure{margin:1.5em 0;border-top:1px solid #ddd;padding-top:1em}\n"
                 "figure img{max-width:100%;height:auto;display:block}\n"
                 "figcaption{font-size:0.9em;color:#444}\n"
                 "table{border-collapse:collapse;font-size:0.9em}\n"
                 "th,td{padding:3px 8px;border-bottom:1px solid #ddd}\n"
                 "th{border-bottom:2px solid #444;text-align:left}\n"
                 "td.num,th.num{text-align:right}\n"
                 ".left{color:#8a4b00}\n"
                 "</style>\n</head>\n<body>\n<h1>loralab report: ");
    html_text(&h, c->sweep ? c->sweep : "all sweeps");
    tb_puts(&h, "</h1>\n<p>Database <code>");
    html_text(&h, c->db);
    tb_printf(&h, "</code>: %d run%s (%d done, %d diverged, %d other), %d configuration%s. Final metric: %s "
                   "(%s is better).</p>\n",
              s->n_rows, s->n_rows == 1 ? "" : "s", s->n_done, s->n_diverged, s->n_other, s->n_groups,
              s->n_groups == 1 ? "" : "s", report_metric_label(c->metric), c->hb ? "higher" : "lower");
    if (s->gnuplot_missing)
        tb_puts(&h, "<p class=\"left\">gnuplot was not found, so no figure was rendered: install it "
                     "(<code>scripts/deps.sh</code>), then run <code>gnuplot NAME.gp</code> in this folder for "
                     "each script.</p>\n");
    if (s->unsandboxed[0]) {
        tb_puts(&h, "<p class=\"left\">Note: gnuplot ran without its process sandbox (");
        html_text(&h, s->unsandboxed);
        tb_puts(&h, "); the scripts' strings are escaped all the same.</p>\n");
    }
    tb_puts(&h, "<h2>Figures</h2>\n");
    int n_left = 0;
    for (int i = 0; i < s->n_figs; i++) {
        const ReportFigure *f = &s->figs[i];
        if (f->skipped) {
            n_left++;
            continue;
        }
        tb_printf(&h, "<figure id=\"%s\">\n", f->name);
        if (f->rendered) {
            tb_printf(&h, "<img src=\"%s.png\" alt=\"", f->name);
            html_text(&h, f->title);
            tb_puts(&h, "\">\n");
        } else {
            tb_printf(&h, "<p class=\"left\">%s: not rendered (%s).</p>\n", f->name,
                      s->gnuplot_missing ? "gnuplot not found; install it with scripts/deps.sh" : "gnuplot failed");
        }
        tb_puts(&h, "<figcaption><b>");
        html_text(&h, f->title);
        tb_puts(&h, "</b>");
        if (f->note[0]) {
            tb_puts(&h, ". ");
            html_text(&h, f->note);
        }
        tb_puts(&h, ".<br>");
        if (f->rendered)
            tb_printf(&h, "<a href=\"%s.pdf\">PDF</a> · <a href=\"%s.svg\">SVG</a> · <a href=\"%s.png\">PNG</a> · ",
                      f->name, f->name, f->name);
        tb_printf(&h, "<a href=\"%s.gp\">%s.gp</a> · <a href=\"%s.dat\">%s.dat</a></figcaption>\n</figure>\n",
                  f->name, f->name, f->name, f->name);
    }
    if (n_left) {
        tb_puts(&h, "<h3>Figures left out</h3>\n<ul>\n");
        for (int i = 0; i < s->n_figs; i++) {
            const ReportFigure *f = &s->figs[i];
            if (!f->skipped) continue;
            tb_printf(&h, "<li class=\"left\" id=\"left-%s\"><b>%s</b> (", f->name, f->name);
            html_text(&h, f->title);
            tb_puts(&h, ") left out: ");
            html_text(&h, f->note);
            tb_puts(&h, "</li>\n");
        }
        tb_puts(&h, "</ul>\n");
    }
    tb_puts(&h, "<h2>Table</h2>\n<p>");
    html_text(&h, caption);
    tb_puts(&h, " Also as <a href=\"table.md\">Markdown</a> and <a href=\"table.tex\">LaTeX</a>.</p>\n<table>\n<tr>");
    for (int j = 0; j < N_COL; j++) {
        if (!col_shown(c, j)) continue;
        tb_printf(&h, "<th%s>", COL_RIGHT[j] ? " class=\"num\"" : "");
        html_text(&h, heads[j]);
        tb_puts(&h, "</th>");
    }
    tb_puts(&h, "</tr>\n");
    for (int i = 0; i < c->ng; i++) {
        tb_puts(&h, "<tr>");
        for (int j = 0; j < N_COL; j++) {
            if (!col_shown(c, j)) continue;
            tb_printf(&h, "<td%s>%s", COL_RIGHT[j] ? " class=\"num\"" : "", cells[i][j].bold ? "<b>" : "");
            html_text(&h, cells[i][j].text);
            tb_printf(&h, "%s</td>", cells[i][j].bold ? "</b>" : "");
        }
        tb_puts(&h, "</tr>\n");
    }
    tb_puts(&h, "</table>\n");
    /* Reports, in the page and its title, how many figures actually loaded: a headless browser
     * (the report's test) reads it with --dump-dom. */
    tb_puts(&h, "<p id=\"img-status\">images: not checked (scripts disabled)</p>\n"
                 "<script>\n"
                 "function llCheckImages() {\n"
                 "  var im = document.images, ok = 0;\n"
                 "  for (var i = 0; i < im.length; i++) if (im[i].complete && im[i].naturalWidth > 0) ok++;\n"
                 "  var s = 'loaded ' + ok + '/' + im.length;\n"
                 "  document.title = s;\n"
                 "  document.getElementById('img-status').textContent = 'images: ' + s;\n"
                 "}\n"
                 "window.addEventListener('load', llCheckImages);\n"
                 "</script>\n</body>\n</html>\n");
    LLStatus st = tb_save(&h, c->dir, "index.html", err);
    tb_free(&h);
    return st;
}

/* ---- entry point ----------------------------------------------------------------------------- */

/* "a, b, c" of the distinct sweep names in the rows. */
static void sweep_names(const RunRow *rows, int n, char *out, size_t cap) {
    out[0] = '\0';
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (!rows[i].sweep) continue;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = rows[j].sweep && strcmp(rows[j].sweep, rows[i].sweep) == 0;
        if (seen) continue;
        int w = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", rows[i].sweep);
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
}

LLStatus report_write(const char *db, const char *sweep, const char *out_dir, ReportSummary *sum, LLError *err) {
    ReportSummary local;
    if (!sum) sum = &local;
    memset(sum, 0, sizeof *sum);
    if (!db || !*db) return ll_err(err, LL_ERR_CONFIG, "report: no database given (--db FILE)");
    if (!out_dir || !*out_dir) return ll_err(err, LL_ERR_CONFIG, "report: no output folder given (--out DIR)");
    if (!ll_file_exists(db))
        return ll_err(err, LL_ERR_IO, "no database at '%s' (run `loralab sweep` first, or pass --db FILE)", db);
    Ctx c = {0};
    c.db = db;
    c.sweep = sweep;
    c.dir = out_dir;
    c.sum = sum;
    LLStatus st = store_open(db, 1, &c.store, err);
    if (st) return st;
    RunRow *rows = NULL;
    int n = 0;
    st = store_list_runs(c.store, sweep, &rows, &n, err);
    if (st) goto done;
    sum->n_rows = n;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].status, "done") == 0) sum->n_done++;
        else if (strcmp(rows[i].status, "diverged") == 0) sum->n_diverged++;
        else sum->n_other++;
    }
    if (n == 0 || sum->n_done == 0) {
        if (n == 0 && sweep) {
            RunRow *all = NULL;
            int na = 0;
            char names[512] = "";
            if (store_list_runs(c.store, NULL, &all, &na, err) == LL_OK) sweep_names(all, na, names, sizeof names);
            esc_clean(names); /* the message reaches a terminal */
            store_free_runs(all, na);
            st = ll_err(err, LL_ERR_STATE, "no runs of sweep '%s' in %s: nothing to report%s%s%s", sweep, db,
                        names[0] ? " (its sweeps: " : " (it holds no runs)", names, names[0] ? ")" : "");
        } else if (n == 0) {
            st = ll_err(err, LL_ERR_STATE,
                        "the database %s holds no runs: nothing to report (run `loralab sweep CONFIG.yaml "
                        "--db %s` first)",
                        db, db);
        } else {
            st = ll_err(err, LL_ERR_STATE,
                        "no finished runs in %s%s%s: %d run%s, none done (%d diverged, %d pending, running or "
                        "failed): nothing to report yet",
                        db, sweep ? ", sweep " : "", sweep ? sweep : "", n, n == 1 ? "" : "s", sum->n_diverged,
                        sum->n_other);
        }
        goto done;
    }
    c.metric = sum->metric = report_metric_of(rows, n);
    c.hb = report_higher_better(c.metric);
    c.ng = sum->n_groups = report_aggregate(rows, n, c.metric, &c.g);
    for (int i = 0; i < c.ng; i++) {
        c.has_variant |= c.g[i].variant[0] != '\0';
        int seen = 0;
        for (int m = 0; m < c.n_methods; m++) seen |= strcmp(c.methods[m], c.g[i].method) == 0;
        if (!seen && c.n_methods < 64) c.methods[c.n_methods++] = c.g[i].method;
    }
    if ((st = ll_mkdirs(out_dir, err))) goto done;
    gnuplot_find(c.gnuplot, sizeof c.gnuplot);
    sum->gnuplot_missing = c.gnuplot[0] == '\0';

    Cell(*cells)[N_COL] = table_cells(&c);
    st = write_tables(&c, cells, err);
    if (!st) st = runs_export_write_csv(c.store, sweep, out_dir, "runs.csv", err); /* every run, every key */
    if (!st) st = figs_curves(&c, err);
    if (!st) st = fig_rank(&c, err);
    if (!st) st = fig_rank_alpha(&c, err);
    if (!st) st = fig_params(&c, err);
    if (!st) st = fig_targets(&c, err);
    if (!st) st = fig_adalora(&c, err);
    store_close(c.store);
    c.store = NULL;
    if (!st) render_all(&c);
    if (!st) st = write_index(&c, cells, err);
    free(cells);
    if (!st && c.render_rc) {
        st = c.render_rc;
        if (err) *err = c.render_err;
    }
done:
    store_free_runs(rows, n);
    report_free_groups(c.g, c.ng);
    store_close(c.store);
    return st;
}
