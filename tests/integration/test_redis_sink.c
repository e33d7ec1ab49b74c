/*
 * test_redis_sink.c -- sinks/redis_sink.c against a real redis-server.
 *
 * The group starts its own redis-server (tests/support/servers.c) and keeps
 * a plain hiredis connection to it (`check`) to set up and read back data
 * independently of the sink.  Tests that need another server configuration
 * (a password, a server that is stopped and restarted) start their own.
 *
 * SIGPIPE keeps its default action on purpose: the sink must survive
 * writing to a server that went away without the application ignoring it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "../../common/error.h"
#include "../../sinks/redis_sink.h"
#include "../support/servers.h"
#include "../support/testutil.h"

static ps_test_redis server; /* shared by most tests */
static redisContext *check;  /* independent connection to it */

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ps_redis_conf conf_for(int port)
{
    ps_redis_conf conf = {.host = "127.0.0.1",
                          .port = port,
                          .connect_timeout_ms = 2000,
                          .io_timeout_ms = 5000};
    return conf;
}

static ps_redis_sink *sink_for(int port)
{
    ps_redis_conf conf = conf_for(port);
    char err[256];
    ps_redis_sink *s = ps_redis_sink_new(&conf, err, sizeof(err));
    if (s == NULL)
        fail_msg("ps_redis_sink_new: %s", err);
    return s;
}

/* A command on the check connection; the reply must be freed. */
static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(check, fmt, ap);
    va_end(ap);
    if (r == NULL)
        fail_msg("check connection: %s", check->errstr);
    return r;
}

static void cmd_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(check, fmt, ap);
    va_end(ap);
    if (r == NULL)
        fail_msg("check connection: %s", check->errstr);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("check command failed: %s", r->str);
    freeReplyObject(r);
}

/* HGET as a string ("" when missing) into buf. */
static const char *hget(const char *key, const char *field, char *buf,
                        size_t size)
{
    redisReply *r = cmd("HGET %s %s", key, field);
    snprintf(buf, size, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return buf;
}

static long long integer(const char *fmt, const char *arg)
{
    redisReply *r = cmd(fmt, arg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static ps_batch *hset_batch(const char *key, const char *field,
                            const char *val)
{
    ps_batch *b = ps_batch_new("ps:");
    ps_batch_begin(b, "HSET");
    ps_batch_arg_cstr(b, key);
    ps_batch_arg_cstr(b, field);
    ps_batch_arg_cstr(b, val);
    ps_batch_end(b);
    return b;
}

static int group_setup(void **state)
{
    (void)state;
    if (ps_test_redis_start(&server, NULL) != 0)
        return -1;
    struct timeval tv = {5, 0};
    check = redisConnectWithTimeout("127.0.0.1", server.port, tv);
    if (check == NULL || check->err)
        return -1;
    redisSetTimeout(check, tv);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (check)
        redisFree(check);
    ps_test_redis_stop(&server);
    ps_test_redis_stop(&server); /* safe twice */
    return 0;
}

static int flush_all(void **state)
{
    (void)state;
    cmd_ok("FLUSHALL");
    return 0;
}

/* ------------------------------------------------------------------------
 * Transactions
 * ------------------------------------------------------------------------ */

static void test_exec_lands(void **state)
{
    (void)state;
    ps_redis_sink *s = sink_for(server.port);
    assert_true(ps_redis_sink_connected(s));
    assert_string_equal(ps_redis_sink_errstr(s), "");

    ps_batch *b = ps_batch_new("ps:");
    ps_str c1 = {"c1", 2};
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "cust:", c1, NULL);
    ps_batch_arg_cstr(b, "events");
    ps_batch_arg_i64(b, 3);
    ps_batch_arg_cstr(b, "p_purchase");
    ps_batch_arg_dbl(b, 0.25);
    ps_batch_end(b);
    for (int i = 0; i < 2; i++) {
        ps_batch_begin(b, "HINCRBY");
        ps_batch_arg_key(b, "cust:", c1, NULL);
        ps_batch_arg_cstr(b, "clicks");
        ps_batch_arg_i64(b, 5 - 3 * i);
        ps_batch_end(b);
    }
    ps_batch_begin(b, "XADD");
    ps_batch_arg_key(b, "paths", (ps_str){NULL, 0}, NULL);
    ps_batch_arg_cstr(b, "MAXLEN");
    ps_batch_arg_cstr(b, "~");
    ps_batch_arg_i64(b, 1000);
    ps_batch_arg_cstr(b, "*");
    ps_batch_arg_cstr(b, "customer");
    ps_batch_arg_str(b, c1);
    ps_batch_arg_cstr(b, "path");
    ps_batch_arg_cstr(b, "click>purchase");
    ps_batch_end(b);

    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);

    char buf[64];
    assert_string_equal(hget("ps:cust:c1", "events", buf, sizeof(buf)), "3");
    assert_string_equal(hget("ps:cust:c1", "p_purchase", buf, sizeof(buf)),
                        "0.25");
    assert_string_equal(hget("ps:cust:c1", "clicks", buf, sizeof(buf)), "7");
    assert_int_equal(integer("XLEN %s", "ps:paths"), 1);
    redisReply *r = cmd("XRANGE ps:paths - +");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    redisReply *fields = r->element[0]->element[1];
    assert_int_equal(fields->elements, 4);
    assert_string_equal(fields->element[1]->str, "c1");
    assert_string_equal(fields->element[3]->str, "click>purchase");
    freeReplyObject(r);

    ps_redis_stats st;
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.transactions, 1);
    assert_int_equal(st.commands, 4);
    assert_int_equal(st.bytes, ps_batch_bytes(b));
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.reconnects, 0);

    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
    ps_redis_sink_destroy(NULL);
}

