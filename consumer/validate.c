/*
 * validate.c -- what a valid input event is (contract section 1), shared by
 * the three encodings in decode.c, and the stable names of the bad reasons.
 *
 * The checks, in the order they are made (the first failure is reported):
 *   1. event_id, customer_id: present, 1..PS_ID_MAX bytes        (bad_id)
 *   2. type: one of the four symbols                          (wrong_type)
 *   3. product_id, campaign: when present, 1..PS_ID_MAX bytes     (bad_id);
 *      product_id present for CLICK, WISHLIST, PURCHASE    (missing_field)
 *   4. amount: present for SPEND (missing_field); when present finite,
 *      >= 0, <= PS_AMOUNT_MAX, and > 0 for SPEND                (bad_amount)
 *   5. ts in 1..PS_TS_MAX; signup_ts 0 (absent) or in 1..PS_TS_MAX (bad_ts)
 *
 * A signup_ts that was present on the wire with the value 0 cannot be told
 * apart from "absent" here (the event says 0 means absent): the decoder
 * checks that case itself, after this function.
 *
 * Details name the field and, for numbers, the value; they never quote the
 * bytes of an id (only its length), so a detail stays short and printable
 * whatever the input was.  Nothing here allocates or keeps a pointer.
 */
#include "decode.h"

#include <inttypes.h>
#include <math.h>

#include "../common/error.h"

/* Largest amount accepted: anything above is a producer bug, not money. */
#define PS_AMOUNT_MAX 1e12
/* 9999-12-31T23:59:59.999Z in ms since the epoch. */
#define PS_TS_MAX INT64_C(253402300799999)

static const char *const reason_names[PS_BAD_REASON_COUNT] = {
    [PS_BAD_NONE] = "none",
    [PS_BAD_UNDECODABLE] = "undecodable",
    [PS_BAD_UNKNOWN_SCHEMA] = "unknown_schema_id",
    [PS_BAD_MISSING_FIELD] = "missing_field",
    [PS_BAD_WRONG_TYPE] = "wrong_type",
    [PS_BAD_AMOUNT] = "bad_amount",
    [PS_BAD_ID] = "bad_id",
    [PS_BAD_TS] = "bad_ts",
};

const char *ps_bad_reason_name(ps_bad_reason reason)
{
    if ((unsigned)reason >= PS_BAD_REASON_COUNT)
        return "?";
    return reason_names[reason];
}

/* An id: NULL is "absent" (an error only when required), else 1..max. */
static ps_bad_reason validate_id(ps_str id, const char *name, bool required,
                                 char *detail, size_t detail_size)
{
    if (id.ptr == NULL) {
        if (!required)
            return PS_BAD_NONE;
        ps_set_err(detail, detail_size, "%s is missing", name);
        return PS_BAD_MISSING_FIELD;
    }
    if (id.len == 0) {
        ps_set_err(detail, detail_size, "%s is empty", name);
        return PS_BAD_ID;
    }
    if (id.len > PS_ID_MAX) {
        ps_set_err(detail, detail_size, "%s is %" PRIu32 " bytes (max %d)",
                   name, id.len, PS_ID_MAX);
        return PS_BAD_ID;
    }
    return PS_BAD_NONE;
}

static ps_bad_reason validate_ids(const ps_event *ev, char *detail,
                                  size_t detail_size)
{
    ps_bad_reason r;

    if ((r = validate_id(ev->event_id, "event_id", true, detail,
                         detail_size)) != PS_BAD_NONE)
        return r;
    if ((r = validate_id(ev->customer_id, "customer_id", true, detail,
                         detail_size)) != PS_BAD_NONE)
        return r;
    if ((unsigned)ev->type >= PS_EVENT_TYPE_COUNT) {
        ps_set_err(detail, detail_size, "type %d is not an event type",
                   (int)ev->type);
        return PS_BAD_WRONG_TYPE;
    }
    if ((r = validate_id(ev->product_id, "product_id", false, detail,
                         detail_size)) != PS_BAD_NONE)
        return r;
    if (ev->product_id.ptr == NULL && ev->type != PS_SPEND) {
        ps_set_err(detail, detail_size, "product_id is required for %s",
                   ps_event_type_name(ev->type));
        return PS_BAD_MISSING_FIELD;
    }
    return validate_id(ev->campaign, "campaign", false, detail, detail_size);
}

static ps_bad_reason validate_amount(const ps_event *ev, char *detail,
                                     size_t detail_size)
{
    if (!ev->has_amount) {
        if (ev->type != PS_SPEND)
            return PS_BAD_NONE;
        ps_set_err(detail, detail_size, "amount is required for SPEND");
        return PS_BAD_MISSING_FIELD;
    }
    if (!isfinite(ev->amount)) {
        ps_set_err(detail, detail_size, "amount %g is not finite",
                   ev->amount);
        return PS_BAD_AMOUNT;
    }
    if (ev->amount < 0) {
        ps_set_err(detail, detail_size, "amount %g is negative", ev->amount);
        return PS_BAD_AMOUNT;
    }
    if (ev->amount > PS_AMOUNT_MAX) {
        ps_set_err(detail, detail_size, "amount %g is above %g", ev->amount,
                   PS_AMOUNT_MAX);
        return PS_BAD_AMOUNT;
    }
    if (ev->type == PS_SPEND && !(ev->amount > 0)) {
        ps_set_err(detail, detail_size, "amount %g must be > 0 for SPEND",
                   ev->amount);
        return PS_BAD_AMOUNT;
    }
    return PS_BAD_NONE;
}

/* A timestamp in 1..PS_TS_MAX; signup_ts may also be 0 (absent). */
static ps_bad_reason validate_ts(int64_t ts, const char *name,
                                 bool zero_is_absent, char *detail,
                                 size_t detail_size)
{
    if (ts == 0 && zero_is_absent)
        return PS_BAD_NONE;
    if (ts <= 0) {
        ps_set_err(detail, detail_size, "%s %" PRId64 " is not positive",
                   name, ts);
        return PS_BAD_TS;
    }
    if (ts > PS_TS_MAX) {
        ps_set_err(detail, detail_size, "%s %" PRId64 " is after year 9999",
                   name, ts);
        return PS_BAD_TS;
    }
    return PS_BAD_NONE;
}

ps_bad_reason ps_event_validate(const ps_event *ev, char *detail,
                                size_t detail_size)
{
    ps_bad_reason r;

    if ((r = validate_ids(ev, detail, detail_size)) != PS_BAD_NONE)
        return r;
    if ((r = validate_amount(ev, detail, detail_size)) != PS_BAD_NONE)
        return r;
    if ((r = validate_ts(ev->ts, "ts", false, detail, detail_size)) !=
        PS_BAD_NONE)
        return r;
    if ((r = validate_ts(ev->signup_ts, "signup_ts", true, detail,
                         detail_size)) != PS_BAD_NONE)
        return r;
    ps_set_err(detail, detail_size, "ok");
    return PS_BAD_NONE;
}
