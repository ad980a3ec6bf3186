/* slurm: see slurm.h. */
#define _GNU_SOURCE
#include "slurm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"

void slurm_options_defaults(SlurmOptions *o) {
    memset(o, 0, sizeof *o);
    o->threads = 1;
}

void slurm_options_from_doc(const ConfigDoc *doc, SlurmOptions *o) {
    const ConfigValue *v;
    if (!o->partition && (v = config_doc_value(doc, "slurm.partition"))) o->partition = v->s;
    if (!o->account && (v = config_doc_value(doc, "slurm.account"))) o->account = v->s;
    if (!o->time_minutes && (v = config_doc_value(doc, "slurm.time"))) o->time_minutes = (int)v->i;
    if (!o->mem_mb && (v = config_doc_value(doc, "slurm.mem"))) o->mem_mb = (int)v->i;
    if (!o->local_db && (v = config_doc_value(doc, "slurm.local_db"))) o->local_db = v->i != 0;
    if (o->n_extra || !(v = config_doc_value(doc, "slurm.extra"))) return;
    /* one buffer: the pointer array, then the text with its newlines turned into ends of strings */
    size_t len = strlen(v->s), n = 1;
    for (size_t i = 0; i < len; i++) n += v->s[i] == '\n';
    o->extra_owned = ll_malloc(n * sizeof(char *) + len + 1, 1);
    const char **lines = (const char **)(void *)o->extra_owned;
    char *text = o->extra_owned + n * sizeof(char *);
    memcpy(text, v->s, len + 1);
    int k = 0;
    for (char *line = text, *end; line; line = end ? end + 1 : NULL) {
        end = strchr(line, '\n');
        if (end) *end = '\0';
        if (line[strspn(line, " \t\r")]) lines[k++] = line; /* blank lines dropped */
    }
    o->extra = lines, o->n_extra = k;
}

void slurm_options_free(SlurmOptions *o) {
    ll_free(o->extra_owned);
    o->extra_owned = NULL, o->extra = NULL, o->n_extra = 0;
}

void slurm_shard_db(const char *name, int shard_i, int shard_n, char *out, size_t cap) {
    snprintf(out, cap, "results/%s.shard%d-of-%d.db", name, shard_i, shard_n);
}

/* ---- estimates -------------------------------------------------------------------------------- */

/* The sizes of a run's base: the preset's (with the pretraining vocabulary) or the folder's. */
static int base_config(const RunConfig *rc, ModelConfig *mc) {
    if (rc->pretrain) {
        *mc = rc->base_model;
        if (mc->V <= 0) mc->V = rc->base_bpe ? rc->base_vocab : 256;
        return mc->V > 0;
    }
    LLError e;
    return checkpoint_load_config(rc->base_path, mc, &e) == LL_OK;
}

/* The throughput the time estimate assumes: 2 GFLOP/s per thread, far below what the engine
 * reaches on the development machines (README, Performance), because a cluster core may be slower,
 * shared or throttled, and a task that runs out of time loses its run. */
#define SLURM_FLOPS_PER_THREAD 2e9

void slurm_estimate(const SweepPlan *plan, const SlurmOptions *o, double *mem_bytes, int *minutes) {
    double mem = 0.0, secs = 0.0, pretrain_secs = 0.0;
    int tasks = o->tasks > 0 ? o->tasks : (plan->n < 1000 ? plan->n : 1000);
    if (tasks < 1) tasks = 1;
    int threads = o->threads > 0 ? o->threads : 1;
    for (int i = 0; i < plan->n; i++) {
        const RunConfig *rc = &plan->points[i].rc;
        ModelConfig mc;
        if (!base_config(rc, &mc)) continue;
        int full = rc->adapter.method == ADAPTER_FULL;
        ModelOptions mo = {rc->train.batch, rc->train.seq < mc.max_T ? rc->train.seq : mc.max_T, 1, full};
        double m = model_memory_estimate(&mc, &mo);
        double p = (double)model_param_count(&mc);
        double tokens = (double)rc->train.steps * rc->train.batch * rc->train.seq;
        double run = tokens * (full ? 6.0 : 4.0) * p / (SLURM_FLOPS_PER_THREAD * threads) + 0.01 * rc->train.steps;
        secs += run;
        if (rc->pretrain) {
            ModelOptions po = {rc->base_train.batch, rc->base_train.seq < mc.max_T ? rc->base_train.seq : mc.max_T, 1, 1};
            double pm = model_memory_estimate(&mc, &po);
            if (pm > m) m = pm;
            double pt = (double)rc->base_train.steps * rc->base_train.batch * rc->base_train.seq * 6.0 * p /
                        (SLURM_FLOPS_PER_THREAD * threads);
            if (pt > pretrain_secs) pretrain_secs = pt;
        }
        if (m > mem) mem = m;
    }
    *mem_bytes = mem * 1.5 + 512.0 * 1024 * 1024;
    /* a task runs about n / tasks runs one after the other, and may have to pretrain the base */
    double per_task = secs / plan->n * ceil((double)plan->n / tasks) + pretrain_secs;
    double mins = ceil(2.0 * per_task / 60.0) + 5.0;
    *minutes = mins < 10 ? 10 : mins > 100000 ? 100000 : (int)mins;
}

