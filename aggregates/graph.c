/*
 * graph.c -- the behaviour graph: customer -> product edges per action,
 * product step probabilities and the reverse path of every successful
 * funnel (contract section 2, "Behaviour graph").
 *
 * Edges.  One edge per (customer, product) pair that has a CLICK,
 * WISHLIST or PURCHASE: per action a count and the latest event time.
 * Edges live in one pool of fixed chunks of 4096 (a chunk is added when
 * the pool is full and the free list empty; nothing is moved or freed
 * before destroy), so an event allocates nothing once the pool has grown,
 * and at most one chunk is unused.  They are found through an
 * open-addressing hash index (linear probing, backward-shift deletion, at
 * most 70 % full) of 32-bit pool positions keyed by (customer number,
 * product number): small numbers this aggregate gives each customer and
 * product it sees, so an edge names its ends in 8 bytes instead of two
 * pointers.  An edge is 48 bytes; with the index (5.7 to 11.4 bytes an
 * edge) and the directories that is 54 to 62 bytes of memory per edge on a
 * large graph (ps_graph_bytes_per_edge; 61.9 measured on 50,000 edges in
 * tests/unit/test_graph.c).  A customer's edges are also chained from its
 * slice (singly linked), for save, forget and eviction.
 *
 * Bound.  When the pool holds graph_max_edges edges (<= 0: no bound) and a
 * new one is needed, one is evicted first by the CLOCK algorithm (Corbato
 * 1968; second-chance approximation of least-recently-used): a hand sweeps
 * the pool, an edge touched since the hand last passed has its reference
 * bit cleared and is spared, the first one not touched is evicted.  Edges
 * of the customer whose event is being applied (or loaded) are never
 * evicted, unless it owns every edge.  Unlinking an evicted edge walks its
 * customer's chain, usually short for an inactive customer.  Product
 * totals are separate counters in the product's slice, so eviction never
 * changes them; an evicted edge is lost from memory and from the
 * customer's saved state (a later event of the pair starts a new one).
 *
 * Step probabilities and counts: see graph.h.  They are derived from the
 * funnels aggregate's counters (funnels.h), the single source of truth
 * for episodes, so graph does not repeat funnels' bookkeeping.
 *
 * Reverse paths.  funnels (earlier in aggregates.def) closes a funnel as a
 * success while applying a PURCHASE (or, for a late CLICK/WISHLIST, turns
 * an earlier direct purchase into one); its product counters successes_c /
 * _w / _cw rise by one then, and only then, in the unflushed part.  So
 * after every event of a product this aggregate compares that part with
 * what it has already attributed (prod_graph.succ_seen, reset when the
 * flush succeeds, as funnels' part is): a rise is a successful funnel of
 * this event's customer and product, of that path.  For path cw the order
 * of click and wishlist is the one funnels recorded (first action), cached
 * on the edge after each CLICK/WISHLIST; if the edge was evicted
 * meanwhile the order is guessed from the edge's times (click first when
 * unknown).  Each success is
 *   - XADDed to ps:paths (MAXLEN ~ stream_maxlen): customer, product,
 *     path ("click>wishlist>purchase", ...), steps (the product's step
 *     probabilities along it, comma-separated, as of this success), p
 *     (their product), ts (event time of the closing event);
 *   - kept as last_path / last_path_p of ps:cust:{id};
 *   - counted in path_{path} of ps:segment:{k} (the customer's segment,
 *     when it has one: segments.h) and of ps:global, as HINCRBY deltas.
 * The stream entries wait in a batch until a flush succeeds and are sent
 * with every flush until then (like funnels' triggers), so each success
 * yields exactly one entry, in the same transaction as the state that
 * records it.
 *
 * Saved customer state: last path, and every edge (product id, counts,
 * times, cached funnel order).  forget_customer releases the edges.
 */
#include "graph.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funnels.h"
#include "kmeans.h"
#include "pipeline.h"
#include "segments.h"
#include "../common/error.h"

#define GRAPH_STATE_VERSION 1
#define MAX_EDGES_LIMIT ((1u << 28) - 1) /* edge.next is 28 bits */
#define N_ACTIONS 3

/* Reverse paths, in the order of path_names. */
enum { P_CLICK, P_CLICK_WISH, P_WISH, P_WISH_CLICK, P_COUNT };
static const char *const path_names[P_COUNT] = {
    "click>purchase", "click>wishlist>purchase", "wishlist>purchase",
    "wishlist>click>purchase"};
static const char *const path_fields[P_COUNT] = {
    "path_click>purchase", "path_click>wishlist>purchase",
    "path_wishlist>purchase", "path_wishlist>click>purchase"};
