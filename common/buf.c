/*
 * buf.c -- growable write buffer and bounds-checked read buffer (buf.h).
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void ps_wbuf_init(ps_wbuf *w) { memset(w, 0, sizeof(*w)); }

void ps_wbuf_clear(ps_wbuf *w)
{
    free(w->data);
    memset(w, 0, sizeof(*w));
}

void ps_wbuf_reset(ps_wbuf *w)
{
    w->len = 0;
    w->oom = 0;
}

void ps_wbuf_put_slow(ps_wbuf *w, const void *data, size_t len)
{
    if (w->oom)
        return;
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 64;
        while (cap < w->len + len)
            cap *= 2;
        unsigned char *p = realloc(w->data, cap);
        if (p == NULL) {
            w->oom = 1;
            return;
        }
        w->data = p;
        w->cap = cap;
    }
    if (len > 0)
        memcpy(w->data + w->len, data, len);
    w->len += len;
}


void ps_rbuf_init(ps_rbuf *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    r->err = 0;
}

int ps_rbuf_get(ps_rbuf *r, void *out, size_t len)
{
    if (r->err || (size_t)(r->end - r->p) < len) {
        r->err = 1;
        return -1;
    }
    if (len > 0)
        memcpy(out, r->p, len);
    r->p += len;
    return 0;
}

int ps_rbuf_u8(ps_rbuf *r, uint8_t *v) { return ps_rbuf_get(r, v, 1); }

int ps_rbuf_u32(ps_rbuf *r, uint32_t *v)
{
    unsigned char b[4];
    if (ps_rbuf_get(r, b, 4) < 0)
        return -1;
    *v = 0;
    for (int i = 0; i < 4; i++)
        *v |= (uint32_t)b[i] << (8 * i);
    return 0;
}

int ps_rbuf_u64(ps_rbuf *r, uint64_t *v)
{
    unsigned char b[8];
    if (ps_rbuf_get(r, b, 8) < 0)
        return -1;
    *v = 0;
    for (int i = 0; i < 8; i++)
        *v |= (uint64_t)b[i] << (8 * i);
    return 0;
}

int ps_rbuf_i64(ps_rbuf *r, int64_t *v)
{
    uint64_t u;
    if (ps_rbuf_u64(r, &u) < 0)
        return -1;
    *v = (int64_t)u;
    return 0;
}

int ps_rbuf_f64(ps_rbuf *r, double *v)
{
    uint64_t u;
    if (ps_rbuf_u64(r, &u) < 0)
        return -1;
    memcpy(v, &u, 8);
    return 0;
}

size_t ps_rbuf_left(const ps_rbuf *r) { return (size_t)(r->end - r->p); }
