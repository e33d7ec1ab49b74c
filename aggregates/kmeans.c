/*
 * kmeans.c -- online mini-batch k-means with stable ids and names.
 *
 * Algorithms.
 *   - Seeding: k-means++ (Arthur and Vassilvitskii 2007, "k-means++: the
 *     advantages of careful seeding"): the first centre is a uniformly drawn
 *     point, each next one a point drawn with probability proportional to
 *     its squared distance D(x)^2 to the nearest centre chosen so far.
 *     Draws come from splitmix64 (Steele, Lea and Flood 2014) seeded with
 *     conf.seed, whose whole state is one uint64 and is saved.
 *   - Steps: mini-batch k-means (Sculley 2010, algorithm 1): the batch is
 *     assigned with the centres as they were at the start of the step
 *     (cached nearest centres), then the points are applied in arrival order
 *     with per-centre learning rate 1 / weight.  Forgetting multiplies the
 *     weights by 0.5^(1 / half_life) once per step, before the update; that
 *     is Spark StreamingKMeans' rule c' = (c n a + sum(x)) / (n a + m)
 *     written one point at a time.
 *   - First step: seeding, conf.init_iters Lloyd iterations on the buffer
 *     (Lloyd 1982; an empty cell keeps its centre), then the mini-batch
 *     update above with all weights 0, so a centre is the mean of its cell.
 *   - Dying centres (cf. the reassignment of low-count centres in
 *     scikit-learn's MiniBatchKMeans): see kmeans.h; farthest-first over the
 *     current batch, deterministic.
 *
 * Invariants.  Before initialisation only the buffer is meaningful.  After
 * it: centres and weights are finite, weights >= 0, centre i is never moved
 * to another index, role[] is -1 everywhere until the first ps_kmeans_name
 * call and a permutation of 0..k-1 after it.  buf holds nbuf < batch points
 * between calls.  The object is one malloc'ed block: the struct followed by
 * the buffer (batch x d doubles) and scratch (batch doubles, batch ints).
 *
 * Also here, for evaluation only (they allocate): batch Lloyd k-means with
 * restarts, inertia, and the adjusted Rand index.
 */
#include "kmeans.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

#define KM_MAGIC 0x4d4b5350u /* "PSKM" little-endian */
#define KM_VERSION 1

struct ps_kmeans {
    ps_kmeans_conf conf;
    int initialised;
    uint64_t rng; /* splitmix64 state */
    uint64_t steps, reseeds;
    size_t nbuf;
    double c[PS_KMEANS_MAX_K][PS_KMEANS_MAX_D];
    double w[PS_KMEANS_MAX_K];
    uint32_t idle[PS_KMEANS_MAX_K];
    /* naming */
    int named;
    int name_amount, name_count; /* dims used by the last ps_kmeans_name */
    int role[PS_KMEANS_MAX_K];
    char names[PS_KMEANS_MAX_K][PS_KMEANS_NAME_MAX];
    /* in the same block, after the struct */
    double *buf;  /* batch x d */
    double *dist; /* batch */
    int *lab;     /* batch */
};

/* ---------------------------------------------------------------------- */
/* PRNG and geometry                                                       */
/* ---------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static double dist2(const double *a, const double *b, int d)
{
    double s = 0;
    for (int j = 0; j < d; j++) {
        double t = a[j] - b[j];
        s += t * t;
    }
    return s;
}

/* Nearest of k centres (row i at centres + i * stride); ties to the lowest
 * index.  *best_d2 (if non-NULL) gets the squared distance. */
static int nearest(const double *centres, size_t stride, int k, int d,
                   const double *x, double *best_d2)
{
    int best = 0;
    double bd = dist2(centres, x, d);
    for (int i = 1; i < k; i++) {
        double t = dist2(centres + (size_t)i * stride, x, d);
        if (t < bd) {
            bd = t;
            best = i;
        }
    }
    if (best_d2 != NULL)
        *best_d2 = bd;
    return best;
}

/* k-means++ seeding of k centres (stride `stride`) from n >= 1 points;
 * dist is scratch for n doubles. */
