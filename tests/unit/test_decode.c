/*
 * test_decode.c -- consumer/decode.c and consumer/validate.c.
 *
 * Test records are built independently of the decoder: Avro with avro-c's
 * generic values and avro_value_write (reader schema, or a test writer
 * schema from tests/data/schemas), hostile Avro bytes by hand (put_long),
 * JSON as literal text.  Expected values are written out by hand.
 *
 * Writer schemas in tests/data/schemas: 2 older (no signup_ts, campaign),
 * 3 newer (extra fields of every Avro kind, extra enum symbol REFUND),
 * 4 reordered with promotions (int ts, float amount, bytes customer_id,
 * enum symbols reordered), 5 incompatible (no customer_id), 6 not JSON,
 * 7 wrong types (string ts, nullable customer_id), 8 recursive.  There is
 * no 1.avsc, so id 1 is the embedded reader schema.
 *
 * The fuzz test and the throughput figures use a fixed-seed xorshift, so
 * every run sees the same inputs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <avro.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../consumer/decode.h"

#define SCHEMA_DIR PS_SOURCE_DIR "/tests/data/schemas"
#define BUF_MAX 8192

/* ------------------------------------------------------------------------
 * Helpers
 */

static char g_detail[256];

#define assert_close(a, b)                                                   \
    do {                                                                     \
        double a_ = (a), b_ = (b);                                           \
        if (!(fabs(a_ - b_) <= 1e-9 * (1 + fabs(b_))))                       \
            fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);              \
    } while (0)

#define assert_reason(got, want)                                             \
    do {                                                                     \
        ps_bad_reason g_ = (got), w_ = (want);                               \
        if (g_ != w_)                                                        \
            fail_msg("reason %s, expected %s (detail: %s)",                  \
                     ps_bad_reason_name(g_), ps_bad_reason_name(w_),         \
                     g_detail);                                              \
    } while (0)

static void assert_str(ps_str s, const char *want)
{
    if (want == NULL) {
        assert_null(s.ptr);
        return;
    }
    assert_non_null(s.ptr);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

static ps_decoder *new_decoder(const char *dir)
{
    char err[256] = "";
    ps_decoder *dec = ps_decoder_new(dir, err, sizeof(err));
    if (dec == NULL)
        fail_msg("ps_decoder_new: %s", err);
    return dec;
}

static ps_bad_reason decode(ps_decoder *dec, const void *p, size_t n,
                            ps_event *ev)
{
    g_detail[0] = '\0';
    return ps_decoder_decode(dec, p, n, ev, g_detail, sizeof(g_detail));
}

static ps_bad_reason decode_str(ps_decoder *dec, const char *json,
                                ps_event *ev)
{
    return decode(dec, json, strlen(json), ev);
}

/* A string of n copies of c, in one of four static slots. */
static const char *repeat(int slot, char c, size_t n)
{
    static char bufs[4][1024];
    assert_true(n < sizeof(bufs[0]));
    memset(bufs[slot], c, n);
    bufs[slot][n] = '\0';
    return bufs[slot];
}

/* xorshift64*: the same sequence on every run. */
static uint64_t g_rng = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Du;
}

/* ------------------------------------------------------------------------
 * Building Avro records with avro-c (independently of the decoder)
 */

/* An event as a producer writes it; NULL strings and !has_* are null. */
typedef struct tev {
    const char *event_id, *customer_id, *type, *product_id, *campaign;
    bool has_amount;
    double amount;
    bool has_ts;
    int64_t ts;
    bool has_signup;
    int64_t signup_ts;
    const char *ts_text; /* write ts as this string (bad writers) */
} tev;

static tev full_event(void)
{
    return (tev){.event_id = "ev-0001", .customer_id = "cust-42",
                 .type = "PURCHASE", .product_id = "sku-7",
                 .campaign = "spring", .has_amount = true, .amount = 129.5,
                 .has_ts = true, .ts = 1700000000123,
                 .has_signup = true, .signup_ts = 1690000000000};
}

static tev minimal_click(void)
{
    return (tev){.event_id = "e1", .customer_id = "c1", .type = "CLICK",
                 .product_id = "p1", .has_ts = true, .ts = 1000};
}

typedef enum { TV_NULL, TV_STR, TV_SYM, TV_NUM, TV_INT } tv_kind;
typedef struct tval {
    tv_kind kind;
    const char *s;
    double d;
    int64_t i;
} tval;

static tval tev_field(const tev *e, const char *name, bool *known)
{
    *known = true;
    if (strcmp(name, "event_id") == 0)
        return (tval){e->event_id ? TV_STR : TV_NULL, e->event_id, 0, 0};
    if (strcmp(name, "customer_id") == 0)
        return (tval){e->customer_id ? TV_STR : TV_NULL, e->customer_id, 0,
                      0};
    if (strcmp(name, "type") == 0)
        return (tval){e->type ? TV_SYM : TV_NULL, e->type, 0, 0};
    if (strcmp(name, "product_id") == 0)
        return (tval){e->product_id ? TV_STR : TV_NULL, e->product_id, 0,
                      0};
    if (strcmp(name, "campaign") == 0)
        return (tval){e->campaign ? TV_STR : TV_NULL, e->campaign, 0, 0};
    if (strcmp(name, "amount") == 0)
        return (tval){e->has_amount ? TV_NUM : TV_NULL, NULL, e->amount, 0};
    if (strcmp(name, "ts") == 0 && e->ts_text != NULL)
        return (tval){TV_STR, e->ts_text, 0, 0};
    if (strcmp(name, "ts") == 0)
        return (tval){e->has_ts ? TV_INT : TV_NULL, NULL, 0, e->ts};
    if (strcmp(name, "signup_ts") == 0)
        return (tval){e->has_signup ? TV_INT : TV_NULL, NULL, 0,
                      e->signup_ts};
    *known = false;
    return (tval){TV_NULL, NULL, 0, 0};
}

