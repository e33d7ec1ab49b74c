/*
 * test_funnels.c -- funnels, Beta-Bernoulli posteriors and triggers, checked
 * against an independent recount of the same event stream.
 *
 * Each test starts its own redis-server and `propstream broker` (the mock
 * Kafka cluster) on free loopback ports (tests/support/servers.h), feeds the
 * topic with `propstream gen` and/or its own librdkafka producer, runs
 * `propstream run` as a separate process and reads Redis back with hiredis.
 * Nothing of propstream is linked in.
 *
 *   test_funnel_recount   gen -n 800 --seed 7 on 4 partitions, then one SPEND
 *                         per partition 30 days after the last event (the
 *                         "watermark events": every partition's watermark
 *                         passes every funnel's window, so every funnel is
 *                         closed).  ps:global, every ps:prod:, every
 *                         ps:cust: and every ps:campaign: equal the
 *                         reference recount; posterior means equal
 *                         (1+s)/(2+n) (flat prior); the published 95 %
 *                         intervals equal our own; the generator's true
 *                         per-path rates lie in the 95 % intervals; no open
 *                         funnel is left (:intent zsets); ps:triggers holds
 *                         one wishlist_abandoned per failed funnel with a
 *                         wishlist and high_intent at most once per funnel.
 *   test_triggers_once_across_restart
 *                         gen -n 400 --seed 9 paced while propstream runs;
 *                         SIGKILL in the middle of the stream, then the
 *                         watermark events and a restart with -e: the same
 *                         equalities, and every trigger exactly (or at most)
 *                         once per funnel.
 *   test_duplicates_and_late
 *                         hand-made JSON events on one partition: a repeated
 *                         event_id is counted in events_dup and not applied;
 *                         an event 2 h older than the newest (beyond the 1 h
 *                         allowed lateness) is counted in events_late and
 *                         still applied.
 *
 * The reference (reference_build) is deliberately naive: it sorts the events
 * by (customer, product, file order) and walks each pair.  The first CLICK
 * or WISHLIST opens a funnel and the letters seen are remembered in order; a
 * PURCHASE of the pair within 7 days of the opening closes it as a success
 * (path c, w or cw; campaign = that of the opening event when it is a
 * CLICK); funnels still open at the end are failures (the watermark events
 * close them all); a PURCHASE with no open funnel is a direct purchase.
 * Whatever would depend on *when* the watermark passes (a purchase or a new
 * step after the window) is counted as an anomaly and must not occur: gen
 * promises it never does.  gen's own "observed" counts per path are checked
 * against the reference too, so the reference is itself cross-checked.
 *
 * Credible intervals are recomputed here without any statistics library:
 * the Beta(a, b) density is integrated numerically on a fine grid
 * (trapezoid rule in log space, normalised by its own total) and the 2.5 %
 * and 97.5 % points are found by bisection on the interpolated CDF.  The
 * integrator checks itself against Beta(1, b) and Beta(a, 1), whose
 * quantiles have closed forms.
 *
 * Every run passes -X kafka.session.timeout.ms=6000 (see test_end_to_end.c:
 * librdkafka 2.0.2's mock cluster makes a group's next member wait for the
 * previous member's session to expire).  PS_TEST_FILTER=<glob> runs a
 * subset; PS_TEST_MAX_REPORT=N prints up to N mismatches per check (15).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif

#define DAY_MS INT64_C(86400000)
#define HOUR_MS INT64_C(3600000)
#define WINDOW_MS (7 * DAY_MS) /* contract default attribution window */
#define PARTITIONS 4
/* mismatches printed per check; PS_TEST_MAX_REPORT=N for more */
static int max_report(void)
{
    const char *e = getenv("PS_TEST_MAX_REPORT");
    return e != NULL && atoi(e) > 0 ? atoi(e) : 15;
}
#define MAX_REPORT max_report()

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    assert_non_null(p);
    return p;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

/* The last max bytes of s (propstream's output can be long). */
/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

/*
 * Run argv to completion with stdout and stderr captured into out (first
 * out_size - 1 bytes), SIGKILL (by pid) after timeout_s.  Exit status,
 * 128 + signal, or -1 on timeout.  *elapsed: wall time in seconds.
 */
/* fork/exec argv in the background, stdout and stderr to files. */
/* Wait for a child we spawned; its exit status, 128+sig, or -1 (killed
 * after timeout_ms). */
/* Lines of the file at path containing needle. */
static int count_lines_with(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void dump_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    print_error("--- %s (tail) ---\n%s\n", path, ps_test_tail(buf, max));
}

typedef struct servers {
    ps_test_redis redis;
    ps_test_broker broker;
    bool have_redis, have_broker;
    char redis_addr[64];
    char dir[64]; /* scratch directory: truth file, logs */
} servers;

/* The running test's servers, stopped by the teardown even when the test
 * fails (cmocka's failures longjmp past the test's own cleanup). */
static servers *current_servers;

static void servers_start(servers *sv, const char *topic_spec)
{
    const char *topics[] = {topic_spec, NULL};
    memset(sv, 0, sizeof *sv);
    current_servers = sv;
    snprintf(sv->dir, sizeof sv->dir, "/tmp/ps-funnels-XXXXXX");
    assert_non_null(mkdtemp(sv->dir));
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
    if (strncmp(sv->dir, "/tmp/ps-funnels-", 16) == 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", sv->dir);
        if (system(cmd) != 0)
            print_error("could not remove %s\n", sv->dir);
    }
    sv->dir[0] = '\0';
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
        print_error("propstream run output (tail):\n%s\n", ps_test_tail(out, 4000));
        fail_msg("propstream run exited %d (-1 = timeout after %d s)", rc,
                 timeout_s);
    }
}

/* gen to Kafka in the foreground; returns its JSON summary (decref it). */
static json_t *run_gen(const servers *sv, const char *n, const char *seed,
                       const char *truth)
{
    static char out[1 << 16];
    const char *argv[] = {PS_BIN, "gen", "-n", n, "--seed", seed,
                          "--format", "confluent", "--progress-s", "0",
                          "--truth", truth, "-b", sv->broker.bootstrap,
                          "-t", "events", NULL};
    int rc = ps_test_run(argv, 60, out, sizeof out);
    if (rc != 0)
        fail_msg("propstream gen exited %d: %s", rc, out);
    json_error_t jerr;
    json_t *sum = json_loads(out, 0, &jerr);
    if (sum == NULL)
        fail_msg("gen summary: %s: %.200s", jerr.text, out);
    return sum;
}

/* ------------------------------------------------------------------ */
/* Producing our own events                                            */
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

/* One JSON message to an explicit partition, key = customer id.  amount <
 * 0 means none; campaign may be NULL. */
