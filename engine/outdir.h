/* outdir: the folders loralab writes, and the rule that it replaces only what it wrote itself.
 *
 * Two kinds of output folder:
 * - Written whole (model folders, adapter folders): the new content is built under DIR.tmp.PID
 *   (outdir_tmp_name) and swapped in by outdir_replace. A reader sees the old folder or the new one,
 *   never a mix and never nothing.
 * - Written file by file (report, analyze): outdir_claim before the first file.
 *
 * Invariants:
 * - Every folder loralab writes holds a marker file, OUTDIR_MARKER, whose first line is
 *   "loralab <kind>" and whose other lines name the entries written with it. It is hidden, so a
 *   folder still loads in transformers and PEFT (they read the files they know by name).
 * - A folder is replaced (or written into) only when it is absent, empty, or OURS: it holds the
 *   marker and no entry the marker does not list, or, for a folder written whole by an older
 *   loralab without a marker, no entry that the folder replacing it will not also hold. Anything
 *   else (a user's thesis.tex beside the adapter, a regular file or a symbolic link where the folder
 *   should be) is refused with LL_ERR_IO naming the path and the entry, and nothing is touched.
 * - Nothing but an OURS folder, a stale DIR.tmp.PID holding our marker, or our own temporary folder
 *   is ever removed; removal never follows a symbolic link.
 * - outdir_replace swaps with renameat2(RENAME_EXCHANGE), so DIR names a complete folder at every
 *   instant; the old one, now under the temporary name, is removed after. Where the filesystem
 *   lacks the exchange it falls back to DIR -> DIR.old.PID, TMP -> DIR, and a kill between those
 *   two renames is repaired by outdir_recover (called first by every writer): a folder found only
 *   as DIR.old.PID of a process that is gone is renamed back, and a stale DIR.tmp.PID is removed.
 *
 * Fault injection for the tests (read from the environment at the call, no global state):
 * LORALAB_FAULT containing "replace-noexchange" takes the fallback path; "replace-kill" also
 * raises SIGKILL between its two renames. */
#ifndef LL_OUTDIR_H
#define LL_OUTDIR_H

#include <stddef.h>

#include "core.h"

#define OUTDIR_MARKER ".loralab"

/* Creates DIR.tmp.PID (into TMP), where a folder written whole is built, holding a marker so that
 * outdir_recover may remove it should this process die before outdir_replace. */
LLStatus outdir_tmp_create(const char *dir, char *tmp, size_t cap, LLError *err);

/* Moves the complete folder TMP (built by this process) to DIR, atomically, after checking that
 * DIR is absent, empty or ours (see above), and writes the marker of KIND ("model", "adapter")
 * listing TMP's entries. On any failure DIR is as it was and TMP is removed. */
LLStatus outdir_replace(const char *tmp, const char *dir, const char *kind, LLError *err);

/* For folders written file by file: DIR absent (created), empty, or ours with a marker of the same
 * KIND is fine and gets the marker; anything else is refused by name and left untouched. */
LLStatus outdir_claim(const char *dir, const char *kind, LLError *err);

/* Whether DIR exists and is not empty (a folder) or exists at all (anything else). */
int outdir_occupied(const char *dir);

/* Repairs what a kill in the middle of outdir_replace left next to DIR (see above). Returns 1 when
 * it restored DIR from DIR.old.PID, 0 otherwise. Safe to call at any time. */
int outdir_recover(const char *dir);

/* Removes a folder tree; a symbolic link is unlinked, never followed. */
void outdir_remove_tree(const char *dir);

#endif
