/*
 * beta.h -- Beta-Bernoulli posteriors, priors, forgetting and Bayes' rule.
 *
 * A funnel is a Bernoulli trial (success = purchase).  With a Beta(a0, b0)
 * prior, after s successes in n trials the posterior is
 * Beta(a0 + s, b0 + n - s) (conjugacy).  We publish its mean and the 95 %
 * equal-tailed credible interval, whose end points are Beta quantiles
 * computed with GSL (gsl_cdf_beta_Pinv), not hand-rolled.
 *
 * Counts may be fractional: with forgetting, every count is multiplied by
 * 2^(-dt / half_life) as event time advances (a discounted Beta, so the
 * posterior follows drifting behaviour).
 *
 * Pure functions, no allocation, thread-safe.  GSL's default error handler
 * aborts the process; ps_beta_init() turns it off once, and every function
 * here checks its inputs and falls back to a safe answer instead.
 */
#ifndef PS_BETA_H
#define PS_BETA_H

#include <stdint.h>

/* Call once before using the functions below (idempotent). */
void ps_beta_init(void);

typedef struct ps_beta_post {
    double alpha, beta; /* posterior parameters */
    double mean;        /* alpha / (alpha + beta) */
    double lo, hi;      /* equal-tailed credible interval end points */
} ps_beta_post;

/*
 * Posterior of successes s out of trials n (s <= n, both >= 0, may be
 * fractional) under a Beta(a0, b0) prior (a0, b0 > 0), with an equal-tailed
 * credible interval of probability `level` (e.g. 0.95).  Non-finite or
 * out-of-range input is clamped; the result is always finite, with
 * 0 <= lo <= mean <= hi <= 1.
 */
void ps_beta_posterior(double s, double n, double a0, double b0, double level,
                       ps_beta_post *out);

/* Beta quantile: the x with P(X <= x) = p for X ~ Beta(a, b); p in [0,1].
 * gsl_cdf_beta_Pinv, its answer checked against GSL's CDF and refined by
 * bisection when off; when ab/(a+b) > 5e4, where GSL 2.7's Pinv can loop
 * forever or its CDF returns NaN, a skewness-corrected normal
 * approximation instead (see beta.c). */
double ps_beta_quantile(double p, double a, double b);

/*
 * Empirical-Bayes prior centred on a parent level's rate: mean
 * parent_mean, total pseudo-count `strength`:
 *   a0 = parent_mean * strength, b0 = (1 - parent_mean) * strength,
 * each at least 1e-3 so the prior stays proper.  parent_mean is clamped to
 * [1e-6, 1 - 1e-6]; strength <= 0 gives the flat Beta(1, 1).
 */
void ps_beta_prior_centered(double parent_mean, double strength, double *a0,
                            double *b0);

/* Multiplier for counts after dt_ms of event time with the given half-life
 * (ms): 2^(-dt / half_life).  1 when half_life_ms <= 0 (no forgetting) or
 * dt_ms <= 0. */
double ps_decay_factor(int64_t dt_ms, double half_life_ms);

/*
 * Bayes' rule as in the seed's ad-click example:
 *   P(C | B) = P(B | C) P(C) / (P(B | C) P(C) + P(B | not C) (1 - P(C)))
 * e.g. P(C) = 0.2, P(B|C) = 0.1, P(B|not C) = 0.02 gives 0.5556.
 * Returns 0 when the denominator is 0.
 */
double ps_bayes_rule(double p_c, double p_b_given_c, double p_b_given_not_c);

#endif
