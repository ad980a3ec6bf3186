/* End to end, through the real `loralab` binary: a sweep of 12 real runs of a micro model (pretrained
 * from scratch on a small text, then fine-tuned) on 2 worker processes; the whole sweep is killed
 * with SIGKILL mid-way (runner and workers, as a crash or `kill -9` of the job would), then started
 * again: every run ends done exactly once, with no partial metric rows from the killed attempts.
 * Then `eval`, `generate` and `merge` on a finished adapter, and the bad-input exit codes. */
#define _DEFAULT_SOURCE
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "e2e"
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "store.h"
#include "train_state.h"
#include "util.h"

#include <cjson/cJSON.h>

static char g_bin[1024];

/* Writes text to tu_dir/name; asserts it was written. */
static void write_text(const char *name, const char *text) {
    char path[512];
    tu_write_text(tu_path(path, sizeof path, name), text);
}

/* A fixed pseudo-random word stream: the same text on every machine. */
static const char *next_word(unsigned *x, const char *const *words, int n) {
    *x = *x * 1103515245u + 12345u;
    return words[(*x >> 16) % (unsigned)n];
}

static void setup(void) {
    tu_tmpdir_setup();
    char cwd[900];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(g_bin, sizeof g_bin, "%s/build/loralab", cwd);
    ck_assert_msg(access(g_bin, X_OK) == 0, "build/loralab is missing: run the tests through `make test`");
    char data[512];
    tu_subdir(data, sizeof data, "data");
    /* a small but real text: some repeated structure the model can learn */
    char *text = ll_malloc(40000, 1);
    size_t n = 0;
    const char *words[] = {"the ", "state ", "of ", "union ", "is ", "strong ", "and ", "we ", "will ", "act. "};
    unsigned x = 1;
    while (n < 38000) {
        const char *w = next_word(&x, words, 10);
        memcpy(text + n, w, strlen(w));
        n += strlen(w);
    }
    text[n] = '\0';
    write_text("data/train.txt", text);
    text[4000] = '\0';
    write_text("data/valid.txt", text);
    /* another "domain" for task.eval_sets: other words, so the adapted model forgets some of it */
    tu_subdir(data, sizeof data, "data2");
    const char *other[] = {"a ", "cat ", "sat ", "on ", "the ", "mat ", "by ", "its ", "old ", "dog. "};
    x = 5, n = 0;
    while (n < 3000) {
        const char *w = next_word(&x, other, 10);
        memcpy(text + n, w, strlen(w));
        n += strlen(w);
    }
    text[n] = '\0';
    write_text("data2/valid.txt", text);
    ll_free(text);
    write_text("micro.yaml", "hidden_size: 32\nnum_hidden_layers: 2\nnum_attention_heads: 2\nnum_key_value_heads: 1\n"
                             "intermediate_size: 64\nmax_position_embeddings: 64\nrms_norm_eps: 1.0e-5\n"
                             "rope_theta: 10000.0\ntie_word_embeddings: false\ninitializer_range: 0.02\n");
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "name: e2e\nbase: {preset: %s/micro.yaml, data: %s/data, tokenizer: bytes, steps: 40, batch: 4, seq: 32,"
             " lr: 0.003}\ntask: {type: lm, data: %s/data, eval_sets: {other: %s/data2}}\noutput: {dir: %s/out}\n"
             "train: {steps: 150, batch: 4, seq: 32, log_every: 10, eval_every: 50, eval_batches: 4}\n"
             "adapter: {targets: [q_proj, v_proj]}\n"
             "sweep:\n  grid:\n    adapter.r: [1, 2, 4]\n    train.lr: [0.001, 0.002]\n  seeds: [0, 1]\n",
             tu_dir, tu_dir, tu_dir, tu_dir, tu_dir);
    write_text("e2e.yaml", cfg);
}

/* Starts `loralab ARGS...` in tu_dir in its own process group; output to tu_dir/LOG. */
static pid_t spawn(const char *log, char *const args[]) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        if (chdir(tu_dir) != 0) _exit(126);
        if (!freopen(log, "w", stdout) || !freopen(log, "a", stderr)) _exit(126);
        char *argv[32];
        int n = 0;
        argv[n++] = g_bin;
        for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(g_bin, argv);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

