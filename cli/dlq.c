/*
 * dlq.c -- `propstream dlq`: inspect the dead-letter stream and re-inject
 * chosen records into Kafka.
 *
 * What a dead letter holds (consumer/run.c, dead_letter()): the fields
 * reason, detail, topic, partition, offset, payload, payload_encoding and
 * payload_len.  payload is the base64 of at most the first 768 bytes of the
 * record (so at most 1 KiB), payload_len the record's real length.  A
 * record longer than 768 bytes therefore cannot be re-injected: its bytes
 * are gone, and sending a prefix would be a different record.  Such entries
 * are reported as skipped, never produced.  "hex" is accepted too (the
 * contract allows it); an entry without payload_encoding is read as base64,
 * the only encoding propstream writes.
 *
 *   propstream dlq                 counts per reason
 *   propstream dlq --list          ... and the entries (id, reason, source
 *                                  topic/partition/offset, detail,
 *                                  truncated payload)
 *   --reason R, --ids a,b, --limit N select entries (oldest first)
 *   --reinject --topic T --bootstrap B [--delete]
 *                                  produce the selected payloads to T, wait
 *                                  for every delivery report, and with
 *                                  --delete XDEL exactly the delivered ones
 *
 * The stream is read in pages (XRANGE, 500 entries per call, each page
 * starting right after the last id seen), so a stream of 100,000 entries
 * costs 200 round trips and keeps in memory only the counts and the
 * selected entries.  Entries appended while we read are included up to the
 * page where the read ends.
 *
 * Re-injected messages have no key (ps:dlq does not keep it) and carry the
 * headers propstream.dlq_id, propstream.reason and propstream.source
 * (topic:partition:offset of the original), so a consumer can tell them
 * apart.  A message is counted as produced only when its delivery report
 * says so; one still queued when --kafka-timeout-ms runs out counts as
 * failed and is never deleted.
 *
 * Exit: 0 when everything selected was listed / produced; 1 when Redis or
 * Kafka fails, an --ids entry does not exist, or some selected entry was
 * not re-injected (failed or skipped); 2 for bad options.
 *
 * Ownership: dlq_entry strings are heap copies owned by the selection
 * (freed by selection_free); replies are freed page by page.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "../common/config.h"
#include "../common/error.h"
#include "../consumer/kafka.h"
#include "commands.h"
#include "redis_read.h"

#define PAGE 500       /* entries per XRANGE */
#define XDEL_CHUNK 256 /* ids per XDEL */

/* ------------------------------------------------------------- options */

typedef struct dlq_opts {
    ps_cli_redis_opts r;
    bool list;
    bool json;
    char *reason;
    ps_strlist ids;
    int64_t limit;
    int64_t width;
    bool reinject;
    char *topic;
    char *bootstrap;
    bool all;
    bool del;
    int64_t kafka_timeout_ms;
} dlq_opts;

#define O(field) offsetof(dlq_opts, field)

static const ps_option dlq_options[] = {
    PS_CLI_REDIS_OPTIONS(O(r)),
    {"list", 'l', PS_OPT_BOOL, "false", 1, 0, NULL,
     "list the selected entries, not only the counts per reason", O(list), 0},
    {"json", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
     "machine-readable output (one JSON object)", O(json), 0},
    {"reason", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "select entries with this reason (undecodable, missing_field, ...)",
     O(reason), 0},
    {"ids", 0, PS_OPT_LIST, NULL, 1, 0, NULL,
     "select these entry ids (comma-separated or repeated); each must exist",
     O(ids), 0},
    {"limit", 'n', PS_OPT_INT, "0", 0, 1e9, "entries",
     "select at most this many entries, oldest first (0 = no limit)", O(limit),
     0},
    {"width", 0, PS_OPT_INT, "60", 8, 100000, "characters",
     "payload characters shown per entry by --list (text output)", O(width), 0},
    {"reinject", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
     "produce the selected entries' payloads to --topic (needs --reason, "
     "--ids or --all)",
     O(reinject), 0},
    {"topic", 't', PS_OPT_STR, NULL, 1, 0, NULL,
     "Kafka topic to re-inject into", O(topic), 0},
    {"bootstrap", 'b', PS_OPT_STR, NULL, 1, 0, NULL,
     "Kafka bootstrap servers for --reinject", O(bootstrap), 0},
    {"all", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
     "with --reinject: select every entry", O(all), 0},
    {"delete", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
     "with --reinject: XDEL each entry once its delivery is confirmed", O(del),
     0},
    {"kafka-timeout-ms", 0, PS_OPT_INT, "30000", 100, 3600000, "ms",
     "give up on Kafka (metadata, each delivery) after this long",
     O(kafka_timeout_ms), 0},
};
#define DLQ_NOPTS (sizeof(dlq_options) / sizeof(dlq_options[0]))

