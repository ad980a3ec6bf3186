/* ops_attention: causal multi-head attention with grouped kv heads, as blocked products.
 *
 * Per (batch row b, query head h), in blocks of ATT_BLOCK query rows: S = Q·Kᵀ/sqrt(HS) over the
 * keys the block can see, P = softmax over keys j <= i in fp32 with the row max subtracted (HF's
 * eager path computes the softmax in fp32 too), O = P·V. P is saved for backward; above the
 * diagonal it is exactly 0 up to the end of the row's block (HF's masked scores become exp(-inf) =
 * 0), and past that it is never written nor read (at T = 256, 37% of the T x T floats per head).
 * Backward is the same per (b, kv head), over the query heads of its group: dP = dO·Vᵀ, dV +=
 * Pᵀ·dO, dS = P ⊙ (dP - rowsum(P ⊙ dP)) / sqrt(HS), dQ = dS·K, dK += dSᵀ·Q. Work is parallel over
 * (b, head), so no two threads write the same element; heads are handed out dynamically, as
 * gemm_bf16's tiles are (ops_bf16.c).
 *
 * Every product has the form C (+)= alpha · A · B with B row-major and A read through a row and a
 * column stride (ops_tile.c), which covers A, Aᵀ and the transposed operands Kᵀ, Vᵀ (copied once
 * per head into scratch). With AVX-512 the tiles follow the causal triangle at 12-row granularity
 * (a score tile stops at its last row's diagonal, a mixing tile's k range stops or starts there).
 * Without AVX-512 each product is one cblas_sgemm over the whole block, as the zeros above the
 * diagonal make the result the same. */
#include "ops.h"
#include "simd.h"

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <string.h>

enum { ATT_BLOCK = 64 };

/* How a product's operands follow the causal triangle, for the tiles to skip exact zeros. Row r
 * and k index kk of the product are in the coordinates the caller passes with `off`:
 *   CAUSAL_COLS:  C row r is needed at columns < r + off + 1 only (scores, dP);
 *   CAUSAL_KHIGH: A[r][kk] = 0 for kk > r + off (P, dS rows times V, K);
 *   CAUSAL_KLOW:  A[r][kk] = 0 for kk < r + off (Pᵀ, dSᵀ times dO, Q). */
typedef enum { CAUSAL_COLS, CAUSAL_KHIGH, CAUSAL_KLOW } Causal;


/* C[m, n] (+)= alpha · A[m, k] · B[k, n] as in gemm_small (serial here: the caller's loop over
 * heads is the parallel one), skipping the exact zeros that causal/off describe. */
static void product(Causal causal, int off, int m, int n, int k, float alpha, const float *a, ptrdiff_t rsa,
                    ptrdiff_t csa, const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc) {
#if LL_SIMD
    for (int r0 = 0; r0 < m; r0 += GEMM_TILE_M) {
        int mr = m - r0 < GEMM_TILE_M ? m - r0 : GEMM_TILE_M, n1 = n, k0 = 0, k1 = k;
        if (causal == CAUSAL_COLS && r0 + mr + off < n) n1 = r0 + mr + off;
        if (causal == CAUSAL_KHIGH && r0 + mr + off < k) k1 = r0 + mr + off;
        if (causal == CAUSAL_KLOW && r0 + off > 0) k0 = r0 + off < k ? r0 + off : k;
        for (int j0 = 0; j0 < n1; j0 += GEMM_TILE_N)
            gemm_tile(mr, k1 - k0, a + r0 * rsa + k0 * csa, rsa, csa, b + k0 * ldb + j0, ldb, c + r0 * ldc + j0, ldc,
                      n1 - j0 < GEMM_TILE_N ? n1 - j0 : GEMM_TILE_N, alpha, acc);
    }
#else
    (void)causal, (void)off;
    gemm_small(m, n, k, alpha, a, rsa, csa, b, ldb, c, ldc, acc);
#endif
}

/* row[0, n) = softmax(row[0, n)): max, exp, a sum in a fixed order, scale. */
static void softmax_row(float *row, int n) {
#if LL_SIMD
    __m512 mx = _mm512_set1_ps(ll_max16(row, n)), s = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = ll_mask16((size_t)(n - j));
        __m512 e = _mm512_maskz_mov_ps(k, ll_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), mx)));
        _mm512_mask_storeu_ps(row + j, k, e);
        s = _mm512_add_ps(s, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = ll_mask16((size_t)(n - j));
        _mm512_mask_storeu_ps(row + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + j), inv));
    }
#else
    float mx = row[0];
    for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float s = 0.0f;
    for (int j = 0; j < n; j++) {
        row[j] = expf(row[j] - mx);
        s += row[j];
    }
    float inv = 1.0f / s;
    for (int j = 0; j < n; j++) row[j] *= inv;
#endif
}

/* dr[0, n) = p[j] (dr[j] - Σ_j p[j] dr[j]) · scale: the softmax backward of one row. */
static void softmax_backward_row(float *dr, const float *p, int n, float scale) {
#if LL_SIMD
    __m512 s = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = ll_mask16((size_t)(n - j));
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, p + j), _mm512_maskz_loadu_ps(k, dr + j), s);
    }
    __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(s)), sc = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = ll_mask16((size_t)(n - j));
        __m512 pv = _mm512_maskz_loadu_ps(k, p + j), dv = _mm512_maskz_loadu_ps(k, dr + j);
        _mm512_mask_storeu_ps(dr + j, k, _mm512_mul_ps(_mm512_mul_ps(pv, _mm512_sub_ps(dv, dot)), sc));
    }