static int run_wait(const char *log, char *const args[]) {
    pid_t pid = spawn(log, args);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void count_status(const char *db, int *done, int *running) {
    *done = *running = 0;
    Store *s;
    LLError e;
    if (store_open(db, 1, &s, &e)) return;
    RunRow *rows;
    int n;
    if (!store_list_runs(s, "e2e", &rows, &n, &e)) {
        for (int i = 0; i < n; i++) {
            *done += strcmp(rows[i].status, "done") == 0;
            *running += strcmp(rows[i].status, "running") == 0;
        }
        store_free_runs(rows, n);
    }
    store_close(s);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

START_TEST(test_sweep_killed_and_resumed) {
    char db[512], log[512];
    tu_path(db, sizeof db, "e2e.db");
    tu_path(log, sizeof log, "sweep1.log");
    char *args[] = {"sweep", "e2e.yaml", "--jobs", "2", "--threads", "1", "--db", "e2e.db", NULL};
    pid_t pid = spawn(log, args);
    /* Wait until some runs are done and one is in flight, then kill everything at once. The
     * group is stopped while the database is read, so the state seen is the state killed: a run
     * cannot finish between the look and the kill. */
    int done = 0, running = 0, waited = 0;
    for (; waited < 120000; waited += 50) {
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "the sweep ended before it could be killed (see %s)", log);
        ck_assert_int_eq(killpg(pid, SIGSTOP), 0);
        sleep_ms(20); /* a worker inside a system call (a commit's fsync) stops when it returns */
        count_status(db, &done, &running);
        if (done >= 3 && running >= 1) break;
        ck_assert_int_eq(killpg(pid, SIGCONT), 0);
        sleep_ms(50);
    }
    ck_assert_msg(done >= 3 && running >= 1, "no point to kill at: %d done, %d running", done, running);
    ck_assert_int_eq(killpg(pid, SIGKILL), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFSIGNALED(st));
    sleep_ms(200); /* let the killed workers go */
    count_status(db, &done, &running);
    ck_assert_int_lt(done, 12);
    ck_assert_int_ge(running, 1); /* stale rows of dead workers */

    tu_path(log, sizeof log, "sweep2.log");
    ck_assert_int_eq(run_wait(log, args), 0);

    LLError e;
    Store *s = tu_store_open(db, 1);
    RunRow *rows;
    int n, resumed = 0;
    ck_assert_int_eq(store_list_runs(s, "e2e", &rows, &n, &e), LL_OK);
    ck_assert_int_eq(n, 12);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(strcmp(rows[i].status, "done") == 0, "run %s is %s", rows[i].key, rows[i].status);
        for (int j = 0; j < i; j++) ck_assert_str_ne(rows[i].key, rows[j].key);
        resumed += rows[i].attempt > 1;
        ck_assert(isfinite(rows[i].eval_loss) && rows[i].eval_loss < 5.6); /* below ln(259): it learned */
        int *steps;
        double *vals;
        int nm;
        ck_assert_int_eq(store_get_metrics(s, rows[i].id, "train", "loss", &steps, &vals, &nm, &e), LL_OK);
        ck_assert_int_eq(nm, 16); /* step 0, then 150 steps every 10: no rows of a killed attempt */
        for (int k = 0; k < nm; k++) ck_assert_int_eq(steps[k], 10 * k);
        free(steps);
        free(vals);
        ck_assert_int_eq(store_get_metrics(s, rows[i].id, "eval", "loss", &steps, &vals, &nm, &e), LL_OK);
        ck_assert_int_eq(nm, 4); /* steps 0, 50, 100, 150 */
        ck_assert_int_eq(steps[0], 0);
        free(steps);
        free(vals);
        /* the eval set: the same evaluations, no rows of a killed attempt; step 0 is the base's */
        ck_assert_int_eq(store_get_metrics(s, rows[i].id, "other", "loss", &steps, &vals, &nm, &e), LL_OK);
        ck_assert_int_eq(nm, 4);
        for (int k = 0; k < nm; k++) ck_assert_int_eq(steps[k], 50 * k);
        double base;
        int found;
        ck_assert_int_eq(store_run_base_eval(s, rows[i].id, "other", "loss", &base, &found, &e), LL_OK);
        ck_assert_msg(found && base == vals[0], "run %s: base %.9g, step 0 %.9g", rows[i].key, base, vals[0]);
        free(steps);
        free(vals);
        DiagnosticRow *dr;
        ck_assert_int_eq(store_list_diagnostics(s, rows[i].id, &dr, &nm, &e), LL_OK);
        ck_assert_int_eq(nm, 2 * 2 * 8); /* 2 layers x q, v x the values */
        free(dr);
        char cfgp[1200];
        snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", rows[i].adapter_dir);
        ck_assert_msg(access(cfgp, R_OK) == 0, "no adapter folder for run %s", rows[i].key);
    }
    ck_assert_int_ge(resumed, 1);
    store_free_runs(rows, n);
    store_close(s);

    /* and once more: nothing left to do */
    tu_path(log, sizeof log, "sweep3.log");
    ck_assert_int_eq(run_wait(log, args), 0);
}
END_TEST

/* Preemption: a sweep of two runs (LoRA with dropout, an eval set, checkpoints every 20 steps) is
 * sent SIGTERM, runner and worker at once as SLURM does, once its first run has checkpointed past
 * step 40; the run stops at its next step, writes its checkpoint and records `interrupted` with its
 * rows so far. Started again, the sweep resumes that run from its checkpoint (the log says at which
 * step) and ends with every metric row, final number and diagnostic bitwise those of the same sweep
 * run straight through; no checkpoint is left behind. */
static void pre_yaml(void) {
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "name: pre\nbase: {preset: %s/micro.yaml, data: %s/data, tokenizer: bytes, steps: 40, batch: 4, seq: 32,"
             " lr: 0.003}\ntask: {type: lm, data: %s/data, eval_sets: {other: %s/data2}}\noutput: {dir: %s/out}\n"
             "train: {steps: 150, batch: 4, seq: 32, log_every: 10, eval_every: 50, eval_batches: 4,"
             " checkpoint_every: 20}\n"
             "adapter: {targets: [q_proj, v_proj], dropout: 0.1}\n"
             "sweep:\n  grid:\n    adapter.r: [2, 4]\n",
             tu_dir, tu_dir, tu_dir, tu_dir, tu_dir);
    write_text("pre.yaml", cfg);
}

static char *query(const char *db, const char *sql);

