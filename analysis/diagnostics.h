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

#endif
