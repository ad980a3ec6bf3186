/* `loralab pretrain` and `loralab train`: one configuration, one run. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "config.h"
#include "run.h"
#include "store.h"
#include "sweep.h"

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static void log_stderr(void *user, LLLogLevel level, const char *msg) {
    (void)user;
    if (level >= LL_LOG_INFO) fprintf(stderr, "%s\n", msg);
}

typedef struct {
    const char *config, *db;
    const char *sets[64];
    int n_sets, threads;
} TrainArgs;

static int parse(const char *cmd, int argc, char **argv, TrainArgs *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (cli_flag(argc, argv, &i, "--set", &v)) {
            if (a->n_sets == 64) {
                fprintf(stderr, "loralab %s: more than 64 --set options\n", cmd);
                return 2;
            }
            a->sets[a->n_sets++] = v;
        } else if (cli_flag(argc, argv, &i, "--db", &v)) {
            a->db = v;
        } else if (cli_flag(argc, argv, &i, "--threads", &v)) {
            char *end;
            long t = strtol(v, &end, 10);
            if (end == v || *end || t < 1 || t > 4096) {
                fprintf(stderr, "loralab %s: --threads must be a whole number >= 1, not '%s'\n", cmd, v);
                return 2;
            }
            a->threads = (int)t;
        } else if (argv[i][0] != '-' && !a->config) {
            a->config = argv[i];
        } else {
            fprintf(stderr, "loralab %s: unexpected argument '%s'\nusage: loralab %s CONFIG.yaml [--set key=value]...%s\n",
                    cmd, argv[i], cmd, strcmp(cmd, "train") == 0 ? " [--db FILE] [--threads T]" : "");
            return 2;
        }
    }
    if (!a->config) {
        fprintf(stderr, "loralab %s: a CONFIG.yaml is required\n", cmd);
        return 2;
    }
    return 0;
}

static int load(const char *cmd, const TrainArgs *a, ConfigDoc **doc, RunConfig *rc) {
    LLError e;
    if (config_load(a->config, a->sets, a->n_sets, doc, &e)) {
        fprintf(stderr, "loralab %s: %s\n", cmd, e.msg);
        return 2;
    }
    if (config_resolve(*doc, NULL, 0, rc, &e)) {
        fprintf(stderr, "loralab %s: %s\n", cmd, e.msg);
        config_doc_free(*doc);
        return 2;
    }
    return 0;
}

int cmd_pretrain(int argc, char **argv) {
    TrainArgs a;
    if (parse("pretrain", argc, argv, &a)) return 2;
    ConfigDoc *doc;
    RunConfig rc;
    if (load("pretrain", &a, &doc, &rc)) return 2;
    int status = 0;
    if (!rc.pretrain) {
        fprintf(stderr, "loralab pretrain: '%s' names a base model folder (base.path), not a base to pretrain (base.preset)\n", a.config);
        status = 2;
    } else {
        signal(SIGINT, on_signal);
        RunEnv env = {0};
        env.stop = &stop_flag;
        env.progress = 1;
        env.threads = a.threads;
        env.log = (LLLog){log_stderr, NULL};
        char path[2048];
        LLError e;
        LLStatus st = run_ensure_base(&rc, &env, path, sizeof path, &e);
        if (st) {
            fprintf(stderr, "loralab pretrain: %s\n", e.msg);
            status = st == LL_ERR_DIVERGED || st == LL_ERR_INTERRUPTED ? 1 : 2;
        } else {
            printf("base model: %s\n", path);
        }
    }
    run_config_free(&rc);
    config_doc_free(doc);
    return status;
}

int cmd_train(int argc, char **argv) {
    TrainArgs a;
    if (parse("train", argc, argv, &a)) return 2;
    ConfigDoc *doc;
    RunConfig rc;
    if (load("train", &a, &doc, &rc)) return 2;
    if (config_has_sweep(doc))
        fprintf(stderr, "loralab train: %s has a sweep section; train runs the file's own values and ignores it "
                "(loralab sweep %s runs the grid)\n", a.config, a.config);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    RunEnv env = {0};
    env.stop = &stop_flag;
    env.progress = isatty(STDERR_FILENO);
    env.threads = a.threads;
    env.log = (LLLog){log_stderr, NULL};
    LLError e;
    int status = 0;
    Store *store = NULL;
    if (a.db) {
        /* A single run is recorded like one run of a sweep named after the config. */
        int64_t sweep_id, run_id;
        char targets[128];
        RunInfo info;
        sweep_run_info(&rc, targets, sizeof targets, &info); /* the same row a sweep's run gets */
        int claimed = 0;
        LLStatus st = store_open(a.db, 0, &store, &e);
        if (!st) st = store_upsert_sweep(store, rc.name, a.config, doc->text, &sweep_id, &e);
        if (!st) st = store_add_run(store, sweep_id, &info, &run_id, &e);
        if (!st) st = store_claim_run_resuming(store, run_id, run_resume_step(&rc), &claimed, &e);
        if (!st && !claimed) {
            fprintf(stderr, "loralab train: run %s is already done (or running) in %s\n", rc.key, a.db);
            status = 0;
            goto out;
        }
        if (st) {
            fprintf(stderr, "loralab train: %s\n", e.msg);
            status = 2;
            goto out;
        }
        env.store = store;
        env.run_id = run_id;
    }
    RunOutcome o;
    LLStatus st = run_execute(&rc, &env, &o, &e);
    if (st) {
        fprintf(stderr, "loralab train: run %s %s: %s\n", rc.key, o.status, e.msg);
        status = st == LL_ERR_CONFIG || st == LL_ERR_IO || st == LL_ERR_FORMAT ? 2 : 1;
    } else {
        printf("run %s done: eval loss %.4f (ppl %.3f)", rc.key, o.eval_loss, o.eval_ppl);
        if (rc.task_cls) printf(", accuracy %.4f, macro-F1 %.4f", o.accuracy, o.macro_f1);
        printf(", %.0f tokens/s, %.1f s\n%s: %s\n", o.tokens_per_s, o.wall_s,
               rc.adapter.method == ADAPTER_FULL ? "model folder" : "adapter folder", o.out_dir);
    }
out:
    if (store) store_close(store);
    run_config_free(&rc);
    config_doc_free(doc);
    return status;
}
