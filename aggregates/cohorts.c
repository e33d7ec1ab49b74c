/*
 * cohorts.c -- monthly signup cohorts: exact size, active customers and
 * revenue per month offset, and retention; rolling 7-day and 30-day spend
 * windows per cohort and per cohort x segment (contract section 2,
 * "Cohorts"; keys ps:cohort:{YYYY-MM} size, active_{m}, revenue_{m},
 * retention_{m}; ps:cohort:{YYYY-MM}:w7d / :w30d and
 * ps:cohort:{YYYY-MM}:seg:{k}:w7d / :w30d).
 *
 * A customer's cohort is the UTC month of its signup_ts, else of the first
 * event seen (contract section 2).  The signup_ts may come on any event:
 * a customer whose first events carry none is put, provisionally, in the
 * month of its first event, and moved when an event first presents a
 * signup_ts (below).  The first signup_ts seen wins: once a customer's
 * cohort comes from a signup_ts it is final, and a later event with a
 * different signup_ts changes nothing (the generator never sends two; an
 * edited signup date is not a reason to rewrite history).  Month offset
 * m = months from the cohort month to the event's month (cohort_math.h);
 * an event in an earlier month than the cohort counts at offset 0.
 *
 * Moving a customer.  While its cohort is provisional the customer keeps,
 * outside its slice (cohort_hist, freed when the move is done or the
 * customer leaves memory): every month it was active in with its revenue
 * there, and its spend per (window bucket, segment) still inside the
 * 30-day ring.  The move then, all as HINCRBY / HINCRBYFLOAT deltas
 * (negative ones on the old cohort): size -1 / +1; active_{m} -1 for every
 * old offset, +1 for every offset recomputed from the months against the
 * new cohort month; revenue_{m} the same per month; and in the rolling
 * windows, after bringing both cohorts' rings to the same position (the
 * later of the two): n, sum and M2 per bucket out of the old cohort's ring
 * and its segment rings, into the new one's (ps_window_unadd / _merge),
 * and the customer's `active` members (ps_window_member_move).  The
 * numbers are then those the contract's rule gives had the signup_ts been
 * on the first event (floating-point rounding of sums aside; a window
 * bucket the move empties is exactly 0).  A customer state saved before
 * version 3 keeps the cohort it had (treated as final).
 *
 * Revenue: every PURCHASE amount and SPEND amount, by the offset of its
 * event.
 *
 * Rolling windows (window.h).  Per cohort one ring of 30 days of buckets
 * (conf->window_bucket_ms wide, 1 h by default: B = ceil(30 d / width)
 * buckets) answers both the 30-day window and, through
 * ps_window_query_span over its last ceil(7 d / width) buckets, the 7-day
 * one: both end at the same boundary.  Per cohort x segment one more ring,
 * created at the first event of that segment.  Amounts: every PURCHASE
 * and SPEND with an amount (0 included); activity (`active`): any event.
 * An event counts in the cohort-level ring, and in the ring of the
 * customer's segment at event time (ps_segments_of, which has run on the
 * event already) when it has one.
 *
 * Position.  A cohort's rings move together (one position per cohort):
 * at each event to its partition's watermark, after each batch to the
 * global watermark, and forward when an event lies beyond the ahead
 * buckets (ps_window_add's push; the other rings of the cohort follow).
 * Ahead buckets: ceil(lateness / width) + 2 (one for the watermark's own
 * bucket, one of slack for the skew between partitions; at most 64).  A
 * window covers [end - span * width, end), aligned to buckets, at most one
 * bucket behind the watermark; the hashes carry start_ms and end_ms.
 * Events older than the 30-day ring's start when they arrive are ignored
 * by the windows (they still count in the exact monthly numbers).
 *
 * Each hash has n, sum, mean, std (ddof = 1, 0 when n < 2), p_spend_gt =
 * P(amount >= spend_threshold) under N(mean, std^2) -- with std = 0 (one
 * amount, or all equal) the fit is all mass at the mean, so 1 if mean >= T
 * else 0, and 0 for an empty window -- active, start_ms and end_ms.  A
 * hash is written in a flush only when its content (n, sum, active) or
 * position changed since the last successful flush: each window keeps the
 * snapshot Redis holds and the one being written (committed in flushed).
 *
 * Distinct active customers are exact (window.h).  Rule: `active` of a
 * cohort x segment window counts each customer of the cohort that has at
 * least one event in the window while it was in that segment (its segment
 * at event time); a customer who changed segment inside the window counts
 * once in each segment it had events in, never twice in one.  Every
 * customer keeps a ps_window_member for its cohort's ring and one for the
 * ring of its current segment in its slice (48 of its 96 bytes), and, for
 * each segment it left whose ring still counts it (its last activity there
 * is less than 30 days old), that segment's member outside the slice
 * (cohort_hist): coming back to the segment resumes that member instead of
 * counting the customer a second time.  Dead members are dropped at the
 * customer's events.
 *
 * Memory: the rings, ps_window_bytes() each (about 26 KB at the defaults),
 * per cohort and per cohort x segment seen; never per event.  Per
 * customer 96 bytes of slice, plus cohort_hist only while needed: 32 bytes
 * per left segment still counted, and, while the cohort is provisional,
 * 16 bytes per active month and 40 per (bucket, segment) with spend in
 * the last 30 days.  apply allocates when a cohort or a cohort x segment
 * gets its first event and when a cohort_hist grows.
 *
 * Saved state.  The members and the cohort_hist are in the customer's
 * saved state (version 3; version 2 loads without the history and with a
 * final cohort, version 1 also with empty members).  The rings are this
 * aggregate's state, ps:state:agg:cohorts, written in every flush where a
 * ring's content or position changed (about 24 bytes per ring bucket: 17
 * KB per ring at the defaults), so a restart resumes exactly.  A blob
 * saved with another bucket width, lateness or 7/30-day shape is ignored
 * (the windows start empty; the exact monthly numbers are unaffected).
 *
 * LIMITATION, several instances.  The rings are per instance and their
 * state blob is last-writer-wins: with several instances in one consumer
 * group each publishes :w7d / :w30d from its own partitions' customers
 * only and overwrites the others'.  Exact single-instance only.  Making
 * them combine needs per-bucket additive counters (n, sum, shifted sum of
 * squares, attributed customers and scheduled moves) written as HINCRBY
 * deltas to a shared hash and loaded back, which the run loop does not
 * provide for keys other than the output hashes yet.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "cohort_math.h"
#include "kmeans.h"
#include "pipeline.h"
#include "segments.h"
#include "window.h"
#include "../common/error.h"

#define MAX_OFFSET 128
#define COHORT_STATE_VERSION 3 /* 2: without fixed / history; 1: without
                                  the window members either */
