/*
 * pipeline.c -- entity tables, clock and aggregates (see pipeline.h).
 *
 * Records.  One heap block per entity, allocated when the entity is first
 * seen (never per event):
 *
 *     [ ps_entity header | slice 0 | slice 1 | ... | id bytes ]
 *
 * Slice offsets are fixed at init, per kind, from every aggregate's
 * state_size, each rounded up to 8 bytes.  The id is stored inside the
 * block and hdr.id points at it.
 *
 * Index.  One table per kind: open addressing with linear probing over a
 * power-of-two array of record pointers, kept at most 70 % full; the
 * 64-bit hash of the id is stored in the header so growing never rehashes
 * bytes.  Customers are removed all at once (forget_all, on revocation) or
 * the least recently used clean ones (ps_pipeline_evict_idle, CLOCK over
 * the table with a reference bit set whenever a customer is touched; an
 * entry is removed by backward-shift deletion).
 *
 * Dirty list.  An entity changed since the last successful flush is in
 * `dirty` exactly once (flag ENT_DIRTY); a flush writes each once however
 * many events touched it.  A failed flush keeps the list, so the next
 * attempt writes them again with the newer values.
 *
 * Clock.  Per partition slot: the largest ts seen and the wall-clock time
 * of the last event (to tell idle partitions); see pipeline.h.
 */
#include "pipeline.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

#define ENT_DIRTY 1u
#define ENT_UNLOADED 2u /* shared entity waiting for its base */
#define ENT_REF 8u      /* customer touched since the eviction hand passed */
#define ENT_STALE 4u    /* shared entity whose base is re-read from Redis
                           when it is next used (ps_pipeline_refresh_shared) */
#define STATE_VERSION 1

typedef struct table {
    ps_entity **slots; /* NULL = empty */
    size_t cap, count;
    size_t *slice_off; /* per aggregate, from the record start */
    size_t states_end; /* where the id bytes start */
} table;

typedef struct part_clock {
    int64_t max_ts;  /* INT64_MIN: nothing seen */
    int64_t hold_ts; /* held back at this next event time, or INT64_MIN */
    int64_t last_ms; /* wall clock of the last event */
    bool seen;       /* an event of this partition has been applied (or is
                        being applied) */
    uint32_t cause_len;
    char cause[PS_ID_MAX]; /* event id that set max_ts */
    char *name;            /* "topic:partition", or NULL */
} part_clock;

struct ps_pipeline {
    ps_agg_conf conf;
    void **self; /* per aggregate */
    table tables[PS_KIND_COUNT];
    ps_entity *global;

    ps_entity **dirty;
    size_t dirty_n, dirty_cap;
    ps_entity **unloaded;
    size_t unloaded_n, unloaded_cap;

    part_clock *parts;
    size_t parts_n;
    int64_t now_ms;
    int64_t global_wm;
    size_t global_part; /* partition defining global_wm (for its cause) */
    uint32_t generation; /* successful flushes */
    size_t evict_hand;   /* CLOCK hand over the customer table */

    ps_wbuf blob; /* reused for saved state */
};

static const char *const kind_keys[PS_KIND_COUNT] = {
    "cust:", "prod:", "campaign:", "global", "segment:", "cohort:"};

const char *ps_kind_key(ps_kind kind) { return kind_keys[kind]; }

void ps_agg_conf_defaults(ps_agg_conf *c)
{
    memset(c, 0, sizeof(*c));
    c->prefix = "ps:";
    c->allowed_lateness_ms = 3600 * 1000LL;
    c->idle_partition_ms = 60 * 1000LL;
    c->attribution_ms = 7 * 24 * 3600 * 1000LL;
    c->dedup_horizon_ms = 24 * 3600 * 1000LL;
    c->dedup_max_ids = 1024;
    c->prior_empirical = 0;
    c->prior_strength = 10;
    c->half_life_ms = 0;
    c->credible_level = 0.95;
    c->intent_threshold = 0.5;
    c->stream_maxlen = 100000;
    c->customer_ttl_s = 0;
    c->segments_k = 3;
    c->segments_batch = 256;
    c->spend_threshold = 70000;
    c->segments_features = "mean_amount,purchases";
    c->segments_names = NULL;
    c->segments_half_life = 0;
    c->window_bucket_ms = 3600 * 1000LL;
    c->graph_max_edges = 5000000;
    c->also_top_n = 20;
    c->copurchase_max_items = 200;
    c->reco_n = 10;
    c->next_prior_strength = 10;
}

