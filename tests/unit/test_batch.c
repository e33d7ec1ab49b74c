/*
 * test_batch.c -- unit tests for common/batch.c.
 *
 * Checks commands read back through ps_batch_argv() byte for byte: names,
 * binary-safe ids, key prefixes, number formats (contract section 3),
 * dropped and cancelled commands, clear/reuse without reallocation, and a
 * 100k-command flush.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../common/batch.h"

#define MAX_ARGS 16

/* Command i's arguments; argc returned. */
static size_t get_cmd(const ps_batch *b, size_t i, const char **argv,
                      size_t *lens)
{
    size_t argc = ps_batch_argc(b, i);
    assert_true(argc <= MAX_ARGS);
    ps_batch_argv(b, i, argv, lens);
    return argc;
}

/* Argument k of command i equals the NUL-terminated string want. */
static void assert_arg(const ps_batch *b, size_t i, size_t k,
                       const char *want)
{
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    size_t argc = get_cmd(b, i, argv, lens);
    assert_true(k < argc);
    if (lens[k] != strlen(want) || memcmp(argv[k], want, lens[k]) != 0)
        fail_msg("command %zu arg %zu: got \"%.*s\", want \"%s\"", i, k,
                 (int)lens[k], argv[k], want);
}

/* A one-argument command holding the formatted double / integer. */
static void assert_dbl(double v, const char *want)
{
    ps_batch *b = ps_batch_new("ps:");
    ps_batch_begin(b, "SET");
    ps_batch_arg_dbl(b, v);
    ps_batch_end(b);
    assert_int_equal(ps_batch_count(b), 1);
    assert_arg(b, 0, 1, want);
    ps_batch_destroy(b);
}

static void assert_real(double v, const char *want)
{
    ps_batch *b = ps_batch_new("ps:");
    ps_batch_begin(b, "SET");
    ps_batch_arg_real(b, v);
    ps_batch_end(b);
    assert_int_equal(ps_batch_count(b), 1);
    assert_arg(b, 0, 1, want);
    ps_batch_destroy(b);
}

static void assert_i64(int64_t v, const char *want)
{
    ps_batch *b = ps_batch_new("ps:");
    ps_batch_begin(b, "SET");
    ps_batch_arg_i64(b, v);
    ps_batch_end(b);
    assert_arg(b, 0, 1, want);
    ps_batch_destroy(b);
}

static void test_build_hset(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    assert_non_null(b);
    assert_string_equal(ps_batch_prefix(b), "ps:");
    assert_int_equal(ps_batch_count(b), 0);
    assert_int_equal(ps_batch_bytes(b), 0);

    ps_str id = {"c42", 3};
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "cust:", id, NULL);
    ps_batch_arg_cstr(b, "events");
    ps_batch_arg_i64(b, 42);
    ps_batch_arg_cstr(b, "segment_name");
    ps_batch_arg_str(b, (ps_str){"big spender", 11});
    ps_batch_end(b);

    assert_int_equal(ps_batch_count(b), 1);
    assert_int_equal(ps_batch_argc(b, 0), 6);
    assert_arg(b, 0, 0, "HSET");
    assert_arg(b, 0, 1, "ps:cust:c42");
    assert_arg(b, 0, 2, "events");
    assert_arg(b, 0, 3, "42");
    assert_arg(b, 0, 4, "segment_name");
    assert_arg(b, 0, 5, "big spender");
    assert_int_equal(ps_batch_bytes(b),
                     4 + 11 + 6 + 2 + 12 + 11);
    ps_batch_destroy(b);
}

static void test_binary_id(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    static const char raw[] = {'a', '\0', 'b', '\xff', '\n', ' '};
    ps_str id = {raw, sizeof(raw)};
    ps_batch_begin(b, "ZADD");
    ps_batch_arg_key(b, "cust:", id, ":intent");
    ps_batch_arg_dbl(b, 0.5);
    ps_batch_arg_str(b, id);
    ps_batch_arg(b, "\0\0", 2);
    ps_batch_end(b);

    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    assert_int_equal(get_cmd(b, 0, argv, lens), 5);
    static const char want[] = "ps:cust:a\0b\xff\n :intent";
    assert_int_equal(lens[1], sizeof(want) - 1);
    assert_memory_equal(argv[1], want, sizeof(want) - 1);
    assert_int_equal(lens[3], sizeof(raw));
    assert_memory_equal(argv[3], raw, sizeof(raw));
    assert_int_equal(lens[4], 2);
    assert_memory_equal(argv[4], "\0\0", 2);
    ps_batch_destroy(b);
}

