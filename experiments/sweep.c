/* sweep: see sweep.h for the plan's order, sharding and the runner's process model.
 *
 * Invariants kept here:
 *   - The parent process touches no engine numerics and holds no Store across fork(): it opens the
 *     database, does its bookkeeping, closes it, and only then forks. Workers and the base builder
 *     are children that open their own connection.
 *   - A run is claimed by exactly one worker (store_claim_run under BEGIN IMMEDIATE), and every
 *     worker that ended leaves its run in a final state: recorded by the run, by the worker
 *     wrapper (a run function that returned without recording), or by the parent (a worker that
 *     died).
 *   - Children leave with _exit(): they never run the parent's atexit handlers or flush its stdio
 *     buffers (both are flushed before every fork).
 */
#define _POSIX_C_SOURCE 200809L
#include "sweep.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "buildinfo.h"

/* ---- shards ---------------------------------------------------------------------------------- */

int sweep_in_shard(int index, int shard_i, int shard_n) { return shard_n <= 0 || index % shard_n == shard_i; }

static int parse_nonneg(const char *s, const char *end, int *out) {
    if (s == end) return 0;
    long v = 0;
    for (const char *p = s; p < end; p++) {
        if (!isdigit((unsigned char)*p)) return 0;
        v = v * 10 + (*p - '0');
        if (v > 1000000000L) return 0;
    }
    *out = (int)v;
    return 1;
}

LLStatus sweep_parse_shard(const char *text, int *shard_i, int *shard_n, LLError *err) {
    const char *slash = strchr(text, '/');
    int i, n;
    if (!slash || !parse_nonneg(text, slash, &i) || !parse_nonneg(slash + 1, slash + strlen(slash), &n))
        return ll_err(err, LL_ERR_CONFIG, "--shard '%s': expected I/N, e.g. 0/4", text);
    if (n < 1 || i >= n) return ll_err(err, LL_ERR_CONFIG, "--shard '%s': need 0 <= I < N", text);
    *shard_i = i, *shard_n = n;
    return LL_OK;
}


/* ---- dry run --------------------------------------------------------------------------------- */

static void cell_text(const RunConfig *rc, const char *key, char *out, size_t cap) {
    char raw[512];
    if (strcmp(key, "adapter.method") == 0) { /* as the tables name it: dora, not lora + use_dora */
        snprintf(out, cap, "%s", adapter_variant_name(&rc->adapter));
        return;
    }
    if (!config_canonical_get(rc, key, raw, sizeof raw)) {
        snprintf(out, cap, "-");
        return;
    }
    /* Strings without their quotes; lists as they are, minus the quotes of their items. */
    size_t len = 0;
    for (const char *p = raw; *p && len + 1 < cap; p++)
        if (*p != '"') out[len++] = *p;
    out[len] = '\0';
}

/* "runs per method: lora 9, dora 9, full 9" (the shard's runs), when the plan has more than one;
 * methods in the order they first appear. */
static void print_method_counts(FILE *f, const SweepPlan *plan, int shard_i, int shard_n) {
    enum { MAX_VARIANTS = 16 };
    const char *name[MAX_VARIANTS];
    int count[MAX_VARIANTS], nv = 0;
    for (int i = 0; i < plan->n; i++) {
        if (!sweep_in_shard(i, shard_i, shard_n)) continue;
        const char *v = adapter_variant_name(&plan->points[i].rc.adapter);
        int k = 0;
        while (k < nv && strcmp(name[k], v) != 0) k++;
        if (k == nv && nv < MAX_VARIANTS) name[nv] = v, count[nv++] = 0;
        if (k < nv) count[k]++;
    }
    if (nv < 2) return;
    fprintf(f, "runs per method:");
    for (int k = 0; k < nv; k++) fprintf(f, "%s %s %d", k ? "," : "", name[k], count[k]);
    fprintf(f, "\n");
}

