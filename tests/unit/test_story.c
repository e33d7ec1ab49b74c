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
#include "../../common/error.h"

#define H (3600 * 1000LL)

#define assert_close(a, b, tol)                                               \
    do {                                                                      \
        double a_ = (a), b_ = (b);                                            \
        if (fabs(a_ - b_) > (tol) * (1.0 + fabs(b_)))                         \
            fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);               \
    } while (0)

static ps_str S(const char *s) { return (ps_str){s, (uint32_t)strlen(s)}; }

typedef struct fx {
    ps_pipeline *p;
    ps_batch *b;
    int seq;
} fx;

static void fx_init_conf(fx *f, const ps_agg_conf *conf)
{
    char err[256];
    f->p = ps_pipeline_new(conf, err, sizeof(err));
    if (f->p == NULL)
        fail_msg("ps_pipeline_new: %s", err);
    f->b = ps_batch_new("ps:");
    f->seq = 0;
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(f->p, &list);
    for (size_t i = 0; i < n; i++)
        ps_pipeline_loaded(f->p, list[i]);
}

static void fx_init(fx *f)
{
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    fx_init_conf(f, &conf);
}

static void fx_clear(fx *f)
{
    ps_batch_destroy(f->b);
    ps_pipeline_destroy(f->p);
}

/* Apply one event (amount < 0: none). */
static void ev_amt(fx *f, const char *cust, ps_event_type t, const char *prod,
                   double amount, int64_t ts)
{
    char idbuf[32];
    ps_event e;
    int err;
    bool late;
    memset(&e, 0, sizeof(e));
    snprintf(idbuf, sizeof(idbuf), "ev%d", ++f->seq);
    e.event_id = S(idbuf);
    e.customer_id = S(cust);
    e.type = t;
    if (prod != NULL)
        e.product_id = S(prod);
    if (amount >= 0) {
        e.has_amount = true;
        e.amount = amount;
    }
    e.ts = ts;
    ps_customer *c = ps_pipeline_find(f->p, PS_KIND_CUSTOMER, e.customer_id);
    if (c == NULL)
        c = ps_pipeline_add(f->p, e.customer_id, NULL, 0, &err);
    assert_non_null(c);
    assert_int_equal(ps_pipeline_apply(f->p, &e, c, &late), 0);
    assert_int_equal(ps_pipeline_advance(f->p, 0), 0);
}

/* CLICK/WISHLIST/PURCHASE on product "p", SPEND of 10. */
static void ev(fx *f, const char *cust, ps_event_type t, int64_t ts)
{
    ev_amt(f, cust, t, t == PS_SPEND ? NULL : "p", t == PS_SPEND ? 10 : -1,
           ts);
}

static void flush(fx *f)
{
    ps_batch_clear(f->b);
    ps_pipeline_write(f->p, f->b);
}

static long long incr(const fx *f, const char *key, const char *field)
{
    const char *argv[8];
    size_t lens[8];
    long long total = 0;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        if (ps_batch_argc(f->b, i) != 4)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "HINCRBY") == 0 && strcmp(argv[1], key) == 0 &&
            strcmp(argv[2], field) == 0)
            total += strtoll(argv[3], NULL, 10);
    }
    return total;
}

/* Text of field in the last HSET of key, or NULL. */
static const char *hset_str(const fx *f, const char *key, const char *field)
{
    static const char *argv[256];
    size_t lens[256];
    const char *v = NULL;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 256)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "HSET") != 0 || strcmp(argv[1], key) != 0)
            continue;
        for (size_t a = 2; a + 1 < argc; a += 2)
            if (strcmp(argv[a], field) == 0)
                v = argv[a + 1];
    }
    return v;
}

static void assert_story(const fx *f, const char *cust, const char *want)
{
    char key[64];
    snprintf(key, sizeof(key), "ps:cust:%s", cust);
    const char *got = hset_str(f, key, "story");
    if (got == NULL)
        fail_msg("%s story missing", key);
    if (strcmp(got, want) != 0)
        fail_msg("%s story\n got:  %s\n want: %s", key, got, want);
}

/* One click: nothing known yet. */
static void test_new_customer(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    ev(&f, "c1", PS_CLICK, 1 * H);
    flush(&f);
    assert_story(&f, "c1",
                 "Customer c1 is not yet segmented: no purchases, no spend "
                 "recorded; no funnel purchase yet; 1 open funnel, intent "
                 "0.50 for product p; most likely next action: click "
                 "(0.25).");
    fx_clear(&f);
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
    fx f;
    fx_init(&f);
    ev_amt(&f, "b", PS_CLICK, "p1", -1, 1 * H);
    ev_amt(&f, "b", PS_PURCHASE, "p1", 100, 2 * H);
    ev_amt(&f, "b", PS_CLICK, "p2", -1, 3 * H);
    ev_amt(&f, "b", PS_WISHLIST, "p2", -1, 4 * H);
    ev_amt(&f, "b", PS_PURCHASE, "p2", 200, 5 * H);
    ev_amt(&f, "b", PS_PURCHASE, "p3", 600, 6 * H);
    ev_amt(&f, "o", PS_PURCHASE, "p9", 60, 6 * H);
    flush(&f);
    assert_story(&f, "b",
                 "Customer b is not yet segmented: 3 purchases averaging "
                 "300, above the overall average of 240 and rising lately; "
                 "usually buys after a click; no open funnels; most likely "
                 "next action: click (0.50).");
    assert_int_equal(incr(&f, "ps:global", "story_spend_n"), 4);
    assert_int_equal(incr(&f, "ps:global", "story_spend_cents"), 96000);
    fx_clear(&f);
}