#define WINDOWS_STATE_VERSION 1
#define DAY_MS INT64_C(86400000)
#define R7 0  /* ranges of a ring: the 7-day window */
#define R30 1 /* and the 30-day one (the whole ring) */

/* A left segment whose ring still counts the customer. */
typedef struct seg_member {
    int32_t seg;
    uint32_t reserved;
    ps_window_member m;
} seg_member;

/* Provisional cohort: activity and revenue of one month (absolute). */
typedef struct month_rev {
    int32_t month;
    uint32_t reserved;
    double revenue;
} month_rev;

/* Provisional cohort: spend of one window bucket, segment seg (-1 none). */
typedef struct bucket_spend {
    int64_t bucket;
    int32_t seg;
    uint32_t reserved;
    ps_window_spend s;
} bucket_spend;

/* What a customer keeps outside its slice (NULL when all empty). */
typedef struct cohort_hist {
    seg_member *segs;
    month_rev *months;
    bucket_spend *spend;
    uint32_t n_segs, cap_segs, n_months, cap_months, n_spend, cap_spend;
} cohort_hist;

typedef struct cohort_cust {
    int32_t month;      /* cohort month number */
    uint32_t has;       /* 1 once the customer has a cohort */
    uint64_t active[2]; /* bit m: active in offset m */
    uint32_t changed_gen;
    int32_t seg1;            /* segment of seg_m + 1, 0 = none */
    ps_window_member all_m;  /* in its cohort's ring */
    ps_window_member seg_m;  /* in its cohort x segment (seg1 - 1) ring */
    uint32_t fixed;          /* 1: cohort from a signup_ts, final */
    uint32_t reserved;
    cohort_hist *h;          /* NULL when empty */
} cohort_cust;

/* Per cohort: totals as base (from Redis) + delta (unflushed). */
typedef struct cohort_counts {
    int64_t size_base, size_delta;
    int64_t active_base[MAX_OFFSET], active_delta[MAX_OFFSET];
    double revenue_base[MAX_OFFSET], revenue_delta[MAX_OFFSET];
    int32_t max_offset; /* highest offset with data (0 when none) */
    uint32_t win_ix1;   /* index + 1 of its cohort_win (cache, 0 = unknown) */
} cohort_counts;

/* What a window hash says: written when it differs from the last one. */
typedef struct win_snap {
    uint64_t n, active;
    double sum;
    int64_t end_ms;
} win_snap;

typedef struct win_slot {
    ps_window *w;       /* NULL until the first event */
    win_snap last[2];   /* in Redis after the last successful flush */
    win_snap pend[2];   /* written by the flush in progress */
    uint8_t pend_set[2];
} win_slot;

/* The rings of one cohort: slot 0 the cohort, slot 1 + s segment s. */
typedef struct cohort_win {
    int32_t month;
    uint32_t changed_gen; /* ring content or position changed: write and
                             save while > the pipeline generation */
    win_slot slot[];      /* [1 + k] */
} cohort_win;

typedef struct cohorts {
    ps_pipeline *pipe;
    size_t me;
    int k;              /* segments: conf->segments_k */
    double threshold;   /* conf->spend_threshold */
    ps_window_conf wconf;
    uint32_t span[2];   /* buckets of the 7-day and the 30-day window */
    cohort_win **wins;
    size_t wins_n, wins_cap;
} cohorts;

static void wins_free(cohort_win **wins, size_t n, int k)
{
    for (size_t i = 0; i < n; i++) {
        if (wins[i] == NULL)
            continue;
        for (int s = 0; s <= k; s++)
            ps_window_destroy(wins[i]->slot[s].w);
        free(wins[i]);
    }
    free(wins);
}

static int coh_init(void **self, const ps_agg_env *env, char *errstr,
                    size_t errstr_size)
{
    const ps_agg_conf *conf = env->conf;
    int64_t bms = conf->window_bucket_ms;
    int me = ps_pipeline_agg_index("cohorts");
    if (bms < 1 || bms > 30 * DAY_MS) {
        ps_set_err(errstr, errstr_size,
                   "cohorts: window bucket must be 1 ms .. 30 days");
        return PS_ERR_CONFIG;
    }
    int64_t b30 = (30 * DAY_MS + bms - 1) / bms;
    int64_t b7 = (7 * DAY_MS + bms - 1) / bms;
    if (b30 > (int64_t)PS_WINDOW_MAX_BUCKETS) {
        ps_set_err(errstr, errstr_size,
                   "cohorts: window bucket too small (30 days > %u buckets)",
                   PS_WINDOW_MAX_BUCKETS);
        return PS_ERR_CONFIG;
    }
    int64_t late = conf->allowed_lateness_ms > 0 ? conf->allowed_lateness_ms
                                                 : 0;
    int64_t ahead = late / bms + (late % bms != 0) + 2;
    if (ahead > (int64_t)PS_WINDOW_MAX_AHEAD)
        ahead = PS_WINDOW_MAX_AHEAD;

    cohorts *c = calloc(1, sizeof(*c));
    if (c == NULL || me < 0) {
        free(c);
        ps_set_err(errstr, errstr_size, "cohorts: out of memory");
        return PS_ERR_NOMEM;
    }
    c->pipe = env->pipe;
    c->me = (size_t)me;
    c->k = conf->segments_k > 0 ? conf->segments_k : 0;
    c->threshold = conf->spend_threshold;
    c->wconf.bucket_ms = bms;
    c->wconf.buckets = (uint32_t)b30;
    c->wconf.ahead = (uint32_t)ahead;
    c->span[R7] = (uint32_t)b7;
    c->span[R30] = (uint32_t)b30;
    if (ps_window_conf_check(&c->wconf, errstr, errstr_size) < 0) {
        free(c);
        return PS_ERR_CONFIG;
    }
    *self = c;
    return PS_OK;
}

static void coh_destroy(void *self)
{
    cohorts *c = self;
    if (c == NULL)
        return;
    wins_free(c->wins, c->wins_n, c->k);
    free(c);
}

/* ---------------------------------------------------------------------- */
/* Rings                                                                    */
/* ---------------------------------------------------------------------- */

static cohort_win *win_new(cohorts *c, int32_t month)
{
    cohort_win *g =
        calloc(1, sizeof(*g) + (size_t)(c->k + 1) * sizeof(win_slot));
    if (g == NULL)
        return NULL;
    g->month = month;
    g->slot[0].w = ps_window_new(&c->wconf, NULL, 0);
    if (g->slot[0].w == NULL) {
        free(g);
        return NULL;
    }
    return g;
}

