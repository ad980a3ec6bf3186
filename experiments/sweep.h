/* sweep: a config's sweep section -> the list of runs (the plan), and the runner that executes it.
 *
 * The plan (the expanded list of points) comes from grid.h.
 * The index of a run is its position in this final list; shard I of N takes the indices with
 * index % N == I, so the shards of one plan are disjoint and their union is the plan.
 *
 * The runner (sweep_run): open the store, add the shard's runs as `pending` (idempotent), mark
 * stale `running` rows interrupted, skip `done` runs (and `diverged` ones: the same config would
 * diverge again; --retry-diverged re-runs them), build each needed base model once, then run the
 * rest in worker processes, one process per run, at most `jobs` at a time. The parent never runs
 * engine code and never holds a database connection across fork(): base building happens in a
 * child too, so no OpenMP/BLAS thread pool or SQLite lock state is ever copied into a worker.
 * A worker claims its run, runs it and records the outcome; if it dies (signal, exit) without
 * recording, the parent records the run as failed with the cause. SIGINT/SIGTERM: no new
 * workers; the signal is forwarded, workers stop at their next step, write their run's checkpoint
 * and record `interrupted`; a second signal kills them (SIGKILL); the parent then marks any run
 * still `running` as interrupted and returns LL_ERR_INTERRUPTED (exit 130). The handlers are
 * installed for the duration of sweep_run only (the stop flag is the one piece of static state).
 * A worker claims a run that has a checkpoint keeping its metric rows up to the checkpoint's step
 * (run_resume_step), and the run resumes from it (run.h): an interrupted, killed or requeued
 * sweep, run again, continues each unfinished run where its checkpoint left it.
 */
#ifndef LL_SWEEP_H
#define LL_SWEEP_H

#include <stdio.h>

#include "config.h"
#include "core.h"
#include "grid.h"
#include "run.h"

/* Shards. "I/N" with 0 <= I < N, given by --shard only: SLURM's variables never shard a sweep by
 * themselves (the script of experiments/slurm.h passes --shard). */
int sweep_in_shard(int index, int shard_i, int shard_n);
LLStatus sweep_parse_shard(const char *text, int *shard_i, int *shard_n, LLError *err);

/* The dry-run table: index, run key and the varying keys (a '-' where the method ignores one;
 * adapter.method shows the variant: dora, not lora), then a count line and, when the plan holds
 * more than one method, the runs per method. Only the shard's runs when shard_n > 0. */
void sweep_print_plan(FILE *f, const SweepPlan *plan, int shard_i, int shard_n);

/* The run's row for the store: its key, canonical config, variant name (dora, ...), targets
 * (into targets[cap]), final rank, and alpha and lr as the config wrote them (a double 0.003, not
 * the float field widened), so that `WHERE lr = 0.003` finds it. */
void sweep_run_info(const RunConfig *rc, char *targets, size_t cap, RunInfo *info);

typedef LLStatus (*SweepRunFn)(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err);
typedef LLStatus (*SweepBaseFn)(const RunConfig *rc, const RunEnv *env, char *path, size_t cap, LLError *err);

typedef struct {
    int jobs, threads;    /* 0: from the cores (see sweep_pick_parallelism) */
    const char *db_path;  /* NULL: results/<name>.db */
    int shard_i, shard_n; /* shard_n = 0: every run */
    int progress;         /* 1 progress line, 0 plain log lines, -1 (default) when the log is a terminal */
    int retry_diverged;
    int retry_pruned;     /* run again the runs early stopping stopped (their decisions dropped) */
    SweepRunFn run_fn;    /* NULL: run_execute (tests inject fakes) */
    SweepBaseFn base_fn;  /* NULL: run_ensure_base */
    FILE *log;            /* NULL: stderr */
} SweepOptions;

void sweep_options_defaults(SweepOptions *o);

typedef struct {
    int total;          /* runs in this shard */
    int skipped;        /* done (or diverged) before this invocation */
    int done, failed, diverged, interrupted;
    int pruned;         /* stopped by early stopping (final, like done) */
    int busy;           /* owned by another live process */
    int exit_code;      /* 0 every run done, 1 a run failed/diverged/not done, 130 interrupted */
} SweepSummary;

/* jobs x threads for a given number of runs: both 0 -> jobs = min(cores, runs), threads =
 * cores / jobs (tiny models run best one thread a process); one given -> the other from cores
 * (--jobs 1 alone: the one job gets every core). Returns why, in words, for the sweep's first
 * line (a static buffer), with a warning when jobs x threads oversubscribes the cores. */
const char *sweep_pick_parallelism(int n_runs, int *jobs, int *threads);

/* Runs the plan (see the header comment). Returns LL_OK when the sweep went through (individual
 * runs may have failed: see sum->exit_code), LL_ERR_INTERRUPTED on a signal, or the error that
 * stopped it (database, base model). */
LLStatus sweep_run(const ConfigDoc *doc, const SweepPlan *plan, const SweepOptions *o, SweepSummary *sum,
                   LLError *err);


/* `--replay-early-stop` (experiments/replay.c): doc's sweep.early_stop applied to the done runs of
 * plan in the sweep's database (o->db_path or results/<name>.db), in the order they ended; prints
 * the steps saved, the best configuration with and without pruning, and the runs it would stop. */
LLStatus sweep_replay_early_stop(const ConfigDoc *doc, const SweepPlan *plan, const SweepOptions *o, FILE *f,
                                 LLError *err);

#endif
