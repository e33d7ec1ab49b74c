/*
 * test_end_to_end.c -- propstream from Kafka to Redis, checked by a recount.
 *
 * Each test starts its own redis-server and `propstream broker` (the mock
 * Kafka cluster) on free loopback ports, feeds the topic, runs
 * `propstream run ... -e` as a separate process and then reads Redis back
 * with hiredis.  Nothing of propstream is linked in: the test produces its
 * own events (librdkafka producer, Avro via avro-c's generic API from
 * schemas/event.avsc, JSON via snprintf) and recounts what Redis must hold
 * from its own copy of the events, so a bug shared by the processor and its
 * own libraries cannot hide itself.
 *
 *   test_recount         ~20,000 good events (Confluent Avro, plain Avro and
 *                        JSON round-robin) plus one malformed record of every
 *                        kind in contract section 1: every customer hash,
 *                        ps:global, ps:metrics, ps:dlq (matched by partition
 *                        and offset from the delivery reports, with the
 *                        expected reason and the payload) and ps:offsets
 *                        (= each partition's high watermark).
 *   test_gen_roundtrip   `propstream gen` with 2 % bad records and a truth
 *                        file: metrics and per-reason DLQ counts equal gen's
 *                        summary, customer counters equal the truth recount.
 *   test_restart_resumes two halves, two processes, one group: no event is
 *                        lost or counted twice (offsets and state come back
 *                        from Redis).
 *   test_bad_config      unknown option, bad value, unreachable broker,
 *                        unreachable Redis: non-zero exit, a message naming
 *                        the problem.
 *
 * propstream is run with our own fork/exec helper (run_capture) rather
 * than ps_test_run, because we want its stderr too: in the failure message
 * of a test, and in test_bad_config.  `gen` goes through ps_test_run, whose
 * stdout is exactly the JSON summary.
 *
 * Every run passes -X kafka.session.timeout.ms=6000: librdkafka 2.0.2's mock
 * cluster makes a group's next member wait for the previous member's session
 * to expire (45 s by default) even after a clean rd_kafka_consumer_close(),
 * which would make test_restart_resumes take a minute.
 *
 * Generated data is a pure function of fixed seeds (splitmix64), so a
 * failure reproduces exactly.  Per-customer event times increase with the
 * produce order, and every customer's events share one Kafka key, hence one
 * partition: `last_ts` is both the latest and the last event time, and no
 * event is late.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
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
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <avro.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif
#ifndef PS_SOURCE_DIR
#error "PS_SOURCE_DIR must be defined"
#endif

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

#define REL_TOL 1e-9

static bool close_enough(double a, double b, double rel)
{
    if (a == b)
        return true;
    if (isnan(a) || isnan(b))
        return false;
    double scale = fmax(fabs(a), fabs(b));
    return fabs(a - b) <= rel * scale + 1e-12;
}

/* cmocka's assert_float_equal is float-only. */
#define assert_close(a, b, rel)                                               \
    do {                                                                      \
        double a_ = (a), b_ = (b);                                            \
        if (!close_enough(a_, b_, (rel)))                                     \
            fail_msg("%s = %.17g, %s = %.17g (rel tol %g)", #a, a_, #b, b_,   \
                     (double)(rel));                                          \
    } while (0)

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rnd01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) / 9007199254740992.0;
}

static int rnd_int(uint64_t *s, int n)
{
    return (int)(splitmix64(s) % (uint64_t)n);
}

/* A money amount: |N(mean, sd)| rounded to cents, at least 0.01. */
static double rnd_amount(uint64_t *s, double mean, double sd)
{
    double u1 = rnd01(s), u2 = rnd01(s);
    if (u1 < 1e-300)
        u1 = 1e-300;
    double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    double a = fabs(mean + sd * z);
    a = round(a * 100.0) / 100.0;
    return a < 0.01 ? 0.01 : a;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    assert_non_null(p);
    return p;
}

/* ------------------------------------------------------------------ */
/* Running propstream                                                  */
/* ------------------------------------------------------------------ */

/*
 * Run argv (argv[0] a path) with stdout and stderr both captured into out
 * (the first out_size - 1 bytes, NUL-terminated), killing it (SIGKILL, by
 * pid) after timeout_s.  Returns the exit status, 128 + signal, or -1 on
 * timeout or failure to start.  *elapsed gets the wall time in seconds.
 */
/* The last max bytes of s (propstream's output can be long). */
typedef struct servers {
    ps_test_redis redis;
    ps_test_broker broker;
    bool have_redis, have_broker;
    char redis_addr[64];
} servers;

static int servers_start(servers *sv, int brokers, const char *const *topics)
{
    memset(sv, 0, sizeof *sv);
    if (ps_test_redis_start(&sv->redis, NULL) != 0) {
        print_error("cannot start redis-server\n");
        return -1;
    }
    sv->have_redis = true;
    snprintf(sv->redis_addr, sizeof sv->redis_addr, "127.0.0.1:%d",
             sv->redis.port);
    if (ps_test_broker_start(&sv->broker, PS_BIN, brokers, topics) != 0) {
        print_error("cannot start `propstream broker`\n");
        ps_test_redis_stop(&sv->redis);
        sv->have_redis = false;
        return -1;
    }
    sv->have_broker = true;
    return 0;
}

static void servers_stop(servers *sv)
{
    if (sv->have_broker)
        ps_test_broker_stop(&sv->broker);
    if (sv->have_redis)
        ps_test_redis_stop(&sv->redis);
    sv->have_broker = sv->have_redis = false;
}

/* `propstream run -e` to completion; fails the test unless it exits 0. */
static void run_propstream(const servers *sv, const char *topic,
                           const char *group, int timeout_s)
{
    static char out[1 << 16];
    /* A short session timeout: the mock cluster of librdkafka 2.0.2 makes
     * the next member of a group wait for the previous member's session to
     * time out (45 s by default) even after a clean consumer close. */
    const char *argv[] = {PS_BIN, "run", "-b", sv->broker.bootstrap,
                          "-t", topic, "-g", group, "-r", sv->redis_addr,
                          "-e", "--flush-interval-ms", "50",
                          "-X", "kafka.session.timeout.ms=6000", NULL};
    double elapsed = 0;
    int rc = ps_test_run_capture(argv, timeout_s, out, sizeof out, &elapsed);
    print_message("    propstream run -t %s -g %s: exit %d after %.1f s\n",
                  topic, group, rc, elapsed);
    if (rc != 0) {
        print_error("propstream run output (tail):\n%s\n", ps_test_tail(out, 4000));
        fail_msg("propstream run exited %d (-1 = timeout after %d s)", rc,
                 timeout_s);
    }
}

/* ------------------------------------------------------------------ */
/* Events and their encodings                                          */
/* ------------------------------------------------------------------ */

enum { T_CLICK, T_WISHLIST, T_PURCHASE, T_SPEND, T_COUNT };
static const char *const type_upper[T_COUNT] = {"CLICK", "WISHLIST",
                                                "PURCHASE", "SPEND"};
static const char *const type_lower[T_COUNT] = {"click", "wishlist",
                                                "purchase", "spend"};
static const char *const type_mixed[T_COUNT] = {"Click", "WishList",
                                                "Purchase", "Spend"};

typedef enum encoding { ENC_CONFLUENT, ENC_AVRO, ENC_JSON } encoding;

