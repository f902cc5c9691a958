/* AArch64 Advanced SIMD (NEON) softmax kernels, baseline ISA, no extra flags.
 * Every lane-reduced sum follows the schedule of exaq.h (EXAQ_LANES,
 * EXAQ_FLUSH, EXAQ_STAT_LANES, EXAQ_STAT_WIDE) so the results equal the scalar
 * kernels bit for bit; the entries a kernel does not vectorize go through the
 * scalar helpers of softmax_common.h, which keeps the lane order and never
 * reads past the row.
 *
 * Must be compiled with -ffp-contract=off (as every kernel file): GCC's
 * vmulq_f32/vaddq_f32 are plain C operators and could otherwise be fused into
 * fmla, which the scalar reference does not do.  vfmaq_f32 is used only where
 * the scalar code calls fmaf. */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels read float tables as bytes (tbl): little-endian AArch64 only"
#endif
#include <string.h>

#include "softmax_common.h"

#define BLOCK EXAQ_LANES                  /* 16 entries = 4 vectors */
#define STAT_VECTORS (EXAQ_STAT_LANES / 4) /* 16 vectors of float lanes */

static inline float32x4_t neg_inf4(void) { return vdupq_n_f32(-__builtin_inff()); }
static inline float32x4_t pos_inf4(void) { return vdupq_n_f32(__builtin_inff()); }

/* all-ones lanes where v is not -inf (NaN included: it is not masked) */
static inline uint32x4_t live4(float32x4_t v) { return vmvnq_u32(vceqq_f32(v, neg_inf4())); }

/* all-ones lanes where v is NaN */
static inline uint32x4_t nan4(float32x4_t v) { return vmvnq_u32(vceqq_f32(v, v)); }

/* ---- row_max ---- */

/* fmaxnm ignores a NaN operand, as the scalar loop skips NaN entries; four
 * running maxima so no max waits on the one before.  The minimum says whether
 * a -inf is there. */
static float row_max_neon(const float *x, size_t n, int *specials) {
    float32x4_t vmax[4] = {neg_inf4(), neg_inf4(), neg_inf4(), neg_inf4()};
    float32x4_t vmin = pos_inf4();
    uint32x4_t bad = vdupq_n_u32(0);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (int g = 0; g < 4; ++g) {
            const float32x4_t v = vld1q_f32(x + j + 4 * g);
            bad = vorrq_u32(bad, nan4(v));
            vmin = vminnmq_f32(vmin, v);
            vmax[g] = vmaxnmq_f32(vmax[g], v);
        }
    }
    for (; j + 4 <= n; j += 4) {
        const float32x4_t v = vld1q_f32(x + j);
        bad = vorrq_u32(bad, nan4(v));
        vmin = vminnmq_f32(vmin, v);
        vmax[0] = vmaxnmq_f32(vmax[0], v);
    }
    float mx = vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(vmax[0], vmax[1]), vmaxnmq_f32(vmax[2], vmax[3])));
    int any_bad = vmaxvq_u32(bad) != 0;
    int any_masked = vminnmvq_f32(vmin) == -__builtin_inff();
    for (; j < n; ++j) {
        if (x[j] != x[j]) any_bad = 1;
        else if (exaq_is_masked(x[j])) any_masked = 1;
        else if (x[j] > mx) mx = x[j];
    }
    *specials = exaq_row_specials(any_bad, mx, any_masked);
    return mx;
}

/* ---- row statistics ---- */

typedef struct {
    float32x4_t vmax, vmin;
    uint32x4_t unmasked; /* per lane; at most EXAQ_FLUSH / 4 per block, drained per block */
} extremes128;

