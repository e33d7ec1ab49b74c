/*
 * segments.c -- customer segments by online k-means (contract section 2,
 * "Segments"; the segment_changed trigger).
 *
 * Features.  A configurable list (--segments-features, default the seed's
 * pair mean_amount,purchases) of functions of the customer's own state as
 * of its latest event, defined in segment_features.h (public, so that
 * bench/segments_eval.c rebuilds the very same vectors).  A customer has
 * features (and gets a segment) from its first PURCHASE with
 * an amount on.  Features are standardised online with the mean and sample
 * standard deviation over the CURRENT feature vectors of all customers that
 * have features (exact: a customer's old vector is removed when its new one
 * is added; shifted sums, so no cancellation at realistic magnitudes).
 *
 * The model.  Mini-batch k-means (Sculley 2010) in which a point is a
 * customer, not an event:
 *   - initialisation: the first `segments_batch` feature vectors seen are
 *     seeded with k-means++ and refined by Lloyd iterations (kmeans.h), then
 *     every customer in memory with features is assigned;
 *   - each centre is the mean of its CURRENT members in original units
 *     (per-cell sums and exact counts).  When a customer's features change,
 *     its old vector leaves its cell and the new one joins the nearest
 *     centre: the learning rate 1/count of Sculley's update, with the count
 *     being the cell's size, so a customer seen 50 times weighs as much as
 *     one seen once and stale snapshots never pile up;
 *   - optional forgetting (--segments-half-life h > 0, points): instead of
 *     exact means, a centre moves towards each arriving point with weight
 *     w = w * 0.5^(1/h) + 1 (Spark StreamingKMeans' decay), following
 *     drifting behaviour; sizes stay exact either way;
 *   - every `segments_batch` feature updates the model takes a step: the
 *     standardised centres are refreshed, and when enough updates have
 *     accumulated since the last sweep (at least a quarter of the members)
 *     every customer in memory is re-assigned to its nearest centre (a
 *     Lloyd pass, amortised O(1) per event); a centre left empty or dying
 *     (fewer than 1/(20k) of the members) is reseeded by splitting the
 *     largest cell: the dying cell's members in memory go to their nearest
 *     other centres and a typical member of the largest cell (at its mean
 *     squared distance from the centre, not an outlier) moves to it; then
 *     the centres are re-named.
 * Everything is deterministic given the configuration and event order.
 *
 * Assignment and triggers.  Every move of a customer from one segment to
 * another -- at its own event or in a sweep -- is counted in the sizes
 * (HINCRBY deltas on ps:segment:{k} size, exact, adding up across
 * restarts) and emits one segment_changed trigger in the same flush as
 * the customer's new state: exactly once per move.  cause is the event
 * that caused the move (for a sweep, the event that completed the step).
 *
 * Names.  ps_kmeans_name on the standardised centres: for k = 3 with
 * mean_amount and purchases (else frequency) among the features, vip (most
 * purchases), premium (highest mean amount of the rest), regular; else
 * segment-0.. by ascending amount.  --segments-names replaces these in
 * that order (vip,premium,regular; or segment-0,...).  Centre ids never
 * change and names change hands only beyond a margin (no relabelling
 * churn).
 *
 * Outputs.  ps:cust:{id} segment, segment_name; ps:segment:{k} name, size,
 * centroid_{feature} (original units) for every configured feature, and
 * the purchase amounts of the segment's customers while in it: spend_n,
 * spend_mean, spend_std and p_spend_gt = P(amount >= spend_threshold)
 * under a normal fit (the seed's 70,000 example).
 *
 * Saved state.  The customer's raw feature inputs and segment are in its
 * saved state; the model (centres, cell sums, scalers, per-segment spend)
 * is saved as ps:state:agg:segments in each flush where it changed, in the
 * same transaction, and loaded at start.  Several instances each keep
 * their own model and the last to flush wins: ids and names stay stable,
 * but cells computed by two instances are not merged (see the README).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "kmeans.h"
#include "normal.h"
#include "pipeline.h"
#include "segment_features.h"
#include "segments.h"
#include "welford.h"
#include "../common/error.h"

#define SEG_STATE_VERSION 2
#define SEG_MODEL_VERSION 2
#define D_MAX PS_KMEANS_MAX_D
_Static_assert(PS_SEG_FEATURES_MAX <= PS_KMEANS_MAX_D,
               "every configurable feature needs a k-means dimension");

typedef struct seg_cust {
    ps_seg_inputs in;   /* raw feature inputs; in.seen = slice in use */
    int32_t segment;    /* -1: none yet */
    uint32_t changed_gen;
} seg_cust;

