/*
 * status.c -- `propstream status`: a live view of a running deployment,
 * built only from Redis reads (like `redis-cli --stat`).
 *
 * Every refresh is one pipelined round trip of read-only commands:
 *
 *   HGETALL {p}metrics            counters, lag, last flush, watermark
 *   HGETALL {p}global             P(purchase) overall and per path
 *   XLEN {p}dlq, XLEN {p}triggers stream lengths
 *   XREVRANGE {p}triggers + - COUNT W
 *                                 the last W triggers: counts by type and
 *                                 the most recent few
 *   HGETALL {p}segment:0..15      the segments (k is at most 16)
 *
 * Nothing here knows propstream's memory: a dashboard built from the same
 * keys shows the same figures, and several instances' totals add up in the
 * counters they share.  events/s is the change of events_in between two
 * refreshes divided by the time between them, so the first screen (and
 * --once) has no rate.  A counter that went down (Redis flushed or
 * restored) gives no rate either, instead of a negative one.
 *
 * Output: text, redrawn in place when stdout is a terminal and appended
 * otherwise; or --json, one object per refresh (indented with --once,
 * one line each otherwise, so a pipe gets NDJSON).  Integers stay integers,
 * reals are printed so they read back as the same double.
 *
 * Failures: Redis unreachable at start (or during --once) is exit 1 with
 * the reason; bad options exit 2.  Once running, a lost connection is shown
 * and retried at every refresh.  SIGINT / SIGTERM end the loop with 0.
 *
 * Ownership: a snapshot owns its redisReply objects (freed by
 * snapshot_clear); every accessor returns borrowed pointers into them.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "../common/config.h"
#include "../common/error.h"
#include "commands.h"
#include "redis_read.h"

#define SEG_MAX 16   /* --segments-k is at most 16 */
#define TYPES_MAX 16 /* distinct trigger types counted; more -> "other" */

/* ------------------------------------------------------------- options */

typedef struct status_opts {
    ps_cli_redis_opts r;
    double interval_s;
    bool once;
    bool json;
    int64_t triggers_window;
    int64_t recent;
} status_opts;

#define O(field) offsetof(status_opts, field)

static const ps_option status_options[] = {
    PS_CLI_REDIS_OPTIONS(O(r)),
    {"interval-s", 'i', PS_OPT_DBL, "1", 0.1, 3600, "s",
     "refresh period; events/s is measured over it", O(interval_s), 0},
    {"once", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
     "print one snapshot and exit (no events/s: that needs two)", O(once), 0},
    {"json", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
     "machine-readable output: one JSON object per refresh", O(json), 0},
    {"triggers-window", 0, PS_OPT_INT, "1000", 0, 100000, "entries",
     "count trigger types over this many most recent ps:triggers entries",
     O(triggers_window), 0},
    {"recent", 0, PS_OPT_INT, "5", 0, 100, "entries",
     "most recent triggers listed", O(recent), 0},
};
#define STATUS_NOPTS (sizeof(status_options) / sizeof(status_options[0]))

/* ------------------------------------------------------------ snapshot */

typedef struct snapshot {
    int64_t wall_ms; /* when it was taken, Unix ms */
    double mono_s;   /* ... and on the monotonic clock */
    redisReply *metrics, *global, *dlq_len, *trig_len, *trig_recent;
    redisReply *seg[SEG_MAX];
    char warn[256]; /* a key of the wrong type, "" when none */
} snapshot;

static void snapshot_clear(snapshot *s)
{
    redisReply **all[] = {&s->metrics, &s->dlq_len, &s->global, &s->trig_len,
                          &s->trig_recent};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (*all[i] != NULL)
            freeReplyObject(*all[i]);
        *all[i] = NULL;
    }
    for (int k = 0; k < SEG_MAX; k++) {
        if (s->seg[k] != NULL)
            freeReplyObject(s->seg[k]);
        s->seg[k] = NULL;
    }
    s->warn[0] = '\0';
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Take one snapshot: all commands appended, then all replies read.  0, or
 * PS_ERR_IO with errstr when the connection failed (the context is then
 * unusable).  An error reply (a key of the wrong type) is not fatal: that
 * figure is absent and s->warn says why.
 */
