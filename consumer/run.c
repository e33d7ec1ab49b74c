/*
 * run.c -- `propstream run`: the main loop from Kafka to Redis.
 *
 * One thread does everything, in rounds:
 *
 *   collect   poll up to batch-max messages (or until the flush is due);
 *             decode each; bad ones become a dead-letter XADD in `dlq`
 *             (and optionally a message on the DLQ topic); good ones are
 *             copied into a per-round arena (no allocation per event).
 *   process   look up the round's customers; those not in memory are
 *             fetched from ps:state:cust:{id} in ONE pipelined round trip;
 *             then every event goes through the aggregate pipeline.
 *   flush     every flush-interval-ms: one MULTI/EXEC with every changed
 *             customer (written once however often it was touched), the
 *             shared deltas, the dead letters, the metrics deltas, the
 *             next offset of every partition (ps:offsets:{group}) and a
 *             flush token.
 *
 * Exactly-once.  Redis holds the offsets together with what they produced,
 * so a restart (or a new owner after a rebalance) seeks to those offsets
 * and reloads customers from ps:state: -- nothing is applied twice and
 * nothing skipped.  When a flush fails, the outcome is unknown (EXEC may
 * have been applied with its reply lost).  The loop then stops consuming
 * (partitions paused, no polling), waits for Redis, and reads back the
 * flush token (ps:state:flush:{group}, field = this instance, value = the
 * flush sequence number): if the token is there the flush landed,
 * otherwise the same content is written again.  Nothing is applied to
 * memory in between, so the retried transaction is identical.
 *
 * Rebalance.  On assignment, offsets come from Redis (not from Kafka's
 * commits).  On revocation the pending round is processed and flushed
 * first, then every customer is dropped from memory: another instance may
 * own them next, and they are reloaded from Redis when seen again.
 *
 * Stop.  At SIGTERM/SIGINT (and at the end with -e) the pending round is
 * applied, every customer not in memory whose funnels the watermarks
 * already passed is loaded so they close (close_due: otherwise expiries
 * due since the last once-a-second pass would wait for the next start),
 * and everything is flushed; held messages are dropped (not applied, not
 * in the offsets) and the consumer leaves the group.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../aggregates/pipeline.h"
#include "../cli/commands.h"
#include "../common/batch.h"
#include "../common/config.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../sinks/redis_sink.h"
#include "decode.h"
#include "kafka.h"

/* ------------------------------------------------------------- options */

typedef struct run_opts {
    char *bootstrap;
    ps_strlist topics;
    char *group;
    char *redis;
    bool exit_at_end;
    char *prefix;
    int64_t flush_interval_ms;
    int64_t batch_max;
    char *schema_dir;
    char *dlq_topic;
    int64_t stream_maxlen;
    int64_t customer_ttl_s;
    int64_t stats_interval_s;
    int64_t kafka_timeout_ms;
    char *redis_user;
    char *redis_password;
    int64_t redis_db;
    int64_t redis_timeout_ms;
    int64_t allowed_lateness_ms;
    int64_t idle_partition_ms;
    int64_t attribution_window_ms;
    int64_t dedup_horizon_ms;
    int64_t dedup_max_ids;
    char *prior;
    double prior_strength;
    double half_life_ms;
    double credible_level;
    double intent_threshold;
    int64_t segments_k;
    int64_t segments_batch;
    double spend_threshold;
    char *segments_features;
    char *segments_names;
    double segments_half_life;
    int64_t window_bucket_ms;
    int64_t graph_max_edges;
    int64_t also_top_n;
    int64_t copurchase_max_items;
    int64_t reco_n;
    double next_prior_strength;
    int64_t shared_refresh_ms;
    int64_t max_customers;
    int64_t max_ahead_ms;
} run_opts;

#define OPT(field) offsetof(run_opts, field)

static const ps_option run_options[] = {
    {"bootstrap", 'b', PS_OPT_STR, NULL, 1, 0, NULL,
     "Kafka bootstrap servers, host:port[,host:port...]", OPT(bootstrap),
     PS_OPT_REQUIRED},
    {"topics", 't', PS_OPT_LIST, "events", 1, 0, NULL,
     "topics to consume (comma-separated or repeated)", OPT(topics), 0},
    {"group", 'g', PS_OPT_STR, "propstream", 1, 0, NULL,
     "Kafka consumer group; also names ps:offsets:{group}", OPT(group), 0},
    {"redis", 'r', PS_OPT_STR, "127.0.0.1:6379", 1, 0, NULL,
     "Redis server, host:port", OPT(redis), 0},
    {"exit-at-end", 'e', PS_OPT_BOOL, "false", 1, 0, NULL,
     "exit 0 once every assigned partition is consumed to its end and "
     "flushed",
     OPT(exit_at_end), 0},
    {"prefix", 0, PS_OPT_STR, "ps:", 1, 0, NULL,
     "prefix of every Redis key written", OPT(prefix), 0},
    {"flush-interval-ms", 'f', PS_OPT_INT, "100", 1, 60000, "ms",
     "how often changes are written to Redis (one transaction each)",
     OPT(flush_interval_ms), 0},
    {"batch-max", 0, PS_OPT_INT, "5000", 1, 1000000, "events",
     "most messages consumed before they are applied", OPT(batch_max), 0},
    {"schema-dir", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "directory of writer schemas <id>.avsc for Confluent-framed Avro "
     "(id 1 defaults to the built-in schemas/event.avsc)",
     OPT(schema_dir), 0},
    {"dlq-topic", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "also copy bad records to this Kafka topic (at least once)",
     OPT(dlq_topic), 0},
    {"stream-maxlen", 0, PS_OPT_INT, "100000", 1, 1e9, "entries",
     "approximate cap of the ps:dlq, ps:triggers and ps:paths streams "
     "(XADD MAXLEN ~)",
     OPT(stream_maxlen), 0},
    {"customer-ttl-s", 0, PS_OPT_INT, "0", 0, 1e9, "s",
     "expire a customer's output keys (ps:cust:{id}, :intent, :reco) this "
     "long after its last write, renewed at every write; its saved state "
     "stays (0 = never)",
     OPT(customer_ttl_s), 0},
    {"stats-interval-s", 0, PS_OPT_INT, "5", 0, 3600, "s",
     "period of the stats line on stderr (0 = off)", OPT(stats_interval_s),
     0},
    {"kafka-timeout-ms", 0, PS_OPT_INT, "10000", 100, 600000, "ms",
     "how long to wait for Kafka at start before giving up",
     OPT(kafka_timeout_ms), 0},
    {"redis-user", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "Redis ACL user (with --redis-password)", OPT(redis_user), 0},
    {"redis-password", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "Redis password (AUTH); never printed", OPT(redis_password),
     PS_OPT_SECRET},
    {"redis-db", 0, PS_OPT_INT, "0", 0, 15, NULL, "Redis database number",
     OPT(redis_db), 0},
    {"redis-timeout-ms", 0, PS_OPT_INT, "10000", 100, 600000, "ms",
     "Redis connect and I/O timeout", OPT(redis_timeout_ms), 0},
    {"allowed-lateness-ms", 0, PS_OPT_INT, "3600000", 0, 31536000000.0, "ms",
     "watermark = largest event time seen on a partition minus this",
     OPT(allowed_lateness_ms), 0},
    {"idle-partition-ms", 0, PS_OPT_INT, "60000", 100, 86400000, "ms",
     "wall-clock time without events after which a partition stops "
     "holding back the global watermark",
     OPT(idle_partition_ms), 0},
    {"attribution-window-ms", 0, PS_OPT_INT, "604800000", 1, 31536000000.0,
     "ms", "a PURCHASE this long after a funnel opened still converts it",
     OPT(attribution_window_ms), 0},
    {"dedup-horizon-ms", 0, PS_OPT_INT, "86400000", 0, 31536000000.0, "ms",
     "event ids are remembered per customer for this much event time",
     OPT(dedup_horizon_ms), 0},
    {"dedup-max-ids", 0, PS_OPT_INT, "1024", 1, 1000000, "ids",
     "most event ids remembered per customer (oldest forgotten first)",
     OPT(dedup_max_ids), 0},
    {"prior", 0, PS_OPT_STR, "flat", 1, 0, NULL,
     "customer prior: flat (Beta(1,1)) or empirical (centred on the rate of "
     "the same path in the customer's segment, else the global rate)",
     OPT(prior), 0, "flat|empirical"},
    {"prior-strength", 0, PS_OPT_DBL, "10", 0, 1e9, "pseudo-trials",
     "weight of the empirical prior", OPT(prior_strength), 0},
    {"half-life-ms", 0, PS_OPT_DBL, "0", 0, 1e15, "ms",
     "forgetting: customer counts halve every this much event time "
     "(0 = never)",
     OPT(half_life_ms), 0},
    {"credible-level", 0, PS_OPT_DBL, "0.95", 0.5, 0.9999, NULL,
     "probability of the published credible intervals",
     OPT(credible_level), 0},
    {"intent-threshold", 0, PS_OPT_DBL, "0.5", 0, 1, NULL,
     "high_intent fires when an open funnel's P(purchase) crosses this "
     "upwards",
     OPT(intent_threshold), 0},
    {"segments-k", 0, PS_OPT_INT, "3", 1, 16, "segments",
     "k of the k-means segmentation (k = 3 names vip, premium, regular)",
     OPT(segments_k), 0},
    {"segments-batch", 0, PS_OPT_INT, "256", 16, 1048576, "points",
     "feature vectors per mini-batch k-means step", OPT(segments_batch), 0},
    {"spend-threshold", 0, PS_OPT_DBL, "70000", 0, 1e15, NULL,
     "T of the published P(amount >= T)", OPT(spend_threshold), 0},
    {"segments-features", 0, PS_OPT_STR, "mean_amount,purchases", 1, 0,
     NULL,
     "k-means features, comma-separated, from: mean_amount, purchases, "
     "recency_days, frequency, total_spend, clicks, wishlists, conversion",
     OPT(segments_features), PS_OPT_CSV,
     "mean_amount|purchases|recency_days|frequency|total_spend|clicks|"
     "wishlists|conversion"},
    {"segments-names", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "segment names, comma-separated, one per segment in the order of the "
     "naming rule (default for k = 3: vip,premium,regular)",
     OPT(segments_names), PS_OPT_CSV},
    {"segments-half-life", 0, PS_OPT_DBL, "0", 0, 1e15, "points",
     "k-means forgetting: a centre's past weight halves after this many "
     "points reach it (0 = never)",
     OPT(segments_half_life), 0},
    {"window-bucket-ms", 0, PS_OPT_INT, "3600000", 60000, 86400000, "ms",
     "bucket width of the rolling 7-day and 30-day cohort windows",
     OPT(window_bucket_ms), 0},
    {"graph-max-edges", 0, PS_OPT_INT, "5000000", 1000, 1e10, "edges",
     "customer -> product edges kept in memory (least recently used "
     "edges of inactive customers are evicted first)",
     OPT(graph_max_edges), 0},
    {"also-top-n", 0, PS_OPT_INT, "20", 1, 1000, "products",
     "co-purchased products kept in ps:prod:{id}:also",
     OPT(also_top_n), 0},
    {"copurchase-max-items", 0, PS_OPT_INT, "200", 1, 100000, "products",
     "distinct purchased products remembered per customer for "
     "co-purchase counts",
     OPT(copurchase_max_items), 0},
    {"reco-n", 0, PS_OPT_INT, "10", 1, 1000, "products",
     "recommendations kept in ps:cust:{id}:reco", OPT(reco_n), 0},
    {"next-prior-strength", 0, PS_OPT_DBL, "10", 0, 1e9, "pseudo-events",
     "weight of the segment's transition distribution in a customer's "
     "next-action Dirichlet prior",
     OPT(next_prior_strength), 0},
    {"max-customers", 0, PS_OPT_INT, "0", 0, 1e10, "customers",
     "bound on customers kept in memory (0 = no bound): after a flush the "
     "least recently active beyond it are dropped (their state is in "
     "Redis) down to 90 % of it, and loaded again at their next event",
     OPT(max_customers), 0},
    {"max-ahead-ms", 0, PS_OPT_INT, "86400000", 0, 31536000000.0, "ms",
     "watermark alignment: a partition whose event time runs more than "
     "this ahead of the slowest busy partition is paused until the others "
     "catch up (0 = never), so rolling windows see events in time order "
     "even when a backlog is read",
     OPT(max_ahead_ms), 0},
    {"shared-refresh-ms", 0, PS_OPT_INT, "1000", 0, 3600000, "ms",
     "with several instances in the group: how often the totals of shared "
     "hashes (product, campaign, global, segment, cohort) are read again, "
     "so derived values include the other instances' counts (0 = never; "
     "an instance that owns every partition never needs it)",
     OPT(shared_refresh_ms), 0},
};
#define RUN_OPTIONS_N (sizeof(run_options) / sizeof(run_options[0]))

