/* train: see train.h. */
#include "train.h"

#include "train_state.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void train_config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    c->steps = 100, c->batch = 8, c->seq = 128, c->accum = 1;
    c->lr = 1e-3f, c->min_lr_ratio = 0.1f, c->weight_decay = 0.0f;
    c->beta1 = 0.9f, c->beta2 = 0.999f, c->eps = 1e-8f, c->clip = 1.0f;
    c->warmup = 0, c->schedule = SCHED_COSINE;
    c->eval_every = 0, c->eval_batches = 0, c->log_every = 10;
    c->seed = 0;
    c->base_quant = 0, c->double_quant = 1;
}

/* The data's kind is the head's, and every label indexes the head: labels index the logits in the
 * loss and eval_run's confusion counts, so none from a file may pass this unchecked. */
static LLStatus fits_head(const ModelConfig *c, const Dataset *d, LLError *err) {
    if ((c->n_labels > 0) != (d->kind == DATA_CLS))
        return ll_err(err, LL_ERR_CONFIG, "the model's head (%s) does not fit the data '%s' (%s)",
                      c->n_labels > 0 ? "classification" : "language modelling", d->path,
                      d->kind == DATA_CLS ? "classification" : "language modelling");
    return data_check_labels(d, c->n_labels, err);
}

LLStatus eval_run(Model *m, const Dataset *d, Batch *b, int B, int T, int max_batches, EvalResult *out,
                  LLError *err) {
    EvalResult r = {NAN, NAN, NAN, NAN, 0};
    *out = r;
    const ModelConfig *c = &m->cfg;
    LLStatus st = fits_head(c, d, err); /* whatever the caller checked */
    if (st) return st;
    int nb = data_eval_count(d, B, T);
    if (max_batches > 0 && max_batches < nb) nb = max_batches;
    double total = 0.0;
    long counted = 0;
    int K = c->n_labels > 0 ? c->n_labels : 1;
    long *tp = ll_calloc((size_t)K, sizeof(long)), *fp = ll_calloc((size_t)K, sizeof(long)),
         *fn = ll_calloc((size_t)K, sizeof(long));
    long correct = 0;
    for (int i = 0; i < nb; i++) {
        if (data_eval_batch(d, i, b, B, T, c->bos_id, c->pad_id) == 0) break;
        float loss = model_forward(m, b, 0);
        if (m->n_counted == 0) continue;
        total += (double)loss * m->n_counted;
        counted += m->n_counted;
        if (c->n_labels > 0)
            for (int row = 0; row < b->B; row++) {
                const float *z = model_logits(m, row, 0);
                int best = 0;
                for (int k = 1; k < c->n_labels; k++) best = z[k] > z[best] ? k : best;
                int y = b->labels[row];
                if (best == y) correct++, tp[y]++;
                else fp[best]++, fn[y]++;
            }
    }
    if (counted > 0) {
        r.loss = total / (double)counted;
        r.ppl = exp(r.loss);
        r.n = counted;
        if (c->n_labels > 0) {
            r.accuracy = (double)correct / (double)counted;
            double f1 = 0.0; /* macro-F1: unweighted mean over classes of 2TP / (2TP + FP + FN) */
            for (int k = 0; k < K; k++) {
                long den = 2 * tp[k] + fp[k] + fn[k];
                f1 += den ? 2.0 * (double)tp[k] / (double)den : 0.0;
            }
            r.macro_f1 = f1 / K;
        }
    }
    ll_free(tp), ll_free(fp), ll_free(fn);
    *out = r;
    return LL_OK;
}

LLStatus eval_split(Model *m, const Dataset *d, int B, int T, EvalResult *out, LLError *err) {
    Batch b;
    batch_alloc(&b, B, T);
    LLStatus st = eval_run(m, d, &b, B, T, 0, out, err);
    batch_free(&b);
    return st;
}

