/* tokenizer: see tokenizer.h for the format, the pre-split rule and the merge order.
 *
 * Layout. Every id has its bytes in one arena (off[id], len[id]); merges are three parallel
 * arrays indexed by rank plus an open-addressing map (left, right) -> rank. Maps here never
 * delete, so linear probing with a load factor of at most 1/2 stays simple.
 *
 * Two algorithms carry the weight:
 *   - bpe_word applies merges to one pre-split word with a min-heap of (rank, position), the
 *     order HF `tokenizers` uses (models/bpe/word.rs, merge_all), including its staleness test
 *     (an entry is used only if the pair now at its position still merges to the entry's id).
 *   - tok_train_bpe keeps, for every adjacent pair, its count over the unique words and the
 *     list of words where it was seen; a merge rewrites only the words on that list and turns
 *     each rewrite into +/- count changes of the neighbouring pairs (Sennrich et al., 2016,
 *     "Neural Machine Translation of Rare Words with Subword Units", with incremental counts).
 *     The best pair comes from a max-heap with lazy deletion: entries are pushed when a count
 *     grows and re-checked (and re-pushed with the current count) when popped.
 */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOK_DEFAULT_MAX_LENGTH 2048
/* Words longer than this are encoded without the per-call cache (they are rare and unique). */
#define CACHE_MAX_WORD 256
/* Texts shorter than this are encoded without a cache (building it costs more than it saves). */
#define CACHE_MIN_TEXT 2048

/* ---- hash maps -------------------------------------------------------------------------- */

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, 64 bit */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Byte-string keys stored as (offset, length) into a base buffer the caller passes in, so the
 * buffer may move (realloc) between calls. val < 0 marks an empty slot. */
typedef struct {
    uint64_t hash;
    size_t off;
    size_t len;
    int val;
} BEntry;
typedef struct {
    BEntry *e;
    size_t cap, n;
} BytesMap;

static void bmap_init(BytesMap *m, size_t want) {
    size_t cap = 16;
    while (cap < 2 * want) cap *= 2;
    m->e = ll_malloc(cap, sizeof(BEntry));
    for (size_t i = 0; i < cap; i++) m->e[i].val = -1;
    m->cap = cap;
    m->n = 0;
}

static void bmap_free(BytesMap *m) {
    ll_free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static void bmap_grow(BytesMap *m) {
    BEntry *old = m->e;
    size_t oldcap = m->cap;
    m->cap *= 2;
    m->e = ll_malloc(m->cap, sizeof(BEntry));
    for (size_t i = 0; i < m->cap; i++) m->e[i].val = -1;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].val < 0) continue;
        size_t j = (size_t)old[i].hash & (m->cap - 1);
        while (m->e[j].val >= 0) j = (j + 1) & (m->cap - 1);
        m->e[j] = old[i];
    }
    ll_free(old);
}

/* Returns the value stored for key, or -1. */
static int bmap_get(const BytesMap *m, const unsigned char *base, const unsigned char *key, size_t len,
                    uint64_t h) {
    size_t j = (size_t)h & (m->cap - 1);
    for (;;) {
        const BEntry *e = &m->e[j];
        if (e->val < 0) return -1;
        if (e->hash == h && e->len == len && memcmp(base + e->off, key, len) == 0) return e->val;
        j = (j + 1) & (m->cap - 1);
    }
}

/* Inserts key (at base + off) with val if absent; returns the value now stored. */
static int bmap_put(BytesMap *m, const unsigned char *base, size_t off, size_t len, int val) {
    if (2 * (m->n + 1) > m->cap) bmap_grow(m);
    uint64_t h = hash_bytes(base + off, len);
    size_t j = (size_t)h & (m->cap - 1);
    for (;;) {
        BEntry *e = &m->e[j];
        if (e->val < 0) {
            e->hash = h;
            e->off = off;
            e->len = len;
            e->val = val;
            m->n++;
            return val;
        }
        if (e->hash == h && e->len == len && memcmp(base + e->off, base + off, len) == 0) return e->val;
        j = (j + 1) & (m->cap - 1);
    }
}

/* (left, right) id pairs -> int. val < 0 marks an empty slot. */
typedef struct {
    uint64_t key;
    int val;
} PEntry;
typedef struct {
    PEntry *e;
    size_t cap, n;
} PairMap;

static uint64_t pair_key(int l, int r) { return ((uint64_t)(uint32_t)l << 32) | (uint32_t)r; }

static void pmap_init(PairMap *m, size_t want) {
    size_t cap = 16;
    while (cap < 2 * want) cap *= 2;
    m->e = ll_malloc(cap, sizeof(PEntry));
    for (size_t i = 0; i < cap; i++) m->e[i].val = -1;
    m->cap = cap;
    m->n = 0;
}

static void pmap_free(PairMap *m) {
    ll_free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static int pmap_get(const PairMap *m, uint64_t key) {
    size_t j = (size_t)hash_u64(key) & (m->cap - 1);
    for (;;) {
        const PEntry *e = &m->e[j];
        if (e->val < 0) return -1;
        if (e->key == key) return e->val;
        j = (j + 1) & (m->cap - 1);
    }
}

/* Inserts key with val if absent; returns the value now stored. */
static int pmap_put(PairMap *m, uint64_t key, int val) {
    if (2 * (m->n + 1) > m->cap) {
        PEntry *old = m->e;
        size_t oldcap = m->cap;
        pmap_init(m, oldcap); /* twice the slots */
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].val >= 0) pmap_put(m, old[i].key, old[i].val);
        ll_free(old);
    }
    size_t j = (size_t)hash_u64(key) & (m->cap - 1);
    for (;;) {
        PEntry *e = &m->e[j];
        if (e->val < 0) {
            e->key = key;
            e->val = val;
            m->n++;
            return val;
        }
        if (e->key == key) return e->val;
        j = (j + 1) & (m->cap - 1);
    }
}

/* ---- the byte alphabet -------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand
 * for themselves; the other 68 bytes map, in increasing order, to U+0100, U+0101, ... so every
 * byte has a visible, non-space character (byte 32 -> U+0120, byte 10 -> U+010A). */
static int byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

unsigned tok_byte_to_unicode(unsigned char b) {
    if (byte_is_printable(b)) return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!byte_is_printable(x)) n++;
    return 256 + n;
}

/* code point -> byte, -1 when the code point is not in the alphabet (all are < 0x144). */
#define ALPHABET_END 0x144
static void unicode_to_byte_table(short table[ALPHABET_END]) {
    for (int i = 0; i < ALPHABET_END; i++) table[i] = -1;
    for (int b = 0; b < 256; b++) table[tok_byte_to_unicode((unsigned char)b)] = (short)b;
}

/* Appends the byte-level string of bytes p[0..n) (UTF-8 of the mapped code points) to out,
 * which must have room for 2n + 1 bytes; returns the length written (NUL-terminated). */
