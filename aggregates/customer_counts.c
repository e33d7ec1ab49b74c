/*
 * customer_counts.c -- per-customer activity counters and spend statistics.
 *
 * Fields of ps:cust:{id} (contract section 3):
 *   events, clicks, wishlists, purchases   counts of applied events
 *   last_ts                                largest event time seen (ms)
 *   spend_n, spend_sum, spend_mean,        every PURCHASE amount (when the
 *   spend_std                              event has one) and every SPEND
 *                                          amount; std is the sample
 *                                          standard deviation (ddof = 1),
 *                                          0 when n < 2
 *
 * Mean and variance are kept with Welford's online update (Welford 1962;
 * Knuth TAOCP vol. 2, 4.2.2), which stays accurate where the textbook
 * sum-of-squares formula cancels catastrophically (amounts ~ 5e4 squared
 * ~ 2.5e9, summed over many events).  spend_sum is kept separately so it
 * is the exact running sum, not mean * n.
 */
#include <math.h>
#include <string.h>

#include "aggregate.h"
#include "../common/error.h"

typedef struct cust_counts {
    int64_t events, clicks, wishlists, purchases;
    int64_t last_ts;
    int64_t spend_n;
    double spend_sum, spend_mean, spend_m2;
} cust_counts;

#define COUNTS_STATE_VERSION 1

static int counts_apply(void *self, const ps_event *ev,
                        const ps_apply_ctx *ctx)
{
    cust_counts *s = ctx->cust_state;
    (void)self;

    s->events++;
    switch (ev->type) {
    case PS_CLICK: s->clicks++; break;
    case PS_WISHLIST: s->wishlists++; break;
    case PS_PURCHASE: s->purchases++; break;
    default: break;
    }
    if (ev->ts > s->last_ts)
        s->last_ts = ev->ts;
    if ((ev->type == PS_PURCHASE || ev->type == PS_SPEND) && ev->has_amount) {
        double x = ev->amount, delta = x - s->spend_mean;
        s->spend_n++;
        s->spend_sum += x;
        s->spend_mean += delta / (double)s->spend_n;
        s->spend_m2 += delta * (x - s->spend_mean);
    }
    return PS_OK;
}

static double counts_std(const cust_counts *s)
{
    if (s->spend_n < 2)
        return 0.0;
    double var = s->spend_m2 / (double)(s->spend_n - 1);
    return var > 0 ? sqrt(var) : 0.0;
}

static void field_i64(ps_batch *b, const char *name, int64_t v)
{
    ps_batch_arg_cstr(b, name);
    ps_batch_arg_i64(b, v);
}

static void field_dbl(ps_batch *b, const char *name, double v)
{
    ps_batch_arg_cstr(b, name);
    ps_batch_arg_real(b, v);
}

static void counts_write_customer(void *self, const ps_customer *cust,
                                  const void *cust_state, ps_batch *b)
{
    const cust_counts *s = cust_state;
    (void)self;
    (void)cust;

    field_i64(b, "events", s->events);
    field_i64(b, "clicks", s->clicks);
    field_i64(b, "wishlists", s->wishlists);
    field_i64(b, "purchases", s->purchases);
    field_i64(b, "last_ts", s->last_ts);
    field_i64(b, "spend_n", s->spend_n);
    ps_batch_arg_cstr(b, "spend_sum"); /* exact: round-trip digits */
    ps_batch_arg_dbl(b, s->spend_sum);
    field_dbl(b, "spend_mean", s->spend_n ? s->spend_mean : 0.0);
    field_dbl(b, "spend_std", counts_std(s));
}

static void counts_save(void *self, const ps_entity *cust,
                        const void *cust_state, ps_wbuf *w)
{
    const cust_counts *s = cust_state;
    (void)self;
    (void)cust;

    ps_wbuf_u8(w, COUNTS_STATE_VERSION);
    ps_wbuf_i64(w, s->events);
    ps_wbuf_i64(w, s->clicks);
    ps_wbuf_i64(w, s->wishlists);
    ps_wbuf_i64(w, s->purchases);
    ps_wbuf_i64(w, s->last_ts);
    ps_wbuf_i64(w, s->spend_n);
    ps_wbuf_f64(w, s->spend_sum);
    ps_wbuf_f64(w, s->spend_mean);
    ps_wbuf_f64(w, s->spend_m2);
}

static int counts_load(void *self, ps_entity *cust, void *cust_state,
                       ps_rbuf *r)
{
    cust_counts *s = cust_state;
    uint8_t version;
    (void)self;
    (void)cust;

    if (ps_rbuf_u8(r, &version) < 0 || version != COUNTS_STATE_VERSION)
        return PS_ERR_STATE;
    ps_rbuf_i64(r, &s->events);
    ps_rbuf_i64(r, &s->clicks);
    ps_rbuf_i64(r, &s->wishlists);
    ps_rbuf_i64(r, &s->purchases);
    ps_rbuf_i64(r, &s->last_ts);
    ps_rbuf_i64(r, &s->spend_n);
    ps_rbuf_f64(r, &s->spend_sum);
    ps_rbuf_f64(r, &s->spend_mean);
    ps_rbuf_f64(r, &s->spend_m2);
    if (r->err || s->events < 0 || s->spend_n < 0 || s->spend_n > s->events)
        return PS_ERR_STATE;
    return PS_OK;
}

const ps_aggregate_ops ps_agg_customer_counts = {
    .name = "customer_counts",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(cust_counts)},
    .apply = counts_apply,
    .write_customer = counts_write_customer,
    .save_customer = counts_save,
    .load_customer = counts_load,
};

/* ------------------------------------------------------------ accessors */

#include "customer_counts.h"
#include "pipeline.h"

void ps_customer_counts_get(ps_pipeline *p, const ps_entity *cust,
                            ps_customer_counts *out)
{
    int index = PS_AGG_INDEX_customer_counts;
    memset(out, 0, sizeof(*out));
    if (index < 0)
        return;
    const cust_counts *s = ps_pipeline_slice(p, cust, (size_t)index);
    out->events = s->events;
    out->clicks = s->clicks;
    out->wishlists = s->wishlists;
    out->purchases = s->purchases;
    out->last_ts = s->last_ts;
    out->spend_n = s->spend_n;
    out->spend_sum = s->spend_sum;
    out->spend_mean = s->spend_n ? s->spend_mean : 0.0;
    out->spend_std = counts_std(s);
}
