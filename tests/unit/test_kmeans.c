/*
 * test_kmeans.c -- unit tests for aggregates/kmeans.c.
 *
 * Expected values are worked out by hand in the comments next to them:
 *   - three blobs of 4 points (2-D): A (0,0) (1,0) (0,1) (1,1), mean
 *     (0.5, 0.5); B (10,10) (12,10) (10,12) (12,12), mean (11, 11);
 *     C (20,0) (21,0) (20,3) (21,3), mean (20.5, 1.5).  Inertia at the blob
 *     means: A 4 x 0.5 = 2, B 4 x 2 = 8, C 4 x (0.25 + 2.25) = 10, total 20.
 *   - learning rate 1/count on 2, 4, 9 gives 2, 3, 5 (running means), and
 *     with half-life 1 (factor 1/2 per step) Spark's rule
 *     c' = (c n a + x) / (n a + 1): 2, 10/3, 23/3.5.
 *   - a dying centre reseeded at the farthest batch point (1-D scenario).
 *   - adjusted Rand index: scikit-learn's documented example
 *     ARI([0,0,1,2], [0,0,1,1]) = 0.57 (exactly 4/7), and
 *     ARI([0,0,0,1,1,1], [0,0,1,1,2,2]) = 0.8 / 3.3 = 8/33.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../aggregates/kmeans.h"
#include "../../common/error.h"

#define assert_close(got, want, tol)                                           \
    assert_close_at((got), (want), (tol), #got, __FILE__, __LINE__)

static void assert_close_at(double got, double want, double tol,
                            const char *expr, const char *file, int line)
{
    if (!(fabs(got - want) <= tol)) {
        print_error("%s = %.17g, want %.17g +- %g (off by %g)\n", expr, got,
                    want, tol, got - want);
        _fail(file, line);
    }
}

static const double blobs[12][2] = {
    {0, 0}, {10, 10}, {20, 0}, {1, 0}, {12, 10}, {21, 0},
    {0, 1}, {10, 12}, {20, 3}, {1, 1}, {12, 12}, {21, 3},
};
static const double blob_mean[3][2] = {{0.5, 0.5}, {11, 11}, {20.5, 1.5}};

static ps_kmeans_t *make(int k, int d, int batch, uint64_t seed, int init_iters)
{
    ps_kmeans_conf conf;
    char err[128];
    ps_kmeans_conf_default(&conf);
    conf.k = k;
    conf.d = d;
    conf.batch = batch;
    conf.seed = seed;
    conf.init_iters = init_iters;
    ps_kmeans_t *km = ps_kmeans_new(&conf, err, sizeof(err));
    assert_non_null(km);
    return km;
}

/* Bytes of the saved state (caller frees data). */
static ps_wbuf saved(const ps_kmeans_t *km)
{
    ps_wbuf wb;
    ps_wbuf_init(&wb);
    ps_kmeans_save(km, &wb);
    assert_false(wb.oom);
    return wb;
}

static void assert_same_state(const ps_kmeans_t *a, const ps_kmeans_t *b)
{
    ps_wbuf wa = saved(a), wb = saved(b);
    assert_int_equal(wa.len, wb.len);
    assert_memory_equal(wa.data, wb.data, wa.len);
    ps_wbuf_clear(&wa);
    ps_wbuf_clear(&wb);
}

/* ---------------------------------------------------------------------- */

