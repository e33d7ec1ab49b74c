/*
 * pipeline.c -- customer table + aggregates (see pipeline.h).
 *
 * Customer records.  One heap block per customer, allocated when the
 * customer is first seen (never per event):
 *
 *     [ ps_customer header | slice 0 | slice 1 | ... | id bytes ]
 *
 * Slice offsets are fixed at init from every aggregate's cust_state_size,
 * each rounded up to 8 bytes.  The id is stored inside the block and
 * hdr.id points at it.
 *
 * Index.  Open addressing with linear probing over a power-of-two array of
 * record pointers, kept at most 70 % full; the 64-bit hash of the id is
 * stored in the header so growing never rehashes bytes.  Nothing is ever
 * removed yet (the delivery issue adds eviction of idle customers).
 *
 * Dirty list.  A customer changed since the last successful flush is in
 * `dirty` exactly once (flag PS_CUST_DIRTY); a flush writes each of them
 * once however many events it saw.  A failed flush keeps the list, so the
 * next attempt writes them again with the newer values.
 */
#include "pipeline.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

#define PS_CUST_DIRTY 1u
#define STATE_VERSION 1

struct ps_pipeline {
    ps_agg_env env;
    void **self;          /* per aggregate */
    size_t *slice_off;    /* per aggregate, from the record start */
    size_t states_end;    /* where the id bytes start */

    ps_customer **slots;  /* index, NULL = empty */
    size_t cap, count;

    ps_customer **dirty;
    size_t dirty_n, dirty_cap;

    ps_wbuf blob;         /* reused for saved state */
};

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

static void *slice(const ps_pipeline *p, const ps_customer *c, size_t i)
{
    return (char *)c + p->slice_off[i];
}

