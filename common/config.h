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
 * starts a comment.  -c may be repeated: files apply in order, a later one
 * winning (say, a root-only file of secrets after the main one).  Keys starting with "kafka." (file) or given as
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
 * A text value may not be empty (unless PS_OPT_EMPTY_OK), and when the
 * option lists its choices ("flat|empirical") it must be one of them; a
 * PS_OPT_CSV text option is a comma-separated list whose every item is
 * checked that way.  So a value is fully validated at parse time, whatever
 * its source, and --print-config never shows one that the run would refuse.
 *
 * Every subcommand also gets, from ps_config_parse itself:
 *   --help              usage, one line per option
 *   --help-reference    the Markdown reference (docs/configuration.md)
 *   --print-config      the effective configuration, secrets masked
 *                       (unless the table has its own "print-config")
 *   -c/--config FILE, -X kafka.KEY=VALUE, -X redis.KEY=VALUE
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
    PS_OPT_SECRET = 1 << 1,   /* never printed, nor echoed in errors */
    PS_OPT_CSV = 1 << 2,      /* STR: comma-separated items, none empty,
                                 each one of choices when given */
    PS_OPT_EMPTY_OK = 1 << 3  /* STR: "" is a meaningful value */
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
    const char *choices; /* "a|b|c": the values a STR (each item of a LIST
                            or PS_OPT_CSV) may take; NULL = any */
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
 * PS_ERR_CONFIG with a message naming the option in errstr.  It returns 1
 * (the caller exits 0 without doing anything else) after printing to stdout
 *   - the usage, for --help or -h;
 *   - the Markdown reference, for --help-reference;
 *   - the effective configuration, for --print-config when the table has
 *     no option of that name (a table that has one handles it itself).
 * On error target may be partly filled: call ps_config_free anyway.
 */
int ps_config_parse(const ps_option *table, size_t n, void *target,
                    ps_config_result *res, int argc, char **argv,
                    char *errstr, size_t errstr_size);

/* Free what ps_config_parse allocated in target and res. */
void ps_config_free(const ps_option *table, size_t n, void *target,
                    ps_config_result *res);

/* Print usage (one line per option with default and unit). */
void ps_config_usage(const char *cmd, const ps_option *table, size_t n);

/*
 * Print the options as a Markdown reference to stdout: a "## propstream
 * cmd" heading, then one table row per option with its key, short flag,
 * environment variable, type, default, unit, valid values and help
 * (secrets and required options noted), then the flags every subcommand
 * accepts.  Deterministic: depends on the table only.
 */
void ps_config_reference(const char *cmd, const ps_option *table, size_t n);

/*
 * Print the effective configuration as "key = value" lines, secrets masked
 * ("key = ********"), unset options as "# key = (unset)" comments, and
 * print-config itself left out: the output (secrets aside) is a config file
 * that -c reads back.
 */
void ps_config_print(const ps_option *table, size_t n, const void *target,
                     const ps_config_result *res);

/* Environment variable name for key: PROPSTREAM_ + upper, '-' -> '_'. */
void ps_config_env_name(const char *key, char *out, size_t out_size);

#endif
