/* ops_embed: token embedding lookup and its scatter-add backward. */
#include "ops.h"

#include <string.h>

void embedding_forward(float *out, const int *ids, const float *E, int N, int C) {
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) memcpy(out + (size_t)i * C, E + (size_t)ids[i] * C, sizeof(float) * (size_t)C);
}

void embedding_backward(float *dE, const float *dout, const int *ids, int N, int C) {
    /* Rows of dE are hit by repeated tokens, so parallelise over columns: each thread owns a
     * column block of every row and walks the tokens in order, which keeps the sum order fixed. */
    enum { BLK = 16 };
    int nblk = (C + BLK - 1) / BLK;
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= LL_OMP_MIN_WORK)
    for (int b = 0; b < nblk; b++) {
        int c0 = b * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        for (int i = 0; i < N; i++) {
            float *row = dE + (size_t)ids[i] * C;
            const float *g = dout + (size_t)i * C;
            for (int c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}
