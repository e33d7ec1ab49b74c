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
 * Position: a function of the global watermark only.  Every ring sits
 * at the bucket boundary at or before the global watermark
 * (ps_pipeline_global_watermark, restored exactly across restarts from
 * the partitions' saved clocks), moved there after each batch and before
 * each event -- never to an event's partition watermark, which depends
 * on how the partitions' fetches interleave.  A window then covers
 * [end - span * width, end), aligned to buckets, at most one bucket
 * behind the watermark; the hashes carry start_ms and end_ms.  Since
 * positions only move forward, an event ignored as too old (before the
 * 30-day ring's start when it arrives; it still counts in the exact
 * monthly numbers) lies before every later window too, so the content at
 * the end is exactly the events with ts in [end - span, end), whatever
 * the interleaving, as long as no event lies beyond the ahead buckets
 * when it arrives.
 *
 * Ahead capacity: A = 1 + ceil(lateness / width) + ceil(2 days / width)
 * buckets (the watermark's own bucket, the lateness, and 2 days of skew
 * between the partitions of a backlog: a partition may run up to that
 * far ahead of the slowest one), at most 64 (window.h): 50 at the
 * defaults (1 h buckets, 1 h lateness); with buckets under 47 minutes
 * the 64 cap leaves less than 2 days of skew.  Rule beyond it: an event
 * later than the ahead buckets pushes the cohort's rings forward so that
 * it fits (all rings of the cohort together) and is applied, rather than
 * lost; the rings then stay ahead of the watermark until it catches up.
 * The content stays "every event in [end - span, end)", but end (and so
 * what the hashes hold meanwhile) now depends on arrival order; each
 * hash counts such events in its field `pushed` (additive, 0 in a run
 * within the skew), so the non-determinism is visible.  Before any
 * watermark is known (the first batch of a fresh deployment) a new
 * cohort's rings are placed by its first event (its ts - lateness), not
 * counted as a push.
 *
 * Each hash has n, sum, sumsq (sum of squared amounts), mean, std
 * (ddof = 1, 0 when n < 2), p_spend_gt = P(amount >= spend_threshold)
 * under N(mean, std^2) -- with std = 0 (one amount, or all equal) the
 * fit is all mass at the mean, so 1 if mean >= T else 0, and 0 for an
 * empty window -- active, pushed, start_ms and end_ms.
 *
 * Combining instances (several `propstream run` in one consumer group,
 * each owning some partitions and so a disjoint set of customers).  The
 * hashes are additive: per window hash each instance keeps the totals it
 * has published (n, sum, sumsq, active, pushed) and writes, in the flush
 * transaction, the difference to its current totals with one EVAL of
 * ps_window_hash_lua (window.h): HINCRBY / HINCRBYFLOAT of the
 * differences, start_ms / end_ms set only when larger (the combined
 * window ends at the latest instance's end), and mean, std and
 * p_spend_gt recomputed from the combined totals inside the script.
 * EVAL, not EVALSHA: a NOSCRIPT error inside MULTI would let the rest of
 * the transaction apply.  `active` adds up because customers are
 * disjoint.  Exactly once: the published totals advance only in
 * coh_flushed; a failed flush leaves them, so the next one writes the
 * same differences plus newer ones.  The float differences are taken in
 * long double and written with 21 digits (Redis adds them in long
 * double), so an instance's share equals its rings' totals exactly
 * whatever the flushes in between (restarts included), and the rings'
 * totals are sums per bucket in bucket order: for amounts whose sums
 * are exact in binary (e.g. integers) the hashes are then byte-identical
 * between runs whatever the interleaving; otherwise they agree to
 * rounding.  A hash is written only when this
 * instance's totals or position changed.  With instances whose
 * watermarks lie in different buckets the sum is over slightly different
 * intervals (each instance's own [end - span, end)); end_ms is the
 * latest.
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
 * Memory: the rings, ps_window_bytes() each: 32 bytes per bucket of
 * the ring (720 + 50) plus 4 * A * B bytes of scheduled moves
 * (50 x 720), 168,720 bytes at the defaults, so about 675 KB per cohort
 * with k = 3 segments; per cohort and per cohort x segment seen; never
 * per event.  Per
 * customer 96 bytes of slice, plus cohort_hist only while needed: 32 bytes
 * per left segment still counted, and, while the cohort is provisional,
 * 16 bytes per active month and 40 per (bucket, segment) with spend in
 * the last 30 days.  apply allocates when a cohort or a cohort x segment
 * gets its first event and when a cohort_hist grows.
 *
 * Saved state.  The members and the cohort_hist are in the customer's
 * saved state (version 4, whose provisional spend carries its sum of
 * squares; version 3 loads with it computed from count, sum and M2,
 * version 2 without the history and with a final cohort, version 1 also
 * with empty members).  The rings and the
 * published totals are this aggregate's state, ps:state:agg:cohorts
 * (version 2), written in every flush where a ring's content or position
 * changed (about 32 bytes per ring bucket plus the non-zero scheduled
 * moves: about 25 KB per ring at the defaults), so a restart resumes
 * exactly.  Version 1 blobs are migrated: their rings load into the
 * larger ahead capacity, and their published totals are taken to be the
 * totals of the saved rings (what version 1 HSET), with sumsq 0 (the
 * field did not exist).  Rings saved with another bucket width or 7/30-
 * day shape (or more ahead buckets) are dropped: the windows start empty
 * and the first flush takes the old published totals back out.
 *
 * LIMITATION, several instances.  ps:state:agg:cohorts is one key per
 * deployment (aggregate.h: last writer wins), but the rings and published
 * totals are per instance.  While instances run, the hashes combine
 * as above.  When a partition moves to another instance, its customers'
 * earlier activity stays in the old instance's rings and their new one
 * goes to the new instance's: a customer active on both sides counts
 * twice in `active` until the old activity leaves the window (at most
 * 30 days).  After a restart with several instances, every instance
 * resumes from whichever instance saved last, so its differences are
 * taken against another instance's published totals and the hashes stay
 * off by the difference (until deleted).  Exact across restarts for a
 * single instance.  Fixing this needs a per-instance (or per-partition)
 * state key from the run loop.
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
#define COHORT_STATE_VERSION 4 /* 3: spend without sq; 2: without fixed /
                                  history; 1: without the window members
                                  either */
#define WINDOWS_STATE_VERSION 2 /* 1: without the published totals */
#define DAY_MS INT64_C(86400000)
/* Skew between partitions the rings absorb without pushing. */
#define SKEW_MS (2 * DAY_MS)
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

/* This instance's share of one window hash (see "Combining instances"). */
typedef struct win_tot {
    int64_t n, active, pushed;
    double sum, sumsq;
    int64_t start_ms, end_ms;
} win_tot;

typedef struct win_slot {
    ps_window *w;       /* NULL until the first event */
    win_tot pub[2];     /* added to Redis by the successful flushes */
    win_tot pend[2];    /* what the flush in progress brings them to */
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
    int64_t late_ms;    /* allowed lateness */
    int64_t wm;         /* global watermark the rings follow (INT64_MIN:
                           none yet) */
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
    int me = PS_AGG_INDEX_cohorts;
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
    /* the watermark's own bucket, the lateness, the skew */
    int64_t ahead = 1 + late / bms + (late % bms != 0) + SKEW_MS / bms +
                    (SKEW_MS % bms != 0);
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
    c->late_ms = late;
    c->wm = INT64_MIN;
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
    if (c->wm >= 0)
        ps_window_advance(g->slot[0].w, c->wm);
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
    int64_t wm = ps_pipeline_global_watermark(c->pipe);
    if (wm > c->wm)
        c->wm = wm;
    wm = c->wm;
    if (wm == INT64_MIN && ps_window_end_ms(g->slot[0].w) == 0)
        wm = ev->ts - c->late_ms; /* first placement, before any watermark */
    if (win_advance(c, g, wm))
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
    (void)ev;
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
    win_advance(c, go, c->wm);
    win_advance(c, gn, c->wm);
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
    if (wm > c->wm)
        c->wm = wm;
    for (size_t i = 0; i < c->wins_n; i++)
        if (win_advance(c, c->wins[i], c->wm))
            c->wins[i]->changed_gen = next_gen;
    return PS_OK;
}

/* This instance's current totals of range r of ring w. */
static void win_totals(const cohorts *c, const ps_window *w, int r,
                       win_tot *t)
{
    ps_window_stats st;
    ps_window_counters wc;
    ps_window_query_span(w, c->span[r], c->threshold, &st);
    ps_window_get_counters(w, &wc);
    t->n = (int64_t)st.n;
    t->active = (int64_t)st.active;
    t->pushed = (int64_t)wc.pushed;
    t->sum = st.sum;
    t->sumsq = st.sumsq;
    t->start_ms = ps_window_span_start_ms(w, c->span[r]);
    t->end_ms = ps_window_end_ms(w);
}

static bool tot_eq(const win_tot *a, const win_tot *b)
{
    return a->n == b->n && a->active == b->active && a->pushed == b->pushed &&
           a->sum == b->sum && a->sumsq == b->sumsq &&
           a->start_ms == b->start_ms && a->end_ms == b->end_ms;
}

/* The difference between the current and the published totals, applied
 * by ps_window_hash_lua (which recomputes the derived fields from the
 * combined totals); nothing when there is none. */
static void write_window(cohorts *c, ps_batch *b, ps_str id, int seg,
                         win_slot *sl, int r)
{
    win_tot now;
    const win_tot *pub = &sl->pub[r];
    char tail[40];

    sl->pend_set[r] = 0;
    win_totals(c, sl->w, r, &now);
    if (tot_eq(&now, pub))
        return;
    const char *name = r == R7 ? "w7d" : "w30d";
    if (seg < 0)
        snprintf(tail, sizeof(tail), ":%s", name);
    else
        snprintf(tail, sizeof(tail), ":seg:%d:%s", seg, name);
    ps_batch_begin(b, "EVAL");
    ps_batch_arg_cstr(b, ps_window_hash_lua);
    ps_batch_arg_cstr(b, "1");
    ps_batch_arg_key(b, "cohort:", id, tail);
    ps_batch_arg_i64(b, now.n - pub->n);
    /* Differences of doubles in long double (exact unless their exponents
     * are more than 11 apart), written with 21 digits, which Redis parses
     * with strtold and adds in long double: this instance's share of the
     * hash then equals its current totals exactly (the sum of the
     * differences telescopes), whatever the flushes in between, and an
     * emptied window takes back exactly what it had added. */
    ps_batch_arg_fmt(b, "%.21Lg", (long double)now.sum - pub->sum);
    ps_batch_arg_fmt(b, "%.21Lg", (long double)now.sumsq - pub->sumsq);
    ps_batch_arg_i64(b, now.active - pub->active);
    ps_batch_arg_i64(b, now.pushed - pub->pushed);
    ps_batch_arg_i64(b, now.start_ms);
    ps_batch_arg_i64(b, now.end_ms);
    ps_batch_arg_dbl(b, c->threshold);
    ps_batch_end(b);
    sl->pend[r] = now;
    sl->pend_set[r] = 1;
}

static void coh_write_shared(void *self, ps_batch *b)
{
    cohorts *c = self;
    uint32_t gen = ps_pipeline_generation(c->pipe);
    char id[PS_MONTH_STR_SIZE];
    for (size_t i = 0; i < c->wins_n; i++)
        for (int s = 0; s <= c->k; s++)
            c->wins[i]->slot[s].pend_set[R7] =
                c->wins[i]->slot[s].pend_set[R30] = 0;
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
                    sl->pub[r] = sl->pend[r];
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
 * Customer state, version 4 (little-endian, buf.h):
 *   u8 version, u32 has, u32 month, u64 active[0], u64 active[1],
 *   u32 seg1, member all_m, member seg_m        (version 2 ends here)
 *   u8 fixed,
 *   u32 n, n x { u32 seg, member }               left segments' members
 *   u32 n, n x { u32 month, f64 revenue }        provisional: months
 *   u32 n, n x { i64 bucket, u32 seg + 1, u32 count, f64 sum, f64 m2,
 *                f64 sq }                        provisional: spend
 * Version 3 is the same without sq (computed as m2 + sum^2 / count).
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
        ps_wbuf_f64(w, e->s.sq);
    }
}

/* Version 3 and 4's tail: fixed and the history.  Bounds every count by
 * the bytes left, so a corrupt blob cannot make it allocate much. */
static int load_hist(cohorts *c, cohort_cust *cc, ps_rbuf *r, int version)
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
            ps_rbuf_f64(r, &e.s.m2) < 0 ||
            (version >= 4 && ps_rbuf_f64(r, &e.s.sq) < 0))
            return PS_ERR_STATE;
        if (version < 4 && e.s.n > 0)
            e.s.sq = e.s.m2 + e.s.sum * e.s.sum / e.s.n;
        if (e.bucket < 0 || e.s.n == 0 || !isfinite(e.s.sum) ||
            e.s.sum < 0 || !isfinite(e.s.m2) || e.s.m2 < 0 ||
            !isfinite(e.s.sq) || e.s.sq < 0 ||
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
    return load_hist(c, cc, r, version);
}

static void coh_forget_customer(void *self, ps_entity *cust, void *state)
{
    (void)self;
    (void)cust;
    hist_free(state);
}

/*
 * ps:state:agg:cohorts, version 2 (little-endian, buf.h):
 *   u8 version, i64 bucket_ms, u32 buckets (30 days), u32 ahead,
 *   u32 span7, u32 count, then count x
 *   { u32 month, u32 rings, rings x { u32 slot, tot 7d, tot 30d,
 *                                     ps_window_save blob } }
 *   tot: i64 n, i64 active, i64 pushed, f64 sum, f64 sumsq, i64 start_ms,
 *        i64 end_ms -- the published totals as they are once this flush
 *        has succeeded (the blob is written in the same transaction).
 * slot 0 is the cohort's ring, 1 + s segment s's.  Version 1 has no tot.
 */
static void save_tot(ps_wbuf *w, const win_tot *t)
{
    ps_wbuf_i64(w, t->n);
    ps_wbuf_i64(w, t->active);
    ps_wbuf_i64(w, t->pushed);
    ps_wbuf_f64(w, t->sum);
    ps_wbuf_f64(w, t->sumsq);
    ps_wbuf_i64(w, t->start_ms);
    ps_wbuf_i64(w, t->end_ms);
}

static int load_tot(ps_rbuf *r, win_tot *t)
{
    if (ps_rbuf_i64(r, &t->n) < 0 || ps_rbuf_i64(r, &t->active) < 0 ||
        ps_rbuf_i64(r, &t->pushed) < 0 || ps_rbuf_f64(r, &t->sum) < 0 ||
        ps_rbuf_f64(r, &t->sumsq) < 0 || ps_rbuf_i64(r, &t->start_ms) < 0 ||
        ps_rbuf_i64(r, &t->end_ms) < 0)
        return PS_ERR_STATE;
    if (!isfinite(t->sum) || !isfinite(t->sumsq))
        return PS_ERR_STATE;
    return PS_OK;
}

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
            const win_slot *sl = &g->slot[s];
            if (sl->w == NULL)
                continue;
            ps_wbuf_u32(w, (uint32_t)s);
            for (int r = 0; r < 2; r++) /* write_shared ran before */
                save_tot(w, sl->pend_set[r] ? &sl->pend[r] : &sl->pub[r]);
            ps_window_save(sl->w, w);
        }
    }
    return 1;
}

