/*
 * event.h -- the decoded input event every module shares.
 *
 * A ps_event is what consumer/decode.c produces from one Kafka message and
 * what every aggregate consumes.  It never owns memory: its strings point
 * into a buffer owned by whoever filled it (the decoder, or the run loop's
 * per-batch arena) and are valid only as long as that buffer.  Copy what you
 * keep.  Strings are length-delimited and not NUL-terminated.
 *
 * Contract section 1 fixes the fields; ps_event_validate() (consumer/) fixes
 * what a valid one looks like, so aggregates may assume:
 *   - event_id, customer_id: 1..PS_ID_MAX bytes
 *   - product_id present for CLICK, WISHLIST, PURCHASE
 *   - has_amount and amount > 0 for SPEND; amount >= 0 and finite otherwise
 *   - ts > 0; signup_ts is 0 when absent, > 0 otherwise
 */
#ifndef PS_EVENT_H
#define PS_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest id (event, customer, product, campaign) accepted, in bytes. */
#define PS_ID_MAX 256

typedef enum ps_event_type {
    PS_CLICK = 0,
    PS_WISHLIST = 1,
    PS_PURCHASE = 2,
    PS_SPEND = 3,
    PS_EVENT_TYPE_COUNT
} ps_event_type;

/* A borrowed byte string; ptr == NULL means "null / absent". */
typedef struct ps_str {
    const char *ptr;
    uint32_t len;
} ps_str;

typedef struct ps_event {
    ps_str event_id;
    ps_str customer_id;
    ps_str product_id; /* ptr NULL when null */
    ps_str campaign;   /* ptr NULL when null */
    ps_event_type type;
    bool has_amount;
    double amount;
    int64_t ts;        /* event time, ms since the epoch, UTC */
    int64_t signup_ts; /* ms since the epoch, 0 when absent */
    uint32_t part;     /* partition slot, set by the run loop (not decoded) */
} ps_event;

/* Upper-case symbol of the Avro enum ("CLICK", ...); "?" when out of range. */
const char *ps_event_type_name(ps_event_type type);

/* Parse a symbol case-insensitively; returns 0 and sets *type, or -1. */
int ps_event_type_parse(const char *s, size_t len, ps_event_type *type);

/* True when the two strings hold the same bytes (both null counts as equal). */
bool ps_str_eq(ps_str a, ps_str b);

#endif
