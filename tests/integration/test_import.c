/*
 * test_import.c -- `propstream import` on the two real CSV files and on
 * fixtures, read back from Kafka.
 *
 *   test_rees46         ../shared/data/rees46-2019-Oct-head.csv as JSON to a
 *                       3-partition topic: the summary (SOURCES.md counts:
 *                       17,434 events, view/cart/purchase 17,055/165/214,
 *                       4,504 customers, one truncated row) and every message
 *                       consumed back is a JSON event with the expected
 *                       fields, keyed by its customer.
 *   test_online_retail  ../shared/data/online-retail-sample.csv as Confluent
 *                       Avro to a 1-partition topic: 27,384 events, 620
 *                       cancellations, 13 negative quantities, 1,983 rows
 *                       without a customer, 3,546 customers in events (3,569
 *                       in the file); every message is decoded by a small
 *                       Avro reader of our own (no avro-c, so the importer's
 *                       encoder is checked independently) and ts never goes
 *                       backwards in the produced order.
 *   test_fixtures       tests/data/import/ fixtures to a file (-o, JSON lines):
 *                       quoted commas, doubled quotes, CRLF, a quoted line
 *                       break, a truncated last line, a bad date, a negative
 *                       quantity, a cancellation, a missing customer, bad
 *                       UTF-8, binary garbage: exact skip counts and events.
 *   test_bad_input      empty file (exit 0, zero rows), binary garbage as the
 *                       header (exit 1), bad usage (exit 2).
 *
 * The numbers were recounted independently from the CSV files (Python's csv
 * module).  The broker is `propstream broker` (librdkafka's mock cluster).
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
#include <time.h>
#include <unistd.h>

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

#define REES46 PS_SOURCE_DIR "/../shared/data/rees46-2019-Oct-head.csv"
#define RETAIL PS_SOURCE_DIR "/../shared/data/online-retail-sample.csv"

/* The real data sets live in the shared folder beside the repository (as
 * in CI).  In a clone without it, the two real-data cases are skipped and
 * say so; the fixture cases always run. */
static bool have_file(const char *path)
{
    if (access(path, R_OK) == 0)
        return true;
    fprintf(stderr, "SKIPPED: %s not found (the shared data folder is not "
                    "beside this clone)\n",
            path);
    return false;
}
#define FIXDIR PS_SOURCE_DIR "/tests/data/import/"

static ps_test_broker broker;

static int setup(void **state)
{
    static const char *const topics[] = {"rees:3", "retail:1", NULL};
    (void)state;
    return ps_test_broker_start(&broker, PS_BIN, 1, topics);
}

static int teardown(void **state)
{
    (void)state;
    ps_test_broker_stop(&broker);
    return 0;
}

/* Run propstream with args, expect exit code want, return the summary. */
static json_t *run_import(const char *const *argv, int want)
{
    static char out[1 << 16];
    json_error_t jerr;
    int rc = ps_test_run(argv, 120, out, sizeof(out));
    if (rc != want)
        fail_msg("propstream import exited %d, expected %d; stdout: %s", rc,
                 want, out);
    if (want != 0 && want != 1)
        return NULL;
    json_t *j = json_loads(out, 0, &jerr);
    if (j == NULL && want == 0)
        fail_msg("summary is not JSON (%s): %s", jerr.text, out);
    return j;
}

static json_int_t jint(const json_t *o, const char *path)
{
    /* "a" or "a.b" */
    char buf[128];
    const char *dot = strchr(path, '.');
    const json_t *v = o;
    if (dot != NULL) {
        snprintf(buf, sizeof(buf), "%.*s", (int)(dot - path), path);
        v = json_object_get(o, buf);
        path = dot + 1;
    }
    v = v ? json_object_get(v, path) : NULL;
    if (!json_is_integer(v))
        fail_msg("summary field %s missing or not an integer", path);
    return json_integer_value(v);
}

static void check_skipped_total(const json_t *sum)
{
    const json_t *sk = json_object_get(sum, "skipped");
    const char *k;
    json_t *v;
    json_int_t total = 0;
    json_object_foreach((json_t *)sk, k, v) total += json_integer_value(v);
    assert_int_equal(jint(sum, "rows"), jint(sum, "events") + total);
}

/* ------------------------------------------------------------------ */
/* Consuming a topic back                                              */
/* ------------------------------------------------------------------ */

typedef struct msg {
    char *key;
    unsigned char *val;
    size_t len;
    int32_t partition;
} msg;

