/*
 * test_redis_outage.c -- Redis goes away mid-run; nothing is lost or
 * applied twice.
 *
 * `propstream run` consumes while `propstream gen` produces at a paced
 * rate.  Meanwhile the test
 *   1. freezes Redis (SIGSTOP) for 2.5 s: flushes time out (the reply of
 *      an EXEC may be lost while the EXEC itself runs later), propstream
 *      pauses consumption and reconnects after SIGCONT, fencing off its old
 *      connection and reading its flush token back;
 *   2. stops Redis (SIGTERM, append-only file fsync'd on every write) and
 *      starts it again on the same port from the same data a second later.
 * When every produced record has been counted in ps:metrics, propstream is
 * stopped with SIGTERM (it must exit 0) and every customer's counters,
 * ps:global and ps:metrics are compared with a recount of gen's truth file
 * (every good event, one JSON line each), done here independently.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#define CUSTOMERS 6000
#define RATE "9000" /* records/s: gen runs ~7.5 s */

typedef struct counts {
    long long events, clicks, wishlists, purchases, spend_n;
    double spend_sum;
} counts;

/* fork/exec argv with stdout and stderr to files (NULL: /dev/null). */
static long long hget_ll(redisContext *c, const char *key, const char *field)
{
    redisReply *r = redisCommand(c, "HGET %s %s", key, field);
    long long v = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    if (r != NULL)
        freeReplyObject(r);
    return v;
}

static redisContext *connect_redis(int port)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

/* Independent recount of gen's truth file. */
static long long recount(const char *path, counts *per)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    long long n = 0;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        assert_non_null(o);
        const char *id = json_string_value(json_object_get(o, "customer_id"));
        const char *type = json_string_value(json_object_get(o, "type"));
        json_t *amount = json_object_get(o, "amount");
        assert_non_null(id);
        assert_non_null(type);
        int ix = atoi(id + 1); /* gen's ids are c000001.. */
        assert_true(ix >= 1 && ix <= CUSTOMERS);
        counts *c = &per[ix];
        c->events++;
        if (strcmp(type, "CLICK") == 0)
            c->clicks++;
        else if (strcmp(type, "WISHLIST") == 0)
            c->wishlists++;
        else if (strcmp(type, "PURCHASE") == 0)
            c->purchases++;
        if (json_is_number(amount) &&
            (strcmp(type, "PURCHASE") == 0 || strcmp(type, "SPEND") == 0)) {
            c->spend_n++;
            c->spend_sum += json_number_value(amount);
        }
        json_decref(o);
        n++;
    }
    fclose(f);
    return n;
}