/* Some content for a field the reader does not know (every Avro kind). */
static void fill_extra(avro_value_t *v)
{
    avro_schema_t s = avro_value_get_schema(v);
    avro_value_t child;
    size_t n;

    switch (avro_value_get_type(v)) {
    case AVRO_STRING: assert_int_equal(avro_value_set_string(v, "extra"), 0);
        break;
    case AVRO_BYTES: assert_int_equal(avro_value_set_bytes(v, "\x01\x00\xff",
                                                           3), 0);
        break;
    case AVRO_INT32: assert_int_equal(avro_value_set_int(v, -7), 0); break;
    case AVRO_INT64: assert_int_equal(avro_value_set_long(v, 1LL << 40), 0);
        break;
    case AVRO_FLOAT: assert_int_equal(avro_value_set_float(v, 1.5f), 0);
        break;
    case AVRO_DOUBLE: assert_int_equal(avro_value_set_double(v, -2.25), 0);
        break;
    case AVRO_BOOLEAN: assert_int_equal(avro_value_set_boolean(v, 1), 0);
        break;
    case AVRO_NULL: assert_int_equal(avro_value_set_null(v), 0); break;
    case AVRO_ENUM: assert_int_equal(avro_value_set_enum(v, 0), 0); break;
    case AVRO_FIXED: {
        char bytes[64] = "abcdefgh";
        int64_t size = avro_schema_fixed_size(s);
        assert_true(size <= 64);
        assert_int_equal(avro_value_set_fixed(v, bytes, (size_t)size), 0);
        break;
    }
    case AVRO_ARRAY:
        for (int k = 0; k < 2; k++) {
            assert_int_equal(avro_value_append(v, &child, NULL), 0);
            fill_extra(&child);
        }
        break;
    case AVRO_MAP:
        assert_int_equal(avro_value_add(v, "k1", &child, NULL, NULL), 0);
        fill_extra(&child);
        assert_int_equal(avro_value_add(v, "k2", &child, NULL, NULL), 0);
        fill_extra(&child);
        break;
    case AVRO_RECORD:
        assert_int_equal(avro_value_get_size(v, &n), 0);
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(avro_value_get_by_index(v, k, &child, NULL), 0);
            fill_extra(&child);
        }
        break;
    case AVRO_UNION:
        n = avro_schema_union_size(s);
        assert_int_equal(avro_value_set_branch(v, (int)n - 1, &child), 0);
        fill_extra(&child);
        break;
    default:
        fail_msg("unexpected Avro type");
    }
}

/* Does a value of kind k fit Avro type t (for choosing a union branch)? */
static bool tv_fits(tv_kind k, avro_type_t t)
{
    switch (k) {
    case TV_NULL: return t == AVRO_NULL;
    case TV_STR: return t == AVRO_STRING || t == AVRO_BYTES;
    case TV_SYM: return t == AVRO_ENUM;
    case TV_NUM: return t == AVRO_DOUBLE || t == AVRO_FLOAT;
    case TV_INT: return t == AVRO_INT64 || t == AVRO_INT32;
    }
    return false;
}

/* Set a known field; a union takes the first branch the value fits, else
 * its first non-null branch. */
static void set_known(avro_value_t *v, tval t)
{
    avro_schema_t s = avro_value_get_schema(v);
    avro_value_t br;

    if (avro_value_get_type(v) == AVRO_UNION) {
        int fit = -1, other = -1;
        for (size_t b = 0; b < avro_schema_union_size(s); b++) {
            avro_type_t bt = avro_typeof(avro_schema_union_branch(s, (int)b));
            if (fit < 0 && tv_fits(t.kind, bt))
                fit = (int)b;
            if (other < 0 && bt != AVRO_NULL && t.kind != TV_NULL)
                other = (int)b;
        }
        fit = fit >= 0 ? fit : other;
        assert_true(fit >= 0);
        assert_int_equal(avro_value_set_branch(v, fit, &br), 0);
        set_known(&br, t);
        return;
    }
    switch (avro_value_get_type(v)) {
    case AVRO_NULL: assert_int_equal(avro_value_set_null(v), 0); break;
    case AVRO_STRING: assert_int_equal(avro_value_set_string(v, t.s), 0);
        break;
    case AVRO_BYTES:
        assert_int_equal(avro_value_set_bytes(v, (void *)t.s, strlen(t.s)),
                         0);
        break;
    case AVRO_ENUM: {
        int sym = avro_schema_enum_get_by_name(s, t.s);
        assert_true(sym >= 0);
        assert_int_equal(avro_value_set_enum(v, sym), 0);
        break;
    }
    case AVRO_INT32: assert_int_equal(avro_value_set_int(v, (int32_t)t.i), 0);
        break;
    case AVRO_INT64: assert_int_equal(avro_value_set_long(v, t.i), 0); break;
    case AVRO_FLOAT:
        assert_int_equal(avro_value_set_float(v, (float)t.d), 0);
        break;
    case AVRO_DOUBLE: assert_int_equal(avro_value_set_double(v, t.d), 0);
        break;
    case AVRO_BOOLEAN: assert_int_equal(avro_value_set_boolean(v, 1), 0);
        break;
    default:
        fail_msg("unexpected Avro type for a known field");
    }
}

static avro_schema_t schema_from_json(const char *json)
{
    avro_schema_t s;
    if (avro_schema_from_json_length(json, strlen(json), &s) != 0)
        fail_msg("schema: %s", avro_strerror());
    return s;
}

static avro_schema_t schema_from_file(int id)
{
    char path[512], text[8192];
    snprintf(path, sizeof(path), SCHEMA_DIR "/%d.avsc", id);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return schema_from_json(text);
}

/* Avro binary of e written with schema; with Confluent framing when
 * id >= 0.  Returns the length. */