START_TEST(test_sweep_sigterm_resumes) {
    pre_yaml();
    char log[512], ckdir[512];
    char *ref[] = {"sweep", "pre.yaml", "--jobs", "1", "--threads", "1", "--db", "ref.db", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "ref.log"), ref), 0);
    char *keys = query("ref.db", "SELECT key FROM runs ORDER BY id");
    char first[17] = "";
    ck_assert_int_eq(sscanf(keys, "%16s", first), 1);
    ll_free(keys);
    char ck[700];
    snprintf(ck, sizeof ck, "%s/%s.ckpt", tu_path(ckdir, sizeof ckdir, "out/pre"), first);
    ck_assert_msg(access(ck, F_OK) != 0, "a finished run left its checkpoint %s", ck);

    char *args[] = {"sweep", "pre.yaml", "--jobs", "1", "--threads", "1", "--db", "t.db", NULL};
    pid_t pid = spawn(tu_path(log, sizeof log, "t1.log"), args);
    TrainStateInfo info = {{0}, 0, 0};
    LLError err;
    for (int waited = 0; waited < 120000; waited += 20) {
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "the sweep ended before the signal (see %s)", log);
        if (train_state_peek(ck, &info, &err) == LL_OK && info.step >= 40) break;
        sleep_ms(20);
    }
    ck_assert_msg(info.step >= 40, "no checkpoint past step 40 at %s", ck);
    ck_assert_int_eq(killpg(pid, SIGTERM), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 130, "the sweep ended with wait status %d", st);
    CK_OK(train_state_peek(ck, &info, &err));
    ck_assert_msg(info.step > 40 && info.step < 150, "the stop wrote the checkpoint of step %d", info.step);
    char *status = query("t.db", "SELECT status || ' ' || ifnull((SELECT max(step) FROM metrics m WHERE"
                                 " m.run_id = runs.id), '-') FROM runs ORDER BY id");
    char want[64];
    snprintf(want, sizeof want, "interrupted %d\npending -\n", info.step / 10 * 10);
    ck_assert_str_eq(status, want); /* its rows up to the step it stopped at (logged every 10) were recorded */
    ll_free(status);

    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "t2.log"), args), 0);
    char *text = tu_slurp(log, NULL);
    snprintf(want, sizeof want, "at step %d of 150", info.step);
    ck_assert_msg(strstr(text, "resumed from the checkpoint") && strstr(text, ck) && strstr(text, want),
                  "the log does not say the run resumed at step %d:\n%s", info.step, text);
    ll_free(text);
    ck_assert_msg(access(ck, F_OK) != 0, "the resumed run left its checkpoint %s", ck);
    /* bitwise the straight sweep: every metric row, final numbers, diagnostics */
    char *same = query("t.db", "ATTACH 'ref.db' AS r;"
                               " SELECT (SELECT count(*) FROM main.metrics), (SELECT count(*) FROM r.metrics),"
                               " (SELECT count(*) FROM main.metrics m JOIN main.runs a ON a.id = m.run_id JOIN r.runs b"
                               " ON b.key = a.key JOIN r.metrics n ON n.run_id = b.id AND n.split = m.split AND"
                               " n.name = m.name AND n.step = m.step WHERE m.value IS n.value AND m.is_nan = n.is_nan),"
                               " (SELECT count(*) FROM main.runs a JOIN r.runs b ON b.key = a.key WHERE a.status ="
                               " 'done' AND a.train_loss IS b.train_loss AND a.eval_loss IS b.eval_loss AND"
                               " a.best_step IS b.best_step AND a.best_metric IS b.best_metric AND a.kept_step IS"
                               " b.kept_step AND a.test_loss IS b.test_loss),"
                               " (SELECT count(*) FROM main.diagnostics d JOIN main.runs a ON a.id = d.run_id JOIN"
                               " r.runs b ON b.key = a.key JOIN r.diagnostics x ON x.run_id = b.id AND x.layer ="
                               " d.layer AND x.module = d.module AND x.name = d.name WHERE x.value IS d.value),"
                               " (SELECT count(*) FROM r.diagnostics), (SELECT attempt FROM main.runs ORDER BY id"
                               " LIMIT 1)");
    int n_rows, n_ref, n_same, n_final, n_diag, n_diag_ref, attempt;
    ck_assert_int_eq(sscanf(same, "%d|%d|%d|%d|%d|%d|%d", &n_rows, &n_ref, &n_same, &n_final, &n_diag, &n_diag_ref,
                            &attempt), 7);
    ck_assert_msg(n_rows == n_ref && n_same == n_ref && n_ref > 50, "metric rows: %d resumed, %d straight, %d equal",
                  n_rows, n_ref, n_same);
    ck_assert_int_eq(n_final, 2);
    ck_assert_msg(n_diag == n_diag_ref && n_diag_ref > 0, "diagnostics: %d equal of %d", n_diag, n_diag_ref);
    ck_assert_int_eq(attempt, 2);
    ll_free(same);
}
END_TEST

/* Asserts that tu_dir/rel holds exactly text. */
static void holds(const char *rel, const char *text) {
    char p[512];
    char *got = tu_slurp(tu_path(p, sizeof p, rel), NULL);
    ck_assert_msg(strcmp(got, text) == 0, "%s now holds '%s'", rel, got);
    ll_free(got);
}

/* Runs `loralab ARGS` expecting exit status 2 and a message containing want. */
static void refused(const char *want, char *const args[]) {
    char log[512];
    tu_path(log, sizeof log, "refused.log");
    int rc = run_wait(log, args);
    char *text = tu_slurp(log, NULL);
    ck_assert_msg(rc == 2 && strstr(text, want), "%s %s: exit %d, said: %s", args[0], args[1], rc, text);
    ll_free(text);
}

/* merge, report and analyze never replace or delete what they did not write (issue: `merge --out`
 * over a user's folder removed it): a user's folder, the merge's own inputs, a regular file. Only a
 * model folder loralab wrote is replaced, and only with --force. */
