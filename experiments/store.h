/* store: the results database. Every run of a sweep, its curves and its final numbers live in one
 * SQLite file (by convention `results/loralab.db`); this module is the only code that speaks SQL
 * to it (the report reads through the query functions below). C structs cross the boundary, never
 * SQL text, and every value reaches SQLite as a bound parameter.
 *
 * How the file is used
 *   - WAL journal (readers never block the one writer), a busy timeout (default 15 s), and every
 *     write in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a transaction
 *     never fails half-way with "database is locked" (a deferred BEGIN that reads, then writes,
 *     gets SQLITE_BUSY at once, ignoring the timeout). A write still busy after the timeout is
 *     retried a few times with a short back-off; after that it returns LL_ERR_BUSY with a message
 *     that names the file and says another process holds the lock. Nothing already committed is
 *     lost, and buffered metrics stay buffered for the next flush.
 *   - One host only: WAL and SQLite's locks do not work over NFS. Give each SLURM task its own
 *     database on local disk and join them with store_merge (`loralab merge-db`).
 *   - `PRAGMA application_id` is 0x4C6F5241 ("LoRA"); `PRAGMA user_version` is the schema version.
 *     A writable open migrates an older file inside one BEGIN IMMEDIATE transaction (re-reading the
 *     version under the lock, so several processes opening a new file at once migrate it once). A
 *     file of a newer version is refused: "database X has schema version N, this loralab knows up
 *     to M; upgrade loralab". A file that is SQLite but not loralab's is refused, never altered.
 *
 * Schema, version 4 (all tables STRICT; times are unix seconds as REAL)
 *
 *   sweeps        id INTEGER PK, name TEXT UNIQUE NOT NULL, config_path TEXT, config_text TEXT,
 *                 created REAL NOT NULL, updated REAL NOT NULL
 *   runs          id INTEGER PK, sweep_id -> sweeps, key TEXT (hash of the canonical resolved
 *                 config, seed included), UNIQUE (sweep_id, key), config_json TEXT, method TEXT,
 *                 r INTEGER, alpha REAL, targets TEXT ("q_proj,v_proj"), lr REAL, seed INTEGER,
 *                 status TEXT (see below), attempt INTEGER (claims so far), created REAL,
 *                 started REAL, ended REAL, host TEXT, pid INTEGER,
 *                 trainable_params, total_params, peak_mem_bytes INTEGER,
 *                 tokens_per_s, wall_s, train_loss, eval_loss, eval_ppl, accuracy, macro_f1 REAL,
 *                 error TEXT, adapter_dir TEXT,
 *                 best_step INTEGER, best_metric REAL, best_metric_name TEXT ('accuracy' for
 *                 classification, 'loss' for language modelling): the best validation evaluation
 *                 (step 0 = before any update; a NaN evaluation is never best),
 *                 kept_step INTEGER: the step whose weights adapter_dir holds (best_step under
 *                 train.keep: best, the last step under train.keep: last),
 *                 test_loss, test_accuracy, test_macro_f1 REAL: the kept weights on the task's
 *                 test split, test_note TEXT: why they are absent (a task folder without a test
 *                 split), else NULL.
 *                 eval_loss, eval_ppl, accuracy and macro_f1 are the LAST validation evaluation.
 *                 Final numbers are NULL when absent (accuracy and macro_f1 outside
 *                 classification) or NaN (a diverged run's loss: its status says which), and a
 *                 NULL reads back as NaN; ±Inf is stored as is.
 *                 Version 1 had none of the columns from best_step on; store_open adds them to
 *                 an older file (NULL in its runs, which kept their last weights untested).
 *                 eval_ctx TEXT (version 4): the run's evaluation context, which names the base
 *                 evaluations (base_evals) its eval sets' numbers compare with; NULL without eval sets.
 *   metrics       run_id -> runs, step INTEGER, split TEXT ('train' | 'eval' | 'test', or the name
 *                 of an eval set: 1-31 characters of letters, digits, '_', '.', '-', not starting
 *                 with '.' or '-'; version 4 relaxed the CHECK in place, as version 3 the status's),
 *                 name TEXT ('loss', 'lr', 'grad_norm', 'accuracy', ...), value REAL,
 *                 is_nan INTEGER (0 | 1), t REAL (when logged); PRIMARY KEY (run_id, split, name,
 *                 step), WITHOUT ROWID. SQLite turns a bound NaN into NULL, so a NaN is stored as
 *                 value NULL with is_nan = 1 (a CHECK keeps the pair consistent) and reads back as
 *                 NaN. ±Inf are ordinary REALs; every other double reads back bit for bit, except
 *                 -0.0, which SQLite stores as 0. Re-inserting a (run, split, name, step) replaces
 *                 the value: idempotent.
 *   adalora_ranks run_id -> runs, layer INTEGER, module TEXT ('q_proj', ...), rank INTEGER (final),
 *                 init_rank INTEGER; PRIMARY KEY (run_id, layer, module).
 *   artifacts     run_id -> runs, kind TEXT ('adapter' | 'model' | 'figure'), path TEXT;
 *                 PRIMARY KEY (run_id, kind, path).
 *   decisions     run_id -> runs, step INTEGER, policy TEXT ('asha' | 'median'), rung INTEGER (ASHA),
 *                 metric TEXT, value REAL, threshold REAL, n_compared INTEGER, decision TEXT
 *                 ('continue' | 'stop'), t REAL; PRIMARY KEY (run_id, step). Early stopping's record:
 *                 kept when a run is claimed again (a resumed run gets its decisions back), dropped
 *                 by --retry-pruned. runs.bracket (version 3) names the runs a run is compared with.
 *   base_evals    sweep_id -> sweeps, ctx TEXT, eval_set TEXT, name TEXT ('loss', 'ppl', 'accuracy',
 *                 'macro_f1'), value REAL, is_nan INTEGER, t REAL; PRIMARY KEY (sweep_id, ctx,
 *                 eval_set, name) (version 4). The base model's numbers on an eval set, measured once
 *                 per sweep and evaluation context: ctx says what the number depends on besides the
 *                 set (the base folder, precision, sequence length, rows evaluated; see run.c), and
 *                 a run's runs.eval_ctx picks its row, so forgetting on a set = the run's loss there
 *                 (split = the set's name) minus the base's. Kept when runs are claimed again (they
 *                 are the base's, not a run's); NaN as in metrics.
 *   diagnostics   run_id -> runs, layer INTEGER, module TEXT ('q_proj', ...), name TEXT, value REAL
 *                 NOT NULL; PRIMARY KEY (run_id, layer, module, name) (version 4). Spectral
 *                 diagnostics of each adapted matrix at the end of a run (analysis/diagnostics.h):
 *                 names 'intruders', 'k', 'min_max_cos', 'eff_rank', 'dw_fro', 'w0_fro', 'd_mag', 'd_dir'.
 *   Child rows are deleted with their run (ON DELETE CASCADE; foreign keys are on).
 *
 * Run state machine (runs.status)
 *
 *     (none)      --store_add_run-->                       pending
 *     pending     --store_claim_run-->                     running   (attempt 1)
 *     running     --store_finish_run-->                    done | pruned | failed | diverged | interrupted
 *     running     --store_mark_running_interrupted-->      interrupted (owner gone, or Ctrl-C)
 *     failed | diverged | interrupted --store_claim_run--> running   (attempt + 1)
 *     done, pruned final (pruned: stopped by early stopping; store_reopen_pruned makes it interrupted)
 *
 *   - `done` is final: store_claim_run refuses it (claimed = 0), and so does a `running` row whose
 *     owner (host, pid) is alive on this host. A `running` row of a dead process, or of another
 *     host (possible only in a merged database), may be claimed.
 *   - Claiming sets host, pid, started and attempt + 1, clears the previous attempt's finals,
 *     and deletes the run's metrics, ranks, artifacts and diagnostics, so a resumed run never
 *     mixes rows of an interrupted attempt with its own; a run that resumes from a checkpoint of
 *     step k (store_claim_run_resuming) keeps its metric rows of steps <= k, which that
 *     checkpoint's state produced (the run then trims again once it has read the checkpoint:
 *     store_trim_metrics, all rows when it refused it).
 *   - store_finish_run accepts `running` (and `interrupted`, for a worker that finishes after the
 *     sweep marked it on Ctrl-C; its real outcome wins) and writes, in one transaction, the
 *     buffered metrics, the final numbers, `ended` and the new status (done, failed, diverged,
 *     interrupted).
 *
 * Ownership: every string passed in is copied; rows returned by the query functions belong to the
 * caller (store_free_runs, store_free_artifacts; free() for metric and rank arrays). A Store is
 * used by one thread. SQLite connections must not cross fork(): a process that forks workers
 * closes its Stores first (and reopens after), and each worker opens its own. store_open in a
 * child that inherited an open Store fails with LL_ERR_STATE; store_close there frees memory only.
 */
