/*
 * test_cohorts_segments.c -- cohorts and segments in a real Redis, against
 * recounts done here, independently of propstream's code.
 *
 *   test_retail_cohorts  ../shared/data/online-retail-sample.csv through
 *                        `propstream import` (Confluent Avro, a 1-partition
 *                        topic on the mock cluster) and `propstream run -e`.
 *                        The CSV is re-read here by a small RFC 4180 reader
 *                        of our own and recounted with the importer's rules
 *                        (SOURCES.md): rows with an InvoiceNo starting with
 *                        C, a negative Quantity or no CustomerID are
 *                        skipped; every other row is a PURCHASE of amount
 *                        Quantity x UnitPrice (summed exactly, in integer
 *                        micro-units).  The file has no signup date, so a
 *                        customer's cohort is the UTC month of its first
 *                        purchase; offset m = months from the cohort month.
 *                        Every ps:cohort:{YYYY-MM} hash must hold exactly
 *                        size, active_{m}, revenue_{m} (when non-zero) and
 *                        retention_{m} (active/size) of the recount, counts
 *                        exactly, revenue within 1e-9 relative, and the set
 *                        of cohort keys must be the recount's.
 *   test_gen_segments    `propstream gen` (a small seeded population, truth
 *                        file) into a 4-partition topic, `propstream run -e`,
 *                        then from Redis: the ps:segment:{k} sizes (k = 0..2,
 *                        no others) sum to the customers with a segment and
 *                        each equals the number of customers whose segment
 *                        is k; names are exactly {vip, premium, regular};
 *                        every customer's segment_name is its segment's
 *                        name; centroids lie within the range of the
 *                        customers' features (mean PURCHASE amount, number
 *                        of PURCHASEs, recomputed from the truth file); a
 *                        customer has a segment iff it has a purchase; per
 *                        customer spend_n / spend_sum equal the truth
 *                        recount; cohort is the UTC month of the
 *                        customer's signup_ts, else of its first event
 *                        (contract section 2, "Cohorts";
 *                        COHORT_SIGNUP_FROM_ANY_EVENT below); every
 *                        ps:cohort:{YYYY-MM} size equals the number of
 *                        customers whose cohort field is that month; and
 *                        every cohort is recounted from the truth with
 *                        that rule (check_gen_cohorts): size, active_{m},
 *                        revenue_{m}, retention_{m}, zeros only where
 *                        customers were moved out, and its :w7d / :w30d
 *                        windows (n, sum, mean, std, p_spend_gt, active
 *                        over the hash's [start_ms, end_ms)); cohort x
 *                        segment windows are checked for position and
 *                        bounds.
 *                        Then one CLICK (no purchase) per customer with a
 *                        segment, imported as JSON after everything else,
 *                        and `propstream run -e` again (same group: resumes
 *                        at its offsets): customers whose nearest centre
 *                        has moved change segment on that click, so the
 *                        sizes must still equal the customers per segment,
 *                        names must still agree, and each move must have
 *                        emitted exactly one segment_changed.
 *
 * Mismatches are collected per check, the first few printed with numbers,
 * and the test fails at the end if any check had one, so a single run shows
 * every discrepancy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "../support/servers.h"
#include "../support/testutil.h"

#ifndef PS_BIN
#error "PS_BIN (path of the propstream binary) must be defined"
#endif
#ifndef PS_SOURCE_DIR
#error "PS_SOURCE_DIR must be defined"
#endif

#define RETAIL PS_SOURCE_DIR "/../shared/data/online-retail-sample.csv"

/* The cohort rule checked on generated data.  1: the contract's words --
 * the month of the customer's signup_ts (whichever of its events carries
 * it), else of its first event.  0: the month of the signup_ts carried by
 * the customer's first event, else of that event (what aggregates/cohorts.c
 * documents: "a signup_ts seen only later does not move the customer"). */
#ifndef COHORT_SIGNUP_FROM_ANY_EVENT
/* cohorts.c implements 1: a customer first seen without signup_ts is
 * moved, with its activity, revenue and window contributions, when its
 * signup_ts arrives. */
#define COHORT_SIGNUP_FROM_ANY_EVENT 1
#endif

#define GEN_CUSTOMERS 1500
#define GEN_SEED "20240917"

/* ------------------------------------------------------------------ */
/* Fixtures: one broker for the file, one Redis and temp dir per test  */
/* ------------------------------------------------------------------ */

static ps_test_broker broker;

typedef struct fx {
    ps_test_redis redis;
    bool have_redis;
    char addr[64];
    char dir[64]; /* temporary directory, "" when none */
    redisContext *c;
} fx;

static int group_setup(void **state)
{
    static const char *const topics[] = {"retail:1", "gen:4", NULL};
    (void)state;
    return ps_test_broker_start(&broker, PS_BIN, 1, topics);
}

static int group_teardown(void **state)
{
    (void)state;
    ps_test_broker_stop(&broker);
    return 0;
}

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/ps-cohseg-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    if (ps_test_redis_start(&f->redis, NULL) != 0) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    f->have_redis = true;
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", f->redis.port);
    struct timeval tv = {5, 0};
    f->c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    if (f->c == NULL || f->c->err) {
        if (f->c != NULL)
            redisFree(f->c);
        ps_test_redis_stop(&f->redis);
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static const char *const tmp_files[] = {"truth.jsonl", "clicks.csv", NULL};

static int fx_teardown(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    if (f->c != NULL)
        redisFree(f->c);
    if (f->have_redis)
        ps_test_redis_stop(&f->redis);
    for (int i = 0; tmp_files[i] != NULL; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s/%s", f->dir, tmp_files[i]);
        unlink(p);
    }
    if (rmdir(f->dir) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Mismatch bookkeeping: count per check, print the first few. */
typedef struct check {
    const char *name;
    long long bad, total;
} check;

static void check_bad(check *k, const char *fmt, ...)
{
    if (k->bad++ < 5) {
        va_list ap;
        char msg[512];
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        print_error("MISMATCH [%s] %s\n", k->name, msg);
    }
}

/* Print every check; fail if any had a mismatch. */
static void checks_done(check *ks, size_t n)
{
    long long bad = 0;
    for (size_t i = 0; i < n; i++) {
        print_message("    check %-28s %lld compared, %lld mismatched\n",
                      ks[i].name, ks[i].total, ks[i].bad);
        bad += ks[i].bad;
    }
    if (bad != 0)
        fail_msg("%lld mismatches (see above)", bad);
}

static bool rel_close(double a, double b, double rel)
{
    return fabs(a - b) <= rel * fmax(1.0, fmax(fabs(a), fabs(b)));
}

/* `propstream run -e` on topic with group; fails unless it exits 0. */
static void run_propstream(const fx *f, const char *topic, const char *group)
{
    static char out[1 << 16];
    /* short session timeout: the mock cluster makes a new group member
     * wait for a previous member's session otherwise */
    const char *argv[] = {PS_BIN, "run", "-b", broker.bootstrap, "-t", topic,
                          "-g", group, "-r", f->addr, "-e",
                          "--flush-interval-ms", "50", "--stats-interval-s",
                          "0", "-X", "kafka.session.timeout.ms=6000", NULL};
    double elapsed = 0;
    int rc = ps_test_run_capture(argv, 180, out, sizeof(out), &elapsed);
    print_message("    propstream run -t %s: exit %d after %.1f s\n", topic,
                  rc, elapsed);
    if (rc != 0) {
        print_error("propstream run output (tail):\n%s\n",
                    ps_test_tail(out, 4000));
        fail_msg("propstream run exited %d (-1 = time-out)", rc);
    }
}

/* Run a command whose stdout is one JSON object; exit 0 expected. */
static json_t *run_json(const char *what, const char *const *argv)
{
    static char out[1 << 17];
    json_error_t jerr;
    double t0 = ps_test_now_s();
    int rc = ps_test_run(argv, 120, out, sizeof(out));
    print_message("    propstream %s: exit %d after %.1f s\n", what, rc,
                  ps_test_now_s() - t0);
    if (rc != 0)
        fail_msg("propstream %s exited %d; stdout: %s", what, rc,
                 ps_test_tail(out, 2000));
    json_t *j = json_loads(out, 0, &jerr);
    if (j == NULL)
        fail_msg("propstream %s: summary is not JSON (%s)", what, jerr.text);
    return j;
}

static long long jget_int(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b != NULL)
        v = v ? json_object_get(v, b) : NULL;
    if (!json_is_integer(v))
        fail_msg("summary field %s%s%s missing or not an integer", a,
                 b ? "." : "", b ? b : "");
    return (long long)json_integer_value(v);
}

/* Every key matching pattern (SCAN), as a NULL-terminated array. */
static char **scan_keys(redisContext *c, const char *pattern, size_t *n_out)
{
    char cursor[32] = "0";
    size_t n = 0, cap = 256;
    char **v = malloc(cap * sizeof(*v));
    assert_non_null(v);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor,
                                     pattern);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 2);
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            if (n + 1 >= cap) {
                cap *= 2;
                v = realloc(v, cap * sizeof(*v));
                assert_non_null(v);
            }
            v[n++] = strdup(keys->element[i]->str);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    v[n] = NULL;
    *n_out = n;
    return v;
}

