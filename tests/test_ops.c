/* Tests of engine/ops*.c: BLAS products against the naive reference, and finite-difference checks
 * of every backward. Each gradient check uses loss = Σ out ⊙ W for a fixed random W, perturbs every
 * input element by ±eps (central differences, loss accumulated in double) and compares with the
 * analytic gradient element by element: |a - n| <= atol + rtol * max(|a|, |n|). */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "ops.h"
#include "rng.h"
#include "simd.h"
#include "util.h"

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    Rng r;
    rng_seed(&r, seed);
    rng_fill_uniform(&r, x, n, -scale, scale);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static int close_enough(double a, double n, double atol, double rtol) {
    double m = fabs(a) > fabs(n) ? fabs(a) : fabs(n);
    return fabs(a - n) <= atol + rtol * m;
}

/* The op under test, as a loss of its (perturbable) input x given a fixed upstream weight. */
typedef double (*LossFn)(void *ctx, const float *x);

static void check_grad(const char *what, LossFn f, void *ctx, float *x, size_t n, const float *analytic,
                       float eps, double atol, double rtol) {
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + eps;
        double lp = f(ctx, x);
        x[i] = keep - eps;
        double lm = f(ctx, x);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * eps);
        ck_assert_msg(close_enough(analytic[i], num, atol, rtol), "%s: element %zu analytic %.6g numeric %.6g", what,
                      i, (double)analytic[i], num);
    }
}

/* simd.h's exp against exp in double: at most 2 ulp over [-87, 88.7] (a million evenly spaced points),
 * and the edges: 0 below the range, inf above it, NaN through. */
START_TEST(test_simd_exp) {
#if LL_SIMD
    double worst = 0.0;
    float at = 0.0f;
    for (int i = 0; i <= 1000000; i++) {
        float x = -87.0f + 175.7f * (float)i / 1e6f, y[16];
        _mm512_storeu_ps(y, ll_exp16(_mm512_set1_ps(x)));
        double e = exp((double)x), ulp = (double)nextafterf((float)e, INFINITY) - (float)e;
        if (fabs(y[0] - e) / ulp > worst) worst = fabs(y[0] - e) / ulp, at = x;
    }
    ck_assert_msg(worst <= 2.0, "exp: %.2f ulp at %g", worst, at);
    const float in[5] = {-INFINITY, -100.0f, 100.0f, INFINITY, NAN};
    float y[16];
    for (int i = 0; i < 5; i++) {
        _mm512_storeu_ps(y, ll_exp16(_mm512_set1_ps(in[i])));
        if (i < 2) ck_assert(y[0] == 0.0f);
        else if (i < 4) ck_assert(isinf(y[0]) && y[0] > 0);
        else ck_assert(isnan(y[0]));
    }
#endif
}
END_TEST

/* bf16 products: the kernel against the same sum in double from bf16-rounded inputs (the
 * reference indexes the fp32 weight directly, so the packing is checked too), over shapes with
 * every tail (M not a multiple of the 12-row microkernel or of the 32-row AMX block, N not of the
 * 32-column panel, K odd and longer than one 512 block), overwrite and accumulate, both weight
 * orientations, and 1 vs 2 threads bitwise. Both kernels where the CPU has AMX: the vector one
 * (_i = 0) and the tile one (_i = 1). Skipped, and said so, on a CPU without AVX512_BF16. */
