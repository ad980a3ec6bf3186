/* run: see run.h. */
#define _GNU_SOURCE
#include "run.h"

#include "adapter.h"
#include "analysis/diagnostics.h"
#include "checkpoint.h"
#include "data.h"
#include "memory.h"
#include "model.h"
#include "tokenizer.h"
#include "train.h"
#include "train_state.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cblas.h>

static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}

static void set_threads(int threads) {
    if (threads <= 0) return;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

/* ---- progress and metrics hooks ------------------------------------------------------------- */

typedef struct {
    const RunEnv *env;
    const char *label;
    LLStatus store_rc;
    LLError store_err;
    void *es;        /* EsState of an early-stopped run, else NULL */
    double last_print;
    int milestones; /* without a terminal: a plain line at every 10% (long pretraining) */
    double base_bytes; /* the step-0 row written before training, again after a full trim */
    const char *ck_dir;  /* the checkpoint's folder, made before the first one is written */
} HookCtx;

static void on_metric(void *user, int step, const char *split, const char *name, double value) {
    HookCtx *h = user;
    if (!h->env->store || h->store_rc) return;
    /* A store failure (say, a database locked past the timeout) must not kill the training: the run
     * goes on, and the error is reported when it finishes. */
    h->store_rc = store_add_metric(h->env->store, h->env->run_id, step, split, name, value, &h->store_err);
}

static void on_progress(void *user, int step, int steps, double loss, double tps, double eta) {
    HookCtx *h = user;
    if (!h->env->progress) {
        if (h->milestones && (step * 10 / steps != (step - 1) * 10 / steps))
            fprintf(stderr, "%s: step %d/%d  loss %.4f  %.0f tok/s  ETA %d:%02d\n", h->label, step, steps, loss, tps,
                    (int)eta / 60, (int)eta % 60);
        return;
    }
    double now = ll_now();
    if (step != steps && now - h->last_print < 0.5) return;
    h->last_print = now;
    fprintf(stderr, "\r%s step %d/%d  loss %.4f  %.0f tok/s  ETA %d:%02d   ", h->label, step, steps, loss, tps,
            (int)eta / 60, (int)eta % 60);
    if (step == steps) fputc('\n', stderr);
    fflush(stderr);
}

static int on_stop(void *user) {
    HookCtx *h = user;
    return h->env->stop && *h->env->stop;
}

/* Early stopping: after each evaluation, the policy's decision through the store (one transaction
 * per decision, shared by the sweep's workers). The run's own curve of the metric is kept here for
 * the median rule. A store failure is kept like a metric's and stops nothing. */
typedef struct {
    EarlyStopPolicy p;
    const char *name; /* the metrics table's name of the metric */
    int *steps;
    double *values;
    int n, cap, prev_step;
} EsState;

static double es_value(const char *name, const EvalResult *e) {
    return strcmp(name, "accuracy") == 0 ? e->accuracy : strcmp(name, "macro_f1") == 0 ? e->macro_f1
                                                     : strcmp(name, "ppl") == 0        ? e->ppl
                                                                                      : e->loss;
}

/* Appends one evaluation to the run's own curve; prev_step becomes its step. */
static void es_push(EsState *es, int step, double v) {
    if (es->n == es->cap) {
        es->cap = es->cap ? 2 * es->cap : 32;
        es->steps = ll_realloc(es->steps, (size_t)es->cap, sizeof *es->steps);
        es->values = ll_realloc(es->values, (size_t)es->cap, sizeof *es->values);
    }
    es->steps[es->n] = step, es->values[es->n] = v, es->n++;
    es->prev_step = step;
}

static int on_evaluated(void *user, int step, const EvalResult *e) {
    HookCtx *h = user;
    EsState *es = h->es;
    if (!es || !h->env->store || h->store_rc) return 0;
    double v = es_value(es->name, e);
    int rung = -1, prev = es->prev_step;
    es_push(es, step, v);
    if (es->p.type == ES_ASHA && (rung = es_asha_rung_at(&es->p, prev, step)) < 0) return 0;
    if (es->p.type == ES_MEDIAN && step < es->p.min_steps) return 0;
    EsCurve own = {es->steps, es->values, es->n};
    EsDecision d;
    int replayed = 0;
    h->store_rc = store_es_decide(h->env->store, h->env->run_id, &es->p, es->name, step, rung, v, &own, &d, &replayed,
                                  &h->store_err);
    if (h->store_rc) return 0;
    ll_log(&h->env->log, LL_LOG_INFO, "early stopping (%s) at step %d: %s %.4f against %.4f of %d run%s: %s%s",
           es_type_name(es->p.type), step, es->name, v, d.threshold, d.n_compared, d.n_compared == 1 ? "" : "s",
           d.stop ? "stop" : "continue", replayed ? " (decided before an interruption)" : "");
    return d.stop;
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

void run_checkpoint_path(const RunConfig *rc, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s/%s.ckpt", rc->out_dir, rc->name, rc->key);
}

int run_resume_step(const RunConfig *rc) {
    char path[2048];
    run_checkpoint_path(rc, path, sizeof path);
    TrainStateInfo info;
    if (train_state_peek(path, &info, NULL)) return -1;
    if (strcmp(info.tag, rc->key) != 0 || info.steps != rc->train.steps || info.step < 1 || info.step >= info.steps)
        return -1;
    return info.step;
}

/* Before this attempt's first metric: the rows past the step it resumed at are the earlier
 * attempt's (all of them on a fresh start, but the base_bytes row, written again). The early
 * stopping curve of the steps before is read back, so the median rule sees the whole run. */
static void on_resumed(void *user, int step) {
    HookCtx *h = user;
    Store *s = h->env->store;
    if (!s || h->store_rc) return;
    h->store_rc = store_trim_metrics(s, h->env->run_id, step > 0 ? step : -1, &h->store_err);
    if (!h->store_rc && step == 0)
        h->store_rc = store_add_metric(s, h->env->run_id, 0, "train", "base_bytes", h->base_bytes, &h->store_err);
    EsState *es = h->es;
    if (h->store_rc || !es || step == 0) return;
    int *steps = NULL, n = 0;
    double *values = NULL;
    h->store_rc = store_get_metrics(s, h->env->run_id, "eval", es->name, &steps, &values, &n, &h->store_err);
    for (int i = 0; i < n && !h->store_rc; i++) {
        if (steps[i] <= 0 || steps[i] > step) continue; /* the evaluated hook never sees step 0 */
        es_push(es, steps[i], values[i]);
    }
    free(steps);
    free(values);
}

/* Before a checkpoint of `step`: the rows it accounts for are committed. */
static LLStatus on_sync(void *user, int step, LLError *err) {
    HookCtx *h = user;
    (void)step;
    LLStatus st = ll_mkdirs(h->ck_dir, err);
    if (st || !h->env->store) return st;
    if (h->store_rc) {
        *err = h->store_err;
        return h->store_rc;
    }
    return store_flush(h->env->store, err);
}

/* ---- data ----------------------------------------------------------------------------------- */

static LLStatus load_split(const char *folder, const char *split, int cls, const Tokenizer *tok, Dataset *d,
                           LLError *err) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s.%s", folder, split, cls ? "jsonl" : "txt");
    return cls ? data_load_jsonl(path, tok, d, err) : data_load_text(path, tok, d, err);
}

/* Label names from DATA/labels.txt (one per line); returns the count, 0 when absent. */
static int read_labels(const char *folder, char ***names) {
    char path[2048], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/labels.txt", folder);
    *names = NULL;
    if (ll_read_file(path, &text, &len, NULL)) return 0;
    int n = 0;
    char **out = NULL;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        out = ll_realloc(out, (size_t)n + 2, sizeof(char *));
        out[n++] = ll_strdup(line);
        out[n] = NULL;
    }
    ll_free(text);
    *names = out;
    return n;
}