static void test_key_prefix(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("tenant7:");
    assert_string_equal(ps_batch_prefix(b), "tenant7:");
    ps_batch_begin(b, "DEL");
    ps_batch_arg_key(b, "global", (ps_str){NULL, 0}, NULL); /* null id */
    ps_batch_arg_key(b, NULL, (ps_str){"x", 1}, NULL);
    ps_batch_arg_key(b, "cohort:", (ps_str){"2024-01", 7}, ":w7d");
    ps_batch_arg_key(b, NULL, (ps_str){NULL, 0}, NULL);
    ps_batch_end(b);
    assert_arg(b, 0, 1, "tenant7:global");
    assert_arg(b, 0, 2, "tenant7:x");
    assert_arg(b, 0, 3, "tenant7:cohort:2024-01:w7d");
    assert_arg(b, 0, 4, "tenant7:");
    ps_batch_destroy(b);

    b = ps_batch_new(""); /* empty prefix */
    ps_batch_begin(b, "DEL");
    ps_batch_arg_key(b, "a:", (ps_str){"b", 1}, NULL);
    ps_batch_end(b);
    assert_arg(b, 0, 1, "a:b");
    ps_batch_destroy(b);
}

static void test_numbers(void **state)
{
    (void)state;
    assert_dbl(0.1, "0.1");
    assert_dbl(39940.21, "39940.21");
    assert_dbl(0.1 + 0.2, "0.30000000000000004");
    assert_dbl(1.0 / 3.0, "0.3333333333333333");
    assert_dbl(1e300, "1e+300");
    assert_dbl(-0.0, "-0");
    assert_dbl(0.0, "0");
    assert_dbl(1.0, "1");
    assert_dbl(-2.5, "-2.5");
    assert_dbl(0.25, "0.25");
    assert_dbl(NAN, "nan");
    assert_dbl(-NAN, "nan");
    assert_dbl(INFINITY, "inf");
    assert_dbl(-INFINITY, "-inf");
    assert_dbl(5e-324, "4.94065645841247e-324");

    /* derived reals: 10 significant digits, integral values exact */
    assert_real(0.2367322599880739, "0.23673226");
    assert_real(2.0 / 3.0, "0.6666666667");
    assert_real(0.5, "0.5");
    assert_real(1.0, "1");
    assert_real(0.99999999999, "1");
    assert_real(123456.789, "123456.789");
    assert_real(-2.25, "-2.25");
    assert_real(0.00012345678912, "0.0001234567891");
    assert_real(1e-5, "1e-05");
    assert_real(2.5e9, "2500000000");
    assert_real(1.5e10 + 0.5, "1.5e+10");
    assert_real(NAN, "nan");

    assert_i64(0, "0");
    assert_i64(-1, "-1");
    assert_i64(7, "7");
    assert_i64(1234567890123, "1234567890123");
    assert_i64(INT64_MAX, "9223372036854775807");
    assert_i64(INT64_MIN, "-9223372036854775808");
}

/* Every finite double comes back unchanged through strtod. */
static void test_double_round_trip(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        double v;
        memcpy(&v, &x, sizeof(v));
        if (!isfinite(v))
            continue;
        ps_batch_clear(b);
        ps_batch_begin(b, "SET");
        ps_batch_arg_dbl(b, v);
        ps_batch_end(b);
        const char *argv[2];
        size_t lens[2];
        get_cmd(b, 0, argv, lens);
        char buf[64];
        assert_true(lens[1] < sizeof(buf));
        memcpy(buf, argv[1], lens[1]);
        buf[lens[1]] = '\0';
        double back = strtod(buf, NULL);
        assert_memory_equal(&back, &v, sizeof(v));
    }
    ps_batch_destroy(b);
}

static void test_fmt(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    ps_batch_begin(b, "HSET");
    ps_batch_arg_fmt(b, "retention_%d", 3);
    ps_batch_arg_fmt(b, "%s", "");
    /* Longer than the arena's first block, so the grow path runs. */
    char *big = malloc(10001);
    memset(big, 'z', 10000);
    big[10000] = '\0';
    ps_batch_arg_fmt(b, "<%s>", big);
    ps_batch_end(b);

    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    assert_int_equal(get_cmd(b, 0, argv, lens), 4);
    assert_arg(b, 0, 1, "retention_3");
    assert_int_equal(lens[2], 0);
    assert_int_equal(lens[3], 10002);
    assert_int_equal(argv[3][0], '<');
    assert_int_equal(argv[3][10001], '>');
    assert_int_equal(argv[3][5000], 'z');
    free(big);
    ps_batch_destroy(b);
}

