/*
 * config.c -- one option table drives flags, environment and config file.
 *
 * Order of application (later wins): defaults, the config file, the
 * environment, the command line.  Every value goes through set_value(), so
 * a value is validated the same way whichever source it came from, and
 * every error message names the option and the source ("--flush-interval-ms",
 * "PROPSTREAM_FLUSH_INTERVAL_MS" or "file.conf:3: flush-interval-ms").
 *
 * List options (PS_OPT_LIST) accumulate within one source and are replaced
 * by a later source: "-t a -t b" gives [a, b] whatever the file said.
 *
 * Secrets (PS_OPT_SECRET, and passthrough keys that look like one) are
 * never printed: --print-config masks them and no error message echoes
 * their value.  A config-file line that is not "key = value" is not echoed
 * either, since it may be a password that lost its key.
 *
 * The generic flags (--help, --help-reference, and --print-config for a
 * table without its own) are handled here, so every subcommand has them.
 *
 * Ownership: strings stored into the target struct and the result are heap
 * copies owned by the caller, released by ps_config_free().
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define CONFIG_LINE_MAX 4096

/* ---------------------------------------------------------------- helpers */

static void *field_ptr(void *target, const ps_option *opt)
{
    return (char *)target + opt->offset;
}

static const void *field_cptr(const void *target, const ps_option *opt)
{
    return (const char *)target + opt->offset;
}

static void strlist_clear(ps_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int strlist_push(ps_strlist *l, const char *s, size_t len)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (v == NULL)
        return PS_ERR_NOMEM;
    l->v = v;
    l->v[l->n] = strndup(s, len);
    if (l->v[l->n] == NULL)
        return PS_ERR_NOMEM;
    l->n++;
    return PS_OK;
}

static void passthrough_clear(ps_passthrough *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].key);
        free(p->v[i].value);
    }
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

/* Set (or replace) key in p. */
static int passthrough_set(ps_passthrough *p, const char *key,
                           const char *value)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->v[i].key, key) == 0) {
            char *v = strdup(value);
            if (v == NULL)
                return PS_ERR_NOMEM;
            free(p->v[i].value);
            p->v[i].value = v;
            return PS_OK;
        }
    }
    ps_kv *v = realloc(p->v, (p->n + 1) * sizeof(*v));
    if (v == NULL)
        return PS_ERR_NOMEM;
    p->v = v;
    p->v[p->n].key = strdup(key);
    p->v[p->n].value = strdup(value);
    if (p->v[p->n].key == NULL || p->v[p->n].value == NULL) {
        free(p->v[p->n].key);
        free(p->v[p->n].value);
        return PS_ERR_NOMEM;
    }
    p->n++;
    return PS_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static const ps_option *find_option(const ps_option *table, size_t n,
                                    const char *key, size_t key_len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].key) == key_len &&
            strncmp(table[i].key, key, key_len) == 0)
            return &table[i];
    return NULL;
}

static const ps_option *find_short(const ps_option *table, size_t n, char c)
{
    for (size_t i = 0; i < n; i++)
        if (table[i].short_flag == c)
            return &table[i];
    return NULL;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static bool has_bounds(const ps_option *opt) { return opt->min <= opt->max; }

/* Whether s holds nothing but white space (strtoll/strtod's leftovers). */
static bool only_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

/* The value as error messages may show it: never a secret's. */
static const char *shown(const ps_option *opt, const char *value)
{
    return (opt->flags & PS_OPT_SECRET) ? "(hidden)" : value;
}

/* Whether s[0..len) is one of the '|'-separated choices. */
static bool is_choice(const char *choices, const char *s, size_t len)
{
    const char *c = choices;
    for (;;) {
        const char *bar = strchr(c, '|');
        size_t clen = bar ? (size_t)(bar - c) : strlen(c);
        if (clen == len && strncmp(c, s, len) == 0)
            return true;
        if (bar == NULL)
            return false;
        c = bar + 1;
    }
}

/* "a|b|c" as "a, b, c" for messages. */
static const char *choices_text(const char *choices, char *buf, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; choices[i] != '\0' && j + 3 < size; i++) {
        if (choices[i] == '|') {
            buf[j++] = ',';
            buf[j++] = ' ';
        } else {
            buf[j++] = choices[i];
        }
    }
    buf[size > 0 ? j : 0] = '\0';
    return buf;
}

