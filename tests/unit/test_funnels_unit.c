/*
 * test_funnels_unit.c -- funnels, dedup, watermark and triggers through
 * the pipeline, on hand-built histories with hand-computed outcomes.
 *
 * Each case applies events to a fresh pipeline, writes a flush into a
 * ps_batch and reads the written values back from it: trials and
 * successes per level and path (HINCRBY deltas), customer fields (HSET),
 * posterior means ((1 + s) / (2 + n) under the flat prior) and trigger
 * entries (XADD ps:triggers).
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

#include "../../aggregates/beta.h"
#include "../../aggregates/pipeline.h"
#include "../support/pipeline_fixture.h"

#define H (3600 * 1000LL)
#define DAY (24 * H)

static void fx_init(ps_fx *f, double threshold)
{
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.intent_threshold = threshold;
    ps_fx_init_conf(f, &conf);
}

/* Apply one event; id NULL = a fresh id.  Returns the pipeline's result. */
static int ev_full(ps_fx *f, const char *id, const char *cust,
                   ps_event_type t, const char *prod, const char *campaign,
                   int64_t ts, uint32_t part, bool *late_out)
{
    char idbuf[32];
    ps_event e;
    memset(&e, 0, sizeof(e));
    if (id == NULL) {
        snprintf(idbuf, sizeof(idbuf), "ev%d", f->seq + 1);
        id = idbuf;
    }
    e.event_id = ps_fx_str(id);
    e.customer_id = ps_fx_str(cust);
    e.type = t;
    if (prod != NULL)
        e.product_id = ps_fx_str(prod);
    if (campaign != NULL)
        e.campaign = ps_fx_str(campaign);
    if (t == PS_SPEND) {
        e.has_amount = true;
        e.amount = 10;
    }
    e.ts = ts;
    e.part = part;
    ps_customer *c = ps_fx_customer(f, cust);
    bool late = false;
    int rc = ps_pipeline_apply(f->p, &e, c, &late);
    assert_int_equal(ps_pipeline_advance(f->p, 0), 0);
    f->seq++;
    if (late_out)
        *late_out = late;
    return rc;
}

static void ev(ps_fx *f, const char *cust, ps_event_type t, const char *prod,
               int64_t ts)
{
    assert_int_equal(ev_full(f, NULL, cust, t, prod, NULL, ts, 0, NULL), 0);
}

/* Number of XADD ps:triggers entries of type (and with cause if given). */
static int triggers(const ps_fx *f, const char *type, const char *cause)
{
    const char *argv[64];
    size_t lens[64];
    int n = 0;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 64)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "XADD") != 0 || strcmp(argv[1], "ps:triggers"))
            continue;
        bool t_ok = false, c_ok = cause == NULL;
        for (size_t a = 6; a + 1 < argc; a += 2) {
            if (strcmp(argv[a], "type") == 0 && strcmp(argv[a + 1], type) == 0)
                t_ok = true;
            if (cause && strcmp(argv[a], "cause") == 0 &&
                strcmp(argv[a + 1], cause) == 0)
                c_ok = true;
        }
        n += t_ok && c_ok;
    }
    return n;
}

/* A click then a purchase 1 h later: one successful "c" trial at every
 * level; the posterior is Beta(2, 1). */
static void test_success(void **state)
{
    (void)state;
    ps_fx f;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_CLICK, "p1", 10 * H);
    ev(&f, "a", PS_PURCHASE, "p1", 11 * H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "successes"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_c"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:p1", "successes_c"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:p1", "direct_purchases"), 0);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "trials"), 1, 0);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "successes"), 1, 0);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "p_purchase"), 2.0 / 3.0, 1e-9);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "alpha"), 2, 0);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "beta"), 1, 0);
    assert_close(ps_fx_hset(&f, "ps:global", "p_purchase"), 2.0 / 3.0, 1e-9);
    /* Beta(2,1): CDF x^2, so the 2.5 % point is sqrt(0.025) */
    assert_close(ps_fx_hset(&f, "ps:global", "p_purchase_lo"), sqrt(0.025), 1e-6);
    assert_close(ps_fx_hset(&f, "ps:global", "p_purchase_hi"), sqrt(0.975), 1e-6);
    ps_fx_clear(&f);
}

/* A wishlist never bought: the funnel stays open until the partition's
 * watermark (max ts - 1 h lateness) passes open + 7 days; then one failed
 * "w" trial and exactly one wishlist_abandoned, caused by the event that
 * moved the watermark. */