/* A command failing inside EXEC (WRONGTYPE) fails the flush: Redis does
 * not roll back, so the contract data may be inconsistent. */
static void test_exec_failing_command(void **state)
{
    (void)state;
    cmd_ok("SET ps:str x");
    ps_redis_sink *s = sink_for(server.port);
    ps_batch *b = hset_batch("ps:ok", "f", "1");
    ps_batch_begin(b, "HINCRBY");
    ps_batch_arg_cstr(b, "ps:str");
    ps_batch_arg_cstr(b, "f");
    ps_batch_arg_i64(b, 1);
    ps_batch_end(b);
    ps_batch_begin(b, "HSET");
    ps_batch_arg_cstr(b, "ps:ok");
    ps_batch_arg_cstr(b, "g");
    ps_batch_arg_i64(b, 2);
    ps_batch_end(b);

    assert_int_equal(ps_redis_sink_exec(s, b), PS_ERR_IO);
    const char *err = ps_redis_sink_errstr(s);
    assert_non_null(strstr(err, "WRONGTYPE"));
    assert_non_null(strstr(err, "command 1 (HINCRBY)"));
    assert_false(ps_redis_sink_connected(s));
    ps_redis_stats st;
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.transactions, 0);
    assert_int_equal(st.failures, 1);

    /* MULTI/EXEC has no rollback: the other commands ran. */
    char buf[16];
    assert_string_equal(hget("ps:ok", "g", buf, sizeof(buf)), "2");

    /* The sink recovers once the backoff allows. */
    ps_batch *ok = hset_batch("ps:after", "f", "1");
    ps_test_sleep_ms(150);
    assert_int_equal(ps_redis_sink_exec(s, ok), PS_OK);
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.reconnects, 1);
    assert_int_equal(st.transactions, 1);

    ps_batch_destroy(ok);
    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
}

