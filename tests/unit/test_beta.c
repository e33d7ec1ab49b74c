/*
 * test_beta.c -- unit tests for aggregates/beta.c.
 *
 * Every expected value is computed independently of GSL:
 *   - Beta(2, 8) and Beta(4, 8) quantiles by bisection of their closed-form
 *     CDFs (integer parameters: I_x(a, b) = P(Binomial(a + b - 1, x) >= a)),
 *     also checked against the constants from the same computation done in
 *     Python (0.028144973477898, 0.482496514917337; R's qbeta agrees);
 *   - closed-form quantiles: Beta(1, 1) q = p, Beta(1/2, 1/2)
 *     q = sin^2(pi p / 2), Beta(1, b) q = 1 - (1 - p)^(1/b),
 *     Beta(a, 1) q = p^(1/a);
 *   - everything else through the test's own regularized incomplete beta:
 *     the continued fraction DLMF 8.17.22 evaluated with the modified Lentz
 *     method, no iteration cap worth mentioning, so it also works where GSL's
 *     (512 iterations) gives up.
 * Robustness: NaN, infinite and negative inputs, huge counts, and a sweep of
 * a, b over 1e-3 .. 1e7 (where GSL 2.7.1's gsl_cdf_beta_Pinv hangs or fails,
 * see beta.c) with lo <= mean <= hi.  The time per ps_beta_posterior call
 * is printed, not asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "../../aggregates/beta.h"

/* |got - want| <= tol, for doubles (cmocka's assert_float_equal is float). */
#define assert_close(got, want, tol)                                           \
    assert_close_at((got), (want), (tol), #got, __FILE__, __LINE__)

static void assert_close_at(double got, double want, double tol,
                            const char *expr, const char *file, int line)
{
    if (!(fabs(got - want) <= tol)) {
        print_error("%s = %.17g, want %.17g +- %g (off by %g)\n", expr, got,
                    want, tol, got - want);
        _fail(file, line);
    }
}

static void assert_unit(double x)
{
    assert_true(isfinite(x));
    assert_true(x >= 0 && x <= 1);
}

static void assert_post_sane(const ps_beta_post *post)
{
    assert_true(isfinite(post->alpha) && post->alpha > 0);
    assert_true(isfinite(post->beta) && post->beta > 0);
    assert_unit(post->lo);
    assert_unit(post->mean);
    assert_unit(post->hi);
    assert_true(post->lo <= post->mean);
    assert_true(post->mean <= post->hi);
}

/* ---------------------------------------------------------------------- */
/* Independent reference: regularized incomplete beta I_x(a, b).           */
/* ---------------------------------------------------------------------- */

/* Continued fraction of DLMF 8.17.22 (modified Lentz); NaN if it fails. */
static double ref_cf(double a, double b, double x)
{
    const double tiny = 1e-300;
    double c = 1, d = 1 - (a + b) * x / (a + 1), h;

    if (fabs(d) < tiny)
        d = tiny;
    d = 1 / d;
    h = d;
    for (int m = 1; m <= 10000000; m++) {
        double m2 = 2.0 * m, num, del;

        num = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
        d = 1 + num * d;
        d = fabs(d) < tiny ? tiny : d;
        c = 1 + num / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1 / d;
        h *= d * c;
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
        d = 1 + num * d;
        d = fabs(d) < tiny ? tiny : d;
        c = 1 + num / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1 / d;
        del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15)
            return h;
    }
    return NAN;
}

/* The front factor x^a (1 - x)^b / B(a, b), in logs. */
static double ref_front(double x, double a, double b)
{
    return exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) +
               b * log1p(-x));
}

/* I_x(a, b), with the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the
 * fraction converges slowly. */
static double ref_ibeta(double x, double a, double b)
{
    if (x <= 0)
        return 0;
    if (x >= 1)
        return 1;
    if (x < (a + 1) / (a + b + 2))
        return ref_front(x, a, b) * ref_cf(a, b, x) / a;
    return 1 - ref_front(x, a, b) * ref_cf(b, a, 1 - x) / b;
}

