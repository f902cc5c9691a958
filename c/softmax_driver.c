/* Portable orchestration of the softmax kernels: pooled statistics, choice of
 * the quantization range, the per-row exponent table, and the row loop. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softmax_common.h"

/* A range narrower than this (degenerate rows: constant, or denormal spread)
 * is widened to it, so the scale stays finite; every entry then gets the top
 * code.  The Python oracle applies the same rule. */
#define EXAQ_MIN_RANGE 5.421010862427522e-20 /* 2^-64 */

/* count, mean and sum of squared deviations of t = x - max, merged row by row
 * in row order (Chan et al.), so the result does not depend on the backend */
typedef struct {
    double count, mean, m2, min;
    int64_t invalid_rows;
} pooled_moments;

typedef struct {
    int state; /* ROW_LIVE, ROW_INVALID (output NaN) or ROW_EMPTY (nothing unmasked) */
    float max, min;
    double count, mean, m2; /* of t = x - max over unmasked entries */
} row_summary;

enum { ROW_LIVE = 0, ROW_INVALID = 1, ROW_EMPTY = 2 };

static double lanes_total(const double lanes[EXAQ_LANES]) {
    double total = 0.0;
    for (int l = 0; l < EXAQ_LANES; ++l) total += lanes[l];
    return total;
}

/* first entry that is not masked: a value of the row to centre the float sums on */
static float pilot_of(const float *row, size_t n) {
    for (size_t j = 0; j < n; ++j)
        if (!exaq_is_masked(row[j])) return exaq_is_invalid(row[j]) ? 0.0f : row[j];
    return 0.0f;
}

static void summarize_row(const exaq_backend *be, const float *row, size_t n, row_summary *out) {
    exaq_row_stats s;
    const float pilot = pilot_of(row, n);
    be->softmax->row_stats(row, n, pilot, &s);
    const int finite = isfinite(s.sum) && isfinite(s.sumsq);
    int invalid = 0;
    if (!finite) be->softmax->row_max(row, n, &invalid); /* NaN/+inf, or only overflow? */
    out->state = invalid ? ROW_INVALID : s.unmasked == 0 ? ROW_EMPTY : ROW_LIVE;
    if (out->state != ROW_LIVE) return;
    out->max = s.max;
    out->min = s.min;
    out->count = (double)s.unmasked;
    if (finite) {
        const double mean_d = s.sum / out->count;
        const double m2 = s.sumsq - s.sum * mean_d;
        out->mean = mean_d + ((double)pilot - (double)s.max);
        out->m2 = m2 > 0 ? m2 : 0.0;
    } else { /* huge magnitudes overflowed the float sums: redo in double */
        double sum[EXAQ_LANES] = {0}, sumsq[EXAQ_LANES] = {0};
        be->softmax->moments(row, n, s.max, sum, sumsq);
        const double total = lanes_total(sum);
        out->mean = total / out->count;
        const double m2 = lanes_total(sumsq) - total * out->mean;
        out->m2 = m2 > 0 ? m2 : 0.0;
    }
}

static void pool_add(pooled_moments *pm, const row_summary *r) {
    const double count = pm->count + r->count;
    const double delta = r->mean - pm->mean;
    pm->mean += delta * (r->count / count);
    pm->m2 += r->m2 + delta * delta * (pm->count * r->count / count);
    pm->count = count;
    const double lo_row = (double)r->min - (double)r->max;
    if (lo_row < pm->min) pm->min = lo_row;
}

static double sigma_of(double count, double m2) {
    return count >= 2 ? sqrt(m2 / (count - 1.0)) : 0.0;
}

/* Pass 1 over the call: row maxima into `maxima` (NaN for invalid rows, -inf
 * for fully masked ones) and the pooled moments of t over the live rows. */
