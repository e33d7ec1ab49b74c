/*
 * cohort_math.h -- UTC calendar arithmetic for cohorts.
 *
 * A customer's cohort is the UTC month of its signup (else first event);
 * the month offset of an event is the number of calendar months from the
 * cohort month to the event's month (2023-12 -> 2024-01 is 1, whatever the
 * days).  Months are handled as one integer, the "month number"
 * year * 12 + (month - 1), so offsets are differences.
 *
 * The civil calendar conversions are Howard Hinnant's days_from_civil /
 * civil_from_days ("chrono-Compatible Low-Level Date Algorithms",
 * proleptic Gregorian, exact for every int32 year): no timegm, no TZ, no
 * locale, no global state.
 *
 * Timestamps are Unix milliseconds, UTC.  Valid event times are
 * 1 .. PS_COHORT_MAX_TS (9999-12-31T23:59:59.999Z), so every month
 * formats as exactly "YYYY-MM"; ts <= 0 is rejected as the contract rejects
 * it at input.  Pure functions, thread-safe.
 */
#ifndef PS_COHORT_MATH_H
#define PS_COHORT_MATH_H

#include <stddef.h>
#include <stdint.h>

/* 9999-12-31T23:59:59.999Z in Unix ms. */
#define PS_COHORT_MAX_TS INT64_C(253402300799999)
/* "YYYY-MM" plus the terminating NUL. */
#define PS_MONTH_STR_SIZE 8

/* Days since 1970-01-01 of y-m-d (m 1..12, d 1..31, not checked). */
int64_t ps_days_from_civil(int64_t y, unsigned m, unsigned d);
/* Inverse of ps_days_from_civil. */
void ps_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* Month number (year * 12 + month - 1) of ts_ms: 0, or PS_ERR when ts_ms
 * is <= 0 or after PS_COHORT_MAX_TS (*month untouched). */
int ps_month_of_ts(int64_t ts_ms, int32_t *month);

/* First millisecond of a month number (UTC). */
int64_t ps_month_start_ms(int32_t month);

/* "YYYY-MM" into out (>= PS_MONTH_STR_SIZE bytes): 0, or PS_ERR when the
 * year is outside 0000..9999 or out is too small (out gets "" if it can). */
int ps_month_format(int32_t month, char *out, size_t out_size);

/* Strict parse of exactly "YYYY-MM" (month 01..12): 0 or PS_ERR. */
int ps_month_parse(const char *s, int32_t *month);

/* Outcome of ps_month_offset_ts. */
#define PS_OFFSET_OK 0
#define PS_OFFSET_BEFORE 1 /* event month before the cohort month: *m = 0 */

/*
 * Month offset from the cohort month of cohort_ts to the month of event_ts
 * into *m: PS_OFFSET_OK; PS_OFFSET_BEFORE (flagged, *m = 0) when the event
 * is in an earlier month (e.g. an event before a later-reported signup);
 * PS_ERR when either ts is invalid (see ps_month_of_ts; *m untouched).
 */
int ps_month_offset_ts(int64_t cohort_ts, int64_t event_ts, int32_t *m);

/* Retention active / size; 0 when size is 0.  (active > size, which exact
 * counts never give, is returned as computed.) */
double ps_retention(uint64_t active, uint64_t size);

#endif