/* 1 - I_x(a, b) without cancellation in the upper tail. */
static double ref_ibetac(double x, double a, double b)
{
    return ref_ibeta(1 - x, b, a);
}

/* Quantile by bisection of a CDF on [0, 1] to adjacent doubles. */
static double bisect_cdf(double (*cdf)(double), double p)
{
    double lo = 0, hi = 1;

    for (;;) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi)
            return mid;
        if (cdf(mid) < p)
            lo = mid;
        else
            hi = mid;
    }
}

/* Closed-form CDFs: Beta(2, 8) = P(Bin(9, x) >= 2), Beta(4, 8) =
 * P(Bin(11, x) >= 4). */
static double cdf_2_8(double x)
{
    return 1 - pow(1 - x, 9) - 9 * x * pow(1 - x, 8);
}

static double cdf_4_8(double x)
{
    double y = 1 - x, below = 0, binom = 1; /* C(11, 0) */

    for (int j = 0; j < 4; j++) {
        below += binom * pow(x, j) * pow(y, 11 - j);
        binom = binom * (11 - j) / (j + 1);
    }
    return 1 - below;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int setup(void **state)
{
    (void)state;
    ps_beta_init();
    ps_beta_init(); /* idempotent */
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Quantiles                                                               */
/* ---------------------------------------------------------------------- */

/* The check: Beta(2, 8) 2.5 % and 97.5 % points to 1e-6. */
static void test_quantile_beta_2_8(void **state)
{
    double q_lo = ps_beta_quantile(0.025, 2, 8);
    double q_hi = ps_beta_quantile(0.975, 2, 8);
    (void)state;

    assert_close(q_lo, 0.028144973477898, 1e-6);
    assert_close(q_hi, 0.482496514917337, 1e-6);
    /* and against the closed form bisected here, much tighter */
    assert_close(q_lo, bisect_cdf(cdf_2_8, 0.025), 1e-10);
    assert_close(q_hi, bisect_cdf(cdf_2_8, 0.975), 1e-10);
    assert_close(ps_beta_quantile(0.5, 2, 8), bisect_cdf(cdf_2_8, 0.5), 1e-10);
}

static void test_quantile_closed_forms(void **state)
{
    const double ps[] = {1e-6, 0.001, 0.025, 0.1,   0.3,
                         0.5,  0.7,   0.9,   0.975, 0.999};
    const double bs[] = {0.5, 3, 50, 1000};
    (void)state;

    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
        double p = ps[i];

        assert_close(ps_beta_quantile(p, 1, 1), p, 1e-12);
        assert_close(ps_beta_quantile(p, 0.5, 0.5), pow(sin(M_PI * p / 2), 2),
                     1e-10);
        for (size_t j = 0; j < sizeof bs / sizeof *bs; j++) {
            double b = bs[j];
            double q_1b = -expm1(log1p(-p) / b); /* 1 - (1 - p)^(1/b) */
            double q_a1 = pow(p, 1 / b);         /* Beta(b, 1) */

            assert_close(ps_beta_quantile(p, 1, b), q_1b, 1e-9 * q_1b);
            assert_close(ps_beta_quantile(p, b, 1), q_a1, 1e-9 * q_a1);
        }
    }
    /* End points exactly. */
    assert_true(ps_beta_quantile(0, 2, 8) == 0);
    assert_true(ps_beta_quantile(1, 2, 8) == 1);
}

/* Where GSL 2.7.1's Pinv returns NaN: the fallback must be right. */
static void test_quantile_where_gsl_fails(void **state)
{
    (void)state;

    /* Beta(1, 0.001): 1 - 0.975^1000 = 1 - 1.0e-11 (representable). */
    assert_close(ps_beta_quantile(0.025, 1, 0.001),
                 -expm1(log1p(-0.025) / 0.001), 1e-15);
    /* Beta(0.001, 1): 0.025^1000 underflows to 0. */
    assert_true(ps_beta_quantile(0.025, 0.001, 1) < 1e-30);
    /* Beta(10, 1e5) and Beta(320, 0.1): checked through the CDF. */
    {
        double q = ps_beta_quantile(0.025, 10, 1e5);
        assert_close(ref_ibeta(q, 10, 1e5), 0.025, 1e-9);
        q = ps_beta_quantile(0.025, 316.2, 0.1);
        assert_close(ref_ibeta(q, 316.2, 0.1), 0.025, 1e-9);
    }
}

/* A grid of parameters and probabilities against the reference CDF. */
static void test_quantile_grid_vs_reference(void **state)
{
    const double as[] = {0.05, 0.3, 1, 2.5, 10, 100, 1e3, 1e4, 1e5};
    const double ps[] = {1e-4, 0.005, 0.025, 0.3,   0.5,
                         0.7,  0.975, 0.995, 0.9999};
    int checked = 0;
    (void)state;

    for (size_t i = 0; i < sizeof as / sizeof *as; i++) {
        for (size_t j = 0; j < sizeof as / sizeof *as; j++) {
            for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
                double a = as[i], b = as[j], p = ps[k];
                double q = ps_beta_quantile(p, a, b);

                assert_unit(q);
                /* Near 1 the doubles are 1.1e-16 apart, so the upper
                 * tail (1 - x)^b cannot be hit to 2e-7 when 1 - q is
                 * below ~1e-8: not checked there. */
                if (1 - q < 1e-8)
                    continue;
                if (p <= 0.5)
                    assert_close(ref_ibeta(q, a, b), p, 2e-7 * p);
                else
                    assert_close(ref_ibetac(q, a, b), 1 - p, 2e-7 * (1 - p));
                checked++;
            }
        }
    }
    assert_true(checked > 600);
}

