/* Tests of the runs export (experiments/runs_export.c) and of the values the store records for a
 * run's lr and alpha (sweep_run_info).
 *
 * A fixture database holds four runs of one sweep, recorded as a sweep records them (configs
 * expanded from YAML, rows from sweep_run_info): LoRA at lr 0.003 with r 4 and r 8, LoRA at lr 0.01
 * with r 4, and full fine-tuning at lr 0.003. One run failed with an error message holding a comma,
 * a quote and a newline; one has no eval loss (NaN). The CSV is parsed back with an RFC 4180 reader
 * written here and checked cell by cell against the table; the JSON is parsed with cJSON; the diff
 * of two runs must keep exactly the keys that differ. `WHERE lr = 0.003` is asked of the sqlite3
 * program, the way a user would.
 */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "runs_export"
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "experiments/config.h"
#include "experiments/runs_export.h"
#include "experiments/store.h"
#include "experiments/sweep.h"
#include "util.h"

#define ERROR_TEXT "bad, \"quoted\"\nsecond line"

/* A new folder (into dir[512]) holding results.db with the four runs; its path into db. */
static char dir[512];
static void make_db(char *db, size_t cap) {
    LLError err = {0};
    ConfigDoc *d = NULL;
    CK_OK(config_load_text("x.yaml",
                           "name: exp\nbase: {path: models/base}\ntask: {data: data/brown}\n"
                           "adapter: {alpha: 0.1}\n"
                           "sweep:\n  grid:\n    adapter.method: [lora, full]\n    train.lr: [0.003, 0.01]\n"
                           "    adapter.r: [4, 8]\n"
                           "  exclude:\n    - {adapter.method: full, train.lr: 0.01}\n"
                           "    - {train.lr: 0.01, adapter.r: 8}\n",
                           NULL, 0, &d, &err));
    SweepPlan p;
    CK_OK(sweep_expand(d, &p, &err));
    ck_assert_int_eq(p.n, 4); /* lora .003 r4, lora .003 r8, lora .01 r4, full .003 */
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(db, cap, "%s/results.db", dir);
    Store *s = tu_store_open(db, 0);
    int64_t sweep_id;
    CK_OK(store_upsert_sweep(s, "exp", "x.yaml", d->text, &sweep_id, &err));
    for (int i = 0; i < p.n; i++) {
        char targets[128];
        RunInfo info;
        sweep_run_info(&p.points[i].rc, targets, sizeof targets, &info);
        int64_t run_id;
        int claimed;
        CK_OK(store_add_run(s, sweep_id, &info, &run_id, &err));
        CK_OK(store_claim_run(s, run_id, &claimed, &err));
        /* train_loss 0.1 + 0.2 = 0.30000000000000004 needs 17 digits: a writer that prints 15 loses it. */
        RunResult res = {.status = i == 1 ? "failed" : "done", .tokens_per_s = 100.0, .wall_s = 2.5,
                         .trainable = 1000, .total = 50000, .peak_mem = 1 << 20, .train_loss = 0.1 + 0.2,
                         .eval_loss = i == 2 ? NAN : 1.5 + i, .eval_ppl = exp(1.5), .accuracy = NAN,
                         .macro_f1 = NAN, .error = i == 1 ? ERROR_TEXT : NULL};
        CK_OK(store_finish_run(s, run_id, &res, &err));
    }
    store_close(s);
    sweep_plan_free(&p);
    config_doc_free(d);
}

static void load(const char *db, RunsExport *t) {
    LLError err = {0};
    Store *s = tu_store_open(db, 1);
    CK_OK(runs_export_load(s, NULL, t, &err));
    store_close(s);
}

static const RxCell *at(const RunsExport *t, int row, const char *col) {
    int c = runs_export_col(t, col);
    ck_assert_msg(c >= 0, "no column %s", col);
    return &t->cells[(size_t)row * t->n_cols + c];
}

/* ---- an RFC 4180 reader, to parse the CSV back ------------------------------------------------ */

typedef struct {
    char *text;
    int quoted;
} Field;

/* Reads one record from *p (CRLF or LF ends it); fields into out (at most cap). Returns the count,
 * 0 at the end of the text. */
