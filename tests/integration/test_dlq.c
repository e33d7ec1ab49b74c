/*
 * test_dlq.c -- `propstream dlq`: counts, listing and re-injection of dead
 * letters, checked against ps:dlq and against Kafka.
 *
 * The group setup starts a redis-server and `propstream broker` (topics
 * events:2, again:1, again2:1, again3:1), produces good JSON events mixed
 * with known bad records, and runs `propstream run -e`:
 *
 *   undecodable        "{not json" and friends, plus one 1,000-byte record
 *                      whose stored payload is cut to 768 bytes
 *   unknown_schema_id  Confluent framing with schema id 99, binary bytes
 *                      (NUL and 0xff included)
 *   missing_field      JSON without customer_id
 *   wrong_type         JSON whose ts is a string
 *
 * Tests:
 *   test_counts          --json counts per reason = XRANGE recount =
 *                        what was produced; XLEN; --list entries equal the
 *                        stream's fields; text output.
 *   test_reinject_reason --reinject --reason missing_field --delete: every
 *                        payload comes back byte for byte on topic again,
 *                        exactly those entries are gone from ps:dlq.
 *   test_reinject_ids    --ids of one binary entry and the truncated one:
 *                        the binary one is re-injected exactly (NULs and all)
 *                        and deleted, the truncated one is skipped (exit 1)
 *                        and stays.
 *   test_errors          bad options (exit 2), unknown id and missing topic
 *                        (exit 1, nothing produced or deleted), unreachable
 *                        Redis (exit 1), an empty stream and entries with
 *                        missing or malformed fields (no crash).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif

#define MAX_BAD 64
#define LONG_LEN 1000

typedef struct bad_rec {
    const char *reason;
    unsigned char bytes[LONG_LEN];
    size_t len;
} bad_rec;

typedef struct world {
    ps_test_redis redis;
    ps_test_broker broker;
    bool have_redis, have_broker;
    char redis_addr[64];
    redisContext *rc;
    bad_rec bad[MAX_BAD];
    size_t nbad;
    double t0;
} world;

static char out_buf[1 << 20];

/* ------------------------------------------------------------ helpers */

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r == NULL)
        fail_msg("redis: %s", c->errstr);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    return r;
}

static const char *efield(const redisReply *entry, const char *name)
{
    const redisReply *f = entry->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strcmp(f->element[i]->str, name) == 0)
            return f->element[i + 1]->str;
    return NULL;
}

static redisReply *dlq_all(redisContext *c)
{
    redisReply *r = cmd(c, "XRANGE ps:dlq - +");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

/* Run `propstream dlq -r ADDR ARGS...`: exit status, output in out_buf
 * (stdout only when json, else stdout and stderr). */
static int run_dlq(const world *w, const char *const *args, bool stdout_only)
{
    const char *argv[40];
    int n = 0;
    argv[n++] = PS_BIN;
    argv[n++] = "dlq";
    if (w != NULL) {
        argv[n++] = "-r";
        argv[n++] = w->redis_addr;
    }
    for (int i = 0; args[i] != NULL && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    double el = 0;
    int rc = stdout_only
                 ? ps_test_run(argv, 60, out_buf, sizeof(out_buf))
                 : ps_test_run_capture(argv, 60, out_buf, sizeof(out_buf), &el);
    return rc;
}

static json_t *parse_json(const char *txt)
{
    json_error_t err;
    json_t *j = json_loads(txt, 0, &err);
    if (j == NULL)
        fail_msg("dlq output is not JSON (%s): %.2000s", err.text, txt);
    return j;
}

/* -------------------------------------------------------------- Kafka */

static void produce_all(const char *bootstrap, const char *topic,
                        const void *const *payloads, const size_t *lens,
                        size_t n)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap,
                                       err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(rk);
    for (size_t i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "c%03zu", i % 50);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)payloads[i], lens[i]), RD_KAFKA_V_END);
        assert_int_equal(e, RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_poll(rk, 0);
    }
    assert_int_equal(rd_kafka_flush(rk, 15000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
}

typedef struct consumed {
    unsigned char *v[MAX_BAD];
    size_t len[MAX_BAD];
    size_t n;
} consumed;

static void consumed_free(consumed *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i]);
    c->n = 0;
}