/* Every message of topic (partitions 0..nparts-1) from the beginning,
 * until expect are read or 30 s pass; returns the count. */
static size_t consume_all(const char *topic, int nparts, size_t expect,
                          msg **out)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *tp;
    size_t n = 0;
    msg *v = calloc(expect + 1, sizeof(*v));
    double deadline = ps_test_now_s() + 30;

    assert_non_null(v);
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       broker.bootstrap, err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "group.id", "test_import", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(rk);
    rd_kafka_poll_set_consumer(rk);
    tp = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, tp), 0);
    rd_kafka_topic_partition_list_destroy(tp);

    while (ps_test_now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL) {
            if (n >= expect)
                break; /* one quiet poll after the expected count: extras */
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (n < expect + 1) {
                v[n].key = strndup(m->key ? (const char *)m->key : "",
                                   m->key_len);
                v[n].val = malloc(m->len + 1);
                assert_non_null(v[n].val);
                memcpy(v[n].val, m->payload, m->len);
                v[n].val[m->len] = 0;
                v[n].len = m->len;
                v[n].partition = m->partition;
            }
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    *out = v;
    return n;
}

static void free_msgs(msg *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].key);
        free(v[i].val);
    }
    free(v);
}

/* ------------------------------------------------------------------ */
/* A minimal Avro reader for commerce.events.Event                     */
/* ------------------------------------------------------------------ */

typedef struct av_ev {
    char event_id[300], customer_id[300], product_id[300], campaign[300];
    int type;
    bool has_product, has_amount, has_signup, has_campaign;
    double amount;
    int64_t ts, signup_ts;
} av_ev;

static bool av_long(const unsigned char **p, const unsigned char *end,
                    int64_t *out)
{
    uint64_t u = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return false;
        unsigned char b = *(*p)++;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
            return true;
        }
    }
    return false;
}

static bool av_str(const unsigned char **p, const unsigned char *end,
                   char *out, size_t cap)
{
    int64_t n;
    if (!av_long(p, end, &n) || n < 0 || (size_t)n >= cap ||
        n > end - *p)
        return false;
    memcpy(out, *p, (size_t)n);
    out[n] = 0;
    *p += n;
    return true;
}

/* Decode a Confluent-framed record (schema id 1).  true when the bytes are
 * exactly one record. */
