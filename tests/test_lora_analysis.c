/* test_lora_analysis: the LoRA paper's section 7 tools (analysis/lora_analysis.h).
 *
 * core:   phi of a matrix with itself is 1 everywhere (nested subspaces); orthogonal row spaces
 *         give 0; A2 = [A1; extra rows] gives phi(i, r2) = 1 for every i <= r1 (containment);
 *         invariance to the sign of singular vectors (exact), to a rotation and a scalar
 *         (whole grid) and to a row scaling (the cells that depend on the whole row space only);
 *         the prefix-sum grid equals a direct computation at every (i, j); B's side equals A's on
 *         the transpose; amplification on a hand-computed case (W diagonal, dW along W's third
 *         direction), on a generic W with a two-direction dW, and invariance of both to orthogonal
 *         changes of basis; the seeded random baseline.
 * limits: mismatched in-dims and out-dims, r > k, NaN, mismatched LoRA factors, bad sizes; adapter
 *         folders of VeRA, DoRA, PiSSA and a missing folder; a model of other sizes; filters that
 *         leave nothing.
 * e2e:    a tiny model folder and two LoRA adapters (r = 2, and r = 8 with rsLoRA) with random
 *         parameters, written through the engine into an mkdtemp folder; la_analyze writes every
 *         file, each .dat has r1*r2 rows, the amplification numbers match ||s·B·A||_F computed
 *         here, and (when gnuplot exists) one module's figures render to PDF, SVG and PNG.
 */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "analysis"
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter.h"
#include "analysis/lora_analysis.h"
#include "checkpoint.h"
#include "model.h"
#include "rng.h"
#include "gp_check.h"
#include "util.h"

/* ---- helpers ------------------------------------------------------------------------------------ */

