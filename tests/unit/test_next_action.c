/*
 * test_next_action.c -- P(next event type | last type) through the
 * pipeline, on hand-built histories with hand-computed Dirichlet
 * posteriors: prior from the segment's transition row, else the global
 * one, else uniform; customer counts on top; a transition a -> b counted
 * at the segment the customer was in after a (not the one b moves it to);
 * event-time order for events out of order; transition counters written
 * as HINCRBY deltas exactly once across a failed and retried flush; saved
 * state read back unchanged, and version-1 states (no segment per event)
 * still loaded, counting at the current segment.
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

#include "../../aggregates/next_action.h"
#include "../../aggregates/pipeline.h"
#include "../../aggregates/segments.h"
#include "../support/pipeline_fixture.h"
#include "../../common/error.h"

#define H (3600 * 1000LL)

/* CLICK/WISHLIST/PURCHASE on product "p", SPEND of 10. */
static void ev(ps_fx *f, const char *cust, ps_event_type t, int64_t ts)
{
    ps_fx_event(f, cust, t, t == PS_SPEND ? NULL : "p", t == PS_SPEND ? 10 : -1,
           ts);
}

static void assert_next(const ps_fx *f, const char *cust, double pc, double pw,
                        double pp, double ps)
{
    static const char *const names[4] = {"next_click", "next_wishlist",
                                         "next_purchase", "next_spend"};
    const double want[4] = {pc, pw, pp, ps};
    char key[64];
    double sum = 0;
    snprintf(key, sizeof(key), "ps:cust:%s", cust);
    for (int j = 0; j < 4; j++) {
        double v = ps_fx_hset(f, key, names[j]);
        if (isnan(v))
            fail_msg("%s %s missing", key, names[j]);
        assert_close(v, want[j], 1e-12);
        sum += v;
    }
    assert_close(sum, 1.0, 1e-14);
}

/* No segments yet (k-means waits for 256 points): the prior is the
 * global row.  a: click, purchase, click, click; b: click, wishlist.
 * Global row click: {click 1, wishlist 1, purchase 1} / 3, so with
 * strength 10 alpha = (10/3, 10/3, 10/3, 0); a's row click is
 * {click 1, purchase 1}: (alpha_j + n_j) / (10 + 2). */
static void test_global_prior(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ev(&f, "a", PS_CLICK, 1 * H);
    ev(&f, "a", PS_PURCHASE, 2 * H);
    ev(&f, "a", PS_CLICK, 3 * H);
    ev(&f, "a", PS_CLICK, 4 * H);
    ev(&f, "b", PS_CLICK, 1 * H);
    ev(&f, "b", PS_WISHLIST, 2 * H);
    ps_fx_flush(&f);
    assert_next(&f, "a", 13.0 / 36, 10.0 / 36, 13.0 / 36, 0);
    assert_string_equal(ps_fx_hset_str(&f, "ps:cust:a", "last_event_type"),
                        "click");
    /* b's last type is wishlist: no data anywhere for that row */
    assert_next(&f, "b", 0.25, 0.25, 0.25, 0.25);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_purchase_click"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_click"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_wishlist"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_spend"), 0);
    assert_close(ps_fx_hset(&f, "ps:global", "next_purchase_after_click"),
                 1.0 / 3, 1e-9);
    assert_close(ps_fx_hset(&f, "ps:global", "next_click_after_purchase"), 1, 0);
    assert_close(ps_fx_hset(&f, "ps:global", "next_spend_after_spend"), 0.25, 0);

    /* the accessor agrees */
    double p[4];
    ps_customer *a = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("a"));
    assert_int_equal(ps_next_action_of(f.p, a, p), PS_CLICK);
    assert_close(p[PS_PURCHASE], 13.0 / 36, 1e-15);
    ps_fx_clear(&f);
}

/* A single event: no transition anywhere, so the uniform prior. */
static void test_uniform(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ev(&f, "u", PS_CLICK, 1 * H);
    ps_fx_flush(&f);
    assert_next(&f, "u", 0.25, 0.25, 0.25, 0.25);
    ps_fx_clear(&f);
}

