/*
 * test_behaviour.c -- the behaviour graph, reverse paths, co-purchase,
 * recommendations (with the popular fill-up), next-action scores and the
 * customer story, end to end: a hand-built history through the mock Kafka
 * cluster and `propstream run`, read back from a real redis-server.  Every
 * expected value below is worked out by hand in these comments (the
 * contract's and the aggregates' documented formulas), not read from
 * propstream's code; nothing of propstream is linked in.
 *
 * The history, one partition, in this order (T = 2025-01-01T00:00Z, times
 * in minutes after T; PURCHASEs have no amount, so no customer gets
 * segment features and every level falls back to the global one):
 *
 *    1 ann CLICK p1         12 cat PURCHASE p1 (direct)
 *    2 ann PURCHASE p1      13 cat SPEND 5
 *    3 bob CLICK p1         14 cat WISHLIST p4
 *    4 bob WISHLIST p1      15 cat CLICK p4
 *    5 bob PURCHASE p1      16 cat PURCHASE p4
 *    6 bob SPEND 15         17 sue CLICK p5
 *    7 bob PURCHASE p2      18 sue PURCHASE p5
 *      (direct)             19 sue SPEND 10
 *    8 ann SPEND 30         20 sue SPEND 20
 *    9 ann WISHLIST p2      21 sue CLICK p2
 *   10 ann PURCHASE p2      22 dan CLICK p3
 *   11 cat CLICK p3
 * then the watermark event: mover SPEND 100 at T + 30 days (its first
 * event: no transition); the watermark (T + 30 d - 1 h) passes every open
 * funnel's 7-day window, so (cat, p3), (sue, p2), (dan, p3) close as
 * failures.  Then the finale, at T + 30 d + 1..5 min: ann SPEND 40, bob
 * SPEND 50, cat SPEND 25, dan SPEND 35, sue SPEND 60 (sue's is the last
 * event of the stream).
 *
 * Why a finale.  Customer fields are written at a flush, from the state
 * then, and the test cannot know where the flushes fall.  After the
 * watermark event nothing changes co-purchase, purchase counts or product
 * posteriors (the finale has no product), and no finale event leaves a
 * SPEND (every finale customer's previous event is not a SPEND), so the
 * global transition row "spend" is final before the finale starts: each
 * finale customer's reco and next_* are written with final inputs
 * whichever flush they fall in.  The story reads the global mean amount,
 * which the finale changes: it is checked for sue only, whose event is the
 * last one (so her write sees everything).
 *
 * Funnels and reverse paths (step probabilities: flat (1 + k) / (2 + n)
 * over closed episodes, counted when the success is seen, the closing
 * episode included):
 *   - ann p1 c: p1 click_first 1, purchase_click_only 1:
 *     click>purchase, steps 2/3, p 2/3;
 *   - bob p1 cw, click first: p1 click_first 2, wishlist_after_click 1,
 *     both 1 (purchased 1): click>wishlist>purchase, steps
 *     p_wishlist_after_click = 2/4, p_purchase_click_wishlist = 2/3,
 *     p = 1/3;
 *   - ann p2 w: p2 wishlist_first 1, purchase 1: wishlist>purchase, 2/3;
 *   - cat p4 cw, wishlist first: wishlist_first 1, click_after_wishlist 1,
 *     both 1 purchased 1: wishlist>click>purchase, steps 2/3, 2/3, p 4/9;
 *   - sue p5 c: click>purchase, 2/3.
 * ps:global path_{path}: click>purchase 2, click>wishlist>purchase 1,
 * wishlist>purchase 1, wishlist>click>purchase 1.  last_path (_p): ann
 * wishlist>purchase (2/3), bob click>wishlist>purchase (1/3), cat
 * wishlist>click>purchase (4/9), sue click>purchase (2/3); dan none.
 *
 * Final product step probabilities (failures included):
 *   p1: click_first 2 (ann c, bob cw), wishlist_after_click 1, click only
 *       purchased 1, both 1/1, no wishlist-first episode:
 *       p_wishlist_after_click 2/4, p_purchase_click_only 2/4,
 *       p_click_after_wishlist 1/2, p_purchase_wishlist_first 1/2,
 *       p_purchase_click_wishlist 2/3;
 *   p2: ann w success, sue c failure: p_wishlist_after_click 1/3,
 *       p_purchase_click_only 1/3, p_click_after_wishlist 1/3,
 *       p_purchase_wishlist_first 2/3, p_purchase_click_wishlist 1/2;
 *   p3: cat and dan c failures: 1/4, 1/4, 1/2, 1/2, 1/2;
 *   p4: cat cw wishlist first: 1/2, 1/2, 2/3, 1/3, 2/3;
 *   p5: sue c success: 1/3, 2/3, 1/2, 1/2, 1/2.
 *
 * Co-purchase (distinct customers): ann {p1, p2}, bob {p1, p2}, cat {p1,
 * p4}, sue {p5}: C[p1][p2] = 2, C[p1][p4] = 1 (symmetric); no :also zset
 * for p3, p5.
 *
 * Recommendations.  Product posteriors P = (1 + s) / (2 + n) over all
 * paths: p1 2/2 -> 3/4, p2 1/2 -> 1/2, p4 1/1 -> 2/3, p5 1/1 -> 2/3.
 * Purchase counts: p1 3 (ann, bob, cat), p2 2 (bob, ann), p4 1, p5 1, so
 * the popular list is p1, p2, p4, p5 and n_1 + 1 = 4; a fill-up product q
 * scores s_min * n(q) / 4 (s_min: the lowest co-purchase score, else 1).
 *   ann, bob (bought p1, p2): co-purchase p4 = C[p1][p4] * 2/3 = 2/3; fill
 *       p5 = 2/3 * 1/4 = 1/6.
 *   cat (p1, p4): p2 = C[p1][p2] * 1/2 = 1; fill p5 = 1 * 1/4.
 *   sue (p5, no partner): fill only, p1 3/4, p2 2/4, p4 1/4.
 *   dan (clicks only, cold): p1 3/4, p2 2/4, p4 1/4, p5 1/4.
 *
 * Next action.  Transitions out of SPEND before the finale: ann
 * spend>wishlist, bob spend>purchase, cat spend>wishlist, sue spend>spend
 * and spend>click: the global row is (click 1, wishlist 2, purchase 1,
 * spend 1) / 5, the prior alpha = 10 x that = (2, 4, 2, 2).  After the
 * finale everyone's last type is SPEND, and their own rows are ann (0 1 0
 * 0), bob (0 0 1 0), cat (0 1 0 0), dan none, sue (1 0 0 1), so
 * P(j) = (alpha_j + n_j) / (10 + sum n):
 *   ann, cat (2, 5, 2, 2) / 11;  bob (2, 4, 3, 2) / 11;
 *   dan (2, 4, 2, 2) / 10;       sue (3, 4, 2, 3) / 12.
 * (No customer ever has a segment, so which segment a transition is
 * counted at -- next_action.c: the one the customer was in after the
 * transition's first event -- plays no part: only ps:global counts.)
 *
 * Story of sue: not segmented; 1 purchase and 3 amounts (10, 20, 60: mean
 * 30); every amount of the stream (15, 30, 5, 10, 20, 100, 40, 50, 25, 35,
 * 60) sums to 390 over 11, mean 35.4545.. > 30 * 1.1: "below the overall
 * average of 35.45"; recent mean (0.49 * 10 + 0.7 * 20 + 60) / 2.19 =
 * 36.03 > 30 * 1.1: "rising"; one successful funnel, path c; no open
 * funnel (p2's failed); next: wishlist 4/12 = 0.33.
 *
 * Every run passes -X kafka.session.timeout.ms=6000 (see test_funnels.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif

#define MIN_MS INT64_C(60000)
#define DAY_MS INT64_C(86400000)
#define T0 INT64_C(1735689600000) /* 2025-01-01T00:00:00Z */
#define TOL 1e-9                  /* reals written with >= 10 digits */