static void free_labels(char **names) {
    for (int i = 0; names && names[i]; i++) ll_free(names[i]);
    ll_free(names);
}

/* ---- the base model ------------------------------------------------------------------------- */

static LLStatus pretrain_base(const RunConfig *rc, const RunEnv *env, const char *dir, LLError *err) {
    char path[2048];
    Tokenizer *tok = NULL;
    LLStatus st;
    snprintf(path, sizeof path, "%s/train.txt", rc->base_data);
    ll_log(&env->log, LL_LOG_INFO, "pretraining %s (%s tokenizer) on %s for %d steps of %d x %d tokens", rc->base_preset,
           rc->base_bpe ? "BPE" : "byte", rc->base_data, rc->base_train.steps, rc->base_train.batch, rc->base_train.seq);
    if (rc->base_bpe) {
        char *text;
        size_t len;
        if (ll_read_file(path, &text, &len, err)) return ll_err_prefix(err, "pretraining corpus (run `make data`)");
        double t0 = ll_now();
        st = tok_train_bpe(text, len, rc->base_vocab, &tok, err);
        ll_free(text);
        if (st) return st;
        ll_log(&env->log, LL_LOG_INFO, "trained a BPE tokenizer of %d ids on %s in %.1f s", tok_vocab_size(tok), path,
               ll_now() - t0);
    } else {
        tok = tok_new_bytes();
    }
    Dataset train = {0}, valid = {0};
    st = load_split(rc->base_data, "train", 0, tok, &train, err);
    if (!st) st = load_split(rc->base_data, "valid", 0, tok, &valid, err);
    ModelConfig mc = rc->base_model;
    mc.V = tok_vocab_size(tok);
    mc.bos_id = tok_bos(tok), mc.eos_id = tok_eos(tok), mc.pad_id = tok_pad(tok);
    mc.n_labels = 0;
    tok_set_max_length(tok, mc.max_T); /* model_max_length in tokenizer_config.json */
    ModelOptions mo = {rc->base_train.batch, rc->base_train.seq, 1, 1};
    Model m = {0};
    if (!st && mo.T <= mc.max_T) st = memory_check_model(&mc, &mo, NULL, "base.batch or base.seq", err);
    if (!st) st = model_init(&m, &mc, &mo, err);
    if (!st) {
        model_init_weights(&m, rc->base_train.seed);
        HookCtx h = {env, "pretrain", LL_OK, {0}, NULL, 0, 1, 0, NULL};
        RunEnv quiet = *env;
        quiet.store = NULL; /* the base is not a run of the sweep */
        h.env = &quiet;
        TrainHooks hooks = {on_metric, on_progress, on_stop, &h, NULL, NULL, NULL, 0, NULL};
        TrainResult res;
        st = train_run(&m, NULL, &rc->base_train, &train, &valid, &hooks, &res, err);
        if (!st) {
            ll_log(&env->log, LL_LOG_INFO, "pretrained base: %zu parameters, valid loss %.4f (ppl %.2f), %.0f tok/s, %.0f s",
                   m.n_params, res.eval.loss, res.eval.ppl, res.tokens_per_s, res.wall_s);
            st = checkpoint_save(&m, tok, NULL, dir, err);
        } else {
            ll_err_prefix(err, "pretraining the base model");
        }
    }
    model_free(&m);
    data_free(&train);
    data_free(&valid);
    tok_free(tok);
    return st;
}

