/*
 * funnels.h -- what other aggregates may ask the funnels aggregate
 * (funnels.c).
 */
#ifndef PS_FUNNELS_H
#define PS_FUNNELS_H

#include "aggregate.h"

/* Posterior mean P(purchase) of product prod over all paths under the flat
 * Beta(1,1) prior, (1 + successes) / (2 + trials), from this instance's
 * view (base + delta); 0.5 for a product without closed funnels, or when
 * the funnels aggregate is not registered.  Read-only. */
double ps_funnels_product_p(ps_pipeline *p, const ps_entity *prod);

/* Customer cust's funnel history, from its slice: successes[x] and
 * trials[x] per path x (0 "c" click only, 1 "w" wishlist only, 2 "cw"
 * both; decayed when forgetting is on).  Zeros when the funnels aggregate
 * is not registered.  Read-only. */
void ps_funnels_customer_paths(ps_pipeline *p, const ps_entity *cust,
                               double successes[3], double trials[3]);

/* Number of open funnels of customer cust.  When there is one or more,
 * *intent is the highest current P(purchase) among them and *product the
 * id of that funnel's product (the smallest id among equal highest
 * values; borrowed, valid while the pipeline lives).  Read-only. */
uint32_t ps_funnels_top_intent(ps_pipeline *p, const ps_entity *cust,
                               double *intent, ps_str *product);

/* Closed-funnel counters of a product (see ps_funnels_product_counts). */
typedef struct ps_funnel_counts {
    int64_t trials[3], successes[3]; /* per path: 0 c, 1 w, 2 cw */
    int64_t click_first;             /* closed funnels opened by a click */
    int64_t wishlist_after_click;    /* of those, with a wishlist */
} ps_funnel_counts;

/* Product prod's closed-funnel counters: *total as this instance sees
 * them (base + delta), *unflushed the part not yet written by a
 * successful flush (delta; successes change only while an event of prod
 * is applied, and unflushed drops to 0 exactly when the entity's flush
 * succeeds).  Either pointer may be NULL.  false (and zeros) when the
 * funnels aggregate is not registered.  Read-only. */
bool ps_funnels_product_counts(ps_pipeline *p, const ps_entity *prod,
                               ps_funnel_counts *total,
                               ps_funnel_counts *unflushed);

/* The open funnel of (cust, prod), if any. */
typedef struct ps_funnel_open {
    int64_t open_ts;
    uint8_t click, wishlist; /* which actions it has seen (1/0) */
    uint8_t click_first;     /* 1 when its first action was a click */
} ps_funnel_open;

/* true and *out when customer cust has an open funnel on product prod;
 * false when none (or funnels is not registered).  Read-only. */
bool ps_funnels_open_of(ps_pipeline *p, const ps_entity *cust,
                        const ps_entity *prod, ps_funnel_open *out);

#endif
