/*
 * aggregate.h -- the interface every online statistic implements.
 *
 * propstream's statistics (customer counters, funnels, segments, cohorts,
 * the behaviour graph, ...) are "aggregates": one file in aggregates/ that
 * defines a const ps_aggregate_ops and one line in aggregates/aggregates.def.
 * The pipeline (pipeline.h) owns the entity tables and calls every
 * registered aggregate, in the order of aggregates.def (dependency order:
 * an aggregate may read what earlier ones computed for the same event).
 *
 * Aggregates are pure: no Kafka, no Redis, no clock, no logging.  They get
 * decoded events and return codes; what changed since the last flush they
 * write as Redis commands into a ps_batch that the sink executes as one
 * transaction together with the consumer offsets.
 *
 * Entities.  State lives in records of four kinds, owned by the pipeline:
 *
 *   kind       key              owner            saved as
 *   customer   ps:cust:{id}     one instance     ps:state:cust:{id} blob
 *                               (its partition)  (save/load_customer)
 *   product    ps:prod:{id}     shared by all    the output hash itself:
 *   campaign   ps:campaign:{id} instances        counters as HINCRBY deltas,
 *   global     ps:global                         derived values as HSET
 *   segment    ps:segment:{k}
 *   cohort     ps:cohort:{YYYY-MM}
 *
 * Each aggregate declares a slice size per kind; every record reserves
 * that many bytes (8-byte aligned, zeroed when the record is created) and
 * lends the slice to the aggregate.  Slices are plain data.
 *
 * Shared kinds keep, per counter, a `base` (the total in Redis when last
 * seen) and a `delta` (this instance's change since its last successful
 * flush).  Deltas are written with HINCRBY in the flush transaction, so
 * they are exactly-once and add up across instances; the aggregate's view
 * of a total is base + delta, and derived values (posterior means, ...)
 * are computed from that view.  Bases are loaded from the output hash
 * (load_shared_field) before the entity's first events are applied.
 *
 * Flush protocol (one flush = one MULTI/EXEC):
 *   1. for each customer changed since the last flush, the pipeline opens
 *      "HSET ps:cust:{id}" and calls write_customer of every aggregate (so
 *      a customer touched 1,000 times is written once), then writes the
 *      customer's saved state to ps:state:cust:{id};
 *   2. for each changed shared entity, write_shared_entity appends whole
 *      commands (HINCRBY deltas, HSET derived values);
 *   3. write_shared appends anything else (streams, other keys);
 *   4. only when the transaction succeeded, flushed_shared_entity (per
 *      written shared entity: base += delta, delta = 0) and flushed run.
 *      If it failed they are not called and the next flush writes the same
 *      changes again (plus newer ones): nothing is lost or applied twice.
 *
 * Time.  Every event carries the index of the partition it came from
 * (ps_event.part).  The pipeline keeps each partition's watermark (largest
 * ts seen minus the allowed lateness); see ps_pipeline_watermark().  After
 * each batch of events the pipeline calls advance(), where aggregates close
 * whatever the watermarks have passed (e.g. expired funnels).
 */
#ifndef PS_AGGREGATE_H
#define PS_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/batch.h"
#include "../common/buf.h"
#include "../common/event.h"

/* apply() result asking the pipeline to stop processing this event
 * (e.g. a duplicate): later aggregates do not see it. */
#define PS_AGG_DROP 1

typedef enum ps_kind {
    PS_KIND_CUSTOMER = 0,
    PS_KIND_PRODUCT = 1,
    PS_KIND_CAMPAIGN = 2,
    PS_KIND_GLOBAL = 3,
    PS_KIND_SEGMENT = 4,
    PS_KIND_COHORT = 5,
    PS_KIND_COUNT
} ps_kind;

/* A record in one of the pipeline's tables.  Aggregates may read id and
 * kind; the rest is the pipeline's. */
