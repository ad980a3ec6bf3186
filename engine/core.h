/* core: status codes, error messages, always-on asserts, checked allocation, logging.
 *
 * Every engine function a user can make fail returns an LLStatus and, on failure, fills an
 * LLError with one sentence that names what and where (a path, a tensor, a key) and, where one
 * helps, a hint. The engine never exits, never prints unless a log callback is set, and keeps no
 * globals: the log callback travels in the objects that use it.
 *
 * Bugs are not statuses: LL_ASSERT fires on broken invariants (always on, also in release
 * builds), and the allocation wrappers abort with the byte count and the call site when memory
 * runs out, because no caller could do anything useful with a NULL.
 */
#ifndef LL_CORE_H
#define LL_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

typedef enum {
    LL_OK = 0,
    LL_ERR_IO,       /* a file could not be opened, read, written or renamed */
    LL_ERR_FORMAT,   /* a file's content is malformed (safetensors, JSON, tokenizer, data) */
    LL_ERR_CONFIG,   /* a configuration value is unknown, of the wrong type or impossible */
    LL_ERR_DIVERGED, /* the loss or a gradient became NaN or Inf */
    LL_ERR_NOMEM,    /* a model or batch would not fit in memory (refused before allocation) */
    LL_ERR_BUSY,     /* a database stayed locked past the busy timeout */
    LL_ERR_INTERRUPTED, /* stopped by a signal or a wall-clock bound */
    LL_ERR_STATE     /* a call that is not valid in the object's current state */
} LLStatus;

typedef struct {
    LLStatus code;
    char msg[1024];
} LLError;

/* Fills err (if not NULL) and returns code, so that `return ll_err(err, LL_ERR_IO, ...)` reads
 * naturally. A later call overwrites an earlier message. */
LLStatus ll_err(LLError *err, LLStatus code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes an existing message with context ("loading model folder X: ..."). */
LLStatus ll_err_prefix(LLError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ll_status_name(LLStatus s);

/* Always-on assert: prints file, line and condition, then aborts. For invariants only. */
#define LL_ASSERT(cond)                                                                      \
    do {                                                                                     \
        if (!(cond)) ll_assert_fail(__FILE__, __LINE__, #cond);                             \
    } while (0)
_Noreturn void ll_assert_fail(const char *file, int line, const char *cond);

/* Checked allocation: aborts with the byte count and call site on failure. ll_calloc and
 * ll_malloc check n*size for overflow. Aligned allocations are 64-byte aligned (AVX-512 lines). */
#define ll_malloc(n, size) ll_malloc_at((n), (size), __FILE__, __LINE__)
#define ll_calloc(n, size) ll_calloc_at((n), (size), __FILE__, __LINE__)
#define ll_realloc(p, n, size) ll_realloc_at((p), (n), (size), __FILE__, __LINE__)
#define ll_alloc_floats(n) ll_alloc_floats_at((n), __FILE__, __LINE__)
#define ll_strdup(s) ll_strdup_at((s), __FILE__, __LINE__)
void *ll_malloc_at(size_t n, size_t size, const char *file, int line);
void *ll_calloc_at(size_t n, size_t size, const char *file, int line);
void *ll_realloc_at(void *p, size_t n, size_t size, const char *file, int line);
float *ll_alloc_floats_at(size_t n, const char *file, int line); /* zeroed, 64-byte aligned */
char *ll_strdup_at(const char *s, const char *file, int line);
void ll_free(void *p);

/* Overflow-checked size arithmetic for sizes read from files: returns 0 on overflow. */
int ll_mul_ok(size_t a, size_t b, size_t *out);
int ll_add_ok(size_t a, size_t b, size_t *out);

/* Logging: objects that may talk carry an LLLog; a NULL fn is silence. */
typedef enum { LL_LOG_DEBUG, LL_LOG_INFO, LL_LOG_WARN } LLLogLevel;
typedef struct {
    void (*fn)(void *user, LLLogLevel level, const char *msg);
    void *user;
} LLLog;
void ll_log(const LLLog *log, LLLogLevel level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic seconds, for throughput and ETA. */
double ll_now(void);

/* Whole-file helpers. ll_read_file returns a NUL-terminated buffer (len excludes the NUL).
 * ll_write_file_atomic writes PATH.tmp.PID, fsyncs it, renames it over PATH and fsyncs the
 * folder, so a crash or a full disk leaves either the old file or the new one, never half. */
LLStatus ll_read_file(const char *path, char **out, size_t *len, LLError *err);
/* Every file the project reads is opened here (ll_read_file too): only a regular file is opened.
 * A folder, a FIFO, a socket or a device gives LL_ERR_IO naming the path and what it is, and never
 * blocks (a FIFO is opened with O_NONBLOCK, cleared again once fstat says what it is). On LL_OK *fd
 * is open for blocking reads, close-on-exec, and *size (if not NULL) is the file's size. */
LLStatus ll_open_regular(const char *path, int *fd, size_t *size, LLError *err);
LLStatus ll_write_file_atomic(const char *path, const void *data, size_t len, LLError *err);
/* fsyncs the folder that holds path (after a rename into it), best effort. */
void ll_fsync_dir_of(const char *path);
/* Folders written whole, and the rule that only loralab's own are replaced: see outdir.h. */
/* Creates a folder and its parents (mkdir -p). */
LLStatus ll_mkdirs(const char *path, LLError *err);
int ll_file_exists(const char *path);

#endif