#else
    float dot = 0.0f;
    for (int j = 0; j < n; j++) dot += p[j] * dr[j];
    for (int j = 0; j < n; j++) dr[j] = p[j] * (dr[j] - dot) * scale;
#endif
}

size_t attention_scratch_floats(int T, int HS) { return (size_t)T * T + (size_t)HS * T; }

void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, float *scratch,
                       int B, int T, int NH, int NKV, int HS) {
    const int ldq = NH * HS, ldk = NKV * HS, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for schedule(dynamic) if ((size_t)B * NH * T * T * HS >= LL_OMP_MIN_WORK)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH, kvh = h / group;
        float *Kt = scratch + (size_t)omp_get_thread_num() * attention_scratch_floats(T, HS);
        const float *Q = q + (size_t)b * T * ldq + (size_t)h * HS;
        const float *K = k + (size_t)b * T * ldk + (size_t)kvh * HS;
        const float *Vv = v + (size_t)b * T * ldk + (size_t)kvh * HS;
        float *P = probs + (size_t)bh * T * T;
        float *O = out + (size_t)b * T * ldq + (size_t)h * HS;
        gemm_transpose(Kt, K, T, HS, ldk);
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, m = i1 - i0;
            float *Pb = P + (size_t)i0 * T;
            product(CAUSAL_COLS, i0, m, i1, HS, scale, Q + (size_t)i0 * ldq, ldq, 1, Kt, T, Pb, T, 0);
            for (int i = i0; i < i1; i++) {
                float *row = P + (size_t)i * T;
                softmax_row(row, i + 1);
                memset(row + i + 1, 0, sizeof(float) * (size_t)(i1 - i - 1)); /* zeros the block reads */
            }
            product(CAUSAL_KHIGH, i0, m, HS, i1, 1.0f, Pb, T, 1, Vv, ldk, O + (size_t)i0 * ldq, ldq, 0);
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, float *scratch, int B, int T,
                        int NH, int NKV, int HS) {
    const int ldq = NH * HS, ldk = NKV * HS, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for schedule(dynamic) if ((size_t)B * NH * T * T * HS >= LL_OMP_MIN_WORK)
    for (int bk = 0; bk < B * NKV; bk++) {
        int b = bk / NKV, kvh = bk % NKV;
        float *dS = scratch + (size_t)omp_get_thread_num() * attention_scratch_floats(T, HS), *Vt = dS + (size_t)T * T;
        const float *K = k + (size_t)b * T * ldk + (size_t)kvh * HS;
        const float *Vv = v + (size_t)b * T * ldk + (size_t)kvh * HS;
        float *dK = dk + (size_t)b * T * ldk + (size_t)kvh * HS;
        float *dV = dv + (size_t)b * T * ldk + (size_t)kvh * HS;
        gemm_transpose(Vt, Vv, T, HS, ldk);
        /* dK, dV gather from every query head of the group and every row block: start at zero */
        for (int t = 0; t < T; t++) {
            memset(dK + (size_t)t * ldk, 0, sizeof(float) * (size_t)HS);
            memset(dV + (size_t)t * ldk, 0, sizeof(float) * (size_t)HS);
        }
        for (int gi = 0; gi < group; gi++) {
            int h = kvh * group + gi;
            const float *P = probs + ((size_t)b * NH + h) * T * T;
            const float *Q = q + (size_t)b * T * ldq + (size_t)h * HS;
            const float *dO = dout + (size_t)b * T * ldq + (size_t)h * HS;
            float *dQ = dq + (size_t)b * T * ldq + (size_t)h * HS;
            for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, m = i1 - i0;
                const float *Pb = P + (size_t)i0 * T, *dOb = dO + (size_t)i0 * ldq;
                float *dSb = dS + (size_t)i0 * T;
                /* dP = dO·Vᵀ over the visible keys [0, i1); dV[0, i1) += Pᵀ·dO (row j sees i >= j) */
                product(CAUSAL_COLS, i0, m, i1, HS, 1.0f, dOb, ldq, 1, Vt, T, dSb, T, 0);
                product(CAUSAL_KLOW, -i0, i1, HS, m, 1.0f, Pb, 1, T, dOb, ldq, dV, ldk, 1);
                for (int i = i0; i < i1; i++) {
                    float *dr = dS + (size_t)i * T;
                    softmax_backward_row(dr, P + (size_t)i * T, i + 1, scale);
                    for (int j = i + 1; j < i1; j++) dr[j] = 0.0f;
                }
                /* dQ = dS·K, dK[0, i1) += dSᵀ·Q */
                product(CAUSAL_KHIGH, i0, m, HS, i1, 1.0f, dSb, T, 1, K, ldk, dQ + (size_t)i0 * ldq, ldq, 0);
                product(CAUSAL_KLOW, -i0, i1, HS, m, 1.0f, dSb, 1, T, Q + (size_t)i0 * ldq, ldq, dK, ldk, 1);
            }
        }
    }
}