static const char *const action_fields[N_ACTIONS] = {"clicks", "wishlists",
                                                     "purchases"};

/* ---------------------------------------------------------------- state */

typedef struct edge {
    int64_t last_ts[N_ACTIONS];
    uint32_t count[N_ACTIONS];
    uint32_t cust;              /* customer number */
    uint32_t prod;              /* product number */
    uint32_t next : 28;         /* next edge of the customer, or of the free
                                   list (pool index + 1; 0 = none) */
    uint32_t in_use : 1;
    uint32_t ref : 1;           /* touched since the clock hand passed */
    uint32_t order_known : 1;   /* click_first holds the open funnel's */
    uint32_t click_first : 1;
} edge;

_Static_assert(sizeof(edge) == 48, "edge layout");

typedef struct cust_graph {
    uint32_t head;    /* first edge (pool index + 1), 0 = none */
    uint32_t n_edges;
    uint32_t num;     /* customer number + 1, 0 = none yet */
    uint32_t last_path; /* P_* + 1, 0 = none */
    double last_path_p;
} cust_graph;

typedef struct prod_graph {
    uint32_t num; /* product number + 1, 0 = none yet */
    uint32_t reserved;
    int64_t base[N_ACTIONS], delta[N_ACTIONS]; /* event totals */
    int64_t succ_seen[3]; /* funnels' unflushed successes per path already
                             turned into reverse paths */
} prod_graph;

/* Segment and global: path counts since the last successful flush. */
typedef struct path_counts {
    int64_t delta[P_COUNT];
} path_counts;

typedef struct graph {
    ps_agg_conf conf;
    ps_pipeline *pipe;
    size_t me;
    ps_entity *global;

    edge **chunks; /* the pool: CHUNK edges each */
    uint32_t n_chunks, chunks_cap;
    uint32_t pool_n, pool_cap, free_head; /* free_head: index + 1 */
    uint32_t max_edges;                   /* 0 = no bound */
    uint32_t n_edges, hand;

    uint32_t *index; /* pool index + 1, 0 = empty */
    size_t index_cap;

    ps_entity **custs; /* by customer number */
    uint32_t custs_n, custs_cap;
    uint32_t *cust_free, cust_free_n, cust_free_cap; /* free numbers */
    ps_entity **prods; /* by product number */
    uint32_t prods_n, prods_cap;

    uint32_t current;  /* number + 1 of the customer being applied/loaded */

    ps_entity *segments[PS_KMEANS_MAX_K];
    ps_batch *paths; /* pending XADDs, cleared when flushed */
} graph;

#define CHUNK_BITS 12
#define CHUNK (1u << CHUNK_BITS)

/* Edge at pool index ix1 - 1. */
static edge *E(const graph *g, uint32_t ix1)
{
    uint32_t i = ix1 - 1;
    return &g->chunks[i >> CHUNK_BITS][i & (CHUNK - 1)];
}

static cust_graph *cust_of(graph *g, const ps_entity *cust)
{
    return ps_pipeline_slice(g->pipe, cust, g->me);
}

static int action_of(ps_event_type t)
{
    return t == PS_CLICK ? 0 : t == PS_WISHLIST ? 1 : t == PS_PURCHASE ? 2 : -1;
}

static double flat_mean(int64_t k, int64_t n)
{
    return ((double)k + 1.0) / ((double)n + 2.0);
}

static int grow(void **v, uint32_t *cap, size_t elem, uint32_t want)
{
    if (want <= *cap)
        return PS_OK;
    uint32_t c = *cap ? *cap : 64;
    while (c < want)
        c *= 2;
    void *nv = realloc(*v, (size_t)c * elem);
    if (nv == NULL)
        return PS_ERR_NOMEM;
    *v = nv;
    *cap = c;
    return PS_OK;
}

/* ----------------------------------------------------- numbers of nodes */

static int cust_number(graph *g, ps_entity *cust, cust_graph *cg)
{
    if (cg->num != 0)
        return PS_OK;
    uint32_t n;
    if (g->cust_free_n > 0) {
        n = g->cust_free[--g->cust_free_n];
    } else {
        if (grow((void **)&g->custs, &g->custs_cap, sizeof(*g->custs),
                 g->custs_n + 1) < 0)
            return PS_ERR_NOMEM;
        n = g->custs_n++;
    }
    g->custs[n] = cust;
    cg->num = n + 1;
    return PS_OK;
}

