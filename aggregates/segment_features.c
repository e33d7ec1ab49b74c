/*
 * segment_features.c -- see segment_features.h.
 */
#include "segment_features.h"

#include <stdio.h>
#include <string.h>

#include "../common/error.h"

#define DAY_MS 86400000.0

static const char *const names[PS_SEG_FEATURE_KINDS] = {
    "mean_amount", "purchases", "recency_days", "frequency",
    "total_spend", "clicks",    "wishlists",    "conversion"};

const char *ps_seg_feature_name(int kind)
{
    return kind >= 0 && kind < PS_SEG_FEATURE_KINDS ? names[kind] : "";
}

int ps_seg_features_find(const ps_seg_features *f, int kind)
{
    for (int i = 0; i < f->d; i++)
        if (f->kind[i] == kind)
            return i;
    return -1;
}

int ps_seg_features_parse(const char *list, const char *option,
                          ps_seg_features *out, char *errstr,
                          size_t errstr_size)
{
    const char *p = list != NULL ? list : "";
    out->d = 0;
    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        int kind = -1;
        for (int i = 0; i < PS_SEG_FEATURE_KINDS; i++)
            if (strlen(names[i]) == len && strncmp(names[i], p, len) == 0)
                kind = i;
        if (kind < 0) {
            ps_set_err(errstr, errstr_size,
                       "%s: unknown feature '%.*s' (known: mean_amount, "
                       "purchases, recency_days, frequency, total_spend, "
                       "clicks, wishlists, conversion)",
                       option, (int)len, p);
            return PS_ERR_CONFIG;
        }
        if (ps_seg_features_find(out, kind) >= 0) {
            ps_set_err(errstr, errstr_size, "%s: '%s' listed twice", option,
                       names[kind]);
            return PS_ERR_CONFIG;
        }
        if (out->d == PS_SEG_FEATURES_MAX) {
            ps_set_err(errstr, errstr_size, "%s: at most %d features",
                       option, PS_SEG_FEATURES_MAX);
            return PS_ERR_CONFIG;
        }
        out->kind[out->d++] = kind;
        p += len;
        if (*p == ',')
            p++;
    }
    if (out->d == 0) {
        ps_set_err(errstr, errstr_size, "%s: empty list", option);
        return PS_ERR_CONFIG;
    }
    return PS_OK;
}

void ps_seg_inputs_add(ps_seg_inputs *in, const ps_event *ev)
{
    if (!in->seen) {
        in->seen = 1;
        in->first_ts = in->last_ts = in->last_purchase_ts = ev->ts;
    }
    if (ev->ts < in->first_ts)
        in->first_ts = ev->ts;
    if (ev->ts > in->last_ts)
        in->last_ts = ev->ts;
    switch (ev->type) {
    case PS_CLICK:
        in->clicks++;
        break;
    case PS_WISHLIST:
        in->wishlists++;
        break;
    case PS_PURCHASE:
        if (ev->has_amount) {
            if (in->n == 0 || ev->ts > in->last_purchase_ts)
                in->last_purchase_ts = ev->ts;
            in->n++;
            in->mean += (ev->amount - in->mean) / in->n;
            in->total += ev->amount;
        }
        break;
    case PS_SPEND:
        if (ev->has_amount)
            in->total += ev->amount;
        break;
    default:
        break;
    }
}

void ps_seg_features_of(const ps_seg_features *f, const ps_seg_inputs *in,
                        double *x)
{
    for (int i = 0; i < f->d; i++) {
        double v = 0;
        switch (f->kind[i]) {
        case PS_SEG_MEAN_AMOUNT:
            v = in->mean;
            break;
        case PS_SEG_PURCHASES:
            v = in->n;
            break;
        case PS_SEG_RECENCY:
            v = (double)(in->last_ts - in->last_purchase_ts) / DAY_MS;
            break;
        case PS_SEG_FREQUENCY: {
            double days = (double)(in->last_ts - in->first_ts) / DAY_MS;
            v = in->n * 30.0 / (days > 30 ? days : 30);
            break;
        }
        case PS_SEG_TOTAL:
            v = in->total;
            break;
        case PS_SEG_CLICKS:
            v = in->clicks;
            break;
        case PS_SEG_WISHLISTS:
            v = in->wishlists;
            break;
        case PS_SEG_CONVERSION: {
            double tries = (double)in->clicks + in->wishlists;
            v = in->n / (tries > 1 ? tries : 1);
            break;
        }
        }
        x[i] = v;
    }
}