/* Large parameters: GSL would hang here (e.g. Beta(1e6, 3e6)). */
static void test_quantile_large_parameters(void **state)
{
    const double big[][2] = {
        {1e6, 3e6}, {1e6, 1e6}, {3e6, 1e7}, {1e7, 1e7}, {2e5, 9e5}};
    const double ps[] = {0.005, 0.025, 0.5, 0.975, 0.995};
    (void)state;

    for (size_t i = 0; i < sizeof big / sizeof *big; i++) {
        for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
            double a = big[i][0], b = big[i][1], p = ps[k];
            double q = ps_beta_quantile(p, a, b);

            assert_unit(q);
            if (p <= 0.5)
                assert_close(ref_ibeta(q, a, b), p, 1e-5);
            else
                assert_close(ref_ibetac(q, a, b), 1 - p, 1e-5);
        }
    }
    /* Symmetric: the median is 1/2. */
    assert_close(ps_beta_quantile(0.5, 1e7, 1e7), 0.5, 1e-12);
}

static void test_quantile_bad_input(void **state)
{
    const double bad[] = {NAN, INFINITY, -INFINITY, -1, 0, 1e-300, 1e300};
    (void)state;

    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        for (size_t j = 0; j < sizeof bad / sizeof *bad; j++) {
            assert_unit(ps_beta_quantile(0.025, bad[i], bad[j]));
            assert_unit(ps_beta_quantile(bad[i], bad[j], 3));
            assert_unit(ps_beta_quantile(bad[i], 2, bad[j]));
        }
    }
    assert_true(ps_beta_quantile(-1, 2, 8) == 0);
    assert_true(ps_beta_quantile(2, 2, 8) == 1);
}

/* ---------------------------------------------------------------------- */
/* Posteriors and priors                                                   */
/* ---------------------------------------------------------------------- */

