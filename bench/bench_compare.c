/* bench_compare: loralab's side of `make bench-compare` (bench/compare.sh runs it and
 * bench/torch_reference.py, the PyTorch side, in alternating processes).
 *
 *   bench_compare prepare SIZE DIR       writes the shared starting point into DIR:
 *                                         DIR/model/  model folder (config.json + model.safetensors,
 *                                                     HF names), weights from model_init_weights(1)
 *                                         DIR/lora/   LoRA r=8, alpha=16 on q_proj,v_proj (PEFT layout;
 *                                                     A Kaiming-uniform from seed 3, B = 0)
 *                                         DIR/batch.bin  the one training batch (format below)
 *   bench_compare run DIR METHOD STEPS [PRECISION]
 *                                         METHOD full|lora: loads DIR, trains 1 warm-up step plus
 *                                         STEPS timed steps on the batch, prints one JSON object
 *                                         (first_loss, losses, step_s, median_step_s,
 *                                         tokens_per_s, peak_rss_mb, threads, kernels) and writes the first
 *                                         forward's logits at a few rows to
 *                                         DIR/logits_loralab_METHOD.bin for the logit comparison.
 *                                         PRECISION fp32 (default) or bf16 (train.precision: the
 *                                         base products in bf16; logits to ..._METHOD_bf16.bin)
 *   bench_compare bf16                    exit status 0 when this CPU runs bf16 products
 *
 * SIZE: tiny (d 128, 4 layers, 4 heads, ffn 344, vocab 512), small (256, 6, 8, 688, 4096), medium
 * (512, 8, 8, 1376, 8192), all untied with as many kv heads as heads (the shapes of `make bench`),
 * and gqa: tiny with 2 kv heads per 4 heads and a tied LM head, for parity only. Batch 8 x 256.
 *
 * batch.bin: little-endian int32: B, T, then ids[B*T], then targets[B*T] (row-major, position t
 * predicts targets[t]; -100 is ignored, HF's ignore_index). Each row is a window of T+1 random tokens
 * (ids = tokens 0..T-1, targets = tokens 1..T, as HF's label shift makes them), and row 0's last
 * target is -100, so that the ignored-row path runs on both sides.
 *
 * One step, the same on both sides: zero gradients, forward, mean cross-entropy, backward, AdamW
 * (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on matrices and LoRA factors, none on
 * norm weights), no clipping, the same batch every step. losses[i] is the loss of the forward of
 * step i, i.e. after i optimizer steps: losses[3] is the loss after 3 AdamW steps.
 *
 * Peak memory is this process's ru_maxrss. This program is a benchmark, not library code: it
 * prints and exits on errors. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "adapter.h"
#include "checkpoint.h"
#include "data.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "rng.h"
#include "train.h"

char *openblas_get_config(void);
char *openblas_get_corename(void);
int openblas_get_num_threads(void);

enum { BATCH_B = 8, BATCH_T = 256, MAX_STEPS = 200, N_LOGIT_POS = 4 };

static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.999f, ADAM_EPS = 1e-8f, WEIGHT_DECAY = 0.01f;

typedef struct {
    const char *name;
    int C, L, NH, NKV, F, V, tied;
} Size;

static const Size sizes[] = {
    {"tiny", 128, 4, 4, 4, 344, 512, 0},
    {"small", 256, 6, 8, 8, 688, 4096, 0},
    {"medium", 512, 8, 8, 8, 1376, 8192, 0},
    {"gqa", 128, 4, 4, 2, 344, 512, 1},
};

static void die(const char *what, const LLError *e) {
    fprintf(stderr, "bench_compare: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

/* The positions whose logits are compared: first, second, middle and last of every row. */
static void logit_positions(int T, int pos[N_LOGIT_POS]) {
    pos[0] = 0, pos[1] = 1, pos[2] = T / 2, pos[3] = T - 1;
}

