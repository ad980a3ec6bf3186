/* ops_tile: small fp32 products as AVX-512 register tiles, for the shapes where a BLAS call costs
 * more in packing and dispatch than in arithmetic: attention's per-head products (HS = 32 to 128)
 * and the LoRA branch (rank 1 to 64 against the model width).
 *
 * A tile is up to 12 rows x 32 columns of C held in 24 zmm accumulators. Each k step loads one row
 * of B (two vectors, masked to the tile's width) and broadcasts one element of A per row, so A can
 * be read through any row and column stride: row-major A, or a transposed operand (rsa == 1) such
 * as uᵀ in a weight gradient. Every tile covers its whole k range and writes its own part of C,
 * so no two threads sum into one element and results do not depend on the thread count.
 * gemm_transpose makes the dense transposed copies such a B operand sometimes needs. */
#include "ops.h"
#include "simd.h"

#include <cblas.h>
#include <omp.h>

#if LL_SIMD

/* c[r][0, n) (+)= alpha Σ_kk A[r][kk] b[kk*ldb + (0, n)] for r < MR, n <= 16·NV (NV = 1 for a
 * narrow last column block, 2 otherwise). A[r][kk] is a[r*rsa + kk] (COLS = 0) or a[r + kk*csa]
 * (COLS = 1). Row-major A is read through four base pointers three rows apart and the row stride,
 * so every broadcast is one addressing mode (base + stride·{0, 4, 8} bytes) and the loop needs 6
 * integer registers, not 12. */
static inline __attribute__((always_inline)) void tile_body(const int MR, const int NV, const int COLS, int kn,
                                                            const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                                                            const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                                                            int n, float alpha, int acc) {
    __m512 c0[GEMM_TILE_M], c1[GEMM_TILE_M];
    #pragma GCC unroll 12
    for (int r = 0; r < MR; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    __mmask16 m0 = ll_mask16((size_t)n), m1 = n > 16 ? ll_mask16((size_t)(n - 16)) : 0;
    /* rows past MR are never read: their base pointers stay at a rather than point past the rows */
    const float *p0 = a, *p3 = MR > 3 ? a + 3 * rsa : a, *p6 = MR > 6 ? a + 6 * rsa : a;
    const float *p9 = MR > 9 ? a + 9 * rsa : a;
    for (int kk = 0; kk < kn; kk++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = NV > 1 ? _mm512_maskz_loadu_ps(m1, b + 16) : b0;
        b += ldb;
        #pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            const float *base = r < 3 ? p0 : r < 6 ? p3 : r < 9 ? p6 : p9;
            __m512 x = _mm512_set1_ps(COLS ? a[r] : base[(r % 3) * rsa]);
            c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
            if (NV > 1) c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
        }
        if (COLS) a += csa;
        else p0++, p3++, p6++, p9++;
    }
    __m512 al = _mm512_set1_ps(alpha);
    #pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        float *cr = c + r * ldc;
        __m512 v0 = _mm512_mul_ps(c0[r], al), v1 = _mm512_mul_ps(c1[r], al);
        if (acc) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
            if (NV > 1) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        if (NV > 1) _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

#define TILE_CASE(R)                                                                                                   \
    case R:                                                                                                            \
        if (rsa == 1 && n > 16) tile_body(R, 2, 1, kn, a, rsa, csa, b, ldb, c, ldc, n, alpha, acc);                    \
        else if (rsa == 1) tile_body(R, 1, 1, kn, a, rsa, csa, b, ldb, c, ldc, n, alpha, acc);                         \
        else if (n > 16) tile_body(R, 2, 0, kn, a, rsa, csa, b, ldb, c, ldc, n, alpha, acc);                           \
        else tile_body(R, 1, 0, kn, a, rsa, csa, b, ldb, c, ldc, n, alpha, acc);                                       \
        break;

void gemm_tile(int mr, int kn, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t ldb, float *c,
               ptrdiff_t ldc, int n, float alpha, int acc) {
    switch (mr) {
        TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9) TILE_CASE(8) TILE_CASE(7)
        TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2) TILE_CASE(1)
    }
}
#undef TILE_CASE
#endif

/* Tiles in row-major order over C, in a parallel loop when the product is big enough (inside
 * another parallel region the loop runs on the calling thread). */
void gemm_small(int m, int n, int k, float alpha, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
                ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc) {
#if LL_SIMD
    const int rt = (m + GEMM_TILE_M - 1) / GEMM_TILE_M, ct = (n + GEMM_TILE_N - 1) / GEMM_TILE_N;
    #pragma omp parallel for schedule(static) if ((size_t)m * n * k >= (size_t)LL_OMP_MIN_WORK * 16 && rt * ct > 1)
    for (int t = 0; t < rt * ct; t++) {
        int r0 = t / ct * GEMM_TILE_M, j0 = t % ct * GEMM_TILE_N;
        gemm_tile(m - r0 < GEMM_TILE_M ? m - r0 : GEMM_TILE_M, k, a + r0 * rsa, rsa, csa, b + j0, ldb,
                  c + r0 * ldc + j0, ldc, n - j0 < GEMM_TILE_N ? n - j0 : GEMM_TILE_N, alpha, acc);
    }
#else
    float beta = acc ? 1.0f : 0.0f;
    if (csa == 1)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, (int)rsa, b, (int)ldb, beta, c,
                    (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, alpha, a, (int)csa, b, (int)ldb, beta, c,
                    (int)ldc);
#endif
}

void gemm_transpose(float *dst, const float *src, int rows, int cols, ptrdiff_t ld) {
#if LL_SIMD /* 16 x 16 blocks, masked at the edges */
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 16) {
            int nr = rows - r0 < 16 ? rows - r0 : 16, nc = cols - c0 < 16 ? cols - c0 : 16;
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < nr ? _mm512_maskz_loadu_ps(ll_mask16((size_t)nc), src + (size_t)(r0 + i) * ld + c0)
                              : _mm512_setzero_ps();
            ll_transpose16(r);
            for (int c = 0; c < nc; c++)
                _mm512_mask_storeu_ps(dst + (size_t)(c0 + c) * rows + r0, ll_mask16((size_t)nr), r[c]);
        }
#else
    for (int c = 0; c < cols; c++)
        for (int i = 0; i < rows; i++) dst[(size_t)c * rows + i] = src[(size_t)i * ld + c];
#endif
}
