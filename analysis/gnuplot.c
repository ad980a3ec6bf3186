/* gnuplot: see gnuplot.h. */
#define _DEFAULT_SOURCE
#include "gnuplot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

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

LLStatus gnuplot_render(const char *gnuplot, const char *dir, const char *name, const char *const *ext, int n_ext,
                        LLError *err) {
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
    int pfd[2];
    if (pipe(pfd) != 0) {
        ll_free(envp);
        return ll_err(err, LL_ERR_IO, "cannot run gnuplot: pipe: %s", strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        ll_free(envp);
        return ll_err(err, LL_ERR_IO, "cannot run gnuplot: fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(pfd[0]);
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);
        }
        dup2(pfd[1], 2);
        if (chdir(dir) != 0) _exit(126);
        execve(gnuplot, argv, envp);
        static const char msg[] = "exec of gnuplot failed\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    close(pfd[1]);
    ll_free(envp);
    char said[1024];
    size_t len = 0;
    for (;;) { /* read to EOF so gnuplot never blocks on a full pipe; keep the first complaint */
        char chunk[512];
        ssize_t n = read(pfd[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size_t take = (size_t)n < sizeof said - 1 - len ? (size_t)n : sizeof said - 1 - len;
        memcpy(said + len, chunk, take);
        len += take;
    }
    said[len] = '\0';
    close(pfd[0]);
    while (len > 0 && (said[len - 1] == '\n' || said[len - 1] == ' ')) said[--len] = '\0';
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return ll_err(err, LL_ERR_IO, "waiting for gnuplot: %s", strerror(errno));
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