/* Every message of topic partition 0, read from the beginning to its end. */
static void consume_topic(const char *bootstrap, const char *topic,
                          consumed *out)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "dlq-test-reader", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    memset(out, 0, sizeof(*out));
    double t0 = ps_test_now_s();
    bool eof = false;
    while (!eof && ps_test_now_s() - t0 < 20) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof = true;
        } else if (m->err) {
            print_error("consume %s: %s\n", topic, rd_kafka_message_errstr(m));
        } else {
            assert_true(out->n < MAX_BAD);
            out->v[out->n] = malloc(m->len ? m->len : 1);
            memcpy(out->v[out->n], m->payload, m->len);
            out->len[out->n++] = m->len;
        }
        rd_kafka_message_destroy(m);
    }
    assert_true(eof);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

/* Print a long output line by line (print_message cuts at 1 KiB). */
static void print_lines(const char *s)
{
    while (*s != '\0') {
        const char *nl = strchr(s, '\n');
        int len = nl ? (int)(nl - s) : (int)strlen(s);
        print_message("%.*s\n", len, s);
        s += len + (nl != NULL);
    }
}

/* ------------------------------------------------------------- setup */

static void add_bad(world *w, const char *reason, const void *bytes, size_t len)
{
    assert_true(w->nbad < MAX_BAD && len <= LONG_LEN);
    w->bad[w->nbad].reason = reason;
    memcpy(w->bad[w->nbad].bytes, bytes, len);
    w->bad[w->nbad++].len = len;
}

static void make_bad(world *w)
{
    char buf[256];
    static const char *const garbage[] = {"{not json",
                                          "{\"event_id\": ", "{\"a\":1,,}"};
    for (size_t i = 0; i < 3; i++)
        add_bad(w, "undecodable", garbage[i], strlen(garbage[i]));
    unsigned char longrec[LONG_LEN];
    longrec[0] = '{';
    for (size_t i = 1; i < LONG_LEN; i++)
        longrec[i] = (unsigned char)('a' + i % 26);
    add_bad(w, "undecodable", longrec, LONG_LEN);
    for (int i = 0; i < 2; i++) {
        unsigned char bin[] = {
            0x00, 0x00, 0x00, 0x00, 0x63, 0xff, 0x00, 0x10, (unsigned char)i,
            0x00, 0x80};
        add_bad(w, "unknown_schema_id", bin, sizeof(bin));
    }
    for (int i = 0; i < 4; i++) {
        int n = snprintf(buf, sizeof(buf),
                         "{\"event_id\":\"mf%d\",\"type\":\"CLICK\","
                         "\"product_id\":\"p%d\",\"ts\":%d}",
                         i, i, 1735689600 + i);
        add_bad(w, "missing_field", buf, (size_t)n);
    }
    for (int i = 0; i < 3; i++) {
        int n = snprintf(buf, sizeof(buf),
                         "{\"event_id\":\"wt%d\",\"customer_id\":\"c%03d\","
                         "\"type\":\"CLICK\",\"product_id\":\"p1\","
                         "\"ts\":\"yesterday %d\"}",
                         i, i, i);
        add_bad(w, "wrong_type", buf, (size_t)n);
    }
}