/* One event as the test means it; strings borrowed (NULL = null/absent). */
typedef struct ev {
    char event_id[40];
    int cust; /* index into the world's customers, -1 for hand-made ones */
    const char *customer_id;
    int type; /* T_* */
    const char *product_id;
    bool has_amount;
    double amount;
    int64_t ts;
    int64_t signup_ts; /* 0 = null */
    const char *campaign;
} ev;

/* avro-c generic encoder for schemas/event.avsc, created once. */
typedef struct avro_enc {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t rec;
    avro_writer_t writer;
    char scratch[1];
} avro_enc;

static char *read_file_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf != NULL && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        if (len != NULL)
            *len = n;
    }
    return buf;
}

static void avro_enc_init(avro_enc *e)
{
    size_t len = 0;
    char *json = read_file_all(PS_SOURCE_DIR "/schemas/event.avsc", &len);
    assert_non_null(json);
    if (avro_schema_from_json_length(json, len, &e->schema) != 0)
        fail_msg("event.avsc: %s", avro_strerror());
    free(json);
    e->iface = avro_generic_class_from_schema(e->schema);
    assert_non_null(e->iface);
    assert_int_equal(avro_generic_value_new(e->iface, &e->rec), 0);
    e->writer = avro_writer_memory(e->scratch, sizeof e->scratch);
    assert_non_null(e->writer);
}

static void avro_enc_clear(avro_enc *e)
{
    avro_writer_free(e->writer);
    avro_value_decref(&e->rec);
    avro_value_iface_decref(e->iface);
    avro_schema_decref(e->schema);
}

static void avro_set_opt_string(avro_value_t *rec, const char *name,
                                const char *s)
{
    avro_value_t f, br;
    assert_int_equal(avro_value_get_by_name(rec, name, &f, NULL), 0);
    assert_int_equal(avro_value_set_branch(&f, s != NULL ? 1 : 0, &br), 0);
    if (s != NULL)
        assert_int_equal(avro_value_set_string(&br, s), 0);
    else
        assert_int_equal(avro_value_set_null(&br), 0);
}

/* Plain Avro binary of e into out; returns the length. */
static size_t avro_encode(avro_enc *enc, const ev *e, char *out,
                          size_t out_size)
{
    avro_value_t *rec = &enc->rec, f, br;

    assert_int_equal(avro_value_reset(rec), 0);
    assert_int_equal(avro_value_get_by_name(rec, "event_id", &f, NULL), 0);
    assert_int_equal(avro_value_set_string(&f, e->event_id), 0);
    assert_int_equal(avro_value_get_by_name(rec, "customer_id", &f, NULL), 0);
    assert_int_equal(avro_value_set_string(&f, e->customer_id), 0);
    assert_int_equal(avro_value_get_by_name(rec, "type", &f, NULL), 0);
    assert_int_equal(avro_value_set_enum(&f, e->type), 0);
    avro_set_opt_string(rec, "product_id", e->product_id);
    assert_int_equal(avro_value_get_by_name(rec, "amount", &f, NULL), 0);
    assert_int_equal(avro_value_set_branch(&f, e->has_amount ? 1 : 0, &br), 0);
    if (e->has_amount)
        assert_int_equal(avro_value_set_double(&br, e->amount), 0);
    else
        assert_int_equal(avro_value_set_null(&br), 0);
    assert_int_equal(avro_value_get_by_name(rec, "ts", &f, NULL), 0);
    assert_int_equal(avro_value_set_long(&f, e->ts), 0);
    assert_int_equal(avro_value_get_by_name(rec, "signup_ts", &f, NULL), 0);
    assert_int_equal(avro_value_set_branch(&f, e->signup_ts != 0 ? 1 : 0, &br),
                     0);
    if (e->signup_ts != 0)
        assert_int_equal(avro_value_set_long(&br, e->signup_ts), 0);
    else
        assert_int_equal(avro_value_set_null(&br), 0);
    avro_set_opt_string(rec, "campaign", e->campaign);

    avro_writer_memory_set_dest(enc->writer, out, (int64_t)out_size);
    if (avro_value_write(enc->writer, rec) != 0)
        fail_msg("avro_value_write: %s", avro_strerror());
    return (size_t)avro_writer_tell(enc->writer);
}

/* Confluent framing: 0x00, big-endian schema id, Avro binary. */
static size_t confluent_encode(avro_enc *enc, const ev *e, uint32_t schema_id,
                               char *out, size_t out_size)
{
    assert_true(out_size > 5);
    out[0] = 0;
    out[1] = (char)(schema_id >> 24);
    out[2] = (char)(schema_id >> 16);
    out[3] = (char)(schema_id >> 8);
    out[4] = (char)schema_id;
    return 5 + avro_encode(enc, e, out + 5, out_size - 5);
}

/*
 * JSON of e.  style (from the PRNG) varies what a producer may legally do:
 * the case of `type`, optional fields absent or explicitly null, leading
 * white space.
 */
static size_t json_encode(const ev *e, unsigned style, char *out,
                          size_t out_size)
{
    const char *type = (style & 3) == 0   ? type_upper[e->type]
                       : (style & 3) == 1 ? type_lower[e->type]
                                          : type_mixed[e->type];
    bool nulls = (style & 4) != 0; /* write null rather than leave out */
    char opt[512];
    size_t n = 0;

#define OPT(...) n += (size_t)snprintf(opt + n, sizeof opt - n, __VA_ARGS__)
    opt[0] = '\0';
    if (e->product_id != NULL)
        OPT(",\"product_id\":\"%s\"", e->product_id);
    else if (nulls)
        OPT(",\"product_id\":null");
    if (e->has_amount)
        OPT(",\"amount\":%.17g", e->amount);
    else if (nulls)
        OPT(",\"amount\":null");
    if (e->signup_ts != 0)
        OPT(",\"signup_ts\":%" PRId64, e->signup_ts);
    else if (nulls)
        OPT(",\"signup_ts\":null");
    if (e->campaign != NULL)
        OPT(",\"campaign\":\"%s\"", e->campaign);
    else if (nulls)
        OPT(",\"campaign\":null");
#undef OPT
    assert_true(n < sizeof opt);

    int len = snprintf(out, out_size,
                       "%s{\"event_id\":\"%s\",\"customer_id\":\"%s\","
                       "\"type\":\"%s\",\"ts\":%" PRId64 "%s}",
                       (style & 8) ? " \n" : "", e->event_id, e->customer_id,
                       type, e->ts, opt);
    assert_true(len > 0 && (size_t)len < out_size);
    return (size_t)len;
}

/* ------------------------------------------------------------------ */
/* Producing                                                           */
/* ------------------------------------------------------------------ */

/* Where one message landed, filled by the delivery report. */
typedef struct delivery {
    int32_t partition;
    int64_t offset;
    rd_kafka_resp_err_t err;
    bool done;
} delivery;

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
    delivery *d = m->_private;
    if (d != NULL) {
        d->partition = m->partition;
        d->offset = m->offset;
        d->err = m->err;
        d->done = true;
    }
}

static void producer_open(producer *p, const char *bootstrap)
{
    char errstr[512];
    memset(p, 0, sizeof *p);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "queue.buffering.max.messages", "200000",
                          errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        fail_msg("producer conf: %s", errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (p->rk == NULL)
        fail_msg("rd_kafka_new: %s", errstr);
}

static void produce(producer *p, const char *topic, const void *key,
                    size_t keylen, const void *val, size_t len, delivery *d)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
            RD_KAFKA_V_VALUE((void *)val, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(d),
            RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 50);
            continue;
        }
        if (err)
            fail_msg("produce: %s", rd_kafka_err2str(err));
        break;
    }
    p->produced++;
    rd_kafka_poll(p->rk, 0);
}

