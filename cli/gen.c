/*
 * gen.c -- `propstream gen`: a synthetic, seed-like event generator.
 *
 * Produces the events of contract section 1 for a population of customers
 * drawn from the seed document's model, to Kafka or to a file, in Confluent
 * framed Avro, plain Avro or JSON, optionally with a fraction of malformed
 * records; prints the true parameters it used and what it actually drew,
 * so tests and benchmarks can compare propstream's estimates to the truth.
 *
 * The model (every number is an option; defaults from the seed):
 *   - customers c000001.. in three latent segments: vip 0.2, regular 0.6,
 *     premium 0.2.  Amounts Normal(mean, sd) per segment (vip 50000/15000,
 *     regular 40000/5000, premium 60000/10000), redrawn when <= 0, rounded
 *     to cents.
 *   - signup_ts uniform over the signup window (184 days) before --start-ms
 *     (2025-01-01T00:00:00Z); events in [start, start + horizon (30 d)),
 *     plus purchase delays.  signup_ts is present on 80 % of events.
 *   - per customer Poisson(segment mean: 12 / 6 / 4) funnels; each picks a
 *     product from a Zipf(1.1) catalogue p0001.. and opens with CLICK
 *     (0.85) or WISHLIST.  After a click a WISHLIST follows with p_wishlist
 *     (0.35 / 0.20 / 0.30); after an opening wishlist a CLICK follows with
 *     --p-click-after-wishlist (0.10).  The path is c, w or cw, and the
 *     funnel converts with the per-segment, per-path rate p_purchase_c /
 *     _w / _cw, its PURCHASE strictly after the last step and strictly
 *     inside the 7-day attribution window of the contract.
 *   - per funnel, with --p-direct (0.05), an extra direct PURCHASE of a
 *     product the customer has no funnel on; per customer Poisson(1) SPEND
 *     events with amount = segment draw / 10; a campaign on 30 % of clicks.
 *
 * Invariants the tests rely on:
 *   - Determinism: output is a function of the seed and the model options
 *     only (xoshiro256** seeded by splitmix64; never rand()).  The bad-record
 *     choice uses its own stream, so --bad does not change the good events'
 *     content, only which of them are replaced.
 *   - A customer never has two funnels (or a funnel and a direct purchase)
 *     on the same product, so per-(customer, product) funnels never merge
 *     and the generated paths are exactly what a correct processor sees.
 *     The number of funnels of a customer is capped by --products.
 *   - Records leave in non-decreasing ts order (ties in generation order);
 *     event ids are unique: "e" + 12 hex digits of a seed-keyed bijection
 *     of the emission index.  The Kafka key is the customer id.
 *
 * Memory: every event is first drawn into one array of 32-byte records
 * (about 13 per customer with the defaults, so ~420 MB for a million
 * customers), sorted by (ts, generation order), then encoded one at a time
 * into a reused buffer with one reused Avro value.
 *
 * Bad records (--bad F) replace a fraction F of the records, chosen by the
 * PRNG, cycling through the kinds of contract section 1 in a fixed order;
 * each kind is tagged with the reason the decoder must give (see
 * bad_kinds[]).  --bad-mix native keeps to the output format's flavour
 * (JSON-flavoured in json, Avro-flavoured in avro/confluent, garbage in
 * both); --bad-mix all adds the other flavour's kinds in their own encoding
 * (the decoder detects the encoding per message), so one run covers every
 * reason.
 *
 * Output on stdout: exactly one JSON object, the summary (see
 * print_summary()).  Everything else goes to stderr.
 */
#include "commands.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "../common/config.h"
#include "../common/error.h"
#include "../consumer/decode.h"
#include "event_writer.h"

/* ===================================================================
 * Options
 * =================================================================== */

enum { SEG_VIP, SEG_REGULAR, SEG_PREMIUM, SEG_COUNT };
static const char *const seg_names[SEG_COUNT] = {"vip", "regular",
                                                 "premium"};

enum { PATH_C, PATH_W, PATH_CW, PATH_COUNT };
static const char *const path_names[PATH_COUNT] = {"c", "w", "cw"};

#define CAMPAIGN_COUNT 4
static const char *const campaign_names[CAMPAIGN_COUNT] = {
    "spring", "summer", "retarget", "newsletter"};

static const char *const type_names[4] = {"CLICK", "WISHLIST", "PURCHASE",
                                          "SPEND"};
enum { T_CLICK, T_WISHLIST, T_PURCHASE, T_SPEND };

#define DAY_MS (86400000LL)
#define HOUR_MS (3600000LL)
#define MINUTE_MS (60000LL)
#define ATTRIBUTION_MS (7 * DAY_MS) /* contract default window */

typedef struct gen_opts {
    char *bootstrap;
    char *topic;
    char *output;
    char *format;
    char *truth;
    char *bad_mix;
    int64_t customers;
    int64_t products;
    int64_t seed;
    int64_t start_ms;
    int64_t signup_window_days;
    int64_t horizon_days;
    int64_t schema_id;
    double bad;
    double rate;
    double progress_s;
    double zipf;
    double p_click_first;
    double p_click_after_wishlist;
    double p_direct;
    double spend_events;
    double spend_divisor;
    double campaign_rate;
    double signup_known;
    char *seg_share;
    char *spend_mean;
    char *spend_sd;
    char *funnels;
    char *p_wishlist;
    char *p_purchase_c;
    char *p_purchase_w;
    char *p_purchase_cw;
} gen_opts;