/*
 * Check one item s[0..len) of a list (LIST, or a PS_OPT_CSV string) against
 * the option's choices; whole is the full value, for the message.
 */
static int check_item(const ps_option *opt, const char *s, size_t len,
                      const char *whole, const char *src, char *errstr,
                      size_t errstr_size)
{
    char text[512];
    if (len == 0) {
        ps_set_err(errstr, errstr_size, "%s: empty item in list '%s'", src,
                   shown(opt, whole));
        return PS_ERR_CONFIG;
    }
    if (opt->choices != NULL && !is_choice(opt->choices, s, len)) {
        ps_set_err(errstr, errstr_size,
                   "%s: '%.*s' is not one of %s", src,
                   (opt->flags & PS_OPT_SECRET) ? 8 : (int)len,
                   (opt->flags & PS_OPT_SECRET) ? "(hidden)" : s,
                   choices_text(opt->choices, text, sizeof(text)));
        return PS_ERR_CONFIG;
    }
    return PS_OK;
}

/* Split value at ',' (items trimmed); check each item; push each onto l
 * when l is not NULL. */
static int split_items(const ps_option *opt, const char *value,
                       ps_strlist *l, const char *src, char *errstr,
                       size_t errstr_size)
{
    const char *s = value;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        while (len > 0 && isspace((unsigned char)*s)) {
            s++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)s[len - 1]))
            len--;
        int err = check_item(opt, s, len, value, src, errstr, errstr_size);
        if (err < 0)
            return err;
        if (l != NULL && strlist_push(l, s, len) < 0)
            return PS_ERR_NOMEM;
        if (comma == NULL)
            return PS_OK;
        s = comma + 1;
    }
}

/* Append " [min, max] unit" to the message in errstr. */
static void append_range(const ps_option *opt, char *errstr,
                            size_t errstr_size)
{
    size_t len = errstr ? strlen(errstr) : 0;
    if (errstr == NULL || len >= errstr_size)
        return;
    snprintf(errstr + len, errstr_size - len, " [%.15g, %.15g]%s%s",
             opt->min, opt->max, opt->unit ? " " : "",
             opt->unit ? opt->unit : "");
}

/*
 * Validate value for opt and store it.  src names where it came from, for
 * the error message.  For lists, append (the caller clears the list when a
 * new source starts).
 */
