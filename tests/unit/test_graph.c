/*
 * test_graph.c -- the behaviour graph aggregate through the pipeline, on
 * hand-built histories with hand-computed outcomes: step probabilities and
 * reverse-path products, path mix per segment, edge eviction under
 * graph_max_edges (product totals unchanged), memory per edge, the saved
 * state round trip, and exactly-once ps:paths entries across a failed and
 * retried flush.
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
#include "../../aggregates/graph.h"
#include "../../aggregates/pipeline.h"
#include "../support/pipeline_fixture.h"

#define H (3600 * 1000LL)
#define DAY (24 * H)
#define T0 (1000 * DAY)

/* One event; amount 0: none.  New shared entities load from an empty
 * Redis right away. */
static void ev_amount(ps_fx *f, const char *cust, ps_event_type t,
                      const char *prod, int64_t ts, double amount)
{
    ps_fx_event(f, cust, t, prod, amount > 0 ? amount : -1, ts);
    ps_fx_mark_loaded(f);
}

static void ev(ps_fx *f, const char *cust, ps_event_type t, const char *prod,
               int64_t ts)
{
    ev_amount(f, cust, t, prod, ts, t == PS_SPEND ? 10 : 0);
}

static ps_entity *product(ps_fx *f, const char *id)
{
    ps_entity *e = ps_pipeline_find(f->p, PS_KIND_PRODUCT, ps_fx_str(id));
    assert_non_null(e);
    return e;
}

/* One XADD ps:paths entry, fields copied out of the batch. */
typedef struct path_entry {
    char customer[32], product[32], path[64], steps[64];
    double p;
} path_entry;

/* The ps:paths entries of the batch, in order; returns how many. */
static int paths(const ps_fx *f, path_entry *out, int max)
{
    const char *argv[32];
    size_t lens[32];
    int n = 0;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 32)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "XADD") != 0 || strcmp(argv[1], "ps:paths") != 0)
            continue;
        assert_string_equal(argv[2], "MAXLEN");
        if (n < max) {
            path_entry *e = &out[n];
            memset(e, 0, sizeof(*e));
            for (size_t a = 6; a + 1 < argc; a += 2) {
                const char *k = argv[a], *v = argv[a + 1];
                if (strcmp(k, "customer") == 0)
                    snprintf(e->customer, sizeof(e->customer), "%s", v);
                else if (strcmp(k, "product") == 0)
                    snprintf(e->product, sizeof(e->product), "%s", v);
                else if (strcmp(k, "path") == 0)
                    snprintf(e->path, sizeof(e->path), "%s", v);
                else if (strcmp(k, "steps") == 0)
                    snprintf(e->steps, sizeof(e->steps), "%s", v);
                else if (strcmp(k, "p") == 0)
                    e->p = strtod(v, NULL);
            }
        }
        n++;
    }
    return n;
}

/*
 * Product P.  Three episodes fail first (the watermark passes their
 * window): c5 click only, c6 click then wishlist, c7 wishlist only.  Then
 * four succeed, each checked with the counts as of its own success
 * (flat prior: (1 + k) / (2 + n)):
 *   c1 click>purchase:          click_first 3, purchase_click_only 1
 *                               -> p = 2/5 = 0.4
 *   c2 click>wishlist>purchase: click_first 4, wishlist_after_click 2,
 *                               both 2, purchased 1
 *                               -> 3/6 * 2/4 = 0.5 * 0.5 = 0.25
 *   c3 wishlist>purchase:       wishlist_first = trials_w 2 + (both 2 -
 *                               wishlist_after_click 2) = 2, purchased 1
 *                               -> 2/4 = 0.5
 *   c4 wishlist>click>purchase: both 3, click_after_wishlist 1,
 *                               wishlist_first 3, both purchased 2
 *                               -> 2/5 * 3/5 = 0.4 * 0.6 = 0.24
 */