static int csv_record(const char **p, Field *out, int cap) {
    if (!**p) return 0;
    int n = 0;
    for (;;) {
        size_t len = 0, room = 64;
        char *buf = malloc(room);
        int quoted = **p == '"';
        if (quoted) {
            (*p)++;
            for (;;) {
                ck_assert_msg(**p, "unterminated quoted field");
                if (**p == '"' && (*p)[1] == '"') (*p) += 2, buf[len++] = '"';
                else if (**p == '"') {
                    (*p)++;
                    break;
                } else buf[len++] = *(*p)++;
                if (len + 2 > room) buf = realloc(buf, room *= 2);
            }
        } else {
            while (**p && **p != ',' && **p != '\r' && **p != '\n') {
                ck_assert_msg(**p != '"', "a quote inside an unquoted field");
                buf[len++] = *(*p)++;
                if (len + 2 > room) buf = realloc(buf, room *= 2);
            }
        }
        buf[len] = '\0';
        ck_assert_int_lt(n, cap);
        out[n].text = buf, out[n].quoted = quoted;
        n++;
        if (**p == ',') {
            (*p)++;
            continue;
        }
        if (**p == '\r') (*p)++;
        ck_assert_msg(**p == '\n' || !**p, "a record must end with a line break");
        if (**p) (*p)++;
        return n;
    }
}

START_TEST(t_lr_as_written) {
    char db[512], cmd[1200];
    make_db(db, sizeof db);
    /* The float field holds 0.00300000002607703; the row holds the 0.003 the config wrote. */
    snprintf(cmd, sizeof cmd,
             "sqlite3 '%s' \"SELECT count(*) FROM runs WHERE lr = 0.003; SELECT count(*) FROM runs WHERE lr = 0.01;"
             " SELECT count(*) FROM runs WHERE alpha = 0.1\"",
             db);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    int a = -1, b = -1, c = -1;
    ck_assert_int_eq(fscanf(f, "%d %d %d", &a, &b, &c), 3);
    ck_assert_int_eq(pclose(f), 0);
    ck_assert_int_eq(a, 3);
    ck_assert_int_eq(b, 1);
    ck_assert_int_eq(c, 3); /* the three LoRA runs; full fine-tuning has no alpha (0) */
    RunsExport t;
    load(db, &t);
    ck_assert(at(&t, 0, "lr")->type == RX_REAL && at(&t, 0, "lr")->f == 0.003);
    ck_assert(at(&t, 0, "train.lr")->type == RX_REAL && at(&t, 0, "train.lr")->f == 0.003);
    runs_export_free(&t);
}
END_TEST

START_TEST(t_columns_and_types) {
    char db[512];
    make_db(db, sizeof db);
    RunsExport t;
    load(db, &t);
    ck_assert_int_eq(t.n_rows, 4);
    ck_assert_str_eq(t.cols[0], "id");
    ck_assert_str_eq(t.cols[1], "sweep");
    ck_assert_int_lt(runs_export_col(&t, "config_json"), 0); /* expanded instead */
    ck_assert_int_ge(runs_export_col(&t, "eval_loss"), 0);
    /* Config keys after the run columns, sorted, the union over runs. */
    for (int c = t.n_run_cols + 1; c < t.n_cols; c++) ck_assert_int_lt(strcmp(t.cols[c - 1], t.cols[c]), 0);
    ck_assert(at(&t, 0, "adapter.r")->type == RX_INT && at(&t, 0, "adapter.r")->i == 4);
    ck_assert(at(&t, 3, "adapter.r")->type == RX_NULL); /* full fine-tuning has no rank */
    ck_assert(at(&t, 0, "adapter.use_dora")->type == RX_BOOL);
    ck_assert(at(&t, 0, "adapter.targets")->type == RX_JSON);
    ck_assert_str_eq(at(&t, 0, "adapter.targets")->s, "[\"q_proj\",\"v_proj\"]");
    ck_assert(at(&t, 0, "train.steps")->type == RX_INT);
    ck_assert(at(&t, 2, "eval_loss")->type == RX_NULL);
    ck_assert(at(&t, 1, "error")->type == RX_TEXT);
    ck_assert_str_eq(at(&t, 1, "error")->s, ERROR_TEXT);
    runs_export_free(&t);
}
END_TEST

