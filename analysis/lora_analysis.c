/* lora_analysis: subspace similarity and amplification of LoRA adapters (see lora_analysis.h for
 * the formulas and the files written).
 *
 * Invariants
 *   - All linear algebra is in double: the adapter's and the model's floats are widened before
 *     any product or SVD (spec 9.1: "run the SVD in fp64 for stable small-r results").
 *   - The pretrained W is read from the model before any adapter could change it; adapters whose
 *     loading rewrites W (PiSSA) are refused by la_check_adapter before they are loaded.
 *   - Every figure is NAME.gp + NAME.dat; the script reads only NAME.dat and writes only
 *     NAME.{pdf,svg,png}, so the folder can be moved and re-rendered by hand. Scripts start with
 *     `reset` and end with `unset output`; each format's pass starts with `reset` too.
 *   - gnuplot runs as a program (fork + exec, cwd = the output folder, under gnuplot.c's seccomp
 *     filter); stale renderings are removed first, so "rendered" means this run's gnuplot wrote
 *     them.
 *   - Paths and folder names reach the scripts and .dat files only through gnuplot.c (gp_quote,
 *     gp_comment), the Markdown summaries only through md_text, the TSV files without control
 *     characters: a folder name is text, never syntax.
 */
#define _POSIX_C_SOURCE 200809L
#include "analysis/lora_analysis.h"
#include "analysis/gnuplot.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adapter.h"
#include "checkpoint.h"
#include "model.h"
#include "rng.h"

extern char **environ;

/* LAPACK (Fortran): the SVD. The two trailing lengths are gfortran's hidden CHARACTER lengths. */
extern void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt, double *work,
                    const int *lwork, int *info, size_t jobu_len, size_t jobvt_len);

/* ---- the math ---------------------------------------------------------------------------------- */