/* FNV-1a, 64 bit: simple and adequate for ids of a few dozen bytes. */
static uint64_t hash_id(ps_str id)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < id.len; i++) {
        h ^= (unsigned char)id.ptr[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

void *ps_pipeline_slice(ps_pipeline *p, const ps_entity *e, size_t agg_index)
{
    return (char *)e + p->tables[e->kind].slice_off[agg_index];
}

void *ps_pipeline_agg_self(ps_pipeline *p, size_t agg_index)
{
    return agg_index < ps_aggregates_count ? p->self[agg_index] : NULL;
}

int ps_pipeline_agg_index(const char *name)
{
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (strcmp(ps_aggregates[i]->name, name) == 0)
            return (int)i;
    return -1;
}

/* ------------------------------------------------------------ tables */

static int table_init(table *t, ps_kind kind)
{
    size_t n = ps_aggregates_count;
    t->cap = kind == PS_KIND_GLOBAL || kind == PS_KIND_SEGMENT ? 32
             : kind == PS_KIND_COHORT                          ? 256
                                                               : 1024;
    t->slots = calloc(t->cap, sizeof(*t->slots));
    t->slice_off = calloc(n ? n : 1, sizeof(*t->slice_off));
    if (t->slots == NULL || t->slice_off == NULL)
        return PS_ERR_NOMEM;
    size_t off = align8(sizeof(ps_entity));
    for (size_t i = 0; i < n; i++) {
        t->slice_off[i] = off;
        off += align8(ps_aggregates[i]->state_size[kind]);
    }
    t->states_end = off;
    return PS_OK;
}

static void table_clear(table *t)
{
    for (size_t i = 0; t->slots != NULL && i < t->cap; i++)
        free(t->slots[i]);
    free(t->slots);
    free(t->slice_off);
}

static size_t probe(const table *t, ps_str id, uint64_t h)
{
    size_t mask = t->cap - 1, i = (size_t)h & mask;
    while (t->slots[i] != NULL) {
        const ps_entity *e = t->slots[i];
        if (e->hash == h && e->id.len == id.len &&
            (id.len == 0 || memcmp(e->id.ptr, id.ptr, id.len) == 0))
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static int grow(table *t)
{
    size_t cap = t->cap * 2;
    ps_entity **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return PS_ERR_NOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        ps_entity *e = t->slots[i];
        if (e == NULL)
            continue;
        size_t j = (size_t)e->hash & (cap - 1);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = e;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return PS_OK;
}

/* New zeroed record of kind for id (not inserted).  NULL on OOM. */
static ps_entity *record_new(ps_pipeline *p, ps_kind kind, ps_str id)
{
    table *t = &p->tables[kind];
    ps_entity *e = calloc(1, t->states_end + id.len + 1);
    if (e == NULL)
        return NULL;
    if (id.len > 0)
        memcpy((char *)e + t->states_end, id.ptr, id.len);
    e->id.ptr = (char *)e + t->states_end;
    e->id.len = id.len;
    e->kind = (uint8_t)kind;
    e->hash = hash_id(id);
    return e;
}

static int insert(ps_pipeline *p, ps_entity *e)
{
    table *t = &p->tables[e->kind];
    if ((t->count + 1) * 10 > t->cap * 7 && grow(t) < 0)
        return PS_ERR_NOMEM;
    size_t i = probe(t, e->id, e->hash);
    assert(t->slots[i] == NULL);
    t->slots[i] = e;
    t->count++;
    return PS_OK;
}

static int push(ps_entity ***v, size_t *n, size_t *cap, ps_entity *e)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        ps_entity **nv = realloc(*v, c * sizeof(*nv));
        if (nv == NULL)
            return PS_ERR_NOMEM;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = e;
    return PS_OK;
}

/* ---------------------------------------------------------- lifecycle */

static void forget_customer(ps_pipeline *p, ps_customer *c)
{
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->forget_customer != NULL)
            ps_aggregates[i]->forget_customer(p->self[i], c,
                                              ps_pipeline_slice(p, c, i));
}


ps_pipeline *ps_pipeline_new(const ps_agg_conf *conf, char *errstr,
                             size_t errstr_size)
{
    ps_pipeline *p = calloc(1, sizeof(*p));
    size_t n = ps_aggregates_count;
    ps_str none = {"", 0};

    if (p == NULL)
        goto nomem;
    p->conf = *conf;
    p->global_wm = INT64_MIN;
    ps_wbuf_init(&p->blob);
    p->self = calloc(n ? n : 1, sizeof(*p->self));
    if (p->self == NULL)
        goto nomem;
    for (int k = 0; k < PS_KIND_COUNT; k++)
        if (table_init(&p->tables[k], (ps_kind)k) < 0)
            goto nomem;
    p->global = ps_pipeline_entity(p, PS_KIND_GLOBAL, none);
    if (p->global == NULL)
        goto nomem;

    ps_agg_env env = {&p->conf, p};
    for (size_t i = 0; i < n; i++) {
        const ps_aggregate_ops *ops = ps_aggregates[i];
        if (ops->init != NULL &&
            ops->init(&p->self[i], &env, errstr, errstr_size) < 0) {
            ps_pipeline_destroy(p);
            return NULL;
        }
    }
    return p;

nomem:
    ps_set_err(errstr, errstr_size, "pipeline: out of memory");
    ps_pipeline_destroy(p);
    return NULL;
}

void ps_pipeline_destroy(ps_pipeline *p)
{
    if (p == NULL)
        return;
    /* aggregates release what they keep per customer, while they exist */
    table *ct = &p->tables[PS_KIND_CUSTOMER];
    for (size_t i = 0; p->self != NULL && ct->slots != NULL && i < ct->cap;
         i++)
        if (ct->slots[i] != NULL)
            forget_customer(p, ct->slots[i]);
    for (size_t i = 0; p->self != NULL && i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->destroy != NULL)
            ps_aggregates[i]->destroy(p->self[i]);
    for (int k = 0; k < PS_KIND_COUNT; k++)
        table_clear(&p->tables[k]);
    free(p->dirty);
    free(p->unloaded);
    for (size_t i = 0; i < p->parts_n; i++)
        free(p->parts[i].name);
    free(p->parts);
    free(p->self);
    ps_wbuf_clear(&p->blob);
    free(p);
}

/* ------------------------------------------------------------ entities */

ps_entity *ps_pipeline_find(ps_pipeline *p, ps_kind kind, ps_str id)
{
    table *t = &p->tables[kind];
    return t->slots[probe(t, id, hash_id(id))];
}

/* Restore slices from a saved blob into c (slices zeroed). */
static int load_blob(ps_pipeline *p, ps_customer *c, const void *blob,
                     size_t len)
{
    ps_rbuf r;
    uint8_t version, count;

    ps_rbuf_init(&r, blob, len);
    if (ps_rbuf_u8(&r, &version) < 0 || version != STATE_VERSION ||
        ps_rbuf_u8(&r, &count) < 0)
        return PS_ERR_STATE;
    for (unsigned k = 0; k < count; k++) {
        uint8_t name_len;
        uint32_t part_len;
        char name[256];
        if (ps_rbuf_u8(&r, &name_len) < 0 ||
            ps_rbuf_get(&r, name, name_len) < 0 ||
            ps_rbuf_u32(&r, &part_len) < 0 || ps_rbuf_left(&r) < part_len)
            return PS_ERR_STATE;
        name[name_len] = '\0';
        ps_rbuf part;
        ps_rbuf_init(&part, r.p, part_len);
        r.p += part_len;
        for (size_t i = 0; i < ps_aggregates_count; i++) {
            const ps_aggregate_ops *ops = ps_aggregates[i];
            if (ops->load_customer == NULL || strcmp(ops->name, name) != 0)
                continue;
            if (ops->load_customer(p->self[i], c, ps_pipeline_slice(p, c, i),
                                   &part) < 0 ||
                part.err)
                return PS_ERR_STATE;
        }
    }
    return ps_rbuf_left(&r) == 0 ? PS_OK : PS_ERR_STATE;
}

ps_customer *ps_pipeline_add(ps_pipeline *p, ps_str id, const void *blob,
                             size_t len, int *err)
{
    ps_customer *c = record_new(p, PS_KIND_CUSTOMER, id);

    *err = PS_OK;
    if (c == NULL) {
        *err = PS_ERR_NOMEM;
        return NULL;
    }
    if (blob != NULL) {
        *err = load_blob(p, c, blob, len);
        if (*err < 0) {
            /* aggregates may have linked parts of c already */
            forget_customer(p, c);
            free(c);
            return NULL;
        }
    }
    *err = insert(p, c);
    if (*err < 0) {
        forget_customer(p, c);
        free(c);
        return NULL;
    }
    return c;
}

/* Queue e to have its bases read again (before its next use). */
static int mark_unloaded(ps_pipeline *p, ps_entity *e)
{
    e->flags &= ~ENT_STALE;
    if (e->flags & ENT_UNLOADED)
        return PS_OK;
    if (push(&p->unloaded, &p->unloaded_n, &p->unloaded_cap, e) < 0)
        return PS_ERR_NOMEM;
    e->flags |= ENT_UNLOADED;
    return PS_OK;
}

int ps_pipeline_refresh_shared(ps_pipeline *p)
{
    for (int k = 0; k < PS_KIND_COUNT; k++) {
        table *t = &p->tables[k];
        if (k == PS_KIND_CUSTOMER || t->slots == NULL)
            continue;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i] != NULL && !(t->slots[i]->flags & ENT_UNLOADED))
                t->slots[i]->flags |= ENT_STALE;
    }
    /* every event uses the global entity: read it again now */
    return p->global != NULL ? mark_unloaded(p, p->global) : PS_OK;
}