START_TEST(test_bf16_gemm) {
    if (_i == 1 && !bf16_use_amx(1)) {
        fprintf(stderr, "ops: no AMX here (CPU or OS), the AMX bf16 kernel not tested\n");
        return;
    }
    if (_i == 0) bf16_use_amx(0);
    ck_assert_str_eq(bf16_kernel(), !bf16_supported() ? "none" : _i ? "amx" : "avx512bf16");
    ck_assert(bf16_round(1.0f) == 1.0f);
    ck_assert(bf16_round(1.00390625f) == 1.0f);      /* 1 + 2^-8: a tie, to even (down) */
    ck_assert(bf16_round(1.01171875f) == 1.015625f); /* 1 + 3·2^-8: a tie, to even (up) */
    ck_assert(bf16_round(1.0048828125f) == 1.0078125f); /* above the tie: up */
    ck_assert(bf16_round(1e-39f) == 0.0f && signbit(bf16_round(-1e-39f))); /* denormals: signed zero, as the ISA */
    ck_assert(isnan(bf16_round(NAN)) && isinf(bf16_round(INFINITY)));
    if (!bf16_supported()) {
        fprintf(stderr, "ops: this CPU has no AVX512_BF16, bf16 products not tested\n");
        return;
    }
    const int shapes[][3] = {{1, 1, 1}, {13, 33, 7}, {37, 45, 29}, {100, 70, 301}, {25, 96, 600}, {200, 40, 64}, {300, 100, 300}, {130, 300, 160}, {1601, 40, 40}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
        float *A = ll_alloc_floats((size_t)M * K), *W = ll_alloc_floats((size_t)N * K);
        float *C = ll_alloc_floats((size_t)M * N), *C0 = ll_alloc_floats((size_t)M * N);
        float *C1 = ll_alloc_floats((size_t)M * N);
        uint16_t *P = ll_malloc(bf16_panel_elems(K, N), sizeof(uint16_t));
        fill(A, (size_t)M * K, 10 + t, 1.0f);
        fill(W, (size_t)N * K, 20 + t, 1.0f);
        fill(C0, (size_t)M * N, 30, 1.0f);
        for (int trans = 0; trans < 2; trans++) {
            /* trans: W is (N, K) used as Wᵀ; else the same floats read as a (K, N) matrix. */
            bf16_pack_panels(P, W, K, N, trans);
            for (int acc = 0; acc < 2; acc++) {
                memcpy(C, C0, sizeof(float) * M * N);
                memcpy(C1, C0, sizeof(float) * M * N);
                gemm_bf16(C, N, A, K, P, M, N, K, acc);
                for (int i = 0; i < M; i++)
                    for (int n = 0; n < N; n++) {
                        double r = acc ? C0[(size_t)i * N + n] : 0.0;
                        for (int k = 0; k < K; k++)
                            r += (double)bf16_round(A[(size_t)i * K + k]) *
                                 bf16_round(trans ? W[(size_t)n * K + k] : W[(size_t)k * N + n]);
                        float c = C[(size_t)i * N + n];
                        ck_assert_msg(close_enough(c, r, 2e-6 * K, 1e-5), "%dx%dx%d trans %d acc %d: C[%d,%d] %g vs %g",
                                      M, N, K, trans, acc, i, n, c, r);
                    }
                int threads = omp_get_max_threads();
                omp_set_num_threads(1);
                gemm_bf16(C1, N, A, K, P, M, N, K, acc);
                omp_set_num_threads(threads);
                ck_assert_msg(memcmp(C, C1, sizeof(float) * M * N) == 0, "%dx%dx%d: 1 and %d threads differ", M, N, K,
                              threads);
            }
        }
        /* the weight-gradient form: C = Atᵀ·B with At = A's floats read as [K, M], B = W's as [K, N] */
        uint16_t *scratch = ll_malloc(bf16_panel_elems(K, N), sizeof(uint16_t));
        for (int acc = 0; acc < 2; acc++) {
            memcpy(C, C0, sizeof(float) * M * N);
            memcpy(C1, C0, sizeof(float) * M * N);
            bf16_pack_panels(scratch, W, K, N, 0);
            gemm_bf16_tn(C, N, A, M, scratch, M, N, K, acc);
            for (int i = 0; i < M; i++)
                for (int n = 0; n < N; n++) {
                    double r = acc ? C0[(size_t)i * N + n] : 0.0;
                    for (int k = 0; k < K; k++)
                        r += (double)bf16_round(A[(size_t)k * M + i]) * bf16_round(W[(size_t)k * N + n]);
                    ck_assert_msg(close_enough(C[(size_t)i * N + n], r, 2e-6 * K, 1e-5), "%dx%dx%d tn acc %d: C[%d,%d] %g vs %g",
                                  M, N, K, acc, i, n, C[(size_t)i * N + n], r);
                }
            int threads = omp_get_max_threads();
            omp_set_num_threads(1);
            gemm_bf16_tn(C1, N, A, M, scratch, M, N, K, acc);
            omp_set_num_threads(threads);
            ck_assert(memcmp(C, C1, sizeof(float) * M * N) == 0);
        }
        ll_free(scratch);
        ll_free(A), ll_free(W), ll_free(C), ll_free(C0), ll_free(C1), ll_free(P);
    }
}
END_TEST