static int wins_push(cohorts *c, cohort_win *g)
{
    if (c->wins_n == c->wins_cap) {
        size_t cap = c->wins_cap ? 2 * c->wins_cap : 16;
        cohort_win **v = realloc(c->wins, cap * sizeof(*v));
        if (v == NULL)
            return PS_ERR_NOMEM;
        c->wins = v;
        c->wins_cap = cap;
    }
    c->wins[c->wins_n++] = g;
    return PS_OK;
}

/* The rings of cohort month (entity e's slice caches where they are);
 * created when missing.  NULL on OOM. */
static cohort_win *win_of(cohorts *c, cohort_counts *k, int32_t month)
{
    if (k->win_ix1 != 0 && k->win_ix1 <= c->wins_n &&
        c->wins[k->win_ix1 - 1]->month == month)
        return c->wins[k->win_ix1 - 1];
    for (size_t i = 0; i < c->wins_n; i++) {
        if (c->wins[i]->month == month) {
            k->win_ix1 = (uint32_t)i + 1;
            return c->wins[i];
        }
    }
    cohort_win *g = win_new(c, month);
    if (g == NULL || wins_push(c, g) < 0) {
        if (g != NULL) {
            ps_window_destroy(g->slot[0].w);
            free(g);
        }
        return NULL;
    }
    k->win_ix1 = (uint32_t)c->wins_n;
    return g;
}

/* Move every ring of g to end at the boundary at or before wm; true when
 * the position changed. */
static bool win_advance(cohorts *c, cohort_win *g, int64_t wm)
{
    if (wm < 0)
        return false; /* INT64_MIN: nothing known yet */
    int64_t before = ps_window_end_ms(g->slot[0].w);
    for (int s = 0; s <= c->k; s++)
        if (g->slot[s].w != NULL)
            ps_window_advance(g->slot[s].w, wm);
    return ps_window_end_ms(g->slot[0].w) != before;
}

/* After a push: every ring of g to the furthest position among them. */
static void win_align(cohorts *c, cohort_win *g)
{
    int64_t end = 0;
    for (int s = 0; s <= c->k; s++)
        if (g->slot[s].w != NULL && ps_window_end_ms(g->slot[s].w) > end)
            end = ps_window_end_ms(g->slot[s].w);
    win_advance(c, g, end);
}

/* Ring of segment seg in g, created at g's position.  NULL on OOM. */
static ps_window *seg_ring(cohorts *c, cohort_win *g, int seg)
{
    win_slot *sl = &g->slot[1 + seg];
    if (sl->w == NULL) {
        sl->w = ps_window_new(&c->wconf, NULL, 0);
        if (sl->w != NULL)
            ps_window_advance(sl->w, ps_window_end_ms(g->slot[0].w));
    }
    return sl->w;
}

static ps_window_result ring_apply(ps_window *w, const ps_event *ev,
                                   bool spend, ps_window_member *m)
{
    return spend ? ps_window_add(w, ev->ts, ev->amount, m)
                 : ps_window_touch(w, ev->ts, m);
}

/* ---------------------------------------------------------------------- */
/* What a customer keeps outside its slice                                  */
/* ---------------------------------------------------------------------- */

/* Room for one more element in *v (n used, *cap allocated). */
static int grow(void **v, uint32_t n, uint32_t *cap, size_t elem)
{
    if (n < *cap)
        return PS_OK;
    uint32_t c = *cap ? 2 * *cap : 4;
    void *nv = realloc(*v, (size_t)c * elem);
    if (nv == NULL)
        return PS_ERR_NOMEM;
    *v = nv;
    *cap = c;
    return PS_OK;
}

static cohort_hist *hist_get(cohort_cust *cc)
{
    if (cc->h == NULL)
        cc->h = calloc(1, sizeof(*cc->h));
    return cc->h;
}

static void hist_free(cohort_cust *cc)
{
    if (cc->h == NULL)
        return;
    free(cc->h->segs);
    free(cc->h->months);
    free(cc->h->spend);
    free(cc->h);
    cc->h = NULL;
}

/* The provisional history is not needed any more (cohort now final). */
static void hist_drop_provisional(cohort_cust *cc)
{
    cohort_hist *h = cc->h;
    if (h == NULL)
        return;
    free(h->months);
    free(h->spend);
    h->months = NULL;
    h->spend = NULL;
    h->n_months = h->cap_months = h->n_spend = h->cap_spend = 0;
    if (h->n_segs == 0)
        hist_free(cc);
}

/* Provisional cohort: remember activity (and revenue) in month. */
static int hist_month(cohort_cust *cc, int32_t month, double revenue)
{
    cohort_hist *h = hist_get(cc);
    if (h == NULL)
        return PS_ERR_NOMEM;
    for (uint32_t i = 0; i < h->n_months; i++) {
        if (h->months[i].month == month) {
            h->months[i].revenue += revenue;
            return PS_OK;
        }
    }
    if (grow((void **)&h->months, h->n_months, &h->cap_months,
             sizeof(month_rev)) < 0)
        return PS_ERR_NOMEM;
    h->months[h->n_months++] = (month_rev){month, 0, revenue};
    return PS_OK;
}

/* Drop spend entries whose bucket the ring w has expired. */
static void hist_prune_spend(cohort_hist *h, const ps_window *w,
                             int64_t bucket_ms)
{
    int64_t first = ps_window_start_ms(w) / bucket_ms;
    uint32_t j = 0;
    for (uint32_t i = 0; i < h->n_spend; i++)
        if (h->spend[i].bucket >= first)
            h->spend[j++] = h->spend[i];
    h->n_spend = j;
}

/* Provisional cohort: remember an amount accepted by the rings. */
static int hist_spend(cohorts *c, cohort_cust *cc, const ps_window *w,
                      int64_t ts, int seg, double amount)
{
    cohort_hist *h = hist_get(cc);
    int64_t bucket = ts / c->wconf.bucket_ms;
    if (h == NULL)
        return PS_ERR_NOMEM;
    for (uint32_t i = h->n_spend; i-- > 0;) {
        if (h->spend[i].bucket == bucket && h->spend[i].seg == seg) {
            ps_window_spend_add(&h->spend[i].s, amount);
            return PS_OK;
        }
    }
    if (h->n_spend == h->cap_spend)
        hist_prune_spend(h, w, c->wconf.bucket_ms);
    if (grow((void **)&h->spend, h->n_spend, &h->cap_spend,
             sizeof(bucket_spend)) < 0)
        return PS_ERR_NOMEM;
    bucket_spend *e = &h->spend[h->n_spend++];
    memset(e, 0, sizeof(*e));
    e->bucket = bucket;
    e->seg = seg;
    ps_window_spend_add(&e->s, amount);
    return PS_OK;
}

