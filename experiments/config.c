/* config: see config.h for the file format, the resolution rules and the run key.
 *
 * Invariants kept here:
 *   - KEYS[] is the single source of truth: parsing, type checks, --set, suggestions, resolution,
 *     the canonical config and config_describe all walk it. A key with an engine field (st != FS_NONE)
 *     takes its default from train_config_defaults / adapter_config_defaults, never from a copy.
 *   - A ConfigDoc holds only checked values: every entry has the type of its key and lies within its
 *     bounds, so config_resolve only has cross-key checks left to do.
 *   - Every error message starts with where: "FILE:LINE: KEY: ..." for file values, "--set: KEY: ..."
 *     for overrides, "FILE: ..." for checks that span keys (with the keys named).
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"
#include "quant.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

void config_assign_free(ConfigAssign *a, int n) {
    if (!a) return;
    for (int i = 0; i < n; i++) config_value_free(&a[i].value);
    ll_free(a);
}

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------------- */

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[t] + w[t];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void config_sha256_hex(const void *data, size_t len, char out[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t full = len / 64;
    for (size_t i = 0; i < full; i++) sha256_block(h, p + 64 * i);
    /* Padding: 0x80, zeros, then the bit length as a big-endian 64-bit number (one or two blocks). */
    uint8_t tail[128] = {0};
    size_t rest = len - 64 * full;
    memcpy(tail, p + 64 * full, rest);
    tail[rest] = 0x80;
    size_t nt = rest + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[nt - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < nt; off += 64) sha256_block(h, tail + off);
    for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", h[i]);
}

/* ---- YAML ------------------------------------------------------------------------------------ */

/* Where values come from, for messages: a file (with lines) or the command line. */
typedef struct {
    const char *path; /* NULL: --set */
    yaml_document_t *doc;
} Src;

static void where(const Src *src, const yaml_node_t *n, char *out, size_t cap) {
    if (!src->path) snprintf(out, cap, "--set");
    else snprintf(out, cap, "%s:%d", src->path, n ? (int)n->start_mark.line + 1 : 1);
}

static int line_of(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

static const char *scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static int is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = scalar(n);
    return !s[0] || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static int parse_int_text(const char *s, int64_t *out) {
    if (!s[0]) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno) return 0;
    *out = v;
    return 1;
}

static int parse_float_text(const char *s, double *out) {
    if (!s[0] || isspace((unsigned char)s[0])) return 0;
    for (const char *p = s; *p; p++) /* no hex floats, inf or nan spellings */
        if (!strchr("0123456789+-.eE", *p)) return 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int parse_bool_text(const char *s, int64_t *out) {
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = 1, 1;
        if (strcasecmp(s, no[i]) == 0) return *out = 0, 1;
    }
    return 0;
}

/* A scalar node as the most specific plain value: int, float, bool, else string. Quoted scalars
 * are always strings (so "8" is not a number: the type check then says so). */
static void scalar_value(const yaml_node_t *n, ConfigValue *v) {
    memset(v, 0, sizeof *v);
    const char *s = scalar(n);
    int plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (plain && parse_int_text(s, &v->i)) v->type = CFG_INT;
    else if (plain && parse_float_text(s, &v->f)) v->type = CFG_FLOAT;
    else if (plain && parse_bool_text(s, &v->i)) v->type = CFG_BOOL;
    else v->type = CFG_STRING, v->s = ll_strdup(s);
}

/* Converts a node to the type of ks and checks it; errors are "WHERE: KEY: what". */
static LLStatus node_value(const Src *src, yaml_node_t *n, const KeySpec *ks, ConfigValue *out, LLError *err) {
    char loc[1100], msg[700];
    where(src, n, loc, sizeof loc);
    memset(out, 0, sizeof *out);
    if (is_null(n)) return ll_err(err, LL_ERR_CONFIG, "%s: %s: no value given", loc, ks->key);
    if (n->type == YAML_SCALAR_NODE) {
        if (ks->flags & B_LIST_ONLY)
            return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected a list, got '%s': write [%s] for that one value, or "
                          "[a, b, ...] for several", loc, ks->key, scalar(n), scalar(n));
        scalar_value(n, out);
        if ((ks->type == CFG_STRING || ks->type == CFG_STR_LIST) && out->type != CFG_STRING) {
            /* a plain 2024 or true under a string key is its text */
            config_value_free(out);
            out->type = CFG_STRING, out->s = ll_strdup(scalar(n));
        }
    } else if (n->type == YAML_SEQUENCE_NODE) {
        if (ks->type != CFG_STR_LIST && ks->type != CFG_INT_LIST)
            return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected %s, got a list%s", loc, ks->key,
                          config_type_name(ks->type),
                          src->path && !(ks->flags & B_NOT_RUN) ? " (to sweep it, put it under sweep.grid)" : "");
        int cnt = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
        out->type = ks->type;
        out->names = ks->type == CFG_STR_LIST ? ll_calloc((size_t)cnt + 1, sizeof(char *)) : NULL;
        out->nums = ks->type == CFG_INT_LIST ? ll_calloc((size_t)cnt + 1, sizeof(double)) : NULL;
        for (int i = 0; i < cnt; i++) {
            yaml_node_t *it = yaml_document_get_node(src->doc, n->data.sequence.items.start[i]);
            if (!it || it->type != YAML_SCALAR_NODE || is_null(it)) {
                config_value_free(out);
                return ll_err(err, LL_ERR_CONFIG, "%s: %s: list items must be plain values", loc, ks->key);
            }
            if (ks->type == CFG_STR_LIST) {
                /* "q,v" inside a list is split like a top-level "q,v" */
                char *copy = ll_strdup(scalar(it)), *save = NULL;
                out->names = ll_realloc(out->names, (size_t)out->n + strlen(copy) + 2, sizeof(char *));
                for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
                    out->names[out->n++] = ll_strdup(tok);
                ll_free(copy);
            } else {
                ConfigValue iv;
                scalar_value(it, &iv);
                if (iv.type != CFG_INT && iv.type != CFG_FLOAT) {
                    config_value_free(&iv);
                    config_value_free(out);
                    return ll_err(err, LL_ERR_CONFIG, "%s: %s: item '%s' is not a whole number", loc, ks->key,
                                  scalar(it));
                }
                out->nums[out->n++] = config_value_number(&iv);
            }
        }
    } else { /* mapping */
        if (ks->type != CFG_NUM_MAP && ks->type != CFG_STR_MAP)
            return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected %s, got a mapping", loc, ks->key,
                          config_type_name(ks->type));
        int cnt = (int)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
        out->type = ks->type;
        out->names = ll_calloc((size_t)cnt + 1, sizeof(char *));
        if (ks->type == CFG_NUM_MAP) out->nums = ll_calloc((size_t)cnt + 1, sizeof(double));
        else out->strs = ll_calloc((size_t)cnt + 1, sizeof(char *));
        for (int i = 0; i < cnt; i++) {
            yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
            yaml_node_t *k = yaml_document_get_node(src->doc, p->key), *v = yaml_document_get_node(src->doc, p->value);
            ConfigValue nv = {0};
            if (k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE) {
                config_value_free(out);
                return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected %s", loc, ks->key, config_type_name(ks->type));
            }
            for (int j = 0; j < out->n; j++)
                if (strcmp(out->names[j], scalar(k)) == 0) {
                    char l2[1100];
                    where(src, k, l2, sizeof l2);
                    ll_err(err, LL_ERR_CONFIG, "%s: %s: duplicate entry '%s'", l2, ks->key, scalar(k));
                    config_value_free(out);
                    return LL_ERR_CONFIG;
                }
            if (ks->type == CFG_STR_MAP) { /* any scalar is its text: a folder named 2024 too */
                if (is_null(v)) {
                    config_value_free(out);
                    return ll_err(err, LL_ERR_CONFIG, "%s: %s: '%s' has no value", loc, ks->key, scalar(k));
                }
                out->strs[out->n] = ll_strdup(scalar(v));
                out->names[out->n++] = ll_strdup(scalar(k));
                continue;
            }
            scalar_value(v, &nv);
            if (nv.type != CFG_INT && nv.type != CFG_FLOAT) {
                config_value_free(&nv);
                config_value_free(out);
                return ll_err(err, LL_ERR_CONFIG, "%s: %s: '%s' has no number", loc, ks->key, scalar(k));
            }
            out->names[out->n] = ll_strdup(scalar(k));
            out->nums[out->n++] = config_value_number(&nv);
        }
    }
    if (!config_check_value(ks, out, msg, sizeof msg)) {
        config_value_free(out);
        return ll_err(err, LL_ERR_CONFIG, "%s: %s: %s", loc, ks->key, msg);
    }
    return LL_OK;
}

static LLStatus yaml_error(const char *path, yaml_parser_t *p, LLError *err) {
    char ctx[256] = "";
    if (p->context)
        snprintf(ctx, sizeof ctx, " (%s at line %d)", p->context, (int)p->context_mark.line + 1);
    return ll_err(err, LL_ERR_CONFIG, "%s:%d: YAML syntax error: %s%s", path ? path : "--set",
                  (int)p->problem_mark.line + 1, p->problem ? p->problem : "malformed input", ctx);
}

/* ---- documents ------------------------------------------------------------------------------- */

static ConfigEntry *doc_find(const ConfigDoc *d, const char *key) {
    for (int i = 0; i < d->n_entries; i++)
        if (strcmp(d->entries[i].key, key) == 0) return &d->entries[i];
    return NULL;
}

static ConfigEntry *doc_add(ConfigDoc *d, const char *key) {
    d->entries = ll_realloc(d->entries, (size_t)d->n_entries + 1, sizeof(ConfigEntry));
    ConfigEntry *e = &d->entries[d->n_entries++];
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "%s", key);
    return e;
}

