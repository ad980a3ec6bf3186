/* ops_attention: causal multi-head attention with grouped kv heads, as blocked products.
 *
 * Per (batch row b, query head h): S = Q·Kᵀ/sqrt(HS) (one sgemm), P = softmax over keys j <= i
 * in fp32 with the row max subtracted (HF's eager path computes the softmax in fp32 too), O = P·V
 * (one sgemm). P is saved for backward; its upper triangle is exactly 0, which is what makes the
 * full-square products below causal. The OpenMP loop over (b, h) calls sgemm from inside a parallel
 * region, where the OpenMP build of OpenBLAS runs single-threaded, so the two levels do not
 * oversubscribe the cores. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, Q, ldq, K, ldk, 0.0f, P, T);
        for (int i = 0; i < T; i++) {
            float *row = P + (size_t)i * T;
            float mx = row[0];
            for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
            float s = 0.0f;
            for (int j = 0; j <= i; j++) {
                row[j] = expf(row[j] - mx);
                s += row[j];
            }
            float inv = 1.0f / s;
            for (int j = 0; j <= i; j++) row[j] *= inv;
            for (int j = i + 1; j < T; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, P, T, Vv, ldk, 0.0f, O, ldq);
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
        for (int gi = 0; gi < group; gi++) {
            int h = kvh * group + gi;
            float beta = gi == 0 ? 0.0f : 1.0f; /* first head of the group overwrites dK, dV */
            const float *P = probs + ((size_t)b * NH + h) * T * T;
            const float *Q = q + (size_t)b * T * ldq + (size_t)h * HS;
            const float *dO = dout + (size_t)b * T * ldq + (size_t)h * HS;
            float *dQ = dq + (size_t)b * T * ldq + (size_t)h * HS;
            /* dP = dO·Vᵀ, dV += Pᵀ·dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, 1.0f, dO, ldq, Vv, ldk, 0.0f, dP, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, P, T, dO, ldq, beta, dV, ldk);
            /* softmax backward: dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik), times the score scale */
            for (int i = 0; i < T; i++) {
                const float *pr = P + (size_t)i * T;
                float *dr = dP + (size_t)i * T;
                float dot = 0.0f;
                for (int j = 0; j <= i; j++) dot += pr[j] * dr[j];
                for (int j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
                for (int j = i + 1; j < T; j++) dr[j] = 0.0f;
            }
            /* dQ = dS·K, dK += dSᵀ·Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, dP, T, K, ldk, 0.0f, dQ, ldq);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, dP, T, Q, ldq, beta, dK, ldk);
        }
    }
}
