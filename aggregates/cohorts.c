/*
 * cohorts.c -- monthly signup cohorts: exact size, active customers and
 * revenue per month offset, and retention (contract section 2,
 * "Cohorts"; keys ps:cohort:{YYYY-MM} size, active_{m}, revenue_{m},
 * retention_{m}).
 *
 * A customer's cohort is the UTC month of the signup_ts carried by its
 * first event, else the month of that first event; it is fixed then (a
 * signup_ts seen only later does not move the customer).  Month offset
 * m = months from the cohort month to the event's month (cohort_math.h);
 * an event in an earlier month than the cohort counts at offset 0.
 *
 * Exactness.  Each customer keeps a bitmap of the offsets it has been
 * active in (0..127, about ten years), so it is counted once per offset
 * however many events it has there, and out of order too; activity past
 * offset 127 is not deduplicated (documented limitation).  Cohorts are
 * shared entities (aggregate.h): size, active_{m} and revenue_{m} are
 * written as HINCRBY / HINCRBYFLOAT deltas in the flush transaction, so
 * they are exactly-once and add up across instances; retention_{m} =
 * active_{m} / size is derived from the loaded totals plus this instance's
 * deltas.
 *
 * Revenue: every PURCHASE amount and SPEND amount, by the offset of its
 * event.
 *
 * The rolling 7-day and 30-day windows per cohort and cohort x segment
 * (window.h) are not wired here yet.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "cohort_math.h"
#include "pipeline.h"
#include "../common/error.h"

#define MAX_OFFSET 128
#define COHORT_STATE_VERSION 1

typedef struct cohort_cust {
    int32_t month;      /* cohort month number */
    uint32_t has;       /* 1 once the customer has a cohort */
    uint64_t active[2]; /* bit m: active in offset m */
    uint32_t changed_gen;
} cohort_cust;

/* Per cohort: totals as base (from Redis) + delta (unflushed). */
typedef struct cohort_counts {
    int64_t size_base, size_delta;
    int64_t active_base[MAX_OFFSET], active_delta[MAX_OFFSET];
    double revenue_base[MAX_OFFSET], revenue_delta[MAX_OFFSET];
    int32_t max_offset; /* highest offset with data (0 when none) */
} cohort_counts;

typedef struct cohorts {
    ps_pipeline *pipe;
    size_t me;
} cohorts;

static int coh_init(void **self, const ps_agg_env *env, char *errstr,
                    size_t errstr_size)
{
    cohorts *c = calloc(1, sizeof(*c));
    int me = ps_pipeline_agg_index("cohorts");
    if (c == NULL || me < 0) {
        free(c);
        ps_set_err(errstr, errstr_size, "cohorts: out of memory");
        return PS_ERR_NOMEM;
    }
    c->pipe = env->pipe;
    c->me = (size_t)me;
    *self = c;
    return PS_OK;
}

static void coh_destroy(void *self) { free(self); }

static ps_entity *cohort_entity(cohorts *c, int32_t month)
{
    char id[PS_MONTH_STR_SIZE];
    if (ps_month_format(month, id, sizeof(id)) < 0)
        return NULL;
    return ps_pipeline_entity(c->pipe, PS_KIND_COHORT,
                              (ps_str){id, (uint32_t)strlen(id)});
}

static int coh_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    cohorts *c = self;
    cohort_cust *cc = ctx->cust_state;
    uint32_t next_gen = ps_pipeline_generation(c->pipe) + 1;

    if (!cc->has) {
        int64_t from = ev->signup_ts > 0 ? ev->signup_ts : ev->ts;
        if (ps_month_of_ts(from, &cc->month) < 0)
            return PS_OK; /* validated ts: never */
        cc->has = 1;
        cc->changed_gen = next_gen;
        ps_entity *e = cohort_entity(c, cc->month);
        if (e == NULL)
            return PS_ERR_NOMEM;
        cohort_counts *k = ps_pipeline_slice(c->pipe, e, c->me);
        k->size_delta++;
        ps_pipeline_touch(c->pipe, e);
    }
    int32_t ev_month, m;
    if (ps_month_of_ts(ev->ts, &ev_month) < 0)
        return PS_OK;
    m = ev_month - cc->month;
    if (m < 0)
        m = 0;
    ps_entity *e = cohort_entity(c, cc->month);
    if (e == NULL)
        return PS_ERR_NOMEM;
    cohort_counts *k = ps_pipeline_slice(c->pipe, e, c->me);
    bool touched = false;
    if (m < MAX_OFFSET) {
        uint64_t bit = 1ULL << (m % 64);
        if (!(cc->active[m / 64] & bit)) {
            cc->active[m / 64] |= bit;
            k->active_delta[m]++;
            touched = true;
        }
        if ((ev->type == PS_PURCHASE || ev->type == PS_SPEND) &&
            ev->has_amount && ev->amount > 0) {
            k->revenue_delta[m] += ev->amount;
            touched = true;
        }
        if (touched && m > k->max_offset)
            k->max_offset = m;
    }
    if (touched)
        ps_pipeline_touch(c->pipe, e);
    return PS_OK;
}

static void coh_write_customer(void *self, const ps_entity *cust,
                               const void *state, ps_batch *b)
{
    cohorts *c = self;
    const cohort_cust *cc = state;
    char id[PS_MONTH_STR_SIZE];
    (void)cust;
    if (!cc->has || cc->changed_gen <= ps_pipeline_generation(c->pipe) ||
        ps_month_format(cc->month, id, sizeof(id)) < 0)
        return;
    ps_batch_arg_cstr(b, "cohort");
    ps_batch_arg_cstr(b, id);
}

