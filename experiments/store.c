/* store: the results database (schema, state machine and usage rules are in store.h).
 *
 * Invariants kept here:
 *   - Every write runs through tx_run: BEGIN IMMEDIATE, the body, COMMIT; on SQLITE_BUSY the whole
 *     body is rolled back and retried (at most STORE_TX_ATTEMPTS times, each waiting up to the busy
 *     timeout), so a body must not change in-memory state: callers update memory after tx_run
 *     returned LL_OK.
 *   - Values reach SQLite only through sqlite3_bind_*. The only SQL text built at run time is a
 *     few PRAGMAs (they take no parameters) whose operands are constants of this file: the schema
 *     name ("main" or "src"), the application id and the schema version.
 *   - Every statement is reset right after use, so no read snapshot outlives the call that took it
 *     (an open snapshot would block WAL checkpoints and pin old data).
 *   - A NaN never reaches a bind_double: SQLite would store it as NULL and lose the distinction.
 */
#define _XOPEN_SOURCE 700
#include "store.h"
#include "buildinfo.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STORE_APPLICATION_ID 0x4C6F5241 /* "LoRA" at header offset 68: marks our files */
#define STORE_TX_ATTEMPTS 4            /* write attempts, each waiting up to busy_ms */

/* How many Stores this process has open, and which process opened them. SQLite keeps per-process
 * lock bookkeeping (one record per database inode) that a fork()ed child inherits without the
 * locks themselves; a connection opened in the child beside an inherited one trusts that record
 * and can corrupt the file (sqlite.org/howtocorrupt.html, "Carrying an open database connection
 * across a fork()"). This count lets store_open refuse that case with a clear message instead. */
static _Atomic int g_open_stores = 0;
static _Atomic pid_t g_open_pid = 0;

/* ---- schema and migrations ---------------------------------------------------------------- */

