/*
 * batch.h -- a list of Redis commands built during one flush.
 *
 * Aggregates describe what changed since the last flush by appending
 * commands to a ps_batch; sinks/redis_sink.c sends the whole batch as one
 * MULTI/EXEC transaction.  The batch knows nothing about the network, so it
 * can be inspected in unit tests.
 *
 * Memory: all arguments are copied into two growable arenas (bytes and
 * argument offsets) that ps_batch_clear() rewinds without freeing, so a
 * steady-state flush allocates nothing.  Arguments are binary-safe.
 *
 * Building a command:
 *     ps_batch_begin(b, "HSET");
 *     ps_batch_arg_key(b, "cust:", id, NULL);        -> "ps:cust:<id>"
 *     ps_batch_arg_cstr(b, "events");
 *     ps_batch_arg_i64(b, 42);
 *     ps_batch_end(b);
 * A command begun must be ended before the next begins (asserted).
 * ps_batch_end() on a command with only its name is dropped, so a writer
 * may begin an HSET and end it without adding fields.
 *
 * Number formatting (contract section 3): integers exactly; doubles with
 * the fewest of 15..17 significant digits that read back as the same
 * double ("0.1", not "0.10000000000000001"), or, for derived values,
 * ps_batch_arg_real's 10 significant digits; non-finite doubles are
 * written as "nan", "inf" or "-inf" (aggregates should never produce them).
 *
 * Out of memory: the first failed allocation makes the batch empty until
 * ps_batch_clear() (count and bytes 0, later commands dropped), so a flush
 * is written completely or not at all; ps_batch_error() tells the caller.
 */
#ifndef PS_BATCH_H
#define PS_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

typedef struct ps_batch ps_batch;

/* New empty batch; every key built with ps_batch_arg_key starts with
 * prefix (copied; e.g. "ps:").  NULL on allocation failure. */
ps_batch *ps_batch_new(const char *prefix);
void ps_batch_destroy(ps_batch *b); /* NULL is a no-op */

/* Forget all commands, keep the memory. */
void ps_batch_clear(ps_batch *b);

/* The prefix given to ps_batch_new. */
const char *ps_batch_prefix(const ps_batch *b);

/* PS_ERR_NOMEM if an allocation failed since the last clear, else 0. */
int ps_batch_error(const ps_batch *b);

/* Number of complete commands, and total bytes of their arguments. */
size_t ps_batch_count(const ps_batch *b);
size_t ps_batch_bytes(const ps_batch *b);

/* Start a command: name is its first argument ("HSET", "XADD", ...). */
void ps_batch_begin(ps_batch *b, const char *name);
/* Append one argument to the open command. */
void ps_batch_arg(ps_batch *b, const void *data, size_t len);
void ps_batch_arg_cstr(ps_batch *b, const char *s);
void ps_batch_arg_str(ps_batch *b, ps_str s); /* null ps_str -> "" */
void ps_batch_arg_i64(ps_batch *b, int64_t v);
void ps_batch_arg_dbl(ps_batch *b, double v);
/* A derived real (probability, mean, ...): 10 significant digits, not
 * necessarily round-trip (%.10g), integral values exactly.  Both formats
 * are computed by common/numfmt.c, without printf in the usual range, and
 * the shorter text of this one also means fewer bytes for Redis. */
void ps_batch_arg_real(ps_batch *b, double v);
void ps_batch_arg_fmt(ps_batch *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append the key prefix + head + id + tail (head, tail may be NULL),
 * e.g. ps_batch_arg_key(b, "cust:", id, ":intent"). */
void ps_batch_arg_key(ps_batch *b, const char *head, ps_str id,
                      const char *tail);
/* Close the open command (dropped if it has no argument besides its name). */
void ps_batch_end(ps_batch *b);
/* Abandon the open command, if any. */
void ps_batch_cancel(ps_batch *b);

/* Read access for sinks and tests.  argv/argvlen must have room for
 * ps_batch_argc(b, i) entries; the pointers stay valid until the next
 * modification of the batch.  Every argument is followed by a NUL byte
 * (not counted in its length), so text arguments can be used as C
 * strings. */
size_t ps_batch_argc(const ps_batch *b, size_t i);
void ps_batch_argv(const ps_batch *b, size_t i, const char **argv,
                   size_t *argvlen);

/* Append every complete command to out in the Redis protocol (RESP: "*N",
 * then "$len" and the bytes of each argument, CRLF-terminated), ready to
 * be written to a connection as it is: the sink sends a flush this way
 * instead of formatting it again argument by argument. */
void ps_batch_resp(const ps_batch *b, ps_wbuf *out);

#endif
