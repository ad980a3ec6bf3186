/* libFuzzer target for the adapter_config.json reader (engine/adapter.c, adapter_config_parse: the
 * first step of adapter_load). Built and run by `make fuzz` (see docs/TESTING.md).
 *
 * Seeds in tests/fuzz/adapter_config/: the configs adapter_save writes for LoRA (with patterns and
 * layers), DoRA, PiSSA, AdaLoRA (with a boolean rank_pattern) and VeRA, plus near-valid ones (an
 * unknown peft_type, a rank of 1e300, a non-string target). An accepted config with small ranks
 * goes on as adapter_load would: adapter_create on a tiny two-layer model, the method's
 * config_load on the same JSON (AdaLoRA's masks), and one training forward with the adapter
 * attached. The target aborts when a rejection is not a format or config error with a message.
 * Larger ranks are only parsed: they are valid, and a tiny model could not tell them apart.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { RANK_MAX = 32, B = 2, T = 4 };

static Model *tiny_model(void) {
    static Model m;
    static int ready;
    if (!ready) {
        ModelConfig c = {0};
        c.V = 32, c.C = 8, c.L = 2, c.NH = 2, c.NKV = 1, c.HS = 4, c.F = 12, c.max_T = 8;
        c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.02f, c.tied = 1;
        c.bos_id = 1, c.eos_id = 2, c.pad_id = 2;
        ModelOptions o = {B, T, 1, 0};
        LLError err;
        if (model_init(&m, &c, &o, &err) != LL_OK) abort();
        ready = 1;
    }
    model_init_weights(&m, 7); /* PiSSA rewrites the base weights: start each input afresh */
    return &m;
}

static int small_ranks(const AdapterConfig *c) {
    if (c->r > RANK_MAX || c->init_r > RANK_MAX || c->target_r > RANK_MAX) return 0;
    for (int i = 0; i < c->n_rank_pattern; i++)
        if (!(c->rank_pattern[i].value <= RANK_MAX)) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    AdapterConfig cfg;
    LLError err;
    err.msg[0] = '\0';
    LLStatus rc = adapter_config_parse((const char *)data, size, "fuzz/adapter_config.json", &cfg, &err);
    if (rc != LL_OK) {
        if ((rc != LL_ERR_FORMAT && rc != LL_ERR_CONFIG) || err.msg[0] == '\0') abort();
        return 0;
    }
    if (cfg.method != ADAPTER_LORA && cfg.method != ADAPTER_ADALORA && cfg.method != ADAPTER_VERA) abort();
    if (cfg.n_layers < 0 || cfg.n_layers > ADAPTER_MAX_LAYERS) abort();
    if (!small_ranks(&cfg)) return 0;
    Model *m = tiny_model();
    Adapter *a = NULL;
    rc = adapter_create(&cfg, m, &a, &err);
    if (rc != LL_OK) {
        if ((rc != LL_ERR_CONFIG && rc != LL_ERR_FORMAT) || a != NULL || err.msg[0] == '\0') abort();
        return 0;
    }
    if (a->ops->config_load) {
        cJSON *c = cJSON_ParseWithLength((const char *)data, size);
        if (!c) abort(); /* it parsed a moment ago */
        rc = a->ops->config_load(a, c, "fuzz/adapter_config.json", &err);
        cJSON_Delete(c);
        if (rc != LL_OK && (rc != LL_ERR_FORMAT || err.msg[0] == '\0')) abort();
    }
    if (rc == LL_OK) {
        int ids[B * T] = {1, 5, 6, 7, 1, 9, 10, 2}, targets[B * T] = {5, 6, 7, 8, 9, 10, 2, -1};
        Batch b = {B, T, ids, targets, NULL, NULL};
        adapter_attach(m, a);
        (void)model_forward(m, &b, 1);
        adapter_attach(m, NULL);
    }
    adapter_free(a);
    return 0;
}
