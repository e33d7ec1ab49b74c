/*
 * test_copurchase.c -- co-purchase counts, ps:prod:{id}:also, and
 * recommendations (ps:cust:{id}:reco) through the pipeline, on small
 * histories with hand-computed outcomes.
 *
 * Each case applies events to a fresh pipeline and reads back the
 * in-memory view (ps_copurchase_count, ps_copurchase_reco) and what a flush
 * writes into a ps_batch: ZINCRBY deltas into ps:state:also:{x} and the
 * ZRANGESTORE of its top N into ps:prod:{x}:also, DEL + ZADD of ps:cust:{id}:reco, the also_state
 * snapshot, the popular list in ps:state:agg:copurchase.  Product
 * posteriors are funnels' flat (1 + s) / (2 + n); the popular fill-up
 * scores s_min * n(q) / (n_1 + 1) (copurchase.c).
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

#include "../../aggregates/copurchase.h"
#include "../../aggregates/pipeline.h"
#include "../support/pipeline_fixture.h"

#define H (3600 * 1000LL)
#define DAY (24 * H)

static void ev(ps_fx *f, const char *cust, ps_event_type t, const char *prod,
               int64_t ts)
{
    ps_fx_event(f, cust, t, prod, t == PS_SPEND ? 10 : -1, ts);
}

static ps_entity *prod(ps_fx *f, const char *id)
{
    ps_entity *e = ps_pipeline_find(f->p, PS_KIND_PRODUCT, ps_fx_str(id));
    assert_non_null(e);
    return e;
}

static ps_entity *cust(ps_fx *f, const char *id)
{
    ps_entity *e = ps_pipeline_find(f->p, PS_KIND_CUSTOMER, ps_fx_str(id));
    assert_non_null(e);
    return e;
}

static long long count(ps_fx *f, const char *x, const char *y)
{
    return (long long)ps_copurchase_count(f->p, prod(f, x), prod(f, y));
}

/* Sum of ZINCRBY key by member in the batch. */
static long long zincr(const ps_fx *f, const char *key, const char *member)
{
    const char *argv[8];
    size_t lens[8];
    long long total = 0;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        if (ps_batch_argc(f->b, i) != 4)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "ZINCRBY") == 0 && strcmp(argv[1], key) == 0 &&
            strcmp(argv[3], member) == 0)
            total += strtoll(argv[2], NULL, 10);
    }
    return total;
}

/* Number of commands named cmd (on key, when key is not NULL). */
static int ncmd(const ps_fx *f, const char *cmd, const char *key)
{
    const char *argv[64];
    size_t lens[64];
    int n = 0;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        if (ps_batch_argc(f->b, i) > 64)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        n += strcmp(argv[0], cmd) == 0 &&
             (key == NULL || strcmp(argv[1], key) == 0);
    }
    return n;
}

/* The trim of key: its stop rank (-(N+1)), or 0 when there is none. */
/* The stop index of the ZRANGESTORE publishing key's top N (-1: none). */
static long long top_stop(const ps_fx *f, const char *key)
{
    const char *argv[6];
    size_t lens[6];
    long long stop = -1;
    char src[128];
    /* "ps:state:also:x" from "ps:prod:x:also" */
    snprintf(src, sizeof(src), "ps:state:also:%.*s",
             (int)(strlen(key) - strlen("ps:prod:") - strlen(":also")),
             key + strlen("ps:prod:"));
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        if (ps_batch_argc(f->b, i) != 6)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "ZRANGESTORE") == 0 &&
            strcmp(argv[1], key) == 0) {
            assert_string_equal(argv[2], src);
            assert_string_equal(argv[3], "0");
            assert_string_equal(argv[5], "REV");
            stop = strtoll(argv[4], NULL, 10);
        }
    }
    return stop;
}

/* The value of field in an HSET of key, copied into out. */
static bool hset_value(const ps_fx *f, const char *key, const char *field,
                       char *out, size_t cap, size_t *len)
{
    const char *argv[128];
    size_t lens[128];
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 128)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "HSET") != 0 || strcmp(argv[1], key) != 0)
            continue;
        for (size_t a = 2; a + 1 < argc; a += 2) {
            if (strcmp(argv[a], field) != 0)
                continue;
            assert_true(lens[a + 1] < cap);
            memcpy(out, argv[a + 1], lens[a + 1]);
            out[lens[a + 1]] = '\0';
            *len = lens[a + 1];
            return true;
        }
    }
    return false;
}