/* ------------------------------------------------------------------ */
/* Servers                                                             */
/* ------------------------------------------------------------------ */

typedef struct servers {
    ps_test_redis redis;
    ps_test_broker broker;
    bool have_redis, have_broker;
    char redis_addr[64];
} servers;

/* The running test's servers, stopped by the teardown even when the test
 * fails (cmocka's failures longjmp past the test's own cleanup). */
static servers *current_servers;

static void servers_start(servers *sv, const char *topic_spec)
{
    const char *topics[] = {topic_spec, NULL};
    memset(sv, 0, sizeof *sv);
    current_servers = sv;
    if (ps_test_redis_start(&sv->redis, NULL) != 0)
        fail_msg("cannot start redis-server");
    sv->have_redis = true;
    snprintf(sv->redis_addr, sizeof sv->redis_addr, "127.0.0.1:%d",
             sv->redis.port);
    if (ps_test_broker_start(&sv->broker, PS_BIN, 1, topics) != 0)
        fail_msg("cannot start `propstream broker`");
    sv->have_broker = true;
}

static void servers_stop(servers *sv)
{
    if (sv->have_broker)
        ps_test_broker_stop(&sv->broker);
    if (sv->have_redis)
        ps_test_redis_stop(&sv->redis);
    sv->have_broker = sv->have_redis = false;
    if (current_servers == sv)
        current_servers = NULL;
}