static bool av_decode(const unsigned char *buf, size_t len, av_ev *ev)
{
    const unsigned char *p = buf + 5, *end = buf + len;
    int64_t v, br;
    memset(ev, 0, sizeof(*ev));
    if (len < 5 || buf[0] != 0 || buf[1] || buf[2] || buf[3] || buf[4] != 1)
        return false;
    if (!av_str(&p, end, ev->event_id, sizeof(ev->event_id)) ||
        !av_str(&p, end, ev->customer_id, sizeof(ev->customer_id)) ||
        !av_long(&p, end, &v) || v < 0 || v > 3)
        return false;
    ev->type = (int)v;
    if (!av_long(&p, end, &br) || (br != 0 && br != 1))
        return false;
    if ((ev->has_product = br == 1) &&
        !av_str(&p, end, ev->product_id, sizeof(ev->product_id)))
        return false;
    if (!av_long(&p, end, &br) || (br != 0 && br != 1))
        return false;
    if ((ev->has_amount = br == 1)) {
        if (end - p < 8)
            return false;
        memcpy(&ev->amount, p, 8); /* little-endian host assumed (x86) */
        p += 8;
    }
    if (!av_long(&p, end, &ev->ts))
        return false;
    if (!av_long(&p, end, &br) || (br != 0 && br != 1))
        return false;
    if ((ev->has_signup = br == 1) && !av_long(&p, end, &ev->signup_ts))
        return false;
    if (!av_long(&p, end, &br) || (br != 0 && br != 1))
        return false;
    if ((ev->has_campaign = br == 1) &&
        !av_str(&p, end, ev->campaign, sizeof(ev->campaign)))
        return false;
    return p == end;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static void test_rees46(void **state)
{
    if (!have_file(REES46))
        skip();
    const char *const argv[] = {PS_BIN, "import", "-b", broker.bootstrap,
                                "-t", "rees", "--format-in", "rees46",
                                "--format", "json", REES46, NULL};
    double t0 = ps_test_now_s();
    json_t *sum = run_import(argv, 0);
    double el = ps_test_now_s() - t0;
    msg *m = NULL;
    size_t n, types[3] = {0, 0, 0};
    double revenue = 0;
    (void)state;

    print_message("rees46: %.2f s, %.0f rows/s (process wall time)\n", el,
                  17435.0 / el);
    assert_int_equal(jint(sum, "rows"), 17435);
    assert_int_equal(jint(sum, "events"), 17434);
    assert_int_equal(jint(sum, "skipped.truncated"), 1);
    assert_int_equal(json_object_size(json_object_get(sum, "skipped")), 1);
    assert_int_equal(jint(sum, "events_by_type.CLICK"), 17055);
    assert_int_equal(jint(sum, "events_by_type.WISHLIST"), 165);
    assert_int_equal(jint(sum, "events_by_type.PURCHASE"), 214);
    assert_int_equal(jint(sum, "events_by_type.SPEND"), 0);
    assert_int_equal(jint(sum, "customers"), 4504);
    assert_int_equal(jint(sum, "products"), 6493);
    assert_false(json_is_true(json_object_get(sum, "sorted")));
    assert_int_equal(jint(sum, "first_ts"), 1569888000000LL);
    assert_true(jint(sum, "last_ts") <= 1569898800000LL); /* 03:00 */
    assert_int_equal(jint(sum, "kafka.delivered"), 17434);
    assert_true(fabs(json_real_value(json_object_get(sum, "amount_sum")) -
                     59442.63) < 0.01);
    check_skipped_total(sum);

    n = consume_all("rees", 3, 17434, &m);
    assert_int_equal(n, 17434);
    for (size_t i = 0; i < n; i++) {
        json_error_t jerr;
        json_t *e = json_loadb((const char *)m[i].val, m[i].len, 0, &jerr);
        if (e == NULL)
            fail_msg("message %zu is not JSON: %s", i, jerr.text);
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *cust =
            json_string_value(json_object_get(e, "customer_id"));
        const char *eid = json_string_value(json_object_get(e, "event_id"));
        assert_non_null(type);
        assert_non_null(cust);
        assert_non_null(eid);
        assert_string_equal(cust, m[i].key);
        assert_true(strncmp(eid, "rees46-2019-Oct-head.csv:", 25) == 0);
        assert_non_null(json_string_value(json_object_get(e, "product_id")));
        assert_true(json_integer_value(json_object_get(e, "ts")) >=
                    1569888000000LL);
        if (strcmp(type, "CLICK") == 0) {
            types[0]++;
            assert_null(json_object_get(e, "amount"));
        } else if (strcmp(type, "WISHLIST") == 0) {
            types[1]++;
        } else if (strcmp(type, "PURCHASE") == 0) {
            types[2]++;
            assert_true(json_is_number(json_object_get(e, "amount")));
            revenue += json_number_value(json_object_get(e, "amount"));
        } else {
            fail_msg("unexpected type %s", type);
        }
        json_decref(e);
    }
    assert_int_equal(types[0], 17055);
    assert_int_equal(types[1], 165);
    assert_int_equal(types[2], 214);
    assert_true(fabs(revenue - 59442.63) < 0.01);
    free_msgs(m, n < 17435 ? n : 17435);
    json_decref(sum);
}

static void test_online_retail(void **state)
{
    if (!have_file(RETAIL))
        skip();
    const char *const argv[] = {PS_BIN, "import", "-b", broker.bootstrap,
                                "-t", "retail", "--format-in",
                                "online-retail", RETAIL, NULL};
    double t0 = ps_test_now_s();
    json_t *sum = run_import(argv, 0);
    double el = ps_test_now_s() - t0;
    msg *m = NULL;
    size_t n;
    int64_t prev_ts = 0;
    double revenue = 0;
    (void)state;

    print_message("online-retail: %.2f s, %.0f rows/s (process wall time)\n",
                  el, 30000.0 / el);
    assert_int_equal(jint(sum, "rows"), 30000);
    assert_int_equal(jint(sum, "events"), 27384);
    assert_int_equal(jint(sum, "skipped.cancelled"), 620);
    assert_int_equal(jint(sum, "skipped.negative_quantity"), 13);
    assert_int_equal(jint(sum, "skipped.missing_customer"), 1983);
    assert_int_equal(json_object_size(json_object_get(sum, "skipped")), 3);
    assert_int_equal(jint(sum, "events_by_type.PURCHASE"), 27384);
    assert_int_equal(jint(sum, "customers"), 3546);
    assert_int_equal(jint(sum, "customers_in_file"), 3569);
    assert_int_equal(jint(sum, "products"), 2856);
    assert_true(json_is_true(json_object_get(sum, "sorted")));
    assert_int_equal(jint(sum, "first_ts"), 1291192440000LL); /* 12-01 08:34 */
    assert_int_equal(jint(sum, "last_ts"), 1323435000000LL);  /* 12-09 12:50 */
    assert_int_equal(jint(sum, "kafka.delivered"), 27384);
    check_skipped_total(sum);

    n = consume_all("retail", 1, 27384, &m);
    assert_int_equal(n, 27384);
    for (size_t i = 0; i < n; i++) {
        av_ev ev;
        if (!av_decode(m[i].val, m[i].len, &ev))
            fail_msg("message %zu is not a Confluent Avro event", i);
        assert_int_equal(ev.type, 2); /* PURCHASE */
        assert_true(ev.has_product && ev.has_amount);
        assert_false(ev.has_signup || ev.has_campaign);
        assert_true(ev.amount >= 0);
        assert_string_equal(ev.customer_id, m[i].key);
        assert_null(strchr(ev.customer_id, '.')); /* "17850.0" -> "17850" */
        if (ev.ts < prev_ts)
            fail_msg("message %zu: ts %" PRId64 " < previous %" PRId64, i,
                     ev.ts, prev_ts);
        prev_ts = ev.ts;
        revenue += ev.amount;
    }
    assert_true(fabs(revenue - 575535.77) < 0.01);
    free_msgs(m, n < 27385 ? n : 27385);
    json_decref(sum);
}

/* Read a JSON-lines file into an array. */
static json_t *read_lines(const char *path)
{
    json_t *arr = json_array();
    char line[4096];
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp) != NULL) {
        json_error_t jerr;
        json_t *e = json_loads(line, 0, &jerr);
        if (e == NULL)
            fail_msg("%s: not JSON: %s", path, line);
        json_array_append_new(arr, e);
    }
    fclose(fp);
    return arr;
}