static int cust_release(graph *g, cust_graph *cg)
{
    if (cg->num == 0)
        return PS_OK;
    if (grow((void **)&g->cust_free, &g->cust_free_cap,
             sizeof(*g->cust_free), g->cust_free_n + 1) < 0)
        return PS_ERR_NOMEM; /* the number is lost, nothing else */
    g->custs[cg->num - 1] = NULL;
    g->cust_free[g->cust_free_n++] = cg->num - 1;
    cg->num = 0;
    return PS_OK;
}

static int prod_number(graph *g, ps_entity *prod, prod_graph *pg)
{
    if (pg->num != 0)
        return PS_OK;
    if (grow((void **)&g->prods, &g->prods_cap, sizeof(*g->prods),
             g->prods_n + 1) < 0)
        return PS_ERR_NOMEM;
    g->prods[g->prods_n] = prod;
    pg->num = ++g->prods_n;
    return PS_OK;
}

/* ------------------------------------------------------------- the index */

static size_t slot_of(const graph *g, uint32_t cust, uint32_t prod)
{
    uint64_t h = ((uint64_t)cust << 32 | prod) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & (g->index_cap - 1);
}

/* Position in the index of edge (cust, prod), or of the empty slot where
 * it would go. */
static size_t index_probe(const graph *g, uint32_t cust, uint32_t prod)
{
    size_t i = slot_of(g, cust, prod);
    while (g->index[i] != 0) {
        const edge *e = E(g, g->index[i]);
        if (e->cust == cust && e->prod == prod)
            break;
        i = (i + 1) & (g->index_cap - 1);
    }
    return i;
}

static int index_reserve(graph *g, size_t n)
{
    if (g->index_cap != 0 && n * 10 <= g->index_cap * 7)
        return PS_OK;
    size_t cap = g->index_cap ? g->index_cap * 2 : 1024;
    while (n * 10 > cap * 7)
        cap *= 2;
    uint32_t *old = g->index;
    size_t old_cap = g->index_cap;
    g->index = calloc(cap, sizeof(*g->index));
    if (g->index == NULL) {
        g->index = old;
        return PS_ERR_NOMEM;
    }
    g->index_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != 0) {
            const edge *e = E(g, old[i]);
            g->index[index_probe(g, e->cust, e->prod)] = old[i];
        }
    free(old);
    return PS_OK;
}

/* Remove the entry at position i (backward-shift deletion: no tombstones,
 * probe sequences stay as if the entry had never been there). */
