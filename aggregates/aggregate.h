/*
 * aggregate.h -- the interface every online statistic implements.
 *
 * propstream's statistics (customer counters, funnels, segments, cohorts,
 * the behaviour graph, ...) are "aggregates": one file in aggregates/ that
 * defines a const ps_aggregate_ops and one line in aggregates/aggregates.def.
 * The pipeline (pipeline.h) owns the shared customer table and calls every
 * registered aggregate, in the order of aggregates.def (dependency order:
 * an aggregate may read what earlier ones computed for the same event).
 *
 * Aggregates are pure: no Kafka, no Redis, no clock, no logging.  They get
 * decoded events and return codes; what changed since the last flush they
 * write as Redis commands into a ps_batch that the sink executes as one
 * transaction together with the consumer offsets.
 *
 * Per-customer state.  Each aggregate declares cust_state_size; the
 * customer table reserves that many bytes (8-byte aligned, zeroed for a new
 * customer) in every customer's record and lends the slice to the aggregate.
 * The slice must be plain data: no pointers that save/load cannot restore.
 *
 * Flush protocol (one flush = one MULTI/EXEC):
 *   1. for each customer touched since the last flush, the pipeline opens
 *      "HSET ps:cust:{id}" and calls write_customer of every aggregate, so a
 *      customer touched 1,000 times is written once; it then writes the
 *      saved state of the customer (save_customer of every aggregate) to
 *      ps:state:cust:{id};
 *   2. write_shared of every aggregate appends commands for everything else
 *      changed (shared levels: prefer HINCRBY of deltas, which combine
 *      across instances and are exactly-once because they share the
 *      transaction with the offsets);
 *   3. only when the transaction succeeded, flushed() lets the aggregate
 *      forget its deltas.  If it failed, flushed() is not called and the
 *      next flush writes the same changes again (plus newer ones), so
 *      nothing is lost or applied twice.
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

/* A customer's record in the shared table (see pipeline.h).  Aggregates
 * may read id and events_seen; the state slices are reached through the
 * cust_state argument of the callbacks. */
typedef struct ps_customer {
    ps_str id;        /* bytes stored inside the record */
    uint32_t flags;   /* PS_CUST_* (pipeline-private) */
    uint32_t dirty_ix; /* position in the dirty list (pipeline-private) */
    uint64_t hash;    /* of id (pipeline-private) */
} ps_customer;

/* What an aggregate is given at init: settings shared by all. */
typedef struct ps_agg_env {
    const char *prefix; /* key prefix, "ps:" */
} ps_agg_env;

typedef struct ps_aggregate_ops {
    /* Stable name: tags its part of saved state; also used in logs. */
    const char *name;
    /* Bytes of per-customer state (0 if none). */
    size_t cust_state_size;

    /* Create the aggregate's shared state in *self.  0 or a ps_err with
     * errstr. */
    int (*init)(void **self, const ps_agg_env *env, char *errstr,
                size_t errstr_size);
    /* Free it (NULL-safe). */
    void (*destroy)(void *self);

    /* Apply one valid event of customer cust.  0, PS_AGG_DROP, or a
     * negative ps_err (a bug or out of memory: the run stops). */
    int (*apply)(void *self, const ps_event *ev, ps_customer *cust,
                 void *cust_state);

    /* Append this aggregate's fields of ps:cust:{id} to the open HSET
     * (ps_batch_arg pairs field, value).  NULL if it writes none. */
    void (*write_customer)(void *self, const ps_customer *cust,
                           const void *cust_state, ps_batch *b);
    /* Append whole commands for everything else changed since the last
     * successful flush.  NULL if none. */
    void (*write_shared)(void *self, ps_batch *b);
    /* The transaction with the writes above succeeded.  NULL if nothing
     * to forget. */
    void (*flushed)(void *self);

    /* Serialise / restore the customer's slice (little-endian, versioned
     * by the aggregate).  load gets a zeroed slice; return 0 or
     * PS_ERR_STATE.  NULL when cust_state_size is 0. */
    void (*save_customer)(void *self, const void *cust_state, ps_wbuf *w);
    int (*load_customer)(void *self, void *cust_state, ps_rbuf *r);
} ps_aggregate_ops;

/* The registry, in aggregates.def order. */
extern const ps_aggregate_ops *const ps_aggregates[];
extern const size_t ps_aggregates_count;

#endif
