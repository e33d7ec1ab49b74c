/*
 * decode.c -- bytes of one Kafka message to a ps_event (see decode.h).
 *
 * Encoding detection, per message: 0x00 followed by at least 4 bytes is
 * Confluent framing (big-endian schema id, then Avro binary); a first
 * non-blank byte '{' is JSON; anything else is plain Avro binary written
 * with the reader schema (schemas/event.avsc).  An empty payload is
 * undecodable.  A plain Avro record whose event_id is empty starts with
 * 0x00 and is read as Confluent framing; it was invalid anyway (bad_id).
 *
 * Avro schema resolution is done here, not by avro-c: avro-c 1.11.1's
 * avro_resolved_reader_new() cannot give a reader field the writer lacks
 * its default (its source says "TODO: Handle default values!"; with our
 * older test writer it even segfaults on its error path), and it refuses
 * bytes -> string.  So an older producer could not be read.  Instead every
 * writer schema (the reader schema included, for plain Avro) gets a
 * ps_wschema, built once on first use:
 *   - a generic avro-c value of the writer schema, reused for every record
 *     (avro_value_read resets it), and the decoder's one memory reader;
 *   - field[f]: the writer's index of each reader field, matched by name
 *     (extra writer fields are read and ignored); a reader field the
 *     writer lacks is null when it is optional (all optional fields
 *     default to null) and makes the writer incompatible when it is
 *     required: its records are missing_field;
 *   - values are converted by type at read time: int/long to long,
 *     int/long/float/double to double, string/bytes to string, the
 *     writer's enum symbols to ps_event_type by name (type_map), a writer
 *     union through its current branch; anything else is wrong_type;
 *   - a compiled form of the writer schema (nodes) for a bounds walk.
 *
 * The walk.  Avro bytes come from the network and avro-c 1.11.1 trusts
 * them: a string length varint claiming 2^40 bytes becomes a 2^40-byte
 * malloc before the read fails.  So before avro-c sees a record, walk_node
 * checks it against the writer schema exactly as avro-c will read it
 * (varints of at most 10 bytes, int range, lengths >= 0 and within the
 * bytes left, union branch and enum index in range, array/map item counts
 * within the bytes of the message, nesting depth) and that it ends exactly
 * at the end of the payload (trailing bytes are undecodable).
 *
 * Schema cache: an open-addressing table of schema ids, at most
 * PS_SCHEMA_CACHE_MAX known and PS_SCHEMA_CACHE_MAX unknown ids.  Files are
 * read from schema_dir/<id>.avsc on first use; a missing or unusable file
 * makes the id unknown (remembered, so it costs no more syscalls); with no
 * file for id 1, id 1 is the reader schema.  Unknown ids past the bound are
 * reported but not remembered; known ones past the bound are refused.
 *
 * Ownership: the decoder owns every avro-c object (schemas hold one
 * reference each), the jansson document of the last JSON message and the
 * schema directory string.  A decoded event's strings point into the
 * writer's avro value or the jansson document: valid until the next decode.
 * Per message, avro-c still allocates each string it reads (value-read.c
 * has no way to read into a caller's buffer) and jansson allocates its
 * tree; nothing else is allocated.
 */
#include "decode.h"

#include <avro.h>
#include <jansson.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

#define PS_SCHEMA_CACHE_MAX 1024 /* known ids, and unknown ids, remembered */
#define PS_SCHEMA_SLOTS 4096     /* hash slots (power of 2, > 2 * max) */
#define PS_SCHEMA_FILE_MAX (1 << 20)
#define PS_WALK_DEPTH_MAX 32     /* levels; records, unions, arrays, maps
                                    each count one */
#define PS_DETAIL_SYMBOL_MAX 32  /* bytes of an input symbol in a detail */

/* ------------------------------------------------------------------------
 * Reader fields
 */

enum {
    F_EVENT_ID,
    F_CUSTOMER_ID,
    F_TYPE,
    F_PRODUCT_ID,
    F_AMOUNT,
    F_TS,
    F_SIGNUP_TS,
    F_CAMPAIGN,
    F_COUNT
};

/* Names and optionality of the reader schema's fields; ps_decoder_new
 * checks that schemas/event.avsc agrees. */
static const struct {
    const char *name;
    bool optional; /* union {null, T}, default null */
} reader_fields[F_COUNT] = {
    [F_EVENT_ID] = {"event_id", false},
    [F_CUSTOMER_ID] = {"customer_id", false},
    [F_TYPE] = {"type", false},
    [F_PRODUCT_ID] = {"product_id", true},
    [F_AMOUNT] = {"amount", true},
    [F_TS] = {"ts", false},
    [F_SIGNUP_TS] = {"signup_ts", true},
    [F_CAMPAIGN] = {"campaign", true},
};

/* ------------------------------------------------------------------------
 * Writer schemas
 */

typedef enum ps_wkind {
    W_NULL, W_BOOL, W_INT, W_LONG, W_FLOAT, W_DOUBLE, W_BYTES, W_FIXED,
    W_ENUM, W_ARRAY, W_MAP, W_UNION, W_RECORD
} ps_wkind;

/* One node of a compiled schema.  n: fixed size, enum symbols, union
 * branches or record fields; child: the item/value node of an array/map,
 * or the first of n entries in kids[] for a union/record. */
typedef struct ps_wnode {
    uint8_t kind;
    uint32_t n;
    uint32_t child;
} ps_wnode;

typedef struct ps_wschema {
    avro_schema_t schema;       /* one reference held */
    avro_value_iface_t *iface;  /* generic class of schema */
    avro_value_t value;         /* reused for every record */
    bool has_value;
    int field[F_COUNT];         /* writer index of each reader field, -1 */
    const char *missing;        /* required reader field the writer lacks */
    avro_schema_t type_enum;    /* the writer's enum for `type`, or NULL */
    int8_t *type_map;           /* its symbol index -> ps_event_type, -1 */
    int type_map_len;
    ps_wnode *nodes;            /* nodes[0] is the top-level record */
    uint32_t n_nodes, cap_nodes;
    uint32_t *kids;
    uint32_t n_kids, cap_kids;
} ps_wschema;

