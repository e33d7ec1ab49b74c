/*
 * next_action.c -- P(next event type | last event type) per customer, from
 * a Dirichlet posterior whose prior is the customer's segment's (else the
 * global) transition distribution (contract section 2, "Next action").
 *
 * Transitions.  A customer's events, in event-time order, form a chain of
 * types (CLICK, WISHLIST, PURCHASE, SPEND); each consecutive pair i -> j
 * is one transition, counted in a 4 x 4 matrix n_ij in the customer's
 * slice and, as HINCRBY deltas, at the global level and at a segment:
 * ps:global and ps:segment:{k} fields trans_{i}_{j} (e.g.
 * trans_click_purchase).  Shared counts use base + delta (aggregate.h), so
 * instances add up and a failed flush writes the same deltas again.
 *
 * Which segment.  A transition a -> b is counted at the segment the
 * customer was in just after event a was applied (segments.h), i.e. the
 * segment whose row was the prior of the forecast that event b answers;
 * none (global level only) when the customer had no segment then.  It is
 * NOT the segment after b: segments runs before next_action
 * (aggregates.def), so a PURCHASE that moves a customer into a segment
 * would otherwise count "-> purchase" at the segment it moved into and
 * inflate that segment's purchase rows (bench/next_action_calibration.c
 * measures this).  The slice remembers, with each remembered event, the
 * customer's segment just after that event was applied (for an event that
 * arrives out of order: the segment at its arrival).  A customer moved by
 * a k-means sweep between two of its events still counts the transition at
 * the segment of its earlier event (a forecast written after the sweep
 * used the new one; about 1.5 % of transitions in the bench).  States
 * saved before this rule (version 1) have no segment per event
 * ("unknown"), and a remembered segment >= segments_k (k lowered since)
 * counts as unknown: such a transition is counted at the customer's
 * current segment (global only without one).
 * The customer's own forecast always takes its prior from its CURRENT
 * segment (see Posterior): that is what its next event is judged against.
 *
 * Event time.  The slice remembers the customer's last NA_HIST events
 * (time, type, segment), sorted by time; an event with the same time as a
 * remembered one goes after it (arrival order breaks ties).  An event
 * older than the latest one (out of order, e.g. from the allowed lateness)
 * is put in its place: if it falls between remembered events a and b, the
 * transition a -> b is taken back (-1, at every level) and a -> e and
 * e -> b are counted, so the counts are those of the event-time chain.
 * An event older than every remembered one, when the memory is full,
 * changes nothing here: its neighbours in the chain are no longer known.
 * A transition taken back is subtracted from the segment that counted it
 * (that of its first event), so segment counts are exact too; only for an
 * "unknown" segment (a version-1 state) it is subtracted from the current
 * segment, which may differ from the one that counted it (segment views
 * are clamped at 0).
 *
 * Posterior.  For last type i, the prior is Dirichlet(alpha) with
 *     alpha_j = next_prior_strength * P_parent(j | i),
 * where P_parent(j | i) = m_ij / sum_j m_ij with m the segment's counts
 * when its row i has any, else the global counts when their row i has any,
 * else 1/4 (uniform).  Adding the customer's row gives the posterior mean
 *     P(next = j | last = i) = (alpha_j + n_ij) / (sum_j alpha_j + sum_j n_ij)
 * (Dirichlet-multinomial conjugacy; a customer with few transitions gets
 * its population's behaviour, a busy one its own).  With strength 0 and no
 * own transitions out of i, the parent distribution itself is used.
 *
 * Outputs.  ps:cust:{id}: next_click, next_wishlist, next_purchase,
 * next_spend for the customer's current last type (round-trip digits, so
 * the four sum to 1 as read back), last_event_type.  ps:segment:{k} and
 * ps:global: trans_{i}_{j} (HINCRBY) and next_{j}_after_{i} = the row
 * P(j | i) of that level (0.25 each for a row without data).
 *
 * Saved state (version 2): version, the 16 counts, the number of
 * remembered events, then per event its time, type and segment code (0
 * unknown, 1 none, 2 + k segment k).  Version 1 (no segment codes) still
 * loads, with every code unknown.
 *
 * Memory: 112 bytes per customer (16 uint32 counts, the last 4 events with
 * their segments); 256 bytes per segment and for the global record.  No
 * allocation.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "kmeans.h"
#include "next_action.h"
#include "pipeline.h"
#include "segments.h"
#include "../common/error.h"

#define NT PS_EVENT_TYPE_COUNT /* 4 event types */
#define NA_HIST 4
#define NA_STATE_VERSION 2
#define NA_STATE_VERSION_NOSEG 1 /* before hist_seg: still loads */

