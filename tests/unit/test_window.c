/*
 * test_window.c -- unit tests for aggregates/window.c.
 *
 * The reference is a naive recomputation over the raw events: the test
 * keeps every event the window accepted, and at many watermarks recomputes
 * n, sum, mean, std (two-pass, ddof = 1), P(amount >= T) and the number of
 * distinct customers over exactly the window's interval.  The window is
 * aligned to buckets (window.h), so that interval is
 * [(cur - B) * w, cur * w) with cur = floor(watermark / w); the test derives
 * cur itself (from the watermarks and the "push" rule for events far
 * ahead) and checks the window agrees (ps_window_end_ms).  Which events are
 * late (before the window start when they arrive) the test decides by
 * itself too, and checks the window's answer.
 *
 * Covered: hand-made examples, out-of-order events (inside the window and
 * among the ahead buckets, in reverse order), expiry one bucket at a time
 * and by big jumps, a customer active many times counted once, touches
 * (activity without an amount), empty windows, events exactly at bucket
 * boundaries, events pushing the window, save/load round trips mid-stream
 * and corrupt saved state, and the default 7-day / 30-day configurations;
 * moving a customer (its member and its amounts) from one window to
 * another, against hand-computed numbers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../aggregates/normal.h"
#include "../../aggregates/window.h"
#include "../../common/error.h"

#define T_DEFAULT 70000.0

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

/* ---------------------------------------------------------------------- */
/* The model: raw events and a naive recomputation                          */
/* ---------------------------------------------------------------------- */

typedef struct raw {
    int64_t ts;
    double amount;
    int cust;       /* -1: no customer */
    int has_amount; /* 0: a touch */
} raw;

typedef struct model {
    ps_window_conf conf;
    int64_t cur;
    raw *ev;
    size_t n, cap;
    int ncust;
    unsigned char *seen; /* [ncust] scratch */
} model;

static void model_init(model *md, const ps_window_conf *conf, int ncust)
{
    memset(md, 0, sizeof(*md));
    md->conf = *conf;
    md->ncust = ncust;
    md->seen = calloc((size_t)ncust + 1, 1);
    assert_non_null(md->seen);
}

static void model_clear(model *md)
{
    free(md->ev);
    free(md->seen);
}

static void model_advance(model *md, int64_t wm)
{
    if (wm >= 0 && wm / md->conf.bucket_ms > md->cur)
        md->cur = wm / md->conf.bucket_ms;
}

/* The outcome the window must report; stores accepted events. */
static ps_window_result model_add(model *md, int64_t ts, double amount,
                                  int cust, int has_amount)
{
    if (ts <= 0 || (has_amount && (!isfinite(amount) || amount < 0)))
        return PS_WINDOW_INVALID;
    int64_t k = ts / md->conf.bucket_ms;
    if (k < md->cur - (int64_t)md->conf.buckets)
        return PS_WINDOW_LATE;
    ps_window_result res = PS_WINDOW_ADDED;
    if (k >= md->cur + (int64_t)md->conf.ahead) {
        md->cur = k - md->conf.ahead + 1;
        res = PS_WINDOW_PUSHED;
    }
    if (md->n == md->cap) {
        md->cap = md->cap ? 2 * md->cap : 1024;
        md->ev = realloc(md->ev, md->cap * sizeof(raw));
        assert_non_null(md->ev);
    }
    md->ev[md->n++] = (raw){ts, amount, cust, has_amount};
    return res;
}

/* Over the last span buckets of the window. */
static void naive_span(const model *md, uint32_t span, double threshold,
                       ps_window_stats *out)
{
    int64_t end = md->cur * md->conf.bucket_ms;
    int64_t start = end - (int64_t)span * md->conf.bucket_ms;
    uint64_t n = 0, active = 0;
    double sum = 0, ss = 0;

    memset(md->seen, 0, (size_t)md->ncust + 1);
    for (size_t i = 0; i < md->n; i++) {
        const raw *e = &md->ev[i];
        if (e->ts < start || e->ts >= end)
            continue;
        if (e->cust >= 0 && !md->seen[e->cust]) {
            md->seen[e->cust] = 1;
            active++;
        }
        if (e->has_amount) {
            n++;
            sum += e->amount;
        }
    }
    double mean = n ? sum / (double)n : 0;
    for (size_t i = 0; i < md->n; i++) {
        const raw *e = &md->ev[i];
        if (e->ts >= start && e->ts < end && e->has_amount)
            ss += (e->amount - mean) * (e->amount - mean);
    }
    out->n = n;
    out->sum = sum;
    out->mean = mean;
    out->std = n >= 2 ? sqrt(ss / (double)(n - 1)) : 0;
    out->p_ge = n ? ps_normal_tail(mean, out->std, threshold) : 0;
    out->active = active;
}

static void naive(const model *md, double threshold, ps_window_stats *out)
{
    naive_span(md, md->conf.buckets, threshold, out);
}

/* What the random runs exercised, summed over runs. */
static struct {
    uint64_t late, pushed, checks, max_active, nonempty, span_nonempty;
} tally;

