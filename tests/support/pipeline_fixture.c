/*
 * pipeline_fixture.c -- see pipeline_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_fixture.h"

ps_str ps_fx_str(const char *s)
{
    return (ps_str){s, (uint32_t)strlen(s)};
}

void ps_fx_mark_loaded(ps_fx *f)
{
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(f->p, &list);
    for (size_t i = 0; i < n; i++)
        ps_pipeline_loaded(f->p, list[i]);
}

void ps_fx_init_conf(ps_fx *f, const ps_agg_conf *conf)
{
    char err[256];
    f->p = ps_pipeline_new(conf, err, sizeof(err));
    if (f->p == NULL)
        fail_msg("ps_pipeline_new: %s", err);
    f->b = ps_batch_new("ps:");
    assert_non_null(f->b);
    f->seq = 0;
    ps_fx_mark_loaded(f);
}

void ps_fx_init(ps_fx *f)
{
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    ps_fx_init_conf(f, &conf);
}

void ps_fx_clear(ps_fx *f)
{
    ps_batch_destroy(f->b);
    ps_pipeline_destroy(f->p);
    f->b = NULL;
    f->p = NULL;
}

ps_customer *ps_fx_customer(ps_fx *f, const char *id)
{
    int err;
    ps_customer *c = ps_pipeline_find(f->p, PS_KIND_CUSTOMER, ps_fx_str(id));
    if (c == NULL)
        c = ps_pipeline_add(f->p, ps_fx_str(id), NULL, 0, &err);
    assert_non_null(c);
    return c;
}

int ps_fx_apply(ps_fx *f, const ps_event *e)
{
    bool late;
    int err;
    ps_customer *c = ps_pipeline_find(f->p, PS_KIND_CUSTOMER, e->customer_id);
    if (c == NULL)
        c = ps_pipeline_add(f->p, e->customer_id, NULL, 0, &err);
    assert_non_null(c);
    int rc = ps_pipeline_apply(f->p, e, c, &late);
    assert_int_equal(ps_pipeline_advance(f->p, 0), 0);
    f->seq++;
    return rc;
}

void ps_fx_event(ps_fx *f, const char *cust, ps_event_type t,
                 const char *prod, double amount, int64_t ts)
{
    static int seq; /* unique across pipelines: reloads are not dups */
    char id[32];
    ps_event e;
    memset(&e, 0, sizeof(e));
    snprintf(id, sizeof(id), "ev%d", ++seq);
    e.event_id = ps_fx_str(id);
    e.customer_id = ps_fx_str(cust);
    e.type = t;
    if (prod != NULL)
        e.product_id = ps_fx_str(prod);
    if (amount >= 0) {
        e.has_amount = true;
        e.amount = amount;
    }
    e.ts = ts;
    assert_int_equal(ps_fx_apply(f, &e), 0);
}

void ps_fx_flush(ps_fx *f)
{
    ps_batch_clear(f->b);
    ps_pipeline_write(f->p, f->b);
}

long long ps_fx_incr(const ps_fx *f, const char *key, const char *field)
{
    const char *argv[8];
    size_t lens[8];
    long long total = 0;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        if (ps_batch_argc(f->b, i) != 4)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "HINCRBY") == 0 && strcmp(argv[1], key) == 0 &&
            strcmp(argv[2], field) == 0)
            total += strtoll(argv[3], NULL, 10);
    }
    return total;
}

const char *ps_fx_hset_str(const ps_fx *f, const char *key,
                           const char *field)
{
    const char *argv[256];
    size_t lens[256];
    const char *v = NULL;
    for (size_t i = 0; i < ps_batch_count(f->b); i++) {
        size_t argc = ps_batch_argc(f->b, i);
        if (argc > 256)
            continue;
        ps_batch_argv(f->b, i, argv, lens);
        if (strcmp(argv[0], "HSET") != 0 || strcmp(argv[1], key) != 0)
            continue;
        for (size_t a = 2; a + 1 < argc; a += 2)
            if (strcmp(argv[a], field) == 0)
                v = argv[a + 1];
    }
    return v;
}

double ps_fx_hset(const ps_fx *f, const char *key, const char *field)
{
    const char *v = ps_fx_hset_str(f, key, field);
    return v != NULL ? strtod(v, NULL) : NAN;
}