static int teardown_servers(void **state)
{
    (void)state;
    if (current_servers != NULL)
        servers_stop(current_servers);
    return 0;
}

/* `propstream run -e` to completion; fails the test unless it exits 0. */
static void run_propstream_e(const servers *sv, const char *group,
                             int timeout_s)
{
    static char out[1 << 16];
    const char *argv[] = {PS_BIN, "run", "-b", sv->broker.bootstrap,
                          "-t", "events", "-g", group, "-r", sv->redis_addr,
                          "-e", "--flush-interval-ms", "50",
                          "-X", "kafka.session.timeout.ms=6000", NULL};
    double elapsed = 0;
    int rc = ps_test_run_capture(argv, timeout_s, out, sizeof out, &elapsed);
    print_message("    propstream run -e -g %s: exit %d after %.1f s\n", group,
                  rc, elapsed);
    if (rc != 0) {
        print_error("propstream run output (tail):\n%s\n",
                    ps_test_tail(out, 4000));
        fail_msg("propstream run exited %d (-1 = timeout after %d s)", rc,
                 timeout_s);
    }
}

/* ------------------------------------------------------------------ */
/* Producing the history                                               */
/* ------------------------------------------------------------------ */

typedef struct producer {
    rd_kafka_t *rk;
    long produced, delivered, failed;
} producer;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
                      void *opaque)
{
    producer *p = opaque;
    (void)rk;
    if (m->err)
        p->failed++;
    else
        p->delivered++;
}

static void producer_open(producer *p, const char *bootstrap)
{
    char errstr[512];
    memset(p, 0, sizeof *p);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr,
                          sizeof errstr) != RD_KAFKA_CONF_OK)
        fail_msg("producer conf: %s", errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (p->rk == NULL)
        fail_msg("rd_kafka_new: %s", errstr);
}

static void producer_close(producer *p)
{
    if (p->rk != NULL)
        rd_kafka_destroy(p->rk);
    p->rk = NULL;
}

/* One event of the history. amount < 0: none; product may be NULL. */
typedef struct hev {
    const char *cust, *type, *product;
    double amount;
    int64_t ts;
} hev;

/* Produce v[0..n) in order to partition 0 (JSON, event ids "bh-<i>"),
 * then wait for every delivery: the order on the partition is the test. */