/* A command rejected while queueing aborts the whole transaction. */
static void test_exec_rejected_aborts(void **state)
{
    (void)state;
    ps_redis_sink *s = sink_for(server.port);
    ps_batch *b = hset_batch("ps:a", "f", "1");
    ps_batch_begin(b, "HSET"); /* wrong number of arguments */
    ps_batch_arg_cstr(b, "ps:a");
    ps_batch_arg_cstr(b, "g");
    ps_batch_end(b);
    assert_int_equal(ps_redis_sink_exec(s, b), PS_ERR_IO);
    assert_non_null(strstr(ps_redis_sink_errstr(s), "command 1 (HSET)"));
    assert_non_null(strstr(ps_redis_sink_errstr(s), "wrong number"));
    assert_int_equal(integer("EXISTS %s", "ps:a"), 0);
    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
}

static void test_empty_batch(void **state)
{
    (void)state;
    ps_redis_sink *s = sink_for(server.port);
    ps_batch *b = ps_batch_new("ps:");
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    ps_batch_begin(b, "HSET"); /* dropped: name only */
    ps_batch_end(b);
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    ps_redis_stats st;
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.transactions, 0);
    assert_int_equal(st.commands, 0);
    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
}

/* 1,000 keys are one transaction, i.e. one pipelined round trip. */
static void test_thousand_keys_one_transaction(void **state)
{
    (void)state;
    cmd_ok("CONFIG RESETSTAT");
    ps_redis_sink *s = sink_for(server.port);
    ps_batch *b = ps_batch_new("ps:");
    char id[16];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(id, sizeof(id), "c%d", i);
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "cust:", (ps_str){id, (uint32_t)n}, NULL);
        ps_batch_arg_cstr(b, "events");
        ps_batch_arg_i64(b, i);
        ps_batch_end(b);
    }
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    ps_redis_stats st;
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.transactions, 1);
    assert_int_equal(st.commands, 1000);
    assert_int_equal(st.bytes, ps_batch_bytes(b));

    redisReply *r = cmd("DBSIZE");
    assert_int_equal(r->integer, 1000);
    freeReplyObject(r);
    char buf[16];
    assert_string_equal(hget("ps:cust:c999", "events", buf, sizeof(buf)),
                        "999");
    /* One MULTI and one EXEC were executed for the whole batch. */
    r = cmd("INFO commandstats");
    assert_non_null(strstr(r->str, "cmdstat_exec:calls=1,"));
    assert_non_null(strstr(r->str, "cmdstat_multi:calls=1,"));
    freeReplyObject(r);
    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
}

static void test_select_db(void **state)
{
    (void)state;
    ps_redis_conf conf = conf_for(server.port);
    conf.db = 3;
    char err[256];
    ps_redis_sink *s = ps_redis_sink_new(&conf, err, sizeof(err));
    assert_non_null(s);
    ps_batch *b = hset_batch("ps:db", "f", "3");
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    assert_int_equal(integer("EXISTS %s", "ps:db"), 0); /* not in db 0 */
    cmd_ok("SELECT 3");
    char buf[16];
    assert_string_equal(hget("ps:db", "f", buf, sizeof(buf)), "3");
    cmd_ok("SELECT 0");
    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
}

/* ------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------ */

typedef struct got_value {
    int calls;
    bool null;
    char val[32];
    size_t len;
} got_value;

static void on_value(void *opaque, size_t i, const char *val, size_t len)
{
    got_value *g = (got_value *)opaque + i;
    g->calls++;
    g->null = val == NULL;
    g->len = len;
    if (val)
        memcpy(g->val, val, len < sizeof(g->val) ? len : sizeof(g->val));
}