/* ---------------------------------------------------------------- state */

/* Counters kept as totals (for the stats line) and as deltas since the
 * last successful flush (HINCRBY into ps:metrics). */
typedef struct run_counts {
    int64_t in, applied, bad, dup, late, lost;
    int64_t rollbacks; /* memory rolled back to what Redis held */
    int64_t evicted;   /* customers dropped from memory (--max-customers) */
    int64_t bad_by[PS_BAD_REASON_COUNT];
} run_counts;

typedef struct run_ctx {
    run_opts *o;
    ps_config_result *cfg;
    rd_kafka_t *rk;
    rd_kafka_t *dlq_rk;
    ps_decoder *dec;
    ps_pipeline *pipe;
    ps_redis_sink *sink;
    ps_batch *out;  /* the flush transaction */
    ps_batch *dlq;  /* dead letters waiting for the next flush */
    ps_parts parts;
    bool cooperative;

    /* the round's decoded events; strings live in arena */
    ps_event *evs;
    ps_customer **ev_cust; /* each event's entities, looked up once */
    ps_entity **ev_prod, **ev_camp;
    size_t ev_n, ev_cap;
    char *arena;
    size_t arena_len, arena_cap;

    /* customers to fetch: ids into the round, set for dedup */
    uint32_t *miss_set; /* 1-based index into miss, 0 = empty */
    size_t miss_set_cap;
    ps_str *miss;
    size_t miss_n;
    char *keybuf;
    size_t keybuf_cap;
    const char **keys;
    size_t *keylens;
    int load_err;

    /* customers due for expiry, read from the expiry index */
    char *due_buf;      /* due_cap slots of PS_ID_MAX bytes */
    uint32_t *due_len;
    size_t due_n, due_cap;
    int64_t due_loaded; /* customers loaded only to expire their funnels */

    run_counts total, delta;
    uint64_t flush_seq;  /* last successful flush */
    ps_agg_conf conf;    /* of the pipeline, to build it again */
    /* Redis came back without flushes this instance had confirmed (it
     * restarted from an older snapshot): roll back at the next flush to
     * rollback_to, the last of our flushes Redis still holds. */
    bool rollback;
    uint64_t rollback_to;
    int64_t last_flush_at; /* monotonic ms of the last successful flush */
    bool alone;  /* this instance owns every partition of its topics */
    bool alone_known; /* false after each (re)assignment */
    int64_t rollbacks;
    char instance[40];
    bool paused;
    size_t held_n;       /* partitions held back (align_partitions) */
    int64_t align_limit; /* this round's latest accepted event time */
    int64_t last_flush_us, flush_us_sum, flushes;
    int64_t lag;
    int64_t start_ms;
    int fatal;
    /* test hook (PS_TEST_PROGRESS_FILE): total.in mirrored into a shared
     * mapping of that file, readable after a SIGKILL; NULL when off */
    volatile int64_t *progress;
} run_ctx;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t now_ms(int clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------- dead letters */

static size_t base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    return o;
}

/* At most 1 KiB of base64 in ps:dlq (contract section 1). */
#define DLQ_PAYLOAD_RAW_MAX 768

static void dead_letter(run_ctx *c, const rd_kafka_message_t *m,
                        ps_bad_reason reason, const char *detail)
{
    char b64[DLQ_PAYLOAD_RAW_MAX / 3 * 4 + 4];
    size_t raw = m->len < DLQ_PAYLOAD_RAW_MAX ? m->len : DLQ_PAYLOAD_RAW_MAX;
    size_t n = base64(m->payload, raw, b64);
    const char *topic = rd_kafka_topic_name(m->rkt);
    ps_str none = {"", 0};

    ps_batch_begin(c->dlq, "XADD");
    ps_batch_arg_key(c->dlq, "dlq", none, NULL);
    ps_batch_arg_cstr(c->dlq, "MAXLEN");
    ps_batch_arg_cstr(c->dlq, "~");
    ps_batch_arg_i64(c->dlq, c->o->stream_maxlen);
    ps_batch_arg_cstr(c->dlq, "*");
    ps_batch_arg_cstr(c->dlq, "reason");
    ps_batch_arg_cstr(c->dlq, ps_bad_reason_name(reason));
    ps_batch_arg_cstr(c->dlq, "detail");
    ps_batch_arg_cstr(c->dlq, detail);
    ps_batch_arg_cstr(c->dlq, "topic");
    ps_batch_arg_cstr(c->dlq, topic);
    ps_batch_arg_cstr(c->dlq, "partition");
    ps_batch_arg_i64(c->dlq, m->partition);
    ps_batch_arg_cstr(c->dlq, "offset");
    ps_batch_arg_i64(c->dlq, m->offset);
    ps_batch_arg_cstr(c->dlq, "payload");
    ps_batch_arg(c->dlq, b64, n);
    ps_batch_arg_cstr(c->dlq, "payload_encoding");
    ps_batch_arg_cstr(c->dlq, "base64");
    ps_batch_arg_cstr(c->dlq, "payload_len");
    ps_batch_arg_i64(c->dlq, (int64_t)m->len);
    ps_batch_end(c->dlq);

    if (c->dlq_rk != NULL) {
        char src[320];
        snprintf(src, sizeof(src), "%s:%" PRId32 ":%" PRId64, topic,
                 m->partition, m->offset);
        const char *rname = ps_bad_reason_name(reason);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            c->dlq_rk, RD_KAFKA_V_TOPIC(c->o->dlq_topic),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_VALUE(m->payload, m->len),
            RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_HEADER("propstream.reason", rname, -1),
            RD_KAFKA_V_HEADER("propstream.source", src, -1), RD_KAFKA_V_END);
        if (err)
            ps_warn("dlq topic %s: %s (record kept in ps:dlq)",
                    c->o->dlq_topic, rd_kafka_err2str(err));
        rd_kafka_poll(c->dlq_rk, 0);
    }
}

/* --------------------------------------------------------- one round */

static void copy_str(run_ctx *c, ps_str *s)
{
    if (s->ptr == NULL)
        return;
    char *dst = c->arena + c->arena_len;
    memcpy(dst, s->ptr, s->len);
    c->arena_len += s->len;
    s->ptr = dst;
}

static bool beyond_limit(run_ctx *c, int64_t ts);
static void hold_at(run_ctx *c, ps_part *p, int64_t ts);
static int queue_message(run_ctx *c, ps_part *p, rd_kafka_message_t *m);

/* Apply (or hold back) message m of partition p: decode it; a good event
 * beyond the round's alignment limit is held (returns true, m not
 * consumed: the caller keeps it at the head of p's held queue); anything
 * else is consumed: next offset, counters, dead letter or the round. */
static bool consume_message(run_ctx *c, ps_part *p, rd_kafka_message_t *m)
{
    char detail[256];
    ps_event ev;

    ps_bad_reason bad = ps_decoder_decode(c->dec, m->payload, m->len, &ev,
                                          detail, sizeof(detail));
    if (bad == PS_BAD_NONE && beyond_limit(c, ev.ts)) {
        hold_at(c, p, ev.ts);
        return true;
    }
    p->eof = false;
    p->next = m->offset + 1;
    c->total.in++;
    c->delta.in++;
    if (c->progress != NULL)
        *c->progress = c->total.in;
    if (bad != PS_BAD_NONE) {
        c->total.bad++;
        c->delta.bad++;
        c->total.bad_by[bad]++;
        c->delta.bad_by[bad]++;
        dead_letter(c, m, bad, detail);
        return false;
    }
    ev.part = p->slot;
    copy_str(c, &ev.event_id);
    copy_str(c, &ev.customer_id);
    copy_str(c, &ev.product_id);
    copy_str(c, &ev.campaign);
    c->evs[c->ev_n++] = ev;
    return false;
}