static void coh_write_entity(void *self, const ps_entity *e, void *state,
                             ps_batch *b)
{
    cohort_counts *k = state;
    const char *key = ps_kind_key((ps_kind)e->kind);
    char field[32];
    (void)self;

    if (k->size_delta != 0) {
        ps_batch_begin(b, "HINCRBY");
        ps_batch_arg_key(b, key, e->id, NULL);
        ps_batch_arg_cstr(b, "size");
        ps_batch_arg_i64(b, k->size_delta);
        ps_batch_end(b);
    }
    for (int m = 0; m <= k->max_offset; m++) {
        if (k->active_delta[m] != 0) {
            snprintf(field, sizeof(field), "active_%d", m);
            ps_batch_begin(b, "HINCRBY");
            ps_batch_arg_key(b, key, e->id, NULL);
            ps_batch_arg_cstr(b, field);
            ps_batch_arg_i64(b, k->active_delta[m]);
            ps_batch_end(b);
        }
        if (k->revenue_delta[m] != 0) {
            snprintf(field, sizeof(field), "revenue_%d", m);
            ps_batch_begin(b, "HINCRBYFLOAT");
            ps_batch_arg_key(b, key, e->id, NULL);
            ps_batch_arg_cstr(b, field);
            ps_batch_arg_dbl(b, k->revenue_delta[m]);
            ps_batch_end(b);
        }
    }
    /* retention of every offset with activity: the size may have moved */
    int64_t size = k->size_base + k->size_delta;
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, key, e->id, NULL);
    for (int m = 0; m <= k->max_offset; m++) {
        int64_t active = k->active_base[m] + k->active_delta[m];
        if (active == 0)
            continue;
        snprintf(field, sizeof(field), "retention_%d", m);
        ps_batch_arg_cstr(b, field);
        ps_batch_arg_real(b, ps_retention((uint64_t)active,
                                          size > 0 ? (uint64_t)size : 0));
    }
    ps_batch_end(b);
}

static void coh_flushed_entity(void *self, const ps_entity *e, void *state)
{
    cohort_counts *k = state;
    (void)self;
    (void)e;
    k->size_base += k->size_delta;
    k->size_delta = 0;
    for (int m = 0; m <= k->max_offset; m++) {
        k->active_base[m] += k->active_delta[m];
        k->active_delta[m] = 0;
        k->revenue_base[m] += k->revenue_delta[m];
        k->revenue_delta[m] = 0;
    }
}

static void coh_load_field(void *self, ps_entity *e, void *state,
                           const char *field, size_t flen, const char *val,
                           size_t vlen)
{
    cohort_counts *k = state;
    char f[32], v[64];
    int m;
    (void)self;
    (void)e;
    if (flen >= sizeof(f) || vlen >= sizeof(v))
        return;
    memcpy(f, field, flen);
    f[flen] = '\0';
    memcpy(v, val, vlen);
    v[vlen] = '\0';
    if (strcmp(f, "size") == 0) {
        k->size_base = strtoll(v, NULL, 10);
    } else if (sscanf(f, "active_%d", &m) == 1 && m >= 0 && m < MAX_OFFSET) {
        k->active_base[m] = strtoll(v, NULL, 10);
        if (m > k->max_offset)
            k->max_offset = m;
    } else if (sscanf(f, "revenue_%d", &m) == 1 && m >= 0 &&
               m < MAX_OFFSET) {
        k->revenue_base[m] = strtod(v, NULL);
        if (m > k->max_offset)
            k->max_offset = m;
    }
}

static void coh_save_customer(void *self, const ps_entity *cust,
                              const void *state, ps_wbuf *w)
{
    const cohort_cust *cc = state;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, COHORT_STATE_VERSION);
    ps_wbuf_u32(w, cc->has);
    ps_wbuf_u32(w, (uint32_t)cc->month);
    ps_wbuf_u64(w, cc->active[0]);
    ps_wbuf_u64(w, cc->active[1]);
}

static int coh_load_customer(void *self, ps_entity *cust, void *state,
                             ps_rbuf *r)
{
    cohort_cust *cc = state;
    uint8_t version;
    uint32_t month;
    (void)self;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version != COHORT_STATE_VERSION ||
        ps_rbuf_u32(r, &cc->has) < 0 || ps_rbuf_u32(r, &month) < 0 ||
        ps_rbuf_u64(r, &cc->active[0]) < 0 ||
        ps_rbuf_u64(r, &cc->active[1]) < 0 || cc->has > 1)
        return PS_ERR_STATE;
    cc->month = (int32_t)month;
    return PS_OK;
}

const ps_aggregate_ops ps_agg_cohorts = {
    .name = "cohorts",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(cohort_cust),
                   [PS_KIND_COHORT] = sizeof(cohort_counts)},
    .init = coh_init,
    .destroy = coh_destroy,
    .apply = coh_apply,
    .write_customer = coh_write_customer,
    .write_shared_entity = coh_write_entity,
    .flushed_shared_entity = coh_flushed_entity,
    .load_shared_field = coh_load_field,
    .save_customer = coh_save_customer,
    .load_customer = coh_load_customer,
};
