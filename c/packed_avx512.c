/* AVX-512 (F/BW/VL/VBMI) packed-code kernels.  64 codes a step; the last
 * partial step uses masked loads and stores, so nothing outside a row is
 * touched.  Unpacking spreads bytes with vpermb and cuts codes out with
 * vpmultishiftqb (VBMI). */
#include <immintrin.h>

#include "packed_common.h"

static inline __mmask64 first_bytes(size_t count) {
    return count >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << count) - 1);
}

static void pack_avx512(const uint8_t *codes, size_t n, int bits, uint8_t *packed, uint8_t *maskbits) {
    const __m512i keep = _mm512_set1_epi8((char)((1 << bits) - 1));
    const __m512i masked = _mm512_set1_epi8(EXAQ_MASKED_CODE);
    const size_t nbytes = EXAQ_PACKED_BYTES(n, bits), mbytes = EXAQ_MASK_BYTES(n);
    /* 3 bits: the three low bytes of every 64-bit lane, gathered */
    uint8_t squeeze_idx[64];
    for (int i = 0; i < 64; ++i) squeeze_idx[i] = (uint8_t)(i < 24 ? (i / 3) * 8 + i % 3 : 0);
    const __m512i squeeze = _mm512_loadu_si512(squeeze_idx);
    const __m512i w1 = _mm512_set1_epi16(bits == 2 ? 0x0401 : bits == 3 ? 0x0801 : 0x1001);
    const __m512i w2 = _mm512_set1_epi32(bits == 2 ? 0x00100001 : 0x00400001);
    for (size_t j = 0; j < n; j += 64) {
        const size_t count = n - j;
        const __m512i v = count >= 64 ? _mm512_loadu_si512(codes + j)
                                      : _mm512_maskz_loadu_epi8(first_bytes(count), codes + j);
        if (maskbits) {
            const uint64_t m = (uint64_t)_mm512_test_epi8_mask(v, masked);
            const size_t left = mbytes - j / 8;
            memcpy(maskbits + j / 8, &m, left < 8 ? left : 8);
        }
        const __m512i pairs = _mm512_maddubs_epi16(_mm512_and_si512(v, keep), w1);
        uint8_t *out = packed + j / 8 * (size_t)bits;
        const __mmask64 store = first_bytes(nbytes - j / 8 * (size_t)bits);
        if (bits == 4) {
            _mm256_mask_storeu_epi8(out, (__mmask32)store, _mm512_cvtepi16_epi8(pairs));
        } else if (bits == 2) {
            _mm_mask_storeu_epi8(out, (__mmask16)store, _mm512_cvtepi32_epi8(_mm512_madd_epi16(pairs, w2)));
        } else {
            __m512i d = _mm512_madd_epi16(pairs, w2); /* 12 bits in each 32-bit lane */
            d = _mm512_and_si512(_mm512_or_si512(d, _mm512_srli_epi64(d, 20)), _mm512_set1_epi64(0xFFFFFF));
            _mm256_mask_storeu_epi8(out, (__mmask32)store & 0xFFFFFF,
                                    _mm512_castsi512_si256(_mm512_permutexvar_epi8(squeeze, d)));
        }
    }
}

typedef struct {
    __m512i spread, shifts, keep;
    size_t step; /* packed bytes per 64 codes */
} unpacker;

static unpacker make_unpacker(int bits) {
    uint8_t spread[64], shifts[64];
    for (int i = 0; i < 64; ++i) {
        const int lane = i / 8, k = i % 8;
        spread[i] = (uint8_t)(lane * bits + (k < bits ? k : 0)); /* lane q: its `bits` bytes */
        shifts[i] = (uint8_t)(k * bits);                          /* code k of the lane */
    }
    unpacker u = {_mm512_loadu_si512(spread), _mm512_loadu_si512(shifts),
                  _mm512_set1_epi8((char)((1 << bits) - 1)), (size_t)(8 * bits)};
    return u;
}

/* 64 codes starting at code j (a multiple of 64) as bytes; codes past n read 0 bytes */
static inline __m512i unpack64(const unpacker *u, const uint8_t *packed, size_t j, size_t nbytes) {
    const size_t at = j / 8 * (u->step / 8);
    const size_t left = nbytes - at;
    const __m512i raw = _mm512_maskz_loadu_epi8(first_bytes(left < u->step ? left : u->step), packed + at);
    const __m512i spread = _mm512_permutexvar_epi8(u->spread, raw);
    return _mm512_and_si512(_mm512_multishift_epi64_epi8(u->shifts, spread), u->keep);
}

static void unpack_avx512(const uint8_t *packed, size_t n, int bits, uint8_t *codes) {
    const unpacker u = make_unpacker(bits);
    const size_t nbytes = EXAQ_PACKED_BYTES(n, bits);
    size_t j = 0;
    for (; j + 64 <= n; j += 64) _mm512_storeu_si512(codes + j, unpack64(&u, packed, j, nbytes));
    if (j < n) _mm512_mask_storeu_epi8(codes + j, first_bytes(n - j), unpack64(&u, packed, j, nbytes));
}

