/* train_state: the checkpoint file a run resumes from after a preemption (SIGTERM, scancel, a
 * requeue, a kill): the trainable state and everything else the next step depends on, so that the
 * resumed run computes bitwise what the uninterrupted run would have (fp32, same thread count).
 *
 * Format (version 1; native byte order, which the header records and a reader checks):
 *
 *     offset  bytes  field
 *     0       8      magic "lltrain\0"
 *     8       4      u32 version (TRAIN_STATE_VERSION)
 *     12      4      u32 byte-order mark 0x01020304
 *     16      64     tag: the run's identity (its run key), NUL-padded
 *     80      4      i32 step: the optimizer steps done (the file resumes at this step)
 *     84      4      i32 steps: the run's total steps
 *     88      4      u32 n: the number of sections (at most TRAIN_STATE_MAX_SECTIONS)
 *     92      4      u32 reserved (0)
 *     96      32·n   the section table: name (24 bytes, NUL-padded), u64 byte count
 *     ...            the sections' bytes, in table order, unpadded
 *     end-8   8      u64 checksum of every byte before it (64-bit words, FNV-1a style)
 *
 * What the sections hold is the caller's business (train.c lists them: its bookkeeping, the data
 * and dropout RNGs, the trained floats, the head, the adapter's method state, AdamW's moments, the
 * keep-best copy); this file only guarantees that a section is restored into a buffer of the same
 * name and byte count, or not at all.
 *
 * Invariants:
 * - Atomic: written to PATH.tmp, fsynced, renamed over PATH, and the folder fsynced; a kill at any
 *   moment leaves the previous checkpoint (or none) at PATH, never a partial one. One process
 *   writes a run's checkpoint (the one that claimed the run), so the temporary name is fixed: a
 *   stale one left by a kill is overwritten by the next write, and removed with the checkpoint
 *   (train_state_remove).
 * - All or nothing: train_state_load first checks the header (magic, version, byte order, tag,
 *   total steps, step in [1, steps)), that the section table names exactly the caller's sections
 *   with their byte counts, that the file's size is what the table says, and the checksum over the
 *   whole file, reading nothing into the caller's buffers; only then does it read the sections in.
 *   A refusal (truncated, corrupt, another run's, another size of model or adapter) is LL_ERR_FORMAT
 *   with a message naming the file and what did not match, and every buffer is untouched.
 * - Sizes read from the file bound nothing: the caller's buffers are sized by the live run, and a
 *   file that disagrees is refused before any read into them.
 * - Not saved: wall-clock time (a resumed run's tokens/s and wall time count its own attempt),
 *   anything recomputed from the saved state (DoRA's norms, LoRA's transposes, the bf16 packs of
 *   the base) or from the config (the frozen base, VeRA's projections, PiSSA's residual).
 */
#ifndef LL_TRAIN_STATE_H
#define LL_TRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#define TRAIN_STATE_VERSION 1
enum { TRAIN_STATE_TAG = 64, TRAIN_STATE_NAME = 24, TRAIN_STATE_MAX_SECTIONS = 32 };

typedef struct {
    const char *name; /* at most TRAIN_STATE_NAME - 1 characters */
    void *data;       /* written from, or read into; may be NULL when bytes is 0 */
    size_t bytes;
} TrainStateSection;

typedef struct {
    char tag[TRAIN_STATE_TAG];
    int step, steps;
} TrainStateInfo;

/* Writes the checkpoint of `step` (of `steps`) under tag atomically at path (see above). On a
 * failure (LL_ERR_IO naming the path) the previous file at path is untouched. */
LLStatus train_state_save(const char *path, const char *tag, int step, int steps, const TrainStateSection *secs,
                          int n, LLError *err);

/* Reads the checkpoint at path into secs (see the invariants): *step is the step it resumes at.
 * LL_ERR_IO when it cannot be opened or read, LL_ERR_FORMAT when it is refused: in both cases no
 * buffer was written. LL_ERR_STATE only when a read failed after the file was verified (a disk
 * error): the buffers are then partly overwritten and must not be trained on. */
LLStatus train_state_load(const char *path, const char *tag, int steps, const TrainStateSection *secs, int n,
                          int *step, LLError *err);

/* Removes the checkpoint at path and a temporary file a killed write left beside it. */
void train_state_remove(const char *path);

/* The header alone (tag, step, steps), for deciding before a run starts whether it will resume.
 * LL_ERR_IO when absent or unreadable, LL_ERR_FORMAT when it is not a checkpoint of this version. */
LLStatus train_state_peek(const char *path, TrainStateInfo *out, LLError *err);

#endif
