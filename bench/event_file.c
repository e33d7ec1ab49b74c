/*
 * event_file.c -- see event_file.h.
 */
#include "event_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <jansson.h>

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

_Noreturn void ef_die_nomem(void)
{
    fprintf(stderr, "out of memory\n");
    exit(1);
}

void *ef_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        ef_die_nomem();
    return q;
}

int32_t ef_intern_get(ef_intern *t, const char *s, size_t n)
{
    if ((t->n + 1) * 2 > t->slots_cap) {
        size_t cap = t->slots_cap ? t->slots_cap * 2 : 1024;
        int32_t *slots = calloc(cap, sizeof(*slots));
        if (slots == NULL)
            ef_die_nomem();
        for (size_t i = 0; i < t->n; i++) {
            size_t j = hash_bytes(t->str[i], t->len[i]) & (cap - 1);
            while (slots[j] != 0)
                j = (j + 1) & (cap - 1);
            slots[j] = (int32_t)i + 1;
        }
        free(t->slots);
        t->slots = slots;
        t->slots_cap = cap;
    }
    size_t j = hash_bytes(s, n) & (t->slots_cap - 1);
    while (t->slots[j] != 0) {
        int32_t k = t->slots[j] - 1;
        if (t->len[k] == n && memcmp(t->str[k], s, n) == 0)
            return k;
        j = (j + 1) & (t->slots_cap - 1);
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->str = ef_xrealloc(t->str, t->cap * sizeof(*t->str));
        t->len = ef_xrealloc(t->len, t->cap * sizeof(*t->len));
    }
    t->str[t->n] = ef_xrealloc(NULL, n + 1);
    memcpy(t->str[t->n], s, n);
    t->str[t->n][n] = '\0';
    t->len[t->n] = (uint32_t)n;
    t->slots[j] = (int32_t)t->n + 1;
    return (int32_t)t->n++;
}

ps_str ef_intern_str(const ef_intern *t, int32_t k)
{
    if (k < 0)
        return (ps_str){NULL, 0};
    return (ps_str){t->str[k], t->len[k]};
}

void ef_intern_free(ef_intern *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->str[i]);
    free(t->str);
    free(t->len);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static int cmp_rec(const void *a, const void *b)
{
    const ef_rec *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

static int32_t str_field(ef_intern *t, json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v))
        return -1;
    return ef_intern_get(t, json_string_value(v), json_string_length(v));
}

int ef_read(const char *tool, const char *path, ef_file *f)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, rcap = 0, lineno = 0;
    ssize_t len;
    const char *bad = NULL;
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", tool, path, strerror(errno));
        return -1;
    }
    while (bad == NULL && (len = getline(&line, &cap, fp)) > 0) {
        json_error_t jerr;
        lineno++;
        json_t *o = json_loadb(line, (size_t)len, 0, &jerr);
        const char *type = json_string_value(json_object_get(o, "type"));
        json_t *ts = json_object_get(o, "ts");
        ps_event_type t;
        if (o == NULL || type == NULL || !json_is_integer(ts) ||
            ps_event_type_parse(type, strlen(type), &t) < 0) {
            bad = "not an event";
            json_decref(o);
            break;
        }
        if (f->n == rcap) {
            rcap = rcap ? rcap * 2 : 4096;
            f->v = ef_xrealloc(f->v, rcap * sizeof(*f->v));
        }
        ef_rec *r = &f->v[f->n++];
        memset(r, 0, sizeof(*r));
        r->id = str_field(&f->ids, o, "event_id");
        r->cust = str_field(&f->custs, o, "customer_id");
        r->prod = str_field(&f->prods, o, "product_id");
        r->campaign = str_field(&f->camps, o, "campaign");
        r->segment = str_field(&f->segs, o, "segment");
        r->type = t;
        json_t *amount = json_object_get(o, "amount");
        r->has_amount = json_is_number(amount);
        r->amount = r->has_amount ? json_number_value(amount) : 0;
        r->ts = json_integer_value(ts);
        json_t *su = json_object_get(o, "signup_ts");
        r->signup_ts = json_is_integer(su) ? json_integer_value(su) : 0;
        r->line = lineno;
        json_decref(o);
        if (r->id < 0 || r->cust < 0)
            bad = "no event_id/customer_id";
    }
    free(line);
    fclose(fp);
    if (bad != NULL) {
        fprintf(stderr, "%s: %s:%zu: %s\n", tool, path, lineno, bad);
        ef_free(f);
        return -1;
    }
    qsort(f->v, f->n, sizeof(*f->v), cmp_rec);
    return 0;
}

void ef_free(ef_file *f)
{
    free(f->v);
    ef_intern_free(&f->ids);
    ef_intern_free(&f->custs);
    ef_intern_free(&f->prods);
    ef_intern_free(&f->camps);
    ef_intern_free(&f->segs);
    memset(f, 0, sizeof(*f));
}

ps_event ef_event(const ef_file *f, const ef_rec *r)
{
    ps_event ev = {0};
    ev.event_id = ef_intern_str(&f->ids, r->id);
    ev.customer_id = ef_intern_str(&f->custs, r->cust);
    ev.product_id = ef_intern_str(&f->prods, r->prod);
    ev.campaign = ef_intern_str(&f->camps, r->campaign);
    ev.type = r->type;
    ev.has_amount = r->has_amount;
    ev.amount = r->amount;
    ev.ts = r->ts;
    ev.signup_ts = r->signup_ts;
    return ev;
}

void ef_load_all(ps_pipeline *p)
{
    ps_entity **list;
    size_t n = ps_pipeline_unloaded(p, &list);
    for (size_t i = 0; i < n; i++)
        ps_pipeline_loaded(p, list[i]);
}