static void produce_all(producer *p, const hev *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char buf[512], prod[96] = "", amt[64] = "";
        if (v[i].product != NULL)
            snprintf(prod, sizeof prod, ",\"product_id\":\"%s\"",
                     v[i].product);
        if (v[i].amount >= 0)
            snprintf(amt, sizeof amt, ",\"amount\":%.17g", v[i].amount);
        int len = snprintf(buf, sizeof buf,
                           "{\"event_id\":\"bh-%zu\",\"customer_id\":\"%s\","
                           "\"type\":\"%s\",\"ts\":%" PRId64 "%s%s}",
                           i, v[i].cust, v[i].type, v[i].ts, prod, amt);
        assert_true(len > 0 && (size_t)len < sizeof buf);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC("events"), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_KEY(v[i].cust, strlen(v[i].cust)),
            RD_KAFKA_V_VALUE(buf, (size_t)len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err)
            fail_msg("produce: %s", rd_kafka_err2str(err));
        p->produced++;
        /* idempotent producer, one partition: order is kept */
    }
    if (rd_kafka_flush(p->rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("flush timed out");
    assert_int_equal(p->failed, 0);
    assert_int_equal(p->delivered, p->produced);
}

/* ------------------------------------------------------------------ */
/* Reading Redis                                                       */
/* ------------------------------------------------------------------ */

static redisContext *redis_open(const servers *sv)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", sv->redis.port, tv);
    if (c == NULL || c->err)
        fail_msg("connect to redis: %s", c ? c->errstr : "out of memory");
    redisSetTimeout(c, tv);
    return c;
}

/* HGET as a malloc'd string, NULL when absent. */
static char *hget(redisContext *c, const char *key, const char *field)
{
    redisReply *r = redisCommand(c, "HGET %s %s", key, field);
    if (r == NULL)
        fail_msg("HGET: %s", c->errstr);
    char *v = NULL;
    if (r->type == REDIS_REPLY_STRING)
        v = strndup(r->str, r->len);
    else if (r->type != REDIS_REPLY_NIL)
        fail_msg("HGET %s %s: reply type %d", key, field, r->type);
    freeReplyObject(r);
    return v;
}

static int bad; /* mismatches of the running test */

#define MISMATCH(...)                                                         \
    do {                                                                      \
        bad++;                                                                \
        print_error(__VA_ARGS__);                                             \
    } while (0)

/* field of key is the number want (within TOL). */
static void expect_real(redisContext *c, const char *key, const char *field,
                        double want)
{
    char *v = hget(c, key, field);
    double got;
    if (v == NULL)
        MISMATCH("  %s %s: absent, want %.10g\n", key, field, want);
    else if (!ps_test_parse_dbl(v, &got) || fabs(got - want) > TOL)
        MISMATCH("  %s %s = %s, want %.10g\n", key, field, v, want);
    free(v);
}

/* field of key is the string want (NULL: absent). */
static void expect_str(redisContext *c, const char *key, const char *field,
                       const char *want)
{
    char *v = hget(c, key, field);
    if ((v == NULL) != (want == NULL) ||
        (v != NULL && strcmp(v, want) != 0))
        MISMATCH("  %s %s = %s%s%s,\n    want %s%s%s\n", key, field,
                 v ? "\"" : "", v ? v : "(absent)", v ? "\"" : "",
                 want ? "\"" : "", want ? want : "(absent)",
                 want ? "\"" : "");
    free(v);
}

static void expect_int(redisContext *c, const char *key, const char *field,
                       long long want)
{
    char *v = hget(c, key, field);
    long long got;
    if (v == NULL || !ps_test_parse_ll(v, &got) || got != want)
        MISMATCH("  %s %s = %s, want %lld\n", key, field,
                 v ? v : "(absent)", want);
    free(v);
}

/* A zset member and its score. */
typedef struct zm {
    const char *member;
    double score;
} zm;

/*
 * The zset key holds exactly want[0..n) (member and score within TOL), and
 * ZREVRANGE lists it by score descending; members of equal score may come
 * in any order, so the comparison is by member.  n = 0: key absent.
 */