/* Version 1: see store.h for the meaning of every column. */
static const char SCHEMA_V1[] =
    "CREATE TABLE sweeps ("
    "  id          INTEGER PRIMARY KEY,"
    "  name        TEXT NOT NULL UNIQUE,"
    "  config_path TEXT,"
    "  config_text TEXT,"
    "  created     REAL NOT NULL,"
    "  updated     REAL NOT NULL"
    ") STRICT;"
    "CREATE TABLE runs ("
    "  id          INTEGER PRIMARY KEY,"
    "  sweep_id    INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,"
    "  key         TEXT NOT NULL,"
    "  config_json TEXT NOT NULL,"
    "  method      TEXT NOT NULL,"
    "  r           INTEGER NOT NULL,"
    "  alpha       REAL NOT NULL,"
    "  targets     TEXT NOT NULL,"
    "  lr          REAL NOT NULL,"
    "  seed        INTEGER NOT NULL,"
    "  status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN"
    "                ('pending','running','done','failed','diverged','interrupted')),"
    "  attempt     INTEGER NOT NULL DEFAULT 0,"
    "  created     REAL NOT NULL,"
    "  started     REAL,"
    "  ended       REAL,"
    "  host        TEXT,"
    "  pid         INTEGER,"
    "  trainable_params INTEGER,"
    "  total_params     INTEGER,"
    "  peak_mem_bytes   INTEGER,"
    "  tokens_per_s REAL,"
    "  wall_s       REAL,"
    "  train_loss   REAL,"
    "  eval_loss    REAL,"
    "  eval_ppl     REAL,"
    "  accuracy     REAL,"
    "  macro_f1     REAL,"
    "  error        TEXT,"
    "  adapter_dir  TEXT,"
    "  UNIQUE (sweep_id, key)"
    ") STRICT;"
    "CREATE INDEX runs_status ON runs(status);"
    "CREATE TABLE metrics ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  split  TEXT NOT NULL CHECK (split IN ('train','eval','test')),"
    "  name   TEXT NOT NULL,"
    "  step   INTEGER NOT NULL CHECK (step >= 0),"
    "  value  REAL,"
    "  is_nan INTEGER NOT NULL DEFAULT 0,"
    "  t      REAL NOT NULL,"
    "  PRIMARY KEY (run_id, split, name, step),"
    "  CHECK ((is_nan = 1 AND value IS NULL) OR (is_nan = 0 AND value IS NOT NULL))"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE adalora_ranks ("
    "  run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  layer     INTEGER NOT NULL,"
    "  module    TEXT NOT NULL,"
    "  rank      INTEGER NOT NULL,"
    "  init_rank INTEGER NOT NULL,"
    "  PRIMARY KEY (run_id, layer, module)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE artifacts ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  kind   TEXT NOT NULL CHECK (kind IN ('adapter','model','figure')),"
    "  path   TEXT NOT NULL,"
    "  PRIMARY KEY (run_id, kind, path)"
    ") STRICT, WITHOUT ROWID;";

/* Version 2: the kept weights (best or last) of a run and their test-split metrics. Runs recorded
 * under version 1 keep NULL in these columns: they kept their last weights and were never
 * evaluated on a test split. */
static const char SCHEMA_V2[] =
    "ALTER TABLE runs ADD COLUMN best_step INTEGER;"
    "ALTER TABLE runs ADD COLUMN best_metric REAL;"
    "ALTER TABLE runs ADD COLUMN best_metric_name TEXT"
    "  CHECK (best_metric_name IS NULL OR best_metric_name IN ('accuracy','loss'));"
    "ALTER TABLE runs ADD COLUMN kept_step INTEGER;"
    "ALTER TABLE runs ADD COLUMN test_loss REAL;"
    "ALTER TABLE runs ADD COLUMN test_accuracy REAL;"
    "ALTER TABLE runs ADD COLUMN test_macro_f1 REAL;"
    "ALTER TABLE runs ADD COLUMN test_note TEXT;";

/* Version 3: early stopping (experiments/early_stop.h). A run's bracket, the decisions, and the
 * status `pruned` (the CHECK on runs.status gains it in rewrite_status_check). */
static const char SCHEMA_V3[] =
    "ALTER TABLE runs ADD COLUMN bracket TEXT;"
    "CREATE TABLE decisions ("
    "  run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  step       INTEGER NOT NULL CHECK (step >= 0),"
    "  policy     TEXT NOT NULL CHECK (policy IN ('asha','median')),"
    "  rung       INTEGER,"
    "  metric     TEXT NOT NULL,"
    "  value      REAL,"
    "  threshold  REAL,"
    "  n_compared INTEGER NOT NULL,"
    "  decision   TEXT NOT NULL CHECK (decision IN ('continue','stop')),"
    "  t          REAL NOT NULL,"
    "  PRIMARY KEY (run_id, step)"
    ") STRICT;"
    "CREATE INDEX decisions_rung ON decisions(rung);";

/* Version 4: evaluation sets (task.eval_sets) and spectral diagnostics. An eval set's metrics are
 * rows of metrics under the set's name as split (the CHECK on metrics.split is relaxed in
 * rewrite_split_check); the base model's numbers on each set, once per sweep and evaluation
 * context (runs.eval_ctx names a run's); one row per (run, adapted matrix, diagnostic). */
static const char SCHEMA_V4[] =
    "ALTER TABLE runs ADD COLUMN eval_ctx TEXT;"
    "CREATE TABLE base_evals ("
    "  sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,"
    "  ctx      TEXT NOT NULL,"
    "  eval_set TEXT NOT NULL,"
    "  name     TEXT NOT NULL,"
    "  value    REAL,"
    "  is_nan   INTEGER NOT NULL DEFAULT 0,"
    "  t        REAL NOT NULL,"
    "  PRIMARY KEY (sweep_id, ctx, eval_set, name),"
    "  CHECK ((is_nan = 1 AND value IS NULL) OR (is_nan = 0 AND value IS NOT NULL))"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE diagnostics ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  layer  INTEGER NOT NULL CHECK (layer >= 0),"
    "  module TEXT NOT NULL,"
    "  name   TEXT NOT NULL,"
    "  value  REAL NOT NULL,"
    "  PRIMARY KEY (run_id, layer, module, name)"
    ") STRICT, WITHOUT ROWID;";

/* Version 5: the build that ran a run (engine/buildinfo.h: version, git commit, compiler, BLAS and
 * its kernels, bf16 kernel, CPU), written when the run is claimed; NULL for older runs. */
static const char SCHEMA_V5[] = "ALTER TABLE runs ADD COLUMN build TEXT;";

static LLStatus rewrite_status_check(Store *s, LLError *err);
static LLStatus rewrite_split_check(Store *s, LLError *err);

/* MIGRATIONS[v] takes a file from version v to v + 1: its DDL first, then (when set) a C step for
 * data that SQL alone cannot convert. To add a version: bump STORE_SCHEMA_VERSION in store.h and
 * append {"ALTER TABLE ... ;", NULL} here; store_open then upgrades every older file in place,
 * inside the same transaction that bumps user_version, so a crash leaves the old version intact.
 * A new file runs every step from version 0, so new and migrated files have one schema. */
typedef struct {
    const char *sql;
    LLStatus (*fn)(Store *s, LLError *err);
} Migration;

static const Migration MIGRATIONS[STORE_SCHEMA_VERSION] = {
    {SCHEMA_V1, NULL},
    {SCHEMA_V2, NULL},
    {SCHEMA_V3, rewrite_status_check},
    {SCHEMA_V4, rewrite_split_check},
    {SCHEMA_V5, NULL},
};

/* ---- prepared statements ------------------------------------------------------------------- */

typedef enum {
    ST_SWEEP_UPSERT,
    ST_RUN_INSERT,
    ST_RUN_BY_KEY,
    ST_RUN_EXISTS,
    ST_RUN_OWNER,
    ST_RUN_CLAIM,
    ST_RUN_FINISH,
    ST_DEL_METRICS,
    ST_DEL_RANKS,
    ST_DEL_ARTIFACTS,
    ST_DEL_DIAGNOSTICS,
    ST_METRIC_UPSERT,
    ST_RANK_UPSERT,
    ST_ARTIFACT_ADD,
    ST_RUNNING_ON_HOST,
    ST_MARK_INTERRUPTED,
    ST_LIST_RUNS,
    ST_GET_METRICS,
    ST_LIST_RANKS,
    ST_LIST_ARTIFACTS,
    ST_COUNT
} StmtId;

/* The columns of a run that travel with it in a merge (all but id, sweep_id and key). */
#define RUN_COPY_COLS                                                                             \
    "config_json, method, r, alpha, targets, lr, seed, status, attempt, created, started, ended, " \
    "host, pid, trainable_params, total_params, peak_mem_bytes, tokens_per_s, wall_s, "           \
    "train_loss, eval_loss, eval_ppl, accuracy, macro_f1, error, adapter_dir, best_step, "       \
    "best_metric, best_metric_name, kept_step, test_loss, test_accuracy, test_macro_f1, test_note, bracket, eval_ctx, build"

static const char *const STMT_SQL[ST_COUNT] = {
    [ST_SWEEP_UPSERT] =
        "INSERT INTO main.sweeps(name, config_path, config_text, created, updated)"
        " VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT(name) DO UPDATE SET"
        " config_path = excluded.config_path, config_text = excluded.config_text,"
        " updated = excluded.updated RETURNING id",
    [ST_RUN_INSERT] =
        "INSERT INTO main.runs(sweep_id, key, config_json, method, r, alpha, targets, lr, seed,"
        " status, attempt, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', 0, ?10)"
        " ON CONFLICT(sweep_id, key) DO NOTHING",
    [ST_RUN_BY_KEY] =
        "SELECT id, status, config_json FROM main.runs WHERE sweep_id = ?1 AND key = ?2",
    [ST_RUN_EXISTS] = "SELECT 1 FROM main.runs WHERE id = ?1",
    [ST_RUN_OWNER] = "SELECT status, host, pid FROM main.runs WHERE id = ?1",
    [ST_RUN_CLAIM] =
        "UPDATE main.runs SET status = 'running', host = ?2, pid = ?3, started = ?4,"
        " attempt = attempt + 1, ended = NULL, trainable_params = NULL, total_params = NULL,"
        " peak_mem_bytes = NULL, tokens_per_s = NULL, wall_s = NULL, train_loss = NULL,"
        " eval_loss = NULL, eval_ppl = NULL, accuracy = NULL, macro_f1 = NULL, error = NULL,"
        " adapter_dir = NULL, best_step = NULL, best_metric = NULL, best_metric_name = NULL,"
        " kept_step = NULL, test_loss = NULL, test_accuracy = NULL, test_macro_f1 = NULL,"
        " test_note = NULL, build = ?5 WHERE id = ?1",
    [ST_RUN_FINISH] =
        "UPDATE main.runs SET status = ?2, ended = ?3, tokens_per_s = ?4, wall_s = ?5,"
        " trainable_params = ?6, total_params = ?7, peak_mem_bytes = ?8, train_loss = ?9,"
        " eval_loss = ?10, eval_ppl = ?11, accuracy = ?12, macro_f1 = ?13, error = ?14,"
        " adapter_dir = ?15, best_step = ?16, best_metric = ?17, best_metric_name = ?18,"
        " kept_step = ?19, test_loss = ?20, test_accuracy = ?21, test_macro_f1 = ?22,"
        " test_note = ?23 WHERE id = ?1",
    [ST_DEL_METRICS] = "DELETE FROM main.metrics WHERE run_id = ?1 AND step > ?2",
    [ST_DEL_RANKS] = "DELETE FROM main.adalora_ranks WHERE run_id = ?1",
    [ST_DEL_ARTIFACTS] = "DELETE FROM main.artifacts WHERE run_id = ?1",
    [ST_DEL_DIAGNOSTICS] = "DELETE FROM main.diagnostics WHERE run_id = ?1",
    [ST_METRIC_UPSERT] =
        "INSERT INTO main.metrics(run_id, step, split, name, value, is_nan, t)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(run_id, split, name, step) DO UPDATE SET"
        " value = excluded.value, is_nan = excluded.is_nan, t = excluded.t",
    [ST_RANK_UPSERT] =
        "INSERT INTO main.adalora_ranks(run_id, layer, module, rank, init_rank)"
        " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(run_id, layer, module) DO UPDATE SET"
        " rank = excluded.rank, init_rank = excluded.init_rank",
    [ST_ARTIFACT_ADD] =
        "INSERT INTO main.artifacts(run_id, kind, path) VALUES (?1, ?2, ?3)"
        " ON CONFLICT DO NOTHING",
    [ST_RUNNING_ON_HOST] =
        "SELECT id, pid FROM main.runs WHERE status = 'running' AND host = ?1"
        " AND (?2 <= 0 OR sweep_id = ?2)",
    [ST_MARK_INTERRUPTED] =
        "UPDATE main.runs SET status = 'interrupted', ended = ?2, error = ?3"
        " WHERE id = ?1 AND status = 'running'",
    [ST_LIST_RUNS] =
        "SELECT r.id, r.sweep_id, s.name, r.key, r.config_json, r.method, r.targets, r.r, r.alpha,"
        " r.lr, r.seed, r.status, r.attempt, r.created, r.started, r.ended, r.host, r.pid,"
        " r.trainable_params, r.total_params, r.peak_mem_bytes, r.tokens_per_s, r.wall_s,"
        " r.train_loss, r.eval_loss, r.eval_ppl, r.accuracy, r.macro_f1, r.error, r.adapter_dir,"
        " r.best_step, r.best_metric, r.best_metric_name, r.kept_step, r.test_loss,"
        " r.test_accuracy, r.test_macro_f1, r.test_note, r.eval_ctx"
        " FROM main.runs r JOIN main.sweeps s ON s.id = r.sweep_id"
        " WHERE ?1 IS NULL OR s.name = ?1 ORDER BY r.sweep_id, r.id",
    [ST_GET_METRICS] =
        "SELECT step, value, is_nan FROM main.metrics"
        " WHERE run_id = ?1 AND split = ?2 AND name = ?3 ORDER BY step",
    [ST_LIST_RANKS] =
        "SELECT layer, module, rank, init_rank FROM main.adalora_ranks WHERE run_id = ?1"
        " ORDER BY layer, module",
    [ST_LIST_ARTIFACTS] =
        "SELECT kind, path FROM main.artifacts WHERE run_id = ?1 ORDER BY kind, path",
};

/* ---- the Store ----------------------------------------------------------------------------- */

typedef struct {
    int64_t run_id;
    int step;
    char split[STORE_SPLIT_MAX];
    char name[64];
    double value;
    double t;
} MetricRow;

struct Store {
    sqlite3 *db;
    char *path;
    int readonly;
    int busy_ms;
    int version;
    int locked; /* inside store_lock_exclusive */
    pid_t owner; /* the process that opened it */
    int counted; /* included in g_open_stores */
    char host[256];
    sqlite3_stmt *stmt[ST_COUNT];
    MetricRow *buf; /* metric rows not yet committed */
    size_t nbuf, capbuf;
    int64_t known_run; /* last run id checked to exist: skips a lookup per metric row */
};

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int is_busy(int rc) {
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/* kill(pid, 0) succeeds for a live process we may signal, and fails with EPERM for a live one we
 * may not; only ESRCH means gone. A zombie (killed, not yet reaped: a SIGKILLed worker whose parent
 * died too waits for init to reap it) also answers kill(), but will never finish its run, so
 * /proc's state letter Z counts as gone. */
static int pid_alive(int64_t pid) {
    if (pid <= 0 || pid > INT_MAX) return 0;
    if (!(kill((pid_t)pid, 0) == 0 || errno == EPERM)) return 0;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1; /* no /proc: trust kill() */
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold spaces */
    return !(close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X'));
}

static LLStatus busy_error(const Store *s, const char *what, LLError *err) {
    return ll_err(err, LL_ERR_BUSY,
                  "database '%s' is locked: another process holds the lock and kept it past the "
                  "busy timeout (%d attempts of %d ms) while %s; retry when it has finished, or "
                  "give each process its own database (--db) and join them with `loralab merge-db`",
                  s->path, STORE_TX_ATTEMPTS, s->busy_ms, what);
}

/* Turns a failed SQLite call into a status and a message naming the file and the operation. */
static LLStatus db_fail(const Store *s, int rc, const char *what, LLError *err) {
    int prim = rc & 0xff;
    if (is_busy(rc)) return busy_error(s, what, err);
    if (prim == SQLITE_NOTADB)
        return ll_err(err, LL_ERR_FORMAT, "'%s' is not a loralab database (not an SQLite file)",
                      s->path);
    LLStatus code = LL_ERR_IO;
    if (prim == SQLITE_CONSTRAINT) code = LL_ERR_STATE;
    else if (prim == SQLITE_CORRUPT) code = LL_ERR_FORMAT;
    else if (prim == SQLITE_NOMEM) code = LL_ERR_NOMEM;
    return ll_err(err, code, "database '%s': %s: %s (%s)", s->path, what, sqlite3_errmsg(s->db),
                  sqlite3_errstr(rc));
}

/* A statement ready for binding: prepared once (persistent), reset and unbound on every call. */
static sqlite3_stmt *stmt_get(Store *s, StmtId id, LLError *err, LLStatus *st) {
    if (!s->stmt[id]) {
        int rc = sqlite3_prepare_v3(s->db, STMT_SQL[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmt[id], NULL);
        if (rc != SQLITE_OK) {
            *st = db_fail(s, rc, "preparing a statement", err);
            return NULL;
        }
    }
    sqlite3_reset(s->stmt[id]);
    sqlite3_clear_bindings(s->stmt[id]);
    *st = LL_OK;
    return s->stmt[id];
}

/* Steps a statement that returns no rows, then resets it; SQLITE_DONE becomes SQLITE_OK. */
static int step_once(sqlite3_stmt *q) {
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        }
    }
    int rc2 = sqlite3_reset(q);
    return rc == SQLITE_DONE ? SQLITE_OK : (rc2 != SQLITE_OK ? rc2 : rc);
}

static void bind_text_or_null(sqlite3_stmt *q, int i, const char *v) {
    if (v) sqlite3_bind_text(q, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(q, i);
}

/* NaN means absent: NULL. ±Inf is a valid REAL for SQLite and is kept. */
static void bind_real_or_null(sqlite3_stmt *q, int i, double v) {
    if (isnan(v)) sqlite3_bind_null(q, i);
    else sqlite3_bind_double(q, i, v);
}

static void bind_count_or_null(sqlite3_stmt *q, int i, int64_t v) {
    if (v < 0) sqlite3_bind_null(q, i);
    else sqlite3_bind_int64(q, i, v);
}

static double col_real(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NAN : sqlite3_column_double(q, i);
}

static int64_t col_i64(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(q, i);
}

static char *col_text_dup(sqlite3_stmt *q, int i) {
    const unsigned char *t = sqlite3_column_text(q, i);
    return t ? ll_strdup((const char *)t) : NULL;
}

static void col_text_copy(sqlite3_stmt *q, int i, char *dst, size_t cap) {
    const unsigned char *t = sqlite3_column_text(q, i);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

/* Runs SQL without parameters (DDL, PRAGMAs, BEGIN/COMMIT), returning the SQLite code. */
static int exec_sql(Store *s, const char *sql) {
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

/* Reads one integer from a PRAGMA or a parameterless SELECT. */
static int query_int(Store *s, const char *sql, int64_t *out) {
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(q, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        *out = 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc;
}

static void rollback(Store *s) {
    if (!sqlite3_get_autocommit(s->db)) exec_sql(s, "ROLLBACK");
}

/* The back-off between attempts grows and is staggered by pid, so that writers that timed out
 * together do not retry in lock step. */
static void backoff(int attempt) {
    sleep_ms(20 * (1 << attempt) + (int)(getpid() % 23));
}

typedef LLStatus (*TxBody)(Store *s, void *ctx, LLError *err);

/* The one way to write (see the file header). what completes "... while <what>". */
static LLStatus tx_run(Store *s, const char *what, TxBody body, void *ctx, LLError *err) {
    if (s->readonly)
        return ll_err(err, LL_ERR_STATE, "database '%s' is open read-only; cannot %s", s->path,
                      what);
    if (s->locked) return body(s, ctx, err); /* the write lock is already ours */
    for (int attempt = 0; attempt < STORE_TX_ATTEMPTS; attempt++) {
        if (attempt > 0) backoff(attempt);
        int rc = exec_sql(s, "BEGIN IMMEDIATE");
        if (is_busy(rc)) continue;
        if (rc != SQLITE_OK) return db_fail(s, rc, what, err);
        LLStatus st = body(s, ctx, err);
        if (st == LL_OK) {
            rc = exec_sql(s, "COMMIT");
            if (rc == SQLITE_OK) return LL_OK;
            LLStatus fail = db_fail(s, rc, what, err);
            rollback(s);
            if (is_busy(rc)) continue;
            return fail;
        }
        rollback(s);
        if (st != LL_ERR_BUSY) return st;
    }
    return busy_error(s, what, err);
}

/* ---- open, migrate, close ------------------------------------------------------------------ */

static LLStatus newer_error(const Store *s, int64_t v, LLError *err) {
    return ll_err(err, LL_ERR_FORMAT,
                  "database '%s' has schema version %lld, this loralab knows up to %d; "
                  "upgrade loralab",
                  s->path, (long long)v, STORE_SCHEMA_VERSION);
}

/* Checks application_id, user_version and whether tables exist; sets *version. schema is "main"
 * or "src" (a constant, so building the PRAGMA text is safe). */
static LLStatus check_identity(Store *s, const char *schema, const char *path, int64_t *version,
                               LLError *err) {
    char sql[160];
    int64_t app = 0, ntab = 0;
    snprintf(sql, sizeof sql, "PRAGMA %s.application_id", schema);
    int rc = query_int(s, sql, &app);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof sql, "PRAGMA %s.user_version", schema);
        rc = query_int(s, sql, version);
    }
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM %s.sqlite_master WHERE name NOT LIKE 'sqlite_%%'", schema);
        rc = query_int(s, sql, &ntab);
    }
    if ((rc & 0xff) == SQLITE_NOTADB)
        return ll_err(err, LL_ERR_FORMAT, "'%s' is not a loralab database (not an SQLite file)",
                      path);
    if (rc != SQLITE_OK) return db_fail(s, rc, "reading the schema version", err);
    if (app != 0 && app != STORE_APPLICATION_ID)
        return ll_err(err, LL_ERR_FORMAT,
                      "'%s' is an SQLite file of another program (application_id 0x%08llx), not a "
                      "loralab database",
                      path, (unsigned long long)app);
    if (*version == 0 && ntab > 0)
        return ll_err(err, LL_ERR_FORMAT,
                      "'%s' is an SQLite database with tables but no loralab schema version; "
                      "refusing to touch it",
                      path);
    if (*version > STORE_SCHEMA_VERSION) {
        if (strcmp(schema, "main") == 0) return newer_error(s, *version, err);
        return ll_err(err, LL_ERR_FORMAT,
                      "database '%s' has schema version %lld, this loralab knows up to %d; "
                      "upgrade loralab",
                      path, (long long)*version, STORE_SCHEMA_VERSION);
    }
    return LL_OK;
}

static LLStatus migrate_body(Store *s, void *ctx, LLError *err) {
    (void)ctx;
    int64_t v = 0;
    /* Re-read under the write lock: another process may have migrated since we looked. */
    LLStatus st = check_identity(s, "main", s->path, &v, err);
    if (st != LL_OK) return st;
    for (; v < STORE_SCHEMA_VERSION; v++) {
        int rc = exec_sql(s, MIGRATIONS[v].sql);
        if (rc != SQLITE_OK) return db_fail(s, rc, "migrating the schema", err);
        if (MIGRATIONS[v].fn && (st = MIGRATIONS[v].fn(s, err)) != LL_OK) return st;
    }
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %d",
             STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
    int rc = exec_sql(s, sql);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "setting the schema version", err);
}

/* WAL needs a moment of exclusive access to switch; on a new file that several processes open at
 * once this can be busy without the busy handler being called, hence the loop. */
static LLStatus set_wal(Store *s, LLError *err) {
    double deadline = ll_now() + s->busy_ms / 1000.0;
    for (;;) {
        int rc = exec_sql(s, "PRAGMA journal_mode = WAL");
        if (rc == SQLITE_OK) return LL_OK;
        if (!is_busy(rc) || ll_now() > deadline) return db_fail(s, rc, "switching to WAL", err);
        sleep_ms(10 + (int)(getpid() % 7));
    }
}

static LLStatus open_steps(Store *s, LLError *err) {
    int flags = s->readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(s->path, &s->db, flags, NULL);
    if (rc != SQLITE_OK)
        return ll_err(err, LL_ERR_IO, "cannot open database '%s': %s", s->path,
                      s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, s->busy_ms);
    LLStatus st;
    if (!s->readonly && (st = set_wal(s, err)) != LL_OK) return st;
    /* Foreign keys are per connection and off by default. synchronous=NORMAL in WAL keeps the file
     * consistent and skips an fsync per metric batch; store_finish_run raises it to FULL. */
    rc = exec_sql(s, s->readonly ? "PRAGMA foreign_keys = ON"
                                 : "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL");
    if (rc != SQLITE_OK) return db_fail(s, rc, "configuring the connection", err);
    int64_t v = 0;
    if ((st = check_identity(s, "main", s->path, &v, err)) != LL_OK) return st;
    if (v < STORE_SCHEMA_VERSION) {
        if (s->readonly) {
            if (v == 0)
                return ll_err(err, LL_ERR_FORMAT, "'%s' is empty: not a loralab database yet",
                              s->path);
            return ll_err(err, LL_ERR_FORMAT,
                          "database '%s' has schema version %lld and needs migrating to %d: open "
                          "it once for writing (any loralab command that writes to it)",
                          s->path, (long long)v, STORE_SCHEMA_VERSION);
        }
        if ((st = tx_run(s, "migrating the schema", migrate_body, NULL, err)) != LL_OK) return st;
    }
    s->version = STORE_SCHEMA_VERSION;
    return LL_OK;
}

/* Creates the folder that will hold a new database file (results/ by default). */
static LLStatus make_parent(const char *path, LLError *err) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return LL_OK;
    size_t n = (size_t)(slash - path);
    char *dir = ll_malloc(n + 1, 1);
    memcpy(dir, path, n);
    dir[n] = '\0';
    LLStatus st = ll_file_exists(dir) ? LL_OK : ll_mkdirs(dir, err);
    free(dir);
    return st;
}

LLStatus store_open(const char *path, int readonly, Store **out, LLError *err) {
    *out = NULL;
    if (!path || !*path) return ll_err(err, LL_ERR_CONFIG, "empty database path");
    if (readonly && !ll_file_exists(path))
        return ll_err(err, LL_ERR_IO, "no database at '%s'", path);
    if (g_open_stores > 0 && g_open_pid != getpid())
        return ll_err(err, LL_ERR_STATE,
                      "cannot open '%s': a results database opened before fork() is still open in "
                      "this child process; SQLite connections must not cross fork(), so close the "
                      "Store before forking and open one in each process",
                      path);
    if (!readonly) {
        LLStatus st = make_parent(path, err);
        if (st != LL_OK) return st;
    }
    Store *s = ll_calloc(1, sizeof *s);
    s->owner = getpid();
    s->path = ll_strdup(path);
    s->readonly = readonly;
    s->busy_ms = STORE_DEFAULT_BUSY_MS;
    if (gethostname(s->host, sizeof s->host - 1) != 0) snprintf(s->host, sizeof s->host, "unknown");
    LLStatus st = open_steps(s, err);
    if (st != LL_OK) {
        store_close(s);
        return st;
    }
    if (g_open_stores++ == 0) g_open_pid = s->owner;
    s->counted = 1;
    *out = s;
    return LL_OK;
}

void store_close(Store *s) {
    if (!s) return;
    if (s->owner != getpid()) {
        /* Inherited across fork(): closing the connection here could checkpoint or unlink files
         * the parent still uses. Only our memory is released; the parent closes its own. */
        free(s->buf);
        free(s->path);
        free(s);
        return;
    }
    if (s->db) {
        if (s->locked) {
            exec_sql(s, "COMMIT");
            s->locked = 0;
        }
        if (s->nbuf > 0) store_flush(s, NULL);
        for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->stmt[i]);
        sqlite3_close_v2(s->db);
    }
    if (s->counted) g_open_stores--;
    free(s->buf);
    free(s->path);
    free(s);
}

