/* buildinfo: which build made a number.
 *
 * One line (build_info) names the version, the git commit the binary was built from (with
 * "-dirty" when the tree had uncommitted changes, "unknown" outside a checkout), the compiler, the
 * BLAS library with the kernels it chose at run time, the bf16 product kernel, and the CPU. The
 * line is stored with every run (runs.build), so a table can say which build and machine made it;
 * `loralab --version` prints the same facts one per line. The commit is fixed at build time
 * (the Makefile writes build/gitrev.h whenever HEAD or the tree's state changes); the kernels and
 * the CPU are read when first asked, in the process that runs. */
#ifndef LL_BUILDINFO_H
#define LL_BUILDINFO_H

#include <stdio.h>

#define LORALAB_VERSION "0.6.0"

/* "loralab 0.6.0 (git 1a2b3c4) gcc 14.2.0; OpenBLAS 0.3.29 ... Haswell; bf16 avx512bf16; AMD EPYC ..."
 * A static buffer, filled on the first call (not thread-safe before that call returns). */
const char *build_info(void);
void build_info_print(FILE *f);
const char *build_git_commit(void);
const char *build_cpu_model(void); /* /proc/cpuinfo's model name, or "unknown CPU" */

#endif
