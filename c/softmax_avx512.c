/* AVX-512 (F/BW/VL/VBMI) softmax kernels.  Compiled with AVX-512 flags; only
 * called when dispatch has seen the CPU and OS support them.  Whole vectors
 * in the main loops; the last n % 16 entries use masked loads and stores, so
 * nothing outside the row is touched. */
#include <immintrin.h>
#include <string.h>

#include "softmax_common.h"

#define W 16

static inline __mmask16 first_lanes(size_t count) {
    return count >= W ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u);
}

static inline __mmask16 unmasked16(__m512 v) {
    return _mm512_cmp_ps_mask(v, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_UQ);
}

/* One vector's lanes `m` into the maxima, minimum and NaN test */
static inline EXAQ_ALWAYS_INLINE void max_step(__m512 *vmax, __m512 *vmin, __mmask16 *bad, __m512 v, __mmask16 m,
                                               const int whole) {
    if (whole) {
        *bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        *vmax = _mm512_max_ps(v, *vmax); /* a NaN in v keeps vmax */
        *vmin = _mm512_min_ps(v, *vmin);
    } else {
        *bad |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
        *vmax = _mm512_mask_max_ps(*vmax, m, v, *vmax);
        *vmin = _mm512_mask_min_ps(*vmin, m, v, *vmin);
    }
}

/* Four running maxima, so no max waits on the one before; the minimum tells
 * whether a -inf is there.  Loads are 64-byte aligned (the order of a max does
 * not matter): the vectors at the ends of the row are masked. */
static float row_max_avx512(const float *x, size_t n, int *specials) {
    *specials = 0;
    if (n == 0) return -__builtin_inff();
    __m512 vmax[4], vmin = _mm512_set1_ps(__builtin_inff());
    for (int g = 0; g < 4; ++g) vmax[g] = _mm512_set1_ps(-__builtin_inff());
    __mmask16 bad = 0;
    const size_t skew = ((uintptr_t)x / sizeof(float)) % W, to = n + skew;
    const float *base = (const float *)((uintptr_t)x - skew * sizeof(float));
    size_t i = 0; /* aligned vector i holds base indices 16i .. 16i + 15; the row is [skew, to) */
    if (skew) {
        const __mmask16 m = (__mmask16)(first_lanes(to < W ? to : W) & ~first_lanes(skew));
        max_step(&vmax[0], &vmin, &bad, _mm512_maskz_loadu_ps(m, base), m, 0);
        i = 1;
    }
    for (; W * (i + 4) <= to; i += 4)
        for (int g = 0; g < 4; ++g) max_step(&vmax[g], &vmin, &bad, _mm512_load_ps(base + W * (i + g)), 0xFFFF, 1);
    for (; W * i < to; ++i) {
        const __mmask16 m = first_lanes(to - W * i);
        max_step(&vmax[0], &vmin, &bad, _mm512_maskz_loadu_ps(m, base + W * i), m, 0);
    }
    const float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(vmax[0], vmax[1]), _mm512_max_ps(vmax[2], vmax[3])));
    *specials = exaq_row_specials(bad != 0, mx, _mm512_reduce_min_ps(vmin) == -__builtin_inff());
    return mx;
}

#define STAT_GROUPS (EXAQ_STAT_LANES / W)

/* The statistics pass loads 64-byte aligned vectors (a load that straddles two
 * cache lines costs this CPU twice).  When the row starts `skew` floats past a
 * 64-byte boundary, aligned vector i holds entries 16i - skew .. 16i - skew + 15,
 * so physical lane P = 16 * (i % 4) + p of the accumulators gathers entry e
 * with P = (e + skew) % 64: the statistics lanes (e % 64) rotated by skew,
 * each lane adding its entries in the same order.  A block boundary cuts the
 * aligned vector that straddles it.  The folds and the lane tree pair lanes
 * cyclically (exaq_stat_lanes in softmax_common.h), so rotated lanes meet the
 * same partners and, IEEE addition being commutative, the totals are those of
 * the lane schedule bit for bit. */