static void history(ps_fx *f)
{
    ev(f, "c5", PS_CLICK, "P", T0);
    ev(f, "c6", PS_CLICK, "P", T0);
    ev(f, "c6", PS_WISHLIST, "P", T0 + H);
    ev(f, "c7", PS_WISHLIST, "P", T0);
    ev(f, "c8", PS_SPEND, NULL, T0 + 8 * DAY + 2 * H); /* expires them */
    int64_t t1 = T0 + 9 * DAY;
    ev(f, "c1", PS_CLICK, "P", t1);
    ev(f, "c1", PS_PURCHASE, "P", t1 + H);
    ev(f, "c2", PS_CLICK, "P", t1);
    ev(f, "c2", PS_WISHLIST, "P", t1 + H);
    ev(f, "c2", PS_PURCHASE, "P", t1 + 2 * H);
    ev(f, "c3", PS_WISHLIST, "P", t1);
    ev(f, "c3", PS_PURCHASE, "P", t1 + H);
    ev(f, "c4", PS_WISHLIST, "P", t1);
    ev(f, "c4", PS_CLICK, "P", t1 + H);
    ev(f, "c4", PS_PURCHASE, "P", t1 + 2 * H);
}

static void test_steps_and_paths(void **state)
{
    (void)state;
    ps_fx f;
    path_entry pe[8];
    ps_fx_init(&f);
    history(&f);
    ps_fx_flush(&f);

    assert_int_equal(paths(&f, pe, 8), 4);
    static const char *const want_cust[4] = {"c1", "c2", "c3", "c4"};
    static const char *const want_path[4] = {
        "click>purchase", "click>wishlist>purchase", "wishlist>purchase",
        "wishlist>click>purchase"};
    static const char *const want_steps[4] = {"0.4", "0.5,0.5", "0.5",
                                              "0.4,0.6"};
    static const double want_p[4] = {0.4, 0.25, 0.5, 0.24};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(pe[i].customer, want_cust[i]);
        assert_string_equal(pe[i].product, "P");
        assert_string_equal(pe[i].path, want_path[i]);
        assert_string_equal(pe[i].steps, want_steps[i]);
        assert_close(pe[i].p, want_p[i], 1e-9);
    }

    /* final product fields: click_first 4, wishlist_after_click 2,
     * click only purchased 1; wishlist_first 3, click_after_wishlist 1,
     * wishlist only purchased 1; both 3, purchased 2 */
    assert_close(ps_fx_hset(&f, "ps:prod:P", "p_wishlist_after_click"), 3.0 / 6,
                 1e-9);
    assert_close(ps_fx_hset(&f, "ps:prod:P", "p_purchase_click_only"), 2.0 / 6,
                 1e-9);
    assert_close(ps_fx_hset(&f, "ps:prod:P", "p_click_after_wishlist"), 2.0 / 5,
                 1e-9);
    assert_close(ps_fx_hset(&f, "ps:prod:P", "p_purchase_wishlist_first"), 2.0 / 5,
                 1e-9);
    assert_close(ps_fx_hset(&f, "ps:prod:P", "p_purchase_click_wishlist"), 3.0 / 5,
                 1e-9);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:P", "funnels_wishlist_first"), 3);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:P", "click_after_wishlist"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:P", "funnels_click_first"), 4);
    assert_int_equal(ps_fx_incr(&f, "ps:prod:P", "wishlist_after_click"), 2);

    ps_graph_steps s;
    ps_graph_steps_of(f.p, product(&f, "P"), &s);
    assert_int_equal(s.click_first, 4);
    assert_int_equal(s.wishlist_first, 3);
    assert_int_equal(s.both, 3);

    assert_string_equal(ps_fx_hset_str(&f, "ps:cust:c4", "last_path"),
                        "wishlist>click>purchase");
    assert_close(ps_fx_hset(&f, "ps:cust:c4", "last_path_p"), 0.24, 1e-9);
    assert_string_equal(ps_fx_hset_str(&f, "ps:cust:c1", "last_path"),
                        "click>purchase");
    assert_null(ps_fx_hset_str(&f, "ps:cust:c5", "last_path"));

    for (int i = 0; i < 4; i++) {
        char field[64];
        snprintf(field, sizeof(field), "path_%s", want_path[i]);
        assert_int_equal(ps_fx_incr(&f, "ps:global", field), 1);
    }

    /* the edges: c2 -> P has one event of each action */
    ps_graph_edge e;
    assert_true(ps_graph_edge_of(f.p, ps_fx_customer(&f, "c2"), product(&f, "P"),
                                 &e));
    assert_int_equal(e.count[0], 1);
    assert_int_equal(e.count[1], 1);
    assert_int_equal(e.count[2], 1);
    assert_true(e.last_ts[2] == T0 + 9 * DAY + 2 * H);
    int64_t tot[3];
    ps_graph_product_totals(f.p, product(&f, "P"), tot);
    assert_true(tot[0] == 5 && tot[1] == 5 && tot[2] == 4);
    ps_fx_clear(&f);
}