void store_set_busy_timeout(Store *s, int ms) {
    s->busy_ms = ms > 0 ? ms : 1;
    sqlite3_busy_timeout(s->db, s->busy_ms);
}

int store_schema_version(const Store *s) { return s->version; }
const char *store_path(const Store *s) { return s->path; }

/* ---- sweeps and runs ------------------------------------------------------------------------ */

typedef struct {
    const char *name, *config_path, *config_text;
    int64_t id;
} SweepCtx;

static LLStatus sweep_body(Store *s, void *vctx, LLError *err) {
    SweepCtx *c = vctx;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_SWEEP_UPSERT, err, &st);
    if (!q) return st;
    sqlite3_bind_text(q, 1, c->name, -1, SQLITE_TRANSIENT);
    bind_text_or_null(q, 2, c->config_path);
    bind_text_or_null(q, 3, c->config_text);
    sqlite3_bind_double(q, 4, unix_now());
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) c->id = sqlite3_column_int64(q, 0);
    int rc2 = step_once(q);
    if (rc != SQLITE_ROW) return db_fail(s, rc == SQLITE_DONE ? rc2 : rc, "recording a sweep", err);
    if (rc2 != SQLITE_OK) return db_fail(s, rc2, "recording a sweep", err);
    return LL_OK;
}

LLStatus store_upsert_sweep(Store *s, const char *name, const char *config_path,
                            const char *config_text, int64_t *sweep_id, LLError *err) {
    if (!name || !*name) return ll_err(err, LL_ERR_CONFIG, "a sweep needs a name");
    SweepCtx c = {name, config_path, config_text, 0};
    LLStatus st = tx_run(s, "recording a sweep", sweep_body, &c, err);
    if (st == LL_OK && sweep_id) *sweep_id = c.id;
    return st;
}

typedef struct {
    int64_t sweep_id;
    const RunInfo *info;
    int64_t id;
} AddRunCtx;

static LLStatus add_run_body(Store *s, void *vctx, LLError *err) {
    AddRunCtx *c = vctx;
    const RunInfo *in = c->info;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RUN_INSERT, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, c->sweep_id);
    sqlite3_bind_text(q, 2, in->key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, in->config_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 4, in->method, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(q, 5, in->r);
    sqlite3_bind_double(q, 6, in->alpha);
    sqlite3_bind_text(q, 7, in->targets ? in->targets : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(q, 8, in->lr);
    sqlite3_bind_int64(q, 9, in->seed);
    sqlite3_bind_double(q, 10, unix_now());
    int rc = step_once(q);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return ll_err(err, LL_ERR_STATE,
                      "database '%s': cannot add run '%s': no sweep with id %lld", s->path,
                      in->key, (long long)c->sweep_id);
    if (rc != SQLITE_OK) return db_fail(s, rc, "adding a run", err);
    if (!(q = stmt_get(s, ST_RUN_BY_KEY, err, &st))) return st;
    sqlite3_bind_int64(q, 1, c->sweep_id);
    sqlite3_bind_text(q, 2, in->key, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        st = db_fail(s, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, "adding a run", err);
        sqlite3_reset(q);
        return st;
    }
    c->id = sqlite3_column_int64(q, 0);
    const char *cfg = (const char *)sqlite3_column_text(q, 2);
    st = LL_OK;
    if (!cfg || strcmp(cfg, in->config_json) != 0)
        st = ll_err(err, LL_ERR_STATE,
                    "database '%s': run key '%s' is already recorded with a different config "
                    "(a hash collision or a key computed from a non-canonical config)",
                    s->path, in->key);
    sqlite3_reset(q);
    return st;
}

LLStatus store_add_run(Store *s, int64_t sweep_id, const RunInfo *info, int64_t *run_id,
                       LLError *err) {
    if (!info || !info->key || !*info->key || !info->config_json || !info->method)
        return ll_err(err, LL_ERR_CONFIG, "a run needs a key, a config and a method");
    if (!isfinite(info->alpha) || !isfinite(info->lr))
        return ll_err(err, LL_ERR_CONFIG, "run '%s': alpha (%g) and lr (%g) must be finite",
                      info->key, info->alpha, info->lr);
    AddRunCtx c = {sweep_id, info, 0};
    LLStatus st = tx_run(s, "adding a run", add_run_body, &c, err);
    if (st == LL_OK && run_id) *run_id = c.id;
    return st;
}

LLStatus store_run_status(Store *s, int64_t sweep_id, const char *key, char status[16],
                          int64_t *run_id, LLError *err) {
    status[0] = '\0';
    if (run_id) *run_id = 0;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RUN_BY_KEY, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, sweep_id);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if (run_id) *run_id = sqlite3_column_int64(q, 0);
        col_text_copy(q, 1, status, 16);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? LL_OK : db_fail(s, rc, "reading a run's status", err);
}

typedef struct {
    int64_t run_id;
    int keep_through; /* metric rows of steps <= this survive the claim (-1: none) */
    int claimed;
} ClaimCtx;

/* The run's rows of one attempt: every rank, artifact and diagnostic, and its metric rows past
 * step keep_through (-1: all of them). */
static LLStatus delete_children(Store *s, int64_t run_id, int keep_through, LLError *err) {
    static const StmtId dels[] = {ST_DEL_METRICS, ST_DEL_RANKS, ST_DEL_ARTIFACTS, ST_DEL_DIAGNOSTICS};
    for (size_t i = 0; i < sizeof dels / sizeof dels[0]; i++) {
        LLStatus st;
        sqlite3_stmt *q = stmt_get(s, dels[i], err, &st);
        if (!q) return st;
        sqlite3_bind_int64(q, 1, run_id);
        if (dels[i] == ST_DEL_METRICS) sqlite3_bind_int64(q, 2, keep_through);
        int rc = step_once(q);
        if (rc != SQLITE_OK) return db_fail(s, rc, "deleting an earlier attempt's rows", err);
    }
    return LL_OK;
}