static int group_setup(void **state)
{
    static const char *const topics[] = {"events:2", "again:1", "again2:1",
                                         "again3:1", NULL};
    static char out[1 << 16];
    world *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    *state = w;
    w->t0 = ps_test_now_s();
    if (ps_test_redis_start(&w->redis, NULL) != 0)
        return -1;
    w->have_redis = true;
    snprintf(w->redis_addr, sizeof(w->redis_addr), "127.0.0.1:%d",
             w->redis.port);
    if (ps_test_broker_start(&w->broker, PS_BIN, 1, topics) != 0)
        return -1;
    w->have_broker = true;

    /* 300 good events with the bad ones spread among them */
    make_bad(w);
    enum { GOOD = 300 };
    size_t total = GOOD + w->nbad, nb = 0, ng = 0;
    const void **payloads = calloc(total, sizeof(*payloads));
    size_t *lens = calloc(total, sizeof(*lens));
    char(*good)[200] = calloc(GOOD, sizeof(*good));
    if (payloads == NULL || lens == NULL || good == NULL)
        return -1;
    for (size_t i = 0; i < total; i++) {
        if (nb < w->nbad && (i % 15 == 7 || total - i <= w->nbad - nb)) {
            payloads[i] = w->bad[nb].bytes;
            lens[i] = w->bad[nb++].len;
        } else {
            int n = snprintf(good[ng], sizeof(good[ng]),
                             "{\"event_id\":\"g%zu\",\"customer_id\":"
                             "\"c%03zu\",\"type\":\"CLICK\",\"product_id\":"
                             "\"p%zu\",\"ts\":%lld}",
                             ng, ng % 50, ng % 7,
                             1735689600000LL + (long long)ng * 1000);
            payloads[i] = good[ng];
            lens[i] = (size_t)n;
            ng++;
        }
    }
    produce_all(w->broker.bootstrap, "events", payloads, lens, total);
    free(payloads);
    free(lens);
    free(good);

    const char *run[] = {PS_BIN,
                         "run",
                         "-b",
                         w->broker.bootstrap,
                         "-t",
                         "events",
                         "-g",
                         "dlq-test",
                         "-r",
                         w->redis_addr,
                         "-e",
                         "--flush-interval-ms",
                         "50",
                         "--stats-interval-s",
                         "0",
                         "-X",
                         "kafka.session.timeout.ms=6000",
                         NULL};
    double el = 0;
    int rc = ps_test_run_capture(run, 120, out, sizeof(out), &el);
    print_message("    produce + run: exit %d after %.1f s\n", rc, el);
    if (rc != 0) {
        print_error("propstream run exited %d:\n%s\n", rc,
                    ps_test_tail(out, 3000));
        return -1;
    }
    struct timeval tv = {5, 0};
    w->rc = redisConnectWithTimeout("127.0.0.1", w->redis.port, tv);
    if (w->rc == NULL || w->rc->err)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    world *w = *state;
    if (w == NULL)
        return 0;
    if (w->rc != NULL)
        redisFree(w->rc);
    if (w->have_broker)
        ps_test_broker_stop(&w->broker);
    if (w->have_redis)
        ps_test_redis_stop(&w->redis);
    print_message("    (%.1f s in all)\n", ps_test_now_s() - w->t0);
    free(w);
    return 0;
}

/* -------------------------------------------------------------- tests */

static long long produced_with(const world *w, const char *reason)
{
    long long n = 0;
    for (size_t i = 0; i < w->nbad; i++)
        n += strcmp(w->bad[i].reason, reason) == 0;
    return n;
}

