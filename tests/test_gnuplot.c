/* Tests of the writing of other languages (analysis/escape.c, analysis/gnuplot.c) and of running
 * gnuplot in its sandbox.
 *
 * core:    exact outputs of gp_quote and gp_comment (a quote doubled, a newline and other control
 *          characters never raw, a comment's trailing backslash turned), tex_text, md_text,
 *          html_text and esc_file_stem on hostile strings; and the script checker of
 *          tests/gp_check.h, which the report tests and the fuzz target trust, on scripts it must
 *          refuse (system(), `!`, a backquote, a macro, a pipe as output or plot source, a comment
 *          swallowing the next line, a string left open) and on one it must accept.
 * sandbox: gnuplot_render runs hand-written hostile scripts under the seccomp filter: system(),
 *          `!cmd`, a backquote, `set output '|cmd'`, `load '<cmd'` and `plot '<cmd'` start no
 *          process (the file each would create stays absent), while the same gnuplot without the
 *          filter does run such a command (so the test can fail); an ordinary script still renders
 *          PDF, SVG and PNG under the filter. Where the kernel refuses the filter (simulated by an
 *          outer filter in a child that makes prctl(PR_SET_SECCOMP) fail) the figure still renders
 *          and the render says why it ran unconfined. Needs gnuplot (else "SKIPPED: ...").
 */
#define _GNU_SOURCE
#define TU_TMP_NAME "gnuplot"
#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analysis/escape.h"
#include "analysis/gnuplot.h"
#include "core.h"
#include "gp_check.h"
#include "util.h"

/* The text fn writes for s (a static buffer, valid until the next call). */
static const char *esc(void (*fn)(TextBuf *, const char *), const char *s) {
    static char out[1024];
    TextBuf b = {0};
    fn(&b, s);
    snprintf(out, sizeof out, "%s", b.p ? b.p : "");
    tb_free(&b);
    return out;
}

START_TEST(t_gp_quote) {
    ck_assert_str_eq(esc(gp_quote, "plain"), "'plain'");
    ck_assert_str_eq(esc(gp_quote, ""), "''");
    ck_assert_str_eq(esc(gp_quote, "it's"), "'it''s'");
    ck_assert_str_eq(esc(gp_quote, "'"), "''''");
    /* Backslashes, double quotes, backquotes and @ are literal inside single quotes. */
    ck_assert_str_eq(esc(gp_quote, "a\\b\"c`d`@e\\"), "'a\\b\"c`d`@e\\'");
    ck_assert_str_eq(esc(gp_quote, "lora\nsystem(\"touch PWNED\")"), "'lora system(\"touch PWNED\")'");
    ck_assert_str_eq(esc(gp_quote, "a\rb\tc\x01" "d\x7f" "e"), "'a b c?d?e'");
    ck_assert_str_eq(esc(gp_quote, "α ± é"), "'α ± é'");
}
END_TEST

START_TEST(t_gp_comment) {
    TextBuf b = {0};
    gp_comment(&b, "from %s (sweep: %s)", "x\nsystem(\"touch PWNED\")", "s\\");
    gp_comment(&b, "sweep: %s", "s\\");
    gp_comment(&b, "%s", "ends in two \\\\");
    gp_comment(&b, "%s", "a\\ b\r\n");
    ck_assert_str_eq(b.p, "# from x system(\"touch PWNED\") (sweep: s\\)\n"
                          "# sweep: s/\n"
                          "# ends in two //\n"
                          "# a\\ b  \n");
    tb_free(&b);
}
END_TEST

START_TEST(t_text_escapes) {
    ck_assert_str_eq(esc(tex_text, "a_b & 50% {x} #1 $y ~ ^ \\end{table}"),
                     "a\\_b \\& 50\\% \\{x\\} \\#1 \\$y \\textasciitilde{} \\textasciicircum{} "
                     "\\textbackslash{}end\\{table\\}");
    ck_assert_str_eq(esc(tex_text, "^^5c<a>|\n\n\\par"),
                     "\\textasciicircum{}\\textasciicircum{}5c\\textless{}a\\textgreater{}\\textbar{}  "
                     "\\textbackslash{}par");
    ck_assert_str_eq(esc(tex_text, "1 ± 2, α"), "1 $\\pm$ 2, $\\alpha$");
    ck_assert_str_eq(esc(md_text, "a|b\nc *d* _e_ `f` [g](h) <script> \\"),
                     "a\\|b c \\*d\\* \\_e\\_ \\`f\\` \\[g\\](h) \\<script\\> \\\\");
    ck_assert_str_eq(esc(md_text, "--> done"), "--\\> done");
    ck_assert_str_eq(esc(html_text, "<img src=x onerror='a'>&\"\n\x1b[31m"),
                     "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot; ?[31m");
    char stem[32];
    esc_file_stem(stem, sizeof stem, "lora\nsystem(\"x\")");
    ck_assert_str_eq(stem, "lora_system__x__");
    esc_file_stem(stem, sizeof stem, "../../etc/passwd");
    ck_assert_str_eq(stem, "_._.._etc_passwd");
    esc_file_stem(stem, sizeof stem, "");
    ck_assert_str_eq(stem, "_");
    esc_file_stem(stem, sizeof stem, ".");
    ck_assert_str_eq(stem, "_");
    esc_file_stem(stem, 8, "LoRA-v2.1_long_name");
    ck_assert_str_eq(stem, "LoRA-v2");
    ck_assert(gp_stem_ok("curves_lora") && gp_stem_ok("a.b-c_D9"));
    ck_assert(!gp_stem_ok("") && !gp_stem_ok(".x") && !gp_stem_ok("a b") && !gp_stem_ok("a/b") && !gp_stem_ok("a'"));
}
END_TEST