/* Mean and variance of a population whose members come and go: sums of
 * (x - shift) and its square. */
typedef struct popstat {
    double n;
    double shift[D_MAX], s1[D_MAX], s2[D_MAX];
} popstat;

typedef struct cell {
    double sum[D_MAX]; /* of members' vectors (exact mode) */
    double pos[D_MAX]; /* centre in original units */
    double w;          /* decayed weight (forgetting mode) */
    double ms;         /* mean squared standardised distance of the members
                          in memory to the centre, at the last sweep */
    int64_t n;         /* members, exact */
} cell;

typedef struct segments {
    ps_agg_conf conf;
    ps_pipeline *pipe;
    size_t me;
    int k, d;
    ps_seg_features feat; /* configured features (d = feat.d) */
    int amount_dim, count_dim;
    double decay;        /* forgetting factor per point; 1 = exact means */
    ps_kmeans_t *km;     /* seeding, standardised centres, naming */
    popstat pop;
    cell cells[PS_KMEANS_MAX_K];
    ps_welford spend[PS_KMEANS_MAX_K];
    const char *names[PS_KMEANS_MAX_K];
    char custom[PS_KMEANS_MAX_K][PS_KMEANS_NAME_MAX];
    int ncustom;
    int64_t size_delta[PS_KMEANS_MAX_K];
    uint64_t updates_since_step, updates_since_sweep;
    uint64_t sweeps, reseeds;
    int parked; /* centre parked out of reach by a reseed, or -1: members
                   leaving it must not pull it back to their mean */
    uint32_t model_gen; /* model changed for this flush generation */
    ps_batch *triggers;
    const ps_event *cause; /* event in apply, for sweep triggers */
} segments;

/* ---------------------------------------------------------------- config */

static int parse_features(segments *s, const char *list, char *errstr,
                          size_t errstr_size)
{
    int rc = ps_seg_features_parse(list != NULL ? list
                                                : "mean_amount,purchases",
                                   "--segments-features", &s->feat, errstr,
                                   errstr_size);
    if (rc != PS_OK)
        return rc;
    s->d = s->feat.d;
    s->amount_dim = ps_seg_features_find(&s->feat, PS_SEG_MEAN_AMOUNT);
    s->count_dim = ps_seg_features_find(&s->feat, PS_SEG_PURCHASES);
    if (s->count_dim < 0)
        s->count_dim = ps_seg_features_find(&s->feat, PS_SEG_FREQUENCY);
    return PS_OK;
}

static int parse_names(segments *s, const char *list, char *errstr,
                       size_t errstr_size)
{
    s->ncustom = 0;
    if (list == NULL || *list == '\0')
        return PS_OK;
    const char *p = list;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= PS_KMEANS_NAME_MAX) {
            ps_set_err(errstr, errstr_size,
                       "--segments-names: names must be 1..%d characters",
                       PS_KMEANS_NAME_MAX - 1);
            return PS_ERR_CONFIG;
        }
        if (s->ncustom == s->k) {
            ps_set_err(errstr, errstr_size,
                       "--segments-names: more names than --segments-k (%d)",
                       s->k);
            return PS_ERR_CONFIG;
        }
        memcpy(s->custom[s->ncustom], p, len);
        s->custom[s->ncustom][len] = '\0';
        s->ncustom++;
        if (e == NULL)
            break;
        p = e + 1;
    }
    if (s->ncustom != s->k) {
        ps_set_err(errstr, errstr_size,
                   "--segments-names: %d names for %d segments", s->ncustom,
                   s->k);
        return PS_ERR_CONFIG;
    }
    return PS_OK;
}

/* -------------------------------------------------------------- features */

static bool has_features(const seg_cust *c)
{
    return ps_seg_inputs_ready(&c->in);
}