/* one vector of 4 entries into the lanes `sum`, `sumsq` (exaq_stats_add_one) */
static inline EXAQ_ALWAYS_INLINE void stats_step4(float32x4_t v, float32x4_t pilot, extremes128 *e,
                                                  float32x4_t *sum, float32x4_t *sumsq, const int with_min,
                                                  const int centered, const int no_mask) {
    /* fmaxnm/fminnm: a NaN never wins, as with the scalar comparisons */
    e->vmax = vmaxnmq_f32(e->vmax, v); /* -inf never wins a max */
    if (no_mask) {
        if (with_min) e->vmin = vminnmq_f32(e->vmin, v);
        const float32x4_t d = centered ? vsubq_f32(v, pilot) : v;
        *sum = vaddq_f32(*sum, d);
        *sumsq = vfmaq_f32(*sumsq, d, d); /* the scalar code's fmaf */
        return;
    }
    const uint32x4_t live = live4(v);
    e->unmasked = vsubq_u32(e->unmasked, live); /* live lanes are -1 */
    if (with_min) e->vmin = vminnmq_f32(e->vmin, vbslq_f32(live, v, pos_inf4()));
    /* masked lanes add +0.0, which leaves a sum that is never -0 unchanged */
    const float32x4_t d =
        vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(centered ? vsubq_f32(v, pilot) : v), live));
    *sum = vaddq_f32(*sum, d);
    *sumsq = vfmaq_f32(*sumsq, d, d);
}

/* exaq_stat_lanes_flush of 64 float lanes (lane l in vector l / 4): vectors
 * v and v + 8, v + 4 and v + 12 folded in float, added to the 16 double lanes,
 * then the float lanes restart from 0 */
static inline void fold128(float lanes[EXAQ_STAT_LANES], double wide[EXAQ_STAT_WIDE]) {
    for (int v = 0; v < 4; ++v) {
        const float32x4_t a = vld1q_f32(lanes + 4 * v), b = vld1q_f32(lanes + 4 * (v + 8));
        const float32x4_t c = vld1q_f32(lanes + 4 * (v + 4)), d = vld1q_f32(lanes + 4 * (v + 12));
        const float32x4_t folded = vaddq_f32(vaddq_f32(a, b), vaddq_f32(c, d));
        vst1q_f64(wide + 4 * v, vaddq_f64(vld1q_f64(wide + 4 * v), vcvt_f64_f32(vget_low_f32(folded))));
        vst1q_f64(wide + 4 * v + 2, vaddq_f64(vld1q_f64(wide + 4 * v + 2), vcvt_high_f64_f32(folded)));
    }
    memset(lanes, 0, EXAQ_STAT_LANES * sizeof(float));
}

static inline EXAQ_ALWAYS_INLINE void row_stats_variant(const float *x, size_t n, float pilot, exaq_row_stats *out,
                                                        const int with_min, const int centered, const int no_mask) {
    const int flags = (with_min ? EXAQ_STATS_MIN : 0) | (no_mask ? EXAQ_STATS_NO_MASK : 0);
    const float32x4_t p = vdupq_n_f32(pilot);
    exaq_stat_lanes lanes;
    memset(&lanes, 0, sizeof lanes);
    exaq_row_stats_init(out, n);
    extremes128 st = {neg_inf4(), pos_inf4(), vdupq_n_u32(0)};
    int64_t vector_count = 0; /* entries the vectors saw (no_mask: all of them are counted) */
    for (size_t block = 0; block < n; block += EXAQ_FLUSH) {
        const size_t end = n - block < EXAQ_FLUSH ? n : block + EXAQ_FLUSH;
        /* the 16 vectors of lanes in two halves of 8, each half a sweep over
         * the block (in L1 by the second): 2 x 16 accumulators would take all
         * 32 registers.  Every lane still adds its entries in entry order. */
        const size_t whole = block + (end - block) / EXAQ_STAT_LANES * EXAQ_STAT_LANES;
        for (int half = 0; half < 2; ++half) {
            float32x4_t sum[8], sumsq[8];
            for (int g = 0; g < 8; ++g) sum[g] = sumsq[g] = vdupq_n_f32(0.0f);
            for (size_t j = block; j < whole; j += EXAQ_STAT_LANES)
                for (int g = 0; g < 8; ++g)
                    stats_step4(vld1q_f32(x + j + 32 * half + 4 * g), p, &st, &sum[g], &sumsq[g], with_min,
                                centered, no_mask);
            for (int g = 0; g < 8; ++g) {
                vst1q_f32(lanes.sum + 32 * half + 4 * g, sum[g]);
                vst1q_f32(lanes.sumsq + 32 * half + 4 * g, sumsq[g]);
            }
        }
        size_t j = whole;
        for (int g = 0; j + 4 <= end; j += 4, ++g) { /* j - block is 4 g modulo 64 */
            float32x4_t sum = vld1q_f32(lanes.sum + 4 * g), sumsq = vld1q_f32(lanes.sumsq + 4 * g);
            stats_step4(vld1q_f32(x + j), p, &st, &sum, &sumsq, with_min, centered, no_mask);
            vst1q_f32(lanes.sum + 4 * g, sum);
            vst1q_f32(lanes.sumsq + 4 * g, sumsq);
        }
        vector_count += (int64_t)(j - block);
        for (; j < end; ++j) exaq_stats_add_one(x[j], j, pilot, flags, &lanes, out);
        fold128(lanes.sum, lanes.wide_sum);
        fold128(lanes.sumsq, lanes.wide_sumsq);
        if (!no_mask) {
            out->unmasked += (int64_t)vaddlvq_u32(st.unmasked);
            st.unmasked = vdupq_n_u32(0);
        }
    }
    if (no_mask) out->unmasked += vector_count;
    const float lane_max = vmaxnmvq_f32(st.vmax), lane_min = vminnmvq_f32(st.vmin);
    if (lane_max > out->max) out->max = lane_max;
    if (lane_min < out->min) out->min = lane_min;
    out->sum = exaq_tree_total(lanes.wide_sum, EXAQ_STAT_WIDE);
    out->sumsq = exaq_tree_total(lanes.wide_sumsq, EXAQ_STAT_WIDE);
    if (!with_min) out->min = __builtin_nanf("");
}