static void produce_json(producer *p, int32_t partition, const char *id,
                         const char *cust, const char *type,
                         const char *product, double amount, int64_t ts,
                         const char *campaign)
{
    char buf[1024], prod[128] = "", amt[64] = "", camp[128] = "";
    if (product != NULL)
        snprintf(prod, sizeof prod, ",\"product_id\":\"%s\"", product);
    if (amount >= 0)
        snprintf(amt, sizeof amt, ",\"amount\":%.17g", amount);
    if (campaign != NULL)
        snprintf(camp, sizeof camp, ",\"campaign\":\"%s\"", campaign);
    int len = snprintf(buf, sizeof buf,
                       "{\"event_id\":\"%s\",\"customer_id\":\"%s\","
                       "\"type\":\"%s\",\"ts\":%" PRId64 "%s%s%s}",
                       id, cust, type, ts, prod, amt, camp);
    assert_true(len > 0 && (size_t)len < sizeof buf);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC("events"), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(cust, strlen(cust)), RD_KAFKA_V_VALUE(buf, (size_t)len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (err)
        fail_msg("produce: %s", rd_kafka_err2str(err));
    p->produced++;
    /* one at a time, in order: the order on the partition is the test */
    if (rd_kafka_flush(p->rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("flush timed out");
    assert_int_equal(p->failed, 0);
    assert_int_equal(p->delivered, p->produced);
}

static void producer_close(producer *p)
{
    if (p->rk != NULL)
        rd_kafka_destroy(p->rk);
    p->rk = NULL;
}

/* ------------------------------------------------------------------ */
/* Events, the reference recount                                       */
/* ------------------------------------------------------------------ */

enum { T_CLICK, T_WISHLIST, T_PURCHASE, T_SPEND };
enum { PATH_ALL, PATH_C, PATH_W, PATH_CW, PATH_COUNT };
static const char *const path_suffix[PATH_COUNT] = {"", "_c", "_w", "_cw"};
static const char *const path_name[PATH_COUNT] = {"all", "c", "w", "cw"};

typedef struct tev {
    char *id, *cust, *prod, *camp; /* prod, camp may be NULL */
    int type;
    int64_t ts;
    size_t order; /* position in the stream (file order) */
} tev;

/* Counters of one key at one level. */
typedef struct stat_rec {
    char *key;
    long long events, clicks, wishlists, purchases, direct;
    long long trials[PATH_COUNT], successes[PATH_COUNT];
} stat_rec;

/* A tiny string -> stat_rec map (open addressing, FNV-1a). */
typedef struct smap {
    stat_rec *v;
    size_t cap, n;
} smap;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static stat_rec *smap_find(const smap *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = fnv1a(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->v[i].key == NULL)
            return NULL;
        if (strcmp(m->v[i].key, key) == 0)
            return &m->v[i];
    }
}

static stat_rec *smap_get(smap *m, const char *key)
{
    stat_rec *r = smap_find(m, key);
    if (r != NULL)
        return r;
    if (2 * (m->n + 1) > m->cap) {
        smap big = {xcalloc(m->cap ? 2 * m->cap : 64, sizeof(stat_rec)),
                    m->cap ? 2 * m->cap : 64, 0};
        for (size_t i = 0; i < m->cap; i++) {
            if (m->v[i].key == NULL)
                continue;
            size_t j = fnv1a(m->v[i].key) & (big.cap - 1);
            while (big.v[j].key != NULL)
                j = (j + 1) & (big.cap - 1);
            big.v[j] = m->v[i];
            big.n++;
        }
        free(m->v);
        *m = big;
    }
    size_t i = fnv1a(key) & (m->cap - 1);
    while (m->v[i].key != NULL)
        i = (i + 1) & (m->cap - 1);
    m->v[i].key = xstrdup(key);
    m->n++;
    return &m->v[i];
}

static void smap_free(smap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->v[i].key);
    free(m->v);
    memset(m, 0, sizeof *m);
}

typedef struct funnel {
    const char *cust, *prod, *camp, *camp_first_click;
    int64_t open_ts;
    int path; /* PATH_C, PATH_W, PATH_CW */
    bool success;
} funnel;

typedef struct reference {
    tev *ev;
    size_t nev, cap;
    int64_t max_ts;
    funnel *f;
    size_t nf;
    long long anomalies; /* window-dependent situations gen never makes */
    stat_rec global;
    smap prod, cust, camp, camp_alt;
    smap event_ids; /* every event id, for the trigger causes */
    long long wish_failed; /* failed funnels whose path has a w */
} reference;

static void ref_add(reference *r, const char *id, const char *cust, int type,
                    const char *prod, int64_t ts, const char *camp)
{
    if (r->nev == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 4096;
        r->ev = realloc(r->ev, r->cap * sizeof *r->ev);
        assert_non_null(r->ev);
    }
    tev *e = &r->ev[r->nev];
    e->id = xstrdup(id);
    e->cust = xstrdup(cust);
    e->prod = prod ? xstrdup(prod) : NULL;
    e->camp = camp ? xstrdup(camp) : NULL;
    e->type = type;
    e->ts = ts;
    e->order = r->nev++;
    if (ts > r->max_ts)
        r->max_ts = ts;
}

static int type_of(const char *s)
{
    if (strcmp(s, "CLICK") == 0)
        return T_CLICK;
    if (strcmp(s, "WISHLIST") == 0)
        return T_WISHLIST;
    if (strcmp(s, "PURCHASE") == 0)
        return T_PURCHASE;
    if (strcmp(s, "SPEND") == 0)
        return T_SPEND;
    fail_msg("unknown type %s", s);
    return -1;
}

/* Append gen's truth file (one good event per line, in emission order). */
static void ref_load_truth(reference *r, const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    while (fgets(line, sizeof line, f) != NULL) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (o == NULL)
            fail_msg("truth: %s", jerr.text);
        const char *id = json_string_value(json_object_get(o, "event_id"));
        const char *cust = json_string_value(json_object_get(o, "customer_id"));
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *prod = json_string_value(json_object_get(o, "product_id"));
        const char *camp = json_string_value(json_object_get(o, "campaign"));
        json_t *ts = json_object_get(o, "ts");
        assert_non_null(id);
        assert_non_null(cust);
        assert_non_null(type);
        assert_true(json_is_integer(ts));
        ref_add(r, id, cust, type_of(type), prod, json_integer_value(ts), camp);
        json_decref(o);
    }
    fclose(f);
}

static int cmp_pair_order(const void *a, const void *b)
{
    const tev *x = *(const tev *const *)a, *y = *(const tev *const *)b;
    int c = strcmp(x->cust, y->cust);
    if (c == 0)
        c = strcmp(x->prod, y->prod);
    if (c == 0)
        c = x->order < y->order ? -1 : (x->order > y->order);
    return c;
}

static int path_of(bool seen_c, bool seen_w)
{
    if (seen_c && seen_w)
        return PATH_CW;
    return seen_c ? PATH_C : PATH_W;
}

static void count_funnel(stat_rec *s, const funnel *fu)
{
    s->trials[PATH_ALL]++;
    s->trials[fu->path]++;
    if (fu->success) {
        s->successes[PATH_ALL]++;
        s->successes[fu->path]++;
    }
}

static void close_funnel(reference *r, funnel *fu, bool success)
{
    fu->success = success;
    r->f[r->nf++] = *fu;
    count_funnel(&r->global, fu);
    count_funnel(smap_get(&r->prod, fu->prod), fu);
    count_funnel(smap_get(&r->cust, fu->cust), fu);
    if (fu->camp != NULL)
        count_funnel(smap_get(&r->camp, fu->camp), fu);
    if (fu->camp_first_click != NULL)
        count_funnel(smap_get(&r->camp_alt, fu->camp_first_click), fu);
    if (!success && fu->path != PATH_C)
        r->wish_failed++;
}

