/* bench: engine throughput on this machine (`make bench`).
 *
 * 1. The machine's AVX-512 peak, measured: 12 independent chains of VFMADD (fp32, 32 FLOPs per
 *    instruction) and of VDPBF16PS (bf16 pairs, 64 FLOPs) on every thread, best of 5; where the
 *    bf16 products run on AMX, also TDPBF16PS on four accumulator tiles (for reference: %peak
 *    stays against the fp32 FMA peak).
 * 2. The cblas_sgemm rate on training-shaped products, and gemm_bf16's on the same shapes; one
 *    layer's causal attention, forward and backward, at the head shapes of the three models.
 * 3. For tiny, small and medium (random tokens, batch 8 x 256, vocabularies 512, 4096, 8192):
 *    median step time over the timed steps after one warm-up step, tokens/s, achieved GFLOP/s and
 *    that as a fraction of the fp32 FMA peak, peak RSS and optimizer memory; each method in fp32
 *    and with bf16 base products (train.precision: bf16).
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
 * 4. QLoRA: per model, the bytes of the blocks' linear weights held in fp32, Q8_0 and NF4 with double
 *    quantization (embeddings and norms aside), and a LoRA r=8 q,v step on each (bf16 products
 *    where the CPU has them), its time and its peak RSS (reset after quantization: the peak of the
 *    step, not of the fp32 load before it). `bench STEPS SIZE qlora` runs only this table.
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

#include <immintrin.h>

#include "adapter.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "rng.h"
#include "simd.h"
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

/* GFLOP/s of back-to-back VFMADD213PS (bf16 = 0) or VDPBF16PS (bf16 = 1) on every thread: 12
 * independent accumulators cover the latency of two pipes; 0 when the CPU lacks the instruction. */
static double peak_rate(int bf16) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    if (bf16 && !bf16_supported()) return 0.0;
    const long iters = 20000000;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        volatile float sink = 0.0f;
        double t0 = ll_now();
        #pragma omp parallel
        {
            __m512 acc[12]; /* unrolled below, so that they live in registers */
            #pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps(1e-3f * (float)i);
            __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-4f);
            if (bf16) {
                for (long it = 0; it < iters; it++)
                    #pragma GCC unroll 12
                    for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)x, (__m512bh)y);
            } else {
                for (long it = 0; it < iters; it++)
                    #pragma GCC unroll 12
                    for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
            }
            float s = 0.0f;
            for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
            sink += s;
        }
        double t = ll_now() - t0;
        double flops = (double)iters * 12 * (bf16 ? 64 : 32) * omp_get_max_threads();
        if (flops / t / 1e9 > best) best = flops / t / 1e9;
        (void)sink;
    }
    return best;
#else
    (void)bf16;
    return 0.0;
#endif
}

/* GFLOP/s of back-to-back TDPBF16PS on every thread (16 x 32 by 32 x 16 bf16 into 16 x 16 fp32:
 * 16,384 FLOPs each), four independent accumulator tiles; 0 where gemm_bf16 does not run on AMX. */
static double amx_peak_rate(void) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    if (strcmp(bf16_kernel(), "amx") != 0) return 0.0; /* also asks Linux for the tile state */
    const long iters = 2000000;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = ll_now(), sink = 0.0;
        #pragma omp parallel
        {
            _Alignas(64) uint16_t ab[16 * 32];
            for (int i = 0; i < 16 * 32; i++) ab[i] = 0x3c00; /* bf16 2^-7: sums stay finite */
            ll_amx_config();
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_loadd(4, ab, 64);
            _tile_loadd(5, ab, 64);
            _tile_loadd(6, ab, 64);
            _tile_loadd(7, ab, 64);
            for (long it = 0; it < iters; it++) {
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _Alignas(64) float c[16 * 16];
            _tile_stored(0, c, 64);
            _tile_release();
            #pragma omp atomic update
            sink += c[0]; /* the sums are used: the loop stays */
        }
        double t = ll_now() - t0, flops = (double)iters * 4 * 16384 * omp_get_max_threads();
        if (flops / t / 1e9 > best) best = flops / t / 1e9;
        (void)sink;
    }
    return best;
