/*
 * normal.h -- tail probabilities under a normal fit.
 *
 * The contract publishes P(amount >= T) for customers, segments and cohort
 * windows under a normal fit N(mean, sd) of their spend (the seed's
 * example: mean 50,193, sd 9,787, T = 70,000 gives z = 2.0238 and
 * P = 0.0215).  The tail comes from GSL (gsl_cdf_gaussian_Q), which keeps
 * full relative accuracy far into the tail, unlike 1 - cdf.
 *
 * Pure function, no allocation, thread-safe; gsl_cdf_gaussian_Q never calls
 * GSL's error handler.
 */
#ifndef PS_NORMAL_H
#define PS_NORMAL_H

/*
 * P(X >= threshold) for X ~ N(mean, sd^2).  (X is continuous, so >= and >
 * are the same.)
 *
 * Degenerate fits -- sd <= 0, sd NaN or infinite (a single purchase, or all
 * purchases equal, give sd = 0) -- are treated as all mass at `mean`: the
 * result is the step function 1 if mean >= threshold, else 0.
 * threshold = -inf gives 1, +inf gives 0.  A NaN mean or threshold gives 0
 * (nothing is known to exceed the threshold).  Always in [0, 1].
 */
double ps_normal_tail(double mean, double sd, double threshold);

#endif
