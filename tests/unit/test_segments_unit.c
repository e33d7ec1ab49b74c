/*
 * test_segments_unit.c -- the segments aggregate through the pipeline.
 *
 * Three synthetic groups shaped like the seed (vip: mean 50,000 and many
 * purchases; regular: 40,000 and a few; premium: 60,000 and one or two)
 * purchase in rounds.  Checked: every customer with a purchase has a
 * segment; the names land on the right groups; the sizes written (HINCRBY
 * deltas summed over flushes) equal the number of customers per segment;
 * every segment_changed trigger matches a move, and a customer who moves
 * k times yields k triggers; the model round-trips through save/load;
 * a dying centre is reseeded by splitting the largest cell (test_reseed).
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

#define NCUST 300

static ps_str S(const char *s) { return (ps_str){s, (uint32_t)strlen(s)}; }

static uint64_t rng = 42;
static double rnd01(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int group_of(int i) { return i % 3; } /* 0 vip, 1 regular, 2 premium */

static void buy(ps_pipeline *p, int cust, int seq, double amount, int64_t ts)
{
    char cid[16], eid[32];
    ps_event e;
    bool late;
    int err;
    snprintf(cid, sizeof(cid), "c%d", cust);
    snprintf(eid, sizeof(eid), "e%d", seq);
    memset(&e, 0, sizeof(e));
    e.event_id = S(eid);
    e.customer_id = S(cid);
    e.type = PS_PURCHASE;
    e.product_id = S("p");
    e.has_amount = true;
    e.amount = amount;
    e.ts = ts;
    ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, e.customer_id);
    if (c == NULL)
        c = ps_pipeline_add(p, e.customer_id, NULL, 0, &err);
    assert_non_null(c);
    assert_int_equal(ps_pipeline_apply(p, &e, c, &late), 0);
}

/* Read the flush: sizes (HINCRBY ps:segment:k size), customer segments
 * (HSET ps:cust:* segment/segment_name), triggers, segment names. */
typedef struct seen {
    long long size[3];
    int cust_seg[NCUST];
    char names[3][24];
    int triggers;
    int moves_by[NCUST];
    double cent_amount[3], cent_count[3];
} seen;

static void read_flush(const ps_batch *b, seen *sn)
{
    const char *argv[128];
    size_t lens[128];
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 128)
            continue;
        ps_batch_argv(b, i, argv, lens);
        int k;
        if (strcmp(argv[0], "HINCRBY") == 0 &&
            sscanf(argv[1], "ps:segment:%d", &k) == 1 &&
            strcmp(argv[2], "size") == 0)
            sn->size[k] += strtoll(argv[3], NULL, 10);
        if (strcmp(argv[0], "HSET") == 0 &&
            sscanf(argv[1], "ps:segment:%d", &k) == 1) {
            for (size_t a = 2; a + 1 < argc; a += 2) {
                if (strcmp(argv[a], "name") == 0)
                    snprintf(sn->names[k], sizeof(sn->names[k]), "%s",
                             argv[a + 1]);
                else if (strcmp(argv[a], "centroid_mean_amount") == 0)
                    sn->cent_amount[k] = strtod(argv[a + 1], NULL);
                else if (strcmp(argv[a], "centroid_purchases") == 0)
                    sn->cent_count[k] = strtod(argv[a + 1], NULL);
            }
        }
        int c;
        if (strcmp(argv[0], "HSET") == 0 &&
            sscanf(argv[1], "ps:cust:c%d", &c) == 1)
            for (size_t a = 2; a + 1 < argc; a += 2)
                if (strcmp(argv[a], "segment") == 0)
                    sn->cust_seg[c] = atoi(argv[a + 1]);
        if (strcmp(argv[0], "XADD") == 0)
            for (size_t a = 6; a + 1 < argc; a += 2)
                if (strcmp(argv[a], "type") == 0 &&
                    strcmp(argv[a + 1], "segment_changed") == 0) {
                    sn->triggers++;
                    for (size_t q = 6; q + 1 < argc; q += 2)
                        if (strcmp(argv[q], "customer") == 0 &&
                            sscanf(argv[q + 1], "c%d", &c) == 1)
                            sn->moves_by[c]++;
                }
    }
}

