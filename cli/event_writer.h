/*
 * event_writer.h -- encode events and send them to Kafka or a file; shared
 * by `propstream gen` (cli/gen.c) and `propstream import` (cli/import.c).
 *
 * Encoder: one ps_event into one record of schemas/event.avsc, as Confluent
 * framed Avro (0x00 + 4-byte big-endian schema id + Avro binary), plain
 * Avro binary, or a JSON object.  One generic Avro value and one writer are
 * reused for every record.
 *
 * Output: a librdkafka producer (records keyed, copied, retried while the
 * local queue is full, delivery reports counted) or a file (json: one object
 * per line; binary formats: 4-byte big-endian length + record).  Any bytes
 * can be sent, so gen can send its deliberately malformed records too.
 * Pacing, progress lines and the stop flag stay with the callers.
 */
#ifndef PS_EVENT_WRITER_H
#define PS_EVENT_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/config.h"
#include "../common/event.h"

typedef enum ps_event_format {
    PS_FORMAT_CONFLUENT = 0, /* 0x00 + schema id + Avro */
    PS_FORMAT_AVRO = 1,
    PS_FORMAT_JSON = 2,
    PS_FORMAT_COUNT
} ps_event_format;

/* "confluent", "avro", "json"; "?" when out of range. */
const char *ps_event_format_name(int format);

/* The format named s, or -1. */
int ps_event_format_parse(const char *s);

/* ===================================================================
 * Encoder
 * =================================================================== */

typedef struct ps_event_encoder ps_event_encoder;

/*
 * json_amount_decimals: JSON amounts as "%.Nf" with N decimals when >= 0,
 * else the shortest "%g" that reads back as the same double.  NULL with
 * errstr on failure.
 */
ps_event_encoder *ps_event_encoder_new(int json_amount_decimals, char *errstr,
                                       size_t errstr_size);

void ps_event_encoder_destroy(ps_event_encoder *enc); /* NULL is fine */

/*
 * Encode ev in format (schema_id is used by PS_FORMAT_CONFLUENT only) into
 * out; returns the length or -1 (encoding failure or cap too small).
 * Null (ptr NULL) product_id and campaign are null in Avro and left out in
 * JSON; amount is null unless has_amount; signup_ts is null when 0.  A null
 * customer_id is left out in JSON and written as "" in Avro (which has no
 * null there): gen uses that for a malformed record.  JSON strings are
 * escaped (quote, backslash, control bytes).  ev->part is not encoded.
 */
long ps_event_encode(ps_event_encoder *enc, const ps_event *ev, int format,
                     uint32_t schema_id, char *out, size_t cap);

/* ===================================================================
 * Output
 * =================================================================== */

typedef struct ps_event_output ps_event_output;

typedef struct ps_event_output_stats {
    uint64_t delivered, failed; /* Kafka delivery reports so far */
    char first_error[256];      /* error of the first failed report */
} ps_event_output_stats;

/*
 * A producer to topic at bootstrap: the defaults of gen/import (linger 5 ms,
 * large queues, idempotence), then the user's kafka.* settings, then a
 * metadata request so an unreachable cluster fails at once.  Returns 0 with
 * *out set, 2 on bad configuration (--bootstrap, kafka.KEY) or 1 when the
 * producer or topic cannot be created or the cluster not reached; errstr
 * then says why.
 */
int ps_event_output_open_kafka(ps_event_output **out, const char *bootstrap,
                               const char *topic,
                               const ps_passthrough *settings, char *errstr,
                               size_t errstr_size);

/* A file at path (truncated), framed for format (see above).  0 with *out
 * set, or 1 with errstr. */
int ps_event_output_open_file(ps_event_output **out, const char *path,
                              int format, char *errstr, size_t errstr_size);

/* Send value (len bytes) keyed by key (keylen bytes; ignored by files).
 * 0, or -1 with errstr ("produce: ..." or "--output PATH: write failed"). */
int ps_event_output_send(ps_event_output *out, const char *key, size_t keylen,
                         const char *value, size_t len, char *errstr,
                         size_t errstr_size);

bool ps_event_output_is_kafka(const ps_event_output *out);

/* Kafka: serve delivery reports, waiting up to timeout_ms.  File: no-op. */
void ps_event_output_poll(ps_event_output *out, int timeout_ms);

/* Kafka: messages not yet reported (rd_kafka_outq_len).  File: 0. */
int ps_event_output_queued(const ps_event_output *out);

/* Kafka: wait up to timeout_ms for outstanding deliveries (one
 * rd_kafka_flush).  File: no-op. */
void ps_event_output_drain(ps_event_output *out, int timeout_ms);

/* File: write out the buffered records; 0, or -1 with errstr ("--output
 * PATH: ...").  Kafka: 0. */
int ps_event_output_sync(ps_event_output *out, char *errstr,
                         size_t errstr_size);

const ps_event_output_stats *
ps_event_output_get_stats(const ps_event_output *out);

/* Destroy the producer (without waiting: drain first) or close the file;
 * the final counts into *stats when stats is not NULL.  NULL is fine. */
void ps_event_output_close(ps_event_output *out, ps_event_output_stats *stats);


/*
 * The output options every producing subcommand shares, as entries of its
 * ps_option table: O(field) is the caller's offsetof macro, and its options
 * struct has char *bootstrap, *topic, *output, *format and int64_t
 * schema_id.
 */
#define PS_EVENT_OUTPUT_OPTIONS(O)                                            \
    {"bootstrap", 'b', PS_OPT_STR, NULL, 1, 0, NULL,                          \
     "Kafka bootstrap servers to produce to (or use --output)",               \
     O(bootstrap), 0},                                                        \
    {"topic", 't', PS_OPT_STR, "events", 1, 0, NULL,                          \
     "Kafka topic to produce to", O(topic), 0},                               \
    {"output", 'o', PS_OPT_STR, NULL, 1, 0, NULL,                             \
     "write to FILE instead of Kafka: json one object per line, binary "      \
     "formats as 4-byte big-endian length + record",                          \
     O(output), 0},                                                           \
    {"format", 'f', PS_OPT_STR, "confluent", 1, 0, NULL,                      \
     "record encoding: confluent (0x00 + schema id + Avro), avro, json",      \
     O(format), 0, "confluent|avro|json"},                                    \
    {"schema-id", 0, PS_OPT_INT, "1", 1, 2147483647.0, NULL,                  \
     "schema id written in the Confluent frame", O(schema_id), 0}

#endif