static void expect_event(json_t *arr, size_t i, const char *eid,
                         const char *cust, const char *type,
                         const char *prod, double amount, int64_t ts)
{
    json_t *e = json_array_get(arr, i);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "event_id")),
                        eid);
    assert_string_equal(json_string_value(json_object_get(e, "customer_id")),
                        cust);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    if (prod)
        assert_string_equal(
            json_string_value(json_object_get(e, "product_id")), prod);
    else
        assert_null(json_object_get(e, "product_id"));
    if (isnan(amount))
        assert_null(json_object_get(e, "amount"));
    else
        assert_true(fabs(json_number_value(json_object_get(e, "amount")) -
                         amount) < 1e-9);
    assert_int_equal(json_integer_value(json_object_get(e, "ts")), ts);
}

static void test_fixtures(void **state)
{
    char out[] = "/tmp/ps-import-XXXXXX";
    int fd = mkstemp(out);
    (void)state;
    assert_true(fd >= 0);
    close(fd);

    {
        const char *const argv[] = {PS_BIN, "import", "-o", out, "--format",
                                    "json", "--format-in", "online-retail",
                                    FIXDIR "retail-fixture.csv", NULL};
        json_t *sum = run_import(argv, 0);
        assert_int_equal(jint(sum, "rows"), 10);
        assert_int_equal(jint(sum, "events"), 4);
        assert_int_equal(jint(sum, "skipped.truncated"), 1);
        assert_int_equal(jint(sum, "skipped.bad_date"), 1);
        assert_int_equal(jint(sum, "skipped.bad_number"), 1);
        assert_int_equal(jint(sum, "skipped.missing_customer"), 1);
        assert_int_equal(jint(sum, "skipped.cancelled"), 1);
        assert_int_equal(jint(sum, "skipped.negative_quantity"), 1);
        assert_int_equal(json_object_size(json_object_get(sum, "skipped")), 6);
        assert_int_equal(jint(sum, "customers"), 3);
        assert_int_equal(jint(sum, "customers_in_file"), 4);
        assert_true(json_is_true(json_object_get(sum, "sorted")));
        check_skipped_total(sum);
        json_decref(sum);

        json_t *ev = read_lines(out);
        assert_int_equal(json_array_size(ev), 4);
        /* sorted by time: line 4 (2010-11-30) comes first */
        expect_event(ev, 0, "retail-fixture.csv:4", "13047", "PURCHASE",
                     "84879", 54.08, 1291107600000LL);
        expect_event(ev, 1, "retail-fixture.csv:2", "17850", "PURCHASE",
                     "85123A", 15.3, 1291191960000LL);
        expect_event(ev, 2, "retail-fixture.csv:3", "17850", "PURCHASE",
                     "22633", 11.1, 1291192080000LL);
        /* the record after a quoted CRLF inside a field keeps its line */
        expect_event(ev, 3, "retail-fixture.csv:11", "12583", "PURCHASE",
                     "22726", 45.0, 1291194000000LL);
        json_decref(ev);
    }
    {
        const char *const argv[] = {
            PS_BIN, "import", "-o", out, "--format", "json", "--format-in",
            "generic", "--map",
            "event_id=event_id,customer_id=user,type=action,product_id=sku,"
            "amount=price,ts=time,signup_ts=signup,campaign=campaign",
            FIXDIR "generic-fixture.csv", NULL};
        json_t *sum = run_import(argv, 0);
        assert_int_equal(jint(sum, "rows"), 11);
        assert_int_equal(jint(sum, "events"), 4);
        assert_int_equal(jint(sum, "skipped.truncated"), 1);    /* garbage */
        assert_int_equal(jint(sum, "skipped.extra_fields"), 1);
        assert_int_equal(jint(sum, "skipped.bad_encoding"), 1); /* \xff */
        assert_int_equal(jint(sum, "skipped.bad_date"), 1);     /* 02-30 */
        assert_int_equal(jint(sum, "skipped.missing_product"), 1);
        assert_int_equal(jint(sum, "skipped.unmapped_type"), 1);
        assert_int_equal(jint(sum, "skipped.bad_amount"), 1);   /* SPEND 0 */
        assert_int_equal(json_object_size(json_object_get(sum, "skipped")), 7);
        assert_false(json_is_true(json_object_get(sum, "sorted")));
        check_skipped_total(sum);
        json_decref(sum);

        json_t *ev = read_lines(out);
        assert_int_equal(json_array_size(ev), 4);
        expect_event(ev, 0, "g1", "u1", "CLICK", "p,1", NAN,
                     1735689600000LL);
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(ev, 0), "campaign")),
                            "spring \"24\"");
        expect_event(ev, 1, "g2", "u1", "WISHLIST", "p2", NAN,
                     1735689660000LL);
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(ev, 1), "signup_ts")),
                         1733011200000LL);
        expect_event(ev, 2, "g3", "u2", "PURCHASE", "p2", 19.99,
                     1735689720000LL);
        expect_event(ev, 3, "g4", "u2", "SPEND", NULL, 5.0, 1735689780000LL);
        json_decref(ev);
    }
    unlink(out);
}