static void pool_rows(const exaq_backend *be, const float *x, size_t rows, size_t n,
                      ptrdiff_t xs, float *maxima, pooled_moments *pm) {
    pm->count = pm->mean = pm->m2 = 0.0;
    pm->min = INFINITY;
    pm->invalid_rows = 0;
    for (size_t r = 0; r < rows; ++r) {
        row_summary s;
        summarize_row(be, x + (ptrdiff_t)r * xs, n, &s);
        maxima[r] = s.state == ROW_INVALID ? NAN : s.state == ROW_EMPTY ? -INFINITY : s.max;
        if (s.state == ROW_INVALID) ++pm->invalid_rows;
        if (s.state == ROW_LIVE) pool_add(pm, &s);
    }
}

static int row_state_of_max(float row_max) {
    return row_max != row_max ? ROW_INVALID : row_max == -INFINITY ? ROW_EMPTY : ROW_LIVE;
}

static double pool_abs_deviation(const exaq_backend *be, const float *x, size_t rows, size_t n,
                                 ptrdiff_t xs, const float *maxima, double center, double count) {
    double acc[EXAQ_LANES] = {0};
    if (count <= 0) return 0.0;
    for (size_t r = 0; r < rows; ++r)
        if (row_state_of_max(maxima[r]) == ROW_LIVE)
            be->softmax->abs_deviation(x + (ptrdiff_t)r * xs, n, maxima[r], center, acc);
    return lanes_total(acc) / count;
}

/* lo made finite and at least EXAQ_MIN_RANGE wide */
static float finish_lo(double lo) {
    if (!(lo < -EXAQ_MIN_RANGE)) lo = -EXAQ_MIN_RANGE; /* also NaN */
    if (lo < -FLT_MAX) lo = -FLT_MAX;
    return (float)lo;
}

/* lo = max(observed min, a*spread + c) */
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

static int uses_pooled_range(const exaq_params *p) {
    return p->clip == EXAQ_CLIP_GAUSS || p->clip == EXAQ_CLIP_LAPLACE || p->clip == EXAQ_CLIP_NONE;
}

/* The range shared by every row of the call (pooled modes fill `maxima`). */
static float shared_lo(const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t xs, const exaq_params *p, float *maxima) {
    if (p->clip == EXAQ_CLIP_STATIC) return finish_lo(p->static_lo);
    if (!uses_pooled_range(p)) return NAN;
    pooled_moments pm;
    pool_rows(be, x, rows, n, xs, maxima, &pm);
    if (p->clip == EXAQ_CLIP_NONE) return finish_lo(pm.min);
    if (p->clip == EXAQ_CLIP_GAUSS) return law_lo(p, sigma_of(pm.count, pm.m2), pm.min);
    return law_lo(p, pool_abs_deviation(be, x, rows, n, xs, maxima, pm.mean, pm.count), pm.min);
}

/* Fills the row's quantizer; returns its ROW_* state. */
static int prepare_row(const exaq_backend *be, const float *row, size_t n, const exaq_params *p,
                       float lo, const float *pooled_max, exaq_quantizer *q) {
    float row_max;
    if (pooled_max) {
        row_max = *pooled_max;
    } else if (p->clip == EXAQ_CLIP_ROW) {
        row_summary s;
        summarize_row(be, row, n, &s);
        if (s.state != ROW_LIVE) return s.state;
        row_max = s.max;
        lo = law_lo(p, sigma_of(s.count, s.m2), (double)s.min - (double)s.max);
    } else {
        int invalid;
        row_max = be->softmax->row_max(row, n, &invalid);
        if (invalid) return ROW_INVALID;
    }
    const int state = row_state_of_max(row_max);
    if (state != ROW_LIVE) return state;
    q->shift = row_max;
    q->lo = lo;
    q->levels = (1 << p->bits) - 1;
    q->may_mask = 1;
    q->scale = (float)q->levels / -lo;
    q->offset = -lo * q->scale;
    return ROW_LIVE;
}

