/* runs_export: the runs of a results database as one flat table, for other programs and for
 * seeing what differs. Behind `loralab runs --csv / --json / --diff` and the report's runs.csv.
 *
 * Columns: first every column of the runs table as the store holds it (id, sweep, key, method,
 * r, alpha, lr, seed, status, ..., the final metrics; store_runs_table), without config_json; then
 * every key of the runs' canonical configs (config_json) as its own column, named by its dotted
 * key (train.lr, adapter.r, ...), in byte order, the union over the rows. A key a run's config
 * does not hold (adapter.r of a full fine-tuning run) is absent in that row.
 *
 * Types: INTEGER and REAL columns stay numbers; config values take their key's type (int, float,
 * bool), strings stay strings, and lists or mappings (adapter.targets) are their JSON text.
 *   CSV (RFC 4180): a header row, then one row per run, CRLF line ends. Numbers are never quoted
 *       and print in their shortest round-trip form (0.003, not 0.0030000000000000001); strings
 *       are always quoted, with " doubled, so any byte a database holds stays inside its field;
 *       booleans are true/false; absent values and NaN are empty fields; infinities inf/-inf.
 *       pandas.read_csv, R's read.csv and sqlite3 .import read it with numeric columns.
 *   JSON: an array with one object per run, members in column order; numbers as numbers (NaN
 *       and infinities as null), strings escaped by cJSON, absent values null, lists and mappings
 *       as JSON values.
 * Invariant: the CSV and the JSON of one table hold the same columns, rows and values.
 */
#ifndef LL_RUNS_EXPORT_H
#define LL_RUNS_EXPORT_H

#include <stdint.h>
#include <stdio.h>

#include "core.h"
#include "store.h"

typedef enum { RX_NULL, RX_INT, RX_REAL, RX_BOOL, RX_TEXT, RX_JSON } RxType;

typedef struct {
    RxType type;
    int64_t i; /* RX_INT, RX_BOOL */
    double f;  /* RX_REAL */
    char *s;   /* RX_TEXT, RX_JSON (owned) */
} RxCell;

typedef struct {
    int n_rows, n_cols;
    char **cols;
    int n_run_cols; /* columns [0, n_run_cols) are the runs table's, the rest config keys */
    RxCell *cells;  /* cells[row * n_cols + col] */
} RunsExport;

/* The runs of one sweep (NULL: all) with their config keys expanded. */
LLStatus runs_export_load(Store *s, const char *sweep, RunsExport *t, LLError *err);
void runs_export_free(RunsExport *t);

/* Keeps the listed runs, in the order given: each item is a run id or a run key (16 hex digits, or
 * a prefix of at least 4 that only one run has). An unknown or ambiguous item is LL_ERR_CONFIG. */
LLStatus runs_export_select(RunsExport *t, const char *const *which, int n, LLError *err);
/* Drops the config-key columns whose value is the same in every row (absent counts as a value);
 * returns how many config keys were dropped. */
int runs_export_keep_differing(RunsExport *t);
/* The column index of name, or -1. */
int runs_export_col(const RunsExport *t, const char *name);
/* A cell as short text for terminals ("-" when absent; strings without quotes). */
void runs_export_cell_text(const RxCell *c, char *out, size_t cap);

LLStatus runs_export_csv(const RunsExport *t, FILE *f);
LLStatus runs_export_json(const RunsExport *t, FILE *f);
/* Writes the CSV of a sweep's runs (NULL: all) to dir/name, replacing it atomically (a temporary
 * file renamed over it). */
LLStatus runs_export_write_csv(Store *s, const char *sweep, const char *dir, const char *name, LLError *err);

#endif