/*
 * a buys p1, p2, p1 again, p3; b buys p1, p2; c buys p2, p4, p2 again.
 * Distinct customers per pair: C[p1][p2] = 2 (a, b), C[p1][p3] = 1,
 * C[p2][p3] = 1, C[p2][p4] = 1, C[p1][p4] = C[p3][p4] = 0; symmetric.
 */
static void test_counts(void **state)
{
    (void)state;
    ps_fx f;
    ps_fx_init(&f);
    ev(&f, "a", PS_PURCHASE, "p1", 1 * H);
    ev(&f, "a", PS_PURCHASE, "p2", 2 * H);
    ev(&f, "a", PS_PURCHASE, "p1", 3 * H); /* repeat: nothing new */
    ev(&f, "a", PS_PURCHASE, "p3", 4 * H);
    ev(&f, "b", PS_PURCHASE, "p1", 5 * H);
    ev(&f, "b", PS_PURCHASE, "p2", 6 * H);
    ev(&f, "c", PS_PURCHASE, "p2", 7 * H);
    ev(&f, "c", PS_PURCHASE, "p4", 8 * H);
    ev(&f, "c", PS_PURCHASE, "p2", 9 * H);

    assert_int_equal(count(&f, "p1", "p2"), 2);
    assert_int_equal(count(&f, "p2", "p1"), 2);
    assert_int_equal(count(&f, "p1", "p3"), 1);
    assert_int_equal(count(&f, "p3", "p1"), 1);
    assert_int_equal(count(&f, "p2", "p3"), 1);
    assert_int_equal(count(&f, "p2", "p4"), 1);
    assert_int_equal(count(&f, "p4", "p2"), 1);
    assert_int_equal(count(&f, "p1", "p4"), 0);
    assert_int_equal(count(&f, "p3", "p4"), 0);
    assert_int_equal(count(&f, "p1", "p1"), 0);

    ps_fx_flush(&f);
    assert_int_equal(zincr(&f, "ps:state:also:p1", "p2"), 2);
    assert_int_equal(zincr(&f, "ps:state:also:p2", "p1"), 2);
    assert_int_equal(zincr(&f, "ps:state:also:p1", "p3"), 1);
    assert_int_equal(zincr(&f, "ps:state:also:p3", "p2"), 1);
    assert_int_equal(zincr(&f, "ps:state:also:p4", "p2"), 1);
    assert_int_equal(zincr(&f, "ps:state:also:p1", "p4"), 0);
    /* one coalesced ZINCRBY per pair: 4 unordered pairs, both ways */
    assert_int_equal(ncmd(&f, "ZINCRBY", NULL), 8);
    /* the default top 20: ranks 0..19 of the counts, highest first */
    assert_int_equal(top_stop(&f, "ps:prod:p1:also"), 19);
    assert_int_equal(ncmd(&f, "ZRANGESTORE", NULL), 4);
    /* a failed flush writes the same deltas again */
    ps_fx_flush(&f);
    assert_int_equal(zincr(&f, "ps:state:also:p1", "p2"), 2);
    ps_pipeline_flushed(f.p);

    /* after a successful flush only new pairs are written; repeats add
     * nothing */
    ev(&f, "a", PS_PURCHASE, "p3", 10 * H);
    ev(&f, "b", PS_PURCHASE, "p2", 10 * H);
    ps_fx_flush(&f);
    assert_int_equal(ncmd(&f, "ZINCRBY", NULL), 0);
    ps_pipeline_flushed(f.p);
    ev(&f, "b", PS_PURCHASE, "p3", 11 * H);
    ps_fx_flush(&f);
    assert_int_equal(zincr(&f, "ps:state:also:p3", "p1"), 1);
    assert_int_equal(zincr(&f, "ps:state:also:p3", "p2"), 1);
    assert_int_equal(zincr(&f, "ps:state:also:p1", "p3"), 1);
    assert_int_equal(ncmd(&f, "ZINCRBY", NULL), 4);
    assert_int_equal(count(&f, "p1", "p3"), 2);
    ps_pipeline_flushed(f.p);
    ps_fx_clear(&f);
}