typedef struct ps_entity {
    ps_str id;         /* bytes stored inside the record ("" for global) */
    uint8_t kind;      /* ps_kind */
    uint8_t flags;     /* PS_ENT_* (pipeline-private) */
    uint16_t reserved;
    uint32_t dirty_ix; /* position in the dirty list (pipeline-private) */
    uint64_t hash;     /* of id (pipeline-private) */
} ps_entity;

/* Customers are entities of kind PS_KIND_CUSTOMER. */
typedef ps_entity ps_customer;

typedef struct ps_pipeline ps_pipeline;

/* Settings shared by all aggregates (from `propstream run` options). */
typedef struct ps_agg_conf {
    const char *prefix;          /* key prefix, "ps:" */
    int64_t allowed_lateness_ms; /* watermark = max ts - this (3600000) */
    int64_t idle_partition_ms;   /* wall-clock time without events after
                                    which a partition is idle (60000) */
    int64_t attribution_ms;      /* funnel window (7 days) */
    int64_t dedup_horizon_ms;    /* event time (24 h) */
    int64_t dedup_max_ids;       /* per customer (1024) */
    int prior_empirical;         /* 0 flat Beta(1,1), 1 empirical Bayes */
    double prior_strength;       /* pseudo-counts of the empirical prior */
    double half_life_ms;         /* forgetting of customer counts, 0 = off */
    double credible_level;       /* 0.95 */
    double intent_threshold;     /* high_intent trigger (0.5) */
    int64_t stream_maxlen;       /* XADD MAXLEN ~ of ps:triggers, ps:paths */
    int64_t customer_ttl_s;      /* EXPIRE of a customer's output keys,
                                    renewed at each write (0 = none) */
    int segments_k;              /* k-means centres (3) */
    int64_t segments_batch;      /* points per mini-batch step (256) */
    double spend_threshold;      /* T of P(amount >= T) (70000) */
    const char *segments_features; /* comma list of k-means features
                                      ("mean_amount,purchases") */
    const char *segments_names;  /* comma list of names, or NULL for the
                                    default naming rule (vip,premium,...) */
    double segments_half_life;   /* k-means forgetting, in points: a
                                    centre's old weight halves after this
                                    many points reach it (0 = off) */
    int64_t window_bucket_ms;    /* cohort rolling-window bucket (3600000) */
    int64_t graph_max_edges;     /* behaviour-graph edges kept in memory
                                    (5000000) */
    int64_t also_top_n;          /* members of ps:prod:{id}:also (20) */
    int64_t copurchase_max_items; /* distinct purchased products remembered
                                     per customer (200) */
    int64_t reco_n;              /* members of ps:cust:{id}:reco (10) */
    double next_prior_strength;  /* Dirichlet prior weight of next action
                                    (10) */
} ps_agg_conf;

/* Fill conf with the defaults above. */
void ps_agg_conf_defaults(ps_agg_conf *conf);

/* What an aggregate is given at init. */
typedef struct ps_agg_env {
    const ps_agg_conf *conf;
    ps_pipeline *pipe; /* for ps_pipeline_* calls from apply / advance */
} ps_agg_env;

/* The entities an event concerns, with this aggregate's slices.  product
 * and campaign are NULL when the event has none. */
typedef struct ps_apply_ctx {
    ps_entity *cust;
    void *cust_state;
    ps_entity *product;
    void *product_state;
    ps_entity *campaign;
    void *campaign_state;
    void *global_state;
} ps_apply_ctx;