static void expect_zset(redisContext *c, const char *key, const zm *want,
                        size_t n)
{
    redisReply *r = redisCommand(c, "ZREVRANGE %s 0 -1 WITHSCORES", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    size_t got = r->elements / 2;
    if (got != n) {
        MISMATCH("  %s: %zu members, want %zu\n", key, got, n);
        for (size_t i = 0; i < got; i++)
            print_error("    %s %s\n", r->element[2 * i]->str,
                        r->element[2 * i + 1]->str);
        freeReplyObject(r);
        return;
    }
    double prev = INFINITY;
    for (size_t i = 0; i < got; i++) {
        const char *m = r->element[2 * i]->str;
        double s = strtod(r->element[2 * i + 1]->str, NULL);
        if (s > prev)
            MISMATCH("  %s: not by score descending at %s\n", key, m);
        prev = s;
        size_t k = 0;
        while (k < n && strcmp(want[k].member, m) != 0)
            k++;
        if (k == n)
            MISMATCH("  %s: unexpected member %s (%.10g)\n", key, m, s);
        else if (fabs(s - want[k].score) > TOL)
            MISMATCH("  %s %s: score %.17g, want %.17g\n", key, m, s,
                     want[k].score);
    }
    freeReplyObject(r);
}

/* Parse "a,b" into v; the count. */
static int parse_steps(const char *s, double v[4])
{
    int n = 0;
    char *end;
    while (n < 4) {
        v[n++] = strtod(s, &end);
        if (end == s)
            return -1;
        if (*end != ',')
            return *end == '\0' ? n : -1;
        s = end + 1;
    }
    return -1;
}

/* One expected ps:paths entry. */
typedef struct path_want {
    const char *customer, *product, *path;
    int nsteps;
    double steps[2], p;
} path_want;

static const char *entry_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1]->str;
    return NULL;
}

static void expect_paths(redisContext *c, const path_want *want, size_t n)
{
    redisReply *r = redisCommand(c, "XRANGE ps:paths - +");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    if (r->elements != n)
        MISMATCH("  ps:paths: %zu entries, want %zu\n", r->elements, n);
    for (size_t i = 0; i < r->elements && i < n; i++) {
        const redisReply *f = r->element[i]->element[1];
        const path_want *w = &want[i];
        const char *cu = entry_field(f, "customer");
        const char *pr = entry_field(f, "product");
        const char *pa = entry_field(f, "path");
        const char *st = entry_field(f, "steps");
        const char *p = entry_field(f, "p");
        double v[4], pv;
        if (cu == NULL || pr == NULL || pa == NULL || st == NULL ||
            p == NULL) {
            MISMATCH("  ps:paths entry %zu: a field is missing\n", i);
            continue;
        }
        if (strcmp(cu, w->customer) != 0 || strcmp(pr, w->product) != 0 ||
            strcmp(pa, w->path) != 0)
            MISMATCH("  ps:paths entry %zu: %s %s %s, want %s %s %s\n", i,
                     cu, pr, pa, w->customer, w->product, w->path);
        int ns = parse_steps(st, v);
        bool steps_ok = ns == w->nsteps;
        for (int k = 0; steps_ok && k < ns; k++)
            steps_ok = fabs(v[k] - w->steps[k]) <= TOL;
        if (!steps_ok)
            MISMATCH("  ps:paths entry %zu (%s %s): steps \"%s\"\n", i, cu,
                     pr, st);
        if (!ps_test_parse_dbl(p, &pv) || fabs(pv - w->p) > TOL)
            MISMATCH("  ps:paths entry %zu (%s %s): p %s, want %.10g\n", i,
                     cu, pr, p, w->p);
    }
    freeReplyObject(r);
}

static long long key_exists(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "EXISTS %s", key);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* ------------------------------------------------------------------ */
/* The test                                                            */
/* ------------------------------------------------------------------ */

#define M(k) (T0 + (k) * MIN_MS)
#define FIN(k) (T0 + 30 * DAY_MS + (k) * MIN_MS)

