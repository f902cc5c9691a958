/* AArch64 Advanced SIMD (NEON) packed-code kernels (format: exaq.h,
 * docs/packed.md).  Whole vectors of 16 codes in the main loops, the scalar
 * helpers of packed_common.h for the rest of a row, from a multiple of 8
 * codes.  The code tables live in registers and are read with tbl. */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels read float tables as bytes (tbl): little-endian AArch64 only"
#endif

#include "compiler.h"
#include "packed_common.h"


/* bit j of the result = byte j of m is all-ones (16 lanes -> 2 bytes) */
static inline EXAQ_ALWAYS_INLINE uint16_t movemask16(uint8x16_t m) {
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t s1 = vpaddq_u8(vandq_u8(m, vld1q_u8(weights)), vdupq_n_u8(0));
    const uint8x16_t s2 = vpaddq_u8(s1, s1);
    const uint8x16_t s3 = vpaddq_u8(s2, s2);
    return vgetq_lane_u16(vreinterpretq_u16_u8(s3), 0);
}

/* 16 codes (< 2^bits after masking) to 2*bits packed bytes at the start of
 * the result: each 64-bit lane takes eight codes to 8*bits bits (byte pairs,
 * then 16-bit pairs, then 32-bit pairs are merged by shift-and-insert), and a
 * tbl gathers the `bits` low bytes of both lanes */
static inline EXAQ_ALWAYS_INLINE uint8x16_t pack16(uint8x16_t c, const int bits) {
    uint16x8_t w16 = vreinterpretq_u16_u8(c);
    /* byte pairs: low byte | high byte << bits, in 2*bits bits */
    w16 = vandq_u16(vorrq_u16(w16, vshlq_u16(w16, vdupq_n_s16((int16_t)(bits - 8)))),
                    vdupq_n_u16((uint16_t)((1u << 2 * bits) - 1)));
    uint32x4_t w32 = vreinterpretq_u32_u16(w16);
    w32 = vandq_u32(vorrq_u32(w32, vshlq_u32(w32, vdupq_n_s32(2 * bits - 16))),
                    vdupq_n_u32((uint32_t)((1u << 4 * bits) - 1)));
    uint64x2_t w64 = vreinterpretq_u64_u32(w32);
    w64 = vorrq_u64(w64, vshlq_u64(w64, vdupq_n_s64(4 * bits - 32)));
    static const uint8_t gather[3][16] = {
        {0, 1, 8, 9, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255},        /* 2 bits */
        {0, 1, 2, 8, 9, 10, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255},           /* 3 bits */
        {0, 1, 2, 3, 8, 9, 10, 11, 255, 255, 255, 255, 255, 255, 255, 255},              /* 4 bits */
    };
    return vqtbl1q_u8(vreinterpretq_u8_u64(w64), vld1q_u8(gather[bits - 2]));
}

static inline EXAQ_ALWAYS_INLINE void pack_rows(const uint8_t *codes, size_t n, uint8_t *packed, uint8_t *maskbits, const int bits) {
    const uint8x16_t keep = vdupq_n_u8((uint8_t)((1u << bits) - 1u)), limit = vdupq_n_u8(EXAQ_MAX_CODES);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const uint8x16_t v = vld1q_u8(codes + j);
        const uint8x16_t masked = vcgeq_u8(v, limit); /* codes >= 16 are masked: stored as 0 */
        if (maskbits) {
            const uint16_t m = movemask16(masked);
            memcpy(maskbits + j / 8, &m, 2);
        }
        uint8_t out[16];
        vst1q_u8(out, pack16(vandq_u8(vbicq_u8(v, masked), keep), bits));
        memcpy(packed + j / 8 * (size_t)bits, out, 2 * (size_t)bits);
    }
    exaq_pack_from(codes, j, n, bits, packed, maskbits);
}

static void pack_neon(const uint8_t *codes, size_t n, int bits, uint8_t *packed, uint8_t *maskbits) {
    if (bits == 2) pack_rows(codes, n, packed, maskbits, 2);
    else if (bits == 3) pack_rows(codes, n, packed, maskbits, 3);
    else pack_rows(codes, n, packed, maskbits, 4);
}