EXAQ_DEFINE_ROW_STATS(neon)

/* ---- double-lane moments of the overflow-proof path ---- */

/* t = (double)x - shift for two floats, zeroed where x is -inf (*masked all-ones) */
static inline float64x2_t shifted2(float32x2_t v2, float64x2_t s, uint64x2_t *masked) {
    const float64x2_t d = vcvt_f64_f32(v2);
    *masked = vceqq_f64(d, vdupq_n_f64(-__builtin_inf()));
    return vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(vsubq_f64(d, s)), *masked));
}

/* lane l of the 16 double lanes is vector l / 2 */
static void moments_neon(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                         double sumsq[EXAQ_LANES]) {
    const float64x2_t s = vdupq_n_f64((double)shift);
    float64x2_t acc[8], sq[8];
    for (int q = 0; q < 8; ++q) {
        acc[q] = vld1q_f64(sum + 2 * q);
        sq[q] = vld1q_f64(sumsq + 2 * q);
    }
    size_t j = 0;
    for (; j + BLOCK <= n; j += BLOCK) {
        for (int q = 0; q < 4; ++q) {
            const float32x4_t v = vld1q_f32(x + j + 4 * q);
            uint64x2_t masked;
            /* masked lanes add +0.0, which leaves every sum unchanged */
            const float64x2_t t0 = shifted2(vget_low_f32(v), s, &masked);
            const float64x2_t t1 = shifted2(vget_high_f32(v), s, &masked);
            acc[2 * q] = vaddq_f64(acc[2 * q], t0);
            acc[2 * q + 1] = vaddq_f64(acc[2 * q + 1], t1);
            sq[2 * q] = vaddq_f64(sq[2 * q], vmulq_f64(t0, t0)); /* no fma: the scalar code has none */
            sq[2 * q + 1] = vaddq_f64(sq[2 * q + 1], vmulq_f64(t1, t1));
        }
    }
    for (int q = 0; q < 8; ++q) {
        vst1q_f64(sum + 2 * q, acc[q]);
        vst1q_f64(sumsq + 2 * q, sq[q]);
    }
    exaq_moments_from(x, j, n, shift, sum, sumsq);
}