/*
 * The recount.  Every funnel still open after the last event is a failure:
 * the caller has produced events that push every partition's watermark
 * past every window.
 */
static void reference_build(reference *r)
{
    tev **pe = xcalloc(r->nev, sizeof *pe);
    size_t np = 0;
    r->f = xcalloc(r->nev, sizeof *r->f);
    for (size_t i = 0; i < r->nev; i++) {
        tev *e = &r->ev[i];
        stat_rec *c = smap_get(&r->cust, e->cust);
        c->events++;
        r->global.events++;
        smap_get(&r->event_ids, e->id);
        if (e->type == T_SPEND)
            continue;
        assert_non_null(e->prod);
        stat_rec *p = smap_get(&r->prod, e->prod);
        c->clicks += e->type == T_CLICK;
        c->wishlists += e->type == T_WISHLIST;
        c->purchases += e->type == T_PURCHASE;
        p->clicks += e->type == T_CLICK;
        p->wishlists += e->type == T_WISHLIST;
        p->purchases += e->type == T_PURCHASE;
        pe[np++] = e;
    }
    qsort(pe, np, sizeof *pe, cmp_pair_order);

    for (size_t i = 0; i < np;) {
        size_t j = i;
        while (j < np && strcmp(pe[j]->cust, pe[i]->cust) == 0 &&
               strcmp(pe[j]->prod, pe[i]->prod) == 0)
            j++;
        bool open = false;
        bool seen_c = false, seen_w = false;
        funnel fu;
        memset(&fu, 0, sizeof fu);
        for (size_t k = i; k < j; k++) {
            const tev *e = pe[k];
            if (e->type == T_PURCHASE) {
                if (open && e->ts > fu.open_ts + WINDOW_MS) {
                    r->anomalies++; /* expiry time would matter */
                    fu.path = path_of(seen_c, seen_w);
                    close_funnel(r, &fu, false);
                    open = false;
                }
                if (open) {
                    fu.path = path_of(seen_c, seen_w);
                    close_funnel(r, &fu, true);
                    open = false;
                } else {
                    smap_get(&r->prod, e->prod)->direct++;
                    smap_get(&r->cust, e->cust)->direct++;
                    r->global.direct++;
                }
                continue;
            }
            if (open && e->ts > fu.open_ts + WINDOW_MS)
                r->anomalies++; /* a step after the window */
            if (!open) {
                open = true;
                seen_c = seen_w = false;
                memset(&fu, 0, sizeof fu);
                fu.cust = e->cust;
                fu.prod = e->prod;
                fu.open_ts = e->ts;
                fu.camp = e->type == T_CLICK ? e->camp : NULL;
            }
            if (e->type == T_CLICK && !seen_c)
                fu.camp_first_click = e->camp;
            seen_c |= e->type == T_CLICK;
            seen_w |= e->type == T_WISHLIST;
        }
        if (open) {
            fu.path = path_of(seen_c, seen_w);
            close_funnel(r, &fu, false);
        }
        i = j;
    }
    free(pe);
}

static void reference_free(reference *r)
{
    for (size_t i = 0; i < r->nev; i++) {
        free(r->ev[i].id);
        free(r->ev[i].cust);
        free(r->ev[i].prod);
        free(r->ev[i].camp);
    }
    free(r->ev);
    free(r->f);
    smap_free(&r->prod);
    smap_free(&r->cust);
    smap_free(&r->camp);
    smap_free(&r->camp_alt);
    smap_free(&r->event_ids);
    memset(r, 0, sizeof *r);
}

/* One SPEND per partition, 30 days after the newest event: every
 * partition's watermark then passes every funnel's window. */
static void produce_watermark_events(reference *r, const char *bootstrap)
{
    producer p;
    int64_t ts = r->max_ts + 30 * DAY_MS;
    producer_open(&p, bootstrap);
    for (int k = 0; k < PARTITIONS; k++) {
        char id[64], cust[64];
        snprintf(id, sizeof id, "zz-watermark-ev-%d", k);
        snprintf(cust, sizeof cust, "zz-watermark-p%d", k);
        produce_json(&p, k, id, cust, "SPEND", NULL, 1.0, ts, NULL);
        ref_add(r, id, cust, T_SPEND, NULL, ts, NULL);
    }
    producer_close(&p);
}

/* ------------------------------------------------------------------ */
/* Beta credible intervals, computed independently                     */
/* ------------------------------------------------------------------ */

#define BETA_GRID 200000