static int mapping_len(const yaml_node_t *n) { return (int)(n->data.mapping.pairs.top - n->data.mapping.pairs.start); }
static int sequence_len(const yaml_node_t *n) {
    return (int)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static LLStatus unknown_key(const Src *src, const yaml_node_t *n, const char *context, const char *key, LLError *err) {
    char loc[1100];
    where(src, n, loc, sizeof loc);
    const char *s = config_suggest_key(key);
    if (s)
        return ll_err(err, LL_ERR_CONFIG, "%s: %sunknown key '%s'; did you mean '%s'?", loc, context, key, s);
    return ll_err(err, LL_ERR_CONFIG, "%s: %sunknown key '%s' (`loralab sweep --keys` lists the keys)", loc, context,
                  key);
}

static int join_key(char *out, size_t cap, const char *prefix, const char *k) {
    int n = prefix && prefix[0] ? snprintf(out, cap, "%s.%s", prefix, k) : snprintf(out, cap, "%s", k);
    return n > 0 && (size_t)n < cap;
}

/* A key of a sweep sub-section (grid axis, exclusion entry): a run key, not a label. */
static LLStatus sweep_key(const Src *src, const yaml_node_t *kn, const char *ctx, const char *key,
                          const KeySpec **out, LLError *err) {
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    const KeySpec *ks = config_key_spec(key);
    if (!ks) return unknown_key(src, kn, ctx, key, err);
    if (ks->flags & B_NOT_RUN)
        return ll_err(err, LL_ERR_CONFIG, "%s: %s'%s' is not a run setting and cannot be swept", loc, ctx, key);
    *out = ks;
    return LL_OK;
}

typedef LLStatus (*PairFn)(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                           LLError *err);

/* Calls fn for each (dotted key, value) of a mapping, descending into sections (a mapping value
 * whose key is a section prefix and not itself a key). */
static LLStatus walk_pairs(const Src *src, yaml_node_t *map, const char *prefix, const char *ctx_name, PairFn fn,
                           void *ctx, int depth, LLError *err) {
    char loc[1100];
    if (depth > 8) {
        where(src, map, loc, sizeof loc);
        return ll_err(err, LL_ERR_CONFIG, "%s: nesting is too deep", loc);
    }
    for (int i = 0; i < mapping_len(map); i++) {
        yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
        yaml_node_t *kn = yaml_document_get_node(src->doc, p->key), *vn = yaml_document_get_node(src->doc, p->value);
        where(src, kn, loc, sizeof loc);
        if (kn->type != YAML_SCALAR_NODE)
            return ll_err(err, LL_ERR_CONFIG, "%s: %skeys must be plain names", loc, ctx_name);
        for (int j = 0; j < i; j++) { /* the same key twice in one mapping */
            yaml_node_t *kj = yaml_document_get_node(src->doc, map->data.mapping.pairs.start[j].key);
            if (kj->type == YAML_SCALAR_NODE && strcmp(scalar(kj), scalar(kn)) == 0)
                return ll_err(err, LL_ERR_CONFIG, "%s: %sduplicate key '%s' (first at line %d)", loc, ctx_name,
                              scalar(kn), line_of(kj));
        }
        char key[CONFIG_KEY_MAX];
        if (!join_key(key, sizeof key, prefix, scalar(kn)))
            return ll_err(err, LL_ERR_CONFIG, "%s: %skey '%.60s...' is too long", loc, ctx_name, scalar(kn));
        int plain = !config_key_spec(key) && !config_key_is_sweep_special(key);
        if (plain && !config_key_is_section(key) && vn->type == YAML_MAPPING_NODE) {
            char sec[CONFIG_KEY_MAX];
            if (config_suggest_section(key, sec, sizeof sec))
                return ll_err(err, LL_ERR_CONFIG, "%s: %sunknown section '%s'; did you mean '%s'?", loc, ctx_name, key,
                              sec);
        }
        if (plain && config_key_is_section(key)) {
            if (vn->type != YAML_MAPPING_NODE)
                return ll_err(err, LL_ERR_CONFIG, "%s: %s'%s' is a section: expected a mapping of its keys", loc,
                              ctx_name, key);
            LLStatus st = walk_pairs(src, vn, key, ctx_name, fn, ctx, depth + 1, err);
            if (st) return st;
            continue;
        }
        LLStatus st = fn(src, ctx, key, kn, vn, err);
        if (st) return st;
    }
    return LL_OK;
}

static LLStatus parse_sweep_special(const Src *src, ConfigDoc *d, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                                    LLError *err);

/* A top-level pair of the file: a schema key (value checked) or a sweep sub-section. */
static LLStatus file_pair(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn, LLError *err) {
    ConfigDoc *d = ctx;
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    if (config_key_is_sweep_special(key)) return parse_sweep_special(src, d, key, kn, vn, err);
    const KeySpec *ks = config_key_spec(key);
    if (!ks) return unknown_key(src, kn, "", key, err);
    ConfigEntry *prev = doc_find(d, key);
    if (prev) /* `adapter: {r: 4}` and `adapter.r: 8` in one file */
        return ll_err(err, LL_ERR_CONFIG, "%s: duplicate key '%s' (first at line %d)", loc, key, prev->line);
    ConfigValue v;
    LLStatus st = node_value(src, vn, ks, &v, err);
    if (st) return st;
    ConfigEntry *e = doc_add(d, key);
    e->value = v;
    e->line = line_of(kn);
    return LL_OK;
}

/* --- the sweep section --- */

/* Where the pairs of one sweep sub-section go: the file's grid and random space, or one
 * per_method entry's. ctx_name ("sweep.grid: ") starts every message about them. */
typedef struct {
    ConfigDoc *d;
    SweepExclude *ex; /* exclusion entry being filled */
    SweepAxis **axes;
    int *n_axes;
    SweepSpace **space;
    int *n_space;
    const char *ctx_name;
    const char *variant; /* per_method entry: the method whose points the values are for */
} SweepCtx;

static LLStatus grid_pair(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn, LLError *err) {
    SweepCtx *c = ctx;
    const KeySpec *ks;
    LLStatus st = sweep_key(src, kn, c->ctx_name, key, &ks, err);
    if (st) return st;
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    for (int i = 0; i < *c->n_axes; i++)
        if (strcmp((*c->axes)[i].key, key) == 0)
            return ll_err(err, LL_ERR_CONFIG, "%s: %sduplicate axis '%s' (first at line %d)", loc, c->ctx_name, key,
                          (*c->axes)[i].line);
    SweepAxis ax = {.line = line_of(kn)};
    snprintf(ax.key, sizeof ax.key, "%s", key);
    /* A list is the axis; a lone value (or a mapping for a map key) is an axis of one. */
    int n = vn->type == YAML_SEQUENCE_NODE ? sequence_len(vn) : 1;
    if (n == 0) return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: the list is empty", loc, c->ctx_name, key);
    ax.values = ll_calloc((size_t)n, sizeof(ConfigValue));
    for (int i = 0; i < n; i++) {
        yaml_node_t *it =
            vn->type == YAML_SEQUENCE_NODE ? yaml_document_get_node(src->doc, vn->data.sequence.items.start[i]) : vn;
        /* A numeric axis may hold expressions over the point's other keys ("r", "2*r"): kept as
         * text here, evaluated per point by the expansion (grid.c) and checked there. */
        if ((ks->type == CFG_INT || ks->type == CFG_FLOAT) && it->type == YAML_SCALAR_NODE && !is_null(it)) {
            ConfigValue probe;
            scalar_value(it, &probe);
            int is_expr = probe.type == CFG_STRING;
            config_value_free(&probe);
            if (is_expr) {
                ax.values[i].type = CFG_STRING;
                ax.values[i].s = ll_strdup(scalar(it));
                ax.n++;
                continue;
            }
        }
        st = node_value(src, it, ks, &ax.values[i], err);
        if (st) {
            for (int j = 0; j < i; j++) config_value_free(&ax.values[j]);
            ll_free(ax.values);
            return st;
        }
        ax.n++;
    }
    *c->axes = ll_realloc(*c->axes, (size_t)*c->n_axes + 1, sizeof(SweepAxis));
    (*c->axes)[(*c->n_axes)++] = ax;
    return LL_OK;
}

static LLStatus exclude_pair(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                             LLError *err) {
    SweepExclude *ex = ((SweepCtx *)ctx)->ex;
    const KeySpec *ks;
    LLStatus st = sweep_key(src, kn, "sweep.exclude: ", key, &ks, err);
    if (st) return st;
    /* A list under a key that takes one value means "any of these": one match entry each. */
    int many = vn->type == YAML_SEQUENCE_NODE && ks->type != CFG_STR_LIST && ks->type != CFG_INT_LIST;
    int n = many ? sequence_len(vn) : 1;
    if (n == 0) {
        char loc[1100];
        where(src, kn, loc, sizeof loc);
        return ll_err(err, LL_ERR_CONFIG, "%s: sweep.exclude: %s: the list is empty", loc, key);
    }
    for (int i = 0; i < n; i++) {
        yaml_node_t *it = many ? yaml_document_get_node(src->doc, vn->data.sequence.items.start[i]) : vn;
        ConfigValue v;
        st = node_value(src, it, ks, &v, err);
        if (st) return st;
        ex->match = ll_realloc(ex->match, (size_t)ex->n + 1, sizeof(ConfigAssign));
        ConfigAssign *a = &ex->match[ex->n++];
        snprintf(a->key, sizeof a->key, "%s", key);
        a->value = v;
    }
    return LL_OK;
}

static LLStatus derived_pair(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                             LLError *err) {
    ConfigDoc *d = ((SweepCtx *)ctx)->d;
    const KeySpec *ks;
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    LLStatus st = sweep_key(src, kn, "sweep.derived: ", key, &ks, err);
    if (st) return st;
    if (!config_key_numeric(ks))
        return ll_err(err, LL_ERR_CONFIG, "%s: sweep.derived: %s is %s; only numeric keys can be derived", loc, key,
                      config_type_name(ks->type));
    if (vn->type != YAML_SCALAR_NODE || is_null(vn))
        return ll_err(err, LL_ERR_CONFIG, "%s: sweep.derived: %s: expected an expression such as \"2*adapter.r\"", loc,
                      key);
    SweepSpec *sw = &d->sweep;
    for (int i = 0; i < sw->n_derived; i++)
        if (strcmp(sw->derived[i].key, key) == 0)
            return ll_err(err, LL_ERR_CONFIG, "%s: sweep.derived: duplicate key '%s'", loc, key);
    sw->derived = ll_realloc(sw->derived, (size_t)sw->n_derived + 1, sizeof(SweepDerived));
    SweepDerived *dv = &sw->derived[sw->n_derived++];
    snprintf(dv->key, sizeof dv->key, "%s", key);
    dv->expr = ll_strdup(scalar(vn));
    dv->line = line_of(kn);
    return LL_OK;
}

static LLStatus space_pair(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn, LLError *err) {
    SweepCtx *c = ctx;
    const char *cn = c->ctx_name;
    const KeySpec *ks;
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    LLStatus st = sweep_key(src, kn, cn, key, &ks, err);
    if (st) return st;
    SweepSpace sp = {.line = line_of(kn)};
    snprintf(sp.key, sizeof sp.key, "%s", key);
    if (vn->type == YAML_SEQUENCE_NODE) { /* choices */
        sp.kind = SPACE_CHOICE;
        int n = sequence_len(vn);
        if (n == 0) return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: no choices", loc, cn, key);
        sp.choices = ll_calloc((size_t)n, sizeof(ConfigValue));
        for (int i = 0; i < n; i++) {
            st = node_value(src, yaml_document_get_node(src->doc, vn->data.sequence.items.start[i]), ks, &sp.choices[i],
                            err);
            if (st) {
                for (int j = 0; j < i; j++) config_value_free(&sp.choices[j]);
                ll_free(sp.choices);
                return st;
            }
            sp.n_choices++;
        }
    } else if (vn->type == YAML_MAPPING_NODE && mapping_len(vn) == 1) {
        yaml_node_pair_t *p = vn->data.mapping.pairs.start;
        yaml_node_t *dk = yaml_document_get_node(src->doc, p->key), *dv = yaml_document_get_node(src->doc, p->value);
        const char *dist = dk->type == YAML_SCALAR_NODE ? scalar(dk) : "";
        if (strcmp(dist, "uniform") == 0) sp.kind = SPACE_UNIFORM;
        else if (strcmp(dist, "log_uniform") == 0) sp.kind = SPACE_LOG_UNIFORM;
        else if (strcmp(dist, "int_log2") == 0) sp.kind = SPACE_INT_LOG2;
        else
            return ll_err(err, LL_ERR_CONFIG,
                          "%s: %s%s: unknown distribution '%s' (uniform, log_uniform, int_log2, "
                          "or a list of choices)", loc, cn, key, dist);
        if (!config_key_numeric(ks))
            return ll_err(err, LL_ERR_CONFIG, "%s: %s%s is %s; %s needs a numeric key", loc, cn, key,
                          config_type_name(ks->type), dist);
        if (dv->type != YAML_SEQUENCE_NODE || sequence_len(dv) != 2)
            return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: %s takes [lo, hi]", loc, cn, key, dist);
        double b[2];
        for (int i = 0; i < 2; i++) {
            yaml_node_t *it = yaml_document_get_node(src->doc, dv->data.sequence.items.start[i]);
            ConfigValue v = {0};
            if (it->type == YAML_SCALAR_NODE) scalar_value(it, &v);
            if (v.type != CFG_INT && v.type != CFG_FLOAT) {
                config_value_free(&v);
                return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: %s bounds must be numbers", loc, cn, key,
                              dist);
            }
            b[i] = config_value_number(&v);
            char msg[600];
            ConfigValue chk = v;
            if (!config_check_value(ks, &chk, msg, sizeof msg)) /* each bound must be a valid value */
                return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: bound %s", loc, cn, key, msg);
        }
        sp.lo = b[0], sp.hi = b[1];
        if (!(sp.lo < sp.hi))
            return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: need lo < hi", loc, cn, key);
        if (sp.kind == SPACE_LOG_UNIFORM && !(sp.lo > 0))
            return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: log_uniform needs lo > 0", loc, cn, key);
        if (sp.kind == SPACE_INT_LOG2) {
            int ok = ks->type == CFG_INT;
            for (int i = 0; i < 2 && ok; i++) {
                double x = i ? sp.hi : sp.lo;
                int e;
                ok = x >= 1 && frexp(x, &e) == 0.5; /* an exact power of two */
            }
            if (!ok)
                return ll_err(err, LL_ERR_CONFIG,
                              "%s: %s%s: int_log2 needs a whole-number key and powers of two "
                              "[lo, hi] such as [2, 64]", loc, cn, key);
        }
    } else {
        return ll_err(err, LL_ERR_CONFIG,
                      "%s: %s%s: expected a list of choices or {uniform|log_uniform|int_log2: "
                      "[lo, hi]}", loc, cn, key);
    }
    for (int i = 0; i < *c->n_space; i++)
        if (strcmp((*c->space)[i].key, key) == 0) {
            for (int j = 0; j < sp.n_choices; j++) config_value_free(&sp.choices[j]);
            ll_free(sp.choices);
            return ll_err(err, LL_ERR_CONFIG, "%s: %sduplicate key '%s'", loc, cn, key);
        }
    *c->space = ll_realloc(*c->space, (size_t)*c->n_space + 1, sizeof(SweepSpace));
    (*c->space)[(*c->n_space)++] = sp;
    return LL_OK;
}