static void test_get_many(void **state)
{
    (void)state;
    cmd_ok("SET ps:a 1");
    cmd_ok("SET ps:c %b", "", (size_t)0);
    cmd_ok("SET ps:d %b", "x\0y", (size_t)3);
    ps_redis_sink *s = sink_for(server.port);
    const char *keys[] = {"ps:a", "ps:b", "ps:c", "ps:d"};
    got_value got[4] = {0};
    assert_int_equal(ps_redis_sink_get_many(s, 4, keys, NULL, on_value, got),
                     PS_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(got[i].calls, 1);
    assert_false(got[0].null);
    assert_int_equal(got[0].len, 1);
    assert_memory_equal(got[0].val, "1", 1);
    assert_true(got[1].null); /* missing */
    assert_false(got[2].null); /* empty, not missing */
    assert_int_equal(got[2].len, 0);
    assert_int_equal(got[3].len, 3);
    assert_memory_equal(got[3].val, "x\0y", 3);

    /* binary key with explicit lengths; n == 0 is a no-op */
    const size_t lens[] = {4};
    const char *bkeys[] = {"ps:dXX"};
    memset(got, 0, sizeof(got));
    assert_int_equal(
        ps_redis_sink_get_many(s, 1, bkeys, lens, on_value, got), PS_OK);
    assert_int_equal(got[0].calls, 1);
    assert_int_equal(got[0].len, 3);
    assert_int_equal(ps_redis_sink_get_many(s, 0, NULL, NULL, on_value, got),
                     PS_OK);

    /* a wrong-type key is an error */
    cmd_ok("HSET ps:h f v");
    const char *hkeys[] = {"ps:h"};
    assert_int_equal(
        ps_redis_sink_get_many(s, 1, hkeys, NULL, on_value, got), PS_ERR_IO);
    assert_non_null(strstr(ps_redis_sink_errstr(s), "WRONGTYPE"));
    ps_redis_sink_destroy(s);
}

#define MANY_KEYS 20000 /* more than one pipeline window */

static void on_many(void *opaque, size_t i, const char *val, size_t len)
{
    size_t *seen = opaque;
    char want[32];
    int n = snprintf(want, sizeof(want), "v%zu", i);
    if (i % 3 == 0) {
        assert_null(val);
    } else {
        assert_non_null(val);
        assert_int_equal(len, (size_t)n);
        assert_memory_equal(val, want, len);
    }
    assert_int_equal(*seen, i); /* in order */
    (*seen)++;
}

static void test_get_many_large(void **state)
{
    (void)state;
    ps_redis_sink *s = sink_for(server.port);
    ps_batch *b = ps_batch_new("ps:");
    static char keybuf[MANY_KEYS][24];
    static const char *keys[MANY_KEYS];
    for (size_t i = 0; i < MANY_KEYS; i++) {
        snprintf(keybuf[i], sizeof(keybuf[i]), "ps:k%zu", i);
        keys[i] = keybuf[i];
        if (i % 3 == 0)
            continue; /* left missing */
        ps_batch_begin(b, "SET");
        ps_batch_arg_cstr(b, keys[i]);
        ps_batch_arg_fmt(b, "v%zu", i);
        ps_batch_end(b);
    }
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    size_t seen = 0;
    assert_int_equal(
        ps_redis_sink_get_many(s, MANY_KEYS, keys, NULL, on_many, &seen),
        PS_OK);
    assert_int_equal(seen, MANY_KEYS);
    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
}

typedef struct got_fields {
    int n;
    char pairs[8][2][16];
} got_fields;

static void on_field(void *opaque, const char *f, size_t flen,
                     const char *v, size_t vlen)
{
    got_fields *g = opaque;
    assert_true(g->n < 8 && flen < 16 && vlen < 16);
    memcpy(g->pairs[g->n][0], f, flen);
    g->pairs[g->n][0][flen] = '\0';
    memcpy(g->pairs[g->n][1], v, vlen);
    g->pairs[g->n][1][vlen] = '\0';
    g->n++;
}

static const char *field_of(const got_fields *g, const char *f)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->pairs[i][0], f) == 0)
            return g->pairs[i][1];
    return NULL;
}