static void index_delete(graph *g, size_t i)
{
    size_t mask = g->index_cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (g->index[j] == 0)
            break;
        const edge *e = E(g, g->index[j]);
        size_t home = slot_of(g, e->cust, e->prod);
        /* leave it when its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j)
                            : (home > i || home <= j);
        if (!stays) {
            g->index[i] = g->index[j];
            i = j;
        }
    }
    g->index[i] = 0;
}

/* ---------------------------------------------------------- edge pool */

/* Unlink edge ix1 from its customer, the index and the pool. */
static void edge_drop(graph *g, uint32_t ix1)
{
    edge *e = E(g, ix1);
    ps_entity *cust = g->custs[e->cust];
    cust_graph *cg = cust_of(g, cust);
    /* walk the chain (next is a bit-field: keep a position, not a pointer) */
    uint32_t prev = 0, cur = cg->head;
    while (cur != 0 && cur != ix1) {
        prev = cur;
        cur = E(g, cur)->next;
    }
    if (cur == ix1) {
        if (prev == 0)
            cg->head = e->next;
        else
            E(g, prev)->next = e->next;
        cg->n_edges--;
    }
    size_t pos = index_probe(g, e->cust, e->prod);
    if (g->index[pos] == ix1)
        index_delete(g, pos);
    memset(e, 0, sizeof(*e));
    e->next = g->free_head;
    g->free_head = ix1;
    g->n_edges--;
}

/* CLOCK: evict one edge not of the current customer (any, if the current
 * customer owns them all). */
static void evict_one(graph *g)
{
    uint32_t n = g->pool_n;
    for (uint64_t step = 0; step < 2 * (uint64_t)n + 1; step++) {
        uint32_t i = g->hand;
        g->hand = (g->hand + 1) % n;
        edge *e = E(g, i + 1);
        if (!e->in_use || e->cust + 1 == g->current)
            continue;
        if (e->ref) {
            e->ref = 0;
            continue;
        }
        edge_drop(g, i + 1);
        return;
    }
    for (uint32_t k = 0; k < n; k++) { /* one customer holds every edge */
        uint32_t i = (g->hand + k) % n;
        if (E(g, i + 1)->in_use) {
            g->hand = (i + 1) % n;
            edge_drop(g, i + 1);
            return;
        }
    }
}

static uint32_t edge_alloc(graph *g)
{
    if (g->max_edges != 0 && g->n_edges >= g->max_edges && g->n_edges > 0)
        evict_one(g);
    if (index_reserve(g, (size_t)g->n_edges + 1) < 0)
        return 0;
    uint32_t ix1;
    if (g->free_head != 0) {
        ix1 = g->free_head;
        g->free_head = E(g, ix1)->next;
    } else {
        if (g->pool_n == g->pool_cap) { /* one more chunk */
            if (g->pool_cap >= MAX_EDGES_LIMIT - CHUNK ||
                grow((void **)&g->chunks, &g->chunks_cap, sizeof(edge *),
                     g->n_chunks + 1) < 0)
                return 0;
            edge *c = malloc(CHUNK * sizeof(edge));
            if (c == NULL)
                return 0;
            g->chunks[g->n_chunks++] = c;
            g->pool_cap += CHUNK;
        }
        ix1 = ++g->pool_n;
    }
    memset(E(g, ix1), 0, sizeof(edge));
    E(g, ix1)->in_use = 1;
    g->n_edges++;
    return ix1;
}

/* The edge cust -> prod, created when missing; 0 on OOM. */
static uint32_t edge_get(graph *g, cust_graph *cg, prod_graph *pg)
{
    uint32_t c = cg->num - 1, p = pg->num - 1;
    if (g->index_cap != 0) {
        size_t pos = index_probe(g, c, p);
        if (g->index[pos] != 0)
            return g->index[pos];
    }
    uint32_t ix1 = edge_alloc(g);
    if (ix1 == 0)
        return 0;
    edge *e = E(g, ix1);
    e->cust = c;
    e->prod = p;
    e->next = cg->head;
    cg->head = ix1;
    cg->n_edges++;
    g->index[index_probe(g, c, p)] = ix1;
    return ix1;
}

/* ----------------------------------------------------------------- steps */

static void steps_from(const ps_funnel_counts *t, ps_graph_steps *s)
{
    s->click_first = t->click_first;
    s->wishlist_after_click = t->wishlist_after_click;
    s->purchase_click_only = t->successes[0];
    s->both = t->trials[2];
    s->purchase_both = t->successes[2];
    s->click_after_wishlist = t->trials[2] - t->wishlist_after_click;
    s->wishlist_first = t->trials[1] + s->click_after_wishlist;
    s->purchase_wishlist_first = t->successes[1];
    s->p_wishlist_after_click =
        flat_mean(s->wishlist_after_click, s->click_first);
    s->p_purchase_click_only = flat_mean(s->purchase_click_only,
                                         s->click_first);
    s->p_click_after_wishlist =
        flat_mean(s->click_after_wishlist, s->wishlist_first);
    s->p_purchase_wishlist_first =
        flat_mean(s->purchase_wishlist_first, s->wishlist_first);
    s->p_purchase_click_wishlist = flat_mean(s->purchase_both, s->both);
}

void ps_graph_steps_of(ps_pipeline *p, const ps_entity *prod,
                       ps_graph_steps *out)
{
    ps_funnel_counts t;
    ps_funnels_product_counts(p, prod, &t, NULL);
    steps_from(&t, out);
}

/* The step probabilities along path x; returns how many (1 or 2). */
static int path_steps(const ps_graph_steps *s, int x, double v[2])
{
    switch (x) {
    case P_CLICK:
        v[0] = s->p_purchase_click_only;
        return 1;
    case P_CLICK_WISH:
        v[0] = s->p_wishlist_after_click;
        v[1] = s->p_purchase_click_wishlist;
        return 2;
    case P_WISH:
        v[0] = s->p_purchase_wishlist_first;
        return 1;
    default:
        v[0] = s->p_click_after_wishlist;
        v[1] = s->p_purchase_click_wishlist;
        return 2;
    }
}

/* ------------------------------------------------------- reverse paths */

static ps_entity *segment_entity(graph *g, const ps_entity *cust)
{
    int seg = ps_segments_of(g->pipe, cust);
    if (seg < 0 || seg >= PS_KMEANS_MAX_K)
        return NULL;
    if (g->segments[seg] == NULL) { /* entities live as long as the pipe */
        char id[16];
        snprintf(id, sizeof(id), "%d", seg);
        g->segments[seg] = ps_pipeline_entity(
            g->pipe, PS_KIND_SEGMENT, (ps_str){id, (uint32_t)strlen(id)});
    }
    return g->segments[seg];
}

static int record_path(graph *g, const ps_event *ev, ps_entity *cust,
                       cust_graph *cg, ps_entity *prod, int x)
{
    ps_graph_steps s;
    double v[2], prob = 1.0;
    char steps[64];
    size_t used = 0;

    ps_graph_steps_of(g->pipe, prod, &s);
    int n = path_steps(&s, x, v);
    for (int i = 0; i < n; i++) {
        prob *= v[i];
        used += (size_t)snprintf(steps + used, sizeof(steps) - used, "%s%.10g",
                                 i ? "," : "", v[i]);
    }

    ps_batch *b = g->paths;
    ps_batch_begin(b, "XADD");
    ps_batch_arg_key(b, "paths", (ps_str){"", 0}, NULL);
    ps_batch_arg_cstr(b, "MAXLEN");
    ps_batch_arg_cstr(b, "~");
    ps_batch_arg_i64(b, g->conf.stream_maxlen);
    ps_batch_arg_cstr(b, "*");
    ps_batch_arg_cstr(b, "customer");
    ps_batch_arg_str(b, cust->id);
    ps_batch_arg_cstr(b, "product");
    ps_batch_arg_str(b, prod->id);
    ps_batch_arg_cstr(b, "path");
    ps_batch_arg_cstr(b, path_names[x]);
    ps_batch_arg_cstr(b, "steps");
    ps_batch_arg_cstr(b, steps);
    ps_batch_arg_cstr(b, "p");
    ps_batch_arg_real(b, prob);
    ps_batch_arg_cstr(b, "ts");
    ps_batch_arg_i64(b, ev->ts);
    ps_batch_end(b);
    if (ps_batch_error(b) < 0)
        return PS_ERR_NOMEM;

    cg->last_path = (uint32_t)x + 1;
    cg->last_path_p = prob;

    path_counts *gc = ps_pipeline_slice(g->pipe, g->global, g->me);
    gc->delta[x]++;
    if (ps_pipeline_touch(g->pipe, g->global) < 0)
        return PS_ERR_NOMEM;
    ps_entity *seg = segment_entity(g, cust);
    if (seg != NULL) {
        path_counts *sc = ps_pipeline_slice(g->pipe, seg, g->me);
        sc->delta[x]++;
        if (ps_pipeline_touch(g->pipe, seg) < 0)
            return PS_ERR_NOMEM;
    }
    return PS_OK;
}

/* Turn the successes funnels counted for this event into reverse paths. */
static int find_successes(graph *g, const ps_event *ev, ps_entity *cust,
                          cust_graph *cg, ps_entity *prod, prod_graph *pg,
                          uint32_t ix1)
{
    ps_funnel_counts un;
    if (!ps_funnels_product_counts(g->pipe, prod, NULL, &un))
        return PS_OK;
    for (int x = 0; x < 3; x++) {
        int64_t rise = un.successes[x] - pg->succ_seen[x];
        pg->succ_seen[x] = un.successes[x];
        for (int64_t k = 0; k < rise; k++) {
            int path;
            if (x == 0) {
                path = P_CLICK;
            } else if (x == 1) {
                path = P_WISH;
            } else {
                bool click_first = true;
                if (ix1 != 0 && E(g, ix1)->order_known)
                    click_first = E(g, ix1)->click_first;
                else if (ix1 != 0 && E(g, ix1)->count[0] &&
                         E(g, ix1)->count[1])
                    click_first = E(g, ix1)->last_ts[0] <=
                                  E(g, ix1)->last_ts[1];
                path = click_first ? P_CLICK_WISH : P_WISH_CLICK;
            }
            int rc = record_path(g, ev, cust, cg, prod, path);
            if (rc < 0)
                return rc;
        }
    }
    if (ix1 != 0 && ev->type == PS_PURCHASE)
        E(g, ix1)->order_known = 0; /* the episode, if any, is over */
    return PS_OK;
}

/* ------------------------------------------------------------ lifecycle */

static int graph_init(void **self, const ps_agg_env *env, char *errstr,
                      size_t errstr_size)
{
    graph *g = calloc(1, sizeof(*g));
    int me = PS_AGG_INDEX_graph;
    if (g == NULL || me < 0)
        goto fail;
    g->conf = *env->conf;
    g->pipe = env->pipe;
    g->me = (size_t)me;
    if (env->conf->graph_max_edges > 0)
        g->max_edges = env->conf->graph_max_edges > MAX_EDGES_LIMIT
                           ? MAX_EDGES_LIMIT
                           : (uint32_t)env->conf->graph_max_edges;
    g->global = ps_pipeline_find(g->pipe, PS_KIND_GLOBAL, (ps_str){"", 0});
    g->paths = ps_batch_new(env->conf->prefix);
    if (g->global == NULL || g->paths == NULL)
        goto fail;
    *self = g;
    return PS_OK;
fail:
    if (g != NULL)
        ps_batch_destroy(g->paths);
    free(g);
    ps_set_err(errstr, errstr_size, "graph: out of memory");
    return PS_ERR_NOMEM;
}

static void graph_destroy(void *self)
{
    graph *g = self;
    if (g == NULL)
        return;
    for (uint32_t i = 0; i < g->n_chunks; i++)
        free(g->chunks[i]);
    free(g->chunks);
    free(g->index);
    free(g->custs);
    free(g->cust_free);
    free(g->prods);
    ps_batch_destroy(g->paths);
    free(g);
}

/* ---------------------------------------------------------------- apply */

static int graph_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    graph *g = self;
    cust_graph *cg = ctx->cust_state;
    prod_graph *pg = ctx->product_state;
    int a = action_of(ev->type);
    if (a < 0 || ctx->product == NULL)
        return PS_OK;

    if (cust_number(g, ctx->cust, cg) < 0 ||
        prod_number(g, ctx->product, pg) < 0)
        return PS_ERR_NOMEM;
    pg->delta[a]++;

    g->current = cg->num;
    uint32_t ix1 = edge_get(g, cg, pg);
    g->current = 0;
    if (ix1 == 0)
        return PS_ERR_NOMEM;
    edge *e = E(g, ix1);
    if (e->count[a] < UINT32_MAX)
        e->count[a]++;
    if (ev->ts > e->last_ts[a])
        e->last_ts[a] = ev->ts;
    e->ref = 1;
    if (a != 2) {
        ps_funnel_open fo;
        if (ps_funnels_open_of(g->pipe, ctx->cust, ctx->product, &fo)) {
            e->order_known = 1;
            e->click_first = fo.click_first;
        }
    }
    return find_successes(g, ev, ctx->cust, cg, ctx->product, pg, ix1);
}