/* x such that the interpolated CDF (cdf[i] at i/BETA_GRID) equals q. */
static double grid_quantile(const double *cdf, double q)
{
    size_t lo = 0, hi = BETA_GRID; /* cdf[lo] <= q <= cdf[hi] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] < q)
            lo = mid;
        else
            hi = mid;
    }
    double d = cdf[hi] - cdf[lo];
    double t = d > 0 ? (q - cdf[lo]) / d : 0.5;
    return ((double)lo + t) / BETA_GRID;
}

/* 95 % equal-tailed interval of Beta(a, b), a, b >= 1: density integrated
 * by the trapezoid rule in log space, normalised by its own total. */
static void beta_ci95(double a, double b, double *lo, double *hi)
{
    static double cdf[BETA_GRID + 1];
    static double logf_[BETA_GRID + 1];
    double top = -INFINITY;
    for (size_t i = 0; i <= BETA_GRID; i++) {
        double x = (double)i / BETA_GRID, l = 0;
        if (a != 1.0)
            l += (a - 1.0) * (x > 0 ? log(x) : -INFINITY);
        if (b != 1.0)
            l += (b - 1.0) * (x < 1 ? log1p(-x) : -INFINITY);
        logf_[i] = l;
        if (l > top)
            top = l;
    }
    cdf[0] = 0;
    double prev = exp(logf_[0] - top);
    for (size_t i = 1; i <= BETA_GRID; i++) {
        double cur = exp(logf_[i] - top);
        cdf[i] = cdf[i - 1] + 0.5 * (prev + cur);
        prev = cur;
    }
    double total = cdf[BETA_GRID];
    for (size_t i = 0; i <= BETA_GRID; i++)
        cdf[i] /= total;
    *lo = grid_quantile(cdf, 0.025);
    *hi = grid_quantile(cdf, 0.975);
}

/* The integrator against closed forms: Beta(1,b) has CDF 1-(1-x)^b,
 * Beta(a,1) has CDF x^a. */
static void check_beta_integrator(void)
{
    const double ks[] = {1, 2, 7, 40, 300};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        double k = ks[i], lo, hi;
        beta_ci95(1, k, &lo, &hi);
        double elo = 1 - pow(0.975, 1 / k), ehi = 1 - pow(0.025, 1 / k);
        if (fabs(lo - elo) > 1e-6 || fabs(hi - ehi) > 1e-6)
            fail_msg("integrator Beta(1,%g): [%.9f, %.9f] vs [%.9f, %.9f]", k,
                     lo, hi, elo, ehi);
        beta_ci95(k, 1, &lo, &hi);
        elo = pow(0.025, 1 / k);
        ehi = pow(0.975, 1 / k);
        if (fabs(lo - elo) > 1e-6 || fabs(hi - ehi) > 1e-6)
            fail_msg("integrator Beta(%g,1): [%.9f, %.9f] vs [%.9f, %.9f]", k,
                     lo, hi, elo, ehi);
    }
    /* integer a, b: I_x(a, b) = P(Binomial(a+b-1, x) >= a), solved by
     * bisection offline (exact sums in Python) */
    static const double known[][4] = {
        {2, 8, 0.0281449735, 0.4824965149},
        {3, 2, 0.1941204497, 0.9324140135},
        {66, 236, 0.1738339977, 0.2667820655},
        {1110, 4036, 0.2045703062, 0.2270420296},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        double lo, hi;
        beta_ci95(known[i][0], known[i][1], &lo, &hi);
        if (fabs(lo - known[i][2]) > 1e-6 || fabs(hi - known[i][3]) > 1e-6)
            fail_msg("integrator Beta(%g,%g): [%.9f, %.9f] vs [%.9f, %.9f]",
                     known[i][0], known[i][1], lo, hi, known[i][2],
                     known[i][3]);
    }
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

/* Integer field, or `absent` when the field is missing. */
static long long hget_ll(redisContext *c, const char *key, const char *field,
                         long long absent)
{
    char *v = hget(c, key, field);
    long long x = absent;
    if (v != NULL && !ps_test_parse_ll(v, &x))
        fail_msg("%s %s = \"%s\": not an integer", key, field, v);
    free(v);
    return x;
}

/* Real field; false when absent. */
static bool hget_dbl(redisContext *c, const char *key, const char *field,
                     double *out)
{
    char *v = hget(c, key, field);
    bool ok = v != NULL;
    if (v != NULL && !ps_test_parse_dbl(v, out))
        fail_msg("%s %s = \"%s\": not a finite number", key, field, v);
    free(v);
    return ok;
}

/* Keys matching pattern (SCAN), appended to *keys (malloc'd strings). */
static size_t scan_keys(redisContext *c, const char *pattern, char ***keys)
{
    size_t n = 0, cap = 0;
    char cursor[32] = "0";
    *keys = NULL;
    do {
        redisReply *r =
            redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 2);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *ks = r->element[1];
        for (size_t i = 0; i < ks->elements; i++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                *keys = realloc(*keys, cap * sizeof **keys);
                assert_non_null(*keys);
            }
            (*keys)[n++] = strndup(ks->element[i]->str, ks->element[i]->len);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* ------------------------------------------------------------------ */
/* Checks against the reference                                        */
/* ------------------------------------------------------------------ */

enum {
    F_EVENTS = 1,  /* events */
    F_TYPES = 2,   /* clicks, wishlists, purchases */
    F_DIRECT = 4,  /* direct_purchases */
    F_PATHS = 8,   /* trials_x, successes_x */
    F_POST = 16,   /* p_purchase (+ _x with F_PATHS) == (1+s)/(2+n) */
    F_CI = 32,     /* p_purchase_lo/hi equal our own 95 % interval */
    F_ALPHA = 64,  /* p_purchase == alpha / (alpha + beta) */
};

typedef struct check_ctx {
    redisContext *c;
    const char *what; /* label for messages */
    int bad;
} check_ctx;

static void mismatch(check_ctx *k, const char *fmt, ...)
{
    if (k->bad++ < MAX_REPORT) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        print_error("  [%s] %s\n", k->what, msg);
    }
}

/* An integer counter: exact; an absent field counts as 0. */
static void check_count(check_ctx *k, const char *key, const char *field,
                        long long want)
{
    long long got = hget_ll(k->c, key, field, -1);
    if (got == -1 && want == 0)
        return;
    if (got != want)
        mismatch(k, "%s %s: redis %lld%s, reference %lld", key, field, got,
                 got == -1 ? " (absent)" : "", want);
}

/* Posterior fields of one key; n, s are the reference's counts. */
static void check_posterior(check_ctx *k, const char *key, const char *suffix,
                            long long n, long long s, int flags)
{
    char f_p[64], f_lo[64], f_hi[64];
    double p, lo, hi;
    snprintf(f_p, sizeof f_p, "p_purchase%s", suffix);
    snprintf(f_lo, sizeof f_lo, "p_purchase%s_lo", suffix);
    snprintf(f_hi, sizeof f_hi, "p_purchase%s_hi", suffix);
    if (!hget_dbl(k->c, key, f_p, &p)) {
        if (n > 0)
            mismatch(k, "%s %s absent (n = %lld)", key, f_p, n);
        return;
    }
    if (p < 0 || p > 1)
        mismatch(k, "%s %s = %.17g outside [0, 1]", key, f_p, p);
    if (flags & F_POST) {
        double want = (1.0 + (double)s) / (2.0 + (double)n);
        if (fabs(p - want) > 1e-9)
            mismatch(k, "%s %s: redis %.17g, (1+s)/(2+n) = %.17g (n %lld, s "
                        "%lld)",
                     key, f_p, p, want, n, s);
    }
    if (*suffix != '\0') /* intervals are published for all paths only */
        return;
    bool has_lo = hget_dbl(k->c, key, f_lo, &lo);
    bool has_hi = hget_dbl(k->c, key, f_hi, &hi);
    if (!has_lo || !has_hi) {
        mismatch(k, "%s p_purchase_lo/hi absent", key);
        return;
    }
    if (!(lo <= p && p <= hi))
        mismatch(k, "%s lo %.9g <= p %.9g <= hi %.9g does not hold", key, lo, p,
                 hi);
    if (flags & F_CI) {
        double mlo, mhi;
        beta_ci95(1.0 + (double)s, 1.0 + (double)(n - s), &mlo, &mhi);
        if (fabs(lo - mlo) > 1e-5 || fabs(hi - mhi) > 1e-5)
            mismatch(k, "%s 95%% interval: redis [%.9f, %.9f], ours for "
                        "Beta(%lld, %lld) [%.9f, %.9f]",
                     key, lo, hi, 1 + s, 1 + n - s, mlo, mhi);
    }
    if (flags & F_ALPHA) {
        double a, b;
        if (!hget_dbl(k->c, key, "alpha", &a) ||
            !hget_dbl(k->c, key, "beta", &b))
            mismatch(k, "%s alpha/beta absent", key);
        else if (a <= 0 || b <= 0 || fabs(a / (a + b) - p) > 1e-9)
            mismatch(k, "%s alpha %.17g beta %.17g: mean %.17g, p_purchase "
                        "%.17g",
                     key, a, b, a / (a + b), p);
    }
}

static void check_level(check_ctx *k, const char *key, const stat_rec *w,
                        int flags)
{
    if (flags & F_EVENTS)
        check_count(k, key, "events", w->events);
    if (flags & F_TYPES) {
        check_count(k, key, "clicks", w->clicks);
        check_count(k, key, "wishlists", w->wishlists);
        check_count(k, key, "purchases", w->purchases);
    }
    if (flags & F_DIRECT)
        check_count(k, key, "direct_purchases", w->direct);
    for (int p = 0; p < PATH_COUNT; p++) {
        if (p != PATH_ALL && !(flags & F_PATHS))
            break;
        char ft[32], fs[32];
        snprintf(ft, sizeof ft, "trials%s", path_suffix[p]);
        snprintf(fs, sizeof fs, "successes%s", path_suffix[p]);
        check_count(k, key, ft, w->trials[p]);
        check_count(k, key, fs, w->successes[p]);
    }
    for (int p = 0; p < PATH_COUNT; p++) {
        if (p != PATH_ALL && !(flags & F_PATHS))
            break;
        check_posterior(k, key, path_suffix[p], w->trials[p], w->successes[p],
                        flags);
    }
}

/*
 * Every level against the reference.  Returns the number of mismatches
 * (the first MAX_REPORT of each level printed).
 */
static int check_all_levels(redisContext *c, const reference *r, bool full)
{
    int bad = 0;
    char key[512];

    check_ctx g = {c, "global", 0};
    check_level(&g, "ps:global", &r->global,
                F_EVENTS | F_DIRECT | F_PATHS | F_POST | F_CI);
    double a, b;
    if (!hget_dbl(c, "ps:global", "alpha", &a) ||
        !hget_dbl(c, "ps:global", "beta", &b) ||
        fabs(a - (1.0 + (double)r->global.successes[PATH_ALL])) > 1e-9 ||
        fabs(b - (1.0 + (double)(r->global.trials[PATH_ALL] -
                                 r->global.successes[PATH_ALL]))) > 1e-9)
        mismatch(&g, "ps:global alpha/beta are not 1+s, 1+f");
    bad += g.bad;
    if (!full)
        return bad;

    check_ctx pc = {c, "products", 0};
    for (size_t i = 0; i < r->prod.cap; i++) {
        const stat_rec *w = &r->prod.v[i];
        if (w->key == NULL)
            continue;
        snprintf(key, sizeof key, "ps:prod:%s", w->key);
        check_level(&pc, key, w,
                    F_TYPES | F_DIRECT | F_PATHS | F_POST |
                        (w->trials[PATH_ALL] > 0 ? F_CI : 0));
        double pw;
        if (hget_dbl(c, key, "p_wishlist_after_click", &pw) &&
            (pw < 0 || pw > 1))
            mismatch(&pc, "%s p_wishlist_after_click = %g", key, pw);
    }
    /* nothing in Redis that the reference does not know */
    char **keys;
    size_t nk = scan_keys(c, "ps:prod:*", &keys);
    for (size_t i = 0; i < nk; i++) {
        const char *id = keys[i] + strlen("ps:prod:");
        if (strchr(id, ':') == NULL && smap_find(&r->prod, id) == NULL)
            mismatch(&pc, "%s in Redis, no such product in the stream",
                     keys[i]);
    }
    free_keys(keys, nk);
    bad += pc.bad;

    check_ctx cc = {c, "customers", 0};
    for (size_t i = 0; i < r->cust.cap; i++) {
        const stat_rec *w = &r->cust.v[i];
        if (w->key == NULL)
            continue;
        snprintf(key, sizeof key, "ps:cust:%s", w->key);
        check_level(&cc, key, w,
                    F_EVENTS | F_TYPES | F_DIRECT | F_PATHS |
                        (w->trials[PATH_ALL] > 0 ? F_ALPHA : 0));
    }
    bad += cc.bad;

    check_ctx kc = {c, "campaigns", 0};
    size_t ncamp = 0;
    for (size_t i = 0; i < r->camp.cap; i++) {
        const stat_rec *w = &r->camp.v[i];
        if (w->key == NULL)
            continue;
        ncamp++;
        snprintf(key, sizeof key, "ps:campaign:%s", w->key);
        int before = kc.bad;
        check_level(&kc, key, w, F_POST | F_CI);
        double pg;
        if (!hget_dbl(c, key, "p_campaign_given_purchase", &pg))
            mismatch(&kc, "%s p_campaign_given_purchase absent", key);
        else if (pg < 0 || pg > 1)
            mismatch(&kc, "%s p_campaign_given_purchase = %g", key, pg);
        if (kc.bad != before) { /* which reading of "opening click"? */
            const stat_rec *alt = smap_find(&r->camp_alt, w->key);
            print_error("  [campaigns] %s: reference (campaign of the opening "
                        "CLICK) %lld/%lld; campaign of the first click "
                        "%lld/%lld; redis %lld/%lld\n",
                        key, w->successes[0], w->trials[0],
                        alt ? alt->successes[0] : 0, alt ? alt->trials[0] : 0,
                        hget_ll(c, key, "successes", -1),
                        hget_ll(c, key, "trials", -1));
        }
    }
    nk = scan_keys(c, "ps:campaign:*", &keys);
    if (nk != ncamp)
        mismatch(&kc, "%zu ps:campaign: keys in Redis, %zu campaigns opened "
                      "funnels",
                 nk, ncamp);
    free_keys(keys, nk);
    bad += kc.bad;
    print_message("    levels: global %d, %zu products %d, %zu customers %d, "
                  "%zu campaigns %d mismatches\n",
                  g.bad, r->prod.n, pc.bad, r->cust.n, cc.bad, ncamp, kc.bad);
    return bad;
}

/* No :intent zset left with a member (every funnel is closed). */
static int check_no_open_funnels(redisContext *c)
{
    char **keys;
    size_t nk = scan_keys(c, "ps:cust:*:intent", &keys);
    int bad = 0;
    for (size_t i = 0; i < nk; i++) {
        redisReply *r = redisCommand(c, "ZRANGE %s 0 -1 WITHSCORES", keys[i]);
        assert_non_null(r);
        if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
            if (bad++ < MAX_REPORT)
                print_error("  [intent] %s still has %zu members, first %s "
                            "-> %s\n",
                            keys[i], r->elements / 2, r->element[0]->str,
                            r->element[1]->str);
        }
        freeReplyObject(r);
    }
    free_keys(keys, nk);
    return bad;
}

