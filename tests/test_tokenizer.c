/* Tests for engine/tokenizer: the byte-level base (every byte value, invalid UTF-8), GPT-2's
 * byte-to-unicode table, the pre-split rule word by word, BPE training (a hand-checked golden
 * merge list, equality with a from-scratch reference trainer, determinism), encode/decode round
 * trips, special tokens in text, the tokenizer.json written (field by field) and read back
 * (identical ids), and refusal of malformed tokenizer.json files with the right message.
 * Files go to a mkdtemp folder under /tmp per test case, removed by an unchecked fixture. */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "tok"
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"
#include "util.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static Tokenizer *train(const char *text, int vocab) {
    Tokenizer *t = NULL;
    LLError err = {0};
    LLStatus st = tok_train_bpe(text, strlen(text), vocab, &t, &err);
    ck_assert_msg(st == LL_OK, "training failed: %s", err.msg);
    return t;
}

static size_t encode(const Tokenizer *t, const char *s, size_t n, int **ids, size_t *cap) {
    return tok_encode(t, s, n, ids, cap);
}

/* Encodes then decodes s[0..n) and checks the bytes come back. */
static void check_roundtrip(const Tokenizer *t, const char *s, size_t n) {
    int *ids = NULL;
    size_t cap = 0;
    size_t k = encode(t, s, n, &ids, &cap);
    char *out = NULL;
    size_t ocap = 0;
    size_t m = tok_decode(t, ids, k, &out, &ocap);
    ck_assert_uint_eq(m, n);
    ck_assert_msg(memcmp(out, s, n) == 0, "round trip changed the text");
    ll_free(ids);
    ll_free(out);
}

/* A deterministic pseudo-random corpus of words over a small alphabet, single spaces. */
static char *word_corpus(unsigned seed, int n_words, const char *alphabet) {
    size_t na = strlen(alphabet), cap = (size_t)n_words * 10 + 1, k = 0;
    char *s = ll_malloc(cap, 1);
    uint32_t x = seed * 2654435761u + 1;
    for (int w = 0; w < n_words; w++) {
        if (w) s[k++] = ' ';
        x = x * 1664525u + 1013904223u;
        int len = 1 + (int)((x >> 16) % 8);
        for (int i = 0; i < len; i++) {
            x = x * 1664525u + 1013904223u;
            s[k++] = alphabet[(x >> 16) % na];
        }
    }
    s[k] = '\0';
    return s;
}

/* ---- core --------------------------------------------------------------------------------- */

START_TEST(test_bytes_all_values) {
    Tokenizer *t = tok_new_bytes();
    ck_assert_int_eq(tok_vocab_size(t), 259);
    ck_assert_int_eq(tok_bos(t), 256);
    ck_assert_int_eq(tok_eos(t), 257);
    ck_assert_int_eq(tok_pad(t), 258);
    ck_assert_int_eq(tok_n_merges(t), 0);
    char all[256];
    for (int b = 0; b < 256; b++) all[b] = (char)b;
    int *ids = NULL;
    size_t cap = 0;
    size_t n = encode(t, all, 256, &ids, &cap);
    ck_assert_uint_eq(n, 256);
    for (int b = 0; b < 256; b++) ck_assert_int_eq(ids[b], b); /* id b is the byte b */
    check_roundtrip(t, all, 256);
    /* invalid UTF-8: lone continuation bytes, overlong, surrogate, truncated sequences */
    const char bad[] = "\x80\xbf \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82 \xff\xfe";
    check_roundtrip(t, bad, sizeof bad - 1);
    ll_free(ids);
    tok_free(t);
}
END_TEST

START_TEST(test_byte_to_unicode) {
    /* GPT-2's bytes_to_unicode (HF ByteLevel): printable Latin-1 maps to itself, the rest to
     * U+0100 + rank among the non-printable bytes */
    ck_assert_uint_eq(tok_byte_to_unicode(' '), 0x120);  /* 'Ġ' */
    ck_assert_uint_eq(tok_byte_to_unicode('\n'), 0x10A); /* 'Ċ' */
    ck_assert_uint_eq(tok_byte_to_unicode('\t'), 0x109); /* 'ĉ' */
    ck_assert_uint_eq(tok_byte_to_unicode(0), 0x100);    /* 'Ā' */
    ck_assert_uint_eq(tok_byte_to_unicode('!'), '!');
    ck_assert_uint_eq(tok_byte_to_unicode('~'), '~');
    ck_assert_uint_eq(tok_byte_to_unicode(0x7F), 0x121); /* 'ġ' */
    ck_assert_uint_eq(tok_byte_to_unicode(0xA0), 0x142); /* 'ł' */
    ck_assert_uint_eq(tok_byte_to_unicode(0xA1), 0xA1);
    ck_assert_uint_eq(tok_byte_to_unicode(0xAD), 0x143); /* 'Ń', the last one */
    ck_assert_uint_eq(tok_byte_to_unicode(0xFF), 0xFF);
    /* a bijection onto 256 code points */
    char seen[0x144] = {0};
    for (int b = 0; b < 256; b++) {
        unsigned c = tok_byte_to_unicode((unsigned char)b);
        ck_assert_uint_lt(c, 0x144);
        ck_assert_int_eq(seen[c], 0);
        seen[c] = 1;
    }
}
END_TEST

