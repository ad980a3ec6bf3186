/* ops_mlp: the SwiGLU gate of the Llama MLP, out = SiLU(g) ⊙ u (Shazeer 2020). σ(z) = 1/(1+e^-z)
 * with the 16-lane exp of simd.h, one block of 16 elements at a time (the scalar loop is the
 * fallback without AVX-512). */
#include "ops.h"
#include "simd.h"

#include <math.h>

#if LL_SIMD
static inline __m512 sigmoid16(__m512 z) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, ll_exp16(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}
#endif

void swiglu_forward(float *out, const float *g, const float *u, size_t n) {
#if LL_SIMD
    size_t nb = (n + 15) / 16;
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t b = 0; b < nb; b++) {
        size_t i = b * 16;
        __mmask16 k = ll_mask16(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i), uv = _mm512_maskz_loadu_ps(k, u + i);
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(_mm512_mul_ps(gv, sigmoid16(gv)), uv));
    }
#else
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        out[i] = g[i] * s * u[i];
    }
#endif
}

void swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n) {
    /* d SiLU(z)/dz = σ(z)(1 + z(1 - σ(z))). Overwrites dg and du. */
#if LL_SIMD
    size_t nb = (n + 15) / 16;
    const __m512 one = _mm512_set1_ps(1.0f);
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t b = 0; b < nb; b++) {
        size_t i = b * 16;
        __mmask16 k = ll_mask16(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i), uv = _mm512_maskz_loadu_ps(k, u + i);
        __m512 dv = _mm512_maskz_loadu_ps(k, dout + i), s = sigmoid16(gv);
        _mm512_mask_storeu_ps(du + i, k, _mm512_mul_ps(dv, _mm512_mul_ps(gv, s)));
        __m512 ds = _mm512_mul_ps(s, _mm512_fmadd_ps(gv, _mm512_sub_ps(one, s), one));
        _mm512_mask_storeu_ps(dg + i, k, _mm512_mul_ps(_mm512_mul_ps(dv, uv), ds));
    }
#else
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float silu = g[i] * s;
        du[i] = dout[i] * silu;
        dg[i] = dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
#endif
}
