/*
 * pipeline.h -- the entity tables, the clock and the registered
 * aggregates, driven as one unit by the run loop.
 *
 * The pipeline owns every in-memory entity (customers, products,
 * campaigns, the global record; see aggregate.h) and lends each aggregate
 * its slices.  It is pure: it never reads Redis itself.  Before a batch of
 * events is applied, the run loop makes sure that
 *   - every customer of the batch is in memory: those missing are fetched
 *     from ps:state:cust:{id} in one pipelined round trip and added with
 *     ps_pipeline_add();
 *   - every shared entity the batch names exists (ps_pipeline_entity) and
 *     has its base loaded from its output hash: ps_pipeline_unloaded()
 *     lists those waiting, ps_pipeline_load_field() / ps_pipeline_loaded()
 *     feed them.
 * Shared entities created later on demand (e.g. the campaign of a funnel
 * restored from saved state) are listed by ps_pipeline_unloaded() too; the
 * run loop loads them before the flush.
 *
 * Saved customer state (the value of ps:state:cust:{id}) is
 *     u8 version (1), u8 count, then count x
 *     { u8 name_len, name, u32 len, len bytes from save_customer }
 * so aggregates added in a later release load old state (their slice stays
 * zero) and unknown names are skipped.
 */
#ifndef PS_PIPELINE_H
#define PS_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "aggregate.h"

/* New pipeline with every registered aggregate initialised (conf is
 * copied).  NULL with errstr on failure. */
ps_pipeline *ps_pipeline_new(const ps_agg_conf *conf, char *errstr,
                             size_t errstr_size);
void ps_pipeline_destroy(ps_pipeline *p); /* NULL is a no-op */

/* The in-memory entity of kind and id, or NULL. */
ps_entity *ps_pipeline_find(ps_pipeline *p, ps_kind kind, ps_str id);

/*
 * Add customer id (not present yet) with its saved state (blob, len), or
 * as new when blob is NULL.  Returns the record, or NULL with *err set to
 * PS_ERR_NOMEM or PS_ERR_STATE (blob corrupt: nothing is added).
 */
ps_customer *ps_pipeline_add(ps_pipeline *p, ps_str id, const void *blob,
                             size_t len, int *err);

/* Find or create a shared entity (product, campaign, global); a new one
 * waits for its base (see ps_pipeline_unloaded).  NULL on OOM. */
ps_entity *ps_pipeline_entity(ps_pipeline *p, ps_kind kind, ps_str id);

/* Slice of aggregate number agg_index (its position in aggregates.def)
 * in entity e. */
void *ps_pipeline_slice(ps_pipeline *p, const ps_entity *e, size_t agg_index);

/* Index of the aggregate named name, or -1. */
int ps_pipeline_agg_index(const char *name);

/* The state (init's *self) of aggregate number agg_index, so that one
 * aggregate's public header can answer questions about it (segments.h). */
void *ps_pipeline_agg_self(ps_pipeline *p, size_t agg_index);

/* Mark e changed since the last flush (apply does this for the event's
 * entities; aggregates call it for others, e.g. from advance). */
int ps_pipeline_touch(ps_pipeline *p, ps_entity *e);

/* Shared entities whose base is not loaded: fills *list (owned by the
 * pipeline, valid until the next call) and returns how many. */
size_t ps_pipeline_unloaded(ps_pipeline *p, ps_entity ***list);
/* One field of e's output hash as read from Redis. */
void ps_pipeline_load_field(ps_pipeline *p, ps_entity *e, const char *field,
                            size_t flen, const char *val, size_t vlen);
/* e's output hash has been read completely (or does not exist). */
void ps_pipeline_loaded(ps_pipeline *p, ps_entity *e);

/*
 * Apply a valid event (ev->part set) of customer cust (from find/add; its
 * product and campaign entities must exist) to every aggregate in order.
 * Sets *late when ev->ts is older than its partition's watermark (the
 * event is applied all the same).  0, PS_AGG_DROP (an aggregate dropped
 * it, e.g. a duplicate), or a negative ps_err.
 */
int ps_pipeline_apply(ps_pipeline *p, const ps_event *ev, ps_customer *cust,
                      bool *late);
/* The same with the event's product and campaign entities already looked
 * up (from ps_pipeline_entity; NULL when the event has none). */
int ps_pipeline_apply_to(ps_pipeline *p, const ps_event *ev,
                         ps_customer *cust, ps_entity *product,
                         ps_entity *campaign, bool *late);

/* The clock.  A partition's watermark is the largest ts seen on it minus
 * the allowed lateness.  A partition without events for idle_partition_ms
 * of wall-clock time is idle: it does not hold back the global watermark
 * (the minimum over the busy partitions), and its own effective watermark
 * follows the global one.  INT64_MIN until anything is known. */
int64_t ps_pipeline_watermark(const ps_pipeline *p, uint32_t part);
int64_t ps_pipeline_global_watermark(const ps_pipeline *p);
/* The id of the event that last moved partition part's watermark (the
 * cause of what its passing closes); "" when unknown.  For UINT32_MAX:
 * the cause of the partition that defines the global watermark. */
ps_str ps_pipeline_watermark_cause(const ps_pipeline *p, uint32_t part);

