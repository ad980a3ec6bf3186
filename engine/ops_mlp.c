/* ops_mlp: the SwiGLU gate of the Llama MLP, out = SiLU(g) ⊙ u (Shazeer 2020). */
#include "ops.h"

#include <math.h>

void swiglu_forward(float *out, const float *g, const float *u, size_t n) {
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        out[i] = g[i] * s * u[i];
    }
}

void swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n) {
    /* d SiLU(z)/dz = σ(z)(1 + z(1 - σ(z))). Overwrites dg and du. */
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float silu = g[i] * s;
        du[i] = dout[i] * silu;
        dg[i] = dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}
