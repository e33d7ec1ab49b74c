/*
 * cohort_math.c -- UTC month arithmetic (see cohort_math.h).
 *
 * days_from_civil / civil_from_days are Howard Hinnant's algorithms
 * (https://howardhinnant.github.io/date_algorithms.html): the year is
 * shifted to start in March so the leap day is the last day of the
 * "year", then split into 400-year eras of 146,097 days; every division is
 * of a non-negative number except the era, which is floored explicitly.
 * Milliseconds to days is a floored division too (ts > 0 here, but the
 * helpers stay correct for negative days).
 */
#include "cohort_math.h"

#include <stdio.h>

#include "../common/error.h"

#define MS_PER_DAY INT64_C(86400000)

int64_t ps_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);                       /* 0..399 */
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* 0..365 */
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; /* 0..146096 */
    return era * 146097 + (int64_t)doe - 719468;
}

void ps_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097); /* 0..146096 */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100); /* 0..365 */
    unsigned mp = (5 * doy + 2) / 153;                      /* 0..11 */
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int ps_month_of_ts(int64_t ts_ms, int32_t *month)
{
    if (ts_ms <= 0 || ts_ms > PS_COHORT_MAX_TS)
        return PS_ERR;
    int64_t y;
    unsigned m, d;
    ps_civil_from_days(ts_ms / MS_PER_DAY, &y, &m, &d);
    *month = (int32_t)(y * 12 + (int64_t)m - 1);
    return PS_OK;
}

/* Floored division of a month number into year and month 1..12. */
static void split_month(int32_t month, int64_t *y, unsigned *m)
{
    int64_t q = month / 12, r = month % 12;
    if (r < 0) {
        r += 12;
        q--;
    }
    *y = q;
    *m = (unsigned)r + 1;
}

int64_t ps_month_start_ms(int32_t month)
{
    int64_t y;
    unsigned m;
    split_month(month, &y, &m);
    return ps_days_from_civil(y, m, 1) * MS_PER_DAY;
}

int ps_month_format(int32_t month, char *out, size_t out_size)
{
    int64_t y;
    unsigned m;
    split_month(month, &y, &m);
    if (out_size < PS_MONTH_STR_SIZE || y < 0 || y > 9999) {
        if (out != NULL && out_size > 0)
            out[0] = '\0';
        return PS_ERR;
    }
    snprintf(out, out_size, "%04d-%02u", (int)y, m);
    return PS_OK;
}

int ps_month_parse(const char *s, int32_t *month)
{
    int v[6];
    for (int i = 0; i < 7; i++) {
        if (i == 4) {
            if (s[i] != '-')
                return PS_ERR;
            continue;
        }
        if (s[i] < '0' || s[i] > '9')
            return PS_ERR;
        v[i < 4 ? i : i - 1] = s[i] - '0';
    }
    if (s[7] != '\0')
        return PS_ERR;
    int y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
    int m = v[4] * 10 + v[5];
    if (m < 1 || m > 12)
        return PS_ERR;
    *month = y * 12 + m - 1;
    return PS_OK;
}

int ps_month_offset_ts(int64_t cohort_ts, int64_t event_ts, int32_t *m)
{
    int32_t a, b;
    if (ps_month_of_ts(cohort_ts, &a) != PS_OK ||
        ps_month_of_ts(event_ts, &b) != PS_OK)
        return PS_ERR;
    if (b < a) {
        *m = 0;
        return PS_OFFSET_BEFORE;
    }
    *m = b - a;
    return PS_OFFSET_OK;
}

double ps_retention(uint64_t active, uint64_t size)
{
    return size ? (double)active / (double)size : 0;
}
