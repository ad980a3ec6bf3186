/* Helpers shared by the Check suites (tests/test_*.c): the test case's temporary folder, reading and
 * writing whole files, opening a results store, finding a program on PATH, and CK_OK.
 *
 * Header-only: every function is `static inline`, so each suite (one translation unit) gets its own
 * copy and its own tu_dir, and the Makefile's tests/test_*.c wildcard needs nothing more. A suite
 * defines _XOPEN_SOURCE 700 (or _GNU_SOURCE) before any #include, for nftw and mkdtemp, and may
 * define TU_TMP_NAME first: its folders are /tmp/loralab_<TU_TMP_NAME>_XXXXXX.
 *
 * The folder: tu_tmpdir_setup / tu_tmpdir_teardown are the fixture pair. As an unchecked fixture
 * they run in the runner process, so the folder is removed even after a test that crashed in its
 * forked child; a failed mkdtemp then fails the whole TCase with the reason. Set
 * LORALAB_KEEP_TEST_DIR (or LORALAB_KEEP_TEST_DIRS) to keep the folders for a look afterwards.
 *
 * Every helper that can fail asserts (ck_assert_msg, naming the path), so it fails the calling
 * test; only tu_rm_tree and tu_have_program return an answer for the caller to judge.
 */
#ifndef LORALAB_TESTS_UTIL_H
#define LORALAB_TESTS_UTIL_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "experiments/store.h"

#ifndef TU_TMP_NAME
#define TU_TMP_NAME "test"
#endif

/* Asserts that expr gives LL_OK, printing expr, the status and err.msg (needs a local LLError err). */
#define CK_OK(expr)                                                                                \
    do {                                                                                           \
        LLStatus st_ = (expr);                                                                     \
        ck_assert_msg(st_ == LL_OK, "%s -> %s: %s", #expr, ll_status_name(st_), err.msg);         \
    } while (0)

/* The test case's folder: set by tu_tmpdir_setup, "" before it and after tu_tmpdir_teardown. */
static char tu_dir[256];

/* nftw callback of tu_rm_tree: removes one file, link or (emptied) folder. */
static inline int tu_rm_entry_(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes dir and everything below it, following no links; returns 0 when all went; asserts nothing. */
static inline int tu_rm_tree(const char *dir) { return nftw(dir, tu_rm_entry_, 16, FTW_DEPTH | FTW_PHYS); }

/* Fixture setup: makes tu_dir, a new /tmp/loralab_<TU_TMP_NAME>_XXXXXX; asserts mkdtemp worked. */
static inline void tu_tmpdir_setup(void) {
    snprintf(tu_dir, sizeof tu_dir, "/tmp/loralab_%s_XXXXXX", TU_TMP_NAME);
    int ok = mkdtemp(tu_dir) != NULL, e = errno;
    if (!ok) tu_dir[0] = '\0';
    ck_assert_msg(ok, "cannot make a temporary folder under /tmp: %s", strerror(e));
}

/* Fixture teardown: removes tu_dir and its contents unless LORALAB_KEEP_TEST_DIR(S) is set; asserts nothing. */
static inline void tu_tmpdir_teardown(void) {
    if (!tu_dir[0] || getenv("LORALAB_KEEP_TEST_DIR") || getenv("LORALAB_KEEP_TEST_DIRS")) return;
    tu_rm_tree(tu_dir);
    tu_dir[0] = '\0';
}

/* A TCase `name` in s: tu_tmpdir as unchecked fixture if tmpdir, `timeout` s if > 0; asserts nothing. */
static inline TCase *tu_tcase(Suite *s, const char *name, int tmpdir, double timeout) {
    TCase *tc = tcase_create(name);
    if (tmpdir) tcase_add_unchecked_fixture(tc, tu_tmpdir_setup, tu_tmpdir_teardown);
    if (timeout > 0) tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

/* tu_dir/name into buf, which it returns; asserts the fixture made tu_dir and the path fits. */
static inline const char *tu_path(char *buf, size_t cap, const char *name) {
    ck_assert_msg(tu_dir[0] != '\0', "no temporary folder: the TCase lacks the tu_tmpdir fixture");
    int n = snprintf(buf, cap, "%s/%s", tu_dir, name);
    ck_assert_msg(n >= 0 && (size_t)n < cap, "path %s/%s does not fit in %zu bytes", tu_dir, name, cap);
    return buf;
}

/* tu_dir/name into out, made with its parents (mkdir -p); asserts it could be made. */
static inline void tu_subdir(char *out, size_t cap, const char *name) {
    LLError err;
    CK_OK(ll_mkdirs(tu_path(out, cap, name), &err));
}

/* A new, empty folder tu_dir/tXXXXXX into dir (one per use); asserts it was made. */
static inline void tu_tmpdir_new(char *dir, size_t cap) {
    tu_path(dir, cap, "tXXXXXX");
    ck_assert_msg(mkdtemp(dir) != NULL, "cannot make %s: %s", dir, strerror(errno));
}

/* Removes a folder from tu_tmpdir_new with everything in it; asserts that all of it went. */
static inline void tu_tmpdir_remove(const char *dir) {
    ck_assert_msg(tu_rm_tree(dir) == 0, "cannot remove %s: %s", dir, strerror(errno));
}

/* Entries of dir (not . and ..) whose name contains part ("": all); asserts dir can be listed. */
static inline int tu_count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot list %s: %s", dir, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

/* The whole file at path, NUL-terminated (free() it), size in *len if len; asserts it was read whole. */
static inline char *tu_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot read %s: %s", path, strerror(errno));
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    int ok = buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    ck_assert_msg(ok, "cannot read %s whole (%ld bytes)", path, size);
    buf[size] = '\0';
    if (len) *len = (size_t)size;
    return buf;
}

/* Writes text to path, creating or truncating the file; asserts every byte reached it. */
static inline void tu_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    size_t n = strlen(text), wrote = fwrite(text, 1, n, f);
    int closed = fclose(f) == 0;
    ck_assert_msg(wrote == n && closed, "short write to %s (%zu of %zu bytes)", path, wrote, n);
}

/* The results store at path, read-only or writable (created if missing); asserts store_open gave LL_OK. */
static inline Store *tu_store_open(const char *path, int read_only) {
    Store *s = NULL;
    LLError err = {0};
    CK_OK(store_open(path, read_only, &s, &err));
    return s;
}

/* 1 when a folder of PATH holds an executable `name` (gnuplot, chromium), else 0; asserts nothing. */
static inline int tu_have_program(const char *name) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", d, name);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

#endif
