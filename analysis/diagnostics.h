/* diagnostics: what adaptation did to a weight matrix, from the matrix before (W0) and after (W1 =
 * W0 + ΔW, merged) training. Works the same for every method, full fine-tuning included, because it
 * reads weights only.
 *
 * - Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: an Illusion of
 *   Equivalence"; the authors' find_number_of_intruder_dimensions): thin SVDs of W0 and W1 (out x in,
 *   row-major as in PyTorch); for each of the top k left singular vectors u of W1, its largest
 *   |cos| with all left singular vectors of W0; u is an intruder when that is below epsilon (0.5 in
 *   the authors' code, k = 10).
 * - Effective rank of ΔW (Roy & Vetterli 2007): exp(H(p)), p_i = s_i / sum s over ΔW's singular
 *   values; 0 for ΔW = 0, between 1 and min(out, in) otherwise.
 * - Magnitude and direction change (DoRA, Liu et al. 2024, section 3 "weight decomposition
 *   analysis"), per output row as PEFT's DoRA normalises (weight.norm(dim=1)): ΔM = mean over rows of
 *   | ||W1_row|| - ||W0_row|| |, ΔD = mean over rows of 1 - cos(W1_row, W0_row).
 *
 * Invariants: inputs are row-major doubles, untouched; SVDs in double (LAPACK dgesvd via la_svd);
 * singular vectors' signs do not matter (absolute cosines); a NaN or Inf in a matrix is
 * LL_ERR_FORMAT naming the matrix, never a number. */
#ifndef LL_DIAGNOSTICS_H
#define LL_DIAGNOSTICS_H

#include "adapter.h"
#include "core.h"

#define DIAG_INTRUDER_K 10
#define DIAG_INTRUDER_EPS 0.5

typedef struct {
    int k;              /* singular vectors of W1 examined: min(k requested, out, in) */
    int intruders;      /* among them, those whose best |cos| with W0's is below epsilon */
    double min_max_cos; /* the smallest of the k best |cos| (1 = all aligned) */
    double eff_rank;    /* effective rank of ΔW = W1 - W0 */
    double dw_fro;      /* ||ΔW||_F */
    double d_mag;       /* ΔM, mean absolute change of the row norms */
    double d_dir;       /* ΔD, mean 1 - cos between rows */
} DiagMatrix;

/* All of the above for one matrix pair (out x in). */
LLStatus diag_matrix(const double *W0, const double *W1, int out, int in, int k, double eps, DiagMatrix *res,
                     LLError *err);

/* Effective rank from singular values s (n of them, any order); 0 when all are 0. */
double diag_effective_rank(const double *s, int n);

/* ---- a whole model ----------------------------------------------------------------------------
 * For every linear layer an adapter adapts (or, with no adapter, every linear layer: full
 * fine-tuning), W0 is the pretrained weight read from the base model folder (model.safetensors,
 * whatever dtype it holds, widened to double) and W1 the weight the model computes with now
 * (adapter_effective_weight: the held base, dequantized if quantized, plus the method's ΔW). W0 is
 * read from the folder, not from the model, because the model may hold something else: PiSSA's
 * residual, a quantized base. So on a quantized base ΔW includes the quantization error (full
 * rank: its effective rank is large), and PiSSA's ΔW is measured from the pretrained W, not from
 * the residual. Cost: three SVDs of an out x in matrix per layer (W0 and W1 with their left
 * singular vectors, ΔW's values), O(out·in·min(out, in)) each, on one BLAS thread (the caller's
 * thread count is restored after): 0.7 s for the 28 matrices of the tiny preset, 2.9 s for the 42
 * of the small one, on the 2-core development machine under load. */

typedef struct {
    int layer, mod, out, in;
    double w0_fro; /* ||W0||_F, to read dw_fro against */
    DiagMatrix d;
} DiagSite;

/* The values a DiagSite stores, in this order, named by DIAG_VALUE_NAMES (the store's diagnostics
 * rows and the tables of `loralab analyze`): intruders, k, min_max_cos, eff_rank, dw_fro, w0_fro,
 * d_mag, d_dir. */
#define DIAG_N_VALUES 8
extern const char *const DIAG_VALUE_NAMES[DIAG_N_VALUES];
void diag_site_values(const DiagSite *s, double v[DIAG_N_VALUES]);

/* Diagnostics of the layers described above within a filter (layer -1: every layer; modules: bit
 * (1u << MOD_*) per module, 0: every module), with k = DIAG_INTRUDER_K and eps = DIAG_INTRUDER_EPS,
 * in layer, then module order. *sites is ll_malloc'd (ll_free; NULL when n = 0). LL_ERR_IO /
 * LL_ERR_FORMAT for a base folder that cannot be read or does not match the model (the engine's
 * message, prefixed with the folder), LL_ERR_FORMAT for a NaN or Inf weight (the layer named). */
LLStatus diag_model(const char *base_dir, Model *m, const Adapter *a, int layer, unsigned modules,
                    DiagSite **sites, int *n, LLError *err);

#endif
