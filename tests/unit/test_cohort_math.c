/*
 * test_cohort_math.c -- unit tests for aggregates/cohort_math.c.
 *
 * References: timestamps written out by hand from the calendar (e.g.
 * 2024-01-01T00:00Z = 1,704,067,200,000 ms: 19,723 days after 1970-01-01),
 * and glibc's timegm / gmtime_r as an independent implementation of the
 * same proleptic Gregorian UTC calendar for the day-by-day sweeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "../../aggregates/cohort_math.h"
#include "../../common/error.h"

#define DAY INT64_C(86400000)

static int32_t month_of(int64_t ts)
{
    int32_t m = -12345;
    assert_int_equal(ps_month_of_ts(ts, &m), PS_OK);
    return m;
}

static const char *fmt(int64_t ts)
{
    static char buf[PS_MONTH_STR_SIZE];
    assert_int_equal(ps_month_format(month_of(ts), buf, sizeof(buf)), PS_OK);
    return buf;
}

static int64_t ts_of(int y, int mo, int d, int h, int mi, int s, int ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

static void test_hand_values(void **state)
{
    (void)state;
    /* Hand-computed: days since the epoch * 86,400,000. */
    assert_int_equal(ps_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(ps_days_from_civil(2024, 1, 1), 19723);
    assert_int_equal(ps_days_from_civil(2024, 2, 29), 19782);
    assert_int_equal(ps_days_from_civil(2024, 3, 1), 19783);
    assert_int_equal(ps_days_from_civil(2000, 2, 29), 11016);
    assert_int_equal(ps_days_from_civil(1969, 12, 31), -1);
    assert_int_equal(ps_days_from_civil(0, 3, 1), -719468);
    /* 1900 and 2100 are not leap years, 2000 is. */
    assert_int_equal(
        ps_days_from_civil(1900, 3, 1) - ps_days_from_civil(1900, 2, 28), 1);
    assert_int_equal(
        ps_days_from_civil(2100, 3, 1) - ps_days_from_civil(2100, 2, 28), 1);
    assert_int_equal(
        ps_days_from_civil(2000, 3, 1) - ps_days_from_civil(2000, 2, 28), 2);

    assert_string_equal(fmt(1), "1970-01");
    assert_string_equal(fmt(INT64_C(1704067200000) - 1), "2023-12");
    assert_string_equal(fmt(INT64_C(1704067200000)), "2024-01");
    assert_string_equal(fmt(19782 * DAY), "2024-02");     /* 02-29 */
    assert_string_equal(fmt(19783 * DAY - 1), "2024-02"); /* 23:59:59.999 */
    assert_string_equal(fmt(19783 * DAY), "2024-03");
    assert_string_equal(fmt(11016 * DAY + 12 * 3600000), "2000-02");
    assert_string_equal(fmt(PS_COHORT_MAX_TS), "9999-12");
    assert_int_equal(ps_month_start_ms(month_of(19782 * DAY)),
                     INT64_C(1706745600000)); /* 2024-02-01 */
    assert_int_equal(ps_month_start_ms(2024 * 12), INT64_C(1704067200000));
}

static void test_invalid_ts(void **state)
{
    (void)state;
    int32_t m = 777;
    const int64_t bad[] = {0,        -1, -DAY, INT64_MIN, PS_COHORT_MAX_TS + 1,
                           INT64_MAX};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ps_month_of_ts(bad[i], &m), PS_ERR);
        assert_int_equal(m, 777);
        assert_int_equal(ps_month_offset_ts(bad[i], DAY, &m), PS_ERR);
        assert_int_equal(ps_month_offset_ts(DAY, bad[i], &m), PS_ERR);
        assert_int_equal(m, 777);
    }
}

static void test_offsets(void **state)
{
    (void)state;
    int32_t m = -1;
    int64_t dec31 = INT64_C(1704067200000) - 1; /* 2023-12-31T23:59:59.999 */
    int64_t jan1 = INT64_C(1704067200000);
    assert_int_equal(ps_month_offset_ts(dec31, jan1, &m), PS_OFFSET_OK);
    assert_int_equal(m, 1); /* one millisecond, one month */
    assert_int_equal(ps_month_offset_ts(jan1, dec31 + 31 * DAY, &m),
                     PS_OFFSET_OK);
    assert_int_equal(m, 0); /* 2024-01-31T23:59:59.999 */
    assert_int_equal(ps_month_offset_ts(jan1, jan1 + 31 * DAY, &m),
                     PS_OFFSET_OK);
    assert_int_equal(m, 1);
    /* 2024-01-31 -> 2024-02-29 -> 2024-03-01 */
    int64_t jan31 = ts_of(2024, 1, 31, 12, 0, 0, 0);
    assert_int_equal(ps_month_offset_ts(jan31, 19782 * DAY, &m), 0);
    assert_int_equal(m, 1);
    assert_int_equal(ps_month_offset_ts(jan31, 19783 * DAY, &m), 0);
    assert_int_equal(m, 2);
    assert_int_equal(
        ps_month_offset_ts(jan31, ts_of(2025, 1, 1, 0, 0, 0, 0), &m), 0);
    assert_int_equal(m, 12);
    assert_int_equal(ps_month_offset_ts(1, PS_COHORT_MAX_TS, &m), 0);
    assert_int_equal(m, (9999 - 1970) * 12 + 11);
    /* Same instant, same month. */
    assert_int_equal(ps_month_offset_ts(jan1, jan1, &m), 0);
    assert_int_equal(m, 0);
    /* Event before the cohort month: flagged, offset 0. */
    m = 99;
    assert_int_equal(ps_month_offset_ts(jan1, dec31, &m), PS_OFFSET_BEFORE);
    assert_int_equal(m, 0);
    /* Earlier in the same month is not "before". */
    assert_int_equal(ps_month_offset_ts(jan1 + 10 * DAY, jan1, &m),
                     PS_OFFSET_OK);
    assert_int_equal(m, 0);
}

