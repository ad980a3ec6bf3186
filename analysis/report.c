/* report: the units of a database and the order in which one unit's report is written (see
 * report.h for what is written and why; report_int.h for which file writes what).
 *
 * Invariants
 *   - The database is opened read-only and read only through the store's query functions; the
 *     report never changes it, so it is safe to run while a sweep is writing.
 *   - A unit's runs are exactly the runs whose sweep and task match it; nothing of another unit
 *     enters its figures or tables (report.h, "Units"). Within a unit that mixes tasks (mix), the
 *     tables gain a task column, legends name the task, and bold compares rows of one task.
 *   - Unit names are file stems ([A-Za-z0-9._-], esc_file_stem), unique without case, so units
 *     never share a folder even on a case-insensitive file system.
 *   - gnuplot is forked only after the Store is closed: no SQLite connection crosses fork().
 *   - Statistics use only `done` runs; a figure whose data is absent is left out with a reason,
 *     never drawn empty and never an error.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/report.h"
#include "analysis/report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "experiments/runs_export.h"

/* ---- reading the runs ------------------------------------------------------------------------- */

/* "a, b, c" of the distinct sweep names of the rows (those with keep[i], when keep is given). */
static void sweep_names(const RunRow *rows, int n, const int *keep, char *out, size_t cap) {
    out[0] = '\0';
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (!rows[i].sweep || (keep && !keep[i])) continue;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = rows[j].sweep && (!keep || keep[j]) && strcmp(rows[j].sweep, rows[i].sweep) == 0;
        if (seen) continue;
        int w = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", rows[i].sweep);
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
}

/* Opens db read-only and lists the runs of sweep (NULL: all). With no run, or none done, the error
 * says what the database holds (LL_ERR_STATE); the store stays open for the caller otherwise. */
static LLStatus read_runs(const char *db, const char *sweep, Store **store, RunRow **rows, int *n, LLError *err) {
    *store = NULL;
    *rows = NULL;
    *n = 0;
    if (!db || !*db) return ll_err(err, LL_ERR_CONFIG, "report: no database given (--db FILE)");
    if (!ll_file_exists(db))
        return ll_err(err, LL_ERR_IO, "no database at '%s' (run `loralab sweep` first, or pass --db FILE)", db);
    LLStatus st = store_open(db, 1, store, err);
    if (st) return st;
    st = store_list_runs(*store, sweep, rows, n, err);
    int done = 0, diverged = 0;
    for (int i = 0; i < *n; i++) {
        done += strcmp((*rows)[i].status, "done") == 0;
        diverged += strcmp((*rows)[i].status, "diverged") == 0;
    }
    if (!st && *n == 0 && sweep) {
        RunRow *all = NULL;
        int na = 0;
        char names[512] = "";
        if (store_list_runs(*store, NULL, &all, &na, err) == LL_OK) sweep_names(all, na, NULL, names, sizeof names);
        esc_clean(names); /* the message reaches a terminal */
        store_free_runs(all, na);
        st = ll_err(err, LL_ERR_STATE, "no runs of sweep '%s' in %s: nothing to report%s%s%s", sweep, db,
                    names[0] ? " (its sweeps: " : " (it holds no runs)", names, names[0] ? ")" : "");
    } else if (!st && *n == 0) {
        st = ll_err(err, LL_ERR_STATE,
                    "the database %s holds no runs: nothing to report (run `loralab sweep CONFIG.yaml --db %s` first)",
                    db, db);
    } else if (!st && done == 0) {
        st = ll_err(err, LL_ERR_STATE,
                    "no finished runs in %s%s%s: %d run%s, none done (%d diverged, %d pending, running or failed): "
                    "nothing to report yet",
                    db, sweep ? ", sweep " : "", sweep ? sweep : "", *n, *n == 1 ? "" : "s", diverged,
                    *n - done - diverged);
    }
    if (st) {
        store_free_runs(*rows, *n);
        *rows = NULL;
        *n = 0;
        store_close(*store);
        *store = NULL;
    }
    return st;
}

/* ---- units ------------------------------------------------------------------------------------ */

static int by_task(const ReportOptions *o) { return o->group_by && strcmp(o->group_by, "task.data") == 0; }

