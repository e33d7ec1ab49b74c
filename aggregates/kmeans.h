/*
 * kmeans.h -- online mini-batch k-means for customer segments.
 *
 * Points (d <= 8 features, e.g. the standardised mean purchase amount and
 * number of purchases) arrive one at a time and are buffered; every `batch`
 * points the model takes one step:
 *   - first step: k-means++ seeding (Arthur and Vassilvitskii 2007) on the
 *     buffer with a deterministic PRNG, optionally refined by a few Lloyd
 *     iterations on the same buffer, then a mini-batch update with all
 *     weights 0, so every centre becomes the mean of its cell in the first
 *     batch and its weight the size of that cell;
 *   - later steps: mini-batch k-means (Sculley 2010, "Web-scale k-means
 *     clustering"): assign every buffered point to its nearest centre, then,
 *     point by point, weight[c] += 1 and c += (x - c) / weight[c].  Without
 *     forgetting a centre is therefore exactly the running mean of every
 *     point ever assigned to it.  With a half-life of h batches, all weights
 *     are first multiplied by 0.5^(1/h) (Spark StreamingKMeans' decayFactor),
 *     so old points count less and centres follow drifting behaviour.
 *   - dying centres: after a step, a centre that received no point in it and
 *     whose weight is below `min_weight`, or that received nothing for
 *     `max_idle` consecutive steps, is reseeded at the batch point farthest
 *     from the centres that stay (greedy farthest-first, ties to the lowest
 *     point index), with weight 1.
 * Centre i keeps index i for ever (reseeding reuses the index), so ids never
 * churn.  Everything is deterministic given the configuration, the seed and
 * the order of the points.
 *
 * Memory: one allocation in ps_kmeans_new() (buffer and scratch for `batch`
 * points); observing and stepping never allocate.  Not thread-safe: one
 * owner per object.
 */
#ifndef PS_KMEANS_H
#define PS_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"

#define PS_KMEANS_MAX_K 16
#define PS_KMEANS_MAX_D 8
#define PS_KMEANS_MAX_BATCH (1 << 20)
#define PS_KMEANS_NAME_MAX 24

typedef struct ps_kmeans_conf {
    int k;             /* centres, 1..PS_KMEANS_MAX_K (default 3) */
    int d;             /* features, 1..PS_KMEANS_MAX_D (default 2) */
    int batch;         /* points per step, k..PS_KMEANS_MAX_BATCH (256) */
    uint64_t seed;     /* PRNG seed for k-means++ (1) */
    double half_life;  /* forgetting half-life in steps; <= 0: none (0) */
    double min_weight; /* idle centre below this weight is dying (1.0) */
    int max_idle;      /* steps without points before reseeding; 0: off (20) */
    int init_iters;    /* Lloyd iterations on the first batch (10) */
    double rename_margin; /* naming hysteresis, see ps_kmeans_name (0.1) */
} ps_kmeans_conf;

typedef struct ps_kmeans ps_kmeans_t;

/* Fill *conf with the defaults shown above. */
void ps_kmeans_conf_default(ps_kmeans_conf *conf);

/* New model from a copy of *conf.  NULL on invalid configuration or out of
 * memory, with a reason in errstr.  The caller owns the result. */
ps_kmeans_t *ps_kmeans_new(const ps_kmeans_conf *conf, char *errstr,
                           size_t errstr_size);

/* Free the model; NULL is a no-op. */
void ps_kmeans_destroy(ps_kmeans_t *km);

/* The configuration the model runs with. */
const ps_kmeans_conf *ps_kmeans_conf_get(const ps_kmeans_t *km);

/*
 * Add one point x[0..d-1] (copied).  Returns 1 when it completed a batch
 * and the model took a step (centres may have moved: re-assign and re-name),
 * 0 when it was only buffered, PS_ERR when x has a non-finite coordinate
 * (the point is dropped).
 */
int ps_kmeans_observe(ps_kmeans_t *km, const double *x);

/*
 * Take a step now on a partly filled buffer (e.g. at the end of a replay).
 * Before initialisation this needs at least k buffered points.  Returns 1
 * if a step was taken, 0 if not (empty buffer, or too few points to
 * initialise; they stay buffered).
 */
int ps_kmeans_flush(ps_kmeans_t *km);

/* Index of the centre nearest to x (squared Euclidean distance; ties go to
 * the lowest index), or -1 before initialisation. */
int ps_kmeans_assign(const ps_kmeans_t *km, const double *x);

int ps_kmeans_initialised(const ps_kmeans_t *km);
/* Centre i (d doubles, borrowed until destroy; updated by every step), NULL if
 * i is out of range or the model is not initialised. */
