/* ops_matmul: the linear products, all through cblas_sgemm (the naive loop is the reference the
 * tests compare against). */
#include "ops.h"

#include <cblas.h>

void matmul_forward(float *y, const float *x, const float *W, int N, int in, int out) {
    /* y[N,out] = x[N,in] · Wᵀ, W stored (out, in) as in PyTorch. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
}

void matmul_forward_naive(float *y, const float *x, const float *W, int N, int in, int out) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int j = 0; j < in; j++) acc += (double)x[(size_t)i * in + j] * W[(size_t)o * in + j];
            y[(size_t)i * out + o] = (float)acc;
        }
}

void matmul_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int N,
                     int in, int out, int acc) {
    if (dx) /* dx[N,in] = dy[N,out] · W[out,in] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.0f, dy, out, W, in,
                    acc ? 1.0f : 0.0f, dx, in);
    if (dW) /* dW[out,in] += dyᵀ · x */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f, dy, out, x, in, 1.0f,
                    dW, in);
}

void residual_forward(float *y, const float *a, const float *b, size_t n) {
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void bias_forward(float *y, const float *b, int N, int out) {
    #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) y[(size_t)n * out + o] += b[o];
}

void bias_backward(float *db, const float *dy, int N, int out) {
    #pragma omp parallel for schedule(static) if ((size_t)N * out >= LL_OMP_MIN_WORK)
    for (int o = 0; o < out; o++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dy[(size_t)n * out + o];
        db[o] += s;
    }
}
