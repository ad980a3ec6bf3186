/* libFuzzer target for the YAML experiment-config loader (experiments/config.c, config_load_text)
 * and, for a document that loads, the sweep expansion (experiments/sweep.c, sweep_expand). Built
 * and run by `make fuzz` from the project root (presets are read from configs/models/), see
 * docs/TESTING.md.
 *
 * Seeds in tests/fuzz/config/: the shipped experiment configs' shapes (grid with expressions,
 * seeds, random search, derived keys, exclusions, a pretrained base, AdaLoRA, VeRA) and near-valid
 * ones (an unknown key, a tab, an anchor, a flow map left open). Besides memory errors (ASan) and
 * undefined behaviour (UBSan), the target aborts when a rejection is not a config/IO error with a
 * message, or when an expanded plan breaks its promises: indices in order, every point resolved
 * with a 16-hex-digit key, at most SWEEP_MAX_POINTS points. Plans whose raw size passes 512
 * points are not expanded (the limit itself is tested in tests/test_sweep.c); only their load is
 * fuzzed, so that the run rate stays useful.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/config.h"
#include "experiments/sweep.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ConfigDoc *doc = fuzz_load_yaml(data, size);
    if (!doc) return 0;
    LLError err;
    err.msg[0] = '\0';
    if (fuzz_raw_points(&doc->sweep) <= 512) {
        SweepPlan plan;
        LLStatus rc = sweep_expand(doc, &plan, &err);
        if (rc == LL_OK) {
            if (plan.n < 1 || plan.n > SWEEP_MAX_POINTS || plan.n > plan.n_raw) abort();
            for (int i = 0; i < plan.n; i++) {
                const SweepPoint *p = &plan.points[i];
                if (p->index != i || strlen(p->rc.key) != 16 || !p->rc.canonical_json) abort();
            }
            sweep_plan_free(&plan);
        } else if ((rc != LL_ERR_CONFIG && rc != LL_ERR_IO && rc != LL_ERR_FORMAT) || err.msg[0] == '\0') {
            abort();
        }
    }
    config_doc_free(doc);
    return 0;
}
