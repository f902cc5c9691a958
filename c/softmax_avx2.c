/* AVX2 + FMA softmax kernels.  Whole blocks of 16 entries (two vectors, the
 * reduction lane width) go through SIMD; the last n % 16 entries go through
 * the scalar helpers, which keeps lane order and never reads past the row. */
#include <immintrin.h>
#include <string.h>

#include "softmax_common.h"

#define BLOCK EXAQ_LANES
#define STAT_GROUPS (EXAQ_STAT_LANES / 8)

static inline __m256 neg_inf8(void) { return _mm256_set1_ps(-__builtin_inff()); }

/* all-ones lanes where x is not -inf (NaN included) */
static inline __m256 live8(__m256 v) { return _mm256_cmp_ps(v, neg_inf8(), _CMP_NEQ_UQ); }

/* four running maxima, so no max waits on the one before; the minimum tells
 * whether a -inf is there */
static float row_max_avx2(const float *x, size_t n, int *specials) {
    __m256 vmax = neg_inf8(), bad = _mm256_setzero_ps(), vmin = _mm256_set1_ps(__builtin_inff());
    __m256 more[3] = {neg_inf8(), neg_inf8(), neg_inf8()};
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256 v0 = _mm256_loadu_ps(x + j), v1 = _mm256_loadu_ps(x + j + 8);
        const __m256 v2 = _mm256_loadu_ps(x + j + 16), v3 = _mm256_loadu_ps(x + j + 24);
        const __m256 nan01 = _mm256_cmp_ps(v0, v1, _CMP_UNORD_Q), nan23 = _mm256_cmp_ps(v2, v3, _CMP_UNORD_Q);
        bad = _mm256_or_ps(bad, _mm256_or_ps(nan01, nan23));
        vmin = _mm256_min_ps(_mm256_min_ps(v0, v1), _mm256_min_ps(_mm256_min_ps(v2, v3), vmin));
        vmax = _mm256_max_ps(v0, vmax); /* a NaN in v keeps vmax */
        more[0] = _mm256_max_ps(v1, more[0]);
        more[1] = _mm256_max_ps(v2, more[1]);
        more[2] = _mm256_max_ps(v3, more[2]);
    }
    vmax = _mm256_max_ps(_mm256_max_ps(vmax, more[0]), _mm256_max_ps(more[1], more[2]));
    for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        vmin = _mm256_min_ps(v, vmin);
        vmax = _mm256_max_ps(v, vmax);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float mx = lanes[0];
    for (int l = 1; l < 8; ++l) mx = lanes[l] > mx ? lanes[l] : mx;
    int any_bad = _mm256_movemask_ps(bad) != 0;
    int any_masked = _mm256_movemask_ps(_mm256_cmp_ps(vmin, neg_inf8(), _CMP_EQ_OQ)) != 0;
    for (; j < n; ++j) {
        if (x[j] != x[j]) any_bad = 1;
        else if (exaq_is_masked(x[j])) any_masked = 1;
        else if (x[j] > mx) mx = x[j];
    }
    *specials = exaq_row_specials(any_bad, mx, any_masked);
    return mx;
}

typedef struct {
    __m256 vmax, vmin;
    __m256i live_lanes; /* unmasked entries a lane saw this block (int32, flushed to unmasked) */
    int64_t unmasked;
} extremes256;

/* the block's lane counts into e->unmasked: a lane counts at most a block's
 * entries, far from overflowing */
static inline void flush_live_lanes(extremes256 *e) {
    __m128i c = _mm_add_epi32(_mm256_castsi256_si128(e->live_lanes), _mm256_extracti128_si256(e->live_lanes, 1));
    c = _mm_add_epi32(c, _mm_shuffle_epi32(c, _MM_SHUFFLE(1, 0, 3, 2)));
    c = _mm_add_epi32(c, _mm_shuffle_epi32(c, _MM_SHUFFLE(2, 3, 0, 1)));
    e->unmasked += _mm_cvtsi128_si32(c);
    e->live_lanes = _mm256_setzero_si256();
}

/* padded[0, rest) = x[0, rest), -inf after: a row's last partial block */
static inline void pad32(float padded[32], const float *x, size_t rest) {
    for (int v = 0; v < 4; ++v) _mm256_storeu_ps(padded + 8 * v, neg_inf8());
    memcpy(padded, x, rest * sizeof(float));
}

/* returns the lanes that are not -inf (all of them with no_mask) */
static inline __m256 stats_step8(__m256 v, __m256 pilot, extremes256 *e, __m256 *sum, __m256 *sumsq,
                                 const int with_min, const int centered, const int no_mask) {
    if (no_mask) {
        e->unmasked += 8;
        e->vmax = _mm256_max_ps(e->vmax, v);
        if (with_min) e->vmin = _mm256_min_ps(e->vmin, v);
        const __m256 d = centered ? _mm256_sub_ps(v, pilot) : v;
        *sum = _mm256_add_ps(*sum, d);
        *sumsq = _mm256_fmadd_ps(d, d, *sumsq);
        return _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    }
    const __m256 live = live8(v);
    e->live_lanes = _mm256_sub_epi32(e->live_lanes, _mm256_castps_si256(live)); /* a live lane is -1 */
    e->vmax = _mm256_max_ps(e->vmax, v); /* -inf never wins a max */
    if (with_min) e->vmin = _mm256_min_ps(e->vmin, _mm256_blendv_ps(_mm256_set1_ps(__builtin_inff()), v, live));
    /* masked lanes add +0.0, which leaves a sum that is never -0 unchanged */
    const __m256 d = _mm256_and_ps(centered ? _mm256_sub_ps(v, pilot) : v, live);
    *sum = _mm256_add_ps(*sum, d);
    *sumsq = _mm256_fmadd_ps(d, d, *sumsq);
    return live;
}

