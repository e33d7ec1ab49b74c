/*
 * next_action.h -- what other aggregates may ask the next_action
 * aggregate (next_action.c): a customer's P(next event type | last type).
 */
#ifndef PS_NEXT_ACTION_H
#define PS_NEXT_ACTION_H

#include "aggregate.h"

/*
 * The type (PS_CLICK .. PS_SPEND) of customer cust's latest event in event
 * time, and in probs[PS_EVENT_TYPE_COUNT] the Dirichlet posterior mean of
 * the type of its next event given that one (they sum to 1).  Returns -1,
 * leaving probs untouched, when the customer has no event yet or the
 * aggregate is not registered.  Read-only; valid until the next event.
 */
int ps_next_action_of(ps_pipeline *p, const ps_entity *cust, double *probs);

/* Lower-case name of an event type ("click", "wishlist", "purchase",
 * "spend"), "?" when out of range. */
const char *ps_next_action_type_name(int type);

#endif
