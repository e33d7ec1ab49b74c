/*
 * window.c -- rolling event-time window with exact distinct customers
 * (see window.h for the scheme and its invariants).
 *
 * Layout.  One allocation: the struct, then the ring of R = B + A buckets
 * (bucket k lives in slot k mod R), then A rows of B scheduled-move counts
 * (ahead bucket u uses row u mod A; entry d, 1 <= d < B, counts customers
 * who will leave bucket u - d when the window passes u; entry 0 unused).
 *
 * Invariants, with cur the window position (window = buckets
 * [cur - B, cur), ahead = [cur, cur + A)):
 *   - ring slots hold exactly the buckets [cur - B, cur + A); every other
 *     bucket is empty, so a slot is zeroed when its bucket expires;
 *   - for a window bucket k, cnt = customers whose latest activity before
 *     cur is in k; for an ahead bucket u, cnt = customers active in u;
 *   - for an ahead bucket u and each customer c active in u whose
 *     previous activity p (the latest before u) has u - p < B:
 *     leave[u][u - p] counts c.  Rows of buckets not ahead are zero;
 *   - a member, once synced to cur, has settled1 - 1 = its attributed
 *     bucket (latest activity before cur, or any older bucket when that
 *     one has expired: it no longer matters) and bit i of `ahead` set iff
 *     it is active in bucket cur + i.
 * Decrements saturate at 0 and count in `broken` instead of wrapping: they
 * only happen if a member was used with another window or restored out of
 * step with it.
 *
 * The spend statistics are the standard ones: Welford (1962) per bucket,
 * Chan, Golub and LeVeque (1979) to merge buckets.
 */
#include "window.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "normal.h"

#define WINDOW_STATE_VERSION 2 /* 1: buckets without sq */
/* Larger times are invalid (year ~146 million): keeps every position and
 * millisecond computation below clear of int64 overflow. */
#define MAX_TS (INT64_MAX / 2)
#define MEMBER_STATE_VERSION 1

typedef struct bucket {
    uint32_t n;   /* spend events */
    uint32_t cnt; /* customers attributed here (see above) */
    double sum;   /* their amounts */
    double m2;    /* sum of squared deviations from sum / n */
    double sq;    /* sum of squared amounts (the additive moment) */
} bucket;

struct ps_window {
    ps_window_conf conf;
    uint32_t ring; /* R = B + A */
    int64_t cur;   /* position: first bucket not in the window */
    ps_window_counters counters;
    bucket *buckets; /* [ring] */
    uint32_t *leave; /* [ahead][buckets] */
};

/* ---------------------------------------------------------------------- */
/* Configuration and life cycle                                             */
/* ---------------------------------------------------------------------- */

void ps_window_conf_7d(ps_window_conf *conf)
{
    conf->bucket_ms = 3600000;
    conf->buckets = 168;
    conf->ahead = 2;
}

void ps_window_conf_30d(ps_window_conf *conf)
{
    conf->bucket_ms = 3600000;
    conf->buckets = 720;
    conf->ahead = 2;
}

int ps_window_conf_check(const ps_window_conf *conf, char *errstr,
                         size_t errstr_size)
{
    if (conf->bucket_ms < 1) {
        ps_set_err(errstr, errstr_size, "window bucket width must be >= 1 ms");
        return PS_ERR_CONFIG;
    }
    if (conf->buckets < 1 || conf->buckets > PS_WINDOW_MAX_BUCKETS) {
        ps_set_err(errstr, errstr_size, "window buckets must be 1..%u",
                   PS_WINDOW_MAX_BUCKETS);
        return PS_ERR_CONFIG;
    }
    if (conf->ahead < 1 || conf->ahead > PS_WINDOW_MAX_AHEAD) {
        ps_set_err(errstr, errstr_size, "window ahead buckets must be 1..%u",
                   PS_WINDOW_MAX_AHEAD);
        return PS_ERR_CONFIG;
    }
    /* Bucket numbers (ts / bucket_ms) plus the ring must fit in int64. */
    return PS_OK;
}

static size_t leave_len(const ps_window_conf *conf)
{
    return (size_t)conf->ahead * conf->buckets;
}

