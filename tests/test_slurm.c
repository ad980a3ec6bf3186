/* slurm: the emitted array script. Its text (fixed shard count, --chdir, append-mode logs, resources),
 * and the script itself run by bash as SLURM would start a task, with a stand-in for loralab that
 * records its arguments: a config path holding a newline, quotes and `$(...)` arrives as one
 * argument and runs nothing; a task outside the array's shards stops with exit 2. The real SLURM
 * path (sbatch, requeue, scancel) is `make test-slurm` (scripts/test-slurm.sh). */
#define _GNU_SOURCE
#define TU_TMP_NAME "slurm"
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "experiments/config.h"
#include "experiments/slurm.h"
#include "util.h"

#define BASE "base: {path: models/base}\ntask: {data: data/brown}\n"

static void plan_of(const char *text, ConfigDoc **d, SweepPlan *p) {
    LLError err;
    ck_assert_msg(config_load_text("s.yaml", text, NULL, 0, d, &err) == LL_OK, "%s", err.msg);
    ck_assert_msg(sweep_expand(*d, p, &err) == LL_OK, "%s", err.msg);
}

/* Runs `bash SCRIPT` in tu_dir with SLURM_ARRAY_TASK_ID=task and LORALAB=the recorder; returns the
 * exit status; the recorder writes its arguments, one per line between markers, to args.txt. */