static int all_finite(const double *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

LLStatus la_svd(const double *X, int m, int n, double *U, double *S, double *Vt, LLError *err) {
    if (m < 1 || n < 1) return ll_err(err, LL_ERR_CONFIG, "SVD of an empty %d x %d matrix", m, n);
    double *a = ll_malloc((size_t)m * n, sizeof(double));
    memcpy(a, X, sizeof(double) * (size_t)m * n);
    LLStatus st = la_svd_destroy(a, m, n, U, S, Vt, err);
    ll_free(a);
    return st;
}

LLStatus la_svd_destroy(double *a, int m, int n, double *U, double *S, double *Vt, LLError *err) {
    if (m < 1 || n < 1) return ll_err(err, LL_ERR_CONFIG, "SVD of an empty %d x %d matrix", m, n);
    if (!all_finite(a, (size_t)m * n))
        return ll_err(err, LL_ERR_FORMAT, "the %d x %d matrix holds NaN or Inf (a diverged adapter?)", m, n);
    const int p = m < n ? m : n;
    /* Row-major X (m x n) is the column-major matrix Xᵀ (n x m). dgesvd of Xᵀ = U2·S·V2ᵀ gives
     * X = V2·S·U2ᵀ: U2 (n x p, column-major) has X's right singular vectors as columns, so its
     * memory read row-major (p x n) is Vt; V2ᵀ (p x m, column-major) read row-major (m x p) is U. */
    double dummy = 0.0;
    int m_ = n, n_ = m, lda = n, ldu = n, ldvt = p, lwork = -1, info = 0;
    const char *jobu = Vt ? "S" : "N", *jobvt = U ? "S" : "N";
    double *u2 = Vt ? Vt : &dummy, *vt2 = U ? U : &dummy;
    double wq = 0.0;
    dgesvd_(jobu, jobvt, &m_, &n_, a, &lda, S, u2, &ldu, vt2, &ldvt, &wq, &lwork, &info, 1, 1);
    if (info == 0) {
        lwork = (int)wq > 1 ? (int)wq : 1;
        double *work = ll_malloc((size_t)lwork, sizeof(double));
        dgesvd_(jobu, jobvt, &m_, &n_, a, &lda, S, u2, &ldu, vt2, &ldvt, work, &lwork, &info, 1, 1);
        ll_free(work);
    }
    if (info != 0)
        return ll_err(err, LL_ERR_STATE, "the SVD of a %d x %d matrix did not converge (LAPACK dgesvd info %d)", m, n,
                      info);
    return LL_OK;
}

void la_phi_from_bases(const double *V1, int r1, const double *V2, int r2, int k, double *phi) {
    LL_ASSERT(r1 >= 1 && r2 >= 1 && k >= 1);
    /* M = V1·V2ᵀ (r1 x r2): M[a][b] is the cosine between direction a of one basis and b of the
     * other; ||(U1^i)ᵀU2^j||_F² is the sum of M² over the top-left i x j block (spec 9.1). */
    double *M = ll_malloc((size_t)r1 * r2, sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1, r2, k, 1.0, V1, k, V2, k, 0.0, M, r2);
    /* 2-D prefix sum in place of phi: P(i, j) = P(i-1, j) + (row i's running sum up to j). */
    for (int i = 0; i < r1; i++) {
        double row = 0.0;
        for (int j = 0; j < r2; j++) {
            double m = M[(size_t)i * r2 + j];
            row += m * m;
            phi[(size_t)i * r2 + j] = row + (i > 0 ? phi[(size_t)(i - 1) * r2 + j] : 0.0);
        }
    }
    for (int i = 0; i < r1; i++)
        for (int j = 0; j < r2; j++) phi[(size_t)i * r2 + j] /= (double)(i < j ? i + 1 : j + 1);
    ll_free(M);
}

/* Right-singular vectors (rows, r x k) and singular values of an r x k matrix, r <= k. */
static LLStatus row_basis(const double *X, int r, int k, double *V, double *S, LLError *err) {
    return la_svd(X, r, k, NULL, S, V, err);
}

static LLStatus phi_rows(const double *A1, int r1, const double *A2, int r2, int k, double *phi, double *s1,
                         double *s2, LLError *err) {
    if (r1 < 1 || r2 < 1 || k < 1)
        return ll_err(err, LL_ERR_CONFIG, "phi needs ranks and a dimension of at least 1 (got r1 %d, r2 %d, k %d)", r1,
                      r2, k);
    if (r1 > k || r2 > k)
        return ll_err(err, LL_ERR_CONFIG,
                      "phi needs r <= k: a rank-%d matrix in a %d-dimensional space has at most %d directions", r1 > k ? r1 : r2,
                      k, k);
    double *V1 = ll_malloc((size_t)r1 * k, sizeof(double)), *V2 = ll_malloc((size_t)r2 * k, sizeof(double));
    double *S1 = ll_malloc((size_t)r1, sizeof(double)), *S2 = ll_malloc((size_t)r2, sizeof(double));
    LLStatus st = row_basis(A1, r1, k, V1, S1, err);
    if (st) ll_err_prefix(err, "first matrix");
    if (!st && (st = row_basis(A2, r2, k, V2, S2, err))) ll_err_prefix(err, "second matrix");
    if (!st) {
        la_phi_from_bases(V1, r1, V2, r2, k, phi);
        if (s1) memcpy(s1, S1, sizeof(double) * (size_t)r1);
        if (s2) memcpy(s2, S2, sizeof(double) * (size_t)r2);
    }
    ll_free(V1);
    ll_free(V2);
    ll_free(S1);
    ll_free(S2);
    return st;
}

LLStatus la_phi_grid(const double *A1, int r1, const double *A2, int r2, int k, double *phi, LLError *err) {
    return phi_rows(A1, r1, A2, r2, k, phi, NULL, NULL, err);
}

/* X (k x r) -> Xᵀ (r x k), so B's left-singular vectors become right-singular ones. */
static double *transposed(const double *X, int k, int r) {
    double *T = ll_malloc((size_t)k * r, sizeof(double));
    for (int i = 0; i < k; i++)
        for (int j = 0; j < r; j++) T[(size_t)j * k + i] = X[(size_t)i * r + j];
    return T;
}

LLStatus la_subspace_phi(LASide side, const double *X1, int r1, int k1, const double *X2, int r2, int k2,
                         double *phi, double *s1, double *s2, LLError *err) {
    if (k1 != k2) {
        if (side == LA_ROWS)
            return ll_err(err, LL_ERR_CONFIG,
                          "phi compares directions of one space, but A1 is %d x %d and A2 is %d x %d (in-dims %d != %d)",
                          r1, k1, r2, k2, k1, k2);
        return ll_err(err, LL_ERR_CONFIG,
                      "phi compares directions of one space, but B1 is %d x %d and B2 is %d x %d (out-dims %d != %d)",
                      k1, r1, k2, r2, k1, k2);
    }
    if (side == LA_ROWS) return phi_rows(X1, r1, X2, r2, k1, phi, s1, s2, err);
    if (r1 < 1 || r2 < 1 || k1 < 1)
        return ll_err(err, LL_ERR_CONFIG, "phi needs ranks and a dimension of at least 1 (got r1 %d, r2 %d, k %d)", r1,
                      r2, k1);
    double *T1 = transposed(X1, k1, r1), *T2 = transposed(X2, k2, r2);
    LLStatus st = phi_rows(T1, r1, T2, r2, k1, phi, s1, s2, err);
    ll_free(T1);
    ll_free(T2);
    return st;
}

int la_numerical_rank(const double *s, int n) {
    if (n < 1 || !(s[0] > 0.0)) return 0;
    int rank = 0;
    for (int i = 0; i < n; i++)
        if (s[i] > 1e-9 * s[0]) rank++;
    return rank;
}

LLStatus la_lora_delta(const double *B, int d, int rb, const double *A, int ra, int k, double s, double *dW,
                       LLError *err) {
    if (rb != ra)
        return ll_err(err, LL_ERR_CONFIG, "dW = s*B*A needs B's columns to match A's rows: B is %d x %d, A is %d x %d", d,
                      rb, ra, k);
    if (d < 1 || k < 1 || ra < 1) return ll_err(err, LL_ERR_CONFIG, "empty LoRA factors (d %d, r %d, k %d)", d, ra, k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, k, ra, s, B, rb, A, k, 0.0, dW, k);
    return LL_OK;
}

static double fro(const double *X, size_t n) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += X[i] * X[i];
    return sqrt(ss);
}

/* ||Uᵀ·W·V||_F with U given as Ut (r x d, rows = directions) and V as Vt (r x k). */
static double projection(const double *W, int d, int k, const double *Ut, const double *Vt, int r) {
    double *WV = ll_malloc((size_t)d * r, sizeof(double)), *P = ll_malloc((size_t)r * r, sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, r, k, 1.0, W, k, Vt, k, 0.0, WV, r);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, r, d, 1.0, Ut, d, WV, r, 0.0, P, r);
    double v = fro(P, (size_t)r * r);
    ll_free(WV);
    ll_free(P);
    return v;
}

/* U (m x p, row-major) -> its first r columns as rows (r x m). */
static void columns_as_rows(const double *U, int m, int p, int r, double *out) {
    for (int c = 0; c < r; c++)
        for (int i = 0; i < m; i++) out[(size_t)c * m + i] = U[(size_t)i * p + c];
}

/* r random orthonormal rows of length n: Gaussian rows, then modified Gram-Schmidt run twice
 * ("twice is enough", Giraud et al. 2005) so that orthogonality holds to rounding. */