static void abs_deviation_neon(const float *x, size_t n, float shift, double center,
                               double sum[EXAQ_LANES]) {
    const float64x2_t s = vdupq_n_f64((double)shift), c = vdupq_n_f64(center);
    float64x2_t acc[8];
    for (int q = 0; q < 8; ++q) acc[q] = vld1q_f64(sum + 2 * q);
    size_t j = 0;
    for (; j + BLOCK <= n; j += BLOCK) {
        for (int q = 0; q < 4; ++q) {
            const float32x4_t v = vld1q_f32(x + j + 4 * q);
            for (int h = 0; h < 2; ++h) {
                uint64x2_t masked;
                const float64x2_t t = shifted2(h ? vget_high_f32(v) : vget_low_f32(v), s, &masked);
                const float64x2_t dev = vabsq_f64(vsubq_f64(t, c));
                acc[2 * q + h] =
                    vaddq_f64(acc[2 * q + h], vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(dev), masked)));
            }
        }
    }
    for (int q = 0; q < 8; ++q) vst1q_f64(sum + 2 * q, acc[q]);
    exaq_abs_deviation_from(x, j, n, shift, center, sum);
}

/* ---- quantization ---- */

/* exaq_quantize_one on 4 lanes, as int32: fma(x - sub, scale, add) (one
 * rounding, like fmaf), rounded to nearest even by fcvtns (the magic-number
 * rounding of exaq_round_even for every |v| < 2^22), negatives and NaN to 0.
 * -inf and huge negatives convert to INT32_MIN, which the max clamps. */
static inline EXAQ_ALWAYS_INLINE int32x4_t quantize4(float32x4_t v, float32x4_t sub, float32x4_t scale,
                                                     float32x4_t add, const int shifted) {
    const float32x4_t pos = vfmaq_f32(add, shifted ? vsubq_f32(v, sub) : v, scale);
    return vmaxq_s32(vcvtnq_s32_f32(pos), vdupq_n_s32(0));
}

/* 16 entries to 16 byte codes: masked entries (if may_mask) get `masked_code` */
static inline EXAQ_ALWAYS_INLINE uint8x16_t quantize16(const float *x, float32x4_t sub, float32x4_t scale,
                                                       float32x4_t add, uint8_t masked_code, const int may_mask,
                                                       const int shifted, uint8x16_t *masked_bytes) {
    int32x4_t c[4];
    uint32x4_t live[4];
    for (int g = 0; g < 4; ++g) {
        const float32x4_t v = vld1q_f32(x + 4 * g);
        c[g] = quantize4(v, sub, scale, add, shifted);
        if (may_mask) live[g] = live4(v);
    }
    /* saturating narrows: a code never exceeds 255 */
    const uint16x8_t w0 = vcombine_u16(vqmovun_s32(c[0]), vqmovun_s32(c[1]));
    const uint16x8_t w1 = vcombine_u16(vqmovun_s32(c[2]), vqmovun_s32(c[3]));
    uint8x16_t bytes = vcombine_u8(vqmovn_u16(w0), vqmovn_u16(w1));
    if (may_mask) {
        const uint16x8_t l0 = vcombine_u16(vmovn_u32(live[0]), vmovn_u32(live[1]));
        const uint16x8_t l1 = vcombine_u16(vmovn_u32(live[2]), vmovn_u32(live[3]));
        const uint8x16_t masked = vmvnq_u8(vcombine_u8(vmovn_u16(l0), vmovn_u16(l1)));
        bytes = vbslq_u8(masked, vdupq_n_u8(masked_code), bytes);
        *masked_bytes = masked;
    } else {
        *masked_bytes = vdupq_n_u8(0);
    }
    return bytes;
}

/* Codes counted with byte compares: counter k gets -1 (0xFF) per entry of
 * code k, per byte lane; 255 steps at most before the counters are drained. */
