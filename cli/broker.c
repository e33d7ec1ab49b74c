/*
 * broker.c -- `propstream broker`: librdkafka's mock cluster as a process.
 *
 * librdkafka ships an in-process mock Kafka cluster (rdkafka_mock.h) that
 * speaks enough of the protocol for producers, the high-level consumer,
 * consumer groups and offset commits.  This command wraps it in a small
 * standalone process so that scripts, tests and benchmarks can use a real
 * Kafka wire endpoint on loopback without a JVM:
 *
 *   propstream broker --brokers 1 --topic events:4 --topic dlq:1
 *   -> first line on stdout: the bootstrap servers ("127.0.0.1:40123,...")
 *
 * Life cycle: create a producer handle (the mock cluster needs one rd_kafka_t
 * for its book-keeping; it never produces), create the cluster with N
 * brokers, create each topic with its partitions, print the bootstrap list,
 * then sleep in short steps until SIGINT or SIGTERM sets a flag; destroy the
 * cluster before the handle.  Exit 0 on a clean stop, 1 when the cluster
 * cannot be built, 2 on bad options.
 *
 * Fault drills (for tests of the consumer's fault handling), by signal:
 *   SIGUSR1  broker 1 goes down and every partition's leader moves to
 *            broker 2 (when there are at least 2 brokers); broker 1 comes
 *            back 2 s later (rd_kafka_mock_broker_set_down/_up,
 *            rd_kafka_mock_partition_set_leader);
 *   SIGUSR2  the next 5 Fetch and 3 Heartbeat requests fail with
 *            retriable errors (rd_kafka_mock_push_request_errors).
 * Each drill is logged on stderr.
 *
 * Limits worth knowing: the mock keeps only about 5 MB of log per partition
 * (older segments are dropped, so a consumer that starts late sees
 * OFFSET_OUT_OF_RANGE / loses data): give big runs more partitions.  The
 * CreateTopics admin API is not supported; unknown topics are auto-created
 * with default settings when a client asks for them.
 */
#include "commands.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "../common/config.h"
#include "../common/error.h"
#include "../common/log.h"

#define BROKER_MAX 16
#define PARTITIONS_MAX 1024

typedef struct broker_opts {
    int64_t brokers;            /* number of mock brokers */
    ps_strlist topics;          /* NAME[:PARTITIONS], repeatable */
    int64_t default_partitions; /* for topics given without :P */
    int64_t replication_factor; /* 0 = min(brokers, 3) */
} broker_opts;

static const ps_option broker_options[] = {
    {"brokers", 'n', PS_OPT_INT, "1", 1, BROKER_MAX, "brokers",
     "number of mock brokers in the cluster (1..16)",
     offsetof(broker_opts, brokers), 0},
    {"topic", 't', PS_OPT_LIST, NULL, 1, 0, NULL,
     "topic to create, NAME[:PARTITIONS]; repeatable (default: events)",
     offsetof(broker_opts, topics), 0},
    {"default-partitions", 'p', PS_OPT_INT, "4", 1, PARTITIONS_MAX,
     "partitions",
     "partitions of a --topic given without :PARTITIONS (the mock keeps "
     "~5 MB per partition)",
     offsetof(broker_opts, default_partitions), 0},
    {"replication-factor", 0, PS_OPT_INT, "0", 0, BROKER_MAX, NULL,
     "replicas per partition; 0 = min(brokers, 3)",
     offsetof(broker_opts, replication_factor), 0},
};
#define BROKER_NOPTS (sizeof(broker_options) / sizeof(broker_options[0]))

static volatile sig_atomic_t broker_stop;

static volatile sig_atomic_t drill_down, drill_errors;

/* Kafka protocol API keys (rdkafka_protocol.h is not installed). */
#define API_FETCH 1
#define API_HEARTBEAT 12

static int parse_topic(const char *spec, int64_t def_partitions, char *out,
                       size_t out_size, int *partitions, char *errstr,
                       size_t errstr_size);

static void broker_on_drill(int sig)
{
    if (sig == SIGUSR1)
        drill_down = 1;
    else
        drill_errors = 1;
}