#else
    return 0.0;
#endif
}

/* GFLOP/s of C[M,N] = A[M,K]·Bᵀ (B stored (N, K), a weight) by cblas_sgemm, or by gemm_bf16 on
 * the packed weight (bf16 = 1); median of reps after one warm-up product. */
static double gemm_rate(int M, int N, int K, int reps, int bf16) {
    if (bf16 && !bf16_supported()) return 0.0;
    float *A = ll_alloc_floats((size_t)M * K), *B = ll_alloc_floats((size_t)K * N), *C = ll_alloc_floats((size_t)M * N);
    uint16_t *P = bf16 ? ll_malloc(bf16_panel_elems(K, N), sizeof(uint16_t)) : NULL;
    Rng r;
    rng_seed(&r, 1);
    rng_fill_uniform(&r, A, (size_t)M * K, -1, 1);
    rng_fill_uniform(&r, B, (size_t)K * N, -1, 1);
    if (P) bf16_pack_panels(P, B, K, N, 1);
    double t[16];
    for (int i = 0; i <= reps; i++) {
        double t0 = ll_now();
        if (P) gemm_bf16(C, N, A, K, P, M, N, K, 0);
        else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        if (i > 0) t[i - 1] = ll_now() - t0;
    }
    ll_free(A), ll_free(B), ll_free(C), ll_free(P);
    return 2.0 * M * N * K / median(t, reps) / 1e9;
}

/* One layer's causal attention at batch 8 x 256 with NH heads of HS (the kernels of
 * ops_attention.c): median forward and backward times over reps after a warm-up, and GFLOP/s by the
 * causal count, each of the 2 forward and 4 backward products B·NH·T(T+1)/2·HS·2 FLOPs. */
static void attention_rate(int NH, int HS, int reps, double *fwd_ms, double *bwd_ms, double *gflops) {
    const int B = 8, T = 256;
    size_t nq = (size_t)B * T * NH * HS;
    float *q = ll_alloc_floats(nq), *k = ll_alloc_floats(nq), *v = ll_alloc_floats(nq), *o = ll_alloc_floats(nq);
    float *dq = ll_alloc_floats(nq), *dk = ll_alloc_floats(nq), *dv = ll_alloc_floats(nq), *dout = ll_alloc_floats(nq);
    float *p = ll_alloc_floats((size_t)B * NH * T * T);
    float *scratch = ll_alloc_floats((size_t)omp_get_max_threads() * attention_scratch_floats(T, HS));
    Rng r;
    rng_seed(&r, 3);
    rng_fill_uniform(&r, q, nq, -1, 1), rng_fill_uniform(&r, k, nq, -1, 1);
    rng_fill_uniform(&r, v, nq, -1, 1), rng_fill_uniform(&r, dout, nq, -1, 1);
    double tf[32], tb[32];
    for (int i = 0; i <= reps; i++) {
        double t0 = ll_now();
        attention_forward(o, p, q, k, v, scratch, B, T, NH, NH, HS);
        double t1 = ll_now();
        attention_backward(dq, dk, dv, dout, p, q, k, v, scratch, B, T, NH, NH, HS);
        double t2 = ll_now();
        if (i > 0) tf[i - 1] = t1 - t0, tb[i - 1] = t2 - t1;
    }
    *fwd_ms = 1e3 * median(tf, reps), *bwd_ms = 1e3 * median(tb, reps);
    *gflops = 6.0 * B * NH * (T * (T + 1.0) / 2) * HS * 2 / ((*fwd_ms + *bwd_ms) * 1e-3) / 1e9;
    ll_free(q), ll_free(k), ll_free(v), ll_free(o), ll_free(dq), ll_free(dk), ll_free(dv), ll_free(dout);
    ll_free(p), ll_free(scratch);
}

typedef struct {
    const char *name;
    int C, L, NH, F, V;
} Size;

typedef struct {
    double step_s, tokens_per_s, gflops, frac, peak_mb, optim_mb;
    size_t trainable;
    double base_bytes; /* the blocks' linear weights as held (model_linear_bytes) */
} Result;