/* A direct purchase, then a late click before it: funnels turns it into
 * a success at the click, and that is a click>purchase path too. */
static void test_late_click_path(void **state)
{
    (void)state;
    ps_fx f;
    path_entry pe[4];
    ps_fx_init(&f);
    ev(&f, "a", PS_PURCHASE, "Q", T0 + H);
    ps_fx_flush(&f);
    assert_int_equal(paths(&f, pe, 4), 0);
    ev(&f, "a", PS_CLICK, "Q", T0);
    ps_fx_flush(&f);
    assert_int_equal(paths(&f, pe, 4), 1);
    assert_string_equal(pe[0].path, "click>purchase");
    assert_close(pe[0].p, 2.0 / 3, 1e-9);
    ps_fx_clear(&f);
}

/* The path mix is counted at the customer's segment. */
static void test_segment_mix(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 4;
    ps_fx_init_conf(&f, &conf);
    static const double amounts[] = {10000, 20000, 60000, 61000, 30000};
    for (int i = 0; i < 5; i++) {
        char cust[8];
        snprintf(cust, sizeof(cust), "s%d", i);
        ev_amount(&f, cust, PS_PURCHASE, "py", 2 * H, amounts[i]);
    }
    ev(&f, "s4", PS_WISHLIST, "pz", 3 * H);
    ev(&f, "s4", PS_PURCHASE, "pz", 4 * H);
    ps_fx_flush(&f);
    double seg = ps_fx_hset(&f, "ps:cust:s4", "segment");
    assert_false(isnan(seg));
    char key[32];
    snprintf(key, sizeof(key), "ps:segment:%d", (int)seg);
    assert_int_equal(ps_fx_incr(&f, key, "path_wishlist>purchase"), 1);
    assert_int_equal(ps_fx_incr(&f, key, "path_click>purchase"), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "path_wishlist>purchase"), 1);
    ps_fx_clear(&f);
}

/* Edges beyond graph_max_edges are evicted, least recently used first and
 * never the current customer's; product totals do not move. */
