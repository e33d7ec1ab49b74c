/*
 * test_cohorts_unit.c -- monthly cohorts through the pipeline, against
 * counts worked out by hand.
 *
 *   a: signup 2025-01-15 on its first event (2025-01-20, PURCHASE 100),
 *      then 2025-01-25 (CLICK, same month), 2025-03-02 (SPEND 50)
 *   b: no signup; first event 2025-01-05 (CLICK), then 2025-02-10
 *      (PURCHASE 30), and a late 2025-01-07 (CLICK, out of order)
 *   c: signup 2024-12-31 carried by its first event 2025-01-01 (CLICK)
 *
 * cohort 2025-01: size 2; active_0 = 2 (a, b), active_1 = 1 (b),
 *   active_2 = 1 (a); revenue_0 = 100, revenue_1 = 30, revenue_2 = 50;
 *   retention_0 = 1, retention_1 = retention_2 = 0.5
 * cohort 2024-12: size 1; active_1 = 1 (c); retention_1 = 1; no active_0
 *
 * test_windows: the rolling 7-day / 30-day windows (ps:cohort:{m}:w7d,
 * :w30d, :seg:{k}:w7d, :seg:{k}:w30d) through the pipeline, against a
 * naive recomputation over the raw events.  The test keeps every event
 * with the segment the customer had when it was applied (ps_segments_of
 * right after the apply), replays the window position rule itself
 * (end = floor(global watermark / 1 h) h, forward only, placed at the
 * first event's ts - lateness before any watermark, pushed by events
 * beyond the 50 ahead buckets; events older than the 30-day start on
 * arrival are ignored), emulates Redis by applying every window EVAL of
 * each flush to a table as ps_window_hash_lua would (eval_window: the
 * additive deltas, the maxima of start_ms / end_ms, derived fields from
 * the totals), and after each flush compares every hash with the naive
 * numbers over [start_ms, end_ms): n, sum, sumsq, mean, std (two-pass),
 * p_spend_gt, distinct active customers, and `pushed` with the model's
 * pushes.  Events arrive out of order (up to 3 h
 * jitter), some days late (accepted inside the 30-day window, outside the
 * 7-day one, or ignored), some ahead (pushes); quiet periods make the
 * windows expire.  Midway the state is saved (the customers' and the
 * aggregates' blobs from the flush) and the run continues on a new
 * pipeline restored from it (with the partition's clock, as the run loop
 * does); a failed flush (no ps_pipeline_flushed, nothing applied) must be
 * written again by the next one: its differences are not lost, and not
 * applied twice.
 *
 * test_interleavings: the same events from 16 partitions in different
 * cross-partition orders (and with restarts) give identical cohort
 * hashes (see there).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../aggregates/cohort_math.h"
#include "../../aggregates/normal.h"
#include "../../aggregates/pipeline.h"
#include "../../aggregates/segments.h"
#include "../../aggregates/window.h"
#include "../../common/error.h"

static ps_str S(const char *s) { return (ps_str){s, (uint32_t)strlen(s)}; }

static int64_t day(int y, unsigned m, unsigned d)
{
    return ps_days_from_civil(y, m, d) * 86400000LL + 12 * 3600000LL;
}

static void apply(ps_pipeline *p, const char *cust, ps_event_type t,
                  int64_t ts, int64_t signup, double amount)
{
    static int seq;
    char eid[16];
    ps_event e;
    bool late;
    int err;
    snprintf(eid, sizeof(eid), "e%d", ++seq);
    memset(&e, 0, sizeof(e));
    e.event_id = S(eid);
    e.customer_id = S(cust);
    e.type = t;
    if (t != PS_SPEND)
        e.product_id = S("p");
    e.has_amount = amount > 0;
    e.amount = amount;
    e.ts = ts;
    e.signup_ts = signup;
    ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, e.customer_id);
    if (c == NULL)
        c = ps_pipeline_add(p, e.customer_id, NULL, 0, &err);
    assert_non_null(c);
    assert_int_equal(ps_pipeline_apply(p, &e, c, &late), 0);
}

/* Sum of HINCRBY / HINCRBYFLOAT deltas of key field; HSET value of field
 * (NAN if absent). */
static double delta(const ps_batch *b, const char *key, const char *field)
{
    const char *argv[8];
    size_t lens[8];
    double total = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        if (ps_batch_argc(b, i) != 4)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (strncmp(argv[0], "HINCRBY", 7) == 0 && !strcmp(argv[1], key) &&
            !strcmp(argv[2], field))
            total += strtod(argv[3], NULL);
    }
    return total;
}

static double hset(const ps_batch *b, const char *key, const char *field)
{
    const char *argv[512];
    size_t lens[512];
    double v = NAN;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 512)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (strcmp(argv[0], "HSET") || strcmp(argv[1], key))
            continue;
        for (size_t a = 2; a + 1 < argc; a += 2)
            if (!strcmp(argv[a], field))
                v = strtod(argv[a + 1], NULL);
    }
    return v;
}

