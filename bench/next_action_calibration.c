/*
 * next_action_calibration.c -- are propstream's next-action scores
 * calibrated?  (contract section 2, "Next action"; aggregates/next_action.c)
 *
 *   next_action_calibration [--flush-every N] [--bins B] TRUTH.json
 *
 * TRUTH is what `propstream gen --truth FILE` wrote: one good event per
 * line, with the generator's latent segment of its customer.  The events
 * are replayed in time order (stable sort on ts) through a pipeline with
 * every registered aggregate and the default settings, in memory (no
 * Kafka, no Redis; a flush into a throw-away batch, marked successful,
 * every N events, 1000 by default, as the run loop would).
 *
 * A prediction is made for every event of a customer that already has an
 * event: just before the event is applied, the customer's
 * P(next type = j | last type) (ps_next_action_of, the next_click ..
 * next_spend of ps:cust:{id} as they stand) is read, and the event's type
 * is the outcome.  Reported, overall and per segment:
 *   - by propstream's segment of the customer at prediction time, by name
 *     (ps_segments_name; "none" before the customer has one);
 *   - by the generator's true segment (the truth file's "segment");
 * the number of predictions, and for each type j the mean predicted
 * P(next = j) against the observed frequency of j as the next event (a
 * calibrated model has them equal within noise: about
 * sqrt(f (1 - f) / n)), and the Brier score of the four-way forecast
 * (mean of sum_j (p_j - [j observed])^2; lower is better; the forecast
 * "observed overall frequencies" gives the reference printed beside it).
 * Then a reliability table of the predicted next_purchase in B (10) equal
 * bins of [0, 1]: per bin the count, the mean predicted and the observed
 * frequency of a purchase next, for propstream and, beside it, for the
 * global-prior reference and the "counted after" reference below.
 *
 * Reference forecasts, computed here from this tool's own transition
 * counts (each customer's previous type; events in time order), show where
 * a miscalibration comes from:
 *   - "pooled": P(j | i) = the population's transition frequency so far,
 *     m_ij / sum_j m_ij (first-order Markov, no customer term);
 *   - "global prior": the Dirichlet posterior mean with the global row as
 *     prior and no segment level, (s m_ij / sum_j m_ij + n_ij) /
 *     (s + sum_j n_ij), s = next_prior_strength, n the customer's own
 *     counts.  For a customer without a segment this is what next_action.c
 *     documents, so the largest difference from propstream's forecast over
 *     those predictions is printed as a cross-check (it should be ~1e-16);
 *   - "segment prior, counted at the previous event's segment" and
 *     "... counted after": the same with the prior from the customer's
 *     CURRENT segment's transition counts (else global), where a
 *     transition a -> b is counted at the segment the customer was in just
 *     after its previous event a was applied (the segment of the forecast
 *     that b answers; next_action.c's rule: this one must reproduce
 *     propstream's forecasts, and the largest difference is printed), or
 *     at the segment the customer is in after b is applied (the rule
 *     before next_action's state version 2: segments comes first in
 *     aggregates.def, so a PURCHASE that moves a customer counted "->
 *     purchase" at the segment it moved into).  The two "before b" choices
 *     -- the segment after a, and the segment just before b -- differ only
 *     when a k-means sweep moved the customer between a and b; how many
 *     transitions that concerns is printed.
 *
 * Last line, machine-readable:
 *   next_action_calibration: predictions=N mean_p_purchase=A
 *                            obs_purchase=B brier=C
 * Exit status 0, 1 on bad input, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_file.h"

#include "../aggregates/next_action.h"
#include "../aggregates/pipeline.h"
#include "../aggregates/segments.h"
#include "../common/error.h"

#define NT PS_EVENT_TYPE_COUNT /* click, wishlist, purchase, spend */
#define MAX_BINS 100
#define MAX_GROUPS 64

/* ---- tallies ------------------------------------------------------------ */

/* Predictions of one group (a segment, or everything). */
typedef struct tally {
    char name[64];
    size_t n;
    double pred[NT]; /* sum of predicted P(next = j) */
    size_t obs[NT];  /* outcomes of type j */
    double brier;    /* sum of the four-way squared errors */
} tally;

typedef struct groups {
    tally v[MAX_GROUPS];
    size_t n;
} groups;