const double *ps_kmeans_centre(const ps_kmeans_t *km, int i);
/* Overwrite centre i (d doubles) and its weight, e.g. by an owner that
 * keeps the exact mean of each cell itself (segments.c) and uses the model
 * for seeding, assignment and naming.  Ignored before initialisation or
 * for i out of range or a non-finite coordinate. */
void ps_kmeans_set_centre(ps_kmeans_t *km, int i, const double *x,
                          double weight);
/* Role of centre i in the last ps_kmeans_name call: for the k = 3 rule
 * 0 vip, 1 premium, 2 regular; for the generic rule its rank.  -1 before
 * naming.  Lets an owner map roles to names of its own. */
int ps_kmeans_role(const ps_kmeans_t *km, int i);
/* Weight (decayed point count) of centre i; 0 if out of range. */
double ps_kmeans_weight(const ps_kmeans_t *km, int i);
uint64_t ps_kmeans_steps(const ps_kmeans_t *km);   /* steps taken */
uint64_t ps_kmeans_reseeds(const ps_kmeans_t *km); /* centres reseeded */
size_t ps_kmeans_buffered(const ps_kmeans_t *km);  /* points waiting */

/*
 * Readable names for the centres, written to names[0..k-1] (pointers into
 * the model, valid until the next ps_kmeans_name call or destroy).
 * amount_dim and count_dim are the feature indices of the mean purchase
 * amount and of the number of purchases (-1 when absent).
 *
 * Rule for k = 3 with both features:
 *   vip     = the centre with the largest purchase count,
 *   premium = of the other two, the one with the larger mean amount,
 *   regular = the remaining one.
 * Generic rule (any other k, or a feature missing): centres ranked by
 * ascending amount_dim (else count_dim, else feature 0) are named
 * "segment-0" .. "segment-<k-1>".
 * Ties go to the lowest index.  Only the order of centre coordinates
 * matters, so the result is the same in original units and in any
 * per-feature standardisation with positive scale.
 *
 * Stability: names are given on the first call after initialisation and
 * then kept while they are right "within the margin": with S the spread
 * (max - min over the centres) of a feature and m = conf.rename_margin, a
 * holder loses its name only when another centre beats it on the deciding
 * feature by more than m S (vip: some centre's count > vip's count + m S;
 * premium: regular's amount > premium's amount + m S; generic: two centres
 * out of rank order by more than m S, which re-ranks all).  A reseeded
 * centre keeps its name under the same rule.
 *
 * Returns the number of centres whose name changed in this call (k on the
 * first call), or -1 before initialisation (names[] untouched).
 */
int ps_kmeans_name(ps_kmeans_t *km, int amount_dim, int count_dim,
                   const char **names);

/* Sum over the n points x (row-major n x d) of the squared distance to the
 * nearest centre; NaN before initialisation. */
double ps_kmeans_inertia(const ps_kmeans_t *km, const double *x, size_t n);

/* The same for explicit centres (row-major k x d). */
double ps_kmeans_inertia_of(const double *centres, int k, int d,
                            const double *x, size_t n);

/*
 * Batch k-means for comparison (benchmarks): `restarts` (>= 1) runs of
 * k-means++ seeding followed by Lloyd iterations (at most max_iter, until
 * no label changes), seeded deterministically from `seed`; the run with the
 * lowest inertia wins.  An empty cell keeps its centre.  Writes centres
 * (k x d), labels (n, may be NULL) and *inertia (may be NULL).  Returns
 * PS_OK, PS_ERR_CONFIG (k or d out of range, n < k, max_iter < 0,
 * restarts < 1) or PS_ERR_NOMEM.
 */
int ps_kmeans_lloyd(const double *x, size_t n, int d, int k, int max_iter,
                    int restarts, uint64_t seed, double *centres, int *labels,
                    double *inertia);

/*
 * Adjusted Rand index (Hubert and Arabie 1985) between two labellings of n
 * items (labels are small non-negative ints: the contingency table has
 * (max_a + 1) x (max_b + 1) cells).  1 for identical partitions (up to
 * renaming), about 0 for independent ones; 1 also when both are the same
 * trivial partition (one cluster, or all singletons) where the formula is
 * 0/0.  NaN for a negative label, n < 2 or out of memory.
 */
double ps_kmeans_ari(const int *labels_a, const int *labels_b, size_t n);

/*
 * Saved form: u32 magic "PSKM", u8 version 1, the configuration, the PRNG
 * state, counters, centres, weights, idle counts, naming state and the
 * buffered points, all little-endian.  ps_kmeans_load() builds a new model
 * from it (the saved configuration wins) or returns NULL with a reason on
 * truncated, corrupt or inconsistent input.  A loaded model behaves exactly
 * as the saved one would have.
 */
void ps_kmeans_save(const ps_kmeans_t *km, ps_wbuf *wb);
ps_kmeans_t *ps_kmeans_load(ps_rbuf *rb, char *errstr, size_t errstr_size);

#endif
