/*
 * test_pipeline.c -- the aggregate pipeline and the first aggregates,
 * checked against values computed by hand.
 *
 * Covers: per-customer counters and spend (Welford against a two-pass
 * mean and sample std), coalescing (a customer touched many times is
 * written once per flush), the flush protocol (a failed flush repeats its
 * deltas, a successful one forgets them), saved state round trip, corrupt
 * saved state rejected, and the aggregate contract for every registered
 * aggregate.
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

#define assert_close(a, b, tol)                                               \
    do {                                                                      \
        double a_ = (a), b_ = (b);                                            \
        if (fabs(a_ - b_) > (tol) * (1.0 + fabs(b_)))                         \
            fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);               \
    } while (0)

static ps_str S(const char *s) { return (ps_str){s, (uint32_t)strlen(s)}; }

static ps_event ev(const char *cust, ps_event_type t, double amount,
                   int64_t ts)
{
    ps_event e;
    memset(&e, 0, sizeof(e));
    e.event_id = S("e");
    e.customer_id = S(cust);
    e.type = t;
    if (t != PS_SPEND)
        e.product_id = S("p1");
    e.has_amount = amount >= 0;
    e.amount = amount >= 0 ? amount : 0;
    e.ts = ts;
    return e;
}

static ps_pipeline *new_pipe(void)
{
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(p);
    return p;
}

static ps_customer *cust_of(ps_pipeline *p, const char *id)
{
    ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id));
    int err;
    if (c == NULL)
        c = ps_pipeline_add(p, S(id), NULL, 0, &err);
    assert_non_null(c);
    return c;
}

static int seq;

static void apply(ps_pipeline *p, ps_event e)
{
    char id[32];
    bool late;
    snprintf(id, sizeof(id), "e%d", ++seq); /* distinct ids: no dedup */
    e.event_id = S(id);
    assert_int_equal(
        ps_pipeline_apply(p, &e, cust_of(p, e.customer_id.ptr), &late), 0);
}

/* Find the HSET of key in b and return field's value as a string. */
static int hget(const ps_batch *b, const char *key, const char *field,
                char *out, size_t out_size, int *hsets_of_key)
{
    const char *argv[256];
    size_t lens[256];
    int found = 0;
    *hsets_of_key = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 256)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (lens[0] != 4 || memcmp(argv[0], "HSET", 4) != 0 ||
            lens[1] != strlen(key) || memcmp(argv[1], key, lens[1]) != 0)
            continue;
        (*hsets_of_key)++;
        for (size_t a = 2; a + 1 < argc; a += 2) {
            if (lens[a] == strlen(field) && memcmp(argv[a], field, lens[a]) == 0) {
                snprintf(out, out_size, "%.*s", (int)lens[a + 1], argv[a + 1]);
                found = 1;
            }
        }
    }
    return found;
}

static double hget_num(const ps_batch *b, const char *key, const char *field)
{
    char v[64];
    int n;
    if (!hget(b, key, field, v, sizeof(v), &n))
        fail_msg("%s %s not written", key, field);
    return strtod(v, NULL);
}

/* The counters and spend of one customer, with the spend figures computed
 * by a plain two-pass method. */