/* One polled message.  Returns true when it was kept (held back by
 * alignment, queued on its partition): the caller must not destroy it. */
static bool handle_message(run_ctx *c, rd_kafka_message_t *m)
{
    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            ps_part *p = ps_parts_find(&c->parts, rd_kafka_topic_name(m->rkt),
                                       m->partition);
            /* An end beyond what was delivered is stale (an event of
             * an earlier assignment, before a rebalance seeked back to
             * Redis's offsets): believing it would skip those messages. */
            int64_t seen = p == NULL ? -1 : p->next;
            if (p != NULL && p->held.n > 0) /* delivered, not applied */
                seen = ps_msgq_last(&p->held)->offset + 1;
            if (p == NULL || (seen >= 0 && m->offset > seen))
                return false;
            if (p->held.n > 0) {
                p->eof_at = m->offset; /* once the held ones are applied */
            } else {
                p->eof = true;
                if (m->offset >= 0)
                    p->next = m->offset;
            }
            return false;
        }
        ps_warn("kafka: %s", rd_kafka_message_errstr(m));
        return false;
    }
    ps_part *p =
        ps_parts_find(&c->parts, rd_kafka_topic_name(m->rkt), m->partition);
    if (p == NULL || (p->next >= 0 && m->offset < p->next))
        return false; /* not ours (any more), or already consumed */
    if (p->held.n > 0) /* behind held ones: in order, after them */
        return queue_message(c, p, m) == PS_OK;
    if (!consume_message(c, p, m))
        return false;
    return queue_message(c, p, m) == PS_OK;
}

/* Add id to the round's missing set unless present; keeps first copy. */
static void miss_add(run_ctx *c, ps_str id)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < id.len; i++)
        h = (h ^ (unsigned char)id.ptr[i]) * 1099511628211ULL;
    size_t mask = c->miss_set_cap - 1, i = (size_t)h & mask;
    while (c->miss_set[i] != 0) {
        if (ps_str_eq(c->miss[c->miss_set[i] - 1], id))
            return;
        i = (i + 1) & mask;
    }
    c->miss[c->miss_n++] = id;
    c->miss_set[i] = (uint32_t)c->miss_n;
}

static void on_state(void *opaque, size_t i, const char *val, size_t len)
{
    run_ctx *c = opaque;
    int err;
    if (c->load_err)
        return;
    if (ps_pipeline_add(c->pipe, c->miss[i], val, len, &err) == NULL) {
        c->load_err = err;
        ps_error("cannot restore %s%s%.*s from Redis: %s", c->o->prefix,
                 "state:cust:", (int)(c->miss[i].len > 64 ? 64 : c->miss[i].len),
                 c->miss[i].ptr, ps_err_str(err));
    }
}

static void build_keys(run_ctx *c)
{
    const char *pre = c->o->prefix, *mid = "state:cust:";
    size_t pl = strlen(pre), ml = strlen(mid), need = 0;

    for (size_t i = 0; i < c->miss_n; i++)
        need += pl + ml + c->miss[i].len;
    if (need > c->keybuf_cap) {
        free(c->keybuf);
        c->keybuf_cap = need * 2;
        c->keybuf = malloc(c->keybuf_cap);
    }
    size_t off = 0;
    for (size_t i = 0; i < c->miss_n; i++) {
        char *k = c->keybuf + off;
        memcpy(k, pre, pl);
        memcpy(k + pl, mid, ml);
        memcpy(k + pl + ml, c->miss[i].ptr, c->miss[i].len);
        c->keys[i] = k;
        c->keylens[i] = pl + ml + c->miss[i].len;
        off += c->keylens[i];
    }
}

static int wait_for_redis(run_ctx *c);

/* Fetch the saved state of the customers in c->miss (none in memory) and
 * add them, in one pipelined round trip; waits for Redis if it is away. */
static int fetch_missing(run_ctx *c)
{
    if (c->miss_n == 0)
        return PS_OK;
    build_keys(c);
    if (c->keybuf == NULL)
        return PS_ERR_NOMEM;
    for (;;) {
        if (ps_redis_sink_get_many(c->sink, c->miss_n, c->keys, c->keylens,
                                   on_state, c) == PS_OK)
            break;
        /* a partial read may have added some customers: keep them (they
         * came from Redis) and fetch only the rest */
        if (wait_for_redis(c) < 0)
            return PS_ERR_IO;
        size_t k = 0;
        for (size_t i = 0; i < c->miss_n; i++)
            if (ps_pipeline_find(c->pipe, PS_KIND_CUSTOMER, c->miss[i]) == NULL)
                c->miss[k++] = c->miss[i];
        c->miss_n = k;
        build_keys(c);
    }
    return c->load_err;
}

/* Make sure every customer of the round is in memory. */
static int load_customers(run_ctx *c)
{
    c->miss_n = 0;
    memset(c->miss_set, 0, c->miss_set_cap * sizeof(*c->miss_set));
    for (size_t i = 0; i < c->ev_n; i++) {
        c->ev_cust[i] = ps_pipeline_find(c->pipe, PS_KIND_CUSTOMER,
                                         c->evs[i].customer_id);
        if (c->ev_cust[i] == NULL)
            miss_add(c, c->evs[i].customer_id);
    }
    int rc = fetch_missing(c);
    if (rc == PS_OK && c->miss_n > 0) /* the ones just added */
        for (size_t i = 0; i < c->ev_n; i++)
            if (c->ev_cust[i] == NULL)
                c->ev_cust[i] = ps_pipeline_find(c->pipe, PS_KIND_CUSTOMER,
                                                 c->evs[i].customer_id);
    return rc;
}

/* ZRANGE callback: copy each member (a customer id) into c->due. */
static void on_due(void *opaque, size_t i, const char *val, size_t len)
{
    run_ctx *c = opaque;
    (void)i;
    if (len == 0 || len > PS_ID_MAX || c->due_n >= c->due_cap)
        return;
    memcpy(c->due_buf + c->due_n * PS_ID_MAX, val, len);
    c->due_len[c->due_n++] = (uint32_t)len;
}

/*
 * Customers with open funnels that are not in memory (after a restart, a
 * rebalance or an eviction) are listed in ps:state:expiry:{topic}:{partition}
 * with their earliest expiry (see aggregates/funnels.c).  Load those whose
 * expiry the partition's watermark has passed, so the next advance()
 * closes their funnels even if they never send another event.  The index
 * is read in pages, lowest expiry first; due customers still in memory
 * are skipped (their funnels close in memory; the index loses them at the
 * next flush), and at most due_cap customers are loaded per partition per
 * call.  Returns how many were loaded, or a negative ps_err.
 */
static int load_due(run_ctx *c)
{
    char key[1024];
    int loaded = 0;
    for (size_t i = 0; i < c->parts.n; i++) {
        const ps_part *part = &c->parts.v[i];
        int64_t wm = ps_pipeline_watermark(c->pipe, part->slot);
        if (wm == INT64_MIN)
            continue;
        int n = snprintf(key, sizeof(key), "%sstate:expiry:%s:%" PRId32,
                         c->o->prefix, part->topic, part->partition);
        if (n < 0 || (size_t)n >= sizeof(key))
            continue;
        size_t here = 0; /* loaded for this partition */
        for (size_t offset = 0; here < c->due_cap;) {
            int got;
            c->due_n = 0;
            while ((got = ps_redis_sink_zrange_below(
                        c->sink, key, (size_t)n, wm, offset, c->due_cap,
                        on_due, c)) < 0)
                if (wait_for_redis(c) < 0)
                    return PS_ERR_IO;
            c->miss_n = 0;
            for (size_t k = 0; k < c->due_n && here + c->miss_n < c->due_cap;
                 k++) {
                ps_str id = {c->due_buf + k * PS_ID_MAX, c->due_len[k]};
                if (ps_pipeline_find(c->pipe, PS_KIND_CUSTOMER, id) == NULL)
                    c->miss[c->miss_n++] = id;
            }
            int rc = fetch_missing(c);
            if (rc < 0)
                return rc;
            here += c->miss_n;
            if ((size_t)got < c->due_cap)
                break; /* the last page */
            offset += (size_t)got;
        }
        loaded += (int)here;
        c->due_loaded += (int64_t)here;
    }
    return loaded;
}

struct shared_load {
    ps_pipeline *pipe;
    ps_entity **list;
};

static void on_shared_field(void *opaque, size_t i, const char *f, size_t flen,
                            const char *v, size_t vlen)
{
    struct shared_load *l = opaque;
    ps_pipeline_load_field(l->pipe, l->list[i], f, flen, v, vlen);
}

/* Read the bases of every shared entity (product, campaign, global) that
 * has none yet from its output hash, in one pipelined round trip. */
static int load_shared(run_ctx *c)
{
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(c->pipe, &list);
    const char *pre = c->o->prefix;
    size_t pl = strlen(pre), need = 0;

    if (n == 0)
        return PS_OK;
    for (size_t i = 0; i < n; i++)
        need += pl + strlen(ps_kind_key((ps_kind)list[i]->kind)) +
                list[i]->id.len;
    char *buf = malloc(need ? need : 1);
    const char **keys = malloc(n * sizeof(*keys));
    size_t *lens = malloc(n * sizeof(*lens));
    if (buf == NULL || keys == NULL || lens == NULL) {
        free(buf);
        free(keys);
        free(lens);
        return PS_ERR_NOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *kk = ps_kind_key((ps_kind)list[i]->kind);
        size_t kl = strlen(kk);
        keys[i] = buf + off;
        memcpy(buf + off, pre, pl);
        memcpy(buf + off + pl, kk, kl);
        memcpy(buf + off + pl + kl, list[i]->id.ptr, list[i]->id.len);
        lens[i] = pl + kl + list[i]->id.len;
        off += lens[i];
    }
    struct shared_load l = {c->pipe, list};
    int rc;
    /* fields overwrite bases, so a retry after a partial read is safe */
    while ((rc = ps_redis_sink_hgetall_many(c->sink, n, keys, lens,
                                            on_shared_field, &l)) != PS_OK)
        if (wait_for_redis(c) < 0)
            break;
    if (rc == PS_OK)
        for (size_t i = 0; i < n; i++)
            ps_pipeline_loaded(c->pipe, list[i]);
    free(buf);
    free(keys);
    free(lens);
    return rc;
}