static void test_cohorts(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    assert_non_null(p);

    apply(p, "a", PS_PURCHASE, day(2025, 1, 20), day(2025, 1, 15), 100);
    apply(p, "a", PS_CLICK, day(2025, 1, 25), day(2025, 1, 15), 0);
    apply(p, "a", PS_SPEND, day(2025, 3, 2), 0, 50);
    apply(p, "b", PS_CLICK, day(2025, 1, 5), 0, 0);
    apply(p, "b", PS_PURCHASE, day(2025, 2, 10), 0, 30);
    apply(p, "b", PS_CLICK, day(2025, 1, 7), 0, 0);
    apply(p, "c", PS_CLICK, day(2025, 1, 1), day(2024, 12, 31), 0);
    ps_pipeline_write(p, b);

    assert_true(delta(b, "ps:cohort:2025-01", "size") == 2);
    assert_true(delta(b, "ps:cohort:2025-01", "active_0") == 2);
    assert_true(delta(b, "ps:cohort:2025-01", "active_1") == 1);
    assert_true(delta(b, "ps:cohort:2025-01", "active_2") == 1);
    assert_true(delta(b, "ps:cohort:2025-01", "revenue_0") == 100);
    assert_true(delta(b, "ps:cohort:2025-01", "revenue_1") == 30);
    assert_true(delta(b, "ps:cohort:2025-01", "revenue_2") == 50);
    assert_true(hset(b, "ps:cohort:2025-01", "retention_0") == 1);
    assert_true(hset(b, "ps:cohort:2025-01", "retention_1") == 0.5);
    assert_true(hset(b, "ps:cohort:2025-01", "retention_2") == 0.5);
    assert_true(delta(b, "ps:cohort:2024-12", "size") == 1);
    assert_true(delta(b, "ps:cohort:2024-12", "active_0") == 0);
    assert_true(delta(b, "ps:cohort:2024-12", "active_1") == 1);
    assert_true(hset(b, "ps:cohort:2024-12", "retention_1") == 1);

    /* after the flush, more activity in known offsets adds nothing but
     * revenue; a new offset adds one active customer */
    ps_pipeline_flushed(p);
    ps_batch_clear(b);
    apply(p, "a", PS_PURCHASE, day(2025, 3, 20), 0, 7);
    apply(p, "b", PS_CLICK, day(2025, 4, 1), 0, 0);
    ps_pipeline_write(p, b);
    assert_true(delta(b, "ps:cohort:2025-01", "size") == 0);
    assert_true(delta(b, "ps:cohort:2025-01", "active_2") == 0);
    assert_true(delta(b, "ps:cohort:2025-01", "revenue_2") == 7);
    assert_true(delta(b, "ps:cohort:2025-01", "active_3") == 1);
    assert_true(hset(b, "ps:cohort:2025-01", "retention_3") == 0.5);

    /* the customer's cohort and activity survive a save / load */
    ps_wbuf w;
    int e2;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(p, ps_pipeline_find(p, PS_KIND_CUSTOMER,
                                                  S("b")),
                              &w);
    ps_pipeline *q = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(ps_pipeline_add(q, S("b"), w.data, w.len, &e2));
    apply(q, "b", PS_CLICK, day(2025, 2, 20), 0, 0); /* offset 1: known */
    ps_batch_clear(b);
    ps_pipeline_write(q, b);
    assert_true(delta(b, "ps:cohort:2025-01", "active_1") == 0);
    assert_true(delta(b, "ps:cohort:2025-01", "size") == 0);
    ps_wbuf_clear(&w);
    ps_pipeline_destroy(q);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* ---------------------------------------------------------------------- */
/* Rolling windows                                                          */
/* ---------------------------------------------------------------------- */

#define HOUR 3600000LL
#define NCUST 30
#define MAXEV 20000
#define NKEYS 64

typedef struct wraw {
    int64_t ts;
    double amount;
    int cust, cohort, seg, has_amount;
} wraw;

static struct {
    wraw ev[MAXEV];
    int n;
    int64_t cur[2];      /* ring position (buckets) per cohort 0 / 1 */
    int ring[2][8];      /* ring exists: [cohort][1 + seg] */
    int seg_left[NCUST][8]; /* customer left that segment (re-entry check) */
    int last_seg[NCUST];
    int reentries, late, pushed, ignored;
    int pushes[2];       /* per cohort */
} W;

/* A window hash as Redis holds it after the EVALs of ps_window_hash_lua
 * (emulated by eval_window below). */
#define NWF 10
enum { F_N, F_SUM, F_MEAN, F_STD, F_P, F_ACTIVE, F_START, F_END, F_SUMSQ,
       F_PUSHED };
static const char *fields[NWF] = {"n",      "sum",      "mean",     "std",
                                  "p_spend_gt", "active", "start_ms",
                                  "end_ms", "sumsq",  "pushed"};
typedef struct whash {
    long double f[NWF]; /* Redis adds floats in long double */
    bool has[NWF];
} whash;

typedef struct hrec {
    char key[64];
    long double f[NWF]; /* as fields[] */
    int written;
} hrec;
static hrec store[NKEYS];

/* What ps_window_hash_lua does to hash h (argv: EVAL script 1 key dn dsum
 * dsumsq dactive dpushed start_ms end_ms T), in C: the increments, the
 * maxima, and the derived fields from the totals with the C conventions
 * (ps_normal_tail), rounded to 10 digits as the script writes them. */
static void eval_window(whash *h, const char *const *argv, size_t argc)
{
    char buf[80];
    assert_int_equal(argc, 12);
    assert_string_equal(argv[1], ps_window_hash_lua);
    assert_string_equal(argv[2], "1");
    h->f[F_N] += (double)strtoll(argv[4], NULL, 10);
    /* HINCRBYFLOAT: strtold, add, store as "%.17Lf" */
    for (int i = 0; i < 2; i++) {
        int f = i ? F_SUMSQ : F_SUM;
        snprintf(buf, sizeof(buf), "%.17Lf",
                 h->f[f] + strtold(argv[5 + i], NULL));
        h->f[f] = strtold(buf, NULL);
    }
    h->f[F_ACTIVE] += (double)strtoll(argv[7], NULL, 10);
    h->f[F_PUSHED] += (double)strtoll(argv[8], NULL, 10);
    h->has[F_N] = h->has[F_SUM] = h->has[F_SUMSQ] = h->has[F_ACTIVE] =
        h->has[F_PUSHED] = true;
    for (int i = 0; i < 2; i++) {
        long double v = (long double)strtoll(argv[9 + i], NULL, 10);
        if (!h->has[F_START + i] || v > h->f[F_START + i])
            h->f[F_START + i] = v;
        h->has[F_START + i] = true;
    }
    double n = (double)h->f[F_N], s = (double)h->f[F_SUM],
           q = (double)h->f[F_SUMSQ];
    double t = strtod(argv[11], NULL), m = 0, d = 0, p = 0;
    if (n > 0) {
        m = s / n;
        double v = n > 1 ? (q - s * s / n) / (n - 1) : 0;
        d = v > 0 ? sqrt(v) : 0;
        p = ps_normal_tail(m, d, t);
    }
    double out[3] = {m, d, p};
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "%.10g", out[i]);
        h->f[F_MEAN + i] = strtod(buf, NULL);
        h->has[F_MEAN + i] = true;
    }
}

static bool is_window_key(const char *key)
{
    return !strncmp(key, "ps:cohort:", 10) &&
           (strstr(key, ":w7d") || strstr(key, ":w30d"));
}

typedef struct blob {
    char key[64];
    unsigned char *data;
    size_t len;
} blob;
static blob blobs[1024];

static void set_blob(const char *key, const char *data, size_t len)
{
    size_t i;
    for (i = 0; i < sizeof(blobs) / sizeof(blobs[0]) && blobs[i].key[0]; i++)
        if (!strcmp(blobs[i].key, key))
            break;
    assert_true(i < sizeof(blobs) / sizeof(blobs[0]));
    snprintf(blobs[i].key, sizeof(blobs[i].key), "%s", key);
    free(blobs[i].data);
    blobs[i].data = malloc(len ? len : 1);
    memcpy(blobs[i].data, data, len);
    blobs[i].len = len;
}

static const blob *get_blob(const char *key)
{
    for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++)
        if (blobs[i].key[0] && !strcmp(blobs[i].key, key))
            return &blobs[i];
    return NULL;
}

/* Apply the window HSETs and the state SETs of a batch; returns the
 * number of window hashes written. */
static int absorb(const ps_batch *b)
{
    const char *argv[32];
    size_t lens[32];
    int written = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 32)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (!strcmp(argv[0], "SET") && argc == 3 &&
            !strncmp(argv[1], "ps:state:", 9)) {
            set_blob(argv[1], argv[2], lens[2]);
            continue;
        }
        if (argc >= 4 && !strcmp(argv[0], "HSET"))
            assert_false(is_window_key(argv[1])); /* only through EVAL */
        if (strcmp(argv[0], "EVAL") || argc < 4 || !is_window_key(argv[3]))
            continue;
        size_t k;
        for (k = 0; k < NKEYS && store[k].key[0]; k++)
            if (!strcmp(store[k].key, argv[3]))
                break;
        assert_true(k < NKEYS);
        snprintf(store[k].key, sizeof(store[k].key), "%s", argv[3]);
        whash h;
        for (int f = 0; f < NWF; f++) {
            h.f[f] = store[k].f[f];
            h.has[f] = store[k].written > 0;
        }
        eval_window(&h, argv, argc);
        memcpy(store[k].f, h.f, sizeof(h.f));
        store[k].written++;
        written++;
    }
    return written;
}

/* Window EVALs in a batch. */
static int count_windows(const ps_batch *b)
{
    const char *argv[32];
    size_t lens[32];
    int n = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 32)
            continue;
        ps_batch_argv(b, i, argv, lens);
        n += !strcmp(argv[0], "EVAL") && argc >= 4 && is_window_key(argv[3]);
    }
    return n;
}

static const hrec *stored(const char *key)
{
    for (size_t k = 0; k < NKEYS && store[k].key[0]; k++)
        if (!strcmp(store[k].key, key))
            return &store[k];
    return NULL;
}

/* Within 1e-8 relative, or `extra` absolute. */
static void close_rel_plus(double got, double want, double extra,
                           const char *what)
{
    double tol = 1e-8 * (fabs(want) > 1 ? fabs(want) : 1) + extra;
    if (!(fabs(got - want) <= tol)) {
        print_error("%s: got %.17g want %.17g\n", what, got, want);
        fail();
    }
}