static void check_outputs_never_destroy(const char *base, const char *adapter) {
    char d[512];
    tu_subdir(d, sizeof d, "precious/sub");
    write_text("precious/thesis.tex", "\\chapter{One}\n");
    write_text("precious/sub/data.csv", "a,b\n1,2\n");
    write_text("notes.txt", "my notes\n");
    char cfg[512], weights[512];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", adapter);
    snprintf(weights, sizeof weights, "%s/adapter_model.safetensors", adapter);
    size_t n_cfg, n_w;
    char *cfg_before = tu_slurp(tu_path(d, sizeof d, cfg), &n_cfg), *w_before = tu_slurp(tu_path(d, sizeof d, weights), &n_w);
    char *into_precious[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", "precious", NULL};
    refused("already exists", into_precious);
    char *forced[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", "precious", "--force", NULL};
    refused("which loralab did not write", forced);
    char *into_adapter[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", (char *)adapter,
                            "--force", NULL};
    refused("is the adapter folder being merged", into_adapter);
    char *into_base[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", (char *)base, "--force", NULL};
    refused("is the model folder being merged", into_base);
    char *into_file[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", "notes.txt", "--force", NULL};
    refused("is not a folder", into_file);
    char *report[] = {"report", "--db", "nowhere.db", "--out", "precious", NULL};
    refused("which loralab did not write", report);
    char *analyze[] = {"analyze", "--model", (char *)base, "--adapter", (char *)adapter, "--out", "precious", NULL};
    refused("which loralab did not write", analyze);
    holds("precious/thesis.tex", "\\chapter{One}\n");
    holds("precious/sub/data.csv", "a,b\n1,2\n");
    holds("notes.txt", "my notes\n");
    ck_assert_int_eq(tu_count_entries(tu_dir, "notes.txt"), 1); /* no notes.txt.old.PID beside it */
    ck_assert_int_eq(tu_count_entries(tu_dir, ".old."), 0);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp."), 0);
    size_t n1, n2;
    char *cfg_after = tu_slurp(tu_path(d, sizeof d, cfg), &n1), *w_after = tu_slurp(tu_path(d, sizeof d, weights), &n2);
    ck_assert(n1 == n_cfg && memcmp(cfg_after, cfg_before, n1) == 0);
    ck_assert(n2 == n_w && memcmp(w_after, w_before, n2) == 0);
    ll_free(cfg_before), ll_free(w_before), ll_free(cfg_after), ll_free(w_after);
    /* the model folder merge wrote itself ("merged"): refused without --force, replaced with it */
    char *again[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", "merged", NULL};
    refused("--force", again);
    char *again_forced[] = {"merge", "--model", (char *)base, "--adapter", (char *)adapter, "--out", "merged/", "--force", NULL};
    char log[512];
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "merge2.log"), again_forced), 0);
    ck_assert_int_eq(tu_count_entries(tu_dir, "merged"), 1);
}

/* The ids generate --ids printed (prompt | continuation) into ids[], the prompt's count into *n_prompt;
 * returns the total. */
static int generated_ids(const char *text, int *ids, int cap, int *n_prompt) {
    const char *p = strstr(text, "ids:");
    ck_assert_msg(p != NULL, "generate --ids printed no ids: %s", text);
    int n = 0;
    *n_prompt = -1;
    for (p += 4; *p && *p != '\n';) {
        if (*p == ' ') {
            p++;
        } else if (*p == '|') {
            *n_prompt = n, p++;
        } else {
            char *end;
            long v = strtol(p, &end, 10);
            ck_assert_msg(end != p && n < cap, "bad ids line: %s", text);
            ids[n++] = (int)v, p = end;
        }
    }
    ck_assert_msg(*n_prompt >= 0, "no '|' between prompt and continuation: %s", text);
    return n;
}

/* A log of generated text, NUL bytes (a sampled byte token 0) shown as '?' so that it reads as one string */
static char *slurp_log(const char *path) {
    size_t len;
    char *text = tu_slurp(path, &len);
    for (size_t i = 0; i < len; i++) text[i] = text[i] ? text[i] : '?';
    return text;
}

/* Issue 15: eval --seq beyond max_position_embeddings is refused, naming the limit; generate encodes
 * the prompt as tokenize does (a BOS only where tokenizer_config.json asks for one), keeps absolute
 * positions by stopping at the context length, and --ids prints the ids. The micro model's context
 * is 64 and its tokenizer the bytes (id b is byte b, BOS 256). */
static void check_generate_and_context(const char *base) {
    char *too_long[] = {"eval", "--model", (char *)base, "--data", "data/valid.txt", "--seq", "65", NULL};
    refused("max_position_embeddings is 64", too_long);
    char log[512];
    int ids[128], n_prompt;
    char *g[] = {"generate", "--model", (char *)base, "--prompt", "the state", "--max-new", "3", "--temperature", "0",
                 "--ids", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "gen-ids.log"), g), 0);
    char *text = slurp_log(log);
    int n = generated_ids(text, ids, 128, &n_prompt);
    const char *prompt = "the state";
    ck_assert_msg(n_prompt == 9 && n <= 12, "%d prompt ids, %d in all: %s", n_prompt, n, text);
    for (int i = 0; i < 9; i++) ck_assert_int_eq(ids[i], (unsigned char)prompt[i]); /* no BOS */
    ll_free(text);
    /* past the context: at most 64 ids, and a message when it stopped there */
    char *g2[] = {"generate", "--model", (char *)base, "--prompt", "the state", "--max-new", "100", "--seed", "3",
                  "--ids", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "gen-long.log"), g2), 0);
    text = slurp_log(log);
    n = generated_ids(text, ids, 128, &n_prompt);
    ck_assert_msg(n <= 64, "%d ids from a model of context 64", n);
    if (n == 64) ck_assert_msg(strstr(text, "stopped at the model's context length (max_position_embeddings 64)"), "%s", text);
    ll_free(text);
    /* a folder whose tokenizer_config.json says add_bos_token: true gets the BOS first, as transformers' tokenizer */
    char path[512];
    tu_path(path, sizeof path, "merged/tokenizer_config.json");
    char *cfg = tu_slurp(path, NULL);
    cJSON *o = cJSON_Parse(cfg);
    ll_free(cfg);
    cJSON_AddTrueToObject(o, "add_bos_token");
    cfg = cJSON_Print(o);
    cJSON_Delete(o);
    tu_write_text(path, cfg);
    cJSON_free(cfg);
    char *g3[] = {"generate", "--model", "merged", "--prompt", "the state", "--max-new", "2", "--ids", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "gen-bos.log"), g3), 0);
    text = slurp_log(log);
    n = generated_ids(text, ids, 128, &n_prompt);
    ck_assert_msg(n_prompt == 10 && ids[0] == 256 && ids[1] == 't', "with add_bos_token: %s", text);
    ll_free(text);
    /* a config.json key the engine does not implement: exit 2 naming the file, the key and the value */
    tu_path(path, sizeof path, "merged/config.json");
    cfg = tu_slurp(path, NULL);
    o = cJSON_Parse(cfg);
    ll_free(cfg);
    cJSON_DeleteItemFromObject(o, "rope_scaling");
    cJSON_AddItemToObject(o, "rope_scaling", cJSON_Parse("{\"rope_type\": \"llama3\", \"factor\": 8.0}"));
    cfg = cJSON_Print(o);
    cJSON_Delete(o);
    tu_write_text(path, cfg);
    cJSON_free(cfg);
    char *scaled[] = {"eval", "--model", "merged", "--data", "data/valid.txt", NULL};
    refused("merged/config.json: key 'rope_scaling' is {\"rope_type\":\"llama3\"", scaled);
}

