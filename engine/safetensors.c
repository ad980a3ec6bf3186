/* safetensors: see safetensors.h for the format, the validation rules and the writer's
 * conventions (reference/peft-spec.md, section 6).
 *
 * How the reader stays in bounds: the header is checked in layers, each making the next one
 * safe. (1) The 8-byte length against the 100 MB limit and the file size. (2) Bytes: UTF-8, no
 * NUL, first byte '{'. (3) A lexical pass over the raw text (control characters, number
 * grammar), because cJSON is laxer than JSON there. (4) cJSON builds the tree (its nesting limit
 * bounds our recursion). (5) Keys unique in every object. (6) Per tensor: dtype, shape, offsets,
 * sizes with overflow-checked products. (7) The tiling of the data buffer. Only then are offsets
 * used to touch the data.
 *
 * Why numbers are re-read from the text: cJSON stores numbers as doubles, which cannot tell
 * "2.0" from "2" nor hold integers above 2^53 exactly. A depth-first walk of the cJSON tree meets
 * number items in the same order as they appear in the text, so a cursor that scans the text for
 * the next number token (skipping strings) gives each number item its exact spelling.
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian and is copied without byte swapping");
#endif
_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE binary32/binary64 assumed");
_Static_assert(SIZE_MAX >= UINT32_MAX, "header lengths up to 100 MB must fit in size_t");

/* Names and paths are printed at most this long, so one message still shows what and where. */
#define SHOW "%.200s"

/* ------------------------------------------------------------------------------------------ */
/* dtypes                                                                                      */

static const struct {
    const char *name;
    int bits;
} DTYPES[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8},
    [ST_F4] = {"F4", 4},
    [ST_F6_E2M3] = {"F6_E2M3", 6},
    [ST_F6_E3M2] = {"F6_E3M2", 6},
    [ST_U8] = {"U8", 8},
    [ST_I8] = {"I8", 8},
    [ST_F8_E5M2] = {"F8_E5M2", 8},
    [ST_F8_E4M3] = {"F8_E4M3", 8},
    [ST_F8_E8M0] = {"F8_E8M0", 8},
    [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [ST_I16] = {"I16", 16},
    [ST_U16] = {"U16", 16},
    [ST_F16] = {"F16", 16},
    [ST_BF16] = {"BF16", 16},
    [ST_I32] = {"I32", 32},
    [ST_U32] = {"U32", 32},
    [ST_F32] = {"F32", 32},
    [ST_C64] = {"C64", 64},
    [ST_F64] = {"F64", 64},
    [ST_I64] = {"I64", 64},
    [ST_U64] = {"U64", 64},
};

const char *st_dtype_name(StDtype dt) {
    return (unsigned)dt < ST_DTYPE_COUNT ? DTYPES[dt].name : "?";
}

int st_dtype_bits(StDtype dt) {
    LL_ASSERT((unsigned)dt < ST_DTYPE_COUNT);
    return DTYPES[dt].bits;
}

int st_dtype_parse(const char *name, StDtype *out) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(name, DTYPES[i].name) == 0) {
            *out = (StDtype)i;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* element conversions                                                                         */

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float st_bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

/* IEEE 754 binary16 -> binary32 is exact: every half value, subnormals included, is a float. */
float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mant << 13)); /* inf, NaN */
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign); /* signed zero */
        /* Subnormal half: value mant * 2^-24. Shift the leading 1 up to the implicit bit. */
        uint32_t e = 127 - 15 + 1;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        return f32_from_bits(sign | (e << 23) | ((mant & 0x3ffu) << 13));
    }
    return f32_from_bits(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

uint16_t st_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    /* Round to nearest, ties to even: add half an ulp of bf16, minus one unless the kept
     * lowest bit is odd. A carry into the exponent is the correct rounding (up to inf). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ------------------------------------------------------------------------------------------ */
/* small text helpers                                                                          */

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = 0;
    int w = snprintf(buf, cap, "[");
    used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && used < cap; i++) {
        w = snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. Returns the
 * length if valid, else the offset of the first bad byte. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) k = 1, cp = c & 0x1fu, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) k = 2, cp = c & 0x0fu, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) k = 3, cp = c & 0x07u, min = 0x10000;
        else return i;
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += k + 1;
    }
    return n;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Characters that cJSON collects into a number token (it hands them to strtod). */
static int is_num_char(unsigned char c) {
    return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* JSON number grammar (RFC 8259 section 6): -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n || !is_digit(s[i])) return 0;
    if (s[i] == '0') i++;
    else
        while (i < n && is_digit(s[i])) i++;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit(s[i])) return 0;
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit(s[i])) return 0;
        while (i < n && is_digit(s[i])) i++;
    }
    return i == n;
}

typedef enum { NUM_OK, NUM_NEGATIVE, NUM_NOT_INTEGER, NUM_TOO_LARGE } NumKind;

