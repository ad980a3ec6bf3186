/* stats: see stats.h. */
#include "stats.h"

#include <math.h>

void stats_summary(const double *x, int n, StatsSummary *out) {
    double sum = 0.0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) {
            sum += x[i];
            k++;
        }
    out->n = k;
    out->n_dropped = n - k;
    out->mean = k ? sum / k : NAN;
    out->sd = out->half = NAN;
    if (k < 2) return;
    /* Two passes: the one-pass formula loses digits when the mean is large against the spread. */
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) {
            double d = x[i] - out->mean;
            ss += d * d;
        }
    out->sd = sqrt(ss / (k - 1));
    out->half = stats_t_quantile(0.975, k - 1) * out->sd / sqrt((double)k);
}

/* The continued fraction of I_x(a, b) (its even and odd terms), evaluated by the modified Lentz
 * method; converges fast for x < (a + 1) / (a + b + 2), which the caller arranges by symmetry. */
static double beta_cf(double x, double a, double b) {
    const double tiny = 1e-300, eps = 1e-15;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double h = d;
    for (int m = 1; m <= 500; m++) {
        double m2 = 2.0 * m;
        double num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + num * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + num / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        h *= d * c;
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + num * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + num / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        double step = d * c;
        h *= step;
        if (fabs(step - 1.0) < eps) break;
    }
    return h;
}

double stats_inc_beta(double x, double a, double b) {
    if (!(x > 0.0)) return 0.0;
    if (!(x < 1.0)) return 1.0;
    /* x^a (1-x)^b / (a B(a, b)), with B from log-gamma so that large a, b do not overflow */
    double ln_front = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1.0) / (a + b + 2.0)) return exp(ln_front) * beta_cf(x, a, b) / a;
    return 1.0 - exp(ln_front) * beta_cf(1.0 - x, b, a) / b;
}

double stats_t_cdf(double t, double df) {
    if (isnan(t)) return NAN;
    /* P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2) */
    double tail = 0.5 * stats_inc_beta(df / (df + t * t), 0.5 * df, 0.5);
    return t >= 0 ? 1.0 - tail : tail;
}

double stats_t_quantile(double p, double df) {
    if (!(p > 0.0 && p < 1.0) || !(df >= 1.0)) return NAN;
    if (p == 0.5) return 0.0;
    if (p < 0.5) return -stats_t_quantile(1.0 - p, df);
    double lo = 0.0, hi = 1.0;
    while (stats_t_cdf(hi, df) < p && hi < 1e300) hi *= 2.0;
    /* The CDF is monotone: bisection to the last bit, about 60-1100 steps of a cheap function. */
    for (int i = 0; i < 2000 && hi - lo > 1e-12 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (stats_t_cdf(mid, df) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

int stats_separated(const StatsSummary *a, const StatsSummary *b) {
    if (!(isfinite(a->half) && isfinite(b->half))) return 0;
    return a->mean + a->half < b->mean - b->half || b->mean + b->half < a->mean - a->half;
}