ps_pipeline *ps_pipeline_new(const ps_agg_env *env, char *errstr,
                             size_t errstr_size)
{
    ps_pipeline *p = calloc(1, sizeof(*p));
    size_t n = ps_aggregates_count;

    if (p == NULL)
        goto nomem;
    p->env = *env;
    p->self = calloc(n ? n : 1, sizeof(*p->self));
    p->slice_off = calloc(n ? n : 1, sizeof(*p->slice_off));
    p->cap = 1024;
    p->slots = calloc(p->cap, sizeof(*p->slots));
    if (p->self == NULL || p->slice_off == NULL || p->slots == NULL)
        goto nomem;
    ps_wbuf_init(&p->blob);

    size_t off = align8(sizeof(ps_customer));
    for (size_t i = 0; i < n; i++) {
        p->slice_off[i] = off;
        off += align8(ps_aggregates[i]->cust_state_size);
    }
    p->states_end = off;

    for (size_t i = 0; i < n; i++) {
        const ps_aggregate_ops *ops = ps_aggregates[i];
        if (ops->init != NULL &&
            ops->init(&p->self[i], &p->env, errstr, errstr_size) < 0) {
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
    for (size_t i = 0; p->self != NULL && i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->destroy != NULL)
            ps_aggregates[i]->destroy(p->self[i]);
    for (size_t i = 0; p->slots != NULL && i < p->cap; i++)
        free(p->slots[i]);
    free(p->slots);
    free(p->dirty);
    free(p->self);
    free(p->slice_off);
    ps_wbuf_clear(&p->blob);
    free(p);
}

static size_t probe(const ps_pipeline *p, ps_str id, uint64_t h)
{
    size_t mask = p->cap - 1, i = (size_t)h & mask;
    while (p->slots[i] != NULL) {
        const ps_customer *c = p->slots[i];
        if (c->hash == h && c->id.len == id.len &&
            memcmp(c->id.ptr, id.ptr, id.len) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

ps_customer *ps_pipeline_find(ps_pipeline *p, ps_str id)
{
    return p->slots[probe(p, id, hash_id(id))];
}

static int grow(ps_pipeline *p)
{
    size_t cap = p->cap * 2;
    ps_customer **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return PS_ERR_NOMEM;
    for (size_t i = 0; i < p->cap; i++) {
        ps_customer *c = p->slots[i];
        if (c == NULL)
            continue;
        size_t j = (size_t)c->hash & (cap - 1);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = c;
    }
    free(p->slots);
    p->slots = slots;
    p->cap = cap;
    return PS_OK;
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
            if (ops->load_customer(p->self[i], slice(p, c, i), &part) < 0 ||
                part.err)
                return PS_ERR_STATE;
        }
    }
    return ps_rbuf_left(&r) == 0 ? PS_OK : PS_ERR_STATE;
}

ps_customer *ps_pipeline_add(ps_pipeline *p, ps_str id, const void *blob,
                             size_t len, int *err)
{
    ps_customer *c;

    *err = PS_OK;
    if ((p->count + 1) * 10 > p->cap * 7 && grow(p) < 0) {
        *err = PS_ERR_NOMEM;
        return NULL;
    }
    c = calloc(1, p->states_end + id.len);
    if (c == NULL) {
        *err = PS_ERR_NOMEM;
        return NULL;
    }
    memcpy((char *)c + p->states_end, id.ptr, id.len);
    c->id.ptr = (char *)c + p->states_end;
    c->id.len = id.len;
    c->hash = hash_id(id);
    if (blob != NULL) {
        *err = load_blob(p, c, blob, len);
        if (*err < 0) {
            free(c);
            return NULL;
        }
    }
    size_t i = probe(p, id, c->hash);
    assert(p->slots[i] == NULL);
    p->slots[i] = c;
    p->count++;
    return c;
}

static int mark_dirty(ps_pipeline *p, ps_customer *c)
{
    if (c->flags & PS_CUST_DIRTY)
        return PS_OK;
    if (p->dirty_n == p->dirty_cap) {
        size_t cap = p->dirty_cap ? p->dirty_cap * 2 : 1024;
        ps_customer **d = realloc(p->dirty, cap * sizeof(*d));
        if (d == NULL)
            return PS_ERR_NOMEM;
        p->dirty = d;
        p->dirty_cap = cap;
    }
    c->flags |= PS_CUST_DIRTY;
    c->dirty_ix = (uint32_t)p->dirty_n;
    p->dirty[p->dirty_n++] = c;
    return PS_OK;
}

int ps_pipeline_apply(ps_pipeline *p, const ps_event *ev, ps_customer *cust)
{
    for (size_t i = 0; i < ps_aggregates_count; i++) {
        const ps_aggregate_ops *ops = ps_aggregates[i];
        int rc = ops->apply(p->self[i], ev, cust, slice(p, cust, i));
        if (rc == PS_AGG_DROP)
            return PS_AGG_DROP;
        if (rc < 0)
            return rc;
    }
    return mark_dirty(p, cust);
}

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
        ops->save_customer(p->self[i], slice(p, cust, i), w);
        if (w->oom)
            return;
        uint32_t part = (uint32_t)(w->len - start);
        for (int b = 0; b < 4; b++)
            w->data[len_at + b] = (unsigned char)(part >> (8 * b));
    }
}

void ps_pipeline_write(ps_pipeline *p, ps_batch *b)
{
    for (size_t k = 0; k < p->dirty_n; k++) {
        const ps_customer *c = p->dirty[k];
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "cust:", c->id, NULL);
        for (size_t i = 0; i < ps_aggregates_count; i++)
            if (ps_aggregates[i]->write_customer != NULL)
                ps_aggregates[i]->write_customer(p->self[i], c,
                                                 slice(p, c, i), b);
        ps_batch_end(b);

        ps_wbuf_reset(&p->blob);
        ps_pipeline_save_customer(p, c, &p->blob);
        ps_batch_begin(b, "SET");
        ps_batch_arg_key(b, "state:cust:", c->id, NULL);
        ps_batch_arg(b, p->blob.data, p->blob.len);
        ps_batch_end(b);
    }
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->write_shared != NULL)
            ps_aggregates[i]->write_shared(p->self[i], b);
}

void ps_pipeline_flushed(ps_pipeline *p)
{
    for (size_t k = 0; k < p->dirty_n; k++)
        p->dirty[k]->flags &= ~PS_CUST_DIRTY;
    p->dirty_n = 0;
    for (size_t i = 0; i < ps_aggregates_count; i++)
        if (ps_aggregates[i]->flushed != NULL)
            ps_aggregates[i]->flushed(p->self[i]);
}

void ps_pipeline_forget_all(ps_pipeline *p)
{
    assert(p->dirty_n == 0);
    for (size_t i = 0; i < p->cap; i++) {
        free(p->slots[i]);
        p->slots[i] = NULL;
    }
    p->count = 0;
}

size_t ps_pipeline_customer_count(const ps_pipeline *p) { return p->count; }

size_t ps_pipeline_dirty_count(const ps_pipeline *p) { return p->dirty_n; }
