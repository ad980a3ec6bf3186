/* grid: see grid.h for the order of the plan and the rules of expressions, exclusions and merging.
 *
 * Invariants kept here:
 *   - The expansion is a pure function of the document: no clock, no environment, no global state;
 *     random draws come from splitmix64 seeded by the key's name and sweep.random.seed.
 *   - Every point is resolved (config_resolve) before the plan is returned, so a bad point fails
 *     the whole expansion with its values named, before anything runs.
 *   - Drawn and computed values pass config_value_check like file values do.
 */
#define _POSIX_C_SOURCE 200809L
#include "grid.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- expressions ----------------------------------------------------------------------------- */

typedef struct {
    const char *s, *p;
    const ConfigDoc *doc;
    const ConfigAssign *a;
    int n;
    LLError *err;
    LLStatus st;
} Expr;

static double ex_fail(Expr *e, const char *what) {
    if (!e->st)
        e->st = ll_err(e->err, LL_ERR_CONFIG, "expression '%s': %s at position %d", e->s, what, (int)(e->p - e->s) + 1);
    return 0.0;
}

static double ex_fail_name(Expr *e, const char *what) {
    if (!e->st) e->st = ll_err(e->err, LL_ERR_CONFIG, "expression '%s': %s", e->s, what);
    return 0.0;
}

static void ex_skip(Expr *e) {
    while (isspace((unsigned char)*e->p)) e->p++;
}

static double ex_sum(Expr *e, int depth);

static double ex_primary(Expr *e, int depth) {
    ex_skip(e);
    if (e->st) return 0.0;
    if (depth > 64) return ex_fail(e, "nesting too deep");
    const char *p = e->p;
    if (*p == '(') {
        e->p++;
        double v = ex_sum(e, depth + 1);
        ex_skip(e);
        if (*e->p != ')') return ex_fail(e, "expected ')'");
        e->p++;
        return v;
    }
    if (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) {
        char *end;
        double v = strtod(p, &end);
        e->p = end;
        return v;
    }
    if (isalpha((unsigned char)*p) || *p == '_') {
        char name[CONFIG_KEY_MAX], key[CONFIG_KEY_MAX];
        size_t n = 0;
        while ((isalnum((unsigned char)*e->p) || *e->p == '_' || *e->p == '.') && n + 1 < sizeof name)
            name[n++] = *e->p++;
        name[n] = '\0';
        LLError ne;
        double v;
        if (!config_short_name(name, key, sizeof key, &ne)) {
            return ex_fail_name(e, ne.msg);
        }
        if (!config_number(e->doc, e->a, e->n, key, &v)) {
            char msg[200];
            snprintf(msg, sizeof msg, "'%s' is not a number", key);
            return ex_fail_name(e, msg);
        }
        return v;
    }
    return ex_fail(e, *p ? "expected a number, a key or '('" : "unexpected end");
}

static double ex_unary(Expr *e, int depth) {
    ex_skip(e);
    if (*e->p == '-') {
        e->p++;
        return -ex_unary(e, depth + 1);
    }
    if (*e->p == '+') {
        e->p++;
        return ex_unary(e, depth + 1);
    }
    return ex_primary(e, depth);
}

static double ex_product(Expr *e, int depth) {
    double v = ex_unary(e, depth);
    for (;;) {
        ex_skip(e);
        char op = *e->p;
        if (e->st || (op != '*' && op != '/')) return v;
        e->p++;
        double r = ex_unary(e, depth);
        if (op == '/' && r == 0.0 && !e->st) return ex_fail(e, "division by zero");
        v = op == '*' ? v * r : v / r;
    }
}

static double ex_sum(Expr *e, int depth) {
    double v = ex_product(e, depth);
    for (;;) {
        ex_skip(e);
        char op = *e->p;
        if (e->st || (op != '+' && op != '-')) return v;
        e->p++;
        double r = ex_product(e, depth);
        v = op == '+' ? v + r : v - r;
    }
}