static void features(const segments *s, const seg_cust *c, double *x)
{
    ps_seg_features_of(&s->feat, &c->in, x);
}

static void pop_add(popstat *p, const double *x, int d, double sign)
{
    if (p->n == 0 && sign > 0)
        for (int i = 0; i < d; i++)
            p->shift[i] = x[i];
    p->n += sign;
    for (int i = 0; i < d; i++) {
        double y = x[i] - p->shift[i];
        p->s1[i] += sign * y;
        p->s2[i] += sign * y * y;
    }
}

static double pop_mean(const popstat *p, int i)
{
    return p->n > 0 ? p->shift[i] + p->s1[i] / p->n : 0;
}

/* Sample standard deviation, or 1 when it is 0 or undefined. */
static double pop_scale(const popstat *p, int i)
{
    if (p->n < 2)
        return 1.0;
    double var = (p->s2[i] - p->s1[i] * p->s1[i] / p->n) / (p->n - 1);
    return var > 0 ? sqrt(var) : 1.0;
}

static void standardise(const segments *s, const double *x, double *z)
{
    for (int i = 0; i < s->d; i++)
        z[i] = (x[i] - pop_mean(&s->pop, i)) / pop_scale(&s->pop, i);
}

/* --------------------------------------------------------------- centres */

/* Push cell k's centre, standardised, into the model used for assignment
 * and naming. */
static void sync_centre(segments *s, int k)
{
    double z[D_MAX];
    standardise(s, s->cells[k].pos, z);
    ps_kmeans_set_centre(s->km, k, z,
                         s->decay < 1 ? s->cells[k].w
                                      : (double)s->cells[k].n);
}

static void sync_all(segments *s)
{
    for (int k = 0; k < s->k; k++)
        sync_centre(s, k);
}

static void cell_join(segments *s, int k, const double *x)
{
    cell *c = &s->cells[k];
    c->n++;
    if (s->decay < 1) {
        c->w = c->w * s->decay + 1;
        for (int i = 0; i < s->d; i++)
            c->pos[i] += (x[i] - c->pos[i]) / c->w;
    } else {
        for (int i = 0; i < s->d; i++) {
            c->sum[i] += x[i];
            c->pos[i] = c->sum[i] / (double)c->n;
        }
    }
}

static void cell_leave(segments *s, int k, const double *x)
{
    cell *c = &s->cells[k];
    if (c->n > 0)
        c->n--;
    if (s->decay < 1)
        return; /* forgetting mode: the centre keeps its history */
    if (c->n == 0) {
        memset(c->sum, 0, sizeof(c->sum)); /* pos stays where it was */
        return;
    }
    for (int i = 0; i < s->d; i++) {
        c->sum[i] -= x[i];
        c->pos[i] = c->sum[i] / (double)c->n;
    }
}

struct renamed {
    segments *s;
    bool changed[PS_KMEANS_MAX_K];
};

/* A customer of a renamed segment: write its segment_name again. */
static void rename_one(void *opaque, ps_entity *cust)
{
    struct renamed *r = opaque;
    seg_cust *c = ps_pipeline_slice(r->s->pipe, cust, r->s->me);
    if (c->segment >= 0 && c->segment < r->s->k && r->changed[c->segment]) {
        c->changed_gen = ps_pipeline_generation(r->s->pipe) + 1;
        ps_pipeline_touch(r->s->pipe, cust);
    }
}

/* Names by the naming rule.  When names change hands (the centres moved
 * past each other), every customer in memory of a renamed segment is
 * written again, so its segment_name agrees with ps:segment:{k} (those
 * not in memory get it at their next event). */
static void names_refresh(segments *s, bool rewrite)
{
    const char *dflt[PS_KMEANS_MAX_K];
    struct renamed r = {s, {false}};
    bool any = false;
    if (ps_kmeans_name(s->km, s->amount_dim, s->count_dim, dflt) < 0)
        return;
    for (int k = 0; k < s->k; k++) {
        int role = ps_kmeans_role(s->km, k);
        const char *name = s->ncustom > 0 && role >= 0 && role < s->ncustom
                               ? s->custom[role]
                               : dflt[k];
        if (s->names[k] != NULL && name != NULL &&
            strcmp(s->names[k], name) != 0)
            any = r.changed[k] = true;
        s->names[k] = name;
    }
    if (any && rewrite)
        ps_pipeline_foreach(s->pipe, PS_KIND_CUSTOMER, rename_one, &r);
}