/* Reads a JSON number token (already grammar-checked) as an exact unsigned 64-bit integer. */
static NumKind read_u64(const char *tok, size_t len, uint64_t *out) {
    if (len > 0 && tok[0] == '-') return NUM_NEGATIVE;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        if (!is_digit(c)) return NUM_NOT_INTEGER;
        uint64_t d = (uint64_t)(c - '0');
        if (v > (UINT64_MAX - d) / 10) return NUM_TOO_LARGE;
        v = v * 10 + d;
    }
    *out = v;
    return NUM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* reader                                                                                      */

typedef struct {
    const char *label; /* path for messages */
    const char *hdr;   /* NUL-terminated copy of the header */
    size_t hlen;
    size_t cursor;     /* next byte the number cursor looks at */
    LLError *err;
} Ctx;

#define FAIL(c, ...) ll_err((c)->err, LL_ERR_FORMAT, __VA_ARGS__)

/* Rejects what cJSON would accept but JSON does not: raw control characters (cJSON treats any
 * byte <= 32 as whitespace and allows them in strings) and malformed numbers ("01", "1.", "+1",
 * which strtod takes). Structure is left to cJSON. */
static LLStatus lex_check(Ctx *c) {
    const unsigned char *h = (const unsigned char *)c->hdr;
    size_t n = c->hlen, i = 0;
    while (i < n) {
        unsigned char ch = h[i];
        if (ch == '"') {
            for (i++; i < n && h[i] != '"'; i++) {
                if (h[i] < 0x20)
                    return FAIL(c, "'" SHOW "': header is not valid JSON: raw control character "
                                "0x%02x inside a string at header byte %zu", c->label, h[i], i);
                if (h[i] == '\\') i++; /* the escaped byte cannot close the string */
            }
            i++;
        } else if (ch == '-' || is_digit(ch)) {
            size_t s = i;
            while (i < n && is_num_char(h[i])) i++;
            if (!json_number_ok(h + s, i - s))
                return FAIL(c, "'" SHOW "': header is not valid JSON: malformed number '%.*s' at "
                            "header byte %zu", c->label, (int)(i - s > 40 ? 40 : i - s),
                            c->hdr + s, s);
        } else if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') {
            return FAIL(c, "'" SHOW "': header is not valid JSON: control character 0x%02x at "
                        "header byte %zu", c->label, ch, i);
        } else {
            i++;
        }
    }
    return LL_OK;
}

/* The text of the next number token after the cursor (see the file comment). It must exist:
 * cJSON found a number item there, so running out is a bug, not bad input. */
static void next_number(Ctx *c, const char **tok, size_t *len) {
    const char *h = c->hdr;
    size_t n = c->hlen, i = c->cursor;
    while (i < n) {
        unsigned char ch = (unsigned char)h[i];
        if (ch == '"') {
            for (i++; i < n && h[i] != '"'; i++)
                if (h[i] == '\\') i++;
            i++;
        } else if (ch == '-' || is_digit(ch)) {
            size_t s = i;
            while (i < n && is_num_char((unsigned char)h[i])) i++;
            *tok = h + s;
            *len = i - s;
            c->cursor = i;
            return;
        } else {
            i++;
        }
    }
    LL_ASSERT(!"number cursor out of step with cJSON's tree");
}

/* Number items in a subtree (depth bounded by cJSON's nesting limit). */
static size_t count_numbers(const cJSON *node) {
    if (cJSON_IsNumber(node)) return 1;
    size_t k = 0;
    for (const cJSON *ch = node->child; ch; ch = ch->next) k += count_numbers(ch);
    return k;
}