/* Header padded so the bucket array that follows is 8-byte aligned. */
static size_t header_bytes(void)
{
    return (sizeof(ps_window) + 7) & ~(size_t)7;
}

size_t ps_window_bytes(const ps_window_conf *conf)
{
    if (ps_window_conf_check(conf, NULL, 0) != PS_OK)
        return 0;
    size_t ring = (size_t)conf->buckets + conf->ahead;
    return header_bytes() + ring * sizeof(bucket) +
           leave_len(conf) * sizeof(uint32_t);
}

ps_window *ps_window_new(const ps_window_conf *conf, char *errstr,
                         size_t errstr_size)
{
    if (ps_window_conf_check(conf, errstr, errstr_size) != PS_OK)
        return NULL;
    size_t bytes = ps_window_bytes(conf);
    unsigned char *mem = calloc(1, bytes);
    if (mem == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory (%zu bytes)", bytes);
        return NULL;
    }
    ps_window *w = (ps_window *)mem;
    w->conf = *conf;
    w->ring = conf->buckets + conf->ahead;
    w->buckets = (bucket *)(mem + header_bytes());
    w->leave = (uint32_t *)(w->buckets + w->ring);
    return w;
}

void ps_window_destroy(ps_window *w)
{
    free(w);
}

const ps_window_conf *ps_window_get_conf(const ps_window *w)
{
    return &w->conf;
}

void ps_window_reset(ps_window *w)
{
    memset(w->buckets, 0, w->ring * sizeof(bucket));
    memset(w->leave, 0, leave_len(&w->conf) * sizeof(uint32_t));
    memset(&w->counters, 0, sizeof(w->counters));
    w->cur = 0;
}

int64_t ps_window_start_ms(const ps_window *w)
{
    return (w->cur - (int64_t)w->conf.buckets) * w->conf.bucket_ms;
}

int64_t ps_window_end_ms(const ps_window *w)
{
    return w->cur * w->conf.bucket_ms;
}

void ps_window_get_counters(const ps_window *w, ps_window_counters *out)
{
    *out = w->counters;
}

/* ---------------------------------------------------------------------- */
/* Ring helpers                                                             */
/* ---------------------------------------------------------------------- */

/* k mod n in [0, n), also for negative k (young windows reach below 0). */
static size_t floor_mod(int64_t k, uint32_t n)
{
    int64_t r = k % (int64_t)n;
    return (size_t)(r < 0 ? r + n : r);
}

static bucket *bucket_at(ps_window *w, int64_t k)
{
    return &w->buckets[floor_mod(k, w->ring)];
}

static uint32_t *leave_row(ps_window *w, int64_t u)
{
    return &w->leave[floor_mod(u, w->conf.ahead) * w->conf.buckets];
}

static void dec_sat(ps_window *w, uint32_t *x, uint32_t by)
{
    if (*x >= by) {
        *x -= by;
    } else {
        *x = 0;
        w->counters.broken++;
    }
}

static int in_window(const ps_window *w, int64_t k)
{
    return k >= w->cur - (int64_t)w->conf.buckets && k < w->cur;
}

/* Schedule (+1) or cancel (-1) the move of one customer from bucket p
 * (-1 = none) to ahead bucket u when the window passes u. */
static void schedule(ps_window *w, int64_t u, int64_t p, int sign)
{
    if (p < 0 || u - p >= (int64_t)w->conf.buckets)
        return; /* p will have expired when u is passed */
    uint32_t *e = &leave_row(w, u)[u - p];
    if (sign > 0)
        (*e)++;
    else
        dec_sat(w, e, 1);
}

/* Pass bucket u = cur: apply its scheduled moves, expire bucket u - B and
 * recycle its slot for the new ahead bucket u + A. */
static void step(ps_window *w)
{
    int64_t u = w->cur;
    int64_t b = w->conf.buckets;
    uint32_t *row = leave_row(w, u);

    /* After the step the window is [u + 1 - B, u + 1): x = u - d is in it
     * for every stored d (1 <= d < B). */
    for (int64_t d = 1; d < b; d++) {
        if (row[d] != 0) {
            dec_sat(w, &bucket_at(w, u - d)->cnt, row[d]);
            row[d] = 0;
        }
    }
    memset(bucket_at(w, u - b), 0, sizeof(bucket));
    w->cur = u + 1;
}

