/* optim: see optim.h. */
#include "optim.h"

#include "core.h"
#include "ops.h"
#include "simd.h"

#include <math.h>
#include <string.h>

void adamw_init(AdamW *o, float beta1, float beta2, float eps, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1, o->beta2 = beta2, o->eps = eps, o->weight_decay = weight_decay;
}

void adamw_add(AdamW *o, float *p, float *g, size_t n, int decay) { adamw_add_scaled(o, p, g, n, decay, 1.0f); }

void adamw_add_scaled(AdamW *o, float *p, float *g, size_t n, int decay, float lr_scale) {
    LL_ASSERT(!o->m && p && g && isfinite(lr_scale) && lr_scale > 0.0f);
    if (n == 0) return;
    if (o->nseg == o->capseg) {
        o->capseg = o->capseg ? 2 * o->capseg : 16;
        o->segs = ll_realloc(o->segs, (size_t)o->capseg, sizeof *o->segs);
    }
    o->segs[o->nseg++] = (ParamSeg){p, g, n, decay, lr_scale, o->n};
    o->n += n;
}

void adamw_ready(AdamW *o) {
    o->m = ll_alloc_floats(o->n);
    o->v = ll_alloc_floats(o->n);
}

void adamw_free(AdamW *o) {
    ll_free(o->segs);
    ll_free(o->m);
    ll_free(o->v);
    memset(o, 0, sizeof *o);
}

void adamw_step(AdamW *o, float lr_step) {
    o->t++;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const float c1 = 1.0f - powf(b1, (float)o->t), c2 = 1.0f - powf(b2, (float)o->t);
    for (int s = 0; s < o->nseg; s++) {
        ParamSeg *sg = &o->segs[s];
        float *m = o->m + sg->off, *v = o->v + sg->off;
        const float lr = lr_step * sg->lr_scale; /* exactly lr_step at scale 1 */
        const float wd = sg->decay ? o->weight_decay : 0.0f;
#if LL_SIMD
        /* The same operations in the same order as the scalar loop below, 16 lanes at a time: IEEE
         * multiply, add, divide and square root are exact-rounded per lane and the build does not
         * contract to FMA (-std=c11), so the results are bitwise those of the scalar loop. */
        const size_t nb = (sg->n + 15) / 16;
        const __m512 keep = _mm512_set1_ps(1.0f - lr * wd), vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2);
        const __m512 ob1 = _mm512_set1_ps(1.0f - b1), ob2 = _mm512_set1_ps(1.0f - b2);
        const __m512 vc1 = _mm512_set1_ps(c1), vc2 = _mm512_set1_ps(c2), vlr = _mm512_set1_ps(lr);
        const __m512 veps = _mm512_set1_ps(eps);
        #pragma omp parallel for schedule(static) if (sg->n >= LL_OMP_MIN_WORK)
        for (size_t b = 0; b < nb; b++) {
            size_t i = b * 16;
            __mmask16 k = ll_mask16(sg->n - i);
            __m512 g = _mm512_maskz_loadu_ps(k, sg->g + i);
            __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, sg->p + i), keep);
            __m512 mi = _mm512_add_ps(_mm512_mul_ps(vb1, _mm512_maskz_loadu_ps(k, m + i)), _mm512_mul_ps(ob1, g));
            __m512 vi = _mm512_add_ps(_mm512_mul_ps(vb2, _mm512_maskz_loadu_ps(k, v + i)),
                                      _mm512_mul_ps(_mm512_mul_ps(ob2, g), g));
            _mm512_mask_storeu_ps(m + i, k, mi);
            _mm512_mask_storeu_ps(v + i, k, vi);
            __m512 mh = _mm512_div_ps(mi, vc1), vh = _mm512_div_ps(vi, vc2);
            __m512 upd = _mm512_div_ps(_mm512_mul_ps(vlr, mh), _mm512_add_ps(_mm512_sqrt_ps(vh), veps));
            _mm512_mask_storeu_ps(sg->p + i, k, _mm512_sub_ps(p, upd));
        }
#else
        #pragma omp parallel for schedule(static) if (sg->n >= LL_OMP_MIN_WORK)
        for (size_t i = 0; i < sg->n; i++) {
            float g = sg->g[i];
            float p = sg->p[i] * (1.0f - lr * wd); /* decoupled decay, applied first as torch does */
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            float mh = m[i] / c1, vh = v[i] / c2;
            sg->p[i] = p - lr * mh / (sqrtf(vh) + eps);
        }
#endif
    }
}

void adamw_zero_grad(AdamW *o) {
    for (int s = 0; s < o->nseg; s++) memset(o->segs[s].g, 0, sizeof(float) * o->segs[s].n);
}

double adamw_grad_norm(const AdamW *o) {
    enum { CHUNK = 1 << 14 };
    double total = 0.0;
    for (int s = 0; s < o->nseg; s++) {
        const ParamSeg *sg = &o->segs[s];
        size_t nch = (sg->n + CHUNK - 1) / CHUNK;
        double *part = ll_malloc(nch, sizeof(double));
        #pragma omp parallel for schedule(static) if (nch > 1)
        for (size_t c = 0; c < nch; c++) {
            size_t i0 = c * CHUNK, i1 = i0 + CHUNK < sg->n ? i0 + CHUNK : sg->n;
            double acc = 0.0;
            for (size_t i = i0; i < i1; i++) acc += (double)sg->g[i] * sg->g[i];
            part[c] = acc;
        }
        for (size_t c = 0; c < nch; c++) total += part[c];
        ll_free(part);
    }
    return sqrt(total);
}

void adamw_scale_grads(AdamW *o, float s) {
    for (int k = 0; k < o->nseg; k++) {
        ParamSeg *sg = &o->segs[k];
        #pragma omp parallel for schedule(static) if (sg->n >= LL_OMP_MIN_WORK)
        for (size_t i = 0; i < sg->n; i++) sg->g[i] *= s;
    }
}

size_t adamw_state_bytes(const AdamW *o) { return 2 * o->n * sizeof(float); }

float lr_at(LrSchedule s, int step, int total, int warmup, float peak, float min_ratio) {
    if (warmup > 0 && step < warmup) return peak * (float)(step + 1) / (float)warmup;
    if (s == SCHED_CONSTANT || total <= warmup + 1) return peak;
    float progress = (float)(step - warmup) / (float)(total - warmup - 1);
    if (progress > 1.0f) progress = 1.0f;
    float floor_lr = peak * min_ratio;
    if (s == SCHED_LINEAR) return floor_lr + (peak - floor_lr) * (1.0f - progress);
    return floor_lr + (peak - floor_lr) * 0.5f * (1.0f + cosf(3.14159265358979f * progress));
}

static const char *const sched_names[] = {"cosine", "linear", "constant"};

const char *lr_schedule_name(LrSchedule s) { return sched_names[s]; }

int lr_schedule_from_name(const char *name, LrSchedule *out) {
    for (int i = 0; i < 3; i++)
        if (strcmp(name, sched_names[i]) == 0) {
            *out = (LrSchedule)i;
            return 1;
        }
    return 0;
}
