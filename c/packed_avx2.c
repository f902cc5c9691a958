/* AVX2 packed-code kernels.  Whole vectors in the main loops, the scalar
 * helpers (packed_common.h) for the rest of a row, from a multiple of 8 codes. */
#include <immintrin.h>

#include "packed_common.h"

/* bit 4 of every byte (masked codes are EXAQ_MASKED_CODE = 16) as a bitmap */
static inline uint32_t masked_bits32(__m256i v) {
    return (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(v, 3));
}

static inline void store_mask32(uint8_t *maskbits, size_t j, __m256i v) {
    const uint32_t m = masked_bits32(v);
    memcpy(maskbits + j / 8, &m, 4);
}

static void pack_avx2(const uint8_t *codes, size_t n, int bits, uint8_t *packed, uint8_t *maskbits) {
    const __m256i keep = _mm256_set1_epi8((char)((1 << bits) - 1));
    size_t j = 0;
    if (bits == 2) { /* 128 codes -> 32 bytes */
        const __m256i w1 = _mm256_set1_epi16(0x0401), w2 = _mm256_set1_epi32(0x00100001);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (; j + 128 <= n; j += 128) {
            __m256i d[4];
            for (int i = 0; i < 4; ++i) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(codes + j + 32 * i));
                if (maskbits) store_mask32(maskbits, j + 32 * i, v);
                d[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, keep), w1), w2);
            }
            const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(d[0], d[1]),
                                                      _mm256_packus_epi32(d[2], d[3]));
            _mm256_storeu_si256((__m256i *)(packed + j / 4), _mm256_permutevar8x32_epi32(bytes, order));
        }
    } else if (bits == 4) { /* 64 codes -> 32 bytes */
        const __m256i w1 = _mm256_set1_epi16(0x1001);
        for (; j + 64 <= n; j += 64) {
            __m256i d[2];
            for (int i = 0; i < 2; ++i) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(codes + j + 32 * i));
                if (maskbits) store_mask32(maskbits, j + 32 * i, v);
                d[i] = _mm256_maddubs_epi16(_mm256_and_si256(v, keep), w1);
            }
            _mm256_storeu_si256((__m256i *)(packed + j / 2),
                                _mm256_permute4x64_epi64(_mm256_packus_epi16(d[0], d[1]), 0xD8));
        }
    } else { /* 3 bits: 32 codes -> 12 bytes, two 8-byte stores that overlap */
        const __m256i w1 = _mm256_set1_epi16(0x0801), w2 = _mm256_set1_epi32(0x00400001);
        const __m256i low24 = _mm256_set1_epi64x(0xFFFFFF);
        const __m256i squeeze = _mm256_setr_epi8(0, 1, 2, 8, 9, 10, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                 -1, 0, 1, 2, 8, 9, 10, -1, -1, -1, -1, -1, -1, -1, -1,
                                                 -1, -1);
        for (; j + 40 <= n; j += 32) { /* the stores reach 14 bytes; 40 codes keep 15 in the row */
            const __m256i v = _mm256_loadu_si256((const __m256i *)(codes + j));
            if (maskbits) store_mask32(maskbits, j, v);
            __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, keep), w1), w2);
            d = _mm256_and_si256(_mm256_or_si256(d, _mm256_srli_epi64(d, 20)), low24);
            d = _mm256_shuffle_epi8(d, squeeze);
            uint8_t *out = packed + j / 8 * 3;
            _mm_storel_epi64((__m128i *)out, _mm256_castsi256_si128(d));
            _mm_storel_epi64((__m128i *)(out + 6), _mm256_extracti128_si256(d, 1));
        }
    }
    exaq_pack_from(codes, j, n, bits, packed, maskbits);
}

/* 16 bytes of 4-bit codes -> 32 byte codes in order (low nibble first) */
static inline void split_nibbles(__m128i b, __m128i *c0, __m128i *c1) {
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(b, nib), hi = _mm_and_si128(_mm_srli_epi16(b, 4), nib);
    *c0 = _mm_unpacklo_epi8(lo, hi);
    *c1 = _mm_unpackhi_epi8(lo, hi);
}

/* SWAR, eight codes at a time; loads of exactly `bits` bytes never leave the row */
static void unpack_avx2(const uint8_t *packed, size_t n, int bits, uint8_t *codes) {
    size_t j = 0;
    if (bits == 4) {
        for (; j + 32 <= n; j += 32) {
            __m128i c0, c1;
            split_nibbles(_mm_loadu_si128((const __m128i *)(packed + j / 2)), &c0, &c1);
            _mm_storeu_si128((__m128i *)(codes + j), c0);
            _mm_storeu_si128((__m128i *)(codes + j + 16), c1);
        }
    }
    for (; j + 8 <= n; j += 8) {
        uint64_t w = 0;
        memcpy(&w, packed + j / 8 * (size_t)bits, (size_t)bits);
        w = exaq_swar_unpack8(w, bits);
        memcpy(codes + j, &w, 8);
    }
    exaq_unpack_from(packed, j, n, bits, codes);
}

static inline __m256i popcount_bytes(__m256i x) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                           1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i nib = _mm256_set1_epi8(0x0F);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(x, nib)),
                           _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), nib)));
}

