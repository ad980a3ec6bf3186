/* data: see data.h. */
#include "data.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

LLStatus data_load_text(const char *path, const Tokenizer *tok, Dataset *d, LLError *err) {
    memset(d, 0, sizeof *d);
    char *text = NULL;
    size_t len = 0;
    if (ll_read_file(path, &text, &len, err)) return ll_err_prefix(err, "text data (is the dataset fetched? `make data`)");
    size_t cap = 0;
    d->n_tokens = tok_encode(tok, text, len, &d->tokens, &cap);
    ll_free(text);
    d->kind = DATA_LM;
    d->path = ll_strdup(path);
    if (d->n_tokens < 2) {
        data_free(d);
        return ll_err(err, LL_ERR_FORMAT, "'%s' holds fewer than 2 tokens", path);
    }
    return LL_OK;
}

LLStatus data_load_jsonl(const char *path, const Tokenizer *tok, Dataset *d, LLError *err) {
    memset(d, 0, sizeof *d);
    char *text = NULL;
    size_t len = 0;
    if (ll_read_file(path, &text, &len, err)) return ll_err_prefix(err, "classification data (is the dataset fetched? `make data`)");
    LLStatus st = data_parse_jsonl(text, len, path, tok, d, err);
    ll_free(text);
    return st;
}

LLStatus data_parse_jsonl(const char *text, size_t len, const char *path, const Tokenizer *tok, Dataset *d,
                          LLError *err) {
    memset(d, 0, sizeof *d);
    d->kind = DATA_CLS;
    d->path = ll_strdup(path);
    size_t cap_ex = 0, cap_tok = 0, n_tok = 0;
    int *ids = NULL;
    size_t ids_cap = 0;
    LLStatus st = LL_OK;
    int line = 0;
    for (const char *p = text, *end = text + len; p < end && !st;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        /* counts and lengths are ints in the Dataset: a file that would overflow one is refused */
        if (line == INT_MAX) {
            st = ll_err(err, LL_ERR_FORMAT, "%s: more than %d lines", path, INT_MAX);
            break;
        }
        line++;
        size_t n = (size_t)(eol - p);
        int blank = 1;
        for (size_t i = 0; i < n; i++)
            if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') blank = 0;
        if (!blank) {
            const char *after = NULL;
            cJSON *o = cJSON_ParseWithLengthOpts(p, n, &after, 0);
            const cJSON *t = o ? cJSON_GetObjectItemCaseSensitive(o, "text") : NULL;
            const cJSON *l = o ? cJSON_GetObjectItemCaseSensitive(o, "label") : NULL;
            /* cJSON stops after the first value: anything but spaces after it (a second object on
             * the line, a cut-off copy) would otherwise be dropped without a word */
            while (o && after && after < eol && (*after == ' ' || *after == '\t' || *after == '\r')) after++;
            if (!o || !cJSON_IsObject(o)) {
                st = ll_err(err, LL_ERR_FORMAT, "%s:%d: not a JSON object", path, line);
            } else if (after && after < eol) {
                st = ll_err(err, LL_ERR_FORMAT, "%s:%d: characters after the JSON object (one object a line)", path,
                            line);
            } else if (!cJSON_IsString(t)) {
                st = ll_err(err, LL_ERR_FORMAT, "%s:%d: key \"text\" is missing or not a string", path, line);
            } else if (!cJSON_IsNumber(l) || l->valuedouble != (double)l->valueint || l->valueint < 0 ||
                       l->valueint > 65535) {
                st = ll_err(err, LL_ERR_FORMAT, "%s:%d: key \"label\" must be an integer in [0, 65535]", path, line);
            } else {
                if ((size_t)d->n_ex == cap_ex) {
                    cap_ex = cap_ex ? 2 * cap_ex : 256;
                    d->ex_off = ll_realloc(d->ex_off, cap_ex, sizeof(size_t));
                    d->ex_len = ll_realloc(d->ex_len, cap_ex, sizeof(int));
                    d->ex_label = ll_realloc(d->ex_label, cap_ex, sizeof(int));
                    d->ex_line = ll_realloc(d->ex_line, cap_ex, sizeof(int));
                }
                size_t k = tok_encode(tok, t->valuestring, strlen(t->valuestring), &ids, &ids_cap);
                size_t need;
                if (k > INT_MAX || !ll_add_ok(n_tok, k, &need)) {
                    st = ll_err(err, LL_ERR_FORMAT, "%s:%d: the text is too long (%zu tokens)", path, line, k);
                } else {
                    if (need > cap_tok) {
                        while (need > cap_tok) cap_tok = cap_tok ? (cap_tok > SIZE_MAX / 2 ? need : 2 * cap_tok) : 4096;
                        d->ex_tokens = ll_realloc(d->ex_tokens, cap_tok, sizeof(int));
                    }
                    if (k) memcpy(d->ex_tokens + n_tok, ids, k * sizeof(int));
                    d->ex_off[d->n_ex] = n_tok;
                    d->ex_len[d->n_ex] = (int)k;
                    d->ex_label[d->n_ex] = l->valueint;
                    d->ex_line[d->n_ex] = line;
                    if (l->valueint + 1 > d->n_labels) d->n_labels = l->valueint + 1;
                    d->n_ex++;
                    n_tok = need;
                }
            }
            cJSON_Delete(o);
        }
        p = eol + 1;
    }
    ll_free(ids);
    if (!st && d->n_ex == 0) st = ll_err(err, LL_ERR_FORMAT, "'%s' holds no examples", path);
    if (st) data_free(d);
    return st;
}

