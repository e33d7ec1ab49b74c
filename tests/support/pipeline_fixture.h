/*
 * pipeline_fixture.h -- driving the aggregates pipeline in unit tests: a
 * pipeline with defaults (or a given configuration) against an "empty
 * Redis", events applied one at a time, and the flush batch searched for
 * what was written.  Include after <cmocka.h>.
 */
#ifndef PS_TEST_PIPELINE_FIXTURE_H
#define PS_TEST_PIPELINE_FIXTURE_H

#include <math.h>
#include <stdint.h>

#include "../../aggregates/pipeline.h"

#define assert_close(a, b, tol)                                               \
    do {                                                                      \
        double a_ = (a), b_ = (b);                                            \
        if (fabs(a_ - b_) > (tol) * (1.0 + fabs(b_)))                         \
            fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);               \
    } while (0)

typedef struct ps_fx {
    ps_pipeline *p;
    ps_batch *b; /* the last flush */
    int seq;     /* events applied through this fixture */
} ps_fx;

/* A borrowed ps_str of a C string. */
ps_str ps_fx_str(const char *s);

/* New pipeline (fails the test on error); every shared entity so far
 * counts as loaded from an empty Redis. */
void ps_fx_init_conf(ps_fx *f, const ps_agg_conf *conf);
void ps_fx_init(ps_fx *f); /* with ps_agg_conf_defaults */
void ps_fx_clear(ps_fx *f);

/* Mark every shared entity still waiting for its base as loaded (from an
 * empty Redis). */
void ps_fx_mark_loaded(ps_fx *f);

/* The customer, created when new. */
ps_customer *ps_fx_customer(ps_fx *f, const char *id);

/* Apply e to its customer, then advance the clocks; returns apply's
 * result (advance must succeed). */
int ps_fx_apply(ps_fx *f, const ps_event *e);

/* Apply one event with an id unique in the process ("ev<n>"); amount < 0:
 * none; prod may be NULL.  Fails the test unless apply returns 0. */
void ps_fx_event(ps_fx *f, const char *cust, ps_event_type t,
                 const char *prod, double amount, int64_t ts);

/* Write everything changed into f->b (cleared first). */
void ps_fx_flush(ps_fx *f);

/* Sum of the HINCRBY key field deltas in f->b. */
long long ps_fx_incr(const ps_fx *f, const char *key, const char *field);
/* Value of field in the last HSET of key in f->b, NULL / NaN if absent. */
const char *ps_fx_hset_str(const ps_fx *f, const char *key,
                           const char *field);
double ps_fx_hset(const ps_fx *f, const char *key, const char *field);

#endif
