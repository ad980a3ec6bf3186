/* ops_quant: fp32 linear products against a quantized frozen weight (declared in ops.h beside the
 * bf16 ones): W's rows are dequantized a chunk at a time into caller scratch and multiplied by
 * cblas_sgemm, so no fp32 copy of W exists beyond one chunk. The chunk size depends on the shape
 * alone, so results do not depend on the thread count. */
#include "ops.h"
#include "quant.h"

#include <cblas.h>

/* rows per chunk: about 1 MiB of fp32, at least one row */
static int chunk_rows(int in) {
    int r = (1 << 18) / in;
    return r < 1 ? 1 : r;
}

size_t matmul_q_scratch_floats(int in) { return (size_t)chunk_rows(in) * in; }

/* scratch = rows [o0, o0 + r) of dequant(W), parallel over rows (each row is written by one thread) */
static void dequant_rows(const QuantTensor *W, int o0, int r, float *scratch) {
    const int in = W->cols;
    #pragma omp parallel for schedule(static) if ((size_t)r * in >= LL_OMP_MIN_WORK)
    for (int i = 0; i < r; i++) quant_dequant(W, (size_t)(o0 + i) * in, (size_t)in, scratch + (size_t)i * in);
}

void matmul_forward_q(float *y, const float *x, const QuantTensor *W, int N, float *scratch) {
    const int in = W->cols, out = W->rows, R = chunk_rows(in);
    for (int o0 = 0; o0 < out; o0 += R) {
        int r = out - o0 < R ? out - o0 : R;
        dequant_rows(W, o0, r, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, x, in, scratch, in, 0.0f, y + o0, out);
    }
}

void matmul_backward_q(float *dx, const float *dy, const QuantTensor *W, int N, int acc, float *scratch) {
    const int in = W->cols, out = W->rows, R = chunk_rows(in);
    for (int o0 = 0; o0 < out; o0 += R) { /* dx (+)= dy[:, o0:o0+r] · W[o0:o0+r, :] */
        int r = out - o0 < R ? out - o0 : R;
        dequant_rows(W, o0, r, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, r, 1.0f, dy + o0, out, scratch, in,
                    acc || o0 > 0 ? 1.0f : 0.0f, dx, in);
    }
}