static size_t bytes_to_bl(const unsigned char *p, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned cp = tok_byte_to_unicode(p[i]);
        if (cp < 0x80) {
            out[k++] = (char)cp;
        } else { /* all mapped code points are < 0x800: two UTF-8 bytes */
            out[k++] = (char)(0xC0 | (cp >> 6));
            out[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[k] = '\0';
    return k;
}

/* Decodes one UTF-8 sequence strictly (no overlongs, surrogates or values past U+10FFFF).
 * Returns its length (1-4) and sets *cp, or 0 when s[0..n) does not start with one. */
static size_t utf8_decode(const unsigned char *s, size_t n, unsigned *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF, v;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        unsigned d = s[i];
        if (i == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
        v = (v << 6) | (d & 0x3F);
    }
    *cp = v;
    return len;
}

/* Decodes a byte-level string (a vocab key) into bytes; out needs strlen(s) bytes. Returns the
 * byte count, or -1 with *bad set to the first code point outside the alphabet (or 0xFFFFFFFF
 * for malformed UTF-8). */
static long bl_to_bytes(const char *s, const short table[ALPHABET_END], unsigned char *out, unsigned *bad) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    long k = 0;
    while (i < n) {
        unsigned cp;
        size_t l = utf8_decode(p + i, n - i, &cp);
        if (l == 0) {
            *bad = 0xFFFFFFFFu;
            return -1;
        }
        if (cp >= ALPHABET_END || table[cp] < 0) {
            *bad = cp;
            return -1;
        }
        out[k++] = (unsigned char)table[cp];
        i += l;
    }
    return k;
}

/* ---- the pre-split rule ------------------------------------------------------------------- */

enum { CL_SPACE, CL_LETTER, CL_DIGIT, CL_OTHER };

static int is_space_byte(unsigned c) { return c == ' ' || (c >= 0x09 && c <= 0x0D); }

/* Class of the character at s[i] (see tokenizer.h) and its length in bytes. */
static int char_class(const unsigned char *s, size_t n, size_t i, size_t *len) {
    unsigned c = s[i];
    if (c < 0x80) {
        *len = 1;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CL_LETTER;
        if (c >= '0' && c <= '9') return CL_DIGIT;
        if (is_space_byte(c)) return CL_SPACE;
        return CL_OTHER;
    }
    unsigned cp;
    size_t l = utf8_decode(s + i, n - i, &cp);
    if (l == 0) {
        *len = 1;
        return CL_OTHER;
    }
    *len = l;
    if (cp <= 0xBF || (cp >= 0x2000 && cp <= 0x206F)) return CL_OTHER;
    return CL_LETTER;
}

/* End of the pre-split word that starts at s[i] (i < n): the first alternative of
 * TOK_SPLIT_REGEX that matches there, as Oniguruma's leftmost-first alternation picks it. */
static size_t split_next(const unsigned char *s, size_t n, size_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        unsigned d = s[i + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
        if (i + 2 < n) {
            unsigned e = s[i + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return i + 3;
        }
    }
    size_t l;
    int cls = char_class(s, n, i, &l);
    size_t j = i;
    if (s[i] == ' ' && i + 1 < n) { /* " ?X+": the space joins a following non-space run */
        size_t l2;
        int cls2 = char_class(s, n, i + 1, &l2);
        if (cls2 != CL_SPACE) {
            j = i + 1;
            cls = cls2;
            l = l2;
        }
    }
    if (cls != CL_SPACE) {
        size_t k = j + l;
        while (k < n) {
            size_t l3;
            if (char_class(s, n, k, &l3) != cls) break;
            k += l3;
        }
        return k;
    }
    /* "\s+(?!\S)|\s+": a run that reaches the end is one word; otherwise its last character is
     * left to the next word (if the run is longer than one). */
    size_t k = i + 1;
    while (k < n && is_space_byte(s[k])) k++;
    if (k == n) return n;
    return k - 1 > i ? k - 1 : k;
}

size_t tok_split_next(const char *s, size_t n, size_t i) {
    LL_ASSERT(i < n);
    return split_next((const unsigned char *)s, n, i);
}

/* ---- the object --------------------------------------------------------------------------- */

struct Tokenizer {
    int n_ids;
    char *arena; /* bytes of every token, id after id */
    size_t *off;
    int *len;
    unsigned char *special; /* per id: 1 for added (special) tokens */
    int byte_id[256];
    int n_merges;
    int *m_left, *m_right, *m_result; /* per rank */
    PairMap merge_rank;               /* (left, right) -> rank */
    int bos, eos, pad;
    int n_special;
    int *special_ids; /* matched in text, longest first */
    unsigned char special_first[256];
    int max_length;
    int add_bos; /* tokenizer_config.json asks for a BOS before a text encoded for the model */
};

/* Builds a tokenizer from per-id bytes (arena/off/len, copied), special flags, byte ids and
 * merges (copied). The caller has validated everything; specials named <s>, </s>, <pad> must
 * exist. */
static Tokenizer *tok_build(int n_ids, const char *arena, const size_t *off, const int *len,
                            const unsigned char *special, const int byte_id[256], int n_merges,
                            const int *ml, const int *mr, const int *mres) {
    Tokenizer *t = ll_calloc(1, sizeof *t);
    t->n_ids = n_ids;
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) total += (size_t)len[i];
    t->arena = ll_malloc(total + 1, 1);
    t->off = ll_malloc((size_t)n_ids, sizeof(size_t));
    t->len = ll_malloc((size_t)n_ids, sizeof(int));
    t->special = ll_calloc((size_t)n_ids, 1);
    size_t pos = 0;
    for (int i = 0; i < n_ids; i++) {
        memcpy(t->arena + pos, arena + off[i], (size_t)len[i]);
        t->off[i] = pos;
        t->len[i] = len[i];
        t->special[i] = special[i];
        pos += (size_t)len[i];
    }
    memcpy(t->byte_id, byte_id, sizeof t->byte_id);
    t->n_merges = n_merges;
    size_t nm = n_merges ? (size_t)n_merges : 1;
    t->m_left = ll_malloc(nm, sizeof(int));
    t->m_right = ll_malloc(nm, sizeof(int));
    t->m_result = ll_malloc(nm, sizeof(int));
    pmap_init(&t->merge_rank, (size_t)n_merges);
    for (int r = 0; r < n_merges; r++) {
        t->m_left[r] = ml[r];
        t->m_right[r] = mr[r];
        t->m_result[r] = mres[r];
        int got = pmap_put(&t->merge_rank, pair_key(ml[r], mr[r]), r);
        LL_ASSERT(got == r); /* no duplicate merges */
    }
    t->bos = t->eos = t->pad = -1;
    t->special_ids = ll_malloc((size_t)n_ids, sizeof(int));
    for (int i = 0; i < n_ids; i++) {
        if (!special[i]) continue;
        const char *p = t->arena + t->off[i];
        size_t l = (size_t)t->len[i];
        if (l == strlen(TOK_BOS_TEXT) && memcmp(p, TOK_BOS_TEXT, l) == 0) t->bos = i;
        if (l == strlen(TOK_EOS_TEXT) && memcmp(p, TOK_EOS_TEXT, l) == 0) t->eos = i;
        if (l == strlen(TOK_PAD_TEXT) && memcmp(p, TOK_PAD_TEXT, l) == 0) t->pad = i;
        if (l == 0) continue;
        /* insertion by length, longest first, so the first match at a position is the longest */
        int k = t->n_special++;
        while (k > 0 && t->len[t->special_ids[k - 1]] < t->len[i]) {
            t->special_ids[k] = t->special_ids[k - 1];
            k--;
        }
        t->special_ids[k] = i;
        t->special_first[(unsigned char)p[0]] = 1;
    }
    LL_ASSERT(t->bos >= 0 && t->eos >= 0 && t->pad >= 0);
    t->max_length = TOK_DEFAULT_MAX_LENGTH;
    return t;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    ll_free(t->arena);
    ll_free(t->off);
    ll_free(t->len);
    ll_free(t->special);
    ll_free(t->m_left);
    ll_free(t->m_right);
    ll_free(t->m_result);
    pmap_free(&t->merge_rank);
    ll_free(t->special_ids);
    ll_free(t);
}

/* Appends the three specials after n regular tokens (arrays must have room for n + 3). */
static int add_specials(char *arena, size_t *pos, size_t *off, int *len, unsigned char *special, int n) {
    const char *names[3] = {TOK_BOS_TEXT, TOK_EOS_TEXT, TOK_PAD_TEXT};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(names[k]);
        memcpy(arena + *pos, names[k], l);
        off[n] = *pos;
        len[n] = (int)l;
        special[n] = 1;
        *pos += l;
        n++;
    }
    return n;
}

Tokenizer *tok_new_bytes(void) {
    char arena[256 + 16];
    size_t off[259], pos = 0;
    int len[259], byte_id[256];
    unsigned char special[259] = {0};
    for (int b = 0; b < 256; b++) {
        arena[pos] = (char)b;
        off[b] = pos++;
        len[b] = 1;
        byte_id[b] = b;
    }
    int n = add_specials(arena, &pos, off, len, special, 256);
    return tok_build(n, arena, off, len, special, byte_id, 0, NULL, NULL, NULL);
}