/* Make sure the round's products and campaigns exist (their bases are
 * loaded before their events are applied). */
static int register_shared(run_ctx *c)
{
    for (size_t i = 0; i < c->ev_n; i++) {
        const ps_event *ev = &c->evs[i];
        c->ev_prod[i] = c->ev_camp[i] = NULL;
        if (ev->product_id.ptr != NULL &&
            (c->ev_prod[i] = ps_pipeline_entity(c->pipe, PS_KIND_PRODUCT,
                                                ev->product_id)) == NULL)
            return PS_ERR_NOMEM;
        if (ev->campaign.ptr != NULL &&
            (c->ev_camp[i] = ps_pipeline_entity(c->pipe, PS_KIND_CAMPAIGN,
                                                ev->campaign)) == NULL)
            return PS_ERR_NOMEM;
    }
    return PS_OK;
}

/* Apply the round's events; afterwards the arena is empty.  Then let the
 * aggregates close what the watermarks passed. */
static int process_round(run_ctx *c)
{
    int rc = PS_OK;

    if (c->ev_n > 0) {
        if ((rc = load_customers(c)) < 0 || (rc = register_shared(c)) < 0 ||
            (rc = load_shared(c)) < 0)
            return rc;
        for (size_t i = 0; i < c->ev_n; i++) {
            bool late = false;
            rc = ps_pipeline_apply_to(c->pipe, &c->evs[i], c->ev_cust[i],
                                      c->ev_prod[i], c->ev_camp[i], &late);
            if (rc == PS_AGG_DROP) {
                c->total.dup++;
                c->delta.dup++;
                continue;
            }
            if (rc < 0) {
                ps_error("aggregate failed: %s", ps_err_str(rc));
                return rc;
            }
            c->total.applied++;
            c->delta.applied++;
            if (late) {
                c->total.late++;
                c->delta.late++;
            }
        }
        c->ev_n = 0;
        c->arena_len = 0;
    }
    rc = ps_pipeline_advance(c->pipe, now_ms(CLOCK_MONOTONIC));
    if (rc < 0)
        return rc;
    /* entities created on demand (e.g. by restored funnels) */
    return load_shared(c);
}

/* -------------------------------------------------------------- flush */

static bool offsets_moved(const run_ctx *c)
{
    for (size_t i = 0; i < c->parts.n; i++)
        if (c->parts.v[i].next != c->parts.v[i].flushed &&
            c->parts.v[i].next >= 0)
            return true;
    return false;
}

static bool flush_needed(const run_ctx *c)
{
    return ps_pipeline_dirty_count(c->pipe) > 0 || ps_batch_count(c->dlq) > 0 ||
           offsets_moved(c) || c->delta.in > 0 || c->delta.dup > 0;
}

static void metric_incr(ps_batch *b, const char *field, int64_t v)
{
    ps_str none = {"", 0};
    ps_batch_begin(b, "HINCRBY");
    ps_batch_arg_key(b, "metrics", none, NULL);
    ps_batch_arg_cstr(b, field);
    ps_batch_arg_i64(b, v);
    ps_batch_end(b);
}

static void build_flush(run_ctx *c, uint64_t seq)
{
    ps_batch *b = c->out;
    ps_str none = {"", 0};
    ps_str group = {c->o->group, (uint32_t)strlen(c->o->group)};
    const char *argv[64];
    size_t argvlen[64];

    ps_batch_clear(b);
    /* dead letters first: they were consumed before the changes below */
    for (size_t i = 0; i < ps_batch_count(c->dlq); i++) {
        size_t argc = ps_batch_argc(c->dlq, i);
        if (argc > 64)
            continue; /* never: dead_letter builds 22 arguments */
        ps_batch_argv(c->dlq, i, argv, argvlen);
        ps_batch_begin(b, argv[0]);
        for (size_t a = 1; a < argc; a++)
            ps_batch_arg(b, argv[a], argvlen[a]);
        ps_batch_end(b);
    }
    ps_pipeline_write(c->pipe, b);

    size_t consumed = 0;
    for (size_t i = 0; i < c->parts.n; i++)
        consumed += c->parts.v[i].next >= 0;
    if (consumed > 0) { /* (an HSET without fields would fail the EXEC) */
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "offsets:", group, NULL);
        for (size_t i = 0; i < c->parts.n; i++) {
            const ps_part *p = &c->parts.v[i];
            if (p->next < 0)
                continue;
            ps_batch_arg_fmt(b, "%s:%" PRId32, p->topic, p->partition);
            ps_batch_arg_i64(b, p->next);
        }
        ps_batch_end(b);
        /* each partition's clock with its offset: "max_ts cause" */
        size_t clocks = 0;
        for (size_t i = 0; i < c->parts.n; i++) {
            const ps_part *p = &c->parts.v[i];
            ps_str cause;
            int64_t max_ts =
                ps_pipeline_partition_clock(c->pipe, p->slot, &cause);
            if (p->next < 0 || max_ts == INT64_MIN)
                continue;
            if (clocks++ == 0) {
                ps_batch_begin(b, "HSET");
                ps_batch_arg_key(b, "state:clock:", group, NULL);
            }
            ps_batch_arg_fmt(b, "%s:%" PRId32, p->topic, p->partition);
            ps_batch_arg_fmt(b, "%" PRId64 " %.*s", max_ts, (int)cause.len,
                             cause.ptr);
        }
        if (clocks > 0)
            ps_batch_end(b);
    }

    metric_incr(b, "events_in", c->delta.in);
    metric_incr(b, "events_applied", c->delta.applied);
    metric_incr(b, "events_bad", c->delta.bad);
    metric_incr(b, "events_dup", c->delta.dup);
    metric_incr(b, "events_late", c->delta.late);
    metric_incr(b, "events_lost_retention", c->delta.lost);
    metric_incr(b, "redis_rollbacks", c->delta.rollbacks);
    metric_incr(b, "customers_evicted", c->delta.evicted);
    metric_incr(b, "flushes", 1);
    for (int r = 1; r < PS_BAD_REASON_COUNT; r++) {
        if (c->delta.bad_by[r] == 0)
            continue;
        char field[64];
        snprintf(field, sizeof(field), "events_bad_%s",
                 ps_bad_reason_name((ps_bad_reason)r));
        metric_incr(b, field, c->delta.bad_by[r]);
    }
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "metrics", none, NULL);
    ps_batch_arg_cstr(b, "last_flush_ms");
    ps_batch_arg_i64(b, now_ms(CLOCK_REALTIME));
    ps_batch_arg_cstr(b, "last_flush_duration_us");
    ps_batch_arg_i64(b, c->last_flush_us);
    ps_batch_arg_cstr(b, "lag");
    ps_batch_arg_i64(b, c->lag);
    if (ps_pipeline_global_watermark(c->pipe) != INT64_MIN) {
        ps_batch_arg_cstr(b, "watermark");
        ps_batch_arg_i64(b, ps_pipeline_global_watermark(c->pipe));
    }
    ps_batch_end(b);

    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "state:flush:", group, NULL);
    ps_batch_arg_cstr(b, c->instance);
    ps_batch_arg_i64(b, (int64_t)seq);
    ps_batch_end(b);
}

static void commit_to_kafka(run_ctx *c)
{
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)c->parts.n);
    for (size_t i = 0; i < c->parts.n; i++)
        if (c->parts.v[i].next >= 0)
            rd_kafka_topic_partition_list_add(l, c->parts.v[i].topic,
                                              c->parts.v[i].partition)
                ->offset = c->parts.v[i].next;
    if (l->cnt > 0)
        rd_kafka_commit(c->rk, l, 1); /* async, for monitoring only */
    rd_kafka_topic_partition_list_destroy(l);
}

static void set_paused(run_ctx *c, bool pause)
{
    if (c->paused == pause || c->parts.n == 0) {
        c->paused = pause && c->parts.n > 0;
        return;
    }
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)c->parts.n);
    for (size_t i = 0; i < c->parts.n; i++)
        if (!c->parts.v[i].full) /* full ones stay paused (align) */
            rd_kafka_topic_partition_list_add(l, c->parts.v[i].topic,
                                              c->parts.v[i].partition);
    if (l->cnt > 0 && pause)
        rd_kafka_pause_partitions(c->rk, l);
    else if (l->cnt > 0)
        rd_kafka_resume_partitions(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    c->paused = pause;
}

static void pause_one(run_ctx *c, const ps_part *p, bool pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    if (pause)
        rd_kafka_pause_partitions(c->rk, l);
    else
        rd_kafka_resume_partitions(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/*
 * Watermark alignment.  Partitions are fetched in no particular order, and
 * one fetch can bring days of a partition's event time, so when a backlog
 * is read one partition can run far ahead of another.  The rolling cohort
 * windows follow the global watermark with limited room ahead; what runs
 * further ahead pushes them on, and then their content depends on fetch
 * order.  So each round accepts events up to
 *     limit = global watermark + lateness + --max-ahead-ms
 * and the first event beyond it is held back with everything after it on
 * its partition, in a queue of consumed but unapplied messages (the
 * offsets saved exclude them).  A held partition holds back the global
 * watermark where its first held event will put it, so the watermark is
 * the earliest next event time over the busy partitions.  At the start of
 * each round, a partition whose held event is within half the limit's
 * margin is drained (its queue applied, up to the new limit).  If every
 * partition is held, the earliest is within it: no deadlock.  A queue at
 * its cap pauses the partition (librdkafka then drops what it prefetched
 * and resumes after the last message delivered, the queue's last): memory
 * stays bounded and nothing is fetched twice in the common case.
 */
#define HELD_CAP(c) ((uint32_t)((c)->o->batch_max > 1024 ? (c)->o->batch_max \
                                                          : 1024))

static int queue_message(run_ctx *c, ps_part *p, rd_kafka_message_t *m)
{
    if (ps_msgq_push(&p->held, m) < 0) {
        c->fatal = PS_ERR_NOMEM;
        return PS_ERR_NOMEM;
    }
    if (p->held.n == 1)
        c->held_n++;
    if (p->held.n >= HELD_CAP(c) && !p->full) {
        p->full = true;
        if (!c->paused)
            pause_one(c, p, true);
    }
    return PS_OK;
}