static tally *group_of(groups *g, const char *name)
{
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->v[i].name, name) == 0)
            return &g->v[i];
    if (g->n == MAX_GROUPS)
        return &g->v[MAX_GROUPS - 1]; /* "other": never with k <= 10 */
    tally *t = &g->v[g->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    return t;
}

static void tally_add(tally *t, const double *p, int outcome)
{
    t->n++;
    for (int j = 0; j < NT; j++) {
        double y = j == outcome ? 1.0 : 0.0;
        t->pred[j] += p[j];
        t->brier += (p[j] - y) * (p[j] - y);
    }
    t->obs[outcome]++;
}

/* One reliability bin of predicted next_purchase. */
typedef struct bin {
    size_t n, purchases;
    double pred;
} bin;

#define MAX_SEG 16 /* PS_KMEANS_MAX_K */

typedef struct result {
    tally all, pooled, ref_all;
    groups by_seg, by_truth, ref_by_seg, after_by_seg, rule_by_seg;
    bin bins[MAX_BINS], ref_bins[MAX_BINS], after_bins[MAX_BINS];
    size_t skipped_first;  /* first events of customers: no prediction */
    size_t checked;        /* unsegmented predictions compared with ref */
    double max_diff;       /* largest |propstream - global prior| there */
    double max_diff_rule;  /* largest |propstream - segment, previous| */
    size_t transitions;    /* counted transitions */
    size_t swept;          /* of which segment after a != just before b */
} result;

/* This tool's own transition counts (see the header). */
typedef struct ref_counts {
    uint32_t m[NT][NT];               /* everyone's transitions i -> j */
    uint32_t after[MAX_SEG][NT][NT];  /* a -> b at the segment after b */
    uint32_t prev[MAX_SEG][NT][NT];   /* a -> b at the segment after a */
    uint32_t (*n)[NT][NT];            /* per customer */
    int8_t *last;                     /* per customer: last type, -1 none */
    int8_t *last_seg; /* per customer: segment after its last event, -1 */
} ref_counts;

/* Posterior with prior row i of seg_m (when it has data) else global. */
static void seg_forecast(const ref_counts *rc, const uint32_t (*seg_m)[NT],
                         int32_t cu, int i, double strength, double *post)
{
    double row = 0, own = 0, prior[NT];
    const uint32_t *src = NULL;
    if (seg_m != NULL) {
        for (int j = 0; j < NT; j++)
            row += seg_m[i][j];
        if (row > 0)
            src = seg_m[i];
    }
    if (src == NULL) {
        row = 0;
        for (int j = 0; j < NT; j++)
            row += rc->m[i][j];
        src = rc->m[i];
    }
    for (int j = 0; j < NT; j++) {
        prior[j] = row > 0 ? src[j] / row : 1.0 / NT;
        own += rc->n[cu][i][j];
    }
    double z = strength + own;
    for (int j = 0; j < NT; j++)
        post[j] =
            z > 0 ? (strength * prior[j] + rc->n[cu][i][j]) / z : prior[j];
}

static void bin_add(bin *bins, size_t nbins, double pp, bool purchase)
{
    size_t k = (size_t)(pp * (double)nbins);
    if (k >= nbins)
        k = nbins - 1;
    bins[k].n++;
    bins[k].pred += pp;
    bins[k].purchases += purchase;
}

/* The pooled row i, and the global-prior posterior of customer cu. */
static void ref_forecast(const ref_counts *rc, int32_t cu, int i,
                         double strength, double *pooled, double *post)
{
    double row = 0, own = 0;
    for (int j = 0; j < NT; j++) {
        row += rc->m[i][j];
        own += rc->n[cu][i][j];
    }
    for (int j = 0; j < NT; j++) {
        pooled[j] = row > 0 ? rc->m[i][j] / row : 1.0 / NT;
        post[j] = strength * pooled[j] + rc->n[cu][i][j];
    }
    double z = strength + own;
    for (int j = 0; j < NT; j++)
        post[j] = z > 0 ? post[j] / z : pooled[j];
}

/* ---- replay ------------------------------------------------------------- */