/* the first index of x[from, n) where 32 entries in a row (the last 32 of
 * the row at its end) are not all -inf, or n if every entry is -inf */
static size_t first_live_group(const float *x, size_t from, size_t n) {
    const __m256 masked = neg_inf8();
    size_t j = from;
    for (; j + 32 <= n; j += 32) {
        const __m256 all = _mm256_and_ps(
            _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), masked, _CMP_EQ_OQ),
                          _mm256_cmp_ps(_mm256_loadu_ps(x + j + 8), masked, _CMP_EQ_OQ)),
            _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j + 16), masked, _CMP_EQ_OQ),
                          _mm256_cmp_ps(_mm256_loadu_ps(x + j + 24), masked, _CMP_EQ_OQ)));
        if (_mm256_movemask_ps(all) != 0xFF) return j;
    }
    for (; j < n; ++j)
        if (!exaq_is_masked(x[j])) return j;
    return n;
}

/* exaq_stat_lanes_flush of the float lanes (l in vector l / 8): vectors v and
 * v + 4, v + 2 and v + 6 folded in float, added to the 16 double lanes held
 * in four registers (lanes 4w .. 4w + 3 in wide[w]).  The float lanes need no
 * zeroing: the next block's sweeps store every one of them. */
static inline void fold256(const float lanes[EXAQ_STAT_LANES], __m256d wide[4]) {
    for (int v = 0; v < 2; ++v) {
        const __m256 folded = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(lanes + 8 * v), _mm256_loadu_ps(lanes + 8 * v + 32)),
                                            _mm256_add_ps(_mm256_loadu_ps(lanes + 8 * v + 16), _mm256_loadu_ps(lanes + 8 * v + 48)));
        wide[2 * v] = _mm256_add_pd(wide[2 * v], _mm256_cvtps_pd(_mm256_castps256_ps128(folded)));
        wide[2 * v + 1] = _mm256_add_pd(wide[2 * v + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(folded, 1)));
    }
}

/* exaq_tree_total of the 16 double lanes, level by level in registers: lane l
 * with l + 8, then l + 4, l + 2 and l + 1, the same adds in the same pairs */
static inline double tree_total256(const __m256d wide[4]) {
    const __m256d quarter = _mm256_add_pd(_mm256_add_pd(wide[0], wide[2]), _mm256_add_pd(wide[1], wide[3]));
    const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(quarter), _mm256_extractf128_pd(quarter, 1));
    return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
}

/* the largest (smallest) of 8 lanes; the order does not matter for a row
 * without NaN, and the driver discards the extremes of a row with one */
static inline float max8(__m256 v) {
    /* max_ps returns its second operand when either is NaN */
    __m128 m = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m = _mm_max_ps(_mm_movehl_ps(m, m), m);
    m = _mm_max_ss(_mm_movehdup_ps(m), m);
    return _mm_cvtss_f32(m);
}

static inline float min8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m = _mm_min_ps(_mm_movehl_ps(m, m), m);
    m = _mm_min_ss(_mm_movehdup_ps(m), m);
    return _mm_cvtss_f32(m);
}

