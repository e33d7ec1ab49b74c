/* TEMPORARY stand-in so the tree builds; the real aggregates/beta.c is
 * being written (overwrite this file entirely). */
#include "beta.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <math.h>

void ps_beta_init(void) { gsl_set_error_handler_off(); }

double ps_beta_quantile(double p, double a, double b)
{
    return gsl_cdf_beta_Pinv(p, a, b);
}

void ps_beta_posterior(double s, double n, double a0, double b0, double level,
                       ps_beta_post *out)
{
    out->alpha = a0 + s;
    out->beta = b0 + n - s;
    out->mean = out->alpha / (out->alpha + out->beta);
    out->lo = ps_beta_quantile((1 - level) / 2, out->alpha, out->beta);
    out->hi = ps_beta_quantile(1 - (1 - level) / 2, out->alpha, out->beta);
}

void ps_beta_prior_centered(double m, double strength, double *a0, double *b0)
{
    *a0 = m * strength;
    *b0 = (1 - m) * strength;
}

double ps_decay_factor(int64_t dt_ms, double half_life_ms)
{
    return half_life_ms > 0 && dt_ms > 0 ? exp2(-(double)dt_ms / half_life_ms)
                                         : 1.0;
}

double ps_bayes_rule(double pc, double pbc, double pbn)
{
    double d = pbc * pc + pbn * (1 - pc);
    return d > 0 ? pbc * pc / d : 0;
}