static int prepare(const char *size_name, const char *dir) {
    const Size *s = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (strcmp(sizes[i].name, size_name) == 0) s = &sizes[i];
    if (!s) {
        fprintf(stderr, "bench_compare: unknown size '%s' (tiny, small, medium, gqa)\n", size_name);
        return 2;
    }
    ModelConfig c = {0};
    c.V = s->V, c.C = s->C, c.L = s->L, c.NH = s->NH, c.NKV = s->NKV, c.HS = s->C / s->NH, c.F = s->F;
    c.max_T = BATCH_T, c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.02f, c.tied = s->tied;
    c.bos_id = 0, c.eos_id = 1, c.pad_id = 2;
    ModelOptions o = {BATCH_B, BATCH_T, 0, 0};
    Model m;
    LLError e;
    char path[4096];
    if (model_init(&m, &c, &o, &e)) die("model_init", &e);
    model_init_weights(&m, 1);
    snprintf(path, sizeof path, "%s/model", dir);
    if (checkpoint_save(&m, NULL, NULL, path, &e)) die("checkpoint_save", &e);

    AdapterConfig ac;
    adapter_config_defaults(&ac, ADAPTER_LORA);
    ac.r = 8, ac.alpha = 16, ac.dropout = 0.0f, ac.seed = 3;
    ac.targets = (1u << MOD_Q) | (1u << MOD_V);
    Adapter *a = NULL;
    if (adapter_create(&ac, &m, &a, &e)) die("adapter_create", &e);
    snprintf(path, sizeof path, "%s/lora", dir);
    if (adapter_save(a, &m, path, NULL, &e)) die("adapter_save", &e);
    adapter_free(a);

    const int B = BATCH_B, T = BATCH_T;
    size_t n = 2 + 2 * (size_t)B * T;
    int32_t *buf = ll_malloc(n, sizeof(int32_t));
    buf[0] = B, buf[1] = T;
    int32_t *ids = buf + 2, *targets = ids + (size_t)B * T;
    Rng r;
    rng_seed(&r, 7);
    for (int b = 0; b < B; b++) {
        int32_t prev = (int32_t)rng_below(&r, (uint32_t)c.V);
        for (int t = 0; t < T; t++) {
            int32_t next = (int32_t)rng_below(&r, (uint32_t)c.V);
            ids[(size_t)b * T + t] = prev;
            targets[(size_t)b * T + t] = next;
            prev = next;
        }
    }
    targets[T - 1] = -100;
    snprintf(path, sizeof path, "%s/batch.bin", dir);
    if (ll_write_file_atomic(path, buf, n * sizeof(int32_t), &e)) die("writing the batch", &e);
    ll_free(buf);
    model_free(&m);
    return 0;
}

static void read_batch(const char *dir, Batch *b) {
    char path[4096], *text = NULL;
    size_t len = 0;
    LLError e;
    snprintf(path, sizeof path, "%s/batch.bin", dir);
    if (ll_read_file(path, &text, &len, &e)) die("reading the batch", &e);
    int32_t hdr[2];
    if (len < sizeof hdr) die(path, NULL);
    memcpy(hdr, text, sizeof hdr);
    size_t NT = (size_t)hdr[0] * hdr[1];
    if (hdr[0] < 1 || hdr[1] < 1 || len != (2 + 2 * NT) * sizeof(int32_t)) die("batch.bin has the wrong size", NULL);
    batch_alloc(b, hdr[0], hdr[1]);
    memcpy(b->ids, text + sizeof hdr, NT * sizeof(int32_t));
    memcpy(b->targets, text + sizeof hdr + NT * sizeof(int32_t), NT * sizeof(int32_t));
    ll_free(text);
}