/* ------------------------------------------------------------- lifecycle */

static int seg_init(void **self, const ps_agg_env *env, char *errstr,
                    size_t errstr_size)
{
    segments *s = calloc(1, sizeof(*s));
    ps_kmeans_conf kc;
    int rc;

    if (s == NULL)
        goto nomem;
    s->conf = *env->conf;
    s->pipe = env->pipe;
    s->parked = -1;
    s->me = (size_t)PS_AGG_INDEX_segments;
    s->k = env->conf->segments_k;
    rc = parse_features(s, env->conf->segments_features, errstr,
                        errstr_size);
    if (rc == PS_OK)
        rc = parse_names(s, env->conf->segments_names, errstr, errstr_size);
    if (rc == PS_OK && !(env->conf->segments_half_life >= 0)) {
        ps_set_err(errstr, errstr_size, "--segments-half-life: must be >= 0");
        rc = PS_ERR_CONFIG;
    }
    if (rc != PS_OK) {
        free(s);
        return rc;
    }
    s->decay = env->conf->segments_half_life > 0
                   ? pow(0.5, 1.0 / env->conf->segments_half_life)
                   : 1.0;
    ps_kmeans_conf_default(&kc);
    kc.k = s->k;
    kc.d = s->d;
    kc.batch = (int)env->conf->segments_batch;
    kc.max_idle = 0; /* empty cells are handled here, on exact sizes */
    s->km = ps_kmeans_new(&kc, errstr, errstr_size);
    if (s->km == NULL) {
        free(s);
        return PS_ERR_CONFIG;
    }
    s->triggers = ps_batch_new(env->conf->prefix);
    if (s->triggers == NULL)
        goto nomem;
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

static void trigger_changed(segments *s, const ps_entity *cust, int from,
                            int to)
{
    ps_batch *b = s->triggers;
    ps_str none = {"", 0};
    const ps_event *ev = s->cause;
    ps_batch_begin(b, "XADD");
    ps_batch_arg_key(b, "triggers", none, NULL);
    ps_batch_arg_cstr(b, "MAXLEN");
    ps_batch_arg_cstr(b, "~");
    ps_batch_arg_i64(b, s->conf.stream_maxlen);
    ps_batch_arg_cstr(b, "*");
    ps_batch_arg_cstr(b, "type");
    ps_batch_arg_cstr(b, "segment_changed");
    ps_batch_arg_cstr(b, "customer");
    ps_batch_arg_str(b, cust->id);
    ps_batch_arg_cstr(b, "product");
    ps_batch_arg_cstr(b, "");
    ps_batch_arg_cstr(b, "score");
    ps_batch_arg_i64(b, to);
    ps_batch_arg_cstr(b, "ts");
    ps_batch_arg_i64(b, ev != NULL ? ev->ts : 0);
    ps_batch_arg_cstr(b, "cause");
    if (ev != NULL)
        ps_batch_arg_str(b, ev->event_id);
    else
        ps_batch_arg_cstr(b, "");
    ps_batch_arg_cstr(b, "from");
    ps_batch_arg_cstr(b, s->names[from] ? s->names[from] : "");
    ps_batch_arg_cstr(b, "to");
    ps_batch_arg_cstr(b, s->names[to] ? s->names[to] : "");
    ps_batch_end(b);
}

/* Put customer c (vector x, already in the population) in segment `to`,
 * leaving its old cell (whose vector was old_x).  Counts the move and,
 * when it had a segment, triggers segment_changed. */
static void move(segments *s, seg_cust *c, ps_entity *cust,
                 const double *old_x, const double *x, int to)
{
    int from = c->segment;
    if (from >= 0)
        cell_leave(s, from, old_x);
    cell_join(s, to, x);
    if (from >= 0 && s->decay >= 1 && from != s->parked)
        sync_centre(s, from);
    sync_centre(s, to);
    if (from == to)
        return;
    if (from >= 0) {
        s->size_delta[from]--;
        trigger_changed(s, cust, from, to);
    }
    s->size_delta[to]++;
    c->segment = to;
    c->changed_gen = ps_pipeline_generation(s->pipe) + 1;
    ps_pipeline_touch(s->pipe, cust);
}

/* Nearest centre to x (original units). */
static int nearest(const segments *s, const double *x)
{
    double z[D_MAX];
    standardise(s, x, z);
    return ps_kmeans_assign(s->km, z);
}

/* A sweep: every customer in memory with features goes to its nearest
 * centre (one Lloyd pass over what is in memory).  Per cell it also
 * measures the mean squared distance of the members to the centre and
 * picks a "typical" member, the one whose squared distance is closest to
 * that of the previous sweep: where a dying centre is reseeded when its
 * cell is the largest (splitting it, rather than starting at an outlier,
 * which would only make another tiny cell). */
typedef struct sweep {
    segments *s;
    int only;      /* >= 0: visit only members of this cell */
    double ms[PS_KMEANS_MAX_K];      /* previous mean squared distance */
    double sum_d2[PS_KMEANS_MAX_K];  /* this sweep's */
    double seen[PS_KMEANS_MAX_K];
    ps_entity *typical[PS_KMEANS_MAX_K];
    double typical_gap[PS_KMEANS_MAX_K];
} sweep;

static void sweep_one(void *opaque, ps_entity *cust)
{
    sweep *w = opaque;
    segments *s = w->s;
    seg_cust *c = ps_pipeline_slice(s->pipe, cust, s->me);
    if (!c->in.seen || !has_features(c) ||
        (w->only >= 0 && c->segment != w->only))
        return;
    double x[D_MAX], z[D_MAX];
    features(s, c, x);
    standardise(s, x, z);
    int k = ps_kmeans_assign(s->km, z);
    if (k < 0)
        return;
    if (c->segment != k) {
        if (c->segment < 0) {
            cell_join(s, k, x);
            sync_centre(s, k);
            s->size_delta[k]++;
            c->segment = k;
            c->changed_gen = ps_pipeline_generation(s->pipe) + 1;
            ps_pipeline_touch(s->pipe, cust);
        } else {
            move(s, c, cust, x, x, k);
        }
    }
    const double *ctr = ps_kmeans_centre(s->km, k);
    double d2 = 0;
    for (int i = 0; i < s->d; i++)
        d2 += (z[i] - ctr[i]) * (z[i] - ctr[i]);
    w->sum_d2[k] += d2;
    w->seen[k] += 1;
    double gap = fabs(d2 - w->ms[k]);
    if (w->typical[k] == NULL || gap < w->typical_gap[k]) {
        w->typical[k] = cust;
        w->typical_gap[k] = gap;
    }
}

/* An empty cell, or a dying one (fewer than 1/(20k) of the members once
 * there are at least 100k), is reseeded at a typical member of the
 * largest cell; the dying cell's members in memory first go to their
 * nearest other centres.  At most one reseed per sweep. */
static void reseed_dying(segments *s, sweep *w)
{
    int64_t members = 0;
    int largest = 0;
    for (int k = 0; k < s->k; k++) {
        members += s->cells[k].n;
        if (s->cells[k].n > s->cells[largest].n)
            largest = k;
    }
    int dying = -1;
    for (int k = 0; k < s->k && dying < 0; k++)
        if (k != largest &&
            (s->cells[k].n == 0 ||
             (members >= 100 * s->k && s->cells[k].n * 20 * s->k < members)))
            dying = k;
    if (dying < 0 || w->typical[largest] == NULL ||
        s->cells[largest].n < 2)
        return;
    if (s->cells[dying].n > 0) {
        /* park the dying centre out of reach; its members in memory move */
        double far[D_MAX];
        for (int i = 0; i < s->d; i++)
            far[i] = 1e150;
        ps_kmeans_set_centre(s->km, dying, far, 0);
        sweep away = {.s = s, .only = dying};
        s->parked = dying;
        ps_pipeline_foreach(s->pipe, PS_KIND_CUSTOMER, sweep_one, &away);
        s->parked = -1;
    }
    ps_entity *cust = w->typical[largest];
    seg_cust *c = ps_pipeline_slice(s->pipe, cust, s->me);
    if (c->segment != largest)
        return; /* it moved meanwhile: the next sweep tries again */
    double x[D_MAX];
    features(s, c, x);
    if (s->cells[dying].n == 0)
        memcpy(s->cells[dying].pos, x, sizeof(double) * (size_t)s->d);
    s->cells[dying].w = 0;
    move(s, c, cust, x, x, dying);
    s->reseeds++;
}

/* A model step: fresh standardised centres, a sweep when due, a dying
 * centre reseeded, names. */
static void model_step(segments *s, bool force_sweep)
{
    s->updates_since_step = 0;
    sync_all(s);
    uint64_t members = 0;
    for (int k = 0; k < s->k; k++)
        members += (uint64_t)s->cells[k].n;
    uint64_t due = members / 4 > (uint64_t)s->conf.segments_batch
                       ? members / 4
                       : (uint64_t)s->conf.segments_batch;
    if (force_sweep || s->updates_since_sweep >= due) {
        sweep w = {.s = s, .only = -1};
        for (int k = 0; k < s->k; k++)
            w.ms[k] = s->cells[k].ms;
        s->updates_since_sweep = 0;
        s->sweeps++;
        ps_pipeline_foreach(s->pipe, PS_KIND_CUSTOMER, sweep_one, &w);
        for (int k = 0; k < s->k; k++)
            s->cells[k].ms = w.seen[k] > 0 ? w.sum_d2[k] / w.seen[k] : 0;
        reseed_dying(s, &w);
        sync_all(s);
    }
    names_refresh(s, true);
    s->model_gen = ps_pipeline_generation(s->pipe) + 1;
}

/* The seeding buffer completed: centres from k-means++ (standardised, as
 * the buffered points were), every customer in memory assigned. */
static void model_start(segments *s)
{
    for (int k = 0; k < s->k; k++) {
        const double *z = ps_kmeans_centre(s->km, k);
        for (int i = 0; i < s->d; i++)
            s->cells[k].pos[i] =
                z[i] * pop_scale(&s->pop, i) + pop_mean(&s->pop, i);
        s->cells[k].w = 0;
        s->cells[k].n = 0;
        memset(s->cells[k].sum, 0, sizeof(s->cells[k].sum));
    }
    sync_all(s);
    names_refresh(s, true);
    model_step(s, true);
}

/* ----------------------------------------------------------------- apply */

static int seg_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    segments *s = self;
    seg_cust *c = ctx->cust_state;
    double old_x[D_MAX], x[D_MAX];

    if (!c->in.seen)
        c->segment = -1; /* a zeroed slice: new customer */
    bool had = has_features(c);
    if (had)
        features(s, c, old_x);
    ps_seg_inputs_add(&c->in, ev);
    if (!has_features(c))
        return PS_OK;

    features(s, c, x);
    for (int i = 0; i < s->d; i++)
        if (!isfinite(x[i]))
            return PS_OK; /* never for validated events */
    if (had)
        pop_add(&s->pop, old_x, s->d, -1);
    pop_add(&s->pop, x, s->d, +1);
    s->model_gen = ps_pipeline_generation(s->pipe) + 1;
    s->cause = ev;

    if (!ps_kmeans_initialised(s->km)) {
        double z[D_MAX];
        standardise(s, x, z);
        if (ps_kmeans_observe(s->km, z) == 1 && ps_kmeans_initialised(s->km))
            model_start(s);
    } else {
        int to = nearest(s, x);
        if (to >= 0)
            move(s, c, ctx->cust, had ? old_x : x, x, to);
        s->updates_since_sweep++;
        if (++s->updates_since_step >= (uint64_t)s->conf.segments_batch)
            model_step(s, false);
    }
    if (ev->type == PS_PURCHASE && ev->has_amount && c->segment >= 0)
        ps_welford_add(&s->spend[c->segment], ev->amount);
    s->cause = NULL;
    return PS_OK;
}