/* Compare one stored hash with the naive numbers (seg -1: cohort). */
static void check_hash(int cohort, int seg, int days, const char *key)
{
    const hrec *h = stored(key);
    assert_non_null(h);
    int64_t end = W.cur[cohort] * HOUR, start = end - days * 24 * HOUR;
    assert_true(h->f[7] == (double)end);
    assert_true(h->f[6] == (double)start);
    double n = 0, sum = 0, ss = 0, sq = 0, ever = 0, ever_sq = 0;
    int active = 0, seen_cust[NCUST] = {0};
    for (int i = 0; i < W.n; i++) {
        const wraw *e = &W.ev[i];
        if (e->cohort != cohort || (seg >= 0 && e->seg != seg))
            continue;
        ever += e->amount;
        ever_sq += e->amount * e->amount;
        if (e->ts < start || e->ts >= end)
            continue;
        /* cohort level: distinct customers.  Segment level: distinct
         * customers with an event in the window while in that segment,
         * re-entries included (each counted once per segment). */
        if (!seen_cust[e->cust]++)
            active++;
        if (e->has_amount) {
            n++;
            sum += e->amount;
            sq += e->amount * e->amount;
        }
    }
    double mean = n > 0 ? sum / n : 0;
    for (int i = 0; i < W.n; i++) {
        const wraw *e = &W.ev[i];
        if (e->cohort == cohort && (seg < 0 || e->seg == seg) &&
            e->ts >= start && e->ts < end && e->has_amount)
            ss += (e->amount - mean) * (e->amount - mean);
    }
    double sd = n >= 2 ? sqrt(ss / (n - 1)) : 0;
    double p = n > 0 ? ps_normal_tail(mean, sd, 70000) : 0;
    if (h->f[0] != n || h->f[5] != active)
        print_error("%s: n %g want %g, active %g want %d (events %d, re-entries %d)\n",
                    key, (double)h->f[0], n, (double)h->f[5], active, W.n,
                    W.reentries);
    assert_true(h->f[0] == n);
    assert_true(h->f[5] == active);
    /* Natively the sums of the differences are exact (long double); where
     * long double is double (valgrind) they keep rounding residues of
     * about 1e-16 of everything ever added */
    double rs = 1e-14 * ever, rq = 1e-14 * ever_sq;
    close_rel_plus(h->f[F_SUM], sum, rs, "sum");
    close_rel_plus(h->f[F_SUMSQ], sq, rq, "sumsq");
    close_rel_plus(h->f[F_MEAN], mean, n > 0 ? rs / n : 0, "mean");
    /* 10 digits, and the variance from sums of squares */
    double tol = 2e-9 * (sd > 1 ? sd : 1) + (n >= 2 ? sqrt(rq / (n - 1)) : 0);
    if (!(fabs((double)h->f[F_STD] - sd) <= tol)) {
        print_error("%s std: got %.17g want %.17g\n", key,
                    (double)h->f[F_STD], sd);
        fail();
    }
    assert_true(fabs((double)h->f[F_P] - p) <= 1e-8);
    if (seg < 0)
        assert_true(h->f[F_PUSHED] == W.pushes[cohort]);
}

static void check_all(void)
{
    static const char *months[2] = {"2025-01", "2025-02"};
    char key[64];
    for (int c = 0; c < 2; c++) {
        for (int s = -1; s < 7; s++) {
            if (!W.ring[c][s + 1])
                continue;
            for (int r = 0; r < 2; r++) {
                int days = r ? 30 : 7;
                if (s < 0)
                    snprintf(key, sizeof(key), "ps:cohort:%s:w%dd",
                             months[c], days);
                else
                    snprintf(key, sizeof(key), "ps:cohort:%s:seg:%d:w%dd",
                             months[c], s, days);
                check_hash(c, s, days, key);
            }
        }
    }
}

/* Position rule of the model, given the watermark before the event. */
static void model_advance(int cohort, int64_t wm)
{
    if (wm >= 0 && wm / HOUR > W.cur[cohort])
        W.cur[cohort] = wm / HOUR;
}

static ps_customer *cust_in(ps_pipeline *p, const char *id)
{
    int err;
    char key[64];
    ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id));
    if (c != NULL)
        return c;
    snprintf(key, sizeof(key), "ps:state:cust:%s", id);
    const blob *bl = get_blob(key);
    c = ps_pipeline_add(p, S(id), bl ? bl->data : NULL, bl ? bl->len : 0,
                        &err);
    assert_non_null(c);
    return c;
}

static ps_pipeline *restore(const ps_agg_conf *conf)
{
    char err[256], key[80];
    ps_pipeline *q = ps_pipeline_new(conf, err, sizeof(err));
    assert_non_null(q);
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        if (!ps_pipeline_has_state(i))
            continue;
        snprintf(key, sizeof(key), "ps:state:agg:%s", ps_aggregates[i]->name);
        const blob *bl = get_blob(key);
        if (bl != NULL)
            assert_int_equal(ps_pipeline_load_state(q, i, bl->data, bl->len),
                             PS_OK);
    }
    return q;
}

static uint64_t wrng = 88172645463325252ULL;
static double wrnd(void)
{
    wrng ^= wrng << 13;
    wrng ^= wrng >> 7;
    wrng ^= wrng << 17;
    return (double)(wrng >> 11) / 9007199254740992.0;
}

