/*
 * numfmt.c -- numbers as text, fast and exact (numfmt.h).
 *
 * Method.  A finite double is a = M 2^E with M < 2^53.  For the ranges
 * flushes meet (1e-4 <= |v| < 1e15 for the %g forms, |v| < 2^63 for %f)
 * the decimal printf would print, m / 10^k rounded to nearest with ties
 * to even, is computed exactly as round(M 10^k 2^E) in unsigned 128-bit
 * integers (M 10^k < 2^53 2^64 = 2^117), then written digit by digit.
 * Whether a decimal reads back as a is decided exactly too: it must lie
 * between the half-way points to a's neighbours (see reads_back).  Values
 * outside those ranges go to snprintf, which is always right and here
 * rare.
 */
#include "numfmt.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__extension__ typedef unsigned __int128 u128;

static const uint64_t pow10_u64[] = {1ull,
                                     10ull,
                                     100ull,
                                     1000ull,
                                     10000ull,
                                     100000ull,
                                     1000000ull,
                                     10000000ull,
                                     100000000ull,
                                     1000000000ull,
                                     10000000000ull,
                                     100000000000ull,
                                     1000000000000ull,
                                     10000000000000ull,
                                     100000000000000ull,
                                     1000000000000000ull,
                                     10000000000000000ull,
                                     100000000000000000ull,
                                     1000000000000000000ull,
                                     10000000000000000000ull};

/* ------------------------------------------------------------ pieces */

/* Unsigned decimal digits of u at out; returns the length. */
static size_t put_u64(char *out, uint64_t u)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t n = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(out, p, n);
    return n;
}

/* m / 10^k in fixed point: sign, integer part, and the fraction with k
 * digits, or without its trailing zeros when trim (as %g writes it). */
static size_t put_fixed(char *out, bool negative, uint64_t m, int k,
                        bool trim)
{
    assert(k >= 0 && k <= 19);
    char *p = out;
    if (negative)
        *p++ = '-';
    uint64_t unit = pow10_u64[k];
    p += put_u64(p, m / unit);
    uint64_t fp = m % unit;
    int len = k;
    if (trim) {
        while (len > 0 && fp % 10 == 0) {
            fp /= 10;
            len--;
        }
    }
    if (len > 0) {
        *p++ = '.';
        for (int i = len - 1; i >= 0; i--) {
            p[i] = (char)('0' + fp % 10);
            fp /= 10;
        }
        p += len;
    }
    *p = '\0';
    return (size_t)(p - out);
}

/* a = M 2^E, M < 2^53 (a finite, positive). */
static void decompose(double a, uint64_t *M, int *E)
{
    int x;
    double f = frexp(a, &x); /* a = f 2^x, f in [.5, 1) */
    *M = (uint64_t)ldexp(f, 53);
    *E = x - 53;
}

/* round(M 10^k 2^E), ties to even, for E < 0 and k <= 19: exact. */
static u128 scaled_round(uint64_t M, int E, int k)
{
    u128 scaled = (u128)M * pow10_u64[k];
    int s = -E;
    if (s >= 118) /* scaled < 2^117 <= half: rounds to 0 */
        return 0;
    u128 m = scaled >> s, rem = scaled & (((u128)1 << s) - 1);
    u128 half = (u128)1 << (s - 1);
    if (rem > half || (rem == half && (m & 1) != 0))
        m++;
    return m;
}

/* a = M 2^E (E < 0) rounded to `digits` significant digits, as %g does:
 * k = digits - 1 - e decimals, e = floor(log10 a) corrected when the
 * estimate was one off (the result then has too few or too many digits;
 * a value that rounds up to 10^digits keeps the larger e, as printf's
 * exponent moves).  Returns false when k falls outside 0..19. */
static bool round_digits(uint64_t M, int E, int e, int digits, uint64_t *m,
                         int *k)
{
    for (int tries = 0; tries < 3; tries++) {
        *k = digits - 1 - e;
        if (*k < 0 || *k > 19)
            return false;
        u128 r = scaled_round(M, E, *k);
        if (r >= pow10_u64[digits]) { /* e was too low, or it rounded up */
            e++;
            continue;
        }
        if (r < pow10_u64[digits - 1] && tries == 0) { /* e too high? */
            e--;
            continue;
        }
        *m = (uint64_t)r;
        return true;
    }
    return false;
}

/* Does m / 10^k read back as a = M 2^E?  It must lie strictly between the
 * half-way points to a's neighbours, (2M -+ 1) 2^(E-1), or on one when M
 * is even (ties go to even); the lower neighbour is half as far when M is
 * a power of two.  Scaled by 10^k 2^(2-E); needs -67 <= E < 0, k <= 19,
 * m < 2^57: every product stays below 2^126. */
