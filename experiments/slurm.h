/* slurm: the SLURM array script that runs a sweep on a cluster (`loralab sweep FILE --emit-slurm`).
 *
 * The script, and what it assumes:
 * - Task I of N runs shard I/N of the plan (runs whose plan index j has j % N == I) into its own
 *   database, results/<name>.shardI-of-N.db, so that no SQLite file is shared between nodes. N and
 *   the run count are numbers written into the script: re-submitting one task alone
 *   (`sbatch --array=3 x.sbatch`) runs shard 3 of N, never a shard of a smaller array. The task index
 *   is SLURM_ARRAY_TASK_ID; a task outside 0..N-1 stops with exit 2 and says why.
 * - `#SBATCH --chdir` is the checkout the script was emitted in (an absolute path; --chdir DIR
 *   overrides), so the script can be submitted from anywhere; results/, the data and the base cache
 *   are on a filesystem every node sees (the comment block says so). With slurm.local_db the task's
 *   database lives on node-local disk (SLURM_TMPDIR, else TMPDIR, else /tmp) and is copied back
 *   atomically when the task ends.
 * - Logs go to results/slurm/<name>.task<I>.log with --open-mode=append: a requeued or re-submitted
 *   task appends, never replaces, its first attempt's log.
 * - --cpus-per-task is the threads per run; --mem is the largest run's memory estimate (engine's
 *   model_memory_estimate, pretraining of the base included) with a 1.5x margin plus 512 MiB;
 *   --time is slurm.time when set, else an estimate (stated in the script as a guess).
 * - Every string from the configuration or the command line is single-quoted for sh, or refused
 *   where it would land in an #SBATCH line or a comment it could break out of (a newline, a quote).
 */
#ifndef LL_SLURM_H
#define LL_SLURM_H

#include "core.h"
#include "grid.h"

typedef struct {
    int tasks;               /* array tasks; <= 0: one per run, at most 1000 */
    int threads;             /* threads per run (--cpus-per-task) */
    const char *chdir;       /* NULL: the current working directory */
    const char *partition;   /* NULL: the cluster's default */
    const char *account;
    int time_minutes;        /* 0: estimated */
    int mem_mb;              /* 0: estimated */
    int local_db;            /* database on node-local disk, copied back at the end */
    const char *const *extra; /* shell lines run before loralab (module loads); no newlines */
    int n_extra;
    char *extra_owned;        /* slurm.extra split into lines (slurm_options_from_doc), or NULL */
} SlurmOptions;

void slurm_options_defaults(SlurmOptions *o);
/* Fills from the file's slurm section (slurm.partition, account, time, mem, local_db, extra) what o
 * leaves unset, so the command line's flags win; slurm.extra's lines (a block of text, one command a
 * line, blank lines dropped) become o->extra. slurm_options_free releases them. */
void slurm_options_from_doc(const ConfigDoc *doc, SlurmOptions *o);
void slurm_options_free(SlurmOptions *o);

/* The shard database of a sweep: "results/<name>.shard<I>-of-<N>.db". */
void slurm_shard_db(const char *name, int shard_i, int shard_n, char *out, size_t cap);

/* Resources of one task: the largest run's memory (bytes) and the task's time (minutes). */
void slurm_estimate(const SweepPlan *plan, const SlurmOptions *o, double *mem_bytes, int *minutes);

/* Writes the array script for plan (config_path and the --set values as given) to out_path; the
 * folder for the task logs (results/slurm under chdir) is made. */
LLStatus slurm_emit(const SweepPlan *plan, const char *config_path, const char *const *sets, int n_sets,
                    const SlurmOptions *o, const char *out_path, LLError *err);

#endif
