/* libFuzzer target for the report (analysis/report.c, report_write) over hostile results
 * databases: does any database make the report write a script statement it did not mean to?
 *
 * The input is a small program that builds a database (format below): runs added through the
 * store's API (experiments/store.c) with fuzzed methods, targets, keys, sweep names, canonical
 * configs (raw text or JSON objects with fuzzed members), statuses, curves (NaN, Inf, huge and
 * negative steps), final numbers and AdaLoRA ranks; then, with the store closed, fuzzed SQL
 * statements (drop a table, insert a negative step, turn a column's type) and fuzzed values bound
 * into chosen columns, embedded NULs included. This file opens the database with SQLite directly
 * for those edits only: the point is a database the store would never write. An authorizer
 * refuses ATTACH, DETACH and PRAGMA and only statements that begin with INSERT, UPDATE, DELETE,
 * DROP, ALTER, CREATE or REPLACE run (VACUUM INTO, ATTACH and the like could write files
 * elsewhere). Strings are up to 254 bytes, or repeats of a fuzzed pattern of 4 to 64 KiB or 1 MiB (at
 * most four such per input and one of 1 MiB, to keep the rate useful).
 *
 * Then report_write runs on it with PATH emptied, so no gnuplot is found and nothing is rendered,
 * and the target aborts when: report_write fails without a message; a figure's name is not a
 * file stem or its title or note holds a control character; any written .gp or .dat file fails
 * tests/gp_check.h (a statement the report never writes, a comment running onto the next line,
 * an open string, a call, a pipe, a backquote, a data line that is not numbers); table.md,
 * table.tex or index.html holds a control character other than the newline, or index.html holds
 * a "<script" other than its own.
 *
 * Work files live in a folder made once under /dev/shm (tmpfs: the store's fsyncs cost nothing),
 * or TMPDIR, and are removed between inputs and at exit.
 *
 * Input program: bytes are read from the front; a read past the end gives 0.
 *   op = byte % 4, at most 48 ops:
 *     0  sweep NAME                       later runs belong to it (the first run makes "fuzz")
 *     1  run KEY METHOD TARGETS r alpha lr seed CONFIG STATUS [metrics] [ranks] [finals]
 *     2  sql TEXT                         run after the store is closed
 *     3  set TABLE.COLUMN (of a list) to a STRING, an integer or a double, in row k or all rows
 *   STRING: length byte n < 255 then n bytes; 255 then a size byte m, a pattern length byte and
 *   the pattern, repeated to 1 MiB when m is 255 (the first time), else to (m % 16 + 1) * 4 KiB
 *   bytes (from the fifth such string on, 255 is an ordinary length).
 *   then: a byte whose low bit selects the sweep passed to report_write (NULL or the first name).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "analysis/gnuplot.h"
#include "analysis/report.h"
#include "experiments/store.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/gp_check.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_db[600], g_out[600];

/* ---- reading the input ----------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n, i;
    int n_long, n_huge; /* long strings so far (at most 4), of them 1 MiB (at most 1) */
} In;

static uint8_t take(In *in) { return in->i < in->n ? in->p[in->i++] : 0; }

static int32_t take_int(In *in) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v = v << 8 | take(in);
    return (int32_t)v;
}

/* Doubles a report must survive: NaN, infinities, -0, extremes, and small ordinary values. */
static double take_double(In *in) {
    static const double special[] = {NAN, INFINITY, -INFINITY, -0.0, 1e308, -1e308, 5e-324, 1e-300};
    uint8_t sel = take(in);
    if (sel < 8) return special[sel];
    return (double)(int8_t)take(in) / 16.0 + (double)(sel - 8) / 32.0;
}

