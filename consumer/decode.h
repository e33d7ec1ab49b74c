/*
 * decode.h -- bytes of one Kafka message to a validated ps_event.
 *
 * Three encodings are accepted and detected per message (contract section 1):
 *   - Confluent framing: 0x00, 4-byte big-endian schema id, Avro binary.
 *     Writer schemas come from the schema directory: "<id>.avsc"; with no
 *     file for id 1, id 1 is the embedded reader schema (schemas/event.avsc).
 *     A writer schema that differs from the reader schema is resolved
 *     against it (Avro schema resolution: fields matched by name, missing
 *     nullable fields take their null default, int/long/float promotions).
 *   - JSON: first non-blank byte '{'; same field names, "type"
 *     case-insensitive, null or absent optional fields.
 *   - Plain Avro binary with the reader schema: anything else.
 * The decoded event is then validated (ps_event_validate).
 *
 * Avro values, readers and field mappings are created once per decoder
 * (per writer schema) and reused.  Schema resolution is propstream's own
 * (by field name, computed once per writer schema): avro-c 1.11.1's
 * resolved reader crashes on reader fields missing from the writer.
 * Every Avro record is bounds-checked against its writer schema before
 * avro-c reads it, so hostile lengths cannot trigger huge allocations.
 * Not yet allocation-free: avro-c allocates for each string it reads and
 * jansson builds a tree per JSON message (issue 8 targets this).
 * A decoder is not thread-safe: one per thread.
 */
#ifndef PS_DECODE_H
#define PS_DECODE_H

#include <stddef.h>

#include "../common/event.h"

/* Why a record is bad.  The names are stable: they are the `reason` field
 * of ps:dlq entries and the suffix of the per-reason bad counters. */
typedef enum ps_bad_reason {
    PS_BAD_NONE = 0,
    PS_BAD_UNDECODABLE,    /* "undecodable": bytes are not a valid record */
    PS_BAD_UNKNOWN_SCHEMA, /* "unknown_schema_id": Confluent id not known */
    PS_BAD_MISSING_FIELD,  /* "missing_field": required field absent/null */
    PS_BAD_WRONG_TYPE,     /* "wrong_type": JSON type or enum symbol wrong */
    PS_BAD_AMOUNT,         /* "bad_amount": non-finite, negative, or SPEND
                              without an amount > 0 */
    PS_BAD_ID,             /* "bad_id": empty or longer than PS_ID_MAX */
    PS_BAD_TS,             /* "bad_ts": ts <= 0 or signup_ts <= 0 */
    PS_BAD_REASON_COUNT
} ps_bad_reason;

/* Stable name of a reason ("undecodable", ...); "none" for PS_BAD_NONE. */
const char *ps_bad_reason_name(ps_bad_reason reason);

/* Check an already-decoded event against contract section 1.  Returns
 * PS_BAD_NONE or the reason, with a one-line detail naming the field. */
ps_bad_reason ps_event_validate(const ps_event *ev, char *detail,
                                size_t detail_size);

typedef struct ps_decoder ps_decoder;

/*
 * New decoder.  schema_dir may be NULL (embedded schema only).  Schema
 * files are read lazily, on the first message with that id, and cached;
 * an id whose file is missing or unparsable is remembered as unknown.
 * Returns NULL and writes errstr if the reader schema cannot be set up.
 */
ps_decoder *ps_decoder_new(const char *schema_dir, char *errstr,
                           size_t errstr_size);
void ps_decoder_destroy(ps_decoder *dec); /* NULL is a no-op */

/*
 * Decode and validate one payload.  Returns PS_BAD_NONE and fills *ev, whose
 * strings point into the decoder and stay valid until the next call on dec;
 * or returns the reason and writes a one-line human-readable detail
 * ("product_id is required for CLICK").  Never crashes on any input.
 */
ps_bad_reason ps_decoder_decode(ps_decoder *dec, const void *payload,
                                size_t len, ps_event *ev, char *detail,
                                size_t detail_size);

/* The embedded reader schema (schemas/event.avsc), NUL-terminated JSON. */
const char *ps_event_schema_json(void);

#endif
