/*
 * core_pipeline.c -- the core of propstream alone: decode + every
 * aggregate + the flush serialisation, from memory, on one core.  No
 * Kafka, no Redis.  Measurement (3) of bench/run_all.sh.
 *
 *   core_pipeline -i FILE [-n MAX] [--flush-every N] [--batch N]
 *                 [--partitions P] [--graph-max-edges N] [--resp]
 *                 [--check-writes] [--mem] [--repeat R]
 *
 * FILE is what `propstream gen -o FILE --format confluent|avro` writes:
 * records framed as a 4-byte big-endian length + the record bytes.  The
 * whole file is read into memory first; only the processing loop is
 * timed.  The loop does what consumer/run.c does between poll and Redis:
 *
 *   round (--batch events, 5000 = run's --batch-max):
 *     decode   ps_decoder_decode of every payload (Confluent Avro ->
 *              validated ps_event), strings copied into a per-round arena
 *              as run.c's copy_str does;
 *     apply    ps_pipeline_find each event's customer (ps_pipeline_add
 *              when new: what run.c does after its GET of
 *              ps:state:cust:{id} answered nil), ps_pipeline_entity for
 *              product and campaign, the unloaded shared entities marked
 *              loaded (an empty Redis), ps_pipeline_apply_to of every
 *              event, then ps_pipeline_advance (watermarks, expiries);
 *   flush    (every --flush-every events, at a round boundary; pass the
 *              events per flush the real run did -- events_in / flushes of
 *              ps:metrics -- to reproduce its write coalescing)
 *              ps_pipeline_write into a ps_batch -- every dirty customer's
 *              HSET fields, its saved state blob (ps:state:cust), shared
 *              HINCRBY deltas, streams, k-means model -- and
 *              ps_pipeline_flushed, as after a successful EXEC.
 *   With --resp, every command of each flush batch is also encoded as RESP
 *   (hiredis redisFormatCommandArgv, what the sink's redisAppendCommandArgv
 *   does); timed separately and NOT part of the core rate.
 *
 * Partition slots: an event's slot is FNV-1a(customer_id) mod --partitions
 * (64), so per-partition watermarks behave as with a keyed topic.
 *
 * Timing: CLOCK_THREAD_CPUTIME_ID (CPU time of this thread: the
 * single-core figure, robust to other processes on the machine) and wall
 * time, per phase.  The rate printed is events / CPU seconds of decode +
 * apply + flush.
 *
 * --check-writes scans every flush batch (untimed) and counts, per
 * customer, the commands on its output hash ps:cust:{id} and on its saved
 * state ps:state:cust:{id}: the largest count in any one flush must be 1
 * ("each customer written at most once per flush"); it also prints the
 * argument bytes and commands per event by command and key class (ids
 * replaced by '*'), the largest first.
 *
 * --mem reports heap in use (glibc mallinfo2: uordblks + hblkhd) and RSS
 * before the loop (after reading the file) and after it, the customers
 * and graph edges in memory (ps_pipeline_customer_count,
 * ps_graph_edge_count) and the graph's own bytes-per-edge estimate.  The
 * flush batch keeps the capacity of the largest flush (ps_batch_clear
 * does not free): it is destroyed before the second heap reading and its
 * size reported apart (batch_heap).
 *
 * Output: human-readable lines on stderr; one machine-readable line on
 * stdout:  core_pipeline: key=value key=value ...
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "../aggregates/graph.h"
#include "../aggregates/pipeline.h"
#include "../common/batch.h"
#include "../common/event.h"
#include "../consumer/decode.h"

typedef struct opts {
    const char *input;
    size_t max_events;   /* 0 = all */
    size_t flush_every;  /* events between flushes */
    size_t batch;        /* events per round */
    uint32_t partitions;
    int64_t graph_max_edges; /* 0 = the default */
    bool resp, check_writes, mem;
    int repeat;
} opts;