static void test_windows(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 8;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    assert_non_null(p);
    memset(&W, 0, sizeof(W));
    for (int i = 0; i < NCUST; i++)
        W.last_seg[i] = -1;

    int64_t clock = day(2025, 2, 1), maxts = INT64_MIN;
    const int64_t A = 50; /* ahead buckets: 1 + 1 h lateness + 48 h skew */
    int nev = 6000, flushes = 0, rewrites = 0;
    for (int i = 0; i < nev; i++) {
        clock += (int64_t)(wrnd() * 40 * 60000);
        if (i == nev / 3 || i == 2 * nev / 3)
            clock += 9 * 24 * HOUR; /* quiet days: the 7-day window empties */
        int cu = (int)(wrnd() * NCUST);
        int cohort = cu % 3 == 0; /* a third signed up in February */
        int64_t ts = clock - (int64_t)(wrnd() * 3 * HOUR);
        double r = wrnd();
        if (r < 0.03)
            ts = clock - (int64_t)((3 + wrnd() * 35) * 24 * HOUR);
        else if (r < 0.035)
            ts = clock + (int64_t)(wrnd() * 6 * HOUR);
        else if (r < 0.0365) /* beyond the ahead buckets: pushes */
            ts = clock + (int64_t)((52 + wrnd() * 30) * HOUR);
        double t = wrnd(), amount = 0;
        ps_event_type type = t < 0.3 ? PS_CLICK
                             : t < 0.4 ? PS_WISHLIST
                             : t < 0.8 ? PS_PURCHASE
                                       : PS_SPEND;
        if (type == PS_PURCHASE || type == PS_SPEND) {
            /* three well-separated kinds of spenders */
            static const double scale[3] = {40, 3000, 90000};
            amount = floor(scale[cu % 3 == 0 ? 0 : cu % 3] *
                           (0.6 + 0.8 * wrnd()) * 100) / 100;
        }
        char id[8];
        snprintf(id, sizeof(id), "c%d", cu);
        int64_t signup = cohort ? day(2025, 2, 1) : day(2025, 1, 10);

        /* the model: position (the global watermark, or the first
         * event's ts - lateness before any), then push / ignore */
        int64_t gw = ps_pipeline_global_watermark(p);
        if (gw == INT64_MIN && W.cur[cohort] == 0)
            model_advance(cohort, ts - conf.allowed_lateness_ms);
        else
            model_advance(cohort, gw);
        int64_t k = ts / HOUR;
        int accepted = 1;
        if (k < W.cur[cohort] - 720) {
            accepted = 0;
            W.ignored++;
        } else if (k >= W.cur[cohort] + A) {
            W.cur[cohort] = k - A + 1;
            W.pushed++;
            W.pushes[cohort]++;
        }

        ps_customer *c = cust_in(p, id);
        apply(p, id, type, ts, signup, amount);
        if (ts > maxts)
            maxts = ts;
        int seg = ps_segments_of(p, c);
        if (seg >= conf.segments_k)
            seg = -1;
        if (seg >= 0) {
            int prev = W.last_seg[cu];
            if (prev >= 0 && prev != seg) {
                W.seg_left[cu][prev] = 1;
            }
            if (W.seg_left[cu][seg])
                W.reentries++;
            W.last_seg[cu] = seg;
        }
        W.ring[cohort][0] = 1;
        if (seg >= 0)
            W.ring[cohort][1 + seg] = 1;
        if (accepted) {
            assert_true(W.n < MAXEV);
            W.ev[W.n++] = (wraw){ts, amount, cu, cohort, seg,
                                 type == PS_PURCHASE || type == PS_SPEND};
        }
        if (i % 17 == 0) {
            assert_int_equal(ps_pipeline_advance(p, 0), 0);
            int64_t g = ps_pipeline_global_watermark(p);
            for (int co = 0; co < 2; co++)
                if (W.ring[co][0])
                    model_advance(co, g);
        }
        if (i % 50 == 49 || i == nev - 1) {
            ps_batch_clear(b);
            ps_pipeline_write(p, b);
            if (flushes % 7 == 3) {
                /* this transaction fails (nothing applied): the next must
                 * write the same differences again */
                int n1 = count_windows(b);
                ps_batch_clear(b);
                ps_pipeline_write(p, b);
                int n2 = absorb(b);
                assert_true(n2 >= n1);
                rewrites += n1;
            } else {
                absorb(b);
            }
            ps_pipeline_flushed(p);
            flushes++;
            check_all();
            /* nothing changed: nothing written */
            ps_batch_clear(b);
            ps_pipeline_write(p, b);
            assert_int_equal(absorb(b), 0);
            ps_pipeline_flushed(p);
        }
        if (i == nev / 2) {
            /* restart from what the last flush saved */
            ps_batch_clear(b);
            ps_pipeline_write(p, b);
            absorb(b);
            ps_pipeline_flushed(p);
            /* the run loop restores the partition's clock too */
            ps_str cause;
            char cb[64];
            int64_t mx = ps_pipeline_partition_clock(p, 0, &cause);
            snprintf(cb, sizeof(cb), "%.*s", (int)cause.len, cause.ptr);
            ps_pipeline_destroy(p);
            p = restore(&conf);
            if (mx != INT64_MIN)
                assert_int_equal(ps_pipeline_restore_partition_clock(
                                     p, 0, mx, S(cb), 0),
                                 PS_OK);
        }
    }
    /* drain: the watermark walks past everything; windows empty out */
    for (int h = 0; h <= 31 * 24; h += 5) {
        ps_event e;
        bool late;
        int64_t ts = maxts + (int64_t)h * HOUR;
        memset(&e, 0, sizeof(e));
        char eid[24];
        snprintf(eid, sizeof(eid), "drain%d", h);
        e.event_id = S(eid);
        e.customer_id = S("zz-other"); /* cohort 2025-03+: not checked */
        e.type = PS_CLICK;
        e.product_id = S("p");
        e.ts = ts;
        assert_int_equal(ps_pipeline_apply(p, &e, cust_in(p, "zz-other"),
                                           &late), 0);
        assert_int_equal(ps_pipeline_advance(p, 0), 0);
        for (int co = 0; co < 2; co++)
            model_advance(co, ps_pipeline_global_watermark(p));
        ps_batch_clear(b);
        ps_pipeline_write(p, b);
        absorb(b);
        ps_pipeline_flushed(p);
        check_all();
    }
    const hrec *h = stored("ps:cohort:2025-01:w30d");
    assert_non_null(h);
    assert_true(h->f[0] == 0 && h->f[5] == 0);

    print_message("windows: %d events kept, %d ignored as too late, %d "
                  "pushes, %d flushes, %d hashes rewritten after failed "
                  "flushes, %d segment re-entries\n",
                  W.n, W.ignored, W.pushed, flushes, rewrites, W.reentries);
    /* the run exercised what it claims */
    assert_true(W.ignored > 0 && W.pushed > 0 && rewrites > 0);
    int segs = 0;
    for (int s = 1; s < 8; s++)
        segs += W.ring[0][s];
    assert_true(segs >= 2);
    /* segment `active` is exact with re-entries too: this data has some,
     * early while k-means settles */
    assert_true(W.reentries > 0);
    for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++) {
        free(blobs[i].data);
        blobs[i].data = NULL;
        blobs[i].key[0] = 0;
    }
    memset(store, 0, sizeof(store));
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* ---------------------------------------------------------------------- */
/* Moving a customer to the cohort of a late signup_ts                      */
/* ---------------------------------------------------------------------- */

/* What Redis would hold for the keys the cohorts aggregate writes:
 * ps:cohort:* fields (HINCRBY / HINCRBYFLOAT added up, HSET replaced) and
 * the cohort field of ps:cust:* (as a month number); SET ps:state:* blobs
 * go to the blob table under tag + key. */
typedef struct fkv {
    char key[48];
    char field[24];
    long double v; /* Redis adds floats in long double */
} fkv;

typedef struct fake {
    fkv *e;
    size_t n, cap;
} fake;

static long double *fake_slot(fake *f, const char *key, const char *field,
                              bool create)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].key, key) && !strcmp(f->e[i].field, field))
            return &f->e[i].v;
    if (!create)
        return NULL;
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 256;
        f->e = realloc(f->e, f->cap * sizeof(*f->e));
        assert_non_null(f->e);
    }
    fkv *e = &f->e[f->n++];
    assert_true(strlen(key) < sizeof(e->key) &&
                strlen(field) < sizeof(e->field));
    strcpy(e->key, key);
    strcpy(e->field, field);
    e->v = 0;
    return &e->v;
}

static double fget(fake *f, const char *key, const char *field)
{
    long double *v = fake_slot(f, key, field, false);
    return v ? (double)*v : NAN;
}

static void fake_absorb(fake *f, const ps_batch *b, const char *tag)
{
    const char *argv[600];
    size_t lens[600];
    char key[80];
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        assert_true(argc <= 600);
        ps_batch_argv(b, i, argv, lens);
        if (!strcmp(argv[0], "SET") && argc == 3 &&
            !strncmp(argv[1], "ps:state:", 9)) {
            snprintf(key, sizeof(key), "%s%s", tag, argv[1]);
            set_blob(key, argv[2], lens[2]);
            continue;
        }
        if (!strcmp(argv[0], "EVAL") && argc >= 4 && is_window_key(argv[3])) {
            whash h;
            for (int k = 0; k < NWF; k++) {
                long double *v = fake_slot(f, argv[3], fields[k], false);
                h.has[k] = v != NULL;
                h.f[k] = v ? *v : 0;
            }
            eval_window(&h, argv, argc);
            for (int k = 0; k < NWF; k++)
                *fake_slot(f, argv[3], fields[k], true) = h.f[k];
            continue;
        }
        assert_true(strcmp(argv[0], "HSET") || !is_window_key(argv[1]));
        bool cust = !strncmp(argv[1], "ps:cust:", 8) &&
                    !strchr(argv[1] + 8, ':');
        if (strncmp(argv[1], "ps:cohort:", 10) && !cust)
            continue;
        if (!strncmp(argv[0], "HINCRBY", 7)) {
            assert_int_equal(argc, 4);
            *fake_slot(f, argv[1], argv[2], true) += strtod(argv[3], NULL);
        } else if (!strcmp(argv[0], "HSET")) {
            for (size_t a = 2; a + 1 < argc; a += 2) {
                if (cust && strcmp(argv[a], "cohort") != 0)
                    continue;
                double v = strtod(argv[a + 1], NULL);
                if (cust) {
                    int32_t m;
                    assert_int_equal(ps_month_parse(argv[a + 1], &m), 0);
                    v = m;
                }
                *fake_slot(f, argv[1], argv[a], true) = v;
            }
        }
    }
}

/* What the run loop does before a flush: shared entities created since
 * the last one get their base from the (fake) output hash. */
static void load_bases(ps_pipeline *p, fake *f)
{
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(p, &list);
    ps_entity **copy = malloc((n ? n : 1) * sizeof(*copy));
    char key[80], val[40];
    assert_non_null(copy);
    memcpy(copy, list, n * sizeof(*copy));
    for (size_t i = 0; i < n; i++) {
        ps_entity *e = copy[i];
        snprintf(key, sizeof(key), "ps:%s%.*s", ps_kind_key((ps_kind)e->kind),
                 (int)e->id.len, e->id.ptr);
        for (size_t j = 0; j < f->n; j++) {
            if (strcmp(f->e[j].key, key) != 0)
                continue;
            snprintf(val, sizeof(val), "%.17g", (double)f->e[j].v);
            ps_pipeline_load_field(p, e, f->e[j].field, strlen(f->e[j].field),
                                   val, strlen(val));
        }
        ps_pipeline_loaded(p, e);
    }
    free(copy);
}