static int snapshot_take(redisContext *c, const status_opts *o, snapshot *s,
                         char *errstr, size_t errstr_size)
{
    const char *p = o->r.prefix;
    char k_metrics[512], k_global[512], k_dlq[512], k_trig[512];
    char k_seg[SEG_MAX][512];
    char count[32];

    memset(s, 0, sizeof(*s));
    if (ps_cli_key(k_metrics, sizeof(k_metrics), p, "metrics") < 0 ||
        ps_cli_key(k_global, sizeof(k_global), p, "global") < 0 ||
        ps_cli_key(k_dlq, sizeof(k_dlq), p, "dlq") < 0 ||
        ps_cli_key(k_trig, sizeof(k_trig), p, "triggers") < 0) {
        ps_set_err(errstr, errstr_size, "--prefix: too long");
        return PS_ERR_CONFIG;
    }
    for (int k = 0; k < SEG_MAX; k++) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "segment:%d", k);
        if (ps_cli_key(k_seg[k], sizeof(k_seg[k]), p, suffix) < 0) {
            ps_set_err(errstr, errstr_size, "--prefix: too long");
            return PS_ERR_CONFIG;
        }
    }
    snprintf(count, sizeof(count), "%lld", (long long)o->triggers_window);

    /* the order of appends is the order of replies */
    redisReply **slot[5 + SEG_MAX];
    const char *what[5 + SEG_MAX];
    int n = 0;
#define APPEND(dst, name, ...)                                                 \
    do {                                                                       \
        const char *argv_[] = {__VA_ARGS__};                                   \
        redisAppendCommandArgv(c, (int)(sizeof(argv_) / sizeof(argv_[0])),     \
                               argv_, NULL);                                   \
        slot[n] = (dst);                                                       \
        what[n++] = (name);                                                    \
    } while (0)
    APPEND(&s->metrics, k_metrics, "HGETALL", k_metrics);
    APPEND(&s->global, k_global, "HGETALL", k_global);
    APPEND(&s->dlq_len, k_dlq, "XLEN", k_dlq);
    APPEND(&s->trig_len, k_trig, "XLEN", k_trig);
    if (o->triggers_window > 0)
        APPEND(&s->trig_recent, k_trig, "XREVRANGE", k_trig, "+", "-", "COUNT",
               count);
    for (int k = 0; k < SEG_MAX; k++)
        APPEND(&s->seg[k], k_seg[k], "HGETALL", k_seg[k]);
#undef APPEND

    int rc = PS_OK;
    for (int i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || reply == NULL) {
            ps_set_err(errstr, errstr_size, "redis %s: %s", o->r.redis,
                       c->errstr[0] ? c->errstr : "connection lost");
            rc = PS_ERR_IO;
            break;
        }
        redisReply *r = reply;
        if (r->type == REDIS_REPLY_ERROR) {
            if (s->warn[0] == '\0')
                snprintf(s->warn, sizeof(s->warn), "%s: %s", what[i], r->str);
            freeReplyObject(r);
            continue;
        }
        *slot[i] = r;
    }
    if (rc != PS_OK) {
        snapshot_clear(s);
        return rc;
    }
    s->wall_ms = wall_ms();
    s->mono_s = mono_s();
    return PS_OK;
}

/* ----------------------------------------------------------- accessors */

/* Value of field in an HGETALL (or stream entry field list) reply, or NULL. */
static const char *field_of(const redisReply *h, const char *field)
{
    if (h == NULL || h->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(f->str, field) == 0)
            return v->str;
    }
    return NULL;
}

