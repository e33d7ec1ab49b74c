/*
 * test_window_lua.c -- ps_window_hash_lua (aggregates/window.h), the
 * script that adds one instance's window differences to a cohort window
 * hash and recomputes its derived fields, in a real redis-server, sent
 * through the Redis sink as EVAL inside MULTI/EXEC like a flush.
 *
 *   test_tail      the script's normal tail (Abramowitz & Stegun 26.2.17)
 *                  against the C side's ps_normal_tail (GSL) over
 *                  z = (T - mean) / std in [-9, 9] (1,801 hashes): within
 *                  1e-6 (the formula's error is < 7.5e-8); mean and std
 *                  as the C side computes them from the same totals;
 *                  the conventions for n = 0, n = 1, equal amounts
 *                  (std = 0: 1 if mean >= T else 0).
 *   test_combine   two instances with disjoint customers, each with its
 *                  own window, publish differences into the same hashes
 *                  (7-day span and whole window) flush after flush while
 *                  the windows slide, events expire and some flushes fail
 *                  (not executed: the next one carries their differences
 *                  too).  After every round the hash equals a single
 *                  window holding every event: n and active exactly, sum
 *                  and sumsq to rounding, mean 1e-9, std 1e-7 (relative),
 *                  p_spend_gt within 1e-6 of ps_window_query's (C, GSL);
 *                  start_ms / end_ms the later instance's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "../../aggregates/normal.h"
#include "../../aggregates/window.h"
#include "../../common/batch.h"
#include "../../common/error.h"
#include "../../sinks/redis_sink.h"
#include "../support/servers.h"

#define T 70000.0

static ps_test_redis server;
static redisContext *check;
static ps_redis_sink *sink;

static int group_setup(void **state)
{
    (void)state;
    if (ps_test_redis_start(&server, NULL) != 0)
        return -1;
    struct timeval tv = {5, 0};
    check = redisConnectWithTimeout("127.0.0.1", server.port, tv);
    if (check == NULL || check->err)
        return -1;
    ps_redis_conf conf = {.host = "127.0.0.1",
                          .port = server.port,
                          .connect_timeout_ms = 2000,
                          .io_timeout_ms = 10000};
    char err[256];
    sink = ps_redis_sink_new(&conf, err, sizeof(err));
    return sink != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    ps_redis_sink_destroy(sink);
    if (check)
        redisFree(check);
    ps_test_redis_stop(&server);
    return 0;
}

/* One EVAL of the script, as cohorts.c writes it. */
static void eval(ps_batch *b, const char *key, int64_t dn, long double dsum,
                 long double dsq, int64_t dact, int64_t start, int64_t end)
{
    ps_batch_begin(b, "EVAL");
    ps_batch_arg_cstr(b, ps_window_hash_lua);
    ps_batch_arg_cstr(b, "1");
    ps_batch_arg_cstr(b, key);
    ps_batch_arg_i64(b, dn);
    ps_batch_arg_fmt(b, "%.21Lg", dsum);
    ps_batch_arg_fmt(b, "%.21Lg", dsq);
    ps_batch_arg_i64(b, dact);
    ps_batch_arg_i64(b, 0);
    ps_batch_arg_i64(b, start);
    ps_batch_arg_i64(b, end);
    ps_batch_arg_dbl(b, T);
    ps_batch_end(b);
}

static void exec(ps_batch *b)
{
    assert_int_equal(ps_batch_error(b), 0);
    if (ps_redis_sink_exec(sink, b) != PS_OK)
        fail_msg("exec: %s", ps_redis_sink_errstr(sink));
    ps_batch_clear(b);
}

typedef struct hv {
    double n, sum, sumsq, mean, std, p, active, start, end;
} hv;