static void skip_numbers(Ctx *c, size_t k) {
    const char *tok;
    size_t len;
    while (k-- > 0) next_number(c, &tok, &len);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate keys in any object of the tree; cJSON keeps both silently. Sorting the keys makes
 * this O(k log k) per object, so a header with a million tensors is still fast. */
static LLStatus check_dup_keys(Ctx *c, const cJSON *node, const char *owner) {
    if (cJSON_IsObject(node)) {
        size_t k = 0;
        for (const cJSON *ch = node->child; ch; ch = ch->next) k++;
        if (k > 1) {
            const char **keys = ll_malloc(k, sizeof *keys);
            size_t i = 0;
            for (const cJSON *ch = node->child; ch; ch = ch->next) keys[i++] = ch->string;
            qsort(keys, k, sizeof *keys, cmp_str_ptr);
            for (i = 1; i < k; i++) {
                if (strcmp(keys[i - 1], keys[i]) == 0) {
                    LLStatus rc;
                    if (owner)
                        rc = FAIL(c, "'" SHOW "': duplicate key '" SHOW "' in the entry of '"
                                  SHOW "'", c->label, keys[i], owner);
                    else
                        rc = FAIL(c, "'" SHOW "': duplicate key '" SHOW "' in the header (a "
                                  "tensor or __metadata__ appears twice)", c->label, keys[i]);
                    ll_free(keys);
                    return rc;
                }
            }
            ll_free(keys);
        }
    }
    for (const cJSON *ch = node->child; ch; ch = ch->next) {
        LLStatus rc = check_dup_keys(c, ch, owner ? owner : ch->string);
        if (rc != LL_OK) return rc;
    }
    return LL_OK;
}

static LLStatus bad_number(Ctx *c, const char *name, const char *what, int idx, NumKind kind,
                           const char *tok, size_t len) {
    static const char *const why[] = {
        [NUM_NEGATIVE] = "is negative",
        [NUM_NOT_INTEGER] = "is not an integer",
        [NUM_TOO_LARGE] = "is too large",
    };
    return FAIL(c, "'" SHOW "': tensor '" SHOW "': %s entry %d (%.*s) %s; expected a "
                "non-negative integer", c->label, name, what, idx, (int)(len > 40 ? 40 : len),
                tok, why[kind]);
}

/* Reads one tensor entry. Fields are visited in document order so that the number cursor stays
 * in step; unknown fields are skipped (the reference reader ignores them too). */
static LLStatus read_tensor(Ctx *c, const cJSON *entry, StTensor *t, size_t data_len) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': entry is not an object with dtype, shape "
                    "and data_offsets", c->label, name);
    const cJSON *dtype = NULL;
    int have_shape = 0, have_offsets = 0;
    uint64_t offs[2] = {0, 0};
    for (const cJSON *f = entry->child; f; f = f->next) {
        const char *tok;
        size_t len;
        uint64_t v;
        if (strcmp(f->string, "shape") == 0) {
            if (!cJSON_IsArray(f))
                return FAIL(c, "'" SHOW "': tensor '" SHOW "': shape is not a list", c->label,
                            name);
            int nd = 0;
            for (const cJSON *d = f->child; d; d = d->next, nd++) {
                if (nd == ST_MAX_DIMS)
                    return FAIL(c, "'" SHOW "': tensor '" SHOW "': shape has more than %d "
                                "dimensions, which loralab does not support", c->label, name,
                                ST_MAX_DIMS);
                if (!cJSON_IsNumber(d))
                    return FAIL(c, "'" SHOW "': tensor '" SHOW "': shape entry %d is not a "
                                "number", c->label, name, nd);
                next_number(c, &tok, &len);
                NumKind kind = read_u64(tok, len, &v);
                if (kind == NUM_OK && v > (uint64_t)INT64_MAX) kind = NUM_TOO_LARGE;
                if (kind != NUM_OK) return bad_number(c, name, "shape", nd, kind, tok, len);
                t->shape[nd] = (int64_t)v;
            }
            t->ndim = nd;
            have_shape = 1;
        } else if (strcmp(f->string, "data_offsets") == 0) {
            int k = 0;
            for (const cJSON *d = cJSON_IsArray(f) ? f->child : NULL; d; d = d->next, k++) {
                if (k == 2 || !cJSON_IsNumber(d)) break;
                next_number(c, &tok, &len);
                NumKind kind = read_u64(tok, len, &v);
                if (kind == NUM_OK && v > SIZE_MAX) kind = NUM_TOO_LARGE;
                if (kind != NUM_OK) return bad_number(c, name, "data_offsets", k, kind, tok, len);
                offs[k] = v;
            }
            if (!cJSON_IsArray(f) || k != 2 || cJSON_GetArraySize(f) != 2)
                return FAIL(c, "'" SHOW "': tensor '" SHOW "': data_offsets is not a list of two "
                            "integers [begin, end]", c->label, name);
            have_offsets = 1;
        } else {
            if (strcmp(f->string, "dtype") == 0) dtype = f;
            skip_numbers(c, count_numbers(f));
        }
    }
    if (!dtype || !have_shape || !have_offsets)
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': missing \"%s\"", c->label, name,
                    !dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dtype))
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': dtype is not a string", c->label, name);
    if (!st_dtype_parse(dtype->valuestring, &t->dtype))
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': unknown dtype '" SHOW "'", c->label, name,
                    dtype->valuestring);
    t->begin = (size_t)offs[0];
    t->end = (size_t)offs[1];
    if (t->begin > t->end)
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': data_offsets [%zu, %zu] end before they "
                    "begin", c->label, name, t->begin, t->end);

    char sh[256];
    fmt_shape(sh, sizeof sh, t->ndim, t->shape);
    size_t numel = 1, nbits;
    for (int i = 0; i < t->ndim; i++)
        if (!ll_mul_ok(numel, (size_t)t->shape[i], &numel))
            return FAIL(c, "'" SHOW "': tensor '" SHOW "': shape %s overflows (its element "
                        "count does not fit in 64 bits)", c->label, name, sh);
    if (!ll_mul_ok(numel, (size_t)st_dtype_bits(t->dtype), &nbits))
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': shape %s of %s overflows (its bit count "
                    "does not fit in 64 bits)", c->label, name, sh, st_dtype_name(t->dtype));
    if (nbits % 8 != 0)
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': shape %s of %s is not a whole number of "
                    "bytes", c->label, name, sh, st_dtype_name(t->dtype));
    if (t->end - t->begin != nbits / 8)
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': data_offsets [%zu, %zu] hold %zu bytes "
                    "but shape %s of %s needs %zu bytes", c->label, name, t->begin, t->end,
                    t->end - t->begin, sh, st_dtype_name(t->dtype), nbits / 8);
    if (t->end > data_len)
        return FAIL(c, "'" SHOW "': tensor '" SHOW "': data_offsets [%zu, %zu] run past the end "
                    "of the data buffer (%zu bytes): the file is truncated", c->label, name,
                    t->begin, t->end, data_len);
    return LL_OK;
}

