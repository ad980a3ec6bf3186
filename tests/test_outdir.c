/* outdir: loralab replaces only the folders it wrote, atomically, and repairs a replacement that a
 * kill cut in half. Each case builds a user's folder, a file, a link or an earlier loralab folder at
 * the output path and checks what outdir_replace / outdir_claim leave there, byte for byte. */
#define _GNU_SOURCE
#define TU_TMP_NAME "outdir"
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "outdir.h"
#include "util.h"

/* DIR/name := text. */
static void put(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    tu_write_text(p, text);
}

/* Asserts DIR/name holds exactly text. */
static void has(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *got = tu_slurp(p, NULL);
    ck_assert_msg(strcmp(got, text) == 0, "%s holds '%s', expected '%s'", p, got, text);
    free(got);
}

/* A complete new adapter-like folder for DIR, built where outdir_replace wants it; TMP gets its path. */
static void build_new(const char *dir, char *tmp, size_t cap, const char *weights) {
    LLError err;
    CK_OK(outdir_tmp_create(dir, tmp, cap, &err));
    put(tmp, "adapter_config.json", "{\"r\": 4}\n");
    put(tmp, "adapter_model.safetensors", weights);
}

START_TEST(t_refuses_a_users_folder) {
    char dir[512], sub[600], tmp[700];
    tu_subdir(dir, sizeof dir, "precious");
    snprintf(sub, sizeof sub, "%s/sub", dir);
    LLError err;
    CK_OK(ll_mkdirs(sub, &err));
    put(dir, "thesis.tex", "chapter one\n");
    put(sub, "data.csv", "a,b\n1,2\n");
    build_new(dir, tmp, sizeof tmp, "new");
    ck_assert_int_eq(outdir_replace(tmp, dir, "adapter", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "precious") && strstr(err.msg, "which loralab did not write") &&
                      strstr(err.msg, "nothing was replaced"), "%s", err.msg);
    has(dir, "thesis.tex", "chapter one\n");
    has(sub, "data.csv", "a,b\n1,2\n");
    ck_assert_int_eq(tu_count_entries(dir, ""), 2);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp."), 0);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".old."), 0);
    /* a user's file beside an adapter of ours: still refused, the file named */
    char ad[512];
    tu_subdir(ad, sizeof ad, "adapter");
    build_new(ad, tmp, sizeof tmp, "v1");
    CK_OK(outdir_replace(tmp, ad, "adapter", &err));
    put(ad, "notes.txt", "mine\n");
    build_new(ad, tmp, sizeof tmp, "v2");
    ck_assert_int_eq(outdir_replace(tmp, ad, "adapter", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "'notes.txt'"), "%s", err.msg);
    has(ad, "adapter_model.safetensors", "v1");
    has(ad, "notes.txt", "mine\n");
}
END_TEST

