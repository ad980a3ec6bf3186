/* optim: AdamW (Loshchilov & Hutter 2019) with decoupled weight decay and bias correction, as
 * torch.optim.AdamW computes it, over a list of parameter segments; plus global-norm gradient
 * clipping and the learning-rate schedules.
 *
 * Each segment carries a learning-rate scale fixed when it is added: a step at learning rate lr
 * updates the segment as a torch param group with lr·lr_scale would (decoupled decay included,
 * p *= 1 − lr·lr_scale·wd, as torch scales the decay by the group's lr). LoRA+ (Hayou et al. 2024)
 * is segments of B at lr_ratio; every other segment has scale 1, and lr·1.0f == lr exactly, so a
 * run without LoRA+ is bitwise the run it was before scales existed.
 *
 * Moment buffers exist only for the segments added (trainable parameters): a frozen base has no
 * optimizer memory. Segments are views into buffers owned elsewhere (the model's base weights for
 * full fine-tuning, the adapter's flat buffer, the classification head). */
#ifndef LL_OPTIM_H
#define LL_OPTIM_H

#include <stddef.h>

typedef struct {
    float *p, *g;
    size_t n;
    int decay; /* weight decay applies (matrices yes, norms no) */
    float lr_scale; /* this segment's learning rate over the step's lr */
    size_t off; /* into m, v */
} ParamSeg;

typedef struct {
    ParamSeg *segs;
    int nseg, capseg;
    size_t n;
    float *m, *v;
    int t;
    float beta1, beta2, eps, weight_decay;
} AdamW;

void adamw_init(AdamW *o, float beta1, float beta2, float eps, float weight_decay);
void adamw_add(AdamW *o, float *p, float *g, size_t n, int decay); /* lr_scale 1 */
void adamw_add_scaled(AdamW *o, float *p, float *g, size_t n, int decay, float lr_scale);
void adamw_ready(AdamW *o); /* allocates the moments, after the last adamw_add */
void adamw_free(AdamW *o);
/* One step: for each element of a segment, with l = lr·lr_scale: p -= l*wd*p (decoupled), then
 * the bias-corrected Adam update at l. */
void adamw_step(AdamW *o, float lr);
void adamw_zero_grad(AdamW *o);
/* Global L2 norm of all gradients, in double, summed over fixed-size chunks in a fixed order so that
 * it does not depend on the thread count. */
double adamw_grad_norm(const AdamW *o);
void adamw_scale_grads(AdamW *o, float s);
size_t adamw_state_bytes(const AdamW *o);

typedef enum { SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT } LrSchedule;
/* Linear warmup from 0 over `warmup` steps to `peak`, then decay to min_ratio*peak at the last
 * step (cosine or linear), or constant. step is 0-based. */
float lr_at(LrSchedule s, int step, int total, int warmup, float peak, float min_ratio);
const char *lr_schedule_name(LrSchedule s);
int lr_schedule_from_name(const char *name, LrSchedule *out);

#endif