static void test_config_and_before_init(void **state)
{
    (void)state;
    ps_kmeans_conf conf;
    char err[128] = "";
    ps_kmeans_conf_default(&conf);
    assert_int_equal(conf.k, 3);
    assert_int_equal(conf.d, 2);

    ps_kmeans_conf bad = conf;
    bad.k = 0;
    assert_null(ps_kmeans_new(&bad, err, sizeof(err)));
    assert_true(strlen(err) > 0);
    bad = conf;
    bad.k = PS_KMEANS_MAX_K + 1;
    assert_null(ps_kmeans_new(&bad, err, sizeof(err)));
    bad = conf;
    bad.d = 9;
    assert_null(ps_kmeans_new(&bad, err, sizeof(err)));
    bad = conf;
    bad.batch = 2; /* < k */
    assert_null(ps_kmeans_new(&bad, err, sizeof(err)));
    bad = conf;
    bad.half_life = NAN;
    assert_null(ps_kmeans_new(&bad, err, sizeof(err)));
    bad = conf;
    bad.min_weight = -1;
    assert_null(ps_kmeans_new(&bad, err, sizeof(err)));
    ps_kmeans_destroy(NULL);

    ps_kmeans_t *km = make(3, 2, 12, 1, 10);
    const double x[2] = {1, 2}, bad_x[2] = {1, NAN};
    const char *names[3];
    assert_int_equal(ps_kmeans_assign(km, x), -1);
    assert_null(ps_kmeans_centre(km, 0));
    assert_true(isnan(ps_kmeans_inertia(km, x, 1)));
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), -1);
    assert_int_equal(ps_kmeans_observe(km, bad_x), PS_ERR);
    assert_int_equal(ps_kmeans_buffered(km), 0);
    assert_int_equal(ps_kmeans_observe(km, x), 0);
    assert_int_equal(ps_kmeans_observe(km, x), 0);
    assert_int_equal(ps_kmeans_flush(km), 0); /* 2 < k points */
    assert_int_equal(ps_kmeans_buffered(km), 2);
    assert_false(ps_kmeans_initialised(km));
    ps_kmeans_destroy(km);
}

static void test_kmeanspp_deterministic(void **state)
{
    (void)state;
    /* Seeding alone (max_iter 0): the same seed gives the same centres,
     * each one a data point, and on these blobs one per blob. */
    double c1[6], c2[6];
    for (uint64_t seed = 1; seed <= 20; seed++) {
        assert_int_equal(
            ps_kmeans_lloyd(&blobs[0][0], 12, 2, 3, 0, 1, seed, c1, NULL, NULL),
            PS_OK);
        assert_int_equal(
            ps_kmeans_lloyd(&blobs[0][0], 12, 2, 3, 0, 1, seed, c2, NULL, NULL),
            PS_OK);
        assert_memory_equal(c1, c2, sizeof(c1));
        for (int i = 0; i < 3; i++) {
            int found = 0;
            for (int p = 0; p < 12; p++)
                found |=
                    c1[2 * i] == blobs[p][0] && c1[2 * i + 1] == blobs[p][1];
            assert_true(found);
        }
    }

    /* Online: two models, same seed and points, identical state. */
    ps_kmeans_t *a = make(3, 2, 12, 7, 0), *b = make(3, 2, 12, 7, 0);
    for (int p = 0; p < 12; p++) {
        ps_kmeans_observe(a, blobs[p]);
        ps_kmeans_observe(b, blobs[p]);
    }
    assert_same_state(a, b);
    ps_kmeans_destroy(a);
    ps_kmeans_destroy(b);
}

static void check_blobs(ps_kmeans_t *km)
{
    int label[3];
    for (int b = 0; b < 3; b++) {
        label[b] = ps_kmeans_assign(km, blob_mean[b]);
        const double *c = ps_kmeans_centre(km, label[b]);
        assert_non_null(c);
        assert_close(c[0], blob_mean[b][0], 1e-6);
        assert_close(c[1], blob_mean[b][1], 1e-6);
    }
    assert_true(label[0] != label[1] && label[1] != label[2] &&
                label[0] != label[2]);
    /* every point is assigned to its blob's centre */
    for (int p = 0; p < 12; p++)
        assert_int_equal(ps_kmeans_assign(km, blobs[p]), label[p % 3]);
    assert_close(ps_kmeans_inertia(km, &blobs[0][0], 12), 20, 1e-9);
}

