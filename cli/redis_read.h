/*
 * redis_read.h -- the Redis connection of the operator commands
 * (`propstream status`, `propstream dlq`).
 *
 * Those commands read (and, for `dlq --delete`, XDEL) arbitrary keys, so
 * they need plain request/reply calls, which the write-oriented sink
 * (sinks/redis_sink.h: MULTI/EXEC batches, fencing, reconnect backoff) does
 * not offer.  This is the small part they share: the option rows, one
 * connect that does AUTH / SELECT / PING, and a command call that turns
 * error replies into an errstr.  Addresses are parsed by the sink's
 * ps_redis_parse_addr, so every subcommand accepts the same forms.
 *
 * Ownership: the caller frees the context with redisFree() and every reply
 * with freeReplyObject().  The password is passed through to AUTH and never
 * copied into an error message.
 */
#ifndef PS_CLI_REDIS_READ_H
#define PS_CLI_REDIS_READ_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "../common/config.h"

/* The Redis options every operator command takes; embed one in the
 * command's option struct and list PS_CLI_REDIS_OPTIONS(field) in its
 * table (field = the offsetof expression of the embedded struct). */
typedef struct ps_cli_redis_opts {
    char *redis;
    char *redis_user;
    char *redis_password;
    int64_t redis_db;
    int64_t redis_timeout_ms;
    char *prefix;
} ps_cli_redis_opts;

#define PS_CLI_REDIS_OPTIONS(base)                                            \
    {"redis", 'r', PS_OPT_STR, "127.0.0.1:6379", 1, 0, NULL,                  \
     "Redis server, host:port",                                               \
     (base) + offsetof(ps_cli_redis_opts, redis), 0},                         \
    {"redis-user", 0, PS_OPT_STR, NULL, 1, 0, NULL,                           \
     "Redis ACL user (with --redis-password)",                                \
     (base) + offsetof(ps_cli_redis_opts, redis_user), 0},                    \
    {"redis-password", 0, PS_OPT_STR, NULL, 1, 0, NULL,                       \
     "Redis password (AUTH); never printed",                                  \
     (base) + offsetof(ps_cli_redis_opts, redis_password), PS_OPT_SECRET},    \
    {"redis-db", 0, PS_OPT_INT, "0", 0, 15, NULL, "Redis database number",    \
     (base) + offsetof(ps_cli_redis_opts, redis_db), 0},                      \
    {"redis-timeout-ms", 0, PS_OPT_INT, "5000", 100, 600000, "ms",            \
     "Redis connect and I/O timeout",                                         \
     (base) + offsetof(ps_cli_redis_opts, redis_timeout_ms), 0},              \
    {"prefix", 0, PS_OPT_STR, "ps:", 1, 0, NULL,                              \
     "prefix of propstream's Redis keys",                                     \
     (base) + offsetof(ps_cli_redis_opts, prefix), 0}

/*
 * Connect to o->redis, AUTH (with the user when given) and SELECT, then
 * PING, so an unreachable or password-protected server fails here.
 * Returns the context, or NULL with a one-line errstr naming the address;
 * *bad_addr is set when the address itself is malformed (a usage error),
 * left false for a server that does not answer.
 */
redisContext *ps_cli_redis_connect(const ps_cli_redis_opts *o, int *bad_addr,
                                   char *errstr, size_t errstr_size);

/*
 * Run one command (argv with lengths; argvlen may be NULL for C strings).
 * Returns the reply, or NULL with errstr on a connection error or an error
 * reply (then the context must not be reused after a connection error:
 * c->err is set).
 */
redisReply *ps_cli_redis_cmd(redisContext *c, int argc, const char **argv,
                             const size_t *argvlen, char *errstr,
                             size_t errstr_size);

/* Key name prefix + suffix into out; 0, or -1 when it does not fit. */
int ps_cli_key(char *out, size_t out_size, const char *prefix,
               const char *suffix);

#endif
