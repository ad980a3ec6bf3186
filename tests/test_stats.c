/* stats: the t quantile against closed forms (df 1 is Cauchy, df 2 has an algebraic quantile) and
 * published table values, the interval of small samples worked by hand, and the rule for bolding. */
#include <check.h>
#include <math.h>

#include "analysis/stats.h"

#define PI 3.14159265358979323846

START_TEST(t_quantile_closed_forms) {
    const double ps[] = {0.6, 0.9, 0.95, 0.975, 0.995, 0.9995};
    for (int i = 0; i < 6; i++) {
        double p = ps[i];
        double cauchy = tan(PI * (p - 0.5));
        double two = (2 * p - 1) * sqrt(2.0 / (4 * p * (1 - p)));
        ck_assert_msg(fabs(stats_t_quantile(p, 1) - cauchy) <= 1e-9 * cauchy, "df 1 p %g: %.12g vs %.12g", p,
                      stats_t_quantile(p, 1), cauchy);
        ck_assert_msg(fabs(stats_t_quantile(p, 2) - two) <= 1e-9 * two, "df 2 p %g: %.12g vs %.12g", p,
                      stats_t_quantile(p, 2), two);
        ck_assert(fabs(stats_t_quantile(1 - p, 3) + stats_t_quantile(p, 3)) < 1e-12);
    }
    ck_assert(stats_t_quantile(0.5, 7) == 0.0);
    ck_assert(isnan(stats_t_quantile(1.0, 3)) && isnan(stats_t_quantile(0.9, 0)));
}
END_TEST

START_TEST(t_quantile_tables) {
    /* Student t tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), to the digits they print */
    const struct {
        double p, df, t;
    } tab[] = {{0.975, 3, 3.182446}, {0.975, 4, 2.776445}, {0.975, 5, 2.570582}, {0.975, 9, 2.262157},
               {0.975, 10, 2.228139}, {0.975, 30, 2.042272}, {0.975, 100, 1.983972}, {0.95, 5, 2.015048},
               {0.995, 10, 3.169273}, {0.9, 1, 3.077684}, {0.975, 1000, 1.962339}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        double t = stats_t_quantile(tab[i].p, tab[i].df);
        ck_assert_msg(fabs(t - tab[i].t) < 1.5e-6, "t(%g, %g) = %.8f, table %.6f", tab[i].p, tab[i].df, t, tab[i].t);
    }
    /* the reference's list for df 6-8 */
    ck_assert(fabs(stats_t_quantile(0.975, 6) - 2.447) < 5e-4);
    ck_assert(fabs(stats_t_quantile(0.975, 7) - 2.365) < 5e-4);
    ck_assert(fabs(stats_t_quantile(0.975, 8) - 2.306) < 5e-4);
    /* the CDF at the quantile gives p back */
    ck_assert(fabs(stats_t_cdf(stats_t_quantile(0.975, 2.5), 2.5) - 0.975) < 1e-12);
    ck_assert(fabs(stats_inc_beta(0.3, 1, 1) - 0.3) < 1e-14); /* uniform */
    ck_assert(fabs(stats_inc_beta(0.5, 2, 3) - 0.6875) < 1e-14); /* 11/16 */
}
END_TEST

START_TEST(t_interval) {
    StatsSummary s;
    stats_summary((const double[]){1, 2, 3}, 3, &s); /* mean 2, sd 1: half = t(.975, 2) / sqrt(3) */
    ck_assert_int_eq(s.n, 3);
    ck_assert(fabs(s.mean - 2) < 1e-15 && fabs(s.sd - 1) < 1e-15);
    ck_assert_msg(fabs(s.half - 4.302652729749464 / sqrt(3.0)) < 1e-9, "half %.12f", s.half);
    stats_summary((const double[]){4.25, NAN, 4.75, INFINITY}, 4, &s); /* diverged seeds left out */
    ck_assert_int_eq(s.n, 2);
    ck_assert_int_eq(s.n_dropped, 2);
    ck_assert(fabs(s.mean - 4.5) < 1e-15);
    ck_assert_msg(fabs(s.half - 12.706204736174705 * sqrt(0.125) / sqrt(2.0)) < 1e-8, "half %.12f", s.half);
    stats_summary((const double[]){3.0}, 1, &s);
    ck_assert(s.n == 1 && s.mean == 3.0 && isnan(s.sd) && isnan(s.half));
    stats_summary((const double[]){NAN}, 1, &s);
    ck_assert(s.n == 0 && isnan(s.mean));
    /* the large-mean case the two-pass sd exists for */
    stats_summary((const double[]){1e9 + 1, 1e9 + 2, 1e9 + 3}, 3, &s);
    ck_assert_msg(fabs(s.sd - 1) < 1e-6, "sd %.9f", s.sd);
}
END_TEST

START_TEST(t_separated) {
    StatsSummary a, b, c, one;
    stats_summary((const double[]){1.00, 1.01, 1.02}, 3, &a);
    stats_summary((const double[]){1.10, 1.11, 1.12}, 3, &b);
    stats_summary((const double[]){1.01, 1.05, 1.09}, 3, &c);
    stats_summary((const double[]){0.5}, 1, &one);
    ck_assert(stats_separated(&a, &b) && stats_separated(&b, &a));
    ck_assert(!stats_separated(&a, &c));
    ck_assert(!stats_separated(&one, &b)); /* no interval, no claim */
}
END_TEST

Suite *stats_suite(void) {
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, t_quantile_closed_forms);
    tcase_add_test(tc, t_quantile_tables);
    tcase_add_test(tc, t_interval);
    tcase_add_test(tc, t_separated);
    suite_add_tcase(s, tc);
    return s;
}