START_TEST(test_commands_on_results) {
    char log[512];
    tu_path(log, sizeof log, "train.log");
    char *train[] = {"train", "e2e.yaml", "--set", "adapter.r=4", "--set", "train.steps=60", NULL};
    ck_assert_int_eq(run_wait(log, train), 0);
    /* find the adapter folder and the base */
    char cmd[1024], adapter[512] = "", base[512] = "";
    snprintf(cmd, sizeof cmd, "cd %s && ls -d out/e2e/*/ results/bases/*/ 2>/dev/null", tu_dir);
    FILE *p = popen(cmd, "r");
    char line[512];
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "/\n") == strlen(line) ? strlen(line) : strlen(line) - 1] = '\0';
        if (strncmp(line, "out/", 4) == 0) snprintf(adapter, sizeof adapter, "%s", line);
        else snprintf(base, sizeof base, "%s", line);
    }
    pclose(p);
    ck_assert_msg(adapter[0] && base[0], "adapter '%s' base '%s'", adapter, base);
    char *eval[] = {"eval", "--model", base, "--adapter", adapter, "--data", "data/valid.txt", "--json", NULL};
    tu_path(log, sizeof log, "eval.log");
    ck_assert_int_eq(run_wait(log, eval), 0);
    char *text = tu_slurp(log, NULL);
    ck_assert_msg(strstr(text, "\"loss\": ") && strstr(text, "\"perplexity\": "), "eval --json printed: %s", text);
    ll_free(text);
    char *gen[] = {"generate", "--model", base, "--adapter", adapter, "--prompt", "the state", "--max-new", "20", NULL};
    tu_path(log, sizeof log, "gen.log");
    ck_assert_int_eq(run_wait(log, gen), 0);
    char *merge[] = {"merge", "--model", base, "--adapter", adapter, "--out", "merged", NULL};
    tu_path(log, sizeof log, "merge.log");
    ck_assert_int_eq(run_wait(log, merge), 0);
    /* the merged model alone gives the adapter's loss */
    char *eval_merged[] = {"eval", "--model", "merged", "--data", "data/valid.txt", "--json", NULL};
    tu_path(log, sizeof log, "eval2.log");
    ck_assert_int_eq(run_wait(log, eval_merged), 0);
    char l1[512];
    char *t1 = tu_slurp(tu_path(l1, sizeof l1, "eval.log"), NULL), *t2 = tu_slurp(log, NULL);
    double a = atof(strstr(t1, "\"loss\": ") + 8), b = atof(strstr(t2, "\"loss\": ") + 8);
    ck_assert_msg(fabs(a - b) < 1e-4, "adapter loss %.6f, merged loss %.6f", a, b);
    ll_free(t1);
    ll_free(t2);
    check_generate_and_context(base);
    check_outputs_never_destroy(base, adapter);
    /* bad input: exit 2 with a message naming the problem */
    char *missing[] = {"eval", "--model", "nowhere", "--data", "data/valid.txt", NULL};
    tu_path(log, sizeof log, "bad1.log");
    ck_assert_int_eq(run_wait(log, missing), 2);
    text = tu_slurp(log, NULL);
    ck_assert_msg(strstr(text, "nowhere") != NULL, "message: %s", text);
    ll_free(text);
    write_text("bad.yaml", "name: bad\nbase: {path: x}\ntask: {data: y}\ntrain: {stpes: 3}\n");
    char *badcfg[] = {"train", "bad.yaml", NULL};
    tu_path(log, sizeof log, "bad2.log");
    ck_assert_int_eq(run_wait(log, badcfg), 2);
    text = tu_slurp(log, NULL);
    ck_assert_msg(strstr(text, "bad.yaml:4") && strstr(text, "train.steps"), "message: %s", text);
    ll_free(text);
}
END_TEST



/* Early stopping online and replayed (issue: ASHA and the median rule, auditable and replayable):
 * a 6-configuration lr x rank sweep with ASHA on one worker; the same sweep without it, then the
 * replay of the policy on that: the replay stops exactly the runs, at exactly the steps, the online
 * sweep did. Pruned runs keep their curves and their kept adapter; every decision is a row
 * with its threshold; a second invocation re-runs nothing, --retry-pruned reruns them. */
static void es_yaml(const char *file, const char *train_more, const char *early_stop) {
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "name: es\nbase: {preset: %s/micro.yaml, data: %s/data, tokenizer: bytes, steps: 40, batch: 4, seq: 32,"
             " lr: 0.003}\ntask: {type: lm, data: %s/data}\noutput: {dir: %s/out}\n"
             "train: {%s steps: 160, batch: 4, seq: 32, log_every: 20, eval_every: 20, eval_batches: 2}\n"
             "adapter: {targets: [q_proj, v_proj]}\n"
             "sweep:\n  grid:\n    train.lr: [0.0001, 0.001, 0.01]\n    adapter.r: [1, 4]\n%s",
             tu_dir, tu_dir, tu_dir, tu_dir, train_more, early_stop);
    write_text(file, cfg);
}

static char *query(const char *db, const char *sql) {
    char cmd[4096], out[512];
    tu_path(out, sizeof out, "query.txt");
    snprintf(cmd, sizeof cmd, "cd '%s' && sqlite3 '%s' \"%s\" > '%s'", tu_dir, db, sql, out);
    ck_assert_int_eq(system(cmd), 0);
    return tu_slurp(out, NULL);
}