static void test_blobs(void **state)
{
    (void)state;
    /* Pure mini-batch (no Lloyd on the first batch) and with Lloyd. */
    for (int init_iters = 0; init_iters <= 10; init_iters += 10) {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            ps_kmeans_t *km = make(3, 2, 12, seed, init_iters);
            for (int pass = 0; pass < 5; pass++)
                for (int p = 0; p < 12; p++)
                    assert_int_equal(ps_kmeans_observe(km, blobs[p]), p == 11);
            assert_int_equal(ps_kmeans_steps(km), 5);
            check_blobs(km);
            for (int i = 0; i < 3; i++)
                assert_close(ps_kmeans_weight(km, i), 20, 0);
            assert_int_equal(ps_kmeans_reseeds(km), 0);
            ps_kmeans_destroy(km);
        }
    }

    /* Batch Lloyd on the same data: blob means, inertia 20, labels. */
    double c[6], inertia;
    int labels[12];
    assert_int_equal(
        ps_kmeans_lloyd(&blobs[0][0], 12, 2, 3, 100, 3, 1, c, labels, &inertia),
        PS_OK);
    assert_close(inertia, 20, 1e-9);
    assert_close(ps_kmeans_inertia_of(c, 3, 2, &blobs[0][0], 12), 20, 1e-9);
    for (int p = 0; p < 12; p++) {
        const double *m = blob_mean[p % 3];
        assert_close(c[2 * labels[p]], m[0], 1e-12);
        assert_close(c[2 * labels[p] + 1], m[1], 1e-12);
    }
    assert_int_equal(
        ps_kmeans_lloyd(&blobs[0][0], 2, 2, 3, 100, 1, 1, c, NULL, NULL),
        PS_ERR_CONFIG);
}

static void test_learning_rate(void **state)
{
    (void)state;
    /* k = 1, batch 1: the centre is the running mean of 2, 4, 9. */
    ps_kmeans_t *km = make(1, 1, 1, 1, 0);
    const double x[3] = {2, 4, 9}, want[3] = {2, 3, 5};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ps_kmeans_observe(km, &x[i]), 1);
        assert_close(ps_kmeans_centre(km, 0)[0], want[i], 1e-15);
        assert_close(ps_kmeans_weight(km, 0), i + 1, 0);
    }
    ps_kmeans_destroy(km);

    /* k = 2, batch 3, no Lloyd: first batch {0, 10, 1} gives centres 0.5
     * (cell {0, 1}) and 10; then {2, 11, 0.5} -> 0.5 -> mean{0,1,2,0.5}
     * = 0.875 (weight 4), 10 -> mean{10, 11} = 10.5 (weight 2). */
    km = make(2, 1, 3, 3, 0);
    const double y[6] = {0, 10, 1, 2, 11, 0.5};
    for (int i = 0; i < 6; i++)
        ps_kmeans_observe(km, &y[i]);
    const double lo = 0, hi = 11;
    int ilo = ps_kmeans_assign(km, &lo), ihi = ps_kmeans_assign(km, &hi);
    assert_int_not_equal(ilo, ihi);
    assert_close(ps_kmeans_centre(km, ilo)[0], 0.875, 1e-15);
    assert_close(ps_kmeans_weight(km, ilo), 4, 0);
    assert_close(ps_kmeans_centre(km, ihi)[0], 10.5, 1e-15);
    assert_close(ps_kmeans_weight(km, ihi), 2, 0);
    ps_kmeans_destroy(km);

    /* Forgetting, half-life 1 step (a = 1/2), Spark's rule by hand:
     * 2 (n 1); (2*0.5 + 4) / 1.5 = 10/3 (n 1.5);
     * (10/3 * 0.75 + 9) / 1.75 = 11.5 / 1.75 (n 1.75). */
    ps_kmeans_conf conf;
    ps_kmeans_conf_default(&conf);
    conf.k = 1;
    conf.d = 1;
    conf.batch = 1;
    conf.half_life = 1;
    km = ps_kmeans_new(&conf, NULL, 0);
    assert_non_null(km);
    const double dw[3] = {2, 10.0 / 3, 11.5 / 1.75}, nw[3] = {1, 1.5, 1.75};
    for (int i = 0; i < 3; i++) {
        ps_kmeans_observe(km, &x[i]);
        assert_close(ps_kmeans_centre(km, 0)[0], dw[i], 1e-14);
        assert_close(ps_kmeans_weight(km, 0), nw[i], 1e-15);
    }
    ps_kmeans_destroy(km);
}

