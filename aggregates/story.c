/*
 * story.c -- one readable English sentence per customer, field `story` of
 * ps:cust:{id} (contract section 3), for people and language models: the
 * seed's idea of turning a customer's history into a sentence ("this VIP
 * customer buys 50,000 to 70,000 every month") that a model can read.
 *
 * The sentence is a fixed template filled from numbers other aggregates
 * keep (read through their read-only accessors: customer_counts.h,
 * segments.h, funnels.h, next_action.h), so the same state always gives
 * the same bytes:
 *
 *   Customer {id} is {a {name} shopper (segment {k}) | in segment {k} |
 *   not yet segmented}: {amounts}; {path}; {funnels}; most likely next
 *   action: {type} ({p}).
 *
 * amounts  "14 purchases averaging 52,300" (or "..., 16 payments averaging"
 *          when SPEND amounts or purchases without amount make the counts
 *          differ; "..., no spend recorded" without amounts), then the
 *          level: "above" / "below" / "in line with" (beyond +-10 %) "their
 *          segment average of X" (else "the overall average of X"), then
 *          the trend: "and rising / falling / steady lately" comparing a
 *          recent mean with the customer's overall mean (beyond +-10 %),
 *          or "no trend yet" before STORY_TREND_MIN amounts.
 * path     the path with the most successful funnels ("usually buys after
 *          a click", "... a wishlist", "... click and wishlist"; the first
 *          in that order on a tie), or "no funnel purchase yet".
 * funnels  "no open funnels", "1 open funnel, intent 0.71 for product p",
 *          "2 open funnels, highest intent 0.71 for product p".
 * next     the most likely next event type given the last one (the first
 *          in click, wishlist, purchase, spend order on a tie).
 * Amounts are rounded with thousands separators from 1,000 up, kept with 2
 * decimals below 100 unless whole; probabilities have 2 decimals.
 *
 * Recent mean: an exponentially weighted mean of the customer's amounts
 * (PURCHASE amounts and SPEND) in arrival order (the customer's partition
 * order), the k-th newest weighted (1 - STORY_ALPHA)^k and normalised by
 * the sum of the weights (sum and weight kept in the slice), so a short
 * history is not dominated by its first amount as with the plain
 * recursion started at the first value.
 *
 * Reference means: the amounts of every customer, counted at the
 * customer's segment at the time of the amount (ps:segment:{k}) and
 * globally (ps:global), as HINCRBY deltas of `story_spend_n` and
 * `story_spend_cents` (amounts rounded to cents, so the sums are exact
 * integers and add up across instances; see aggregate.h).
 *
 * Cost: the sentence is built in write_customer, once per changed customer
 * per flush, in a fixed buffer (no allocation); apply only updates the
 * recent mean and two counters.  Memory: 24 bytes per customer, 32 per
 * segment and for the global record.  This aggregate must come after all
 * those it reads (last in aggregates.def).
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "customer_counts.h"
#include "funnels.h"
#include "kmeans.h"
#include "next_action.h"
#include "pipeline.h"
#include "segments.h"
#include "../common/error.h"
#include "../common/numfmt.h"

#define STORY_ALPHA 0.3       /* 1 - decay per newer amount, recent mean */
#define STORY_LEVEL_BAND 0.10 /* above / below the reference beyond this */
#define STORY_TREND_BAND 0.10 /* rising / falling beyond this */
#define STORY_TREND_MIN 3     /* amounts needed before a trend is told */
#define STORY_MAX 1536        /* two ids of at most PS_ID_MAX + the text */
#define STORY_STATE_VERSION 1

enum { S_N, S_CENTS, S_COUNT };
static const char *const shared_names[S_COUNT] = {"story_spend_n",
                                                  "story_spend_cents"};

typedef struct story_cust {
    double ew_sum, ew_weight; /* recent mean = ew_sum / ew_weight */
    uint32_t n;               /* amounts seen */
} story_cust;

typedef struct story_shared {
    int64_t base[S_COUNT];
    int64_t delta[S_COUNT];
} story_shared;

typedef struct story {
    ps_pipeline *pipe;
    size_t me;
    ps_entity *global;
    ps_entity *segments[PS_KMEANS_MAX_K];
    char text[STORY_MAX];
} story;

/* ------------------------------------------------------------- helpers */

static story_shared *shared_of(story *s, const ps_entity *e)
{
    return e ? ps_pipeline_slice(s->pipe, e, s->me) : NULL;
}