int tok_vocab_size(const Tokenizer *t) { return t->n_ids; }
int tok_bos(const Tokenizer *t) { return t->bos; }
int tok_eos(const Tokenizer *t) { return t->eos; }
int tok_pad(const Tokenizer *t) { return t->pad; }
int tok_n_merges(const Tokenizer *t) { return t->n_merges; }
int tok_max_length(const Tokenizer *t) { return t->max_length; }
int tok_add_bos(const Tokenizer *t) { return t->add_bos; }

void tok_set_max_length(Tokenizer *t, int n) {
    LL_ASSERT(n > 0);
    t->max_length = n;
}

void tok_merge(const Tokenizer *t, int rank, int *left, int *right, int *result) {
    LL_ASSERT(rank >= 0 && rank < t->n_merges);
    *left = t->m_left[rank];
    *right = t->m_right[rank];
    *result = t->m_result[rank];
}

const char *tok_token_bytes(const Tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_ids) return NULL;
    *len = (size_t)t->len[id];
    return t->arena + t->off[id];
}

int tok_is_special(const Tokenizer *t, int id) { return id >= 0 && id < t->n_ids && t->special[id]; }

/* ---- encoding ----------------------------------------------------------------------------- */

typedef struct {
    int c, prev, next, len; /* len 0: merged into the symbol on its left */
} Sym;
typedef struct {
    int rank, pos, id;
} MergeItem;

/* min-heap on (rank, pos): the lowest rank first, the leftmost first among equal ranks */
static int merge_before(MergeItem a, MergeItem b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void mheap_push(MergeItem *h, size_t *n, MergeItem x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_before(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static MergeItem mheap_pop(MergeItem *h, size_t *n) {
    MergeItem top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_before(h[c + 1], h[c])) c++;
        if (!merge_before(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = x;
    return top;
}

typedef struct {
    Sym *sym;
    MergeItem *heap;
    size_t cap; /* symbols; the heap holds 3 * cap (n - 1 initial pairs + 2 per merge) */
} Scratch;

static int merge_rank_of(const Tokenizer *t, int l, int r) { return pmap_get(&t->merge_rank, pair_key(l, r)); }

/* BPE on one pre-split word of n >= 1 bytes; writes at most n ids to out, returns the count. */
static size_t bpe_word(const Tokenizer *t, const unsigned char *w, size_t n, Scratch *sc, int *out) {
    if (n == 1 || t->n_merges == 0) {
        for (size_t i = 0; i < n; i++) out[i] = t->byte_id[w[i]];
        return n;
    }
    if (n > sc->cap) {
        ll_free(sc->sym);
        ll_free(sc->heap);
        sc->cap = n + n / 2;
        sc->sym = ll_malloc(sc->cap, sizeof(Sym));
        sc->heap = ll_malloc(3 * sc->cap, sizeof(MergeItem));
    }
    Sym *s = sc->sym;
    MergeItem *h = sc->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        s[i].c = t->byte_id[w[i]];
        s[i].prev = (int)i - 1;
        s[i].next = i + 1 < n ? (int)i + 1 : -1;
        s[i].len = 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int r = merge_rank_of(t, s[i].c, s[i + 1].c);
        if (r >= 0) mheap_push(h, &hn, (MergeItem){r, (int)i, t->m_result[r]});
    }
    while (hn > 0) {
        MergeItem top = mheap_pop(h, &hn);
        Sym *a = &s[top.pos];
        if (a->len == 0 || a->next < 0) continue;
        Sym *b = &s[a->next];
        int r = merge_rank_of(t, a->c, b->c);
        if (r < 0 || t->m_result[r] != top.id) continue; /* stale entry */
        a->c = top.id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) s[a->next].prev = top.pos;
        if (a->prev >= 0) {
            int r2 = merge_rank_of(t, s[a->prev].c, a->c);
            if (r2 >= 0) mheap_push(h, &hn, (MergeItem){r2, a->prev, t->m_result[r2]});
        }
        if (a->next >= 0) {
            int r3 = merge_rank_of(t, a->c, s[a->next].c);
            if (r3 >= 0) mheap_push(h, &hn, (MergeItem){r3, top.pos, t->m_result[r3]});
        }
    }
    size_t k = 0;
    for (int i = 0; i >= 0; i = s[i].next) out[k++] = s[i].c;
    return k;
}

typedef struct {
    const Tokenizer *t;
    const unsigned char *text;
    int *ids;
    size_t cap, n;
    Scratch sc;
    int use_cache;
    BytesMap cache; /* word (offset into text) -> index of its entry in cache_at/cache_n */
    size_t *cache_at;
    int *cache_n, *cache_ids;
    size_t cache_entries, cache_entries_cap, cache_ids_len, cache_ids_cap;
} Encoder;

static void enc_reserve(Encoder *e, size_t more) {
    if (e->n + more <= e->cap) return;
    size_t c = e->cap ? e->cap : 256;
    while (c < e->n + more) c *= 2;
    e->ids = ll_realloc(e->ids, c, sizeof(int));
    e->cap = c;
}

static void enc_word(Encoder *e, size_t i, size_t j) {
    const unsigned char *w = e->text + i;
    size_t n = j - i;
    enc_reserve(e, n);
    if (n == 1) {
        e->ids[e->n++] = e->t->byte_id[w[0]];
        return;
    }
    if (!e->use_cache || n > CACHE_MAX_WORD) {
        e->n += bpe_word(e->t, w, n, &e->sc, e->ids + e->n);
        return;
    }
    uint64_t h = hash_bytes(w, n);
    int hit = bmap_get(&e->cache, e->text, w, n, h);
    if (hit >= 0) {
        memcpy(e->ids + e->n, e->cache_ids + e->cache_at[hit], (size_t)e->cache_n[hit] * sizeof(int));
        e->n += (size_t)e->cache_n[hit];
        return;
    }
    size_t k = bpe_word(e->t, w, n, &e->sc, e->ids + e->n);
    if (e->cache_entries == e->cache_entries_cap) {
        e->cache_entries_cap = e->cache_entries_cap ? 2 * e->cache_entries_cap : 1024;
        e->cache_at = ll_realloc(e->cache_at, e->cache_entries_cap, sizeof(size_t));
        e->cache_n = ll_realloc(e->cache_n, e->cache_entries_cap, sizeof(int));
    }
    if (e->cache_ids_len + k > e->cache_ids_cap) {
        while (e->cache_ids_len + k > e->cache_ids_cap)
            e->cache_ids_cap = e->cache_ids_cap ? 2 * e->cache_ids_cap : 4096;
        e->cache_ids = ll_realloc(e->cache_ids, e->cache_ids_cap, sizeof(int));
    }
    int idx = (int)e->cache_entries++;
    e->cache_at[idx] = e->cache_ids_len;
    e->cache_n[idx] = (int)k;
    memcpy(e->cache_ids + e->cache_ids_len, e->ids + e->n, k * sizeof(int));
    e->cache_ids_len += k;
    bmap_put(&e->cache, e->text, i, n, idx);
    e->n += k;
    /* A runaway vocabulary of distinct words (random bytes) would make the cache the largest
     * allocation; past a million entries it is simply no longer used. */
    if (e->cache_entries >= (1u << 20)) e->use_cache = 0;
}

static void enc_stretch(Encoder *e, size_t i, size_t end) {
    while (i < end) {
        size_t j = split_next(e->text, end, i);
        enc_word(e, i, j);
        i = j;
    }
}

size_t tok_encode(const Tokenizer *t, const char *text, size_t len, int **ids, size_t *cap) {
    Encoder e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.text = (const unsigned char *)text;
    e.ids = *ids;
    e.cap = *ids ? *cap : 0;
    e.use_cache = len >= CACHE_MIN_TEXT && t->n_merges > 0;
    if (e.use_cache) bmap_init(&e.cache, 4096);
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        if (t->n_special > 0 && t->special_first[e.text[i]]) {
            int hit = -1;
            for (int k = 0; k < t->n_special; k++) { /* longest first */
                int id = t->special_ids[k];
                size_t l = (size_t)t->len[id];
                if (l <= len - i && memcmp(text + i, t->arena + t->off[id], l) == 0) {
                    hit = id;
                    break;
                }
            }
            if (hit >= 0) {
                enc_stretch(&e, start, i);
                enc_reserve(&e, 1);
                e.ids[e.n++] = hit;
                i += (size_t)t->len[hit];
                start = i;
                continue;
            }
        }
        i++;
    }
    enc_stretch(&e, start, len);
    ll_free(e.sc.sym);
    ll_free(e.sc.heap);
    if (e.cache.e) bmap_free(&e.cache);
    ll_free(e.cache_at);
    ll_free(e.cache_n);
    ll_free(e.cache_ids);
    *ids = e.ids;
    *cap = e.cap;
    return e.n;
}

size_t tok_decode_one(const Tokenizer *t, int id, char *out, size_t cap) {
    if (id < 0 || id >= t->n_ids || t->special[id]) return 0;
    size_t n = (size_t)t->len[id];
    if (cap > 0) memcpy(out, t->arena + t->off[id], n < cap ? n : cap);
    return n;
}

size_t tok_decode(const Tokenizer *t, const int *ids, size_t n, char **out, size_t *cap) {
    size_t k = 0;
    if (!*out || *cap == 0) {
        *cap = 256;
        *out = ll_realloc(*out, *cap, 1);
    }
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || t->special[id]) continue;
        size_t l = (size_t)t->len[id];
        if (k + l + 1 > *cap) {
            while (k + l + 1 > *cap) *cap *= 2;
            *out = ll_realloc(*out, *cap, 1);
        }
        memcpy(*out + k, t->arena + t->off[id], l);
        k += l;
    }
    (*out)[k] = '\0';
    return k;
}