START_TEST(test_matmul_blas_vs_naive) {
    const int N = 37, in = 53, out = 29;
    float *x = ll_alloc_floats((size_t)N * in), *W = ll_alloc_floats((size_t)out * in);
    float *y = ll_alloc_floats((size_t)N * out), *yr = ll_alloc_floats((size_t)N * out);
    fill(x, (size_t)N * in, 1, 1.0f);
    fill(W, (size_t)out * in, 2, 1.0f);
    matmul_forward(y, x, W, N, in, out);
    matmul_forward_naive(yr, x, W, N, in, out);
    for (int i = 0; i < N * out; i++) ck_assert_msg(close_enough(y[i], yr[i], 1e-5, 1e-5), "y[%d] %g vs %g", i, y[i], yr[i]);
    ll_free(x), ll_free(W), ll_free(y), ll_free(yr);
}
END_TEST

/* ---- matmul gradients ---- */
typedef struct {
    int N, in, out;
    const float *x, *W, *up;
    int wrt_w;
    float *y;
} MatCtx;

static double mat_loss(void *c, const float *v) {
    MatCtx *m = c;
    matmul_forward(m->y, m->wrt_w ? m->x : v, m->wrt_w ? v : m->W, m->N, m->in, m->out);
    return dot(m->y, m->up, (size_t)m->N * m->out);
}

START_TEST(test_matmul_grad) {
    const int N = 5, in = 7, out = 6;
    float *x = ll_alloc_floats((size_t)N * in), *W = ll_alloc_floats((size_t)out * in), *up = ll_alloc_floats((size_t)N * out);
    float *y = ll_alloc_floats((size_t)N * out), *dx = ll_alloc_floats((size_t)N * in), *dW = ll_alloc_floats((size_t)out * in);
    fill(x, (size_t)N * in, 3, 1.0f), fill(W, (size_t)out * in, 4, 1.0f), fill(up, (size_t)N * out, 5, 1.0f);
    dx[0] = 123.0f; /* acc = 0 must overwrite */
    matmul_backward(dx, dW, up, x, W, N, in, out, 0);
    MatCtx c = {N, in, out, x, W, up, 0, y};
    check_grad("matmul dx", mat_loss, &c, x, (size_t)N * in, dx, 1e-2f, 1e-3, 1e-3);
    c.wrt_w = 1;
    check_grad("matmul dW", mat_loss, &c, W, (size_t)out * in, dW, 1e-2f, 1e-3, 1e-3);
    ll_free(x), ll_free(W), ll_free(up), ll_free(y), ll_free(dx), ll_free(dW);
}
END_TEST

/* ---- RMSNorm ---- */
typedef struct {
    int N, C;
    const float *x, *w, *up;
    int wrt_w;
    float *y, *rstd;
} NormCtx;

static double norm_loss(void *c, const float *v) {
    NormCtx *m = c;
    rmsnorm_forward(m->y, m->rstd, m->wrt_w ? m->x : v, m->wrt_w ? v : m->w, m->N, m->C, 1e-6f);
    return dot(m->y, m->up, (size_t)m->N * m->C);
}

START_TEST(test_rmsnorm_grad) {
    const int N = 4, C = 9;
    float *x = ll_alloc_floats(N * C), *w = ll_alloc_floats(C), *up = ll_alloc_floats(N * C), *y = ll_alloc_floats(N * C);
    float *rstd = ll_alloc_floats(N), *dx = ll_alloc_floats(N * C), *dw = ll_alloc_floats(C);
    fill(x, N * C, 6, 2.0f), fill(w, C, 7, 1.0f), fill(up, N * C, 8, 1.0f);
    rmsnorm_forward(y, rstd, x, w, N, C, 1e-6f);
    /* exact small case: y = w x / sqrt(mean x² + eps) */
    double ss = 0;
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    ck_assert(close_enough(y[3], w[3] * x[3] / sqrt(ss / C + 1e-6), 1e-6, 1e-5));
    rmsnorm_backward(dx, dw, up, x, w, rstd, N, C, 0);
    NormCtx c = {N, C, x, w, up, 0, y, rstd};
    check_grad("rmsnorm dx", norm_loss, &c, x, N * C, dx, 1e-3f, 1e-3, 2e-3);
    c.wrt_w = 1;
    check_grad("rmsnorm dw", norm_loss, &c, w, C, dw, 1e-3f, 1e-3, 2e-3);
    ll_free(x), ll_free(w), ll_free(up), ll_free(y), ll_free(rstd), ll_free(dx), ll_free(dw);
}
END_TEST