static void random_orthonormal(Rng *rng, int r, int n, double *Q) {
    for (int i = 0; i < r; i++) {
        double *q = Q + (size_t)i * n;
        for (;;) {
            for (int j = 0; j < n; j++) q[j] = rng_normal(rng);
            for (int pass = 0; pass < 2; pass++)
                for (int a = 0; a < i; a++) {
                    const double *p = Q + (size_t)a * n;
                    double dot = 0.0;
                    for (int j = 0; j < n; j++) dot += p[j] * q[j];
                    for (int j = 0; j < n; j++) q[j] -= dot * p[j];
                }
            double nrm = fro(q, (size_t)n);
            if (nrm > 1e-6) { /* a draw inside the span of the others has probability 0; redraw */
                for (int j = 0; j < n; j++) q[j] /= nrm;
                break;
            }
        }
    }
}

LLStatus la_amplification(const double *W, const double *dW, int d, int k, int r, uint64_t seed, LAAmplification *out,
                          LLError *err) {
    memset(out, 0, sizeof *out);
    if (d < 1 || k < 1 || r < 1)
        return ll_err(err, LL_ERR_CONFIG, "amplification needs d, k, r >= 1 (got %d, %d, %d)", d, k, r);
    const int p = d < k ? d : k;
    const int rr = r < p ? r : p;
    const size_t n = (size_t)d * k;
    if (!all_finite(W, n)) return ll_err(err, LL_ERR_FORMAT, "W (%d x %d) holds NaN or Inf", d, k);
    if (!all_finite(dW, n)) return ll_err(err, LL_ERR_FORMAT, "dW (%d x %d) holds NaN or Inf (a diverged adapter?)", d, k);
    double *U = ll_malloc((size_t)d * p, sizeof(double)), *S = ll_malloc((size_t)p, sizeof(double));
    double *Vt = ll_malloc((size_t)p * k, sizeof(double)), *Ut = ll_malloc((size_t)rr * d, sizeof(double));
    out->r = rr;
    out->dw_fro = fro(dW, n);
    out->w_fro = fro(W, n);
    /* dW's own directions: the paper's U, V of section 7.3 */
    LLStatus st = la_svd(dW, d, k, U, S, Vt, err);
    if (!st) {
        columns_as_rows(U, d, p, rr, Ut);
        out->proj_dw = projection(W, d, k, Ut, Vt, rr);
        st = la_svd(W, d, k, U, S, Vt, err);
    }
    if (!st) {
        columns_as_rows(U, d, p, rr, Ut);
        out->proj_w = projection(W, d, k, Ut, Vt, rr);
        Rng rng;
        rng_seed(&rng, seed);
        random_orthonormal(&rng, rr, d, Ut);
        random_orthonormal(&rng, rr, k, Vt);
        out->proj_random = projection(W, d, k, Ut, Vt, rr);
        out->amplification = out->proj_dw > 0.0 ? out->dw_fro / out->proj_dw : INFINITY;
    }
    ll_free(U);
    ll_free(S);
    ll_free(Vt);
    ll_free(Ut);
    return st;
}

/* ---- adapter folders ---------------------------------------------------------------------------- */

LLStatus la_check_adapter(const char *dir, char *base, size_t base_cap, LLError *err) {
    if (base && base_cap) base[0] = '\0';
    char path[4096];
    cJSON *c = NULL;
    LLStatus st = adapter_config_read(dir, path, sizeof path, &c, err);
    if (st == LL_ERR_IO) return ll_err_prefix(err, "adapter folder '%s'", dir);
    if (!cJSON_IsObject(c)) { /* not JSON (st set), or JSON but not an object */
        cJSON_Delete(c);
        return ll_err(err, LL_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(c, "peft_type");
    const cJSON *dora = cJSON_GetObjectItemCaseSensitive(c, "use_dora");
    const cJSON *init = cJSON_GetObjectItemCaseSensitive(c, "init_lora_weights");
    const cJSON *bn = cJSON_GetObjectItemCaseSensitive(c, "base_model_name_or_path");
    if (!cJSON_IsString(pt)) {
        st = ll_err(err, LL_ERR_FORMAT, "%s: 'peft_type' is missing", path);
    } else if (strcmp(pt->valuestring, "LORA") != 0) {
        st = ll_err(err, LL_ERR_CONFIG,
                    "adapter folder '%s' holds a %s adapter: the section 7 analysis (subspace similarity, "
                    "amplification) applies to LoRA adapters (peft_type LORA, rsLoRA allowed), whose update is "
                    "dW = s*B*A",
                    dir, pt->valuestring);
    } else if (cJSON_IsTrue(dora)) {
        st = ll_err(err, LL_ERR_CONFIG,
                    "adapter folder '%s' holds a DoRA adapter (use_dora): its update rescales W + s*B*A by a learned "
                    "magnitude, so dW is not s*B*A; the section 7 analysis applies to plain LoRA and rsLoRA",
                    dir);
    } else if (cJSON_IsString(init) && strncmp(init->valuestring, "pissa", 5) == 0) {
        st = ll_err(err, LL_ERR_CONFIG,
                    "adapter folder '%s' is PiSSA-initialised: it replaces W by a residual, so s*B*A is not an update "
                    "of the pretrained W; the section 7 analysis applies to plain LoRA and rsLoRA",
                    dir);
    } else if (base && base_cap && cJSON_IsString(bn)) {
        snprintf(base, base_cap, "%s", bn->valuestring);
    }
    cJSON_Delete(c);
    return st;
}

/* ---- the writer --------------------------------------------------------------------------------- */

void la_options_defaults(LAOptions *o) {
    memset(o, 0, sizeof *o);
    o->layer = -1;
    o->render = 1;
}

void la_summary_free(LASummary *sum) {
    if (!sum) return;
    ll_free(sum->phi);
    ll_free(sum->amp);
    ll_free(sum->diag);
    memset(sum, 0, sizeof *sum);
}

/* One loaded adapter: its A and B per site (pointers into the adapter's parameters). */
typedef struct {
    const char *dir;
    char label[128];   /* the folder's last component, for titles */
    Adapter *a;
    int n_sites;
    const float **A, **B;
} Loaded;

static void collect_tensor(void *ctx, const AdapterSite *s, const char *name, int ndim, const int64_t *shape,
                           const float *data) {
    Loaded *l = ctx;
    (void)ndim, (void)shape;
    if (!s) return;
    int i = s->layer * MOD_COUNT + s->mod;
    LL_ASSERT(i >= 0 && i < l->n_sites);
    if (strcmp(name, "lora_A.weight") == 0) l->A[i] = data;
    else if (strcmp(name, "lora_B.weight") == 0) l->B[i] = data;
}

static void folder_label(const char *dir, char *out, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), dir + b);
}