void sweep_print_plan(FILE *f, const SweepPlan *plan, int shard_i, int shard_n) {
    enum { CELL = 64 };
    int nc = plan->n_vary + 2;
    int *w = ll_calloc((size_t)nc, sizeof(int));
    char cell[CELL];
    w[0] = 5, w[1] = 16;
    for (int c = 0; c < plan->n_vary; c++) w[c + 2] = (int)strlen(plan->vary[c]);
    int shown = 0;
    for (int i = 0; i < plan->n; i++) {
        if (!sweep_in_shard(i, shard_i, shard_n)) continue;
        shown++;
        for (int c = 0; c < plan->n_vary; c++) {
            cell_text(&plan->points[i].rc, plan->vary[c], cell, sizeof cell);
            if ((int)strlen(cell) > w[c + 2]) w[c + 2] = (int)strlen(cell);
        }
    }
    fprintf(f, "%*s  %-*s", w[0], "#", w[1], "run key");
    for (int c = 0; c < plan->n_vary; c++) fprintf(f, "  %-*s", w[c + 2], plan->vary[c]);
    fprintf(f, "\n");
    for (int i = 0; i < plan->n; i++) {
        if (!sweep_in_shard(i, shard_i, shard_n)) continue;
        fprintf(f, "%*d  %-*s", w[0], i, w[1], plan->points[i].rc.key);
        for (int c = 0; c < plan->n_vary; c++) {
            cell_text(&plan->points[i].rc, plan->vary[c], cell, sizeof cell);
            fprintf(f, "  %-*s", w[c + 2], cell);
        }
        fprintf(f, "\n");
    }
    if (shard_n > 0) fprintf(f, "shard %d/%d: %d of %d runs; ", shard_i, shard_n, shown, plan->n);
    fprintf(f, "%d run%s (%d point%s, %d excluded, %d merged as duplicates)\n", plan->n, plan->n == 1 ? "" : "s",
            plan->n_raw, plan->n_raw == 1 ? "" : "s", plan->n_excluded, plan->n_merged);
    print_method_counts(f, plan, shard_i, shard_n);
    ll_free(w);
}

/* ---- the runner ------------------------------------------------------------------------------ */

static volatile sig_atomic_t g_stop = 0;    /* read by runs through RunEnv.stop */
static volatile sig_atomic_t g_signals = 0; /* how many arrived: the second one kills workers */
static volatile sig_atomic_t g_signo = 0;

static void on_signal(int sig) {
    g_stop = 1;
    g_signo = sig;
    g_signals = g_signals + 1;
}

void sweep_options_defaults(SweepOptions *o) {
    memset(o, 0, sizeof *o);
    o->progress = -1;
}

const char *sweep_pick_parallelism(int n_runs, int *jobs, int *threads) {
    static char why[200];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (n_runs < 1) n_runs = 1;
    int given_j = *jobs > 0, given_t = *threads > 0;
    if (!given_j && !given_t) {
        *jobs = (int)(cores < n_runs ? cores : n_runs);
        *threads = (int)(cores / *jobs);
    } else if (!given_j) {
        *jobs = (int)(cores / *threads);
        if (*jobs < 1) *jobs = 1;
        if (*jobs > n_runs) *jobs = n_runs;
    } else if (!given_t) {
        *threads = (int)(cores / *jobs);
    }
    if (*threads < 1) *threads = 1;
    if (!given_j && !given_t && *jobs < cores)
        snprintf(why, sizeof why, "default: %d run%s to do on %ld cores, the cores shared out", n_runs,
                 n_runs == 1 ? "" : "s", cores);
    else if (!given_j && !given_t)
        snprintf(why, sizeof why, "default: one single-threaded job per core (%ld cores), the fastest split for "
                 "small models", cores);
    else if (!given_t && *jobs == 1)
        snprintf(why, sizeof why, "--jobs 1: the one job gets all %ld cores (--threads to change)", cores);
    else if (!given_t)
        snprintf(why, sizeof why, "--jobs %d: the %ld cores shared out (--threads to change)", *jobs, cores);
    else if (!given_j)
        snprintf(why, sizeof why, "--threads %d: as many jobs as %ld cores hold", *threads, cores);
    else
        snprintf(why, sizeof why, "as given");
    if ((long)*jobs * *threads > cores) {
        size_t len = strlen(why);
        snprintf(why + len, sizeof why - len, "; %d threads on %ld cores: oversubscribed, runs will be slower",
                 *jobs * *threads, cores);
    }
    return why;
}

typedef struct {
    pid_t pid;
    int point;         /* index into plan->points */
    int64_t run_id;
    double t0;
} Slot;

