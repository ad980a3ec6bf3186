/* run: one training run from a resolved RunConfig, start to finish.
 *
 * Steps: make sure the base model exists (a model folder, or pretrained once from the config's
 * base section into results/bases/<hash of that section>, guarded by a lock file so that parallel
 * workers build it once); load the tokenizer and the task data; build the model (and the adapter);
 * train with metrics streamed to the store; evaluate; save the adapter folder (or, for full
 * fine-tuning, the model folder) atomically; record final numbers and status.
 *
 * A NaN/Inf loss ends the run as `diverged`, Ctrl-C (a stop flag) as `interrupted`; neither writes
 * an adapter folder, so a previous good one is left untouched. */
#ifndef LL_RUN_H
#define LL_RUN_H

#include "config.h"
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
} RunEnv;

typedef struct {
    char status[16];         /* done, failed, diverged, interrupted */
    double train_loss, eval_loss, eval_ppl, accuracy, macro_f1, tokens_per_s, wall_s;
    int64_t trainable, total, peak_mem;
    char out_dir[1024];      /* adapter or model folder written ("" if none) */
} RunOutcome;

/* Runs rc. Returns LL_OK when the run finished (status "done"); otherwise the status code with a
 * message, and out->status says failed / diverged / interrupted. With env->store, the outcome and
 * the metrics are recorded under env->run_id in every case. */
LLStatus run_execute(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err);

/* Makes sure the base model of rc exists (pretraining it if needed); writes its folder into path. */
LLStatus run_ensure_base(const RunConfig *rc, const RunEnv *env, char *path, size_t cap, LLError *err);

#endif
