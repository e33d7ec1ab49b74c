/*
 * redis_sink.c -- the Redis end of the pipeline (redis_sink.h).
 *
 * One blocking hiredis 0.14 context.  Everything is pipelined: a read call
 * appends all its commands to hiredis's output buffer, then reads every
 * reply (one round trip per window of GETs).  A flush is formatted once
 * into RESP by ps_batch_resp (MULTI, the batch, EXEC), written straight to
 * the socket, and its replies are read through hiredis's reply reader:
 * one round trip per flush however many keys it writes.
 *
 * Errors.  hiredis cannot reuse a context after an I/O or protocol error,
 * and a reply error inside a flush means Redis no longer matches the
 * contract, so *any* failure frees the context (drop()) and the call
 * returns PS_ERR_IO with a one-line reason in errstr.  Note that MULTI/EXEC
 * does not roll back: when a queued command fails at run time (e.g.
 * WRONGTYPE) the others were applied.  Commands rejected while queueing
 * (wrong arity, unknown command) make EXEC abort and nothing is applied.
 *
 * Reconnection.  Every public call on a disconnected sink goes through
 * ensure_connected(), which connects at most once per backoff period:
 * attempts are spaced by `backoff_ms`, which doubles after each failed
 * attempt (100 ms .. 5 s) and falls back to 100 ms after a successful one.
 * The time of the next allowed attempt is kept on CLOCK_MONOTONIC; before
 * it, calls fail fast with PS_ERR_IO.  A connection that has been up for
 * more than 100 ms is therefore re-established immediately after a drop.
 *
 * Fencing.  A flush whose reply was lost (time-out, dropped connection)
 * may still be sitting in the server's socket buffer and run after the
 * caller has reconnected and checked whether it landed.  So every
 * connection records its CLIENT ID and its own local address, and the
 * handshake of the next one first sends CLIENT KILL ID <previous> ADDR
 * <previous local ip:port>: Redis runs commands one at a time, so once that
 * kill has been answered the old connection's transaction has either run or
 * never will, and whatever the caller reads next is final.  Both filters
 * must match: a Redis that restarted in between hands out client ids from 1
 * again, and an id alone could name somebody else's connection.  (A user
 * whose ACL denies CLIENT gets a warning and no fencing.)
 *
 * SIGPIPE.  hiredis 0.14 writes with write(2), so a server that went away
 * would raise SIGPIPE and kill the process.  Each call that writes blocks
 * SIGPIPE for the calling thread and discards one it raised (sigpipe_*),
 * so the sink is safe whatever the application does with the signal.
 *
 * Ownership: the sink owns its context, copies of the host, user and
 * password (the password is wiped on destroy and never written to errstr or
 * the log), and the argv scratch arrays reused by every exec.  Replies are
 * freed before each function returns; callbacks get borrowed bytes valid
 * only during the call.
 */
#include "redis_sink.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "../common/error.h"
#include "../common/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define GET_WINDOW 8192 /* GETs in flight per pipeline window */

struct ps_redis_sink {
    redisContext *c; /* NULL while disconnected */

    char *host;
    int port;
    char *user;     /* NULL for none */
    char *password; /* NULL for none; wiped on destroy */
    int db;
    int connect_timeout_ms;
    int io_timeout_ms;

    long long client_id;      /* CLIENT ID of the live connection, 0 = unknown */
    long long prev_client_id; /* of the last dropped one, to fence off */
    char addr[64];            /* our local ip:port on the live connection */
    char prev_addr[64];       /* ... and on the last dropped one */
    bool fencing_warned;

    int64_t next_attempt_ms; /* CLOCK_MONOTONIC; no connect before this */
    int backoff_ms;          /* wait after the next failed attempt */

    ps_wbuf resp; /* a flush's RESP bytes, reused by every flush */

    const char **argv; /* scratch for ps_batch_argv */
    size_t *argvlen;
    size_t argv_cap;

    ps_redis_stats stats;
    char cause[256];  /* reason the connection was lost / refused */
    char errstr[384]; /* what ps_redis_sink_errstr() shows */
};

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static void set_err(ps_redis_sink *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record the reason of a failure (also kept as the cause shown while
 * waiting to reconnect). */
static void set_err(ps_redis_sink *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->cause, sizeof(s->cause), fmt, ap);
    va_end(ap);
    snprintf(s->errstr, sizeof(s->errstr), "%s", s->cause);
}