#define O(f) offsetof(gen_opts, f)
static const ps_option gen_options[] = {
    PS_EVENT_OUTPUT_OPTIONS(O),
    {"customers", 'n', PS_OPT_INT, "1000", 1, 50000000, "customers",
     "number of customers c000001..", O(customers), 0},
    {"products", 0, PS_OPT_INT, "200", 1, 10000000, "products",
     "catalogue size p0001..; also caps funnels per customer", O(products),
     0},
    {"seed", 's', PS_OPT_INT, "42", 0, 9007199254740991.0, NULL,
     "PRNG seed: same seed and options, same records", O(seed), 0},
    {"bad", 0, PS_OPT_DBL, "0", 0, 1, NULL,
     "fraction of records replaced by malformed ones (0..1)", O(bad), 0},
    {"bad-mix", 0, PS_OPT_STR, "native", 1, 0, NULL,
     "malformed kinds: native (the format's flavour + garbage) or all "
     "(every kind, each in its own encoding)",
     O(bad_mix), 0, "native|all"},
    {"truth", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "write every good event, in emission order, as a JSON line with its "
     "segment to FILE",
     O(truth), 0},
    {"rate", 'r', PS_OPT_DBL, "0", 0, 1e9, "events/s",
     "pace output to this many records per second; 0 = as fast as possible",
     O(rate), 0},
    {"progress-s", 0, PS_OPT_DBL, "5", 0, 86400, "s",
     "progress line on stderr every this many seconds; 0 = never",
     O(progress_s), 0},
    {"start-ms", 0, PS_OPT_INT, "1735689600000", 1, 32503680000000.0, "ms",
     "start of the event horizon, ms since the epoch "
     "(default 2025-01-01T00:00:00Z)",
     O(start_ms), 0},
    {"signup-window-days", 0, PS_OPT_INT, "184", 0, 36500, "days",
     "signup_ts uniform over this many days before --start-ms",
     O(signup_window_days), 0},
    {"horizon-days", 0, PS_OPT_INT, "30", 1, 3650, "days",
     "funnels and SPEND events start uniformly in [start, start + horizon)",
     O(horizon_days), 0},
    {"zipf", 0, PS_OPT_DBL, "1.1", 0, 10, NULL,
     "product popularity exponent: P(p_k) proportional to k^-zipf",
     O(zipf), 0},
    {"segment-share", 0, PS_OPT_STR, "vip=0.2,regular=0.6,premium=0.2", 1, 0,
     NULL,
     "share of customers per segment (normalised); lists are "
     "vip=X,regular=Y,premium=Z or X,Y,Z, missing names keep the default",
     O(seg_share), 0},
    {"spend-mean", 0, PS_OPT_STR, "vip=50000,regular=40000,premium=60000", 1,
     0, NULL, "mean PURCHASE amount per segment (Normal)", O(spend_mean), 0},
    {"spend-sd", 0, PS_OPT_STR, "vip=15000,regular=5000,premium=10000", 1, 0,
     NULL, "standard deviation of the amount per segment", O(spend_sd), 0},
    {"funnels", 0, PS_OPT_STR, "vip=12,regular=6,premium=4", 1, 0, NULL,
     "mean number of funnels per customer per segment (Poisson)", O(funnels),
     0},
    {"p-wishlist", 0, PS_OPT_STR, "vip=0.35,regular=0.20,premium=0.30", 1, 0,
     NULL, "P(WISHLIST follows a CLICK) per segment", O(p_wishlist), 0},
    {"p-purchase-c", 0, PS_OPT_STR, "vip=0.25,regular=0.08,premium=0.10", 1,
     0, NULL, "P(PURCHASE) of a click-only funnel per segment",
     O(p_purchase_c), 0},
    {"p-purchase-w", 0, PS_OPT_STR, "vip=0.45,regular=0.15,premium=0.25", 1,
     0, NULL, "P(PURCHASE) of a wishlist-only funnel per segment",
     O(p_purchase_w), 0},
    {"p-purchase-cw", 0, PS_OPT_STR, "vip=0.60,regular=0.25,premium=0.35", 1,
     0, NULL, "P(PURCHASE) of a click+wishlist funnel per segment",
     O(p_purchase_cw), 0},
    {"p-click-first", 0, PS_OPT_DBL, "0.85", 0, 1, NULL,
     "P(a funnel opens with CLICK rather than WISHLIST)", O(p_click_first),
     0},
    {"p-click-after-wishlist", 0, PS_OPT_DBL, "0.10", 0, 1, NULL,
     "P(CLICK follows an opening WISHLIST; path cw)",
     O(p_click_after_wishlist), 0},
    {"p-direct", 0, PS_OPT_DBL, "0.05", 0, 1, NULL,
     "P(an extra direct PURCHASE, without funnel) per funnel", O(p_direct),
     0},
    {"spend-events", 0, PS_OPT_DBL, "1", 0, 1000, "events",
     "mean number of SPEND events per customer (Poisson)", O(spend_events),
     0},
    {"spend-divisor", 0, PS_OPT_DBL, "10", 1e-6, 1e9, NULL,
     "SPEND amount = segment amount draw / this", O(spend_divisor), 0},
    {"campaign-rate", 0, PS_OPT_DBL, "0.30", 0, 1, NULL,
     "P(a CLICK carries a campaign: spring, summer, retarget, newsletter)",
     O(campaign_rate), 0},
    {"signup-known", 0, PS_OPT_DBL, "0.80", 0, 1, NULL,
     "P(an event carries its customer's signup_ts)", O(signup_known), 0},
};
#undef O
#define GEN_NOPTS (sizeof(gen_options) / sizeof(gen_options[0]))

/* ===================================================================
 * PRNG: splitmix64 to seed xoshiro256** (Blackman & Vigna 2018)
 * =================================================================== */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double rng_u01(rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n), n > 0 (multiply-shift; bias < 2^-32 here). */
static inline uint64_t rng_below(rng *r, uint64_t n)
{
    return (uint64_t)(rng_u01(r) * (double)n) % n;
}