static void free_keys(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Month number (year * 12 + month - 1) of a UTC time in ms (Hinnant's
 * civil_from_days). */
static int month_of_ms(int64_t ms)
{
    int64_t days = ms / 86400000;
    if (ms % 86400000 < 0)
        days--;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    return (int)(y * 12 + m - 1);
}

static void month_str(int month, char *out, size_t cap)
{
    snprintf(out, cap, "%04d-%02d", month / 12, month % 12 + 1);
}

/* ------------------------------------------------------------------ */
/* Online Retail: our own CSV reader and recount                       */
/* ------------------------------------------------------------------ */

#define MAX_FIELDS 16

/* Next RFC 4180 record from *p (quotes, doubled quotes, CRLF, quoted
 * line breaks); fields written NUL-terminated into buf.  Returns the field
 * count, 0 at the end. */
static int csv_record(const char **p, const char *end, char *buf,
                      size_t cap, char **fields)
{
    const char *s = *p;
    size_t o = 0;
    int nf = 0;
    bool quoted = false;

    if (s >= end)
        return 0;
    fields[nf++] = buf;
    while (s < end) {
        char ch = *s++;
        if (quoted) {
            if (ch == '"') {
                if (s < end && *s == '"') {
                    buf[o++] = '"';
                    s++;
                } else {
                    quoted = false;
                }
            } else {
                buf[o++] = ch;
            }
        } else if (ch == '"') {
            quoted = true;
        } else if (ch == ',') {
            buf[o++] = '\0';
            assert_true(nf < MAX_FIELDS);
            fields[nf++] = buf + o;
        } else if (ch == '\n') {
            break;
        } else if (ch != '\r') {
            buf[o++] = ch;
        }
        assert_true(o + 2 < cap);
    }
    buf[o] = '\0';
    *p = s;
    return nf;
}

static void trim_inplace(char **s)
{
    while (**s == ' ' || **s == '\t')
        (*s)++;
    size_t n = strlen(*s);
    while (n > 0 && ((*s)[n - 1] == ' ' || (*s)[n - 1] == '\t'))
        (*s)[--n] = '\0';
}

/* "-12" -> -12; the whole field must be an integer. */
static long long parse_int_strict(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0')
        fail_msg("not an integer: \"%s\"", s);
    return v;
}

/* "4.15" -> 4150000 (micro-units), exactly; at most 6 decimals. */
static long long parse_micro(const char *s)
{
    bool neg = *s == '-';
    long long ip = 0, fp = 0;
    int dec = 0;
    const char *p = s + neg;
    if (!isdigit((unsigned char)*p))
        fail_msg("not a decimal: \"%s\"", s);
    while (isdigit((unsigned char)*p))
        ip = ip * 10 + (*p++ - '0');
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (++dec > 6)
                fail_msg("more than 6 decimals: \"%s\"", s);
            fp = fp * 10 + (*p++ - '0');
        }
    }
    if (*p != '\0')
        fail_msg("not a decimal: \"%s\"", s);
    for (; dec < 6; dec++)
        fp *= 10;
    long long v = ip * 1000000 + fp;
    return neg ? -v : v;
}

/* "2011-10-06 16:20:00" -> 20111006162000 (orders like the time) and its
 * month number. */
static long long parse_date(const char *s, int *month)
{
    int y, mo, d, h, mi, se;
    char tail;
    if (sscanf(s, "%4d-%2d-%2d %2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &se,
               &tail) != 6 ||
        mo < 1 || mo > 12 || d < 1 || d > 31)
        fail_msg("unexpected InvoiceDate \"%s\"", s);
    *month = y * 12 + mo - 1;
    return ((((y * 100LL + mo) * 100 + d) * 100 + h) * 100 + mi) * 100 + se;
}

typedef struct rrow {
    char cust[32];
    long long when; /* YYYYMMDDhhmmss */
    int month;
    long long amount_micro;
} rrow;

static int cmp_rrow(const void *a, const void *b)
{
    const rrow *x = a, *y = b;
    int c = strcmp(x->cust, y->cust);
    if (c != 0)
        return c;
    return (x->when > y->when) - (x->when < y->when);
}

#define MAXM 64 /* months covered by cohorts / offsets */

typedef struct retail_recount {
    long long rows, events, cancelled, negative, missing, customers;
    long long total_micro;
    int base; /* month number of index 0 */
    long long size[MAXM];
    long long active[MAXM][MAXM];
    long long rev_micro[MAXM][MAXM];
} retail_recount;