#ifndef LL_STORE_H
#define LL_STORE_H

#include <stdint.h>

#include "core.h"
#include "early_stop.h"

#define STORE_SCHEMA_VERSION 5
#define STORE_DEFAULT_PATH "results/loralab.db"
#define STORE_DEFAULT_BUSY_MS 15000
#define STORE_METRIC_BATCH 64 /* buffered metric rows written per transaction */
#define STORE_SPLIT_MAX 32    /* bytes of a metric split with its NUL: eval sets' names have 1-31 */

typedef struct Store Store;

/* Opens (readonly = 0: creates and migrates when needed) the database at path. A read-only open of
 * a missing file is LL_ERR_IO; a foreign or corrupt file LL_ERR_FORMAT; a newer schema
 * LL_ERR_FORMAT with the upgrade message. */
LLStatus store_open(const char *path, int readonly, Store **out, LLError *err);
/* Flushes buffered metrics (best effort: call store_flush first to see errors) and closes. */
void store_close(Store *s);
/* How long one attempt waits for the write lock (ms); the default is STORE_DEFAULT_BUSY_MS. */
void store_set_busy_timeout(Store *s, int ms);
int store_schema_version(const Store *s);
const char *store_path(const Store *s);

/* A sweep by name: created, or its config path and text updated. */
LLStatus store_upsert_sweep(Store *s, const char *name, const char *config_path,
                            const char *config_text, int64_t *sweep_id /* OUT */, LLError *err);