static void kmeanspp(const double *x, size_t n, int d, int k, uint64_t *rng,
                     double *centres, size_t stride, double *dist)
{
    size_t p0 = (size_t)(rng_unit(rng) * (double)n);
    if (p0 >= n)
        p0 = n - 1;
    memcpy(centres, x + p0 * (size_t)d, (size_t)d * sizeof(double));
    for (size_t p = 0; p < n; p++)
        dist[p] = dist2(x + p * (size_t)d, centres, d);

    for (int i = 1; i < k; i++) {
        double total = 0;
        for (size_t p = 0; p < n; p++)
            total += dist[p];
        double r = rng_unit(rng) * total; /* always drawn: fixed sequence */
        size_t chosen = 0; /* all points on centres: take the first */
        if (total > 0) {
            double acc = 0;
            size_t last = 0;
            int found = 0;
            for (size_t p = 0; p < n; p++) {
                if (dist[p] > 0) {
                    acc += dist[p];
                    last = p;
                    if (acc > r) {
                        chosen = p;
                        found = 1;
                        break;
                    }
                }
            }
            if (!found) /* rounding: r reached the total */
                chosen = last;
        }
        double *ci = centres + (size_t)i * stride;
        memcpy(ci, x + chosen * (size_t)d, (size_t)d * sizeof(double));
        for (size_t p = 0; p < n; p++) {
            double t = dist2(x + p * (size_t)d, ci, d);
            if (t < dist[p])
                dist[p] = t;
        }
    }
}

/* Label every point with its nearest centre; returns how many changed. */
static size_t assign_all(const double *centres, size_t stride, int k, int d,
                         const double *x, size_t n, int *lab)
{
    size_t changed = 0;
    for (size_t p = 0; p < n; p++) {
        int j = nearest(centres, stride, k, d, x + p * (size_t)d, NULL);
        if (j != lab[p]) {
            lab[p] = j;
            changed++;
        }
    }
    return changed;
}

/* Up to max_iter Lloyd iterations; stops when no label changes.  lab must
 * hold the labels of the current centres or -1. */
static void lloyd_iterate(double *centres, size_t stride, int k, int d,
                          const double *x, size_t n, int *lab, int max_iter)
{
    for (int it = 0; it < max_iter; it++) {
        if (assign_all(centres, stride, k, d, x, n, lab) == 0 && it > 0)
            break;
        double sum[PS_KMEANS_MAX_K][PS_KMEANS_MAX_D] = {{0}};
        size_t cnt[PS_KMEANS_MAX_K] = {0};
        for (size_t p = 0; p < n; p++) {
            cnt[lab[p]]++;
            for (int j = 0; j < d; j++)
                sum[lab[p]][j] += x[p * (size_t)d + j];
        }
        for (int i = 0; i < k; i++)
            if (cnt[i] > 0)
                for (int j = 0; j < d; j++)
                    centres[(size_t)i * stride + j] =
                        sum[i][j] / (double)cnt[i];
    }
}

double ps_kmeans_inertia_of(const double *centres, int k, int d,
                            const double *x, size_t n)
{
    double s = 0;
    for (size_t p = 0; p < n; p++) {
        double t;
        nearest(centres, (size_t)d, k, d, x + p * (size_t)d, &t);
        s += t;
    }
    return s;
}

/* ---------------------------------------------------------------------- */
/* Life cycle                                                              */
/* ---------------------------------------------------------------------- */

void ps_kmeans_conf_default(ps_kmeans_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    conf->k = 3;
    conf->d = 2;
    conf->batch = 256;
    conf->seed = 1;
    conf->half_life = 0;
    conf->min_weight = 1.0;
    conf->max_idle = 20;
    conf->init_iters = 10;
    conf->rename_margin = 0.1;
}

