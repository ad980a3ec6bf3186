/* ops_norm: RMSNorm as HF LlamaRMSNorm computes it: variance = mean(x²) in fp32, eps inside the
 * root, then the weight multiplies the normalised value (peft-spec.md section 7.3). */
#include "ops.h"

#include <math.h>
#include <string.h>

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        double ss = 0.0; /* double accumulation: C up to a few thousand, keep the mean exact-ish */
        for (int c = 0; c < C; c++) ss += (double)xi[c] * xi[c];
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
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)w[c] * gi[c] * xi[c];
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
        float accv[BLK];
        memset(accv, 0, sizeof accv);
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * C, *gi = dout + (size_t)i * C;
            float r = rstd[i];
            for (int c = c0; c < c1; c++) accv[c - c0] += gi[c] * xi[c] * r;
        }
        for (int c = c0; c < c1; c++) dw[c] += accv[c - c0];
    }
}