START_TEST(test_early_stop_online_equals_replay) {
    es_yaml("es.yaml", "", "  early_stop: {type: asha, metric: eval_loss, min_steps: 40, reduction_factor: 2}\n");
    es_yaml("es-full.yaml", "", "");
    char log[512];
    char *online[] = {"sweep", "es.yaml", "--jobs", "1", "--threads", "1", "--db", "online.db", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "es1.log"), online), 0);
    char *full[] = {"sweep", "es-full.yaml", "--jobs", "1", "--threads", "1", "--db", "full.db", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "es2.log"), full), 0);
    char *replay[] = {"sweep", "es.yaml", "--replay-early-stop", "--db", "full.db", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "replay.log"), replay), 0);
    char *pruned = query("online.db", "SELECT r.key || ' ' || d.step FROM runs r JOIN decisions d ON d.run_id = r.id"
                                      " WHERE r.status = 'pruned' AND d.decision = 'stop' ORDER BY r.key");
    ck_assert_msg(strlen(pruned) > 0, "ASHA stopped no run of six");
    char *text = tu_slurp(log, NULL);
    /* every online stop is in the replay, and the replay stops no other run */
    int n_online = 0;
    for (char *line = strtok(pruned, "\n"); line; line = strtok(NULL, "\n"), n_online++) {
        char key[32], want[128];
        int step;
        ck_assert_int_eq(sscanf(line, "%31s %d", key, &step), 2);
        snprintf(want, sizeof want, "would stop %s at step %d of 160", key, step);
        ck_assert_msg(strstr(text, want), "online: %s; replay said:\n%s", line, text);
    }
    char want[64];
    snprintf(want, sizeof want, "runs stopped: %d of 6", n_online);
    ck_assert_msg(strstr(text, want), "online stopped %d; replay said:\n%s", n_online, text);
    ck_assert_msg(strstr(text, "saved") && strstr(text, "best configuration"), "%s", text);
    ll_free(text);
    ll_free(pruned);
    /* audit: every decision has its numbers; pruned runs keep adapter, curves and a test loss */
    char *bad = query("online.db", "SELECT count(*) FROM decisions WHERE threshold IS NULL OR n_compared < 1 OR"
                                   " policy != 'asha' OR rung IS NULL");
    ck_assert_str_eq(bad, "0\n");
    ll_free(bad);
    char *kept = query("online.db", "SELECT count(*) FROM runs WHERE status = 'pruned' AND (adapter_dir IS NULL OR"
                                    " kept_step IS NULL OR (SELECT count(*) FROM metrics m WHERE m.run_id = runs.id"
                                    " AND m.split = 'eval') < 2)");
    ck_assert_str_eq(kept, "0\n");
    ll_free(kept);
    /* resumable: nothing re-runs; --retry-pruned runs the pruned ones again (stopped again the same way) */
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "es3.log"), online), 0);
    text = tu_slurp(log, NULL);
    ck_assert_msg(strstr(text, "0 to run"), "%s", text);
    ll_free(text);
}
END_TEST

/* Early stopping across a preemption: the ASHA sweep above with a checkpoint every 20 steps, sent
 * SIGTERM once a run has passed its rung at step 40 (its checkpoint of step 40 exists: it was kept
 * there), then run again. The resumed run must know that it already reached rung 40 (the step of
 * its last evaluation is read back with its curve), so it takes no decision twice, and the whole
 * sweep ends with the decisions, statuses and metric rows of the same sweep run straight through. */
START_TEST(test_early_stop_resumed_after_sigterm) {
    es_yaml("es.yaml", " checkpoint_every: 20,",
            "  early_stop: {type: asha, metric: eval_loss, min_steps: 40, reduction_factor: 2}\n");
    char log[512], dir[512];
    char *ref[] = {"sweep", "es.yaml", "--jobs", "1", "--threads", "1", "--db", "ref.db", NULL};
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "ref.log"), ref), 0);
    char *args[] = {"sweep", "es.yaml", "--jobs", "1", "--threads", "1", "--db", "t.db", NULL};
    pid_t pid = spawn(tu_path(log, sizeof log, "t1.log"), args);
    tu_path(dir, sizeof dir, "out/es");
    char ck[1024] = "";
    TrainStateInfo info = {{0}, 0, 0};
    LLError err;
    for (int waited = 0; waited < 120000 && !ck[0]; waited += 2) {
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "the sweep ended before the signal (see %s)", log);
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) {
            size_t n = strlen(e->d_name);
            if (n < 5 || strcmp(e->d_name + n - 5, ".ckpt") != 0) continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (train_state_peek(p, &info, &err) == LL_OK && info.step >= 40) snprintf(ck, sizeof ck, "%s", p);
        }
        if (d) closedir(d);
        if (!ck[0]) sleep_ms(2);
    }
    ck_assert_msg(ck[0], "no run checkpointed past its rung at step 40");
    ck_assert_int_eq(killpg(pid, SIGTERM), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 130, "the sweep ended with wait status %d", st);
    CK_OK(train_state_peek(ck, &info, &err));
    ck_assert_msg(info.step > 40 && info.step < 60, "stopped at step %d: not between rung 40 and the next evaluation",
                  info.step);
    ck_assert_int_eq(run_wait(tu_path(log, sizeof log, "t2.log"), args), 0);
    char *text = tu_slurp(log, NULL);
    ck_assert_msg(strstr(text, "resumed from the checkpoint") && strstr(text, ck), "%s", text);
    ll_free(text);
    char *same = query("t.db", "ATTACH 'ref.db' AS r;"
                               " SELECT (SELECT count(*) FROM r.decisions), (SELECT count(*) FROM main.decisions),"
                               " (SELECT count(*) FROM main.decisions d JOIN main.runs a ON a.id = d.run_id JOIN r.runs"
                               " b ON b.key = a.key JOIN r.decisions x ON x.run_id = b.id AND x.step = d.step WHERE"
                               " x.rung IS d.rung AND x.value IS d.value AND x.threshold IS d.threshold AND"
                               " x.n_compared = d.n_compared AND x.decision = d.decision),"
                               " (SELECT count(*) FROM main.runs a JOIN r.runs b ON b.key = a.key WHERE"
                               " a.status = b.status AND a.eval_loss IS b.eval_loss AND a.kept_step IS b.kept_step),"
                               " (SELECT count(*) FROM r.metrics), (SELECT count(*) FROM main.metrics),"
                               " (SELECT count(*) FROM main.metrics m JOIN main.runs a ON a.id = m.run_id JOIN r.runs b"
                               " ON b.key = a.key JOIN r.metrics n ON n.run_id = b.id AND n.split = m.split AND"
                               " n.name = m.name AND n.step = m.step WHERE m.value IS n.value)");
    int d_ref, d_got, d_same, runs_same, m_ref, m_got, m_same;
    ck_assert_int_eq(sscanf(same, "%d|%d|%d|%d|%d|%d|%d", &d_ref, &d_got, &d_same, &runs_same, &m_ref, &m_got, &m_same),
                     7);
    ck_assert_msg(d_ref > 0 && d_got == d_ref && d_same == d_ref, "decisions: %d straight, %d resumed, %d equal", d_ref,
                  d_got, d_same);
    ck_assert_int_eq(runs_same, 6);
    ck_assert_msg(m_got == m_ref && m_same == m_ref, "metric rows: %d straight, %d resumed, %d equal", m_ref, m_got,
                  m_same);
    ll_free(same);
}
END_TEST