/* Free the context; the next call reconnects (subject to the backoff). */
static void drop(ps_redis_sink *s)
{
    if (s->c != NULL) {
        redisFree(s->c);
        s->c = NULL;
        if (s->client_id > 0 && s->addr[0] != '\0') {
            s->prev_client_id = s->client_id;
            memcpy(s->prev_addr, s->addr, sizeof(s->addr));
        }
        s->client_id = 0;
        s->addr[0] = '\0';
    }
}

/* An append or read failed at the connection level. */
static void set_io_err(ps_redis_sink *s, const char *what)
{
    const char *why = s->c && s->c->errstr[0] ? s->c->errstr : "I/O error";
    if (s->c && s->c->err == REDIS_ERR_IO &&
        (errno == EAGAIN || errno == EWOULDBLOCK))
        why = "timed out";
    set_err(s, "redis %s:%d: %s: %s", s->host, s->port, what, why);
}

static const char *reply_type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING: return "string";
    case REDIS_REPLY_ARRAY: return "array";
    case REDIS_REPLY_INTEGER: return "integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "status";
    case REDIS_REPLY_ERROR: return "error";
    default: return "unknown";
    }
}

/* Block SIGPIPE around writes (see the file comment). */
typedef struct sigpipe_guard {
    sigset_t old;
    int was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_unblock(sigpipe_guard *g)
{
    if (!g->was_pending) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigemptyset(&pending);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
            const struct timespec zero = {0, 0};
            while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
                ;
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Read one reply; NULL (with errstr set) on a connection error. */
static redisReply *read_reply(ps_redis_sink *s, const char *what)
{
    void *reply = NULL;
    if (redisGetReply(s->c, &reply) != REDIS_OK || reply == NULL) {
        set_io_err(s, what);
        return NULL;
    }
    return reply;
}

/* ------------------------------------------------------------------------
 * Connecting
 * ------------------------------------------------------------------------ */

/* Our end of the connection as Redis prints it in CLIENT LIST (addr=):
 * "ip:port", IPv6 without brackets.  Empty when it cannot be told, and
 * then that connection is not fenced (an id alone is not safe, see above). */
static void local_addr(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    out[0] = '\0';
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) != NULL)
            snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) != NULL)
            snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(a->sin6_port));
    }
}

/* Connect, then AUTH and SELECT (or PING when neither is configured, so a
 * dead or password-protected server is detected here, not at the first
 * flush).  0, or PS_ERR_IO with errstr set and no context. */
