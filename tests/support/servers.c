/*
 * servers.c -- throw-away servers for integration tests (servers.h).
 *
 * Each server is a child process of the test: forked, given
 * PR_SET_PDEATHSIG(SIGTERM) so it dies with the test even when the test
 * crashes or is killed, and exec'd.  Nothing here signals a process it did
 * not start, and only directories it created (/tmp/ps-redis-*) are removed.
 *
 * redis-server: runs in the foreground in a mkdtemp() directory, logging
 * to DIR/redis.log.  Readiness means the log says "Ready to accept
 * connections" (so it is *our* server on that port, not a stranger's) and
 * a RESP PING over a raw socket is answered (+PONG, or -NOAUTH when started
 * with --requirepass).  If the child exits first, the free port was taken
 * in between (a race ps_test_free_port() cannot avoid), so another port is
 * tried.  Passing "--port", "N" in extra_args pins the port instead (used
 * to restart a server on the port a client already knows); no retry then.
 *
 * broker: `propstream broker` prints its bootstrap servers as its first
 * stdout line.  Its stdout is an unlinked temporary file rather than a
 * pipe: the test reads the first line with pread(), and whatever the broker
 * prints later can neither block it (full pipe) nor kill it (SIGPIPE), and
 * there is nothing to close at stop.
 *
 * This file links only ps_common: no hiredis, the PING is written by hand.
 */
#include "servers.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define REDIS_START_TIMEOUT_MS 10000
#define REDIS_PORT_ATTEMPTS 5
#define BROKER_START_TIMEOUT_MS 15000
#define STOP_TIMEOUT_MS 5000
#define MAX_EXTRA_ARGS 32

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* In a freshly forked child: die with the parent, stdin from /dev/null. */
static void child_setup(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) /* the parent died before prctl */
        _exit(127);
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        if (fd != STDIN_FILENO)
            close(fd);
    }
}

/* In the child, after its dup2()s: close every inherited descriptor
 * above stderr, so a server never keeps the test's connections (or another
 * server's files) open. */
static void close_inherited(void)
{
    if (close_range(3, ~0U, 0) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
        close((int)fd);
}

/* waitpid with a deadline: 1 when the child was reaped (status set), 0 on
 * timeout, -1 when it is not (or no longer) ours to wait for. */
static int wait_until(pid_t pid, int *status, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (mono_ms() >= deadline)
            return 0;
        sleep_ms(10);
    }
}

/* SIGTERM, wait up to timeout_ms, then SIGKILL and reap. */
static void terminate(pid_t pid, int timeout_ms)
{
    int status;
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    if (wait_until(pid, &status, timeout_ms) == 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

int ps_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ------------------------------------------------------------------------
 * redis-server
 * ------------------------------------------------------------------------ */

/* One RESP PING on a fresh connection; true when a reply that proves a
 * live Redis came back within timeout_ms. */
static bool redis_ping(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    bool ok = false;
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        send(fd, ping, sizeof(ping) - 1, MSG_NOSIGNAL) ==
            (ssize_t)(sizeof(ping) - 1)) {
        char buf[64];
        size_t got = 0;
        int64_t deadline = mono_ms() + timeout_ms;
        while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
            int left = (int)(deadline - mono_ms());
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (left <= 0 || poll(&pfd, 1, left) <= 0)
                break;
            ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        buf[got] = '\0';
        ok = strncmp(buf, "+PONG", 5) == 0 || strncmp(buf, "-NOAUTH", 7) == 0;
    }
    close(fd);
    return ok;
}

static bool log_says_ready(const char *dir)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/redis.log", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[1024];
    bool ready = false;
    while (!ready && fgets(line, sizeof(line), f))
        ready = strstr(line, "Ready to accept connections") != NULL;
    fclose(f);
    return ready;
}

/* Copy redis.log to stderr, so a failed start explains itself. */
static void dump_log(const char *dir)
{
    char path[300], line[1024];
    snprintf(path, sizeof(path), "%s/redis.log", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f))
        fprintf(stderr, "redis.log: %s", line);
    fclose(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* rm -rf dir, but only a directory this file created. */
static void remove_dir(const char *dir)
{
    if (strncmp(dir, "/tmp/ps-redis-", 14) != 0)
        return;
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The port pinned by "--port N" in extra_args, or 0. */
static int pinned_port(const char *const *extra_args)
{
    for (int i = 0; extra_args && extra_args[i]; i++)
        if (strcmp(extra_args[i], "--port") == 0 && extra_args[i + 1])
            return atoi(extra_args[i + 1]);
    return 0;
}

/* Fork and exec redis-server on port; the pid, or -1. */
static pid_t spawn_redis(const char *dir, int port,
                         const char *const *extra_args)
{
    char port_s[16], log_path[300];
    snprintf(port_s, sizeof(port_s), "%d", port);
    snprintf(log_path, sizeof(log_path), "%s/redis.log", dir);
    const char *argv[16 + MAX_EXTRA_ARGS] = {
        "redis-server", "--port",       port_s,  "--bind",
        "127.0.0.1",    "--save",       "",      "--appendonly",
        "no",           "--dir",        dir,     "--daemonize",
        "no"};
    int argc = 13;
    for (int i = 0; extra_args && extra_args[i]; i++) {
        if (i >= MAX_EXTRA_ARGS)
            return -1;
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid; /* parent, or -1 */
    child_setup(parent);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
    }
    close_inherited();
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

int ps_test_redis_start(ps_test_redis *r, const char *const *extra_args)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/ps-redis-XXXXXX");
    if (mkdtemp(r->dir) == NULL) {
        r->dir[0] = '\0';
        return -1;
    }
    int pinned = pinned_port(extra_args);
    for (int attempt = 0; attempt < REDIS_PORT_ATTEMPTS; attempt++) {
        int port = pinned ? pinned : ps_test_free_port();
        if (port <= 0)
            break;
        pid_t pid = spawn_redis(r->dir, port, extra_args);
        if (pid < 0)
            break;
        int64_t deadline = mono_ms() + REDIS_START_TIMEOUT_MS;
        bool exited = false;
        while (mono_ms() < deadline) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exited = true;
                break;
            }
            if (log_says_ready(r->dir) && redis_ping(port, 1000)) {
                r->pid = pid;
                r->port = port;
                return 0;
            }
            sleep_ms(20);
        }
        if (!exited) { /* hung: give up */
            terminate(pid, STOP_TIMEOUT_MS);
            break;
        }
        fprintf(stderr, "servers: redis-server exited early on port %d%s\n",
                port, pinned ? "" : ", trying another");
        if (pinned)
            break;
    }
    fprintf(stderr, "servers: could not start redis-server\n");
    dump_log(r->dir);
    remove_dir(r->dir);
    r->dir[0] = '\0';
    return -1;
}