/* Drop left-segment members the rings of g no longer count. */
static void hist_prune_segs(cohorts *c, cohort_cust *cc, cohort_win *g)
{
    cohort_hist *h = cc->h;
    if (h == NULL || h->n_segs == 0)
        return;
    uint32_t j = 0;
    for (uint32_t i = 0; i < h->n_segs; i++) {
        const seg_member *sm = &h->segs[i];
        const ps_window *w = sm->seg >= 0 && sm->seg < c->k
                                 ? g->slot[1 + sm->seg].w
                                 : NULL;
        if (w != NULL && ps_window_member_live(w, &sm->m))
            h->segs[j++] = *sm;
    }
    h->n_segs = j;
    if (j == 0 && cc->fixed)
        hist_free(cc);
}

/* The customer now has segment seg (!= seg1 - 1): park the member of the
 * segment it leaves while that ring still counts it, and resume the one
 * of seg if parked. */
static int seg_switch(cohort_cust *cc, cohort_win *g, int seg)
{
    int old = cc->seg1 - 1;
    ps_window_member resume;
    memset(&resume, 0, sizeof(resume));
    if (cc->h != NULL) {
        cohort_hist *h = cc->h;
        for (uint32_t i = 0; i < h->n_segs; i++) {
            if (h->segs[i].seg == seg) {
                resume = h->segs[i].m;
                h->segs[i] = h->segs[--h->n_segs];
                break;
            }
        }
    }
    if (old >= 0 && g->slot[1 + old].w != NULL &&
        ps_window_member_live(g->slot[1 + old].w, &cc->seg_m)) {
        cohort_hist *h = hist_get(cc);
        if (h == NULL || grow((void **)&h->segs, h->n_segs, &h->cap_segs,
                              sizeof(seg_member)) < 0)
            return PS_ERR_NOMEM;
        h->segs[h->n_segs++] = (seg_member){old, 0, cc->seg_m};
    }
    cc->seg_m = resume;
    cc->seg1 = seg + 1;
    return PS_OK;
}

/* The event in the rolling windows of its customer's cohort. */
static int windows_apply(cohorts *c, const ps_event *ev,
                         const ps_apply_ctx *ctx, cohort_counts *k)
{
    cohort_cust *cc = ctx->cust_state;
    uint32_t next_gen = ps_pipeline_generation(c->pipe) + 1;
    cohort_win *g = win_of(c, k, cc->month);
    if (g == NULL)
        return PS_ERR_NOMEM;
    if (win_advance(c, g, ps_pipeline_watermark(c->pipe, ev->part)))
        g->changed_gen = next_gen;

    bool spend = (ev->type == PS_PURCHASE || ev->type == PS_SPEND) &&
                 ev->has_amount;
    int seg = ps_segments_of(c->pipe, ctx->cust);
    if (seg >= c->k)
        seg = -1; /* not a segment of this configuration */
    ps_window_result r = ring_apply(g->slot[0].w, ev, spend, &cc->all_m);
    bool pushed = r == PS_WINDOW_PUSHED;
    bool accepted = r == PS_WINDOW_ADDED || pushed;
    if (seg >= 0) {
        ps_window *w = seg_ring(c, g, seg);
        if (w == NULL)
            return PS_ERR_NOMEM;
        if (cc->seg1 != seg + 1 && seg_switch(cc, g, seg) < 0)
            return PS_ERR_NOMEM;
        r = ring_apply(w, ev, spend, &cc->seg_m);
        pushed |= r == PS_WINDOW_PUSHED;
        accepted |= r == PS_WINDOW_ADDED || r == PS_WINDOW_PUSHED;
    }
    if (pushed)
        win_align(c, g);
    if (accepted)
        g->changed_gen = next_gen;
    if (accepted && spend && !cc->fixed &&
        hist_spend(c, cc, g->slot[0].w, ev->ts, seg, ev->amount) < 0)
        return PS_ERR_NOMEM;
    hist_prune_segs(c, cc, g);
    return PS_OK;
}

static ps_entity *cohort_entity(cohorts *c, int32_t month)
{
    char id[PS_MONTH_STR_SIZE];
    if (ps_month_format(month, id, sizeof(id)) < 0)
        return NULL;
    return ps_pipeline_entity(c->pipe, PS_KIND_COHORT,
                              (ps_str){id, (uint32_t)strlen(id)});
}

/* Offset of month in cohort `cohort` (earlier months count at 0). */
static int32_t offset_of(int32_t month, int32_t cohort)
{
    return month > cohort ? month - cohort : 0;
}

/* One member from ring `from` to ring `to` (same position by now). */
static void member_to(ps_window *from, ps_window_member *m, ps_window *to)
{
    if (from == NULL) { /* never used with a ring: nothing counted */
        memset(m, 0, sizeof(*m));
        return;
    }
    if (ps_window_member_move(from, m, to) < 0)
        memset(m, 0, sizeof(*m)); /* not aligned: a bug, counted nowhere */
}

/* The customer's first signup_ts puts it in cohort `to`: move everything
 * it contributed to its provisional cohort (see the file comment). */