static size_t encode_avro(avro_schema_t schema, const tev *e, int64_t id,
                          uint8_t *out, size_t cap)
{
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t rec, field;
    size_t head = 0, n;
    bool known;

    assert_non_null(iface);
    assert_int_equal(avro_generic_value_new(iface, &rec), 0);
    assert_int_equal(avro_value_get_size(&rec, &n), 0);
    for (size_t k = 0; k < n; k++) {
        const char *name;
        assert_int_equal(avro_value_get_by_index(&rec, k, &field, &name), 0);
        tval t = tev_field(e, name, &known);
        if (known)
            set_known(&field, t);
        else
            fill_extra(&field);
    }
    if (id >= 0) {
        out[0] = 0;
        out[1] = (uint8_t)(id >> 24);
        out[2] = (uint8_t)(id >> 16);
        out[3] = (uint8_t)(id >> 8);
        out[4] = (uint8_t)id;
        head = 5;
    }
    avro_writer_t w = avro_writer_memory((char *)out + head,
                                         (int64_t)(cap - head));
    if (avro_value_write(w, &rec) != 0)
        fail_msg("avro_value_write: %s", avro_strerror());
    size_t len = head + (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    avro_value_decref(&rec);
    avro_value_iface_decref(iface);
    return len;
}

static avro_schema_t g_reader;
static avro_schema_t g_writer[9]; /* by id; [1] is the reader schema */

static int group_setup(void **state)
{
    (void)state;
    g_reader = schema_from_json(ps_event_schema_json());
    g_writer[1] = avro_schema_incref(g_reader);
    for (int id = 2; id <= 8; id++) {
        if (id != 6)
            g_writer[id] = schema_from_file(id);
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int id = 0; id <= 8; id++) {
        if (g_writer[id] != NULL)
            avro_schema_decref(g_writer[id]);
    }
    avro_schema_decref(g_reader);
    return 0;
}

static size_t enc_plain(const tev *e, uint8_t *out)
{
    return encode_avro(g_reader, e, -1, out, BUF_MAX);
}

static size_t enc_id(int id, const tev *e, uint8_t *out)
{
    return encode_avro(g_writer[id], e, id, out, BUF_MAX);
}

/* Raw Avro building blocks for hostile records. */
static size_t put_long(uint8_t *p, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;
    while (z & ~(uint64_t)0x7f) {
        p[n++] = (uint8_t)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    p[n++] = (uint8_t)z;
    return n;
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = put_long(p, (int64_t)strlen(s));
    memcpy(p + n, s, strlen(s));
    return n + strlen(s);
}

/* ------------------------------------------------------------------------
 * Reason names and ps_event_validate
 */

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(ps_bad_reason_name(PS_BAD_NONE), "none");
    assert_string_equal(ps_bad_reason_name(PS_BAD_UNDECODABLE),
                        "undecodable");
    assert_string_equal(ps_bad_reason_name(PS_BAD_UNKNOWN_SCHEMA),
                        "unknown_schema_id");
    assert_string_equal(ps_bad_reason_name(PS_BAD_MISSING_FIELD),
                        "missing_field");
    assert_string_equal(ps_bad_reason_name(PS_BAD_WRONG_TYPE), "wrong_type");
    assert_string_equal(ps_bad_reason_name(PS_BAD_AMOUNT), "bad_amount");
    assert_string_equal(ps_bad_reason_name(PS_BAD_ID), "bad_id");
    assert_string_equal(ps_bad_reason_name(PS_BAD_TS), "bad_ts");
    assert_string_equal(ps_bad_reason_name(PS_BAD_REASON_COUNT), "?");
}

static ps_event valid_event(void)
{
    return (ps_event){.event_id = {"e", 1}, .customer_id = {"c", 1},
                      .product_id = {"p", 1}, .type = PS_CLICK, .ts = 1};
}

static ps_bad_reason validate(const ps_event *ev)
{
    g_detail[0] = '\0';
    return ps_event_validate(ev, g_detail, sizeof(g_detail));
}

static void test_validate_ids(void **state)
{
    (void)state;
    ps_event ev = valid_event();
    char big[PS_ID_MAX + 1];
    memset(big, 'x', sizeof(big));

    assert_reason(validate(&ev), PS_BAD_NONE);
    ev.event_id = (ps_str){big, PS_ID_MAX};
    assert_reason(validate(&ev), PS_BAD_NONE);
    ev.event_id = (ps_str){big, PS_ID_MAX + 1};
    assert_reason(validate(&ev), PS_BAD_ID);
    assert_string_equal(g_detail, "event_id is 257 bytes (max 256)");
    ev = valid_event();
    ev.customer_id = (ps_str){"", 0};
    assert_reason(validate(&ev), PS_BAD_ID);
    assert_string_equal(g_detail, "customer_id is empty");
    ev.customer_id = (ps_str){NULL, 0};
    assert_reason(validate(&ev), PS_BAD_MISSING_FIELD);
    ev = valid_event();
    ev.product_id = (ps_str){big, PS_ID_MAX + 1};
    assert_reason(validate(&ev), PS_BAD_ID);
    ev = valid_event();
    ev.campaign = (ps_str){"", 0};
    assert_reason(validate(&ev), PS_BAD_ID);
    ev.campaign = (ps_str){big, PS_ID_MAX};
    assert_reason(validate(&ev), PS_BAD_NONE);
    ev.type = (ps_event_type)7;
    assert_reason(validate(&ev), PS_BAD_WRONG_TYPE);
}

static void test_validate_product_and_amount(void **state)
{
    (void)state;
    ps_event ev = valid_event();

    for (int t = PS_CLICK; t <= PS_PURCHASE; t++) {
        ev = valid_event();
        ev.type = (ps_event_type)t;
        ev.product_id = (ps_str){NULL, 0};
        assert_reason(validate(&ev), PS_BAD_MISSING_FIELD);
    }
    assert_string_equal(g_detail, "product_id is required for PURCHASE");
    ev = valid_event();
    ev.type = PS_SPEND;
    ev.product_id = (ps_str){NULL, 0};
    assert_reason(validate(&ev), PS_BAD_MISSING_FIELD); /* no amount */
    assert_string_equal(g_detail, "amount is required for SPEND");
    ev.has_amount = true;
    ev.amount = 0;
    assert_reason(validate(&ev), PS_BAD_AMOUNT);
    ev.amount = 0.01;
    assert_reason(validate(&ev), PS_BAD_NONE);
    ev.amount = -3;
    assert_reason(validate(&ev), PS_BAD_AMOUNT);
    assert_string_equal(g_detail, "amount -3 is negative");
    ev.amount = NAN;
    assert_reason(validate(&ev), PS_BAD_AMOUNT);
    ev.amount = INFINITY;
    assert_reason(validate(&ev), PS_BAD_AMOUNT);
    ev.amount = 1e12;
    assert_reason(validate(&ev), PS_BAD_NONE);
    ev.amount = 1.5e12;
    assert_reason(validate(&ev), PS_BAD_AMOUNT);
    ev = valid_event();
    ev.type = PS_PURCHASE;
    ev.has_amount = true;
    ev.amount = 0; /* a free purchase is fine */
    assert_reason(validate(&ev), PS_BAD_NONE);
}

static void test_validate_ts(void **state)
{
    (void)state;
    ps_event ev = valid_event();

    ev.ts = 0;
    assert_reason(validate(&ev), PS_BAD_TS);
    assert_string_equal(g_detail, "ts 0 is not positive");
    ev.ts = -5;
    assert_reason(validate(&ev), PS_BAD_TS);
    ev.ts = 253402300799999; /* 9999-12-31T23:59:59.999Z */
    assert_reason(validate(&ev), PS_BAD_NONE);
    ev.ts = 253402300800000;
    assert_reason(validate(&ev), PS_BAD_TS);
    ev.ts = 1;
    ev.signup_ts = -1;
    assert_reason(validate(&ev), PS_BAD_TS);
    ev.signup_ts = 253402300800000;
    assert_reason(validate(&ev), PS_BAD_TS);
    ev.signup_ts = 0; /* absent */
    assert_reason(validate(&ev), PS_BAD_NONE);
}

/* ------------------------------------------------------------------------
 * JSON
 */

static void test_json_full(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(NULL);
    ps_event ev;

    assert_reason(decode_str(dec,
        " \n\t{\"event_id\":\"ev-0001\",\"customer_id\":\"cust-42\","
        "\"type\":\"purchase\",\"product_id\":\"sku-7\",\"amount\":129.5,"
        "\"ts\":1700000000123,\"signup_ts\":1690000000000,"
        "\"campaign\":\"spring\",\"extra\":[1,{\"x\":null}]}\n", &ev),
        PS_BAD_NONE);
    assert_str(ev.event_id, "ev-0001");
    assert_str(ev.customer_id, "cust-42");
    assert_int_equal(ev.type, PS_PURCHASE);
    assert_str(ev.product_id, "sku-7");
    assert_true(ev.has_amount);
    assert_close(ev.amount, 129.5);
    assert_int_equal(ev.ts, 1700000000123);
    assert_int_equal(ev.signup_ts, 1690000000000);
    assert_str(ev.campaign, "spring");
    ps_decoder_destroy(dec);
}

static void test_json_optional(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(NULL);
    ps_event ev;

    /* absent optionals */
    assert_reason(decode_str(dec, "{\"event_id\":\"e1\",\"customer_id\":"
                             "\"c1\",\"type\":\"Click\",\"product_id\":\"p1\","
                             "\"ts\":1000}", &ev), PS_BAD_NONE);
    assert_int_equal(ev.type, PS_CLICK);
    assert_false(ev.has_amount);
    assert_int_equal(ev.signup_ts, 0);
    assert_null(ev.campaign.ptr);
    /* null optionals; SPEND without product; integer amount; real ts */
    assert_reason(decode_str(dec, "{\"event_id\":\"e2\",\"customer_id\":"
                             "\"c1\",\"type\":\"SPEND\",\"product_id\":null,"
                             "\"amount\":12,\"ts\":1000.0,\"signup_ts\":null,"
                             "\"campaign\":null}", &ev), PS_BAD_NONE);
    assert_int_equal(ev.type, PS_SPEND);
    assert_null(ev.product_id.ptr);
    assert_true(ev.has_amount);
    assert_close(ev.amount, 12.0);
    assert_int_equal(ev.ts, 1000);
    assert_int_equal(ev.signup_ts, 0);
    assert_null(ev.campaign.ptr);
    /* wishlist, lower case */
    assert_reason(decode_str(dec, "{\"event_id\":\"e3\",\"customer_id\":"
                             "\"c1\",\"type\":\"wishlist\",\"product_id\":"
                             "\"p\",\"ts\":5}", &ev), PS_BAD_NONE);
    assert_int_equal(ev.type, PS_WISHLIST);
    ps_decoder_destroy(dec);
}

typedef struct json_case {
    const char *json;
    ps_bad_reason want;
} json_case;

#define J_HEAD "{\"event_id\":\"e1\",\"customer_id\":\"c1\","

static void test_json_bad(void **state)
{
    (void)state;
    static const json_case cases[] = {
        {"{", PS_BAD_UNDECODABLE},
        {"{}x", PS_BAD_UNDECODABLE},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":1} {}",
         PS_BAD_UNDECODABLE},
        {J_HEAD "\"type\":\"CLICK\",\"type\":\"CLICK\",\"product_id\":\"p\","
         "\"ts\":1}", PS_BAD_UNDECODABLE}, /* duplicate key */
        {"{\"a\":1e999}", PS_BAD_UNDECODABLE},
        {" {\"bad\": nul}", PS_BAD_UNDECODABLE},
        /* missing required */
        {"{\"event_id\":\"e1\",\"type\":\"CLICK\",\"product_id\":\"p\","
         "\"ts\":1}", PS_BAD_MISSING_FIELD},
        {"{\"customer_id\":\"c\",\"type\":\"CLICK\",\"product_id\":\"p\","
         "\"ts\":1}", PS_BAD_MISSING_FIELD},
        {J_HEAD "\"product_id\":\"p\",\"ts\":1}", PS_BAD_MISSING_FIELD},
        {J_HEAD "\"type\":null,\"product_id\":\"p\",\"ts\":1}",
         PS_BAD_MISSING_FIELD},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\"}",
         PS_BAD_MISSING_FIELD},
        {J_HEAD "\"type\":\"CLICK\",\"ts\":1}", PS_BAD_MISSING_FIELD},
        {J_HEAD "\"type\":\"WISHLIST\",\"product_id\":null,\"ts\":1}",
         PS_BAD_MISSING_FIELD},
        {J_HEAD "\"type\":\"SPEND\",\"ts\":1}", PS_BAD_MISSING_FIELD},
        /* wrong types */
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":\"1\"}",
         PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":1.5}",
         PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":true}",
         PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"SPEND\",\"amount\":\"3\",\"ts\":1}",
         PS_BAD_WRONG_TYPE},
        {"{\"event_id\":\"e1\",\"customer_id\":42,\"type\":\"CLICK\","
         "\"product_id\":\"p\",\"ts\":1}", PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":[\"p\"],\"ts\":1}",
         PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"REFUND\",\"product_id\":\"p\",\"ts\":1}",
         PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":2,\"product_id\":\"p\",\"ts\":1}",
         PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":1,"
         "\"signup_ts\":\"x\"}", PS_BAD_WRONG_TYPE},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":1,"
         "\"campaign\":7}", PS_BAD_WRONG_TYPE},
        /* amounts */
        {J_HEAD "\"type\":\"SPEND\",\"amount\":-3,\"ts\":1}", PS_BAD_AMOUNT},
        {J_HEAD "\"type\":\"SPEND\",\"amount\":0,\"ts\":1}", PS_BAD_AMOUNT},
        {J_HEAD "\"type\":\"SPEND\",\"amount\":0.0,\"ts\":1}", PS_BAD_AMOUNT},
        {J_HEAD "\"type\":\"SPEND\",\"amount\":2e12,\"ts\":1}",
         PS_BAD_AMOUNT},
        {J_HEAD "\"type\":\"PURCHASE\",\"product_id\":\"p\",\"amount\":-0.5,"
         "\"ts\":1}", PS_BAD_AMOUNT},
        /* ids */
        {"{\"event_id\":\"\",\"customer_id\":\"c1\",\"type\":\"CLICK\","
         "\"product_id\":\"p\",\"ts\":1}", PS_BAD_ID},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"\",\"ts\":1}",
         PS_BAD_ID},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"campaign\":\"\","
         "\"ts\":1}", PS_BAD_ID},
        /* timestamps */
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":0}",
         PS_BAD_TS},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":-1}",
         PS_BAD_TS},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":1,"
         "\"signup_ts\":0}", PS_BAD_TS},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\",\"ts\":1,"
         "\"signup_ts\":-10}", PS_BAD_TS},
        {J_HEAD "\"type\":\"CLICK\",\"product_id\":\"p\","
         "\"ts\":253402300800000}", PS_BAD_TS},
    };
    ps_decoder *dec = new_decoder(NULL);
    ps_event ev;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ps_bad_reason r = decode_str(dec, cases[i].json, &ev);
        if (r != cases[i].want)
            fail_msg("case %zu %s: %s, expected %s (%s)", i, cases[i].json,
                     ps_bad_reason_name(r), ps_bad_reason_name(cases[i].want),
                     g_detail);
        assert_true(strlen(g_detail) > 0);
    }
    ps_decoder_destroy(dec);
}