/* ------------------------------------------------------------- entries */

typedef enum entry_state {
    E_SELECTED = 0, /* not produced (yet) */
    E_SKIPPED,      /* payload cannot be re-created: why in `why` */
    E_QUEUED,
    E_DELIVERED,
    E_FAILED /* delivery error in `why` */
} entry_state;

typedef struct dlq_entry {
    char *id, *reason, *detail, *topic, *payload, *encoding;
    long long partition, offset, payload_len; /* -1 = absent */
    entry_state state;
    char why[160];
} dlq_entry;

typedef struct reason_count {
    char *reason;
    long long n;
} reason_count;

typedef struct selection {
    dlq_entry *v;
    size_t n, cap;
    reason_count *reasons;
    size_t nreasons, reasons_cap;
    long long scanned;
    bool *found; /* per --ids item: seen in the stream */
} selection;

static void entry_free(dlq_entry *e)
{
    free(e->id);
    free(e->reason);
    free(e->detail);
    free(e->topic);
    free(e->payload);
    free(e->encoding);
}

static void selection_free(selection *s)
{
    for (size_t i = 0; i < s->n; i++)
        entry_free(&s->v[i]);
    free(s->v);
    for (size_t i = 0; i < s->nreasons; i++)
        free(s->reasons[i].reason);
    free(s->reasons);
    free(s->found);
    memset(s, 0, sizeof(*s));
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/* Value of field in a stream entry's field list, or NULL. */
static const char *field_of(const redisReply *f, const char *field)
{
    if (f == NULL || f->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING &&
            f->element[i + 1]->type == REDIS_REPLY_STRING &&
            strcmp(f->element[i]->str, field) == 0)
            return f->element[i + 1]->str;
    return NULL;
}

static long long ll_or(const char *s, long long dflt)
{
    if (s == NULL || *s == '\0')
        return dflt;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    return errno != 0 || *end != '\0' ? dflt : v;
}

/* A stream id "ms-seq" (both decimal); the parts in *ms, *seq. */
static bool parse_id(const char *id, unsigned long long *ms,
                     unsigned long long *seq)
{
    const char *dash = id != NULL ? strchr(id, '-') : NULL;
    if (dash == NULL || dash == id || dash[1] == '\0')
        return false;
    for (const char *p = id; *p; p++)
        if (p != dash && !isdigit((unsigned char)*p))
            return false;
    errno = 0;
    *ms = strtoull(id, NULL, 10);
    *seq = strtoull(dash + 1, NULL, 10);
    return errno == 0;
}

static int count_reason(selection *s, const char *reason)
{
    for (size_t i = 0; i < s->nreasons; i++)
        if (strcmp(s->reasons[i].reason, reason) == 0) {
            s->reasons[i].n++;
            return 0;
        }
    if (s->nreasons == s->reasons_cap) {
        size_t cap = s->reasons_cap ? s->reasons_cap * 2 : 8;
        reason_count *v = realloc(s->reasons, cap * sizeof(*v));
        if (v == NULL)
            return PS_ERR_NOMEM;
        s->reasons = v;
        s->reasons_cap = cap;
    }
    s->reasons[s->nreasons].reason = strdup(reason);
    if (s->reasons[s->nreasons].reason == NULL)
        return PS_ERR_NOMEM;
    s->reasons[s->nreasons++].n = 1;
    return 0;
}

/* Whether --ids names id; marks every occurrence found (an id may be
 * given twice). */
static bool ids_match(const dlq_opts *o, selection *s, const char *id)
{
    bool hit = false;
    for (size_t i = 0; i < o->ids.n; i++)
        if (strcmp(o->ids.v[i], id) == 0)
            hit = s->found[i] = true;
    return hit;
}

/* Count one entry and keep it when the filters select it. */
static int take_entry(selection *s, const dlq_opts *o, const char *id,
                      const redisReply *f)
{
    const char *reason = field_of(f, "reason");
    int rc = count_reason(s, reason != NULL ? reason : "(none)");
    if (rc < 0)
        return rc;
    s->scanned++;

    if (o->reason != NULL && (reason == NULL || strcmp(reason, o->reason) != 0))
        return 0;
    if (o->ids.n > 0 && !ids_match(o, s, id))
        return 0;
    if (o->limit > 0 && (int64_t)s->n >= o->limit)
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        dlq_entry *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return PS_ERR_NOMEM;
        s->v = v;
        s->cap = cap;
    }
    dlq_entry *e = &s->v[s->n++];
    memset(e, 0, sizeof(*e));
    e->id = strdup(id);
    e->reason = dup_or_null(reason);
    e->detail = dup_or_null(field_of(f, "detail"));
    e->topic = dup_or_null(field_of(f, "topic"));
    e->payload = dup_or_null(field_of(f, "payload"));
    e->encoding = dup_or_null(field_of(f, "payload_encoding"));
    e->partition = ll_or(field_of(f, "partition"), -1);
    e->offset = ll_or(field_of(f, "offset"), -1);
    e->payload_len = ll_or(field_of(f, "payload_len"), -1);
    if (e->id == NULL)
        return PS_ERR_NOMEM;
    return 0;
}