/* ---- training ----------------------------------------------------------------------------- */

typedef struct {
    int64_t count;
    int left, right;
} PairItem;

/* max-heap: the highest count first; among equal counts the smallest (left, right) */
static int pair_before(PairItem a, PairItem b) {
    if (a.count != b.count) return a.count > b.count;
    if (a.left != b.left) return a.left < b.left;
    return a.right < b.right;
}

typedef struct {
    PairItem *h;
    size_t n, cap;
} PairHeap;

static void pheap_push(PairHeap *q, PairItem x) {
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 1024;
        q->h = ll_realloc(q->h, q->cap, sizeof(PairItem));
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!pair_before(x, q->h[p])) break;
        q->h[i] = q->h[p];
        i = p;
    }
    q->h[i] = x;
}

static PairItem pheap_pop(PairHeap *q) {
    PairItem top = q->h[0], x = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n) break;
        if (c + 1 < q->n && pair_before(q->h[c + 1], q->h[c])) c++;
        if (!pair_before(q->h[c], x)) break;
        q->h[i] = q->h[c];
        i = c;
    }
    if (q->n > 0) q->h[i] = x;
    return top;
}

/* Per adjacent pair: its count over the corpus and the words where it was seen (a word may be
 * listed although the pair has left it since; merging re-checks). */
typedef struct {
    int left, right;
    int64_t count;
    int *words;
    int n_words, cap_words;
    int touched; /* merge step that last grew the count */
    int merged;  /* already a merge: never merged twice */
} PairStat;

typedef struct {
    PairMap map; /* (left, right) -> index into stat */
    PairStat *stat;
    int n, cap;
} Pairs;

static int pairs_get_or_add(Pairs *ps, int l, int r) {
    uint64_t key = pair_key(l, r);
    int idx = pmap_get(&ps->map, key);
    if (idx >= 0) return idx;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 4096;
        ps->stat = ll_realloc(ps->stat, (size_t)ps->cap, sizeof(PairStat));
    }
    idx = ps->n++;
    memset(&ps->stat[idx], 0, sizeof(PairStat));
    ps->stat[idx].left = l;
    ps->stat[idx].right = r;
    ps->stat[idx].touched = -1;
    pmap_put(&ps->map, key, idx);
    return idx;
}

static void pair_add_word(PairStat *p, int w) {
    if (p->n_words > 0 && p->words[p->n_words - 1] == w) return;
    if (p->n_words == p->cap_words) {
        p->cap_words = p->cap_words ? 2 * p->cap_words : 4;
        p->words = ll_realloc(p->words, (size_t)p->cap_words, sizeof(int));
    }
    p->words[p->n_words++] = w;
}

typedef struct {
    Pairs ps;
    PairHeap heap;
    int step;
    int *touched_list;
    int n_touched, cap_touched;
} Trainer;

static void pair_change(Trainer *tr, int l, int r, int64_t delta, int w) {
    int idx = pairs_get_or_add(&tr->ps, l, r);
    PairStat *p = &tr->ps.stat[idx];
    p->count += delta;
    LL_ASSERT(p->count >= 0);
    if (delta > 0) {
        pair_add_word(p, w);
        if (p->touched != tr->step) {
            p->touched = tr->step;
            if (tr->n_touched == tr->cap_touched) {
                tr->cap_touched = tr->cap_touched ? 2 * tr->cap_touched : 1024;
                tr->touched_list = ll_realloc(tr->touched_list, (size_t)tr->cap_touched, sizeof(int));
            }
            tr->touched_list[tr->n_touched++] = idx;
        }
    }
}