static bool reads_back(uint64_t m, int k, uint64_t M, int E)
{
    u128 p10 = pow10_u64[k];
    u128 L = (u128)m << (2 - E);
    u128 hi = ((u128)(2 * M + 1) << 1) * p10;
    u128 lo = M == (1ull << 52) ? (u128)(4 * M - 1) * p10
                                : ((u128)(2 * M - 1) << 1) * p10;
    bool even = (M & 1) == 0;
    return (L > lo && L < hi) || (even && (L == lo || L == hi));
}

/* floor(log10(a)) for 1e-4 <= a < 1e15, give or take one just at powers
 * of ten (that changes the digit count by one, and callers check). */
static int decimal_exponent(double a)
{
    static const double pow10[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,
                                   1e6, 1e7, 1e8,  1e9,  1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15};
    int e = 0;
    while (e < 14 && a >= pow10[e + 1])
        e++;
    while (e > -4 && a < (e >= 0 ? pow10[e] : 1.0 / pow10[-e]))
        e--;
    return e;
}

/* "nan", "inf", "-inf", "-0" and integers below 2^53; 0 if none. */
static size_t special(char *out, double v)
{
    if (isnan(v))
        return (size_t)snprintf(out, PS_FMT_NUM_MAX, "nan");
    if (isinf(v))
        return (size_t)snprintf(out, PS_FMT_NUM_MAX, v > 0 ? "inf" : "-inf");
    if (v == 0.0 && signbit(v))
        return (size_t)snprintf(out, PS_FMT_NUM_MAX, "-0");
    if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v)
        return ps_fmt_i64(out, (int64_t)v);
    return 0;
}

/* ------------------------------------------------------------ public */

size_t ps_fmt_i64(char *out, int64_t v)
{
    /* the magnitude as unsigned, so INT64_MIN needs no special case */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0;
    if (v < 0)
        out[n++] = '-';
    n += put_u64(out + n, u);
    out[n] = '\0';
    return n;
}

size_t ps_fmt_dbl(char *out, double v)
{
    size_t n = special(out, v);
    if (n > 0)
        return n;
    double a = fabs(v);
    if (a >= 1e-4 && a < 1e15) {
        /* %.Ng is fixed-point here: N significant digits are k = N-1-e
         * decimals; take the first N in 15..17 that reads back */
        uint64_t M;
        int E;
        decompose(a, &M, &E);
        int e = decimal_exponent(a);
        if (E < 0 && E >= -67) {
            for (int digits = 15; digits <= 17; digits++) {
                uint64_t m;
                int k;
                if (round_digits(M, E, e, digits, &m, &k) && m != 0 &&
                    reads_back(m, k, M, E))
                    return put_fixed(out, v < 0, m, k, true);
            }
        }
        return (size_t)snprintf(out, PS_FMT_NUM_MAX, "%.17g", v);
    }
    int len = 0;
    for (int digits = 15; digits <= 17; digits++) {
        len = snprintf(out, PS_FMT_NUM_MAX, "%.*g", digits, v);
        if (digits == 17 || strtod(out, NULL) == v)
            break;
    }
    return (size_t)len;
}

size_t ps_fmt_real(char *out, double v)
{
    size_t n = special(out, v);
    if (n > 0)
        return n;
    double a = fabs(v);
    if (a < 1e-4 || a >= 1e9)
        return (size_t)snprintf(out, PS_FMT_NUM_MAX, "%.10g", v);
    uint64_t M, m;
    int E, k;
    decompose(a, &M, &E);
    if (E < 0 && round_digits(M, E, decimal_exponent(a), 10, &m, &k))
        return put_fixed(out, v < 0, m, k, true);
    return (size_t)snprintf(out, PS_FMT_NUM_MAX, "%.10g", v);
}

size_t ps_fmt_fixed(char *out, double v, int decimals)
{
    assert(decimals >= 0 && decimals <= 19);
    double a = fabs(v);
    if (isfinite(v) && a < 1e15 && decimals <= 19) {
        uint64_t M;
        int E;
        u128 m = 0;
        if (a != 0) {
            decompose(a, &M, &E);
            m = E >= 0 ? (u128)(M << E) * pow10_u64[decimals]
                       : scaled_round(M, E, decimals);
        }
        if (m <= UINT64_MAX)
            return put_fixed(out, signbit(v), (uint64_t)m, decimals, false);
    }
    return (size_t)snprintf(out, PS_FMT_NUM_MAX, "%.*f", decimals, v);
}