/* 2*bits packed bytes (from p, read exactly) to 16 byte codes: the inverse
 * steps of pack16 (exaq_swar_unpack8 on two 64-bit lanes) */
static inline EXAQ_ALWAYS_INLINE uint8x16_t unpack16(const uint8_t *p, const int bits) {
    uint8_t in[16] = {0};
    memcpy(in, p, 2 * (size_t)bits);
    static const uint8_t spread[3][16] = {
        {0, 1, 255, 255, 255, 255, 255, 255, 2, 3, 255, 255, 255, 255, 255, 255},
        {0, 1, 2, 255, 255, 255, 255, 255, 3, 4, 5, 255, 255, 255, 255, 255},
        {0, 1, 2, 3, 255, 255, 255, 255, 4, 5, 6, 7, 255, 255, 255, 255},
    };
    uint64x2_t w64 = vreinterpretq_u64_u8(vqtbl1q_u8(vld1q_u8(in), vld1q_u8(spread[bits - 2])));
    w64 = vandq_u64(vorrq_u64(w64, vshlq_u64(w64, vdupq_n_s64(32 - 4 * bits))),
                    vdupq_n_u64(((1ull << 4 * bits) - 1) * 0x0000000100000001ull));
    uint32x4_t w32 = vreinterpretq_u32_u64(w64);
    w32 = vandq_u32(vorrq_u32(w32, vshlq_u32(w32, vdupq_n_s32(16 - 2 * bits))),
                    vdupq_n_u32((uint32_t)((1u << 2 * bits) - 1) * 0x00010001u));
    uint16x8_t w16 = vreinterpretq_u16_u32(w32);
    w16 = vorrq_u16(w16, vshlq_u16(w16, vdupq_n_s16((int16_t)(8 - bits))));
    return vandq_u8(vreinterpretq_u8_u16(w16), vdupq_n_u8((uint8_t)((1u << bits) - 1u)));
}

/* 4 bits: 8 packed bytes are 16 codes, low nibble first */
static inline EXAQ_ALWAYS_INLINE uint8x16_t split_nibbles(uint8x8_t b) {
    const uint8x8_t lo = vand_u8(b, vdup_n_u8(0x0F)), hi = vshr_n_u8(b, 4);
    return vcombine_u8(vzip1_u8(lo, hi), vzip2_u8(lo, hi));
}

static inline EXAQ_ALWAYS_INLINE void unpack_rows(const uint8_t *packed, size_t n, uint8_t *codes, const int bits) {
    size_t j = 0;
    if (bits == 4)
        for (; j + 16 <= n; j += 16) vst1q_u8(codes + j, split_nibbles(vld1_u8(packed + j / 2)));
    else
        for (; j + 16 <= n; j += 16) vst1q_u8(codes + j, unpack16(packed + j / 8 * (size_t)bits, bits));
    exaq_unpack_from(packed, j, n, bits, codes);
}

static void unpack_neon(const uint8_t *packed, size_t n, int bits, uint8_t *codes) {
    if (bits == 2) unpack_rows(packed, n, codes, 2);
    else if (bits == 3) unpack_rows(packed, n, codes, 3);
    else unpack_rows(packed, n, codes, 4);
}

/* 2 bits: exact code counts from the two bit planes of the packed bytes with
 * vcnt (popcount per byte), summed by byte adds and drained before they
 * wrap; the sum is sum_k count_k * lut[k] in double, like the AVX2 kernel */
