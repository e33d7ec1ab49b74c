/*
 * log.c -- timestamped, levelled log lines on stderr (see log.h).
 *
 * One line per call, written with a single fprintf so lines from the
 * librdkafka threads and the main loop do not interleave mid-line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int level_threshold = -1; /* -1: not read from the environment yet */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ps_log_set_level(ps_log_level level) { level_threshold = (int)level; }

static int threshold(void)
{
    if (level_threshold < 0) {
        const char *env = getenv("PROPSTREAM_LOG_LEVEL");
        level_threshold = PS_LOG_INFO;
        for (int i = 0; env != NULL && i < 4; i++)
            if (strcasecmp(env, level_names[i]) == 0)
                level_threshold = i;
    }
    return level_threshold;
}

void ps_log(ps_log_level level, const char *fmt, ...)
{
    char msg[2048], stamp[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if ((int)level < threshold())
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ propstream %s: %s\n", stamp,
            ts.tv_nsec / 1000000, level_names[level], msg);
}