/* State while compiling a schema: named types already compiled. */
typedef struct ps_wcompile {
    ps_wschema *ws;
    avro_schema_t *memo_schema;
    uint32_t *memo_node;
    size_t n_memo, cap_memo;
    int depth;
} ps_wcompile;

typedef enum { SLOT_EMPTY, SLOT_KNOWN, SLOT_UNKNOWN } ps_slot_state;

typedef struct ps_schema_slot {
    uint32_t id;
    uint8_t state;
    ps_wschema *ws; /* SLOT_KNOWN; may be the decoder's plain schema */
} ps_schema_slot;

struct ps_decoder {
    char *schema_dir;          /* NULL: embedded schema only */
    avro_schema_t reader;      /* one reference held */
    ps_wschema *plain;         /* the reader schema as a writer */
    avro_reader_t areader;     /* memory reader, source set per record */
    ps_schema_slot *slots;     /* PS_SCHEMA_SLOTS */
    unsigned n_known, n_unknown;
    json_t *json;              /* last JSON document, freed at next decode */
};

/* Copy at most PS_DETAIL_SYMBOL_MAX bytes of s, non-printables as '?'. */
static void printable(const char *s, size_t len, char *out, size_t out_size)
{
    size_t n = len < PS_DETAIL_SYMBOL_MAX ? len : PS_DETAIL_SYMBOL_MAX;

    if (n > out_size - 1)
        n = out_size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[n] = '\0';
}

/* The ps_event_type of an Avro enum symbol (exact, as Avro names are), or
 * -1. */
static int symbol_type(const char *sym)
{
    for (int t = 0; sym != NULL && t < PS_EVENT_TYPE_COUNT; t++) {
        if (strcmp(sym, ps_event_type_name((ps_event_type)t)) == 0)
            return t;
    }
    return -1;
}

