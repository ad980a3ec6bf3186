/* diagnostics: intruder dimensions, effective rank and DoRA's magnitude/direction change against
 * numpy on small fixtures (tests/fixtures/diagnostics_ref.py prints the table below): counts exact,
 * values to 1e-9. A whole model (diag_model): W0 read from a saved base folder and W1 the weight the
 * model computes with, against diag_matrix on matrices built here by hand, for LoRA (s·B·A in
 * double), DoRA (the merged weights), PiSSA (the residual plus its initial B·A is the pretrained W)
 * and full fine-tuning (every linear layer; only the changed one moves). */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "diag"
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "analysis/diagnostics.h"
#include "checkpoint.h"
#include "core.h"
#include "rng.h"
#include "tokenizer.h"
#include "util.h"

static double u(uint32_t i, uint32_t mul) { return (double)(uint32_t)(i * mul) / 4294967296.0 - 0.5; }

/* The same fixture as diagnostics_ref.py: W0 from one hash, W1 = W0 + scale * sum of rank outer products. */
static void fixture(int out, int in, double scale, int rank, double sep, double *W0, double *W1) {
    int p = out < in ? out : in;
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++)
            W0[r * in + c] = W1[r * in + c] = u((uint32_t)(r * in + c), 2654435761u) + (r == c ? sep * (p - r) : 0.0);
    for (int q = 0; q < rank; q++)
        for (int r = 0; r < out; r++)
            for (int c = 0; c < in; c++)
                W1[r * in + c] += scale * u((uint32_t)(r + 1000 * (q + 1)), 2246822519u) *
                                  u((uint32_t)(c + 2000 * (q + 1)), 3266489917u);
}

START_TEST(t_against_numpy) {
    const struct {
        int out, in;
        double scale;
        int rank;
        double sep;
        int intruders;
        double min_cos, eff, fro, dm, dd;
    } ref[] = {
        {12, 8, 3.0, 2, 1.0, 0, 0.709398260356, 1.28879935482, 4.21743967764, 0.446688589042, 0.157265212998},
        {12, 8, 0.05, 1, 1.0, 0, 0.999966323292, 1, 0.0379014206447, 0.00350056500204, 3.02350079009e-05},
        {6, 10, 1.5, 3, 1.0, 0, 0.7493763965, 2.3018345191, 2.1321861186, 0.395136346366, 0.025471762657},
        {12, 8, 8.0, 2, 0.5, 1, 0.481971274267, 1.28879935482, 11.246505807, 1.96968553379, 0.440634666057},
    };
    for (size_t t = 0; t < sizeof ref / sizeof ref[0]; t++) {
        double W0[120], W1[120];
        fixture(ref[t].out, ref[t].in, ref[t].scale, ref[t].rank, ref[t].sep, W0, W1);
        DiagMatrix d;
        LLError err;
        ck_assert_int_eq(diag_matrix(W0, W1, ref[t].out, ref[t].in, DIAG_INTRUDER_K, DIAG_INTRUDER_EPS, &d, &err), LL_OK);
        int p = ref[t].out < ref[t].in ? ref[t].out : ref[t].in;
        ck_assert_int_eq(d.k, p < 10 ? p : 10);
        ck_assert_msg(d.intruders == ref[t].intruders, "fixture %zu: %d intruders, numpy %d", t, d.intruders,
                      ref[t].intruders);
        const double got[] = {d.min_max_cos, d.eff_rank, d.dw_fro, d.d_mag, d.d_dir};
        const double want[] = {ref[t].min_cos, ref[t].eff, ref[t].fro, ref[t].dm, ref[t].dd};
        for (int i = 0; i < 5; i++)
            ck_assert_msg(fabs(got[i] - want[i]) <= 1e-9 + 1e-9 * fabs(want[i]), "fixture %zu value %d: %.12g, numpy %.12g",
                          t, i, got[i], want[i]);
    }
}
END_TEST

