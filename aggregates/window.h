/*
 * window.h -- rolling event-time window of spend amounts with an exact
 * count of distinct active customers, in memory bounded by its buckets.
 *
 * Shape.  Event time is cut into buckets of bucket_ms; bucket k holds
 * ts in [k * bucket_ms, (k + 1) * bucket_ms).  A window of B buckets keeps
 * a ring of B + A buckets: the B complete buckets before the watermark's
 * bucket (the window) and A "ahead" buckets, from the watermark's own
 * bucket on, for events already seen whose time the watermark has not
 * passed yet (events up to the allowed lateness ahead of it).
 *
 * The window is ALIGNED to buckets.  With cur = floor(watermark /
 * bucket_ms), it covers exactly
 *
 *     [ (cur - B) * bucket_ms, cur * bucket_ms )
 *
 * i.e. it ends at the last bucket boundary at or before the watermark
 * (at most one bucket, one hour by default, behind it) and moves one
 * bucket at a time.  Every number it reports is exact for that interval
 * (floating-point rounding aside); ps_window_start_ms()/end_ms() say which.
 *
 * Defaults (ps_window_conf_7d/30d): one-hour buckets for both windows,
 * 168 for 7 days and 720 for 30 days, 2 ahead buckets (watermark's bucket
 * + 1 h of lateness).  Both windows end at the same boundary, so readers
 * comparing 7d and 30d compare the same instant.  Memory per window:
 * ps_window_bytes(): 32 bytes per ring bucket + 4 * A * B bytes of
 * scheduled moves (below) + 80 bytes: 7d 6,864 B, 30d 28,944 B; the
 * cohorts' 30-day ring with A = 50 (cohorts.c) 168,720 B.
 *
 * Spend per bucket: n, sum and M2 (sum of squared deviations from the
 * bucket mean, updated with Welford's recurrence, mean = sum / n); the
 * window merges its buckets with Chan et al.'s pairwise formula
 * (M2 = M2a + M2b + d^2 na nb / n), so the variance of a query is as
 * accurate as a two-pass computation, not sum-of-squares cancellation.
 * Each bucket also keeps the plain sum of squared amounts, the additive
 * moment a published hash is combined with (below); a query sums it
 * over the buckets in bucket order, so for amounts whose sums are exact
 * in binary (integers, cents times powers of two, ...) it does not
 * depend on the order the amounts arrived in.
 *
 * Distinct active customers, exactly.  Each customer is attributed to ONE
 * bucket: the latest bucket before `cur` in which it was active.  Then
 * "active at least once in the window" == "attributed to a bucket of the
 * window", and active = sum over the window's buckets of cnt[k].  When a
 * customer becomes active in a later bucket than its attribution, it moves
 * (cnt[old]--, cnt[new]++).  Activity in an ahead bucket u >= cur must not
 * move it yet (it is still in the window through its earlier activity), so
 * the move is scheduled: cnt[u] counts it on arrival (ahead buckets are not
 * summed), and leave[u][d] counts customers whose previous activity was
 * d = u - pred buckets before u; when the watermark passes u, cnt[u - d]
 * -= leave[u][d] for every d.  Only d <= B - 1 is stored: an older pred
 * has left the window by then.  Out-of-order activity re-links the chain
 * (the successor's scheduled move now leaves from the new bucket).
 *
 * To do that the window must know, per customer, its attributed bucket and
 * its activity in the ahead buckets: ps_window_member, 24 bytes kept by
 * the caller in the customer's state (one per customer per window it
 * counts towards; all-zero = never active; plain data).  It is brought up
 * to date lazily from the window's position.  A member must always be used
 * with the same window, and saved and restored together with it.
 *
 * Time only moves forward.  Events before the window start are ignored
 * (PS_WINDOW_LATE).  An event beyond the ahead buckets pushes the window
 * forward so that it fits (PS_WINDOW_PUSHED; the window then ends later
 * than the watermark says, counted in ps_window_counters.pushed) rather
 * than being lost: size A for the lateness plus the skew between the
 * partitions feeding the window.
 *
 * What the content is.  The position only moves forward, so an event
 * ignored as late lies before every later window start too, and an event
 * beyond the ahead buckets is applied (pushing).  Hence whatever order
 * the events came in and whenever ps_window_advance was called, the
 * window at position cur holds exactly the events with ts in
 * [(cur - B) * bucket_ms, cur * bucket_ms) applied so far: if the
 * caller's positions are a function of something order-independent (a
 * watermark restored across restarts), so is the content.  The only
 * order dependence is a push past where the caller would have moved the
 * window: the window then stays ahead until the caller's position
 * catches up (pushed counts those events).
 *
 * No allocation after ps_window_new(); add/touch are O(1) (bit operations
 * on the member), advance is O(B) per bucket passed (O(B + A) total when
 * everything expires), a query is O(B).  Not thread-safe per window.
 */
#ifndef PS_WINDOW_H
#define PS_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"

