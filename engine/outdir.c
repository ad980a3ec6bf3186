/* outdir: see outdir.h. */
#define _GNU_SOURCE
#include "outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096

/* ---- small helpers ---------------------------------------------------------------------------- */

typedef struct {
    char **v;
    int n, cap;
} Names;

static void names_add(Names *s, const char *name) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = ll_realloc(s->v, (size_t)s->cap, sizeof *s->v);
    }
    s->v[s->n++] = ll_strdup(name);
}

static int names_has(const Names *s, const char *name) {
    for (int i = 0; s && i < s->n; i++)
        if (strcmp(s->v[i], name) == 0) return 1;
    return 0;
}

static void names_free(Names *s) {
    for (int i = 0; i < s->n; i++) ll_free(s->v[i]);
    ll_free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The entries of DIR but "." and "..", sorted (the marker lists them the same on every machine);
 * 0 when it cannot be read. */
static int list_dir(const char *dir, Names *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names_add(out, e->d_name);
    closedir(d);
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_name);
    return 1;
}

/* DIR without trailing slashes, so that "out/" and "out" name the same folder and "out/.tmp.PID"
 * is never built inside the folder it is meant to replace. */
static LLStatus norm_dir(const char *dir, char *out, size_t cap, LLError *err) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 0 || n >= cap) return ll_err(err, LL_ERR_IO, "bad output folder path '%s'", dir);
    memcpy(out, dir, n);
    out[n] = '\0';
    const char *base = strrchr(out, '/');
    base = base ? base + 1 : out;
    if (strcmp(out, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        return ll_err(err, LL_ERR_IO, "'%s' cannot be an output folder: name a folder of its own", dir);
    return LL_OK;
}

static void fsync_parent(const char *path) {
    char parent[PATH_CAP];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash == parent) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(parent, sizeof parent, ".");
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int fault(const char *what) {
    const char *f = getenv("LORALAB_FAULT");
    return f && strstr(f, what) != NULL;
}

/* The marker's kind (first line "loralab KIND") into KIND and the entries it lists into LISTED;
 * 0 when DIR has no readable marker. */
static int read_marker(const char *dir, char *kind, size_t cap, Names *listed) {
    memset(listed, 0, sizeof *listed);
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/%s", dir, OUTDIR_MARKER);
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (1 << 20)) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1024];
    int ok = fgets(line, sizeof line, f) && strncmp(line, "loralab ", 8) == 0;
    if (ok) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(kind, cap, "%s", line + 8);
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            if (line[0]) names_add(listed, line);
        }
    }
    fclose(f);
    if (!ok) names_free(listed);
    return ok;
}

static LLStatus write_marker(const char *dir, const char *kind, const Names *entries, LLError *err) {
    size_t len = strlen(kind) + 16;
    for (int i = 0; entries && i < entries->n; i++) len += strlen(entries->v[i]) + 1;
    char *text = ll_malloc(len, 1);
    size_t o = (size_t)snprintf(text, len, "loralab %s\n", kind);
    for (int i = 0; entries && i < entries->n; i++)
        if (strcmp(entries->v[i], OUTDIR_MARKER) != 0) o += (size_t)snprintf(text + o, len - o, "%s\n", entries->v[i]);
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/%s", dir, OUTDIR_MARKER);
    LLStatus st = ll_write_file_atomic(path, text, o, err);
    ll_free(text);
    return st;
}

/* ---- the ownership rule ----------------------------------------------------------------------- */

/* LL_OK when DIR may be written as KIND: absent (*exists = 0), empty, or ours. FRESH, for a folder
 * written whole, lists the entries of the folder that will replace DIR (what a marker-less folder of
 * an older loralab may hold); NULL for folders written file by file. */
