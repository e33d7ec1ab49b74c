/*
 * funnels.c -- click -> wishlist -> purchase funnels as Bernoulli trials,
 * Beta-Bernoulli conversion posteriors at every level, campaign
 * attribution by Bayes' rule, open-funnel intent, and the high_intent /
 * wishlist_abandoned triggers (contract section 2).
 *
 * Funnel.  Keyed by (customer, product).  A CLICK or WISHLIST of the pair
 * opens one when none is open; it remembers which of the two happened and
 * which came first (path "c", "w" or "cw"), its open time (the earliest of
 * its opening events, so events out of order within the allowed lateness
 * still give the event-time answer) and the campaign of the opening click.
 * It closes
 *   - as a success at a PURCHASE of the pair in [open, open + window];
 *   - as a failure when the watermark of its partition passes
 *     open + window (advance(), via a min-heap of expiry times per
 *     partition).
 * A PURCHASE with no open funnel is a direct purchase (no trial).  A
 * CLICK/WISHLIST that arrives (late) before a direct purchase of the same
 * pair, within the window, turns that direct purchase into a successful
 * trial: the last few direct purchases of each customer are remembered
 * for this.  A CLICK/WISHLIST so late that its window has already passed
 * the watermark opens nothing (it still counts as a click/wishlist).
 *
 * Counters.  Every closed funnel is one trial, per path and in total, at
 * the customer, product, campaign (of the opening click), segment (the
 * customer's, when it has one: segments.h) and global levels.  Customers are private to their partition's owner and keep
 * their counts in their slice (decayed by 2^(-dt/half_life) of event time
 * when forgetting is on: a discounted Beta); shared levels keep base +
 * delta and are written as HINCRBY deltas (see aggregate.h).
 *
 * Posteriors (beta.h).  Shared levels use the flat Beta(1,1) prior;
 * customers use Beta(1,1) or, with the empirical prior, one centred on the
 * rate of the same path at the customer's segment (else global) with
 * `prior_strength` pseudo-counts, so a new customer starts at its
 * population's rate.  Published: posterior mean
 * and the equal-tailed credible interval (GSL quantiles), alpha, beta.
 *
 * Campaigns.  p_campaign_given_purchase = P(C | B) by Bayes' rule as in
 * the seed's ad-click example, with P(C) = the campaign's share of trials,
 * P(B | C) its posterior mean, P(B | not C) the posterior mean of all
 * other trials.
 *
 * Intent and triggers.  An open funnel's P(purchase) is the product's
 * posterior mean for the funnel's path so far, under a prior centred on
 * the global rate of that path (prior_strength pseudo-trials), so it is the
 * global rate for a product without closed funnels on that path.  A customer's funnel fields
 * and intent zset are rewritten only in flushes after its funnels changed
 * (so the intent values are as of the customer's last funnel event).  It is re-evaluated at every
 * event of the funnel; high_intent fires (at most once per funnel) when it
 * rises from <= intent_threshold to > intent_threshold, caused by that
 * event.
 * wishlist_abandoned fires once when a funnel with a wishlist expires,
 * caused by the event that moved the watermark past it.  Triggers are
 * XADDed in the same flush as the state that records them, so each cause
 * yields exactly one entry, across crashes and restarts too.
 *
 * Ownership.  Open funnels live in a pool owned by this aggregate and are
 * linked from their customer's slice; load_customer rebuilds them from
 * saved state, forget_customer frees them.  Product and campaign entities
 * are never freed while the pipeline lives, so funnels point at them.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "beta.h"
#include "kmeans.h"
#include "pipeline.h"
#include "segments.h"
#include "../common/error.h"

#define PATH_C 1u
#define PATH_W 2u
#define UNKNOWN_PART UINT32_MAX
#define RECENT_DIRECT 4
#define FUNNEL_STATE_VERSION 1

/* path bits (1, 2, 3) -> index of per-path counters (0 c, 1 w, 2 cw) */
static int path_ix(unsigned path) { return path == PATH_C ? 0 : path == PATH_W ? 1 : 2; }
/* paths: c, w, cw */
/* per-path field names of the output hashes (no formatting in flushes) */
static const char *const trials_field[3] = {"trials_c", "trials_w",
                                            "trials_cw"};
static const char *const successes_field[3] = {"successes_c", "successes_w",
                                               "successes_cw"};
static const char *const p_purchase_field[3] = {
    "p_purchase_c", "p_purchase_w", "p_purchase_cw"};

/* ------------------------------------------------------ shared counters */

enum {
    K_CLICKS,
    K_WISHLISTS,
    K_PURCHASES,
    K_DIRECT,
    K_TRIALS,
    K_SUCC,
    K_TRIALS_C,
    K_SUCC_C,
    K_TRIALS_W,
    K_SUCC_W,
    K_TRIALS_CW,
    K_SUCC_CW,
    K_CLICK_FIRST,
    K_WISH_AFTER_CLICK,
    K_COUNT
};

static const char *const counter_names[K_COUNT] = {
    "clicks",      "wishlists",    "purchases",   "direct_purchases",
    "trials",      "successes",    "trials_c",    "successes_c",
    "trials_w",    "successes_w",  "trials_cw",   "successes_cw",
    "funnels_click_first", "wishlist_after_click"};

typedef struct shared_counts {
    int64_t base[K_COUNT];  /* totals in Redis when last read / written */
    int64_t delta[K_COUNT]; /* this instance's change since its last flush */
} shared_counts;

static int64_t view(const shared_counts *s, int k)
{
    return s->base[k] + s->delta[k];
}

/* ------------------------------------------------------------ customers */

typedef struct recent_direct {
    uint64_t prod_hash;
    int64_t ts;
} recent_direct;

typedef struct cust_funnels {
    uint32_t head;   /* first open funnel: pool index + 1; 0 = none */
    uint32_t n_open;
    double trials[3], succ[3]; /* per path; decayed with forgetting */
    int64_t direct;
    int64_t decay_ts; /* event time the counts are decayed to */
    recent_direct recent[RECENT_DIRECT];
    uint32_t recent_n, recent_next;
    uint32_t intent_written; /* ps:cust:{id}:intent may exist */
    uint32_t changed_gen; /* funnels or counts changed for flush
                             generation changed_gen (see pipeline.h) */
    uint32_t seen;        /* 0 for a customer new to Redis */
    uint32_t home_plus1;    /* slot + 1 of its latest event's partition */
    uint32_t indexed_plus1; /* slot + 1 of the expiry index holding it */
} cust_funnels;