typedef struct {
    const char *key;         /* hash of the canonical resolved config (seed included) */
    const char *config_json; /* canonical resolved config */
    const char *method;      /* "lora", "adalora", "vera", "full", ... */
    const char *targets;     /* "q_proj,v_proj"; NULL = "" */
    int r;
    double alpha, lr;        /* finite */
    int64_t seed;
} RunInfo;

/* Adds a `pending` run keyed by (sweep, key), or finds the existing one (its status is kept).
 * The same key with a different config_json is LL_ERR_STATE (a hash collision or a bug). */
LLStatus store_add_run(Store *s, int64_t sweep_id, const RunInfo *info, int64_t *run_id /* OUT */,
                       LLError *err);
/* status = "" and run_id = 0 when the run is absent. */
LLStatus store_run_status(Store *s, int64_t sweep_id, const char *key, char status[16],
                          int64_t *run_id /* OUT, may be NULL */, LLError *err);
/* Marks the run `running` for this host and process (see the state machine). claimed = 0 when it
 * is `done` or owned by a live process on this host. Unknown run id: LL_ERR_STATE. */
LLStatus store_claim_run(Store *s, int64_t run_id, int *claimed /* OUT */, LLError *err);
/* The same for a run that will resume from its checkpoint at step keep_through (run.h,
 * run_resume_step): its metric rows of steps <= keep_through are kept, every later one deleted
 * (keep_through < 0: all deleted, as store_claim_run). */
LLStatus store_claim_run_resuming(Store *s, int64_t run_id, int keep_through, int *claimed /* OUT */,
                                  LLError *err);
/* Deletes the run's metric rows (buffered ones included) of steps past `after` (< 0: all): what
 * a run that resumed at step `after` (or restarted, refusing its checkpoint) does not recompute. */
LLStatus store_trim_metrics(Store *s, int64_t run_id, int after, LLError *err);

/* Metrics are buffered and written STORE_METRIC_BATCH rows per transaction, on store_flush and on
 * store_finish_run. Any double is accepted (NaN and ±Inf round-trip). split is "train", "eval",
 * "test" or an eval set's name (store_split_name_ok); name is at most 63 bytes. On LL_ERR_BUSY the
 * rows stay buffered for the next flush. */
LLStatus store_add_metric(Store *s, int64_t run_id, int step, const char *split, const char *name,
                          double value, LLError *err);
LLStatus store_flush(Store *s, LLError *err);

typedef struct {
    const char *status;      /* "done", "failed", "diverged" or "interrupted" */
    double tokens_per_s, wall_s;
    int64_t trainable, total, peak_mem; /* negative = unknown */
    double train_loss, eval_loss, eval_ppl, accuracy, macro_f1; /* NaN = absent */
    const char *error;       /* NULL when none */
    const char *adapter_dir; /* NULL when none; also recorded as an `adapter` artifact */
} RunResult;

/* The best validation evaluation, the kept weights and their test metrics (schema version 2).
 * Every field is absent when zero, so a zeroed RunKept records NULLs. */
typedef struct {
    const char *best_metric_name; /* "accuracy" | "loss"; NULL: no best (best_step, best_metric unused) */
    int64_t best_step;
    double best_metric;
    int has_kept;                 /* kept_step is known */
    int64_t kept_step;
    int has_test;                 /* the test_* numbers were measured (a NaN inside: NULL) */
    double test_loss, test_accuracy, test_macro_f1;
    const char *test_note;        /* NULL when none */
} RunKept;

