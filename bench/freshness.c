/*
 * freshness.c -- produce-to-visible-in-Redis latency of a running
 * `propstream run` at a steady event rate.  Measurement (4) of
 * bench/run_all.sh.
 *
 *   freshness -b BOOTSTRAP -t TOPIC -r HOST:PORT [--prefix ps:]
 *             [--rate 50000] [--duration 20] [--warmup 3]
 *             [--probe-every 250] [--customers 100000]
 *             [--probe-customers 2000] [--products 200] [--grace 5]
 *             [--out FILE]
 *
 * Method.  One process, two threads, one monotonic clock:
 *   - the producer (main thread) sends Confluent-Avro events at --rate
 *     events/s, paced against the clock (events due by now are sent, then
 *     it sleeps until the next is due), with event time = wall-clock now.
 *     Background events go to --customers customers "b%06u" (CLICK 55 %,
 *     WISHLIST 20 %, PURCHASE 15 %, SPEND 10 %, uniform products).  Every
 *     --probe-every-th event is a probe: the same mix, but for one of
 *     --probe-customers customers "q%06u" taken round-robin, so each probe
 *     customer receives only probes, and at most one is in flight per
 *     customer (a round takes probe-customers x probe-every / rate
 *     seconds, 10 s by default, far above any latency measured).  The
 *     probe's send time is taken just before it is handed to librdkafka
 *     (producer linger, 5 ms, is therefore part of the latency).
 *   - the reader thread subscribes to Redis keyspace notifications of the
 *     probe customers' output hashes (notify-keyspace-events "Kh",
 *     PSUBSCRIBE __keyspace@0__:{prefix}cust:q*).  Redis publishes the
 *     notification while it executes the command inside propstream's
 *     MULTI/EXEC, so the moment it arrives is the moment the probe's
 *     customer became visible to any reader (plus the notification's own
 *     delivery, tens of microseconds on loopback).  The first
 *     notification for a customer with a probe in flight ends that probe.
 *     Channels of other keys (":intent", ":reco") are ignored.
 * Probes sent in the first --warmup seconds (group join, first customer
 * loads) are not counted.  After --duration seconds the producer stops and
 * the reader waits up to --grace seconds for probes still in flight;
 * those never seen are reported as missing.
 *
 * Quantiles are over every counted probe, a missing one counting as
 * infinitely late: when more than 1 % are missing, p99 is "inf".
 * Notifications for a probe customer with no probe in flight (its hash
 * rewritten without a new event of its own) are counted as "spurious".
 *
 * Output: one line on stdout,
 *   freshness: produced=N rate=R probes=P seen=S missing=M p50_ms=..
 *              p90_ms=.. p99_ms=.. p999_ms=.. max_ms=.. mean_seen_ms=..
 *              spurious=..
 * and, with --out, every counted latency in ms, one per line (sorted).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "../cli/event_writer.h"
#include "../common/config.h"

typedef struct opts {
    const char *bootstrap, *topic, *redis, *prefix, *out;
    double rate, duration, warmup, grace;
    unsigned probe_every, customers, probe_customers, products;
} opts;

/* Shared between the threads.  pending[i] is the send time (ns) of probe
 * customer i's probe in flight, negated for a warm-up probe, 0 if none. */
typedef struct shared {
    const opts *o;
    _Atomic int64_t *pending;
    atomic_bool stop;
    atomic_int ready; /* 1 subscribed, -1 failed */
    double *lat_ms;   /* reader thread only until joined */
    size_t lat_n, lat_cap;
    uint64_t spurious;
    char host[256];
    int port;
} shared;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xoshiro-ish: splitmix64 is plenty for a load generator. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

/* ------------------------------------------------------------ reader */

static void record(shared *sh, double ms)
{
    if (sh->lat_n == sh->lat_cap) {
        size_t cap = sh->lat_cap ? sh->lat_cap * 2 : 4096;
        double *v = realloc(sh->lat_ms, cap * sizeof(*v));
        if (v == NULL)
            return;
        sh->lat_ms = v;
        sh->lat_cap = cap;
    }
    sh->lat_ms[sh->lat_n++] = ms;
}