/* Splits s with tok_split_next and compares with the expected words (a NULL-terminated list). */
static void check_split(const char *s, const char *const *want) {
    size_t n = strlen(s), i = 0;
    int k = 0;
    while (i < n) {
        size_t j = tok_split_next(s, n, i);
        ck_assert_msg(j > i && j <= n, "no progress at %zu in \"%s\"", i, s);
        ck_assert_msg(want[k] != NULL, "\"%s\": extra word \"%.*s\"", s, (int)(j - i), s + i);
        ck_assert_msg(strlen(want[k]) == j - i && memcmp(want[k], s + i, j - i) == 0,
                      "\"%s\": word %d is \"%.*s\", expected \"%s\"", s, k, (int)(j - i), s + i, want[k]);
        k++;
        i = j;
    }
    ck_assert_msg(want[k] == NULL, "\"%s\": missing word \"%s\"", s, want[k]);
}

START_TEST(test_presplit) {
    check_split("Hello world", (const char *const[]){"Hello", " world", NULL});
    check_split("  hi", (const char *const[]){" ", " hi", NULL});
    check_split("hi  ", (const char *const[]){"hi", "  ", NULL});
    check_split("a\n\nb", (const char *const[]){"a", "\n", "\n", "b", NULL});
    check_split("a \n b", (const char *const[]){"a", " \n", " b", NULL});
    check_split("don't stop", (const char *const[]){"don", "'t", " stop", NULL});
    check_split("we'll it's I'm 'x", (const char *const[]){"we", "'ll", " it", "'s", " I", "'m", " '", "x", NULL});
    check_split("pi=3.14, 2024!", (const char *const[]){"pi", "=", "3", ".", "14", ",", " 2024", "!", NULL});
    check_split("a...?!b", (const char *const[]){"a", "...?!", "b", NULL});
    check_split("naïve café", (const char *const[]){"naïve", " café", NULL});
    /* general punctuation (U+2000..U+206F) and Latin-1 symbols (U+0080..U+00BF) are not letters */
    check_split("ago\xe2\x80\x94never", (const char *const[]){"ago", "\xe2\x80\x94", "never", NULL});
    check_split("\xe2\x80\x9cHi\xe2\x80\x9d", (const char *const[]){"\xe2\x80\x9c", "Hi", "\xe2\x80\x9d", NULL});
    check_split("30\xc2\xb0 x", (const char *const[]){"30", "\xc2\xb0", " x", NULL});
    check_split("\xe6\xbc\xa2\xe5\xad\x97 ok", (const char *const[]){"\xe6\xbc\xa2\xe5\xad\x97", " ok", NULL});
    check_split("tab\there", (const char *const[]){"tab", "\t", "here", NULL});
    /* invalid UTF-8 bytes are "other" characters, one byte each */
    check_split("a\xff\xfe b", (const char *const[]){"a", "\xff\xfe", " b", NULL});
}
END_TEST

/* Sennrich et al.'s example; the counts, worked out by hand:
 *   (e,s)=9 (s,t)=9 -> tie, smaller left id: e+s;  (es,t)=9 -> est;  (l,o)=7 (o,w)=7 -> l+o;
 *   (lo,w)=7 -> low;  then five pairs of 6, smallest ids first: (' ',n) -> " n", (' ',low). */
START_TEST(test_train_golden) {
    const char *text = "low low low low low lower lower newest newest newest newest newest newest "
                       "widest widest widest";
    Tokenizer *t = train(text, 259 + 6);
    ck_assert_int_eq(tok_n_merges(t), 6);
    ck_assert_int_eq(tok_vocab_size(t), 265);
    const int want[6][3] = {{'e', 's', 256}, {256, 't', 257}, {'l', 'o', 258},
                            {258, 'w', 259}, {' ', 'n', 260}, {' ', 259, 261}};
    const char *bytes[6] = {"es", "est", "lo", "low", " n", " low"};
    for (int r = 0; r < 6; r++) {
        int a, b, c;
        tok_merge(t, r, &a, &b, &c);
        ck_assert_msg(a == want[r][0] && b == want[r][1] && c == want[r][2], "merge %d is (%d, %d) -> %d", r, a, b, c);
        size_t n;
        const char *p = tok_token_bytes(t, c, &n);
        ck_assert_uint_eq(n, strlen(bytes[r]));
        ck_assert(memcmp(p, bytes[r], n) == 0);
    }
    ck_assert_int_eq(tok_bos(t), 262);
    ck_assert_int_eq(tok_eos(t), 263);
    ck_assert_int_eq(tok_pad(t), 264);
    /* encoding follows the ranks: " lowest" -> " low" + "est" */
    int *ids = NULL;
    size_t cap = 0;
    size_t n = encode(t, "lowest lowest", 13, &ids, &cap);
    ck_assert_uint_eq(n, 4);
    ck_assert_int_eq(ids[0], 259);
    ck_assert_int_eq(ids[1], 257);
    ck_assert_int_eq(ids[2], 261);
    ck_assert_int_eq(ids[3], 257);
    ll_free(ids);
    tok_free(t);
}
END_TEST