static LLStatus load_adapter(const char *dir, Model *m, Loaded *l, LLError *err) {
    memset(l, 0, sizeof *l);
    l->dir = dir;
    folder_label(dir, l->label, sizeof l->label);
    LLStatus st = adapter_load(dir, m, &l->a, err);
    if (st) return st;
    if (l->a->ops != lora_ops()) /* la_check_adapter ran first; this guards the layout below */
        return ll_err(err, LL_ERR_CONFIG, "adapter folder '%s' is not a LoRA adapter", dir);
    l->n_sites = l->a->n_sites;
    l->A = ll_calloc((size_t)l->n_sites, sizeof *l->A);
    l->B = ll_calloc((size_t)l->n_sites, sizeof *l->B);
    l->a->ops->export_tensors(l->a, collect_tensor, l);
    return LL_OK;
}

static void unload_adapter(Loaded *l) {
    adapter_free(l->a);
    ll_free(l->A);
    ll_free(l->B);
    memset(l, 0, sizeof *l);
}

static int site_active(const Loaded *l, int i) { return l->a && l->a->sites[i].active && l->A[i] && l->B[i]; }

static double *widen(const float *x, size_t n) {
    double *d = ll_malloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* s as Markdown text (escape.h), into a stream. */
static void put_md(FILE *f, const char *s) {
    TextBuf t = {0};
    md_text(&t, s);
    if (t.p) fputs(t.p, f);
    tb_free(&t);
}

/* s on one line of a tab-separated file: control characters (tabs too) cleaned (escape.h). */
static void put_tsv(FILE *f, const char *s) {
    for (; *s; s++) fputc(esc_clean_char((unsigned char)*s), f);
}

typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} Text;

static void text_open(Text *t) {
    t->buf = NULL, t->len = 0;
    t->f = open_memstream(&t->buf, &t->len);
    LL_ASSERT(t->f != NULL);
}

/* Closes the stream and writes its bytes atomically to DIR/NAME. */
static LLStatus text_save(Text *t, const char *dir, const char *name, LLError *err) {
    fclose(t->f);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    LLStatus st = ll_write_file_atomic(path, t->buf, t->len, err);
    free(t->buf);
    t->buf = NULL;
    return st;
}

/* A phi figure: NAME.dat (i j phi) and NAME.gp (a viridis heatmap, i down the side, j across). */
static LLStatus write_phi_figure(const char *out_dir, const char *name, char which, int layer, int mod, const Loaded *l1,
                                 const Loaded *l2, int r1, int r2, int k, const double *phi, const double *s1,
                                 const double *s2, LLError *err) {
    const char *space = which == 'A' ? "input" : "output";
    const char *vecs = which == 'A' ? "right" : "left";
    TextBuf d = {0};
    gp_comment(&d, "%s.dat: phi(%c1, %c2, i, j) = ||(U1^i)^T U2^j||_F^2 / min(i, j) (Hu et al. 2021, section 7.2),",
               name, which, which);
    gp_comment(&d, "U the %s-singular vectors of %c (%s space, dimension %d); read by %s.gp", vecs, which, space, k,
               name);
    gp_comment(&d, "layer %d %s; adapter 1: %s (r = %d); adapter 2: %s (r = %d)", layer, model_module_name(mod),
               l1->dir, r1, l2->dir, r2);
    tb_printf(&d, "# singular values of %c1:", which);
    for (int i = 0; i < r1; i++) tb_printf(&d, " %.6g", s1[i]);
    tb_printf(&d, "\n# singular values of %c2:", which);
    for (int i = 0; i < r2; i++) tb_printf(&d, " %.6g", s2[i]);
    tb_printf(&d, "\n# random subspaces of these sizes: E[phi(i, j)] = max(i, j)/%d\n# i j phi\n", k);
    for (int i = 0; i < r1; i++) {
        for (int j = 0; j < r2; j++) tb_printf(&d, "%d %d %.9f\n", i + 1, j + 1, phi[(size_t)i * r2 + j]);
        tb_putc(&d, '\n'); /* one block per i: the grid layout `with image` reads */
    }
    char file[256];
    snprintf(file, sizeof file, "%s.dat", name);
    LLStatus st = tb_save(&d, out_dir, file, err);
    tb_free(&d);
    if (st) return st;

    TextBuf g = {0};
    gp_comment(&g, "%s: normalised subspace similarity of the %c matrices, layer %d %s (Hu et al. 2021,", name, which,
               layer, model_module_name(mod));
    gp_comment(&g, "section 7.2, Figure 3). Generated by `loralab analyze`; adapter 1: %s, adapter 2: %s.", l1->dir,
               l2->dir);
    gp_script_head(&g, name);
    gp_formats_begin(&g, name, 6.4, 4.2);
    tb_printf(&g, "    set title 'φ(%c1, %c2, i, j): layer %d %s, %s space (%d-dim)'\n", which, which, layer,
              model_module_name(mod), space, k);
    char label[200];
    snprintf(label, sizeof label, "i (adapter 1: %s, r = %d)", l1->label, r1);
    tb_puts(&g, "    set ylabel ");
    gp_quote(&g, label);
    snprintf(label, sizeof label, "j (adapter 2: %s, r = %d)", l2->label, r2);
    tb_puts(&g, "\n    set xlabel ");
    gp_quote(&g, label);
    tb_puts(&g, "\n    set cblabel 'φ'\n");
    tb_printf(&g, "    set xrange [0.5:%d.5]\n    set yrange [%d.5:0.5]\n", r2, r1); /* i = 1 on top, as the paper */
    if (r2 <= 16) tb_puts(&g, "    set xtics 1\n");
    if (r1 <= 16) tb_puts(&g, "    set ytics 1\n");
    tb_puts(&g, "    set tics out nomirror\n    set cbrange [0:1]\n    set cbtics 0.2\n    unset key\n");
    /* viridis (van der Walt & Smith 2015) by its anchor colours: perceptually uniform, readable by
     * colour-blind viewers and in greyscale; gnuplot 5.4 has no named viridis palette. */
    tb_puts(&g, "    set palette defined (0 '#440154', 0.25 '#3B528B', 0.5 '#21908C', 0.75 '#5DC863', 1 '#FDE725')\n");
    tb_printf(&g, "    plot '%s.dat' using 2:1:3 with image\n", name);
    gp_formats_end(&g);
    snprintf(file, sizeof file, "%s.gp", name);
    st = tb_save(&g, out_dir, file, err);
    tb_free(&g);
    return st;
}

