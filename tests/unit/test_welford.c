/*
 * test_welford.c -- unit tests for aggregates/welford.c.
 *
 * Expected values come from independent computations:
 *   - the textbook set {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, sum of squared
 *     deviations 32, sample variance 32 / 7;
 *   - 10^5 values 1e9 + noise (noise uniform in [-1, 1) from a fixed LCG):
 *     a two-pass computation (mean first, then sum of (x - mean)^2) is the
 *     reference; the naive sum(x^2) - sum(x)^2 / n is shown to fail there;
 *   - merging chunks (Chan et al.) equals the sequential accumulator;
 *   - weighted adds equal repeated adds; decay scales n and m2 only.
 * Save/load round trip, and every corruption of the saved bytes that must be
 * rejected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../aggregates/welford.h"
#include "../../common/error.h"

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

#define N_BIG 100000

static double big[N_BIG];

/* Deterministic noise in [-1, 1) (64-bit LCG, Knuth's MMIX constants). */
static void fill_big(void)
{
    uint64_t s = 42;
    for (int i = 0; i < N_BIG; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) * 0x1.0p-53;
        big[i] = 1e9 + (2 * u - 1);
    }
}

static void two_pass(const double *x, int n, double *mean, double *var)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += x[i] - 1e9; /* exact: the offset is representable */
    double m = 1e9 + s / n;
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *var = ss / (n - 1);
}

static void test_textbook(void **state)
{
    (void)state;
    const double x[] = {2, 4, 4, 4, 5, 5, 7, 9};
    ps_welford w;
    ps_welford_init(&w);
    assert_close(ps_welford_mean(&w), 0, 0);
    assert_close(ps_welford_var(&w), 0, 0);
    ps_welford_add(&w, x[0]);
    assert_close(ps_welford_var(&w), 0, 0); /* n = 1 < 2 */
    assert_close(ps_welford_std(&w), 0, 0);
    for (int i = 1; i < 8; i++)
        ps_welford_add(&w, x[i]);
    assert_close(ps_welford_count(&w), 8, 0);
    assert_close(ps_welford_mean(&w), 5, 1e-15);
    assert_close(ps_welford_var(&w), 32.0 / 7, 1e-14);
    assert_close(ps_welford_std(&w), sqrt(32.0 / 7), 1e-14);
    /* Non-finite values are ignored. */
    ps_welford_add(&w, NAN);
    ps_welford_add(&w, INFINITY);
    ps_welford_add_weighted(&w, 3, -1);
    ps_welford_add_weighted(&w, 3, NAN);
    assert_close(ps_welford_count(&w), 8, 0);
    assert_close(ps_welford_var(&w), 32.0 / 7, 1e-14);
}

static void test_large_offset(void **state)
{
    (void)state;
    double mean, var;
    two_pass(big, N_BIG, &mean, &var);
    /* Noise uniform on [-1, 1): variance near 1/3. */
    assert_close(var, 1.0 / 3, 0.01);

    ps_welford w;
    ps_welford_init(&w);
    for (int i = 0; i < N_BIG; i++)
        ps_welford_add(&w, big[i]);
    assert_close(ps_welford_count(&w), N_BIG, 0);
    /* 1e-14 relative on the mean (about 80 ulps of 1e9 after 10^5
     * updates); 1e-6 relative on the variance. */
    assert_close(ps_welford_mean(&w), mean, 1e-5);
    assert_close(ps_welford_var(&w), var, 1e-6 * var);

    /* The naive formula really fails here (what this test guards). */
    double s = 0, s2 = 0;
    for (int i = 0; i < N_BIG; i++) {
        s += big[i];
        s2 += big[i] * big[i];
    }
    double naive = (s2 - s * s / N_BIG) / (N_BIG - 1);
    assert_true(fabs(naive - var) > 0.1 * var);
}