static int sink_connect(ps_redis_sink *s)
{
    assert(s->c == NULL);
    redisContext *c = redisConnectWithTimeout(
        s->host, s->port, ms_to_tv(s->connect_timeout_ms));
    if (c == NULL) {
        set_err(s, "redis %s:%d: connect: out of memory", s->host, s->port);
        return PS_ERR_IO;
    }
    s->c = c;
    if (c->err) {
        set_err(s, "redis %s:%d: connect: %s", s->host, s->port, c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, ms_to_tv(s->io_timeout_ms)) != REDIS_OK) {
        set_io_err(s, "set timeout");
        goto fail;
    }

    /* Pipeline the handshake: AUTH, SELECT, the fence, CLIENT ID. */
    const char *what[4];
    int ncmd = 0, kill_ix = -1, id_ix;
    if (s->password != NULL) {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (s->user != NULL)
            argv[argc++] = s->user;
        argv[argc++] = s->password;
        if (redisAppendCommandArgv(c, argc, argv, NULL) != REDIS_OK)
            goto append_fail;
        what[ncmd++] = "AUTH";
    }
    if (s->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", s->db);
        const char *argv[2] = {"SELECT", db};
        if (redisAppendCommandArgv(c, 2, argv, NULL) != REDIS_OK)
            goto append_fail;
        what[ncmd++] = "SELECT";
    }
    if (s->prev_client_id > 0) {
        char id[32];
        snprintf(id, sizeof(id), "%lld", s->prev_client_id);
        const char *argv[6] = {"CLIENT", "KILL", "ID", id, "ADDR",
                               s->prev_addr};
        if (redisAppendCommandArgv(c, 6, argv, NULL) != REDIS_OK)
            goto append_fail;
        kill_ix = ncmd;
        what[ncmd++] = "CLIENT KILL";
    }
    {
        const char *argv[2] = {"CLIENT", "ID"};
        if (redisAppendCommandArgv(c, 2, argv, NULL) != REDIS_OK)
            goto append_fail;
        id_ix = ncmd;
        what[ncmd++] = "CLIENT ID";
    }

    sigpipe_guard g;
    sigpipe_block(&g);
    int rc = PS_OK;
    long long new_id = 0;
    for (int i = 0; i < ncmd && rc == PS_OK; i++) {
        redisReply *r = read_reply(s, what[i]);
        if (r == NULL) {
            rc = PS_ERR_IO;
            break;
        }
        bool denied = r->type == REDIS_REPLY_ERROR &&
                      strncmp(r->str, "NOPERM", 6) == 0 &&
                      (i == kill_ix || i == id_ix);
        if (denied) {
            if (!s->fencing_warned)
                ps_warn("redis %s:%d: the ACL user may not run CLIENT "
                        "ID/KILL; a flush lost in a time-out cannot be "
                        "fenced off",
                        s->host, s->port);
            s->fencing_warned = true;
        } else if (r->type == REDIS_REPLY_ERROR) {
            /* Server messages never echo the password back. */
            set_err(s, "redis %s:%d: %s failed: %s", s->host, s->port,
                    what[i], r->str);
            rc = PS_ERR_IO;
        } else if (i == id_ix && r->type == REDIS_REPLY_INTEGER) {
            new_id = r->integer;
        }
        freeReplyObject(r);
    }
    sigpipe_unblock(&g);
    if (rc != PS_OK)
        goto fail;
    s->prev_client_id = 0; /* fenced (or nothing to fence) */
    s->client_id = new_id;
    local_addr(c->fd, s->addr, sizeof(s->addr));
    return PS_OK;

append_fail:
    set_io_err(s, "handshake");
fail:
    drop(s);
    return PS_ERR_IO;
}

/* Connect if disconnected and the backoff allows.  0 when connected. */
static int ensure_connected(ps_redis_sink *s)
{
    if (s->c != NULL)
        return PS_OK;
    int64_t now = now_ms();
    if (now < s->next_attempt_ms) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "redis %s:%d: not connected, next attempt in %lld ms (%s)",
                 s->host, s->port, (long long)(s->next_attempt_ms - now),
                 s->cause);
        return PS_ERR_IO;
    }
    if (sink_connect(s) != PS_OK) {
        s->next_attempt_ms = now + s->backoff_ms;
        ps_debug("redis: reconnect to %s:%d failed, next attempt in %d ms: "
                 "%s", s->host, s->port, s->backoff_ms, s->cause);
        s->backoff_ms = s->backoff_ms >= BACKOFF_MAX_MS / 2
                            ? BACKOFF_MAX_MS
                            : s->backoff_ms * 2;
        return PS_ERR_IO;
    }
    s->backoff_ms = BACKOFF_MIN_MS;
    s->next_attempt_ms = now + BACKOFF_MIN_MS;
    s->stats.reconnects++;
    ps_debug("redis: reconnected to %s:%d", s->host, s->port);
    return PS_OK;
}

/* ------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------ */

ps_redis_sink *ps_redis_sink_new(const ps_redis_conf *conf, char *errstr,
                                 size_t errstr_size)
{
    if (conf == NULL) {
        ps_set_err(errstr, errstr_size, "redis: no configuration");
        return NULL;
    }
    int port = conf->port > 0 ? conf->port : 6379;
    if (port > 65535 || conf->db < 0) {
        ps_set_err(errstr, errstr_size, "redis: invalid %s",
                   port > 65535 ? "port" : "db");
        return NULL;
    }
    ps_redis_sink *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto nomem;
    s->host = strdup(conf->host && conf->host[0] ? conf->host : "127.0.0.1");
    s->user = conf->user ? strdup(conf->user) : NULL;
    s->password = conf->password ? strdup(conf->password) : NULL;
    if (s->host == NULL || (conf->user && s->user == NULL) ||
        (conf->password && s->password == NULL))
        goto nomem;
    s->port = port;
    s->db = conf->db;
    s->connect_timeout_ms =
        conf->connect_timeout_ms > 0 ? conf->connect_timeout_ms : 2000;
    s->io_timeout_ms = conf->io_timeout_ms > 0 ? conf->io_timeout_ms : 10000;
    s->backoff_ms = BACKOFF_MIN_MS;

    if (sink_connect(s) != PS_OK) {
        ps_set_err(errstr, errstr_size, "%s", s->errstr);
        ps_redis_sink_destroy(s);
        return NULL;
    }
    s->next_attempt_ms = now_ms() + BACKOFF_MIN_MS;
    s->errstr[0] = '\0';
    s->cause[0] = '\0';
    return s;

nomem:
    ps_set_err(errstr, errstr_size, "redis: out of memory");
    ps_redis_sink_destroy(s);
    return NULL;
}