/* Reference trainer: recounts every pair from scratch before each merge (slow, obviously right)
 * on words given as byte strings with counts. Same rules: highest count, then smallest
 * (left, right); a result with existing bytes reuses the id; a pair is never merged twice. */
typedef struct {
    int sym[64];
    int n;
    int count;
} RefWord;

static int ref_train(RefWord *w, int nw, int n_merges_max, int (*merges)[3]) {
    static char tok[4096][64];
    static int tok_len[4096];
    int n_tok = 256;
    for (int b = 0; b < 256; b++) {
        tok[b][0] = (char)b;
        tok_len[b] = 1;
    }
    int n_m = 0;
    while (n_tok < 256 + n_merges_max) {
        long best = 0;
        int bl = -1, br = -1;
        /* count with a dense table: ids stay below 4096 here */
        static long cnt[512][512];
        memset(cnt, 0, sizeof cnt);
        for (int i = 0; i < nw; i++)
            for (int k = 0; k + 1 < w[i].n; k++) cnt[w[i].sym[k]][w[i].sym[k + 1]] += w[i].count;
        for (int l = 0; l < n_tok; l++)
            for (int r = 0; r < n_tok; r++) {
                if (cnt[l][r] <= best) continue;
                int done = 0;
                for (int m = 0; m < n_m && !done; m++) done = merges[m][0] == l && merges[m][1] == r;
                if (done) continue;
                best = cnt[l][r], bl = l, br = r;
            }
        if (bl < 0) break;
        char buf[64];
        int len = tok_len[bl] + tok_len[br];
        ck_assert_int_lt(len, 64);
        memcpy(buf, tok[bl], (size_t)tok_len[bl]);
        memcpy(buf + tok_len[bl], tok[br], (size_t)tok_len[br]);
        int z = -1;
        for (int i = 0; i < n_tok && z < 0; i++)
            if (tok_len[i] == len && memcmp(tok[i], buf, (size_t)len) == 0) z = i;
        if (z < 0) {
            z = n_tok++;
            memcpy(tok[z], buf, (size_t)len);
            tok_len[z] = len;
        }
        merges[n_m][0] = bl, merges[n_m][1] = br, merges[n_m][2] = z;
        n_m++;
        for (int i = 0; i < nw; i++) {
            int o = 0;
            for (int k = 0; k < w[i].n;) {
                if (k + 1 < w[i].n && w[i].sym[k] == bl && w[i].sym[k + 1] == br) {
                    w[i].sym[o++] = z;
                    k += 2;
                } else {
                    w[i].sym[o++] = w[i].sym[k++];
                }
            }
            w[i].n = o;
        }
    }
    return n_m;
}

START_TEST(test_train_matches_reference) {
    char *text = word_corpus(7, 3000, "abcdeff");
    size_t n = strlen(text);
    /* the pre-split words and their counts */
    static RefWord words[4096];
    int nw = 0;
    for (size_t i = 0; i < n;) {
        size_t j = tok_split_next(text, n, i);
        ck_assert_uint_lt(j - i, 64);
        int found = -1;
        for (int k = 0; k < nw && found < 0; k++) {
            if ((size_t)words[k].n != j - i) continue;
            int same = 1;
            for (size_t q = 0; q < j - i && same; q++) same = words[k].sym[q] == (unsigned char)text[i + q];
            if (same) found = k;
        }
        if (found < 0) {
            ck_assert_int_lt(nw, 4096);
            found = nw++;
            words[found].n = (int)(j - i);
            words[found].count = 0;
            for (size_t q = 0; q < j - i; q++) words[found].sym[q] = (unsigned char)text[i + q];
        }
        words[found].count++;
        i = j;
    }
    static int ref[256][3];
    int n_ref = ref_train(words, nw, 200, ref);
    ck_assert_int_gt(n_ref, 150);
    Tokenizer *t = train(text, 259 + 200);
    ck_assert_int_eq(tok_n_merges(t), n_ref);
    for (int r = 0; r < n_ref; r++) {
        int a, b, c;
        tok_merge(t, r, &a, &b, &c);
        ck_assert_msg(a == ref[r][0] && b == ref[r][1] && c == ref[r][2],
                      "merge %d: (%d, %d) -> %d, the reference says (%d, %d) -> %d", r, a, b, c, ref[r][0],
                      ref[r][1], ref[r][2]);
    }
    tok_free(t);
    ll_free(text);
}
END_TEST