static inline EXAQ_ALWAYS_INLINE void row_stats_sweeps(const float *x, size_t n, float pilot, exaq_row_stats *out,
                                                       const int with_min, const int centered, const int no_mask,
                                                       const int look_ahead) {
    const int flags = (with_min ? EXAQ_STATS_MIN : 0) | (no_mask ? EXAQ_STATS_NO_MASK : 0);
    const __m256 p = _mm256_set1_ps(pilot);
    exaq_stat_lanes lanes; /* only the float lanes are used; every block stores all of them */
    __m256d wide_sum[4], wide_sumsq[4];
    for (int w = 0; w < 4; ++w) wide_sum[w] = wide_sumsq[w] = _mm256_setzero_pd();
    exaq_row_stats_init(out, n);
    extremes256 st = {neg_inf8(), _mm256_set1_ps(__builtin_inff()), _mm256_setzero_si256(), 0};
    /* A row that ends in a run of -inf (causal, padding) is summed up to it
     * only: where the first sweep meets 32 masked entries in a row it looks
     * ahead for the next live entry, and stops if there is none.  Masked
     * entries add +0.0 to the lanes (never -0), nothing to the rest, so the
     * fields come out the same.  A look-ahead that finds a live entry is not
     * repeated before it, so the look-aheads read each entry at most once:
     * at worst a third of the cost of summing the row again. */
    size_t look_from = 0;       /* no look-ahead before here: a live entry lies ahead */
    size_t masked_from = n;
    for (size_t block = 0; block < masked_from; block += EXAQ_FLUSH) {
        const size_t end = n - block < EXAQ_FLUSH ? n : block + EXAQ_FLUSH;
        /* the 8 lane groups in two halves of 4, each half a sweep over the block
         * (in L1 by the second): 16 accumulators would not fit the 16 registers.
         * Every lane still adds its entries in entry order. */
        size_t whole = block + (end - block) / EXAQ_STAT_LANES * EXAQ_STAT_LANES;
        for (int half = 0; half < 2; ++half) {
            __m256 sum[4], sumsq[4];
            for (int g = 0; g < 4; ++g) sum[g] = sumsq[g] = _mm256_setzero_ps();
            for (size_t j = block; j < whole; j += EXAQ_STAT_LANES) {
                __m256 live = _mm256_setzero_ps();
                for (int g = 0; g < 4; ++g)
                    live = _mm256_or_ps(live, stats_step8(_mm256_loadu_ps(x + j + 32 * half + 8 * g), p, &st,
                                                          &sum[g], &sumsq[g], with_min, centered, no_mask));
                if (look_ahead && half == 0 && j >= look_from && _mm256_testz_ps(live, live)) {
                    look_from = first_live_group(x, j + 32, n);
                    if (look_from == n) {
                        masked_from = j;
                        whole = j; /* half 1 stops there too */
                        break;
                    }
                }
            }
            for (int g = 0; g < 4; ++g) {
                _mm256_storeu_ps(lanes.sum + 32 * half + 8 * g, sum[g]);
                _mm256_storeu_ps(lanes.sumsq + 32 * half + 8 * g, sumsq[g]);
            }
        }
        size_t j = whole;
        if (masked_from < n) j = end; /* nothing past it to sum */
        for (int g = 0; j + 8 <= end; j += 8, ++g) {
            __m256 sum = _mm256_loadu_ps(lanes.sum + 8 * g), sumsq = _mm256_loadu_ps(lanes.sumsq + 8 * g);
            stats_step8(_mm256_loadu_ps(x + j), p, &st, &sum, &sumsq, with_min, centered, no_mask);
            _mm256_storeu_ps(lanes.sum + 8 * g, sum);
            _mm256_storeu_ps(lanes.sumsq + 8 * g, sumsq);
        }
        for (; j < end; ++j) exaq_stats_add_one(x[j], j, pilot, flags, &lanes, out);
        fold256(lanes.sum, wide_sum);
        fold256(lanes.sumsq, wide_sumsq);
        if (!no_mask) flush_live_lanes(&st);
    }
    /* a NaN lane (the row is then invalid, its max unused) loses to the
     * scalar part's value, as in a loop of comparisons */
    const float lanes_max = max8(st.vmax);
    if (lanes_max > out->max) out->max = lanes_max;
    if (with_min) {
        const float lanes_min = min8(st.vmin);
        if (lanes_min < out->min) out->min = lanes_min;
    }
    out->unmasked += st.unmasked;
    out->masked_from = masked_from;
    out->sum = tree_total256(wide_sum);
    out->sumsq = tree_total256(wide_sumsq);
    if (!with_min) out->min = __builtin_nanf("");
}

/* row_stats of a row of at most EXAQ_FLUSH entries, a multiple of
 * EXAQ_STAT_LANES, that is summed without the mask test and without a
 * pilot: the same lane schedule (one flush) in two sweeps over the row (in
 * L1 after the first), each holding the four lane vectors that one fold
 * combines (lanes l, l + 16, l + 32, l + 48 for 8 values of l), so every
 * accumulator stays in a register: no lane stores and reloads, no loop over
 * halves, no per-vector counting.  For 128-key rows the generic
 * sweeps spent more instructions on that bookkeeping than on the sums. */
static inline EXAQ_ALWAYS_INLINE void row_stats_short(const float *x, size_t n, exaq_row_stats *out,
                                                      const int with_min) {
    __m256 vmax = neg_inf8(), vmin = _mm256_set1_ps(__builtin_inff());
    __m256 folded_sum[2], folded_sumsq[2];
    for (int w = 0; w < 2; ++w) { /* float lanes 8w.. of the fold: vectors w, w + 2 of each half */
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps(), q2 = _mm256_setzero_ps(), q3 = _mm256_setzero_ps();
        for (size_t j = 0; j < n; j += EXAQ_STAT_LANES) {
            const __m256 a = _mm256_loadu_ps(x + j + 8 * w), b = _mm256_loadu_ps(x + j + 8 * w + 16);
            const __m256 c = _mm256_loadu_ps(x + j + 8 * w + 32), d = _mm256_loadu_ps(x + j + 8 * w + 48);
            vmax = _mm256_max_ps(vmax, _mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d)));
            if (with_min) vmin = _mm256_min_ps(vmin, _mm256_min_ps(_mm256_min_ps(a, b), _mm256_min_ps(c, d)));
            s0 = _mm256_add_ps(s0, a), s1 = _mm256_add_ps(s1, b), s2 = _mm256_add_ps(s2, c), s3 = _mm256_add_ps(s3, d);
            q0 = _mm256_fmadd_ps(a, a, q0), q1 = _mm256_fmadd_ps(b, b, q1);
            q2 = _mm256_fmadd_ps(c, c, q2), q3 = _mm256_fmadd_ps(d, d, q3);
        }
        /* (s[l] + s[l+32]) + (s[l+16] + s[l+48]) */
        folded_sum[w] = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
        folded_sumsq[w] = _mm256_add_ps(_mm256_add_ps(q0, q2), _mm256_add_ps(q1, q3));
    }
    __m256d wide_sum[4], wide_sumsq[4];
    for (int w = 0; w < 2; ++w) { /* +0 + v as the generic flush into zeroed double lanes */
        wide_sum[2 * w] = _mm256_add_pd(_mm256_setzero_pd(), _mm256_cvtps_pd(_mm256_castps256_ps128(folded_sum[w])));
        wide_sum[2 * w + 1] = _mm256_add_pd(_mm256_setzero_pd(), _mm256_cvtps_pd(_mm256_extractf128_ps(folded_sum[w], 1)));
        wide_sumsq[2 * w] = _mm256_add_pd(_mm256_setzero_pd(), _mm256_cvtps_pd(_mm256_castps256_ps128(folded_sumsq[w])));
        wide_sumsq[2 * w + 1] =
            _mm256_add_pd(_mm256_setzero_pd(), _mm256_cvtps_pd(_mm256_extractf128_ps(folded_sumsq[w], 1)));
    }
    exaq_row_stats_init(out, n);
    out->max = max8(vmax);
    out->min = with_min ? min8(vmin) : __builtin_nanf("");
    out->unmasked = (int64_t)n;
    out->sum = tree_total256(wide_sum);
    out->sumsq = tree_total256(wide_sumsq);
}