static int replay(const ef_file *f, size_t flush_every, size_t nbins,
                  result *out)
{
    const ef_rec *v = f->v;
    size_t n = f->n;
    const ef_intern *custs = &f->custs, *segs = &f->segs;
    char err[256], segname[64];
    ps_agg_conf conf;
    ps_agg_conf_defaults(&conf);
    ps_pipeline *p = ps_pipeline_new(&conf, err, sizeof(err));
    ps_batch *b = ps_batch_new("ps:");
    ref_counts ref = {0};
    int rc = 0;

    ref.n = calloc(custs->n ? custs->n : 1, sizeof(*ref.n));
    ref.last = malloc(custs->n ? custs->n : 1);
    ref.last_seg = malloc(custs->n ? custs->n : 1);
    if (p == NULL || b == NULL || ref.n == NULL || ref.last == NULL ||
        ref.last_seg == NULL) {
        fprintf(stderr, "next_action_calibration: %s\n",
                p ? "out of memory" : err);
        ps_pipeline_destroy(p);
        ps_batch_destroy(b);
        free(ref.n);
        free(ref.last);
        free(ref.last_seg);
        return -1;
    }
    memset(ref.last, -1, custs->n);
    memset(ref.last_seg, -1, custs->n);
    memset(out, 0, sizeof(*out));
    snprintf(out->all.name, sizeof(out->all.name), "all");
    snprintf(out->pooled.name, sizeof(out->pooled.name), "pooled");
    snprintf(out->ref_all.name, sizeof(out->ref_all.name), "all");

    for (size_t i = 0; i < n && rc == 0; i++) {
        const ef_rec *r = &v[i];
        ps_event ev = ef_event(f, r);
        ps_customer *c = ps_pipeline_find(p, PS_KIND_CUSTOMER, ev.customer_id);
        double probs[NT];

        if (c != NULL && ps_next_action_of(p, c, probs) >= 0) {
            int outcome = (int)r->type;
            int seg = ps_segments_of(p, c);
            const char *name = seg >= 0 ? ps_segments_name(p, seg) : "none";
            if (seg >= 0 && name[0] == '\0')
                snprintf(segname, sizeof(segname), "segment %d", seg);
            else
                snprintf(segname, sizeof(segname), "%s", name);
            tally_add(&out->all, probs, outcome);
            tally_add(group_of(&out->by_seg, segname), probs, outcome);
            tally_add(group_of(&out->by_truth, r->segment >= 0
                                                   ? segs->str[r->segment]
                                                   : "?"),
                      probs, outcome);
            bin_add(out->bins, nbins, probs[PS_PURCHASE],
                    outcome == PS_PURCHASE);
            int last = ref.last[r->cust];
            if (last >= 0) { /* always, with events in time order */
                double pooled[NT], post[NT];
                ref_forecast(&ref, r->cust, last, conf.next_prior_strength,
                             pooled, post);
                tally_add(&out->pooled, pooled, outcome);
                tally_add(&out->ref_all, post, outcome);
                tally_add(group_of(&out->ref_by_seg, segname), post, outcome);
                bin_add(out->ref_bins, nbins, post[PS_PURCHASE],
                        outcome == PS_PURCHASE);
                for (int j = 0; seg < 0 && j < NT; j++)
                    if (fabs(post[j] - probs[j]) > out->max_diff)
                        out->max_diff = fabs(post[j] - probs[j]);
                out->checked += seg < 0;
                /* the prior is the current segment's row either way */
                double after[NT], rule[NT];
                bool has_seg = seg >= 0 && seg < MAX_SEG;
                seg_forecast(&ref, has_seg ? ref.after[seg] : NULL, r->cust,
                             last, conf.next_prior_strength, after);
                seg_forecast(&ref, has_seg ? ref.prev[seg] : NULL, r->cust,
                             last, conf.next_prior_strength, rule);
                for (int j = 0; j < NT; j++)
                    if (fabs(rule[j] - probs[j]) > out->max_diff_rule)
                        out->max_diff_rule = fabs(rule[j] - probs[j]);
                tally_add(group_of(&out->after_by_seg, segname), after,
                          outcome);
                tally_add(group_of(&out->rule_by_seg, segname), rule,
                          outcome);
                bin_add(out->after_bins, nbins, after[PS_PURCHASE],
                        outcome == PS_PURCHASE);
            }
        } else {
            out->skipped_first++;
        }

        int seg_before = c != NULL ? ps_segments_of(p, c) : -1;
        if (c == NULL) {
            int e;
            c = ps_pipeline_add(p, ev.customer_id, NULL, 0, &e);
            if (c == NULL) {
                rc = -1;
                break;
            }
        }
        if (r->prod >= 0 &&
            ps_pipeline_entity(p, PS_KIND_PRODUCT, ev.product_id) == NULL) {
            rc = -1;
            break;
        }
        if (r->campaign >= 0 &&
            ps_pipeline_entity(p, PS_KIND_CAMPAIGN, ev.campaign) == NULL) {
            rc = -1;
            break;
        }
        ef_load_all(p);
        bool late;
        if (ps_pipeline_apply(p, &ev, c, &late) < 0 ||
            ps_pipeline_advance(p, 0) < 0) {
            rc = -1;
            break;
        }
        ef_load_all(p);
        int lt = ref.last[r->cust], seg_after = ps_segments_of(p, c);
        int seg_prev = ref.last_seg[r->cust]; /* after the previous event */
        if (lt >= 0) {
            ref.m[lt][r->type]++;
            ref.n[r->cust][lt][r->type]++;
            if (seg_after >= 0 && seg_after < MAX_SEG)
                ref.after[seg_after][lt][r->type]++;
            if (seg_prev >= 0 && seg_prev < MAX_SEG)
                ref.prev[seg_prev][lt][r->type]++;
            out->transitions++;
            out->swept += seg_prev != seg_before;
        }
        ref.last[r->cust] = (int8_t)r->type;
        ref.last_seg[r->cust] = (int8_t)seg_after;
        if ((i + 1) % flush_every == 0 || i + 1 == n) {
            ps_batch_clear(b);
            ps_pipeline_write(p, b);
            if (ps_batch_error(b) < 0) {
                rc = -1;
                break;
            }
            ps_pipeline_flushed(p);
        }
    }
    if (rc < 0)
        fprintf(stderr,
                "next_action_calibration: replay failed (out of memory)\n");
    free(ref.n);
    free(ref.last);
    free(ref.last_seg);
    ps_batch_destroy(b);
    ps_pipeline_destroy(p);
    return rc;
}