static void retail_recount_file(const char *path, retail_recount *rc)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *data = malloc((size_t)len + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)len, fp), (size_t)len);
    data[len] = '\0';
    fclose(fp);

    const char *p = data, *end = data + len;
    char buf[8192], *f[MAX_FIELDS];
    int ci_inv = -1, ci_qty = -1, ci_date = -1, ci_price = -1, ci_cust = -1;
    int nh = csv_record(&p, end, buf, sizeof(buf), f);
    for (int i = 0; i < nh; i++) {
        char *h = f[i];
        if (i == 0 && strncmp(h, "\xEF\xBB\xBF", 3) == 0)
            h += 3;
        if (strcmp(h, "InvoiceNo") == 0)
            ci_inv = i;
        else if (strcmp(h, "Quantity") == 0)
            ci_qty = i;
        else if (strcmp(h, "InvoiceDate") == 0)
            ci_date = i;
        else if (strcmp(h, "UnitPrice") == 0)
            ci_price = i;
        else if (strcmp(h, "CustomerID") == 0)
            ci_cust = i;
    }
    assert_true(ci_inv >= 0 && ci_qty >= 0 && ci_date >= 0 &&
                ci_price >= 0 && ci_cust >= 0);

    size_t cap = 40000, n = 0;
    rrow *rows = malloc(cap * sizeof(*rows));
    assert_non_null(rows);
    memset(rc, 0, sizeof(*rc));
    int nf;
    while ((nf = csv_record(&p, end, buf, sizeof(buf), f)) > 0) {
        if (nf == 1 && f[0][0] == '\0')
            continue; /* blank line */
        assert_int_equal(nf, nh);
        rc->rows++;
        char *inv = f[ci_inv], *cust = f[ci_cust];
        trim_inplace(&inv);
        trim_inplace(&cust);
        if (inv[0] == 'C' || inv[0] == 'c') {
            rc->cancelled++;
            continue;
        }
        long long qty = parse_int_strict(f[ci_qty]);
        long long price = parse_micro(f[ci_price]);
        if (qty < 0) {
            rc->negative++;
            continue;
        }
        /* "17850.0" -> "17850" */
        char *dot = strchr(cust, '.');
        if (dot != NULL && strspn(dot + 1, "0") == strlen(dot + 1))
            *dot = '\0';
        if (cust[0] == '\0') {
            rc->missing++;
            continue;
        }
        /* a negative price would be a bad amount: none in this file */
        assert_true(price >= 0);
        if (n == cap) {
            cap *= 2;
            rows = realloc(rows, cap * sizeof(*rows));
            assert_non_null(rows);
        }
        rrow *r = &rows[n++];
        assert_true(strlen(cust) < sizeof(r->cust));
        strcpy(r->cust, cust);
        r->when = parse_date(f[ci_date], &r->month);
        r->amount_micro = qty * price;
    }
    free(data);
    rc->events = (long long)n;

    /* group by customer, in time order: the first purchase's month is the
     * cohort */
    qsort(rows, n, sizeof(*rows), cmp_rrow);
    int minm = INT32_MAX;
    for (size_t i = 0; i < n; i++)
        if (rows[i].month < minm)
            minm = rows[i].month;
    rc->base = minm;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        bool seen[MAXM] = {false};
        int coh = rows[i].month - minm; /* first in time order */
        assert_true(coh >= 0 && coh < MAXM);
        rc->size[coh]++;
        rc->customers++;
        for (; j < n && strcmp(rows[j].cust, rows[i].cust) == 0; j++) {
            int off = rows[j].month - rows[i].month;
            assert_true(off >= 0 && off < MAXM);
            if (!seen[off]) {
                seen[off] = true;
                rc->active[coh][off]++;
            }
            rc->rev_micro[coh][off] += rows[j].amount_micro;
            rc->total_micro += rows[j].amount_micro;
        }
        i = j;
    }
    free(rows);
}

/* true when key is exactly "ps:cohort:YYYY-MM"; *month gets its number */
static bool cohort_key(const char *key, int *month)
{
    int y, m, len = 0;
    if (strncmp(key, "ps:cohort:", 10) != 0 || strlen(key) != 17)
        return false;
    if (sscanf(key + 10, "%4d-%2d%n", &y, &m, &len) != 2 || len != 7 ||
        m < 1 || m > 12)
        return false;
    *month = y * 12 + m - 1;
    return true;
}

static void test_retail_cohorts(void **state)
{
    fx *f = *state;
    if (access(RETAIL, R_OK) != 0) {
        fprintf(stderr, "SKIPPED: %s not found (the shared data folder is "
                        "not beside this clone)\n", RETAIL);
        skip();
    }
    retail_recount *rc = calloc(1, sizeof(*rc));
    assert_non_null(rc);
    retail_recount_file(RETAIL, rc);

    const char *const imp[] = {PS_BIN, "import", "-b", broker.bootstrap,
                               "-t", "retail", "--format-in",
                               "online-retail", RETAIL, NULL};
    json_t *sum = run_json("import", imp);
    /* the importer and our reader agree on what becomes an event */
    assert_int_equal(jget_int(sum, "rows", NULL), rc->rows);
    assert_int_equal(jget_int(sum, "events", NULL), rc->events);
    assert_int_equal(jget_int(sum, "skipped", "cancelled"), rc->cancelled);
    assert_int_equal(jget_int(sum, "skipped", "negative_quantity"),
                     rc->negative);
    assert_int_equal(jget_int(sum, "skipped", "missing_customer"),
                     rc->missing);
    assert_int_equal(jget_int(sum, "customers", NULL), rc->customers);
    json_decref(sum);

    run_propstream(f, "retail", "cohorts-retail");

    check ks[] = {{"cohort keys", 0, 0},   {"cohort size", 0, 0},
                  {"active_m", 0, 0},      {"revenue_m", 0, 0},
                  {"retention_m", 0, 0},   {"fields known", 0, 0}};
    enum { K_KEYS, K_SIZE, K_ACTIVE, K_REV, K_RET, K_EXTRA };

    /* the set of cohort keys */
    size_t nkeys = 0, ncoh = 0, ncells = 0;
    char **keys = scan_keys(f->c, "ps:cohort:*", &nkeys);
    bool in_redis[MAXM] = {false};
    for (size_t i = 0; i < nkeys; i++) {
        int month;
        if (!cohort_key(keys[i], &month))
            continue; /* :w7d, :w30d, :seg:... */
        int ix = month - rc->base;
        ks[K_KEYS].total++;
        if (ix < 0 || ix >= MAXM || rc->size[ix] == 0) {
            check_bad(&ks[K_KEYS], "%s in Redis, no such cohort in the "
                                   "recount", keys[i]);
            continue;
        }
        in_redis[ix] = true;
    }
    for (int ix = 0; ix < MAXM; ix++) {
        if (rc->size[ix] == 0)
            continue;
        ncoh++;
        if (!in_redis[ix]) {
            char m[16];
            month_str(rc->base + ix, m, sizeof(m));
            ks[K_KEYS].total++;
            check_bad(&ks[K_KEYS], "ps:cohort:%s missing (size %lld in the "
                                   "recount)", m, rc->size[ix]);
        }
    }
    free_keys(keys);

    /* every field of every cohort */
    long long redis_size_sum = 0, recount_size_sum = 0;
    double redis_rev_sum = 0;
    for (int ix = 0; ix < MAXM; ix++) {
        if (rc->size[ix] == 0 || !in_redis[ix])
            continue;
        char m[16];
        month_str(rc->base + ix, m, sizeof(m));
        redisReply *r = redisCommand(f->c, "HGETALL ps:cohort:%s", m);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        bool have_size = false, have_a[MAXM] = {false},
             have_r[MAXM] = {false}, have_t[MAXM] = {false};
        long long got_a[MAXM] = {0};
        double got_r[MAXM] = {0}, got_t[MAXM] = {0};
        long long got_size = -1;
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const char *fld = r->element[i]->str, *val = r->element[i + 1]->str;
            int off, len = 0;
            long long ll;
            double d;
            ks[K_EXTRA].total++;
            if (strcmp(fld, "size") == 0 && ps_test_parse_ll(val, &ll)) {
                have_size = true;
                got_size = ll;
            } else if (sscanf(fld, "active_%d%n", &off, &len) == 1 &&
                       fld[len] == '\0' && off >= 0 && off < MAXM &&
                       ps_test_parse_ll(val, &ll)) {
                have_a[off] = true;
                got_a[off] = ll;
            } else if (sscanf(fld, "revenue_%d%n", &off, &len) == 1 &&
                       fld[len] == '\0' && off >= 0 && off < MAXM &&
                       ps_test_parse_dbl(val, &d)) {
                have_r[off] = true;
                got_r[off] = d;
            } else if (sscanf(fld, "retention_%d%n", &off, &len) == 1 &&
                       fld[len] == '\0' && off >= 0 && off < MAXM &&
                       ps_test_parse_dbl(val, &d)) {
                have_t[off] = true;
                got_t[off] = d;
            } else {
                check_bad(&ks[K_EXTRA], "ps:cohort:%s field %s = \"%s\"", m,
                          fld, val);
            }
        }
        freeReplyObject(r);

        ks[K_SIZE].total++;
        recount_size_sum += rc->size[ix];
        redis_size_sum += got_size > 0 ? got_size : 0;
        if (!have_size || got_size != rc->size[ix])
            check_bad(&ks[K_SIZE], "ps:cohort:%s size %lld, recount %lld", m,
                      got_size, rc->size[ix]);
        for (int o = 0; o < MAXM; o++) {
            long long want_a = rc->active[ix][o];
            double want_r = (double)rc->rev_micro[ix][o] / 1e6;
            if (want_a == 0) {
                /* no activity at o: no field for it either */
                if (have_a[o] || have_r[o] || have_t[o]) {
                    ks[K_EXTRA].total++;
                    check_bad(&ks[K_EXTRA],
                              "ps:cohort:%s has fields for offset %d, where "
                              "the recount has no activity", m, o);
                }
                continue;
            }
            ncells++;
            ks[K_ACTIVE].total++;
            if (!have_a[o] || got_a[o] != want_a)
                check_bad(&ks[K_ACTIVE], "ps:cohort:%s active_%d %s%lld, "
                                         "recount %lld", m, o,
                          have_a[o] ? "" : "(absent) ", got_a[o], want_a);
            ks[K_REV].total++;
            redis_rev_sum += got_r[o];
            if (rc->rev_micro[ix][o] == 0 ? have_r[o] && got_r[o] != 0
                                          : !have_r[o] ||
                                                !rel_close(got_r[o], want_r,
                                                           1e-9))
                check_bad(&ks[K_REV], "ps:cohort:%s revenue_%d %s%.17g, "
                                      "recount %.6f", m, o,
                          have_r[o] ? "" : "(absent) ", got_r[o], want_r);
            ks[K_RET].total++;
            double want_t = (double)want_a / (double)rc->size[ix];
            if (!have_t[o] || fabs(got_t[o] - want_t) > 1e-9)
                check_bad(&ks[K_RET], "ps:cohort:%s retention_%d %s%.12g, "
                                      "recount %lld/%lld = %.12g", m, o,
                          have_t[o] ? "" : "(absent) ", got_t[o], want_a,
                          rc->size[ix], want_t);
        }
    }
    print_message("    online retail: %lld rows -> %lld purchases of %lld "
                  "customers; %zu cohorts, %zu (cohort, offset) cells; "
                  "sizes sum %lld (Redis %lld); revenue %.2f (Redis %.6f)\n",
                  rc->rows, rc->events, rc->customers, ncoh, ncells,
                  recount_size_sum, redis_size_sum,
                  (double)rc->total_micro / 1e6, redis_rev_sum);
    assert_true(ncoh > 1 && ncells > ncoh); /* the recount is not empty */
    free(rc);
    checks_done(ks, sizeof(ks) / sizeof(ks[0]));
}