/* The look-ahead pays from a few chunks on; shorter rows skip its tests. */
#define LOOK_AHEAD_MIN (4 * EXAQ_STAT_LANES)

static inline EXAQ_ALWAYS_INLINE void row_stats_variant(const float *x, size_t n, float pilot, exaq_row_stats *out,
                                                        const int with_min, const int centered, const int no_mask) {
    if (no_mask && !centered && n > 0 && n <= EXAQ_FLUSH && n % EXAQ_STAT_LANES == 0)
        row_stats_short(x, n, out, with_min);
    else if (!no_mask && n >= LOOK_AHEAD_MIN)
        row_stats_sweeps(x, n, pilot, out, with_min, centered, 0, 1);
    else
        row_stats_sweeps(x, n, pilot, out, with_min, centered, no_mask, 0);
}

EXAQ_DEFINE_ROW_STATS(avx2)

/* t = (double)x - shift for the four floats of `v4`, zeroed where masked */
static inline __m256d shifted4(__m128 v4, __m256d s, __m256d *live) {
    const __m256d d = _mm256_cvtps_pd(v4);
    *live = _mm256_cmp_pd(d, _mm256_set1_pd(-__builtin_inf()), _CMP_NEQ_UQ);
    return _mm256_and_pd(_mm256_sub_pd(d, s), *live);
}

static void moments_avx2(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                         double sumsq[EXAQ_LANES]) {
    const __m256d s = _mm256_set1_pd((double)shift);
    __m256d acc[4], sq[4];
    for (int q = 0; q < 4; ++q) {
        acc[q] = _mm256_loadu_pd(sum + 4 * q);
        sq[q] = _mm256_loadu_pd(sumsq + 4 * q);
    }
    size_t j = 0;
    for (; j + BLOCK <= n; j += BLOCK) {
        for (int q = 0; q < 4; ++q) {
            __m256d live;
            const __m256d t = shifted4(_mm_loadu_ps(x + j + 4 * q), s, &live);
            /* masked lanes add +0.0, which leaves every sum unchanged */
            acc[q] = _mm256_add_pd(acc[q], t);
            sq[q] = _mm256_add_pd(sq[q], _mm256_mul_pd(t, t));
        }
    }
    for (int q = 0; q < 4; ++q) {
        _mm256_storeu_pd(sum + 4 * q, acc[q]);
        _mm256_storeu_pd(sumsq + 4 * q, sq[q]);
    }
    exaq_moments_from(x, j, n, shift, sum, sumsq);
}

static void abs_deviation_avx2(const float *x, size_t n, float shift, double center,
                               double sum[EXAQ_LANES]) {
    const __m256d s = _mm256_set1_pd((double)shift), c = _mm256_set1_pd(center);
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d acc[4];
    for (int q = 0; q < 4; ++q) acc[q] = _mm256_loadu_pd(sum + 4 * q);
    size_t j = 0;
    for (; j + BLOCK <= n; j += BLOCK) {
        for (int q = 0; q < 4; ++q) {
            __m256d live;
            const __m256d t = shifted4(_mm_loadu_ps(x + j + 4 * q), s, &live);
            const __m256d dev = _mm256_andnot_pd(sign, _mm256_sub_pd(t, c));
            acc[q] = _mm256_add_pd(acc[q], _mm256_and_pd(dev, live));
        }
    }
    for (int q = 0; q < 4; ++q) _mm256_storeu_pd(sum + 4 * q, acc[q]);
    exaq_abs_deviation_from(x, j, n, shift, center, sum);
}

typedef struct {
    __m256 sub, scale, add;
} quantizer256;

/* exaq_quantize_one on 8 lanes; masked lanes get EXAQ_MASKED_CODE */
static inline __m256i quantize256(__m256 x, __m256 live, const quantizer256 *q) {
    const __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(x, q->sub), q->scale, q->add);
    const __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* cvtt of -inf or of a huge negative gives INT_MIN, which the max clamps */
    const __m256i code = _mm256_max_epi32(_mm256_cvttps_epi32(r), _mm256_setzero_si256());
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(EXAQ_MASKED_CODE)),
                                                _mm256_castsi256_ps(code), live));
}