static int conf_check(const ps_kmeans_conf *conf, char *errstr,
                      size_t errstr_size)
{
    if (conf->k < 1 || conf->k > PS_KMEANS_MAX_K) {
        ps_set_err(errstr, errstr_size, "kmeans: k = %d not in 1..%d", conf->k,
                   PS_KMEANS_MAX_K);
        return PS_ERR_CONFIG;
    }
    if (conf->d < 1 || conf->d > PS_KMEANS_MAX_D) {
        ps_set_err(errstr, errstr_size, "kmeans: d = %d not in 1..%d", conf->d,
                   PS_KMEANS_MAX_D);
        return PS_ERR_CONFIG;
    }
    if (conf->batch < conf->k || conf->batch > PS_KMEANS_MAX_BATCH) {
        ps_set_err(errstr, errstr_size, "kmeans: batch = %d not in k..%d",
                   conf->batch, PS_KMEANS_MAX_BATCH);
        return PS_ERR_CONFIG;
    }
    if (isnan(conf->half_life) || isinf(conf->half_life)) {
        ps_set_err(errstr, errstr_size, "kmeans: half_life must be finite");
        return PS_ERR_CONFIG;
    }
    if (!(conf->min_weight >= 0) || !isfinite(conf->min_weight)) {
        ps_set_err(errstr, errstr_size,
                   "kmeans: min_weight must be finite and >= 0");
        return PS_ERR_CONFIG;
    }
    if (conf->max_idle < 0 || conf->init_iters < 0) {
        ps_set_err(errstr, errstr_size,
                   "kmeans: max_idle and init_iters must be >= 0");
        return PS_ERR_CONFIG;
    }
    if (!(conf->rename_margin >= 0) || !isfinite(conf->rename_margin)) {
        ps_set_err(errstr, errstr_size,
                   "kmeans: rename_margin must be finite and >= 0");
        return PS_ERR_CONFIG;
    }
    return PS_OK;
}

ps_kmeans_t *ps_kmeans_new(const ps_kmeans_conf *conf, char *errstr,
                           size_t errstr_size)
{
    if (conf_check(conf, errstr, errstr_size) != PS_OK)
        return NULL;
    size_t b = (size_t)conf->batch;
    /* sizeof(struct) is a multiple of its alignment (>= that of double). */
    size_t size = sizeof(ps_kmeans_t) + b * (size_t)conf->d * sizeof(double) +
                  b * sizeof(double) + b * sizeof(int);
    ps_kmeans_t *km = calloc(1, size);
    if (km == NULL) {
        ps_set_err(errstr, errstr_size, "kmeans: out of memory");
        return NULL;
    }
    km->conf = *conf;
    km->rng = conf->seed;
    km->buf = (double *)(km + 1);
    km->dist = km->buf + b * (size_t)conf->d;
    km->lab = (int *)(km->dist + b);
    km->name_amount = km->name_count = -1;
    for (int i = 0; i < PS_KMEANS_MAX_K; i++)
        km->role[i] = -1;
    return km;
}

void ps_kmeans_destroy(ps_kmeans_t *km)
{
    free(km);
}

const ps_kmeans_conf *ps_kmeans_conf_get(const ps_kmeans_t *km)
{
    return &km->conf;
}

/* ---------------------------------------------------------------------- */
/* Steps                                                                   */
/* ---------------------------------------------------------------------- */

/* Reseed dying centres at the batch points farthest from the centres that
 * stay (see kmeans.h).  Points: buf[0..n). */
