/* train: the training loop and evaluation.
 *
 * One step: zero gradients; for each of `accum` micro-batches: forward, backward of loss/accum,
 * plus the adapter's regulariser if it has one; stop as diverged if the loss or the gradient norm
 * is not finite; clip to the global norm; AdamW at the scheduled learning rate; then the adapter's
 * on_step (AdaLoRA's rank allocation runs here, post-step weights with pre-step gradients, as PEFT
 * does). What is trained: the adapter's flat buffer when an adapter is attached, else the base
 * weights (full fine-tuning, pretraining; the model must have been built with train_base); the
 * classification head always. Nothing is allocated inside the step loop.
 *
 * Evaluation: on the validation split before the first update (step 0, so curves start at the
 * starting model's loss), every eval_every steps, and after the last step. Keeping the best
 * (keep = TRAIN_KEEP_BEST): at each evaluation that beats the best so far (train_eval_better: a NaN
 * or infinite evaluation never does), the trainable state (adapter params and the method's saved
 * state, or every base weight for full fine-tuning; the head) is copied into a buffer allocated
 * before the loop; a run that ends LL_OK puts that copy back, so the model holds the best weights.
 * The copy lives in memory only: for adapters it is small, for full fine-tuning it is one more copy
 * of the weights, and a folder is written once, by the caller, from the weights in the model.
 * Step 0 is a candidate: when no update beat the starting weights on validation, those are kept.
 * Without a validation split, or when no evaluation was finite, the last weights stay.
 *
 * More validation sets (TrainHooks.eval_sets: another domain's text, to measure forgetting) are
 * evaluated right after valid at each of its evaluations (step 0 included), over the same number
 * of batches (eval_batches), and reported through metric() under their own split names. They never
 * choose the kept weights and never reach the evaluated hook; without valid they are not evaluated.
 *
 * Checkpoints (TrainHooks.checkpoint, the file's format in train_state.h): before anything is
 * evaluated, train_run looks for a checkpoint at its path; one that fits (same tag, steps, sizes,
 * checksum) is read and training continues at its step, with no step-0 evaluation (its rows are the
 * earlier attempt's); one that does not is refused with a warning naming it and why, and the run
 * starts from step 0 with the state it was given; none: a fresh start. The state is written there
 * every checkpoint_every steps and when training stops early (the stop hook, max_minutes), after
 * that step's metrics and evaluation, never after the last step (the caller removes the file once
 * the run has ended). Saved: the step; the trained floats (adapter params, or every base weight
 * under full fine-tuning) and the head; the adapter's method state and resume state (AdaLoRA's
 * masks and importance averages); AdamW's moments and step count; the data RNG and the dropout
 * RNG; the keep-best copy; the best and last evaluations, the best step and the train-loss window.
 * Not saved: wall time. So a run stopped at step k and resumed computes bitwise the weights and
 * metrics of the run that was never stopped (fp32, same thread count). A checkpoint that cannot
 * be written is a warning: training goes on.
 *
 * Metrics leave through hooks (the results store, a progress line); the engine prints nothing. */
#ifndef LL_TRAIN_H
#define LL_TRAIN_H

#include "adapter.h"
#include "core.h"
#include "data.h"
#include "model.h"
#include "optim.h"

typedef enum { TRAIN_KEEP_LAST, TRAIN_KEEP_BEST } TrainKeep;

typedef struct {
    int steps, batch, seq, accum;
    float lr, min_lr_ratio, weight_decay, beta1, beta2, eps, clip;
    int warmup;
    LrSchedule schedule;
    int eval_every;   /* 0: only at the end */
    int eval_batches; /* 0: the whole validation set */
    int log_every;    /* train metrics every N steps */
    uint64_t seed;    /* data order (init seeds live with the model and the adapter) */
    double max_minutes; /* wall-clock bound, 0 = none */
    int bf16;           /* base products in bf16 (model_set_bf16) for this run and its evaluations */
    int base_quant;     /* QuantFormat of the frozen base (model_quantize_base; applied by the run) */
    int double_quant;   /* NF4: double quantization of the absmax values (QLoRA's default, 1) */
    TrainKeep keep;     /* weights left in the model at the end (default last; see above) */
    int checkpoint_every; /* with TrainHooks.checkpoint: steps between checkpoints, 0 = only when stopped */
} TrainConfig;

void train_config_defaults(TrainConfig *c);

typedef struct {
    double loss, ppl, accuracy, macro_f1; /* accuracy and F1 NaN for language modelling */
    long n;                               /* tokens or examples counted */
} EvalResult;