LLStatus run_ensure_base(const RunConfig *rc, const RunEnv *env, char *path, size_t cap, LLError *err) {
    snprintf(path, cap, "%s", rc->base_path);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "%s/config.json", rc->base_path);
    if (ll_file_exists(cfg)) return LL_OK;
    if (!rc->pretrain)
        return ll_err(err, LL_ERR_IO, "base model folder '%s' has no config.json", rc->base_path);
    /* Several workers may want the same base: a lock file makes one of them build it. */
    char parent[2048];
    snprintf(parent, sizeof parent, "%s", rc->base_path);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        LLStatus st = ll_mkdirs(parent, err);
        if (st) return st;
    }
    char lock[2048];
    snprintf(lock, sizeof lock, "%s.lock", rc->base_path);
    int fd = open(lock, O_CREAT | O_RDWR, 0644);
    if (fd < 0) return ll_err(err, LL_ERR_IO, "cannot create lock '%s': %s", lock, strerror(errno));
    flock(fd, LOCK_EX);
    LLStatus st = LL_OK;
    if (!ll_file_exists(cfg)) {
        if (env->progress) fprintf(stderr, "pretraining the base model into %s (cached for later runs)\n", rc->base_path);
        st = pretrain_base(rc, env, rc->base_path, err);
    }
    flock(fd, LOCK_UN);
    close(fd);
    return st;
}