typedef struct funnel {
    uint32_t next;     /* next funnel of the customer (index + 1), or the
                          free list link when unused */
    uint32_t heap_pos; /* position in heaps[heap] */
    uint32_t part;     /* partition slot, UNKNOWN_PART after a reload */
    uint8_t path, first, fired, in_use;
    int64_t open_ts;
    double last_p;
    ps_entity *cust, *prod, *campaign;
} funnel;

/* Min-heap of funnel indices by expiry (open_ts + window). */
typedef struct fheap {
    uint32_t *v;
    size_t n, cap;
} fheap;

typedef struct funnels {
    ps_agg_conf conf;
    ps_pipeline *pipe;
    size_t me; /* our aggregate index */
    shared_counts *global;

    funnel *pool;
    uint32_t pool_n, pool_cap, free_head; /* free_head: index + 1 */
    fheap *heaps;                          /* per partition slot */
    size_t heaps_n;
    fheap unknown;                         /* reloaded funnels */

    ps_entity *segments[PS_KMEANS_MAX_K]; /* segment entities, by id */
    ps_batch *triggers; /* pending XADDs, cleared when flushed */
    ps_wbuf scratch;
} funnels;

/* -------------------------------------------------------------- helpers */

static uint64_t hash_str(ps_str s)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.ptr[i]) * 1099511628211ULL;
    return h;
}

static double flat_mean(int64_t s, int64_t n)
{
    return ((double)s + 1.0) / ((double)n + 2.0);
}

static shared_counts *shared_of(funnels *f, const ps_entity *e)
{
    return e ? ps_pipeline_slice(f->pipe, e, f->me) : NULL;
}

static void bump(funnels *f, ps_entity *e, int k, int64_t by)
{
    if (e == NULL)
        return;
    shared_of(f, e)->delta[k] += by;
    ps_pipeline_touch(f->pipe, e);
}

static funnel *F(funnels *f, uint32_t ix1) { return &f->pool[ix1 - 1]; }

/* The customer's segment entity, or NULL when it has no segment yet. */
static ps_entity *segment_of(funnels *f, const ps_entity *cust)
{
    int seg = ps_segments_of(f->pipe, cust);
    if (seg < 0 || seg >= PS_KMEANS_MAX_K)
        return NULL;
    if (f->segments[seg] == NULL) { /* entities live as long as the pipe */
        char id[16];
        snprintf(id, sizeof(id), "%d", seg);
        f->segments[seg] = ps_pipeline_entity(
            f->pipe, PS_KIND_SEGMENT, (ps_str){id, (uint32_t)strlen(id)});
    }
    return f->segments[seg];
}

/* Rate of path x (-1: all paths) at the customer's segment when that has
 * closed funnels on it, else at the global level (flat posterior mean). */
static double parent_rate(funnels *f, const ps_entity *cust, int x)
{
    int kt = x < 0 ? K_TRIALS : K_TRIALS_C + 2 * x;
    int ks = x < 0 ? K_SUCC : K_SUCC_C + 2 * x;
    ps_entity *seg = cust ? segment_of(f, cust) : NULL;
    const shared_counts *sc = seg ? shared_of(f, seg) : NULL;
    if (sc != NULL && view(sc, kt) > 0)
        return flat_mean(view(sc, ks), view(sc, kt));
    return flat_mean(view(f->global, ks), view(f->global, kt));
}

static int64_t expiry(const funnels *f, const funnel *fn)
{
    return fn->open_ts + f->conf.attribution_ms;
}

/* --------------------------------------------------------------- heaps */

static fheap *heap_for(funnels *f, uint32_t part)
{
    if (part == UNKNOWN_PART)
        return &f->unknown;
    if (part >= f->heaps_n) {
        size_t n = part + 1;
        fheap *v = realloc(f->heaps, n * sizeof(*v));
        if (v == NULL)
            return NULL;
        memset(v + f->heaps_n, 0, (n - f->heaps_n) * sizeof(*v));
        f->heaps = v;
        f->heaps_n = n;
    }
    return &f->heaps[part];
}

static void heap_set(funnels *f, fheap *h, size_t pos, uint32_t ix1)
{
    h->v[pos] = ix1;
    F(f, ix1)->heap_pos = (uint32_t)pos;
}

static void sift_up(funnels *f, fheap *h, size_t pos)
{
    uint32_t x = h->v[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (expiry(f, F(f, h->v[parent])) <= expiry(f, F(f, x)))
            break;
        heap_set(f, h, pos, h->v[parent]);
        pos = parent;
    }
    heap_set(f, h, pos, x);
}

static void sift_down(funnels *f, fheap *h, size_t pos)
{
    uint32_t x = h->v[pos];
    for (;;) {
        size_t l = 2 * pos + 1, r = l + 1, m = pos;
        int64_t best = expiry(f, F(f, x));
        if (l < h->n && expiry(f, F(f, h->v[l])) < best) {
            m = l;
            best = expiry(f, F(f, h->v[l]));
        }
        if (r < h->n && expiry(f, F(f, h->v[r])) < best)
            m = r;
        if (m == pos)
            break;
        heap_set(f, h, pos, h->v[m]);
        pos = m;
    }
    heap_set(f, h, pos, x);
}

static int heap_push(funnels *f, fheap *h, uint32_t ix1)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        uint32_t *v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            return PS_ERR_NOMEM;
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = ix1;
    sift_up(f, h, h->n - 1);
    return PS_OK;
}

static void heap_remove(funnels *f, fheap *h, size_t pos)
{
    uint32_t last = h->v[--h->n];
    if (pos == h->n)
        return;
    heap_set(f, h, pos, last);
    sift_down(f, h, pos);
    sift_up(f, h, F(f, last)->heap_pos);
}

