/*
 * testutil.c -- helpers shared by the integration tests (testutil.h).
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double ps_test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ps_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

bool ps_test_parse_ll(const char *s, long long *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

bool ps_test_parse_dbl(const char *s, double *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0')
        return false;
    *out = v;
    return true;
}

const char *ps_test_tail(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > max ? s + (n - max) : s;
}

int ps_test_run_capture(const char *const *argv, int timeout_s, char *out,
                       size_t out_size, double *elapsed)
{
    int fds[2];
    double t0 = ps_test_now_s();
    size_t used = 0;

    if (out_size > 0)
        out[0] = '\0';
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);

    bool timed_out = false;
    for (;;) {
        double left = timeout_s - (ps_test_now_s() - t0);
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int n = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        char buf[4096];
        ssize_t r = read(fds[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* EOF: the child closed its ends (exited) */
        if (out_size > 0 && used < out_size - 1) {
            size_t take = (size_t)r;
            if (take > out_size - 1 - used)
                take = out_size - 1 - used;
            memcpy(out + used, buf, take);
            used += take;
            out[used] = '\0';
        }
    }
    close(fds[0]);

    int status = 0;
    if (timed_out) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        *elapsed = ps_test_now_s() - t0;
        return -1;
    }
    /* Output closed: wait for the exit, still bounded by the timeout. */
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (ps_test_now_s() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            *elapsed = ps_test_now_s() - t0;
            return -1;
        }
        usleep(10000);
    }
    *elapsed = ps_test_now_s() - t0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

pid_t ps_test_spawn(const char *const *argv, const char *out, const char *err)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fo = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    int fi = open("/dev/null", O_RDONLY);
    if (fo >= 0)
        dup2(fo, STDOUT_FILENO);
    if (fe >= 0)
        dup2(fe, STDERR_FILENO);
    if (fi >= 0)
        dup2(fi, STDIN_FILENO);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

int ps_test_wait_exit(pid_t pid, int timeout_ms)
{
    int status;
    for (int t = 0; t < timeout_ms; t += 20) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status)
                                     : 128 + WTERMSIG(status);
        ps_test_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