void ps_redis_sink_destroy(ps_redis_sink *s)
{
    if (s == NULL)
        return;
    drop(s);
    if (s->password != NULL) {
        explicit_bzero(s->password, strlen(s->password));
        free(s->password);
    }
    free(s->user);
    free(s->host);
    free(s->argv);
    free(s->argvlen);
    ps_wbuf_clear(&s->resp);
    free(s);
}

bool ps_redis_sink_connected(const ps_redis_sink *s) { return s->c != NULL; }

int ps_redis_sink_reconnect(ps_redis_sink *s) { return ensure_connected(s); }

const char *ps_redis_sink_errstr(const ps_redis_sink *s) { return s->errstr; }

void ps_redis_sink_stats(const ps_redis_sink *s, ps_redis_stats *out)
{
    *out = s->stats;
}

/* ------------------------------------------------------------------------
 * Transactions
 * ------------------------------------------------------------------------ */

static int reserve_argv(ps_redis_sink *s, size_t argc)
{
    if (argc <= s->argv_cap)
        return PS_OK;
    size_t cap = s->argv_cap ? s->argv_cap : 16;
    while (cap < argc)
        cap *= 2;
    const char **argv = realloc(s->argv, cap * sizeof(*argv));
    if (argv == NULL)
        return PS_ERR_NOMEM;
    s->argv = argv;
    size_t *lens = realloc(s->argvlen, cap * sizeof(*lens));
    if (lens == NULL)
        return PS_ERR_NOMEM;
    s->argvlen = lens;
    s->argv_cap = cap;
    return PS_OK;
}

/* Name of command i for messages ("HSET"), into buf. */
static const char *cmd_name(ps_redis_sink *s, const ps_batch *batch, size_t i,
                            char *buf, size_t size)
{
    /* The scratch arrays already hold the largest argc of the batch. */
    ps_batch_argv(batch, i, s->argv, s->argvlen);
    size_t len = s->argvlen[0] < size - 1 ? s->argvlen[0] : size - 1;
    for (size_t k = 0; k < len; k++) {
        unsigned char ch = (unsigned char)s->argv[0][k];
        buf[k] = isprint(ch) ? (char)ch : '?';
    }
    buf[len] = '\0';
    return buf;
}

/* Write all of buf to the connection (blocking, with the I/O time-out).
 * The flush is formatted once by ps_batch_resp and written straight to the
 * socket: hiredis's own output buffer stays empty, and only its reply
 * reader is used. */
static int write_all(ps_redis_sink *s, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(s->c->fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            set_err(s, "redis %s:%d: write: %s", s->host, s->port,
                    w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                        ? "timed out"
                        : strerror(errno));
            return PS_ERR_IO;
        }
        buf += w;
        len -= (size_t)w;
    }
    return PS_OK;
}

/* Check reply idx of a transaction of n commands: MULTI's +OK, one
 * +QUEUED (or -ERR) per command, then EXEC's array.  The first problem
 * goes into *rc (with errstr). */