static void test_customer_counts(void **state)
{
    (void)state;
    ps_pipeline *p = new_pipe();
    ps_batch *b = ps_batch_new("ps:");
    const double amounts[] = {50000, 42000.5, 61000, 39999.5};
    double sum = 0, mean, ss = 0;

    apply(p, ev("c1", PS_CLICK, -1, 1000));
    apply(p, ev("c1", PS_WISHLIST, -1, 3000));
    apply(p, ev("c1", PS_PURCHASE, amounts[0], 2000)); /* out of order */
    apply(p, ev("c1", PS_PURCHASE, -1, 2500));         /* no amount */
    apply(p, ev("c1", PS_SPEND, amounts[1], 2600));
    apply(p, ev("c1", PS_PURCHASE, amounts[2], 2700));
    apply(p, ev("c1", PS_SPEND, amounts[3], 2800));
    apply(p, ev("c2", PS_CLICK, -1, 5000));
    for (int i = 0; i < 4; i++)
        sum += amounts[i];
    mean = sum / 4;
    for (int i = 0; i < 4; i++)
        ss += (amounts[i] - mean) * (amounts[i] - mean);

    ps_pipeline_write(p, b);
    assert_close(hget_num(b, "ps:cust:c1", "events"), 7, 0);
    assert_close(hget_num(b, "ps:cust:c1", "clicks"), 1, 0);
    assert_close(hget_num(b, "ps:cust:c1", "wishlists"), 1, 0);
    assert_close(hget_num(b, "ps:cust:c1", "purchases"), 3, 0);
    assert_close(hget_num(b, "ps:cust:c1", "last_ts"), 3000, 0);
    assert_close(hget_num(b, "ps:cust:c1", "spend_n"), 4, 0);
    assert_close(hget_num(b, "ps:cust:c1", "spend_sum"), sum, 1e-15);
    assert_close(hget_num(b, "ps:cust:c1", "spend_mean"), mean, 1e-9);
    assert_close(hget_num(b, "ps:cust:c1", "spend_std"), sqrt(ss / 3), 1e-9);
    /* by hand: mean 48,250, squared deviations sum 272,752,000.5, /3 */
    assert_close(sqrt(ss / 3), 9535.0581277725, 1e-12);
    assert_close(hget_num(b, "ps:cust:c2", "spend_std"), 0, 0);
    assert_close(hget_num(b, "ps:cust:c2", "spend_mean"), 0, 0);

    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

static int64_t find_incr(const ps_batch *b, const char *key, const char *field)
{
    const char *argv[8];
    size_t lens[8];
    int64_t total = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        if (ps_batch_argc(b, i) != 4)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (lens[0] == 7 && memcmp(argv[0], "HINCRBY", 7) == 0 &&
            lens[1] == strlen(key) && memcmp(argv[1], key, lens[1]) == 0 &&
            lens[2] == strlen(field) && memcmp(argv[2], field, lens[2]) == 0)
            total += strtoll(argv[3], NULL, 10);
    }
    return total;
}

/* A customer touched 1,000 times between two flushes is written once; a
 * failed flush (no flushed() call) writes the same deltas again plus the
 * newer ones; a successful one forgets them. */
static void test_coalescing_and_flush_protocol(void **state)
{
    (void)state;
    ps_pipeline *p = new_pipe();
    ps_batch *b = ps_batch_new("ps:");
    int n;
    char v[64];

    for (int i = 0; i < 1000; i++)
        apply(p, ev("hot", PS_CLICK, -1, 1000 + i));
    apply(p, ev("cold", PS_CLICK, -1, 1));
    assert_int_equal(ps_pipeline_dirty_count(p), 5); /* hot, cold, product p1, global, cohort */

    ps_pipeline_write(p, b);
    assert_true(hget(b, "ps:cust:hot", "events", v, sizeof(v), &n));
    assert_int_equal(n, 1);
    assert_string_equal(v, "1000");
    assert_int_equal(find_incr(b, "ps:global", "events"), 1001);

    /* the transaction failed: write again without flushed() */
    apply(p, ev("hot", PS_CLICK, -1, 5000));
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    assert_true(hget(b, "ps:cust:hot", "events", v, sizeof(v), &n));
    assert_int_equal(n, 1);
    assert_string_equal(v, "1001");
    assert_int_equal(find_incr(b, "ps:global", "events"), 1002);

    /* success: nothing left to write */
    ps_pipeline_flushed(p);
    assert_int_equal(ps_pipeline_dirty_count(p), 0);
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    assert_int_equal(ps_batch_count(b), 0);

    apply(p, ev("cold", PS_CLICK, -1, 2));
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    assert_false(hget(b, "ps:cust:hot", "events", v, sizeof(v), &n));
    assert_true(hget(b, "ps:cust:cold", "events", v, sizeof(v), &n));
    assert_string_equal(v, "2");
    assert_int_equal(find_incr(b, "ps:global", "events"), 1);

    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* Number of commands "EXPIRE key ttl" in b. */
static int count_expire(const ps_batch *b, const char *key, const char *ttl)
{
    const char *argv[8];
    size_t lens[8];
    int n = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        if (ps_batch_argc(b, i) != 3)
            continue;
        ps_batch_argv(b, i, argv, lens);
        n += strcmp(argv[0], "EXPIRE") == 0 && strcmp(argv[1], key) == 0 &&
             strcmp(argv[2], ttl) == 0;
    }
    return n;
}

/* --customer-ttl-s: each customer written gets its three output keys
 * expired (renewed at every write); without it, no EXPIRE at all; the
 * saved state never expires. */