/* One key of a per_method entry: a list (or a lone value) is an axis crossed with the grid for the
 * method's points, a distribution {log_uniform: [lo, hi], ...} a random-search key of theirs. */
static LLStatus method_pair(const Src *src, void *ctx, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                            LLError *err) {
    SweepCtx *c = ctx;
    const KeySpec *ks;
    LLStatus st = sweep_key(src, kn, c->ctx_name, key, &ks, err);
    if (st) return st;
    char loc[1100], why[200];
    where(src, kn, loc, sizeof loc);
    AdapterMethod m = ADAPTER_LORA;
    config_variant_method(c->variant, &m);
    if (strcmp(key, "adapter.method") == 0)
        return ll_err(err, LL_ERR_CONFIG, "%s: %sadapter.method: per_method is keyed by the method; list the methods "
                      "in sweep.grid", loc, c->ctx_name);
    if (strcmp(key, "train.seed") == 0)
        return ll_err(err, LL_ERR_CONFIG, "%s: %strain.seed: seeds are crossed with every method; give them in "
                      "sweep.seeds", loc, c->ctx_name);
    if (config_method_ignores(m, key, why, sizeof why))
        return ll_err(err, LL_ERR_CONFIG, "%s: %s%s: %s", loc, c->ctx_name, key, why);
    int is_space = vn->type == YAML_MAPPING_NODE && ks->type != CFG_NUM_MAP && ks->type != CFG_STR_MAP;
    for (int i = 0; i < (is_space ? *c->n_axes : *c->n_space); i++) {
        const char *k = is_space ? (*c->axes)[i].key : (*c->space)[i].key;
        int ln = is_space ? (*c->axes)[i].line : (*c->space)[i].line;
        if (strcmp(k, key) == 0)
            return ll_err(err, LL_ERR_CONFIG, "%s: %sduplicate key '%s' (first at line %d)", loc, c->ctx_name, key,
                          ln);
    }
    return is_space ? space_pair(src, ctx, key, kn, vn, err) : grid_pair(src, ctx, key, kn, vn, err);
}

static LLStatus parse_per_method(const Src *src, ConfigDoc *d, yaml_node_t *vn, LLError *err) {
    char loc[1100], names[200], ctx_name[64];
    SweepSpec *sw = &d->sweep;
    for (int i = 0; i < mapping_len(vn); i++) {
        yaml_node_pair_t *p = &vn->data.mapping.pairs.start[i];
        yaml_node_t *mk = yaml_document_get_node(src->doc, p->key), *mv = yaml_document_get_node(src->doc, p->value);
        where(src, mk, loc, sizeof loc);
        const char *v = mk->type == YAML_SCALAR_NODE ? scalar(mk) : "";
        if (!config_variant_method(v, NULL)) {
            config_variant_list(names, sizeof names);
            return ll_err(err, LL_ERR_CONFIG, "%s: sweep.per_method: unknown method '%.40s' (methods: %s)", loc, v,
                          names);
        }
        for (int j = 0; j < sw->n_per_method; j++)
            if (strcmp(sw->per_method[j].variant, v) == 0)
                return ll_err(err, LL_ERR_CONFIG, "%s: sweep.per_method: duplicate method '%s' (first at line %d)", loc,
                              v, sw->per_method[j].line);
        if (mv->type != YAML_MAPPING_NODE || mapping_len(mv) == 0)
            return ll_err(err, LL_ERR_CONFIG, "%s: sweep.per_method: %s: expected a mapping {key: [values], ...}", loc,
                          v);
        sw->per_method = ll_realloc(sw->per_method, (size_t)sw->n_per_method + 1, sizeof(SweepMethod));
        SweepMethod *pm = &sw->per_method[sw->n_per_method++];
        memset(pm, 0, sizeof *pm);
        snprintf(pm->variant, sizeof pm->variant, "%s", v);
        pm->line = line_of(mk);
        snprintf(ctx_name, sizeof ctx_name, "sweep.per_method.%s: ", v);
        SweepCtx c = {d, NULL, &pm->axes, &pm->n_axes, &pm->space, &pm->n_space, ctx_name, pm->variant};
        LLStatus st = walk_pairs(src, mv, "", ctx_name, method_pair, &c, 0, err);
        if (st) return st;
    }
    return LL_OK;
}

/* sweep.early_stop: {type: asha|median|none, metric, min_steps, reduction_factor, grace_runs}, or W&B's
 * early_terminate: {type: hyperband, min_iter, eta} read as ASHA (min_iter as steps) with a note. */
static LLStatus parse_early_stop(const Src *src, ConfigDoc *d, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                                 LLError *err) {
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    EarlyStopSpec *es = &d->sweep.early_stop;
    if (es->line)
        return ll_err(err, LL_ERR_CONFIG, "%s: %s: early stopping is already given at line %d", loc, key, es->line);
    int wandb = strcmp(key, "early_terminate") == 0;
    *es = (EarlyStopSpec){ES_ASHA, "eval_loss", 0, 3, 4, line_of(kn), ""};
    for (int i = 0; i < mapping_len(vn); i++) {
        yaml_node_pair_t *p = &vn->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(src->doc, p->key), *v = yaml_document_get_node(src->doc, p->value);
        where(src, k, loc, sizeof loc);
        if (k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE)
            return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected name: value pairs", loc, key);
        const char *name = scalar(k), *val = scalar(v);
        char *end;
        long num = strtol(val, &end, 10);
        int is_num = *val && !*end;
        if (strcmp(name, "type") == 0) {
            if (wandb ? strcmp(val, "hyperband") == 0 : strcmp(val, "asha") == 0) es->type = ES_ASHA;
            else if (!wandb && strcmp(val, "median") == 0) es->type = ES_MEDIAN;
            else if (!wandb && strcmp(val, "none") == 0) es->type = ES_NONE;
            else
                return ll_err(err, LL_ERR_CONFIG, "%s: %s.type: '%s' is not %s", loc, key, val,
                              wandb ? "hyperband (the only early_terminate type loralab reads)" : "asha, median or none");
        } else if (!wandb && strcmp(name, "metric") == 0) {
            if (!es_metric(val, NULL, NULL))
                return ll_err(err, LL_ERR_CONFIG, "%s: %s.metric: '%s' is not a validation metric (eval_loss, eval_ppl, "
                              "accuracy, macro_f1)", loc, key, val);
            snprintf(es->metric, sizeof es->metric, "%s", val);
        } else if (strcmp(name, wandb ? "min_iter" : "min_steps") == 0 ||
                   strcmp(name, wandb ? "eta" : "reduction_factor") == 0 || (!wandb && strcmp(name, "grace_runs") == 0)) {
            int lo = strcmp(name, "eta") == 0 || strcmp(name, "reduction_factor") == 0 ? 2 : 1;
            if (!is_num || num < lo || num > 100000000)
                return ll_err(err, LL_ERR_CONFIG, "%s: %s.%s: expected a whole number from %d, not '%s'", loc, key, name,
                              lo, val);
            if (name[0] == 'm') es->min_steps = (int)num;
            else if (name[0] == 'g') es->grace_runs = (int)num;
            else es->reduction_factor = (int)num;
        } else {
            return ll_err(err, LL_ERR_CONFIG, "%s: %s: unknown key '%s' (known: %s)", loc, key, name,
                          wandb ? "type, min_iter, eta" : "type, metric, min_steps, reduction_factor, grace_runs");
        }
    }
    where(src, kn, loc, sizeof loc);
    if (es->type != ES_NONE && es->min_steps < 1)
        return ll_err(err, LL_ERR_CONFIG, "%s: %s needs %s (the first step at which a run may be stopped)", loc, key,
                      wandb ? "min_iter" : "min_steps");
    if (wandb)
        snprintf(es->note, sizeof es->note,
                 "early_terminate (W&B hyperband) read as ASHA: min_iter %d -> min_steps, eta %d -> reduction_factor",
                 es->min_steps, es->reduction_factor);
    return LL_OK;
}