LLStatus tok_train_bpe(const char *text, size_t len, int vocab_size, Tokenizer **out, LLError *err) {
    *out = NULL;
    if (vocab_size < 259 || vocab_size > TOK_MAX_TRAIN_VOCAB)
        return ll_err(err, LL_ERR_CONFIG,
                      "BPE vocabulary size %d is out of range: it must be in [259, %d] (256 bytes + "
                      "merges + 3 special tokens)",
                      vocab_size, TOK_MAX_TRAIN_VOCAB);
    const unsigned char *s = (const unsigned char *)text;

    /* 1. unique words and their counts */
    BytesMap wmap;
    bmap_init(&wmap, 1 << 14);
    size_t *woff = NULL;
    int *wlen = NULL;
    int64_t *wcount = NULL;
    int nw = 0, capw = 0;
    for (size_t i = 0; i < len;) {
        size_t j = split_next(s, len, i);
        if (j - i > (size_t)INT_MAX / 4) j = i + (size_t)INT_MAX / 4; /* absurd words: cut */
        int idx = bmap_put(&wmap, s, i, j - i, nw);
        if (idx == nw) {
            if (nw == capw) {
                capw = capw ? 2 * capw : 1 << 14;
                woff = ll_realloc(woff, (size_t)capw, sizeof(size_t));
                wlen = ll_realloc(wlen, (size_t)capw, sizeof(int));
                wcount = ll_realloc(wcount, (size_t)capw, sizeof(int64_t));
            }
            woff[nw] = i;
            wlen[nw] = (int)(j - i);
            wcount[nw] = 0;
            nw++;
        }
        wcount[idx]++;
        i = j;
    }
    bmap_free(&wmap);

    /* 2. symbols: every word starts as its bytes (ids 0..255 are the bytes) */
    size_t total = 0;
    size_t *soff = ll_malloc(nw ? (size_t)nw : 1, sizeof(size_t));
    for (int w = 0; w < nw; w++) {
        soff[w] = total;
        total += (size_t)wlen[w];
    }
    int *sym = ll_malloc(total ? total : 1, sizeof(int));
    for (int w = 0; w < nw; w++)
        for (int k = 0; k < wlen[w]; k++) sym[soff[w] + (size_t)k] = s[woff[w] + (size_t)k];
    ll_free(woff);
    int *wstamp = ll_malloc(nw ? (size_t)nw : 1, sizeof(int));
    for (int w = 0; w < nw; w++) wstamp[w] = -1;

    /* 3. initial pair counts */
    Trainer tr;
    memset(&tr, 0, sizeof tr);
    pmap_init(&tr.ps.map, 1 << 16);
    tr.step = 0;
    for (int w = 0; w < nw; w++) {
        const int *ws = sym + soff[w];
        for (int k = 0; k + 1 < wlen[w]; k++) pair_change(&tr, ws[k], ws[k + 1], wcount[w], w);
    }
    for (int k = 0; k < tr.n_touched; k++) {
        PairStat *p = &tr.ps.stat[tr.touched_list[k]];
        pheap_push(&tr.heap, (PairItem){p->count, p->left, p->right});
    }

    /* 4. tokens so far: the bytes; merges as they come */
    int target = vocab_size - 3;
    size_t acap = 4096, apos = 0;
    char *arena = ll_malloc(acap, 1);
    int tcap = target + 3;
    size_t *toff = ll_malloc((size_t)tcap, sizeof(size_t));
    int *tlen = ll_malloc((size_t)tcap, sizeof(int));
    BytesMap tmap;
    bmap_init(&tmap, (size_t)tcap);
    for (int b = 0; b < 256; b++) {
        arena[apos] = (char)b;
        toff[b] = apos++;
        tlen[b] = 1;
        bmap_put(&tmap, (const unsigned char *)arena, toff[b], 1, b);
    }
    int n_tok = 256;
    int *ml = NULL, *mr = NULL, *mres = NULL;
    int n_merges = 0, cap_merges = 0;

    /* 5. merge until the vocabulary is full or no pair is left */
    while (n_tok < target && tr.heap.n > 0) {
        PairItem top = pheap_pop(&tr.heap);
        int pidx = pmap_get(&tr.ps.map, pair_key(top.left, top.right));
        LL_ASSERT(pidx >= 0);
        PairStat *p = &tr.ps.stat[pidx];
        if (p->merged || p->count == 0) continue;
        if (p->count != top.count) { /* stale: the count fell since this entry was pushed */
            if (p->count < top.count) pheap_push(&tr.heap, (PairItem){p->count, p->left, p->right});
            continue;
        }
        int a = p->left, b = p->right;
        /* the new token's bytes; an existing token with the same bytes keeps its id */
        size_t la = (size_t)tlen[a], lb = (size_t)tlen[b];
        if (apos + la + lb > acap) {
            while (apos + la + lb > acap) acap *= 2;
            arena = ll_realloc(arena, acap, 1);
        }
        memcpy(arena + apos, arena + toff[a], la);
        memcpy(arena + apos + la, arena + toff[b], lb);
        int z = bmap_put(&tmap, (const unsigned char *)arena, apos, la + lb, n_tok);
        if (z == n_tok) {
            toff[n_tok] = apos;
            tlen[n_tok] = (int)(la + lb);
            apos += la + lb;
            n_tok++;
        }
        if (n_merges == cap_merges) {
            cap_merges = cap_merges ? 2 * cap_merges : 1024;
            ml = ll_realloc(ml, (size_t)cap_merges, sizeof(int));
            mr = ll_realloc(mr, (size_t)cap_merges, sizeof(int));
            mres = ll_realloc(mres, (size_t)cap_merges, sizeof(int));
        }
        ml[n_merges] = a;
        mr[n_merges] = b;
        mres[n_merges] = z;
        n_merges++;
        p->merged = 1;

        /* rewrite every word on the pair's list; the list is detached because new pairs may
         * move the stat array */
        int *list = p->words, n_list = p->n_words;
        p->words = NULL;
        p->n_words = p->cap_words = 0;
        tr.step++;
        tr.n_touched = 0;
        for (int k = 0; k < n_list; k++) {
            int w = list[k];
            if (wstamp[w] == tr.step) continue;
            wstamp[w] = tr.step;
            int *ws = sym + soff[w];
            int n = wlen[w], o = 0;
            int64_t c = wcount[w];
            for (int i = 0; i < n;) {
                if (i + 1 < n && ws[i] == a && ws[i + 1] == b) {
                    /* the pairs around the occurrence change: (x, a) -> (x, z), (b, y) -> (z, y) */
                    if (o > 0) {
                        pair_change(&tr, ws[o - 1], a, -c, w);
                        pair_change(&tr, ws[o - 1], z, c, w);
                    }
                    if (i + 2 < n) {
                        pair_change(&tr, b, ws[i + 2], -c, w);
                        pair_change(&tr, z, ws[i + 2], c, w);
                    }
                    pair_change(&tr, a, b, -c, w);
                    ws[o++] = z;
                    i += 2;
                } else {
                    ws[o++] = ws[i++];
                }
            }
            wlen[w] = o;
        }
        ll_free(list);
        for (int k = 0; k < tr.n_touched; k++) {
            PairStat *q = &tr.ps.stat[tr.touched_list[k]];
            if (!q->merged && q->count > 0) pheap_push(&tr.heap, (PairItem){q->count, q->left, q->right});
        }
    }

    /* 6. the tokenizer: regular tokens, then the specials */
    if (apos + 16 > acap) {
        acap = apos + 16;
        arena = ll_realloc(arena, acap, 1);
    }
    unsigned char *special = ll_calloc((size_t)n_tok + 3, 1);
    int n_ids = add_specials(arena, &apos, toff, tlen, special, n_tok);
    int byte_id[256];
    for (int b = 0; b < 256; b++) byte_id[b] = b;
    *out = tok_build(n_ids, arena, toff, tlen, special, byte_id, n_merges, ml, mr, mres);

    for (int k = 0; k < tr.ps.n; k++) ll_free(tr.ps.stat[k].words);
    ll_free(tr.ps.stat);
    pmap_free(&tr.ps.map);
    ll_free(tr.heap.h);
    ll_free(tr.touched_list);
    bmap_free(&tmap);
    ll_free(special);
    ll_free(arena);
    ll_free(toff);
    ll_free(tlen);
    ll_free(ml);
    ll_free(mr);
    ll_free(mres);
    ll_free(sym);
    ll_free(soff);
    ll_free(wlen);
    ll_free(wcount);
    ll_free(wstamp);
    return LL_OK;
}

/* ---- saving ------------------------------------------------------------------------------- */

static cJSON *token_string(const Tokenizer *t, int id) {
    size_t n = (size_t)t->len[id];
    char small[256];
    char *buf = 2 * n + 1 <= sizeof small ? small : ll_malloc(2 * n + 1, 1);
    bytes_to_bl((const unsigned char *)t->arena + t->off[id], n, buf);
    cJSON *s = cJSON_CreateString(buf);
    if (buf != small) ll_free(buf);
    return s;
}

static cJSON *added_token_json(const Tokenizer *t, int id, int with_id) {
    cJSON *o = cJSON_CreateObject();
    size_t n = (size_t)t->len[id];
    char *content = ll_malloc(n + 1, 1);
    memcpy(content, t->arena + t->off[id], n);
    content[n] = '\0';
    if (with_id) cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", content);
    ll_free(content);
    cJSON_AddFalseToObject(o, "single_word");
    cJSON_AddFalseToObject(o, "lstrip");
    cJSON_AddFalseToObject(o, "rstrip");
    cJSON_AddFalseToObject(o, "normalized");
    cJSON_AddTrueToObject(o, "special");
    return o;
}