double train_eval_metric(const EvalResult *e) { return isnan(e->accuracy) ? e->loss : e->accuracy; }

const char *train_eval_metric_name(const EvalResult *e) { return isnan(e->accuracy) ? "loss" : "accuracy"; }

int train_eval_better(const EvalResult *e, const EvalResult *best) {
    /* A classification evaluation with NaN logits still has an accuracy (the argmax of NaNs is
     * class 0), so the loss is checked under both tasks. */
    if (e->n <= 0 || !isfinite(e->loss)) return 0;
    int cls = !isnan(e->accuracy);
    if (cls && !isfinite(e->accuracy)) return 0;
    if (best->n <= 0) return 1;
    if (cls && e->accuracy != best->accuracy) return e->accuracy > best->accuracy;
    return e->loss < best->loss;
}

/* ---- keeping the best weights ---------------------------------------------------------------- */

/* A copy of the trainable state: the adapter's params and method state, or every base weight (full
 * fine-tuning); the head. Sized once before the loop. */
typedef struct {
    float *params, *head;
    size_t n, n_head;
    unsigned char *state;
    size_t state_bytes;
} Snapshot;

static float *trained_params(Model *m, Adapter *a, size_t *n) {
    *n = a ? a->n_params : m->n_params;
    return a ? a->params : m->params;
}

static void snapshot_init(Snapshot *s, Model *m, Adapter *a) {
    memset(s, 0, sizeof *s);
    trained_params(m, a, &s->n);
    s->params = ll_alloc_floats(s->n);
    s->n_head = m->head ? m->n_head : 0;
    if (s->n_head) s->head = ll_alloc_floats(s->n_head);
    s->state_bytes = a ? adapter_state_bytes(a) : 0;
    if (s->state_bytes) s->state = ll_calloc(s->state_bytes, 1); /* zeroed: a checkpoint may hold it untaken */
}

static void snapshot_take(Snapshot *s, Model *m, Adapter *a) {
    size_t n;
    memcpy(s->params, trained_params(m, a, &n), sizeof(float) * s->n);
    if (s->n_head) memcpy(s->head, m->head, sizeof(float) * s->n_head);
    if (s->state_bytes) adapter_state_get(a, s->state);
}

static void snapshot_restore(const Snapshot *s, Model *m, Adapter *a) {
    size_t n;
    memcpy(trained_params(m, a, &n), s->params, sizeof(float) * s->n);
    if (s->n_head) memcpy(m->head, s->head, sizeof(float) * s->n_head);
    if (s->state_bytes) adapter_state_set(a, s->state);
    if (!a) model_base_changed(m); /* the bf16 packs follow the weights */
}

static void snapshot_free(Snapshot *s) {
    ll_free(s->params);
    ll_free(s->head);
    ll_free(s->state);
    memset(s, 0, sizeof *s);
}

static void emit(const TrainHooks *h, int step, const char *split, const char *name, double v) {
    if (h && h->metric) h->metric(h->user, step, split, name, v);
}

static void emit_eval(const TrainHooks *h, int step, const char *split, const EvalResult *e) {
    emit(h, step, split, "loss", e->loss);
    emit(h, step, split, "ppl", e->ppl);
    if (!isnan(e->accuracy)) {
        emit(h, step, split, "accuracy", e->accuracy);
        emit(h, step, split, "macro_f1", e->macro_f1);
    }
}

/* The validation split's evaluation at `step` into res (and the best copy), then the extra sets'. */
static LLStatus evaluate(Model *m, Adapter *a, const TrainConfig *tc, const Dataset *valid, const TrainHooks *hooks,
                         int step, Batch *b, Snapshot *best, int keep_best, TrainResult *res, LLError *err) {
    LLStatus st = eval_run(m, valid, b, tc->batch, tc->seq, tc->eval_batches, &res->eval, err);
    if (st) return st;
    if (train_eval_better(&res->eval, &res->best)) { /* copied before any hook runs */
        res->best = res->eval, res->best_step = step;
        if (keep_best) snapshot_take(best, m, a);
    }
    emit_eval(hooks, step, "eval", &res->eval);
    for (int i = 0; hooks && i < hooks->n_eval_sets && !st; i++) {
        EvalResult e;
        st = eval_run(m, hooks->eval_sets[i], b, tc->batch, tc->seq, tc->eval_batches, &e, err);
        if (!st) emit_eval(hooks, step, hooks->eval_set_names[i], &e);
    }
    return st;
}

