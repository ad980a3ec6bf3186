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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/config.h"
#include "experiments/sweep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static double raw_points(const SweepSpec *s) {
    double n = s->n_seeds > 0 ? s->n_seeds : 1;
    for (int i = 0; i < s->n_axes; i++) n *= s->axes[i].n > 0 ? s->axes[i].n : 1;
    if (s->random_n > 0) n *= s->random_n;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    ConfigDoc *doc = NULL;
    LLError err;
    err.msg[0] = '\0';
    LLStatus rc = config_load_text("fuzz.yaml", text, NULL, 0, &doc, &err);
    free(text);
    if (rc != LL_OK) {
        if ((rc != LL_ERR_CONFIG && rc != LL_ERR_IO && rc != LL_ERR_FORMAT) || err.msg[0] == '\0' || doc != NULL)
            abort();
        return 0;
    }
    if (raw_points(&doc->sweep) <= 512) {
        SweepPlan plan;
        rc = sweep_expand(doc, &plan, &err);
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
