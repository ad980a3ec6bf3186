/* train_state: see train_state.h. */
#define _POSIX_C_SOURCE 200809L
#include "train_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAGIC "lltrain"
#define BOM 0x01020304u
enum { HEADER = 96, ENTRY = 32, CHUNK = 1 << 20 };

/* ---- the checksum: 64-bit words, FNV-1a's multiply, the length mixed in at the end ---------- */

typedef struct {
    uint64_t h, len;
    unsigned char pend[8];
    int np;
} Sum;

static void sum_init(Sum *s) { memset(s, 0, sizeof *s), s->h = 0xcbf29ce484222325ULL; }

static void sum_word(Sum *s, uint64_t w) {
    s->h ^= w;
    s->h *= 0x100000001b3ULL;
    s->h ^= s->h >> 31;
}

static void sum_update(Sum *s, const void *data, size_t n) {
    const unsigned char *p = data;
    s->len += n;
    while (n > 0 && s->np > 0) {
        s->pend[s->np++] = *p++, n--;
        if (s->np == 8) {
            uint64_t w;
            memcpy(&w, s->pend, 8);
            sum_word(s, w);
            s->np = 0;
        }
    }
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        sum_word(s, w);
    }
    while (n > 0) s->pend[s->np++] = *p++, n--;
}

static uint64_t sum_final(Sum *s) {
    if (s->np > 0) {
        uint64_t w = 0;
        memcpy(&w, s->pend, (size_t)s->np);
        sum_word(s, w);
    }
    sum_word(s, s->len);
    return s->h;
}

/* ---- the header -------------------------------------------------------------------------------- */

static void put_u32(unsigned char *b, uint32_t v) { memcpy(b, &v, 4); }
static uint32_t get_u32(const unsigned char *b) {
    uint32_t v;
    memcpy(&v, b, 4);
    return v;
}

static LLStatus write_all(int fd, const void *data, size_t n, Sum *sum, const char *path, LLError *err) {
    const char *p = data;
    if (sum) sum_update(sum, data, n);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return ll_err(err, LL_ERR_IO, "cannot write the checkpoint '%s': %s", path, strerror(errno));
        p += w, n -= (size_t)w;
    }
    return LL_OK;
}