/* --------------------------------------------------------------- writes */

static void graph_write_customer(void *self, const ps_entity *cust,
                                 const void *state, ps_batch *b)
{
    const cust_graph *cg = state;
    (void)self;
    (void)cust;
    if (cg->last_path == 0)
        return;
    ps_batch_arg_cstr(b, "last_path");
    ps_batch_arg_cstr(b, path_names[cg->last_path - 1]);
    ps_batch_arg_cstr(b, "last_path_p");
    ps_batch_arg_real(b, cg->last_path_p);
}

static void hincrby(ps_batch *b, const ps_entity *e, const char *field,
                    int64_t by)
{
    if (by == 0)
        return;
    ps_batch_begin(b, "HINCRBY");
    ps_batch_arg_key(b, ps_kind_key((ps_kind)e->kind), e->id, NULL);
    ps_batch_arg_cstr(b, field);
    ps_batch_arg_i64(b, by);
    ps_batch_end(b);
}

static void field_real(ps_batch *b, const char *name, double v)
{
    ps_batch_arg_cstr(b, name);
    ps_batch_arg_real(b, v);
}

static void write_product(graph *g, const ps_entity *e, ps_batch *b)
{
    ps_funnel_counts total, un;
    ps_graph_steps s, ds;
    if (!ps_funnels_product_counts(g->pipe, e, &total, &un))
        return;
    steps_from(&un, &ds); /* the counts are linear: deltas of deltas */
    hincrby(b, e, "funnels_wishlist_first", ds.wishlist_first);
    hincrby(b, e, "click_after_wishlist", ds.click_after_wishlist);
    steps_from(&total, &s);
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "prod:", e->id, NULL);
    /* p_wishlist_after_click: written by funnels.c (same counters) */
    field_real(b, "p_purchase_click_only", s.p_purchase_click_only);
    field_real(b, "p_click_after_wishlist", s.p_click_after_wishlist);
    field_real(b, "p_purchase_wishlist_first", s.p_purchase_wishlist_first);
    field_real(b, "p_purchase_click_wishlist", s.p_purchase_click_wishlist);
    ps_batch_end(b);
}