/* ---- the script ------------------------------------------------------------------------------- */

/* Single-quoted for sh: ' becomes '\''; a newline inside quotes is data, not a new command. */
static void sh_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputs("'\\''", f);
        else fputc(*s, f);
    }
    fputc('\'', f);
}

/* Printable ASCII other than the quote characters and the backslash: what may stand in an #SBATCH
 * line (sbatch splits those itself) or a comment of the script. */
static int plain_text(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\'' || *p == '"' || *p == '\\' || *p == '`') return 0;
    return 1;
}

/* A sweep name as a file-name part: [A-Za-z0-9._-], others '_'. */
static void file_part(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (; *s && o + 1 < cap; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '-';
        out[o++] = ok ? c : '_';
    }
    out[o] = '\0';
    if (!o || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) snprintf(out, cap, "sweep");
}

LLStatus slurm_emit(const SweepPlan *plan, const char *config_path, const char *const *sets, int n_sets,
                    const SlurmOptions *o, const char *out_path, LLError *err) {
    if (plan->n == 0) return ll_err(err, LL_ERR_CONFIG, "%s: every point was excluded; nothing to submit", config_path);
    char name[128], cwd[2048];
    file_part(plan->points[0].rc.name, name, sizeof name);
    const char *dir = o->chdir;
    if (!dir) {
        if (!getcwd(cwd, sizeof cwd)) return ll_err(err, LL_ERR_IO, "cannot read the working directory: %s", strerror(errno));
        dir = cwd;
    }
    if (dir[0] != '/') return ll_err(err, LL_ERR_CONFIG, "--chdir '%s': give an absolute path (nodes start elsewhere)", dir);
    const struct {
        const char *what, *value;
    } sbatch_values[] = {{"the checkout folder (--chdir)", dir}, {"slurm.partition", o->partition},
                         {"slurm.account", o->account}};
    for (size_t i = 0; i < sizeof sbatch_values / sizeof sbatch_values[0]; i++) {
        const char *v = sbatch_values[i].value;
        if (v && (!plain_text(v) || strchr(v, ' ')))
            return ll_err(err, LL_ERR_CONFIG,
                          "%s '%s' holds a space, quote, backslash or control character, which an #SBATCH line "
                          "cannot hold; choose another", sbatch_values[i].what, v);
    }
    for (int i = 0; i < o->n_extra; i++)
        if (strchr(o->extra[i], '\n') || strchr(o->extra[i], '\r'))
            return ll_err(err, LL_ERR_CONFIG, "slurm.extra line %d holds a newline: give one command per line", i + 1);
    int tasks = o->tasks > 0 ? o->tasks : (plan->n < 1000 ? plan->n : 1000);
    if (tasks > plan->n) tasks = plan->n;
    int threads = o->threads > 0 ? o->threads : 1;
    double mem;
    int minutes;
    slurm_estimate(plan, o, &mem, &minutes);
    int mem_mb = o->mem_mb > 0 ? o->mem_mb : (int)ceil(mem / (1024.0 * 1024.0));
    if (o->time_minutes > 0) minutes = o->time_minutes;
    char logs[2300];
    snprintf(logs, sizeof logs, "%s/results/slurm", dir);
    LLStatus st = ll_mkdirs(logs, err);
    if (st) return st;

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return ll_err(err, LL_ERR_IO, "open_memstream: %s", strerror(errno));
    fprintf(f, "#!/bin/bash\n");
    fprintf(f, "# loralab sweep '%s': %d runs in %d array tasks, emitted by `loralab sweep --emit-slurm`\n", name,
            plan->n, tasks);
    fprintf(f, "# from the config file and --set values in the command below (keep them unchanged until the\n"
               "# array is done: the plan is a pure function of them).\n#\n");
    fprintf(f, "# Task I runs shard I/%d: the runs whose plan index j has j %% %d == I, into its own database\n"
               "# results/%s.shardI-of-%d.db (SQLite files must not be shared between nodes). The shard count\n"
               "# is fixed here, so re-submitting some tasks alone (sbatch --array=3,5 %s.sbatch) redoes\n"
               "# exactly those shards; runs already done in a shard's database are skipped, and a run that\n"
               "# was interrupted resumes.\n#\n",
            tasks, tasks, name, tasks, name);
    fprintf(f, "# Assumed of the filesystem: this checkout (--chdir below), its data/ and results/ are on a\n"
               "# filesystem every node sees. Set slurm.local_db (or emit with --local-db) to keep each task's\n"
               "# database on node-local disk while it runs; it is copied back when the task ends.\n#\n");
    fprintf(f, "# Submit, then join the shards when every task has ended:\n"
               "#   jid=$(sbatch --parsable %s.sbatch)\n"
               "#   sbatch --dependency=afterany:$jid --chdir=%s --wrap './loralab merge-db results/%s.db "
               "results/%s.shard*-of-%d.db'\n",
            name, dir, name, name, tasks);
    fprintf(f, "# A failed task: read results/slurm/%s.taskI.log, fix the cause, and submit that task again.\n",
            name);
    fprintf(f, "# --time is %s; --mem is the largest run's estimate x 1.5 + 512 MiB.\n",
            o->time_minutes > 0 ? "slurm.time" : "a guess at 2 GFLOP/s per thread, doubled (set slurm.time)");
    fprintf(f, "#SBATCH --job-name=loralab-%s\n", name);
    fprintf(f, "#SBATCH --array=0-%d\n", tasks - 1);
    fprintf(f, "#SBATCH --ntasks=1\n");
    fprintf(f, "#SBATCH --cpus-per-task=%d\n", threads);
    fprintf(f, "#SBATCH --mem=%dM\n", mem_mb);
    fprintf(f, "#SBATCH --time=%d:%02d:00\n", minutes / 60, minutes % 60);
    fprintf(f, "#SBATCH --chdir=%s\n", dir);
    fprintf(f, "#SBATCH --output=results/slurm/%s.task%%a.log\n", name);
    fprintf(f, "#SBATCH --open-mode=append\n");
    if (o->partition) fprintf(f, "#SBATCH --partition=%s\n", o->partition);
    if (o->account) fprintf(f, "#SBATCH --account=%s\n", o->account);
    fprintf(f, "set -euo pipefail\n");
    fprintf(f, "TASKS=%d\nRUNS=%d\n", tasks, plan->n);
    fprintf(f, "TASK=${SLURM_ARRAY_TASK_ID:?run this script with sbatch}\n");
    fprintf(f, "if ! [ \"$TASK\" -ge 0 ] 2>/dev/null || [ \"$TASK\" -ge \"$TASKS\" ]; then\n"
               "    echo \"loralab: array task $TASK is not a shard of 0..$((TASKS - 1)); submit with --array=0-$((TASKS - 1))"
               " or a part of it\" >&2\n    exit 2\nfi\n");
    fprintf(f, "echo \"loralab: task $TASK of $TASKS (job ${SLURM_JOB_ID:-?}, attempt ${SLURM_RESTART_COUNT:-0}) on "
               "$(hostname) at $(date -u +%%FT%%TZ)\"\n");
    for (int i = 0; i < o->n_extra; i++) fprintf(f, "%s\n", o->extra[i]);
    fprintf(f, "LORALAB=${LORALAB:-./loralab}\n");
    fprintf(f, "DB=\"results/%s.shard${TASK}-of-${TASKS}.db\"\n", name);
    fprintf(f, "ARGS=(sweep ");
    sh_quote(f, config_path);
    for (int i = 0; i < n_sets; i++) {
        fprintf(f, " --set ");
        sh_quote(f, sets[i]);
    }
    fprintf(f, " --jobs 1 --threads \"${SLURM_CPUS_PER_TASK:-%d}\" --shard \"$TASK/$TASKS\")\n", threads);
    if (o->local_db) {
        fprintf(f, "LOCAL=\"${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/loralab-${SLURM_JOB_ID:-0}-$TASK\"\n"
                   "mkdir -p \"$LOCAL\"\n"
                   "if [ -f \"$DB\" ]; then cp \"$DB\" \"$LOCAL/shard.db\"; fi\n"
                   "copy_back() { [ -f \"$LOCAL/shard.db\" ] && cp \"$LOCAL/shard.db\" \"$DB.tmp.$$\" && "
                   "mv \"$DB.tmp.$$\" \"$DB\" && rm -rf \"$LOCAL\"; }\n"
                   "trap copy_back EXIT\n"
                   "trap 'exit 143' TERM INT\n"
                   "\"$LORALAB\" \"${ARGS[@]}\" --db \"$LOCAL/shard.db\"\n");
    } else {
        fprintf(f, "exec \"$LORALAB\" \"${ARGS[@]}\" --db \"$DB\"\n");
    }
    fclose(f);
    st = ll_write_file_atomic(out_path, buf, len, err);
    free(buf);
    return st;
}