static void check_reply(ps_redis_sink *s, const ps_batch *batch, size_t n,
                        size_t idx, const redisReply *r, int *rc)
{
    char name[32];

    if (*rc != PS_OK && idx <= n)
        return; /* explained already; EXEC will say EXECABORT */
    if (idx == 0) {
        if (r->type == REDIS_REPLY_ERROR) {
            set_err(s, "redis %s:%d: MULTI failed: %s", s->host, s->port,
                    r->str);
            *rc = PS_ERR_IO;
        }
    } else if (idx <= n) {
        if (r->type == REDIS_REPLY_ERROR) {
            set_err(s, "redis %s:%d: command %zu (%s) rejected: %s", s->host,
                    s->port, idx - 1,
                    cmd_name(s, batch, idx - 1, name, sizeof(name)), r->str);
            *rc = PS_ERR_IO;
        }
    } else if (*rc != PS_OK) {
        /* Already explained by the first rejected command (EXECABORT). */
    } else if (r->type == REDIS_REPLY_ERROR) {
        set_err(s, "redis %s:%d: EXEC failed: %s", s->host, s->port, r->str);
        *rc = PS_ERR_IO;
    } else if (r->type != REDIS_REPLY_ARRAY) {
        set_err(s, "redis %s:%d: EXEC returned %s, transaction not applied",
                s->host, s->port, reply_type_name(r->type));
        *rc = PS_ERR_IO;
    } else if (r->elements != n) {
        set_err(s, "redis %s:%d: EXEC returned %zu replies for %zu commands",
                s->host, s->port, r->elements, n);
        *rc = PS_ERR_IO;
    } else {
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_ERROR) {
                set_err(s, "redis %s:%d: command %zu (%s) failed: %s",
                        s->host, s->port, i,
                        cmd_name(s, batch, i, name, sizeof(name)), e->str);
                *rc = PS_ERR_IO;
                break;
            }
        }
    }
}

/* MULTI, the batch, EXEC as RESP bytes in s->resp; 0 or PS_ERR_IO. */
static int format_tx(ps_redis_sink *s, const ps_batch *batch, size_t n)
{
    ps_wbuf_reset(&s->resp);
    ps_wbuf_put(&s->resp, "*1\r\n$5\r\nMULTI\r\n", 15);
    ps_batch_resp(batch, &s->resp);
    ps_wbuf_put(&s->resp, "*1\r\n$4\r\nEXEC\r\n", 14);
    /* the scratch argv of cmd_name must hold the batch's largest argc */
    size_t most = 0;
    for (size_t i = 0; i < n; i++) {
        size_t argc = ps_batch_argc(batch, i);
        most = argc > most ? argc : most;
    }
    if (s->resp.oom || reserve_argv(s, most) != PS_OK) {
        ps_wbuf_clear(&s->resp);
        ps_wbuf_init(&s->resp);
        set_err(s, "redis %s:%d: out of memory", s->host, s->port);
        return PS_ERR_IO;
    }
    return PS_OK;
}

int ps_redis_sink_exec(ps_redis_sink *s, const ps_batch *batch)
{
    size_t n = ps_batch_count(batch);
    if (n == 0)
        return PS_OK;
    if (ensure_connected(s) != PS_OK || format_tx(s, batch, n) != PS_OK) {
        s->stats.failures++;
        return PS_ERR_IO;
    }
    sigpipe_guard g;
    sigpipe_block(&g);
    int rc = write_all(s, s->resp.data, s->resp.len);
    /* then the replies, in order: +OK, n x +QUEUED, EXEC's array */
    for (size_t idx = 0; rc == PS_OK && idx < n + 2; idx++) {
        redisReply *r = read_reply(s, "transaction");
        if (r == NULL) {
            rc = PS_ERR_IO;
            break;
        }
        int bad = PS_OK;
        check_reply(s, batch, n, idx, r, &bad);
        freeReplyObject(r);
        if (bad != PS_OK) { /* read the rest, keep the first reason */
            for (idx++; idx < n + 2; idx++) {
                if ((r = read_reply(s, "transaction")) == NULL)
                    break;
                freeReplyObject(r);
            }
            rc = bad;
            break;
        }
    }
    sigpipe_unblock(&g);
    if (rc != PS_OK) {
        drop(s);
        s->stats.failures++;
        return PS_ERR_IO;
    }
    s->stats.transactions++;
    s->stats.commands += n;
    s->stats.bytes += ps_batch_bytes(batch);
    return PS_OK;
}

/* ------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------ */

/* Every read call: connect if needed, block SIGPIPE; at the end unblock,
 * and on failure drop the connection and count it. */