static inline EXAQ_ALWAYS_INLINE void quantize_count_rows(const float *x, size_t n, const exaq_quantizer *q,
                                                          uint8_t *codes, int64_t counts[EXAQ_MAX_CODES],
                                                          const int codes_used, const int may_mask,
                                                          const int shifted) {
    const float32x4_t sub = vdupq_n_f32(q->sub), scale = vdupq_n_f32(q->scale), add = vdupq_n_f32(q->add);
    uint8x16_t acc[EXAQ_MAX_CODES];
    for (int k = 0; k < codes_used; ++k) acc[k] = vdupq_n_u8(0);
    int since_drain = 0;
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        uint8x16_t masked;
        const uint8x16_t bytes = quantize16(x + j, sub, scale, add, EXAQ_MASKED_CODE, may_mask, shifted, &masked);
        vst1q_u8(codes + j, bytes);
        for (int k = 0; k < codes_used; ++k) acc[k] = vsubq_u8(acc[k], vceqq_u8(bytes, vdupq_n_u8((uint8_t)k)));
        if (++since_drain == 255) {
            for (int k = 0; k < codes_used; ++k) {
                counts[k] += vaddlvq_u8(acc[k]);
                acc[k] = vdupq_n_u8(0);
            }
            since_drain = 0;
        }
    }
    for (int k = 0; k < codes_used; ++k) counts[k] += vaddlvq_u8(acc[k]);
    exaq_quantize_count_from(x, j, n, q, codes, counts);
}

#define QUANTIZE_COUNT(used)                                                                          \
    do {                                                                                              \
        if (q->may_mask && shifted) quantize_count_rows(x, n, q, codes, counts, used, 1, 1);          \
        else if (q->may_mask) quantize_count_rows(x, n, q, codes, counts, used, 1, 0);                \
        else if (shifted) quantize_count_rows(x, n, q, codes, counts, used, 0, 1);                    \
        else quantize_count_rows(x, n, q, codes, counts, used, 0, 0);                                 \
    } while (0)

static void quantize_count_neon(const float *x, size_t n, const exaq_quantizer *q, uint8_t *codes,
                                int64_t counts[EXAQ_MAX_CODES]) {
    const int shifted = q->sub != 0.0f;
    /* codes never exceed levels (x <= shift), so only levels + 1 counters */
    if (q->levels <= 3) QUANTIZE_COUNT(4);
    else if (q->levels <= 7) QUANTIZE_COUNT(8);
    else QUANTIZE_COUNT(16);
}

/* Byte indices of four consecutive floats of a table, from 16 byte codes
 * already multiplied by 4: output vector k covers codes 4k..4k+3. */