/* Segment prior.  One segment (k = 1, named "elite") that every customer
 * with a purchase amount joins at that purchase.
 *   s: PURCHASE(amt) click wishlist click PURCHASE(amt) click
 *      -> p>c, c>w, w>c, c>p, p>c, all in segment 0
 *   t: PURCHASE(amt) click spend      -> p>c, c>s in segment 0
 *   g: click click click (no purchase, no segment) -> c>c x2, global only
 * Segment row click {w 1, p 1, s 1}: alpha = (0, 10/3, 10/3, 10/3); s's
 * row click {w 1, p 1}: (alpha_j + n_j) / 12.
 * g falls back to the global row click {c 2, w 1, p 1, s 1}:
 * alpha = (4, 2, 2, 2), own {c 2}: (alpha_j + n_j) / 12. */
static void test_segment_prior(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 1;
    conf.segments_batch = 1;
    conf.segments_names = "elite";
    ps_fx_init_conf(&f, &conf);
    ps_fx_event(&f, "s", PS_PURCHASE, "p1", 100, 1 * H);
    ev(&f, "s", PS_CLICK, 2 * H);
    ev(&f, "s", PS_WISHLIST, 3 * H);
    ev(&f, "s", PS_CLICK, 4 * H);
    ps_fx_event(&f, "s", PS_PURCHASE, "p2", 300, 5 * H);
    ev(&f, "s", PS_CLICK, 6 * H);
    ps_fx_event(&f, "t", PS_PURCHASE, "p1", 200, 1 * H);
    ev(&f, "t", PS_CLICK, 2 * H);
    ev(&f, "t", PS_SPEND, 3 * H);
    ev(&f, "g", PS_CLICK, 1 * H);
    ev(&f, "g", PS_CLICK, 2 * H);
    ev(&f, "g", PS_CLICK, 3 * H);
    ps_fx_flush(&f);
    assert_close(ps_fx_hset(&f, "ps:cust:s", "segment"), 0, 0);
    assert_true(isnan(ps_fx_hset(&f, "ps:cust:g", "segment")) ||
                ps_fx_hset(&f, "ps:cust:g", "segment") < 0);
    assert_next(&f, "s", 0, 13.0 / 36, 13.0 / 36, 10.0 / 36);
    assert_next(&f, "g", 0.5, 2.0 / 12, 2.0 / 12, 2.0 / 12);
    assert_int_equal(ps_fx_incr(&f, "ps:segment:0", "trans_purchase_click"), 3);
    assert_int_equal(ps_fx_incr(&f, "ps:segment:0", "trans_click_click"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_click"), 2);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_purchase_click"), 3);
    assert_close(ps_fx_hset(&f, "ps:segment:0", "next_spend_after_click"), 1.0 / 3,
                 1e-9);
    /* t's last type is spend: no spend row anywhere -> uniform */
    assert_next(&f, "t", 0.25, 0.25, 0.25, 0.25);
    ps_fx_clear(&f);
}

/* Segment of a transition.  Two segments (k = 2) on the single feature
 * mean_amount, k-means starting after 2 points: lo (purchase 10) and hi
 * (purchase 1000) seed the low (L) and high (Hs) centres.  Events:
 *   lo PURCHASE 10 @1              (no model yet: lo has no segment)
 *   hi PURCHASE 1000 @1            (model starts: hi in Hs, lo in L)
 *   m PURCHASE 10 @1               (joins L)
 *   h2 PURCHASE 1000 @1            (joins Hs)
 *   hi CLICK @2, hi WISHLIST @3   -> p>c, c>w at Hs (hi's segment)
 *   h2 CLICK @2                    -> p>c at Hs
 *   m CLICK @2                     -> p>c at L, m's segment after its
 *                                     purchase
 *   m PURCHASE 3000 @3             -> mean (10 + 3000) / 2 = 1505: m moves
 *                                     to Hs; c>p counts at L, where m was
 *                                     after its click (the segment of the
 *                                     forecast this purchase answers), NOT
 *                                     at Hs
 *   lo CLICK @2                    -> p>c globally only: lo had no
 *                                     segment after its purchase (it got
 *                                     L when the model started, not at an
 *                                     event of its own)
 * Counts, by hand:
 *   L:      purchase>click 1 (m), click>purchase 1 (m)
 *   Hs:     purchase>click 2 (hi, h2), click>wishlist 1 (hi),
 *           click>purchase 0
 *   global: purchase>click 4, click>wishlist 1, click>purchase 1
 * Forecasts (strength 10; the prior is the CURRENT segment's row):
 *   h2 (last click, in Hs): Hs row click {wishlist 1}: alpha
 *     (0, 10, 0, 0), no own click row: (0, 1, 0, 0).  (Counting m's c>p at
 *     Hs, the segment after the purchase, would make Hs row click
 *     {wishlist 1, purchase 1} and h2's forecast (0, 1/2, 1/2, 0).)
 *   lo (last click, in L): L row click {purchase 1}: alpha (0, 0, 10, 0),
 *     no own click row: (0, 0, 1, 0).  (Counted after, L would have no
 *     click row and lo would get the global row click {wishlist 1,
 *     purchase 1}: (0, 1/2, 1/2, 0).)
 *   m (last purchase, now in Hs): Hs row purchase {click 2}: alpha
 *     (10, 0, 0, 0); own row purchase {click 1}: (11, 0, 0, 0) / 11.
 *   hi (last wishlist): no wishlist row anywhere: uniform. */
