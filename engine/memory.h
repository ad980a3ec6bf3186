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
 *   - The estimate (model_memory_estimate + adapter_memory_estimate) reads shapes only; it
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
 * (and, when o->training, the optimizer and the best-weights snapshot) will size them. */
double memory_estimate(const ModelConfig *c, const ModelOptions *o, const AdapterConfig *ac);
/* LL_ERR_NOMEM naming the estimate, the budget and what to lower (`keys`, e.g. "--batch or
 * --seq") when memory_estimate exceeds memory_available; LL_OK otherwise. */
LLStatus memory_check_model(const ModelConfig *c, const ModelOptions *o, const AdapterConfig *ac, const char *keys,
                            LLError *err);

#endif