/* Version 1 kept no published totals: its hashes held, as HSET values,
 * the totals of the saved ring (single instance), and no sumsq or pushed
 * field.  Those are what this instance has published. */
static void v1_published(const ps_window *saved, uint32_t span7,
                         win_slot *sl)
{
    ps_window_counters wc;
    ps_window_get_counters(saved, &wc);
    for (int r = 0; r < 2; r++) {
        ps_window_stats st;
        uint32_t span = r == R7 ? span7 : ps_window_get_conf(saved)->buckets;
        ps_window_query_span(saved, span, 0, &st);
        win_tot *t = &sl->pub[r];
        t->n = (int64_t)st.n;
        t->active = (int64_t)st.active;
        t->sum = st.sum;
        t->sumsq = 0;            /* no such field: Redis has 0 */
        t->pushed = (int64_t)wc.pushed; /* no field; count from now on */
        t->start_ms = ps_window_span_start_ms(saved, span);
        t->end_ms = ps_window_end_ms(saved);
    }
}

/*
 * Rings of the same shape (bucket width, 30-day buckets, 7-day span; the
 * saved ring may have fewer ahead buckets, e.g. version 1's 3) are
 * restored; of another shape they are read, and this instance starts
 * with empty rings but keeps what it had published, so its first flush
 * takes its old contributions back out of the hashes.  Rings of segments
 * beyond segments_k are dropped.
 */
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
    if (ps_rbuf_u8(&r, &version) < 0 || version < 1 ||
        version > WINDOWS_STATE_VERSION || ps_rbuf_i64(&r, &bms) < 0 ||
        ps_rbuf_u32(&r, &buckets) < 0 || ps_rbuf_u32(&r, &ahead) < 0 ||
        ps_rbuf_u32(&r, &span7) < 0 || ps_rbuf_u32(&r, &count) < 0)
        return PS_ERR_STATE;
    bool same = bms == c->wconf.bucket_ms && buckets == c->wconf.buckets &&
                ahead <= c->wconf.ahead && span7 == c->span[R7];
    ps_window_conf sconf = {bms, buckets, ahead};
    if (ps_window_conf_check(&sconf, NULL, 0) < 0 || span7 < 1 ||
        span7 > buckets)
        return PS_ERR_STATE;
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
        cohort_win *g = wins[n - 1];
        for (uint32_t j = 0; j < rings; j++) {
            win_tot tot[2];
            memset(tot, 0, sizeof(tot));
            if (ps_rbuf_u32(&r, &slot) < 0 || (j == 0 && slot != 0) ||
                (j > 0 && slot <= prev))
                goto fail;
            prev = slot;
            if (version >= 2 &&
                (load_tot(&r, &tot[0]) < 0 || load_tot(&r, &tot[1]) < 0))
                goto fail;
            win_slot *sl = slot <= (uint32_t)c->k ? &g->slot[slot] : NULL;
            if (sl != NULL && sl->w == NULL &&
                (sl->w = ps_window_new(&c->wconf, NULL, 0)) == NULL)
                goto fail;
            ps_window *w;
            if (sl != NULL && same) {
                w = sl->w;
            } else { /* read into a ring of the saved shape, then drop */
                if (scratch == NULL &&
                    (scratch = ps_window_new(&sconf, NULL, 0)) == NULL)
                    goto fail;
                w = scratch;
            }
            if (ps_window_load(w, &r, err, sizeof(err)) < 0)
                goto fail;
            if (sl == NULL)
                continue; /* a segment beyond k now */
            if (version >= 2) {
                sl->pub[R7] = tot[0];
                sl->pub[R30] = tot[1];
            } else {
                v1_published(w, span7, sl);
            }
        }
        /* the cohort's ring comes first; the others share its position */
        if (rings == 0 || g->slot[0].w == NULL)
            goto fail;
        for (int s = 1; s <= c->k; s++)
            if (g->slot[s].w != NULL &&
                ps_window_end_ms(g->slot[s].w) !=
                    ps_window_end_ms(g->slot[0].w))
                goto fail;
        g->changed_gen = next_gen; /* publish once after start */
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