static LLStatus read_metadata(Ctx *c, const cJSON *m) {
    if (cJSON_IsNull(m)) return LL_OK; /* the reference reads null as "no metadata" */
    if (!cJSON_IsObject(m))
        return FAIL(c, "'" SHOW "': __metadata__ is not an object of strings", c->label);
    for (const cJSON *kv = m->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return FAIL(c, "'" SHOW "': __metadata__ value of key '" SHOW "' is not a string "
                        "(metadata maps strings to strings)", c->label, kv->string);
    return LL_OK;
}

typedef struct {
    StTensor t;
    size_t order; /* position in the header, the tie-break that keeps the sort deterministic */
} Slot;

static int cmp_slot(const void *pa, const void *pb) {
    const Slot *a = pa, *b = pb;
    if (a->t.begin != b->t.begin) return a->t.begin < b->t.begin ? -1 : 1;
    if (a->t.end != b->t.end) return a->t.end < b->t.end ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* Sorted by (begin, end), the tensors must tile [0, data_len) exactly. Per-tensor checks have
 * already ensured begin <= end <= data_len. */
static LLStatus check_tiling(Ctx *c, const Slot *s, size_t n, size_t data_len) {
    size_t expect = 0;
    for (size_t i = 0; i < n; i++) {
        const StTensor *t = &s[i].t;
        if (t->begin < expect) {
            const StTensor *p = &s[i - 1].t; /* expect > 0 implies a predecessor */
            return FAIL(c, "'" SHOW "': tensor '" SHOW "' (data_offsets [%zu, %zu]) overlaps "
                        "tensor '" SHOW "' (data_offsets [%zu, %zu])", c->label, t->name,
                        t->begin, t->end, p->name, p->begin, p->end);
        }
        if (t->begin > expect)
            return FAIL(c, "'" SHOW "': hole of %zu unused bytes in the data buffer before "
                        "tensor '" SHOW "' (data_offsets [%zu, %zu])", c->label,
                        t->begin - expect, t->name, t->begin, t->end);
        expect = t->end;
    }
    if (expect != data_len)
        return FAIL(c, "'" SHOW "': %zu trailing bytes after the last tensor (the data buffer "
                    "holds %zu bytes, the tensors cover %zu)", c->label, data_len - expect,
                    data_len, expect);
    return LL_OK;
}

static void free_slots(Slot *s, size_t n) {
    if (!s) return;
    for (size_t i = 0; i < n; i++) ll_free(s[i].t.name);
    ll_free(s);
}

/* Validates buf (the whole file, borrowed: st->data points into it, st->buf stays NULL) and
 * fills st. Reads the 8-byte length and the header only; the data bytes are never touched. */
static LLStatus parse_view(const char *buf, size_t size, const char *label, SafeTensors *st,
                           LLError *err) {
    memset(st, 0, sizeof *st);
    Ctx c = {.label = label, .err = err};
    const unsigned char *u = (const unsigned char *)buf;
    LLStatus rc = LL_OK;
    char *hcopy = NULL;
    cJSON *root = NULL;
    Slot *slots = NULL;
    size_t n = 0;

    /* Runtime twin of the static assert, for compilers without __BYTE_ORDER__. */
    const uint16_t one = 1;
    LL_ASSERT(*(const unsigned char *)&one == 1);

    if (size < 8) {
        rc = FAIL(&c, "'" SHOW "': file is %zu bytes, shorter than the 8-byte header length "
                  "(truncated, or not a safetensors file)", label, size);
        goto done;
    }
    uint64_t n64 = 0;
    for (int i = 7; i >= 0; i--) n64 = (n64 << 8) | u[i];
    if (n64 > ST_MAX_HEADER) {
        rc = FAIL(&c, "'" SHOW "': header length %llu exceeds the limit of %u bytes (corrupt, "
                  "or not a safetensors file)", label, (unsigned long long)n64, ST_MAX_HEADER);
        goto done;
    }
    if (n64 > size - 8) {
        rc = FAIL(&c, "'" SHOW "': header length %llu runs past the end of the file (%zu bytes "
                  "follow the length field): the file is truncated", label,
                  (unsigned long long)n64, size - 8);
        goto done;
    }
    size_t hlen = (size_t)n64;
    const char *hdr = buf + 8;
    if (hlen == 0 || hdr[0] != '{') {
        rc = FAIL(&c, "'" SHOW "': header does not start with '{' (not a safetensors file)",
                  label);
        goto done;
    }
    size_t good = utf8_valid_prefix((const unsigned char *)hdr, hlen);
    if (good != hlen) {
        rc = FAIL(&c, "'" SHOW "': header is not valid UTF-8 (byte %zu of the header)", label,
                  good);
        goto done;
    }
    const char *nul = memchr(hdr, '\0', hlen);
    if (nul) {
        rc = FAIL(&c, "'" SHOW "': header is not valid JSON: NUL byte at header byte %zu", label,
                  (size_t)(nul - hdr));
        goto done;
    }

    /* A NUL-terminated copy, so that neither cJSON nor our scans can read past the header. */
    hcopy = ll_malloc(hlen + 1, 1);
    memcpy(hcopy, hdr, hlen);
    hcopy[hlen] = '\0';
    c.hdr = hcopy;
    c.hlen = hlen;
    if ((rc = lex_check(&c)) != LL_OK) goto done;

    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hcopy, hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hcopy && end <= hcopy + hlen ? (size_t)(end - hcopy) : 0;
        rc = FAIL(&c, "'" SHOW "': header is not valid JSON (near header byte %zu)", label, at);
        goto done;
    }
    for (const char *p = end; p < hcopy + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = FAIL(&c, "'" SHOW "': header is not valid JSON: text after the object at "
                      "header byte %zu", label, (size_t)(p - hcopy));
            goto done;
        }
    }
    LL_ASSERT(cJSON_IsObject(root)); /* it starts with '{' and parsed */
    if ((rc = check_dup_keys(&c, root, NULL)) != LL_OK) goto done;

    size_t total = 0;
    for (const cJSON *e = root->child; e; e = e->next) total++;
    slots = ll_calloc(total ? total : 1, sizeof *slots);
    size_t data_len = size - 8 - hlen;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if ((rc = read_metadata(&c, e)) != LL_OK) goto done;
            meta = e;
            continue;
        }
        Slot *s = &slots[n];
        s->order = n;
        s->t.name = ll_strdup(e->string);
        n++;
        if ((rc = read_tensor(&c, e, &s->t, data_len)) != LL_OK) goto done;
    }
    if (n > INT_MAX) {
        rc = FAIL(&c, "'" SHOW "': %zu tensors, more than loralab supports", label, n);
        goto done;
    }
    qsort(slots, n, sizeof *slots, cmp_slot);
    if ((rc = check_tiling(&c, slots, n, data_len)) != LL_OK) goto done;

    st->tensors = ll_calloc(n ? n : 1, sizeof *st->tensors);
    for (size_t i = 0; i < n; i++) {
        st->tensors[i] = slots[i].t;
        slots[i].t.name = NULL; /* moved */
    }
    st->n = (int)n;
    if (meta && cJSON_IsObject(meta))
        st->metadata = cJSON_DetachItemViaPointer(root, (cJSON *)meta);
    st->path = ll_strdup(label);
    st->size = size;
    st->header_len = hlen;
    st->data = buf + 8 + hlen;
    st->data_len = data_len;