/* Move the position to `to` (> cur). */
static void move_to(ps_window *w, int64_t to)
{
    int64_t b = w->conf.buckets, a = w->conf.ahead;
    if (to - b >= w->cur + a) {
        /* Every bucket in the ring (up to cur + A - 1) ends up before the
         * new window start: nothing survives, scheduled moves included. */
        memset(w->buckets, 0, w->ring * sizeof(bucket));
        memset(w->leave, 0, leave_len(&w->conf) * sizeof(uint32_t));
        w->cur = to;
        return;
    }
    while (w->cur < to)
        step(w);
}

void ps_window_advance(ps_window *w, int64_t watermark_ms)
{
    if (watermark_ms < 0)
        return;
    if (watermark_ms > MAX_TS)
        watermark_ms = MAX_TS;
    int64_t to = watermark_ms / w->conf.bucket_ms;
    if (to > w->cur)
        move_to(w, to);
}

/* ---------------------------------------------------------------------- */
/* Members: bring up to date, record activity                               */
/* ---------------------------------------------------------------------- */

/* The member as of position cur: its ahead buckets the window has passed
 * folded into its settled bucket (the window applied the corresponding
 * moves when passing them).  false when m is not from this window's past
 * (*out is then a fresh member). */
static bool member_view(int64_t cur, const ps_window_member *m,
                        ps_window_member *out)
{
    *out = *m;
    if (m->base == cur)
        return true;
    if (m->base > cur || m->settled1 < 0 || m->settled1 > cur) {
        memset(out, 0, sizeof(*out));
        out->base = cur;
        return false;
    }
    int64_t shift = cur - m->base;
    uint64_t passed =
        shift >= 64 ? m->ahead : m->ahead & ((UINT64_C(1) << shift) - 1);
    if (passed != 0) {
        int hi = 63 - __builtin_clzll(passed);
        out->settled1 = m->base + hi + 1;
    }
    out->ahead = shift >= 64 ? 0 : m->ahead >> shift;
    out->base = cur;
    return true;
}

static void member_sync(ps_window *w, ps_window_member *m)
{
    if (!member_view(w->cur, m, m))
        w->counters.broken++; /* start it afresh */
}

/* Record that the member is active in bucket k, cur - B <= k < cur + A. */
static void member_activity(ps_window *w, ps_window_member *m, int64_t k)
{
    member_sync(w, m);
    int64_t cur = w->cur;
    int64_t s = m->settled1 - 1; /* -1: none */

    if (k < cur) {
        if (k <= s)
            return; /* attribution stays at s >= k */
        if (in_window(w, s))
            dec_sat(w, &bucket_at(w, s)->cnt, 1);
        bucket_at(w, k)->cnt++;
        if (m->ahead != 0) {
            /* The first ahead bucket's predecessor was s, now k. */
            int64_t u = cur + __builtin_ctzll(m->ahead);
            schedule(w, u, s, -1);
            schedule(w, u, k, +1);
        }
        m->settled1 = k + 1;
        return;
    }

    int i = (int)(k - cur);
    uint64_t bit = UINT64_C(1) << i;
    if (m->ahead & bit)
        return;
    uint64_t below = m->ahead & (bit - 1);
    uint64_t above = m->ahead & ~(bit | (bit - 1));
    int64_t p = below ? cur + 63 - __builtin_clzll(below) : s;
    if (above) {
        int64_t q = cur + __builtin_ctzll(above);
        schedule(w, q, p, -1);
        schedule(w, q, k, +1);
    }
    bucket_at(w, k)->cnt++;
    schedule(w, k, p, +1);
    m->ahead |= bit;
}

/* Common checks; the bucket of ts, or -1 with *res set when ignored. */
static int64_t place(ps_window *w, int64_t ts_ms, ps_window_result *res)
{
    *res = PS_WINDOW_ADDED;
    if (ts_ms <= 0 || ts_ms > MAX_TS) {
        w->counters.invalid++;
        *res = PS_WINDOW_INVALID;
        return -1;
    }
    int64_t k = ts_ms / w->conf.bucket_ms;
    if (k < w->cur - (int64_t)w->conf.buckets) {
        w->counters.late++;
        *res = PS_WINDOW_LATE;
        return -1;
    }
    if (k >= w->cur + (int64_t)w->conf.ahead) {
        move_to(w, k - (int64_t)w->conf.ahead + 1);
        w->counters.pushed++;
        *res = PS_WINDOW_PUSHED;
    }
    return k;
}

