/*
 * segments.c -- customer segments by mini-batch k-means (contract section
 * 2, "Segments"; the segment_changed trigger).
 *
 * Features.  The seed's pair: a customer's mean PURCHASE amount and number
 * of PURCHASEs with an amount.  Each feature is standardised online
 * (running mean and standard deviation over the feature vectors observed,
 * Welford), and the standardised point is fed to the mini-batch k-means of
 * kmeans.h (Sculley 2010; k-means++ on the first batch; per-centre
 * learning rate 1/count; dying centres reseeded) every time a customer's
 * features change, i.e. at each of its purchases.
 *
 * Assignment.  At each event of a customer that has features (a purchase
 * with an amount), the customer is (re)assigned to the nearest centre;
 * when the model first initialises, every customer in memory with features
 * is assigned.  A move is counted in the segments' sizes (HINCRBY deltas on
 * ps:segment:{k} size, so sizes are exact and add up across restarts) and
 * emits one segment_changed trigger, caused by that purchase, in the same
 * flush as the customer's new state: exactly once per move.  Customers
 * without a purchase have no segment yet.
 *
 * Names.  ps_kmeans_name after every k-means step: vip (most purchases),
 * premium (highest mean amount of the rest), regular; centre ids never
 * change (a reseeded centre keeps its index), and names change hands only
 * beyond a margin, so readers see no relabelling churn.
 *
 * Outputs.  ps:cust:{id} segment, segment_name; ps:segment:{k} name, size,
 * centroid_mean_amount and centroid_purchases (original units), and the
 * purchase amounts of the segment's customers: spend_mean, spend_std and
 * p_spend_gt = P(amount >= spend_threshold) under a normal fit (the seed's
 * 70,000 example).
 *
 * Saved state.  The customer's features and segment are in its saved
 * state; the model (k-means, the feature scalers, per-segment spend) is
 * saved as ps:state:agg:segments in each flush where it changed, and
 * loaded at start.  With several instances each keeps its own model and
 * the last one to flush wins: segment ids stay stable, but centroids
 * computed by two instances are not merged (see the README).
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "kmeans.h"
#include "normal.h"
#include "pipeline.h"
#include "segments.h"
#include "welford.h"
#include "../common/error.h"

#define SEG_STATE_VERSION 1
#define SEG_MODEL_VERSION 1
#define F_AMOUNT 0
#define F_COUNT 1

typedef struct seg_cust {
    double n;        /* purchases with an amount */
    double mean;     /* their mean amount */
    int32_t segment; /* -1: none yet */
    uint32_t changed_gen;
} seg_cust;

typedef struct segments {
    ps_agg_conf conf;
    ps_pipeline *pipe;
    int k;
    ps_kmeans_t *km;
    ps_welford feat[2];
    ps_welford spend[PS_KMEANS_MAX_K];
    const char *names[PS_KMEANS_MAX_K];
    int64_t size_delta[PS_KMEANS_MAX_K];
    uint32_t model_gen; /* model changed for this flush generation */
    ps_batch *triggers;
} segments;

static double scale(const ps_welford *w)
{
    double sd = ps_welford_std(w);
    return sd > 0 ? sd : 1.0;
}

static void standardise(const segments *s, const double *x, double *z)
{
    for (int i = 0; i < 2; i++)
        z[i] = (x[i] - ps_welford_mean(&s->feat[i])) / scale(&s->feat[i]);
}

static int seg_init(void **self, const ps_agg_env *env, char *errstr,
                    size_t errstr_size)
{
    segments *s = calloc(1, sizeof(*s));
    ps_kmeans_conf kc;

    if (s == NULL)
        goto nomem;
    s->conf = *env->conf;
    s->pipe = env->pipe;
    s->k = env->conf->segments_k;
    ps_kmeans_conf_default(&kc);
    kc.k = s->k;
    kc.d = 2;
    kc.batch = (int)env->conf->segments_batch;
    s->km = ps_kmeans_new(&kc, errstr, errstr_size);
    if (s->km == NULL) {
        free(s);
        return PS_ERR_CONFIG;
    }
    s->triggers = ps_batch_new(env->conf->prefix);
    if (s->triggers == NULL)
        goto nomem;
    ps_welford_init(&s->feat[0]);
    ps_welford_init(&s->feat[1]);
    for (int i = 0; i < s->k; i++)
        ps_welford_init(&s->spend[i]);
    *self = s;
    return PS_OK;
nomem:
    if (s != NULL)
        ps_kmeans_destroy(s->km);
    free(s);
    ps_set_err(errstr, errstr_size, "segments: out of memory");
    return PS_ERR_NOMEM;
}