static void check(const ps_window *w, const model *md)
{
    ps_window_stats got, want;
    assert_int_equal(ps_window_end_ms(w), md->cur * md->conf.bucket_ms);
    assert_int_equal(ps_window_start_ms(w),
                     (md->cur - (int64_t)md->conf.buckets) *
                         md->conf.bucket_ms);
    ps_window_query(w, T_DEFAULT, &got);
    naive(md, T_DEFAULT, &want);
    assert_int_equal(got.n, want.n);
    assert_int_equal(got.active, want.active);
    double scale = want.sum > 1 ? want.sum : 1;
    assert_close(got.sum, want.sum, 1e-12 * scale);
    assert_close(got.mean, want.mean, 1e-12 * (want.mean > 1 ? want.mean : 1));
    assert_close(got.std, want.std, 1e-9 * (want.std > 1 ? want.std : 1));
    assert_close(got.p_ge, want.p_ge, 1e-9);
    /* sub-windows of the same ring (the 7-day window of a 30-day ring):
     * the last span buckets, also exact */
    const uint32_t b = md->conf.buckets;
    const uint32_t spans[] = {0, b / 4 + 1, b > 1 ? b - 1 : 1, 168};
    /* every 4th comparison: the queries are O(B) and the runs long */
    for (size_t i = 0; tally.checks % 4 == 0 && i < 4; i++) {
        uint32_t sp = spans[i] > b ? b : spans[i] < 1 ? 1 : spans[i];
        ps_window_query_span(w, spans[i], T_DEFAULT, &got);
        naive_span(md, sp, T_DEFAULT, &want);
        assert_int_equal(ps_window_span_start_ms(w, spans[i]),
                         (md->cur - (int64_t)sp) * md->conf.bucket_ms);
        assert_int_equal(got.n, want.n);
        assert_int_equal(got.active, want.active);
        assert_close(got.sum, want.sum, 1e-12 * (want.sum > 1 ? want.sum : 1));
        assert_close(got.std, want.std, 1e-9 * (want.std > 1 ? want.std : 1));
        assert_close(got.p_ge, want.p_ge, 1e-9);
        tally.span_nonempty += sp < b && got.n > 0 && want.n < md->n;
    }
    ps_window_counters c;
    ps_window_get_counters(w, &c);
    assert_int_equal(c.broken, 0);
    tally.checks++;
    tally.nonempty += got.n > 0;
    if (got.active > tally.max_active)
        tally.max_active = got.active;
}

/* Apply to both and compare the outcome. */
static void both_add(ps_window *w, model *md, ps_window_member *members,
                     int64_t ts, double amount, int cust)
{
    ps_window_result want = model_add(md, ts, amount, cust, 1);
    ps_window_result got =
        ps_window_add(w, ts, amount, cust >= 0 ? &members[cust] : NULL);
    assert_int_equal(got, want);
}

static void both_touch(ps_window *w, model *md, ps_window_member *members,
                       int64_t ts, int cust)
{
    ps_window_result want = model_add(md, ts, 0, cust, 0);
    assert_int_equal(ps_window_touch(w, ts, &members[cust]), want);
}

static void both_advance(ps_window *w, model *md, int64_t wm)
{
    ps_window_advance(w, wm);
    model_advance(md, wm);
}

/* Deterministic generator (xorshift64*). */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}
static double rnd01(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}
static int64_t rnd_below(int64_t n)
{
    return (int64_t)(rnd() % (uint64_t)n);
}

