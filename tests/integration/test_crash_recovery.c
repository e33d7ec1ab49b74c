/*
 * test_crash_recovery.c -- crashes, restarts and faults lose and double
 * nothing (contract section 4, issue 7).
 *
 * Every test feeds one generated topic (`propstream gen`, fixed seed, some
 * bad records) to two consumer groups writing under two key prefixes of
 * the same Redis:
 *
 *   ref:  one uninterrupted `propstream run -e` (the reference);
 *   ps:   the run under test, disturbed as the test says.
 *
 * and then compares the two key spaces (compare_runs): every integer field
 * of every customer, product, campaign, global and cohort hash, the
 * metrics counters, the dead letters (each (partition, offset) once), the
 * triggers (each exactly once; the same wishlist_abandoned set), the
 * reverse paths and the co-purchase counts.  Values that depend on the arrival order
 * across partitions (segments, and what derives from them) are left out,
 * as the contract allows: the list is in is_order_dependent().
 *
 *   test_kill9         propstream, with --max-customers 3000 of 27,000,
 *                      is killed with SIGKILL at 10 random
 *                      instants (each once it has flushed progress since
 *                      its start, then after a random 0-400 ms), restarted
 *                      each time, then run to the end.
 *   test_redis_restart while propstream consumes, Redis is shut down
 *                      (SHUTDOWN SAVE: nothing lost) and started again
 *                      3 s later from its data; later it takes a snapshot
 *                      (SAVE), goes on, is killed (SIGKILL) and started
 *                      again from that older snapshot: propstream must
 *                      notice that Redis lost flushes it had confirmed
 *                      (its flush token went back), roll its memory back
 *                      and re-consume from the offsets Redis kept.
 *   test_scale_out     two instances in one group share the 16
 *                      partitions; one is killed (SIGKILL) mid-run and
 *                      started again; at the end both stop on SIGTERM.
 *                      Shared hashes are compared on their counts (the
 *                      values derived from them are each instance's view,
 *                      refreshed every --shared-refresh-ms, and the last
 *                      writer's view may lag the other instance's last
 *                      flush).
 *   test_broker_fault  while propstream consumes, the mock cluster's
 *                      broker 1 goes down for 2 s with every partition's
 *                      leader moved to broker 2, and Fetch and Heartbeat
 *                      requests meet errors (`propstream broker` drills,
 *                      SIGUSR1 and SIGUSR2).
 *
 * The seed of the kill instants is printed, and can be set with
 * PS_TEST_SEED to reproduce a failure; PS_TEST_ONLY=<glob> runs one test.
 *
 * In the suite with the label "slow" (a few minutes; the sanitizer pass
 * skips it).  Cohort windows compare exactly because watermark alignment
 * (consumer/run.c) keeps a backlog in event-time order (`pushed` 0).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif

#define PARTITIONS "16"

/* ------------------------------------------------------------ helpers */

static redisContext *connect_redis(int port)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

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

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fixture: one Redis, one mock cluster with an events topic, a topic full
 * of generated records, and a working directory for logs. */
typedef struct fixture {
    ps_test_redis redis;
    ps_test_broker broker;
    char dir[64];
    long long records, good, bad;
    char port[16], addr[64];
} fixture;

static void fixture_servers(fixture *f)
{
    static const char *const args[] = {"--appendonly", "no", NULL};
    static const char *const topics[] = {"events:" PARTITIONS, NULL};
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ps-crash-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(ps_test_redis_start(&f->redis, args), 0);
    assert_int_equal(ps_test_broker_start(&f->broker, PS_BIN, 3, topics), 0);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", f->redis.port);
    snprintf(f->port, sizeof(f->port), "%d", f->redis.port);
}

/* `propstream gen` of this many customers (fixed seed, 0.5 % bad records)
 * into the topic, at rate records/s ("0": as fast as it can), in the
 * background; its JSON summary goes to dir/gen.json. */
static pid_t fixture_gen(fixture *f, int customers, const char *rate)
{
    char n_s[16], summary[128];
    snprintf(n_s, sizeof(n_s), "%d", customers);
    snprintf(summary, sizeof(summary), "%s/gen.json", f->dir);
    const char *gen[] = {PS_BIN, "gen", "-b", f->broker.bootstrap, "-t",
                         "events", "-n", n_s, "--seed", "23", "--bad",
                         "0.005", "--rate", rate, "--progress-s", "0", NULL};
    pid_t pid = ps_test_spawn(gen, summary, NULL);
    assert_true(pid > 0);
    return pid;
}