/* SIGUSR1: broker 1 down, leaders to broker 2 (see the header). */
static void drill_broker_down(rd_kafka_mock_cluster_t *mc,
                              const broker_opts *opts, int brokers)
{
    rd_kafka_mock_broker_set_down(mc, 1);
    for (size_t i = 0; brokers >= 2 && i < opts->topics.n; i++) {
        char name[256];
        int parts;
        parse_topic(opts->topics.v[i], opts->default_partitions, name,
                    sizeof(name), &parts, NULL, 0);
        for (int p = 0; p < parts; p++)
            rd_kafka_mock_partition_set_leader(mc, name, p, 2);
    }
    fprintf(stderr, "propstream broker: drill: broker 1 down%s for 2 s\n",
            brokers >= 2 ? ", partition leaders moved to broker 2" : "");
}

/* SIGUSR2: retriable request errors. */
static void drill_request_errors(rd_kafka_mock_cluster_t *mc)
{
    rd_kafka_mock_push_request_errors(
        mc, API_FETCH, 5, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    rd_kafka_mock_push_request_errors(
        mc, API_HEARTBEAT, 3, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    fprintf(stderr, "propstream broker: drill: 5 Fetch and 3 Heartbeat "
                    "requests will fail\n");
}

static void broker_on_signal(int sig)
{
    (void)sig;
    broker_stop = 1;
}

/* Split "NAME[:PARTITIONS]" into name (copied into out) and *partitions.
 * Returns 0, or -1 with errstr naming the bad value. */
static int parse_topic(const char *spec, int64_t def_partitions, char *out,
                       size_t out_size, int *partitions, char *errstr,
                       size_t errstr_size)
{
    const char *colon = strrchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    long p = (long)def_partitions;

    if (name_len == 0 || name_len >= out_size || name_len > 249) {
        ps_set_err(errstr, errstr_size,
                   "--topic: bad topic name in \"%s\" (1..249 bytes)", spec);
        return -1;
    }
    for (size_t i = 0; i < name_len; i++) {
        char c = spec[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            ps_set_err(errstr, errstr_size,
                       "--topic: invalid character '%c' in \"%s\" "
                       "(allowed: a-z A-Z 0-9 . _ -)",
                       c, spec);
            return -1;
        }
    }
    if (colon != NULL) {
        char *end = NULL;
        errno = 0;
        p = strtol(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || p < 1 ||
            p > PARTITIONS_MAX) {
            ps_set_err(errstr, errstr_size,
                       "--topic: bad partition count in \"%s\" (1..%d)", spec,
                       PARTITIONS_MAX);
            return -1;
        }
    }
    memcpy(out, spec, name_len);
    out[name_len] = '\0';
    *partitions = (int)p;
    return 0;
}

/* librdkafka log lines, minus the warning that the hosting handle has no
 * bootstrap.servers (it never connects anywhere: it only hosts the mock). */
static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                          const char *buf)
{
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
        return;
    fprintf(stderr, "propstream broker: librdkafka %d %s: %s\n", level, fac,
            buf);
}

/* Sleep ms milliseconds, returning early (EINTR) when a signal arrives. */
static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int ps_cmd_broker(int argc, char **argv)
{
    broker_opts opts;
    ps_config_result res;
    char errstr[512];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    struct sigaction sa;
    int rc = 1, replication;

    memset(&opts, 0, sizeof(opts));
    memset(&res, 0, sizeof(res));
    errstr[0] = '\0';
    int prc = ps_config_parse(broker_options, BROKER_NOPTS, &opts, &res,
                              argc, argv, errstr, sizeof(errstr));
    if (prc == 1) { /* --help */
        ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
        return 0;
    }
    if (prc != 0) {
        fprintf(stderr, "propstream broker: %s\n", errstr);
        ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
        return 2;
    }
    if (res.positional.n > 0) {
        fprintf(stderr, "propstream broker: unexpected argument \"%s\"\n",
                res.positional.v[0]);
        ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
        return 2;
    }
    replication = (int)opts.replication_factor;
    if (replication == 0)
        replication = opts.brokers < 3 ? (int)opts.brokers : 3;
    if (replication > opts.brokers) {
        fprintf(stderr,
                "propstream broker: --replication-factor %d exceeds "
                "--brokers %d\n",
                replication, (int)opts.brokers);
        ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
        return 2;
    }
    if (opts.topics.n == 0) { /* default: one topic "events" */
        opts.topics.v = calloc(1, sizeof(char *));
        if (opts.topics.v == NULL ||
            (opts.topics.v[0] = strdup("events")) == NULL) {
            fprintf(stderr, "propstream broker: out of memory\n");
            ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
            return 1;
        }
        opts.topics.n = 1;
    }
    /* Validate every topic before building anything. */
    for (size_t i = 0; i < opts.topics.n; i++) {
        char name[256];
        int parts;
        if (parse_topic(opts.topics.v[i], opts.default_partitions, name,
                        sizeof(name), &parts, errstr, sizeof(errstr)) != 0) {
            fprintf(stderr, "propstream broker: %s\n", errstr);
            ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
            return 2;
        }
    }

    conf = rd_kafka_conf_new();
    /* Pass-through kafka.* settings, e.g. -X kafka.debug=mock. */
    for (size_t i = 0; i < res.kafka.n; i++) {
        if (rd_kafka_conf_set(conf, res.kafka.v[i].key, res.kafka.v[i].value,
                              errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "propstream broker: kafka.%s: %s\n",
                    res.kafka.v[i].key, errstr);
            rc = 2;
            goto done;
        }
    }
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "propstream broker: cannot create handle: %s\n",
                errstr);
        goto done;
    }
    conf = NULL; /* now owned by rk */

    mcluster = rd_kafka_mock_cluster_new(rk, (int)opts.brokers);
    if (mcluster == NULL) {
        fprintf(stderr, "propstream broker: cannot create mock cluster\n");
        goto done;
    }
    for (size_t i = 0; i < opts.topics.n; i++) {
        char name[256];
        int parts;
        rd_kafka_resp_err_t err;
        parse_topic(opts.topics.v[i], opts.default_partitions, name,
                    sizeof(name), &parts, NULL, 0);
        err = rd_kafka_mock_topic_create(mcluster, name, parts, replication);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "propstream broker: topic %s: %s\n", name,
                    rd_kafka_err2str(err));
            goto done;
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = broker_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = broker_on_drill;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    /* The first stdout line is the API: scripts read it. */
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mcluster));
    fflush(stdout);

    fprintf(stderr,
            "propstream broker: mock Kafka cluster, %d broker(s), "
            "replication factor %d, bootstrap %s\n",
            (int)opts.brokers, replication,
            rd_kafka_mock_cluster_bootstraps(mcluster));
    for (size_t i = 0; i < opts.topics.n; i++) {
        char name[256];
        int parts;
        parse_topic(opts.topics.v[i], opts.default_partitions, name,
                    sizeof(name), &parts, NULL, 0);
        fprintf(stderr, "propstream broker:   topic %s, %d partition(s)\n",
                name, parts);
    }
    fprintf(stderr,
            "propstream broker: note: the mock keeps only about 5 MB per "
            "partition; use more partitions for large runs.  "
            "Stop with SIGTERM or Ctrl-C.\n");

    int down_left_ms = 0; /* broker 1 comes back when this reaches 0 */
    while (!broker_stop) {
        rd_kafka_poll(rk, 0);
        if (drill_down) {
            drill_down = 0;
            drill_broker_down(mcluster, &opts, (int)opts.brokers);
            down_left_ms = 2000;
        }
        if (drill_errors) {
            drill_errors = 0;
            drill_request_errors(mcluster);
        }
        sleep_ms(100);
        if (down_left_ms > 0 && (down_left_ms -= 100) <= 0) {
            rd_kafka_mock_broker_set_up(mcluster, 1);
            fprintf(stderr, "propstream broker: drill: broker 1 up\n");
        }
    }
    fprintf(stderr, "propstream broker: stopping\n");
    rc = 0;

done:
    if (mcluster != NULL)
        rd_kafka_mock_cluster_destroy(mcluster);
    if (rk != NULL)
        rd_kafka_destroy(rk);
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    ps_config_free(broker_options, BROKER_NOPTS, &opts, &res);
    return rc;
}
