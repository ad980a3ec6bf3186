/* ops_loss: softmax cross-entropy fused with the softmax, computed row by row in fp32 with the
 * max subtracted (log-sum-exp stability): fp32 exponentials (as torch computes them; 16 lanes at a
 * time with simd.h's exp) summed in double, so that a 8192-wide row loses nothing to the order of
 * the sum. */
#include "ops.h"
#include "simd.h"

#include <math.h>

#if LL_SIMD
/* max and Σ exp(z - max) (in double, 16 lanes, then a fixed-order reduction) of a row */
static void row_max_sumexp(const float *z, int V, float *mx_out, double *s_out) {
    float mx = ll_max16(z, V);
    __m512 mxv = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int v = 0; v < V; v += 16) {
        __mmask16 k = ll_mask16((size_t)(V - v));
        __m512 e = _mm512_maskz_mov_ps(k, ll_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, z + v), mxv)));
        ll_add_widened(&s0, &s1, e);
    }
    *mx_out = mx;
    *s_out = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}
#endif

int crossentropy_forward(float *losses, float *lse, const float *logits, const int *targets, int N, int V) {
    int counted = 0;
    #pragma omp parallel for schedule(static) reduction(+ : counted) if ((size_t)N * V >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float mx;
        double s;
#if LL_SIMD
        row_max_sumexp(z, V, &mx, &s);
#else
        mx = z[0];
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        s = 0.0;
        for (int v = 0; v < V; v++) s += (double)expf(z[v] - mx); /* fp32 exp, double sum */
#endif
        float l = mx + (float)log(s);
        lse[i] = l;
        if (targets[i] >= 0) {
            losses[i] = l - z[targets[i]];
            counted++;
        } else {
            losses[i] = 0.0f;
        }
    }
    return counted;
}

void crossentropy_backward(float *logits, const float *lse, const int *targets, int N, int V, float scale) {
    #pragma omp parallel for schedule(static) if ((size_t)N * V >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        if (targets[i] < 0) {
            for (int v = 0; v < V; v++) z[v] = 0.0f;
            continue;
        }
        float l = lse[i];
#if LL_SIMD
        const __m512 lv = _mm512_set1_ps(l), sv = _mm512_set1_ps(scale);
        for (int v = 0; v < V; v += 16) {
            __mmask16 k = ll_mask16((size_t)(V - v));
            __m512 e = ll_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, z + v), lv));
            _mm512_mask_storeu_ps(z + v, k, _mm512_mul_ps(e, sv));
        }
#else
        for (int v = 0; v < V; v++) z[v] = expf(z[v] - l) * scale;
#endif
        z[targets[i]] -= scale;
    }
}