/* channel "__keyspace@0__:<prefix>cust:q<digits>" -> probe index */
static long probe_index(const shared *sh, const char *ch, size_t len)
{
    const char *colon = memchr(ch, ':', len);
    if (colon == NULL)
        return -1;
    const char *k = colon + 1;
    size_t kl = len - (size_t)(k - ch), pl = strlen(sh->o->prefix);
    if (kl < pl + 6 || memcmp(k, sh->o->prefix, pl) != 0 ||
        memcmp(k + pl, "cust:q", 6) != 0)
        return -1;
    long v = 0;
    const char *d = k + pl + 6, *end = k + kl;
    if (d == end)
        return -1;
    for (; d < end; d++) {
        if (*d < '0' || *d > '9')
            return -1; /* ":intent", ":reco", ... */
        v = v * 10 + (*d - '0');
    }
    return v < (long)sh->o->probe_customers ? v : -1;
}

static void handle(shared *sh, redisReply *r, int64_t t)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    long i = probe_index(sh, r->element[2]->str, r->element[2]->len);
    if (i < 0)
        return;
    int64_t sent = atomic_exchange(&sh->pending[i], 0);
    if (sent > 0)
        record(sh, (double)(t - sent) / 1e6);
    else if (sent == 0)
        sh->spurious++;
}

static void *reader_main(void *arg)
{
    shared *sh = arg;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(sh->host, sh->port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "freshness: redis %s:%d: %s\n", sh->host, sh->port,
                c ? c->errstr : "cannot connect");
        atomic_store(&sh->ready, -1);
        redisFree(c);
        return NULL;
    }
    redisReply *r = redisCommand(c, "CONFIG SET notify-keyspace-events Kh");
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    char pattern[512];
    snprintf(pattern, sizeof(pattern), "__keyspace@0__:%scust:q*",
             sh->o->prefix);
    r = ok ? redisCommand(c, "PSUBSCRIBE %s", pattern) : NULL;
    ok = r != NULL;
    freeReplyObject(r);
    if (!ok) {
        fprintf(stderr, "freshness: cannot subscribe to keyspace "
                        "notifications: %s\n",
                c->errstr[0] ? c->errstr : "CONFIG SET refused");
        atomic_store(&sh->ready, -1);
        redisFree(c);
        return NULL;
    }
    atomic_store(&sh->ready, 1);
    while (!atomic_load(&sh->stop)) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
            break;
        if (reply != NULL) {
            handle(sh, reply, mono_ns());
            freeReplyObject(reply);
            continue;
        }
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int n = poll(&pfd, 1, 100);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && redisBufferRead(c) != REDIS_OK)
            break;
    }
    redisFree(c);
    return NULL;
}

/* ---------------------------------------------------------- producer */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q of all probes, the seen ones sorted in v[0..seen) and the
 * missing ones counted as infinitely late (so a p99 is never flattered
 * by probes that did not arrive): INFINITY when it falls among those. */
static double quantile(const double *v, size_t seen, size_t all, double q)
{
    if (all == 0)
        return NAN;
    double pos = q * (double)(all - 1);
    size_t i = (size_t)pos;
    double f = pos - (double)i;
    if (i >= seen)
        return INFINITY;
    if (i + 1 >= seen)
        return f > 0 && i + 1 < all ? INFINITY : v[i];
    return v[i] * (1 - f) + v[i + 1] * f;
}

static void print_ms(const char *name, double v)
{
    if (isinf(v))
        printf(" %s=inf", name);
    else
        printf(" %s=%.2f", name, v);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: freshness -b BOOTSTRAP -t TOPIC -r HOST:PORT "
            "[--prefix ps:] [--rate 50000]\n"
            "                 [--duration 20] [--warmup 3] [--probe-every "
            "250] [--customers 100000]\n"
            "                 [--probe-customers 2000] [--products 200] "
            "[--grace 5] [--out FILE]\n");
}

