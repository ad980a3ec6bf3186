/* diagnostics: see diagnostics.h. */
#define _DEFAULT_SOURCE /* madvise */
#include "diagnostics.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <string.h>

#include "adapter.h"
#include "lora_analysis.h"
#include "model.h"
#include "safetensors.h"

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

/* T (in x out) = Wᵀ of W (out x in), both row-major */
static void transpose(const double *W, int out, int in, double *T) {
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++) T[(size_t)c * out + r] = W[(size_t)r * in + c];
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
    /* W's left singular vectors as the right ones of Wᵀ: la_svd then hands LAPACK the matrix tall
     * or square with jobu (dgesvd's fast path; asking for the other side of a square or tall
     * matrix measured 6-8x slower at 256 x 256 and 688 x 256), and each vector is a contiguous row.
     * Memory is a full fine-tuning run's peak: one scratch matrix T (Wᵀ, then ΔW) overwritten by
     * the SVDs, and of W1's vectors only the top k kept while W0's are computed. */
    double *T = ll_malloc(n, sizeof *T), *dW = T;
    double *U = ll_malloc((size_t)p * out, sizeof *U), *Uk = NULL;
    double *S = ll_malloc((size_t)p, sizeof *S);
    transpose(W1, out, in, T);
    st = la_svd_destroy(T, in, out, NULL, S, U, err);
    if (!st) {
        Uk = ll_malloc((size_t)res->k * out, sizeof *Uk);
        memcpy(Uk, U, sizeof *Uk * (size_t)res->k * out);
        transpose(W0, out, in, T);
        st = la_svd_destroy(T, in, out, NULL, S, U, err);
    }
    if (!st) {
        /* rows of Uk (W1's top k) and U (all of W0's) are left singular vectors */
        res->min_max_cos = 1.0;
        for (int i = 0; i < res->k; i++) {
            double best = 0.0;
            for (int j = 0; j < p; j++) {
                const double *x = Uk + (size_t)i * out, *y = U + (size_t)j * out;
                double dot = 0.0;
                for (int r = 0; r < out; r++) dot += x[r] * y[r];
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
        st = la_svd_destroy(dW, out, in, NULL, S, NULL, err);
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
    ll_free(U), ll_free(Uk), ll_free(S), ll_free(T);
    return st;
}

/* ---- a whole model ----------------------------------------------------------------------------- */

const char *const DIAG_VALUE_NAMES[DIAG_N_VALUES] = {"intruders", "k",      "min_max_cos", "eff_rank",
                                                     "dw_fro",    "w0_fro", "d_mag",       "d_dir"};

void diag_site_values(const DiagSite *s, double v[DIAG_N_VALUES]) {
    const DiagMatrix *d = &s->d;
    const double vals[DIAG_N_VALUES] = {d->intruders, d->k, d->min_max_cos, d->eff_rank, d->dw_fro, s->w0_fro,
                                        d->d_mag,     d->d_dir};
    memcpy(v, vals, sizeof vals);
}

/* Gives back the mapped pages of a tensor once read: the mapping is private and never written, so
 * the kernel drops them and would read them again from the file. Without this, every matrix read
 * stays resident until the file is unmapped: under full fine-tuning one more copy of the linear
 * weights at the run's peak. */
static void drop_pages(const SafeTensors *st, const char *name) {
    const StTensor *t = st_find(st, name);
    long page = sysconf(_SC_PAGESIZE);
    if (!st->map || !t || page <= 0) return;
    uintptr_t lo = (uintptr_t)(st->data + t->begin), hi = (uintptr_t)(st->data + t->end);
    lo -= lo % (uintptr_t)page;
    hi += (uintptr_t)page - 1, hi -= hi % (uintptr_t)page;
    uintptr_t map_lo = (uintptr_t)st->map, map_hi = map_lo + st->map_len;
    if (lo < map_lo) lo = map_lo;
    if (hi > map_hi) hi = map_hi; /* the last page of the mapping is whole even when the file is not */
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

LLStatus diag_model(const char *base_dir, Model *m, const Adapter *a, int layer, unsigned modules, DiagSite **sites,
                    int *n, LLError *err) {
    *sites = NULL;
    *n = 0;
    char path[2048];
    snprintf(path, sizeof path, "%s/model.safetensors", base_dir);
    SafeTensors st;
    memset(&st, 0, sizeof st);
    LLStatus rc = st_map(path, &st, err);
    if (rc) return ll_err_prefix(err, "diagnostics need the base model's weights");
    const int L = m->cfg.L;
    DiagSite *out = ll_calloc((size_t)L * MOD_COUNT, sizeof *out);
    /* One BLAS thread: LAPACK's SVD of these sizes is mostly level-2 work that a second thread does
     * not speed up, and on a loaded machine the threads' waits made it 2-7x slower (measured). */
    const int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    int cnt = 0;
    for (int l = 0; l < L && !rc; l++) {
        if (layer >= 0 && l != layer) continue;
        for (int mod = 0; mod < MOD_COUNT && !rc; mod++) {
            if (modules && !(modules & (1u << mod))) continue;
            if (a && !a->sites[l * MOD_COUNT + mod].active) continue;
            DiagSite *ds = &out[cnt];
            ds->layer = l, ds->mod = mod;
            model_module_dims(&m->cfg, mod, &ds->in, &ds->out);
            const size_t nw = (size_t)ds->in * ds->out;
            float *w = ll_alloc_floats(nw);
            double *W0 = ll_malloc(nw, sizeof *W0), *W1 = ll_malloc(nw, sizeof *W1);
            AdapterSite probe;
            memset(&probe, 0, sizeof probe);
            probe.layer = l, probe.mod = mod;
            char name[160];
            adapter_site_path(&probe, name, sizeof name);
            strncat(name, ".weight", sizeof name - strlen(name) - 1);
            const int64_t shape[2] = {ds->out, ds->in};
            rc = st_read_f32(&st, name, 2, shape, w, err);
            if (rc) ll_err_prefix(err, "base model folder '%s'", base_dir);
            else drop_pages(&st, name);
            double fro = 0.0;
            for (size_t i = 0; !rc && i < nw; i++) W0[i] = w[i], fro += W0[i] * W0[i];
            ds->w0_fro = sqrt(fro);
            if (!rc) adapter_effective_weight(a, m, l, mod, w);
            for (size_t i = 0; !rc && i < nw; i++) W1[i] = w[i];
            ll_free(w); /* before the SVDs' scratch: the peak is theirs */
            if (!rc) {
                rc = diag_matrix(W0, W1, ds->out, ds->in, DIAG_INTRUDER_K, DIAG_INTRUDER_EPS, &ds->d, err);
                if (rc) ll_err_prefix(err, "diagnostics of layer %d %s", l, model_module_name(mod));
            }
            ll_free(W0), ll_free(W1);
            if (!rc) cnt++;
        }
    }
    openblas_set_num_threads(threads);
    st_free(&st);
    if (rc || cnt == 0) {
        ll_free(out);
        return rc;
    }
    *sites = out;
    *n = cnt;
    return LL_OK;
}