/* f: four direct purchases 900, 800, 100, 100 (mean 475); r: 2000.
 * Overall mean 3900 / 5 = 780: below (< 702).  Recent mean
 * (0.343 * 900 + 0.49 * 800 + 0.7 * 100 + 100) / 2.533 = 343.7 < 427.5:
 * falling.  Last type purchase, global and own row {purchase 3}: 1. */
static void test_falling(void **state)
{
    (void)state;
    fx f;
    fx_init(&f);
    static const double amounts[4] = {900, 800, 100, 100};
    for (int i = 0; i < 4; i++)
        ev_amt(&f, "f", PS_PURCHASE, "p1", amounts[i], (i + 1) * H);
    ev_amt(&f, "r", PS_PURCHASE, "p1", 2000, 1 * H);
    flush(&f);
    assert_story(&f, "f",
                 "Customer f is not yet segmented: 4 purchases averaging "
                 "475, below the overall average of 780 and falling lately; "
                 "no funnel purchase yet; no open funnels; most likely next "
                 "action: purchase (1.00).");
    fx_clear(&f);
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
    fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 1;
    conf.segments_batch = 1;
    conf.segments_names = "elite";
    fx_init_conf(&f, &conf);
    ev_amt(&f, "v", PS_PURCHASE, "p1", 40000, 1 * H);
    ev_amt(&f, "v", PS_SPEND, NULL, 20000, 2 * H);
    ev_amt(&f, "v", PS_WISHLIST, "p3", -1, 3 * H);
    ev_amt(&f, "v", PS_CLICK, "p2", -1, 3 * H);
    ev_amt(&f, "v", PS_WISHLIST, "p4", -1, 4 * H);
    ev_amt(&f, "w", PS_PURCHASE, "p1", 10000, 1 * H);
    flush(&f);
    assert_story(&f, "v",
                 "Customer v is an elite shopper (segment 0): 1 purchase, 2 "
                 "payments averaging 30,000, above their segment average of "
                 "23,333, no trend yet; no funnel purchase yet; 3 open "
                 "funnels, highest intent 0.50 for product p2; most likely "
                 "next action: click (1.00).");
    assert_int_equal(incr(&f, "ps:segment:0", "story_spend_n"), 3);
    assert_int_equal(incr(&f, "ps:segment:0", "story_spend_cents"), 7000000);
    fx_clear(&f);
}

/* Amounts below 100 keep their cents; the same state gives the same
 * sentence after a save/load round trip and a failed flush. */
static void test_small_amounts_and_reload(void **state)
{
    (void)state;
    fx f, g;
    int err;
    fx_init(&f);
    fx_init(&g);
    ev_amt(&f, "m", PS_SPEND, NULL, 12.5, 1 * H);
    ev_amt(&f, "m", PS_SPEND, NULL, 12.5, 2 * H);
    ev_amt(&f, "m", PS_SPEND, NULL, 12.5, 3 * H);
    flush(&f);
    const char *want =
        "Customer m is not yet segmented: no purchases, 3 payments averaging "
        "12.50, in line with the overall average of 12.50 and steady "
        "lately; no funnel purchase yet; no open funnels; most likely next "
        "action: spend (1.00).";
    assert_story(&f, "m", want);
    flush(&f); /* retried after a failure: the same text */
    assert_story(&f, "m", want);
    assert_int_equal(incr(&f, "ps:global", "story_spend_cents"), 3750);

    ps_wbuf w;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(
        f.p, ps_pipeline_find(f.p, PS_KIND_CUSTOMER, S("m")), &w);
    ps_customer *m2 = ps_pipeline_add(g.p, S("m"), w.data, w.len, &err);
    assert_non_null(m2);
    ps_wbuf_reset(&w);
    ps_pipeline_save_customer(g.p, m2, &w);
    ps_wbuf w0;
    ps_wbuf_init(&w0);
    ps_pipeline_save_customer(
        f.p, ps_pipeline_find(f.p, PS_KIND_CUSTOMER, S("m")), &w0);
    assert_int_equal(w.len, w0.len);
    assert_memory_equal(w.data, w0.data, w.len);
    ps_wbuf_clear(&w);
    ps_wbuf_clear(&w0);
    fx_clear(&f);
    fx_clear(&g);
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