static int set_value(const ps_option *opt, void *target, const char *value,
                     const char *src, char *errstr, size_t errstr_size)
{
    void *p = field_ptr(target, opt);
    char *end;

    switch (opt->type) {
    case PS_OPT_STR: {
        if (*value == '\0' && !(opt->flags & PS_OPT_EMPTY_OK)) {
            ps_set_err(errstr, errstr_size, "%s: the value may not be empty",
                       src);
            return PS_ERR_CONFIG;
        }
        if (opt->flags & PS_OPT_CSV) {
            int err = split_items(opt, value, NULL, src, errstr, errstr_size);
            if (err < 0)
                return err;
        } else if (opt->choices != NULL &&
                   !is_choice(opt->choices, value, strlen(value))) {
            char text[512];
            ps_set_err(errstr, errstr_size, "%s: '%s' is not one of %s", src,
                       shown(opt, value),
                       choices_text(opt->choices, text, sizeof(text)));
            return PS_ERR_CONFIG;
        }
        char *copy = strdup(value);
        if (copy == NULL)
            return PS_ERR_NOMEM;
        free(*(char **)p);
        *(char **)p = copy;
        return PS_OK;
    }
    case PS_OPT_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end != value && errno == ERANGE && only_space(end)) {
            ps_set_err(errstr, errstr_size,
                       "%s: '%s' is out of range%s", src, shown(opt, value),
                       has_bounds(opt) ? "" : " of a 64-bit integer");
            if (has_bounds(opt))
                append_range(opt, errstr, errstr_size);
            return PS_ERR_CONFIG;
        }
        if (errno != 0 || end == value || !only_space(end)) {
            ps_set_err(errstr, errstr_size,
                       "%s: '%s' is not an integer", src, shown(opt, value));
            return PS_ERR_CONFIG;
        }
        if (has_bounds(opt) && ((double)v < opt->min || (double)v > opt->max)) {
            ps_set_err(errstr, errstr_size, "%s: %s is out of range", src,
                       shown(opt, value));
            append_range(opt, errstr, errstr_size);
            return PS_ERR_CONFIG;
        }
        *(int64_t *)p = (int64_t)v;
        return PS_OK;
    }
    case PS_OPT_DBL: {
        errno = 0;
        double v = strtod(value, &end);
        /* ERANGE: an overflow gives +-HUGE_VAL, refused as not finite; an
         * underflow gives a usable tiny number. */
        if (end == value || !only_space(end) || !isfinite(v)) {
            ps_set_err(errstr, errstr_size, "%s: '%s' is not a finite number",
                       src, shown(opt, value));
            return PS_ERR_CONFIG;
        }
        if (has_bounds(opt) && (v < opt->min || v > opt->max)) {
            ps_set_err(errstr, errstr_size, "%s: %s is out of range", src,
                       shown(opt, value));
            append_range(opt, errstr, errstr_size);
            return PS_ERR_CONFIG;
        }
        *(double *)p = v;
        return PS_OK;
    }
    case PS_OPT_BOOL:
        if (parse_bool(value, (bool *)p) < 0) {
            ps_set_err(errstr, errstr_size,
                       "%s: '%s' is not a boolean (true/false, yes/no, on/off, "
                       "1/0)",
                       src, shown(opt, value));
            return PS_ERR_CONFIG;
        }
        return PS_OK;
    case PS_OPT_LIST:
        return split_items(opt, value, p, src, errstr, errstr_size);
    }
    return PS_ERR_CONFIG;
}

/* Passthrough "kafka.x" / "redis.x"; returns 1 if key had such a prefix. */
static int try_passthrough(ps_config_result *res, const char *key,
                           const char *value, int *err)
{
    *err = PS_OK;
    if (strncmp(key, "kafka.", 6) == 0 && key[6] != '\0') {
        *err = passthrough_set(&res->kafka, key + 6, value);
        return 1;
    }
    if (strncmp(key, "redis.", 6) == 0 && key[6] != '\0') {
        *err = passthrough_set(&res->redis, key + 6, value);
        return 1;
    }
    return 0;
}

/* --------------------------------------------------------------- sources */

static int apply_defaults(const ps_option *table, size_t n, void *target,
                          char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].def == NULL)
            continue;
        char src[128];
        snprintf(src, sizeof(src), "default of %s", table[i].key);
        int err = set_value(&table[i], target, table[i].def, src, errstr,
                            errstr_size);
        if (err < 0)
            return err;
    }
    return PS_OK;
}