START_TEST(t_edges) {
    double W0[12], W1[12];
    fixture(3, 4, 0.0, 0, 1.0, W0, W1); /* no change: no intruder, effective rank 0, every vector aligned */
    DiagMatrix d;
    LLError err;
    ck_assert_int_eq(diag_matrix(W0, W1, 3, 4, 10, 0.5, &d, &err), LL_OK);
    ck_assert(d.intruders == 0 && d.eff_rank == 0.0 && d.dw_fro == 0.0 && d.d_mag == 0.0 && fabs(d.d_dir) < 1e-15);
    ck_assert_msg(fabs(d.min_max_cos - 1.0) < 1e-12, "%.15f", d.min_max_cos);
    /* epsilon 1.01: every vector counts as an intruder (the threshold is applied as written) */
    ck_assert_int_eq(diag_matrix(W0, W1, 3, 4, 10, 1.01, &d, &err), LL_OK);
    ck_assert_int_eq(d.intruders, 3);
    W1[5] = NAN;
    ck_assert_int_eq(diag_matrix(W0, W1, 3, 4, 10, 0.5, &d, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "adapted weight") != NULL, "%s", err.msg);
    /* effective rank: k equal singular values give k */
    ck_assert(fabs(diag_effective_rank((const double[]){2, 2, 2, 0}, 4) - 3.0) < 1e-12);
}
END_TEST

/* ---- a whole model ------------------------------------------------------------------------------ */

/* A small random model (C 16, F 24, 2 layers) saved to tu_dir/base; the model stays open. */
static void base_model(Model *m, char *dir, size_t cap) {
    Tokenizer *tok = tok_new_bytes();
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.V = tok_vocab_size(tok), c.C = 16, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = 4, c.F = 24, c.max_T = 16;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.25f;
    c.bos_id = tok_bos(tok), c.eos_id = tok_eos(tok), c.pad_id = tok_pad(tok);
    ModelOptions o = {.B = 2, .T = 8, .training = 1, .train_base = 1};
    LLError err;
    CK_OK(model_init(m, &c, &o, &err));
    model_init_weights(m, 77);
    tu_path(dir, cap, "base");
    CK_OK(checkpoint_save(m, tok, NULL, dir, &err));
    tok_free(tok);
}

typedef struct {
    const float *A[64], *B[64];
} LoraTensors;

static void grab(void *ctx, const AdapterSite *s, const char *name, int ndim, const int64_t *shape, const float *data) {
    LoraTensors *t = ctx;
    (void)ndim, (void)shape;
    if (!s) return;
    if (strcmp(name, "lora_A.weight") == 0) t->A[s->layer * MOD_COUNT + s->mod] = data;
    if (strcmp(name, "lora_B.weight") == 0) t->B[s->layer * MOD_COUNT + s->mod] = data;
}