/* Flat prior, 3 successes of 10: Beta(4, 8), mean 1/3. */
static void test_posterior_flat(void **state)
{
    ps_beta_post post;
    (void)state;

    ps_beta_posterior(3, 10, 1, 1, 0.95, &post);
    assert_close(post.alpha, 4, 0);
    assert_close(post.beta, 8, 0);
    assert_close(post.mean, 1.0 / 3, 1e-15);
    /* Python, same closed form: 0.109263443819098, 0.609742559572421 */
    assert_close(post.lo, 0.109263443819098, 1e-9);
    assert_close(post.hi, 0.609742559572421, 1e-9);
    assert_close(post.lo, bisect_cdf(cdf_4_8, 0.025), 1e-10);
    assert_close(post.hi, bisect_cdf(cdf_4_8, 0.975), 1e-10);
    assert_post_sane(&post);

    /* No data: the flat prior itself, the central 95 % of U(0, 1). */
    ps_beta_posterior(0, 0, 1, 1, 0.95, &post);
    assert_close(post.mean, 0.5, 0);
    assert_close(post.lo, 0.025, 1e-12);
    assert_close(post.hi, 0.975, 1e-12);

    /* Fractional (decayed) counts are fine. */
    ps_beta_posterior(1.5, 4.25, 1, 1, 0.9, &post);
    assert_close(post.alpha, 2.5, 1e-15);
    assert_close(post.beta, 3.75, 1e-15);
    assert_close(ref_ibeta(post.lo, 2.5, 3.75), 0.05, 1e-9);
    assert_close(ref_ibetac(post.hi, 2.5, 3.75), 0.05, 1e-9);
}

/* Empirical Bayes: parent mean 0.2, strength 10 -> Beta(2, 8). */
static void test_prior_centered(void **state)
{
    double a0, b0;
    ps_beta_post post;
    (void)state;

    ps_beta_prior_centered(0.2, 10, &a0, &b0);
    assert_close(a0, 2, 1e-12);
    assert_close(b0, 8, 1e-12);
    /* A new customer (no trials) starts at the parent's rate. */
    ps_beta_posterior(0, 0, a0, b0, 0.95, &post);
    assert_close(post.mean, 0.2, 1e-12);
    assert_close(post.lo, 0.028144973477898, 1e-6);
    assert_close(post.hi, 0.482496514917337, 1e-6);
    /* 1 success in 2 trials moves it: (2 + 1) / (10 + 2). */
    ps_beta_posterior(1, 2, a0, b0, 0.95, &post);
    assert_close(post.mean, 0.25, 1e-12);

    /* strength <= 0 or NaN: flat. */
    ps_beta_prior_centered(0.2, 0, &a0, &b0);
    assert_true(a0 == 1 && b0 == 1);
    ps_beta_prior_centered(0.2, -5, &a0, &b0);
    assert_true(a0 == 1 && b0 == 1);
    ps_beta_prior_centered(0.2, NAN, &a0, &b0);
    assert_true(a0 == 1 && b0 == 1);
    /* Parent mean 0 or 1: clamped, each parameter at least 1e-3. */
    ps_beta_prior_centered(0, 10, &a0, &b0);
    assert_close(a0, 1e-3, 0);
    assert_close(b0, 10, 1e-4);
    ps_beta_prior_centered(1, 10, &a0, &b0);
    assert_close(a0, 10, 1e-4);
    assert_close(b0, 1e-3, 0);
    /* NaN parent mean: centred on 1/2; infinite strength: finite. */
    ps_beta_prior_centered(NAN, 10, &a0, &b0);
    assert_close(a0, 5, 0);
    assert_close(b0, 5, 0);
    ps_beta_prior_centered(0.3, INFINITY, &a0, &b0);
    assert_true(isfinite(a0) && isfinite(b0));
    assert_close(a0 / (a0 + b0), 0.3, 1e-12);
}