/* hist_seg codes: the customer's segment just after the event. */
#define NA_SEG_UNKNOWN 0 /* a version-1 state: use the current segment */
#define NA_SEG_NONE 1    /* no segment: global level only */
#define NA_SEG_BASE 2    /* NA_SEG_BASE + k: segment k */

static const char *const type_names[NT] = {"click", "wishlist", "purchase",
                                           "spend"};

typedef struct na_cust {
    uint32_t n[NT][NT];            /* transitions i -> j */
    int64_t hist_ts[NA_HIST];      /* last events, oldest first */
    uint8_t hist_type[NA_HIST];
    uint8_t hist_seg[NA_HIST];     /* NA_SEG_* code, just after the event */
    uint8_t hist_n;
} na_cust;

_Static_assert(sizeof(na_cust) <= 112, "the header documents 112 bytes");

typedef struct na_shared {
    int64_t base[NT * NT];  /* totals in Redis when last read / written */
    int64_t delta[NT * NT]; /* this instance's change since its last flush */
} na_shared;

typedef struct next_action {
    ps_pipeline *pipe;
    size_t me;
    double strength;
    int k; /* segments_k: codes of segments >= k are treated as unknown */
    ps_entity *global;
    ps_entity *segments[PS_KMEANS_MAX_K]; /* by segment id, created lazily */
} next_action;

const char *ps_next_action_type_name(int type)
{
    return type >= 0 && type < NT ? type_names[type] : "?";
}

/* ------------------------------------------------------------- helpers */

static na_shared *shared_of(next_action *a, const ps_entity *e)
{
    return e ? ps_pipeline_slice(a->pipe, e, a->me) : NULL;
}

/* Segment seg's entity, or NULL when seg is none (< 0).  Only apply
 * creates segment entities (create): writers and readers look them up. */
static ps_entity *segment_entity(next_action *a, int seg, bool create)
{
    if (seg < 0 || seg >= PS_KMEANS_MAX_K)
        return NULL;
    if (a->segments[seg] == NULL) { /* entities live as long as the pipe */
        char id[16];
        snprintf(id, sizeof(id), "%d", seg);
        ps_str sid = {id, (uint32_t)strlen(id)};
        a->segments[seg] =
            create ? ps_pipeline_entity(a->pipe, PS_KIND_SEGMENT, sid)
                   : ps_pipeline_find(a->pipe, PS_KIND_SEGMENT, sid);
    }
    return a->segments[seg];
}

/* The customer's current segment entity, or NULL when it has none. */
static ps_entity *segment_of(next_action *a, const ps_entity *cust,
                             bool create)
{
    return segment_entity(a, ps_segments_of(a->pipe, cust), create);
}

/* The hist_seg code of segment seg (-1: none). */
static uint8_t seg_code(int seg)
{
    return seg >= 0 && seg < PS_KMEANS_MAX_K ? (uint8_t)(NA_SEG_BASE + seg)
                                              : NA_SEG_NONE;
}

/* The segment (-1: none) that counts transitions out of a remembered
 * event with hist_seg code `code`; cur is the customer's current one. */
static int seg_of_code(const next_action *a, uint8_t code, int cur)
{
    if (code == NA_SEG_NONE)
        return -1;
    if (code >= NA_SEG_BASE && code - NA_SEG_BASE < a->k)
        return code - NA_SEG_BASE;
    return cur; /* unknown (a version-1 state, or k has shrunk) */
}