static void reseed_dying(ps_kmeans_t *km, size_t n)
{
    const int k = km->conf.k, d = km->conf.d;
    int dying[PS_KMEANS_MAX_K];
    int any = 0;

    for (int i = 0; i < k; i++) {
        dying[i] =
            km->idle[i] >= 1 && (km->w[i] < km->conf.min_weight ||
                                 (km->conf.max_idle > 0 &&
                                  km->idle[i] >= (uint32_t)km->conf.max_idle));
        any |= dying[i];
    }
    if (!any)
        return;

    for (size_t p = 0; p < n; p++) {
        double bd = INFINITY;
        for (int i = 0; i < k; i++) {
            if (dying[i])
                continue;
            double t = dist2(km->buf + p * (size_t)d, km->c[i], d);
            if (t < bd)
                bd = t;
        }
        km->dist[p] = bd;
    }
    for (int i = 0; i < k; i++) {
        if (!dying[i])
            continue;
        size_t best = 0;
        double bd = -1;
        for (size_t p = 0; p < n; p++) {
            if (km->dist[p] > bd) {
                bd = km->dist[p];
                best = p;
            }
        }
        /* Every point sits on a staying centre: a reseed would only make a
         * duplicate.  Leave the rest dying; they are retried next step. */
        if (!(bd > 0))
            break;
        const double *x = km->buf + best * (size_t)d;
        memcpy(km->c[i], x, (size_t)d * sizeof(double));
        km->w[i] = 1;
        km->idle[i] = 0;
        km->reseeds++;
        for (size_t p = 0; p < n; p++) {
            double t = dist2(km->buf + p * (size_t)d, x, d);
            if (t < km->dist[p])
                km->dist[p] = t;
        }
    }
}

/* One step on buf[0..n), n >= 1 (>= k before initialisation). */
static void step(ps_kmeans_t *km, size_t n)
{
    const int k = km->conf.k, d = km->conf.d;

    if (!km->initialised) {
        kmeanspp(km->buf, n, d, k, &km->rng, &km->c[0][0], PS_KMEANS_MAX_D,
                 km->dist);
        for (size_t p = 0; p < n; p++)
            km->lab[p] = -1;
        lloyd_iterate(&km->c[0][0], PS_KMEANS_MAX_D, k, d, km->buf, n, km->lab,
                      km->conf.init_iters);
        for (int i = 0; i < k; i++) {
            km->w[i] = 0;
            km->idle[i] = 0;
        }
        km->initialised = 1;
    } else if (km->conf.half_life > 0) {
        double a = pow(0.5, 1.0 / km->conf.half_life);
        for (int i = 0; i < k; i++)
            km->w[i] *= a;
    }

    /* Sculley 2010: cache nearest centres, then per-centre rate 1/weight. */
    assign_all(&km->c[0][0], PS_KMEANS_MAX_D, k, d, km->buf, n, km->lab);
    int got[PS_KMEANS_MAX_K] = {0};
    for (size_t p = 0; p < n; p++) {
        const double *x = km->buf + p * (size_t)d;
        int i = km->lab[p];
        km->w[i] += 1;
        got[i] = 1;
        double eta = 1.0 / km->w[i];
        if (eta >= 1) {
            memcpy(km->c[i], x, (size_t)d * sizeof(double));
        } else {
            for (int j = 0; j < d; j++)
                km->c[i][j] += eta * (x[j] - km->c[i][j]);
        }
    }
    for (int i = 0; i < k; i++) {
        if (got[i])
            km->idle[i] = 0;
        else if (km->idle[i] < UINT32_MAX)
            km->idle[i]++;
    }
    reseed_dying(km, n);
    km->steps++;
    km->nbuf = 0;
}

int ps_kmeans_observe(ps_kmeans_t *km, const double *x)
{
    const int d = km->conf.d;
    for (int j = 0; j < d; j++)
        if (!isfinite(x[j]))
            return PS_ERR;
    memcpy(km->buf + km->nbuf * (size_t)d, x, (size_t)d * sizeof(double));
    km->nbuf++;
    if (km->nbuf < (size_t)km->conf.batch)
        return 0;
    step(km, km->nbuf);
    return 1;
}

int ps_kmeans_flush(ps_kmeans_t *km)
{
    if (km->nbuf == 0)
        return 0;
    if (!km->initialised && km->nbuf < (size_t)km->conf.k)
        return 0;
    step(km, km->nbuf);
    return 1;
}

int ps_kmeans_assign(const ps_kmeans_t *km, const double *x)
{
    if (!km->initialised)
        return -1;
    return nearest(&km->c[0][0], PS_KMEANS_MAX_D, km->conf.k, km->conf.d, x,
                   NULL);
}

int ps_kmeans_initialised(const ps_kmeans_t *km)
{
    return km->initialised;
}

const double *ps_kmeans_centre(const ps_kmeans_t *km, int i)
{
    if (!km->initialised || i < 0 || i >= km->conf.k)
        return NULL;
    return km->c[i];
}