/* ------------------------------------------------------------------ */
/* Triggers                                                            */
/* ------------------------------------------------------------------ */

typedef struct trigger {
    char *type, *cust, *prod, *cause;
    long long opened_ts, ts;
    double score;
} trigger;

static size_t read_triggers(redisContext *c, trigger **out)
{
    redisReply *r = redisCommand(c, "XRANGE ps:triggers - +");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    trigger *t = xcalloc(r->elements, sizeof *t);
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *fv = r->element[i]->element[1];
        t[i].opened_ts = t[i].ts = -1;
        t[i].score = NAN;
        for (size_t j = 0; j + 1 < fv->elements; j += 2) {
            const char *f = fv->element[j]->str, *v = fv->element[j + 1]->str;
            if (strcmp(f, "type") == 0)
                t[i].type = xstrdup(v);
            else if (strcmp(f, "customer") == 0)
                t[i].cust = xstrdup(v);
            else if (strcmp(f, "product") == 0)
                t[i].prod = xstrdup(v);
            else if (strcmp(f, "cause") == 0)
                t[i].cause = xstrdup(v);
            else if (strcmp(f, "opened_ts") == 0)
                ps_test_parse_ll(v, &t[i].opened_ts);
            else if (strcmp(f, "ts") == 0)
                ps_test_parse_ll(v, &t[i].ts);
            else if (strcmp(f, "score") == 0)
                ps_test_parse_dbl(v, &t[i].score);
        }
    }
    size_t n = r->elements;
    freeReplyObject(r);
    *out = t;
    return n;
}

