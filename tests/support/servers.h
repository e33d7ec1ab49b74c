/*
 * servers.h -- throw-away servers for integration tests.
 *
 * Like hiredis's test.sh: each test starts its own redis-server (no
 * persistence, in a temporary directory) and its own `propstream broker`
 * (librdkafka's mock cluster) on free loopback ports, and stops them at the
 * end.  Nothing here touches a server that the test did not start.
 */
#ifndef PS_TEST_SERVERS_H
#define PS_TEST_SERVERS_H

#include <sys/types.h>

/* A free TCP port on 127.0.0.1 (bind to port 0, read it, close), or -1. */
int ps_test_free_port(void);

typedef struct ps_test_redis {
    pid_t pid;
    int port;
    char dir[256]; /* temporary working directory, removed on stop */
} ps_test_redis;

/* Start redis-server on a free port (retrying on a port race) and wait until
 * it answers PING (at most 10 s).  extra_args: NULL-terminated list of more
 * redis-server arguments, may be NULL.  0 or -1. */
int ps_test_redis_start(ps_test_redis *r, const char *const *extra_args);
/* SIGTERM, wait, remove dir. Safe to call twice. */
void ps_test_redis_stop(ps_test_redis *r);

typedef struct ps_test_broker {
    pid_t pid;
    char bootstrap[512];
} ps_test_broker;

/* Run `<propstream_bin> broker --brokers N --topic SPEC...` and read the
 * bootstrap servers from its first stdout line (at most 15 s).  0 or -1. */
int ps_test_broker_start(ps_test_broker *b, const char *propstream_bin,
                         int brokers, const char *const *topic_specs);
void ps_test_broker_stop(ps_test_broker *b);

/* Run argv (argv[0] a path) to completion with a timeout, capturing stdout
 * into out (NUL-terminated, truncated to out_size) if out != NULL.
 * Returns the exit status (0..255), 128+signal, or -1 on timeout/failure. */
int ps_test_run(const char *const *argv, int timeout_s, char *out,
                size_t out_size);

#endif