void ps_kmeans_set_centre(ps_kmeans_t *km, int i, const double *x,
                          double weight)
{
    if (!km->initialised || i < 0 || i >= km->conf.k || !isfinite(weight))
        return;
    for (int f = 0; f < km->conf.d; f++)
        if (!isfinite(x[f]))
            return;
    memcpy(km->c[i], x, (size_t)km->conf.d * sizeof(double));
    km->w[i] = weight;
}

int ps_kmeans_role(const ps_kmeans_t *km, int i)
{
    if (!km->named || i < 0 || i >= km->conf.k)
        return -1;
    return km->role[i];
}

double ps_kmeans_weight(const ps_kmeans_t *km, int i)
{
    if (i < 0 || i >= km->conf.k)
        return 0;
    return km->w[i];
}

uint64_t ps_kmeans_steps(const ps_kmeans_t *km)
{
    return km->steps;
}
uint64_t ps_kmeans_reseeds(const ps_kmeans_t *km)
{
    return km->reseeds;
}
size_t ps_kmeans_buffered(const ps_kmeans_t *km)
{
    return km->nbuf;
}

double ps_kmeans_inertia(const ps_kmeans_t *km, const double *x, size_t n)
{
    if (!km->initialised)
        return NAN;
    double s = 0;
    for (size_t p = 0; p < n; p++) {
        double t;
        nearest(&km->c[0][0], PS_KMEANS_MAX_D, km->conf.k, km->conf.d,
                x + p * (size_t)km->conf.d, &t);
        s += t;
    }
    return s;
}

/* ---------------------------------------------------------------------- */
/* Names                                                                   */
/* ---------------------------------------------------------------------- */

enum { ROLE_VIP = 0, ROLE_PREMIUM = 1, ROLE_REGULAR = 2 };

/* max - min of feature f over the centres. */
static double spread(const ps_kmeans_t *km, int f)
{
    double lo = km->c[0][f], hi = km->c[0][f];
    for (int i = 1; i < km->conf.k; i++) {
        if (km->c[i][f] < lo)
            lo = km->c[i][f];
        if (km->c[i][f] > hi)
            hi = km->c[i][f];
    }
    return hi - lo;
}

static int argmax_feature(const ps_kmeans_t *km, int f, int skip)
{
    int best = -1;
    for (int i = 0; i < km->conf.k; i++) {
        if (i == skip)
            continue;
        if (best < 0 || km->c[i][f] > km->c[best][f])
            best = i;
    }
    return best;
}

static int holder(const int *role, int k, int r)
{
    for (int i = 0; i < k; i++)
        if (role[i] == r)
            return i;
    return -1;
}

/* vip / premium / regular with hysteresis (kmeans.h). */
static void name_rule3(const ps_kmeans_t *km, int fresh, int amt, int cnt,
                       int *role)
{
    const double m = km->conf.rename_margin;
    int v = fresh ? -1 : holder(km->role, 3, ROLE_VIP);

    if (v < 0) {
        v = argmax_feature(km, cnt, -1);
    } else {
        double lim = km->c[v][cnt] + m * spread(km, cnt);
        for (int i = 0; i < 3; i++)
            if (km->c[i][cnt] > lim) {
                v = argmax_feature(km, cnt, -1);
                break;
            }
    }
    int a = v == 0 ? 1 : 0;
    int b = v == 2 ? 1 : 2;
    int p = fresh ? -1 : holder(km->role, 3, ROLE_PREMIUM);
    if (p != a && p != b) {
        p = km->c[b][amt] > km->c[a][amt] ? b : a;
    } else {
        int q = p == a ? b : a;
        if (km->c[q][amt] > km->c[p][amt] + m * spread(km, amt))
            p = q;
    }
    role[v] = ROLE_VIP;
    role[p] = ROLE_PREMIUM;
    role[p == a ? b : a] = ROLE_REGULAR;
}

/* segment-<rank> by ascending feature f, re-ranked only when two centres
 * are out of order by more than the margin. */
