/* blas_probe: whether the loaded OpenBLAS kernels give bitwise the same products with 1 and 2
 * threads. loralab's own kernels never depend on the thread count; OpenBLAS's do for some kernel
 * sets: with OPENBLAS_CORETYPE=Haswell (AVX2), 0.3.21 sums a 64x64x128 product in another order
 * when it runs it on 2 threads, while its Cooperlake (AVX-512) kernels do not. Tests of bitwise
 * thread-count independence call this first and, where the BLAS itself is not independent, check
 * run-to-run identity at a fixed thread count instead, saying so. */
#ifndef LL_TESTS_BLAS_PROBE_H
#define LL_TESTS_BLAS_PROBE_H

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int blas_thread_independent(void) {
    static const int shapes[][3] = {{64, 64, 128}, {128, 64, 64}, {256, 128, 64}, {64, 8, 256}};
    int same = 1, saved = omp_get_max_threads();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && same; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
        float *C1 = malloc(sizeof(float) * (size_t)M * N), *C2 = malloc(sizeof(float) * (size_t)M * N);
        unsigned x = 12345;
        for (int i = 0; i < M * K; i++) A[i] = (float)((x = x * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (int i = 0; i < K * N; i++) B[i] = (float)((x = x * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (int t = 0; t < 4 && same; t++) {
            CBLAS_TRANSPOSE ta = t & 1 ? CblasTrans : CblasNoTrans, tb = t & 2 ? CblasTrans : CblasNoTrans;
            int lda = ta == CblasNoTrans ? K : M, ldb = tb == CblasNoTrans ? N : K;
            omp_set_num_threads(1);
            cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C1, N);
            omp_set_num_threads(2);
            cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C2, N);
            same = memcmp(C1, C2, sizeof(float) * (size_t)M * N) == 0;
        }
        free(A), free(B), free(C1), free(C2);
    }
    omp_set_num_threads(saved);
    if (!same)
        fprintf(stderr, "NOTE: OpenBLAS's %s kernels sum some products in a thread-count-dependent order: "
                        "checking identity at a fixed thread count instead of across 1 and 2 threads\n",
                openblas_get_corename());
    return same;
}

#endif
