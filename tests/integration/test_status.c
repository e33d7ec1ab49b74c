/*
 * test_status.c -- `propstream status`, checked against Redis itself.
 *
 * The group setup starts a redis-server and `propstream broker` on free
 * loopback ports, generates events with `propstream gen` (2 % malformed
 * records of every kind) and runs `propstream run -e` over them, so Redis
 * holds what a real deployment writes.  Then each test runs `propstream
 * status` as a separate process and compares what it prints with what the
 * test reads from Redis with hiredis on its own:
 *
 *   test_json_matches_redis  --once --json: every figure (metrics fields,
 *                            bad per reason, XLEN ps:dlq, ps:global P(purchase)
 *                            per path, every ps:segment:* found by SCAN with
 *                            its name and size, trigger counts by type over
 *                            the window, the most recent trigger) equals the
 *                            stored value.
 *   test_text_once           --once as text: exit 0, names every segment,
 *                            shows the counters.
 *   test_live_json           without --once: one JSON line per refresh;
 *                            from the second one on, events/s equals the
 *                            growth of events_in over the time between them
 *                            (the test raises it like flushes do) and is 0
 *                            when idle; exit 0 on SIGTERM.
 *   test_errors              unreachable Redis (exit 1, names the address),
 *                            malformed address and unknown option (exit 2),
 *                            empty prefix and keys of the wrong type (exit 0,
 *                            no crash), a password-protected Redis (right
 *                            password works, wrong one exits 1, neither is
 *                            ever printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif

typedef struct world {
    ps_test_redis redis;
    ps_test_broker broker;
    bool have_redis, have_broker;
    char redis_addr[64];
    redisContext *rc;
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

static long long xlen(redisContext *c, const char *key)
{
    redisReply *r = cmd(c, "XLEN %s", key);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* A stored value and a JSON value are the same number / string. */
static void expect_same(const char *what, const char *stored, json_t *j)
{
    if (stored == NULL) {
        if (!json_is_null(j))
            fail_msg("%s: absent in Redis, status says %s", what,
                     json_dumps(j, JSON_ENCODE_ANY));
        return;
    }
    long long ll;
    double d;
    if (ps_test_parse_ll(stored, &ll)) {
        if (!json_is_integer(j) || json_integer_value(j) != ll)
            fail_msg("%s: Redis has %s, status says %s", what, stored,
                     j ? json_dumps(j, JSON_ENCODE_ANY) : "(missing)");
    } else if (ps_test_parse_dbl(stored, &d)) {
        if (!json_is_real(j) || json_real_value(j) != d)
            fail_msg("%s: Redis has %s, status says %s", what, stored,
                     j ? json_dumps(j, JSON_ENCODE_ANY) : "(missing)");
    } else if (!json_is_string(j) || strcmp(json_string_value(j), stored)) {
        fail_msg("%s: Redis has '%s', status says %s", what, stored,
                 j ? json_dumps(j, JSON_ENCODE_ANY) : "(missing)");
    }
}

/* HGETALL key as a reply (array of field, value). */
static redisReply *hgetall(redisContext *c, const char *key)
{
    redisReply *r = cmd(c, "HGETALL %s", key);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static const char *hfield(const redisReply *h, const char *field)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (strcmp(h->element[i]->str, field) == 0)
            return h->element[i + 1]->str;
    return NULL;
}

/* `propstream status ARGS... -r <addr>` with stdout only. */
static int run_status(const world *w, const char *const *args, char *out,
                      size_t out_size)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = PS_BIN;
    argv[n++] = "status";
    argv[n++] = "-r";
    argv[n++] = w->redis_addr;
    for (int i = 0; args[i] != NULL && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return ps_test_run(argv, 30, out, out_size);
}

