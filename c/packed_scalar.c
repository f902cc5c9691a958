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
 * 3-bit codes in 12 bits), summed in double.  The table and the accumulators
 * are double: float lanes stop growing once a lane reaches 2^24 times an
 * entry (2^29 ones summed to 2^28) and lose ~1e-3 of a sum of 2^24 random
 * codes; double lanes keep every sum of counts exact to float64 rounding. */
static size_t build_sum_table(int bits, const float lut[EXAQ_MAX_CODES], double *table) {
    const int per = bits == 4 ? 2 : 4;
    const size_t size = (size_t)1 << (per * bits);
    const unsigned keep = (1u << bits) - 1u;
    for (size_t i = 0; i < size; ++i) {
        double s = 0.0;
        for (int c = 0; c < per; ++c) s += (double)lut[(i >> (c * bits)) & keep];
        table[i] = s;
    }
    return size;
}

static double table_sum(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES],
                        const double *table) {
    double acc[4] = {0, 0, 0, 0};
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
    return (acc[0] + acc[1]) + (acc[2] + acc[3]) + exaq_lutsum_from(packed, j, n, bits, lut);
}

/* the entries' own argument check: a bits value outside 2..4 would index past
 * the 4096-entry table (and the code counts), whatever the caller checked */
static int lutsum_args_ok(const uint8_t *packed, size_t rows, int bits, const float *lut, const double *sums) {
    return bits >= 2 && bits <= 4 && (rows == 0 || (packed && lut && sums));
}

int exaq_lutsum_table_rows(const uint8_t *packed, size_t rows, ptrdiff_t ps, size_t n,
                           const int64_t *lengths, int bits, const float lut[EXAQ_MAX_CODES],
                           double *sums) {
    if (!lutsum_args_ok(packed, rows, bits, lut, sums)) return -1;
    double table[4096];
    build_sum_table(bits, lut, table);
    for (size_t r = 0; r < rows; ++r) {
        size_t len = n;
        if (lengths) len = lengths[r] < 0 ? 0 : (size_t)lengths[r] < n ? (size_t)lengths[r] : n;
        sums[r] = table_sum(packed + (ptrdiff_t)r * ps, len, bits, lut, table);
    }
    return 0;
}

/* Exact LUTsum of one row: every code counted in integers, then
 * sum_k count_k * lut[k] in double, k = 0, 1, ... in order.  The same code
 * for every backend (the SIMD 3/4-bit kernels add in float lanes). */
static double counted_sum(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES]) {
    uint64_t count[EXAQ_MAX_CODES] = {0};
    const unsigned keep = (1u << bits) - 1u;
    size_t j = 0;
    if (bits == 3) { /* three bytes = eight codes, spread to one a byte */
        uint64_t part[4][8];
        memset(part, 0, sizeof part);
        for (; j + 8 <= n; j += 8) {
            uint64_t w = 0;
            memcpy(&w, packed + j / 8 * 3, 3);
            w = exaq_swar_unpack8(w, 3);
            for (int c = 0; c < 8; ++c) ++part[c & 3][(w >> (8 * c)) & 7];
        }
        for (int k = 0; k < 8; ++k) count[k] = part[0][k] + part[1][k] + part[2][k] + part[3][k];
    } else { /* a histogram of the bytes, folded to codes */
        const size_t per = 8 / (size_t)bits, full = n / per;
        uint64_t hist[256] = {0};
        for (size_t b = 0; b < full; ++b) ++hist[packed[b]];
        for (unsigned i = 0; i < 256; ++i)
            if (hist[i])
                for (size_t c = 0; c < per; ++c) count[(i >> (c * (size_t)bits)) & keep] += hist[i];
        j = full * per;
    }
    for (; j < n; ++j) ++count[exaq_code_at(packed, j, bits)];
    double s = 0.0;
    for (unsigned k = 0; k <= keep; ++k) s += (double)count[k] * (double)lut[k];
    return s;
}

int exaq_lutsum_count_rows(const uint8_t *packed, size_t rows, ptrdiff_t ps, size_t n,
                           const int64_t *lengths, int bits, const float *luts, ptrdiff_t lut_stride,
                           double *sums) {
    if (!lutsum_args_ok(packed, rows, bits, luts, sums)) return -1;
    for (size_t r = 0; r < rows; ++r) {
        size_t len = n;
        if (lengths) len = lengths[r] < 0 ? 0 : (size_t)lengths[r] < n ? (size_t)lengths[r] : n;
        sums[r] = counted_sum(packed + (ptrdiff_t)r * ps, len, bits, luts + (ptrdiff_t)r * lut_stride);
    }
    return 0;
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
    .pack = pack_scalar,
    .unpack = unpack_scalar,
    .lutsum = lutsum_scalar,
    .lutexp_sum = lutexp_sum_scalar,
    .lutsum_by_table = 1,
};