typedef struct {
    const ConfigDoc *doc;
    const SweepPlan *plan;
    const SweepOptions *o;
    SweepRunFn run_fn;
    SweepBaseFn base_fn;
    FILE *log;
    int progress;
    char db[1024];
    const char *name;
    int64_t sweep_id;
    int jobs, threads;
    /* progress */
    int total, finished, running;
    double best_loss;
    char best_key[17];
    double t_start, t_runs, run_time_sum; /* t_runs: when the workers started (after bases) */
    int runs_timed;
    int line_shown;
} Runner;

static void log_fn(void *user, LLLogLevel level, const char *msg) {
    if (level < LL_LOG_WARN) return;
    Runner *r = user;
    fprintf(r->log, "%s\n", msg);
}

/* Building the base is one long step: its notes (tokenizer, final loss) are worth a line each. */
static void log_base_fn(void *user, LLLogLevel level, const char *msg) {
    if (level < LL_LOG_INFO) return;
    Runner *r = user;
    fprintf(r->log, "%s\n", msg);
}

static void fmt_clock(double s, char *out, size_t cap) {
    if (!(s >= 0) || s > 360000) {
        snprintf(out, cap, "--:--");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, cap, "%02d:%02d", t / 60, t % 60);
}

static void clear_line(Runner *r) {
    if (r->progress && r->line_shown) {
        fprintf(r->log, "\r\033[K");
        r->line_shown = 0;
    }
}

static void show_progress(Runner *r, int todo_left) {
    if (!r->progress) return;
    char eta[32], best[64] = "";
    double per = r->runs_timed ? r->run_time_sum / r->runs_timed : NAN;
    fmt_clock(r->runs_timed ? per * todo_left / r->jobs : NAN, eta, sizeof eta);
    if (isfinite(r->best_loss)) snprintf(best, sizeof best, " best eval_loss=%.4f (%s)", r->best_loss, r->best_key);
    fprintf(r->log, "\r\033[K[%d/%d] running=%d%s ETA %s", r->finished, r->total, r->running, best, eta);
    fflush(r->log);
    r->line_shown = 1;
}