ps_entity *ps_pipeline_entity(ps_pipeline *p, ps_kind kind, ps_str id)
{
    assert(kind != PS_KIND_CUSTOMER);
    ps_entity *e = ps_pipeline_find(p, kind, id);
    if (e != NULL) {
        if ((e->flags & ENT_STALE) && mark_unloaded(p, e) < 0)
            return NULL;
        return e;
    }
    e = record_new(p, kind, id);
    if (e == NULL)
        return NULL;
    e->flags |= ENT_UNLOADED;
    if (insert(p, e) < 0 ||
        push(&p->unloaded, &p->unloaded_n, &p->unloaded_cap, e) < 0) {
        /* insert may have succeeded: leave the record in the table (it
         * is freed with it) but report the failure */
        return NULL;
    }
    return e;
}

int ps_pipeline_touch(ps_pipeline *p, ps_entity *e)
{
    e->flags |= ENT_REF;
    if (e->flags & ENT_DIRTY)
        return PS_OK;
    if (push(&p->dirty, &p->dirty_n, &p->dirty_cap, e) < 0)
        return PS_ERR_NOMEM;
    e->flags |= ENT_DIRTY;
    e->dirty_ix = (uint32_t)(p->dirty_n - 1);
    return PS_OK;
}

size_t ps_pipeline_unloaded(ps_pipeline *p, ps_entity ***list)
{
    /* drop the ones loaded since they were listed */
    size_t k = 0;
    for (size_t i = 0; i < p->unloaded_n; i++)
        if (p->unloaded[i]->flags & ENT_UNLOADED)
            p->unloaded[k++] = p->unloaded[i];
    p->unloaded_n = k;
    *list = p->unloaded;
    return k;
}

