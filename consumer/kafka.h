/*
 * kafka.h -- the Kafka side of `propstream run`: the consumer handle and
 * the table of assigned partitions with their positions.
 *
 * Offsets are owned by propstream, not by Kafka: the next offset of every
 * partition is stored in Redis (ps:offsets:{group}) in the same transaction
 * as the results it covers, and an assignment starts from there.  Kafka's
 * own committed offsets are also updated after each flush, for monitoring
 * tools only (consumer lag dashboards); they are never read back.
 */
#ifndef PS_KAFKA_H
#define PS_KAFKA_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "../common/config.h"

/* A FIFO of consumed messages not handled yet (watermark alignment in
 * run.c holds a partition's messages back while it runs ahead).  Grows
 * on demand; the messages are owned by the queue. */
typedef struct ps_msgq {
    rd_kafka_message_t **v;
    uint32_t head, n, cap;
} ps_msgq;

/* Append m (0), or PS_ERR_NOMEM. */
int ps_msgq_push(ps_msgq *q, rd_kafka_message_t *m);
/* The oldest message, or NULL; pop removes it (the caller owns it). */
rd_kafka_message_t *ps_msgq_peek(const ps_msgq *q);
rd_kafka_message_t *ps_msgq_pop(ps_msgq *q);
/* The newest message, or NULL. */
rd_kafka_message_t *ps_msgq_last(const ps_msgq *q);
/* Destroy every message (keeps the storage). */
void ps_msgq_clear(ps_msgq *q);

/* One assigned partition. */
typedef struct ps_part {
    char *topic;
    int32_t partition;
    int64_t next;      /* next offset to consume (after what was applied) */
    int64_t flushed;   /* next offset as of the last successful flush */
    bool eof;          /* consumed to the end (last event seen) */
    uint32_t slot;     /* stable small number for the pipeline's clock */
    /* watermark alignment (run.c): messages consumed but held back */
    ps_msgq held;      /* in offset order; not applied, next excludes them */
    int64_t held_ts;   /* time of the first, beyond the limit; or INT64_MIN */
    bool full;         /* paused: held is at its cap */
    int64_t eof_at;    /* end of partition seen while messages were held */
    int64_t end_seen;  /* next, when the broker confirmed it as the end */
} ps_part;

/* The set of assigned partitions; small (tens to hundreds). */
typedef struct ps_parts {
    ps_part *v;
    size_t n, cap;
    size_t last; /* lookup cache */
    /* every (topic, partition) ever assigned -> slot, so a partition
     * keeps its slot across rebalances */
    char **slot_names;
    size_t slots_n;
} ps_parts;

ps_part *ps_parts_find(ps_parts *ps, const char *topic, int32_t partition);
ps_part *ps_parts_add(ps_parts *ps, const char *topic, int32_t partition,
                      int64_t next);
void ps_parts_clear(ps_parts *ps);
/* Free everything, slots included. */
void ps_parts_free(ps_parts *ps);

/*
 * A high-level consumer with propstream's fixed settings (no auto commit,
 * partition EOF events, earliest reset) plus the passthrough settings,
 * rebalance_cb and opaque.  NULL with errstr on failure.
 */
rd_kafka_t *ps_kafka_consumer_new(const char *bootstrap, const char *group,
                                  const ps_passthrough *extra,
                                  void (*rebalance_cb)(rd_kafka_t *,
                                                       rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *,
                                                       void *),
                                  void *opaque, char *errstr,
                                  size_t errstr_size);

/* Check the cluster answers and every topic exists, within timeout_ms.
 * 0, or PS_ERR_IO / PS_ERR_CONFIG with a message naming the broker or
 * topic. */
int ps_kafka_check(rd_kafka_t *rk, const char *bootstrap,
                   const ps_strlist *topics, int timeout_ms, char *errstr,
                   size_t errstr_size);

/* Sum over ps of (cached high watermark - next), ignoring unknowns. */
/* Partitions of these topics in the cluster, or -1 when the metadata
 * request fails. */
int ps_kafka_partition_count(rd_kafka_t *rk, const ps_strlist *topics,
                             int timeout_ms);
int64_t ps_kafka_lag(rd_kafka_t *rk, const ps_parts *ps);

#endif