START_TEST(test_train_deterministic) {
    char *text = word_corpus(3, 20000, "abcdefghijklmnop");
    Tokenizer *t1 = train(text, 1024), *t2 = train(text, 1024);
    ck_assert_int_eq(tok_vocab_size(t1), 1024);
    ck_assert_int_eq(tok_vocab_size(t2), 1024);
    ck_assert_int_eq(tok_n_merges(t1), tok_n_merges(t2));
    for (int r = 0; r < tok_n_merges(t1); r++) {
        int a1, b1, c1, a2, b2, c2;
        tok_merge(t1, r, &a1, &b1, &c1);
        tok_merge(t2, r, &a2, &b2, &c2);
        ck_assert(a1 == a2 && b1 == b2 && c1 == c2);
    }
    tok_free(t1);
    tok_free(t2);
    ll_free(text);
}
END_TEST

START_TEST(test_train_small_text) {
    /* a text with fewer pairs than the vocabulary asks for stops early, and no text at all
     * gives the byte tokenizer */
    Tokenizer *t = train("abab", 1000);
    ck_assert_int_eq(tok_n_merges(t), 2); /* a+b, ab+ab */
    ck_assert_int_eq(tok_vocab_size(t), 261);
    tok_free(t);
    t = train("", 1000);
    ck_assert_int_eq(tok_vocab_size(t), 259);
    tok_free(t);
}
END_TEST

START_TEST(test_encode_roundtrip) {
    char *text = word_corpus(11, 5000, "etaoinshrdlu");
    Tokenizer *t = train(text, 700);
    const char *samples[] = {
        "the quick brown fox",
        "  leading and trailing  \n\n",
        "tabs\tand\r\nCRLF\x0b\x0c",
        "na\xc3\xafve \xe2\x80\x9cquotes\xe2\x80\x9d \xf0\x9f\x98\x80 emoji",
        "\xff\xfe\x80 invalid \xc0\xaf utf-8",
        "numbers 1234567890 and 3.14159",
        "",
    };
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) check_roundtrip(t, samples[i], strlen(samples[i]));
    check_roundtrip(t, text, strlen(text)); /* long: goes through the word cache */
    /* the cache must not change the ids: the same words encoded alone and inside a long text */
    int *a = NULL, *b = NULL;
    size_t ca = 0, cb = 0;
    size_t na = encode(t, text, 300, &a, &ca);
    size_t nb = encode(t, text, strlen(text), &b, &cb);
    ck_assert_uint_le(na, nb);
    /* the first 300 bytes may end inside a word: compare all but the last word's ids */
    for (size_t i = 0; i + 10 < na; i++) ck_assert_int_eq(a[i], b[i]);
    ck_assert_uint_lt(nb, strlen(text)); /* merges did compress */
    ll_free(a);
    ll_free(b);
    tok_free(t);
    ll_free(text);
}
END_TEST

START_TEST(test_specials_in_text) {
    Tokenizer *t = tok_new_bytes();
    int *ids = NULL;
    size_t cap = 0;
    const char *s = "a<s>b</s><pad><s";
    size_t n = encode(t, s, strlen(s), &ids, &cap);
    const int want[] = {'a', 256, 'b', 257, 258, '<', 's'};
    ck_assert_uint_eq(n, 7);
    for (size_t i = 0; i < n; i++) ck_assert_int_eq(ids[i], want[i]);
    char buf[8];
    ck_assert_uint_eq(tok_decode_one(t, 256, buf, sizeof buf), 0); /* specials decode to "" */
    ck_assert_uint_eq(tok_decode_one(t, 259, buf, sizeof buf), 0); /* out of range */
    ck_assert_uint_eq(tok_decode_one(t, -1, buf, sizeof buf), 0);
    ck_assert_uint_eq(tok_decode_one(t, 'x', buf, sizeof buf), 1);
    ck_assert_int_eq(buf[0], 'x');
    ll_free(ids);
    tok_free(t);
    /* a merged token longer than the caller's buffer: full length returned, prefix written */
    ids = NULL;
    cap = 0;
    t = train("abcdefgh abcdefgh abcdefgh", 266);
    n = encode(t, "abcdefgh", 8, &ids, &cap);
    ck_assert_uint_eq(n, 1);
    memset(buf, 0, sizeof buf);
    ck_assert_uint_eq(tok_decode_one(t, ids[0], buf, 3), 8);
    ck_assert(memcmp(buf, "abc\0", 4) == 0);
    ll_free(ids);
    tok_free(t);
}
END_TEST