typedef struct {
    __m512 vmax[STAT_GROUPS], vmin, sum[STAT_GROUPS], sumsq[STAT_GROUPS];
    __m512d wide_sum[2], wide_sumsq[2]; /* EXAQ_STAT_WIDE double lanes */
    int64_t unmasked;
} stats512;

/* One vector into the accumulators of lane group g.  The constant flags drop
 * the min, the subtraction of a zero pilot and the -inf test.  Odd groups add
 * with an FMA by 1 (the same rounded sum): the max and the adds then share
 * this CPU's FP adders with the multiply-add units instead of queueing. */
static inline EXAQ_ALWAYS_INLINE void stats_step(stats512 *s, const int g, __m512 v, __mmask16 m, __m512 pilot,
                                                 const int with_min, const int centered, const int no_mask) {
    const __mmask16 live = no_mask ? m : m & unmasked16(v);
    s->unmasked += __builtin_popcount((unsigned)live);
    s->vmax[g] = _mm512_mask_max_ps(s->vmax[g], m, v, s->vmax[g]); /* -inf and NaN never win */
    if (with_min) s->vmin = _mm512_mask_min_ps(s->vmin, live, s->vmin, v);
    const __m512 d = centered ? _mm512_sub_ps(v, pilot) : v;
    if (g & 1)
        s->sum[g] = _mm512_mask3_fmadd_ps(d, _mm512_set1_ps(1.0f), s->sum[g], live);
    else
        s->sum[g] = _mm512_mask_add_ps(s->sum[g], live, s->sum[g], d);
    s->sumsq[g] = _mm512_mask3_fmadd_ps(d, d, s->sumsq[g], live);
}

/* four vectors from `at`, whole (masks NULL) or lanes masks[g] of vector g */
static inline EXAQ_ALWAYS_INLINE void stats_chunk(stats512 *s, const float *at, const __mmask16 *masks,
                                                  __m512 pilot, const int with_min, const int centered,
                                                  const int no_mask) {
#define STATS_GROUP(g)                                                                               \
    do {                                                                                             \
        if (masks)                                                                                   \
            stats_step(s, g, _mm512_maskz_loadu_ps(masks[g], at + W * (g)), masks[g], pilot, with_min, \
                       centered, no_mask);                                                           \
        else                                                                                         \
            stats_step(s, g, _mm512_loadu_ps(at + W * (g)), 0xFFFF, pilot, with_min, centered, no_mask); \
    } while (0)
    STATS_GROUP(0);
    STATS_GROUP(1);
    STATS_GROUP(2);
    STATS_GROUP(3);
#undef STATS_GROUP
}

/* lanes `m` of one vector of group 0 */
static inline EXAQ_ALWAYS_INLINE void stats_first(stats512 *s, const float *at, __mmask16 m, __m512 pilot,
                                                  const int with_min, const int centered, const int no_mask) {
    stats_step(s, 0, _mm512_maskz_loadu_ps(m, at), m, pilot, with_min, centered, no_mask);
}

/* exaq_stat_lanes_flush: the four groups folded in float, added to the double lanes */
static inline void fold512(__m512 f[STAT_GROUPS], __m512d wide[2]) {
    const __m512 folded = _mm512_add_ps(_mm512_add_ps(f[0], f[2]), _mm512_add_ps(f[1], f[3]));
    wide[0] = _mm512_add_pd(wide[0], _mm512_cvtps_pd(_mm512_castps512_ps256(folded)));
    wide[1] = _mm512_add_pd(wide[1], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(folded), 1))));
    for (int g = 0; g < STAT_GROUPS; ++g) f[g] = _mm512_setzero_ps();
}

/* exaq_tree_total over 16 double lanes (lane l in vector l / 8) */
static inline double tree_total16(const __m512d wide[2]) {
    const __m512d eight = _mm512_add_pd(wide[0], wide[1]);
    const __m256d four = _mm256_add_pd(_mm512_castpd512_pd256(eight), _mm512_extractf64x4_pd(eight, 1));
    const __m128d two = _mm_add_pd(_mm256_castpd256_pd128(four), _mm256_extractf128_pd(four, 1));
    return _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)));
}