static double lutsum2_neon(const uint8_t *packed, size_t n, const float lut[EXAQ_MAX_CODES]) {
    const size_t full = n / 4; /* whole bytes of four codes */
    const uint8x16_t even = vdupq_n_u8(0x55);
    int64_t n_lo = 0, n_hi = 0, n_3 = 0;
    size_t b = 0;
    while (b + 16 <= full) {
        uint8x16_t a_lo = vdupq_n_u8(0), a_hi = a_lo, a_3 = a_lo;
        for (int k = 0; k < 63 && b + 16 <= full; ++k, b += 16) { /* <= 4 a byte per step */
            const uint8x16_t v = vld1q_u8(packed + b);
            const uint8x16_t lo = vandq_u8(v, even), hi = vandq_u8(vshrq_n_u8(v, 1), even);
            a_lo = vaddq_u8(a_lo, vcntq_u8(lo));
            a_hi = vaddq_u8(a_hi, vcntq_u8(hi));
            a_3 = vaddq_u8(a_3, vcntq_u8(vandq_u8(lo, hi)));
        }
        n_lo += vaddlvq_u8(a_lo);
        n_hi += vaddlvq_u8(a_hi);
        n_3 += vaddlvq_u8(a_3);
    }
    const int64_t n1 = n_lo - n_3, n2 = n_hi - n_3, n0 = (int64_t)(4 * b) - n1 - n2 - n_3;
    const double counted =
        (double)n0 * lut[0] + (double)n1 * lut[1] + (double)n2 * lut[2] + (double)n_3 * lut[3];
    return counted + exaq_lutsum_from(packed, 4 * b, n, 2, lut);
}

/* 16 byte codes (< 16) to four float vectors of lut[code]: the 64-byte table
 * in four registers, read with one tbl per 4 floats; acc[k] gets codes
 * 4k..4k+3 */
static inline EXAQ_ALWAYS_INLINE void add_lookups(const uint8x16x4_t *t, uint8x16_t codes, float32x4_t acc[4]) {
    static const uint8_t spread[4][16] = {
        {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
        {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
        {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
        {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
    };
    static const uint8_t byte_of_float[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    const uint8x16_t c4 = vshlq_n_u8(codes, 2), within = vld1q_u8(byte_of_float);
    for (int k = 0; k < 4; ++k) {
        const uint8x16_t idx = vaddq_u8(vqtbl1q_u8(c4, vld1q_u8(spread[k])), within);
        acc[k] = vaddq_f32(acc[k], vreinterpretq_f32_u8(vqtbl4q_u8(*t, idx)));
    }
}

static inline double reduce_lanes(const float32x4_t acc[4]) {
    float lanes[16];
    for (int k = 0; k < 4; ++k) vst1q_f32(lanes + 4 * k, acc[k]);
    double s = 0.0;
    for (int l = 0; l < 16; ++l) s += lanes[l];
    return s;
}

/* 3 and 4 bits: codes unpacked 16 at a time, looked up, 16 float lanes */
static double lutsum34_neon(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES]) {
    const uint8x16x4_t t = vld1q_u8_x4((const uint8_t *)lut);
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    size_t j = 0;
    if (bits == 4)
        for (; j + 16 <= n; j += 16) add_lookups(&t, split_nibbles(vld1_u8(packed + j / 2)), acc);
    else
        for (; j + 16 <= n; j += 16) add_lookups(&t, unpack16(packed + j / 8 * 3, 3), acc);
    return reduce_lanes(acc) + exaq_lutsum_from(packed, j, n, bits, lut);
}

static double lutsum_neon(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES]) {
    return bits == 2 ? lutsum2_neon(packed, n, lut) : lutsum34_neon(packed, n, bits, lut);
}

static double lutexp_sum_neon(const uint8_t *codes, size_t n, const float lut[EXAQ_MAX_CODES]) {
    const uint8x16x4_t t = vld1q_u8_x4((const uint8_t *)lut);
    const uint8x16_t low4 = vdupq_n_u8(15);
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    size_t j = 0;
    for (; j + 16 <= n; j += 16) add_lookups(&t, vandq_u8(vld1q_u8(codes + j), low4), acc);
    double s = reduce_lanes(acc);
    for (; j < n; ++j) s += lut[codes[j] & 15];
    return s;
}

const exaq_packed_kernels exaq_packed_neon = {
    .pack = pack_neon,
    .unpack = unpack_neon,
    .lutsum = lutsum_neon,
    .lutexp_sum = lutexp_sum_neon,
    .lutsum_by_table = 0,
};