static int apply_file(const ps_option *table, size_t n, void *target,
                      ps_config_result *res, const char *path,
                      bool *list_cleared, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    char line[CONFIG_LINE_MAX];
    int lineno = 0, err = PS_OK;

    if (f == NULL) {
        ps_set_err(errstr, errstr_size, "config file %s: %s", path,
                   strerror(errno));
        return PS_ERR_CONFIG;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            /* not echoed: the line may be a password without its key */
            ps_set_err(errstr, errstr_size,
                       "%s:%d: expected 'key = value' (the line has no '=')",
                       path, lineno);
            err = PS_ERR_CONFIG;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (try_passthrough(res, key, value, &err)) {
            if (err < 0)
                break;
            continue;
        }
        const ps_option *opt = find_option(table, n, key, strlen(key));
        if (opt == NULL) {
            ps_set_err(errstr, errstr_size, "%s:%d: unknown key '%.60s'",
                       path, lineno, key);
            err = PS_ERR_CONFIG;
            break;
        }
        char src[CONFIG_LINE_MAX + 64];
        snprintf(src, sizeof(src), "%s:%d: %s", path, lineno, opt->key);
        if (opt->type == PS_OPT_LIST && !list_cleared[opt - table]) {
            strlist_clear(field_ptr(target, opt));
            list_cleared[opt - table] = true;
        }
        err = set_value(opt, target, value, src, errstr, errstr_size);
        if (err < 0)
            break;
    }
    fclose(f);
    return err;
}

void ps_config_env_name(const char *key, char *out, size_t out_size)
{
    size_t j = 0;
    const char *pre = "PROPSTREAM_";

    for (size_t i = 0; pre[i] != '\0' && j + 1 < out_size; i++)
        out[j++] = pre[i];
    for (size_t i = 0; key[i] != '\0' && j + 1 < out_size; i++)
        out[j++] = key[i] == '-' || key[i] == '.'
                       ? '_'
                       : (char)toupper((unsigned char)key[i]);
    if (out_size > 0)
        out[j] = '\0';
}

static int apply_env(const ps_option *table, size_t n, void *target,
                     char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        char name[128];
        ps_config_env_name(table[i].key, name, sizeof(name));
        const char *value = getenv(name);
        if (value == NULL)
            continue;
        if (table[i].type == PS_OPT_LIST)
            strlist_clear(field_ptr(target, &table[i]));
        int err = set_value(&table[i], target, value, name, errstr,
                            errstr_size);
        if (err < 0)
            return err;
    }
    return PS_OK;
}

/* Find -c FILE / --config FILE / --config=FILE in argv, else the env. */
/*
 * The config files: every -c FILE / --config FILE / --config=FILE in argv,
 * applied in order (a later file wins, e.g. a root-only file of secrets
 * after the main one); PROPSTREAM_CONFIG when argv names none.
 */