void ps_pipeline_load_field(ps_pipeline *p, ps_entity *e, const char *field,
                            size_t flen, const char *val, size_t vlen)
{
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->load_shared_field != NULL &&
            ps_aggregates[i]->state_size[e->kind] > 0)
            ps_aggregates[i]->load_shared_field(
                p->self[i], e, ps_pipeline_slice(p, e, i), field, flen, val,
                vlen);
}

void ps_pipeline_loaded(ps_pipeline *p, ps_entity *e)
{
    (void)p;
    e->flags &= ~ENT_UNLOADED;
}

/* --------------------------------------------------------------- clock */

static part_clock *clock_of(ps_pipeline *p, uint32_t part)
{
    if (part >= p->parts_n) {
        size_t n = part + 1;
        part_clock *v = realloc(p->parts, n * sizeof(*v));
        if (v == NULL)
            return NULL;
        for (size_t i = p->parts_n; i < n; i++) {
            v[i].max_ts = INT64_MIN;
            v[i].hold_ts = INT64_MIN;
            v[i].last_ms = 0;
            v[i].seen = false;
            v[i].cause_len = 0;
            v[i].name = NULL;
        }
        p->parts = v;
        p->parts_n = n;
    }
    return &p->parts[part];
}

static int64_t own_watermark(const ps_pipeline *p, const part_clock *c)
{
    return c->max_ts == INT64_MIN ? INT64_MIN
                                  : c->max_ts - p->conf.allowed_lateness_ms;
}