static LLStatus check_ours(const char *dir, const char *kind, const Names *fresh, int *exists, LLError *err) {
    const char *verb = fresh ? "replace" : "write into";
    struct stat sb;
    *exists = 0;
    if (lstat(dir, &sb) != 0) {
        if (errno == ENOENT) return LL_OK;
        return ll_err(err, LL_ERR_IO, "cannot inspect output folder '%s': %s", dir, strerror(errno));
    }
    *exists = 1;
    if (S_ISLNK(sb.st_mode))
        return ll_err(err, LL_ERR_IO,
                      "'%s' is a symbolic link: refusing to %s it (loralab writes its output folders itself; "
                      "choose another output path)", dir, verb);
    if (!S_ISDIR(sb.st_mode))
        return ll_err(err, LL_ERR_IO, "'%s' exists and is not a folder: refusing to %s it (choose another output path)",
                      dir, verb);
    Names have, listed;
    if (!list_dir(dir, &have)) return ll_err(err, LL_ERR_IO, "cannot read folder '%s': %s", dir, strerror(errno));
    char mkind[128] = "";
    int marked = read_marker(dir, mkind, sizeof mkind, &listed);
    LLStatus st = LL_OK;
    if (marked && strcmp(mkind, kind) != 0) {
        st = ll_err(err, LL_ERR_IO, "'%s' is a loralab %s folder, not a %s folder: refusing to %s it", dir, mkind, kind,
                    verb);
    } else {
        /* A marker written file by file lists nothing: the folder is the kind's, and the command writes
         * only its own names into it. A marker of a folder written whole lists every entry. */
        int open_kind = marked && listed.n == 0 && !fresh;
        for (int i = 0; i < have.n && !st; i++) {
            const char *e = have.v[i];
            if (strcmp(e, OUTDIR_MARKER) == 0 || open_kind) continue;
            char path[PATH_CAP];
            snprintf(path, sizeof path, "%s/%s", dir, e);
            struct stat es;
            int regular = lstat(path, &es) == 0 && S_ISREG(es.st_mode);
            int known = marked ? names_has(&listed, e) : names_has(fresh, e);
            if (!regular || !known)
                st = ll_err(err, LL_ERR_IO,
                            "'%s' holds '%s', which loralab did not write%s: refusing to %s the folder "
                            "(move your files elsewhere or choose another output path)",
                            dir, e, marked ? "" : " (the folder has no loralab marker)", verb);
        }
    }
    names_free(&have);
    names_free(&listed);
    return st;
}

/* ---- removal and recovery --------------------------------------------------------------------- */

void outdir_remove_tree(const char *dir) {
    struct stat sb;
    if (lstat(dir, &sb) != 0) return;
    if (!S_ISDIR(sb.st_mode)) {
        unlink(dir);
        return;
    }
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[PATH_CAP];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        outdir_remove_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

static void outdir_tmp_name(const char *dir, char *out, size_t cap) {
    char d[PATH_CAP];
    if (norm_dir(dir, d, sizeof d, NULL)) snprintf(d, sizeof d, "%s", dir);
    snprintf(out, cap, "%s.tmp.%ld", d, (long)getpid());
}

/* The PID of NAME when it is BASE + SUFFIX + digits, else 0. */
static long sibling_pid(const char *name, const char *base, const char *suffix) {
    size_t nb = strlen(base), ns = strlen(suffix);
    if (strncmp(name, base, nb) != 0 || strncmp(name + nb, suffix, ns) != 0) return 0;
    const char *p = name + nb + ns;
    if (!*p) return 0;
    long pid = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || pid > 100000000) return 0;
        pid = pid * 10 + (*p - '0');
    }
    return pid;
}

static int pid_gone(long pid) { return pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH; }

static int has_marker(const char *dir) {
    char kind[128];
    Names listed;
    int ok = read_marker(dir, kind, sizeof kind, &listed);
    names_free(&listed);
    return ok;
}

int outdir_recover(const char *dir_in) {
    char dir[PATH_CAP], parent[PATH_CAP];
    if (norm_dir(dir_in, dir, sizeof dir, NULL)) return 0;
    const char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : dir;
    if (slash == dir) snprintf(parent, sizeof parent, "/");
    else if (slash) snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
    else snprintf(parent, sizeof parent, ".");
    Names sib;
    if (!list_dir(parent, &sib)) return 0;
    int restored = 0;
    /* Old folders first: one moved aside by a process that died before the new one took its place
     * is the last complete folder under that name, and goes back. */
    for (int i = 0; i < sib.n; i++) {
        long pid = sibling_pid(sib.v[i], base, ".old.");
        if (!pid || !pid_gone(pid)) continue;
        char path[PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", parent, sib.v[i]);
        struct stat sb;
        if (lstat(dir, &sb) != 0 && errno == ENOENT) {
            if (rename(path, dir) == 0) {
                restored = 1;
                fsync_parent(dir);
            }
        } else if (has_marker(path)) {
            outdir_remove_tree(path); /* the new folder made it: the old one is ours and stale */
        }
    }
    /* Temporary folders of dead processes: incomplete (or complete but never swapped in). Only
     * ones holding our marker are removed; outdir_tmp_create writes it first. */
    for (int i = 0; i < sib.n; i++) {
        long pid = sibling_pid(sib.v[i], base, ".tmp.");
        if (!pid || !pid_gone(pid)) continue;
        char path[PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", parent, sib.v[i]);
        struct stat sb;
        if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode) && has_marker(path)) outdir_remove_tree(path);
    }
    names_free(&sib);
    return restored;
}