/* ---------------------------------------------------------- funnel pool */

static uint32_t funnel_alloc(funnels *f)
{
    if (f->free_head != 0) {
        uint32_t ix1 = f->free_head;
        f->free_head = F(f, ix1)->next;
        memset(F(f, ix1), 0, sizeof(funnel));
        return ix1;
    }
    if (f->pool_n == f->pool_cap) {
        uint32_t cap = f->pool_cap ? f->pool_cap * 2 : 1024;
        funnel *v = realloc(f->pool, (size_t)cap * sizeof(*v));
        if (v == NULL)
            return 0;
        f->pool = v;
        f->pool_cap = cap;
    }
    memset(&f->pool[f->pool_n], 0, sizeof(funnel));
    return ++f->pool_n;
}

static void funnel_free(funnels *f, uint32_t ix1)
{
    F(f, ix1)->in_use = 0;
    F(f, ix1)->next = f->free_head;
    f->free_head = ix1;
}

/* Unlink ix1 from its customer's list and its heap, and free it. */
static void funnel_drop(funnels *f, cust_funnels *cs, uint32_t ix1)
{
    funnel *fn = F(f, ix1);
    uint32_t *link = &cs->head;
    while (*link != 0 && *link != ix1)
        link = &F(f, *link)->next;
    if (*link == ix1)
        *link = fn->next;
    cs->n_open--;
    fheap *h = heap_for(f, fn->part);
    if (h != NULL && fn->heap_pos < h->n && h->v[fn->heap_pos] == ix1)
        heap_remove(f, h, fn->heap_pos);
    funnel_free(f, ix1);
}

static uint32_t find_open(funnels *f, const cust_funnels *cs,
                          const ps_entity *prod)
{
    for (uint32_t ix1 = cs->head; ix1 != 0; ix1 = F(f, ix1)->next)
        if (F(f, ix1)->prod == prod)
            return ix1;
    return 0;
}

/* ---------------------------------------------------------- probability */

/* P(purchase) of an open funnel: the product's posterior mean for its
 * path so far, under a prior centred on the global rate of that path with
 * prior_strength pseudo-trials (hierarchical shrinkage): a product with no
 * closed funnel on the path gets the global rate, one with a handful leans
 * on it, a popular one speaks for itself. */
static double intent_p(funnels *f, const funnel *fn)
{
    int x = path_ix(fn->path);
    const shared_counts *p = shared_of(f, fn->prod);
    int kt = K_TRIALS_C + 2 * x, ks = K_SUCC_C + 2 * x;
    double m = parent_rate(f, fn->cust, x);
    double k = f->conf.prior_strength > 0 ? f->conf.prior_strength : 1.0;
    if (p == NULL)
        return m;
    return ((double)view(p, ks) + m * k) / ((double)view(p, kt) + k);
}

static void trigger(funnels *f, const char *type, const funnel *fn,
                    double score, int64_t ts, ps_str cause)
{
    ps_batch *b = f->triggers;
    ps_str none = {"", 0};
    ps_batch_begin(b, "XADD");
    ps_batch_arg_key(b, "triggers", none, NULL);
    ps_batch_arg_cstr(b, "MAXLEN");
    ps_batch_arg_cstr(b, "~");
    ps_batch_arg_i64(b, f->conf.stream_maxlen);
    ps_batch_arg_cstr(b, "*");
    ps_batch_arg_cstr(b, "type");
    ps_batch_arg_cstr(b, type);
    ps_batch_arg_cstr(b, "customer");
    ps_batch_arg_str(b, fn->cust->id);
    ps_batch_arg_cstr(b, "product");
    ps_batch_arg_str(b, fn->prod->id);
    ps_batch_arg_cstr(b, "score");
    ps_batch_arg_real(b, score);
    ps_batch_arg_cstr(b, "ts");
    ps_batch_arg_i64(b, ts);
    ps_batch_arg_cstr(b, "cause");
    ps_batch_arg_str(b, cause);
    ps_batch_arg_cstr(b, "opened_ts");
    ps_batch_arg_i64(b, fn->open_ts);
    ps_batch_end(b);
}

static void check_intent(funnels *f, funnel *fn, const ps_event *ev)
{
    double p = intent_p(f, fn);
    /* strictly above: with no data at all the flat prior's 0.5 must not
     * count as crossing the default threshold of 0.5 */
    if (!fn->fired && fn->last_p <= f->conf.intent_threshold &&
        p > f->conf.intent_threshold) {
        fn->fired = 1;
        trigger(f, "high_intent", fn, p, ev->ts, ev->event_id);
    }
    fn->last_p = p;
}

/* ------------------------------------------------------------- counting */

/* Decay the customer's counts to event time ts (forgetting). */
static void decay_to(funnels *f, cust_funnels *cs, int64_t ts)
{
    if (f->conf.half_life_ms <= 0 || ts <= cs->decay_ts) {
        if (ts > cs->decay_ts)
            cs->decay_ts = ts;
        return;
    }
    double k = ps_decay_factor(ts - cs->decay_ts, f->conf.half_life_ms);
    for (int x = 0; x < 3; x++) {
        cs->trials[x] *= k;
        cs->succ[x] *= k;
    }
    cs->decay_ts = ts;
}

/* Count one closed funnel everywhere. */
static void count_trial(funnels *f, cust_funnels *cs, ps_entity *cust,
                        ps_entity *prod, ps_entity *campaign, unsigned path,
                        unsigned first, bool success)
{
    int x = path_ix(path);
    ps_entity *levels[4] = {prod, campaign, segment_of(f, cust), NULL};
    cs->changed_gen = ps_pipeline_generation(f->pipe) + 1;
    cs->trials[x] += 1;
    cs->succ[x] += success;
    ps_pipeline_touch(f->pipe, cust);
    for (int l = 0; l < 4; l++) {
        ps_entity *e = l < 3 ? levels[l] : NULL;
        shared_counts *s = l < 3 ? (e ? shared_of(f, e) : NULL) : f->global;
        if (s == NULL)
            continue;
        s->delta[K_TRIALS]++;
        s->delta[K_SUCC] += success;
        s->delta[K_TRIALS_C + 2 * x]++;
        s->delta[K_SUCC_C + 2 * x] += success;
        if (first == PATH_C) {
            s->delta[K_CLICK_FIRST]++;
            s->delta[K_WISH_AFTER_CLICK] += (path & PATH_W) != 0;
        }
        if (e != NULL)
            ps_pipeline_touch(f->pipe, e);
    }
    /* the global entity is touched by every applied event; from advance()
     * it must be touched explicitly */
    ps_pipeline_touch(f->pipe,
                      ps_pipeline_find(f->pipe, PS_KIND_GLOBAL,
                                       (ps_str){"", 0}));
}

