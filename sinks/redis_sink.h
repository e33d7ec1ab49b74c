/*
 * redis_sink.h -- the Redis end of the pipeline (hiredis 0.14).
 *
 * One blocking connection.  ps_redis_sink_exec() sends a whole ps_batch as
 * one MULTI ... EXEC transaction, pipelined (all commands written, then all
 * replies read), so a flush is one round trip however many keys it writes.
 *
 * Failure model: when the connection drops or a reply is an error, the
 * context is freed and the call returns PS_ERR_IO with the reason in
 * ps_redis_sink_errstr().  Whether an EXEC that was sent but whose reply was
 * lost took effect is unknown to the sink: the caller decides (see
 * consumer/run.c: each transaction writes a flush token it can read back).
 * Every call on a disconnected sink first tries to reconnect, at most once
 * per backoff period (doubling from 100 ms to 5 s); while waiting it fails
 * fast with PS_ERR_IO.
 */
#ifndef PS_REDIS_SINK_H
#define PS_REDIS_SINK_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/batch.h"

typedef struct ps_redis_conf {
    const char *host;       /* "127.0.0.1" */
    int port;               /* 6379 */
    const char *user;       /* ACL user, NULL for none */
    const char *password;   /* AUTH password, NULL for none */
    int db;                 /* SELECT db, 0 default */
    int connect_timeout_ms; /* 2000 */
    int io_timeout_ms;      /* 10000 */
} ps_redis_conf;

typedef struct ps_redis_sink ps_redis_sink;

/* Connect (and AUTH/SELECT).  Returns NULL with errstr on failure. */
ps_redis_sink *ps_redis_sink_new(const ps_redis_conf *conf, char *errstr,
                                 size_t errstr_size);
void ps_redis_sink_destroy(ps_redis_sink *sink); /* NULL is a no-op */

/* Whether the sink has a live connection right now. */
bool ps_redis_sink_connected(const ps_redis_sink *sink);

/* Try to (re)connect now if disconnected and the backoff allows; 0 when
 * connected afterwards. */
int ps_redis_sink_reconnect(ps_redis_sink *sink);

/* Send batch as one MULTI/EXEC.  0 when EXEC replied with every command
 * applied; PS_ERR_IO otherwise (see the failure model above).  An empty
 * batch is a no-op returning 0.  The batch is written as it is encoded
 * by ps_batch_resp, not formatted again argument by argument. */
int ps_redis_sink_exec(ps_redis_sink *sink, const ps_batch *batch);


/* Pipelined GET of n keys; cb is called once per key in order, with
 * val == NULL when the key does not exist.  0 or PS_ERR_IO. */
typedef void (*ps_redis_value_cb)(void *opaque, size_t i, const char *val,
                                  size_t len);
int ps_redis_sink_get_many(ps_redis_sink *sink, size_t n, const char **keys,
                           const size_t *keylens, ps_redis_value_cb cb,
                           void *opaque);

/* HGETALL key; cb once per field.  0 (also for a missing key) or
 * PS_ERR_IO. */
typedef void (*ps_redis_field_cb)(void *opaque, const char *field,
                                  size_t flen, const char *val, size_t vlen);
int ps_redis_sink_hgetall(ps_redis_sink *sink, const char *key,
                          ps_redis_field_cb cb, void *opaque);

/* Pipelined HGETALL of n keys (keylens may be NULL for C strings); cb once
 * per field with the key's index.  0 or PS_ERR_IO (cb may already have
 * run for a prefix of the keys). */
typedef void (*ps_redis_hash_cb)(void *opaque, size_t i, const char *field,
                                 size_t flen, const char *val, size_t vlen);
int ps_redis_sink_hgetall_many(ps_redis_sink *sink, size_t n,
                               const char **keys, const size_t *keylens,
                               ps_redis_hash_cb cb, void *opaque);

/* ZRANGEBYSCORE key -inf (below LIMIT offset limit: the members scored
 * below `below`, lowest first, from the offset-th; cb once per member
 * (val = the member).  The number of members, or PS_ERR_IO. */
int ps_redis_sink_zrange_below(ps_redis_sink *sink, const char *key,
                               size_t keylen, int64_t below, size_t offset,
                               size_t limit, ps_redis_value_cb cb,
                               void *opaque);

/* Last error, "" when none. */
const char *ps_redis_sink_errstr(const ps_redis_sink *sink);

/* Counters since creation, for the stats line and benchmarks. */
typedef struct ps_redis_stats {
    unsigned long long transactions; /* successful EXECs */
    unsigned long long commands;     /* commands inside them */
    unsigned long long bytes;        /* argument bytes sent inside them */
    unsigned long long failures;     /* failed exec/get calls */
    unsigned long long reconnects;   /* successful reconnections */
} ps_redis_stats;
void ps_redis_sink_stats(const ps_redis_sink *sink, ps_redis_stats *out);

/* Parse "host:port" (or "host", port 6379).  0 or PS_ERR_CONFIG. */
int ps_redis_parse_addr(const char *addr, char *host, size_t host_size,
                        int *port);

#endif