START_TEST(t_csv_round_trip) {
    char db[512], path[512];
    make_db(db, sizeof db);
    RunsExport t;
    load(db, &t);
    LLError err = {0};
    Store *s = tu_store_open(db, 1);
    CK_OK(runs_export_write_csv(s, NULL, dir, "runs.csv", &err));
    store_close(s);
    ck_assert_int_eq(tu_count_entries(dir, ".tmp"), 0);
    snprintf(path, sizeof path, "%s/runs.csv", dir);
    char *text = tu_slurp(path, NULL);
    const char *p = text;
    Field *fields = calloc((size_t)t.n_cols + 1, sizeof(Field));
    ck_assert_int_eq(csv_record(&p, fields, t.n_cols + 1), t.n_cols);
    for (int c = 0; c < t.n_cols; c++) {
        ck_assert_str_eq(fields[c].text, t.cols[c]);
        free(fields[c].text);
    }
    for (int r = 0; r < t.n_rows; r++) {
        ck_assert_int_eq(csv_record(&p, fields, t.n_cols + 1), t.n_cols);
        for (int c = 0; c < t.n_cols; c++) {
            const RxCell *x = &t.cells[(size_t)r * t.n_cols + c];
            const Field *f = &fields[c];
            switch (x->type) {
            case RX_NULL: ck_assert_msg(!f->quoted && !f->text[0], "%s: %s", t.cols[c], f->text); break;
            case RX_INT: ck_assert(!f->quoted && strtoll(f->text, NULL, 10) == x->i); break;
            case RX_REAL: /* unquoted, and the shortest text that reads back as the same double */
                ck_assert(!f->quoted);
                if (isnan(x->f)) ck_assert_str_eq(f->text, "");
                else ck_assert_msg(strtod(f->text, NULL) == x->f, "%s: %s", t.cols[c], f->text);
                break;
            case RX_BOOL: ck_assert_str_eq(f->text, x->i ? "true" : "false"); break;
            default: ck_assert(f->quoted); ck_assert_str_eq(f->text, x->s);
            }
            free(f->text);
        }
    }
    ck_assert_int_eq(csv_record(&p, fields, t.n_cols + 1), 0);
    ck_assert_ptr_nonnull(strstr(text, ",0.003,")); /* lr, not 0.0030000000260770321 */
    free(fields);
    free(text);
    /* sqlite3 imports it: one row per run, the error message whole. */
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "sqlite3 :memory: \".import --csv '%s' r\" \"SELECT count(*), sum(length(error) = %d) FROM r\"", path,
             (int)strlen(ERROR_TEXT));
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    int n = -1, whole = -1;
    ck_assert_int_eq(fscanf(f, "%d|%d", &n, &whole), 2);
    ck_assert_int_eq(pclose(f), 0);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(whole, 1);
    runs_export_free(&t);
}
END_TEST

START_TEST(t_json_parses) {
    char db[512], path[512];
    make_db(db, sizeof db);
    RunsExport t;
    load(db, &t);
    snprintf(path, sizeof path, "%s/runs.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_int_eq(runs_export_json(&t, f), LL_OK);
    fclose(f);
    char *text = tu_slurp(path, NULL);
    cJSON *j = cJSON_Parse(text);
    ck_assert_msg(cJSON_IsArray(j), "not a JSON array:\n%s", text);
    ck_assert_int_eq(cJSON_GetArraySize(j), 4);
    const cJSON *r0 = cJSON_GetArrayItem(j, 0), *r1 = cJSON_GetArrayItem(j, 1), *r2 = cJSON_GetArrayItem(j, 2);
    ck_assert_int_eq(cJSON_GetArraySize(r0), t.n_cols);
    /* Every number is the table's double exactly (created, started, ended need all 17 digits). */
    for (int r = 0; r < t.n_rows; r++)
        for (int c = 0; c < t.n_cols; c++) {
            const RxCell *x = &t.cells[(size_t)r * t.n_cols + c];
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, r), t.cols[c]);
            if (x->type == RX_REAL && isfinite(x->f))
                ck_assert_msg(cJSON_IsNumber(v) && v->valuedouble == x->f, "%s: %.17g", t.cols[c], x->f);
            if (x->type == RX_INT) ck_assert(cJSON_IsNumber(v) && v->valuedouble == (double)x->i);
            if (x->type == RX_NULL) ck_assert(cJSON_IsNull(v));
        }
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(r0, "train.lr");
    ck_assert(cJSON_IsNumber(lr) && lr->valuedouble == 0.003);
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r0, "lr")));
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r0, "adapter.r")));
    ck_assert(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(r0, "adapter.use_dora")));
    ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r0, "adapter.targets")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r0, "status")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r2, "eval_loss")));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r1, "error");
    ck_assert(cJSON_IsString(e));
    ck_assert_str_eq(e->valuestring, ERROR_TEXT);
    cJSON_Delete(j);
    free(text);
    runs_export_free(&t);
}
END_TEST