static cJSON *byte_level_json(int add_prefix_space, int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", 1);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static char *tokenizer_json(const Tokenizer *t) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < t->n_ids; i++)
        if (t->special[i]) cJSON_AddItemToArray(added, added_token_json(t, i, 1));
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *seq = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *pat = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(pat, "Regex", TOK_SPLIT_REGEX);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON_AddItemToArray(seq, split);
    cJSON_AddItemToArray(seq, byte_level_json(0, 0));
    cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddItemToObject(root, "decoder", byte_level_json(1, 1));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddFalseToObject(model, "fuse_unk");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddFalseToObject(model, "ignore_merges");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 0; i < t->n_ids; i++) {
        if (t->special[i]) continue;
        cJSON *s = token_string(t, i);
        cJSON_AddItemToObject(vocab, s->valuestring, cJSON_CreateNumber(i));
        cJSON_Delete(s);
    }
    /* legacy "left right" strings: every HF version reads them, and byte-level token strings
     * never contain a space (byte 32 is U+0120) */
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int r = 0; r < t->n_merges; r++) {
        cJSON *l = token_string(t, t->m_left[r]), *rr = token_string(t, t->m_right[r]);
        size_t n = strlen(l->valuestring) + strlen(rr->valuestring) + 2;
        char *buf = ll_malloc(n, 1);
        snprintf(buf, n, "%s %s", l->valuestring, rr->valuestring);
        cJSON_AddItemToArray(merges, cJSON_CreateString(buf));
        ll_free(buf);
        cJSON_Delete(l);
        cJSON_Delete(rr);
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    LL_ASSERT(txt != NULL);
    return txt;
}

static char *tokenizer_config_json(const Tokenizer *t) {
    cJSON *root = cJSON_CreateObject();
    cJSON *dec = cJSON_AddObjectToObject(root, "added_tokens_decoder");
    for (int i = 0; i < t->n_ids; i++) {
        if (!t->special[i]) continue;
        char key[32];
        snprintf(key, sizeof key, "%d", i);
        cJSON_AddItemToObject(dec, key, added_token_json(t, i, 0));
    }
    cJSON_AddStringToObject(root, "bos_token", TOK_BOS_TEXT);
    cJSON_AddStringToObject(root, "eos_token", TOK_EOS_TEXT);
    cJSON_AddStringToObject(root, "pad_token", TOK_PAD_TEXT);
    /* transformers' default clean-up would rewrite " ." to "." on decode */
    cJSON_AddFalseToObject(root, "clean_up_tokenization_spaces");
    cJSON_AddNumberToObject(root, "model_max_length", t->max_length);
    cJSON_AddStringToObject(root, "tokenizer_class", "PreTrainedTokenizerFast");
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    LL_ASSERT(txt != NULL);
    return txt;
}

static char *special_tokens_map_json(void) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "bos_token", TOK_BOS_TEXT);
    cJSON_AddStringToObject(root, "eos_token", TOK_EOS_TEXT);
    cJSON_AddStringToObject(root, "pad_token", TOK_PAD_TEXT);
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    LL_ASSERT(txt != NULL);
    return txt;
}

static LLStatus write_json(const char *dir, const char *name, char *txt, LLError *err) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    LLStatus st;
    if (n < 0 || (size_t)n >= sizeof path) {
        st = ll_err(err, LL_ERR_IO, "tokenizer folder path too long: '%s'", dir);
    } else {
        size_t len = strlen(txt);
        txt[len] = '\n'; /* cJSON's buffer ends in a NUL we may overwrite: write a final newline */
        st = ll_write_file_atomic(path, txt, len + 1, err);
        txt[len] = '\0';
    }
    cJSON_free(txt);
    return st;
}

LLStatus tok_save(const Tokenizer *t, const char *dir, LLError *err) {
    LLStatus st = ll_mkdirs(dir, err);
    if (!st) st = write_json(dir, "tokenizer.json", tokenizer_json(t), err);
    if (!st) st = write_json(dir, "tokenizer_config.json", tokenizer_config_json(t), err);
    if (!st) st = write_json(dir, "special_tokens_map.json", special_tokens_map_json(), err);
    if (st) return ll_err_prefix(err, "saving the tokenizer to '%s'", dir);
    return LL_OK;
}

/* ---- loading ------------------------------------------------------------------------------ */

/* A short, printable excerpt of s for messages. */
static const char *excerpt(const char *s, char buf[48]) {
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && k < 40; p++)
        buf[k++] = (*p < 0x20 || *p == 0x7F) ? '?' : (char)*p;
    if (s[k] != '\0') { /* more to come: k input bytes became k output bytes */
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

static int json_is_null_or_absent(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v == NULL || cJSON_IsNull(v);
}

static int json_is_false_or_absent(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v == NULL || cJSON_IsFalse(v) || cJSON_IsNull(v);
}

static int json_str_is(const cJSON *o, const char *key, const char *want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

/* An integer id in [0, bound), or -1. */
static long json_id(const cJSON *v, long bound) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < (double)bound)) return -1;
    long id = (long)d;
    return (double)id == d ? id : -1;
}

static LLStatus check_pre_tokenizer(const cJSON *root, LLError *err) {
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const char *want = "pre_tokenizer must be loralab's: a Sequence of Split (its regex, behavior "
                       "\"Isolated\", invert false) and ByteLevel (add_prefix_space false, use_regex "
                       "false); the C encoder implements no other";
    if (!cJSON_IsObject(pre) || !json_str_is(pre, "type", "Sequence"))
        return ll_err(err, LL_ERR_FORMAT, "%s (\"type\" is not \"Sequence\")", want);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!cJSON_IsArray(seq) || cJSON_GetArraySize(seq) != 2)
        return ll_err(err, LL_ERR_FORMAT, "%s (\"pretokenizers\" is not an array of 2)", want);
    const cJSON *split = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
    const cJSON *pat = cJSON_IsObject(split) ? cJSON_GetObjectItemCaseSensitive(split, "pattern") : NULL;
    if (!cJSON_IsObject(split) || !json_str_is(split, "type", "Split") || !cJSON_IsObject(pat))
        return ll_err(err, LL_ERR_FORMAT, "%s (the first is not a Split with a pattern)", want);
    if (!json_str_is(pat, "Regex", TOK_SPLIT_REGEX))
        return ll_err(err, LL_ERR_FORMAT, "%s (the Split pattern is not loralab's regex)", want);
    const cJSON *inv = cJSON_GetObjectItemCaseSensitive(split, "invert");
    if (!json_str_is(split, "behavior", "Isolated") || !cJSON_IsFalse(inv))
        return ll_err(err, LL_ERR_FORMAT, "%s (the Split's behavior or invert differ)", want);
    if (!cJSON_IsObject(bl) || !json_str_is(bl, "type", "ByteLevel"))
        return ll_err(err, LL_ERR_FORMAT, "%s (the second is not ByteLevel)", want);
    if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(bl, "add_prefix_space")) ||
        !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(bl, "use_regex")))
        return ll_err(err, LL_ERR_FORMAT, "%s (ByteLevel's add_prefix_space or use_regex is not false)", want);
    return LL_OK;
}

static LLStatus check_pipeline(const cJSON *root, const cJSON *model, LLError *err) {
    if (!json_is_null_or_absent(root, "normalizer"))
        return ll_err(err, LL_ERR_FORMAT, "\"normalizer\" must be null (loralab implements none)");
    if (!json_is_null_or_absent(root, "post_processor"))
        return ll_err(err, LL_ERR_FORMAT, "\"post_processor\" must be null (loralab adds BOS/EOS itself)");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!cJSON_IsObject(dec) || !json_str_is(dec, "type", "ByteLevel"))
        return ll_err(err, LL_ERR_FORMAT, "\"decoder\" must be of type \"ByteLevel\"");
    LLStatus st = check_pre_tokenizer(root, err);
    if (st) return st;
    if (!json_str_is(model, "type", "BPE"))
        return ll_err(err, LL_ERR_FORMAT, "model.type must be \"BPE\"");
    if (!json_is_null_or_absent(model, "dropout"))
        return ll_err(err, LL_ERR_FORMAT, "model.dropout must be null (BPE dropout is not deterministic)");
    const char *empty_keys[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, empty_keys[k]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && v->valuestring[0] == '\0'))
            return ll_err(err, LL_ERR_FORMAT, "model.%s must be null", empty_keys[k]);
    }
    if (!json_is_false_or_absent(model, "byte_fallback") || !json_is_false_or_absent(model, "ignore_merges"))
        return ll_err(err, LL_ERR_FORMAT, "model.byte_fallback and model.ignore_merges must be false");
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (unk && !cJSON_IsNull(unk) && !cJSON_IsString(unk))
        return ll_err(err, LL_ERR_FORMAT, "model.unk_token must be null or a string");
    return LL_OK;
}

