/* bench_tokenizer: BPE training time and encode/decode throughput on a real corpus.
 *
 *   cc -std=c11 -O2 -Iengine $(pkg-config --cflags libcjson) bench/bench_tokenizer.c \
 *       engine/tokenizer.c engine/core.c $(pkg-config --libs libcjson) -o build/bench_tokenizer
 *   build/bench_tokenizer [TEXT_FILE [VOCAB_SIZE]]     (defaults: data/brown/train.txt 4096)
 *
 * Prints the training time, the merge count, encode throughput (best of 3 runs over the whole
 * file, one tok_encode call, so the per-call word cache is warm after the first occurrence of
 * each word), tokens per byte, and checks that decoding gives the file back. Single-threaded:
 * the tokenizer uses no threads. Exit status 1 if the file cannot be read or the round trip fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "data/brown/train.txt";
    int vocab = argc > 2 ? atoi(argv[2]) : 4096;
    LLError err;
    char *text;
    size_t len;
    if (ll_read_file(path, &text, &len, &err)) {
        fprintf(stderr, "bench_tokenizer: %s (run `make data` first?)\n", err.msg);
        return 1;
    }
    double t0 = ll_now();
    Tokenizer *t;
    if (tok_train_bpe(text, len, vocab, &t, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    double train_s = ll_now() - t0;
    int *ids = NULL;
    size_t cap = 0, n = 0;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        t0 = ll_now();
        n = tok_encode(t, text, len, &ids, &cap);
        double s = ll_now() - t0;
        if (s < best) best = s;
    }
    char *out = NULL;
    size_t ocap = 0;
    t0 = ll_now();
    size_t m = tok_decode(t, ids, n, &out, &ocap);
    double dec_s = ll_now() - t0;
    int ok = m == len && memcmp(out, text, len) == 0;
    printf("corpus         %s (%.2f MB)\n", path, (double)len / 1e6);
    printf("train          vocab %d (%d merges) in %.3f s\n", tok_vocab_size(t), tok_n_merges(t), train_s);
    printf("encode         %zu tokens (%.2f bytes/token) in %.3f s = %.1f MB/s\n", n, (double)len / (double)n,
           best, (double)len / 1e6 / best);
    printf("decode         %.3f s = %.1f MB/s, round trip %s\n", dec_s, (double)len / 1e6 / dec_s,
           ok ? "exact" : "FAILED");
    ll_free(ids);
    ll_free(out);
    ll_free(text);
    tok_free(t);
    return ok ? 0 : 1;
}