/* Wait for gen to finish and read how many records it wrote. */
static void fixture_gen_wait(fixture *f, pid_t gen)
{
    char path[128], out[4096];
    assert_int_equal(ps_test_wait_exit(gen, 300000), 0);
    snprintf(path, sizeof(path), "%s/gen.json", f->dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(out, 1, sizeof(out) - 1, fp);
    fclose(fp);
    out[n] = '\0';
    const char *p = strstr(out, "\"records\":");
    assert_non_null(p);
    f->records = strtoll(p + 10, NULL, 10);
    p = strstr(out, "\"good\":");
    assert_non_null(p);
    f->good = strtoll(p + 7, NULL, 10);
    f->bad = f->records - f->good;
    printf("topic: %lld records (%lld good) in %s partitions\n", f->records,
           f->good, PARTITIONS);
}

static void fixture_stop(fixture *f)
{
    char cmd[256];
    ps_test_broker_stop(&f->broker);
    ps_test_redis_stop(&f->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
}

/* argv of `propstream run` for group g / prefix pre, plus extra args. */
static int run_argv(const fixture *f, const char *group, const char *prefix,
                    bool to_end, const char **argv)
{
    int n = 0;
    argv[n++] = PS_BIN;
    argv[n++] = "run";
    argv[n++] = "-b";
    argv[n++] = f->broker.bootstrap;
    argv[n++] = "-t";
    argv[n++] = "events";
    argv[n++] = "-g";
    argv[n++] = group;
    argv[n++] = "-r";
    argv[n++] = f->addr;
    argv[n++] = "--prefix";
    argv[n++] = prefix;
    argv[n++] = "--stream-maxlen";
    argv[n++] = "100000000";
    argv[n++] = "--stats-interval-s";
    argv[n++] = "1";
    /* librdkafka 2.0.2's mock cluster makes a group's next member wait
     * for the previous member's session to expire, even after a clean
     * close: keep sessions short. */
    argv[n++] = "-X";
    argv[n++] = "kafka.session.timeout.ms=6000";
    if (to_end)
        argv[n++] = "-e";
    argv[n] = NULL;
    return n;
}

static void log_path(const fixture *f, const char *name, char *out,
                     size_t size)
{
    snprintf(out, size, "%s/%s.log", f->dir, name);
}

static void show_log(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "tail -n 30 %s >&2", path);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log %s)\n", path);
}

/* Run to the end of the topic (-e): must exit 0 within timeout_s. */
static void run_to_end(const fixture *f, const char *group,
                       const char *prefix, const char *logname,
                       int timeout_s)
{
    const char *argv[32];
    char log[256];
    run_argv(f, group, prefix, true, argv);
    log_path(f, logname, log, sizeof(log));
    pid_t pid = ps_test_spawn(argv, NULL, log);
    assert_true(pid > 0);
    int rc = ps_test_wait_exit(pid, timeout_s * 1000);
    if (rc != 0) {
        show_log(log);
        fail_msg("propstream run (%s) exited %d", logname, rc);
    }
}

/* ------------------------------------------------------------ compare */

/* String list, for keys and stream entries. */
typedef struct strs {
    char **v;
    size_t n, cap;
} strs;

static void strs_add(strs *s, const char *p, size_t len)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        assert_non_null(s->v);
    }
    s->v[s->n] = malloc(len + 1);
    assert_non_null(s->v[s->n]);
    memcpy(s->v[s->n], p, len);
    s->v[s->n][len] = '\0';
    s->n++;
}

static void strs_free(strs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every key with this prefix, without the prefix, sorted. */
static void scan_keys(redisContext *c, const char *prefix, strs *out)
{
    char cursor[32] = "0", pattern[64];
    size_t pl = strlen(prefix);
    snprintf(pattern, sizeof(pattern), "%s*", prefix);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor,
                                     pattern);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++)
            strs_add(out, keys->element[i]->str + pl,
                     keys->element[i]->len - pl);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    qsort(out->v, out->n, sizeof(*out->v), cmp_str);
}

/* Fields whose value depends on the arrival order across partitions or on
 * wall-clock time (the contract lets them differ as two clean runs may):
 * everything derived from segment membership or centroids, the whole
 * graph of a customer's neighbourhood ranking, and flush bookkeeping. */
static bool is_order_dependent(const char *key, const char *field)
{
    static const char *const fields[] = {
        "segment", "segment_name", "story", "next_click", "next_wishlist",
        "next_purchase", "next_spend", "also_state", "last_path_p", NULL};
    if (strncmp(key, "segment:", 8) == 0)
        return true;
    if (strstr(key, ":seg:") != NULL) /* cohort x segment windows */
        return true;
    for (int i = 0; fields[i] != NULL; i++)
        if (strcmp(field, fields[i]) == 0)
            return true;
    if (strncmp(field, "centroid", 8) == 0)
        return true;
    return false;
}

/* Hashes compared field by field: the per-entity hashes. */
static bool is_entity_hash(const char *key)
{
    return strncmp(key, "cust:", 5) == 0 || strncmp(key, "prod:", 5) == 0 ||
           strncmp(key, "campaign:", 9) == 0 || strcmp(key, "global") == 0 ||
           strncmp(key, "cohort:", 7) == 0;
}