/* ---------------------------------------------------------------- output */

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
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "segment:", sid, NULL);
        ps_batch_arg_cstr(b, "name");
        ps_batch_arg_cstr(b, s->names[k] ? s->names[k] : "");
        for (int i = 0; i < s->d; i++) {
            ps_batch_arg_fmt(b, "centroid_%s", ps_seg_feature_name(s->feat.kind[i]));
            ps_batch_arg_real(b, s->cells[k].pos[i]);
        }
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

/* ----------------------------------------------------------- saved state */

static int seg_save_state(void *self, ps_wbuf *w)
{
    segments *s = self;
    if (s->model_gen <= ps_pipeline_generation(s->pipe))
        return 0;
    ps_wbuf_u8(w, SEG_MODEL_VERSION);
    ps_wbuf_u32(w, (uint32_t)s->k);
    ps_wbuf_u32(w, (uint32_t)s->d);
    for (int i = 0; i < s->d; i++)
        ps_wbuf_u8(w, (uint8_t)s->feat.kind[i]);
    ps_wbuf_f64(w, s->pop.n);
    for (int i = 0; i < s->d; i++) {
        ps_wbuf_f64(w, s->pop.shift[i]);
        ps_wbuf_f64(w, s->pop.s1[i]);
        ps_wbuf_f64(w, s->pop.s2[i]);
    }
    for (int k = 0; k < s->k; k++) {
        const cell *c = &s->cells[k];
        ps_wbuf_u64(w, (uint64_t)c->n);
        ps_wbuf_f64(w, c->w);
        ps_wbuf_f64(w, c->ms);
        for (int i = 0; i < s->d; i++) {
            ps_wbuf_f64(w, c->sum[i]);
            ps_wbuf_f64(w, c->pos[i]);
        }
        ps_welford_save(&s->spend[k], w);
    }
    ps_wbuf_u64(w, s->updates_since_step);
    ps_wbuf_u64(w, s->updates_since_sweep);
    ps_wbuf_u64(w, s->sweeps);
    ps_wbuf_u64(w, s->reseeds);
    ps_kmeans_save(s->km, w);
    return 1;
}