static inline uint8x16_t float_indices(uint8x16_t code_x4, int k) {
    static const uint8_t spread[4][16] = {
        {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
        {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
        {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
        {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
    };
    static const uint8_t byte_of_float[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    return vaddq_u8(vqtbl1q_u8(code_x4, vld1q_u8(spread[k])), vld1q_u8(byte_of_float));
}

/* is the float bit pattern +0.0 for table[from..16)? then codes >= from,
 * read out of range (0) by a smaller tbl, give the same value */
static int table_zero_from(const float table[EXAQ_MAX_CODES], int from) {
    for (int k = from; k < EXAQ_MAX_CODES; ++k) {
        uint32_t bits;
        memcpy(&bits, table + k, 4);
        if (bits != 0) return 0;
    }
    return 1;
}

/* The table lives in registers and is read with tbl: 4 entries (16 bytes)
 * for 2-bit rows, 8 (32 bytes) for 3 bits, 16 (64 bytes) otherwise.  An
 * index out of the table reads 0, which is what a masked code (16, index
 * 64..67) must give. */
static inline EXAQ_ALWAYS_INLINE void expand_rows(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES],
                                                  float *y, const int entries) {
    const uint8x16x4_t t = vld1q_u8_x4((const uint8_t *)table);
    const uint8x16x2_t t2 = {{t.val[0], t.val[1]}};
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        /* codes above 16 are masked too: clamp, so that 4 * code stays out of range */
        const uint8x16_t c4 = vshlq_n_u8(vminq_u8(vld1q_u8(codes + j), vdupq_n_u8(EXAQ_MASKED_CODE)), 2);
        for (int k = 0; k < 4; ++k) {
            const uint8x16_t idx = float_indices(c4, k);
            const uint8x16_t bytes = entries == 4   ? vqtbl1q_u8(t.val[0], idx)
                                     : entries == 8 ? vqtbl2q_u8(t2, idx)
                                                    : vqtbl4q_u8(t, idx);
            vst1q_f32(y + j + 4 * k, vreinterpretq_f32_u8(bytes));
        }
    }
    exaq_expand_from(codes, j, n, table, y);
}

static void expand_neon(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES], float *y) {
    if (table_zero_from(table, 4)) expand_rows(codes, n, table, y, 4);
    else if (table_zero_from(table, 8)) expand_rows(codes, n, table, y, 8);
    else expand_rows(codes, n, table, y, 16);
}

/* ---- 2-bit packed output ---- */

/* 16 byte codes (each < 4) to 4 packed bytes, code j at bits 2 (j % 4) of
 * byte j / 4; returned in the low 32 bits */
static inline uint8x8_t pack2_bytes(uint8x16_t c0, uint8x16_t c1) {
    /* byte pairs: c_even | c_odd << 2 in the low byte of each 16-bit lane */
    const uint16x8_t p0 = vsraq_n_u16(vreinterpretq_u16_u8(c0), vreinterpretq_u16_u8(c0), 6);
    const uint16x8_t p1 = vsraq_n_u16(vreinterpretq_u16_u8(c1), vreinterpretq_u16_u8(c1), 6);
    const uint8x16_t nibbles = vcombine_u8(vmovn_u16(p0), vmovn_u16(p1)); /* 4-bit pairs of codes */
    /* nibble pairs: n_even | n_odd << 4 */
    const uint16x8_t quad = vsraq_n_u16(vreinterpretq_u16_u8(nibbles), vreinterpretq_u16_u8(nibbles), 4);
    return vmovn_u16(quad);
}

/* bit j of the result = byte j of (m0, m1) is all-ones: 32 lanes -> 4 bytes */
static inline uint32_t movemask32(uint8x16_t m0, uint8x16_t m1) {
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t w = vld1q_u8(weights);
    const uint8x16_t s1 = vpaddq_u8(vandq_u8(m0, w), vandq_u8(m1, w));
    const uint8x16_t s2 = vpaddq_u8(s1, s1);
    const uint8x16_t s3 = vpaddq_u8(s2, s2);
    return vgetq_lane_u32(vreinterpretq_u32_u8(s3), 0);
}

/* 32 entries a step: byte codes (masked: 0) packed four to a byte, the
 * bitmap from the masked lanes, the counts from the codes' bit planes (bit 0,
 * bit 1, both) summed per byte lane and drained before the bytes wrap; the
 * scalar helper finishes the row and turns the planes into counts */
static inline EXAQ_ALWAYS_INLINE size_t quantize_pack2_rows(const float *x, size_t n, const exaq_quantizer *q,
                                                            uint8_t *packed, uint8_t *maskbits, int64_t counts[4],
                                                            const int may_mask, const int shifted) {
    const float32x4_t sub = vdupq_n_f32(q->sub), scale = vdupq_n_f32(q->scale), add = vdupq_n_f32(q->add);
    const uint8x16_t one = vdupq_n_u8(1);
    uint8x16_t acc_bit0 = vdupq_n_u8(0), acc_bit1 = acc_bit0, acc_three = acc_bit0, acc_masked = acc_bit0;
    int64_t bit0 = 0, bit1 = 0, threes = 0, masked_count = 0;
    int since_drain = 0;
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        uint8x16_t m0, m1;
        const uint8x16_t c0 = quantize16(x + j, sub, scale, add, 0, may_mask, shifted, &m0);
        const uint8x16_t c1 = quantize16(x + j + 16, sub, scale, add, 0, may_mask, shifted, &m1);
        const uint8x8_t bytes = pack2_bytes(c0, c1);
        vst1_u8(packed + j / 4, bytes);
        const uint8x16_t h0 = vshrq_n_u8(c0, 1), h1 = vshrq_n_u8(c1, 1);
        acc_bit0 = vaddq_u8(acc_bit0, vaddq_u8(vandq_u8(c0, one), vandq_u8(c1, one)));
        acc_bit1 = vaddq_u8(acc_bit1, vaddq_u8(h0, h1));
        acc_three = vaddq_u8(acc_three, vaddq_u8(vandq_u8(c0, h0), vandq_u8(c1, h1)));
        if (may_mask) {
            const uint32_t bits = movemask32(m0, m1);
            memcpy(maskbits + j / 8, &bits, 4);
            acc_masked = vsubq_u8(acc_masked, vaddq_u8(m0, m1)); /* -(-1 + -1) = 2 per lane at most */
        }
        if (++since_drain == 127) { /* 2 a lane a step: 254 < 256 */
            bit0 += vaddlvq_u8(acc_bit0), bit1 += vaddlvq_u8(acc_bit1), threes += vaddlvq_u8(acc_three);
            masked_count += vaddlvq_u8(acc_masked);
            acc_bit0 = acc_bit1 = acc_three = acc_masked = vdupq_n_u8(0);
            since_drain = 0;
        }
    }
    bit0 += vaddlvq_u8(acc_bit0), bit1 += vaddlvq_u8(acc_bit1), threes += vaddlvq_u8(acc_three);
    masked_count += vaddlvq_u8(acc_masked);
    return exaq_pack2_finish(x, j, n, q, packed, maskbits, (int64_t)j - masked_count, bit0, bit1, threes, counts);
}

static size_t quantize_pack2_neon(const float *x, size_t n, const exaq_quantizer *q, uint8_t *packed,
                                  uint8_t *maskbits, int64_t counts[4]) {
    const int shifted = q->sub != 0.0f;
    if (q->may_mask && shifted) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 1, 1);
    if (q->may_mask) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 1, 0);
    if (shifted) return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 0, 1);
    return quantize_pack2_rows(x, n, q, packed, maskbits, counts, 0, 0);
}