typedef struct diffs {
    long long keys, fields, mismatches, missing;
    char first[8][512];
    char names[32][64]; /* distinct mismatching fields, for the report */
    char example[32][200];
    long long name_n[32];
    int nnames;
} diffs;

static void note_field(diffs *d, const char *key, const char *field,
                       const char *va, const char *vb)
{
    for (int i = 0; i < d->nnames; i++)
        if (strcmp(d->names[i], field) == 0) {
            d->name_n[i]++;
            return;
        }
    if (d->nnames < 32) {
        snprintf(d->names[d->nnames], sizeof(d->names[0]), "%s", field);
        snprintf(d->example[d->nnames], sizeof(d->example[0]),
                 "%s: %s vs %s", key, va, vb ? vb : "missing");
        d->name_n[d->nnames++] = 1;
    }
}

static void note_diff(diffs *d, const char *fmt, ...)
{
    if (d->mismatches < 8) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->first[d->mismatches], sizeof(d->first[0]), fmt, ap);
        va_end(ap);
    }
    d->mismatches++;
}

static bool is_number(const char *s, double *out)
{
    return ps_test_parse_dbl(s, out);
}

/* Compare one hash: numeric fields must be equal (integers exactly,
 * decimals to 1e-9 relative: HINCRBYFLOAT sums in another grouping). */
static bool counts_only; /* shared hashes: integer fields only */

static void compare_hash(redisContext *c, const char *a_pre,
                         const char *b_pre, const char *key, diffs *d)
{
    redisReply *ra = redisCommand(c, "HGETALL %s%s", a_pre, key);
    redisReply *rb = redisCommand(c, "HGETALL %s%s", b_pre, key);
    assert_non_null(ra);
    assert_non_null(rb);
    assert_int_equal(ra->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rb->type, REDIS_REPLY_ARRAY);
    d->keys++;
    for (size_t i = 0; i + 1 < ra->elements; i += 2) {
        const char *f = ra->element[i]->str, *va = ra->element[i + 1]->str;
        if (is_order_dependent(key, f))
            continue;
        const char *vb = NULL;
        for (size_t j = 0; j + 1 < rb->elements; j += 2)
            if (strcmp(rb->element[j]->str, f) == 0) {
                vb = rb->element[j + 1]->str;
                break;
            }
        d->fields++;
        long long before = d->mismatches;
        if (vb == NULL) {
            note_diff(d, "%s %s: %s vs missing", key, f, va);
            continue;
        }
        if (counts_only && strcmp(key, "global") == 0 &&
            strcmp(f, "watermark") == 0)
            continue; /* each instance writes its own: the last writer's */
        if (counts_only && strncmp(key, "cust:", 5) != 0 &&
            (strcmp(f, "alpha") == 0 || strcmp(f, "beta") == 0))
            continue; /* prior + counts as this instance saw them */
        long long la, lb;
        double xa, xb;
        if (ps_test_parse_ll(va, &la) && ps_test_parse_ll(vb, &lb)) {
            if (la != lb)
                note_diff(d, "%s %s: %lld vs %lld", key, f, la, lb);
        } else if (counts_only && strncmp(key, "cust:", 5) != 0) {
            /* a derived value of a shared hash: see test_scale_out */
        } else if (is_number(va, &xa) && is_number(vb, &xb)) {
            if (fabs(xa - xb) > 1e-9 * fmax(1.0, fmax(fabs(xa), fabs(xb))))
                note_diff(d, "%s %s: %.17g vs %.17g", key, f, xa, xb);
        } else if (strcmp(va, vb) != 0) {
            note_diff(d, "%s %s: '%s' vs '%s'", key, f, va, vb);
        }
        if (d->mismatches != before)
            note_field(d, key, f, va, vb);
    }
    freeReplyObject(ra);
    freeReplyObject(rb);
}

/* A stream as sorted strings of the chosen fields of each entry. */
static void stream_entries(redisContext *c, const char *key,
                           const char *const *fields, strs *out)
{
    char from[64] = "-";
    for (;;) {
        redisReply *r =
            redisCommand(c, "XRANGE %s %s + COUNT 10000", key, from);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        if (r->elements == 0) {
            freeReplyObject(r);
            break;
        }
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i], *kv = e->element[1];
            char line[1024];
            size_t len = 0;
            for (int k = 0; fields[k] != NULL; k++) {
                const char *v = "";
                for (size_t j = 0; j + 1 < kv->elements; j += 2)
                    if (strcmp(kv->element[j]->str, fields[k]) == 0)
                        v = kv->element[j + 1]->str;
                int n = snprintf(line + len, sizeof(line) - len, "%s%s",
                                 k ? "|" : "", v);
                if (n > 0 && (size_t)n < sizeof(line) - len)
                    len += (size_t)n;
            }
            strs_add(out, line, len);
        }
        /* next page: exclusive start after the last id */
        snprintf(from, sizeof(from), "(%s",
                 r->element[r->elements - 1]->element[0]->str);
        freeReplyObject(r);
    }
    qsort(out->v, out->n, sizeof(*out->v), cmp_str);
}