static ps_entity *segment_entity(story *s, int seg, bool create)
{
    if (seg < 0 || seg >= PS_KMEANS_MAX_K)
        return NULL;
    if (s->segments[seg] == NULL) { /* entities live as long as the pipe */
        char id[16];
        snprintf(id, sizeof(id), "%d", seg);
        ps_str sid = {id, (uint32_t)strlen(id)};
        s->segments[seg] =
            create ? ps_pipeline_entity(s->pipe, PS_KIND_SEGMENT, sid)
                   : ps_pipeline_find(s->pipe, PS_KIND_SEGMENT, sid);
    }
    return s->segments[seg];
}

/* Mean amount of a shared level, false when it has none. */
static bool shared_mean(const story_shared *sh, double *mean)
{
    if (sh == NULL)
        return false;
    int64_t n = sh->base[S_N] + sh->delta[S_N];
    if (n <= 0)
        return false;
    *mean = (double)(sh->base[S_CENTS] + sh->delta[S_CENTS]) / 100.0 /
            (double)n;
    return true;
}

/* A bounded string builder over story.text: output past the end is cut. */
typedef struct sb {
    char *p;
    size_t len, cap;
} sb;

/* Append len bytes (cut at the end of the buffer). */
static void put_mem(sb *b, const char *p, size_t len)
{
    if (b->len + 1 >= b->cap)
        return;
    size_t room = b->cap - b->len - 1;
    if (len > room)
        len = room;
    memcpy(b->p + b->len, p, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static void put(sb *b, const char *s) { put_mem(b, s, strlen(s)); }

static void put_id(sb *b, ps_str id) { put_mem(b, id.ptr, id.len); }

static void put_int(sb *b, int64_t v)
{
    char tmp[PS_FMT_NUM_MAX];
    put_mem(b, tmp, ps_fmt_i64(tmp, v));
}

/* A probability with 2 decimals, as "%.2f". */
static void put_p2(sb *b, double v)
{
    char tmp[PS_FMT_NUM_MAX];
    put_mem(b, tmp, ps_fmt_fixed(tmp, v, 2));
}

/* An amount for people: "52,300", "350", "12.50", "12". */
static void fmt_amount(char *out, size_t size, double x)
{
    char digits[PS_FMT_NUM_MAX];
    if (x >= 999.5) {
        size_t n = ps_fmt_fixed(digits, x, 0);
        size_t o = 0;
        for (size_t i = 0; i < n && o + 2 < size; i++) {
            if (i > 0 && (n - i) % 3 == 0)
                out[o++] = ',';
            out[o++] = digits[i];
        }
        out[o] = '\0';
    } else {
        int decimals = x >= 100 || fabs(x - round(x)) < 0.005 ? 0 : 2;
        size_t n = ps_fmt_fixed(digits, x, decimals);
        if (n >= size)
            n = size - 1;
        memcpy(out, digits, n);
        out[n] = '\0';
    }
}

static const char *plural(int64_t n) { return n == 1 ? "" : "s"; }

/* ----------------------------------------------------------- lifecycle */

static int story_init(void **self, const ps_agg_env *env, char *errstr,
                      size_t errstr_size)
{
    story *s = calloc(1, sizeof(*s));
    int me = PS_AGG_INDEX_story;
    if (s == NULL || me < 0) {
        free(s);
        ps_set_err(errstr, errstr_size, "story: out of memory");
        return PS_ERR_NOMEM;
    }
    s->pipe = env->pipe;
    s->me = (size_t)me;
    s->global = ps_pipeline_find(s->pipe, PS_KIND_GLOBAL, (ps_str){"", 0});
    *self = s;
    return PS_OK;
}

static void story_destroy(void *self) { free(self); }

static int story_apply(void *self, const ps_event *ev, const ps_apply_ctx *ctx)
{
    story *s = self;
    story_cust *c = ctx->cust_state;
    if (!((ev->type == PS_PURCHASE || ev->type == PS_SPEND) &&
          ev->has_amount))
        return PS_OK;
    double x = ev->amount;
    c->ew_sum = (1 - STORY_ALPHA) * c->ew_sum + x;
    c->ew_weight = (1 - STORY_ALPHA) * c->ew_weight + 1;
    c->n++;

    int64_t cents = llround(x * 100.0);
    story_shared *g = ctx->global_state;
    g->delta[S_N]++;
    g->delta[S_CENTS] += cents;
    int seg = ps_segments_of(s->pipe, ctx->cust);
    if (seg >= 0) {
        ps_entity *e = segment_entity(s, seg, true);
        if (e == NULL)
            return PS_ERR_NOMEM;
        story_shared *sh = shared_of(s, e);
        sh->delta[S_N]++;
        sh->delta[S_CENTS] += cents;
        ps_pipeline_touch(s->pipe, e);
    }
    return PS_OK;
}

/* ------------------------------------------------------------ the text */

static void put_segment(story *s, sb *b, int seg)
{
    if (seg < 0) {
        put(b, "not yet segmented");
        return;
    }
    const char *name = ps_segments_name(s->pipe, seg);
    if (name[0] == '\0') {
        put(b, "in segment ");
        put_int(b, seg);
        return;
    }
    bool vowel = strchr("aeiouAEIOU", name[0]) != NULL;
    put(b, vowel ? "an " : "a ");
    put(b, name);
    put(b, " shopper (segment ");
    put_int(b, seg);
    put(b, ")");
}

static void put_amounts(story *s, sb *b, const ps_entity *cust,
                        const story_cust *c, int seg)
{
    ps_customer_counts cc;
    char m[40], r[40];
    double ref;

    ps_customer_counts_get(s->pipe, cust, &cc);
    if (cc.purchases == 0)
        put(b, "no purchases");
    else {
        put_int(b, cc.purchases);
        put(b, " purchase");
        put(b, plural(cc.purchases));
    }
    if (cc.spend_n == 0) {
        put(b, ", no spend recorded");
        return;
    }
    fmt_amount(m, sizeof(m), cc.spend_mean);
    if (cc.spend_n != cc.purchases) {
        put(b, ", ");
        put_int(b, cc.spend_n);
        put(b, " payment");
        put(b, plural(cc.spend_n));
    }
    put(b, " averaging ");
    put(b, m);

    const char *ref_name = NULL;
    if (shared_mean(shared_of(s, segment_entity(s, seg, false)), &ref))
        ref_name = "their segment average";
    else if (shared_mean(shared_of(s, s->global), &ref))
        ref_name = "the overall average";
    if (ref_name != NULL) {
        const char *level =
            cc.spend_mean > ref * (1 + STORY_LEVEL_BAND)   ? "above"
            : cc.spend_mean < ref * (1 - STORY_LEVEL_BAND) ? "below"
                                                           : "in line with";
        fmt_amount(r, sizeof(r), ref);
        put(b, ", ");
        put(b, level);
        put(b, " ");
        put(b, ref_name);
        put(b, " of ");
        put(b, r);
    }
    if (c->n < STORY_TREND_MIN) {
        put(b, ", no trend yet");
        return;
    }
    double recent = c->ew_sum / c->ew_weight;
    const char *trend =
        recent > cc.spend_mean * (1 + STORY_TREND_BAND)   ? "rising"
        : recent < cc.spend_mean * (1 - STORY_TREND_BAND) ? "falling"
                                                          : "steady";
    put(b, ref_name ? " and " : ", ");
    put(b, trend);
    put(b, " lately");
}

static void put_path(story *s, sb *b, const ps_entity *cust)
{
    static const char *const how[3] = {"a click", "a wishlist",
                                       "click and wishlist"};
    double succ[3], trials[3];
    int best = -1;
    ps_funnels_customer_paths(s->pipe, cust, succ, trials);
    for (int x = 0; x < 3; x++)
        if (succ[x] > 0 && (best < 0 || succ[x] > succ[best]))
            best = x;
    if (best < 0)
        put(b, "no funnel purchase yet");
    else {
        put(b, "usually buys after ");
        put(b, how[best]);
    }
}

static void put_funnels(story *s, sb *b, const ps_entity *cust)
{
    double intent = 0;
    ps_str prod = {"", 0};
    uint32_t n = ps_funnels_top_intent(s->pipe, cust, &intent, &prod);
    if (n == 0)
        put(b, "no open funnels");
    else {
        put_int(b, n);
        put(b, n == 1 ? " open funnel, intent " : " open funnels, highest intent ");
        put_p2(b, intent);
        put(b, " for product ");
        put_id(b, prod);
    }
}

static void put_next(story *s, sb *b, const ps_entity *cust)
{
    double p[PS_EVENT_TYPE_COUNT];
    if (ps_next_action_of(s->pipe, cust, p) < 0)
        return;
    int best = 0;
    for (int j = 1; j < PS_EVENT_TYPE_COUNT; j++)
        if (p[j] > p[best])
            best = j;
    put(b, "; most likely next action: ");
    put(b, ps_next_action_type_name(best));
    put(b, " (");
    put_p2(b, p[best]);
    put(b, ")");
}

/* Build customer cust's sentence in s->text; returns its length. */
static size_t story_build(story *s, const ps_entity *cust, const story_cust *c)
{
    sb b = {s->text, 0, sizeof(s->text)};
    int seg = ps_segments_of(s->pipe, cust);
    s->text[0] = '\0';
    put(&b, "Customer ");
    put_id(&b, cust->id);
    put(&b, " is ");
    put_segment(s, &b, seg);
    put(&b, ": ");
    put_amounts(s, &b, cust, c, seg);
    put(&b, "; ");
    put_path(s, &b, cust);
    put(&b, "; ");
    put_funnels(s, &b, cust);
    put_next(s, &b, cust);
    put(&b, ".");
    return b.len;
}

static void story_write_customer(void *self, const ps_entity *cust,
                                 const void *state, ps_batch *b)
{
    story *s = self;
    size_t len = story_build(s, cust, state);
    ps_batch_arg_cstr(b, "story");
    ps_batch_arg(b, s->text, len);
}

/* ------------------------------------------------------- shared counts */

static void story_write_shared_entity(void *self, const ps_entity *e,
                                      void *state, ps_batch *b)
{
    story_shared *sh = state;
    (void)self;
    for (int k = 0; k < S_COUNT; k++) {
        if (sh->delta[k] == 0)
            continue;
        ps_batch_begin(b, "HINCRBY");
        ps_batch_arg_key(b, ps_kind_key((ps_kind)e->kind), e->id, NULL);
        ps_batch_arg_cstr(b, shared_names[k]);
        ps_batch_arg_i64(b, sh->delta[k]);
        ps_batch_end(b);
    }
}

static void story_flushed_shared_entity(void *self, const ps_entity *e,
                                        void *state)
{
    story_shared *sh = state;
    (void)self;
    (void)e;
    for (int k = 0; k < S_COUNT; k++) {
        sh->base[k] += sh->delta[k];
        sh->delta[k] = 0;
    }
}

static void story_load_shared_field(void *self, ps_entity *e, void *state,
                                    const char *field, size_t flen,
                                    const char *val, size_t vlen)
{
    story_shared *sh = state;
    char num[32];
    (void)self;
    (void)e;
    if (vlen >= sizeof(num))
        return;
    for (int k = 0; k < S_COUNT; k++)
        if (strlen(shared_names[k]) == flen &&
            memcmp(shared_names[k], field, flen) == 0) {
            memcpy(num, val, vlen);
            num[vlen] = '\0';
            sh->base[k] = strtoll(num, NULL, 10);
        }
}

/* ---------------------------------------------------------- saved state */

static void story_save(void *self, const ps_entity *cust, const void *state,
                       ps_wbuf *w)
{
    const story_cust *c = state;
    (void)self;
    (void)cust;
    ps_wbuf_u8(w, STORY_STATE_VERSION);
    ps_wbuf_f64(w, c->ew_sum);
    ps_wbuf_f64(w, c->ew_weight);
    ps_wbuf_u32(w, c->n);
}

static int story_load(void *self, ps_entity *cust, void *state, ps_rbuf *r)
{
    story_cust *c = state;
    uint8_t version;
    (void)self;
    (void)cust;
    if (ps_rbuf_u8(r, &version) < 0 || version != STORY_STATE_VERSION)
        return PS_ERR_STATE;
    ps_rbuf_f64(r, &c->ew_sum);
    ps_rbuf_f64(r, &c->ew_weight);
    ps_rbuf_u32(r, &c->n);
    if (r->err || !isfinite(c->ew_sum) || !isfinite(c->ew_weight) ||
        c->ew_sum < 0 || c->ew_weight < 0 || (c->n > 0 && c->ew_weight <= 0))
        return PS_ERR_STATE;
    return PS_OK;
}

const ps_aggregate_ops ps_agg_story = {
    .name = "story",
    .state_size = {[PS_KIND_CUSTOMER] = sizeof(story_cust),
                   [PS_KIND_GLOBAL] = sizeof(story_shared),
                   [PS_KIND_SEGMENT] = sizeof(story_shared)},
    .init = story_init,
    .destroy = story_destroy,
    .apply = story_apply,
    .write_customer = story_write_customer,
    .write_shared_entity = story_write_shared_entity,
    .flushed_shared_entity = story_flushed_shared_entity,
    .save_customer = story_save,
    .load_customer = story_load,
    .load_shared_field = story_load_shared_field,
};
