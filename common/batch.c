/*
 * batch.c -- a list of Redis commands built during one flush (batch.h).
 *
 * Layout.  Three growable arrays, rewound by ps_batch_clear() and never
 * shrunk, so once a batch has seen its largest flush it allocates nothing:
 *
 *   data   all argument bytes, back to back, each followed by a NUL that
 *          is not part of it (binary-safe; the NUL only lets a caller pass
 *          argv[k] on as a C string, e.g. ps_batch_begin(b2, argv[0]));
 *   off    off[j] is where argument j starts in data;
 *   cmd    cmd[i] is the index in off of command i's first argument (its
 *          name).
 *
 * Invariants (checked by batch_invariants() in debug builds):
 *   - off has nargs + 1 valid entries and off[nargs] == data_len, so argument
 *     j spans data[off[j] .. off[j + 1] - 1) and data[off[j + 1] - 1] == 0;
 *   - cmd has ncmd + 1 valid entries and cmd[ncmd] is where the next command
 *     starts: == nargs when no command is open, the open command's name
 *     otherwise.  So command i has cmd[i + 1] - cmd[i] arguments and the
 *     complete commands hold off[cmd[ncmd]] - cmd[ncmd] argument bytes.
 * Offsets rather than pointers are stored, so growing data never
 * invalidates anything; pointers are made only by ps_batch_argv().
 *
 * Allocation failure.  The header has no way to report it, so the first
 * failed allocation sets a sticky `oom` flag that only ps_batch_clear()
 * resets.  While it is set, ps_batch_end() drops every command and
 * ps_batch_count()/ps_batch_bytes() report 0: the sink then sends nothing,
 * so a flush is written entirely or not at all, never a partial transaction
 * (which would advance ps:offsets:* over changes that were lost), and
 * ps_batch_error() tells the caller it happened.
 *
 * Ownership: the batch owns its arenas and a copy of the prefix; arguments
 * are copied in, so callers may reuse their buffers at once.
 */
#include "batch.h"
#include "error.h"
#include "numfmt.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ps_batch {
    char *prefix;
    size_t prefix_len;

    char *data; /* argument bytes */
    size_t data_len, data_cap;

    size_t *off; /* nargs + 1 entries used */
    size_t nargs, off_cap;

    size_t *cmd; /* ncmd + 1 entries used */
    size_t ncmd, cmd_cap;

    bool open; /* a command was begun and not yet ended */
    bool oom;  /* an allocation failed since the last clear */
};

/* ------------------------------------------------------------------------
 * Growth helpers.  Each returns false (and sets oom) when memory runs out.
 * ------------------------------------------------------------------------ */

/* Grow *buf (elements of size elem) so it holds at least need elements. */
static bool grow(ps_batch *b, void **buf, size_t *cap, size_t need,
                 size_t elem, size_t initial)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap : initial;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem) {
            b->oom = true;
            return false;
        }
        ncap *= 2;
    }
    void *p = realloc(*buf, ncap * elem);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    *buf = p;
    *cap = ncap;
    return true;
}

static bool reserve_data(ps_batch *b, size_t extra)
{
    if (extra > SIZE_MAX - b->data_len) {
        b->oom = true;
        return false;
    }
    return grow(b, (void **)&b->data, &b->data_cap, b->data_len + extra, 1,
                4096);
}

#ifndef NDEBUG
static void batch_invariants(const ps_batch *b)
{
    assert(b->off[b->nargs] == b->data_len);
    assert(b->cmd[b->ncmd] <= b->nargs);
    assert(b->open || b->cmd[b->ncmd] == b->nargs);
}
#else
#define batch_invariants(b) ((void)0)
#endif

/* Start a new argument at the end of data: reserve its off slot.  The
 * bytes are appended by the caller, then finish_arg() closes it. */