/* The two streams hold the same entries (by fields), and with unique
 * set, no entry twice. */
static void compare_stream_part(redisContext *c, const char *a_pre,
                                const char *b_pre, const char *name,
                                const char *const *fields, bool unique,
                                long long min_entries, const char *only);

/* Keep only the entries starting with prefix (all when NULL) or, with
 * invert, the others. */
static void strs_filter(strs *s, const char *prefix, bool invert)
{
    size_t k = 0, pl = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; i < s->n; i++) {
        bool match = prefix == NULL || strncmp(s->v[i], prefix, pl) == 0;
        if (match != invert)
            s->v[k++] = s->v[i];
        else
            free(s->v[i]);
    }
    s->n = k;
}

static void compare_stream(redisContext *c, const char *a_pre,
                           const char *b_pre, const char *name,
                           const char *const *fields, bool unique,
                           long long min_entries)
{
    compare_stream_part(c, a_pre, b_pre, name, fields, unique, min_entries,
                        NULL);
}

/* Triggers: each one once (no (type, cause, customer, product) twice).
 * wishlist_abandoned (a funnel with a wishlist expiring) depends on the
 * customer's own events only: the same set as the reference.  high_intent
 * (a funnel's P(purchase), which includes the product's posterior, crossing
 * the threshold) and segment_changed depend on the arrival order across
 * partitions, which the contract lets differ as two clean runs may. */
static void compare_triggers(redisContext *c, const char *a_pre,
                             const char *b_pre)
{
    /* a trigger is identified by all its fields but the stream id: the
     * same sweep event may move a customer twice (say vip -> regular on one
     * instance's model, back on another's), which are two triggers */
    static const char *const trig[] = {"type", "cause", "customer", "product",
                                       "score", "from", "to", NULL};
    /* (its cause, the event that moved the watermark past the expiry, is
     * whichever partition's event did: compared without it; ts is the
     * expiry) */
    static const char *const abandoned[] = {"type", "customer", "product",
                                            "ts", NULL};
    compare_stream_part(c, a_pre, b_pre, "triggers", abandoned, true, 100,
                        "wishlist_abandoned|");
    char kb[128];
    strs b = {0};
    snprintf(kb, sizeof(kb), "%striggers", b_pre);
    stream_entries(c, kb, trig, &b);
    for (size_t i = 1; i < b.n; i++)
        if (strcmp(b.v[i - 1], b.v[i]) == 0)
            fail_msg("%s: entry %s twice", kb, b.v[i]);
    printf("  triggers, each once: %zu\n", b.n);
    assert_true(b.n > 0);
    strs_free(&b);
}

static void compare_stream_part(redisContext *c, const char *a_pre,
                                const char *b_pre, const char *name,
                                const char *const *fields, bool unique,
                                long long min_entries, const char *only)
{
    char ka[128], kb[128];
    strs a = {0}, b = {0};
    snprintf(ka, sizeof(ka), "%s%s", a_pre, name);
    snprintf(kb, sizeof(kb), "%s%s", b_pre, name);
    stream_entries(c, ka, fields, &a);
    stream_entries(c, kb, fields, &b);
    if (only != NULL) {
        strs_filter(&a, only, false);
        strs_filter(&b, only, false);
    }
    printf("  %s%s%s: %zu entries (reference %zu)\n", name,
           only ? " " : "", only ? only : "", b.n, a.n);
    if (unique)
        for (size_t i = 1; i < b.n; i++)
            if (strcmp(b.v[i - 1], b.v[i]) == 0)
                fail_msg("%s: entry %s twice", kb, b.v[i]);
    for (size_t i = 0; i < a.n && i < b.n; i++)
        if (strcmp(a.v[i], b.v[i]) != 0)
            fail_msg("%s: entry %zu differs: %s vs %s", name, i, a.v[i],
                     b.v[i]);
    assert_int_equal(a.n, b.n);
    assert_true((long long)a.n >= min_entries);
    strs_free(&a);
    strs_free(&b);
}

/* Co-purchase counts: ZSCORE of every member of the reference's also
 * sets equals the other run's (ZINCRBY deltas add up exactly; the sets
 * are trimmed to their top N, so only members present in both with the
 * same score count as equal, and the scores of common members must
 * match). */