static LLStatus claim_body(Store *s, void *vctx, LLError *err) {
    ClaimCtx *c = vctx;
    c->claimed = 0;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RUN_OWNER, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, c->run_id);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(q);
        if (rc == SQLITE_DONE)
            return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path,
                          (long long)c->run_id);
        return db_fail(s, rc, "claiming a run", err);
    }
    char status[16], host[256];
    col_text_copy(q, 0, status, sizeof status);
    col_text_copy(q, 1, host, sizeof host);
    int64_t pid = col_i64(q, 2);
    sqlite3_reset(q);
    if (strcmp(status, "done") == 0 || strcmp(status, "pruned") == 0) return LL_OK; /* final */
    /* Another live process of this host owns it: leave it. A dead owner's row is stale. */
    if (strcmp(status, "running") == 0 && strcmp(host, s->host) == 0 && pid != (int64_t)getpid() &&
        pid_alive(pid))
        return LL_OK;
    if (!(q = stmt_get(s, ST_RUN_CLAIM, err, &st))) return st;
    sqlite3_bind_int64(q, 1, c->run_id);
    sqlite3_bind_text(q, 2, s->host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 3, (int64_t)getpid());
    sqlite3_bind_double(q, 4, unix_now());
    sqlite3_bind_text(q, 5, build_info(), -1, SQLITE_STATIC);
    rc = step_once(q);
    if (rc != SQLITE_OK) return db_fail(s, rc, "claiming a run", err);
    /* No rows of an interrupted attempt survive, but the metrics up to the checkpoint a resuming
     * run continues from. */
    if ((st = delete_children(s, c->run_id, c->keep_through, err)) != LL_OK) return st;
    c->claimed = 1;
    return LL_OK;
}

/* Drops buffered (uncommitted) metric rows of one run past step after (-1: all). */
static void drop_buffered(Store *s, int64_t run_id, int after) {
    size_t k = 0;
    for (size_t i = 0; i < s->nbuf; i++)
        if (s->buf[i].run_id != run_id || s->buf[i].step <= after) s->buf[k++] = s->buf[i];
    s->nbuf = k;
}

LLStatus store_claim_run_resuming(Store *s, int64_t run_id, int keep_through, int *claimed, LLError *err) {
    ClaimCtx c = {run_id, keep_through < 0 ? -1 : keep_through, 0};
    *claimed = 0;
    LLStatus st = tx_run(s, "claiming a run", claim_body, &c, err);
    if (st != LL_OK) return st;
    if (c.claimed) drop_buffered(s, run_id, c.keep_through);
    *claimed = c.claimed;
    return LL_OK;
}

LLStatus store_claim_run(Store *s, int64_t run_id, int *claimed, LLError *err) {
    return store_claim_run_resuming(s, run_id, -1, claimed, err);
}

typedef struct {
    int64_t run_id;
    int after;
} TrimCtx;

static LLStatus trim_body(Store *s, void *vctx, LLError *err) {
    TrimCtx *c = vctx;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_DEL_METRICS, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, c->run_id);
    sqlite3_bind_int64(q, 2, c->after);
    int rc = step_once(q);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "deleting an earlier attempt's metrics", err);
}

LLStatus store_trim_metrics(Store *s, int64_t run_id, int after, LLError *err) {
    TrimCtx c = {run_id, after < 0 ? -1 : after};
    drop_buffered(s, run_id, c.after);
    return tx_run(s, "deleting an earlier attempt's metrics", trim_body, &c, err);
}

/* ---- metrics -------------------------------------------------------------------------------- */

static LLStatus write_buffer(Store *s, LLError *err) {
    LLStatus st;
    for (size_t i = 0; i < s->nbuf; i++) {
        const MetricRow *m = &s->buf[i];
        sqlite3_stmt *q = stmt_get(s, ST_METRIC_UPSERT, err, &st);
        if (!q) return st;
        sqlite3_bind_int64(q, 1, m->run_id);
        sqlite3_bind_int(q, 2, m->step);
        sqlite3_bind_text(q, 3, m->split, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, m->name, -1, SQLITE_STATIC);
        /* The NaN convention of the schema: value NULL, is_nan 1. */
        if (isnan(m->value)) sqlite3_bind_null(q, 5);
        else sqlite3_bind_double(q, 5, m->value);
        sqlite3_bind_int(q, 6, isnan(m->value) ? 1 : 0);
        sqlite3_bind_double(q, 7, m->t);
        int rc = step_once(q);
        if (rc != SQLITE_OK) return db_fail(s, rc, "writing metrics", err);
    }
    return LL_OK;
}

static LLStatus flush_body(Store *s, void *ctx, LLError *err) {
    (void)ctx;
    return write_buffer(s, err);
}

LLStatus store_flush(Store *s, LLError *err) {
    if (s->nbuf == 0) return LL_OK;
    LLStatus st = tx_run(s, "writing metrics", flush_body, NULL, err);
    if (st == LL_OK) s->nbuf = 0;
    return st;
}

static LLStatus check_run_exists(Store *s, int64_t run_id, LLError *err) {
    if (run_id == s->known_run && run_id != 0) return LL_OK;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RUN_EXISTS, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, run_id);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_DONE)
        return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path,
                      (long long)run_id);
    if (rc != SQLITE_ROW) return db_fail(s, rc, "looking up a run", err);
    s->known_run = run_id;
    return LL_OK;
}

int store_split_name_ok(const char *split) {
    if (!split) return 0;
    if (strcmp(split, "train") == 0 || strcmp(split, "eval") == 0 || strcmp(split, "test") == 0) return 1;
    size_t n = strlen(split);
    if (n < 1 || n >= STORE_SPLIT_MAX || split[0] == '.' || split[0] == '-') return 0;
    for (const char *p = split; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.' || *p == '-'))
            return 0;
    return 1;
}

LLStatus store_add_metric(Store *s, int64_t run_id, int step, const char *split, const char *name,
                          double value, LLError *err) {
    /* Everything is checked here, not at flush: one bad row in the buffer would otherwise make
     * every later flush fail. */
    if (s->readonly)
        return ll_err(err, LL_ERR_STATE, "database '%s' is open read-only; cannot write metrics",
                      s->path);
    if (!store_split_name_ok(split))
        return ll_err(err, LL_ERR_CONFIG,
                      "metric split '%s' is not train, eval, test or an eval set's name (1-%d characters of "
                      "letters, digits, '_', '.', '-', not starting with '.' or '-')",
                      split ? split : "(null)", STORE_SPLIT_MAX - 1);
    if (!name || !*name || strlen(name) >= sizeof s->buf[0].name)
        return ll_err(err, LL_ERR_CONFIG, "metric name '%s' must be 1 to %zu bytes",
                      name ? name : "(null)", sizeof s->buf[0].name - 1);
    if (step < 0)
        return ll_err(err, LL_ERR_CONFIG, "metric '%s' has a negative step %d", name, step);
    LLStatus st = check_run_exists(s, run_id, err);
    if (st != LL_OK) return st;
    if (s->nbuf == s->capbuf) {
        s->capbuf = s->capbuf ? 2 * s->capbuf : STORE_METRIC_BATCH;
        s->buf = ll_realloc(s->buf, s->capbuf, sizeof *s->buf);
    }
    MetricRow *m = &s->buf[s->nbuf++];
    m->run_id = run_id;
    m->step = step;
    snprintf(m->split, sizeof m->split, "%s", split);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->value = value;
    m->t = unix_now();
    return s->nbuf >= STORE_METRIC_BATCH ? store_flush(s, err) : LL_OK;
}

/* ---- finishing, ranks, artifacts, interrupted runs ---------------------------------------- */

typedef struct {
    int64_t run_id;
    const RunResult *res;
    const RunKept *kept; /* never NULL here */
} FinishCtx;

static LLStatus add_artifact_row(Store *s, int64_t run_id, const char *kind, const char *path,
                                 LLError *err) {
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_ARTIFACT_ADD, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, run_id);
    sqlite3_bind_text(q, 2, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, path, -1, SQLITE_TRANSIENT);
    int rc = step_once(q);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path,
                      (long long)run_id);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "recording an artifact", err);
}

static LLStatus finish_body(Store *s, void *vctx, LLError *err) {
    FinishCtx *c = vctx;
    const RunResult *r = c->res;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RUN_OWNER, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, c->run_id);
    int rc = sqlite3_step(q);
    char status[16] = "";
    if (rc == SQLITE_ROW) col_text_copy(q, 0, status, sizeof status);
    sqlite3_reset(q);
    if (rc == SQLITE_DONE)
        return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path,
                      (long long)c->run_id);
    if (rc != SQLITE_ROW) return db_fail(s, rc, "finishing a run", err);
    if (strcmp(status, "running") != 0 && strcmp(status, "interrupted") != 0)
        return ll_err(err, LL_ERR_STATE,
                      "database '%s': run %lld is '%s', not 'running': claim it before "
                      "finishing it",
                      s->path, (long long)c->run_id, status);
    if ((st = write_buffer(s, err)) != LL_OK) return st;
    if (!(q = stmt_get(s, ST_RUN_FINISH, err, &st))) return st;
    sqlite3_bind_int64(q, 1, c->run_id);
    sqlite3_bind_text(q, 2, r->status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(q, 3, unix_now());
    bind_real_or_null(q, 4, r->tokens_per_s);
    bind_real_or_null(q, 5, r->wall_s);
    bind_count_or_null(q, 6, r->trainable);
    bind_count_or_null(q, 7, r->total);
    bind_count_or_null(q, 8, r->peak_mem);
    bind_real_or_null(q, 9, r->train_loss);
    bind_real_or_null(q, 10, r->eval_loss);
    bind_real_or_null(q, 11, r->eval_ppl);
    bind_real_or_null(q, 12, r->accuracy);
    bind_real_or_null(q, 13, r->macro_f1);
    bind_text_or_null(q, 14, r->error);
    bind_text_or_null(q, 15, r->adapter_dir);
    const RunKept *k = c->kept;
    bind_count_or_null(q, 16, k->best_metric_name ? k->best_step : -1);
    bind_real_or_null(q, 17, k->best_metric_name ? k->best_metric : NAN);
    bind_text_or_null(q, 18, k->best_metric_name);
    bind_count_or_null(q, 19, k->has_kept ? k->kept_step : -1);
    bind_real_or_null(q, 20, k->has_test ? k->test_loss : NAN);
    bind_real_or_null(q, 21, k->has_test ? k->test_accuracy : NAN);
    bind_real_or_null(q, 22, k->has_test ? k->test_macro_f1 : NAN);
    bind_text_or_null(q, 23, k->test_note);
    rc = step_once(q);
    if (rc != SQLITE_OK) return db_fail(s, rc, "finishing a run", err);
    if (r->adapter_dir) return add_artifact_row(s, c->run_id, "adapter", r->adapter_dir, err);
    return LL_OK;
}

static int valid_final_status(const char *st) {
    return st && (strcmp(st, "done") == 0 || strcmp(st, "failed") == 0 || strcmp(st, "diverged") == 0 ||
                  strcmp(st, "interrupted") == 0 || strcmp(st, "pruned") == 0);
}

LLStatus store_finish_run(Store *s, int64_t run_id, const RunResult *res, LLError *err) {
    return store_finish_run_kept(s, run_id, res, NULL, err);
}