static double view(const na_shared *s, int i, int j)
{
    int64_t v = s->base[i * NT + j] + s->delta[i * NT + j];
    return v > 0 ? (double)v : 0.0;
}

/* Row i of a shared level as probabilities; false when it has no data. */
static bool shared_row(const na_shared *s, int i, double *row)
{
    double tot = 0;
    if (s == NULL)
        return false;
    for (int j = 0; j < NT; j++)
        tot += view(s, i, j);
    if (tot <= 0)
        return false;
    for (int j = 0; j < NT; j++)
        row[j] = view(s, i, j) / tot;
    return true;
}

/* Count transition i -> j (by = +1 or -1) at every level. */
static void count(next_action *a, na_cust *cs, ps_entity *seg, int i, int j,
                  int by)
{
    if (by < 0) {
        assert(cs->n[i][j] > 0); /* adjacent remembered events were counted */
        cs->n[i][j]--;
    } else {
        cs->n[i][j]++;
    }
    shared_of(a, a->global)->delta[i * NT + j] += by;
    if (seg != NULL) {
        shared_of(a, seg)->delta[i * NT + j] += by;
        ps_pipeline_touch(a->pipe, seg);
    }
}

/* The posterior mean row for last type i of customer slice cs. */
static void posterior(next_action *a, const ps_entity *cust, const na_cust *cs,
                      int i, double *p)
{
    double prior[NT], own = 0;
    ps_entity *seg = segment_of(a, cust, false);
    if (!shared_row(seg ? shared_of(a, seg) : NULL, i, prior) &&
        !shared_row(shared_of(a, a->global), i, prior))
        for (int j = 0; j < NT; j++)
            prior[j] = 1.0 / NT;
    for (int j = 0; j < NT; j++)
        own += cs->n[i][j];
    double denom = a->strength + own;
    for (int j = 0; j < NT; j++)
        p[j] = denom > 0 ? (a->strength * prior[j] + cs->n[i][j]) / denom
                         : prior[j];
}

/* ----------------------------------------------------------- lifecycle */

static int na_init(void **self, const ps_agg_env *env, char *errstr,
                   size_t errstr_size)
{
    next_action *a = calloc(1, sizeof(*a));
    int me = PS_AGG_INDEX_next_action;
    if (a == NULL || me < 0) {
        free(a);
        ps_set_err(errstr, errstr_size, "next_action: out of memory");
        return PS_ERR_NOMEM;
    }
    a->pipe = env->pipe;
    a->me = (size_t)me;
    a->strength =
        env->conf->next_prior_strength > 0 ? env->conf->next_prior_strength : 0;
    a->k = env->conf->segments_k < PS_KMEANS_MAX_K ? env->conf->segments_k
                                                   : PS_KMEANS_MAX_K;
    a->global = ps_pipeline_find(a->pipe, PS_KIND_GLOBAL, (ps_str){"", 0});
    assert(a->global != NULL);
    *self = a;
    return PS_OK;
}

static void na_destroy(void *self) { free(self); }

/* --------------------------------------------------------------- apply */