/* Standard normal by Box-Muller (one value per call: simple, deterministic). */
static double rng_normal(rng *r)
{
    double u1 = 1.0 - rng_u01(r); /* (0, 1] */
    double u2 = rng_u01(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Exponential with the given mean. */
static double rng_exp(rng *r, double mean)
{
    return -mean * log(1.0 - rng_u01(r));
}

/* Poisson: Knuth's product method for small means, normal approximation
 * (rounded, clipped at 0) above 30. */
static unsigned rng_poisson(rng *r, double mean)
{
    if (mean <= 0)
        return 0;
    if (mean > 30) {
        double x = floor(mean + sqrt(mean) * rng_normal(r) + 0.5);
        return x < 0 ? 0 : (unsigned)x;
    }
    double limit = exp(-mean), p = 1.0;
    unsigned k = 0;
    for (;;) {
        p *= rng_u01(r);
        if (p <= limit)
            return k;
        k++;
    }
}

/* A bijection of [0, 2^48) keyed by the seed: event ids look random,
 * differ between seeds, and can never collide within a run. */
static uint64_t permute48(uint64_t x, uint64_t key)
{
    const uint64_t m = (1ULL << 48) - 1;
    x = (x ^ key) & m;
    x = (x * 0x9E3779B97F4BULL) & m;
    x ^= x >> 21;
    x = (x * 0xD6E8FEB86659ULL) & m;
    x ^= x >> 23;
    return (x ^ (key >> 16)) & m;
}

/* ===================================================================
 * Model
 * =================================================================== */

typedef struct gen_model {
    double share[SEG_COUNT];
    double spend_mean[SEG_COUNT], spend_sd[SEG_COUNT];
    double funnels[SEG_COUNT];
    double p_wishlist[SEG_COUNT];
    double p_purchase[PATH_COUNT][SEG_COUNT];
} gen_model;

/*
 * Parse a per-segment list "vip=0.25,regular=0.08,premium=0.10" or
 * "0.25,0.08,0.10" into out (which holds the defaults: names not given keep
 * them).  Values must lie in [lo, hi].  Returns 0 or -1 with errstr.
 */
static int parse_segments(const char *key, const char *text, double lo,
                          double hi, double out[SEG_COUNT], char *errstr,
                          size_t errstr_size)
{
    char buf[512];
    char *save = NULL, *tok;
    int pos = 0;

    if (strlen(text) >= sizeof(buf)) {
        ps_set_err(errstr, errstr_size, "--%s: value too long", key);
        return -1;
    }
    strcpy(buf, text);
    for (tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save), pos++) {
        char *eq = strchr(tok, '='), *num = tok, *end = NULL;
        int seg = pos;
        while (*tok == ' ')
            tok++;
        if (eq != NULL) {
            *eq = '\0';
            num = eq + 1;
            seg = -1;
            for (int s = 0; s < SEG_COUNT; s++)
                if (strcmp(tok, seg_names[s]) == 0)
                    seg = s;
            if (seg < 0) {
                ps_set_err(errstr, errstr_size,
                           "--%s: unknown segment \"%s\" (vip, regular, "
                           "premium)",
                           key, tok);
                return -1;
            }
        } else if (seg >= SEG_COUNT) {
            ps_set_err(errstr, errstr_size,
                       "--%s: more than %d values", key, SEG_COUNT);
            return -1;
        }
        errno = 0;
        double v = strtod(num, &end);
        while (end != NULL && *end == ' ')
            end++;
        if (errno != 0 || end == num || *end != '\0' || !isfinite(v) ||
            v < lo || v > hi) {
            ps_set_err(errstr, errstr_size,
                       "--%s: bad value \"%s\" for %s (expected %g..%g)", key,
                       num, seg_names[seg], lo, hi);
            return -1;
        }
        out[seg] = v;
    }
    return 0;
}

static int build_model(const gen_opts *o, gen_model *m, char *errstr,
                       size_t errstr_size)
{
    static const gen_model defaults = {
        {0.2, 0.6, 0.2},
        {50000, 40000, 60000},
        {15000, 5000, 10000},
        {12, 6, 4},
        {0.35, 0.20, 0.30},
        {{0.25, 0.08, 0.10}, {0.45, 0.15, 0.25}, {0.60, 0.25, 0.35}}};
    double sum = 0;

    *m = defaults;
    if (parse_segments("segment-share", o->seg_share, 0, 1e9, m->share,
                       errstr, errstr_size) ||
        parse_segments("spend-mean", o->spend_mean, 1e-6, 1e12,
                       m->spend_mean, errstr, errstr_size) ||
        parse_segments("spend-sd", o->spend_sd, 0, 1e12, m->spend_sd, errstr,
                       errstr_size) ||
        parse_segments("funnels", o->funnels, 0, 10000, m->funnels, errstr,
                       errstr_size) ||
        parse_segments("p-wishlist", o->p_wishlist, 0, 1, m->p_wishlist,
                       errstr, errstr_size) ||
        parse_segments("p-purchase-c", o->p_purchase_c, 0, 1,
                       m->p_purchase[PATH_C], errstr, errstr_size) ||
        parse_segments("p-purchase-w", o->p_purchase_w, 0, 1,
                       m->p_purchase[PATH_W], errstr, errstr_size) ||
        parse_segments("p-purchase-cw", o->p_purchase_cw, 0, 1,
                       m->p_purchase[PATH_CW], errstr, errstr_size))
        return -1;
    for (int s = 0; s < SEG_COUNT; s++)
        sum += m->share[s];
    if (!(sum > 0)) {
        ps_set_err(errstr, errstr_size,
                   "--segment-share: shares must not all be 0");
        return -1;
    }
    for (int s = 0; s < SEG_COUNT; s++)
        m->share[s] /= sum;
    return 0;
}

/* ===================================================================
 * Drawing the events
 * =================================================================== */

/* One drawn event; 32 bytes.  Strings are derived at encoding time. */
typedef struct gen_rec {
    int64_t ts;
    double amount;    /* NAN when null */
    uint32_t cust;    /* 0-based customer index */
    uint32_t product; /* 1-based product number, 0 = null */
    uint32_t seq;     /* generation order: the sort's tie-break */
    uint8_t type;     /* T_* */
    uint8_t campaign; /* 1-based index into campaign_names, 0 = null */
    uint8_t signup;   /* 1 when signup_ts is present */
    uint8_t seg;      /* the customer's segment (for --truth) */
} gen_rec;

/* What was drawn, per segment, before any --bad replacement. */
typedef struct gen_observed {
    uint64_t customers[SEG_COUNT];
    uint64_t funnels[SEG_COUNT][PATH_COUNT];
    uint64_t successes[SEG_COUNT][PATH_COUNT];
    uint64_t direct[SEG_COUNT];
    uint64_t spend_events[SEG_COUNT];
    uint64_t funnels_capped; /* funnels not drawn: catalogue too small */
    /* Welford over PURCHASE amounts */
    uint64_t amount_n[SEG_COUNT];
    double amount_mean[SEG_COUNT], amount_m2[SEG_COUNT];
} gen_observed;

typedef struct gen_draw {
    const gen_opts *o;
    const gen_model *m;
    rng r;
    double *zipf_cdf;     /* products entries */
    uint32_t *used_by;    /* products entries: customer index + 1 */
    int64_t *signup_ts;   /* per customer */
    gen_rec *recs;
    size_t n, cap;
    gen_observed obs;
} gen_draw;

static int draw_push(gen_draw *d, int64_t ts, uint32_t cust, uint8_t seg,
                     uint8_t type, uint32_t product, double amount,
                     uint8_t campaign)
{
    gen_rec *rec;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1 << 16;
        gen_rec *v;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        if (d->n >= cap)
            return -1;
        v = realloc(d->recs, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        d->recs = v;
        d->cap = cap;
    }
    rec = &d->recs[d->n];
    rec->ts = ts;
    rec->amount = amount;
    rec->cust = cust;
    rec->product = product;
    rec->seq = (uint32_t)d->n;
    rec->type = type;
    rec->campaign = campaign;
    rec->signup = rng_u01(&d->r) < d->o->signup_known;
    rec->seg = seg;
    d->n++;
    return 0;
}

/* Amount from the segment's normal, divided by divisor (10 for SPEND, 1
 * for PURCHASE), rounded to cents, redrawn until > 0. */
static double draw_amount(gen_draw *d, int seg, double divisor)
{
    for (int tries = 0;; tries++) {
        double x = d->m->spend_mean[seg] +
                   d->m->spend_sd[seg] * rng_normal(&d->r);
        x = round(x / divisor * 100.0) / 100.0;
        if (x > 0)
            return x;
        if (tries > 1000) /* pathological mean/sd: fall back to the mean */
            return fmax(0.01, round(d->m->spend_mean[seg] / divisor * 100) /
                                  100.0);
    }
}

/* A product the customer has not used yet (Zipf, resampled on a clash;
 * linear probe as a last resort).  Returns 1-based product, 0 if none. */
static uint32_t draw_product(gen_draw *d, uint32_t cust, unsigned used)
{
    uint32_t np = (uint32_t)d->o->products, p;
    if (used >= np)
        return 0;
    for (int tries = 0; tries < 32; tries++) {
        double u = rng_u01(&d->r);
        /* first index with cdf > u */
        size_t lo = 0, hi = np - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (d->zipf_cdf[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (d->used_by[lo] != cust + 1) {
            d->used_by[lo] = cust + 1;
            return (uint32_t)lo + 1;
        }
    }
    p = (uint32_t)rng_below(&d->r, np);
    while (d->used_by[p] == cust + 1)
        p = (p + 1) % np;
    d->used_by[p] = cust + 1;
    return p + 1;
}

static void observe_amount(gen_observed *obs, int seg, double x)
{
    uint64_t n = ++obs->amount_n[seg];
    double delta = x - obs->amount_mean[seg];
    obs->amount_mean[seg] += delta / (double)n;
    obs->amount_m2[seg] += delta * (x - obs->amount_mean[seg]);
}

/* Draw every event of customer c. */
static int draw_customer(gen_draw *d, uint32_t c)
{
    const gen_opts *o = d->o;
    const gen_model *m = d->m;
    rng *r = &d->r;
    const int64_t start = o->start_ms;
    const double horizon = (double)o->horizon_days * DAY_MS;
    double u = rng_u01(r);
    int seg = SEG_COUNT - 1;
    unsigned used = 0, nf, ns;

    double edge = 0;
    for (int s = 0; s < SEG_COUNT; s++) {
        edge += m->share[s];
        if (u < edge) {
            seg = s;
            break;
        }
    }
    d->obs.customers[seg]++;
    d->signup_ts[c] =
        start - (int64_t)(rng_u01(r) * (double)o->signup_window_days * DAY_MS);
    if (d->signup_ts[c] < 1)
        d->signup_ts[c] = 1;

    nf = rng_poisson(r, m->funnels[seg]);
    for (unsigned f = 0; f < nf; f++) {
        uint32_t product = draw_product(d, c, used);
        int64_t t0, last;
        int path;
        if (product == 0) {
            d->obs.funnels_capped += nf - f;
            break;
        }
        used++;
        t0 = start + (int64_t)(rng_u01(r) * horizon);
        if (rng_u01(r) < o->p_click_first) {
            uint8_t camp = 0;
            if (rng_u01(r) < o->campaign_rate)
                camp = (uint8_t)(1 + rng_below(r, CAMPAIGN_COUNT));
            if (draw_push(d, t0, c, seg, T_CLICK, product, NAN, camp))
                return -1;
            last = t0;
            path = PATH_C;
            if (rng_u01(r) < m->p_wishlist[seg]) {
                last = t0 + MINUTE_MS +
                       (int64_t)fmin(rng_exp(r, 4.0 * HOUR_MS), 2.0 * DAY_MS);
                if (draw_push(d, last, c, seg, T_WISHLIST, product, NAN, 0))
                    return -1;
                path = PATH_CW;
            }
        } else {
            if (draw_push(d, t0, c, seg, T_WISHLIST, product, NAN, 0))
                return -1;
            last = t0;
            path = PATH_W;
            if (rng_u01(r) < o->p_click_after_wishlist) {
                uint8_t camp = 0;
                if (rng_u01(r) < o->campaign_rate)
                    camp = (uint8_t)(1 + rng_below(r, CAMPAIGN_COUNT));
                last = t0 + MINUTE_MS +
                       (int64_t)fmin(rng_exp(r, 4.0 * HOUR_MS), 2.0 * DAY_MS);
                if (draw_push(d, last, c, seg, T_CLICK, product, NAN, camp))
                    return -1;
                path = PATH_CW;
            }
        }
        d->obs.funnels[seg][path]++;
        if (rng_u01(r) < m->p_purchase[path][seg]) {
            /* hours to a few days after the last step, always inside the
             * attribution window (at most 2 d + 4 d + 10 min < 7 d) */
            int64_t tp = last + 10 * MINUTE_MS +
                         (int64_t)fmin(rng_exp(r, 18.0 * HOUR_MS),
                                       4.0 * DAY_MS);
            double amount = draw_amount(d, seg, 1.0);
            if (draw_push(d, tp, c, seg, T_PURCHASE, product, amount, 0))
                return -1;
            d->obs.successes[seg][path]++;
            observe_amount(&d->obs, seg, amount);
        }
        if (rng_u01(r) < o->p_direct) {
            uint32_t dp = draw_product(d, c, used);
            if (dp != 0) {
                int64_t td = start + (int64_t)(rng_u01(r) * horizon);
                double amount = draw_amount(d, seg, 1.0);
                used++;
                if (draw_push(d, td, c, seg, T_PURCHASE, dp, amount, 0))
                    return -1;
                d->obs.direct[seg]++;
                observe_amount(&d->obs, seg, amount);
            }
        }
    }
    ns = rng_poisson(r, o->spend_events);
    for (unsigned k = 0; k < ns; k++) {
        int64_t ts = start + (int64_t)(rng_u01(r) * horizon);
        double amount = draw_amount(d, seg, o->spend_divisor);
        if (draw_push(d, ts, c, seg, T_SPEND, 0, amount, 0))
            return -1;
        d->obs.spend_events[seg]++;
    }
    return 0;
}

static int rec_cmp(const void *a, const void *b)
{
    const gen_rec *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

static int draw_all(gen_draw *d, char *errstr, size_t errstr_size)
{
    const gen_opts *o = d->o;
    size_t np = (size_t)o->products, nc = (size_t)o->customers;
    double sum = 0, expect = 0;

    rng_seed(&d->r, (uint64_t)o->seed);
    d->zipf_cdf = malloc(np * sizeof(double));
    d->used_by = calloc(np, sizeof(uint32_t));
    d->signup_ts = malloc(nc * sizeof(int64_t));
    if (d->zipf_cdf == NULL || d->used_by == NULL || d->signup_ts == NULL)
        goto nomem;
    for (size_t i = 0; i < np; i++) {
        sum += pow((double)(i + 1), -o->zipf);
        d->zipf_cdf[i] = sum;
    }
    for (size_t i = 0; i < np; i++)
        d->zipf_cdf[i] /= sum;
    d->zipf_cdf[np - 1] = 2.0; /* u < 1 always lands */

    /* Pre-size the record array from the expected count (+10 %). */
    for (int s = 0; s < SEG_COUNT; s++)
        expect += d->m->share[s] * d->m->funnels[s] *
                  (2.0 + o->p_direct + d->m->p_wishlist[s]);
    expect = (expect + o->spend_events) * (double)nc * 1.1 + 1024;
    if (expect > (double)UINT32_MAX)
        expect = (double)UINT32_MAX;
    d->cap = (size_t)expect;
    d->recs = malloc(d->cap * sizeof(gen_rec));
    if (d->recs == NULL)
        goto nomem;

    for (size_t c = 0; c < nc; c++)
        if (draw_customer(d, (uint32_t)c) != 0)
            goto nomem;
    qsort(d->recs, d->n, sizeof(gen_rec), rec_cmp);
    return 0;

nomem:
    ps_set_err(errstr, errstr_size,
               "out of memory drawing events for %zu customers (or more than "
               "2^32 records)",
               nc);
    return -1;
}

static void draw_free(gen_draw *d)
{
    free(d->zipf_cdf);
    free(d->used_by);
    free(d->signup_ts);
    free(d->recs);
}

/* ===================================================================
 * Encoding: event_writer.h (ps_event, JSON amounts with 2 decimals)
 * =================================================================== */

/* The schema id of the Confluent frame of kind schema_id_999. */
#define BAD_SCHEMA_ID 999u

/* ===================================================================
 * Malformed records
 * =================================================================== */

enum {
    FL_AVRO = 1,      /* Avro-flavoured kind */
    FL_JSON = 2,      /* JSON-flavoured kind */
    FL_CONFLUENT = 4, /* Confluent frame only */
    FL_ANY = FL_AVRO | FL_JSON
};

typedef enum bad_kind {
    BK_GARBAGE,        /* random bytes */
    BK_TRUNC_AVRO,     /* a good record cut inside event_id */
    BK_TRUNC_JSON,     /* a good JSON object cut in the middle */
    BK_SCHEMA_999,     /* Confluent frame with an unknown schema id */
    BK_NO_CUSTOMER,    /* JSON without customer_id */
    BK_CLICK_NO_PROD,  /* CLICK with product_id null */
    BK_SPEND_NO_AMT,   /* SPEND with amount null */
    BK_TS_STRING,      /* JSON ts as a string */
    BK_TYPE_BROWSE,    /* JSON type "BROWSE" */
    BK_NEG_AMOUNT,     /* PURCHASE amount < 0 */
    BK_NAN_AMOUNT,     /* PURCHASE amount NaN (Avro only) */
    BK_SPEND_ZERO,     /* SPEND amount 0 */
    BK_EMPTY_ID,       /* customer_id "" */
    BK_LONG_ID,        /* customer_id of 300 bytes */
    BK_TS_ZERO,        /* ts 0 */
    BK_TS_NEG,         /* ts < 0 */
    BK_SIGNUP_NEG,     /* signup_ts < 0 */
    BK_COUNT
} bad_kind;

static const struct {
    const char *name;
    ps_bad_reason reason;
    int flavour;
} bad_kinds[BK_COUNT] = {
    [BK_GARBAGE] = {"garbage", PS_BAD_UNDECODABLE, FL_ANY},
    [BK_TRUNC_AVRO] = {"truncated_avro", PS_BAD_UNDECODABLE, FL_AVRO},
    [BK_TRUNC_JSON] = {"truncated_json", PS_BAD_UNDECODABLE, FL_JSON},
    [BK_SCHEMA_999] = {"schema_id_999", PS_BAD_UNKNOWN_SCHEMA,
                       FL_AVRO | FL_CONFLUENT},
    [BK_NO_CUSTOMER] = {"no_customer_id", PS_BAD_MISSING_FIELD, FL_JSON},
    [BK_CLICK_NO_PROD] = {"click_without_product", PS_BAD_MISSING_FIELD,
                          FL_ANY},
    [BK_SPEND_NO_AMT] = {"spend_without_amount", PS_BAD_MISSING_FIELD,
                         FL_ANY},
    [BK_TS_STRING] = {"ts_string", PS_BAD_WRONG_TYPE, FL_JSON},
    [BK_TYPE_BROWSE] = {"type_browse", PS_BAD_WRONG_TYPE, FL_JSON},
    [BK_NEG_AMOUNT] = {"negative_amount", PS_BAD_AMOUNT, FL_ANY},
    [BK_NAN_AMOUNT] = {"nan_amount", PS_BAD_AMOUNT, FL_AVRO},
    [BK_SPEND_ZERO] = {"spend_amount_zero", PS_BAD_AMOUNT, FL_ANY},
    [BK_EMPTY_ID] = {"empty_customer_id", PS_BAD_ID, FL_ANY},
    [BK_LONG_ID] = {"long_customer_id", PS_BAD_ID, FL_ANY},
    [BK_TS_ZERO] = {"ts_zero", PS_BAD_TS, FL_ANY},
    [BK_TS_NEG] = {"ts_negative", PS_BAD_TS, FL_ANY},
    [BK_SIGNUP_NEG] = {"signup_ts_negative", PS_BAD_TS, FL_ANY},
};

/* Reason names as in consumer/decode.h (kept here so the generator does not
 * need the decoder library's code, only its enum). */
static const char *const reason_names[PS_BAD_REASON_COUNT] = {
    "none",        "undecodable", "unknown_schema_id", "missing_field",
    "wrong_type",  "bad_amount",  "bad_id",            "bad_ts"};

/*
 * The kinds used for a format and mix, in cycling order.  Returns count.
 * native: kinds of the format's flavour (garbage is in both); all: every
 * kind (schema_id_999 included even in json/avro: the frame is detected
 * per message).
 */
static int select_kinds(int fmt, bool all, bad_kind *out)
{
    int n = 0, want = fmt == PS_FORMAT_JSON ? FL_JSON : FL_AVRO;
    for (int k = 0; k < BK_COUNT; k++) {
        if (!all) {
            if (!(bad_kinds[k].flavour & want))
                continue;
            if ((bad_kinds[k].flavour & FL_CONFLUENT) && fmt != PS_FORMAT_CONFLUENT)
                continue;
        }
        out[n++] = (bad_kind)k;
    }
    return n;
}

/* ===================================================================
 * Output: event_writer.h (Kafka or file); the stop flag
 * =================================================================== */

static volatile sig_atomic_t gen_stop;

static void gen_on_signal(int sig)
{
    (void)sig;
    gen_stop = 1;
}

/* ===================================================================
 * The emission loop
 * =================================================================== */

typedef struct gen_counts {
    uint64_t records, good, bad;
    uint64_t by_reason[PS_BAD_REASON_COUNT];
    uint64_t by_kind[BK_COUNT];
    uint64_t by_type[4];
} gen_counts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct gen_ctx {
    const gen_opts *o;
    const gen_model *m;
    gen_draw *d;
    ps_event_encoder *enc;
    ps_event_output *out;
    FILE *truth; /* --truth */
    gen_counts counts;
    int fmt;
    bad_kind kinds[BK_COUNT];
    int nkinds;
    uint64_t id_key;
    char payload[16384];
} gen_ctx;

/* A NUL-terminated string as a ps_str (NULL stays null). */
static ps_str str_of(const char *s)
{
    ps_str r = {s, s ? (uint32_t)strlen(s) : 0};
    return r;
}

/* Fill ev (and the string buffers) from a drawn record. */
static void rec_to_ev(const gen_ctx *g, const gen_rec *rec, uint64_t index,
                      ps_event *ev, char *eid, char *cid, char *pid)
{
    snprintf(eid, 16, "e%012" PRIx64, permute48(index, g->id_key));
    snprintf(cid, 16, "c%06" PRIu32, rec->cust + 1);
    if (rec->product != 0)
        snprintf(pid, 16, "p%04" PRIu32, rec->product);
    memset(ev, 0, sizeof(*ev));
    ev->event_id = str_of(eid);
    ev->customer_id = str_of(cid);
    ev->type = (ps_event_type)rec->type;
    ev->product_id = str_of(rec->product ? pid : NULL);
    ev->has_amount = !isnan(rec->amount);
    ev->amount = rec->amount;
    ev->ts = rec->ts;
    /* signup_ts >= 1 (--start-ms is checked), so 0 means absent */
    ev->signup_ts = rec->signup ? g->d->signup_ts[rec->cust] : 0;
    ev->campaign =
        str_of(rec->campaign ? campaign_names[rec->campaign - 1] : NULL);
}

/* Encode ev as Avro (framed per format unless forced) or JSON. */
static long encode_ev(gen_ctx *g, const ps_event *ev, int fmt)
{
    return ps_event_encode(g->enc, ev, fmt, (uint32_t)g->o->schema_id,
                           g->payload, sizeof(g->payload));
}

/*
 * In the JSON object of len bytes in g->payload, replace the value of the
 * first member key (up to the next ',' or '}') by value.  For the JSON-only
 * kinds a ps_event cannot hold (a type outside the enum, ts as a string).
 * Returns the new length or -1.
 */
static long json_replace(gen_ctx *g, long len, const char *key,
                         const char *value)
{
    char *p = len < 0 ? NULL : memmem(g->payload, (size_t)len, key,
                                      strlen(key));
    char *end, *stop = g->payload + (len < 0 ? 0 : len);
    size_t vlen = strlen(value), tail;

    if (p == NULL)
        return -1;
    p += strlen(key);
    for (end = p; end < stop && *end != ',' && *end != '}'; end++)
        ;
    tail = (size_t)(stop - end);
    if ((size_t)(p - g->payload) + vlen + tail > sizeof(g->payload))
        return -1;
    memmove(p + vlen, end, tail);
    memcpy(p, value, vlen);
    return (long)((size_t)(p - g->payload) + vlen + tail);
}

/*
 * Build malformed record of the given kind from the good event ev (which
 * it may modify) into g->payload.  Each kind breaks exactly one rule.
 * Returns the length or -1.
 */
static long encode_bad(gen_ctx *g, bad_kind kind, ps_event *ev, rng *r)
{
    static char long_id[301];
    /* The flavour decides the encoding: the run's own format when the kind
     * fits it, else the kind's natural one. */
    int flav = bad_kinds[kind].flavour;
    int fmt = g->fmt;
    if (fmt == PS_FORMAT_JSON && !(flav & FL_JSON))
        fmt = (flav & FL_CONFLUENT) ? PS_FORMAT_CONFLUENT : PS_FORMAT_AVRO;
    else if (fmt != PS_FORMAT_JSON && !(flav & FL_AVRO))
        fmt = PS_FORMAT_JSON;
    if (kind == BK_SCHEMA_999)
        fmt = PS_FORMAT_CONFLUENT;

    switch (kind) {
    case BK_GARBAGE: {
        /* Random bytes.  The first byte is chosen so that no decoder could
         * take them for a record: not 0x00 (Confluent), not '{' (JSON), and
         * as Avro a string length longer than the rest of the bytes. */
        size_t len = 16 + (size_t)rng_below(r, 38); /* 16..53 */
        g->payload[0] = (char)(2 * (len + 10));    /* zigzag(len + 10) */
        for (size_t i = 1; i < len; i++) {
            char c = (char)rng_next(r);
            /* no line breaks or NULs: JSON-lines files stay one per line */
            g->payload[i] = (c == '\n' || c == '\r' || c == '\0') ? '#' : c;
        }
        return (long)len;
    }
    case BK_TRUNC_AVRO: {
        long n = encode_ev(g, ev, fmt == PS_FORMAT_CONFLUENT ? PS_FORMAT_CONFLUENT
                                                       : PS_FORMAT_AVRO);
        long keep = (fmt == PS_FORMAT_CONFLUENT ? 5 : 0) + 1 + 6;
        return n < keep ? n : keep; /* cut inside event_id */
    }
    case BK_TRUNC_JSON: {
        long n = encode_ev(g, ev, PS_FORMAT_JSON);
        return n < 0 ? -1 : n / 2;
    }
    case BK_SCHEMA_999:
        return ps_event_encode(g->enc, ev, PS_FORMAT_CONFLUENT,
                               BAD_SCHEMA_ID, g->payload, sizeof(g->payload));
    case BK_NO_CUSTOMER:
        ev->customer_id = str_of(NULL);
        break;
    case BK_CLICK_NO_PROD:
        ev->type = PS_CLICK;
        ev->product_id = str_of(NULL);
        ev->has_amount = false;
        break;
    case BK_SPEND_NO_AMT:
        ev->type = PS_SPEND;
        ev->product_id = str_of(NULL);
        ev->campaign = str_of(NULL);
        ev->has_amount = false;
        break;
    case BK_TS_STRING: /* JSON only */
        return json_replace(g, encode_ev(g, ev, fmt), ",\"ts\":",
                            "\"2025-01-01T00:00:00Z\"");
    case BK_TYPE_BROWSE: /* JSON only */
        return json_replace(g, encode_ev(g, ev, fmt), ",\"type\":",
                            "\"BROWSE\"");
    case BK_NEG_AMOUNT:
        if (ev->product_id.ptr == NULL)
            ev->product_id = str_of("p0001");
        ev->type = PS_PURCHASE;
        ev->campaign = str_of(NULL);
        ev->has_amount = true;
        ev->amount = -123.45;
        break;
    case BK_NAN_AMOUNT:
        if (ev->product_id.ptr == NULL)
            ev->product_id = str_of("p0001");
        ev->type = PS_PURCHASE;
        ev->campaign = str_of(NULL);
        ev->has_amount = true;
        ev->amount = NAN;
        break;
    case BK_SPEND_ZERO:
        ev->type = PS_SPEND;
        ev->product_id = str_of(NULL);
        ev->campaign = str_of(NULL);
        ev->has_amount = true;
        ev->amount = 0.0;
        break;
    case BK_EMPTY_ID:
        ev->customer_id = str_of("");
        break;
    case BK_LONG_ID:
        memset(long_id, 'x', 300);
        long_id[300] = '\0';
        ev->customer_id = str_of(long_id);
        break;
    case BK_TS_ZERO:
        ev->ts = 0;
        break;
    case BK_TS_NEG:
        ev->ts = -1000;
        break;
    case BK_SIGNUP_NEG:
        ev->signup_ts = -1;
        break;
    default:
        return -1;
    }
    return encode_ev(g, ev, fmt);
}

static void write_truth(FILE *fp, const ps_event *ev, int seg)
{
    fprintf(fp,
            "{\"event_id\":\"%.*s\",\"customer_id\":\"%.*s\",\"type\":\"%s\"",
            (int)ev->event_id.len, ev->event_id.ptr, (int)ev->customer_id.len,
            ev->customer_id.ptr, type_names[ev->type]);
    if (ev->product_id.ptr)
        fprintf(fp, ",\"product_id\":\"%.*s\"", (int)ev->product_id.len,
                ev->product_id.ptr);
    else
        fputs(",\"product_id\":null", fp);
    if (ev->has_amount)
        fprintf(fp, ",\"amount\":%.2f", ev->amount);
    else
        fputs(",\"amount\":null", fp);
    fprintf(fp, ",\"ts\":%" PRId64, ev->ts);
    if (ev->signup_ts != 0)
        fprintf(fp, ",\"signup_ts\":%" PRId64, ev->signup_ts);
    else
        fputs(",\"signup_ts\":null", fp);
    if (ev->campaign.ptr)
        fprintf(fp, ",\"campaign\":\"%.*s\"", (int)ev->campaign.len,
                ev->campaign.ptr);
    else
        fputs(",\"campaign\":null", fp);
    fprintf(fp, ",\"segment\":\"%s\"}\n", seg_names[seg]);
}

static void progress(const gen_ctx *g, uint64_t i, double t0, bool final)
{
    double el = now_s() - t0;
    fprintf(stderr,
            "propstream gen: %s%" PRIu64 "/%zu records (%.1f%%), %.0f "
            "records/s, bad %" PRIu64,
            final ? "done: " : "", i, g->d->n,
            g->d->n ? 100.0 * (double)i / (double)g->d->n : 100.0,
            el > 0 ? (double)i / el : 0.0, g->counts.bad);
    if (ps_event_output_is_kafka(g->out)) {
        const ps_event_output_stats *st = ps_event_output_get_stats(g->out);
        fprintf(stderr, ", delivered %" PRIu64 ", failed %" PRIu64
                        ", queued %d",
                st->delivered, st->failed, ps_event_output_queued(g->out));
    }
    fputc('\n', stderr);
}

static int emit_all(gen_ctx *g, char *errstr, size_t errstr_size)
{
    const gen_opts *o = g->o;
    rng bad_rng;
    double t0 = now_s(), next_progress = t0 + o->progress_s;
    uint64_t cycle = 0;

    rng_seed(&bad_rng, (uint64_t)o->seed ^ 0x6261645F72656373ULL);
    for (uint64_t i = 0; i < g->d->n && !gen_stop; i++) {
        const gen_rec *rec = &g->d->recs[i];
        char eid[16], cid[16], pid[16], key[16];
        ps_event ev;
        long len;

        rec_to_ev(g, rec, i, &ev, eid, cid, pid);
        memcpy(key, cid, sizeof(key));
        if (o->bad > 0 && rng_u01(&bad_rng) < o->bad) {
            bad_kind kind = g->kinds[cycle++ % (uint64_t)g->nkinds];
            len = encode_bad(g, kind, &ev, &bad_rng);
            g->counts.bad++;
            g->counts.by_reason[bad_kinds[kind].reason]++;
            g->counts.by_kind[kind]++;
        } else {
            len = encode_ev(g, &ev, g->fmt);
            g->counts.good++;
            g->counts.by_type[rec->type]++;
            if (g->truth != NULL)
                write_truth(g->truth, &ev, rec->seg);
        }
        if (len < 0) {
            ps_set_err(errstr, errstr_size, "cannot encode record %" PRIu64,
                       i);
            return -1;
        }
        if (ps_event_output_send(g->out, key, strlen(key), g->payload,
                                 (size_t)len, errstr, errstr_size) != 0)
            return -1;
        g->counts.records++;

        if ((i & 1023) == 0)
            ps_event_output_poll(g->out, 0);
        if (o->rate > 0) {
            double due = t0 + (double)(i + 1) / o->rate, now = now_s();
            if (due - now > 0.001) {
                struct timespec ts;
                double wait = due - now;
                ts.tv_sec = (time_t)wait;
                ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
                ps_event_output_poll(g->out, 0);
                nanosleep(&ts, NULL);
            }
        }
        if (o->progress_s > 0 && ((i & 63) == 0 || o->rate > 0) &&
            now_s() >= next_progress) {
            progress(g, i + 1, t0, false);
            next_progress += o->progress_s;
        }
    }
    /* Wait for every delivery report (or its timeout). */
    while (ps_event_output_queued(g->out) > 0 && !gen_stop) {
        ps_event_output_drain(g->out, 1000);
        if (o->progress_s > 0 && now_s() >= next_progress) {
            progress(g, g->counts.records, t0, false);
            next_progress += o->progress_s;
        }
    }
    if (o->progress_s > 0)
        progress(g, g->counts.records, t0, true);
    return 0;
}

/* ===================================================================
 * Summary
 * =================================================================== */

static json_t *triple_obj(const uint64_t v[PATH_COUNT])
{
    json_t *o = json_object();
    uint64_t all = 0;
    for (int p = 0; p < PATH_COUNT; p++) {
        json_object_set_new(o, path_names[p], json_integer((json_int_t)v[p]));
        all += v[p];
    }
    json_object_set_new(o, "all", json_integer((json_int_t)all));
    return o;
}

/*
 * The machine-readable summary, one JSON object on one stdout line:
 *   records, good, bad, bad_by_reason{reason: n} (all 7 reasons),
 *   bad_by_kind{kind: n}, events_by_type{CLICK, WISHLIST, PURCHASE, SPEND}
 *   (good records only), customers, products, seed, format, output,
 *   start_ms, horizon_days, kafka{delivered, failed} (Kafka only),
 *   elapsed_s, draw_s, records_per_s,
 *   segments{name: {share, customers, spend_mean, spend_sd, funnels_mean,
 *     p_wishlist, p_purchase_c, p_purchase_w, p_purchase_cw}},
 *   observed{name: {customers, funnels{c,w,cw,all}, successes{...},
 *     conversion{c,w,cw,all} (null when no funnel), direct_purchases,
 *     purchases, spend_events, purchase_amount_mean, purchase_amount_sd}}
 *   -- "observed" is what was drawn before --bad replaced records.
 */
static void print_summary(const gen_ctx *g, double draw_s, double emit_s)
{
    const gen_opts *o = g->o;
    const gen_model *m = g->m;
    const gen_observed *obs = &g->d->obs;
    json_t *root = json_object(), *reasons = json_object(),
           *kinds = json_object(), *types = json_object(),
           *segs = json_object(), *observed = json_object();

    json_object_set_new(root, "records",
                        json_integer((json_int_t)g->counts.records));
    json_object_set_new(root, "good", json_integer((json_int_t)g->counts.good));
    json_object_set_new(root, "bad", json_integer((json_int_t)g->counts.bad));
    for (int r = 1; r < PS_BAD_REASON_COUNT; r++)
        json_object_set_new(reasons, reason_names[r],
                            json_integer((json_int_t)g->counts.by_reason[r]));
    json_object_set_new(root, "bad_by_reason", reasons);
    for (int k = 0; k < g->nkinds; k++)
        json_object_set_new(
            kinds, bad_kinds[g->kinds[k]].name,
            json_integer((json_int_t)g->counts.by_kind[g->kinds[k]]));
    json_object_set_new(root, "bad_by_kind", kinds);
    for (int t = 0; t < 4; t++)
        json_object_set_new(types, type_names[t],
                            json_integer((json_int_t)g->counts.by_type[t]));
    json_object_set_new(root, "events_by_type", types);
    json_object_set_new(root, "customers", json_integer(o->customers));
    json_object_set_new(root, "products", json_integer(o->products));
    json_object_set_new(root, "seed", json_integer(o->seed));
    json_object_set_new(root, "format", json_string(ps_event_format_name(g->fmt)));
    json_object_set_new(root, "output",
                        json_string(o->output ? o->output : o->topic));
    json_object_set_new(root, "start_ms", json_integer(o->start_ms));
    json_object_set_new(root, "horizon_days", json_integer(o->horizon_days));
    if (ps_event_output_is_kafka(g->out)) {
        const ps_event_output_stats *st = ps_event_output_get_stats(g->out);
        json_t *k = json_object();
        json_object_set_new(k, "bootstrap", json_string(o->bootstrap));
        json_object_set_new(k, "topic", json_string(o->topic));
        json_object_set_new(k, "delivered",
                            json_integer((json_int_t)st->delivered));
        json_object_set_new(k, "failed",
                            json_integer((json_int_t)st->failed));
        json_object_set_new(root, "kafka", k);
    }
    json_object_set_new(root, "draw_s", json_real(draw_s));
    json_object_set_new(root, "elapsed_s", json_real(emit_s));
    json_object_set_new(root, "records_per_s",
                        json_real(emit_s > 0 ? (double)g->counts.records /
                                                   emit_s
                                             : 0.0));
    for (int s = 0; s < SEG_COUNT; s++) {
        json_t *so = json_object(), *ob = json_object(), *conv = json_object();
        uint64_t fall = 0, sall = 0;
        json_object_set_new(so, "share", json_real(m->share[s]));
        json_object_set_new(so, "customers",
                            json_integer((json_int_t)obs->customers[s]));
        json_object_set_new(so, "spend_mean", json_real(m->spend_mean[s]));
        json_object_set_new(so, "spend_sd", json_real(m->spend_sd[s]));
        json_object_set_new(so, "funnels_mean", json_real(m->funnels[s]));
        json_object_set_new(so, "p_wishlist", json_real(m->p_wishlist[s]));
        json_object_set_new(so, "p_purchase_c",
                            json_real(m->p_purchase[PATH_C][s]));
        json_object_set_new(so, "p_purchase_w",
                            json_real(m->p_purchase[PATH_W][s]));
        json_object_set_new(so, "p_purchase_cw",
                            json_real(m->p_purchase[PATH_CW][s]));
        json_object_set_new(segs, seg_names[s], so);

        json_object_set_new(ob, "customers",
                            json_integer((json_int_t)obs->customers[s]));
        json_object_set_new(ob, "funnels", triple_obj(obs->funnels[s]));
        json_object_set_new(ob, "successes", triple_obj(obs->successes[s]));
        for (int p = 0; p < PATH_COUNT; p++) {
            uint64_t f = obs->funnels[s][p], k = obs->successes[s][p];
            fall += f;
            sall += k;
            json_object_set_new(conv, path_names[p],
                                f ? json_real((double)k / (double)f)
                                  : json_null());
        }
        json_object_set_new(conv, "all",
                            fall ? json_real((double)sall / (double)fall)
                                 : json_null());
        json_object_set_new(ob, "conversion", conv);
        json_object_set_new(ob, "direct_purchases",
                            json_integer((json_int_t)obs->direct[s]));
        json_object_set_new(ob, "purchases",
                            json_integer((json_int_t)(sall + obs->direct[s])));
        json_object_set_new(ob, "spend_events",
                            json_integer((json_int_t)obs->spend_events[s]));
        json_object_set_new(ob, "purchase_amount_mean",
                            json_real(obs->amount_mean[s]));
        json_object_set_new(
            ob, "purchase_amount_sd",
            json_real(obs->amount_n[s] > 1
                          ? sqrt(obs->amount_m2[s] /
                                 (double)(obs->amount_n[s] - 1))
                          : 0.0));
        json_object_set_new(observed, seg_names[s], ob);
    }
    json_object_set_new(root, "segments", segs);
    json_object_set_new(observed, "funnels_capped",
                        json_integer((json_int_t)obs->funnels_capped));
    json_object_set_new(root, "observed", observed);

    json_dumpf(root, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(root);

    /* The human version: the true rates. */
    fprintf(stderr,
            "propstream gen: %" PRIu64 " records (%" PRIu64 " good, %" PRIu64
            " bad) for %" PRId64 " customers, seed %" PRId64 ", %s\n",
            g->counts.records, g->counts.good, g->counts.bad, o->customers,
            o->seed, ps_event_format_name(g->fmt));
    fprintf(stderr, "  segment  share  customers  spend mean/sd    "
                    "p_wish  p_c   p_w   p_cw  | observed c / w / cw\n");
    for (int s = 0; s < SEG_COUNT; s++) {
        double c[PATH_COUNT];
        for (int p = 0; p < PATH_COUNT; p++)
            c[p] = obs->funnels[s][p]
                       ? (double)obs->successes[s][p] /
                             (double)obs->funnels[s][p]
                       : NAN;
        fprintf(stderr,
                "  %-8s %5.2f %10" PRIu64 "  %7.0f/%-7.0f  %5.2f  %4.2f  "
                "%4.2f  %4.2f | %.3f / %.3f / %.3f\n",
                seg_names[s], m->share[s], obs->customers[s],
                m->spend_mean[s], m->spend_sd[s], m->p_wishlist[s],
                m->p_purchase[PATH_C][s], m->p_purchase[PATH_W][s],
                m->p_purchase[PATH_CW][s], c[0], c[1], c[2]);
    }
}

/* ===================================================================
 * The command
 * =================================================================== */

int ps_cmd_gen(int argc, char **argv)
{
    gen_opts opts;
    ps_config_result res;
    gen_model model;
    gen_draw draw;
    gen_ctx *g = NULL;
    char errstr[512];
    struct sigaction sa;
    int rc = 2, prc;
    double t_draw, t_emit;

    memset(&opts, 0, sizeof(opts));
    memset(&res, 0, sizeof(res));
    memset(&draw, 0, sizeof(draw));
    errstr[0] = '\0';

    prc = ps_config_parse(gen_options, GEN_NOPTS, &opts, &res, argc, argv,
                          errstr, sizeof(errstr));
    if (prc == 1) {
        rc = 0;
        goto done;
    }
    if (prc != 0)
        goto usage;
    if (res.positional.n > 0) {
        ps_set_err(errstr, sizeof(errstr), "unexpected argument \"%s\"",
                   res.positional.v[0]);
        goto usage;
    }
    if ((opts.bootstrap == NULL) == (opts.output == NULL)) {
        ps_set_err(errstr, sizeof(errstr),
                   "give exactly one of --bootstrap (-b) with --topic, or "
                   "--output (-o)");
        goto usage;
    }
    if (build_model(&opts, &model, errstr, sizeof(errstr)) != 0)
        goto usage;
    if (opts.start_ms - opts.signup_window_days * DAY_MS < 1) {
        ps_set_err(errstr, sizeof(errstr),
                   "--start-ms: must be more than --signup-window-days after "
                   "the epoch");
        goto usage;
    }
    if (strcmp(opts.bad_mix, "native") != 0 &&
        strcmp(opts.bad_mix, "all") != 0) {
        ps_set_err(errstr, sizeof(errstr),
                   "--bad-mix: \"%s\" is not native or all", opts.bad_mix);
        goto usage;
    }

    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        ps_set_err(errstr, sizeof(errstr), "out of memory");
        rc = 1;
        goto fail;
    }
    g->fmt = ps_event_format_parse(opts.format);
    if (g->fmt < 0) {
        ps_set_err(errstr, sizeof(errstr),
                   "--format: \"%s\" is not confluent, avro or json",
                   opts.format);
        goto usage;
    }
    g->o = &opts;
    g->m = &model;
    g->d = &draw;
    {
        bool all = strcmp(opts.bad_mix, "all") == 0;
        if (all && g->fmt == PS_FORMAT_JSON && opts.output != NULL) {
            /* Avro bytes may contain '\n' and would split a JSON line. */
            fprintf(stderr, "propstream gen: --bad-mix all needs Kafka "
                            "output with --format json; using native\n");
            all = false;
        }
        g->nkinds = select_kinds(g->fmt, all, g->kinds);
    }
    {
        uint64_t x = (uint64_t)opts.seed ^ 0x6576656E74696473ULL;
        g->id_key = splitmix64(&x);
    }

    rc = 1; /* from here on failures are runtime failures */
    g->enc = ps_event_encoder_new(2, errstr, sizeof(errstr));
    if (g->enc == NULL)
        goto fail;
    if (opts.output != NULL) {
        if (ps_event_output_open_file(&g->out, opts.output, g->fmt, errstr,
                                      sizeof(errstr)) != 0)
            goto fail;
    } else {
        int krc = ps_event_output_open_kafka(&g->out, opts.bootstrap,
                                             opts.topic, &res.kafka, errstr,
                                             sizeof(errstr));
        if (krc == 2) {
            rc = 2;
            goto usage;
        }
        if (krc != 0)
            goto fail;
    }
    if (opts.truth != NULL) {
        g->truth = fopen(opts.truth, "w");
        if (g->truth == NULL) {
            ps_set_err(errstr, sizeof(errstr), "--truth %s: %s", opts.truth,
                       strerror(errno));
            goto fail;
        }
        setvbuf(g->truth, NULL, _IOFBF, 1 << 20);
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = gen_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    draw.o = &opts;
    draw.m = &model;
    t_draw = now_s();
    if (draw_all(&draw, errstr, sizeof(errstr)) != 0)
        goto fail;
    t_draw = now_s() - t_draw;
    if (opts.progress_s > 0)
        fprintf(stderr,
                "propstream gen: drew %zu events for %" PRId64
                " customers in %.2f s\n",
                draw.n, opts.customers, t_draw);

    t_emit = now_s();
    if (emit_all(g, errstr, sizeof(errstr)) != 0)
        goto fail;
    t_emit = now_s() - t_emit;

    if (ps_event_output_sync(g->out, errstr, sizeof(errstr)) != 0)
        goto fail;
    if (g->truth != NULL && fflush(g->truth) != 0) {
        ps_set_err(errstr, sizeof(errstr), "--truth %s: %s", opts.truth,
                   strerror(errno));
        goto fail;
    }
    print_summary(g, t_draw, t_emit);
    if (gen_stop) {
        ps_set_err(errstr, sizeof(errstr), "interrupted after %" PRIu64
                   " records", g->counts.records);
        goto fail;
    }
    if (ps_event_output_is_kafka(g->out)) {
        const ps_event_output_stats *st = ps_event_output_get_stats(g->out);
        if (st->failed > 0 || st->delivered != g->counts.records) {
            ps_set_err(errstr, sizeof(errstr),
                       "%" PRIu64 " of %" PRIu64 " records not delivered (%s)",
                       g->counts.records - st->delivered, g->counts.records,
                       st->failed ? st->first_error : "no report");
            goto fail;
        }
    }
    rc = 0;
    goto done;

usage:
    fprintf(stderr, "propstream gen: %s\n", errstr);
    fprintf(stderr, "try 'propstream gen --help'\n");
    rc = 2;
    goto done;
fail:
    fprintf(stderr, "propstream gen: %s\n", errstr);
    rc = 1;
done:
    if (g != NULL) {
        ps_event_output_close(g->out, NULL);
        if (g->truth != NULL)
            fclose(g->truth);
        ps_event_encoder_destroy(g->enc);
        free(g);
    }
    draw_free(&draw);
    ps_config_free(gen_options, GEN_NOPTS, &opts, &res);
    return rc;
}