/* Read the whole stream page by page.  0, or an error with errstr. */
static int scan_stream(redisContext *c, const char *key, const dlq_opts *o,
                       selection *s, char *err, size_t errsz)
{
    char start[64] = "-", count[16];
    snprintf(count, sizeof(count), "%d", PAGE);
    s->found = calloc(o->ids.n ? o->ids.n : 1, sizeof(*s->found));
    if (s->found == NULL)
        return PS_ERR_NOMEM;
    for (;;) {
        const char *argv[] = {"XRANGE", key, start, "+", "COUNT", count};
        redisReply *r = ps_cli_redis_cmd(c, 6, argv, NULL, err, errsz);
        if (r == NULL)
            return PS_ERR_IO;
        if (r->type != REDIS_REPLY_ARRAY) {
            ps_set_err(err, errsz, "XRANGE %s: unexpected reply", key);
            freeReplyObject(r);
            return PS_ERR_IO;
        }
        const char *last = NULL;
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            last = e->element[0]->str;
            int rc = take_entry(s, o, last, e->element[1]);
            if (rc < 0) {
                ps_set_err(err, errsz, "out of memory");
                freeReplyObject(r);
                return rc;
            }
        }
        unsigned long long ms, seq;
        bool more =
            r->elements == PAGE && last != NULL && parse_id(last, &ms, &seq);
        if (more) {
            if (seq == ~0ULL) {
                ms++;
                seq = 0;
            } else {
                seq++;
            }
            snprintf(start, sizeof(start), "%llu-%llu", ms, seq);
        }
        freeReplyObject(r);
        if (!more)
            return 0;
    }
}

/* --------------------------------------------------------- payloads */

static int b64_val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Strict base64 (padded) into out (at least 3/4 of the length); -1 when
 * malformed, else the decoded length. */