static void test_expiry_and_abandoned(void **state)
{
    (void)state;
    ps_fx f;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_WISHLIST, "p1", 0);
    ev(&f, "a", PS_CLICK, "p2", 0);
    /* watermark = 7 d - 1 ms: not yet past open + 7 d */
    ev(&f, "b", PS_SPEND, NULL, 7 * DAY + H - 1);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 0);
    assert_int_equal(triggers(&f, "wishlist_abandoned", NULL), 0);
    ps_pipeline_flushed(f.p);

    assert_int_equal(ev_full(&f, "mover", "b", PS_SPEND, NULL, NULL,
                             7 * DAY + H + 1, 0, NULL),
                     0);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 2);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "successes"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_w"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_c"), 1);
    assert_int_equal(triggers(&f, "wishlist_abandoned", "mover"), 1);
    assert_int_equal(triggers(&f, "wishlist_abandoned", NULL), 1);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "trials"), 2, 0);
    ps_pipeline_flushed(f.p);
    /* nothing fires twice */
    ev(&f, "b", PS_SPEND, NULL, 30 * DAY);
    ps_fx_flush(&f);
    assert_int_equal(triggers(&f, "wishlist_abandoned", NULL), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 0);
    ps_fx_clear(&f);
}

/* A purchase with no open funnel is direct (no trial); one more than
 * 7 days after the click also ends that funnel as a failure first. */
static void test_direct_and_out_of_window(void **state)
{
    (void)state;
    ps_fx f;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_PURCHASE, "p1", 10 * H);
    ev(&f, "a", PS_CLICK, "p2", 0);
    ev(&f, "a", PS_PURCHASE, "p2", 8 * DAY); /* window over */
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "direct_purchases"), 2);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "successes"), 0);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "direct_purchases"), 2, 0);
    ps_fx_clear(&f);
}

/* Paths: wishlist then click is "cw" with the wishlist first; the click
 * carries a campaign but did not open the funnel, so no campaign trial. */
static void test_paths_and_campaign(void **state)
{
    (void)state;
    ps_fx f;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_WISHLIST, "p1", 0);
    assert_int_equal(
        ev_full(&f, NULL, "a", PS_CLICK, "p1", "spring", H, 0, NULL), 0);
    ev(&f, "a", PS_PURCHASE, "p1", 2 * H);
    assert_int_equal(
        ev_full(&f, NULL, "b", PS_CLICK, "p1", "spring", H, 0, NULL), 0);
    ev(&f, "b", PS_PURCHASE, "p1", 2 * H);
    ev(&f, "c", PS_CLICK, "p2", H);
    ev(&f, "c", PS_WISHLIST, "p2", 2 * H);
    ev(&f, "c", PS_PURCHASE, "p2", 3 * H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_cw"), 2);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "successes_cw"), 2);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_c"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:campaign:spring", "trials"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:campaign:spring", "successes"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:campaign:spring", "clicks"), 2);
    /* P(wishlist | click first) for p2: one of one, flat mean 2/3 */
    assert_int_equal(ps_fx_incr(&f, "ps:prod:p2", "funnels_click_first"), 1);
    assert_close(ps_fx_hset(&f, "ps:prod:p2", "p_wishlist_after_click"), 2.0 / 3.0,
                 1e-9);
    /* Bayes: P(C) = 1/3, P(B|C) = 2/3 (1 of 1), P(B|not C) = 3/4 (2 of 2) */
    double pc = 1.0 / 3, pbc = 2.0 / 3, pbn = 3.0 / 4;
    assert_close(ps_fx_hset(&f, "ps:campaign:spring", "p_campaign_given_purchase"),
                 pbc * pc / (pbc * pc + pbn * (1 - pc)), 1e-9);
    ps_fx_clear(&f);
}

/* Out of order within the lateness: a wishlist older than the click that
 * opened the funnel becomes its first step and its open time; a click
 * older than a direct purchase turns it into a successful trial. */
static void test_out_of_order(void **state)
{
    (void)state;
    ps_fx f;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_CLICK, "p1", 30 * 60 * 1000LL);
    bool late = true;
    assert_int_equal(ev_full(&f, NULL, "a", PS_WISHLIST, "p1", NULL,
                             10 * 60 * 1000LL, 0, &late),
                     0);
    assert_false(late); /* 20 min back is within the 1 h lateness */
    ev(&f, "a", PS_PURCHASE, "p2", 5 * H);
    ev(&f, "a", PS_CLICK, "p2", 4 * H + 30 * 60 * 1000LL);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "direct_purchases"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_c"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "successes_c"), 1);
    /* p1's funnel is open with path cw, wishlist first */
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_cw"), 0);
    ps_pipeline_flushed(f.p);
    ev(&f, "b", PS_SPEND, NULL, 10 * DAY);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_cw"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "funnels_click_first"), 0);
    ps_fx_clear(&f);
}

/* Duplicates are dropped before any aggregate counts them; late events
 * (older than the watermark) are flagged and still counted. */
