/*
 * event_writer.c -- the event encoder and output of gen and import (see
 * event_writer.h).
 */
#include "event_writer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>
#include <librdkafka/rdkafka.h>

#include "../common/error.h"
#include "../consumer/decode.h"

static const char *const format_names[PS_FORMAT_COUNT] = {"confluent",
                                                          "avro", "json"};

const char *ps_event_format_name(int format)
{
    return format >= 0 && format < PS_FORMAT_COUNT ? format_names[format]
                                                   : "?";
}

int ps_event_format_parse(const char *s)
{
    for (int f = 0; f < PS_FORMAT_COUNT; f++)
        if (strcmp(s, format_names[f]) == 0)
            return f;
    return -1;
}

/* ===================================================================
 * Encoder
 * =================================================================== */

struct ps_event_encoder {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value;
    bool have_value;
    avro_writer_t writer;
    int json_decimals;
    char *str;      /* NUL-terminated copy of a ps_str for Avro */
    size_t str_cap;
    char avro_buf[8192];
};

ps_event_encoder *ps_event_encoder_new(int json_amount_decimals, char *errstr,
                                       size_t errstr_size)
{
    const char *json = ps_event_schema_json();
    ps_event_encoder *e = calloc(1, sizeof(*e));

    if (e == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        return NULL;
    }
    e->json_decimals = json_amount_decimals;
    if (avro_schema_from_json_length(json, strlen(json), &e->schema) != 0) {
        ps_set_err(errstr, errstr_size, "event schema: %s", avro_strerror());
        goto fail;
    }
    e->iface = avro_generic_class_from_schema(e->schema);
    if (e->iface == NULL ||
        avro_generic_value_new(e->iface, &e->value) != 0) {
        ps_set_err(errstr, errstr_size, "avro value: %s", avro_strerror());
        goto fail;
    }
    e->have_value = true;
    e->writer = avro_writer_memory(e->avro_buf, sizeof(e->avro_buf));
    if (e->writer == NULL) {
        ps_set_err(errstr, errstr_size, "avro writer: %s", avro_strerror());
        goto fail;
    }
    return e;
fail:
    ps_event_encoder_destroy(e);
    return NULL;
}

void ps_event_encoder_destroy(ps_event_encoder *e)
{
    if (e == NULL)
        return;
    if (e->writer != NULL)
        avro_writer_free(e->writer);
    if (e->have_value)
        avro_value_decref(&e->value);
    if (e->iface != NULL)
        avro_value_iface_decref(e->iface);
    if (e->schema != NULL)
        avro_schema_decref(e->schema);
    free(e->str);
    free(e);
}

/* Set string value v from s (NULL ptr: ""); copies through e->str since a
 * ps_str is not NUL-terminated. */
static int set_string(ps_event_encoder *e, avro_value_t *v, ps_str s)
{
    if (s.len + 1 > e->str_cap) {
        size_t cap = e->str_cap ? e->str_cap : 256;
        char *p;
        while (cap < (size_t)s.len + 1)
            cap *= 2;
        p = realloc(e->str, cap);
        if (p == NULL)
            return -1;
        e->str = p;
        e->str_cap = cap;
    }
    if (s.len > 0)
        memcpy(e->str, s.ptr, s.len);
    e->str[s.len] = '\0';
    return avro_value_set_string(v, e->str);
}

/* Set optional (union {null, T}) field idx: branch 0 null, 1 value. */
static int set_opt_string(ps_event_encoder *e, size_t idx, ps_str s)
{
    avro_value_t field, branch;
    if (avro_value_get_by_index(&e->value, idx, &field, NULL) != 0)
        return -1;
    if (s.ptr == NULL)
        return avro_value_set_branch(&field, 0, &branch) ||
               avro_value_set_null(&branch);
    return avro_value_set_branch(&field, 1, &branch) ||
           set_string(e, &branch, s);
}