static LLStatus parse_sweep_special(const Src *src, ConfigDoc *d, const char *key, yaml_node_t *kn, yaml_node_t *vn,
                                    LLError *err) {
    char loc[1100];
    where(src, kn, loc, sizeof loc);
    SweepSpec *sw = &d->sweep;
    SweepCtx c = {d, NULL, &sw->axes, &sw->n_axes, &sw->space, &sw->n_space, "", NULL};
    if (strcmp(key, "sweep.exclude") == 0) {
        if (vn->type != YAML_SEQUENCE_NODE)
            return ll_err(err, LL_ERR_CONFIG, "%s: sweep.exclude: expected a list of {key: value} entries", loc);
        for (int i = 0; i < sequence_len(vn); i++) {
            yaml_node_t *it = yaml_document_get_node(src->doc, vn->data.sequence.items.start[i]);
            if (it->type != YAML_MAPPING_NODE || mapping_len(it) == 0) {
                where(src, it, loc, sizeof loc);
                return ll_err(err, LL_ERR_CONFIG, "%s: sweep.exclude: each entry is a mapping {key: value, ...}", loc);
            }
            d->sweep.exclude = ll_realloc(d->sweep.exclude, (size_t)d->sweep.n_exclude + 1, sizeof(SweepExclude));
            SweepExclude *ex = &d->sweep.exclude[d->sweep.n_exclude++];
            memset(ex, 0, sizeof *ex);
            ex->line = line_of(it);
            c.ex = ex;
            LLStatus st = walk_pairs(src, it, "", "sweep.exclude: ", exclude_pair, &c, 0, err);
            if (st) return st;
        }
        return LL_OK;
    }
    if (vn->type != YAML_MAPPING_NODE)
        return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected a mapping", loc, key);
    if (strcmp(key, "sweep.per_method") == 0) return parse_per_method(src, d, vn, err);
    if (strcmp(key, "sweep.early_stop") == 0 || strcmp(key, "early_terminate") == 0)
        return parse_early_stop(src, d, key, kn, vn, err);
    c.ctx_name = strcmp(key, "sweep.grid") == 0      ? "sweep.grid: "
                 : strcmp(key, "sweep.derived") == 0 ? "sweep.derived: "
                                                     : "sweep.random.space: ";
    if (strcmp(key, "sweep.grid") == 0) return walk_pairs(src, vn, "", c.ctx_name, grid_pair, &c, 0, err);
    if (strcmp(key, "sweep.derived") == 0) return walk_pairs(src, vn, "", c.ctx_name, derived_pair, &c, 0, err);
    return walk_pairs(src, vn, "", c.ctx_name, space_pair, &c, 0, err);
}

/* --- presets --- */

static const struct {
    const char *key;
    int is_int;
    double def; /* NaN: required */
    double lo, hi;
} PRESET_KEYS[] = {
    {"hidden_size", 1, NAN, 1, 1 << 16},
    {"num_hidden_layers", 1, NAN, 1, 1024},
    {"num_attention_heads", 1, NAN, 1, 1024},
    {"num_key_value_heads", 1, 0, 1, 1024}, /* 0: = num_attention_heads */
    {"intermediate_size", 1, NAN, 1, 1 << 18},
    {"max_position_embeddings", 1, 512, 1, 1 << 20},
    {"rms_norm_eps", 0, 1e-5, 1e-12, 1},
    {"rope_theta", 0, 10000, 1.0001, 1e9},
    {"tie_word_embeddings", 2, 1, 0, 1},
    {"initializer_range", 0, 0.02, 1e-9, 10},
};
#define N_PRESET_KEYS ((int)(sizeof PRESET_KEYS / sizeof PRESET_KEYS[0]))

static void preset_file(const char *preset, char *out, size_t cap) {
    size_t n = strlen(preset);
    if (strchr(preset, '/') || (n > 5 && strcmp(preset + n - 5, ".yaml") == 0) ||
        (n > 4 && strcmp(preset + n - 4, ".yml") == 0))
        snprintf(out, cap, "%s", preset);
    else snprintf(out, cap, "%s/%s.yaml", CONFIG_MODELS_DIR, preset);
}

static int cmp_name(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static void list_presets(char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    DIR *dir = opendir(CONFIG_MODELS_DIR);
    if (!dir) return;
    char names[64][64];
    int n = 0;
    for (struct dirent *de; (de = readdir(dir)) && n < 64;) {
        size_t l = strlen(de->d_name);
        if (l > 5 && l < 64 && strcmp(de->d_name + l - 5, ".yaml") == 0) {
            snprintf(names[n], sizeof names[n], "%.*s", (int)(l - 5), de->d_name);
            n++;
        }
    }
    closedir(dir);
    qsort(names, (size_t)n, sizeof names[0], cmp_name);
    for (int i = 0; i < n; i++) config_append(out, cap, &len, "%s%s", i ? ", " : "", names[i]);
}

LLStatus config_load_preset(const char *preset, ModelConfig *mc, char **canonical, LLError *err) {
    char path[1100];
    preset_file(preset, path, sizeof path);
    if (canonical) *canonical = NULL;
    char *text = NULL;
    size_t len = 0;
    if (ll_read_file(path, &text, &len, NULL) != LL_OK) {
        char avail[512];
        list_presets(avail, sizeof avail);
        return ll_err(err, LL_ERR_CONFIG, "base.preset '%s': cannot read %s%s%s%s", preset, path,
                      avail[0] ? " (presets in " CONFIG_MODELS_DIR ": " : "", avail, avail[0] ? ")" : "");
    }
    yaml_parser_t parser;
    yaml_document_t ydoc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &ydoc)) {
        LLStatus st = yaml_error(path, &parser, err);
        yaml_parser_delete(&parser);
        ll_free(text);
        return st;
    }
    double vals[N_PRESET_KEYS];
    int lines[N_PRESET_KEYS] = {0};
    for (int i = 0; i < N_PRESET_KEYS; i++) vals[i] = PRESET_KEYS[i].def;
    LLStatus st = LL_OK;
    yaml_node_t *root = yaml_document_get_root_node(&ydoc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        st = ll_err(err, LL_ERR_CONFIG, "%s: expected a mapping of model sizes (hidden_size: 128, ...)", path);
    }
    for (int i = 0; !st && i < mapping_len(root); i++) {
        yaml_node_pair_t *p = &root->data.mapping.pairs.start[i];
        yaml_node_t *kn = yaml_document_get_node(&ydoc, p->key), *vn = yaml_document_get_node(&ydoc, p->value);
        int ln = line_of(kn), k = -1;
        const char *name = kn->type == YAML_SCALAR_NODE ? scalar(kn) : "?";
        for (int j = 0; j < N_PRESET_KEYS; j++)
            if (strcmp(PRESET_KEYS[j].key, name) == 0) k = j;
        if (k < 0) {
            const char *best = NULL;
            int bd = 1 << 30;
            for (int j = 0; j < N_PRESET_KEYS; j++) {
                int dd = config_edit_distance(name, PRESET_KEYS[j].key);
                if (dd < bd) bd = dd, best = PRESET_KEYS[j].key;
            }
            if (bd <= (int)strlen(name) / 3 + 1)
                st = ll_err(err, LL_ERR_CONFIG, "%s:%d: unknown key '%s'; did you mean '%s'?", path, ln, name, best);
            else
                st = ll_err(err, LL_ERR_CONFIG, "%s:%d: unknown key '%s' (model files take Hugging Face LlamaConfig "
                            "names: hidden_size, num_hidden_layers, ...)", path, ln, name);
            break;
        }
        if (lines[k]) {
            st = ll_err(err, LL_ERR_CONFIG, "%s:%d: duplicate key '%s' (first at line %d)", path, ln, name, lines[k]);
            break;
        }
        lines[k] = ln;
        ConfigValue v = {0};
        if (vn->type == YAML_SCALAR_NODE && !is_null(vn)) scalar_value(vn, &v);
        double x = NAN;
        if (PRESET_KEYS[k].is_int == 2 && v.type == CFG_BOOL) x = (double)v.i;
        else if (PRESET_KEYS[k].is_int != 2 && (v.type == CFG_INT || v.type == CFG_FLOAT)) x = config_value_number(&v);
        config_value_free(&v);
        const char *want = PRESET_KEYS[k].is_int == 2 ? "true or false"
                           : PRESET_KEYS[k].is_int    ? "a whole number"
                                                      : "a number";
        if (isnan(x) || (PRESET_KEYS[k].is_int == 1 && x != floor(x)))
            st = ll_err(err, LL_ERR_CONFIG, "%s:%d: %s: expected %s", path, ln, name, want);
        else if (x < PRESET_KEYS[k].lo || x > PRESET_KEYS[k].hi)
            st = ll_err(err, LL_ERR_CONFIG, "%s:%d: %s: %g is outside [%g, %g]", path, ln, name, x, PRESET_KEYS[k].lo,
                        PRESET_KEYS[k].hi);
        else vals[k] = x;
    }
    for (int j = 0; !st && j < N_PRESET_KEYS; j++)
        if (isnan(vals[j])) st = ll_err(err, LL_ERR_CONFIG, "%s: missing key '%s'", path, PRESET_KEYS[j].key);
    if (!st) {
        memset(mc, 0, sizeof *mc);
        mc->C = (int)vals[0], mc->L = (int)vals[1], mc->NH = (int)vals[2];
        mc->NKV = vals[3] > 0 ? (int)vals[3] : mc->NH;
        mc->F = (int)vals[4], mc->max_T = (int)vals[5];
        mc->eps = (float)vals[6], mc->rope_theta = (float)vals[7], mc->tied = (int)vals[8];
        mc->init_range = (float)vals[9];
        if (mc->C % mc->NH != 0)
            st = ll_err(err, LL_ERR_CONFIG, "%s: hidden_size (%d) must be a multiple of num_attention_heads (%d)", path,
                        mc->C, mc->NH);
        mc->HS = mc->C / mc->NH;
        ModelConfig probe = *mc; /* the vocabulary comes later; validate the sizes with a stand-in */
        probe.V = 1024;
        LLError e;
        if (!st && model_config_validate(&probe, &e) != LL_OK) st = ll_err(err, LL_ERR_CONFIG, "%s: %s", path, e.msg);
    }
    if (!st && canonical) {
        char buf[1024], num[40];
        size_t blen = 0;
        double out[N_PRESET_KEYS] = {mc->C, mc->L, mc->NH, mc->NKV, mc->F, mc->max_T, mc->eps, mc->rope_theta,
                                     mc->tied, mc->init_range};
        buf[0] = '\0';
        for (int j = 0; j < N_PRESET_KEYS; j++) {
            if (PRESET_KEYS[j].is_int == 2) snprintf(num, sizeof num, "%s", out[j] ? "true" : "false");
            else config_fmt_number(out[j], !PRESET_KEYS[j].is_int, num, sizeof num);
            config_append(buf, sizeof buf, &blen, "%s\"base.model.%s\":%s", j ? "," : "", PRESET_KEYS[j].key, num);
        }
        *canonical = ll_strdup(buf);
    }
    yaml_document_delete(&ydoc);
    yaml_parser_delete(&parser);
    ll_free(text);
    return st;
}

static const ConfigPreset *doc_preset(const ConfigDoc *d, const char *name) {
    for (int i = 0; i < d->n_presets; i++)
        if (strcmp(d->presets[i].name, name) == 0) return &d->presets[i];
    return NULL;
}

static LLStatus doc_load_preset(ConfigDoc *d, const char *name, const char *loc, LLError *err) {
    if (doc_preset(d, name)) return LL_OK;
    ConfigPreset p = {0};
    snprintf(p.name, sizeof p.name, "%s", name);
    LLStatus st = config_load_preset(name, &p.mc, &p.canonical, err);
    if (st) {
        ll_err_prefix(err, "%s", loc);
        return st;
    }
    d->presets = ll_realloc(d->presets, (size_t)d->n_presets + 1, sizeof(ConfigPreset));
    d->presets[d->n_presets++] = p;
    return LL_OK;
}

/* --- --set --- */

static void axis_free(SweepAxis *ax) {
    for (int j = 0; j < ax->n; j++) config_value_free(&ax->values[j]);
    ll_free(ax->values);
}

static void space_free(SweepSpace *sp) {
    for (int j = 0; j < sp->n_choices; j++) config_value_free(&sp->choices[j]);
    ll_free(sp->choices);
}

static void free_axes(SweepAxis *ax, int n) {
    for (int i = 0; i < n; i++) axis_free(&ax[i]);
    ll_free(ax);
}

static void free_space(SweepSpace *sp, int n) {
    for (int i = 0; i < n; i++) space_free(&sp[i]);
    ll_free(sp);
}