static const char *const FORMATS[] = {"pdf", "svg", "png"};

/* ---- tables ------------------------------------------------------------------------------------- */

static void md_num(FILE *f, double v) {
    if (isinf(v)) fputs(" | inf", f);
    else fprintf(f, " | %.4g", v);
}

static LLStatus write_amplification(const char *out_dir, const char *model_dir, const Loaded *ls, int n_loaded,
                                    const LASummary *sum, uint64_t seed, LLError *err) {
    Text md;
    text_open(&md);
    fputs("# Feature amplification (Hu et al. 2021, section 7.3, Table 7)\n\n", md.f);
    fputs("model: ", md.f);
    put_md(md.f, model_dir);
    fputs("  \n", md.f);
    for (int i = 0; i < n_loaded; i++) {
        const AdapterConfig *c = &ls[i].a->cfg;
        fprintf(md.f, "adapter %d: ", i + 1);
        put_md(md.f, ls[i].dir);
        fprintf(md.f, " (r = %d, alpha = %g, %s)  \n", c->r, c->alpha, c->use_rslora ? "rsLoRA: s = alpha/sqrt(r)" : "s = alpha/r");
    }
    fprintf(md.f,
            "\ndW = s·B·A; U, V are the top-r left and right singular vectors of dW (\"dW dirs\"), of the\n"
            "pretrained W itself (\"W dirs\"), or random orthonormal (\"random\", seed %llu). Amplification =\n"
            "‖dW‖_F / ‖UᵀWV‖_F with dW's own U, V: how much dW strengthens directions that W holds only\n"
            "weakly (the paper finds about 20 at r = 4 and 2 at r = 64 for GPT-3's W_q).\n\n",
            (unsigned long long)seed);
    fputs("| adapter | layer | module | r | s | ‖dW‖_F | ‖W‖_F | ‖UᵀWV‖_F dW dirs | ‖UᵀWV‖_F W dirs | ‖UᵀWV‖_F random "
          "| amplification |\n",
          md.f);
    fputs("|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|\n", md.f);
    Text tsv;
    text_open(&tsv);
    fputs("adapter\tadapter_dir\tlayer\tmodule\tr\tscale\tdw_fro\tw_fro\tproj_dw\tproj_w\tproj_random\tamplification\n",
          tsv.f);
    for (int i = 0; i < sum->n_amp; i++) {
        const LAAmpRow *row = &sum->amp[i];
        const LAAmplification *a = &row->amp;
        fprintf(md.f, "| %d | %d | %s | %d | %.4g", row->adapter, row->layer, model_module_name(row->mod), a->r,
                row->scale);
        md_num(md.f, a->dw_fro);
        md_num(md.f, a->w_fro);
        md_num(md.f, a->proj_dw);
        md_num(md.f, a->proj_w);
        md_num(md.f, a->proj_random);
        md_num(md.f, a->amplification);
        fputs(" |\n", md.f);
        fprintf(tsv.f, "%d\t", row->adapter);
        put_tsv(tsv.f, ls[row->adapter - 1].dir);
        fprintf(tsv.f, "\t%d\t%s\t%d\t%.9g\t%.9g\t%.9g\t%.9g\t%.9g\t%.9g\t%.9g\n", row->layer,
                model_module_name(row->mod), a->r, row->scale, a->dw_fro, a->w_fro, a->proj_dw, a->proj_w,
                a->proj_random, a->amplification);
    }
    LLStatus st = text_save(&md, out_dir, "amplification.md", err);
    LLStatus st2 = text_save(&tsv, out_dir, "amplification.tsv", st ? NULL : err);
    return st ? st : st2;
}