/*
 * Avro binary of ev into e->avro_buf; returns its length or -1.  The
 * schema's field order: event_id, customer_id, type, product_id, amount,
 * ts, signup_ts, campaign.
 */
static long enc_avro(ps_event_encoder *e, const ps_event *ev)
{
    avro_value_t *rec = &e->value, f, b;
    int rc = 0;

    rc |= avro_value_get_by_index(rec, 0, &f, NULL) ||
          set_string(e, &f, ev->event_id);
    rc |= avro_value_get_by_index(rec, 1, &f, NULL) ||
          set_string(e, &f, ev->customer_id);
    rc |= avro_value_get_by_index(rec, 2, &f, NULL) ||
          avro_value_set_enum(&f, (int)ev->type);
    rc |= set_opt_string(e, 3, ev->product_id);
    rc |= avro_value_get_by_index(rec, 4, &f, NULL);
    if (ev->has_amount)
        rc |= avro_value_set_branch(&f, 1, &b) ||
              avro_value_set_double(&b, ev->amount);
    else
        rc |= avro_value_set_branch(&f, 0, &b) || avro_value_set_null(&b);
    rc |= avro_value_get_by_index(rec, 5, &f, NULL) ||
          avro_value_set_long(&f, ev->ts);
    rc |= avro_value_get_by_index(rec, 6, &f, NULL);
    if (ev->signup_ts != 0)
        rc |= avro_value_set_branch(&f, 1, &b) ||
              avro_value_set_long(&b, ev->signup_ts);
    else
        rc |= avro_value_set_branch(&f, 0, &b) || avro_value_set_null(&b);
    rc |= set_opt_string(e, 7, ev->campaign);
    if (rc != 0)
        return -1;
    avro_writer_reset(e->writer);
    if (avro_value_write(e->writer, rec) != 0)
        return -1;
    return (long)avro_writer_tell(e->writer);
}

typedef struct jbuf {
    char *p;
    size_t n, cap;
    bool overflow;
} jbuf;

static void jb_putc(jbuf *b, char c)
{
    if (b->n + 1 >= b->cap) {
        b->overflow = true;
        return;
    }
    b->p[b->n++] = c;
}

static void jb_puts(jbuf *b, const char *s)
{
    while (*s)
        jb_putc(b, *s++);
}

/* A JSON string literal: escape quote, backslash and control bytes. */
static void jb_str(jbuf *b, ps_str s)
{
    jb_putc(b, '"');
    for (uint32_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch == '"' || ch == '\\') {
            jb_putc(b, '\\');
            jb_putc(b, (char)ch);
        } else if (ch < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            jb_puts(b, esc);
        } else {
            jb_putc(b, (char)ch);
        }
    }
    jb_putc(b, '"');
}

/* "%.Nf" when decimals >= 0, else the shortest %g that reads back as the
 * same double. */
