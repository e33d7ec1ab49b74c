/*
 * log.h -- timestamped log lines on stderr.
 *
 * Only the edges (consumer/, sinks/, cli/) log; aggregates return codes.
 * The level comes from PROPSTREAM_LOG_LEVEL (debug, info, warn, error;
 * default info).  Never log secrets or whole payloads.
 */
#ifndef PS_LOG_H
#define PS_LOG_H

typedef enum ps_log_level {
    PS_LOG_DEBUG = 0,
    PS_LOG_INFO = 1,
    PS_LOG_WARN = 2,
    PS_LOG_ERROR = 3
} ps_log_level;

void ps_log(ps_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define ps_debug(...) ps_log(PS_LOG_DEBUG, __VA_ARGS__)
#define ps_info(...) ps_log(PS_LOG_INFO, __VA_ARGS__)
#define ps_warn(...) ps_log(PS_LOG_WARN, __VA_ARGS__)
#define ps_error(...) ps_log(PS_LOG_ERROR, __VA_ARGS__)

/* Set the threshold explicitly (tests); overrides the environment. */
void ps_log_set_level(ps_log_level level);

#endif