/* lanes of aligned vector i (at base index 16i) holding base indices in [from, to) */
static inline __mmask16 lanes_between(size_t i, size_t from, size_t to) {
    const size_t at = W * i;
    if (to <= at || from >= at + W) return 0;
    const unsigned lo = from > at ? (unsigned)(from - at) : 0u;
    const unsigned hi = to >= at + W ? (unsigned)W : (unsigned)(to - at);
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

static inline EXAQ_ALWAYS_INLINE void stats_edge_chunk(stats512 *s, const float *base, size_t i, size_t from,
                                                       size_t to, __m512 pilot, const int with_min,
                                                       const int centered, const int no_mask) {
    __mmask16 masks[4];
    for (int g = 0; g < 4; ++g) masks[g] = lanes_between(i + (size_t)g, from, to);
    stats_chunk(s, base + W * i, masks, pilot, with_min, centered, no_mask); /* mask 0: no access */
}

static inline EXAQ_ALWAYS_INLINE void row_stats_variant(const float *x, size_t n, float pilot, exaq_row_stats *out,
                                                        const int with_min, const int centered, const int no_mask) {
    /* any skew gives the same sums; this one makes the whole vectors aligned */
    const size_t skew = ((uintptr_t)x / sizeof(float)) % W;
    const float *base = (const float *)((uintptr_t)x - skew * sizeof(float));
    const __m512 p = _mm512_set1_ps(pilot);
    stats512 s;
    for (int g = 0; g < STAT_GROUPS; ++g) {
        s.vmax[g] = _mm512_set1_ps(-__builtin_inff());
        s.sum[g] = s.sumsq[g] = _mm512_setzero_ps();
    }
    s.vmin = _mm512_set1_ps(__builtin_inff());
    s.wide_sum[0] = s.wide_sum[1] = s.wide_sumsq[0] = s.wide_sumsq[1] = _mm512_setzero_pd();
    s.unmasked = 0;
    for (size_t block = 0; block < n; block += EXAQ_FLUSH) {
        const size_t end = n - block < EXAQ_FLUSH ? n : block + EXAQ_FLUSH;
        /* base indices [from, to) are the block's entries, in aligned vectors
         * first .. last - 1 (first a multiple of 4, as block is); whole chunks
         * of four vectors in [mid, mid_end), partial chunks around them */
        const size_t from = block + skew, to = end + skew;
        const size_t first = from / W, last = (to + W - 1) / W;
        const size_t mid = (from % W) ? first + 4 : first;
        size_t mid_end = (to / W) & ~(size_t)3;
        if (mid_end < mid) mid_end = mid;
        size_t i = first;
        if (i < mid && to >= W * (first + 4)) { /* a vector cut at the start, three whole */
            stats_first(&s, base + W * i, lanes_between(i, from, to), p, with_min, centered, no_mask);
            for (int g = 1; g < 4; ++g)
                stats_step(&s, g, _mm512_loadu_ps(base + W * (i + g)), 0xFFFF, p, with_min, centered, no_mask);
            i = mid;
        } else if (i < mid) {
            stats_edge_chunk(&s, base, i, from, to, p, with_min, centered, no_mask);
            i = mid;
        }
        for (; i < mid_end; i += 4) stats_chunk(&s, base + W * i, NULL, p, with_min, centered, no_mask);
        if (last == i + 1) /* the vector cut by the end of the block */
            stats_first(&s, base + W * i, lanes_between(i, from, to), p, with_min, centered, no_mask);
        else
            for (; i < last; i += 4) stats_edge_chunk(&s, base, i, from, to, p, with_min, centered, no_mask);
        fold512(s.sum, s.wide_sum);
        fold512(s.sumsq, s.wide_sumsq);
    }
    for (int g = 1; g < STAT_GROUPS; ++g) s.vmax[0] = _mm512_max_ps(s.vmax[0], s.vmax[g]);
    out->max = _mm512_reduce_max_ps(s.vmax[0]);
    out->min = with_min ? _mm512_reduce_min_ps(s.vmin) : __builtin_nanf("");
    out->unmasked = s.unmasked;
    out->sum = tree_total16(s.wide_sum);
    out->sumsq = tree_total16(s.wide_sumsq);
    out->masked_from = n;
}

EXAQ_DEFINE_ROW_STATS(avx512)

static inline __m512d low_half_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d high_half_pd(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

static void moments_avx512(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                           double sumsq[EXAQ_LANES]) {
    const __m512d s = _mm512_set1_pd((double)shift);
    __m512d sum0 = _mm512_loadu_pd(sum), sum1 = _mm512_loadu_pd(sum + 8);
    __m512d sq0 = _mm512_loadu_pd(sumsq), sq1 = _mm512_loadu_pd(sumsq + 8);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = m & unmasked16(v);
        const __mmask8 live0 = (__mmask8)live, live1 = (__mmask8)(live >> 8);
        const __m512d t0 = _mm512_sub_pd(low_half_pd(v), s);
        const __m512d t1 = _mm512_sub_pd(high_half_pd(v), s);
        sum0 = _mm512_mask_add_pd(sum0, live0, sum0, t0);
        sum1 = _mm512_mask_add_pd(sum1, live1, sum1, t1);
        sq0 = _mm512_mask_add_pd(sq0, live0, sq0, _mm512_mul_pd(t0, t0));
        sq1 = _mm512_mask_add_pd(sq1, live1, sq1, _mm512_mul_pd(t1, t1));
    }
    _mm512_storeu_pd(sum, sum0);
    _mm512_storeu_pd(sum + 8, sum1);
    _mm512_storeu_pd(sumsq, sq0);
    _mm512_storeu_pd(sumsq + 8, sq1);
}

static void abs_deviation_avx512(const float *x, size_t n, float shift, double center,
                                 double sum[EXAQ_LANES]) {
    const __m512d s = _mm512_set1_pd((double)shift), c = _mm512_set1_pd(center);
    __m512d sum0 = _mm512_loadu_pd(sum), sum1 = _mm512_loadu_pd(sum + 8);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = m & unmasked16(v);
        const __m512d d0 = _mm512_sub_pd(_mm512_sub_pd(low_half_pd(v), s), c);
        const __m512d d1 = _mm512_sub_pd(_mm512_sub_pd(high_half_pd(v), s), c);
        sum0 = _mm512_mask_add_pd(sum0, (__mmask8)live, sum0, _mm512_abs_pd(d0));
        sum1 = _mm512_mask_add_pd(sum1, (__mmask8)(live >> 8), sum1, _mm512_abs_pd(d1));
    }
    _mm512_storeu_pd(sum, sum0);
    _mm512_storeu_pd(sum + 8, sum1);
}

