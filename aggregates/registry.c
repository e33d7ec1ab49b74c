/*
 * registry.c -- the list of aggregates, generated from aggregates.def.
 */
#include "aggregate.h"

#define PS_AGGREGATE(x) extern const ps_aggregate_ops ps_agg_##x;
#include "aggregates.def"
#undef PS_AGGREGATE

#define PS_AGGREGATE(x) &ps_agg_##x,
const ps_aggregate_ops *const ps_aggregates[] = {
#include "aggregates.def"
};
#undef PS_AGGREGATE

const size_t ps_aggregates_count =
    sizeof(ps_aggregates) / sizeof(ps_aggregates[0]);

_Static_assert(sizeof(ps_aggregates) / sizeof(ps_aggregates[0]) ==
                   PS_AGG_INDEX_COUNT,
               "aggregate.h's index enum follows aggregates.def");