/* The whole string is an integer. */
static bool parse_ll(const char *s, long long *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* The whole string is a finite number. */
static bool parse_dbl(const char *s, double *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static bool hash_ll(const redisReply *h, const char *field, long long *out)
{
    return parse_ll(field_of(h, field), out);
}

static bool hash_dbl(const redisReply *h, const char *field, double *out)
{
    return parse_dbl(field_of(h, field), out);
}

static bool hash_exists(const redisReply *h)
{
    return h != NULL && h->type == REDIS_REPLY_ARRAY && h->elements >= 2;
}

static long long int_reply(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

/* A stream entry of an XRANGE/XREVRANGE reply: its id and field list. */
static bool stream_entry(const redisReply *range, size_t i, const char **id,
                         const redisReply **fields)
{
    if (range == NULL || range->type != REDIS_REPLY_ARRAY ||
        i >= range->elements)
        return false;
    const redisReply *e = range->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return false;
    *id = e->element[0]->str;
    *fields = e->element[1];
    return true;
}

/* Trigger counts by type over the scanned window. */
typedef struct type_count {
    const char *type; /* borrowed from the snapshot; NULL = "other" */
    long long n;
} type_count;

static size_t count_types(const snapshot *s, type_count *out, size_t cap,
                          long long *scanned)
{
    size_t nt = 0;
    *scanned = 0;
    const char *id;
    const redisReply *f;
    for (size_t i = 0; stream_entry(s->trig_recent, i, &id, &f); i++) {
        const char *t = field_of(f, "type");
        if (t == NULL)
            t = "(none)";
        (*scanned)++;
        size_t j = 0;
        while (j < nt && out[j].type != NULL && strcmp(out[j].type, t) != 0)
            j++;
        if (j == nt) {
            if (nt + 1 < cap) {
                out[nt].type = t;
                out[nt++].n = 0;
            } else { /* the last slot counts every further type */
                j = cap - 1;
                out[j].type = NULL;
                out[j].n = 0;
                nt = cap;
            }
        }
        out[j].n++;
    }
    return nt;
}

/* events/s between prev and cur; false when there is no meaningful rate. */
static bool events_rate(const snapshot *prev, const snapshot *cur, double *rate)
{
    long long a, b;
    if (prev == NULL || !hash_ll(prev->metrics, "events_in", &a) ||
        !hash_ll(cur->metrics, "events_in", &b) || b < a)
        return false;
    double dt = cur->mono_s - prev->mono_s;
    if (dt <= 0)
        return false;
    *rate = (double)(b - a) / dt;
    return true;
}

/* "2025-01-31T12:00:00.000Z" */
static void fmt_time(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, size, "%" PRId64 " ms", ms);
        return;
    }
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03dZ", buf, (int)(ms - (int64_t)t * 1000));
}

/* ---------------------------------------------------------------- JSON */

/* A stored value as JSON: integer, real, or string when neither. */
static json_t *json_value(const char *v)
{
    long long i;
    double d;
    if (v == NULL)
        return json_null();
    if (parse_ll(v, &i))
        return json_integer(i);
    if (parse_dbl(v, &d))
        return json_real(d);
    return json_string(v);
}

static void put(json_t *o, const char *key, json_t *v)
{
    json_object_set_new(o, key, v != NULL ? v : json_null());
}

static void put_field(json_t *o, const char *key, const redisReply *h,
                      const char *field)
{
    put(o, key, json_value(field_of(h, field)));
}

/* Every field of a hash, typed. */
static json_t *json_hash(const redisReply *h)
{
    json_t *o = json_object();
    if (h == NULL || h->type != REDIS_REPLY_ARRAY)
        return o;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING)
            put(o, f->str, json_value(v->str));
    }
    return o;
}

/* A trigger entry: score and times as numbers, everything else (ids,
 * names) as strings, so a customer id "000123" keeps its zeros. */
static json_t *json_trigger(const char *id, const redisReply *f)
{
    json_t *e = json_object();
    put(e, "id", json_string(id));
    if (f == NULL || f->type != REDIS_REPLY_ARRAY)
        return e;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        bool num = strcmp(k->str, "score") == 0 || strcmp(k->str, "ts") == 0 ||
                   strcmp(k->str, "opened_ts") == 0;
        put(e, k->str, num ? json_value(v->str) : json_string(v->str));
    }
    return e;
}