static int apply_files(const ps_option *table, size_t n, void *target,
                       ps_config_result *res, int argc, char **argv,
                       char *errstr, size_t errstr_size)
{
    bool *cleared = calloc(n ? n : 1, sizeof(bool));
    int err = PS_OK, files = 0;

    if (cleared == NULL)
        return PS_ERR_NOMEM;
    for (int i = 1; i <= argc && err == PS_OK; i++) {
        const char *path = NULL;
        if (i == argc) {
            path = files == 0 ? getenv("PROPSTREAM_CONFIG") : NULL;
        } else if (strcmp(argv[i], "--") == 0) {
            i = argc - 1; /* only the environment is left to look at */
            continue;
        } else if ((strcmp(argv[i], "-c") == 0 ||
                    strcmp(argv[i], "--config") == 0) &&
                   i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
        if (path == NULL)
            continue;
        files++;
        memset(cleared, 0, (n ? n : 1) * sizeof(bool)); /* a new source */
        err = apply_file(table, n, target, res, path, cleared, errstr,
                         errstr_size);
    }
    free(cleared);
    return err;
}

/* The generic --print-config, for tables without their own. */
static const ps_option print_config_opt = {
    "print-config", 0, PS_OPT_BOOL, "false", 1, 0, NULL,
    "print the effective configuration (secrets masked) and exit", 0, 0,
    NULL};

/*
 * Apply argv.  print_config is where a generic --print-config goes (NULL
 * when the table has its own option of that name).
 */
static int apply_argv(const ps_option *table, size_t n, void *target,
                      ps_config_result *res, int argc, char **argv,
                      bool *print_config, char *errstr, size_t errstr_size)
{
    bool *cleared = calloc(n ? n : 1, sizeof(bool));
    int err = PS_OK;

    if (cleared == NULL)
        return PS_ERR_NOMEM;
    for (int i = 1; i < argc && err == PS_OK; i++) {
        const char *arg = argv[i];
        const ps_option *opt = NULL;
        const char *value = NULL;
        char flag[160];

        if (strcmp(arg, "--") == 0) {
            for (i++; i < argc && err == PS_OK; i++)
                err = strlist_push(&res->positional, argv[i], strlen(argv[i]));
            break;
        }
        if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0) {
            if (i + 1 >= argc) {
                ps_set_err(errstr, errstr_size, "%s needs a FILE", arg);
                err = PS_ERR_CONFIG;
                break;
            }
            i++; /* already applied */
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0) {
            if (arg[9] == '\0') {
                ps_set_err(errstr, errstr_size, "--config needs a FILE");
                err = PS_ERR_CONFIG;
            }
            continue;
        }
        if (strcmp(arg, "-X") == 0 || strncmp(arg, "-X", 2) == 0) {
            const char *kv = arg[2] ? arg + 2 : (i + 1 < argc ? argv[++i] : NULL);
            const char *eq = kv ? strchr(kv, '=') : NULL;
            char key[256];
            if (eq == NULL || (size_t)(eq - kv) >= sizeof(key)) {
                ps_set_err(errstr, errstr_size,
                           "-X: expected kafka.KEY=VALUE or redis.KEY=VALUE");
                err = PS_ERR_CONFIG;
                break;
            }
            memcpy(key, kv, (size_t)(eq - kv));
            key[eq - kv] = '\0';
            if (!try_passthrough(res, key, eq + 1, &err)) {
                ps_set_err(errstr, errstr_size,
                           "-X %s: only kafka.* and redis.* keys pass through",
                           key);
                err = PS_ERR_CONFIG;
            }
            continue;
        }
        if (arg[0] == '-' && arg[1] == '-' && arg[2] != '\0') {
            const char *name = arg + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            opt = find_option(table, n, name, len);
            if (opt == NULL && print_config != NULL &&
                len == strlen(print_config_opt.key) &&
                strncmp(name, print_config_opt.key, len) == 0)
                opt = &print_config_opt;
            snprintf(flag, sizeof(flag), "--%.*s", (int)(len < 100 ? len : 100),
                     name);
            if (opt == NULL) {
                ps_set_err(errstr, errstr_size,
                           "unknown option %s (see --help)", flag);
                err = PS_ERR_CONFIG;
                break;
            }
            if (eq)
                value = eq + 1;
        } else if (arg[0] == '-' && arg[1] != '\0' && arg[1] != '-') {
            opt = find_short(table, n, arg[1]);
            if (opt == NULL) {
                ps_set_err(errstr, errstr_size,
                           "unknown option -%c (see --help)", arg[1]);
                err = PS_ERR_CONFIG;
                break;
            }
            snprintf(flag, sizeof(flag), "-%c/--%s", arg[1], opt->key);
            if (arg[2] != '\0')
                value = arg + 2;
        } else {
            err = strlist_push(&res->positional, arg, strlen(arg));
            continue;
        }
        if (value == NULL) {
            if (opt->type == PS_OPT_BOOL) {
                value = "true";
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                ps_set_err(errstr, errstr_size, "%s needs a value", flag);
                err = PS_ERR_CONFIG;
                break;
            }
        }
        if (opt == &print_config_opt) {
            err = set_value(opt, print_config, value, flag, errstr,
                            errstr_size);
            continue;
        }
        if (opt->type == PS_OPT_LIST && !cleared[opt - table]) {
            strlist_clear(field_ptr(target, opt));
            cleared[opt - table] = true;
        }
        err = set_value(opt, target, value, flag, errstr, errstr_size);
    }
    free(cleared);
    return err;
}