static double *gaussian(int rows, int cols, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    double *x = malloc(sizeof(double) * (size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) x[i] = rng_normal(&r);
    return x;
}

/* n orthonormal rows of length k (the right-singular vectors of a Gaussian n x k). */
static double *orthonormal_rows(int n, int k, uint64_t seed) {
    double *G = gaussian(n, k, seed), *V = malloc(sizeof(double) * (size_t)n * k), *S = malloc(sizeof(double) * n);
    LLError e;
    ck_assert_msg(la_svd(G, n, k, NULL, S, V, &e) == LL_OK, "%s", e.msg);
    free(G);
    free(S);
    return V;
}

/* C (m x n) = A (m x p) · B (p x n), plainly. */
static double *matmul(const double *A, const double *B, int m, int p, int n) {
    double *C = calloc((size_t)m * n, sizeof(double));
    for (int i = 0; i < m; i++)
        for (int t = 0; t < p; t++)
            for (int j = 0; j < n; j++) C[(size_t)i * n + j] += A[(size_t)i * p + t] * B[(size_t)t * n + j];
    return C;
}

static double *transpose(const double *X, int m, int n) {
    double *T = malloc(sizeof(double) * (size_t)m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) T[(size_t)j * m + i] = X[(size_t)i * n + j];
    return T;
}

static double *grid(const double *A1, int r1, const double *A2, int r2, int k) {
    double *phi = malloc(sizeof(double) * (size_t)r1 * r2);
    LLError e;
    ck_assert_msg(la_phi_grid(A1, r1, A2, r2, k, phi, &e) == LL_OK, "%s", e.msg);
    return phi;
}

#define PHI(p, r2, i, j) ((p)[(size_t)((i) - 1) * (r2) + ((j) - 1)])

/* ---- core: phi -------------------------------------------------------------------------------------- */

START_TEST(test_phi_self_is_one) {
    const int r = 8, k = 32;
    double *A = gaussian(r, k, 1);
    double *phi = grid(A, r, A, r, k);
    /* U^i and U^j of one matrix are nested, so each contains the other's smaller one: phi = 1 */
    for (int i = 1; i <= r; i++)
        for (int j = 1; j <= r; j++) {
            double v = PHI(phi, r, i, j);
            ck_assert_msg(fabs(v - 1.0) < 1e-12, "phi(A, A, %d, %d) = %.17g", i, j, v);
            ck_assert(v >= 0.0 && v <= 1.0 + 1e-12);
        }
    free(A);
    free(phi);
}
END_TEST

START_TEST(test_phi_range_random) {
    const int r1 = 6, r2 = 11, k = 24;
    double *A1 = gaussian(r1, k, 2), *A2 = gaussian(r2, k, 3);
    double *phi = grid(A1, r1, A2, r2, k);
    double sum = 0.0;
    for (int i = 0; i < r1 * r2; i++) {
        ck_assert_msg(phi[i] >= 0.0 && phi[i] <= 1.0 + 1e-12, "phi[%d] = %g", i, phi[i]);
        sum += phi[i];
    }
    ck_assert(sum > 0.0); /* random subspaces overlap by max(i, j)/k on average, never exactly 0 */
    free(A1);
    free(A2);
    free(phi);
}
END_TEST

START_TEST(test_phi_orthogonal_is_zero) {
    const int r1 = 4, r2 = 8, k = 32;
    /* 12 orthonormal directions: A1 mixes the first 4, A2 the next 8 */
    double *Q = orthonormal_rows(r1 + r2, k, 4);
    double *M1 = gaussian(r1, r1, 5), *M2 = gaussian(r2, r2, 6);
    double *A1 = matmul(M1, Q, r1, r1, k), *A2 = matmul(M2, Q + (size_t)r1 * k, r2, r2, k);
    double *phi = grid(A1, r1, A2, r2, k);
    for (int i = 0; i < r1 * r2; i++) ck_assert_msg(fabs(phi[i]) < 1e-12, "phi[%d] = %g, want 0", i, phi[i]);
    free(Q), free(M1), free(M2), free(A1), free(A2), free(phi);
}
END_TEST

START_TEST(test_phi_containment) {
    const int r1 = 4, extra = 6, r2 = r1 + extra, k = 20;
    double *A1 = gaussian(r1, k, 7), *X = gaussian(extra, k, 8);
    double *A2 = malloc(sizeof(double) * (size_t)r2 * k);
    memcpy(A2, A1, sizeof(double) * (size_t)r1 * k);
    for (size_t i = 0; i < (size_t)extra * k; i++) A2[(size_t)r1 * k + i] = 3.0 * X[i]; /* dominant extra rows */
    double *phi = grid(A1, r1, A2, r2, k);
    /* rowspace(A1) lies inside U2^{r2}: each of A1's top-i directions is fully inside */
    for (int i = 1; i <= r1; i++)
        ck_assert_msg(fabs(PHI(phi, r2, i, r2) - 1.0) < 1e-12, "phi(%d, %d) = %.17g", i, r2, PHI(phi, r2, i, r2));
    /* and the extra rows dominate A2's top directions, so small j do not contain A1: below 1 */
    ck_assert(PHI(phi, r2, 1, 1) < 0.99);
    free(A1), free(X), free(A2), free(phi);
}
END_TEST

START_TEST(test_phi_sign_exact) {
    const int r1 = 5, r2 = 7, k = 16;
    double *V1 = orthonormal_rows(r1, k, 9), *V2 = orthonormal_rows(r2, k, 10);
    double *p = malloc(sizeof(double) * r1 * r2), *q = malloc(sizeof(double) * r1 * r2);
    la_phi_from_bases(V1, r1, V2, r2, k, p);
    for (int j = 0; j < k; j++) V1[1 * k + j] = -V1[1 * k + j], V2[4 * k + j] = -V2[4 * k + j];
    la_phi_from_bases(V1, r1, V2, r2, k, q);
    ck_assert(memcmp(p, q, sizeof(double) * r1 * r2) == 0); /* squares of negated cosines: bit equal */
    free(V1), free(V2), free(p), free(q);
}
END_TEST

START_TEST(test_phi_rotation_and_scaling) {
    const int r1 = 6, r2 = 9, k = 30;
    double *A1 = gaussian(r1, k, 11), *A2 = gaussian(r2, k, 12);
    double *ref = grid(A1, r1, A2, r2, k);
    /* Q·A with Q orthogonal (here a random one times -2.5) keeps the right-singular vectors up to
     * sign and the singular values' order: the whole grid is unchanged */
    double *Q = orthonormal_rows(r1, r1, 13);
    double *QA = matmul(Q, A1, r1, r1, k);
    for (size_t i = 0; i < (size_t)r1 * k; i++) QA[i] *= -2.5;
    double *rot = grid(QA, r1, A2, r2, k);
    for (int i = 0; i < r1 * r2; i++) ck_assert_msg(fabs(rot[i] - ref[i]) < 1e-10, "cell %d: %.17g vs %.17g", i, rot[i], ref[i]);
    /* D·A (rows scaled unevenly) keeps the row space but reorders directions: the cells that use
     * all r1 directions (i = r1, or j >= ... any j with i = r1) are unchanged */
    double *DA = malloc(sizeof(double) * (size_t)r1 * k);
    for (int i = 0; i < r1; i++)
        for (int j = 0; j < k; j++) DA[(size_t)i * k + j] = A1[(size_t)i * k + j] * (0.1 + 3.0 * i);
    double *sc = grid(DA, r1, A2, r2, k);
    for (int j = 1; j <= r2; j++)
        ck_assert_msg(fabs(PHI(sc, r2, r1, j) - PHI(ref, r2, r1, j)) < 1e-10, "phi(r1, %d)", j);
    int differs = 0;
    for (int i = 0; i < r1 * r2; i++) differs |= fabs(sc[i] - ref[i]) > 1e-6;
    ck_assert_msg(differs, "row scaling should reorder A1's top directions");
    free(A1), free(A2), free(ref), free(Q), free(QA), free(rot), free(DA), free(sc);
}
END_TEST

START_TEST(test_phi_prefix_equals_direct) {
    const int r1 = 5, r2 = 7, k = 20;
    double *A1 = gaussian(r1, k, 14), *A2 = gaussian(r2, k, 15);
    double *phi = grid(A1, r1, A2, r2, k);
    double *V1 = malloc(sizeof(double) * r1 * k), *V2 = malloc(sizeof(double) * r2 * k);
    double S1[5], S2[7];
    LLError e;
    ck_assert(la_svd(A1, r1, k, NULL, S1, V1, &e) == LL_OK);
    ck_assert(la_svd(A2, r2, k, NULL, S2, V2, &e) == LL_OK);
    for (int i = 1; i <= r1; i++)
        for (int j = 1; j <= r2; j++) {
            /* ||(U1^i)ᵀU2^j||_F² from scratch for this (i, j) */
            double ss = 0.0;
            for (int a = 0; a < i; a++)
                for (int b = 0; b < j; b++) {
                    double dot = 0.0;
                    for (int t = 0; t < k; t++) dot += V1[a * k + t] * V2[b * k + t];
                    ss += dot * dot;
                }
            double direct = ss / (i < j ? i : j);
            ck_assert_msg(fabs(PHI(phi, r2, i, j) - direct) < 1e-13, "(%d, %d): %.17g vs %.17g", i, j,
                          PHI(phi, r2, i, j), direct);
        }
    /* the SVD itself: singular values descending, rows orthonormal, A = U·S·Vt */
    for (int i = 1; i < r1; i++) ck_assert(S1[i - 1] >= S1[i]);
    double *U = malloc(sizeof(double) * r1 * r1), *Vt = malloc(sizeof(double) * r1 * k);
    ck_assert(la_svd(A1, r1, k, U, S1, Vt, &e) == LL_OK);
    for (int a = 0; a < r1; a++)
        for (int t = 0; t < k; t++) {
            double v = 0.0;
            for (int c = 0; c < r1; c++) v += U[a * r1 + c] * S1[c] * Vt[c * k + t];
            ck_assert_msg(fabs(v - A1[a * k + t]) < 1e-12, "U S Vt != A at (%d, %d)", a, t);
        }
    free(A1), free(A2), free(phi), free(V1), free(V2), free(U), free(Vt);
}
END_TEST

START_TEST(test_phi_b_side) {
    const int r1 = 3, r2 = 5, d = 12;
    double *B1 = gaussian(d, r1, 16), *B2 = gaussian(d, r2, 17);
    double *T1 = transpose(B1, d, r1), *T2 = transpose(B2, d, r2);
    double *ref = grid(T1, r1, T2, r2, d), *phi = malloc(sizeof(double) * r1 * r2);
    double s1[3], s2[5];
    LLError e;
    ck_assert_msg(la_subspace_phi(LA_COLS, B1, r1, d, B2, r2, d, phi, s1, s2, &e) == LL_OK, "%s", e.msg);
    for (int i = 0; i < r1 * r2; i++) ck_assert(fabs(phi[i] - ref[i]) < 1e-13);
    ck_assert_int_eq(la_numerical_rank(s1, r1), r1);
    free(B1), free(B2), free(T1), free(T2), free(ref), free(phi);
}
END_TEST

START_TEST(test_numerical_rank) {
    const double a[3] = {3.0, 1.0, 1e-12}, z[2] = {0.0, 0.0}, f[2] = {2.0, 1.0};
    ck_assert_int_eq(la_numerical_rank(a, 3), 2);
    ck_assert_int_eq(la_numerical_rank(z, 2), 0);
    ck_assert_int_eq(la_numerical_rank(f, 2), 2);
}
END_TEST

/* ---- core: amplification ------------------------------------------------------------------------ */

START_TEST(test_amplification_hand) {
    enum { d = 4, k = 5 };
    /* W = diag(10, 5, 2, 1) in a 4 x 5 matrix; dW = 1.5 · (2 e3) · e3ᵀ = 3 e3 e3ᵀ lies along W's
     * third direction (singular value 2). r = 1: U = e3, V = e3, so ||UᵀWV|| = 2, ||dW|| = 3,
     * amplification 1.5; W's own top direction gives 10; ||W||_F = sqrt(130). */
    double W[d * k] = {0}, B[d] = {0, 0, 2, 0}, A[k] = {0, 0, 1, 0, 0}, dW[d * k];
    W[0 * k + 0] = 10, W[1 * k + 1] = 5, W[2 * k + 2] = 2, W[3 * k + 3] = 1;
    LLError e;
    ck_assert(la_lora_delta(B, d, 1, A, 1, k, 1.5, dW, &e) == LL_OK);
    ck_assert(fabs(dW[2 * k + 2] - 3.0) < 1e-15);
    LAAmplification am;
    ck_assert_msg(la_amplification(W, dW, d, k, 1, 42, &am, &e) == LL_OK, "%s", e.msg);
    ck_assert_int_eq(am.r, 1);
    ck_assert(fabs(am.dw_fro - 3.0) < 1e-12);
    ck_assert(fabs(am.w_fro - sqrt(130.0)) < 1e-12);
    ck_assert_msg(fabs(am.proj_dw - 2.0) < 1e-12, "proj_dw %.17g", am.proj_dw);
    ck_assert_msg(fabs(am.proj_w - 10.0) < 1e-12, "proj_w %.17g", am.proj_w);
    ck_assert(fabs(am.amplification - 1.5) < 1e-12);
    ck_assert(am.proj_random >= 0.0 && am.proj_random <= am.w_fro + 1e-12);
    /* the random baseline is a function of the seed */
    LAAmplification again, other;
    ck_assert(la_amplification(W, dW, d, k, 1, 42, &again, &e) == LL_OK);
    ck_assert(la_amplification(W, dW, d, k, 1, 43, &other, &e) == LL_OK);
    ck_assert(again.proj_random == am.proj_random);
    ck_assert(other.proj_random != am.proj_random);
    /* r = 2 takes W's two top directions: sqrt(100 + 25) */
    ck_assert(la_amplification(W, dW, d, k, 2, 42, &am, &e) == LL_OK);
    ck_assert(fabs(am.proj_w - sqrt(125.0)) < 1e-12);
    /* r above min(d, k) is capped */
    ck_assert(la_amplification(W, dW, d, k, 9, 42, &am, &e) == LL_OK);
    ck_assert_int_eq(am.r, 4);
    ck_assert(fabs(am.proj_w - sqrt(130.0)) < 1e-12);
}
END_TEST

START_TEST(test_amplification_generic_and_invariant) {
    enum { d = 5, k = 6 };
    /* a generic W, dW = 4·e0·e1ᵀ + 1·e2·e3ᵀ: U = {e0, e2}, V = {e1, e3} and UᵀWV is the 2 x 2
     * block W[{0,2}][{1,3}] */
    double W[d * k];
    for (int i = 0; i < d; i++)
        for (int j = 0; j < k; j++) W[i * k + j] = (double)((i * 7 + j * 3) % 11) - 5.0 + 0.25 * i;
    double dW[d * k] = {0};
    dW[0 * k + 1] = 4.0, dW[2 * k + 3] = 1.0;
    const double w01 = W[0 * k + 1], w03 = W[0 * k + 3], w21 = W[2 * k + 1], w23 = W[2 * k + 3];
    const double want = sqrt(w01 * w01 + w03 * w03 + w21 * w21 + w23 * w23);
    LAAmplification am;
    LLError e;
    ck_assert(la_amplification(W, dW, d, k, 2, 1, &am, &e) == LL_OK);
    ck_assert_msg(fabs(am.proj_dw - want) < 1e-12, "proj_dw %.17g, want %.17g", am.proj_dw, want);
    ck_assert(fabs(am.dw_fro - sqrt(17.0)) < 1e-12);
    ck_assert(fabs(am.amplification - sqrt(17.0) / want) < 1e-12);
    /* r = 1: only (e0, e1): |W01| */
    ck_assert(la_amplification(W, dW, d, k, 1, 1, &am, &e) == LL_OK);
    ck_assert(fabs(am.proj_dw - fabs(w01)) < 1e-12);
    /* P·W·Qᵀ and P·dW·Qᵀ with P, Q orthogonal: every norm is unchanged */
    LAAmplification base, rot;
    ck_assert(la_amplification(W, dW, d, k, 2, 1, &base, &e) == LL_OK);
    double *P = orthonormal_rows(d, d, 20), *Q = orthonormal_rows(k, k, 21), *Qt = transpose(Q, k, k);
    double *t1 = matmul(P, W, d, d, k), *W2 = matmul(t1, Qt, d, k, k);
    double *t2 = matmul(P, dW, d, d, k), *dW2 = matmul(t2, Qt, d, k, k);
    ck_assert(la_amplification(W2, dW2, d, k, 2, 1, &rot, &e) == LL_OK);
    ck_assert(fabs(rot.dw_fro - base.dw_fro) < 1e-12);
    ck_assert(fabs(rot.w_fro - base.w_fro) < 1e-12);
    ck_assert(fabs(rot.proj_dw - base.proj_dw) < 1e-12);
    ck_assert(fabs(rot.proj_w - base.proj_w) < 1e-12);
    free(P), free(Q), free(Qt), free(t1), free(W2), free(t2), free(dW2);
}
END_TEST

/* ---- limits (math) ------------------------------------------------------------------------------ */

START_TEST(test_limits_math) {
    double *A1 = gaussian(4, 16, 30), *A2 = gaussian(4, 20, 31), phi[64];
    LLError e = {0};
    ck_assert_int_eq(la_subspace_phi(LA_ROWS, A1, 4, 16, A2, 4, 20, phi, NULL, NULL, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "in-dims 16 != 20"), "%s", e.msg);
    ck_assert_int_eq(la_subspace_phi(LA_COLS, A1, 4, 16, A2, 4, 20, phi, NULL, NULL, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "out-dims 16 != 20"), "%s", e.msg);
    /* r > k: more directions than the space has */
    ck_assert_int_eq(la_phi_grid(A1, 16, A2, 4, 4, phi, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "r <= k"), "%s", e.msg);
    ck_assert_int_eq(la_phi_grid(A1, 0, A2, 4, 16, phi, &e), LL_ERR_CONFIG);
    /* NaN (a diverged adapter) */
    A1[5] = NAN;
    ck_assert_int_eq(la_phi_grid(A1, 4, A2, 4, 16, phi, &e), LL_ERR_FORMAT);
    ck_assert_msg(strstr(e.msg, "NaN") && strstr(e.msg, "first matrix"), "%s", e.msg);
    /* LoRA factors that do not chain, and empty sizes */
    double dW[64];
    ck_assert_int_eq(la_lora_delta(A1, 4, 4, A2, 3, 4, 1.0, dW, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "B is 4 x 4, A is 3 x 4"), "%s", e.msg);
    LAAmplification am;
    ck_assert_int_eq(la_amplification(A2, A2, 4, 4, 0, 0, &am, &e), LL_ERR_CONFIG);
    A2[0] = INFINITY;
    ck_assert_int_eq(la_amplification(A2, A2, 4, 4, 1, 0, &am, &e), LL_ERR_FORMAT);
    free(A1), free(A2);
}
END_TEST

/* ---- adapter folders: fixtures ------------------------------------------------------------------ */

/* C = 32 (q_proj 32 -> 32, v_proj 32 -> 16 with 2 kv heads), 2 layers. */
static ModelConfig small_config(int C) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.V = 64, c.C = C, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = C / 4, c.F = 48, c.max_T = 16;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.1f;
    c.tied = 1, c.bos_id = 1, c.eos_id = 2, c.pad_id = 0;
    return c;
}