/* ---- writing ---------------------------------------------------------------------------------- */

LLStatus outdir_tmp_create(const char *dir, char *tmp, size_t cap, LLError *err) {
    char d[PATH_CAP];
    LLStatus st = norm_dir(dir, d, sizeof d, err);
    if (st) return st;
    outdir_recover(d);
    outdir_tmp_name(d, tmp, cap);
    outdir_remove_tree(tmp); /* our own PID's leftover: no other process can own this name */
    st = ll_mkdirs(tmp, err);
    if (!st) st = write_marker(tmp, "building", NULL, err);
    if (st) outdir_remove_tree(tmp);
    return st;
}

LLStatus outdir_replace(const char *tmp, const char *dir_in, const char *kind, LLError *err) {
    char dir[PATH_CAP];
    LLStatus st = norm_dir(dir_in, dir, sizeof dir, err);
    Names fresh = {0};
    if (!st && !list_dir(tmp, &fresh))
        st = ll_err(err, LL_ERR_IO, "cannot read the new folder '%s': %s", tmp, strerror(errno));
    if (!st) st = write_marker(tmp, kind, &fresh, err);
    int exists = 0;
    if (!st) {
        outdir_recover(dir);
        st = check_ours(dir, kind, &fresh, &exists, err);
    }
    names_free(&fresh);
    if (st) {
        outdir_remove_tree(tmp);
        return ll_err_prefix(err, "writing %s folder '%s' (nothing was replaced)", kind, dir_in);
    }
    if (!exists) {
        int rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE);
        if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) rc = rename(tmp, dir);
        if (rc != 0) {
            int e = errno;
            outdir_remove_tree(tmp);
            return ll_err(err, LL_ERR_IO, "cannot move the new %s folder into '%s': %s (nothing was replaced)", kind,
                          dir, strerror(e));
        }
        fsync_parent(dir);
        return LL_OK;
    }
    if (!fault("replace-noexchange")) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
            fsync_parent(dir);
            outdir_remove_tree(tmp); /* now the old folder, checked to be ours */
            return LL_OK;
        }
        if (errno != EINVAL && errno != ENOSYS) {
            int e = errno;
            outdir_remove_tree(tmp);
            return ll_err(err, LL_ERR_IO, "cannot swap the new %s folder into '%s': %s (the previous one is untouched)",
                          kind, dir, strerror(e));
        }
    }
    /* No exchange on this filesystem: move the old folder aside, then the new one in. A kill between
     * the two leaves DIR.old.PID alone, which outdir_recover puts back. */
    char old[PATH_CAP + 32];
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    if (rename(dir, old) != 0) {
        int e = errno;
        outdir_remove_tree(tmp);
        return ll_err(err, LL_ERR_IO, "cannot move '%s' aside: %s (the previous one is untouched)", dir, strerror(e));
    }
    if (fault("replace-kill")) raise(SIGKILL);
    if (rename(tmp, dir) != 0) {
        int e = errno;
        if (rename(old, dir) != 0) {
            return ll_err(err, LL_ERR_IO, "cannot move the new %s folder into '%s' (%s), nor the previous one back: "
                          "it is at '%s'", kind, dir, strerror(e), old);
        }
        outdir_remove_tree(tmp);
        return ll_err(err, LL_ERR_IO, "cannot move the new %s folder into '%s': %s (the previous one is untouched)",
                      kind, dir, strerror(e));
    }
    fsync_parent(dir);
    outdir_remove_tree(old);
    return LL_OK;
}

LLStatus outdir_claim(const char *dir_in, const char *kind, LLError *err) {
    char dir[PATH_CAP];
    LLStatus st = norm_dir(dir_in, dir, sizeof dir, err);
    int exists = 0;
    if (!st) st = check_ours(dir, kind, NULL, &exists, err);
    if (!st && !exists) st = ll_mkdirs(dir, err);
    if (!st) {
        char kind_now[128];
        Names listed;
        int marked = read_marker(dir, kind_now, sizeof kind_now, &listed);
        names_free(&listed);
        if (!marked) st = write_marker(dir, kind, NULL, err);
    }
    return st;
}

int outdir_occupied(const char *dir) {
    struct stat sb;
    if (lstat(dir, &sb) != 0) return 0;
    if (!S_ISDIR(sb.st_mode)) return 1;
    Names have;
    if (!list_dir(dir, &have)) return 1;
    int n = have.n;
    names_free(&have);
    return n > 0;
}
