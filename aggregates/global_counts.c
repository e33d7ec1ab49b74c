/*
 * global_counts.c -- population-wide counters in ps:global.
 *
 * `events` counts applied events over all customers and all instances.  It
 * is written as HINCRBY of the delta since the last successful flush: the
 * increment shares the MULTI/EXEC with the consumer offsets, so it is
 * applied exactly once, and several instances of one consumer group (each
 * owning some partitions) add up without coordinating.  Nothing needs to
 * be loaded on start.
 */
#include <stdlib.h>

#include "aggregate.h"
#include "../common/error.h"

typedef struct global_counts {
    int64_t events_delta;
} global_counts;

static int global_init(void **self, const ps_agg_env *env, char *errstr,
                       size_t errstr_size)
{
    (void)env;
    *self = calloc(1, sizeof(global_counts));
    if (*self == NULL) {
        ps_set_err(errstr, errstr_size, "global_counts: out of memory");
        return PS_ERR_NOMEM;
    }
    return PS_OK;
}

static void global_destroy(void *self) { free(self); }

static int global_apply(void *self, const ps_event *ev,
                        const ps_apply_ctx *ctx)
{
    global_counts *g = self;
    (void)ev;
    (void)ctx;
    g->events_delta++;
    return PS_OK;
}

static void global_write_shared(void *self, ps_batch *b)
{
    global_counts *g = self;
    ps_str none = {"", 0};

    if (g->events_delta == 0)
        return;
    ps_batch_begin(b, "HINCRBY");
    ps_batch_arg_key(b, "global", none, NULL);
    ps_batch_arg_cstr(b, "events");
    ps_batch_arg_i64(b, g->events_delta);
    ps_batch_end(b);
}

static void global_flushed(void *self)
{
    global_counts *g = self;
    g->events_delta = 0;
}

const ps_aggregate_ops ps_agg_global_counts = {
    .name = "global_counts",
    .init = global_init,
    .destroy = global_destroy,
    .apply = global_apply,
    .write_shared = global_write_shared,
    .flushed = global_flushed,
};