static void test_customer_ttl(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.customer_ttl_s = 86400;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(p);
    ps_batch *b = ps_batch_new("ps:");

    apply(p, ev("c1", PS_CLICK, -1, 1000));
    apply(p, ev("c2", PS_PURCHASE, 50000, 2000));
    ps_pipeline_write(p, b);
    const char *keys[] = {"ps:cust:c1", "ps:cust:c1:intent", "ps:cust:c1:reco",
                          "ps:cust:c2", "ps:cust:c2:intent", "ps:cust:c2:reco"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_int_equal(count_expire(b, keys[i], "86400"), 1);
    assert_int_equal(count_expire(b, "ps:state:cust:c1", "86400"), 0);
    ps_pipeline_flushed(p);

    /* only the customer written again is renewed */
    apply(p, ev("c2", PS_CLICK, -1, 3000));
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    assert_int_equal(count_expire(b, "ps:cust:c2", "86400"), 1);
    assert_int_equal(count_expire(b, "ps:cust:c1", "86400"), 0);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);

    /* off by default */
    p = new_pipe();
    b = ps_batch_new("ps:");
    apply(p, ev("c1", PS_CLICK, -1, 1000));
    ps_pipeline_write(p, b);
    const char *argv[8];
    size_t lens[8];
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        if (ps_batch_argc(b, i) > 8)
            continue;
        ps_batch_argv(b, i, argv, lens);
        assert_string_not_equal(argv[0], "EXPIRE");
    }
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* State saved by one pipeline and loaded by another continues exactly. */
static void test_state_round_trip(void **state)
{
    (void)state;
    ps_pipeline *a = new_pipe(), *b2 = new_pipe();
    ps_batch *ba = ps_batch_new("ps:"), *bb = ps_batch_new("ps:");
    ps_wbuf w;
    int err;
    char va[64], vb[64];
    int n;
    static const char *const fields[] = {"events", "clicks", "wishlists",
                                         "purchases", "last_ts", "spend_n",
                                         "spend_sum", "spend_mean",
                                         "spend_std"};

    apply(a, ev("c", PS_PURCHASE, 100.25, 10));
    apply(a, ev("c", PS_SPEND, 300, 20));
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(a, ps_pipeline_find(a, PS_KIND_CUSTOMER, S("c")), &w);
    assert_non_null(ps_pipeline_add(b2, S("c"), w.data, w.len, &err));
    assert_int_equal(err, 0);

    apply(a, ev("c", PS_SPEND, 7, 30));
    apply(b2, ev("c", PS_SPEND, 7, 30));
    ps_pipeline_write(a, ba);
    ps_pipeline_write(b2, bb);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        assert_true(hget(ba, "ps:cust:c", fields[i], va, sizeof(va), &n));
        assert_true(hget(bb, "ps:cust:c", fields[i], vb, sizeof(vb), &n));
        assert_string_equal(va, vb);
    }

    /* every truncation of the blob is rejected, nothing added */
    for (size_t len = 0; len < w.len; len++) {
        ps_pipeline *c = new_pipe();
        assert_null(ps_pipeline_add(c, S("x"), w.data, len, &err));
        assert_int_equal(err, PS_ERR_STATE);
        assert_null(ps_pipeline_find(c, PS_KIND_CUSTOMER, S("x")));
        ps_pipeline_destroy(c);
    }
    ps_wbuf_clear(&w);
    ps_batch_destroy(ba);
    ps_batch_destroy(bb);
    ps_pipeline_destroy(a);
    ps_pipeline_destroy(b2);
}

/* Many customers: the index grows, every one is found again, and
 * forget_all empties it after a flush. */
static void test_many_customers(void **state)
{
    (void)state;
    ps_pipeline *p = new_pipe();
    char id[32];
    for (int i = 0; i < 50000; i++) {
        snprintf(id, sizeof(id), "cust-%d", i);
        apply(p, ev(id, PS_CLICK, -1, i + 1));
    }
    assert_int_equal(ps_pipeline_customer_count(p), 50000);
    for (int i = 0; i < 50000; i += 997) {
        snprintf(id, sizeof(id), "cust-%d", i);
        assert_non_null(ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id)));
    }
    ps_pipeline_flushed(p);
    ps_pipeline_forget_all(p);
    assert_int_equal(ps_pipeline_customer_count(p), 0);
    assert_null(ps_pipeline_find(p, PS_KIND_CUSTOMER, S("cust-1")));
    ps_pipeline_destroy(p);
}

/* Bounded memory: eviction keeps the most recently touched clean
 * customers, never a dirty one, and the table stays consistent (every
 * remaining customer is found, no evicted one is). */
