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
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static const ConfigValue *doc_value(const ConfigDoc *d, const char *key) {
    for (int i = 0; i < d->n_entries; i++)
        if (strcmp(d->entries[i].key, key) == 0) return &d->entries[i].value;
    return NULL;
}

static const ConfigValue *point_value(const ConfigDoc *d, const ConfigAssign *a, int n, const char *key) {
    for (int i = n - 1; i >= 0; i--)
        if (strcmp(a[i].key, key) == 0) return &a[i].value;
    return doc_value(d, key);
}

static int excluded(const ConfigDoc *d, const ConfigAssign *a, int n) {
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
        if (all) return 1;
    }
    return 0;
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

LLStatus sweep_expand(const ConfigDoc *doc, SweepPlan *plan, LLError *err) {
    memset(plan, 0, sizeof *plan);
    const SweepSpec *sw = &doc->sweep;
    int n_seed = sw->n_seeds ? sw->n_seeds : 1, n_rand = sw->random_n ? sw->random_n : 1;
    double total = (double)n_seed * n_rand;
    for (int i = 0; i < sw->n_axes; i++) total *= sw->axes[i].n;
    if (sw->n_axes > 64)
        return ll_err(err, LL_ERR_CONFIG, "%s: sweep.grid has %d axes; at most 64", doc->path, sw->n_axes);
    if (total > SWEEP_MAX_POINTS)
        return ll_err(err, LL_ERR_CONFIG,
                      "%s: the sweep expands to %.0f points; the limit is %d (split it into several "
                      "files)",
                      doc->path, total, SWEEP_MAX_POINTS);
    if (sw->n_seeds) add_vary(plan, "train.seed");
    for (int i = 0; i < sw->n_axes; i++) add_vary(plan, sw->axes[i].key);
    for (int i = 0; i < sw->n_space; i++) add_vary(plan, sw->space[i].key);
    for (int i = 0; i < sw->n_derived; i++) add_vary(plan, sw->derived[i].key);

    /* Random samples are drawn once; every grid point and seed is crossed with all of them. */
    int ns = sw->random_n ? sw->n_space : 0;
    ConfigValue *samples = ll_calloc((size_t)n_rand * (ns ? ns : 1), sizeof(ConfigValue));
    LLStatus st = LL_OK;
    for (int j = 0; j < (sw->random_n ? n_rand : 0) && !st; j++)
        for (int k = 0; k < ns && !st; k++) {
            st = draw(&sw->space[k], sw->random_seed, j, &samples[(size_t)j * ns + k], err);
            if (st) ll_err_prefix(err, "%s:%d: sweep.random.space", doc->path, sw->space[k].line);
        }
    KeySet set = {NULL, 16};
    while (set.cap < 2 * (size_t)total + 16) set.cap *= 2;
    set.slot = ll_calloc(set.cap, sizeof(uint64_t));
    long n_total = (long)total;
    for (long idx = 0; idx < n_total && !st; idx++) {
        /* Mixed radix: random sample fastest, then the grid axes from the last, then the seed. */
        long r = idx;
        int j = (int)(r % n_rand);
        r /= n_rand;
        int digit[64] = {0};
        for (int i = sw->n_axes - 1; i >= 0; i--) {
            digit[i] = (int)(r % sw->axes[i].n);
            r /= sw->axes[i].n;
        }
        ConfigAssign *a = NULL;
        int na = 0;
        if (sw->n_seeds) {
            ConfigValue sv = {.type = CFG_INT, .i = sw->seeds[r]};
            push_assign(&a, &na, "train.seed", &sv);
        }
        for (int i = 0; i < sw->n_axes; i++) push_assign(&a, &na, sw->axes[i].key, &sw->axes[i].values[digit[i]]);
        for (int k = 0; k < ns; k++) push_assign(&a, &na, sw->space[k].key, &samples[(size_t)j * ns + k]);
        /* Expression values of numeric grid axes (adapter.alpha: ["r", "2*r", 16]), in axis order. */
        for (int k = 0; k < na && !st; k++) {
            ConfigType kt = config_key_type(a[k].key);
            if (a[k].value.type != CFG_STRING || (kt != CFG_INT && kt != CFG_FLOAT)) continue;
            char *expr = a[k].value.s;
            double x;
            ConfigValue v = {0};
            st = sweep_eval_expr(expr, doc, a, na, &x, err);
            if (!st && kt == CFG_INT && fabs(x - round(x)) > 1e-9 * fmax(1.0, fabs(x)))
                st = ll_err(err, LL_ERR_CONFIG, "'%s' = %g is not a whole number", expr, x);
            if (!st) {
                if (kt == CFG_INT) v.type = CFG_INT, v.i = (int64_t)llround(x);
                else v.type = CFG_FLOAT, v.f = x;
                st = config_value_check(a[k].key, &v, err);
            }
            if (st) {
                ll_err_prefix(err, "%s: sweep.grid: %s: '%s'", doc->path, a[k].key, expr);
            } else {
                config_value_free(&a[k].value);
                a[k].value = v;
            }
        }
        for (int k = 0; k < sw->n_derived && !st; k++) {
            const SweepDerived *dv = &sw->derived[k];
            double x;
            ConfigValue v = {0};
            st = sweep_eval_expr(dv->expr, doc, a, na, &x, err);
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
                describe_point(a, na, where, sizeof where);
                ll_err_prefix(err, "%s:%d: sweep.derived: %s%s%s%s", doc->path, dv->line, dv->key,
                              where[0] ? " at point {" : "", where, where[0] ? "}" : "");
            } else {
                push_assign(&a, &na, dv->key, &v);
            }
        }
        if (!st && excluded(doc, a, na)) {
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
        plan->points = ll_realloc(plan->points, (size_t)plan->n + 1, sizeof(SweepPoint));
        plan->points[plan->n++] = pt;
    }
    plan->n_raw = n_total;
    for (int i = 0; i < n_rand * ns; i++) config_value_free(&samples[i]);
    ll_free(samples);
    ll_free(set.slot);
    if (st) sweep_plan_free(plan);
    return st;
}