typedef struct ps_window_conf {
    int64_t bucket_ms; /* bucket width, >= 1 (3,600,000) */
    uint32_t buckets;  /* B: window = B * bucket_ms, 1 .. 1 << 20 */
    uint32_t ahead;    /* A: buckets held from the watermark's on, 1 .. 64.
                          Needs >= ceil(lateness / bucket_ms) + 1 (2) */
} ps_window_conf;

#define PS_WINDOW_MAX_BUCKETS (1u << 20)
#define PS_WINDOW_MAX_AHEAD 64u

/* 7 days of 1-hour buckets, 2 ahead. */
void ps_window_conf_7d(ps_window_conf *conf);
/* 30 days of 1-hour buckets, 2 ahead. */
void ps_window_conf_30d(ps_window_conf *conf);

/* 0, or PS_ERR_CONFIG with a line in errstr. */
int ps_window_conf_check(const ps_window_conf *conf, char *errstr,
                         size_t errstr_size);

/* Bytes one window of this configuration occupies (0 if invalid). */
size_t ps_window_bytes(const ps_window_conf *conf);

/* Per customer and window; zero-initialise (= never active).  The fields
 * are the window's: do not edit them. */
typedef struct ps_window_member {
    int64_t settled1; /* attributed bucket + 1, 0 = none */
    int64_t base;     /* window position `cur` when last brought up to date */
    uint64_t ahead;   /* bit i: active in bucket base + i (>= base) */
} ps_window_member;

typedef struct ps_window ps_window;

/* One allocation; NULL with errstr on a bad configuration or no memory.
 * The window starts empty at position 0 (call ps_window_advance first).
 * Whoever calls _new calls _destroy. */
ps_window *ps_window_new(const ps_window_conf *conf, char *errstr,
                         size_t errstr_size);
void ps_window_destroy(ps_window *w); /* NULL-safe */
const ps_window_conf *ps_window_get_conf(const ps_window *w);
/* Back to empty at position 0, counters too (members must be zeroed). */
void ps_window_reset(ps_window *w);

/* Outcome of ps_window_add / ps_window_touch (all >= 0: bad events are
 * data).  Each is also counted in the window (ps_window_counters). */
typedef enum ps_window_result {
    PS_WINDOW_ADDED = 0,  /* applied */
    PS_WINDOW_LATE = 1,   /* ts before the window start: ignored */
    PS_WINDOW_PUSHED = 2, /* applied, after pushing the window forward */
    PS_WINDOW_INVALID = 3 /* ts <= 0 or > INT64_MAX / 2, amount NaN,
                             infinite or < 0, touch without a member:
                             ignored */
} ps_window_result;

/* One spend `amount` (>= 0) at event time ts_ms (> 0) by the customer
 * whose member is m (NULL: counted in n/sum but not as a customer).
 * Out-of-order events land in their own bucket. */
ps_window_result ps_window_add(ps_window *w, int64_t ts_ms, double amount,
                               ps_window_member *m);
/* Activity without an amount (e.g. a click): counts towards `active`
 * only (m NULL: PS_WINDOW_INVALID). */
ps_window_result ps_window_touch(ps_window *w, int64_t ts_ms,
                                 ps_window_member *m);

/* Move the window to end at the bucket boundary at or before watermark_ms
 * (no-op if that is not later than now).  Expires buckets, applies the
 * scheduled moves.  No allocation. */
void ps_window_advance(ps_window *w, int64_t watermark_ms);

/* The interval the queries describe: [start, end).  end = position *
 * bucket_ms; start may be negative while the window is young. */
int64_t ps_window_start_ms(const ps_window *w);
int64_t ps_window_end_ms(const ps_window *w);

typedef struct ps_window_stats {
    uint64_t n;      /* spend events in [start, end) */
    double sum;      /* their total */
    double sumsq;    /* total of their squares (per-bucket sums added in
                        bucket order; the additive moment) */
    double mean;     /* 0 when n = 0 */
    double std;      /* sample std (ddof = 1); 0 when n < 2 */
    double p_ge;     /* P(amount >= threshold) under N(mean, std^2);
                        0 when n = 0 (see normal.h for std = 0) */
    uint64_t active; /* distinct customers active in [start, end) */
} ps_window_stats;

void ps_window_query(const ps_window *w, double threshold,
                     ps_window_stats *out);

/* The same over the last `span` buckets of the window only, i.e.
 * [end - span * bucket_ms, end); span is clamped to 1 .. B.  Exact too,
 * distinct customers included: a customer is attributed to its latest
 * bucket of activity before the end, so it is active in the last span
 * buckets iff it is attributed to one of them.  One ring of 30 days of
 * buckets thereby answers the 7-day window as well (cohorts.c). */
void ps_window_query_span(const ps_window *w, uint32_t span, double threshold,
                          ps_window_stats *out);
/* Start of that interval: end - span * bucket_ms (span clamped). */
int64_t ps_window_span_start_ms(const ps_window *w, uint32_t span);

/*
 * Moving a customer's contributions between two windows (cohorts.c moves
 * a customer to another cohort when its signup_ts arrives late).
 *
 * A customer's spend in one bucket, as a window keeps it: count, sum,
 * M2 about the mean (Welford) and the sum of squares.  Accumulate with ps_window_spend_add in the
 * order the amounts were given to ps_window_add.
 */