LLStatus data_check_labels(const Dataset *d, int n_labels, LLError *err) {
    if (d->kind != DATA_CLS) return LL_OK;
    if (n_labels <= 0 && d->n_ex > 0)
        return ll_err(err, LL_ERR_FORMAT, "%s:%d: label %d, but the model has no classification head", d->path,
                      d->ex_line[0], d->ex_label[0]);
    for (int i = 0; i < d->n_ex; i++)
        if (d->ex_label[i] < 0 || d->ex_label[i] >= n_labels)
            return ll_err(err, LL_ERR_FORMAT, "%s:%d: label %d is out of range: the model has %d labels (0 to %d)",
                          d->path, d->ex_line[i], d->ex_label[i], n_labels, n_labels - 1);
    return LL_OK;
}

void data_free(Dataset *d) {
    ll_free(d->path);
    ll_free(d->tokens);
    ll_free(d->ex_off);
    ll_free(d->ex_len);
    ll_free(d->ex_label);
    ll_free(d->ex_line);
    ll_free(d->ex_tokens);
    memset(d, 0, sizeof *d);
}

void batch_alloc(Batch *b, int B, int T) {
    b->B = B, b->T = T;
    b->ids = ll_calloc((size_t)B * T, sizeof(int));
    b->targets = ll_calloc((size_t)B * T, sizeof(int));
    b->labels = ll_calloc((size_t)B, sizeof(int));
    b->pool = ll_calloc((size_t)B, sizeof(int));
}

void batch_free(Batch *b) {
    ll_free(b->ids);
    ll_free(b->targets);
    ll_free(b->labels);
    ll_free(b->pool);
    memset(b, 0, sizeof *b);
}

static void lm_window(const Dataset *d, size_t start, int row, Batch *b, int T) {
    for (int t = 0; t < T; t++) {
        size_t i = start + (size_t)t;
        b->ids[row * T + t] = i < d->n_tokens ? d->tokens[i] : 0;
        /* past the end of the stream (only the last eval window) the target is ignored */
        b->targets[row * T + t] = i + 1 < d->n_tokens ? d->tokens[i + 1] : -1;
    }
}

static void cls_row(const Dataset *d, int ex, int row, Batch *b, int T, int bos, int pad) {
    int *ids = b->ids + (size_t)row * T;
    int n = d->ex_len[ex] + 1 < T ? d->ex_len[ex] + 1 : T;
    ids[0] = bos;
    /* an example with no tokens (text "") copies nothing; when every example is empty ex_tokens
     * is NULL, and even a zero-length memcpy from NULL + 0 is undefined */
    if (n > 1) memcpy(ids + 1, d->ex_tokens + d->ex_off[ex], sizeof(int) * (size_t)(n - 1));
    for (int t = n; t < T; t++) ids[t] = pad;
    b->pool[row] = n - 1;
    b->labels[row] = d->ex_label[ex];
}

void data_sample(const Dataset *d, Rng *r, Batch *b, int B, int T, int bos, int pad) {
    b->B = B, b->T = T;
    if (d->kind == DATA_LM) {
        size_t span = d->n_tokens > (size_t)T + 1 ? d->n_tokens - (size_t)T - 1 : 1;
        for (int row = 0; row < B; row++) {
            size_t start = span > UINT32_MAX ? (size_t)(rng_u64(r) % span) : rng_below(r, (uint32_t)span);
            lm_window(d, start, row, b, T);
        }
    } else {
        for (int row = 0; row < B; row++) cls_row(d, (int)rng_below(r, (uint32_t)d->n_ex), row, b, T, bos, pad);
    }
}

int data_eval_count(const Dataset *d, int B, int T) {
    size_t units = d->kind == DATA_LM ? (d->n_tokens - 1 + (size_t)T - 1) / (size_t)T : (size_t)d->n_ex;
    return (int)((units + (size_t)B - 1) / (size_t)B);
}

int data_eval_batch(const Dataset *d, int index, Batch *b, int B, int T, int bos, int pad) {
    int rows = 0;
    if (d->kind == DATA_LM) {
        size_t windows = (d->n_tokens - 1 + (size_t)T - 1) / (size_t)T;
        for (int row = 0; row < B; row++) {
            size_t w = (size_t)index * B + (size_t)row;
            if (w >= windows) break;
            lm_window(d, w * (size_t)T, row, b, T);
            rows++;
        }
    } else {
        for (int row = 0; row < B; row++) {
            long ex = (long)index * B + row;
            if (ex >= d->n_ex) break;
            cls_row(d, (int)ex, row, b, T, bos, pad);
            rows++;
        }
    }
    b->B = rows, b->T = T;
    return rows;
}
