/* cmd_sweep: `loralab sweep FILE [options]`: load and validate the config, expand the sweep, then
 * print it (--dry-run), write a SLURM array script (--emit-slurm), or run it (experiments/sweep.h).
 * Every config error is reported before any run starts (exit 2). Exit 0 when every run of the
 * shard is done, 1 when one failed or diverged (or could not run), 130 when interrupted. */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "experiments/config.h"
#include "experiments/slurm.h"
#include "experiments/sweep.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loralab sweep FILE [--jobs N] [--threads T] [--db FILE] [--shard I/N] [--dry-run]\n"
            "                          [--set KEY=VALUE]... [--retry-diverged] [--retry-pruned]\n"
            "                          [--no-early-stop | --replay-early-stop]\n"
            "       loralab sweep FILE --emit-slurm [--tasks K] [--threads T] [--chdir DIR] [--partition P]\n"
            "                          [--account A] [--time MINUTES] [--mem MB] [--local-db]\n"
            "       loralab sweep --keys\n"
            "  --jobs N          runs at once, one process each (default: the cores, at most the runs)\n"
            "  --threads T       threads per run (default: cores / jobs)\n"
            "  --db FILE         results database (default results/<name>.db, or\n"
            "                    results/<name>.shardI-of-N.db with --shard)\n"
            "  --shard I/N       only runs whose plan index i has i %% N == I\n"
            "  --dry-run         print the expanded runs (key and varying values) and stop\n"
            "  --set KEY=VALUE   override a key (a YAML value: 8, 1e-3, [q,v]); fixes a swept key\n"
            "  --emit-slurm      write <name>.sbatch, an array job of --tasks K shards (default one per\n"
            "                    run), and stop; --chdir is the checkout the tasks run in (default\n"
            "                    here), --time and --mem override the estimates, --local-db keeps\n"
            "                    each task's database on node-local disk\n"
            "  --retry-diverged  run diverged runs again (they are final otherwise)\n"
            "  --retry-pruned    run again the runs early stopping stopped\n"
            "  --no-early-stop   run every run to its end although the file has sweep.early_stop\n"
            "  --replay-early-stop  apply the file's sweep.early_stop to the finished runs in the database\n"
            "                    and print what it would have stopped and saved; runs nothing\n"
            "  --keys            list every config key with its type, default and bounds\n");
}

/* "--opt VALUE" or "--opt=VALUE" (cli_flag); "" with a message when the value is missing, so that
 * the caller's check refuses it. */
static const char *opt_value(int argc, char **argv, int *i, const char *name) {
    const char *v;
    if (cli_flag(argc, argv, i, name, &v)) {
        if (!*v) fprintf(stderr, "loralab sweep: %s needs a value\n", name);
        return v;
    }
    if (strcmp(argv[*i], name) != 0) return NULL;
    fprintf(stderr, "loralab sweep: %s needs a value\n", name);
    return "";
}