static void count_direct(funnels *f, cust_funnels *cs, ps_entity *prod,
                         int64_t by)
{
    cs->direct += by;
    cs->changed_gen = ps_pipeline_generation(f->pipe) + 1;
    bump(f, prod, K_DIRECT, by);
    f->global->delta[K_DIRECT] += by;
}

/* Close funnel ix1 as a success or failure and free it. */
static void close_funnel(funnels *f, uint32_t ix1, bool success, int64_t ts,
                         ps_str cause)
{
    funnel *fn = F(f, ix1);
    cust_funnels *cs = ps_pipeline_slice(f->pipe, fn->cust, f->me);
    decay_to(f, cs, ts);
    count_trial(f, cs, fn->cust, fn->prod, fn->campaign, fn->path, fn->first,
                success);
    if (!success && (fn->path & PATH_W))
        trigger(f, "wishlist_abandoned", fn, intent_p(f, fn), ts, cause);
    funnel_drop(f, cs, ix1);
}

/* ----------------------------------------------------------- lifecycle */

static int funnels_init(void **self, const ps_agg_env *env, char *errstr,
                        size_t errstr_size)
{
    funnels *f = calloc(1, sizeof(*f));
    int me = PS_AGG_INDEX_funnels;
    if (f == NULL || me < 0)
        goto fail;
    ps_beta_init();
    f->conf = *env->conf;
    f->pipe = env->pipe;
    f->me = (size_t)me;
    f->triggers = ps_batch_new(env->conf->prefix);
    ps_wbuf_init(&f->scratch);
    ps_entity *g = ps_pipeline_find(f->pipe, PS_KIND_GLOBAL, (ps_str){"", 0});
    if (f->triggers == NULL || g == NULL)
        goto fail;
    f->global = ps_pipeline_slice(f->pipe, g, f->me);
    *self = f;
    return PS_OK;
fail:
    if (f != NULL)
        ps_batch_destroy(f->triggers);
    free(f);
    ps_set_err(errstr, errstr_size, "funnels: out of memory");
    return PS_ERR_NOMEM;
}

static void funnels_destroy(void *self)
{
    funnels *f = self;
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->heaps_n; i++)
        free(f->heaps[i].v);
    free(f->heaps);
    free(f->unknown.v);
    free(f->pool);
    ps_batch_destroy(f->triggers);
    ps_wbuf_clear(&f->scratch);
    free(f);
}

/* --------------------------------------------------------------- apply */

static void remember_direct(cust_funnels *cs, const ps_entity *prod,
                            int64_t ts)
{
    cs->recent[cs->recent_next] = (recent_direct){hash_str(prod->id), ts};
    cs->recent_next = (cs->recent_next + 1) % RECENT_DIRECT;
    if (cs->recent_n < RECENT_DIRECT)
        cs->recent_n++;
}

/* A direct purchase of prod at ts' in [ts, ts + window]: take it back. */
static bool take_back_direct(funnels *f, cust_funnels *cs,
                             const ps_entity *prod, int64_t ts)
{
    uint64_t h = hash_str(prod->id);
    for (uint32_t i = 0; i < cs->recent_n; i++) {
        recent_direct *r = &cs->recent[i];
        if (r->prod_hash == h && r->ts >= ts &&
            r->ts <= ts + f->conf.attribution_ms) {
            r->prod_hash = 0;
            r->ts = INT64_MIN;
            return true;
        }
    }
    return false;
}

static int on_open_event(funnels *f, const ps_event *ev,
                         const ps_apply_ctx *ctx, cust_funnels *cs,
                         unsigned kind)
{
    uint32_t ix1 = find_open(f, cs, ctx->product);
    cs->changed_gen = ps_pipeline_generation(f->pipe) + 1; /* intent */
    if (ix1 != 0 && ev->ts > expiry(f, F(f, ix1))) {
        /* expired in event time, the watermark has not caught up (it is
         * closed as advance() would have, so the outcome does not depend
         * on when advance runs: round boundaries, or a customer evicted
         * and loaded again) */
        close_funnel(f, ix1, false, expiry(f, F(f, ix1)), ev->event_id);
        ix1 = 0;
    }
    if (ix1 != 0) {
        funnel *fn = F(f, ix1);
        fn->path |= (uint8_t)kind;
        if (ev->ts < fn->open_ts) { /* an earlier event, out of order */
            fn->open_ts = ev->ts;
            fn->first = (uint8_t)kind;
            fn->campaign = kind == PATH_C ? ctx->campaign : NULL;
            fheap *h = heap_for(f, fn->part);
            sift_up(f, h, fn->heap_pos);
        }
        check_intent(f, fn, ev);
        return PS_OK;
    }
    if (ev->ts + f->conf.attribution_ms < ps_pipeline_watermark(f->pipe, ev->part))
        return PS_OK; /* too late: its window is already closed */
    if (take_back_direct(f, cs, ctx->product, ev->ts)) {
        count_direct(f, cs, ctx->product, -1);
        count_trial(f, cs, ctx->cust, ctx->product,
                    kind == PATH_C ? ctx->campaign : NULL, kind, kind, true);
        return PS_OK;
    }
    ix1 = funnel_alloc(f);
    if (ix1 == 0)
        return PS_ERR_NOMEM;
    funnel *fn = F(f, ix1);
    fn->in_use = 1;
    fn->path = fn->first = (uint8_t)kind;
    fn->open_ts = ev->ts;
    fn->part = ev->part;
    fn->cust = ctx->cust;
    fn->prod = ctx->product;
    fn->campaign = kind == PATH_C ? ctx->campaign : NULL;
    fn->next = cs->head;
    cs->head = ix1;
    cs->n_open++;
    fheap *h = heap_for(f, fn->part);
    if (h == NULL || heap_push(f, h, ix1) < 0)
        return PS_ERR_NOMEM;
    check_intent(f, F(f, ix1), ev);
    return PS_OK;
}