/* Removes the axes (random-search keys) of key from a list. */
static void drop_axes(SweepAxis *ax, int *n, const char *key) {
    for (int i = 0; i < *n; i++)
        if (strcmp(ax[i].key, key) == 0) {
            axis_free(&ax[i]);
            memmove(&ax[i], &ax[i + 1], sizeof(SweepAxis) * (size_t)(*n - i - 1));
            (*n)--, i--;
        }
}

static void drop_space(SweepSpace *sp, int *n, const char *key) {
    for (int i = 0; i < *n; i++)
        if (strcmp(sp[i].key, key) == 0) {
            space_free(&sp[i]);
            memmove(&sp[i], &sp[i + 1], sizeof(SweepSpace) * (size_t)(*n - i - 1));
            (*n)--, i--;
        }
}

static LLStatus apply_set(ConfigDoc *d, const char *set, LLError *err) {
    const char *eq = strchr(set, '=');
    if (!eq || eq == set)
        return ll_err(err, LL_ERR_CONFIG, "--set: '%s' is not KEY=VALUE", set);
    char name[CONFIG_KEY_MAX], key[CONFIG_KEY_MAX];
    if ((size_t)(eq - set) >= sizeof name) return ll_err(err, LL_ERR_CONFIG, "--set: key too long in '%s'", set);
    snprintf(name, sizeof name, "%.*s", (int)(eq - set), set);
    if (config_key_is_sweep_special(name))
        return ll_err(err, LL_ERR_CONFIG, "--set: %s cannot be given on the command line; edit the file", name);
    if (!config_key_spec(name)) {
        LLError e;
        if (strchr(name, '.') || !config_short_name(name, key, sizeof key, &e)) {
            const char *s = config_suggest_key(name);
            if (s) return ll_err(err, LL_ERR_CONFIG, "--set: unknown key '%s'; did you mean '%s'?", name, s);
            return ll_err(err, LL_ERR_CONFIG, "--set: unknown key '%s'", name);
        }
    } else {
        snprintf(key, sizeof key, "%s", name);
    }
    const KeySpec *ks = config_key_spec(key);
    const char *val = eq + 1;
    if (!val[0]) return ll_err(err, LL_ERR_CONFIG, "--set: %s: no value given", key);
    yaml_parser_t parser;
    yaml_document_t ydoc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)val, strlen(val));
    if (!yaml_parser_load(&parser, &ydoc)) {
        ll_err(err, LL_ERR_CONFIG, "--set: %s: cannot read '%s' as a YAML value: %s", key, val,
               parser.problem ? parser.problem : "malformed");
        yaml_parser_delete(&parser);
        return LL_ERR_CONFIG;
    }
    Src src = {NULL, &ydoc};
    yaml_node_t *root = yaml_document_get_root_node(&ydoc);
    ConfigValue v;
    LLStatus st = root ? node_value(&src, root, ks, &v, err) : ll_err(err, LL_ERR_CONFIG, "--set: %s: no value", key);
    yaml_document_delete(&ydoc);
    yaml_parser_delete(&parser);
    if (st) return st;
    ConfigEntry *e = doc_find(d, key);
    if (e) config_value_free(&e->value);
    else e = doc_add(d, key);
    e->value = v;
    e->line = 0;
    e->from_set = 1;
    /* The command line wins over a sweep axis of the same key: the axis collapses to this value. */
    SweepSpec *sw = &d->sweep;
    drop_axes(sw->axes, &sw->n_axes, key);
    drop_space(sw->space, &sw->n_space, key);
    for (int m = 0; m < sw->n_per_method; m++) {
        drop_axes(sw->per_method[m].axes, &sw->per_method[m].n_axes, key);
        drop_space(sw->per_method[m].space, &sw->per_method[m].n_space, key);
    }
    for (int i = 0; i < sw->n_derived; i++)
        if (strcmp(sw->derived[i].key, key) == 0) {
            ll_free(sw->derived[i].expr);
            memmove(&sw->derived[i], &sw->derived[i + 1], sizeof(SweepDerived) * (size_t)(sw->n_derived - i - 1));
            sw->n_derived--, i--;
        }
    if (strcmp(key, "train.seed") == 0 && sw->n_seeds) {
        ll_free(sw->seeds);
        sw->seeds = NULL, sw->n_seeds = 0;
    }
    return LL_OK;
}

const ConfigValue *config_doc_value(const ConfigDoc *d, const char *key) {
    for (int i = 0; i < d->n_entries; i++)
        if (strcmp(d->entries[i].key, key) == 0) return &d->entries[i].value;
    return NULL;
}

int config_has_sweep(const ConfigDoc *d) {
    const SweepSpec *sw = &d->sweep;
    return sw->n_axes || sw->n_seeds || sw->n_space || sw->random_n || sw->n_derived || sw->n_exclude ||
           sw->n_per_method || sw->early_stop.type != ES_NONE;
}

void config_doc_free(ConfigDoc *d) {
    if (!d) return;
    ll_free(d->text);
    for (int i = 0; i < d->n_entries; i++) config_value_free(&d->entries[i].value);
    ll_free(d->entries);
    SweepSpec *sw = &d->sweep;
    free_axes(sw->axes, sw->n_axes);
    ll_free(sw->seeds);
    free_space(sw->space, sw->n_space);
    for (int i = 0; i < sw->n_per_method; i++) {
        free_axes(sw->per_method[i].axes, sw->per_method[i].n_axes);
        free_space(sw->per_method[i].space, sw->per_method[i].n_space);
    }
    ll_free(sw->per_method);
    for (int i = 0; i < sw->n_derived; i++) ll_free(sw->derived[i].expr);
    ll_free(sw->derived);
    for (int i = 0; i < sw->n_exclude; i++) config_assign_free(sw->exclude[i].match, sw->exclude[i].n);
    ll_free(sw->exclude);
    for (int i = 0; i < d->n_presets; i++) ll_free(d->presets[i].canonical);
    ll_free(d->presets);
    ll_free(d);
}

/* per_method keys are swept nowhere else in the file (two sources of values for one key would
 * make the plan depend on which wins); its random-search keys need sweep.random.n. A value set in
 * the file is allowed: the method's values win over it for that method only. */
static LLStatus check_per_method(const ConfigDoc *d, LLError *err) {
    const SweepSpec *sw = &d->sweep;
    for (int m = 0; m < sw->n_per_method; m++) {
        const SweepMethod *pm = &sw->per_method[m];
        for (int i = 0; i < pm->n_axes + pm->n_space; i++) {
            int drawn = i >= pm->n_axes;
            const char *key = drawn ? pm->space[i - pm->n_axes].key : pm->axes[i].key;
            int line = drawn ? pm->space[i - pm->n_axes].line : pm->axes[i].line;
            char at[1200];
            snprintf(at, sizeof at, "%s:%d: sweep.per_method.%s: %s", d->path, line, pm->variant, key);
            if (drawn && !sw->random_n)
                return ll_err(err, LL_ERR_CONFIG, "%s: a distribution needs sweep.random.n (how many points)", at);
            for (int j = 0; j < sw->n_axes; j++)
                if (strcmp(sw->axes[j].key, key) == 0)
                    return ll_err(err, LL_ERR_CONFIG, "%s is also a sweep.grid axis (line %d); give it in one place",
                                  at, sw->axes[j].line);
            for (int j = 0; j < sw->n_space; j++)
                if (strcmp(sw->space[j].key, key) == 0)
                    return ll_err(err, LL_ERR_CONFIG, "%s is also a sweep.random.space key (line %d); give it in one "
                                  "place", at, sw->space[j].line);
            for (int j = 0; j < sw->n_derived; j++)
                if (strcmp(sw->derived[j].key, key) == 0)
                    return ll_err(err, LL_ERR_CONFIG, "%s is also derived (line %d); give it in one place", at,
                                  sw->derived[j].line);
        }
    }
    return LL_OK;
}

/* Checks across the sweep section that need the whole file: conflicts between axes, random keys,
 * derived keys, seeds, and the file's own values; and the presets every point can name. */
static LLStatus check_sweep(ConfigDoc *d, LLError *err) {
    SweepSpec *sw = &d->sweep;
    const ConfigEntry *se = doc_find(d, "sweep.seeds");
    if (se) {
        sw->n_seeds = se->value.n;
        sw->seeds = ll_malloc((size_t)se->value.n + 1, sizeof(int64_t));
        for (int i = 0; i < se->value.n; i++) sw->seeds[i] = (int64_t)se->value.nums[i];
        for (int i = 0; i < sw->n_axes; i++)
            if (strcmp(sw->axes[i].key, "train.seed") == 0)
                return ll_err(err, LL_ERR_CONFIG, "%s:%d: sweep.seeds and a train.seed grid axis (line %d) are both "
                              "given; keep one", d->path, se->line, sw->axes[i].line);
    }
    const ConfigEntry *rn = doc_find(d, "sweep.random.n"), *rs = doc_find(d, "sweep.random.seed");
    sw->random_n = rn ? (int)rn->value.i : 0;
    sw->random_seed = rs ? (uint64_t)rs->value.i : 0;
    if (sw->n_space && !sw->random_n)
        return ll_err(err, LL_ERR_CONFIG, "%s:%d: sweep.random.space needs sweep.random.n (how many points)", d->path,
                      sw->space[0].line);
    int any_space = sw->n_space > 0;
    for (int m = 0; m < sw->n_per_method; m++) any_space |= sw->per_method[m].n_space > 0;
    if (sw->random_n && !any_space)
        return ll_err(err, LL_ERR_CONFIG, "%s:%d: sweep.random.n needs sweep.random.space (what to draw)", d->path,
                      rn->line);
    LLStatus pst = check_per_method(d, err);
    if (pst) return pst;
    for (int i = 0; i < sw->n_space; i++) {
        for (int j = 0; j < sw->n_axes; j++)
            if (strcmp(sw->space[i].key, sw->axes[j].key) == 0)
                return ll_err(err, LL_ERR_CONFIG, "%s:%d: %s is both a grid axis (line %d) and a random-search key",
                              d->path, sw->space[i].line, sw->space[i].key, sw->axes[j].line);
        if (strcmp(sw->space[i].key, "train.seed") == 0 && sw->n_seeds)
            return ll_err(err, LL_ERR_CONFIG, "%s:%d: train.seed is drawn at random and given by sweep.seeds", d->path,
                          sw->space[i].line);
    }
    for (int i = 0; i < sw->n_derived; i++) {
        const SweepDerived *dv = &sw->derived[i];
        for (int j = 0; j < sw->n_axes; j++)
            if (strcmp(dv->key, sw->axes[j].key) == 0)
                return ll_err(err, LL_ERR_CONFIG, "%s:%d: %s is both a grid axis (line %d) and derived", d->path,
                              dv->line, dv->key, sw->axes[j].line);
        for (int j = 0; j < sw->n_space; j++)
            if (strcmp(dv->key, sw->space[j].key) == 0)
                return ll_err(err, LL_ERR_CONFIG, "%s:%d: %s is both a random-search key and derived", d->path,
                              dv->line, dv->key);
        const ConfigEntry *e = doc_find(d, dv->key);
        if (e && !e->from_set)
            return ll_err(err, LL_ERR_CONFIG, "%s:%d: %s is set (line %d) and derived; keep one", d->path, dv->line,
                          dv->key, e->line);
        if (strcmp(dv->key, "train.seed") == 0 && sw->n_seeds)
            return ll_err(err, LL_ERR_CONFIG, "%s:%d: train.seed is derived and given by sweep.seeds", d->path,
                          dv->line);
    }
    /* A key fixed in the file and swept is a mistake (the sweep would silently win). */
    for (int j = 0; j < sw->n_axes; j++) {
        const ConfigEntry *e = doc_find(d, sw->axes[j].key);
        if (e && !e->from_set)
            return ll_err(err, LL_ERR_CONFIG, "%s:%d: %s is set (line %d) and is a grid axis; keep one", d->path,
                          sw->axes[j].line, sw->axes[j].key, e->line);
    }
    for (int j = 0; j < sw->n_space; j++) {
        const ConfigEntry *e = doc_find(d, sw->space[j].key);
        if (e && !e->from_set)
            return ll_err(err, LL_ERR_CONFIG, "%s:%d: %s is set (line %d) and drawn at random; keep one", d->path,
                          sw->space[j].line, sw->space[j].key, e->line);
    }
    /* Presets every point may name, loaded now so that a missing file is reported before any run. */
    char loc[1100];
    const ConfigEntry *pe = doc_find(d, "base.preset");
    if (pe) {
        if (pe->from_set) snprintf(loc, sizeof loc, "--set");
        else snprintf(loc, sizeof loc, "%s:%d", d->path, pe->line);
        LLStatus st = doc_load_preset(d, pe->value.s, loc, err);
        if (st) return st;
    }
    for (int m = -1; m < sw->n_per_method; m++) {
        const SweepAxis *ax = m < 0 ? sw->axes : sw->per_method[m].axes;
        const SweepSpace *sp = m < 0 ? sw->space : sw->per_method[m].space;
        int nax = m < 0 ? sw->n_axes : sw->per_method[m].n_axes, nsp = m < 0 ? sw->n_space : sw->per_method[m].n_space;
        for (int j = 0; j < nax; j++)
            if (strcmp(ax[j].key, "base.preset") == 0)
                for (int k = 0; k < ax[j].n; k++) {
                    snprintf(loc, sizeof loc, "%s:%d", d->path, ax[j].line);
                    LLStatus st = doc_load_preset(d, ax[j].values[k].s, loc, err);
                    if (st) return st;
                }
        for (int j = 0; j < nsp; j++)
            if (strcmp(sp[j].key, "base.preset") == 0)
                for (int k = 0; k < sp[j].n_choices; k++) {
                    snprintf(loc, sizeof loc, "%s:%d", d->path, sp[j].line);
                    LLStatus st = doc_load_preset(d, sp[j].choices[k].s, loc, err);
                    if (st) return st;
                }
    }
    return LL_OK;
}