ps_window_result ps_window_add(ps_window *w, int64_t ts_ms, double amount,
                               ps_window_member *m)
{
    ps_window_result res;
    if (!isfinite(amount) || amount < 0) {
        w->counters.invalid++;
        return PS_WINDOW_INVALID;
    }
    int64_t k = place(w, ts_ms, &res);
    if (k < 0)
        return res;
    bucket *bk = bucket_at(w, k);
    if (bk->n == UINT32_MAX) { /* 4e9 events in one bucket: refuse */
        w->counters.invalid++;
        return PS_WINDOW_INVALID;
    }
    /* Welford with mean = sum / n. */
    double mean0 = bk->n ? bk->sum / bk->n : 0;
    bk->n++;
    bk->sum += amount;
    bk->m2 += (amount - mean0) * (amount - bk->sum / bk->n);
    bk->sq += amount * amount;
    if (m != NULL)
        member_activity(w, m, k);
    return res;
}

ps_window_result ps_window_touch(ps_window *w, int64_t ts_ms,
                                 ps_window_member *m)
{
    ps_window_result res;
    if (m == NULL) {
        w->counters.invalid++;
        return PS_WINDOW_INVALID;
    }
    int64_t k = place(w, ts_ms, &res);
    if (k >= 0)
        member_activity(w, m, k);
    return res;
}

/* ---------------------------------------------------------------------- */
/* Moving a customer between windows                                        */
/* ---------------------------------------------------------------------- */

void ps_window_spend_add(ps_window_spend *s, double amount)
{
    double mean0 = s->n ? s->sum / s->n : 0;
    s->n++;
    s->sum += amount;
    s->m2 += (amount - mean0) * (amount - s->sum / s->n);
    s->sq += amount * amount;
}

/* The ring bucket of ts for unadd / merge, or NULL with *res set. */
static bucket *bucket_in_ring(ps_window *w, int64_t ts_ms,
                              ps_window_result *res)
{
    *res = PS_WINDOW_ADDED;
    if (ts_ms <= 0 || ts_ms > MAX_TS) {
        *res = PS_WINDOW_INVALID;
        return NULL;
    }
    int64_t k = ts_ms / w->conf.bucket_ms;
    if (k < w->cur - (int64_t)w->conf.buckets) {
        *res = PS_WINDOW_LATE;
        return NULL;
    }
    if (k >= w->cur + (int64_t)w->conf.ahead) {
        *res = PS_WINDOW_INVALID;
        return NULL;
    }
    return bucket_at(w, k);
}

static double spend_sq(const ps_window_spend *s)
{
    return s->sq;
}

static bool spend_ok(const ps_window_spend *s)
{
    return isfinite(s->sum) && s->sum >= 0 && isfinite(s->m2) &&
           s->m2 >= 0 && isfinite(s->sq) && s->sq >= 0;
}

ps_window_result ps_window_unadd(ps_window *w, int64_t ts_ms,
                                 const ps_window_spend *s)
{
    ps_window_result res;
    if (s->n == 0)
        return PS_WINDOW_ADDED;
    if (!spend_ok(s)) {
        w->counters.invalid++;
        return PS_WINDOW_INVALID;
    }
    bucket *bk = bucket_in_ring(w, ts_ms, &res);
    if (bk == NULL) {
        if (res == PS_WINDOW_INVALID)
            w->counters.invalid++;
        return res;
    }
    if (bk->n < s->n) {
        w->counters.broken++;
        return PS_WINDOW_INVALID;
    }
    uint32_t nr = bk->n - s->n;
    if (nr == 0) {
        bk->n = 0;
        bk->sum = 0;
        bk->m2 = 0;
        bk->sq = 0;
        return PS_WINDOW_ADDED;
    }
    /* Chan: m2 = m2r + m2s + d^2 nr ns / n, with d = mean_s - mean_r */
    double sr = bk->sum - s->sum;
    if (sr < 0)
        sr = 0;
    double d = s->sum / s->n - sr / nr;
    double m2r = bk->m2 - s->m2 - d * d * ((double)nr * s->n / bk->n);
    double sqr = bk->sq - spend_sq(s);
    bk->n = nr;
    bk->sum = sr;
    bk->m2 = nr == 1 || !(m2r > 0) ? 0 : m2r;
    /* one amount left: its square exactly; else clamp the rounding */
    bk->sq = nr == 1 ? sr * sr : sqr > 0 ? sqr : 0;
    return PS_WINDOW_ADDED;
}