/* byte counters in 32-bit lanes, see the AVX-512 file; here the one-hot byte
 * comes from a variable shift (shift counts of 32 and more give 0) */
static inline void drain_byte_counters(__m256i acc, int64_t *counts4) {
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, acc);
    for (int l = 0; l < 8; ++l)
        for (int b = 0; b < 4; ++b) counts4[b] += (lanes[l] >> (8 * b)) & 0xFF;
}

static inline void quantize_count_groups(const float *x, size_t n, const exaq_quantizer *q,
                                         uint8_t *codes, int64_t counts[EXAQ_MAX_CODES],
                                         const int groups) {
    const __m256i one = _mm256_set1_epi32(1);
    const quantizer256 vq = {_mm256_set1_ps(q->sub), _mm256_set1_ps(q->scale), _mm256_set1_ps(q->add)};
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    int since_drain = 0;
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        const __m256i code = quantize256(v, live8(v), &vq);
        const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(code),
                                               _mm256_extracti128_si256(code, 1));
        _mm_storel_epi64((__m128i *)(codes + j), _mm_packus_epi16(words, words));
        const __m256i shift_bits = _mm256_slli_epi32(code, 3);
        for (int g = 0; g < groups; ++g) {
            const __m256i s = _mm256_sub_epi32(shift_bits, _mm256_set1_epi32(32 * g));
            acc[g] = _mm256_add_epi32(acc[g], _mm256_sllv_epi32(one, s));
        }
        if (++since_drain == 255) {
            for (int g = 0; g < groups; ++g) {
                drain_byte_counters(acc[g], counts + 4 * g);
                acc[g] = _mm256_setzero_si256();
            }
            since_drain = 0;
        }
    }
    for (int g = 0; g < groups; ++g) drain_byte_counters(acc[g], counts + 4 * g);
    exaq_quantize_count_from(x, j, n, q, codes, counts);
}

typedef struct {
    __m256 sub, scale, add;
    __m256i masked_code, order;
} planes_quantizer;

/* 32 entries of src: their codes to dst (32 bytes) and their bit planes added */
static inline EXAQ_ALWAYS_INLINE void planes_block32(const float *src, uint8_t *dst, const planes_quantizer *pq,
                                                     int64_t planes[EXAQ_MAX_CODES], const int bits,
                                                     const int may_mask, const int shifted) {
    __m256i c[4];
    for (int g = 0; g < 4; ++g) {
        const __m256 v = _mm256_loadu_ps(src + 8 * g);
        /* RNE by the default rounding mode, as exaq_round_even; -inf and huge
         * negatives convert to INT_MIN, which the packs saturate to 0 */
        c[g] = _mm256_cvtps_epi32(_mm256_fmadd_ps(shifted ? _mm256_sub_ps(v, pq->sub) : v, pq->scale, pq->add));
        if (may_mask)
            c[g] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(pq->masked_code),
                                                        _mm256_castsi256_ps(c[g]), live8(v)));
    }
    const __m256i bytes = _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3])), pq->order);
    _mm256_storeu_si256((__m256i *)dst, bytes);
    uint64_t b[4] = {0, 0, 0, 0};
    for (int i = 0; i < bits; ++i) b[i] = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 7 - i));
    const uint64_t masked = may_mask ? (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 3)) : 0;
    exaq_add_planes(b, masked, 32, bits, planes);
}

/* 32 entries at a time, as the AVX-512 kernel: codes narrowed to bytes by
 * saturating packs (the clamp at 0), counted from bit planes read with
 * movemask (bit i shifted up to each byte's top bit).  4 bits keep the one-hot
 * counters (15 plane intersections cost more).  The last n % 32 entries go
 * through the same block, padded with -inf (masked: no code counted), so a
 * short row is not left to scalar code. */
static inline EXAQ_ALWAYS_INLINE void quantize_count_planes(const float *x, size_t n, const exaq_quantizer *q,
                                                            uint8_t *codes, int64_t counts[EXAQ_MAX_CODES],
                                                            const int bits, const int may_mask, const int shifted) {
    const planes_quantizer pq = {_mm256_set1_ps(q->sub), _mm256_set1_ps(q->scale), _mm256_set1_ps(q->add),
                                 _mm256_set1_epi32(EXAQ_MASKED_CODE),
                                 _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)}; /* packs work per 128-bit lane */
    int64_t planes[EXAQ_MAX_CODES];
    for (int set = 0; set < 1 << bits; ++set) planes[set] = 0;
    size_t j = 0;
    for (; j + 32 <= n; j += 32) planes_block32(x + j, codes + j, &pq, planes, bits, may_mask, shifted);
    if (j < n) {
        float padded[32];
        uint8_t block_codes[32];
        const size_t rest = n - j;
        pad32(padded, x + j, rest);
        planes_block32(padded, block_codes, &pq, planes, bits, 1, shifted);
        memcpy(codes + j, block_codes, rest);
    }
    exaq_counts_from_planes(planes, bits, counts);
}

#define QUANTIZE_COUNT(bits)                                                                     \
    do {                                                                                         \
        if (q->may_mask && shifted) quantize_count_planes(x, n, q, codes, counts, bits, 1, 1);   \
        else if (q->may_mask) quantize_count_planes(x, n, q, codes, counts, bits, 1, 0);         \
        else if (shifted) quantize_count_planes(x, n, q, codes, counts, bits, 0, 1);             \
        else quantize_count_planes(x, n, q, codes, counts, bits, 0, 0);                          \
    } while (0)