static void test_merge(void **state)
{
    (void)state;
    ps_welford seq, a, b, c, e;
    ps_welford_init(&seq);
    ps_welford_init(&a);
    ps_welford_init(&b);
    ps_welford_init(&c);
    ps_welford_init(&e);
    for (int i = 0; i < N_BIG; i++) {
        ps_welford_add(&seq, big[i]);
        /* uneven chunks: 7, 60000 - 7, rest */
        ps_welford_add(i < 7 ? &a : i < 60000 ? &b : &c, big[i]);
    }
    ps_welford_merge(&a, &e); /* empty src: no-op */
    ps_welford_merge(&e, &a); /* empty dst: copy */
    assert_memory_equal(&e, &a, sizeof(a));
    ps_welford_merge(&a, &b);
    ps_welford_merge(&a, &c);
    assert_close(ps_welford_count(&a), N_BIG, 0);
    /* Merged and sequential agree with each other and with the two-pass
     * reference to the accuracy of the one-pass updates themselves. */
    double mean, var;
    two_pass(big, N_BIG, &mean, &var);
    assert_close(ps_welford_mean(&a), ps_welford_mean(&seq), 1e-5);
    assert_close(ps_welford_var(&a), ps_welford_var(&seq), 1e-6 * var);
    assert_close(ps_welford_mean(&a), mean, 1e-5);
    assert_close(ps_welford_var(&a), var, 1e-6 * var);

    /* Small hand example: {1, 2} merged with {3, 4, 5} = {1..5}: mean 3,
     * m2 = 10, var 2.5. */
    ps_welford x, y;
    ps_welford_init(&x);
    ps_welford_init(&y);
    ps_welford_add(&x, 1);
    ps_welford_add(&x, 2);
    ps_welford_add(&y, 3);
    ps_welford_add(&y, 4);
    ps_welford_add(&y, 5);
    ps_welford_merge(&x, &y);
    assert_close(x.mean, 3, 1e-15);
    assert_close(x.m2, 10, 1e-14);
    assert_close(ps_welford_var(&x), 2.5, 1e-15);
    /* Aliased merge doubles the weight, keeps the mean. */
    ps_welford_merge(&x, &x);
    assert_close(x.n, 10, 0);
    assert_close(x.mean, 3, 1e-15);
    assert_close(x.m2, 20, 1e-14);
}

static void test_weighted_and_decay(void **state)
{
    (void)state;
    ps_welford a, b;
    ps_welford_init(&a);
    ps_welford_init(&b);
    ps_welford_add_weighted(&a, 10, 3);
    ps_welford_add_weighted(&a, 20, 2);
    for (int i = 0; i < 3; i++)
        ps_welford_add(&b, 10);
    for (int i = 0; i < 2; i++)
        ps_welford_add(&b, 20);
    assert_close(a.n, 5, 0);
    assert_close(a.mean, b.mean, 1e-14);
    assert_close(a.m2, b.m2, 1e-12);
    /* mean 14, m2 = 3*16 + 2*36 = 120 */
    assert_close(a.mean, 14, 1e-14);
    assert_close(a.m2, 120, 1e-12);

    ps_welford_decay(&a, 0.5);
    assert_close(a.n, 2.5, 0);
    assert_close(a.mean, 14, 1e-14);
    assert_close(a.m2, 60, 1e-12);
    assert_close(ps_welford_var(&a), 60 / 1.5, 1e-12);
    ps_welford_decay(&a, 1.0); /* no-op */
    assert_close(a.n, 2.5, 0);
    ps_welford_decay(&a, 0.5); /* n = 1.25 < 2 */
    assert_close(ps_welford_var(&a), 0, 0);
    ps_welford_decay(&a, 0);
    assert_close(a.n, 0, 0);
    assert_close(a.mean, 0, 0);
    assert_close(a.m2, 0, 0);
    ps_welford_add(&b, 1);
    ps_welford_decay(&b, NAN);
    assert_close(b.n, 0, 0);
}

static void test_save_load(void **state)
{
    (void)state;
    ps_welford w, r;
    ps_welford_init(&w);
    for (int i = 0; i < 1000; i++)
        ps_welford_add(&w, big[i]);

    ps_wbuf wb;
    ps_wbuf_init(&wb);
    ps_welford_save(&w, &wb);
    assert_false(wb.oom);
    assert_int_equal(wb.len, 25);
    assert_int_equal(wb.data[0], 1);

    ps_rbuf rb;
    ps_rbuf_init(&rb, wb.data, wb.len);
    assert_int_equal(ps_welford_load(&r, &rb), PS_OK);
    assert_memory_equal(&r, &w, sizeof(w));
    assert_int_equal(ps_rbuf_left(&rb), 0);

    /* Every truncation is rejected and leaves the target untouched. */
    for (size_t len = 0; len < wb.len; len++) {
        ps_welford t = {7, 7, 7};
        ps_rbuf_init(&rb, wb.data, len);
        assert_int_equal(ps_welford_load(&t, &rb), PS_ERR_STATE);
        assert_close(t.n, 7, 0);
    }

    /* Bad version, NaN, negative n, negative m2, empty with a mean. */
    struct {
        double n, mean, m2;
        uint8_t version;
    } bad[] = {
        {1, 1, 0, 2},  {NAN, 1, 0, 1}, {1, INFINITY, 0, 1},
        {-1, 1, 0, 1}, {3, 1, -1, 1},  {0, 5, 0, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ps_wbuf_reset(&wb);
        ps_wbuf_u8(&wb, bad[i].version);
        ps_wbuf_f64(&wb, bad[i].n);
        ps_wbuf_f64(&wb, bad[i].mean);
        ps_wbuf_f64(&wb, bad[i].m2);
        ps_rbuf_init(&rb, wb.data, wb.len);
        ps_welford t;
        ps_welford_init(&t);
        assert_int_equal(ps_welford_load(&t, &rb), PS_ERR_STATE);
    }
    ps_wbuf_clear(&wb);
}

int main(void)
{
    fill_big();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_textbook),
        cmocka_unit_test(test_large_offset),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_weighted_and_decay),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