static void parse(int argc, char **argv, opts *o)
{
    *o = (opts){.prefix = "ps:", .rate = 50000, .duration = 20,
                .warmup = 3, .grace = 5, .probe_every = 250,
                .customers = 100000, .probe_customers = 2000,
                .products = 200};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            exit(2);
        }
        i++;
        if (strcmp(a, "-b") == 0)
            o->bootstrap = v;
        else if (strcmp(a, "-t") == 0)
            o->topic = v;
        else if (strcmp(a, "-r") == 0)
            o->redis = v;
        else if (strcmp(a, "--prefix") == 0)
            o->prefix = v;
        else if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--rate") == 0)
            o->rate = atof(v);
        else if (strcmp(a, "--duration") == 0)
            o->duration = atof(v);
        else if (strcmp(a, "--warmup") == 0)
            o->warmup = atof(v);
        else if (strcmp(a, "--grace") == 0)
            o->grace = atof(v);
        else if (strcmp(a, "--probe-every") == 0)
            o->probe_every = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--customers") == 0)
            o->customers = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--probe-customers") == 0)
            o->probe_customers = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--products") == 0)
            o->products = (unsigned)strtoul(v, NULL, 10);
        else {
            usage();
            exit(2);
        }
    }
    if (o->bootstrap == NULL || o->topic == NULL || o->redis == NULL ||
        o->rate <= 0 || o->duration <= 0 || o->probe_every == 0 ||
        o->customers == 0 || o->probe_customers == 0 || o->products == 0) {
        usage();
        exit(2);
    }
}

/* One event of the mix for customer cust. */
static ps_event make_event(uint64_t *rng, const opts *o, const char *cust,
                           char *id, size_t idsz, char *prod, size_t prodsz,
                           uint64_t run, uint64_t seq)
{
    ps_event ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(id, idsz, "f%06" PRIx64 "%010" PRIx64, run & 0xffffff, seq);
    snprintf(prod, prodsz, "p%04u",
             (unsigned)(rng_next(rng) % o->products) + 1);
    double u = rng_unit(rng);
    ev.type = u < 0.55 ? PS_CLICK : u < 0.75 ? PS_WISHLIST
              : u < 0.90 ? PS_PURCHASE : PS_SPEND;
    ev.event_id = (ps_str){id, (uint32_t)strlen(id)};
    ev.customer_id = (ps_str){cust, (uint32_t)strlen(cust)};
    if (ev.type != PS_SPEND)
        ev.product_id = (ps_str){prod, (uint32_t)strlen(prod)};
    if (ev.type == PS_PURCHASE || ev.type == PS_SPEND) {
        ev.has_amount = true;
        ev.amount = 100.0 + (double)(rng_next(rng) % 90000) / 100.0;
    }
    ev.ts = wall_ms();
    return ev;
}