/* p's queue starts at an event of time ts beyond the limit. */
static void hold_at(run_ctx *c, ps_part *p, int64_t ts)
{
    p->held_ts = ts;
    if (ps_pipeline_hold_partition(c->pipe, p->slot, ts,
                                   now_ms(CLOCK_MONOTONIC)) < 0)
        c->fatal = PS_ERR_NOMEM;
}

/* p's queue is empty again. */
static void queue_emptied(run_ctx *c, ps_part *p)
{
    c->held_n--;
    if (p->eof_at >= 0 && p->next >= p->eof_at)
        p->eof = true;
    p->eof_at = -1;
    if (p->full) {
        p->full = false;
        if (!c->paused)
            pause_one(c, p, false);
    }
}

/* Apply p's held messages in order, until one is beyond the limit again
 * or the round is full. */
static void drain_held(run_ctx *c, ps_part *p)
{
    size_t max = (size_t)c->o->batch_max;
    if (p->held_ts != INT64_MIN) {
        p->held_ts = INT64_MIN;
        if (ps_pipeline_hold_partition(c->pipe, p->slot, INT64_MIN,
                                       now_ms(CLOCK_MONOTONIC)) < 0)
            c->fatal = PS_ERR_NOMEM;
    }
    rd_kafka_message_t *m;
    while (c->ev_n < max && !c->fatal && (m = ps_msgq_peek(&p->held))) {
        if (!(p->next >= 0 && m->offset < p->next) &&
            consume_message(c, p, m))
            return; /* held again: stays at the head */
        rd_kafka_message_destroy(ps_msgq_pop(&p->held));
    }
    if (p->held.n == 0)
        queue_emptied(c, p);
}

/* Forget p's held messages (revoke, rollback, stop): they were not
 * applied, so whoever consumes the partition next reads them again. */
static void drop_held(run_ctx *c, ps_part *p)
{
    if (p->held.n > 0)
        c->held_n--;
    ps_msgq_clear(&p->held);
    p->eof_at = -1;
    if (p->held_ts != INT64_MIN) {
        p->held_ts = INT64_MIN;
        ps_pipeline_hold_partition(c->pipe, p->slot, INT64_MIN, 0);
    }
    if (p->full) {
        p->full = false;
        if (!c->paused && c->rk != NULL)
            pause_one(c, p, false);
    }
}

/* Does p hold back the alignment front?  Not when it is idle (no event
 * for --idle-partition-ms: the global watermark does not wait for it
 * either), nor when it is consumed to its end as the broker confirmed. */
static bool in_front(run_ctx *c, const ps_part *p)
{
    if (p->held.n > 0)
        return true;
    if (ps_pipeline_partition_is_idle(c->pipe, p->slot))
        return false;
    return !(p->eof && p->end_seen == p->next);
}

/* Every partition still in the front is held or consumed to its end (as
 * far as this consumer knows): ask the broker whether those really are at
 * their end (the tail of a backlog), so they stop holding the others back;
 * a partition whose broker does not answer (down) keeps holding them.
 * One ListOffsets request per leader for all of them
 * (rd_kafka_offsets_for_times with the LATEST timestamp, -1, gives each
 * one's high watermark): asking partition by partition
 * (rd_kafka_query_watermark_offsets) took a round trip each, 4 to 7 s per
 * stall with 64 partitions, and the end of a backlog stalls many times. */