static long b64_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad > 0 ||
                       (v[k] = b64_val((unsigned char)in[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(x >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(x >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)x;
    }
    return (long)o;
}

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static long hex_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 2 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_val((unsigned char)in[i]);
        int lo = hex_val((unsigned char)in[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return (long)(n / 2);
}

/*
 * The stored payload bytes of e in a new buffer (*len bytes; free it), or
 * NULL with why set.  *complete tells whether they are the whole record
 * (payload_len says how long the record was).
 */
static unsigned char *entry_payload(const dlq_entry *e, size_t *len,
                                    bool *complete, char *why, size_t why_size)
{
    const char *enc = e->encoding != NULL ? e->encoding : "base64";
    if (e->payload == NULL) {
        snprintf(why, why_size, "no payload field");
        return NULL;
    }
    size_t n = strlen(e->payload);
    unsigned char *buf = malloc(n + 1);
    if (buf == NULL) {
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    long got;
    if (strcmp(enc, "base64") == 0)
        got = b64_decode(e->payload, n, buf);
    else if (strcmp(enc, "hex") == 0)
        got = hex_decode(e->payload, n, buf);
    else {
        snprintf(why, why_size, "unknown payload_encoding '%.40s'", enc);
        free(buf);
        return NULL;
    }
    if (got < 0) {
        snprintf(why, why_size, "payload is not valid %s", enc);
        free(buf);
        return NULL;
    }
    *len = (size_t)got;
    *complete = e->payload_len < 0 || e->payload_len == got;
    if (!*complete)
        snprintf(why, why_size,
                 "payload truncated: %ld of %lld bytes kept in the stream", got,
                 e->payload_len);
    return buf;
}

/* Payload for people: printable ASCII as is, other bytes as \xNN, at most
 * width characters, "..." when cut. */
static void payload_preview(const dlq_entry *e, size_t width, FILE *f)
{
    size_t len;
    bool complete;
    char why[160];
    unsigned char *p = entry_payload(e, &len, &complete, why, sizeof(why));
    if (p == NULL) {
        fprintf(f, "(%s)", why);
        return;
    }
    size_t shown = 0;
    for (size_t i = 0; i < len; i++) {
        char tmp[8];
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            snprintf(tmp, sizeof(tmp), "%c", p[i]);
        else if (p[i] == '\\')
            snprintf(tmp, sizeof(tmp), "\\\\");
        else
            snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
        size_t w = strlen(tmp);
        if (shown + w > width) {
            fputs("...", f);
            break;
        }
        fputs(tmp, f);
        shown += w;
    }
    free(p);
}

/* ------------------------------------------------------------ re-inject */

typedef struct reinject_result {
    long long produced, failed, skipped, deleted;
    bool delete_error;
    char delete_err[256];
} reinject_result;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    dlq_entry *e = m->_private;
    if (e == NULL)
        return;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        e->state = E_DELIVERED;
    } else {
        e->state = E_FAILED;
        snprintf(e->why, sizeof(e->why), "%s", rd_kafka_err2str(m->err));
    }
}

static rd_kafka_t *producer_new(const dlq_opts *o, const ps_config_result *res,
                                char *err, size_t errsz)
{
    char kerr[512], tmo[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    snprintf(tmo, sizeof(tmo), "%lld", (long long)o->kafka_timeout_ms);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->bootstrap, kerr,
                          sizeof(kerr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "message.timeout.ms", tmo, kerr,
                          sizeof(kerr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", kerr,
                          sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        ps_set_err(err, errsz, "kafka producer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (size_t i = 0; i < res->kafka.n; i++)
        if (rd_kafka_conf_set(conf, res->kafka.v[i].key, res->kafka.v[i].value,
                              kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            ps_set_err(err, errsz, "-X kafka.%s: %s", res->kafka.v[i].key,
                       kerr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (rk == NULL) { /* conf is still ours on failure */
        ps_set_err(err, errsz, "kafka producer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return rk; /* conf now owned by rk */
}

/* Produce every selected entry and wait for the delivery reports.  0, or
 * an error (with errstr) when Kafka could not be used at all. */
static int reinject(const dlq_opts *o, const ps_config_result *res,
                    selection *s, reinject_result *out, char *err, size_t errsz)
{
    rd_kafka_t *rk = producer_new(o, res, err, errsz);
    if (rk == NULL)
        return PS_ERR_CONFIG;
    char *tv[1] = {o->topic};
    ps_strlist topics = {tv, 1};
    int rc = ps_kafka_check(rk, o->bootstrap, &topics, (int)o->kafka_timeout_ms,
                            err, errsz);
    if (rc < 0) {
        if (rc == PS_ERR_CONFIG) /* its message names run's --topics */
            ps_set_err(err, errsz,
                       "topic '%s' does not exist on %s "
                       "(check --topic)",
                       o->topic, o->bootstrap);
        rd_kafka_destroy(rk);
        return PS_ERR_IO;
    }

    for (size_t i = 0; i < s->n; i++) {
        dlq_entry *e = &s->v[i];
        size_t len = 0;
        bool complete = false;
        unsigned char *p =
            entry_payload(e, &len, &complete, e->why, sizeof(e->why));
        if (p == NULL || !complete) {
            e->state = E_SKIPPED;
            free(p);
            continue;
        }
        char src[320];
        snprintf(src, sizeof(src), "%s:%lld:%lld", e->topic ? e->topic : "",
                 e->partition, e->offset);
        rd_kafka_resp_err_t kerr;
        for (;;) {
            kerr = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(o->topic),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_VALUE(p, len), RD_KAFKA_V_OPAQUE(e),
                RD_KAFKA_V_HEADER("propstream.dlq_id", e->id, -1),
                RD_KAFKA_V_HEADER("propstream.reason",
                                  e->reason ? e->reason : "", -1),
                RD_KAFKA_V_HEADER("propstream.source", src, -1),
                RD_KAFKA_V_END);
            if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(rk, 100);
        }
        free(p);
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            e->state = E_FAILED;
            snprintf(e->why, sizeof(e->why), "%s", rd_kafka_err2str(kerr));
        } else {
            e->state = E_QUEUED;
        }
        rd_kafka_poll(rk, 0);
    }
    /* Every queued message gets its report within message.timeout.ms;
     * the margin covers the last in-flight request.  Whatever is still
     * queued then is purged (its report, served by the poll, says so), so
     * destroy does not wait on it and no report arrives after we return. */
    rd_kafka_flush(rk, (int)o->kafka_timeout_ms + 5000);
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk, 0);
    for (size_t i = 0; i < s->n; i++) {
        dlq_entry *e = &s->v[i];
        if (e->state == E_QUEUED) { /* no report at all: unknown */
            e->state = E_FAILED;
            snprintf(e->why, sizeof(e->why),
                     "no delivery report within "
                     "--kafka-timeout-ms");
        }
        out->produced += e->state == E_DELIVERED;
        out->failed += e->state == E_FAILED;
        out->skipped += e->state == E_SKIPPED;
    }
    rd_kafka_destroy(rk);
    return 0;
}

/* XDEL every delivered entry; out->deleted counts what Redis removed. */
static void delete_delivered(redisContext *c, const char *key, selection *s,
                             reinject_result *out)
{
    const char *argv[2 + XDEL_CHUNK];
    size_t i = 0;
    while (i < s->n) {
        int argc = 0;
        argv[argc++] = "XDEL";
        argv[argc++] = key;
        for (; i < s->n && argc < 2 + XDEL_CHUNK; i++)
            if (s->v[i].state == E_DELIVERED)
                argv[argc++] = s->v[i].id;
        if (argc == 2)
            continue;
        redisReply *r = ps_cli_redis_cmd(c, argc, argv, NULL, out->delete_err,
                                         sizeof(out->delete_err));
        if (r == NULL) {
            out->delete_error = true;
            return;
        }
        if (r->type == REDIS_REPLY_INTEGER)
            out->deleted += r->integer;
        freeReplyObject(r);
    }
}

/* --------------------------------------------------------------- output */

static const char *state_name(entry_state st)
{
    switch (st) {
    case E_DELIVERED: return "produced";
    case E_FAILED: return "failed";
    case E_SKIPPED: return "skipped";
    default: return "selected";
    }
}

static json_t *json_str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static json_t *json_ll_or_null(long long v)
{
    return v >= 0 ? json_integer(v) : json_null();
}

static json_t *entry_json(const dlq_entry *e, bool with_state)
{
    json_t *j = json_object();
    size_t len = 0;
    bool complete = false;
    char why[160];
    unsigned char *p = entry_payload(e, &len, &complete, why, sizeof(why));
    json_object_set_new(j, "id", json_string(e->id));
    json_object_set_new(j, "reason", json_str_or_null(e->reason));
    json_object_set_new(j, "detail", json_str_or_null(e->detail));
    json_object_set_new(j, "topic", json_str_or_null(e->topic));
    json_object_set_new(j, "partition", json_ll_or_null(e->partition));
    json_object_set_new(j, "offset", json_ll_or_null(e->offset));
    json_object_set_new(j, "payload_len", json_ll_or_null(e->payload_len));
    json_object_set_new(j, "payload_encoding", json_str_or_null(e->encoding));
    json_object_set_new(j, "payload", json_str_or_null(e->payload));
    json_object_set_new(j, "truncated", json_boolean(p != NULL && !complete));
    free(p);
    if (with_state) {
        json_object_set_new(j, "state", json_string(state_name(e->state)));
        if (e->state == E_FAILED || e->state == E_SKIPPED)
            json_object_set_new(j, "error", json_string(e->why));
    }
    return j;
}

static void print_json(const dlq_opts *o, const char *key, long long xlen,
                       const selection *s, const reinject_result *ri)
{
    json_t *root = json_object();
    json_object_set_new(root, "stream", json_string(key));
    json_object_set_new(root, "length", json_integer(xlen));
    json_object_set_new(root, "scanned", json_integer(s->scanned));
    json_t *by = json_object();
    for (size_t i = 0; i < s->nreasons; i++)
        json_object_set_new(by, s->reasons[i].reason,
                            json_integer(s->reasons[i].n));
    json_object_set_new(root, "by_reason", by);
    json_object_set_new(root, "selected", json_integer((long long)s->n));
    if (o->list || ri != NULL) {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n; i++)
            json_array_append_new(arr, entry_json(&s->v[i], ri != NULL));
        json_object_set_new(root, "entries", arr);
    }
    if (ri != NULL) {
        json_t *r = json_object();
        json_object_set_new(r, "topic", json_string(o->topic));
        json_object_set_new(r, "produced", json_integer(ri->produced));
        json_object_set_new(r, "failed", json_integer(ri->failed));
        json_object_set_new(r, "skipped", json_integer(ri->skipped));
        if (o->del) {
            json_object_set_new(r, "deleted", json_integer(ri->deleted));
            if (ri->delete_error)
                json_object_set_new(r, "delete_error",
                                    json_string(ri->delete_err));
        }
        json_object_set_new(root, "reinject", r);
    }
    char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt != NULL) {
        puts(txt);
        free(txt);
    }
    json_decref(root);
}

static void print_text(const dlq_opts *o, const char *key, long long xlen,
                       const selection *s, const reinject_result *ri)
{
    printf("%s: %lld entries", key, xlen);
    if (s->scanned != xlen)
        printf(" (%lld read)", s->scanned);
    printf("\n");
    if (s->nreasons > 0)
        printf("  %-20s %10s\n", "reason", "entries");
    for (size_t i = 0; i < s->nreasons; i++)
        printf("  %-20s %10lld\n", s->reasons[i].reason, s->reasons[i].n);

    if (o->list) {
        printf("\n%zu selected%s%s%s\n", s->n, o->reason ? " (reason " : "",
               o->reason ? o->reason : "", o->reason ? ")" : "");
        if (s->n > 0)
            printf("%-18s %-17s %-22s %7s  %s\n", "id", "reason",
                   "topic/partition/offset", "bytes", "payload");
        for (size_t i = 0; i < s->n; i++) {
            const dlq_entry *e = &s->v[i];
            char src[300], part[24] = "?", off[24] = "?", len[24] = "?";
            if (e->partition >= 0)
                snprintf(part, sizeof(part), "%lld", e->partition);
            if (e->offset >= 0)
                snprintf(off, sizeof(off), "%lld", e->offset);
            if (e->payload_len >= 0)
                snprintf(len, sizeof(len), "%lld", e->payload_len);
            snprintf(src, sizeof(src), "%.200s/%s/%s",
                     e->topic ? e->topic : "?", part, off);
            printf("%-18s %-17s %-22s %7s  ", e->id,
                   e->reason ? e->reason : "(none)", src, len);
            payload_preview(e, (size_t)o->width, stdout);
            printf("\n");
            if (e->detail != NULL && e->detail[0] != '\0')
                printf("%-18s %s\n", "", e->detail);
        }
    }
    if (ri != NULL) {
        for (size_t i = 0; i < s->n; i++) {
            const dlq_entry *e = &s->v[i];
            if (e->state == E_FAILED || e->state == E_SKIPPED)
                printf("%s %s: %s\n", state_name(e->state), e->id, e->why);
        }
        printf("re-injected %lld of %zu selected entries into topic %s "
               "(%lld failed, %lld skipped)",
               ri->produced, s->n, o->topic, ri->failed, ri->skipped);
        if (o->del)
            printf("; deleted %lld from %s", ri->deleted, key);
        printf("\n");
        if (ri->delete_error)
            printf("delete failed: %s\n", ri->delete_err);
    }
}

/* ---------------------------------------------------------------- main */

static int check_options(const dlq_opts *o, char *err, size_t errsz)
{
    unsigned long long ms, seq;
    for (size_t i = 0; i < o->ids.n; i++)
        if (!parse_id(o->ids.v[i], &ms, &seq)) {
            ps_set_err(err, errsz,
                       "--ids: '%s' is not a stream id (MILLISECONDS-SEQUENCE, "
                       "as shown by --list)",
                       o->ids.v[i]);
            return PS_ERR_CONFIG;
        }
    if (o->reinject) {
        if (o->topic == NULL || o->bootstrap == NULL) {
            ps_set_err(err, errsz, "--reinject needs --topic and --bootstrap");
            return PS_ERR_CONFIG;
        }
        if (o->reason == NULL && o->ids.n == 0 && !o->all) {
            ps_set_err(err, errsz,
                       "--reinject needs --reason, --ids or --all to choose "
                       "the entries");
            return PS_ERR_CONFIG;
        }
    } else {
        const char *stray = o->del         ? "--delete"
                            : o->all       ? "--all"
                            : o->topic     ? "--topic"
                            : o->bootstrap ? "--bootstrap"
                                           : NULL;
        if (stray != NULL) {
            ps_set_err(err, errsz, "%s only goes with --reinject", stray);
            return PS_ERR_CONFIG;
        }
    }
    return 0;
}

int ps_cmd_dlq(int argc, char **argv)
{
    dlq_opts o;
    ps_config_result res;
    selection s;
    reinject_result ri;
    char err[512] = "", key[512];
    redisContext *c = NULL;
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&res, 0, sizeof(res));
    memset(&s, 0, sizeof(s));
    memset(&ri, 0, sizeof(ri));
    rc = ps_config_parse(dlq_options, DLQ_NOPTS, &o, &res, argc, argv, err,
                         sizeof(err));
    if (rc != PS_OK) {
        if (rc > 0) { /* --help */
            rc = 0;
            goto done;
        }
        goto usage;
    }
    if (res.positional.n > 0) {
        ps_set_err(err, sizeof(err), "unexpected argument '%s'",
                   res.positional.v[0]);
        goto usage;
    }
    if (check_options(&o, err, sizeof(err)) < 0)
        goto usage;
    if (ps_cli_key(key, sizeof(key), o.r.prefix, "dlq") < 0) {
        ps_set_err(err, sizeof(err), "--prefix: too long");
        goto usage;
    }
    signal(SIGPIPE, SIG_IGN);

    int bad_addr = 0;
    c = ps_cli_redis_connect(&o.r, &bad_addr, err, sizeof(err));
    if (c == NULL) {
        if (bad_addr)
            goto usage;
        goto fail;
    }
    long long xlen = 0;
    {
        const char *xargv[] = {"XLEN", key};
        redisReply *r = ps_cli_redis_cmd(c, 2, xargv, NULL, err, sizeof(err));
        if (r == NULL)
            goto fail;
        xlen = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        freeReplyObject(r);
    }
    rc = scan_stream(c, key, &o, &s, err, sizeof(err));
    if (rc < 0)
        goto fail;

    size_t missing = 0;
    for (size_t i = 0; i < o.ids.n; i++)
        if (!s.found[i]) {
            fprintf(stderr, "propstream dlq: no entry %s in %s\n", o.ids.v[i],
                    key);
            missing++;
        }
    if (missing > 0 && o.reinject) {
        ps_set_err(err, sizeof(err),
                   "%zu of the --ids not found; nothing re-injected", missing);
        goto fail;
    }

    if (o.reinject) {
        if (s.n > 0 && reinject(&o, &res, &s, &ri, err, sizeof(err)) < 0)
            goto fail;
        if (o.del)
            delete_delivered(c, key, &s, &ri);
    }
    if (o.json)
        print_json(&o, key, xlen, &s, o.reinject ? &ri : NULL);
    else
        print_text(&o, key, xlen, &s, o.reinject ? &ri : NULL);
    rc = missing > 0 || ri.failed > 0 || ri.skipped > 0 || ri.delete_error ? 1
                                                                           : 0;
    goto done;

usage:
    fprintf(stderr, "propstream dlq: %s\ntry 'propstream dlq --help'\n", err);
    rc = 2;
    goto done;
fail:
    fprintf(stderr, "propstream dlq: %s\n", err);
    rc = 1;
done:
    if (c != NULL)
        redisFree(c);
    selection_free(&s);
    ps_config_free(dlq_options, DLQ_NOPTS, &o, &res);
    return rc;
}
