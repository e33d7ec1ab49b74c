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
 * (which would advance ps:offsets:* over changes that were lost).  The
 * caller still cannot tell that from an empty flush: batch.h should grow a
 * `int ps_batch_error(const ps_batch *)` (PS_ERR_NOMEM) for that.
 *
 * Ownership: the batch owns its arenas and a copy of the prefix; arguments
 * are copied in, so callers may reuse their buffers at once.
 */
#include "batch.h"
#include "error.h"

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
    /* Exact decimal, written backwards; the magnitude is taken as unsigned
     * so INT64_MIN needs no special case. */
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    ps_batch_arg(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* Integral doubles below 2^53 are exact integers: print them as such. */
static bool arg_integral(ps_batch *b, double v)
{
    if (v == 0.0 && signbit(v)) {
        ps_batch_arg(b, "-0", 2);
        return true;
    }
    if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v) {
        ps_batch_arg_i64(b, (int64_t)v);
        return true;
    }
    return false;
}

static bool arg_nonfinite(ps_batch *b, double v)
{
    if (isnan(v)) {
        ps_batch_arg(b, "nan", 3);
        return true;
    }
    if (isinf(v)) {
        if (v > 0)
            ps_batch_arg(b, "inf", 3);
        else
            ps_batch_arg(b, "-inf", 4);
        return true;
    }
    return false;
}

void ps_batch_arg_dbl(ps_batch *b, double v)
{
    if (arg_nonfinite(b, v) || arg_integral(b, v))
        return;
    /* The fewest of 15, 16, 17 significant digits that read back as the
     * same double: 17 always round-trip (IEEE 754), and most values people
     * see (0.1, 39940.21) need 15. */
    char tmp[32];
    int n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", digits, v);
        if (digits == 17 || strtod(tmp, NULL) == v)
            break;
    }
    assert(n > 0 && (size_t)n < sizeof(tmp));
    ps_batch_arg(b, tmp, (size_t)n);
}

void ps_batch_arg_real(ps_batch *b, double v)
{
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
                                   1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13};
    if (arg_nonfinite(b, v) || arg_integral(b, v))
        return;
    double a = fabs(v);
    if (a < 1e-4 || a >= 1e9) {
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "%.10g", v);
        ps_batch_arg(b, tmp, (size_t)n);
        return;
    }
    /* 10 significant digits with integer arithmetic: e = floor(log10 a),
     * scale so that the integer m has 10 digits, then place the point. */
    int e = 0;
    while (e < 8 && a >= pow10[e + 1])
        e++;
    while (e > -4 && a < (e >= 0 ? pow10[e] : 1.0 / pow10[-e]))
        e--;
    int decimals = 9 - e; /* 1 .. 13 */
    uint64_t m = (uint64_t)llround(a * pow10[decimals]);
    uint64_t unit = (uint64_t)pow10[decimals];
    uint64_t ip = m / unit, fp = m % unit;
    char tmp[40], *p = tmp;
    if (v < 0)
        *p++ = '-';
    char digits[24], *d = digits + sizeof(digits);
    do {
        *--d = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip != 0);
    memcpy(p, d, (size_t)(digits + sizeof(digits) - d));
    p += digits + sizeof(digits) - d;
    if (fp != 0) {
        char frac[20];
        for (int i = decimals - 1; i >= 0; i--) {
            frac[i] = (char)('0' + fp % 10);
            fp /= 10;
        }
        int len = decimals;
        while (len > 0 && frac[len - 1] == '0')
            len--;
        *p++ = '.';
        memcpy(p, frac, (size_t)len);
        p += len;
    }
    ps_batch_arg(b, tmp, (size_t)(p - tmp));
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