/* 1 for --help / -h, 2 for --help-reference, 0 for neither (the first
 * one before "--" wins). */
static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
        if (strcmp(argv[i], "--help-reference") == 0)
            return 2;
    }
    return 0;
}

static bool is_set(const ps_option *opt, const void *target)
{
    const void *p = field_cptr(target, opt);
    switch (opt->type) {
    case PS_OPT_STR: return *(char *const *)p != NULL;
    case PS_OPT_LIST: return ((const ps_strlist *)p)->n > 0;
    default: return true;
    }
}

/* ------------------------------------------------------------------ API */

int ps_config_parse(const ps_option *table, size_t n, void *target,
                    ps_config_result *res, int argc, char **argv,
                    char *errstr, size_t errstr_size)
{
    int err, help;
    bool print_config = false;
    bool own_print = find_option(table, n, print_config_opt.key,
                                 strlen(print_config_opt.key)) != NULL;
    const char *cmd = argc > 0 ? argv[0] : "propstream";

    memset(res, 0, sizeof(*res));
    help = wants_help(argc, argv);
    if (help == 1) {
        ps_config_usage(cmd, table, n);
        return 1;
    }
    if (help == 2) {
        ps_config_reference(cmd, table, n);
        return 1;
    }
    err = apply_defaults(table, n, target, errstr, errstr_size);
    if (err < 0)
        return err;
    err = apply_files(table, n, target, res, argc, argv, errstr,
                      errstr_size);
    if (err < 0)
        return err;
    err = apply_env(table, n, target, errstr, errstr_size);
    if (err < 0)
        return err;
    err = apply_argv(table, n, target, res, argc, argv,
                     own_print ? NULL : &print_config, errstr, errstr_size);
    if (err < 0)
        return err;
    for (size_t i = 0; i < n; i++) {
        if ((table[i].flags & PS_OPT_REQUIRED) && !is_set(&table[i], target)) {
            char env[128];
            ps_config_env_name(table[i].key, env, sizeof(env));
            ps_set_err(errstr, errstr_size,
                       "missing required option --%s (or %s, or '%s = ...' "
                       "in the config file)",
                       table[i].key, env, table[i].key);
            return PS_ERR_CONFIG;
        }
    }
    if (print_config) {
        ps_config_print(table, n, target, res);
        return 1;
    }
    return PS_OK;
}

void ps_config_free(const ps_option *table, size_t n, void *target,
                    ps_config_result *res)
{
    for (size_t i = 0; target != NULL && i < n; i++) {
        void *p = field_ptr(target, &table[i]);
        if (table[i].type == PS_OPT_STR) {
            free(*(char **)p);
            *(char **)p = NULL;
        } else if (table[i].type == PS_OPT_LIST) {
            strlist_clear(p);
        }
    }
    if (res != NULL) {
        passthrough_clear(&res->kafka);
        passthrough_clear(&res->redis);
        strlist_clear(&res->positional);
    }
}

static const char *type_word(ps_opt_type t)
{
    switch (t) {
    case PS_OPT_STR: return "TEXT";
    case PS_OPT_INT: return "INT";
    case PS_OPT_DBL: return "NUM";
    case PS_OPT_BOOL: return "";
    case PS_OPT_LIST: return "LIST";
    }
    return "";
}