static avro_schema_t schema_target(avro_schema_t s)
{
    while (s != NULL && avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    return s;
}

/* ------------------------------------------------------------------------
 * Compiling a writer schema into nodes
 */

static int wcompile_push(ps_wschema *ws, ps_wkind kind, uint32_t n,
                         uint32_t *idx)
{
    if (ws->n_nodes == ws->cap_nodes) {
        uint32_t cap = ws->cap_nodes ? 2 * ws->cap_nodes : 16;
        ps_wnode *nodes = realloc(ws->nodes, cap * sizeof(*nodes));
        if (nodes == NULL)
            return -1;
        ws->nodes = nodes;
        ws->cap_nodes = cap;
    }
    *idx = ws->n_nodes++;
    ws->nodes[*idx] = (ps_wnode){.kind = (uint8_t)kind, .n = n, .child = 0};
    return 0;
}

/* Reserve n contiguous entries in kids[]; their first index in *first. */
static int wcompile_kids(ps_wschema *ws, uint32_t n, uint32_t *first)
{
    if (ws->n_kids + n > ws->cap_kids) {
        uint32_t cap = ws->cap_kids ? ws->cap_kids : 16;
        while (cap < ws->n_kids + n)
            cap *= 2;
        uint32_t *kids = realloc(ws->kids, cap * sizeof(*kids));
        if (kids == NULL)
            return -1;
        ws->kids = kids;
        ws->cap_kids = cap;
    }
    *first = ws->n_kids;
    ws->n_kids += n;
    return 0;
}

static int wcompile_memo(ps_wcompile *c, avro_schema_t s, uint32_t node)
{
    if (c->n_memo == c->cap_memo) {
        size_t cap = c->cap_memo ? 2 * c->cap_memo : 8;
        avro_schema_t *ms = realloc(c->memo_schema, cap * sizeof(*ms));
        if (ms == NULL)
            return -1;
        c->memo_schema = ms;
        uint32_t *mn = realloc(c->memo_node, cap * sizeof(*mn));
        if (mn == NULL)
            return -1;
        c->memo_node = mn;
        c->cap_memo = cap;
    }
    c->memo_schema[c->n_memo] = s;
    c->memo_node[c->n_memo++] = node;
    return 0;
}

static int wcompile(ps_wcompile *c, avro_schema_t s, uint32_t *out);

/* Union branches or record fields: n children listed in kids[]. */
static int wcompile_children(ps_wcompile *c, avro_schema_t s, uint32_t idx,
                             uint32_t n, bool record)
{
    uint32_t first, child;

    if (wcompile_kids(c->ws, n, &first) != 0)
        return -1;
    c->ws->nodes[idx].child = first;
    for (uint32_t i = 0; i < n; i++) {
        avro_schema_t sub =
            record ? avro_schema_record_field_get_by_index(s, (int)i)
                   : avro_schema_union_branch(s, (int)i);
        if (sub == NULL || wcompile(c, sub, &child) != 0)
            return -1;
        c->ws->kids[first + i] = child;
    }
    return 0;
}

static int wcompile_complex(ps_wcompile *c, avro_schema_t s, uint32_t *out)
{
    ps_wschema *ws = c->ws;
    uint32_t child;

    switch (avro_typeof(s)) {
    case AVRO_FIXED: {
        int64_t size = avro_schema_fixed_size(s);
        if (size < 0 || size > UINT32_MAX)
            return -1;
        return wcompile_push(ws, W_FIXED, (uint32_t)size, out) ||
               wcompile_memo(c, s, *out);
    }
    case AVRO_ENUM: {
        int n = avro_schema_enum_number_of_symbols(s);
        return n < 0 || wcompile_push(ws, W_ENUM, (uint32_t)n, out) ||
               wcompile_memo(c, s, *out);
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        bool array = avro_typeof(s) == AVRO_ARRAY;
        if (wcompile_push(ws, array ? W_ARRAY : W_MAP, 0, out) != 0 ||
            wcompile(c, array ? avro_schema_array_items(s)
                              : avro_schema_map_values(s), &child) != 0)
            return -1;
        ws->nodes[*out].child = child;
        return 0;
    }
    case AVRO_UNION: {
        uint32_t n = (uint32_t)avro_schema_union_size(s);
        return wcompile_push(ws, W_UNION, n, out) ||
               wcompile_children(c, s, *out, n, false);
    }
    case AVRO_RECORD: {
        uint32_t n = (uint32_t)avro_schema_record_size(s);
        return wcompile_push(ws, W_RECORD, n, out) ||
               wcompile_memo(c, s, *out) ||
               wcompile_children(c, s, *out, n, true);
    }
    default:
        return -1;
    }
}

/* Compile s (and what it contains) into nodes; its node index in *out. */
static int wcompile(ps_wcompile *c, avro_schema_t s, uint32_t *out)
{
    static const ps_wkind prim[] = {
        [AVRO_STRING] = W_BYTES, [AVRO_BYTES] = W_BYTES,
        [AVRO_INT32] = W_INT,    [AVRO_INT64] = W_LONG,
        [AVRO_FLOAT] = W_FLOAT,  [AVRO_DOUBLE] = W_DOUBLE,
        [AVRO_BOOLEAN] = W_BOOL, [AVRO_NULL] = W_NULL};
    int rc;

    s = schema_target(s);
    if (s == NULL || c->depth >= 64)
        return -1;
    for (size_t i = 0; i < c->n_memo; i++) {
        if (c->memo_schema[i] == s) {
            *out = c->memo_node[i];
            return 0;
        }
    }
    switch (avro_typeof(s)) {
    case AVRO_STRING: case AVRO_BYTES: case AVRO_INT32: case AVRO_INT64:
    case AVRO_FLOAT: case AVRO_DOUBLE: case AVRO_BOOLEAN: case AVRO_NULL:
        return wcompile_push(c->ws, prim[avro_typeof(s)], 0, out);
    default:
        c->depth++;
        rc = wcompile_complex(c, s, out);
        c->depth--;
        return rc;
    }
}

/* ------------------------------------------------------------------------
 * Walking a record: the bounds check before avro-c reads it
 */

typedef struct ps_walk {
    const uint8_t *p, *end;
    uint64_t items_left; /* array/map items allowed in this message */
    char *detail;
    size_t detail_size;
} ps_walk;

static int walk_fail(ps_walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int walk_fail(ps_walk *w, const char *fmt, ...)
{
    va_list ap;

    if (w->detail != NULL && w->detail_size > 0) {
        va_start(ap, fmt);
        vsnprintf(w->detail, w->detail_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A zigzag varint as avro-c reads it: at most 10 bytes. */
static int walk_long(ps_walk *w, int64_t *out)
{
    uint64_t v = 0;

    for (int i = 0; i < 10; i++) {
        if (w->p == w->end)
            return walk_fail(w, "Avro record is truncated");
        uint8_t b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return walk_fail(w, "Avro varint longer than 10 bytes");
}

static int walk_skip(ps_walk *w, uint64_t n)
{
    if (n > (uint64_t)(w->end - w->p))
        return walk_fail(w, "Avro record is truncated");
    w->p += n;
    return 0;
}

/* string, bytes, map key: a length and that many bytes. */
static int walk_bytes(ps_walk *w)
{
    int64_t len = 0;

    if (walk_long(w, &len) != 0)
        return -1;
    if (len < 0)
        return walk_fail(w, "Avro length %" PRId64 " is negative", len);
    if ((uint64_t)len > (uint64_t)(w->end - w->p))
        return walk_fail(w, "Avro length %" PRId64 " exceeds the %zu bytes"
                         " left", len, (size_t)(w->end - w->p));
    w->p += len;
    return 0;
}

/* An index (enum symbol, union branch) in 0..n-1. */
static int walk_index(ps_walk *w, uint32_t n, const char *what,
                      uint32_t *out)
{
    int64_t i = 0;

    if (walk_long(w, &i) != 0)
        return -1;
    if (i < 0 || i >= (int64_t)n)
        return walk_fail(w, "Avro %s index %" PRId64 " is out of range"
                         " (%" PRIu32 " symbols or branches)", what, i, n);
    *out = (uint32_t)i;
    return 0;
}

static int walk_node(const ps_wschema *ws, uint32_t i, ps_walk *w,
                     int depth);

/* Array or map blocks: count (negative: count then byte size), items. */
static int walk_blocks(const ps_wschema *ws, const ps_wnode *node,
                       ps_walk *w, int depth)
{
    int64_t count = 0, size = 0;

    for (;;) {
        if (walk_long(w, &count) != 0)
            return -1;
        if (count == 0)
            return 0;
        if (count < 0) {
            if (count == INT64_MIN || walk_long(w, &size) != 0)
                return walk_fail(w, "Avro block count is invalid");
            count = -count;
        }
        if ((uint64_t)count > w->items_left)
            return walk_fail(w, "Avro block of %" PRId64 " items is larger"
                             " than the message", count);
        w->items_left -= (uint64_t)count;
        for (int64_t k = 0; k < count; k++) {
            if (node->kind == W_MAP && walk_bytes(w) != 0)
                return -1;
            if (walk_node(ws, node->child, w, depth + 1) != 0)
                return -1;
        }
    }
}

static int walk_node(const ps_wschema *ws, uint32_t i, ps_walk *w, int depth)
{
    const ps_wnode *node = &ws->nodes[i];
    uint32_t k = 0;
    int64_t v = 0;

    if (depth > PS_WALK_DEPTH_MAX)
        return walk_fail(w, "Avro record nests deeper than %d",
                         PS_WALK_DEPTH_MAX);
    switch ((ps_wkind)node->kind) {
    case W_NULL: return 0;
    case W_BOOL: return walk_skip(w, 1);
    case W_FLOAT: return walk_skip(w, 4);
    case W_DOUBLE: return walk_skip(w, 8);
    case W_FIXED: return walk_skip(w, node->n);
    case W_BYTES: return walk_bytes(w);
    case W_LONG: return walk_long(w, &v);
    case W_INT:
        if (walk_long(w, &v) != 0)
            return -1;
        if (v < INT32_MIN || v > INT32_MAX)
            return walk_fail(w, "Avro int %" PRId64 " is out of range", v);
        return 0;
    case W_ENUM: return walk_index(w, node->n, "enum", &k);
    case W_ARRAY:
    case W_MAP: return walk_blocks(ws, node, w, depth);
    case W_UNION:
        if (walk_index(w, node->n, "union", &k) != 0)
            return -1;
        return walk_node(ws, ws->kids[node->child + k], w, depth + 1);
    case W_RECORD:
        for (k = 0; k < node->n; k++) {
            if (walk_node(ws, ws->kids[node->child + k], w, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    return walk_fail(w, "Avro schema node is invalid");
}

/* 0 when p[0..len) is exactly one record of ws's schema. */
static int ps_wschema_walk(const ps_wschema *ws, const uint8_t *p, size_t len,
                           char *detail, size_t detail_size)
{
    ps_walk w = {.p = p, .end = p + len, .items_left = len,
                 .detail = detail, .detail_size = detail_size};

    if (walk_node(ws, 0, &w, 0) != 0)
        return -1;
    if (w.p != w.end)
        return walk_fail(&w, "%zu trailing bytes after the Avro record",
                         (size_t)(w.end - w.p));
    return 0;
}

/* ------------------------------------------------------------------------
 * Writer schema objects
 */

static void ps_wschema_destroy(ps_wschema *ws)
{
    if (ws == NULL)
        return;
    if (ws->has_value)
        avro_value_decref(&ws->value);
    if (ws->iface != NULL)
        avro_value_iface_decref(ws->iface);
    if (ws->schema != NULL)
        avro_schema_decref(ws->schema);
    free(ws->type_map);
    free(ws->nodes);
    free(ws->kids);
    free(ws);
}

/* The enum of the writer's `type` field (itself, or a union branch). */
static int ps_wschema_map_type(ps_wschema *ws, avro_schema_t field)
{
    avro_schema_t e = schema_target(field);

    if (e != NULL && avro_typeof(e) == AVRO_UNION) {
        avro_schema_t u = e;
        e = NULL;
        for (size_t b = 0; b < avro_schema_union_size(u) && e == NULL; b++) {
            avro_schema_t br = schema_target(avro_schema_union_branch(u, b));
            if (br != NULL && avro_typeof(br) == AVRO_ENUM)
                e = br;
        }
    }
    if (e == NULL || avro_typeof(e) != AVRO_ENUM)
        return 0; /* every record will be wrong_type */
    ws->type_enum = e;
    ws->type_map_len = avro_schema_enum_number_of_symbols(e);
    ws->type_map = calloc((size_t)ws->type_map_len + 1, 1);
    if (ws->type_map == NULL)
        return -1;
    for (int s = 0; s < ws->type_map_len; s++)
        ws->type_map[s] = (int8_t)symbol_type(avro_schema_enum_get(e, s));
    return 0;
}

/* Reader field -> writer field index, by name; notes a missing required. */
static int ps_wschema_map_fields(ps_wschema *ws)
{
    for (int f = 0; f < F_COUNT; f++) {
        ws->field[f] =
            avro_schema_record_field_get_index(ws->schema,
                                               reader_fields[f].name);
        if (ws->field[f] < 0 && !reader_fields[f].optional &&
            ws->missing == NULL)
            ws->missing = reader_fields[f].name;
    }
    if (ws->field[F_TYPE] < 0)
        return 0;
    return ps_wschema_map_type(
        ws, avro_schema_record_field_get_by_index(ws->schema,
                                                  ws->field[F_TYPE]));
}

static int ps_wschema_compile(ps_wschema *ws)
{
    ps_wcompile c = {.ws = ws};
    uint32_t root;
    int rc = wcompile(&c, ws->schema, &root);

    free(c.memo_schema);
    free(c.memo_node);
    return rc;
}

/* A writer schema object for schema (a new reference is taken). */
static ps_wschema *ps_wschema_new(avro_schema_t schema, char *errstr,
                                  size_t errstr_size)
{
    ps_wschema *ws = calloc(1, sizeof(*ws));

    if (ws == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        return NULL;
    }
    ws->schema = avro_schema_incref(schema);
    if (avro_typeof(schema_target(schema)) != AVRO_RECORD) {
        ps_set_err(errstr, errstr_size, "schema is not a record");
        goto fail;
    }
    if (ps_wschema_compile(ws) != 0 || ps_wschema_map_fields(ws) != 0) {
        ps_set_err(errstr, errstr_size, "schema cannot be compiled");
        goto fail;
    }
    ws->iface = avro_generic_class_from_schema(schema);
    if (ws->iface == NULL ||
        avro_generic_value_new(ws->iface, &ws->value) != 0) {
        ps_set_err(errstr, errstr_size, "avro-c: %s", avro_strerror());
        goto fail;
    }
    ws->has_value = true;
    return ws;
fail:
    ps_wschema_destroy(ws);
    return NULL;
}

/* Read and parse schema_dir/<id>.avsc; NULL with errstr when it cannot.
 * *no_file tells "there is no such file" from "the file is unusable". */
static ps_wschema *ps_wschema_load(const char *dir, uint32_t id,
                                   bool *no_file, char *errstr,
                                   size_t errstr_size)
{
    char path[4096];
    avro_schema_t schema;
    ps_wschema *ws = NULL;
    char *text = NULL;
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%" PRIu32 ".avsc", dir, id);
    *no_file = (f = fopen(path, "rb")) == NULL;
    if (f == NULL) {
        ps_set_err(errstr, errstr_size, "no file %s", path);
        return NULL;
    }
    if ((text = malloc(PS_SCHEMA_FILE_MAX)) == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        goto done;
    }
    n = fread(text, 1, PS_SCHEMA_FILE_MAX, f);
    if (n == PS_SCHEMA_FILE_MAX) {
        ps_set_err(errstr, errstr_size, "%s is too large", path);
    } else if (avro_schema_from_json_length(text, n, &schema) != 0) {
        ps_set_err(errstr, errstr_size, "%s: %s", path, avro_strerror());
    } else {
        ws = ps_wschema_new(schema, errstr, errstr_size);
        avro_schema_decref(schema);
    }
done:
    free(text);
    fclose(f);
    return ws;
}

/* ------------------------------------------------------------------------
 * Schema id cache
 */

static ps_schema_slot *ps_decoder_slot(ps_decoder *dec, uint32_t id)
{
    uint32_t mask = PS_SCHEMA_SLOTS - 1;
    uint32_t i = ((id * UINT32_C(2654435761)) >> 20) & mask;

    while (dec->slots[i].state != SLOT_EMPTY && dec->slots[i].id != id)
        i = (i + 1) & mask;
    return &dec->slots[i];
}

/* Load id into an empty slot, or remember it as unknown. */
static ps_bad_reason ps_decoder_schema_load(ps_decoder *dec,
                                            ps_schema_slot *slot,
                                            uint32_t id, char *detail,
                                            size_t detail_size)
{
    char why[512] = "no schema directory";
    bool no_file = true;
    ps_wschema *ws = NULL;

    if (dec->n_known >= PS_SCHEMA_CACHE_MAX) {
        ps_set_err(detail, detail_size, "schema id %" PRIu32 " is unknown"
                   " (schema cache full)", id);
        return PS_BAD_UNKNOWN_SCHEMA;
    }
    if (dec->schema_dir != NULL)
        ws = ps_wschema_load(dec->schema_dir, id, &no_file, why,
                             sizeof(why));
    if (ws == NULL && no_file && id == 1)
        ws = dec->plain;
    if (ws != NULL) {
        *slot = (ps_schema_slot){.id = id, .state = SLOT_KNOWN, .ws = ws};
        dec->n_known++;
        return PS_BAD_NONE;
    }
    if (dec->n_unknown < PS_SCHEMA_CACHE_MAX) {
        *slot = (ps_schema_slot){.id = id, .state = SLOT_UNKNOWN};
        dec->n_unknown++;
    }
    ps_set_err(detail, detail_size, "schema id %" PRIu32 " is unknown (%s)",
               id, why);
    return PS_BAD_UNKNOWN_SCHEMA;
}

static ps_bad_reason ps_decoder_schema(ps_decoder *dec, uint32_t id,
                                       ps_wschema **ws, char *detail,
                                       size_t detail_size)
{
    ps_schema_slot *slot = ps_decoder_slot(dec, id);

    if (slot->state == SLOT_KNOWN) {
        *ws = slot->ws;
        return PS_BAD_NONE;
    }
    if (slot->state == SLOT_UNKNOWN) {
        ps_set_err(detail, detail_size, "schema id %" PRIu32 " is unknown",
                   id);
        return PS_BAD_UNKNOWN_SCHEMA;
    }
    if (ps_decoder_schema_load(dec, slot, id, detail, detail_size) !=
        PS_BAD_NONE)
        return PS_BAD_UNKNOWN_SCHEMA;
    *ws = slot->ws;
    return PS_BAD_NONE;
}

/* ------------------------------------------------------------------------
 * Avro records to events
 */

static const char *avro_type_name(avro_type_t t)
{
    switch (t) {
    case AVRO_STRING: return "string";
    case AVRO_BYTES: return "bytes";
    case AVRO_INT32: return "int";
    case AVRO_INT64: return "long";
    case AVRO_FLOAT: return "float";
    case AVRO_DOUBLE: return "double";
    case AVRO_BOOLEAN: return "boolean";
    case AVRO_NULL: return "null";
    case AVRO_ENUM: return "enum";
    case AVRO_FIXED: return "fixed";
    case AVRO_MAP: return "map";
    case AVRO_ARRAY: return "array";
    case AVRO_RECORD: return "record";
    default: return "complex";
    }
}

/* Reader field f of the record just read, through a union: 1 present,
 * 0 absent or null, -1 on an avro-c error. */
static int avro_field(ps_wschema *ws, int f, avro_value_t *out)
{
    avro_value_t branch;

    if (ws->field[f] < 0)
        return 0;
    if (avro_value_get_by_index(&ws->value, (size_t)ws->field[f], out,
                                NULL) != 0)
        return -1;
    if (avro_value_get_type(out) == AVRO_UNION) {
        if (avro_value_get_current_branch(out, &branch) != 0)
            return -1;
        *out = branch;
    }
    return avro_value_get_type(out) == AVRO_NULL ? 0 : 1;
}

static ps_bad_reason avro_wrong(avro_value_t *v, int f, const char *want,
                                char *detail, size_t detail_size)
{
    ps_set_err(detail, detail_size, "%s is Avro %s, not %s",
               reader_fields[f].name,
               avro_type_name(avro_value_get_type(v)), want);
    return PS_BAD_WRONG_TYPE;
}

static ps_bad_reason avro_broken(char *detail, size_t detail_size)
{
    ps_set_err(detail, detail_size, "avro-c: %s", avro_strerror());
    return PS_BAD_UNDECODABLE;
}

/* string or bytes; absent/null leaves s->ptr NULL (validate decides). */
static ps_bad_reason avro_get_str(ps_wschema *ws, int f, ps_str *s,
                                  char *detail, size_t detail_size)
{
    avro_value_t v;
    const void *p = NULL;
    size_t size = 0;
    int rc = avro_field(ws, f, &v);

    *s = (ps_str){NULL, 0};
    if (rc <= 0)
        return rc < 0 ? avro_broken(detail, detail_size) : PS_BAD_NONE;
    if (avro_value_get_type(&v) == AVRO_STRING) {
        const char *str;
        rc = avro_value_get_string(&v, &str, &size);
        p = str;
        size = size > 0 ? size - 1 : 0; /* avro-c counts the NUL */
    } else if (avro_value_get_type(&v) == AVRO_BYTES) {
        rc = avro_value_get_bytes(&v, &p, &size);
    } else {
        return avro_wrong(&v, f, "string", detail, detail_size);
    }
    if (rc != 0)
        return avro_broken(detail, detail_size);
    *s = (ps_str){p != NULL ? (const char *)p : "", (uint32_t)
                  (size > UINT32_MAX ? UINT32_MAX : size)};
    return PS_BAD_NONE;
}

/* long, or int promoted. */
static ps_bad_reason avro_get_long(ps_wschema *ws, int f, int64_t *out,
                                   bool *present, char *detail,
                                   size_t detail_size)
{
    avro_value_t v;
    int32_t i = 0;
    int rc = avro_field(ws, f, &v);

    *present = rc > 0;
    *out = 0;
    if (rc <= 0)
        return rc < 0 ? avro_broken(detail, detail_size) : PS_BAD_NONE;
    switch (avro_value_get_type(&v)) {
    case AVRO_INT64: rc = avro_value_get_long(&v, out); break;
    case AVRO_INT32: rc = avro_value_get_int(&v, &i); *out = i; break;
    default: return avro_wrong(&v, f, "long", detail, detail_size);
    }
    return rc != 0 ? avro_broken(detail, detail_size) : PS_BAD_NONE;
}

/* double, or int/long/float promoted. */
static ps_bad_reason avro_get_double(ps_wschema *ws, int f, double *out,
                                     bool *present, char *detail,
                                     size_t detail_size)
{
    avro_value_t v;
    int32_t i;
    int64_t l;
    float fl;
    int rc = avro_field(ws, f, &v);

    *present = rc > 0;
    *out = 0;
    if (rc <= 0)
        return rc < 0 ? avro_broken(detail, detail_size) : PS_BAD_NONE;
    switch (avro_value_get_type(&v)) {
    case AVRO_DOUBLE: rc = avro_value_get_double(&v, out); break;
    case AVRO_FLOAT: rc = avro_value_get_float(&v, &fl); *out = fl; break;
    case AVRO_INT64: rc = avro_value_get_long(&v, &l); *out = (double)l;
        break;
    case AVRO_INT32: rc = avro_value_get_int(&v, &i); *out = i; break;
    default: return avro_wrong(&v, f, "double", detail, detail_size);
    }
    return rc != 0 ? avro_broken(detail, detail_size) : PS_BAD_NONE;
}

/* The writer's enum symbol, mapped by name to ps_event_type. */
static ps_bad_reason avro_get_type(ps_wschema *ws, ps_event_type *type,
                                   char *detail, size_t detail_size)
{
    avro_value_t v;
    int sym, t = -1;
    int rc = avro_field(ws, F_TYPE, &v);

    if (rc < 0)
        return avro_broken(detail, detail_size);
    if (rc == 0) {
        ps_set_err(detail, detail_size, "type is null");
        return PS_BAD_MISSING_FIELD;
    }
    if (avro_value_get_type(&v) != AVRO_ENUM)
        return avro_wrong(&v, F_TYPE, "enum", detail, detail_size);
    if (avro_value_get_enum(&v, &sym) != 0)
        return avro_broken(detail, detail_size);
    /* the mapped enum by index; another enum of a union by name */
    avro_schema_t e = schema_target(avro_value_get_schema(&v));
    const char *name = e != NULL ? avro_schema_enum_get(e, sym) : NULL;
    if (e == ws->type_enum && sym >= 0 && sym < ws->type_map_len)
        t = ws->type_map[sym];
    else
        t = symbol_type(name);
    if (t < 0) {
        char shown[PS_DETAIL_SYMBOL_MAX + 1];
        printable(name ? name : "?", name ? strlen(name) : 1, shown,
                  sizeof(shown));
        ps_set_err(detail, detail_size, "type %s is not an event type",
                   shown);
        return PS_BAD_WRONG_TYPE;
    }
    *type = (ps_event_type)t;
    return PS_BAD_NONE;
}

/* The reader fields of ws->value into ev; *signup: signup_ts was given. */
static ps_bad_reason avro_get_fields(ps_wschema *ws, ps_event *ev,
                                     bool *signup, char *detail,
                                     size_t detail_size)
{
    ps_bad_reason r;
    bool ts_present;

    if ((r = avro_get_str(ws, F_EVENT_ID, &ev->event_id, detail,
                          detail_size)) != PS_BAD_NONE ||
        (r = avro_get_str(ws, F_CUSTOMER_ID, &ev->customer_id, detail,
                          detail_size)) != PS_BAD_NONE ||
        (r = avro_get_type(ws, &ev->type, detail, detail_size)) !=
            PS_BAD_NONE ||
        (r = avro_get_str(ws, F_PRODUCT_ID, &ev->product_id, detail,
                          detail_size)) != PS_BAD_NONE ||
        (r = avro_get_double(ws, F_AMOUNT, &ev->amount, &ev->has_amount,
                             detail, detail_size)) != PS_BAD_NONE ||
        (r = avro_get_long(ws, F_TS, &ev->ts, &ts_present, detail,
                           detail_size)) != PS_BAD_NONE ||
        (r = avro_get_long(ws, F_SIGNUP_TS, &ev->signup_ts, signup, detail,
                           detail_size)) != PS_BAD_NONE ||
        (r = avro_get_str(ws, F_CAMPAIGN, &ev->campaign, detail,
                          detail_size)) != PS_BAD_NONE)
        return r;
    if (!ts_present) {
        ps_set_err(detail, detail_size, "ts is null");
        return PS_BAD_MISSING_FIELD;
    }
    return PS_BAD_NONE;
}

static ps_bad_reason ps_decoder_avro(ps_decoder *dec, ps_wschema *ws,
                                     uint32_t id, const uint8_t *p,
                                     size_t len, ps_event *ev, bool *signup,
                                     char *detail, size_t detail_size)
{
    if (ws->missing != NULL) {
        ps_set_err(detail, detail_size, "writer schema %" PRIu32 " has no"
                   " field %s", id, ws->missing);
        return PS_BAD_MISSING_FIELD;
    }
    if (ps_wschema_walk(ws, p, len, detail, detail_size) != 0)
        return PS_BAD_UNDECODABLE;
    avro_reader_memory_set_source(dec->areader, (const char *)p,
                                  (int64_t)len);
    if (avro_value_read(dec->areader, &ws->value) != 0)
        return avro_broken(detail, detail_size);
    return avro_get_fields(ws, ev, signup, detail, detail_size);
}

static ps_bad_reason ps_decoder_confluent(ps_decoder *dec, const uint8_t *p,
                                          size_t len, ps_event *ev,
                                          bool *signup, char *detail,
                                          size_t detail_size)
{
    uint32_t id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 |
                  (uint32_t)p[3] << 8 | (uint32_t)p[4];
    ps_wschema *ws = NULL;
    ps_bad_reason r = ps_decoder_schema(dec, id, &ws, detail, detail_size);

    if (r != PS_BAD_NONE)
        return r;
    return ps_decoder_avro(dec, ws, id, p + 5, len - 5, ev, signup, detail,
                           detail_size);
}

/* ------------------------------------------------------------------------
 * JSON objects to events
 */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Member name of obj, NULL when absent or null. */
static json_t *json_field(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    return json_is_null(v) ? NULL : v;
}

static ps_bad_reason json_wrong(const char *name, const char *want,
                                const json_t *v, char *detail,
                                size_t detail_size)
{
    ps_set_err(detail, detail_size, "%s must be %s, not %s", name, want,
               json_type_name(v));
    return PS_BAD_WRONG_TYPE;
}

/* A string member; absent/null leaves s->ptr NULL (validate decides). */
static ps_bad_reason json_get_str(json_t *obj, const char *name, ps_str *s,
                                  char *detail, size_t detail_size)
{
    json_t *v = json_field(obj, name);
    size_t len;

    *s = (ps_str){NULL, 0};
    if (v == NULL)
        return PS_BAD_NONE;
    if (!json_is_string(v))
        return json_wrong(name, "a string", v, detail, detail_size);
    len = json_string_length(v);
    *s = (ps_str){json_string_value(v),
                  (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len)};
    return PS_BAD_NONE;
}

static ps_bad_reason json_get_type(json_t *obj, ps_event_type *type,
                                   char *detail, size_t detail_size)
{
    json_t *v = json_field(obj, "type");
    char shown[PS_DETAIL_SYMBOL_MAX + 1];

    if (v == NULL) {
        ps_set_err(detail, detail_size, "type is missing");
        return PS_BAD_MISSING_FIELD;
    }
    if (!json_is_string(v))
        return json_wrong("type", "a string", v, detail, detail_size);
    if (ps_event_type_parse(json_string_value(v), json_string_length(v),
                            type) != 0) {
        printable(json_string_value(v), json_string_length(v), shown,
                  sizeof(shown));
        ps_set_err(detail, detail_size, "type \"%s\" is not an event type",
                   shown);
        return PS_BAD_WRONG_TYPE;
    }
    return PS_BAD_NONE;
}

/* Milliseconds: an integer, or a real with an integral value. */
static ps_bad_reason json_get_ms(json_t *obj, const char *name,
                                 int64_t *out, bool *present, char *detail,
                                 size_t detail_size)
{
    json_t *v = json_field(obj, name);

    *out = 0;
    *present = v != NULL;
    if (v == NULL)
        return PS_BAD_NONE;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return PS_BAD_NONE;
    }
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        fabs(json_real_value(v)) < 9.2e18) {
        *out = (int64_t)json_real_value(v);
        return PS_BAD_NONE;
    }
    return json_wrong(name, "an integer", v, detail, detail_size);
}

static ps_bad_reason json_get_amount(json_t *obj, ps_event *ev,
                                     char *detail, size_t detail_size)
{
    json_t *v = json_field(obj, "amount");

    ev->has_amount = v != NULL;
    ev->amount = 0;
    if (v == NULL)
        return PS_BAD_NONE;
    if (!json_is_number(v))
        return json_wrong("amount", "a number", v, detail, detail_size);
    ev->amount = json_number_value(v);
    return PS_BAD_NONE;
}

static ps_bad_reason json_get_fields(json_t *obj, ps_event *ev, bool *signup,
                                     char *detail, size_t detail_size)
{
    ps_bad_reason r;
    bool ts_present;

    if ((r = json_get_str(obj, "event_id", &ev->event_id, detail,
                          detail_size)) != PS_BAD_NONE ||
        (r = json_get_str(obj, "customer_id", &ev->customer_id, detail,
                          detail_size)) != PS_BAD_NONE ||
        (r = json_get_type(obj, &ev->type, detail, detail_size)) !=
            PS_BAD_NONE ||
        (r = json_get_str(obj, "product_id", &ev->product_id, detail,
                          detail_size)) != PS_BAD_NONE ||
        (r = json_get_amount(obj, ev, detail, detail_size)) !=
            PS_BAD_NONE ||
        (r = json_get_ms(obj, "ts", &ev->ts, &ts_present, detail,
                         detail_size)) != PS_BAD_NONE ||
        (r = json_get_ms(obj, "signup_ts", &ev->signup_ts, signup, detail,
                         detail_size)) != PS_BAD_NONE ||
        (r = json_get_str(obj, "campaign", &ev->campaign, detail,
                          detail_size)) != PS_BAD_NONE)
        return r;
    if (!ts_present) {
        ps_set_err(detail, detail_size, "ts is missing");
        return PS_BAD_MISSING_FIELD;
    }
    return PS_BAD_NONE;
}

static ps_bad_reason ps_decoder_json(ps_decoder *dec, const char *p,
                                     size_t len, ps_event *ev, bool *signup,
                                     char *detail, size_t detail_size)
{
    json_error_t err;

    dec->json = json_loadb(p, len, JSON_REJECT_DUPLICATES, &err);
    if (dec->json == NULL) {
        ps_set_err(detail, detail_size, "invalid JSON at byte %d: %s",
                   err.position, err.text);
        return PS_BAD_UNDECODABLE;
    }
    if (!json_is_object(dec->json)) {
        ps_set_err(detail, detail_size, "JSON payload is not an object");
        return PS_BAD_UNDECODABLE;
    }
    return json_get_fields(dec->json, ev, signup, detail, detail_size);
}

/* ------------------------------------------------------------------------
 * The decoder
 */

/* schemas/event.avsc must hold the fields reader_fields[] names. */
static int ps_decoder_check_reader(avro_schema_t reader, char *errstr,
                                   size_t errstr_size)
{
    for (int f = 0; f < F_COUNT; f++) {
        avro_schema_t s =
            schema_target(avro_schema_record_field_get(reader,
                                                       reader_fields[f].name));
        if (s == NULL ||
            (avro_typeof(s) == AVRO_UNION) != reader_fields[f].optional) {
            ps_set_err(errstr, errstr_size, "reader schema: field %s is"
                       " missing or of an unexpected type",
                       reader_fields[f].name);
            return -1;
        }
    }
    return 0;
}

ps_decoder *ps_decoder_new(const char *schema_dir, char *errstr,
                           size_t errstr_size)
{
    const char *json = ps_event_schema_json();
    ps_decoder *dec = calloc(1, sizeof(*dec));

    if (dec == NULL)
        goto nomem;
    if (schema_dir != NULL && (dec->schema_dir = strdup(schema_dir)) == NULL)
        goto nomem;
    if (avro_schema_from_json_length(json, strlen(json), &dec->reader) != 0) {
        ps_set_err(errstr, errstr_size, "reader schema: %s", avro_strerror());
        goto fail;
    }
    if (avro_typeof(dec->reader) != AVRO_RECORD ||
        ps_decoder_check_reader(dec->reader, errstr, errstr_size) != 0)
        goto fail;
    if ((dec->plain = ps_wschema_new(dec->reader, errstr,
                                     errstr_size)) == NULL)
        goto fail;
    dec->areader = avro_reader_memory("", 0);
    dec->slots = calloc(PS_SCHEMA_SLOTS, sizeof(*dec->slots));
    if (dec->areader == NULL || dec->slots == NULL)
        goto nomem;
    return dec;
nomem:
    ps_set_err(errstr, errstr_size, "out of memory");
fail:
    ps_decoder_destroy(dec);
    return NULL;
}

void ps_decoder_destroy(ps_decoder *dec)
{
    if (dec == NULL)
        return;
    for (size_t i = 0; dec->slots != NULL && i < PS_SCHEMA_SLOTS; i++) {
        if (dec->slots[i].state == SLOT_KNOWN &&
            dec->slots[i].ws != dec->plain)
            ps_wschema_destroy(dec->slots[i].ws);
    }
    free(dec->slots);
    ps_wschema_destroy(dec->plain);
    if (dec->areader != NULL)
        avro_reader_free(dec->areader);
    if (dec->reader != NULL)
        avro_schema_decref(dec->reader);
    json_decref(dec->json);
    free(dec->schema_dir);
    free(dec);
}

static bool payload_is_json(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' ||
                       p[i] == '\n'))
        i++;
    return i < len && p[i] == '{';
}

ps_bad_reason ps_decoder_decode(ps_decoder *dec, const void *payload,
                                size_t len, ps_event *ev, char *detail,
                                size_t detail_size)
{
    const uint8_t *p = payload;
    bool signup = false;
    ps_bad_reason r;

    memset(ev, 0, sizeof(*ev));
    json_decref(dec->json);
    dec->json = NULL;
    if (p == NULL || len == 0) {
        ps_set_err(detail, detail_size, "empty payload");
        return PS_BAD_UNDECODABLE;
    }
    if (p[0] == 0x00 && len >= 5)
        r = ps_decoder_confluent(dec, p, len, ev, &signup, detail,
                                 detail_size);
    else if (payload_is_json(p, len))
        r = ps_decoder_json(dec, payload, len, ev, &signup, detail,
                            detail_size);
    else
        r = ps_decoder_avro(dec, dec->plain, 0, p, len, ev, &signup, detail,
                            detail_size);
    if (r != PS_BAD_NONE)
        return r;
    r = ps_event_validate(ev, detail, detail_size);
    if (r == PS_BAD_NONE && signup && ev->signup_ts == 0) {
        ps_set_err(detail, detail_size, "signup_ts 0 is not positive");
        return PS_BAD_TS;
    }
    return r;
}
