/* Portable orchestration of the softmax kernels: pooled statistics, choice of
 * the quantization range, the per-row exponent table, and the row loop. */
#include <float.h>
#include <math.h>

#include "softmax_common.h"

/* A range narrower than this (degenerate rows: constant, or denormal spread)
 * is widened to it, so the scale stays finite; every entry then gets the top
 * code.  The Python oracle applies the same rule. */
#define EXAQ_MIN_RANGE 5.421010862427522e-20 /* 2^-64 */

typedef struct {
    double count, sum, sumsq, min;
    int64_t invalid_rows;
} pooled_moments;

static double lanes_total(const double lanes[EXAQ_LANES]) {
    double total = 0.0;
    for (int l = 0; l < EXAQ_LANES; ++l) total += lanes[l];
    return total;
}

static int row_is_live(float row_max) { return row_max == row_max && row_max != -INFINITY; }

/* Pass 1 over the call: row maxima into `maxima` (NaN for invalid rows,
 * -inf for fully masked ones) and moments of t = x - max over live rows. */
static void pool_moments(const exaq_backend *be, const float *x, size_t rows, size_t n,
                         ptrdiff_t xs, float *maxima, pooled_moments *pm) {
    double sum[EXAQ_LANES] = {0}, sumsq[EXAQ_LANES] = {0};
    pm->count = 0;
    pm->min = INFINITY;
    pm->invalid_rows = 0;
    for (size_t r = 0; r < rows; ++r) {
        const float *row = x + (ptrdiff_t)r * xs;
        exaq_row_summary s;
        be->softmax->summarize(row, n, &s);
        if (s.invalid) {
            maxima[r] = NAN;
            ++pm->invalid_rows;
            continue;
        }
        maxima[r] = s.max;
        if (s.unmasked == 0) continue;
        be->softmax->moments(row, n, s.max, sum, sumsq);
        pm->count += (double)s.unmasked;
        const double lo_row = (double)s.min - (double)s.max;
        if (lo_row < pm->min) pm->min = lo_row;
    }
    pm->sum = lanes_total(sum);
    pm->sumsq = lanes_total(sumsq);
}

static double moments_sigma(double count, double sum, double sumsq) {
    if (count < 2) return 0.0;
    const double var = (sumsq - sum * sum / count) / (count - 1.0);
    return var > 0 ? sqrt(var) : 0.0;
}

static double pool_abs_deviation(const exaq_backend *be, const float *x, size_t rows, size_t n,
                                 ptrdiff_t xs, const float *maxima, double center, double count) {
    double acc[EXAQ_LANES] = {0};
    if (count <= 0) return 0.0;
    for (size_t r = 0; r < rows; ++r)
        if (row_is_live(maxima[r]))
            be->softmax->abs_deviation(x + (ptrdiff_t)r * xs, n, maxima[r], center, acc);
    return lanes_total(acc) / count;
}

/* lo = max(observed min, law), made finite and at least EXAQ_MIN_RANGE wide */
static float finish_lo(double lo) {
    if (!(lo < -EXAQ_MIN_RANGE)) lo = -EXAQ_MIN_RANGE; /* also NaN */
    if (lo < -FLT_MAX) lo = -FLT_MAX;
    return (float)lo;
}

static float law_lo(const exaq_params *p, double spread, double observed_min) {
    const double c = p->law_slope * spread + p->law_intercept;
    return finish_lo(observed_min > c ? observed_min : c);
}

static int params_valid(const exaq_params *p) {
    if (p->bits < 2 || p->bits > 4) return 0;
    if (p->clip < EXAQ_CLIP_GAUSS || p->clip > EXAQ_CLIP_STATIC) return 0;
    if (p->clip == EXAQ_CLIP_STATIC && !(p->static_lo < 0)) return 0;
    return p->floor == EXAQ_FLOOR_EXP || p->floor == EXAQ_FLOOR_ZERO;
}

/* Range shared by every row of the call, or NaN when it is chosen per row. */
static float pooled_lo(const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t xs, const exaq_params *p, float *maxima) {
    pooled_moments pm;
    switch (p->clip) {
    case EXAQ_CLIP_STATIC:
        return finish_lo(p->static_lo);
    case EXAQ_CLIP_ROW:
        return NAN;
    default:
        break;
    }
    pool_moments(be, x, rows, n, xs, maxima, &pm);
    if (p->clip == EXAQ_CLIP_NONE) return finish_lo(pm.min);
    if (p->clip == EXAQ_CLIP_GAUSS)
        return law_lo(p, moments_sigma(pm.count, pm.sum, pm.sumsq), pm.min);
    const double mean = pm.count > 0 ? pm.sum / pm.count : 0.0;
    return law_lo(p, pool_abs_deviation(be, x, rows, n, xs, maxima, mean, pm.count), pm.min);
}

/* Fills the row's quantizer; returns 0 for a live row, 1 for an invalid row
 * (output NaN), 2 for a row with nothing unmasked (output 0). */
static int prepare_row(const exaq_backend *be, const float *row, size_t n, const exaq_params *p,
                       float shared_lo, int have_maxima, float row_max, exaq_quantizer *q) {
    float lo = shared_lo;
    if (!have_maxima) {
        exaq_row_summary s;
        be->softmax->summarize(row, n, &s);
        if (s.invalid) return 1;
        if (s.unmasked == 0) return 2;
        row_max = s.max;
        if (p->clip == EXAQ_CLIP_ROW) {
            double sum[EXAQ_LANES] = {0}, sumsq[EXAQ_LANES] = {0};
            be->softmax->moments(row, n, s.max, sum, sumsq);
            const double sigma =
                moments_sigma((double)s.unmasked, lanes_total(sum), lanes_total(sumsq));
            lo = law_lo(p, sigma, (double)s.min - (double)s.max);
        }
    } else {
        if (row_max != row_max) return 1;
        if (!row_is_live(row_max)) return 2;
    }
    q->shift = row_max;
    q->lo = lo;
    q->levels = (1 << p->bits) - 1;
    q->scale = (float)q->levels / -lo;
    return 0;
}