/* Does row i (task t) belong to unit u? */
static int in_unit(const ReportUnit *u, const RunRow *r, const char *t) {
    if (u->sweep && !(r->sweep && strcmp(u->sweep, r->sweep) == 0)) return 0;
    return !u->task || strcmp(u->task, t) == 0;
}

void report_free_units(ReportUnit *u, int n) {
    if (!u) return;
    for (int i = 0; i < n; i++) {
        free(u[i].sweep);
        free(u[i].task);
    }
    free(u);
}

/* "task sotu (data/sotu)" or "no task recorded". */
static void task_words(const char *task, char *out, size_t cap) {
    char label[96];
    rp_task_label(task, label, sizeof label);
    if (!task || !*task) snprintf(out, cap, "no task recorded");
    else if (strcmp(label, task) == 0) snprintf(out, cap, "task %s", task);
    else snprintf(out, cap, "task %s (%s)", label, task);
}

LLStatus report_units(const char *db, const ReportOptions *o, ReportUnit **units, int *n_units, LLError *err) {
    *units = NULL;
    *n_units = 0;
    Store *store = NULL;
    RunRow *rows = NULL;
    int n = 0;
    LLStatus st = read_runs(db, o->sweep, &store, &rows, &n, err);
    if (st) return st;
    store_close(store);
    char **task = ll_calloc((size_t)n, sizeof *task);
    for (int i = 0; i < n; i++) task[i] = rp_config_task(rows[i].config_json);
    ReportUnit *u = NULL;
    int nu = 0;
    for (int i = 0; i < n; i++) {
        const char *sw = o->mix || by_task(o) ? NULL : rows[i].sweep ? rows[i].sweep : "";
        const char *tk = o->mix ? NULL : task[i];
        int k = 0;
        while (k < nu && !((sw ? u[k].sweep && strcmp(u[k].sweep, sw) == 0 : !u[k].sweep) &&
                           (tk ? u[k].task && strcmp(u[k].task, tk) == 0 : !u[k].task)))
            k++;
        if (k == nu) {
            u = ll_realloc(u, (size_t)nu + 1, sizeof *u);
            memset(&u[nu], 0, sizeof u[nu]);
            u[nu].sweep = sw ? ll_strdup(sw) : NULL;
            u[nu].task = tk ? ll_strdup(tk) : NULL;
            nu++;
        }
        u[k].n_runs++;
        u[k].n_done += strcmp(rows[i].status, "done") == 0;
    }
    /* Names and titles. */
    int *keep = ll_calloc((size_t)n, sizeof *keep);
    for (int k = 0; k < nu; k++) {
        ReportUnit *x = &u[k];
        char base[96], label[96], words[200], sweeps[160];
        rp_task_label(x->task, label, sizeof label);
        for (int i = 0; i < n; i++) keep[i] = in_unit(x, &rows[i], task[i]);
        sweep_names(rows, n, keep, sweeps, sizeof sweeps);
        int tasks_of_sweep = 0; /* distinct tasks in this unit's sweep */
        if (x->sweep)
            for (int i = 0; i < n; i++) {
                if (!(rows[i].sweep && strcmp(rows[i].sweep, x->sweep) == 0)) continue;
                int seen = 0;
                for (int j = 0; j < i && !seen; j++)
                    seen = rows[j].sweep && strcmp(rows[j].sweep, x->sweep) == 0 && strcmp(task[j], task[i]) == 0;
                tasks_of_sweep += !seen;
            }
        task_words(x->task, words, sizeof words);
        if (!x->task) {
            /* A mixed unit: its tasks by label ("tasks sotu, spam"), or the one task's words. */
            const char *first = NULL;
            size_t len = 0;
            int nt = 0;
            for (int i = 0; i < n; i++) {
                int seen = 0;
                for (int j = 0; j < i && !seen; j++) seen = strcmp(task[j], task[i]) == 0;
                if (seen) continue;
                if (!nt++) first = task[i];
                char tl[96];
                rp_task_label(task[i], tl, sizeof tl);
                int w = snprintf(words + len, sizeof words - len, "%s%s", len ? ", " : "tasks ", tl[0] ? tl : "none");
                if (w > 0 && (size_t)w < sizeof words - len) len += (size_t)w;
            }
            if (nt == 1) task_words(first, words, sizeof words);
        }
        if (o->mix) {
            snprintf(base, sizeof base, "all");
            snprintf(x->title, sizeof x->title, "%s, sweep%s %s", words, strchr(sweeps, ',') ? "s" : "", sweeps);
        } else if (by_task(o)) {
            snprintf(base, sizeof base, "%s", label[0] ? label : "no-task");
            snprintf(x->title, sizeof x->title, "%s, sweep%s %s", words, strchr(sweeps, ',') ? "s" : "", sweeps);
        } else {
            if (tasks_of_sweep > 1) snprintf(base, sizeof base, "%s-%s", x->sweep, label[0] ? label : "no-task");
            else snprintf(base, sizeof base, "%s", x->sweep);
            snprintf(x->title, sizeof x->title, "%s, sweep %s", words, x->sweep);
        }
        esc_clean(x->title);
        char stem[64];
        esc_file_stem(stem, sizeof stem, base);
        for (int t = 1;; t++) {
            if (t == 1) snprintf(x->name, sizeof x->name, "%s", stem);
            else snprintf(x->name, sizeof x->name, "%s_%d", stem, t);
            /* index.html is the root's own file: no unit folder may take its name. */
            int taken = strcasecmp(x->name, "index.html") == 0;
            for (int j = 0; j < k && !taken; j++) taken = strcasecmp(u[j].name, x->name) == 0;
            if (!taken) break;
        }
    }
    free(keep);
    for (int i = 0; i < n; i++) free(task[i]);
    free(task);
    store_free_runs(rows, n);
    *units = u;
    *n_units = nu;
    return LL_OK;
}