static ps_window *new_window(int64_t w_ms, uint32_t b, uint32_t a)
{
    ps_window_conf conf = {w_ms, b, a};
    char err[128];
    ps_window *w = ps_window_new(&conf, err, sizeof(err));
    assert_non_null(w);
    return w;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                    */
/* ---------------------------------------------------------------------- */

static void test_config(void **state)
{
    (void)state;
    ps_window_conf c7, c30, bad;
    char err[128];
    ps_window_conf_7d(&c7);
    ps_window_conf_30d(&c30);
    assert_int_equal(c7.bucket_ms * c7.buckets, 7 * 86400000LL);
    assert_int_equal(c30.bucket_ms * c30.buckets, 30 * 86400000LL);
    assert_int_equal(ps_window_conf_check(&c7, err, sizeof(err)), PS_OK);
    assert_int_equal(ps_window_conf_check(&c30, err, sizeof(err)), PS_OK);
    print_message("window bytes: 7d %zu, 30d %zu\n", ps_window_bytes(&c7),
                  ps_window_bytes(&c30));

    bad = c7;
    bad.bucket_ms = 0;
    assert_null(ps_window_new(&bad, err, sizeof(err)));
    assert_true(strlen(err) > 0);
    assert_int_equal(ps_window_bytes(&bad), 0);
    bad = c7;
    bad.buckets = 0;
    assert_int_equal(ps_window_conf_check(&bad, NULL, 0), PS_ERR_CONFIG);
    bad = c7;
    bad.ahead = 0;
    assert_int_equal(ps_window_conf_check(&bad, NULL, 0), PS_ERR_CONFIG);
    bad.ahead = 65;
    assert_int_equal(ps_window_conf_check(&bad, NULL, 0), PS_ERR_CONFIG);
    ps_window_destroy(NULL);
}

static void test_empty(void **state)
{
    (void)state;
    ps_window *w = new_window(1000, 10, 2);
    ps_window_stats s;
    ps_window_query(w, T_DEFAULT, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.active, 0);
    assert_true(s.sum == 0 && s.mean == 0 && s.std == 0 && s.p_ge == 0);
    ps_window_query(w, -1.0, &s); /* threshold below 0: still 0 when empty */
    assert_true(s.p_ge == 0);
    ps_window_advance(w, 123456789);
    assert_int_equal(ps_window_end_ms(w), 123456000);
    assert_int_equal(ps_window_start_ms(w), 123446000);
    ps_window_query(w, T_DEFAULT, &s);
    assert_int_equal(s.n, 0);
    /* time does not go back */
    ps_window_advance(w, 5000);
    ps_window_advance(w, -1);
    assert_int_equal(ps_window_end_ms(w), 123456000);
    ps_window_destroy(w);
}

/* w = 10 ms, B = 3, A = 2, worked by hand. */
static void test_hand(void **state)
{
    (void)state;
    ps_window *w = new_window(10, 3, 2);
    ps_window_member m[3];
    ps_window_stats s;
    memset(m, 0, sizeof(m));

    /* cur = 10: window [70, 100), ahead [100, 120) */
    ps_window_advance(w, 105);
    assert_int_equal(ps_window_start_ms(w), 70);
    assert_int_equal(ps_window_end_ms(w), 100);
    assert_int_equal(ps_window_add(w, 69, 1, &m[0]), PS_WINDOW_LATE);
    assert_int_equal(ps_window_add(w, 70, 10, &m[0]), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_add(w, 99, 20, &m[0]), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_add(w, 85, 30, &m[1]), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_add(w, 100, 1000, &m[1]), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_touch(w, 119, &m[2]), PS_WINDOW_ADDED);
    ps_window_query(w, 25, &s);
    /* [70, 100): 10, 20, 30 by customers 0 and 1 */
    assert_int_equal(s.n, 3);
    assert_close(s.sum, 60, 0);
    assert_close(s.mean, 20, 1e-15);
    assert_close(s.std, 10, 1e-12);
    assert_close(s.p_ge, ps_normal_tail(20, 10, 25), 1e-15);
    assert_int_equal(s.active, 2);

    ps_window_advance(w, 110); /* [80, 110): 20, 30, 1000; customers 0, 1 */
    ps_window_query(w, 25, &s);
    assert_int_equal(s.n, 3);
    assert_close(s.sum, 1050, 0);
    assert_int_equal(s.active, 2);

    ps_window_advance(w, 129); /* [90, 120): 20, 1000; customers 0, 1, 2 */
    ps_window_query(w, 25, &s);
    assert_int_equal(s.n, 2);
    assert_close(s.mean, 510, 1e-12);
    assert_close(s.std, sqrt(2 * 490.0 * 490.0), 1e-9);
    assert_int_equal(s.active, 3);

    ps_window_advance(w, 130); /* [100, 130): 1000; customers 1, 2 */
    ps_window_query(w, 25, &s);
    assert_int_equal(s.n, 1);
    assert_close(s.std, 0, 0);
    assert_close(s.p_ge, 1, 0);
    assert_int_equal(s.active, 2);

    ps_window_advance(w, 150); /* [120, 150): empty */
    ps_window_query(w, 25, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.active, 0);

    /* invalid input */
    assert_int_equal(ps_window_add(w, 0, 1, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_add(w, -5, 1, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_add(w, 140, NAN, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_add(w, 140, INFINITY, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_add(w, 140, -0.01, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_touch(w, 0, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_touch(w, 140, NULL), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_add(w, INT64_MAX, 1, &m[0]), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_add(w, 140, 0, NULL), PS_WINDOW_ADDED);
    ps_window_counters c;
    ps_window_get_counters(w, &c);
    assert_int_equal(c.invalid, 8);
    assert_int_equal(c.late, 1);
    assert_int_equal(c.pushed, 0);
    assert_int_equal(c.broken, 0);
    ps_window_destroy(w);
}

/* One customer, activity arriving in reverse order across the window and
 * the ahead buckets; stepped one bucket at a time against the model. */
static void test_out_of_order_chain(void **state)
{
    (void)state;
    const int64_t W = 10;
    for (int order = 0; order < 24; order++) {
        ps_window *w = new_window(W, 4, 4);
        model md;
        ps_window_conf conf = {W, 4, 4};
        ps_window_member m[2];
        memset(m, 0, sizeof(m));
        model_init(&md, &conf, 2);
        both_advance(w, &md, 100); /* window [60,100), ahead [100,140) */
        /* four events of customer 0 in a permutation of this list */
        int64_t ts[4] = {65, 95, 115, 135};
        int perm[4] = {0, 1, 2, 3};
        int o = order;
        for (int i = 0; i < 4; i++) { /* order-th permutation */
            int j = i + o % (4 - i);
            o /= 4 - i;
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int i = 0; i < 4; i++) {
            both_add(w, &md, m, ts[perm[i]], 10 + perm[i], 0);
            both_add(w, &md, m, ts[perm[i]] - 3, 1, 1);
            check(w, &md);
        }
        for (int64_t wm = 100; wm <= 200; wm += 10) {
            both_advance(w, &md, wm);
            check(w, &md);
        }
        model_clear(&md);
        ps_window_destroy(w);
    }
}

static int64_t jitter(int64_t span)
{
    return span ? rnd_below(span) : 0;
}

/*
 * A random stream: a clock moving forward, events at clock - jitter
 * (lateness), some very late, some far ahead (pushing), occasional gaps
 * longer than the window, watermark = max ts - lateness advanced every few
 * events; compared with the model at every advance and now and then in
 * between; save/load round trips of the window and all members mid-way.
 */
static void random_run(uint64_t seed, int64_t w_ms, uint32_t b, uint32_t a,
                       int ncust, int nevents, int64_t lateness, int checks,
                       int64_t step)
{
    ps_window_conf conf = {w_ms, b, a};
    /* valgrind: the naive recounts (O(events) each) dominate */
    const bool quick = getenv("PS_TEST_QUICK") != NULL;
    int advances = 0;
    if (quick && checks >= 8)
        checks /= 4;
    ps_window *w = new_window(w_ms, b, a);
    ps_window_member *members = calloc((size_t)ncust, sizeof(*members));
    model md;
    int64_t clock = 1700000000000LL + rnd_below(w_ms), maxts = 0;
    int64_t span = (int64_t)b * w_ms;
    if (step <= 0)
        step = span / 300 + 1; /* time between events: uniform [0, step) */

    assert_non_null(members);
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    model_init(&md, &conf, ncust);
    for (int i = 0; i < nevents; i++) {
        double r = rnd01();
        clock += rnd_below(step);
        if (r < 0.002)
            clock += span + rnd_below(2 * span); /* gap: all expires */
        int64_t ts = clock - jitter(lateness);
        double r2 = rnd01();
        if (r2 < 0.02)
            ts = clock - lateness - rnd_below(span + 2 * w_ms); /* late-ish */
        else if (r2 < 0.025)
            ts = clock + rnd_below((int64_t)(a + 2) * w_ms); /* ahead */
        if (ts > maxts)
            maxts = ts;
        int cust = (int)rnd_below(ncust);
        if (rnd01() < 0.1) /* a few heavy customers */
            cust = (int)rnd_below(ncust < 5 ? ncust : 5);
        if (rnd01() < 0.2) {
            both_touch(w, &md, members, ts, cust);
        } else {
            double amount = floor(exp(rnd01() * 12) * 100) / 100;
            if (rnd01() < 0.01)
                amount = 0;
            both_add(w, &md, members, ts, amount, rnd01() < 0.02 ? -1 : cust);
        }
        if (rnd01() < 0.2) {
            both_advance(w, &md, maxts - lateness);
            if (!quick || ++advances % 2 == 0)
                check(w, &md);
        } else if (i % (nevents / checks + 1) == 0) {
            check(w, &md);
        }
        if (i == nevents / 2) {
            /* round trip through saved state, then continue on the copy */
            ps_wbuf buf;
            ps_rbuf in;
            char err[128];
            ps_wbuf_init(&buf);
            ps_window_save(w, &buf);
            for (int c = 0; c < ncust; c++)
                ps_window_member_save(&members[c], &buf);
            assert_int_equal(buf.oom, 0);
            ps_window *w2 = new_window(w_ms, b, a);
            ps_rbuf_init(&in, buf.data, buf.len);
            assert_int_equal(ps_window_load(w2, &in, err, sizeof(err)), PS_OK);
            memset(members, 0xAB, (size_t)ncust * sizeof(*members));
            for (int c = 0; c < ncust; c++)
                assert_int_equal(ps_window_member_load(&members[c], &in),
                                 PS_OK);
            assert_int_equal(ps_rbuf_left(&in), 0);
            /* the copy saves to the same bytes */
            ps_wbuf again;
            ps_wbuf_init(&again);
            ps_window_save(w2, &again);
            assert_true(again.len <= buf.len);
            assert_memory_equal(again.data, buf.data, again.len);
            ps_wbuf_clear(&again);
            ps_wbuf_clear(&buf);
            ps_window_destroy(w);
            w = w2;
            check(w, &md);
        }
    }
    /* drain: walk the watermark past everything, one bucket at a time */
    for (int64_t t = 0; t <= (int64_t)(b + a + 2); t++) {
        both_advance(w, &md, maxts - lateness + t * w_ms);
        check(w, &md);
    }
    ps_window_stats s;
    ps_window_query(w, T_DEFAULT, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.active, 0);
    ps_window_counters c;
    ps_window_get_counters(w, &c);
    tally.late += c.late;
    tally.pushed += c.pushed;
    model_clear(&md);
    free(members);
    ps_window_destroy(w);
}

static void print_tally(const char *what)
{
    print_message("%s: %llu comparisons (%llu non-empty), max active %llu, "
                  "late %llu, pushed %llu\n",
                  what, (unsigned long long)tally.checks,
                  (unsigned long long)tally.nonempty,
                  (unsigned long long)tally.max_active,
                  (unsigned long long)tally.late,
                  (unsigned long long)tally.pushed);
    assert_true(tally.late > 0 && tally.pushed > 0);
    assert_true(tally.nonempty > tally.checks / 2);
    assert_true(tally.span_nonempty > 0);
    memset(&tally, 0, sizeof(tally));
}

static void test_random_small(void **state)
{
    (void)state;
    /* w = 1 s; B and A varied, including B = 1 and A = 1 */
    const uint32_t bs[] = {1, 2, 3, 7, 24};
    const uint32_t as[] = {1, 2, 3, 5};
    uint64_t seed = 1;
    for (size_t i = 0; i < sizeof(bs) / sizeof(bs[0]); i++)
        for (size_t j = 0; j < sizeof(as) / sizeof(as[0]); j++)
            for (int rep = 0; rep < 4; rep++, seed++)
                random_run(seed, 1000, bs[i], as[j], 1 + (int)(seed % 40), 3000,
                           (int64_t)(as[j] - 1) * 1000 + 999, 300, 0);
    print_tally("small");
}

static void test_random_ahead_64(void **state)
{
    (void)state;
    random_run(777, 100, 50, 64, 30, 20000, 6000, 500, 0);
    print_tally("ahead 64");
}

/* The default configurations at realistic scale: 1-hour buckets, 1 h
 * lateness, 2,000 customers; the window mostly moves with the watermark
 * (pushes come from the 0.5 % of events generated ahead of the clock). */
static void test_default_configs(void **state)
{
    (void)state;
    ps_window_conf c;
    /* valgrind (PS_TEST_QUICK): a quarter of the events, four times
     * sparser, so the runs still span the same days */
    const int q = getenv("PS_TEST_QUICK") != NULL ? 4 : 1;
    ps_window_conf_7d(&c);
    /* ~14 days of events, one every 20 s on average */
    random_run(4242, c.bucket_ms, c.buckets, c.ahead, 2000, 60000 / q,
               3600000, 400, 40000 * q);
    ps_window_conf_30d(&c);
    /* ~42 days, one every minute */
    random_run(4243, c.bucket_ms, c.buckets, c.ahead, 2000, 60000 / q,
               3600000, 400, 120000 * q);
    print_tally("7d + 30d");
}

/* Exactness at bucket boundaries: the first and last ms of the window. */
static void test_boundaries(void **state)
{
    (void)state;
    const int64_t W = 3600000;
    ps_window_conf conf = {W, 168, 2};
    ps_window *w = new_window(W, 168, 2);
    ps_window_member m[4];
    model md;
    memset(m, 0, sizeof(m));
    model_init(&md, &conf, 4);
    int64_t e = 1704067200000LL; /* 2024-01-01T00:00Z, a bucket boundary */
    both_advance(w, &md, e);
    int64_t s = e - 168 * W;
    both_add(w, &md, m, s - 1, 1, 0); /* late */
    both_add(w, &md, m, s, 2, 1);     /* first ms in */
    both_add(w, &md, m, e - 1, 4, 2); /* last ms in */
    both_add(w, &md, m, e, 8, 3);     /* ahead */
    check(w, &md);
    ps_window_stats st;
    ps_window_query(w, T_DEFAULT, &st);
    assert_int_equal(st.n, 2);
    assert_close(st.sum, 6, 0);
    assert_int_equal(st.active, 2);
    /* one ms before the next boundary changes nothing */
    both_advance(w, &md, e + W - 1);
    check(w, &md);
    ps_window_query(w, T_DEFAULT, &st);
    assert_close(st.sum, 6, 0);
    /* the boundary drops s's bucket and takes e's */
    both_advance(w, &md, e + W);
    check(w, &md);
    ps_window_query(w, T_DEFAULT, &st);
    assert_close(st.sum, 12, 0);
    assert_int_equal(st.active, 2);
    model_clear(&md);
    ps_window_destroy(w);
}

/* A customer active every hour for 10 days counts once, and leaves the
 * 7-day window exactly 7 days after its last activity. */
static void test_many_times_once(void **state)
{
    (void)state;
    const int64_t H = 3600000;
    ps_window_conf conf;
    ps_window_conf_7d(&conf);
    ps_window *w = ps_window_new(&conf, NULL, 0);
    ps_window_member m = {0, 0, 0};
    ps_window_stats st;
    int64_t t0 = 1700000000000LL / H * H;
    ps_window_advance(w, t0);
    for (int64_t h = 0; h < 240; h++) {
        for (int j = 0; j < 3; j++)
            assert_int_equal(ps_window_add(w, t0 + h * H + j * 1000, 5, &m),
                             PS_WINDOW_ADDED);
        ps_window_advance(w, t0 + h * H + H / 2); /* 1 h lateness */
        ps_window_query(w, T_DEFAULT, &st);
        assert_int_equal(st.active, h == 0 ? 0 : 1);
    }
    int64_t last = t0 + 239 * H;
    ps_window_advance(w, last + 168 * H);
    ps_window_query(w, T_DEFAULT, &st);
    assert_int_equal(st.active, 1);
    assert_int_equal(st.n, 3);
    ps_window_advance(w, last + 169 * H);
    ps_window_query(w, T_DEFAULT, &st);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.n, 0);
    ps_window_destroy(w);
}

/* Numerical accuracy: large mean, small spread (where sum of squares
 * would cancel). */
static void test_accuracy(void **state)
{
    (void)state;
    ps_window *w = new_window(1000, 10, 2);
    ps_window_member m = {0, 0, 0};
    ps_window_advance(w, 1000000);
    for (int i = 0; i < 10000; i++)
        ps_window_add(w, 990000 + i % 10000, 1e9 + (i % 2), &m);
    ps_window_stats st;
    ps_window_query(w, 1e9 + 1, &st);
    assert_int_equal(st.n, 10000);
    assert_close(st.mean, 1e9 + 0.5, 1e-6);
    /* 5000 of each: var = 0.25 * n / (n - 1) */
    assert_close(st.std, sqrt(0.25 * 10000.0 / 9999.0), 1e-6);
    assert_close(st.p_ge, ps_normal_tail(st.mean, st.std, 1e9 + 1), 1e-6);
    assert_int_equal(st.active, 1);
    ps_window_destroy(w);
}

/* A window with activity in every bucket and scheduled moves, saved. */
static ps_window *busy_window(ps_wbuf *buf)
{
    ps_window *w = new_window(10, 5, 3);
    ps_window_member m[4];
    memset(m, 0, sizeof(m));
    ps_window_advance(w, 100);
    for (int64_t ts = 50; ts < 130; ts += 3)
        ps_window_add(w, ts, (double)ts, &m[ts % 4]);
    ps_wbuf_init(buf);
    ps_window_save(w, buf);
    return w;
}

static void test_load_rejects(void **state)
{
    (void)state;
    ps_wbuf good, after;
    ps_rbuf in;
    char err[128];
    ps_window *w = busy_window(&good);
    ps_window *target = new_window(10, 5, 3);
    ps_window_advance(target, 12345);
    ps_wbuf_init(&after);

    /* every truncation fails and leaves the target as it was */
    for (size_t len = 0; len < good.len; len++) {
        ps_rbuf_init(&in, good.data, len);
        assert_int_equal(ps_window_load(target, &in, err, sizeof(err)),
                         PS_ERR_STATE);
        assert_int_equal(ps_window_end_ms(target), 12340);
    }
    ps_rbuf_init(&in, good.data, good.len);
    assert_int_equal(ps_window_load(target, &in, err, sizeof(err)), PS_OK);
    ps_window_save(target, &after);
    assert_int_equal(after.len, good.len);
    assert_memory_equal(after.data, good.data, good.len);

    /* another configuration */
    ps_window *other = new_window(10, 6, 3);
    ps_rbuf_init(&in, good.data, good.len);
    assert_int_equal(ps_window_load(other, &in, err, sizeof(err)),
                     PS_ERR_STATE);
    assert_non_null(strstr(err, "configuration"));
    ps_window_destroy(other);

    /* corrupt fields: each must be rejected */
    size_t ring0 = 1 + 8 + 4 + 4 + 8 + 4 * 8; /* first bucket */
    struct {
        size_t off;
        unsigned char val;
        const char *what;
    } bad[] = {
        {0, 3, "version"},
        {ring0 + 8 + 7, 0xFF, "sum NaN / negative"}, /* sum sign byte */
        {ring0 + 16 + 7, 0x80, "m2 negative"},
        {ring0 + 24 + 7, 0x80, "sq negative"},
        {1 + 8 + 4 + 4 + 7, 0x80, "negative position"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *copy = malloc(good.len);
        memcpy(copy, good.data, good.len);
        copy[bad[i].off] = bad[i].val;
        ps_rbuf_init(&in, copy, good.len);
        int rc = ps_window_load(target, &in, err, sizeof(err));
        if (rc != PS_ERR_STATE)
            fail_msg("corrupt %s accepted", bad[i].what);
        free(copy);
    }
    /* moves: a bad d, and more moves than customers */
    size_t moves0 = ring0 + (5 + 3) * 32;
    {
        unsigned char *copy = malloc(good.len + 64);
        memcpy(copy, good.data, moves0);
        size_t o = moves0;
        /* row 0: 1 move, d = 5 (>= B) */
        unsigned char row[] = {1, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0};
        memcpy(copy + o, row, sizeof(row));
        o += sizeof(row);
        memset(copy + o, 0, 8);
        o += 8;
        ps_rbuf_init(&in, copy, o);
        assert_int_equal(ps_window_load(target, &in, err, sizeof(err)),
                         PS_ERR_STATE);
        unsigned char row2[] = {1, 0, 0, 0, 1, 0, 0, 0, 0xFF, 0xFF, 0, 0};
        memcpy(copy + moves0, row2, sizeof(row2));
        ps_rbuf_init(&in, copy, o);
        assert_int_equal(ps_window_load(target, &in, err, sizeof(err)),
                         PS_ERR_STATE);
        free(copy);
    }
    /* the target still holds the good state */
    ps_wbuf_reset(&after);
    ps_window_save(target, &after);
    assert_memory_equal(after.data, good.data, good.len);

    /* members */
    ps_window_member m = {3, 10, 5}, back = {0, 0, 0};
    ps_wbuf mb;
    ps_wbuf_init(&mb);
    ps_window_member_save(&m, &mb);
    assert_int_equal(mb.len, 25);
    for (size_t len = 0; len < mb.len; len++) {
        ps_rbuf_init(&in, mb.data, len);
        assert_int_equal(ps_window_member_load(&back, &in), PS_ERR_STATE);
    }
    ps_rbuf_init(&in, mb.data, mb.len);
    assert_int_equal(ps_window_member_load(&back, &in), PS_OK);
    assert_memory_equal(&back, &m, sizeof(m));
    mb.data[0] = 9; /* version */
    ps_rbuf_init(&in, mb.data, mb.len);
    assert_int_equal(ps_window_member_load(&back, &in), PS_ERR_STATE);
    ps_window_member badm = {11, 10, 0}; /* settled after base */
    ps_wbuf_reset(&mb);
    ps_window_member_save(&badm, &mb);
    ps_rbuf_init(&in, mb.data, mb.len);
    assert_int_equal(ps_window_member_load(&back, &in), PS_ERR_STATE);
    assert_memory_equal(&back, &m, sizeof(m));

    ps_wbuf_clear(&mb);
    ps_wbuf_clear(&good);
    ps_wbuf_clear(&after);
    ps_window_destroy(w);
    ps_window_destroy(target);
}

/* Pushes: an event far ahead moves the window; nothing is lost. */
static void test_push(void **state)
{
    (void)state;
    ps_window_conf conf = {10, 4, 2};
    ps_window *w = new_window(10, 4, 2);
    ps_window_member m[3];
    model md;
    memset(m, 0, sizeof(m));
    model_init(&md, &conf, 3);
    both_advance(w, &md, 100);
    both_add(w, &md, m, 95, 1, 0);
    both_add(w, &md, m, 105, 2, 0);
    both_add(w, &md, m, 145, 3, 1); /* bucket 14 >= 10 + 2: push to 13 */
    check(w, &md);
    assert_int_equal(ps_window_end_ms(w), 130);
    both_add(w, &md, m, 88, 4, 2);   /* now late (window [90, 130)) */
    both_add(w, &md, m, 1000, 5, 0); /* push past everything */
    check(w, &md);
    for (int64_t wm = 1000; wm < 1100; wm += 10) {
        both_advance(w, &md, wm);
        check(w, &md);
    }
    ps_window_counters c;
    ps_window_get_counters(w, &c);
    assert_int_equal(c.pushed, 2);
    assert_int_equal(c.late, 1);
    model_clear(&md);
    ps_window_destroy(w);
}

/* A member used with a window it does not belong to is counted as broken,
 * never crashes. */
static void test_foreign_member(void **state)
{
    (void)state;
    ps_window *w = new_window(10, 4, 2);
    ps_window_member m = {0, 1000000, 3}; /* from the future */
    ps_window_advance(w, 100);
    assert_int_equal(ps_window_add(w, 95, 1, &m), PS_WINDOW_ADDED);
    ps_window_counters c;
    ps_window_get_counters(w, &c);
    assert_int_equal(c.broken, 1);
    ps_window_stats st;
    ps_window_query(w, T_DEFAULT, &st);
    assert_int_equal(st.active, 1);
    ps_window_reset(w);
    assert_int_equal(ps_window_end_ms(w), 0);
    ps_window_get_counters(w, &c);
    assert_int_equal(c.broken, 0);
    ps_window_destroy(w);
}

/*
 * Moving a customer between two windows of the same shape (cohorts.c, a
 * late signup_ts).  Buckets of 10 ms, B = 10, A = 2; both windows at
 * position 20 (window [100, 200), ahead buckets 20 and 21).
 *   w1: m active at 12, spends 5 at 15, active at 21 (ahead);
 *       o spends 7 at 15 and 9 at 16.
 *   w2: x active at 18.
 * After moving m (member and its 5 at bucket 15) from w1 to w2:
 *   w1: n 2 (7, 9), sum 16, std sqrt(2), active 1 (o)
 *   w2: n 1 (5), active 2 (m, x)
 * At position 22 w2 has m attributed to its ahead bucket 21 (the
 * scheduled move went with it): w1 active 1 (o), w2 active 2 (m, x); at
 * 29 ([190, 290)) only m's bucket 21 remains, in w2; then m is dead.
 */
static void test_move_between(void **state)
{
    (void)state;
    ps_window *w1 = new_window(10, 10, 2), *w2 = new_window(10, 10, 2);
    ps_window *w3 = new_window(10, 10, 2);
    ps_window_member m, o, x;
    ps_window_spend sp = {0};
    ps_window_stats st;
    memset(&m, 0, sizeof(m));
    memset(&o, 0, sizeof(o));
    memset(&x, 0, sizeof(x));
    ps_window_advance(w1, 200);
    ps_window_advance(w2, 200);
    assert_int_equal(ps_window_touch(w1, 125, &m), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_add(w1, 155, 5, &m), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_touch(w1, 215, &m), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_add(w1, 151, 7, &o), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_add(w1, 165, 9, &o), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_touch(w2, 181, &x), PS_WINDOW_ADDED);
    ps_window_spend_add(&sp, 5);
    assert_true(ps_window_member_live(w1, &m));

    /* positions differ: refused, nothing changed */
    assert_int_equal(ps_window_member_move(w1, &m, w3), PS_ERR);
    ps_window_query(w1, T_DEFAULT, &st);
    assert_int_equal(st.active, 2);

    assert_int_equal(ps_window_member_move(w1, &m, w2), PS_OK);
    assert_int_equal(ps_window_unadd(w1, 150, &sp), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_merge(w2, 150, &sp), PS_WINDOW_ADDED);
    ps_window_query(w1, T_DEFAULT, &st);
    assert_int_equal(st.n, 2);
    assert_close(st.sum, 16, 1e-12);
    assert_close(st.std, sqrt(2.0), 1e-12);
    assert_int_equal(st.active, 1);
    ps_window_query(w2, T_DEFAULT, &st);
    assert_int_equal(st.n, 1);
    assert_close(st.sum, 5, 1e-12);
    assert_close(st.std, 0, 0);
    assert_int_equal(st.active, 2);

    /* the scheduled move went along: at 22 m is attributed to 21 in w2 */
    ps_window_advance(w1, 220);
    ps_window_advance(w2, 220);
    ps_window_query(w1, T_DEFAULT, &st);
    assert_int_equal(st.active, 1); /* o (15, 16) */
    ps_window_query(w2, T_DEFAULT, &st);
    assert_int_equal(st.active, 2); /* m (21), x (18) */
    ps_window_advance(w1, 290);
    ps_window_advance(w2, 290); /* [190, 290) */
    ps_window_query(w1, T_DEFAULT, &st);
    assert_int_equal(st.active, 0);
    assert_false(ps_window_member_live(w1, &o));
    ps_window_query(w2, T_DEFAULT, &st);
    assert_int_equal(st.active, 1); /* m */
    assert_true(ps_window_member_live(w2, &m));
    assert_false(ps_window_member_live(w2, &x));
    ps_window_advance(w2, 320);
    assert_false(ps_window_member_live(w2, &m));

    /* taking everything out of a bucket leaves it exactly empty; an
     * expired bucket is LATE; more than the bucket holds is refused */
    ps_window_spend a = {0}, big = {0};
    ps_window_spend_add(&a, 0.1);
    ps_window_spend_add(&a, 0.2);
    for (int i = 0; i < 3; i++)
        ps_window_spend_add(&big, 1);
    assert_int_equal(ps_window_add(w3, 55, 0.1, NULL), PS_WINDOW_PUSHED);
    assert_int_equal(ps_window_add(w3, 55, 0.2, NULL), PS_WINDOW_ADDED);
    assert_int_equal(ps_window_unadd(w3, 55, &big), PS_WINDOW_INVALID);
    assert_int_equal(ps_window_unadd(w3, 55, &a), PS_WINDOW_ADDED);
    ps_window_advance(w3, 100);
    ps_window_query(w3, T_DEFAULT, &st);
    assert_true(st.n == 0 && st.sum == 0 && st.std == 0);
    ps_window_advance(w3, 1000);
    assert_int_equal(ps_window_unadd(w3, 55, &a), PS_WINDOW_LATE);
    assert_int_equal(ps_window_merge(w3, 55, &a), PS_WINDOW_LATE);
    assert_int_equal(ps_window_merge(w3, 5000, &a), PS_WINDOW_INVALID);
    ps_window_counters c;
    ps_window_get_counters(w1, &c);
    assert_int_equal(c.broken, 0);
    ps_window_get_counters(w2, &c);
    assert_int_equal(c.broken, 0);
    ps_window_destroy(w1);
    ps_window_destroy(w2);
    ps_window_destroy(w3);
}

/*
 * Two partitions, one of them many hours ahead of the other, feed one
 * window whose position follows the slower one (the "global watermark",
 * as cohorts.c does) and is advanced at different moments.  Whatever the
 * interleaving, the final content is exactly the events in
 * [end - B * w, end): n, sum, sum of squares (integer amounts: exact in
 * any order) and active agree exactly between two interleavings and with
 * the naive count; nothing is pushed while the lead stays within the
 * ahead buckets.
 */
static void interleaved(int order, ps_window_stats *out, ps_window_counters *wc,
                        int64_t *end, model *md_out)
{
    const int64_t W = 3600000, LATE = W;
    const int np = 2, per = 3000;
    ps_window_conf conf = {W, 168, 50};
    ps_window *w = new_window(W, 168, 50);
    ps_window_member m[40];
    model md;
    int64_t ts[2][3000], maxts[2] = {INT64_MIN, INT64_MIN};
    int cust[2][3000];
    double amt[2][3000];
    int next[2] = {0, 0};
    int64_t lead = 0;
    memset(m, 0, sizeof(m));
    model_init(&md, &conf, 40);
    rng_state = 1234;
    for (int p = 0; p < np; p++) {
        int64_t clock = 1700000000000LL;
        for (int i = 0; i < per; i++) {
            clock += rnd_below(8 * 60000);
            ts[p][i] = clock - rnd_below(LATE);
            cust[p][i] = 20 * p + (int)rnd_below(20); /* disjoint */
            amt[p][i] = (double)(rnd_below(100000) + 1);
        }
    }
    rng_state = 99 + (uint64_t)order;
    /* placed before any watermark, as cohorts.c does */
    both_advance(w, &md,
                 (ts[0][0] < ts[1][0] ? ts[0][0] : ts[1][0]) - LATE);
    for (int done = 0; done < np * per;) {
        /* order 0: alternate; order 1: partition 1 runs ahead of
         * partition 0 by a lead changing between 0 and 36 h */
        int p = done % 2;
        if (order == 1) {
            if (rnd() % 500 == 0)
                lead = rnd_below(37) * W;
            p = next[1] < per && next[0] < per &&
                ts[1][next[1]] - ts[0][next[0]] < lead;
        }
        if (next[p] == per)
            p = 1 - p;
        {
            int i = next[p]++;
            done++;
            both_add(w, &md, m, ts[p][i], amt[p][i], cust[p][i]);
            if (ts[p][i] > maxts[p])
                maxts[p] = ts[p][i];
        }
        if (maxts[0] != INT64_MIN && maxts[1] != INT64_MIN &&
            rnd() % 3 == 0) {
            int64_t g = (maxts[0] < maxts[1] ? maxts[0] : maxts[1]) - LATE;
            both_advance(w, &md, g);
        }
    }
    int64_t g = (maxts[0] < maxts[1] ? maxts[0] : maxts[1]) - LATE;
    both_advance(w, &md, g);
    check(w, &md);
    ps_window_query(w, T_DEFAULT, out);
    ps_window_get_counters(w, wc);
    *end = ps_window_end_ms(w);
    *md_out = md;
    ps_window_destroy(w);
}

static void test_interleavings(void **state)
{
    (void)state;
    ps_window_stats a, b;
    ps_window_counters ca, cb;
    int64_t ea, eb;
    model ma, mb;
    interleaved(0, &a, &ca, &ea, &ma);
    interleaved(1, &b, &cb, &eb, &mb);
    assert_int_equal(ea, eb);
    assert_int_equal(ca.pushed, 0);
    assert_int_equal(cb.pushed, 0);
    assert_true(a.n > 1000 && a.n == b.n);
    assert_true(a.active == b.active);
    assert_memory_equal(&a.sum, &b.sum, sizeof(double));
    assert_memory_equal(&a.sumsq, &b.sumsq, sizeof(double));
    print_message("interleavings: n %llu active %llu, late %llu vs %llu\n",
                  (unsigned long long)a.n, (unsigned long long)a.active,
                  (unsigned long long)ca.late, (unsigned long long)cb.late);
    model_clear(&ma);
    model_clear(&mb);
}

/* Saved state of older shapes: a ring saved with fewer ahead buckets
 * loads into a larger one, and a version 1 ring (no sums of squares)
 * loads with them computed; both continue exactly. */
static void test_load_migrations(void **state)
{
    (void)state;
    ps_window_conf small = {10, 5, 3}, big = {10, 5, 20};
    ps_window *w = new_window(10, 5, 3);
    ps_window_member m[4];
    model md;
    ps_wbuf buf, v1;
    ps_rbuf in;
    char err[128];
    memset(m, 0, sizeof(m));
    model_init(&md, &small, 4);
    both_advance(w, &md, 100);
    for (int64_t ts = 52; ts < 130; ts += 3)
        both_add(w, &md, m, ts, (double)(ts % 7), (int)(ts % 4));
    ps_wbuf_init(&buf);
    ps_window_save(w, &buf);

    /* into more ahead buckets */
    ps_window *b = new_window(10, 5, 20);
    ps_rbuf_init(&in, buf.data, buf.len);
    assert_int_equal(ps_window_load(b, &in, err, sizeof(err)), PS_OK);
    md.conf = big;
    check(b, &md);
    both_add(b, &md, m, 250, 4, 1); /* ahead 20 now: no push */
    for (int64_t wm = 100; wm < 400; wm += 10) {
        both_advance(b, &md, wm);
        check(b, &md);
    }
    /* but not into fewer */
    ps_window *tiny = new_window(10, 5, 2);
    ps_rbuf_init(&in, buf.data, buf.len);
    assert_int_equal(ps_window_load(tiny, &in, err, sizeof(err)),
                     PS_ERR_STATE);

    /* version 1: the same without the f64 sq of every bucket */
    const size_t ring0 = 1 + 8 + 4 + 4 + 8 + 4 * 8;
    ps_wbuf_init(&v1);
    ps_wbuf_u8(&v1, 1);
    ps_wbuf_put(&v1, buf.data + 1, ring0 - 1);
    for (size_t k = 0; k < 5 + 3; k++)
        ps_wbuf_put(&v1, buf.data + ring0 + 32 * k, 24);
    ps_wbuf_put(&v1, buf.data + ring0 + 32 * 8, buf.len - ring0 - 32 * 8);
    ps_window *c1 = new_window(10, 5, 3);
    ps_rbuf_init(&in, v1.data, v1.len);
    assert_int_equal(ps_window_load(c1, &in, err, sizeof(err)), PS_OK);
    assert_int_equal(ps_rbuf_left(&in), 0);
    ps_window_stats s0, s1;
    ps_window_query(w, T_DEFAULT, &s0);
    ps_window_query(c1, T_DEFAULT, &s1);
    assert_int_equal(s0.n, s1.n);
    assert_int_equal(s0.active, s1.active);
    assert_close(s1.sumsq, s0.sumsq, 1e-9 * s0.sumsq);

    ps_wbuf_clear(&buf);
    ps_wbuf_clear(&v1);
    model_clear(&md);
    ps_window_destroy(w);
    ps_window_destroy(b);
    ps_window_destroy(tiny);
    ps_window_destroy(c1);
}

static void test_print_timing(void **state)
{
    (void)state;
    ps_window_conf conf;
    ps_window_conf_30d(&conf);
    ps_window *w = ps_window_new(&conf, NULL, 0);
    ps_window_member *m = calloc(10000, sizeof(*m));
    struct timespec a, b;
    const int n = getenv("PS_TEST_QUICK") != NULL ? 200000 : 2000000;
    int64_t t = 1700000000000LL;
    rng_state = 99;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        t += 1300;
        ps_window_add(w, t - (int64_t)(rnd() % 3600000), 10.0,
                      &m[rnd() % 10000]);
        if (i % 1000 == 0)
            ps_window_advance(w, t - 3600000);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
    ps_window_stats st;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 1000; i++)
        ps_window_query(w, T_DEFAULT, &st);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double qus =
        ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1000 / 1000;
    print_message("30d window: %.0f ns per add (incl. advances), %.1f us "
                  "per query; n=%llu active=%llu\n",
                  ns, qus, (unsigned long long)st.n,
                  (unsigned long long)st.active);
    free(m);
    ps_window_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_hand),
        cmocka_unit_test(test_boundaries),
        cmocka_unit_test(test_many_times_once),
        cmocka_unit_test(test_out_of_order_chain),
        cmocka_unit_test(test_push),
        cmocka_unit_test(test_random_small),
        cmocka_unit_test(test_random_ahead_64),
        cmocka_unit_test(test_default_configs),
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_load_rejects),
        cmocka_unit_test(test_foreign_member),
        cmocka_unit_test(test_move_between),
        cmocka_unit_test(test_interleavings),
        cmocka_unit_test(test_load_migrations),
        cmocka_unit_test(test_print_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
