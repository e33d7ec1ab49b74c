/*
 * reco_eval.c -- how good are propstream's co-purchase recommendations?
 *
 *   reco_eval [--name NAME] [--k K] [--test-frac F] [--flush-every N]
 *             [--also-top-n N] FILE.json
 *
 * FILE is what `propstream import --format json -o FILE` wrote: one event
 * per line.  The events are replayed in time order (stable sort on ts)
 * through a pipeline with every registered aggregate and the default
 * settings, in memory (no Kafka, no Redis: every product counts as new to
 * Redis, and a flush into a throw-away batch, marked successful, runs every
 * N events, 1000 by default, as the run loop would).  --also-top-n sets
 * also_top_n (default 20), and with it the in-memory top-K per product
 * (K = 4 N) that recommendations rank from.
 *
 * Test window: the last F (0.2) of the time span, [t0 + (1 - F)(t1 - t0),
 * t1].  For every PURCHASE in it, just before it is applied:
 *   - reco: is the product in the customer's top-K reco as published in
 *     ps:cust:{id}:reco (ps_copurchase_reco, K = 10): co-purchase
 *     candidates, filled up with the aggregate's most-purchased list?
 *   - co-purchase only: is it among the reco's co-purchase items (those
 *     not from the fill-up; what the reco was before the fill-up)?
 *   - most-popular baseline: is it among the K products with the most
 *     purchases so far (ties: earlier first to reach the count), leaving
 *     out those the customer already purchased?
 *   - hybrid (a cross-check of the fill-up): the co-purchase items filled
 *     up to K with this tool's exact baseline list.  Unlike the published
 *     reco it also serves customers not seen before (their first event is
 *     this purchase), who have no ps:cust:{id}:reco key yet.
 * All lists exclude products the customer already bought, so a repeat
 * purchase can never be a hit: those are counted apart and the hit rates
 * are over purchases of products new to the customer ("evaluated").  They
 * are also given for "warm" customers (at least one earlier purchase or
 * wishlist, so co-purchase has something to start from).
 *
 * Last line, machine-readable:
 *   reco_eval: file=NAME evaluated=N hits_reco=A hits_copurchase=F
 *              hits_pop=B hits_hybrid=C warm=W warm_hits_reco=D
 *              warm_hits_copurchase=G warm_hits_pop=E
 * Exit status 0, 1 on bad input, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_file.h"

#include "../aggregates/copurchase.h"
#include "../aggregates/pipeline.h"
#include "../common/error.h"

#define MAX_K 100

/* ---- set of (customer, product) pairs ----------------------------------- */

typedef struct pairset {
    uint64_t *v; /* key + 1, 0 = empty */
    size_t n, cap;
} pairset;

static bool pairset_has(const pairset *s, uint64_t key)
{
    if (s->cap == 0)
        return false;
    size_t j = (key * 0x9e3779b97f4a7c15ULL >> 20) & (s->cap - 1);
    while (s->v[j] != 0) {
        if (s->v[j] == key + 1)
            return true;
        j = (j + 1) & (s->cap - 1);
    }
    return false;
}

static void pairset_add(pairset *s, uint64_t key)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *v = calloc(cap, sizeof(*v));
        if (v == NULL)
            ef_die_nomem();
        for (size_t i = 0; i < s->cap; i++) {
            if (s->v[i] == 0)
                continue;
            size_t j = ((s->v[i] - 1) * 0x9e3779b97f4a7c15ULL >> 20) & (cap - 1);
            while (v[j] != 0)
                j = (j + 1) & (cap - 1);
            v[j] = s->v[i];
        }
        free(s->v);
        s->v = v;
        s->cap = cap;
    }
    size_t j = (key * 0x9e3779b97f4a7c15ULL >> 20) & (s->cap - 1);
    while (s->v[j] != 0) {
        if (s->v[j] == key + 1)
            return;
        j = (j + 1) & (s->cap - 1);
    }
    s->v[j] = key + 1;
    s->n++;
}

static uint64_t pair_key(int32_t cust, int32_t prod)
{
    return (uint64_t)(uint32_t)cust << 32 | (uint32_t)prod;
}

/* ---- most-popular leaderboard ------------------------------------------- */

typedef struct popular {
    int32_t *order; /* products by purchases, descending */
    size_t *pos;    /* of each product in order */
    int64_t *count;
} popular;

static void popular_init(popular *p, size_t n)
{
    p->order = ef_xrealloc(NULL, n * sizeof(*p->order));
    p->pos = ef_xrealloc(NULL, n * sizeof(*p->pos));
    p->count = calloc(n ? n : 1, sizeof(*p->count));
    if (p->count == NULL)
        ef_die_nomem();
    for (size_t i = 0; i < n; i++) {
        p->order[i] = (int32_t)i;
        p->pos[i] = i;
    }
}

