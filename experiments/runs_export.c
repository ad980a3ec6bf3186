/* runs_export: see runs_export.h for the columns, the types and both formats.
 *
 * Invariants kept here:
 *   - A cell is built once (runs_export_load) and both writers only print it: the CSV and the JSON
 *     cannot disagree on a value or a type.
 *   - Every string cell is written through csv_string or cJSON's escaping; nothing from a
 *     database reaches the output unescaped.
 */
#define _POSIX_C_SOURCE 200809L
#include "runs_export.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keys.h"

static RxCell *cell(const RunsExport *t, int row, int col) { return &t->cells[(size_t)row * t->n_cols + col]; }

int runs_export_col(const RunsExport *t, const char *name) {
    for (int c = 0; c < t->n_cols; c++)
        if (strcmp(t->cols[c], name) == 0) return c;
    return -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A config member as a typed cell: numbers take their key's type (train.lr a float even when 1). */
static void member_cell(const cJSON *m, RxCell *out) {
    memset(out, 0, sizeof *out);
    if (cJSON_IsBool(m)) {
        out->type = RX_BOOL, out->i = cJSON_IsTrue(m);
    } else if (cJSON_IsNumber(m)) {
        const KeySpec *ks = config_key_spec(m->string);
        double x = m->valuedouble;
        int integral = x == floor(x) && fabs(x) < 9007199254740992.0;
        if (ks ? ks->type == CFG_INT : integral) out->type = RX_INT, out->i = (int64_t)x;
        else out->type = RX_REAL, out->f = x;
    } else if (cJSON_IsString(m)) {
        out->type = RX_TEXT, out->s = ll_strdup(m->valuestring);
    } else if (cJSON_IsArray(m) || cJSON_IsObject(m)) {
        char *txt = cJSON_PrintUnformatted(m);
        out->type = RX_JSON, out->s = ll_strdup(txt ? txt : "null");
        cJSON_free(txt);
    }
}

LLStatus runs_export_load(Store *s, const char *sweep, RunsExport *t, LLError *err) {
    memset(t, 0, sizeof *t);
    StoreTable st;
    LLStatus rc = store_runs_table(s, sweep, &st, err);
    if (rc) return rc;
    int cj = -1;
    for (int c = 0; c < st.n_cols; c++)
        if (strcmp(st.cols[c], "config_json") == 0) cj = c;
    /* Parse every config once; collect the union of its keys. */
    cJSON **cfg = ll_calloc((size_t)st.n_rows + 1, sizeof(cJSON *));
    char **keys = NULL;
    int n_keys = 0;
    for (int r = 0; r < st.n_rows; r++) {
        const StoreValue *v = cj >= 0 ? &st.v[(size_t)r * st.n_cols + cj] : NULL;
        if (!v || v->type != STORE_TEXT) continue;
        cfg[r] = cJSON_Parse(v->s);
        if (!cJSON_IsObject(cfg[r])) continue; /* not ours: its row just has no config columns */
        const cJSON *m;
        cJSON_ArrayForEach(m, cfg[r]) {
            keys = ll_realloc(keys, (size_t)n_keys + 1, sizeof(char *));
            keys[n_keys++] = m->string;
        }
    }
    if (n_keys) qsort(keys, (size_t)n_keys, sizeof(char *), cmp_str);
    int n_unique = 0;
    for (int i = 0; i < n_keys; i++)
        if (n_unique == 0 || strcmp(keys[n_unique - 1], keys[i]) != 0) keys[n_unique++] = keys[i];
    t->n_run_cols = st.n_cols - (cj >= 0);
    t->n_cols = t->n_run_cols + n_unique;
    t->n_rows = st.n_rows;
    t->cols = ll_calloc((size_t)t->n_cols, sizeof(char *));
    t->cells = ll_calloc((size_t)t->n_rows * t->n_cols + 1, sizeof(RxCell));
    for (int c = 0, k = 0; c < st.n_cols; c++)
        if (c != cj) t->cols[k++] = ll_strdup(st.cols[c]);
    for (int i = 0; i < n_unique; i++) t->cols[t->n_run_cols + i] = ll_strdup(keys[i]);
    for (int r = 0; r < st.n_rows; r++) {
        for (int c = 0, k = 0; c < st.n_cols; c++) {
            if (c == cj) continue;
            StoreValue *v = &st.v[(size_t)r * st.n_cols + c];
            RxCell *x = cell(t, r, k++);
            x->type = v->type == STORE_INT ? RX_INT : v->type == STORE_REAL ? RX_REAL : v->type == STORE_TEXT ? RX_TEXT
                                                                                                             : RX_NULL;
            x->i = v->i, x->f = v->f, x->s = v->s;
            v->s = NULL; /* moved */
        }
        for (int i = 0; i < n_unique && cJSON_IsObject(cfg[r]); i++)
            member_cell(cJSON_GetObjectItemCaseSensitive(cfg[r], keys[i]), cell(t, r, t->n_run_cols + i));
    }
    for (int r = 0; r < st.n_rows; r++) cJSON_Delete(cfg[r]);
    ll_free(cfg);
    ll_free(keys);
    store_table_free(&st);
    return LL_OK;
}

void runs_export_free(RunsExport *t) {
    if (!t) return;
    for (size_t i = 0; i < (size_t)t->n_rows * t->n_cols; i++) ll_free(t->cells[i].s);
    for (int c = 0; c < t->n_cols; c++) ll_free(t->cols[c]);
    ll_free(t->cells);
    ll_free(t->cols);
    memset(t, 0, sizeof *t);
}

/* Rows, in order, picked by index; the others are freed. */
static void keep_rows(RunsExport *t, const int *rows, int n) {
    RxCell *cells = ll_calloc((size_t)n * t->n_cols + 1, sizeof(RxCell));
    for (int i = 0; i < n; i++)
        for (int c = 0; c < t->n_cols; c++) {
            cells[(size_t)i * t->n_cols + c] = *cell(t, rows[i], c);
            cell(t, rows[i], c)->s = NULL;
        }
    for (size_t i = 0; i < (size_t)t->n_rows * t->n_cols; i++) ll_free(t->cells[i].s);
    ll_free(t->cells);
    t->cells = cells;
    t->n_rows = n;
}

static int all_of(const char *s, int (*pred)(int)) {
    for (; *s; s++)
        if (!pred((unsigned char)*s)) return 0;
    return 1;
}

LLStatus runs_export_select(RunsExport *t, const char *const *which, int n, LLError *err) {
    int cid = runs_export_col(t, "id"), ckey = runs_export_col(t, "key");
    int *rows = ll_malloc((size_t)n + 1, sizeof(int)), kept = 0;
    LLStatus st = LL_OK;
    for (int k = 0; k < n && !st; k++) {
        const char *w = which[k];
        int is_id = w[0] && all_of(w, isdigit), is_key = strlen(w) >= 4 && all_of(w, isxdigit);
        int found = -1, matches = 0;
        char ids[128] = "";
        size_t len = 0;
        for (int r = 0; r < t->n_rows; r++) {
            const RxCell *id = cid >= 0 ? cell(t, r, cid) : NULL, *key = ckey >= 0 ? cell(t, r, ckey) : NULL;
            int hit = (is_id && id && id->type == RX_INT && id->i == strtoll(w, NULL, 10)) ||
                      (is_key && key && key->type == RX_TEXT && strncasecmp(key->s, w, strlen(w)) == 0);
            if (!hit) continue;
            if (!matches++) found = r;
            if (id && id->type == RX_INT) config_append(ids, sizeof ids, &len, "%s%lld", matches > 1 ? ", " : "",
                                                        (long long)id->i);
        }
        if (!is_id && !is_key)
            st = ll_err(err, LL_ERR_CONFIG, "'%s' is neither a run id nor a run key (4 to 16 hex digits)", w);
        else if (matches == 0) st = ll_err(err, LL_ERR_CONFIG, "no run '%s' in the database", w);
        else if (matches > 1)
            st = ll_err(err, LL_ERR_CONFIG, "'%s' matches %d runs (ids %s); give more digits of the key", w, matches,
                        ids);
        int seen = 0;
        for (int i = 0; i < kept; i++) seen |= rows[i] == found;
        if (!st && !seen) rows[kept++] = found;
    }
    if (!st) keep_rows(t, rows, kept);
    ll_free(rows);
    return st;
}

static int cell_equal(const RxCell *a, const RxCell *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case RX_NULL: return 1;
    case RX_INT:
    case RX_BOOL: return a->i == b->i;
    case RX_REAL: return a->f == b->f || (isnan(a->f) && isnan(b->f));
    default: return strcmp(a->s, b->s) == 0;
    }
}