typedef struct {
    __m512 sub, scale, add;
} quantizer512;

static inline quantizer512 quantizer512_of(const exaq_quantizer *q) {
    const quantizer512 v = {_mm512_set1_ps(q->sub), _mm512_set1_ps(q->scale), _mm512_set1_ps(q->add)};
    return v;
}

/* Codes of 16 entries as 32-bit lanes, before the clamp at code 0 (see
 * exaq_quantizer): lanes outside `live` get `fill`.  shifted = 0: sub is 0. */
static inline __m512i raw_codes16(__m512 x, __mmask16 live, const quantizer512 *q, const int shifted, int fill) {
    const __m512 v = _mm512_fmadd_ps(shifted ? _mm512_sub_ps(x, q->sub) : x, q->scale, q->add);
    return _mm512_mask_cvt_roundps_epi32(_mm512_set1_epi32(fill), live, v,
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Raw codes of 64 whole entries; masked lanes (tested only if may_mask) get `fill` */
static inline void codes64(const float *x, const quantizer512 *vq, const int may_mask, const int shifted,
                           int fill, __m512i c[4], __mmask16 live[4]) {
    for (int g = 0; g < 4; ++g) {
        const __m512 v = _mm512_loadu_ps(x + W * g);
        live[g] = may_mask ? unmasked16(v) : (__mmask16)0xFFFF;
        c[g] = raw_codes16(v, live[g], vq, shifted, fill);
    }
}

/* Four vectors of 32-bit codes -> 64 byte codes in entry order.  The signed
 * then unsigned saturation clamps every negative code to 0. */
static inline __m512i narrow_codes64(__m512i c0, __m512i c1, __m512i c2, __m512i c3) {
    /* the packs work within 128-bit lanes: dword 4L+s of the result holds
     * entries 4L..4L+3 of source s; gather them back into source order */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(c0, c1), _mm512_packs_epi32(c2, c3));
    return _mm512_permutexvar_epi32(order, bytes);
}

/* Code counts from bit planes (exaq_add_planes in softmax_common.h) */
static inline void count_planes(__m512i bytes, int bits, int64_t planes[EXAQ_MAX_CODES]) {
    uint64_t b[4] = {0, 0, 0, 0};
    for (int i = 0; i < bits; ++i)
        b[i] = _cvtmask64_u64(_mm512_test_epi8_mask(bytes, _mm512_set1_epi8((char)(1 << i))));
    const uint64_t masked = _cvtmask64_u64(_mm512_test_epi8_mask(bytes, _mm512_set1_epi8(EXAQ_MASKED_CODE)));
    exaq_add_planes(b, masked, 64, bits, planes);
}

/* 4-bit counts: code k adds 1 << 8*(k % 4) to the 32-bit lanes of counter
 * k / 4 (a one-hot byte read with a permute), so each counter holds four byte
 * counts per lane, drained before a byte can overflow.  Cheaper than the 15
 * bit-plane intersections. */
typedef struct {
    __m512i one_hot[4], acc[4];
    int blocks;
} byte_counters;

static inline void byte_counters_init(byte_counters *b) {
    for (int g = 0; g < 4; ++g) {
        int32_t t[W];
        for (int k = 0; k < W; ++k) t[k] = (k / 4 == g) ? (int32_t)(1u << (8 * (k % 4))) : 0;
        b->one_hot[g] = _mm512_loadu_si512(t);
        b->acc[g] = _mm512_setzero_si512();
    }
    b->blocks = 0;
}

static inline void byte_counters_drain(byte_counters *b, int64_t counts[EXAQ_MAX_CODES]) {
    const __m512i byte = _mm512_set1_epi32(0xFF);
    for (int g = 0; g < 4; ++g) {
        for (int k = 0; k < 4; ++k)
            counts[4 * g + k] += _mm512_reduce_add_epi32(_mm512_and_si512(_mm512_srli_epi32(b->acc[g], 8 * k), byte));
        b->acc[g] = _mm512_setzero_si512();
    }
    b->blocks = 0;
}

/* codes of four vectors (raw, before the clamp at 0), lanes outside live uncounted */
static inline void byte_counters_add(byte_counters *b, const __m512i c[4], const __mmask16 live[4],
                                     int64_t counts[EXAQ_MAX_CODES]) {
    for (int v = 0; v < 4; ++v) {
        const __m512i code = _mm512_max_epi32(c[v], _mm512_setzero_si512());
        for (int g = 0; g < 4; ++g)
            b->acc[g] = _mm512_mask_add_epi32(b->acc[g], live[v], b->acc[g], _mm512_permutexvar_epi32(code, b->one_hot[g]));
    }
    if (++b->blocks == 63) byte_counters_drain(b, counts);
}

static inline EXAQ_ALWAYS_INLINE void quantize_count_bits(const float *x, size_t n, const exaq_quantizer *q,
                                       uint8_t *codes, int64_t counts[EXAQ_MAX_CODES],
                                       const int bits, const int may_mask, const int shifted) {
    const quantizer512 vq = quantizer512_of(q);
    int64_t planes[EXAQ_MAX_CODES] = {0};
    byte_counters bc;
    if (bits == 4) byte_counters_init(&bc);
    size_t j = 0;
    for (; j + 4 * W <= n; j += 4 * W) {
        __m512i c[4];
        __mmask16 live[4];
        codes64(x + j, &vq, may_mask, shifted, EXAQ_MASKED_CODE, c, live);
        const __m512i bytes = narrow_codes64(c[0], c[1], c[2], c[3]);
        _mm512_storeu_si512(codes + j, bytes);
        if (bits == 4) {
            byte_counters_add(&bc, c, live, counts);
        } else {
            count_planes(bytes, bits, planes);
        }
    }
    if (bits == 4) byte_counters_drain(&bc, counts);
    if (j < n) { /* lanes past the row read as masked, and are not stored */
        __m512i c[4];
        for (int g = 0; g < 4; ++g) {
            const size_t at = j + W * g;
            const __mmask16 m = at < n ? first_lanes(n - at) : 0;
            const __m512 v = _mm512_maskz_loadu_ps(m, x + (at < n ? at : j));
            c[g] = raw_codes16(v, m & unmasked16(v), &vq, shifted, EXAQ_MASKED_CODE);
        }
        const __m512i bytes = narrow_codes64(c[0], c[1], c[2], c[3]);
        _mm512_mask_storeu_epi8(codes + j, (__mmask64)(~(uint64_t)0 >> (64 - (n - j))), bytes);
        count_planes(bytes, bits, planes);
    }
    exaq_counts_from_planes(planes, bits, counts);
}

#define QUANTIZE_COUNT(bits)                                                                   \
    do {                                                                                       \
        if (q->may_mask && shifted) quantize_count_bits(x, n, q, codes, counts, bits, 1, 1);   \
        else if (q->may_mask) quantize_count_bits(x, n, q, codes, counts, bits, 1, 0);         \
        else if (shifted) quantize_count_bits(x, n, q, codes, counts, bits, 0, 1);             \
        else quantize_count_bits(x, n, q, codes, counts, bits, 0, 0);                          \
    } while (0)

static void quantize_count_avx512(const float *x, size_t n, const exaq_quantizer *q,
                                  uint8_t *codes, int64_t counts[EXAQ_MAX_CODES]) {
    const int shifted = q->sub != 0.0f;
    if (q->levels <= 3) QUANTIZE_COUNT(2);
    else if (q->levels <= 7) QUANTIZE_COUNT(3);
    else QUANTIZE_COUNT(4);
}

static void expand_avx512(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES],
                          float *y) {
    const __m512 tab = _mm512_loadu_ps(table), zeros = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + W <= n; j += W) {
        const __m512i code = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + j)));
        _mm512_storeu_ps(y + j, _mm512_permutex2var_ps(tab, code, zeros));
    }
    if (j < n) {
        const __mmask16 m = first_lanes(n - j);
        const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + j));
        _mm512_mask_storeu_ps(y + j, m, _mm512_permutex2var_ps(tab, code, zeros));
    }
}