/* The config keys a diff keeps (the run columns always stay), joined with spaces. */
static void diff_keys(const char *db, const char *const *which, int n, char *out, size_t cap) {
    RunsExport t;
    LLError err = {0};
    load(db, &t);
    CK_OK(runs_export_select(&t, which, n, &err));
    ck_assert_int_eq(t.n_rows, n);
    int before = t.n_cols, dropped = runs_export_keep_differing(&t);
    ck_assert_int_eq(t.n_cols, before - dropped);
    out[0] = '\0';
    for (int c = t.n_run_cols; c < t.n_cols; c++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", c > t.n_run_cols ? " " : "", t.cols[c]);
    runs_export_free(&t);
}

START_TEST(t_diff) {
    char db[512], keys[1024];
    make_db(db, sizeof db);
    RunsExport t;
    load(db, &t);
    char key1[17], key3[17];
    snprintf(key1, sizeof key1, "%s", at(&t, 0, "key")->s);
    snprintf(key3, sizeof key3, "%s", at(&t, 2, "key")->s);
    runs_export_free(&t);
    /* Runs 1 and 2: only the rank differs. By id. */
    const char *a[] = {"1", "2"};
    diff_keys(db, a, 2, keys, sizeof keys);
    ck_assert_str_eq(keys, "adapter.r");
    /* Runs 1 and 3: only lr. By run key, and by a prefix of it. */
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%.6s", key3);
    const char *b[] = {key1, prefix};
    diff_keys(db, b, 2, keys, sizeof keys);
    ck_assert_str_eq(keys, "train.lr");
    /* LoRA against full fine-tuning: the method and every adapter key full fine-tuning drops. */
    const char *c[] = {"1", "4"};
    diff_keys(db, c, 2, keys, sizeof keys);
    ck_assert_str_eq(keys, "adapter.alpha adapter.alpha_pattern adapter.dropout adapter.init adapter.layers "
                           "adapter.method adapter.r adapter.rank_pattern adapter.targets adapter.use_dora "
                           "adapter.use_rslora");
    /* One run: nothing differs. */
    const char *one[] = {"2"};
    diff_keys(db, one, 1, keys, sizeof keys);
    ck_assert_str_eq(keys, "");
}
END_TEST

START_TEST(t_select_errors) {
    char db[512];
    make_db(db, sizeof db);
    RunsExport t;
    LLError err = {0};
    static const struct {
        const char *which, *want;
    } cases[] = {
        {"99", "no run '99' in the database"},
        {"beef0000", "no run 'beef0000'"},
        {"zz", "'zz' is neither a run id nor a run key"},
        {"abc", "'abc' is neither a run id nor a run key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        load(db, &t);
        ck_assert_int_eq(runs_export_select(&t, &cases[i].which, 1, &err), LL_ERR_CONFIG);
        ck_assert_msg(strstr(err.msg, cases[i].want), "%s lacks %s", err.msg, cases[i].want);
        runs_export_free(&t);
    }
}
END_TEST

Suite *runs_export_suite(void) {
    Suite *s = suite_create("runs_export");
    TCase *core = tu_tcase(s, "core", 1, 30);
    tcase_add_test(core, t_lr_as_written);
    tcase_add_test(core, t_columns_and_types);
    tcase_add_test(core, t_csv_round_trip);
    tcase_add_test(core, t_json_parses);
    tcase_add_test(core, t_diff);
    TCase *limits = tu_tcase(s, "limits", 1, 30);
    tcase_add_test(limits, t_select_errors);
    return s;
}