static void graph_write_shared_entity(void *self, const ps_entity *e,
                                      void *state, ps_batch *b)
{
    graph *g = self;
    if (e->kind == PS_KIND_PRODUCT) {
        write_product(g, e, b);
        return;
    }
    if (e->kind != PS_KIND_SEGMENT && e->kind != PS_KIND_GLOBAL)
        return;
    const path_counts *pc = state;
    for (int x = 0; x < P_COUNT; x++)
        hincrby(b, e, path_fields[x], pc->delta[x]);
}

static void graph_flushed_shared_entity(void *self, const ps_entity *e,
                                        void *state)
{
    (void)self;
    if (e->kind == PS_KIND_PRODUCT) {
        prod_graph *pg = state;
        for (int a = 0; a < N_ACTIONS; a++) {
            pg->base[a] += pg->delta[a];
            pg->delta[a] = 0;
        }
        /* funnels' unflushed part drops to zero in the same flush */
        memset(pg->succ_seen, 0, sizeof(pg->succ_seen));
    } else if (e->kind == PS_KIND_SEGMENT || e->kind == PS_KIND_GLOBAL) {
        memset(state, 0, sizeof(path_counts));
    }
}

static void graph_load_shared_field(void *self, ps_entity *e, void *state,
                                    const char *field, size_t flen,
                                    const char *val, size_t vlen)
{
    char num[32];
    (void)self;
    if (e->kind != PS_KIND_PRODUCT || vlen >= sizeof(num))
        return;
    prod_graph *pg = state;
    for (int a = 0; a < N_ACTIONS; a++) {
        if (strlen(action_fields[a]) == flen &&
            memcmp(action_fields[a], field, flen) == 0) {
            memcpy(num, val, vlen);
            num[vlen] = '\0';
            pg->base[a] = strtoll(num, NULL, 10);
        }
    }
}