static cJSON *read_json(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    char *txt = tu_slurp(path, &len);
    cJSON *j = cJSON_ParseWithLength(txt, len);
    ll_free(txt);
    ck_assert_ptr_nonnull(j);
    return j;
}

START_TEST(test_save_format) {
    char dir[128];
    tu_tmpdir_new(dir, sizeof dir);
    const char *text = "low low low low low lower lower newest newest newest newest newest newest "
                       "widest widest widest";
    Tokenizer *t = train(text, 265);
    tok_set_max_length(t, 512);
    LLError err = {0};
    ck_assert_msg(tok_save(t, dir, &err) == LL_OK, "%s", err.msg);
    cJSON *j = read_json(dir, "tokenizer.json");
    cJSON *model = cJSON_GetObjectItem(j, "model");
    ck_assert_str_eq(cJSON_GetObjectItem(model, "type")->valuestring, "BPE");
    cJSON *vocab = cJSON_GetObjectItem(model, "vocab");
    ck_assert_int_eq(cJSON_GetArraySize(vocab), 262); /* specials live in added_tokens only */
    ck_assert_int_eq(cJSON_GetObjectItem(vocab, "\xc4\xa0")->valueint, ' ');  /* "Ġ" */
    ck_assert_int_eq(cJSON_GetObjectItem(vocab, "\xc4\x8a")->valueint, '\n'); /* "Ċ" */
    ck_assert_int_eq(cJSON_GetObjectItem(vocab, "est")->valueint, 257);
    ck_assert_int_eq(cJSON_GetObjectItem(vocab, "\xc4\xa0low")->valueint, 261);
    cJSON *merges = cJSON_GetObjectItem(model, "merges");
    ck_assert_int_eq(cJSON_GetArraySize(merges), 6);
    ck_assert_str_eq(cJSON_GetArrayItem(merges, 0)->valuestring, "e s");
    ck_assert_str_eq(cJSON_GetArrayItem(merges, 1)->valuestring, "es t");
    ck_assert_str_eq(cJSON_GetArrayItem(merges, 5)->valuestring, "\xc4\xa0 low");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(model, "ignore_merges")));
    cJSON *added = cJSON_GetObjectItem(j, "added_tokens");
    ck_assert_int_eq(cJSON_GetArraySize(added), 3);
    const char *names[3] = {"<s>", "</s>", "<pad>"};
    for (int k = 0; k < 3; k++) {
        cJSON *a = cJSON_GetArrayItem(added, k);
        ck_assert_int_eq(cJSON_GetObjectItem(a, "id")->valueint, 262 + k);
        ck_assert_str_eq(cJSON_GetObjectItem(a, "content")->valuestring, names[k]);
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(a, "special")));
    }
    cJSON *pre = cJSON_GetObjectItem(j, "pre_tokenizer");
    ck_assert_str_eq(cJSON_GetObjectItem(pre, "type")->valuestring, "Sequence");
    cJSON *seq = cJSON_GetObjectItem(pre, "pretokenizers");
    cJSON *split = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(split, "type")->valuestring, "Split");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(split, "pattern"), "Regex")->valuestring, TOK_SPLIT_REGEX);
    ck_assert_str_eq(cJSON_GetObjectItem(split, "behavior")->valuestring, "Isolated");
    ck_assert_str_eq(cJSON_GetObjectItem(bl, "type")->valuestring, "ByteLevel");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(bl, "add_prefix_space")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(bl, "use_regex")));
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "decoder"), "type")->valuestring, "ByteLevel");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "normalizer")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "post_processor")));
    cJSON_Delete(j);

    j = read_json(dir, "tokenizer_config.json");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "tokenizer_class")->valuestring, "PreTrainedTokenizerFast");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "bos_token")->valuestring, "<s>");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "eos_token")->valuestring, "</s>");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "pad_token")->valuestring, "<pad>");
    ck_assert_int_eq(cJSON_GetObjectItem(j, "model_max_length")->valueint, 512);
    cJSON *dec = cJSON_GetObjectItem(j, "added_tokens_decoder");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(dec, "263"), "content")->valuestring, "</s>");
    cJSON_Delete(j);
    j = read_json(dir, "special_tokens_map.json");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "pad_token")->valuestring, "<pad>");
    cJSON_Delete(j);
    tok_free(t);
    tu_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_save_load_roundtrip) {
    char dir[128];
    tu_tmpdir_new(dir, sizeof dir);
    char *text = word_corpus(5, 20000, "abcdefghij");
    /* some variety beyond the word corpus: Unicode, digits, whitespace, specials */
    const char *extra = " na\xc3\xafve \xe2\x80\x94 42 \n\n\t x<s>y</s> \xff";
    size_t n = strlen(text), ne = strlen(extra);
    text = ll_realloc(text, n + ne + 1, 1);
    memcpy(text + n, extra, ne + 1);
    n += ne;
    Tokenizer *t = train(text, 800);
    tok_set_max_length(t, 1024);
    LLError err = {0};
    ck_assert_msg(tok_save(t, dir, &err) == LL_OK, "%s", err.msg);
    Tokenizer *u = NULL;
    ck_assert_msg(tok_load(dir, &u, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(u), tok_vocab_size(t));
    ck_assert_int_eq(tok_n_merges(u), tok_n_merges(t));
    ck_assert_int_eq(tok_bos(u), tok_bos(t));
    ck_assert_int_eq(tok_eos(u), tok_eos(t));
    ck_assert_int_eq(tok_pad(u), tok_pad(t));
    ck_assert_int_eq(tok_max_length(u), 1024);
    int *a = NULL, *b = NULL;
    size_t ca = 0, cb = 0;
    size_t na = encode(t, text, n, &a, &ca), nb = encode(u, text, n, &b, &cb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(a, b, na * sizeof(int)) == 0);
    tok_free(u);
    /* loading the file itself works too */
    char file[192];
    snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    ck_assert_msg(tok_load(file, &u, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(u), tok_vocab_size(t));
    tok_free(u);
    /* the byte tokenizer: same format, zero merges */
    Tokenizer *bt = tok_new_bytes();
    ck_assert_msg(tok_save(bt, dir, &err) == LL_OK, "%s", err.msg);
    ck_assert_msg(tok_load(dir, &u, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(u), 259);
    ck_assert_int_eq(tok_n_merges(u), 0);
    nb = encode(u, text, n, &b, &cb);
    ck_assert_uint_eq(nb, n - (3 - 1) - (4 - 1)); /* every byte, but <s> and </s> one id each */
    tok_free(u);
    tok_free(bt);
    ll_free(a);
    ll_free(b);
    tok_free(t);
    ll_free(text);
    tu_tmpdir_remove(dir);
}
END_TEST

/* ---- limits ------------------------------------------------------------------------------- */

START_TEST(test_train_bad_size) {
    Tokenizer *t = (Tokenizer *)1;
    LLError err = {0};
    ck_assert_int_eq(tok_train_bpe("abc", 3, 258, &t, &err), LL_ERR_CONFIG);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(err.msg, "258"));
    ck_assert_ptr_nonnull(strstr(err.msg, "[259,"));
    ck_assert_int_eq(tok_train_bpe("abc", 3, TOK_MAX_TRAIN_VOCAB + 1, &t, &err), LL_ERR_CONFIG);
}
END_TEST

/* The JSON of a small valid tokenizer (the golden one: 262 vocab entries, 6 merges). */
static cJSON *valid_json(void) {
    Tokenizer *t = train("low low low low low lower lower newest newest newest newest newest newest "
                         "widest widest widest",
                         265);
    char dir[128];
    tu_tmpdir_new(dir, sizeof dir);
    LLError err;
    ck_assert(tok_save(t, dir, &err) == LL_OK);
    cJSON *j = read_json(dir, "tokenizer.json");
    tu_tmpdir_remove(dir);
    tok_free(t);
    return j;
}

static void expect_refused(cJSON *j, const char *want) {
    char *txt = cJSON_PrintUnformatted(j);
    Tokenizer *t = (Tokenizer *)1;
    LLError err = {0};
    LLStatus st = tok_parse_json(txt, strlen(txt), &t, &err);
    ck_assert_msg(st == LL_ERR_FORMAT, "accepted (status %d) a file that should fail with \"%s\"", st, want);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message \"%s\" does not say \"%s\"", err.msg, want);
    cJSON_free(txt);
    cJSON_Delete(j);
}

static cJSON *model_of(cJSON *j) { return cJSON_GetObjectItem(j, "model"); }
static cJSON *vocab_of(cJSON *j) { return cJSON_GetObjectItem(model_of(j), "vocab"); }
static cJSON *merges_of(cJSON *j) { return cJSON_GetObjectItem(model_of(j), "merges"); }

START_TEST(test_valid_json_accepted) {
    cJSON *j = valid_json();
    char *txt = cJSON_PrintUnformatted(j);
    Tokenizer *t = NULL;
    LLError err = {0};
    ck_assert_msg(tok_parse_json(txt, strlen(txt), &t, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(t), 265);
    tok_free(t);
    cJSON_free(txt);
    /* merges as pairs (the newer HF form) are read too */
    cJSON *merges = merges_of(j), *pairs = cJSON_CreateArray();
    cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", m->valuestring);
        char *sp = strchr(buf, ' ');
        *sp = '\0';
        const char *two[2] = {buf, sp + 1};
        cJSON_AddItemToArray(pairs, cJSON_CreateStringArray(two, 2));
    }
    cJSON_ReplaceItemInObject(model_of(j), "merges", pairs);
    txt = cJSON_PrintUnformatted(j);
    ck_assert_msg(tok_parse_json(txt, strlen(txt), &t, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(tok_n_merges(t), 6);
    int a, b, c;
    tok_merge(t, 1, &a, &b, &c);
    ck_assert(a == 256 && b == 't' && c == 257);
    tok_free(t);
    cJSON_free(txt);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_malformed_text) {
    const char *cases[][2] = {
        {"", "not valid JSON"},
        {"{\"model\": {\"vocab\": {", "not valid JSON"},
        {"[1, 2, 3]", "top level is not a JSON object"},
        {"{}", "missing \"model\""},
        {"{\"model\": {}}", "missing \"model.vocab\""},
        {"{\"model\": {\"vocab\": {}}}", "missing \"model.merges\""},
        {"{\"model\": {\"vocab\": {}, \"merges\": []}}", "missing \"added_tokens\""},
        {"\x01\x02\xff", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Tokenizer *t = (Tokenizer *)1;
        LLError err = {0};
        LLStatus st = tok_parse_json(cases[i][0], strlen(cases[i][0]), &t, &err);
        ck_assert_msg(st == LL_ERR_FORMAT, "case %zu accepted", i);
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(err.msg, cases[i][1]) != NULL, "case %zu: \"%s\"", i, err.msg);
    }
    /* a valid file cut short */
    cJSON *j = valid_json();
    char *txt = cJSON_PrintUnformatted(j);
    Tokenizer *t = NULL;
    LLError err = {0};
    ck_assert_int_eq(tok_parse_json(txt, strlen(txt) / 2, &t, &err), LL_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "not valid JSON"));
    cJSON_free(txt);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_malformed_vocab) {
    cJSON *j = valid_json();
    cJSON_ReplaceItemInObject(vocab_of(j), "est", cJSON_CreateNumber(100000));
    expect_refused(j, "not an integer in [0, 265)");

    j = valid_json();
    cJSON_ReplaceItemInObject(vocab_of(j), "est", cJSON_CreateNumber(1.5));
    expect_refused(j, "not an integer");

    j = valid_json();
    cJSON_ReplaceItemInObject(vocab_of(j), "est", cJSON_CreateString("257"));
    expect_refused(j, "not an integer");

    j = valid_json();
    cJSON_ReplaceItemInObject(vocab_of(j), "est", cJSON_CreateNumber(256)); /* "es" has 256 */
    expect_refused(j, "is given to two tokens");

    j = valid_json();
    cJSON_AddNumberToObject(vocab_of(j), "two words", 262); /* a raw space is not byte-level */
    expect_refused(j, "not byte-level (U+0020");

    j = valid_json();
    cJSON_DeleteItemFromObject(vocab_of(j), "\xc4\x80"); /* "Ā": byte 0 */
    expect_refused(j, "the byte 0x00 has no token");

    j = valid_json();
    cJSON_AddNumberToObject(vocab_of(j), "\xc4\xa0low", 264); /* the same token twice */
    expect_refused(j, "appears twice");
}
END_TEST

START_TEST(test_malformed_merges) {
    cJSON *j = valid_json();
    cJSON_ReplaceItemInArray(merges_of(j), 2, cJSON_CreateString("lo"));
    expect_refused(j, "model.merges[2]: not two tokens");

    j = valid_json();
    cJSON_ReplaceItemInArray(merges_of(j), 2, cJSON_CreateString("l  o"));
    expect_refused(j, "model.merges[2]: not two tokens");

    j = valid_json();
    cJSON_ReplaceItemInArray(merges_of(j), 3, cJSON_CreateString("lo zz"));
    expect_refused(j, "model.merges[3]: token \"zz\" is not in the vocab");

    j = valid_json();
    cJSON_ReplaceItemInArray(merges_of(j), 3, cJSON_CreateString("est low"));
    expect_refused(j, "model.merges[3]: the merge result of \"est\" + \"low\" is not in the vocab");

    j = valid_json();
    cJSON_AddItemToArray(merges_of(j), cJSON_CreateString("e s"));
    expect_refused(j, "model.merges[6]: \"e\" + \"s\" repeats an earlier merge");

    j = valid_json();
    cJSON_AddItemToArray(merges_of(j), cJSON_CreateNumber(3));
    expect_refused(j, "model.merges[6]: not two tokens");
}
END_TEST

START_TEST(test_malformed_added_and_pipeline) {
    cJSON *j = valid_json();
    cJSON_DeleteItemFromArray(cJSON_GetObjectItem(j, "added_tokens"), 2); /* <pad>, the last id */
    expect_refused(j, "the special token \"<pad>\" is missing");

    j = valid_json();
    cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "added_tokens"), 0);
    cJSON_ReplaceItemInObject(a, "special", cJSON_CreateFalse());
    expect_refused(j, "added_tokens[0]: \"<s>\" is not special");

    j = valid_json();
    a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "added_tokens"), 1);
    cJSON_ReplaceItemInObject(a, "id", cJSON_CreateNumber(5)); /* byte 5's id */
    expect_refused(j, "added_tokens[1]: id 5 of \"</s>\" is already used");

    j = valid_json();
    a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "added_tokens"), 2);
    cJSON_ReplaceItemInObject(a, "lstrip", cJSON_CreateTrue());
    expect_refused(j, "lstrip");

    /* a hole in the ids: <s> also listed in the vocab (same id) and <pad> moved past the end */
    j = valid_json();
    cJSON_AddNumberToObject(vocab_of(j), "<s>", 262);
    a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "added_tokens"), 2);
    cJSON_ReplaceItemInObject(a, "id", cJSON_CreateNumber(265));
    expect_refused(j, "ids are not contiguous: 265 tokens but id 264 is unused");

    j = valid_json();
    cJSON_ReplaceItemInObject(model_of(j), "type", cJSON_CreateString("WordPiece"));
    expect_refused(j, "model.type must be \"BPE\"");

    j = valid_json();
    cJSON_ReplaceItemInObject(model_of(j), "dropout", cJSON_CreateNumber(0.1));
    expect_refused(j, "model.dropout must be null");

    j = valid_json();
    cJSON_ReplaceItemInObject(model_of(j), "ignore_merges", cJSON_CreateTrue());
    expect_refused(j, "ignore_merges must be false");

    j = valid_json();
    cJSON *split = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pre_tokenizer"), "pretokenizers"), 0);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(split, "pattern"), "Regex", cJSON_CreateString("\\s+"));
    expect_refused(j, "the Split pattern is not loralab's regex");

    j = valid_json();
    cJSON *bl = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pre_tokenizer"), "pretokenizers"), 1);
    cJSON_DeleteItemFromObject(bl, "use_regex"); /* HF's default is true: GPT-2's own split */
    expect_refused(j, "use_regex");

    j = valid_json();
    cJSON_ReplaceItemInObject(j, "pre_tokenizer", cJSON_CreateNull());
    expect_refused(j, "pre_tokenizer must be loralab's");

    j = valid_json();
    cJSON_ReplaceItemInObject(j, "normalizer", cJSON_CreateObject());
    expect_refused(j, "\"normalizer\" must be null");

    j = valid_json();
    cJSON_ReplaceItemInObject(j, "post_processor", cJSON_CreateObject());
    expect_refused(j, "\"post_processor\" must be null");

    j = valid_json();
    cJSON_DeleteItemFromObject(j, "decoder");
    expect_refused(j, "\"decoder\" must be of type \"ByteLevel\"");
}
END_TEST