/*
 * Top N with also_top_n = 1: the published zset is rank 0 of the counts
 * (ZRANGESTORE ... 0 0 REV) and every delta is still written exactly; the
 * in-memory table keeps K = 4 partners, and a fifth takes the place of a
 * count-1 partner.
 */
static void test_top_n(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.also_top_n = 1;
    ps_fx_init_conf(&f, &conf);
    /* x is bought with y1 by three customers, with y2 by two */
    const char *with[3][3] = {{"y1", "y2", "y3"}, {"y1", "y2", "y4"},
                              {"y1", "y5", NULL}};
    char c[8];
    for (int i = 0; i < 3; i++) {
        snprintf(c, sizeof(c), "c%d", i);
        ev(&f, c, PS_PURCHASE, "x", 1 * H);
        for (int j = 0; j < 3 && with[i][j]; j++)
            ev(&f, c, PS_PURCHASE, with[i][j], 2 * H + j);
    }
    assert_int_equal(count(&f, "x", "y1"), 3);
    assert_int_equal(count(&f, "x", "y2"), 2);
    /* the table was full (y1 2, y2 2, y3 1, y4 1) when y5 came: it took
     * the place of the first count-1 partner, y3 */
    assert_int_equal(count(&f, "x", "y3"), 0);
    assert_int_equal(count(&f, "x", "y4"), 1);
    assert_int_equal(count(&f, "x", "y5"), 1);
    /* a fourth customer buys y1 and x: y1 3 -> 4 */
    ev(&f, "c9", PS_PURCHASE, "y1", 3 * H);
    ev(&f, "c9", PS_PURCHASE, "x", 3 * H);
    assert_int_equal(count(&f, "x", "y1"), 4);
    ps_fx_flush(&f);
    assert_int_equal(zincr(&f, "ps:state:also:x", "y1"), 4);
    assert_int_equal(zincr(&f, "ps:state:also:x", "y2"), 2);
    assert_int_equal(zincr(&f, "ps:state:also:x", "y3"), 1);
    assert_int_equal(zincr(&f, "ps:state:also:x", "y5"), 1); /* exact */
    assert_int_equal(top_stop(&f, "ps:prod:x:also"), 0);
    ps_pipeline_flushed(f.p);
    ps_fx_clear(&f);
}

/*
 * Recommendations.  u4 clicks B and never buys (after 9 days the funnel
 * expires: B has 1 trial, 0 successes, P = 1/3); u1 clicks C and buys it
 * (C: 1 trial, 1 success, P = 2/3); other products have no trial (P =
 * 1/2).  Purchases: u1 A, B, C; u2 A, B; u3 B, D.  So C[A][B] = 2,
 * C[A][C] = C[B][C] = C[B][D] = 1.
 *   t buys A and wishlists D: candidates (A excluded) B = C[A][B] +
 *   C[D][B] = 3 -> 3 * 1/3 = 1; C = C[A][C] = 1 -> 2/3.  D itself: 0.
 *   u2 (A, B): C = 1 + 1 = 2 -> 4/3; D = C[B][D] = 1 -> 1/2.
 * Popular fill-up: purchase counts A 3 (u1, u2, t), B 3 (u1, u2, u3), C 1,
 * D 1, so the popular list is A, B, C, D (ties by id) and n_1 + 1 = 4; a
 * fill-up product q scores s_min * n(q) / 4.
 */
static void setup_reco(ps_fx *f)
{
    ev(f, "u4", PS_CLICK, "B", 1 * H);
    ev(f, "mover", PS_SPEND, NULL, 9 * DAY); /* expires u4's funnel */
    int64_t t0 = 9 * DAY;
    ev(f, "u1", PS_CLICK, "C", t0 + 1 * H);
    ev(f, "u1", PS_PURCHASE, "A", t0 + 2 * H);
    ev(f, "u1", PS_PURCHASE, "B", t0 + 2 * H);
    ev(f, "u1", PS_PURCHASE, "C", t0 + 2 * H);
    ev(f, "u2", PS_PURCHASE, "A", t0 + 3 * H);
    ev(f, "u2", PS_PURCHASE, "B", t0 + 3 * H);
    ev(f, "u3", PS_PURCHASE, "B", t0 + 4 * H);
    ev(f, "u3", PS_PURCHASE, "D", t0 + 4 * H);
    ev(f, "t", PS_PURCHASE, "A", t0 + 5 * H);
    ev(f, "t", PS_WISHLIST, "D", t0 + 5 * H);
}