static json_t *parse_json(const char *txt)
{
    json_error_t err;
    json_t *j = json_loads(txt, 0, &err);
    if (j == NULL)
        fail_msg("status output is not JSON (%s at line %d): %.2000s", err.text,
                 err.line, txt);
    return j;
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

static int group_setup(void **state)
{
    static const char *const topics[] = {"events:4", NULL};
    static char out[1 << 16];
    world *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    *state = w;
    w->t0 = ps_test_now_s();
    if (ps_test_redis_start(&w->redis, NULL) != 0) {
        print_error("cannot start redis-server\n");
        return -1;
    }
    w->have_redis = true;
    snprintf(w->redis_addr, sizeof(w->redis_addr), "127.0.0.1:%d",
             w->redis.port);
    if (ps_test_broker_start(&w->broker, PS_BIN, 1, topics) != 0) {
        print_error("cannot start propstream broker\n");
        return -1;
    }
    w->have_broker = true;

    const char *gen[] = {PS_BIN,      "gen",    "-b",    w->broker.bootstrap,
                         "-t",        "events", "-n",    "400",
                         "--seed",    "11",     "--bad", "0.02",
                         "--bad-mix", "all",    NULL};
    int rc = ps_test_run(gen, 60, out, sizeof(out));
    if (rc != 0) {
        print_error("propstream gen exited %d\n", rc);
        return -1;
    }
    const char *run[] = {PS_BIN,
                         "run",
                         "-b",
                         w->broker.bootstrap,
                         "-t",
                         "events",
                         "-g",
                         "status-test",
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
    rc = ps_test_run_capture(run, 120, out, sizeof(out), &el);
    print_message("    gen + run: exit %d after %.1f s\n", rc, el);
    if (rc != 0) {
        print_error("propstream run exited %d:\n%s\n", rc,
                    ps_test_tail(out, 3000));
        return -1;
    }
    struct timeval tv = {5, 0};
    w->rc = redisConnectWithTimeout("127.0.0.1", w->redis.port, tv);
    if (w->rc == NULL || w->rc->err) {
        print_error("hiredis connect failed\n");
        return -1;
    }
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

static void test_json_matches_redis(void **state)
{
    world *w = *state;
    redisContext *c = w->rc;
    const char *args[] = {"--once", "--json", "--recent", "3", NULL};
    int rc = run_status(w, args, out_buf, sizeof(out_buf));
    assert_int_equal(rc, 0);
    print_lines(out_buf);
    json_t *j = parse_json(out_buf);

    /* the convenience figures and the whole metrics hash */
    redisReply *m = hgetall(c, "ps:metrics");
    assert_true(m->elements > 0);
    static const char *const tops[][2] = {
        {"events_in", "events_in"},
        {"events_applied", "events_applied"},
        {"bad", "events_bad"},
        {"dup", "events_dup"},
        {"late", "events_late"},
        {"lost_retention", "events_lost_retention"},
        {"rollbacks", "redis_rollbacks"},
        {"lag", "lag"},
        {"watermark", "watermark"},
        {"flushes", "flushes"},
        {"last_flush_ms", "last_flush_ms"}};
    for (size_t i = 0; i < sizeof(tops) / sizeof(tops[0]); i++)
        expect_same(tops[i][0], hfield(m, tops[i][1]),
                    json_object_get(j, tops[i][0]));
    long long bad = 0;
    assert_true(ps_test_parse_ll(hfield(m, "events_bad"), &bad));
    assert_true(bad > 0);
    json_t *jm = json_object_get(j, "metrics");
    json_t *by = json_object_get(j, "bad_by_reason");
    assert_int_equal(json_object_size(jm), m->elements / 2);
    size_t reasons = 0;
    for (size_t i = 0; i + 1 < m->elements; i += 2) {
        const char *f = m->element[i]->str, *v = m->element[i + 1]->str;
        expect_same(f, v, json_object_get(jm, f));
        if (strncmp(f, "events_bad_", 11) == 0) {
            expect_same(f, v, json_object_get(by, f + 11));
            reasons++;
        }
    }
    assert_true(reasons >= 5); /* --bad-mix all: every reason */
    assert_int_equal(json_object_size(by), reasons);
    assert_true(json_is_null(json_object_get(j, "events_per_s")));
    double age = json_real_value(json_object_get(j, "last_flush_age_s"));
    assert_true(age >= 0 && age < 120);
    freeReplyObject(m);

    /* dead letters */
    long long dlq = xlen(c, "ps:dlq");
    assert_int_equal(dlq, bad);
    assert_int_equal(json_integer_value(json_object_get(j, "dlq_length")), dlq);

    /* global P(purchase) per path */
    redisReply *g = hgetall(c, "ps:global");
    json_t *jg = json_object_get(j, "global");
    static const char *const gf[] = {
        "events",        "trials",        "successes",    "p_purchase",
        "p_purchase_lo", "p_purchase_hi", "p_purchase_c", "p_purchase_w",
        "p_purchase_cw", "watermark"};
    for (size_t i = 0; i < sizeof(gf) / sizeof(gf[0]); i++) {
        assert_non_null(hfield(g, gf[i]));
        expect_same(gf[i], hfield(g, gf[i]), json_object_get(jg, gf[i]));
    }
    freeReplyObject(g);

    /* segments: every ps:segment:{k} hash, found independently by SCAN */
    json_t *segs = json_object_get(j, "segments");
    assert_true(json_is_array(segs));
    redisReply *keys = cmd(c, "KEYS ps:segment:*");
    size_t nseg = 0;
    for (size_t i = 0; i < keys->elements; i++) {
        const char *key = keys->element[i]->str;
        if (strchr(key + strlen("ps:segment:"), ':') != NULL)
            continue;
        nseg++;
        json_t *found = NULL;
        size_t ix;
        json_t *e;
        json_array_foreach(segs, ix, e)
        {
            if (strcmp(json_string_value(json_object_get(e, "key")), key) == 0)
                found = e;
        }
        if (found == NULL)
            fail_msg("%s is not in status's segments", key);
        redisReply *h = hgetall(c, key);
        assert_int_equal(json_integer_value(json_object_get(found, "id")),
                         atoi(key + strlen("ps:segment:")));
        expect_same("segment name", hfield(h, "name"),
                    json_object_get(found, "name"));
        expect_same("segment size", hfield(h, "size"),
                    json_object_get(found, "size"));
        expect_same("segment p_purchase", hfield(h, "p_purchase"),
                    json_object_get(found, "p_purchase"));
        expect_same("segment spend_mean", hfield(h, "spend_mean"),
                    json_object_get(found, "spend_mean"));
        freeReplyObject(h);
    }
    assert_int_equal(nseg, 3);
    assert_int_equal(json_array_size(segs), nseg);
    freeReplyObject(keys);

    /* triggers: length, counts by type over the last 1000, newest first */
    json_t *jt = json_object_get(j, "triggers");
    long long tl = xlen(c, "ps:triggers");
    assert_true(tl > 0);
    assert_int_equal(json_integer_value(json_object_get(jt, "length")), tl);
    redisReply *tr = cmd(c, "XREVRANGE ps:triggers + - COUNT 1000");
    assert_int_equal(json_integer_value(json_object_get(jt, "window")),
                     (long long)tr->elements);
    json_t *want = json_object();
    for (size_t i = 0; i < tr->elements; i++) {
        const char *type = hfield(tr->element[i]->element[1], "type");
        assert_non_null(type);
        json_t *n = json_object_get(want, type);
        json_object_set_new(want, type,
                            json_integer(n ? json_integer_value(n) + 1 : 1));
    }
    if (!json_equal(want, json_object_get(jt, "by_type")))
        fail_msg("trigger counts: Redis %s, status %s", json_dumps(want, 0),
                 json_dumps(json_object_get(jt, "by_type"), 0));
    json_decref(want);
    json_t *recent = json_object_get(jt, "recent");
    assert_int_equal(json_array_size(recent), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(recent, i);
        const redisReply *re = tr->element[i];
        assert_string_equal(json_string_value(json_object_get(e, "id")),
                            re->element[0]->str);
        const redisReply *f = re->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str, *v = f->element[k + 1]->str;
            json_t *jv = json_object_get(e, name);
            if (strcmp(name, "score") == 0 || strcmp(name, "ts") == 0 ||
                strcmp(name, "opened_ts") == 0)
                expect_same(name, v, jv);
            else if (!json_is_string(jv) || strcmp(json_string_value(jv), v))
                fail_msg("trigger %s: Redis '%s', status %s", name, v,
                         jv ? json_dumps(jv, JSON_ENCODE_ANY) : "(missing)");
        }
    }
    freeReplyObject(tr);
    json_decref(j);
}

static void test_text_once(void **state)
{
    world *w = *state;
    const char *args[] = {"--once", NULL};
    int rc = run_status(w, args, out_buf, sizeof(out_buf));
    if (rc != 0)
        fail_msg("status --once exited %d: %s", rc, out_buf);
    redisReply *keys = cmd(w->rc, "KEYS ps:segment:*");
    assert_true(keys->elements >= 3);
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *name = cmd(w->rc, "HGET %s name", keys->element[i]->str);
        assert_int_equal(name->type, REDIS_REPLY_STRING);
        if (strstr(out_buf, name->str) == NULL)
            fail_msg("segment name '%s' missing from:\n%s", name->str, out_buf);
        freeReplyObject(name);
    }
    freeReplyObject(keys);
    redisReply *in = cmd(w->rc, "HGET ps:metrics events_in");
    char want[64];
    snprintf(want, sizeof(want), "in %s", in->str);
    assert_non_null(strstr(out_buf, want));
    freeReplyObject(in);
    assert_non_null(strstr(out_buf, "P(purchase)"));
    assert_non_null(strstr(out_buf, "ps:dlq"));
    assert_non_null(strstr(out_buf, "high_intent"));
    print_lines(out_buf);
}

static void test_live_json(void **state)
{
    world *w = *state;
    char path[128];
    snprintf(path, sizeof(path), "/tmp/ps-status-live-%d.jsonl", (int)getpid());
    const char *argv[] = {PS_BIN,   "status",       "-r",  w->redis_addr,
                          "--json", "--interval-s", "0.2", NULL};
    pid_t pid = ps_test_spawn(argv, path, NULL);
    assert_true(pid > 0);
    /* idle for 0.7 s, then events_in grows by 50 every 50 ms for 1 s (what
     * flushes of a running processor do), then idle again */
    ps_test_sleep_ms(700);
    long long added = 0;
    for (int i = 0; i < 20; i++) {
        freeReplyObject(cmd(w->rc, "HINCRBY ps:metrics events_in 50"));
        added += 50;
        ps_test_sleep_ms(50);
    }
    ps_test_sleep_ms(700);
    kill(pid, SIGTERM);
    int rc = ps_test_wait_exit(pid, 5000);
    freeReplyObject(cmd(w->rc, "HINCRBY ps:metrics events_in %lld", -added));
    assert_int_equal(rc, 0);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0, idle = 0, busy = 0;
    long long prev_in = 0, prev_t = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = parse_json(line);
        json_t *rate = json_object_get(j, "events_per_s");
        long long in = json_integer_value(json_object_get(j, "events_in"));
        long long t = json_integer_value(json_object_get(j, "time_ms"));
        if (lines == 0) {
            assert_true(json_is_null(rate));
        } else {
            assert_true(json_is_number(rate));
            double r = json_number_value(rate);
            if (in == prev_in) {
                assert_true(r == 0.0);
                idle++;
            } else {
                /* the rate is measured on the monotonic clock, time_ms on
                 * the wall clock: equal up to rounding */
                double want =
                    (double)(in - prev_in) * 1000.0 / (double)(t - prev_t);
                if (fabs(r - want) > 0.1 * want + 10)
                    fail_msg("refresh %d: events/s %.1f, events_in grew %lld "
                             "in %lld ms (%.1f/s)",
                             lines, r, in - prev_in, t - prev_t, want);
                busy++;
            }
        }
        prev_in = in;
        prev_t = t;
        json_decref(j);
        lines++;
    }
    free(line);
    fclose(f);
    unlink(path);
    print_message("    %d refreshes in 2.4 s: %d idle, %d with events\n", lines,
                  idle, busy);
    assert_true(idle >= 2);
    assert_true(busy >= 2);
}