ps_window_result ps_window_merge(ps_window *w, int64_t ts_ms,
                                 const ps_window_spend *s)
{
    ps_window_result res;
    if (s->n == 0)
        return PS_WINDOW_ADDED;
    if (!spend_ok(s)) {
        w->counters.invalid++;
        return PS_WINDOW_INVALID;
    }
    bucket *bk = bucket_in_ring(w, ts_ms, &res);
    if (bk == NULL) {
        if (res == PS_WINDOW_INVALID)
            w->counters.invalid++;
        else
            w->counters.late++;
        return res;
    }
    if (bk->n > UINT32_MAX - s->n) {
        w->counters.invalid++;
        return PS_WINDOW_INVALID;
    }
    if (bk->n == 0) {
        bk->n = s->n;
        bk->sum = s->sum;
        bk->m2 = s->m2;
        bk->sq = spend_sq(s);
        return PS_WINDOW_ADDED;
    }
    double d = s->sum / s->n - bk->sum / bk->n;
    double n = (double)bk->n + s->n;
    bk->m2 += s->m2 + d * d * ((double)bk->n * s->n / n);
    bk->sq += spend_sq(s);
    bk->n += s->n;
    bk->sum += s->sum;
    return PS_WINDOW_ADDED;
}

int ps_window_member_live(const ps_window *w, const ps_window_member *m)
{
    ps_window_member v;
    if (m->settled1 == 0 && m->ahead == 0)
        return 0;
    if (!member_view(w->cur, m, &v))
        return 0;
    return v.ahead != 0 ||
           (v.settled1 > 0 && in_window(w, v.settled1 - 1));
}

int ps_window_member_move(ps_window *from, ps_window_member *m,
                          ps_window *to)
{
    if (from == to)
        return PS_OK;
    if (from->cur != to->cur || from->conf.bucket_ms != to->conf.bucket_ms ||
        from->conf.buckets != to->conf.buckets ||
        from->conf.ahead != to->conf.ahead)
        return PS_ERR;
    member_sync(from, m);
    int64_t cur = from->cur;
    int64_t s = m->settled1 - 1; /* -1: none */
    /* undo in `from`: the attribution, each ahead bucket and its move */
    if (s >= 0 && in_window(from, s))
        dec_sat(from, &bucket_at(from, s)->cnt, 1);
    int64_t p = s;
    for (uint64_t a = m->ahead; a != 0; a &= a - 1) {
        int64_t u = cur + __builtin_ctzll(a);
        dec_sat(from, &bucket_at(from, u)->cnt, 1);
        schedule(from, u, p, -1);
        p = u;
    }
    /* redo in `to`, oldest bucket first */
    ps_window_member t;
    memset(&t, 0, sizeof(t));
    t.base = cur;
    if (s >= 0 && in_window(to, s))
        member_activity(to, &t, s);
    for (uint64_t a = m->ahead; a != 0; a &= a - 1)
        member_activity(to, &t, cur + __builtin_ctzll(a));
    *m = t;
    return PS_OK;
}

/* ---------------------------------------------------------------------- */
/* Query                                                                    */
/* ---------------------------------------------------------------------- */

static uint32_t clamp_span(const ps_window *w, uint32_t span)
{
    if (span < 1)
        return 1;
    return span > w->conf.buckets ? w->conf.buckets : span;
}

int64_t ps_window_span_start_ms(const ps_window *w, uint32_t span)
{
    return (w->cur - (int64_t)clamp_span(w, span)) * w->conf.bucket_ms;
}