typedef struct ps_aggregate_ops {
    /* Stable name: tags its part of saved state; also used in logs. */
    const char *name;
    /* Bytes of state per record of each kind (0 if none). */
    size_t state_size[PS_KIND_COUNT];

    /* Create the aggregate's own state in *self.  0 or a ps_err with
     * errstr.  NULL if none. */
    int (*init)(void **self, const ps_agg_env *env, char *errstr,
                size_t errstr_size);
    /* Free it (NULL-safe).  NULL if none. */
    void (*destroy)(void *self);

    /* Apply one valid event.  0, PS_AGG_DROP, or a negative ps_err (a bug
     * or out of memory: the run stops). */
    int (*apply)(void *self, const ps_event *ev, const ps_apply_ctx *ctx);

    /* After a batch of events: close what the watermarks have passed.
     * 0 or a negative ps_err.  NULL if nothing is time-driven. */
    int (*advance)(void *self);

    /* Append this aggregate's fields of ps:cust:{id} to the open HSET
     * (ps_batch_arg pairs field, value).  NULL if it writes none. */
    void (*write_customer)(void *self, const ps_entity *cust,
                           const void *state, ps_batch *b);
    /* Append whole commands for other keys of a changed customer (e.g.
     * ps:cust:{id}:intent), after its HSET.  NULL if none. */
    void (*write_customer_keys)(void *self, const ps_entity *cust,
                                void *state, ps_batch *b);
    /* Append whole commands for a changed shared entity (HINCRBY deltas,
     * HSET derived values).  NULL if none. */
    void (*write_shared_entity)(void *self, const ps_entity *e, void *state,
                                ps_batch *b);
    /* The transaction with that entity's writes succeeded. */
    void (*flushed_shared_entity)(void *self, const ps_entity *e,
                                  void *state);
    /* Append whole commands for anything else changed since the last
     * successful flush (streams, ...).  NULL if none. */
    void (*write_shared)(void *self, ps_batch *b);
    /* The transaction with the write_shared commands succeeded. */
    void (*flushed)(void *self);

    /* Serialise / restore a customer's slice (little-endian, versioned by
     * the aggregate).  load gets a zeroed slice; return 0 or PS_ERR_STATE.
     * NULL when state_size[PS_KIND_CUSTOMER] is 0. */
    void (*save_customer)(void *self, const ps_entity *cust,
                          const void *state, ps_wbuf *w);
    int (*load_customer)(void *self, ps_entity *cust, void *state,
                         ps_rbuf *r);
    /* A customer leaves memory (evicted or its partition revoked, after a
     * flush): release whatever the aggregate keeps about it outside its
     * slice.  NULL if nothing. */
    void (*forget_customer)(void *self, ps_entity *cust, void *state);

    /* The aggregate's own state (e.g. a model), saved as
     * ps:state:agg:{name} in the flush transaction whenever save_state
     * reports a change, and loaded once at start before any event.
     * save_state appends the blob to w and returns 1, or returns 0 when
     * nothing changed since the last successful flush (then w is left
     * empty).  load_state gets the stored blob; 0 or PS_ERR_STATE.  NULL
     * if none.  This state is per deployment, not per instance: with
     * several instances the last writer wins (documented per aggregate). */
    int (*save_state)(void *self, ps_wbuf *w);
    int (*load_state)(void *self, const void *blob, size_t len);

    /* One field of a shared entity's output hash as read from Redis, to
     * set the bases.  Called for every field before the entity is first
     * used; unknown fields are ignored.  NULL if no shared state. */
    void (*load_shared_field)(void *self, ps_entity *e, void *state,
                              const char *field, size_t flen,
                              const char *val, size_t vlen);
} ps_aggregate_ops;

/* The registry, in aggregates.def order. */
extern const ps_aggregate_ops *const ps_aggregates[];
extern const size_t ps_aggregates_count;

/* Each aggregate's index in the registry, known at compile time, for the
 * read-only accessors other aggregates call per candidate or per customer
 * (ps_pipeline_agg_index compares names). */
enum ps_agg_index {
#define PS_AGGREGATE(x) PS_AGG_INDEX_##x,
#include "aggregates.def"
#undef PS_AGGREGATE
    PS_AGG_INDEX_COUNT
};

/* Key segment of each kind: "cust:", "prod:", "campaign:", "global",
 * "segment:", "cohort:". */
const char *ps_kind_key(ps_kind kind);

#endif
