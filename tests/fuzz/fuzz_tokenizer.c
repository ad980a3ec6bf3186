/* libFuzzer target for the tokenizer.json reader (engine/tokenizer.c). Built and run by `make fuzz`
 * (docs/TESTING.md), not by `make test`; by hand:
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. -Iengine \
 *       $(pkg-config --cflags libcjson) tests/fuzz/fuzz_tokenizer.c engine/tokenizer.c \
 *       engine/core.c $(pkg-config --libs libcjson) -o build/fuzz_tokenizer
 *   build/fuzz_tokenizer -max_len=65536 -dict=tests/fuzz/tokenizer.dict tests/fuzz/tokenizer/
 *
 * Seeds in tests/fuzz/tokenizer/: the byte-level tokenizer, a small trained one (legacy "a b"
 * merges) and the same with [a, b] pair merges, plus near-valid files (a merge to an unknown
 * token, a hole in the ids). Besides memory errors (ASan), the target aborts when a rejected file
 * is not a format error, or when an accepted tokenizer breaks its promises: specials exist,
 * ids stay in range, and a text with every byte value decodes back to itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Tokenizer *t = NULL;
    LLError err;
    LLStatus rc = tok_parse_json((const char *)data, size, &t, &err);
    if (rc != LL_OK) {
        if (rc != LL_ERR_FORMAT || t != NULL || err.msg[0] == '\0') abort();
        return 0;
    }
    int v = tok_vocab_size(t);
    if (tok_bos(t) < 0 || tok_bos(t) >= v || tok_eos(t) < 0 || tok_eos(t) >= v || tok_pad(t) < 0 || tok_pad(t) >= v)
        abort();
    /* round trip of a fixed text with every byte value, words, digits and a special */
    char text[256 + 64];
    for (int b = 0; b < 256; b++) text[b] = (char)b;
    const char *tail = " the quick brown fox, 42 <s> don't";
    size_t n = 256 + strlen(tail);
    memcpy(text + 256, tail, strlen(tail));
    int *ids = NULL;
    size_t cap = 0;
    size_t k = tok_encode(t, text, n, &ids, &cap);
    for (size_t i = 0; i < k; i++)
        if (ids[i] < 0 || ids[i] >= v) abort();
    /* with only the three specials, the text comes back byte for byte except "<s>" (a special
     * decodes to nothing); other special contents would cut the text elsewhere */
    int n_special = 0;
    for (int id = 0; id < v; id++) n_special += tok_is_special(t, id);
    if (n_special == 3) {
        char want[256 + 64];
        const char *at = strstr(tail, "<s>");
        size_t pre = 256 + (size_t)(at - tail);
        memcpy(want, text, pre);
        memcpy(want + pre, at + 3, n - pre - 3);
        char *out = NULL;
        size_t ocap = 0;
        size_t m = tok_decode(t, ids, k, &out, &ocap);
        if (m != n - 3 || memcmp(out, want, m) != 0) abort();
        free(out);
    }
    free(ids);
    tok_free(t);
    return 0;
}