static void popular_bump(popular *p, int32_t prod)
{
    size_t i = p->pos[prod];
    int64_t c = ++p->count[prod];
    /* move it before every product with a smaller count (ties keep the
     * one that reached the count first) */
    size_t j = i;
    while (j > 0 && p->count[p->order[j - 1]] < c)
        j--;
    if (j == i)
        return;
    int32_t other = p->order[j];
    p->order[j] = prod;
    p->pos[prod] = j;
    p->order[i] = other;
    p->pos[other] = i;
    /* other has count c - 1 >= every count in (j, i]: order holds */
}

static void popular_free(popular *p)
{
    free(p->order);
    free(p->pos);
    free(p->count);
}

/* ---- replay ------------------------------------------------------------- */

typedef struct tally {
    size_t purchases_test, repeats, evaluated, hits_reco, hits_cop, hits_pop,
        hits_hybrid, warm, warm_hits_reco, warm_hits_cop, warm_hits_pop,
        reco_empty, cop_empty, unknown;
    double reco_len_sum, cop_len_sum;
} tally;

static int replay(const ef_file *f, size_t k, double test_frac,
                  size_t flush_every, int64_t also_top_n, tally *out)
{
    const ef_rec *v = f->v;
    size_t n = f->n;
    const ef_intern *custs = &f->custs, *prods = &f->prods;
    char err[256];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    if (also_top_n > 0)
        conf.also_top_n = also_top_n;
    if ((int64_t)k > conf.reco_n)
        conf.reco_n = (int64_t)k;
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    ps_copurchase_item items[MAX_K];
    int32_t pop_list[MAX_K];
    pairset bought = {0};
    popular pop;
    bool *warm = calloc(custs->n ? custs->n : 1, sizeof(*warm));
    int rc = 0;

    if (p == NULL || b == NULL || warm == NULL) {
        fprintf(stderr, "reco_eval: %s\n", p ? "out of memory" : err);
        ps_pipeline_destroy(p);
        ps_batch_destroy(b);
        free(warm);
        return -1;
    }
    popular_init(&pop, prods->n);
    memset(out, 0, sizeof(*out));
    int64_t t0 = n ? v[0].ts : 0, t1 = n ? v[n - 1].ts : 0;
    int64_t cut = t0 + (int64_t)((double)(t1 - t0) * (1.0 - test_frac));

    for (size_t i = 0; i < n && rc == 0; i++) {
        const ef_rec *r = &v[i];
        ps_event ev = ef_event(f, r);
        ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, ev.customer_id);

        if (r->type == PS_PURCHASE && r->prod >= 0 && r->ts >= cut) {
            out->purchases_test++;
            if (pairset_has(&bought, pair_key(r->cust, r->prod))) {
                out->repeats++;
                goto apply;
            }
            out->evaluated++;
            /* a customer never seen has no reco key at all */
            out->unknown += c == NULL;
            long nr = c ? ps_copurchase_reco(p, c, k, items) : 0;
            if (nr < 0) {
                rc = -1;
                break;
            }
            bool hit_reco = false, hit_cop = false, hit_pop = false,
                 hit_hybrid = false;
            long ncop = 0; /* co-purchase items come first */
            while (ncop < nr && !items[ncop].popular)
                ncop++;
            for (long j = 0; j < nr; j++) {
                bool h = ps_str_eq(items[j].product->id, ev.product_id);
                hit_reco |= h;
                hit_cop |= h && j < ncop;
            }
            /* most popular so far, not bought by the customer */
            size_t np = 0;
            for (size_t j = 0; j < prods->n && np < k; j++) {
                int32_t q = pop.order[j];
                if (pop.count[q] == 0)
                    break;
                if (!pairset_has(&bought, pair_key(r->cust, q)))
                    pop_list[np++] = q;
            }
            for (size_t j = 0; j < np; j++)
                hit_pop |= pop_list[j] == r->prod;
            /* hybrid: co-purchase items, then popular ones not in them */
            size_t nh = (size_t)ncop;
            hit_hybrid = hit_cop;
            for (size_t j = 0; j < np && nh < k; j++) {
                bool dup = false;
                for (long m = 0; m < ncop; m++)
                    dup |= ps_str_eq(items[m].product->id,
                                     ef_intern_str(prods, pop_list[j]));
                if (dup)
                    continue;
                nh++;
                hit_hybrid |= pop_list[j] == r->prod;
            }
            out->hits_reco += hit_reco;
            out->hits_cop += hit_cop;
            out->hits_pop += hit_pop;
            out->hits_hybrid += hit_hybrid;
            out->reco_empty += nr == 0;
            out->cop_empty += ncop == 0;
            out->reco_len_sum += (double)nr;
            out->cop_len_sum += (double)ncop;
            if (warm[r->cust]) {
                out->warm++;
                out->warm_hits_reco += hit_reco;
                out->warm_hits_cop += hit_cop;
                out->warm_hits_pop += hit_pop;
            }
        }
    apply:
        if (c == NULL) {
            int e;
            c = ps_pipeline_add(p, ev.customer_id, NULL, 0, &e);
            if (c == NULL) {
                rc = -1;
                break;
            }
        }
        bool late;
        if (ps_pipeline_apply(p, &ev, c, &late) < 0 ||
            ps_pipeline_advance(p, 0) < 0) {
            rc = -1;
            break;
        }
        ef_load_all(p);
        if (r->type == PS_PURCHASE && r->prod >= 0) {
            if (!pairset_has(&bought, pair_key(r->cust, r->prod)))
                pairset_add(&bought, pair_key(r->cust, r->prod));
            popular_bump(&pop, r->prod);
        }
        if ((r->type == PS_PURCHASE || r->type == PS_WISHLIST) &&
            r->prod >= 0)
            warm[r->cust] = true;
        if ((i + 1) % flush_every == 0 || i + 1 == n) {
            ps_batch_clear(b);
            ps_pipeline_write(p, b);
            if (ps_batch_error(b) < 0) {
                rc = -1;
                break;
            }
            ps_pipeline_flushed(p);
        }
    }
    if (rc < 0)
        fprintf(stderr, "reco_eval: replay failed (out of memory)\n");
    popular_free(&pop);
    free(bought.v);
    free(warm);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
    return rc;
}