/* ---- checkpoints (train_state.h) --------------------------------------------------------------- */

/* The scalars a resumed run needs, as doubles (ints and longs well inside 2^53). */
enum {
    BK_STEP, BK_TRAIN_LOSS, BK_WINDOW_LOSS, BK_WINDOW_N, BK_ADAM_T, BK_EVAL, BK_BEST = BK_EVAL + 5,
    BK_BEST_STEP = BK_BEST + 5, BK_N
};

typedef struct {
    TrainStateSection sec[12];
    int n;
    double book[BK_N];
    uint64_t rng[8]; /* the data stream, then the adapter's dropout stream */
    unsigned char *state; /* the adapter's method state, copied out and in (its resume state is not) */
} CkptSet;

static void eval_to_book(const EvalResult *e, double *b) {
    b[0] = e->loss, b[1] = e->ppl, b[2] = e->accuracy, b[3] = e->macro_f1, b[4] = (double)e->n;
}

static void eval_from_book(const double *b, EvalResult *e) {
    e->loss = b[0], e->ppl = b[1], e->accuracy = b[2], e->macro_f1 = b[3], e->n = (long)b[4];
}

/* The section list, in file order: views of the live buffers, sized before the loop. */
static void ckpt_init(CkptSet *c, Model *m, Adapter *a, AdamW *o, Snapshot *best, int keep_best) {
    memset(c, 0, sizeof *c);
    size_t n_params;
    float *params = trained_params(m, a, &n_params);
    size_t sb = a ? adapter_state_bytes(a) : 0, rb = 0;
    void *resume = a ? adapter_resume_state(a, &rb) : NULL;
    if (sb) c->state = ll_calloc(sb, 1);
    const TrainStateSection secs[] = {
        {"book", c->book, sizeof c->book},
        {"rng", c->rng, sizeof c->rng},
        {"params", params, sizeof(float) * n_params},
        {"head", m->head, sizeof(float) * (m->head ? m->n_head : 0)},
        {"method.state", c->state, sb},
        {"method.resume", resume, rb},
        {"adamw.m", o->m, sizeof(float) * o->n},
        {"adamw.v", o->v, sizeof(float) * o->n},
        {"best.params", keep_best ? best->params : NULL, keep_best ? sizeof(float) * best->n : 0},
        {"best.head", keep_best ? best->head : NULL, keep_best ? sizeof(float) * best->n_head : 0},
        {"best.state", keep_best ? best->state : NULL, keep_best ? best->state_bytes : 0},
    };
    c->n = (int)(sizeof secs / sizeof secs[0]);
    memcpy(c->sec, secs, sizeof secs);
}

static void ckpt_free(CkptSet *c) { ll_free(c->state); }

