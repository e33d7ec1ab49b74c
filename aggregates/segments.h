/*
 * segments.h -- what other aggregates may ask the segments aggregate.
 */
#ifndef PS_SEGMENTS_H
#define PS_SEGMENTS_H

#include "aggregate.h"

/* The segment (0..k-1) customer cust is assigned to, or -1 when it has
 * none yet (no purchase with an amount, or the model is not initialised). */
int ps_segments_of(ps_pipeline *p, const ps_entity *cust);

/* The readable name of segment k ("vip", ...), or "" when k is out of
 * range or the model has not named it yet.  Valid until the next event. */
const char *ps_segments_name(ps_pipeline *p, int k);

#endif