static int on_purchase(funnels *f, const ps_event *ev, const ps_apply_ctx *ctx,
                       cust_funnels *cs)
{
    uint32_t ix1 = find_open(f, cs, ctx->product);
    if (ix1 != 0) {
        funnel *fn = F(f, ix1);
        if (ev->ts > expiry(f, fn)) {
            /* expired in event time; the watermark has not caught up */
            close_funnel(f, ix1, false, expiry(f, fn), ev->event_id);
        } else if (ev->ts >= fn->open_ts) {
            close_funnel(f, ix1, true, ev->ts, ev->event_id);
            return PS_OK;
        }
    }
    count_direct(f, cs, ctx->product, 1);
    remember_direct(cs, ctx->product, ev->ts);
    return PS_OK;
}

static int funnels_apply(void *self, const ps_event *ev,
                         const ps_apply_ctx *ctx)
{
    funnels *f = self;
    cust_funnels *cs = ctx->cust_state;

    if (!cs->seen) { /* a new customer: write its (zero) fields once */
        cs->seen = 1;
        cs->changed_gen = ps_pipeline_generation(f->pipe) + 1;
    }
    cs->home_plus1 = ev->part + 1;
    decay_to(f, cs, ev->ts);
    switch (ev->type) {
    case PS_CLICK:
        bump(f, ctx->product, K_CLICKS, 1);
        bump(f, ctx->campaign, K_CLICKS, 1);
        f->global->delta[K_CLICKS]++;
        return on_open_event(f, ev, ctx, cs, PATH_C);
    case PS_WISHLIST:
        bump(f, ctx->product, K_WISHLISTS, 1);
        f->global->delta[K_WISHLISTS]++;
        return on_open_event(f, ev, ctx, cs, PATH_W);
    case PS_PURCHASE:
        bump(f, ctx->product, K_PURCHASES, 1);
        f->global->delta[K_PURCHASES]++;
        return on_purchase(f, ev, ctx, cs);
    default:
        return PS_OK;
    }
}

static int expire_heap(funnels *f, fheap *h, int64_t wm, ps_str cause)
{
    while (h->n > 0 && wm != INT64_MIN) {
        uint32_t ix1 = h->v[0];
        int64_t exp = expiry(f, F(f, ix1));
        if (wm <= exp)
            break;
        close_funnel(f, ix1, false, exp, cause);
    }
    return PS_OK;
}

static int funnels_advance(void *self)
{
    funnels *f = self;
    for (size_t part = 0; part < f->heaps_n; part++)
        expire_heap(f, &f->heaps[part],
                    ps_pipeline_watermark(f->pipe, (uint32_t)part),
                    ps_pipeline_watermark_cause(f->pipe, (uint32_t)part));
    expire_heap(f, &f->unknown, ps_pipeline_global_watermark(f->pipe),
                ps_pipeline_watermark_cause(f->pipe, UINT32_MAX));
    return PS_OK;
}

/* --------------------------------------------------------------- writes */

static void field_dbl(ps_batch *b, const char *name, double v)
{
    ps_batch_arg_cstr(b, name);
    ps_batch_arg_real(b, v);
}

static void cust_prior(funnels *f, const ps_entity *cust, int x, double *a0,
                       double *b0)
{
    if (!f->conf.prior_empirical) {
        *a0 = *b0 = 1.0;
        return;
    }
    /* customer -> segment -> global */
    ps_beta_prior_centered(parent_rate(f, cust, x), f->conf.prior_strength, a0,
                           b0);
}

static void funnels_write_customer(void *self, const ps_entity *cust,
                                   const void *state, ps_batch *b)
{
    funnels *f = self;
    const cust_funnels *cs = state;
    double n = 0, s = 0, a0, b0;
    ps_beta_post post;

    /* unchanged since the last successful flush: already in Redis */
    if (cs->changed_gen <= ps_pipeline_generation(f->pipe))
        return;

    for (int x = 0; x < 3; x++) {
        n += cs->trials[x];
        s += cs->succ[x];
    }
    ps_batch_arg_cstr(b, "direct_purchases");
    ps_batch_arg_i64(b, cs->direct);
    field_dbl(b, "trials", n);
    field_dbl(b, "successes", s);
    cust_prior(f, cust, -1, &a0, &b0);
    ps_beta_posterior(s, n, a0, b0, f->conf.credible_level, &post);
    field_dbl(b, "alpha", post.alpha);
    field_dbl(b, "beta", post.beta);
    field_dbl(b, "p_purchase", post.mean);
    field_dbl(b, "p_purchase_lo", post.lo);
    field_dbl(b, "p_purchase_hi", post.hi);
    for (int x = 0; x < 3; x++) {
        field_dbl(b, trials_field[x], cs->trials[x]);
        field_dbl(b, successes_field[x], cs->succ[x]);
        cust_prior(f, cust, x, &a0, &b0);
        field_dbl(b, p_purchase_field[x],
                  (a0 + cs->succ[x]) / (a0 + b0 + cs->trials[x]));
    }
}

/* The expiry index: ps:state:expiry:{topic}:{partition} is a zset of the
 * customers of that partition with open funnels, scored by their earliest
 * expiry.  A customer not in memory (after a restart or a rebalance) is
 * loaded by the run loop when the partition's watermark passes its score,
 * so its funnels expire even if it never sends another event. */