static void ckpt_write(TrainCheckpoint *ck, CkptSet *c, Adapter *a, const AdamW *o, const Rng *rng,
                       const TrainResult *res, double window_loss, int window_n, int steps) {
    const int step = res->steps_done;
    LLError e;
    if (ck->sync && ck->sync(ck->user, step, &e)) {
        ll_log(&ck->log, LL_LOG_WARN, "run %s: no checkpoint at step %d: %s", ck->tag, step, e.msg);
        return;
    }
    c->book[BK_STEP] = step, c->book[BK_TRAIN_LOSS] = res->train_loss;
    c->book[BK_WINDOW_LOSS] = window_loss, c->book[BK_WINDOW_N] = window_n, c->book[BK_ADAM_T] = o->t;
    eval_to_book(&res->eval, c->book + BK_EVAL);
    eval_to_book(&res->best, c->book + BK_BEST);
    c->book[BK_BEST_STEP] = res->best_step;
    memcpy(c->rng, rng->s, sizeof rng->s);
    if (a) memcpy(c->rng + 4, a->drop_rng.s, sizeof a->drop_rng.s);
    if (c->state) adapter_state_get(a, c->state);
    if (train_state_save(ck->path, ck->tag, step, steps, c->sec, c->n, &e))
        ll_log(&ck->log, LL_LOG_WARN, "run %s: no checkpoint at step %d: %s", ck->tag, step, e.msg);
    else
        ck->written++;
}

/* Resumes from ck->path when it holds a checkpoint that fits: returns the step to start at (0 for
 * a fresh start). LL_ERR_STATE in *st only when the file was verified and then failed to read. */
static int ckpt_resume(TrainCheckpoint *ck, CkptSet *c, Model *m, Adapter *a, AdamW *o, Rng *rng,
                       TrainResult *res, double *window_loss, int *window_n, int steps, LLStatus *st, LLError *err) {
    *st = LL_OK;
    if (!ll_file_exists(ck->path)) return 0;
    int step = 0;
    LLError e;
    LLStatus rst = train_state_load(ck->path, ck->tag, steps, c->sec, c->n, &step, &e);
    if (rst == LL_ERR_STATE) {
        *st = ll_err(err, LL_ERR_STATE, "%s", e.msg);
        return 0;
    }
    if (rst) {
        ll_log(&ck->log, LL_LOG_WARN, "run %s: checkpoint refused, so the run restarts from step 0: %s", ck->tag,
               e.msg);
        return 0;
    }
    res->steps_done = step;
    res->train_loss = c->book[BK_TRAIN_LOSS];
    *window_loss = c->book[BK_WINDOW_LOSS], *window_n = (int)c->book[BK_WINDOW_N];
    o->t = (int)c->book[BK_ADAM_T];
    eval_from_book(c->book + BK_EVAL, &res->eval);
    eval_from_book(c->book + BK_BEST, &res->best);
    res->best_step = (int)c->book[BK_BEST_STEP];
    memcpy(rng->s, c->rng, sizeof rng->s);
    if (a) memcpy(a->drop_rng.s, c->rng + 4, sizeof a->drop_rng.s);
    if (c->state) adapter_state_set(a, c->state);
    if (!a) model_base_changed(m); /* the bf16 packs follow the weights */
    ll_log(&ck->log, LL_LOG_WARN, "run %s: resumed from the checkpoint '%s' at step %d of %d", ck->tag, ck->path,
           step, steps);
    return step;
}

void train_add_base_params(AdamW *o, Model *m) {
    for (int i = 0; i < model_n_tensors(m); i++) {
        ModelTensor t;
        model_tensor(m, i, &t);
        adamw_add(o, t.data, m->grads + (t.data - m->params), t.numel, t.ndim == 2);
    }
}