static json_t *snapshot_json(const snapshot *s, const snapshot *prev,
                             const status_opts *o)
{
    json_t *root = json_object();
    const redisReply *m = s->metrics;
    double rate, lf;

    put(root, "time_ms", json_integer(s->wall_ms));
    put(root, "redis", json_string(o->r.redis));
    put(root, "prefix", json_string(o->r.prefix));
    put(root, "events_per_s",
        events_rate(prev, s, &rate) ? json_real(round(rate * 10.0) / 10.0)
                                    : json_null());
    put_field(root, "events_in", m, "events_in");
    put_field(root, "events_applied", m, "events_applied");
    put_field(root, "bad", m, "events_bad");
    put_field(root, "dup", m, "events_dup");
    put_field(root, "late", m, "events_late");
    put_field(root, "lost_retention", m, "events_lost_retention");
    put_field(root, "rollbacks", m, "redis_rollbacks");
    put_field(root, "lag", m, "lag");
    put_field(root, "watermark", m, "watermark");
    put_field(root, "flushes", m, "flushes");
    put_field(root, "last_flush_ms", m, "last_flush_ms");
    put(root, "last_flush_age_s",
        hash_dbl(m, "last_flush_ms", &lf)
            ? json_real(((double)s->wall_ms - lf) / 1000.0) /* whole ms */
            : json_null());
    json_t *by = json_object();
    if (m != NULL && m->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < m->elements; i += 2) {
            const redisReply *f = m->element[i], *v = m->element[i + 1];
            if (f->type == REDIS_REPLY_STRING &&
                v->type == REDIS_REPLY_STRING &&
                strncmp(f->str, "events_bad_", 11) == 0)
                put(by, f->str + 11, json_value(v->str));
        }
    put(root, "bad_by_reason", by);
    put(root, "dlq_length", json_integer(int_reply(s->dlq_len)));
    put(root, "metrics", json_hash(m));

    json_t *g = json_object();
    static const char *const gfields[] = {
        "events",        "trials",        "successes",    "p_purchase",
        "p_purchase_lo", "p_purchase_hi", "p_purchase_c", "p_purchase_w",
        "p_purchase_cw", "watermark"};
    for (size_t i = 0; i < sizeof(gfields) / sizeof(gfields[0]); i++)
        put_field(g, gfields[i], s->global, gfields[i]);
    put(root, "global", g);

    json_t *segs = json_array();
    for (int k = 0; k < SEG_MAX; k++) {
        const redisReply *h = s->seg[k];
        if (!hash_exists(h))
            continue;
        json_t *e = json_object();
        char key[512];
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "segment:%d", k);
        ps_cli_key(key, sizeof(key), o->r.prefix, suffix);
        put(e, "id", json_integer(k));
        put(e, "key", json_string(key));
        put(e, "name",
            json_string(field_of(h, "name") ? field_of(h, "name") : ""));
        put_field(e, "size", h, "size");
        put_field(e, "p_purchase", h, "p_purchase");
        put_field(e, "trials", h, "trials");
        put_field(e, "successes", h, "successes");
        put_field(e, "spend_mean", h, "spend_mean");
        put_field(e, "spend_std", h, "spend_std");
        json_array_append_new(segs, e);
    }
    put(root, "segments", segs);

    json_t *t = json_object();
    type_count tc[TYPES_MAX];
    long long scanned;
    size_t nt = count_types(s, tc, TYPES_MAX, &scanned);
    put(t, "length", json_integer(int_reply(s->trig_len)));
    put(t, "window", json_integer(scanned));
    json_t *bt = json_object();
    for (size_t i = 0; i < nt; i++)
        put(bt, tc[i].type ? tc[i].type : "other", json_integer(tc[i].n));
    put(t, "by_type", bt);
    json_t *recent = json_array();
    const char *id;
    const redisReply *f;
    for (size_t i = 0;
         (int64_t)i < o->recent && stream_entry(s->trig_recent, i, &id, &f);
         i++)
        json_array_append_new(recent, json_trigger(id, f));
    put(t, "recent", recent);
    put(root, "triggers", t);
    if (s->warn[0] != '\0')
        put(root, "warning", json_string(s->warn));
    return root;
}

