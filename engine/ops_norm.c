/* ops_norm: RMSNorm as HF LlamaRMSNorm computes it: variance = mean(x²) in fp32, eps inside the
 * root, then the weight multiplies the normalised value (peft-spec.md section 7.3). */
#include "ops.h"
#include "simd.h"

#include <math.h>
#include <string.h>

/* Σ a_c·b_c·c3_c (b NULL: a_c², c3 NULL: 1) in double; with AVX-512, 16 lanes of fp32 products widened to two
 * 8-lane double sums and reduced in a fixed order (the value does not depend on the thread count;
 * the products are fp32, the sums double). */
static double dot_double(const float *a, const float *b, const float *c3, int C) {
#if LL_SIMD
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int c = 0; c < C; c += 16) {
        __mmask16 k = ll_mask16((size_t)(C - c));
        __m512 x = _mm512_maskz_loadu_ps(k, a + c);
        __m512 p = _mm512_mul_ps(x, b ? _mm512_maskz_loadu_ps(k, b + c) : x);
        if (c3) p = _mm512_mul_ps(p, _mm512_maskz_loadu_ps(k, c3 + c));
        ll_add_widened(&s0, &s1, p);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#else
    double s = 0.0;
    for (int c = 0; c < C; c++) s += (double)a[c] * (b ? b[c] : a[c]) * (c3 ? c3[c] : 1.0f);
    return s;
#endif
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        double ss = dot_double(xi, NULL, NULL, C); /* double: C up to a few thousand, keep the mean exact-ish */
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        rstd[i] = r;
        for (int c = 0; c < C; c++) oi[c] = w[c] * (xi[c] * r);
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C, int acc) {
    /* y_c = w_c x_c r, r = (mean(x²)+eps)^-1/2:
     * dx_c = r (w_c g_c) - x_c r³ (1/C) Σ_k w_k g_k x_k. */
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C, *gi = dout + (size_t)i * C;
        float *di = dx + (size_t)i * C;
        float r = rstd[i];
        double dot = dot_double(w, gi, xi, C);
        float k = (float)(dot / C) * r * r * r;
        if (acc)
            for (int c = 0; c < C; c++) di[c] += r * w[c] * gi[c] - k * xi[c];
        else
            for (int c = 0; c < C; c++) di[c] = r * w[c] * gi[c] - k * xi[c];
    }
    if (!dw) return;
    /* dw_c = Σ_i g_ic x_ic r_i: parallel over column blocks, rows summed in order. */
    enum { BLK = 16 };
    int nblk = (C + BLK - 1) / BLK;
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= LL_OMP_MIN_WORK)
    for (int b = 0; b < nblk; b++) {
        int c0 = b * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
#if LL_SIMD /* the scalar loop's operations in the same order, 16 columns at once: bitwise equal */
        __mmask16 k = ll_mask16((size_t)(c1 - c0));
        __m512 accv = _mm512_setzero_ps();
        for (int i = 0; i < N; i++) {
            __m512 g = _mm512_maskz_loadu_ps(k, dout + (size_t)i * C + c0);
            __m512 xv = _mm512_maskz_loadu_ps(k, x + (size_t)i * C + c0);
            accv = _mm512_add_ps(accv, _mm512_mul_ps(_mm512_mul_ps(g, xv), _mm512_set1_ps(rstd[i])));
        }
        _mm512_mask_storeu_ps(dw + c0, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dw + c0), accv));
#else
        float accv[BLK];
        memset(accv, 0, sizeof accv);
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * C, *gi = dout + (size_t)i * C;
            float r = rstd[i];
            for (int c = c0; c < c1; c++) accv[c - c0] += gi[c] * xi[c] * r;
        }
        for (int c = c0; c < c1; c++) dw[c] += accv[c - c0];
#endif
    }
}