static bool is_idle(const ps_pipeline *p, const part_clock *c)
{
    if (c->hold_ts != INT64_MIN)
        return false; /* held back by the run loop, not idle */
    return !c->seen || p->now_ms - c->last_ms > p->conf.idle_partition_ms;
}

/* Where the partition's clock stands for the global watermark: a held
 * partition's next event is at hold_ts. */
static int64_t front_watermark(const ps_pipeline *p, const part_clock *c)
{
    if (c->hold_ts != INT64_MIN && c->hold_ts > c->max_ts)
        return c->hold_ts - p->conf.allowed_lateness_ms;
    return own_watermark(p, c);
}

int64_t ps_pipeline_watermark(const ps_pipeline *p, uint32_t part)
{
    if (part >= p->parts_n)
        return p->global_wm;
    const part_clock *c = &p->parts[part];
    int64_t own = own_watermark(p, c);
    if (is_idle(p, c) && p->global_wm > own)
        return p->global_wm;
    return own;
}

ps_str ps_pipeline_watermark_cause(const ps_pipeline *p, uint32_t part)
{
    if (part == UINT32_MAX)
        part = (uint32_t)p->global_part;
    if (part >= p->parts_n)
        return (ps_str){"", 0};
    return (ps_str){p->parts[part].cause, p->parts[part].cause_len};
}

int64_t ps_pipeline_global_watermark(const ps_pipeline *p)
{
    return p->global_wm;
}

static void update_global_wm(ps_pipeline *p)
{
    int64_t busy_min = INT64_MAX, any_max = INT64_MIN;
    size_t busy_part = 0, any_part = 0;
    for (size_t i = 0; i < p->parts_n; i++) {
        const part_clock *c = &p->parts[i];
        int64_t w = front_watermark(p, c);
        if (w == INT64_MIN)
            continue;
        if (w > any_max) {
            any_max = w;
            any_part = i;
        }
        if (!is_idle(p, c) && w < busy_min) {
            busy_min = w;
            busy_part = i;
        }
    }
    int64_t wm = busy_min != INT64_MAX ? busy_min : any_max;
    if (wm > p->global_wm) { /* never goes back */
        p->global_wm = wm;
        p->global_part = busy_min != INT64_MAX ? busy_part : any_part;
    }
}

int64_t ps_pipeline_partition_clock(const ps_pipeline *p, uint32_t slot,
                                    ps_str *cause)
{
    if (slot >= p->parts_n) {
        *cause = (ps_str){"", 0};
        return INT64_MIN;
    }
    const part_clock *c = &p->parts[slot];
    *cause = (ps_str){c->cause, c->cause_len};
    return c->max_ts;
}

int ps_pipeline_hold_partition(ps_pipeline *p, uint32_t slot, int64_t hold_ts,
                               int64_t now_ms)
{
    part_clock *c = clock_of(p, slot);
    if (c == NULL)
        return PS_ERR_NOMEM;
    c->hold_ts = hold_ts;
    if (now_ms > c->last_ms)
        c->last_ms = now_ms;
    if (hold_ts == INT64_MIN && c->max_ts != INT64_MIN)
        c->seen = true;
    return PS_OK;
}

bool ps_pipeline_partition_is_idle(const ps_pipeline *p, uint32_t slot)
{
    return slot >= p->parts_n || is_idle(p, &p->parts[slot]);
}

