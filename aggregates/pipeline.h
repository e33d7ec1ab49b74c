/*
 * pipeline.h -- the customer table and the registered aggregates, driven
 * as one unit by the run loop.
 *
 * The pipeline owns every in-memory customer record and lends each
 * aggregate its slice of it (see aggregate.h).  It is pure: it never reads
 * Redis itself.  A customer must be present before its events are applied:
 * the run loop looks customers up with ps_pipeline_find(), fetches the saved
 * state of the missing ones from ps:state:cust:{id} in one pipelined round
 * trip per consumed batch, and adds them with ps_pipeline_add().
 *
 * Saved customer state (the value of ps:state:cust:{id}) is
 *     u8 version (1), u8 count, then count x
 *     { u8 name_len, name, u32 len, len bytes from save_customer }
 * so aggregates added in a later release load old state (their slice stays
 * zero) and unknown names are skipped.
 */
#ifndef PS_PIPELINE_H
#define PS_PIPELINE_H

#include <stddef.h>

#include "aggregate.h"

typedef struct ps_pipeline ps_pipeline;

/* New pipeline with every registered aggregate initialised.  NULL with
 * errstr on failure. */
ps_pipeline *ps_pipeline_new(const ps_agg_env *env, char *errstr,
                             size_t errstr_size);
void ps_pipeline_destroy(ps_pipeline *p); /* NULL is a no-op */

/* The in-memory record of customer id, or NULL. */
ps_customer *ps_pipeline_find(ps_pipeline *p, ps_str id);

/*
 * Add customer id (not present yet) with its saved state (blob, len), or
 * as new when blob is NULL.  Returns the record, or NULL with *err set to
 * PS_ERR_NOMEM or PS_ERR_STATE (blob corrupt: nothing is added).
 */
ps_customer *ps_pipeline_add(ps_pipeline *p, ps_str id, const void *blob,
                             size_t len, int *err);

/* Apply a valid event of customer cust (from find/add) to every aggregate
 * in order.  0, PS_AGG_DROP (an aggregate dropped it), or a negative
 * ps_err. */
int ps_pipeline_apply(ps_pipeline *p, const ps_event *ev, ps_customer *cust);

/* Append everything changed since the last successful flush to b. */
void ps_pipeline_write(ps_pipeline *p, ps_batch *b);

/* The transaction holding the last ps_pipeline_write succeeded. */
void ps_pipeline_flushed(ps_pipeline *p);

/* Customers in memory, and customers changed since the last flush. */
size_t ps_pipeline_customer_count(const ps_pipeline *p);
size_t ps_pipeline_dirty_count(const ps_pipeline *p);

/* Drop every customer from memory (their state is in Redis; they are
 * reloaded on their next event).  Only valid right after a successful
 * flush: asserts that no customer is dirty.  Used when partitions are
 * revoked, since another instance may update those customers meanwhile. */
void ps_pipeline_forget_all(ps_pipeline *p);

/* Serialise customer cust's state into w (the ps:state:cust value). */
void ps_pipeline_save_customer(ps_pipeline *p, const ps_customer *cust,
                               ps_wbuf *w);

#endif