static void confirm_ends(run_ctx *c)
{
    for (size_t i = 0; i < c->parts.n; i++) {
        const ps_part *p = &c->parts.v[i];
        if (in_front(c, p) && p->held.n == 0 && !p->eof)
            return; /* something can still be read: not stalled */
    }
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)c->parts.n);
    if (l == NULL)
        return;
    for (size_t i = 0; i < c->parts.n; i++) {
        const ps_part *p = &c->parts.v[i];
        if (!in_front(c, p) || p->held.n > 0 || p->next < 0)
            continue;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset =
            -1; /* the LATEST timestamp: the high watermark */
    }
    if (l->cnt > 0 &&
        rd_kafka_offsets_for_times(c->rk, l, 1000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int k = 0; k < l->cnt; k++) {
            const rd_kafka_topic_partition_t *e = &l->elems[k];
            ps_part *p = ps_parts_find(&c->parts, e->topic, e->partition);
            if (p != NULL && e->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                e->offset >= 0 && p->next >= e->offset)
                p->end_seen = p->next;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* At the start of a round: this round's limit; drain what is due.  The
 * front is the earliest next event time over the partitions that still
 * have events to read (in_front): a held partition's first held event,
 * another's clock.  Partitions at their end or idle do not hold it back,
 * although the global watermark itself waits for a partition at its end
 * until it is idle, so the final state does not depend on fetch timing. */
static void align_partitions(run_ctx *c)
{
    int64_t ahead = c->o->max_ahead_ms;
    c->align_limit = INT64_MAX;
    if (ahead <= 0 || c->rk == NULL)
        return;
    int64_t front = INT64_MAX;
    bool any_clock = false;
    for (size_t i = 0; i < c->parts.n; i++) {
        const ps_part *p = &c->parts.v[i];
        ps_str cause;
        int64_t clock = ps_pipeline_partition_clock(c->pipe, p->slot, &cause);
        int64_t t = INT64_MAX;
        if (clock != INT64_MIN)
            any_clock = true;
        if (p->held.n > 0 && p->held_ts != INT64_MIN)
            t = p->held_ts;
        else if (in_front(c, p) && clock != INT64_MIN)
            t = clock;
        if (t < front)
            front = t;
    }
    if (front == INT64_MAX) {
        /* nothing known yet: the round's first event sets the limit */
        if (!any_clock)
            c->align_limit = INT64_MIN;
        return;
    }
    c->align_limit = front > INT64_MAX - ahead ? INT64_MAX : front + ahead;
    for (size_t i = 0; i < c->parts.n && c->held_n > 0; i++) {
        ps_part *p = &c->parts.v[i];
        if (p->held.n > 0 &&
            (p->held_ts == INT64_MIN || p->held_ts - front <= ahead / 2))
            drain_held(c, p);
    }
    if (c->held_n > 0)
        confirm_ends(c);
}

/* handle_message: should an event of time ts on p wait? */
static bool beyond_limit(run_ctx *c, int64_t ts)
{
    if (c->align_limit == INT64_MIN) /* no clock yet: the first event */
        c->align_limit = ts > INT64_MAX - c->o->max_ahead_ms
                             ? INT64_MAX
                             : ts + c->o->max_ahead_ms;
    return ts > c->align_limit;
}

static void flush_succeeded(run_ctx *c, uint64_t seq, int64_t t0)
{
    bool moved = offsets_moved(c);

    ps_pipeline_flushed(c->pipe);
    ps_batch_clear(c->dlq);
    memset(&c->delta, 0, sizeof(c->delta));
    for (size_t i = 0; i < c->parts.n; i++)
        c->parts.v[i].flushed = c->parts.v[i].next;
    c->flush_seq = seq;
    c->last_flush_at = now_ms(CLOCK_MONOTONIC);
    c->last_flush_us = mono_us() - t0;
    c->flush_us_sum += c->last_flush_us;
    c->flushes++;
    if (moved && c->rk != NULL)
        commit_to_kafka(c);
    set_paused(c, false);
    size_t cap = (size_t)c->o->max_customers;
    if (cap > 0 && ps_pipeline_customer_count(c->pipe) > cap) {
        size_t n = ps_pipeline_evict_idle(c->pipe, cap - cap / 10);
        c->total.evicted += (int64_t)n;
        c->delta.evicted += (int64_t)n;
    }
}

struct token_check {
    const char *instance;
    uint64_t seq;
    bool landed;
    uint64_t value; /* as read, 0 when absent */
};

static void on_token(void *opaque, const char *f, size_t flen, const char *v,
                     size_t vlen)
{
    struct token_check *t = opaque;
    char num[32];
    if (flen != strlen(t->instance) || memcmp(f, t->instance, flen) != 0 ||
        vlen >= sizeof(num))
        return;
    memcpy(num, v, vlen);
    num[vlen] = '\0';
    t->value = strtoull(num, NULL, 10);
    t->landed = t->value == t->seq;
}

/* This instance's flush token as Redis holds it (0 when absent). */
static int read_token(run_ctx *c, uint64_t *seq)
{
    char key[512];
    struct token_check t = {c->instance, 0, false, 0};
    snprintf(key, sizeof(key), "%sstate:flush:%s", c->o->prefix, c->o->group);
    if (ps_redis_sink_hgetall(c->sink, key, on_token, &t) != PS_OK)
        return PS_ERR_IO;
    *seq = t.value;
    return PS_OK;
}

/* Wait until Redis answers again; consumption is paused meanwhile.  Then
 * read our flush token back: when it is older than our last confirmed
 * flush, Redis lost writes it had acknowledged (restarted from an older
 * snapshot or a replica that lagged), and memory must be rolled back to
 * it before anything else is written (c->rollback, done by flush()). */
static int wait_for_redis(run_ctx *c)
{
    ps_warn("Redis unavailable (%s): consumption paused, nothing is lost; "
            "retrying",
            ps_redis_sink_errstr(c->sink));
    set_paused(c, true);
    while (!stop_requested) {
        uint64_t held;
        if (ps_redis_sink_reconnect(c->sink) == PS_OK &&
            read_token(c, &held) == PS_OK) {
            if (held < c->flush_seq && !c->rollback) {
                c->rollback = true;
                c->rollback_to = held;
            }
            ps_info("Redis is back: resuming");
            return PS_OK;
        }
        usleep(50 * 1000);
    }
    return PS_ERR_IO;
}

static int roll_back(run_ctx *c);
static int load_agg_states(run_ctx *c, char *err, size_t errsz);

/* Write everything pending as one transaction; retries until it is known
 * to have landed, or stop is requested (then PS_ERR_IO: nothing after the
 * previous flush is in Redis, and it will be re-consumed on restart). */
static int flush(run_ctx *c, bool force)
{
    if (c->rollback)
        return roll_back(c);
    if (!force && !flush_needed(c))
        return PS_OK;
    uint64_t seq = c->flush_seq + 1;
    char key[512];
    snprintf(key, sizeof(key), "%sstate:flush:%s", c->o->prefix, c->o->group);
    for (;;) {
        int64_t t0 = mono_us();
        build_flush(c, seq);
        if (ps_batch_error(c->out) < 0 || ps_batch_error(c->dlq) < 0) {
            ps_error("out of memory while building a flush");
            return PS_ERR_NOMEM;
        }
        if (ps_redis_sink_exec(c->sink, c->out) == PS_OK) {
            flush_succeeded(c, seq, t0);
            return PS_OK;
        }
        for (;;) {
            if (wait_for_redis(c) < 0)
                return PS_ERR_IO;
            if (c->rollback)
                return roll_back(c); /* the pending flush goes too */
            struct token_check t = {c->instance, seq, false, 0};
            if (ps_redis_sink_hgetall(c->sink, key, on_token, &t) == PS_OK) {
                if (t.landed) {
                    ps_info("flush %" PRIu64 " had landed before Redis went "
                            "away",
                            seq);
                    flush_succeeded(c, seq, t0);
                    return PS_OK;
                }
                break; /* not applied: write it again */
            }
        }
    }
}

/* ---------------------------------------------------------- rebalance */

struct offsets_read {
    rd_kafka_topic_partition_list_t *parts;
};

struct clocks_read {
    run_ctx *c;
    rd_kafka_topic_partition_list_t *parts;
};

/* ps:state:clock:{group} field "topic:partition" = "max_ts cause":
 * restore the clock of an assigned partition. */
static void on_clock(void *opaque, const char *f, size_t flen, const char *v,
                     size_t vlen)
{
    struct clocks_read *r = opaque;
    char field[512], val[64 + PS_ID_MAX];
    if (flen >= sizeof(field) || vlen >= sizeof(val))
        return;
    memcpy(field, f, flen);
    field[flen] = '\0';
    memcpy(val, v, vlen);
    val[vlen] = '\0';
    char *colon = strrchr(field, ':'), *end;
    if (colon == NULL)
        return;
    *colon = '\0';
    int32_t partition = (int32_t)strtol(colon + 1, NULL, 10);
    errno = 0;
    int64_t max_ts = strtoll(val, &end, 10);
    if (errno != 0 || end == val || (*end != ' ' && *end != '\0'))
        return;
    const char *cause = *end == ' ' ? end + 1 : end;
    for (int i = 0; i < r->parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &r->parts->elems[i];
        if (tp->partition != partition || strcmp(tp->topic, field) != 0)
            continue;
        ps_part *part = ps_parts_find(&r->c->parts, tp->topic, partition);
        if (part != NULL &&
            ps_pipeline_restore_partition_clock(
                r->c->pipe, part->slot, max_ts,
                (ps_str){cause, (uint32_t)strlen(cause)},
                now_ms(CLOCK_MONOTONIC)) < 0)
            r->c->fatal = PS_ERR_NOMEM;
    }
}

static void on_offset(void *opaque, const char *f, size_t flen, const char *v,
                      size_t vlen)
{
    struct offsets_read *r = opaque;
    char field[512], num[32];
    if (flen >= sizeof(field) || vlen >= sizeof(num))
        return;
    memcpy(field, f, flen);
    field[flen] = '\0';
    memcpy(num, v, vlen);
    num[vlen] = '\0';
    char *colon = strrchr(field, ':');
    if (colon == NULL)
        return;
    *colon = '\0';
    int32_t part = (int32_t)strtol(colon + 1, NULL, 10);
    for (int i = 0; i < r->parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &r->parts->elems[i];
        if (tp->partition == part && strcmp(tp->topic, field) == 0)
            tp->offset = strtoll(num, NULL, 10);
    }
}

/*
 * Roll memory back to what Redis holds: it came back without flushes this
 * instance had confirmed.  Everything in memory (and the unflushed round)
 * is dropped, a fresh pipeline loads the aggregates' saved state, and every
 * assigned partition seeks back to the offset Redis holds, with the clock
 * saved alongside it.  What Redis lost is then consumed and applied again,
 * exactly once, on top of what it kept.
 */
static int roll_back(run_ctx *c)
{
    char err[512], key[512];
    ps_warn("Redis came back without this instance's flushes %" PRIu64
            "..%" PRIu64 " (restarted from an older snapshot?): rolling "
            "memory back to what Redis holds and re-consuming from its "
            "offsets",
            c->rollback_to + 1, c->flush_seq);
    ps_pipeline *fresh = ps_pipeline_new(&c->conf, err, sizeof(err));
    if (fresh == NULL) {
        ps_error("rollback: %s", err);
        return PS_ERR_NOMEM;
    }
    ps_pipeline_destroy(c->pipe);
    c->pipe = fresh;
    c->ev_n = 0;
    c->arena_len = 0;
    ps_batch_clear(c->dlq);
    memset(&c->delta, 0, sizeof(c->delta));
    c->delta.rollbacks = 1;
    c->total.rollbacks++;
    c->flush_seq = c->rollback_to;
    c->rollback = false;
    int rc;
    while ((rc = load_agg_states(c, err, sizeof(err))) < 0) {
        if (rc != PS_ERR_IO) {
            ps_error("rollback: %s", err);
            return rc;
        }
        if (wait_for_redis(c) < 0)
            return PS_ERR_IO;
    }

    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)c->parts.n);
    for (size_t i = 0; i < c->parts.n; i++) {
        ps_part *p = &c->parts.v[i];
        char name[512];
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        snprintf(name, sizeof(name), "%s:%" PRId32, p->topic, p->partition);
        if (ps_pipeline_name_slot(c->pipe, p->slot, name) < 0)
            c->fatal = PS_ERR_NOMEM;
    }
    struct offsets_read r = {l};
    snprintf(key, sizeof(key), "%soffsets:%s", c->o->prefix, c->o->group);
    while (ps_redis_sink_hgetall(c->sink, key, on_offset, &r) != PS_OK)
        if (wait_for_redis(c) < 0)
            break;
    struct clocks_read cr = {c, l};
    snprintf(key, sizeof(key), "%sstate:clock:%s", c->o->prefix, c->o->group);
    while (ps_redis_sink_hgetall(c->sink, key, on_clock, &cr) != PS_OK)
        if (wait_for_redis(c) < 0)
            break;
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        ps_part *p = ps_parts_find(&c->parts, tp->topic, tp->partition);
        if (p == NULL)
            continue;
        p->next = p->flushed = tp->offset >= 0 ? tp->offset : -1;
        p->eof = false;
        ps_info("rollback: %s [%" PRId32 "] from offset %s%" PRId64,
                tp->topic, tp->partition,
                tp->offset >= 0 ? "" : "(beginning) ",
                tp->offset >= 0 ? tp->offset : 0);
    }
    /* the partitions are paused (Redis was away): resume, then seek; the
     * clocks went back too, so alignment starts over */
    for (size_t i = 0; i < c->parts.n; i++)
        drop_held(c, &c->parts.v[i]); /* (the pipeline is new anyway) */
    c->paused = true;
    set_paused(c, false);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, l, 10000);
    if (e != NULL) {
        ps_error("rollback: seek: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        c->fatal = PS_ERR_IO;
    }
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            ps_error("rollback: seek %s [%" PRId32 "]: %s", l->elems[i].topic,
                     l->elems[i].partition, rd_kafka_err2str(l->elems[i].err));
            c->fatal = PS_ERR_IO;
        }
    rd_kafka_topic_partition_list_destroy(l);
    return c->fatal ? c->fatal : PS_OK;
}

static void on_assign(run_ctx *c, rd_kafka_topic_partition_list_t *l)
{
    char key[512];
    struct offsets_read r = {l};

    snprintf(key, sizeof(key), "%soffsets:%s", c->o->prefix, c->o->group);
    for (int i = 0; i < l->cnt; i++)
        l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    while (ps_redis_sink_hgetall(c->sink, key, on_offset, &r) != PS_OK)
        if (wait_for_redis(c) < 0)
            break;
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        ps_part *part = ps_parts_find(&c->parts, tp->topic, tp->partition);
        if (part == NULL)
            part = ps_parts_add(&c->parts, tp->topic, tp->partition,
                                tp->offset >= 0 ? tp->offset : -1);
        char name[512];
        snprintf(name, sizeof(name), "%s:%" PRId32, tp->topic, tp->partition);
        if (part == NULL ||
            ps_pipeline_name_slot(c->pipe, part->slot, name) < 0)
            c->fatal = PS_ERR_NOMEM;
        ps_info("assigned %s [%" PRId32 "] from offset %s%" PRId64, tp->topic,
                tp->partition, tp->offset >= 0 ? "" : "(beginning) ",
                tp->offset >= 0 ? tp->offset : 0);
    }
    c->alone_known = false;
    /* and their clocks, so lateness and windows continue exactly */
    struct clocks_read cr = {c, l};
    snprintf(key, sizeof(key), "%sstate:clock:%s", c->o->prefix, c->o->group);
    while (ps_redis_sink_hgetall(c->sink, key, on_clock, &cr) != PS_OK)
        if (wait_for_redis(c) < 0)
            break;
    rd_kafka_error_t *err = NULL;
    if (c->cooperative)
        err = rd_kafka_incremental_assign(c->rk, l);
    else
        rd_kafka_assign(c->rk, l);
    if (err != NULL) {
        ps_error("assign: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
    }
    /* a partition held (or paused) when it was last revoked from this
     * consumer must not stay paused */
    rd_kafka_resume_partitions(c->rk, l);
    c->paused = false;
}

static void on_revoke(run_ctx *c, rd_kafka_topic_partition_list_t *l)
{
    if (process_round(c) < 0 || flush(c, false) < 0) {
        ps_warn("partitions revoked before their last events were flushed; "
                "the new owner re-consumes them from Redis's offsets");
        c->fatal = c->fatal ? c->fatal : PS_ERR_IO;
    } else {
        /* another instance may update these customers now */
        ps_pipeline_forget_all(c->pipe);
    }
    if (c->cooperative) {
        rd_kafka_error_t *err = rd_kafka_incremental_unassign(c->rk, l);
        if (err != NULL)
            rd_kafka_error_destroy(err);
        for (int i = 0; i < l->cnt; i++) {
            ps_part *p = ps_parts_find(&c->parts, l->elems[i].topic,
                                       l->elems[i].partition);
            if (p == NULL)
                continue;
            drop_held(c, p);
            free(p->topic);
            *p = c->parts.v[--c->parts.n];
            c->parts.last = 0;
        }
    } else {
        rd_kafka_assign(c->rk, NULL);
        for (size_t i = 0; i < c->parts.n; i++)
            drop_held(c, &c->parts.v[i]);
        ps_parts_clear(&c->parts);
        c->held_n = 0;
    }
    ps_info("revoked %d partition(s)", l->cnt);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *l, void *opaque)
{
    run_ctx *c = opaque;
    c->cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(c, l);
    else
        on_revoke(c, l);
}

