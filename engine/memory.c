/* memory: see memory.h. */
#define _POSIX_C_SOURCE 200809L
#include "memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first number of file DIR/NAME: 1 and *v when it holds one, 0 when it is missing, holds "max"
 * (v2's no limit) or anything else. */
static int read_bytes(const char *dir, const char *name, double *v) {
    char path[4096], text[64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    if (!ok) return 0;
    char *end;
    unsigned long long n = strtoull(text, &end, 10);
    if (end == text) return 0;
    *v = (double)n;
    return 1;
}

double memory_cgroup_room(const char *dir) {
    double limit, used = 0.0;
    if (read_bytes(dir, "memory.max", &limit)) { /* v2 */
        (void)read_bytes(dir, "memory.current", &used);
    } else if (read_bytes(dir, "memory.limit_in_bytes", &limit)) { /* v1 */
        (void)read_bytes(dir, "memory.usage_in_bytes", &used);
        if (limit >= 0x7ffffffffffff000ULL) return -1.0; /* v1's "no limit": LONG_MAX rounded to a page */
    } else {
        return -1.0;
    }
    return limit > used ? limit - used : 0.0;
}

/* The smallest room of the cgroup at MOUNT + PATH and of each ancestor up to MOUNT; -1 if none is
 * limited. */
static double room_up_from(const char *mount, const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s", mount, strcmp(path, "/") == 0 ? "" : path);
    size_t root = strlen(mount);
    double best = -1.0;
    for (;;) {
        double r = memory_cgroup_room(dir);
        if (r >= 0.0 && (best < 0.0 || r < best)) best = r;
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= root || !slash || (size_t)(slash - dir) < root) break;
        *slash = '\0';
    }
    return best;
}

/* The room of this process's memory cgroup (v2 unified or v1 memory controller); -1 if unlimited
 * or unknown. */
static double cgroup_room(void) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1.0;
    char line[4096];
    double best = -1.0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/') continue;
        *c2 = '\0';
        const char *ctrl = c1 + 1, *path = c2 + 1;
        double r = -1.0;
        if (strcmp(line, "0") == 0 && *ctrl == '\0') { /* v2: "0::/path" */
            r = room_up_from("/sys/fs/cgroup", path);
        } else { /* v1: "N:a,memory,b:/path" */
            char list[256];
            snprintf(list, sizeof list, ",%s,", ctrl);
            if (strstr(list, ",memory,")) r = room_up_from("/sys/fs/cgroup/memory", path);
        }
        if (r >= 0.0 && (best < 0.0 || r < best)) best = r;
    }
    fclose(f);
    return best;
}

double memory_available(void) {
    double host = 0.0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                host = (double)kb * 1024.0;
                break;
            }
        fclose(f);
    }
    if (host <= 0.0) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        host = pages > 0 && page > 0 ? (double)pages * (double)page : 0.0;
    }
    double cg = cgroup_room();
    if (cg >= 0.0 && (host <= 0.0 || cg < host)) return cg;
    return host;
}

double memory_diagnostics_estimate(const ModelConfig *c) {
    double n = 0.0;
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        int in, out;
        model_module_dims(c, mod, &in, &out);
        if ((double)in * out > n) n = (double)in * out;
    }
    return 52.0 * n;
}

double memory_estimate(const ModelConfig *c, const ModelOptions *o, const AdapterConfig *ac) {
    double bytes = model_memory_estimate(c, o);
    if (ac && ac->method != ADAPTER_FULL) bytes += adapter_memory_estimate(ac, c, o->B * (double)o->T, o->training);
    if (o->training) bytes += memory_diagnostics_estimate(c);
    return bytes;
}

LLStatus memory_check_model(const ModelConfig *c, const ModelOptions *o, const AdapterConfig *ac, const char *keys,
                            LLError *err) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    double need = memory_estimate(c, o, ac), have = memory_available();
    if (have > 0 && need > have) {
        char adapter[160] = "";
        if (ac && ac->method != ADAPTER_FULL)
            snprintf(adapter, sizeof adapter, " and a %s adapter of rank %d", adapter_method_name(ac->method),
                     ac->method == ADAPTER_ADALORA ? ac->init_r : ac->r);
        return ll_err(err, LL_ERR_NOMEM,
                      "the model (%zu weights)%s with a batch of %d x %d tokens needs about %.1f GiB (estimate), but "
                      "only %.1f GiB of memory is available (MemAvailable and the memory cgroup's limit); lower %s",
                      model_param_count(c), adapter, o->B, o->T, need / gib, have / gib, keys);
    }
    return LL_OK;
}