static void test_segment_move(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    char key[32];
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 2;
    conf.segments_batch = 2;
    conf.segments_features = "mean_amount";
    ps_fx_init_conf(&f, &conf);
    ps_fx_event(&f, "lo", PS_PURCHASE, "p", 10, 1 * H);
    ps_fx_event(&f, "hi", PS_PURCHASE, "p", 1000, 1 * H);
    ps_fx_event(&f, "m", PS_PURCHASE, "p", 10, 1 * H);
    ps_fx_event(&f, "h2", PS_PURCHASE, "p", 1000, 1 * H);
    ps_customer *lo = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("lo"));
    ps_customer *hi = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("hi"));
    ps_customer *h2 = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("h2"));
    ps_customer *m = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("m"));
    int L = ps_segments_of(f.p, lo), Hs = ps_segments_of(f.p, hi);
    /* the premise: two segments, m starts in lo's, h2 in hi's */
    assert_true(L >= 0 && Hs >= 0 && L != Hs);
    assert_int_equal(ps_segments_of(f.p, m), L);
    assert_int_equal(ps_segments_of(f.p, h2), Hs);
    ev(&f, "hi", PS_CLICK, 2 * H);
    ev(&f, "hi", PS_WISHLIST, 3 * H);
    ev(&f, "h2", PS_CLICK, 2 * H);
    ev(&f, "m", PS_CLICK, 2 * H);
    assert_int_equal(ps_segments_of(f.p, m), L);
    ps_fx_event(&f, "m", PS_PURCHASE, "p", 3000, 3 * H);
    /* the premise: the purchase moved m to hi's segment */
    assert_int_equal(ps_segments_of(f.p, m), Hs);
    ev(&f, "lo", PS_CLICK, 2 * H);
    /* ... and nobody else moved */
    assert_int_equal(ps_segments_of(f.p, lo), L);
    assert_int_equal(ps_segments_of(f.p, hi), Hs);
    assert_int_equal(ps_segments_of(f.p, h2), Hs);
    assert_int_equal(ps_segments_of(f.p, m), Hs);
    ps_fx_flush(&f);

    snprintf(key, sizeof(key), "ps:segment:%d", L);
    assert_int_equal(ps_fx_incr(&f, key, "trans_purchase_click"), 1);
    assert_int_equal(ps_fx_incr(&f, key, "trans_click_purchase"), 1);
    assert_int_equal(ps_fx_incr(&f, key, "trans_click_wishlist"), 0);
    assert_close(ps_fx_hset(&f, key, "next_purchase_after_click"), 1, 0);
    snprintf(key, sizeof(key), "ps:segment:%d", Hs);
    assert_int_equal(ps_fx_incr(&f, key, "trans_purchase_click"), 2);
    assert_int_equal(ps_fx_incr(&f, key, "trans_click_wishlist"), 1);
    assert_int_equal(ps_fx_incr(&f, key, "trans_click_purchase"), 0);
    assert_close(ps_fx_hset(&f, key, "next_purchase_after_click"), 0, 0);
    assert_close(ps_fx_hset(&f, key, "next_wishlist_after_click"), 1, 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_purchase_click"), 4);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_wishlist"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 1);

    assert_next(&f, "h2", 0, 1, 0, 0);
    assert_next(&f, "lo", 0, 0, 1, 0);
    assert_next(&f, "m", 1, 0, 0, 0);
    assert_next(&f, "hi", 0.25, 0.25, 0.25, 0.25);
    double p[4];
    assert_int_equal(ps_next_action_of(f.p, h2, p), PS_CLICK);
    assert_close(p[PS_WISHLIST], 1, 0);
    assert_close(p[PS_PURCHASE], 0, 0);
    ps_fx_clear(&f);
}