static void test_evict_idle(void **state)
{
    (void)state;
    ps_pipeline *p = new_pipe();
    ps_batch *b = ps_batch_new("ps:");
    char id[32];
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "cust-%d", i);
        apply(p, ev(id, PS_CLICK, -1, i + 1));
    }
    ps_pipeline_write(p, b);
    ps_pipeline_flushed(p);
    /* every reference bit is set: the first turn clears them, then the
     * hand evicts in table order */
    assert_int_equal(ps_pipeline_evict_idle(p, N - 1000), 1000);
    assert_int_equal(ps_pipeline_customer_count(p), N - 1000);
    /* touch 100 customers, one of them left dirty (no flush after it) */
    int found = 0;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "cust-%d", i);
        found += ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id)) != NULL;
    }
    assert_int_equal(found, N - 1000);
    int touched[100], t = 0;
    for (int i = 0; i < N && t < 100; i++) {
        snprintf(id, sizeof(id), "cust-%d", i);
        if (ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id)) == NULL)
            continue;
        touched[t++] = i;
        apply(p, ev(id, PS_CLICK, -1, N + i));
    }
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    ps_pipeline_flushed(p);
    snprintf(id, sizeof(id), "cust-%d", touched[99]);
    apply(p, ev(id, PS_CLICK, -1, 3 * N)); /* dirty now */
    /* the hand clears the bits of the 99 touched-and-flushed customers it
     * meets and skips the dirty one, so asking for 100 survivors keeps
     * them all */
    ps_pipeline_evict_idle(p, 100);
    assert_int_equal(ps_pipeline_customer_count(p), 100);
    for (int k = 0; k < 100; k++) {
        snprintf(id, sizeof(id), "cust-%d", touched[k]);
        assert_non_null(ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id)));
    }
    found = 0;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "cust-%d", i);
        found += ps_pipeline_find(p, PS_KIND_CUSTOMER, S(id)) != NULL;
    }
    assert_int_equal(found, 100);
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    ps_pipeline_flushed(p);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* A partition's clock survives a restart: saved from one pipeline and
 * restored in a fresh one, it judges lateness and the watermark exactly
 * as the first would have (lateness 1 h by default). */
static void test_partition_clock(void **state)
{
    (void)state;
    ps_pipeline *a = new_pipe();
    const int64_t h = 3600000;
    ps_event e = ev("c1", PS_CLICK, -1, 10 * h);
    e.part = 3;
    apply(a, e);
    ps_str cause;
    assert_int_equal(ps_pipeline_partition_clock(a, 3, &cause), 10 * h);
    assert_true(cause.len > 0);
    char saved_cause[32];
    snprintf(saved_cause, sizeof(saved_cause), "%.*s", (int)cause.len,
             cause.ptr);
    assert_int_equal(ps_pipeline_partition_clock(a, 7, &cause), INT64_MIN);

    ps_pipeline *b = new_pipe(); /* the restarted process */
    assert_int_equal(ps_pipeline_restore_partition_clock(
                         b, 3, 10 * h, S(saved_cause), 1000),
                     0);
    assert_int_equal(ps_pipeline_watermark(b, 3), 9 * h);
    assert_int_equal(ps_pipeline_global_watermark(b), 9 * h);
    ps_str c2 = ps_pipeline_watermark_cause(b, 3);
    assert_int_equal(c2.len, strlen(saved_cause));
    assert_memory_equal(c2.ptr, saved_cause, c2.len);
    /* an event 2 h older than the restored largest ts is late, as it
     * would have been without the restart; one 30 min older is not */
    bool late;
    ps_event old = ev("c2", PS_CLICK, -1, 8 * h);
    old.part = 3;
    old.event_id = S("old");
    assert_int_equal(ps_pipeline_apply(b, &old, cust_of(b, "c2"), &late), 0);
    assert_true(late);
    ps_event recent = ev("c3", PS_CLICK, -1, 10 * h - h / 2);
    recent.part = 3;
    recent.event_id = S("recent");
    assert_int_equal(ps_pipeline_apply(b, &recent, cust_of(b, "c3"), &late),
                     0);
    assert_false(late);
    ps_pipeline_destroy(a);
    ps_pipeline_destroy(b);
}

/* Watermark alignment: a held partition holds back the global watermark
 * at its next event's time (not at its last), is never idle, and its own
 * watermark is unchanged; released, it is a busy partition again. */