static void make_model(Model *m, int C, const char *dir) {
    ModelConfig c = small_config(C);
    ModelOptions o = {.B = 1, .T = 4, .training = 0, .train_base = 0};
    LLError e;
    ck_assert_msg(model_init(m, &c, &o, &e) == LL_OK, "%s", e.msg);
    model_init_weights(m, 77);
    if (dir) ck_assert_msg(checkpoint_save(m, NULL, NULL, dir, &e) == LL_OK, "%s", e.msg);
}

/* An adapter of the given method with random parameters (B != 0), saved into dir. */
static void make_adapter(Model *m, AdapterMethod method, int r, int rslora, int dora, const char *model_dir,
                         const char *dir, uint64_t seed) {
    AdapterConfig c;
    adapter_config_defaults(&c, method);
    c.r = r, c.alpha = 2.0f * r, c.use_rslora = rslora, c.use_dora = dora, c.seed = seed;
    c.targets = (1u << MOD_Q) | (1u << MOD_V);
    Adapter *a = NULL;
    LLError e;
    ck_assert_msg(adapter_create(&c, m, &a, &e) == LL_OK, "%s", e.msg);
    Rng rng;
    rng_seed(&rng, seed + 1000);
    rng_fill_normal(&rng, a->params, a->n_params, 0.1f);
    ck_assert_msg(ll_mkdirs(dir, &e) == LL_OK, "%s", e.msg);
    ck_assert_msg(adapter_save(a, m, dir, model_dir, &e) == LL_OK, "%s", e.msg);
    adapter_free(a);
}