/* Splits one merge entry ("a b" or ["a", "b"]) into its two strings (pointers into the JSON or
 * into buf). Returns 0 when malformed. */
static int merge_parts(const cJSON *m, char **buf, size_t *bufcap, const char **a, const char **b) {
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring;
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || sp[1] == '\0' || strchr(sp + 1, ' ')) return 0;
        size_t n = strlen(s) + 1;
        if (n > *bufcap) {
            *bufcap = n;
            *buf = ll_realloc(*buf, n, 1);
        }
        memcpy(*buf, s, n);
        (*buf)[sp - s] = '\0';
        *a = *buf;
        *b = *buf + (sp - s) + 1;
        return 1;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2) {
        const cJSON *x = cJSON_GetArrayItem(m, 0), *y = cJSON_GetArrayItem(m, 1);
        if (!cJSON_IsString(x) || !cJSON_IsString(y) || !x->valuestring[0] || !y->valuestring[0]) return 0;
        *a = x->valuestring;
        *b = y->valuestring;
        return 1;
    }
    return 0;
}

/* Everything the parser owns while validating; freed in one place. */
typedef struct {
    cJSON *root;
    char *arena;
    size_t acap, apos;
    size_t *off;
    int *len;
    unsigned char *special, *used;
    BytesMap bytes_to_id;
    int *ml, *mr, *mres;
    PairMap seen_merges;
    char *mbuf;
    size_t mbufcap;
    unsigned char *tmp;
    size_t tmpcap;
} Parse;

static void parse_free(Parse *p) {
    cJSON_Delete(p->root);
    ll_free(p->arena);
    ll_free(p->off);
    ll_free(p->len);
    ll_free(p->special);
    ll_free(p->used);
    if (p->bytes_to_id.e) bmap_free(&p->bytes_to_id);
    ll_free(p->ml);
    ll_free(p->mr);
    ll_free(p->mres);
    if (p->seen_merges.e) pmap_free(&p->seen_merges);
    ll_free(p->mbuf);
    ll_free(p->tmp);
}

static void arena_append(Parse *p, const void *src, size_t n) {
    if (p->apos + n > p->acap) {
        while (p->apos + n > p->acap) p->acap = p->acap ? 2 * p->acap : 4096;
        p->arena = ll_realloc(p->arena, p->acap, 1);
    }
    memcpy(p->arena + p->apos, src, n);
    p->apos += n;
}

/* Decodes the byte-level string s into p->tmp; returns its length or -1 (message in err). */
static long parse_bl(Parse *p, const char *s, const short table[ALPHABET_END], const char *where, LLError *err) {
    size_t n = strlen(s) + 1;
    if (n > INT_MAX) { /* token lengths are ints */
        ll_err(err, LL_ERR_FORMAT, "%s: a token of %zu bytes is too long", where, n - 1);
        return -1;
    }
    if (n > p->tmpcap) {
        p->tmpcap = n;
        p->tmp = ll_realloc(p->tmp, n, 1);
    }
    unsigned bad = 0;
    long k = bl_to_bytes(s, table, p->tmp, &bad);
    char ex[48];
    if (k < 0) {
        if (bad == 0xFFFFFFFFu)
            ll_err(err, LL_ERR_FORMAT, "%s: token \"%s\" is not valid UTF-8", where, excerpt(s, ex));
        else
            ll_err(err, LL_ERR_FORMAT,
                   "%s: token \"%s\" is not byte-level (U+%04X is not in the GPT-2 byte alphabet)", where,
                   excerpt(s, ex), bad);
        return -1;
    }
    if (k == 0) ll_err(err, LL_ERR_FORMAT, "%s: empty token", where);
    return k > 0 ? k : -1;
}

