/* Constants and scalar helpers shared by every softmax kernel file.  The
 * scalar helpers are also the tails' reference behaviour. */
#ifndef EXAQ_SOFTMAX_COMMON_H
#define EXAQ_SOFTMAX_COMMON_H

#include <math.h>
#include <string.h>

#include "exaq.h"

#include "compiler.h" /* EXAQ_ALWAYS_INLINE */

/* exp(t) = 2^k * p(r), k = rint(t*log2(e)), r = t - k*ln2 in [-ln2/2, ln2/2];
 * p is a degree-5 polynomial with p(0) = 1, fitted here (relative minimax by
 * iteratively reweighted least squares): max relative error 9.5e-8 with these
 * float32 coefficients.  r in one step: the float ln2 error (1.9e-9) times
 * |k| <= 126 stays below 2.4e-7 absolute in r. */
#define EXAQ_EXP_MIN (-87.33654f) /* scalar: below this exp() is denormal, we return 0 */
#define EXAQ_LOG2E 1.44269504088896341f
#define EXAQ_LN2 0.693147182464599609f
#define EXAQ_EXP_C1 0.999999702f
#define EXAQ_EXP_C2 0.499991506f
#define EXAQ_EXP_C3 0.166676357f
#define EXAQ_EXP_C4 0.0418979302f
#define EXAQ_EXP_C5 0.00829031505f
/* adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to the
 * nearest integer, ties to even, without a libm call */
#define EXAQ_ROUND_MAGIC 12582912.0f

static inline float exaq_round_even(float v) {
    return (v + EXAQ_ROUND_MAGIC) - EXAQ_ROUND_MAGIC;
}

static inline int exaq_is_masked(float x) { return x == -__builtin_inff(); }
static inline int exaq_is_invalid(float x) { return x != x || x == __builtin_inff(); }

/* row_max's *specials from what a kernel saw: a row with a NaN or +inf is
 * invalid, and then whether it also holds a -inf is not reported (a SIMD
 * minimum may lose a -inf to a NaN beside it) */
static inline int exaq_row_specials(int nan_seen, float max, int masked_seen) {
    if (nan_seen || max == __builtin_inff()) return EXAQ_ROW_HAS_INVALID;
    return masked_seen ? EXAQ_ROW_HAS_MASKED : 0;
}

/* The quantizer of exaq.h, one unmasked entry.  fmaf is exact everywhere
 * (an instruction where the ISA has one, correctly rounded in libm otherwise),
 * which keeps the scalar reference bit-identical to the SIMD kernels. */
static inline int exaq_quantize_one(float x, const exaq_quantizer *q) {
    const float v = fmaf(x - q->sub, q->scale, q->add);
    return v > 0.0f ? (int)exaq_round_even(v) : 0; /* also v = -inf from overflow */
}

/* The quantizer's range (lo, scale, offset) moved to another row's shift:
 * the driver's rows and the fused kernels' (softmax2_rows) get the same
 * floats from this one definition. */
static inline void exaq_quantizer_reshift(exaq_quantizer *q, float shift, int may_mask) {
    q->shift = shift;
    q->may_mask = may_mask;
    const double shifted = (double)shift * (double)q->scale;
    if (fabs(shifted) <= EXAQ_FOLD_LIMIT) {
        q->sub = 0.0f;
        q->add = (float)((double)q->offset - shifted);
    } else {
        q->sub = shift;
        q->add = q->offset;
    }
}

/* table[k] = e[k] / (sum over the row's codes), from exact counts (levels + 1
 * of them); entries past levels are 0.  Every build compiles it with
 * -ffp-contract=off, so the kernels' copies round as the driver's. */
static inline EXAQ_ALWAYS_INLINE void exaq_probability_table(const int64_t *counts, const double e[EXAQ_MAX_CODES],
                                                             const int levels, float table[EXAQ_MAX_CODES]) {
    double total = 0.0;
    for (int k = 0; k <= levels; ++k) total += (double)counts[k] * e[k];
    const double inverse = 1.0 / total;
    /* the entries past levels first, as one fixed-size store (a loop with a
     * variable start compiles to a scalar store per entry) */
    memset(table, 0, EXAQ_MAX_CODES * sizeof *table);
    for (int k = 0; k <= levels; ++k) table[k] = (float)(e[k] * inverse);
}

/* Entries [from, n) of a row, scalar: the scalar kernels run them from 0, and
 * the SIMD kernels use them for the entries they do not vectorize, so both
 * keep the same lane order and arithmetic. */
