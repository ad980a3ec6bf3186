/* grid: a config's sweep section -> the list of points to run (the plan).
 *
 * The plan is a pure function of the file and its --set overrides.
 *   points  = seeds x grid x the method's own axes x random samples. sweep.seeds is a train.seed
 *             axis and the slowest one (every config gets seed 0 before any gets seed 1, so a
 *             partial sweep already covers the grid); grid axes follow in file order, the last one
 *             fastest; then the axes of sweep.per_method.<variant> for the point's variant (its
 *             adapter_variant_name: lora, dora, ..., computed from the seed and grid values), in
 *             file order; the n random-search samples are the innermost loop. Sample j draws key k from
 *             u = splitmix64(fnv1a64(k) ^ seed, j) (uniform, 53 bits), so adding a key to the space
 *             does not change the values drawn for the others; drawn floats are rounded to
 *             4 significant digits so that tables stay readable. A per-method random key draws
 *             the same way, so sample j of each method lies at the same quantile of its range.
 *   methods = every per_method entry must match some seed x grid point (unless a --set of a key
 *             that decides the method narrowed the sweep), and every point expanded with an entry
 *             must still be that entry's variant after resolution; both are errors naming the
 *             entry's file:line. A sweep without per_method expands exactly as before it existed.
 *   derived = evaluated per point after the grid and random values, in file order (a later
 *             expression may use an earlier derived key): + - * / ( ), numbers, dotted keys and
 *             short names (`r` is adapter.r). Keys not assigned take their resolved default.
 *   exclude = a point is dropped when, for some entry, each key's value (as assigned by the point
 *             or set in the file) equals the entry's, or one of them for `key: [a, b]` (a list under
 *             a key that takes one value means any of); a key left at its default never matches.
 *   merge   = points whose run key is equal (keys a method ignores are not in the key: full x
 *             r{1,2,4} is one run) are merged, the first kept.
 *
 * Invariants: the plan's order and content depend only on the document (file + --set), so every
 * shard, every re-invocation and `--dry-run` see the same list; every point in a plan is resolved
 * and valid; no two points of a plan have the same run key.
 */
#ifndef LL_GRID_H
#define LL_GRID_H

#include "config.h"
#include "core.h"

#define SWEEP_MAX_POINTS 100000

typedef struct {
    ConfigAssign *assign; /* the point's swept values: seeds, grid, per-method axes, random, per-method
                           * random, derived (in that order) */
    int n_assign;
    RunConfig rc;
    int index;            /* position in the plan */
} SweepPoint;

typedef struct {
    SweepPoint *points;
    int n;
    int n_raw;      /* points before exclusion and merging */
    int n_excluded;
    int n_merged;
    char (*vary)[CONFIG_KEY_MAX]; /* the keys points assign, in loop order (the dry-run columns) */
    int n_vary;
} SweepPlan;

/* Expands doc's sweep section (a doc without one is a plan of one run). Every point is resolved
 * and checked, so a bad point is reported before anything runs. */
LLStatus sweep_expand(const ConfigDoc *doc, SweepPlan *plan, LLError *err);
void sweep_plan_free(SweepPlan *plan);

/* Before anything runs (the dry run included): every point's corpus folders exist and hold the
 * splits a run reads (task.data: train and valid; each task.eval_sets folder: valid; base.data:
 * train and valid, unless the base is already cached). A missing one is LL_ERR_CONFIG naming the
 * file, the key and the folder: a typo would otherwise fail every run of the sweep one by one. */
LLStatus sweep_check_data(const ConfigDoc *doc, const SweepPlan *plan, LLError *err);

/* Evaluates a derived expression for a point (overrides = the point's assignments so far). */
LLStatus sweep_eval_expr(const char *expr, const ConfigDoc *doc, const ConfigAssign *a, int n, double *out,
                         LLError *err);

#endif