static void graph_write_shared(void *self, ps_batch *b)
{
    graph *g = self;
    const char *argv[32];
    size_t lens[32];
    for (size_t i = 0; i < ps_batch_count(g->paths); i++) {
        size_t argc = ps_batch_argc(g->paths, i);
        if (argc > 32)
            continue;
        ps_batch_argv(g->paths, i, argv, lens);
        ps_batch_begin(b, argv[0]);
        for (size_t k = 1; k < argc; k++)
            ps_batch_arg(b, argv[k], lens[k]);
        ps_batch_end(b);
    }
}

static void graph_flushed(void *self)
{
    graph *g = self;
    ps_batch_clear(g->paths);
}

/* ---------------------------------------------------------- saved state */

static void graph_save(void *self, const ps_entity *cust, const void *state,
                       ps_wbuf *w)
{
    graph *g = self;
    const cust_graph *cg = state;
    (void)cust;
    ps_wbuf_u8(w, GRAPH_STATE_VERSION);
    ps_wbuf_u8(w, (uint8_t)cg->last_path);
    ps_wbuf_f64(w, cg->last_path_p);
    ps_wbuf_u32(w, cg->n_edges);
    for (uint32_t ix1 = cg->head; ix1 != 0; ix1 = E(g, ix1)->next) {
        const edge *e = E(g, ix1);
        ps_str id = g->prods[e->prod]->id;
        ps_wbuf_u32(w, id.len);
        ps_wbuf_put(w, id.ptr, id.len);
        for (int a = 0; a < N_ACTIONS; a++) {
            ps_wbuf_u32(w, e->count[a]);
            ps_wbuf_i64(w, e->last_ts[a]);
        }
        ps_wbuf_u8(w, (uint8_t)(e->order_known | e->click_first << 1));
    }
}

static int graph_load(void *self, ps_entity *cust, void *state, ps_rbuf *r)
{
    graph *g = self;
    cust_graph *cg = state;
    uint8_t version, last_path;
    uint32_t n;

    if (ps_rbuf_u8(r, &version) < 0 || version != GRAPH_STATE_VERSION ||
        ps_rbuf_u8(r, &last_path) < 0 || last_path > P_COUNT ||
        ps_rbuf_f64(r, &cg->last_path_p) < 0 || ps_rbuf_u32(r, &n) < 0)
        return PS_ERR_STATE;
    cg->last_path = last_path;
    if (n > 0 && cust_number(g, cust, cg) < 0)
        return PS_ERR_NOMEM;
    g->current = cg->num;
    int rc = PS_OK;
    for (uint32_t i = 0; i < n && rc == PS_OK; i++) {
        uint32_t len;
        uint8_t flags;
        edge tmp;
        if (ps_rbuf_u32(r, &len) < 0 || len == 0 || len > PS_ID_MAX ||
            ps_rbuf_left(r) < len) {
            rc = PS_ERR_STATE;
            break;
        }
        ps_str id = {(const char *)r->p, len};
        r->p += len;
        for (int a = 0; a < N_ACTIONS; a++) {
            ps_rbuf_u32(r, &tmp.count[a]);
            ps_rbuf_i64(r, &tmp.last_ts[a]);
        }
        if (ps_rbuf_u8(r, &flags) < 0 || r->err) {
            rc = PS_ERR_STATE;
            break;
        }
        ps_entity *prod = ps_pipeline_entity(g->pipe, PS_KIND_PRODUCT, id);
        if (prod == NULL) {
            rc = PS_ERR_NOMEM;
            break;
        }
        prod_graph *pg = ps_pipeline_slice(g->pipe, prod, g->me);
        if (prod_number(g, prod, pg) < 0) {
            rc = PS_ERR_NOMEM;
            break;
        }
        uint32_t ix1 = edge_get(g, cg, pg);
        if (ix1 == 0) {
            rc = PS_ERR_NOMEM;
            break;
        }
        edge *e = E(g, ix1);
        memcpy(e->count, tmp.count, sizeof(e->count));
        memcpy(e->last_ts, tmp.last_ts, sizeof(e->last_ts));
        e->order_known = flags & 1;
        e->click_first = (flags >> 1) & 1;
    }
    g->current = 0;
    /* edge_get pushes at the head: restore the saved order */
    uint32_t rev = 0, cur = cg->head;
    while (cur != 0) {
        uint32_t next = E(g, cur)->next;
        E(g, cur)->next = rev;
        rev = cur;
        cur = next;
    }
    cg->head = rev;
    return rc;
}