static void test_empty_command_dropped(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    ps_batch_begin(b, "HSET");
    ps_batch_end(b); /* name only: dropped */
    assert_int_equal(ps_batch_count(b), 0);
    assert_int_equal(ps_batch_bytes(b), 0);

    ps_batch_begin(b, "HSET");
    ps_batch_arg_cstr(b, "k");
    ps_batch_arg_cstr(b, "f");
    ps_batch_cancel(b); /* abandoned */
    ps_batch_cancel(b); /* no open command: no-op */
    assert_int_equal(ps_batch_count(b), 0);

    ps_batch_begin(b, "INCR");
    ps_batch_arg_cstr(b, "counter");
    ps_batch_end(b);
    ps_batch_begin(b, "HSET");
    ps_batch_end(b); /* dropped after a kept one */
    ps_batch_begin(b, "DEL");
    ps_batch_arg_cstr(b, "gone");
    ps_batch_end(b);
    assert_int_equal(ps_batch_count(b), 2);
    assert_int_equal(ps_batch_argc(b, 0), 2);
    assert_int_equal(ps_batch_argc(b, 1), 2);
    assert_arg(b, 0, 0, "INCR");
    assert_arg(b, 0, 1, "counter");
    assert_arg(b, 1, 0, "DEL");
    assert_arg(b, 1, 1, "gone");
    assert_int_equal(ps_batch_bytes(b), 4 + 7 + 3 + 4);

    /* The open command's bytes are not counted until it ends. */
    ps_batch_begin(b, "SET");
    ps_batch_arg_cstr(b, "x");
    assert_int_equal(ps_batch_count(b), 2);
    assert_int_equal(ps_batch_bytes(b), 18);
    ps_batch_end(b);
    assert_int_equal(ps_batch_count(b), 3);
    ps_batch_destroy(b);
}

static void test_clear_keeps_working(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10; i++) {
            ps_batch_begin(b, "HINCRBY");
            ps_batch_arg_key(b, "prod:", (ps_str){"p", 1}, NULL);
            ps_batch_arg_cstr(b, "clicks");
            ps_batch_arg_i64(b, round * 100 + i);
            ps_batch_end(b);
        }
        assert_int_equal(ps_batch_count(b), 10);
        assert_arg(b, 9, 3, round == 0 ? "9" : round == 1 ? "109" : "209");
        ps_batch_clear(b);
        assert_int_equal(ps_batch_count(b), 0);
        assert_int_equal(ps_batch_bytes(b), 0);
        assert_string_equal(ps_batch_prefix(b), "ps:");
    }
    /* clear with a command open forgets it too */
    ps_batch_begin(b, "SET");
    ps_batch_arg_cstr(b, "a");
    ps_batch_clear(b);
    ps_batch_begin(b, "SET");
    ps_batch_arg_cstr(b, "b");
    ps_batch_arg_cstr(b, "1");
    ps_batch_end(b);
    assert_int_equal(ps_batch_count(b), 1);
    assert_arg(b, 0, 1, "b");
    ps_batch_destroy(b);
}

#define MANY 100000

static void fill_many(ps_batch *b)
{
    char id[32];
    for (int i = 0; i < MANY; i++) {
        int n = snprintf(id, sizeof(id), "c%d", i);
        ps_batch_begin(b, "HSET");
        ps_batch_arg_key(b, "cust:", (ps_str){id, (uint32_t)n}, NULL);
        ps_batch_arg_cstr(b, "events");
        ps_batch_arg_i64(b, i);
        ps_batch_arg_cstr(b, "p_purchase");
        ps_batch_arg_dbl(b, i / 3.0);
        ps_batch_end(b);
    }
}

static void test_many_commands_reuse_memory(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    fill_many(b);
    assert_int_equal(ps_batch_count(b), MANY);
    assert_arg(b, 0, 1, "ps:cust:c0");
    assert_arg(b, MANY - 1, 1, "ps:cust:c99999");
    assert_arg(b, MANY - 1, 3, "99999");
    assert_arg(b, 3, 5, "1");
    size_t bytes = ps_batch_bytes(b);

    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    get_cmd(b, 0, argv, lens);
    const char *first = argv[0];
    get_cmd(b, MANY - 1, argv, lens);
    const char *last = argv[5];

    /* The same flush again: same bytes at the same addresses, i.e. the
     * arenas were rewound, not reallocated. */
    ps_batch_clear(b);
    fill_many(b);
    assert_int_equal(ps_batch_count(b), MANY);
    assert_int_equal(ps_batch_bytes(b), bytes);
    get_cmd(b, 0, argv, lens);
    assert_ptr_equal(argv[0], first);
    get_cmd(b, MANY - 1, argv, lens);
    assert_ptr_equal(argv[5], last);
    ps_batch_destroy(b);
}

