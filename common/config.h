/*
 * config.h -- options from one table: flags, environment and config file.
 *
 * Each subcommand describes its options in a static ps_option table; the
 * same table drives parsing, validation, --help and the configuration
 * reference, so docs and code cannot drift.  Every option has
 *   - a config-file key          flush-interval-ms = 100
 *   - a long flag                --flush-interval-ms 100  (or =100)
 *   - an environment variable    PROPSTREAM_FLUSH_INTERVAL_MS=100
 *   - optionally a short flag    -f 100
 * Precedence: flags > environment > file > default.  The file is named by
 * -c/--config (or PROPSTREAM_CONFIG) and holds "key = value" lines; '#'
 * starts a comment.  Keys starting with "kafka." (file) or given as
 * -X kafka.KEY=VALUE are passed through to librdkafka untouched; likewise
 * "redis." is kept for the Redis sink.  An unknown key, a bad value or a
 * missing required option is an error naming the option.
 *
 * Values are written into a caller-owned struct at each option's offset:
 *   PS_OPT_STR  -> char *      (heap copy; freed by ps_config_free)
 *   PS_OPT_INT  -> int64_t     (min/max checked)
 *   PS_OPT_DBL  -> double      (min/max checked, finite)
 *   PS_OPT_BOOL -> bool        (flag without value = true; true/false/1/0/yes/no)
 *   PS_OPT_LIST -> ps_strlist  (repeatable flag; file/env value split at ',')
 */
#ifndef PS_CONFIG_H
#define PS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ps_opt_type {
    PS_OPT_STR,
    PS_OPT_INT,
    PS_OPT_DBL,
    PS_OPT_BOOL,
    PS_OPT_LIST
} ps_opt_type;

enum {
    PS_OPT_REQUIRED = 1 << 0, /* no default: must be given */
    PS_OPT_SECRET = 1 << 1    /* never printed */
};

typedef struct ps_strlist {
    char **v;
    size_t n;
} ps_strlist;

typedef struct ps_option {
    const char *key;   /* "flush-interval-ms" */
    char short_flag;   /* 'f', or 0 */
    ps_opt_type type;
    const char *def;   /* default as text; NULL = unset */
    double min, max;   /* INT / DBL bounds (inclusive); ignored if min > max */
    const char *unit;  /* "ms", "events", ... or NULL */
    const char *help;  /* one line */
    size_t offset;     /* offsetof(target struct, field) */
    int flags;
} ps_option;

/* A key=value pair passed through to a library ("kafka.", "redis."). */
typedef struct ps_kv {
    char *key; /* without the prefix */
    char *value;
} ps_kv;

typedef struct ps_passthrough {
    ps_kv *v;
    size_t n;
} ps_passthrough;

typedef struct ps_config_result {
    ps_passthrough kafka; /* kafka.* */
    ps_passthrough redis; /* redis.* */
    ps_strlist positional;
} ps_config_result;

/*
 * Parse defaults, the config file, the environment and argv (argv[0] is
 * the subcommand name and skipped) into target.  Returns 0, or
 * PS_ERR_CONFIG with a message naming the option in errstr.  "--help" makes
 * it return 1 after printing usage to stdout.  On error target may be
 * partly filled: call ps_config_free anyway.
 */
int ps_config_parse(const ps_option *table, size_t n, void *target,
                    ps_config_result *res, int argc, char **argv,
                    char *errstr, size_t errstr_size);

/* Free what ps_config_parse allocated in target and res. */
void ps_config_free(const ps_option *table, size_t n, void *target,
                    ps_config_result *res);

/* Print usage (one line per option with default and unit). */
void ps_config_usage(const char *cmd, const ps_option *table, size_t n);

/* Print the effective configuration as "key = value" lines, secrets
 * masked. */
void ps_config_print(const ps_option *table, size_t n, const void *target,
                     const ps_config_result *res);

/* Environment variable name for key: PROPSTREAM_ + upper, '-' -> '_'. */
void ps_config_env_name(const char *key, char *out, size_t out_size);

#endif
