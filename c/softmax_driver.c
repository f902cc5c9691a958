/* Portable orchestration of the softmax kernels: pooled statistics, choice of
 * the quantization range, the per-row exponent table, and the row loop. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softmax_common.h"
#include "threadpool.h"

/* A range narrower than this (degenerate rows: constant, or denormal spread)
 * is widened to it, so the scale stays finite; every entry then gets the top
 * code.  The Python oracle applies the same rule. */
#define EXAQ_MIN_RANGE 5.421010862427522e-20 /* 2^-64 */

/* Pooled moments of t = x - max over the live rows of a call, as plain sums in
 * row order (no division on the path from one row to the next):
 * m2 = sum of the rows' m2 + sum n_r mean_r^2 - (sum n_r mean_r)^2 / count.
 * The same on every backend, as the rows' moments are. */
typedef struct {
    double count, sum, m2_rows, sq_means, min;
    int64_t invalid_rows;
    double mean, m2; /* filled by pool_finish */
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

/* Float sums of x itself lose the spread when the mean dwarfs it
 * (cancellation in sumsq - sum * mean); such rows are summed again around one
 * of their values.  The test reads only the lane sums, which every backend
 * computes bit for bit, so all take the same branch. */
static int cancels(const exaq_row_stats *s) {
    /* m2 = sumsq - sum^2 / count < sumsq / 4, without a division */
    return !(0.75 * s->sumsq * (double)s->unmasked >= s->sum * s->sum);
}

/* with_min = 0 leaves min NaN (the pass is cheaper without it).  A row whose
 * ends are not masked is first summed without the mask test (-inf would show
 * as non-finite sums, and the row is summed again with it). */
static int stats_flags(int with_min, int skip_mask_test) {
    return (with_min ? EXAQ_STATS_MIN : 0) | (skip_mask_test ? EXAQ_STATS_NO_MASK : 0);
}

/* one past the row's last unmasked entry, by the backend's kernel */
static size_t live_end_of(const exaq_backend *be, const float *row, size_t n) {
    return be->softmax->live_end ? be->softmax->live_end(row, n) : exaq_softmax_scalar.live_end(row, n);
}

static int ends_unmasked(const float *row, size_t n) {
    return !exaq_is_masked(row[0]) && !exaq_is_masked(row[n - 1]);
}

/* The row's summary from its first statistics pass `first` (made with
 * `flags`), passing over the row again where those sums cannot serve. */
static void finish_summary_again(const exaq_backend *be, const float *row, size_t n, int flags,
                                 const exaq_row_stats *first, row_summary *out) {
    float pilot = 0.0f;
    const exaq_row_stats *s = first;
    exaq_row_stats again; /* a second pass's, where one is needed */
    int finite = isfinite(s->sum) && isfinite(s->sumsq);
    if (!finite && (flags & EXAQ_STATS_NO_MASK)) {
        flags &= ~EXAQ_STATS_NO_MASK;
        be->softmax->row_stats(row, n, pilot, flags, &again);
        s = &again;
        finite = isfinite(s->sum) && isfinite(s->sumsq);
    }
    if (finite && s->unmasked > 0 && cancels(s)) {
        pilot = pilot_of(row, n);
        be->softmax->row_stats(row, n, pilot, flags, &again);
        s = &again;
        finite = isfinite(s->sum) && isfinite(s->sumsq);
    }
    int specials = 0;
    if (!finite) be->softmax->row_max(row, n, &specials); /* NaN/+inf, or only overflow? */
    const int invalid = specials & EXAQ_ROW_HAS_INVALID;
    out->state = invalid ? ROW_INVALID : s->unmasked == 0 ? ROW_EMPTY : ROW_LIVE;
    if (out->state != ROW_LIVE) return;
    out->max = s->max;
    out->min = s->min;
    out->count = (double)s->unmasked;
    if (finite) {
        const double mean_d = s->sum / out->count;
        const double m2 = s->sumsq - s->sum * mean_d;
        out->mean = mean_d + ((double)pilot - (double)s->max);
        out->m2 = m2 > 0 ? m2 : 0.0;
    } else { /* huge magnitudes overflowed the float sums: redo in double */
        double sum[EXAQ_LANES] = {0}, sumsq[EXAQ_LANES] = {0};
        be->softmax->moments(row, n, s->max, sum, sumsq);
        const double total = lanes_total(sum);
        out->mean = total / out->count;
        const double m2 = lanes_total(sumsq) - total * out->mean;
        out->m2 = m2 > 0 ? m2 : 0.0;
    }
}

/* finish_summary_again's result where the first sums serve (finite, no
 * cancellation, something unmasked: nearly every row), inline: for 128-key
 * rows the call and its rare cases cost a third of the kernel's time */
static inline void finish_summary(const exaq_backend *be, const float *row, size_t n, int flags,
                                  const exaq_row_stats *s, row_summary *out) {
    /* sumsq >= 0, and neither sum can reach the double range's end: the sum
     * is finite exactly when both are */
    if (!(s->unmasked > 0 && isfinite(s->sum + s->sumsq) && !cancels(s))) {
        finish_summary_again(be, row, n, flags, s, out);
        return;
    }
    const float pilot = 0.0f; /* the first pass is never centred */
    out->state = ROW_LIVE;
    out->max = s->max;
    out->min = s->min;
    out->count = (double)s->unmasked;
    const double mean_d = s->sum / out->count;
    const double m2 = s->sumsq - s->sum * mean_d;
    out->mean = mean_d + ((double)pilot - (double)s->max);
    out->m2 = m2 > 0 ? m2 : 0.0;
}

/* *masked_from: exaq_row_stats' */
static void summarize_row(const exaq_backend *be, const float *row, size_t n, int with_min,
                          row_summary *out, size_t *masked_from) {
    const int flags = stats_flags(with_min, ends_unmasked(row, n));
    exaq_row_stats s;
    be->softmax->row_stats(row, n, 0.0f, flags, &s);
    *masked_from = s.masked_from;
    finish_summary(be, row, n, flags, &s, out);
}

static void pool_add(pooled_moments *pm, const row_summary *r) {
    pm->count += r->count;
    pm->sum += r->count * r->mean;
    pm->m2_rows += r->m2;
    pm->sq_means += r->count * r->mean * r->mean;
    const double lo_row = (double)r->min - (double)r->max; /* NaN without the min */
    if (lo_row < pm->min) pm->min = lo_row;
}

static void pool_finish(pooled_moments *pm) {
    pm->mean = pm->count > 0 ? pm->sum / pm->count : 0.0;
    const double m2 = pm->m2_rows + (pm->sq_means - pm->sum * pm->mean);
    pm->m2 = m2 > 0 ? m2 : 0.0;
}

static double sigma_of(double count, double m2) {
    return count >= 2 ? sqrt(m2 / (count - 1.0)) : 0.0;
}

/* Rows go through the kernels EXAQ_ROW_GROUP at a time before their
 * bookkeeping: the scalar work of a row (divisions, table) then overlaps the
 * other rows' instead of stalling between two kernel loops. */
#define EXAQ_ROW_GROUP 8
#define EXAQ_CODE_GROUP_BYTES 4096

typedef struct {
    const exaq_backend *be;
    const float *x;
    size_t n;
    ptrdiff_t xs;
    int with_min;
    float *maxima;
    uint8_t *unmasked_rows; /* 1: no -inf before the row's live end */
    size_t *live_ends;      /* one past each row's last unmasked entry */
    row_summary *summaries; /* NULL: pool each row at once into pm (one thread) */
    pooled_moments *pm;
} pool_job;

/* a row's summary into the pooled moments (live rows) or the invalid count */
static void pool_summary(pooled_moments *pm, const row_summary *s) {
    if (s->state == ROW_INVALID) ++pm->invalid_rows;
    if (s->state == ROW_LIVE) pool_add(pm, s);
}

/* Rows [begin, end) of pass 1: maxima, which rows hold no -inf, and each
 * row's moments (pooled at once, or kept for pooling in row order). */
static void summarize_rows(void *ctx, size_t begin, size_t end) {
    const pool_job *job = (const pool_job *)ctx;
    const size_t n = job->n;
    const exaq_backend *be = job->be;
    int unmasked_before = 1;
    for (size_t r0 = begin; r0 < end; r0 += EXAQ_ROW_GROUP) {
        const size_t group = end - r0 < EXAQ_ROW_GROUP ? end - r0 : EXAQ_ROW_GROUP;
        exaq_row_stats stats[EXAQ_ROW_GROUP];
        /* The rows of a call are masked alike (causal, padding) or not at all:
         * a group skips the mask test when the previous one had no -inf (the
         * first looks at its first row's ends).  Peeking at every row's ends
         * would wait on a cache miss per row.  A wrong guess costs a pass,
         * never a different result.  The rows are read front to back: a
         * kernel may stop at a row's final run of -inf once it has seen that
         * run go on to the row's end (exaq_row_stats.masked_from); finding
         * the run from the row's end first would break the forward stream
         * the prefetchers follow (measured: pass 1 of a 32 MB causal call
         * 8.5 -> 13-14 ms). */
        const float *first = job->x + (ptrdiff_t)r0 * job->xs;
        const int flags = stats_flags(job->with_min, r0 == begin ? ends_unmasked(first, n) : unmasked_before);
        be->softmax->row_stats_rows(first, group, n, job->xs, flags, stats);
        unmasked_before = 1;
        for (size_t g = 0; g < group; ++g) {
            const size_t r = r0 + g;
            const float *row = first + (ptrdiff_t)g * job->xs;
            row_summary s;
            finish_summary(be, row, n, flags, &stats[g], &s);
            const int unmasked = s.state == ROW_LIVE && s.count == (double)n;
            if (!unmasked) unmasked_before = 0;
            job->maxima[r] = s.state == ROW_INVALID ? NAN : s.state == ROW_EMPTY ? -INFINITY : s.max;
            if (job->unmasked_rows) {
                /* the row is still in L1: where does its final run of -inf start? */
                const size_t live = s.state == ROW_LIVE && !unmasked ? live_end_of(be, row, stats[g].masked_from) : n;
                job->live_ends[r] = live;
                job->unmasked_rows[r] = (uint8_t)(s.state == ROW_LIVE && s.count == (double)live);
            }
            if (job->summaries) job->summaries[r] = s;
            else pool_summary(job->pm, &s);
        }
    }
}

/* rows a parallel chunk takes: whole row groups, about four chunks a thread */
static size_t row_grain(size_t rows, int threads) {
    size_t grain = rows / (4 * (size_t)(threads > 1 ? threads : 1));
    grain = (grain + EXAQ_ROW_GROUP - 1) / EXAQ_ROW_GROUP * EXAQ_ROW_GROUP;
    return grain < EXAQ_ROW_GROUP ? EXAQ_ROW_GROUP : grain;
}

/* Pass 1 over the call: row maxima into `maxima` (NaN for invalid rows, -inf
 * for fully masked ones) and the pooled moments of t over the live rows,
 * pooled in row order whatever the thread count.  -2 if out of memory. */
static int pool_rows(const exaq_backend *be, const float *x, size_t rows, size_t n, ptrdiff_t xs,
                     int with_min, float *maxima, uint8_t *unmasked_rows, size_t *live_ends, pooled_moments *pm,
                     int threads) {
    memset(pm, 0, sizeof *pm);
    pm->min = INFINITY;
    pool_job job = {be, x, n, xs, with_min, maxima, unmasked_rows, live_ends, NULL, pm};
    if (threads > 1 && rows > EXAQ_ROW_GROUP) {
        job.summaries = (row_summary *)malloc(rows * sizeof *job.summaries);
        if (!job.summaries) return -2;
        exaq_parallel_for(rows, row_grain(rows, threads), threads, summarize_rows, &job);
        for (size_t r = 0; r < rows; ++r) pool_summary(pm, job.summaries + r);
        free(job.summaries);
    } else {
        summarize_rows(&job, 0, rows);
    }
    pool_finish(pm);
    return 0;
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

/* Whether the pooled minimum of t is surely below c, from the moments alone:
 * t lies in [min, 0] with mean mu < 0 and population variance v, and
 * v <= (0 - mu)(mu - min) (Bhatia-Davis), so min <= mu + v/mu.  The margin
 * covers the rounding of the float sums. */
static int min_surely_below(const pooled_moments *pm, double c) {
    if (!(pm->count > 0 && pm->mean < 0)) return 0;
    const double bound = pm->mean + (pm->m2 / pm->count) / pm->mean;
    return bound - 1e-3 * bound < c;
}

/* the pooled minimum of t over the live rows, in a pass of its own */
static double pooled_min(const exaq_backend *be, const float *x, size_t rows, size_t n, ptrdiff_t xs,
                         const float *maxima) {
    double lo = INFINITY;
    for (size_t r = 0; r < rows; ++r) {
        if (!(maxima[r] > -INFINITY)) continue; /* invalid (NaN) or fully masked */
        exaq_row_stats s;
        be->softmax->row_stats(x + (ptrdiff_t)r * xs, n, 0.0f, EXAQ_STATS_MIN, &s);
        const double lo_row = (double)s.min - (double)maxima[r];
        if (lo_row < lo) lo = lo_row;
    }
    return lo;
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

/* The range shared by every row of the call into *lo (pooled modes fill
 * `maxima`); -2 if out of memory. */
static int shared_lo(const exaq_backend *be, const float *x, size_t rows, size_t n, ptrdiff_t xs,
                     const exaq_params *p, float *maxima, uint8_t *unmasked_rows, size_t *live_ends, float *lo) {
    if (p->clip == EXAQ_CLIP_STATIC) {
        *lo = finish_lo(p->static_lo);
        return 0;
    }
    *lo = NAN;
    if (!uses_pooled_range(p)) return 0;
    pooled_moments pm;
    if (pool_rows(be, x, rows, n, xs, p->clip == EXAQ_CLIP_NONE, maxima, unmasked_rows, live_ends, &pm,
                  p->threads) != 0)
        return -2;
    if (p->clip == EXAQ_CLIP_NONE) {
        *lo = finish_lo(pm.min);
        return 0;
    }
    const double spread = p->clip == EXAQ_CLIP_GAUSS
                              ? sigma_of(pm.count, pm.m2)
                              : pool_abs_deviation(be, x, rows, n, xs, maxima, pm.mean, pm.count);
    const double c = p->law_slope * spread + p->law_intercept;
    /* the minimum matters only when the clip lies below it */
    *lo = law_lo(p, spread, min_surely_below(&pm, c) ? -INFINITY : pooled_min(be, x, rows, n, xs, maxima));
    return 0;
}

void exaq_quantizer_init(exaq_quantizer *q, float shift, float lo, int levels, int may_mask) {
    q->lo = lo;
    q->levels = levels;
    q->scale = (float)levels / -lo;
    q->offset = -lo * q->scale;
    exaq_quantizer_reshift(q, shift, may_mask);
}

/* Fills the row's quantizer (q holds the previous row's, or levels 0) and
 * *live (one past the last unmasked entry: pass 2 reads no further; q->may_mask
 * then tells whether -inf lies before it); returns its ROW_* state.  `pooled`
 * holds pass 1's findings for the pooled modes. */
static int prepare_row(const exaq_backend *be, const float *row, size_t n, const exaq_params *p,
                       float lo, const float *pooled_max, int may_mask, size_t pooled_live, exaq_quantizer *q,
                       size_t *live) {
    float row_max;
    *live = n;
    if (pooled_max) {
        row_max = *pooled_max;
        *live = pooled_live;
    } else if (p->clip == EXAQ_CLIP_ROW) {
        row_summary s;
        size_t masked_from;
        summarize_row(be, row, n, 1, &s, &masked_from);
        if (s.state != ROW_LIVE) return s.state;
        row_max = s.max;
        lo = law_lo(p, sigma_of(s.count, s.m2), (double)s.min - (double)s.max);
        if (s.count != (double)n) *live = live_end_of(be, row, masked_from);
        may_mask = s.count != (double)*live;
    } else {
        int specials;
        row_max = be->softmax->row_max(row, n, &specials);
        if (specials & EXAQ_ROW_HAS_INVALID) return ROW_INVALID;
        may_mask = (specials & EXAQ_ROW_HAS_MASKED) != 0;
        /* a masked tail is skipped; the part before it may still hold -inf
         * (finding out would cost about what the mask test does) */
        if (may_mask && row_max > -INFINITY) *live = live_end_of(be, row, n);
    }
    const int state = row_state_of_max(row_max);
    if (state != ROW_LIVE) return state;
    const int levels = (1 << p->bits) - 1;
    if (q->levels == levels && q->lo == lo) /* the previous row's range: same scale */
        exaq_quantizer_reshift(q, row_max, may_mask);
    else
        exaq_quantizer_init(q, row_max, lo, levels, may_mask);
    return ROW_LIVE;
}

/* exp of the dequantized codes of range [lo, 0] (code levels is exactly t = 0) */
static void code_exponents(double lo, int levels, exaq_floor_mode floor, double e[EXAQ_MAX_CODES]) {
    const double step = -lo / levels;
    for (int k = 0; k <= levels; ++k)
        e[k] = k == levels ? 1.0 : (k == 0 && floor == EXAQ_FLOOR_ZERO) ? 0.0 : exp(lo + k * step);
}

/* one copy per bit width, so the loops over the codes unroll (the same adds
 * in the same order) */
static void probability_table(const int64_t *counts, const double e[EXAQ_MAX_CODES],
                              int levels, float table[EXAQ_MAX_CODES]) {
    if (levels == 3) exaq_probability_table(counts, e, 3, table);
    else if (levels == 7) exaq_probability_table(counts, e, 7, table);
    else exaq_probability_table(counts, e, levels, table);
}

/* The range of every row of a call: shared_lo's result, and for the pooled
 * modes the rows' maxima and which rows hold no -inf (from pass 1).  Read
 * only once made, so the rows can be quantized in parallel. */
typedef struct {
    int pooled;
    float lo;
    float *maxima;
    uint8_t *unmasked_rows; /* no -inf before the row's live end */
    size_t *live_ends;      /* one past each row's last unmasked entry */
} call_range;

/* Pass 1 where the mode needs it; -2 if out of memory (release with range_end) */
static int range_begin(call_range *cr, const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t xs, const exaq_params *p, float *maxima) {
    cr->pooled = uses_pooled_range(p);
    cr->maxima = maxima;
    cr->unmasked_rows = cr->pooled ? (uint8_t *)malloc(rows) : NULL;
    cr->live_ends = cr->pooled ? (size_t *)malloc(rows * sizeof *cr->live_ends) : NULL;
    if (cr->pooled && (!cr->unmasked_rows || !cr->live_ends)) return -2;
    return shared_lo(be, x, rows, n, xs, p, maxima, cr->unmasked_rows, cr->live_ends, &cr->lo);
}

/* Row r's quantizer into q (which holds the previous row's of the same
 * thread, or levels 0); returns the row's ROW_* state */
static int range_row(const call_range *cr, exaq_quantizer *q, const exaq_backend *be, const float *row, size_t r,
                     size_t n, const exaq_params *p, size_t *live) {
    return prepare_row(be, row, n, p, cr->lo, cr->pooled ? cr->maxima + r : NULL,
                       cr->pooled ? !cr->unmasked_rows[r] : 1, cr->pooled ? cr->live_ends[r] : n, q, live);
}

static void range_end(call_range *cr) {
    free(cr->unmasked_rows);
    free(cr->live_ends);
}

/* The code exponents of the last range tabulated (rows of a call mostly share one) */
typedef struct {
    float lo; /* NaN before the first row */
    double e[EXAQ_MAX_CODES];
} exponent_cache;

static void row_table(exponent_cache *c, float lo, int levels, exaq_floor_mode floor, const int64_t *counts,
                      float table[EXAQ_MAX_CODES]) {
    if (!(lo == c->lo)) {
        code_exponents(lo, levels, floor, c->e);
        c->lo = lo;
    }
    probability_table(counts, c->e, levels, table);
}

static void fill(float *y, size_t n, float v) {
    for (size_t j = 0; j < n; ++j) y[j] = v;
}

/* One quantized row as byte codes, handed to a sink */
typedef struct {
    int state;               /* ROW_*; the rest is set for ROW_LIVE */
    const uint8_t *codes;    /* byte codes, EXAQ_MASKED_CODE where masked */
    size_t live;             /* entries from here on are all masked */
    float table[EXAQ_MAX_CODES];
} coded_row;

typedef struct row_sink row_sink;
struct row_sink {
    void (*emit)(row_sink *sink, const exaq_backend *be, size_t r, size_t n, const coded_row *row);
};

/* What every thread of pass 2 reads: the call and its range */
typedef struct {
    const exaq_backend *be;
    const float *x;
    size_t n;
    ptrdiff_t xs;
    const exaq_params *p;
    const call_range *cr;
} call_rows;

/* Pass 2 to byte codes handed to a sink (read only, but `failed`) */
typedef struct {
    call_rows call;
    float *lo_out;
    row_sink *sink;
    /* not NULL: the float output, for groups that go through the backend's
     * fused 2-bit kernel (fused_group) */
    float *fused_y;
    ptrdiff_t fused_ys;
    int failed; /* atomic: a range could not get its code buffer */
} quantize_job;

/* Whether rows [r0, r0 + group) can go through a fused 2-bit kernel
 * (softmax2_rows, softmax_pack2_rows): a pooled pass 1 found each of them
 * live, with no -inf (no NaN or +inf, or its maximum would be NaN) */
static int clean_rows(const call_range *cr, size_t r0, size_t group, size_t n) {
    if (!cr->pooled) return 0;
    for (size_t r = r0; r < r0 + group; ++r)
        if (!cr->unmasked_rows[r] || cr->live_ends[r] != n || !(cr->maxima[r] > -INFINITY)) return 0;
    return 1;
}

/* clean_rows, but a row may end in a run of -inf (causal, padding): none
 * before its live end; softmax2_rows takes the live ends */
static int clean_before_tails(const call_range *cr, size_t r0, size_t group) {
    if (!cr->pooled) return 0;
    for (size_t r = r0; r < r0 + group; ++r)
        if (!cr->unmasked_rows[r] || !(cr->maxima[r] > -INFINITY)) return 0;
    return 1;
}

/* With a static clip (no pass 1): the maxima of rows [r0, r0 + group) into
 * `maxima` and whether every row is clean (no NaN, +inf or -inf) */
static int static_clean(const exaq_backend *be, const call_rows *call, size_t r0, size_t group, float *maxima) {
    for (size_t g = 0; g < group; ++g) {
        int specials;
        maxima[g] = be->softmax->row_max(call->x + (ptrdiff_t)(r0 + g) * call->xs, call->n, &specials);
        if (specials || !(maxima[g] > -INFINITY)) return 0;
    }
    return 1;
}

/* The quantizer (at any row's shift: the kernels reshift it) and code
 * exponents of the call's shared range [lo, 0] */
static void fused_range(const call_range *cr, float shift, exaq_floor_mode floor, exaq_quantizer *q,
                        exponent_cache *exponents) {
    if (!(q->levels == 3 && q->lo == cr->lo)) exaq_quantizer_init(q, shift, cr->lo, 3, 0);
    if (!(exponents->lo == cr->lo)) {
        code_exponents(cr->lo, 3, floor, exponents->e);
        exponents->lo = cr->lo;
    }
}

/* Long rows after a pooled pass 1 go last first: pass 1 ran forward, so the
 * rows it touched last are still in cache, and a forward sweep would evict
 * each row just before reading it when the call outgrows the cache.  Short
 * rows go forward: there the prefetchers, which follow a stream across rows
 * but lose it at every backward jump, matter more (Zen 3, 2-bit packed
 * output, one process A/B: 32 MB of 512-key rows 1.39x, 4096x128 1.14x
 * faster forward; 32x32768 1.05-1.1x faster backward; 256x2048 even).
 * Without pass 1 (static, per-row clip) nothing is in cache to reuse. */
#define EXAQ_BACKWARD_MIN_N 4096

static int pass2_backward(const call_rows *call) {
    return call->cr->pooled && call->n >= EXAQ_BACKWARD_MIN_N;
}

/* Rows [begin, end) quantized and tabulated, handed to the sink.  A group of
 * rows goes through the kernel before any of them is tabulated
 * (EXAQ_ROW_GROUP); byte codes wait in a buffer of one group, in L1. */
static void quantize_range(void *ctx, size_t begin, size_t end) {
    quantize_job *job = (quantize_job *)ctx;
    const call_rows *call = &job->call;
    const exaq_backend *be = call->be;
    const exaq_params *p = call->p;
    const size_t n = call->n;
    /* byte codes of a group must stay in L1 beside the rows streaming through it */
    const size_t byte_group = n >= EXAQ_CODE_GROUP_BYTES ? 1 : EXAQ_CODE_GROUP_BYTES / n;
    const size_t group_rows = byte_group > EXAQ_ROW_GROUP ? EXAQ_ROW_GROUP : byte_group;
    uint8_t *codes = (uint8_t *)malloc(group_rows * n); /* one group's codes */
    if (!codes) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    exaq_quantizer q;
    q.levels = 0;
    exponent_cache exponents = {NAN, {0}};
    const int ncodes = 1 << p->bits;
    const size_t groups = (end - begin + group_rows - 1) / group_rows;
    const int backward = pass2_backward(call);
    for (size_t step = 0; step < groups; ++step) {
        const size_t gi = backward ? groups - 1 - step : step;
        const size_t r0 = begin + gi * group_rows;
        const size_t group = end - r0 < group_rows ? end - r0 : group_rows;
        /* the rows' maxima for the fused kernel: pass 1's, or (static clip)
         * found here, the group then in L1 for either path */
        const float *shifts = NULL;
        const size_t *lives = NULL; /* NULL: every row live to its end */
        float group_max[EXAQ_ROW_GROUP];
        if (job->fused_y && clean_before_tails(call->cr, r0, group)) {
            shifts = call->cr->maxima + r0;
            lives = call->cr->live_ends + r0;
        } else if (job->fused_y && p->clip == EXAQ_CLIP_STATIC && static_clean(be, call, r0, group, group_max))
            shifts = group_max;
        if (shifts) {
            const call_range *cr = call->cr;
            fused_range(cr, shifts[0], p->floor, &q, &exponents);
            be->softmax->softmax2_rows(call->x + (ptrdiff_t)r0 * call->xs, group, n, call->xs, shifts, lives, &q,
                                       exponents.e, codes, job->fused_y + (ptrdiff_t)r0 * job->fused_ys,
                                       job->fused_ys);
            if (job->lo_out)
                for (size_t g = 0; g < group; ++g) job->lo_out[r0 + g] = q.lo;
            continue;
        }
        coded_row out[EXAQ_ROW_GROUP];
        int64_t counts[EXAQ_ROW_GROUP][EXAQ_MAX_CODES];
        float row_lo[EXAQ_ROW_GROUP];
        for (size_t g = 0; g < group; ++g) {
            const size_t r = r0 + g;
            const float *row = call->x + (ptrdiff_t)r * call->xs;
            out[g].codes = NULL;
            size_t live;
            out[g].state = range_row(call->cr, &q, be, row, r, n, p, &live);
            out[g].live = live;
            row_lo[g] = out[g].state == ROW_LIVE ? q.lo : NAN;
            if (job->lo_out) job->lo_out[r] = row_lo[g];
            if (out[g].state != ROW_LIVE) continue;
            for (int k = 0; k < ncodes; ++k) counts[g][k] = 0; /* memset here is a slow rep stos */
            out[g].codes = codes + g * n;
            be->softmax->quantize_count(row, live, &q, codes + g * n, counts[g]);
            if (live < n) memset(codes + g * n + live, EXAQ_MASKED_CODE, n - live); /* the masked tail, not read */
        }
        for (size_t g = 0; g < group; ++g) {
            if (out[g].state == ROW_LIVE)
                row_table(&exponents, row_lo[g], ncodes - 1, p->floor, counts[g], out[g].table);
            job->sink->emit(job->sink, be, r0 + g, n, &out[g]);
        }
    }
    free(codes);
}

/* Range selection, then every row quantized and tabulated, handed to `sink`,
 * rows split across p->threads threads. */
static int quantize_rows(const exaq_backend *be, const float *x, size_t rows, size_t n,
                         ptrdiff_t xs, const exaq_params *p, float *maxima, float *lo_out,
                         row_sink *sink, float *fused_y, ptrdiff_t fused_ys) {
    if (!params_valid(p)) return -1;
    if (rows == 0 || n == 0) return 0;
    call_range cr = {0}; /* range_end frees nothing if range_begin did not run */
    if (range_begin(&cr, be, x, rows, n, xs, p, maxima) != 0) {
        range_end(&cr);
        return -2;
    }
    quantize_job job = {{be, x, n, xs, p, &cr}, lo_out, sink, fused_y, fused_ys, 0};
    exaq_parallel_for(rows, row_grain(rows, p->threads), p->threads, quantize_range, &job);
    range_end(&cr);
    return job.failed ? -2 : 0;
}

typedef struct {
    row_sink base;
    float *y;
    ptrdiff_t ys;
} prob_sink;

/* Float output goes through byte codes even for 2 bits: expanding bytes is a
 * little cheaper than unpacking 2-bit codes, and both stay in L1. */
static void write_probabilities(row_sink *sink, const exaq_backend *be, size_t r, size_t n,
                                const coded_row *row) {
    const prob_sink *c = (const prob_sink *)sink;
    float *out = c->y + (ptrdiff_t)r * c->ys;
    if (row->state != ROW_LIVE)
        fill(out, n, row->state == ROW_INVALID ? NAN : 0.0f);
    else {
        be->softmax->expand(row->codes, row->live, row->table, out);
        if (row->live < n) memset(out + row->live, 0, (n - row->live) * sizeof *out); /* masked tail: +0.0f */
    }
}

int exaq_softmax_quantized(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t xs, float *y, ptrdiff_t ys, const exaq_params *p,
                           float *maxima, float *lo_out) {
    prob_sink sink = {{write_probabilities}, y, ys};
    /* 2 bits after a pooled pass 1 or with a static clip: clean rows through
     * the fused kernel */
    const int fused = p->bits == 2 && (uses_pooled_range(p) || p->clip == EXAQ_CLIP_STATIC) &&
                      be->softmax->softmax2_rows;
    return quantize_rows(be, x, rows, n, xs, p, maxima, lo_out, &sink.base, fused ? y : NULL, ys);
}

typedef struct {
    row_sink base;
    uint8_t *codes;
    ptrdiff_t cs;
    float *tables;
    int ncodes;
} code_sink;

static void write_codes(row_sink *sink, const exaq_backend *be, size_t r, size_t n, const coded_row *row) {
    (void)be;
    const code_sink *c = (const code_sink *)sink;
    uint8_t *out = c->codes + (ptrdiff_t)r * c->cs;
    const int live = row->state == ROW_LIVE;
    for (size_t j = 0; j < n; ++j) out[j] = (live && row->codes[j] != EXAQ_MASKED_CODE) ? row->codes[j] : 0;
    if (c->tables)
        for (int k = 0; k < c->ncodes; ++k)
            c->tables[r * (size_t)c->ncodes + k] =
                live ? row->table[k] : row->state == ROW_INVALID ? NAN : 0.0f;
}

int exaq_quantize_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t xs, uint8_t *codes, ptrdiff_t cs, const exaq_params *p,
                        float *maxima, float *lo_out, float *tables) {
    code_sink sink = {{write_codes}, codes, cs, tables, 1 << p->bits};
    if (n == 0 && params_valid(p)) { /* rows of nothing: empty tables */
        for (size_t r = 0; r < rows; ++r) {
            if (lo_out) lo_out[r] = NAN;
            for (int k = 0; tables && k < sink.ncodes; ++k) tables[r * (size_t)sink.ncodes + k] = 0.0f;
        }
        return 0;
    }
    return quantize_rows(be, x, rows, n, xs, p, maxima, lo_out, &sink.base, NULL, 0);
}

typedef struct {
    const exaq_backend *be;
    const float *x;
    size_t n;
    ptrdiff_t xs;
    float *y;
    ptrdiff_t ys;
} exact_job;

static void exact_range(void *ctx, size_t begin, size_t end) {
    const exact_job *job = (const exact_job *)ctx;
    const size_t n = job->n;
    for (size_t r = begin; r < end; ++r) {
        const float *row = job->x + (ptrdiff_t)r * job->xs;
        float *out = job->y + (ptrdiff_t)r * job->ys;
        int specials;
        const float row_max = job->be->softmax->row_max(row, n, &specials);
        const int invalid = specials & EXAQ_ROW_HAS_INVALID;
        if (invalid || row_max == -INFINITY) {
            fill(out, n, invalid ? NAN : 0.0f);
            continue;
        }
        /* a run of -inf at the row's end (causal, right padding) is 0, no exp */
        const size_t live = specials & EXAQ_ROW_HAS_MASKED ? live_end_of(job->be, row, n) : n;
        const double total = job->be->softmax->exp_store_sum(row, live, row_max, out);
        job->be->softmax->scale(out, live, (float)(1.0 / total));
        if (live < n) memset(out + live, 0, (n - live) * sizeof *out);
    }
}

int exaq_softmax_exact(const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t xs, float *y, ptrdiff_t ys, int threads) {
    if (rows == 0 || n == 0) return 0;
    exact_job job = {be, x, n, xs, y, ys};
    exaq_parallel_for(rows, row_grain(rows, threads), threads, exact_range, &job);
    return 0;
}

void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                      ptrdiff_t xs, float *maxima, exaq_call_stats *out) {
    pooled_moments pm;
    memset(&pm, 0, sizeof pm);
    if (rows && n) pool_rows(be, x, rows, n, xs, 1, maxima, NULL, NULL, &pm, 1); /* one thread: cannot fail */
    const int any = pm.count > 0;
    out->count = (int64_t)pm.count;
    out->mean = any ? pm.mean : NAN;
    out->sigma = any ? sigma_of(pm.count, pm.m2) : NAN;
    out->min = any ? pm.min : NAN;
    out->mean_abs_dev = any ? pool_abs_deviation(be, x, rows, n, xs, maxima, pm.mean, pm.count) : NAN;
    out->invalid_rows = pm.invalid_rows;
}

/* ---- fused packed output: no float probability is written ---- */

typedef struct {
    row_sink base;
    uint8_t *packed;
    ptrdiff_t ps;
    float *tables;
    int64_t *lengths;
    uint8_t *maskbits;
    ptrdiff_t ms;
    int bits, ncodes;
    int64_t interior;
} packed_sink;

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

/* Row r's length and table (its packed codes and bitmap are in place for a
 * live row; other rows are filled here, `table` NULL).  any_masked = 0: the
 * row has no masked entry. */
/* known_length: the row's length (one past its last unmasked entry) and
 * `interior` (whether -inf lies before it) as the caller found them, or
 * SIZE_MAX to read both off the bitmap */
static void finish_packed_row(packed_sink *c, size_t r, size_t n, int state, int any_masked, size_t known_length,
                              int interior, const float table[EXAQ_MAX_CODES]) {
    uint8_t *mask = c->maskbits + (ptrdiff_t)r * c->ms;
    size_t len;
    if (state == ROW_LIVE) {
        if (known_length == SIZE_MAX) {
            len = any_masked ? valid_length(mask, n) : n;
            interior = any_masked && any_masked_before(mask, len);
        } else {
            len = known_length;
        }
        if (interior) __atomic_fetch_add(&c->interior, 1, __ATOMIC_RELAXED);
    } else {
        const size_t mbytes = EXAQ_MASK_BYTES(n);
        memset(c->packed + (ptrdiff_t)r * c->ps, 0, EXAQ_PACKED_BYTES(n, c->bits));
        memset(mask, state == ROW_EMPTY ? 0xFF : 0, mbytes);
        if (state == ROW_EMPTY && n % 8) mask[mbytes - 1] = (uint8_t)((1u << (n % 8)) - 1u);
        len = state == ROW_EMPTY ? 0 : n;
    }
    c->lengths[r] = (int64_t)len;
    float *out = c->tables + r * (size_t)c->ncodes;
    for (int k = 0; k < c->ncodes; ++k)
        out[k] = state == ROW_LIVE ? table[k] : state == ROW_INVALID ? NAN : 0.0f;
}

/* 3 and 4 bits: byte codes packed here */
static void write_packed(row_sink *sink, const exaq_backend *be, size_t r, size_t n, const coded_row *row) {
    packed_sink *c = (packed_sink *)sink;
    if (row->state == ROW_LIVE)
        be->softmax->packed->pack(row->codes, n, c->bits, c->packed + (ptrdiff_t)r * c->ps,
                                  c->maskbits + (ptrdiff_t)r * c->ms);
    finish_packed_row(c, r, n, row->state, 1, SIZE_MAX, 0, row->table);
}

/* What the 2-bit loop keeps of a row between its kernel and its table */
typedef struct {
    int64_t counts[4];
    size_t length; /* one past the last unmasked entry */
    float lo;
    uint8_t state, interior, mask_written; /* interior: -inf before `length` */
    uint8_t tabled; /* a fused kernel wrote the row's table (and it has no -inf) */
} packed2_row;

/* 2 bits: the fused kernel packs each row where it belongs; the tables and
 * lengths follow in a loop of their own over the rows' counts, so nothing
 * but the kernels runs between two kernel calls.  A row without -inf leaves
 * its bitmap unwritten; once the bitmap is handed out (interior masks), those
 * rows are zeroed. */
typedef struct {
    call_rows call;
    packed_sink *sink;
    packed2_row *info;
    int fused; /* clean row groups through the backend's softmax_pack2_rows */
} packed2_job;

/* A 2-bit row whose entries from `live` on are all -inf, packed as the
 * kernel packs the whole row but without reading that tail: the whole 32-entry
 * blocks before `live` go through the kernel as they are (q->may_mask), the
 * block that holds `live` (or the row's end) with the mask test, and the rest
 * is written as the kernel writes masked entries (code 0, mask bit 1; padding
 * bits past n are 0).  Returns how many -inf lie before `live`. */
static size_t pack2_masked_tail(const exaq_backend *be, const float *row, size_t n, size_t live, exaq_quantizer *q,
                                uint8_t *packed, uint8_t *mask, int64_t counts[4]) {
    const size_t head = live / 32 * 32;
    const int head_may_mask = q->may_mask;
    size_t masked = 0; /* -inf entries the kernels saw */
    if (head) {
        masked = be->softmax->quantize_pack2(row, head, q, packed, mask, counts);
        if (!head_may_mask) memset(mask, 0, head / 8); /* the kernel leaves an unmasked bitmap unwritten */
    }
    const size_t edge = n - head < 32 ? n : head + 32;
    q->may_mask = 1;
    masked += be->softmax->quantize_pack2(row + head, edge - head, q, packed + head / 4, mask + head / 8, counts);
    q->may_mask = head_may_mask;
    if (edge < n) { /* edge is a multiple of 32: whole bytes from here */
        const size_t mask_bytes = EXAQ_MASK_BYTES(n);
        memset(packed + edge / 4, 0, EXAQ_PACKED_BYTES(n, 2) - edge / 4);
        memset(mask + edge / 8, 0xFF, mask_bytes - edge / 8);
        if (n % 8) mask[mask_bytes - 1] = (uint8_t)((1u << (n % 8)) - 1u);
    }
    return masked - (edge - live); /* the -inf entries before `live` */
}

/* Row r through the 2-bit packing kernel; q holds the previous row's quantizer */
static void packed2_row_kernel(const packed2_job *job, size_t r, exaq_quantizer *q) {
    const call_rows *call = &job->call;
    const packed_sink *c = job->sink;
    const float *row = call->x + (ptrdiff_t)r * call->xs;
    packed2_row *out = job->info + r;
    size_t live;
    out->tabled = 0;
    out->state = (uint8_t)range_row(call->cr, q, call->be, row, r, call->n, call->p, &live);
    out->lo = out->state == ROW_LIVE ? q->lo : NAN;
    if (out->state != ROW_LIVE) return;
    for (int k = 0; k < 4; ++k) out->counts[k] = 0; /* memset here is a slow rep stos */
    uint8_t *packed = c->packed + (ptrdiff_t)r * c->ps, *mask = c->maskbits + (ptrdiff_t)r * c->ms;
    out->length = live;
    if (live == call->n) { /* every masked entry lies before the last unmasked one */
        out->interior = call->be->softmax->quantize_pack2(row, call->n, q, packed, mask, out->counts) != 0;
        out->mask_written = (uint8_t)q->may_mask;
    } else {
        out->interior = pack2_masked_tail(call->be, row, call->n, live, q, packed, mask, out->counts) != 0;
        out->mask_written = 1;
    }
}

/* Rows [begin, end) through the 2-bit packing kernels: groups of clean rows
 * in one fused call (tables included), the others row by row */
static void packed2_range(void *ctx, size_t begin, size_t end) {
    const packed2_job *job = (const packed2_job *)ctx;
    const call_rows *call = &job->call;
    const packed_sink *c = job->sink;
    exaq_quantizer q;
    q.levels = 0;
    exponent_cache exponents = {NAN, {0}};
    const size_t groups = (end - begin + EXAQ_ROW_GROUP - 1) / EXAQ_ROW_GROUP;
    const int backward = pass2_backward(call); /* as quantize_range */
    for (size_t step = 0; step < groups; ++step) {
        const size_t gi = backward ? groups - 1 - step : step;
        const size_t r0 = begin + gi * EXAQ_ROW_GROUP;
        const size_t group = end - r0 < EXAQ_ROW_GROUP ? end - r0 : EXAQ_ROW_GROUP;
        if (job->fused && clean_rows(call->cr, r0, group, call->n)) {
            fused_range(call->cr, call->cr->maxima[r0], call->p->floor, &q, &exponents);
            call->be->softmax->softmax_pack2_rows(call->x + (ptrdiff_t)r0 * call->xs, group, call->n, call->xs,
                                                  call->cr->maxima + r0, &q, exponents.e,
                                                  c->packed + (ptrdiff_t)r0 * c->ps, c->ps,
                                                  c->tables + r0 * (size_t)c->ncodes);
            for (size_t r = r0; r < r0 + group; ++r) {
                packed2_row *out = job->info + r;
                out->state = ROW_LIVE;
                out->tabled = 1;
                out->lo = q.lo;
                out->length = call->n;
                out->interior = out->mask_written = 0;
            }
            continue;
        }
        for (size_t g = 0; g < group; ++g) packed2_row_kernel(job, backward ? r0 + group - 1 - g : r0 + g, &q);
    }
}

static int softmax_packed2(const exaq_backend *be, const float *x, size_t rows, size_t n, ptrdiff_t xs,
                           const exaq_params *p, float *maxima, float *lo_out, packed_sink *c) {
    packed2_row *info = (packed2_row *)malloc(rows * sizeof *info);
    call_range cr = {0}; /* range_end frees nothing if range_begin did not run */
    if (!info || range_begin(&cr, be, x, rows, n, xs, p, maxima) != 0) {
        free(info), range_end(&cr);
        return -2;
    }
    packed2_job job = {{be, x, n, xs, p, &cr}, c, info, be->softmax->softmax_pack2_rows != NULL};
    exaq_parallel_for(rows, row_grain(rows, p->threads), p->threads, packed2_range, &job);
    exponent_cache exponents = {NAN, {0}};
    for (size_t r = 0; r < rows; ++r) {
        const packed2_row *row = info + r;
        if (row->tabled) { /* live, no -inf, table in place */
            if (lo_out) lo_out[r] = row->lo;
            c->lengths[r] = (int64_t)n;
            continue;
        }
        float table[EXAQ_MAX_CODES];
        if (row->state == ROW_LIVE) row_table(&exponents, row->lo, 3, p->floor, row->counts, table);
        if (lo_out) lo_out[r] = row->lo;
        finish_packed_row(c, r, n, row->state, 1, row->length, row->interior, row->state == ROW_LIVE ? table : NULL);
    }
    if (c->interior) /* the bitmap is handed out: every row's */
        for (size_t r = 0; r < rows; ++r)
            if (info[r].state == ROW_LIVE && !info[r].mask_written)
                memset(c->maskbits + (ptrdiff_t)r * c->ms, 0, EXAQ_MASK_BYTES(n));
    free(info), range_end(&cr);
    return 0;
}

int exaq_softmax_packed(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t xs, const exaq_params *p, float *maxima, float *lo_out,
                        uint8_t *packed, ptrdiff_t ps, float *tables, int64_t *lengths,
                        uint8_t *maskbits, ptrdiff_t ms, int64_t *interior_rows) {
    if (!params_valid(p)) return -1;
    packed_sink sink = {{write_packed}, packed, ps, tables, lengths, maskbits, ms, p->bits, 1 << p->bits, 0};
    *interior_rows = 0;
    if (n == 0) { /* rows of nothing */
        for (size_t r = 0; r < rows; ++r) {
            if (lo_out) lo_out[r] = NAN;
            lengths[r] = 0;
            for (int k = 0; k < sink.ncodes; ++k) tables[r * (size_t)sink.ncodes + k] = 0.0f;
        }
        return 0;
    }
    if (rows == 0) return 0;
    const int rc = p->bits == 2 ? softmax_packed2(be, x, rows, n, xs, p, maxima, lo_out, &sink)
                                : quantize_rows(be, x, rows, n, xs, p, maxima, lo_out, &sink.base, NULL, 0);
    *interior_rows = sink.interior;
    return rc;
}

/* ---- row loops over the packed kernels of `be` (the Python layer's entry points) ---- */

/* the row loops' own argument check: a width the kernels have, buffers, an
 * input stride >= 0 (rows may repeat) and output rows that do not overlap (a
 * stride of one output row at least; out NULL: no output) */
static int rows_valid(int bits, size_t rows, size_t n, const void *in, ptrdiff_t in_stride, const void *out,
                      ptrdiff_t out_stride, size_t out_row) {
    if (bits < EXAQ_MIN_BITS || bits > EXAQ_MAX_BITS) return 0;
    if (rows == 0 || n == 0) return 1;
    if (!in || in_stride < 0) return 0;
    if (out_row && (!out || (rows > 1 && (out_stride < 0 || (size_t)out_stride < out_row)))) return 0;
    return 1;
}

int exaq_pack_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n, ptrdiff_t cs,
                   int bits, uint8_t *packed, ptrdiff_t ps, uint8_t *maskbits, ptrdiff_t ms) {
    if (!rows_valid(bits, rows, n, codes, cs, packed, ps, EXAQ_PACKED_BYTES(n, bits))) return -1;
    if (maskbits && rows > 1 && (ms < 0 || (size_t)ms < EXAQ_MASK_BYTES(n))) return -1;
    for (size_t r = 0; r < rows; ++r)
        be->softmax->packed->pack(codes + (ptrdiff_t)r * cs, n, bits, packed + (ptrdiff_t)r * ps,
                                  maskbits ? maskbits + (ptrdiff_t)r * ms : NULL);
    return 0;
}