static void test_format_parse(void **state)
{
    (void)state;
    char buf[PS_MONTH_STR_SIZE];
    int32_t m;

    assert_int_equal(ps_month_parse("2024-02", &m), PS_OK);
    assert_int_equal(m, 2024 * 12 + 1);
    assert_int_equal(ps_month_format(m, buf, sizeof(buf)), PS_OK);
    assert_string_equal(buf, "2024-02");
    assert_int_equal(ps_month_parse("0000-01", &m), PS_OK);
    assert_int_equal(m, 0);
    assert_int_equal(ps_month_parse("9999-12", &m), PS_OK);
    assert_int_equal(m, 9999 * 12 + 11);

    const char *bad[] = {"",         "2024",     "2024-1",  "2024-13",
                         "2024-00",  "2024-011", "2024/01", "20a4-01",
                         " 2024-01", "2024-01 ", "-024-01", "2024--1"};
    m = 5;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ps_month_parse(bad[i], &m), PS_ERR);
    assert_int_equal(m, 5);

    assert_int_equal(ps_month_format(10000 * 12, buf, sizeof(buf)), PS_ERR);
    assert_string_equal(buf, "");
    assert_int_equal(ps_month_format(-1, buf, sizeof(buf)), PS_ERR);
    assert_int_equal(ps_month_format(2024 * 12, buf, 7), PS_ERR);
    assert_int_equal(ps_month_format(2024 * 12, NULL, 0), PS_ERR);

    /* Every month number of 0000..9999 round-trips. */
    for (int32_t k = 0; k < 10000 * 12; k++) {
        int32_t back;
        assert_int_equal(ps_month_format(k, buf, sizeof(buf)), PS_OK);
        assert_int_equal(strlen(buf), 7);
        assert_int_equal(ps_month_parse(buf, &back), PS_OK);
        assert_int_equal(back, k);
    }
}

/* Every day 1970 .. 2200 against glibc, and day/civil round trips over
 * +-800 years around the epoch and near the ends of the valid range. */
static void test_sweep_vs_libc(void **state)
{
    (void)state;
    int64_t end = ps_days_from_civil(2200, 1, 1);
    for (int64_t day = 0; day < end; day++) {
        time_t t = (time_t)(day * 86400);
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        int64_t y;
        unsigned mo, d;
        ps_civil_from_days(day, &y, &mo, &d);
        assert_int_equal(y, tm.tm_year + 1900);
        assert_int_equal(mo, (unsigned)tm.tm_mon + 1);
        assert_int_equal(d, (unsigned)tm.tm_mday);
        assert_int_equal(ps_days_from_civil(y, mo, d), day);

        /* first and last ms of the day, and its month */
        int64_t ms = day * DAY;
        int32_t want = (int32_t)((tm.tm_year + 1900) * 12 + tm.tm_mon);
        if (ms > 0)
            assert_int_equal(month_of(ms), want);
        assert_int_equal(month_of(ms + DAY - 1), want);
        assert_true(ps_month_start_ms(want) <= ms + DAY - 1);
        assert_true(ps_month_start_ms(want + 1) > ms + DAY - 1);
        if (d == 1)
            assert_int_equal(ps_month_start_ms(want), ms);
    }
    int64_t lo = ps_days_from_civil(-800, 1, 1);
    int64_t hi = ps_days_from_civil(2800, 1, 1);
    int64_t prev_y = -801;
    unsigned prev_m = 12, prev_d = 31;
    for (int64_t day = lo; day < hi; day++) {
        int64_t y;
        unsigned mo, d;
        ps_civil_from_days(day, &y, &mo, &d);
        assert_int_equal(ps_days_from_civil(y, mo, d), day);
        /* consecutive: next day of the previous date */
        if (d == 1) {
            assert_true(
                (mo == 1 && y == prev_y + 1 && prev_m == 12 && prev_d == 31) ||
                (mo == prev_m + 1 && y == prev_y && prev_d >= 28));
        } else {
            assert_true(y == prev_y && mo == prev_m && d == prev_d + 1);
        }
        prev_y = y;
        prev_m = mo;
        prev_d = d;
    }
    /* the last valid days */
    int64_t last = PS_COHORT_MAX_TS / DAY;
    for (int64_t day = last - 400; day <= last; day++) {
        int64_t y;
        unsigned mo, d;
        ps_civil_from_days(day, &y, &mo, &d);
        assert_int_equal(ps_days_from_civil(y, mo, d), day);
        assert_int_equal(month_of(day * DAY), (int32_t)(y * 12 + mo - 1));
    }
}

static void test_retention(void **state)
{
    (void)state;
    assert_true(ps_retention(0, 0) == 0);
    assert_true(ps_retention(5, 0) == 0);
    assert_true(ps_retention(0, 7) == 0);
    assert_true(ps_retention(7, 7) == 1);
    assert_true(ps_retention(1, 4) == 0.25);
    assert_true(ps_retention(1, 3) == 1.0 / 3.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_values),
        cmocka_unit_test(test_invalid_ts),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_format_parse),
        cmocka_unit_test(test_sweep_vs_libc),
        cmocka_unit_test(test_retention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