static void fmt_double(char *out, size_t cap, double v, int decimals)
{
    if (decimals >= 0) {
        snprintf(out, cap, "%.*f", decimals, v);
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static long enc_json(const ps_event_encoder *e, const ps_event *ev,
                     char *out, size_t cap)
{
    jbuf b = {out, 0, cap, false};
    char num[512]; /* room for any "%.2f" */

    jb_puts(&b, "{\"event_id\":");
    jb_str(&b, ev->event_id);
    if (ev->customer_id.ptr != NULL) {
        jb_puts(&b, ",\"customer_id\":");
        jb_str(&b, ev->customer_id);
    }
    jb_puts(&b, ",\"type\":\"");
    jb_puts(&b, ps_event_type_name(ev->type));
    jb_putc(&b, '"');
    if (ev->product_id.ptr != NULL) {
        jb_puts(&b, ",\"product_id\":");
        jb_str(&b, ev->product_id);
    }
    if (ev->has_amount) {
        fmt_double(num, sizeof(num), ev->amount, e->json_decimals);
        jb_puts(&b, ",\"amount\":");
        jb_puts(&b, num);
    }
    snprintf(num, sizeof(num), "%" PRId64, ev->ts);
    jb_puts(&b, ",\"ts\":");
    jb_puts(&b, num);
    if (ev->signup_ts != 0) {
        snprintf(num, sizeof(num), "%" PRId64, ev->signup_ts);
        jb_puts(&b, ",\"signup_ts\":");
        jb_puts(&b, num);
    }
    if (ev->campaign.ptr != NULL) {
        jb_puts(&b, ",\"campaign\":");
        jb_str(&b, ev->campaign);
    }
    jb_putc(&b, '}');
    return b.overflow ? -1 : (long)b.n;
}

long ps_event_encode(ps_event_encoder *e, const ps_event *ev, int format,
                     uint32_t schema_id, char *out, size_t cap)
{
    size_t h = format == PS_FORMAT_CONFLUENT ? 5 : 0;
    long n;

    if (format == PS_FORMAT_JSON)
        return enc_json(e, ev, out, cap);
    n = enc_avro(e, ev);
    if (n < 0 || h + (size_t)n > cap)
        return -1;
    if (h) {
        out[0] = 0;
        out[1] = (char)(schema_id >> 24);
        out[2] = (char)(schema_id >> 16);
        out[3] = (char)(schema_id >> 8);
        out[4] = (char)schema_id;
    }
    memcpy(out + h, e->avro_buf, (size_t)n);
    return (long)h + n;
}

/* ===================================================================
 * Output
 * =================================================================== */

struct ps_event_output {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    FILE *fp;
    char *path;
    int format;
    ps_event_output_stats stats;
};

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                      void *opaque)
{
    ps_event_output *out = opaque;
    (void)rk;
    if (msg->err) {
        if (out->stats.failed++ == 0)
            snprintf(out->stats.first_error, sizeof(out->stats.first_error),
                     "%s", rd_kafka_err2str(msg->err));
    } else {
        out->stats.delivered++;
    }
}

int ps_event_output_open_kafka(ps_event_output **outp, const char *bootstrap,
                               const char *topic,
                               const ps_passthrough *settings, char *errstr,
                               size_t errstr_size)
{
    static const char *const defaults[][2] = {
        {"linger.ms", "5"},
        {"queue.buffering.max.messages", "1000000"},
        {"queue.buffering.max.kbytes", "1048576"},
        {"batch.num.messages", "10000"},
        {"message.timeout.ms", "60000"},
        {"enable.idempotence", "true"},
    };
    ps_event_output *out;
    rd_kafka_conf_t *conf;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;
    char kerr[512];

    *outp = NULL;
    out = calloc(1, sizeof(*out));
    if (out == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        return 1;
    }
    conf = rd_kafka_conf_new();
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], NULL, 0);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, kerr,
                          sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        ps_set_err(errstr, errstr_size, "--bootstrap: %s", kerr);
        rd_kafka_conf_destroy(conf);
        free(out);
        return 2;
    }
    for (size_t i = 0; i < settings->n; i++) {
        if (rd_kafka_conf_set(conf, settings->v[i].key,
                              settings->v[i].value, kerr,
                              sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            ps_set_err(errstr, errstr_size, "kafka.%s: %s",
                       settings->v[i].key, kerr);
            rd_kafka_conf_destroy(conf);
            free(out);
            return 2;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, out);
    out->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (out->rk == NULL) {
        ps_set_err(errstr, errstr_size, "Kafka producer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        free(out);
        return 1;
    }
    /* conf is now owned by rk */
    out->rkt = rd_kafka_topic_new(out->rk, topic, NULL);
    if (out->rkt == NULL) {
        ps_set_err(errstr, errstr_size, "--topic %s: %s", topic,
                   rd_kafka_err2str(rd_kafka_last_error()));
        ps_event_output_close(out, NULL);
        return 1;
    }
    /* Fail fast on an unreachable cluster instead of timing out every
     * message. */
    err = rd_kafka_metadata(out->rk, 0, out->rkt, &md, 10000);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ps_set_err(errstr, errstr_size,
                   "cannot reach Kafka at %s (topic %s): %s", bootstrap,
                   topic, rd_kafka_err2str(err));
        ps_event_output_close(out, NULL);
        return 1;
    }
    rd_kafka_metadata_destroy(md);
    *outp = out;
    return 0;
}

int ps_event_output_open_file(ps_event_output **outp, const char *path,
                              int format, char *errstr, size_t errstr_size)
{
    ps_event_output *out = calloc(1, sizeof(*out));

    *outp = NULL;
    if (out == NULL || (out->path = strdup(path)) == NULL) {
        free(out);
        ps_set_err(errstr, errstr_size, "out of memory");
        return 1;
    }
    out->format = format;
    out->fp = fopen(path, "wb");
    if (out->fp == NULL) {
        ps_set_err(errstr, errstr_size, "--output %s: %s", path,
                   strerror(errno));
        ps_event_output_close(out, NULL);
        return 1;
    }
    setvbuf(out->fp, NULL, _IOFBF, 1 << 20);
    *outp = out;
    return 0;
}

int ps_event_output_send(ps_event_output *out, const char *key, size_t keylen,
                         const char *value, size_t len, char *errstr,
                         size_t errstr_size)
{
    if (out->rk != NULL) {
        for (;;) {
            if (rd_kafka_produce(out->rkt, RD_KAFKA_PARTITION_UA,
                                 RD_KAFKA_MSG_F_COPY, (void *)value, len, key,
                                 keylen, NULL) == 0)
                break;
            rd_kafka_resp_err_t err = rd_kafka_last_error();
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                ps_set_err(errstr, errstr_size, "produce: %s",
                           rd_kafka_err2str(err));
                return -1;
            }
            rd_kafka_poll(out->rk, 50);
        }
        return 0;
    }
    if (out->format != PS_FORMAT_JSON) {
        unsigned char hdr[4] = {(unsigned char)(len >> 24),
                                (unsigned char)(len >> 16),
                                (unsigned char)(len >> 8),
                                (unsigned char)len};
        if (fwrite(hdr, 1, 4, out->fp) != 4)
            goto io_error;
    }
    if (fwrite(value, 1, len, out->fp) != len)
        goto io_error;
    if (out->format == PS_FORMAT_JSON && fputc('\n', out->fp) == EOF)
        goto io_error;
    return 0;
io_error:
    ps_set_err(errstr, errstr_size, "--output %s: write failed: %s",
               out->path, strerror(errno));
    return -1;
}

