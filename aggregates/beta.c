/*
 * beta.c -- Beta-Bernoulli posteriors, priors, forgetting and Bayes' rule.
 *
 * What.  A closed funnel is a Bernoulli trial.  Beta(a0, b0) is conjugate to
 * the Bernoulli likelihood, so after s successes in n trials the posterior is
 * Beta(a0 + s, b0 + n - s) (Bayes-Laplace; e.g. Gelman et al., Bayesian Data
 * Analysis, 3rd ed., section 2.4).  We publish its mean a / (a + b) and the
 * equal-tailed credible interval [q((1 - level) / 2), q((1 + level) / 2)],
 * q the Beta quantile.  Empirical-Bayes priors centre Beta(a0, b0) on the
 * parent level's rate with a0 + b0 = strength pseudo-trials.  Forgetting
 * multiplies every count by 2^(-dt / half_life) as event time advances: the
 * discounted Beta, whose effective sample size stays bounded so the
 * posterior follows drifting rates (exponential forgetting; the same
 * device as discounted Thompson sampling, Raj and Kalyani 2017).  Counts are
 * therefore real, not integer, and everything here takes doubles.
 *
 * Invariants.  Every function returns finite numbers for any input (NaN,
 * infinities and negatives are clamped, see each function); posteriors have
 * 0 <= lo <= mean <= hi <= 1.  No allocation, no global state except GSL's
 * error handler, which ps_beta_init() switches off exactly once
 * (pthread_once); ps_beta_quantile() calls it too, so a caller that forgot
 * cannot make GSL abort() the process.
 *
 * GSL 2.7.1's gsl_cdf_beta_Pinv, measured (p in {0.005, 0.025, 0.975},
 * a and b on a log grid 1e-3 .. 1e7, four points per decade):
 *   - It HANGS (infinite loop) for a and b both around 1e6 or more, e.g.
 *     Beta(1e6, 3e6) at p = 0.025 or Beta(1e6, 1e6) at p = 0.5.  Its start-up
 *     bisection (cdf/betainv.c, bisect()) moves neither end when
 *     gsl_cdf_beta_P returns NaN, and gsl_cdf_beta_P does return NaN (its
 *     continued fraction hits the 512-iteration cap) once
 *     h = ab / (a + b) exceeds about 3e5.  A global counter with a few
 *     million trials gets there.
 *   - It returns NaN ("inverse failed to converge") in wide regions: one of
 *     a, b below ~0.003 (often a true underflow of the quantile), one of them
 *     around 0.01-0.1 with the other large, and scattered points with a or
 *     b above ~300 (e.g. Beta(10, 1e5) at p = 0.025).  It is never slow
 *     otherwise: 1-3 us per call, ~25 us when it gives up.
 *   - It returns an exact 0 or 1, or an x whose CDF misses p by a few per
 *     cent, where the quantile is within an ulp of 0 or 1 (b ~ 0.01-0.1 at
 *     p = 0.975).
 * Hence ps_beta_quantile():
 *   1. For h > BETA_GSL_MAX_H (5e4, a factor 6 below the smallest h at
 *      which gsl_cdf_beta_P was seen to return NaN) it never calls GSL and
 *      uses the normal approximation with the Beta mean and variance plus
 *      the first Cornish-Fisher (skewness) term (Cornish and Fisher 1937).
 *      There the Beta is within O(1/h) of normal in units of its standard
 *      deviation, itself <= 0.5 / sqrt(a + b + 1) < 2e-3, so the
 *      absolute error is far below anything we publish.
 *   2. Otherwise gsl_cdf_beta_Pinv, accepted if its CDF (GSL's own
 *      gsl_cdf_beta_P, or _Q in the upper half for accuracy) is within
 *      1e-7 relative of p in the relevant tail.
 *   3. Otherwise bisection of GSL's CDF on [0, 1] down to adjacent doubles
 *      (at most BETA_BISECT_MAX_ITER evaluations, ~0.3 us each).  The CDF is
 *      the library's; only the root finding is ours.
 *   4. If the CDF itself returns NaN there, the normal approximation.
 */
#include "beta.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>

/* Parameters and counts are clamped to these (see ps_beta_posterior). */
#define BETA_PARAM_MIN 1e-6
#define BETA_COUNT_MAX 1e15
#define BETA_PARAM_MAX (2 * BETA_COUNT_MAX + 1)

/* Above this h = ab / (a + b) GSL is not called (see the file header). */
#define BETA_GSL_MAX_H 5e4