static void flush_into(ps_pipeline *p, ps_batch *b, fake *f, const char *tag)
{
    load_bases(p, f);
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    fake_absorb(f, b, tag);
    ps_pipeline_flushed(p);
}

static void apply_adv(ps_pipeline *p, const char *cust, ps_event_type t,
                      int64_t ts, int64_t signup, double amount)
{
    apply(p, cust, t, ts, signup, amount);
    assert_int_equal(ps_pipeline_advance(p, 0), 0);
}

static void expect(fake *f, const char *key, const char *field, double want)
{
    double got = fget(f, key, field);
    double tol = 1e-9 * (fabs(want) > 1 ? fabs(want) : 1);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s %s = %.17g, expected %.17g", key, field, got, want);
}

static int month_no(int y, int m) { return y * 12 + m - 1; }

/*
 * m's first events carry no signup_ts: provisional cohort 2025-03.  Its
 * fourth event carries signup 2025-01-20: it moves to 2025-01, where o
 * (signup on its first event) already is.  A fifth event carries another
 * signup_ts (2024-06): ignored, the first one wins.  The run loop's
 * advance after every event keeps every ring at the watermark (latest ts
 * - 1 h; events at 12:00, so rings end at 11:00 and an event's own bucket
 * is still ahead).
 */
static void test_move(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    fake F = {0};
    assert_non_null(p);
    const int64_t H = 3600000;

    apply_adv(p, "o", PS_CLICK, day(2025, 1, 25), day(2025, 1, 20), 0);
    apply_adv(p, "m", PS_CLICK, day(2025, 3, 10), 0, 0);
    apply_adv(p, "m", PS_PURCHASE, day(2025, 3, 12), 0, 100);
    apply_adv(p, "m", PS_SPEND, day(2025, 3, 20), 0, 40);
    flush_into(p, b, &F, "");
    expect(&F, "ps:cust:m", "cohort", month_no(2025, 3));
    expect(&F, "ps:cohort:2025-03", "size", 1);
    expect(&F, "ps:cohort:2025-03", "active_0", 1);
    expect(&F, "ps:cohort:2025-03", "revenue_0", 140);
    expect(&F, "ps:cohort:2025-03", "retention_0", 1);
    expect(&F, "ps:cohort:2025-01", "size", 1);
    /* [Feb 18 11:00, Mar 20 11:00): the click and the 100; the 40 is in
     * the watermark's bucket, still ahead */
    expect(&F, "ps:cohort:2025-03:w30d", "end_ms", day(2025, 3, 20) - H);
    expect(&F, "ps:cohort:2025-03:w30d", "n", 1);
    expect(&F, "ps:cohort:2025-03:w30d", "sum", 100);
    expect(&F, "ps:cohort:2025-03:w30d", "active", 1);

    /* the move */
    apply_adv(p, "m", PS_CLICK, day(2025, 4, 2), day(2025, 1, 20), 0);
    flush_into(p, b, &F, "");
    expect(&F, "ps:cust:m", "cohort", month_no(2025, 1));
    expect(&F, "ps:cohort:2025-03", "size", 0);
    expect(&F, "ps:cohort:2025-03", "active_0", 0);
    expect(&F, "ps:cohort:2025-03", "revenue_0", 0);
    expect(&F, "ps:cohort:2025-03", "retention_0", 0);
    expect(&F, "ps:cohort:2025-01", "size", 2);
    expect(&F, "ps:cohort:2025-01", "active_0", 1); /* o */
    assert_true(isnan(fget(&F, "ps:cohort:2025-01", "active_1")));
    expect(&F, "ps:cohort:2025-01", "active_2", 1); /* m in March */
    expect(&F, "ps:cohort:2025-01", "active_3", 1); /* m in April */
    expect(&F, "ps:cohort:2025-01", "revenue_2", 140);
    assert_true(isnan(fget(&F, "ps:cohort:2025-01", "revenue_3")));
    expect(&F, "ps:cohort:2025-01", "retention_0", 0.5);
    expect(&F, "ps:cohort:2025-01", "retention_2", 0.5);
    expect(&F, "ps:cohort:2025-01", "retention_3", 0.5);
    /* windows end at Apr 2 11:00.  2025-03 is empty: the customer's
     * amounts and its activity left with it */
    expect(&F, "ps:cohort:2025-03:w30d", "end_ms", day(2025, 4, 2) - H);
    expect(&F, "ps:cohort:2025-03:w30d", "n", 0);
    expect(&F, "ps:cohort:2025-03:w30d", "sum", 0);
    expect(&F, "ps:cohort:2025-03:w30d", "active", 0);
    expect(&F, "ps:cohort:2025-03:w7d", "active", 0);
    /* 2025-01, [Mar 3 11:00, Apr 2 11:00): 100 and 40 of m; o's January
     * click is older; m's April click is in the ahead bucket */
    expect(&F, "ps:cohort:2025-01:w30d", "end_ms", day(2025, 4, 2) - H);
    expect(&F, "ps:cohort:2025-01:w30d", "n", 2);
    expect(&F, "ps:cohort:2025-01:w30d", "sum", 140);
    expect(&F, "ps:cohort:2025-01:w30d", "mean", 70);
    expect(&F, "ps:cohort:2025-01:w30d", "std", sqrt(1800.0));
    expect(&F, "ps:cohort:2025-01:w30d", "active", 1);
    expect(&F, "ps:cohort:2025-01:w7d", "n", 0); /* [Mar 26 11:00, ..) */
    expect(&F, "ps:cohort:2025-01:w7d", "active", 0);

    /* another signup_ts later: the first one seen stays */
    apply_adv(p, "m", PS_PURCHASE, day(2025, 4, 5), day(2024, 6, 1), 10);
    flush_into(p, b, &F, "");
    expect(&F, "ps:cust:m", "cohort", month_no(2025, 1));
    assert_true(isnan(fget(&F, "ps:cohort:2024-06", "size")));
    expect(&F, "ps:cohort:2025-01", "size", 2);
    expect(&F, "ps:cohort:2025-01", "active_3", 1);
    expect(&F, "ps:cohort:2025-01", "revenue_3", 10);
    /* [Mar 29 11:00, Apr 5 11:00): the April 2 click; the 10 is ahead */
    expect(&F, "ps:cohort:2025-01:w7d", "n", 0);
    expect(&F, "ps:cohort:2025-01:w7d", "active", 1);
    expect(&F, "ps:cohort:2025-01:w30d", "n", 2);
    expect(&F, "ps:cohort:2025-01:w30d", "active", 1);

    /* a moved customer's state (version 3) round-trips, and it stays */
    ps_wbuf w;
    int e2;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(p, ps_pipeline_find(p, PS_KIND_CUSTOMER,
                                                  S("m")), &w);
    ps_pipeline *q = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(ps_pipeline_add(q, S("m"), w.data, w.len, &e2));
    apply(q, "m", PS_CLICK, day(2025, 4, 6), day(2024, 12, 1), 0);
    ps_batch_clear(b);
    ps_pipeline_write(q, b);
    assert_true(delta(b, "ps:cohort:2025-01", "size") == 0);
    assert_true(delta(b, "ps:cohort:2025-01", "active_3") == 0);
    assert_true(delta(b, "ps:cohort:2024-12", "size") == 0);
    ps_wbuf_clear(&w);
    ps_pipeline_destroy(q);
    free(F.e);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/*
 * Segment re-entry.  k = 2 on the single feature recency_days, so the
 * segment follows from the events: a purchase makes it 0 ("near"), a
 * click 19 days after the last purchase makes it 19 ("far").  h seeds the
 * far centre (purchase Jan 2, click Jan 22: 20 days), b (purchase Jan 2)
 * the near one, which l (purchase Jan 22) joins.  r
 * (cohort 2025-01 like all) buys on Jan 22 (near), clicks on Feb 10
 * (far), buys on Feb 11 (near again, within 30 days of its first stay).
 * z (cohort 2024-06, no purchase, no segment) only moves the clock.
 * At the watermark Feb 12 11:00, by hand:
 *   near w30d [Jan 13 11:00, Feb 12 11:00): l 50, r 10, r 20:
 *        n 3, sum 80, active 2 (l, r: r once, not twice)
 *   far  w30d: h's click Jan 22, r's click Feb 10: n 0, active 2
 *   near w7d [Feb 5 11:00, Feb 12 11:00): r 20: n 1, sum 20, active 1
 *   far  w7d: r's click: n 0, active 1
 *   cohort w30d: n 3, sum 80, active 3 (h, l, r)
 */
static void test_segment_reentry(void **state)
{
    (void)state;
    char err[256], key[64];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 2;
    conf.segments_batch = 3;
    conf.segments_features = "recency_days";
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    fake F = {0};
    assert_non_null(p);
    const int64_t H = 3600000, su = day(2025, 1, 1), zs = day(2024, 6, 1);
    int seq[4];

    apply_adv(p, "h", PS_PURCHASE, day(2025, 1, 2) - 12 * H, su, 50);
    apply_adv(p, "b", PS_PURCHASE, day(2025, 1, 2) - 11 * H, su, 50);
    apply_adv(p, "h", PS_CLICK, day(2025, 1, 22) - 12 * H, su, 0);
    /* three points seen (0, 0, 20): k-means starts, h far, b near */
    int far = ps_segments_of(p, ps_pipeline_find(p, PS_KIND_CUSTOMER,
                                                 S("h")));
    int near = ps_segments_of(p, ps_pipeline_find(p, PS_KIND_CUSTOMER,
                                                  S("b")));
    assert_true(far >= 0 && near >= 0 && far != near);
    apply_adv(p, "l", PS_PURCHASE, day(2025, 1, 22) - 11 * H, su, 50);
    ps_customer *r = NULL;
    apply_adv(p, "r", PS_PURCHASE, day(2025, 1, 22) - 10 * H, su, 10);
    r = ps_pipeline_find(p, PS_KIND_CUSTOMER, S("r"));
    seq[0] = ps_segments_of(p, r);
    apply_adv(p, "r", PS_CLICK, day(2025, 2, 10) - 10 * H, su, 0);
    seq[1] = ps_segments_of(p, r);
    apply_adv(p, "r", PS_PURCHASE, day(2025, 2, 11) - 10 * H, su, 20);
    seq[2] = ps_segments_of(p, r);
    apply_adv(p, "z", PS_CLICK, day(2025, 2, 12), zs, 0);
    /* the premise: near, far, near; h and l stayed */
    assert_int_equal(seq[0], near);
    assert_int_equal(seq[1], far);
    assert_int_equal(seq[2], near);
    assert_int_equal(ps_segments_of(p, ps_pipeline_find(
                         p, PS_KIND_CUSTOMER, S("l"))), near);
    flush_into(p, b, &F, "");

    static const struct {
        int seg; /* 0 near, 1 far, -1 cohort */
        const char *w;
        double n, sum, active;
    } want[] = {
        {0, "w30d", 3, 80, 2}, {1, "w30d", 0, 0, 2}, {0, "w7d", 1, 20, 1},
        {1, "w7d", 0, 0, 1},   {-1, "w30d", 3, 80, 3},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (want[i].seg < 0)
            snprintf(key, sizeof(key), "ps:cohort:2025-01:%s", want[i].w);
        else
            snprintf(key, sizeof(key), "ps:cohort:2025-01:seg:%d:%s",
                     want[i].seg ? far : near, want[i].w);
        expect(&F, key, "end_ms", day(2025, 2, 12) - H);
        expect(&F, key, "n", want[i].n);
        expect(&F, key, "sum", want[i].sum);
        expect(&F, key, "active", want[i].active);
    }

    /* r stays counted once in near after a save / load of its state (the
     * parked far member travels with it), and a new near event does not
     * add it again */
    ps_wbuf w;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(p, r, &w);
    ps_pipeline_destroy(p);
    p = NULL;
    ps_wbuf_clear(&w);
    free(F.e);
    ps_batch_destroy(b);
}

/*
 * Twins.  Pipeline A gets events where some customers present their
 * signup_ts only from their k-th event on (k = 1, 3, 12, 40), carry it on
 * 70 % of their events after that, and sometimes carry a different one
 * afterwards (ignored: the first wins); some never carry one; signup
 * months lie before, inside and after the months of the events (an event
 * before its cohort month counts at offset 0).  Pipeline B gets the same
 * events with each customer's signup_ts on every event, so B never moves
 * anyone: by the contract's rule every number of A must equal B's.
 * Segments are on (k-means with small batches, so customers change and
 * re-enter segments), events come out of order (some too late for the
 * 30-day ring), and both pipelines are saved and restored midway.  At
 * the end every ps:cohort:* field of A -- size, active_{m}, revenue_{m},
 * retention_{m}, and every window hash of every cohort and cohort x
 * segment (n, sum, mean, std, p_spend_gt, active, start_ms, end_ms) --
 * must equal B's (counts exactly, amounts within rounding), and every
 * customer's cohort field too.  A's provisional cohorts that B never has
 * must be all zeros.
 */
#define NT 24

static ps_pipeline *restore_tagged(const ps_agg_conf *conf, const char *tag)
{
    char err[256], key[96];
    ps_pipeline *q = ps_pipeline_new(conf, err, sizeof(err));
    assert_non_null(q);
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        if (!ps_pipeline_has_state(i))
            continue;
        snprintf(key, sizeof(key), "%sps:state:agg:%s", tag,
                 ps_aggregates[i]->name);
        const blob *bl = get_blob(key);
        if (bl != NULL)
            assert_int_equal(ps_pipeline_load_state(q, i, bl->data, bl->len),
                             PS_OK);
    }
    return q;
}