static void quantize_count_avx2(const float *x, size_t n, const exaq_quantizer *q,
                                uint8_t *codes, int64_t counts[EXAQ_MAX_CODES]) {
    const int shifted = q->sub != 0.0f;
    if (q->levels <= 3) QUANTIZE_COUNT(2);
    else if (q->levels <= 7) QUANTIZE_COUNT(3);
    else quantize_count_groups(x, n, q, codes, counts, 4);
}

static void expand_avx2(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES],
                        float *y) {
    const __m256 low = _mm256_loadu_ps(table), high = _mm256_loadu_ps(table + 8);
    const __m256i below_masked = _mm256_set1_epi32(EXAQ_MASKED_CODE);
    size_t j = 0;
    if (_mm256_movemask_ps(_mm256_cmp_ps(high, _mm256_setzero_ps(), _CMP_NEQ_UQ)) == 0) {
        /* at most 8 codes (2, 3 bits): one permute; code 16 (masked) reads entry 0, cleared.
         * Four vectors a round: the loop's own instructions were a third of a short row's. */
        for (; j + 32 <= n; j += 32)
            for (int v = 0; v < 4; ++v) {
                const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j + 8 * v)));
                const __m256 p = _mm256_permutevar8x32_ps(low, code);
                _mm256_storeu_ps(y + j + 8 * v,
                                 _mm256_and_ps(p, _mm256_castsi256_ps(_mm256_cmpgt_epi32(below_masked, code))));
            }
        for (; j + 8 <= n; j += 8) {
            const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
            const __m256 p = _mm256_permutevar8x32_ps(low, code);
            _mm256_storeu_ps(y + j, _mm256_and_ps(p, _mm256_castsi256_ps(_mm256_cmpgt_epi32(below_masked, code))));
        }
    }
    for (; j + 8 <= n; j += 8) {
        const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
        /* bit 3 of the code, moved to the sign bit, picks the upper half */
        __m256 p = _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, code),
                                    _mm256_permutevar8x32_ps(high, code),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
        p = _mm256_and_ps(p, _mm256_castsi256_ps(_mm256_cmpgt_epi32(below_masked, code)));
        _mm256_storeu_ps(y + j, p);
    }
    exaq_expand_from(codes, j, n, table, y);
}

/* One row of softmax2_rows: quantize_count_planes (2 bits, no mask), the
 * table, and expand without the masked-code test (no entry is masked; the
 * padding's codes of the last block are never copied out). */
static inline EXAQ_ALWAYS_INLINE void softmax2_row(const float *x, size_t n, const planes_quantizer *pq,
                                                   const double e[EXAQ_MAX_CODES], uint8_t *codes, float *y,
                                                   const int shifted) {
    int64_t planes[EXAQ_MAX_CODES] = {0, 0, 0, 0};
    size_t j = 0;
    for (; j + 32 <= n; j += 32) planes_block32(x + j, codes + j, pq, planes, 2, 0, shifted);
    if (j < n) {
        float padded[32];
        uint8_t block_codes[32];
        const size_t rest = n - j;
        pad32(padded, x + j, rest);
        planes_block32(padded, block_codes, pq, planes, 2, 1, shifted);
        memcpy(codes + j, block_codes, rest);
    }
    int64_t counts[EXAQ_MAX_CODES] = {0, 0, 0, 0};
    exaq_counts_from_planes(planes, 2, counts);
    float table[EXAQ_MAX_CODES];
    exaq_probability_table(counts, e, 3, table);
    const __m256 low = _mm256_loadu_ps(table);
    for (j = 0; j + 32 <= n; j += 32)
        for (int v = 0; v < 4; ++v) {
            const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j + 8 * v)));
            _mm256_storeu_ps(y + j + 8 * v, _mm256_permutevar8x32_ps(low, code));
        }
    for (; j + 8 <= n; j += 8) {
        const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
        _mm256_storeu_ps(y + j, _mm256_permutevar8x32_ps(low, code));
    }
    for (; j < n; ++j) y[j] = table[codes[j]];
}

static void softmax2_rows_avx2(const float *x, size_t rows, size_t n, ptrdiff_t xs, const float *shifts,
                               const size_t *live, const exaq_quantizer *q, const double e[EXAQ_MAX_CODES], uint8_t *codes, float *y,
                               ptrdiff_t ys) {
    exaq_quantizer row_q = *q;
    planes_quantizer pq = {_mm256_setzero_ps(), _mm256_set1_ps(q->scale), _mm256_setzero_ps(),
                           _mm256_set1_epi32(EXAQ_MASKED_CODE), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)};
    for (size_t r = 0; r < rows; ++r) {
        exaq_quantizer_reshift(&row_q, shifts[r], 0);
        pq.sub = _mm256_set1_ps(row_q.sub);
        pq.add = _mm256_set1_ps(row_q.add);
        const float *row = x + (ptrdiff_t)r * xs;
        float *out = y + (ptrdiff_t)r * ys;
        const size_t len = live ? live[r] : n;
        if (row_q.sub != 0.0f) softmax2_row(row, len, &pq, e, codes, out, 1);
        else softmax2_row(row, len, &pq, e, codes, out, 0);
        if (len < n) memset(out + len, 0, (n - len) * sizeof *out); /* the masked run: +0.0f */
    }
}