static LLStatus parse_tokenizer(Parse *p, const char *json, size_t len, Tokenizer **out, LLError *err) {
    const char *end = NULL;
    p->root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!p->root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return ll_err(err, LL_ERR_FORMAT, "not valid JSON (error near byte %zu)", at);
    }
    const cJSON *root = p->root;
    if (!cJSON_IsObject(root)) return ll_err(err, LL_ERR_FORMAT, "the top level is not a JSON object");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return ll_err(err, LL_ERR_FORMAT, "missing \"model\" object");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return ll_err(err, LL_ERR_FORMAT, "missing \"model.vocab\" object");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return ll_err(err, LL_ERR_FORMAT, "missing \"model.merges\" array");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsArray(added)) return ll_err(err, LL_ERR_FORMAT, "missing \"added_tokens\" array");
    LLStatus st = check_pipeline(root, model, err);
    if (st) return st;

    /* ids must be 0..N-1 with N at most the number of entries: bounds every allocation by the
     * size of the input, whatever the numbers in it say */
    long n_vocab = cJSON_GetArraySize(vocab), n_added = cJSON_GetArraySize(added);
    long bound = n_vocab + n_added;
    if (bound > (1L << 24)) return ll_err(err, LL_ERR_FORMAT, "more than %ld tokens", 1L << 24);
    size_t nb = bound > 0 ? (size_t)bound : 1;
    p->off = ll_malloc(nb, sizeof(size_t));
    p->len = ll_malloc(nb, sizeof(int));
    p->special = ll_calloc(nb, 1);
    p->used = ll_calloc(nb, 1);
    bmap_init(&p->bytes_to_id, nb);
    short table[ALPHABET_END];
    unicode_to_byte_table(table);
    char ex[48], ex2[48];

    const cJSON *v;
    cJSON_ArrayForEach(v, vocab) {
        long id = json_id(v, bound);
        if (id < 0)
            return ll_err(err, LL_ERR_FORMAT, "model.vocab: token \"%s\" has an id that is not an integer in [0, %ld)",
                          excerpt(v->string ? v->string : "", ex), bound);
        if (p->used[id])
            return ll_err(err, LL_ERR_FORMAT, "model.vocab: id %ld is given to two tokens (the second is \"%s\")", id,
                          excerpt(v->string, ex));
        long k = parse_bl(p, v->string ? v->string : "", table, "model.vocab", err);
        if (k < 0) return LL_ERR_FORMAT;
        size_t at = p->apos;
        arena_append(p, p->tmp, (size_t)k);
        if (bmap_put(&p->bytes_to_id, (const unsigned char *)p->arena, at, (size_t)k, (int)id) != id)
            return ll_err(err, LL_ERR_FORMAT, "model.vocab: token \"%s\" appears twice", excerpt(v->string, ex));
        p->used[id] = 1;
        p->off[id] = at;
        p->len[id] = (int)k;
    }
    int byte_id[256];
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        byte_id[b] = bmap_get(&p->bytes_to_id, (const unsigned char *)p->arena, &c, 1, hash_bytes(&c, 1));
        if (byte_id[b] < 0)
            return ll_err(err, LL_ERR_FORMAT, "model.vocab: the byte 0x%02X has no token (a byte-level vocab has all 256)",
                          b);
    }

    const cJSON *a;
    int i_added = 0;
    cJSON_ArrayForEach(a, added) {
        const cJSON *idv = cJSON_IsObject(a) ? cJSON_GetObjectItemCaseSensitive(a, "id") : NULL;
        const cJSON *content = cJSON_IsObject(a) ? cJSON_GetObjectItemCaseSensitive(a, "content") : NULL;
        long id = json_id(idv, bound);
        if (id < 0 || !cJSON_IsString(content) || content->valuestring[0] == '\0')
            return ll_err(err, LL_ERR_FORMAT,
                          "added_tokens[%d]: needs an \"id\" in [0, %ld) and a non-empty \"content\" string",
                          i_added, bound);
        const char *c = content->valuestring;
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")))
            return ll_err(err, LL_ERR_FORMAT, "added_tokens[%d]: \"%s\" is not special (only special added tokens are supported)",
                          i_added, excerpt(c, ex));
        if (!json_is_false_or_absent(a, "single_word") || !json_is_false_or_absent(a, "lstrip") ||
            !json_is_false_or_absent(a, "rstrip"))
            return ll_err(err, LL_ERR_FORMAT, "added_tokens[%d]: single_word, lstrip and rstrip must be false", i_added);
        size_t cl = strlen(c);
        if (cl > INT_MAX) /* token lengths are ints */
            return ll_err(err, LL_ERR_FORMAT, "added_tokens[%d]: a token of %zu bytes is too long", i_added, cl);
        if (p->used[id]) { /* allowed only as the same token also listed in the vocab */
            if (p->special[id] || (size_t)p->len[id] != cl || memcmp(p->arena + p->off[id], c, cl) != 0)
                return ll_err(err, LL_ERR_FORMAT, "added_tokens[%d]: id %ld of \"%s\" is already used by another token",
                              i_added, id, excerpt(c, ex));
        } else {
            p->off[id] = p->apos;
            p->len[id] = (int)cl;
            arena_append(p, c, cl);
            p->used[id] = 1;
        }
        p->special[id] = 1;
        i_added++;
    }
    int n_ids = 0;
    for (long i = 0; i < bound; i++) n_ids += p->used[i];
    for (long i = 0; i < n_ids; i++)
        if (!p->used[i])
            return ll_err(err, LL_ERR_FORMAT, "ids are not contiguous: %d tokens but id %ld is unused", n_ids, i);
    const char *need[3] = {TOK_BOS_TEXT, TOK_EOS_TEXT, TOK_PAD_TEXT};
    for (int k = 0; k < 3; k++) {
        int found = 0;
        for (int i = 0; i < n_ids && !found; i++)
            found = p->special[i] && (size_t)p->len[i] == strlen(need[k]) &&
                    memcmp(p->arena + p->off[i], need[k], strlen(need[k])) == 0;
        if (!found)
            return ll_err(err, LL_ERR_FORMAT, "added_tokens: the special token \"%s\" is missing", need[k]);
    }

    int n_merges = cJSON_GetArraySize(merges);
    size_t nmb = n_merges > 0 ? (size_t)n_merges : 1;
    p->ml = ll_malloc(nmb, sizeof(int));
    p->mr = ll_malloc(nmb, sizeof(int));
    p->mres = ll_malloc(nmb, sizeof(int));
    pmap_init(&p->seen_merges, nmb);
    const cJSON *m;
    int r = 0;
    cJSON_ArrayForEach(m, merges) {
        const char *sa, *sb;
        if (!merge_parts(m, &p->mbuf, &p->mbufcap, &sa, &sb))
            return ll_err(err, LL_ERR_FORMAT,
                          "model.merges[%d]: not two tokens (\"left right\" or [\"left\", \"right\"])", r);
        char where[64];
        snprintf(where, sizeof where, "model.merges[%d]", r);
        int ids[2];
        size_t lens[2];
        const char *parts[2] = {sa, sb};
        for (int k = 0; k < 2; k++) {
            long n = parse_bl(p, parts[k], table, where, err);
            if (n < 0) return LL_ERR_FORMAT;
            ids[k] = bmap_get(&p->bytes_to_id, (const unsigned char *)p->arena, p->tmp, (size_t)n, hash_bytes(p->tmp, (size_t)n));
            if (ids[k] < 0 || p->special[ids[k]])
                return ll_err(err, LL_ERR_FORMAT, "%s: token \"%s\" is not in the vocab", where, excerpt(parts[k], ex));
            lens[k] = (size_t)n;
        }
        /* the merge result: the two tokens' bytes, which must be a token too */
        size_t cat = lens[0] + lens[1];
        if (cat + 1 > p->tmpcap) {
            p->tmpcap = cat + 1;
            p->tmp = ll_realloc(p->tmp, p->tmpcap, 1);
        }
        memcpy(p->tmp, p->arena + p->off[ids[0]], lens[0]);
        memcpy(p->tmp + lens[0], p->arena + p->off[ids[1]], lens[1]);
        int res = bmap_get(&p->bytes_to_id, (const unsigned char *)p->arena, p->tmp, cat, hash_bytes(p->tmp, cat));
        if (res < 0 || p->special[res])
            return ll_err(err, LL_ERR_FORMAT, "%s: the merge result of \"%s\" + \"%s\" is not in the vocab", where,
                          excerpt(sa, ex), excerpt(sb, ex2));
        if (pmap_put(&p->seen_merges, pair_key(ids[0], ids[1]), r) != r)
            return ll_err(err, LL_ERR_FORMAT, "%s: \"%s\" + \"%s\" repeats an earlier merge", where, excerpt(sa, ex),
                          excerpt(sb, ex2));
        p->ml[r] = ids[0];
        p->mr[r] = ids[1];
        p->mres[r] = res;
        r++;
    }
    *out = tok_build(n_ids, p->arena ? p->arena : "", p->off, p->len, p->special, byte_id, n_merges, p->ml, p->mr,
                     p->mres);
    return LL_OK;
}

LLStatus tok_parse_json(const char *json, size_t len, Tokenizer **out, LLError *err) {
    *out = NULL;
    Parse p;
    memset(&p, 0, sizeof p);
    LLStatus st = parse_tokenizer(&p, json, len, out, err);
    parse_free(&p);
    return st;
}

/* model_max_length from a tokenizer_config.json beside the tokenizer, if there is one. */
static LLStatus load_config(Tokenizer *t, const char *path, LLError *err) {
    if (!ll_file_exists(path)) return LL_OK;
    char *txt;
    size_t len;
    LLStatus st = ll_read_file(path, &txt, &len, err);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(txt, len);
    ll_free(txt);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ll_err(err, LL_ERR_FORMAT, "'%s' is not a JSON object", path);
    }
    /* transformers writes 1e30 for "no limit": only a plausible length is taken */
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model_max_length");
    long n = json_id(m, 1L << 30);
    if (n > 0) t->max_length = (int)n;
    /* tokenizer.json has no post-processor (check_pipeline refuses one), so only this file can
     * ask for a BOS: add_bos_token true, or absent with a Llama tokenizer class, whose default
     * is true (transformers' LlamaTokenizer(Fast) then installs a post-processor that adds it). */
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(root, "tokenizer_class");
    if (ab && !cJSON_IsNull(ab)) t->add_bos = cJSON_IsTrue(ab);
    else t->add_bos = cJSON_IsString(cls) && strncmp(cls->valuestring, "LlamaTokenizer", 14) == 0;
    cJSON_Delete(root);
    return LL_OK;
}

LLStatus tok_load(const char *path, Tokenizer **out, LLError *err) {
    *out = NULL;
    char file[4096], cfg[4096];
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    int n = is_dir ? snprintf(file, sizeof file, "%s/tokenizer.json", path) : snprintf(file, sizeof file, "%s", path);
    if (n < 0 || (size_t)n >= sizeof file) return ll_err(err, LL_ERR_IO, "tokenizer path too long: '%s'", path);
    char *txt;
    size_t len;
    LLStatus st = ll_read_file(file, &txt, &len, err);
    if (st) return ll_err_prefix(err, "loading the tokenizer");
    st = tok_parse_json(txt, len, out, err);
    ll_free(txt);
    if (st) return ll_err_prefix(err, "tokenizer file '%s'", file);
    /* the folder of the file: tokenizer_config.json sits beside tokenizer.json */
    const char *slash = strrchr(file, '/');
    if (slash)
        n = snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", (int)(slash - file), file);
    else
        n = snprintf(cfg, sizeof cfg, "tokenizer_config.json");
    if (n > 0 && (size_t)n < sizeof cfg) st = load_config(*out, cfg, err);
    if (st) {
        tok_free(*out);
        *out = NULL;
    }
    return st;
}