static void compare_zset_scores(redisContext *c, const char *a_pre,
                                const char *b_pre, const char *key,
                                diffs *d)
{
    redisReply *ra = redisCommand(c, "ZRANGE %s%s 0 -1 WITHSCORES", a_pre,
                                  key);
    assert_non_null(ra);
    d->keys++;
    for (size_t i = 0; i + 1 < ra->elements; i += 2) {
        redisReply *rb = redisCommand(c, "ZSCORE %s%s %s", b_pre, key,
                                      ra->element[i]->str);
        assert_non_null(rb);
        d->fields++;
        if (rb->type == REDIS_REPLY_STRING &&
            strcmp(rb->str, ra->element[i + 1]->str) != 0) {
            char what[300];
            snprintf(what, sizeof(what), "%s %s", key, ra->element[i]->str);
            note_diff(d, "%s: %s vs %s", what, ra->element[i + 1]->str,
                      rb->str);
            note_field(d, what, "(co-purchase score)",
                       ra->element[i + 1]->str, rb->str);
        }
        freeReplyObject(rb);
    }
    freeReplyObject(ra);
}

/* Redis under b_pre equals Redis under a_pre (the reference). */
static void compare_runs(redisContext *c, const fixture *f, const char *a_pre,
                         const char *b_pre)
{
    strs a = {0}, b = {0};
    diffs d = {0};
    scan_keys(c, a_pre, &a);
    scan_keys(c, b_pre, &b);
    size_t j = 0;
    long long hashes = 0;
    for (size_t i = 0; i < a.n; i++) {
        const char *key = a.v[i];
        while (j < b.n && strcmp(b.v[j], key) < 0)
            j++;
        bool in_b = j < b.n && strcmp(b.v[j], key) == 0;
        if (strncmp(key, "state:", 6) == 0 ||
            strncmp(key, "offsets:", 8) == 0 ||
            strncmp(key, "segment:", 8) == 0 || strstr(key, ":seg:") != NULL)
            continue; /* own bookkeeping; segment-dependent */
        if (counts_only && (strstr(key, ":w7d") || strstr(key, ":w30d")))
            continue; /* rolling windows end at each instance's own
                         watermark (README, Scale-out) */
        if (is_entity_hash(key) && strstr(key, ":also") == NULL &&
            strstr(key, ":reco") == NULL && strstr(key, ":intent") == NULL) {
            if (!in_b) {
                if (d.missing++ < 4)
                    fprintf(stderr, "missing under %s: %s\n", b_pre, key);
                continue;
            }
            compare_hash(c, a_pre, b_pre, key, &d);
            hashes++;
        } else if (strstr(key, ":also") != NULL && in_b) {
            compare_zset_scores(c, a_pre, b_pre, key, &d);
        }
    }
    printf("  compared %lld hashes / %lld keys, %lld fields: %lld "
           "mismatches, %lld keys missing\n",
           hashes, d.keys, d.fields, d.mismatches, d.missing);
    for (long long i = 0; i < d.mismatches && i < 8; i++)
        fprintf(stderr, "  mismatch: %s\n", d.first[i]);
    for (int i = 0; i < d.nnames; i++)
        fprintf(stderr, "  field %s: %lld mismatches (e.g. %s)\n",
                d.names[i], d.name_n[i], d.example[i]);
    assert_int_equal(d.missing, 0);
    assert_int_equal(d.mismatches, 0);
    assert_true(hashes > 1000);

    /* metrics: the exact counters (flush counts and times differ) */
    static const char *const metrics[] = {
        "events_in", "events_applied", "events_bad", "events_dup",
        "events_late", "events_lost_retention", NULL};
    char ma[64], mb[64];
    snprintf(ma, sizeof(ma), "%smetrics", a_pre);
    snprintf(mb, sizeof(mb), "%smetrics", b_pre);
    for (int i = 0; metrics[i] != NULL; i++) {
        long long va = hget_ll(c, ma, metrics[i]),
                  vb = hget_ll(c, mb, metrics[i]);
        if (va != vb)
            fail_msg("metrics %s: %lld vs %lld", metrics[i], va, vb);
    }
    assert_int_equal(hget_ll(c, mb, "events_in"), f->records);
    assert_int_equal(hget_ll(c, mb, "events_bad"), f->bad);

    /* streams */
    static const char *const dlq[] = {"partition", "offset", "reason", NULL};
    /* (steps and p are the products' step probabilities at the time:
     * they depend on the order across partitions) */
    static const char *const paths[] = {"customer", "product", "path", "ts",
                                        NULL};
    compare_triggers(c, a_pre, b_pre);
    compare_stream(c, a_pre, b_pre, "dlq", dlq, true, f->bad);
    compare_stream(c, a_pre, b_pre, "paths", paths, false, 100);
    strs_free(&a);
    strs_free(&b);
}

/* ------------------------------------------------------------- tests */

/* The count a life wrote through PS_TEST_PROGRESS_FILE (0 if none). */
static long long read_progress(const char *path)
{
    int64_t v = 0;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return 0;
    if (fread(&v, sizeof(v), 1, fp) != 1)
        v = 0;
    fclose(fp);
    return (long long)v;
}

