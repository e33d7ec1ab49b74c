/*
 * kafka.c -- consumer construction, reachability check, partition table
 * (see kafka.h).
 */
#include "kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

ps_part *ps_parts_find(ps_parts *ps, const char *topic, int32_t partition)
{
    if (ps->last < ps->n && ps->v[ps->last].partition == partition &&
        strcmp(ps->v[ps->last].topic, topic) == 0)
        return &ps->v[ps->last];
    for (size_t i = 0; i < ps->n; i++) {
        if (ps->v[i].partition == partition &&
            strcmp(ps->v[i].topic, topic) == 0) {
            ps->last = i;
            return &ps->v[i];
        }
    }
    return NULL;
}

ps_part *ps_parts_add(ps_parts *ps, const char *topic, int32_t partition,
                      int64_t next)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        ps_part *v = realloc(ps->v, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        ps->v = v;
        ps->cap = cap;
    }
    char name[512];
    uint32_t slot = UINT32_MAX;
    snprintf(name, sizeof(name), "%s:%d", topic, (int)partition);
    for (size_t i = 0; i < ps->slots_n; i++)
        if (strcmp(ps->slot_names[i], name) == 0)
            slot = (uint32_t)i;
    if (slot == UINT32_MAX) {
        char **v = realloc(ps->slot_names, (ps->slots_n + 1) * sizeof(*v));
        if (v == NULL)
            return NULL;
        ps->slot_names = v;
        if ((v[ps->slots_n] = strdup(name)) == NULL)
            return NULL;
        slot = (uint32_t)ps->slots_n++;
    }
    ps_part *p = &ps->v[ps->n];
    memset(p, 0, sizeof(*p));
    p->slot = slot;
    p->held_ts = INT64_MIN;
    p->eof_at = -1;
    p->end_seen = -1;
    p->topic = strdup(topic);
    if (p->topic == NULL)
        return NULL;
    p->partition = partition;
    p->next = next;
    p->flushed = next;
    ps->n++;
    return p;
}

int ps_msgq_push(ps_msgq *q, rd_kafka_message_t *m)
{
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? 2 * q->cap : 64;
        rd_kafka_message_t **v = malloc((size_t)cap * sizeof(*v));
        if (v == NULL)
            return PS_ERR_NOMEM;
        for (uint32_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->n++) % q->cap] = m;
    return PS_OK;
}

rd_kafka_message_t *ps_msgq_peek(const ps_msgq *q)
{
    return q->n ? q->v[q->head] : NULL;
}

rd_kafka_message_t *ps_msgq_last(const ps_msgq *q)
{
    return q->n ? q->v[(q->head + q->n - 1) % q->cap] : NULL;
}

rd_kafka_message_t *ps_msgq_pop(ps_msgq *q)
{
    if (q->n == 0)
        return NULL;
    rd_kafka_message_t *m = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return m;
}

void ps_msgq_clear(ps_msgq *q)
{
    rd_kafka_message_t *m;
    while ((m = ps_msgq_pop(q)) != NULL)
        rd_kafka_message_destroy(m);
    q->head = 0;
}

static void msgq_free(ps_msgq *q)
{
    ps_msgq_clear(q);
    free(q->v);
    memset(q, 0, sizeof(*q));
}

void ps_parts_clear(ps_parts *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].topic);
        msgq_free(&ps->v[i].held);
    }
    ps->n = 0;
    ps->last = 0;
}

void ps_parts_free(ps_parts *ps)
{
    ps_parts_clear(ps);
    free(ps->v);
    for (size_t i = 0; i < ps->slots_n; i++)
        free(ps->slot_names[i]);
    free(ps->slot_names);
    memset(ps, 0, sizeof(*ps));
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v,
                    char *errstr, size_t errstr_size)
{
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        ps_set_err(errstr, errstr_size, "kafka setting %s: %s", k, err);
        return PS_ERR_CONFIG;
    }
    return PS_OK;
}

rd_kafka_t *ps_kafka_consumer_new(const char *bootstrap, const char *group,
                                  const ps_passthrough *extra,
                                  void (*rebalance_cb)(rd_kafka_t *,
                                                       rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *,
                                                       void *),
                                  void *opaque, char *errstr,
                                  size_t errstr_size)
{
    static const char *const fixed[][2] = {
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"client.id", "propstream"},
        {"partition.assignment.strategy", "range,roundrobin"},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];

    if (conf_set(conf, "bootstrap.servers", bootstrap, errstr, errstr_size) ||
        conf_set(conf, "group.id", group, errstr, errstr_size))
        goto fail;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (conf_set(conf, fixed[i][0], fixed[i][1], errstr, errstr_size))
            goto fail;
    for (size_t i = 0; extra != NULL && i < extra->n; i++)
        if (conf_set(conf, extra->v[i].key, extra->v[i].value, errstr,
                     errstr_size))
            goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, opaque);

    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        ps_set_err(errstr, errstr_size, "kafka consumer: %s", err);
        goto fail;
    }
    /* conf is now owned by rk */
    rd_kafka_poll_set_consumer(rk);
    return rk;

fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int ps_kafka_check(rd_kafka_t *rk, const char *bootstrap,
                   const ps_strlist *topics, int timeout_ms, char *errstr,
                   size_t errstr_size)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ps_set_err(errstr, errstr_size,
                   "cannot reach Kafka at %s within %d ms: %s (check "
                   "--bootstrap and that the brokers are up)",
                   bootstrap, timeout_ms, rd_kafka_err2str(err));
        return PS_ERR_IO;
    }
    for (size_t t = 0; t < topics->n; t++) {
        int found = 0;
        for (int i = 0; i < md->topic_cnt && !found; i++)
            found = strcmp(md->topics[i].topic, topics->v[t]) == 0 &&
                    md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!found) {
            ps_set_err(errstr, errstr_size,
                       "topic '%s' does not exist on %s (check --topics)",
                       topics->v[t], bootstrap);
            rd_kafka_metadata_destroy(md);
            return PS_ERR_CONFIG;
        }
    }
    rd_kafka_metadata_destroy(md);
    return PS_OK;
}

int ps_kafka_partition_count(rd_kafka_t *rk, const ps_strlist *topics,
                             int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    int n = 0;
    for (size_t t = 0; t < topics->n; t++)
        for (int i = 0; i < md->topic_cnt; i++)
            if (strcmp(md->topics[i].topic, topics->v[t]) == 0)
                n += md->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

int64_t ps_kafka_lag(rd_kafka_t *rk, const ps_parts *ps)
{
    int64_t lag = 0;
    for (size_t i = 0; i < ps->n; i++) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(rk, ps->v[i].topic,
                                           ps->v[i].partition, &lo,
                                           &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0 || ps->v[i].next < 0)
            continue;
        if (hi > ps->v[i].next)
            lag += hi - ps->v[i].next;
    }
    return lag;
}