static void test_hgetall(void **state)
{
    (void)state;
    cmd_ok("HSET ps:h events 12 segment 2 story %s", "likes");
    ps_redis_sink *s = sink_for(server.port);
    got_fields g = {0};
    assert_int_equal(ps_redis_sink_hgetall(s, "ps:h", on_field, &g), PS_OK);
    assert_int_equal(g.n, 3);
    assert_string_equal(field_of(&g, "events"), "12");
    assert_string_equal(field_of(&g, "segment"), "2");
    assert_string_equal(field_of(&g, "story"), "likes");

    memset(&g, 0, sizeof(g));
    assert_int_equal(ps_redis_sink_hgetall(s, "ps:none", on_field, &g),
                     PS_OK);
    assert_int_equal(g.n, 0);

    cmd_ok("SET ps:str x");
    assert_int_equal(ps_redis_sink_hgetall(s, "ps:str", on_field, &g),
                     PS_ERR_IO);
    assert_non_null(strstr(ps_redis_sink_errstr(s), "WRONGTYPE"));
    ps_redis_stats st;
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.failures, 1);
    ps_redis_sink_destroy(s);
}

/* ------------------------------------------------------------------------
 * Connection management
 * ------------------------------------------------------------------------ */

static void test_auth(void **state)
{
    (void)state;
    static const char *const args[] = {"--requirepass", "s3cret-pw", NULL};
    ps_test_redis r;
    assert_int_equal(ps_test_redis_start(&r, args), 0);
    ps_redis_conf conf = conf_for(r.port);
    char err[256];

    conf.password = "s3cret-pw";
    ps_redis_sink *s = ps_redis_sink_new(&conf, err, sizeof(err));
    if (s == NULL)
        fail_msg("password: %s", err);
    ps_batch *b = hset_batch("ps:auth", "f", "1");
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    ps_redis_sink_destroy(s);

    conf.user = "default"; /* "AUTH user pass" form (ACL) */
    s = ps_redis_sink_new(&conf, err, sizeof(err));
    if (s == NULL)
        fail_msg("user + password: %s", err);
    assert_int_equal(ps_redis_sink_exec(s, b), PS_OK);
    ps_redis_sink_destroy(s);

    conf.user = NULL;
    conf.password = "wrong-pw";
    err[0] = '\0';
    assert_null(ps_redis_sink_new(&conf, err, sizeof(err)));
    assert_non_null(strstr(err, "AUTH failed"));
    assert_non_null(strstr(err, "WRONGPASS"));
    assert_null(strstr(err, "wrong-pw")); /* never echo a secret */

    conf.password = NULL; /* no password: refused at connect, not later */
    err[0] = '\0';
    assert_null(ps_redis_sink_new(&conf, err, sizeof(err)));
    assert_non_null(strstr(err, "NOAUTH"));

    ps_batch_destroy(b);
    ps_test_redis_stop(&r);
}

static void test_connect_refused(void **state)
{
    (void)state;
    int port = ps_test_free_port();
    assert_true(port > 0);
    ps_redis_conf conf = conf_for(port);
    char err[256] = "";
    assert_null(ps_redis_sink_new(&conf, err, sizeof(err)));
    assert_non_null(strstr(err, "connect"));
}

/* Stop the server under a live sink: calls fail (fast, without a connect
 * attempt until the backoff allows one); restart it on the same port and
 * the sink reconnects by itself. */