static void logf_line(Runner *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_line(Runner *r, const char *fmt, ...) {
    clear_line(r);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fputc('\n', r->log);
    fflush(r->log);
}

void sweep_run_info(const RunConfig *rc, char *targets, size_t cap, RunInfo *info) {
    const AdapterConfig *a = &rc->adapter;
    memset(info, 0, sizeof *info);
    info->key = rc->key;
    info->config_json = rc->canonical_json;
    info->method = adapter_variant_name(a);
    targets[0] = '\0';
    if (a->method != ADAPTER_FULL) adapter_targets_string(a->targets, targets, cap);
    info->targets = targets;
    /* The rank a method ends with: LoRA/VeRA r, AdaLoRA's average target; full fine-tuning none. */
    info->r = a->method == ADAPTER_FULL ? 0 : a->method == ADAPTER_ADALORA ? a->target_r : a->r;
    /* As the config wrote them (0.003), not widened from the float fields (0.00300000002607703). */
    int no_alpha = a->method == ADAPTER_FULL || a->method == ADAPTER_VERA;
    info->alpha = no_alpha ? 0.0 : config_written_number(rc, "adapter.alpha");
    info->lr = config_written_number(rc, "train.lr");
    info->seed = (int64_t)rc->train.seed;
}

/* The outcome of a worker that returned without recording, as the store takes it. */
static void result_from_outcome(const RunOutcome *out, const char *status, const char *error, RunResult *r) {
    memset(r, 0, sizeof *r);
    r->status = status;
    r->tokens_per_s = out->tokens_per_s, r->wall_s = out->wall_s;
    r->trainable = out->trainable, r->total = out->total, r->peak_mem = out->peak_mem;
    r->train_loss = out->train_loss, r->eval_loss = out->eval_loss, r->eval_ppl = out->eval_ppl;
    r->accuracy = out->accuracy, r->macro_f1 = out->macro_f1;
    r->error = error;
    r->adapter_dir = out->out_dir[0] ? out->out_dir : NULL;
}

static const char *status_of(LLStatus st) {
    return st == LL_OK                ? "done"
           : st == LL_ERR_DIVERGED    ? "diverged"
           : st == LL_ERR_INTERRUPTED ? "interrupted"
                                      : "failed";
}

enum { WORKER_OK = 0, WORKER_RUN_FAILED = 1, WORKER_NOT_CLAIMED = 3, WORKER_NO_STORE = 4 };

/* The child: claim, run, make sure an outcome is recorded. Returns the exit code. */
static int worker_main(Runner *r, const SweepPoint *pt, int64_t run_id) {
    Store *s = NULL;
    LLError e, e2;
    if (store_open(r->db, 0, &s, &e)) {
        fprintf(r->log, "run %s: %s\n", pt->rc.key, e.msg);
        return WORKER_NO_STORE;
    }
    int claimed = 0; /* a run with a checkpoint keeps the metric rows it accounts for */
    if (store_claim_run_resuming(s, run_id, run_resume_step(&pt->rc), &claimed, &e)) {
        fprintf(r->log, "run %s: %s\n", pt->rc.key, e.msg);
        store_close(s);
        return WORKER_NO_STORE;
    }
    if (!claimed) {
        store_close(s);
        return WORKER_NOT_CLAIMED;
    }
    const EarlyStopSpec *es = &r->doc->sweep.early_stop;
    RunEnv env = {s, run_id, &g_stop, 0, r->threads, {log_fn, r}, es->type != ES_NONE ? es : NULL};
    RunOutcome out;
    memset(&out, 0, sizeof out);
    out.train_loss = out.eval_loss = out.eval_ppl = out.accuracy = out.macro_f1 = NAN;
    out.tokens_per_s = out.wall_s = NAN;
    out.trainable = out.total = out.peak_mem = -1;
    e.msg[0] = '\0';
    LLStatus st = r->run_fn(&pt->rc, &env, &out, &e);
    char status[16];
    if (store_run_status(s, r->sweep_id, pt->rc.key, status, NULL, &e2) == LL_OK && strcmp(status, "running") == 0) {
        RunResult res;
        result_from_outcome(&out, status_of(st), st ? e.msg : NULL, &res);
        if (store_finish_run(s, run_id, &res, &e2)) fprintf(r->log, "run %s: %s\n", pt->rc.key, e2.msg);
    }
    store_close(s);
    return st == LL_OK ? WORKER_OK : WORKER_RUN_FAILED;
}

/* The signal's name as <signal.h> spells it, for the error a run keeps: the same on every libc,
 * unlike strsignal's description ("Killed", "Segmentation fault"). */
static const char *signal_name(int sig) {
    static const struct {
        int sig;
        const char *name;
    } names[] = {{SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
                 {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
                 {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
                 {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"}, {SIGXCPU, "SIGXCPU"},
                 {SIGXFSZ, "SIGXFSZ"}, {SIGSYS, "SIGSYS"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].sig == sig) return names[i].name;
    return "an unnamed signal";
}

static void exit_text(int wstatus, char *out, size_t cap) {
    if (WIFSIGNALED(wstatus))
        snprintf(out, cap, "killed by signal %d (%s)", WTERMSIG(wstatus), signal_name(WTERMSIG(wstatus)));
    else if (WIFEXITED(wstatus)) snprintf(out, cap, "exited with status %d", WEXITSTATUS(wstatus));
    else snprintf(out, cap, "ended (wait status %d)", wstatus);
}

/* Bookkeeping after a worker ended: record a death, count the outcome, log it. */
static void reap_worker(Runner *r, const Slot *slot, int wstatus, int stopping, SweepSummary *sum) {
    const SweepPoint *pt = &r->plan->points[slot->point];
    double wall = ll_now() - slot->t0;
    Store *s = NULL;
    LLError e;
    char status[16] = "?", why[128], error[1100] = "";
    double loss = NAN;
    exit_text(wstatus, why, sizeof why);
    int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    RunRow *rows = NULL;
    int n = 0;
    if (store_open(r->db, 0, &s, &e) || store_list_runs(s, r->name, &rows, &n, &e)) {
        logf_line(r, "run %s: cannot read its outcome: %s", pt->rc.key, e.msg);
        n = 0;
    }
    const RunRow *row = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].key, pt->rc.key) == 0) row = &rows[i];
    if (row) {
        snprintf(status, sizeof status, "%s", row->status);
        loss = row->eval_loss;
        if (row->error) snprintf(error, sizeof error, "%s", row->error);
    }
    if (row && strcmp(status, "running") == 0 && row->pid == (int64_t)slot->pid) {
        /* Claimed by this worker and never finished: it died. Its metrics so far stay until the
         * next attempt's claim clears them. */
        snprintf(error, sizeof error, "worker (pid %d) %s before recording a result", (int)slot->pid, why);
        RunOutcome none;
        memset(&none, 0, sizeof none);
        none.train_loss = none.eval_loss = none.eval_ppl = none.accuracy = none.macro_f1 = NAN;
        none.tokens_per_s = NAN, none.wall_s = wall;
        none.trainable = none.total = none.peak_mem = -1;
        RunResult res;
        result_from_outcome(&none, stopping ? "interrupted" : "failed", error, &res);
        if (store_finish_run(s, slot->run_id, &res, &e)) logf_line(r, "run %s: %s", pt->rc.key, e.msg);
        else snprintf(status, sizeof status, "%s", res.status);
    } else if (code == WORKER_NOT_CLAIMED) {
        snprintf(status, sizeof status, "busy");
    } else if (code != WORKER_OK && (code == WORKER_NO_STORE || strcmp(status, "pending") == 0)) {
        snprintf(error, sizeof error, "worker (pid %d) %s before claiming the run", (int)slot->pid, why);
        snprintf(status, sizeof status, "failed");
    }
    for (int i = 0; i < n; i++) /* the best loss so far, for the progress line */
        if (strcmp(rows[i].status, "done") == 0 && isfinite(rows[i].eval_loss) &&
            !(rows[i].eval_loss >= r->best_loss)) {
            r->best_loss = rows[i].eval_loss;
            snprintf(r->best_key, sizeof r->best_key, "%s", rows[i].key);
        }
    if (rows) store_free_runs(rows, n);
    if (s) store_close(s);
    r->finished++;
    if (strcmp(status, "done") == 0) {
        sum->done++;
        r->run_time_sum += wall, r->runs_timed++;
    } else if (strcmp(status, "pruned") == 0) {
        sum->pruned++;
    } else if (strcmp(status, "diverged") == 0) {
        sum->diverged++;
        r->run_time_sum += wall, r->runs_timed++;
    } else if (strcmp(status, "interrupted") == 0) {
        sum->interrupted++;
    } else if (strcmp(status, "busy") == 0) {
        sum->busy++;
    } else {
        sum->failed++;
    }
    char ls[48] = "", tm[32];
    if (isfinite(loss)) snprintf(ls, sizeof ls, " eval_loss=%.4f", loss);
    fmt_clock(wall, tm, sizeof tm);
    if (strcmp(status, "done") == 0 || strcmp(status, "pruned") == 0) {
        if (!r->progress) logf_line(r, "[%d/%d] %s %s%s (%s)", r->finished, r->total, pt->rc.key, status, ls, tm);
    } else if (strcmp(status, "busy") == 0) {
        logf_line(r, "[%d/%d] %s skipped: another live process is running it", r->finished, r->total, pt->rc.key);
    } else {
        logf_line(r, "[%d/%d] %s %s%s (%s)%s%s", r->finished, r->total, pt->rc.key, status, ls, tm,
                  error[0] ? ": " : "", error);
    }
}

static void set_handlers(struct sigaction *old_int, struct sigaction *old_term) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a signal wakes the parent's sleep at once */
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
    g_stop = 0, g_signals = 0, g_signo = 0;
}

static void nap(double seconds) {
    struct timespec ts = {0, (long)(seconds * 1e9)};
    nanosleep(&ts, NULL); /* EINTR on a signal: fine, the loop looks at the flag */
}

/* Builds (or checks) each base model the runs need, once, in a child process. */
static LLStatus ensure_bases(Runner *r, const int *todo, int n_todo, LLError *err) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    for (int t = 0; t < n_todo; t++) {
        const RunConfig *rc = &r->plan->points[todo[t]].rc;
        int seen = 0;
        for (int u = 0; u < t && !seen; u++) seen = strcmp(r->plan->points[todo[u]].rc.base_path, rc->base_path) == 0;
        if (seen) continue;
        char cfg[1100];
        snprintf(cfg, sizeof cfg, "%s/config.json", rc->base_path);
        int build = rc->pretrain && !ll_file_exists(cfg);
        double t0 = ll_now();
        if (build)
            logf_line(r, "sweep %s: pretraining the base model into %s (once: every run reuses it)", r->name,
                      rc->base_path);
        int fds[2];
        if (pipe(fds) != 0) return ll_err(err, LL_ERR_IO, "pipe: %s", strerror(errno));
        fflush(r->log);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            close(fds[0]), close(fds[1]);
            return ll_err(err, LL_ERR_IO, "fork: %s", strerror(errno));
        }
        if (pid == 0) {
            close(fds[0]);
            RunEnv env = {NULL, 0, &g_stop, r->progress, (int)(cores > 0 ? cores : 1), {log_base_fn, r}, NULL};
            char path[1024];
            LLError e;
            LLStatus st = r->base_fn(rc, &env, path, sizeof path, &e);
            if (st) {
                ssize_t w = write(fds[1], e.msg, strlen(e.msg));
                (void)w;
            }
            close(fds[1]);
            fflush(r->log);
            fflush(stderr);
            _exit(st);
        }
        close(fds[1]);
        int wstatus = 0, forwarded = 0;
        for (;;) {
            pid_t w = waitpid(pid, &wstatus, WNOHANG);
            if (w == pid) break;
            if (w < 0 && errno != EINTR) break;
            if (g_stop && forwarded < g_signals) {
                kill(pid, g_signals >= 2 ? SIGKILL : SIGINT);
                forwarded = g_signals;
            }
            nap(0.05);
        }
        char msg[1024] = "";
        ssize_t got = read(fds[0], msg, sizeof msg - 1);
        msg[got > 0 ? got : 0] = '\0';
        close(fds[0]);
        if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
            char tm[32];
            fmt_clock(ll_now() - t0, tm, sizeof tm);
            if (build) logf_line(r, "sweep %s: base model ready (%s)", r->name, tm);
            continue;
        }
        if (g_stop)
            return ll_err(err, LL_ERR_INTERRUPTED, "interrupted while preparing the base model %s", rc->base_path);
        char why[128];
        exit_text(wstatus, why, sizeof why);
        LLStatus code =
            WIFEXITED(wstatus) && WEXITSTATUS(wstatus) <= LL_ERR_STATE ? (LLStatus)WEXITSTATUS(wstatus) : LL_ERR_STATE;
        if (msg[0]) return ll_err(err, code, "base model %s: %s", rc->base_path, msg);
        return ll_err(err, code, "base model %s: the process preparing it %s", rc->base_path, why);
    }
    return LL_OK;
}

