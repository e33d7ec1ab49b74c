/*
 * copurchase.c -- the co-purchase graph and product recommendations
 * (contract section 2, "Behaviour graph" and "Next action").
 *
 * Co-purchase.  C[x][y] = number of distinct customers who purchased both
 * x and y.  Each customer keeps the set of distinct products it purchased
 * (at most copurchase_max_items); on its FIRST purchase of x, C[x][y] and
 * C[y][x] rise by one for every y already in the set, then x joins it.  A
 * repeat purchase changes nothing, so a customer counts once per pair.  A
 * customer whose set is full stops contributing new pairs (and products
 * bought past the cap are not excluded from its recommendations): C is
 * then an undercount for customers with more than max_items distinct
 * products.
 *
 * Published: ps:prod:{x}:also, a zset y -> C[x][y] of the top N =
 * also_top_n partners.  Every increment is also appended to a pending
 * list; the flush coalesces it and writes one ZINCRBY per changed pair
 * into the complete count zset ps:state:also:{x} (so instances add up and
 * a failed flush is simply written again), then copies its top N into
 * ps:prod:{x}:also (ZRANGESTORE ... REV, ties by member).  Every count is
 * exact, and the published top N depends only on the counts, never on
 * when flushes happened (trimming the one zset instead would restart a
 * partner trimmed away from 0, at moments that depend on flush timing).
 * The complete zset holds every distinct co-purchased pair.
 *
 * Ranking state.  For recommendations every product x keeps an in-memory
 * table of at most K = 4 N partners {y, base, own}: view = base + own,
 * `base` from Redis, `own` this process's increments.  When the table is
 * full, a new partner (count 1) takes the place of one with the smallest
 * view only if that view is 1 too (the newer of two singletons wins);
 * otherwise it is not kept.  Counts are never overestimated; a partner
 * evicted and seen again restarts from its new increments, so a kept count
 * may be low.  (Space-Saving, Metwally et al. 2005, where the newcomer
 * inherits the minimum, was tried first: on the online-retail benchmark
 * its overestimated newcomers cut hit rate @10 from 2.6 % to 1.9 %; see
 * bench/bench_reco.sh.)  The table is written as the hidden field `also_state` of the product's
 * output hash ps:prod:{x} whenever it changed ("count len:id\n" per
 * partner), so it is loaded on first use through load_shared_field, like
 * the other aggregates' bases; it is parsed lazily on first use because
 * entities may not be created while the run loop is loading bases.  With
 * several instances this snapshot is last-writer-wins: each instance ranks
 * with its own view plus what was in Redis when it loaded x (the published
 * zset, written by ZINCRBY, still adds up exactly).
 *
 * Recommendations.  ps:cust:{id}:reco, a zset of at most reco_n products
 * the customer has not purchased, scored
 *     score(p) = P(purchase of p) * sum over x in (purchased u wishlisted)
 *                of C[x][p]
 * with C from the tables above and P the product's conversion posterior
 * from funnels (funnels.h).
 *
 * Popular fill-up.  When co-purchase gives fewer than reco_n candidates
 * (a cold customer: no purchase or wishlist yet, or partners all bought),
 * the rest of the zset is filled with the most purchased products the
 * customer has not purchased and that are not already in it, most
 * purchased first (ties: product id ascending), scored
 *     score(q) = s_min * n(q) / (n_1 + 1)
 * where n(q) is q's purchase count (the `purchases` field of ps:prod:{q}
 * as this instance sees it: the loaded value plus its own purchases since),
 * n_1 the count of the first (most purchased) product of the popular
 * list, whether or not the customer bought it, and s_min the lowest
 * co-purchase score in the zset (1 when there is none).  So every fill-up
 * score is in (0, s_min): strictly below every co-purchase candidate, and
 * proportional to popularity among the fill-up.  A wishlisted product may
 * be filled in (only purchases are excluded, as for co-purchase).  (On
 * bench/bench_reco.sh this lifts hit rate @10 on REES46, where most
 * customers have no co-purchase candidate, from 0 % to 13.1 %, the
 * most-popular baseline's 13.6 % but for one customer not seen before,
 * and keeps co-purchase's 2.63 % against 2.44 % on Online Retail, where
 * co-purchase nearly always gives 10 candidates.)
 *
 * The popular list is a fixed array of at most P = 4 reco_n products
 * sorted by (count desc, id asc), updated at every PURCHASE with the
 * product's new count: it enters in place of the last one when it ranks
 * before it.  Counts only grow, so within one process the list is the
 * exact top P of the products it has counts for.  It is the aggregate's
 * own state, ps:state:agg:copurchase ("u8 version 1, u32 n, n x {u32 len,
 * id, i64 count}"), saved in the flush after it changed and loaded at
 * start; a restored product's count is refreshed when its ps:prod hash is
 * loaded.  With several instances that key is last-writer-wins: each
 * instance fills from the products it has seen plus the list it loaded.
 *
 * The zset is rewritten (DEL + ZADD in the flush transaction, scores with
 * round-trip digits) for every customer with an event since the last
 * flush, so it reflects C and the popular list as of that flush.
 *
 * Memory.  Per customer: two arrays of product pointers (purchased, at
 * most max_items; wishlisted, at most max_items, then replaced round
 * robin, oldest first), grown by doubling, freed by forget_customer.  Per
 * product: at most K entries of 16 bytes, allocated on its first
 * co-purchase, and its purchase count.  Popular list: P entries of 16
 * bytes, allocated at init.  The
 * pending list holds the increments since the last successful flush and
 * is coalesced when it fills.  Nothing is allocated per event in the
 * steady state.  Product entities live as long as the pipeline, so
 * customers and tables point at them.
 */
