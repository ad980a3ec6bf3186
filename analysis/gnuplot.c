/* gnuplot: see gnuplot.h. */
#define _GNU_SOURCE
#include "analysis/gnuplot.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

extern char **environ;

/* ---- writing --------------------------------------------------------------------------------- */

void gp_quote(TextBuf *b, const char *s) {
    tb_putc(b, '\'');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\'') tb_puts(b, "''");
        else tb_putc(b, esc_clean_char(*p));
    }
    tb_putc(b, '\'');
}

void gp_comment(TextBuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    LL_ASSERT(n >= 0);
    char *line = ll_malloc((size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(line, (size_t)n + 1, fmt, ap);
    va_end(ap);
    esc_clean(line);
    /* gnuplot joins a line that ends in a backslash with the next one, comments included. */
    for (int i = n - 1; i >= 0 && line[i] == '\\'; i--) line[i] = '/';
    tb_puts(b, "# ");
    tb_puts(b, line);
    tb_putc(b, '\n');
    free(line);
}

int gp_stem_ok(const char *stem) {
    size_t n = strlen(stem);
    if (n == 0 || n > 64 || stem[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = stem[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.'))
            return 0;
    }
    return 1;
}

void gp_script_head(TextBuf *b, const char *stem) {
    LL_ASSERT(gp_stem_ok(stem));
    tb_printf(b,
              "# Data: %s.dat. Run `gnuplot %s.gp` in this folder to redraw %s.pdf, %s.svg and\n"
              "# %s.png, or `gnuplot -e 'formats=\"png\"' %s.gp` for one format.\n",
              stem, stem, stem, stem, stem, stem);
    tb_puts(b, "reset\nset encoding utf8\n");
}

void gp_formats_begin(TextBuf *b, const char *stem, double w_in, double h_in) {
    gp_formats_begin_font(b, stem, w_in, h_in, 9);
}

void gp_formats_begin_font(TextBuf *b, const char *stem, double w_in, double h_in, int font_pt) {
    LL_ASSERT(gp_stem_ok(stem) && font_pt > 0 && font_pt < 100);
    tb_puts(b, "if (!exists(\"formats\")) formats = \"pdf svg png\"\n");
    tb_puts(b, "do for [fmt in formats] {\n");
    tb_printf(b, "    if (fmt eq \"pdf\") { set terminal pdfcairo size %.2fin,%.2fin font 'Sans,%d' }\n", w_in, h_in,
              font_pt);
    tb_printf(b, "    if (fmt eq \"svg\") { set terminal svg size %d,%d font 'Sans,%d' background '#ffffff' }\n",
              (int)(w_in * 96), (int)(h_in * 96), (font_pt * 11 + 4) / 9);
    tb_printf(b, "    if (fmt eq \"png\") { set terminal pngcairo size %d,%d font 'Sans,%d' }\n", (int)(w_in * 150),
              (int)(h_in * 150), (font_pt * 13 + 4) / 9);
    tb_puts(b, "    set termoption noenhanced\n");
    tb_printf(b, "    set output '%s.' . fmt\n", stem);
    tb_puts(b, "    reset\n");
}

void gp_formats_end(TextBuf *b) { tb_puts(b, "    unset output\n}\nunset output\n"); }

/* ---- the sandbox ----------------------------------------------------------------------------- */

#if defined(__x86_64__)
#define GP_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define GP_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#define GP_FILTER_MAX 32

typedef struct {
    struct sock_filter ins[GP_FILTER_MAX];
    unsigned short n;
} Filter;

static void emit(Filter *f, struct sock_filter ins) {
    LL_ASSERT(f->n < GP_FILTER_MAX);
    f->ins[f->n++] = ins;
}

#ifdef GP_AUDIT_ARCH
/* "if nr == sys: return ret", with nr in the accumulator; position-independent (it jumps over
 * its own return only). */
static void deny_nr(Filter *f, uint32_t sys, uint32_t ret) {
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, sys, 0, 1));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret));
}
#endif

/* Builds the filter (see gnuplot.h) into f; exec_path is the pointer the child passes to
 * execve. Returns 0 when this architecture has no filter here. Both supported architectures are
 * little-endian: the low half of a 64-bit argument comes first. */
static int build_filter(Filter *f, const char *exec_path) {
    f->n = 0;
#ifndef GP_AUDIT_ARCH
    (void)exec_path;
    return 0;
#else
    const uint32_t EPERM_RET = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    const uint32_t ENOSYS_RET = SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA);
    const uint32_t arg0_lo = offsetof(struct seccomp_data, args), arg0_hi = arg0_lo + 4;
    uint64_t path = (uint64_t)(uintptr_t)exec_path;
    emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, GP_AUDIT_ARCH, 1, 0));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, EPERM_RET));
    emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    /* x32 system calls carry the same audit arch and this bit in their number. */
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, EPERM_RET));
#endif
#ifdef __NR_fork
    deny_nr(f, __NR_fork, EPERM_RET);
#endif
#ifdef __NR_vfork
    deny_nr(f, __NR_vfork, EPERM_RET);
#endif
    deny_nr(f, __NR_clone3, ENOSYS_RET);
    deny_nr(f, __NR_execveat, EPERM_RET);
    /* execve: only with gnuplot's own path pointer (the child's exec of gnuplot). */
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execve, 0, 6));
    emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg0_lo));
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)path, 0, 3));
    emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg0_hi));
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(path >> 32), 0, 1));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, EPERM_RET));
    /* clone: threads (CLONE_THREAD) only. */
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4));
    emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg0_lo));
    emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, EPERM_RET));
    emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    return 1;
