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
 * (end = floor(watermark / 1 h) h, forward only, pushed by events beyond
 * the 3 ahead buckets; events older than the 30-day start on arrival are
 * ignored), emulates Redis by applying every window HSET of each flush to
 * a table, and after each flush compares every hash with the naive
 * numbers over [start_ms, end_ms): n, sum, mean, std (two-pass), p_spend_gt,
 * distinct active customers.  Events arrive out of order (up to 3 h
 * jitter), some days late (accepted inside the 30-day window, outside the
 * 7-day one, or ignored), some ahead (pushes); quiet periods make the
 * windows expire.  Midway the state is saved (the customers' and the
 * aggregates' blobs from the flush) and the run continues on a new
 * pipeline restored from it; a failed flush (no ps_pipeline_flushed) must
 * be written again by the next one.
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
#define MAXEPOCH 256

typedef struct wraw {
    int64_t ts;
    double amount;
    int cust, cohort, seg, has_amount;
    int epoch; /* how many times the customer changed segment before */
} wraw;

static struct {
    wraw ev[MAXEV];
    int n;
    int64_t cur[2];      /* ring position (buckets) per cohort 0 / 1 */
    int ring[2][8];      /* ring exists: [cohort][1 + seg] */
    int seg_left[NCUST][8]; /* customer left that segment (re-entry check) */
    int last_seg[NCUST];
    int epoch[NCUST];
    int reentries, late, pushed, ignored, overcount;
} W;

typedef struct hrec {
    char key[64];
    double f[8]; /* n sum mean std p active start end */
    int written;
} hrec;
static hrec store[NKEYS];
static const char *fields[8] = {"n",      "sum",    "mean",     "std",
                                "p_spend_gt", "active", "start_ms", "end_ms"};

typedef struct blob {
    char key[64];
    unsigned char *data;
    size_t len;
} blob;
static blob blobs[NCUST + 16];

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
        if (strcmp(argv[0], "HSET") || strncmp(argv[1], "ps:cohort:", 10) ||
            (!strstr(argv[1], ":w7d") && !strstr(argv[1], ":w30d")))
            continue;
        assert_int_equal(argc, 2 + 2 * 8);
        size_t k;
        for (k = 0; k < NKEYS && store[k].key[0]; k++)
            if (!strcmp(store[k].key, argv[1]))
                break;
        assert_true(k < NKEYS);
        snprintf(store[k].key, sizeof(store[k].key), "%s", argv[1]);
        for (size_t a = 2; a + 1 < argc; a += 2) {
            assert_string_equal(argv[a], fields[(a - 2) / 2]);
            store[k].f[(a - 2) / 2] = strtod(argv[a + 1], NULL);
        }
        store[k].written++;
        written++;
    }
    return written;
}

static const hrec *stored(const char *key)
{
    for (size_t k = 0; k < NKEYS && store[k].key[0]; k++)
        if (!strcmp(store[k].key, key))
            return &store[k];
    return NULL;
}

static void close_rel(double got, double want, const char *what)
{
    double tol = 1e-8 * (fabs(want) > 1 ? fabs(want) : 1);
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
    double n = 0, sum = 0, ss = 0;
    static unsigned char seen[NCUST][MAXEPOCH];
    int active = 0, active_exact = 0, seen_cust[NCUST] = {0};
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < W.n; i++) {
        const wraw *e = &W.ev[i];
        if (e->cohort != cohort || (seg >= 0 && e->seg != seg) ||
            e->ts < start || e->ts >= end)
            continue;
        if (!seen_cust[e->cust]++)
            active_exact++;
        /* cohort level: distinct customers.  Segment level: distinct
         * (customer, segment epoch), the documented limitation of
         * cohorts.c: a customer re-entering a segment is counted again
         * while its earlier stay is still in the window. */
        if (!seen[e->cust][seg < 0 ? 0 : e->epoch]++)
            active++;
        if (e->has_amount) {
            n++;
            sum += e->amount;
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
    if (W.reentries == 0 || seg < 0)
        assert_int_equal(active, active_exact);
    W.overcount += active - active_exact;
    if (h->f[0] != n || h->f[5] != active)
        print_error("%s: n %g want %g, active %g want %d (events %d, re-entries %d)\n",
                    key, h->f[0], n, h->f[5], active, W.n, W.reentries);
    assert_true(h->f[0] == n);
    assert_true(h->f[5] == active);
    close_rel(h->f[1], sum, "sum");
    close_rel(h->f[2], mean, "mean");
    close_rel(h->f[3], sd, "std");
    close_rel(h->f[4], p, "p_spend_gt");
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
    const int64_t A = 3; /* ahead buckets: 1 h lateness / 1 h + 2 */
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

        /* the model: position, then push / ignore */
        int64_t wm = maxts == INT64_MIN ? INT64_MIN : maxts - conf.allowed_lateness_ms;
        model_advance(cohort, wm);
        int64_t k = ts / HOUR;
        int accepted = 1;
        if (k < W.cur[cohort] - 720) {
            accepted = 0;
            W.ignored++;
        } else if (k >= W.cur[cohort] + A) {
            W.cur[cohort] = k - A + 1;
            W.pushed++;
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
                W.epoch[cu]++;
                assert_true(W.epoch[cu] < MAXEPOCH);
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
                                 type == PS_PURCHASE || type == PS_SPEND,
                                 W.epoch[cu]};
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
            int n1 = absorb(b);
            if (flushes % 7 == 3) {
                /* this transaction fails: the next must write it all again */
                ps_batch_clear(b);
                ps_pipeline_write(p, b);
                int n2 = absorb(b);
                assert_true(n2 >= n1);
                rewrites += n1;
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
            ps_pipeline_destroy(p);
            p = restore(&conf);
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
    /* segment `active` is exact without re-entries (the limitation in
     * cohorts.c); this data has some, early while k-means settles, so the
     * over-count is modelled above and reported here */
    print_message("segment re-entries %d, summed over-count of segment "
                  "`active` over all checks %d\n", W.reentries, W.overcount);
    for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++) {
        free(blobs[i].data);
        blobs[i].data = NULL;
        blobs[i].key[0] = 0;
    }
    memset(store, 0, sizeof(store));
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cohorts),
        cmocka_unit_test(test_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