static void test_eviction(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.graph_max_edges = 4;
    ps_fx_init_conf(&f, &conf);
    ev(&f, "old", PS_CLICK, "p1", T0);
    ev(&f, "old", PS_CLICK, "p2", T0);
    ev(&f, "old", PS_WISHLIST, "p3", T0);
    ev(&f, "old", PS_CLICK, "p4", T0);
    assert_int_equal(ps_graph_edge_count(f.p), 4);
    /* a new customer with 4 products: every edge of "old" goes */
    for (int i = 1; i <= 4; i++) {
        char prod[8];
        snprintf(prod, sizeof(prod), "p%d", i);
        ev(&f, "new", PS_CLICK, prod, T0 + H);
        ev(&f, "new", PS_PURCHASE, prod, T0 + 2 * H);
        assert_true(ps_graph_edge_count(f.p) <= 4);
    }
    ps_graph_edge e;
    for (int i = 1; i <= 4; i++) {
        char prod[8];
        snprintf(prod, sizeof(prod), "p%d", i);
        ps_entity *pr = product(&f, prod);
        assert_false(ps_graph_edge_of(f.p, ps_fx_customer(&f, "old"), pr, &e));
        assert_true(ps_graph_edge_of(f.p, ps_fx_customer(&f, "new"), pr, &e));
        assert_int_equal(e.count[0], 1);
        assert_int_equal(e.count[2], 1);
        int64_t tot[3];
        ps_graph_product_totals(f.p, pr, tot);
        assert_true(tot[0] == (i == 3 ? 1 : 2));
        assert_true(tot[1] == (i == 3 ? 1 : 0));
        assert_true(tot[2] == 1);
    }
    /* "old" comes back to p1: a new edge, totals keep counting */
    ev(&f, "old", PS_CLICK, "p1", T0 + 3 * H);
    assert_int_equal(ps_graph_edge_count(f.p), 4);
    assert_true(ps_graph_edge_of(f.p, ps_fx_customer(&f, "old"), product(&f, "p1"),
                                 &e));
    assert_int_equal(e.count[0], 1);
    int64_t tot[3];
    ps_graph_product_totals(f.p, product(&f, "p1"), tot);
    assert_true(tot[0] == 3);
    /* the saved state of "old" holds only what is left */
    ps_wbuf w;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(f.p, ps_fx_customer(&f, "old"), &w);
    assert_false(w.oom);
    ps_wbuf_clear(&w);
    ps_fx_clear(&f);
}

/* Memory per edge on a graph of 1000 customers x 50 products (fewer under
 * valgrind): at most 64 bytes. */
static void test_bytes_per_edge(void **state)
{
    (void)state;
    ps_fx f;
    int n_cust = getenv("PS_TEST_QUICK") ? 100 : 1000;
    ps_fx_init(&f);
    for (int c = 0; c < n_cust; c++) {
        char cust[16];
        snprintf(cust, sizeof(cust), "u%d", c);
        for (int p = 0; p < 50; p++) {
            char prod[16];
            snprintf(prod, sizeof(prod), "q%d", (c * 7 + p * 13) % 997);
            ev(&f, cust, PS_CLICK, prod, T0 + c);
        }
    }
    size_t n = ps_graph_edge_count(f.p);
    double bpe = ps_graph_bytes_per_edge(f.p);
    print_message("graph: %zu edges, %.1f bytes per edge\n", n, bpe);
    assert_true(n > 0);
    if (!getenv("PS_TEST_QUICK"))
        assert_true(bpe <= 64.0);
    ps_fx_clear(&f);
}