static void name_generic(const ps_kmeans_t *km, int fresh, int f, int *role)
{
    const int k = km->conf.k;
    int rerank = fresh;

    if (!rerank) {
        double lim = km->conf.rename_margin * spread(km, f);
        for (int i = 0; i < k && !rerank; i++)
            for (int j = 0; j < k; j++)
                if (km->role[i] < km->role[j] &&
                    km->c[i][f] > km->c[j][f] + lim) {
                    rerank = 1;
                    break;
                }
    }
    if (!rerank) {
        memcpy(role, km->role, (size_t)k * sizeof(int));
        return;
    }
    /* Stable insertion sort of indices by c[.][f]: ties keep index order. */
    int idx[PS_KMEANS_MAX_K];
    for (int i = 0; i < k; i++) {
        int j = i;
        while (j > 0 && km->c[idx[j - 1]][f] > km->c[i][f]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    for (int r = 0; r < k; r++)
        role[idx[r]] = r;
}

static void write_names(ps_kmeans_t *km, int rule3)
{
    static const char *const names3[] = {"vip", "premium", "regular"};
    for (int i = 0; i < km->conf.k; i++) {
        if (rule3)
            snprintf(km->names[i], PS_KMEANS_NAME_MAX, "%s",
                     names3[km->role[i]]);
        else
            snprintf(km->names[i], PS_KMEANS_NAME_MAX, "segment-%d",
                     km->role[i]);
    }
}

static int use_rule3(const ps_kmeans_t *km, int amt, int cnt)
{
    return km->conf.k == 3 && amt >= 0 && cnt >= 0 && amt != cnt;
}

int ps_kmeans_name(ps_kmeans_t *km, int amount_dim, int count_dim,
                   const char **names)
{
    const int k = km->conf.k, d = km->conf.d;
    if (!km->initialised)
        return -1;
    if (amount_dim >= d)
        amount_dim = -1;
    if (count_dim >= d)
        count_dim = -1;
    if (amount_dim < 0)
        amount_dim = -1;
    if (count_dim < 0)
        count_dim = -1;

    int fresh = !km->named || amount_dim != km->name_amount ||
                count_dim != km->name_count;
    int rule3 = use_rule3(km, amount_dim, count_dim);
    int role[PS_KMEANS_MAX_K];

    if (rule3)
        name_rule3(km, fresh, amount_dim, count_dim, role);
    else
        name_generic(km, fresh,
                     amount_dim >= 0 ? amount_dim
                                     : (count_dim >= 0 ? count_dim : 0),
                     role);

    int changed = 0;
    for (int i = 0; i < k; i++) {
        if (fresh || role[i] != km->role[i])
            changed++;
        km->role[i] = role[i];
    }
    km->named = 1;
    km->name_amount = amount_dim;
    km->name_count = count_dim;
    write_names(km, rule3);
    for (int i = 0; i < k; i++)
        names[i] = km->names[i];
    return changed;
}

/* ---------------------------------------------------------------------- */
/* Save / load                                                             */
/* ---------------------------------------------------------------------- */

void ps_kmeans_save(const ps_kmeans_t *km, ps_wbuf *wb)
{
    const ps_kmeans_conf *cf = &km->conf;
    const int k = cf->k, d = cf->d;

    ps_wbuf_u32(wb, KM_MAGIC);
    ps_wbuf_u8(wb, KM_VERSION);
    ps_wbuf_u32(wb, (uint32_t)cf->k);
    ps_wbuf_u32(wb, (uint32_t)cf->d);
    ps_wbuf_u32(wb, (uint32_t)cf->batch);
    ps_wbuf_u64(wb, cf->seed);
    ps_wbuf_f64(wb, cf->half_life);
    ps_wbuf_f64(wb, cf->min_weight);
    ps_wbuf_u32(wb, (uint32_t)cf->max_idle);
    ps_wbuf_u32(wb, (uint32_t)cf->init_iters);
    ps_wbuf_f64(wb, cf->rename_margin);

    ps_wbuf_u8(wb, (uint8_t)km->initialised);
    ps_wbuf_u8(wb, (uint8_t)km->named);
    ps_wbuf_u32(wb, (uint32_t)km->name_amount);
    ps_wbuf_u32(wb, (uint32_t)km->name_count);
    ps_wbuf_u64(wb, km->rng);
    ps_wbuf_u64(wb, km->steps);
    ps_wbuf_u64(wb, km->reseeds);
    ps_wbuf_u32(wb, (uint32_t)km->nbuf);
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < d; j++)
            ps_wbuf_f64(wb, km->c[i][j]);
        ps_wbuf_f64(wb, km->w[i]);
        ps_wbuf_u32(wb, km->idle[i]);
        ps_wbuf_u32(wb, (uint32_t)km->role[i]);
    }
    for (size_t p = 0; p < km->nbuf * (size_t)d; p++)
        ps_wbuf_f64(wb, km->buf[p]);
}

