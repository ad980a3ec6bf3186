/* ops_loss: softmax cross-entropy fused with the softmax, computed row by row in fp32 with the
 * max subtracted (log-sum-exp stability): fp32 exponentials (as torch computes them) summed in
 * double, so that a 8192-wide row loses nothing to the order of the sum. */
#include "ops.h"

#include <math.h>

int crossentropy_forward(float *losses, float *lse, const float *logits, const int *targets, int N, int V) {
    int counted = 0;
    #pragma omp parallel for schedule(static) reduction(+ : counted) if ((size_t)N * V >= LL_OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float mx = z[0];
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        double s = 0.0;
        for (int v = 0; v < V; v++) s += (double)expf(z[v] - mx); /* fp32 exp, double sum */
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
        for (int v = 0; v < V; v++) z[v] = expf(z[v] - l) * scale;
        z[targets[i]] -= scale;
    }
}
