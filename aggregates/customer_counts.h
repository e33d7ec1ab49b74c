/*
 * customer_counts.h -- what other aggregates may ask the customer_counts
 * aggregate (customer_counts.c).
 */
#ifndef PS_CUSTOMER_COUNTS_H
#define PS_CUSTOMER_COUNTS_H

#include "aggregate.h"

/* A copy of a customer's counters (the values of its ps:cust:{id} fields
 * of the same names). */
typedef struct ps_customer_counts {
    int64_t events, clicks, wishlists, purchases;
    int64_t last_ts;
    int64_t spend_n;
    double spend_sum, spend_mean, spend_std;
} ps_customer_counts;

/* Fill *out with customer cust's counters; all zero when the
 * customer_counts aggregate is not registered.  Read-only. */
void ps_customer_counts_get(ps_pipeline *p, const ps_entity *cust,
                            ps_customer_counts *out);

#endif