/* 16 entries a step from 4 packed bytes: packed byte k is broadcast to the 16
 * byte lanes of output vector k, shifted per float by 0, 2, 4, 6, and its code
 * becomes the byte index of a 4-entry (16-byte) tbl.  A masked entry's index
 * is set to 0xFF, out of the table, which reads 0. */
static void expand_pack2_neon(const uint8_t *packed, const uint8_t *maskbits, size_t n, const float table[4],
                              float *y) {
    static const int8_t code_shift[16] = {0, 0, 0, 0, -2, -2, -2, -2, -4, -4, -4, -4, -6, -6, -6, -6};
    static const uint8_t byte_of_float[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    static const uint8_t entry_bit[2][16] = {{1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8},
                                             {16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64, 128, 128, 128, 128}};
    const uint8x16_t tab = vld1q_u8((const uint8_t *)table);
    const int8x16_t shifts = vld1q_s8(code_shift);
    const uint8x16_t within = vld1q_u8(byte_of_float), three = vdupq_n_u8(3);
    const uint8x16_t bit_lo = vld1q_u8(entry_bit[0]), bit_hi = vld1q_u8(entry_bit[1]);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        uint32_t word;
        memcpy(&word, packed + j / 4, 4);
        const uint8x16_t src = vreinterpretq_u8_u32(vdupq_n_u32(word));
        uint8x16_t idx[4] = {vdupq_laneq_u8(src, 0), vdupq_laneq_u8(src, 1), vdupq_laneq_u8(src, 2),
                             vdupq_laneq_u8(src, 3)};
        for (int k = 0; k < 4; ++k)
            idx[k] = vaddq_u8(vshlq_n_u8(vandq_u8(vshlq_u8(idx[k], shifts), three), 2), within);
        if (maskbits) {
            const uint8x16_t m0 = vdupq_n_u8(maskbits[j / 8]), m1 = vdupq_n_u8(maskbits[j / 8 + 1]);
            idx[0] = vorrq_u8(idx[0], vtstq_u8(m0, bit_lo));
            idx[1] = vorrq_u8(idx[1], vtstq_u8(m0, bit_hi));
            idx[2] = vorrq_u8(idx[2], vtstq_u8(m1, bit_lo));
            idx[3] = vorrq_u8(idx[3], vtstq_u8(m1, bit_hi));
        }
        for (int k = 0; k < 4; ++k) vst1q_f32(y + j + 4 * k, vreinterpretq_f32_u8(vqtbl1q_u8(tab, idx[k])));
    }
    exaq_expand_pack2_from(packed, maskbits, j, n, table, y);
}