static void test_redis_outage(void **state)
{
    (void)state;
    static const char *const aof[] = {"--appendonly", "yes", "--appendfsync",
                                      "always", NULL};
    static const char *const topics[] = {"events:8", NULL};
    ps_test_redis r1 = {0}, r2 = {0};
    ps_test_broker b = {0};
    char dir[] = "/tmp/ps-outage-XXXXXX";
    char truth[512], summary[512], log[512], addr[64], port_s[16];

    assert_non_null(mkdtemp(dir));
    snprintf(truth, sizeof(truth), "%s/truth.jsonl", dir);
    snprintf(summary, sizeof(summary), "%s/gen.json", dir);
    snprintf(log, sizeof(log), "%s/run.log", dir);
    assert_int_equal(ps_test_redis_start(&r1, aof), 0);
    assert_int_equal(ps_test_broker_start(&b, PS_BIN, 1, topics), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", r1.port);
    snprintf(port_s, sizeof(port_s), "%d", r1.port);

    const char *run_argv[] = {PS_BIN, "run", "-b", b.bootstrap, "-t",
                              "events", "-g", "outage", "-r", addr,
                              "--flush-interval-ms", "50",
                              "--redis-timeout-ms", "500",
                              "--stats-interval-s", "1",
                              "-X", "kafka.session.timeout.ms=6000", NULL};
    pid_t run = ps_test_spawn(run_argv, NULL, log);
    char n_s[16];
    snprintf(n_s, sizeof(n_s), "%d", CUSTOMERS);
    const char *gen_argv[] = {PS_BIN, "gen", "-b", b.bootstrap, "-t",
                              "events", "-n", n_s, "--seed", "11",
                              "--rate", RATE, "--progress-s", "0",
                              "--truth", truth, NULL};
    pid_t gen = ps_test_spawn(gen_argv, summary, NULL);

    /* 1. freeze Redis mid-run */
    ps_test_sleep_ms(3500);
    kill(r1.pid, SIGSTOP);
    ps_test_sleep_ms(2500);
    kill(r1.pid, SIGCONT);
    /* 2. stop it, then start it again from its append-only file */
    ps_test_sleep_ms(1000);
    kill(r1.pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(r1.pid, &st, 0), r1.pid);
    r1.pid = 0;
    ps_test_sleep_ms(1000);
    const char *again[] = {"--appendonly", "yes", "--appendfsync", "always",
                           "--port", port_s, "--dir", r1.dir, NULL};
    assert_int_equal(ps_test_redis_start(&r2, again), 0);

    assert_int_equal(ps_test_wait_exit(gen, 60000), 0);
    FILE *f = fopen(summary, "r");
    assert_non_null(f);
    json_error_t jerr;
    json_t *sum = json_loadf(f, 0, &jerr);
    fclose(f);
    assert_non_null(sum);
    long long records = json_integer_value(json_object_get(sum, "records"));
    long long good = json_integer_value(json_object_get(sum, "good"));
    json_decref(sum);
    assert_true(records > 40000);

    /* wait until everything produced has been counted, then stop */
    redisContext *c = connect_redis(r2.port);
    long long in = -1;
    for (int t = 0; t < 60000 && in < records; t += 200) {
        in = hget_ll(c, "ps:metrics", "events_in");
        ps_test_sleep_ms(200);
    }
    kill(run, SIGTERM);
    int rc = ps_test_wait_exit(run, 30000);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "grep -c 'Redis unavailable' %s >/dev/null",
             log);
    int outage_seen = system(cmd) == 0;
    if (rc != 0 || in != records || !outage_seen) {
        snprintf(cmd, sizeof(cmd), "tail -n 40 %s >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no run log)\n");
    }
    snprintf(cmd, sizeof(cmd),
             "grep -E 'Redis unavailable|Redis is back|had landed' %s | "
             "cut -c1-160 | sort | uniq -c | sort -rn | head -n 8", log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no outage lines)\n");
    assert_int_equal(rc, 0);
    assert_true(outage_seen); /* the outage really hit a flush */
    assert_int_equal(in, records);

    /* the recount */
    counts *per = calloc(CUSTOMERS + 1, sizeof(*per));
    assert_non_null(per);
    assert_int_equal(recount(truth, per), good);
    assert_int_equal(hget_ll(c, "ps:metrics", "events_applied"), good);
    assert_int_equal(hget_ll(c, "ps:metrics", "events_bad"), 0);
    assert_int_equal(hget_ll(c, "ps:global", "events"), good);
    int checked = 0;
    for (int i = 1; i <= CUSTOMERS; i++) {
        if (per[i].events == 0)
            continue;
        char key[64];
        snprintf(key, sizeof(key), "ps:cust:c%06d", i);
        redisReply *r = redisCommand(c, "HMGET %s events clicks wishlists "
                                        "purchases spend_n spend_sum",
                                     key);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        for (size_t k = 0; k < 6; k++)
            assert_int_equal(r->element[k]->type, REDIS_REPLY_STRING);
        long long want[5] = {per[i].events, per[i].clicks, per[i].wishlists,
                             per[i].purchases, per[i].spend_n};
        for (int k = 0; k < 5; k++)
            if (strtoll(r->element[k]->str, NULL, 10) != want[k])
                fail_msg("%s field %d: redis %s, recount %lld", key, k,
                         r->element[k]->str, want[k]);
        double sum_r = strtod(r->element[5]->str, NULL);
        if (fabs(sum_r - per[i].spend_sum) > 1e-9 * (1 + per[i].spend_sum))
            fail_msg("%s spend_sum: redis %.17g, recount %.17g", key, sum_r,
                     per[i].spend_sum);
        freeReplyObject(r);
        checked++;
    }
    assert_true(checked > CUSTOMERS / 2);
    printf("outage test: %lld records, %d customers equal the recount\n",
           records, checked);

    free(per);
    redisFree(c);
    ps_test_broker_stop(&b);
    ps_test_redis_stop(&r2);
    ps_test_redis_stop(&r1); /* removes the data directory */
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_outage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