static void test_segments(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 64;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    seen sn;
    memset(&sn, 0, sizeof(sn));
    for (int i = 0; i < NCUST; i++)
        sn.cust_seg[i] = -1;
    assert_non_null(p);

    int seq = 0;
    static double n_of[NCUST], mean_of[NCUST]; /* features, recomputed */
    /* rounds of purchases: vip buy every round, regular every third,
     * premium in the first two rounds only */
    for (int round = 0; round < 12; round++) {
        for (int i = 0; i < NCUST; i++) {
            int g = group_of(i);
            if ((g == 1 && round % 3 != 0) || (g == 2 && round >= 2))
                continue;
            double mean = g == 0 ? 50000 : g == 1 ? 40000 : 60000;
            double sd = g == 0 ? 3000 : g == 1 ? 2000 : 3000;
            double amount = mean + sd * (rnd01() + rnd01() + rnd01() - 1.5);
            seq++;
            buy(p, i, seq, amount, 1000 + seq);
            n_of[i] += 1;
            mean_of[i] += (amount - mean_of[i]) / n_of[i];
        }
        ps_batch_clear(b);
        ps_pipeline_write(p, b);
        read_flush(b, &sn);
        ps_pipeline_flushed(p);
    }

    /* names: vip = most purchases, premium = higher mean of the rest */
    int by_group[3][3] = {{0}};
    for (int i = 0; i < NCUST; i++) {
        assert_true(sn.cust_seg[i] >= 0 && sn.cust_seg[i] < 3);
        by_group[group_of(i)][sn.cust_seg[i]]++;
    }
    static const char *const want[3] = {"vip", "regular", "premium"};
    for (int g = 0; g < 3; g++) {
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (by_group[g][k] > by_group[g][best])
                best = k;
        assert_string_equal(sn.names[best], want[g]);
        assert_true(by_group[g][best] >= 95); /* of 100 */
    }
    /* sizes written = customers per segment */
    for (int k = 0; k < 3; k++) {
        long long n = 0;
        for (int i = 0; i < NCUST; i++)
            n += sn.cust_seg[i] == k;
        assert_int_equal(sn.size[k], n);
    }
    assert_int_equal(sn.size[0] + sn.size[1] + sn.size[2], NCUST);
    /* every centroid is the exact mean of its current members' features
     * (one point per customer, not per purchase) */
    for (int k = 0; k < 3; k++) {
        double n = 0, sa = 0, sc = 0;
        for (int i = 0; i < NCUST; i++)
            if (sn.cust_seg[i] == k) {
                n++;
                sa += mean_of[i];
                sc += n_of[i];
            }
        assert_true(n > 0);
        double want_a = sa / n, want_c = sc / n;
        if (fabs(sn.cent_amount[k] - want_a) > 1e-6 * want_a ||
            fabs(sn.cent_count[k] - want_c) > 1e-6 * want_c)
            fail_msg("segment %d centroid (%.6f, %.6f), members' mean "
                     "(%.6f, %.6f)",
                     k, sn.cent_amount[k], sn.cent_count[k], want_a, want_c);
    }
    /* triggers: one per move; a move is any change after the first
     * assignment, so sizes only balance if each had exactly one */
    int moved = 0;
    for (int i = 0; i < NCUST; i++)
        moved += sn.moves_by[i];
    assert_int_equal(moved, sn.triggers);
    printf("segments: %d segment_changed triggers, groups -> segments "
           "vip %d/%d/%d regular %d/%d/%d premium %d/%d/%d\n",
           sn.triggers, by_group[0][0], by_group[0][1], by_group[0][2],
           by_group[1][0], by_group[1][1], by_group[1][2], by_group[2][0],
           by_group[2][1], by_group[2][2]);

    /* the model round-trips: a new pipeline loaded with the saved state
     * assigns a fresh vip-like customer the same way */
    ps_pipeline *q = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(q);
    int si = ps_pipeline_agg_index("segments");
    assert_true(si >= 0);
    /* make the model "changed" so save_state writes it */
    buy(p, 0, ++seq, 50000, 999999);
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    const char *argv[8];
    size_t lens[8];
    bool loaded = false;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        if (ps_batch_argc(b, i) != 3)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (strcmp(argv[0], "SET") == 0 &&
            strcmp(argv[1], "ps:state:agg:segments") == 0) {
            assert_int_equal(
                ps_pipeline_load_state(q, (size_t)si, argv[2], lens[2]), 0);
            loaded = true;
            /* every truncation is rejected */
            for (size_t n = 0; n < lens[2]; n += 7)
                assert_int_equal(
                    ps_pipeline_load_state(q, (size_t)si, argv[2], n),
                    PS_ERR_STATE);
        }
    }
    assert_true(loaded);
    ps_pipeline_destroy(q);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* Bad feature lists and names are refused with a message naming the
 * option; good ones publish centroid_{feature} and the custom names. */
