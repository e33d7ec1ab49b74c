/*
 * dedup.c -- drop events whose event_id was already applied for the same
 * customer within the dedup horizon (contract section 1, "Duplicates").
 *
 * Producers retry, so the same event can arrive twice, usually close
 * together.  For each customer we remember the 64-bit hash of the ids of
 * its events whose ts lies within `dedup_horizon_ms` (event time, default
 * 24 h) of the newest ts seen for that customer, at most `dedup_max_ids`
 * of them (oldest forgotten first), so memory is bounded per customer.
 * A 64-bit hash makes a false "duplicate" astronomically unlikely
 * (~n^2 / 2^65 for n ids per customer).
 *
 * This aggregate is first in aggregates.def: when it returns PS_AGG_DROP,
 * no other aggregate has seen the event and the pipeline counts it in
 * events_dup.
 *
 * State: the customer's slice holds a pointer to a ring of (hash, ts)
 * owned by this aggregate, rebuilt by load_customer and freed by
 * forget_customer; saved state lists the live entries.
 */
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "../common/error.h"

typedef struct seen_id {
    uint64_t hash;
    int64_t ts;
} seen_id;

typedef struct dedup_ring {
    uint32_t start, n, cap;
    int64_t newest_ts;
    seen_id v[]; /* cap entries, oldest at start */
} dedup_ring;

typedef struct dedup_slice {
    dedup_ring *ring;
} dedup_slice;

typedef struct dedup {
    int64_t horizon_ms;
    uint32_t max_ids;
} dedup;

#define DEDUP_STATE_VERSION 1

static uint64_t hash_bytes(ps_str s)
{
    /* FNV-1a then a final avalanche (splitmix64 finaliser) */
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.ptr[i]) * 1099511628211ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static int dedup_init(void **self, const ps_agg_env *env, char *errstr,
                      size_t errstr_size)
{
    dedup *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        ps_set_err(errstr, errstr_size, "dedup: out of memory");
        return PS_ERR_NOMEM;
    }
    d->horizon_ms = env->conf->dedup_horizon_ms;
    d->max_ids = (uint32_t)(env->conf->dedup_max_ids > 0
                                ? env->conf->dedup_max_ids
                                : 1);
    *self = d;
    return PS_OK;
}

static void dedup_destroy(void *self) { free(self); }

static seen_id *at(dedup_ring *r, uint32_t i)
{
    return &r->v[(r->start + i) % r->cap];
}

/* Forget ids older than the horizon (they are at the front when events
 * come in order; out-of-order ones are dropped when they reach the front). */
static void expire(dedup *d, dedup_ring *r)
{
    while (r->n > 0 && at(r, 0)->ts < r->newest_ts - d->horizon_ms) {
        r->start = (r->start + 1) % r->cap;
        r->n--;
    }
}

/* Append (hash, ts), growing up to max_ids, else overwriting the oldest. */
static int remember(dedup *d, dedup_slice *s, uint64_t h, int64_t ts)
{
    dedup_ring *r = s->ring;
    if (r == NULL || (r->n == r->cap && r->cap < d->max_ids)) {
        uint32_t cap = r ? r->cap * 2 : 4;
        if (cap > d->max_ids)
            cap = d->max_ids;
        dedup_ring *nr = malloc(sizeof(*nr) + cap * sizeof(seen_id));
        if (nr == NULL)
            return PS_ERR_NOMEM;
        nr->start = 0;
        nr->n = 0;
        nr->cap = cap;
        nr->newest_ts = r ? r->newest_ts : INT64_MIN;
        for (uint32_t i = 0; r != NULL && i < r->n; i++)
            nr->v[nr->n++] = *at(r, i);
        free(r);
        s->ring = r = nr;
    }
    if (r->n == r->cap) { /* full at max_ids: forget the oldest */
        r->start = (r->start + 1) % r->cap;
        r->n--;
    }
    *at(r, r->n) = (seen_id){h, ts};
    r->n++;
    if (ts > r->newest_ts)
        r->newest_ts = ts;
    return PS_OK;
}

static int dedup_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    dedup *d = self;
    dedup_slice *s = ctx->cust_state;
    uint64_t h = hash_bytes(ev->event_id);

    if (s->ring != NULL) {
        expire(d, s->ring);
        for (uint32_t i = 0; i < s->ring->n; i++)
            if (at(s->ring, i)->hash == h)
                return PS_AGG_DROP;
    }
    return remember(d, s, h, ev->ts);
}

static void dedup_save(void *self, const ps_entity *cust, const void *state,
                       ps_wbuf *w)
{
    const dedup_slice *s = state;
    dedup_ring *r = s->ring;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, DEDUP_STATE_VERSION);
    ps_wbuf_u32(w, r ? r->n : 0);
    for (uint32_t i = 0; r != NULL && i < r->n; i++) {
        ps_wbuf_u64(w, at(r, i)->hash);
        ps_wbuf_i64(w, at(r, i)->ts);
    }
}

static int dedup_load(void *self, ps_entity *cust, void *state, ps_rbuf *r)
{
    dedup *d = self;
    dedup_slice *s = state;
    uint8_t version;
    uint32_t n;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version != DEDUP_STATE_VERSION ||
        ps_rbuf_u32(r, &n) < 0 || (size_t)n * 16 > ps_rbuf_left(r))
        return PS_ERR_STATE;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t h;
        int64_t ts;
        if (ps_rbuf_u64(r, &h) < 0 || ps_rbuf_i64(r, &ts) < 0)
            return PS_ERR_STATE;
        if (remember(d, s, h, ts) < 0)
            return PS_ERR_NOMEM;
    }
    return PS_OK;
}

static void dedup_forget(void *self, ps_entity *cust, void *state)
{
    dedup_slice *s = state;
    (void)self;
    (void)cust;
    free(s->ring);
    s->ring = NULL;
}

const ps_aggregate_ops ps_agg_dedup = {
    .name = "dedup",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(dedup_slice)},
    .init = dedup_init,
    .destroy = dedup_destroy,
    .apply = dedup_apply,
    .save_customer = dedup_save,
    .load_customer = dedup_load,
    .forget_customer = dedup_forget,
};