void ps_window_query(const ps_window *w, double threshold, ps_window_stats *out)
{
    ps_window_query_span(w, w->conf.buckets, threshold, out);
}

void ps_window_query_span(const ps_window *w, uint32_t span, double threshold,
                          ps_window_stats *out)
{
    uint64_t n = 0, active = 0;
    double sum = 0, m2 = 0, sq = 0;

    span = clamp_span(w, span);
    for (int64_t k = w->cur - (int64_t)span; k < w->cur; k++) {
        const bucket *bk = &w->buckets[floor_mod(k, w->ring)];
        active += bk->cnt;
        if (bk->n == 0)
            continue;
        sq += bk->sq; /* in bucket order: independent of arrival order */
        if (n == 0) {
            n = bk->n;
            sum = bk->sum;
            m2 = bk->m2;
            continue;
        }
        /* Chan et al.: merge (n, sum, m2) with the bucket's. */
        double d = bk->sum / bk->n - sum / (double)n;
        double nn = (double)n + bk->n;
        m2 += bk->m2 + d * d * ((double)n * bk->n / nn);
        n += bk->n;
        sum += bk->sum;
    }
    out->n = n;
    out->sum = sum;
    out->sumsq = sq;
    out->mean = n ? sum / (double)n : 0;
    out->std = n >= 2 ? sqrt((m2 > 0 ? m2 : 0) / (double)(n - 1)) : 0;
    out->p_ge = n ? ps_normal_tail(out->mean, out->std, threshold) : 0;
    out->active = active;
}

/* ---------------------------------------------------------------------- */
/* The published hash (window.h, "Combining instances")                     */
/* ---------------------------------------------------------------------- */

/* The tail is Abramowitz & Stegun 26.2.17 (Zelen & Severo): for x >= 0,
 * Q(x) = phi(x) (b1 t + .. + b5 t^5), t = 1 / (1 + 0.2316419 x),
 * |error| < 7.5e-8; Q(-x) = 1 - Q(x). */
const char ps_window_hash_lua[] =
    "local k,a=KEYS[1],ARGV\n"
    "local n=redis.call('HINCRBY',k,'n',a[1])\n"
    "local s=tonumber(redis.call('HINCRBYFLOAT',k,'sum',a[2]))\n"
    "local q=tonumber(redis.call('HINCRBYFLOAT',k,'sumsq',a[3]))\n"
    "redis.call('HINCRBY',k,'active',a[4])\n"
    "redis.call('HINCRBY',k,'pushed',a[5])\n"
    "for i,f in ipairs({'start_ms','end_ms'}) do\n"
    "local v=tonumber(redis.call('HGET',k,f))\n"
    "if not v or tonumber(a[5+i])>v then redis.call('HSET',k,f,a[5+i]) end\n"
    "end\n"
    "local m,d,p,t=0,0,0,tonumber(a[8])\n"
    "if n>0 then\n"
    "m=s/n\n"
    "if n>1 then local v=(q-s*s/n)/(n-1) if v>0 then d=math.sqrt(v) end end\n"
    "if d>0 then\n"
    "local z=(t-m)/d\n"
    "local x=math.abs(z)\n"
    "local u=1/(1+0.2316419*x)\n"
    "p=0.3989422804014327*math.exp(-x*x/2)*u*(0.31938153+u*(-0.356563782+"
    "u*(1.781477937+u*(-1.821255978+u*1.330274429))))\n"
    "if z<0 then p=1-p end\n"
    "elseif m>=t then p=1 end\n"
    "end\n"
    "local function f(x) return string.format('%.10g',x) end\n"
    "redis.call('HSET',k,'mean',f(m),'std',f(d),'p_spend_gt',f(p))\n"
    "return n\n";

/* ---------------------------------------------------------------------- */
/* Saved state                                                              */
/* ---------------------------------------------------------------------- */

/*
 * Version 2, little-endian (buf.h):
 *   u8 version, i64 bucket_ms, u32 buckets, u32 ahead, i64 cur,
 *   u64 late, pushed, invalid, broken,
 *   ring: R x (u32 n, u32 cnt, f64 sum, f64 m2, f64 sq) for buckets
 *         cur - B .. cur + A - 1 in that order,
 *   moves: for each ahead bucket cur .. cur + A - 1: u32 count, then
 *         count x (u32 d, u32 value), d strictly increasing in 1 .. B - 1.
 */