/* A u32 written from an int in [-1, max). */
static int get_int(ps_rbuf *rb, int lo, int hi, int *out)
{
    uint32_t u;
    if (ps_rbuf_u32(rb, &u) < 0)
        return -1;
    int32_t v = (int32_t)u;
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int get_finite(ps_rbuf *rb, double *out)
{
    if (ps_rbuf_f64(rb, out) < 0 || !isfinite(*out))
        return -1;
    return 0;
}

ps_kmeans_t *ps_kmeans_load(ps_rbuf *rb, char *errstr, size_t errstr_size)
{
    uint32_t magic;
    uint8_t version, init, named;
    ps_kmeans_conf cf;
    ps_kmeans_t *km = NULL;

    memset(&cf, 0, sizeof(cf));
    if (ps_rbuf_u32(rb, &magic) < 0 || magic != KM_MAGIC ||
        ps_rbuf_u8(rb, &version) < 0 || version != KM_VERSION)
        goto corrupt;
    if (get_int(rb, 1, PS_KMEANS_MAX_K, &cf.k) < 0 ||
        get_int(rb, 1, PS_KMEANS_MAX_D, &cf.d) < 0 ||
        get_int(rb, 1, PS_KMEANS_MAX_BATCH, &cf.batch) < 0 ||
        ps_rbuf_u64(rb, &cf.seed) < 0 || ps_rbuf_f64(rb, &cf.half_life) < 0 ||
        ps_rbuf_f64(rb, &cf.min_weight) < 0 ||
        get_int(rb, 0, INT32_MAX, &cf.max_idle) < 0 ||
        get_int(rb, 0, INT32_MAX, &cf.init_iters) < 0 ||
        ps_rbuf_f64(rb, &cf.rename_margin) < 0)
        goto corrupt;
    if (conf_check(&cf, errstr, errstr_size) != PS_OK)
        return NULL;
    km = ps_kmeans_new(&cf, errstr, errstr_size);
    if (km == NULL)
        return NULL;

    const int k = cf.k, d = cf.d;
    int nbuf;
    if (ps_rbuf_u8(rb, &init) < 0 || init > 1 || ps_rbuf_u8(rb, &named) < 0 ||
        named > 1 || get_int(rb, -1, d - 1, &km->name_amount) < 0 ||
        get_int(rb, -1, d - 1, &km->name_count) < 0 ||
        ps_rbuf_u64(rb, &km->rng) < 0 || ps_rbuf_u64(rb, &km->steps) < 0 ||
        ps_rbuf_u64(rb, &km->reseeds) < 0 ||
        get_int(rb, 0, cf.batch - 1, &nbuf) < 0)
        goto corrupt;
    km->initialised = init;
    km->named = named;
    km->nbuf = (size_t)nbuf;
    if (named && !init)
        goto corrupt;

    unsigned seen = 0;
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < d; j++)
            if (get_finite(rb, &km->c[i][j]) < 0)
                goto corrupt;
        if (get_finite(rb, &km->w[i]) < 0 || km->w[i] < 0 ||
            ps_rbuf_u32(rb, &km->idle[i]) < 0 ||
            get_int(rb, -1, k - 1, &km->role[i]) < 0)
            goto corrupt;
        if (named) {
            if (km->role[i] < 0 || (seen & (1u << km->role[i])))
                goto corrupt;
            seen |= 1u << km->role[i];
        } else if (km->role[i] != -1) {
            goto corrupt;
        }
    }
    for (size_t p = 0; p < km->nbuf * (size_t)d; p++)
        if (get_finite(rb, &km->buf[p]) < 0)
            goto corrupt;
    if (named)
        write_names(km, use_rule3(km, km->name_amount, km->name_count));
    return km;