/* Huge counts: 1e7 successes of 4e7 trials. */
static void test_posterior_huge_counts(void **state)
{
    ps_beta_post post;
    double sd = sqrt(0.25 * 0.75 / 4e7);
    (void)state;

    ps_beta_posterior(1e7, 4e7, 1, 1, 0.95, &post);
    assert_post_sane(&post);
    assert_close(post.mean, 0.25, 1e-7);
    assert_true(post.lo < 0.25 && 0.25 < post.hi);
    /* width 2 * 1.959964 * sd, to 1 % */
    assert_close(post.hi - post.lo, 2 * 1.959964 * sd, 0.01 * 2 * 1.96 * sd);
    assert_close(ref_ibeta(post.lo, post.alpha, post.beta), 0.025, 1e-5);
    assert_close(ref_ibetac(post.hi, post.alpha, post.beta), 0.025, 1e-5);
}

static void test_posterior_bad_input(void **state)
{
    const double bad[] = {NAN, INFINITY, -INFINITY, -3, 0, 0.5, 7, 1e300};
    const size_t nbad = sizeof bad / sizeof *bad;
    ps_beta_post post;
    (void)state;

    for (size_t i = 0; i < nbad; i++) {
        for (size_t j = 0; j < nbad; j++) {
            ps_beta_posterior(bad[i], bad[j], 1, 1, 0.95, &post);
            assert_post_sane(&post);
            ps_beta_posterior(2, 5, bad[i], bad[j], 0.95, &post);
            assert_post_sane(&post);
            ps_beta_posterior(bad[i], 5, 1, bad[j], bad[i], &post);
            assert_post_sane(&post);
            ps_beta_posterior(3, 10, 1, 1, bad[j], &post);
            assert_post_sane(&post);
        }
    }
    /* s > n is clamped to s = n; negative s to 0. */
    ps_beta_posterior(12, 10, 1, 1, 0.95, &post);
    assert_close(post.alpha, 11, 0);
    assert_close(post.beta, 1, 0);
    ps_beta_posterior(-4, 10, 1, 1, 0.95, &post);
    assert_close(post.alpha, 1, 0);
    assert_close(post.beta, 11, 0);
    /* level 1: the whole of [0, 1]; NaN level: 0.95. */
    ps_beta_posterior(3, 10, 1, 1, 1, &post);
    assert_true(post.lo == 0 && post.hi == 1);
    ps_beta_posterior(3, 10, 1, 1, NAN, &post);
    assert_close(post.lo, bisect_cdf(cdf_4_8, 0.025), 1e-10);
    /* level 0: a point interval widened to reach the mean. */
    ps_beta_posterior(3, 10, 1, 1, 0, &post);
    assert_post_sane(&post);
    /* A tiny prior the mean falls outside the equal-tailed interval of. */
    ps_beta_posterior(0, 0, 1e-3, 1, 0.95, &post);
    assert_post_sane(&post);
    assert_close(post.hi, post.mean, 0);
}