/* Finals of a database's runs keyed by run key, for comparing sweeps. */
typedef struct {
    char key[17];
    char status[16];
    double eval_loss;
    double other_last;   /* the eval set's loss at the last step */
    int n_diag;          /* diagnostics rows */
    double diag_sum;     /* and the sum of their values */
} Final;

static int read_finals(const char *db, Final *out, int cap) {
    LLError e;
    Store *s = tu_store_open(db, 1);
    RunRow *rows;
    int n;
    ck_assert_int_eq(store_list_runs(s, "e2e", &rows, &n, &e), LL_OK);
    ck_assert_int_le(n, cap);
    for (int i = 0; i < n; i++) {
        snprintf(out[i].key, sizeof out[i].key, "%s", rows[i].key);
        snprintf(out[i].status, sizeof out[i].status, "%s", rows[i].status);
        out[i].eval_loss = rows[i].eval_loss;
        int *steps, nm;
        double *vals;
        ck_assert_int_eq(store_get_metrics(s, rows[i].id, "other", "loss", &steps, &vals, &nm, &e), LL_OK);
        out[i].other_last = nm ? vals[nm - 1] : NAN;
        free(steps), free(vals);
        DiagnosticRow *dr;
        ck_assert_int_eq(store_list_diagnostics(s, rows[i].id, &dr, &out[i].n_diag, &e), LL_OK);
        out[i].diag_sum = 0.0;
        for (int k = 0; k < out[i].n_diag; k++) out[i].diag_sum += dr[k].value;
        free(dr);
    }
    store_free_runs(rows, n);
    store_close(s);
    return n;
}

START_TEST(test_shards_merged_equal_unsharded) {
    char log[512];
    char *whole[] = {"sweep", "e2e.yaml", "--jobs", "2", "--threads", "1", "--db", "whole.db", NULL};
    char *s0[] = {"sweep", "e2e.yaml", "--jobs", "2", "--threads", "1", "--shard", "0/2", "--db", "s0.db", NULL};
    char *s1[] = {"sweep", "e2e.yaml", "--jobs", "2", "--threads", "1", "--shard", "1/2", "--db", "s1.db", NULL};
    char *merge[] = {"merge-db", "merged.db", "s0.db", "s1.db", NULL};
    tu_path(log, sizeof log, "whole.log");
    ck_assert_int_eq(run_wait(log, whole), 0);
    tu_path(log, sizeof log, "s0.log");
    ck_assert_int_eq(run_wait(log, s0), 0);
    tu_path(log, sizeof log, "s1.log");
    ck_assert_int_eq(run_wait(log, s1), 0);
    tu_path(log, sizeof log, "merge.log");
    ck_assert_int_eq(run_wait(log, merge), 0);
    ck_assert_int_eq(run_wait(log, merge), 0); /* idempotent */
    Final a[16], b[16], s0f[16];
    char db[600];
    tu_path(db, sizeof db, "whole.db");
    int na = read_finals(db, a, 16);
    tu_path(db, sizeof db, "merged.db");
    int nb = read_finals(db, b, 16);
    tu_path(db, sizeof db, "s0.db");
    int n0 = read_finals(db, s0f, 16);
    ck_assert_int_eq(na, 12);
    ck_assert_int_eq(nb, 12);
    ck_assert_int_eq(n0, 6);
    for (int i = 0; i < na; i++) {
        int found = 0;
        for (int j = 0; j < nb; j++)
            if (strcmp(a[i].key, b[j].key) == 0) {
                found = 1;
                ck_assert_str_eq(b[j].status, "done");
                /* same seed, one thread a run: the very same numbers */
                ck_assert_msg(a[i].eval_loss == b[j].eval_loss, "run %s: %.9g unsharded, %.9g sharded", a[i].key,
                              a[i].eval_loss, b[j].eval_loss);
                ck_assert(isfinite(a[i].other_last) && a[i].other_last == b[j].other_last);
                ck_assert(a[i].n_diag == 32 && b[j].n_diag == 32 && a[i].diag_sum == b[j].diag_sum);
            }
        ck_assert_msg(found, "run %s is missing from the merged database", a[i].key);
    }
    /* the base's numbers on the eval set came along, once (both shards measured the same ones) */
    LLError e;
    Store *s = tu_store_open(tu_path(db, sizeof db, "merged.db"), 1);
    BaseEvalRow *be;
    int nbe;
    ck_assert_int_eq(store_list_base_evals(s, "e2e", &be, &nbe, &e), LL_OK);
    ck_assert_int_eq(nbe, 2);
    ck_assert(strcmp(be[0].set, "other") == 0 && strcmp(be[0].name, "loss") == 0 && isfinite(be[0].value));
    store_free_base_evals(be, nbe);
    store_close(s);
}
END_TEST