/* Bytes read (fewer only at the end of the file), or -1 with errno set. */
static ssize_t read_all(int fd, void *data, size_t n) {
    char *p = data;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

LLStatus train_state_save(const char *path, const char *tag, int step, int steps, const TrainStateSection *secs,
                          int n, LLError *err) {
    LL_ASSERT(n >= 0 && n <= TRAIN_STATE_MAX_SECTIONS && strlen(tag) < TRAIN_STATE_TAG);
    char tmp[4096];
    int len = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (len < 0 || (size_t)len >= sizeof tmp) return ll_err(err, LL_ERR_IO, "checkpoint path too long: '%s'", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ll_err(err, LL_ERR_IO, "cannot create the checkpoint '%s': %s", tmp, strerror(errno));
    unsigned char head[HEADER + ENTRY * TRAIN_STATE_MAX_SECTIONS];
    memset(head, 0, sizeof head);
    memcpy(head, MAGIC, sizeof MAGIC);
    put_u32(head + 8, TRAIN_STATE_VERSION);
    put_u32(head + 12, BOM);
    memcpy(head + 16, tag, strlen(tag));
    put_u32(head + 80, (uint32_t)step);
    put_u32(head + 84, (uint32_t)steps);
    put_u32(head + 88, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        unsigned char *e = head + HEADER + (size_t)ENTRY * i;
        LL_ASSERT(strlen(secs[i].name) < TRAIN_STATE_NAME && (secs[i].data || secs[i].bytes == 0));
        memcpy(e, secs[i].name, strlen(secs[i].name));
        uint64_t b = secs[i].bytes;
        memcpy(e + TRAIN_STATE_NAME, &b, 8);
    }
    Sum sum;
    sum_init(&sum);
    LLStatus st = write_all(fd, head, HEADER + (size_t)ENTRY * n, &sum, path, err);
    for (int i = 0; i < n && !st; i++) st = write_all(fd, secs[i].data, secs[i].bytes, &sum, path, err);
    uint64_t h = sum_final(&sum);
    if (!st) st = write_all(fd, &h, 8, NULL, path, err);
    if (!st && fsync(fd) != 0) st = ll_err(err, LL_ERR_IO, "cannot flush the checkpoint '%s': %s", path, strerror(errno));
    if (close(fd) != 0 && !st) st = ll_err(err, LL_ERR_IO, "cannot close the checkpoint '%s': %s", path, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = ll_err(err, LL_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (st) {
        unlink(tmp);
        return st;
    }
    ll_fsync_dir_of(path);
    return LL_OK;
}

/* Header and table of an open file, checked for what any reader needs; n_out sections. */
static LLStatus read_head(int fd, const char *path, unsigned char *head, TrainStateInfo *info, int *n_out,
                          LLError *err) {
    ssize_t got = read_all(fd, head, HEADER);
    if (got < 0) return ll_err(err, LL_ERR_IO, "cannot read the checkpoint '%s': %s", path, strerror(errno));
    if (got < HEADER)
        return ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' is truncated: %zd bytes, not even its %d-byte header",
                      path, got, HEADER);
    if (memcmp(head, MAGIC, sizeof MAGIC) != 0)
        return ll_err(err, LL_ERR_FORMAT, "'%s' is not a loralab checkpoint (no 'lltrain' magic)", path);
    if (get_u32(head + 8) != TRAIN_STATE_VERSION)
        return ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' has format version %u, this loralab reads %d", path,
                      get_u32(head + 8), TRAIN_STATE_VERSION);
    if (get_u32(head + 12) != BOM)
        return ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' was written on a machine of another byte order", path);
    memcpy(info->tag, head + 16, TRAIN_STATE_TAG);
    if (info->tag[TRAIN_STATE_TAG - 1] != '\0')
        return ll_err(err, LL_ERR_FORMAT, "checkpoint '%s': its tag is not a string", path);
    info->step = (int)get_u32(head + 80);
    info->steps = (int)get_u32(head + 84);
    uint32_t n = get_u32(head + 88);
    if (n > TRAIN_STATE_MAX_SECTIONS)
        return ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' lists %u sections (at most %d)", path, n,
                      TRAIN_STATE_MAX_SECTIONS);
    *n_out = (int)n;
    return LL_OK;
}

LLStatus train_state_peek(const char *path, TrainStateInfo *out, LLError *err) {
    memset(out, 0, sizeof *out);
    int fd, n;
    LLStatus st = ll_open_regular(path, &fd, NULL, err);
    if (st) return st;
    unsigned char head[HEADER];
    st = read_head(fd, path, head, out, &n, err);
    close(fd);
    return st;
}

LLStatus train_state_load(const char *path, const char *tag, int steps, const TrainStateSection *secs, int n,
                          int *step, LLError *err) {
    LL_ASSERT(n >= 0 && n <= TRAIN_STATE_MAX_SECTIONS);
    *step = 0;
    int fd, nf;
    size_t size;
    LLStatus st = ll_open_regular(path, &fd, &size, err);
    if (st) return st;
    unsigned char head[HEADER + ENTRY * TRAIN_STATE_MAX_SECTIONS];
    TrainStateInfo info;
    unsigned char *buf = NULL;
    Sum sum;
    sum_init(&sum);
    st = read_head(fd, path, head, &info, &nf, err);
    if (st) goto out;
    if (strcmp(info.tag, tag) != 0) {
        st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' belongs to run '%s', not to '%s'", path, info.tag, tag);
        goto out;
    }
    if (info.steps != steps || info.step < 1 || info.step >= steps) {
        st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' is of step %d of %d, this run trains %d steps", path,
                    info.step, info.steps, steps);
        goto out;
    }
    if (nf != n) {
        st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' holds %d sections, this run saves %d", path, nf, n);
        goto out;
    }
    ssize_t got = read_all(fd, head + HEADER, (size_t)ENTRY * n);
    if (got < 0) {
        st = ll_err(err, LL_ERR_IO, "cannot read the checkpoint '%s': %s", path, strerror(errno));
        goto out;
    }
    if (got < (ssize_t)ENTRY * n) {
        st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' is truncated inside its section table", path);
        goto out;
    }
    uint64_t expect = HEADER + (uint64_t)ENTRY * n + 8;
    for (int i = 0; i < n; i++) {
        const unsigned char *e = head + HEADER + (size_t)ENTRY * i;
        char name[TRAIN_STATE_NAME + 1] = {0};
        memcpy(name, e, TRAIN_STATE_NAME);
        uint64_t b;
        memcpy(&b, e + TRAIN_STATE_NAME, 8);
        if (strcmp(name, secs[i].name) != 0) {
            st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s': section %d is '%.24s', this run expects '%s'", path, i,
                        name, secs[i].name);
            goto out;
        }
        if (b != secs[i].bytes) {
            st = ll_err(err, LL_ERR_FORMAT,
                        "checkpoint '%s': section '%s' holds %llu bytes, this run's holds %zu (another model, adapter "
                        "or method?)", path, secs[i].name, (unsigned long long)b, secs[i].bytes);
            goto out;
        }
        expect += b;
    }
    if ((uint64_t)size != expect) {
        st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' is %s: %zu bytes, its table says %llu", path,
                    (uint64_t)size < expect ? "truncated" : "too long", size, (unsigned long long)expect);
        goto out;
    }
    /* First pass: the checksum over the whole file, through a bounded buffer, nothing read in. */
    sum_update(&sum, head, HEADER + (size_t)ENTRY * n);
    buf = ll_malloc(CHUNK, 1);
    uint64_t left = expect - 8 - (HEADER + (uint64_t)ENTRY * n);
    while (left > 0) {
        size_t want = left < CHUNK ? (size_t)left : CHUNK;
        got = read_all(fd, buf, want);
        if (got != (ssize_t)want) {
            st = got < 0 ? ll_err(err, LL_ERR_IO, "cannot read the checkpoint '%s': %s", path, strerror(errno))
                         : ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' is truncated", path);
            goto out;
        }
        sum_update(&sum, buf, want);
        left -= want;
    }
    uint64_t h, want_h = sum_final(&sum);
    if (read_all(fd, &h, 8) != 8 || h != want_h) {
        st = ll_err(err, LL_ERR_FORMAT, "checkpoint '%s' is corrupt: its checksum does not match its content", path);
        goto out;
    }
    /* Second pass: the sections into the caller's buffers. */
    if (lseek(fd, HEADER + (off_t)ENTRY * n, SEEK_SET) < 0) {
        st = ll_err(err, LL_ERR_IO, "cannot seek in the checkpoint '%s': %s", path, strerror(errno));
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (secs[i].bytes == 0) continue;
        if (read_all(fd, secs[i].data, secs[i].bytes) != (ssize_t)secs[i].bytes) {
            st = ll_err(err, LL_ERR_STATE, "cannot read the checkpoint '%s' after verifying it: %s", path,
                        errno ? strerror(errno) : "it became shorter");
            goto out;
        }
    }
    *step = info.step;
out:
    ll_free(buf);
    close(fd);
    return st;
}

void train_state_remove(const char *path) {
    char tmp[4096];
    int len = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (len > 0 && (size_t)len < sizeof tmp) unlink(tmp);
    unlink(path);
}