/* Resets the peak RSS (VmHWM) to the current RSS, so that a later reading is the step's peak and
 * not the fp32 load before quantization (Linux: clear_refs 5). 0 when it could not. */
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static size_t peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss / 1024;
}

typedef enum { MODE_FULL, MODE_LORA, MODE_VERA, MODE_ADALORA, MODE_DORA } Mode;
static const char *const mode_names[] = {"full", "lora", "vera", "adalora", "dora"};

static Result bench_one(const Size *s, Mode mode, int bf16, QuantFormat quant, int B, int T, int steps, double peak) {
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
    if (quant && model_quantize_base(&m, quant, 1, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
    }
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
    model_release_fp32(&m);
    if (quant) reset_peak_rss();
    if (model_set_bf16(&m, bf16, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
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
        if (!a) model_base_changed(&m);
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
    res.frac = res.gflops / peak;
    res.optim_mb = (double)adamw_state_bytes(&opt) / 1048576.0;
    res.trainable = opt.n;
    res.peak_mb = (double)peak_rss_mb();
    res.base_bytes = (double)model_linear_bytes(&m);
    batch_free(&b);
    adamw_free(&opt);
    adapter_free(a);
    model_free(&m);
    return res;
}

/* Runs fn in a forked child and reads back n doubles: the parent never starts an OpenMP thread
 * pool, because libgomp's pool does not survive fork() (a child of a parent that ran a parallel
 * region can hang in its first one), and each configuration's peak RSS is its own. */
static int in_child(void (*fn)(const void *arg, double *out), const void *arg, double *out, size_t n) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fds[0]);
        double *buf = calloc(n, sizeof(double));
        if (!buf) _exit(1);
        fn(arg, buf);
        ssize_t w = write(fds[1], buf, n * sizeof(double));
        _exit(w == (ssize_t)(n * sizeof(double)) ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], out, n * sizeof(double));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return got == (ssize_t)(n * sizeof(double)) && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Training-shaped products: N = 2048 rows against the medium model's weights. */
static const int SHAPES[3][3] = {{2048, 512, 512}, {2048, 1376, 512}, {2048, 8192, 512}};

/* Attention shapes (heads, head size) of tiny, small and medium. */
static const int ATT_SHAPES[3][2] = {{4, 32}, {8, 32}, {8, 64}};

/* out: peaks[2], sgemm[3], bf16[3], then per attention shape forward ms, backward ms, GFLOP/s */
static void measure_rates(const void *arg, double *out) {
    (void)arg;
    out[0] = peak_rate(0), out[1] = peak_rate(1), out[17] = amx_peak_rate();
    for (int i = 0; i < 3; i++) {
        out[2 + i] = gemm_rate(SHAPES[i][0], SHAPES[i][1], SHAPES[i][2], 7, 0);
        out[5 + i] = gemm_rate(SHAPES[i][0], SHAPES[i][1], SHAPES[i][2], 7, 1);
        attention_rate(ATT_SHAPES[i][0], ATT_SHAPES[i][1], 9, &out[8 + 3 * i], &out[9 + 3 * i], &out[10 + 3 * i]);
    }
}

typedef struct {
    const Size *size;
    Mode mode;
    int bf16, steps;
    double peak;
    QuantFormat quant;
} Job;

static void measure_job(const void *arg, double *out) {
    const Job *j = arg;
    Result r = bench_one(j->size, j->mode, j->bf16, j->quant, 8, 256, j->steps, j->peak);
    double v[8] = {r.step_s, r.tokens_per_s, r.gflops, r.frac, r.peak_mb, r.optim_mb, (double)r.trainable, r.base_bytes};
    memcpy(out, v, sizeof v);
}

int main(int argc, char **argv) {
    /* bench [STEPS [SIZE [METHOD [BASE]]]]: pick rows (tiny|small|medium, full|lora|..., fp32|bf16) */
    int steps = argc > 1 ? atoi(argv[1]) : 5;
    if (steps < 1 || steps > 60) steps = 5;
    const char *only_size = argc > 2 ? argv[2] : NULL, *only_mode = argc > 3 ? argv[3] : NULL;
    const char *only_base = argc > 4 ? argv[4] : NULL;
    const char *env_core = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS: %s\n", openblas_get_config());
    printf("kernels: %s (OPENBLAS_CORETYPE=%s), threads: %d, bf16 products: %s\n", openblas_get_corename(),
           env_core ? env_core : "unset", omp_get_max_threads(), bf16_supported() ? bf16_kernel() : "not on this CPU");
    double m[18];
    if (in_child(measure_rates, NULL, m, 18)) {
        fprintf(stderr, "bench: the peak and gemm measurements failed\n");
        return 1;
    }
    double peak = m[0], sgemm = (m[2] + m[3] + m[4]) / 3.0, bgemm = (m[5] + m[6] + m[7]) / 3.0;
    printf("AVX-512 peak GFLOP/s: fp32 FMA %.1f, bf16 dot %.1f", m[0], m[1]);
    if (m[17] > 0.0) printf("; AMX bf16 tiles %.1f", m[17]);
    printf("\n");
    printf("%-22s %10s %10s\n", "GFLOP/s (M x N x K)", "sgemm", "gemm_bf16");
    for (int i = 0; i < 3; i++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", SHAPES[i][0], SHAPES[i][1], SHAPES[i][2]);
        printf("%-22s %10.1f %10.1f\n", shape, m[2 + i], m[5 + i]);
    }
    printf("%-22s %10.1f %10.1f   (%.0f%% and %.0f%% of the fp32 FMA peak)\n\n", "mean", sgemm, bgemm,
           100 * sgemm / peak, 100 * bgemm / peak);
    printf("attention, one layer, batch 8 x 256 (fp32; GFLOP/s by the causal count)\n");
    printf("%-22s %10s %10s %10s\n", "heads x head size", "fwd ms", "bwd ms", "GFLOP/s");
    for (int i = 0; i < 3; i++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%d x %d", ATT_SHAPES[i][0], ATT_SHAPES[i][1]);
        printf("%-22s %10.2f %10.2f %10.1f\n", shape, m[8 + 3 * i], m[9 + 3 * i], m[10 + 3 * i]);
    }
    printf("\n");
    const Size sizes[] = {{"tiny", 128, 4, 4, 344, 512}, {"small", 256, 6, 8, 688, 4096}, {"medium", 512, 8, 8, 1376, 8192}};
    FILE *js = fopen("results/bench.json", "w");
    if (js)
        fprintf(js, "{\"openblas\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, \"fma_peak_gflops\": %.2f, "
                    "\"bf16_peak_gflops\": %.2f, \"sgemm_gflops\": %.2f, \"gemm_bf16_gflops\": %.2f, \"bf16_kernel\": \"%s\", \"amx_peak_gflops\": %.2f, ",
                openblas_get_config(), openblas_get_corename(), omp_get_max_threads(), peak, m[1], sgemm, bgemm,
                bf16_kernel(), m[17]);
    if (js) {
        fprintf(js, "\"attention\": [");
        for (int i = 0; i < 3; i++)
            fprintf(js, "%s{\"heads\": %d, \"head_size\": %d, \"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"gflops\": %.2f}",
                    i ? ", " : "", ATT_SHAPES[i][0], ATT_SHAPES[i][1], m[8 + 3 * i], m[9 + 3 * i], m[10 + 3 * i]);
        fprintf(js, "],\n\"runs\": [\n");
    }
    printf("FLOPs per step as in bench/bench.c's header; %%peak = achieved / fp32 FMA peak.\n");
    printf("%-7s %-8s %-5s %12s %9s %11s %9s %7s %10s %9s\n", "model", "method", "base", "trainable", "step s",
           "tokens/s", "GFLOP/s", "%peak", "optim MB", "peak MB");
    int first = 1;
    const int nb = bf16_supported() ? 2 : 1;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int last_mode = i + 1 == sizeof sizes / sizeof sizes[0] ? MODE_DORA : MODE_LORA; /* every method at medium */
        if (only_size && strcmp(only_size, sizes[i].name) != 0) continue;
        for (int mode = MODE_FULL; mode <= last_mode; mode++)
            for (int bf = 0; bf < nb; bf++) {
                if (only_mode && strcmp(only_mode, mode_names[mode]) != 0) continue;
                if (only_base && strcmp(only_base, bf ? "bf16" : "fp32") != 0) continue;
                Job job = {&sizes[i], (Mode)mode, bf, steps, peak, QUANT_NONE};
                double v[8];
                if (in_child(measure_job, &job, v, 8)) {
                    fprintf(stderr, "bench: %s %s failed\n", sizes[i].name, mode_names[mode]);
                    return 1;
                }
                Result r = {v[0], v[1], v[2], v[3], v[4], v[5], (size_t)v[6], v[7]};
                const char *base = bf ? "bf16" : "fp32";
                printf("%-7s %-8s %-5s %12zu %9.3f %11.0f %9.1f %6.1f%% %10.1f %9.0f\n", sizes[i].name, mode_names[mode],
                       base, r.trainable, r.step_s, r.tokens_per_s, r.gflops, 100 * r.frac, r.optim_mb, r.peak_mb);
                if (js)
                    fprintf(js, "%s  {\"model\": \"%s\", \"mode\": \"%s\", \"base\": \"%s\", \"trainable\": %zu, \"step_s\": %.5f, \"tokens_per_s\": %.1f, \"gflops\": %.2f, \"fraction_of_fma_peak\": %.4f, \"optimizer_mb\": %.2f, \"peak_rss_mb\": %.1f}",
                            first ? "" : ",\n", sizes[i].name, mode_names[mode], base, r.trainable, r.step_s,
                            r.tokens_per_s, r.gflops, r.frac, r.optim_mb, r.peak_mb);
                first = 0;
            }
    }
    /* QLoRA: the frozen base held in fp32, Q8_0 and NF4 with double quantization; LoRA r=8 on q,v;
     * products in bf16 where the CPU has AVX512_BF16. The quantized rows' peak RSS is reset after
     * quantization (the fp32 load is not the step's). */
    if (js) fprintf(js, "\n],\n\"qlora\": [\n");
    first = 1;
    if (!only_mode || strcmp(only_mode, "qlora") == 0) {
        printf("\nQLoRA: frozen base memory (the blocks' linear weights; embeddings and norms aside) and a LoRA "
               "r=8 q,v step, %s products\n", nb == 2 ? "bf16" : "fp32");
        printf("%-7s %-8s %11s %9s %9s %9s\n", "model", "base", "base MB", "x fp32", "step s", "peak MB");
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            if (only_size && strcmp(only_size, sizes[i].name) != 0) continue;
            const QuantFormat qs[3] = {QUANT_NONE, QUANT_Q8_0, QUANT_NF4};
            double fp32_bytes = 0, step_none = 0;
            for (int k = 0; k < 3; k++) {
                Job job = {&sizes[i], MODE_LORA, nb == 2, steps, peak, qs[k]};
                double v[8];
                if (in_child(measure_job, &job, v, 8)) {
                    fprintf(stderr, "bench: qlora %s %s failed\n", sizes[i].name, quant_format_name(qs[k]));
                    return 1;
                }
                if (k == 0) fp32_bytes = v[7], step_none = v[0];
                const char *name = k == 0 ? (nb == 2 ? "bf16" : "fp32") : k == 1 ? "q8_0" : "nf4+dq";
                printf("%-7s %-8s %11.2f %9.3f %9.3f %9.0f\n", sizes[i].name, name, v[7] / 1048576.0, v[7] / fp32_bytes,
                       v[0], v[4]);
                if (k == 2)
                    printf("%-7s nf4 step / %s step: %.2fx (target 1.5x at medium); nf4 base %.3f of fp32 (target 0.15)\n",
                           sizes[i].name, nb == 2 ? "bf16" : "fp32", v[0] / step_none, v[7] / fp32_bytes);
                if (js)
                    fprintf(js, "%s  {\"model\": \"%s\", \"base\": \"%s\", \"base_bytes\": %.0f, \"fraction_of_fp32\": %.4f, \"step_s\": %.5f, \"peak_rss_mb\": %.1f}",
                            first ? "" : ",\n", sizes[i].name, name, v[7], v[7] / fp32_bytes, v[0], v[4]);
                first = 0;
            }
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