static LLStatus write_diagnostics(const char *out_dir, const char *model_dir, const Loaded *ls, int n_loaded,
                                  const LASummary *sum, LLError *err) {
    Text md, tsv;
    text_open(&md);
    text_open(&tsv);
    fputs("# Spectral diagnostics (intruder dimensions, effective rank, magnitude and direction)\n\nmodel: ", md.f);
    put_md(md.f, model_dir);
    fputs("  \n", md.f);
    for (int i = 0; i < n_loaded; i++) {
        fprintf(md.f, "adapter %d: ", i + 1);
        put_md(md.f, ls[i].dir);
        fputs("  \n", md.f);
    }
    fprintf(md.f,
            "\nW0 is the model's weight, W1 = W0 + dW the adapted one. Intruders: how many of W1's top k left\n"
            "singular vectors have a best |cos| below %g with every left singular vector of W0 (Shuttleworth et\n"
            "al. 2024); \"min cos\" is the smallest of those k best |cos|. Effective rank of dW: exp of the\n"
            "entropy of its normalised singular values (Roy and Vetterli 2007). dM and dD: mean change of the\n"
            "row norms and mean 1 - cos between rows of W0 and W1 (DoRA, Liu et al. 2024, section 3).\n\n",
            DIAG_INTRUDER_EPS);
    fputs("| adapter | layer | module | intruders | k | min cos | eff. rank dW | ‖dW‖_F | ‖W0‖_F | dM | dD |\n", md.f);
    fputs("|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|\n", md.f);
    fputs("adapter\tadapter_dir\tlayer\tmodule", tsv.f);
    for (int k = 0; k < DIAG_N_VALUES; k++) fprintf(tsv.f, "\t%s", DIAG_VALUE_NAMES[k]);
    fputc('\n', tsv.f);
    for (int i = 0; i < sum->n_diag; i++) {
        const LADiagRow *row = &sum->diag[i];
        const DiagSite *d = &row->site;
        double v[DIAG_N_VALUES];
        diag_site_values(d, v);
        fprintf(md.f, "| %d | %d | %s | %d | %d", row->adapter, d->layer, model_module_name(d->mod), d->d.intruders, d->d.k);
        for (int k = 2; k < DIAG_N_VALUES; k++) md_num(md.f, v[k]);
        fputs(" |\n", md.f);
        fprintf(tsv.f, "%d\t", row->adapter);
        put_tsv(tsv.f, ls[row->adapter - 1].dir);
        fprintf(tsv.f, "\t%d\t%s", d->layer, model_module_name(d->mod));
        for (int k = 0; k < DIAG_N_VALUES; k++) fprintf(tsv.f, "\t%.9g", v[k]);
        fputc('\n', tsv.f);
    }
    LLStatus st = text_save(&md, out_dir, "diagnostics.md", err);
    LLStatus st2 = text_save(&tsv, out_dir, "diagnostics.tsv", st ? NULL : err);
    return st ? st : st2;
}

static LLStatus write_phi_summary(const char *out_dir, const Loaded *l1, const Loaded *l2, const LASummary *sum,
                                  LLError *err) {
    Text md, tsv;
    text_open(&md);
    text_open(&tsv);
    fputs("# Normalised subspace similarity (Hu et al. 2021, section 7.2)\n\nadapter 1: ", md.f);
    put_md(md.f, l1->dir);
    fputs("  \nadapter 2: ", md.f);
    put_md(md.f, l2->dir);
    fputs("\n\nphi(i, j) = ‖(U1^i)ᵀU2^j‖²_F / min(i, j), U the right-singular vectors of A (input space) or the\n"
          "left-singular vectors of B (output space). \"random\" is the expectation for random subspaces of\n"
          "the same sizes, max(i, j)/dim. Heatmaps: phi_LAYER_MODULE (A) and phi_B_LAYER_MODULE (B).\n\n",
          md.f);
    fputs("| layer | module | r1 | r2 | A: phi(1,1) | random | A: phi(r1,r2) | random | B: phi(1,1) | random | "
          "B: phi(r1,r2) | random | note |\n",
          md.f);
    fputs("|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|\n", md.f);
    fputs("layer\tmodule\tr1\tr2\tin\tout\tphiA_11\tphiA_r1r2\tphiB_11\tphiB_r1r2\trankA1\trankA2\trankB1\trankB2\n",
          tsv.f);
    for (int i = 0; i < sum->n_phi; i++) {
        const LAPhiRow *p = &sum->phi[i];
        int mx = p->r1 > p->r2 ? p->r1 : p->r2;
        fprintf(md.f, "| %d | %s | %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |", p->layer,
                model_module_name(p->mod), p->r1, p->r2, p->phiA_11, 1.0 / p->in, p->phiA_last, (double)mx / p->in,
                p->phiB_11, 1.0 / p->out, p->phiB_last, (double)mx / p->out);
        const char *sep = " ";
        const int ranks[4] = {p->rankA1, p->rankA2, p->rankB1, p->rankB2}, rs[4] = {p->r1, p->r2, p->r1, p->r2};
        const char *names[4] = {"A1", "A2", "B1", "B2"};
        for (int q = 0; q < 4; q++)
            if (ranks[q] < rs[q]) {
                fprintf(md.f, "%s%s has numerical rank %d < r = %d (its phi past %d is arbitrary)", sep, names[q],
                        ranks[q], rs[q], ranks[q]);
                sep = "; ";
            }
        fputs(" |\n", md.f);
        fprintf(tsv.f, "%d\t%s\t%d\t%d\t%d\t%d\t%.9f\t%.9f\t%.9f\t%.9f\t%d\t%d\t%d\t%d\n", p->layer,
                model_module_name(p->mod), p->r1, p->r2, p->in, p->out, p->phiA_11, p->phiA_last, p->phiB_11,
                p->phiB_last, p->rankA1, p->rankA2, p->rankB1, p->rankB2);
    }
    LLStatus st = text_save(&md, out_dir, "phi_summary.md", err);
    LLStatus st2 = text_save(&tsv, out_dir, "phi_summary.tsv", st ? NULL : err);
    return st ? st : st2;
}

/* ---- the analysis ------------------------------------------------------------------------------- */