static void test_counts(void **state)
{
    world *w = *state;
    redisReply *all = dlq_all(w->rc);
    assert_int_equal(all->elements, w->nbad);

    const char *args[] = {"--json", NULL};
    assert_int_equal(run_dlq(w, args, true), 0);
    json_t *j = parse_json(out_buf);
    assert_int_equal(json_integer_value(json_object_get(j, "length")),
                     (long long)all->elements);
    assert_int_equal(json_integer_value(json_object_get(j, "scanned")),
                     (long long)all->elements);
    assert_null(json_object_get(j, "entries")); /* only with --list */

    /* counts per reason = a recount of the stream = what we produced */
    json_t *want = json_object();
    for (size_t i = 0; i < all->elements; i++) {
        const char *r = efield(all->element[i], "reason");
        assert_non_null(r);
        json_t *n = json_object_get(want, r);
        json_object_set_new(want, r,
                            json_integer(n ? json_integer_value(n) + 1 : 1));
    }
    json_t *by = json_object_get(j, "by_reason");
    if (!json_equal(want, by))
        fail_msg("by_reason: stream %s, dlq %s", json_dumps(want, 0),
                 json_dumps(by, 0));
    const char *reason;
    json_t *v;
    json_object_foreach(by, reason, v)
    {
        assert_int_equal(json_integer_value(v), produced_with(w, reason));
    }
    assert_int_equal(json_object_size(by), 4);
    json_decref(want);
    json_decref(j);

    /* --list --reason: the entries, field for field */
    const char *largs[] = {"--json", "--list", "--reason", "wrong_type", NULL};
    assert_int_equal(run_dlq(w, largs, true), 0);
    j = parse_json(out_buf);
    json_t *entries = json_object_get(j, "entries");
    size_t k = 0;
    for (size_t i = 0; i < all->elements; i++) {
        const redisReply *e = all->element[i];
        if (strcmp(efield(e, "reason"), "wrong_type") != 0)
            continue;
        json_t *je = json_array_get(entries, k++);
        assert_non_null(je);
        assert_string_equal(json_string_value(json_object_get(je, "id")),
                            e->element[0]->str);
        static const char *const strs[] = {"reason", "detail", "topic",
                                           "payload", "payload_encoding"};
        for (size_t s = 0; s < 5; s++)
            assert_string_equal(json_string_value(json_object_get(je, strs[s])),
                                efield(e, strs[s]));
        static const char *const nums[] = {"partition", "offset",
                                           "payload_len"};
        for (size_t s = 0; s < 3; s++)
            assert_int_equal(json_integer_value(json_object_get(je, nums[s])),
                             atoll(efield(e, nums[s])));
        assert_false(json_is_true(json_object_get(je, "truncated")));
    }
    assert_int_equal(k, 3);
    assert_int_equal(json_array_size(entries), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "selected")), 3);
    json_decref(j);

    /* --limit */
    const char *lim[] = {"--json", "--list", "--limit", "2", NULL};
    assert_int_equal(run_dlq(w, lim, true), 0);
    j = parse_json(out_buf);
    assert_int_equal(json_array_size(json_object_get(j, "entries")), 2);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(j, "entries"), 0), "id")),
        all->element[0]->element[0]->str);
    json_decref(j);

    /* text: counts and the listing, the long payload cut for the eye */
    const char *targs[] = {"--list", "--reason", "undecodable", NULL};
    assert_int_equal(run_dlq(w, targs, false), 0);
    print_lines(out_buf);
    assert_non_null(strstr(out_buf, "missing_field"));
    assert_non_null(strstr(out_buf, "{not json"));
    assert_non_null(strstr(out_buf, "..."));
    assert_non_null(strstr(out_buf, "4 selected"));
    freeReplyObject(all);
}

/* Standard padded base64 of n bytes into out (NUL-terminated). */
static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Multisets of byte strings are equal. */
static void expect_payloads(const consumed *got, const bad_rec *const *want,
                            size_t nwant)
{
    assert_int_equal(got->n, nwant);
    bool used[MAX_BAD] = {false};
    for (size_t i = 0; i < nwant; i++) {
        bool found = false;
        for (size_t k = 0; k < got->n && !found; k++)
            if (!used[k] && got->len[k] == want[i]->len &&
                memcmp(got->v[k], want[i]->bytes, want[i]->len) == 0)
                found = used[k] = true;
        if (!found)
            fail_msg("re-injected payload %zu (%zu bytes, %s) not found on "
                     "the topic",
                     i, want[i]->len, want[i]->reason);
    }
}

static void test_reinject_reason(void **state)
{
    world *w = *state;
    redisReply *before = dlq_all(w->rc);
    const char *args[] = {
        "--reinject", "--reason",          "missing_field", "-t",     "again",
        "-b",         w->broker.bootstrap, "--delete",      "--json", NULL};
    int rc = run_dlq(w, args, true);
    if (rc != 0)
        fail_msg("dlq --reinject exited %d: %s", rc, out_buf);
    print_lines(out_buf);
    json_t *j = parse_json(out_buf);
    json_t *ri = json_object_get(j, "reinject");
    assert_int_equal(json_integer_value(json_object_get(ri, "produced")), 4);
    assert_int_equal(json_integer_value(json_object_get(ri, "failed")), 0);
    assert_int_equal(json_integer_value(json_object_get(ri, "skipped")), 0);
    assert_int_equal(json_integer_value(json_object_get(ri, "deleted")), 4);
    json_decref(j);

    consumed got;
    consume_topic(w->broker.bootstrap, "again", &got);
    const bad_rec *want[MAX_BAD];
    size_t nwant = 0;
    for (size_t i = 0; i < w->nbad; i++)
        if (strcmp(w->bad[i].reason, "missing_field") == 0)
            want[nwant++] = &w->bad[i];
    expect_payloads(&got, want, nwant);
    consumed_free(&got);

    /* exactly the missing_field entries are gone, in order */
    redisReply *after = dlq_all(w->rc);
    size_t k = 0;
    for (size_t i = 0; i < before->elements; i++) {
        if (strcmp(efield(before->element[i], "reason"), "missing_field") == 0)
            continue;
        assert_true(k < after->elements);
        assert_string_equal(before->element[i]->element[0]->str,
                            after->element[k++]->element[0]->str);
    }
    assert_int_equal(k, after->elements);
    assert_int_equal(after->elements, before->elements - 4);
    freeReplyObject(before);
    freeReplyObject(after);
}