static int run(const char *dir, const char *method, int steps, const char *precision) {
    int bf16 = strcmp(precision, "bf16") == 0;
    if (!bf16 && strcmp(precision, "fp32") != 0) {
        fprintf(stderr, "bench_compare: unknown precision '%s' (fp32, bf16)\n", precision);
        return 2;
    }
    int lora = strcmp(method, "lora") == 0;
    if (!lora && strcmp(method, "full") != 0) {
        fprintf(stderr, "bench_compare: unknown method '%s' (full, lora)\n", method);
        return 2;
    }
    if (steps < 1 || steps > MAX_STEPS - 1) {
        fprintf(stderr, "bench_compare: steps must be in [1, %d]\n", MAX_STEPS - 1);
        return 2;
    }
    LLError e;
    char path[4096];
    Batch b;
    read_batch(dir, &b);
    snprintf(path, sizeof path, "%s/model", dir);
    ModelConfig c;
    if (checkpoint_load_config(path, &c, &e)) die("checkpoint_load_config", &e);
    ModelOptions o = {b.B, b.T, 1, !lora};
    Model m;
    if (model_init(&m, &c, &o, &e)) die("model_init", &e);
    if (checkpoint_load_weights(path, &m, NULL, &e)) die("checkpoint_load_weights", &e);
    Adapter *a = NULL;
    if (lora) {
        snprintf(path, sizeof path, "%s/lora", dir);
        if (adapter_load(path, &m, &a, &e)) die("adapter_load", &e);
        adapter_attach(&m, a);
    }
    if (model_set_bf16(&m, bf16, &e)) die("model_set_bf16", &e);

    AdamW opt;
    adamw_init(&opt, BETA1, BETA2, ADAM_EPS, WEIGHT_DECAY);
    if (a) {
        adamw_add(&opt, a->params, a->grads, a->n_params, 1);
    } else {
        train_add_base_params(&opt, &m); /* decay on matrices only, as train.c */
    }
    adamw_ready(&opt);

    double t[MAX_STEPS], losses[MAX_STEPS];
    const int total = steps + 1; /* step 0 is the warm-up */
    for (int i = 0; i < total; i++) {
        double t0 = ll_now();
        adamw_zero_grad(&opt);
        losses[i] = model_forward(&m, &b, 1);
        if (i == 0) { /* logits of the first forward, before backward turns them into dlogits */
            int pos[N_LOGIT_POS];
            logit_positions(b.T, pos);
            size_t nrow = (size_t)b.B * N_LOGIT_POS, V = (size_t)c.V;
            float *rows = ll_alloc_floats(nrow * V);
            for (int bb = 0; bb < b.B; bb++)
                for (int k = 0; k < N_LOGIT_POS; k++)
                    memcpy(rows + ((size_t)bb * N_LOGIT_POS + k) * V, model_logits(&m, bb, pos[k]), V * sizeof(float));
            snprintf(path, sizeof path, "%s/logits_loralab_%s%s.bin", dir, method, bf16 ? "_bf16" : "");
            if (ll_write_file_atomic(path, rows, nrow * V * sizeof(float), &e)) die("writing logits", &e);
            ll_free(rows);
            t0 = ll_now(); /* the file write is not part of the step */
        }
        model_backward(&m, &b, 1.0f);
        adamw_step(&opt, LR);
        if (!a) model_base_changed(&m);
        t[i] = ll_now() - t0;
    }
    double sorted[MAX_STEPS];
    memcpy(sorted, t + 1, sizeof(double) * (size_t)steps);
    double step_s = median(sorted, steps); /* t stays in step order for the printout */
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("{\"side\": \"loralab\", \"method\": \"%s\", \"precision\": \"%s\", \"V\": %d, \"C\": %d, \"L\": %d, \"NH\": %d, \"NKV\": %d, "
           "\"tied\": %d, \"B\": %d, \"T\": %d, \"steps\": %d, \"first_loss\": %.9g, \"losses\": [",
           method, precision, c.V, c.C, c.L, c.NH, c.NKV, c.tied, b.B, b.T, steps, losses[0]);
    for (int i = 0; i < total; i++) printf("%s%.9g", i ? ", " : "", losses[i]);
    printf("], \"step_s\": [");
    for (int i = 1; i < total; i++) printf("%s%.6f", i > 1 ? ", " : "", t[i]);
    printf("], \"warmup_step_s\": %.6f, \"median_step_s\": %.6f, \"tokens_per_s\": %.1f, \"peak_rss_mb\": %.1f, "
           "\"trainable\": %zu, \"threads\": %d, \"blas_threads\": %d, \"kernels\": \"%s\", \"blas_config\": \"%s\", "
           "\"openblas_coretype\": \"%s\", \"bf16_kernel\": \"%s\"}\n",
           t[0], step_s, (double)b.B * b.T / step_s, peak_rss_mb(), opt.n, omp_get_max_threads(),
           openblas_get_num_threads(), openblas_get_corename(), openblas_get_config(), core ? core : "unset",
           bf16 ? bf16_kernel() : "none");
    adamw_free(&opt);
    adapter_free(a);
    model_free(&m);
    batch_free(&b);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "prepare") == 0) return prepare(argv[2], argv[3]);
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "run") == 0)
        return run(argv[2], argv[3], atoi(argv[4]), argc == 6 ? argv[5] : "fp32");
    if (argc == 2 && strcmp(argv[1], "bf16") == 0) return bf16_supported() ? 0 : 1;
    fprintf(stderr, "usage: bench_compare prepare SIZE DIR | bench_compare run DIR full|lora STEPS [fp32|bf16]\n"
                    "       bench_compare bf16   (exit 0 when this CPU runs bf16 products)\n");
    return 2;
}