/* 2-bit rows straight to the packed format: the codes of 64 entries are
 * narrowed to bytes (without restoring entry order), counted from their bit
 * planes, and packed four to a byte by two multiply-adds; one byte permute
 * then puts the 16 packed bytes in entry order. */
static inline uint64_t lanes64(__mmask16 m0, __mmask16 m1, __mmask16 m2, __mmask16 m3) {
    return (uint64_t)m0 | (uint64_t)m1 << 16 | (uint64_t)m2 << 32 | (uint64_t)m3 << 48;
}

typedef struct {
    quantizer512 vq;
    __m512i pair_weights, quad_weights, order;
    int64_t bit0, bit1, threes, live;
} pack2_state;

/* Entries j .. j + count - 1 of the row (j a multiple of 64, count <= 64;
 * whole: count is 64): packed bytes from j / 4, mask bytes from j / 8 (the
 * bytes of the entries, padding 0 at the end of the row). */
static inline EXAQ_ALWAYS_INLINE void pack2_chunk(pack2_state *st, const float *x, size_t j, size_t count,
                                                  uint8_t *packed, uint8_t *maskbits, const int whole,
                                                  const int may_mask, const int shifted) {
    __m512i c[4];
    __mmask16 live[4];
    if (whole) {
        codes64(x + j, &st->vq, may_mask, shifted, 0, c, live);
    } else {
        for (int g = 0; g < 4; ++g) {
            const size_t at = (size_t)W * (size_t)g;
            const __mmask16 m = at < count ? first_lanes(count - at) : 0;
            const __m512 v = _mm512_maskz_loadu_ps(m, x + j + (m ? at : 0));
            live[g] = may_mask ? (__mmask16)(m & unmasked16(v)) : m;
            c[g] = raw_codes16(v, live[g], &st->vq, shifted, 0);
        }
    }
    /* saturation clamps negative codes to 0; masked lanes are 0 too */
    const __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(c[0], c[1]), _mm512_packs_epi32(c[2], c[3]));
    const uint64_t bit0 = _cvtmask64_u64(_mm512_test_epi8_mask(bytes, _mm512_set1_epi8(1)));
    const uint64_t bit1 = _cvtmask64_u64(_mm512_test_epi8_mask(bytes, _mm512_set1_epi8(2)));
    st->threes += __builtin_popcountll(bit0 & bit1);
    st->bit0 += __builtin_popcountll(bit0);
    st->bit1 += __builtin_popcountll(bit1);
    const __m512i quads = _mm512_madd_epi16(_mm512_maddubs_epi16(bytes, st->pair_weights), st->quad_weights);
    const __m128i out = _mm512_castsi512_si128(_mm512_permutexvar_epi8(st->order, quads));
    const uint64_t live_lanes = lanes64(live[0], live[1], live[2], live[3]);
    st->live += __builtin_popcountll(live_lanes);
    if (whole) {
        _mm_storeu_si128((__m128i *)(packed + j / 4), out);
        if (may_mask) {
            const uint64_t masked = ~live_lanes;
            memcpy(maskbits + j / 8, &masked, 8);
        }
    } else {
        _mm_mask_storeu_epi8(packed + j / 4, (__mmask16)((1u << ((count + 3) / 4)) - 1u), out);
        if (may_mask) {
            const uint64_t masked = ~live_lanes & (~(uint64_t)0 >> (64 - count));
            _mm_mask_storeu_epi8(maskbits + j / 8, (__mmask16)((1u << ((count + 7) / 8)) - 1u),
                                 _mm_cvtsi64_si128((long long)masked));
        }
    }
}

