/* A tiny Llama config and a fake language-modelling dataset, shared by the suites that train
 * (test_train.c, test_train_state.c). Header-only (static inline), like util.h. */
#ifndef LORALAB_TESTS_TINY_H
#define LORALAB_TESTS_TINY_H

#include <string.h>

#include "data.h"
#include "model.h"
#include "rng.h"

/* V 40, C 16, 2 layers, 4 heads over 2 kv heads of 4, F 24, up to 32 tokens, untied; ids 37-39
 * are bos, eos and pad. */
static inline ModelConfig tiny_config(void) {
    ModelConfig c = {0};
    c.V = 40, c.C = 16, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = 4, c.F = 24, c.max_T = 32;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.02f, c.tied = 0;
    c.bos_id = 37, c.eos_id = 38, c.pad_id = 39;
    return c;
}

/* n tokens drawn uniformly below V - 3 from seed. */
static inline void fake_lm(Dataset *d, int n, int V, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->kind = DATA_LM;
    d->path = ll_strdup("fake");
    d->n_tokens = (size_t)n;
    d->tokens = ll_malloc((size_t)n, sizeof(int));
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) d->tokens[i] = (int)rng_below(&r, (uint32_t)(V - 3));
}

#endif