/* Wait for every delivery report; fails on any delivery error. */
static void producer_flush(producer *p)
{
    rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, 30000);
    if (err)
        fail_msg("flush: %s", rd_kafka_err2str(err));
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
/* A generated world: customers, products, good events                 */
/* ------------------------------------------------------------------ */

#define NPROD 50
#define BASE_TS INT64_C(1704067200000) /* 2024-01-01T00:00:00Z */

typedef struct world {
    int ncust;
    char **cust;           /* customer ids */
    char prod[NPROD][8];   /* product ids */
    char campaign[5][16];
    ev *evs;
    size_t nev;
} world;

/*
 * ncust customers, nev events.  The last two customers get exactly one
 * event each (one SPEND: std 0 with n = 1; one PURCHASE without amount:
 * spend_n = 0); customer ncust - 3 gets none (it only appears in bad
 * records).  Ids include colons, UTF-8, a 1-byte and a 256-byte one.
 */
static void world_make(world *w, uint64_t seed, int ncust, size_t nev)
{
    uint64_t s = seed;
    memset(w, 0, sizeof *w);
    w->ncust = ncust;
    w->cust = xcalloc((size_t)ncust, sizeof *w->cust);
    for (int i = 0; i < ncust; i++) {
        char buf[300];
        if (i == 0)
            snprintf(buf, sizeof buf, "customer:with:colons");
        else if (i == 1)
            snprintf(buf, sizeof buf, "Zo\xc3\xab-\xc3\xbc-1"); /* Zoë-ü-1 */
        else if (i == 2) {
            memset(buf, 'L', 256); /* exactly PS_ID_MAX: still valid */
            buf[256] = '\0';
        } else if (i == 3)
            snprintf(buf, sizeof buf, "a");
        else if (i == ncust - 3)
            snprintf(buf, sizeof buf, "ghost-only-bad-records");
        else
            snprintf(buf, sizeof buf, "c%04d", i);
        w->cust[i] = strdup(buf);
        assert_non_null(w->cust[i]);
    }
    for (int i = 0; i < NPROD; i++)
        snprintf(w->prod[i], sizeof w->prod[i], "p%02d", i);
    for (int i = 0; i < 5; i++)
        snprintf(w->campaign[i], sizeof w->campaign[i], "camp-%d", i);

    int64_t *signup = xcalloc((size_t)ncust, sizeof *signup);
    for (int i = 0; i < ncust; i++)
        signup[i] = BASE_TS - (int64_t)(1 + rnd_int(&s, 180)) * 86400000;

    w->nev = nev;
    w->evs = xcalloc(nev, sizeof *w->evs);
    int regular = ncust - 3; /* customers 0 .. ncust-4 */
    for (size_t i = 0; i < nev; i++) {
        ev *e = &w->evs[i];
        snprintf(e->event_id, sizeof e->event_id, "ev-%" PRIu64 "-%zu",
                 seed % 1000, i);
        if (i == nev / 3)
            e->cust = ncust - 2;
        else if (i == 2 * nev / 3)
            e->cust = ncust - 1;
        else /* skewed: low indices are busy, high ones rare */
            e->cust = (int)(pow(rnd01(&s), 1.6) * regular);
        e->customer_id = w->cust[e->cust];
        e->ts = BASE_TS + (int64_t)i * 20000 + rnd_int(&s, 20000);
        if (rnd01(&s) < 0.5)
            e->signup_ts = signup[e->cust];

        double r = rnd01(&s);
        e->type = r < 0.45   ? T_CLICK
                  : r < 0.65 ? T_WISHLIST
                  : r < 0.83 ? T_PURCHASE
                             : T_SPEND;
        if (e->cust == ncust - 2)
            e->type = T_SPEND;
        if (e->cust == ncust - 1)
            e->type = T_PURCHASE;

        switch (e->type) {
        case T_CLICK:
            e->product_id = w->prod[rnd_int(&s, NPROD)];
            if (rnd01(&s) < 0.3)
                e->campaign = w->campaign[rnd_int(&s, 5)];
            break;
        case T_WISHLIST:
            e->product_id = w->prod[rnd_int(&s, NPROD)];
            break;
        case T_PURCHASE:
            e->product_id = w->prod[rnd_int(&s, NPROD)];
            r = rnd01(&s);
            if (e->cust == ncust - 1)
                r = 1.0; /* no amount */
            if (r < 0.03) {
                e->has_amount = true; /* a free item: 0 is valid */
                e->amount = 0.0;
            } else if (r < 0.75) {
                e->has_amount = true;
                e->amount = rnd_amount(&s, 45000, 12000);
            }
            break;
        case T_SPEND:
            if (rnd01(&s) < 0.5)
                e->product_id = w->prod[rnd_int(&s, NPROD)];
            e->has_amount = true;
            e->amount = rnd_amount(&s, 800, 600);
            break;
        }
    }
    free(signup);
}

static void world_free(world *w)
{
    for (int i = 0; i < w->ncust; i++)
        free(w->cust[i]);
    free(w->cust);
    free(w->evs);
    memset(w, 0, sizeof *w);
}

/* Encode event i (encoding round-robin on i) into out. */
static size_t world_encode(avro_enc *enc, const ev *e, size_t i,
                           uint64_t *style_rng, char *out, size_t out_size)
{
    switch ((encoding)(i % 3)) {
    case ENC_CONFLUENT:
        return confluent_encode(enc, e, 1, out, out_size);
    case ENC_AVRO:
        return avro_encode(enc, e, out, out_size);
    default:
        return json_encode(e, (unsigned)splitmix64(style_rng), out, out_size);
    }
}