/* ---- RoPE ---- */
typedef struct {
    int B, T, NH, HS;
    const float *cosv, *sinv, *up;
    float *y;
} RopeCtx;

static double rope_loss(void *c, const float *v) {
    RopeCtx *m = c;
    size_t n = (size_t)m->B * m->T * m->NH * m->HS;
    memcpy(m->y, v, n * sizeof(float));
    rope_forward(m->y, m->cosv, m->sinv, m->B, m->T, m->NH, m->HS);
    return dot(m->y, m->up, n);
}

START_TEST(test_rope) {
    const int B = 2, T = 5, NH = 3, HS = 8, n = B * T * NH * HS;
    float *cosv = ll_alloc_floats(T * HS / 2), *sinv = ll_alloc_floats(T * HS / 2);
    rope_tables(cosv, sinv, T, HS, 10000.0f);
    /* inv_freq_1 = 10000^(-2/8) = 0.1; position 3 angle 0.3 */
    ck_assert(close_enough(cosv[3 * 4 + 1], cos(0.3), 1e-6, 1e-6));
    float *x = ll_alloc_floats(n), *up = ll_alloc_floats(n), *y = ll_alloc_floats(n), *d = ll_alloc_floats(n);
    fill(x, n, 9, 1.0f), fill(up, n, 10, 1.0f);
    /* HF rotate-half: pair (j, j+HS/2) at position p */
    memcpy(y, x, sizeof(float) * n);
    rope_forward(y, cosv, sinv, B, T, NH, HS);
    int p = 3, h = 1, j = 1;
    const float *xv = x + ((size_t)(0 * T + p) * NH + h) * HS;
    const float *yv = y + ((size_t)(0 * T + p) * NH + h) * HS;
    double c = cos(0.3), s = sin(0.3);
    ck_assert(close_enough(yv[j], xv[j] * c - xv[j + 4] * s, 1e-6, 1e-5));
    ck_assert(close_enough(yv[j + 4], xv[j + 4] * c + xv[j] * s, 1e-6, 1e-5));
    memcpy(d, up, sizeof(float) * n);
    rope_backward(d, cosv, sinv, B, T, NH, HS);
    RopeCtx ctx = {B, T, NH, HS, cosv, sinv, up, y};
    check_grad("rope", rope_loss, &ctx, x, n, d, 1e-2f, 1e-3, 1e-3);
    ll_free(cosv), ll_free(sinv), ll_free(x), ll_free(up), ll_free(y), ll_free(d);
}
END_TEST

/* ---- attention ---- */
typedef struct {
    int B, T, NH, NKV, HS;
    size_t nq, nk; /* floats of q (and out, up, dq) and of k (and v, dk, dv) */
    float *q, *k, *v, *out, *probs, *up, *dq, *dk, *dv, *scratch;
} AttCtx;

/* An attention problem of these sizes: every buffer allocated (zeroed), q, k, v and the upstream
 * gradient up filled from the seeds seed .. seed + 3. */