void ps_config_usage(const char *cmd, const ps_option *table, size_t n)
{
    bool own_print = find_option(table, n, print_config_opt.key,
                                 strlen(print_config_opt.key)) != NULL;

    printf("usage: propstream %s [options]\n\n", cmd);
    printf("Each option is also a config-file key (-c FILE, 'key = value') "
           "and an\nenvironment variable PROPSTREAM_<KEY>; flags beat the "
           "environment,\nwhich beats the file.  -X kafka.KEY=VALUE passes "
           "settings to librdkafka.\n\n");
    for (size_t i = 0; i < n; i++) {
        const ps_option *o = &table[i];
        char left[96];
        if (o->short_flag)
            snprintf(left, sizeof(left), "  -%c, --%s %s", o->short_flag,
                     o->key, type_word(o->type));
        else
            snprintf(left, sizeof(left), "      --%s %s", o->key,
                     type_word(o->type));
        printf("%-40s %s", left, o->help ? o->help : "");
        if (o->choices != NULL) {
            char text[512];
            printf(" (%s%s)", (o->type == PS_OPT_LIST ||
                               (o->flags & PS_OPT_CSV)) ? "each of " : "",
                   choices_text(o->choices, text, sizeof(text)));
        }
        if (o->flags & PS_OPT_REQUIRED)
            printf(" (required)");
        else if (o->def != NULL)
            printf(" (default %s%s%s)", o->def, o->unit ? " " : "",
                   o->unit ? o->unit : "");
        printf("\n");
    }
    printf("%-40s %s\n", "  -c, --config FILE", "read options from FILE");
    printf("%-40s %s\n", "  -X kafka.KEY=VALUE",
           "librdkafka setting (also redis.KEY=VALUE)");
    if (!own_print)
        printf("%-40s %s\n", "      --print-config", print_config_opt.help);
    printf("%-40s %s\n", "  -h, --help", "show this help");
    printf("%-40s %s\n", "      --help-reference",
           "print the options as a Markdown reference");
}

/* ------------------------------------------------------------ reference */

/* Print s for a Markdown table cell: '|' would end the cell, '<' start an
 * HTML tag, '*' and '`' change the text's style. */
static void md_text(const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '|': fputs("\\|", stdout); break;
        case '*': fputs("\\*", stdout); break;
        case '`': fputs("\\`", stdout); break;
        case '<': fputs("&lt;", stdout); break;
        case '>': fputs("&gt;", stdout); break;
        case '~': fputs("\\~", stdout); break;
        case '\n': putchar(' '); break;
        default: putchar(*s);
        }
    }
}

/* "a|b" as "`a`, `b`". */
static void md_choices(const char *choices)
{
    fputs("`", stdout);
    for (const char *c = choices; *c != '\0'; c++) {
        if (*c == '|')
            fputs("`, `", stdout);
        else
            putchar(*c);
    }
    fputs("`", stdout);
}

static const char *md_type(const ps_option *o)
{
    switch (o->type) {
    case PS_OPT_STR: return (o->flags & PS_OPT_CSV) ? "list" : "text";
    case PS_OPT_INT: return "integer";
    case PS_OPT_DBL: return "number";
    case PS_OPT_BOOL: return "boolean";
    case PS_OPT_LIST: return "list";
    }
    return "";
}

/* The "valid values" cell.  Bounds are written as "MIN .. MAX" (integers
 * in full), which tests parse back. */
static void md_valid(const ps_option *o)
{
    bool list = o->type == PS_OPT_LIST || (o->flags & PS_OPT_CSV);

    switch (o->type) {
    case PS_OPT_INT:
        if (has_bounds(o))
            printf("%.0f .. %.0f", o->min, o->max);
        else
            fputs("any integer", stdout);
        return;
    case PS_OPT_DBL:
        if (has_bounds(o))
            printf("%.15g .. %.15g", o->min, o->max);
        else
            fputs("any finite number", stdout);
        return;
    case PS_OPT_BOOL:
        fputs("`true`, `false` (or `yes`/`no`, `on`/`off`, `1`/`0`)",
              stdout);
        return;
    case PS_OPT_STR:
    case PS_OPT_LIST:
        break;
    }
    if (list) {
        fputs(o->type == PS_OPT_LIST ? "comma-separated or repeated"
                                     : "comma-separated",
              stdout);
        if (o->choices != NULL) {
            fputs(", each one of ", stdout);
            md_choices(o->choices);
        } else {
            fputs(", no empty item", stdout);
        }
    } else if (o->choices != NULL) {
        fputs("one of ", stdout);
        md_choices(o->choices);
    } else {
        fputs((o->flags & PS_OPT_EMPTY_OK) ? "any text" : "non-empty text",
              stdout);
    }
}

