/* Scalar helpers of the packed-code kernels (format: exaq.h, docs/packed.md).
 * They are the reference behaviour and handle the SIMD kernels' tails. */
#ifndef EXAQ_PACKED_COMMON_H
#define EXAQ_PACKED_COMMON_H

#include <string.h>

#include "exaq.h"

/* code j of a packed row */
static inline unsigned exaq_code_at(const uint8_t *packed, size_t j, int bits) {
    const size_t bit = j * (size_t)bits;
    unsigned v = packed[bit >> 3] >> (bit & 7);
    if ((bit & 7) + (size_t)bits > 8) v |= (unsigned)packed[(bit >> 3) + 1] << (8 - (bit & 7));
    return v & ((1u << bits) - 1u);
}

/* Packs codes[j0..n) into a row whose bytes before bit j0*bits are already
 * written; j0 must be a multiple of 8 (a byte boundary for every width). */
static inline void exaq_pack_from(const uint8_t *codes, size_t j0, size_t n, int bits,
                                  uint8_t *packed, uint8_t *maskbits) {
    const size_t first = j0 * (size_t)bits / 8, end = EXAQ_PACKED_BYTES(n, bits);
    if (end > first) memset(packed + first, 0, end - first);
    if (maskbits && EXAQ_MASK_BYTES(n) > j0 / 8) memset(maskbits + j0 / 8, 0, EXAQ_MASK_BYTES(n) - j0 / 8);
    const unsigned keep = (1u << bits) - 1u;
    for (size_t j = j0; j < n; ++j) {
        unsigned c = codes[j];
        if (c >= EXAQ_MAX_CODES) {
            c = 0;
            if (maskbits) maskbits[j >> 3] |= (uint8_t)(1u << (j & 7));
        }
        c &= keep;
        const size_t bit = j * (size_t)bits;
        packed[bit >> 3] |= (uint8_t)(c << (bit & 7));
        if ((bit & 7) + (size_t)bits > 8) packed[(bit >> 3) + 1] |= (uint8_t)(c >> (8 - (bit & 7)));
    }
}

static inline void exaq_unpack_from(const uint8_t *packed, size_t j0, size_t n, int bits,
                                    uint8_t *codes) {
    for (size_t j = j0; j < n; ++j) codes[j] = (uint8_t)exaq_code_at(packed, j, bits);
}

static inline double exaq_lutsum_from(const uint8_t *packed, size_t j0, size_t n, int bits,
                                      const float lut[EXAQ_MAX_CODES]) {
    double s = 0.0;
    for (size_t j = j0; j < n; ++j) s += (double)lut[exaq_code_at(packed, j, bits)];
    return s;
}

/* SWAR: eight byte codes (each < 2^bits, one per byte of w, little-endian) to
 * their 8*bits packed bits, and back */
static inline uint64_t exaq_swar_pack8(uint64_t w, int bits) {
    const unsigned b = (unsigned)bits;
    w = (w | (w >> (8 - b))) & (((1ull << 2 * b) - 1) * 0x0001000100010001ull);
    w = (w | (w >> (16 - 2 * b))) & (((1ull << 4 * b) - 1) * 0x0000000100000001ull);
    return (w | (w >> (32 - 4 * b))) & ((1ull << 8 * b) - 1);
}

static inline uint64_t exaq_swar_unpack8(uint64_t w, int bits) {
    const unsigned b = (unsigned)bits;
    w = (w | (w << (32 - 4 * b))) & (((1ull << 4 * b) - 1) * 0x0000000100000001ull);
    w = (w | (w << (16 - 2 * b))) & (((1ull << 2 * b) - 1) * 0x0001000100010001ull);
    return (w | (w << (8 - b))) & (((1ull << b) - 1) * 0x0101010101010101ull);
}

static inline uint64_t exaq_load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w; /* little-endian targets only (x86-64, AArch64) */
}

#endif