/* ---- the checker the report tests and the fuzz target rely on ------------------------------- */

static const char *const GOOD_SCRIPT =
    "# curves: a title with system(\"x\") and `y` in a comment\n"
    "reset\nset encoding utf8\n"
    "set linetype 1 lc rgb '#0072B2' lw 1.5 pt 7 ps 1.0 dt 1\n"
    "if (!exists(\"formats\")) formats = \"pdf svg png\"\n"
    "do for [fmt in formats] {\n"
    "    if (fmt eq \"pdf\") { set terminal pdfcairo size 7.00in,3.80in font 'Sans,9' }\n"
    "    set termoption noenhanced\n"
    "    set output 'curves.' . fmt\n"
    "    reset\n"
    "    set title 'it''s system(\"x\"); `y` @z # not a comment \\'\n"
    "    set xtics ('q,v' 0, 'a'' ; b' 1)\n"
    "    full_mean = 1.5\n"
    "    plot 'curves.dat' index 0 using 1:($2-$3):($2+$3) with filledcurves notitle, \\\n"
    "         '' index 1 using 1:2 title 'x, <y>', '+' using 1:(full_mean) with lines notitle, \\\n"
    "         keyentry with lines title '|z'\n"
    "    unset output\n"
    "}\n"
    "unset output\n";