/* A classification adapter keeps its score head through `merge`: the merged model alone gives the
 * adapter's loss and accuracy on the same examples. */
START_TEST(test_merge_classifier) {
    char cls[512];
    tu_subdir(cls, sizeof cls, "cls");
    char *jsonl = ll_malloc(20000, 1);
    size_t n = 0;
    const char *words[] = {"state", "union", "strong", "act", "will", "we"};
    unsigned x = 7;
    for (int i = 0; i < 160; i++) { /* label 1 when the line says "strong" more than "act" */
        int strong = 0, act = 0;
        char text[96] = "";
        for (int w = 0; w < 6; w++) {
            const char *word = next_word(&x, words, 6);
            strong += strcmp(word, "strong") == 0, act += strcmp(word, "act") == 0;
            strcat(text, word), strcat(text, " ");
        }
        n += (size_t)snprintf(jsonl + n, 20000 - n, "{\"text\": \"%s\", \"label\": %d}\n", text, strong > act);
    }
    write_text("cls/train.jsonl", jsonl);
    write_text("cls/valid.jsonl", jsonl);
    write_text("cls/labels.txt", "calm\nstrong\n");
    ll_free(jsonl);
    char log[512];
    tu_path(log, sizeof log, "train-cls.log");
    char *train[] = {"train", "e2e.yaml", "--set", "task.type=cls", "--set", "task.data=cls", "--set", "task.eval_sets={}",
                     "--set", "adapter.r=2",
                     "--set", "train.steps=20", "--set", "name=e2ecls", NULL};
    ck_assert_int_eq(run_wait(log, train), 0);
    char cmd[1024], adapter[512] = "", base[512] = "", line[512];
    snprintf(cmd, sizeof cmd, "cd %s && ls -d out/e2ecls/*/ results/bases/*/ 2>/dev/null", tu_dir);
    FILE *p = popen(cmd, "r");
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] && line[strlen(line) - 1] == '/') line[strlen(line) - 1] = '\0';
        if (strncmp(line, "out/", 4) == 0) snprintf(adapter, sizeof adapter, "%s", line);
        else snprintf(base, sizeof base, "%s", line);
    }
    pclose(p);
    ck_assert_msg(adapter[0] && base[0], "adapter '%s' base '%s'", adapter, base);
    char *merge[] = {"merge", "--model", base, "--adapter", adapter, "--out", "merged-cls", NULL};
    tu_path(log, sizeof log, "merge-cls.log");
    ck_assert_int_eq(run_wait(log, merge), 0);
    char *ev1[] = {"eval", "--model", base, "--adapter", adapter, "--data", "cls/valid.jsonl", "--json", NULL};
    char *ev2[] = {"eval", "--model", "merged-cls", "--data", "cls/valid.jsonl", "--json", NULL};
    char l1[512], l2[512], *t1, *t2;
    tu_path(l1, sizeof l1, "eval-cls1.log");
    tu_path(l2, sizeof l2, "eval-cls2.log");
    ck_assert_int_eq(run_wait(l1, ev1), 0);
    ck_assert_int_eq(run_wait(l2, ev2), 0);
    t1 = tu_slurp(l1, NULL);
    t2 = tu_slurp(l2, NULL);
    ck_assert_msg(strstr(t1, "\"accuracy\": ") && strstr(t2, "\"accuracy\": "), "eval printed: %s / %s", t1, t2);
    double a = atof(strstr(t1, "\"loss\": ") + 8), b = atof(strstr(t2, "\"loss\": ") + 8);
    double aa = atof(strstr(t1, "\"accuracy\": ") + 12), ba = atof(strstr(t2, "\"accuracy\": ") + 12);
    ck_assert_msg(fabs(a - b) < 1e-4 && aa == ba, "adapter loss %.6f acc %.4f, merged loss %.6f acc %.4f", a, aa, b, ba);
    ll_free(t1);
    ll_free(t2);
}
END_TEST

/* Every subcommand answers --help with exit 0 and its usage (issue 14 item 10). */
START_TEST(test_every_command_help) {
    const char *cmds[] = {"pretrain", "train", "sweep", "runs", "report", "eval", "generate", "tokenize",
                          "merge", "merge-db", "analyze"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char log[512], text[8192] = "";
        tu_path(log, sizeof log, "help.log");
        char *argv[] = {(char *)cmds[i], "--help", NULL};
        ck_assert_msg(run_wait(log, argv) == 0, "loralab %s --help did not exit 0", cmds[i]);
        FILE *f = fopen(log, "r");
        ck_assert_ptr_nonnull(f);
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
        ck_assert_msg(strstr(text, "usage") != NULL, "loralab %s --help printed:\n%s", cmds[i], text);
    }
}
END_TEST

Suite *e2e_suite(void) {
    Suite *s = suite_create("e2e");
    TCase *tc = tu_tcase(s, "processes", 0, 300);
    tcase_add_checked_fixture(tc, setup, tu_tmpdir_teardown);
    tcase_add_test(tc, test_sweep_killed_and_resumed);
    tcase_add_test(tc, test_sweep_sigterm_resumes);
    tcase_add_test(tc, test_commands_on_results);
    tcase_add_test(tc, test_every_command_help);
    tcase_add_test(tc, test_shards_merged_equal_unsharded);
    tcase_add_test(tc, test_merge_classifier);
    tcase_add_test(tc, test_early_stop_online_equals_replay);
    tcase_add_test(tc, test_early_stop_resumed_after_sigterm);
    return s;
}