static void test_config(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    static const struct {
        const char *features, *names, *needle;
    } bad[] = {
        {"mean_amount,bogus", NULL, "--segments-features"},
        {"clicks,clicks", NULL, "twice"},
        {"", NULL, "--segments-features"},
        {"mean_amount,purchases", "a,b", "--segments-names"},
        {"mean_amount,purchases", "a,b,c,d", "--segments-names"},
        {"mean_amount,purchases", "a,,c", "--segments-names"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ps_agg_conf_defaults(&conf);
        conf.segments_features = bad[i].features;
        conf.segments_names = bad[i].names;
        err[0] = '\0';
        ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
        assert_null(p);
        if (strstr(err, bad[i].needle) == NULL)
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err,
                     bad[i].needle);
    }

    ps_agg_conf_defaults(&conf);
    conf.segments_features = "clicks,mean_amount,purchases,total_spend";
    conf.segments_names = "gold,silver,bronze";
    conf.segments_batch = 16;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(p);
    int seq = 0;
    for (int round = 0; round < 4; round++)
        for (int i = 0; i < 60; i++) {
            int g = group_of(i);
            if (g == 2 && round > 0)
                continue;
            double amount = g == 0 ? 50000 : g == 1 ? 40000 : 60000;
            seq++;
            buy(p, i, seq, amount + 10 * i, 1000 + seq);
        }
    ps_batch *b = ps_batch_new("ps:");
    ps_pipeline_write(p, b);
    const char *argv[64];
    size_t lens[64];
    int with_fields = 0, named[3] = {0};
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 64)
            continue;
        ps_batch_argv(b, i, argv, lens);
        int k;
        if (strcmp(argv[0], "HSET") != 0 ||
            sscanf(argv[1], "ps:segment:%d", &k) != 1)
            continue;
        int f = 0;
        for (size_t a = 2; a + 1 < argc; a += 2) {
            f += strcmp(argv[a], "centroid_clicks") == 0 ||
                 strcmp(argv[a], "centroid_mean_amount") == 0 ||
                 strcmp(argv[a], "centroid_purchases") == 0 ||
                 strcmp(argv[a], "centroid_total_spend") == 0;
            if (strcmp(argv[a], "name") == 0) {
                named[0] += strcmp(argv[a + 1], "gold") == 0;
                named[1] += strcmp(argv[a + 1], "silver") == 0;
                named[2] += strcmp(argv[a + 1], "bronze") == 0;
            }
        }
        with_fields += f == 4;
    }
    assert_int_equal(with_fields, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(named[i], 1);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

/* With a half-life the centre follows recent points; without, it is the
 * mean of all members.  k = 1: 100 customers buy at 40,000, then 100 at
 * 60,000. */
static double one_centre(double half_life)
{
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_k = 1;
    conf.segments_batch = 16;
    conf.segments_half_life = half_life;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    assert_non_null(p);
    for (int i = 0; i < 200; i++)
        buy(p, i, i + 1, i < 100 ? 40000 : 60000, 1000 + i);
    ps_batch *b = ps_batch_new("ps:");
    ps_pipeline_write(p, b);
    double c = NAN;
    const char *argv[64];
    size_t lens[64];
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > 64)
            continue;
        ps_batch_argv(b, i, argv, lens);
        if (strcmp(argv[0], "HSET") == 0 &&
            strcmp(argv[1], "ps:segment:0") == 0)
            for (size_t a = 2; a + 1 < argc; a += 2)
                if (strcmp(argv[a], "centroid_mean_amount") == 0)
                    c = strtod(argv[a + 1], NULL);
    }
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
    return c;
}

static void test_forgetting(void **state)
{
    (void)state;
    double exact = one_centre(0), forget = one_centre(10);
    printf("one centre: exact %.2f, half-life 10 points %.2f\n", exact,
           forget);
    assert_true(fabs(exact - 50000) < 1e-6);
    /* after 100 points at 60,000 with half-life 10, the weight of the
     * older ones is 0.5^10 of theirs: the centre is within 0.1 % of it */
    assert_true(forget > 59940 && forget <= 60000);
}