static bool start_arg(ps_batch *b)
{
    assert(b->open && "ps_batch_arg* outside ps_batch_begin/end");
    if (b->oom || !b->open) /* !open: a bug, ignored when NDEBUG */
        return false;
    /* off[nargs + 1] will be the end of the new argument. */
    return grow(b, (void **)&b->off, &b->off_cap, b->nargs + 2,
                sizeof(size_t), 256);
}

/* Terminate the argument being written (its NUL was reserved). */
static void finish_arg(ps_batch *b)
{
    b->data[b->data_len++] = '\0';
    b->nargs++;
    b->off[b->nargs] = b->data_len;
}

/* Drop the open command's arguments and bytes (cancel, empty or oom). */
static void rewind_open(ps_batch *b)
{
    b->nargs = b->cmd[b->ncmd];
    b->data_len = b->off[b->nargs];
}

/* ------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------ */

ps_batch *ps_batch_new(const char *prefix)
{
    ps_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    if (prefix == NULL)
        prefix = "";
    b->prefix = strdup(prefix);
    b->off = malloc(256 * sizeof(size_t));
    b->cmd = malloc(64 * sizeof(size_t));
    if (b->prefix == NULL || b->off == NULL || b->cmd == NULL) {
        ps_batch_destroy(b);
        return NULL;
    }
    b->prefix_len = strlen(prefix);
    b->off_cap = 256;
    b->cmd_cap = 64;
    b->off[0] = 0;
    b->cmd[0] = 0;
    return b;
}

void ps_batch_destroy(ps_batch *b)
{
    if (b == NULL)
        return;
    free(b->prefix);
    free(b->data);
    free(b->off);
    free(b->cmd);
    free(b);
}

void ps_batch_clear(ps_batch *b)
{
    b->data_len = 0;
    b->nargs = 0;
    b->ncmd = 0;
    b->off[0] = 0;
    b->cmd[0] = 0;
    b->open = false;
    b->oom = false;
}

const char *ps_batch_prefix(const ps_batch *b) { return b->prefix; }

int ps_batch_error(const ps_batch *b) { return b->oom ? PS_ERR_NOMEM : PS_OK; }

size_t ps_batch_count(const ps_batch *b) { return b->oom ? 0 : b->ncmd; }

size_t ps_batch_bytes(const ps_batch *b)
{
    return b->oom ? 0 : b->off[b->cmd[b->ncmd]] - b->cmd[b->ncmd];
}

/* "<lead><n>\r\n" */
static inline void resp_head(ps_wbuf *out, char lead, size_t n)
{
    char tmp[32];
    tmp[0] = lead;
    size_t k = 1 + ps_fmt_i64(tmp + 1, (int64_t)n);
    tmp[k++] = '\r';
    tmp[k++] = '\n';
    ps_wbuf_put(out, tmp, k);
}

void ps_batch_resp(const ps_batch *b, ps_wbuf *out)
{
    if (b->oom)
        return;
    for (size_t i = 0; i < b->ncmd; i++) {
        size_t first = b->cmd[i], end = b->cmd[i + 1];
        resp_head(out, '*', end - first);
        for (size_t j = first; j < end; j++) {
            size_t len = b->off[j + 1] - b->off[j] - 1; /* (its NUL) */
            resp_head(out, '$', len);
            ps_wbuf_put(out, b->data + b->off[j], len);
            ps_wbuf_put(out, "\r\n", 2);
        }
    }
}

/* ------------------------------------------------------------------------
 * Building commands
 * ------------------------------------------------------------------------ */

void ps_batch_begin(ps_batch *b, const char *name)
{
    assert(!b->open && "ps_batch_begin while a command is open");
    ps_batch_cancel(b); /* when NDEBUG: drop the unfinished command */
    b->open = true;
    ps_batch_arg_cstr(b, name);
}

void ps_batch_arg(ps_batch *b, const void *data, size_t len)
{
    if (!start_arg(b) || len == SIZE_MAX || !reserve_data(b, len + 1))
        return;
    if (len > 0)
        memcpy(b->data + b->data_len, data, len);
    b->data_len += len;
    finish_arg(b);
}