done:
    free_slots(slots, n);
    cJSON_Delete(root);
    ll_free(hcopy);
    return rc;
}

/* parse_view on a malloc'd buffer whose ownership passes to st (freed on failure). */
static LLStatus parse_owned(char *buf, size_t size, const char *label, SafeTensors *st,
                            LLError *err) {
    LLStatus rc = parse_view(buf, size, label, st, err);
    if (rc != LL_OK) {
        ll_free(buf);
        return rc;
    }
    st->buf = buf;
    return LL_OK;
}

LLStatus st_parse(const void *bytes, size_t len, SafeTensors *st, LLError *err) {
    LL_ASSERT(st && (bytes || len == 0));
    char *copy = ll_malloc(len ? len : 1, 1);
    if (len) memcpy(copy, bytes, len);
    return parse_owned(copy, len, "(memory buffer)", st, err);
}

LLStatus st_load(const char *path, SafeTensors *st, LLError *err) {
    LL_ASSERT(st && path);
    memset(st, 0, sizeof *st);
    char *buf;
    size_t len;
    LLStatus rc = ll_read_file(path, &buf, &len, err);
    if (rc != LL_OK) return rc;
    return parse_owned(buf, len, path, st, err);
}

LLStatus st_map(const char *path, SafeTensors *st, LLError *err) {
    LL_ASSERT(st && path);
    memset(st, 0, sizeof *st);
    int fd;
    size_t size;
    LLStatus orc = ll_open_regular(path, &fd, &size, err); /* a FIFO or a folder is refused, never waited on */
    if (orc != LL_OK) return orc;
    if (size < 8) { /* nothing worth mapping (mmap refuses 0 bytes): st_load's message */
        close(fd);
        const char none[8] = {0}; /* parse_view reads no byte of a file this short */
        return parse_view(none, size, path, st, err);
    }
    /* PROT_WRITE with MAP_PRIVATE: the caller may write (full fine-tuning, merge); the kernel then
     * gives this process a private copy of each page it writes, and the file never changes. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file (the inode) alive */
    if (p == MAP_FAILED) return ll_err(err, LL_ERR_IO, "cannot map '" SHOW "': %s", path, strerror(e));
    LLStatus rc = parse_view(p, size, path, st, err);
    if (rc != LL_OK) {
        munmap(p, size);
        return rc;
    }
    st->map = p;
    st->map_len = size;
    return LL_OK;
}