int ps_pipeline_restore_partition_clock(ps_pipeline *p, uint32_t slot,
                                        int64_t max_ts, ps_str cause,
                                        int64_t now_ms)
{
    part_clock *c = clock_of(p, slot);
    if (c == NULL)
        return PS_ERR_NOMEM;
    c->max_ts = max_ts;
    c->hold_ts = INT64_MIN;
    c->cause_len = cause.len <= PS_ID_MAX ? cause.len : PS_ID_MAX;
    memcpy(c->cause, cause.ptr, c->cause_len);
    c->seen = true;
    c->last_ms = now_ms;
    if (now_ms > p->now_ms)
        p->now_ms = now_ms;
    update_global_wm(p);
    return PS_OK;
}

int ps_pipeline_name_slot(ps_pipeline *p, uint32_t slot, const char *name)
{
    part_clock *c = clock_of(p, slot);
    char *copy = strdup(name);
    if (c == NULL || copy == NULL) {
        free(copy);
        return PS_ERR_NOMEM;
    }
    free(c->name);
    c->name = copy;
    return PS_OK;
}

ps_str ps_pipeline_slot_name(const ps_pipeline *p, uint32_t slot)
{
    if (slot >= p->parts_n || p->parts[slot].name == NULL)
        return (ps_str){"", 0};
    return (ps_str){p->parts[slot].name,
                    (uint32_t)strlen(p->parts[slot].name)};
}

bool ps_pipeline_slot_by_name(const ps_pipeline *p, ps_str name,
                              uint32_t *slot)
{
    for (size_t i = 0; i < p->parts_n; i++) {
        const char *n = p->parts[i].name;
        if (n != NULL && strlen(n) == name.len &&
            memcmp(n, name.ptr, name.len) == 0) {
            *slot = (uint32_t)i;
            return true;
        }
    }
    return false;
}

int ps_pipeline_advance(ps_pipeline *p, int64_t now_ms)
{
    p->now_ms = now_ms;
    update_global_wm(p);
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        if (ps_aggregates[i]->advance == NULL)
            continue;
        int rc = ps_aggregates[i]->advance(p->self[i]);
        if (rc < 0)
            return rc;
    }
    return PS_OK;
}

/* --------------------------------------------------------------- apply */

int ps_pipeline_apply(ps_pipeline *p, const ps_event *ev, ps_customer *cust,
                      bool *late)
{
    ps_entity *product = NULL, *campaign = NULL;
    if (ev->product_id.ptr != NULL &&
        (product = ps_pipeline_entity(p, PS_KIND_PRODUCT, ev->product_id)) ==
            NULL)
        return PS_ERR_NOMEM;
    if (ev->campaign.ptr != NULL &&
        (campaign = ps_pipeline_entity(p, PS_KIND_CAMPAIGN, ev->campaign)) ==
            NULL)
        return PS_ERR_NOMEM;
    return ps_pipeline_apply_to(p, ev, cust, product, campaign, late);
}

int ps_pipeline_apply_to(ps_pipeline *p, const ps_event *ev,
                         ps_customer *cust, ps_entity *product,
                         ps_entity *campaign, bool *late)
{
    part_clock *clk = clock_of(p, ev->part);
    ps_apply_ctx ctx = {0};

    if (clk == NULL)
        return PS_ERR_NOMEM;
    *late = clk->max_ts != INT64_MIN && ev->ts < own_watermark(p, clk);
    /* busy from now on: its own events are judged by its own watermark,
     * never by the global one it would follow if it were idle */
    clk->seen = true;
    clk->last_ms = p->now_ms;
    ctx.product = product;
    ctx.campaign = campaign;
    ctx.cust = cust;
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        const ps_aggregate_ops *ops = ps_aggregates[i];
        ctx.cust_state = ps_pipeline_slice(p, cust, i);
        ctx.product_state =
            ctx.product ? ps_pipeline_slice(p, ctx.product, i) : NULL;
        ctx.campaign_state =
            ctx.campaign ? ps_pipeline_slice(p, ctx.campaign, i) : NULL;
        ctx.global_state = ps_pipeline_slice(p, p->global, i);
        int rc = ops->apply(p->self[i], ev, &ctx);
        if (rc == PS_AGG_DROP)
            return PS_AGG_DROP; /* nothing was changed before the drop */
        if (rc < 0)
            return rc;
    }
    /* the clock moves only with applied events (duplicates excluded) */
    if (ev->ts > clk->max_ts) {
        clk->max_ts = ev->ts;
        clk->cause_len = ev->event_id.len;
        memcpy(clk->cause, ev->event_id.ptr, ev->event_id.len);
    }
    clk->last_ms = p->now_ms;
    if (ps_pipeline_touch(p, cust) < 0 || ps_pipeline_touch(p, p->global) < 0 ||
        (ctx.product && ps_pipeline_touch(p, ctx.product) < 0) ||
        (ctx.campaign && ps_pipeline_touch(p, ctx.campaign) < 0))
        return PS_ERR_NOMEM;
    return PS_OK;
}