/* Whole chunks, then the end of the row as one partial chunk.  (Starting
 * with a partial chunk to align the loads, as the statistics pass does, costs
 * here as much as it saves.) */
static inline EXAQ_ALWAYS_INLINE size_t quantize_pack2_rows(const float *x, size_t n, const exaq_quantizer *q,
                                                            uint8_t *packed, uint8_t *maskbits, int64_t counts[4],
                                                            const int may_mask, const int shifted) {
    /* after the packs, dword 4L+s holds entries 16s+4L .. 16s+4L+3: packed
     * byte 4s+L is the low byte of that dword (i = 4s+L -> 4 * (4L+s)) */
    static const uint8_t gather[64] = {0, 16, 32, 48, 4, 20, 36, 52, 8, 24, 40, 56, 12, 28, 44, 60};
    pack2_state st;
    st.vq = quantizer512_of(q);
    st.pair_weights = _mm512_set1_epi16(0x0401);      /* bytes (1, 4) */
    st.quad_weights = _mm512_set1_epi32(0x00100001); /* words (1, 16) */
    st.order = _mm512_loadu_si512(gather);
    st.bit0 = st.bit1 = st.threes = st.live = 0;
    size_t j = 0;
    for (; j + 4 * W <= n; j += 4 * W) pack2_chunk(&st, x, j, 4 * W, packed, maskbits, 1, may_mask, shifted);
    if (j < n) pack2_chunk(&st, x, j, n - j, packed, maskbits, 0, may_mask, shifted);
    const int64_t ones = st.bit0 - st.threes, twos = st.bit1 - st.threes;
    counts[0] += st.live - ones - twos - st.threes;
    counts[1] += ones;
    counts[2] += twos;
    counts[3] += st.threes;
    return n - (size_t)st.live;
}

