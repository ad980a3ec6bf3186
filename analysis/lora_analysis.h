/* lora_analysis: the LoRA paper's section 7 tools (Hu et al. 2021, arXiv 2106.09685; peft-spec.md
 * section 9) on adapter folders, without a results database.
 *
 * Normalised subspace similarity (section 7.2, spec 9.1). For two learned matrices of one layer,
 * A1 (r1 x k) and A2 (r2 x k), with U1 (k x r1), U2 (k x r2) their right-singular vectors (the
 * input-space directions) ordered by singular value and U^i the first i of them,
 *     phi(A1, A2, i, j) = ||(U1^i)ᵀ U2^j||_F² / min(i, j)   in [0, 1],
 * the mean squared cosine of the principal angles: 1 when one subspace contains the other, 0 when
 * they are orthogonal, and max(i, j)/k on average for random subspaces. The whole r1 x r2 grid
 * costs one product M = U1ᵀU2 and a 2-D prefix sum of M²: phi(i, j) = (sum over a < i, b < j of
 * M[a][b]²) / min(i, j). For B (out x r) the left-singular vectors (output space) are used.
 * Singular vectors are defined up to sign (and, for repeated singular values, up to a rotation
 * within their space); phi is invariant to both. SVDs run in double (LAPACK dgesvd).
 *
 * Amplification (section 7.3, spec 9.2, the paper's Table 7). With dW = s·B·A (d x k) and U (d x r),
 * V (k x r) its top-r left/right singular vectors, ||Uᵀ W V||_F measures how much of W lies in
 * dW's subspace; it is compared with ||W||_F, with the same projection onto W's own top-r
 * singular vectors (= the root of the sum of W's r largest squared singular values) and onto
 * random orthonormal U, V (seeded). The amplification factor is ||dW||_F / ||Uᵀ W V||_F: large
 * when dW strengthens directions that W holds only weakly.
 *
 * Matrices are row-major doubles; "r x k" means r rows of length k.
 *
 * The writer (la_analyze) reads a model folder and one or two LoRA adapter folders (plain LoRA
 * or rsLoRA; DoRA, PiSSA-initialised LoRA, AdaLoRA and VeRA are refused: their update is not
 * dW = s·B·A on the pretrained W) and writes into the output folder:
 *   phi_<layer>_<module>.{dat,gp}    phi of the two adapters' A matrices (needs a second adapter),
 *   phi_B_<layer>_<module>.{dat,gp}  the same for B; each .gp rendered to .pdf, .svg and .png;
 *                                    .dat rows "i j phi", i-blocks separated by a blank line;
 *   phi_summary.{md,tsv}             per module: phi(1, 1) and phi(r1, r2) of A and B beside the
 *                                    random-subspace expectation, and rank-deficiency notes;
 *   amplification.{md,tsv}           one row per (adapter, layer, module): Table 7's numbers;
 *   diagnostics.{md,tsv}             one row per (adapter, adapted layer and module, within
 *                                    --layer/--module): the spectral diagnostics of
 *                                    analysis/diagnostics.h (intruder dimensions of W0 + dW among
 *                                    the top k = 10, the smallest best |cos|, the effective rank of
 *                                    dW, ||dW||_F against ||W0||_F, DoRA's magnitude and direction
 *                                    change), the numbers a run stores in its diagnostics table.
 * Scripts start with `reset`, end with `unset output`, read their .dat by relative path, and run
 * as `gnuplot NAME.gp` in the folder (fork + exec, exit status checked). Without gnuplot the
 * scripts and data are written and the summary says so.
 */
#ifndef LL_LORA_ANALYSIS_H
#define LL_LORA_ANALYSIS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "diagnostics.h"

/* ---- the math ---------------------------------------------------------------------------------- */

/* Thin SVD X = U·diag(S)·Vt of X (m x n), p = min(m, n): S (p, descending), U (m x p), Vt (p x n);
 * U or Vt may be NULL when not wanted. LL_ERR_FORMAT when X holds NaN or Inf (a diverged
 * adapter), LL_ERR_STATE when LAPACK does not converge. */
LLStatus la_svd(const double *X, int m, int n, double *U, double *S, double *Vt, LLError *err);
/* la_svd without its copy of X: X is overwritten (for callers whose memory is tight). */
LLStatus la_svd_destroy(double *X, int m, int n, double *U, double *S, double *Vt, LLError *err);

/* phi of two orthonormal bases given as rows, V1 (r1 x k) and V2 (r2 x k), ordered by importance:
 * phi[(i-1)*r2 + (j-1)] = phi(i, j) for i in 1..r1, j in 1..r2 (the prefix-sum evaluation). */
void la_phi_from_bases(const double *V1, int r1, const double *V2, int r2, int k, double *phi /* OUT r1 x r2 */);

/* phi(A1, A2, i, j) for every i <= r1, j <= r2 from the right-singular vectors of A1 (r1 x k)
 * and A2 (r2 x k). Needs 1 <= r1, r2 <= k (an r x k matrix has at most k directions). */
LLStatus la_phi_grid(const double *A1, int r1, const double *A2, int r2, int k, double *phi /* OUT r1 x r2 */,
                     LLError *err);

/* Which space a matrix's directions live in: LA_ROWS for A (r x k, right-singular vectors,
 * input space), LA_COLS for B (k x r, left-singular vectors, output space). */
typedef enum { LA_ROWS, LA_COLS } LASide;