static void test_reconnect_after_restart(void **state)
{
    (void)state;
    ps_test_redis r;
    assert_int_equal(ps_test_redis_start(&r, NULL), 0);
    int port = r.port;
    ps_redis_sink *s = sink_for(port);
    ps_batch *small = hset_batch("ps:x", "f", "1");
    assert_int_equal(ps_redis_sink_exec(s, small), PS_OK);

    /* A few MB, so writing to the dead socket takes more than one write
     * (EPIPE; SIGPIPE must not kill us). */
    ps_batch *big = ps_batch_new("ps:");
    char val[200];
    memset(val, 'v', sizeof(val));
    for (int i = 0; i < 20000; i++) {
        ps_batch_begin(big, "HSET");
        ps_batch_arg_fmt(big, "ps:big:%d", i);
        ps_batch_arg_cstr(big, "f");
        ps_batch_arg(big, val, sizeof(val));
        ps_batch_end(big);
    }

    ps_test_redis_stop(&r);
    ps_test_sleep_ms(200); /* let the connection's close arrive */
    assert_int_equal(ps_redis_sink_exec(s, big), PS_ERR_IO);
    assert_false(ps_redis_sink_connected(s));

    /* For 450 ms call as fast as we can: every call fails, and connection
     * attempts follow the backoff (0, +100, +200 ms from the first: at most
     * 3, plus one for timer slack). */
    int attempts = 0, calls = 0;
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 < 450) {
        int64_t c0 = mono_ms();
        assert_int_equal(ps_redis_sink_exec(s, small), PS_ERR_IO);
        const char *err = ps_redis_sink_errstr(s);
        if (strstr(err, "next attempt in") == NULL)
            attempts++;
        else
            assert_true(mono_ms() - c0 < 50); /* fail fast */
        calls++;
        ps_test_sleep_ms(1);
    }
    assert_true(attempts >= 2);
    assert_true(attempts <= 4);
    assert_true(calls > attempts);

    char portarg[16];
    snprintf(portarg, sizeof(portarg), "%d", port);
    const char *const args[] = {"--port", portarg, NULL};
    assert_int_equal(ps_test_redis_start(&r, args), 0);
    assert_int_equal(r.port, port);

    /* The restarted server numbers clients from 1 again: the sink's old
     * CLIENT ID now belongs to one of these bystanders, and fencing the
     * old connection must not kill it. */
    enum { BYSTANDERS = 16 };
    redisContext *by[BYSTANDERS];
    struct timeval tv = {5, 0};
    for (int i = 0; i < BYSTANDERS; i++) {
        by[i] = redisConnectWithTimeout("127.0.0.1", port, tv);
        assert_non_null(by[i]);
        assert_int_equal(by[i]->err, 0);
    }

    int64_t deadline = mono_ms() + 10000;
    int rc;
    while ((rc = ps_redis_sink_exec(s, small)) != PS_OK &&
           mono_ms() < deadline)
        ps_test_sleep_ms(20);
    assert_int_equal(rc, PS_OK);
    assert_true(ps_redis_sink_connected(s));
    ps_redis_stats st;
    ps_redis_sink_stats(s, &st);
    assert_int_equal(st.reconnects, 1);
    assert_int_equal(st.transactions, 2);
    assert_true(st.failures >= (unsigned long long)calls);

    for (int i = 0; i < BYSTANDERS; i++) {
        redisReply *pong = redisCommand(by[i], "PING");
        if (pong == NULL)
            fail_msg("bystander %d was killed by the sink's fencing", i);
        assert_int_equal(pong->type, REDIS_REPLY_STATUS);
        freeReplyObject(pong);
        redisFree(by[i]);
    }

    /* Independent check that the write landed on the new server. */
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *rep = redisCommand(c, "HGET ps:x f");
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "1");
    freeReplyObject(rep);
    redisFree(c);

    ps_batch_destroy(big);
    ps_batch_destroy(small);
    ps_redis_sink_destroy(s);
    ps_test_redis_stop(&r);
}

/* A server that stops answering (SIGSTOP) fails the call after
 * io_timeout_ms instead of hanging. */