static void graph_forget(void *self, ps_entity *cust, void *state)
{
    graph *g = self;
    cust_graph *cg = state;
    (void)cust;
    while (cg->head != 0)
        edge_drop(g, cg->head);
    cust_release(g, cg);
}

/* ------------------------------------------------------------ accessors */

static graph *graph_self(ps_pipeline *p)
{
    int index = PS_AGG_INDEX_graph;
    return index < 0 ? NULL : ps_pipeline_agg_self(p, (size_t)index);
}

bool ps_graph_edge_of(ps_pipeline *p, const ps_entity *cust,
                      const ps_entity *prod, ps_graph_edge *out)
{
    graph *g = graph_self(p);
    if (g == NULL || g->index_cap == 0)
        return false;
    const cust_graph *cg = ps_pipeline_slice(p, cust, g->me);
    const prod_graph *pg = ps_pipeline_slice(p, prod, g->me);
    if (cg->num == 0 || pg->num == 0)
        return false;
    size_t pos = index_probe(g, cg->num - 1, pg->num - 1);
    if (g->index[pos] == 0)
        return false;
    const edge *e = E(g, g->index[pos]);
    for (int a = 0; a < N_ACTIONS; a++) {
        out->count[a] = e->count[a];
        out->last_ts[a] = e->last_ts[a];
    }
    return true;
}

void ps_graph_product_totals(ps_pipeline *p, const ps_entity *prod,
                             int64_t out[3])
{
    graph *g = graph_self(p);
    for (int a = 0; a < N_ACTIONS; a++)
        out[a] = 0;
    if (g == NULL)
        return;
    const prod_graph *pg = ps_pipeline_slice(p, prod, g->me);
    for (int a = 0; a < N_ACTIONS; a++)
        out[a] = pg->base[a] + pg->delta[a];
}

size_t ps_graph_edge_count(ps_pipeline *p)
{
    graph *g = graph_self(p);
    return g ? g->n_edges : 0;
}

double ps_graph_bytes_per_edge(ps_pipeline *p)
{
    graph *g = graph_self(p);
    if (g == NULL || g->n_edges == 0)
        return 0;
    double bytes = (double)g->pool_cap * sizeof(edge) +
                   (double)g->index_cap * sizeof(uint32_t) +
                   (double)g->chunks_cap * sizeof(edge *) +
                   (double)g->custs_cap * sizeof(ps_entity *) +
                   (double)g->cust_free_cap * sizeof(uint32_t) +
                   (double)g->prods_cap * sizeof(ps_entity *);
    return bytes / (double)g->n_edges;
}

const ps_aggregate_ops ps_agg_graph = {
    .name = "graph",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(cust_graph),
                   [PS_KIND_PRODUCT] = sizeof(prod_graph),
                   [PS_KIND_GLOBAL] = sizeof(path_counts),
                   [PS_KIND_SEGMENT] = sizeof(path_counts)},
    .init = graph_init,
    .destroy = graph_destroy,
    .apply = graph_apply,
    .write_customer = graph_write_customer,
    .write_shared_entity = graph_write_shared_entity,
    .flushed_shared_entity = graph_flushed_shared_entity,
    .write_shared = graph_write_shared,
    .flushed = graph_flushed,
    .save_customer = graph_save,
    .load_customer = graph_load,
    .forget_customer = graph_forget,
    .load_shared_field = graph_load_shared_field,
};
