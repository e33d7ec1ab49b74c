/*
 * test_numfmt.c -- common/numfmt.c against snprintf, the reference it
 * promises to equal, over values of the kinds flushes write (ratios of
 * counts, Beta means, money, probabilities) and over random bit patterns;
 * every ps_fmt_dbl text must also read back as the same double.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/numfmt.h"

static int rounds(void)
{
    /* PS_TEST_QUICK (set for the valgrind run) shrinks the loops */
    return getenv("PS_TEST_QUICK") ? 20000 : 400000;
}

static uint64_t rng = 0x243F6A8885A308D3ull;

static uint64_t next_u64(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64 */
    return rng;
}

/* A value of kind i % 6. */
static double sample(int i)
{
    uint64_t x = next_u64();
    double v;
    switch (i % 6) {
    case 0: /* uniform mantissa, exponents 2^-20 .. 2^55 */
        v = ldexp((double)(x >> 11) / 9007199254740992.0, (int)(x % 76) - 20);
        break;
    case 1: /* ratios of small counts */
        v = (double)(x % 1000 + 1) / (double)((x >> 20) % 997 + 1);
        break;
    case 2: /* money with cents */
        v = (double)(x % 100000000) / 100.0;
        break;
    case 3: /* Beta means (a + k) / (a + b + n) */
        v = (1.0 + (double)(x % 50)) / (2.0 + (double)((x >> 8) % 400));
        break;
    case 4: /* halves and quarters: printf's ties */
        v = (double)(x % 100000) / 8.0;
        break;
    default: { /* any finite bit pattern */
        memcpy(&v, &x, sizeof(v));
        if (!isfinite(v))
            v = 0.5;
        break;
    }
    }
    return i % 7 == 0 ? -v : v;
}

static void reference_dbl(double v, char *out, size_t cap)
{
    if (v == 0.0 || (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v)) {
        if (v == 0.0 && signbit(v))
            snprintf(out, cap, "-0");
        else
            snprintf(out, cap, "%lld", (long long)v);
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(out, cap, "%.*g", digits, v);
        if (digits == 17 || strtod(out, NULL) == v)
            return;
    }
}

static void test_dbl_equals_printf_and_reads_back(void **state)
{
    (void)state;
    char got[PS_FMT_NUM_MAX], want[PS_FMT_NUM_MAX];
    for (int i = 0; i < rounds(); i++) {
        double v = sample(i);
        size_t n = ps_fmt_dbl(got, v);
        assert_int_equal(n, strlen(got));
        double back = strtod(got, NULL);
        if (memcmp(&back, &v, sizeof(v)) != 0)
            fail_msg("%.17g written as %s, which reads back as %.17g", v, got,
                     back);
        reference_dbl(v, want, sizeof(want));
        if (strcmp(got, want) != 0)
            fail_msg("%.17g written as %s, printf says %s", v, got, want);
    }
}

static void test_real_equals_printf(void **state)
{
    (void)state;
    char got[PS_FMT_NUM_MAX], want[PS_FMT_NUM_MAX];
    for (int i = 0; i < rounds(); i++) {
        double v = sample(i);
        ps_fmt_real(got, v);
        if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v)
            continue; /* integers are written whole, unlike %g */
        snprintf(want, sizeof(want), "%.10g", v);
        if (strcmp(got, want) != 0)
            fail_msg("%.17g written as %s, printf says %s", v, got, want);
    }
}

static void test_fixed_equals_printf(void **state)
{
    (void)state;
    char got[PS_FMT_NUM_MAX], want[PS_FMT_NUM_MAX];
    for (int i = 0; i < rounds(); i++) {
        double v = sample(i);
        int decimals = (int)(next_u64() % 8);
        if (i % 5 == 0)
            decimals = 19;
        if (fabs(v) >= 1e20)
            continue; /* printf's text would not fit the buffer */
        ps_fmt_fixed(got, v, decimals);
        snprintf(want, sizeof(want), "%.*f", decimals, v);
        if (strcmp(got, want) != 0)
            fail_msg("%.17g with %d decimals written as %s, printf says %s",
                     v, decimals, got, want);
    }
}

static void test_cases(void **state)
{
    (void)state;
    char o[PS_FMT_NUM_MAX];
    struct {
        double v;
        const char *dbl, *real;
    } cases[] = {
        {0.1, "0.1", "0.1"},
        {0.1 + 0.2, "0.30000000000000004", "0.3"},
        {1.0 / 3.0, "0.3333333333333333", "0.3333333333"},
        {2.0 / 3.0, "0.6666666666666666", "0.6666666667"},
        {39940.21, "39940.21", "39940.21"},
        {0.99999999999, "0.99999999999", "1"},
        {1e-5, "1e-05", "1e-05"},
        {1e300, "1e+300", "1e+300"},
        {5e-324, "4.94065645841247e-324", "4.940656458e-324"},
        {-0.0, "-0", "-0"},
        {42.0, "42", "42"},
        {-2.5, "-2.5", "-2.5"},
        {NAN, "nan", "nan"},
        {-INFINITY, "-inf", "-inf"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ps_fmt_dbl(o, cases[i].v);
        assert_string_equal(o, cases[i].dbl);
        ps_fmt_real(o, cases[i].v);
        assert_string_equal(o, cases[i].real);
    }
    ps_fmt_fixed(o, 0.125, 2); /* a tie: to even, as printf */
    assert_string_equal(o, "0.12");
    ps_fmt_fixed(o, 0.375, 2);
    assert_string_equal(o, "0.38");
    ps_fmt_fixed(o, 2.5, 0);
    assert_string_equal(o, "2");
    ps_fmt_fixed(o, 52300.4, 0);
    assert_string_equal(o, "52300");
    ps_fmt_fixed(o, -0.001, 2);
    assert_string_equal(o, "-0.00");
    ps_fmt_i64(o, INT64_MIN);
    assert_string_equal(o, "-9223372036854775808");
    ps_fmt_i64(o, 0);
    assert_string_equal(o, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_dbl_equals_printf_and_reads_back),
        cmocka_unit_test(test_real_equals_printf),
        cmocka_unit_test(test_fixed_equals_printf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