static int cohort_move(cohorts *c, const ps_event *ev,
                       const ps_apply_ctx *ctx, int32_t to)
{
    cohort_cust *cc = ctx->cust_state;
    cohort_hist *h = cc->h;
    int32_t from = cc->month;
    uint32_t next_gen = ps_pipeline_generation(c->pipe) + 1;
    ps_entity *eo = cohort_entity(c, from);
    ps_entity *en = cohort_entity(c, to);
    if (eo == NULL || en == NULL)
        return PS_ERR_NOMEM;
    cohort_counts *ko = ps_pipeline_slice(c->pipe, eo, c->me);
    cohort_counts *kn = ps_pipeline_slice(c->pipe, en, c->me);

    /* exact monthly numbers */
    uint64_t bits[2] = {0, 0};
    ko->size_delta--;
    kn->size_delta++;
    for (int m = 0; m < MAX_OFFSET; m++)
        if (cc->active[m / 64] & (UINT64_C(1) << (m % 64)))
            ko->active_delta[m]--;
    for (uint32_t i = 0; h != NULL && i < h->n_months; i++) {
        const month_rev *mr = &h->months[i];
        int32_t mo = offset_of(mr->month, from), mn = offset_of(mr->month, to);
        if (mo < MAX_OFFSET && mr->revenue != 0)
            ko->revenue_delta[mo] -= mr->revenue;
        if (mn < MAX_OFFSET) {
            bits[mn / 64] |= UINT64_C(1) << (mn % 64);
            if (mr->revenue != 0)
                kn->revenue_delta[mn] += mr->revenue;
            if (mn > kn->max_offset)
                kn->max_offset = mn;
        }
    }
    for (int m = 0; m < MAX_OFFSET; m++)
        if (bits[m / 64] & (UINT64_C(1) << (m % 64)))
            kn->active_delta[m]++;
    cc->active[0] = bits[0];
    cc->active[1] = bits[1];
    cc->month = to;
    cc->changed_gen = next_gen;
    if (ps_pipeline_touch(c->pipe, eo) < 0 ||
        ps_pipeline_touch(c->pipe, en) < 0)
        return PS_ERR_NOMEM;

    /* the rolling windows: both cohorts at one position, then move */
    cohort_win *go = win_of(c, ko, from), *gn = win_of(c, kn, to);
    if (go == NULL || gn == NULL)
        return PS_ERR_NOMEM;
    int64_t wm = ps_pipeline_watermark(c->pipe, ev->part);
    win_advance(c, go, wm);
    win_advance(c, gn, wm);
    int64_t end = ps_window_end_ms(go->slot[0].w);
    if (ps_window_end_ms(gn->slot[0].w) > end)
        end = ps_window_end_ms(gn->slot[0].w);
    win_advance(c, go, end);
    win_advance(c, gn, end);
    go->changed_gen = gn->changed_gen = next_gen;

    for (uint32_t i = 0; h != NULL && i < h->n_spend; i++) {
        const bucket_spend *e = &h->spend[i];
        int64_t ts = e->bucket * c->wconf.bucket_ms;
        if (ts < ps_window_start_ms(go->slot[0].w))
            continue; /* expired: in neither ring any more */
        ps_window_unadd(go->slot[0].w, ts, &e->s);
        ps_window_merge(gn->slot[0].w, ts, &e->s);
        if (e->seg < 0 || e->seg >= c->k || go->slot[1 + e->seg].w == NULL)
            continue;
        ps_window *w = seg_ring(c, gn, e->seg);
        if (w == NULL)
            return PS_ERR_NOMEM;
        ps_window_unadd(go->slot[1 + e->seg].w, ts, &e->s);
        ps_window_merge(w, ts, &e->s);
    }
    member_to(go->slot[0].w, &cc->all_m, gn->slot[0].w);
    if (cc->seg1 > 0 && cc->seg1 <= c->k) {
        ps_window *w = seg_ring(c, gn, cc->seg1 - 1);
        if (w == NULL)
            return PS_ERR_NOMEM;
        member_to(go->slot[cc->seg1].w, &cc->seg_m, w);
    }
    for (uint32_t i = 0; h != NULL && i < h->n_segs; i++) {
        seg_member *sm = &h->segs[i];
        ps_window *w = seg_ring(c, gn, sm->seg);
        if (w == NULL)
            return PS_ERR_NOMEM;
        member_to(go->slot[1 + sm->seg].w, &sm->m, w);
    }
    return PS_OK;
}

static int coh_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    cohorts *c = self;
    cohort_cust *cc = ctx->cust_state;
    uint32_t next_gen = ps_pipeline_generation(c->pipe) + 1;
    int32_t signup_month, ev_month, m;
    bool signup = ev->signup_ts > 0 &&
                  ps_month_of_ts(ev->signup_ts, &signup_month) == PS_OK;
    int rc;

    if (ps_month_of_ts(ev->ts, &ev_month) < 0)
        return PS_OK; /* validated ts: never */
    if (!cc->has) {
        cc->month = signup ? signup_month : ev_month;
        cc->has = 1;
        cc->fixed = signup;
        cc->changed_gen = next_gen;
        ps_entity *e = cohort_entity(c, cc->month);
        if (e == NULL)
            return PS_ERR_NOMEM;
        cohort_counts *k = ps_pipeline_slice(c->pipe, e, c->me);
        k->size_delta++;
        ps_pipeline_touch(c->pipe, e);
    } else if (!cc->fixed && signup) {
        /* the first signup_ts seen: the cohort is final from now on */
        if (signup_month != cc->month &&
            (rc = cohort_move(c, ev, ctx, signup_month)) < 0)
            return rc;
        cc->fixed = 1;
        hist_drop_provisional(cc);
    }
    m = offset_of(ev_month, cc->month);
    bool spend = (ev->type == PS_PURCHASE || ev->type == PS_SPEND) &&
                 ev->has_amount && ev->amount > 0;
    if (!cc->fixed &&
        hist_month(cc, ev_month, spend ? ev->amount : 0) < 0)
        return PS_ERR_NOMEM;
    ps_entity *e = cohort_entity(c, cc->month);
    if (e == NULL)
        return PS_ERR_NOMEM;
    cohort_counts *k = ps_pipeline_slice(c->pipe, e, c->me);
    bool touched = false;
    if (m < MAX_OFFSET) {
        uint64_t bit = 1ULL << (m % 64);
        if (!(cc->active[m / 64] & bit)) {
            cc->active[m / 64] |= bit;
            k->active_delta[m]++;
            touched = true;
        }
        if (spend) {
            k->revenue_delta[m] += ev->amount;
            touched = true;
        }
        if (touched && m > k->max_offset)
            k->max_offset = m;
    }
    if (touched)
        ps_pipeline_touch(c->pipe, e);
    return windows_apply(c, ev, ctx, k);
}

static int coh_advance(void *self)
{
    cohorts *c = self;
    int64_t wm = ps_pipeline_global_watermark(c->pipe);
    uint32_t next_gen = ps_pipeline_generation(c->pipe) + 1;
    for (size_t i = 0; i < c->wins_n; i++)
        if (win_advance(c, c->wins[i], wm))
            c->wins[i]->changed_gen = next_gen;
    return PS_OK;
}

static bool snap_eq(const win_snap *a, const win_snap *b)
{
    return a->n == b->n && a->active == b->active && a->sum == b->sum &&
           a->end_ms == b->end_ms;
}

static void write_window(cohorts *c, ps_batch *b, ps_str id, int seg,
                         win_slot *sl, int r)
{
    ps_window_stats st;
    win_snap now;
    char tail[40];

    ps_window_query_span(sl->w, c->span[r], c->threshold, &st);
    now.n = st.n;
    now.active = st.active;
    now.sum = st.sum;
    now.end_ms = ps_window_end_ms(sl->w);
    sl->pend_set[r] = 0;
    if (snap_eq(&now, &sl->last[r]))
        return;
    const char *name = r == R7 ? "w7d" : "w30d";
    if (seg < 0)
        snprintf(tail, sizeof(tail), ":%s", name);
    else
        snprintf(tail, sizeof(tail), ":seg:%d:%s", seg, name);
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "cohort:", id, tail);
    ps_batch_arg_cstr(b, "n");
    ps_batch_arg_i64(b, (int64_t)st.n);
    ps_batch_arg_cstr(b, "sum");
    ps_batch_arg_dbl(b, st.sum);
    ps_batch_arg_cstr(b, "mean");
    ps_batch_arg_real(b, st.mean);
    ps_batch_arg_cstr(b, "std");
    ps_batch_arg_real(b, st.std);
    ps_batch_arg_cstr(b, "p_spend_gt");
    ps_batch_arg_real(b, st.p_ge);
    ps_batch_arg_cstr(b, "active");
    ps_batch_arg_i64(b, (int64_t)st.active);
    ps_batch_arg_cstr(b, "start_ms");
    ps_batch_arg_i64(b, ps_window_span_start_ms(sl->w, c->span[r]));
    ps_batch_arg_cstr(b, "end_ms");
    ps_batch_arg_i64(b, now.end_ms);
    ps_batch_end(b);
    sl->pend[r] = now;
    sl->pend_set[r] = 1;
}

