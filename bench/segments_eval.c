/*
 * segments_eval.c -- how good are propstream's customer segments?
 *
 *   segments_eval --truth FILE --redis HOST:PORT [--prefix ps:]
 *                 [--features LIST] [--restarts R] [--seed S] [--max-iter M]
 *
 * FILE is what `propstream gen --truth FILE` wrote: one JSON object per good
 * event, in emission order, with customer_id, type, amount, ts and segment
 * (the customer's true latent segment).  From it every customer's features
 * are rebuilt with propstream's own code (aggregates/segment_features.h:
 * the same per-event update and the same definitions), in the same
 * per-customer order.  --features is the same comma list as `propstream
 * run --segments-features` (default mean_amount,purchases).
 * Customers without such a purchase have no segment in propstream and are
 * left out.  The list must be the one propstream ran with: its centroids
 * are read by these names.
 *
 * For each remaining customer, `segment` is read from {prefix}cust:{id}
 * (HMGET with purchases, pipelined), and the final centroids from
 * {prefix}segment:{k} (centroid_{feature} for each feature, name).
 * Printed:
 *   - the number of customers compared (and any without a segment in Redis,
 *     which are left out of everything below);
 *   - ARI(true segment, propstream segment) (ps_kmeans_ari), and a confusion
 *     table true segment x propstream segment name;
 *   - k-means inertia of propstream's final centroids, and of a batch Lloyd
 *     k-means (ps_kmeans_lloyd: k-means++ seeding, several restarts, fixed
 *     seed, k = number of propstream segments) on the same points, and
 *     their ratio.  Both on the final features standardised with their
 *     final mean and sample standard deviation over the compared customers
 *     (propstream standardises online, with a running mean/std over every
 *     feature vector it observed; its centroids are read in original units
 *     and re-standardised here the same way as the points);
 *   - ARI(Lloyd labels, true segment), ARI(Lloyd, propstream).
 * Last line, machine-readable:
 *   segments_eval: customers=N ari=X ari_lloyd=Y inertia_ratio=Z
 *
 * Exit status 0 on success, 1 on bad input or Redis errors, 2 on usage.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "../aggregates/kmeans.h"
#include "../aggregates/segment_features.h"
#include "../common/error.h"

#define MAX_TRUE 16   /* distinct true segment names */
#define PIPE_CHUNK 1024
#define D_MAX PS_KMEANS_MAX_D

/* ---- features: aggregates/segment_features.h, as propstream computes them */

static ps_seg_features feats; /* --features */

/* A customer: the raw feature inputs propstream keeps, updated by the same
 * function (ps_seg_inputs_add), and its true segment. */
typedef struct cust {
    char *id;
    ps_seg_inputs in;
    int truth; /* index into true_names, -1 unknown */
} cust;

static int needs_ts(void)
{
    return ps_seg_features_find(&feats, PS_SEG_RECENCY) >= 0 ||
           ps_seg_features_find(&feats, PS_SEG_FREQUENCY) >= 0;
}

/* Money-valued features print with 2 decimals, the others with 4. */
static int feature_decimals(int kind)
{
    return kind == PS_SEG_MEAN_AMOUNT || kind == PS_SEG_TOTAL ? 2 : 4;
}

/* ---- customer table: open addressing on the id ------------------------ */

static cust *custs;
static size_t ncust, capcust;
static size_t *slots; /* index + 1, 0 empty */
static size_t nslots;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int rehash(size_t want)
{
    size_t *ns = calloc(want, sizeof(*ns));
    if (ns == NULL)
        return -1;
    for (size_t i = 0; i < ncust; i++) {
        size_t h = (size_t)(hash_str(custs[i].id) & (want - 1));
        while (ns[h] != 0)
            h = (h + 1) & (want - 1);
        ns[h] = i + 1;
    }
    free(slots);
    slots = ns;
    nslots = want;
    return 0;
}

