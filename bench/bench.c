/* bench: engine throughput on this machine (`make bench`).
 *
 * 1. The cblas_sgemm rate on training-shaped products (the ceiling a step is measured against).
 * 2. For tiny, small and medium (random tokens, batch 8 x 256, vocabularies 512, 4096, 8192):
 *    median step time over the timed steps after one warm-up step, tokens/s, achieved GFLOP/s and
 *    that as a fraction of the measured sgemm rate, peak RSS and optimizer memory.
 *
 * FLOPs per step (stated, so the figures can be checked):
 *   forward = N · (2·P_lin + 2·L·T·NH·HS)      P_lin = weights of every linear layer incl. the LM
 *                                             head; 2·L·T·NH·HS = causal scores + mixing (half the
 *                                             T x T square per head, 2 products x 2 FLOPs)
 *   full fine-tuning step = 3 · forward        (backward: input and weight gradients)
 *   adapter step = 2 · forward + 6·N·(adapter parameters)   (frozen weights get no weight
 *                                             gradient; the adapter's own products are small)
 * Methods: full fine-tuning and LoRA r=8 alpha=16 on q,v at every size; at medium also VeRA (r=256),
 * AdaLoRA (init_r 12) and DoRA (r=8), each in its own process so that its peak RSS is its own.
 * with N = B·T tokens. Kernels that ran: OpenBLAS's config string and core name are printed.
 *
 * Writes the same figures to results/bench.json. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adapter.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "train.h"

char *openblas_get_config(void);
char *openblas_get_corename(void);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double sgemm_rate(int M, int N, int K, int reps) {
    float *A = ll_alloc_floats((size_t)M * K), *B = ll_alloc_floats((size_t)K * N), *C = ll_alloc_floats((size_t)M * N);
    Rng r;
    rng_seed(&r, 1);
    rng_fill_uniform(&r, A, (size_t)M * K, -1, 1);
    rng_fill_uniform(&r, B, (size_t)K * N, -1, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
    double t[16];
    for (int i = 0; i < reps; i++) {
        double t0 = ll_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        t[i] = ll_now() - t0;
    }
    ll_free(A), ll_free(B), ll_free(C);
    return 2.0 * M * N * K / median(t, reps) / 1e9;
}

typedef struct {
    const char *name;
    int C, L, NH, F, V;
} Size;

typedef struct {
    double step_s, tokens_per_s, gflops, frac, peak_mb, optim_mb;
    size_t trainable;
} Result;

static size_t peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss / 1024;
}

typedef enum { MODE_FULL, MODE_LORA, MODE_VERA, MODE_ADALORA, MODE_DORA } Mode;
static const char *const mode_names[] = {"full", "lora", "vera", "adalora", "dora"};

static Result bench_one(const Size *s, Mode mode, int B, int T, int steps, double rate) {
    const int lora = mode != MODE_FULL;
    ModelConfig c = {0};
    c.V = s->V, c.C = s->C, c.L = s->L, c.NH = s->NH, c.NKV = s->NH, c.HS = s->C / s->NH, c.F = s->F;
    c.max_T = T, c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.02f, c.tied = 0;
    c.bos_id = 0, c.eos_id = 1, c.pad_id = 2;
    Model m;
    ModelOptions o = {B, T, 1, !lora};
    LLError e;
    if (model_init(&m, &c, &o, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
    }
    model_init_weights(&m, 1);
    Adapter *a = NULL;
    if (lora) {
        AdapterConfig ac;
        adapter_config_defaults(&ac, mode == MODE_VERA ? ADAPTER_VERA : mode == MODE_ADALORA ? ADAPTER_ADALORA : ADAPTER_LORA);
        if (mode == MODE_LORA || mode == MODE_DORA) ac.r = 8, ac.alpha = 16; /* VeRA r=256, AdaLoRA init_r 12: PEFT defaults */
        ac.use_dora = mode == MODE_DORA;
        ac.total_step = 1000, ac.tinit = 10, ac.tfinal = 10;
        if (adapter_create(&ac, &m, &a, &e)) {
            fprintf(stderr, "bench: %s\n", e.msg);
            exit(1);
        }
        adapter_attach(&m, a);
    }
    AdamW opt;
    adamw_init(&opt, 0.9f, 0.999f, 1e-8f, 0.0f);
    if (a) adamw_add(&opt, a->params, a->grads, a->n_params, 1);
    else adamw_add(&opt, m.params, m.grads, m.n_params, 1);
    adamw_ready(&opt);
    Batch b;
    batch_alloc(&b, B, T);
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) b.ids[i] = (int)rng_below(&r, (uint32_t)c.V), b.targets[i] = (int)rng_below(&r, (uint32_t)c.V);
    double t[64];
    for (int i = 0; i <= steps; i++) {
        double t0 = ll_now();
        adamw_zero_grad(&opt);
        model_forward(&m, &b, 1);
        model_backward(&m, &b, 1.0f);
        adamw_step(&opt, 1e-4f);
        if (i > 0) t[i - 1] = ll_now() - t0; /* step 0 is the warm-up */
    }
    Result res = {0};
    res.step_s = median(t, steps);
    double N = (double)B * T, P_lin = (double)c.V * c.C;
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        int in, out;
        model_module_dims(&c, mod, &in, &out);
        P_lin += (double)c.L * in * out;
    }
    double fwd = N * (2.0 * P_lin + 2.0 * c.L * T * c.NH * c.HS);
    double flops = lora ? 2.0 * fwd + 6.0 * N * (double)(a ? a->n_params : 0) : 3.0 * fwd;
    res.tokens_per_s = N / res.step_s;
    res.gflops = flops / res.step_s / 1e9;
    res.frac = res.gflops / rate;
    res.optim_mb = (double)adamw_state_bytes(&opt) / 1048576.0;
    res.trainable = opt.n;
    res.peak_mb = (double)peak_rss_mb();
    batch_free(&b);
    adamw_free(&opt);
    adapter_free(a);
    model_free(&m);
    return res;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 5;
    if (steps < 1 || steps > 60) steps = 5;
    const char *env_core = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS: %s\n", openblas_get_config());
    printf("kernels: %s (OPENBLAS_CORETYPE=%s), threads: %d\n", openblas_get_corename(), env_core ? env_core : "unset",
           omp_get_max_threads());
    /* Training-shaped products: N = 2048 rows against the medium model's weights. Measured in a
     * child process, like every configuration below: the parent never starts an OpenMP thread
     * pool, because libgomp's pool does not survive fork() (a child of a parent that ran a
     * parallel region can hang in its first one). */
    double rates[3];
    int fds[2];
    if (pipe(fds) != 0) return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        double r[3] = {sgemm_rate(2048, 512, 512, 7), sgemm_rate(2048, 1376, 512, 7), sgemm_rate(2048, 8192, 512, 5)};
        ssize_t w = write(fds[1], r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], rates, sizeof rates);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    if (got != (ssize_t)sizeof rates) {
        fprintf(stderr, "bench: the sgemm measurement failed\n");
        return 1;
    }
    double r1 = rates[0], r2 = rates[1], r3 = rates[2];
    double rate = (r1 + r2 + r3) / 3.0;
    printf("sgemm GFLOP/s: 2048x512x512 %.1f, 2048x1376x512 %.1f, 2048x8192x512 %.1f; mean %.1f\n\n", r1, r2, r3, rate);
    const Size sizes[] = {{"tiny", 128, 4, 4, 344, 512}, {"small", 256, 6, 8, 688, 4096}, {"medium", 512, 8, 8, 1376, 8192}};
    FILE *js = fopen("results/bench.json", "w");
    if (js) fprintf(js, "{\"openblas\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, \"sgemm_gflops\": %.2f, \"runs\": [\n",
                    openblas_get_config(), openblas_get_corename(), omp_get_max_threads(), rate);
    printf("%-7s %-7s %12s %9s %11s %9s %8s %10s %9s\n", "model", "method", "trainable", "step s", "tokens/s", "GFLOP/s",
           "%sgemm", "optim MB", "peak MB");
    int first = 1;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int last_mode = i + 1 == sizeof sizes / sizeof sizes[0] ? MODE_DORA : MODE_LORA; /* every method at medium */
        for (int mode = MODE_FULL; mode <= last_mode; mode++) {
            /* each configuration in its own process, so that its peak RSS is its own */
            int cfd[2];
            if (pipe(cfd) != 0) return 1;
            fflush(stdout);
            pid_t child = fork();
            if (child == 0) {
                close(cfd[0]);
                Result r = bench_one(&sizes[i], (Mode)mode, 8, 256, steps, rate);
                ssize_t w = write(cfd[1], &r, sizeof r);
                _exit(w == (ssize_t)sizeof r ? 0 : 1);
            }
            close(cfd[1]);
            Result r;
            ssize_t n_read = read(cfd[0], &r, sizeof r);
            close(cfd[0]);
            waitpid(child, NULL, 0);
            if (n_read != (ssize_t)sizeof r) {
                fprintf(stderr, "bench: %s %s failed\n", sizes[i].name, mode_names[mode]);
                return 1;
            }
            printf("%-7s %-7s %12zu %9.3f %11.0f %9.1f %7.1f%% %10.1f %9.0f\n", sizes[i].name, mode_names[mode],
                   r.trainable, r.step_s, r.tokens_per_s, r.gflops, 100 * r.frac, r.optim_mb, r.peak_mb);
            if (js)
                fprintf(js, "%s  {\"model\": \"%s\", \"mode\": \"%s\", \"trainable\": %zu, \"step_s\": %.5f, \"tokens_per_s\": %.1f, \"gflops\": %.2f, \"fraction_of_sgemm\": %.4f, \"optimizer_mb\": %.2f, \"peak_rss_mb\": %.1f}",
                        first ? "" : ",\n", sizes[i].name, mode_names[mode], r.trainable, r.step_s, r.tokens_per_s,
                        r.gflops, r.frac, r.optim_mb, r.peak_mb);
            first = 0;
        }
    }
    printf("\npeak RSS of the whole benchmark: %zu MB\n", peak_rss_mb());
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
        printf("wrote results/bench.json\n");
    }
    return 0;
}