LLStatus store_finish_run_kept(Store *s, int64_t run_id, const RunResult *res, const RunKept *kept,
                               LLError *err) {
    static const RunKept none = {0};
    if (!kept) kept = &none;
    if (!res || !valid_final_status(res->status))
        return ll_err(err, LL_ERR_CONFIG,
                      "a finished run's status must be done, failed, diverged or interrupted, "
                      "not '%s'",
                      res && res->status ? res->status : "(null)");
    if (kept->best_metric_name && strcmp(kept->best_metric_name, "accuracy") != 0 &&
        strcmp(kept->best_metric_name, "loss") != 0)
        return ll_err(err, LL_ERR_CONFIG, "a run's best metric is accuracy or loss, not '%s'",
                      kept->best_metric_name);
    if (s->readonly)
        return ll_err(err, LL_ERR_STATE, "database '%s' is open read-only; cannot finish a run",
                      s->path);
    /* The final status is the row resume decisions rest on: make its commit durable. */
    int full = !s->locked && exec_sql(s, "PRAGMA synchronous = FULL") == SQLITE_OK;
    FinishCtx c = {run_id, res, kept};
    LLStatus st = tx_run(s, "finishing a run", finish_body, &c, err);
    if (full) exec_sql(s, "PRAGMA synchronous = NORMAL");
    if (st == LL_OK) s->nbuf = 0;
    return st;
}

typedef struct {
    int64_t run_id;
    int layer, rank, init_rank;
    const char *module;
} RankCtx;

static LLStatus rank_body(Store *s, void *vctx, LLError *err) {
    RankCtx *c = vctx;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RANK_UPSERT, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, c->run_id);
    sqlite3_bind_int(q, 2, c->layer);
    sqlite3_bind_text(q, 3, c->module, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(q, 4, c->rank);
    sqlite3_bind_int(q, 5, c->init_rank);
    int rc = step_once(q);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path,
                      (long long)c->run_id);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "recording a rank", err);
}

LLStatus store_add_rank(Store *s, int64_t run_id, int layer, const char *module, int rank,
                        int init_rank, LLError *err) {
    if (!module || !*module || strlen(module) >= sizeof ((RankRow *)0)->module)
        return ll_err(err, LL_ERR_CONFIG, "module name '%s' must be 1 to %zu bytes",
                      module ? module : "(null)", sizeof ((RankRow *)0)->module - 1);
    if (layer < 0 || rank < 0 || init_rank < 0)
        return ll_err(err, LL_ERR_CONFIG, "layer %d, rank %d, init rank %d: none may be negative",
                      layer, rank, init_rank);
    RankCtx c = {run_id, layer, rank, init_rank, module};
    return tx_run(s, "recording a rank", rank_body, &c, err);
}

typedef struct {
    int64_t run_id;
    const char *kind, *path;
} ArtifactCtx;

static LLStatus artifact_body(Store *s, void *vctx, LLError *err) {
    ArtifactCtx *c = vctx;
    return add_artifact_row(s, c->run_id, c->kind, c->path, err);
}

LLStatus store_add_artifact(Store *s, int64_t run_id, const char *kind, const char *path,
                            LLError *err) {
    if (!kind || (strcmp(kind, "adapter") != 0 && strcmp(kind, "model") != 0 &&
                  strcmp(kind, "figure") != 0))
        return ll_err(err, LL_ERR_CONFIG, "artifact kind '%s' is not one of adapter, model, figure",
                      kind ? kind : "(null)");
    if (!path || !*path) return ll_err(err, LL_ERR_CONFIG, "an artifact needs a path");
    ArtifactCtx c = {run_id, kind, path};
    return tx_run(s, "recording an artifact", artifact_body, &c, err);
}

typedef struct {
    int64_t sweep_id;
    int n;
} MarkCtx;

static LLStatus mark_body(Store *s, void *vctx, LLError *err) {
    MarkCtx *c = vctx;
    c->n = 0;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_RUNNING_ON_HOST, err, &st);
    if (!q) return st;
    sqlite3_bind_text(q, 1, s->host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, c->sweep_id);
    /* Collect first, update after: the SELECT must not walk rows it is changing. */
    int64_t *ids = NULL, *pids = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t pid = col_i64(q, 1);
        if (pid == (int64_t)getpid() || !pid_alive(pid)) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                ids = ll_realloc(ids, cap, sizeof *ids);
                pids = ll_realloc(pids, cap, sizeof *pids);
            }
            ids[n] = sqlite3_column_int64(q, 0);
            pids[n++] = pid;
        }
    }
    sqlite3_reset(q);
    st = rc == SQLITE_DONE ? LL_OK : db_fail(s, rc, "marking interrupted runs", err);
    double now = unix_now();
    for (size_t i = 0; st == LL_OK && i < n; i++) {
        if (!(q = stmt_get(s, ST_MARK_INTERRUPTED, err, &st))) break;
        char msg[384];
        snprintf(msg, sizeof msg,
                 "interrupted: its process (pid %lld on %s) stopped before the run finished",
                 (long long)pids[i], s->host);
        sqlite3_bind_int64(q, 1, ids[i]);
        sqlite3_bind_double(q, 2, now);
        sqlite3_bind_text(q, 3, msg, -1, SQLITE_TRANSIENT);
        rc = step_once(q);
        if (rc != SQLITE_OK) st = db_fail(s, rc, "marking interrupted runs", err);
        else c->n += sqlite3_changes(s->db);
    }
    free(ids);
    free(pids);
    return st;
}

LLStatus store_mark_running_interrupted(Store *s, int64_t sweep_id, int *n_marked,
                                        LLError *err) {
    MarkCtx c = {sweep_id, 0};
    if (n_marked) *n_marked = 0;
    LLStatus st = tx_run(s, "marking interrupted runs", mark_body, &c, err);
    if (st == LL_OK && n_marked) *n_marked = c.n;
    return st;
}

/* ---- queries -------------------------------------------------------------------------------- */

/* Readers see committed rows only; flushing first makes a process's own metrics visible to it. */
static LLStatus flush_before_read(Store *s, LLError *err) {
    return (s->readonly || s->nbuf == 0) ? LL_OK : store_flush(s, err);
}

LLStatus store_list_runs(Store *s, const char *sweep_name, RunRow **rows, int *n, LLError *err) {
    *rows = NULL;
    *n = 0;
    LLStatus st = flush_before_read(s, err);
    if (st != LL_OK) return st;
    sqlite3_stmt *q = stmt_get(s, ST_LIST_RUNS, err, &st);
    if (!q) return st;
    bind_text_or_null(q, 1, sweep_name);
    RunRow *out = NULL;
    int cnt = 0, cap = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 32;
            out = ll_realloc(out, (size_t)cap, sizeof *out);
        }
        RunRow *r = &out[cnt++];
        memset(r, 0, sizeof *r);
        int i = 0;
        r->id = sqlite3_column_int64(q, i++);
        r->sweep_id = sqlite3_column_int64(q, i++);
        r->sweep = col_text_dup(q, i++);
        r->key = col_text_dup(q, i++);
        r->config_json = col_text_dup(q, i++);
        r->method = col_text_dup(q, i++);
        r->targets = col_text_dup(q, i++);
        r->r = sqlite3_column_int(q, i++);
        r->alpha = col_real(q, i++);
        r->lr = col_real(q, i++);
        r->seed = sqlite3_column_int64(q, i++);
        col_text_copy(q, i++, r->status, sizeof r->status);
        r->attempt = sqlite3_column_int(q, i++);
        r->created = col_real(q, i++);
        r->started = col_real(q, i++);
        r->ended = col_real(q, i++);
        r->host = col_text_dup(q, i++);
        r->pid = col_i64(q, i++);
        r->trainable = col_i64(q, i++);
        r->total = col_i64(q, i++);
        r->peak_mem = col_i64(q, i++);
        r->tokens_per_s = col_real(q, i++);
        r->wall_s = col_real(q, i++);
        r->train_loss = col_real(q, i++);
        r->eval_loss = col_real(q, i++);
        r->eval_ppl = col_real(q, i++);
        r->accuracy = col_real(q, i++);
        r->macro_f1 = col_real(q, i++);
        r->error = col_text_dup(q, i++);
        r->adapter_dir = col_text_dup(q, i++);
        r->best_step = col_i64(q, i++);
        r->best_metric = col_real(q, i++);
        r->best_metric_name = col_text_dup(q, i++);
        r->kept_step = col_i64(q, i++);
        r->test_loss = col_real(q, i++);
        r->test_accuracy = col_real(q, i++);
        r->test_macro_f1 = col_real(q, i++);
        r->test_note = col_text_dup(q, i++);
        r->eval_ctx = col_text_dup(q, i++);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        store_free_runs(out, cnt);
        return db_fail(s, rc, "listing runs", err);
    }
    *rows = out;
    *n = cnt;
    return LL_OK;
}

void store_free_runs(RunRow *rows, int n) {
    for (int i = 0; i < n; i++) {
        RunRow *r = &rows[i];
        free(r->sweep);
        free(r->key);
        free(r->config_json);
        free(r->method);
        free(r->targets);
        free(r->host);
        free(r->error);
        free(r->adapter_dir);
        free(r->best_metric_name);
        free(r->test_note);
        free(r->eval_ctx);
    }
    free(rows);
}

/* Every column of runs (whatever the schema version holds) with its sweep's name second, so that
 * exports grow with the table instead of listing its columns again. */
LLStatus store_runs_table(Store *s, const char *sweep_name, StoreTable *t, LLError *err) {
    memset(t, 0, sizeof *t);
    LLStatus st = flush_before_read(s, err);
    if (st != LL_OK) return st;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT r.id, s.name AS sweep, r.* FROM main.runs r JOIN main.sweeps s"
                                " ON s.id = r.sweep_id WHERE ?1 IS NULL OR s.name = ?1 ORDER BY r.sweep_id, r.id",
                                -1, &q, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "listing runs", err);
    bind_text_or_null(q, 1, sweep_name);
    /* r.* repeats id and brings sweep_id: both are left out. */
    int nq = sqlite3_column_count(q), *src = ll_malloc((size_t)nq, sizeof(int));
    t->cols = ll_calloc((size_t)nq, sizeof(char *));
    for (int c = 0; c < nq; c++) {
        const char *name = sqlite3_column_name(q, c);
        if (c >= 2 && (strcmp(name, "id") == 0 || strcmp(name, "sweep_id") == 0)) continue;
        src[t->n_cols] = c;
        t->cols[t->n_cols++] = ll_strdup(name);
    }
    int cap = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (t->n_rows == cap) {
            cap = cap ? 2 * cap : 32;
            t->v = ll_realloc(t->v, (size_t)cap * (size_t)t->n_cols, sizeof(StoreValue));
        }
        StoreValue *row = &t->v[(size_t)t->n_rows++ * (size_t)t->n_cols];
        for (int c = 0; c < t->n_cols; c++) {
            StoreValue *v = &row[c];
            memset(v, 0, sizeof *v);
            switch (sqlite3_column_type(q, src[c])) {
            case SQLITE_INTEGER: v->type = STORE_INT, v->i = sqlite3_column_int64(q, src[c]); break;
            case SQLITE_FLOAT: v->type = STORE_REAL, v->f = sqlite3_column_double(q, src[c]); break;
            case SQLITE_NULL: v->type = STORE_NULL; break;
            default: v->type = STORE_TEXT, v->s = col_text_dup(q, src[c]); break;
            }
        }
    }
    sqlite3_finalize(q);
    free(src);
    if (rc != SQLITE_DONE) {
        store_table_free(t);
        return db_fail(s, rc, "listing runs", err);
    }
    return LL_OK;
}

void store_table_free(StoreTable *t) {
    if (!t) return;
    for (size_t i = 0; i < (size_t)t->n_rows * (size_t)t->n_cols; i++) free(t->v[i].s);
    for (int c = 0; c < t->n_cols; c++) free(t->cols[c]);
    free(t->v);
    free(t->cols);
    memset(t, 0, sizeof *t);
}