static void test_dup_and_late(void **state)
{
    (void)state;
    ps_fx f;
    bool late;
    fx_init(&f, 0.5);
    assert_int_equal(
        ev_full(&f, "x1", "a", PS_CLICK, "p1", NULL, 5 * H, 0, &late), 0);
    assert_int_equal(
        ev_full(&f, "x1", "a", PS_CLICK, "p1", NULL, 5 * H, 0, &late),
        PS_AGG_DROP);
    /* same id for another customer is not a duplicate */
    assert_int_equal(
        ev_full(&f, "x1", "b", PS_CLICK, "p1", NULL, 5 * H, 0, &late), 0);
    assert_int_equal(
        ev_full(&f, NULL, "a", PS_WISHLIST, "p3", NULL, 2 * H, 0, &late), 0);
    assert_true(late); /* 3 h back: beyond the 1 h lateness */
    ps_fx_flush(&f);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "events"), 2, 0);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "clicks"), 1, 0);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:p1", "clicks"), 2);
    /* an event id forgotten after the 24 h horizon applies again */
    ev(&f, "a", PS_SPEND, NULL, 3 * DAY);
    assert_int_equal(
        ev_full(&f, "x1", "a", PS_CLICK, "p1", NULL, 3 * DAY, 0, &late), 0);
    ps_fx_clear(&f);
}

/* high_intent: once p1 has converted on path c (1 of 1, mean 2/3), a new
 * click on p1 crosses 0.5 and fires once, caused by that click; more
 * events of the same funnel do not fire again.  With no data (0.5 from the
 * flat prior) nothing fires. */
static void test_high_intent(void **state)
{
    (void)state;
    ps_fx f;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_CLICK, "p1", H);
    ps_fx_flush(&f);
    assert_int_equal(triggers(&f, "high_intent", NULL), 0);
    ev(&f, "a", PS_PURCHASE, "p1", 2 * H);
    assert_int_equal(
        ev_full(&f, "hot", "b", PS_CLICK, "p1", NULL, 3 * H, 0, NULL), 0);
    ev(&f, "b", PS_CLICK, "p1", 4 * H);
    ps_fx_flush(&f);
    assert_int_equal(triggers(&f, "high_intent", "hot"), 1);
    assert_int_equal(triggers(&f, "high_intent", NULL), 1);
    ps_fx_clear(&f);
}

/* A customer saved with an open funnel and loaded into a new pipeline
 * converts it there (state round trip). */
static void test_open_funnel_survives_reload(void **state)
{
    (void)state;
    ps_fx f, g;
    ps_wbuf w;
    int err;
    fx_init(&f, 0.5);
    ev(&f, "a", PS_WISHLIST, "p1", H);
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(
        f.p, ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("a")), &w);

    fx_init(&g, 0.5);
    assert_non_null(ps_pipeline_add(g.p, ps_fx_str("a"), w.data, w.len, &err));
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(g.p, &list); /* p1, from the funnel */
    assert_int_equal(n, 1);
    ps_pipeline_loaded(g.p, list[0]);
    /* (an id of its own: "ev1" is in a's restored dedup state) */
    assert_int_equal(
        ev_full(&g, "buy", "a", PS_PURCHASE, "p1", NULL, 2 * H, 0, NULL), 0);
    assert_int_equal(
        ev_full(&g, "ev1", "a", PS_CLICK, "p1", NULL, 2 * H, 0, NULL),
        PS_AGG_DROP);
    ps_fx_flush(&g);
    assert_int_equal(ps_fx_incr(&g, "ps:global", "successes_w"), 1);
    assert_int_equal(ps_fx_incr(&g, "ps:global", "direct_purchases"), 0);
    /* the intent zset is rewritten without the closed funnel */
    ps_wbuf_clear(&w);
    ps_fx_clear(&f);
    ps_fx_clear(&g);
}

/* An idle partition does not hold back the global watermark, and its
 * funnels follow the global watermark. */
static void test_idle_partition(void **state)
{
    (void)state;
    ps_fx f;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.idle_partition_ms = 1000;
    f.p = ps_pipeline_new(&conf, err, sizeof(err));
    f.b = ps_batch_new("ps:");
    f.seq = 0;
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(f.p, &list);
    for (size_t i = 0; i < n; i++)
        ps_pipeline_loaded(f.p, list[i]);

    /* partition 1 gets one click at wall time 0, then goes quiet */
    assert_int_equal(ev_full(&f, NULL, "q", PS_CLICK, "p9", NULL, H, 1, NULL),
                     0);
    /* partition 0 moves on in event time */
    assert_int_equal(ev_full(&f, NULL, "a", PS_SPEND, NULL, NULL, 30 * DAY, 0,
                             NULL),
                     0);
    assert_int_equal(ps_pipeline_advance(f.p, 500), 0);
    assert_true(ps_pipeline_global_watermark(f.p) <= 0); /* held back */
    assert_int_equal(ps_pipeline_advance(f.p, 5000), 0); /* 1 is idle now */
    assert_int_equal(ps_pipeline_global_watermark(f.p), 30 * DAY - H);
    assert_int_equal(ps_pipeline_watermark(f.p, 1), 30 * DAY - H);
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials_c"), 1); /* expired */
    ps_fx_clear(&f);
}

