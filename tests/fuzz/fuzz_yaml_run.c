/* libFuzzer target for the path from a YAML experiment file to the runs it starts, without
 * training: config_load_text -> sweep_expand (every point resolved by config_resolve) -> what a
 * run and the sweep do with a resolved RunConfig before the first step: the plan printed as
 * `loralab sweep --dry-run` prints it (sweep_print_plan), the model sizes checked
 * (model_config_validate) and estimated (model_memory_estimate, as run.c's memory check), for the
 * first points a real model built (weights from a hash) and the point's adapter created on it
 * (adapter_create, as run_execute does after loading the base), and the SLURM array script
 * (slurm_estimate, slurm_emit) written into a scratch folder. Built and run by `make fuzz` from the
 * project root (presets are read from configs/models/), see docs/TESTING.md. Its seeds and
 * dictionary are the config target's (tests/fuzz/config/, config.dict).
 *
 * Besides memory errors (ASan) and undefined behaviour (UBSan), the target aborts when a rejection
 * is not an error status with a message, when a point's resolved config breaks its promises (a
 * 16-hex-digit key, canonical JSON that parses as an object, a method name, r >= 0 for the
 * adapter methods), when a validated model's estimate is not a positive finite number, or when an
 * adapter created on it has no trainable parameter. Plans whose raw size passes 512 points are not
 * expanded, models built only up to 2 million weights and for the first 4 points, so that the run
 * rate stays useful.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adapter.h"
#include "experiments/config.h"
#include "experiments/grid.h"
#include "experiments/slurm.h"
#include "experiments/sweep.h"
#include "model.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[512];

static int is_error(LLStatus rc, const LLError *err) {
    return (rc == LL_ERR_CONFIG || rc == LL_ERR_IO || rc == LL_ERR_FORMAT || rc == LL_ERR_NOMEM) && err->msg[0];
}

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_yaml_run: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* What run_execute does with rc before training, short of reading files: sizes, memory, adapter. */
static void preflight(const RunConfig *rc, int build) {
    ModelConfig mc = rc->base_model;
    if (mc.V <= 0) mc.V = rc->base_vocab > 0 ? rc->base_vocab : 256;
    LLError err = {0};
    LLStatus st = model_config_validate(&mc, &err);
    if (st) {
        if (!is_error(st, &err)) fail("model_config_validate failed without a message", NULL);
        return;
    }
    int full = rc->adapter.method == ADAPTER_FULL;
    ModelOptions mo = {rc->train.batch, rc->train.seq, 1, full};
    double need = model_memory_estimate(&mc, &mo);
    if (!(need > 0) || !isfinite(need)) fail("model_memory_estimate is not a positive number", rc->name);
    if (!build || full || model_param_count(&mc) > 1500000) return;
    ModelOptions small = {1, 8, 1, 0};
    Model m;
    memset(&m, 0, sizeof m);
    if (model_init(&m, &mc, &small, &err) != LL_OK) {
        model_free(&m);
        return;
    }
    /* Weights that are neither zero nor alike (DoRA takes row norms, PiSSA an SVD), filled by a
     * cheap hash: model_init_weights' Gaussian draws would take most of the target's time. */
    for (size_t i = 0; i < m.n_params; i++)
        m.params[i] = (float)((uint32_t)(i * 2654435761u) >> 22) / 1024.0f * 0.04f - 0.02f;
    Adapter *a = NULL;
    st = adapter_create(&rc->adapter, &m, &a, &err);
    if (st == LL_OK) {
        if (!a || a->n_params == 0) fail("adapter_create gave no trainable parameter", rc->name);
        adapter_free(a);
    } else if (!is_error(st, &err)) {
        fail("adapter_create failed without a message", NULL);
    }
    model_free(&m);
}

static void check_point(const SweepPoint *p, int i) {
    const RunConfig *rc = &p->rc;
    if (p->index != i || strlen(rc->key) != 16 || strspn(rc->key, "0123456789abcdef") != 16)
        fail("a point without a 16-hex-digit key", rc->key);
    cJSON *o = rc->canonical_json ? cJSON_Parse(rc->canonical_json) : NULL;
    if (!cJSON_IsObject(o)) fail("canonical JSON that is not an object", rc->canonical_json);
    cJSON_Delete(o);
    if (!adapter_method_name(rc->adapter.method)) fail("a point without a method name", rc->name);
    if (rc->adapter.method != ADAPTER_FULL && rc->adapter.r < 0) fail("a negative rank", rc->name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_dir, sizeof g_dir, "%s", fuzz_scratch_dir("yaml"));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ConfigDoc *doc = fuzz_load_yaml(data, size);
    if (!doc) return 0;
    LLError err = {0};
    if (fuzz_raw_points(&doc->sweep) <= 512) {
        SweepPlan plan;
        LLStatus rc = sweep_expand(doc, &plan, &err);
        if (rc == LL_OK) {
            if (plan.n < 1 || plan.n > SWEEP_MAX_POINTS || plan.n > plan.n_raw) fail("a plan of a wrong size", NULL);
            char *printed = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&printed, &len);
            if (!f) abort();
            sweep_print_plan(f, &plan, 0, 1);
            fclose(f);
            if (len == 0) fail("an empty printed plan", NULL);
            free(printed);
            for (int i = 0; i < plan.n; i++) {
                check_point(&plan.points[i], i);
                preflight(&plan.points[i].rc, i < 2);
            }
            SlurmOptions so;
            slurm_options_defaults(&so);
            so.chdir = g_dir;
            double mem = 0;
            int minutes = 0;
            slurm_estimate(&plan, &so, &mem, &minutes);
            if (!(mem >= 0) || minutes < 0) fail("a negative SLURM estimate", NULL);
            char script[600];
            snprintf(script, sizeof script, "%s/fuzz.sbatch", g_dir);
            err.msg[0] = '\0';
            rc = slurm_emit(&plan, "fuzz.yaml", NULL, 0, &so, script, &err);
            if (rc != LL_OK && !is_error(rc, &err)) fail("slurm_emit failed without a message", err.msg);
            unlink(script);
            sweep_plan_free(&plan);
        } else if (!is_error(rc, &err)) {
            fail("sweep_expand failed without a message", err.msg);
        }
    }
    config_doc_free(doc);
    return 0;
}