static void write_expiry_index(funnels *f, const ps_entity *cust,
                               cust_funnels *cs, ps_batch *b)
{
    uint32_t want = 0;
    int64_t first = INT64_MAX;
    if (cs->head != 0 && cs->home_plus1 != 0 &&
        ps_pipeline_slot_name(f->pipe, cs->home_plus1 - 1).len > 0) {
        want = cs->home_plus1;
        for (uint32_t ix1 = cs->head; ix1 != 0; ix1 = F(f, ix1)->next)
            if (expiry(f, F(f, ix1)) < first)
                first = expiry(f, F(f, ix1));
    }
    if (cs->indexed_plus1 != 0 && cs->indexed_plus1 != want) {
        ps_batch_begin(b, "ZREM");
        ps_batch_arg_key(b, "state:expiry:",
                         ps_pipeline_slot_name(f->pipe, cs->indexed_plus1 - 1),
                         NULL);
        ps_batch_arg_str(b, cust->id);
        ps_batch_end(b);
    }
    if (want != 0) {
        ps_batch_begin(b, "ZADD");
        ps_batch_arg_key(b, "state:expiry:",
                         ps_pipeline_slot_name(f->pipe, want - 1), NULL);
        ps_batch_arg_i64(b, first);
        ps_batch_arg_str(b, cust->id);
        ps_batch_end(b);
    }
    cs->indexed_plus1 = want;
}

static void funnels_write_customer_keys(void *self, const ps_entity *cust,
                                        void *state, ps_batch *b)
{
    funnels *f = self;
    cust_funnels *cs = state;
    if (cs->changed_gen <= ps_pipeline_generation(f->pipe))
        return; /* the open funnels are as last written */
    if (cs->intent_written) {
        ps_batch_begin(b, "DEL");
        ps_batch_arg_key(b, "cust:", cust->id, ":intent");
        ps_batch_end(b);
    }
    /* (if this flush fails, the flag may claim a zset that was never
     * written: the next DEL is then a harmless no-op) */
    cs->intent_written = cs->head != 0;
    write_expiry_index(f, cust, cs, b);
    if (cs->head == 0)
        return;
    ps_batch_begin(b, "ZADD");
    ps_batch_arg_key(b, "cust:", cust->id, ":intent");
    for (uint32_t ix1 = cs->head; ix1 != 0; ix1 = F(f, ix1)->next) {
        ps_batch_arg_real(b, intent_p(f, F(f, ix1)));
        ps_batch_arg_str(b, F(f, ix1)->prod->id);
    }
    ps_batch_end(b);
}

static void write_posterior(funnels *f, ps_batch *b, const shared_counts *s,
                            bool with_ab)
{
    ps_beta_post post;
    int64_t n = view(s, K_TRIALS), k = view(s, K_SUCC);
    ps_beta_posterior((double)k, (double)n, 1, 1, f->conf.credible_level,
                      &post);
    field_dbl(b, "p_purchase", post.mean);
    field_dbl(b, "p_purchase_lo", post.lo);
    field_dbl(b, "p_purchase_hi", post.hi);
    if (with_ab) {
        field_dbl(b, "alpha", post.alpha);
        field_dbl(b, "beta", post.beta);
    }
    for (int x = 0; x < 3; x++)
        field_dbl(b, p_purchase_field[x],
                  flat_mean(view(s, K_SUCC_C + 2 * x),
                            view(s, K_TRIALS_C + 2 * x)));
}

static void funnels_write_shared_entity(void *self, const ps_entity *e,
                                        void *state, ps_batch *b)
{
    funnels *f = self;
    shared_counts *s = state;
    const char *key = ps_kind_key((ps_kind)e->kind);

    for (int k = 0; k < K_COUNT; k++) {
        if (s->delta[k] == 0)
            continue;
        ps_batch_begin(b, "HINCRBY");
        ps_batch_arg_key(b, key, e->id, NULL);
        ps_batch_arg_cstr(b, counter_names[k]);
        ps_batch_arg_i64(b, s->delta[k]);
        ps_batch_end(b);
    }
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, key, e->id, NULL);
    switch (e->kind) {
    case PS_KIND_PRODUCT:
        write_posterior(f, b, s, false);
        field_dbl(b, "p_wishlist_after_click",
                  flat_mean(view(s, K_WISH_AFTER_CLICK),
                            view(s, K_CLICK_FIRST)));
        break;
    case PS_KIND_CAMPAIGN: {
        write_posterior(f, b, s, false);
        double n_all = (double)view(f->global, K_TRIALS);
        double n_c = (double)view(s, K_TRIALS);
        double p_c = n_all > 0 ? n_c / n_all : 0;
        double p_b_c = flat_mean(view(s, K_SUCC), view(s, K_TRIALS));
        double p_b_not = flat_mean(view(f->global, K_SUCC) - view(s, K_SUCC),
                                   view(f->global, K_TRIALS) - view(s, K_TRIALS));
        field_dbl(b, "p_campaign_given_purchase",
                  ps_bayes_rule(p_c, p_b_c, p_b_not));
        break;
    }
    case PS_KIND_GLOBAL:
        write_posterior(f, b, s, true);
        break;
    case PS_KIND_SEGMENT:
        write_posterior(f, b, s, false);
        break;
    default:
        break;
    }
    ps_batch_end(b);
}

static void funnels_flushed_shared_entity(void *self, const ps_entity *e,
                                          void *state)
{
    shared_counts *s = state;
    (void)self;
    (void)e;
    for (int k = 0; k < K_COUNT; k++) {
        s->base[k] += s->delta[k];
        s->delta[k] = 0;
    }
}

static void funnels_load_shared_field(void *self, ps_entity *e, void *state,
                                      const char *field, size_t flen,
                                      const char *val, size_t vlen)
{
    shared_counts *s = state;
    char num[32];
    (void)self;
    (void)e;
    if (vlen >= sizeof(num))
        return;
    for (int k = 0; k < K_COUNT; k++) {
        if (strlen(counter_names[k]) == flen &&
            memcmp(counter_names[k], field, flen) == 0) {
            memcpy(num, val, vlen);
            num[vlen] = '\0';
            s->base[k] = strtoll(num, NULL, 10);
        }
    }
}

static void funnels_write_shared(void *self, ps_batch *b)
{
    funnels *f = self;
    const char *argv[64];
    size_t lens[64];
    for (size_t i = 0; i < ps_batch_count(f->triggers); i++) {
        size_t argc = ps_batch_argc(f->triggers, i);
        if (argc > 64)
            continue;
        ps_batch_argv(f->triggers, i, argv, lens);
        ps_batch_begin(b, argv[0]);
        for (size_t a = 1; a < argc; a++)
            ps_batch_arg(b, argv[a], lens[a]);
        ps_batch_end(b);
    }
}