LLStatus train_run(Model *m, Adapter *a, const TrainConfig *tc, const Dataset *train, const Dataset *valid,
                   const TrainHooks *hooks, TrainResult *res, LLError *err) {
    memset(res, 0, sizeof *res);
    res->diverged_step = res->pruned_step = -1;
    res->train_loss = NAN;
    res->eval = res->best = (EvalResult){NAN, NAN, NAN, NAN, 0};
    res->best_step = -1;
    const ModelConfig *c = &m->cfg;
    if (tc->batch > m->B || tc->seq > m->T)
        return ll_err(err, LL_ERR_CONFIG, "batch %d x %d exceeds the model's capacity %d x %d", tc->batch, tc->seq,
                      m->B, m->T);
    if (!a && !m->grads)
        return ll_err(err, LL_ERR_STATE, "no adapter and a frozen base: nothing to train");
    /* Both splits, before anything is trained: a validation label past the head would otherwise
     * surface only at the first evaluation (where eval_run refuses it too). */
    LLStatus fst = fits_head(c, train, err);
    if (!fst && valid) fst = fits_head(c, valid, err);
    for (int i = 0; !fst && hooks && i < hooks->n_eval_sets; i++) fst = fits_head(c, hooks->eval_sets[i], err);
    if (fst) return fst;
    LLStatus pst = model_set_bf16(m, tc->bf16, err);
    if (pst) return pst;
    adapter_attach(m, a);

    AdamW opt;
    adamw_init(&opt, tc->beta1, tc->beta2, tc->eps, tc->weight_decay);
    if (a) {
        /* LoRA+ splits the flat buffer into ranges at lr and lr·lr_ratio; otherwise one range. */
        AdapterLrRange *rg;
        int nr = adapter_lr_ranges(a, &rg);
        for (int i = 0; i < nr; i++)
            adamw_add_scaled(&opt, a->params + rg[i].off, a->grads + rg[i].off, rg[i].n, 1, rg[i].lr_scale);
        ll_free(rg);
    } else {
        train_add_base_params(&opt, m);
    }
    if (m->head) adamw_add(&opt, m->head, m->head_grad, m->n_head, 1);
    adamw_ready(&opt);
    res->trainable = opt.n;
    res->optimizer_bytes = adamw_state_bytes(&opt);

    Batch b;
    batch_alloc(&b, tc->batch, tc->seq);
    Rng rng;
    rng_seed(&rng, rng_derive(tc->seed, 21));
    const float inv_accum = 1.0f / (float)tc->accum;
    Snapshot best = {0};
    const int keep_best = tc->keep == TRAIN_KEEP_BEST && valid;
    if (keep_best) snapshot_init(&best, m, a);
    double t0 = ll_now(), eval_time = 0.0, window_loss = 0.0;
    int window_n = 0;
    LLStatus st = LL_OK;
    TrainCheckpoint *ck = hooks ? hooks->checkpoint : NULL;
    CkptSet cs = {0};
    int start = 0;
    if (ck) {
        ck->resumed_step = 0, ck->written = 0;
        ckpt_init(&cs, m, a, &opt, &best, keep_best);
        start = ckpt_resume(ck, &cs, m, a, &opt, &rng, res, &window_loss, &window_n, tc->steps, &st, err);
        ck->resumed_step = start;
        if (!st && ck->resumed) ck->resumed(ck->user, start);
    }
    if (valid && start == 0 && !st) { /* step 0: the starting weights, so that curves start at the base's loss */
        double e0 = ll_now();
        st = evaluate(m, a, tc, valid, hooks, 0, &b, &best, keep_best, res, err);
        eval_time += ll_now() - e0;
    }
    for (int step = start; step < tc->steps && !st; step++) {
        float lr = lr_at(tc->schedule, step, tc->steps, tc->warmup, tc->lr, tc->min_lr_ratio);
        adamw_zero_grad(&opt);
        double loss = 0.0, reg = 0.0;
        for (int k = 0; k < tc->accum; k++) {
            data_sample(train, &rng, &b, tc->batch, tc->seq, c->bos_id, c->pad_id);
            loss += (double)model_forward(m, &b, 1) * inv_accum;
            model_backward(m, &b, inv_accum);
            if (a) reg += (double)adapter_reg_loss(a, a->cfg.orth_reg_weight * inv_accum) * inv_accum;
        }
        double gnorm = adamw_grad_norm(&opt);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            res->diverged_step = step;
            /* The hint follows the cause it points to: before any update the learning rate cannot be
             * it; without clipping, one bad batch can be. */
            const char *hint = step == 0 ? "nothing was updated yet, so check the base weights and the data "
                                           "(loralab eval on the base)"
                               : tc->clip <= 0.0f ? "try a lower learning rate, or turn on train.clip (it is 0: off)"
                                                  : "try a lower learning rate or a longer train.warmup";
            st = ll_err(err, LL_ERR_DIVERGED, "training diverged at step %d: %s is %s (lr %.3g); %s", step,
                        !isfinite(loss) ? "the loss" : "the gradient norm",
                        isnan(!isfinite(loss) ? loss : gnorm) ? "NaN" : "infinite", lr, hint);
            emit(hooks, step, "train", "loss", loss);
            break;
        }
        if (step == 0) emit(hooks, 0, "train", "loss", loss); /* the first batch, before any update */
        if (tc->clip > 0.0f && gnorm > tc->clip) adamw_scale_grads(&opt, (float)(tc->clip / gnorm));
        adamw_step(&opt, lr);
        if (a) adapter_on_step(a, step);
        else model_base_changed(m);
        res->steps_done = step + 1;
        window_loss += loss;
        window_n++;
        int last = step + 1 == tc->steps;
        if ((tc->log_every > 0 && (step + 1) % tc->log_every == 0) || last) {
            res->train_loss = window_loss / window_n;
            emit(hooks, step + 1, "train", "loss", res->train_loss);
            emit(hooks, step + 1, "train", "lr", lr);
            emit(hooks, step + 1, "train", "grad_norm", gnorm);
            if (reg != 0.0) emit(hooks, step + 1, "train", "orth_reg", reg);
            window_loss = 0.0, window_n = 0;
        }
        if (valid && ((tc->eval_every > 0 && (step + 1) % tc->eval_every == 0) || last)) {
            double e0 = ll_now();
            st = evaluate(m, a, tc, valid, hooks, step + 1, &b, &best, keep_best, res, err);
            if (st) break;
            eval_time += ll_now() - e0;
            if (!last && hooks && hooks->evaluated && hooks->evaluated(hooks->user, step + 1, &res->eval))
                res->pruned_step = step + 1;
        }
        double elapsed = ll_now() - t0, train_time = elapsed - eval_time;
        res->wall_s = elapsed;
        /* this attempt's steps only: a resumed run's clock starts at its resume */
        res->tokens_per_s = (double)(res->steps_done - start) * tc->accum * tc->batch * tc->seq /
                            (train_time > 0 ? train_time : 1e-9);
        if (hooks && hooks->progress)
            hooks->progress(hooks->user, step + 1, tc->steps, loss, res->tokens_per_s,
                            elapsed / (step + 1 - start) * (tc->steps - step - 1));
        if (res->pruned_step > 0) break; /* after the bookkeeping above, as at a normal end */
        const int stop = !last && hooks && hooks->stop && hooks->stop(hooks->user);
        const int timed_out = !last && tc->max_minutes > 0 && elapsed > tc->max_minutes * 60.0;
        if (ck && !last && (stop || timed_out || (tc->checkpoint_every > 0 && (step + 1) % tc->checkpoint_every == 0)))
            ckpt_write(ck, &cs, a, &opt, &rng, res, window_loss, window_n, tc->steps);
        if (stop) {
            st = ll_err(err, LL_ERR_INTERRUPTED, "interrupted at step %d of %d", step + 1, tc->steps);
            break;
        }
        if (timed_out) {
            st = ll_err(err, LL_ERR_INTERRUPTED, "stopped by train.max_minutes (%g) at step %d of %d",
                        tc->max_minutes, step + 1, tc->steps);
            break;
        }
    }
    res->kept_step = res->steps_done;
    if (st == LL_OK && keep_best && res->best_step >= 0 && res->best_step != res->steps_done) {
        snapshot_restore(&best, m, a);
        res->kept_step = res->best_step;
    }
    res->wall_s = ll_now() - t0;
    snapshot_free(&best);
    ckpt_free(&cs);
    batch_free(&b);
    adamw_free(&opt);
    return st;
}