static void seg_destroy(void *self)
{
    segments *s = self;
    if (s == NULL)
        return;
    ps_kmeans_destroy(s->km);
    ps_batch_destroy(s->triggers);
    free(s);
}

static void trigger_changed(segments *s, const ps_event *ev, int from, int to)
{
    ps_batch *b = s->triggers;
    ps_str none = {"", 0};
    ps_batch_begin(b, "XADD");
    ps_batch_arg_key(b, "triggers", none, NULL);
    ps_batch_arg_cstr(b, "MAXLEN");
    ps_batch_arg_cstr(b, "~");
    ps_batch_arg_i64(b, s->conf.stream_maxlen);
    ps_batch_arg_cstr(b, "*");
    ps_batch_arg_cstr(b, "type");
    ps_batch_arg_cstr(b, "segment_changed");
    ps_batch_arg_cstr(b, "customer");
    ps_batch_arg_str(b, ev->customer_id);
    ps_batch_arg_cstr(b, "product");
    ps_batch_arg_cstr(b, "");
    ps_batch_arg_cstr(b, "score");
    ps_batch_arg_i64(b, to);
    ps_batch_arg_cstr(b, "ts");
    ps_batch_arg_i64(b, ev->ts);
    ps_batch_arg_cstr(b, "cause");
    ps_batch_arg_str(b, ev->event_id);
    ps_batch_arg_cstr(b, "from");
    ps_batch_arg_cstr(b, s->names[from] ? s->names[from] : "");
    ps_batch_arg_cstr(b, "to");
    ps_batch_arg_cstr(b, s->names[to] ? s->names[to] : "");
    ps_batch_end(b);
}

/* (Re)assign customer c to its nearest centre; a move from one segment to
 * another is counted and, when ev is given, triggers segment_changed. */
static void reassign(segments *s, seg_cust *c, ps_entity *cust,
                     const ps_event *ev)
{
    double x[2], z[2];
    x[F_AMOUNT] = c->mean;
    x[F_COUNT] = c->n;
    standardise(s, x, z);
    int seg = ps_kmeans_assign(s->km, z);
    if (seg < 0 || seg == c->segment)
        return;
    if (c->segment >= 0) {
        s->size_delta[c->segment]--;
        if (ev != NULL)
            trigger_changed(s, ev, c->segment, seg);
    }
    s->size_delta[seg]++;
    c->segment = seg;
    c->changed_gen = ps_pipeline_generation(s->pipe) + 1;
    ps_pipeline_touch(s->pipe, cust);
}

struct assign_all {
    segments *s;
    size_t me;
};

/* When the model first exists: give every in-memory customer with
 * features a segment (their purchases came before it could). */
static void assign_one(void *opaque, ps_entity *cust)
{
    struct assign_all *a = opaque;
    seg_cust *c = ps_pipeline_slice(a->s->pipe, cust, a->me);
    if (c->n > 0 && c->segment < 0)
        reassign(a->s, c, cust, NULL);
}

static int seg_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    segments *s = self;
    seg_cust *c = ctx->cust_state;
    uint32_t next_gen = ps_pipeline_generation(s->pipe) + 1;

    if (c->n == 0 && c->segment == 0 && c->changed_gen == 0)
        c->segment = -1; /* a zeroed slice: new customer */
    if (ev->type == PS_PURCHASE && ev->has_amount) {
        c->n += 1;
        c->mean += (ev->amount - c->mean) / c->n;
        double x[2], z[2];
        x[F_AMOUNT] = c->mean;
        x[F_COUNT] = c->n;
        ps_welford_add(&s->feat[0], x[0]);
        ps_welford_add(&s->feat[1], x[1]);
        standardise(s, x, z);
        bool was_ready = ps_kmeans_initialised(s->km);
        int stepped = ps_kmeans_observe(s->km, z);
        if (stepped < 0)
            return PS_OK; /* non-finite: never for validated amounts */
        if (stepped == 1)
            ps_kmeans_name(s->km, F_AMOUNT, F_COUNT, s->names);
        s->model_gen = next_gen;
        if (!was_ready && ps_kmeans_initialised(s->km)) {
            struct assign_all a = {s, (size_t)ps_pipeline_agg_index("segments")};
            ps_pipeline_foreach(s->pipe, PS_KIND_CUSTOMER, assign_one, &a);
        }
    }
    /* every event of a customer with features re-checks its segment: the
     * centres move, and a customer who bought before the model existed
     * gets one at its next event */
    if (c->n > 0)
        reassign(s, c, ctx->cust, ev);
    if (ev->type == PS_PURCHASE && ev->has_amount && c->segment >= 0)
        ps_welford_add(&s->spend[c->segment], ev->amount);
    return PS_OK;
}

