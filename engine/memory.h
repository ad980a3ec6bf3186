/* memory: the memory budget. What a model, its adapter and a batch will need, compared with what
 * this process may still use, before anything is allocated.
 *
 * Invariants:
 *   - Every command that sizes buffers from a user's input (train, pretrain, eval, generate, merge)
 *     calls memory_check_model after the shapes are known and validated (config.json against the
 *     safetensors header, adapter_config.json ranks bounded) and before model_init or
 *     checkpoint_open allocate: a job that does not fit is refused with the numbers (LL_ERR_NOMEM),
 *     never killed by the OOM killer half-way.
 *   - The budget is the smallest of: MemAvailable of /proc/meminfo (else all physical memory), and
 *     for the process's memory cgroup and each of its ancestors, limit minus current usage (v2:
 *     memory.max - memory.current; v1: memory.limit_in_bytes - memory.usage_in_bytes). A batch
 *     scheduler (SLURM) confines a job with a cgroup, so a run that fits the host but not its job
 *     is refused too. An unknown or unlimited source does not constrain; when no source is known
 *     at all the check passes.
 *   - The estimate (model_memory_estimate + adapter_memory_estimate, and for a training run the
 *     end-of-run spectral diagnostics: memory_diagnostics_estimate) reads shapes only; it
 *     allocates nothing that scales with the model.
 */
#ifndef LL_MEMORY_H
#define LL_MEMORY_H

#include "adapter.h"
#include "core.h"
#include "model.h"

/* Bytes this process may still allocate (see the header); 0 when nothing is known. */
double memory_available(void);
/* The room left by the cgroup whose control files sit in folder DIR (v2 memory.max and
 * memory.current, or v1 memory.limit_in_bytes and memory.usage_in_bytes): limit - usage, at least
 * 0; -1 when DIR holds no limit or the limit is "max". */
double memory_cgroup_room(const char *dir);
/* The model (c, o) plus, when ac is not NULL, its adapter, sized as model_init and adapter_create
 * (and, when o->training, the optimizer and the best-weights snapshot) will size them; when
 * o->training, plus memory_diagnostics_estimate. */
double memory_estimate(const ModelConfig *c, const ModelOptions *o, const AdapterConfig *ac);
/* What a training run's spectral diagnostics (analysis/diagnostics.h, train.diagnostics) add at its
 * end, one matrix at a time: for the largest linear matrix of n = out·in elements, W0 and W1 in
 * double, a scratch matrix the SVDs overwrite, the singular vectors and LAPACK's and BLAS's
 * workspaces, 52 bytes per element (measured 6.3 MiB over the run's peak at 688 x 256 = 7.3 MiB
 * by this count). Counted whether or not the run has them on: it is small beside the model. */
double memory_diagnostics_estimate(const ModelConfig *c);
/* LL_ERR_NOMEM naming the estimate, the budget and what to lower (`keys`, e.g. "--batch or
 * --seq") when memory_estimate exceeds memory_available; LL_OK otherwise. */
LLStatus memory_check_model(const ModelConfig *c, const ModelOptions *o, const AdapterConfig *ac, const char *keys,
                            LLError *err);

#endif
