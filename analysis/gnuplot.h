/* gnuplot: the one writer of gnuplot syntax for what is not a literal of the code, and the runner
 * of `gnuplot NAME.gp`.
 *
 * Writing. The report and the LoRA analysis write each figure as NAME.gp + NAME.dat. Every string
 * that reaches a script or a data file and is not a literal of the code (a method, targets, a
 * variant, a sweep name, a path, a title or legend built from them) goes through gp_quote (a
 * single-quoted string) or gp_comment (a comment line); NAME is a file stem of [A-Za-z0-9._-]
 * (esc_file_stem), checked here. What that guarantees, for any input bytes:
 *   - a single-quoted string is closed where it was opened: gnuplot's only escape there is '' for
 *     ', and no control character is written raw (escape.h's rule), so no newline can end the
 *     line early; backquotes and @ are literal inside single quotes (they are not in "...");
 *   - a comment line is one line: no control character, and it never ends in a backslash (which
 *     would continue the comment onto the next line and swallow a command);
 *   so a script holds exactly the statements its writer wrote, whatever the database held.
 *
 * Running. gnuplot has no safe mode: `system()`, `!cmd`, backquotes, `set output '|cmd'`,
 * `load '<cmd'` and `plot '<cmd'` all start a shell. So the child that execs gnuplot first
 * installs a seccomp-BPF filter (prctl PR_SET_NO_NEW_PRIVS, then SECCOMP_MODE_FILTER), inherited
 * by gnuplot: fork, vfork and clone without CLONE_THREAD fail with EPERM, clone3 with ENOSYS (so
 * glibc falls back to clone for threads, which stay allowed), execveat fails, and execve works
 * only with the very path pointer the child passes (gnuplot itself): gnuplot cannot start or
 * become any other program. System calls of another architecture (x86-64: the 32-bit and x32
 * entries) fail with EPERM. Where the kernel or the CPU architecture (only x86-64 and AArch64
 * are known here) offers no seccomp filter, gnuplot runs unconfined and the render says so
 * (GnuplotSandbox.why_not) for the caller's note; that is not an error. The escaping above is the
 * first guard, the filter the second.
 *
 * The child runs in the folder (scripts use relative paths, so running them by hand there redraws
 * the figure), with LC_ALL=C.UTF-8 (a '.' decimal sign, UTF-8 labels) and stdout to /dev/null;
 * its stderr is kept (the first 1 KiB: gnuplot's first complaint explains the rest). A non-zero
 * exit, a signal, or an expected output file missing or empty is an error naming the script and
 * quoting gnuplot. Everything the child needs (the filter too) is built before fork(): after it,
 * only async-signal-safe calls.
 */
#ifndef LL_GNUPLOT_H
#define LL_GNUPLOT_H

#include "analysis/escape.h"
#include "core.h"

/* ---- writing --------------------------------------------------------------------------------- */

/* s as a gnuplot single-quoted string, quotes included. */
void gp_quote(TextBuf *b, const char *s);
/* One comment line "# TEXT\n" of a script or data file, TEXT printf-formatted from fmt (which
 * holds no newline): control characters cleaned, trailing backslashes turned into '/'. */
void gp_comment(TextBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 when stem is a file stem the scripts may name unquoted: non-empty, [A-Za-z0-9._-], no leading
 * '.', at most 64 bytes. */
int gp_stem_ok(const char *stem);
/* After the caller's description comments: how to redraw (comments), `reset`, `set encoding`. */
void gp_script_head(TextBuf *b, const char *stem);
/* Opens the loop over output formats (pdf, svg, png; `gnuplot -e 'formats="png"'` picks some):
 * terminals of w_in x h_in inches (PNG at 150 dpi, SVG at 96 px per inch), enhanced text off,
 * `set output 'STEM.' . fmt`, then `reset` (which keeps terminal and output), so each format is
 * drawn from identical state. gp_formats_end closes it and the output. */
void gp_formats_begin(TextBuf *b, const char *stem, double w_in, double h_in);
/* The same with the PDF's font at font_pt points (gp_formats_begin: 9); SVG and PNG fonts scale
 * with it as they do at 9 (11 and 13). */
void gp_formats_begin_font(TextBuf *b, const char *stem, double w_in, double h_in, int font_pt);
void gp_formats_end(TextBuf *b);

/* ---- running --------------------------------------------------------------------------------- */

/* The first executable `gnuplot` on PATH, into out; 0 when there is none (the caller writes the
 * scripts and data anyway and says how to install it). */
int gnuplot_find(char *out, size_t cap);

/* Whether the child ran under the filter; when not, why (one short clause, "" when sandboxed). */
typedef struct {
    int sandboxed;
    char why_not[128];
} GnuplotSandbox;

/* Renders dir/name.gp with the program `gnuplot` under the filter, then checks that
 * dir/name.EXT exists and is non-empty for each of the n_ext extensions (e.g. "pdf", "svg",
 * "png"). Stale outputs are removed first, so an old file cannot pass for this run's. sb (may be
 * NULL) says how the child ran; it is filled whenever gnuplot was started. */
LLStatus gnuplot_render(const char *gnuplot, const char *dir, const char *name, const char *const *ext, int n_ext,
                        GnuplotSandbox *sb, LLError *err);

#endif