static inline void exaq_moments_from(const float *x, size_t from, size_t n, float shift,
                                     double sum[EXAQ_LANES], double sumsq[EXAQ_LANES]) {
    for (size_t j = from; j < n; ++j) {
        if (exaq_is_masked(x[j])) continue;
        const double t = (double)x[j] - (double)shift;
        sum[j % EXAQ_LANES] += t;
        sumsq[j % EXAQ_LANES] += t * t;
    }
}

static inline void exaq_abs_deviation_from(const float *x, size_t from, size_t n, float shift,
                                           double center, double sum[EXAQ_LANES]) {
    for (size_t j = from; j < n; ++j) {
        if (exaq_is_masked(x[j])) continue;
        const double d = ((double)x[j] - (double)shift) - center;
        sum[j % EXAQ_LANES] += d < 0 ? -d : d;
    }
}

static inline void exaq_quantize_count_from(const float *x, size_t from, size_t n,
                                            const exaq_quantizer *q, uint8_t *codes,
                                            int64_t counts[EXAQ_MAX_CODES]) {
    for (size_t j = from; j < n; ++j) {
        if (exaq_is_masked(x[j])) {
            codes[j] = EXAQ_MASKED_CODE;
            continue;
        }
        const int code = exaq_quantize_one(x[j], q);
        codes[j] = (uint8_t)code;
        ++counts[code];
    }
}

static inline void exaq_expand_from(const uint8_t *codes, size_t from, size_t n,
                                    const float table[EXAQ_MAX_CODES], float *y) {
    for (size_t j = from; j < n; ++j) y[j] = codes[j] < EXAQ_MAX_CODES ? table[codes[j]] : 0.0f;
}

/* Code counts from bit planes.  With B_i the entries of a block whose code has
 * bit i set, planes[S] accumulates popcount(AND of B_i, i in S) for every
 * subset S of the bits (planes[0]: the entries that are not masked); a Moebius
 * inversion over the subsets turns them into exact per-code counts.  Cheaper
 * than a histogram for 2 and 3 bits. */
static inline void exaq_add_planes(const uint64_t b[4], uint64_t masked, int entries, int bits,
                                   int64_t planes[EXAQ_MAX_CODES]) {
    planes[0] += entries - __builtin_popcountll(masked);
    for (int set = 1; set < (1 << bits); ++set) {
        uint64_t all = ~(uint64_t)0;
        for (int i = 0; i < bits; ++i)
            if (set >> i & 1) all &= b[i];
        planes[set] += __builtin_popcountll(all);
    }
}

static inline void exaq_counts_from_planes(int64_t planes[EXAQ_MAX_CODES], int bits,
                                           int64_t counts[EXAQ_MAX_CODES]) {
    /* sums over supersets -> exact counts, one bit at a time */
    for (int i = 0; i < bits; ++i)
        for (int set = 0; set < (1 << bits); ++set)
            if (!(set >> i & 1)) planes[set] -= planes[set | 1 << i];
    for (int code = 0; code < (1 << bits); ++code) counts[code] += planes[code];
}

/* Entries [from, n) of a row quantized into the 2-bit packed format; from is
 * a multiple of 8, so the packed and mask bytes from from/4 and from/8 on
 * belong to these entries alone.  The mask bytes only if q->may_mask (see
 * quantize_pack2 in exaq.h).  Returns the masked count. */
static inline size_t exaq_quantize_pack2_from(const float *x, size_t from, size_t n, const exaq_quantizer *q,
                                              uint8_t *packed, uint8_t *maskbits, int64_t counts[4]) {
    size_t masked = 0;
    for (size_t b = from / 4; b < EXAQ_PACKED_BYTES(n, 2); ++b) packed[b] = 0;
    for (size_t b = from / 8; q->may_mask && b < EXAQ_MASK_BYTES(n); ++b) maskbits[b] = 0;
    for (size_t j = from; j < n; ++j) {
        if (exaq_is_masked(x[j])) {
            if (q->may_mask) maskbits[j / 8] |= (uint8_t)(1u << (j % 8));
            ++masked;
            continue;
        }
        const int code = exaq_quantize_one(x[j], q);
        packed[j / 4] |= (uint8_t)(code << (2 * (j % 4)));
        ++counts[code];
    }
    return masked;
}

/* End of a SIMD quantize_pack2: entries [j, n) through the scalar helper, and
 * the counts from the SIMD part's bit-plane popcounts over [0, j): live
 * entries, codes with bit 0 set (1, 3), with bit 1 set (2, 3), with both (3).
 * Returns the masked count of the row. */