static int na_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    next_action *a = self;
    na_cust *cs = ctx->cust_state;
    int t = (int)ev->type;
    unsigned pos = cs->hist_n;

    if (t < 0 || t >= NT)
        return PS_OK;
    while (pos > 0 && cs->hist_ts[pos - 1] > ev->ts)
        pos--;
    if (pos == 0 && cs->hist_n == NA_HIST)
        return PS_OK; /* older than all we remember: neighbours unknown */

    /* segments ran first: cur is the segment just after this event, the
     * one e -> next is counted at; prev -> e (and prev -> next, taken
     * back) count at the segment just after prev */
    int cur = ps_segments_of(a->pipe, ctx->cust);
    int prev = pos > 0 ? cs->hist_type[pos - 1] : -1;
    int next = pos < cs->hist_n ? cs->hist_type[pos] : -1;
    int prev_k = prev >= 0 ? seg_of_code(a, cs->hist_seg[pos - 1], cur) : -1;
    ps_entity *seg = segment_entity(a, cur, true);
    ps_entity *prev_seg = segment_entity(a, prev_k, true);
    if ((seg == NULL && cur >= 0 && cur < PS_KMEANS_MAX_K) ||
        (prev_seg == NULL && prev_k >= 0 && prev_k < PS_KMEANS_MAX_K))
        return PS_ERR_NOMEM;
    if (prev >= 0 && next >= 0)
        count(a, cs, prev_seg, prev, next, -1);
    if (prev >= 0)
        count(a, cs, prev_seg, prev, t, +1);
    if (next >= 0)
        count(a, cs, seg, t, next, +1);

    if (cs->hist_n == NA_HIST) { /* forget the oldest */
        memmove(cs->hist_ts, cs->hist_ts + 1, (NA_HIST - 1) * sizeof(int64_t));
        memmove(cs->hist_type, cs->hist_type + 1, NA_HIST - 1);
        memmove(cs->hist_seg, cs->hist_seg + 1, NA_HIST - 1);
        cs->hist_n--;
        pos--;
    }
    memmove(cs->hist_ts + pos + 1, cs->hist_ts + pos,
            (cs->hist_n - pos) * sizeof(int64_t));
    memmove(cs->hist_type + pos + 1, cs->hist_type + pos, cs->hist_n - pos);
    memmove(cs->hist_seg + pos + 1, cs->hist_seg + pos, cs->hist_n - pos);
    cs->hist_ts[pos] = ev->ts;
    cs->hist_type[pos] = (uint8_t)t;
    cs->hist_seg[pos] = seg_code(cur);
    cs->hist_n++;
    return PS_OK;
}

/* --------------------------------------------------------------- writes */

static void na_write_customer(void *self, const ps_entity *cust,
                              const void *state, ps_batch *b)
{
    next_action *a = self;
    const na_cust *cs = state;
    double p[NT];
    static const char *const fields[NT] = {"next_click", "next_wishlist",
                                           "next_purchase", "next_spend"};

    if (cs->hist_n == 0)
        return;
    int last = cs->hist_type[cs->hist_n - 1];
    posterior(a, cust, cs, last, p);
    for (int j = 0; j < NT; j++) {
        ps_batch_arg_cstr(b, fields[j]);
        ps_batch_arg_dbl(b, p[j]); /* round-trip: they sum to 1 */
    }
    ps_batch_arg_cstr(b, "last_event_type");
    ps_batch_arg_cstr(b, type_names[last]);
}

static void na_write_shared_entity(void *self, const ps_entity *e,
                                   void *state, ps_batch *b)
{
    na_shared *s = state;
    const char *key = ps_kind_key((ps_kind)e->kind);
    char name[48];
    (void)self;

    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NT; j++) {
            if (s->delta[i * NT + j] == 0)
                continue;
            snprintf(name, sizeof(name), "trans_%s_%s", type_names[i],
                     type_names[j]);
            ps_batch_begin(b, "HINCRBY");
            ps_batch_arg_key(b, key, e->id, NULL);
            ps_batch_arg_cstr(b, name);
            ps_batch_arg_i64(b, s->delta[i * NT + j]);
            ps_batch_end(b);
        }
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, key, e->id, NULL);
    for (int i = 0; i < NT; i++) {
        double row[NT];
        if (!shared_row(s, i, row))
            for (int j = 0; j < NT; j++)
                row[j] = 1.0 / NT;
        for (int j = 0; j < NT; j++) {
            snprintf(name, sizeof(name), "next_%s_after_%s", type_names[j],
                     type_names[i]);
            ps_batch_arg_cstr(b, name);
            ps_batch_arg_real(b, row[j]);
        }
    }
    ps_batch_end(b);
}

static void na_flushed_shared_entity(void *self, const ps_entity *e,
                                     void *state)
{
    na_shared *s = state;
    (void)self;
    (void)e;
    for (int k = 0; k < NT * NT; k++) {
        s->base[k] += s->delta[k];
        s->delta[k] = 0;
    }
}