static double zadd_score(const ps_fx *f, const char *key, const char *member)
{
    const char *argv[64];
    size_t lens[64];
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 64)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "ZADD") != 0 || strcmp(argv[1], key) != 0)
            continue;
        for (size_t a = 2; a + 1 < argc; a += 2)
            if (strcmp(argv[a + 1], member) == 0)
                return strtod(argv[a], NULL);
    }
    return NAN;
}

static int zadd_members(const ps_fx *f, const char *key)
{
    const char *argv[64];
    size_t lens[64];
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 64)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "ZADD") == 0 && strcmp(argv[1], key) == 0)
            return (int)(argc - 2) / 2;
    }
    return 0;
}

static void test_reco(void **state)
{
    (void)state;
    ps_fx f;
    ps_copurchase_item out[10];
    ps_fx_init(&f);
    setup_reco(&f);

    long n = ps_copurchase_reco(f.p, cust(&f, "t"), 10, out);
    /* B, C from co-purchase; then the popular list A (bought), B, C (in
     * the list already), D (wishlisted, not bought): s_min = 2/3, so D
     * scores 2/3 * 1/4 = 1/6 */
    assert_int_equal(n, 3);
    assert_true(ps_str_eq(out[0].product->id, ps_fx_str("B")));
    assert_close(out[0].score, 1.0, 1e-12);
    assert_false(out[0].popular);
    assert_true(ps_str_eq(out[1].product->id, ps_fx_str("C")));
    assert_close(out[1].score, 2.0 / 3.0, 1e-12);
    assert_false(out[1].popular);
    assert_true(ps_str_eq(out[2].product->id, ps_fx_str("D")));
    assert_close(out[2].score, 1.0 / 6.0, 1e-12);
    assert_true(out[2].popular);
    /* at most n */
    assert_int_equal(ps_copurchase_reco(f.p, cust(&f, "t"), 1, out), 1);
    assert_true(ps_str_eq(out[0].product->id, ps_fx_str("B")));

    /* u2 (A, B): C and D from co-purchase; every popular product is
     * bought or listed already: no fill-up */
    n = ps_copurchase_reco(f.p, cust(&f, "u2"), 10, out);
    assert_int_equal(n, 2);
    assert_true(ps_str_eq(out[0].product->id, ps_fx_str("C")));
    assert_close(out[0].score, 4.0 / 3.0, 1e-12);
    assert_true(ps_str_eq(out[1].product->id, ps_fx_str("D")));
    assert_close(out[1].score, 0.5, 1e-12);

    /* u1 bought every co-purchased product but D: D = C[B][D] = 1 */
    n = ps_copurchase_reco(f.p, cust(&f, "u1"), 10, out);
    assert_int_equal(n, 1);
    assert_true(ps_str_eq(out[0].product->id, ps_fx_str("D")));
    /* no purchase, no wishlist: the popular list alone, s_min = 1:
     * A 3/4, B 3/4, C 1/4, D 1/4 (equal scores by id) */
    n = ps_copurchase_reco(f.p, cust(&f, "u4"), 10, out);
    assert_int_equal(n, 4);
    const char *cold[4] = {"A", "B", "C", "D"};
    const double cold_score[4] = {0.75, 0.75, 0.25, 0.25};
    for (int i = 0; i < 4; i++) {
        assert_true(ps_str_eq(out[i].product->id, ps_fx_str(cold[i])));
        assert_close(out[i].score, cold_score[i], 1e-12);
        assert_true(out[i].popular);
    }
    assert_int_equal(ps_copurchase_reco(f.p, cust(&f, "u4"), 2, out), 2);
    assert_true(ps_str_eq(out[1].product->id, ps_fx_str("B")));

    ps_fx_flush(&f);
    assert_int_equal(zadd_members(&f, "ps:cust:t:reco"), 3);
    assert_close(zadd_score(&f, "ps:cust:t:reco", "B"), 1.0, 1e-9);
    assert_close(zadd_score(&f, "ps:cust:t:reco", "C"), 2.0 / 3.0, 1e-9);
    /* round-trip digits: exactly 1/6 as read back */
    assert_true(zadd_score(&f, "ps:cust:t:reco", "D") == 1.0 / 6.0);
    assert_true(isnan(zadd_score(&f, "ps:cust:t:reco", "A"))); /* bought */
    assert_int_equal(zadd_members(&f, "ps:cust:u2:reco"), 2);
    assert_int_equal(zadd_members(&f, "ps:cust:u4:reco"), 4);
    assert_close(zadd_score(&f, "ps:cust:u4:reco", "A"), 0.75, 1e-12);
    assert_close(zadd_score(&f, "ps:cust:u4:reco", "D"), 0.25, 1e-12);
    assert_int_equal(ncmd(&f, "DEL", "ps:cust:t:reco"), 0); /* never written */
    ps_pipeline_flushed(f.p);

    /* nothing changed for t: not rewritten */
    ev(&f, "u2", PS_CLICK, "C", 9 * DAY + 6 * H);
    ps_fx_flush(&f);
    assert_int_equal(ncmd(&f, "ZADD", "ps:cust:t:reco"), 0);
    assert_int_equal(ncmd(&f, "DEL", "ps:cust:u2:reco"), 1);
    assert_int_equal(ncmd(&f, "ZADD", "ps:cust:u2:reco"), 1);
    ps_pipeline_flushed(f.p);

    /* t buys B: replaced atomically, B gone; C = C[A][C] + C[B][C] = 2,
     * D = C[B][D] = 1 (D is wishlisted, not bought); the popular list
     * (B 4, A 3, C 1, D 1) adds nothing new */
    ev(&f, "t", PS_PURCHASE, "B", 9 * DAY + 7 * H);
    ps_fx_flush(&f);
    assert_int_equal(ncmd(&f, "DEL", "ps:cust:t:reco"), 1);
    assert_int_equal(zadd_members(&f, "ps:cust:t:reco"), 2);
    assert_true(isnan(zadd_score(&f, "ps:cust:t:reco", "B")));
    assert_close(zadd_score(&f, "ps:cust:t:reco", "C"), 4.0 / 3.0, 1e-9);
    assert_close(zadd_score(&f, "ps:cust:t:reco", "D"), 0.5, 1e-9);
    ps_pipeline_flushed(f.p);
    ps_pipeline_forget_all(f.p);
    ps_fx_clear(&f);
}