/* ------------------------------------------------------------- stats */

static void stats_line(run_ctx *c, int64_t *last_ms, int64_t *last_in)
{
    int64_t now = now_ms(CLOCK_MONOTONIC);
    double secs = (double)(now - *last_ms) / 1000.0;
    double rate = secs > 0 ? (double)(c->total.in - *last_in) / secs : 0;
    ps_redis_stats rs;

    ps_redis_sink_stats(c->sink, &rs);
    fprintf(stderr,
            "propstream stats: %.0f events/s, in %" PRId64 ", applied %" PRId64
            ", bad %" PRId64 ", dup %" PRId64 ", lag %" PRId64
            ", held %zu, customers %zu (evicted %" PRId64 "), flushes %" PRId64
            " (last %.1f ms, avg %.1f "
            "ms), redis %s\n",
            rate, c->total.in, c->total.applied, c->total.bad, c->total.dup,
            c->lag, c->held_n, ps_pipeline_customer_count(c->pipe),
            c->total.evicted,
            c->flushes,
            (double)c->last_flush_us / 1000.0,
            c->flushes ? (double)c->flush_us_sum / 1000.0 / (double)c->flushes
                       : 0.0,
            ps_redis_sink_connected(c->sink) ? "up" : "DOWN");
    *last_ms = now;
    *last_in = c->total.in;
}

/* ---------------------------------------------------------- the loop */

static bool caught_up(run_ctx *c)
{
    if (c->parts.n == 0)
        return false;
    for (size_t i = 0; i < c->parts.n; i++) {
        int64_t lo, hi;
        const ps_part *p = &c->parts.v[i];
        if (p->eof)
            continue;
        if (p->next >= 0 &&
            rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo,
                                           &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi >= 0 && p->next >= hi)
            continue;
        return false;
    }
    return true;
}

static int collect(run_ctx *c, int64_t deadline_ms)
{
    size_t max = (size_t)c->o->batch_max;
    int first = 1;

    align_partitions(c);

    while (c->ev_n < max && !stop_requested && !c->fatal) {
        int timeout = 0;
        if (first) {
            int64_t left = deadline_ms - now_ms(CLOCK_MONOTONIC);
            timeout = left < 0 ? 0 : left > 100 ? 100 : (int)left;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout);
        if (m == NULL)
            break;
        first = 0;
        if (!handle_message(c, m))
            rd_kafka_message_destroy(m);
    }
    return c->fatal;
}

/*
 * Scale-out.  Counters of shared hashes (product, campaign, global,
 * segment, cohort) are HINCRBY deltas, so they add up across instances;
 * but the values derived from them (posterior means, step probabilities,
 * ...) are computed by each instance from its view of the totals.  When
 * other instances write too, that view is refreshed every
 * --shared-refresh-ms: right after a successful flush the shared entities
 * are marked stale and their totals are read again when next used (see
 * ps_pipeline_refresh_shared), so derived values lag the other instances
 * by at most that period plus a flush.  An instance that owns every
 * partition (checked after each assignment) skips it.
 */
static int refresh_shared(run_ctx *c, int64_t now, int64_t *next)
{
    if (c->o->shared_refresh_ms == 0 || now < *next)
        return PS_OK;
    *next = now + c->o->shared_refresh_ms;
    if (!c->alone_known && c->parts.n > 0) {
        int total = ps_kafka_partition_count(c->rk, &c->o->topics, 2000);
        if (total < 0)
            return PS_OK; /* try again next period */
        c->alone = (size_t)total == c->parts.n;
        c->alone_known = true;
        if (!c->alone)
            ps_info("%zu of %d partitions assigned: other instances share "
                    "the totals; they are read again every %" PRId64 " ms",
                    c->parts.n, total, c->o->shared_refresh_ms);
    }
    if (!c->alone_known || c->alone)
        return PS_OK;
    return ps_pipeline_refresh_shared(c->pipe);
}

/*
 * Customers not in memory whose funnels the watermarks passed (load_due):
 * load them and let advance() close those funnels.  While running, one
 * pass (a page per partition) every second; with all, until none is left
 * -- at the end of the topic (-e) and at a graceful stop, so that what a
 * stop leaves in Redis is what an uninterrupted run reaching the same
 * watermarks writes (otherwise the expiries of customers forgotten at a
 * rebalance or evicted, due since the last pass, would wait for the next
 * start).  0 or a negative ps_err.
 */
static int close_due(run_ctx *c, bool all)
{
    int n;
    do {
        int rc;
        if ((n = load_due(c)) < 0)
            return n;
        if ((rc = process_round(c)) < 0)
            return rc;
    } while (all && n > 0);
    return PS_OK;
}

static int main_loop(run_ctx *c)
{
    int64_t interval = c->o->flush_interval_ms;
    int64_t next_flush = now_ms(CLOCK_MONOTONIC) + interval;
    int64_t stats_ms = now_ms(CLOCK_MONOTONIC), stats_in = 0;
    int64_t next_stats = stats_ms + c->o->stats_interval_s * 1000;
    int64_t next_due = 0, next_refresh = 0;

    while (!stop_requested) {
        if (collect(c, next_flush) < 0 || process_round(c) < 0)
            return c->fatal ? c->fatal : PS_ERR;
        int64_t now = now_ms(CLOCK_MONOTONIC);
        bool done = c->o->exit_at_end && caught_up(c);
        if (now >= next_due || done) {
            /* at the end, until every due customer is in memory */
            if (close_due(c, done) < 0)
                return c->fatal ? c->fatal : PS_ERR_IO;
            next_due = now + 1000;
        }
        if (now >= next_flush || done) {
            c->lag = ps_kafka_lag(c->rk, &c->parts);
            /* a heartbeat when idle: metrics (lag, last_flush_ms) stay
             * fresh, and a Redis that restarted -- perhaps from an older
             * snapshot -- is noticed within a second, not at the next
             * event */
            bool beat = now - c->last_flush_at >= 1000;
            if (flush(c, beat) < 0)
                return PS_ERR_IO;
            /* Spend at most about a fifth of the time flushing: when a
             * flush takes longer than interval / 4 (a backlog, many
             * customers changed), the next one waits 4x its duration, so
             * more events coalesce per write -- but never more than 1 s
             * (or the interval, if longer), so Redis stays fresh within
             * about a second even then.  Once caught up, flushes are small
             * and the configured interval holds again. */
            int64_t took = c->last_flush_us / 1000;
            int64_t wait = 4 * took > interval ? 4 * took : interval;
            int64_t cap = interval > 1000 ? interval : 1000;
            next_flush = now + (wait < cap ? wait : cap);
            if (refresh_shared(c, now, &next_refresh) < 0)
                return PS_ERR_NOMEM;
        }
        if (c->o->stats_interval_s > 0 && now >= next_stats) {
            c->lag = ps_kafka_lag(c->rk, &c->parts);
            stats_line(c, &stats_ms, &stats_in);
            next_stats = now + c->o->stats_interval_s * 1000;
        }
        if (done && !flush_needed(c)) {
            ps_info("caught up: every assigned partition consumed to its "
                    "end and flushed");
            return PS_OK;
        }
    }
    return PS_OK;
}

/* -------------------------------------------------------------- setup */

/*
 * Test hook: with PS_TEST_PROGRESS_FILE set, the count of records consumed
 * by this process (the stats line's "in") is kept in the first 8 bytes of
 * that file through a shared mapping, so it survives a SIGKILL: the crash
 * tests read it to measure how many records a killed process had consumed
 * beyond its last flush (re-consumed by the next one).  Not an option:
 * nothing but the tests needs it.
 */
static void open_progress(run_ctx *c)
{
    const char *path = getenv("PS_TEST_PROGRESS_FILE");
    if (path == NULL || *path == '\0')
        return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)sizeof(int64_t)) != 0) {
        ps_warn("PS_TEST_PROGRESS_FILE %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    void *m = mmap(NULL, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        ps_warn("PS_TEST_PROGRESS_FILE %s: %s", path, strerror(errno));
        return;
    }
    c->progress = m;
}

static int make_instance_id(char *out, size_t size)
{
    unsigned char r[8] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (f != NULL) {
        if (fread(r, 1, sizeof(r), f) != sizeof(r))
            memset(r, 0, sizeof(r));
        fclose(f);
    }
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(out, size, "%.16s-%d-%02x%02x%02x%02x", host, (int)getpid(), r[0],
             r[1], r[2], r[3]);
    return 0;
}

struct agg_state_read {
    run_ctx *c;
    size_t index;
    int rc;
};

static void on_agg_state(void *opaque, size_t i, const char *val, size_t len)
{
    struct agg_state_read *r = opaque;
    (void)i;
    if (val != NULL)
        r->rc = ps_pipeline_load_state(r->c->pipe, r->index, val, len);
}

/* Load every aggregate's own saved state (ps:state:agg:{name}). */
static int load_agg_states(run_ctx *c, char *err, size_t errsz)
{
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        if (!ps_pipeline_has_state(i))
            continue;
        char key[256];
        snprintf(key, sizeof(key), "%sstate:agg:%s", c->o->prefix,
                 ps_aggregates[i]->name);
        const char *keys[1] = {key};
        struct agg_state_read r = {c, i, PS_OK};
        if (ps_redis_sink_get_many(c->sink, 1, keys, NULL, on_agg_state, &r) <
            0) {
            ps_set_err(err, errsz, "cannot read %s: %s", key,
                       ps_redis_sink_errstr(c->sink));
            return PS_ERR_IO;
        }
        if (r.rc < 0) {
            ps_set_err(err, errsz, "%s holds unreadable state (%s)", key,
                       ps_err_str(r.rc));
            return PS_ERR_STATE;
        }
    }
    return PS_OK;
}