static inline __m512i popcount_bytes(__m512i x) {
    const __m512i table = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i nib = _mm512_set1_epi8(0x0F);
    return _mm512_add_epi8(_mm512_shuffle_epi8(table, _mm512_and_si512(x, nib)),
                           _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(x, 4), nib)));
}

static inline int64_t sad_total(__m512i byte_counts) {
    return _mm512_reduce_add_epi64(_mm512_sad_epu8(byte_counts, _mm512_setzero_si512()));
}

/* 2 bits: exact code counts from the bit planes (see the AVX2 file); the
 * full bytes of the row go through SIMD (zero bytes of the masked last load
 * are not counted), the codes of a last partial byte one by one */
static double lutsum2_avx512(const uint8_t *packed, size_t n, const float lut[EXAQ_MAX_CODES]) {
    const size_t full = n / 4;
    const __m512i even = _mm512_set1_epi8(0x55);
    int64_t n_lo = 0, n_hi = 0, n_3 = 0;
    size_t b = 0;
    while (b < full) {
        __m512i a_lo = _mm512_setzero_si512(), a_hi = a_lo, a_3 = a_lo;
        for (int k = 0; k < 63 && b < full; ++k, b += 64) {
            const __m512i v = _mm512_maskz_loadu_epi8(first_bytes(full - b), packed + b);
            const __m512i lo = _mm512_and_si512(v, even);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 1), even);
            a_lo = _mm512_add_epi8(a_lo, popcount_bytes(lo));
            a_hi = _mm512_add_epi8(a_hi, popcount_bytes(hi));
            a_3 = _mm512_add_epi8(a_3, popcount_bytes(_mm512_and_si512(lo, hi)));
        }
        n_lo += sad_total(a_lo);
        n_hi += sad_total(a_hi);
        n_3 += sad_total(a_3);
    }
    const int64_t n1 = n_lo - n_3, n2 = n_hi - n_3, n0 = (int64_t)(4 * full) - n1 - n2 - n_3;
    const double counted = (double)n0 * lut[0] + (double)n1 * lut[1] + (double)n2 * lut[2] +
                           (double)n_3 * lut[3];
    return counted + exaq_lutsum_from(packed, 4 * full, n, 2, lut);
}

/* 3 and 4 bits: codes unpacked in registers, a 16-entry in-register table
 * (vpermps), float lanes */
static double lutsum34_avx512(const uint8_t *packed, size_t n, int bits,
                              const float lut[EXAQ_MAX_CODES]) {
    const unpacker u = make_unpacker(bits);
    const size_t nbytes = EXAQ_PACKED_BYTES(n, bits);
    const __m512 table = _mm512_loadu_ps(lut);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (size_t j = 0; j < n; j += 64) {
        const __m512i c = unpack64(&u, packed, j, nbytes);
        const __mmask64 live = first_bytes(n - j);
        const __m128i c0 = _mm512_castsi512_si128(c), c1 = _mm512_extracti32x4_epi32(c, 1);
        const __m128i c2 = _mm512_extracti32x4_epi32(c, 2), c3 = _mm512_extracti32x4_epi32(c, 3);
        const __m128i parts[4] = {c0, c1, c2, c3};
        for (int q = 0; q < 4; ++q) {
            const __mmask16 m = (__mmask16)(live >> (16 * q));
            acc[q] = _mm512_mask_add_ps(acc[q], m, acc[q],
                                        _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(parts[q]), table));
        }
    }
    return (double)_mm512_reduce_add_ps(acc[0]) + (double)_mm512_reduce_add_ps(acc[1]) +
           (double)_mm512_reduce_add_ps(acc[2]) + (double)_mm512_reduce_add_ps(acc[3]);
}

static double lutsum_avx512(const uint8_t *packed, size_t n, int bits,
                            const float lut[EXAQ_MAX_CODES]) {
    return bits == 2 ? lutsum2_avx512(packed, n, lut) : lutsum34_avx512(packed, n, bits, lut);
}

static double lutexp_sum_avx512(const uint8_t *codes, size_t n, const float lut[EXAQ_MAX_CODES]) {
    const __m512 table = _mm512_loadu_ps(lut);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256i c = _mm256_loadu_si256((const __m256i *)(codes + j));
        acc0 = _mm512_add_ps(acc0, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(c)), table));
        acc1 = _mm512_add_ps(acc1, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(c, 1)), table));
    }
    for (; j < n; j += 16) {
        const __mmask16 m = (__mmask16)first_bytes(n - j);
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + j));
        acc0 = _mm512_mask_add_ps(acc0, m, acc0, _mm512_permutexvar_ps(idx, table));
    }
    return (double)_mm512_reduce_add_ps(acc0) + (double)_mm512_reduce_add_ps(acc1);
}

const exaq_packed_kernels exaq_packed_avx512 = {
    .pack = pack_avx512,
    .unpack = unpack_avx512,
    .lutsum = lutsum_avx512,
    .lutexp_sum = lutexp_sum_avx512,
    .lutsum_by_table = 0,
};