static int data_rows(const char *path, int *bad_range) {
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "missing %s", path);
    char line[256];
    int n = 0;
    *bad_range = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        int i, j;
        double v;
        ck_assert_msg(sscanf(line, "%d %d %lf", &i, &j, &v) == 3, "bad line '%s' in %s", line, path);
        if (!(v >= 0.0 && v <= 1.0 + 1e-9)) (*bad_range)++;
        n++;
    }
    fclose(f);
    return n;
}

static int lines_of(const char *path) {
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "missing %s", path);
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

static int exists_nonempty(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* ---- limits (folders) --------------------------------------------------------------------------- */

START_TEST(test_limits_methods) {
    char md[512], p[512], q[600];
    Model m;
    make_model(&m, 32, tu_path(md, sizeof md, "model"));
    LAOptions o;
    la_options_defaults(&o);
    o.render = 0;
    o.model_dir = md;
    o.out_dir = tu_path(q, sizeof q, "out");
    LASummary sum;
    LLError e = {0};
    /* VeRA and DoRA adapters, written by the engine */
    make_adapter(&m, ADAPTER_VERA, 4, 0, 0, md, tu_path(p, sizeof p, "vera"), 1);
    o.adapter1 = p;
    ck_assert_int_eq(la_analyze(&o, &sum, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "VERA adapter") && strstr(e.msg, "LoRA"), "%s", e.msg);
    la_summary_free(&sum);
    make_adapter(&m, ADAPTER_LORA, 4, 0, 1, md, tu_path(p, sizeof p, "dora"), 2);
    ck_assert_int_eq(la_analyze(&o, &sum, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "DoRA"), "%s", e.msg);
    la_summary_free(&sum);
    /* a good first adapter and a refused second one */
    char good[512];
    make_adapter(&m, ADAPTER_LORA, 4, 0, 0, md, tu_path(good, sizeof good, "good"), 3);
    o.adapter1 = good, o.adapter2 = p;
    ck_assert_int_eq(la_analyze(&o, &sum, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "DoRA") && strstr(e.msg, "/dora"), "%s", e.msg);
    la_summary_free(&sum);
    o.adapter2 = NULL;
    /* PiSSA and AdaLoRA by their config alone */
    tu_path(p, sizeof p, "pissa");
    mkdir(p, 0755);
    snprintf(q, sizeof q, "%s/adapter_config.json", p);
    tu_write_text(q, "{\"peft_type\": \"LORA\", \"r\": 4, \"init_lora_weights\": \"pissa\", \"target_modules\": [\"q_proj\"]}");
    ck_assert_int_eq(la_check_adapter(p, NULL, 0, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "PiSSA"), "%s", e.msg);
    tu_write_text(q, "{\"peft_type\": \"ADALORA\"}");
    ck_assert_int_eq(la_check_adapter(p, NULL, 0, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "ADALORA adapter"), "%s", e.msg);
    tu_write_text(q, "{\"r\": 4}");
    ck_assert_int_eq(la_check_adapter(p, NULL, 0, &e), LL_ERR_FORMAT);
    ck_assert_msg(strstr(e.msg, "peft_type"), "%s", e.msg);
    ck_assert_int_eq(la_check_adapter(tu_path(p, sizeof p, "nowhere"), NULL, 0, &e), LL_ERR_IO);
    ck_assert_msg(strstr(e.msg, "nowhere"), "%s", e.msg);
    /* plain and rsLoRA pass, and the base is reported */
    char base[512];
    ck_assert_int_eq(la_check_adapter(good, base, sizeof base, &e), LL_OK);
    ck_assert_str_eq(base, md);
    model_free(&m);
}
END_TEST

START_TEST(test_limits_shapes_and_filters) {
    char md[512], md2[512], a1[512], a2[512], out[512];
    Model m, m2;
    make_model(&m, 32, tu_path(md, sizeof md, "model"));
    make_model(&m2, 24, tu_path(md2, sizeof md2, "model24"));
    make_adapter(&m, ADAPTER_LORA, 2, 0, 0, md, tu_path(a1, sizeof a1, "a1"), 1);
    make_adapter(&m, ADAPTER_LORA, 4, 0, 0, md, tu_path(a2, sizeof a2, "a2"), 2);
    LAOptions o;
    la_options_defaults(&o);
    o.render = 0, o.adapter1 = a1, o.adapter2 = a2, o.out_dir = tu_path(out, sizeof out, "out");
    LASummary sum;
    LLError e = {0};
    /* an adapter of a 32-wide model against a 24-wide one: the engine names the tensor */
    o.model_dir = md2;
    LLStatus st = la_analyze(&o, &sum, &e);
    ck_assert_msg(st == LL_ERR_FORMAT || st == LL_ERR_CONFIG, "status %d: %s", st, e.msg);
    ck_assert_msg(strstr(e.msg, "lora_A") || strstr(e.msg, "shape"), "%s", e.msg);
    la_summary_free(&sum);
    o.model_dir = md;
    o.layer = 2; /* the model has layers 0..1 */
    ck_assert_int_eq(la_analyze(&o, &sum, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "layers 0..1"), "%s", e.msg);
    la_summary_free(&sum);
    o.layer = -1;
    o.modules = 1u << MOD_K; /* adapted by neither */
    ck_assert_int_eq(la_analyze(&o, &sum, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "no module is adapted in both") && strstr(e.msg, "q_proj"), "%s", e.msg);
    la_summary_free(&sum);
    /* no model given and a base name that is not a folder here */
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", a1);
    char *text = tu_slurp(cfg, NULL);
    char *hit = strstr(text, md);
    ck_assert_ptr_nonnull(hit);
    hit[strlen(md) - 1] = 'X'; /* "…/modeX" */
    tu_write_text(cfg, text);
    free(text);
    o.modules = 0, o.model_dir = NULL, o.adapter2 = NULL;
    ck_assert_int_eq(la_analyze(&o, &sum, &e), LL_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, "--model"), "%s", e.msg);
    la_summary_free(&sum);
    model_free(&m);
    model_free(&m2);
}
END_TEST