LLStatus sweep_eval_expr(const char *expr, const ConfigDoc *doc, const ConfigAssign *a, int n, double *out,
                         LLError *err) {
    Expr e = {expr, expr, doc, a, n, err, LL_OK};
    double v = ex_sum(&e, 0);
    ex_skip(&e);
    if (!e.st && *e.p) ex_fail(&e, "unexpected text");
    if (!e.st && !isfinite(v)) e.st = ll_err(err, LL_ERR_CONFIG, "expression '%s' is not finite", expr);
    if (e.st) return e.st;
    *out = v;
    return LL_OK;
}

/* ---- random search --------------------------------------------------------------------------- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* The j-th output of splitmix64 (Steele, Lea, Flood 2014) seeded with `seed`, as a double in [0, 1). */
static double splitmix_u(uint64_t seed, uint64_t j) {
    uint64_t z = seed + (j + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static double round_sig4(double x) {
    if (x == 0.0 || !isfinite(x)) return x;
    double scale = pow(10.0, 3.0 - floor(log10(fabs(x))));
    return round(x * scale) / scale;
}

static LLStatus draw(const SweepSpace *sp, uint64_t seed, int j, ConfigValue *out, LLError *err) {
    double u = splitmix_u(fnv1a64(sp->key) ^ seed, (uint64_t)j);
    int is_int = config_key_type(sp->key) == CFG_INT;
    memset(out, 0, sizeof *out);
    if (sp->kind == SPACE_CHOICE) {
        int k = (int)(u * sp->n_choices);
        config_value_copy(out, &sp->choices[k < sp->n_choices ? k : sp->n_choices - 1]);
        return LL_OK;
    }
    double x;
    if (sp->kind == SPACE_INT_LOG2) {
        int e0 = (int)llround(log2(sp->lo)), e1 = (int)llround(log2(sp->hi));
        int k = e0 + (int)(u * (e1 - e0 + 1));
        x = ldexp(1.0, k > e1 ? e1 : k);
    } else if (sp->kind == SPACE_UNIFORM && is_int) {
        x = sp->lo + floor(u * (sp->hi - sp->lo + 1));
        if (x > sp->hi) x = sp->hi;
    } else {
        x = sp->kind == SPACE_UNIFORM ? sp->lo + u * (sp->hi - sp->lo)
                                      : exp(log(sp->lo) + u * (log(sp->hi) - log(sp->lo)));
        double r = is_int ? round(x) : round_sig4(x);
        if (r >= sp->lo && r <= sp->hi) x = r; /* rounding must not leave the range */
        else if (is_int) x = r < sp->lo ? ceil(sp->lo) : floor(sp->hi);
    }
    if (is_int) out->type = CFG_INT, out->i = (int64_t)x;
    else out->type = CFG_FLOAT, out->f = x;
    return config_value_check(sp->key, out, err);
}

/* ---- expansion ------------------------------------------------------------------------------- */

static const ConfigValue *point_value(const ConfigDoc *d, const ConfigAssign *a, int n, const char *key) {
    for (int i = n - 1; i >= 0; i--)
        if (strcmp(a[i].key, key) == 0) return &a[i].value;
    return config_doc_value(d, key);
}

/* 1 when some sweep.exclude entry matches the point; every entry that matches counts a hit in
 * hits[e] (not only the first), so an entry never hit is one that matches nothing. */
static int excluded(const ConfigDoc *d, const ConfigAssign *a, int n, int *hits) {
    int out = 0;
    for (int e = 0; e < d->sweep.n_exclude; e++) {
        const SweepExclude *ex = &d->sweep.exclude[e];
        int all = 1;
        for (int k = 0; k < ex->n && all; k++) {
            const char *key = ex->match[k].key;
            int first = 1;
            for (int j = 0; j < k && first; j++) first = strcmp(ex->match[j].key, key) != 0;
            if (!first) continue; /* this key's alternatives were looked at with its first one */
            const ConfigValue *v = point_value(d, a, n, key);
            int any = 0;
            for (int j = k; j < ex->n && v && !any; j++)
                any = strcmp(ex->match[j].key, key) == 0 && config_value_equal(key, v, &ex->match[j].value);
            all = any;
        }
        if (all) hits[e]++, out = 1;
    }
    return out;
}

static void describe_point(const ConfigAssign *a, int n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n && len + 1 < cap; i++) {
        char v[200];
        config_value_string(&a[i].value, v, sizeof v);
        int k = snprintf(out + len, cap - len, "%s%s=%s", i ? " " : "", a[i].key, v);
        if (k < 0) break;
        len += (size_t)k < cap - len ? (size_t)k : cap - len - 1;
    }
}

static void push_assign(ConfigAssign **a, int *n, const char *key, const ConfigValue *v) {
    *a = ll_realloc(*a, (size_t)*n + 1, sizeof(ConfigAssign));
    ConfigAssign *x = &(*a)[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->key, sizeof x->key, "%s", key);
    config_value_copy(&x->value, v);
}

/* An open-addressing set of run keys (the hex key's first 16 digits as a number). */
typedef struct {
    uint64_t *slot;
    size_t cap;
} KeySet;

static int keyset_add(KeySet *s, const char *hex) { /* 1 when new */
    uint64_t h = strtoull(hex, NULL, 16) | 1; /* 0 marks an empty slot */
    size_t i = (size_t)(h * 0x9e3779b97f4a7c15ull) & (s->cap - 1);
    for (; s->slot[i]; i = (i + 1) & (s->cap - 1))
        if (s->slot[i] == h) return 0;
    s->slot[i] = h;
    return 1;
}

void sweep_plan_free(SweepPlan *plan) {
    if (!plan) return;
    for (int i = 0; i < plan->n; i++) {
        config_assign_free(plan->points[i].assign, plan->points[i].n_assign);
        run_config_free(&plan->points[i].rc);
    }
    ll_free(plan->points);
    ll_free(plan->vary);
    memset(plan, 0, sizeof *plan);
}

static void add_vary(SweepPlan *plan, const char *key) {
    for (int i = 0; i < plan->n_vary; i++)
        if (strcmp(plan->vary[i], key) == 0) return;
    plan->vary = ll_realloc(plan->vary, (size_t)plan->n_vary + 1, sizeof *plan->vary);
    snprintf(plan->vary[plan->n_vary++], CONFIG_KEY_MAX, "%s", key);
}

/* Keys whose values decide a run's variant (adapter_variant_name). A --set of one narrows the
 * sweep's methods, so per_method entries of the others are then ignored instead of refused. */
static const char *const VARIANT_KEYS[] = {"adapter.method", "adapter.use_dora", "adapter.use_rslora", "adapter.init",
                                           "adapter.lr_ratio"};

static int methods_narrowed(const ConfigDoc *d) {
    for (int i = 0; i < d->n_entries; i++)
        for (size_t k = 0; k < sizeof VARIANT_KEYS / sizeof VARIANT_KEYS[0]; k++)
            if (d->entries[i].from_set && strcmp(d->entries[i].key, VARIANT_KEYS[k]) == 0) return 1;
    return 0;
}

/* 1 when --set fixed a key the exclude entry names (or a key deciding the method): the entry may
 * then rightly match nothing. */
static int exclude_narrowed(const ConfigDoc *d, const SweepExclude *ex) {
    if (methods_narrowed(d)) return 1;
    for (int i = 0; i < d->n_entries; i++)
        for (int k = 0; d->entries[i].from_set && k < ex->n; k++)
            if (strcmp(d->entries[i].key, ex->match[k].key) == 0) return 1;
    return 0;
}

/* The assignments of base point b (seed x grid, the last axis fastest, the seed slowest). */
static void base_point(const SweepSpec *sw, long b, ConfigAssign **a, int *na) {
    int digit[64] = {0};
    for (int i = sw->n_axes - 1; i >= 0; i--) {
        digit[i] = (int)(b % sw->axes[i].n);
        b /= sw->axes[i].n;
    }
    *a = NULL, *na = 0;
    if (sw->n_seeds) {
        ConfigValue sv = {.type = CFG_INT, .i = sw->seeds[b]};
        push_assign(a, na, "train.seed", &sv);
    }
    for (int i = 0; i < sw->n_axes; i++) push_assign(a, na, sw->axes[i].key, &sw->axes[i].values[digit[i]]);
}

static long combos(const SweepMethod *pm) {
    long c = 1;
    for (int i = 0; pm && i < pm->n_axes; i++) c *= pm->axes[i].n;
    return c;
}

/* Draws sample j of every key of a space (n keys) into out[j * n + k]. */
static LLStatus draw_samples(const ConfigDoc *doc, const SweepSpace *space, int n, int n_rand, const char *where,
                             ConfigValue *out, LLError *err) {
    for (int j = 0; j < n_rand; j++)
        for (int k = 0; k < n; k++) {
            LLStatus st = draw(&space[k], doc->sweep.random_seed, j, &out[(size_t)j * n + k], err);
            if (st) {
                ll_err_prefix(err, "%s:%d: %s", doc->path, space[k].line, where);
                return st;
            }
        }
    return LL_OK;
}

/* Replaces the expression values of numeric axes (adapter.alpha: ["r", "2*r", 16]) by numbers, in
 * axis order. */
static LLStatus eval_axes(const ConfigDoc *doc, ConfigAssign *a, int na, LLError *err) {
    for (int k = 0; k < na; k++) {
        ConfigType kt = config_key_type(a[k].key);
        if (a[k].value.type != CFG_STRING || (kt != CFG_INT && kt != CFG_FLOAT)) continue;
        char *expr = a[k].value.s;
        double x;
        ConfigValue v = {0};
        LLStatus st = sweep_eval_expr(expr, doc, a, na, &x, err);
        if (!st && kt == CFG_INT && fabs(x - round(x)) > 1e-9 * fmax(1.0, fabs(x)))
            st = ll_err(err, LL_ERR_CONFIG, "'%s' = %g is not a whole number", expr, x);
        if (!st) {
            if (kt == CFG_INT) v.type = CFG_INT, v.i = (int64_t)llround(x);
            else v.type = CFG_FLOAT, v.f = x;
            st = config_value_check(a[k].key, &v, err);
        }
        if (st) {
            ll_err_prefix(err, "%s: sweep.grid: %s: '%s'", doc->path, a[k].key, expr);
            return st;
        }
        config_value_free(&a[k].value);
        a[k].value = v;
    }
    return LL_OK;
}

/* Appends the derived keys, in file order. */
static LLStatus add_derived(const ConfigDoc *doc, ConfigAssign **a, int *na, LLError *err) {
    const SweepSpec *sw = &doc->sweep;
    for (int k = 0; k < sw->n_derived; k++) {
        const SweepDerived *dv = &sw->derived[k];
        double x;
        ConfigValue v = {0};
        LLStatus st = sweep_eval_expr(dv->expr, doc, *a, *na, &x, err);
        if (!st) {
            if (config_key_type(dv->key) == CFG_INT) {
                if (fabs(x - round(x)) > 1e-9 * fmax(1.0, fabs(x)))
                    st = ll_err(err, LL_ERR_CONFIG, "'%s' = %g is not a whole number", dv->expr, x);
                v.type = CFG_INT, v.i = (int64_t)llround(x);
            } else {
                v.type = CFG_FLOAT, v.f = x;
            }
        }
        if (!st) st = config_value_check(dv->key, &v, err);
        if (st) {
            char where[512];
            describe_point(*a, *na, where, sizeof where);
            ll_err_prefix(err, "%s:%d: sweep.derived: %s%s%s%s", doc->path, dv->line, dv->key,
                          where[0] ? " at point {" : "", where, where[0] ? "}" : "");
            return st;
        }
        push_assign(a, na, dv->key, &v);
    }
    return LL_OK;
}

/* The per_method entry of each base point (-1: none), the number of points, and the check that
 * every entry names a method some base point has. */
static LLStatus plan_methods(const ConfigDoc *doc, long nb, int n_rand, int *pm_of, double *total, LLError *err) {
    const SweepSpec *sw = &doc->sweep;
    int *used = ll_calloc((size_t)sw->n_per_method + 1, sizeof(int));
    char seen[256] = "";
    size_t seen_len = 0;
    *total = 0;
    for (long b = 0; b < nb; b++) {
        ConfigAssign *a;
        int na;
        base_point(sw, b, &a, &na);
        char v[32];
        snprintf(v, sizeof v, "%s", config_variant(doc, a, na)); /* may point into a */
        config_assign_free(a, na);
        pm_of[b] = -1;
        for (int m = 0; m < sw->n_per_method; m++)
            if (strcmp(sw->per_method[m].variant, v) == 0) pm_of[b] = m, used[m] = 1;
        *total += (double)combos(pm_of[b] >= 0 ? &sw->per_method[pm_of[b]] : NULL) * n_rand;
        char quoted[24];
        snprintf(quoted, sizeof quoted, " %s,", v);
        if (!strstr(seen, quoted) && seen_len + strlen(quoted) < sizeof seen)
            config_append(seen, sizeof seen, &seen_len, "%s", quoted);
    }
    LLStatus st = LL_OK;
    for (int m = 0; m < sw->n_per_method && !st; m++)
        if (!used[m] && !methods_narrowed(doc)) {
            if (seen_len) seen[seen_len - 1] = '\0'; /* the last comma */
            st = ll_err(err, LL_ERR_CONFIG,
                        "%s:%d: sweep.per_method: no point of the grid is a '%s' run (its methods:%s); add it to "
                        "sweep.grid's adapter.method or remove the entry",
                        doc->path, sw->per_method[m].line, sw->per_method[m].variant, seen);
        }
    ll_free(used);
    return st;
}

/* A value of a per_method entry made its point another method's run: names the axis that did. */
static LLStatus method_changed(const ConfigDoc *doc, const SweepMethod *pm, const int *digit, const char *made,
                               LLError *err) {
    const SweepAxis *ax = NULL;
    for (int i = 0; i < pm->n_axes && !ax; i++)
        for (size_t k = 0; k < sizeof VARIANT_KEYS / sizeof VARIANT_KEYS[0]; k++)
            if (strcmp(pm->axes[i].key, VARIANT_KEYS[k]) == 0) ax = &pm->axes[i];
    char v[200] = "";
    if (ax) config_value_string(&ax->values[digit[ax - pm->axes]], v, sizeof v);
    return ll_err(err, LL_ERR_CONFIG,
                  "%s:%d: sweep.per_method.%s: %s%s%s makes the run '%s', not '%s' (the keys that decide the method "
                  "belong in sweep.grid)", doc->path, ax ? ax->line : pm->line, pm->variant, ax ? ax->key : "a value",
                  ax ? ": " : "", v, made, pm->variant);
}

LLStatus sweep_expand(const ConfigDoc *doc, SweepPlan *plan, LLError *err) {
    memset(plan, 0, sizeof *plan);
    const SweepSpec *sw = &doc->sweep;
    int n_seed = sw->n_seeds ? sw->n_seeds : 1, n_rand = sw->random_n ? sw->random_n : 1;
    double n_base = n_seed;
    for (int i = 0; i < sw->n_axes; i++) n_base *= sw->axes[i].n;
    if (sw->n_axes > 64)
        return ll_err(err, LL_ERR_CONFIG, "%s: sweep.grid has %d axes; at most 64", doc->path, sw->n_axes);
    for (int m = 0; m < sw->n_per_method; m++)
        if (sw->per_method[m].n_axes > 64)
            return ll_err(err, LL_ERR_CONFIG, "%s:%d: sweep.per_method.%s has %d axes; at most 64", doc->path,
                          sw->per_method[m].line, sw->per_method[m].variant, sw->per_method[m].n_axes);
    double total = n_base * n_rand;
    long nb = total <= SWEEP_MAX_POINTS ? (long)n_base : 0;
    int *pm_of = ll_malloc((size_t)nb + 1, sizeof(int));
    for (long b = 0; b < nb; b++) pm_of[b] = -1;
    if (nb && sw->n_per_method) { /* each method's own axes multiply its points */
        LLStatus st = plan_methods(doc, nb, n_rand, pm_of, &total, err);
        if (st) {
            ll_free(pm_of);
            return st;
        }
    }
    if (total > SWEEP_MAX_POINTS) {
        ll_free(pm_of);
        return ll_err(err, LL_ERR_CONFIG,
                      "%s: the sweep expands to %.0f points; the limit is %d (split it into several "
                      "files)",
                      doc->path, total, SWEEP_MAX_POINTS);
    }
    if (sw->n_seeds) add_vary(plan, "train.seed");
    for (int i = 0; i < sw->n_axes; i++) add_vary(plan, sw->axes[i].key);
    for (int m = 0; m < sw->n_per_method; m++)
        for (int i = 0; i < sw->per_method[m].n_axes; i++) add_vary(plan, sw->per_method[m].axes[i].key);
    for (int i = 0; i < sw->n_space; i++) add_vary(plan, sw->space[i].key);
    for (int m = 0; m < sw->n_per_method; m++)
        for (int i = 0; i < sw->per_method[m].n_space; i++) add_vary(plan, sw->per_method[m].space[i].key);
    for (int i = 0; i < sw->n_derived; i++) add_vary(plan, sw->derived[i].key);

    /* Random samples are drawn once; every grid point and seed is crossed with all of them. A
     * per-method key is drawn like a file-wide one (the same u for sample j), so sample j of each
     * method lies at the same quantile of that method's own range. */
    int ns = sw->random_n ? sw->n_space : 0, n_draw = sw->random_n ? n_rand : 0;
    ConfigValue *samples = ll_calloc((size_t)n_rand * (ns ? ns : 1), sizeof(ConfigValue));
    ConfigValue **pm_samples = ll_calloc((size_t)sw->n_per_method + 1, sizeof(ConfigValue *));
    LLStatus st = draw_samples(doc, sw->space, ns, n_draw, "sweep.random.space", samples, err);
    int cap = 0; /* of plan->points */
    for (int m = 0; m < sw->n_per_method; m++) {
        const SweepMethod *pm = &sw->per_method[m];
        char where[64];
        snprintf(where, sizeof where, "sweep.per_method.%s", pm->variant);
        pm_samples[m] = ll_calloc((size_t)n_rand * (pm->n_space ? pm->n_space : 1), sizeof(ConfigValue));
        if (!st) st = draw_samples(doc, pm->space, pm->n_space, n_draw, where, pm_samples[m], err);
    }
    KeySet set = {NULL, 16};
    while (set.cap < 2 * (size_t)total + 16) set.cap *= 2;
    set.slot = ll_calloc(set.cap, sizeof(uint64_t));
    long raw = 0;
    int *ex_hits = ll_calloc((size_t)sw->n_exclude + 1, sizeof(int));
    /* Loops, outermost first: seed, grid axes, the method's own axes, random samples. */
    for (long b = 0; b < nb && !st; b++) {
        const SweepMethod *pm = pm_of[b] >= 0 ? &sw->per_method[pm_of[b]] : NULL;
        long nc = combos(pm);
        for (long c = 0; c < nc && !st; c++)
            for (int j = 0; j < n_rand && !st; j++) {
                raw++;
                ConfigAssign *a;
                int na;
                base_point(sw, b, &a, &na);
                long r = c;
                int digit[64] = {0};
                for (int i = pm ? pm->n_axes - 1 : -1; i >= 0; i--) {
                    digit[i] = (int)(r % pm->axes[i].n);
                    r /= pm->axes[i].n;
                }
                for (int i = 0; pm && i < pm->n_axes; i++)
                    push_assign(&a, &na, pm->axes[i].key, &pm->axes[i].values[digit[i]]);
                for (int k = 0; k < ns; k++) push_assign(&a, &na, sw->space[k].key, &samples[(size_t)j * ns + k]);
                for (int k = 0; pm && sw->random_n && k < pm->n_space; k++)
                    push_assign(&a, &na, pm->space[k].key, &pm_samples[pm_of[b]][(size_t)j * pm->n_space + k]);
                st = eval_axes(doc, a, na, err);
                if (!st) st = add_derived(doc, &a, &na, err);
                if (!st && excluded(doc, a, na, ex_hits)) {
                    plan->n_excluded++;
                    config_assign_free(a, na);
                    continue;
                }
                SweepPoint pt;
                memset(&pt, 0, sizeof pt);
                pt.assign = a, pt.n_assign = na;
                if (!st) {
                    st = config_resolve(doc, a, na, &pt.rc, err);
                    if (st && na) {
                        char where[512];
                        describe_point(a, na, where, sizeof where);
                        ll_err_prefix(err, "sweep point {%s}", where);
                    }
                }
                if (!st && pm && strcmp(adapter_variant_name(&pt.rc.adapter), pm->variant) != 0)
                    st = method_changed(doc, pm, digit, adapter_variant_name(&pt.rc.adapter), err);
                if (st) {
                    run_config_free(&pt.rc);
                    config_assign_free(a, na);
                    break;
                }
                if (!keyset_add(&set, pt.rc.key)) { /* the same run as an earlier point */
                    plan->n_merged++;
                    run_config_free(&pt.rc);
                    config_assign_free(a, na);
                    continue;
                }
                pt.index = plan->n;
                /* Doubling: a point is 14 KB (RunConfig), so growing by one copied O(n^2) bytes. */
                if (plan->n == cap) {
                    cap = cap ? 2 * cap : 16;
                    plan->points = ll_realloc(plan->points, (size_t)cap, sizeof(SweepPoint));
                }
                plan->points[plan->n++] = pt;
            }
    }
    plan->n_raw = (int)raw;
    /* An entry that matched no point is a typo or a stale line (it would silently leave runs in);
     * random search draws its values, so there a miss can be chance and is not refused. */
    for (int e = 0; !st && !sw->random_n && e < sw->n_exclude; e++)
        if (!ex_hits[e] && !exclude_narrowed(doc, &sw->exclude[e])) {
            char what[512];
            describe_point(sw->exclude[e].match, sw->exclude[e].n, what, sizeof what);
            st = ll_err(err, LL_ERR_CONFIG,
                        "%s:%d: sweep.exclude: the entry {%s} matches no point of the sweep (a typo in a key's "
                        "value? every run it was meant to drop would run)", doc->path, sw->exclude[e].line, what);
        }
    ll_free(ex_hits);
    for (int i = 0; i < n_rand * ns; i++) config_value_free(&samples[i]);
    ll_free(samples);
    for (int m = 0; m < sw->n_per_method; m++) {
        for (int i = 0; i < n_rand * sw->per_method[m].n_space; i++) config_value_free(&pm_samples[m][i]);
        ll_free(pm_samples[m]);
    }
    ll_free(pm_samples);
    ll_free(pm_of);
    ll_free(set.slot);
    if (st) sweep_plan_free(plan);
    return st;
}

/* ---- inputs that must exist before anything runs ------------------------------------------- */

/* Splits a folder of `what` must hold: a missing one names the folder, the file and the key. */
static LLStatus check_split(const char *doc_path, const char *what, const char *dir, const char *split,
                            const char *ext, LLError *err) {
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return ll_err(err, LL_ERR_CONFIG, "%s: %s '%s': %s (the project's corpora are fetched by "
                      "scripts/fetch-data.sh, or `make data`)", doc_path, what, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return ll_err(err, LL_ERR_CONFIG, "%s: %s '%s' is not a folder (a corpus folder holds train, valid and "
                      "test splits)", doc_path, what, dir);
    char path[2100];
    snprintf(path, sizeof path, "%s/%s.%s", dir, split, ext);
    int found = stat(path, &sb) == 0;
    if (!found || !S_ISREG(sb.st_mode))
        return ll_err(err, LL_ERR_CONFIG, "%s: %s '%s' has no %s split: %s %s", doc_path, what, dir, split, path,
                      found ? "is not a regular file" : "is missing");
    return LL_OK;
}

LLStatus sweep_check_data(const ConfigDoc *doc, const SweepPlan *plan, LLError *err) {
    LLStatus st = LL_OK;
    for (int i = 0; i < plan->n && !st; i++) {
        const RunConfig *rc = &plan->points[i].rc; /* a few stat calls a point: no need to skip repeats */
        char cfg[1100];
        snprintf(cfg, sizeof cfg, "%s/config.json", rc->base_path);
        if (rc->pretrain && !ll_file_exists(cfg)) {
            st = check_split(doc->path, "base.data", rc->base_data, "train", "txt", err);
            if (!st) st = check_split(doc->path, "base.data", rc->base_data, "valid", "txt", err);
        }
        const char *ext = rc->task_cls ? "jsonl" : "txt";
        if (!st) st = check_split(doc->path, "task.data", rc->task_data, "train", ext, err);
        if (!st) st = check_split(doc->path, "task.data", rc->task_data, "valid", ext, err);
        for (int k = 0; !st && k < rc->n_eval_sets; k++) {
            char what[300];
            snprintf(what, sizeof what, "task.eval_sets.%s", rc->eval_set_names[k]);
            st = check_split(doc->path, what, rc->eval_set_paths[k], "valid", ext, err);
        }
    }
    return st;
}