#include "copurchase.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funnels.h"
#include "pipeline.h"
#include "../common/error.h"

#define COP_STATE_VERSION 1 /* a customer's saved slice */
#define POP_STATE_VERSION 1 /* ps:state:agg:copurchase (popular list) */
#define POP_FACTOR 4
#define PURCHASES_FIELD "purchases"
#define TOP_K_FACTOR 4
#define SNAP_FIELD "also_state"

/* One partner of a product's table. */
typedef struct also_entry {
    ps_entity *prod;
    uint32_t base; /* from the loaded snapshot or inherited on replacement */
    uint32_t own;  /* this process's increments */
} also_entry;

typedef struct cop_prod {
    also_entry *top;  /* top_n entries, unordered */
    char *snap;       /* also_state as loaded, not parsed yet (or NULL) */
    uint32_t top_n, top_cap, snap_len;
    uint32_t changed_gen; /* table changed for flush generation */
    uint32_t owned;       /* listed in copurchase.owned */
    int64_t bought_base;  /* `purchases` of ps:prod:{x} when loaded */
    int64_t bought_own;   /* PURCHASE events of x applied here since */
} cop_prod;

typedef struct cop_cust {
    ps_entity **buy;  /* distinct purchased products */
    ps_entity **wish; /* wishlisted, not purchased */
    uint32_t n_buy, cap_buy, n_wish, cap_wish;
    uint32_t wish_next;    /* oldest wishlist slot once full */
    uint32_t changed_gen;  /* event since flush generation */
    uint32_t reco_written; /* ps:cust:{id}:reco may exist */
} cop_cust;

typedef struct pending {
    ps_entity *x, *y;
    int64_t d;
} pending;

/* Scratch map product -> accumulated co-purchase, for one reco. */
typedef struct cand {
    const ps_entity *prod; /* NULL = empty */
    double sum;
    int excluded; /* purchased by the customer */
} cand;

/* One product of the popular list. */
typedef struct pop_entry {
    ps_entity *prod;
    int64_t count; /* its purchase count when last seen */
} pop_entry;

typedef struct copurchase {
    ps_pipeline *pipe;
    size_t me;
    uint32_t top_k, max_items, also_n, reco_n;

    pending *pend;
    size_t pend_n, pend_cap, pend_written;

    ps_entity **owned; /* products with a table or snapshot to free */
    size_t owned_n, owned_cap;

    cand *map;
    size_t map_cap;    /* power of two */
    uint32_t *used;    /* occupied slots of map */
    size_t used_n, used_cap;

    ps_copurchase_item *best; /* reco_n */
    ps_wbuf scratch;

    pop_entry *pop; /* most purchased first, pop_n of pop_cap */
    uint32_t pop_n, pop_cap;
    uint32_t pop_gen; /* popular list changed for flush generation */
} copurchase;

/* -------------------------------------------------------------- helpers */

static cop_prod *prod_of(copurchase *cp, const ps_entity *x)
{
    return ps_pipeline_slice(cp->pipe, x, cp->me);
}

static uint32_t view_of(const also_entry *e) { return e->base + e->own; }

static int grow_ptrs(ps_entity ***v, uint32_t *cap, uint32_t want_max)
{
    uint32_t c = *cap ? *cap * 2 : 8;
    if (c > want_max)
        c = want_max;
    ps_entity **nv = realloc(*v, (size_t)c * sizeof(*nv));
    if (nv == NULL)
        return PS_ERR_NOMEM;
    *v = nv;
    *cap = c;
    return PS_OK;
}

static bool contains(ps_entity *const *v, uint32_t n, const ps_entity *x)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