static const hev history[] = {
    {"ann", "CLICK", "p1", -1, M(1)},
    {"ann", "PURCHASE", "p1", -1, M(2)},
    {"bob", "CLICK", "p1", -1, M(3)},
    {"bob", "WISHLIST", "p1", -1, M(4)},
    {"bob", "PURCHASE", "p1", -1, M(5)},
    {"bob", "SPEND", NULL, 15, M(6)},
    {"bob", "PURCHASE", "p2", -1, M(7)},
    {"ann", "SPEND", NULL, 30, M(8)},
    {"ann", "WISHLIST", "p2", -1, M(9)},
    {"ann", "PURCHASE", "p2", -1, M(10)},
    {"cat", "CLICK", "p3", -1, M(11)},
    {"cat", "PURCHASE", "p1", -1, M(12)},
    {"cat", "SPEND", NULL, 5, M(13)},
    {"cat", "WISHLIST", "p4", -1, M(14)},
    {"cat", "CLICK", "p4", -1, M(15)},
    {"cat", "PURCHASE", "p4", -1, M(16)},
    {"sue", "CLICK", "p5", -1, M(17)},
    {"sue", "PURCHASE", "p5", -1, M(18)},
    {"sue", "SPEND", NULL, 10, M(19)},
    {"sue", "SPEND", NULL, 20, M(20)},
    {"sue", "CLICK", "p2", -1, M(21)},
    {"dan", "CLICK", "p3", -1, M(22)},
    /* the watermark event */
    {"mover", "SPEND", NULL, 100, T0 + 30 * DAY_MS},
    /* the finale */
    {"ann", "SPEND", NULL, 40, FIN(1)},
    {"bob", "SPEND", NULL, 50, FIN(2)},
    {"cat", "SPEND", NULL, 25, FIN(3)},
    {"dan", "SPEND", NULL, 35, FIN(4)},
    {"sue", "SPEND", NULL, 60, FIN(5)},
};

static void expect_next(redisContext *c, const char *cust, double click,
                        double wishlist, double purchase, double spend)
{
    char key[64];
    snprintf(key, sizeof key, "ps:cust:%s", cust);
    expect_real(c, key, "next_click", click);
    expect_real(c, key, "next_wishlist", wishlist);
    expect_real(c, key, "next_purchase", purchase);
    expect_real(c, key, "next_spend", spend);
    /* as read back, the four sum to 1 */
    const char *f[4] = {"next_click", "next_wishlist", "next_purchase",
                        "next_spend"};
    double sum = 0, x;
    for (int i = 0; i < 4; i++) {
        char *v = hget(c, key, f[i]);
        if (v != NULL && ps_test_parse_dbl(v, &x))
            sum += x;
        free(v);
    }
    if (fabs(sum - 1.0) > 1e-12)
        MISMATCH("  %s: next_* sum to %.17g\n", key, sum);
}

static void expect_steps(redisContext *c, const char *prod, double wac,
                         double pco, double caw, double pwf, double pcw)
{
    char key[64];
    snprintf(key, sizeof key, "ps:prod:%s", prod);
    expect_real(c, key, "p_wishlist_after_click", wac);
    expect_real(c, key, "p_purchase_click_only", pco);
    expect_real(c, key, "p_click_after_wishlist", caw);
    expect_real(c, key, "p_purchase_wishlist_first", pwf);
    expect_real(c, key, "p_purchase_click_wishlist", pcw);
}