void ps_test_redis_stop(ps_test_redis *r)
{
    if (r->pid > 0)
        terminate(r->pid, STOP_TIMEOUT_MS);
    r->pid = 0;
    if (r->dir[0])
        remove_dir(r->dir);
    r->dir[0] = '\0';
}

/* ------------------------------------------------------------------------
 * propstream broker
 * ------------------------------------------------------------------------ */

int ps_test_broker_start(ps_test_broker *b, const char *propstream_bin,
                         int brokers, const char *const *topic_specs)
{
    memset(b, 0, sizeof(*b));
    char n_s[16];
    snprintf(n_s, sizeof(n_s), "%d", brokers);
    const char *argv[8 + 2 * MAX_EXTRA_ARGS] = {propstream_bin, "broker",
                                                "--brokers", n_s};
    int argc = 4;
    for (int i = 0; topic_specs && topic_specs[i]; i++) {
        if (i >= MAX_EXTRA_ARGS)
            return -1;
        argv[argc++] = "--topic";
        argv[argc++] = topic_specs[i];
    }
    argv[argc] = NULL;

    char path[] = "/tmp/ps-broker-XXXXXX";
    int out = mkstemp(path);
    if (out < 0)
        return -1;
    unlink(path);

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(out);
        return -1;
    }
    if (pid == 0) {
        child_setup(parent);
        dup2(out, STDOUT_FILENO);
        close_inherited();
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }

    /* Wait for the first line. */
    int64_t deadline = mono_ms() + BROKER_START_TIMEOUT_MS;
    int rc = -1;
    while (mono_ms() < deadline) {
        char buf[sizeof(b->bootstrap)];
        ssize_t n = pread(out, buf, sizeof(buf) - 1, 0);
        char *nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
        if (nl != NULL) {
            *nl = '\0';
            if (nl > buf && nl[-1] == '\r')
                nl[-1] = '\0';
            snprintf(b->bootstrap, sizeof(b->bootstrap), "%s", buf);
            rc = b->bootstrap[0] ? 0 : -1;
            break;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "servers: broker exited early (status %d)\n",
                    exit_code(status));
            pid = 0;
            break;
        }
        sleep_ms(20);
    }
    close(out);
    if (rc != 0) {
        if (pid > 0)
            terminate(pid, STOP_TIMEOUT_MS);
        fprintf(stderr, "servers: broker printed no bootstrap servers\n");
        return -1;
    }
    b->pid = pid;
    return 0;
}

void ps_test_broker_stop(ps_test_broker *b)
{
    if (b->pid > 0)
        terminate(b->pid, STOP_TIMEOUT_MS);
    b->pid = 0;
}

/* ------------------------------------------------------------------------
 * Running a command
 * ------------------------------------------------------------------------ */

int ps_test_run(const char *const *argv, int timeout_s, char *out,
                size_t out_size)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    if (out != NULL && out_size > 0)
        out[0] = '\0';

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        child_setup(parent);
        dup2(fds[1], STDOUT_FILENO);
        close_inherited();
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);

    /* Read stdout until EOF (keep draining past out_size so the child
     * never blocks), then reap, all before the deadline. */
    int64_t deadline = mono_ms() + (int64_t)timeout_s * 1000;
    size_t got = 0;
    bool eof = false;
    while (!eof) {
        int left = (int)(deadline - mono_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        char buf[4096];
        ssize_t n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = true;
            break;
        }
        if (out != NULL && out_size > 0 && got < out_size - 1) {
            size_t k = (size_t)n < out_size - 1 - got ? (size_t)n
                                                      : out_size - 1 - got;
            memcpy(out + got, buf, k);
            got += k;
            out[got] = '\0';
        }
    }
    close(fds[0]);

    int status = 0;
    int left = (int)(deadline - mono_ms());
    int waited = eof ? wait_until(pid, &status, left > 0 ? left : 0) : 0;
    if (waited == 0) { /* timed out */
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        return -1;
    }
    return waited == 1 ? exit_code(status) : -1;
}