/* ------------------------------------------------------------------ */
/* Generated data: segments, spend and cohorts per customer            */
/* ------------------------------------------------------------------ */

typedef struct gcust {
    long long events, purchases; /* purchases: PURCHASEs with an amount */
    double purchase_sum;
    long long spend_n;
    double spend_sum;
    int64_t first_ts, last_ts;
    int64_t first_signup;  /* signup_ts of the first event, 0 = none */
    int64_t signup;        /* any event's signup_ts, 0 = none */
    bool signup_conflict;  /* two different signup_ts */
} gcust;

/* One truth event, as much as the cohort recount needs. */
typedef struct gev {
    int cust;      /* index 1..GEN_CUSTOMERS */
    int64_t ts;
    double amount; /* spend amount, when spend */
    bool spend;    /* PURCHASE or SPEND with an amount */
} gev;

static gev *gen_events;
static size_t gen_events_n, gen_events_cap;

static void gen_event_keep(int cust, int64_t ts, bool spend, double amount)
{
    if (gen_events_n == gen_events_cap) {
        gen_events_cap = gen_events_cap ? 2 * gen_events_cap : 4096;
        gen_events = realloc(gen_events, gen_events_cap * sizeof(gev));
        assert_non_null(gen_events);
    }
    gen_events[gen_events_n++] = (gev){cust, ts, amount, spend};
}

static long long gen_recount(const char *path, gcust *per)
{
    FILE *fp = fopen(path, "r");
    char line[4096];
    long long n = 0;
    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp) != NULL) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (o == NULL)
            fail_msg("truth line %lld is not JSON: %s", n + 1, jerr.text);
        const char *id = json_string_value(json_object_get(o, "customer_id"));
        const char *type = json_string_value(json_object_get(o, "type"));
        json_t *amount = json_object_get(o, "amount");
        json_t *ts = json_object_get(o, "ts");
        json_t *signup = json_object_get(o, "signup_ts");
        assert_non_null(id);
        assert_non_null(type);
        assert_true(json_is_integer(ts));
        assert_true(id[0] == 'c');
        int ix = atoi(id + 1); /* c000001.. */
        assert_true(ix >= 1 && ix <= GEN_CUSTOMERS);
        gcust *c = &per[ix];
        int64_t t = (int64_t)json_integer_value(ts);
        int64_t s = json_is_integer(signup)
                        ? (int64_t)json_integer_value(signup) : 0;
        if (c->events == 0 || t < c->first_ts) {
            /* the truth is in emission order, non-decreasing ts: the first
             * line of a customer is its first event */
            assert_true(c->events == 0);
            c->first_ts = t;
            c->first_signup = s;
        }
        if (s != 0) {
            if (c->signup != 0 && c->signup != s)
                c->signup_conflict = true;
            if (c->signup == 0)
                c->signup = s;
        }
        c->last_ts = t;
        c->events++;
        bool is_purchase = strcmp(type, "PURCHASE") == 0;
        bool spend = json_is_number(amount) &&
                     (is_purchase || strcmp(type, "SPEND") == 0);
        gen_event_keep(ix, t, spend, spend ? json_number_value(amount) : 0);
        if (spend) {
            double a = json_number_value(amount);
            c->spend_n++;
            c->spend_sum += a;
            if (is_purchase) {
                c->purchases++;
                c->purchase_sum += a;
            }
        }
        json_decref(o);
        n++;
    }
    fclose(fp);
    return n;
}

/* gen's signup window (184 days) and horizon (30 days) around 2025-01-01
 * put every cohort within 2024-06 .. 2025-03: month numbers from here */
#define GEN_MONTH0 (2024 * 12)

/* ------------------------------------------------------------------ */
/* Generated data: every cohort recounted from the truth file          */
/* ------------------------------------------------------------------ */

/* P(X >= t) under N(mean, sd^2); a point mass when sd = 0. */
static double tail_ge(double mean, double sd, double t)
{
    if (sd <= 0)
        return mean >= t ? 1 : 0;
    return 0.5 * erfc((t - mean) / (sd * sqrt(2.0)));
}

/* HGETALL of key into fields / values (strings owned by the reply). */
static redisReply *hgetall(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "HGETALL %s", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static bool hfield(const redisReply *r, const char *field, double *v)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, field) == 0)
            return ps_test_parse_dbl(r->element[i + 1]->str, v);
    return false;
}

/*
 * The contract's cohort rule recounted from the truth: a customer's cohort
 * is the month of its signup_ts (whichever event carries it), else of its
 * first event; offset = months from it to the event's month (0 for an
 * earlier month).  Every ps:cohort:{YYYY-MM} must hold exactly that size,
 * active_{m} and revenue_{m} (PURCHASE and SPEND amounts > 0) with
 * retention_{m} = active / size; fields of offsets without activity, and
 * whole cohorts the recount does not have (months customers were moved
 * out of), may exist only with the value 0.  Every cohort's :w7d and
 * :w30d hash must equal the recount over [start_ms, end_ms) of the
 * events of the cohort's customers: n, sum, mean, std, p_spend_gt (T =
 * 70,000), distinct active customers.  Cohort x segment hashes need
 * propstream's segment at each event, which the truth does not have: for
 * them, the same position as the cohort's, and n, sum, active no larger
 * than the cohort's (the exact per-segment figures are unit-tested).
 * Returns the number of customers whose cohort differs from the month of
 * their first event's signup_ts (else first event): those propstream had
 * to move.
 */
