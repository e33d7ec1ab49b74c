/*
 * welford.h -- running count, mean and variance in one pass (Welford 1962).
 *
 * A ps_welford is plain data (three doubles) that can be embedded, copied,
 * merged and saved.  It never allocates and never fails.
 *
 *   n     total weight: the number of values added (fractional once weighted
 *         values are added or ps_welford_decay() has been applied)
 *   mean  weighted mean of the values
 *   m2    sum of w_i (x_i - mean)^2
 *
 * Updating mean and m2 by the difference to the current mean (Welford
 * 1962; weighted form West 1979) stays accurate when the values sit on a
 * large offset (1e9 + noise), where sum(x^2) - sum(x)^2 / n cancels
 * catastrophically.  Two accumulators are merged with the parallel formula
 * of Chan, Golub and LeVeque (1979):
 *   n = na + nb, delta = mean_b - mean_a,
 *   mean = mean_a + delta nb / n, m2 = m2a + m2b + delta^2 na nb / n.
 *
 * Weights are frequency weights: the sample variance is m2 / (n - 1)
 * (ddof = 1, as the contract asks), and 0 when n < 2.
 */
#ifndef PS_WELFORD_H
#define PS_WELFORD_H

#include "../common/buf.h"

typedef struct ps_welford {
    double n;    /* total weight, >= 0 */
    double mean; /* 0 when n == 0 */
    double m2;   /* >= 0 */
} ps_welford;

/* Empty accumulator (all zero; a zeroed struct is also valid). */
void ps_welford_init(ps_welford *w);

/* Add one value (weight 1).  Non-finite x is ignored (bad data must not
 * poison the statistics). */
void ps_welford_add(ps_welford *w, double x);

/* Add one value with weight `weight` (> 0; other weights and non-finite x
 * are ignored). */
void ps_welford_add_weighted(ps_welford *w, double x, double weight);

/* dst <- dst combined with src (Chan et al.); src unchanged.  Merging with
 * an empty accumulator is a no-op; dst may equal src (doubles the weight). */
void ps_welford_merge(ps_welford *dst, const ps_welford *src);

/* Forgetting: multiply every past weight by `factor` in [0, 1] (e.g.
 * ps_decay_factor() of beta.h).  The mean is unchanged; n and m2 are scaled.
 * factor <= 0 (or NaN) empties the accumulator; factor >= 1 does nothing. */
void ps_welford_decay(ps_welford *w, double factor);

double ps_welford_count(const ps_welford *w); /* n */
double ps_welford_mean(const ps_welford *w);  /* 0 when empty */
/* Sample variance m2 / (n - 1); 0 when n < 2. */
double ps_welford_var(const ps_welford *w);
/* sqrt(ps_welford_var()). */
double ps_welford_std(const ps_welford *w);

/*
 * Saved form: u8 version (1), then n, mean, m2 as little-endian f64 (25
 * bytes).  ps_welford_load() returns PS_OK, or PS_ERR_STATE (and leaves *w
 * unchanged) on a short buffer, unknown version, non-finite field, n < 0,
 * m2 < 0, or an empty accumulator with a non-zero mean or m2.
 */
void ps_welford_save(const ps_welford *w, ps_wbuf *wb);
int ps_welford_load(ps_welford *w, ps_rbuf *rb);

#endif