/* Event-time order: a WISHLIST at 20 arriving after a PURCHASE at 30
 * takes back click>purchase and counts click>wishlist>purchase.  Once four
 * events are remembered, one older than all of them changes nothing. */
static void test_out_of_order(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ev(&f, "o", PS_CLICK, 10 * H);
    ev(&f, "o", PS_PURCHASE, 30 * H);
    ev(&f, "o", PS_WISHLIST, 20 * H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_wishlist"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_wishlist_purchase"), 1);
    assert_string_equal(ps_fx_hset_str(&f, "ps:cust:o", "last_event_type"),
                        "purchase");
    ps_pipeline_flushed(f.p);

    ev(&f, "o", PS_SPEND, 40 * H); /* purchase>spend; memory now full */
    ev(&f, "o", PS_CLICK, 5 * H);  /* older than all four: ignored */
    ev(&f, "o", PS_CLICK, 40 * H); /* same time as the spend: after it */
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_purchase_spend"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_click"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_spend_click"), 1);
    assert_string_equal(ps_fx_hset_str(&f, "ps:cust:o", "last_event_type"),
                        "click");
    ps_fx_clear(&f);
}

/* Shared counters: a flush that fails (no ps_pipeline_flushed) is written
 * again with the newer changes; after success only what is new. */
static void test_exactly_once(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ev(&f, "x", PS_CLICK, 1 * H);
    ev(&f, "x", PS_PURCHASE, 2 * H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 1);
    /* the transaction failed: nothing flushed */
    ev(&f, "y", PS_CLICK, 1 * H);
    ev(&f, "y", PS_PURCHASE, 2 * H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 2);
    ps_pipeline_flushed(f.p);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 0);
    ev(&f, "x", PS_CLICK, 3 * H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_purchase_click"), 1);
    /* the view is base + delta: row click still {purchase 2} */
    assert_close(ps_fx_hset(&f, "ps:global", "next_purchase_after_click"), 1, 0);
    ps_fx_clear(&f);
}