static void att_init(AttCtx *a, int B, int T, int NH, int NKV, int HS, uint64_t seed) {
    a->B = B, a->T = T, a->NH = NH, a->NKV = NKV, a->HS = HS;
    a->nq = (size_t)B * T * NH * HS, a->nk = (size_t)B * T * NKV * HS;
    a->q = ll_alloc_floats(a->nq), a->k = ll_alloc_floats(a->nk), a->v = ll_alloc_floats(a->nk);
    a->out = ll_alloc_floats(a->nq), a->probs = ll_alloc_floats((size_t)B * NH * T * T), a->up = ll_alloc_floats(a->nq);
    a->dq = ll_alloc_floats(a->nq), a->dk = ll_alloc_floats(a->nk), a->dv = ll_alloc_floats(a->nk);
    a->scratch = ll_alloc_floats((size_t)omp_get_max_threads() * attention_scratch_floats(T, HS));
    fill(a->q, a->nq, seed, 1.0f), fill(a->k, a->nk, seed + 1, 1.0f), fill(a->v, a->nk, seed + 2, 1.0f);
    fill(a->up, a->nq, seed + 3, 1.0f);
}

/* Frees every buffer of att_init. */
static void att_free(AttCtx *a) {
    ll_free(a->q), ll_free(a->k), ll_free(a->v), ll_free(a->out), ll_free(a->probs), ll_free(a->up);
    ll_free(a->dq), ll_free(a->dk), ll_free(a->dv), ll_free(a->scratch);
}

/* attention_forward and attention_backward on the buffers of a (backward accumulates into dq, dk, dv). */
static void att_forward(AttCtx *a) {
    attention_forward(a->out, a->probs, a->q, a->k, a->v, a->scratch, a->B, a->T, a->NH, a->NKV, a->HS);
}

static void att_backward(AttCtx *a) {
    attention_backward(a->dq, a->dk, a->dv, a->up, a->probs, a->q, a->k, a->v, a->scratch, a->B, a->T, a->NH, a->NKV,
                       a->HS);
}

static double att_loss(void *c, const float *x) {
    AttCtx *m = c;
    (void)x; /* the perturbed buffer is one of q, k, v in place */
    att_forward(m);
    return dot(m->out, m->up, m->nq);
}

START_TEST(test_attention_grad) {
    const int T = 6, HS = 4;
    AttCtx a;
    att_init(&a, 2, T, 4, 2, HS, 11);
    att_forward(&a);
    /* causality: the first query attends only to itself, so its output is v of position 0 */
    for (int d = 0; d < HS; d++) ck_assert(close_enough(a.out[d], a.v[d], 1e-6, 1e-6));
    for (int i = 0; i < T; i++) {
        double s = 0;
        for (int j = 0; j < T; j++) {
            s += a.probs[i * T + j];
            if (j > i) ck_assert(a.probs[i * T + j] == 0.0f);
        }
        ck_assert(close_enough(s, 1.0, 1e-6, 1e-6));
    }
    att_backward(&a);
    check_grad("attention dq", att_loss, &a, a.q, a.nq, a.dq, 1e-2f, 1e-3, 5e-3);
    check_grad("attention dk", att_loss, &a, a.k, a.nk, a.dk, 1e-2f, 1e-3, 5e-3);
    check_grad("attention dv", att_loss, &a, a.v, a.nk, a.dv, 1e-2f, 1e-3, 5e-3);
    att_free(&a);
}
END_TEST

/* Longer than one row block (ops_attention.c blocks query rows by 64): the blocked products must
 * give the full causal attention. Forward against a direct double computation, backward by finite
 * differences on a spread of elements. */
START_TEST(test_attention_blocks) {
    const int T = 150, NH = 2, HS = 4;
    AttCtx a;
    att_init(&a, 1, T, NH, 1, HS, 31);
    att_forward(&a);
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < T; i++) {
            double sc[150], mx = -1e300, sum = 0.0;
            for (int j = 0; j <= i; j++) {
                double d = 0.0;
                for (int c = 0; c < HS; c++) d += (double)a.q[((size_t)i * NH + h) * HS + c] * a.k[(size_t)j * HS + c];
                sc[j] = d / sqrt((double)HS);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = 0; j <= i; j++) sum += sc[j] = exp(sc[j] - mx);
            for (int c = 0; c < HS; c++) {
                double o = 0.0;
                for (int j = 0; j <= i; j++) o += sc[j] / sum * a.v[(size_t)j * HS + c];
                float got = a.out[((size_t)i * NH + h) * HS + c];
                ck_assert_msg(close_enough(got, o, 1e-5, 1e-4), "head %d row %d: %g vs %g", h, i, got, o);
            }
        }
    att_backward(&a);
    float *bufs[3] = {a.q, a.k, a.v}, *grads[3] = {a.dq, a.dk, a.dv};
    size_t ns[3] = {a.nq, a.nk, a.nk};
    for (int w = 0; w < 3; w++)
        for (size_t i = 0; i < ns[w]; i += 13) { /* a spread over every row block */
            float keep = bufs[w][i];
            bufs[w][i] = keep + 1e-2f;
            double lp = att_loss(&a, NULL);
            bufs[w][i] = keep - 1e-2f;
            double lm = att_loss(&a, NULL);
            bufs[w][i] = keep;
            double num = (lp - lm) / 2e-2;
            ck_assert_msg(close_enough(grads[w][i], num, 2e-3, 1e-2), "d%c[%zu]: analytic %g numeric %g", "qkv"[w], i,
                          grads[w][i], num);
        }
    att_free(&a);
}
END_TEST