/* Edges, last path and the cached funnel order survive save and load. */
static void test_save_load(void **state)
{
    (void)state;
    ps_fx f, g;
    ps_wbuf w;
    int err;
    path_entry pe[4];
    ps_fx_init(&f);
    ev(&f, "a", PS_CLICK, "p1", T0);
    ev(&f, "a", PS_PURCHASE, "p1", T0 + H);
    ev(&f, "a", PS_WISHLIST, "p2", T0 + 2 * H);
    ev(&f, "a", PS_CLICK, "p2", T0 + 3 * H);
    ev(&f, "a", PS_CLICK, "p3", T0 + 3 * H);
    ps_fx_flush(&f);
    ps_pipeline_flushed(f.p);
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(f.p, ps_fx_customer(&f, "a"), &w);
    assert_false(w.oom);

    ps_fx_init(&g);
    ps_customer *c = ps_pipeline_add(g.p, ps_fx_str("a"), w.data, w.len, &err);
    assert_non_null(c);
    assert_int_equal(err, 0);
    ps_fx_mark_loaded(&g);
    assert_int_equal(ps_graph_edge_count(g.p), 3);
    static const char *const prods[3] = {"p1", "p2", "p3"};
    for (int i = 0; i < 3; i++) {
        ps_graph_edge e1, e2;
        assert_true(ps_graph_edge_of(f.p, ps_fx_customer(&f, "a"),
                                     product(&f, prods[i]), &e1));
        assert_true(ps_graph_edge_of(g.p, c, product(&g, prods[i]), &e2));
        assert_memory_equal(e1.count, e2.count, sizeof(e1.count));
        assert_memory_equal(e1.last_ts, e2.last_ts, sizeof(e1.last_ts));
    }
    /* the restored p2 funnel converts in wishlist-then-click order */
    ev(&g, "a", PS_PURCHASE, "p2", T0 + 4 * H);
    ps_fx_flush(&g);
    assert_int_equal(paths(&g, pe, 4), 1);
    assert_string_equal(pe[0].path, "wishlist>click>purchase");
    assert_string_equal(ps_fx_hset_str(&g, "ps:cust:a", "last_path"),
                        "wishlist>click>purchase");

    /* last_path as saved: the p1 path */
    ps_fx_clear(&g);
    ps_fx_init(&g);
    c = ps_pipeline_add(g.p, ps_fx_str("a"), w.data, w.len, &err);
    assert_non_null(c);
    ps_fx_mark_loaded(&g);
    ev(&g, "a", PS_SPEND, NULL, T0 + 5 * H);
    ps_fx_flush(&g);
    assert_string_equal(ps_fx_hset_str(&g, "ps:cust:a", "last_path"),
                        "click>purchase");
    assert_close(ps_fx_hset(&g, "ps:cust:a", "last_path_p"), 2.0 / 3, 1e-9);

    /* a corrupt blob is refused, nothing leaks */
    ps_customer *bad = ps_pipeline_add(g.p, ps_fx_str("b"), w.data, w.len - 3, &err);
    assert_null(bad);
    ps_wbuf_clear(&w);
    ps_fx_clear(&g);
    ps_fx_clear(&f);
}

/* A flush that fails is retried with the same ps:paths entries (plus
 * newer ones); after one that succeeds they are not written again. */
static void test_exactly_once(void **state)
{
    (void)state;
    ps_fx f;
    path_entry pe[4];
    ps_fx_init(&f);
    ev(&f, "a", PS_CLICK, "p1", T0);
    ev(&f, "a", PS_PURCHASE, "p1", T0 + H);
    ps_fx_flush(&f); /* ... and the transaction fails: no ps_pipeline_flushed */
    assert_int_equal(paths(&f, pe, 4), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "path_click>purchase"), 1);

    ev(&f, "b", PS_WISHLIST, "p1", T0 + 2 * H);
    ev(&f, "b", PS_PURCHASE, "p1", T0 + 3 * H);
    ps_fx_flush(&f); /* the retry: the first entry again, and the new one */
    assert_int_equal(paths(&f, pe, 4), 2);
    assert_string_equal(pe[0].customer, "a");
    assert_string_equal(pe[0].path, "click>purchase");
    assert_string_equal(pe[1].customer, "b");
    assert_string_equal(pe[1].path, "wishlist>purchase");
    assert_int_equal(ps_fx_incr(&f, "ps:global", "path_click>purchase"), 1);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "path_wishlist>purchase"), 1);
    ps_pipeline_flushed(f.p);

    ps_fx_flush(&f); /* nothing new */
    assert_int_equal(paths(&f, pe, 4), 0);
    assert_int_equal(ps_fx_incr(&f, "ps:global", "path_click>purchase"), 0);

    /* a success after the flush is found again (its baseline was reset) */
    ev(&f, "c", PS_CLICK, "p1", T0 + 4 * H);
    ev(&f, "c", PS_PURCHASE, "p1", T0 + 5 * H);
    ps_fx_flush(&f);
    assert_int_equal(paths(&f, pe, 4), 1);
    assert_string_equal(pe[0].customer, "c");
    assert_int_equal(ps_fx_incr(&f, "ps:prod:p1", "funnels_wishlist_first"), 0);
    ps_fx_clear(&f);
}

int main(void)
{
    ps_beta_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_and_paths),
        cmocka_unit_test(test_late_click_path),
        cmocka_unit_test(test_segment_mix),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_bytes_per_edge),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_exactly_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