static inline size_t exaq_pack2_finish(const float *x, size_t j, size_t n, const exaq_quantizer *q,
                                       uint8_t *packed, uint8_t *maskbits, int64_t live, int64_t bit0,
                                       int64_t bit1, int64_t threes, int64_t counts[4]) {
    int64_t tail[4] = {0, 0, 0, 0};
    const size_t tail_masked = exaq_quantize_pack2_from(x, j, n, q, packed, maskbits, tail);
    const int64_t ones = bit0 - threes, twos = bit1 - threes;
    counts[0] += live - ones - twos - threes + tail[0];
    counts[1] += ones + tail[1];
    counts[2] += twos + tail[2];
    counts[3] += threes + tail[3];
    return (size_t)((int64_t)j - live) + tail_masked;
}

static inline void exaq_expand_pack2_from(const uint8_t *packed, const uint8_t *maskbits, size_t from,
                                          size_t n, const float table[4], float *y) {
    for (size_t j = from; j < n; ++j) {
        const int masked = maskbits && (maskbits[j / 8] >> (j % 8) & 1);
        y[j] = masked ? 0.0f : table[(packed[j / 4] >> (2 * (j % 4))) & 3];
    }
}

/* Lanes summed as a fixed pairwise tree (lane l with lane l + half, halving),
 * so the adds of one level are independent and the order is the same on every
 * backend. */
static inline double exaq_tree_total(double *lanes, int count) {
    for (int half = count / 2; half >= 1; half /= 2)
        for (int l = 0; l < half; ++l) lanes[l] += lanes[l + half];
    return lanes[0];
}

/* Float lanes of the row statistics.  Every EXAQ_FLUSH entries of the row
 * (and at its end) lane l is folded with lanes l + 32, l + 16 and l + 48 in
 * float, (s[l] + s[l+32]) + (s[l+16] + s[l+48]), and the 16 folds are added
 * to 16 double lanes; the row's total is the lane tree of those.  The folds
 * are the first levels of the tree, pairing lane l with lane l + half
 * cyclically, so a kernel whose lanes are rotated gets the same totals.  SIMD
 * files use these for the entries they do not vectorize. */
typedef struct {
    float sum[EXAQ_STAT_LANES], sumsq[EXAQ_STAT_LANES];
    double wide_sum[EXAQ_STAT_WIDE], wide_sumsq[EXAQ_STAT_WIDE];
} exaq_stat_lanes;

static inline float exaq_fold_lane(const float *lanes, int l) {
    enum { quarter = EXAQ_STAT_LANES / 4 }; /* = EXAQ_STAT_WIDE */
    return (lanes[l] + lanes[l + 2 * quarter]) + (lanes[l + quarter] + lanes[l + 3 * quarter]);
}

static inline void exaq_stat_lanes_flush(exaq_stat_lanes *a) {
    for (int l = 0; l < EXAQ_STAT_WIDE; ++l) {
        a->wide_sum[l] += (double)exaq_fold_lane(a->sum, l);
        a->wide_sumsq[l] += (double)exaq_fold_lane(a->sumsq, l);
    }
    memset(a->sum, 0, sizeof a->sum);
    memset(a->sumsq, 0, sizeof a->sumsq);
}

static inline void exaq_stat_lanes_total(exaq_stat_lanes *a, exaq_row_stats *out) {
    exaq_stat_lanes_flush(a);
    out->sum = exaq_tree_total(a->wide_sum, EXAQ_STAT_WIDE);
    out->sumsq = exaq_tree_total(a->wide_sumsq, EXAQ_STAT_WIDE);
}

/* The row-statistics entry points of a SIMD file, from its inline
 * row_stats_variant(x, n, pilot, out, with_min, centered, no_mask): the flags
 * pick a variant once per call and the rows loop inside it, so the variant's
 * setup is hoisted out of the loop.  Defines row_stats_<isa> and
 * row_stats_rows_<isa> (exaq_softmax_kernels). */
#define EXAQ_ROW_STATS_CASE(min, centered)                                                                   \
    do {                                                                                                     \
        if (flags & EXAQ_STATS_NO_MASK)                                                                      \
            for (size_t r = 0; r < rows; ++r)                                                                \
                row_stats_variant(x + (ptrdiff_t)r * xs, n, pilot, out + r, min, centered, 1);               \
        else                                                                                                 \
            for (size_t r = 0; r < rows; ++r)                                                                \
                row_stats_variant(x + (ptrdiff_t)r * xs, n, pilot, out + r, min, centered, 0);               \
    } while (0)