static LLStatus open_db_dir(const char *db, LLError *err) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", db);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return LL_OK;
    *slash = '\0';
    return ll_mkdirs(dir, err);
}

LLStatus sweep_run(const ConfigDoc *doc, const SweepPlan *plan, const SweepOptions *o, SweepSummary *sum,
                   LLError *err) {
    memset(sum, 0, sizeof *sum);
    Runner r;
    memset(&r, 0, sizeof r);
    r.doc = doc, r.plan = plan, r.o = o;
    r.run_fn = o->run_fn ? o->run_fn : run_execute;
    r.base_fn = o->base_fn ? o->base_fn : run_ensure_base;
    r.log = o->log ? o->log : stderr;
    r.progress = o->progress >= 0 ? o->progress : isatty(fileno(r.log));
    r.best_loss = NAN;
    r.t_start = ll_now();
    if (plan->n == 0) {
        logf_line(&r, "sweep: every point was excluded; nothing to run");
        return LL_OK;
    }
    r.name = plan->points[0].rc.name;
    if (o->db_path) snprintf(r.db, sizeof r.db, "%s", o->db_path);
    else snprintf(r.db, sizeof r.db, "results/%s.db", r.name);
    LLStatus st = open_db_dir(r.db, err);
    if (st) return st;

    /* Bookkeeping: the sweep row, the shard's runs, stale rows, what is left to do. */
    int *sel = ll_malloc((size_t)plan->n, sizeof(int)), n_sel = 0;
    int64_t *run_id = ll_calloc((size_t)plan->n, sizeof(int64_t));
    int *todo = ll_malloc((size_t)plan->n, sizeof(int)), n_todo = 0;
    Slot *slots = NULL;
    for (int i = 0; i < plan->n; i++)
        if (sweep_in_shard(i, o->shard_i, o->shard_n)) sel[n_sel++] = i;
    Store *s = NULL;
    st = store_open(r.db, 0, &s, err);
    if (!st) st = store_upsert_sweep(s, r.name, doc->path, doc->text, &r.sweep_id, err);
    for (int k = 0; k < n_sel && !st; k++) {
        RunInfo info;
        char targets[128];
        sweep_run_info(&plan->points[sel[k]].rc, targets, sizeof targets, &info);
        st = store_add_run(s, r.sweep_id, &info, &run_id[sel[k]], err);
        /* Early stopping compares a run only with runs of its seed: seed noise never decides. */
        if (!st && doc->sweep.early_stop.type != ES_NONE) {
            char bracket[64];
            const RunConfig *rc = &plan->points[sel[k]].rc;
            snprintf(bracket, sizeof bracket, "seed=%llu", (unsigned long long)rc->train.seed);
            st = store_set_bracket(s, run_id[sel[k]], bracket, err);
        }
    }
    int n_reopened = 0;
    if (!st && o->retry_pruned) st = store_reopen_pruned(s, r.sweep_id, &n_reopened, err);
    int n_stale = 0;
    if (!st) st = store_mark_running_interrupted(s, r.sweep_id, &n_stale, err);
    int prior_diverged = 0;
    for (int k = 0; k < n_sel && !st; k++) {
        char status[16];
        st = store_run_status(s, r.sweep_id, plan->points[sel[k]].rc.key, status, NULL, err);
        if (st) break;
        if (strcmp(status, "done") == 0 || strcmp(status, "pruned") == 0) sum->skipped++;
        else if (strcmp(status, "diverged") == 0 && !o->retry_diverged) sum->skipped++, prior_diverged++;
        else todo[n_todo++] = sel[k];
    }
    if (!st) { /* the best loss so far, for the progress line */
        RunRow *rows = NULL;
        int n = 0;
        if (store_list_runs(s, r.name, &rows, &n, NULL) == LL_OK) {
            for (int i = 0; i < n; i++)
                if (strcmp(rows[i].status, "done") == 0 && isfinite(rows[i].eval_loss) &&
                    !(rows[i].eval_loss >= r.best_loss)) {
                    r.best_loss = rows[i].eval_loss;
                    snprintf(r.best_key, sizeof r.best_key, "%s", rows[i].key);
                }
            store_free_runs(rows, n);
        }
    }
    if (s) store_close(s);
    s = NULL;
    sum->total = n_sel;
    r.total = n_sel;
    r.finished = sum->skipped;
    r.jobs = o->jobs, r.threads = o->threads;
    const char *split = sweep_pick_parallelism(n_todo, &r.jobs, &r.threads);
    if (st) goto out;
    char shard[64] = "";
    if (o->shard_n > 0) snprintf(shard, sizeof shard, " (shard %d/%d of %d)", o->shard_i, o->shard_n, plan->n);
    logf_line(&r, "sweep %s: %d run%s%s, %d done before%s, %d to run on %d job%s x %d thread%s (%s); database %s",
              r.name, n_sel, n_sel == 1 ? "" : "s", shard, sum->skipped - prior_diverged,
              prior_diverged ? " (+ diverged ones, not retried)" : "", n_todo, r.jobs, r.jobs == 1 ? "" : "s",
              r.threads, r.threads == 1 ? "" : "s", split, r.db);
    logf_line(&r, "sweep %s: build: %s", r.name, build_info());
    if (doc->sweep.early_stop.type != ES_NONE) {
        const EarlyStopSpec *es = &doc->sweep.early_stop;
        logf_line(&r, "sweep %s: early stopping: %s on %s from step %d (reduction factor %d, grace %d runs), within "
                  "each seed%s%s", r.name, es_type_name(es->type), es->metric, es->min_steps, es->reduction_factor,
                  es->grace_runs, es->note[0] ? "; " : "", es->note);
    }
    if (n_reopened) logf_line(&r, "sweep %s: %d pruned run%s reopened (--retry-pruned)", r.name, n_reopened,
                              n_reopened == 1 ? "" : "s");
    if (n_stale) logf_line(&r, "sweep %s: %d run%s of a killed sweep marked interrupted (re-run now)", r.name, n_stale,
                           n_stale == 1 ? "" : "s");
    sum->diverged += prior_diverged;

    struct sigaction old_int, old_term;
    set_handlers(&old_int, &old_term);
    if (n_todo > 0) st = ensure_bases(&r, todo, n_todo, err);
    r.t_runs = ll_now();
    if (st) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        goto out;
    }

    /* The worker loop: start up to `jobs`, poll for ends, forward signals. */
    slots = ll_calloc((size_t)r.jobs, sizeof(Slot));
    int next = 0, active = 0, forwarded = 0, stopping = 0;
    double last_draw = 0;
    while (next < n_todo || active > 0) {
        if (g_stop && forwarded < g_signals) {
            if (!stopping) logf_line(&r, "sweep %s: stopping: %d running run%s will end at their next step (signal "
                                     "again to kill them)", r.name, active, active == 1 ? "" : "s");
            stopping = 1;
            for (int k = 0; k < r.jobs; k++)
                if (slots[k].pid > 0) kill(slots[k].pid, g_signals >= 2 ? SIGKILL : (int)g_signo);
            forwarded = g_signals;
        }
        while (!g_stop && active < r.jobs && next < n_todo) {
            int k = 0;
            while (slots[k].pid > 0) k++;
            const SweepPoint *pt = &plan->points[todo[next]];
            fflush(r.log);
            fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) {
                st = ll_err(err, LL_ERR_IO, "fork: %s", strerror(errno));
                stopping = 1;
                break;
            }
            if (pid == 0) {
                int code = worker_main(&r, pt, run_id[todo[next]]);
                fflush(r.log); /* _exit does not flush stdio */
                _exit(code);
            }
            slots[k] = (Slot){pid, todo[next], run_id[todo[next]], ll_now()};
            next++, active++;
            r.running = active;
        }
        if (st && active == 0) break;
        int reaped = 0;
        for (int k = 0; k < r.jobs; k++) {
            if (slots[k].pid <= 0) continue;
            int wstatus;
            pid_t w = waitpid(slots[k].pid, &wstatus, WNOHANG);
            if (w == 0 || (w < 0 && errno == EINTR)) continue;
            if (w < 0) wstatus = 0x7f00; /* lost: treated as an abnormal end */
            r.running = active - 1;
            reap_worker(&r, &slots[k], wstatus, stopping, sum);
            slots[k].pid = 0;
            active--, reaped++;
        }
        if (stopping && next < n_todo) next = n_todo; /* nothing new starts */
        double now = ll_now();
        if (reaped || now - last_draw > 1.0) {
            show_progress(&r, n_todo - (r.finished - sum->skipped));
            last_draw = now;
        }
        if (!reaped) nap(0.02);
    }
    clear_line(&r);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (stopping && !st) {
        /* Every worker is reaped; anything still `running` of this sweep belonged to them. */
        int n_marked = 0;
        LLError e;
        if (store_open(r.db, 0, &s, &e) == LL_OK) {
            if (store_mark_running_interrupted(s, r.sweep_id, &n_marked, &e))
                logf_line(&r, "sweep %s: %s", r.name, e.msg);
            store_close(s);
        } else {
            logf_line(&r, "sweep %s: %s", r.name, e.msg);
        }
        sum->interrupted += n_marked;
        st = ll_err(err, LL_ERR_INTERRUPTED, "sweep %s interrupted by signal %d; run it again to finish", r.name,
                    (int)g_signo);
    }
    {
        char tm[32];
        fmt_clock(ll_now() - r.t_start, tm, sizeof tm);
        int ran = r.finished - sum->skipped, not_run = n_todo - ran;
        char rate[128] = "";
        double t_runs = ll_now() - r.t_runs;
        if (ran > 0 && r.t_runs > 0 && t_runs > 0) /* throughput of the runs alone, after any pretraining */
            snprintf(rate, sizeof rate, "; %.0f runs/hour on %d job%s x %d thread%s", 3600.0 * ran / t_runs, r.jobs,
                     r.jobs == 1 ? "" : "s", r.threads, r.threads == 1 ? "" : "s");
        logf_line(&r, "sweep %s: %d done, %d pruned, %d failed, %d diverged, %d interrupted%s%s of %d in %s%s", r.name,
                  sum->done + sum->skipped - prior_diverged, sum->pruned, sum->failed, sum->diverged, sum->interrupted,
                  sum->busy ? ", some owned by another process" : "", not_run > 0 ? ", some not started" : "", n_sel,
                  tm, rate);
    }
out:
    if (st == LL_ERR_INTERRUPTED) sum->exit_code = 130;
    else if (st) sum->exit_code = 1;
    else sum->exit_code = sum->done + sum->pruned + sum->skipped - prior_diverged == n_sel ? 0 : 1;
    ll_free(slots);
    ll_free(sel);
    ll_free(run_id);
    ll_free(todo);
    return st;
}

