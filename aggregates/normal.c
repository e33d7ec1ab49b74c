/*
 * normal.c -- P(X >= T) under N(mean, sd^2) with GSL (see normal.h).
 *
 * gsl_cdf_gaussian_Q(x, sigma) is the upper tail P(Y > x) of N(0, sigma^2),
 * so P(X >= T) = Q(T - mean, sd).  Special values are settled here before
 * GSL sees them, so the answer is always a number in [0, 1].
 */
#include "normal.h"

#include <math.h>

#include <gsl/gsl_cdf.h>

double ps_normal_tail(double mean, double sd, double threshold)
{
    if (isnan(mean) || isnan(threshold))
        return 0;
    if (threshold == -INFINITY)
        return 1;
    if (threshold == INFINITY)
        return 0;
    if (!(sd > 0) || !isfinite(sd) || !isfinite(mean))
        return mean >= threshold ? 1 : 0;

    double p = gsl_cdf_gaussian_Q(threshold - mean, sd);
    if (!(p >= 0)) /* NaN cannot happen with finite input; be safe */
        return mean >= threshold ? 1 : 0;
    return p > 1 ? 1 : p;
}
