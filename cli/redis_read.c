/*
 * redis_read.c -- the Redis connection of the operator commands
 * (redis_read.h).
 *
 * Blocking hiredis 0.14: redisConnectWithTimeout, then AUTH, SELECT and
 * PING pipelined and read back in order.  The first error reply wins and is
 * reported with the command that failed (never its arguments: AUTH's would
 * be the password).  SIGPIPE is the caller's business: both commands ignore
 * it, so a server that goes away is an I/O error, not death.
 */
#include "redis_read.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "../common/error.h"
#include "../sinks/redis_sink.h"

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                         .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static const char *io_reason(const redisContext *c)
{
    if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
        return "timed out";
    return c->errstr[0] ? c->errstr : "I/O error";
}

redisContext *ps_cli_redis_connect(const ps_cli_redis_opts *o, int *bad_addr,
                                   char *errstr, size_t errstr_size)
{
    char host[256];
    int port = 6379;

    if (bad_addr != NULL)
        *bad_addr = 0;
    if (ps_redis_parse_addr(o->redis, host, sizeof(host), &port) != PS_OK ||
        port <= 0) {
        ps_set_err(errstr, errstr_size, "--redis: '%s' is not host:port",
                   o->redis ? o->redis : "");
        if (bad_addr != NULL)
            *bad_addr = 1;
        return NULL;
    }
    redisContext *c =
        redisConnectWithTimeout(host, port, ms_to_tv(o->redis_timeout_ms));
    if (c == NULL) {
        ps_set_err(errstr, errstr_size, "redis %s: connect: out of memory",
                   o->redis);
        return NULL;
    }
    if (c->err) {
        ps_set_err(errstr, errstr_size,
                   "cannot connect to Redis at %s: %s (check --redis and "
                   "that the server is up)",
                   o->redis, io_reason(c));
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, ms_to_tv(o->redis_timeout_ms));

    const char *what[3];
    int n = 0;
    if (o->redis_password != NULL) {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (o->redis_user != NULL)
            argv[argc++] = o->redis_user;
        argv[argc++] = o->redis_password;
        redisAppendCommandArgv(c, argc, argv, NULL);
        what[n++] = "AUTH";
    }
    if (o->redis_db != 0) {
        char db[24];
        snprintf(db, sizeof(db), "%lld", (long long)o->redis_db);
        const char *argv[2] = {"SELECT", db};
        redisAppendCommandArgv(c, 2, argv, NULL);
        what[n++] = "SELECT";
    }
    {
        const char *argv[1] = {"PING"};
        redisAppendCommandArgv(c, 1, argv, NULL);
        what[n++] = "PING";
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || reply == NULL) {
            ps_set_err(errstr, errstr_size, "redis %s: %s: %s", o->redis,
                       what[i], io_reason(c));
            redisFree(c);
            return NULL;
        }
        redisReply *r = reply;
        if (r->type == REDIS_REPLY_ERROR && !failed) {
            /* Server messages never echo the password back. */
            ps_set_err(errstr, errstr_size, "redis %s: %s failed: %s", o->redis,
                       what[i], r->str);
            failed = 1;
        }
        freeReplyObject(r);
    }
    if (failed) {
        redisFree(c);
        return NULL;
    }
    return c;
}

redisReply *ps_cli_redis_cmd(redisContext *c, int argc, const char **argv,
                             const size_t *argvlen, char *errstr,
                             size_t errstr_size)
{
    if (c->err) {
        ps_set_err(errstr, errstr_size, "redis: %s", io_reason(c));
        return NULL;
    }
    redisReply *r = redisCommandArgv(c, argc, argv, argvlen);
    if (r == NULL) {
        ps_set_err(errstr, errstr_size, "redis: %s: %s", argv[0], io_reason(c));
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        ps_set_err(errstr, errstr_size, "redis: %s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int ps_cli_key(char *out, size_t out_size, const char *prefix,
               const char *suffix)
{
    int n = snprintf(out, out_size, "%s%s", prefix, suffix);
    return n < 0 || (size_t)n >= out_size ? -1 : 0;
}