static void seg_write_customer(void *self, const ps_entity *cust,
                               const void *state, ps_batch *b)
{
    segments *s = self;
    const seg_cust *c = state;
    (void)cust;
    if (c->segment < 0 || c->changed_gen <= ps_pipeline_generation(s->pipe))
        return;
    ps_batch_arg_cstr(b, "segment");
    ps_batch_arg_i64(b, c->segment);
    ps_batch_arg_cstr(b, "segment_name");
    ps_batch_arg_cstr(b, s->names[c->segment] ? s->names[c->segment] : "");
}

static void seg_write_shared(void *self, ps_batch *b)
{
    segments *s = self;
    const char *argv[64];
    size_t lens[64];

    for (size_t i = 0; i < ps_batch_count(s->triggers); i++) {
        size_t argc = ps_batch_argc(s->triggers, i);
        if (argc > 64)
            continue;
        ps_batch_argv(s->triggers, i, argv, lens);
        ps_batch_begin(b, argv[0]);
        for (size_t a = 1; a < argc; a++)
            ps_batch_arg(b, argv[a], lens[a]);
        ps_batch_end(b);
    }
    if (s->model_gen <= ps_pipeline_generation(s->pipe) ||
        !ps_kmeans_initialised(s->km))
        return;
    for (int k = 0; k < s->k; k++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", k);
        ps_str sid = {id, (uint32_t)strlen(id)};
        if (s->size_delta[k] != 0) {
            ps_batch_begin(b, "HINCRBY");
            ps_batch_arg_key(b, "segment:", sid, NULL);
            ps_batch_arg_cstr(b, "size");
            ps_batch_arg_i64(b, s->size_delta[k]);
            ps_batch_end(b);
        }
        const double *z = ps_kmeans_centre(s->km, k);
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "segment:", sid, NULL);
        ps_batch_arg_cstr(b, "name");
        ps_batch_arg_cstr(b, s->names[k] ? s->names[k] : "");
        ps_batch_arg_cstr(b, "centroid_mean_amount");
        ps_batch_arg_real(b, z[F_AMOUNT] * scale(&s->feat[0]) +
                                 ps_welford_mean(&s->feat[0]));
        ps_batch_arg_cstr(b, "centroid_purchases");
        ps_batch_arg_real(b, z[F_COUNT] * scale(&s->feat[1]) +
                                 ps_welford_mean(&s->feat[1]));
        ps_batch_arg_cstr(b, "spend_n");
        ps_batch_arg_real(b, ps_welford_count(&s->spend[k]));
        ps_batch_arg_cstr(b, "spend_mean");
        ps_batch_arg_real(b, ps_welford_mean(&s->spend[k]));
        ps_batch_arg_cstr(b, "spend_std");
        ps_batch_arg_real(b, ps_welford_std(&s->spend[k]));
        ps_batch_arg_cstr(b, "p_spend_gt");
        ps_batch_arg_real(b, ps_normal_tail(ps_welford_mean(&s->spend[k]),
                                            ps_welford_std(&s->spend[k]),
                                            s->conf.spend_threshold));
        ps_batch_end(b);
    }
}

static void seg_flushed(void *self)
{
    segments *s = self;
    ps_batch_clear(s->triggers);
    memset(s->size_delta, 0, sizeof(s->size_delta));
}