/* One transaction (synchronous=FULL): buffered metrics, final numbers, ended, status; with kept
 * (may be NULL: all NULL) the columns from best_step on. */
LLStatus store_finish_run_kept(Store *s, int64_t run_id, const RunResult *res, const RunKept *kept,
                               LLError *err);
LLStatus store_finish_run(Store *s, int64_t run_id, const RunResult *res, LLError *err); /* kept NULL */
/* AdaLoRA's final rank of one adapted module (upsert). module is at most 31 bytes. */
LLStatus store_add_rank(Store *s, int64_t run_id, int layer, const char *module, int rank,
                        int init_rank, LLError *err);
/* kind is "adapter", "model" or "figure" (upsert). */
LLStatus store_add_artifact(Store *s, int64_t run_id, const char *kind, const char *path,
                            LLError *err);
/* Marks `running` rows of the sweep (sweep_id <= 0: of every sweep) on this host whose process is
 * gone, or is this process, as `interrupted`. Used at sweep start (stale rows of a killed sweep)
 * and on Ctrl-C after the workers were reaped. n_marked may be NULL. */
LLStatus store_mark_running_interrupted(Store *s, int64_t sweep_id, int *n_marked, LLError *err);

/* One run as read back. Absent numbers: NaN for doubles, -1 for integers; absent text: NULL. */
typedef struct {
    int64_t id, sweep_id;
    char *sweep, *key, *config_json, *method, *targets;
    int r;
    double alpha, lr;
    int64_t seed;
    char status[16];
    int attempt;
    double created, started, ended;
    char *host;
    int64_t pid;
    int64_t trainable, total, peak_mem;
    double tokens_per_s, wall_s, train_loss, eval_loss, eval_ppl, accuracy, macro_f1;
    char *error, *adapter_dir;
    int64_t best_step, kept_step;                   /* -1 when NULL */
    double best_metric;
    char *best_metric_name;
    double test_loss, test_accuracy, test_macro_f1;
    char *test_note;
    char *eval_ctx;                                 /* NULL when the run has no eval sets */
} RunRow;

/* Runs of one sweep (sweep_name NULL: all), ordered by sweep id, then run id. */
LLStatus store_list_runs(Store *s, const char *sweep_name, RunRow **rows, int *n, LLError *err);
void store_free_runs(RunRow *rows, int n);

/* The runs table as SQLite holds it: every column of runs (but sweep_id), the sweep's name second,
 * each value with its storage class (NULL for absent or NaN finals). Rows of one sweep (NULL: all),
 * ordered as store_list_runs. v[row * n_cols + col]; free with store_table_free. */
typedef enum { STORE_NULL, STORE_INT, STORE_REAL, STORE_TEXT } StoreType;
typedef struct {
    StoreType type;
    int64_t i;
    double f;
    char *s;
} StoreValue;
typedef struct {
    int n_rows, n_cols;
    char **cols;
    StoreValue *v;
} StoreTable;
LLStatus store_runs_table(Store *s, const char *sweep_name, StoreTable *t, LLError *err);
void store_table_free(StoreTable *t);

/* One curve, ordered by step; NaN where NaN was logged. Free both arrays with free(). */
LLStatus store_get_metrics(Store *s, int64_t run_id, const char *split, const char *name,
                           int **steps, double **values, int *n, LLError *err);

typedef struct {
    int layer;
    char module[32];
    int rank, init_rank;
} RankRow;
/* Ordered by layer, then module. Free with free(). */
LLStatus store_list_ranks(Store *s, int64_t run_id, RankRow **rows, int *n, LLError *err);

typedef struct {
    char kind[16];
    char *path;
} ArtifactRow;
LLStatus store_list_artifacts(Store *s, int64_t run_id, ArtifactRow **rows, int *n, LLError *err);
void store_free_artifacts(ArtifactRow *rows, int n);

/* Joins the database at in_path into s, idempotently. Sweeps match by name, runs by (sweep name,
 * key). A new run is copied with its metrics, ranks, artifacts, decisions and diagnostics; a
 * sweep's base evaluations are copied where s has none for the same (sweep, ctx, set, name). An
 * existing run is replaced
 * (row and children) only when the incoming status ranks higher: done > diverged > failed >
 * interrupted > running > pending; so `done` wins over any other status, ties keep what s has,
 * and merging the same file twice changes nothing. counts (may be NULL) says how many runs were
 * added (new here), upgraded (replaced by a higher status) and left unchanged. */