#endif
}

/* In the child: installs the filter; 0, or the errno that refused it (ENOSYS: no filter for this
 * architecture). Async-signal-safe. */
static int sandbox_child(const Filter *f) {
    if (f->n == 0) return ENOSYS;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
    struct sock_fprog prog = {f->n, (struct sock_filter *)f->ins};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) return errno;
    return 0;
}

/* ---- running --------------------------------------------------------------------------------- */

int gnuplot_find(char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len > 0 && len + 10 < cap) {
            snprintf(out, cap, "%.*s/gnuplot", (int)len, path);
            struct stat st;
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0) return 1;
        }
        path += len;
        if (*path == ':') path++;
    }
    out[0] = '\0';
    return 0;
}

/* Reads fd to EOF, keeping the first cap - 1 bytes in buf (NUL-terminated); returns their count. */
static size_t drain(int fd, char *buf, size_t cap) {
    size_t len = 0;
    for (;;) {
        char chunk[512];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
        memcpy(buf + len, chunk, take);
        len += take;
    }
    buf[len] = '\0';
    return len;
}

LLStatus gnuplot_render(const char *gnuplot, const char *dir, const char *name, const char *const *ext, int n_ext,
                        GnuplotSandbox *sb, LLError *err) {
    char script[256], path[4096];
    snprintf(script, sizeof script, "%s.gp", name);
    for (int i = 0; i < n_ext; i++) {
        snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext[i]);
        unlink(path);
    }
    size_t ne = 0;
    while (environ[ne]) ne++;
    char **envp = ll_malloc(ne + 2, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "LC_ALL=", 7) != 0) envp[k++] = environ[i];
    envp[k++] = "LC_ALL=C.UTF-8";
    envp[k] = NULL;
    char *argv[] = {"gnuplot", script, NULL};
    Filter filter;
    build_filter(&filter, gnuplot);
    int pfd[2], sfd[2]; /* gnuplot's stderr; the child's sandbox status (closed by exec) */
    if (pipe(pfd) != 0) {
        ll_free(envp);
        return ll_err(err, LL_ERR_IO, "cannot run gnuplot: pipe: %s", strerror(errno));
    }
    if (pipe2(sfd, O_CLOEXEC) != 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        ll_free(envp);
        return ll_err(err, LL_ERR_IO, "cannot run gnuplot: pipe: %s", strerror(e));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        close(sfd[0]);
        close(sfd[1]);
        ll_free(envp);
        return ll_err(err, LL_ERR_IO, "cannot run gnuplot: fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(pfd[0]);
        close(sfd[0]);
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);
        }
        dup2(pfd[1], 2);
        if (chdir(dir) != 0) _exit(126);
        int why = sandbox_child(&filter);
        ssize_t w = write(sfd[1], &why, sizeof why);
        (void)w;
        execve(gnuplot, argv, envp);
        static const char msg[] = "exec of gnuplot failed\n";
        w = write(2, msg, sizeof msg - 1);
        _exit(127);
    }
    close(pfd[1]);
    close(sfd[1]);
    ll_free(envp);
    /* Read stderr to EOF so gnuplot never blocks on a full pipe; keep the first complaint. */
    char said[1024];
    size_t len = drain(pfd[0], said, sizeof said);
    close(pfd[0]);
    int why = -1;
    char st_buf[sizeof why + 1];
    if (drain(sfd[0], st_buf, sizeof st_buf) == sizeof why) memcpy(&why, st_buf, sizeof why);
    close(sfd[0]);
    while (len > 0 && (said[len - 1] == '\n' || said[len - 1] == ' ')) said[--len] = '\0';
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return ll_err(err, LL_ERR_IO, "waiting for gnuplot: %s", strerror(errno));
    if (sb) {
        sb->sandboxed = why == 0;
        if (why == 0) sb->why_not[0] = '\0';
        else if (why == ENOSYS && filter.n == 0)
            snprintf(sb->why_not, sizeof sb->why_not, "no seccomp filter is known for this CPU architecture");
        else if (why > 0)
            snprintf(sb->why_not, sizeof sb->why_not, "the kernel refused the seccomp filter: %s", strerror(why));
        else snprintf(sb->why_not, sizeof sb->why_not, "the child did not report its sandbox");
    }
    if (!WIFEXITED(status))
        return ll_err(err, LL_ERR_IO, "gnuplot was killed by signal %d on %s/%s: %s", WTERMSIG(status), dir, script,
                      len ? said : "(no message)");
    if (WEXITSTATUS(status) != 0)
        return ll_err(err, LL_ERR_IO, "gnuplot failed on %s/%s (exit status %d): %s", dir, script, WEXITSTATUS(status),
                      len ? said : "(no message)");
    for (int i = 0; i < n_ext; i++) {
        snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext[i]);
        struct stat st;
        if (stat(path, &st) != 0 || st.st_size == 0)
            return ll_err(err, LL_ERR_IO, "gnuplot ran %s/%s without error but wrote no %s.%s%s%s", dir, script, name,
                          ext[i], len ? "; it said: " : "", len ? said : "");
    }
    return LL_OK;
}