static int run_task(const char *script, const char *task) {
    char rec[512], cmd[2048];
    tu_path(rec, sizeof rec, "record.sh");
    tu_write_text(rec, "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done > args.txt\n");
    chmod(rec, 0755);
    snprintf(cmd, sizeof cmd, "cd '%s' && SLURM_ARRAY_TASK_ID=%s SLURM_JOB_ID=7 LORALAB='%s' bash '%s' > task.out 2>&1",
             tu_dir, task, rec, script);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(t_script_text) {
    ConfigDoc *d;
    SweepPlan p;
    plan_of("name: demo\n" BASE "sweep: {grid: {adapter.r: [1, 2, 3, 4, 5]}}\n", &d, &p);
    SlurmOptions o;
    slurm_options_defaults(&o);
    o.tasks = 3;
    o.threads = 2;
    o.chdir = tu_dir;
    o.partition = "short";
    o.time_minutes = 90;
    const char *extra[] = {"module load gcc"};
    o.extra = extra;
    o.n_extra = 1;
    char path[512], want[1024];
    tu_path(path, sizeof path, "demo.sbatch");
    LLError err;
    ck_assert_int_eq(slurm_emit(&p, "configs/x.yaml", NULL, 0, &o, path, &err), LL_OK);
    char *text = tu_slurp(path, NULL);
    const char *lines[] = {"#SBATCH --array=0-2\n", "#SBATCH --cpus-per-task=2\n", "#SBATCH --time=1:30:00\n",
                           "#SBATCH --open-mode=append\n", "#SBATCH --output=results/slurm/demo.task%a.log\n",
                           "#SBATCH --partition=short\n", "TASKS=3\nRUNS=5\n", "\nmodule load gcc\n",
                           "--shard \"$TASK/$TASKS\")", "DB=\"results/demo.shard${TASK}-of-${TASKS}.db\"",
                           "merge-db results/demo.db results/demo.shard*-of-3.db"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        ck_assert_msg(strstr(text, lines[i]) != NULL, "no '%s' in:\n%s", lines[i], text);
    snprintf(want, sizeof want, "#SBATCH --chdir=%s\n", tu_dir);
    ck_assert_msg(strstr(text, want) != NULL, "%s", text);
    ck_assert_msg(strstr(text, "SLURM_ARRAY_TASK_COUNT") == NULL, "the count must be fixed:\n%s", text);
    ck_assert(strstr(text, "#SBATCH --mem=") != NULL);
    /* every #SBATCH line comes before the first command (sbatch stops reading them there) */
    ck_assert(strstr(text, "#SBATCH") < strstr(text, "set -euo"));
    ck_assert(strrchr(text, '#') && strstr(strstr(text, "#SBATCH --partition"), "set -euo") != NULL);
    ll_free(text);
    struct stat sb;
    char logs[512];
    ck_assert(stat(tu_path(logs, sizeof logs, "results/slurm"), &sb) == 0 && S_ISDIR(sb.st_mode));
    /* refused: a relative --chdir, an #SBATCH value with a space, an extra line with a newline */
    o.chdir = "relative/dir";
    ck_assert_int_eq(slurm_emit(&p, "x.yaml", NULL, 0, &o, path, &err), LL_ERR_CONFIG);
    o.chdir = tu_dir;
    o.partition = "a b";
    ck_assert_int_eq(slurm_emit(&p, "x.yaml", NULL, 0, &o, path, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "slurm.partition"), "%s", err.msg);
    o.partition = NULL;
    const char *bad[] = {"module load gcc\ntouch PWNED"};
    o.extra = bad;
    ck_assert_int_eq(slurm_emit(&p, "x.yaml", NULL, 0, &o, path, &err), LL_ERR_CONFIG);
    char shard[128];
    slurm_shard_db("demo", 2, 8, shard, sizeof shard);
    ck_assert_str_eq(shard, "results/demo.shard2-of-8.db");
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

START_TEST(t_script_runs_quoted) {
    ConfigDoc *d;
    SweepPlan p;
    plan_of("name: demo\n" BASE "sweep: {grid: {adapter.r: [1, 2, 3, 4]}}\n", &d, &p);
    SlurmOptions o;
    slurm_options_defaults(&o);
    o.chdir = tu_dir;
    const char *hostile = "cfg\n$(touch PWNED)`touch PWNED`'\";touch PWNED.yaml";
    const char *sets[] = {"name=it's $(touch PWNED)"};
    char path[512];
    tu_path(path, sizeof path, "demo.sbatch");
    LLError err;
    ck_assert_int_eq(slurm_emit(&p, hostile, sets, 1, &o, path, &err), LL_OK);
    ck_assert_int_eq(run_task(path, "3"), 0);
    char args[512];
    char *got = tu_slurp(tu_path(args, sizeof args, "args.txt"), NULL);
    char want[1024];
    snprintf(want, sizeof want,
             "<sweep>\n<%s>\n<--set>\n<%s>\n<--jobs>\n<1>\n<--threads>\n<1>\n<--shard>\n<3/4>\n<--db>\n"
             "<results/demo.shard3-of-4.db>\n",
             hostile, sets[0]);
    ck_assert_msg(strcmp(got, want) == 0, "arguments:\n%s\nexpected:\n%s", got, want);
    ll_free(got);
    ck_assert_int_eq(tu_count_entries(tu_dir, "PWNED"), 0);
    /* re-submitted alone, task 3 is still shard 3 of 4; a task past the array is refused */
    ck_assert_int_eq(run_task(path, "4"), 2);
    char out[512];
    got = tu_slurp(tu_path(out, sizeof out, "task.out"), NULL);
    ck_assert_msg(strstr(got, "array task 4 is not a shard of 0..3"), "%s", got);
    ll_free(got);
    /* node-local database: the script copies it back when the task ends */
    o.local_db = 1;
    ck_assert_int_eq(slurm_emit(&p, "x.yaml", NULL, 0, &o, path, &err), LL_OK);
    char rec[512];
    tu_path(rec, sizeof rec, "record.sh");
    tu_write_text(rec, "#!/bin/sh\nfor a; do last=$a; done\necho local > \"$last\"\n");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && mkdir -p results tmp && SLURM_ARRAY_TASK_ID=1 SLURM_JOB_ID=9 TMPDIR=tmp "
             "LORALAB='%s' bash '%s' > task.out 2>&1", tu_dir, rec, path);
    ck_assert_int_eq(system(cmd), 0);
    char db[512];
    got = tu_slurp(tu_path(db, sizeof db, "results/demo.shard1-of-4.db"), NULL);
    ck_assert_str_eq(got, "local\n");
    ll_free(got);
    char tmp[512];
    ck_assert_int_eq(tu_count_entries(tu_path(tmp, sizeof tmp, "tmp"), ""), 0);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

/* The file's slurm section reaches the script; a flag given on the command line wins over it. */
START_TEST(t_slurm_section) {
    ConfigDoc *d;
    SweepPlan p;
    plan_of("name: sec\n" BASE "slurm:\n  partition: gpu\n  account: lab7\n  time: 45\n  mem: 3000\n"
            "  local_db: true\n  extra: |\n    module load gcc\n\n    source env.sh\n"
            "sweep: {grid: {adapter.r: [1, 2]}}\n", &d, &p);
    SlurmOptions o;
    slurm_options_defaults(&o);
    o.tasks = 2;
    o.chdir = tu_dir;
    o.account = "cli-account"; /* as --account would set it */
    slurm_options_from_doc(d, &o);
    ck_assert_int_eq(o.n_extra, 2);
    ck_assert_str_eq(o.extra[0], "module load gcc");
    ck_assert_str_eq(o.extra[1], "source env.sh");
    char path[512];
    tu_path(path, sizeof path, "sec.sbatch");
    LLError err;
    ck_assert_msg(slurm_emit(&p, "x.yaml", NULL, 0, &o, path, &err) == LL_OK, "%s", err.msg);
    char *text = tu_slurp(path, NULL);
    const char *lines[] = {"#SBATCH --partition=gpu\n", "#SBATCH --account=cli-account\n", "#SBATCH --time=0:45:00\n",
                           "#SBATCH --mem=3000M\n", "\nmodule load gcc\nsource env.sh\n", "LOCAL="};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        ck_assert_msg(strstr(text, lines[i]) != NULL, "no '%s' in:\n%s", lines[i], text);
    ck_assert_msg(strstr(text, "lab7") == NULL, "the file's account beat --account:\n%s", text);
    ll_free(text);
    slurm_options_free(&o);
    ck_assert_int_eq(o.n_extra, 0);
    sweep_plan_free(&p);
    config_doc_free(d);
}
END_TEST

Suite *slurm_suite(void) {
    Suite *s = suite_create("slurm");
    TCase *tc = tu_tcase(s, "core", 0, 30);
    tcase_add_checked_fixture(tc, tu_tmpdir_setup, tu_tmpdir_teardown);
    tcase_add_test(tc, t_script_text);
    tcase_add_test(tc, t_script_runs_quoted);
    tcase_add_test(tc, t_slurm_section);
    return s;
}