/* ---- eval sets -------------------------------------------------------------------------------- */

/* task.eval_sets: each folder's valid split, read like the task's (same kind, same tokenizer); a
 * classification set must not name a label the head lacks (checked here, before anything runs). */
static LLStatus load_eval_sets(const RunConfig *rc, const Tokenizer *tok, int n_labels, Dataset *sets, LLError *err) {
    for (int i = 0; i < rc->n_eval_sets; i++) {
        LLStatus st = load_split(rc->eval_set_paths[i], "valid", rc->task_cls, tok, &sets[i], err);
        if (!st && rc->task_cls) st = data_check_labels(&sets[i], n_labels, err);
        if (st) return ll_err_prefix(err, "task.eval_sets.%s", rc->eval_set_names[i]);
    }
    return LL_OK;
}

/* What a base evaluation depends on besides the set: the base folder, the precision of its
 * products, the sequence length, how many rows are evaluated and, for classification, the seed of
 * the head (the base has none of its own). Runs that share it share base_evals rows. */
static void eval_context(const RunConfig *rc, const char *base, char *out, size_t cap) {
    char rows[32] = "all", head[48] = "";
    if (rc->train.eval_batches > 0) snprintf(rows, sizeof rows, "%lld", (long long)rc->train.eval_batches * rc->train.batch);
    if (rc->task_cls) snprintf(head, sizeof head, " head_seed %llu", (unsigned long long)rc->adapter.seed);
    snprintf(out, cap, "base %s precision %s seq %d rows %s%s", base, rc->train.bf16 ? "bf16" : "fp32", rc->train.seq,
             rows, head);
}

/* The base model's numbers on each eval set, measured once per sweep and evaluation context: a run
 * that finds them recorded reads them, else it evaluates the model it holds (before any adapter or
 * quantization: the base itself) and records them. Two workers racing record the same numbers. */
static LLStatus base_evals(const RunConfig *rc, const RunEnv *env, const char *base, Model *m, const Dataset *sets,
                           LLError *err) {
    if (!env->store || rc->n_eval_sets == 0) return LL_OK;
    char ctx[1400];
    eval_context(rc, base, ctx, sizeof ctx);
    LLStatus st = store_set_eval_ctx(env->store, env->run_id, ctx, err);
    if (!st) st = model_set_bf16(m, rc->train.bf16, err);
    Batch b = {0};
    int have_batch = 0;
    for (int i = 0; i < rc->n_eval_sets && !st; i++) {
        double v;
        int found;
        st = store_run_base_eval(env->store, env->run_id, rc->eval_set_names[i], "loss", &v, &found, err);
        if (st || found) continue;
        if (!have_batch) batch_alloc(&b, rc->train.batch, rc->train.seq), have_batch = 1;
        EvalResult e;
        st = eval_run(m, &sets[i], &b, rc->train.batch, rc->train.seq, rc->train.eval_batches, &e, err);
        if (st) break;
        ll_log(&env->log, LL_LOG_INFO, "base model on eval set %s: loss %.4f (ppl %.2f)", rc->eval_set_names[i], e.loss,
               e.ppl);
        const char *names[4] = {"loss", "ppl", "accuracy", "macro_f1"};
        const double vals[4] = {e.loss, e.ppl, e.accuracy, e.macro_f1};
        for (int k = 0; k < (rc->task_cls ? 4 : 2) && !st; k++)
            st = store_add_base_eval(env->store, env->run_id, rc->eval_set_names[i], names[k], vals[k], err);
    }
    if (have_batch) batch_free(&b);
    return st;
}

/* ---- spectral diagnostics ----------------------------------------------------------------------- */

/* train.diagnostics: analysis/diagnostics.h on the kept weights, rows into the store. A failure to
 * compute (a weight that is not finite, a base folder gone) is a warning: the run's result stands;
 * a failure to store is the run's, as for its metrics. */