static long long check_gen_cohorts(fx *f, const gcust *per, check *k_sz,
                                   check *k_act, check *k_rev, check *k_ret,
                                   check *k_zero, check *k_win,
                                   check *k_seg)
{
    static long long size[MAXM], active[MAXM][MAXM];
    static double rev[MAXM][MAXM];
    static int coh[GEN_CUSTOMERS + 1];
    static unsigned char seen_off[GEN_CUSTOMERS + 1][MAXM];
    long long moved = 0;
    memset(size, 0, sizeof(size));
    memset(active, 0, sizeof(active));
    memset(rev, 0, sizeof(rev));
    memset(seen_off, 0, sizeof(seen_off));
    for (int i = 1; i <= GEN_CUSTOMERS; i++) {
        coh[i] = -1;
        if (per[i].events == 0)
            continue;
        int m = month_of_ms(per[i].signup ? per[i].signup : per[i].first_ts);
        int alt = month_of_ms(per[i].first_signup ? per[i].first_signup
                                                  : per[i].first_ts);
        moved += m != alt;
        coh[i] = m - GEN_MONTH0;
        assert_true(coh[i] >= 0 && coh[i] < MAXM);
        size[coh[i]]++;
    }
    for (size_t j = 0; j < gen_events_n; j++) {
        const gev *e = &gen_events[j];
        int c = coh[e->cust];
        int off = month_of_ms(e->ts) - GEN_MONTH0 - c;
        if (off < 0)
            off = 0;
        assert_true(off < MAXM);
        if (!seen_off[e->cust][off]++)
            active[c][off]++;
        if (e->spend && e->amount > 0)
            rev[c][off] += e->amount;
    }

    size_t nk = 0;
    char **keys = scan_keys(f->c, "ps:cohort:*", &nk);
    bool in_redis[MAXM] = {false};
    for (size_t i = 0; i < nk; i++) {
        int month;
        if (!cohort_key(keys[i], &month))
            continue;
        int ix = month - GEN_MONTH0;
        assert_true(ix >= 0 && ix < MAXM);
        in_redis[ix] = true;
        redisReply *r = hgetall(f->c, keys[i]);
        double got_a[MAXM], got_r[MAXM], got_t[MAXM], sz = -1;
        bool have_a[MAXM] = {false}, have_r[MAXM] = {false},
             have_t[MAXM] = {false};
        for (size_t e = 0; e + 1 < r->elements; e += 2) {
            const char *fld = r->element[e]->str;
            int off, len = 0;
            double v;
            if (!ps_test_parse_dbl(r->element[e + 1]->str, &v))
                v = NAN;
            if (strcmp(fld, "size") == 0)
                sz = v;
            else if (sscanf(fld, "active_%d%n", &off, &len) == 1 &&
                     fld[len] == '\0' && off >= 0 && off < MAXM)
                have_a[off] = true, got_a[off] = v;
            else if (sscanf(fld, "revenue_%d%n", &off, &len) == 1 &&
                     fld[len] == '\0' && off >= 0 && off < MAXM)
                have_r[off] = true, got_r[off] = v;
            else if (sscanf(fld, "retention_%d%n", &off, &len) == 1 &&
                     fld[len] == '\0' && off >= 0 && off < MAXM)
                have_t[off] = true, got_t[off] = v;
        }
        freeReplyObject(r);
        k_sz->total++;
        if (sz != (double)size[ix])
            check_bad(k_sz, "%s size %g, recount %lld", keys[i], sz,
                      size[ix]);
        for (int o = 0; o < MAXM; o++) {
            if (active[ix][o] == 0) {
                /* only zeros where the recount has no activity */
                if (!have_a[o] && !have_r[o] && !have_t[o])
                    continue;
                k_zero->total++;
                if ((have_a[o] && got_a[o] != 0) ||
                    (have_r[o] && !(fabs(got_r[o]) < 1e-6)) ||
                    (have_t[o] && got_t[o] != 0))
                    check_bad(k_zero, "%s offset %d: active %g revenue %g "
                                      "retention %g, recount none",
                              keys[i], o, have_a[o] ? got_a[o] : NAN,
                              have_r[o] ? got_r[o] : NAN,
                              have_t[o] ? got_t[o] : NAN);
                continue;
            }
            k_act->total++;
            if (!have_a[o] || got_a[o] != (double)active[ix][o])
                check_bad(k_act, "%s active_%d %g, recount %lld", keys[i], o,
                          have_a[o] ? got_a[o] : NAN, active[ix][o]);
            k_rev->total++;
            if (rev[ix][o] == 0 ? have_r[o] && !(fabs(got_r[o]) < 1e-6)
                                : !have_r[o] ||
                                      !rel_close(got_r[o], rev[ix][o], 1e-9))
                check_bad(k_rev, "%s revenue_%d %.17g, recount %.17g",
                          keys[i], o, have_r[o] ? got_r[o] : NAN,
                          rev[ix][o]);
            k_ret->total++;
            double want_t = (double)active[ix][o] / (double)size[ix];
            if (!have_t[o] || fabs(got_t[o] - want_t) > 1e-9)
                check_bad(k_ret, "%s retention_%d %.12g, recount %.12g",
                          keys[i], o, have_t[o] ? got_t[o] : NAN, want_t);
        }
    }
    for (int ix = 0; ix < MAXM; ix++)
        if (size[ix] > 0 && !in_redis[ix]) {
            k_sz->total++;
            check_bad(k_sz, "cohort month %d missing (recount size %lld)",
                      GEN_MONTH0 + ix, size[ix]);
        }

    /* the rolling windows of every cohort */
    static const char *const wname[2] = {"w7d", "w30d"};
    static unsigned char seen_c[GEN_CUSTOMERS + 1];
    for (int ix = 0; ix < MAXM; ix++) {
        if (!in_redis[ix])
            continue;
        char m[16], key[64];
        month_str(GEN_MONTH0 + ix, m, sizeof(m));
        for (int w = 0; w < 2; w++) {
            double st, en, fv[6];
            static const char *const names[6] = {"n", "sum", "mean", "std",
                                                 "p_spend_gt", "active"};
            snprintf(key, sizeof(key), "ps:cohort:%s:%s", m, wname[w]);
            redisReply *r = hgetall(f->c, key);
            bool ok = hfield(r, "start_ms", &st) && hfield(r, "end_ms", &en);
            for (int q = 0; q < 6; q++)
                ok = ok && hfield(r, names[q], &fv[q]);
            freeReplyObject(r);
            k_win->total++;
            if (!ok) {
                check_bad(k_win, "%s missing or incomplete", key);
                continue;
            }
            double n = 0, sum = 0, ss = 0, act = 0;
            memset(seen_c, 0, sizeof(seen_c));
            for (size_t j = 0; j < gen_events_n; j++) {
                const gev *e = &gen_events[j];
                if (coh[e->cust] != ix || e->ts < (int64_t)st ||
                    e->ts >= (int64_t)en)
                    continue;
                if (!seen_c[e->cust]++)
                    act++;
                if (e->spend) {
                    n++;
                    sum += e->amount;
                }
            }
            double mean = n > 0 ? sum / n : 0;
            for (size_t j = 0; j < gen_events_n; j++) {
                const gev *e = &gen_events[j];
                if (coh[e->cust] == ix && e->ts >= (int64_t)st &&
                    e->ts < (int64_t)en && e->spend)
                    ss += (e->amount - mean) * (e->amount - mean);
            }
            double sd = n >= 2 ? sqrt(ss / (n - 1)) : 0;
            double p = n > 0 ? tail_ge(mean, sd, 70000) : 0;
            /* mean, std and p_spend_gt come from Redis
             * (ps_window_hash_lua): 10 digits, the variance from sums of
             * squares, the tail from Abramowitz & Stegun 26.2.17
             * (|error| < 7.5e-8) */
            if (fv[0] != n || fv[5] != act || !rel_close(fv[1], sum, 1e-9) ||
                !rel_close(fv[2], mean, 1e-9) ||
                !rel_close(fv[3], sd, 1e-7) || fabs(fv[4] - p) > 1e-6)
                check_bad(k_win, "%s [%.0f, %.0f): n %g sum %.6f mean %.6f "
                                 "std %.6f p %.6g active %g; recount n %g "
                                 "sum %.6f mean %.6f std %.6f p %.6g "
                                 "active %g", key, st, en, fv[0], fv[1],
                          fv[2], fv[3], fv[4], fv[5], n, sum, mean, sd, p,
                          act);
            /* the cohort x segment hashes of the same window */
            for (int s = 0; s < 3; s++) {
                double sst, sen, sn, ssum, sact;
                snprintf(key, sizeof(key), "ps:cohort:%s:seg:%d:%s", m, s,
                         wname[w]);
                r = hgetall(f->c, key);
                if (r->elements == 0) {
                    freeReplyObject(r);
                    continue;
                }
                ok = hfield(r, "start_ms", &sst) && hfield(r, "end_ms", &sen) &&
                     hfield(r, "n", &sn) && hfield(r, "sum", &ssum) &&
                     hfield(r, "active", &sact);
                freeReplyObject(r);
                k_seg->total++;
                if (!ok || sst != st || sen != en || sn > fv[0] ||
                    ssum > fv[1] * (1 + 1e-12) + 1e-6 || sact > fv[5])
                    check_bad(k_seg, "%s [%.0f, %.0f) n %g sum %.2f active "
                                     "%g; cohort [%.0f, %.0f) n %g sum %.2f "
                                     "active %g", key, sst, sen, sn, ssum,
                              sact, st, en, fv[0], fv[1], fv[5]);
            }
        }
    }
    free_keys(keys);
    return moved;
}

