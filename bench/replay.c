/*
 * replay.c -- feed a gen file to a topic in slices, each sent once the
 * consuming `propstream run` has caught up with the previous one.  Used
 * by bench/run_all.sh's memory runs.
 *
 *   replay -b BOOTSTRAP -t TOPIC -i FILE -r HOST:PORT [--slice 50000]
 *          [--prefix ps:] [--timeout 600]
 *
 * FILE is `propstream gen -o FILE --format confluent|avro` output (4-byte
 * big-endian length + record).  Each record is produced keyed by its
 * customer id (decoded with ps_decoder, as gen keys them), so partitions
 * get the same customers as with `gen -b`.  After each slice the producer
 * is drained and {prefix}metrics events_in is polled (every 50 ms) until
 * it reaches the number sent so far (plus what it held at the start);
 * --timeout seconds without progress is a failure (exit 1).
 *
 * Why: consumed as one backlog, 1 M customers make propstream's flush
 * spacing (each flush waits 4x the previous one's duration) coalesce into
 * one multi-gigabyte transaction (see docs/performance.md); fed in
 * slices, the run measures the customers' memory rather than that flush.
 *
 * Output, one line on stdout:  replay: records=N slices=S seconds=T
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
#include "../consumer/decode.h"

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: replay -b BOOTSTRAP -t TOPIC -i FILE -r HOST:PORT "
                    "[--slice N] [--prefix ps:] [--timeout S]\n");
}

/* events_in of {prefix}metrics, or -1 on error */
static long long events_in(redisContext *c, const char *prefix)
{
    redisReply *r = redisCommand(c, "HGET %smetrics events_in", prefix);
    long long v = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    else if (r != NULL && r->type == REDIS_REPLY_NIL)
        v = 0;
    freeReplyObject(r);
    return v;
}

int main(int argc, char **argv)
{
    const char *bootstrap = NULL, *topic = NULL, *input = NULL,
               *redis = NULL, *prefix = "ps:";
    size_t slice = 50000;
    double timeout = 600;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "-b") == 0)
            bootstrap = v;
        else if (strcmp(a, "-t") == 0)
            topic = v;
        else if (strcmp(a, "-i") == 0)
            input = v;
        else if (strcmp(a, "-r") == 0)
            redis = v;
        else if (strcmp(a, "--slice") == 0)
            slice = strtoull(v, NULL, 10);
        else if (strcmp(a, "--prefix") == 0)
            prefix = v;
        else if (strcmp(a, "--timeout") == 0)
            timeout = atof(v);
        else {
            usage();
            return 2;
        }
    }
    if (bootstrap == NULL || topic == NULL || input == NULL ||
        redis == NULL || slice == 0 || argc % 2 == 0) {
        usage();
        return 2;
    }

    /* the file */
    FILE *fp = fopen(input, "rb");
    if (fp == NULL) {
        perror(input);
        return 1;
    }
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    rewind(fp);
    unsigned char *data = malloc(size > 0 ? (size_t)size : 1);
    if (data == NULL || size < 0 ||
        fread(data, 1, (size_t)size, fp) != (size_t)size) {
        fprintf(stderr, "replay: cannot read %s\n", input);
        return 1;
    }
    fclose(fp);

    /* Redis */
    char host[256];
    const char *colon = strrchr(redis, ':');
    if (colon == NULL || (size_t)(colon - redis) >= sizeof(host)) {
        usage();
        return 2;
    }
    memcpy(host, redis, (size_t)(colon - redis));
    host[colon - redis] = '\0';
    redisContext *rc =
        redisConnectWithTimeout(host, atoi(colon + 1), (struct timeval){5, 0});
    if (rc == NULL || rc->err) {
        fprintf(stderr, "replay: redis %s: %s\n", redis,
                rc ? rc->errstr : "cannot connect");
        return 1;
    }
    long long base = events_in(rc, prefix);
    if (base < 0) {
        fprintf(stderr, "replay: cannot read %smetrics\n", prefix);
        return 1;
    }

    /* Kafka */
    char err[512];
    ps_decoder *dec = ps_decoder_new(NULL, err, sizeof(err));
    ps_passthrough none = {NULL, 0};
    ps_event_output *out = NULL;
    if (dec == NULL || ps_event_output_open_kafka(&out, bootstrap, topic,
                                                  &none, err,
                                                  sizeof(err)) != 0) {
        fprintf(stderr, "replay: %s\n", err);
        return 1;
    }

    double t0 = mono_s();
    size_t pos = 0, sent = 0, slices = 0;
    int status = 0;
    while (pos + 4 <= (size_t)size && status == 0) {
        size_t in_slice = 0;
        while (in_slice < slice && pos + 4 <= (size_t)size) {
            const unsigned char *p = data + pos;
            size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 |
                         (size_t)p[2] << 8 | p[3];
            if (pos + 4 + len > (size_t)size) {
                fprintf(stderr, "replay: truncated record\n");
                status = 1;
                break;
            }
            ps_event ev;
            char detail[256];
            const char *key = "";
            size_t keylen = 0;
            if (ps_decoder_decode(dec, p + 4, len, &ev, detail,
                                  sizeof(detail)) == PS_BAD_NONE) {
                key = ev.customer_id.ptr;
                keylen = ev.customer_id.len;
            }
            if (ps_event_output_send(out, key, keylen, (const char *)p + 4,
                                     len, err, sizeof(err)) != 0) {
                fprintf(stderr, "replay: %s\n", err);
                status = 1;
                break;
            }
            pos += 4 + len;
            in_slice++;
            sent++;
            if (sent % 10000 == 0)
                ps_event_output_poll(out, 0);
        }
        ps_event_output_drain(out, 60000);
        slices++;
        /* wait until propstream has flushed this slice */
        double last_progress = mono_s();
        long long last = -1;
        while (status == 0) {
            long long got = events_in(rc, prefix);
            if (got < 0) {
                fprintf(stderr, "replay: redis: %s\n", rc->errstr);
                status = 1;
                break;
            }
            if (got - base >= (long long)sent)
                break;
            if (got != last) {
                last = got;
                last_progress = mono_s();
            } else if (mono_s() - last_progress > timeout) {
                fprintf(stderr, "replay: no progress for %.0f s (%lld of %zu "
                                "consumed)\n",
                        timeout, got - base, sent);
                status = 1;
                break;
            }
            nanosleep(&(struct timespec){0, 50000000}, NULL);
        }
    }
    ps_event_output_stats st;
    ps_event_output_close(out, &st);
    ps_decoder_destroy(dec);
    redisFree(rc);
    free(data);
    if (status == 0 && st.failed > 0) {
        fprintf(stderr, "replay: %" PRIu64 " failed deliveries (%s)\n",
                st.failed, st.first_error);
        status = 1;
    }
    printf("replay: records=%zu slices=%zu seconds=%.1f\n", sent, slices,
           mono_s() - t0);
    return status;
}