int runs_export_keep_differing(RunsExport *t) {
    int *keep = ll_malloc((size_t)t->n_cols, sizeof(int)), n_keep = 0;
    for (int c = 0; c < t->n_cols; c++) {
        int differs = c < t->n_run_cols;
        for (int r = 1; r < t->n_rows && !differs; r++) differs = !cell_equal(cell(t, 0, c), cell(t, r, c));
        if (differs) keep[n_keep++] = c;
    }
    int dropped = t->n_cols - n_keep;
    RxCell *cells = ll_calloc((size_t)t->n_rows * n_keep + 1, sizeof(RxCell));
    for (int r = 0; r < t->n_rows; r++)
        for (int c = 0; c < t->n_cols; c++) {
            int k = 0;
            while (k < n_keep && keep[k] != c) k++;
            if (k < n_keep) cells[(size_t)r * n_keep + k] = *cell(t, r, c);
            else ll_free(cell(t, r, c)->s);
        }
    for (int c = 0, k = 0; c < t->n_cols; c++) {
        if (k < n_keep && keep[k] == c) t->cols[k++] = t->cols[c];
        else ll_free(t->cols[c]);
    }
    ll_free(t->cells);
    t->cells = cells;
    t->n_cols = n_keep;
    ll_free(keep);
    return dropped;
}