void st_free(SafeTensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) ll_free(st->tensors[i].name);
    ll_free(st->tensors);
    cJSON_Delete(st->metadata);
    ll_free(st->buf);
    if (st->map) munmap(st->map, st->map_len);
    ll_free(st->path);
    memset(st, 0, sizeof *st);
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

size_t st_tensor_numel(const StTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) LL_ASSERT(ll_mul_ok(n, (size_t)t->shape[i], &n));
    return n;
}

const char *st_meta_get(const SafeTensors *st, const char *key) {
    if (!st->metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

LLStatus st_read_f32(const SafeTensors *st, const char *name, int ndim, const int64_t *shape,
                     float *out, LLError *err) {
    LL_ASSERT(st && name && ndim >= 0 && ndim <= ST_MAX_DIMS && (shape || ndim == 0));
    const StTensor *t = st_find(st, name);
    if (!t)
        return ll_err(err, LL_ERR_FORMAT, "'" SHOW "': no tensor named '" SHOW "'", st->path,
                      name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[256], have[256];
        fmt_shape(want, sizeof want, ndim, shape);
        fmt_shape(have, sizeof have, t->ndim, t->shape);
        return ll_err(err, LL_ERR_FORMAT, "'" SHOW "': tensor '" SHOW "' has shape %s but %s "
                      "was expected", st->path, name, have, want);
    }
    size_t n = st_tensor_numel(t);
    const unsigned char *src = (const unsigned char *)st->data + t->begin;
    /* memcpy per element: the data need not be aligned (no per-tensor alignment in the file). */
    switch (t->dtype) {
    case ST_F32:
        if (n) memcpy(out, src, n * sizeof(float));
        break;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
        break;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        break;
    default:
        return ll_err(err, LL_ERR_FORMAT, "'" SHOW "': tensor '" SHOW "' has dtype %s; only F32, "
                      "F16, BF16 and F64 convert to fp32", st->path, name,
                      st_dtype_name(t->dtype));
    }
    return LL_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* writer                                                                                      */

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    void *owned; /* converted copy (st_writer_add_f32_as_bf16), else NULL */
    size_t nbytes;
} WEntry;

struct StWriter {
    WEntry *t;
    size_t n, cap;
    char **keys, **vals;
    size_t nmeta, capmeta;
    int failed;       /* a deferred error, reported by st_writer_serialize */
    char why[512];
};

StWriter *st_writer_new(void) { return ll_calloc(1, sizeof(StWriter)); }

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        ll_free(w->t[i].name);
        ll_free(w->t[i].owned);
    }
    for (size_t i = 0; i < w->nmeta; i++) {
        ll_free(w->keys[i]);
        ll_free(w->vals[i]);
    }
    ll_free(w->t);
    ll_free(w->keys);
    ll_free(w->vals);
    ll_free(w);
}

static void writer_fail(StWriter *w, const char *name, const char *what) {
    if (w->failed) return; /* the first mistake is the one to fix */
    w->failed = 1;
    snprintf(w->why, sizeof w->why, "tensor '" SHOW "': %s", name, what);
}

void st_writer_meta(StWriter *w, const char *key, const char *value) {
    LL_ASSERT(w && key && value);
    for (size_t i = 0; i < w->nmeta; i++) {
        if (strcmp(w->keys[i], key) == 0) {
            ll_free(w->vals[i]);
            w->vals[i] = ll_strdup(value);
            return;
        }
    }
    if (w->nmeta == w->capmeta) {
        w->capmeta = w->capmeta ? 2 * w->capmeta : 4;
        w->keys = ll_realloc(w->keys, w->capmeta, sizeof *w->keys);
        w->vals = ll_realloc(w->vals, w->capmeta, sizeof *w->vals);
    }
    w->keys[w->nmeta] = ll_strdup(key);
    w->vals[w->nmeta] = ll_strdup(value);
    w->nmeta++;
}