static int seg_load_state(void *self, const void *blob, size_t len)
{
    segments *s = self;
    ps_rbuf r;
    uint8_t version, f;
    uint32_t k, d;
    uint64_t u;
    char err[128];
    popstat pop = {0};
    cell cells[PS_KMEANS_MAX_K];
    ps_welford spend[PS_KMEANS_MAX_K];
    uint64_t counters[4];

    /* parse into temporaries: a rejected blob leaves the model as it was */
    memset(cells, 0, sizeof(cells));
    ps_rbuf_init(&r, blob, len);
    if (ps_rbuf_u8(&r, &version) < 0 || version != SEG_MODEL_VERSION ||
        ps_rbuf_u32(&r, &k) < 0 || (int)k != s->k ||
        ps_rbuf_u32(&r, &d) < 0 || (int)d != s->d)
        return PS_ERR_STATE;
    for (int i = 0; i < s->d; i++)
        if (ps_rbuf_u8(&r, &f) < 0 || f != s->feat.kind[i])
            return PS_ERR_STATE; /* saved with other features */
    if (ps_rbuf_f64(&r, &pop.n) < 0 || !(pop.n >= 0))
        return PS_ERR_STATE;
    for (int i = 0; i < s->d; i++)
        if (ps_rbuf_f64(&r, &pop.shift[i]) < 0 ||
            ps_rbuf_f64(&r, &pop.s1[i]) < 0 || ps_rbuf_f64(&r, &pop.s2[i]) < 0)
            return PS_ERR_STATE;
    for (int j = 0; j < s->k; j++) {
        if (ps_rbuf_u64(&r, &u) < 0 || u > INT64_MAX ||
            ps_rbuf_f64(&r, &cells[j].w) < 0 ||
            ps_rbuf_f64(&r, &cells[j].ms) < 0)
            return PS_ERR_STATE;
        cells[j].n = (int64_t)u;
        for (int i = 0; i < s->d; i++)
            if (ps_rbuf_f64(&r, &cells[j].sum[i]) < 0 ||
                ps_rbuf_f64(&r, &cells[j].pos[i]) < 0 ||
                !isfinite(cells[j].pos[i]))
                return PS_ERR_STATE;
        if (ps_welford_load(&spend[j], &r) < 0)
            return PS_ERR_STATE;
    }
    for (int i = 0; i < 4; i++)
        if (ps_rbuf_u64(&r, &counters[i]) < 0)
            return PS_ERR_STATE;
    ps_kmeans_t *km = ps_kmeans_load(&r, err, sizeof(err));
    if (km == NULL || ps_rbuf_left(&r) != 0 ||
        ps_kmeans_conf_get(km)->k != s->k ||
        ps_kmeans_conf_get(km)->d != s->d) {
        ps_kmeans_destroy(km);
        return PS_ERR_STATE;
    }
    s->pop = pop;
    memcpy(s->cells, cells, sizeof(cells));
    memcpy(s->spend, spend, (size_t)s->k * sizeof(spend[0]));
    s->updates_since_step = counters[0];
    s->updates_since_sweep = counters[1];
    s->sweeps = counters[2];
    s->reseeds = counters[3];
    ps_kmeans_destroy(s->km);
    s->km = km;
    if (ps_kmeans_initialised(s->km)) {
        sync_all(s);
        names_refresh(s, false);
    }
    return PS_OK;
}

