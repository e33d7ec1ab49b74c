/*
 * segment_features.h -- what the segments aggregate clusters on: a
 * customer's raw feature inputs, their update from one event, and the
 * configurable feature vector computed from them.  Public so that tools
 * that rebuild customers from raw events (bench/segments_eval.c) compute
 * exactly the same vectors as propstream.
 *
 * Features, each a function of the customer's state as of its latest
 * event (names as in --segments-features and centroid_{name}):
 *   mean_amount   mean PURCHASE amount
 *   purchases     number of PURCHASEs with an amount
 *   recency_days  days from its last purchase to its latest event
 *   frequency     purchases per 30 days of tenure (first to latest event,
 *                 at least 30 days, so a newcomer's frequency is its
 *                 purchase count rather than an extrapolated outlier)
 *   total_spend   sum of PURCHASE and SPEND amounts
 *   clicks, wishlists   event counts
 *   conversion    purchases / max(1, clicks + wishlists)
 * A customer has features from its first PURCHASE with an amount on.
 */
#ifndef PS_SEGMENT_FEATURES_H
#define PS_SEGMENT_FEATURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/event.h"

#define PS_SEG_FEATURES_MAX 8

typedef enum ps_seg_feature {
    PS_SEG_MEAN_AMOUNT,
    PS_SEG_PURCHASES,
    PS_SEG_RECENCY,
    PS_SEG_FREQUENCY,
    PS_SEG_TOTAL,
    PS_SEG_CLICKS,
    PS_SEG_WISHLISTS,
    PS_SEG_CONVERSION,
    PS_SEG_FEATURE_KINDS
} ps_seg_feature;

/* A configured feature list. */
typedef struct ps_seg_features {
    int d;                          /* 1..PS_SEG_FEATURES_MAX */
    int kind[PS_SEG_FEATURES_MAX];  /* ps_seg_feature, in order */
} ps_seg_features;

/* A customer's raw inputs (plain data; all-zero = never seen). */
typedef struct ps_seg_inputs {
    uint32_t n;         /* purchases with an amount */
    uint32_t clicks, wishlists;
    uint32_t seen;      /* 1 once an event was added */
    double mean;        /* mean purchase amount */
    double total;       /* purchase + spend amounts */
    int64_t first_ts, last_ts, last_purchase_ts;
} ps_seg_inputs;

/* Parse a comma-separated list of feature names.  0, or PS_ERR_CONFIG
 * with a message naming `option` (unknown name, repeated, empty, too
 * many). */
int ps_seg_features_parse(const char *list, const char *option,
                          ps_seg_features *out, char *errstr,
                          size_t errstr_size);

/* "mean_amount", ...; "" for an unknown kind. */
const char *ps_seg_feature_name(int kind);

/* Index in f of the first of kind, or -1. */
int ps_seg_features_find(const ps_seg_features *f, int kind);

/* Update in from one event (any type; amounts only from PURCHASE and
 * SPEND events that have one). */
void ps_seg_inputs_add(ps_seg_inputs *in, const ps_event *ev);

static inline bool ps_seg_inputs_ready(const ps_seg_inputs *in)
{
    return in->n > 0;
}

/* The feature vector x[0..f->d-1] of in. */
void ps_seg_features_of(const ps_seg_features *f, const ps_seg_inputs *in,
                        double *x);

#endif