static void na_load_shared_field(void *self, ps_entity *e, void *state,
                                 const char *field, size_t flen,
                                 const char *val, size_t vlen)
{
    na_shared *s = state;
    char name[48], num[32];
    (void)self;
    (void)e;
    if (vlen >= sizeof(num) || flen < 6 || memcmp(field, "trans_", 6) != 0)
        return;
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NT; j++) {
            int len = snprintf(name, sizeof(name), "trans_%s_%s",
                               type_names[i], type_names[j]);
            if ((size_t)len == flen && memcmp(name, field, flen) == 0) {
                memcpy(num, val, vlen);
                num[vlen] = '\0';
                s->base[i * NT + j] = strtoll(num, NULL, 10);
            }
        }
}

/* ---------------------------------------------------------- saved state */

static void na_save(void *self, const ps_entity *cust, const void *state,
                    ps_wbuf *w)
{
    const na_cust *cs = state;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, NA_STATE_VERSION);
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NT; j++)
            ps_wbuf_u32(w, cs->n[i][j]);
    ps_wbuf_u8(w, cs->hist_n);
    for (unsigned k = 0; k < cs->hist_n; k++) {
        ps_wbuf_i64(w, cs->hist_ts[k]);
        ps_wbuf_u8(w, cs->hist_type[k]);
        ps_wbuf_u8(w, cs->hist_seg[k]);
    }
}

static int na_load(void *self, ps_entity *cust, void *state, ps_rbuf *r)
{
    na_cust *cs = state;
    uint8_t version;
    (void)self;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 ||
        (version != NA_STATE_VERSION && version != NA_STATE_VERSION_NOSEG))
        return PS_ERR_STATE;
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NT; j++)
            ps_rbuf_u32(r, &cs->n[i][j]);
    if (ps_rbuf_u8(r, &cs->hist_n) < 0 || cs->hist_n > NA_HIST)
        return PS_ERR_STATE;
    for (unsigned k = 0; k < cs->hist_n; k++) {
        ps_rbuf_i64(r, &cs->hist_ts[k]);
        ps_rbuf_u8(r, &cs->hist_type[k]);
        if (version == NA_STATE_VERSION) /* else left 0: NA_SEG_UNKNOWN */
            ps_rbuf_u8(r, &cs->hist_seg[k]);
        if (r->err || cs->hist_type[k] >= NT ||
            cs->hist_seg[k] >= NA_SEG_BASE + PS_KMEANS_MAX_K ||
            (k > 0 && cs->hist_ts[k] < cs->hist_ts[k - 1]))
            return PS_ERR_STATE;
    }
    return r->err ? PS_ERR_STATE : PS_OK;
}

/* ------------------------------------------------------ read-only access */

int ps_next_action_of(ps_pipeline *p, const ps_entity *cust, double *probs)
{
    int index = PS_AGG_INDEX_next_action;
    if (index < 0)
        return -1;
    next_action *a = ps_pipeline_agg_self(p, (size_t)index);
    const na_cust *cs = ps_pipeline_slice(p, cust, (size_t)index);
    if (a == NULL || cs->hist_n == 0)
        return -1;
    int last = cs->hist_type[cs->hist_n - 1];
    posterior(a, cust, cs, last, probs);
    return last;
}

const ps_aggregate_ops ps_agg_next_action = {
    .name = "next_action",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(na_cust),
                   [PS_KIND_GLOBAL] = sizeof(na_shared),
                   [PS_KIND_SEGMENT] = sizeof(na_shared)},
    .init = na_init,
    .destroy = na_destroy,
    .apply = na_apply,
    .write_customer = na_write_customer,
    .write_shared_entity = na_write_shared_entity,
    .flushed_shared_entity = na_flushed_shared_entity,
    .save_customer = na_save,
    .load_customer = na_load,
    .load_shared_field = na_load_shared_field,
};