/* Bases read from Redis count in the prior but are not written again. */
static void test_base_loaded(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    ps_fx f;
    f.p = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(f.p);
    f.b = ps_batch_new("ps:");
    f.seq = 0;
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(f.p, &list);
    for (size_t i = 0; i < n; i++) {
        if (list[i]->kind == PS_KIND_GLOBAL)
            ps_pipeline_load_field(f.p, list[i], "trans_click_spend", 17,
                                   "7", 1);
        ps_pipeline_loaded(f.p, list[i]);
    }
    ev(&f, "z", PS_CLICK, 1 * H);
    ps_fx_flush(&f);
    /* global row click {spend 7}: alpha = (0, 0, 0, 10), no own counts */
    assert_next(&f, "z", 0, 0, 0, 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_spend"), 0);
    assert_close(ps_fx_hset(&f, "ps:global", "next_spend_after_click"), 1, 0);
    ps_fx_clear(&f);
}

/* The part of a saved customer state (pipeline.h format) that aggregate
 * name wrote; asserts that it is there. */
static void section(const ps_wbuf *w, const char *name,
                    const unsigned char **at, uint32_t *len)
{
    size_t i = 2, nl = strlen(name);
    assert_true(w->len >= 2);
    for (unsigned k = 0; k < w->data[1]; k++) {
        size_t l = w->data[i];
        const unsigned char *nm = w->data + i + 1;
        i += 1 + l;
        uint32_t n = (uint32_t)w->data[i] | (uint32_t)w->data[i + 1] << 8 |
                     (uint32_t)w->data[i + 2] << 16 |
                     (uint32_t)w->data[i + 3] << 24;
        i += 4;
        if (l == nl && memcmp(nm, name, nl) == 0) {
            *at = w->data + i;
            *len = n;
            return;
        }
        i += n;
    }
    fail_msg("no saved state of %s", name);
}

/* Saved state reads back as it was, and goes on the same way. */
static void test_save_load(void **state)
{
    (void)state;
    ps_fx f, g;
    int err;
    ps_fx_init(&f);
    ps_fx_init(&g);
    ev(&f, "r", PS_CLICK, 10 * H);
    ev(&f, "r", PS_WISHLIST, 20 * H);
    ev(&f, "r", PS_PURCHASE, 15 * H);
    ps_fx_event(&f, "r", PS_SPEND, NULL, 55.5, 30 * H);
    ev(&f, "r", PS_CLICK, 40 * H);
    ps_customer *r = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("r"));
    ps_wbuf w1, w2;
    ps_wbuf_init(&w1);
    ps_wbuf_init(&w2);
    ps_pipeline_save_customer(f.p, r, &w1);
    ps_customer *r2 = ps_pipeline_add(g.p, ps_fx_str("r"), w1.data, w1.len, &err);
    assert_non_null(r2);
    ps_pipeline_save_customer(g.p, r2, &w2);
    assert_int_equal(w1.len, w2.len);
    assert_memory_equal(w1.data, w2.data, w1.len);

    /* the same next event in both gives the same next_action state (the
     * other aggregates' may differ: g's partition clock starts afresh) */
    g.seq = f.seq;
    ev(&f, "r", PS_WISHLIST, 35 * H);
    ev(&g, "r", PS_WISHLIST, 35 * H);
    ps_wbuf_reset(&w1);
    ps_wbuf_reset(&w2);
    ps_pipeline_save_customer(f.p, r, &w1);
    ps_pipeline_save_customer(g.p, r2, &w2);
    const unsigned char *s1, *s2;
    uint32_t n1, n2;
    section(&w1, "next_action", &s1, &n1);
    section(&w2, "next_action", &s2, &n2);
    /* version, 16 counts, 4 remembered events (time, type, segment) */
    assert_int_equal(n1, 1 + 16 * 4 + 1 + 4 * 10);
    assert_int_equal(s1[0], 2); /* state version */
    assert_int_equal(n1, n2);
    assert_memory_equal(s1, s2, n1);

    /* a corrupt slice is refused */
    int ix = ps_pipeline_agg_index("next_action");
    assert_true(ix >= 0);
    const ps_aggregate_ops *ops = ps_aggregates[ix];
    void *slice = calloc(1, ops->state_size[PS_KIND_CUSTOMER]);
    unsigned char bad[1 + 64 + 1];
    memset(bad, 0, sizeof(bad));
    bad[0] = 1;
    bad[65] = 5; /* more remembered events than kept */
    ps_rbuf rb;
    ps_rbuf_init(&rb, bad, sizeof(bad));
    assert_int_equal(ops->load_customer(ps_pipeline_agg_self(f.p, (size_t)ix),
                                        r, slice, &rb),
                     PS_ERR_STATE);
    ps_rbuf_init(&rb, bad, 10); /* truncated */
    assert_int_equal(ops->load_customer(ps_pipeline_agg_self(f.p, (size_t)ix),
                                        r, slice, &rb),
                     PS_ERR_STATE);
    /* version 2, one event with a segment code beyond any segment */
    unsigned char bad2[1 + 64 + 1 + 10];
    memset(bad2, 0, sizeof(bad2));
    bad2[0] = 2;
    bad2[65] = 1;
    bad2[75] = 2 + 16; /* segment 16: PS_KMEANS_MAX_K is 16 */
    memset(slice, 0, ops->state_size[PS_KIND_CUSTOMER]);
    ps_rbuf_init(&rb, bad2, sizeof(bad2));
    assert_int_equal(ops->load_customer(ps_pipeline_agg_self(f.p, (size_t)ix),
                                        r, slice, &rb),
                     PS_ERR_STATE);
    bad2[75] = 2 + 15; /* segment 15: fine */
    memset(slice, 0, ops->state_size[PS_KIND_CUSTOMER]);
    ps_rbuf_init(&rb, bad2, sizeof(bad2));
    assert_int_equal(ops->load_customer(ps_pipeline_agg_self(f.p, (size_t)ix),
                                        r, slice, &rb),
                     PS_OK);
    free(slice);
    ps_wbuf_clear(&w1);
    ps_wbuf_clear(&w2);
    ps_fx_clear(&f);
    ps_fx_clear(&g);
}