static void coh_write_shared(void *self, ps_batch *b)
{
    cohorts *c = self;
    uint32_t gen = ps_pipeline_generation(c->pipe);
    char id[PS_MONTH_STR_SIZE];
    for (size_t i = 0; i < c->wins_n; i++) {
        cohort_win *g = c->wins[i];
        if (g->changed_gen <= gen ||
            ps_month_format(g->month, id, sizeof(id)) < 0)
            continue;
        ps_str sid = {id, (uint32_t)strlen(id)};
        for (int s = 0; s <= c->k; s++) {
            if (g->slot[s].w == NULL)
                continue;
            write_window(c, b, sid, s - 1, &g->slot[s], R7);
            write_window(c, b, sid, s - 1, &g->slot[s], R30);
        }
    }
}

static void coh_flushed(void *self)
{
    cohorts *c = self;
    for (size_t i = 0; i < c->wins_n; i++) {
        for (int s = 0; s <= c->k; s++) {
            win_slot *sl = &c->wins[i]->slot[s];
            for (int r = 0; r < 2; r++) {
                if (sl->pend_set[r])
                    sl->last[r] = sl->pend[r];
                sl->pend_set[r] = 0;
            }
        }
    }
}

static void coh_write_customer(void *self, const ps_entity *cust,
                               const void *state, ps_batch *b)
{
    cohorts *c = self;
    const cohort_cust *cc = state;
    char id[PS_MONTH_STR_SIZE];
    (void)cust;
    if (!cc->has || cc->changed_gen <= ps_pipeline_generation(c->pipe) ||
        ps_month_format(cc->month, id, sizeof(id)) < 0)
        return;
    ps_batch_arg_cstr(b, "cohort");
    ps_batch_arg_cstr(b, id);
}

static void coh_write_entity(void *self, const ps_entity *e, void *state,
                             ps_batch *b)
{
    cohort_counts *k = state;
    const char *key = ps_kind_key((ps_kind)e->kind);
    char field[32];
    (void)self;

    if (k->size_delta != 0) {
        ps_batch_begin(b, "HINCRBY");
        ps_batch_arg_key(b, key, e->id, NULL);
        ps_batch_arg_cstr(b, "size");
        ps_batch_arg_i64(b, k->size_delta);
        ps_batch_end(b);
    }
    for (int m = 0; m <= k->max_offset; m++) {
        if (k->active_delta[m] != 0) {
            snprintf(field, sizeof(field), "active_%d", m);
            ps_batch_begin(b, "HINCRBY");
            ps_batch_arg_key(b, key, e->id, NULL);
            ps_batch_arg_cstr(b, field);
            ps_batch_arg_i64(b, k->active_delta[m]);
            ps_batch_end(b);
        }
        if (k->revenue_delta[m] != 0) {
            snprintf(field, sizeof(field), "revenue_%d", m);
            ps_batch_begin(b, "HINCRBYFLOAT");
            ps_batch_arg_key(b, key, e->id, NULL);
            ps_batch_arg_cstr(b, field);
            ps_batch_arg_dbl(b, k->revenue_delta[m]);
            ps_batch_end(b);
        }
    }
    /* retention of every offset with activity: the size may have moved;
     * and 0 where a customer moving away took the last activity */
    int64_t size = k->size_base + k->size_delta;
    int fields = 0;
    for (int m = 0; m <= k->max_offset; m++)
        fields += k->active_base[m] + k->active_delta[m] != 0 ||
                  k->active_delta[m] != 0;
    if (fields == 0)
        return;
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, key, e->id, NULL);
    for (int m = 0; m <= k->max_offset; m++) {
        int64_t active = k->active_base[m] + k->active_delta[m];
        if (active == 0 && k->active_delta[m] == 0)
            continue;
        snprintf(field, sizeof(field), "retention_%d", m);
        ps_batch_arg_cstr(b, field);
        ps_batch_arg_real(b, ps_retention(active > 0 ? (uint64_t)active : 0,
                                          size > 0 ? (uint64_t)size : 0));
    }
    ps_batch_end(b);
}

static void coh_flushed_entity(void *self, const ps_entity *e, void *state)
{
    cohort_counts *k = state;
    (void)self;
    (void)e;
    k->size_base += k->size_delta;
    k->size_delta = 0;
    for (int m = 0; m <= k->max_offset; m++) {
        k->active_base[m] += k->active_delta[m];
        k->active_delta[m] = 0;
        k->revenue_base[m] += k->revenue_delta[m];
        k->revenue_delta[m] = 0;
    }
}

static void coh_load_field(void *self, ps_entity *e, void *state,
                           const char *field, size_t flen, const char *val,
                           size_t vlen)
{
    cohort_counts *k = state;
    char f[32], v[64];
    int m;
    (void)self;
    (void)e;
    if (flen >= sizeof(f) || vlen >= sizeof(v))
        return;
    memcpy(f, field, flen);
    f[flen] = '\0';
    memcpy(v, val, vlen);
    v[vlen] = '\0';
    if (strcmp(f, "size") == 0) {
        k->size_base = strtoll(v, NULL, 10);
    } else if (sscanf(f, "active_%d", &m) == 1 && m >= 0 && m < MAX_OFFSET) {
        k->active_base[m] = strtoll(v, NULL, 10);
        if (m > k->max_offset)
            k->max_offset = m;
    } else if (sscanf(f, "revenue_%d", &m) == 1 && m >= 0 &&
               m < MAX_OFFSET) {
        k->revenue_base[m] = strtod(v, NULL);
        if (m > k->max_offset)
            k->max_offset = m;
    }
}

/*
 * Customer state, version 3 (little-endian, buf.h):
 *   u8 version, u32 has, u32 month, u64 active[0], u64 active[1],
 *   u32 seg1, member all_m, member seg_m        (version 2 ends here)
 *   u8 fixed,
 *   u32 n, n x { u32 seg, member }               left segments' members
 *   u32 n, n x { u32 month, f64 revenue }        provisional: months
 *   u32 n, n x { i64 bucket, u32 seg + 1, u32 count, f64 sum, f64 m2 }
 *                                                provisional: spend
 */
