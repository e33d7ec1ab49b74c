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
#include "../../aggregates/pipeline.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cohorts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