bool ps_event_output_is_kafka(const ps_event_output *out)
{
    return out != NULL && out->rk != NULL;
}

void ps_event_output_poll(ps_event_output *out, int timeout_ms)
{
    if (out->rk != NULL)
        rd_kafka_poll(out->rk, timeout_ms);
}

int ps_event_output_queued(const ps_event_output *out)
{
    return out->rk != NULL ? rd_kafka_outq_len(out->rk) : 0;
}

void ps_event_output_drain(ps_event_output *out, int timeout_ms)
{
    if (out->rk != NULL)
        rd_kafka_flush(out->rk, timeout_ms);
}

int ps_event_output_sync(ps_event_output *out, char *errstr,
                         size_t errstr_size)
{
    if (out->fp != NULL && fflush(out->fp) != 0) {
        ps_set_err(errstr, errstr_size, "--output %s: %s", out->path,
                   strerror(errno));
        return -1;
    }
    return 0;
}

const ps_event_output_stats *
ps_event_output_get_stats(const ps_event_output *out)
{
    return &out->stats;
}

void ps_event_output_close(ps_event_output *out, ps_event_output_stats *stats)
{
    if (out == NULL)
        return;
    if (stats != NULL)
        *stats = out->stats;
    if (out->rkt != NULL)
        rd_kafka_topic_destroy(out->rkt);
    if (out->rk != NULL)
        rd_kafka_destroy(out->rk);
    if (out->fp != NULL)
        fclose(out->fp);
    free(out->path);
    free(out);
}
