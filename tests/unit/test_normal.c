/*
 * test_normal.c -- unit tests for aggregates/normal.c.
 *
 * Expected tails are computed independently of GSL with the C library's
 * erfc: P(X >= T) = 0.5 erfc(z / sqrt(2)), z = (T - mean) / sd.
 *   - the seed's example: mean 50,193, sd 9,787, T = 70,000:
 *     z = 19,807 / 9,787 = 2.02380...,  P = 0.0215 (to 1e-4);
 *   - mean 50,000, sd 10,000, T = 70,000: z = 2, P = 0.0227501319...;
 *   - symmetry (T = mean gives 1/2) and far tails (relative accuracy);
 *   - degenerate fits: the documented step function.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>

#include "../../aggregates/normal.h"

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

static double ref_tail(double mean, double sd, double t)
{
    return 0.5 * erfc((t - mean) / sd / sqrt(2.0));
}

static void test_seed_example(void **state)
{
    (void)state;
    double z = (70000.0 - 50193.0) / 9787.0;
    assert_close(z, 2.0238, 1e-4);
    double p = ps_normal_tail(50193, 9787, 70000);
    assert_close(p, 0.0215, 1e-4);
    assert_close(p, ref_tail(50193, 9787, 70000), 1e-12);
}

static void test_z2(void **state)
{
    (void)state;
    double p = ps_normal_tail(50000, 10000, 70000);
    assert_close(p, 0.02275, 1e-5);
    assert_close(p, 0.5 * erfc(2 / sqrt(2.0)), 1e-13);
    assert_close(p, 0.022750131948179, 1e-13);
    /* the lower side: P(X >= 30,000) = 1 - 0.02275 */
    assert_close(ps_normal_tail(50000, 10000, 30000), 1 - p, 1e-13);
}

static void test_symmetry_and_tails(void **state)
{
    (void)state;
    assert_close(ps_normal_tail(123.5, 7, 123.5), 0.5, 1e-15);
    /* far tail: relative accuracy, not 1 - cdf = 0 */
    double p = ps_normal_tail(0, 1, 30);
    double r = ref_tail(0, 1, 30);
    assert_true(p > 0);
    assert_close(p / r, 1, 1e-9);
    assert_close(ps_normal_tail(0, 1, -40), 1, 0);
    for (double t = -5; t <= 5; t += 0.25)
        assert_close(ps_normal_tail(3, 2, 3 + 2 * t), ref_tail(0, 1, t), 1e-14);
}

static void test_degenerate(void **state)
{
    (void)state;
    /* sd <= 0 or non-finite: all mass at the mean */
    assert_close(ps_normal_tail(70000, 0, 70000), 1, 0);
    assert_close(ps_normal_tail(69999, 0, 70000), 0, 0);
    assert_close(ps_normal_tail(80000, -5, 70000), 1, 0);
    assert_close(ps_normal_tail(60000, NAN, 70000), 0, 0);
    assert_close(ps_normal_tail(80000, INFINITY, 70000), 1, 0);
    /* infinite thresholds and means */
    assert_close(ps_normal_tail(5, 1, -INFINITY), 1, 0);
    assert_close(ps_normal_tail(5, 1, INFINITY), 0, 0);
    assert_close(ps_normal_tail(INFINITY, 1, 1e300), 1, 0);
    assert_close(ps_normal_tail(-INFINITY, 1, -1e300), 0, 0);
    /* NaN mean or threshold: 0 */
    assert_close(ps_normal_tail(NAN, 1, 0), 0, 0);
    assert_close(ps_normal_tail(0, 1, NAN), 0, 0);
    /* huge but finite: stays in [0, 1] */
    double p = ps_normal_tail(1e308, 1e-308, -1e308);
    assert_true(p >= 0 && p <= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_example),
        cmocka_unit_test(test_z2),
        cmocka_unit_test(test_symmetry_and_tails),
        cmocka_unit_test(test_degenerate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