static void test_dying_centre(void **state)
{
    (void)state;
    /* 1-D, k = 2, batch 4, max_idle 2.  Batch 1 {0, 1, 10, 11}: centres
     * 0.5 and 10.5 (weights 2, 2).  Batch 2 {0, 1, 0, 1}: all to the low
     * centre (mean of 6 points 0.5, weight 6); the high one idles (1).
     * Batch 3 {0, 1, 2, 1}: low = mean of the 10 points so far = 7/10, weight
     * 10; the high one idles a second time, dies, and is reseeded at the point
     * farthest from 0.7: 2 (distances 0.49, 0.09, 1.69, 0.09), weight 1. */
    const double b1[4] = {0, 1, 10, 11}, b2[4] = {0, 1, 0, 1},
                 b3[4] = {0, 1, 2, 1};
    ps_kmeans_conf conf;
    ps_kmeans_conf_default(&conf);
    conf.k = 2;
    conf.d = 1;
    conf.batch = 4;
    conf.max_idle = 2;
    ps_kmeans_t *km = ps_kmeans_new(&conf, NULL, 0);
    assert_non_null(km);
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &b1[i]);
    int ilo = ps_kmeans_assign(km, &b1[0]), ihi = ps_kmeans_assign(km, &b1[3]);
    assert_int_not_equal(ilo, ihi);
    assert_close(ps_kmeans_centre(km, ihi)[0], 10.5, 1e-15);
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &b2[i]);
    assert_int_equal(ps_kmeans_reseeds(km), 0);
    assert_close(ps_kmeans_centre(km, ihi)[0], 10.5, 1e-15);
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &b3[i]);
    assert_int_equal(ps_kmeans_reseeds(km), 1);
    assert_close(ps_kmeans_centre(km, ilo)[0], 0.7, 1e-15);
    assert_close(ps_kmeans_weight(km, ilo), 10, 0);
    /* same index, new place */
    assert_close(ps_kmeans_centre(km, ihi)[0], 2, 0);
    assert_close(ps_kmeans_weight(km, ihi), 1, 0);
    ps_kmeans_destroy(km);

    /* The same by weight: half-life 1, min_weight 1, no idle limit.  After
     * batch 2 the idle centre weighs 2 * 1/2 = 1 (not < 1); after batch 3
     * 0.5 < 1: reseeded at 2.  The live centre follows Spark's rule:
     * batch 2: (0.5 * 1 + 2) / 5 = 0.5, n 5; batch 3: (0.5 * 2.5 + 4) / 6.5
     * = 5.25 / 6.5, n 6.5. */
    conf.max_idle = 0;
    conf.half_life = 1;
    conf.min_weight = 1;
    km = ps_kmeans_new(&conf, NULL, 0);
    assert_non_null(km);
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &b1[i]);
    ilo = ps_kmeans_assign(km, &b1[0]);
    ihi = ps_kmeans_assign(km, &b1[3]);
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &b2[i]);
    assert_int_equal(ps_kmeans_reseeds(km), 0);
    assert_close(ps_kmeans_weight(km, ihi), 1, 0);
    assert_close(ps_kmeans_centre(km, ilo)[0], 0.5, 1e-15);
    assert_close(ps_kmeans_weight(km, ilo), 5, 0);
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &b3[i]);
    assert_int_equal(ps_kmeans_reseeds(km), 1);
    assert_close(ps_kmeans_centre(km, ihi)[0], 2, 0);
    assert_close(ps_kmeans_centre(km, ilo)[0], 5.25 / 6.5, 1e-14);
    assert_close(ps_kmeans_weight(km, ilo), 6.5, 1e-14);
    ps_kmeans_destroy(km);
}

/* Deterministic pseudo-random stream of three blobs for round trips. */
static uint64_t lcg_state;
static double lcg_unit(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg_state >> 11) * 0x1.0p-53;
}

static void stream_point(double *x)
{
    int b = (int)(lcg_unit() * 3);
    x[0] = blob_mean[b][0] + 4 * (lcg_unit() - 0.5);
    x[1] = blob_mean[b][1] + 4 * (lcg_unit() - 0.5);
}

