/*
 * numfmt.h -- numbers as text, fast and exact, for flushes.
 *
 * A flush writes numbers by the hundred thousand, and printf's general
 * machinery (locale, format parsing, multi-precision digit generation)
 * dominated its profile.  These functions write the common cases with
 * integer arithmetic, exactly (128-bit checks, never a guess), and fall
 * back to snprintf for the rest, so the text is always what the stated
 * printf format would give (see each function) -- tests compare them with
 * snprintf over hundreds of thousands of values.
 *
 * Every function writes into out, which must hold PS_FMT_NUM_MAX bytes,
 * NUL-terminates it, and returns the length (without the NUL).
 */
#ifndef PS_NUMFMT_H
#define PS_NUMFMT_H

#include <stddef.h>
#include <stdint.h>

#define PS_FMT_NUM_MAX 64

/* Exact decimal: "-42". */
size_t ps_fmt_i64(char *out, int64_t v);

/* A double that reads back unchanged: the fewest of 15, 16, 17 significant
 * digits that strtod returns as v, as printf("%.*g") writes it ("0.1",
 * "0.30000000000000004", "1e+300"); integral values below 2^53 as integers
 * ("42", "-0"); "nan", "inf", "-inf". */
size_t ps_fmt_dbl(char *out, double v);

/* A derived real (probability, mean): printf("%.10g"), but integral
 * values below 2^53 as integers and non-finite as in ps_fmt_dbl. */
size_t ps_fmt_real(char *out, double v);

/* printf("%.*f", decimals, v) for 0 <= decimals <= 19 ("0.71", "52300"
 * with decimals 0, ties to even as printf rounds them). */
size_t ps_fmt_fixed(char *out, double v, int decimals);

#endif