/* Shortest round-trip text of a finite double; inf/-inf otherwise (NaN is never printed). */
static void real_text(double x, char *out, size_t cap) {
    if (isinf(x)) snprintf(out, cap, "%s", x > 0 ? "inf" : "-inf");
    else config_fmt_number(x, 0, out, cap);
}

void runs_export_cell_text(const RxCell *c, char *out, size_t cap) {
    size_t len = 0;
    switch (c->type) {
    case RX_NULL: snprintf(out, cap, "-"); break;
    case RX_INT: snprintf(out, cap, "%lld", (long long)c->i); break;
    case RX_BOOL: snprintf(out, cap, "%s", c->i ? "true" : "false"); break;
    case RX_REAL:
        if (isnan(c->f)) snprintf(out, cap, "-");
        else real_text(c->f, out, cap);
        break;
    case RX_TEXT: snprintf(out, cap, "%s", c->s); break;
    case RX_JSON: /* ["q_proj","v_proj"] -> [q_proj,v_proj] */
        for (const char *p = c->s; *p && len + 1 < cap; p++)
            if (*p != '"') out[len++] = *p;
        out[len] = '\0';
        break;
    }
}

/* ---- CSV ------------------------------------------------------------------------------------- */

static void csv_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void csv_cell(FILE *f, const RxCell *c) {
    char num[64];
    switch (c->type) {
    case RX_NULL: break;
    case RX_INT: fprintf(f, "%lld", (long long)c->i); break;
    case RX_BOOL: fputs(c->i ? "true" : "false", f); break;
    case RX_REAL:
        if (!isnan(c->f)) {
            real_text(c->f, num, sizeof num);
            fputs(num, f);
        }
        break;
    case RX_TEXT:
    case RX_JSON: csv_string(f, c->s); break;
    }
}

LLStatus runs_export_csv(const RunsExport *t, FILE *f) {
    for (int c = 0; c < t->n_cols; c++) {
        if (c) fputc(',', f);
        if (strpbrk(t->cols[c], ",\"\r\n")) csv_string(f, t->cols[c]); /* names quoted only if they must be */
        else fputs(t->cols[c], f);
    }
    fputs("\r\n", f);
    for (int r = 0; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) {
            if (c) fputc(',', f);
            csv_cell(f, cell(t, r, c));
        }
        fputs("\r\n", f);
    }
    return ferror(f) ? LL_ERR_IO : LL_OK;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* Numbers go in as text of our own (raw): cJSON prints a double with 15 digits when they come
 * within an epsilon of it, which is not always the same double; this text always is. */
static cJSON *json_cell(const RxCell *c) {
    char num[64];
    switch (c->type) {
    case RX_INT: snprintf(num, sizeof num, "%lld", (long long)c->i); return cJSON_CreateRaw(num);
    case RX_BOOL: return cJSON_CreateBool((cJSON_bool)c->i);
    case RX_REAL:
        if (!isfinite(c->f)) return cJSON_CreateNull();
        real_text(c->f, num, sizeof num);
        return cJSON_CreateRaw(num);
    case RX_TEXT: return cJSON_CreateString(c->s);
    case RX_JSON: {
        cJSON *j = cJSON_Parse(c->s);
        return j ? j : cJSON_CreateString(c->s);
    }
    default: return cJSON_CreateNull();
    }
}

LLStatus runs_export_json(const RunsExport *t, FILE *f) {
    fputs("[", f);
    for (int r = 0; r < t->n_rows; r++) {
        cJSON *o = cJSON_CreateObject();
        for (int c = 0; c < t->n_cols; c++) cJSON_AddItemToObject(o, t->cols[c], json_cell(cell(t, r, c)));
        char *txt = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n%s", r ? "," : "", txt ? txt : "{}");
        cJSON_free(txt);
        cJSON_Delete(o);
    }
    fputs(t->n_rows ? "\n]\n" : "]\n", f);
    return ferror(f) ? LL_ERR_IO : LL_OK;
}

LLStatus runs_export_write_csv(Store *s, const char *sweep, const char *dir, const char *name, LLError *err) {
    RunsExport t;
    LLStatus st = runs_export_load(s, sweep, &t, err);
    if (st) return st;
    char path[1200], tmp[1300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) st = ll_err(err, LL_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    if (!st && runs_export_csv(&t, f) != LL_OK) st = ll_err(err, LL_ERR_IO, "writing '%s' failed", tmp);
    if (f && fclose(f) != 0 && !st) st = ll_err(err, LL_ERR_IO, "writing '%s': %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0) st = ll_err(err, LL_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                                                    strerror(errno));
    if (st && f) remove(tmp);
    runs_export_free(&t);
    return st;
}