typedef struct {
    __m256 sub, scale, add;
    __m256i pair_weights, quad_weights, low_bytes;
    int64_t ones, twos, threes, live; /* bit-plane counts of the blocks so far */
} pack2_state;

/* 32 entries of src to 8 packed bytes and (may_mask) 4 mask bytes */
static inline EXAQ_ALWAYS_INLINE void pack2_block32(const float *src, uint8_t *packed8, uint8_t *mask4,
                                                    pack2_state *st, const int may_mask, const int shifted) {
    __m256i c[4];
    uint32_t live = 0xFFFFFFFFu;
    for (int g = 0; g < 4; ++g) {
        const __m256 v = _mm256_loadu_ps(src + 8 * g);
        c[g] = _mm256_cvtps_epi32(_mm256_fmadd_ps(shifted ? _mm256_sub_ps(v, st->sub) : v, st->scale, st->add));
        if (may_mask) {
            const __m256 keep = live8(v);
            c[g] = _mm256_and_si256(c[g], _mm256_castps_si256(keep)); /* masked: code 0 */
            live &= ~((uint32_t)(~_mm256_movemask_ps(keep) & 0xFF) << 8 * g);
        }
    }
    const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    const uint32_t bit0 = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 7));
    const uint32_t bit1 = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 6));
    st->threes += __builtin_popcount(bit0 & bit1);
    st->ones += __builtin_popcount(bit0);
    st->twos += __builtin_popcount(bit1);
    const __m256i quads = _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, st->pair_weights), st->quad_weights);
    const __m256i gathered = _mm256_shuffle_epi8(quads, st->low_bytes);
    _mm_storel_epi64((__m128i *)packed8,
                     _mm_unpacklo_epi8(_mm256_castsi256_si128(gathered), _mm256_extracti128_si256(gathered, 1)));
    if (may_mask) {
        const uint32_t masked = ~live;
        memcpy(mask4, &masked, 4);
    }
    st->live += __builtin_popcount(live);
}

/* 2-bit rows straight to the packed format, 32 entries at a time (see the
 * AVX-512 kernel): codes narrowed by saturating packs, counted from bit planes,
 * four to a byte by two multiply-adds; after the packs dword 4L+s holds
 * entries 8s+4L.. (packed byte 2s+L), so a byte shuffle and an interleave of
 * the two 128-bit halves put the 8 packed bytes in order.  The last n % 32
 * entries go through the same block padded with -inf (masked, not counted),
 * and only their bytes are copied out, padding bits 0. */
static inline EXAQ_ALWAYS_INLINE size_t quantize_pack2_rows(const float *x, size_t n, const exaq_quantizer *q,
                                                            uint8_t *packed, uint8_t *maskbits, int64_t counts[4],
                                                            const int may_mask, const int shifted) {
    pack2_state st = {_mm256_set1_ps(q->sub), _mm256_set1_ps(q->scale), _mm256_set1_ps(q->add),
                      _mm256_set1_epi16(0x0401), _mm256_set1_epi32(0x00100001),
                      _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                       0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                      0, 0, 0, 0};
    size_t j = 0;
    /* without may_mask the bitmap may be NULL: no pointer into it is formed */
    for (; j + 32 <= n; j += 32)
        pack2_block32(x + j, packed + j / 4, may_mask ? maskbits + j / 8 : NULL, &st, may_mask, shifted);
    if (j < n) {
        const size_t rest = n - j;
        float padded[32];
        uint8_t packed8[8], mask4[4];
        pad32(padded, x + j, rest);
        pack2_block32(padded, packed8, mask4, &st, 1, shifted);
        memcpy(packed + j / 4, packed8, EXAQ_PACKED_BYTES(rest, 2)); /* padding codes are 0 */
        if (may_mask) {
            const size_t mbytes = EXAQ_MASK_BYTES(rest);
            if (rest % 8) mask4[mbytes - 1] &= (uint8_t)((1u << (rest % 8)) - 1u); /* padding bits 0 */
            memcpy(maskbits + j / 8, mask4, mbytes);
        }
    }
    counts[0] += st.live - st.ones - st.twos + st.threes;
    counts[1] += st.ones - st.threes;
    counts[2] += st.twos - st.threes;
    counts[3] += st.threes;
    return n - (size_t)st.live;
}

static size_t quantize_pack2_avx2(const float *x, size_t n, const exaq_quantizer *q, uint8_t *packed,
                                  uint8_t *maskbits, int64_t counts[4]) {
    const int shifted = q->sub != 0.0f;
    if (q->may_mask && shifted) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 1, 1);
    if (q->may_mask) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 1, 0);
    if (shifted) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 0, 1);
    return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 0, 0);
}

static void softmax_pack2_rows_avx2(const float *x, size_t rows, size_t n, ptrdiff_t xs, const float *shifts,
                                    const exaq_quantizer *q, const double e[EXAQ_MAX_CODES], uint8_t *packed,
                                    ptrdiff_t ps, float *tables) {
    exaq_quantizer row_q = *q;
    for (size_t r = 0; r < rows; ++r) {
        exaq_quantizer_reshift(&row_q, shifts[r], 0);
        const float *row = x + (ptrdiff_t)r * xs;
        uint8_t *out = packed + (ptrdiff_t)r * ps;
        int64_t counts[EXAQ_MAX_CODES] = {0, 0, 0, 0};
        /* no -inf: the bitmap is neither needed nor written */
        if (row_q.sub != 0.0f) quantize_pack2_rows(row, n, &row_q, out, NULL, counts, 0, 1);
        else quantize_pack2_rows(row, n, &row_q, out, NULL, counts, 0, 0);
        float table[EXAQ_MAX_CODES];
        exaq_probability_table(counts, e, 3, table);
        memcpy(tables + 4 * r, table, 4 * sizeof *table);
    }
}

