/* fuzz_util: what several libFuzzer targets share (header-only, static functions, so the
 * Makefile's fuzz_%.c rule needs nothing more).
 *
 * fuzz_scratch_dir: a folder made once per process under /dev/shm (tmpfs: fsyncs cost nothing)
 * or else TMPDIR or /tmp, removed with everything in it at exit. A crash skips the removal: the
 * folder (loralab-fuzz-NAME.XXXXXX) is left for a look.
 * fuzz_load_yaml: config_load_text on the input as text; a rejection must be an error status with
 * a message and no document (else abort). fuzz_raw_points: a sweep's points before exclusion and
 * merging, to skip the expansion of huge plans (the limit itself is tested in test_sweep.c).
 */
#ifndef LORALAB_FUZZ_UTIL_H
#define LORALAB_FUZZ_UTIL_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "experiments/config.h"

static char fuzz_dir_[512];

static int fuzz_rm_entry_(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes path and everything below it, following no link. */
static void fuzz_rm_tree(const char *path) { nftw(path, fuzz_rm_entry_, 16, FTW_DEPTH | FTW_PHYS); }

static void fuzz_remove_scratch_(void) { fuzz_rm_tree(fuzz_dir_); }

static const char *fuzz_scratch_dir(const char *name) {
    if (fuzz_dir_[0]) return fuzz_dir_;
    struct stat st;
    const char *tmp = getenv("TMPDIR");
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                       : tmp && *tmp                                                                  ? tmp
                                                                                                      : "/tmp";
    snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/loralab-fuzz-%s.XXXXXX", base, name);
    if (!mkdtemp(fuzz_dir_)) abort();
    atexit(fuzz_remove_scratch_);
    return fuzz_dir_;
}

static double fuzz_raw_points(const SweepSpec *s) {
    double n = s->n_seeds > 0 ? s->n_seeds : 1;
    for (int i = 0; i < s->n_axes; i++) n *= s->axes[i].n > 0 ? s->axes[i].n : 1;
    if (s->random_n > 0) n *= s->random_n;
    return n;
}

/* The document, or NULL after a proper rejection. */
static ConfigDoc *fuzz_load_yaml(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    ConfigDoc *doc = NULL;
    LLError err;
    err.msg[0] = '\0';
    LLStatus rc = config_load_text("fuzz.yaml", text, NULL, 0, &doc, &err);
    free(text);
    if (rc == LL_OK) return doc;
    if ((rc != LL_ERR_CONFIG && rc != LL_ERR_IO && rc != LL_ERR_FORMAT) || err.msg[0] == '\0' || doc != NULL) abort();
    return NULL;
}

#endif
