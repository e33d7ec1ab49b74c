/*
 * test_config.c -- the option table parser: defaults, file, environment and
 * flags in that order of precedence; every kind of bad value rejected with
 * a message naming the option; passthrough settings; secrets masked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/config.h"
#include "../../common/error.h"

typedef struct opts {
    char *name;
    int64_t count;
    double rate;
    bool flag;
    ps_strlist items;
    char *secret;
} opts;

static const ps_option table[] = {
    {"name", 'n', PS_OPT_STR, "dflt", 1, 0, NULL, "a name",
     offsetof(opts, name), 0},
    {"count", 'k', PS_OPT_INT, "10", 1, 100, "things", "a count",
     offsetof(opts, count), 0},
    {"rate", 0, PS_OPT_DBL, "0.5", 0, 1, NULL, "a rate",
     offsetof(opts, rate), 0},
    {"flag", 'F', PS_OPT_BOOL, "false", 1, 0, NULL, "a flag",
     offsetof(opts, flag), 0},
    {"items", 'i', PS_OPT_LIST, "a,b", 1, 0, NULL, "a list",
     offsetof(opts, items), 0},
    {"secret-password", 0, PS_OPT_STR, NULL, 1, 0, NULL, "secret",
     offsetof(opts, secret), PS_OPT_SECRET},
};
#define N (sizeof(table) / sizeof(table[0]))

static int parse(opts *o, ps_config_result *r, char *err, size_t errsz,
                 int argc, const char **argv)
{
    memset(o, 0, sizeof(*o));
    return ps_config_parse(table, N, o, r, argc, (char **)argv, err, errsz);
}

static char conf_path[64];

static void write_conf(const char *text)
{
    strcpy(conf_path, "/tmp/ps_test_conf_XXXXXX");
    int fd = mkstemp(conf_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_defaults(void **state)
{
    (void)state;
    opts o;
    ps_config_result r;
    char err[256];
    const char *argv[] = {"t"};
    assert_int_equal(parse(&o, &r, err, sizeof(err), 1, argv), 0);
    assert_string_equal(o.name, "dflt");
    assert_int_equal(o.count, 10);
    assert_true(o.rate == 0.5);
    assert_false(o.flag);
    assert_int_equal(o.items.n, 2);
    assert_string_equal(o.items.v[1], "b");
    assert_null(o.secret);
    ps_config_free(table, N, &o, &r);
}

/* flags > environment > file > default */
static void test_precedence(void **state)
{
    (void)state;
    opts o;
    ps_config_result r;
    char err[256];
    write_conf("# comment\nname = from-file\ncount = 20\nrate=0.25\n"
               "items = x, y ,z\nkafka.security.protocol = SASL_SSL\n");
    setenv("PROPSTREAM_COUNT", "30", 1);
    const char *argv[] = {"t", "-c", conf_path, "--name=from-flag", "-F",
                          "-X", "kafka.linger.ms=5", "-i", "q", "-i", "r,s"};
    assert_int_equal(parse(&o, &r, err, sizeof(err), 11, argv), 0);
    assert_string_equal(o.name, "from-flag");
    assert_int_equal(o.count, 30);
    assert_true(o.rate == 0.25);
    assert_true(o.flag);
    assert_int_equal(o.items.n, 3);
    assert_string_equal(o.items.v[0], "q");
    assert_string_equal(o.items.v[2], "s");
    assert_int_equal(r.kafka.n, 2);
    assert_string_equal(r.kafka.v[0].key, "security.protocol");
    assert_string_equal(r.kafka.v[1].value, "5");
    ps_config_free(table, N, &o, &r);

    /* the file alone gives its list */
    unsetenv("PROPSTREAM_COUNT");
    const char *argv2[] = {"t", "--config", conf_path};
    assert_int_equal(parse(&o, &r, err, sizeof(err), 3, argv2), 0);
    assert_int_equal(o.count, 20);
    assert_int_equal(o.items.n, 3);
    assert_string_equal(o.items.v[1], "y");
    ps_config_free(table, N, &o, &r);
    unlink(conf_path);
}