START_TEST(test_load_names_the_file) {
    char dir[128], path[192];
    tu_tmpdir_new(dir, sizeof dir);
    Tokenizer *t = (Tokenizer *)1;
    LLError err = {0};
    ck_assert_int_eq(tok_load(dir, &t, &err), LL_ERR_IO); /* no tokenizer.json */
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(err.msg, "tokenizer.json"));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    const char *bad = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}";
    tu_write_text(path, bad);
    ck_assert_int_eq(tok_load(dir, &t, &err), LL_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_ptr_nonnull(strstr(err.msg, "missing \"model.merges\""));
    /* a good tokenizer.json beside a broken tokenizer_config.json */
    Tokenizer *bt = tok_new_bytes();
    ck_assert(tok_save(bt, dir, &err) == LL_OK);
    tok_free(bt);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    tu_write_text(path, "{oops");
    ck_assert_int_eq(tok_load(dir, &t, &err), LL_ERR_FORMAT);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(err.msg, "tokenizer_config.json"));
    tu_tmpdir_remove(dir);
}
END_TEST

Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *core = tu_tcase(s, "core", 1, 0);
    tcase_add_test(core, test_bytes_all_values);
    tcase_add_test(core, test_byte_to_unicode);
    tcase_add_test(core, test_presplit);
    tcase_add_test(core, test_train_golden);
    tcase_add_test(core, test_train_matches_reference);
    tcase_add_test(core, test_train_deterministic);
    tcase_add_test(core, test_train_small_text);
    tcase_add_test(core, test_encode_roundtrip);
    tcase_add_test(core, test_specials_in_text);
    tcase_add_test(core, test_save_format);
    tcase_add_test(core, test_save_load_roundtrip);
    TCase *limits = tu_tcase(s, "limits", 1, 0);
    tcase_add_test(limits, test_train_bad_size);
    tcase_add_test(limits, test_valid_json_accepted);
    tcase_add_test(limits, test_malformed_text);
    tcase_add_test(limits, test_malformed_vocab);
    tcase_add_test(limits, test_malformed_merges);
    tcase_add_test(limits, test_malformed_added_and_pipeline);
    tcase_add_test(limits, test_load_names_the_file);
    return s;
}