/*
 * A dying centre is reseeded by splitting the largest cell.  k = 3 on the
 * default features (every customer buys once, so only the amount
 * differs): groups A (15,000..25,000), B (55,000..65,000) and C (about
 * 200,000).  The first mini-batch holds 6 A, 6 B and 4 C customers, so
 * k-means++ gives C its own centre.  Then 300 A and 100 B customers
 * arrive, C none: once there are 100 k = 300 members, C's 4 are fewer than
 * members / (20 k) = members / 60, and the next sweep reseeds that centre:
 * its members go to their nearest other centre (B's), and a typical member
 * of the largest cell (A's) moves to it; later A customers then split
 * between the two centres in A's range.  Checked (the second half only
 * with RESEED_SPLITS_LARGEST, see below): before, C's customers
 * share a segment of their own; after, that segment id is in A's range
 * (centroid within 15,000..25,000) and holds A customers only, while A's
 * customers are spread over it and A's first segment; C's customers are
 * in B's segment, each moved with a segment_changed trigger (one per
 * move); the sizes written (HINCRBY deltas summed over the flushes) equal
 * the number of customers per segment at every flush, and add up to all
 * customers.
 */
#define RS_N 616

/* 1: assert the reseed as segments.c documents it.  0 (for now): segments.c
 * parks the dying centre, but move() re-syncs the cell a member leaves
 * (sync_centre(s, from)), which puts the centre back at the remaining
 * members' mean after the first of them has moved: only one member leaves
 * per reseed, the typical member of the largest cell joins a cell still
 * centred on the others and returns at the next sweep, and the centre is
 * never moved into the largest cell (observed: one C customer and two A
 * customers moving back and forth at every sweep).  Fix in segments.c:
 * do not sync the parked centre while its members move away. */
#ifndef RESEED_SPLITS_LARGEST
#define RESEED_SPLITS_LARGEST 1
#endif

typedef struct rs_seen {
    long long size[3];
    int seg[RS_N];
    int moves[RS_N];
    int triggers;
    double centre[3];
} rs_seen;

static void rs_buy(ps_pipeline *p, int cust, double amount, int64_t ts)
{
    char cid[16], eid[32];
    ps_event e;
    bool late;
    int err;
    snprintf(cid, sizeof(cid), "r%d", cust);
    snprintf(eid, sizeof(eid), "rs%d", cust);
    memset(&e, 0, sizeof(e));
    e.event_id = S(eid);
    e.customer_id = S(cid);
    e.type = PS_PURCHASE;
    e.product_id = S("p");
    e.has_amount = true;
    e.amount = amount;
    e.ts = ts;
    ps_customer *c = ps_pipeline_add(p, e.customer_id, NULL, 0, &err);
    assert_non_null(c);
    assert_int_equal(ps_pipeline_apply(p, &e, c, &late), 0);
}

static void rs_flush(ps_pipeline *p, ps_batch *b, rs_seen *sn)
{
    const char *argv[128];
    size_t lens[128];
    ps_batch_clear(b);
    ps_pipeline_write(p, b);
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        int k, c;
        assert_true(argc <= 128);
        ps_batch_argv(b, i, argv, lens);
        if (!strcmp(argv[0], "HINCRBY") &&
            sscanf(argv[1], "ps:segment:%d", &k) == 1 &&
            !strcmp(argv[2], "size"))
            sn->size[k] += strtoll(argv[3], NULL, 10);
        if (!strcmp(argv[0], "HSET") &&
            sscanf(argv[1], "ps:segment:%d", &k) == 1)
            for (size_t a = 2; a + 1 < argc; a += 2)
                if (!strcmp(argv[a], "centroid_mean_amount"))
                    sn->centre[k] = strtod(argv[a + 1], NULL);
        if (!strcmp(argv[0], "HSET") && sscanf(argv[1], "ps:cust:r%d", &c) == 1)
            for (size_t a = 2; a + 1 < argc; a += 2)
                if (!strcmp(argv[a], "segment"))
                    sn->seg[c] = atoi(argv[a + 1]);
        if (!strcmp(argv[0], "XADD")) {
            bool changed = false;
            int who = -1;
            for (size_t a = 6; a + 1 < argc; a += 2) {
                if (!strcmp(argv[a], "type"))
                    changed = !strcmp(argv[a + 1], "segment_changed");
                if (!strcmp(argv[a], "customer"))
                    sscanf(argv[a + 1], "r%d", &who);
            }
            if (changed && who >= 0) {
                sn->triggers++;
                sn->moves[who]++;
            }
        }
    }
    ps_pipeline_flushed(p);
    /* sizes = customers per segment, at every flush */
    long long per[3] = {0, 0, 0};
    for (int i = 0; i < RS_N; i++)
        if (sn->seg[i] >= 0)
            per[sn->seg[i]]++;
    for (int k = 0; k < 3; k++)
        assert_int_equal(sn->size[k], per[k]);
}

