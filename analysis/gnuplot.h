/* gnuplot: runs `gnuplot NAME.gp` as a program in a figure folder and checks what it did.
 *
 * The report and the LoRA analysis write each figure as NAME.gp + NAME.dat; this renders it. The
 * child runs in the folder (scripts use relative paths, so running them by hand there redraws the
 * figure), with LC_ALL=C.UTF-8 (a '.' decimal sign, UTF-8 labels) and stdout to /dev/null; its
 * stderr is kept (the first 1 KiB: gnuplot's first complaint explains the rest). A non-zero exit,
 * a signal, or an expected output file missing or empty is an error naming the script and quoting
 * gnuplot. Everything the child needs is built before fork(): after it, only async-signal-safe
 * calls. */
#ifndef LL_GNUPLOT_H
#define LL_GNUPLOT_H

#include "core.h"

/* The first executable `gnuplot` on PATH, into out; 0 when there is none (the caller writes the
 * scripts and data anyway and says how to install it). */
int gnuplot_find(char *out, size_t cap);

/* Renders dir/name.gp with the program `gnuplot`, then checks that dir/name.EXT exists and is
 * non-empty for each of the n_ext extensions (e.g. "pdf", "svg", "png"). Stale outputs are removed
 * first, so an old file cannot pass for this run's. */
LLStatus gnuplot_render(const char *gnuplot, const char *dir, const char *name, const char *const *ext, int n_ext,
                        LLError *err);

#endif