static void produce_events(producer *p, avro_enc *enc, const char *topic,
                           const ev *evs, size_t from, size_t to)
{
    uint64_t style = 77 + from;
    char buf[2048];
    for (size_t i = from; i < to; i++) {
        size_t len = world_encode(enc, &evs[i], i, &style, buf, sizeof buf);
        produce(p, topic, evs[i].customer_id, strlen(evs[i].customer_id), buf,
                len, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* The recount                                                         */
/* ------------------------------------------------------------------ */

typedef struct cust_count {
    long long events, clicks, wishlists, purchases, last_ts, spend_n;
    double spend_sum, spend_mean, spend_std;
} cust_count;

/* Counters of every customer from evs[0 .. n): mean and std two-pass. */
static cust_count *recount(const world *w, size_t n)
{
    cust_count *c = xcalloc((size_t)w->ncust, sizeof *c);
    for (size_t i = 0; i < n; i++) {
        const ev *e = &w->evs[i];
        cust_count *k = &c[e->cust];
        k->events++;
        k->clicks += e->type == T_CLICK;
        k->wishlists += e->type == T_WISHLIST;
        k->purchases += e->type == T_PURCHASE;
        if (e->ts > k->last_ts)
            k->last_ts = e->ts;
        if ((e->type == T_PURCHASE || e->type == T_SPEND) && e->has_amount) {
            k->spend_n++;
            k->spend_sum += e->amount;
        }
    }
    for (int i = 0; i < w->ncust; i++)
        if (c[i].spend_n > 0)
            c[i].spend_mean = c[i].spend_sum / (double)c[i].spend_n;
    double *m2 = xcalloc((size_t)w->ncust, sizeof *m2);
    for (size_t i = 0; i < n; i++) {
        const ev *e = &w->evs[i];
        if ((e->type == T_PURCHASE || e->type == T_SPEND) && e->has_amount) {
            double d = e->amount - c[e->cust].spend_mean;
            m2[e->cust] += d * d;
        }
    }
    for (int i = 0; i < w->ncust; i++)
        c[i].spend_std =
            c[i].spend_n < 2 ? 0.0 : sqrt(m2[i] / (double)(c[i].spend_n - 1));
    free(m2);
    return c;
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

/* HGET key field as a NUL-terminated copy, or NULL when absent. */
static char *hget(redisContext *c, const char *key, size_t keylen,
                  const char *field)
{
    redisReply *r = redisCommand(c, "HGET %b %s", key, keylen, field);
    if (r == NULL)
        fail_msg("HGET: %s", c->errstr);
    char *v = NULL;
    if (r->type == REDIS_REPLY_STRING)
        v = strndup(r->str, r->len);
    else if (r->type == REDIS_REPLY_INTEGER) {
        v = malloc(32);
        snprintf(v, 32, "%lld", r->integer);
    } else if (r->type != REDIS_REPLY_NIL)
        fail_msg("HGET %s %s: reply type %d", key, field, r->type);
    freeReplyObject(r);
    return v;
}

/* Integer field; -1 when absent (logged). */
static long long hget_ll(redisContext *c, const char *key, const char *field)
{
    char *v = hget(c, key, strlen(key), field);
    long long x = -1;
    if (v == NULL)
        print_error("%s %s: absent\n", key, field);
    else if (!ps_test_parse_ll(v, &x))
        fail_msg("%s %s = \"%s\": not an integer", key, field, v);
    free(v);
    return x;
}

static long long redis_int(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r == NULL)
        fail_msg("redis: %s", c->errstr);
    long long x = -1;
    if (r->type == REDIS_REPLY_INTEGER)
        x = r->integer;
    else
        fail_msg("redis %s: reply type %d", fmt, r->type);
    freeReplyObject(r);
    return x;
}

/*
 * Compare every customer's hash with the recount.  Integers exactly, reals
 * to REL_TOL.  Customers without events must have no hash.  Returns the
 * number of mismatching fields (the first few are printed).
 */
static int check_customers(redisContext *c, const world *w,
                           const cust_count *want)
{
    int bad = 0;
    char key[512];
    for (int i = 0; i < w->ncust; i++) {
        size_t kl = (size_t)snprintf(key, sizeof key, "ps:cust:%s", w->cust[i]);
        const cust_count *k = &want[i];
        if (k->events == 0) {
            long long ex = redis_int(c, "EXISTS %b", key, kl);
            if (ex != 0) {
                if (bad++ < 20)
                    print_error("%s exists but the customer has no good "
                                "event\n", key);
            }
            continue;
        }
        struct {
            const char *field;
            long long iv;
            double dv;
            bool real;
        } f[] = {
            {"events", k->events, 0, false},
            {"clicks", k->clicks, 0, false},
            {"wishlists", k->wishlists, 0, false},
            {"purchases", k->purchases, 0, false},
            {"last_ts", k->last_ts, 0, false},
            {"spend_n", k->spend_n, 0, false},
            {"spend_sum", 0, k->spend_sum, true},
            {"spend_mean", 0, k->spend_mean, true},
            {"spend_std", 0, k->spend_std, true},
        };
        for (size_t j = 0; j < sizeof f / sizeof f[0]; j++) {
            char *v = hget(c, key, kl, f[j].field);
            bool ok;
            long long iv;
            double dv;
            if (v == NULL) /* mean/std of no amounts: absent is fine */
                ok = k->spend_n == 0 && f[j].real;
            else if (f[j].real)
                ok = ps_test_parse_dbl(v, &dv) && close_enough(dv, f[j].dv, REL_TOL);
            else
                ok = ps_test_parse_ll(v, &iv) && iv == f[j].iv;
            if (!ok && bad++ < 20) {
                if (f[j].real)
                    print_error("%.40s %s: redis %s, recount %.17g\n", key,
                                f[j].field, v ? v : "(absent)", f[j].dv);
                else
                    print_error("%.40s %s: redis %s, recount %lld\n", key,
                                f[j].field, v ? v : "(absent)", f[j].iv);
            }
            free(v);
        }
    }
    return bad;
}

/* ps:offsets:{group} "{topic}:{p}" == high watermark of every partition. */
static int check_offsets(redisContext *c, rd_kafka_t *rk, const char *topic,
                         int partitions, const char *group)
{
    int bad = 0;
    char key[256], field[256];
    snprintf(key, sizeof key, "ps:offsets:%s", group);
    for (int p = 0; p < partitions; p++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (err)
            fail_msg("watermarks %s [%d]: %s", topic, p, rd_kafka_err2str(err));
        snprintf(field, sizeof field, "%s:%d", topic, p);
        char *v = hget(c, key, strlen(key), field);
        long long off = -1;
        if (v == NULL || !ps_test_parse_ll(v, &off) || off != hi) {
            print_error("%s %s = %s, high watermark %" PRId64 "\n", key, field,
                        v ? v : "(absent)", hi);
            bad++;
        }
        free(v);
    }
    return bad;
}

/* One ps:dlq entry. */
typedef struct dlq_entry {
    char reason[64];
    char topic[128];
    long long partition, offset;
    char *payload;
    size_t payload_len;
    bool matched;
} dlq_entry;

typedef struct dlq {
    dlq_entry *v;
    size_t n;
} dlq;

static void dlq_read(redisContext *c, dlq *d)
{
    memset(d, 0, sizeof *d);
    redisReply *r = redisCommand(c, "XRANGE ps:dlq - +");
    if (r == NULL)
        fail_msg("XRANGE: %s", c->errstr);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    d->n = r->elements;
    d->v = xcalloc(d->n, sizeof *d->v);
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *entry = r->element[i];
        assert_int_equal(entry->type, REDIS_REPLY_ARRAY);
        assert_int_equal(entry->elements, 2);
        redisReply *kv = entry->element[1];
        dlq_entry *de = &d->v[i];
        de->partition = de->offset = -1;
        for (size_t j = 0; j + 1 < kv->elements; j += 2) {
            const char *f = kv->element[j]->str;
            redisReply *v = kv->element[j + 1];
            if (strcmp(f, "reason") == 0)
                snprintf(de->reason, sizeof de->reason, "%.*s", (int)v->len,
                         v->str);
            else if (strcmp(f, "topic") == 0)
                snprintf(de->topic, sizeof de->topic, "%.*s", (int)v->len,
                         v->str);
            else if (strcmp(f, "partition") == 0) {
                char tmp[32];
                snprintf(tmp, sizeof tmp, "%.*s", (int)v->len, v->str);
                if (!ps_test_parse_ll(tmp, &de->partition))
                    de->partition = -2;
            } else if (strcmp(f, "offset") == 0) {
                char tmp[32];
                snprintf(tmp, sizeof tmp, "%.*s", (int)v->len, v->str);
                if (!ps_test_parse_ll(tmp, &de->offset))
                    de->offset = -2;
            } else if (strcmp(f, "payload") == 0) {
                de->payload = malloc(v->len + 1);
                memcpy(de->payload, v->str, v->len);
                de->payload[v->len] = '\0';
                de->payload_len = v->len;
            }
        }
    }
    freeReplyObject(r);
}

static void dlq_free(dlq *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].payload);
    free(d->v);
    memset(d, 0, sizeof *d);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/* Whether the DLQ payload text is orig (or its first 1 KiB / 512 bytes),
 * as hex or as base64 (the contract allows both). */
static bool payload_matches(const char *txt, size_t tlen, const char *orig,
                            size_t olen)
{
    unsigned char *dec = malloc(tlen + 1);
    size_t n = 0;
    bool ok = false;

    /* hex */
    if (tlen % 2 == 0) {
        bool hex = true;
        for (size_t i = 0; i < tlen && hex; i += 2) {
            int hi = hexval((unsigned char)txt[i]);
            int lo = hexval((unsigned char)txt[i + 1]);
            if (hi < 0 || lo < 0)
                hex = false;
            else
                dec[n++] = (unsigned char)(hi * 16 + lo);
        }
        if (hex && n <= olen && memcmp(dec, orig, n) == 0 &&
            (n == olen || n >= 512))
            ok = true;
    }
    /* base64 */
    if (!ok) {
        uint32_t acc = 0;
        int bits = 0;
        bool b64 = true;
        n = 0;
        for (size_t i = 0; i < tlen && b64; i++) {
            if (txt[i] == '=')
                break;
            int v = b64val((unsigned char)txt[i]);
            if (v < 0) {
                b64 = false;
                break;
            }
            acc = (acc << 6) | (uint32_t)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                dec[n++] = (unsigned char)(acc >> bits);
            }
        }
        if (b64 && n <= olen && memcmp(dec, orig, n) == 0 &&
            (n == olen || n >= 512))
            ok = true;
    }
    free(dec);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Malformed records                                                   */
/* ------------------------------------------------------------------ */

typedef struct bad_rec {
    const char *what;
    const char *reason; /* expected ps:dlq reason */
    char *payload;
    size_t len;
    delivery dr;
} bad_rec;

typedef struct bad_list {
    bad_rec v[64];
    size_t n;
} bad_list;

static void bad_add(bad_list *b, const char *what, const char *reason,
                    const void *payload, size_t len)
{
    assert_true(b->n < sizeof b->v / sizeof b->v[0]);
    bad_rec *r = &b->v[b->n++];
    r->what = what;
    r->reason = reason;
    r->payload = malloc(len + 1);
    memcpy(r->payload, payload, len);
    r->payload[len] = '\0';
    r->len = len;
}

static void bad_free(bad_list *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->v[i].payload);
    b->n = 0;
}

