/* ops_rope: rotary position embedding in Hugging Face's convention: the head is split in halves
 * and pair (j, j + HS/2) is rotated by angle p·inv_freq_j (peft-spec.md section 7.4). */
#include "ops.h"

#include <math.h>

void rope_tables(float *cosv, float *sinv, int T_max, int HS, float theta) {
    int half = HS / 2;
    for (int j = 0; j < half; j++) {
        /* HF: inv_freq = 1 / theta ** (arange(0, d, 2).float() / d), all in fp32 */
        float inv_freq = 1.0f / powf(theta, (float)(2 * j) / (float)HS);
        for (int p = 0; p < T_max; p++) {
            float a = (float)p * inv_freq; /* fp32 angle, as HF forms it */
            cosv[(size_t)p * half + j] = cosf(a);
            sinv[(size_t)p * half + j] = sinf(a);
        }
    }
}

static void rope_apply(float *x, const float *cosv, const float *sinv, int B, int T, int NHx, int HS,
                       float sign) {
    int half = HS / 2;
    #pragma omp parallel for schedule(static) if ((size_t)B * T * NHx * HS >= LL_OMP_MIN_WORK)
    for (int bt = 0; bt < B * T; bt++) {
        int p = bt % T;
        const float *cp = cosv + (size_t)p * half, *sp = sinv + (size_t)p * half;
        for (int h = 0; h < NHx; h++) {
            float *v = x + ((size_t)bt * NHx + h) * HS;
            for (int j = 0; j < half; j++) {
                float a = v[j], b = v[j + half], c = cp[j], s = sign * sp[j];
                v[j] = a * c - b * s;
                v[j + half] = b * c + a * s;
            }
        }
    }
}

void rope_forward(float *x, const float *cosv, const float *sinv, int B, int T, int NHx, int HS) {
    rope_apply(x, cosv, sinv, B, T, NHx, HS, 1.0f);
}

void rope_backward(float *dx, const float *cosv, const float *sinv, int B, int T, int NHx, int HS) {
    rope_apply(dx, cosv, sinv, B, T, NHx, HS, -1.0f);
}