typedef struct ps_window_spend {
    uint32_t n;
    double sum;
    double m2;
    double sq; /* sum of squared amounts */
} ps_window_spend;

void ps_window_spend_add(ps_window_spend *s, double amount);

/* Take s, amounts earlier ps_window_add'ed at times in the bucket of ts_ms,
 * out of that bucket (Chan's merge run backwards; the remainder's M2 is
 * clamped at 0, exactly 0 when one amount remains, and an emptied bucket
 * is zeroed).  PS_WINDOW_LATE when the bucket has expired (nothing left to
 * take), PS_WINDOW_INVALID when it is beyond the ahead buckets or holds
 * fewer amounts than s (counted as broken).  Members are not touched. */
ps_window_result ps_window_unadd(ps_window *w, int64_t ts_ms,
                                 const ps_window_spend *s);
/* Merge s into the bucket of ts_ms: the same as adding its amounts, up to
 * rounding.  Never pushes: PS_WINDOW_LATE before the window start,
 * PS_WINDOW_INVALID beyond the ahead buckets. */
ps_window_result ps_window_merge(ps_window *w, int64_t ts_ms,
                                 const ps_window_spend *s);

/* 1 while member m still counts in w's `active` (its latest activity
 * before the position is inside the window, or it has activity in an
 * ahead bucket); 0 once it could be zeroed without changing anything.
 * m must belong to w. */
int ps_window_member_live(const ps_window *w, const ps_window_member *m);

/* Move member m's activity from window `from` to window `to`: from no
 * longer counts it (its attribution and scheduled move are undone), to
 * counts it as if it had been active in the same buckets; m then belongs
 * to `to`.  Both windows must have the same configuration and position
 * (advance the one behind first): PS_ERR otherwise, nothing changed.
 * 0 on success; from == to is a no-op. */
int ps_window_member_move(ps_window *from, ps_window_member *m,
                          ps_window *to);

typedef struct ps_window_counters {
    uint64_t late;    /* events ignored as older than the window */
    uint64_t pushed;  /* events that pushed the window forward */
    uint64_t invalid; /* events ignored as invalid */
    uint64_t broken;  /* inconsistencies seen (a member used with another
                         window or out of date state); should stay 0 */
} ps_window_counters;

void ps_window_get_counters(const ps_window *w, ps_window_counters *out);

/*
 * Combining instances.  Several processes, each with its own windows over
 * a disjoint set of customers, publish one Redis hash per window by
 * adding their changes: each keeps the totals it has published and sends
 * the difference to its current ones.  ps_window_hash_lua is the script
 * that applies them, run as
 *
 *   EVAL <script> 1 <key> dn dsum dsumsq dactive dpushed start_ms end_ms T
 *
 * It adds dn to field n, dsum to sum, dsumsq to sumsq (HINCRBYFLOAT),
 * dactive to active and dpushed to pushed (HINCRBY); sets start_ms and
 * end_ms to the given values when larger than the stored ones (absent =
 * smaller); then recomputes from the resulting totals mean = sum / n,
 * std = sqrt((sumsq - sum^2 / n) / (n - 1)) (0 when n < 2 or not > 0)
 * and p_spend_gt = P(X >= T) for X ~ N(mean, std^2), 1 if mean >= T else
 * 0 when std = 0, 0 when n <= 0 (the conventions of ps_window_query),
 * written with 10 significant digits.  Returns the new n.  The tail is
 * Abramowitz & Stegun 26.2.17 (absolute error < 7.5e-8; Lua 5.1 has no
 * erf).  The variance from sums of squares loses about
 * 1e-16 * (mean / std)^2 of relative accuracy (negligible unless the
 * amounts agree to 6+ digits).
 */
extern const char ps_window_hash_lua[];

/*
 * Saved state (version 2; version 1, without the sums of squares, loads
 * with them computed from n, sum and M2): the configuration, position,
 * counters, the ring and the non-zero scheduled moves.  ps_window_load()
 * reads into w, whose configuration must equal the saved one except that
 * w may have more ahead buckets (the saved ring then fills the first
 * ones); on any error (truncated,
 * wrong version, other configuration, values out of range) it returns
 * PS_ERR_STATE with errstr and leaves w unchanged.  It allocates a
 * scratch window of the same size while loading (PS_ERR_NOMEM if that
 * fails).  Cross-checks are structural (ranges, finiteness, moves <=
 * customers); a well-formed but altered state is not detectable.
 */
void ps_window_save(const ps_window *w, ps_wbuf *out);
int ps_window_load(ps_window *w, ps_rbuf *in, char *errstr, size_t errstr_size);

/* A member's saved form (25 bytes, versioned); load rejects impossible
 * values with PS_ERR_STATE and leaves *m unchanged. */
void ps_window_member_save(const ps_window_member *m, ps_wbuf *out);
int ps_window_member_load(ps_window_member *m, ps_rbuf *in);

#endif