/* --------------------------------------------------------------- flush */

void ps_pipeline_save_customer(ps_pipeline *p, const ps_customer *cust,
                               ps_wbuf *w)
{
    uint8_t count = 0;
    for (size_t i = 0; i < ps_aggregates_count; i++)
        count += ps_aggregates[i]->save_customer != NULL;
    ps_wbuf_u8(w, STATE_VERSION);
    ps_wbuf_u8(w, count);
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        const ps_aggregate_ops *ops = ps_aggregates[i];
        if (ops->save_customer == NULL)
            continue;
        size_t name_len = strlen(ops->name);
        ps_wbuf_u8(w, (uint8_t)name_len);
        ps_wbuf_put(w, ops->name, name_len);
        size_t len_at = w->len;
        ps_wbuf_u32(w, 0);
        size_t start = w->len;
        ops->save_customer(p->self[i], cust,
                           ps_pipeline_slice(p, cust, i), w);
        if (w->oom)
            return;
        uint32_t part = (uint32_t)(w->len - start);
        for (int b = 0; b < 4; b++)
            w->data[len_at + b] = (unsigned char)(part >> (8 * b));
    }
}

static void write_customer(ps_pipeline *p, ps_customer *c, ps_batch *b)
{
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "cust:", c->id, NULL);
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->write_customer != NULL)
            ps_aggregates[i]->write_customer(p->self[i], c,
                                             ps_pipeline_slice(p, c, i), b);
    ps_batch_end(b);
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->write_customer_keys != NULL)
            ps_aggregates[i]->write_customer_keys(
                p->self[i], c, ps_pipeline_slice(p, c, i), b);

    /* --customer-ttl-s: the output keys of a customer who stops sending
     * events expire; every write renews them (EXPIRE of a key that does
     * not exist, e.g. no open funnel, is a no-op).  The saved state
     * ps:state:cust:{id} is kept: counts stay exact if it comes back. */
    if (p->conf.customer_ttl_s > 0) {
        static const char *const tails[] = {NULL, ":intent", ":reco"};
        for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
            ps_batch_begin(b, "EXPIRE");
            ps_batch_arg_key(b, "cust:", c->id, tails[t]);
            ps_batch_arg_i64(b, p->conf.customer_ttl_s);
            ps_batch_end(b);
        }
    }

    ps_wbuf_reset(&p->blob);
    ps_pipeline_save_customer(p, c, &p->blob);
    ps_batch_begin(b, "SET");
    ps_batch_arg_key(b, "state:cust:", c->id, NULL);
    ps_batch_arg(b, p->blob.data, p->blob.len);
    ps_batch_end(b);
}

void ps_pipeline_write(ps_pipeline *p, ps_batch *b)
{
    for (size_t k = 0; k < p->dirty_n; k++) {
        ps_entity *e = p->dirty[k];
        if (e->kind == PS_KIND_CUSTOMER) {
            write_customer(p, e, b);
            continue;
        }
        for (size_t i = 0; i < ps_aggregates_count; i++)
            if (ps_aggregates[i]->write_shared_entity != NULL &&
                ps_aggregates[i]->state_size[e->kind] > 0)
                ps_aggregates[i]->write_shared_entity(
                    p->self[i], e, ps_pipeline_slice(p, e, i), b);
    }
    if (p->global_wm != INT64_MIN) {
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "global", (ps_str){"", 0}, NULL);
        ps_batch_arg_cstr(b, "watermark");
        ps_batch_arg_i64(b, p->global_wm);
        ps_batch_end(b);
    }
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->write_shared != NULL)
            ps_aggregates[i]->write_shared(p->self[i], b);
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        if (ps_aggregates[i]->save_state == NULL)
            continue;
        ps_wbuf_reset(&p->blob);
        if (ps_aggregates[i]->save_state(p->self[i], &p->blob) != 1 ||
            p->blob.oom)
            continue;
        ps_str name = {ps_aggregates[i]->name,
                       (uint32_t)strlen(ps_aggregates[i]->name)};
        ps_batch_begin(b, "SET");
        ps_batch_arg_key(b, "state:agg:", name, NULL);
        ps_batch_arg(b, p->blob.data, p->blob.len);
        ps_batch_end(b);
    }
}