/* lo <= mean <= hi over a, b from 1e-3 to 1e7 (three points a decade). */
static void test_posterior_sweep(void **state)
{
    const double levels[] = {0.5, 0.95, 0.99};
    ps_beta_post post;
    (void)state;

    for (int i = 0; i <= 30; i++) {
        for (int j = 0; j <= 30; j++) {
            double a = pow(10, -3 + i / 3.0), b = pow(10, -3 + j / 3.0);

            for (size_t k = 0; k < sizeof levels / sizeof *levels; k++) {
                ps_beta_posterior(0, 0, a, b, levels[k], &post);
                assert_post_sane(&post);
                /* and as counts on a flat prior */
                ps_beta_posterior(a, a + b, 1, 1, levels[k], &post);
                assert_post_sane(&post);
            }
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Forgetting and Bayes' rule                                              */
/* ---------------------------------------------------------------------- */

static void test_decay_factor(void **state)
{
    (void)state;

    assert_close(ps_decay_factor(1000, 1000), 0.5, 1e-15);
    assert_close(ps_decay_factor(3000, 1000), 0.125, 1e-15);
    assert_close(ps_decay_factor(500, 1000), M_SQRT1_2, 1e-15);
    /* No forgetting, or no time passed: 1. */
    assert_true(ps_decay_factor(1000, 0) == 1);
    assert_true(ps_decay_factor(1000, -5) == 1);
    assert_true(ps_decay_factor(1000, NAN) == 1);
    assert_true(ps_decay_factor(1000, INFINITY) == 1);
    assert_true(ps_decay_factor(0, 1000) == 1);
    assert_true(ps_decay_factor(-1000, 1000) == 1);
    /* Very long gaps underflow to 0, not to NaN. */
    assert_true(ps_decay_factor(INT64_MAX, 1) == 0);
}

static void test_bayes_rule(void **state)
{
    const double bad[] = {NAN, INFINITY, -INFINITY, -1, 0, 0.3, 1, 2};
    const size_t nbad = sizeof bad / sizeof *bad;
    (void)state;

    /* The seed's ad-click example: 0.02 / 0.036 = 0.5556. */
    assert_close(ps_bayes_rule(0.2, 0.1, 0.02), 0.5556, 1e-4);
    assert_close(ps_bayes_rule(0.2, 0.1, 0.02), 0.02 / 0.036, 1e-15);
    /* Denominator 0. */
    assert_true(ps_bayes_rule(0.2, 0, 0) == 0);
    assert_true(ps_bayes_rule(1, 0, 0.5) == 0);
    /* P(C) = 1 or 0. */
    assert_close(ps_bayes_rule(1, 0.3, 0.5), 1, 0);
    assert_close(ps_bayes_rule(0, 0.3, 0.5), 0, 0);
    for (size_t i = 0; i < nbad; i++)
        for (size_t j = 0; j < nbad; j++)
            for (size_t k = 0; k < nbad; k++)
                assert_unit(ps_bayes_rule(bad[i], bad[j], bad[k]));
}

/* ---------------------------------------------------------------------- */
/* Timing (printed, not asserted)                                          */
/* ---------------------------------------------------------------------- */

static double time_posterior(double s0, double n0, double a0, double b0,
                             int reps)
{
    ps_beta_post post;
    double sink = 0, t0 = now_s();

    for (int i = 0; i < reps; i++) {
        /* vary the counts so nothing is hoisted */
        ps_beta_posterior(s0 + i % 7, n0 + i % 13, a0, b0, 0.95, &post);
        sink += post.lo + post.hi;
    }
    assert_true(isfinite(sink));
    return (now_s() - t0) / reps * 1e6;
}

static void test_print_timing(void **state)
{
    (void)state;

    printf("# ps_beta_posterior, us per call:\n");
    printf("#   s ~ 60 of n ~ 300, flat prior:          %.2f\n",
           time_posterior(60, 300, 1, 1, 20000));
    printf("#   s ~ 3 of n ~ 10, prior Beta(2, 8):      %.2f\n",
           time_posterior(3, 10, 2, 8, 20000));
    printf("#   s ~ 10 of n ~ 1e5 (GSL fails, bisect):  %.2f\n",
           time_posterior(10, 1e5, 1, 1, 2000));
    printf("#   s ~ 1e6 of n ~ 4e6 (normal approx):     %.2f\n",
           time_posterior(1e6, 4e6, 1, 1, 20000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantile_beta_2_8),
        cmocka_unit_test(test_quantile_closed_forms),
        cmocka_unit_test(test_quantile_where_gsl_fails),
        cmocka_unit_test(test_quantile_grid_vs_reference),
        cmocka_unit_test(test_quantile_large_parameters),
        cmocka_unit_test(test_quantile_bad_input),
        cmocka_unit_test(test_posterior_flat),
        cmocka_unit_test(test_prior_centered),
        cmocka_unit_test(test_posterior_huge_counts),
        cmocka_unit_test(test_posterior_bad_input),
        cmocka_unit_test(test_posterior_sweep),
        cmocka_unit_test(test_decay_factor),
        cmocka_unit_test(test_bayes_rule),
        cmocka_unit_test(test_print_timing),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