static void coh_save_customer(void *self, const ps_entity *cust,
                              const void *state, ps_wbuf *w)
{
    const cohort_cust *cc = state;
    const cohort_hist *h = cc->h;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, COHORT_STATE_VERSION);
    ps_wbuf_u32(w, cc->has);
    ps_wbuf_u32(w, (uint32_t)cc->month);
    ps_wbuf_u64(w, cc->active[0]);
    ps_wbuf_u64(w, cc->active[1]);
    ps_wbuf_u32(w, (uint32_t)cc->seg1);
    ps_window_member_save(&cc->all_m, w);
    ps_window_member_save(&cc->seg_m, w);
    ps_wbuf_u8(w, (uint8_t)cc->fixed);
    ps_wbuf_u32(w, h != NULL ? h->n_segs : 0);
    for (uint32_t i = 0; h != NULL && i < h->n_segs; i++) {
        ps_wbuf_u32(w, (uint32_t)h->segs[i].seg);
        ps_window_member_save(&h->segs[i].m, w);
    }
    ps_wbuf_u32(w, h != NULL ? h->n_months : 0);
    for (uint32_t i = 0; h != NULL && i < h->n_months; i++) {
        ps_wbuf_u32(w, (uint32_t)h->months[i].month);
        ps_wbuf_f64(w, h->months[i].revenue);
    }
    ps_wbuf_u32(w, h != NULL ? h->n_spend : 0);
    for (uint32_t i = 0; h != NULL && i < h->n_spend; i++) {
        const bucket_spend *e = &h->spend[i];
        ps_wbuf_i64(w, e->bucket);
        ps_wbuf_u32(w, (uint32_t)(e->seg + 1));
        ps_wbuf_u32(w, e->s.n);
        ps_wbuf_f64(w, e->s.sum);
        ps_wbuf_f64(w, e->s.m2);
    }
}

/* Version 3's tail: fixed and the history.  Bounds every count by the
 * bytes left, so a corrupt blob cannot make it allocate much. */
static int load_hist(cohorts *c, cohort_cust *cc, ps_rbuf *r)
{
    uint8_t fixed;
    uint32_t n, v, seg;
    if (ps_rbuf_u8(r, &fixed) < 0 || fixed > 1)
        return PS_ERR_STATE;
    cc->fixed = fixed;
    if (ps_rbuf_u32(r, &n) < 0 || n > ps_rbuf_left(r) / 29)
        return PS_ERR_STATE;
    for (uint32_t i = 0; i < n; i++) {
        ps_window_member m;
        if (ps_rbuf_u32(r, &seg) < 0 || ps_window_member_load(&m, r) < 0)
            return PS_ERR_STATE;
        if (seg >= (uint32_t)c->k || (int32_t)seg == cc->seg1 - 1)
            continue; /* a segment not configured now (or current) */
        cohort_hist *h = hist_get(cc);
        if (h == NULL || grow((void **)&h->segs, h->n_segs, &h->cap_segs,
                              sizeof(seg_member)) < 0)
            return PS_ERR_NOMEM;
        for (uint32_t j = 0; j < h->n_segs; j++)
            if (h->segs[j].seg == (int32_t)seg)
                return PS_ERR_STATE; /* twice the same segment */
        h->segs[h->n_segs++] = (seg_member){(int32_t)seg, 0, m};
    }
    if (ps_rbuf_u32(r, &n) < 0 || n > ps_rbuf_left(r) / 12 ||
        (n > 0 && cc->fixed))
        return PS_ERR_STATE;
    for (uint32_t i = 0; i < n; i++) {
        double rev;
        if (ps_rbuf_u32(r, &v) < 0 || ps_rbuf_f64(r, &rev) < 0 ||
            !isfinite(rev) || rev < 0)
            return PS_ERR_STATE;
        cohort_hist *h = hist_get(cc);
        if (h == NULL || grow((void **)&h->months, h->n_months,
                              &h->cap_months, sizeof(month_rev)) < 0)
            return PS_ERR_NOMEM;
        h->months[h->n_months++] = (month_rev){(int32_t)v, 0, rev};
    }
    if (ps_rbuf_u32(r, &n) < 0 || n > ps_rbuf_left(r) / 32 ||
        (n > 0 && cc->fixed))
        return PS_ERR_STATE;
    for (uint32_t i = 0; i < n; i++) {
        bucket_spend e;
        memset(&e, 0, sizeof(e));
        if (ps_rbuf_i64(r, &e.bucket) < 0 || ps_rbuf_u32(r, &seg) < 0 ||
            ps_rbuf_u32(r, &e.s.n) < 0 || ps_rbuf_f64(r, &e.s.sum) < 0 ||
            ps_rbuf_f64(r, &e.s.m2) < 0)
            return PS_ERR_STATE;
        if (e.bucket < 0 || e.s.n == 0 || !isfinite(e.s.sum) ||
            e.s.sum < 0 || !isfinite(e.s.m2) || e.s.m2 < 0 ||
            seg > (uint32_t)PS_KMEANS_MAX_K)
            return PS_ERR_STATE;
        e.seg = (int32_t)seg - 1;
        if (e.seg >= c->k)
            e.seg = -1; /* a segment not configured now: cohort ring only */
        cohort_hist *h = hist_get(cc);
        if (h == NULL || grow((void **)&h->spend, h->n_spend, &h->cap_spend,
                              sizeof(bucket_spend)) < 0)
            return PS_ERR_NOMEM;
        h->spend[h->n_spend++] = e;
    }
    return PS_OK;
}

static int coh_load_customer(void *self, ps_entity *cust, void *state,
                             ps_rbuf *r)
{
    cohorts *c = self;
    cohort_cust *cc = state;
    uint8_t version;
    uint32_t month, seg1;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version < 1 ||
        version > COHORT_STATE_VERSION || ps_rbuf_u32(r, &cc->has) < 0 ||
        ps_rbuf_u32(r, &month) < 0 || ps_rbuf_u64(r, &cc->active[0]) < 0 ||
        ps_rbuf_u64(r, &cc->active[1]) < 0 || cc->has > 1)
        return PS_ERR_STATE;
    cc->month = (int32_t)month;
    cc->fixed = 1; /* saved before version 3: the cohort stays */
    if (version == 1)
        return PS_OK; /* members empty: the windows count it afresh */
    if (ps_rbuf_u32(r, &seg1) < 0 ||
        ps_window_member_load(&cc->all_m, r) < 0 ||
        ps_window_member_load(&cc->seg_m, r) < 0)
        return PS_ERR_STATE;
    if (seg1 > (uint32_t)c->k) {
        /* saved with more segments than configured now */
        seg1 = 0;
        memset(&cc->seg_m, 0, sizeof(cc->seg_m));
    }
    cc->seg1 = (int32_t)seg1;
    if (version == 2)
        return PS_OK;
    /* on failure the pipeline calls forget_customer, which frees h */
    return load_hist(c, cc, r);
}