static void test_io_timeout(void **state)
{
    (void)state;
    ps_test_redis r;
    assert_int_equal(ps_test_redis_start(&r, NULL), 0);
    ps_redis_conf conf = conf_for(r.port);
    conf.io_timeout_ms = 300;
    char err[256];
    ps_redis_sink *s = ps_redis_sink_new(&conf, err, sizeof(err));
    assert_non_null(s);
    ps_batch *b = hset_batch("ps:t", "f", "1");

    assert_int_equal(kill(r.pid, SIGSTOP), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(ps_redis_sink_exec(s, b), PS_ERR_IO);
    int64_t took = mono_ms() - t0;
    assert_int_equal(kill(r.pid, SIGCONT), 0);
    assert_true(took >= 250 && took < 3000);
    assert_non_null(strstr(ps_redis_sink_errstr(s), "timed out"));
    assert_false(ps_redis_sink_connected(s));

    ps_batch_destroy(b);
    ps_redis_sink_destroy(s);
    ps_test_redis_stop(&r);
}

/* ------------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------------ */

static void test_parse_addr(void **state)
{
    (void)state;
    char host[64];
    int port = 0;
    assert_int_equal(ps_redis_parse_addr("localhost:6380", host, sizeof(host),
                                         &port), PS_OK);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 6380);
    assert_int_equal(ps_redis_parse_addr("redis.local", host, sizeof(host),
                                         &port), PS_OK);
    assert_string_equal(host, "redis.local");
    assert_int_equal(port, 6379);
    assert_int_equal(ps_redis_parse_addr("[::1]:7000", host, sizeof(host),
                                         &port), PS_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    assert_int_equal(ps_redis_parse_addr("[::1]", host, sizeof(host), &port),
                     PS_OK);
    assert_int_equal(port, 6379);
    assert_int_equal(ps_redis_parse_addr("10.0.0.1:65535", host,
                                         sizeof(host), &port), PS_OK);
    assert_int_equal(port, 65535);

    static const char *const bad[] = {
        "", "h:", ":6379", "h:0", "h:65536", "h:99999999999", "h:-1",
        "h:abc", "h:12x", "h: 80", "[::1", "[::1]x", "[]:1", "::1",
        "h h:1", "[::1]:"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        port = -7;
        if (ps_redis_parse_addr(bad[i], host, sizeof(host), &port) !=
            PS_ERR_CONFIG)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(port, -7); /* untouched */
    }
    char small[4];
    assert_int_equal(ps_redis_parse_addr("abcd:1", small, sizeof(small),
                                         &port), PS_ERR_CONFIG);
    assert_int_equal(ps_redis_parse_addr("abc:1", small, sizeof(small),
                                         &port), PS_OK);
}

/* ------------------------------------------------------------------------
 * tests/support itself
 * ------------------------------------------------------------------------ */

static void test_support_run(void **state)
{
    (void)state;
    char out[8];
    const char *const echo[] = {"/bin/sh", "-c", "echo hello world", NULL};
    assert_int_equal(ps_test_run(echo, 10, out, sizeof(out)), 0);
    assert_string_equal(out, "hello w"); /* truncated, NUL-terminated */
    const char *const code[] = {"/bin/sh", "-c", "exit 3", NULL};
    assert_int_equal(ps_test_run(code, 10, NULL, 0), 3);
    const char *const sig[] = {"/bin/sh", "-c", "kill -9 $$", NULL};
    assert_int_equal(ps_test_run(sig, 10, NULL, 0), 128 + 9);
    const char *const slow[] = {"/bin/sleep", "30", NULL};
    int64_t t0 = mono_ms();
    assert_int_equal(ps_test_run(slow, 1, NULL, 0), -1);
    assert_true(mono_ms() - t0 < 5000);
    const char *const missing[] = {"/nonexistent/bin", NULL};
    assert_int_equal(ps_test_run(missing, 10, NULL, 0), 127);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_exec_lands, flush_all),
        cmocka_unit_test_setup(test_exec_failing_command, flush_all),
        cmocka_unit_test_setup(test_exec_rejected_aborts, flush_all),
        cmocka_unit_test_setup(test_empty_batch, flush_all),
        cmocka_unit_test_setup(test_thousand_keys_one_transaction, flush_all),
        cmocka_unit_test_setup(test_select_db, flush_all),
        cmocka_unit_test_setup(test_get_many, flush_all),
        cmocka_unit_test_setup(test_get_many_large, flush_all),
        cmocka_unit_test_setup(test_hgetall, flush_all),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_reconnect_after_restart),
        cmocka_unit_test(test_io_timeout),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_support_run),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