static void seg_save_customer(void *self, const ps_entity *cust,
                              const void *state, ps_wbuf *w)
{
    const seg_cust *c = state;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, SEG_STATE_VERSION);
    ps_wbuf_u32(w, c->in.n);
    ps_wbuf_u32(w, c->in.clicks);
    ps_wbuf_u32(w, c->in.wishlists);
    ps_wbuf_u32(w, (uint32_t)c->segment);
    ps_wbuf_f64(w, c->in.mean);
    ps_wbuf_f64(w, c->in.total);
    ps_wbuf_u64(w, (uint64_t)c->in.first_ts);
    ps_wbuf_u64(w, (uint64_t)c->in.last_ts);
    ps_wbuf_u64(w, (uint64_t)c->in.last_purchase_ts);
}

static int seg_load_customer(void *self, ps_entity *cust, void *state,
                             ps_rbuf *r)
{
    segments *s = self;
    seg_cust *c = state;
    uint8_t version;
    uint32_t seg;
    uint64_t t[3];
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version != SEG_STATE_VERSION ||
        ps_rbuf_u32(r, &c->in.n) < 0 || ps_rbuf_u32(r, &c->in.clicks) < 0 ||
        ps_rbuf_u32(r, &c->in.wishlists) < 0 || ps_rbuf_u32(r, &seg) < 0 ||
        ps_rbuf_f64(r, &c->in.mean) < 0 || ps_rbuf_f64(r, &c->in.total) < 0 ||
        ps_rbuf_u64(r, &t[0]) < 0 || ps_rbuf_u64(r, &t[1]) < 0 ||
        ps_rbuf_u64(r, &t[2]) < 0)
        return PS_ERR_STATE;
    c->segment = (int32_t)seg;
    c->in.first_ts = (int64_t)t[0];
    c->in.last_ts = (int64_t)t[1];
    c->in.last_purchase_ts = (int64_t)t[2];
    if (c->segment < -1 || c->segment >= s->k || !isfinite(c->in.mean) ||
        !isfinite(c->in.total))
        return PS_ERR_STATE;
    c->in.seen = 1;
    c->changed_gen = 0;
    return PS_OK;
}

/* ---------------------------------------------------------------- public */

int ps_segments_of(ps_pipeline *p, const ps_entity *cust)
{
    static int index = -2;
    if (index == -2)
        index = PS_AGG_INDEX_segments;
    if (index < 0)
        return -1;
    const seg_cust *c = ps_pipeline_slice(p, cust, (size_t)index);
    if (!c->in.seen)
        return -1; /* zeroed slice: not seen by this aggregate yet */
    return c->segment;
}

const char *ps_segments_name(ps_pipeline *p, int k)
{
    static int index = -2; /* the registry is fixed at build time */
    if (index == -2)
        index = PS_AGG_INDEX_segments;
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
    .save_customer = seg_save_customer,
    .load_customer = seg_load_customer,
    .save_state = seg_save_state,
    .load_state = seg_load_state,
};