corrupt:
    ps_set_err(errstr, errstr_size, "kmeans: corrupt or truncated state");
    ps_kmeans_destroy(km);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Evaluation helpers                                                      */
/* ---------------------------------------------------------------------- */

int ps_kmeans_lloyd(const double *x, size_t n, int d, int k, int max_iter,
                    int restarts, uint64_t seed, double *centres, int *labels,
                    double *inertia)
{
    if (k < 1 || k > PS_KMEANS_MAX_K || d < 1 || d > PS_KMEANS_MAX_D ||
        n < (size_t)k || max_iter < 0 || restarts < 1)
        return PS_ERR_CONFIG;
    int *lab = malloc(n * sizeof(int));
    double *dist = malloc(n * sizeof(double));
    if (lab == NULL || dist == NULL) {
        free(lab);
        free(dist);
        return PS_ERR_NOMEM;
    }
    uint64_t rng = seed;
    double best = INFINITY;
    double cur[PS_KMEANS_MAX_K * PS_KMEANS_MAX_D];
    for (int r = 0; r < restarts; r++) {
        kmeanspp(x, n, d, k, &rng, cur, (size_t)d, dist);
        for (size_t p = 0; p < n; p++)
            lab[p] = -1;
        lloyd_iterate(cur, (size_t)d, k, d, x, n, lab, max_iter);
        double in = ps_kmeans_inertia_of(cur, k, d, x, n);
        if (r == 0 || in < best) {
            best = in;
            memcpy(centres, cur, (size_t)k * (size_t)d * sizeof(double));
        }
    }
    if (labels != NULL) {
        for (size_t p = 0; p < n; p++)
            labels[p] = -1;
        assign_all(centres, (size_t)d, k, d, x, n, labels);
    }
    if (inertia != NULL)
        *inertia = best;
    free(lab);
    free(dist);
    return PS_OK;
}

double ps_kmeans_ari(const int *labels_a, const int *labels_b, size_t n)
{
    if (n < 2)
        return NAN;
    int ka = 0, kb = 0;
    for (size_t p = 0; p < n; p++) {
        if (labels_a[p] < 0 || labels_b[p] < 0)
            return NAN;
        if (labels_a[p] >= ka)
            ka = labels_a[p] + 1;
        if (labels_b[p] >= kb)
            kb = labels_b[p] + 1;
    }
    size_t cells = (size_t)ka * (size_t)kb;
    if (cells / (size_t)kb != (size_t)ka)
        return NAN;
    double *table = calloc(cells + (size_t)ka + (size_t)kb, sizeof(double));
    if (table == NULL)
        return NAN;
    double *row = table + cells, *col = row + ka;
    for (size_t p = 0; p < n; p++) {
        table[(size_t)labels_a[p] * (size_t)kb + (size_t)labels_b[p]] += 1;
        row[labels_a[p]] += 1;
        col[labels_b[p]] += 1;
    }
    double index = 0, sa = 0, sb = 0;
    for (size_t c = 0; c < cells; c++)
        index += table[c] * (table[c] - 1) / 2;
    for (int i = 0; i < ka; i++)
        sa += row[i] * (row[i] - 1) / 2;
    for (int j = 0; j < kb; j++)
        sb += col[j] * (col[j] - 1) / 2;
    free(table);
    double pairs = (double)n * (double)(n - 1) / 2;
    double expected = sa * sb / pairs;
    double max = (sa + sb) / 2;
    if (max == expected)
        return 1.0;
    return (index - expected) / (max - expected);
}