static void test_json_details_and_long_ids(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(NULL);
    char json[2048];
    ps_event ev;

    snprintf(json, sizeof(json), "{\"event_id\":\"%s\",\"customer_id\":"
             "\"c\",\"type\":\"SPEND\",\"amount\":1,\"ts\":1}",
             repeat(0, 'e', 256));
    assert_reason(decode_str(dec, json, &ev), PS_BAD_NONE);
    assert_int_equal(ev.event_id.len, 256);
    snprintf(json, sizeof(json), "{\"event_id\":\"e\",\"customer_id\":"
             "\"%s\",\"type\":\"SPEND\",\"amount\":1,\"ts\":1}",
             repeat(0, 'c', 257));
    assert_reason(decode_str(dec, json, &ev), PS_BAD_ID);
    assert_string_equal(g_detail, "customer_id is 257 bytes (max 256)");
    /* a long bogus type symbol is cut in the detail */
    snprintf(json, sizeof(json), "{\"event_id\":\"e\",\"customer_id\":"
             "\"c\",\"type\":\"%s\",\"ts\":1}", repeat(0, 'Z', 300));
    assert_reason(decode_str(dec, json, &ev), PS_BAD_WRONG_TYPE);
    assert_true(strlen(g_detail) < 80);
    assert_reason(decode_str(dec, J_HEAD "\"type\":\"CLICK\",\"ts\":1}", &ev),
                  PS_BAD_MISSING_FIELD);
    assert_string_equal(g_detail, "product_id is required for CLICK");
    assert_reason(decode_str(dec, J_HEAD "\"type\":\"SPEND\",\"amount\":-3,"
                             "\"ts\":1}", &ev), PS_BAD_AMOUNT);
    assert_string_equal(g_detail, "amount -3 is negative");
    ps_decoder_destroy(dec);
}