LLStatus store_get_metrics(Store *s, int64_t run_id, const char *split, const char *name,
                           int **steps, double **values, int *n, LLError *err) {
    *steps = NULL;
    *values = NULL;
    *n = 0;
    if (!split || !name)
        return ll_err(err, LL_ERR_CONFIG, "a metric query needs a split and a name");
    LLStatus st = flush_before_read(s, err);
    if (st != LL_OK) return st;
    sqlite3_stmt *q = stmt_get(s, ST_GET_METRICS, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, run_id);
    sqlite3_bind_text(q, 2, split, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, name, -1, SQLITE_TRANSIENT);
    int *ss = NULL;
    double *vv = NULL;
    int cnt = 0, cap = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            ss = ll_realloc(ss, (size_t)cap, sizeof *ss);
            vv = ll_realloc(vv, (size_t)cap, sizeof *vv);
        }
        ss[cnt] = sqlite3_column_int(q, 0);
        vv[cnt] = sqlite3_column_int(q, 2) ? NAN : sqlite3_column_double(q, 1);
        cnt++;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        free(ss);
        free(vv);
        return db_fail(s, rc, "reading metrics", err);
    }
    *steps = ss;
    *values = vv;
    *n = cnt;
    return LL_OK;
}

LLStatus store_list_ranks(Store *s, int64_t run_id, RankRow **rows, int *n, LLError *err) {
    *rows = NULL;
    *n = 0;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_LIST_RANKS, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, run_id);
    RankRow *out = NULL;
    int cnt = 0, cap = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 32;
            out = ll_realloc(out, (size_t)cap, sizeof *out);
        }
        RankRow *r = &out[cnt++];
        r->layer = sqlite3_column_int(q, 0);
        col_text_copy(q, 1, r->module, sizeof r->module);
        r->rank = sqlite3_column_int(q, 2);
        r->init_rank = sqlite3_column_int(q, 3);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        free(out);
        return db_fail(s, rc, "reading ranks", err);
    }
    *rows = out;
    *n = cnt;
    return LL_OK;
}

LLStatus store_list_artifacts(Store *s, int64_t run_id, ArtifactRow **rows, int *n,
                              LLError *err) {
    *rows = NULL;
    *n = 0;
    LLStatus st;
    sqlite3_stmt *q = stmt_get(s, ST_LIST_ARTIFACTS, err, &st);
    if (!q) return st;
    sqlite3_bind_int64(q, 1, run_id);
    ArtifactRow *out = NULL;
    int cnt = 0, cap = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 8;
            out = ll_realloc(out, (size_t)cap, sizeof *out);
        }
        ArtifactRow *a = &out[cnt++];
        col_text_copy(q, 0, a->kind, sizeof a->kind);
        a->path = col_text_dup(q, 1);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        store_free_artifacts(out, cnt);
        return db_fail(s, rc, "reading artifacts", err);
    }
    *rows = out;
    *n = cnt;
    return LL_OK;
}

void store_free_artifacts(ArtifactRow *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].path);
    free(rows);
}

/* ---- merge ---------------------------------------------------------------------------------- */

/* The order in which an incoming run replaces an existing one: more finished beats less. */
static int status_rank(const char *st) {
    static const char *const order[] = {"pending", "running", "interrupted", "failed", "diverged",
                                        "pruned", "done"};
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
        if (strcmp(st, order[i]) == 0) return i;
    return -1;
}

typedef enum {
    M_SWEEPS,
    M_SRC_RUNS,
    M_OUT_RUN,
    M_INSERT_RUN,
    M_REPLACE_RUN,
    M_COPY_METRICS,
    M_COPY_RANKS,
    M_COPY_ARTIFACTS,
    M_COPY_DECISIONS,
    M_DEL_DECISIONS,
    M_COPY_DIAGNOSTICS,
    M_BASE_EVALS,
    M_COUNT
} MergeStmt;

static const char *const MERGE_SQL[M_COUNT] = {
    [M_SWEEPS] =
        "INSERT INTO main.sweeps(name, config_path, config_text, created, updated)"
        " SELECT name, config_path, config_text, created, updated FROM src.sweeps WHERE true"
        " ON CONFLICT(name) DO NOTHING",
    [M_SRC_RUNS] =
        "SELECT r.id, s.name, r.key, r.status, r.config_json FROM src.runs r"
        " JOIN src.sweeps s ON s.id = r.sweep_id ORDER BY r.id",
    [M_OUT_RUN] =
        "SELECT r.id, r.status, r.config_json FROM main.runs r JOIN main.sweeps s"
        " ON s.id = r.sweep_id WHERE s.name = ?1 AND r.key = ?2",
    [M_INSERT_RUN] =
        "INSERT INTO main.runs(sweep_id, key, " RUN_COPY_COLS ")"
        " SELECT (SELECT id FROM main.sweeps WHERE name = ?2), key, " RUN_COPY_COLS
        " FROM src.runs WHERE id = ?1",
    [M_REPLACE_RUN] =
        "UPDATE main.runs SET (" RUN_COPY_COLS ") = (SELECT " RUN_COPY_COLS
        " FROM src.runs WHERE id = ?2) WHERE id = ?1",
    [M_COPY_METRICS] =
        "INSERT INTO main.metrics(run_id, step, split, name, value, is_nan, t)"
        " SELECT ?1, step, split, name, value, is_nan, t FROM src.metrics WHERE run_id = ?2",
    [M_COPY_RANKS] =
        "INSERT INTO main.adalora_ranks(run_id, layer, module, rank, init_rank)"
        " SELECT ?1, layer, module, rank, init_rank FROM src.adalora_ranks WHERE run_id = ?2",
    [M_COPY_ARTIFACTS] =
        "INSERT INTO main.artifacts(run_id, kind, path)"
        " SELECT ?1, kind, path FROM src.artifacts WHERE run_id = ?2",
    [M_COPY_DECISIONS] =
        "INSERT INTO main.decisions(run_id, step, policy, rung, metric, value, threshold, n_compared, decision, t)"
        " SELECT ?1, step, policy, rung, metric, value, threshold, n_compared, decision, t FROM src.decisions"
        " WHERE run_id = ?2",
    [M_DEL_DECISIONS] = "DELETE FROM main.decisions WHERE run_id = ?1 AND ?2 = ?2",
    [M_COPY_DIAGNOSTICS] =
        "INSERT INTO main.diagnostics(run_id, layer, module, name, value)"
        " SELECT ?1, layer, module, name, value FROM src.diagnostics WHERE run_id = ?2",
    /* The base's numbers are the same whichever shard measured them: the first one kept. */
    [M_BASE_EVALS] =
        "INSERT INTO main.base_evals(sweep_id, ctx, eval_set, name, value, is_nan, t)"
        " SELECT ms.id, b.ctx, b.eval_set, b.name, b.value, b.is_nan, b.t FROM src.base_evals b"
        " JOIN src.sweeps ss ON ss.id = b.sweep_id JOIN main.sweeps ms ON ms.name = ss.name WHERE true"
        " ON CONFLICT DO NOTHING",
};

typedef struct {
    sqlite3_stmt *q[M_COUNT];
    const char *in_path;
    StoreMergeCounts n;
} MergeCtx;

/* Runs a merge statement that takes (?1, ?2) = (a, b). */
static int merge_exec2(sqlite3_stmt *q, int64_t a, int64_t b) {
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, a);
    sqlite3_bind_int64(q, 2, b);
    return step_once(q);
}

static LLStatus copy_children(Store *s, MergeCtx *c, int64_t out_id, int64_t src_id,
                              LLError *err) {
    static const MergeStmt copies[] = {M_DEL_DECISIONS,  M_COPY_METRICS,    M_COPY_RANKS,
                                       M_COPY_ARTIFACTS, M_COPY_DECISIONS, M_COPY_DIAGNOSTICS};
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
        int rc = merge_exec2(c->q[copies[i]], out_id, src_id);
        if (rc != SQLITE_OK) return db_fail(s, rc, "copying a run's rows", err);
    }
    return LL_OK;
}