static int id_cmp(ps_str a, ps_str b)
{
    uint32_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(a.ptr, b.ptr, n);
    if (c != 0)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int own_product(copurchase *cp, ps_entity *x, cop_prod *ps)
{
    if (ps->owned)
        return PS_OK;
    if (cp->owned_n == cp->owned_cap) {
        size_t c = cp->owned_cap ? cp->owned_cap * 2 : 256;
        ps_entity **nv = realloc(cp->owned, c * sizeof(*nv));
        if (nv == NULL)
            return PS_ERR_NOMEM;
        cp->owned = nv;
        cp->owned_cap = c;
    }
    cp->owned[cp->owned_n++] = x;
    ps->owned = 1;
    return PS_OK;
}

/* ------------------------------------------------------ product tables */

static also_entry *find_entry(cop_prod *ps, const ps_entity *y)
{
    for (uint32_t i = 0; i < ps->top_n; i++)
        if (ps->top[i].prod == y)
            return &ps->top[i];
    return NULL;
}

/* Add partner y with view base + own: appended while there is room, else
 * in place of the smallest view when that is no larger (replace_min, a new
 * increment) or smaller (a snapshot entry). */
static int add_entry(copurchase *cp, ps_entity *x, cop_prod *ps, ps_entity *y,
                     uint32_t base, uint32_t own, bool replace_min)
{
    if (ps->top_n < cp->top_k) {
        if (ps->top_n == ps->top_cap) {
            uint32_t c = ps->top_cap ? ps->top_cap * 2 : 4;
            if (c > cp->top_k)
                c = cp->top_k;
            if (own_product(cp, x, ps) < 0)
                return PS_ERR_NOMEM;
            also_entry *nv = realloc(ps->top, (size_t)c * sizeof(*nv));
            if (nv == NULL)
                return PS_ERR_NOMEM;
            ps->top = nv;
            ps->top_cap = c;
        }
        ps->top[ps->top_n++] = (also_entry){y, base, own};
        return PS_OK;
    }
    also_entry *min = &ps->top[0];
    for (uint32_t i = 1; i < ps->top_n; i++)
        if (view_of(&ps->top[i]) < view_of(min))
            min = &ps->top[i];
    if (replace_min) {
        if (view_of(min) <= own) /* a tie: the newer partner wins */
            *min = (also_entry){y, 0, own};
    }
    else if (base + own > view_of(min))
        *min = (also_entry){y, base, own};
    return PS_OK;
}

static bool parse_u32(const char **p, const char *end, char stop,
                      uint32_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    while (s < end && *s >= '0' && *s <= '9' && v <= UINT32_MAX)
        v = v * 10 + (uint64_t)(*s++ - '0');
    if (s == *p || s >= end || *s != stop || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    *p = s + 1;
    return true;
}

/* Merge a loaded snapshot into x's table: the snapshot's counts are the
 * bases (a field loaded twice gives the same result).  A malformed
 * snapshot is dropped from the first bad entry on: it is ranking state
 * only. */
static int parse_snapshot(copurchase *cp, ps_entity *x, cop_prod *ps)
{
    const char *p = ps->snap, *end = ps->snap + ps->snap_len;
    int rc = PS_OK;
    while (p < end && rc == PS_OK) {
        uint32_t count, len;
        if (!parse_u32(&p, end, ' ', &count) ||
            !parse_u32(&p, end, ':', &len) || len == 0 || len > PS_ID_MAX ||
            (size_t)(end - p) < (size_t)len + 1 || p[len] != '\n')
            break;
        ps_entity *y = ps_pipeline_entity(cp->pipe, PS_KIND_PRODUCT,
                                          (ps_str){p, len});
        p += len + 1;
        if (y == NULL) {
            rc = PS_ERR_NOMEM;
            break;
        }
        if (y == x)
            continue;
        also_entry *e = find_entry(ps, y);
        if (e != NULL)
            e->base = count;
        else
            rc = add_entry(cp, x, ps, y, count, 0, false);
    }
    free(ps->snap);
    ps->snap = NULL;
    ps->snap_len = 0;
    return rc;
}

/* x's table, with any loaded snapshot merged. */
static cop_prod *table_of(copurchase *cp, ps_entity *x, int *rc)
{
    cop_prod *ps = prod_of(cp, x);
    *rc = PS_OK;
    if (ps->snap != NULL)
        *rc = parse_snapshot(cp, x, ps);
    return ps;
}

static int push_pending(copurchase *cp, ps_entity *x, ps_entity *y);

/* C[x][y] += 1: x's table and the pending ZINCRBY. */
static int bump_pair(copurchase *cp, ps_entity *x, ps_entity *y)
{
    int rc;
    cop_prod *ps = table_of(cp, x, &rc);
    if (rc < 0)
        return rc;
    also_entry *e = find_entry(ps, y);
    if (e != NULL)
        e->own++;
    else if ((rc = add_entry(cp, x, ps, y, 0, 1, true)) < 0)
        return rc;
    ps->changed_gen = ps_pipeline_generation(cp->pipe) + 1;
    if (ps_pipeline_touch(cp->pipe, x) < 0)
        return PS_ERR_NOMEM;
    return push_pending(cp, x, y);
}

/* ------------------------------------------------------ pending deltas */

static int cmp_pending(const void *a, const void *b)
{
    const pending *p = a, *q = b;
    uintptr_t px = (uintptr_t)p->x, qx = (uintptr_t)q->x;
    uintptr_t py = (uintptr_t)p->y, qy = (uintptr_t)q->y;
    if (px != qx)
        return px < qx ? -1 : 1;
    if (py != qy)
        return py < qy ? -1 : 1;
    return 0;
}

/* Sort the pending list by (x, y) and merge equal pairs. */
static void coalesce(copurchase *cp)
{
    if (cp->pend_n < 2)
        return;
    qsort(cp->pend, cp->pend_n, sizeof(*cp->pend), cmp_pending);
    size_t k = 0;
    for (size_t i = 1; i < cp->pend_n; i++) {
        if (cp->pend[i].x == cp->pend[k].x && cp->pend[i].y == cp->pend[k].y)
            cp->pend[k].d += cp->pend[i].d;
        else
            cp->pend[++k] = cp->pend[i];
    }
    cp->pend_n = k + 1;
}

static int push_pending(copurchase *cp, ps_entity *x, ps_entity *y)
{
    if (cp->pend_n == cp->pend_cap) {
        /* full: merge repeated pairs first, unless a written prefix
         * awaits flushed(); grow when that frees less than half */
        if (cp->pend_written == 0)
            coalesce(cp);
        if (cp->pend_n == cp->pend_cap || cp->pend_n * 2 > cp->pend_cap) {
            size_t c = cp->pend_cap ? cp->pend_cap * 2 : 4096;
            pending *nv = realloc(cp->pend, c * sizeof(*nv));
            if (nv == NULL)
                return PS_ERR_NOMEM;
            cp->pend = nv;
            cp->pend_cap = c;
        }
    }
    cp->pend[cp->pend_n++] = (pending){x, y, 1};
    return PS_OK;
}

/* ------------------------------------------------------------ customers */

static int on_purchase(copurchase *cp, cop_cust *cs, ps_entity *x)
{
    if (contains(cs->buy, cs->n_buy, x) || cs->n_buy >= cp->max_items)
        return PS_OK; /* a repeat, or the set is full */
    if (cs->n_buy == cs->cap_buy &&
        grow_ptrs(&cs->buy, &cs->cap_buy, cp->max_items) < 0)
        return PS_ERR_NOMEM;
    for (uint32_t i = 0; i < cs->n_buy; i++) {
        int rc;
        if ((rc = bump_pair(cp, x, cs->buy[i])) < 0 ||
            (rc = bump_pair(cp, cs->buy[i], x)) < 0)
            return rc;
    }
    cs->buy[cs->n_buy++] = x;
    for (uint32_t i = 0; i < cs->n_wish; i++) {
        if (cs->wish[i] != x)
            continue;
        /* purchased now: out of the wishlist (order is kept, so the ring
         * position still names the oldest) */
        memmove(&cs->wish[i], &cs->wish[i + 1],
                (cs->n_wish - i - 1) * sizeof(*cs->wish));
        cs->n_wish--;
        if (cs->wish_next > i)
            cs->wish_next--;
        if (cs->wish_next >= cs->n_wish)
            cs->wish_next = 0;
        break;
    }
    return PS_OK;
}

static int on_wishlist(copurchase *cp, cop_cust *cs, ps_entity *x)
{
    if (contains(cs->buy, cs->n_buy, x) || contains(cs->wish, cs->n_wish, x))
        return PS_OK;
    if (cs->n_wish >= cp->max_items) { /* full: replace an old one */
        cs->wish[cs->wish_next] = x;
        cs->wish_next = (cs->wish_next + 1) % cs->n_wish;
        return PS_OK;
    }
    if (cs->n_wish == cs->cap_wish &&
        grow_ptrs(&cs->wish, &cs->cap_wish, cp->max_items) < 0)
        return PS_ERR_NOMEM;
    cs->wish[cs->n_wish++] = x;
    return PS_OK;
}

/* ------------------------------------------------------- popular list */

/* a ranks before b: more purchases, then the smaller id */
static bool pop_before(const pop_entry *a, const pop_entry *b)
{
    if (a->count != b->count)
        return a->count > b->count;
    return id_cmp(a->prod->id, b->prod->id) < 0;
}

/* Product x has count purchases now: update or enter the list, keeping it
 * sorted.  No allocation (the array has pop_cap entries from init). */
static void pop_update(copurchase *cp, ps_entity *x, int64_t count)
{
    uint32_t i = 0;
    while (i < cp->pop_n && cp->pop[i].prod != x)
        i++;
    pop_entry it = {x, count};
    if (i == cp->pop_n) { /* not listed */
        if (count <= 0)
            return;
        if (cp->pop_n < cp->pop_cap)
            cp->pop_n++;
        else if (!pop_before(&it, &cp->pop[cp->pop_n - 1]))
            return;
        i = cp->pop_n - 1; /* appended, or in place of the last */
    }
    else if (cp->pop[i].count == count) {
        return;
    }
    /* move it up, or down (a count loaded lower than remembered) */
    while (i > 0 && pop_before(&it, &cp->pop[i - 1])) {
        cp->pop[i] = cp->pop[i - 1];
        i--;
    }
    while (i + 1 < cp->pop_n && pop_before(&cp->pop[i + 1], &it)) {
        cp->pop[i] = cp->pop[i + 1];
        i++;
    }
    cp->pop[i] = it;
    cp->pop_gen = ps_pipeline_generation(cp->pipe) + 1;
}

static int64_t bought_of(const cop_prod *ps)
{
    return ps->bought_base + ps->bought_own;
}

/* ------------------------------------------------------------- apply */

static int cop_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    copurchase *cp = self;
    cop_cust *cs = ctx->cust_state;

    cs->changed_gen = ps_pipeline_generation(cp->pipe) + 1;
    if (ctx->product == NULL)
        return PS_OK;
    switch (ev->type) {
    case PS_PURCHASE: {
        cop_prod *ps = ctx->product_state;
        ps->bought_own++;
        pop_update(cp, ctx->product, bought_of(ps));
        return on_purchase(cp, cs, ctx->product);
    }
    case PS_WISHLIST: return on_wishlist(cp, cs, ctx->product);
    default: return PS_OK;
    }
}

/* ------------------------------------------------------ recommendations */

static uint64_t hash_ptr(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static int map_reserve(copurchase *cp, size_t entries)
{
    size_t want = 64;
    while (want < entries * 2)
        want *= 2;
    if (want > cp->map_cap) {
        cand *m = calloc(want, sizeof(*m));
        uint32_t *u = malloc(want * sizeof(*u));
        if (m == NULL || u == NULL) {
            free(m);
            free(u);
            return PS_ERR_NOMEM;
        }
        free(cp->map);
        free(cp->used);
        cp->map = m;
        cp->used = u;
        cp->map_cap = want;
        cp->used_cap = want;
    }
    return PS_OK;
}

static cand *map_slot(copurchase *cp, const ps_entity *prod)
{
    size_t mask = cp->map_cap - 1, i = hash_ptr(prod) & mask;
    while (cp->map[i].prod != NULL && cp->map[i].prod != prod)
        i = (i + 1) & mask;
    if (cp->map[i].prod == NULL) {
        assert(cp->used_n < cp->used_cap);
        cp->map[i].prod = prod;
        cp->used[cp->used_n++] = (uint32_t)i;
    }
    return &cp->map[i];
}

static void map_clear(copurchase *cp)
{
    for (size_t k = 0; k < cp->used_n; k++)
        cp->map[cp->used[k]] = (cand){NULL, 0, 0};
    cp->used_n = 0;
}

/* a ranks before b */
static bool better(const ps_copurchase_item *a, const ps_copurchase_item *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return id_cmp(a->product->id, b->product->id) < 0;
}

/* Insert it into the sorted out[0..*k) of capacity n. */
static void keep_best(ps_copurchase_item *out, size_t *k, size_t n,
                      ps_copurchase_item it)
{
    size_t i = *k;
    if (i == n) {
        if (n == 0 || !better(&it, &out[n - 1]))
            return;
        i = n - 1;
    } else {
        (*k)++;
    }
    while (i > 0 && better(&it, &out[i - 1])) {
        out[i] = out[i - 1];
        i--;
    }
    out[i] = it;
}

static void add_partners(copurchase *cp, ps_entity *x, int *rc)
{
    cop_prod *ps = table_of(cp, x, rc);
    if (*rc < 0)
        return;
    for (uint32_t j = 0; j < ps->top_n; j++) {
        cand *c = map_slot(cp, ps->top[j].prod);
        if (!c->excluded)
            c->sum += view_of(&ps->top[j]);
    }
}

/* The map slot of prod, or NULL when it holds none. */
static const cand *map_find(const copurchase *cp, const ps_entity *prod)
{
    size_t mask = cp->map_cap - 1, i = hash_ptr(prod) & mask;
    while (cp->map[i].prod != NULL) {
        if (cp->map[i].prod == prod)
            return &cp->map[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

/* Fill out[k..n) from the popular list (header comment).  With the map
 * built (used_n > 0) a product in it is either purchased (excluded) or a
 * co-purchase candidate, and since fewer than n were found every candidate
 * is in out already: both are skipped. */
static size_t fill_popular(copurchase *cp, size_t k, size_t n,
                           ps_copurchase_item *out)
{
    if (k >= n || cp->pop_n == 0)
        return k;
    double s_min = k > 0 ? out[k - 1].score : 1.0;
    double top = (double)cp->pop[0].count + 1.0;
    for (uint32_t i = 0; i < cp->pop_n && k < n; i++) {
        const pop_entry *q = &cp->pop[i];
        if (q->count <= 0)
            break;
        if (cp->used_n > 0) {
            const cand *c = map_find(cp, q->prod);
            if (c != NULL && (c->excluded || c->sum > 0))
                continue;
        }
        out[k++] = (ps_copurchase_item){
            q->prod, s_min * ((double)q->count / top), true};
    }
    return k;
}

static long reco(copurchase *cp, const cop_cust *cs, size_t n,
                 ps_copurchase_item *out)
{
    int rc = PS_OK;
    size_t k = 0;
    if (n == 0)
        return 0;
    if (cs->n_buy + cs->n_wish == 0)
        return (long)fill_popular(cp, 0, n, out); /* nothing to exclude */
    if (map_reserve(cp, cs->n_buy + ((size_t)cs->n_buy + cs->n_wish) *
                                        (cp->top_k + 1)) < 0)
        return PS_ERR_NOMEM;
    for (uint32_t i = 0; i < cs->n_buy; i++)
        map_slot(cp, cs->buy[i])->excluded = 1;
    for (uint32_t i = 0; i < cs->n_buy && rc == PS_OK; i++)
        add_partners(cp, cs->buy[i], &rc);
    for (uint32_t i = 0; i < cs->n_wish && rc == PS_OK; i++)
        add_partners(cp, cs->wish[i], &rc);
    for (size_t u = 0; u < cp->used_n && rc == PS_OK; u++) {
        const cand *c = &cp->map[cp->used[u]];
        if (c->excluded || c->sum <= 0)
            continue;
        ps_copurchase_item it = {
            c->prod, c->sum * ps_funnels_product_p(cp->pipe, c->prod), false};
        keep_best(out, &k, n, it);
    }
    if (rc == PS_OK)
        k = fill_popular(cp, k, n, out);
    map_clear(cp);
    return rc < 0 ? rc : (long)k;
}

static void cop_write_customer_keys(void *self, const ps_entity *cust,
                                    void *state, ps_batch *b)
{
    copurchase *cp = self;
    cop_cust *cs = state;
    if (cs->changed_gen <= ps_pipeline_generation(cp->pipe))
        return; /* no event since the last successful flush */
    long k = reco(cp, cs, cp->reco_n, cp->best);
    if (k < 0)
        return; /* out of memory: the previous reco stays */
    if (cs->reco_written) {
        ps_batch_begin(b, "DEL");
        ps_batch_arg_key(b, "cust:", cust->id, ":reco");
        ps_batch_end(b);
    }
    /* (if this flush fails the flag may name a zset never written: the
     * next DEL is then a harmless no-op) */
    cs->reco_written = k > 0;
    if (k == 0)
        return;
    ps_batch_begin(b, "ZADD");
    ps_batch_arg_key(b, "cust:", cust->id, ":reco");
    for (long i = 0; i < k; i++) {
        /* round-trip digits: fill-up scores stay below s_min as read */
        ps_batch_arg_dbl(b, cp->best[i].score);
        ps_batch_arg_str(b, cp->best[i].product->id);
    }
    ps_batch_end(b);
}

/* --------------------------------------------------------- shared writes */

static void cop_write_shared_entity(void *self, const ps_entity *e,
                                    void *state, ps_batch *b)
{
    copurchase *cp = self;
    cop_prod *ps = state;
    char num[32];
    if (e->kind != PS_KIND_PRODUCT ||
        ps->changed_gen <= ps_pipeline_generation(cp->pipe))
        return;
    ps_wbuf_reset(&cp->scratch);
    for (uint32_t i = 0; i < ps->top_n; i++) {
        const also_entry *a = &ps->top[i];
        int len = snprintf(num, sizeof(num), "%" PRIu32 " %" PRIu32 ":",
                           view_of(a), a->prod->id.len);
        ps_wbuf_put(&cp->scratch, num, (size_t)len);
        ps_wbuf_put(&cp->scratch, a->prod->id.ptr, a->prod->id.len);
        ps_wbuf_u8(&cp->scratch, '\n');
    }
    if (cp->scratch.oom)
        return;
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "prod:", e->id, NULL);
    ps_batch_arg_cstr(b, SNAP_FIELD);
    ps_batch_arg(b, cp->scratch.data, cp->scratch.len);
    ps_batch_end(b);
}

/* ps:prod:{x}:also = the top N of ps:state:also:{x}. */
static void publish_top(copurchase *cp, const ps_entity *x, ps_batch *b)
{
    ps_batch_begin(b, "ZRANGESTORE");
    ps_batch_arg_key(b, "prod:", x->id, ":also");
    ps_batch_arg_key(b, "state:also:", x->id, NULL);
    ps_batch_arg_i64(b, 0);
    ps_batch_arg_i64(b, (int64_t)cp->also_n - 1);
    ps_batch_arg_cstr(b, "REV");
    ps_batch_end(b);
}

static void cop_write_shared(void *self, ps_batch *b)
{
    copurchase *cp = self;
    coalesce(cp);
    cp->pend_written = cp->pend_n;
    for (size_t i = 0; i < cp->pend_n; i++) {
        const pending *q = &cp->pend[i];
        if (q->d != 0) {
            ps_batch_begin(b, "ZINCRBY");
            ps_batch_arg_key(b, "state:also:", q->x->id, NULL);
            ps_batch_arg_i64(b, q->d);
            ps_batch_arg_str(b, q->y->id);
            ps_batch_end(b);
        }
        if (i + 1 == cp->pend_n || cp->pend[i + 1].x != q->x)
            publish_top(cp, q->x, b);
    }
}

static void cop_flushed(void *self)
{
    copurchase *cp = self;
    size_t w = cp->pend_written;
    if (w == 0)
        return;
    memmove(cp->pend, cp->pend + w, (cp->pend_n - w) * sizeof(*cp->pend));
    cp->pend_n -= w;
    cp->pend_written = 0;
}

static bool field_is(const char *field, size_t flen, const char *name)
{
    return flen == strlen(name) && memcmp(field, name, flen) == 0;
}

/* The base of x's purchase count: funnels' `purchases` counter of
 * ps:prod:{x} (the same field loaded twice gives the same result). */
static void load_purchases(copurchase *cp, ps_entity *x, cop_prod *ps,
                           const char *val, size_t vlen)
{
    int64_t v = 0;
    if (vlen == 0 || vlen > 18)
        return;
    for (size_t i = 0; i < vlen; i++) {
        if (val[i] < '0' || val[i] > '9')
            return;
        v = v * 10 + (val[i] - '0');
    }
    ps->bought_base = v;
    for (uint32_t i = 0; i < cp->pop_n; i++) {
        if (cp->pop[i].prod == x) { /* restored from saved state: refresh */
            pop_update(cp, x, bought_of(ps));
            break;
        }
    }
}

static void cop_load_shared_field(void *self, ps_entity *e, void *state,
                                  const char *field, size_t flen,
                                  const char *val, size_t vlen)
{
    copurchase *cp = self;
    cop_prod *ps = state;
    if (e->kind == PS_KIND_PRODUCT && field_is(field, flen, PURCHASES_FIELD)) {
        load_purchases(cp, e, ps, val, vlen);
        return;
    }
    if (e->kind != PS_KIND_PRODUCT || flen != strlen(SNAP_FIELD) ||
        memcmp(field, SNAP_FIELD, flen) != 0 || vlen == 0 ||
        vlen > UINT32_MAX)
        return;
    if (ps->top_cap > 0 || ps->snap != NULL)
        return; /* a refresh (pipeline.h): the ranking in memory stays */
    char *copy = malloc(vlen);
    if (copy == NULL || own_product(cp, e, ps) < 0) {
        free(copy); /* ranking state only: start without it */
        return;
    }
    memcpy(copy, val, vlen);
    free(ps->snap);
    ps->snap = copy;
    ps->snap_len = (uint32_t)vlen;
}

/* ----------------------------------------------------------- saved state */

static void put_ids(ps_wbuf *w, ps_entity *const *v, uint32_t n)
{
    ps_wbuf_u32(w, n);
    for (uint32_t i = 0; i < n; i++) {
        ps_wbuf_u32(w, v[i]->id.len);
        ps_wbuf_put(w, v[i]->id.ptr, v[i]->id.len);
    }
}

static void cop_save(void *self, const ps_entity *cust, const void *state,
                     ps_wbuf *w)
{
    const cop_cust *cs = state;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, COP_STATE_VERSION);
    put_ids(w, cs->buy, cs->n_buy);
    put_ids(w, cs->wish, cs->n_wish);
    ps_wbuf_u32(w, cs->wish_next);
    ps_wbuf_u8(w, (uint8_t)cs->reco_written);
}

/* Read n ids into a new array *out of exactly n entries. */
static int get_ids(copurchase *cp, ps_rbuf *r, ps_entity ***out,
                   uint32_t *n_out, uint32_t *cap_out)
{
    uint32_t n;
    if (ps_rbuf_u32(r, &n) < 0 || n > ps_rbuf_left(r) / 5)
        return PS_ERR_STATE; /* each id takes at least 5 bytes */
    if (n == 0)
        return PS_OK;
    *out = malloc((size_t)n * sizeof(**out));
    if (*out == NULL)
        return PS_ERR_NOMEM;
    *cap_out = n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len;
        if (ps_rbuf_u32(r, &len) < 0 || len == 0 || len > PS_ID_MAX ||
            ps_rbuf_left(r) < len)
            return PS_ERR_STATE;
        ps_entity *x = ps_pipeline_entity(
            cp->pipe, PS_KIND_PRODUCT, (ps_str){(const char *)r->p, len});
        if (x == NULL)
            return PS_ERR_NOMEM;
        r->p += len;
        (*out)[(*n_out)++] = x;
    }
    return PS_OK;
}

static int cop_load(void *self, ps_entity *cust, void *state, ps_rbuf *r)
{
    copurchase *cp = self;
    cop_cust *cs = state;
    uint8_t version, written;
    int rc;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version != COP_STATE_VERSION)
        return PS_ERR_STATE;
    /* the arrays are released by forget_customer if loading fails */
    if ((rc = get_ids(cp, r, &cs->buy, &cs->n_buy, &cs->cap_buy)) < 0 ||
        (rc = get_ids(cp, r, &cs->wish, &cs->n_wish, &cs->cap_wish)) < 0)
        return rc;
    if (ps_rbuf_u32(r, &cs->wish_next) < 0 || ps_rbuf_u8(r, &written) < 0 ||
        (cs->n_wish > 0 && cs->wish_next >= cs->n_wish) ||
        (cs->n_wish == 0 && cs->wish_next != 0))
        return PS_ERR_STATE;
    cs->reco_written = written != 0;
    return PS_OK;
}

static void cop_forget(void *self, ps_entity *cust, void *state)
{
    cop_cust *cs = state;
    (void)self;
    (void)cust;
    free(cs->buy);
    free(cs->wish);
    memset(cs, 0, sizeof(*cs));
}

/*
 * ps:state:agg:copurchase, the popular list (little-endian, buf.h):
 *   u8 version (1), u32 n, then n x { u32 len, id, i64 count },
 * most purchased first.
 */
static int cop_save_state(void *self, ps_wbuf *w)
{
    copurchase *cp = self;
    if (cp->pop_gen <= ps_pipeline_generation(cp->pipe))
        return 0;
    ps_wbuf_u8(w, POP_STATE_VERSION);
    ps_wbuf_u32(w, cp->pop_n);
    for (uint32_t i = 0; i < cp->pop_n; i++) {
        const pop_entry *q = &cp->pop[i];
        ps_wbuf_u32(w, q->prod->id.len);
        ps_wbuf_put(w, q->prod->id.ptr, q->prod->id.len);
        ps_wbuf_i64(w, q->count);
    }
    return 1;
}

/* Restores the list (entries beyond pop_cap, when reco_n is now smaller,
 * are dropped).  The products are created here; the run loop loads their
 * bases before the first event, which refreshes their counts. */
static int cop_load_state(void *self, const void *blob, size_t len)
{
    copurchase *cp = self;
    ps_rbuf r;
    uint8_t version;
    uint32_t n;
    ps_rbuf_init(&r, blob, len);
    if (ps_rbuf_u8(&r, &version) < 0 || version != POP_STATE_VERSION ||
        ps_rbuf_u32(&r, &n) < 0 || n > ps_rbuf_left(&r) / 13)
        return PS_ERR_STATE; /* each entry takes at least 13 bytes */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idlen;
        int64_t count;
        if (ps_rbuf_u32(&r, &idlen) < 0 || idlen == 0 || idlen > PS_ID_MAX ||
            ps_rbuf_left(&r) < (size_t)idlen + 8)
            return PS_ERR_STATE;
        ps_str id = {(const char *)r.p, idlen};
        r.p += idlen;
        if (ps_rbuf_i64(&r, &count) < 0 || count < 0)
            return PS_ERR_STATE;
        ps_entity *x = ps_pipeline_entity(cp->pipe, PS_KIND_PRODUCT, id);
        if (x == NULL)
            return PS_ERR_NOMEM;
        pop_update(cp, x, count);
    }
    if (ps_rbuf_left(&r) != 0)
        return PS_ERR_STATE;
    /* what was loaded is what Redis holds: no need to write it back */
    cp->pop_gen = 0;
    return PS_OK;
}