/* Relative tail tolerance for accepting gsl_cdf_beta_Pinv's answer. */
#define BETA_ACCEPT_RTOL 1e-7

/* Enough to resolve a quantile of 1e-30 to 2^-28 relative; adjacent
 * doubles are reached in ~55 steps for quantiles above 1e-3. */
#define BETA_BISECT_MAX_ITER 200

/* Empirical-Bayes prior limits (beta.h). */
#define PRIOR_MEAN_MIN 1e-6
#define PRIOR_PARAM_MIN 1e-3

static pthread_once_t beta_once = PTHREAD_ONCE_INIT;

static void beta_init_once(void)
{
    gsl_set_error_handler_off();
}

void ps_beta_init(void)
{
    pthread_once(&beta_once, beta_init_once);
}

/* x clamped to [lo, hi]; NaN becomes nan_value. */
static double clamp(double x, double lo, double hi, double nan_value)
{
    if (isnan(x))
        return nan_value;
    return x < lo ? lo : x > hi ? hi : x;
}

/*
 * Normal approximation to the Beta(a, b) quantile: mean + sd * w, w the
 * standard normal quantile z with the first Cornish-Fisher correction
 * g (z^2 - 1) / 6 for the skewness g (used only while |g| <= 1, where the
 * expansion is meaningful).  Clamped to [0, 1].
 */
static double beta_normal_quantile(double p, double a, double b)
{
    double ab = a + b;
    double mean = a / ab;
    double sd = sqrt(a * b / (ab * ab * (ab + 1)));
    double g = 2 * (b - a) * sqrt(ab + 1) / ((ab + 2) * sqrt(a * b));
    double z = gsl_cdf_ugaussian_Pinv(p);
    double w = fabs(g) <= 1 ? z + g * (z * z - 1) / 6 : z;

    return clamp(mean + sd * w, 0, 1, mean);
}

/*
 * Whether x is the p quantile of Beta(a, b) to BETA_ACCEPT_RTOL in the tail
 * p lies in (P below the median, Q = 1 - P above, where 1 - P would lose
 * the digits that matter).
 */
static int beta_quantile_ok(double x, double p, double a, double b)
{
    double got, want;

    if (!(x >= 0 && x <= 1))
        return 0; /* NaN or out of range */
    if (p <= 0.5) {
        got = gsl_cdf_beta_P(x, a, b);
        want = p;
    } else {
        got = gsl_cdf_beta_Q(x, a, b);
        want = 1 - p; /* exact for p in [0.5, 1] */
    }
    return fabs(got - want) <= BETA_ACCEPT_RTOL * want;
}

/* Bisection of GSL's CDF on [0, 1]; NaN if the CDF returns NaN. */
static double beta_bisect_quantile(double p, double a, double b)
{
    int upper = p > 0.5;
    double want = upper ? 1 - p : p;
    double lo = 0, hi = 1, mid = 0.5;

    for (int i = 0; i < BETA_BISECT_MAX_ITER; i++) {
        double t;

        mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi)
            break; /* lo and hi are adjacent doubles */
        t = upper ? gsl_cdf_beta_Q(mid, a, b) : gsl_cdf_beta_P(mid, a, b);
        if (isnan(t))
            return NAN;
        if (upper ? t > want : t < want)
            lo = mid;
        else
            hi = mid;
    }
    return mid;
}

/* The quantile proper (ps_beta_quantile memoises it). */
static double beta_quantile_compute(double p, double a, double b)
{
    double x;

    p = clamp(p, 0, 1, 0.5);
    if (p == 0)
        return 0;
    if (p == 1)
        return 1;
    a = clamp(a, BETA_PARAM_MIN, BETA_PARAM_MAX, 1);
    b = clamp(b, BETA_PARAM_MIN, BETA_PARAM_MAX, 1);

    if (a * b / (a + b) > BETA_GSL_MAX_H)
        return beta_normal_quantile(p, a, b);

    x = gsl_cdf_beta_Pinv(p, a, b);
    if (beta_quantile_ok(x, p, a, b))
        return x;
    x = beta_bisect_quantile(p, a, b);
    if (!isnan(x))
        return x;
    return beta_normal_quantile(p, a, b);
}

/*
 * Memo.  Flushes ask for the same few quantiles over and over (every
 * customer with 3 trials and no success under the flat prior has the
 * same Beta(1, 4) interval), and one GSL inversion costs microseconds.
 * So answers are kept in a small direct-mapped table per thread, keyed by
 * the exact bits of (p, a, b): a hit returns the very double computed
 * before, so results do not depend on what was asked earlier.
 */