LLStatus config_load_text(const char *path, const char *text, const char *const *sets, int n_sets, ConfigDoc **out,
                          LLError *err) {
    *out = NULL;
    ConfigDoc *d = ll_calloc(1, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(d->default_name, sizeof d->default_name, "%s", base);
    char *dot = strrchr(d->default_name, '.');
    if (dot && dot != d->default_name) *dot = '\0';
    for (char *p = d->default_name; *p; p++) /* a usable name whatever the file is called */
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') *p = '_';
    if (d->default_name[0] == '.' || !d->default_name[0]) d->default_name[0] = '_';
    /* The text as stored with the sweep: the file plus the overrides that shaped this plan. */
    size_t tl = strlen(text), cap = tl + 64;
    for (int i = 0; i < n_sets; i++) cap += strlen(sets[i]) + 16;
    d->text = ll_malloc(cap, 1);
    size_t len = 0;
    config_append(d->text, cap, &len, "%s", text);
    for (int i = 0; i < n_sets; i++)
        config_append(d->text, cap, &len, "%s# --set %s\n", i == 0 && tl && text[tl - 1] != '\n' ? "\n" : "", sets[i]);

    yaml_parser_t parser;
    yaml_document_t ydoc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, tl);
    if (!yaml_parser_load(&parser, &ydoc)) {
        LLStatus st = yaml_error(path, &parser, err);
        yaml_parser_delete(&parser);
        config_doc_free(d);
        return st;
    }
    Src src = {path, &ydoc};
    LLStatus st = LL_OK;
    yaml_node_t *root = yaml_document_get_root_node(&ydoc);
    if (root && !(root->type == YAML_SCALAR_NODE && is_null(root))) {
        if (root->type != YAML_MAPPING_NODE)
            st = ll_err(err, LL_ERR_CONFIG, "%s:%d: expected a mapping of keys (name: ..., train: {...}, ...)", path,
                        line_of(root));
        else st = walk_pairs(&src, root, "", "", file_pair, d, 0, err);
    }
    yaml_document_delete(&ydoc);
    yaml_parser_delete(&parser);
    for (int i = 0; !st && i < n_sets; i++) st = apply_set(d, sets[i], err);
    if (!st) st = check_sweep(d, err);
    if (st) {
        config_doc_free(d);
        return st;
    }
    *out = d;
    return LL_OK;
}

LLStatus config_load(const char *path, const char *const *sets, int n_sets, ConfigDoc **doc, LLError *err) {
    char *text = NULL;
    size_t len = 0;
    *doc = NULL;
    LLStatus st = ll_read_file(path, &text, &len, err);
    if (st) return st;
    if (strlen(text) != len) {
        ll_free(text);
        return ll_err(err, LL_ERR_CONFIG, "%s: the file contains a NUL byte; is it a YAML text file?", path);
    }
    st = config_load_text(path, text, sets, n_sets, doc, err);
    ll_free(text);
    return st;
}

/* ---- resolution ------------------------------------------------------------------------------ */

static const ConfigValue *lookup(const ConfigDoc *d, const ConfigAssign *ov, int n, const char *key) {
    for (int i = n - 1; i >= 0; i--) /* the last override of a key wins */
        if (strcmp(ov[i].key, key) == 0) return &ov[i].value;
    const ConfigEntry *e = doc_find(d, key);
    return e ? &e->value : NULL;
}

/* Where a key's value came from, for cross-key messages. */
static void key_where(const ConfigDoc *d, const ConfigAssign *ov, int n, const char *key, char *out, size_t cap) {
    for (int i = 0; i < n; i++)
        if (strcmp(ov[i].key, key) == 0) {
            snprintf(out, cap, "%s (sweep point)", d->path);
            return;
        }
    const ConfigEntry *e = doc_find(d, key);
    if (e && e->from_set) snprintf(out, cap, "--set");
    else if (e) snprintf(out, cap, "%s:%d", d->path, e->line);
    else snprintf(out, cap, "%s", d->path);
}

static AdapterMethod method_of(const ConfigDoc *d, const ConfigAssign *ov, int n) {
    const ConfigValue *v = lookup(d, ov, n, "adapter.method");
    AdapterMethod m = ADAPTER_LORA;
    if (v) config_variant_method(v->s, &m); /* dora, rslora, ... are LoRA */
    return m;
}


int config_number(const ConfigDoc *d, const ConfigAssign *ov, int n, const char *key, double *out) {
    const KeySpec *ks = config_key_spec(key);
    if (!ks || !(config_key_numeric(ks) || ks->type == CFG_BOOL)) return 0;
    const ConfigValue *v = lookup(d, ov, n, key);
    if (v) {
        *out = v->type == CFG_FLOAT ? v->f : (double)v->i;
        return 1;
    }
    if (strcmp(key, "adapter.seed") == 0) return config_number(d, ov, n, "train.seed", out);
    if (ks->st == FS_NONE) {
        *out = ks->def ? strtod(ks->def, NULL) : 0.0;
        return 1;
    }
    RunConfig tmp;
    memset(&tmp, 0, sizeof tmp);
    config_engine_defaults(&tmp, method_of(d, ov, n));
    *out = config_field_read(config_field_cptr(&tmp, ks), ks->fk);
    return 1;
}


static int key_relevant(const RunConfig *rc, const KeySpec *ks) {
    if (ks->flags & B_NOT_RUN) return 0;
    if (strcmp(ks->key, "base.path") == 0) return !rc->pretrain;
    /* Added after databases existed: left out at their defaults so that their run keys still hold. */
    if (strcmp(ks->key, "train.precision") == 0) return rc->train.bf16;
    if (strcmp(ks->key, "train.keep") == 0) return rc->train.keep != TRAIN_KEEP_BEST;
    if (strcmp(ks->key, "adapter.lr_ratio") == 0)
        return rc->adapter.lr_ratio != 1.0f && config_method_reads(rc->adapter.method, ks->key);
    if (strcmp(ks->key, "train.base_quant") == 0) return rc->train.base_quant != QUANT_NONE;
    if (strcmp(ks->key, "train.double_quant") == 0) return rc->train.base_quant == QUANT_NF4;
    if (strncmp(ks->key, "base.", 5) == 0) {
        if (!rc->pretrain) return 0;
        if (strcmp(ks->key, "base.vocab_size") == 0) return rc->base_bpe;
        return 1;
    }
    return config_method_reads(rc->adapter.method, ks->key);
}