static void test_kill9(void **state)
{
    (void)state;
    fixture f;
    fixture_servers(&f);
    fixture_gen_wait(&f, fixture_gen(&f, 27000, "0"));
    assert_true(f.records >= 200000);
    redisContext *c = connect_redis(f.redis.port);

    double t0 = ps_test_now_s();
    run_to_end(&f, "ref", "ref:", "ref", 300);
    printf("reference run: %.1f s\n", ps_test_now_s() - t0);

    uint64_t seed = (uint64_t)time(NULL);
    const char *env = getenv("PS_TEST_SEED");
    if (env != NULL)
        seed = strtoull(env, NULL, 10);
    printf("kill instants: PS_TEST_SEED=%" PRIu64 "\n", seed);
    const char *argv[32];
    char log[256];
    int na = run_argv(&f, "crash", "ps:", false, argv);
    /* and a memory bound far below the 27,000 customers: evicted customers
     * come back from Redis, at their next event or when a funnel is due */
    argv[na++] = "--max-customers";
    argv[na++] = "3000";
    argv[na] = NULL;
    /* each life mirrors the records it consumed into this file (a
     * shared mapping, read after the SIGKILL): what it consumed beyond
     * its last flush is consumed again by the next life */
    char progress[256];
    log_path(&f, "progress", progress, sizeof(progress));
    setenv("PS_TEST_PROGRESS_FILE", progress, 1);
    long long reconsumed_sum = 0, reconsumed_max = 0;
    int kills = 0;
    for (int life = 0; kills < 10 && life < 40; life++) {
        long long before = hget_ll(c, "ps:metrics", "events_in");
        if (before >= f.records)
            break; /* all done: no point killing more */
        char name[32];
        snprintf(name, sizeof(name), "life%02d", life);
        log_path(&f, name, log, sizeof(log));
        pid_t pid = ps_test_spawn(argv, NULL, log);
        assert_true(pid > 0);
        /* wait until this life has flushed something, then a random
         * 0-400 ms more */
        long long now = before;
        for (int t = 0; t < 60000 && now <= before; t += 20) {
            ps_test_sleep_ms(20);
            now = hget_ll(c, "ps:metrics", "events_in");
        }
        if (now <= before) {
            show_log(log);
            fail_msg("life %d made no progress", life);
        }
        ps_test_sleep_ms((int)(splitmix64(&seed) % 400));
        kill(pid, SIGKILL);
        int rc = ps_test_wait_exit(pid, 10000);
        assert_int_equal(rc, 128 + SIGKILL);
        long long after = hget_ll(c, "ps:metrics", "events_in");
        long long consumed = read_progress(progress);
        if (before < 0) /* (no ps:metrics yet: nothing flushed) */
            before = 0;
        /* a life cannot have flushed more than it consumed */
        if (consumed < after - before)
            fail_msg("life %d flushed %lld records but consumed only %lld",
                     life, after - before, consumed);
        long long again = consumed - (after - before);
        reconsumed_sum += again;
        if (again > reconsumed_max)
            reconsumed_max = again;
        printf("  kill %d: %lld -> %lld of %lld records flushed; this life "
               "consumed %lld, %lld of them after its last flush (consumed "
               "again)\n",
               kills + 1, before, after, f.records, consumed, again);
        kills++;
    }
    unsetenv("PS_TEST_PROGRESS_FILE");
    assert_int_equal(kills, 10);
    printf("re-consumed after a kill: mean %.0f, max %lld records\n",
           (double)reconsumed_sum / kills, reconsumed_max);
    argv[na++] = "-e";
    argv[na] = NULL;
    log_path(&f, "final", log, sizeof(log));
    pid_t last = ps_test_spawn(argv, NULL, log);
    int rc = ps_test_wait_exit(last, 300000);
    if (rc != 0) {
        show_log(log);
        fail_msg("final run exited %d", rc);
    }

    printf("crash run: %.1f s in all\n", ps_test_now_s() - t0);

    compare_runs(c, &f, "ref:", "ps:");
    redisFree(c);
    fixture_stop(&f);
}

/* Wait until ps:metrics events_in reaches at least want (or timeout). */
static long long wait_events_in(redisContext **c, int port, long long want,
                                int timeout_ms)
{
    long long v = -1;
    for (int t = 0; t < timeout_ms; t += 50) {
        v = hget_ll(*c, "ps:metrics", "events_in");
        if (v >= want)
            break;
        if ((*c)->err) { /* Redis restarted under us: reconnect */
            redisFree(*c);
            *c = connect_redis(port);
        }
        ps_test_sleep_ms(50);
    }
    return v;
}

/* Start redis-server again on f's port, from the data in dir. */
static void redis_again(fixture *f, ps_test_redis *r, const char *dir)
{
    const char *args[] = {"--port", f->port, "--dir", dir, "--appendonly",
                          "no", NULL};
    assert_int_equal(ps_test_redis_start(r, args), 0);
}