void ps_window_save(const ps_window *w, ps_wbuf *out)
{
    ps_window *ww = (ps_window *)w; /* helpers take non-const; no writes */
    int64_t b = w->conf.buckets, a = w->conf.ahead;

    ps_wbuf_u8(out, WINDOW_STATE_VERSION);
    ps_wbuf_i64(out, w->conf.bucket_ms);
    ps_wbuf_u32(out, w->conf.buckets);
    ps_wbuf_u32(out, w->conf.ahead);
    ps_wbuf_i64(out, w->cur);
    ps_wbuf_u64(out, w->counters.late);
    ps_wbuf_u64(out, w->counters.pushed);
    ps_wbuf_u64(out, w->counters.invalid);
    ps_wbuf_u64(out, w->counters.broken);
    for (int64_t k = w->cur - b; k < w->cur + a; k++) {
        const bucket *bk = bucket_at(ww, k);
        ps_wbuf_u32(out, bk->n);
        ps_wbuf_u32(out, bk->cnt);
        ps_wbuf_f64(out, bk->sum);
        ps_wbuf_f64(out, bk->m2);
        ps_wbuf_f64(out, bk->sq);
    }
    for (int64_t u = w->cur; u < w->cur + a; u++) {
        const uint32_t *row = leave_row(ww, u);
        uint32_t nz = 0;
        for (int64_t d = 1; d < b; d++)
            nz += row[d] != 0;
        ps_wbuf_u32(out, nz);
        for (int64_t d = 1; d < b; d++) {
            if (row[d] != 0) {
                ps_wbuf_u32(out, (uint32_t)d);
                ps_wbuf_u32(out, row[d]);
            }
        }
    }
}

static int load_fail(ps_window *tmp, char *errstr, size_t errstr_size,
                     const char *what)
{
    ps_set_err(errstr, errstr_size, "window state: %s", what);
    ps_window_destroy(tmp);
    return PS_ERR_STATE;
}

