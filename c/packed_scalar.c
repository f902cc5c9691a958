/* Scalar packed-code kernels: the reference of every SIMD backend, and the
 * paper's LUTsum (a table of sums indexed by packed bytes). */
#include "packed_common.h"

static void pack_scalar(const uint8_t *codes, size_t n, int bits, uint8_t *packed,
                        uint8_t *maskbits) {
    exaq_pack_from(codes, 0, n, bits, packed, maskbits);
}

static void unpack_scalar(const uint8_t *packed, size_t n, int bits, uint8_t *codes) {
    exaq_unpack_from(packed, 0, n, bits, codes);
}

/* The sum table of the paper: entry i = sum of lut over the codes packed in
 * the index (four 2-bit codes in a byte, two 4-bit codes in a byte, four
 * 3-bit codes in 12 bits), summed in double and rounded once. */
static size_t build_sum_table(int bits, const float lut[EXAQ_MAX_CODES], float *table) {
    const int per = bits == 4 ? 2 : 4;
    const size_t size = (size_t)1 << (per * bits);
    const unsigned keep = (1u << bits) - 1u;
    for (size_t i = 0; i < size; ++i) {
        double s = 0.0;
        for (int c = 0; c < per; ++c) s += (double)lut[(i >> (c * bits)) & keep];
        table[i] = (float)s;
    }
    return size;
}

/* float lanes over the table, as a float sum(exp) would accumulate */
static double table_sum(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES],
                        const float *table) {
    float acc[4] = {0, 0, 0, 0};
    size_t j = 0;
    if (bits == 3) { /* three bytes = eight codes = two 12-bit indices */
        const uint8_t *p = packed;
        for (; j + 16 <= n; j += 16, p += 6) {
            const uint32_t w0 = p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
            const uint32_t w1 = p[3] | (uint32_t)p[4] << 8 | (uint32_t)p[5] << 16;
            acc[0] += table[w0 & 0xFFF];
            acc[1] += table[w0 >> 12];
            acc[2] += table[w1 & 0xFFF];
            acc[3] += table[w1 >> 12];
        }
    } else { /* one byte = 8/bits codes */
        const size_t per = 8 / (size_t)bits, step = 4 * per;
        const uint8_t *p = packed;
        for (; j + step <= n; j += step, p += 4) {
            acc[0] += table[p[0]];
            acc[1] += table[p[1]];
            acc[2] += table[p[2]];
            acc[3] += table[p[3]];
        }
    }
    return ((double)acc[0] + (double)acc[1]) + ((double)acc[2] + (double)acc[3]) +
           exaq_lutsum_from(packed, j, n, bits, lut);
}

void exaq_lutsum_table_rows(const uint8_t *packed, size_t rows, ptrdiff_t ps, size_t n,
                            const int64_t *lengths, int bits, const float lut[EXAQ_MAX_CODES],
                            double *sums) {
    float table[4096];
    build_sum_table(bits, lut, table);
    for (size_t r = 0; r < rows; ++r) {
        size_t len = n;
        if (lengths) len = lengths[r] < 0 ? 0 : (size_t)lengths[r] < n ? (size_t)lengths[r] : n;
        sums[r] = table_sum(packed + (ptrdiff_t)r * ps, len, bits, lut, table);
    }
}

static double lutsum_scalar(const uint8_t *packed, size_t n, int bits,
                            const float lut[EXAQ_MAX_CODES]) {
    double s;
    exaq_lutsum_table_rows(packed, 1, 0, n, NULL, bits, lut, &s);
    return s;
}

static double lutexp_sum_scalar(const uint8_t *codes, size_t n, const float lut[EXAQ_MAX_CODES]) {
    float acc[4] = {0, 0, 0, 0};
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        acc[0] += lut[codes[j] & 15];
        acc[1] += lut[codes[j + 1] & 15];
        acc[2] += lut[codes[j + 2] & 15];
        acc[3] += lut[codes[j + 3] & 15];
    }
    for (; j < n; ++j) acc[j & 3] += lut[codes[j] & 15];
    return ((double)acc[0] + (double)acc[1]) + ((double)acc[2] + (double)acc[3]);
}

const exaq_packed_kernels exaq_packed_scalar = {
    pack_scalar, unpack_scalar, lutsum_scalar, lutexp_sum_scalar,
};