/* A valid event to start a malformed one from. */
static ev bad_base(const char *customer_id, int type)
{
    ev e;
    memset(&e, 0, sizeof e);
    static int seq;
    snprintf(e.event_id, sizeof e.event_id, "bad-%d", ++seq);
    e.cust = -1;
    e.customer_id = customer_id;
    e.type = type;
    e.product_id = type == T_SPEND ? NULL : "p07";
    e.has_amount = type == T_SPEND || type == T_PURCHASE;
    e.amount = 123.45;
    e.ts = BASE_TS + 1000;
    return e;
}

#define JSON_ADD(b, what, reason, ...)                                        \
    do {                                                                      \
        char j_[1024];                                                        \
        int jn_ = snprintf(j_, sizeof j_, __VA_ARGS__);                       \
        assert_true(jn_ > 0 && (size_t)jn_ < sizeof j_);                      \
        bad_add((b), (what), (reason), j_, (size_t)jn_);                      \
    } while (0)

/*
 * One record of every kind of bad input in contract section 1, each with
 * the reason ps:dlq must give.  Real customer ids are used where the id is
 * not the fault, so a bad record counted by mistake shows in the recount.
 */
static void make_bad_records(bad_list *b, avro_enc *enc, const world *w)
{
    char buf[2048];
    size_t n;
    ev e;
    const char *c5 = w->cust[5], *ghost = w->cust[w->ncust - 3];
    char long_id[301];

    /* undecodable */
    memset(buf, 0xff, 16);
    bad_add(b, "garbage 0xff bytes", "undecodable", buf, 16);
    bad_add(b, "garbage binary", "undecodable", "\x01\x02garbage\xfe", 11);
    bad_add(b, "empty payload", "undecodable", "", 0);
    e = bad_base(c5, T_CLICK);
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "truncated plain Avro", "undecodable", buf, n / 2);
    n = confluent_encode(enc, &e, 1, buf, sizeof buf);
    bad_add(b, "truncated Confluent Avro (last byte cut)", "undecodable", buf,
            n - 1);
    bad_add(b, "Confluent header only", "undecodable", buf, 5);
    bad_add(b, "Confluent frame of 3 bytes", "undecodable", buf, 3);
    JSON_ADD(b, "invalid JSON", "undecodable",
             "{\"event_id\":\"bj1\",\"customer_id\":\"%s\",\"type\":", c5);

    /* unknown_schema_id */
    e = bad_base(c5, T_CLICK);
    n = confluent_encode(enc, &e, 999, buf, sizeof buf);
    bad_add(b, "Confluent schema id 999", "unknown_schema_id", buf, n);

    /* missing_field */
    JSON_ADD(b, "JSON without customer_id", "missing_field",
             "{\"event_id\":\"bj2\",\"type\":\"CLICK\",\"product_id\":\"p01\","
             "\"ts\":%" PRId64 "}",
             BASE_TS + 5);
    JSON_ADD(b, "JSON without ts", "missing_field",
             "{\"event_id\":\"bj3\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\"}",
             c5);
    JSON_ADD(b, "JSON without event_id", "missing_field",
             "{\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    JSON_ADD(b, "JSON type null", "missing_field",
             "{\"event_id\":\"bj4\",\"customer_id\":\"%s\",\"type\":null,"
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    JSON_ADD(b, "JSON CLICK without product_id", "missing_field",
             "{\"event_id\":\"bj5\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    JSON_ADD(b, "JSON WISHLIST with product_id null", "missing_field",
             "{\"event_id\":\"bj6\",\"customer_id\":\"%s\","
             "\"type\":\"WISHLIST\",\"product_id\":null,\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    e = bad_base(c5, T_CLICK);
    e.product_id = NULL;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro CLICK without product_id", "missing_field", buf, n);
    e = bad_base(c5, T_PURCHASE);
    e.product_id = NULL;
    n = confluent_encode(enc, &e, 1, buf, sizeof buf);
    bad_add(b, "Confluent PURCHASE without product_id", "missing_field", buf,
            n);
    e = bad_base(ghost, T_SPEND);
    e.has_amount = false;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro SPEND without amount", "missing_field", buf, n);
    JSON_ADD(b, "JSON SPEND without amount", "missing_field",
             "{\"event_id\":\"bj7\",\"customer_id\":\"%s\",\"type\":\"spend\","
             "\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);

    /* wrong_type */
    JSON_ADD(b, "JSON ts as a string", "wrong_type",
             "{\"event_id\":\"bj8\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":\"%" PRId64 "\"}",
             c5, BASE_TS + 5);
    JSON_ADD(b, "JSON type BROWSE", "wrong_type",
             "{\"event_id\":\"bj9\",\"customer_id\":\"%s\",\"type\":\"BROWSE\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    JSON_ADD(b, "JSON amount as a string", "wrong_type",
             "{\"event_id\":\"bj10\",\"customer_id\":\"%s\","
             "\"type\":\"SPEND\",\"amount\":\"12.5\",\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    JSON_ADD(b, "JSON customer_id a number", "wrong_type",
             "{\"event_id\":\"bj11\",\"customer_id\":42,\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             BASE_TS + 5);

    /* bad_amount */
    e = bad_base(c5, T_SPEND);
    e.amount = -10.0;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro SPEND negative amount", "bad_amount", buf, n);
    JSON_ADD(b, "JSON PURCHASE negative amount", "bad_amount",
             "{\"event_id\":\"bj12\",\"customer_id\":\"%s\","
             "\"type\":\"PURCHASE\",\"product_id\":\"p01\",\"amount\":-3.5,"
             "\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    e = bad_base(c5, T_PURCHASE);
    e.amount = NAN;
    n = confluent_encode(enc, &e, 1, buf, sizeof buf);
    bad_add(b, "Confluent PURCHASE NaN amount", "bad_amount", buf, n);
    e = bad_base(c5, T_SPEND);
    e.amount = INFINITY;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro SPEND +inf amount", "bad_amount", buf, n);
    e = bad_base(c5, T_SPEND);
    e.amount = 0.0;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro SPEND amount 0", "bad_amount", buf, n);
    JSON_ADD(b, "JSON SPEND amount 0", "bad_amount",
             "{\"event_id\":\"bj13\",\"customer_id\":\"%s\","
             "\"type\":\"SPEND\",\"amount\":0,\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);

    /* bad_id */
    e = bad_base("", T_CLICK);
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro empty customer_id", "bad_id", buf, n);
    JSON_ADD(b, "JSON empty customer_id", "bad_id",
             "{\"event_id\":\"bj14\",\"customer_id\":\"\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             BASE_TS + 5);
    memset(long_id, 'X', 300);
    long_id[300] = '\0';
    e = bad_base(long_id, T_CLICK);
    n = confluent_encode(enc, &e, 1, buf, sizeof buf);
    bad_add(b, "Confluent 300-byte customer_id", "bad_id", buf, n);
    long_id[257] = '\0'; /* one past PS_ID_MAX */
    JSON_ADD(b, "JSON 257-byte customer_id", "bad_id",
             "{\"event_id\":\"bj15\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             long_id, BASE_TS + 5);
    JSON_ADD(b, "JSON empty event_id", "bad_id",
             "{\"event_id\":\"\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 "}",
             c5, BASE_TS + 5);
    memset(long_id, 'P', 300);
    long_id[300] = '\0';
    e = bad_base(c5, T_WISHLIST);
    e.product_id = long_id;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro 300-byte product_id", "bad_id", buf, n);

    /* bad_ts */
    e = bad_base(c5, T_CLICK);
    e.ts = 0;
    n = avro_encode(enc, &e, buf, sizeof buf);
    bad_add(b, "Avro ts 0", "bad_ts", buf, n);
    e = bad_base(c5, T_CLICK);
    e.ts = -5;
    n = confluent_encode(enc, &e, 1, buf, sizeof buf);
    bad_add(b, "Confluent ts -5", "bad_ts", buf, n);
    JSON_ADD(b, "JSON ts -5", "bad_ts",
             "{\"event_id\":\"bj16\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":-5}",
             c5);
    JSON_ADD(b, "JSON signup_ts 0", "bad_ts",
             "{\"event_id\":\"bj17\",\"customer_id\":\"%s\",\"type\":\"CLICK\","
             "\"product_id\":\"p01\",\"ts\":%" PRId64 ",\"signup_ts\":0}",
             c5, BASE_TS + 5);
    /* Avro's union branch 1 with 0: present but not > 0. */
    e = bad_base(c5, T_CLICK);
    e.signup_ts = 0;
    n = avro_encode(enc, &e, buf, sizeof buf);
    {
        /* avro_encode writes null for signup_ts == 0: patch it by hand. The
         * tail is: ts (long), signup_ts union index 0, campaign union 0. */
        assert_true(n >= 2);
        assert_int_equal(buf[n - 2], 0); /* signup_ts: null branch */
        buf[n - 2] = 2;                  /* branch 1 (zigzag 1) */
        buf[n - 1] = 0;                  /* long 0 */
        buf[n] = 0;                      /* campaign: null branch */
        n += 1;
    }
    bad_add(b, "Avro signup_ts 0", "bad_ts", buf, n);
}

/* ------------------------------------------------------------------ */
/* Fixtures                                                            */
/* ------------------------------------------------------------------ */

/* Per test: the servers, and the test's clients, so that teardown frees
 * them even when an assertion ends the test early. */
typedef struct fixture {
    servers sv;
    producer p;
    redisContext *rc;
    double t0;
} fixture;

static int fixture_setup(void **state, int brokers, const char *const *topics)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    f->t0 = ps_test_now_s();
    if (servers_start(&f->sv, brokers, topics) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture *f = *state;
    if (f != NULL) {
        if (f->rc != NULL)
            redisFree(f->rc);
        producer_close(&f->p);
        servers_stop(&f->sv);
        print_message("    (%.1f s)\n", ps_test_now_s() - f->t0);
        free(f);
    }
    *state = NULL;
    return 0;
}

static int setup_recount(void **state)
{
    static const char *const topics[] = {"events:4", NULL};
    return fixture_setup(state, 3, topics);
}

static int setup_gen(void **state)
{
    static const char *const topics[] = {"gen:4", NULL};
    return fixture_setup(state, 1, topics);
}

static int setup_restart(void **state)
{
    static const char *const topics[] = {"restart:3", NULL};
    return fixture_setup(state, 1, topics);
}

static int setup_bad_config(void **state)
{
    static const char *const topics[] = {"events:1", NULL};
    return fixture_setup(state, 1, topics);
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

#define RECOUNT_EVENTS 20000
#define RECOUNT_CUSTOMERS 300

static void check_metric(redisContext *c, const char *field, long long want)
{
    long long got = hget_ll(c, "ps:metrics", field);
    if (got != want)
        fail_msg("ps:metrics %s = %lld, want %lld", field, got, want);
}

static void test_recount(void **state)
{
    fixture *f = *state;
    const char *topic = "events", *group = "e2e-recount";
    world w;
    avro_enc enc;
    bad_list *bad = xcalloc(1, sizeof *bad);

    world_make(&w, 20240101, RECOUNT_CUSTOMERS, RECOUNT_EVENTS);
    avro_enc_init(&enc);
    make_bad_records(bad, &enc, &w);

    /* Produce, with the bad records spread evenly among the good ones. */
    producer_open(&f->p, f->sv.broker.bootstrap);
    producer *p = &f->p;
    uint64_t style = 99;
    char buf[2048];
    size_t next_bad = 0;
    for (size_t i = 0; i < w.nev; i++) {
        while (next_bad < bad->n &&
               i >= (next_bad + 1) * w.nev / (bad->n + 1)) {
            bad_rec *r = &bad->v[next_bad];
            const char *key = w.cust[(int)(next_bad * 7) % (w.ncust - 3)];
            produce(p, topic, key, strlen(key), r->payload, r->len, &r->dr);
            next_bad++;
        }
        size_t len = world_encode(&enc, &w.evs[i], i, &style, buf, sizeof buf);
        produce(p, topic, w.evs[i].customer_id, strlen(w.evs[i].customer_id),
                buf, len, NULL);
    }
    assert_int_equal(next_bad, bad->n);
    producer_flush(p);
    for (size_t i = 0; i < bad->n; i++)
        assert_true(bad->v[i].dr.done && bad->v[i].dr.err == 0);
    long long total = p->produced, nbad = (long long)bad->n;
    print_message("    produced %lld records (%lld bad) in %.1f s\n", total,
                  nbad, ps_test_now_s() - f->t0);

    run_propstream(&f->sv, topic, group, 90);

    redisContext *c = f->rc = redis_open(&f->sv);
    cust_count *want = recount(&w, w.nev);

    int mismatches = check_customers(c, &w, want);
    if (mismatches)
        fail_msg("%d customer field(s) differ from the recount", mismatches);

    assert_int_equal(hget_ll(c, "ps:global", "events"), (long long)w.nev);
    check_metric(c, "events_in", total);
    check_metric(c, "events_bad", nbad);
    check_metric(c, "events_applied", (long long)w.nev);
    check_metric(c, "events_dup", 0);
    check_metric(c, "lag", 0);
    assert_true(hget_ll(c, "ps:metrics", "flushes") >= 1);

    /* Every bad record is in ps:dlq, found by partition and offset. */
    dlq d;
    dlq_read(c, &d);
    int dlq_bad = 0;
    for (size_t i = 0; i < bad->n; i++) {
        bad_rec *r = &bad->v[i];
        dlq_entry *hit = NULL;
        for (size_t j = 0; j < d.n && hit == NULL; j++)
            if (d.v[j].partition == r->dr.partition &&
                d.v[j].offset == r->dr.offset &&
                strcmp(d.v[j].topic, topic) == 0)
                hit = &d.v[j];
        if (hit == NULL) {
            print_error("DLQ: \"%s\" (partition %d offset %" PRId64
                        ") not found\n",
                        r->what, (int)r->dr.partition, r->dr.offset);
            dlq_bad++;
            continue;
        }
        hit->matched = true;
        if (strcmp(hit->reason, r->reason) != 0) {
            print_error("DLQ: \"%s\": reason %s, expected %s\n", r->what,
                        hit->reason, r->reason);
            dlq_bad++;
        }
        if (hit->payload == NULL ||
            !payload_matches(hit->payload, hit->payload_len, r->payload,
                             r->len)) {
            print_error("DLQ: \"%s\": payload \"%.80s\" is neither hex nor "
                        "base64 of the record\n",
                        r->what, hit->payload ? hit->payload : "(absent)");
            dlq_bad++;
        }
    }
    for (size_t j = 0; j < d.n; j++)
        if (!d.v[j].matched) {
            print_error("DLQ: unexpected entry reason %s partition %lld "
                        "offset %lld\n",
                        d.v[j].reason, d.v[j].partition, d.v[j].offset);
            dlq_bad++;
        }
    assert_int_equal(redis_int(c, "XLEN ps:dlq"), nbad);
    dlq_free(&d);
    if (dlq_bad)
        fail_msg("%d ps:dlq problem(s)", dlq_bad);

    assert_int_equal(check_offsets(c, p->rk, topic, 4, group), 0);

    free(want);
    bad_free(bad);
    free(bad);
    avro_enc_clear(&enc);
    world_free(&w);
}

/* Per-customer truth from gen's --truth file. */
typedef struct truth_cust {
    char *id;
    long long events, purchases;
    double spend_sum;
} truth_cust;

static int truth_cmp(const void *a, const void *b)
{
    return strcmp(((const truth_cust *)a)->id, ((const truth_cust *)b)->id);
}

static void test_gen_roundtrip(void **state)
{
    fixture *f = *state;
    const char *topic = "gen", *group = "e2e-gen";
    char truth_path[256], out[1 << 16];

    snprintf(truth_path, sizeof truth_path, "/tmp/ps-e2e-truth-%d.jsonl",
             (int)getpid());
    const char *gen_argv[] = {PS_BIN, "gen", "-b", f->sv.broker.bootstrap,
                              "-t", topic, "-n", "500", "--seed", "7",
                              "--format", "confluent", "--bad", "0.02",
                              "--truth", truth_path, NULL};
    int rc = ps_test_run(gen_argv, 60, out, sizeof out);
    if (rc != 0)
        fail_msg("propstream gen exited %d; stdout: %.2000s", rc, out);

    json_error_t jerr;
    json_t *sum = json_loads(out, JSON_DISABLE_EOF_CHECK, &jerr);
    if (sum == NULL)
        fail_msg("gen summary is not JSON (%s): %.500s", jerr.text, out);
    long long records = json_integer_value(json_object_get(sum, "records"));
    long long good = json_integer_value(json_object_get(sum, "good"));
    long long nbad = json_integer_value(json_object_get(sum, "bad"));
    json_t *by_reason = json_object_get(sum, "bad_by_reason");
    assert_true(records > 0);
    assert_true(nbad > 0);
    assert_int_equal(records, good + nbad);
    assert_true(json_is_object(by_reason));
    print_message("    gen: %lld records, %lld good, %lld bad\n", records,
                  good, nbad);

    run_propstream(&f->sv, topic, group, 60);

    redisContext *c = f->rc = redis_open(&f->sv);
    check_metric(c, "events_in", records);
    check_metric(c, "events_bad", nbad);
    assert_int_equal(redis_int(c, "XLEN ps:dlq"), nbad);

    /* Per-reason counts of ps:dlq equal gen's bad_by_reason. */
    dlq d;
    dlq_read(c, &d);
    int problems = 0;
    const char *reason;
    json_t *jv;
    long long sum_reasons = 0;
    json_object_foreach(by_reason, reason, jv)
    {
        long long want = json_integer_value(jv), got = 0;
        sum_reasons += want;
        for (size_t j = 0; j < d.n; j++)
            got += strcmp(d.v[j].reason, reason) == 0;
        if (got != want) {
            print_error("ps:dlq reason %s: %lld entries, gen says %lld\n",
                        reason, got, want);
            problems++;
        }
    }
    assert_int_equal(sum_reasons, nbad);
    dlq_free(&d);

    /* Recount from the truth file: one JSON event per good record. */
    FILE *tf = fopen(truth_path, "r");
    assert_non_null(tf);
    size_t ncap = 1024, nc = 0;
    truth_cust *tc = xcalloc(ncap, sizeof *tc);
    char *line = NULL;
    size_t lcap = 0;
    long long lines = 0;
    while (getline(&line, &lcap, tf) > 0) {
        json_t *o = json_loads(line, 0, &jerr);
        if (o == NULL)
            fail_msg("truth line %lld: %s", lines + 1, jerr.text);
        lines++;
        const char *cid = json_string_value(json_object_get(o, "customer_id"));
        const char *type = json_string_value(json_object_get(o, "type"));
        json_t *amount = json_object_get(o, "amount");
        assert_non_null(cid);
        assert_non_null(type);
        truth_cust key = {.id = (char *)cid}, *k = NULL;
        if (nc > 0)
            k = bsearch(&key, tc, nc, sizeof *tc, truth_cmp);
        if (k == NULL) {
            if (nc == ncap) {
                ncap *= 2;
                tc = realloc(tc, ncap * sizeof *tc);
                assert_non_null(tc);
            }
            tc[nc].id = strdup(cid);
            tc[nc].events = tc[nc].purchases = 0;
            tc[nc].spend_sum = 0;
            nc++;
            qsort(tc, nc, sizeof *tc, truth_cmp);
            k = bsearch(&key, tc, nc, sizeof *tc, truth_cmp);
        }
        k->events++;
        bool purchase = strcasecmp(type, "PURCHASE") == 0;
        bool spend = strcasecmp(type, "SPEND") == 0;
        k->purchases += purchase;
        if ((purchase || spend) && json_is_number(amount))
            k->spend_sum += json_number_value(amount);
        json_decref(o);
    }
    free(line);
    fclose(tf);
    unlink(truth_path);
    assert_int_equal(lines, good);

    /* Duplicates, if gen makes any, are good records not applied. */
    long long dups = hget_ll(c, "ps:metrics", "events_dup");
    check_metric(c, "events_applied", good - dups);
    if (dups == 0) {
        char k[512];
        long long total_events = 0;
        for (size_t i = 0; i < nc; i++) {
            snprintf(k, sizeof k, "ps:cust:%s", tc[i].id);
            long long ev_ = hget_ll(c, k, "events");
            long long pu = hget_ll(c, k, "purchases");
            char *ss = hget(c, k, strlen(k), "spend_sum");
            double sd = 0;
            bool ok = ev_ == tc[i].events && pu == tc[i].purchases &&
                      (ss != NULL ? ps_test_parse_dbl(ss, &sd) : true) &&
                      close_enough(sd, tc[i].spend_sum, REL_TOL);
            if (!ok && problems++ < 20)
                print_error("%s: redis events %lld purchases %lld spend_sum "
                            "%s; truth %lld %lld %.17g\n",
                            k, ev_, pu, ss ? ss : "(absent)", tc[i].events,
                            tc[i].purchases, tc[i].spend_sum);
            free(ss);
            total_events += tc[i].events;
        }
        assert_int_equal(hget_ll(c, "ps:global", "events"), total_events);
    } else {
        print_message("    gen produced %lld duplicates: per-customer "
                      "recount from the truth file skipped\n",
                      dups);
    }
    for (size_t i = 0; i < nc; i++)
        free(tc[i].id);
    free(tc);
    json_decref(sum);
    if (problems)
        fail_msg("%d difference(s) between gen's truth and Redis", problems);
}

static void test_restart_resumes(void **state)
{
    fixture *f = *state;
    const char *topic = "restart", *group = "e2e-restart";
    world w;
    avro_enc enc;

    world_make(&w, 4242, 80, 4000);
    avro_enc_init(&enc);
    producer_open(&f->p, f->sv.broker.bootstrap);
    producer *p = &f->p;

    size_t half = w.nev / 2;
    produce_events(p, &enc, topic, w.evs, 0, half);
    producer_flush(p);
    run_propstream(&f->sv, topic, group, 60);

    redisContext *c = f->rc = redis_open(&f->sv);
    cust_count *want = recount(&w, half);
    int mismatches = check_customers(c, &w, want);
    free(want);
    if (mismatches)
        fail_msg("after the first half: %d field(s) differ", mismatches);
    assert_int_equal(hget_ll(c, "ps:global", "events"), (long long)half);

    produce_events(p, &enc, topic, w.evs, half, w.nev);
    producer_flush(p);
    run_propstream(&f->sv, topic, group, 60);

    want = recount(&w, w.nev);
    mismatches = check_customers(c, &w, want);
    free(want);
    if (mismatches)
        fail_msg("after the restart: %d field(s) differ", mismatches);
    assert_int_equal(hget_ll(c, "ps:global", "events"), (long long)w.nev);
    assert_int_equal(check_offsets(c, p->rk, topic, 3, group), 0);

    avro_enc_clear(&enc);
    world_free(&w);
}

/* Case-insensitive substring. */
static bool mentions(const char *hay, const char *needle)
{
    return strcasestr(hay, needle) != NULL;
}

/* out without librdkafka's own log lines ("%3|...|FAIL|..."), which name
 * the broker address whatever propstream itself says. */
static void strip_rdkafka_log(const char *out, char *own, size_t own_size)
{
    size_t on = 0;
    for (const char *line = out; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (line[0] != '%' && on + len < own_size) {
            memcpy(own + on, line, len);
            on += len;
        }
        line += len;
    }
    own[on] = '\0';
}

/* Run argv, expecting a clean non-zero exit within timeout_s and
 * propstream's own output naming at least one of any_of. */
static void expect_failure(const char *what, const char *const *argv,
                           int timeout_s, const char *const *any_of)
{
    static char out[1 << 15], own[1 << 15];
    double elapsed = 0;
    int rc = ps_test_run_capture(argv, timeout_s, out, sizeof out, &elapsed);
    strip_rdkafka_log(out, own, sizeof own);
    print_message("    %s: exit %d after %.1f s: %s", what, rc, elapsed,
                  ps_test_tail(own, 300));
    if (rc == -1)
        fail_msg("%s: no exit within %d s", what, timeout_s);
    if (rc == 0)
        fail_msg("%s: exit status 0", what);
    if (rc >= 128)
        fail_msg("%s: killed by signal %d", what, rc - 128);
    for (const char *const *n = any_of; *n != NULL; n++)
        if (mentions(own, *n))
            return;
    fail_msg("%s: output names none of the expected words (first: \"%s\"):\n"
             "%s",
             what, any_of[0], ps_test_tail(out, 2000));
}

static void test_bad_config(void **state)
{
    fixture *f = *state;
    const char *boot = f->sv.broker.bootstrap, *raddr = f->sv.redis_addr;

    {
        const char *argv[] = {PS_BIN, "run", "-b", boot, "-t", "events",
                              "-g", "bc", "-r", raddr, "-e",
                              "--no-such-option", "1", NULL};
        const char *words[] = {"no-such-option", NULL};
        expect_failure("unknown option", argv, 15, words);
    }
    {
        const char *argv[] = {PS_BIN, "run", "-b", boot, "-t", "events",
                              "-g", "bc", "-r", raddr, "-e",
                              "--flush-interval-ms", "-5", NULL};
        const char *words[] = {"flush-interval-ms", NULL};
        expect_failure("--flush-interval-ms -5", argv, 15, words);
    }
    {
        const char *argv[] = {PS_BIN, "run", "-b", boot, "-t", "events",
                              "-g", "bc", "-r", raddr, "-e",
                              "--flush-interval-ms", "soon", NULL};
        const char *words[] = {"flush-interval-ms", NULL};
        expect_failure("--flush-interval-ms soon", argv, 15, words);
    }
    {
        const char *argv[] = {PS_BIN, "run", "-t", "events", "-g", "bc",
                              "-r", raddr, "-e", "-b", "127.0.0.1:1", NULL};
        const char *words[] = {"127.0.0.1:1", "broker", NULL};
        double t0 = ps_test_now_s();
        expect_failure("unreachable broker", argv, 20, words);
        double dt = ps_test_now_s() - t0;
        if (dt > 16.0)
            fail_msg("unreachable broker: took %.1f s (want ~15 s at most)",
                     dt);
    }
    {
        char dead[64];
        int port = ps_test_free_port();
        assert_true(port > 0);
        snprintf(dead, sizeof dead, "127.0.0.1:%d", port);
        const char *argv[] = {PS_BIN, "run", "-b", boot, "-t", "events",
                              "-g", "bc", "-e", "-r", dead, NULL};
        const char *words[] = {"redis", dead, NULL};
        expect_failure("unreachable Redis", argv, 20, words);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_recount, setup_recount,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_gen_roundtrip, setup_gen,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_restart_resumes, setup_restart,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup_bad_config,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests_name("end_to_end", tests, NULL, NULL);
}