static double pct(size_t a, size_t b) { return b ? 100.0 * (double)a / (double)b : 0; }

static void usage(void)
{
    fprintf(stderr, "usage: reco_eval [--name NAME] [--k K] [--test-frac F] "
                    "[--flush-every N] [--also-top-n N] FILE.json\n");
}

int main(int argc, char **argv)
{
    const char *name = NULL, *path = NULL;
    size_t k = 10, flush_every = 1000;
    int64_t also_top_n = 0;
    double test_frac = 0.2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc)
            k = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--test-frac") == 0 && i + 1 < argc)
            test_frac = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--flush-every") == 0 && i + 1 < argc)
            flush_every = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--also-top-n") == 0 && i + 1 < argc)
            also_top_n = strtoll(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && path == NULL)
            path = argv[i];
        else {
            usage();
            return 2;
        }
    }
    if (path == NULL || k == 0 || k > MAX_K || !(test_frac > 0) ||
        test_frac > 1 || flush_every == 0) {
        usage();
        return 2;
    }
    if (name == NULL)
        name = path;

    ef_file f = {0};
    tally t;
    int status = 1;
    if (ef_read("reco_eval", path, &f) == 0 &&
        replay(&f, k, test_frac, flush_every, also_top_n, &t) == 0) {
        printf("%s: %zu events, %zu customers, %zu products; test window = "
               "last %.0f%% of time\n",
               name, f.n, f.custs.n, f.prods.n, 100 * test_frac);
        printf("  purchases in window %zu: %zu repeats (never a hit: both "
               "lists leave bought products out), %zu evaluated\n",
               t.purchases_test, t.repeats, t.evaluated);
        double ev_n = t.evaluated ? (double)t.evaluated : 1.0;
        printf("  reco@%zu (published)  %6zu / %-6zu = %6.2f %%  (empty for "
               "%zu, of which %zu customers not seen before; mean length "
               "%.2f)\n",
               k, t.hits_reco, t.evaluated, pct(t.hits_reco, t.evaluated),
               t.reco_empty, t.unknown, t.reco_len_sum / ev_n);
        printf("  co-purchase part@%zu  %6zu / %-6zu = %6.2f %%  (empty for "
               "%zu, mean length %.2f)\n",
               k, t.hits_cop, t.evaluated, pct(t.hits_cop, t.evaluated),
               t.cop_empty, t.cop_len_sum / ev_n);
        printf("  most-popular@%zu      %6zu / %-6zu = %6.2f %%\n", k,
               t.hits_pop, t.evaluated, pct(t.hits_pop, t.evaluated));
        printf("  co-purchase+exact popular@%zu %6zu / %-6zu = %6.2f %%\n",
               k, t.hits_hybrid, t.evaluated,
               pct(t.hits_hybrid, t.evaluated));
        printf("  warm customers only (earlier purchase or wishlist): "
               "reco %zu / %zu = %.2f %%, co-purchase %zu / %zu = %.2f %%, "
               "popular %zu / %zu = %.2f %%\n",
               t.warm_hits_reco, t.warm, pct(t.warm_hits_reco, t.warm),
               t.warm_hits_cop, t.warm, pct(t.warm_hits_cop, t.warm),
               t.warm_hits_pop, t.warm, pct(t.warm_hits_pop, t.warm));
        printf("reco_eval: file=%s evaluated=%zu hits_reco=%zu "
               "hits_copurchase=%zu hits_pop=%zu hits_hybrid=%zu warm=%zu "
               "warm_hits_reco=%zu warm_hits_copurchase=%zu "
               "warm_hits_pop=%zu\n",
               name, t.evaluated, t.hits_reco, t.hits_cop, t.hits_pop,
               t.hits_hybrid, t.warm, t.warm_hits_reco, t.warm_hits_cop,
               t.warm_hits_pop);
        status = 0;
    }
    ef_free(&f);
    return status;
}