bool ps_pipeline_has_state(size_t agg_index)
{
    return agg_index < ps_aggregates_count &&
           ps_aggregates[agg_index]->load_state != NULL;
}

int ps_pipeline_load_state(ps_pipeline *p, size_t agg_index, const void *blob,
                           size_t len)
{
    if (!ps_pipeline_has_state(agg_index))
        return PS_OK;
    return ps_aggregates[agg_index]->load_state(p->self[agg_index], blob, len);
}

void ps_pipeline_flushed(ps_pipeline *p)
{
    for (size_t k = 0; k < p->dirty_n; k++) {
        ps_entity *e = p->dirty[k];
        e->flags &= ~ENT_DIRTY;
        if (e->kind == PS_KIND_CUSTOMER)
            continue;
        for (size_t i = 0; i < ps_aggregates_count; i++)
            if (ps_aggregates[i]->flushed_shared_entity != NULL &&
                ps_aggregates[i]->state_size[e->kind] > 0)
                ps_aggregates[i]->flushed_shared_entity(
                    p->self[i], e, ps_pipeline_slice(p, e, i));
    }
    p->dirty_n = 0;
    p->generation++;
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->flushed != NULL)
            ps_aggregates[i]->flushed(p->self[i]);
}

void ps_pipeline_forget_all(ps_pipeline *p)
{
    table *t = &p->tables[PS_KIND_CUSTOMER];
    assert(p->dirty_n == 0);
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i] == NULL)
            continue;
        forget_customer(p, t->slots[i]);
        free(t->slots[i]);
        t->slots[i] = NULL;
    }
    t->count = 0;
}

/* Remove slot i of a linear-probing table, moving later entries of the
 * same run back so every entry stays reachable from its home slot. */
static void table_remove_at(table *t, size_t i)
{
    size_t mask = t->cap - 1, j = i;
    t->slots[i] = NULL;
    t->count--;
    for (;;) {
        j = (j + 1) & mask;
        ps_entity *e = t->slots[j];
        if (e == NULL)
            return;
        size_t home = (size_t)e->hash & mask;
        /* e may fill the hole at i unless its home lies in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slots[i] = e;
            t->slots[j] = NULL;
            i = j;
        }
    }
}

size_t ps_pipeline_evict_idle(ps_pipeline *p, size_t keep)
{
    table *t = &p->tables[PS_KIND_CUSTOMER];
    size_t evicted = 0, steps = 0;
    /* two full turns at most: the first clears reference bits */
    while (t->count > keep && steps < 2 * t->cap) {
        size_t i = p->evict_hand++ & (t->cap - 1);
        steps++;
        ps_entity *e = t->slots[i];
        if (e == NULL || (e->flags & ENT_DIRTY))
            continue;
        if (e->flags & ENT_REF) {
            e->flags &= ~ENT_REF;
            continue;
        }
        forget_customer(p, e);
        table_remove_at(t, i);
        free(e);
        evicted++;
        p->evict_hand--; /* slot i may now hold a shifted entry */
    }
    return evicted;
}

void ps_pipeline_foreach(ps_pipeline *p, ps_kind kind,
                         void (*fn)(void *opaque, ps_entity *e), void *opaque)
{
    table *t = &p->tables[kind];
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i] != NULL)
            fn(opaque, t->slots[i]);
}

size_t ps_pipeline_customer_count(const ps_pipeline *p)
{
    return p->tables[PS_KIND_CUSTOMER].count;
}

size_t ps_pipeline_dirty_count(const ps_pipeline *p) { return p->dirty_n; }

uint32_t ps_pipeline_generation(const ps_pipeline *p) { return p->generation; }