static WEntry *writer_add(StWriter *w, const char *name, StDtype dtype, int ndim,
                          const int64_t *shape, const void *data) {
    LL_ASSERT(w && name && ndim >= 0 && ndim <= ST_MAX_DIMS && (shape || ndim == 0));
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = ll_realloc(w->t, w->cap, sizeof *w->t);
    }
    WEntry *e = &w->t[w->n++];
    memset(e, 0, sizeof *e);
    e->name = ll_strdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    e->data = data;
    size_t numel = 1, nbits = 0;
    int ok = 1;
    for (int i = 0; i < ndim; i++) {
        LL_ASSERT(shape[i] >= 0);
        e->shape[i] = shape[i];
        ok = ok && ll_mul_ok(numel, (size_t)shape[i], &numel);
    }
    ok = ok && ll_mul_ok(numel, (size_t)st_dtype_bits(dtype), &nbits);
    if (!ok) {
        writer_fail(w, name, "shape overflows");
        return e;
    }
    e->nbytes = nbits / 8;
    LL_ASSERT(data || e->nbytes == 0);
    if (strcmp(name, "__metadata__") == 0) writer_fail(w, name, "name reserved by the format");
    return e;
}

void st_writer_add_f32(StWriter *w, const char *name, int ndim, const int64_t *shape,
                       const float *data) {
    writer_add(w, name, ST_F32, ndim, shape, data);
}

void st_writer_add_bf16(StWriter *w, const char *name, int ndim, const int64_t *shape,
                        const uint16_t *data) {
    writer_add(w, name, ST_BF16, ndim, shape, data);
}

