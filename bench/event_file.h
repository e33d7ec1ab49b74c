/*
 * event_file.h -- the event files the replay benchmarks read: one JSON
 * event per line, as `propstream import --format json -o FILE` or
 * `propstream gen --truth FILE` write them, loaded into memory with every
 * string interned and sorted by event time (stable: ties keep file order),
 * ready to be replayed through an in-memory pipeline.
 *
 * Used by bench/reco_eval.c and bench/next_action_calibration.c.
 */
#ifndef PS_BENCH_EVENT_FILE_H
#define PS_BENCH_EVENT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../aggregates/pipeline.h"
#include "../common/event.h"

/* Interned strings: each distinct string gets a small number. */
typedef struct ef_intern {
    char **str;
    uint32_t *len;
    size_t n, cap;
    int32_t *slots; /* index + 1, 0 = empty */
    size_t slots_cap;
} ef_intern;

int32_t ef_intern_get(ef_intern *t, const char *s, size_t n);
/* The string of number k, or a null ps_str for k < 0. */
ps_str ef_intern_str(const ef_intern *t, int32_t k);
void ef_intern_free(ef_intern *t);

/* Out of memory ends a benchmark: message and exit 1. */
_Noreturn void ef_die_nomem(void);
void *ef_xrealloc(void *p, size_t n);

/* One event; strings interned, -1 = absent. */
typedef struct ef_rec {
    int32_t cust, prod, campaign, id;
    int32_t segment; /* the truth file's "segment" (gen), or -1 */
    ps_event_type type;
    bool has_amount;
    double amount;
    int64_t ts, signup_ts;
    size_t line;
} ef_rec;

typedef struct ef_file {
    ef_intern ids, custs, prods, camps, segs;
    ef_rec *v;
    size_t n;
} ef_file;

/* Read path into f (zeroed by the caller), sorted by ts.  0, or -1 with a
 * message "<tool>: <path>:<line>: ..." on stderr (f is then freed). */
int ef_read(const char *tool, const char *path, ef_file *f);
void ef_free(ef_file *f);

/* The ps_event of r (its strings point into f). */
ps_event ef_event(const ef_file *f, const ef_rec *r);

/* Mark every shared entity waiting for its base as loaded: in memory
 * nothing is in Redis, so every base is zero. */
void ef_load_all(ps_pipeline *p);

#endif