static void test_bad_input(void **state)
{
    (void)state;
    {
        const char *const argv[] = {PS_BIN, "import", "-o", "/dev/null",
                                    "--format-in", "rees46",
                                    FIXDIR "empty.csv", NULL};
        json_t *sum = run_import(argv, 0);
        assert_int_equal(jint(sum, "rows"), 0);
        assert_int_equal(jint(sum, "events"), 0);
        json_decref(sum);
    }
    {
        const char *const argv[] = {PS_BIN, "import", "-o", "/dev/null",
                                    "--format-in", "online-retail",
                                    FIXDIR "garbage.bin", NULL};
        json_decref(run_import(argv, 1));
    }
    {
        const char *const argv[] = {PS_BIN, "import", "-o", "/dev/null",
                                    "--format-in", "rees46", RETAIL, NULL};
        json_decref(run_import(argv, 1)); /* header lacks event_time */
    }
    {
        const char *const argv[] = {PS_BIN, "import", "-o", "/dev/null",
                                    "--format-in", "nope", REES46, NULL};
        run_import(argv, 2);
    }
    {
        const char *const argv[] = {PS_BIN, "import", "-o", "/dev/null",
                                    "--format-in", "generic", "--map",
                                    "customer_id=a", REES46, NULL};
        run_import(argv, 2); /* type and ts missing */
    }
    {
        const char *const argv[] = {PS_BIN, "import", "--format-in",
                                    "rees46", REES46, NULL};
        run_import(argv, 2); /* neither -b nor -o */
    }
    {
        const char *const argv[] = {PS_BIN, "import", "-o", "/dev/null",
                                    "--format-in", "rees46",
                                    FIXDIR "does-not-exist.csv", NULL};
        json_decref(run_import(argv, 1));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rees46),
        cmocka_unit_test(test_online_retail),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