static double *widen(const float *x, size_t n) {
    double *d = ll_malloc(n, sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* got against diag_matrix(W0, W1): counts exact, values to 1e-5 (W1 here in double, there in float) */
static void same_diag(const DiagSite *got, const double *W0, const double *W1) {
    DiagMatrix want;
    LLError err;
    CK_OK(diag_matrix(W0, W1, got->out, got->in, DIAG_INTRUDER_K, DIAG_INTRUDER_EPS, &want, &err));
    ck_assert_msg(got->d.intruders == want.intruders && got->d.k == want.k, "layer %d mod %d: %d/%d intruders, want %d/%d",
                  got->layer, got->mod, got->d.intruders, got->d.k, want.intruders, want.k);
    const double a[] = {got->d.min_max_cos, got->d.eff_rank, got->d.dw_fro, got->d.d_mag, got->d.d_dir};
    const double b[] = {want.min_max_cos, want.eff_rank, want.dw_fro, want.d_mag, want.d_dir};
    for (int i = 0; i < 5; i++)
        ck_assert_msg(fabs(a[i] - b[i]) <= 1e-5 * (1.0 + fabs(b[i])), "layer %d mod %d value %d: %.9g, want %.9g",
                      got->layer, got->mod, i, a[i], b[i]);
}

static AdapterConfig lora_r2(unsigned targets) {
    AdapterConfig ac;
    adapter_config_defaults(&ac, ADAPTER_LORA);
    ac.r = 2, ac.alpha = 4.0f, ac.targets = targets;
    return ac;
}

START_TEST(t_model_lora_and_filter) {
    Model m;
    char dir[512];
    base_model(&m, dir, sizeof dir);
    AdapterConfig ac = lora_r2((1u << MOD_Q) | (1u << MOD_V) | (1u << MOD_DOWN));
    Adapter *a;
    LLError err;
    CK_OK(adapter_create(&ac, &m, &a, &err));
    Rng r;
    rng_seed(&r, 5);
    rng_fill_normal(&r, a->params, a->n_params, 0.5f); /* B != 0: a real update */
    adapter_attach(&m, a);
    LoraTensors t = {{0}, {0}};
    a->ops->export_tensors(a, grab, &t);
    DiagSite *ds;
    int n;
    CK_OK(diag_model(dir, &m, a, -1, 0, &ds, &n, &err));
    ck_assert_int_eq(n, 6);
    const int mods[3] = {MOD_Q, MOD_V, MOD_DOWN};
    for (int i = 0; i < n; i++) {
        ck_assert(ds[i].layer == i / 3 && ds[i].mod == mods[i % 3]);
        const AdapterSite *s = &a->sites[ds[i].layer * MOD_COUNT + ds[i].mod];
        ck_assert(ds[i].out == s->out && ds[i].in == s->in);
        const size_t nw = (size_t)s->out * s->in;
        double *W0 = widen(model_weight(&m, s->layer, s->mod), nw), *W1 = widen(model_weight(&m, s->layer, s->mod), nw);
        const float *A = t.A[s->layer * MOD_COUNT + s->mod], *B = t.B[s->layer * MOD_COUNT + s->mod];
        for (int o = 0; o < s->out; o++)
            for (int j = 0; j < s->in; j++) {
                double acc = 0.0;
                for (int q = 0; q < s->r; q++) acc += (double)B[o * s->r + q] * A[q * s->in + j];
                W1[(size_t)o * s->in + j] += s->scale * acc;
            }
        double fro = 0.0;
        for (size_t k = 0; k < nw; k++) fro += W0[k] * W0[k];
        ck_assert(fabs(ds[i].w0_fro - sqrt(fro)) <= 1e-9 * sqrt(fro));
        ck_assert(ds[i].d.eff_rank > 0.9 && ds[i].d.eff_rank <= 2.0 + 1e-9); /* rank 2 */
        same_diag(&ds[i], W0, W1);
        ll_free(W0), ll_free(W1);
    }
    double v[DIAG_N_VALUES];
    diag_site_values(&ds[0], v);
    ck_assert(v[0] == ds[0].d.intruders && v[3] == ds[0].d.eff_rank && v[5] == ds[0].w0_fro && v[7] == ds[0].d.d_dir);
    ck_assert_str_eq(DIAG_VALUE_NAMES[0], "intruders");
    ll_free(ds);
    /* the filter: layer 1, v_proj and o_proj (o_proj is not adapted: left out) */
    CK_OK(diag_model(dir, &m, a, 1, (1u << MOD_V) | (1u << MOD_O), &ds, &n, &err));
    ck_assert(n == 1 && ds[0].layer == 1 && ds[0].mod == MOD_V);
    ll_free(ds);
    /* no base folder: the error says what was needed */
    char nowhere[600];
    snprintf(nowhere, sizeof nowhere, "%s/none", tu_dir);
    ck_assert_int_eq(diag_model(nowhere, &m, a, -1, 0, &ds, &n, &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, "base model's weights") && n == 0 && !ds, "%s", err.msg);
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* DoRA: the effective weight is the one merging writes; PiSSA: measured from the pretrained W, so
 * an untrained PiSSA adapter has moved nothing (the model holds the residual). */
START_TEST(t_model_dora_pissa) {
    Model m;
    char dir[512];
    base_model(&m, dir, sizeof dir);
    AdapterConfig ac = lora_r2((1u << MOD_Q) | (1u << MOD_UP));
    ac.use_dora = 1;
    Adapter *a;
    LLError err;
    CK_OK(adapter_create(&ac, &m, &a, &err));
    Rng r;
    rng_seed(&r, 9);
    rng_fill_normal(&r, a->params, a->n_params, 0.3f); /* B, A and the magnitude: all moved */
    adapter_attach(&m, a);
    DiagSite *ds;
    int n;
    CK_OK(diag_model(dir, &m, a, -1, 0, &ds, &n, &err));
    ck_assert_int_eq(n, 4);
    double *W0s[4];
    for (int i = 0; i < n; i++) W0s[i] = widen(model_weight(&m, ds[i].layer, ds[i].mod), (size_t)ds[i].out * ds[i].in);
    adapter_merge(a, &m);
    for (int i = 0; i < n; i++) {
        double *W1 = widen(model_weight(&m, ds[i].layer, ds[i].mod), (size_t)ds[i].out * ds[i].in);
        ck_assert(ds[i].d.d_mag > 1e-3 && ds[i].d.d_dir > 1e-4);
        same_diag(&ds[i], W0s[i], W1);
        ll_free(W1), ll_free(W0s[i]);
    }
    ll_free(ds);
    adapter_free(a);
    model_free(&m);

    base_model(&m, dir, sizeof dir);
    ac.use_dora = 0, ac.init = ADAPTER_INIT_PISSA;
    CK_OK(adapter_create(&ac, &m, &a, &err));
    adapter_attach(&m, a);
    CK_OK(diag_model(dir, &m, a, -1, 0, &ds, &n, &err));
    ck_assert_int_eq(n, 4);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(ds[i].d.dw_fro < 1e-5 * ds[i].w0_fro, "layer %d: ||dW|| %.3g of ||W0|| %.3g", ds[i].layer,
                      ds[i].d.dw_fro, ds[i].w0_fro);
        ck_assert_int_eq(ds[i].d.intruders, 0);
    }
    ll_free(ds);
    adapter_free(a);
    model_free(&m);
}
END_TEST

/* Full fine-tuning: every linear layer is measured; one changed matrix moves, the others are exact. */
START_TEST(t_model_full) {
    Model m;
    char dir[512];
    base_model(&m, dir, sizeof dir);
    float *W = model_weight(&m, 1, MOD_GATE);
    int in, out;
    model_module_dims(&m.cfg, MOD_GATE, &in, &out);
    double *W0 = widen(W, (size_t)in * out);
    Rng r;
    rng_seed(&r, 3);
    for (int o = 0; o < out; o++) /* a rank-1 change */
        for (int j = 0; j < in; j++) W[o * in + j] += 0.5f * (float)(o % 3 - 1) * (float)(j % 5 - 2);
    double *W1 = widen(W, (size_t)in * out);
    DiagSite *ds;
    int n;
    LLError err;
    CK_OK(diag_model(dir, &m, NULL, -1, 0, &ds, &n, &err));
    ck_assert_int_eq(n, 2 * MOD_COUNT);
    for (int i = 0; i < n; i++) {
        ck_assert(ds[i].layer == i / MOD_COUNT && ds[i].mod == i % MOD_COUNT);
        if (ds[i].layer == 1 && ds[i].mod == MOD_GATE) {
            same_diag(&ds[i], W0, W1);
            ck_assert(fabs(ds[i].d.eff_rank - 1.0) < 1e-4); /* float rounding of W1 - W0 adds tiny values */
        } else {
            ck_assert(ds[i].d.dw_fro == 0.0 && ds[i].d.intruders == 0 && ds[i].d.eff_rank == 0.0);
        }
    }
    ll_free(ds), ll_free(W0), ll_free(W1);
    model_free(&m);
}
END_TEST

Suite *diagnostics_suite(void) {
    Suite *s = suite_create("diagnostics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, t_against_numpy);
    tcase_add_test(tc, t_edges);
    suite_add_tcase(s, tc);
    TCase *model = tu_tcase(s, "model", 1, 60);
    tcase_add_test(model, t_model_lora_and_filter);
    tcase_add_test(model, t_model_dora_pissa);
    tcase_add_test(model, t_model_full);
    return s;
}