static void free_triggers(trigger *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].type);
        free(t[i].cust);
        free(t[i].prod);
        free(t[i].cause);
    }
    free(t);
}

static void funnel_key(char *buf, size_t size, const char *cust,
                       const char *prod, long long opened_ts)
{
    snprintf(buf, size, "%s\x1f%s\x1f%lld", cust ? cust : "(null)",
             prod ? prod : "(null)", opened_ts);
}

/*
 * ps:triggers against the reference: wishlist_abandoned exactly once per
 * failed funnel with a wishlist (same customer, product, opened_ts) and
 * nothing else; high_intent at most once per funnel, once per cause, for a
 * funnel that exists, caused by an event that exists, with a score at or
 * above the default threshold.
 */
static int check_triggers(redisContext *c, const reference *r,
                          size_t *n_wish, size_t *n_high)
{
    trigger *t;
    size_t n = read_triggers(c, &t);
    check_ctx k = {c, "triggers", 0};
    smap want_wish = {0}, funnels = {0}, seen_wish = {0}, seen_high = {0},
         high_cause = {0};
    char fk[512];
    size_t at_threshold = 0;

    for (size_t i = 0; i < r->nf; i++) {
        const funnel *f = &r->f[i];
        funnel_key(fk, sizeof fk, f->cust, f->prod, f->open_ts);
        smap_get(&funnels, fk)->events++;
        if (!f->success && f->path != PATH_C)
            smap_get(&want_wish, fk)->events++;
    }
    *n_wish = *n_high = 0;
    for (size_t i = 0; i < n; i++) {
        const trigger *x = &t[i];
        if (x->type != NULL && strcmp(x->type, "wishlist_abandoned") != 0 &&
            strcmp(x->type, "high_intent") != 0)
            continue; /* another kind (segment_changed): not ours */
        if (x->type == NULL || x->cust == NULL || x->prod == NULL ||
            x->cause == NULL || x->opened_ts < 0 || x->ts < 0 ||
            isnan(x->score)) {
            mismatch(&k, "entry %zu lacks a field (type %s customer %s "
                         "product %s cause %s opened_ts %lld ts %lld)",
                     i, x->type ? x->type : "-", x->cust ? x->cust : "-",
                     x->prod ? x->prod : "-", x->cause ? x->cause : "-",
                     x->opened_ts, x->ts);
            continue;
        }
        funnel_key(fk, sizeof fk, x->cust, x->prod, x->opened_ts);
        if (smap_find(&r->event_ids, x->cause) == NULL)
            mismatch(&k, "%s %s/%s: cause %s is no event id", x->type, x->cust,
                     x->prod, x->cause);
        if (strcmp(x->type, "wishlist_abandoned") == 0) {
            (*n_wish)++;
            if (smap_get(&seen_wish, fk)->events++ > 0)
                mismatch(&k, "wishlist_abandoned %s/%s opened %lld twice",
                         x->cust, x->prod, x->opened_ts);
            if (smap_find(&want_wish, fk) == NULL)
                mismatch(&k, "wishlist_abandoned %s/%s opened %lld: no failed "
                             "funnel with a wishlist there",
                         x->cust, x->prod, x->opened_ts);
        } else if (strcmp(x->type, "high_intent") == 0) {
            (*n_high)++;
            at_threshold += x->score == 0.5;
            if (smap_get(&seen_high, fk)->events++ > 0)
                mismatch(&k, "high_intent %s/%s opened %lld twice", x->cust,
                         x->prod, x->opened_ts);
            if (smap_get(&high_cause, x->cause)->events++ > 0)
                mismatch(&k, "high_intent: cause %s twice", x->cause);
            if (smap_find(&funnels, fk) == NULL)
                mismatch(&k, "high_intent %s/%s opened %lld: no such funnel",
                         x->cust, x->prod, x->opened_ts);
            if (!(x->score >= 0.5 - 1e-12 && x->score <= 1))
                mismatch(&k, "high_intent %s/%s: score %g below the 0.5 "
                             "threshold",
                         x->cust, x->prod, x->score);
        }
    }
    for (size_t i = 0; i < want_wish.cap; i++) {
        if (want_wish.v[i].key != NULL &&
            smap_find(&seen_wish, want_wish.v[i].key) == NULL) {
            char *s = xstrdup(want_wish.v[i].key);
            for (char *q = s; *q; q++)
                if (*q == '\x1f')
                    *q = ' ';
            mismatch(&k, "no wishlist_abandoned for the failed funnel %s", s);
            free(s);
        }
    }
    if ((long long)*n_wish != r->wish_failed)
        mismatch(&k, "%zu wishlist_abandoned entries, reference %lld failed "
                     "funnels with a wishlist",
                 *n_wish, r->wish_failed);
    if (*n_high > 0)
        print_message("    high_intent: %zu of %zu with a score of exactly "
                      "0.5 (the flat prior's mean)\n",
                      at_threshold, *n_high);
    smap_free(&want_wish);
    smap_free(&funnels);
    smap_free(&seen_wish);
    smap_free(&seen_high);
    smap_free(&high_cause);
    free_triggers(t, n);
    return k.bad;
}

/* ------------------------------------------------------------------ */
/* The generator's truth                                               */
/* ------------------------------------------------------------------ */

static double jnum(json_t *o, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(o, a);
    if (b != NULL)
        v = json_object_get(v, b);
    if (c != NULL)
        v = json_object_get(v, c);
    if (!json_is_number(v))
        fail_msg("gen summary: %s.%s.%s is not a number", a, b ? b : "",
                 c ? c : "");
    return json_number_value(v);
}

/*
 * gen's drawn counts per path equal the reference's (a cross-check of the
 * reference), and the true rate of each path -- the segments' rates
 * weighted by how many funnels each segment drew -- lies in the 95 %
 * interval of Redis's counts (ours per path, Redis's own for all paths).
 */