static int seg_save_state(void *self, ps_wbuf *w)
{
    segments *s = self;
    if (s->model_gen <= ps_pipeline_generation(s->pipe))
        return 0;
    ps_wbuf_u8(w, SEG_MODEL_VERSION);
    ps_wbuf_u32(w, (uint32_t)s->k);
    ps_welford_save(&s->feat[0], w);
    ps_welford_save(&s->feat[1], w);
    for (int k = 0; k < s->k; k++)
        ps_welford_save(&s->spend[k], w);
    ps_kmeans_save(s->km, w);
    return 1;
}

static int seg_load_state(void *self, const void *blob, size_t len)
{
    segments *s = self;
    ps_rbuf r;
    uint8_t version;
    uint32_t k;
    char err[128];

    ps_welford feat[2], spend[PS_KMEANS_MAX_K];

    /* parse into temporaries: a rejected blob leaves the model as it was */
    ps_rbuf_init(&r, blob, len);
    if (ps_rbuf_u8(&r, &version) < 0 || version != SEG_MODEL_VERSION ||
        ps_rbuf_u32(&r, &k) < 0 || (int)k != s->k)
        return PS_ERR_STATE;
    if (ps_welford_load(&feat[0], &r) < 0 || ps_welford_load(&feat[1], &r) < 0)
        return PS_ERR_STATE;
    for (int i = 0; i < s->k; i++)
        if (ps_welford_load(&spend[i], &r) < 0)
            return PS_ERR_STATE;
    ps_kmeans_t *km = ps_kmeans_load(&r, err, sizeof(err));
    if (km == NULL || ps_rbuf_left(&r) != 0) {
        ps_kmeans_destroy(km);
        return PS_ERR_STATE;
    }
    memcpy(s->feat, feat, sizeof(feat));
    memcpy(s->spend, spend, (size_t)s->k * sizeof(spend[0]));
    ps_kmeans_destroy(s->km);
    s->km = km;
    ps_kmeans_name(s->km, F_AMOUNT, F_COUNT, s->names);
    return PS_OK;
}

static void seg_save_customer(void *self, const ps_entity *cust,
                              const void *state, ps_wbuf *w)
{
    const seg_cust *c = state;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, SEG_STATE_VERSION);
    ps_wbuf_f64(w, c->n);
    ps_wbuf_f64(w, c->mean);
    ps_wbuf_u32(w, (uint32_t)c->segment);
}

static int seg_load_customer(void *self, ps_entity *cust, void *state,
                             ps_rbuf *r)
{
    segments *s = self;
    seg_cust *c = state;
    uint8_t version;
    uint32_t seg;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version != SEG_STATE_VERSION ||
        ps_rbuf_f64(r, &c->n) < 0 || ps_rbuf_f64(r, &c->mean) < 0 ||
        ps_rbuf_u32(r, &seg) < 0)
        return PS_ERR_STATE;
    c->segment = (int32_t)seg;
    if (c->segment < -1 || c->segment >= s->k || !(c->n >= 0))
        return PS_ERR_STATE;
    c->changed_gen = 1; /* not zero: the slice is not new */
    return PS_OK;
}

int ps_segments_of(ps_pipeline *p, const ps_entity *cust)
{
    static int index = -2;
    if (index == -2)
        index = ps_pipeline_agg_index("segments");
    if (index < 0)
        return -1;
    const seg_cust *c = ps_pipeline_slice(p, cust, (size_t)index);
    if (c->n == 0 && c->segment == 0 && c->changed_gen == 0)
        return -1; /* zeroed slice: not seen by this aggregate yet */
    return c->segment;
}

const char *ps_segments_name(ps_pipeline *p, int k)
{
    int index = ps_pipeline_agg_index("segments");
    if (index < 0)
        return "";
    const segments *s = ps_pipeline_agg_self(p, (size_t)index);
    if (s == NULL || k < 0 || k >= s->k || s->names[k] == NULL)
        return "";
    return s->names[k];
}

const ps_aggregate_ops ps_agg_segments = {
    .name = "segments",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(seg_cust)},
    .init = seg_init,
    .destroy = seg_destroy,
    .apply = seg_apply,
    .write_customer = seg_write_customer,
    .write_shared = seg_write_shared,
    .flushed = seg_flushed,
    .save_state = seg_save_state,
    .load_state = seg_load_state,
    .save_customer = seg_save_customer,
    .load_customer = seg_load_customer,
};