static cust *cust_get(const char *id)
{
    if (nslots == 0 || (ncust + 1) * 2 > nslots)
        if (rehash(nslots ? nslots * 2 : 1024) < 0)
            return NULL;
    size_t h = (size_t)(hash_str(id) & (nslots - 1));
    while (slots[h] != 0) {
        cust *c = &custs[slots[h] - 1];
        if (strcmp(c->id, id) == 0)
            return c;
        h = (h + 1) & (nslots - 1);
    }
    if (ncust == capcust) {
        size_t nc = capcust ? capcust * 2 : 1024;
        cust *p = realloc(custs, nc * sizeof(*p));
        if (p == NULL)
            return NULL;
        custs = p;
        capcust = nc;
    }
    cust *c = &custs[ncust];
    c->id = strdup(id);
    if (c->id == NULL)
        return NULL;
    memset(&c->in, 0, sizeof(c->in));
    c->truth = -1;
    slots[h] = ++ncust;
    return c;
}

/* ---- truth file -------------------------------------------------------- */

static const char *true_names[MAX_TRUE];
static int ntrue;

static int true_index(const char *name)
{
    for (int i = 0; i < ntrue; i++)
        if (strcmp(true_names[i], name) == 0)
            return i;
    if (ntrue == MAX_TRUE)
        return -1;
    true_names[ntrue] = strdup(name);
    if (true_names[ntrue] == NULL)
        return -1;
    return ntrue++;
}