/* A string (malloc'd, NUL-terminated; *len its bytes, which may hold NULs). */
static char *take_str(In *in, size_t *len) {
    uint8_t n = take(in);
    size_t m = n;
    char *s;
    if (n == 255 && in->n_long < 4) {
        uint8_t mult = take(in);
        int huge = mult == 255 && !in->n_huge;
        in->n_long++, in->n_huge += huge;
        size_t total = huge ? (size_t)1 << 20 : ((size_t)mult % 16 + 1) * 4096, pl = take(in) % 16 + 1;
        s = malloc(total + 1);
        if (!s) abort();
        for (size_t k = 0; k < pl; k++) s[k] = (char)take(in);
        for (size_t have = pl; have < total; have *= 2) /* the pattern, doubled */
            memcpy(s + have, s, have < total - have ? have : total - have);
        m = total;
    } else {
        if (m > in->n - in->i) m = in->n - in->i;
        s = malloc(m + 1);
        if (!s) abort();
        if (m) memcpy(s, in->p + in->i, m);
        in->i += m;
    }
    s[m] = '\0';
    if (len) *len = m;
    return s;
}

/* ---- building the database ------------------------------------------------------------------- */

static const char *const STATUSES[] = {"pending", "running", "done", "done", "diverged", "failed", "interrupted"};
static const char *const SPLITS[] = {"train", "eval", "test"};

/* CONFIG: 0 none, 1 raw text, 2..3 a JSON object of fuzzed members (strings, numbers, nested). */
static char *take_config(In *in) {
    uint8_t mode = take(in) % 4;
    if (mode == 0) return NULL;
    if (mode == 1) return take_str(in, NULL);
    cJSON *o = cJSON_CreateObject();
    int k = take(in) % 6;
    for (int j = 0; j < k; j++) {
        char *key = take_str(in, NULL);
        uint8_t kind = take(in) % 4;
        if (kind == 0) {
            char *v = take_str(in, NULL);
            cJSON_AddStringToObject(o, key, v);
            free(v);
        } else if (kind == 1) {
            cJSON_AddNumberToObject(o, key, take_double(in));
        } else if (kind == 2) {
            cJSON_AddItemToObject(o, key, cJSON_CreateBool(take(in) & 1));
        } else {
            cJSON *arr = cJSON_CreateArray();
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(take_double(in)));
            cJSON_AddItemToObject(o, key, arr);
        }
        free(key);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *copy = text ? strdup(text) : NULL;
    cJSON_free(text);
    return copy;
}

static void op_run(In *in, Store *s, int64_t sweep) {
    LLError err = {0};
    char *key = take_str(in, NULL), *method = take_str(in, NULL), *targets = take_str(in, NULL);
    int r = take_int(in);
    double alpha = take_double(in), lr = take_double(in);
    int64_t seed = take_int(in);
    char *config = take_config(in);
    const char *status = STATUSES[take(in) % 7];
    RunInfo info = {key, config, method, targets, r, alpha, lr, seed};
    int64_t run = 0;
    int ok = store_add_run(s, sweep, &info, &run, &err) == LL_OK;
    free(key), free(method), free(targets), free(config);
    if (!ok || strcmp(status, "pending") == 0) return;
    int claimed = 0;
    if (store_claim_run(s, run, &claimed, &err) != LL_OK || !claimed) return;
    int n_metrics = take(in) % 24;
    for (int k = 0; k < n_metrics; k++) {
        uint8_t how = take(in);
        int step = how & 1 ? take_int(in) : (int)(take(in) % 32);
        char *name = how & 2 ? take_str(in, NULL) : NULL;
        store_add_metric(s, run, step, SPLITS[(how >> 2) % 3], how & 2 ? name : (how & 4 ? "accuracy" : "loss"),
                         take_double(in), &err);
        free(name);
    }
    int n_ranks = take(in) % 6;
    for (int k = 0; k < n_ranks; k++) {
        char *module = take_str(in, NULL);
        int layer = (int8_t)take(in), rank = (int8_t)take(in), init = (int8_t)take(in);
        store_add_rank(s, run, layer, module, rank, init, &err);
        free(module);
    }
    if (strcmp(status, "running") == 0) return;
    /* One declaration a value: the order of evaluation inside an initializer list is unspecified. */
    double tl = take_double(in), el = take_double(in), acc = take(in) & 1 ? take_double(in) : NAN;
    double tokens_per_s = take_double(in), wall_s = take_double(in);
    int64_t trainable = take_int(in), total = take_int(in), peak = take_int(in);
    RunResult res = {status, tokens_per_s, wall_s, trainable, total, peak, tl, el, exp(el), acc, NAN, NULL, NULL};
    store_finish_run(s, run, &res, &err);
}