static size_t quantize_pack2_avx512(const float *x, size_t n, const exaq_quantizer *q, uint8_t *packed,
                                    uint8_t *maskbits, int64_t counts[4]) {
    const int shifted = q->sub != 0.0f;
    if (q->may_mask && shifted) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 1, 1);
    if (q->may_mask) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 1, 0);
    if (shifted) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 0, 1);
    return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 0, 0);
}

static void expand_pack2_avx512(const uint8_t *packed, const uint8_t *maskbits, size_t n,
                                const float table[4], float *y) {
    /* the permute reads 4 index bits: code j and the low bits of code j+1, so
     * the table is repeated four times */
    const __m512 tab = _mm512_setr_ps(table[0], table[1], table[2], table[3], table[0], table[1], table[2],
                                      table[3], table[0], table[1], table[2], table[3], table[0], table[1],
                                      table[2], table[3]);
    const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    size_t j = 0;
    for (; j + W <= n; j += W) {
        uint32_t word;
        memcpy(&word, packed + j / 4, 4);
        __m512 p = _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi32((int)word), shifts), tab);
        if (maskbits) {
            uint16_t m;
            memcpy(&m, maskbits + j / 8, 2);
            p = _mm512_maskz_mov_ps((__mmask16)~m, p);
        }
        _mm512_storeu_ps(y + j, p);
    }
    exaq_expand_pack2_from(packed, maskbits, j, n, table, y);
}