START_TEST(t_checker) {
    char why[256];
    ck_assert_msg(gp_check_script(GOOD_SCRIPT, strlen(GOOD_SCRIPT), why, sizeof why), "good script refused: %s", why);
    static const char *const bad[] = {
        "reset\nsystem(\"touch X\")\n",
        "set title 'a'\n!touch X\n",
        "set title \"`touch X`\"\n",
        "x = 1\n",
        "set title 'a' ; load 'x.gp'\n",
        "set output '|touch X'\n",
        "set output 'a.' . fmt . system('x')\n",
        "plot '<touch X' using 1:2\n",
        "plot 'a.dat' using 1:2, '<touch X'\n",
        "# a comment that goes on \\\nsystem('touch X')\n",
        "set title 'left open\nsystem('touch X')\n",
        "set title @macro\n",
        "set print '|touch X'\n",
        "set title sprintf('%s', 'x')\n",
        "if (1) system('touch X')\n",
        "set title 'a\001b'\n",
        "plot 'curves.dat' title 'x' \\ system('y')\n",
        "call 'x.gp'\n",
        "import f(x) from 'lib.so'\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!gp_check_script(bad[i], strlen(bad[i]), why, sizeof why), "accepted: %s", bad[i]);
    static const char *const data_ok = "# a: comment \\ inside\n1 2.5 -3e-05 nan\n\n\n0 NaN 0 0 0xffffff inf\n";
    ck_assert_msg(gp_check_data(data_ok, strlen(data_ok), why, sizeof why), "%s", why);
    static const char *const data_bad[] = {"# x\nsystem(\"touch X\")\n", "# ends in \\\n1 2\n", "1 2 lora\n",
                                           "1\t2\n"};
    for (size_t i = 0; i < sizeof data_bad / sizeof data_bad[0]; i++)
        ck_assert_msg(!gp_check_data(data_bad[i], strlen(data_bad[i]), why, sizeof why), "accepted: %s", data_bad[i]);
}
END_TEST

/* ---- sandbox --------------------------------------------------------------------------------- */

static const char *const FORMATS[] = {"pdf", "svg", "png"};

/* An ordinary figure: must render in all three formats under the filter. */
static void write_ok_script(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/ok.dat", dir);
    tu_write_text(p, "1 1\n2 4\n3 9\n");
    TextBuf b = {0};
    gp_comment(&b, "ok: a plain figure");
    gp_script_head(&b, "ok");
    gp_formats_begin(&b, "ok", 4, 3);
    tb_puts(&b, "    set title ");
    gp_quote(&b, "squares, it's α");
    tb_puts(&b, "\n    plot 'ok.dat' using 1:2 with linespoints title 'x²'\n");
    gp_formats_end(&b);
    LLError err = {0};
    CK_OK(tb_save(&b, dir, "ok.gp", &err));
    tb_free(&b);
}

START_TEST(t_sandbox) {
    char gnuplot[1024];
    if (!gnuplot_find(gnuplot, sizeof gnuplot)) {
        printf("SKIPPED: the sandbox not checked: gnuplot not installed (scripts/deps.sh)\n");
        return;
    }
    char dir[512], p[600];
    tu_tmpdir_new(dir, sizeof dir);
    write_ok_script(dir);
    GnuplotSandbox sb = {0, "unset"};
    LLError err = {0};
    CK_OK(gnuplot_render(gnuplot, dir, "ok", FORMATS, 3, &sb, &err));
    if (!sb.sandboxed) {
        printf("SKIPPED: hostile scripts not run: gnuplot ran without its sandbox here (%s)\n", sb.why_not);
        return;
    }
    ck_assert_str_eq(sb.why_not, "");

    /* Each script would create its marker file through a process; each ends with an ordinary
     * plot, so the render fails only if gnuplot stops at the refused command. */
    static const struct {
        const char *name, *marker, *text;
    } hostile[] = {
        {"h_system", "M_system", "dummy = system(\"touch M_system\")\n"},
        {"h_bang", "M_bang", "!touch M_bang\n"},
        {"h_backquote", "M_backquote", "x = \"`touch M_backquote`\"\n"},
        {"h_pipe_out", "M_pipe_out", "set terminal svg\nset output '|touch M_pipe_out'\nplot x\nunset output\n"},
        {"h_load", "M_load", "load '<touch M_load'\n"},
        {"h_plot", "M_plot", "set terminal svg\nset output 'h_plot.svg'\nplot '<touch M_plot; echo 1 1' using "
                             "1:2\nunset output\n"},
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        snprintf(p, sizeof p, "%s/%s.gp", dir, hostile[i].name);
        tu_write_text(p, hostile[i].text);
        sb.sandboxed = 0;
        LLError e = {0};
        LLStatus st = gnuplot_render(gnuplot, dir, hostile[i].name, NULL, 0, &sb, &e);
        ck_assert_int_eq(sb.sandboxed, 1);
        snprintf(p, sizeof p, "%s/%s", dir, hostile[i].marker);
        ck_assert_msg(!ll_file_exists(p), "%s ran a command under the filter (render: %s %s)", hostile[i].name,
                      ll_status_name(st), e.msg);
    }
    /* The same kind of script without the filter does create its file: the check above can fail. */
    snprintf(p, sizeof p, "cd '%s' && gnuplot h_system.gp >/dev/null 2>&1", dir);
    int rc = system(p);
    ck_assert(WIFEXITED(rc));
    snprintf(p, sizeof p, "%s/M_system", dir);
    ck_assert_msg(ll_file_exists(p), "gnuplot without the filter did not run system(): the test proves nothing");
    tu_tmpdir_remove(dir);
}
END_TEST

/* A kernel that refuses the filter (simulated: an outer seccomp filter, installed in a forked
 * child, makes prctl(PR_SET_SECCOMP) fail with EINVAL, as a kernel built without
 * CONFIG_SECCOMP_FILTER does): the figure is rendered all the same, and the render says that and
 * why it ran without the sandbox. */
START_TEST(t_sandbox_unavailable) {
    char gnuplot[1024];
    if (!gnuplot_find(gnuplot, sizeof gnuplot)) {
        printf("SKIPPED: the sandbox fallback not checked: gnuplot not installed (scripts/deps.sh)\n");
        return;
    }
#if defined(__x86_64__)
    char dir[512];
    tu_tmpdir_new(dir, sizeof dir);
    write_ok_script(dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 0, 3),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_SECCOMP, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
            _exit(10);
        GnuplotSandbox sb = {1, ""};
        LLError err = {0};
        LLStatus st = gnuplot_render(gnuplot, dir, "ok", FORMATS, 3, &sb, &err);
        if (st != LL_OK) _exit(11);
        if (sb.sandboxed) _exit(12);
        if (!strstr(sb.why_not, "refused the seccomp filter") || !strstr(sb.why_not, "Invalid argument")) _exit(13);
        _exit(0);
    }
    int wst = 0;
    ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
    ck_assert_msg(WIFEXITED(wst), "the child died by a signal");
    ck_assert_msg(WEXITSTATUS(wst) != 10, "cannot install the outer filter here");
    ck_assert_msg(WEXITSTATUS(wst) == 0,
                  "exit %d: 11 render failed, 12 claimed a sandbox, 13 the reason is not said", WEXITSTATUS(wst));
    tu_tmpdir_remove(dir);
#else
    printf("SKIPPED: the sandbox fallback is checked on x86-64 only\n");
#endif
}
END_TEST

Suite *gnuplot_suite(void) {
    Suite *s = suite_create("gnuplot");
    TCase *core = tu_tcase(s, "core", 0, 10);
    tcase_add_test(core, t_gp_quote);
    tcase_add_test(core, t_gp_comment);
    tcase_add_test(core, t_text_escapes);
    tcase_add_test(core, t_checker);
    TCase *sandbox = tu_tcase(s, "sandbox", 1, 60);
    tcase_add_test(sandbox, t_sandbox);
    tcase_add_test(sandbox, t_sandbox_unavailable);
    return s;
}