/* Head sizes of real models (32 and 48: one and two 32-column tiles, the second one partial), T
 * not a multiple of the 12-row tiles, the 16-lane vectors or the 64-row blocks, grouped kv heads:
 * forward and all three gradients against the same attention computed directly in double. */
static void att_reference_check(int B, int T, int NH, int NKV, int HS) {
    AttCtx a;
    att_init(&a, B, T, NH, NKV, HS, 41);
    att_forward(&a);
    att_backward(&a);
    const int ldq = NH * HS, ldk = NKV * HS, group = NH / NKV;
    double *dq = calloc(a.nq, sizeof(double)), *dk = calloc(a.nk, sizeof(double)), *dv = calloc(a.nk, sizeof(double));
    double *p = malloc(sizeof(double) * T), *dp = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = a.q + ((size_t)b * T + i) * ldq + h * HS, *up = a.up + ((size_t)b * T + i) * ldq + h * HS;
                const float *kb = a.k + (size_t)b * T * ldk + (h / group) * HS, *vb = a.v + (size_t)b * T * ldk + (h / group) * HS;
                double mx = -1e300, sum = 0.0, dot_pdp = 0.0;
                for (int j = 0; j <= i; j++) {
                    double d = 0.0;
                    for (int c = 0; c < HS; c++) d += (double)qi[c] * kb[(size_t)j * ldk + c];
                    p[j] = d / sqrt((double)HS);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - mx);
                for (int j = 0; j <= i; j++) p[j] /= sum;
                for (int c = 0; c < HS; c++) {
                    double o = 0.0;
                    for (int j = 0; j <= i; j++) o += p[j] * vb[(size_t)j * ldk + c];
                    float got = a.out[((size_t)b * T + i) * ldq + h * HS + c];
                    ck_assert_msg(close_enough(got, o, 1e-5, 1e-4), "HS %d out[b %d h %d i %d c %d]: %g vs %g", HS, b, h,
                                  i, c, got, o);
                }
                for (int j = 0; j <= i; j++) {
                    ck_assert(close_enough(a.probs[(((size_t)b * NH + h) * T + i) * T + j], p[j], 1e-6, 1e-4));
                    dp[j] = 0.0;
                    for (int c = 0; c < HS; c++) dp[j] += (double)up[c] * vb[(size_t)j * ldk + c];
                    dot_pdp += p[j] * dp[j];
                }
                for (int j = 0; j <= i; j++) {
                    double ds = p[j] * (dp[j] - dot_pdp) / sqrt((double)HS);
                    for (int c = 0; c < HS; c++) {
                        size_t kj = ((size_t)b * T + j) * ldk + (h / group) * HS + c;
                        dq[((size_t)b * T + i) * ldq + h * HS + c] += ds * a.k[kj];
                        dk[kj] += ds * qi[c];
                        dv[kj] += p[j] * up[c];
                    }
                }
            }
    for (size_t i = 0; i < a.nq; i++)
        ck_assert_msg(close_enough(a.dq[i], dq[i], 1e-5, 1e-4), "HS %d dq[%zu]: %g vs %g", HS, i, a.dq[i], dq[i]);
    for (size_t i = 0; i < a.nk; i++) {
        ck_assert_msg(close_enough(a.dk[i], dk[i], 1e-5, 1e-4), "HS %d dk[%zu]: %g vs %g", HS, i, a.dk[i], dk[i]);
        ck_assert_msg(close_enough(a.dv[i], dv[i], 1e-5, 1e-4), "HS %d dv[%zu]: %g vs %g", HS, i, a.dv[i], dv[i]);
    }
    free(dq), free(dk), free(dv), free(p), free(dp);
    att_free(&a);
}