/* table[k] = exp(dequantized code k) / sum over the row's codes */
static void probability_table(const exaq_backend *be, const float *row, size_t n,
                              const exaq_quantizer *q, exaq_floor_mode floor,
                              float table[EXAQ_MAX_CODES]) {
    int64_t counts[EXAQ_MAX_CODES] = {0};
    double e[EXAQ_MAX_CODES], total = 0.0;
    be->softmax->code_counts(row, n, q, counts);
    const double lo = q->lo, step = -lo / q->levels;
    for (int k = 0; k <= q->levels; ++k) {
        if (k == q->levels)
            e[k] = 1.0; /* code levels is exactly t = 0 */
        else
            e[k] = (k == 0 && floor == EXAQ_FLOOR_ZERO) ? 0.0 : exp(lo + k * step);
        total += (double)counts[k] * e[k];
    }
    for (int k = 0; k < EXAQ_MAX_CODES; ++k) table[k] = k <= q->levels ? (float)(e[k] / total) : 0.0f;
}

static void fill(float *y, size_t n, float v) {
    for (size_t j = 0; j < n; ++j) y[j] = v;
}

int exaq_softmax_quantized(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t xs, float *y, ptrdiff_t ys, const exaq_params *p,
                           float *maxima, float *lo_out) {
    if (!params_valid(p)) return -1;
    if (rows == 0 || n == 0) return 0;
    const float shared_lo = pooled_lo(be, x, rows, n, xs, p, maxima);
    const int have_maxima = p->clip != EXAQ_CLIP_ROW && p->clip != EXAQ_CLIP_STATIC;
    for (size_t r = 0; r < rows; ++r) {
        const float *row = x + (ptrdiff_t)r * xs;
        float *out = y + (ptrdiff_t)r * ys;
        exaq_quantizer q;
        const int state =
            prepare_row(be, row, n, p, shared_lo, have_maxima, have_maxima ? maxima[r] : 0.f, &q);
        if (lo_out) lo_out[r] = state == 0 ? q.lo : NAN;
        if (state != 0) {
            fill(out, n, state == 1 ? NAN : 0.0f);
            continue;
        }
        float table[EXAQ_MAX_CODES];
        probability_table(be, row, n, &q, p->floor, table);
        be->softmax->lookup_store(row, n, &q, table, out);
    }
    return 0;
}

int exaq_quantize_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t xs, uint8_t *codes, ptrdiff_t cs, const exaq_params *p,
                        float *maxima, float *lo_out, float *tables) {
    if (!params_valid(p)) return -1;
    if (rows == 0) return 0;
    const int ncodes = 1 << p->bits;
    const float shared_lo = n ? pooled_lo(be, x, rows, n, xs, p, maxima) : NAN;
    const int have_maxima = p->clip != EXAQ_CLIP_ROW && p->clip != EXAQ_CLIP_STATIC;
    for (size_t r = 0; r < rows; ++r) {
        const float *row = x + (ptrdiff_t)r * xs;
        uint8_t *out = codes + (ptrdiff_t)r * cs;
        float *row_table = tables ? tables + r * (size_t)ncodes : NULL;
        exaq_quantizer q;
        const int state = n ? prepare_row(be, row, n, p, shared_lo, have_maxima,
                                          have_maxima ? maxima[r] : 0.f, &q)
                            : 2;
        if (lo_out) lo_out[r] = state == 0 ? q.lo : NAN;
        if (state != 0) {
            for (size_t j = 0; j < n; ++j) out[j] = 0;
            if (row_table)
                for (int k = 0; k < ncodes; ++k) row_table[k] = state == 1 ? NAN : 0.0f;
            continue;
        }
        be->softmax->codes(row, n, &q, out);
        if (row_table) {
            float table[EXAQ_MAX_CODES];
            probability_table(be, row, n, &q, p->floor, table);
            for (int k = 0; k < ncodes; ++k) row_table[k] = table[k];
        }
    }
    return 0;
}

int exaq_softmax_exact(const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t xs, float *y, ptrdiff_t ys) {
    for (size_t r = 0; r < rows && n; ++r) {
        const float *row = x + (ptrdiff_t)r * xs;
        float *out = y + (ptrdiff_t)r * ys;
        exaq_row_summary s;
        be->softmax->summarize(row, n, &s);
        if (s.invalid || s.unmasked == 0) {
            fill(out, n, s.invalid ? NAN : 0.0f);
            continue;
        }
        const double total = be->softmax->exp_store_sum(row, n, s.max, out);
        be->softmax->scale(out, n, (float)(1.0 / total));
    }
    return 0;
}

void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                      ptrdiff_t xs, float *maxima, exaq_call_stats *out) {
    pooled_moments pm = {0, 0, 0, INFINITY, 0};
    if (rows && n) pool_moments(be, x, rows, n, xs, maxima, &pm);
    out->count = (int64_t)pm.count;
    out->mean = pm.count > 0 ? pm.sum / pm.count : NAN;
    out->sigma = pm.count > 0 ? moments_sigma(pm.count, pm.sum, pm.sumsq) : NAN;
    out->min = pm.count > 0 ? pm.min : NAN;
    out->mean_abs_dev =
        pm.count > 0 ? pool_abs_deviation(be, x, rows, n, xs, maxima, out->mean, pm.count) : NAN;
    out->invalid_rows = pm.invalid_rows;
}