/* table[k] = exp(dequantized code k) / (sum over the row's codes), from exact counts */
static void probability_table(const int64_t counts[EXAQ_MAX_CODES], const exaq_quantizer *q,
                              exaq_floor_mode floor, float table[EXAQ_MAX_CODES]) {
    double e[EXAQ_MAX_CODES], total = 0.0;
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

typedef void (*row_sink)(const exaq_backend *be, size_t r, size_t n, int state, const uint8_t *codes,
                         const float table[EXAQ_MAX_CODES], void *ctx);

/* Range selection, then every row quantized and tabulated, handed to `sink`. */
static int quantize_rows(const exaq_backend *be, const float *x, size_t rows, size_t n,
                         ptrdiff_t xs, const exaq_params *p, float *maxima, float *lo_out,
                         row_sink sink, void *ctx) {
    if (!params_valid(p)) return -1;
    if (rows == 0 || n == 0) return 0;
    uint8_t *codes = (uint8_t *)malloc(n);
    if (!codes) return -2;
    const float lo = shared_lo(be, x, rows, n, xs, p, maxima);
    const int pooled = uses_pooled_range(p);
    for (size_t r = 0; r < rows; ++r) {
        const float *row = x + (ptrdiff_t)r * xs;
        exaq_quantizer q;
        const int state = prepare_row(be, row, n, p, lo, pooled ? maxima + r : NULL, &q);
        if (lo_out) lo_out[r] = state == ROW_LIVE ? q.lo : NAN;
        float table[EXAQ_MAX_CODES];
        if (state == ROW_LIVE) {
            int64_t counts[EXAQ_MAX_CODES] = {0};
            be->softmax->quantize_count(row, n, &q, codes, counts);
            probability_table(counts, &q, p->floor, table);
        }
        sink(be, r, n, state, codes, table, ctx);
    }
    free(codes);
    return 0;
}

typedef struct {
    float *y;
    ptrdiff_t ys;
} prob_sink_ctx;

static void write_probabilities(const exaq_backend *be, size_t r, size_t n, int state,
                                const uint8_t *codes, const float table[EXAQ_MAX_CODES], void *ctx) {
    const prob_sink_ctx *c = (const prob_sink_ctx *)ctx;
    float *out = c->y + (ptrdiff_t)r * c->ys;
    if (state == ROW_LIVE)
        be->softmax->expand(codes, n, table, out);
    else
        fill(out, n, state == ROW_INVALID ? NAN : 0.0f);
}

int exaq_softmax_quantized(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t xs, float *y, ptrdiff_t ys, const exaq_params *p,
                           float *maxima, float *lo_out) {
    prob_sink_ctx ctx = {y, ys};
    return quantize_rows(be, x, rows, n, xs, p, maxima, lo_out, write_probabilities, &ctx);
}

typedef struct {
    uint8_t *codes;
    ptrdiff_t cs;
    float *tables;
    int ncodes;
} code_sink_ctx;

static void write_codes(const exaq_backend *be, size_t r, size_t n, int state,
                        const uint8_t *codes, const float table[EXAQ_MAX_CODES], void *ctx) {
    (void)be;
    const code_sink_ctx *c = (const code_sink_ctx *)ctx;
    uint8_t *out = c->codes + (ptrdiff_t)r * c->cs;
    for (size_t j = 0; j < n; ++j)
        out[j] = (state == ROW_LIVE && codes[j] != EXAQ_MASKED_CODE) ? codes[j] : 0;
    if (c->tables)
        for (int k = 0; k < c->ncodes; ++k)
            c->tables[r * (size_t)c->ncodes + k] =
                state == ROW_LIVE ? table[k] : state == ROW_INVALID ? NAN : 0.0f;
}

int exaq_quantize_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t xs, uint8_t *codes, ptrdiff_t cs, const exaq_params *p,
                        float *maxima, float *lo_out, float *tables) {
    code_sink_ctx ctx = {codes, cs, tables, 1 << p->bits};
    if (n == 0 && params_valid(p)) { /* rows of nothing: empty tables */
        for (size_t r = 0; r < rows; ++r) {
            if (lo_out) lo_out[r] = NAN;
            for (int k = 0; tables && k < ctx.ncodes; ++k) tables[r * (size_t)ctx.ncodes + k] = 0.0f;
        }
        return 0;
    }
    return quantize_rows(be, x, rows, n, xs, p, maxima, lo_out, write_codes, &ctx);
}