void ps_config_reference(const char *cmd, const ps_option *table, size_t n)
{
    bool own_print = find_option(table, n, print_config_opt.key,
                                 strlen(print_config_opt.key)) != NULL;

    printf("## propstream %s\n\n", cmd);
    printf("| Key | Short | Environment variable | Type | Default | Unit | "
           "Valid values | Description |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        const ps_option *o = &table[i];
        char env[128];
        ps_config_env_name(o->key, env, sizeof(env));
        printf("| `%s` | ", o->key);
        if (o->short_flag)
            printf("`-%c`", o->short_flag);
        printf(" | `%s` | %s | ", env, md_type(o));
        if (o->flags & PS_OPT_REQUIRED)
            fputs("**required**", stdout);
        else if (o->def != NULL)
            printf("`%s`", o->def);
        fputs(" | ", stdout);
        md_text(o->unit);
        fputs(" | ", stdout);
        md_valid(o);
        fputs(" | ", stdout);
        md_text(o->help);
        if (o->flags & PS_OPT_SECRET)
            fputs(" (**secret**: shown as `********` by --print-config, "
                  "never echoed in errors)",
                  stdout);
        fputs(" |\n", stdout);
    }
    printf("\nAlso accepted: `-c FILE` / `--config FILE` (or "
           "`PROPSTREAM_CONFIG`), `-X kafka.KEY=VALUE` and "
           "`-X redis.KEY=VALUE` (or `kafka.KEY = VALUE` in the file), ");
    if (!own_print)
        printf("`--print-config`, ");
    printf("`--help`, `--help-reference`.\n");
}

/* Passthrough keys whose values are never printed. */
static bool secret_key(const char *key)
{
    static const char *const words[] = {"password", "secret", "sasl.jaas",
                                        "token", "key.pem", "oauthbearer.config",
                                        "credential", "private"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasestr(key, words[i]) != NULL)
            return true;
    return false;
}

void ps_config_print(const ps_option *table, size_t n, const void *target,
                     const ps_config_result *res)
{
    for (size_t i = 0; i < n; i++) {
        const ps_option *o = &table[i];
        const void *p = field_cptr(target, o);
        if (strcmp(o->key, print_config_opt.key) == 0)
            continue; /* so the output can be read back with -c */
        if (!is_set(o, target)) {
            printf("# %s = (unset)\n", o->key);
            continue;
        }
        printf("%s = ", o->key);
        if (o->flags & PS_OPT_SECRET) {
            printf("********\n");
            continue;
        }
        switch (o->type) {
        case PS_OPT_STR: {
            const char *s = *(char *const *)p;
            printf("%s", s ? s : "");
            break;
        }
        case PS_OPT_INT: printf("%lld", (long long)*(const int64_t *)p); break;
        case PS_OPT_DBL: printf("%.15g", *(const double *)p); break;
        case PS_OPT_BOOL: printf("%s", *(const bool *)p ? "true" : "false"); break;
        case PS_OPT_LIST: {
            const ps_strlist *l = p;
            for (size_t j = 0; j < l->n; j++)
                printf("%s%s", j ? "," : "", l->v[j]);
            break;
        }
        }
        printf("\n");
    }
    for (size_t i = 0; res != NULL && i < res->kafka.n; i++)
        printf("kafka.%s = %s\n", res->kafka.v[i].key,
               secret_key(res->kafka.v[i].key) ? "********"
                                                : res->kafka.v[i].value);
    for (size_t i = 0; res != NULL && i < res->redis.n; i++)
        printf("redis.%s = %s\n", res->redis.v[i].key,
               secret_key(res->redis.v[i].key) ? "********"
                                                : res->redis.v[i].value);
}
