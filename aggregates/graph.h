/*
 * graph.h -- the behaviour graph aggregate (graph.c): customer -> product
 * edges per action in memory, product step probabilities, and the reverse
 * path of every successful funnel.
 *
 * Step probabilities.  Every funnel episode of a (customer, product) pair
 * (funnels.c: opened by a CLICK or WISHLIST, closed as a success by a
 * PURCHASE within the attribution window or as a failure when the window
 * passes) walks a small chain of states named by what it has seen:
 *
 *     C  (click first, no wishlist yet)  --wishlist-->  CW
 *     W  (wishlist first, no click yet)  --click----->  CW
 *     C, W, CW  --purchase-->  success;  window passes  -->  failure
 *
 * A step probability is P(next step | state), over closed episodes only
 * (an open episode is not yet a trial, as for funnels), with the flat
 * Beta(1,1) prior, posterior mean (1 + k) / (2 + n):
 *
 *   field                       trials n                     successes k
 *   p_wishlist_after_click      episodes whose first action  a wishlist followed
 *                               was a click                  (before the purchase
 *                               (funnels_click_first)        or the end of the
 *                                                            window)
 *                                                            (wishlist_after_click)
 *   p_purchase_click_only       the same episodes            the purchase came
 *                                                            with no wishlist
 *                                                            (successes_c)
 *   p_click_after_wishlist      episodes whose first action  a click followed
 *                               was a wishlist               (click_after_wishlist)
 *                               (funnels_wishlist_first)
 *   p_purchase_wishlist_first   the same episodes            the purchase came
 *                                                            with no click
 *                                                            (successes_w)
 *   p_purchase_click_wishlist   episodes with both actions,  purchased
 *                               either order (trials_cw)     (successes_cw)
 *
 * So the probabilities of the paths that start with a click are
 * P(click>purchase) = p_purchase_click_only and P(click>wishlist>purchase)
 * = p_wishlist_after_click * p_purchase_click_wishlist (likewise from a
 * wishlist), and the paths out of a state plus failure add up to one.
 * These differ from funnels' p_purchase_c / _w (conditioned on the whole
 * path, not on the state reached so far); p_purchase_click_wishlist equals
 * p_purchase_cw by construction (CW has a single step left).
 *
 * The counts are the funnels aggregate's HINCRBY counters on ps:prod:{id}
 * (trials_*, successes_*, funnels_click_first, wishlist_after_click), read
 * through funnels.h, plus two more this aggregate adds as HINCRBY deltas:
 * funnels_wishlist_first and click_after_wishlist.  Probabilities are HSET
 * from this instance's view, like every derived value.
 * p_wishlist_after_click is also written by funnels.c, from the same
 * counters by the same formula, so both writes agree.
 */
#ifndef PS_GRAPH_H
#define PS_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "aggregate.h"

/* A product's step counts and probabilities (see above). */
typedef struct ps_graph_steps {
    int64_t click_first, wishlist_after_click, purchase_click_only;
    int64_t wishlist_first, click_after_wishlist, purchase_wishlist_first;
    int64_t both, purchase_both;
    double p_wishlist_after_click, p_purchase_click_only;
    double p_click_after_wishlist, p_purchase_wishlist_first;
    double p_purchase_click_wishlist;
} ps_graph_steps;

/* Product prod's step probabilities as this instance sees them now; all
 * 0.5 (no trials) when funnels is not registered.  Read-only. */
void ps_graph_steps_of(ps_pipeline *p, const ps_entity *prod,
                       ps_graph_steps *out);

/* One edge customer -> product. */
typedef struct ps_graph_edge {
    uint32_t count[3];   /* CLICK, WISHLIST, PURCHASE events (saturating) */
    int64_t last_ts[3];  /* their latest event time, 0 = never */
} ps_graph_edge;

/* true and *out when the edge cust -> prod is in memory.  Read-only. */
bool ps_graph_edge_of(ps_pipeline *p, const ps_entity *cust,
                      const ps_entity *prod, ps_graph_edge *out);

/* Product prod's event totals per action (CLICK, WISHLIST, PURCHASE) as
 * this instance sees them (the clicks / wishlists / purchases fields of
 * ps:prod:{id} when loaded, which funnels writes, + own events).  Kept
 * apart from the edges, so evicting edges does not change them. */
void ps_graph_product_totals(ps_pipeline *p, const ps_entity *prod,
                             int64_t out[3]);

/* Edges in memory, and the bytes of memory they take (edge pool capacity,
 * hash index, customer and product directories) per edge; 0 when there
 * is no edge. */
size_t ps_graph_edge_count(ps_pipeline *p);
double ps_graph_bytes_per_edge(ps_pipeline *p);

#endif
