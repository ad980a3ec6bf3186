/* libFuzzer target for the JSONL classification reader (engine/data.c, data_parse_jsonl: what
 * data_load_jsonl runs on a file's bytes). Built and run by `make fuzz` (see docs/TESTING.md).
 *
 * Seeds in tests/fuzz/jsonl/: valid files (two labels, blank and CRLF lines, escapes and UTF-8,
 * an empty text) and near-valid ones (a float label, a missing key, a label past 65535).
 * The tokenizer is the byte-level one, so every input byte reaches the encoder. Besides memory
 * errors (ASan) and undefined behaviour (UBSan), the target aborts when a rejected file is not a
 * format error with a message, or when an accepted dataset breaks its promises: examples tile
 * ex_tokens in order, labels lie in [0, n_labels), ids in the vocabulary, and every training and
 * evaluation batch built from it starts with BOS and pools inside the row.
 */
#include <stdint.h>
#include <stdlib.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Tokenizer *tok;
    if (!tok) tok = tok_new_bytes();
    Dataset d;
    LLError err;
    err.msg[0] = '\0';
    LLStatus rc = data_parse_jsonl((const char *)data, size, "fuzz.jsonl", tok, &d, &err);
    if (rc != LL_OK) {
        if (rc != LL_ERR_FORMAT || err.msg[0] == '\0' || d.n_ex != 0 || d.path != NULL) abort();
        return 0;
    }
    if (d.kind != DATA_CLS || d.n_ex < 1 || d.n_labels < 1 || d.n_labels > 65536) abort();
    size_t at = 0;
    const int V = tok_vocab_size(tok);
    for (int i = 0; i < d.n_ex; i++) {
        if (d.ex_off[i] != at || d.ex_len[i] < 0) abort();
        if (d.ex_label[i] < 0 || d.ex_label[i] >= d.n_labels) abort();
        for (int k = 0; k < d.ex_len[i]; k++)
            if (d.ex_tokens[at + (size_t)k] < 0 || d.ex_tokens[at + (size_t)k] >= V) abort();
        at += (size_t)d.ex_len[i];
    }
    enum { B = 3, T = 8 };
    Batch b;
    batch_alloc(&b, B, T);
    Rng r;
    rng_seed(&r, 1);
    data_sample(&d, &r, &b, B, T, tok_bos(tok), tok_pad(tok));
    for (int row = 0; row < B; row++)
        if (b.ids[row * T] != tok_bos(tok) || b.pool[row] < 0 || b.pool[row] >= T) abort();
    int n_batches = data_eval_count(&d, B, T), rows = 0;
    for (int i = 0; i < n_batches; i++) rows += data_eval_batch(&d, i, &b, B, T, tok_bos(tok), tok_pad(tok));
    if (rows != d.n_ex) abort();
    batch_free(&b);
    data_free(&d);
    return 0;
}