/* ------------------------------------------------------------- lifecycle */

static int cop_init(void **self, const ps_agg_env *env, char *errstr,
                    size_t errstr_size)
{
    const ps_agg_conf *conf = env->conf;
    int me = PS_AGG_INDEX_copurchase;
    copurchase *cp = calloc(1, sizeof(*cp));
    if (conf->also_top_n < 1 || conf->also_top_n > 100000 ||
        conf->copurchase_max_items < 1 ||
        conf->copurchase_max_items > 1000000 || conf->reco_n < 1 ||
        conf->reco_n > 100000) {
        free(cp);
        ps_set_err(errstr, errstr_size,
                   "copurchase: also_top_n, copurchase_max_items and reco_n "
                   "must be positive");
        return PS_ERR_CONFIG;
    }
    if (cp == NULL || me < 0)
        goto fail;
    cp->pipe = env->pipe;
    cp->me = (size_t)me;
    cp->also_n = (uint32_t)conf->also_top_n;
    cp->top_k = TOP_K_FACTOR * cp->also_n;
    cp->max_items = (uint32_t)conf->copurchase_max_items;
    cp->reco_n = (uint32_t)conf->reco_n;
    ps_wbuf_init(&cp->scratch);
    cp->best = calloc(cp->reco_n, sizeof(*cp->best));
    cp->pop_cap = POP_FACTOR * cp->reco_n;
    cp->pop = calloc(cp->pop_cap, sizeof(*cp->pop));
    if (cp->best == NULL || cp->pop == NULL)
        goto fail;
    *self = cp;
    return PS_OK;
fail:
    if (cp != NULL) {
        free(cp->best);
        free(cp->pop);
    }
    free(cp);
    ps_set_err(errstr, errstr_size, "copurchase: out of memory");
    return PS_ERR_NOMEM;
}