static inline int64_t horizontal_sum_sad(__m256i byte_counts) {
    const __m256i s = _mm256_sad_epu8(byte_counts, _mm256_setzero_si256());
    int64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

/* 2 bits: exact code counts from the two bit planes, popcounts by nibble
 * table; the sum is sum_k count_k * lut[k] in double */
static double lutsum2_avx2(const uint8_t *packed, size_t n, const float lut[EXAQ_MAX_CODES]) {
    const size_t full = n / 4;
    const __m256i even = _mm256_set1_epi8(0x55);
    int64_t n_lo = 0, n_hi = 0, n_3 = 0;
    size_t b = 0;
    while (b + 32 <= full) {
        __m256i a_lo = _mm256_setzero_si256(), a_hi = a_lo, a_3 = a_lo;
        for (int k = 0; k < 63 && b + 32 <= full; ++k, b += 32) { /* <= 4 a byte per step */
            const __m256i v = _mm256_loadu_si256((const __m256i *)(packed + b));
            const __m256i lo = _mm256_and_si256(v, even);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 1), even);
            a_lo = _mm256_add_epi8(a_lo, popcount_bytes(lo));
            a_hi = _mm256_add_epi8(a_hi, popcount_bytes(hi));
            a_3 = _mm256_add_epi8(a_3, popcount_bytes(_mm256_and_si256(lo, hi)));
        }
        n_lo += horizontal_sum_sad(a_lo);
        n_hi += horizontal_sum_sad(a_hi);
        n_3 += horizontal_sum_sad(a_3);
    }
    const int64_t n1 = n_lo - n_3, n2 = n_hi - n_3, n0 = (int64_t)(4 * b) - n1 - n2 - n_3;
    const double counted = (double)n0 * lut[0] + (double)n1 * lut[1] + (double)n2 * lut[2] +
                           (double)n_3 * lut[3];
    return counted + exaq_lutsum_from(packed, 4 * b, n, 2, lut);
}

typedef struct {
    __m256 low, high;
} lut256;

static inline __m256 lookup8(const lut256 *t, __m256i code) {
    /* bit 3 of the code, moved to the sign bit, picks the upper half */
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t->low, code),
                            _mm256_permutevar8x32_ps(t->high, code),
                            _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
}

static inline double reduce_lanes(__m256 a, __m256 b) {
    float lanes[16];
    _mm256_storeu_ps(lanes, a);
    _mm256_storeu_ps(lanes + 8, b);
    double s = 0.0;
    for (int l = 0; l < 16; ++l) s += lanes[l];
    return s;
}

/* 3 and 4 bits: in-register 16-entry table (two permutes and a blend), float lanes */
static double lutsum34_avx2(const uint8_t *packed, size_t n, int bits,
                            const float lut[EXAQ_MAX_CODES]) {
    const lut256 t = {_mm256_loadu_ps(lut), _mm256_loadu_ps(lut + 8)};
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t j = 0;
    if (bits == 4) {
        for (; j + 32 <= n; j += 32) {
            __m128i c0, c1;
            split_nibbles(_mm_loadu_si128((const __m128i *)(packed + j / 2)), &c0, &c1);
            acc0 = _mm256_add_ps(acc0, lookup8(&t, _mm256_cvtepu8_epi32(c0)));
            acc1 = _mm256_add_ps(acc1, lookup8(&t, _mm256_cvtepu8_epi32(_mm_srli_si128(c0, 8))));
            acc0 = _mm256_add_ps(acc0, lookup8(&t, _mm256_cvtepu8_epi32(c1)));
            acc1 = _mm256_add_ps(acc1, lookup8(&t, _mm256_cvtepu8_epi32(_mm_srli_si128(c1, 8))));
        }
    } else {
        for (; j + 16 <= n; j += 16) {
            uint64_t w0 = 0, w1 = 0;
            memcpy(&w0, packed + j / 8 * 3, 3);
            memcpy(&w1, packed + j / 8 * 3 + 3, 3);
            w0 = exaq_swar_unpack8(w0, 3);
            w1 = exaq_swar_unpack8(w1, 3);
            acc0 = _mm256_add_ps(acc0, lookup8(&t, _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)w0))));
            acc1 = _mm256_add_ps(acc1, lookup8(&t, _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)w1))));
        }
    }
    return reduce_lanes(acc0, acc1) + exaq_lutsum_from(packed, j, n, bits, lut);
}

static double lutsum_avx2(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES]) {
    return bits == 2 ? lutsum2_avx2(packed, n, lut) : lutsum34_avx2(packed, n, bits, lut);
}

static double lutexp_sum_avx2(const uint8_t *codes, size_t n, const float lut[EXAQ_MAX_CODES]) {
    const lut256 t = {_mm256_loadu_ps(lut), _mm256_loadu_ps(lut + 8)};
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m128i c = _mm_loadu_si128((const __m128i *)(codes + j));
        acc0 = _mm256_add_ps(acc0, lookup8(&t, _mm256_cvtepu8_epi32(c)));
        acc1 = _mm256_add_ps(acc1, lookup8(&t, _mm256_cvtepu8_epi32(_mm_srli_si128(c, 8))));
    }
    double s = reduce_lanes(acc0, acc1);
    for (; j < n; ++j) s += lut[codes[j] & 15];
    return s;
}

const exaq_packed_kernels exaq_packed_avx2 = {
    .pack = pack_avx2,
    .unpack = unpack_avx2,
    .lutsum = lutsum_avx2,
    .lutexp_sum = lutexp_sum_avx2,
    .lutsum_by_table = 0,
};