/* ---- report ------------------------------------------------------------- */

static const char *const type_names[NT] = {"click", "wishlist", "purchase",
                                           "spend"};

/* Brier score of always forecasting the group's own observed frequencies
 * (the best constant forecast for it): sum_j f_j (1 - f_j). */
static double brier_const(const tally *t)
{
    double s = 0;
    for (int j = 0; j < NT; j++) {
        double f = t->n ? (double)t->obs[j] / (double)t->n : 0;
        s += f * (1 - f);
    }
    return s;
}

static void print_tally(const tally *t)
{
    double n = t->n ? (double)t->n : 1.0;
    printf("  %-10s %8zu", t->name, t->n);
    for (int j = 0; j < NT; j++)
        printf("  %6.4f %6.4f", t->pred[j] / n, (double)t->obs[j] / n);
    printf("  %6.4f %6.4f\n", t->brier / n, brier_const(t));
}

static void print_header(const char *what)
{
    printf("\n%s\n", what);
    printf("  %-10s %8s", "segment", "n");
    for (int j = 0; j < NT; j++)
        printf("  %-13s", type_names[j]);
    printf("  %-13s\n", "brier");
    printf("  %-10s %8s", "", "");
    for (int j = 0; j < NT; j++)
        printf("  %6s %6s", "pred", "obs");
    printf("  %6s %6s\n", "model", "const");
}