static void funnels_flushed(void *self)
{
    funnels *f = self;
    ps_batch_clear(f->triggers);
}

/* ---------------------------------------------------------- saved state */

static void put_str(ps_wbuf *w, ps_str s)
{
    ps_wbuf_u32(w, s.len);
    ps_wbuf_put(w, s.ptr, s.len);
}

static int get_str(ps_rbuf *r, ps_str *s)
{
    uint32_t len;
    /* ids are at most PS_ID_MAX; partition names "topic:N" a little more */
    if (ps_rbuf_u32(r, &len) < 0 || len > 2 * PS_ID_MAX ||
        ps_rbuf_left(r) < len)
        return -1;
    s->ptr = (const char *)r->p;
    s->len = len;
    r->p += len;
    return 0;
}

static void funnels_save(void *self, const ps_entity *cust, const void *state,
                         ps_wbuf *w)
{
    funnels *f = self;
    const cust_funnels *cs = state;
    (void)cust;
    ps_wbuf_u8(w, FUNNEL_STATE_VERSION);
    for (int x = 0; x < 3; x++) {
        ps_wbuf_f64(w, cs->trials[x]);
        ps_wbuf_f64(w, cs->succ[x]);
    }
    ps_wbuf_i64(w, cs->direct);
    ps_wbuf_i64(w, cs->decay_ts);
    ps_wbuf_u32(w, cs->recent_n);
    ps_wbuf_u32(w, cs->recent_next);
    for (uint32_t i = 0; i < RECENT_DIRECT; i++) {
        ps_wbuf_u64(w, cs->recent[i].prod_hash);
        ps_wbuf_i64(w, cs->recent[i].ts);
    }
    ps_wbuf_u32(w, cs->intent_written);
    put_str(w, cs->home_plus1 ? ps_pipeline_slot_name(f->pipe,
                                                      cs->home_plus1 - 1)
                              : (ps_str){"", 0});
    put_str(w, cs->indexed_plus1 ? ps_pipeline_slot_name(
                                       f->pipe, cs->indexed_plus1 - 1)
                                 : (ps_str){"", 0});
    ps_wbuf_u32(w, cs->n_open);
    for (uint32_t ix1 = cs->head; ix1 != 0; ix1 = F(f, ix1)->next) {
        const funnel *fn = F(f, ix1);
        put_str(w, fn->prod->id);
        put_str(w, fn->campaign ? fn->campaign->id : (ps_str){"", 0});
        ps_wbuf_u8(w, fn->campaign != NULL);
        ps_wbuf_i64(w, fn->open_ts);
        ps_wbuf_u8(w, fn->path);
        ps_wbuf_u8(w, fn->first);
        ps_wbuf_u8(w, fn->fired);
        ps_wbuf_f64(w, fn->last_p);
        put_str(w, fn->part == UNKNOWN_PART
                       ? (ps_str){"", 0}
                       : ps_pipeline_slot_name(f->pipe, fn->part));
    }
}

static int funnels_load(void *self, ps_entity *cust, void *state, ps_rbuf *r)
{
    funnels *f = self;
    cust_funnels *cs = state;
    uint8_t version;
    uint32_t n_open;

    if (ps_rbuf_u8(r, &version) < 0 || version != FUNNEL_STATE_VERSION)
        return PS_ERR_STATE;
    for (int x = 0; x < 3; x++) {
        ps_rbuf_f64(r, &cs->trials[x]);
        ps_rbuf_f64(r, &cs->succ[x]);
    }
    ps_rbuf_i64(r, &cs->direct);
    ps_rbuf_i64(r, &cs->decay_ts);
    ps_rbuf_u32(r, &cs->recent_n);
    ps_rbuf_u32(r, &cs->recent_next);
    for (uint32_t i = 0; i < RECENT_DIRECT; i++) {
        ps_rbuf_u64(r, &cs->recent[i].prod_hash);
        ps_rbuf_i64(r, &cs->recent[i].ts);
    }
    ps_rbuf_u32(r, &cs->intent_written);
    cs->seen = 1; /* its fields are in Redis already */
    ps_str home, indexed;
    uint32_t slot;
    if (get_str(r, &home) < 0 || get_str(r, &indexed) < 0)
        return PS_ERR_STATE;
    cs->home_plus1 = ps_pipeline_slot_by_name(f->pipe, home, &slot) ? slot + 1
                                                                     : 0;
    cs->indexed_plus1 =
        ps_pipeline_slot_by_name(f->pipe, indexed, &slot) ? slot + 1 : 0;
    if (ps_rbuf_u32(r, &n_open) < 0 || r->err ||
        cs->recent_n > RECENT_DIRECT || cs->recent_next >= RECENT_DIRECT)
        return PS_ERR_STATE;
    for (uint32_t i = 0; i < n_open; i++) {
        ps_str prod, camp, part_name;
        uint8_t has_camp, path, first, fired;
        int64_t open_ts;
        double last_p;
        if (get_str(r, &prod) < 0 || get_str(r, &camp) < 0 ||
            ps_rbuf_u8(r, &has_camp) < 0 || ps_rbuf_i64(r, &open_ts) < 0 ||
            ps_rbuf_u8(r, &path) < 0 || ps_rbuf_u8(r, &first) < 0 ||
            ps_rbuf_u8(r, &fired) < 0 || ps_rbuf_f64(r, &last_p) < 0 ||
            get_str(r, &part_name) < 0 || path == 0 || path > 3 ||
            prod.len == 0)
            return PS_ERR_STATE;
        uint32_t ix1 = funnel_alloc(f);
        if (ix1 == 0)
            return PS_ERR_NOMEM;
        funnel *fn = F(f, ix1);
        fn->in_use = 1;
        fn->path = path;
        fn->first = first;
        fn->fired = fired;
        fn->last_p = last_p;
        fn->open_ts = open_ts;
        /* its partition by name; unknown here: the global watermark */
        fn->part = ps_pipeline_slot_by_name(f->pipe, part_name, &slot)
                       ? slot
                       : UNKNOWN_PART;
        fn->cust = cust;
        fn->prod = ps_pipeline_entity(f->pipe, PS_KIND_PRODUCT, prod);
        fn->campaign =
            has_camp ? ps_pipeline_entity(f->pipe, PS_KIND_CAMPAIGN, camp)
                     : NULL;
        fn->next = cs->head;
        cs->head = ix1;
        cs->n_open++;
        fheap *h = heap_for(f, fn->part);
        if (fn->prod == NULL || (has_camp && fn->campaign == NULL) ||
            h == NULL || heap_push(f, h, ix1) < 0)
            return PS_ERR_NOMEM;
    }
    return PS_OK;
}