static LLStatus merge_body(Store *s, void *vctx, LLError *err) {
    MergeCtx *c = vctx;
    memset(&c->n, 0, sizeof c->n);
    int rc = step_once(c->q[M_SWEEPS]);
    if (rc != SQLITE_OK) return db_fail(s, rc, "merging sweeps", err);
    if ((rc = step_once(c->q[M_BASE_EVALS])) != SQLITE_OK) return db_fail(s, rc, "merging the base's evaluations", err);
    sqlite3_stmt *src = c->q[M_SRC_RUNS], *look = c->q[M_OUT_RUN];
    sqlite3_reset(src);
    LLStatus st = LL_OK;
    while (st == LL_OK && (rc = sqlite3_step(src)) == SQLITE_ROW) {
        int64_t src_id = sqlite3_column_int64(src, 0);
        const char *sweep = (const char *)sqlite3_column_text(src, 1);
        const char *key = (const char *)sqlite3_column_text(src, 2);
        char src_status[16];
        col_text_copy(src, 3, src_status, sizeof src_status);
        const char *src_cfg = (const char *)sqlite3_column_text(src, 4);

        sqlite3_reset(look);
        sqlite3_bind_text(look, 1, sweep, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(look, 2, key, -1, SQLITE_TRANSIENT);
        int lrc = sqlite3_step(look);
        if (lrc == SQLITE_DONE) {
            sqlite3_stmt *ins = c->q[M_INSERT_RUN];
            sqlite3_reset(ins);
            sqlite3_bind_int64(ins, 1, src_id);
            sqlite3_bind_text(ins, 2, sweep, -1, SQLITE_TRANSIENT);
            rc = step_once(ins);
            if (rc != SQLITE_OK) {
                st = db_fail(s, rc, "copying a run", err);
                break;
            }
            st = copy_children(s, c, sqlite3_last_insert_rowid(s->db), src_id, err);
            c->n.added++;
            continue;
        }
        if (lrc != SQLITE_ROW) {
            st = db_fail(s, lrc, "matching runs", err);
            break;
        }
        int64_t out_id = sqlite3_column_int64(look, 0);
        char out_status[16];
        col_text_copy(look, 1, out_status, sizeof out_status);
        const char *out_cfg = (const char *)sqlite3_column_text(look, 2);
        int same_cfg = out_cfg && src_cfg && strcmp(out_cfg, src_cfg) == 0;
        sqlite3_reset(look);
        if (!same_cfg) {
            st = ll_err(err, LL_ERR_STATE,
                        "merging '%s': run key '%s' of sweep '%s' has a different config in the "
                        "two databases (a hash collision or a non-canonical config)",
                        c->in_path, key, sweep);
            break;
        }
        if (status_rank(src_status) <= status_rank(out_status)) {
            c->n.unchanged++;
            continue;
        }
        if ((rc = merge_exec2(c->q[M_REPLACE_RUN], out_id, src_id)) != SQLITE_OK) {
            st = db_fail(s, rc, "replacing a run", err);
            break;
        }
        if ((st = delete_children(s, out_id, -1, err)) != LL_OK) break;
        st = copy_children(s, c, out_id, src_id, err);
        c->n.upgraded++;
    }
    sqlite3_reset(src);
    if (st == LL_OK && rc != SQLITE_DONE) st = db_fail(s, rc, "reading runs to merge", err);
    return st;
}

/* Attached under the fixed name "src"; the file name itself is a bound value. */
static int attach_src(Store *s, const char *path) {
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "ATTACH DATABASE ?1 AS src", -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_text(q, 1, path, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int same_file(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    if (!realpath(a, ra) || !realpath(b, rb)) return 0;
    return strcmp(ra, rb) == 0;
}

LLStatus store_merge(Store *s, const char *in_path, StoreMergeCounts *counts, LLError *err) {
    if (counts) memset(counts, 0, sizeof *counts);
    if (s->readonly)
        return ll_err(err, LL_ERR_STATE, "database '%s' is open read-only; cannot merge into it",
                      s->path);
    if (s->locked) return ll_err(err, LL_ERR_STATE, "cannot merge while holding the lock");
    if (!in_path || !ll_file_exists(in_path))
        return ll_err(err, LL_ERR_IO, "no database at '%s'", in_path ? in_path : "(null)");
    if (same_file(in_path, s->path))
        return ll_err(err, LL_ERR_CONFIG, "cannot merge '%s' into itself", in_path);
    LLStatus st = store_flush(s, err);
    if (st != LL_OK) return st;
    /* Prepared statements of our cache may reference the schema; reset them so DETACH is free. */
    for (int i = 0; i < ST_COUNT; i++)
        if (s->stmt[i]) sqlite3_reset(s->stmt[i]);
    int rc = attach_src(s, in_path);
    if (rc != SQLITE_OK) {
        st = db_fail(s, rc, "attaching the database to merge", err);
        return ll_err_prefix(err, "merging '%s'", in_path);
    }
    MergeCtx c = {{NULL}, in_path, {0, 0, 0}};
    int64_t v = 0;
    st = check_identity(s, "src", in_path, &v, err);
    if (st == LL_OK && v != STORE_SCHEMA_VERSION)
        st = ll_err(err, LL_ERR_FORMAT,
                    v == 0 ? "'%s' is empty: not a loralab database"
                           : "database '%s' has an older schema: open it once for writing with "
                             "this loralab to migrate it, then merge",
                    in_path);
    for (int i = 0; st == LL_OK && i < M_COUNT; i++) {
        rc = sqlite3_prepare_v2(s->db, MERGE_SQL[i], -1, &c.q[i], NULL);
        if (rc != SQLITE_OK) st = db_fail(s, rc, "preparing the merge", err);
    }
    if (st == LL_OK) st = tx_run(s, "merging", merge_body, &c, err);
    for (int i = 0; i < M_COUNT; i++) sqlite3_finalize(c.q[i]);
    rc = exec_sql(s, "DETACH DATABASE src");
    if (st == LL_OK && rc != SQLITE_OK) st = db_fail(s, rc, "detaching the merged database", err);
    if (st == LL_OK && counts) *counts = c.n;
    return st;
}

/* ---- explicit lock ------------------------------------------------------------------------- */

LLStatus store_lock_exclusive(Store *s, LLError *err) {
    if (s->readonly)
        return ll_err(err, LL_ERR_STATE, "database '%s' is open read-only; cannot lock it",
                      s->path);
    if (s->locked) return ll_err(err, LL_ERR_STATE, "database '%s' is already locked", s->path);
    LLStatus st = store_flush(s, err);
    if (st != LL_OK) return st;
    for (int attempt = 0; attempt < STORE_TX_ATTEMPTS; attempt++) {
        if (attempt > 0) backoff(attempt);
        int rc = exec_sql(s, "BEGIN EXCLUSIVE");
        if (rc == SQLITE_OK) {
            s->locked = 1;
            return LL_OK;
        }
        if (!is_busy(rc)) return db_fail(s, rc, "locking", err);
    }
    return busy_error(s, "locking", err);
}

LLStatus store_unlock(Store *s, LLError *err) {
    if (!s->locked) return ll_err(err, LL_ERR_STATE, "database '%s' is not locked", s->path);
    int rc = exec_sql(s, "COMMIT");
    if (rc != SQLITE_OK) {
        LLStatus st = db_fail(s, rc, "unlocking", err);
        rollback(s);
        s->locked = 0;
        return st;
    }
    s->locked = 0;
    return LL_OK;
}

/* ---- early stopping -------------------------------------------------------------------------- */

/* SQLite cannot alter a CHECK constraint; relaxing one (a value more is allowed) may edit the
 * stored CREATE text, as its documentation describes for changes that leave the stored data valid
 * (sqlite.org/lang_altertable.html, section 7). Replaces `from` by `to` in the CREATE TABLE text of
 * `table` (a constant of this file), inside the migration's transaction; `what` completes the
 * error message. A table whose text lacks `from` is not loralab's: LL_ERR_FORMAT, nothing changed. */
static LLStatus rewrite_check(Store *s, const char *table, const char *from, const char *to, const char *what,
                              LLError *err) {
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1", -1, &q,
                                NULL);
    char *sql = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW) sql = col_text_dup(q, 0);
    }
    sqlite3_finalize(q);
    if (!sql || !strstr(sql, from)) {
        ll_free(sql);
        return ll_err(err, LL_ERR_FORMAT, "database '%s': the %s table's check is not loralab's (%s)", s->path, table,
                      what);
    }
    size_t n = strlen(sql) + strlen(to) + 1;
    char *out = ll_malloc(n, 1);
    char *at = strstr(sql, from);
    snprintf(out, n, "%.*s%s%s", (int)(at - sql), sql, to, at + strlen(from));
    ll_free(sql);
    int64_t ver = 0;
    rc = query_int(s, "PRAGMA schema_version", &ver);
    if (rc == SQLITE_OK) rc = exec_sql(s, "PRAGMA writable_schema = ON");
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(s->db, "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = ?2", -1, &q,
                                NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(q, 1, out, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(q, 2, table, -1, SQLITE_STATIC);
            rc = step_once(q);
        }
        sqlite3_finalize(q);
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA schema_version = %lld", (long long)ver + 1);
        int rc2 = exec_sql(s, bump);
        int rc3 = exec_sql(s, "PRAGMA writable_schema = OFF");
        if (rc == SQLITE_OK) rc = rc2 != SQLITE_OK ? rc2 : rc3;
    }
    ll_free(out);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, what, err);
}

/* Version 3: the status `pruned`. */
static LLStatus rewrite_status_check(Store *s, LLError *err) {
    return rewrite_check(s, "runs", "'diverged','interrupted')", "'diverged','interrupted','pruned')",
                         "adding the status 'pruned'", err);
}

/* Version 4: an eval set's name as split (store_split_name_ok says the same in C). */
_Static_assert(STORE_SPLIT_MAX == 32, "the CHECK below allows names of 1 to 31 bytes");
static LLStatus rewrite_split_check(Store *s, LLError *err) {
    return rewrite_check(s, "metrics", "CHECK (split IN ('train','eval','test'))",
                         "CHECK (split IN ('train','eval','test') OR (length(split) BETWEEN 1 AND 31"
                         " AND split NOT GLOB '*[^A-Za-z0-9_.-]*' AND split NOT GLOB '[.-]*'))",
                         "allowing eval sets' names as metric splits", err);
}

/* One text column of a run: sql (a constant of this file) takes ?1 = the run's id, ?2 = the text. */
typedef struct {
    int64_t run_id;
    const char *sql, *value, *what;
} RunTextCtx;

static LLStatus run_text_body(Store *s, void *vctx, LLError *err) {
    RunTextCtx *c = vctx;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, c->sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, c->run_id);
        bind_text_or_null(q, 2, c->value);
        rc = step_once(q);
    }
    int changed = rc == SQLITE_OK ? sqlite3_changes(s->db) : 0;
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) return db_fail(s, rc, c->what, err);
    if (!changed) return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path, (long long)c->run_id);
    return LL_OK;
}

static LLStatus set_run_text(Store *s, int64_t run_id, const char *sql, const char *value, const char *what,
                             LLError *err) {
    RunTextCtx c = {run_id, sql, value, what};
    return tx_run(s, what, run_text_body, &c, err);
}

LLStatus store_set_bracket(Store *s, int64_t run_id, const char *bracket, LLError *err) {
    return set_run_text(s, run_id, "UPDATE main.runs SET bracket = ?2 WHERE id = ?1", bracket,
                        "setting a run's bracket", err);
}

/* The decision stored for (run, step) into d; *found = 0 when there is none. */
static LLStatus find_decision(Store *s, int64_t run_id, int step, int *found, EsDecision *d, LLError *err) {
    *found = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT rung, value, threshold, n_compared, decision FROM decisions"
                                " WHERE run_id = ?1 AND step = ?2", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_int(q, 2, step);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *found = 1;
            d->rung = sqlite3_column_type(q, 0) == SQLITE_NULL ? -1 : sqlite3_column_int(q, 0);
            d->value = col_real(q, 1);
            d->threshold = col_real(q, 2);
            d->n_compared = sqlite3_column_int(q, 3);
            d->stop = strcmp((const char *)sqlite3_column_text(q, 4), "stop") == 0;
            rc = SQLITE_DONE;
        }
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? LL_OK : db_fail(s, rc, "reading an early-stopping decision", err);
}

static LLStatus insert_decision(Store *s, int64_t run_id, int step, const EarlyStopPolicy *p, const char *metric,
                                const EsDecision *d, LLError *err) {
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO decisions(run_id, step, policy, rung, metric, value, threshold, n_compared,"
                                " decision, t) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_int(q, 2, step);
        sqlite3_bind_text(q, 3, es_type_name(p->type), -1, SQLITE_STATIC);
        if (d->rung >= 0) sqlite3_bind_int(q, 4, d->rung);
        else sqlite3_bind_null(q, 4);
        sqlite3_bind_text(q, 5, metric, -1, SQLITE_TRANSIENT);
        bind_real_or_null(q, 6, d->value);
        bind_real_or_null(q, 7, d->threshold);
        sqlite3_bind_int(q, 8, d->n_compared);
        sqlite3_bind_text(q, 9, d->stop ? "stop" : "continue", -1, SQLITE_STATIC);
        sqlite3_bind_double(q, 10, unix_now());
        rc = step_once(q);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "recording an early-stopping decision", err);
}

typedef struct {
    int64_t run_id;
    const EarlyStopPolicy *p;
    const char *metric; /* the metrics table's name (split eval) */
    int step, rung;
    double value;
    const EsCurve *own;
    EsDecision d;
    int replayed;
} DecideCtx;

/* Values of a bracket's other runs: ASHA's recorded values at the rung (from decisions), or the
 * median rule's eval curves (from metrics, every run of the bracket but this one). */
static LLStatus decide_body(Store *s, void *vctx, LLError *err) {
    DecideCtx *c = vctx;
    int found = 0;
    LLStatus st = find_decision(s, c->run_id, c->step, &found, &c->d, err);
    if (st) return st;
    if (found) { /* decided before a kill: the same decision again */
        c->replayed = 1;
        return LL_OK;
    }
    sqlite3_stmt *q = NULL;
    int rc;
    if (c->p->type == ES_ASHA) {
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT d.value FROM decisions d JOIN runs r ON r.id = d.run_id JOIN runs me"
                                " ON me.id = ?1 WHERE r.sweep_id = me.sweep_id AND r.bracket IS me.bracket"
                                " AND d.rung = ?2 AND d.policy = 'asha' AND d.run_id != ?1", -1, &q, NULL);
        double *v = NULL;
        int n = 0, cap = 0;
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, c->run_id);
            sqlite3_bind_int(q, 2, c->rung);
            while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                if (n == cap) v = ll_realloc(v, (size_t)(cap = cap ? 2 * cap : 16), sizeof *v);
                v[n++] = col_real(q, 0);
            }
        }
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE) {
            ll_free(v);
            return db_fail(s, rc, "reading a rung's records", err);
        }
        c->d = es_asha_decide(c->p, c->rung, c->value, v, n);
        ll_free(v);
    } else {
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT m.run_id, m.step, m.value FROM metrics m JOIN runs r ON r.id = m.run_id"
                                " JOIN runs me ON me.id = ?1 WHERE r.sweep_id = me.sweep_id AND r.bracket IS me.bracket"
                                " AND m.run_id != ?1 AND m.split = 'eval' AND m.name = ?2 ORDER BY m.run_id, m.step",
                                -1, &q, NULL);
        int *steps = NULL, n = 0, cap = 0, nr = 0;
        double *vals = NULL;
        int64_t *rid = NULL;
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, c->run_id);
            sqlite3_bind_text(q, 2, c->metric, -1, SQLITE_TRANSIENT);
            while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    steps = ll_realloc(steps, (size_t)cap, sizeof *steps);
                    vals = ll_realloc(vals, (size_t)cap, sizeof *vals);
                    rid = ll_realloc(rid, (size_t)cap, sizeof *rid);
                }
                rid[n] = sqlite3_column_int64(q, 0);
                steps[n] = sqlite3_column_int(q, 1);
                vals[n] = col_real(q, 2);
                nr += n == 0 || rid[n] != rid[n - 1];
                n++;
            }
        }
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE) {
            ll_free(steps), ll_free(vals), ll_free(rid);
            return db_fail(s, rc, "reading a bracket's curves", err);
        }
        EsCurve *others = ll_malloc((size_t)(nr > 0 ? nr : 1), sizeof *others);
        int k = -1;
        for (int i = 0; i < n; i++) {
            if (i == 0 || rid[i] != rid[i - 1]) others[++k] = (EsCurve){steps + i, vals + i, 0};
            others[k].n++;
        }
        c->d = es_median_decide(c->p, c->step, c->own, others, nr);
        ll_free(others), ll_free(steps), ll_free(vals), ll_free(rid);
    }
    return insert_decision(s, c->run_id, c->step, c->p, c->metric, &c->d, err);
}

