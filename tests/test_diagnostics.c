/* diagnostics: intruder dimensions, effective rank and DoRA's magnitude/direction change against
 * numpy on small fixtures (tests/fixtures/diagnostics_ref.py prints the table below): counts exact,
 * values to 1e-9. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "analysis/diagnostics.h"
#include "core.h"

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

Suite *diagnostics_suite(void) {
    Suite *s = suite_create("diagnostics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, t_against_numpy);
    tcase_add_test(tc, t_edges);
    suite_add_tcase(s, tc);
    return s;
}