START_TEST(test_attention_head_sizes) {
    att_reference_check(2, 77, 4, 2, 32);
    att_reference_check(1, 141, 2, 1, 48);
    att_reference_check(1, 19, 3, 3, 16);
}
END_TEST

/* ---- SwiGLU ---- */
typedef struct {
    size_t n;
    const float *g, *u, *up;
    int wrt_u;
    float *y;
    Activation act;
} SwiCtx;

static double swi_loss(void *c, const float *x) {
    SwiCtx *m = c;
    glu_forward(m->y, m->wrt_u ? m->g : x, m->wrt_u ? x : m->u, m->n, m->act);
    return dot(m->y, m->up, m->n);
}

START_TEST(test_swiglu_grad) {
    const size_t n = 40;
    float *g = ll_alloc_floats(n), *u = ll_alloc_floats(n), *up = ll_alloc_floats(n), *y = ll_alloc_floats(n);
    float *dg = ll_alloc_floats(n), *du = ll_alloc_floats(n);
    fill(g, n, 15, 4.0f), fill(u, n, 16, 1.0f), fill(up, n, 17, 1.0f);
    swiglu_forward(y, g, u, n);
    ck_assert(close_enough(y[0], g[0] / (1.0 + exp(-g[0])) * u[0], 1e-6, 1e-5));
    swiglu_backward(dg, du, up, g, u, n);
    SwiCtx c = {n, g, u, up, 0, y, ACT_SILU};
    check_grad("swiglu dg", swi_loss, &c, g, n, dg, 1e-3f, 1e-3, 2e-3);
    c.wrt_u = 1;
    check_grad("swiglu du", swi_loss, &c, u, n, du, 1e-3f, 1e-3, 2e-3);
    /* the other activations of hidden_act (ReLU's kink at 0 is never hit: fill avoids exact 0) */
    for (int a = ACT_GELU; a < ACT_COUNT; a++) {
        char what[64];
        glu_forward(y, g, u, n, (Activation)a);
        glu_backward(dg, du, up, g, u, n, (Activation)a);
        c.act = (Activation)a, c.wrt_u = 0;
        snprintf(what, sizeof what, "%s dg", act_name((Activation)a));
        check_grad(what, swi_loss, &c, g, n, dg, 1e-3f, 1e-3, 2e-3);
        c.wrt_u = 1;
        snprintf(what, sizeof what, "%s du", act_name((Activation)a));
        check_grad(what, swi_loss, &c, u, n, du, 1e-3f, 1e-3, 2e-3);
    }
    ll_free(g), ll_free(u), ll_free(up), ll_free(y), ll_free(dg), ll_free(du);
}
END_TEST

/* hidden_act values against independently computed ones (Python's math.erf and math.tanh in float64): gelu(z) = z·Φ(z),
 * gelu_pytorch_tanh(z) = 0.5·z·(1 + tanh(√(2/π)(z + 0.044715 z³))), relu; u = 1. */
START_TEST(test_activation_values) {
    const float z[4] = {-2.0f, -0.5f, 1.0f, 3.0f}, one[4] = {1, 1, 1, 1};
    const double gelu[4] = {-0.04550026389635842, -0.15426876936299344, 0.8413447460685429, 2.99595030590511};
    const double gelu_tanh[4] = {-0.04540230591222494, -0.15428599017485606, 0.8411919906082768, 2.996362607918227};
    const double relu[4] = {0, 0, 1, 3};
    const double *want[ACT_COUNT] = {NULL, gelu, gelu_tanh, relu};
    float y[4];
    for (int a = ACT_GELU; a < ACT_COUNT; a++) {
        glu_forward(y, z, one, 4, (Activation)a);
        for (int i = 0; i < 4; i++)
            ck_assert_msg(fabs(y[i] - want[a][i]) <= 1e-7 * (1 + fabs(want[a][i])), "%s(%g) = %.9g, want %.9g",
                          act_name((Activation)a), z[i], y[i], want[a][i]);
    }
    Activation got;
    ck_assert(act_from_name("gelu_pytorch_tanh", &got) && got == ACT_GELU_TANH);
    ck_assert(!act_from_name("gelu_new", &got));
}
END_TEST