/* ---- e2e ---------------------------------------------------------------------------------------- */

START_TEST(test_e2e_writer) {
    char md[512], a1[512], a2[512], out[512], p[700];
    Model m;
    make_model(&m, 32, tu_path(md, sizeof md, "model"));
    make_adapter(&m, ADAPTER_LORA, 2, 0, 0, md, tu_path(a1, sizeof a1, "r2"), 11);
    make_adapter(&m, ADAPTER_LORA, 8, 1, 0, md, tu_path(a2, sizeof a2, "r8"), 12);
    LAOptions o;
    la_options_defaults(&o);
    o.render = 0, o.adapter1 = a1, o.adapter2 = a2, o.out_dir = tu_path(out, sizeof out, "analysis/x");
    o.model_dir = NULL; /* found through the adapter's base_model_name_or_path */
    LASummary sum;
    LLError e = {0};
    ck_assert_msg(la_analyze(&o, &sum, &e) == LL_OK, "%s", e.msg);
    ck_assert_str_eq(sum.model_dir, md);
    ck_assert_int_eq(sum.n_phi, 4);  /* 2 layers x {q, v} */
    ck_assert_int_eq(sum.n_figs, 8); /* A and B each */
    ck_assert_int_eq(sum.n_rendered, 0);
    ck_assert_int_eq(sum.n_amp, 8);  /* 2 adapters x 2 layers x {q, v} */
    const char *mods[2] = {"q_proj", "v_proj"};
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 2; k++)
            for (int b = 0; b < 2; b++) {
                int bad;
                snprintf(p, sizeof p, "%s/phi_%s%d_%s.dat", out, b ? "B_" : "", l, mods[k]);
                ck_assert_int_eq(data_rows(p, &bad), 2 * 8);
                ck_assert_int_eq(bad, 0);
                snprintf(p, sizeof p, "%s/phi_%s%d_%s.gp", out, b ? "B_" : "", l, mods[k]);
                /* first command `reset`, last line `unset output` */
                FILE *f = fopen(p, "r");
                ck_assert_ptr_nonnull(f);
                char line[512], last[512] = "", first[512] = "";
                while (fgets(line, sizeof line, f)) {
                    if (!first[0] && line[0] != '#') snprintf(first, sizeof first, "%s", line);
                    if (line[0] != '\n') snprintf(last, sizeof last, "%s", line);
                }
                fclose(f);
                ck_assert_str_eq(first, "reset\n");
                ck_assert_str_eq(last, "unset output\n");
                /* only statements the writer writes (tests/gp_check.h) */
                size_t len = 0;
                char why[256], *text = tu_slurp(p, &len);
                ck_assert_msg(gp_check_script(text, len, why, sizeof why), "%s: %s", p, why);
                free(text);
                snprintf(p, sizeof p, "%s/phi_%s%d_%s.dat", out, b ? "B_" : "", l, mods[k]);
                text = tu_slurp(p, &len);
                ck_assert_msg(gp_check_data(text, len, why, sizeof why), "%s: %s", p, why);
                free(text);
            }
    /* the first data row is phi(1, 1), as in the summary */
    snprintf(p, sizeof p, "%s/phi_1_v_proj.dat", out);
    FILE *f = fopen(p, "r");
    char line[256];
    double v = -1.0;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && sscanf(line, "1 1 %lf", &v) == 1) break;
    fclose(f);
    ck_assert(fabs(v - sum.phi[3].phiA_11) < 1e-8);
    ck_assert_int_eq(sum.phi[3].layer, 1);
    ck_assert_int_eq(sum.phi[3].mod, MOD_V);
    ck_assert_int_eq(sum.phi[3].rankA1, 2);
    ck_assert_int_eq(sum.phi[3].rankB2, 8);
    ck_assert_int_eq(lines_of(tu_path(p, sizeof p, "analysis/x/amplification.tsv")), 1 + 8);
    ck_assert_int_eq(lines_of(tu_path(p, sizeof p, "analysis/x/phi_summary.tsv")), 1 + 4);
    ck_assert(exists_nonempty(tu_path(p, sizeof p, "analysis/x/amplification.md")));
    ck_assert(exists_nonempty(tu_path(p, sizeof p, "analysis/x/phi_summary.md")));

    /* ||dW||_F and ||W||_F of one row, recomputed here from the saved adapter (rsLoRA r = 8:
     * s = 16/sqrt(8)) and the model */
    Adapter *ad = NULL;
    ck_assert_msg(adapter_load(a2, &m, &ad, &e) == LL_OK, "%s", e.msg);
    const LAAmpRow *row = NULL;
    for (int i = 0; i < sum.n_amp; i++)
        if (sum.amp[i].adapter == 2 && sum.amp[i].layer == 1 && sum.amp[i].mod == MOD_Q) row = &sum.amp[i];
    ck_assert_ptr_nonnull(row);
    const AdapterSite *s = &ad->sites[1 * MOD_COUNT + MOD_Q];
    ck_assert(fabs(row->scale - 16.0 / sqrt(8.0)) < 1e-6);
    const float *A = ad->params + s->off, *B = A + (size_t)s->r * s->in;
    double ss = 0.0, ww = 0.0;
    const float *W = model_weight(&m, 1, MOD_Q);
    for (int i = 0; i < s->out; i++)
        for (int j = 0; j < s->in; j++) {
            double dw = 0.0;
            for (int t = 0; t < s->r; t++) dw += (double)B[i * s->r + t] * A[t * s->in + j];
            dw *= s->scale;
            ss += dw * dw;
            ww += (double)W[i * s->in + j] * W[i * s->in + j];
        }
    ck_assert_msg(fabs(row->amp.dw_fro - sqrt(ss)) < 1e-6 * sqrt(ss), "%.9g vs %.9g", row->amp.dw_fro, sqrt(ss));
    ck_assert(fabs(row->amp.w_fro - sqrt(ww)) < 1e-9 * sqrt(ww));
    ck_assert_int_eq(row->amp.r, 8);
    ck_assert(row->amp.proj_w >= row->amp.proj_dw - 1e-9); /* W's own directions hold the most of W */
    ck_assert(row->amp.proj_w <= row->amp.w_fro + 1e-9);
    /* the spectral diagnostics: every adapted module of both adapters, dW the same as above */
    ck_assert_int_eq(sum.n_diag, 8);
    ck_assert_int_eq(lines_of(tu_path(p, sizeof p, "analysis/x/diagnostics.tsv")), 1 + 8);
    ck_assert(exists_nonempty(tu_path(p, sizeof p, "analysis/x/diagnostics.md")));
    const LADiagRow *dg = NULL;
    for (int i = 0; i < sum.n_diag; i++) {
        const DiagSite *d = &sum.diag[i].site;
        ck_assert(d->d.intruders >= 0 && d->d.intruders <= d->d.k && d->d.k == 10);
        ck_assert(d->d.eff_rank > 0.0 && d->d.eff_rank <= (sum.diag[i].adapter == 1 ? 2 : 8) + 1e-9);
        if (sum.diag[i].adapter == 2 && d->layer == 1 && d->mod == MOD_Q) dg = &sum.diag[i];
    }
    ck_assert_ptr_nonnull(dg);
    ck_assert_msg(fabs(dg->site.d.dw_fro - sqrt(ss)) < 1e-4 * sqrt(ss), "%.9g vs %.9g", dg->site.d.dw_fro, sqrt(ss));
    ck_assert(fabs(dg->site.w0_fro - sqrt(ww)) < 1e-9 * sqrt(ww));
    adapter_free(ad);
    la_summary_free(&sum);

    /* one module, rendered when gnuplot is here */
    o.layer = 0, o.modules = 1u << MOD_Q, o.render = 1, o.out_dir = tu_path(out, sizeof out, "one");
    ck_assert_msg(la_analyze(&o, &sum, &e) == LL_OK, "%s", e.msg);
    ck_assert_int_eq(sum.n_phi, 1);
    ck_assert_int_eq(sum.n_amp, 2);
    ck_assert_int_eq(sum.n_diag, 2); /* the filter applies to the diagnostics too */
    ck_assert(sum.diag[0].site.layer == 0 && sum.diag[1].site.mod == MOD_Q);
    if (tu_have_program("gnuplot")) {
        ck_assert_int_eq(sum.gnuplot_missing, 0);
        ck_assert_int_eq(sum.n_rendered, 2);
        const char *ext[3] = {"pdf", "svg", "png"};
        for (int b = 0; b < 2; b++)
            for (int x = 0; x < 3; x++) {
                snprintf(p, sizeof p, "%s/phi_%s0_q_proj.%s", out, b ? "B_" : "", ext[x]);
                ck_assert_msg(exists_nonempty(p), "missing %s", p);
            }
    } else {
        ck_assert_int_eq(sum.gnuplot_missing, 1);
    }
    la_summary_free(&sum);

    /* one adapter: amplification only */
    o.adapter2 = NULL, o.layer = -1, o.modules = 0, o.render = 0, o.out_dir = tu_path(out, sizeof out, "single");
    ck_assert_msg(la_analyze(&o, &sum, &e) == LL_OK, "%s", e.msg);
    ck_assert_int_eq(sum.n_phi, 0);
    ck_assert_int_eq(sum.n_amp, 4);
    ck_assert(access(tu_path(p, sizeof p, "single/phi_summary.md"), F_OK) != 0);
    la_summary_free(&sum);
    model_free(&m);
}
END_TEST