static void test_behaviour_history(void **state)
{
    (void)state;
    double t0 = ps_test_now_s();
    static servers sv; /* static: the teardown may need it */
    producer p;
    const double third = 1.0 / 3, two3 = 2.0 / 3;

    servers_start(&sv, "events:1");
    producer_open(&p, sv.broker.bootstrap);
    produce_all(&p, history, sizeof history / sizeof history[0]);
    producer_close(&p);
    run_propstream_e(&sv, "behaviour", 60);

    redisContext *c = redis_open(&sv);
    bad = 0;
    expect_int(c, "ps:metrics", "events_applied",
               (long long)(sizeof history / sizeof history[0]));

    /* reverse paths, in the order of the successes */
    const path_want paths[] = {
        {"ann", "p1", "click>purchase", 1, {two3, 0}, two3},
        {"bob", "p1", "click>wishlist>purchase", 2, {0.5, two3}, third},
        {"ann", "p2", "wishlist>purchase", 1, {two3, 0}, two3},
        {"cat", "p4", "wishlist>click>purchase", 2, {two3, two3}, 4.0 / 9},
        {"sue", "p5", "click>purchase", 1, {two3, 0}, two3},
    };
    expect_paths(c, paths, sizeof paths / sizeof paths[0]);
    expect_str(c, "ps:cust:ann", "last_path", "wishlist>purchase");
    expect_real(c, "ps:cust:ann", "last_path_p", two3);
    expect_str(c, "ps:cust:bob", "last_path", "click>wishlist>purchase");
    expect_real(c, "ps:cust:bob", "last_path_p", third);
    expect_str(c, "ps:cust:cat", "last_path", "wishlist>click>purchase");
    expect_real(c, "ps:cust:cat", "last_path_p", 4.0 / 9);
    expect_str(c, "ps:cust:sue", "last_path", "click>purchase");
    expect_real(c, "ps:cust:sue", "last_path_p", two3);
    expect_str(c, "ps:cust:dan", "last_path", NULL);
    expect_int(c, "ps:global", "path_click>purchase", 2);
    expect_int(c, "ps:global", "path_click>wishlist>purchase", 1);
    expect_int(c, "ps:global", "path_wishlist>purchase", 1);
    expect_int(c, "ps:global", "path_wishlist>click>purchase", 1);

    /* product step probabilities, failures included */
    expect_steps(c, "p1", 0.5, 0.5, 0.5, 0.5, two3);
    expect_steps(c, "p2", third, third, third, two3, 0.5);
    expect_steps(c, "p3", 0.25, 0.25, 0.5, 0.5, 0.5);
    expect_steps(c, "p4", 0.5, 0.5, two3, third, two3);
    expect_steps(c, "p5", third, two3, 0.5, 0.5, 0.5);
    expect_int(c, "ps:prod:p4", "funnels_wishlist_first", 1);
    expect_int(c, "ps:prod:p4", "click_after_wishlist", 1);

    /* co-purchase: distinct co-purchasers */
    const zm also1[] = {{"p2", 2}, {"p4", 1}};
    const zm also2[] = {{"p1", 2}};
    const zm also4[] = {{"p1", 1}};
    expect_zset(c, "ps:prod:p1:also", also1, 2);
    expect_zset(c, "ps:prod:p2:also", also2, 1);
    expect_zset(c, "ps:prod:p4:also", also4, 1);
    if (key_exists(c, "ps:prod:p3:also") || key_exists(c, "ps:prod:p5:also"))
        MISMATCH("  ps:prod:p3:also or p5:also exists\n");

    /* recommendations: co-purchase first, then the popular fill-up, each
     * fill-up score below every co-purchase score */
    const zm reco_ab[] = {{"p4", two3}, {"p5", 1.0 / 6}};
    const zm reco_cat[] = {{"p2", 1}, {"p5", 0.25}};
    const zm reco_sue[] = {{"p1", 0.75}, {"p2", 0.5}, {"p4", 0.25}};
    const zm reco_dan[] = {
        {"p1", 0.75}, {"p2", 0.5}, {"p4", 0.25}, {"p5", 0.25}};
    expect_zset(c, "ps:cust:ann:reco", reco_ab, 2);
    expect_zset(c, "ps:cust:bob:reco", reco_ab, 2);
    expect_zset(c, "ps:cust:cat:reco", reco_cat, 2);
    expect_zset(c, "ps:cust:sue:reco", reco_sue, 3);
    expect_zset(c, "ps:cust:dan:reco", reco_dan, 4);

    /* next action: Dirichlet posterior means */
    expect_next(c, "ann", 2.0 / 11, 5.0 / 11, 2.0 / 11, 2.0 / 11);
    expect_next(c, "cat", 2.0 / 11, 5.0 / 11, 2.0 / 11, 2.0 / 11);
    expect_next(c, "bob", 2.0 / 11, 4.0 / 11, 3.0 / 11, 2.0 / 11);
    expect_next(c, "dan", 0.2, 0.4, 0.2, 0.2);
    expect_next(c, "sue", 3.0 / 12, 4.0 / 12, 2.0 / 12, 3.0 / 12);

    expect_str(c, "ps:cust:sue", "story",
               "Customer sue is not yet segmented: 1 purchase, 3 payments "
               "averaging 30, below the overall average of 35.45 and rising "
               "lately; usually buys after a click; no open funnels; most "
               "likely next action: wishlist (0.33).");

    redisFree(c);
    servers_stop(&sv);
    if (bad)
        fail_msg("%d mismatches", bad);
    print_message("    test_behaviour_history: %.1f s\n", ps_test_now_s() - t0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_behaviour_history, teardown_servers),
    };
    const char *filter = getenv("PS_TEST_FILTER");
    if (filter != NULL && *filter != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