static int check_true_rates(redisContext *c, const reference *r, json_t *sum)
{
    static const char *const segs[] = {"vip", "regular", "premium"};
    json_t *model = json_object_get(sum, "segments");
    json_t *obs = json_object_get(sum, "observed");
    double num_all = 0, den_all = 0;
    int bad = 0;
    for (int p = PATH_C; p < PATH_COUNT; p++) {
        double num = 0, den = 0, drawn_s = 0;
        char field[32];
        snprintf(field, sizeof field, "p_purchase%s", path_suffix[p]);
        for (size_t s = 0; s < 3; s++) {
            double n = jnum(obs, segs[s], "funnels", path_name[p]);
            num += n * jnum(model, segs[s], field, NULL);
            den += n;
            drawn_s += jnum(obs, segs[s], "successes", path_name[p]);
        }
        if ((long long)den != r->global.trials[p] ||
            (long long)drawn_s != r->global.successes[p])
            fail_msg("gen drew %.0f/%.0f funnels on path %s, the reference "
                     "counts %lld/%lld: the reference is wrong",
                     drawn_s, den, path_name[p], r->global.successes[p],
                     r->global.trials[p]);
        num_all += num;
        den_all += den;
        char ft[32], fs[32];
        snprintf(ft, sizeof ft, "trials%s", path_suffix[p]);
        snprintf(fs, sizeof fs, "successes%s", path_suffix[p]);
        long long n = hget_ll(c, "ps:global", ft, -1);
        long long k = hget_ll(c, "ps:global", fs, -1);
        double lo = 0, hi = 0, mean = NAN, truth = num / den;
        if (n >= 0 && k >= 0)
            beta_ci95(1.0 + (double)k, 1.0 + (double)(n - k), &lo, &hi);
        hget_dbl(c, "ps:global", field, &mean);
        print_message("    path %-2s: n %5lld s %5lld  p_purchase%-3s %.4f  "
                      "95%% [%.4f, %.4f]  true %.4f\n",
                      path_name[p], n, k, path_suffix[p], mean, lo, hi, truth);
        if (!(lo <= truth && truth <= hi)) {
            print_error("true rate %.6f of path %s outside [%.6f, %.6f]\n",
                        truth, path_name[p], lo, hi);
            bad++;
        }
    }
    double lo = NAN, hi = NAN, mean = NAN, truth = num_all / den_all;
    hget_dbl(c, "ps:global", "p_purchase_lo", &lo);
    hget_dbl(c, "ps:global", "p_purchase_hi", &hi);
    hget_dbl(c, "ps:global", "p_purchase", &mean);
    print_message("    all    : p_purchase %.4f  95%% [%.4f, %.4f] (redis)  "
                  "true %.4f\n",
                  mean, lo, hi, truth);
    if (!(lo <= truth && truth <= hi)) {
        print_error("true rate %.6f of all paths outside [%.6f, %.6f]\n",
                    truth, lo, hi);
        bad++;
    }
    return bad;
}

/* ------------------------------------------------------------------ */
/* The tests                                                           */
/* ------------------------------------------------------------------ */

static void print_reference(const reference *r)
{
    long long fails = r->global.trials[0] - r->global.successes[0];
    print_message("    reference: %zu events, %lld funnels (c %lld, w %lld, "
                  "cw %lld), %lld successes, %lld failures (%lld with a "
                  "wishlist), %lld direct purchases, %zu products, %zu "
                  "campaigns\n",
                  r->nev, r->global.trials[0], r->global.trials[PATH_C],
                  r->global.trials[PATH_W], r->global.trials[PATH_CW],
                  r->global.successes[0], fails, r->wish_failed,
                  r->global.direct, r->prod.n, r->camp.n);
}

static void test_funnel_recount(void **state)
{
    (void)state;
    double t0 = ps_test_now_s();
    static servers sv; /* static: the teardown may need it */
    reference ref = {0};
    char truth[128];

    check_beta_integrator();
    servers_start(&sv, "events:4");
    snprintf(truth, sizeof truth, "%s/truth.jsonl", sv.dir);
    json_t *sum = run_gen(&sv, "800", "7", truth);
    ref_load_truth(&ref, truth);
    assert_int_equal((long long)ref.nev,
                     json_integer_value(json_object_get(sum, "good")));
    produce_watermark_events(&ref, sv.broker.bootstrap);
    reference_build(&ref);
    print_reference(&ref);
    assert_int_equal(ref.anomalies, 0); /* gen's promise */
    assert_true(ref.global.trials[PATH_W] > 100);
    assert_true(ref.global.trials[PATH_CW] > 100);

    run_propstream_e(&sv, "funnels", 90);

    redisContext *c = redis_open(&sv);
    long long dup = hget_ll(c, "ps:metrics", "events_dup", 0);
    long long late = hget_ll(c, "ps:metrics", "events_late", 0);
    int bad = check_all_levels(c, &ref, true);
    int open = check_no_open_funnels(c);
    size_t n_wish = 0, n_high = 0;
    int tbad = check_triggers(c, &ref, &n_wish, &n_high);
    print_message("    triggers: %zu wishlist_abandoned (reference %lld), %zu "
                  "high_intent\n",
                  n_wish, ref.wish_failed, n_high);
    if (dup != 0 || late != 0)
        print_error("  [metrics] events_dup %lld, events_late %lld (want 0, "
                    "0)\n",
                    dup, late);
    int rates = check_true_rates(c, &ref, sum);
    if (bad || open || tbad || dup || late || rates)
        fail_msg("%d level mismatches, %d open funnels, %d trigger problems, "
                 "events_dup %lld, events_late %lld, %d true rates outside "
                 "their intervals",
                 bad, open, tbad, dup, late, rates);

    redisFree(c);
    json_decref(sum);
    reference_free(&ref);
    servers_stop(&sv);
    print_message("    test_funnel_recount: %.1f s\n", ps_test_now_s() - t0);
}