int main(int argc, char **argv)
{
    opts o;
    parse(argc, argv, &o);

    shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.o = &o;
    const char *colon = strrchr(o.redis, ':');
    if (colon == NULL || (size_t)(colon - o.redis) >= sizeof(sh.host)) {
        fprintf(stderr, "freshness: -r HOST:PORT\n");
        return 2;
    }
    memcpy(sh.host, o.redis, (size_t)(colon - o.redis));
    sh.port = atoi(colon + 1);
    sh.pending = calloc(o.probe_customers, sizeof(*sh.pending));
    if (sh.pending == NULL)
        return 1;

    char err[512];
    ps_event_encoder *enc = ps_event_encoder_new(-1, err, sizeof(err));
    if (enc == NULL) {
        fprintf(stderr, "freshness: %s\n", err);
        return 1;
    }
    ps_passthrough none = {NULL, 0};
    ps_event_output *out = NULL;
    if (ps_event_output_open_kafka(&out, o.bootstrap, o.topic, &none, err,
                                   sizeof(err)) != 0) {
        fprintf(stderr, "freshness: %s\n", err);
        return 1;
    }

    pthread_t reader;
    if (pthread_create(&reader, NULL, reader_main, &sh) != 0)
        return 1;
    while (atomic_load(&sh.ready) == 0)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    if (atomic_load(&sh.ready) < 0) {
        pthread_join(reader, NULL);
        return 1;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    uint64_t rng = (uint64_t)mono_ns(), run = rng_next(&rng);
    char buf[4096], id[40], prod[16], cust[16];
    uint64_t produced = 0, probes = 0, warm_probes = 0;
    unsigned next_probe = 0;
    int64_t t0 = mono_ns();
    int64_t t_end = t0 + (int64_t)(o.duration * 1e9);
    int64_t t_warm = t0 + (int64_t)(o.warmup * 1e9);
    double ns_per_event = 1e9 / o.rate;
    int rc = 0;

    while (!interrupted) {
        int64_t t = mono_ns();
        if (t >= t_end)
            break;
        uint64_t due = (uint64_t)((double)(t - t0) / ns_per_event) + 1;
        if (produced >= due) { /* ahead: sleep until the next is due */
            int64_t at = t0 + (int64_t)((double)produced * ns_per_event);
            struct timespec ts = {at / 1000000000LL, at % 1000000000LL};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            continue;
        }
        while (produced < due) {
            bool probe = produced % o.probe_every == 0;
            unsigned pi = 0;
            if (probe) {
                pi = next_probe;
                next_probe = (next_probe + 1) % o.probe_customers;
                snprintf(cust, sizeof(cust), "q%06u", pi);
            } else {
                snprintf(cust, sizeof(cust), "b%06u",
                         (unsigned)(rng_next(&rng) % o.customers));
            }
            ps_event ev = make_event(&rng, &o, cust, id, sizeof(id), prod,
                                     sizeof(prod), run, produced);
            long n = ps_event_encode(enc, &ev, PS_FORMAT_CONFLUENT, 1, buf,
                                     sizeof(buf));
            if (n < 0) {
                fprintf(stderr, "freshness: cannot encode an event\n");
                rc = 1;
                goto done;
            }
            if (probe) {
                int64_t now = mono_ns();
                bool warm = now < t_warm;
                /* a probe still in flight a whole round later is lost:
                 * count it as missing by overwriting (never happens at
                 * sane settings) */
                atomic_store(&sh.pending[pi], warm ? -now : now);
                if (warm)
                    warm_probes++;
                else
                    probes++;
            }
            if (ps_event_output_send(out, cust, strlen(cust), buf,
                                     (size_t)n, err, sizeof(err)) != 0) {
                fprintf(stderr, "freshness: %s\n", err);
                rc = 1;
                goto done;
            }
            produced++;
            if (produced % 1000 == 0)
                ps_event_output_poll(out, 0);
        }
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    ps_event_output_drain(out, 10000);

    /* wait for the probes in flight */
    int64_t t_grace = mono_ns() + (int64_t)(o.grace * 1e9);
    while (mono_ns() < t_grace && !interrupted) {
        size_t left = 0;
        for (unsigned i = 0; i < o.probe_customers; i++)
            left += atomic_load(&sh.pending[i]) > 0;
        if (left == 0)
            break;
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
done:
    atomic_store(&sh.stop, true);
    pthread_join(reader, NULL);
    ps_event_output_stats st;
    ps_event_output_close(out, &st);
    ps_event_encoder_destroy(enc);
    if (rc != 0)
        return rc;

    qsort(sh.lat_ms, sh.lat_n, sizeof(*sh.lat_ms), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < sh.lat_n; i++)
        sum += sh.lat_ms[i];
    uint64_t missing = probes > sh.lat_n ? probes - sh.lat_n : 0;
    if (o.out != NULL) {
        FILE *fp = fopen(o.out, "w");
        if (fp != NULL) {
            for (size_t i = 0; i < sh.lat_n; i++)
                fprintf(fp, "%.3f\n", sh.lat_ms[i]);
            fclose(fp);
        }
    }
    fprintf(stderr,
            "freshness: %" PRIu64 " events in %.1f s (%.0f/s; %" PRIu64
            " delivered, %" PRIu64 " failed), %" PRIu64 " probes counted (%"
            PRIu64 " in warm-up), %" PRIu64 " missing, %" PRIu64
            " spurious notifications\n",
            produced, secs, (double)produced / secs, st.delivered, st.failed,
            probes, warm_probes, missing, sh.spurious);
    size_t all = sh.lat_n + missing;
    printf("freshness: produced=%" PRIu64 " rate=%.0f probes=%" PRIu64
           " seen=%zu missing=%" PRIu64,
           produced, (double)produced / secs, probes, sh.lat_n, missing);
    print_ms("p50_ms", quantile(sh.lat_ms, sh.lat_n, all, 0.50));
    print_ms("p90_ms", quantile(sh.lat_ms, sh.lat_n, all, 0.90));
    print_ms("p99_ms", quantile(sh.lat_ms, sh.lat_n, all, 0.99));
    print_ms("p999_ms", quantile(sh.lat_ms, sh.lat_n, all, 0.999));
    print_ms("max_ms", missing > 0 ? INFINITY
                       : sh.lat_n ? sh.lat_ms[sh.lat_n - 1] : NAN);
    printf(" mean_seen_ms=%.2f spurious=%" PRIu64 "\n",
           sh.lat_n ? sum / (double)sh.lat_n : 0, sh.spurious);
    free(sh.lat_ms);
    free((void *)sh.pending);
    return 0;
}