static int call_begin(ps_redis_sink *s, sigpipe_guard *g)
{
    if (ensure_connected(s) != PS_OK) {
        s->stats.failures++;
        return PS_ERR_IO;
    }
    sigpipe_block(g);
    return PS_OK;
}

static int call_end(ps_redis_sink *s, sigpipe_guard *g, int rc)
{
    sigpipe_unblock(g);
    if (rc != PS_OK) {
        drop(s);
        s->stats.failures++;
        return PS_ERR_IO;
    }
    return PS_OK;
}

/* Handles the (non-error) reply to key i; PS_OK or PS_ERR_IO with errstr. */
typedef int (*reply_fn)(ps_redis_sink *s, const char *cmd, size_t i,
                        const redisReply *r, void *ctx);

/* `cmd key` for n keys, pipelined GET_WINDOW at a time (keylens may be
 * NULL for NUL-terminated keys).  On failure fn may already have run for
 * a prefix of the keys. */
static int read_many(ps_redis_sink *s, const char *cmd, size_t n,
                     const char **keys, const size_t *keylens, reply_fn fn,
                     void *ctx)
{
    sigpipe_guard g;
    int rc;

    if (n == 0)
        return PS_OK;
    if ((rc = call_begin(s, &g)) != PS_OK)
        return rc;
    for (size_t base = 0; base < n && rc == PS_OK; base += GET_WINDOW) {
        size_t m = n - base < GET_WINDOW ? n - base : GET_WINDOW;
        for (size_t k = 0; k < m && rc == PS_OK; k++) {
            const char *argv[2] = {cmd, keys[base + k]};
            size_t lens[2] = {strlen(cmd), keylens ? keylens[base + k]
                                                   : strlen(keys[base + k])};
            if (redisAppendCommandArgv(s->c, 2, argv, lens) != REDIS_OK) {
                set_io_err(s, "append");
                rc = PS_ERR_IO;
            }
        }
        for (size_t k = 0; k < m && rc == PS_OK; k++) {
            redisReply *r = read_reply(s, cmd);
            if (r == NULL) {
                rc = PS_ERR_IO;
                break;
            }
            if (r->type == REDIS_REPLY_ERROR) {
                set_err(s, "redis %s:%d: %s of key %zu failed: %s", s->host,
                        s->port, cmd, base + k, r->str);
                rc = PS_ERR_IO;
            } else {
                rc = fn(s, cmd, base + k, r, ctx);
            }
            freeReplyObject(r);
        }
    }
    return call_end(s, &g, rc);
}

static int unexpected(ps_redis_sink *s, const char *cmd, const redisReply *r)
{
    set_err(s, "redis %s:%d: %s returned %s", s->host, s->port, cmd,
            reply_type_name(r->type));
    return PS_ERR_IO;
}

struct value_ctx {
    ps_redis_value_cb cb;
    void *opaque;
};

static int on_value(ps_redis_sink *s, const char *cmd, size_t i,
                    const redisReply *r, void *ctx)
{
    struct value_ctx *v = ctx;
    if (r->type == REDIS_REPLY_STRING)
        v->cb(v->opaque, i, r->str, r->len);
    else if (r->type == REDIS_REPLY_NIL)
        v->cb(v->opaque, i, NULL, 0);
    else
        return unexpected(s, cmd, r);
    return PS_OK;
}

int ps_redis_sink_get_many(ps_redis_sink *s, size_t n, const char **keys,
                           const size_t *keylens, ps_redis_value_cb cb,
                           void *opaque)
{
    struct value_ctx v = {cb, opaque};
    return read_many(s, "GET", n, keys, keylens, on_value, &v);
}

struct hash_ctx {
    ps_redis_hash_cb cb;
    void *opaque;
};

static int on_hash(ps_redis_sink *s, const char *cmd, size_t i,
                   const redisReply *r, void *ctx)
{
    struct hash_ctx *h = ctx;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
        return unexpected(s, cmd, r);
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const redisReply *f = r->element[k], *v = r->element[k + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return unexpected(s, cmd, f->type != REDIS_REPLY_STRING ? f : v);
        h->cb(h->opaque, i, f->str, f->len, v->str, v->len);
    }
    return PS_OK;
}