/* Statements after the store is closed: SQL text, or a value bound into a column. */
typedef struct {
    int is_set;
    char *text;       /* SQL, or the value when kind == 0 */
    size_t len;
    int column, row;  /* set: which column (SET_COLUMNS), which row (0: all) */
    int kind;         /* set: 0 text, 1 integer, 2 double */
    int64_t i;
    double d;
} Edit;

static const char *const SET_COLUMNS[] = {
    "runs.method", "runs.targets", "runs.config_json", "runs.key", "runs.status", "runs.r", "runs.alpha",
    "runs.lr", "runs.seed", "runs.eval_loss", "runs.accuracy", "runs.trainable_params", "runs.total_params",
    "runs.peak_mem_bytes", "runs.wall_s", "runs.sweep_id", "sweeps.name", "metrics.step", "metrics.value",
    "metrics.split", "metrics.name", "metrics.is_nan", "metrics.run_id", "adalora_ranks.module",
    "adalora_ranks.layer", "adalora_ranks.rank", "adalora_ranks.init_rank"};
#define N_SET_COLUMNS (int)(sizeof SET_COLUMNS / sizeof SET_COLUMNS[0])

static int deny_files(void *user, int action, const char *a, const char *b, const char *c, const char *d) {
    (void)user, (void)a, (void)b, (void)c, (void)d;
    return action == SQLITE_ATTACH || action == SQLITE_DETACH || action == SQLITE_PRAGMA ? SQLITE_DENY : SQLITE_OK;
}

static int sql_allowed(const char *sql) {
    static const char *const ok[] = {"INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "CREATE", "REPLACE"};
    while (*sql == ' ' || *sql == '\n' || *sql == '\t') sql++;
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++)
        if (strncasecmp(sql, ok[k], strlen(ok[k])) == 0) return 1;
    return 0;
}

static void apply_edits(const Edit *e, int n) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(g_db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return;
    }
    sqlite3_set_authorizer(db, deny_files, NULL);
    for (int k = 0; k < n; k++) {
        if (!e[k].is_set) {
            const char *sql = e[k].text;
            while (sql && *sql) {
                sqlite3_stmt *st = NULL;
                const char *tail = NULL;
                if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK || !st) {
                    sqlite3_finalize(st);
                    break;
                }
                if (sql_allowed(sqlite3_sql(st)))
                    while (sqlite3_step(st) == SQLITE_ROW) {
                    }
                sqlite3_finalize(st);
                if (!tail || tail == sql) break;
                sql = tail;
            }
            continue;
        }
        const char *tc = SET_COLUMNS[e[k].column];
        const char *dot = strchr(tc, '.');
        char sql[256];
        snprintf(sql, sizeof sql, "UPDATE %.*s SET %s = ?1%s", (int)(dot - tc), tc, dot + 1,
                 e[k].row ? " WHERE rowid = ?2" : "");
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (e[k].kind == 0) sqlite3_bind_text(st, 1, e[k].text, (int)e[k].len, SQLITE_TRANSIENT);
            else if (e[k].kind == 1) sqlite3_bind_int64(st, 1, e[k].i);
            else sqlite3_bind_double(st, 1, e[k].d);
            if (e[k].row) sqlite3_bind_int(st, 2, e[k].row);
            sqlite3_step(st);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
}