static void expect_error(int argc, const char **argv, const char *needle)
{
    opts o;
    ps_config_result r;
    char err[512] = "";
    int rc = parse(&o, &r, err, sizeof(err), argc, argv);
    if (rc != PS_ERR_CONFIG || strstr(err, needle) == NULL)
        fail_msg("rc %d, message '%s' lacks '%s'", rc, err, needle);
    ps_config_free(table, N, &o, &r);
}

static void test_bad_values(void **state)
{
    (void)state;
    const char *a1[] = {"t", "--nope", "1"};
    expect_error(3, a1, "--nope");
    const char *a2[] = {"t", "--count", "abc"};
    expect_error(3, a2, "--count");
    const char *a3[] = {"t", "--count", "101"};
    expect_error(3, a3, "out of range");
    const char *a4[] = {"t", "-k", "-5"};
    expect_error(3, a4, "count");
    const char *a5[] = {"t", "--rate", "nan"};
    expect_error(3, a5, "--rate");
    const char *a6[] = {"t", "--flag=maybe"};
    expect_error(2, a6, "--flag");
    const char *a7[] = {"t", "--count"};
    expect_error(2, a7, "needs a value");
    const char *a8[] = {"t", "-Z"};
    expect_error(2, a8, "-Z");
    const char *a9[] = {"t", "-X", "other.x=1"};
    expect_error(3, a9, "kafka.");
    const char *a10[] = {"t", "--items", "a,,b"};
    expect_error(3, a10, "empty item");
    const char *a11[] = {"t", "-c", "/nonexistent/ps.conf"};
    expect_error(3, a11, "/nonexistent/ps.conf");

    write_conf("name = x\nbogus = 1\n");
    const char *a12[] = {"t", "-c", conf_path};
    expect_error(3, a12, ":2: unknown key 'bogus'");
    unlink(conf_path);
    write_conf("count = 1000\n");
    expect_error(3, a12, ":1: count");
    unlink(conf_path);
    write_conf("just words\n");
    expect_error(3, a12, "expected 'key = value'");
    unlink(conf_path);

    setenv("PROPSTREAM_RATE", "2", 1);
    const char *a13[] = {"t"};
    expect_error(1, a13, "PROPSTREAM_RATE");
    unsetenv("PROPSTREAM_RATE");
}

static void test_required(void **state)
{
    (void)state;
    static const ps_option req[] = {
        {"bootstrap", 'b', PS_OPT_STR, NULL, 1, 0, NULL, "servers", 0,
         PS_OPT_REQUIRED},
    };
    char *bootstrap = NULL;
    ps_config_result r;
    char err[256];
    const char *argv[] = {"t"};
    assert_int_equal(ps_config_parse(req, 1, &bootstrap, &r, 1, (char **)argv,
                                     err, sizeof(err)),
                     PS_ERR_CONFIG);
    assert_non_null(strstr(err, "--bootstrap"));
    assert_non_null(strstr(err, "PROPSTREAM_BOOTSTRAP"));
    ps_config_free(req, 1, &bootstrap, &r);
}

static void test_print_masks_secrets(void **state)
{
    (void)state;
    opts o;
    ps_config_result r;
    char err[256], out[4096];
    const char *argv[] = {"t", "--secret-password", "hunter2", "-X",
                          "kafka.sasl.password=swordfish"};
    assert_int_equal(parse(&o, &r, err, sizeof(err), 5, argv), 0);
    fflush(stdout);
    int saved = dup(1);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 1);
    ps_config_print(table, N, &o, &r);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof(out) - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    assert_null(strstr(out, "hunter2"));
    assert_null(strstr(out, "swordfish"));
    assert_non_null(strstr(out, "secret-password = ********"));
    assert_non_null(strstr(out, "count = 10"));
    ps_config_free(table, N, &o, &r);
}

static void test_env_name(void **state)
{
    (void)state;
    char name[64];
    ps_config_env_name("flush-interval-ms", name, sizeof(name));
    assert_string_equal(name, "PROPSTREAM_FLUSH_INTERVAL_MS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_print_masks_secrets),
        cmocka_unit_test(test_env_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
