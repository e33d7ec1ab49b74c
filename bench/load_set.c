/*
 * load_set.c -- one event for each of K customers that have saved state
 * in Redis, for the "load a customer set" part of bench/run_all.sh's
 * restart measurement.
 *
 *   load_set -b BOOTSTRAP -t TOPIC -r HOST:PORT -k K [--prefix ps:]
 *            [--ts-ms TS] [--max-index N]
 *
 * Customers are gen's ids "c%06u" for 1, 2, ... (up to --max-index); the
 * first K whose {prefix}state:cust:{id} exists (pipelined EXISTS, 1,000
 * per round trip) are chosen, so every event of the set makes a
 * restarted `propstream run` fetch and restore one saved customer.  Each
 * gets one SPEND of 100.00 at event time --ts-ms (default: the end of
 * gen's default 30-day horizon, so watermarks do not jump and close
 * funnels that would otherwise stay open).
 *
 * Output, one line on stdout:  load_set: customers=K produced=K
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "../cli/event_writer.h"
#include "../common/config.h"

#define ID_LEN 16

static void usage(void)
{
    fprintf(stderr, "usage: load_set -b BOOTSTRAP -t TOPIC -r HOST:PORT -k K "
                    "[--prefix ps:] [--ts-ms TS] [--max-index N]\n");
}

int main(int argc, char **argv)
{
    const char *bootstrap = NULL, *topic = NULL, *redis = NULL,
               *prefix = "ps:";
    size_t k = 0;
    unsigned long max_index = 50000000;
    int64_t ts = 1735689600000LL + 30LL * 86400000LL;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "-b") == 0)
            bootstrap = v;
        else if (strcmp(a, "-t") == 0)
            topic = v;
        else if (strcmp(a, "-r") == 0)
            redis = v;
        else if (strcmp(a, "-k") == 0)
            k = strtoull(v, NULL, 10);
        else if (strcmp(a, "--prefix") == 0)
            prefix = v;
        else if (strcmp(a, "--ts-ms") == 0)
            ts = strtoll(v, NULL, 10);
        else if (strcmp(a, "--max-index") == 0)
            max_index = strtoul(v, NULL, 10);
        else {
            usage();
            return 2;
        }
    }
    if (bootstrap == NULL || topic == NULL || redis == NULL || k == 0 ||
        argc % 2 == 0) {
        usage();
        return 2;
    }
    char host[256];
    const char *colon = strrchr(redis, ':');
    if (colon == NULL || (size_t)(colon - redis) >= sizeof(host)) {
        usage();
        return 2;
    }
    memcpy(host, redis, (size_t)(colon - redis));
    host[colon - redis] = '\0';

    /* --- choose K customers with saved state ------------------------- */
    redisContext *c =
        redisConnectWithTimeout(host, atoi(colon + 1), (struct timeval){5, 0});
    if (c == NULL || c->err) {
        fprintf(stderr, "load_set: redis %s: %s\n", redis,
                c ? c->errstr : "cannot connect");
        return 1;
    }
    char (*ids)[ID_LEN] = malloc(k * sizeof(*ids));
    if (ids == NULL)
        return 1;
    size_t chosen = 0;
    unsigned long next = 1;
    char key[256];
    while (chosen < k && next <= max_index) {
        unsigned long first = next, n = 0;
        for (; n < 1000 && next <= max_index; n++, next++) {
            snprintf(key, sizeof(key), "%sstate:cust:c%06lu", prefix, next);
            redisAppendCommand(c, "EXISTS %s", key);
        }
        bool any = false;
        for (unsigned long i = 0; i < n; i++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL) {
                fprintf(stderr, "load_set: redis: %s\n", c->errstr);
                return 1;
            }
            if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
                any = true;
                if (chosen < k)
                    snprintf(ids[chosen++], ID_LEN, "c%06lu", first + i);
            }
            freeReplyObject(r);
        }
        if (!any && first > 1000000)
            break; /* well past the generated ids */
    }
    redisFree(c);
    if (chosen == 0) {
        fprintf(stderr, "load_set: no customer with saved state found\n");
        return 1;
    }

    /* --- produce ----------------------------------------------------- */
    char err[512];
    ps_event_encoder *enc = ps_event_encoder_new(-1, err, sizeof(err));
    ps_passthrough none = {NULL, 0};
    ps_event_output *out = NULL;
    if (enc == NULL || ps_event_output_open_kafka(&out, bootstrap, topic,
                                                  &none, err,
                                                  sizeof(err)) != 0) {
        fprintf(stderr, "load_set: %s\n", err);
        return 1;
    }
    char buf[1024], evid[40];
    uint64_t run = (uint64_t)time(NULL);
    for (size_t i = 0; i < chosen; i++) {
        ps_event ev;
        memset(&ev, 0, sizeof(ev));
        snprintf(evid, sizeof(evid), "L%08" PRIx64 "%08zx", run, i);
        ev.event_id = (ps_str){evid, (uint32_t)strlen(evid)};
        ev.customer_id = (ps_str){ids[i], (uint32_t)strlen(ids[i])};
        ev.type = PS_SPEND;
        ev.has_amount = true;
        ev.amount = 100.0;
        ev.ts = ts;
        long n = ps_event_encode(enc, &ev, PS_FORMAT_CONFLUENT, 1, buf,
                                 sizeof(buf));
        if (n < 0 || ps_event_output_send(out, ids[i], strlen(ids[i]), buf,
                                          (size_t)n, err, sizeof(err)) != 0) {
            fprintf(stderr, "load_set: %s\n", n < 0 ? "encode" : err);
            return 1;
        }
        if (i % 10000 == 0)
            ps_event_output_poll(out, 0);
    }
    ps_event_output_drain(out, 30000);
    ps_event_output_stats st;
    ps_event_output_close(out, &st);
    ps_event_encoder_destroy(enc);
    free(ids);
    if (st.failed > 0 || st.delivered != chosen) {
        fprintf(stderr, "load_set: %" PRIu64 " delivered, %" PRIu64
                        " failed (%s)\n",
                st.delivered, st.failed, st.first_error);
        return 1;
    }
    printf("load_set: customers=%zu produced=%zu\n", chosen, chosen);
    return 0;
}