static void test_reinject_ids(void **state)
{
    world *w = *state;
    redisReply *before = dlq_all(w->rc);
    const char *bin_id = NULL, *long_id = NULL;
    for (size_t i = 0; i < before->elements; i++) {
        const redisReply *e = before->element[i];
        if (bin_id == NULL &&
            strcmp(efield(e, "reason"), "unknown_schema_id") == 0)
            bin_id = e->element[0]->str;
        if (atoll(efield(e, "payload_len")) == LONG_LEN)
            long_id = e->element[0]->str;
    }
    assert_non_null(bin_id);
    assert_non_null(long_id);
    char ids[128];
    snprintf(ids, sizeof(ids), "%s,%s", bin_id, long_id);
    const char *args[] = {
        "--reinject",        "--ids",    ids,      "-t", "again2", "-b",
        w->broker.bootstrap, "--delete", "--json", NULL};
    int rc = run_dlq(w, args, true);
    assert_int_equal(rc, 1); /* the truncated one could not be re-injected */
    json_t *j = parse_json(out_buf);
    json_t *ri = json_object_get(j, "reinject");
    assert_int_equal(json_integer_value(json_object_get(ri, "produced")), 1);
    assert_int_equal(json_integer_value(json_object_get(ri, "skipped")), 1);
    assert_int_equal(json_integer_value(json_object_get(ri, "deleted")), 1);
    json_t *entries = json_object_get(j, "entries");
    assert_int_equal(json_array_size(entries), 2);
    size_t ix;
    json_t *e;
    json_array_foreach(entries, ix, e)
    {
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *st = json_string_value(json_object_get(e, "state"));
        if (strcmp(id, long_id) == 0) {
            assert_string_equal(st, "skipped");
            assert_true(json_is_true(json_object_get(e, "truncated")));
            assert_non_null(strstr(
                json_string_value(json_object_get(e, "error")), "truncated"));
        } else {
            assert_string_equal(st, "produced");
        }
    }
    json_decref(j);

    /* which of the two binary records that entry is: by its stored
     * payload, base64-encoded here independently */
    const char *stored = NULL;
    for (size_t i = 0; i < before->elements; i++)
        if (strcmp(before->element[i]->element[0]->str, bin_id) == 0)
            stored = efield(before->element[i], "payload");
    assert_non_null(stored);
    const bad_rec *want[1] = {NULL};
    for (size_t i = 0; i < w->nbad; i++) {
        char b64[LONG_LEN * 2];
        base64(w->bad[i].bytes, w->bad[i].len, b64);
        if (strcmp(w->bad[i].reason, "unknown_schema_id") == 0 &&
            strcmp(b64, stored) == 0)
            want[0] = &w->bad[i];
    }
    assert_non_null(want[0]);
    consumed got;
    consume_topic(w->broker.bootstrap, "again2", &got);
    expect_payloads(&got, want, 1);
    consumed_free(&got);

    redisReply *after = dlq_all(w->rc);
    assert_int_equal(after->elements, before->elements - 1);
    bool long_left = false;
    for (size_t i = 0; i < after->elements; i++) {
        assert_string_not_equal(after->element[i]->element[0]->str, bin_id);
        long_left |= strcmp(after->element[i]->element[0]->str, long_id) == 0;
    }
    assert_true(long_left);
    freeReplyObject(before);
    freeReplyObject(after);
}

static void expect_exit(const world *w, const char *what,
                        const char *const *args, int want, const char *word)
{
    int rc = run_dlq(w, args, false);
    print_message("    %s: exit %d: %s", what, rc, ps_test_tail(out_buf, 160));
    if (rc != want)
        fail_msg("%s: exit %d, want %d:\n%s", what, rc, want, out_buf);
    if (word != NULL && strstr(out_buf, word) == NULL)
        fail_msg("%s: output lacks '%s':\n%s", what, word, out_buf);
}

