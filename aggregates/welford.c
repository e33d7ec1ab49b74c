/*
 * welford.c -- running mean and variance (see welford.h for the formulas).
 *
 * Invariants kept by every function: n >= 0, m2 >= 0, all three finite,
 * and n == 0 implies mean == 0 and m2 == 0.  The weighted update
 *   n' = n + w, delta = x - mean, mean' = mean + delta w / n',
 *   m2' = m2 + w delta (x - mean')
 * adds a non-negative term (delta and x - mean' have the same sign because
 * mean' lies between mean and x), so m2 never goes negative by rounding.
 */
#include "welford.h"

#include <math.h>

#include "../common/error.h"

#define WELFORD_VERSION 1

void ps_welford_init(ps_welford *w)
{
    w->n = 0;
    w->mean = 0;
    w->m2 = 0;
}

void ps_welford_add_weighted(ps_welford *w, double x, double weight)
{
    if (!isfinite(x) || !(weight > 0) || !isfinite(weight))
        return;
    double n = w->n + weight;
    double delta = x - w->mean;
    double mean = w->mean + delta * (weight / n);
    w->m2 += weight * delta * (x - mean);
    w->mean = mean;
    w->n = n;
}

void ps_welford_add(ps_welford *w, double x)
{
    ps_welford_add_weighted(w, x, 1.0);
}

void ps_welford_merge(ps_welford *dst, const ps_welford *src)
{
    /* Copy src first: dst may alias it. */
    double nb = src->n, mb = src->mean, m2b = src->m2;

    if (!(nb > 0))
        return;
    if (!(dst->n > 0)) {
        dst->n = nb;
        dst->mean = mb;
        dst->m2 = m2b;
        return;
    }
    double na = dst->n;
    double n = na + nb;
    double delta = mb - dst->mean;
    dst->mean += delta * (nb / n);
    dst->m2 += m2b + delta * delta * (na * nb / n);
    dst->n = n;
}

void ps_welford_decay(ps_welford *w, double factor)
{
    if (factor >= 1)
        return;
    if (!(factor > 0)) {
        ps_welford_init(w);
        return;
    }
    w->n *= factor;
    w->m2 *= factor;
    if (w->n == 0) /* underflow */
        ps_welford_init(w);
}

double ps_welford_count(const ps_welford *w)
{
    return w->n;
}

double ps_welford_mean(const ps_welford *w)
{
    return w->n > 0 ? w->mean : 0;
}

double ps_welford_var(const ps_welford *w)
{
    if (!(w->n >= 2))
        return 0;
    return w->m2 / (w->n - 1);
}

double ps_welford_std(const ps_welford *w)
{
    return sqrt(ps_welford_var(w));
}

void ps_welford_save(const ps_welford *w, ps_wbuf *wb)
{
    ps_wbuf_u8(wb, WELFORD_VERSION);
    ps_wbuf_f64(wb, w->n);
    ps_wbuf_f64(wb, w->mean);
    ps_wbuf_f64(wb, w->m2);
}

int ps_welford_load(ps_welford *w, ps_rbuf *rb)
{
    uint8_t version;
    ps_welford t;

    if (ps_rbuf_u8(rb, &version) < 0 || version != WELFORD_VERSION)
        return PS_ERR_STATE;
    if (ps_rbuf_f64(rb, &t.n) < 0 || ps_rbuf_f64(rb, &t.mean) < 0 ||
        ps_rbuf_f64(rb, &t.m2) < 0)
        return PS_ERR_STATE;
    if (!isfinite(t.n) || !isfinite(t.mean) || !isfinite(t.m2) || t.n < 0 ||
        t.m2 < 0)
        return PS_ERR_STATE;
    if (t.n == 0 && (t.mean != 0 || t.m2 != 0))
        return PS_ERR_STATE;
    *w = t;
    return PS_OK;
}