typedef struct {
    int added, upgraded, unchanged;
} StoreMergeCounts;
LLStatus store_merge(Store *s, const char *in_path, StoreMergeCounts *counts, LLError *err);

/* Holds the write lock (BEGIN EXCLUSIVE) until store_unlock: for maintenance such as copying
 * the file consistently, and for tests of lock contention. Other writers wait, then get
 * LL_ERR_BUSY; readers go on (WAL). */
LLStatus store_lock_exclusive(Store *s, LLError *err);
LLStatus store_unlock(Store *s, LLError *err);

/* ---- eval sets (task.eval_sets) and the base's numbers on them (schema version 4) ----
 * A split name the metrics table takes: train, eval, test, or a name of 1 to STORE_SPLIT_MAX - 1
 * characters of letters, digits, '_', '.', '-' that does not start with '.' or '-'. */
int store_split_name_ok(const char *split);
/* The same without train, eval and test: what an eval set may be called. */
int store_eval_set_name_ok(const char *name);
/* Sets runs.eval_ctx (NULL clears it). Unknown run: LL_ERR_STATE. */
LLStatus store_set_eval_ctx(Store *s, int64_t run_id, const char *ctx, LLError *err);
/* The base's value of metric `name` on eval set `set` for this run's sweep and evaluation context:
 * found = 0 (value NaN) when none is recorded (or the run has no context). */
LLStatus store_run_base_eval(Store *s, int64_t run_id, const char *set, const char *name, double *value, int *found,
                             LLError *err);
/* Records (upsert) the base's value for the run's sweep and evaluation context, which must be set
 * (LL_ERR_STATE otherwise). NaN round-trips. */
LLStatus store_add_base_eval(Store *s, int64_t run_id, const char *set, const char *name, double value,
                             LLError *err);
typedef struct {
    char *sweep, *ctx;
    char set[STORE_SPLIT_MAX];
    char name[64];
    double value; /* NaN where NaN was recorded */
} BaseEvalRow;
/* The base evaluations of one sweep (NULL: all), ordered by sweep, ctx, set, name. */
LLStatus store_list_base_evals(Store *s, const char *sweep_name, BaseEvalRow **rows, int *n, LLError *err);
void store_free_base_evals(BaseEvalRow *rows, int n);
/* The eval sets of a sweep (NULL: all): names with base evaluations or metrics rows, sorted.
 * Free with store_free_names. */
LLStatus store_list_eval_sets(Store *s, const char *sweep_name, char ***names, int *n, LLError *err);
void store_free_names(char **names, int n);

/* ---- spectral diagnostics of a run's adapted matrices (schema version 4) ---- */
typedef struct {
    int layer;
    char module[32]; /* "q_proj", ... */
    char name[32];   /* "intruders", "eff_rank", ... (see the schema above) */
    double value;    /* not NaN */
} DiagnosticRow;
/* Upserts n rows in one transaction; a NaN value or a row without module or name is LL_ERR_CONFIG
 * (nothing written). */
LLStatus store_add_diagnostics(Store *s, int64_t run_id, const DiagnosticRow *rows, int n, LLError *err);
/* A run's rows ordered by layer, module, name. Free with free(). */
LLStatus store_list_diagnostics(Store *s, int64_t run_id, DiagnosticRow **rows, int *n, LLError *err);

/* ---- early stopping (experiments/early_stop.h) ----
 * A run's bracket (runs.bracket): runs compare only with runs of their bracket in their sweep.
 * store_es_decide takes the decision for run at `step` in one write transaction, so that two
 * workers never decide against a half-recorded rung: when the run already has a decision at that
 * step (it was decided, then killed before the decision took effect), that decision is returned
 * again (*replayed = 1); else ASHA at `rung` against the values the bracket's other runs recorded
 * there, or the median rule against their eval curves of `metric` (the metrics table's name, split
 * 'eval'), with `own` the run's curve up to step; the decision is stored either way. The run's
 * buffered metrics are flushed first. */
LLStatus store_set_bracket(Store *s, int64_t run_id, const char *bracket, LLError *err);
/* --retry-pruned: the sweep's pruned runs become `interrupted` (claimable) and lose their decisions. */
LLStatus store_reopen_pruned(Store *s, int64_t sweep_id, int *n_reopened, LLError *err);
LLStatus store_es_decide(Store *s, int64_t run_id, const EarlyStopPolicy *p, const char *metric, int step, int rung,
                         double value, const EsCurve *own, EsDecision *out, int *replayed, LLError *err);

#endif