/* argv (after "status") must exit with want and its output (stdout and
 * stderr) contain every word of must and none of must_not. */
static void expect_run(const char *what, const char *const *args, int want,
                       const char *const *must, const char *const *must_not)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = PS_BIN;
    argv[n++] = "status";
    for (int i = 0; args[i] != NULL && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    double el = 0;
    int rc = ps_test_run_capture(argv, 30, out_buf, sizeof(out_buf), &el);
    print_message("    %s: exit %d after %.2f s: %s", what, rc, el,
                  ps_test_tail(out_buf, 200));
    if (rc != want)
        fail_msg("%s: exit %d, want %d:\n%s", what, rc, want, out_buf);
    for (int i = 0; must && must[i]; i++)
        if (strstr(out_buf, must[i]) == NULL)
            fail_msg("%s: output lacks '%s':\n%s", what, must[i], out_buf);
    for (int i = 0; must_not && must_not[i]; i++)
        if (strstr(out_buf, must_not[i]) != NULL)
            fail_msg("%s: output shows '%s':\n%s", what, must_not[i], out_buf);
}

static void test_errors(void **state)
{
    world *w = *state;
    char dead[64];
    int port = ps_test_free_port();
    assert_true(port > 0);
    snprintf(dead, sizeof(dead), "127.0.0.1:%d", port);
    {
        const char *args[] = {"-r", dead, "--once", NULL};
        const char *must[] = {"Redis", dead, NULL};
        expect_run("unreachable Redis", args, 1, must, NULL);
    }
    {
        const char *args[] = {"-r", dead, NULL}; /* live mode too */
        const char *must[] = {"Redis", dead, NULL};
        expect_run("unreachable Redis, live", args, 1, must, NULL);
    }
    {
        const char *args[] = {"-r", "host:port:extra", "--once", NULL};
        const char *must[] = {"--redis", NULL};
        expect_run("malformed address", args, 2, must, NULL);
    }
    {
        const char *args[] = {"--no-such", "--once", NULL};
        const char *must[] = {"no-such", NULL};
        expect_run("unknown option", args, 2, must, NULL);
    }
    {
        const char *args[] = {"--interval-s", "0", NULL};
        const char *must[] = {"interval-s", NULL};
        expect_run("interval out of range", args, 2, must, NULL);
    }
    {
        const char *args[] = {"-r",       w->redis_addr, "--prefix",
                              "nothing:", "--once",      NULL};
        const char *must[] = {"no nothing:metrics", NULL};
        expect_run("empty prefix", args, 0, must, NULL);
    }
    {
        const char *args[] = {"-r",     w->redis_addr, "--prefix", "nothing:",
                              "--once", "--json",      NULL};
        const char *must[] = {"\"dlq_length\": 0", "\"segments\": []", NULL};
        expect_run("empty prefix, json", args, 0, must, NULL);
    }
    {
        /* keys of the wrong type must not crash the view */
        freeReplyObject(cmd(w->rc, "SET odd:metrics x"));
        freeReplyObject(cmd(w->rc, "SET odd:dlq y"));
        freeReplyObject(cmd(w->rc, "HSET odd:triggers a b"));
        freeReplyObject(cmd(w->rc, "XADD odd:segment:1 * no fields"));
        const char *args[] = {"-r",   w->redis_addr, "--prefix",
                              "odd:", "--once",      NULL};
        const char *must[] = {"WRONGTYPE", NULL};
        expect_run("wrong key types", args, 0, must, NULL);
        const char *args2[] = {
            "-r", w->redis_addr, "--prefix", "odd:", "--once", "--json", NULL};
        const char *must2[] = {"\"warning\"", NULL};
        expect_run("wrong key types, json", args2, 0, must2, NULL);
    }

    /* a password-protected Redis */
    ps_test_redis pr;
    static const char *const extra[] = {"--requirepass", "s3cret-PW", NULL};
    assert_int_equal(ps_test_redis_start(&pr, extra), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", pr.port);
    {
        const char *args[] = {"-r",        addr,     "--redis-password",
                              "s3cret-PW", "--once", NULL};
        const char *must_not[] = {"s3cret", NULL};
        expect_run("right password", args, 0, NULL, must_not);
    }
    {
        const char *args[] = {"-r",       addr,     "--redis-password",
                              "wrong-PW", "--once", NULL};
        const char *must[] = {"AUTH", NULL};
        const char *must_not[] = {"wrong-PW", "s3cret", NULL};
        expect_run("wrong password", args, 1, must, must_not);
    }
    {
        const char *args[] = {"-r", addr, "--once", NULL};
        const char *must[] = {"NOAUTH", NULL};
        expect_run("no password", args, 1, must, NULL);
    }
    {
        const char *args[] = {
            "-r", addr, "--redis-password", "s3cret-PW", "--print-config",
            NULL};
        const char *must_not[] = {"s3cret", NULL};
        expect_run("print-config", args, 0, NULL, must_not);
    }
    ps_test_redis_stop(&pr);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_matches_redis),
        cmocka_unit_test(test_text_once),
        cmocka_unit_test(test_live_json),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("status", tests, group_setup,
                                       group_teardown);
}
