/* early_stop: the pruning policies of a sweep, as pure functions over validation curves, so that the
 * decisions a sweep takes while it runs and the replay of a finished sweep are one code path.
 *
 * Policies (sweep.early_stop.type):
 * - ASHA, asynchronous successive halving (Li et al. 2020, "A System for Massively Parallel
 *   Hyperparameter Tuning"): rungs at min_steps * eta^k steps, k = 0, 1, ... while below max_steps.
 *   A run reaching rung k continues only if it is in the top 1/eta of the values recorded at rung k
 *   so far, itself included; runs never wait for others. As in Optuna's SuccessiveHalvingPruner, the
 *   cut is the value at index max(0, n / eta - 1) of the n recorded values sorted best first, so a
 *   run that reaches a rung alone (or among fewer than eta) continues when it is the best there.
 * - Median stopping rule (Golovin et al. 2017, Google Vizier): at an evaluation step s >= min_steps,
 *   stop a run whose best value up to s is worse than the median of the other runs' running averages
 *   (the mean of their values up to s), counting only runs that reached s; no decision until
 *   grace_runs other runs have.
 *
 * Invariants:
 * - Only runs of one bracket are compared (runs that differ only in the searched keys; the caller
 *   forms brackets, by default one per seed, so seed noise never decides).
 * - A NaN or infinite value is the worst value there is: a run whose metric is not finite at a
 *   decision is stopped, and such values sort last among the recorded ones.
 * - Ties continue: a value equal to the cut or the median is not worse.
 * - Every decision, continue or stop, comes with the threshold and the number of values it was
 *   computed from, so that it can be stored and audited.
 * - Deterministic: the same curves in the same order give the same decisions (es_replay). */
#ifndef LL_EARLY_STOP_H
#define LL_EARLY_STOP_H

typedef enum { ES_NONE = 0, ES_ASHA, ES_MEDIAN } EarlyStopType;

/* What a sweep's YAML asks for (sweep.early_stop, or W&B's early_terminate mapped onto ASHA). */
typedef struct {
    EarlyStopType type;
    char metric[32];      /* eval_loss | eval_ppl | accuracy | macro_f1 */
    int min_steps, reduction_factor, grace_runs;
    int line;             /* where it was given (0: not given) */
    char note[160];       /* how a W&B block was read, for the dry run and the sweep's log */
} EarlyStopSpec;

/* The metric's row in the metrics table (split "eval") and whether higher is better; 0 when the
 * name is not a validation metric. */
int es_metric(const char *metric, const char **name, int *higher_better);

typedef struct {
    EarlyStopType type;
    int higher_better;    /* from the metric: accuracy and macro-F1 yes, losses no */
    int min_steps;        /* ASHA's r (first rung); median: no decision before it */
    int reduction_factor; /* ASHA's eta (>= 2) */
    int grace_runs;       /* median: other runs that must have reached the step */
    int max_steps;        /* train.steps: no rung at or past it */
} EarlyStopPolicy;

typedef struct {
    int stop;         /* 1: stop the run here; 0: continue */
    int rung;         /* ASHA: the rung's index; median: -1 */
    double value;     /* the run's value the decision used (median: its best so far) */
    double threshold; /* ASHA: the cut; median: the median of running averages (NaN when none) */
    int n_compared;   /* values the threshold came from (ASHA: including the run's own) */
} EsDecision;

/* One run's validation curve so far: strictly increasing steps, values may be NaN. */
typedef struct {
    const int *steps;
    const double *values;
    int n;
} EsCurve;

const char *es_type_name(EarlyStopType t); /* "none" | "asha" | "median" */

/* ASHA's rungs below max_steps into steps (up to cap); returns how many there are. */
int es_rungs(const EarlyStopPolicy *p, int *steps, int cap);

/* The ASHA rung whose decision falls at evaluation step `step` of a run whose previous evaluation
 * was at `prev_step` (-1 when none): the highest rung in (prev_step, step], or -1. An evaluation
 * schedule that skips a rung's exact step decides at the first evaluation past it. */
int es_asha_rung_at(const EarlyStopPolicy *p, int prev_step, int step);

/* ASHA at rung `rung` for a run whose value there is `value`, given the values recorded at that
 * rung by earlier runs of the bracket (not including this one). */
EsDecision es_asha_decide(const EarlyStopPolicy *p, int rung, double value, const double *recorded, int n_recorded);

/* The median rule at evaluation step `step` of `run` (its curve up to and including step), given
 * the curves of the bracket's other runs (any length; only those that reached step count). */
EsDecision es_median_decide(const EarlyStopPolicy *p, int step, const EsCurve *run, const EsCurve *others,
                            int n_others);

/* ---- replay: a policy applied to finished curves --------------------------------------------- */

typedef struct {
    EsCurve curve;    /* the whole curve the run produced without pruning */
    int bracket;      /* runs compare only within a bracket */
    int config;       /* configuration id (runs differing only by seed share it), for the best */
    double final;     /* the metric the run finished with (NaN when it failed) */
    int total_steps;  /* steps the run trained */
} EsRun;

typedef struct {
    int *stop_step;     /* per run: the step it would have stopped at, or -1 (ran to the end) */
    long long steps_run, steps_total;
    int n_stopped;
    int best_true;      /* configuration with the best mean final metric over its runs */
    int best_pruned;    /* the same among configurations none of whose runs was stopped; -1 none */
    int best_pruned_rank; /* 1-based rank of best_pruned among all configurations by mean final */
    double best_true_value, best_pruned_value;
} EsReplay;

/* Applies the policy to runs taken in the given order (the order they finished), each run walking
 * its evaluations and being decided against the records of the runs before it, exactly as a sweep
 * with one worker would decide. es_replay_free releases out. */
void es_replay(const EarlyStopPolicy *p, const EsRun *runs, int n, EsReplay *out);
void es_replay_free(EsReplay *r);

#endif
