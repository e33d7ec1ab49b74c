/*
 * raw_consume.c -- the baseline for bench/bench_consume.sh.
 *
 * A plain librdkafka high-level consumer, as in librdkafka's
 * examples/consumer.c: subscribe with a new group, read the topic from the
 * beginning to its end, touch every payload byte (a running xor-sum, printed
 * so the compiler cannot drop the loop) and stop once every assigned
 * partition has reported end of partition.  What it does not do -- decode,
 * aggregate, write Redis -- is exactly what propstream's figure adds, so the
 * ratio of the two is propstream's overhead over the bare transport.
 *
 * Output, one line on stdout:
 *     raw_consume: N messages, B bytes, T s, R msg/s
 * T runs from the partition assignment (the end of the group join) to the
 * last end-of-partition, as propstream's "assigned" to "caught up" log
 * lines do; the script also measures both processes' wall time.
 *
 * Usage: raw_consume -b BOOTSTRAP -t TOPIC [-g GROUP] [-T TIMEOUT_S]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* Assigned partitions and which of them are at their end. */
typedef struct progress {
    double t_assigned; /* first assignment, 0 until then */
    int assigned;
    int at_eof;
    int32_t *eof_partitions; /* partition ids seen at EOF (one topic) */
    size_t eof_cap;
} progress;

static volatile sig_atomic_t stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Eager rebalance protocol: assign / unassign what we are told. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    progress *pr = opaque;
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        rd_kafka_assign(rk, parts);
        if (pr->t_assigned == 0)
            pr->t_assigned = now_s();
        pr->assigned = parts->cnt;
        pr->at_eof = 0;
        break;
    default:
        rd_kafka_assign(rk, NULL);
        pr->assigned = 0;
        pr->at_eof = 0;
        break;
    }
}

/* Remember partition p at EOF once; returns true when newly at EOF. */
static bool mark_eof(progress *pr, int32_t p)
{
    for (int i = 0; i < pr->at_eof; i++)
        if (pr->eof_partitions[i] == p)
            return false;
    if ((size_t)pr->at_eof == pr->eof_cap) {
        size_t cap = pr->eof_cap ? pr->eof_cap * 2 : 64;
        int32_t *v = realloc(pr->eof_partitions, cap * sizeof *v);
        if (v == NULL)
            return false;
        pr->eof_partitions = v;
        pr->eof_cap = cap;
    }
    pr->eof_partitions[pr->at_eof++] = p;
    return true;
}

static void usage(void)
{
    fprintf(stderr, "usage: raw_consume -b BOOTSTRAP -t TOPIC [-g GROUP] "
                    "[-T TIMEOUT_S]\n");
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "raw_consume: %s=%s: %s\n", k, v, errstr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *bootstrap = NULL, *topic = NULL, *group = NULL;
    char group_buf[96];
    double timeout_s = 300;
    int opt;

    while ((opt = getopt(argc, argv, "b:t:g:T:h")) != -1) {
        switch (opt) {
        case 'b':
            bootstrap = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'T':
            timeout_s = atof(optarg);
            break;
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (bootstrap == NULL || topic == NULL || optind != argc) {
        usage();
        return 2;
    }
    if (group == NULL) { /* a new group: no committed offsets */
        snprintf(group_buf, sizeof group_buf, "raw-consume-%d-%ld",
                 (int)getpid(), (long)time(NULL));
        group = group_buf;
    }

    progress pr = {0};
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", bootstrap) ||
        conf_set(conf, "group.id", group) ||
        conf_set(conf, "auto.offset.reset", "earliest") ||
        conf_set(conf, "enable.auto.commit", "false") ||
        conf_set(conf, "enable.partition.eof", "true")) {
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, &pr);

    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr,
                                  sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "raw_consume: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    conf = NULL; /* now owned by rk */
    rd_kafka_poll_set_consumer(rk);

    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        fprintf(stderr, "raw_consume: subscribe %s: %s\n", topic,
                rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return 1;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    unsigned long long msgs = 0, bytes = 0;
    uint64_t checksum = 0;
    double t_start = now_s(), t_last = 0;
    int rc = 0;

    while (!stop) {
        if (now_s() - t_start > timeout_s) {
            fprintf(stderr, "raw_consume: timeout after %.0f s (%d of %d "
                            "partitions at end)\n",
                    timeout_s, pr.at_eof, pr.assigned);
            rc = 1;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            mark_eof(&pr, m->partition);
            rd_kafka_message_destroy(m);
            t_last = now_s();
            if (pr.assigned > 0 && pr.at_eof >= pr.assigned)
                break;
            continue;
        }
        if (m->err) {
            fprintf(stderr, "raw_consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        const unsigned char *p = m->payload;
        uint64_t acc = 0;
        for (size_t i = 0; i < m->len; i++) /* touch every byte */
            acc = (acc << 1 | acc >> 63) ^ p[i];
        checksum += acc;
        msgs++;
        bytes += m->len;
        rd_kafka_message_destroy(m);
    }

    double t = pr.t_assigned > 0 && t_last > pr.t_assigned
                   ? t_last - pr.t_assigned
                   : 0.0;
    double rate = t > 0 ? (double)msgs / t : 0.0;
    printf("raw_consume: %llu messages, %llu bytes, %.3f s, %.0f msg/s\n",
           msgs, bytes, t, rate);
    fprintf(stderr,
            "raw_consume: checksum %016" PRIx64 ", wall %.3f s, group %s\n",
            checksum, now_s() - t_start, group);

    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(pr.eof_partitions);
    return rc;
}