static void test_save_load(void **state)
{
    (void)state;
    ps_kmeans_conf conf;
    char err[128];
    ps_kmeans_conf_default(&conf);
    conf.batch = 16;
    conf.half_life = 5;
    conf.max_idle = 3;
    ps_kmeans_t *km = ps_kmeans_new(&conf, err, sizeof(err));
    assert_non_null(km);

    /* Saved before initialisation, with points buffered. */
    lcg_state = 99;
    double x[2];
    for (int i = 0; i < 5; i++) {
        stream_point(x);
        ps_kmeans_observe(km, x);
    }
    ps_wbuf wb = saved(km);
    ps_rbuf rb;
    ps_rbuf_init(&rb, wb.data, wb.len);
    ps_kmeans_t *copy = ps_kmeans_load(&rb, err, sizeof(err));
    assert_non_null(copy);
    assert_int_equal(ps_rbuf_left(&rb), 0);
    assert_same_state(km, copy);
    ps_kmeans_destroy(copy);
    ps_wbuf_clear(&wb);

    /* Mid-stream, named, 7 points buffered. */
    for (int i = 0; i < 16 * 20 + 2; i++) {
        stream_point(x);
        ps_kmeans_observe(km, x);
    }
    const char *names[3], *names2[3];
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 3);
    assert_int_equal(ps_kmeans_buffered(km), 7);
    wb = saved(km);
    ps_rbuf_init(&rb, wb.data, wb.len);
    copy = ps_kmeans_load(&rb, err, sizeof(err));
    assert_non_null(copy);
    assert_same_state(km, copy);

    /* Identical behaviour afterwards, step by step. */
    for (int i = 0; i < 16 * 30; i++) {
        stream_point(x);
        int ra = ps_kmeans_observe(km, x);
        int rc = ps_kmeans_observe(copy, x);
        assert_int_equal(ra, rc);
        assert_int_equal(ps_kmeans_assign(km, x), ps_kmeans_assign(copy, x));
        if (ra == 1) {
            assert_int_equal(ps_kmeans_name(km, 0, 1, names),
                             ps_kmeans_name(copy, 0, 1, names2));
            for (int j = 0; j < 3; j++)
                assert_string_equal(names[j], names2[j]);
        }
    }
    assert_same_state(km, copy);
    ps_kmeans_destroy(copy);

    /* Every truncation is rejected. */
    for (size_t len = 0; len < wb.len; len++) {
        ps_rbuf_init(&rb, wb.data, len);
        assert_null(ps_kmeans_load(&rb, err, sizeof(err)));
    }
    /* Corruptions: magic, version, k, d, a NaN centre, a negative weight,
     * a duplicate role. Offsets: magic 0, version 4, k 5, d 9, batch 13,
     * seed 17, half_life 25, min_weight 33, max_idle 41, init_iters 45,
     * margin 49, init 57, named 58, name dims 59, 63, rng 67, steps 75,
     * reseeds 83, nbuf 91, then per centre: 2 coords, weight, idle, role
     * (8 + 8 + 8 + 4 + 4 = 32 bytes) from 95. */
    struct {
        size_t off;
        unsigned char byte;
    } flips[] = {
        {0, 'X'}, {4, 2},  {5, 0},    {5, 17}, {9, 9},
        {57, 2},  {58, 7}, {91, 200}, {59, 5},
    };
    unsigned char *bad = malloc(wb.len);
    assert_non_null(bad);
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        memcpy(bad, wb.data, wb.len);
        bad[flips[i].off] = flips[i].byte;
        ps_rbuf_init(&rb, bad, wb.len);
        assert_null(ps_kmeans_load(&rb, err, sizeof(err)));
    }
    /* NaN coordinate of centre 0 */
    memcpy(bad, wb.data, wb.len);
    double nan = NAN;
    uint64_t u;
    memcpy(&u, &nan, 8);
    for (int i = 0; i < 8; i++)
        bad[95 + i] = (unsigned char)(u >> (8 * i));
    ps_rbuf_init(&rb, bad, wb.len);
    assert_null(ps_kmeans_load(&rb, err, sizeof(err)));
    /* negative weight of centre 0: sign bit of byte 95 + 16 + 7 */
    memcpy(bad, wb.data, wb.len);
    bad[95 + 16 + 7] |= 0x80;
    ps_rbuf_init(&rb, bad, wb.len);
    assert_null(ps_kmeans_load(&rb, err, sizeof(err)));
    /* role of centre 1 := role of centre 0 */
    memcpy(bad, wb.data, wb.len);
    memcpy(bad + 95 + 32 + 28, bad + 95 + 28, 4);
    ps_rbuf_init(&rb, bad, wb.len);
    assert_null(ps_kmeans_load(&rb, err, sizeof(err)));
    free(bad);
    ps_wbuf_clear(&wb);
    ps_kmeans_destroy(km);
}