static void test_errors(void **state)
{
    world *w = *state;
    const char *boot = w->broker.bootstrap;
    redisReply *r = cmd(w->rc, "XLEN ps:dlq");
    long long len0 = r->integer;
    freeReplyObject(r);

    {
        const char *a[] = {"--reinject", "--reason", "wrong_type", NULL};
        expect_exit(w, "reinject without topic", a, 2, "--topic");
    }
    {
        const char *a[] = {"--reinject", "-t", "again3", "-b", boot, NULL};
        expect_exit(w, "reinject without selection", a, 2, "--reason");
    }
    {
        const char *a[] = {"--delete", NULL};
        expect_exit(w, "delete alone", a, 2, "--delete");
    }
    {
        const char *a[] = {"--ids", "12x-1", NULL};
        expect_exit(w, "malformed id", a, 2, "12x-1");
    }
    {
        const char *a[] = {"--bogus", NULL};
        expect_exit(w, "unknown option", a, 2, "bogus");
    }
    {
        const char *a[] = {"--reinject", "--ids", "1-1",      "-t", "again3",
                           "-b",         boot,    "--delete", NULL};
        expect_exit(w, "unknown id", a, 1, "1-1");
    }
    {
        const char *a[] = {
            "--reinject",         "--reason", "wrong_type", "-t",
            "no-such-topic",      "-b",       boot,         "--delete",
            "--kafka-timeout-ms", "3000",     NULL};
        expect_exit(w, "missing topic", a, 1, "no-such-topic");
    }
    consumed got;
    consume_topic(boot, "again3", &got);
    assert_int_equal(got.n, 0);
    r = cmd(w->rc, "XLEN ps:dlq");
    assert_int_equal(r->integer, len0); /* nothing deleted */
    freeReplyObject(r);
    {
        char dead[64];
        snprintf(dead, sizeof(dead), "127.0.0.1:%d", ps_test_free_port());
        const char *a[] = {"-r", dead, NULL};
        expect_exit(NULL, "unreachable Redis", a, 1, dead);
        const char *b[] = {"-r", "1.2.3.4:5:6", NULL};
        expect_exit(NULL, "malformed Redis address", b, 2, "--redis");
    }
    {
        const char *a[] = {"--prefix", "empty:", "--json", "--list", NULL};
        assert_int_equal(run_dlq(w, a, true), 0);
        json_t *j = parse_json(out_buf);
        assert_int_equal(json_integer_value(json_object_get(j, "length")), 0);
        assert_int_equal(json_object_size(json_object_get(j, "by_reason")), 0);
        json_decref(j);
        const char *b[] = {"--prefix", "empty:", NULL};
        expect_exit(w, "empty stream, text", b, 0, "0 entries");
    }
    {
        /* entries with missing / malformed fields */
        freeReplyObject(cmd(w->rc, "XADD odd:dlq * foo bar"));
        freeReplyObject(cmd(w->rc,
                            "XADD odd:dlq * reason bad_ts payload "
                            "%s partition x",
                            "!!notbase64"));
        freeReplyObject(cmd(w->rc, "XADD odd:dlq * reason bad_ts payload "
                                   "aGk= payload_encoding rot13"));
        const char *a[] = {"--prefix", "odd:", "--list", NULL};
        expect_exit(w, "odd entries, text", a, 0, "(none)");
        const char *b[] = {"--prefix", "odd:", "--list", "--json", NULL};
        assert_int_equal(run_dlq(w, b, true), 0);
        json_t *j = parse_json(out_buf);
        assert_int_equal(json_array_size(json_object_get(j, "entries")), 3);
        json_decref(j);
        const char *c[] = {"--prefix", "odd:", "--reinject", "--all",    "-t",
                           "again3",   "-b",   boot,         "--delete", NULL};
        expect_exit(w, "odd entries, reinject", c, 1, "3 skipped");
        r = cmd(w->rc, "XLEN odd:dlq");
        assert_int_equal(r->integer, 3);
        freeReplyObject(r);
        freeReplyObject(cmd(w->rc, "SET wrong:dlq x"));
        const char *d[] = {"--prefix", "wrong:", NULL};
        expect_exit(w, "dlq key of the wrong type", d, 1, "WRONGTYPE");
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_reinject_reason),
        cmocka_unit_test(test_reinject_ids),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("dlq", tests, group_setup,
                                       group_teardown);
}