/* ---- one unit's report ------------------------------------------------------------------------ */

LLStatus report_write_unit(const char *db, const ReportOptions *o, const ReportUnit *u, const char *out_dir,
                           ReportSummary *sum, LLError *err) {
    ReportSummary local;
    if (!sum) sum = &local;
    memset(sum, 0, sizeof *sum);
    if (!out_dir || !*out_dir) return ll_err(err, LL_ERR_CONFIG, "report: no output folder given (--out DIR)");
    ReportUnit *all = NULL;
    int n_all = 0;
    if (!u) {
        /* Everything o selects, as one unit. */
        ReportOptions mixed = *o;
        mixed.mix = 1;
        LLStatus st = report_units(db, &mixed, &all, &n_all, err);
        if (st) return st;
        LL_ASSERT(n_all == 1);
        u = &all[0];
    }
    RpCtx c = {0};
    c.db = db;
    c.dir = out_dir;
    c.opt = o;
    c.unit = u;
    c.sum = sum;
    snprintf(c.where, sizeof c.where, "%s", u->title);
    snprintf(c.stem, sizeof c.stem, "%s", u->name);
    RunRow *rows = NULL, *mine = NULL;
    char **task = NULL, **mine_task = NULL;
    int n = 0, nm = 0;
    RpSel *sel = NULL;
    int ns = 0;
    RpTables *tables = NULL;
    LLStatus st = read_runs(db, o->sweep, &c.store, &rows, &n, err);
    if (st) goto done;
    task = ll_calloc((size_t)n, sizeof *task);
    mine = ll_calloc((size_t)n, sizeof *mine);
    mine_task = ll_calloc((size_t)n, sizeof *mine_task);
    for (int i = 0; i < n; i++) {
        task[i] = rp_config_task(rows[i].config_json);
        if (!in_unit(u, &rows[i], task[i])) continue;
        mine_task[nm] = task[i];
        mine[nm++] = rows[i]; /* a shallow copy: rows owns the strings */
    }
    sum->n_rows = nm;
    for (int i = 0; i < nm; i++) {
        if (strcmp(mine[i].status, "done") == 0) sum->n_done++;
        else if (strcmp(mine[i].status, "diverged") == 0) sum->n_diverged++;
        else sum->n_other++;
    }
    if (sum->n_done == 0) {
        st = ll_err(err, LL_ERR_STATE, "no finished runs in %s (%s): %d run%s, none done: nothing to report yet", db,
                    c.where, nm, nm == 1 ? "" : "s");
        goto done;
    }
    c.metric = sum->metric = report_metric_of(mine, nm);
    c.hb = report_higher_better(c.metric);
    c.ng = sum->n_groups = report_aggregate(mine, nm, c.metric, &c.g);
    c.group_task = ll_calloc((size_t)(c.ng ? c.ng : 1), sizeof *c.group_task);
    for (int i = 0; i < c.ng; i++) {
        c.has_variant |= c.g[i].variant[0] != '\0';
        c.has_test |= c.g[i].test.n > 0;
        int seen = 0;
        for (int m = 0; m < c.n_methods; m++) seen |= strcmp(c.methods[m], c.g[i].method) == 0;
        if (!seen && c.n_methods < 64) c.methods[c.n_methods++] = c.g[i].method;
        /* The group's task: that of its first run (a group's runs share their config, task included). */
        char *t = NULL;
        for (int j = 0; j < nm && !t; j++)
            if (c.g[i].n_runs ? mine[j].id == c.g[i].run_ids[0] : 0) t = mine_task[j];
        char tl[96];
        rp_task_label(t ? t : "", tl, sizeof tl);
        esc_clean(tl);
        c.group_task[i] = ll_strdup(tl);
    }
    for (int i = 1; i < c.ng && !u->task; i++) c.multi_task |= strcmp(c.group_task[i], c.group_task[0]) != 0;
    /* The tag that starts every title: the task, else the one sweep; none for a mix of tasks
     * (then every legend names its task). */
    if (!c.multi_task && c.ng && c.group_task[0][0]) {
        snprintf(c.tag, sizeof c.tag, "%s", c.group_task[0]);
    } else if (!c.multi_task) {
        const char *sw = nm ? mine[0].sweep : NULL;
        for (int i = 1; i < nm && sw; i++)
            if (!mine[i].sweep || strcmp(mine[i].sweep, sw) != 0) sw = NULL;
        if (sw) snprintf(c.tag, sizeof c.tag, "%s", sw);
    }
    esc_clean(c.tag);
    sum->has_test = c.has_test;
    c.select_valid = sum->selected =
        o->select == REPORT_SELECT_VALID || (o->select == REPORT_SELECT_AUTO && c.has_test);
    if ((st = ll_mkdirs(out_dir, err))) goto done;
    gnuplot_find(c.gnuplot, sizeof c.gnuplot);
    sum->gnuplot_missing = c.gnuplot[0] == '\0';

    ns = rp_select(&c, &sel);
    if (c.select_valid && !c.has_test)
        rp_summary_note(&c, "no run of %s has test values: the table gives the validation values the choice was "
                            "made on (optimistic)",
                        c.where);
    rp_lr_edge_notes(&c, sel, ns);
    st = rp_write_tables(&c, sel, ns, &tables, err);
    /* every run, every key */
    if (!st) st = runs_export_write_csv(c.store, u->sweep ? u->sweep : o->sweep, out_dir, "runs.csv", err);
    if (!st) st = rp_figs_curves(&c, err);
    if (!st) st = rp_fig_rank(&c, err);
    if (!st) st = rp_fig_rank_alpha(&c, err);
    if (!st) st = rp_fig_params(&c, err);
    if (!st) st = rp_fig_targets(&c, err);
    if (!st) st = rp_fig_lr(&c, sel, ns, err);
    if (!st) st = rp_fig_adalora(&c, err);
    store_close(c.store);
    c.store = NULL;
    if (!st) rp_render_all(&c);
    if (!st) st = rp_write_index(&c, tables, err);
    if (!st && c.render_rc) {
        st = c.render_rc;
        if (err) *err = c.render_err;
    }
done:
    rp_free_tables(tables);
    rp_free_select(sel, ns);
    for (int i = 0; c.group_task && i < c.ng; i++) free(c.group_task[i]);
    free(c.group_task);
    report_free_groups(c.g, c.ng);
    for (int i = 0; task && i < n; i++) free(task[i]);
    free(task);
    free(mine_task);
    free(mine);
    store_free_runs(rows, n);
    store_close(c.store);
    report_free_units(all, n_all);
    return st;
}

LLStatus report_write(const char *db, const char *sweep, const char *out_dir, ReportSummary *sum, LLError *err) {
    ReportOptions o = {0};
    o.sweep = sweep;
    return report_write_unit(db, &o, NULL, out_dir, sum, err);
}