#define BETA_MEMO_SIZE 2048 /* entries, a power of two; 32 bytes each */

/* Zero-initialised: an all-zero entry answers (0, 0, 0) with 0, which is
 * the quantile p = 0 gives anyway. */
typedef struct beta_memo_entry {
    double p, a, b, x;
} beta_memo_entry;

static _Thread_local beta_memo_entry beta_memo[BETA_MEMO_SIZE];

static uint64_t dbl_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

double ps_beta_quantile(double p, double a, double b)
{
    ps_beta_init();
    uint64_t h = dbl_bits(p) * 0x9E3779B97F4A7C15ull;
    h = (h ^ dbl_bits(a)) * 0xC2B2AE3D27D4EB4Full;
    h = (h ^ dbl_bits(b)) * 0x165667B19E3779F9ull;
    beta_memo_entry *e = &beta_memo[(h >> 40) & (BETA_MEMO_SIZE - 1)];
    if (dbl_bits(e->p) == dbl_bits(p) &&
        dbl_bits(e->a) == dbl_bits(a) && dbl_bits(e->b) == dbl_bits(b))
        return e->x;
    double x = beta_quantile_compute(p, a, b);
    *e = (beta_memo_entry){p, a, b, x};
    return x;
}

/*
 * Clamping: n to [0, 1e15] (NaN -> 0), s to [0, n] (NaN -> 0), a0 and b0 to
 * [1e-6, 1e15] (NaN -> 1, the flat prior), level to [0, 1] (NaN -> 0.95).
 * A very skewed posterior (e.g. Beta(0.001, 1), whose 97.5 % point is
 * 1e-11 while its mean is 1e-3) can have its mean outside the equal-tailed
 * interval; the interval is then widened to reach the mean, so that
 * lo <= mean <= hi holds as documented.
 */
void ps_beta_posterior(double s, double n, double a0, double b0, double level,
                       ps_beta_post *out)
{
    double tail;

    assert(out != NULL);
    n = clamp(n, 0, BETA_COUNT_MAX, 0);
    s = clamp(s, 0, n, 0);
    a0 = clamp(a0, BETA_PARAM_MIN, BETA_COUNT_MAX, 1);
    b0 = clamp(b0, BETA_PARAM_MIN, BETA_COUNT_MAX, 1);
    level = clamp(level, 0, 1, 0.95);

    out->alpha = a0 + s;
    out->beta = b0 + (n - s);
    out->mean = out->alpha / (out->alpha + out->beta);
    tail = (1 - level) / 2;
    out->lo = ps_beta_quantile(tail, out->alpha, out->beta);
    out->hi = ps_beta_quantile(1 - tail, out->alpha, out->beta);
    if (out->lo > out->mean)
        out->lo = out->mean;
    if (out->hi < out->mean)
        out->hi = out->mean;
}

/* A NaN parent_mean is taken as 0.5; strength is capped at 1e15. */
void ps_beta_prior_centered(double parent_mean, double strength, double *a0,
                            double *b0)
{
    double m;

    assert(a0 != NULL && b0 != NULL);
    if (!(strength > 0)) { /* also NaN */
        *a0 = 1;
        *b0 = 1;
        return;
    }
    if (strength > BETA_COUNT_MAX)
        strength = BETA_COUNT_MAX;
    m = clamp(parent_mean, PRIOR_MEAN_MIN, 1 - PRIOR_MEAN_MIN, 0.5);
    *a0 = fmax(m * strength, PRIOR_PARAM_MIN);
    *b0 = fmax((1 - m) * strength, PRIOR_PARAM_MIN);
}

/* A NaN half-life means no forgetting; an infinite one gives exp2(-0). */
double ps_decay_factor(int64_t dt_ms, double half_life_ms)
{
    if (!(half_life_ms > 0) || dt_ms <= 0)
        return 1.0;
    return exp2(-(double)dt_ms / half_life_ms);
}

/* Probabilities are clamped to [0, 1], NaN taken as 0. */
double ps_bayes_rule(double p_c, double p_b_given_c, double p_b_given_not_c)
{
    double pc = clamp(p_c, 0, 1, 0);
    double num = clamp(p_b_given_c, 0, 1, 0) * pc;
    double den = num + clamp(p_b_given_not_c, 0, 1, 0) * (1 - pc);

    if (!(den > 0))
        return 0;
    return clamp(num / den, 0, 1, 0);
}