/* phi of one module (A and B), its two figures and its summary row. */
static LLStatus analyze_phi_site(const LAOptions *o, const Loaded *l1, const Loaded *l2, int si, LASummary *sum,
                                 LLError *err) {
    const AdapterSite *s1 = &l1->a->sites[si], *s2 = &l2->a->sites[si];
    const int r1 = s1->r, r2 = s2->r, in = s1->in, out = s1->out;
    LAPhiRow *row = &sum->phi[sum->n_phi];
    memset(row, 0, sizeof *row);
    row->layer = s1->layer, row->mod = s1->mod, row->r1 = r1, row->r2 = r2, row->in = in, row->out = out;
    double *phi = ll_malloc((size_t)r1 * r2, sizeof(double));
    double *sv1 = ll_malloc((size_t)r1, sizeof(double)), *sv2 = ll_malloc((size_t)r2, sizeof(double));
    double *X1 = widen(l1->A[si], (size_t)r1 * in), *X2 = widen(l2->A[si], (size_t)r2 * s2->in);
    char name[128];
    LLStatus st = la_subspace_phi(LA_ROWS, X1, r1, in, X2, r2, s2->in, phi, sv1, sv2, err);
    if (!st) {
        row->phiA_11 = phi[0], row->phiA_last = phi[(size_t)r1 * r2 - 1];
        row->rankA1 = la_numerical_rank(sv1, r1), row->rankA2 = la_numerical_rank(sv2, r2);
        snprintf(name, sizeof name, "phi_%d_%s", s1->layer, model_module_name(s1->mod));
        st = write_phi_figure(o->out_dir, name, 'A', s1->layer, s1->mod, l1, l2, r1, r2, in, phi, sv1, sv2, err);
        if (!st) sum->n_figs++;
    }
    ll_free(X1);
    ll_free(X2);
    if (!st) {
        X1 = widen(l1->B[si], (size_t)out * r1), X2 = widen(l2->B[si], (size_t)s2->out * r2);
        st = la_subspace_phi(LA_COLS, X1, r1, out, X2, r2, s2->out, phi, sv1, sv2, err);
        if (!st) {
            row->phiB_11 = phi[0], row->phiB_last = phi[(size_t)r1 * r2 - 1];
            row->rankB1 = la_numerical_rank(sv1, r1), row->rankB2 = la_numerical_rank(sv2, r2);
            snprintf(name, sizeof name, "phi_B_%d_%s", s1->layer, model_module_name(s1->mod));
            st = write_phi_figure(o->out_dir, name, 'B', s1->layer, s1->mod, l1, l2, r1, r2, out, phi, sv1, sv2, err);
            if (!st) sum->n_figs++;
        }
        ll_free(X1);
        ll_free(X2);
    }
    ll_free(phi);
    ll_free(sv1);
    ll_free(sv2);
    if (st) return ll_err_prefix(err, "phi of layer %d %s", s1->layer, model_module_name(s1->mod));
    sum->n_phi++;
    return LL_OK;
}

static LLStatus analyze_amp_site(const LAOptions *o, const Loaded *l, int which, int si, Model *m, LASummary *sum,
                                 LLError *err) {
    const AdapterSite *s = &l->a->sites[si];
    const int d = s->out, k = s->in, r = s->r;
    double *A = widen(l->A[si], (size_t)r * k), *B = widen(l->B[si], (size_t)d * r);
    double *W = widen(model_weight(m, s->layer, s->mod), (size_t)d * k);
    double *dW = ll_malloc((size_t)d * k, sizeof(double));
    LAAmpRow *row = &sum->amp[sum->n_amp];
    memset(row, 0, sizeof *row);
    row->adapter = which, row->layer = s->layer, row->mod = s->mod, row->r = r, row->scale = s->scale;
    LLStatus st = la_lora_delta(B, d, r, A, r, k, s->scale, dW, err);
    /* The same random subspace for a module under both adapters: the baseline is shared. */
    if (!st) st = la_amplification(W, dW, d, k, r, rng_derive(o->seed, (uint64_t)si), &row->amp, err);
    ll_free(A);
    ll_free(B);
    ll_free(W);
    ll_free(dW);
    if (st) return ll_err_prefix(err, "amplification of adapter '%s', layer %d %s", l->dir, s->layer,
                                 model_module_name(s->mod));
    sum->n_amp++;
    return LL_OK;
}

static int layer_ok(const LAOptions *o, int layer) { return o->layer < 0 || o->layer == layer; }

/* The modules amplification looks at in one adapter (spec 9.2 and the paper study W_q and W_v). */
static unsigned amp_modules(const LAOptions *o, const Loaded *l) {
    if (o->modules) return o->modules;
    unsigned adapted = 0;
    for (int i = 0; i < l->n_sites; i++)
        if (site_active(l, i) && layer_ok(o, l->a->sites[i].layer)) adapted |= 1u << l->a->sites[i].mod;
    unsigned qv = adapted & ((1u << MOD_Q) | (1u << MOD_V));
    return qv ? qv : adapted;
}

static void adapted_string(const Loaded *l, char *out, size_t cap) {
    unsigned mask = 0;
    for (int i = 0; i < l->n_sites; i++)
        if (site_active(l, i)) mask |= 1u << l->a->sites[i].mod;
    adapter_targets_string(mask, out, cap);
}

