/*
 * copurchase.h -- what other code (aggregates, benchmarks, tests) may ask
 * the copurchase aggregate (copurchase.c): co-purchase counts and a
 * customer's current recommendations.
 */
#ifndef PS_COPURCHASE_H
#define PS_COPURCHASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aggregate.h"

/* One recommended product and its score. */
typedef struct ps_copurchase_item {
    const ps_entity *product;
    double score;
    bool popular; /* from the most-purchased fill-up, not co-purchase */
} ps_copurchase_item;

/*
 * C[x][y] as this instance sees it: the count kept in x's in-memory top-K
 * (loaded base + own increments), 0 when y is not in it or the aggregate
 * is not registered.  Exact while x has at most K = 4 * also_top_n
 * partners; beyond, a low count may be missing or low (copurchase.c).
 */
int64_t ps_copurchase_count(ps_pipeline *p, const ps_entity *x,
                            const ps_entity *y);

/*
 * Customer cust's recommendations now, as ps:cust:{id}:reco would hold
 * them: at most n products it has not purchased, best first (score
 * descending, then product id ascending), written to out[0..returned).
 * First the co-purchase candidates, score(p) = P(purchase of p) (funnels'
 * product posterior) x sum over x in purchased u wishlisted of C[x][p];
 * then, while fewer than n, the most purchased products not among them
 * (popular = true), score(q) = s_min x n(q) / (n_1 + 1) < s_min (see
 * copurchase.c).  Returns how many were written (0 when nothing has been
 * purchased yet), or a negative ps_err (out of memory).  May create
 * product entities (partners named in a loaded top-K); out's pointers stay
 * valid as long as the pipeline.
 */
long ps_copurchase_reco(ps_pipeline *p, const ps_entity *cust, size_t n,
                        ps_copurchase_item *out);

#endif