static void test_triggers_once_across_restart(void **state)
{
    (void)state;
    double t0 = ps_test_now_s();
    static servers sv; /* static: the teardown may need it */
    reference ref = {0};
    char truth[128], gen_out[128], run_log[128], dry[128];

    servers_start(&sv, "events:4");
    snprintf(truth, sizeof truth, "%s/truth.jsonl", sv.dir);
    snprintf(gen_out, sizeof gen_out, "%s/gen.json", sv.dir);
    snprintf(run_log, sizeof run_log, "%s/run.log", sv.dir);
    snprintf(dry, sizeof dry, "%s/dry.jsonl", sv.dir);

    /* How many records gen will send (same seed, to a file). */
    static char out[1 << 16];
    const char *dry_argv[] = {PS_BIN, "gen", "-n", "400", "--seed", "9",
                              "--format", "json", "--progress-s", "0",
                              "-o", dry, NULL};
    assert_int_equal(ps_test_run(dry_argv, 30, out, sizeof out), 0);
    json_t *dsum = json_loads(out, 0, NULL);
    assert_non_null(dsum);
    long long records = json_integer_value(json_object_get(dsum, "records"));
    json_decref(dsum);
    assert_true(records > 1000);

    /* propstream consumes while gen produces at a pace (~2.9 s). */
    const char *run_argv[] = {PS_BIN, "run", "-b", sv.broker.bootstrap,
                              "-t", "events", "-g", "restart", "-r",
                              sv.redis_addr, "--flush-interval-ms", "50",
                              "-X", "kafka.session.timeout.ms=6000", NULL};
    pid_t run = ps_test_spawn(run_argv, NULL, run_log);
    /* gen starts once every partition is assigned (the mock's group join
     * takes ~3 s), so the kill below lands in the middle of the stream */
    double t_wait = ps_test_now_s();
    while (count_lines_with(run_log, "assigned") < PARTITIONS &&
           ps_test_now_s() - t_wait < 20)
        ps_test_sleep_ms(20);
    if (count_lines_with(run_log, "assigned") < PARTITIONS)
        print_error("no 'assigned' lines in the run log after 20 s; going "
                    "on\n");
    const char *gen_argv[] = {PS_BIN, "gen", "-n", "400", "--seed", "9",
                              "--format", "confluent", "--progress-s", "0",
                              "--rate", "1500", "--truth", truth,
                              "-b", sv.broker.bootstrap, "-t", "events",
                              NULL};
    pid_t gen = ps_test_spawn(gen_argv, gen_out, NULL);

    /* SIGKILL once it has flushed twice and consumed about 55 %. */
    redisContext *c = redis_open(&sv);
    long long in = 0, flushes = 0;
    double t_first = 0, t_kill;
    for (int t = 0; t < 30000; t += 20) {
        in = hget_ll(c, "ps:metrics", "events_in", 0);
        flushes = hget_ll(c, "ps:metrics", "flushes", 0);
        if (in > 0 && t_first == 0)
            t_first = ps_test_now_s();
        if (flushes >= 2 && in >= records * 11 / 20)
            break;
        ps_test_sleep_ms(20);
    }
    ps_test_sleep_ms(25); /* half a flush interval: some work not yet flushed */
    t_kill = ps_test_now_s();
    kill(run, SIGKILL);
    int st;
    assert_int_equal(waitpid(run, &st, 0), run);
    long long in_at_kill = hget_ll(c, "ps:metrics", "events_in", 0);
    size_t n_wish0 = 0;
    {
        redisReply *r = redisCommand(c, "XLEN ps:triggers");
        assert_non_null(r);
        n_wish0 = r->type == REDIS_REPLY_INTEGER ? (size_t)r->integer : 0;
        freeReplyObject(r);
    }
    print_message("    SIGKILL after %.1f s of consumption: %lld of %lld "
                  "records applied and flushed, %zu triggers so far\n",
                  t_first > 0 ? t_kill - t_first : 0.0, in_at_kill, records,
                  n_wish0);
    if (!(flushes >= 2 && in_at_kill > 0 && in_at_kill < records))
        dump_file(run_log, 3000);
    assert_true(flushes >= 2);
    assert_true(in_at_kill > 0);

    assert_int_equal(ps_test_wait_exit(gen, 60000), 0);
    FILE *f = fopen(gen_out, "r");
    assert_non_null(f);
    json_t *sum = json_loadf(f, 0, NULL);
    fclose(f);
    assert_non_null(sum);
    assert_int_equal(json_integer_value(json_object_get(sum, "records")),
                     records);
    ref_load_truth(&ref, truth);
    produce_watermark_events(&ref, sv.broker.bootstrap);
    reference_build(&ref);
    print_reference(&ref);
    assert_int_equal(ref.anomalies, 0);

    run_propstream_e(&sv, "restart", 90);

    int bad = check_all_levels(c, &ref, true);
    int open = check_no_open_funnels(c);
    size_t n_wish = 0, n_high = 0;
    int tbad = check_triggers(c, &ref, &n_wish, &n_high);
    long long ev = hget_ll(c, "ps:metrics", "events_applied", -1);
    print_message("    triggers: %zu wishlist_abandoned (reference %lld), %zu "
                  "high_intent; events_applied %lld (stream %zu)\n",
                  n_wish, ref.wish_failed, n_high, ev, ref.nev);
    if (bad || open || tbad || ev != (long long)ref.nev)
        fail_msg("%d level mismatches, %d open funnels, %d trigger problems, "
                 "events_applied %lld (stream %zu)",
                 bad, open, tbad, ev, ref.nev);

    redisFree(c);
    json_decref(sum);
    reference_free(&ref);
    servers_stop(&sv);
    print_message("    test_triggers_once_across_restart: %.1f s\n",
                  ps_test_now_s() - t0);
}

static void test_duplicates_and_late(void **state)
{
    (void)state;
    double t0 = ps_test_now_s();
    static servers sv; /* static: the teardown may need it */
    producer p;
    const int64_t T = INT64_C(1735689600000); /* 2025-01-01T00:00:00Z */
    const char *cust = "dup-late-cust";

    servers_start(&sv, "events:1");
    producer_open(&p, sv.broker.bootstrap);
    /* a click (with a campaign) and its purchase 30 min later */
    produce_json(&p, 0, "dl-click-1", cust, "CLICK", "dl-prod", -1, T,
                 "dl-camp");
    produce_json(&p, 0, "dl-purchase-1", cust, "PURCHASE", "dl-prod", 10.0,
                 T + HOUR_MS / 2, NULL);
    /* the producer retries the click: same event id (not applied; applied,
     * it would open a second funnel) */
    produce_json(&p, 0, "dl-click-1", cust, "CLICK", "dl-prod", -1, T,
                 "dl-camp");
    /* 2 h older than the newest event: watermark = T + 30 min - 1 h */
    produce_json(&p, 0, "dl-late-1", cust, "SPEND", NULL, 5.0,
                 T + HOUR_MS / 2 - 2 * HOUR_MS, NULL);
    producer_close(&p);

    run_propstream_e(&sv, "duplate", 60);

    redisContext *c = redis_open(&sv);
    char key[128];
    snprintf(key, sizeof key, "ps:cust:%s", cust);
    struct {
        const char *key, *field;
        long long want;
    } want[] = {
        {"ps:metrics", "events_in", 4},
        {"ps:metrics", "events_dup", 1},
        {"ps:metrics", "events_late", 1},
        {"ps:metrics", "events_applied", 3},
        {"ps:global", "events", 3},
        {"ps:global", "trials", 1},
        {"ps:global", "successes", 1},
        {"ps:global", "trials_c", 1},
        {"ps:global", "successes_c", 1},
        {"ps:global", "direct_purchases", 0},
        {key, "events", 3},
        {key, "clicks", 1},
        {key, "purchases", 1},
        {key, "spend_n", 2},
        {key, "trials", 1},
        {key, "successes", 1},
        {key, "direct_purchases", 0},
        {"ps:prod:dl-prod", "clicks", 1},
        {"ps:prod:dl-prod", "purchases", 1},
        {"ps:prod:dl-prod", "trials", 1},
        {"ps:prod:dl-prod", "successes", 1},
        {"ps:campaign:dl-camp", "trials", 1},
        {"ps:campaign:dl-camp", "successes", 1},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        long long got = hget_ll(c, want[i].key, want[i].field, -1);
        if (got == -1 && want[i].want == 0)
            continue;
        if (got != want[i].want && bad++ < MAX_REPORT)
            print_error("  %s %s: redis %lld, want %lld\n", want[i].key,
                        want[i].field, got, want[i].want);
    }
    double p_purchase;
    if (!hget_dbl(c, "ps:global", "p_purchase", &p_purchase) ||
        fabs(p_purchase - 2.0 / 3.0) > 1e-9) {
        print_error("  ps:global p_purchase != 2/3\n");
        bad++;
    }
    int open = check_no_open_funnels(c);
    redisFree(c);
    servers_stop(&sv);
    if (bad || open)
        fail_msg("%d mismatches, %d open funnels", bad, open);
    print_message("    test_duplicates_and_late: %.1f s\n", ps_test_now_s() - t0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_funnel_recount, teardown_servers),
        cmocka_unit_test_teardown(test_triggers_once_across_restart,
                                  teardown_servers),
        cmocka_unit_test_teardown(test_duplicates_and_late, teardown_servers),
    };
    const char *filter = getenv("PS_TEST_FILTER");
    if (filter != NULL && *filter != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