static void fill_patterns(AdapterPattern *dst, int *n, const ConfigValue *v) {
    *n = v->n;
    for (int i = 0; i < v->n; i++) {
        snprintf(dst[i].key, sizeof dst[i].key, "%s", v->names[i]);
        dst[i].value = (float)v->nums[i];
    }
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void free_eval_sets(RunConfig *rc) {
    for (int i = 0; i < rc->n_eval_sets; i++) ll_free(rc->eval_set_names[i]), ll_free(rc->eval_set_paths[i]);
    ll_free(rc->eval_set_names);
    ll_free(rc->eval_set_paths);
    rc->eval_set_names = rc->eval_set_paths = NULL;
    rc->n_eval_sets = 0;
}

/* Applies a special (non-field) key's value. */
static void apply_special(RunConfig *rc, const ConfigDoc *d, const KeySpec *ks, const ConfigValue *v) {
    const char *k = ks->key;
    if (strcmp(k, "name") == 0) snprintf(rc->name, sizeof rc->name, "%s", v->s);
    else if (strcmp(k, "output.dir") == 0) snprintf(rc->out_dir, sizeof rc->out_dir, "%s", v->s);
    else if (strcmp(k, "base.path") == 0) snprintf(rc->base_path, sizeof rc->base_path, "%s", v->s);
    else if (strcmp(k, "base.preset") == 0) snprintf(rc->base_preset, sizeof rc->base_preset, "%s", v->s);
    else if (strcmp(k, "base.data") == 0) snprintf(rc->base_data, sizeof rc->base_data, "%s", v->s);
    else if (strcmp(k, "base.tokenizer") == 0) rc->base_bpe = strcmp(v->s, "bpe") == 0;
    else if (strcmp(k, "base.vocab_size") == 0) rc->base_vocab = (int)v->i;
    else if (strcmp(k, "adapter.method") == 0) { /* a LoRA variant sets what makes it one; keys after win */
        if (strcmp(v->s, "dora") == 0) rc->adapter.use_dora = 1;
        if (strcmp(v->s, "rslora") == 0) rc->adapter.use_rslora = 1;
        if (strcmp(v->s, "pissa") == 0) rc->adapter.init = ADAPTER_INIT_PISSA;
        /* LoRA+ without a ratio: the paper's suggestion for transformers, 2^4 (Hayou et al. 2024,
         * section 4; shared/reference section 7); adapter.lr_ratio, applied after, overrides it */
        if (strcmp(v->s, "loraplus") == 0) rc->adapter.lr_ratio = 16.0f;
    }
    else if (strcmp(k, "task.type") == 0) rc->task_cls = strcmp(v->s, "cls") == 0;
    else if (strcmp(k, "task.data") == 0) snprintf(rc->task_data, sizeof rc->task_data, "%s", v->s);
    else if (strcmp(k, "task.eval_sets") == 0) {
        free_eval_sets(rc);
        rc->n_eval_sets = v->n;
        rc->eval_set_names = ll_calloc((size_t)v->n + 1, sizeof(char *));
        rc->eval_set_paths = ll_calloc((size_t)v->n + 1, sizeof(char *));
        for (int i = 0; i < v->n; i++)
            rc->eval_set_names[i] = ll_strdup(v->names[i]), rc->eval_set_paths[i] = ll_strdup(v->strs[i]);
    } else if (strcmp(k, "train.diagnostics") == 0) rc->diagnostics = v->i != 0;
    else if (strcmp(k, "train.schedule") == 0) lr_schedule_from_name(v->s, &rc->train.schedule);
    else if (strcmp(k, "train.precision") == 0) rc->train.bf16 = strcmp(v->s, "bf16") == 0;
    else if (strcmp(k, "train.keep") == 0) rc->train.keep = strcmp(v->s, "last") == 0 ? TRAIN_KEEP_LAST : TRAIN_KEEP_BEST;
    else if (strcmp(k, "train.base_quant") == 0) {
        QuantFormat f = QUANT_NONE;
        quant_format_from_name(v->s, &f); /* checked against the key's choices already */
        rc->train.base_quant = f;
    } else if (strcmp(k, "adapter.targets") == 0) rc->adapter.targets = config_targets_mask(v);
    else if (strcmp(k, "adapter.layers") == 0) {
        int n = 0;
        for (int i = 0; i < v->n; i++) { /* a set: sorted, without repeats */
            int x = (int)v->nums[i], seen = 0;
            for (int j = 0; j < n; j++) seen |= rc->adapter.layers[j] == x;
            if (!seen) rc->adapter.layers[n++] = x;
        }
        qsort(rc->adapter.layers, (size_t)n, sizeof(int), cmp_int);
        rc->adapter.n_layers = n;
    } else if (strcmp(k, "adapter.init") == 0)
        rc->adapter.init = strcmp(v->s, "pissa") == 0      ? ADAPTER_INIT_PISSA
                           : strcmp(v->s, "loftq") == 0    ? ADAPTER_INIT_LOFTQ
                           : strcmp(v->s, "gaussian") == 0 ? ADAPTER_INIT_GAUSSIAN
                                                           : ADAPTER_INIT_KAIMING;
    else if (strcmp(k, "adapter.rank_pattern") == 0)
        fill_patterns(rc->adapter.rank_pattern, &rc->adapter.n_rank_pattern, v);
    else if (strcmp(k, "adapter.alpha_pattern") == 0)
        fill_patterns(rc->adapter.alpha_pattern, &rc->adapter.n_alpha_pattern, v);
    (void)d;
}

/* Canonical JSON members. */
typedef struct {
    char key[CONFIG_KEY_MAX];
    char *json;
} Member;

static void json_string(const char *s, char *out, size_t cap) {
    size_t len = 0;
    config_append(out, cap, &len, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') config_append(out, cap, &len, "\\%c", *p);
        else if (*p < 0x20) config_append(out, cap, &len, "\\u%04x", *p);
        else config_append(out, cap, &len, "%c", *p);
    }
    config_append(out, cap, &len, "\"");
}

static int cmp_pattern(const void *a, const void *b) {
    return strcmp(((const AdapterPattern *)a)->key, ((const AdapterPattern *)b)->key);
}

static void json_patterns(const AdapterPattern *pats, int n, int f32, char *out, size_t cap) {
    AdapterPattern sorted[ADAPTER_MAX_PATTERNS];
    memcpy(sorted, pats, sizeof(AdapterPattern) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof sorted[0], cmp_pattern);
    size_t len = 0;
    char key[300], num[40];
    config_append(out, cap, &len, "{");
    for (int i = 0; i < n; i++) {
        json_string(sorted[i].key, key, sizeof key);
        config_fmt_number(sorted[i].value, f32, num, sizeof num);
        config_append(out, cap, &len, "%s%s:%s", i ? "," : "", key, num);
    }
    config_append(out, cap, &len, "}");
}

/* The JSON text of one key's resolved value. */
static void member_json(const RunConfig *rc, const KeySpec *ks, char *out, size_t cap) {
    const char *k = ks->key;
    const AdapterConfig *a = &rc->adapter;
    if (ks->st != FS_NONE) {
        double x = config_field_read(config_field_cptr(rc, ks), ks->fk);
        if (ks->type == CFG_BOOL) snprintf(out, cap, "%s", x != 0 ? "true" : "false");
        else config_fmt_number(x, ks->fk == FK_F32, out, cap);
        return;
    }
    if (strcmp(k, "base.path") == 0) json_string(rc->base_path, out, cap);
    else if (strcmp(k, "base.preset") == 0) json_string(rc->base_preset, out, cap);
    else if (strcmp(k, "base.data") == 0) json_string(rc->base_data, out, cap);
    else if (strcmp(k, "base.tokenizer") == 0) json_string(rc->base_bpe ? "bpe" : "bytes", out, cap);
    else if (strcmp(k, "base.vocab_size") == 0) snprintf(out, cap, "%d", rc->base_vocab);
    else if (strcmp(k, "task.type") == 0) json_string(rc->task_cls ? "cls" : "lm", out, cap);
    else if (strcmp(k, "task.data") == 0) json_string(rc->task_data, out, cap);
    else if (strcmp(k, "train.schedule") == 0) json_string(lr_schedule_name(rc->train.schedule), out, cap);
    else if (strcmp(k, "train.precision") == 0) json_string(rc->train.bf16 ? "bf16" : "fp32", out, cap);
    else if (strcmp(k, "train.keep") == 0) json_string(rc->train.keep == TRAIN_KEEP_LAST ? "last" : "best", out, cap);
    else if (strcmp(k, "train.base_quant") == 0) json_string(quant_format_name(rc->train.base_quant), out, cap);
    else if (strcmp(k, "adapter.method") == 0) json_string(adapter_method_name(a->method), out, cap);
    else if (strcmp(k, "adapter.init") == 0)
        json_string(a->init == ADAPTER_INIT_PISSA    ? "pissa"
                    : a->init == ADAPTER_INIT_LOFTQ  ? "loftq"
                    : a->init == ADAPTER_INIT_GAUSSIAN ? "gaussian"
                                                       : "kaiming",
                    out, cap);
    else if (strcmp(k, "adapter.targets") == 0) {
        size_t len = 0;
        config_append(out, cap, &len, "[");
        for (int m = 0, first = 1; m < MOD_COUNT; m++)
            if (a->targets & (1u << m))
                config_append(out, cap, &len, "%s\"%s\"", first ? "" : ",", model_module_name(m)), first = 0;
        config_append(out, cap, &len, "]");
    } else if (strcmp(k, "adapter.layers") == 0) {
        size_t len = 0;
        config_append(out, cap, &len, "[");
        for (int i = 0; i < a->n_layers; i++) config_append(out, cap, &len, "%s%d", i ? "," : "", a->layers[i]);
        config_append(out, cap, &len, "]");
    } else if (strcmp(k, "adapter.rank_pattern") == 0) json_patterns(a->rank_pattern, a->n_rank_pattern, 1, out, cap);
    else if (strcmp(k, "adapter.alpha_pattern") == 0) json_patterns(a->alpha_pattern, a->n_alpha_pattern, 1, out, cap);
    else snprintf(out, cap, "null");
}

static int cmp_member(const void *a, const void *b) {
    return strcmp(((const Member *)a)->key, ((const Member *)b)->key);
}

/* Builds "{...}" from members whose key starts with prefix ("" for all), sorted by key. */
static char *join_members(Member *m, int n, const char *prefix) {
    size_t cap = 3;
    for (int i = 0; i < n; i++) cap += strlen(m[i].key) + strlen(m[i].json) + 4;
    char *out = ll_malloc(cap, 1);
    size_t len = 0, pl = strlen(prefix);
    int first = 1;
    out[0] = '\0';
    config_append(out, cap, &len, "{");
    for (int i = 0; i < n; i++) {
        if (strncmp(m[i].key, prefix, pl) != 0) continue;
        config_append(out, cap, &len, "%s\"%s\":%s", first ? "" : ",", m[i].key, m[i].json);
        first = 0;
    }
    config_append(out, cap, &len, "}");
    return out;
}

static void add_member(Member **m, int *n, const char *key, const char *json) {
    *m = ll_realloc(*m, (size_t)*n + 1, sizeof(Member));
    snprintf((*m)[*n].key, sizeof(*m)[*n].key, "%s", key);
    (*m)[*n].json = ll_strdup(json);
    (*n)++;
}

static void build_canonical(RunConfig *rc, const char *preset_members) {
    Member *m = NULL;
    int n = 0;
    char json[8192];
    int n_keys;
    const KeySpec *keys = config_keys(&n_keys);
    for (int i = 0; i < n_keys; i++) {
        if (!key_relevant(rc, &keys[i])) continue;
        member_json(rc, &keys[i], json, sizeof json);
        add_member(&m, &n, keys[i].key, json);
    }
    if (rc->pretrain && preset_members) { /* "base.model.x":v,... split back into members */
        char *copy = ll_strdup(preset_members), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *colon = strchr(tok, ':');
            if (!colon || tok[0] != '"' || colon[-1] != '"') continue;
            colon[-1] = '\0';
            add_member(&m, &n, tok + 1, colon + 1);
        }
        ll_free(copy);
    }
    qsort(m, (size_t)n, sizeof *m, cmp_member);
    char hex[65];
    if (rc->pretrain) {
        char *base = join_members(m, n, "base.");
        config_sha256_hex(base, strlen(base), hex);
        snprintf(rc->base_hash, sizeof rc->base_hash, "%.16s", hex);
        snprintf(rc->base_path, sizeof rc->base_path, "%s/%s", CONFIG_BASES_DIR, rc->base_hash);
        ll_free(base);
    }
    rc->canonical_json = join_members(m, n, "");
    config_sha256_hex(rc->canonical_json, strlen(rc->canonical_json), hex);
    snprintf(rc->key, sizeof rc->key, "%.16s", hex);
    for (int i = 0; i < n; i++) ll_free(m[i].json);
    ll_free(m);
}

void run_config_free(RunConfig *rc) {
    if (!rc) return;
    ll_free(rc->canonical_json);
    rc->canonical_json = NULL;
    free_eval_sets(rc);
}

/* Defaults, then every value the document and the overrides give (values of the wrong type, such
 * as a grid axis's unevaluated expression, are skipped: config_resolve refuses them first). */
static void apply_values(const ConfigDoc *d, const ConfigAssign *ov, int n, AdapterMethod method, RunConfig *rc) {
    config_engine_defaults(rc, method);
    snprintf(rc->name, sizeof rc->name, "%s", d->default_name);
    snprintf(rc->out_dir, sizeof rc->out_dir, "%s", CONFIG_DEFAULT_OUT_DIR);
    rc->base_bpe = 1, rc->base_vocab = 1024;
    rc->diagnostics = 1;
    int n_keys;
    const KeySpec *keys = config_keys(&n_keys);
    for (int i = 0; i < n_keys; i++) {
        const KeySpec *ks = &keys[i];
        const ConfigValue *v = lookup(d, ov, n, ks->key);
        if (!v || (v->type != ks->type && !(ks->type == CFG_FLOAT && v->type == CFG_INT))) continue;
        if (ks->st != FS_NONE)
            config_field_write(config_field_ptr(rc, ks), ks->fk, v->type == CFG_FLOAT ? v->f : (double)v->i);
        else apply_special(rc, d, ks, v);
    }
    rc->adapter.method = method;
    if (!lookup(d, ov, n, "adapter.seed")) rc->adapter.seed = rc->train.seed; /* follows train.seed */
    rc->adapter.total_step = rc->train.steps;
}

