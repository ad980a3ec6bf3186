/* stats: what the tables say about a configuration's seeds: mean, sample standard deviation and the
 * 95% confidence interval of the mean from Student's t distribution (shared/reference section 9:
 * mean ± t(0.975, n-1) · sd / sqrt(n)).
 *
 * Invariants:
 * - Non-finite values (a diverged seed's NaN) are left out and counted in n_dropped, never averaged.
 * - With n < 2 there is no interval: sd and half are NaN, and the tables print the mean with "n=1",
 *   never "± 0".
 * - stats_t_quantile is exact to about 1e-10 for every df >= 1 (bisection on the t CDF written with
 *   the regularized incomplete beta function), so no table of t values is needed and none is capped.
 * - Two summaries "differ" (stats_separated) only when both have intervals and they do not overlap;
 *   that is the only case in which a table may bold one row over the next. */
#ifndef LL_STATS_H
#define LL_STATS_H

typedef struct {
    int n;          /* finite values used */
    int n_dropped;  /* non-finite values left out */
    double mean, sd;
    double half;    /* half-width of the 95% interval: mean ± half; NaN when n < 2 */
} StatsSummary;

void stats_summary(const double *x, int n, StatsSummary *out);

/* The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1. */
double stats_inc_beta(double x, double a, double b);
/* P(T <= t) for Student's t with df degrees of freedom (df >= 1). */
double stats_t_cdf(double t, double df);
/* The p-quantile (0 < p < 1) of Student's t with df >= 1 degrees of freedom. */
double stats_t_quantile(double p, double df);

/* 1 when both intervals exist and do not overlap. */
int stats_separated(const StatsSummary *a, const StatsSummary *b);

#endif