static LLStatus run_diagnostics(const RunEnv *env, const char *base, Model *m, const Adapter *a, LLError *err) {
    double t0 = ll_now();
    DiagSite *ds = NULL;
    int n = 0;
    LLError de;
    if (diag_model(base, m, a, -1, 0, &ds, &n, &de)) {
        ll_log(&env->log, LL_LOG_WARN, "no spectral diagnostics: %s", de.msg);
        return LL_OK;
    }
    int intruders = 0;
    double eff = 0.0;
    DiagnosticRow *rows = ll_calloc((size_t)n * DIAG_N_VALUES + 1, sizeof *rows);
    for (int i = 0; i < n; i++) {
        double v[DIAG_N_VALUES];
        diag_site_values(&ds[i], v);
        intruders += ds[i].d.intruders, eff += ds[i].d.eff_rank;
        for (int k = 0; k < DIAG_N_VALUES; k++) {
            DiagnosticRow *r = &rows[i * DIAG_N_VALUES + k];
            r->layer = ds[i].layer;
            snprintf(r->module, sizeof r->module, "%s", model_module_name(ds[i].mod));
            snprintf(r->name, sizeof r->name, "%s", DIAG_VALUE_NAMES[k]);
            r->value = v[k];
        }
    }
    LLStatus st = env->store ? store_add_diagnostics(env->store, env->run_id, rows, n * DIAG_N_VALUES, err) : LL_OK;
    ll_log(&env->log, LL_LOG_INFO,
           "spectral diagnostics of %d matri%s in %.2f s: %d intruder dimension%s (k = %d, eps = %g), mean effective "
           "rank of dW %.2f",
           n, n == 1 ? "x" : "ces", ll_now() - t0, intruders, intruders == 1 ? "" : "s", DIAG_INTRUDER_K,
           DIAG_INTRUDER_EPS, n ? eff / n : 0.0);
    ll_free(rows);
    ll_free(ds);
    return st;
}

/* ---- one run -------------------------------------------------------------------------------- */

static void record(const RunEnv *env, const RunOutcome *o, const char *error) {
    if (!env->store) return;
    RunResult r = {o->status, o->tokens_per_s, o->wall_s, o->trainable, o->total, o->peak_mem, o->train_loss,
                   o->eval_loss, o->eval_ppl, o->accuracy, o->macro_f1, error, o->out_dir[0] ? o->out_dir : NULL};
    RunKept k = {o->best_step >= 0 ? o->best_metric_name : NULL,
                 o->best_step,
                 o->best_metric,
                 o->kept_step >= 0,
                 o->kept_step,
                 o->tested,
                 o->test_loss,
                 o->test_accuracy,
                 o->test_macro_f1,
                 o->test_note[0] ? o->test_note : NULL};
    LLError e;
    if (store_finish_run_kept(env->store, env->run_id, &r, &k, &e))
        fprintf(stderr, "loralab: could not record the run's outcome: %s\n", e.msg);
}