int ps_window_load(ps_window *w, ps_rbuf *in, char *errstr, size_t errstr_size)
{
    uint8_t version;
    ps_window_conf conf;
    int64_t cur;

    if (ps_rbuf_u8(in, &version) < 0)
        return load_fail(NULL, errstr, errstr_size, "truncated");
    if (version < 1 || version > WINDOW_STATE_VERSION)
        return load_fail(NULL, errstr, errstr_size, "unknown version");
    if (ps_rbuf_i64(in, &conf.bucket_ms) < 0 ||
        ps_rbuf_u32(in, &conf.buckets) < 0 ||
        ps_rbuf_u32(in, &conf.ahead) < 0 || ps_rbuf_i64(in, &cur) < 0)
        return load_fail(NULL, errstr, errstr_size, "truncated");
    /* fewer ahead buckets than w's: the saved ring fits (a migration) */
    if (conf.bucket_ms != w->conf.bucket_ms ||
        conf.buckets != w->conf.buckets || conf.ahead > w->conf.ahead ||
        conf.ahead < 1)
        return load_fail(NULL, errstr, errstr_size,
                         "saved with another configuration");
    int64_t b = conf.buckets, a = conf.ahead;
    /* Positions stay within [0, MAX_TS / bucket_ms] (+ A when pushed). */
    if (cur < 0 || cur > MAX_TS / conf.bucket_ms + a)
        return load_fail(NULL, errstr, errstr_size, "position out of range");

    ps_window *tmp = ps_window_new(&conf, errstr, errstr_size);
    if (tmp == NULL)
        return PS_ERR_NOMEM;
    tmp->cur = cur;
    if (ps_rbuf_u64(in, &tmp->counters.late) < 0 ||
        ps_rbuf_u64(in, &tmp->counters.pushed) < 0 ||
        ps_rbuf_u64(in, &tmp->counters.invalid) < 0 ||
        ps_rbuf_u64(in, &tmp->counters.broken) < 0)
        return load_fail(tmp, errstr, errstr_size, "truncated");
    for (int64_t k = cur - b; k < cur + a; k++) {
        bucket *bk = bucket_at(tmp, k);
        if (ps_rbuf_u32(in, &bk->n) < 0 || ps_rbuf_u32(in, &bk->cnt) < 0 ||
            ps_rbuf_f64(in, &bk->sum) < 0 || ps_rbuf_f64(in, &bk->m2) < 0 ||
            (version >= 2 && ps_rbuf_f64(in, &bk->sq) < 0))
            return load_fail(tmp, errstr, errstr_size, "truncated");
        if (version == 1) /* the moment from M2 (rounded once) */
            bk->sq = bk->n ? bk->m2 + bk->sum * bk->sum / bk->n : 0;
        if (!isfinite(bk->sum) || bk->sum < 0 || !isfinite(bk->m2) ||
            bk->m2 < 0 || !isfinite(bk->sq) || bk->sq < 0 ||
            (bk->n == 0 && (bk->sum != 0 || bk->m2 != 0 || bk->sq != 0)) ||
            (bk->n == 1 && bk->m2 != 0))
            return load_fail(tmp, errstr, errstr_size, "bad bucket");
        if (k < 0 && (bk->n != 0 || bk->cnt != 0))
            return load_fail(tmp, errstr, errstr_size,
                             "activity before time 0");
    }
    for (int64_t u = cur; u < cur + a; u++) {
        uint32_t *row = leave_row(tmp, u);
        uint32_t nz, last = 0;
        uint64_t total = 0;
        if (ps_rbuf_u32(in, &nz) < 0)
            return load_fail(tmp, errstr, errstr_size, "truncated");
        if (nz >= b)
            return load_fail(tmp, errstr, errstr_size, "bad move count");
        for (uint32_t j = 0; j < nz; j++) {
            uint32_t d, v;
            if (ps_rbuf_u32(in, &d) < 0 || ps_rbuf_u32(in, &v) < 0)
                return load_fail(tmp, errstr, errstr_size, "truncated");
            if (d <= last || d >= b || v == 0)
                return load_fail(tmp, errstr, errstr_size, "bad move");
            row[d] = v;
            last = d;
            total += v;
        }
        /* Every scheduled move is one of the customers active in u. */
        if (total > bucket_at(tmp, u)->cnt)
            return load_fail(tmp, errstr, errstr_size,
                             "more moves than customers");
    }
    w->cur = tmp->cur;
    w->counters = tmp->counters;
    if (a == w->conf.ahead) {
        memcpy(w->buckets, tmp->buckets, w->ring * sizeof(bucket));
        memcpy(w->leave, tmp->leave, leave_len(&w->conf) * sizeof(uint32_t));
    } else { /* bucket by bucket into the larger ring */
        memset(w->buckets, 0, w->ring * sizeof(bucket));
        memset(w->leave, 0, leave_len(&w->conf) * sizeof(uint32_t));
        for (int64_t k = cur - b; k < cur + a; k++)
            *bucket_at(w, k) = *bucket_at(tmp, k);
        for (int64_t u = cur; u < cur + a; u++)
            memcpy(leave_row(w, u), leave_row(tmp, u),
                   (size_t)b * sizeof(uint32_t));
    }
    ps_window_destroy(tmp);
    return PS_OK;
}

void ps_window_member_save(const ps_window_member *m, ps_wbuf *out)
{
    ps_wbuf_u8(out, MEMBER_STATE_VERSION);
    ps_wbuf_i64(out, m->settled1);
    ps_wbuf_i64(out, m->base);
    ps_wbuf_u64(out, m->ahead);
}

int ps_window_member_load(ps_window_member *m, ps_rbuf *in)
{
    uint8_t version;
    ps_window_member t;
    if (ps_rbuf_u8(in, &version) < 0 || version != MEMBER_STATE_VERSION ||
        ps_rbuf_i64(in, &t.settled1) < 0 || ps_rbuf_i64(in, &t.base) < 0 ||
        ps_rbuf_u64(in, &t.ahead) < 0)
        return PS_ERR_STATE;
    /* settled is before base; ahead bits are at or after it. */
    if (t.settled1 < 0 || t.base < 0 || t.settled1 > t.base)
        return PS_ERR_STATE;
    *m = t;
    return PS_OK;
}