static void apply_tagged(ps_pipeline *p, const char *tag, const char *cust,
                         ps_event_type t, int64_t ts, int64_t signup,
                         double amount)
{
    char key[96];
    int err;
    if (ps_pipeline_find(p, PS_KIND_CUSTOMER, S(cust)) == NULL) {
        snprintf(key, sizeof(key), "%sps:state:cust:%s", tag, cust);
        const blob *bl = get_blob(key);
        assert_non_null(ps_pipeline_add(p, S(cust), bl ? bl->data : NULL,
                                        bl ? bl->len : 0, &err));
    }
    apply(p, cust, t, ts, signup, amount);
}

static bool field_is(const char *f, const char *prefix)
{
    return !strncmp(f, prefix, strlen(prefix));
}

/* Compare A's entry with B's (NAN: absent); returns true when equal. */
static bool twin_equal(const fkv *a, double vb)
{
    double va = (double)a->v;
    const char *f = a->field;
    bool window = strstr(a->key, ":w7d") || strstr(a->key, ":w30d");
    if (isnan(vb)) {
        /* absent in B: a hash or field only A has -- all zeros */
        if (window && (!strcmp(f, "start_ms") || !strcmp(f, "end_ms")))
            return true;
        return fabs(va) <= 1e-6;
    }
    if (!strcmp(f, "n") || !strcmp(f, "active") || !strcmp(f, "size") ||
        field_is(f, "active_") || !strcmp(f, "start_ms") ||
        !strcmp(f, "end_ms") || !strcmp(f, "cohort"))
        return va == vb;
    if (!strcmp(f, "std"))
        return fabs(va - vb) <= 1e-7 * fmax(1, fabs(vb));
    return fabs(va - vb) <= 1e-9 * fmax(1, fabs(vb)) + 1e-9;
}