LLStatus la_analyze(const LAOptions *o, LASummary *sum, LLError *err) {
    memset(sum, 0, sizeof *sum);
    if (!o->adapter1 || !o->out_dir) return ll_err(err, LL_ERR_CONFIG, "analyze needs an adapter folder and an output folder");
    char base[1024];
    LLStatus st = la_check_adapter(o->adapter1, base, sizeof base, err);
    if (!st && o->adapter2) st = la_check_adapter(o->adapter2, NULL, 0, err);
    if (st) return st;
    if (o->model_dir) {
        snprintf(sum->model_dir, sizeof sum->model_dir, "%s", o->model_dir);
    } else {
        char probe[2048];
        snprintf(probe, sizeof probe, "%s/config.json", base);
        if (!base[0] || !ll_file_exists(probe))
            return ll_err(err, LL_ERR_CONFIG,
                          "no model folder given, and adapter '%s' names base model '%s', which is not a model folder "
                          "here; pass --model DIR",
                          o->adapter1, base);
        snprintf(sum->model_dir, sizeof sum->model_dir, "%s", base);
    }

    /* The model: config and weights only (no tokenizer needed), the smallest batch capacity. */
    ModelConfig mc;
    Model m;
    memset(&m, 0, sizeof m);
    ModelOptions mo = {.B = 1, .T = 2, .training = 0, .train_base = 0};
    st = checkpoint_load_config(sum->model_dir, &mc, err);
    if (!st) st = model_init(&m, &mc, &mo, err);
    if (st) return ll_err_prefix(err, "model folder '%s'", sum->model_dir);
    st = checkpoint_load_weights(sum->model_dir, &m, NULL, err);
    if (st) {
        model_free(&m);
        return st;
    }
    if (o->layer >= mc.L) {
        model_free(&m);
        return ll_err(err, LL_ERR_CONFIG, "--layer %d: the model has layers 0..%d", o->layer, mc.L - 1);
    }
    Loaded ls[2];
    memset(ls, 0, sizeof ls);
    int n_loaded = 0;
    st = load_adapter(o->adapter1, &m, &ls[0], err);
    if (!st) n_loaded = 1;
    if (!st && o->adapter2) {
        st = load_adapter(o->adapter2, &m, &ls[1], err);
        if (!st) n_loaded = 2;
    }
    if (!st) st = ll_mkdirs(o->out_dir, err);

    const int n_sites = mc.L * MOD_COUNT;
    if (!st) {
        sum->phi = ll_calloc((size_t)n_sites, sizeof *sum->phi);
        sum->amp = ll_calloc((size_t)n_sites * 2, sizeof *sum->amp);
    }
    /* phi: every module adapted in both, within the filter */
    if (!st && n_loaded == 2) {
        for (int i = 0; i < n_sites && !st; i++) {
            const AdapterSite *s = &ls[0].a->sites[i];
            if (!site_active(&ls[0], i) || !site_active(&ls[1], i) || !layer_ok(o, s->layer)) continue;
            if (o->modules && !(o->modules & (1u << s->mod))) continue;
            st = analyze_phi_site(o, &ls[0], &ls[1], i, sum, err);
        }
        if (!st && sum->n_phi == 0) {
            char t1[256], t2[256];
            adapted_string(&ls[0], t1, sizeof t1);
            adapted_string(&ls[1], t2, sizeof t2);
            st = ll_err(err, LL_ERR_CONFIG,
                        "no module is adapted in both adapters%s (adapter 1 adapts %s, adapter 2 adapts %s)",
                        o->layer >= 0 || o->modules ? " within --layer/--module" : "", t1[0] ? t1 : "nothing",
                        t2[0] ? t2 : "nothing");
        }
        if (!st) st = write_phi_summary(o->out_dir, &ls[0], &ls[1], sum, err);
    }
    /* amplification: per adapter, q_proj and v_proj unless told otherwise */
    for (int w = 0; w < n_loaded && !st; w++) {
        unsigned mods = amp_modules(o, &ls[w]);
        for (int i = 0; i < n_sites && !st; i++) {
            const AdapterSite *s = &ls[w].a->sites[i];
            if (!site_active(&ls[w], i) || !layer_ok(o, s->layer) || !(mods & (1u << s->mod))) continue;
            st = analyze_amp_site(o, &ls[w], w + 1, i, &m, sum, err);
        }
    }
    if (!st && sum->n_amp == 0 && n_loaded > 0) {
        char t1[256];
        adapted_string(&ls[0], t1, sizeof t1);
        st = ll_err(err, LL_ERR_CONFIG, "no adapted module left for the amplification table%s (adapter 1 adapts %s)",
                    o->layer >= 0 || o->modules ? " within --layer/--module" : "", t1[0] ? t1 : "nothing");
    }
    if (!st) st = write_amplification(o->out_dir, sum->model_dir, ls, n_loaded, sum, o->seed, err);
    /* spectral diagnostics: per adapter, every adapted module within the filter */
    for (int w = 0; w < n_loaded && !st; w++) {
        DiagSite *ds = NULL;
        int nd = 0;
        st = diag_model(sum->model_dir, &m, ls[w].a, o->layer, o->modules, &ds, &nd, err);
        if (st) {
            ll_err_prefix(err, "adapter '%s'", ls[w].dir);
            break;
        }
        sum->diag = ll_realloc(sum->diag, (size_t)(sum->n_diag + nd + 1), sizeof *sum->diag);
        for (int i = 0; i < nd; i++) sum->diag[sum->n_diag++] = (LADiagRow){w + 1, ds[i]};
        ll_free(ds);
    }
    if (!st) st = write_diagnostics(o->out_dir, sum->model_dir, ls, n_loaded, sum, err);
    for (int i = 0; i < 2; i++)
        if (ls[i].a) unload_adapter(&ls[i]);
    model_free(&m);
    if (st || sum->n_figs == 0 || !o->render) return st;

    /* Rendering comes last: every file is on disk even when gnuplot fails. */
    char gp[1024];
    if (!gnuplot_find(gp, sizeof gp)) {
        sum->gnuplot_missing = 1;
        return LL_OK;
    }
    LLStatus first = LL_OK;
    for (int i = 0; i < sum->n_phi; i++)
        for (int b = 0; b < 2; b++) {
            char name[128];
            snprintf(name, sizeof name, "phi_%s%d_%s", b ? "B_" : "", sum->phi[i].layer,
                     model_module_name(sum->phi[i].mod));
            LLError e;
            GnuplotSandbox sb = {1, ""};
            LLStatus rs = gnuplot_render(gp, o->out_dir, name, FORMATS, 3, &sb, &e);
            if (!sb.sandboxed && !sum->unsandboxed[0])
                snprintf(sum->unsandboxed, sizeof sum->unsandboxed, "%s", sb.why_not);
            if (rs == LL_OK) {
                sum->n_rendered++;
            } else if (!first) {
                sum->render_failed = 1;
                first = e.code;
                if (err) *err = e;
            }
        }
    return first;
}