/* The copurchase part of a saved customer blob (pipeline.h format). */
static ps_rbuf part_of(const ps_wbuf *w, const char *name)
{
    ps_rbuf r, part;
    uint8_t version, count;
    ps_rbuf_init(&r, w->data, w->len);
    assert_int_equal(ps_rbuf_u8(&r, &version), 0);
    assert_int_equal(ps_rbuf_u8(&r, &count), 0);
    for (unsigned k = 0; k < count; k++) {
        uint8_t nlen;
        uint32_t len;
        char n[256];
        assert_int_equal(ps_rbuf_u8(&r, &nlen), 0);
        assert_int_equal(ps_rbuf_get(&r, n, nlen), 0);
        n[nlen] = '\0';
        assert_int_equal(ps_rbuf_u32(&r, &len), 0);
        assert_true(ps_rbuf_left(&r) >= len);
        ps_rbuf_init(&part, r.p, len);
        if (strcmp(n, name) == 0)
            return part;
        r.p += len;
    }
    fail_msg("no part %s", name);
    return part;
}

/*
 * Saved state: a customer's sets survive save/load (same blob again, a
 * repeat purchase after the reload adds nothing, a new one pairs with the
 * restored purchases only), and a product's also_state snapshot, fed back
 * through load_shared_field, restores its counts in a new pipeline.
 */