int ps_redis_sink_hgetall_many(ps_redis_sink *s, size_t n, const char **keys,
                               const size_t *keylens, ps_redis_hash_cb cb,
                               void *opaque)
{
    struct hash_ctx h = {cb, opaque};
    return read_many(s, "HGETALL", n, keys, keylens, on_hash, &h);
}

int ps_redis_sink_zrange_below(ps_redis_sink *s, const char *key,
                               size_t keylen, int64_t below, size_t offset,
                               size_t limit, ps_redis_value_cb cb,
                               void *opaque)
{
    char max[32], off[32], lim[32];
    snprintf(max, sizeof(max), "(%lld", (long long)below);
    snprintf(off, sizeof(off), "%zu", offset);
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *argv[7] = {"ZRANGEBYSCORE", key, "-inf", max, "LIMIT", off,
                           lim};
    size_t lens[7] = {13, keylen, 4, strlen(max), 5, strlen(off),
                      strlen(lim)};
    size_t count = 0;
    sigpipe_guard g;
    redisReply *r = NULL;
    int rc = call_begin(s, &g);

    if (rc != PS_OK)
        return rc;
    if (redisAppendCommandArgv(s->c, 7, argv, lens) != REDIS_OK) {
        set_io_err(s, "append");
        rc = PS_ERR_IO;
    } else if ((r = read_reply(s, argv[0])) == NULL) {
        rc = PS_ERR_IO;
    } else if (r->type != REDIS_REPLY_ARRAY) {
        rc = r->type == REDIS_REPLY_ERROR
                 ? (set_err(s, "redis %s:%d: %s failed: %s", s->host, s->port,
                            argv[0], r->str),
                    PS_ERR_IO)
                 : unexpected(s, argv[0], r);
    } else {
        count = r->elements;
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                cb(opaque, i, r->element[i]->str, r->element[i]->len);
    }
    if (r != NULL)
        freeReplyObject(r);
    rc = call_end(s, &g, rc);
    return rc < 0 ? rc : (int)count;
}

struct one_hash {
    ps_redis_field_cb cb;
    void *opaque;
};

static void one_hash_cb(void *opaque, size_t i, const char *field,
                        size_t flen, const char *val, size_t vlen)
{
    struct one_hash *o = opaque;
    (void)i;
    o->cb(o->opaque, field, flen, val, vlen);
}

int ps_redis_sink_hgetall(ps_redis_sink *s, const char *key,
                          ps_redis_field_cb cb, void *opaque)
{
    struct one_hash o = {cb, opaque};
    return ps_redis_sink_hgetall_many(s, 1, &key, NULL, one_hash_cb, &o);
}

/* ------------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------------ */

/* Accepts "host", "host:port", "[v6]" and "[v6]:port"; a bare address with
 * more than one ':' is ambiguous and rejected. */
int ps_redis_parse_addr(const char *addr, char *host, size_t host_size,
                        int *port)
{
    if (addr == NULL || host == NULL || host_size == 0 || port == NULL)
        return PS_ERR_CONFIG;
    const char *h, *hend, *p = NULL;
    if (addr[0] == '[') {
        h = addr + 1;
        hend = strchr(h, ']');
        if (hend == NULL)
            return PS_ERR_CONFIG;
        if (hend[1] == ':')
            p = hend + 2;
        else if (hend[1] != '\0')
            return PS_ERR_CONFIG;
    } else {
        h = addr;
        const char *colon = strchr(addr, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return PS_ERR_CONFIG;
        hend = colon ? colon : addr + strlen(addr);
        if (colon != NULL)
            p = colon + 1;
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= host_size)
        return PS_ERR_CONFIG;
    for (size_t i = 0; i < hlen; i++)
        if (isspace((unsigned char)h[i]) || h[i] == '[' || h[i] == ']')
            return PS_ERR_CONFIG;

    long v = 6379;
    if (p != NULL) {
        if (*p == '\0')
            return PS_ERR_CONFIG;
        v = 0;
        for (; *p; p++) {
            if (!isdigit((unsigned char)*p))
                return PS_ERR_CONFIG;
            v = v * 10 + (*p - '0');
            if (v > 65535)
                return PS_ERR_CONFIG;
        }
        if (v == 0)
            return PS_ERR_CONFIG;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)v;
    return PS_OK;
}
