/* run: one training run from a resolved RunConfig, start to finish.
 *
 * Steps: make sure the base model exists (a model folder, or pretrained once from the config's
 * base section into results/bases/<hash of that section>, guarded by a lock file so that parallel
 * workers build it once); load the tokenizer and the task data (train, valid and, when the task
 * folder has one, test); build the model (and the adapter); train with metrics streamed to the
 * store, evaluating on valid at step 0, every train.eval_every steps and at the end; keep the
 * weights of the best validation evaluation (train.keep: best) or the last (train.keep: last);
 * evaluate the kept weights once on the test split; save the adapter folder (or, for full
 * fine-tuning, the model folder) of the kept weights atomically; record final numbers and status.
 *
 * Keeping the best costs one copy of the trainable state in memory (train.c), put back at the end,
 * and the folder is written once from it: a run writes no folder at each new best, so a kill at
 * any time leaves the previous folder (or none) at its path, never a half-written one, and a sweep
 * of many runs does not write each adapter many times. A task folder without test.jsonl/test.txt
 * gets no test metrics: the run's test_note says so (no split is made up from another).
 *
 * A NaN/Inf loss ends the run as `diverged`, Ctrl-C (a stop flag) as `interrupted`; neither writes
 * an adapter folder, so a previous good one is left untouched.
 *
 * Preemption: the run checkpoints its training state (engine/train_state.h, train.h) to
 * run_checkpoint_path every train.checkpoint_every steps and when the stop flag ends it (SIGTERM,
 * SIGINT) or train.max_minutes does. Run again (the sweep re-runs interrupted and failed runs), it
 * resumes from that checkpoint: its metric rows past the checkpoint's step are deleted (all of
 * them when the checkpoint is refused: the run then starts from step 0, and the log says why),
 * the early-stopping curve is read back, and it goes on to the numbers the uninterrupted run would
 * have recorded (bitwise at fp32 and the same thread count). The log says "resumed from the
 * checkpoint ... at step k". The checkpoint is removed when the run ends done, pruned or diverged. */
#ifndef LL_RUN_H
#define LL_RUN_H

#include "config.h"
#include "early_stop.h"
#include "core.h"
#include "store.h"

#include <signal.h>

typedef struct {
    Store *store;            /* NULL: nothing recorded */
    int64_t run_id;          /* the claimed row in the store (when store != NULL) */
    volatile sig_atomic_t *stop; /* set by a signal handler: stop at the next step */
    int progress;            /* print a progress line on stderr (a terminal) */
    int threads;             /* OpenMP/BLAS threads for this run (0 = leave as is) */
    LLLog log;
    /* Early stopping (experiments/early_stop.h), with a store: NULL or type ES_NONE for none. A
     * stopped run ends with status "pruned" (its kept weights written and tested as at the end). */
    const EarlyStopSpec *early_stop;
} RunEnv;

typedef struct {
    char status[16];         /* done, pruned, failed, diverged, interrupted */
    int pruned_step;         /* the step early stopping stopped the run at; -1 when it did not */
    double train_loss, eval_loss, eval_ppl, accuracy, macro_f1, tokens_per_s, wall_s;
    int best_step, kept_step;          /* -1 when none */
    double best_metric;                /* NaN when none */
    const char *best_metric_name;      /* "accuracy" or "loss"; NULL when none */
    int tested;                        /* the test_* numbers were measured */
    double test_loss, test_accuracy, test_macro_f1; /* the kept weights on the test split */
    char test_note[512];               /* why test metrics are absent ("" otherwise) */
    int64_t trainable, total, peak_mem;
    char out_dir[1024];      /* adapter or model folder written ("" if none) */
} RunOutcome;

/* Runs rc. Returns LL_OK when the run finished (status "done"); otherwise the status code with a
 * message, and out->status says failed / diverged / interrupted. With env->store, the outcome and
 * the metrics are recorded under env->run_id in every case. */
LLStatus run_execute(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err);

/* The run's checkpoint (engine/train_state.h): OUT_DIR/NAME/KEY.ckpt, beside the run's folder. */
void run_checkpoint_path(const RunConfig *rc, char *path, size_t cap);
/* The step rc would resume at from its checkpoint (the header: this run's key and steps), or -1
 * when it has none; for claiming the run (store_claim_run_resuming) before run_execute reads it. */
int run_resume_step(const RunConfig *rc);

/* Makes sure the base model of rc exists (pretraining it if needed); writes its folder into path. */
LLStatus run_ensure_base(const RunConfig *rc, const RunEnv *env, char *path, size_t cap, LLError *err);

#endif