LLStatus run_execute(const RunConfig *rc, const RunEnv *env, RunOutcome *out, LLError *err) {
    memset(out, 0, sizeof *out);
    snprintf(out->status, sizeof out->status, "failed");
    out->pruned_step = -1;
    out->train_loss = out->eval_loss = out->eval_ppl = out->accuracy = out->macro_f1 = NAN;
    out->best_metric = out->test_loss = out->test_accuracy = out->test_macro_f1 = NAN;
    out->best_step = out->kept_step = -1;
    out->trainable = out->total = out->peak_mem = -1;
    set_threads(env->threads);
    double t0 = ll_now();
    char ck_path[2048];
    run_checkpoint_path(rc, ck_path, sizeof ck_path);

    char base[2048];
    LoadedModel lm = {0};
    Dataset train = {0}, valid = {0}, test = {0};
    Dataset *sets = ll_calloc((size_t)rc->n_eval_sets + 1, sizeof *sets);
    int have_test = 0;
    Adapter *a = NULL;
    char **labels = NULL;
    LLStatus st = run_ensure_base(rc, env, base, sizeof base, err);
    int n_labels = 0;
    if (!st && rc->task_cls) {
        n_labels = read_labels(rc->task_data, &labels);
        if (n_labels < 2)
            st = ll_err(err, LL_ERR_IO, "classification data '%s' needs a labels.txt with at least 2 label names",
                        rc->task_data);
    }
    const int full = rc->adapter.method == ADAPTER_FULL;
    ModelOptions mo = {rc->train.batch, rc->train.seq, 1, full};
    if (!st) { /* the size check needs the base's config before checkpoint_open allocates */
        ModelConfig bc;
        st = checkpoint_load_config(base, &bc, err);
        if (!st) {
            ModelOptions fit = mo;
            if (n_labels > 0) bc.n_labels = n_labels;
            if (fit.T > bc.max_T) fit.T = bc.max_T; /* as checkpoint_open does */
            const char *keys = full ? "train.batch or train.seq" : "train.batch or train.seq, or the adapter's rank";
            st = memory_check_model(&bc, &fit, full ? NULL : &rc->adapter, keys, err);
        }
    }
    if (!st) st = checkpoint_open(base, &mo, n_labels, &lm, err);
    Model *m = &lm.model;
    if (!st) {
        st = load_split(rc->task_data, "train", rc->task_cls, lm.tok, &train, err);
        if (!st) st = load_split(rc->task_data, "valid", rc->task_cls, lm.tok, &valid, err);
        char test_path[2048];
        snprintf(test_path, sizeof test_path, "%s/test.%s", rc->task_data, rc->task_cls ? "jsonl" : "txt");
        if (!st && ll_file_exists(test_path)) { /* read before training: a bad file fails at once */
            st = load_split(rc->task_data, "test", rc->task_cls, lm.tok, &test, err);
            if (!st) st = data_check_labels(&test, m->cfg.n_labels, err); /* train_run checks the others */
            have_test = !st;
        } else if (!st) {
            snprintf(out->test_note, sizeof out->test_note, "no test split: '%s' does not exist", test_path);
        }
        if (!st) st = load_eval_sets(rc, lm.tok, n_labels, sets, err);
    }
    if (!st && m->head) model_init_head(m, rc->adapter.seed);
    if (!st) st = base_evals(rc, env, base, m, sets, err);
    /* QLoRA: the base is quantized before the adapter is built (DoRA's magnitude and LoftQ's
     * residual are taken against dequant(Q)), and its fp32 linear weights dropped after */
    if (!st && rc->train.base_quant)
        st = model_quantize_base(m, (QuantFormat)rc->train.base_quant, rc->train.double_quant, err);
    if (!st && !full) st = adapter_create(&rc->adapter, m, &a, err);
    if (!st && rc->train.base_quant) {
        model_release_fp32(m);
        ll_log(&env->log, LL_LOG_INFO, "%s base: %zu bytes of linear weights (fp32: %zu)",
               quant_format_name((QuantFormat)rc->train.base_quant), model_linear_bytes(m),
               (model_param_count(&m->cfg) - m->n_params_held) * sizeof(float));
    }
    if (!st && env->store) /* the frozen linear weights as held, for the memory columns of QLoRA's table */
        st = store_add_metric(env->store, env->run_id, 0, "train", "base_bytes", (double)model_linear_bytes(m), err);
    if (!st) {
        out->trainable = (int64_t)adapter_trainable_count(m, a);
        out->total = (int64_t)(m->n_params + m->n_head + (a ? a->n_params : 0));
        char report[256];
        adapter_param_report(m, a, report, sizeof report);
        ll_log(&env->log, LL_LOG_INFO, "%s", report);
        char ck_dir[2048]; /* the checkpoint goes beside the run's folder (written whole, at the end) */
        snprintf(ck_dir, sizeof ck_dir, "%s/%s", rc->out_dir, rc->name);
        HookCtx h = {env, rc->name, LL_OK, {0}, NULL, 0, 0, (double)model_linear_bytes(m), ck_dir};
        EsState es = {{ES_NONE, 0, 0, 0, 0, 0}, "loss", NULL, NULL, 0, 0, -1};
        if (env->early_stop && env->early_stop->type != ES_NONE && env->store) {
            const EarlyStopSpec *sp = env->early_stop;
            es.p = (EarlyStopPolicy){sp->type, 0, sp->min_steps, sp->reduction_factor, sp->grace_runs, rc->train.steps};
            es_metric(sp->metric, &es.name, &es.p.higher_better);
            h.es = &es;
        }
        const char **set_names = (const char **)rc->eval_set_names;
        const Dataset **set_ptrs = ll_calloc((size_t)rc->n_eval_sets + 1, sizeof *set_ptrs);
        for (int i = 0; i < rc->n_eval_sets; i++) set_ptrs[i] = &sets[i];
        TrainCheckpoint ck = {ck_path, rc->key, env->log, &h, on_resumed, on_sync, 0, 0};
        TrainHooks hooks = {on_metric, on_progress, on_stop, &h, on_evaluated, set_ptrs, set_names, rc->n_eval_sets, &ck};
        TrainResult res;
        st = train_run(m, a, &rc->train, &train, &valid, &hooks, &res, err);
        ll_free(set_ptrs);
        ll_free(es.steps);
        ll_free(es.values);
        out->pruned_step = res.pruned_step;
        out->train_loss = res.train_loss;
        out->eval_loss = res.eval.loss;
        out->eval_ppl = res.eval.ppl;
        out->accuracy = res.eval.accuracy;
        out->macro_f1 = res.eval.macro_f1;
        out->tokens_per_s = res.tokens_per_s;
        if (res.best_step >= 0) {
            out->best_step = res.best_step;
            out->best_metric = train_eval_metric(&res.best);
            out->best_metric_name = train_eval_metric_name(&res.best);
        }
        if (!st) {
            out->kept_step = res.kept_step;
            if (res.best_step >= 0)
                ll_log(&env->log, LL_LOG_INFO, "best validation %s %.4f at step %d; kept the weights of step %d",
                       out->best_metric_name, out->best_metric, res.best_step, res.kept_step);
        }
        if (!st && have_test) { /* the kept weights, once, on the whole test split */
            EvalResult te;
            st = eval_split(m, &test, rc->train.batch, rc->train.seq, &te, err);
            out->tested = !st;
            out->test_loss = te.loss, out->test_accuracy = te.accuracy, out->test_macro_f1 = te.macro_f1;
        }
        if (st == LL_ERR_DIVERGED) snprintf(out->status, sizeof out->status, "diverged");
        else if (st == LL_ERR_INTERRUPTED) snprintf(out->status, sizeof out->status, "interrupted");
        if (!st && h.store_rc) {
            st = h.store_rc;
            *err = h.store_err;
        }
        if (!st && env->store) st = store_flush(env->store, err);
        if (!st && a && env->store && rc->adapter.method == ADAPTER_ADALORA) {
            for (int i = 0; i < a->n_sites && !st; i++) {
                const AdapterSite *s = &a->sites[i];
                if (!s->active) continue;
                st = store_add_rank(env->store, env->run_id, s->layer, model_module_name(s->mod),
                                    adalora_site_rank(a, s), s->r, err);
            }
        }
        if (!st) {
            /* Only a finished run writes its folder, so a diverged or interrupted run never
             * replaces a good one; the weights in the model are the kept ones (train_run put the
             * best back under train.keep: best). */
            snprintf(out->out_dir, sizeof out->out_dir, "%s/%s/%s", rc->out_dir, rc->name, rc->key);
            if (full) {
                adapter_attach(m, NULL);
                st = checkpoint_save(m, lm.tok, (const char *const *)labels, out->out_dir, err);
            } else { /* no mkdir of the folder itself: an empty one would sit there until the swap */
                st = adapter_save(a, m, out->out_dir, base, err);
            }
            if (st) out->out_dir[0] = '\0';
        }
        /* After the folder: the memory the SVDs take stays in the heap after they free it, and a
         * full fine-tuning folder's write on top of it raised the run's peak (tests/test_memory.c) */
        if (!st && rc->diagnostics) st = run_diagnostics(env, base, m, full ? NULL : a, err);
    }
    out->wall_s = ll_now() - t0;
    out->peak_mem = peak_rss_bytes();
    if (!st) snprintf(out->status, sizeof out->status, "%s", out->pruned_step > 0 ? "pruned" : "done");
    record(env, out, st ? err->msg : NULL);
    /* A run that ended for good needs its checkpoint no more; an interrupted or failed one resumes
     * from it when it runs again. */
    if (!st || st == LL_ERR_DIVERGED) train_state_remove(ck_path);
    adapter_free(a);
    data_free(&train);
    data_free(&valid);
    data_free(&test);
    for (int i = 0; i < rc->n_eval_sets; i++) data_free(&sets[i]);
    ll_free(sets);
    checkpoint_close(&lm);
    free_labels(labels);
    return st;
}