/* Forgetting: with a one-day half-life, a success two days old weighs
 * 2^-2 = 0.25 when the next trial is counted: trials 1.25. */
static void test_forgetting(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.half_life_ms = (double)DAY;
    ps_fx_init_conf(&f, &conf);
    ev(&f, "a", PS_CLICK, "p1", 0);
    ev(&f, "a", PS_PURCHASE, "p1", 0);
    ev(&f, "a", PS_CLICK, "p2", 2 * DAY);
    ev(&f, "a", PS_PURCHASE, "p2", 2 * DAY);
    ps_fx_flush(&f);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "trials"), 1.25, 1e-9);
    assert_close(ps_fx_hset(&f, "ps:cust:a", "successes"), 1.25, 1e-9);
    /* shared levels keep plain counts */
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 2);
    ps_fx_clear(&f);
}

/* Empirical prior: a customer with no trials starts at the global rate
 * (flat global mean (1+1)/(4+2) = 1/3 with 1 success in 4), not at 0.5;
 * Beta(10/3, 20/3) with the default strength 10. */
static void test_empirical_prior(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.prior_empirical = 1;
    ps_fx_init_conf(&f, &conf);
    ev(&f, "a", PS_CLICK, "p1", 0);
    ev(&f, "a", PS_PURCHASE, "p1", H);
    for (int i = 2; i <= 4; i++) {
        char prod[8];
        snprintf(prod, sizeof(prod), "p%d", i);
        ev(&f, "a", PS_CLICK, prod, 0);
    }
    ev(&f, "z", PS_SPEND, NULL, 9 * DAY); /* the three expire */
    ps_fx_flush(&f);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "trials"), 4);
    assert_close(ps_fx_hset(&f, "ps:cust:z", "p_purchase"), 1.0 / 3.0, 1e-9);
    assert_close(ps_fx_hset(&f, "ps:cust:z", "alpha"), 10.0 / 3.0, 1e-9);
    assert_close(ps_fx_hset(&f, "ps:cust:z", "beta"), 20.0 / 3.0, 1e-9);
    ps_fx_clear(&f);
}

/* Segment level: once segments exist (a tiny k-means, batch 4), a trial
 * of a customer with a segment is counted at ps:segment:{its segment}. */
static void test_segment_level(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 4;
    ps_fx_init_conf(&f, &conf);
    static const double amounts[] = {10000, 20000, 60000, 61000, 30000};
    char cust[8];
    /* purchases with amounts feed the features */
    for (int i = 0; i < 5; i++) {
        ps_event e;
        bool late;
        int err;
        char eid[16];
        snprintf(cust, sizeof(cust), "s%d", i);
        snprintf(eid, sizeof(eid), "amt%d", i);
        memset(&e, 0, sizeof(e));
        e.event_id = ps_fx_str(eid);
        e.customer_id = ps_fx_str(cust);
        e.type = PS_PURCHASE;
        e.product_id = ps_fx_str("py");
        e.has_amount = true;
        e.amount = amounts[i];
        e.ts = 2 * H;
        ps_customer *c = ps_pipeline_add(f.p, e.customer_id, NULL, 0, &err);
        assert_non_null(c);
        assert_int_equal(ps_pipeline_apply(f.p, &e, c, &late), 0);
    }
    ev(&f, "s4", PS_CLICK, "pz", 3 * H);
    ev(&f, "s4", PS_PURCHASE, "pz", 4 * H);
    ps_fx_flush(&f);
    double seg = ps_fx_hset(&f, "ps:cust:s4", "segment");
    assert_false(isnan(seg));
    char key[32];
    snprintf(key, sizeof(key), "ps:segment:%d", (int)seg);
    assert_int_equal(ps_fx_incr(&f, key, "trials"), 1);
    assert_int_equal(ps_fx_incr(&f, key, "successes"), 1);
    assert_close(ps_fx_hset(&f, key, "p_purchase"), 2.0 / 3.0, 1e-9);
    ps_fx_clear(&f);
}

int main(void)
{
    ps_beta_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_expiry_and_abandoned),
        cmocka_unit_test(test_direct_and_out_of_window),
        cmocka_unit_test(test_paths_and_campaign),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_dup_and_late),
        cmocka_unit_test(test_high_intent),
        cmocka_unit_test(test_open_funnel_survives_reload),
        cmocka_unit_test(test_idle_partition),
        cmocka_unit_test(test_forgetting),
        cmocka_unit_test(test_empirical_prior),
        cmocka_unit_test(test_segment_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