/* ---- checking what was written --------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    if (!b) abort();
    for (size_t got; (got = fread(b + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap + 1);
            if (!b) abort();
        }
    }
    fclose(f);
    b[n] = '\0';
    *len = n;
    return b;
}

static _Noreturn void complain(const char *file, const char *why, const char *text) {
    fprintf(stderr, "fuzz_report: %s: %s\n----\n%.4000s\n----\n", file, why, text ? text : "");
    abort();
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void check_output(const ReportSummary *sum) {
    for (int i = 0; i < sum->n_figs; i++) {
        const ReportFigure *f = &sum->figs[i];
        if (!gp_stem_ok(f->name)) complain(f->name, "a figure name that is not a file stem", NULL);
        for (const char *q = f->title; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f) complain(f->name, "a control character in the title", f->title);
        for (const char *q = f->note; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f) complain(f->name, "a control character in the note", f->note);
    }
    DIR *d = opendir(g_out);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        char path[1200], why[256];
        snprintf(path, sizeof path, "%s/%s", g_out, e->d_name);
        int gp = has_suffix(e->d_name, ".gp"), dat = has_suffix(e->d_name, ".dat");
        int text = has_suffix(e->d_name, ".md") || has_suffix(e->d_name, ".tex") || has_suffix(e->d_name, ".html");
        if (!gp && !dat && !text) continue;
        size_t len = 0;
        char *b = slurp(path, &len);
        if (!b) complain(e->d_name, "cannot be read", NULL);
        if (gp && !gp_check_script(b, len, why, sizeof why)) complain(e->d_name, why, b);
        if (dat && !gp_check_data(b, len, why, sizeof why)) complain(e->d_name, why, b);
        if (text) {
            for (size_t q = 0; q < len; q++)
                if (((unsigned char)b[q] < 0x20 && b[q] != '\n') || b[q] == 0x7f)
                    complain(e->d_name, "a control character other than the newline", b);
            if (has_suffix(e->d_name, ".html")) {
                int scripts = 0;
                for (const char *q = b; (q = strcasestr(q, "<script")); q++) scripts++;
                if (scripts != 1) complain(e->d_name, "a <script> element the report did not write", b);
            }
        }
        free(b);
    }
    closedir(d);
}

/* ---- the target ------------------------------------------------------------------------------ */

static void clean(void) {
    fuzz_rm_tree(g_out);
    static const char *const ext[] = {"", "-wal", "-shm", "-journal"};
    for (int k = 0; k < 4; k++) {
        char p[700];
        snprintf(p, sizeof p, "%s%s", g_db, ext[k]);
        unlink(p);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = fuzz_scratch_dir("report");
    snprintf(g_db, sizeof g_db, "%s/fuzz.db", dir);
    snprintf(g_out, sizeof g_out, "%s/out", dir);
    setenv("PATH", "/nonexistent", 1); /* no gnuplot: write, never render */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clean();
    In in = {data, size, 0, 0, 0};
    Store *s = NULL;
    LLError err = {0};
    if (store_open(g_db, 0, &s, &err) != LL_OK) abort();
    int64_t sweep = 0;
    char *first_sweep = NULL;
    Edit edits[48];
    int n_edits = 0;
    for (int op = 0; op < 48 && in.i < in.n; op++) {
        uint8_t code = take(&in) % 4;
        if (code == 0 || (code == 1 && sweep == 0)) {
            char *name = code == 0 ? take_str(&in, NULL) : strdup("fuzz");
            if (store_upsert_sweep(s, name, NULL, NULL, &sweep, &err) == LL_OK && !first_sweep) first_sweep = name;
            else free(name);
        }
        if (code == 1 && sweep) op_run(&in, s, sweep);
        if (code == 2 || code == 3) {
            Edit *e = &edits[n_edits++];
            memset(e, 0, sizeof *e);
            e->is_set = code == 3;
            if (code == 3) {
                e->column = take(&in) % N_SET_COLUMNS;
                e->row = take(&in) % 9;
                e->kind = take(&in) % 3;
                if (e->kind == 1) e->i = (int64_t)take_int(&in) * (take(&in) & 1 ? 1 : 4294967296LL);
                if (e->kind == 2) e->d = take_double(&in);
            }
            if (code == 2 || e->kind == 0) e->text = take_str(&in, &e->len);
        }
    }
    store_close(s);
    apply_edits(edits, n_edits);
    for (int k = 0; k < n_edits; k++) free(edits[k].text);
    const char *which = take(&in) & 1 ? first_sweep : NULL;
    ReportSummary sum;
    err.msg[0] = '\0';
    LLStatus st = report_write(g_db, which, g_out, &sum, &err);
    if (st != LL_OK && err.msg[0] == '\0') complain("report_write", "failed without a message", NULL);
    check_output(&sum);
    free(first_sweep);
    return 0;
}
