/*
 * test_story.c -- the `story` sentence of ps:cust:{id} for hand-built
 * histories, compared byte for byte with the expected text (the sentence
 * is a deterministic function of the numbers), and the reference spend
 * counters written as HINCRBY deltas.
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

#include "../../aggregates/pipeline.h"
#include "../support/pipeline_fixture.h"
#include "../../common/error.h"

#define H (3600 * 1000LL)

/* CLICK/WISHLIST/PURCHASE on product "p", SPEND of 10. */
static void ev(ps_fx *f, const char *cust, ps_event_type t, int64_t ts)
{
    ps_fx_event(f, cust, t, t == PS_SPEND ? NULL : "p", t == PS_SPEND ? 10 : -1,
           ts);
}

static void assert_story(const ps_fx *f, const char *cust, const char *want)
{
    char key[64];
    snprintf(key, sizeof(key), "ps:cust:%s", cust);
    const char *got = ps_fx_hset_str(f, key, "story");
    if (got == NULL)
        fail_msg("%s story missing", key);
    if (strcmp(got, want) != 0)
        fail_msg("%s story\n got:  %s\n want: %s", key, got, want);
}

/* One click: nothing known yet. */
static void test_new_customer(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ev(&f, "c1", PS_CLICK, 1 * H);
    ps_fx_flush(&f);
    assert_story(&f, "c1",
                 "Customer c1 is not yet segmented: no purchases, no spend "
                 "recorded; no funnel purchase yet; 1 open funnel, intent "
                 "0.50 for product p; most likely next action: click "
                 "(0.25).");
    ps_fx_clear(&f);
}

/* b: click p1, purchase p1 (100), click p2, wishlist p2, purchase p2
 * (200), purchase p3 (600, direct); o: purchase p9 (60).
 * Mean 300 vs overall (100 + 200 + 600 + 60) / 4 = 240: above (> 264).
 * Recent mean (0.49 * 100 + 0.7 * 200 + 600) / 2.19 = 360.3 > 330:
 * rising.  One success on "c" and one on "cw": the tie goes to "c".
 * Last type purchase; global row purchase {click 1, purchase 1}, own the
 * same: click (5 + 1) / 12 = 0.5, tie with purchase goes to click. */
static void test_buyer(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ps_fx_event(&f, "b", PS_CLICK, "p1", -1, 1 * H);
    ps_fx_event(&f, "b", PS_PURCHASE, "p1", 100, 2 * H);
    ps_fx_event(&f, "b", PS_CLICK, "p2", -1, 3 * H);
    ps_fx_event(&f, "b", PS_WISHLIST, "p2", -1, 4 * H);
    ps_fx_event(&f, "b", PS_PURCHASE, "p2", 200, 5 * H);
    ps_fx_event(&f, "b", PS_PURCHASE, "p3", 600, 6 * H);
    ps_fx_event(&f, "o", PS_PURCHASE, "p9", 60, 6 * H);
    ps_fx_flush(&f);
    assert_story(&f, "b",
                 "Customer b is not yet segmented: 3 purchases averaging "
                 "300, above the overall average of 240 and rising lately; "
                 "usually buys after a click; no open funnels; most likely "
                 "next action: click (0.50).");
    assert_int_equal(ps_fx_incr(&f, "ps:global", "story_spend_n"), 4);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "story_spend_cents"), 96000);
    ps_fx_clear(&f);
}

/* f: four direct purchases 900, 800, 100, 100 (mean 475); r: 2000.
 * Overall mean 3900 / 5 = 780: below (< 702).  Recent mean
 * (0.343 * 900 + 0.49 * 800 + 0.7 * 100 + 100) / 2.533 = 343.7 < 427.5:
 * falling.  Last type purchase, global and own row {purchase 3}: 1. */
static void test_falling(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    static const double amounts[4] = {900, 800, 100, 100};
    for (int i = 0; i < 4; i++)
        ps_fx_event(&f, "f", PS_PURCHASE, "p1", amounts[i], (i + 1) * H);
    ps_fx_event(&f, "r", PS_PURCHASE, "p1", 2000, 1 * H);
    ps_fx_flush(&f);
    assert_story(&f, "f",
                 "Customer f is not yet segmented: 4 purchases averaging "
                 "475, below the overall average of 780 and falling lately; "
                 "no funnel purchase yet; no open funnels; most likely next "
                 "action: purchase (1.00).");
    ps_fx_clear(&f);
}