void st_writer_add_f32_as_bf16(StWriter *w, const char *name, int ndim, const int64_t *shape,
                               const float *data) {
    WEntry *e = writer_add(w, name, ST_BF16, ndim, shape, data);
    if (w->failed) return;
    size_t n = e->nbytes / 2;
    uint16_t *b = ll_malloc(n ? n : 1, sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = st_f32_to_bf16(data[i]);
    e->owned = b;
    e->data = b;
}

/* Growable byte string for the header. */
typedef struct {
    char *p;
    size_t len, cap;
} Sb;

static void sb_put(Sb *s, const char *bytes, size_t n) {
    if (s->cap - s->len < n + 1) {
        size_t need;
        LL_ASSERT(ll_add_ok(s->len, n + 1, &need));
        size_t cap = s->cap ? s->cap : 256;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
        s->p = ll_realloc(s->p, cap, 1);
        s->cap = cap;
    }
    memcpy(s->p + s->len, bytes, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_str(Sb *s, const char *z) { sb_put(s, z, strlen(z)); }

static void sb_fmt(Sb *s, const char *fmt, unsigned long long v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    LL_ASSERT(k > 0 && (size_t)k < sizeof tmp);
    sb_put(s, tmp, (size_t)k);
}

/* A JSON string exactly as serde_json writes it: '"' and '\\' escaped, \b \f \n \r \t short,
 * other control characters as \u00xx (lowercase hex), everything else (UTF-8) raw. */
static void sb_json_string(Sb *s, const char *z) {
    static const char hex[] = "0123456789abcdef";
    sb_put(s, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)z; *p; p++) {
        char esc[7];
        switch (*p) {
        case '"': sb_put(s, "\\\"", 2); break;
        case '\\': sb_put(s, "\\\\", 2); break;
        case '\b': sb_put(s, "\\b", 2); break;
        case '\f': sb_put(s, "\\f", 2); break;
        case '\n': sb_put(s, "\\n", 2); break;
        case '\r': sb_put(s, "\\r", 2); break;
        case '\t': sb_put(s, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[*p >> 4];
                esc[5] = hex[*p & 15];
                sb_put(s, esc, 6);
            } else {
                sb_put(s, (const char *)p, 1);
            }
        }
    }
    sb_put(s, "\"", 1);
}

static int cmp_entry_name(const void *pa, const void *pb) {
    const WEntry *a = *(const WEntry *const *)pa, *b = *(const WEntry *const *)pb;
    return strcmp(a->name, b->name);
}

/* The reference writer's order: dtype descending (enum order), then name ascending bytewise. */
static int cmp_entry_ref(const void *pa, const void *pb) {
    const WEntry *a = *(const WEntry *const *)pa, *b = *(const WEntry *const *)pb;
    if (a->dtype != b->dtype) return a->dtype > b->dtype ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int utf8_ok(const char *z) {
    size_t n = strlen(z);
    return utf8_valid_prefix((const unsigned char *)z, n) == n;
}

LLStatus st_writer_serialize(StWriter *w, char **out, size_t *len, LLError *err) {
    LL_ASSERT(w && out && len);
    *out = NULL;
    *len = 0;
    if (w->failed) return ll_err(err, LL_ERR_STATE, "safetensors writer: %s", w->why);
    for (size_t i = 0; i < w->n; i++)
        if (!utf8_ok(w->t[i].name))
            return ll_err(err, LL_ERR_STATE, "safetensors writer: tensor '" SHOW "': name is not "
                          "valid UTF-8", w->t[i].name);
    for (size_t i = 0; i < w->nmeta; i++)
        if (!utf8_ok(w->keys[i]) || !utf8_ok(w->vals[i]))
            return ll_err(err, LL_ERR_STATE, "safetensors writer: metadata '" SHOW "' is not "
                          "valid UTF-8", w->keys[i]);

    LLStatus rc = LL_OK;
    Sb h = {0};
    char *file = NULL;
    WEntry **ord = ll_malloc(w->n ? w->n : 1, sizeof *ord);
    size_t *mo = ll_malloc(w->nmeta ? w->nmeta : 1, sizeof *mo);
    for (size_t i = 0; i < w->n; i++) ord[i] = &w->t[i];
    qsort(ord, w->n, sizeof *ord, cmp_entry_name);
    for (size_t i = 1; i < w->n; i++) {
        if (strcmp(ord[i - 1]->name, ord[i]->name) == 0) {
            rc = ll_err(err, LL_ERR_STATE, "safetensors writer: tensor '" SHOW "' was added "
                        "twice", ord[i]->name);
            goto done;
        }
    }
    qsort(ord, w->n, sizeof *ord, cmp_entry_ref);

    /* Metadata keys in bytewise order (insertion sort: a handful of keys). */
    for (size_t i = 0; i < w->nmeta; i++) {
        size_t j = i;
        while (j > 0 && strcmp(w->keys[mo[j - 1]], w->keys[i]) > 0) {
            mo[j] = mo[j - 1];
            j--;
        }
        mo[j] = i;
    }

    sb_str(&h, "{");
    if (w->nmeta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_string(&h, w->keys[mo[i]]);
            sb_str(&h, ":");
            sb_json_string(&h, w->vals[mo[i]]);
        }
        sb_str(&h, "}");
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const WEntry *e = ord[i];
        size_t next;
        if (!ll_add_ok(off, e->nbytes, &next)) {
            rc = ll_err(err, LL_ERR_STATE, "safetensors writer: total data size overflows");
            goto done;
        }
        if (i || w->nmeta) sb_str(&h, ",");
        sb_json_string(&h, e->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, st_dtype_name(e->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) sb_fmt(&h, d ? ",%llu" : "%llu", (unsigned long long)e->shape[d]);
        sb_str(&h, "],\"data_offsets\":[");
        sb_fmt(&h, "%llu", (unsigned long long)off);
        sb_fmt(&h, ",%llu", (unsigned long long)next);
        sb_str(&h, "]}");
        off = next;
    }
    sb_str(&h, "}");
    /* Pad with spaces so the data starts 8-byte aligned, as the reference writer does. */
    while (h.len % 8) sb_str(&h, " ");
    if (h.len > ST_MAX_HEADER) {
        rc = ll_err(err, LL_ERR_STATE, "safetensors writer: header would be %zu bytes, over the "
                    "%u-byte limit readers enforce", h.len, ST_MAX_HEADER);
        goto done;
    }
    size_t total;
    if (!ll_add_ok(8 + h.len, off, &total)) {
        rc = ll_err(err, LL_ERR_STATE, "safetensors writer: file size overflows");
        goto done;
    }
    file = ll_malloc(total ? total : 1, 1);
    uint64_t n64 = h.len;
    for (int i = 0; i < 8; i++) file[i] = (char)(n64 >> (8 * i) & 0xff);
    memcpy(file + 8, h.p, h.len);
    size_t pos = 8 + h.len;
    for (size_t i = 0; i < w->n; i++) {
        if (ord[i]->nbytes) memcpy(file + pos, ord[i]->data, ord[i]->nbytes);
        pos += ord[i]->nbytes;
    }
    LL_ASSERT(pos == total);
    *out = file;
    *len = total;
    file = NULL;

done:
    ll_free(file);
    ll_free(h.p);
    ll_free(ord);
    ll_free(mo);
    return rc;
}

LLStatus st_writer_write(StWriter *w, const char *path, LLError *err) {
    LL_ASSERT(path);
    char *bytes;
    size_t len;
    LLStatus rc = st_writer_serialize(w, &bytes, &len, err);
    if (rc != LL_OK) {
        ll_err_prefix(err, "writing '" SHOW "'", path);
        return rc;
    }
    rc = ll_write_file_atomic(path, bytes, len, err);
    ll_free(bytes);
    return rc;
}