static void test_move_twins(void **state)
{
    (void)state;
    char err[256], id[8];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 8;
    ps_pipeline *pa = ps_pipeline_new(&conf, err, sizeof(err));
    ps_pipeline *pb = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    fake FA = {0}, FB = {0};
    assert_non_null(pa);
    assert_non_null(pb);
    static const int from_k[6] = {0, 1, 3, 12, 40, -1}; /* -1: never */
    int64_t signup[NT], first_ts[NT];
    int seen[NT] = {0}, presented[NT] = {0}, moved = 0, late_sig = 0;
    const int64_t H = 3600000;
    wrng = 88172645463325252ULL ^ 0x5eed;
    for (int i = 0; i < NT; i++)
        signup[i] = day(2024, 10, 1) +
                    (int64_t)(wrnd() * 180) * 24 * H; /* Oct .. Mar */

    int nev = getenv("PS_TEST_QUICK") ? 1500 : 5000;
    int64_t clock = day(2025, 1, 20);
    for (int i = 0; i < nev; i++) {
        /* <= 30 minutes apart: no event lies beyond the ahead buckets,
         * so no ring is pushed and all rings sit at the watermark */
        clock += (int64_t)(wrnd() * 30 * 60000);
        int cu = (int)(wrnd() * NT);
        int64_t ts = clock;
        double r = wrnd();
        if (r < 0.03)
            ts -= (int64_t)(wrnd() * 3 * H);
        else if (r < 0.05)
            ts -= (int64_t)((1 + wrnd() * 40) * 24 * H);
        double t = wrnd(), amount = 0;
        ps_event_type type = t < 0.35 ? PS_CLICK
                             : t < 0.45 ? PS_WISHLIST
                             : t < 0.85 ? PS_PURCHASE
                                        : PS_SPEND;
        if (type == PS_PURCHASE || type == PS_SPEND)
            amount = floor((cu % 3 == 0 ? 90000 : cu % 3 == 1 ? 3000 : 40) *
                           (0.5 + wrnd()) * 100) / 100;
        int k = from_k[cu % 6];
        int64_t sa = 0, sb = k >= 0 ? signup[cu] : 0;
        if (k >= 0 && seen[cu] >= k) {
            if (!presented[cu] || wrnd() < 0.7)
                sa = signup[cu];
            int32_t ms, mf;
            if (!presented[cu] && k > 0 &&
                ps_month_of_ts(signup[cu], &ms) == 0 &&
                ps_month_of_ts(first_ts[cu], &mf) == 0 && ms != mf)
                moved++; /* A moves it now */
            if (presented[cu] && wrnd() < 0.1) {
                sa = signup[cu] - (int64_t)(1 + wrnd() * 90) * 24 * H;
                late_sig++;
            }
            presented[cu] = 1;
        }
        if (seen[cu]++ == 0)
            first_ts[cu] = ts;
        snprintf(id, sizeof(id), "t%d", cu);
        apply_tagged(pa, "A|", id, type, ts, sa, amount);
        apply_tagged(pb, "B|", id, type, ts, sb, amount);
        if (i % 13 == 0) {
            assert_int_equal(ps_pipeline_advance(pa, 0), 0);
            assert_int_equal(ps_pipeline_advance(pb, 0), 0);
        }
        if (i % 40 == 39) {
            flush_into(pa, b, &FA, "A|");
            flush_into(pb, b, &FB, "B|");
        }
        if (i == nev / 2) {
            /* restart both from what they saved */
            flush_into(pa, b, &FA, "A|");
            flush_into(pb, b, &FB, "B|");
            ps_pipeline_destroy(pa);
            ps_pipeline_destroy(pb);
            pa = restore_tagged(&conf, "A|");
            pb = restore_tagged(&conf, "B|");
        }
    }
    /* whoever has not presented its signup_ts yet does so now */
    for (int cu = 0; cu < NT; cu++) {
        int32_t ms, mf;
        if (from_k[cu % 6] < 0 || presented[cu])
            continue;
        if (seen[cu] > 0 && ps_month_of_ts(signup[cu], &ms) == 0 &&
            ps_month_of_ts(first_ts[cu], &mf) == 0 && ms != mf)
            moved++;
        snprintf(id, sizeof(id), "t%d", cu);
        apply_tagged(pa, "A|", id, PS_CLICK, clock, signup[cu], 0);
        apply_tagged(pb, "B|", id, PS_CLICK, clock, signup[cu], 0);
    }
    assert_int_equal(ps_pipeline_advance(pa, 0), 0);
    assert_int_equal(ps_pipeline_advance(pb, 0), 0);
    flush_into(pa, b, &FA, "A|");
    flush_into(pb, b, &FB, "B|");

    /* every field of A against B's, and B's fields that A lacks */
    int compared = 0, windows = 0, seg_windows = 0, bad = 0;
    for (size_t i = 0; i < FA.n; i++) {
        const fkv *a = &FA.e[i];
        compared++;
        if (!strcmp(a->field, "n")) {
            windows++;
            seg_windows += strstr(a->key, ":seg:") != NULL;
        }
        double vb = fget(&FB, a->key, a->field);
        if (!twin_equal(a, vb) && bad++ < 10)
            print_error("%s %s: A %.17g, B %.17g\n", a->key, a->field,
                        (double)a->v,
                        vb);
    }
    for (size_t i = 0; i < FB.n; i++) {
        const fkv *e = &FB.e[i];
        if (isnan(fget(&FA, e->key, e->field)) && bad++ < 10)
            print_error("%s %s: only in B (%.17g)\n", e->key, e->field,
                        (double)e->v);
    }
    print_message("twins: %d events, %d fields compared (%d window hashes, "
                  "%d of them cohort x segment), %d customers moved "
                  "by a late signup_ts, %d later different signup_ts ignored, %d "
                  "mismatches\n", nev, compared, windows, seg_windows, moved,
                  late_sig, bad);
    assert_int_equal(bad, 0);
    assert_true(seg_windows > 0);
    for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++) {
        free(blobs[i].data);
        blobs[i].data = NULL;
        blobs[i].key[0] = 0;
    }
    free(FA.e);
    free(FB.e);
    ps_batch_destroy(b);
    ps_pipeline_destroy(pa);
    ps_pipeline_destroy(pb);
}

/*
 * Cross-partition interleavings (contract section 4): the windows must
 * not depend on how the partitions' fetches interleave.  16 partitions,
 * each with its own 6 customers and a time-ordered stream (jitter within
 * the lateness), integer amounts (their sums and sums of squares are
 * exact in any order).  A third of the customers carry their signup_ts
 * only from their third event on, so they move cohort.  The same events
 * are applied
 *   M: merged by time, as a live stream comes;
 *   S: in bursts of up to 30 events of one partition, any partition up
 *      to 40 h ahead of the slowest (a backlog), with advances and
 *      flushes at other moments;
 *   R: as S with another seed, and restarted twice from its last flush
 *      (state blobs and every partition's clock, as the run loop does);
 * every run begins with one event of each partition (all partitions
 * known to the clock, as when a consumer starts on assigned partitions).
 * Every field of every ps:cohort:{m} hash and of every cohort-level
 * window hash (n, sum, sumsq, mean, std, p_spend_gt, active, pushed,
 * start_ms, end_ms) must be identical in the three emulated Redis, none
 * pushed.  Cohort x segment windows are left out: the customers' segments
 * depend on the order (k-means), which the contract allows.  Then P:
 * leads up to 80 h, beyond the ahead capacity (50 h): the pushes must be
 * visible in the hashes' `pushed`.
 */
#define IP 16
#define IPER_MAX 400

typedef struct iev {
    int64_t ts, signup;
    double amount;
    ps_event_type type;
    int cust;
} iev;
static iev iev_all[IP][IPER_MAX];
static int iper;

static void iev_gen(void)
{
    int seen[IP * 6] = {0};
    iper = getenv("PS_TEST_QUICK") ? 150 : IPER_MAX;
    wrng = 0x1234567ULL;
    for (int p = 0; p < IP; p++) {
        int64_t clock = day(2025, 3, 1) + p * 7 * 60000LL;
        for (int i = 0; i < iper; i++) {
            iev *e = &iev_all[p][i];
            clock += (int64_t)(wrnd() * 60 * 60000);
            e->ts = clock - (int64_t)(wrnd() * 50 * 60000);
            e->cust = (int)(wrnd() * 6);
            double t = wrnd();
            e->type = t < 0.3 ? PS_CLICK : t < 0.4 ? PS_WISHLIST
                      : t < 0.8 ? PS_PURCHASE : PS_SPEND;
            e->amount = e->type == PS_PURCHASE || e->type == PS_SPEND
                            ? (double)(1 + (int64_t)(wrnd() * 100000))
                            : 0;
            int gid = p * 6 + e->cust;
            e->signup = gid % 3 == 0 && seen[gid] < 2
                            ? 0
                            : day(2025, 1 + (unsigned)(gid % 3), 5);
            seen[gid]++;
        }
    }
}