void ps_batch_arg_cstr(ps_batch *b, const char *s)
{
    ps_batch_arg(b, s, strlen(s));
}

void ps_batch_arg_str(ps_batch *b, ps_str s)
{
    ps_batch_arg(b, s.ptr ? s.ptr : "", s.ptr ? s.len : 0);
}

void ps_batch_arg_i64(ps_batch *b, int64_t v)
{
    char tmp[PS_FMT_NUM_MAX];
    ps_batch_arg(b, tmp, ps_fmt_i64(tmp, v));
}

/* Numbers are formatted by common/numfmt.c into a stack buffer. */
void ps_batch_arg_dbl(ps_batch *b, double v)
{
    char tmp[PS_FMT_NUM_MAX];
    ps_batch_arg(b, tmp, ps_fmt_dbl(tmp, v));
}

void ps_batch_arg_real(ps_batch *b, double v)
{
    char tmp[PS_FMT_NUM_MAX];
    ps_batch_arg(b, tmp, ps_fmt_real(tmp, v));
}

void ps_batch_arg_fmt(ps_batch *b, const char *fmt, ...)
{
    if (!start_arg(b))
        return;
    /* Format straight into the arena, NUL included; grow once if it did
     * not fit. */
    size_t room = b->data_cap - b->data_len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->data + b->data_len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        /* Encoding error: store an empty argument, the command stays
         * well-formed.  Only a broken format string gets here. */
        if (reserve_data(b, 1))
            finish_arg(b);
        return;
    }
    if ((size_t)n >= room) {
        if (!reserve_data(b, (size_t)n + 1))
            return;
        va_start(ap, fmt);
        vsnprintf(b->data + b->data_len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->data_len += (size_t)n;
    finish_arg(b);
}

void ps_batch_arg_key(ps_batch *b, const char *head, ps_str id,
                      const char *tail)
{
    size_t hlen = head ? strlen(head) : 0;
    size_t tlen = tail ? strlen(tail) : 0;
    size_t ilen = id.ptr ? id.len : 0;
    size_t len = b->prefix_len + hlen + ilen + tlen;
    if (!start_arg(b) || !reserve_data(b, len + 1))
        return;
    char *p = b->data + b->data_len;
    memcpy(p, b->prefix, b->prefix_len);
    p += b->prefix_len;
    if (hlen)
        memcpy(p, head, hlen);
    p += hlen;
    if (ilen)
        memcpy(p, id.ptr, ilen);
    p += ilen;
    if (tlen)
        memcpy(p, tail, tlen);
    b->data_len += len;
    finish_arg(b);
}

void ps_batch_end(ps_batch *b)
{
    assert(b->open && "ps_batch_end without ps_batch_begin");
    if (!b->open)
        return;
    b->open = false;
    size_t argc = b->nargs - b->cmd[b->ncmd];
    if (b->oom || argc <= 1 ||
        !grow(b, (void **)&b->cmd, &b->cmd_cap, b->ncmd + 2, sizeof(size_t),
              64)) {
        rewind_open(b);
        batch_invariants(b);
        return;
    }
    b->ncmd++;
    b->cmd[b->ncmd] = b->nargs;
    batch_invariants(b);
}

void ps_batch_cancel(ps_batch *b)
{
    if (!b->open)
        return;
    b->open = false;
    rewind_open(b);
    batch_invariants(b);
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

size_t ps_batch_argc(const ps_batch *b, size_t i)
{
    assert(i < b->ncmd);
    return b->cmd[i + 1] - b->cmd[i];
}

void ps_batch_argv(const ps_batch *b, size_t i, const char **argv,
                   size_t *argvlen)
{
    assert(i < b->ncmd);
    size_t first = b->cmd[i], argc = b->cmd[i + 1] - first;
    for (size_t k = 0; k < argc; k++) {
        size_t j = first + k;
        argv[k] = b->data + b->off[j];
        argvlen[k] = b->off[j + 1] - b->off[j] - 1;
    }
}