static void test_save_load(void **state)
{
    (void)state;
    ps_fx f, g;
    ps_wbuf w1, w2;
    char snap[4096];
    size_t snap_len = 0;
    ps_fx_init(&f);
    setup_reco(&f);
    ps_wbuf_init(&w1);
    ps_wbuf_init(&w2);
    ps_pipeline_save_customer(f.p, cust(&f, "t"), &w1);
    ps_fx_flush(&f);
    assert_true(hset_value(&f, "ps:prod:B", "also_state", snap, sizeof(snap),
                           &snap_len));

    ps_fx_init(&g);
    int err;
    ps_customer *t = ps_pipeline_add(g.p, ps_fx_str("t"), w1.data, w1.len, &err);
    assert_non_null(t);
    assert_int_equal(err, 0);
    ps_pipeline_save_customer(g.p, t, &w2);
    ps_rbuf r1 = part_of(&w1, "copurchase"), r2 = part_of(&w2, "copurchase");
    assert_int_equal(ps_rbuf_left(&r1), ps_rbuf_left(&r2));
    assert_memory_equal(r1.p, r2.p, ps_rbuf_left(&r1));
    /* version, purchased {A}, wishlisted {D}, wish_next 0, reco not yet
     * written when saved */
    assert_int_equal(ps_rbuf_left(&r1), 1 + 4 + 5 + 4 + 5 + 4 + 1);

    /* snapshot of B: partners A 2, C 1, D 1 */
    ps_entity *b = ps_pipeline_entity(g.p, PS_KIND_PRODUCT, ps_fx_str("B"));
    assert_non_null(b);
    ps_pipeline_load_field(g.p, b, "also_state", 10, snap, snap_len);
    ps_pipeline_load_field(g.p, b, "also_state", 10, snap, snap_len); /* retry */
    ps_fx_mark_loaded(&g);
    assert_int_equal(count(&g, "B", "A"), 2);
    assert_int_equal(count(&g, "B", "C"), 1);
    assert_int_equal(count(&g, "B", "D"), 1);

    ev(&g, "t", PS_PURCHASE, "A", 10 * DAY); /* bought before the reload */
    ps_fx_flush(&g);
    assert_int_equal(ncmd(&g, "ZINCRBY", NULL), 0);
    ps_pipeline_flushed(g.p);
    ev(&g, "t", PS_PURCHASE, "B", 10 * DAY);
    assert_int_equal(count(&g, "B", "A"), 3); /* loaded 2 + t */
    assert_int_equal(count(&g, "A", "B"), 1); /* A's snapshot not loaded */
    assert_int_equal(count(&g, "B", "D"), 1); /* D is only wishlisted */
    ps_fx_flush(&g);
    assert_int_equal(ncmd(&g, "ZINCRBY", NULL), 2);
    assert_int_equal(zincr(&g, "ps:state:also:B", "A"), 1);
    /* reco: C = C[B][C] = 1 at P 1/2 (no funnels in g) */
    assert_close(zadd_score(&g, "ps:cust:t:reco", "C"), 0.5, 1e-9);
    assert_true(isnan(zadd_score(&g, "ps:cust:t:reco", "A")));
    ps_pipeline_flushed(g.p);

    /* a corrupt blob is refused */
    w1.data[w1.len - 1] ^= 0xff;
    w1.len -= 3;
    ps_customer *bad = ps_pipeline_add(g.p, ps_fx_str("t2"), w1.data, w1.len, &err);
    assert_null(bad);
    assert_int_equal(err, -5);

    ps_wbuf_clear(&w1);
    ps_wbuf_clear(&w2);
    ps_fx_clear(&g);
    ps_fx_clear(&f);
}

/* The wishlist is bounded: with copurchase_max_items = 2 a third wish
 * replaces the oldest, and purchases past the cap add no pairs. */