int exaq_unpack_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n,
                     ptrdiff_t ps, int bits, uint8_t *codes, ptrdiff_t cs) {
    if (!rows_valid(bits, rows, n, packed, ps, codes, cs, n)) return -1;
    for (size_t r = 0; r < rows; ++r)
        be->softmax->packed->unpack(packed + (ptrdiff_t)r * ps, n, bits, codes + (ptrdiff_t)r * cs);
    return 0;
}

int exaq_expand_pack2_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n, ptrdiff_t ps,
                           const int64_t *lengths, const uint8_t *maskbits, ptrdiff_t ms, const float *tables,
                           float *y, ptrdiff_t ys) {
    if (!rows_valid(2, rows, n, packed, ps, y, ys, n) || (rows && n && (!lengths || !tables)) ||
        (maskbits && rows > 1 && (ms < 0 || (size_t)ms < EXAQ_MASK_BYTES(n))))
        return -1;
    if (n == 0) return 0;
    for (size_t r = 0; r < rows; ++r) {
        const uint8_t *row = packed + (ptrdiff_t)r * ps;
        const float *table = tables + 4 * r;
        float *out = y + (ptrdiff_t)r * ys;
        if (table[0] != table[0]) { /* NaN row: every entry its code's (NaN) probability */
            be->softmax->expand_pack2(row, NULL, n, table, out);
            continue;
        }
        const size_t len = lengths[r] < 0 ? 0 : (size_t)lengths[r] < n ? (size_t)lengths[r] : n;
        be->softmax->expand_pack2(row, maskbits ? maskbits + (ptrdiff_t)r * ms : NULL, len, table, out);
        if (len < n) memset(out + len, 0, (n - len) * sizeof *out);
    }
    return 0;
}

int exaq_lutsum_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, ptrdiff_t ps,
                     size_t n, const int64_t *lengths, int bits, const float *luts,
                     ptrdiff_t lut_stride, double *sums) {
    if (!rows_valid(bits, rows, n, packed, ps, NULL, 0, 0) || (rows && (!sums || !luts || lut_stride < 0)))
        return -1;
    if (be->softmax->packed->lutsum_by_table && lut_stride == 0) /* one shared table */
        return exaq_lutsum_table_rows(packed, rows, ps, n, lengths, bits, luts, sums);
    for (size_t r = 0; r < rows; ++r) {
        size_t len = n;
        if (lengths) len = lengths[r] < 0 ? 0 : (size_t)lengths[r] < n ? (size_t)lengths[r] : n;
        sums[r] = be->softmax->packed->lutsum(packed + (ptrdiff_t)r * ps, len, bits,
                                              luts + (ptrdiff_t)r * lut_stride);
    }
    return 0;
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
