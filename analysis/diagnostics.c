/* diagnostics: see diagnostics.h. */
#include "diagnostics.h"

#include <math.h>
#include <string.h>

#include "lora_analysis.h"

double diag_effective_rank(const double *s, int n) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += fabs(s[i]);
    if (!(sum > 0.0)) return 0.0;
    double h = 0.0;
    for (int i = 0; i < n; i++) {
        double p = fabs(s[i]) / sum;
        if (p > 0.0) h -= p * log(p);
    }
    return exp(h);
}

static LLStatus finite_or_err(const double *x, size_t n, const char *what, LLError *err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return ll_err(err, LL_ERR_FORMAT, "%s holds a NaN or Inf at element %zu", what, i);
    return LL_OK;
}

LLStatus diag_matrix(const double *W0, const double *W1, int out, int in, int k, double eps, DiagMatrix *res,
                     LLError *err) {
    memset(res, 0, sizeof *res);
    if (out < 1 || in < 1 || k < 1)
        return ll_err(err, LL_ERR_CONFIG, "diagnostics of a %d x %d matrix with k = %d", out, in, k);
    size_t n = (size_t)out * in;
    LLStatus st = finite_or_err(W0, n, "the base weight", err);
    if (!st) st = finite_or_err(W1, n, "the adapted weight", err);
    if (st) return st;
    int p = out < in ? out : in;
    res->k = k < p ? k : p;
    double *U0 = ll_malloc((size_t)out * p, sizeof *U0), *U1 = ll_malloc((size_t)out * p, sizeof *U1);
    double *S = ll_malloc((size_t)p, sizeof *S), *dW = ll_malloc(n, sizeof *dW);
    st = la_svd(W0, out, in, U0, S, NULL, err);
    if (!st) st = la_svd(W1, out, in, U1, S, NULL, err);
    if (!st) {
        /* U (out x p) row-major: column j is the j-th left singular vector */
        res->min_max_cos = 1.0;
        for (int i = 0; i < res->k; i++) {
            double best = 0.0;
            for (int j = 0; j < p; j++) {
                double dot = 0.0;
                for (int r = 0; r < out; r++) dot += U1[(size_t)r * p + i] * U0[(size_t)r * p + j];
                if (fabs(dot) > best) best = fabs(dot);
            }
            if (best < eps) res->intruders++;
            if (best < res->min_max_cos) res->min_max_cos = best;
        }
        double fro = 0.0;
        for (size_t i = 0; i < n; i++) {
            dW[i] = W1[i] - W0[i];
            fro += dW[i] * dW[i];
        }
        res->dw_fro = sqrt(fro);
        st = la_svd(dW, out, in, NULL, S, NULL, err);
        if (!st) res->eff_rank = diag_effective_rank(S, p);
    }
    if (!st) {
        double dm = 0.0, dd = 0.0;
        for (int r = 0; r < out; r++) {
            const double *a = W0 + (size_t)r * in, *b = W1 + (size_t)r * in;
            double na = 0.0, nb = 0.0, ab = 0.0;
            for (int c = 0; c < in; c++) {
                na += a[c] * a[c];
                nb += b[c] * b[c];
                ab += a[c] * b[c];
            }
            na = sqrt(na), nb = sqrt(nb);
            dm += fabs(nb - na);
            /* a zero row has no direction: count it as unchanged when both are zero, else turned fully */
            dd += na > 0.0 && nb > 0.0 ? 1.0 - ab / (na * nb) : (na == nb ? 0.0 : 1.0);
        }
        res->d_mag = dm / out;
        res->d_dir = dd / out;
    }
    ll_free(U0), ll_free(U1), ll_free(S), ll_free(dW);
    return st;
}