static void cop_destroy(void *self)
{
    copurchase *cp = self;
    if (cp == NULL)
        return;
    for (size_t i = 0; i < cp->owned_n; i++) {
        cop_prod *ps = prod_of(cp, cp->owned[i]);
        free(ps->top);
        free(ps->snap);
    }
    free(cp->owned);
    free(cp->pend);
    free(cp->map);
    free(cp->used);
    free(cp->best);
    free(cp->pop);
    ps_wbuf_clear(&cp->scratch);
    free(cp);
}

/* ------------------------------------------------------------- accessors */

static copurchase *self_of(ps_pipeline *p)
{
    int index = PS_AGG_INDEX_copurchase;
    return index < 0 ? NULL : ps_pipeline_agg_self(p, (size_t)index);
}

int64_t ps_copurchase_count(ps_pipeline *p, const ps_entity *x,
                            const ps_entity *y)
{
    copurchase *cp = self_of(p);
    int rc;
    if (cp == NULL || x == NULL || y == NULL || x->kind != PS_KIND_PRODUCT)
        return 0;
    cop_prod *ps = table_of(cp, (ps_entity *)x, &rc);
    const also_entry *e = find_entry(ps, y);
    return e ? view_of(e) : 0;
}

long ps_copurchase_reco(ps_pipeline *p, const ps_entity *cust, size_t n,
                        ps_copurchase_item *out)
{
    copurchase *cp = self_of(p);
    if (cp == NULL || cust == NULL || cust->kind != PS_KIND_CUSTOMER)
        return 0;
    return reco(cp, ps_pipeline_slice(p, cust, cp->me), n, out);
}

const ps_aggregate_ops ps_agg_copurchase = {
    .name = "copurchase",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(cop_cust),
                   [PS_KIND_PRODUCT] = sizeof(cop_prod)},
    .init = cop_init,
    .destroy = cop_destroy,
    .apply = cop_apply,
    .write_customer_keys = cop_write_customer_keys,
    .write_shared_entity = cop_write_shared_entity,
    .write_shared = cop_write_shared,
    .flushed = cop_flushed,
    .save_customer = cop_save,
    .load_customer = cop_load,
    .forget_customer = cop_forget,
    .save_state = cop_save_state,
    .load_state = cop_load_state,
    .load_shared_field = cop_load_shared_field,
};