static void test_hold_partition(void **state)
{
    (void)state;
    ps_pipeline *p = new_pipe(); /* lateness 1 h, idle after 60 s */
    const int64_t h = 3600000;
    ps_event a = ev("c1", PS_CLICK, -1, 10 * h);
    a.part = 0;
    a.event_id = S("a");
    apply(p, a);
    ps_event b = ev("c2", PS_CLICK, -1, 50 * h);
    b.part = 1;
    b.event_id = S("b");
    apply(p, b);
    assert_int_equal(ps_pipeline_advance(p, 1000), 0);
    assert_int_equal(ps_pipeline_global_watermark(p), 9 * h);
    /* partition 0's next event is at 30 h: held there */
    assert_int_equal(ps_pipeline_hold_partition(p, 0, 30 * h, 1000), 0);
    assert_int_equal(ps_pipeline_advance(p, 2000), 0);
    assert_int_equal(ps_pipeline_global_watermark(p), 29 * h);
    assert_int_equal(ps_pipeline_watermark(p, 0), 9 * h);
    /* long after (partition 0 got no event): still busy, still holding
     * back the watermark; partition 1 went idle */
    assert_int_equal(ps_pipeline_advance(p, 2000 + 10 * 60000), 0);
    assert_int_equal(ps_pipeline_global_watermark(p), 29 * h);
    /* released, and its event applied: the watermark follows it */
    assert_int_equal(ps_pipeline_hold_partition(p, 0, INT64_MIN,
                                                2000 + 10 * 60000), 0);
    ps_event a2 = ev("c1", PS_CLICK, -1, 30 * h);
    a2.part = 0;
    a2.event_id = S("a2");
    apply(p, a2);
    assert_int_equal(ps_pipeline_advance(p, 3000 + 10 * 60000), 0);
    assert_int_equal(ps_pipeline_global_watermark(p), 29 * h);
    assert_int_equal(ps_pipeline_watermark(p, 0), 29 * h);
    /* a hold on a partition never seen makes it busy too */
    assert_int_equal(ps_pipeline_hold_partition(p, 5, 20 * h, 4000 + 10 * 60000),
                     0);
    assert_int_equal(ps_pipeline_advance(p, 4000 + 10 * 60000), 0);
    assert_int_equal(ps_pipeline_global_watermark(p), 29 * h); /* never back */
    ps_pipeline_destroy(p);
}

/* The contract every registered aggregate must meet: init/destroy with
 * defaults, an empty flush writes nothing, and save/load round-trips a
 * zeroed slice. */
static void test_aggregate_contract(void **state)
{
    (void)state;
    ps_pipeline *p = new_pipe(); /* inits every aggregate with defaults */
    ps_batch *b = ps_batch_new("ps:");

    /* an empty flush writes nothing but the global record */
    ps_pipeline_write(p, b);
    assert_int_equal(ps_batch_count(b), 0);
    ps_pipeline_flushed(p);
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        const ps_aggregate_ops *ops = ps_aggregates[i];
        assert_non_null(ops->name);
        assert_non_null(ops->apply);
        assert_true((ops->save_customer == NULL) ==
                    (ops->load_customer == NULL));
        assert_true(ops->save_customer != NULL ||
                    ops->state_size[PS_KIND_CUSTOMER] == 0);
        for (int k = PS_KIND_PRODUCT; k < PS_KIND_COUNT; k++)
            if (ops->state_size[k] > 0)
                assert_non_null(ops->write_shared_entity);
    }
    /* save / load round trip of a new customer, for all aggregates */
    ps_customer *c = cust_of(p, "fresh");
    ps_wbuf w;
    int err;
    ps_wbuf_init(&w);
    ps_pipeline_save_customer(p, c, &w);
    ps_pipeline *q = new_pipe();
    ps_customer *c2 = ps_pipeline_add(q, S("fresh"), w.data, w.len, &err);
    assert_non_null(c2);
    ps_wbuf w2;
    ps_wbuf_init(&w2);
    ps_pipeline_save_customer(q, c2, &w2);
    assert_int_equal(w.len, w2.len);
    assert_memory_equal(w.data, w2.data, w.len);
    ps_wbuf_clear(&w);
    ps_wbuf_clear(&w2);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
    ps_pipeline_destroy(q);
    ps_pipeline_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_customer_counts),
        cmocka_unit_test(test_coalescing_and_flush_protocol),
        cmocka_unit_test(test_customer_ttl),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_many_customers),
        cmocka_unit_test(test_evict_idle),
        cmocka_unit_test(test_partition_clock),
        cmocka_unit_test(test_hold_partition),
        cmocka_unit_test(test_aggregate_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