int exaq_softmax_exact(const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t xs, float *y, ptrdiff_t ys) {
    for (size_t r = 0; r < rows && n; ++r) {
        const float *row = x + (ptrdiff_t)r * xs;
        float *out = y + (ptrdiff_t)r * ys;
        int invalid;
        const float row_max = be->softmax->row_max(row, n, &invalid);
        if (invalid || row_max == -INFINITY) {
            fill(out, n, invalid ? NAN : 0.0f);
            continue;
        }
        const double total = be->softmax->exp_store_sum(row, n, row_max, out);
        be->softmax->scale(out, n, (float)(1.0 / total));
    }
    return 0;
}

void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                      ptrdiff_t xs, float *maxima, exaq_call_stats *out) {
    pooled_moments pm = {0, 0, 0, INFINITY, 0};
    if (rows && n) pool_rows(be, x, rows, n, xs, maxima, &pm);
    const int any = pm.count > 0;
    out->count = (int64_t)pm.count;
    out->mean = any ? pm.mean : NAN;
    out->sigma = any ? sigma_of(pm.count, pm.m2) : NAN;
    out->min = any ? pm.min : NAN;
    out->mean_abs_dev = any ? pool_abs_deviation(be, x, rows, n, xs, maxima, pm.mean, pm.count) : NAN;
    out->invalid_rows = pm.invalid_rows;
}

/* ---- fused packed output: codes are packed in the sink, no float probability is written ---- */

typedef struct {
    uint8_t *packed;
    ptrdiff_t ps;
    float *tables;
    int64_t *lengths;
    uint8_t *maskbits;
    ptrdiff_t ms;
    int bits, ncodes;
    int64_t interior;
} packed_sink_ctx;

/* 1 + index of the last entry whose mask bit is clear (0 if none) */
static size_t valid_length(const uint8_t *maskbits, size_t n) {
    size_t len = n;
    while (len % 8 && (maskbits[(len - 1) / 8] >> ((len - 1) % 8) & 1)) --len;
    if (len % 8) return len;
    while (len >= 8 && maskbits[len / 8 - 1] == 0xFF) len -= 8;
    while (len && (maskbits[(len - 1) / 8] >> ((len - 1) % 8) & 1)) --len;
    return len;
}

/* any mask bit set among the first len entries */
static int any_masked_before(const uint8_t *maskbits, size_t len) {
    const size_t whole = len / 8;
    uint8_t any = 0;
    for (size_t b = 0; b < whole; ++b) any |= maskbits[b];
    if (len % 8) any |= (uint8_t)(maskbits[whole] & ((1u << (len % 8)) - 1u));
    return any != 0;
}

static void write_packed(const exaq_backend *be, size_t r, size_t n, int state, const uint8_t *codes,
                         const float table[EXAQ_MAX_CODES], void *ctx) {
    packed_sink_ctx *c = (packed_sink_ctx *)ctx;
    uint8_t *out = c->packed + (ptrdiff_t)r * c->ps, *mask = c->maskbits + (ptrdiff_t)r * c->ms;
    const size_t mbytes = EXAQ_MASK_BYTES(n);
    size_t len;
    if (state == ROW_LIVE) {
        be->softmax->packed->pack(codes, n, c->bits, out, mask);
        len = valid_length(mask, n);
        if (any_masked_before(mask, len)) ++c->interior;
    } else {
        memset(out, 0, EXAQ_PACKED_BYTES(n, c->bits));
        memset(mask, state == ROW_EMPTY ? 0xFF : 0, mbytes);
        if (state == ROW_EMPTY && n % 8) mask[mbytes - 1] = (uint8_t)((1u << (n % 8)) - 1u);
        len = state == ROW_EMPTY ? 0 : n;
    }
    c->lengths[r] = (int64_t)len;
    for (int k = 0; k < c->ncodes; ++k)
        c->tables[r * (size_t)c->ncodes + k] =
            state == ROW_LIVE ? table[k] : state == ROW_INVALID ? NAN : 0.0f;
}