static void coh_forget_customer(void *self, ps_entity *cust, void *state)
{
    (void)self;
    (void)cust;
    hist_free(state);
}

/*
 * ps:state:agg:cohorts, version 1 (little-endian, buf.h):
 *   u8 version, i64 bucket_ms, u32 buckets (30 days), u32 ahead,
 *   u32 span7, u32 count, then count x
 *   { u32 month, u32 rings, rings x { u32 slot, ps_window_save blob } }
 * slot 0 is the cohort's ring, 1 + s segment s's.
 */
static int coh_save_state(void *self, ps_wbuf *w)
{
    cohorts *c = self;
    uint32_t gen = ps_pipeline_generation(c->pipe);
    bool changed = false;
    for (size_t i = 0; i < c->wins_n && !changed; i++)
        changed = c->wins[i]->changed_gen > gen;
    if (!changed)
        return 0;
    ps_wbuf_u8(w, WINDOWS_STATE_VERSION);
    ps_wbuf_i64(w, c->wconf.bucket_ms);
    ps_wbuf_u32(w, c->wconf.buckets);
    ps_wbuf_u32(w, c->wconf.ahead);
    ps_wbuf_u32(w, c->span[R7]);
    ps_wbuf_u32(w, (uint32_t)c->wins_n);
    for (size_t i = 0; i < c->wins_n; i++) {
        const cohort_win *g = c->wins[i];
        uint32_t rings = 0;
        for (int s = 0; s <= c->k; s++)
            rings += g->slot[s].w != NULL;
        ps_wbuf_u32(w, (uint32_t)g->month);
        ps_wbuf_u32(w, rings);
        for (int s = 0; s <= c->k; s++) {
            if (g->slot[s].w == NULL)
                continue;
            ps_wbuf_u32(w, (uint32_t)s);
            ps_window_save(g->slot[s].w, w);
        }
    }
    return 1;
}

static int coh_load_state(void *self, const void *blob, size_t len)
{
    cohorts *c = self;
    ps_rbuf r;
    uint8_t version;
    int64_t bms;
    uint32_t buckets, ahead, span7, count;
    char err[128];
    cohort_win **wins = NULL;
    size_t n = 0;
    ps_window *scratch = NULL;
    uint32_t next_gen = ps_pipeline_generation(c->pipe) + 1;

    ps_rbuf_init(&r, blob, len);
    if (ps_rbuf_u8(&r, &version) < 0 || version != WINDOWS_STATE_VERSION ||
        ps_rbuf_i64(&r, &bms) < 0 || ps_rbuf_u32(&r, &buckets) < 0 ||
        ps_rbuf_u32(&r, &ahead) < 0 || ps_rbuf_u32(&r, &span7) < 0 ||
        ps_rbuf_u32(&r, &count) < 0)
        return PS_ERR_STATE;
    if (bms != c->wconf.bucket_ms || buckets != c->wconf.buckets ||
        ahead != c->wconf.ahead || span7 != c->span[R7])
        return PS_OK; /* another window shape: start the windows afresh */
    /* each cohort takes at least 8 bytes: bounds the allocation */
    if (count > ps_rbuf_left(&r) / 8)
        return PS_ERR_STATE;
    wins = calloc(count ? count : 1, sizeof(*wins));
    if (wins == NULL)
        return PS_ERR_NOMEM;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t month, rings, slot, prev = 0;
        int32_t mo;
        if (ps_rbuf_u32(&r, &month) < 0 || ps_rbuf_u32(&r, &rings) < 0)
            goto fail;
        mo = (int32_t)month;
        for (size_t j = 0; j < n; j++)
            if (wins[j]->month == mo)
                goto fail; /* twice the same cohort */
        if ((wins[n] = win_new(c, mo)) == NULL)
            goto fail;
        n++;
        for (uint32_t j = 0; j < rings; j++) {
            if (ps_rbuf_u32(&r, &slot) < 0 || (j == 0 && slot != 0) ||
                (j > 0 && slot <= prev))
                goto fail;
            prev = slot;
            ps_window *w;
            if (slot <= (uint32_t)c->k) {
                if (wins[n - 1]->slot[slot].w == NULL &&
                    (wins[n - 1]->slot[slot].w =
                         ps_window_new(&c->wconf, NULL, 0)) == NULL)
                    goto fail;
                w = wins[n - 1]->slot[slot].w;
            } else { /* a segment beyond k now: read and drop */
                if (scratch == NULL &&
                    (scratch = ps_window_new(&c->wconf, NULL, 0)) == NULL)
                    goto fail;
                w = scratch;
            }
            if (ps_window_load(w, &r, err, sizeof(err)) < 0)
                goto fail;
        }
        /* the cohort's ring comes first; the others share its position */
        if (rings == 0 || wins[n - 1]->slot[0].w == NULL)
            goto fail;
        for (int s = 1; s <= c->k; s++)
            if (wins[n - 1]->slot[s].w != NULL &&
                ps_window_end_ms(wins[n - 1]->slot[s].w) !=
                    ps_window_end_ms(wins[n - 1]->slot[0].w))
                goto fail;
        wins[n - 1]->changed_gen = next_gen; /* publish once after start */
    }
    if (ps_rbuf_left(&r) != 0)
        goto fail;
    ps_window_destroy(scratch);
    wins_free(c->wins, c->wins_n, c->k);
    c->wins = wins;
    c->wins_n = c->wins_cap = n;
    if (c->wins_cap == 0) {
        free(c->wins);
        c->wins = NULL;
    }
    /* cached indexes in the cohort slices are re-checked by month */
    return PS_OK;
fail:
    ps_window_destroy(scratch);
    wins_free(wins, n, c->k);
    return PS_ERR_STATE;
}

const ps_aggregate_ops ps_agg_cohorts = {
    .name = "cohorts",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(cohort_cust),
                   [PS_KIND_COHORT] = sizeof(cohort_counts)},
    .init = coh_init,
    .destroy = coh_destroy,
    .apply = coh_apply,
    .advance = coh_advance,
    .write_customer = coh_write_customer,
    .write_shared_entity = coh_write_entity,
    .flushed_shared_entity = coh_flushed_entity,
    .write_shared = coh_write_shared,
    .flushed = coh_flushed,
    .save_customer = coh_save_customer,
    .load_customer = coh_load_customer,
    .forget_customer = coh_forget_customer,
    .save_state = coh_save_state,
    .load_state = coh_load_state,
    .load_shared_field = coh_load_field,
};
