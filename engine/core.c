/* core: see core.h. */
#define _POSIX_C_SOURCE 200809L
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libgen.h>

LLStatus ll_err(LLError *err, LLStatus code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

LLStatus ll_err_prefix(LLError *err, const char *fmt, ...) {
    if (!err) return LL_OK;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n + 2 < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %.*s", (int)(sizeof err->msg - (size_t)n - 3), old);
    return err->code;
}

const char *ll_status_name(LLStatus s) {
    switch (s) {
    case LL_OK: return "ok";
    case LL_ERR_IO: return "i/o error";
    case LL_ERR_FORMAT: return "bad format";
    case LL_ERR_CONFIG: return "bad configuration";
    case LL_ERR_DIVERGED: return "diverged";
    case LL_ERR_NOMEM: return "out of memory";
    case LL_ERR_BUSY: return "busy";
    case LL_ERR_INTERRUPTED: return "interrupted";
    case LL_ERR_STATE: return "invalid state";
    }
    return "unknown status";
}

void ll_assert_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "loralab: internal error at %s:%d: assertion failed: %s\n", file, line, cond);
    abort();
}

static _Noreturn void oom(size_t bytes, const char *file, int line) {
    fprintf(stderr, "loralab: out of memory allocating %zu bytes at %s:%d\n", bytes, file, line);
    abort();
}

int ll_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int ll_add_ok(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

void *ll_malloc_at(size_t n, size_t size, const char *file, int line) {
    size_t bytes;
    if (!ll_mul_ok(n, size, &bytes)) oom(SIZE_MAX, file, line);
    void *p = malloc(bytes ? bytes : 1);
    if (!p) oom(bytes, file, line);
    return p;
}

void *ll_calloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size, file, line);
    return p;
}

void *ll_realloc_at(void *p, size_t n, size_t size, const char *file, int line) {
    size_t bytes;
    if (!ll_mul_ok(n, size, &bytes)) oom(SIZE_MAX, file, line);
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) oom(bytes, file, line);
    return q;
}

float *ll_alloc_floats_at(size_t n, const char *file, int line) {
    size_t bytes;
    if (!ll_mul_ok(n ? n : 1, sizeof(float), &bytes)) oom(SIZE_MAX, file, line);
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) oom(bytes, file, line);
    memset(p, 0, bytes);
    return p;
}

char *ll_strdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *d = ll_malloc_at(n, 1, file, line);
    memcpy(d, s, n);
    return d;
}

void ll_free(void *p) { free(p); }

void ll_log(const LLLog *log, LLLogLevel level, const char *fmt, ...) {
    if (!log || !log->fn) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log->fn(log->user, level, buf);
}

double ll_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ll_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* What a path that is not a regular file is, for the message that refuses it. */
static const char *file_kind(mode_t m) {
    return S_ISDIR(m)    ? "a folder"
           : S_ISFIFO(m) ? "a FIFO (named pipe)"
           : S_ISSOCK(m) ? "a socket"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
                         : "a special file";
}

LLStatus ll_open_regular(const char *path, int *fd, size_t *size, LLError *err) {
    *fd = -1;
    if (size) *size = 0;
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever, before fstat could
     * tell what it is. O_NOCTTY: a terminal device never becomes our controlling terminal. */
    int f;
    do f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    while (f < 0 && errno == EINTR);
    if (f < 0) {
        int e = errno;
        return ll_err(err, LL_ERR_IO, "cannot open '%s': %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return ll_err(err, LL_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return ll_err(err, LL_ERR_IO, "cannot read '%s': it is %s, not a file", path, file_kind(sb.st_mode));
    }
    if (sb.st_size < 0 || (uintmax_t)sb.st_size >= (uintmax_t)SIZE_MAX) {
        close(f);
        return ll_err(err, LL_ERR_IO, "cannot read '%s': its size (%jd bytes) does not fit in memory", path,
                      (intmax_t)sb.st_size);
    }
    /* back to blocking reads: the caller reads as from any regular file */
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(f);
        return ll_err(err, LL_ERR_IO, "cannot open '%s': %s", path, strerror(e));
    }
    *fd = f;
    if (size) *size = (size_t)sb.st_size;
    return LL_OK;
}

LLStatus ll_read_file(const char *path, char **out, size_t *len, LLError *err) {
    *out = NULL;
    if (len) *len = 0;
    int fd;
    size_t n;
    LLStatus st = ll_open_regular(path, &fd, &n, err);
    if (st) return st;
    /* the size comes from fstat of a regular file, so it is the file's, not a guess; still, plain
     * malloc: a file larger than memory is the user's input, not a bug, so it is refused, not fatal */
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return ll_err(err, LL_ERR_NOMEM, "cannot read '%s': %zu bytes do not fit in memory", path, n);
    }
    size_t got = 0;
    int e = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) e = errno;
        if (r <= 0) break; /* an error, or the file shrank while read */
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return ll_err(err, LL_ERR_IO, "read of '%s' stopped after %zu of %zu bytes%s%s", path, got, n,
                      e ? ": " : " (the file shrank while it was read)", e ? strerror(e) : "");
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return LL_OK;
}

void ll_fsync_dir_of(const char *path) {
    char *copy = ll_strdup(path);
    int fd = open(dirname(copy), O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

LLStatus ll_write_file_atomic(const char *path, const void *data, size_t len, LLError *err) {
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) return ll_err(err, LL_ERR_IO, "path too long: '%s'", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ll_err(err, LL_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return ll_err(err, LL_ERR_IO, "cannot write '%s': %s (the previous file is untouched)",
                          path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return ll_err(err, LL_ERR_IO, "cannot flush '%s': %s (the previous file is untouched)",
                      path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ll_err(err, LL_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    ll_fsync_dir_of(path);
    return LL_OK;
}

LLStatus ll_mkdirs(const char *path, LLError *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return ll_err(err, LL_ERR_IO, "bad folder path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return ll_err(err, LL_ERR_IO, "cannot create folder '%s': %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    return LL_OK;
}