typedef struct phase {
    double cpu, wall;
} phase;

typedef struct clocks {
    double cpu, wall;
} clocks;

static clocks now(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (clocks){(double)a.tv_sec + (double)a.tv_nsec / 1e9,
                    (double)b.tv_sec + (double)b.tv_nsec / 1e9};
}

static void add_since(phase *ph, clocks t0)
{
    clocks t1 = now();
    ph->cpu += t1.cpu - t0.cpu;
    ph->wall += t1.wall - t0.wall;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "core_pipeline: %s\n", what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die("out of memory");
    return p;
}

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* ------------------------------------------------------------ input */

typedef struct input {
    unsigned char *data;
    size_t size;
    size_t *off; /* record i at data + off[i], len[i] bytes */
    uint32_t *len;
    size_t n;
} input;

static void read_input(const char *path, size_t max, input *in)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "core_pipeline: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    if (fseek(fp, 0, SEEK_END) != 0)
        die("cannot seek the input");
    long sz = ftell(fp);
    if (sz < 0)
        die("cannot size the input");
    rewind(fp);
    in->size = (size_t)sz;
    in->data = xmalloc(in->size);
    if (fread(in->data, 1, in->size, fp) != in->size)
        die("short read of the input");
    fclose(fp);
    if (in->size > 0 && in->data[0] == '{')
        die("JSON input: write the file with --format confluent or avro");
    size_t cap = 1024;
    in->off = xmalloc(cap * sizeof(*in->off));
    in->len = xmalloc(cap * sizeof(*in->len));
    size_t pos = 0;
    while (pos + 4 <= in->size && (max == 0 || in->n < max)) {
        const unsigned char *p = in->data + pos;
        uint32_t l = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                     (uint32_t)p[2] << 8 | p[3];
        if (pos + 4 + l > in->size)
            die("truncated record in the input");
        if (in->n == cap) {
            cap *= 2;
            in->off = realloc(in->off, cap * sizeof(*in->off));
            in->len = realloc(in->len, cap * sizeof(*in->len));
            if (in->off == NULL || in->len == NULL)
                die("out of memory");
        }
        in->off[in->n] = pos + 4;
        in->len[in->n] = l;
        in->n++;
        pos += 4 + (size_t)l;
    }
}