/* The seed's segments in original units: vip 50,000 with many purchases
 * (4-6), regular 40,000 and premium 60,000 with few (1-3).  Clustered after
 * a fixed standardisation, named in standardised space (ranks are the same
 * in original units). */
static void test_names_seed_shape(void **state)
{
    (void)state;
    static const double truth[3][2] = {{50000, 5}, {40000, 2}, {60000, 2}};
    static const char *const want[3] = {"vip", "regular", "premium"};
    ps_kmeans_conf conf;
    ps_kmeans_conf_default(&conf);
    conf.batch = 64;
    ps_kmeans_t *km = ps_kmeans_new(&conf, NULL, 0);
    assert_non_null(km);
    lcg_state = 5;
    for (int i = 0; i < 64 * 20; i++) {
        int b = (int)(lcg_unit() * 3);
        double amount = truth[b][0] + 6000 * (lcg_unit() - 0.5);
        double count = truth[b][1] + floor(3 * lcg_unit()) - 1;
        double z[2] = {(amount - 50000) / 8000, (count - 3) / 1.5};
        ps_kmeans_observe(km, z);
    }
    const char *names[3];
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 3);
    for (int b = 0; b < 3; b++) {
        double z[2] = {(truth[b][0] - 50000) / 8000, (truth[b][1] - 3) / 1.5};
        assert_string_equal(names[ps_kmeans_assign(km, z)], want[b]);
    }
    /* Again: nothing moved, nothing renamed. */
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 0);
    /* Generic rule on the same centres: segment-r by ascending amount. */
    assert_int_equal(ps_kmeans_name(km, 0, -1, names), 3);
    for (int b = 0; b < 3; b++) {
        double z[2] = {(truth[b][0] - 50000) / 8000, (truth[b][1] - 3) / 1.5};
        static const char *const rank[3] = {"segment-1", "segment-0",
                                            "segment-2"};
        assert_string_equal(names[ps_kmeans_assign(km, z)], rank[b]);
    }
    ps_kmeans_destroy(km);
}

/* Names under drift: batch = k = 3 and a near-total forgetting (half-life
 * 1e-3 steps) so each step puts every centre exactly on its one point.
 * Features (amount, count).  Start: A (70, 20) vip, B (40, 0) regular,
 * C (60, 10) premium.  Amount spread over the centres is then 20 or more,
 * so the margin is 0.1 x 20 = 2. */