typedef struct {
    void (*metric)(void *user, int step, const char *split, const char *name, double value);
    void (*progress)(void *user, int step, int steps, double loss, double tokens_per_s, double eta_s);
    int (*stop)(void *user); /* non-zero: stop now, status interrupted */
    void *user;
    /* After each validation evaluation at step > 0 (step 0 is the start): non-zero stops training
     * there with LL_OK and res->pruned_step = step (early stopping); the kept weights are chosen as
     * at the end of a run. NULL: never. */
    int (*evaluated)(void *user, int step, const EvalResult *e);
    /* More validation sets (see the header): eval_sets[i] reported as split eval_set_names[i]. */
    const Dataset *const *eval_sets;
    const char *const *eval_set_names;
    int n_eval_sets;
    struct TrainCheckpoint *checkpoint; /* NULL: no checkpoint read or written */
} TrainHooks;

/* Where and how train_run checkpoints (see the header). */
typedef struct TrainCheckpoint {
    const char *path; /* the checkpoint file */
    const char *tag;  /* the run's identity (its key, < 64 characters): another's file is refused */
    LLLog log;        /* the refusal of a checkpoint, a resume and a failed write are logged here */
    void *user;
    /* Once, before the first metric of this attempt: step 0 on a fresh start (refused checkpoint
     * included), else the step resumed at; metric rows past it are the earlier attempt's. */
    void (*resumed)(void *user, int step);
    /* Before each write: make the metrics of steps <= step durable (the store's buffer); non-zero
     * skips this checkpoint (logged), so a checkpoint never claims rows that may be lost. NULL: none. */
    LLStatus (*sync)(void *user, int step, LLError *err);
    int resumed_step; /* OUT: as passed to resumed */
    int written;      /* OUT: checkpoints written */
} TrainCheckpoint;

typedef struct {
    int steps_done;
    double train_loss;  /* mean over the last log window */
    EvalResult eval;    /* the last evaluation (of the last step's weights) */
    EvalResult best;    /* the best evaluation (train_eval_better), also under TRAIN_KEEP_LAST */
    int best_step;      /* its step (0: before any update); -1 when no evaluation was finite */
    int kept_step;      /* the step whose weights the model holds at the end */
    double tokens_per_s, wall_s;
    size_t trainable, optimizer_bytes;
    int diverged_step;  /* -1 unless diverged */
    int pruned_step;    /* -1 unless the evaluated hook stopped the run */
} TrainResult;

/* Adds m's base weights to o for full fine-tuning: one segment per tensor (the tied LM head once),
 * weight decay on matrices only, as torch's usual param groups do. */
void train_add_base_params(AdamW *o, Model *m);

/* Runs tc->steps steps. Returns LL_OK, LL_ERR_DIVERGED (message names the step and what was not
 * finite), or LL_ERR_INTERRUPTED. res is filled in every case with what was done. */
LLStatus train_run(Model *m, Adapter *a, const TrainConfig *tc, const Dataset *train, const Dataset *valid,
                   const TrainHooks *hooks, TrainResult *res, LLError *err);

/* Mean loss (and accuracy, macro-F1 for classification) over max_batches eval batches (0 = all)
 * into *out (NaN when nothing was counted). Refuses, before any forward, data that does not fit
 * the model's head: LL_ERR_CONFIG for the wrong kind, LL_ERR_FORMAT naming path:line for a label
 * at or above the head's label count; *out is then all NaN. */
LLStatus eval_run(Model *m, const Dataset *d, Batch *b, int B, int T, int max_batches, EvalResult *out,
                  LLError *err);
/* eval_run over the whole of d in batches of B x T, with a batch of its own (for a split evaluated
 * once, such as the test split); the same refusals. */
LLStatus eval_split(Model *m, const Dataset *d, int B, int T, EvalResult *out, LLError *err);

/* The validation metric that selects the best weights: accuracy for classification (accuracy not
 * NaN), else the loss. */
double train_eval_metric(const EvalResult *e);
const char *train_eval_metric_name(const EvalResult *e); /* "accuracy" or "loss" */
/* 1 when e beats best: a finite loss (and, for classification, a finite accuracy) is required, so
 * a NaN or infinite evaluation never wins; against a best with n == 0 (none yet) any such e wins;
 * else higher accuracy, ties broken by lower loss (classification), or lower loss. Equal is not
 * better: the earlier evaluation stays. */
int train_eval_better(const EvalResult *e, const EvalResult *best);

#endif