/* A partition's clock, saved by the run loop with the partition's offset
 * (ps:state:clock:{group}) so a restart judges lateness and closes
 * windows exactly as an uninterrupted run: the largest ts seen on slot
 * (INT64_MIN when none) and, in *cause, the id of the event that set it. */
int64_t ps_pipeline_partition_clock(const ps_pipeline *p, uint32_t slot,
                                    ps_str *cause);
/* Restore it on assignment (the stored clock replaces what this process
 * had): the partition counts as busy, as if its last event came at
 * now_ms (the wall clock of ps_pipeline_advance).  0 or PS_ERR_NOMEM. */
int ps_pipeline_restore_partition_clock(ps_pipeline *p, uint32_t slot,
                                        int64_t max_ts, ps_str cause,
                                        int64_t now_ms);

/* Watermark alignment (the run loop).  The run loop holds partition slot
 * back: its next event, with time hold_ts, ran too far ahead of the other
 * partitions, so the partition is paused and that event not applied yet.
 * A held partition is busy (never idle) and holds back the global
 * watermark at hold_ts - lateness, where its next event will put it; its
 * own watermark is unchanged.  hold_ts = INT64_MIN releases it (busy as of
 * now_ms).  PS_OK or PS_ERR_NOMEM. */
int ps_pipeline_hold_partition(ps_pipeline *p, uint32_t slot, int64_t hold_ts,
                               int64_t now_ms);

/* Is partition slot idle (no event for idle_partition_ms of wall-clock
 * time, and not held)?  True for a slot never seen. */
bool ps_pipeline_partition_is_idle(const ps_pipeline *p, uint32_t slot);

/* Scale-out: other instances add to the same shared hashes, so the bases
 * this process read become stale.  Mark every shared entity in memory so
 * that its bases are read again from Redis (ps_pipeline_unloaded) when it
 * is next used; the global entity is queued at once.  Every aggregate's
 * load_shared_field overwrites its bases (never adds), and the unflushed
 * deltas stay, so the view afterwards is Redis's total plus this
 * instance's unflushed changes.  Call only between successful flushes and
 * the next round.  0 or PS_ERR_NOMEM. */
int ps_pipeline_refresh_shared(ps_pipeline *p);

/* Partition slots have names ("topic:partition"), given by the run loop
 * when it assigns them, so saved state can name a partition and a later
 * process map it back to its own slot. */
int ps_pipeline_name_slot(ps_pipeline *p, uint32_t slot, const char *name);
/* The name of slot, "" when unnamed. */
ps_str ps_pipeline_slot_name(const ps_pipeline *p, uint32_t slot);
/* The slot named name; false when none has that name. */
bool ps_pipeline_slot_by_name(const ps_pipeline *p, ps_str name,
                              uint32_t *slot);

/* After a batch: update idleness at wall-clock time now_ms and let every
 * aggregate close what the watermarks passed.  0 or a negative ps_err. */
int ps_pipeline_advance(ps_pipeline *p, int64_t now_ms);

/* Append everything changed since the last successful flush to b. */
void ps_pipeline_write(ps_pipeline *p, ps_batch *b);

/* The transaction holding the last ps_pipeline_write succeeded. */
void ps_pipeline_flushed(ps_pipeline *p);

/* Number of successful flushes so far.  An aggregate that writes some
 * fields only when they changed marks the change with generation
 * ps_pipeline_generation(p) + 1 and writes while its mark is greater than
 * the current generation: a failed flush leaves the generation as it was,
 * so the next attempt writes them again. */
uint32_t ps_pipeline_generation(const ps_pipeline *p);

/* Call fn for every in-memory entity of kind (no insertion or removal
 * from fn). */
void ps_pipeline_foreach(ps_pipeline *p, ps_kind kind,
                         void (*fn)(void *opaque, ps_entity *e),
                         void *opaque);

/* Customers in memory, and entities changed since the last flush. */
size_t ps_pipeline_customer_count(const ps_pipeline *p);
/* Bounded memory: drop customers until at most keep remain, least
 * recently touched first (CLOCK), never one changed since the last
 * successful flush -- so call right after one: every customer dropped has
 * its state in Redis and is loaded again at its next event (or when one
 * of its funnels is due, through the expiry index).  Returns how many
 * were dropped. */
size_t ps_pipeline_evict_idle(ps_pipeline *p, size_t keep);
size_t ps_pipeline_dirty_count(const ps_pipeline *p);

/* Drop every customer from memory (their state is in Redis; they are
 * reloaded on their next event).  Only valid right after a successful
 * flush: asserts that nothing is dirty.  Used when partitions are
 * revoked, since another instance may update those customers meanwhile. */
void ps_pipeline_forget_all(ps_pipeline *p);

/* Aggregates with their own saved state (load_state): index i for
 * i < ps_aggregates_count; returns false for those without. */
bool ps_pipeline_has_state(size_t agg_index);
/* Give aggregate agg_index its saved blob (from ps:state:agg:{name}). */
int ps_pipeline_load_state(ps_pipeline *p, size_t agg_index, const void *blob,
                           size_t len);

/* Serialise customer cust's state into w (the ps:state:cust value). */
void ps_pipeline_save_customer(ps_pipeline *p, const ps_customer *cust,
                               ps_wbuf *w);

#endif