static void test_names_hysteresis(void **state)
{
    (void)state;
    ps_kmeans_conf conf;
    ps_kmeans_conf_default(&conf);
    conf.k = 3;
    conf.d = 2;
    conf.batch = 3;
    conf.half_life = 1e-3;
    conf.rename_margin = 0.1;
    ps_kmeans_t *km = ps_kmeans_new(&conf, NULL, 0);
    assert_non_null(km);
    const double s1[3][2] = {{70, 20}, {40, 0}, {60, 10}};
    for (int i = 0; i < 3; i++)
        ps_kmeans_observe(km, s1[i]);
    int ia = ps_kmeans_assign(km, s1[0]), ib = ps_kmeans_assign(km, s1[1]),
        ic = ps_kmeans_assign(km, s1[2]);
    const char *names[3];
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 3);
    assert_string_equal(names[ia], "vip");
    assert_string_equal(names[ib], "regular");
    assert_string_equal(names[ic], "premium");

    /* B moves to (50.5, 0), C to (50, 10): regular's amount beats
     * premium's by 0.5 < 2: names kept.  (Each point is nearest its own
     * centre: (50.5, 0) is 10.5 from B, 13.8 from C.) */
    const double s2[3][2] = {{70, 20}, {50.5, 0}, {50, 10}};
    for (int i = 0; i < 3; i++)
        ps_kmeans_observe(km, s2[i]);
    assert_close(ps_kmeans_centre(km, ib)[0], 50.5, 1e-12);
    assert_close(ps_kmeans_centre(km, ic)[0], 50, 1e-12);
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 0);
    assert_string_equal(names[ib], "regular");
    assert_string_equal(names[ic], "premium");

    /* B moves to (53, 0): beats C by 3 > 2: premium and regular swap. */
    const double s3[3][2] = {{70, 20}, {53, 0}, {50, 10}};
    for (int i = 0; i < 3; i++)
        ps_kmeans_observe(km, s3[i]);
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 2);
    assert_string_equal(names[ia], "vip");
    assert_string_equal(names[ib], "premium");
    assert_string_equal(names[ic], "regular");

    /* vip: C's count rises to 21 (> 20 + 0.1 x 21 = 22.1? no): kept;
     * then to 24 (> 20 + 0.1 x 24): C becomes vip, and of A (70) and
     * B (53) A has the larger amount: premium. */
    const double s4[3][2] = {{70, 20}, {53, 0}, {50, 21}};
    for (int i = 0; i < 3; i++)
        ps_kmeans_observe(km, s4[i]);
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 0);
    assert_string_equal(names[ia], "vip");
    const double s5[3][2] = {{70, 20}, {53, 0}, {50, 24}};
    for (int i = 0; i < 3; i++)
        ps_kmeans_observe(km, s5[i]);
    assert_close(ps_kmeans_centre(km, ic)[1], 24, 1e-12);
    assert_int_equal(ps_kmeans_name(km, 0, 1, names), 3);
    assert_string_equal(names[ic], "vip");
    assert_string_equal(names[ia], "premium");
    assert_string_equal(names[ib], "regular");
    ps_kmeans_destroy(km);
}

static void test_names_generic(void **state)
{
    (void)state;
    /* k = 4, 1-D, batch 4: centres on 30, 10, 40, 20 -> ranks by ascending
     * value. */
    ps_kmeans_t *km = make(4, 1, 4, 1, 0);
    const double v[4] = {30, 10, 40, 20};
    for (int i = 0; i < 4; i++)
        ps_kmeans_observe(km, &v[i]);
    const char *names[4];
    assert_int_equal(ps_kmeans_name(km, 0, -1, names), 4);
    static const char *const want[4] = {"segment-2", "segment-0", "segment-3",
                                        "segment-1"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(names[ps_kmeans_assign(km, &v[i])], want[i]);
    /* Out-of-range dims fall back to feature 0. */
    assert_int_equal(ps_kmeans_name(km, 5, 7, names), 4);
    ps_kmeans_destroy(km);
}

static void test_ari(void **state)
{
    (void)state;
    const int a[6] = {0, 0, 0, 1, 1, 1}, b[6] = {0, 0, 1, 1, 2, 2};
    const int a_swapped[6] = {1, 1, 1, 0, 0, 0};
    assert_close(ps_kmeans_ari(a, a, 6), 1, 1e-15);
    assert_close(ps_kmeans_ari(a, a_swapped, 6), 1, 1e-15);
    assert_close(ps_kmeans_ari(a, b, 6), 8.0 / 33, 1e-15);
    assert_close(ps_kmeans_ari(b, a, 6), 8.0 / 33, 1e-15);
    const int c[4] = {0, 0, 1, 2}, d[4] = {0, 0, 1, 1};
    assert_close(ps_kmeans_ari(c, d, 4), 4.0 / 7, 1e-15);
    /* trivial partitions */
    const int one[3] = {0, 0, 0}, single[3] = {0, 1, 2};
    assert_close(ps_kmeans_ari(one, one, 3), 1, 0);
    assert_close(ps_kmeans_ari(single, single, 3), 1, 0);
    assert_close(ps_kmeans_ari(one, single, 3), 0, 0);
    const int neg[2] = {0, -1};
    assert_true(isnan(ps_kmeans_ari(neg, neg, 2)));
    assert_true(isnan(ps_kmeans_ari(a, a, 1)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_and_before_init),
        cmocka_unit_test(test_kmeanspp_deterministic),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_learning_rate),
        cmocka_unit_test(test_dying_centre),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_names_seed_shape),
        cmocka_unit_test(test_names_hysteresis),
        cmocka_unit_test(test_names_generic),
        cmocka_unit_test(test_ari),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
