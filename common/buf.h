/*
 * buf.h -- byte buffers for saved state (ps:state:* values).
 *
 * ps_wbuf grows as it is written; ps_rbuf reads a borrowed byte range and
 * fails (returns -1, sticky) instead of reading past its end, so a corrupt
 * or truncated saved state is an error, never a crash.  Fixed-width
 * integers and doubles are little-endian, independent of the host.
 */
#ifndef PS_BUF_H
#define PS_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct ps_wbuf {
    unsigned char *data;
    size_t len, cap;
    int oom; /* set when an allocation failed; writes are then dropped */
} ps_wbuf;

void ps_wbuf_init(ps_wbuf *w);
void ps_wbuf_clear(ps_wbuf *w); /* free memory */
void ps_wbuf_reset(ps_wbuf *w); /* len = 0, keep memory */
/* The growing path of ps_wbuf_put (out of line). */
void ps_wbuf_put_slow(ps_wbuf *w, const void *data, size_t len);

/* Writers are inline: saving state writes a few bytes at a time, for every
 * changed customer of every flush, and the call was a visible share of
 * the flush profile. */
static inline void ps_wbuf_put(ps_wbuf *w, const void *data, size_t len)
{
    if (w->len + len <= w->cap && !w->oom) {
        if (len > 0)
            memcpy(w->data + w->len, data, len);
        w->len += len;
        return;
    }
    ps_wbuf_put_slow(w, data, len);
}

static inline void ps_wbuf_u8(ps_wbuf *w, uint8_t v) { ps_wbuf_put(w, &v, 1); }

static inline void ps_wbuf_u32(ps_wbuf *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    ps_wbuf_put(w, b, 4);
}

static inline void ps_wbuf_u64(ps_wbuf *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    ps_wbuf_put(w, b, 8);
}

static inline void ps_wbuf_i64(ps_wbuf *w, int64_t v)
{
    ps_wbuf_u64(w, (uint64_t)v);
}

static inline void ps_wbuf_f64(ps_wbuf *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    ps_wbuf_u64(w, u);
}

typedef struct ps_rbuf {
    const unsigned char *p, *end;
    int err; /* set on the first read past the end */
} ps_rbuf;

void ps_rbuf_init(ps_rbuf *r, const void *data, size_t len);
int ps_rbuf_get(ps_rbuf *r, void *out, size_t len);
int ps_rbuf_u8(ps_rbuf *r, uint8_t *v);
int ps_rbuf_u32(ps_rbuf *r, uint32_t *v);
int ps_rbuf_u64(ps_rbuf *r, uint64_t *v);
int ps_rbuf_i64(ps_rbuf *r, int64_t *v);
int ps_rbuf_f64(ps_rbuf *r, double *v);
size_t ps_rbuf_left(const ps_rbuf *r);

#endif