/* exp(t) for t <= 0, 0 below EXAQ_EXP_MIN (as the scalar kernel), masked
 * (-inf) entries included.  t is clamped at EXAQ_EXP_MIN first, so no lane
 * ever computes a denormal or underflowing result: those take a microcode
 * assist of ~100 cycles per instruction on Intel cores, which made the exact
 * softmax of causal rows (half of them -inf) three times slower. */
static inline __m512 exp512_nonpositive(__m512 t) {
    const __mmask16 representable = _mm512_cmp_ps_mask(t, _mm512_set1_ps(EXAQ_EXP_MIN), _CMP_GE_OQ);
    t = _mm512_max_ps(t, _mm512_set1_ps(EXAQ_EXP_MIN));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(EXAQ_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXAQ_LN2), t);
    __m512 p = _mm512_set1_ps(EXAQ_EXP_C5);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(representable, p, k);
}

static double exp_store_sum_avx512(const float *x, size_t n, float shift, float *y) {
    const __m512 s = _mm512_set1_ps(shift);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {
        const __m512 e0 = exp512_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + j), s));
        const __m512 e1 = exp512_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + j + W), s));
        acc0 = _mm512_add_ps(acc0, e0);
        acc1 = _mm512_add_ps(acc1, e1);
        _mm512_storeu_ps(y + j, e0);
        _mm512_storeu_ps(y + j + W, e1);
    }
    for (; j < n; j += W) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 e = exp512_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), s));
        acc0 = _mm512_mask_add_ps(acc0, m, acc0, e);
        _mm512_mask_storeu_ps(y + j, m, e);
    }
    return (double)_mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

static void scale_avx512(float *y, size_t n, float factor) {
    const __m512 f = _mm512_set1_ps(factor);
    size_t j = 0;
    for (; j + W <= n; j += W) _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_loadu_ps(y + j), f));
    if (j < n) {
        const __mmask16 m = first_lanes(n - j);
        _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + j), f));
    }
}

const exaq_softmax_kernels exaq_softmax_avx512 = {
    .row_max = row_max_avx512,
    .row_stats = row_stats_avx512,
    .row_stats_rows = row_stats_rows_avx512,
    .moments = moments_avx512,
    .abs_deviation = abs_deviation_avx512,
    .quantize_count = quantize_count_avx512,
    .expand = expand_avx512,
    .exp_store_sum = exp_store_sum_avx512,
    .scale = scale_avx512,
    .quantize_pack2 = quantize_pack2_avx512,
    .expand_pack2 = expand_pack2_avx512,
    .packed = &exaq_packed_avx512,
    /* .live_end left NULL: the driver uses the scalar one */
};