static int setup(run_ctx *c, char *err, size_t errsz)
{
    ps_redis_conf rc = {0};
    char host[256];
    ps_agg_conf *conf = &c->conf;
    size_t bm = (size_t)c->o->batch_max;

    c->dec = ps_decoder_new(c->o->schema_dir, err, errsz);
    if (c->dec == NULL)
        return PS_ERR_CONFIG;
    if (ps_redis_parse_addr(c->o->redis, host, sizeof(host), &rc.port) < 0) {
        ps_set_err(err, errsz, "--redis: '%s' is not host:port", c->o->redis);
        return PS_ERR_CONFIG;
    }
    ps_agg_conf_defaults(conf);
    conf->prefix = c->o->prefix;
    conf->allowed_lateness_ms = c->o->allowed_lateness_ms;
    conf->idle_partition_ms = c->o->idle_partition_ms;
    conf->attribution_ms = c->o->attribution_window_ms;
    conf->dedup_horizon_ms = c->o->dedup_horizon_ms;
    conf->dedup_max_ids = c->o->dedup_max_ids;
    if (strcmp(c->o->prior, "flat") == 0) {
        conf->prior_empirical = 0;
    } else if (strcmp(c->o->prior, "empirical") == 0) {
        conf->prior_empirical = 1;
    } else {
        ps_set_err(err, errsz, "--prior: '%s' is neither flat nor empirical",
                   c->o->prior);
        return PS_ERR_CONFIG;
    }
    conf->prior_strength = c->o->prior_strength;
    conf->half_life_ms = c->o->half_life_ms;
    conf->credible_level = c->o->credible_level;
    conf->intent_threshold = c->o->intent_threshold;
    conf->stream_maxlen = c->o->stream_maxlen;
    conf->customer_ttl_s = c->o->customer_ttl_s;
    conf->segments_k = (int)c->o->segments_k;
    conf->segments_batch = c->o->segments_batch;
    conf->spend_threshold = c->o->spend_threshold;
    conf->segments_features = c->o->segments_features;
    conf->segments_names = c->o->segments_names;
    conf->segments_half_life = c->o->segments_half_life;
    conf->window_bucket_ms = c->o->window_bucket_ms;
    conf->graph_max_edges = c->o->graph_max_edges;
    conf->also_top_n = c->o->also_top_n;
    conf->copurchase_max_items = c->o->copurchase_max_items;
    conf->reco_n = c->o->reco_n;
    conf->next_prior_strength = c->o->next_prior_strength;
    c->pipe = ps_pipeline_new(conf, err, errsz);
    c->out = ps_batch_new(c->o->prefix);
    c->dlq = ps_batch_new(c->o->prefix);
    c->evs = calloc(bm, sizeof(*c->evs));
    c->ev_cust = calloc(bm, sizeof(*c->ev_cust));
    c->ev_prod = calloc(bm, sizeof(*c->ev_prod));
    c->ev_camp = calloc(bm, sizeof(*c->ev_camp));
    c->arena_cap = bm * 4 * PS_ID_MAX;
    c->arena = malloc(c->arena_cap);
    c->miss_set_cap = 16;
    while (c->miss_set_cap < bm * 2)
        c->miss_set_cap *= 2;
    c->miss_set = calloc(c->miss_set_cap, sizeof(*c->miss_set));
    c->miss = calloc(bm, sizeof(*c->miss));
    c->keys = calloc(bm, sizeof(*c->keys));
    c->keylens = calloc(bm, sizeof(*c->keylens));
    c->due_cap = bm < 1000 ? bm : 1000;
    c->due_buf = malloc(c->due_cap * PS_ID_MAX);
    c->due_len = calloc(c->due_cap, sizeof(*c->due_len));
    if (c->pipe == NULL || c->out == NULL || c->dlq == NULL ||
        c->evs == NULL || c->ev_cust == NULL || c->ev_prod == NULL ||
        c->ev_camp == NULL || c->arena == NULL || c->miss_set == NULL ||
        c->miss == NULL || c->keys == NULL || c->keylens == NULL ||
        c->due_buf == NULL || c->due_len == NULL) {
        if (c->pipe != NULL)
            ps_set_err(err, errsz, "out of memory");
        return PS_ERR_NOMEM;
    }
    make_instance_id(c->instance, sizeof(c->instance));
    open_progress(c);

    rc.host = host;
    rc.user = c->o->redis_user;
    rc.password = c->o->redis_password;
    rc.db = (int)c->o->redis_db;
    rc.connect_timeout_ms = (int)c->o->redis_timeout_ms;
    rc.io_timeout_ms = (int)c->o->redis_timeout_ms;
    char serr[256];
    c->sink = ps_redis_sink_new(&rc, serr, sizeof(serr));
    if (c->sink == NULL) {
        ps_set_err(err, errsz, "cannot use Redis at %s: %s", c->o->redis,
                   serr);
        return PS_ERR_IO;
    }

    if (load_agg_states(c, err, errsz) < 0)
        return PS_ERR_STATE;

    c->rk = ps_kafka_consumer_new(c->o->bootstrap, c->o->group, &c->cfg->kafka,
                                  rebalance_cb, c, err, errsz);
    if (c->rk == NULL)
        return PS_ERR_CONFIG;
    int rc2 = ps_kafka_check(c->rk, c->o->bootstrap, &c->o->topics,
                             (int)c->o->kafka_timeout_ms, err, errsz);
    if (rc2 < 0)
        return rc2;

    if (c->o->dlq_topic != NULL) {
        rd_kafka_conf_t *pc = rd_kafka_conf_new();
        char perr[256];
        if (rd_kafka_conf_set(pc, "bootstrap.servers", c->o->bootstrap, perr,
                              sizeof(perr)) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(pc);
            ps_set_err(err, errsz, "dlq producer: %s", perr);
            return PS_ERR_CONFIG;
        }
        for (size_t i = 0; i < c->cfg->kafka.n; i++)
            rd_kafka_conf_set(pc, c->cfg->kafka.v[i].key,
                              c->cfg->kafka.v[i].value, perr, sizeof(perr));
        c->dlq_rk = rd_kafka_new(RD_KAFKA_PRODUCER, pc, perr, sizeof(perr));
        if (c->dlq_rk == NULL) {
            ps_set_err(err, errsz, "dlq producer: %s", perr);
            return PS_ERR_CONFIG;
        }
    }

    rd_kafka_topic_partition_list_t *subs =
        rd_kafka_topic_partition_list_new((int)c->o->topics.n);
    for (size_t i = 0; i < c->o->topics.n; i++)
        rd_kafka_topic_partition_list_add(subs, c->o->topics.v[i],
                                          RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(c->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (kerr) {
        ps_set_err(err, errsz, "subscribe: %s", rd_kafka_err2str(kerr));
        return PS_ERR_CONFIG;
    }
    return PS_OK;
}

static void teardown(run_ctx *c)
{
    if (c->rk != NULL) {
        /* held messages were not applied: not flushed, read again later */
        for (size_t i = 0; i < c->parts.n; i++)
            drop_held(c, &c->parts.v[i]);
        rd_kafka_consumer_close(c->rk); /* revokes: flushes what is left */
        rd_kafka_destroy(c->rk);
    }
    if (c->dlq_rk != NULL) {
        if (rd_kafka_flush(c->dlq_rk, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
            ps_warn("dlq topic: some dead letters were not delivered");
        rd_kafka_destroy(c->dlq_rk);
    }
    ps_redis_sink_destroy(c->sink);
    if (c->progress != NULL)
        munmap((void *)c->progress, sizeof(int64_t));
    ps_pipeline_destroy(c->pipe);
    ps_decoder_destroy(c->dec);
    ps_batch_destroy(c->out);
    ps_batch_destroy(c->dlq);
    ps_parts_free(&c->parts);
    free(c->evs);
    free(c->ev_cust);
    free(c->ev_prod);
    free(c->ev_camp);
    free(c->arena);
    free(c->miss_set);
    free(c->miss);
    free(c->keys);
    free(c->keylens);
    free(c->keybuf);
    free(c->due_buf);
    free(c->due_len);
}

int ps_cmd_run(int argc, char **argv)
{
    run_opts o = {0};
    ps_config_result cfg;
    run_ctx c = {0};
    char err[1024] = "";
    int rc;

    rc = ps_config_parse(run_options, RUN_OPTIONS_N, &o, &cfg, argc, argv,
                         err, sizeof(err));
    if (rc != PS_OK) {
        if (rc < 0)
            fprintf(stderr, "propstream run: %s\n", err);
        ps_config_free(run_options, RUN_OPTIONS_N, &o, &cfg);
        return rc < 0 ? 2 : 0;
    }
    if (cfg.positional.n > 0) {
        fprintf(stderr, "propstream run: unexpected argument '%s'\n",
                cfg.positional.v[0]);
        ps_config_free(run_options, RUN_OPTIONS_N, &o, &cfg);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a vanished peer is an I/O error, not death */

    c.o = &o;
    c.cfg = &cfg;
    c.start_ms = now_ms(CLOCK_MONOTONIC);
    rc = setup(&c, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "propstream run: %s\n", err);
        teardown(&c);
        ps_config_free(run_options, RUN_OPTIONS_N, &o, &cfg);
        return rc == PS_ERR_CONFIG ? 2 : 1;
    }
    ps_info("consuming %s from %s (group %s) into Redis %s, prefix '%s', "
            "flush every %" PRId64 " ms",
            o.topics.v[0], o.bootstrap, o.group, o.redis, o.prefix,
            o.flush_interval_ms);

    rc = main_loop(&c);
    if (rc == PS_OK) {
        /* a graceful stop (SIGTERM/SIGINT, or the end with -e): apply
         * the round, close every funnel already due (close_due), flush */
        if (process_round(&c) < 0 || close_due(&c, true) < 0 ||
            flush(&c, false) < 0)
            rc = PS_ERR_IO;
    }
    if (rc == PS_ERR_IO)
        ps_error("stopped with changes not written to Redis; they will be "
                 "consumed again on the next start (offsets in Redis were "
                 "not advanced past them)");
    c.lag = ps_kafka_lag(c.rk, &c.parts);
    {
        int64_t in0 = 0; /* final line: averages over the whole run */
        stats_line(&c, &c.start_ms, &in0);
    }
    teardown(&c);
    ps_config_free(run_options, RUN_OPTIONS_N, &o, &cfg);
    return rc == PS_OK ? 0 : 1;
}