/* ------------------------------------------------------------------------
 * Avro: reader schema, plain and Confluent-framed
 */

static void check_full(const ps_event *ev)
{
    assert_str(ev->event_id, "ev-0001");
    assert_str(ev->customer_id, "cust-42");
    assert_int_equal(ev->type, PS_PURCHASE);
    assert_str(ev->product_id, "sku-7");
    assert_true(ev->has_amount);
    assert_close(ev->amount, 129.5);
    assert_int_equal(ev->ts, 1700000000123);
    assert_int_equal(ev->signup_ts, 1690000000000);
    assert_str(ev->campaign, "spring");
}

static void test_avro_full(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    size_t n;

    n = enc_plain(&e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    check_full(&ev);
    n = enc_id(1, &e, buf); /* no 1.avsc: the embedded reader schema */
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    check_full(&ev);
    ps_decoder_destroy(dec);
    /* no schema directory at all: id 1 still works */
    dec = new_decoder(NULL);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    check_full(&ev);
    ps_decoder_destroy(dec);
}

static void test_avro_optional_null(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(NULL);
    uint8_t buf[BUF_MAX];
    tev e = minimal_click();
    ps_event ev;

    for (int framed = 0; framed < 2; framed++) {
        size_t n = framed ? enc_id(1, &e, buf) : enc_plain(&e, buf);
        assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
        assert_str(ev.event_id, "e1");
        assert_str(ev.customer_id, "c1");
        assert_int_equal(ev.type, PS_CLICK);
        assert_str(ev.product_id, "p1");
        assert_false(ev.has_amount);
        assert_int_equal(ev.ts, 1000);
        assert_int_equal(ev.signup_ts, 0);
        assert_null(ev.campaign.ptr);
    }
    /* hand-made: "e1" "c1" SPEND null 2.5 ts=1000 null null */
    uint8_t raw[64];
    size_t k = put_str(raw, "e1");
    k += put_str(raw + k, "c1");
    k += put_long(raw + k, 3);
    k += put_long(raw + k, 0);
    k += put_long(raw + k, 1);
    double d = 2.5;
    memcpy(raw + k, &d, 8); /* little-endian host */
    k += 8;
    k += put_long(raw + k, 1000);
    k += put_long(raw + k, 0);
    k += put_long(raw + k, 0);
    assert_reason(decode(dec, raw, k, &ev), PS_BAD_NONE);
    assert_int_equal(ev.type, PS_SPEND);
    assert_close(ev.amount, 2.5);
    ps_decoder_destroy(dec);
}

static void test_avro_truncated_every_prefix(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    const int ids[] = {-1, 1, 2, 3, 4};

    for (size_t w = 0; w < sizeof(ids) / sizeof(ids[0]); w++) {
        if (ids[w] == 4) { /* its ts and signup_ts are ints */
            e.ts = 1700000;
            e.signup_ts = 1600000;
        }
        size_t n = ids[w] < 0 ? enc_plain(&e, buf) : enc_id(ids[w], &e, buf);
        assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
        for (size_t k = 0; k < n; k++) {
            uint8_t *p = malloc(k ? k : 1); /* exact size, for ASan */
            memcpy(p, buf, k);
            ps_bad_reason r = decode(dec, p, k, &ev);
            free(p);
            if (r != PS_BAD_UNDECODABLE)
                fail_msg("schema %d prefix %zu/%zu: %s (%s)", ids[w], k, n,
                         ps_bad_reason_name(r), g_detail);
        }
    }
    ps_decoder_destroy(dec);
}

static void test_avro_trailing_bytes(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    size_t n = enc_plain(&e, buf);

    buf[n] = 0;
    assert_reason(decode(dec, buf, n + 1, &ev), PS_BAD_UNDECODABLE);
    assert_non_null(strstr(g_detail, "1 trailing bytes"));
    n = enc_id(3, &e, buf);
    memcpy(buf + n, "xyz", 3);
    assert_reason(decode(dec, buf, n + 3, &ev), PS_BAD_UNDECODABLE);
    ps_decoder_destroy(dec);
}

static void test_avro_hostile_lengths(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t raw[128];
    ps_event ev;
    size_t k;

    /* event_id claims 2^40 bytes */
    k = put_long(raw, (int64_t)1 << 40);
    memcpy(raw + k, "abc", 3);
    assert_reason(decode(dec, raw, k + 3, &ev), PS_BAD_UNDECODABLE);
    /* customer_id claims INT64_MAX bytes */
    k = put_str(raw, "e1");
    k += put_long(raw + k, INT64_MAX);
    assert_reason(decode(dec, raw, k + 4, &ev), PS_BAD_UNDECODABLE);
    /* negative length */
    k = put_str(raw, "e1");
    k += put_long(raw + k, -5);
    memcpy(raw + k, "abcdefgh", 8);
    assert_reason(decode(dec, raw, k + 8, &ev), PS_BAD_UNDECODABLE);
    /* the same in Confluent framing, id 1 */
    raw[0] = 0; raw[1] = 0; raw[2] = 0; raw[3] = 0; raw[4] = 1;
    k = 5 + put_long(raw + 5, (int64_t)1 << 50);
    assert_reason(decode(dec, raw, k + 2, &ev), PS_BAD_UNDECODABLE);
    /* an 11-byte varint */
    memset(raw, 0xff, 11);
    raw[11] = 0x01;
    assert_reason(decode(dec, raw, 12, &ev), PS_BAD_UNDECODABLE);
    /* enum index 9, then -1 */
    for (int sym = 0; sym < 2; sym++) {
        k = put_str(raw, "e1");
        k += put_str(raw + k, "c1");
        k += put_long(raw + k, sym ? -1 : 9);
        k += put_long(raw + k, 0);
        k += put_long(raw + k, 0);
        k += put_long(raw + k, 1000);
        k += put_long(raw + k, 0);
        k += put_long(raw + k, 0);
        assert_reason(decode(dec, raw, k, &ev), PS_BAD_UNDECODABLE);
    }
    /* union branch 5 for product_id */
    k = put_str(raw, "e1");
    k += put_str(raw + k, "c1");
    k += put_long(raw + k, 0);
    k += put_long(raw + k, 5);
    k += put_str(raw + k, "p");
    assert_reason(decode(dec, raw, k, &ev), PS_BAD_UNDECODABLE);
    ps_decoder_destroy(dec);
}

/* Schema 3's extra fields, written by hand after the reader's eight. */
static size_t head3(uint8_t *raw)
{
    size_t k = 5;
    raw[0] = 0; raw[1] = 0; raw[2] = 0; raw[3] = 0; raw[4] = 3;
    k += put_str(raw + k, "e1");
    k += put_str(raw + k, "c1");
    k += put_long(raw + k, 0);       /* CLICK */
    k += put_long(raw + k, 1);
    k += put_str(raw + k, "p1");
    k += put_long(raw + k, 0);       /* amount null */
    k += put_long(raw + k, 1000);
    k += put_long(raw + k, 0);       /* signup_ts null */
    k += put_long(raw + k, 0);       /* campaign null */
    k += put_long(raw + k, 0);       /* channel null */
    return k;
}

/* Schema 3 after the channel field: tags as a negative-count block,
 * attrs, device (build given), session. */
static size_t tail3(uint8_t *raw, size_t k, int64_t build)
{
    k += put_long(raw + k, -1);          /* tags: 1 item, byte size 2 */
    k += put_long(raw + k, 2);
    k += put_str(raw + k, "t");
    k += put_long(raw + k, 0);           /* end of tags */
    k += put_long(raw + k, 1);           /* attrs: one entry */
    k += put_str(raw + k, "k");
    k += put_long(raw + k, 7);
    k += put_long(raw + k, 0);           /* end of attrs */
    k += put_str(raw + k, "dev");        /* device.name */
    raw[k++] = 1;                        /* bot */
    memset(raw + k, 0, 12);              /* score, weight */
    k += 12;
    memcpy(raw + k, "abcd", 4);          /* hash */
    k += 4;
    k += put_str(raw + k, "");           /* raw */
    k += put_long(raw + k, build);       /* build */
    k += put_long(raw + k, 2);           /* session: string */
    k += put_str(raw + k, "s");
    return k;
}

static void test_avro_hostile_blocks(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t raw[256];
    ps_event ev;
    size_t k;

    /* tags: a block claiming 2^60 strings */
    k = head3(raw);
    k += put_long(raw + k, (int64_t)1 << 60);
    memset(raw + k, 0, 16);
    assert_reason(decode(dec, raw, k + 16, &ev), PS_BAD_UNDECODABLE);
    /* tags: negative count INT64_MIN */
    k = head3(raw);
    k += put_long(raw + k, INT64_MIN);
    memset(raw + k, 0, 16);
    assert_reason(decode(dec, raw, k + 16, &ev), PS_BAD_UNDECODABLE);
    /* a valid rest; then device.build (an int) out of range */
    for (int bad = 0; bad < 2; bad++) {
        k = tail3(raw, head3(raw), bad ? (int64_t)1 << 40 : 3);
        assert_reason(decode(dec, raw, k, &ev),
                      bad ? PS_BAD_UNDECODABLE : PS_BAD_NONE);
    }
    assert_non_null(strstr(g_detail, "int"));
    ps_decoder_destroy(dec);
}

static void test_avro_bad_values(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    ps_event ev;
    struct {
        tev e;
        ps_bad_reason want;
    } cases[24];
    int n = 0;
    tev e;

#define ADD(mod, reason)                                                     \
    do {                                                                     \
        e = full_event();                                                    \
        mod;                                                                 \
        cases[n].e = e;                                                      \
        cases[n++].want = (reason);                                          \
    } while (0)
    ADD((void)0, PS_BAD_NONE);
    ADD(e.amount = NAN, PS_BAD_AMOUNT);
    ADD(e.amount = INFINITY, PS_BAD_AMOUNT);
    ADD(e.amount = -INFINITY, PS_BAD_AMOUNT);
    ADD(e.amount = -3, PS_BAD_AMOUNT);
    ADD(e.amount = 5e12, PS_BAD_AMOUNT);
    ADD((e.type = "SPEND", e.amount = 0), PS_BAD_AMOUNT);
    ADD((e.type = "SPEND", e.has_amount = false), PS_BAD_MISSING_FIELD);
    ADD((e.type = "CLICK", e.product_id = NULL), PS_BAD_MISSING_FIELD);
    ADD(e.customer_id = "", PS_BAD_ID);
    ADD(e.customer_id = repeat(0, 'c', 257), PS_BAD_ID);
    ADD(e.event_id = repeat(1, 'e', 257), PS_BAD_ID);
    ADD(e.event_id = repeat(2, 'e', 256), PS_BAD_NONE);
    ADD(e.product_id = "", PS_BAD_ID);
    ADD(e.campaign = repeat(3, 'k', 300), PS_BAD_ID);
    ADD(e.ts = 0, PS_BAD_TS);
    ADD(e.ts = -1700000000000, PS_BAD_TS);
    ADD(e.signup_ts = 0, PS_BAD_TS);
    ADD(e.signup_ts = -1, PS_BAD_TS);
    ADD(e.has_signup = false, PS_BAD_NONE);
    ADD(e.ts = 253402300800000, PS_BAD_TS);
#undef ADD
    for (int i = 0; i < n; i++) {
        for (int framed = 0; framed < 2; framed++) {
            size_t len = framed ? enc_id(1, &cases[i].e, buf)
                                : enc_plain(&cases[i].e, buf);
            ps_bad_reason r = decode(dec, buf, len, &ev);
            if (r != cases[i].want)
                fail_msg("case %d framed %d: %s, expected %s (%s)", i,
                         framed, ps_bad_reason_name(r),
                         ps_bad_reason_name(cases[i].want), g_detail);
        }
    }
    /* an empty event_id in Confluent framing is bad_id, not framing */
    e = full_event();
    e.event_id = "";
    size_t len = enc_id(1, &e, buf);
    assert_reason(decode(dec, buf, len, &ev), PS_BAD_ID);
    assert_string_equal(g_detail, "event_id is empty");
    e = full_event();
    e.signup_ts = 0;
    len = enc_id(1, &e, buf);
    assert_reason(decode(dec, buf, len, &ev), PS_BAD_TS);
    assert_string_equal(g_detail, "signup_ts 0 is not positive");
    ps_decoder_destroy(dec);
}

/* ------------------------------------------------------------------------
 * Schema resolution and the schema cache
 */

static void test_resolution_older_writer(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    size_t n = enc_id(2, &e, buf);

    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    assert_str(ev.event_id, "ev-0001");
    assert_str(ev.customer_id, "cust-42");
    assert_int_equal(ev.type, PS_PURCHASE);
    assert_str(ev.product_id, "sku-7");
    assert_close(ev.amount, 129.5);
    assert_int_equal(ev.ts, 1700000000123);
    assert_int_equal(ev.signup_ts, 0); /* not in the writer: null */
    assert_null(ev.campaign.ptr);      /* not in the writer: null */
    /* the reader schema's own bytes are not schema 2's */
    size_t m = enc_id(1, &e, buf);
    assert_true(m > n);
    ps_decoder_destroy(dec);
}

static void test_resolution_newer_writer(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    size_t n = enc_id(3, &e, buf);

    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    check_full(&ev);
    e.type = "SPEND";
    e.product_id = NULL;
    n = enc_id(3, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    assert_int_equal(ev.type, PS_SPEND);
    e.type = "REFUND"; /* the writer's extra symbol */
    n = enc_id(3, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_WRONG_TYPE);
    assert_string_equal(g_detail, "type REFUND is not an event type");
    ps_decoder_destroy(dec);
}

static void test_resolution_reordered_promoted(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;

    e.type = "WISHLIST"; /* symbol 2 in the writer, 1 in the reader */
    e.amount = 12.25;    /* exact in float */
    e.ts = 1700000;      /* fits an int */
    e.signup_ts = 1600000;
    size_t n = enc_id(4, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    assert_str(ev.event_id, "ev-0001");
    assert_str(ev.customer_id, "cust-42"); /* bytes -> string */
    assert_int_equal(ev.type, PS_WISHLIST);
    assert_str(ev.product_id, "sku-7");
    assert_true(ev.has_amount);
    assert_close(ev.amount, 12.25);
    assert_int_equal(ev.ts, 1700000);
    assert_int_equal(ev.signup_ts, 1600000);
    assert_str(ev.campaign, "spring");
    e.type = "SPEND"; /* symbol 0 in the writer */
    e.campaign = NULL;
    e.has_signup = false;
    n = enc_id(4, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    assert_int_equal(ev.type, PS_SPEND);
    assert_null(ev.campaign.ptr);
    assert_int_equal(ev.signup_ts, 0);
    ps_decoder_destroy(dec);
}

static void test_resolution_incompatible(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    size_t n = enc_id(5, &e, buf);

    assert_reason(decode(dec, buf, n, &ev), PS_BAD_MISSING_FIELD);
    assert_string_equal(g_detail, "writer schema 5 has no field customer_id");
    /* schema 7: types are checked per record */
    e = minimal_click();
    n = enc_id(7, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    assert_int_equal(ev.ts, 1000);
    e.ts_text = "1000";
    n = enc_id(7, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_WRONG_TYPE);
    assert_string_equal(g_detail, "ts is Avro string, not long");
    e = minimal_click();
    e.has_ts = false;
    n = enc_id(7, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_MISSING_FIELD);
    assert_string_equal(g_detail, "ts is null");
    e = minimal_click();
    e.customer_id = NULL;
    n = enc_id(7, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_MISSING_FIELD);
    assert_string_equal(g_detail, "customer_id is missing");
    e = minimal_click();
    e.has_amount = true;
    n = enc_id(7, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_WRONG_TYPE);
    assert_string_equal(g_detail, "amount is Avro boolean, not double");
    ps_decoder_destroy(dec);
}

/* Why decode.c resolves schemas itself.  avro-c 1.11.1's
 * avro_resolved_reader_new() cannot fill reader fields the writer lacks:
 * with schema 2 (no signup_ts, campaign) it does not even fail cleanly, it
 * segfaults inside libavro (seen with gdb: the error path of its record
 * resolution), so it is not called here with schema 2.  It also refuses
 * bytes -> string (schema 4), which the Avro spec allows.  Printed, not
 * asserted, so a library upgrade is noticed without failing the build. */
static void test_avro_c_resolver_limit(void **state)
{
    (void)state;
    avro_value_iface_t *newer = avro_resolved_reader_new(g_writer[3],
                                                         g_reader);
    avro_value_iface_t *promo = avro_resolved_reader_new(g_writer[4],
                                                         g_reader);
    printf("avro-c resolved reader: newer writer (3) %s, bytes->string"
           " writer (4) %s\n", newer ? "supported" : "refused",
           promo ? "supported" : "refused");
    if (newer != NULL)
        avro_value_iface_decref(newer);
    if (promo != NULL)
        avro_value_iface_decref(promo);
}

static void test_unknown_schema_ids(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t raw[16] = {0, 0, 0, 0, 99, 2, 'e', 2, 'c'};
    ps_event ev;

    for (int round = 0; round < 2; round++) { /* second: from the cache */
        assert_reason(decode(dec, raw, 9, &ev), PS_BAD_UNKNOWN_SCHEMA);
        assert_non_null(strstr(g_detail, "schema id 99"));
    }
    raw[4] = 6; /* a file that is not a schema */
    assert_reason(decode(dec, raw, 9, &ev), PS_BAD_UNKNOWN_SCHEMA);
    assert_non_null(strstr(g_detail, "schema id 6"));
    raw[1] = 0xff; raw[2] = 0xff; raw[3] = 0xff; raw[4] = 0xff;
    assert_reason(decode(dec, raw, 5, &ev), PS_BAD_UNKNOWN_SCHEMA);
    assert_non_null(strstr(g_detail, "4294967295"));
    ps_decoder_destroy(dec);
    /* without a schema directory only id 1 is known */
    dec = new_decoder(NULL);
    raw[1] = 0; raw[2] = 0; raw[3] = 0; raw[4] = 2;
    assert_reason(decode(dec, raw, 9, &ev), PS_BAD_UNKNOWN_SCHEMA);
    ps_decoder_destroy(dec);
}

static void test_schema_cache_bound(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;

    for (uint32_t id = 1000; id < 4000; id++) {
        uint8_t raw[8] = {0, (uint8_t)(id >> 24), (uint8_t)(id >> 16),
                          (uint8_t)(id >> 8), (uint8_t)id, 0};
        assert_reason(decode(dec, raw, 6, &ev), PS_BAD_UNKNOWN_SCHEMA);
    }
    size_t n = enc_id(2, &e, buf); /* known ids still load */
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    n = enc_id(1, &e, buf);
    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    ps_decoder_destroy(dec);
}

static size_t put_node8(uint8_t *p, bool more)
{
    size_t k = put_str(p, "e1");
    k += put_str(p + k, "c1");
    k += put_long(p + k, 0);
    k += put_long(p + k, 1);
    k += put_str(p + k, "p1");
    k += put_long(p + k, 1000);
    k += put_long(p + k, more ? 1 : 0);
    return k;
}

static void test_recursive_schema_depth(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t raw[4096] = {0, 0, 0, 0, 8};
    ps_event ev;
    size_t k = 5;

    for (int i = 0; i < 3; i++)
        k += put_node8(raw + k, i < 2);
    assert_reason(decode(dec, raw, k, &ev), PS_BAD_NONE);
    assert_str(ev.product_id, "p1");
    k = 5;
    for (int i = 0; i < 100; i++)
        k += put_node8(raw + k, i < 99);
    assert_reason(decode(dec, raw, k, &ev), PS_BAD_UNDECODABLE);
    assert_non_null(strstr(g_detail, "deeper"));
    ps_decoder_destroy(dec);
}

static void test_strings_live_until_next_decode(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t buf[BUF_MAX];
    tev e = full_event();
    ps_event ev;
    size_t n = enc_id(3, &e, buf);

    assert_reason(decode(dec, buf, n, &ev), PS_BAD_NONE);
    memset(buf, 0xAA, n); /* the payload is not referenced */
    check_full(&ev);
    assert_reason(decode(dec, "", 0, &ev), PS_BAD_UNDECODABLE);
    assert_string_equal(g_detail, "empty payload");
    assert_reason(decode(dec, NULL, 3, &ev), PS_BAD_UNDECODABLE);
    assert_reason(decode(dec, "  \n", 3, &ev), PS_BAD_UNDECODABLE);
    /* NULL detail is allowed */
    assert_int_equal(ps_decoder_decode(dec, "x", 1, &ev, NULL, 0),
                     PS_BAD_UNDECODABLE);
    ps_decoder_destroy(dec);
    ps_decoder_destroy(NULL);
}

/* ------------------------------------------------------------------------
 * Fuzz and throughput
 */

static void fuzz_check(ps_decoder *dec, const uint8_t *p, size_t n,
                       long *accepted)
{
    ps_event ev;
    uint8_t *copy = malloc(n ? n : 1); /* exact size, for ASan */

    memcpy(copy, p, n);
    ps_bad_reason r = decode(dec, copy, n, &ev);
    assert_true((unsigned)r < PS_BAD_REASON_COUNT);
    if (r == PS_BAD_NONE) {
        char d[128];
        (*accepted)++;
        assert_int_equal(ps_event_validate(&ev, d, sizeof(d)), PS_BAD_NONE);
        assert_non_null(ev.event_id.ptr);
        assert_non_null(ev.customer_id.ptr);
    } else {
        assert_true(strlen(g_detail) > 0);
    }
    free(copy);
}

static void test_fuzz(void **state)
{
    (void)state;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    static const char alphabet[] = "{}[]\":,0123456789.-eE nulltruefalse"
                                   "\\abcXYZ";
    uint8_t buf[BUF_MAX], seed[6][BUF_MAX];
    size_t seed_len[6];
    long accepted = 0, random_accepted;
    tev e = full_event();

    seed_len[0] = enc_plain(&e, seed[0]);
    seed_len[1] = enc_id(1, &e, seed[1]);
    seed_len[2] = enc_id(2, &e, seed[2]);
    seed_len[3] = enc_id(3, &e, seed[3]);
    seed_len[4] = enc_id(4, &e, seed[4]);
    seed_len[5] = (size_t)snprintf((char *)seed[5], BUF_MAX,
        "{\"event_id\":\"ev-0001\",\"customer_id\":\"cust-42\",\"type\":"
        "\"PURCHASE\",\"product_id\":\"sku-7\",\"amount\":129.5,\"ts\":"
        "1700000000123,\"signup_ts\":1690000000000,\"campaign\":\"spring\"}");
    /* PS_TEST_QUICK (set for the valgrind run) shrinks the loops 10x */
    const int rounds = getenv("PS_TEST_QUICK") ? 2000 : 20000;
    for (int i = 0; i < rounds; i++) {
        size_t n = rnd() % 64;
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rnd();
        if (n > 0 && i % 3 == 1)
            buf[0] = '{';
        if (n > 0 && i % 3 == 1)
            for (size_t k = 1; k < n; k++)
                buf[k] = (uint8_t)alphabet[rnd() % (sizeof(alphabet) - 1)];
        if (n >= 5 && i % 3 == 2) {
            memset(buf, 0, 4);
            buf[4] = (uint8_t)(1 + rnd() % 8);
        }
        fuzz_check(dec, buf, n, &accepted);
    }
    random_accepted = accepted;
    for (int s = 0; s < 6; s++) {
        for (int i = 0; i < rounds; i++) {
            memcpy(buf, seed[s], seed_len[s]);
            buf[rnd() % seed_len[s]] = (uint8_t)rnd();
            fuzz_check(dec, buf, seed_len[s], &accepted);
        }
    }
    printf("fuzz: %ld of %d random and %ld of %d mutated accepted\n",
           random_accepted, rounds, accepted - random_accepted, 6 * rounds);
    ps_decoder_destroy(dec);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_throughput(void **state)
{
    (void)state;
    const int N = getenv("PS_TEST_QUICK") ? 2000 : 200000;
    ps_decoder *dec = new_decoder(SCHEMA_DIR);
    uint8_t avro[BUF_MAX];
    char json[512];
    tev e = full_event();
    size_t an = enc_id(1, &e, avro);
    size_t jn = (size_t)snprintf(json, sizeof(json),
        "{\"event_id\":\"ev-0001\",\"customer_id\":\"cust-42\",\"type\":"
        "\"PURCHASE\",\"product_id\":\"sku-7\",\"amount\":129.5,\"ts\":"
        "1700000000123,\"signup_ts\":1690000000000,\"campaign\":\"spring\"}");
    ps_event ev;
    double t0 = now_s();

    for (int i = 0; i < N; i++)
        assert_int_equal(decode(dec, avro, an, &ev), PS_BAD_NONE);
    double t1 = now_s();
    for (int i = 0; i < N; i++)
        assert_int_equal(decode(dec, json, jn, &ev), PS_BAD_NONE);
    double t2 = now_s();
    printf("throughput: Confluent Avro %.0f events/s, JSON %.0f events/s"
           " (%d records each)\n", N / (t1 - t0), N / (t2 - t1), N);
    ps_decoder_destroy(dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_validate_ids),
        cmocka_unit_test(test_validate_product_and_amount),
        cmocka_unit_test(test_validate_ts),
        cmocka_unit_test(test_json_full),
        cmocka_unit_test(test_json_optional),
        cmocka_unit_test(test_json_bad),
        cmocka_unit_test(test_json_details_and_long_ids),
        cmocka_unit_test(test_avro_full),
        cmocka_unit_test(test_avro_optional_null),
        cmocka_unit_test(test_avro_truncated_every_prefix),
        cmocka_unit_test(test_avro_trailing_bytes),
        cmocka_unit_test(test_avro_hostile_lengths),
        cmocka_unit_test(test_avro_hostile_blocks),
        cmocka_unit_test(test_avro_bad_values),
        cmocka_unit_test(test_resolution_older_writer),
        cmocka_unit_test(test_resolution_newer_writer),
        cmocka_unit_test(test_resolution_reordered_promoted),
        cmocka_unit_test(test_resolution_incompatible),
        cmocka_unit_test(test_avro_c_resolver_limit),
        cmocka_unit_test(test_unknown_schema_ids),
        cmocka_unit_test(test_schema_cache_bound),
        cmocka_unit_test(test_recursive_schema_depth),
        cmocka_unit_test(test_strings_live_until_next_decode),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