/* phi of two adapter matrices with their own shapes: A-like (side LA_ROWS) X1 is r1 x k1, or
 * B-like (LA_COLS) X1 is k1 x r1; likewise X2. The spaces must agree (k1 == k2, else
 * LL_ERR_CONFIG naming both shapes). s1 (r1) and s2 (r2), when not NULL, receive the singular
 * values (descending), for rank-deficiency checks. */
LLStatus la_subspace_phi(LASide side, const double *X1, int r1, int k1, const double *X2, int r2, int k2,
                         double *phi /* OUT r1 x r2 */, double *s1, double *s2, LLError *err);

/* Numerical rank from descending singular values: how many exceed 1e-9 times the largest. Past it
 * the singular vectors (and so phi) are arbitrary, e.g. an untrained LoRA's B = 0. */
int la_numerical_rank(const double *s, int n);

/* dW = s·B·A (d x k) from B (d x rb) and A (ra x k); LL_ERR_CONFIG when rb != ra. */
LLStatus la_lora_delta(const double *B, int d, int rb, const double *A, int ra, int k, double s,
                       double *dW /* OUT d x k */, LLError *err);

typedef struct {
    int r;               /* directions used: min(requested r, d, k) */
    double dw_fro;       /* ||dW||_F */
    double w_fro;        /* ||W||_F */
    double proj_dw;      /* ||Uᵀ W V||_F, U, V the top-r singular vectors of dW */
    double proj_w;       /* the same with W's own top-r singular vectors */
    double proj_random;  /* the same with random orthonormal U (d x r), V (k x r) */
    double amplification; /* dw_fro / proj_dw (Inf when proj_dw is 0) */
} LAAmplification;

/* Table 7's numbers for W (d x k) and dW (d x k) at rank r (>= 1). seed drives the random
 * subspace. LL_ERR_CONFIG for bad sizes, LL_ERR_FORMAT for NaN/Inf. */
LLStatus la_amplification(const double *W, const double *dW, int d, int k, int r, uint64_t seed, LAAmplification *out,
                          LLError *err);

/* ---- adapter folders ---------------------------------------------------------------------------- */

/* Checks that DIR holds an adapter the analysis applies to (peft_type LORA, not DoRA, not
 * PiSSA-initialised); otherwise LL_ERR_CONFIG with a message that names the folder and its
 * method, or the status of reading adapter_config.json. base (may be NULL) receives the
 * adapter's base_model_name_or_path ("" when absent). */
LLStatus la_check_adapter(const char *dir, char *base, size_t base_cap, LLError *err);

typedef struct {
    const char *model_dir; /* base model folder; NULL: adapter1's base_model_name_or_path */
    const char *adapter1;  /* required */
    const char *adapter2;  /* NULL: amplification only (phi compares two adapters) */
    const char *out_dir;   /* required; created */
    int layer;             /* -1: every layer */
    unsigned modules;      /* bit (1u << MOD_*) per module; 0: phi on every module adapted in both,
                            * amplification on q_proj and v_proj (every adapted module if neither) */
    uint64_t seed;         /* random subspaces of the amplification baseline */
    int render;            /* run gnuplot on the scripts (0: scripts and data only) */
} LAOptions;

void la_options_defaults(LAOptions *o); /* layer -1, modules 0, seed 0, render 1 */

typedef struct {
    int layer, mod, r1, r2, in, out;
    double phiA_11, phiA_last, phiB_11, phiB_last; /* phi(1, 1) and phi(r1, r2) */
    int rankA1, rankA2, rankB1, rankB2;            /* numerical ranks (la_numerical_rank) */
} LAPhiRow;

typedef struct {
    int adapter;         /* 1 or 2 */
    int layer, mod, r;
    double scale;        /* s = alpha/r, or alpha/sqrt(r) under rsLoRA */
    LAAmplification amp;
} LAAmpRow;

typedef struct {
    int adapter; /* 1 or 2 */
    DiagSite site;
} LADiagRow;

typedef struct {
    char model_dir[1024];     /* the model folder used */
    int n_phi;
    LAPhiRow *phi;            /* n_phi rows */
    int n_amp;
    LAAmpRow *amp;            /* n_amp rows */
    int n_figs, n_rendered;   /* figures written (A and B per compared module), rendered */
    int gnuplot_missing;      /* rendering was asked for but no gnuplot is on PATH */
    int render_failed;        /* gnuplot failed on at least one script (the rest was written) */
    char unsandboxed[128];    /* "" when gnuplot ran under its seccomp filter, else why not (gnuplot.h) */
    int n_diag;
    LADiagRow *diag;          /* n_diag rows: spectral diagnostics per adapter and adapted module */
} LASummary;

/* Runs the analysis and writes the files above. LL_ERR_CONFIG: a refused method, no module left
 * by the layer/module filter, bad options; LL_ERR_IO / LL_ERR_FORMAT: unreadable or malformed
 * folders (the engine's message), an output folder that cannot be made. When everything was
 * written but gnuplot failed on a script, returns LL_ERR_IO with sum->render_failed = 1 (the
 * first failure's stderr in the message; the other figures are still rendered). A missing gnuplot is not an error (sum->gnuplot_missing). sum is
 * always initialised; free it with la_summary_free. */
LLStatus la_analyze(const LAOptions *o, LASummary *sum, LLError *err);
void la_summary_free(LASummary *sum);

#endif
