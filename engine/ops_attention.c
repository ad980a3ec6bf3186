/* ops_attention: causal multi-head attention with grouped kv heads, as blocked products.
 *
 * Per (batch row b, query head h), in blocks of query rows: S = Q·Kᵀ/sqrt(HS) over the keys the
 * block can see, P = softmax over keys j <= i in fp32 with the row max subtracted (HF's eager path
 * computes the softmax in fp32 too), O = P·V. P is saved for backward; its upper triangle is
 * exactly 0 (HF's masked scores become exp(-inf) = 0), so the diagonal blocks stay causal. The OpenMP loop over (b, h) calls sgemm from inside a parallel
 * region, where the OpenMP build of OpenBLAS runs single-threaded, so the two levels do not
 * oversubscribe the cores. */
#include "ops.h"
#include "simd.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* Row blocks of the causal square: block rows [i0, i1) only see keys [0, i1), so the products
 * skip the upper triangle except inside the diagonal blocks (about T²/2 + T·ATT_BLOCK/2 of T² for
 * scores and mixing). */
enum { ATT_BLOCK = 64 };

#if LL_SIMD
/* row[0, n) = softmax(row[0, n)), 16 lanes: max, exp and a lane-wise fp32 sum reduced in a fixed
 * order. */
static void softmax_row(float *row, int n) {
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
}
#endif

void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int T, int NH, int NKV, int HS) {
    const int ldq = NH * HS, ldk = NKV * HS, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for schedule(static) if ((size_t)B * NH * T * T * HS >= LL_OMP_MIN_WORK)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH, kvh = h / group;
        const float *Q = q + (size_t)b * T * ldq + (size_t)h * HS;
        const float *K = k + (size_t)b * T * ldk + (size_t)kvh * HS;
        const float *Vv = v + (size_t)b * T * ldk + (size_t)kvh * HS;
        float *P = probs + (size_t)bh * T * T;
        float *O = out + (size_t)b * T * ldq + (size_t)h * HS;
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, m = i1 - i0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, HS, scale, Q + (size_t)i0 * ldq, ldq, K,
                        ldk, 0.0f, P + (size_t)i0 * T, T);
            for (int i = i0; i < i1; i++) {
                float *row = P + (size_t)i * T;
#if LL_SIMD
                softmax_row(row, i + 1);
#else
                float mx = row[0];
                for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
                float s = 0.0f;
                for (int j = 0; j <= i; j++) {
                    row[j] = expf(row[j] - mx);
                    s += row[j];
                }
                float inv = 1.0f / s;
                for (int j = 0; j <= i; j++) row[j] *= inv;
#endif
                memset(row + i + 1, 0, sizeof(float) * (size_t)(T - i - 1));
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, HS, i1, 1.0f, P + (size_t)i0 * T, T, Vv, ldk,
                        0.0f, O + (size_t)i0 * ldq, ldq);
        }
    }
}

size_t attention_scratch_floats(int T) { return (size_t)T * T; }

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, float *scratch, int B, int T,
                        int NH, int NKV, int HS) {
    const int ldq = NH * HS, ldk = NKV * HS, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for schedule(static) if ((size_t)B * NH * T * T * HS >= LL_OMP_MIN_WORK)
    for (int bk = 0; bk < B * NKV; bk++) {
        int b = bk / NKV, kvh = bk % NKV;
        float *dP = scratch + (size_t)omp_get_thread_num() * attention_scratch_floats(T);
        const float *K = k + (size_t)b * T * ldk + (size_t)kvh * HS;
        const float *Vv = v + (size_t)b * T * ldk + (size_t)kvh * HS;
        float *dK = dk + (size_t)b * T * ldk + (size_t)kvh * HS;
        float *dV = dv + (size_t)b * T * ldk + (size_t)kvh * HS;
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
                const float *Pb = P + (size_t)i0 * T;
                float *dPb = dP + (size_t)i0 * T;
                /* dP = dO·Vᵀ, dV += Pᵀ·dO over the visible keys [0, i1) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, HS, 1.0f, dO + (size_t)i0 * ldq, ldq, Vv,
                            ldk, 0.0f, dPb, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, HS, m, 1.0f, Pb, T, dO + (size_t)i0 * ldq, ldq,
                            1.0f, dV, ldk);
                /* softmax backward: dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik), times the score scale */
                for (int i = i0; i < i1; i++) {
                    const float *pr = P + (size_t)i * T;
                    float *dr = dP + (size_t)i * T;
                    float dot = 0.0f;
                    for (int j = 0; j <= i; j++) dot += pr[j] * dr[j];
                    for (int j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
                    for (int j = i + 1; j < i1; j++) dr[j] = 0.0f;
                }
                /* dQ = dS·K, dK += dSᵀ·Q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, HS, i1, 1.0f, dPb, T, K, ldk, 0.0f,
                            dQ + (size_t)i0 * ldq, ldq);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, HS, m, 1.0f, dPb, T, Q + (size_t)i0 * ldq, ldq,
                            1.0f, dK, ldk);
            }
        }
    }
}