static int cmp_tally(const void *a, const void *b)
{
    const tally *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static void report(result *res, size_t nbins, const char *path, size_t n,
                   size_t ncust)
{
    printf("%s: %zu events, %zu customers; %zu predictions (the first "
           "event of each customer has none)\n",
           path, n, ncust, res->all.n);
    print_header("by propstream's segment at prediction time "
                 "(pred = mean predicted P(next = type), obs = observed "
                 "frequency)");
    qsort(res->by_seg.v, res->by_seg.n, sizeof(tally), cmp_tally);
    for (size_t i = 0; i < res->by_seg.n; i++)
        print_tally(&res->by_seg.v[i]);
    print_tally(&res->all);
    print_header("by the generator's true segment");
    qsort(res->by_truth.v, res->by_truth.n, sizeof(tally), cmp_tally);
    for (size_t i = 0; i < res->by_truth.n; i++)
        print_tally(&res->by_truth.v[i]);
    print_tally(&res->all);

    print_header("reference forecasts (see the header): pooled transition "
                 "frequencies, and the global prior + own counts by "
                 "propstream's segment");
    print_tally(&res->pooled);
    qsort(res->ref_by_seg.v, res->ref_by_seg.n, sizeof(tally), cmp_tally);
    for (size_t i = 0; i < res->ref_by_seg.n; i++)
        print_tally(&res->ref_by_seg.v[i]);
    print_tally(&res->ref_all);
    printf("  cross-check: %zu predictions for unsegmented customers, "
           "largest |propstream - global prior| = %.3g\n",
           res->checked, res->max_diff);
    print_header("reference: segment prior, transitions a -> b counted at "
                 "the segment after b (the rule before next_action's state "
                 "version 2)");
    qsort(res->after_by_seg.v, res->after_by_seg.n, sizeof(tally), cmp_tally);
    tally after_all = {.name = "all"};
    for (size_t i = 0; i < res->after_by_seg.n; i++) {
        const tally *t = &res->after_by_seg.v[i];
        print_tally(t);
        after_all.n += t->n;
        after_all.brier += t->brier;
        for (int j = 0; j < NT; j++) {
            after_all.pred[j] += t->pred[j];
            after_all.obs[j] += t->obs[j];
        }
    }
    print_tally(&after_all);
    print_header("reference: segment prior, transitions a -> b counted at "
                 "the segment after a, when b was forecast (as next_action.c "
                 "does)");
    qsort(res->rule_by_seg.v, res->rule_by_seg.n, sizeof(tally), cmp_tally);
    for (size_t i = 0; i < res->rule_by_seg.n; i++)
        print_tally(&res->rule_by_seg.v[i]);
    printf("  cross-check: largest |propstream - this| over all %zu "
           "predictions = %.3g\n",
           res->all.n, res->max_diff_rule);
    printf("  %zu of %zu transitions had the customer moved by a sweep "
           "between a and b (segment after a != segment just before b)\n",
           res->swept, res->transitions);

    printf("\nreliability of next_purchase (%zu bins; n, mean predicted, "
           "observed): propstream | global-prior reference | segment prior "
           "counted after b (old rule)\n",
           nbins);
    for (size_t k = 0; k < nbins; k++) {
        const bin *v3[3] = {&res->bins[k], &res->ref_bins[k],
                            &res->after_bins[k]};
        if (v3[0]->n == 0 && v3[1]->n == 0 && v3[2]->n == 0)
            continue;
        printf("  [%.2f, %.2f%c", (double)k / (double)nbins,
               (double)(k + 1) / (double)nbins, k + 1 == nbins ? ']' : ')');
        for (int m = 0; m < 3; m++) {
            double d = v3[m]->n ? (double)v3[m]->n : 1.0;
            printf(" %s %7zu %6.4f %6.4f", m ? "|" : "", v3[m]->n,
                   v3[m]->pred / d, (double)v3[m]->purchases / d);
        }
        printf("\n");
    }
    double an = res->all.n ? (double)res->all.n : 1.0;
    printf("next_action_calibration: predictions=%zu mean_p_purchase=%.4f "
           "obs_purchase=%.4f brier=%.4f\n",
           res->all.n, res->all.pred[PS_PURCHASE] / an,
           (double)res->all.obs[PS_PURCHASE] / an, res->all.brier / an);
}

static void usage(void)
{
    fprintf(stderr, "usage: next_action_calibration [--flush-every N] "
                    "[--bins B] TRUTH.json\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    size_t flush_every = 1000, nbins = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--flush-every") == 0 && i + 1 < argc)
            flush_every = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--bins") == 0 && i + 1 < argc)
            nbins = strtoul(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && path == NULL)
            path = argv[i];
        else {
            usage();
            return 2;
        }
    }
    if (path == NULL || flush_every == 0 || nbins == 0 || nbins > MAX_BINS) {
        usage();
        return 2;
    }

    ef_file f = {0};
    static result res;
    int status = 1;
    if (ef_read("next_action_calibration", path, &f) == 0 &&
        replay(&f, flush_every, nbins, &res) == 0) {
        report(&res, nbins, path, f.n, f.custs.n);
        status = 0;
    }
    ef_free(&f);
    return status;
}