const char *config_variant(const ConfigDoc *d, const ConfigAssign *ov, int n) {
    /* A variant named by adapter.method is the point's method even before the keys that make it
     * one are set (loraplus with its per-method lr_ratio axis); resolution checks that they are. */
    const ConfigValue *mv = lookup(d, ov, n, "adapter.method");
    if (mv && mv->type == CFG_STRING && config_variant_implies(mv->s)) return mv->s;
    RunConfig rc;
    memset(&rc, 0, sizeof rc);
    apply_values(d, ov, n, method_of(d, ov, n), &rc);
    run_config_free(&rc);
    return adapter_variant_name(&rc.adapter);
}

LLStatus config_resolve(const ConfigDoc *d, const ConfigAssign *ov, int n, RunConfig *rc, LLError *err) {
    memset(rc, 0, sizeof *rc);
    char w1[1100], w2[1100];
    for (int i = 0; i < n; i++) { /* overrides from callers other than config_load: check them too */
        const KeySpec *ks = config_key_spec(ov[i].key);
        if (!ks) return ll_err(err, LL_ERR_CONFIG, "%s: unknown key '%s' in a sweep point", d->path, ov[i].key);
        if (ov[i].value.type != ks->type && !(ks->type == CFG_FLOAT && ov[i].value.type == CFG_INT))
            return ll_err(err, LL_ERR_CONFIG, "%s: %s: expected %s in a sweep point", d->path, ov[i].key,
                          config_type_name(ks->type));
    }
    AdapterMethod method = method_of(d, ov, n);
    apply_values(d, ov, n, method, rc);
    int n_keys;
    const KeySpec *keys = config_keys(&n_keys);
    /* `adapter.method: dora` (a variant) must give a dora run: another key may contradict it. */
    const ConfigValue *mv = lookup(d, ov, n, "adapter.method");
    const char *made = adapter_variant_name(&rc->adapter);
    if (mv && config_variant_implies(mv->s) && strcmp(made, mv->s) != 0) {
        key_where(d, ov, n, "adapter.method", w1, sizeof w1);
        return ll_err(err, LL_ERR_CONFIG, "%s: adapter.method: '%s' is LoRA with %s, but the config makes a '%s' run",
                      w1, mv->s, config_variant_implies(mv->s), made);
    }

    /* The base model: a folder, or the pretraining keys. */
    const ConfigValue *bp = lookup(d, ov, n, "base.path"), *pr = lookup(d, ov, n, "base.preset");
    if (bp && pr) {
        key_where(d, ov, n, "base.path", w1, sizeof w1);
        key_where(d, ov, n, "base.preset", w2, sizeof w2);
        return ll_err(err, LL_ERR_CONFIG,
                      "%s: base.path and base.preset are both set (base.preset at %s); a config takes a model folder "
                      "or a preset to pretrain, not both", w1, w2);
    }
    if (!bp && !pr)
        return ll_err(err, LL_ERR_CONFIG,
                      "%s: no base model: set base.path (a model folder) or base.preset (tiny|small|medium) with "
                      "base.data", d->path);
    const char *preset_members = NULL;
    char *own_members = NULL;
    if (pr) {
        rc->pretrain = 1;
        const ConfigPreset *p = doc_preset(d, pr->s);
        if (p) {
            rc->base_model = p->mc;
            preset_members = p->canonical;
        } else {
            LLStatus st = config_load_preset(pr->s, &rc->base_model, &own_members, err);
            if (st) {
                key_where(d, ov, n, "base.preset", w1, sizeof w1);
                ll_err_prefix(err, "%s", w1);
                return st;
            }
            preset_members = own_members;
        }
        if (!lookup(d, ov, n, "base.data")) {
            ll_free(own_members);
            key_where(d, ov, n, "base.preset", w1, sizeof w1);
            return ll_err(err, LL_ERR_CONFIG, "%s: base.preset needs base.data (the pretraining corpus folder with "
                          "train.txt and valid.txt)", w1);
        }
    }
    LLStatus st = LL_OK;
    const TrainConfig *t = &rc->train;
    const AdapterConfig *a = &rc->adapter;
    if (!lookup(d, ov, n, "task.data")) {
        st = ll_err(err, LL_ERR_CONFIG, "%s: task.data is not set (the folder with the train/valid/test files)",
                    d->path);
    } else if (t->warmup > t->steps) {
        key_where(d, ov, n, "train.warmup", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG, "%s: train.warmup (%d) is longer than train.steps (%d)", w1, t->warmup,
                    t->steps);
    } else if (rc->pretrain && rc->base_train.warmup > rc->base_train.steps) {
        key_where(d, ov, n, "base.warmup", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG, "%s: base.warmup (%d) is longer than base.steps (%d)", w1,
                    rc->base_train.warmup, rc->base_train.steps);
    } else if (rc->pretrain && (t->seq > rc->base_model.max_T || rc->base_train.seq > rc->base_model.max_T)) {
        key_where(d, ov, n, t->seq > rc->base_model.max_T ? "train.seq" : "base.seq", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG, "%s: %s (%d) exceeds max_position_embeddings (%d) of preset '%s'", w1,
                    t->seq > rc->base_model.max_T ? "train.seq" : "base.seq",
                    t->seq > rc->base_model.max_T ? t->seq : rc->base_train.seq, rc->base_model.max_T, rc->base_preset);
    } else if (method == ADAPTER_ADALORA && !(a->tinit < t->steps - a->tfinal)) {
        key_where(d, ov, n, "adapter.tinit", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG,
                    "%s: AdaLoRA needs adapter.tinit (%d) < train.steps (%d) - adapter.tfinal (%d): the rank budget "
                    "needs steps to shrink in", w1, a->tinit, t->steps, a->tfinal);
    } else if (method == ADAPTER_ADALORA && !(a->init_r > a->target_r)) {
        key_where(d, ov, n, "adapter.init_r", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG, "%s: AdaLoRA needs adapter.init_r (%d) > adapter.target_r (%d)", w1, a->init_r,
                    a->target_r);
    } else if (a->init == ADAPTER_INIT_LOFTQ && (t->base_quant == QUANT_NONE || method != ADAPTER_LORA)) {
        key_where(d, ov, n, "adapter.init", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG,
                    "%s: adapter.init loftq starts LoRA from the quantization residual W - dequant(Q): it needs "
                    "adapter.method lora and train.base_quant nf4 or q8_0", w1);
    } else if (a->init == ADAPTER_INIT_PISSA && t->base_quant != QUANT_NONE) {
        key_where(d, ov, n, "adapter.init", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG,
                    "%s: adapter.init pissa rewrites the base weights, and train.base_quant %s holds them quantized; "
                    "use adapter.init loftq", w1, quant_format_name(t->base_quant));
    } else if (t->base_quant != QUANT_NONE && method == ADAPTER_FULL) {
        key_where(d, ov, n, "train.base_quant", w1, sizeof w1);
        st = ll_err(err, LL_ERR_CONFIG,
                    "%s: train.base_quant %s with adapter.method full: full fine-tuning trains the base weights, and a "
                    "quantized base is frozen (QLoRA trains adapters on it); use an adapter method or base_quant none",
                    w1, quant_format_name(t->base_quant));
    } else if (rc->pretrain && method != ADAPTER_FULL) {
        for (int i = 0; i < a->n_layers; i++)
            if (a->layers[i] >= rc->base_model.L) {
                key_where(d, ov, n, "adapter.layers", w1, sizeof w1);
                st = ll_err(err, LL_ERR_CONFIG, "%s: adapter.layers names layer %d; preset '%s' has %d layers (0-%d)",
                            w1, a->layers[i], rc->base_preset, rc->base_model.L, rc->base_model.L - 1);
                break;
            }
    }
    if (st) {
        ll_free(own_members);
        return st;
    }
    /* Keys the method ignores go back to the method's defaults, so that the run key (which leaves
     * them out) determines the run. */
    RunConfig def;
    memset(&def, 0, sizeof def);
    config_engine_defaults(&def, method);
    for (int i = 0; i < n_keys; i++) {
        const KeySpec *ks = &keys[i];
        if (ks->st != FS_ADAPTER || config_method_reads(method, ks->key)) continue;
        config_field_write(config_field_ptr(rc, ks), ks->fk, config_field_read(config_field_cptr(&def, ks), ks->fk));
    }
    AdapterConfig *ad = &rc->adapter;
    if (!config_method_reads(method, "adapter.targets")) ad->targets = def.adapter.targets;
    if (!config_method_reads(method, "adapter.layers")) ad->n_layers = 0;
    if (!config_method_reads(method, "adapter.init")) ad->init = def.adapter.init;
    if (!config_method_reads(method, "adapter.rank_pattern")) ad->n_rank_pattern = 0;
    if (!config_method_reads(method, "adapter.alpha_pattern")) ad->n_alpha_pattern = 0;
    if (!config_method_reads(method, "adapter.seed")) ad->seed = def.adapter.seed;
    for (int i = ad->n_layers; i < ADAPTER_MAX_LAYERS; i++) ad->layers[i] = 0;
    for (int i = ad->n_rank_pattern; i < ADAPTER_MAX_PATTERNS; i++)
        memset(&ad->rank_pattern[i], 0, sizeof ad->rank_pattern[i]);
    for (int i = ad->n_alpha_pattern; i < ADAPTER_MAX_PATTERNS; i++)
        memset(&ad->alpha_pattern[i], 0, sizeof ad->alpha_pattern[i]);
    if (!rc->pretrain) { /* keep the unused base fields at their defaults too */
        train_config_defaults(&rc->base_train);
        rc->base_preset[0] = rc->base_data[0] = '\0';
        rc->base_bpe = 1, rc->base_vocab = 1024;
    }
    build_canonical(rc, preset_members);
    ll_free(own_members);
    return LL_OK;
}

double config_written_number(const RunConfig *rc, const char *key) {
    char txt[64];
    if (!config_canonical_get(rc, key, txt, sizeof txt)) return NAN;
    char *end;
    double x = strtod(txt, &end);
    return end != txt && *end == '\0' ? x : NAN;
}

int config_canonical_get(const RunConfig *rc, const char *key, char *out, size_t cap) {
    if (!rc->canonical_json) return 0;
    char pat[CONFIG_KEY_MAX + 4];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *j = rc->canonical_json, *p = j;
    /* A member starts right after '{' or ','; a match inside a string value is preceded by neither. */
    while ((p = strstr(p, pat)) && !(p > j && (p[-1] == '{' || p[-1] == ','))) p++;
    if (!p) return 0;
    p += strlen(pat);
    int depth = 0, in_str = 0;
    size_t len = 0;
    for (; *p; p++) {
        if (in_str) {
            if (*p == '\\' && p[1]) {
                if (len + 2 < cap) out[len++] = *p;
                p++;
            } else if (*p == '"') in_str = 0;
        } else if (*p == '"') in_str = 1;
        else if (*p == '[' || *p == '{') depth++;
        else if (*p == ']' || (*p == '}' && depth > 0)) depth--;
        else if ((*p == ',' || *p == '}') && depth == 0) break;
        if (len + 1 < cap) out[len++] = *p;
    }
    out[len] = '\0';
    return 1;
}