START_TEST(t_refuses_a_file_and_a_link) {
    char file[512], target[512], link[512], tmp[700];
    tu_path(file, sizeof file, "notes.txt");
    tu_write_text(file, "my notes\n");
    LLError err;
    build_new(file, tmp, sizeof tmp, "new");
    ck_assert_int_eq(outdir_replace(tmp, file, "model", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "is not a folder"), "%s", err.msg);
    char *got = tu_slurp(file, NULL);
    ck_assert_str_eq(got, "my notes\n");
    free(got);
    ck_assert_int_eq(tu_count_entries(tu_dir, "notes.txt"), 1); /* no notes.txt.old.PID, no .tmp. */
    /* a link to a user's folder: neither the link nor what it points to is touched */
    tu_subdir(target, sizeof target, "target");
    put(target, "adapter_config.json", "theirs\n");
    tu_path(link, sizeof link, "link");
    ck_assert_int_eq(symlink(target, link), 0);
    build_new(link, tmp, sizeof tmp, "new");
    ck_assert_int_eq(outdir_replace(tmp, link, "adapter", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "symbolic link"), "%s", err.msg);
    has(target, "adapter_config.json", "theirs\n");
    struct stat sb;
    ck_assert(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    /* outputs that are no folder of their own */
    ck_assert_int_eq(outdir_claim("..", "report", &err), LL_ERR_IO);
    ck_assert_int_eq(outdir_claim("a/.", "report", &err), LL_ERR_IO);
}
END_TEST

START_TEST(t_replaces_its_own) {
    char dir[512], tmp[700];
    tu_path(dir, sizeof dir, "run/key");
    LLError err;
    /* new, then over its own (marker), then over an empty folder and a marker-less older one */
    build_new(dir, tmp, sizeof tmp, "v1");
    CK_OK(outdir_replace(tmp, dir, "adapter", &err));
    has(dir, "adapter_model.safetensors", "v1");
    has(dir, OUTDIR_MARKER, "loralab adapter\nadapter_config.json\nadapter_model.safetensors\n");
    build_new(dir, tmp, sizeof tmp, "v2");
    CK_OK(outdir_replace(tmp, dir, "adapter", &err));
    has(dir, "adapter_model.safetensors", "v2");
    char parent[512];
    tu_path(parent, sizeof parent, "run");
    ck_assert_int_eq(tu_count_entries(parent, ""), 1); /* nothing left beside it */
    char marker[700];
    snprintf(marker, sizeof marker, "%s/%s", dir, OUTDIR_MARKER);
    ck_assert_int_eq(unlink(marker), 0); /* as written by an older loralab */
    build_new(dir, tmp, sizeof tmp, "v3");
    CK_OK(outdir_replace(tmp, dir, "adapter", &err));
    has(dir, "adapter_model.safetensors", "v3");
    /* a model folder does not replace an adapter folder, marker or not */
    build_new(dir, tmp, sizeof tmp, "v4");
    ck_assert_int_eq(outdir_replace(tmp, dir, "model", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "loralab adapter folder, not a model folder"), "%s", err.msg);
    has(dir, "adapter_model.safetensors", "v3");
    /* trailing slashes name the same folder (the temporary one is not built inside it) */
    char slashed[600];
    snprintf(slashed, sizeof slashed, "%s//", dir);
    build_new(slashed, tmp, sizeof tmp, "v5");
    ck_assert_msg(strstr(tmp, "key.tmp.") != NULL, "%s", tmp);
    CK_OK(outdir_replace(tmp, slashed, "adapter", &err));
    has(dir, "adapter_model.safetensors", "v5");
    ck_assert_int_eq(tu_count_entries(parent, ""), 1);
}
END_TEST

/* The fallback replacement (no RENAME_EXCHANGE) killed between its two renames, deterministically:
 * the final name is gone, DIR.old.PID holds the previous folder; outdir_recover puts it back and
 * removes the dead process's temporary folder. */
START_TEST(t_kill_in_the_replace_window) {
    char dir[512], parent[512];
    tu_path(dir, sizeof dir, "out/model");
    tu_path(parent, sizeof parent, "out");
    char tmp[700];
    LLError err;
    build_new(dir, tmp, sizeof tmp, "good");
    CK_OK(outdir_replace(tmp, dir, "adapter", &err));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("LORALAB_FAULT", "replace-noexchange,replace-kill", 1);
        char t[700];
        LLError e;
        build_new(dir, t, sizeof t, "half");
        outdir_replace(t, dir, "adapter", &e);
        _exit(0); /* not reached: the fault kills the child between the renames */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    struct stat sb;
    ck_assert_msg(lstat(dir, &sb) != 0, "the window was not hit: %s exists", dir);
    ck_assert_int_eq(tu_count_entries(parent, ".old."), 1);
    ck_assert_int_eq(tu_count_entries(parent, ".tmp."), 1);
    ck_assert_int_eq(outdir_recover(dir), 1);
    has(dir, "adapter_model.safetensors", "good");
    ck_assert_int_eq(tu_count_entries(parent, ""), 1);
    /* the same fallback without the kill completes and leaves nothing beside */
    setenv("LORALAB_FAULT", "replace-noexchange", 1);
    build_new(dir, tmp, sizeof tmp, "next");
    LLStatus st = outdir_replace(tmp, dir, "adapter", &err);
    unsetenv("LORALAB_FAULT");
    ck_assert_int_eq(st, LL_OK);
    has(dir, "adapter_model.safetensors", "next");
    ck_assert_int_eq(tu_count_entries(parent, ""), 1);
}
END_TEST

START_TEST(t_claim) {
    char dir[512], empty[512], mine[512];
    LLError err;
    tu_path(dir, sizeof dir, "report/new");
    CK_OK(outdir_claim(dir, "report", &err)); /* made, and marked */
    has(dir, OUTDIR_MARKER, "loralab report\n");
    put(dir, "table.md", "old table\n");
    CK_OK(outdir_claim(dir, "report", &err)); /* its own again */
    ck_assert_int_eq(outdir_claim(dir, "analysis", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "loralab report folder, not a analysis folder") ||
                      strstr(err.msg, "not a analysis"), "%s", err.msg);
    tu_subdir(empty, sizeof empty, "empty");
    CK_OK(outdir_claim(empty, "analysis", &err));
    tu_subdir(mine, sizeof mine, "mine");
    put(mine, "index.html", "my homepage\n");
    ck_assert_int_eq(outdir_claim(mine, "report", &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "'index.html'") && strstr(err.msg, "write into"), "%s", err.msg);
    has(mine, "index.html", "my homepage\n");
    ck_assert_int_eq(tu_count_entries(mine, ""), 1);
}
END_TEST

START_TEST(t_remove_tree_follows_no_link) {
    char keep[512], tree[512], link[700];
    tu_subdir(keep, sizeof keep, "keep");
    put(keep, "a.txt", "stay\n");
    tu_subdir(tree, sizeof tree, "tree");
    snprintf(link, sizeof link, "%s/to_keep", tree);
    ck_assert_int_eq(symlink(keep, link), 0);
    outdir_remove_tree(tree);
    struct stat sb;
    ck_assert(lstat(tree, &sb) != 0);
    has(keep, "a.txt", "stay\n");
}
END_TEST

Suite *outdir_suite(void) {
    Suite *s = suite_create("outdir");
    TCase *tc = tu_tcase(s, "core", 0, 30);
    tcase_add_checked_fixture(tc, tu_tmpdir_setup, tu_tmpdir_teardown);
    tcase_add_test(tc, t_refuses_a_users_folder);
    tcase_add_test(tc, t_refuses_a_file_and_a_link);
    tcase_add_test(tc, t_replaces_its_own);
    tcase_add_test(tc, t_kill_in_the_replace_window);
    tcase_add_test(tc, t_claim);
    tcase_add_test(tc, t_remove_tree_follows_no_link);
    return s;
}