/* A version-1 state (no segment per remembered event) still loads; a
 * transition out of such an event counts at the customer's current
 * segment.  k = 1, every purchase with an amount joins segment 0.
 *   v: CLICK @1 (no segment), then its next_action slice is replaced by
 *      the version-1 state of the same history: 1, 16 zero counts, 1 event
 *      (1 h, click); then PURCHASE 100 @2: v joins segment 0 and
 *      click>purchase, out of an event of unknown segment, counts at the
 *      current one, segment 0 (and globally).
 *   w: CLICK @1, PURCHASE 100 @2 with version-2 state: w had no segment
 *      after its click, so click>purchase counts globally only.
 * ps:segment:0 trans_click_purchase 1 (v), ps:global 2 (v, w).  Saved
 * again (version 2), the segment codes of the two events are v (0
 * unknown, 2 segment 0) and w (1 none, 2 segment 0). */
static void test_v1_state(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 1;
    conf.segments_batch = 1;
    ps_fx_init_conf(&f, &conf);
    int ix = ps_pipeline_agg_index("next_action");
    assert_true(ix >= 0);
    const ps_aggregate_ops *ops = ps_aggregates[ix];
    void *self = ps_pipeline_agg_self(f.p, (size_t)ix);

    ev(&f, "v", PS_CLICK, 1 * H);
    ps_customer *v = ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("v"));
    ps_wbuf w1;
    ps_wbuf_init(&w1);
    ps_wbuf_u8(&w1, 1);
    for (int k = 0; k < 16; k++)
        ps_wbuf_u32(&w1, 0);
    ps_wbuf_u8(&w1, 1);
    ps_wbuf_i64(&w1, 1 * H);
    ps_wbuf_u8(&w1, PS_CLICK);
    void *slice = ps_pipeline_slice(f.p, v, (size_t)ix);
    memset(slice, 0, ops->state_size[PS_KIND_CUSTOMER]);
    ps_rbuf rb;
    ps_rbuf_init(&rb, w1.data, w1.len);
    assert_int_equal(ops->load_customer(self, v, slice, &rb), PS_OK);
    ps_fx_event(&f, "v", PS_PURCHASE, "p", 100, 2 * H);
    ev(&f, "w", PS_CLICK, 1 * H);
    ps_fx_event(&f, "w", PS_PURCHASE, "p", 100, 2 * H);
    assert_int_equal(ps_segments_of(f.p, v), 0);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:segment:0", "trans_click_purchase"),
                     1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trans_click_purchase"), 2);

    /* saved as version 2: 1 + 64 + 1, then per event ts (8), type, seg */
    static const struct {
        const char *id;
        unsigned char seg0, seg1;
    } want[] = {{"v", 0, 2}, {"w", 1, 2}};
    for (size_t i = 0; i < 2; i++) {
        ps_customer *c =
            ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str(want[i].id));
        const unsigned char *s;
        uint32_t n;
        ps_wbuf_reset(&w1);
        ps_pipeline_save_customer(f.p, c, &w1);
        section(&w1, "next_action", &s, &n);
        assert_int_equal(n, 1 + 64 + 1 + 2 * 10);
        assert_int_equal(s[0], 2);
        assert_int_equal(s[65], 2);
        assert_int_equal(s[66 + 8], PS_CLICK);
        assert_int_equal(s[66 + 9], want[i].seg0);
        assert_int_equal(s[76 + 8], PS_PURCHASE);
        assert_int_equal(s[76 + 9], want[i].seg1);
    }
    ps_wbuf_clear(&w1);
    ps_fx_clear(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_prior),
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_segment_prior),
        cmocka_unit_test(test_segment_move),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_exactly_once),
        cmocka_unit_test(test_base_loaded),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_v1_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