Suite *lora_analysis_suite(void) {
    Suite *s = suite_create("lora_analysis");
    TCase *core = tu_tcase(s, "core", 0, 30);
    tcase_add_test(core, test_phi_self_is_one);
    tcase_add_test(core, test_phi_range_random);
    tcase_add_test(core, test_phi_orthogonal_is_zero);
    tcase_add_test(core, test_phi_containment);
    tcase_add_test(core, test_phi_sign_exact);
    tcase_add_test(core, test_phi_rotation_and_scaling);
    tcase_add_test(core, test_phi_prefix_equals_direct);
    tcase_add_test(core, test_phi_b_side);
    tcase_add_test(core, test_numerical_rank);
    tcase_add_test(core, test_amplification_hand);
    tcase_add_test(core, test_amplification_generic_and_invariant);
    TCase *limits = tu_tcase(s, "limits", 0, 30);
    tcase_add_checked_fixture(limits, tu_tmpdir_setup, tu_tmpdir_teardown);
    tcase_add_test(limits, test_limits_math);
    tcase_add_test(limits, test_limits_methods);
    tcase_add_test(limits, test_limits_shapes_and_filters);
    TCase *e2e = tu_tcase(s, "e2e", 0, 60);
    tcase_add_checked_fixture(e2e, tu_tmpdir_setup, tu_tmpdir_teardown);
    tcase_add_test(e2e, test_e2e_writer);
    return s;
}