/* One segment named "elite" (k = 1): v buys p1 for 40,000, spends 20,000,
 * clicks p2, wishlists p3; w buys p1 for 10,000.  Segment mean
 * 70,000 / 3 = 23,333; v's 30,000 is above (> 25,667); two amounts: no
 * trend yet.  Two open funnels at the global rate 0.5: the tie goes to
 * the smaller product id.  Last type wishlist: the segment's row
 * wishlist is {click 1} (alpha = (10, 0, 0, 0)), v's own the same: 1. */
static void test_segmented(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 1;
    conf.segments_batch = 1;
    conf.segments_names = "elite";
    ps_fx_init_conf(&f, &conf);
    ps_fx_event(&f, "v", PS_PURCHASE, "p1", 40000, 1 * H);
    ps_fx_event(&f, "v", PS_SPEND, NULL, 20000, 2 * H);
    ps_fx_event(&f, "v", PS_WISHLIST, "p3", -1, 3 * H);
    ps_fx_event(&f, "v", PS_CLICK, "p2", -1, 3 * H);
    ps_fx_event(&f, "v", PS_WISHLIST, "p4", -1, 4 * H);
    ps_fx_event(&f, "w", PS_PURCHASE, "p1", 10000, 1 * H);
    ps_fx_flush(&f);
    assert_story(&f, "v",
                 "Customer v is an elite shopper (segment 0): 1 purchase, 2 "
                 "payments averaging 30,000, above their segment average of "
                 "23,333, no trend yet; no funnel purchase yet; 3 open "
                 "funnels, highest intent 0.50 for product p2; most likely "
                 "next action: click (1.00).");
    assert_int_equal(ps_fx_incr(&f, "ps:segment:0", "story_spend_n"), 3);
    assert_int_equal(ps_fx_incr(&f, "ps:segment:0", "story_spend_cents"), 7000000);
    ps_fx_clear(&f);
}

/* Amounts below 100 keep their cents; the same state gives the same
 * sentence after a save/load round trip and a failed flush. */
static void test_small_amounts_and_reload(void **state)
{
    (void)state;
    ps_fx f, g;
    int err;
    ps_fx_init(&f);
    ps_fx_init(&g);
    ps_fx_event(&f, "m", PS_SPEND, NULL, 12.5, 1 * H);
    ps_fx_event(&f, "m", PS_SPEND, NULL, 12.5, 2 * H);
    ps_fx_event(&f, "m", PS_SPEND, NULL, 12.5, 3 * H);
    ps_fx_flush(&f);
    const char *want =
        "Customer m is not yet segmented: no purchases, 3 payments averaging "
        "12.50, in line with the overall average of 12.50 and steady "
        "lately; no funnel purchase yet; no open funnels; most likely next "
        "action: spend (1.00).";
    assert_story(&f, "m", want);
    ps_fx_flush(&f); /* retried after a failure: the same text */
    assert_story(&f, "m", want);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "story_spend_cents"), 3750);

    ps_wbuf w;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(
        f.p, ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("m")), &w);
    ps_customer *m2 = ps_pipeline_add(g.p, ps_fx_str("m"), w.data, w.len, &err);
    assert_non_null(m2);
    ps_wbuf_reset(&w);
    ps_pipeline_save_customer(g.p, m2, &w);
    ps_wbuf w0;
    ps_wbuf_init(&w0);
    ps_pipeline_save_customer(
        f.p, ps_pipeline_find(f.p, PS_KIND_CUSTOMER, ps_fx_str("m")), &w0);
    assert_int_equal(w.len, w0.len);
    assert_memory_equal(w.data, w0.data, w.len);
    ps_wbuf_clear(&w);
    ps_wbuf_clear(&w0);
    ps_fx_clear(&f);
    ps_fx_clear(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_customer),
        cmocka_unit_test(test_buyer),
        cmocka_unit_test(test_falling),
        cmocka_unit_test(test_segmented),
        cmocka_unit_test(test_small_amounts_and_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