#define EXAQ_DEFINE_ROW_STATS(isa)                                                                           \
    static void row_stats_batch_##isa(const float *x, size_t rows, size_t n, ptrdiff_t xs, float pilot,      \
                                      int flags, exaq_row_stats *out) {                                      \
        const int centered = pilot != 0.0f;                                                                  \
        if ((flags & EXAQ_STATS_MIN) && centered) EXAQ_ROW_STATS_CASE(1, 1);                                 \
        else if (flags & EXAQ_STATS_MIN) EXAQ_ROW_STATS_CASE(1, 0);                                          \
        else if (centered) EXAQ_ROW_STATS_CASE(0, 1);                                                        \
        else EXAQ_ROW_STATS_CASE(0, 0);                                                                      \
    }                                                                                                        \
    static void row_stats_##isa(const float *x, size_t n, float pilot, int flags, exaq_row_stats *out) {    \
        row_stats_batch_##isa(x, 1, n, 0, pilot, flags, out);                                                \
    }                                                                                                        \
    static void row_stats_rows_##isa(const float *x, size_t rows, size_t n, ptrdiff_t xs, int flags,        \
                                     exaq_row_stats *out) {                                                  \
        row_stats_batch_##isa(x, rows, n, xs, 0.0f, flags, out);                                             \
    }

/* The fused 2-bit row groups of exaq_softmax_kernels (softmax2_rows,
 * softmax_pack2_rows) from an ISA's own quantize_count_<isa>, expand_<isa>
 * and quantize_pack2_<isa>: the driver's per-row work for clean rows, without
 * its calls through the kernel table and the sink (same kernels, same table
 * arithmetic, so the same bits).  A file with tuned versions (AVX2) defines
 * its own instead. */
#define EXAQ_DEFINE_FUSED2(isa)                                                                                  \
    static void softmax2_rows_##isa(const float *x, size_t rows, size_t n, ptrdiff_t xs, const float *shifts,    \
                                    const size_t *live, const exaq_quantizer *q, const double e[EXAQ_MAX_CODES], \
                                    uint8_t *codes, float *y, ptrdiff_t ys) {                                    \
        exaq_quantizer row_q = *q;                                                                               \
        for (size_t r = 0; r < rows; ++r) {                                                                      \
            exaq_quantizer_reshift(&row_q, shifts[r], 0);                                                        \
            const size_t len = live ? live[r] : n;                                                               \
            int64_t counts[EXAQ_MAX_CODES] = {0, 0, 0, 0};                                                       \
            float table[EXAQ_MAX_CODES];                                                                         \
            float *out = y + (ptrdiff_t)r * ys;                                                                  \
            quantize_count_##isa(x + (ptrdiff_t)r * xs, len, &row_q, codes, counts);                             \
            exaq_probability_table(counts, e, 3, table);                                                         \
            expand_##isa(codes, len, table, out);                                                                \
            if (len < n) memset(out + len, 0, (n - len) * sizeof *out); /* the masked run: +0.0f */             \
        }                                                                                                        \
    }                                                                                                            \
    static void softmax_pack2_rows_##isa(const float *x, size_t rows, size_t n, ptrdiff_t xs,                    \
                                         const float *shifts, const exaq_quantizer *q,                           \
                                         const double e[EXAQ_MAX_CODES], uint8_t *packed, ptrdiff_t ps,          \
                                         float *tables) {                                                        \
        exaq_quantizer row_q = *q;                                                                               \
        for (size_t r = 0; r < rows; ++r) {                                                                      \
            exaq_quantizer_reshift(&row_q, shifts[r], 0); /* may_mask 0: the bitmap is never touched */          \
            int64_t counts[EXAQ_MAX_CODES] = {0, 0, 0, 0};                                                       \
            float table[EXAQ_MAX_CODES];                                                                         \
            quantize_pack2_##isa(x + (ptrdiff_t)r * xs, n, &row_q, packed + (ptrdiff_t)r * ps, NULL, counts);    \
            exaq_probability_table(counts, e, 3, table);                                                         \
            memcpy(tables + 4 * r, table, 4 * sizeof *table);                                                    \
        }                                                                                                        \
    }

/* entry j of a row (j < n) into the statistics; the caller flushes */
static inline void exaq_stats_add_one(float v, size_t j, float pilot, int flags, exaq_stat_lanes *a,
                                      exaq_row_stats *out) {
    if (!(flags & EXAQ_STATS_NO_MASK) && exaq_is_masked(v)) return;
    ++out->unmasked;
    if (v > out->max) out->max = v;
    if (v < out->min) out->min = v;
    const float d = v - pilot;
    a->sum[j % EXAQ_STAT_LANES] += d;
    a->sumsq[j % EXAQ_STAT_LANES] = fmaf(d, d, a->sumsq[j % EXAQ_STAT_LANES]);
}

static inline void exaq_row_stats_init(exaq_row_stats *out, size_t n) {
    out->masked_from = n;
    out->max = -__builtin_inff();
    out->min = __builtin_inff();
    out->unmasked = 0;
    out->sum = out->sumsq = 0.0;
}

#endif