/* Random binary arguments written and read back exactly. */
static void test_argv_round_trip(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    enum { NCMD = 500 };
    static unsigned char want[NCMD][MAX_ARGS][40];
    static size_t want_len[NCMD][MAX_ARGS];
    static size_t want_argc[NCMD];
    uint32_t x = 12345;
    size_t total = 0;
    for (size_t i = 0; i < NCMD; i++) {
        x = x * 1103515245u + 12345u;
        size_t argc = 2 + (x >> 16) % (MAX_ARGS - 2);
        want_argc[i] = argc;
        ps_batch_begin(b, "CMD");
        memcpy(want[i][0], "CMD", 3);
        want_len[i][0] = 3;
        total += 3;
        for (size_t k = 1; k < argc; k++) {
            x = x * 1103515245u + 12345u;
            size_t len = (x >> 16) % 40; /* empty arguments too */
            for (size_t j = 0; j < len; j++) {
                x = x * 1103515245u + 12345u;
                want[i][k][j] = (unsigned char)(x >> 24);
            }
            want_len[i][k] = len;
            total += len;
            ps_batch_arg(b, want[i][k], len);
        }
        ps_batch_end(b);
    }
    assert_int_equal(ps_batch_count(b), NCMD);
    assert_int_equal(ps_batch_bytes(b), total);
    for (size_t i = 0; i < NCMD; i++) {
        const char *argv[MAX_ARGS];
        size_t lens[MAX_ARGS];
        assert_int_equal(get_cmd(b, i, argv, lens), want_argc[i]);
        for (size_t k = 0; k < want_argc[i]; k++) {
            assert_int_equal(lens[k], want_len[i][k]);
            assert_int_equal(argv[k][lens[k]], '\0'); /* usable as C string */
            if (lens[k])
                assert_memory_equal(argv[k], want[i][k], lens[k]);
        }
    }
    ps_batch_destroy(b);
}

/* ps_batch_resp: the protocol bytes, written out by hand; binary bytes
 * (NUL, CR, LF) pass through inside their length; an empty argument is
 * "$0"; an open command is not included. */
static void test_resp(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new("ps:");
    assert_non_null(b);
    ps_batch_begin(b, "HSET");
    ps_batch_arg_key(b, "cust:", (ps_str){"c1", 2}, NULL);
    ps_batch_arg_cstr(b, "events");
    ps_batch_arg_i64(b, -12);
    ps_batch_end(b);
    ps_batch_begin(b, "SET");
    ps_batch_arg(b, "k\0\r\n", 4);
    ps_batch_arg(b, "", 0);
    ps_batch_end(b);
    ps_batch_begin(b, "DEL"); /* still open: not part of the bytes */
    ps_batch_arg_cstr(b, "x");

    static const char want[] =
        "*4\r\n$4\r\nHSET\r\n$10\r\nps:cust:c1\r\n$6\r\nevents\r\n"
        "$3\r\n-12\r\n"
        "*3\r\n$3\r\nSET\r\n$4\r\nk\0\r\n\r\n$0\r\n\r\n";
    ps_wbuf w;
    ps_wbuf_init(&w);
    ps_wbuf_put(&w, ">", 1); /* appends after what is there */
    ps_batch_resp(b, &w);
    assert_int_equal(w.len, 1 + sizeof(want) - 1);
    assert_memory_equal(w.data + 1, want, sizeof(want) - 1);
    ps_wbuf_clear(&w);
    ps_batch_destroy(b);
}

static void test_destroy_null(void **state)
{
    (void)state;
    ps_batch_destroy(NULL);
}

/* ps_batch_begin while a command is open is a bug: it must abort (only
 * checked where assert() is compiled in). */
static void test_begin_while_open_asserts(void **state)
{
    (void)state;
#ifdef NDEBUG
    skip();
#else
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* keep the expected assertion message out of the test output */
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        ps_batch *b = ps_batch_new("ps:");
        ps_batch_begin(b, "SET");
        ps_batch_begin(b, "SET");
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_hset),
        cmocka_unit_test(test_binary_id),
        cmocka_unit_test(test_key_prefix),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_double_round_trip),
        cmocka_unit_test(test_fmt),
        cmocka_unit_test(test_empty_command_dropped),
        cmocka_unit_test(test_clear_keeps_working),
        cmocka_unit_test(test_many_commands_reuse_memory),
        cmocka_unit_test(test_argv_round_trip),
        cmocka_unit_test(test_resp),
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_begin_while_open_asserts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