static void test_bounds(void **state)
{
    (void)state;
    ps_fx f;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.copurchase_max_items = 2;
    ps_fx_init_conf(&f, &conf);
    ev(&f, "a", PS_PURCHASE, "p1", H);
    ev(&f, "a", PS_PURCHASE, "p2", H);
    ev(&f, "a", PS_PURCHASE, "p3", H); /* set full: not counted */
    assert_int_equal(count(&f, "p1", "p2"), 1);
    assert_int_equal(count(&f, "p1", "p3"), 0);
    ev(&f, "b", PS_PURCHASE, "p3", H);
    ev(&f, "b", PS_WISHLIST, "w1", H);
    ev(&f, "b", PS_WISHLIST, "w2", H);
    ev(&f, "b", PS_WISHLIST, "w3", H); /* replaces w1 */
    ev(&f, "c", PS_PURCHASE, "w1", H);
    ev(&f, "c", PS_PURCHASE, "p1", H);
    ev(&f, "d", PS_PURCHASE, "w3", H);
    ev(&f, "d", PS_PURCHASE, "p2", H);
    ps_copurchase_item out[6];
    /* b: p3 (no partners), wishes w2, w3: only C[w3][p2] = 1, score
     * 1 * 1/2.  Purchase counts p1 2, p2 2, p3 2, w1 1, w3 1 (every
     * purchase counts, past the cap too): the fill-up adds p1 (1/2 * 2/3),
     * w1 and w3 (1/2 * 1/3 each; p2 listed, p3 bought) */
    long n = ps_copurchase_reco(f.p, cust(&f, "b"), 6, out);
    assert_int_equal(n, 4);
    const char *want[4] = {"p2", "p1", "w1", "w3"};
    const double score[4] = {0.5, 1.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0};
    for (int i = 0; i < 4; i++) {
        assert_true(ps_str_eq(out[i].product->id, ps_fx_str(want[i])));
        assert_close(out[i].score, score[i], 1e-12);
        assert_int_equal(out[i].popular, i > 0);
    }
    ps_fx_clear(&f);
}

/* The SET of key in f->b: its value (borrowed from the batch). */
static bool set_value(const ps_fx *f, const char *key, const char **val,
                      size_t *len)
{
    const char *argv[3];
    size_t lens[3];
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        if (ps_batch_argc(f->b, i) != 3)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "SET") == 0 && strcmp(argv[1], key) == 0) {
            *val = argv[2];
            *len = lens[2];
            return true;
        }
    }
    return false;
}

static void expect_reco(ps_fx *f, const char *c, int n, const char *const *ids,
                        const double *scores)
{
    ps_copurchase_item out[10];
    assert_int_equal(ps_copurchase_reco(f->p, cust(f, c), 10, out), n);
    for (int i = 0; i < n; i++) {
        if (!ps_str_eq(out[i].product->id, ps_fx_str(ids[i])))
            fail_msg("%s: item %d is %.*s, expected %s", c, i,
                     (int)out[i].product->id.len, out[i].product->id.ptr,
                     ids[i]);
        assert_close(out[i].score, scores[i], 1e-12);
        assert_true(out[i].popular);
    }
}

#define STATE_KEY "ps:state:agg:copurchase"

/*
 * The popular list is bounded (reco_n = 1: P = 4 products) and saved as
 * ps:state:agg:copurchase.  Purchases, in order: q1 x3, q2 x2, q3 x2,
 * q4 x1 fill the list [q1 3, q2 2, q3 2, q4 1]; q5's first purchase
 * (1, "q5") does not rank before q4 (1, "q4") and stays out; its second
 * (count 2) takes q4's place: [q1 3, q2 2, q3 2, q5 2].  A cold customer
 * z gets them with s_min = 1, n_1 + 1 = 4: 3/4, 2/4, 2/4, 2/4; its zset
 * holds reco_n = 1 of them.
 */