static void test_reseed(void **state)
{
    (void)state;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    conf.segments_batch = 16;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    static rs_seen sn;
    static char group[RS_N];
    int64_t ts = 1000;
    assert_non_null(p);
    memset(&sn, 0, sizeof(sn));
    for (int i = 0; i < RS_N; i++)
        sn.seg[i] = -1;
    rng = 7;

    /* the first mini-batch: A B C A B C ... (4 C), then A B */
    int n = 0;
    for (int i = 0; i < 16; i++) {
        char g = i < 12 ? "ABC"[i % 3] : "AB"[i % 2];
        group[n] = g;
        double amount = g == 'A'   ? 15000 + 10000 * rnd01()
                        : g == 'B' ? 55000 + 10000 * rnd01()
                                   : 199000 + 2000 * rnd01();
        rs_buy(p, n++, amount, ts++);
    }
    rs_flush(p, b, &sn);
    int kc = sn.seg[2], ka = sn.seg[0], kb = sn.seg[1];
    assert_true(ka >= 0 && kb >= 0 && kc >= 0 && ka != kb && kb != kc &&
                ka != kc);
    for (int i = 0; i < n; i++)
        assert_int_equal(sn.seg[i], group[i] == 'A'   ? ka
                                    : group[i] == 'B' ? kb
                                                      : kc);
    assert_true(sn.centre[kc] > 190000);

    /* 300 A and 100 B, no C: C's centre dies and is reseeded */
    while (n < RS_N) {
        char g = n % 4 == 3 ? 'B' : 'A';
        group[n] = g;
        rs_buy(p, n++, g == 'A' ? 15000 + 10000 * rnd01()
                                : 55000 + 10000 * rnd01(),
               ts++);
        if (n % 50 == 0)
            rs_flush(p, b, &sn);
    }
    rs_flush(p, b, &sn);

    int a_in[3] = {0, 0, 0}, c_in[3] = {0, 0, 0}, c_moves = 0;
    for (int i = 0; i < n; i++) {
        if (group[i] == 'C') {
            c_in[sn.seg[i]]++;
            c_moves += sn.moves[i];
        } else if (group[i] == 'A') {
            a_in[sn.seg[i]]++;
        }
    }
    /* the sizes were checked at every flush; one trigger per move */
    assert_int_equal(sn.size[0] + sn.size[1] + sn.size[2], RS_N);
    int moves = 0;
    for (int i = 0; i < n; i++)
        moves += sn.moves[i];
    assert_int_equal(moves, sn.triggers);
    /* C's centre was found dying: its members were moved at least once */
    assert_true(c_moves >= 1);
    printf("reseed: C's customers in segments %d/%d/%d after %d moves; "
           "segment %d (C's) centroid %.0f holds %d of A's customers, A's "
           "segment %d %d; %d segment_changed\n",
           c_in[0], c_in[1], c_in[2], c_moves, kc, sn.centre[kc], a_in[kc],
           ka, a_in[ka], sn.triggers);
#if RESEED_SPLITS_LARGEST
    /* all of C's customers went to B's segment, the reseeded centre kept
     * its id and sits inside A's range, splitting A's customers with A's
     * first centre; B's customers never moved */
    assert_int_equal(c_in[kb], 4);
    for (int i = 0; i < n; i++)
        if (group[i] == 'B')
            assert_int_equal(sn.seg[i], kb);
        else if (group[i] == 'A')
            assert_true(sn.seg[i] == ka || sn.seg[i] == kc);
    assert_true(sn.centre[kc] >= 15000 && sn.centre[kc] <= 25000);
    assert_true(sn.centre[ka] >= 15000 && sn.centre[ka] <= 25000);
    assert_true(a_in[kc] >= 2 && a_in[ka] >= 2);
#endif
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_forgetting),
        cmocka_unit_test(test_reseed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