static void hget(const char *key, hv *out)
{
    static const char *names[9] = {"n",   "sum", "sumsq",  "mean", "std",
                                   "p_spend_gt", "active", "start_ms",
                                   "end_ms"};
    double *v[9] = {&out->n,   &out->sum,    &out->sumsq,
                    &out->mean, &out->std,   &out->p,
                    &out->active, &out->start, &out->end};
    redisReply *r = redisCommand(check, "HGETALL %s", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    for (int i = 0; i < 9; i++) {
        *v[i] = NAN;
        for (size_t j = 0; j + 1 < r->elements; j += 2)
            if (!strcmp(r->element[j]->str, names[i]))
                *v[i] = strtod(r->element[j + 1]->str, NULL);
    }
    freeReplyObject(r);
}

static void test_tail(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    char key[64];
    const double D = 12345.678;
    const int N = 1801;
    for (int i = 0; i < N; i++) {
        /* two amounts M -+ D / sqrt 2: mean M, sample std D */
        double z = -9 + 0.01 * i, m = T - z * D;
        double a = m - D / sqrt(2.0), c = m + D / sqrt(2.0);
        snprintf(key, sizeof(key), "t:z%d", i);
        eval(b, key, 2, (long double)a + c,
             (long double)a * a + (long double)c * c, 2, 0, 1);
    }
    exec(b);
    double worst = 0, worst_z = 0;
    for (int i = 0; i < N; i++) {
        double z = -9 + 0.01 * i;
        hv h;
        snprintf(key, sizeof(key), "t:z%d", i);
        hget(key, &h);
        assert_true(h.n == 2 && h.active == 2);
        double m = T - z * D;
        assert_true(fabs(h.mean - m) <= 1e-9 * fabs(m));
        assert_true(fabs(h.std - D) <= 1e-8 * D);
        /* the tail alone: the C side's from the hash's mean and std */
        double want = ps_normal_tail(h.mean, h.std, T);
        double err = fabs(h.p - want);
        if (err > worst) {
            worst = err;
            worst_z = z;
        }
        if (!(err <= 1e-6))
            fail_msg("z %.2f: script %.12g, C %.12g", z, h.p, want);
    }
    print_message("normal tail, Lua (A&S 26.2.17) vs C (GSL): max |error| "
                  "%.3g at z = %.2f over %d points\n", worst, worst_z, N);
    assert_true(worst < 2e-7);

    /* conventions */
    eval(b, "t:empty", 0, 0, 0, 0, 5, 10);
    eval(b, "t:one_hi", 1, 80000, 80000.0L * 80000, 1, 5, 10);
    eval(b, "t:one_lo", 1, 100, 10000, 1, 5, 10);
    eval(b, "t:equal_at_T", 3, 3 * T, 3 * T * T, 1, 5, 10);
    eval(b, "t:gone", 2, 30, 500, 1, 5, 10);
    eval(b, "t:gone", -2, -30, -500, -1, 3, 20); /* all taken back */
    exec(b);
    hv h;
    hget("t:empty", &h);
    assert_true(h.n == 0 && h.mean == 0 && h.std == 0 && h.p == 0);
    hget("t:one_hi", &h);
    assert_true(h.mean == 80000 && h.std == 0 && h.p == 1);
    hget("t:one_lo", &h);
    assert_true(h.mean == 100 && h.std == 0 && h.p == 0);
    hget("t:equal_at_T", &h);
    assert_true(h.mean == T && h.std == 0 && h.p == 1);
    hget("t:gone", &h);
    assert_true(h.n == 0 && h.sum == 0 && h.sumsq == 0 && h.active == 0);
    assert_true(h.mean == 0 && h.std == 0 && h.p == 0);
    assert_true(h.start == 5 && h.end == 20); /* the maxima */
    ps_batch_destroy(b);
}

/* ------------------------------------------------------------------ */
/* Two instances                                                        */
/* ------------------------------------------------------------------ */

typedef struct tot {
    int64_t n, active, start, end;
    double sum, sumsq;
} tot;

static void totals(const ps_window *w, uint32_t span, tot *t)
{
    ps_window_stats st;
    ps_window_query_span(w, span, T, &st);
    t->n = (int64_t)st.n;
    t->active = (int64_t)st.active;
    t->sum = st.sum;
    t->sumsq = st.sumsq;
    t->start = ps_window_span_start_ms(w, span);
    t->end = ps_window_end_ms(w);
}

/* What cohorts.c does for one hash: the difference to what was
 * published; *pend is what the flush brings it to. */
static void publish(ps_batch *b, const char *key, const ps_window *w,
                    uint32_t span, const tot *pub, tot *pend)
{
    totals(w, span, pend);
    eval(b, key, pend->n - pub->n, (long double)pend->sum - pub->sum,
         (long double)pend->sumsq - pub->sumsq, pend->active - pub->active,
         pend->start, pend->end);
}

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static double rnd01(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void test_combine(void **state)
{
    (void)state;
    const int64_t H = 3600000;
    ps_window_conf conf = {H, 72, 8}; /* 3 days of hours */
    const uint32_t spans[2] = {24, 72};
    const char *keys[2] = {"ps:cohort:2025-01:w1d", "ps:cohort:2025-01:w3d"};
    ps_window *inst[2], *all;
    ps_window_member *mi = calloc(200, sizeof(*mi)), *ma = calloc(200,
                                                                  sizeof(*ma));
    tot pub[2][2], pend[2][2];
    ps_batch *b = ps_batch_new("ps:");
    assert_non_null(mi);
    assert_non_null(ma);
    memset(pub, 0, sizeof(pub));
    for (int i = 0; i < 2; i++)
        inst[i] = ps_window_new(&conf, NULL, 0);
    all = ps_window_new(&conf, NULL, 0);
    int64_t clock = 1735689600000LL; /* 2025-01-01 */
    for (int i = 0; i < 2; i++)
        ps_window_advance(inst[i], clock - H);
    ps_window_advance(all, clock - H);
    int rounds = 0, failed = 0;
    for (int ev = 0; ev < 6000; ev++) {
        clock += (int64_t)(rnd01() * 4 * 60000);
        if (ev == 3000)
            clock += 4 * 24 * H; /* everything expires */
        int cust = (int)(rnd01() * 200);
        int who = cust % 2; /* disjoint customers */
        int64_t ts = clock - (int64_t)(rnd01() * H);
        if (rnd01() < 0.05)
            ts -= (int64_t)(rnd01() * 2 * 24 * H);
        double amount = floor(exp(rnd01() * 11) * 100) / 100;
        if (rnd01() < 0.7) {
            ps_window_add(inst[who], ts, amount, &mi[cust]);
            ps_window_add(all, ts, amount, &ma[cust]);
        } else {
            ps_window_touch(inst[who], ts, &mi[cust]);
            ps_window_touch(all, ts, &ma[cust]);
        }
        if (ev % 40 != 39)
            continue;
        int64_t wm = clock - H;
        for (int i = 0; i < 2; i++)
            ps_window_advance(inst[i], wm);
        ps_window_advance(all, wm);
        for (int i = 0; i < 2; i++) {
            for (int r = 0; r < 2; r++)
                publish(b, keys[r], inst[i], spans[r], &pub[i][r],
                        &pend[i][r]);
            if (rnd01() < 0.15) { /* this flush fails: nothing applied */
                ps_batch_clear(b);
                failed++;
                continue;
            }
            exec(b);
            memcpy(pub[i], pend[i], sizeof(pub[i])); /* flushed */
        }
        /* compare only when both have flushed this round */
        bool current = true;
        for (int i = 0; i < 2; i++) {
            tot now;
            totals(inst[i], spans[1], &now);
            current &= now.n == pub[i][1].n && now.sum == pub[i][1].sum &&
                       now.active == pub[i][1].active;
            totals(inst[i], spans[0], &now);
            current &= now.n == pub[i][0].n && now.sum == pub[i][0].sum &&
                       now.active == pub[i][0].active;
        }
        if (!current)
            continue;
        rounds++;
        for (int r = 0; r < 2; r++) {
            ps_window_stats st;
            hv h;
            ps_window_query_span(all, spans[r], T, &st);
            hget(keys[r], &h);
            if (h.n != (double)st.n || h.active != (double)st.active)
                fail_msg("%s: n %g active %g, combined %llu %llu", keys[r],
                         h.n, h.active, (unsigned long long)st.n,
                         (unsigned long long)st.active);
            double scale = fmax(1, st.sum);
            assert_true(fabs(h.sum - st.sum) <= 1e-9 * scale);
            assert_true(fabs(h.sumsq - st.sumsq) <= 1e-9 * fmax(1, st.sumsq));
            assert_true(fabs(h.mean - st.mean) <= 1e-9 * fmax(1, st.mean));
            if (!(fabs(h.std - st.std) <= 1e-7 * fmax(1, st.std)))
                fail_msg("%s std %.12g, C %.12g", keys[r], h.std, st.std);
            if (!(fabs(h.p - st.p_ge) <= 1e-6))
                fail_msg("%s p %.12g, C %.12g", keys[r], h.p, st.p_ge);
            assert_true(h.end == (double)ps_window_end_ms(all));
            assert_true(h.start == (double)ps_window_span_start_ms(
                                       all, spans[r]));
        }
    }
    print_message("combine: %d rounds compared, %d failed flushes redone\n",
                  rounds, failed);
    assert_true(rounds > 50 && failed > 5);
    for (int i = 0; i < 2; i++)
        ps_window_destroy(inst[i]);
    ps_window_destroy(all);
    free(mi);
    free(ma);
    ps_batch_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tail),
        cmocka_unit_test(test_combine),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