LLStatus store_es_decide(Store *s, int64_t run_id, const EarlyStopPolicy *p, const char *metric, int step, int rung,
                         double value, const EsCurve *own, EsDecision *out, int *replayed, LLError *err) {
    /* the median rule reads other runs' curves: this process's buffered rows go first */
    LLStatus st = store_flush(s, err);
    if (st) return st;
    DecideCtx c = {run_id, p, metric, step, rung, value, own, {0, rung, value, NAN, 0}, 0};
    st = tx_run(s, "taking an early-stopping decision", decide_body, &c, err);
    if (!st) {
        *out = c.d;
        if (replayed) *replayed = c.replayed;
    }
    return st;
}

typedef struct {
    int64_t sweep_id;
    int n;
} ReopenCtx;

static LLStatus reopen_body(Store *s, void *vctx, LLError *err) {
    ReopenCtx *c = vctx;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "DELETE FROM decisions WHERE run_id IN"
                                " (SELECT id FROM runs WHERE sweep_id = ?1 AND status = 'pruned')", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, c->sweep_id);
        rc = step_once(q);
    }
    sqlite3_finalize(q);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db, "UPDATE runs SET status = 'interrupted' WHERE sweep_id = ?1 AND status = 'pruned'",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, c->sweep_id);
        rc = step_once(q);
        c->n = sqlite3_changes(s->db);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "reopening pruned runs", err);
}

LLStatus store_reopen_pruned(Store *s, int64_t sweep_id, int *n_reopened, LLError *err) {
    ReopenCtx c = {sweep_id, 0};
    LLStatus st = tx_run(s, "reopening pruned runs", reopen_body, &c, err);
    if (n_reopened) *n_reopened = st ? 0 : c.n;
    return st;
}

/* ---- eval sets and the base's evaluations (schema version 4) ------------------------------- */

LLStatus store_set_eval_ctx(Store *s, int64_t run_id, const char *ctx, LLError *err) {
    if (ctx && !*ctx) return ll_err(err, LL_ERR_CONFIG, "an evaluation context must not be empty");
    return set_run_text(s, run_id, "UPDATE main.runs SET eval_ctx = ?2 WHERE id = ?1", ctx,
                        "setting a run's evaluation context", err);
}

LLStatus store_run_base_eval(Store *s, int64_t run_id, const char *set, const char *name, double *value, int *found,
                             LLError *err) {
    *found = 0;
    *value = NAN;
    if (!set || !name) return ll_err(err, LL_ERR_CONFIG, "a base evaluation query needs a set and a name");
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT b.value, b.is_nan FROM main.base_evals b JOIN main.runs r ON r.id = ?1"
                                " WHERE b.sweep_id = r.sweep_id AND b.ctx = r.eval_ctx AND b.eval_set = ?2"
                                " AND b.name = ?3",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_text(q, 2, set, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 3, name, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *found = 1;
            *value = sqlite3_column_int(q, 1) ? NAN : sqlite3_column_double(q, 0);
            rc = SQLITE_DONE;
        }
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? LL_OK : db_fail(s, rc, "reading the base's evaluation", err);
}

typedef struct {
    int64_t run_id;
    const char *set, *name;
    double value;
} BaseEvalCtx;

static LLStatus base_eval_body(Store *s, void *vctx, LLError *err) {
    BaseEvalCtx *c = vctx;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT eval_ctx FROM main.runs WHERE id = ?1", -1, &q, NULL);
    int has_ctx = 0, exists = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, c->run_id);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) exists = 1, has_ctx = sqlite3_column_type(q, 0) != SQLITE_NULL, rc = SQLITE_DONE;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return db_fail(s, rc, "recording the base's evaluation", err);
    if (!exists) return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path, (long long)c->run_id);
    if (!has_ctx)
        return ll_err(err, LL_ERR_STATE,
                      "database '%s': run %lld has no evaluation context: store_set_eval_ctx comes before the "
                      "base's evaluations",
                      s->path, (long long)c->run_id);
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT INTO main.base_evals(sweep_id, ctx, eval_set, name, value, is_nan, t)"
                            " SELECT sweep_id, eval_ctx, ?2, ?3, ?4, ?5, ?6 FROM main.runs WHERE id = ?1"
                            " ON CONFLICT(sweep_id, ctx, eval_set, name) DO UPDATE SET value = excluded.value,"
                            " is_nan = excluded.is_nan, t = excluded.t",
                            -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, c->run_id);
        sqlite3_bind_text(q, 2, c->set, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 3, c->name, -1, SQLITE_TRANSIENT);
        if (isnan(c->value)) sqlite3_bind_null(q, 4); /* the NaN convention of metrics */
        else sqlite3_bind_double(q, 4, c->value);
        sqlite3_bind_int(q, 5, isnan(c->value) ? 1 : 0);
        sqlite3_bind_double(q, 6, unix_now());
        rc = step_once(q);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "recording the base's evaluation", err);
}

LLStatus store_add_base_eval(Store *s, int64_t run_id, const char *set, const char *name, double value,
                             LLError *err) {
    if (!store_eval_set_name_ok(set))
        return ll_err(err, LL_ERR_CONFIG, "'%s' is not an eval set's name", set ? set : "(null)");
    if (!name || !*name || strlen(name) >= 64)
        return ll_err(err, LL_ERR_CONFIG, "metric name '%s' must be 1 to 63 bytes", name ? name : "(null)");
    BaseEvalCtx c = {run_id, set, name, value};
    return tx_run(s, "recording the base's evaluation", base_eval_body, &c, err);
}

LLStatus store_list_base_evals(Store *s, const char *sweep_name, BaseEvalRow **rows, int *n, LLError *err) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT sw.name, b.ctx, b.eval_set, b.name, b.value, b.is_nan FROM main.base_evals b"
                                " JOIN main.sweeps sw ON sw.id = b.sweep_id WHERE ?1 IS NULL OR sw.name = ?1"
                                " ORDER BY sw.id, b.ctx, b.eval_set, b.name",
                                -1, &q, NULL);
    BaseEvalRow *out = NULL;
    int cnt = 0, cap = 0;
    if (rc == SQLITE_OK) {
        bind_text_or_null(q, 1, sweep_name);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            if (cnt == cap) out = ll_realloc(out, (size_t)(cap = cap ? 2 * cap : 16), sizeof *out);
            BaseEvalRow *r = &out[cnt++];
            memset(r, 0, sizeof *r);
            r->sweep = col_text_dup(q, 0);
            r->ctx = col_text_dup(q, 1);
            col_text_copy(q, 2, r->set, sizeof r->set);
            col_text_copy(q, 3, r->name, sizeof r->name);
            r->value = sqlite3_column_int(q, 5) ? NAN : sqlite3_column_double(q, 4);
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        store_free_base_evals(out, cnt);
        return db_fail(s, rc, "listing the base's evaluations", err);
    }
    *rows = out;
    *n = cnt;
    return LL_OK;
}

void store_free_base_evals(BaseEvalRow *rows, int n) {
    for (int i = 0; i < n; i++) {
        free(rows[i].sweep);
        free(rows[i].ctx);
    }
    free(rows);
}

LLStatus store_list_eval_sets(Store *s, const char *sweep_name, char ***names, int *n, LLError *err) {
    *names = NULL;
    *n = 0;
    LLStatus st = flush_before_read(s, err);
    if (st != LL_OK) return st;
    /* From the runs' metrics as well as from base_evals: a set evaluated without a base row (none is
     * missing when loralab wrote the file, but a file may have been edited) still shows. */
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT b.eval_set FROM main.base_evals b JOIN main.sweeps sw ON sw.id = b.sweep_id"
                                " WHERE ?1 IS NULL OR sw.name = ?1"
                                " UNION SELECT DISTINCT m.split FROM main.metrics m JOIN main.runs r ON r.id = m.run_id"
                                " JOIN main.sweeps sw ON sw.id = r.sweep_id WHERE (?1 IS NULL OR sw.name = ?1)"
                                " AND m.split NOT IN ('train','eval','test') ORDER BY 1",
                                -1, &q, NULL);
    char **out = NULL;
    int cnt = 0, cap = 0;
    if (rc == SQLITE_OK) {
        bind_text_or_null(q, 1, sweep_name);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            if (cnt == cap) out = ll_realloc(out, (size_t)(cap = cap ? 2 * cap : 8), sizeof *out);
            out[cnt++] = col_text_dup(q, 0);
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        store_free_names(out, cnt);
        return db_fail(s, rc, "listing eval sets", err);
    }
    *names = out;
    *n = cnt;
    return LL_OK;
}

void store_free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

int store_eval_set_name_ok(const char *name) {
    return store_split_name_ok(name) && strcmp(name, "train") != 0 && strcmp(name, "eval") != 0 &&
           strcmp(name, "test") != 0;
}

/* ---- spectral diagnostics (schema version 4) ------------------------------------------------ */

typedef struct {
    int64_t run_id;
    const DiagnosticRow *rows;
    int n;
} DiagCtx;

static LLStatus diag_body(Store *s, void *vctx, LLError *err) {
    DiagCtx *c = vctx;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO main.diagnostics(run_id, layer, module, name, value)"
                                " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(run_id, layer, module, name)"
                                " DO UPDATE SET value = excluded.value",
                                -1, &q, NULL);
    for (int i = 0; rc == SQLITE_OK && i < c->n; i++) {
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, c->run_id);
        sqlite3_bind_int(q, 2, c->rows[i].layer);
        sqlite3_bind_text(q, 3, c->rows[i].module, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 4, c->rows[i].name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(q, 5, c->rows[i].value);
        rc = step_once(q);
    }
    sqlite3_finalize(q);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return ll_err(err, LL_ERR_STATE, "database '%s': no run with id %lld", s->path, (long long)c->run_id);
    return rc == SQLITE_OK ? LL_OK : db_fail(s, rc, "recording diagnostics", err);
}

LLStatus store_add_diagnostics(Store *s, int64_t run_id, const DiagnosticRow *rows, int n, LLError *err) {
    for (int i = 0; i < n; i++) {
        const DiagnosticRow *r = &rows[i];
        if (r->layer < 0 || !r->module[0] || !r->name[0] || memchr(r->module, 0, sizeof r->module) == NULL ||
            memchr(r->name, 0, sizeof r->name) == NULL)
            return ll_err(err, LL_ERR_CONFIG, "diagnostic %d: a layer >= 0, a module and a name are needed", i);
        if (isnan(r->value))
            return ll_err(err, LL_ERR_CONFIG, "diagnostic %s of layer %d %s is NaN", r->name, r->layer, r->module);
    }
    if (n == 0) return LL_OK;
    DiagCtx c = {run_id, rows, n};
    return tx_run(s, "recording diagnostics", diag_body, &c, err);
}

LLStatus store_list_diagnostics(Store *s, int64_t run_id, DiagnosticRow **rows, int *n, LLError *err) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT layer, module, name, value FROM main.diagnostics WHERE run_id = ?1"
                                " ORDER BY layer, module, name",
                                -1, &q, NULL);
    DiagnosticRow *out = NULL;
    int cnt = 0, cap = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            if (cnt == cap) out = ll_realloc(out, (size_t)(cap = cap ? 2 * cap : 64), sizeof *out);
            DiagnosticRow *r = &out[cnt++];
            r->layer = sqlite3_column_int(q, 0);
            col_text_copy(q, 1, r->module, sizeof r->module);
            col_text_copy(q, 2, r->name, sizeof r->name);
            r->value = col_real(q, 3);
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        free(out);
        return db_fail(s, rc, "reading diagnostics", err);
    }
    *rows = out;
    *n = cnt;
    return LL_OK;
}