static void iapply(ps_pipeline *p, const char *tag, int part, int idx)
{
    const iev *ie = &iev_all[part][idx];
    char id[16], eid[24], key[64];
    ps_event e;
    bool late;
    int err;
    snprintf(id, sizeof(id), "p%dc%d", part, ie->cust);
    snprintf(eid, sizeof(eid), "i%d_%d", part, idx);
    ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id));
    if (c == NULL) {
        snprintf(key, sizeof(key), "%sps:state:cust:%s", tag, id);
        const blob *bl = get_blob(key);
        c = ps_pipeline_add(p, S(id), bl ? bl->data : NULL,
                            bl ? bl->len : 0, &err);
        assert_non_null(c);
    }
    memset(&e, 0, sizeof(e));
    e.event_id = S(eid);
    e.customer_id = S(id);
    e.type = ie->type;
    if (ie->type != PS_SPEND)
        e.product_id = S("p");
    e.has_amount = ie->amount > 0;
    e.amount = ie->amount;
    e.ts = ie->ts;
    e.signup_ts = ie->signup;
    e.part = (uint32_t)part;
    assert_int_equal(ps_pipeline_apply(p, &e, c, &late), 0);
}

/* Largest gap between the partitions' clocks (ms). */
static int64_t clock_spread(const ps_pipeline *p)
{
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    ps_str cause;
    for (int s = 0; s < IP; s++) {
        int64_t t = ps_pipeline_partition_clock(p, (uint32_t)s, &cause);
        if (t == INT64_MIN)
            continue;
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
    }
    return hi > lo ? hi - lo : 0;
}

static ps_pipeline *irestart(ps_pipeline *p, const ps_agg_conf *conf,
                             ps_batch *b, fake *F, const char *tag)
{
    int64_t mx[IP];
    char cause[IP][64];
    flush_into(p, b, F, tag);
    for (int s = 0; s < IP; s++) {
        ps_str c;
        mx[s] = ps_pipeline_partition_clock(p, (uint32_t)s, &c);
        snprintf(cause[s], sizeof(cause[s]), "%.*s", (int)c.len, c.ptr);
    }
    ps_pipeline_destroy(p);
    ps_pipeline *q = restore_tagged(conf, tag);
    for (int s = 0; s < IP; s++)
        if (mx[s] != INT64_MIN)
            assert_int_equal(ps_pipeline_restore_partition_clock(
                                 q, (uint32_t)s, mx[s], S(cause[s]), 0),
                             PS_OK);
    return q;
}

/* One run; returns the largest clock spread seen (ms). */
static int64_t irun(bool merged, uint64_t seed, int64_t lead_max,
                    int adv_every, int flush_every, int restarts, fake *F,
                    const char *tag)
{
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 8;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    int next[IP], total = IP * iper, applied = 0, restarted = 0;
    int64_t spread = 0;
    assert_non_null(p);
    wrng = seed;
    for (int q = 0; q < IP; q++) {
        iapply(p, tag, q, 0);
        next[q] = 1;
        applied++;
    }
    assert_int_equal(ps_pipeline_advance(p, 0), 0);
    while (applied < total) {
        int m = -1;
        for (int q = 0; q < IP; q++)
            if (next[q] < iper &&
                (m < 0 || iev_all[q][next[q]].ts < iev_all[m][next[m]].ts))
                m = q;
        int q = m, burst = 1;
        if (!merged) {
            q = (int)(wrnd() * IP);
            burst = 1 + (int)(wrnd() * 30);
        }
        for (int j = 0; j < burst; j++) {
            if (next[q] == iper ||
                iev_all[q][next[q]].ts - iev_all[m][next[m]].ts > lead_max)
                q = m; /* too far ahead: the slowest instead */
            iapply(p, tag, q, next[q]++);
            applied++;
            int64_t sp = clock_spread(p);
            spread = sp > spread ? sp : spread;
            if (applied % adv_every == 0)
                assert_int_equal(ps_pipeline_advance(p, 0), 0);
            if (applied % flush_every == 0)
                flush_into(p, b, F, tag);
            if (restarted < restarts &&
                applied >= (restarted + 1) * total / (restarts + 1)) {
                p = irestart(p, &conf, b, F, tag);
                restarted++;
            }
            if (applied == total)
                break;
            /* the slowest partition may have changed */
            m = -1;
            for (int r = 0; r < IP; r++)
                if (next[r] < iper &&
                    (m < 0 ||
                     iev_all[r][next[r]].ts < iev_all[m][next[m]].ts))
                    m = r;
            if (merged)
                q = m;
        }
    }
    assert_int_equal(ps_pipeline_advance(p, 0), 0);
    flush_into(p, b, F, tag);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
    return spread;
}

/* The fields of cohort-level keys (no :seg:) of a and b are identical;
 * returns the number of window hashes compared. */
static int same_cohort_keys(const fake *a, const fake *b, const char *what)
{
    int windows = 0, bad = 0, nfields = 0;
    for (int pass = 0; pass < 2; pass++) {
        const fake *x = pass ? b : a, *y = pass ? a : b;
        for (size_t i = 0; i < x->n; i++) {
            const fkv *e = &x->e[i];
            if (strncmp(e->key, "ps:cohort:", 10) || strstr(e->key, ":seg:"))
                continue;
            long double *o = fake_slot((fake *)y, e->key, e->field, false);
            if (pass == 1) {
                if (o == NULL && bad++ < 10)
                    print_error("%s: %s %s only in one\n", what, e->key,
                                e->field);
                continue;
            }
            nfields++;
            windows += !strcmp(e->field, "n");
            if ((o == NULL || *o != e->v) && bad++ < 10)
                print_error("%s: %s %s %.21Lg vs %.21Lg\n", what, e->key,
                            e->field, e->v, o ? *o : (long double)NAN);
        }
    }
    print_message("%s: %d fields identical (%d window hashes)\n", what,
                  nfields, windows);
    assert_int_equal(bad, 0);
    return windows;
}

static long double sum_field(const fake *f, const char *field)
{
    long double t = 0;
    for (size_t i = 0; i < f->n; i++)
        if (is_window_key(f->e[i].key) && !strcmp(f->e[i].field, field))
            t += f->e[i].v;
    return t;
}

static void test_interleavings(void **state)
{
    (void)state;
    const int64_t H = 3600000;
    fake FM = {0}, FS = {0}, FR = {0}, FP = {0};
    iev_gen();
    int64_t sm = irun(true, 1, 0, 7, 40, 0, &FM, "M|");
    int64_t ss = irun(false, 2, 40 * H, 23, 97, 0, &FS, "S|");
    int64_t sr = irun(false, 3, 40 * H, 11, 61, 2, &FR, "R|");
    print_message("interleavings: clock spread M %.1f h, S %.1f h, R %.1f h\n",
                  sm / 3.6e6, ss / 3.6e6, sr / 3.6e6);
    assert_true(ss >= 24 * H && sr >= 24 * H); /* skew of many hours */
    int w = same_cohort_keys(&FM, &FS, "M vs S");
    same_cohort_keys(&FM, &FR, "M vs R (restarted)");
    assert_true(w >= 6); /* 3 cohorts x 7d / 30d */
    assert_true(sum_field(&FM, "n") > 0);
    assert_true(sum_field(&FM, "pushed") == 0);
    assert_true(sum_field(&FS, "pushed") == 0);
    /* beyond the ahead capacity: pushed, and visible */
    int64_t sp = irun(false, 4, 80 * H, 23, 97, 0, &FP, "P|");
    long double pushed = sum_field(&FP, "pushed");
    print_message("leads up to 80 h: spread %.1f h, pushed %.0Lf\n",
                  sp / 3.6e6, pushed);
    assert_true(sp > 50 * H && pushed > 0);
    for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++) {
        free(blobs[i].data);
        blobs[i].data = NULL;
        blobs[i].key[0] = 0;
    }
    free(FM.e);
    free(FS.e);
    free(FR.e);
    free(FP.e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cohorts),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_move),
        cmocka_unit_test(test_segment_reentry),
        cmocka_unit_test(test_move_twins),
        cmocka_unit_test(test_interleavings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