static int read_truth(const char *path, size_t *lines_out,
                      size_t *purchases_out)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        fprintf(stderr, "segments_eval: %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* the generator's own order first, so the table reads vip, regular,
     * premium whatever order customers appear in */
    true_index("vip");
    true_index("regular");
    true_index("premium");

    char *line = NULL;
    size_t cap = 0, lineno = 0, purchases = 0;
    ssize_t len;
    int rc = 0;
    const int want_ts = needs_ts();
    while ((len = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        if (len <= 1)
            continue;
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (o == NULL || !json_is_object(o)) {
            fprintf(stderr, "segments_eval: %s:%zu: bad JSON: %s\n", path,
                    lineno, o == NULL ? jerr.text : "not an object");
            json_decref(o);
            rc = -1;
            break;
        }
        const char *id = json_string_value(json_object_get(o, "customer_id"));
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *seg = json_string_value(json_object_get(o, "segment"));
        json_t *amount = json_object_get(o, "amount");
        json_t *jts = json_object_get(o, "ts");
        if (id == NULL || type == NULL || seg == NULL) {
            fprintf(stderr,
                    "segments_eval: %s:%zu: customer_id, type or segment "
                    "missing\n",
                    path, lineno);
            json_decref(o);
            rc = -1;
            break;
        }
        if (want_ts && !json_is_integer(jts)) {
            fprintf(stderr,
                    "segments_eval: %s:%zu: ts missing or not an integer "
                    "(needed by recency_days / frequency)\n",
                    path, lineno);
            json_decref(o);
            rc = -1;
            break;
        }
        int64_t ts = json_is_integer(jts) ? (int64_t)json_integer_value(jts)
                                          : 0;
        cust *c = cust_get(id);
        if (c == NULL) {
            fprintf(stderr, "segments_eval: out of memory\n");
            json_decref(o);
            rc = -1;
            break;
        }
        int t = true_index(seg);
        if (t < 0 || (c->truth >= 0 && c->truth != t)) {
            fprintf(stderr,
                    "segments_eval: %s:%zu: customer %s: segment \"%s\" "
                    "inconsistent or too many segments\n",
                    path, lineno, id, seg);
            json_decref(o);
            rc = -1;
            break;
        }
        c->truth = t;
        ps_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.ts = ts;
        ev.has_amount = json_is_number(amount);
        ev.amount = ev.has_amount ? json_number_value(amount) : 0;
        if (strcmp(type, "CLICK") == 0)
            ev.type = PS_CLICK;
        else if (strcmp(type, "WISHLIST") == 0)
            ev.type = PS_WISHLIST;
        else if (strcmp(type, "PURCHASE") == 0)
            ev.type = PS_PURCHASE;
        else if (strcmp(type, "SPEND") == 0)
            ev.type = PS_SPEND;
        else {
            fprintf(stderr, "segments_eval: %s:%zu: unknown type \"%s\"\n",
                    path, lineno, type);
            json_decref(o);
            rc = -1;
            break;
        }
        ps_seg_inputs_add(&c->in, &ev);
        if (ev.type == PS_PURCHASE && ev.has_amount)
            purchases++;
        json_decref(o);
    }
    free(line);
    if (rc == 0 && ferror(fp)) {
        fprintf(stderr, "segments_eval: %s: read error\n", path);
        rc = -1;
    }
    fclose(fp);
    *lines_out = lineno;
    *purchases_out = purchases;
    return rc;
}

/* ---- Redis ------------------------------------------------------------- */

static int parse_reply_double(const redisReply *r, double *out)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(r->str, &end);
    if (end == r->str || *end != '\0' || errno != 0 || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Reads {prefix}segment:{k} for k = 0.. until a missing one; returns the
 * number of segments, -1 on error. */
static int read_centroids(redisContext *rc, const char *prefix,
                          double *centroids, char names[][PS_KMEANS_NAME_MAX])
{
    char fields[D_MAX][64], key[512];
    const char *argv[D_MAX + 3];
    int argc = 0;
    argv[argc++] = "HMGET";
    argv[argc++] = key;
    for (int f = 0; f < feats.d; f++) {
        snprintf(fields[f], sizeof(fields[f]), "centroid_%s",
                 ps_seg_feature_name(feats.kind[f]));
        argv[argc++] = fields[f];
    }
    argv[argc++] = "name";
    int k = 0;
    for (; k < PS_KMEANS_MAX_K; k++) {
        snprintf(key, sizeof(key), "%ssegment:%d", prefix, k);
        redisReply *r = redisCommandArgv(rc, argc, argv, NULL);
        if (r == NULL) {
            fprintf(stderr, "segments_eval: redis: %s\n", rc->errstr);
            return -1;
        }
        if (r->type != REDIS_REPLY_ARRAY ||
            r->elements != (size_t)feats.d + 1) {
            fprintf(stderr, "segments_eval: redis: HMGET %ssegment:%d: %s\n",
                    prefix, k,
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }
        int nil = 0;
        for (int f = 0; f < feats.d; f++)
            nil += r->element[f]->type == REDIS_REPLY_NIL;
        if (nil == feats.d) {
            freeReplyObject(r);
            break;
        }
        for (int f = 0; f < feats.d; f++)
            if (parse_reply_double(r->element[f],
                                   &centroids[feats.d * k + f]) < 0) {
                fprintf(stderr,
                        "segments_eval: %ssegment:%d: bad or missing %s "
                        "(was propstream run with --segments-features "
                        "matching --features?)\n",
                        prefix, k, fields[f]);
                freeReplyObject(r);
                return -1;
            }
        const redisReply *rn = r->element[feats.d];
        if (rn->type == REDIS_REPLY_STRING && rn->len > 0)
            snprintf(names[k], PS_KMEANS_NAME_MAX, "%s", rn->str);
        else
            snprintf(names[k], PS_KMEANS_NAME_MAX, "seg%d", k);
        freeReplyObject(r);
    }
    return k;
}

/* seg[i] = propstream's segment of compared customer i, -1 when absent.
 * Returns 0, or -1 on a Redis error or an out-of-range segment. */
static int read_segments(redisContext *rc, const char *prefix,
                         cust *const *cmp, size_t n, int k, int *seg,
                         size_t *count_mismatch)
{
    *count_mismatch = 0;
    for (size_t base = 0; base < n; base += PIPE_CHUNK) {
        size_t end = base + PIPE_CHUNK < n ? base + PIPE_CHUNK : n;
        for (size_t i = base; i < end; i++)
            if (redisAppendCommand(rc, "HMGET %scust:%s segment purchases",
                                   prefix, cmp[i]->id) != REDIS_OK) {
                fprintf(stderr, "segments_eval: redis: %s\n", rc->errstr);
                return -1;
            }
        for (size_t i = base; i < end; i++) {
            redisReply *r;
            if (redisGetReply(rc, (void **)&r) != REDIS_OK || r == NULL) {
                fprintf(stderr, "segments_eval: redis: %s\n", rc->errstr);
                return -1;
            }
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                fprintf(stderr, "segments_eval: HMGET %scust:%s: %s\n", prefix,
                        cmp[i]->id,
                        r->type == REDIS_REPLY_ERROR ? r->str
                                                     : "unexpected reply");
                freeReplyObject(r);
                return -1;
            }
            const redisReply *rs = r->element[0], *rp = r->element[1];
            double purchases;
            /* propstream's purchases counter counts every PURCHASE; the
             * feature counts those with an amount: equal unless gen wrote
             * amount-less purchases */
            if (parse_reply_double(rp, &purchases) < 0 ||
                purchases != cmp[i]->in.n)
                (*count_mismatch)++;
            if (rs->type == REDIS_REPLY_NIL) {
                seg[i] = -1;
            } else if (rs->type == REDIS_REPLY_STRING) {
                char *e;
                long v = strtol(rs->str, &e, 10);
                if (e == rs->str || *e != '\0' || v < 0 || v >= k) {
                    fprintf(stderr,
                            "segments_eval: %scust:%s segment \"%s\" not in "
                            "0..%d\n",
                            prefix, cmp[i]->id, rs->str, k - 1);
                    freeReplyObject(r);
                    return -1;
                }
                seg[i] = (int)v;
            } else {
                fprintf(stderr, "segments_eval: HMGET %scust:%s: %s\n", prefix,
                        cmp[i]->id,
                        rs->type == REDIS_REPLY_ERROR ? rs->str
                                                      : "unexpected reply");
                freeReplyObject(r);
                return -1;
            }
            freeReplyObject(r);
        }
    }
    return 0;
}

/* ---- output ------------------------------------------------------------ */

static void confusion(const char *title, const int *truth, const int *lab,
                      size_t n, int k, char names[][PS_KMEANS_NAME_MAX])
{
    size_t *tab = calloc((size_t)ntrue * (size_t)k, sizeof(*tab));
    if (tab == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        tab[(size_t)truth[i] * (size_t)k + (size_t)lab[i]]++;
    printf("%s (rows: true segment, columns: %s)\n", title,
           names ? "propstream segment" : "Lloyd cluster");
    printf("  %-10s", "");
    for (int j = 0; j < k; j++) {
        char col[PS_KMEANS_NAME_MAX + 8];
        if (names)
            snprintf(col, sizeof(col), "%d:%s", j, names[j]);
        else
            snprintf(col, sizeof(col), "L%d", j);
        printf(" %12s", col);
    }
    printf(" %9s\n", "total");
    for (int t = 0; t < ntrue; t++) {
        size_t row = 0;
        for (int j = 0; j < k; j++)
            row += tab[(size_t)t * (size_t)k + (size_t)j];
        if (row == 0 && t >= 3)
            continue;
        printf("  %-10s", true_names[t]);
        for (int j = 0; j < k; j++)
            printf(" %12zu", tab[(size_t)t * (size_t)k + (size_t)j]);
        printf(" %9zu\n", row);
    }
    printf("  %-10s", "total");
    for (int j = 0; j < k; j++) {
        size_t col = 0;
        for (int t = 0; t < ntrue; t++)
            col += tab[(size_t)t * (size_t)k + (size_t)j];
        printf(" %12zu", col);
    }
    printf(" %9zu\n", n);
    free(tab);
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: segments_eval --truth FILE --redis HOST:PORT "
            "[--prefix ps:]\n"
            "                     [--features mean_amount,purchases] "
            "[--restarts 10]\n"
            "                     [--seed 1] [--max-iter 300]\n"
            "features: mean_amount, purchases, recency_days, frequency, "
            "total_spend,\n"
            "          clicks, wishlists, conversion (as "
            "--segments-features)\n");
}

int main(int argc, char **argv)
{
    const char *truth_path = NULL, *redis_addr = NULL, *prefix = "ps:";
    const char *feature_list = "mean_amount,purchases";
    int restarts = 10, max_iter = 300;
    uint64_t seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--truth") == 0)
            truth_path = v;
        else if (strcmp(a, "--redis") == 0)
            redis_addr = v;
        else if (strcmp(a, "--prefix") == 0)
            prefix = v;
        else if (strcmp(a, "--features") == 0)
            feature_list = v;
        else if (strcmp(a, "--restarts") == 0)
            restarts = atoi(v);
        else if (strcmp(a, "--max-iter") == 0)
            max_iter = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (truth_path == NULL || redis_addr == NULL || restarts < 1 ||
        max_iter < 0) {
        usage(stderr);
        return 2;
    }
    char host[256];
    const char *colon = strrchr(redis_addr, ':');
    int port = colon ? atoi(colon + 1) : 6379;
    size_t hlen = colon ? (size_t)(colon - redis_addr) : strlen(redis_addr);
    if (hlen == 0 || hlen >= sizeof(host) || port <= 0 || port > 65535) {
        fprintf(stderr, "segments_eval: bad --redis %s\n", redis_addr);
        return 2;
    }
    memcpy(host, redis_addr, hlen);
    host[hlen] = '\0';
    char ferr[256];
    if (ps_seg_features_parse(feature_list, "--features", &feats, ferr,
                              sizeof(ferr)) != PS_OK) {
        fprintf(stderr, "segments_eval: %s\n", ferr);
        return 2;
    }
    const int d = feats.d;

    /* features */
    size_t lines = 0, purchases = 0;
    if (read_truth(truth_path, &lines, &purchases) < 0)
        return 1;
    cust **cmp = malloc((ncust ? ncust : 1) * sizeof(*cmp));
    if (cmp == NULL)
        return 1;
    size_t ncmp = 0;
    for (size_t i = 0; i < ncust; i++)
        if (custs[i].in.n > 0)
            cmp[ncmp++] = &custs[i];
    printf("truth: %zu events, %zu customers, %zu PURCHASEs with an amount; "
           "%zu customers with at least one (the others have no segment)\n",
           lines, ncust, purchases, ncmp);

    /* Redis */
    redisContext *rc = redisConnect(host, port);
    if (rc == NULL || rc->err) {
        fprintf(stderr, "segments_eval: redis %s: %s\n", redis_addr,
                rc ? rc->errstr : "out of memory");
        return 1;
    }
    double pcent[PS_KMEANS_MAX_K * D_MAX];
    char pnames[PS_KMEANS_MAX_K][PS_KMEANS_NAME_MAX];
    int k = read_centroids(rc, prefix, pcent, pnames);
    if (k < 0)
        return 1;
    if (k == 0) {
        fprintf(stderr,
                "segments_eval: no %ssegment:0 with centroids for --features "
                "%s in Redis (was propstream run with the same "
                "--segments-features?)\n",
                prefix, feature_list);
        return 1;
    }
    int *seg_all = malloc((ncmp ? ncmp : 1) * sizeof(int));
    if (seg_all == NULL)
        return 1;
    size_t count_mismatch = 0;
    if (read_segments(rc, prefix, cmp, ncmp, k, seg_all, &count_mismatch) < 0)
        return 1;
    printf("feature check: %scust:{id} purchases equals the rebuilt number "
           "of purchases for %zu of %zu customers\n",
           prefix, ncmp - count_mismatch, ncmp);
    redisFree(rc);

    /* keep customers with a segment in Redis */
    size_t n = 0, missing = 0;
    int *truth = malloc((ncmp ? ncmp : 1) * sizeof(int));
    int *seg = malloc((ncmp ? ncmp : 1) * sizeof(int));
    int *lloyd = malloc((ncmp ? ncmp : 1) * sizeof(int));
    double *x = malloc((ncmp ? ncmp : 1) * (size_t)d * sizeof(double));
    if (truth == NULL || seg == NULL || lloyd == NULL || x == NULL)
        return 1;
    for (size_t i = 0; i < ncmp; i++) {
        if (seg_all[i] < 0) {
            if (missing < 5)
                fprintf(stderr, "segments_eval: %scust:%s has no segment\n",
                        prefix, cmp[i]->id);
            missing++;
            continue;
        }
        truth[n] = cmp[i]->truth;
        seg[n] = seg_all[i];
        ps_seg_features_of(&feats, &cmp[i]->in, &x[(size_t)d * n]);
        n++;
    }
    printf("customers compared: %zu", n);
    if (missing > 0)
        printf(" (%zu with a purchase but no segment in Redis, left out)",
               missing);
    printf("\n");
    if (n < (size_t)k || n < 2) {
        fprintf(stderr, "segments_eval: too few customers to compare\n");
        return 1;
    }

    /* standardise with the final mean and sample std of the final features */
    double mu[D_MAX] = {0}, sd[D_MAX] = {0};
    for (int f = 0; f < d; f++) {
        double m = 0, m2 = 0;
        for (size_t i = 0; i < n; i++) {
            double dx = x[(size_t)d * i + f] - m;
            m += dx / (double)(i + 1);
            m2 += dx * (x[(size_t)d * i + f] - m);
        }
        mu[f] = m;
        sd[f] = sqrt(m2 / (double)(n - 1));
        if (!(sd[f] > 0))
            sd[f] = 1.0;
    }
    for (size_t i = 0; i < n; i++)
        for (int f = 0; f < d; f++)
            x[(size_t)d * i + f] = (x[(size_t)d * i + f] - mu[f]) / sd[f];
    double zc[PS_KMEANS_MAX_K * D_MAX];
    for (int j = 0; j < k; j++)
        for (int f = 0; f < d; f++)
            zc[d * j + f] = (pcent[d * j + f] - mu[f]) / sd[f];

    /* ARI and confusion */
    double ari = ps_kmeans_ari(truth, seg, n);
    printf("\nARI(true segment, propstream segment) = %.4f\n", ari);
    confusion("confusion", truth, seg, n, k, pnames);

    /* inertia */
    double in_ps = ps_kmeans_inertia_of(zc, k, d, x, n);
    double in_ps_lab = 0;
    for (size_t i = 0; i < n; i++)
        for (int f = 0; f < d; f++) {
            double dx = x[(size_t)d * i + f] - zc[d * seg[i] + f];
            in_ps_lab += dx * dx;
        }
    double lcent[PS_KMEANS_MAX_K * D_MAX], in_ll = NAN;
    int lrc = ps_kmeans_lloyd(x, n, d, k, max_iter, restarts, seed, lcent,
                              lloyd, &in_ll);
    if (lrc != PS_OK) {
        fprintf(stderr, "segments_eval: ps_kmeans_lloyd: %s\n",
                ps_err_str(lrc));
        return 1;
    }
    double ari_ll = ps_kmeans_ari(truth, lloyd, n);
    double ari_ll_ps = ps_kmeans_ari(seg, lloyd, n);
    double ratio = in_ps / in_ll;

    printf("\feats.dures (%d):", d);
    for (int f = 0; f < d; f++)
        printf("%s %s", f ? "," : "", ps_seg_feature_name(feats.kind[f]));
    printf(";\nstandardised with their final mean and sample std over the "
           "%zu customers:\n",
           n);
    for (int f = 0; f < d; f++) {
        int p = feature_decimals(feats.kind[f]);
        printf("  %-14s mean %.*f std %.*f\n", ps_seg_feature_name(feats.kind[f]), p,
               mu[f], p, sd[f]);
    }
    printf("(propstream's own scaler is a running mean/std over every feature "
           "vector it\n observed; its centroids are read in original units and "
           "re-standardised here)\n");
    printf("\n%-34s", "centroids (original units)");
    for (int f = 0; f < d; f++)
        printf(" %14s", ps_seg_feature_name(feats.kind[f]));
    printf("\n");
    for (int j = 0; j < k; j++) {
        printf("  propstream %d:%-18s", j, pnames[j]);
        for (int f = 0; f < d; f++)
            printf(" %14.*f", feature_decimals(feats.kind[f]), pcent[d * j + f]);
        printf("\n");
    }
    for (int j = 0; j < k; j++) {
        printf("  Lloyd L%-25d", j);
        for (int f = 0; f < d; f++)
            printf(" %14.*f", feature_decimals(feats.kind[f]),
                   lcent[d * j + f] * sd[f] + mu[f]);
        printf("\n");
    }
    printf("\ninertia, propstream centroids (nearest-centre) %14.3f\n", in_ps);
    printf("inertia, propstream centroids (stored labels)  %14.3f\n",
           in_ps_lab);
    printf("inertia, batch Lloyd (k=%d, %d restarts, seed %llu) %11.3f\n", k,
           restarts, (unsigned long long)seed, in_ll);
    printf("ratio propstream / Lloyd = %.4f (%+.2f%%)\n", ratio,
           (ratio - 1) * 100);
    printf("\nARI(true segment, Lloyd) = %.4f; ARI(propstream, Lloyd) = %.4f\n",
           ari_ll, ari_ll_ps);
    confusion("confusion", truth, lloyd, n, k, NULL);

    printf("segments_eval: customers=%zu ari=%.4f ari_lloyd=%.4f "
           "inertia_ratio=%.4f\n",
           n, ari, ari_ll, ratio);

    free(x);
    free(lloyd);
    free(seg);
    free(truth);
    free(seg_all);
    free(cmp);
    for (size_t i = 0; i < ncust; i++)
        free(custs[i].id);
    free(custs);
    free(slots);
    for (int i = 0; i < ntrue; i++)
        free((void *)true_names[i]);
    return 0;
}