static void test_popular(void **state)
{
    (void)state;
    ps_fx f, g;
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.reco_n = 1;
    ps_fx_init_conf(&f, &conf);
    const char *buys[][2] = {{"b1", "q1"}, {"b2", "q1"}, {"b3", "q1"},
                             {"b1", "q2"}, {"b4", "q2"}, {"b2", "q3"},
                             {"b5", "q3"}, {"b6", "q4"}, {"b7", "q5"}};
    for (size_t i = 0; i < sizeof(buys) / sizeof(buys[0]); i++)
        ev(&f, buys[i][0], PS_PURCHASE, buys[i][1], (int64_t)(i + 1) * H);
    ev(&f, "z", PS_CLICK, "q9", 20 * H);
    const char *before[4] = {"q1", "q2", "q3", "q4"};
    const double s4[4] = {0.75, 0.5, 0.5, 0.25};
    expect_reco(&f, "z", 4, before, s4);

    ps_fx_flush(&f);
    const char *blob;
    size_t len;
    assert_true(set_value(&f, STATE_KEY, &blob, &len));
    /* version, n = 4, 4 x {u32 2, "qN", i64} */
    assert_int_equal(len, 1 + 4 + 4 * (4 + 2 + 8));
    assert_int_equal(zadd_members(&f, "ps:cust:z:reco"), 1);
    assert_true(zadd_score(&f, "ps:cust:z:reco", "q1") == 0.75);
    ps_pipeline_flushed(f.p);
    /* nothing purchased since: the state is not written again */
    ev(&f, "z", PS_CLICK, "q9", 21 * H);
    ps_fx_flush(&f);
    assert_false(set_value(&f, STATE_KEY, &blob, &len));
    ps_pipeline_flushed(f.p);

    ev(&f, "b8", PS_PURCHASE, "q5", 22 * H); /* q5: 2, q4 leaves */
    const char *after[4] = {"q1", "q2", "q3", "q5"};
    const double s5[4] = {0.75, 0.5, 0.5, 0.5};
    expect_reco(&f, "z", 4, after, s5);
    /* b1 bought q1 and q2: neither comes back; C[q1][q3] = 1 (b2) makes
     * q3 a co-purchase candidate, 1 * 1/2; then the fill-up, q5 at
     * s_min 1/2 * 2/4 = 1/4 */
    ps_copurchase_item out[4];
    assert_int_equal(ps_copurchase_reco(f.p, cust(&f, "b1"), 4, out), 2);
    assert_true(ps_str_eq(out[0].product->id, ps_fx_str("q3")));
    assert_close(out[0].score, 0.5, 1e-12);
    assert_false(out[0].popular);
    assert_true(ps_str_eq(out[1].product->id, ps_fx_str("q5")));
    assert_close(out[1].score, 0.25, 1e-12);
    assert_true(out[1].popular);
    ps_fx_flush(&f);
    assert_true(set_value(&f, STATE_KEY, &blob, &len));
    /* a failed flush writes it again */
    ps_fx_flush(&f);
    assert_true(set_value(&f, STATE_KEY, &blob, &len));

    /* restored in a new pipeline: the same list for a cold customer; a
     * product's loaded `purchases` (q5: 10) refreshes its count, so the
     * list is [q5 10, q1 3, q2 2, q3 2], n_1 + 1 = 11 */
    ps_fx_init_conf(&g, &conf);
    int ix = ps_pipeline_agg_index("copurchase");
    assert_true(ix >= 0 && ps_pipeline_has_state((size_t)ix));
    assert_int_equal(ps_pipeline_load_state(g.p, (size_t)ix, blob, len), 0);
    ps_entity *q5 = ps_pipeline_find(g.p, PS_KIND_PRODUCT, ps_fx_str("q5"));
    assert_non_null(q5);
    ps_fx_customer(&g, "y");
    expect_reco(&g, "y", 4, after, s5);
    ps_pipeline_load_field(g.p, q5, "purchases", 9, "10", 2);
    ps_fx_mark_loaded(&g);
    const char *loaded[4] = {"q5", "q1", "q2", "q3"};
    const double s10[4] = {10.0 / 11, 3.0 / 11, 2.0 / 11, 2.0 / 11};
    expect_reco(&g, "y", 4, loaded, s10);
    /* a purchase counts on top of the loaded base: q5 11 */
    ev(&g, "b9", PS_PURCHASE, "q5", 23 * H);
    const double s11[4] = {11.0 / 12, 3.0 / 12, 2.0 / 12, 2.0 / 12};
    expect_reco(&g, "y", 4, loaded, s11);

    /* corrupt or foreign blobs are refused */
    char bad[128];
    memcpy(bad, blob, len);
    bad[0] = 9; /* unknown version */
    assert_int_equal(ps_pipeline_load_state(g.p, (size_t)ix, bad, len), -5);
    bad[0] = blob[0];
    assert_int_equal(ps_pipeline_load_state(g.p, (size_t)ix, bad, len - 1),
                     -5);
    bad[5] = 0; /* an empty id */
    bad[6] = bad[7] = bad[8] = 0;
    assert_int_equal(ps_pipeline_load_state(g.p, (size_t)ix, bad, len), -5);

    ps_fx_clear(&g);
    ps_fx_clear(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_top_n),
        cmocka_unit_test(test_reco),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_popular),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
