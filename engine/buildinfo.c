/* buildinfo: see buildinfo.h. */
#include "buildinfo.h"

#include <string.h>

#include "ops.h"
#include "gitrev.h" /* LORALAB_GIT, written by the Makefile */

char *openblas_get_config(void);
char *openblas_get_corename(void);

#if defined(__clang__)
#define LL_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define LL_COMPILER "gcc " __VERSION__
#else
#define LL_COMPILER "unknown compiler"
#endif

const char *build_git_commit(void) { return LORALAB_GIT; }

const char *build_cpu_model(void) {
    static char model[160];
    if (model[0]) return model;
    snprintf(model, sizeof model, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return model;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(model, sizeof model, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    fclose(f);
    return model;
}

static const char *bf16_name(void) { return bf16_supported() ? bf16_kernel() : "none (no bf16 on this CPU)"; }

const char *build_info(void) {
    static char line[768];
    if (line[0]) return line;
    snprintf(line, sizeof line, "loralab %s (git %s) %s; %s, kernels %s; bf16 %s; %s", LORALAB_VERSION,
             build_git_commit(), LL_COMPILER, openblas_get_config(), openblas_get_corename(), bf16_name(),
             build_cpu_model());
    return line;
}

void build_info_print(FILE *f) {
    fprintf(f, "loralab %s\n", LORALAB_VERSION);
    fprintf(f, "git commit: %s\n", build_git_commit());
    fprintf(f, "compiler: %s\n", LL_COMPILER);
    fprintf(f, "BLAS: %s\n", openblas_get_config());
    fprintf(f, "BLAS kernels: %s\n", openblas_get_corename());
    fprintf(f, "bf16 products: %s\n", bf16_name());
    fprintf(f, "CPU: %s\n", build_cpu_model());
}
