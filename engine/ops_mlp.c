/* ops_mlp: the gate of the Llama MLP, out = act(g) ⊙ u (Shazeer 2020). SiLU (SwiGLU, every Llama):
 * σ(z) = 1/(1+e^-z) with the 16-lane exp of simd.h, one block of 16 elements at a time (the scalar
 * loop is the fallback without AVX-512). GELU (exact and tanh) and ReLU, which some HF Llama-type
 * configs name in hidden_act: scalar, in double per element. */
#include "core.h"
#include "ops.h"
#include "simd.h"

#include <math.h>
#include <string.h>

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

static const char *const act_names[ACT_COUNT] = {"silu", "gelu", "gelu_pytorch_tanh", "relu"};

const char *act_name(Activation a) { return a >= 0 && a < ACT_COUNT ? act_names[a] : "?"; }

int act_from_name(const char *name, Activation *out) {
    for (int i = 0; i < ACT_COUNT; i++)
        if (strcmp(name, act_names[i]) == 0) {
            *out = (Activation)i;
            return 1;
        }
    return 0;
}

#define SQRT_2_OVER_PI 0.79788456080286535588
#define GELU_TANH_C 0.044715

/* act(z) and, when d is not NULL, act'(z) into *d */
static double act_eval(Activation act, double z, double *d) {
    switch (act) {
    case ACT_GELU: {
        double cdf = 0.5 * (1.0 + erf(z * 0.70710678118654752440));
        if (d) *d = cdf + z * exp(-0.5 * z * z) * 0.39894228040143267794; /* Φ(z) + z·φ(z) */
        return z * cdf;
    }
    case ACT_GELU_TANH: {
        double t = tanh(SQRT_2_OVER_PI * (z + GELU_TANH_C * z * z * z));
        if (d) *d = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * z * z);
        return 0.5 * z * (1.0 + t);
    }
    case ACT_RELU:
        if (d) *d = z > 0.0 ? 1.0 : 0.0;
        return z > 0.0 ? z : 0.0;
    default: LL_ASSERT(0);
    }
    return 0.0;
}

void glu_forward(float *out, const float *g, const float *u, size_t n, Activation act) {
    if (act == ACT_SILU) {
        swiglu_forward(out, g, u, n);
        return;
    }
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK / 4)
    for (size_t i = 0; i < n; i++) out[i] = (float)act_eval(act, g[i], NULL) * u[i];
}

void glu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n, Activation act) {
    if (act == ACT_SILU) {
        swiglu_backward(dg, du, dout, g, u, n);
        return;
    }
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK / 4)
    for (size_t i = 0; i < n; i++) {
        double d, a = act_eval(act, g[i], &d);
        du[i] = dout[i] * (float)a;
        dg[i] = (float)((double)dout[i] * u[i] * d);
    }
}