static int parse_count(const char *s, const char *name, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 100000) {
        fprintf(stderr, "loralab sweep: %s '%s': expected a whole number from 1\n", name, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

int cmd_sweep(int argc, char **argv) {
    const char *file = NULL, *db = NULL, *shard = NULL, *v;
    const char **sets = calloc((size_t)argc + 1, sizeof(char *));
    int n_sets = 0, dry = 0, slurm = 0, retry = 0, retry_pruned = 0, replay = 0, no_es = 0, code = 2;
    SlurmOptions so;
    slurm_options_defaults(&so);
    so.threads = 0;
    SweepOptions o;
    sweep_options_defaults(&o);
    ConfigDoc *doc = NULL;
    SweepPlan plan = {0};
    LLError err;
    if (!sets) return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            code = 0;
            goto done;
        } else if (strcmp(a, "--keys") == 0) {
            config_describe(stdout);
            code = 0;
            goto done;
        } else if (strcmp(a, "--dry-run") == 0) dry = 1;
        else if (strcmp(a, "--emit-slurm") == 0) slurm = 1;
        else if (strcmp(a, "--retry-diverged") == 0) retry = 1;
        else if (strcmp(a, "--retry-pruned") == 0) retry_pruned = 1;
        else if (strcmp(a, "--replay-early-stop") == 0) replay = 1;
        else if (strcmp(a, "--no-early-stop") == 0) no_es = 1;
        else if (strcmp(a, "--local-db") == 0) so.local_db = 1;
        else if ((v = opt_value(argc, argv, &i, "--chdir"))) {
            if (!*v) goto done;
            so.chdir = v;
        } else if ((v = opt_value(argc, argv, &i, "--partition"))) {
            if (!*v) goto done;
            so.partition = v;
        } else if ((v = opt_value(argc, argv, &i, "--account"))) {
            if (!*v) goto done;
            so.account = v;
        } else if ((v = opt_value(argc, argv, &i, "--time"))) {
            if (!parse_count(v, "--time", &so.time_minutes)) goto done;
        } else if ((v = opt_value(argc, argv, &i, "--mem"))) {
            if (!parse_count(v, "--mem", &so.mem_mb)) goto done;
        }
        else if ((v = opt_value(argc, argv, &i, "--jobs"))) {
            if (!parse_count(v, "--jobs", &o.jobs)) goto done;
        } else if ((v = opt_value(argc, argv, &i, "--threads"))) {
            if (!parse_count(v, "--threads", &o.threads)) goto done;
        } else if ((v = opt_value(argc, argv, &i, "--tasks"))) {
            if (!parse_count(v, "--tasks", &so.tasks)) goto done;
        } else if ((v = opt_value(argc, argv, &i, "--db"))) {
            if (!*v) goto done;
            db = v;
        } else if ((v = opt_value(argc, argv, &i, "--shard"))) {
            if (!*v) goto done;
            shard = v;
        } else if ((v = opt_value(argc, argv, &i, "--set"))) {
            if (!*v) goto done;
            sets[n_sets++] = v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "loralab sweep: unknown option '%s'\n", a);
            usage(stderr);
            goto done;
        } else if (!file) file = a;
        else {
            fprintf(stderr, "loralab sweep: one config file, got '%s' and '%s'\n", file, a);
            goto done;
        }
    }
    if (!file) {
        usage(stderr);
        goto done;
    }
    if (config_load(file, sets, n_sets, &doc, &err) || sweep_expand(doc, &plan, &err) ||
        sweep_check_data(doc, &plan, &err)) {
        fprintf(stderr, "loralab sweep: %s\n", err.msg);
        goto done;
    }
    if (shard && sweep_parse_shard(shard, &o.shard_i, &o.shard_n, &err)) {
        fprintf(stderr, "loralab sweep: %s\n", err.msg);
        goto done;
    }
    if (dry) {
        sweep_print_plan(stdout, &plan, o.shard_i, o.shard_n);
        code = 0;
        goto done;
    }
    if (slurm) {
        char out[256];
        snprintf(out, sizeof out, "%s.sbatch", plan.n ? plan.points[0].rc.name : "sweep");
        so.threads = o.threads > 0 ? o.threads : 1;
        slurm_options_from_doc(doc, &so);
        if (slurm_emit(&plan, file, sets, n_sets, &so, out, &err)) {
            fprintf(stderr, "loralab sweep: %s\n", err.msg);
            goto done;
        }
        printf("wrote %s (%d runs); submit with: sbatch %s\n", out, plan.n, out);
        code = 0;
        goto done;
    }
    /* A shard never writes into the sweep's shared database unless told to: its own file by default. */
    char shard_db[512];
    if (!db && o.shard_n > 0) {
        slurm_shard_db(plan.n ? plan.points[0].rc.name : "sweep", o.shard_i, o.shard_n, shard_db, sizeof shard_db);
        db = shard_db;
    }
    o.db_path = db;
    o.retry_diverged = retry;
    o.retry_pruned = retry_pruned;
    if (no_es && !replay) doc->sweep.early_stop.type = ES_NONE; /* every run to its end; replay later */
    if (replay) {
        code = sweep_replay_early_stop(doc, &plan, &o, stdout, &err) ? 2 : 0;
        if (code) fprintf(stderr, "loralab sweep: %s\n", err.msg);
        goto done;
    }
    SweepSummary sum;
    LLStatus st = sweep_run(doc, &plan, &o, &sum, &err);
    if (st) fprintf(stderr, "loralab sweep: %s\n", err.msg);
    code = st == LL_ERR_INTERRUPTED ? 130 : st ? 1 : sum.exit_code;
done:
    slurm_options_free(&so);
    sweep_plan_free(&plan);
    config_doc_free(doc);
    free(sets);
    return code;
}