int exaq_softmax_packed(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t xs, const exaq_params *p, float *maxima, float *lo_out,
                        uint8_t *packed, ptrdiff_t ps, float *tables, int64_t *lengths,
                        uint8_t *maskbits, ptrdiff_t ms, int64_t *interior_rows) {
    if (!params_valid(p)) return -1;
    packed_sink_ctx ctx = {packed, ps, tables, lengths, maskbits, ms, p->bits, 1 << p->bits, 0};
    *interior_rows = 0;
    if (n == 0) { /* rows of nothing */
        for (size_t r = 0; r < rows; ++r) {
            if (lo_out) lo_out[r] = NAN;
            lengths[r] = 0;
            for (int k = 0; k < ctx.ncodes; ++k) tables[r * (size_t)ctx.ncodes + k] = 0.0f;
        }
        return 0;
    }
    const int rc = quantize_rows(be, x, rows, n, xs, p, maxima, lo_out, write_packed, &ctx);
    *interior_rows = ctx.interior;
    return rc;
}

/* ---- row loops over the packed kernels of `be` (the Python layer's entry points) ---- */

void exaq_pack_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n, ptrdiff_t cs,
                    int bits, uint8_t *packed, ptrdiff_t ps, uint8_t *maskbits, ptrdiff_t ms) {
    for (size_t r = 0; r < rows; ++r)
        be->softmax->packed->pack(codes + (ptrdiff_t)r * cs, n, bits, packed + (ptrdiff_t)r * ps,
                                  maskbits ? maskbits + (ptrdiff_t)r * ms : NULL);
}

void exaq_unpack_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n,
                      ptrdiff_t ps, int bits, uint8_t *codes, ptrdiff_t cs) {
    for (size_t r = 0; r < rows; ++r)
        be->softmax->packed->unpack(packed + (ptrdiff_t)r * ps, n, bits, codes + (ptrdiff_t)r * cs);
}

void exaq_lutsum_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, ptrdiff_t ps,
                      size_t n, const int64_t *lengths, int bits, const float *luts,
                      ptrdiff_t lut_stride, double *sums) {
    if (be->softmax->packed == &exaq_packed_scalar && lut_stride == 0) { /* one shared table */
        exaq_lutsum_table_rows(packed, rows, ps, n, lengths, bits, luts, sums);
        return;
    }
    for (size_t r = 0; r < rows; ++r) {
        size_t len = n;
        if (lengths) len = lengths[r] < 0 ? 0 : (size_t)lengths[r] < n ? (size_t)lengths[r] : n;
        sums[r] = be->softmax->packed->lutsum(packed + (ptrdiff_t)r * ps, len, bits,
                                              luts + (ptrdiff_t)r * lut_stride);
    }
}

void exaq_lutexp_sum_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n,
                          ptrdiff_t cs, const float *luts, ptrdiff_t lut_stride, double *sums) {
    for (size_t r = 0; r < rows; ++r)
        sums[r] = be->softmax->packed->lutexp_sum(codes + (ptrdiff_t)r * cs, n,
                                                  luts + (ptrdiff_t)r * lut_stride);
}

/* float sum of exp(x - rowmax) per row (exponents stored to `y`, one row of n floats) */
void exaq_exp_sum_rows(const exaq_backend *be, const float *x, size_t rows, size_t n, ptrdiff_t xs,
                       const float *shifts, float *y, double *sums) {
    for (size_t r = 0; r < rows; ++r)
        sums[r] = be->softmax->exp_store_sum(x + (ptrdiff_t)r * xs, n, shifts[r], y);
}