static void test_redis_restart(void **state)
{
    (void)state;
    fixture f;
    fixture_servers(&f);
    /* produced at a steady rate while propstream consumes, so flushes
     * stay small and the faults below fall between many of them; slow
     * enough (about 23 s) that on a loaded machine there is still
     * production left after the snapshot */
    pid_t gen = fixture_gen(&f, 12000, "6000");
    redisContext *c = connect_redis(f.redis.port);

    const char *argv[32];
    char log[256];
    run_argv(&f, "restart", "ps:", false, argv);
    log_path(&f, "run", log, sizeof(log));
    pid_t pid = ps_test_spawn(argv, NULL, log);
    assert_true(pid > 0);

    /* 1. a clean restart: nothing lost */
    long long at = wait_events_in(&c, f.redis.port, 25000, 120000);
    redisReply *r = redisCommand(c, "SHUTDOWN SAVE");
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    int st;
    assert_int_equal(waitpid(f.redis.pid, &st, 0), f.redis.pid);
    f.redis.pid = 0;
    printf("Redis shut down at %lld records; 3 s without it\n", at);
    ps_test_sleep_ms(3000);
    ps_test_redis r2 = {0}, r3 = {0};
    redis_again(&f, &r2, f.redis.dir);
    c = connect_redis(r2.port);

    /* 2. a snapshot, more flushes, then a crash back to the snapshot */
    wait_events_in(&c, r2.port, 60000, 120000);
    r = redisCommand(c, "SAVE");
    assert_non_null(r);
    freeReplyObject(r);
    long long snap = hget_ll(c, "ps:metrics", "events_in");
    long long snap_flushes = hget_ll(c, "ps:metrics", "flushes");
    long long lost = wait_events_in(&c, r2.port, snap + 15000, 120000);
    if (lost < snap + 15000)
        fail_msg("only %lld records consumed after the snapshot at %lld "
                 "(production over too early?)", lost - snap, snap);
    /* two more flushes: the first of them is then surely confirmed to
     * propstream (the second starts only after that), so Redis loses a
     * flush it had acknowledged */
    for (int t = 0; t < 60000; t += 50) {
        if (hget_ll(c, "ps:metrics", "flushes") >= snap_flushes + 2)
            break;
        ps_test_sleep_ms(50);
    }
    lost = hget_ll(c, "ps:metrics", "events_in");
    kill(r2.pid, SIGKILL);
    assert_int_equal(waitpid(r2.pid, &st, 0), r2.pid);
    r2.pid = 0;
    redisFree(c);
    printf("snapshot at %lld records; Redis killed at %lld, restarted "
           "from the snapshot\n",
           snap, lost);
    redis_again(&f, &r3, f.redis.dir);
    c = connect_redis(r3.port);

    /* 3. everything consumed: a graceful stop (SIGTERM, exit 0) */
    fixture_gen_wait(&f, gen);
    long long in = wait_events_in(&c, r3.port, f.records, 120000);
    kill(pid, SIGTERM);
    int rc = ps_test_wait_exit(pid, 60000);
    if (rc != 0 || in != f.records) {
        show_log(log);
        fail_msg("propstream run exited %d, %lld of %lld records in", rc, in,
                 f.records);
    }
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "grep -c 'rolling memory back' %s", log);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(hget_ll(c, "ps:metrics", "redis_rollbacks"), 1);

    run_to_end(&f, "ref", "ref:", "ref", 300);
    compare_runs(c, &f, "ref:", "ps:");
    redisFree(c);
    ps_test_redis_stop(&r3);
    ps_test_redis_stop(&r2);
    fixture_stop(&f);
}

/* Kafka faults while consuming a topic being produced: the mock
 * cluster's broker 1 goes down for 2 s with every partition's leader
 * moved to broker 2 (`propstream broker` drill SIGUSR1), later Fetch and
 * Heartbeat requests fail (SIGUSR2).  propstream must ride through both
 * and end equal to an uninterrupted run of the same topic.
 *
 * The heartbeat errors make the group rebalance: on revocation every
 * customer is dropped from memory, so funnels of customers not seen again
 * expire only through the expiry index (load_due, once a second).  The
 * generator's time is compressed (1.6 simulated days per second at
 * 15,000 records/s), and the end of the topic comes through watermark
 * alignment in a few steps of up to a day each: the stop (SIGTERM) follows
 * the last one closely.  It found two faults, both fixed: a stale
 * end-of-partition event after the rebalance skipped records, and a
 * graceful stop flushed without closing the funnels that had become due
 * since the last pass (up to about 2 days of event time of expiries
 * missing: the final state looked like a watermark 2 days behind). */