static void expand_pack2_avx2(const uint8_t *packed, const uint8_t *maskbits, size_t n,
                              const float table[4], float *y) {
    /* the permute reads 3 index bits: code j and the low bit of code j+1 */
    const __m256 tab = _mm256_setr_ps(table[0], table[1], table[2], table[3], table[0], table[1], table[2],
                                      table[3]);
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        uint16_t word;
        memcpy(&word, packed + j / 4, 2);
        __m256 p = _mm256_permutevar8x32_ps(tab, _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts));
        if (maskbits) {
            const __m256i hit = _mm256_and_si256(_mm256_set1_epi32(maskbits[j / 8]), lane_bit);
            p = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(hit, lane_bit)), p);
        }
        _mm256_storeu_ps(y + j, p);
    }
    exaq_expand_pack2_from(packed, maskbits, j, n, table, y);
}

static inline __m256 exp256_nonpositive(__m256 t) {
    const __m256 lowest = _mm256_set1_ps(EXAQ_EXP_MIN);
    const __m256 representable = _mm256_cmp_ps(t, lowest, _CMP_GE_OQ);
    t = _mm256_max_ps(t, lowest);
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(EXAQ_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXAQ_LN2), t);
    __m256 p = _mm256_set1_ps(EXAQ_EXP_C5);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXAQ_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXAQ_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXAQ_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXAQ_EXP_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i biased = _mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127));
    const __m256 two_k = _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
    return _mm256_and_ps(_mm256_mul_ps(p, two_k), representable);
}

static double exp_store_sum_avx2(const float *x, size_t n, float shift, float *y) {
    const __m256 s = _mm256_set1_ps(shift);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + BLOCK <= n; j += BLOCK) {
        const __m256 e0 = exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
        const __m256 e1 = exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), s));
        acc0 = _mm256_add_ps(acc0, e0);
        acc1 = _mm256_add_ps(acc1, e1);
        _mm256_storeu_ps(y + j, e0);
        _mm256_storeu_ps(y + j + 8, e1);
    }
    float lanes[EXAQ_LANES];
    _mm256_storeu_ps(lanes, acc0);
    _mm256_storeu_ps(lanes + 8, acc1);
    if (j < n) { /* tail through a zero-padded block, so it uses the same exp */
        float in[BLOCK], e[BLOCK];
        const size_t rest = n - j;
        for (size_t i = 0; i < BLOCK; ++i) in[i] = i < rest ? x[j + i] : -__builtin_inff();
        _mm256_storeu_ps(e, exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(in), s)));
        _mm256_storeu_ps(e + 8, exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(in + 8), s)));
        for (size_t i = 0; i < rest; ++i) {
            y[j + i] = e[i];
            lanes[i] += e[i];
        }
    }
    double total = 0.0;
    for (int l = 0; l < EXAQ_LANES; ++l) total += lanes[l];
    return total;
}

static void scale_avx2(float *y, size_t n, float factor) {
    const __m256 f = _mm256_set1_ps(factor);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), f));
    for (; j < n; ++j) y[j] *= factor;
}

/* where the row's run of -inf at its end starts: 32 entries a compare round
 * from the end, then 8, then one */
static size_t live_end_avx2(const float *x, size_t n) {
    const __m256 masked = neg_inf8();
    size_t end = n;
    for (; end >= 32; end -= 32) {
        const float *p = x + end - 32;
        const __m256 all = _mm256_and_ps(
            _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(p), masked, _CMP_EQ_OQ),
                          _mm256_cmp_ps(_mm256_loadu_ps(p + 8), masked, _CMP_EQ_OQ)),
            _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(p + 16), masked, _CMP_EQ_OQ),
                          _mm256_cmp_ps(_mm256_loadu_ps(p + 24), masked, _CMP_EQ_OQ)));
        if (_mm256_movemask_ps(all) != 0xFF) break;
    }
    for (; end >= 8; end -= 8)
        if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + end - 8), masked, _CMP_EQ_OQ)) != 0xFF) break;
    while (end > 0 && exaq_is_masked(x[end - 1])) --end;
    return end;
}

const exaq_softmax_kernels exaq_softmax_avx2 = {
    .row_max = row_max_avx2,
    .row_stats = row_stats_avx2,
    .row_stats_rows = row_stats_rows_avx2,
    .moments = moments_avx2,
    .abs_deviation = abs_deviation_avx2,
    .quantize_count = quantize_count_avx2,
    .expand = expand_avx2,
    .exp_store_sum = exp_store_sum_avx2,
    .scale = scale_avx2,
    .quantize_pack2 = quantize_pack2_avx2,
    .expand_pack2 = expand_pack2_avx2,
    .softmax2_rows = softmax2_rows_avx2,
    .softmax_pack2_rows = softmax_pack2_rows_avx2,
    .packed = &exaq_packed_avx2,
    .live_end = live_end_avx2,
};