/* ---- cross-entropy ---- */
typedef struct {
    int N, V;
    const int *t;
    float *losses, *lse;
} CeCtx;

static double ce_loss(void *c, const float *x) {
    CeCtx *m = c;
    int n = crossentropy_forward(m->losses, m->lse, x, m->t, m->N, m->V);
    double s = 0;
    for (int i = 0; i < m->N; i++) s += m->losses[i];
    return s / n;
}

START_TEST(test_crossentropy) {
    const int N = 4, V = 7;
    int t[4] = {3, -100, 0, 6};
    float *z = ll_alloc_floats(N * V), *d = ll_alloc_floats(N * V), *losses = ll_alloc_floats(N), *lse = ll_alloc_floats(N);
    fill(z, N * V, 18, 3.0f);
    int n = crossentropy_forward(losses, lse, z, t, N, V);
    ck_assert_int_eq(n, 3);
    ck_assert(losses[1] == 0.0f);
    double s = 0;
    for (int v = 0; v < V; v++) s += exp(z[v]);
    ck_assert(close_enough(losses[0], log(s) - z[3], 1e-5, 1e-5));
    memcpy(d, z, sizeof(float) * N * V);
    crossentropy_backward(d, lse, t, N, V, 1.0f / n);
    for (int v = 0; v < V; v++) ck_assert(d[V + v] == 0.0f); /* ignored row */
    CeCtx c = {N, V, t, losses, lse};
    check_grad("crossentropy", ce_loss, &c, z, N * V, d, 1e-2f, 1e-4, 2e-3);
    ll_free(z), ll_free(d), ll_free(losses), ll_free(lse);
}
END_TEST

/* ---- embedding ---- */
START_TEST(test_embedding) {
    const int V = 5, C = 20, N = 6;
    int ids[6] = {1, 4, 1, 0, 1, 3};
    float *E = ll_alloc_floats(V * C), *out = ll_alloc_floats(N * C), *dout = ll_alloc_floats(N * C), *dE = ll_alloc_floats(V * C);
    fill(E, V * C, 19, 1.0f), fill(dout, N * C, 20, 1.0f);
    embedding_forward(out, ids, E, N, C);
    ck_assert(memcmp(out + 2 * C, E + 1 * C, sizeof(float) * C) == 0);
    embedding_backward(dE, dout, ids, N, C);
    for (int c = 0; c < C; c++) {
        ck_assert(dE[1 * C + c] == (dout[0 * C + c] + dout[2 * C + c]) + dout[4 * C + c]);
        ck_assert(dE[2 * C + c] == 0.0f);
    }
    ll_free(E), ll_free(out), ll_free(dout), ll_free(dE);
}
END_TEST

Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    /* 30 s, not Check's 4: the bf16 products take about 1 s alone and several times that on a
     * machine whose two cores are shared with a build. */
    TCase *core = tu_tcase(s, "core", 0, 30);
    tcase_add_test(core, test_matmul_blas_vs_naive);
    tcase_add_test(core, test_embedding);
    tcase_add_loop_test(core, test_bf16_gemm, 0, 2);
    tcase_add_test(core, test_simd_exp);
    TCase *grad = tu_tcase(s, "grad", 0, 60); /* finite differences: one forward per perturbed element */
    tcase_add_test(grad, test_matmul_grad);
    tcase_add_test(grad, test_rmsnorm_grad);
    tcase_add_test(grad, test_rope);
    tcase_add_test(grad, test_attention_grad);
    tcase_add_test(grad, test_attention_blocks);
    tcase_add_test(grad, test_attention_head_sizes);
    tcase_add_test(grad, test_swiglu_grad);
    tcase_add_test(grad, test_activation_values);
    tcase_add_test(grad, test_crossentropy);
    return s;
}