/* ----------------------------------------------------- memory probes */

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static size_t rss_bytes(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (fp == NULL)
        return 0;
    if (fscanf(fp, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(fp);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* -------------------------------------------- per-flush write check */

/* Open-addressing count of keys within one flush. */
typedef struct keycount {
    uint64_t *hash; /* 0 = empty */
    uint32_t *count;
    size_t cap, n;
} keycount;

static void kc_reset(keycount *k)
{
    if (k->cap == 0) {
        k->cap = 1 << 16;
        k->hash = calloc(k->cap, sizeof(*k->hash));
        k->count = calloc(k->cap, sizeof(*k->count));
        if (k->hash == NULL || k->count == NULL)
            die("out of memory");
    } else {
        memset(k->hash, 0, k->cap * sizeof(*k->hash));
    }
    k->n = 0;
}

static uint32_t kc_add(keycount *k, uint64_t h)
{
    if (h == 0)
        h = 1;
    if ((k->n + 1) * 2 > k->cap) { /* grow and rehash */
        keycount big = {0};
        big.cap = k->cap * 2;
        big.hash = calloc(big.cap, sizeof(*big.hash));
        big.count = calloc(big.cap, sizeof(*big.count));
        if (big.hash == NULL || big.count == NULL)
            die("out of memory");
        for (size_t i = 0; i < k->cap; i++) {
            if (k->hash[i] == 0)
                continue;
            size_t j = k->hash[i] & (big.cap - 1);
            while (big.hash[j] != 0)
                j = (j + 1) & (big.cap - 1);
            big.hash[j] = k->hash[i];
            big.count[j] = k->count[i];
        }
        big.n = k->n;
        free(k->hash);
        free(k->count);
        *k = big;
    }
    size_t j = h & (k->cap - 1);
    while (k->hash[j] != 0 && k->hash[j] != h)
        j = (j + 1) & (k->cap - 1);
    if (k->hash[j] == 0) {
        k->hash[j] = h;
        k->count[j] = 0;
        k->n++;
    }
    return ++k->count[j];
}

/* Bytes and commands per "command + key class", the key with its id
 * parts replaced by '*' (ps:cust:*:reco, ps:state:agg:segments, ...). */
#define MAX_CLASSES 64
typedef struct key_class {
    char name[96];
    uint64_t commands, bytes;
} key_class;

typedef struct write_stats {
    uint64_t cust_cmds, state_cmds;   /* commands on ps:cust:{id} / state */
    uint32_t cust_max, state_max;     /* largest per customer per flush */
    uint64_t cust_writes;             /* distinct customers written, summed
                                         over flushes */
    uint64_t commands, bytes;         /* every command of every flush */
    key_class cls[MAX_CLASSES];
    size_t n_cls;
} write_stats;

/* "HSET ps:cust:*" for argv[0], key (prefix pl bytes). */
static void class_name(const char *cmd, const char *key, size_t kl, size_t pl,
                       char *out, size_t cap)
{
    static const char *const with_id[] = {"cust:",   "prod:",    "campaign:",
                                          "cohort:", "segment:", "offsets:",
                                          "expiry:", "clock:",   "flush:",
                                          "seg:",    "also:"};
    size_t o = (size_t)snprintf(out, cap, "%s ", cmd);
    size_t i = 0;
    if (kl < pl) {
        snprintf(out + o, cap - o, "(other)");
        return;
    }
    for (; i < pl && o + 1 < cap; i++)
        out[o++] = key[i];
    while (i < kl && o + 1 < cap) {
        bool starred = false;
        for (size_t w = 0; w < sizeof(with_id) / sizeof(*with_id); w++) {
            size_t n = strlen(with_id[w]);
            if (kl - i >= n && memcmp(key + i, with_id[w], n) == 0) {
                for (size_t j = 0; j < n && o + 1 < cap; j++)
                    out[o++] = with_id[w][j];
                i += n;
                if (o + 1 < cap)
                    out[o++] = '*';
                while (i < kl && key[i] != ':') /* the id */
                    i++;
                starred = true;
                break;
            }
        }
        if (!starred)
            out[o++] = key[i++];
    }
    out[o] = '\0';
}

static void class_add(write_stats *ws, const char *name, uint64_t bytes)
{
    size_t i = 0;
    while (i < ws->n_cls && strcmp(ws->cls[i].name, name) != 0)
        i++;
    if (i == ws->n_cls) {
        if (ws->n_cls == MAX_CLASSES)
            i = MAX_CLASSES - 1; /* lump the rest into the last */
        else
            snprintf(ws->cls[ws->n_cls++].name, sizeof(ws->cls[0].name),
                     "%s", name);
    }
    ws->cls[i].commands++;
    ws->cls[i].bytes += bytes;
}

static int cmp_class(const void *a, const void *b)
{
    const key_class *x = a, *y = b;
    return (x->bytes < y->bytes) - (x->bytes > y->bytes);
}

/* Count commands on "<prefix>cust:<id>" (no further ':') and on
 * "<prefix>state:cust:<id>" in one flush batch. */
static void check_batch(const ps_batch *b, keycount *kc_cust,
                        keycount *kc_state, write_stats *ws)
{
    const char *pre = ps_batch_prefix(b);
    size_t pl = strlen(pre);
    const char **argv = NULL;
    size_t *lens = NULL, argv_cap = 0;

    kc_reset(kc_cust);
    kc_reset(kc_state);
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > argv_cap) {
            argv_cap = argc * 2;
            argv = realloc(argv, argv_cap * sizeof(*argv));
            lens = realloc(lens, argv_cap * sizeof(*lens));
            if (argv == NULL || lens == NULL)
                die("out of memory");
        }
        ps_batch_argv(b, i, argv, lens);
        uint64_t cmd_bytes = 0;
        for (size_t a = 0; a < argc; a++)
            cmd_bytes += lens[a];
        char cname[96];
        size_t ka = strncmp(argv[0], "EVAL", 4) == 0 ? 3 : 1; /* its key */
        class_name(argc > ka && ka == 3 ? "EVAL" : argv[0],
                   argc > ka ? argv[ka] : "", argc > ka ? lens[ka] : 0, pl,
                   cname, sizeof(cname));
        class_add(ws, cname, cmd_bytes);
        if (argc < 2 || lens[1] < pl || memcmp(argv[1], pre, pl) != 0)
            continue;
        const char *k = argv[1] + pl;
        size_t kl = lens[1] - pl;
        if (kl > 5 && memcmp(k, "cust:", 5) == 0 &&
            memchr(k + 5, ':', kl - 5) == NULL) {
            uint32_t c = kc_add(kc_cust, fnv(k, kl));
            ws->cust_cmds++;
            if (c == 1)
                ws->cust_writes++;
            if (c > ws->cust_max)
                ws->cust_max = c;
        } else if (kl > 11 && memcmp(k, "state:cust:", 11) == 0) {
            uint32_t c = kc_add(kc_state, fnv(k, kl));
            ws->state_cmds++;
            if (c > ws->state_max)
                ws->state_max = c;
        }
    }
    free(argv);
    free(lens);
}

/* RESP-encode every command of b, as the sink's redisAppendCommandArgv
 * does; returns the bytes produced. */
static size_t resp_encode(const ps_batch *b)
{
    const char **argv = NULL;
    size_t *lens = NULL, argv_cap = 0, total = 0;
    for (size_t i = 0; i < ps_batch_count(b); i++) {
        size_t argc = ps_batch_argc(b, i);
        if (argc > argv_cap) {
            argv_cap = argc * 2;
            argv = realloc(argv, argv_cap * sizeof(*argv));
            lens = realloc(lens, argv_cap * sizeof(*lens));
            if (argv == NULL || lens == NULL)
                die("out of memory");
        }
        ps_batch_argv(b, i, argv, lens);
        char *cmd = NULL;
        int n = redisFormatCommandArgv(&cmd, (int)argc, argv, lens);
        if (n > 0)
            total += (size_t)n;
        free(cmd);
    }
    free(argv);
    free(lens);
    return total;
}

/* ------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: core_pipeline -i FILE [-n MAX] [--flush-every N] "
            "[--batch N]\n"
            "                     [--partitions P] [--graph-max-edges N] "
            "[--resp]\n"
            "                     [--check-writes] [--mem] [--repeat R]\n");
}

static void parse(int argc, char **argv, opts *o)
{
    o->flush_every = 5000;
    o->batch = 5000;
    o->partitions = 64;
    o->repeat = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--resp") == 0) {
            o->resp = true;
            continue;
        }
        if (strcmp(a, "--check-writes") == 0) {
            o->check_writes = true;
            continue;
        }
        if (strcmp(a, "--mem") == 0) {
            o->mem = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        }
        if (v == NULL) {
            usage();
            exit(2);
        }
        i++;
        if (strcmp(a, "-i") == 0)
            o->input = v;
        else if (strcmp(a, "-n") == 0)
            o->max_events = strtoull(v, NULL, 10);
        else if (strcmp(a, "--flush-every") == 0)
            o->flush_every = strtoull(v, NULL, 10);
        else if (strcmp(a, "--batch") == 0)
            o->batch = strtoull(v, NULL, 10);
        else if (strcmp(a, "--partitions") == 0)
            o->partitions = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--graph-max-edges") == 0)
            o->graph_max_edges = strtoll(v, NULL, 10);
        else if (strcmp(a, "--repeat") == 0)
            o->repeat = atoi(v);
        else {
            usage();
            exit(2);
        }
    }
    if (o->input == NULL || o->batch == 0 || o->partitions == 0 ||
        o->repeat < 1) {
        usage();
        exit(2);
    }
    if (o->flush_every == 0)
        o->flush_every = o->batch;
}

static void mark_loaded(ps_pipeline *p)
{
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(p, &list);
    for (size_t i = 0; i < n; i++)
        ps_pipeline_loaded(p, list[i]);
}

static void copy_str(char *arena, size_t *used, ps_str *s)
{
    if (s->ptr == NULL)
        return;
    memcpy(arena + *used, s->ptr, s->len);
    s->ptr = arena + *used;
    *used += s->len;
}

int main(int argc, char **argv)
{
    opts o = {0};
    parse(argc, argv, &o);

    input in = {0};
    read_input(o.input, o.max_events, &in);
    if (in.n == 0)
        die("no records in the input");

    char err[256];
    ps_decoder *dec = ps_decoder_new(NULL, err, sizeof(err));
    if (dec == NULL)
        die(err);
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    if (o.graph_max_edges > 0)
        conf.graph_max_edges = o.graph_max_edges;
    ps_batch *b = ps_batch_new(conf.prefix);
    ps_event *evs = xmalloc(o.batch * sizeof(*evs));
    ps_customer **ev_cust = xmalloc(o.batch * sizeof(*ev_cust));
    ps_entity **ev_prod = xmalloc(o.batch * sizeof(*ev_prod));
    ps_entity **ev_camp = xmalloc(o.batch * sizeof(*ev_camp));
    char *arena = xmalloc(o.batch * 4 * PS_ID_MAX);
    keycount kc_cust = {0}, kc_state = {0};
    if (b == NULL)
        die("out of memory");

    phase t_decode = {0}, t_apply = {0}, t_flush = {0}, t_resp = {0};
    write_stats ws = {0};
    uint64_t events = 0, bad = 0, dropped = 0, late_n = 0, flushes = 0;
    uint64_t resp_bytes = 0;
    size_t heap0 = 0, rss0 = 0, heap1 = 0, rss1 = 0, customers = 0,
           edges = 0, batch_heap = 0;
    double graph_bpe = 0;

    for (int rep = 0; rep < o.repeat; rep++) {
        ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
        if (p == NULL)
            die(err);
        mark_loaded(p);
        if (rep == o.repeat - 1 && o.mem) {
            malloc_trim(0);
            heap0 = heap_in_use();
            rss0 = rss_bytes();
        }
        size_t since_flush = 0;
        for (size_t next = 0; next < in.n;) {
            /* decode one round */
            clocks t0 = now();
            size_t n = 0, used = 0;
            while (n < o.batch && next < in.n) {
                char detail[256];
                ps_event ev;
                size_t i = next++;
                ps_bad_reason r =
                    ps_decoder_decode(dec, in.data + in.off[i], in.len[i],
                                      &ev, detail, sizeof(detail));
                if (r != PS_BAD_NONE) {
                    bad++;
                    continue;
                }
                ev.part = (uint32_t)(fnv(ev.customer_id.ptr,
                                         ev.customer_id.len) %
                                     o.partitions);
                copy_str(arena, &used, &ev.event_id);
                copy_str(arena, &used, &ev.customer_id);
                copy_str(arena, &used, &ev.product_id);
                copy_str(arena, &used, &ev.campaign);
                evs[n++] = ev;
            }
            add_since(&t_decode, t0);

            /* look up, apply, advance */
            t0 = now();
            for (size_t i = 0; i < n; i++) {
                ps_customer *c =
                    ps_pipeline_find(p, PS_KIND_CUSTOMER, evs[i].customer_id);
                int e2;
                if (c == NULL &&
                    (c = ps_pipeline_add(p, evs[i].customer_id, NULL, 0,
                                         &e2)) == NULL)
                    die("ps_pipeline_add failed");
                ev_cust[i] = c;
                ev_prod[i] = ev_camp[i] = NULL;
                if (evs[i].product_id.ptr != NULL &&
                    (ev_prod[i] = ps_pipeline_entity(
                         p, PS_KIND_PRODUCT, evs[i].product_id)) == NULL)
                    die("out of memory");
                if (evs[i].campaign.ptr != NULL &&
                    (ev_camp[i] = ps_pipeline_entity(
                         p, PS_KIND_CAMPAIGN, evs[i].campaign)) == NULL)
                    die("out of memory");
            }
            mark_loaded(p);
            for (size_t i = 0; i < n; i++) {
                bool late = false;
                int rc = ps_pipeline_apply_to(p, &evs[i], ev_cust[i],
                                              ev_prod[i], ev_camp[i], &late);
                if (rc == PS_AGG_DROP)
                    dropped++;
                else if (rc < 0)
                    die("ps_pipeline_apply_to failed");
                late_n += late;
            }
            if (ps_pipeline_advance(p, mono_ms()) < 0)
                die("ps_pipeline_advance failed");
            mark_loaded(p);
            add_since(&t_apply, t0);
            events += n;
            since_flush += n;

            /* flush */
            if (since_flush >= o.flush_every || next >= in.n) {
                t0 = now();
                ps_batch_clear(b);
                ps_pipeline_write(p, b);
                add_since(&t_flush, t0);
                if (ps_batch_error(b) < 0)
                    die("out of memory in the flush batch");
                if (o.resp) {
                    t0 = now();
                    resp_bytes += resp_encode(b);
                    add_since(&t_resp, t0);
                }
                ws.commands += ps_batch_count(b);
                ws.bytes += ps_batch_bytes(b);
                if (o.check_writes)
                    check_batch(b, &kc_cust, &kc_state, &ws);
                t0 = now();
                ps_pipeline_flushed(p);
                add_since(&t_flush, t0);
                flushes++;
                since_flush = 0;
            }
        }
        if (rep == o.repeat - 1) {
            customers = ps_pipeline_customer_count(p);
            edges = ps_graph_edge_count(p);
            graph_bpe = ps_graph_bytes_per_edge(p);
            if (o.mem) {
                /* the flush batch keeps the memory of the largest flush:
                 * counted apart from the pipeline's state */
                size_t with_batch = heap_in_use();
                rss1 = rss_bytes();
                ps_batch_destroy(b);
                b = ps_batch_new(conf.prefix);
                if (b == NULL)
                    die("out of memory");
                heap1 = heap_in_use();
                batch_heap = with_batch > heap1 ? with_batch - heap1 : 0;
            }
        }
        ps_pipeline_destroy(p);
    }

    double cpu = t_decode.cpu + t_apply.cpu + t_flush.cpu;
    double wall = t_decode.wall + t_apply.wall + t_flush.wall;
    double rate = cpu > 0 ? (double)events / cpu : 0;
    fprintf(stderr,
            "core_pipeline: %" PRIu64 " events (%zu records x %d, %" PRIu64
            " bad, %" PRIu64 " dropped as duplicates, %" PRIu64
            " late), %" PRIu64 " flushes (every %zu events)\n",
            events, in.n, o.repeat, bad, dropped, late_n, flushes,
            o.flush_every);
    fprintf(stderr,
            "  decode %.3f s cpu (%.0f ev/s), apply %.3f s (%.0f ev/s), "
            "flush write %.3f s (%.0f ev/s)\n",
            t_decode.cpu, t_decode.cpu > 0 ? events / t_decode.cpu : 0,
            t_apply.cpu, t_apply.cpu > 0 ? events / t_apply.cpu : 0,
            t_flush.cpu, t_flush.cpu > 0 ? events / t_flush.cpu : 0);
    fprintf(stderr,
            "  total %.3f s cpu, %.3f s wall: %.0f events/s per core (cpu), "
            "%.0f (wall)\n",
            cpu, wall, rate, wall > 0 ? events / wall : 0);
    if (o.resp)
        fprintf(stderr,
                "  RESP encoding (not in the rate): %.3f s cpu, %" PRIu64
                " bytes, %.1f bytes/event\n",
                t_resp.cpu, resp_bytes,
                events ? (double)resp_bytes / (double)events : 0);
    fprintf(stderr,
            "  flush batches: %" PRIu64 " commands (%.2f per event), %" PRIu64
            " argument bytes\n",
            ws.commands, events ? (double)ws.commands / (double)events : 0,
            ws.bytes);
    if (o.check_writes)
        fprintf(stderr,
                "  customer writes: %" PRIu64 " commands on ps:cust:{id}, %"
                PRIu64 " on ps:state:cust:{id}; most per customer in one "
                "flush: %u / %u\n",
                ws.cust_cmds, ws.state_cmds, ws.cust_max, ws.state_max);
    if (o.check_writes) {
        qsort(ws.cls, ws.n_cls, sizeof(*ws.cls), cmp_class);
        fprintf(stderr, "  flush bytes by command and key (argument bytes "
                        "per event, commands per event):\n");
        for (size_t i = 0; i < ws.n_cls && i < 16; i++)
            fprintf(stderr, "    %-44s %9.1f B %7.3f\n", ws.cls[i].name,
                    (double)ws.cls[i].bytes / (double)events,
                    (double)ws.cls[i].commands / (double)events);
    }
    if (o.mem)
        fprintf(stderr,
                "  memory: heap +%zu bytes (and %zu in the flush batch), rss "
                "+%zu bytes for %zu customers, %zu graph edges (graph "
                "estimate %.1f bytes/edge)\n",
                heap1 - heap0, batch_heap, rss1 - rss0, customers, edges,
                graph_bpe);

    printf("core_pipeline: events=%" PRIu64 " bad=%" PRIu64 " dup=%" PRIu64
           " flushes=%" PRIu64 " flush_every=%zu cpu_s=%.6f wall_s=%.6f "
           "rate_cpu=%.0f rate_wall=%.0f decode_cpu_s=%.6f apply_cpu_s=%.6f "
           "flush_cpu_s=%.6f resp_cpu_s=%.6f resp_bytes=%" PRIu64
           " commands=%" PRIu64 " arg_bytes=%" PRIu64,
           events, bad, dropped, flushes, o.flush_every, cpu, wall, rate,
           wall > 0 ? events / wall : 0, t_decode.cpu, t_apply.cpu,
           t_flush.cpu, t_resp.cpu, resp_bytes, ws.commands, ws.bytes);
    if (o.check_writes)
        printf(" cust_cmds=%" PRIu64 " state_cmds=%" PRIu64
               " cust_writes=%" PRIu64 " cust_max_per_flush=%u"
               " state_max_per_flush=%u",
               ws.cust_cmds, ws.state_cmds, ws.cust_writes, ws.cust_max,
               ws.state_max);
    printf(" customers=%zu edges=%zu graph_bytes_per_edge=%.1f", customers,
           edges, graph_bpe);
    if (o.mem)
        printf(" heap_delta=%zu batch_heap=%zu rss_delta=%zu", heap1 - heap0,
               batch_heap, rss1 - rss0);
    printf("\n");

    free(kc_cust.hash);
    free(kc_cust.count);
    free(kc_state.hash);
    free(kc_state.count);
    free(arena);
    free(evs);
    free(ev_cust);
    free(ev_prod);
    free(ev_camp);
    ps_batch_destroy(b);
    ps_decoder_destroy(dec);
    free(in.data);
    free(in.off);
    free(in.len);
    return 0;
}