/* ---- exp ---- */

/* exp_nonpositive of softmax_scalar.c on 4 lanes, bit for bit: the same
 * rounding of k, the same polynomial with separate multiplies and adds (no
 * fma), and r = t - k*ln2 by one fused multiply-subtract, which equals the
 * scalar's double computation rounded once: k*ln2 is exact in double and
 * t - k*ln2 needs at most 32 significant bits when k != 0. */
static inline float32x4_t exp4_nonpositive(float32x4_t t) {
    const uint32x4_t representable = vcgeq_f32(t, vdupq_n_f32(EXAQ_EXP_MIN)); /* false for NaN */
    t = vmaxq_f32(t, vdupq_n_f32(EXAQ_EXP_MIN)); /* the discarded lanes stay finite */
    const float32x4_t k = vrndnq_f32(vmulq_f32(t, vdupq_n_f32(EXAQ_LOG2E)));
    const float32x4_t r = vfmsq_f32(t, k, vdupq_n_f32(EXAQ_LN2));
    float32x4_t p = vdupq_n_f32(EXAQ_EXP_C5);
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXAQ_EXP_C4));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXAQ_EXP_C3));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXAQ_EXP_C2));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXAQ_EXP_C1));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(1.0f));
    const int32x4_t biased = vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127));
    const float32x4_t two_k = vreinterpretq_f32_s32(vshlq_n_s32(biased, 23));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vmulq_f32(p, two_k)), representable));
}

/* float lanes l = j % 16 (vector l / 4), added to the total in lane order */
static double exp_store_sum_neon(const float *x, size_t n, float shift, float *y) {
    const float32x4_t s = vdupq_n_f32(shift);
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    size_t j = 0;
    for (; j + BLOCK <= n; j += BLOCK)
        for (int q = 0; q < 4; ++q) {
            const float32x4_t e = exp4_nonpositive(vsubq_f32(vld1q_f32(x + j + 4 * q), s));
            acc[q] = vaddq_f32(acc[q], e);
            vst1q_f32(y + j + 4 * q, e);
        }
    float lanes[EXAQ_LANES];
    for (int q = 0; q < 4; ++q) vst1q_f32(lanes + 4 * q, acc[q]);
    if (j < n) { /* tail through a padded block, so it uses the same exp */
        float in[BLOCK], e[BLOCK];
        const size_t rest = n - j;
        for (size_t i = 0; i < BLOCK; ++i) in[i] = i < rest ? x[j + i] : -__builtin_inff();
        for (int q = 0; q < 4; ++q) vst1q_f32(e + 4 * q, exp4_nonpositive(vsubq_f32(vld1q_f32(in + 4 * q), s)));
        for (size_t i = 0; i < rest; ++i) {
            y[j + i] = e[i];
            lanes[i] += e[i];
        }
    }
    double total = 0.0;
    for (int l = 0; l < EXAQ_LANES; ++l) total += lanes[l];
    return total;
}

static void scale_neon(float *y, size_t n, float factor) {
    const float32x4_t f = vdupq_n_f32(factor);
    size_t j = 0;
    for (; j + 4 <= n; j += 4) vst1q_f32(y + j, vmulq_f32(vld1q_f32(y + j), f));
    for (; j < n; ++j) y[j] *= factor;
}

EXAQ_DEFINE_FUSED2(neon)

const exaq_softmax_kernels exaq_softmax_neon = {
    .row_max = row_max_neon,
    .row_stats = row_stats_neon,
    .row_stats_rows = row_stats_rows_neon,
    .moments = moments_neon,
    .abs_deviation = abs_deviation_neon,
    .quantize_count = quantize_count_neon,
    .expand = expand_neon,
    .exp_store_sum = exp_store_sum_neon,
    .scale = scale_neon,
    .quantize_pack2 = quantize_pack2_neon,
    .softmax2_rows = softmax2_rows_neon,
    .softmax_pack2_rows = softmax_pack2_rows_neon,
    .expand_pack2 = expand_pack2_neon,
    .packed = &exaq_packed_neon,
    /* .live_end left NULL: the driver uses the scalar one */
};