static void test_broker_fault(void **state)
{
    (void)state;
    fixture f;
    fixture_servers(&f);
    pid_t gen = fixture_gen(&f, 12000, "15000");
    redisContext *c = connect_redis(f.redis.port);

    const char *argv[32];
    char log[256];
    run_argv(&f, "fault", "ps:", false, argv);
    log_path(&f, "run", log, sizeof(log));
    pid_t pid = ps_test_spawn(argv, NULL, log);
    assert_true(pid > 0);

    long long at = wait_events_in(&c, f.redis.port, 25000, 120000);
    assert_true(at >= 25000);
    assert_int_equal(kill(f.broker.pid, SIGUSR1), 0);
    printf("broker 1 down for 2 s, leaders moved, at %lld records\n", at);
    long long later = wait_events_in(&c, f.redis.port, at + 30000, 120000);
    assert_true(later >= at + 30000);
    assert_int_equal(kill(f.broker.pid, SIGUSR2), 0);
    printf("Fetch and Heartbeat errors injected at %lld records\n", later);

    fixture_gen_wait(&f, gen);
    long long in = wait_events_in(&c, f.redis.port, f.records, 180000);
    /* (the producer may have retried into duplicates: wait for no lag) */
    for (int t = 0; t < 60000; t += 100) {
        ps_test_sleep_ms(100);
        if (hget_ll(c, "ps:metrics", "lag") == 0 &&
            hget_ll(c, "ps:metrics", "events_in") == in)
            break;
        in = hget_ll(c, "ps:metrics", "events_in");
    }
    kill(pid, SIGTERM);
    int rc = ps_test_wait_exit(pid, 60000);
    if (rc != 0 || in < f.records) {
        show_log(log);
        fail_msg("propstream run exited %d, %lld of %lld records in", rc, in,
                 f.records);
    }
    /* (the last revocation is the stop's; the others, rebalances) */
    char cmd[600];
    snprintf(cmd, sizeof(cmd),
             "echo \"revocations: $(grep -c 'info: revoked' %s)\"", log);
    if (system(cmd) != 0)
        fprintf(stderr, "could not read %s\n", log);
    run_to_end(&f, "ref", "ref:", "ref", 300);
    compare_runs(c, &f, "ref:", "ps:");
    redisFree(c);
    fixture_stop(&f);
}

static void test_scale_out(void **state)
{
    (void)state;
    fixture f;
    fixture_servers(&f);
    fixture_gen_wait(&f, fixture_gen(&f, 12000, "0"));
    redisContext *c = connect_redis(f.redis.port);
    run_to_end(&f, "ref", "ref:", "ref", 300);

    const char *argv[32];
    char log_a[256], log_b[256], log_b2[256];
    run_argv(&f, "duo", "ps:", false, argv);
    log_path(&f, "a", log_a, sizeof(log_a));
    log_path(&f, "b", log_b, sizeof(log_b));
    log_path(&f, "b2", log_b2, sizeof(log_b2));
    /* pace the pair: small rounds, so the kill falls mid-run */
    int n = 0;
    while (argv[n] != NULL)
        n++;
    argv[n++] = "--batch-max";
    argv[n++] = "500";
    argv[n] = NULL;
    pid_t a = ps_test_spawn(argv, NULL, log_a);
    pid_t b = ps_test_spawn(argv, NULL, log_b);
    assert_true(a > 0 && b > 0);

    /* both must own partitions: wait for a split assignment */
    char cmd[800];
    snprintf(cmd, sizeof(cmd),
             "grep -q 'other instances share' %s && "
             "grep -q 'other instances share' %s",
             log_a, log_b);
    int split = 0;
    for (int t = 0; t < 60000 && !split; t += 200) {
        split = system(cmd) == 0;
        ps_test_sleep_ms(200);
    }
    if (!split) {
        show_log(log_a);
        show_log(log_b);
        fail_msg("the two instances never shared the partitions");
    }
    long long at = wait_events_in(&c, f.redis.port, f.records / 3, 120000);
    kill(b, SIGKILL);
    assert_int_equal(ps_test_wait_exit(b, 10000), 128 + SIGKILL);
    printf("instance b killed at %lld of %lld records\n", at, f.records);
    b = ps_test_spawn(argv, NULL, log_b2);
    assert_true(b > 0);

    long long in = wait_events_in(&c, f.redis.port, f.records, 300000);
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    int ra = ps_test_wait_exit(a, 60000), rb = ps_test_wait_exit(b, 60000);
    if (ra != 0 || rb != 0 || in != f.records) {
        show_log(log_a);
        show_log(log_b2);
        fail_msg("instances exited %d and %d, %lld of %lld records in", ra,
                 rb, in, f.records);
    }
    counts_only = true;
    compare_runs(c, &f, "ref:", "ps:");
    counts_only = false;
    redisFree(c);
    fixture_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_out),
        cmocka_unit_test(test_redis_restart),
        cmocka_unit_test(test_kill9),
        cmocka_unit_test(test_broker_fault),
    };
    /* PS_TEST_ONLY=test_kill9 runs one test (a glob) */
    if (getenv("PS_TEST_ONLY") != NULL)
        cmocka_set_test_filter(getenv("PS_TEST_ONLY"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