/* The fewest significant digits (1..17) that print every real in j so it
 * reads back as the same double: stored values have 10, so the output
 * shows what Redis holds instead of 17-digit noise, and stays exact. */
static int real_precision(json_t *j)
{
    int p = 1;
    if (json_is_real(j)) {
        double v = json_real_value(j);
        char buf[40];
        for (p = 1; p < 17; p++) {
            snprintf(buf, sizeof(buf), "%.*g", p, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            int q = real_precision(v);
            p = q > p ? q : p;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            int q = real_precision(v);
            p = q > p ? q : p;
        }
    }
    return p;
}

/* ---------------------------------------------------------------- text */

static const char *or_dash(const char *v)
{
    return v != NULL ? v : "-";
}

/* A probability field as "0.2345", or "-". */
static void fmt_p(const redisReply *h, const char *field, char *out,
                  size_t size)
{
    double v;
    if (hash_dbl(h, field, &v))
        snprintf(out, size, "%.4f", v);
    else
        snprintf(out, size, "-");
}

static void print_text(FILE *f, const snapshot *s, const snapshot *prev,
                       const status_opts *o, const char *conn_err)
{
    const redisReply *m = s->metrics, *g = s->global;
    char t[64], rate_s[32];
    double rate;

    fmt_time(s->wall_ms, t, sizeof(t));
    fprintf(f, "propstream status   redis %s   prefix %s   %s\n", o->r.redis,
            o->r.prefix, t);
    if (conn_err != NULL)
        fprintf(f,
                "!! %s (retrying every %.1f s; figures below are from "
                "the last good read)\n",
                conn_err, o->interval_s);
    if (s->warn[0] != '\0')
        fprintf(f, "!! %s\n", s->warn);
    if (!hash_exists(m))
        fprintf(f,
                "(no %smetrics yet: has `propstream run` flushed into "
                "this database and prefix?)\n",
                o->r.prefix);

    if (events_rate(prev, s, &rate))
        snprintf(rate_s, sizeof(rate_s), "%.1f/s", rate);
    else
        snprintf(rate_s, sizeof(rate_s), "-");
    fprintf(f, "events       in %s   applied %s   rate %s   lag %s\n",
            or_dash(field_of(m, "events_in")),
            or_dash(field_of(m, "events_applied")), rate_s,
            or_dash(field_of(m, "lag")));
    fprintf(f, "rejected     bad %s   dup %s   late %s",
            or_dash(field_of(m, "events_bad")),
            or_dash(field_of(m, "events_dup")),
            or_dash(field_of(m, "events_late")));
    if (field_of(m, "events_lost_retention") != NULL)
        fprintf(f, "   lost_retention %s",
                field_of(m, "events_lost_retention"));
    if (field_of(m, "redis_rollbacks") != NULL)
        fprintf(f, "   rollbacks %s", field_of(m, "redis_rollbacks"));
    fputc('\n', f);

    int nreasons = 0;
    if (m != NULL && m->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < m->elements; i += 2) {
            const redisReply *fl = m->element[i], *v = m->element[i + 1];
            if (fl->type != REDIS_REPLY_STRING ||
                v->type != REDIS_REPLY_STRING ||
                strncmp(fl->str, "events_bad_", 11) != 0)
                continue;
            fprintf(f, "%s%s %s", nreasons++ ? ", " : "bad reasons  ",
                    fl->str + 11, v->str);
        }
    if (nreasons > 0)
        fputc('\n', f);
    fprintf(f,
            "dlq          %lld entries in %sdlq   (propstream dlq for "
            "details)\n",
            int_reply(s->dlq_len), o->r.prefix);

    long long lf, wm;
    if (hash_ll(m, "last_flush_ms", &lf)) {
        long long dur, flushes;
        fmt_time(lf, t, sizeof(t));
        fprintf(f, "last flush   %s   %.1f s ago", t,
                ((double)s->wall_ms - (double)lf) / 1000.0);
        if (hash_ll(m, "last_flush_duration_us", &dur))
            fprintf(f, "   took %.1f ms", (double)dur / 1000.0);
        if (hash_ll(m, "flushes", &flushes))
            fprintf(f, "   %lld flushes", flushes);
        fputc('\n', f);
    } else {
        fprintf(f, "last flush   -\n");
    }
    if (hash_ll(m, "watermark", &wm)) {
        fmt_time(wm, t, sizeof(t));
        fprintf(f, "watermark    %s   (event time)\n", t);
    } else {
        fprintf(f, "watermark    -\n");
    }

    char pa[16], lo[16], hi[16], pc[16], pw[16], pcw[16];
    fmt_p(g, "p_purchase", pa, sizeof(pa));
    fmt_p(g, "p_purchase_lo", lo, sizeof(lo));
    fmt_p(g, "p_purchase_hi", hi, sizeof(hi));
    fmt_p(g, "p_purchase_c", pc, sizeof(pc));
    fmt_p(g, "p_purchase_w", pw, sizeof(pw));
    fmt_p(g, "p_purchase_cw", pcw, sizeof(pcw));
    fprintf(f,
            "P(purchase)  all %s [%s, %s]   c %s   w %s   cw %s   "
            "(%s trials, %s successes)\n",
            pa, lo, hi, pc, pw, pcw, or_dash(field_of(g, "trials")),
            or_dash(field_of(g, "successes")));

    long long total = 0, size;
    for (int k = 0; k < SEG_MAX; k++)
        if (hash_ll(s->seg[k], "size", &size) && size > 0)
            total += size;
    int nseg = 0;
    for (int k = 0; k < SEG_MAX; k++) {
        const redisReply *h = s->seg[k];
        if (!hash_exists(h))
            continue;
        char share[16] = "", pp[16], sm[32] = "-";
        double mean;
        if (hash_ll(h, "size", &size) && total > 0)
            snprintf(share, sizeof(share), "(%.1f %%)",
                     100.0 * (double)size / (double)total);
        fmt_p(h, "p_purchase", pp, sizeof(pp));
        if (hash_dbl(h, "spend_mean", &mean))
            snprintf(sm, sizeof(sm), "%.0f", mean);
        fprintf(f,
                "%s%2d %-12s size %-8s %-9s P(purchase) %s   spend mean %s\n",
                nseg++ ? "             " : "segments     ", k,
                or_dash(field_of(h, "name")), or_dash(field_of(h, "size")),
                share, pp, sm);
    }
    if (nseg == 0)
        fprintf(f, "segments     - (none yet: k-means starts after its first "
                   "batch)\n");

    type_count tc[TYPES_MAX];
    long long scanned;
    size_t nt = count_types(s, tc, TYPES_MAX, &scanned);
    fprintf(f, "triggers     %lld in %striggers", int_reply(s->trig_len),
            o->r.prefix);
    if (scanned > 0) {
        fprintf(f, "; last %lld:", scanned);
        for (size_t i = 0; i < nt; i++)
            fprintf(f, "%s %s %lld", i ? "," : "",
                    tc[i].type ? tc[i].type : "other", tc[i].n);
    }
    fputc('\n', f);
    const char *id;
    const redisReply *e;
    for (size_t i = 0;
         (int64_t)i < o->recent && stream_entry(s->trig_recent, i, &id, &e);
         i++) {
        long long ts;
        const char *type = or_dash(field_of(e, "type"));
        if (hash_ll(e, "ts", &ts))
            fmt_time(ts, t, sizeof(t));
        else
            snprintf(t, sizeof(t), "-");
        fprintf(f, "  %s %-18s customer %s", t, type,
                or_dash(field_of(e, "customer")));
        if (strcmp(type, "segment_changed") == 0)
            fprintf(f, "   %s -> %s\n", or_dash(field_of(e, "from")),
                    or_dash(field_of(e, "to")));
        else
            fprintf(f, "   product %s   score %s\n",
                    or_dash(field_of(e, "product")),
                    or_dash(field_of(e, "score")));
    }
}

/* ----------------------------------------------------------------- run */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Sleep seconds, or less when a signal asks to stop. */
static void pause_s(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (!stop_requested && nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void emit(const snapshot *s, const snapshot *prev, const status_opts *o,
                 bool tty, const char *conn_err)
{
    if (o->json) {
        json_t *j = snapshot_json(s, prev, o);
        if (conn_err != NULL)
            put(j, "error", json_string(conn_err));
        char *txt = json_dumps(j, (o->once ? JSON_INDENT(2) : JSON_COMPACT) |
                                      JSON_PRESERVE_ORDER |
                                      JSON_REAL_PRECISION(real_precision(j)));
        if (txt != NULL) {
            fputs(txt, stdout);
            fputc('\n', stdout);
            free(txt);
        }
        json_decref(j);
    } else {
        if (tty && !o->once)
            fputs("\033[H\033[2J", stdout); /* home, clear screen */
        else if (prev != NULL)
            fputc('\n', stdout);
        print_text(stdout, s, prev, o, conn_err);
    }
    fflush(stdout);
}

int ps_cmd_status(int argc, char **argv)
{
    status_opts o;
    ps_config_result res;
    char err[512] = "";
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&res, 0, sizeof(res));
    rc = ps_config_parse(status_options, STATUS_NOPTS, &o, &res, argc, argv,
                         err, sizeof(err));
    if (rc != PS_OK) {
        if (rc < 0)
            fprintf(stderr,
                    "propstream status: %s\ntry 'propstream status "
                    "--help'\n",
                    err);
        ps_config_free(status_options, STATUS_NOPTS, &o, &res);
        return rc < 0 ? 2 : 0;
    }
    if (res.positional.n > 0) {
        fprintf(stderr, "propstream status: unexpected argument '%s'\n",
                res.positional.v[0]);
        ps_config_free(status_options, STATUS_NOPTS, &o, &res);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: the sleep is interrupted */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int bad_addr = 0;
    redisContext *c = ps_cli_redis_connect(&o.r, &bad_addr, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "propstream status: %s\n", err);
        ps_config_free(status_options, STATUS_NOPTS, &o, &res);
        return bad_addr ? 2 : 1;
    }

    bool tty = isatty(STDOUT_FILENO);
    snapshot cur, prev;
    bool have_prev = false;
    memset(&cur, 0, sizeof(cur));
    memset(&prev, 0, sizeof(prev));
    rc = 0;
    while (!stop_requested) {
        if (c == NULL) {
            c = ps_cli_redis_connect(&o.r, NULL, err, sizeof(err));
            if (c == NULL) {
                if (have_prev)
                    emit(&prev, NULL, &o, tty, err);
                else
                    fprintf(stderr, "propstream status: %s\n", err);
                pause_s(o.interval_s);
                continue;
            }
        }
        int trc = snapshot_take(c, &o, &cur, err, sizeof(err));
        if (trc == PS_ERR_CONFIG) {
            fprintf(stderr, "propstream status: %s\n", err);
            rc = 2;
            break;
        }
        if (trc != PS_OK) {
            redisFree(c);
            c = NULL;
            if (o.once || !have_prev) {
                fprintf(stderr, "propstream status: %s\n", err);
                rc = 1;
                break;
            }
            emit(&prev, NULL, &o, tty, err);
            pause_s(o.interval_s);
            continue;
        }
        emit(&cur, have_prev ? &prev : NULL, &o, tty, NULL);
        snapshot_clear(&prev);
        prev = cur;
        memset(&cur, 0, sizeof(cur));
        have_prev = true;
        if (o.once)
            break;
        pause_s(o.interval_s);
    }
    snapshot_clear(&cur);
    snapshot_clear(&prev);
    if (c != NULL)
        redisFree(c);
    ps_config_free(status_options, STATUS_NOPTS, &o, &res);
    return rc;
}