static void funnels_forget(void *self, ps_entity *cust, void *state)
{
    funnels *f = self;
    cust_funnels *cs = state;
    (void)cust;
    while (cs->head != 0)
        funnel_drop(f, cs, cs->head);
}

const ps_aggregate_ops ps_agg_funnels = {
    .name = "funnels",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(cust_funnels),
                   [PS_KIND_PRODUCT] = sizeof(shared_counts),
                   [PS_KIND_CAMPAIGN] = sizeof(shared_counts),
                   [PS_KIND_GLOBAL] = sizeof(shared_counts),
                   [PS_KIND_SEGMENT] = sizeof(shared_counts)},
    .init = funnels_init,
    .destroy = funnels_destroy,
    .apply = funnels_apply,
    .advance = funnels_advance,
    .write_customer = funnels_write_customer,
    .write_customer_keys = funnels_write_customer_keys,
    .write_shared_entity = funnels_write_shared_entity,
    .flushed_shared_entity = funnels_flushed_shared_entity,
    .write_shared = funnels_write_shared,
    .flushed = funnels_flushed,
    .save_customer = funnels_save,
    .load_customer = funnels_load,
    .forget_customer = funnels_forget,
    .load_shared_field = funnels_load_shared_field,
};

/* ------------------------------------------------------------ accessors */

#include "funnels.h"

double ps_funnels_product_p(ps_pipeline *p, const ps_entity *prod)
{
    int index = PS_AGG_INDEX_funnels;
    if (index < 0 || prod == NULL || prod->kind != PS_KIND_PRODUCT)
        return 0.5;
    const shared_counts *s = ps_pipeline_slice(p, prod, (size_t)index);
    return flat_mean(view(s, K_SUCC), view(s, K_TRIALS));
}

void ps_funnels_customer_paths(ps_pipeline *p, const ps_entity *cust,
                               double successes[3], double trials[3])
{
    int index = PS_AGG_INDEX_funnels;
    for (int x = 0; x < 3; x++)
        successes[x] = trials[x] = 0;
    if (index < 0)
        return;
    const cust_funnels *cs = ps_pipeline_slice(p, cust, (size_t)index);
    for (int x = 0; x < 3; x++) {
        successes[x] = cs->succ[x];
        trials[x] = cs->trials[x];
    }
}

static int top_intent_id_cmp(ps_str a, ps_str b)
{
    uint32_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    return c != 0 ? c : (a.len > b.len) - (a.len < b.len);
}

uint32_t ps_funnels_top_intent(ps_pipeline *p, const ps_entity *cust,
                               double *intent, ps_str *product)
{
    int index = PS_AGG_INDEX_funnels;
    if (index < 0)
        return 0;
    funnels *f = ps_pipeline_agg_self(p, (size_t)index);
    const cust_funnels *cs = ps_pipeline_slice(p, cust, (size_t)index);
    bool any = false;
    for (uint32_t ix1 = cs->head; ix1 != 0; ix1 = F(f, ix1)->next) {
        const funnel *fn = F(f, ix1);
        double v = intent_p(f, fn);
        if (!any || v > *intent ||
            (v == *intent && top_intent_id_cmp(fn->prod->id, *product) < 0)) {
            *intent = v;
            *product = fn->prod->id;
            any = true;
        }
    }
    return cs->n_open;
}

static void counts_from(ps_funnel_counts *out, const int64_t *v)
{
    for (int x = 0; x < 3; x++) {
        out->trials[x] = v[K_TRIALS_C + 2 * x];
        out->successes[x] = v[K_SUCC_C + 2 * x];
    }
    out->click_first = v[K_CLICK_FIRST];
    out->wishlist_after_click = v[K_WISH_AFTER_CLICK];
}

bool ps_funnels_product_counts(ps_pipeline *p, const ps_entity *prod,
                               ps_funnel_counts *total,
                               ps_funnel_counts *unflushed)
{
    int index = PS_AGG_INDEX_funnels;
    if (total != NULL)
        memset(total, 0, sizeof(*total));
    if (unflushed != NULL)
        memset(unflushed, 0, sizeof(*unflushed));
    if (index < 0 || prod == NULL || prod->kind != PS_KIND_PRODUCT)
        return false;
    const shared_counts *s = ps_pipeline_slice(p, prod, (size_t)index);
    if (total != NULL) {
        int64_t v[K_COUNT];
        for (int k = 0; k < K_COUNT; k++)
            v[k] = view(s, k);
        counts_from(total, v);
    }
    if (unflushed != NULL)
        counts_from(unflushed, s->delta);
    return true;
}

bool ps_funnels_open_of(ps_pipeline *p, const ps_entity *cust,
                        const ps_entity *prod, ps_funnel_open *out)
{
    int index = PS_AGG_INDEX_funnels;
    if (index < 0 || cust == NULL || prod == NULL)
        return false;
    funnels *f = ps_pipeline_agg_self(p, (size_t)index);
    const cust_funnels *cs = ps_pipeline_slice(p, cust, (size_t)index);
    uint32_t ix1 = find_open(f, cs, prod);
    if (ix1 == 0)
        return false;
    const funnel *fn = F(f, ix1);
    out->open_ts = fn->open_ts;
    out->click = (fn->path & PATH_C) != 0;
    out->wishlist = (fn->path & PATH_W) != 0;
    out->click_first = fn->first == PATH_C;
    return true;
}