static void test_gen_segments(void **state)
{
    fx *f = *state;
    char truth[128], n_s[16];
    snprintf(truth, sizeof(truth), "%s/truth.jsonl", f->dir);
    snprintf(n_s, sizeof(n_s), "%d", GEN_CUSTOMERS);

    const char *const gen[] = {PS_BIN, "gen", "-b", broker.bootstrap, "-t",
                               "gen", "-n", n_s, "--seed", GEN_SEED,
                               "--progress-s", "0", "--truth", truth, NULL};
    json_t *sum = run_json("gen", gen);
    long long records = jget_int(sum, "records", NULL);
    long long good = jget_int(sum, "good", NULL);
    json_decref(sum);
    assert_int_equal(records, good); /* no --bad */

    gcust *per = calloc(GEN_CUSTOMERS + 1, sizeof(*per));
    assert_non_null(per);
    assert_int_equal(gen_recount(truth, per), good);

    run_propstream(f, "gen", "cohorts-gen");

    check ks[] = {{"customer hashes", 0, 0},
                  {"segment iff purchase", 0, 0},
                  {"segment sizes", 0, 0},
                  {"segment names", 0, 0},
                  {"segment_name", 0, 0},
                  {"centroids in range", 0, 0},
                  {"spend_n", 0, 0},
                  {"spend_sum", 0, 0},
                  {"cohort", 0, 0},
                  {"cohort size = its customers", 0, 0},
                  {"signup_ts consistent", 0, 0},
                  {"clicks: segment sizes", 0, 0},
                  {"clicks: segment_name", 0, 0},
                  {"clicks: segment_changed", 0, 0},
                  {"recount: cohort size", 0, 0},
                  {"recount: active_m", 0, 0},
                  {"recount: revenue_m", 0, 0},
                  {"recount: retention_m", 0, 0},
                  {"recount: only 0 elsewhere", 0, 0},
                  {"recount: cohort windows", 0, 0},
                  {"cohort x segment windows", 0, 0}};
    enum { K_CUST, K_HASSEG, K_SIZES, K_NAMES, K_SEGNAME, K_CENTROID,
           K_SPEND_N, K_SPEND_SUM, K_COHORT, K_COHORT_SIZE, K_SIGNUP,
           K_C_SIZES, K_C_SEGNAME, K_C_TRIGGERS, K_R_SIZE, K_R_ACTIVE,
           K_R_REV, K_R_RET, K_R_ZERO, K_R_WIN, K_R_SEG };

    /* the segments */
    size_t nseg = 0;
    char **segkeys = scan_keys(f->c, "ps:segment:*", &nseg);
    qsort(segkeys, nseg, sizeof(*segkeys), cmp_str);
    ks[K_NAMES].total++;
    if (nseg != 3 || strcmp(segkeys[0], "ps:segment:0") != 0 ||
        strcmp(segkeys[1], "ps:segment:1") != 0 ||
        strcmp(segkeys[2], "ps:segment:2") != 0)
        check_bad(&ks[K_NAMES], "segment keys: %zu, not exactly "
                                "ps:segment:0..2", nseg);
    free_keys(segkeys);
    char seg_name[3][32];
    long long seg_size[3];
    double cen_amount[3], cen_count[3];
    bool cen_ok[3];
    for (int k = 0; k < 3; k++) {
        redisReply *r = redisCommand(f->c, "HMGET ps:segment:%d name size "
                                           "centroid_mean_amount "
                                           "centroid_purchases", k);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 4);
        snprintf(seg_name[k], sizeof(seg_name[k]), "%s",
                 r->element[0]->type == REDIS_REPLY_STRING
                     ? r->element[0]->str : "(absent)");
        seg_size[k] = -1;
        if (r->element[1]->type == REDIS_REPLY_STRING &&
            !ps_test_parse_ll(r->element[1]->str, &seg_size[k]))
            seg_size[k] = -1;
        cen_ok[k] = r->element[2]->type == REDIS_REPLY_STRING &&
                    r->element[3]->type == REDIS_REPLY_STRING &&
                    ps_test_parse_dbl(r->element[2]->str, &cen_amount[k]) &&
                    ps_test_parse_dbl(r->element[3]->str, &cen_count[k]);
        freeReplyObject(r);
    }
    {
        const char *want[3] = {"premium", "regular", "vip"};
        const char *got[3] = {seg_name[0], seg_name[1], seg_name[2]};
        qsort(got, 3, sizeof(got[0]), cmp_str);
        ks[K_NAMES].total++;
        for (int i = 0; i < 3; i++)
            if (strcmp(got[i], want[i]) != 0) {
                check_bad(&ks[K_NAMES], "names {%s, %s, %s}, expected "
                                        "{vip, premium, regular}",
                          seg_name[0], seg_name[1], seg_name[2]);
                break;
            }
    }

    /* every customer hash */
    size_t nkeys = 0;
    char **keys = scan_keys(f->c, "ps:cust:*", &nkeys);
    long long hashes = 0, with_seg = 0, by_seg[3] = {0, 0, 0};
    long long truth_customers = 0, cohort_first_rule = 0;
    long long cust_in_cohort[MAXM] = {0}; /* by the ps:cust cohort field */
    static int seg1[GEN_CUSTOMERS + 1]; /* segment after phase 1, -1 none */
    for (int i = 0; i <= GEN_CUSTOMERS; i++)
        seg1[i] = -1;
    bool hash_seen[GEN_CUSTOMERS + 1] = {false};
    double amin = INFINITY, amax = -INFINITY, nmin = INFINITY,
           nmax = -INFINITY;
    double spend_total_redis = 0, spend_total_truth = 0;
    for (int i = 1; i <= GEN_CUSTOMERS; i++) {
        if (per[i].events > 0)
            truth_customers++;
        if (per[i].purchases > 0) {
            /* the features: mean PURCHASE amount, number of PURCHASEs */
            double mean = per[i].purchase_sum / (double)per[i].purchases;
            amin = fmin(amin, mean);
            amax = fmax(amax, mean);
            nmin = fmin(nmin, (double)per[i].purchases);
            nmax = fmax(nmax, (double)per[i].purchases);
        }
    }
    for (size_t i = 0; i < nkeys; i++) {
        const char *id = keys[i] + 8;
        if (strchr(id, ':') != NULL)
            continue; /* :intent, :reco */
        hashes++;
        ks[K_CUST].total++;
        int ix = id[0] == 'c' ? atoi(id + 1) : 0;
        if (ix < 1 || ix > GEN_CUSTOMERS || per[ix].events == 0) {
            check_bad(&ks[K_CUST], "%s has no event in the truth", keys[i]);
            continue;
        }
        hash_seen[ix] = true;
        const gcust *c = &per[ix];
        redisReply *r = redisCommand(f->c, "HMGET %s segment segment_name "
                                           "spend_n spend_sum cohort",
                                     keys[i]);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 5);
        redisReply **e = r->element;

        /* segment */
        long long seg = -1;
        bool has_seg = e[0]->type == REDIS_REPLY_STRING;
        ks[K_HASSEG].total++;
        if (has_seg != (c->purchases > 0))
            check_bad(&ks[K_HASSEG], "%s: %d purchases with an amount, "
                                     "segment field %s", keys[i],
                      (int)c->purchases, has_seg ? e[0]->str : "absent");
        if (has_seg) {
            with_seg++;
            ks[K_SEGNAME].total++;
            if (!ps_test_parse_ll(e[0]->str, &seg) || seg < 0 || seg > 2) {
                check_bad(&ks[K_SEGNAME], "%s segment \"%s\"", keys[i],
                          e[0]->str);
            } else {
                by_seg[seg]++;
                seg1[ix] = (int)seg;
                const char *nm = e[1]->type == REDIS_REPLY_STRING
                                     ? e[1]->str : "(absent)";
                if (strcmp(nm, seg_name[seg]) != 0)
                    check_bad(&ks[K_SEGNAME], "%s segment %lld "
                                              "segment_name %s, but "
                                              "ps:segment:%lld name is %s",
                              keys[i], seg, nm, seg, seg_name[seg]);
            }
        }

        /* spend */
        long long sn = -1;
        double ss = NAN;
        ks[K_SPEND_N].total++;
        if (e[2]->type != REDIS_REPLY_STRING ||
            !ps_test_parse_ll(e[2]->str, &sn) || sn != c->spend_n)
            check_bad(&ks[K_SPEND_N], "%s spend_n %s, truth %lld", keys[i],
                      e[2]->type == REDIS_REPLY_STRING ? e[2]->str
                                                       : "(absent)",
                      c->spend_n);
        ks[K_SPEND_SUM].total++;
        if (e[3]->type != REDIS_REPLY_STRING ||
            !ps_test_parse_dbl(e[3]->str, &ss) ||
            !rel_close(ss, c->spend_sum, 1e-9))
            check_bad(&ks[K_SPEND_SUM], "%s spend_sum %s, truth %.17g",
                      keys[i],
                      e[3]->type == REDIS_REPLY_STRING ? e[3]->str
                                                       : "(absent)",
                      c->spend_sum);
        if (!isnan(ss))
            spend_total_redis += ss;

        /* cohort: month of signup_ts, else of the first event */
        char want[16], alt[16];
        month_str(month_of_ms(c->signup ? c->signup : c->first_ts), want,
                  sizeof(want));
        month_str(month_of_ms(c->first_signup ? c->first_signup
                                              : c->first_ts),
                  alt, sizeof(alt));
        if (!COHORT_SIGNUP_FROM_ANY_EVENT)
            memcpy(want, alt, sizeof(want));
        if (e[4]->type == REDIS_REPLY_STRING) {
            int m;
            char ck[32];
            snprintf(ck, sizeof(ck), "ps:cohort:%.20s", e[4]->str);
            if (cohort_key(ck, &m) && m - GEN_MONTH0 >= 0 &&
                m - GEN_MONTH0 < MAXM)
                cust_in_cohort[m - GEN_MONTH0]++;
        }
        const char *got = e[4]->type == REDIS_REPLY_STRING ? e[4]->str
                                                           : "(absent)";
        if (strcmp(got, alt) == 0)
            cohort_first_rule++;
        ks[K_COHORT].total++;
        if (strcmp(got, want) != 0)
            check_bad(&ks[K_COHORT],
                      "%s cohort %s, expected %s (signup_ts %" PRId64
                      " %s on its first event; first event ts %" PRId64
                      "; month of the first event's signup_ts, else of the "
                      "first event: %s)",
                      keys[i], got, want, c->signup,
                      c->first_signup ? "present" : "absent", c->first_ts,
                      alt);
        ks[K_SIGNUP].total++;
        if (c->signup_conflict)
            check_bad(&ks[K_SIGNUP], "%s: two different signup_ts in the "
                                     "truth", keys[i]);
        freeReplyObject(r);
    }
    free_keys(keys);
    for (int i = 1; i <= GEN_CUSTOMERS; i++) {
        spend_total_truth += per[i].spend_sum;
        if (per[i].events > 0 && !hash_seen[i]) {
            ks[K_CUST].total++;
            check_bad(&ks[K_CUST], "ps:cust:c%06d missing (%lld events in "
                                   "the truth)", i, per[i].events);
        }
    }

    /* sizes */
    ks[K_SIZES].total++;
    if (seg_size[0] + seg_size[1] + seg_size[2] != with_seg)
        check_bad(&ks[K_SIZES], "sizes %lld + %lld + %lld = %lld, but %lld "
                                "customers have a segment", seg_size[0],
                  seg_size[1], seg_size[2],
                  seg_size[0] + seg_size[1] + seg_size[2], with_seg);
    for (int k = 0; k < 3; k++) {
        ks[K_SIZES].total++;
        if (seg_size[k] != by_seg[k])
            check_bad(&ks[K_SIZES], "ps:segment:%d (%s) size %lld, %lld "
                                    "customers with segment %d", k,
                      seg_name[k], seg_size[k], by_seg[k], k);
    }
    /* cohort sizes agree with the customers' cohort fields */
    {
        size_t nc = 0;
        char **ck = scan_keys(f->c, "ps:cohort:*", &nc);
        bool seen[MAXM] = {false};
        for (size_t i = 0; i < nc; i++) {
            int m;
            long long size = -1;
            if (!cohort_key(ck[i], &m))
                continue;
            ks[K_COHORT_SIZE].total++;
            redisReply *r = redisCommand(f->c, "HGET %s size", ck[i]);
            assert_non_null(r);
            if (r->type != REDIS_REPLY_STRING ||
                !ps_test_parse_ll(r->str, &size))
                size = -1;
            freeReplyObject(r);
            int ix = m - GEN_MONTH0;
            long long want = ix >= 0 && ix < MAXM ? cust_in_cohort[ix] : 0;
            if (ix >= 0 && ix < MAXM)
                seen[ix] = true;
            if (size != want)
                check_bad(&ks[K_COHORT_SIZE], "%s size %lld, %lld customers "
                                              "have that cohort", ck[i],
                          size, want);
        }
        for (int ix = 0; ix < MAXM; ix++)
            if (cust_in_cohort[ix] > 0 && !seen[ix]) {
                char m[16];
                month_str(GEN_MONTH0 + ix, m, sizeof(m));
                ks[K_COHORT_SIZE].total++;
                check_bad(&ks[K_COHORT_SIZE], "ps:cohort:%s missing, %lld "
                                              "customers have that cohort",
                          m, cust_in_cohort[ix]);
            }
        free_keys(ck);
    }
    /* every cohort recounted, windows included (before the clicks) */
    long long moved = check_gen_cohorts(f, per, &ks[K_R_SIZE],
                                        &ks[K_R_ACTIVE], &ks[K_R_REV],
                                        &ks[K_R_RET], &ks[K_R_ZERO],
                                        &ks[K_R_WIN], &ks[K_R_SEG]);
    print_message("    cohorts: %lld customers whose signup_ts came after "
                  "their first event in another month (moved)\n", moved);
    /* centroids inside the range of the features */
    for (int k = 0; k < 3; k++) {
        ks[K_CENTROID].total++;
        if (!cen_ok[k])
            check_bad(&ks[K_CENTROID], "ps:segment:%d: centroid fields "
                                       "missing", k);
        else if (!(cen_amount[k] >= amin && cen_amount[k] <= amax &&
                   cen_count[k] >= nmin && cen_count[k] <= nmax))
            check_bad(&ks[K_CENTROID], "ps:segment:%d (%s) centroid "
                                       "(%.6g, %.6g) outside [%.6g, %.6g] x "
                                       "[%g, %g]", k, seg_name[k],
                      cen_amount[k], cen_count[k], amin, amax, nmin, nmax);
    }

    print_message("    gen: %lld events of %lld customers; %lld ps:cust "
                  "hashes, %lld with a segment: %s %lld, %s %lld, %s %lld "
                  "(sizes %lld/%lld/%lld)\n", good, truth_customers, hashes,
                  with_seg, seg_name[0], by_seg[0], seg_name[1], by_seg[1],
                  seg_name[2], by_seg[2], seg_size[0], seg_size[1],
                  seg_size[2]);
    for (int k = 0; k < 3; k++)
        if (cen_ok[k])
            print_message("    ps:segment:%d %s: centroid mean_amount %.2f, "
                          "purchases %.3f\n", k, seg_name[k], cen_amount[k],
                          cen_count[k]);
    print_message("    features: mean amount [%.2f, %.2f], purchases "
                  "[%g, %g]; spend total %.2f (Redis %.2f); cohorts equal "
                  "to the first event's rule: %lld of %lld\n", amin, amax,
                  nmin, nmax, spend_total_truth, spend_total_redis,
                  cohort_first_rule, hashes);
    assert_true(truth_customers > GEN_CUSTOMERS / 2);
    assert_true(with_seg > 0);

    /* Phase 2: one CLICK (no purchase) for every customer with a segment,
     * after everything else.  Every event of such a customer re-checks its
     * nearest centre, and the centres have moved since many customers'
     * last purchase, so some move: the sizes must follow, each move must
     * emit one segment_changed, and names must still agree. */
    {
        char csv[128];
        int64_t max_ts = 0;
        long long nclicks = 0;
        for (int i = 1; i <= GEN_CUSTOMERS; i++)
            if (per[i].events > 0 && per[i].last_ts > max_ts)
                max_ts = per[i].last_ts;
        snprintf(csv, sizeof(csv), "%s/clicks.csv", f->dir);
        FILE *fp = fopen(csv, "w");
        assert_non_null(fp);
        fprintf(fp, "event_id,customer_id,type,product_id,ts\n");
        for (int i = 1; i <= GEN_CUSTOMERS; i++)
            if (seg1[i] >= 0) {
                nclicks++;
                fprintf(fp, "click2-%d,c%06d,CLICK,p9999,%" PRId64 "\n", i,
                        i, max_ts + 1000 + (int64_t)nclicks);
            }
        assert_int_equal(fclose(fp), 0);
        const char *const imp[] = {
            PS_BIN, "import", "-b", broker.bootstrap, "-t", "gen",
            "--format", "json", "--format-in", "generic", "--map",
            "event_id=event_id,customer_id=customer_id,type=type,"
            "product_id=product_id,ts=ts",
            csv, NULL};
        json_t *isum = run_json("import (clicks)", imp);
        assert_int_equal(jget_int(isum, "events", NULL), nclicks);
        json_decref(isum);
        run_propstream(f, "gen", "cohorts-gen"); /* resumes at its offsets */

        long long size2[3] = {-1, -1, -1}, by2[3] = {0, 0, 0}, moves = 0;
        char name2[3][32];
        for (int k = 0; k < 3; k++) {
            redisReply *r = redisCommand(f->c, "HMGET ps:segment:%d name "
                                               "size", k);
            assert_non_null(r);
            assert_int_equal(r->type, REDIS_REPLY_ARRAY);
            snprintf(name2[k], sizeof(name2[k]), "%s",
                     r->element[0]->type == REDIS_REPLY_STRING
                         ? r->element[0]->str : "(absent)");
            if (r->element[1]->type != REDIS_REPLY_STRING ||
                !ps_test_parse_ll(r->element[1]->str, &size2[k]))
                size2[k] = -1;
            freeReplyObject(r);
        }
        for (int i = 1; i <= GEN_CUSTOMERS; i++) {
            if (per[i].events == 0)
                continue;
            redisReply *r = redisCommand(f->c, "HMGET ps:cust:c%06d segment "
                                               "segment_name", i);
            assert_non_null(r);
            assert_int_equal(r->type, REDIS_REPLY_ARRAY);
            long long sg = -1;
            if (r->element[0]->type == REDIS_REPLY_STRING &&
                ps_test_parse_ll(r->element[0]->str, &sg) && sg >= 0 &&
                sg <= 2) {
                by2[sg]++;
                if (sg != seg1[i])
                    moves++;
                ks[K_C_SEGNAME].total++;
                const char *nm = r->element[1]->type == REDIS_REPLY_STRING
                                     ? r->element[1]->str : "(absent)";
                if (strcmp(nm, name2[sg]) != 0)
                    check_bad(&ks[K_C_SEGNAME], "ps:cust:c%06d segment %lld "
                                                "segment_name %s, but "
                                                "ps:segment:%lld name is %s",
                              i, sg, nm, sg, name2[sg]);
            }
            freeReplyObject(r);
        }
        for (int k = 0; k < 3; k++) {
            ks[K_C_SIZES].total++;
            if (size2[k] != by2[k])
                check_bad(&ks[K_C_SIZES], "after %lld CLICKs (%lld customers "
                                          "moved): ps:segment:%d (%s) size "
                                          "%lld (before: %lld), %lld "
                                          "customers with segment %d", nclicks,
                          moves, k, name2[k], size2[k], seg_size[k], by2[k],
                          k);
        }
        /* segment_changed triggers caused by the clicks */
        long long trig = 0;
        redisReply *r = redisCommand(f->c, "XRANGE ps:triggers - +");
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *fl = r->element[i]->element[1];
            bool changed = false, ours = false;
            for (size_t j = 0; j + 1 < fl->elements; j += 2) {
                if (strcmp(fl->element[j]->str, "type") == 0)
                    changed = strcmp(fl->element[j + 1]->str,
                                     "segment_changed") == 0;
                else if (strcmp(fl->element[j]->str, "cause") == 0)
                    ours = strncmp(fl->element[j + 1]->str, "click2-", 7) == 0;
            }
            trig += changed && ours;
        }
        freeReplyObject(r);
        ks[K_C_TRIGGERS].total++;
        if (trig != moves)
            check_bad(&ks[K_C_TRIGGERS], "%lld segment_changed triggers "
                                         "caused by the CLICKs, %lld "
                                         "customers moved", trig, moves);
        print_message("    clicks: %lld CLICKs, %lld customers moved, %lld "
                      "segment_changed; customers per segment %lld/%lld/%lld, "
                      "sizes %lld/%lld/%lld\n", nclicks, moves, trig, by2[0],
                      by2[1], by2[2], size2[0], size2[1], size2[2]);
    }
    free(per);
    free(gen_events);
    gen_events = NULL;
    gen_events_n = gen_events_cap = 0;
    checks_done(ks, sizeof(ks) / sizeof(ks[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retail_cohorts, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_gen_segments, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
