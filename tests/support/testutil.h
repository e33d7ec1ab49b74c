/*
 * testutil.h -- small helpers the integration tests share: clocks,
 * strict number parsing, and running child processes with time-outs.
 * Children die with the test (PR_SET_PDEATHSIG), so nothing outlives it.
 */
#ifndef PS_TESTUTIL_H
#define PS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Monotonic seconds. */
double ps_test_now_s(void);
void ps_test_sleep_ms(int ms);

/* The whole string is an integer / a number (false otherwise). */
bool ps_test_parse_ll(const char *s, long long *out);
bool ps_test_parse_dbl(const char *s, double *out);

/* The last max bytes of s (for showing the end of a log). */
const char *ps_test_tail(const char *s, size_t max);

/* Run argv to completion, stdout and stderr both captured into out
 * (NUL-terminated, truncated to out_size), killing it after timeout_s.
 * Returns the exit status, 128 + signal, or -1 on time-out or failure;
 * *elapsed gets the wall time. */
int ps_test_run_capture(const char *const *argv, int timeout_s, char *out,
                        size_t out_size, double *elapsed);

/* Start argv in the background, stdout to out_path and stderr appended to
 * err_path (NULL: /dev/null).  The pid, or -1. */
pid_t ps_test_spawn(const char *const *argv, const char *out_path,
                    const char *err_path);

/* Wait up to timeout_ms for pid: its exit status, 128 + signal, or -1
 * (then it has been killed). */
int ps_test_wait_exit(pid_t pid, int timeout_ms);

#endif
