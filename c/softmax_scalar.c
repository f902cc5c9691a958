/* Scalar softmax kernels: the reference every SIMD backend is tested against. */
#include <string.h>

#include "softmax_common.h"

static float row_max_scalar(const float *x, size_t n, int *specials) {
    float mx = -__builtin_inff();
    int invalid = 0, masked = 0;
    for (size_t j = 0; j < n; ++j) {
        if (exaq_is_invalid(x[j])) invalid = 1;
        else if (exaq_is_masked(x[j])) masked = 1;
        else if (x[j] > mx) mx = x[j];
    }
    *specials = exaq_row_specials(invalid, mx, masked);
    return mx;
}

static void row_stats_scalar(const float *x, size_t n, float pilot, int flags, exaq_row_stats *out) {
    exaq_stat_lanes lanes;
    memset(&lanes, 0, sizeof lanes);
    exaq_row_stats_init(out, n);
    for (size_t j = 0; j < n; ++j) {
        exaq_stats_add_one(x[j], j, pilot, flags, &lanes, out);
        if (j % EXAQ_FLUSH == EXAQ_FLUSH - 1) exaq_stat_lanes_flush(&lanes);
    }
    exaq_stat_lanes_total(&lanes, out);
    if (!(flags & EXAQ_STATS_MIN)) out->min = __builtin_nanf("");
}

static void row_stats_rows_scalar(const float *x, size_t rows, size_t n, ptrdiff_t xs, int flags,
                                  exaq_row_stats *out) {
    for (size_t r = 0; r < rows; ++r) row_stats_scalar(x + (ptrdiff_t)r * xs, n, 0.0f, flags, out + r);
}

static void moments_scalar(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                           double sumsq[EXAQ_LANES]) {
    exaq_moments_from(x, 0, n, shift, sum, sumsq);
}

static void abs_deviation_scalar(const float *x, size_t n, float shift, double center,
                                 double sum[EXAQ_LANES]) {
    exaq_abs_deviation_from(x, 0, n, shift, center, sum);
}

static void quantize_count_scalar(const float *x, size_t n, const exaq_quantizer *q,
                                  uint8_t *codes, int64_t counts[EXAQ_MAX_CODES]) {
    exaq_quantize_count_from(x, 0, n, q, codes, counts);
}

static void expand_scalar(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES],
                          float *y) {
    exaq_expand_from(codes, 0, n, table, y);
}

static size_t quantize_pack2_scalar(const float *x, size_t n, const exaq_quantizer *q, uint8_t *packed,
                                    uint8_t *maskbits, int64_t counts[4]) {
    return exaq_quantize_pack2_from(x, 0, n, q, packed, maskbits, counts);
}

static void expand_pack2_scalar(const uint8_t *packed, const uint8_t *maskbits, size_t n,
                                const float table[4], float *y) {
    exaq_expand_pack2_from(packed, maskbits, 0, n, table, y);
}

static float exp_nonpositive(float t) {
    if (!(t >= EXAQ_EXP_MIN)) return 0.0f;
    const float k = exaq_round_even(t * EXAQ_LOG2E);
    /* in double, as exact as the SIMD kernels' fused multiply-add */
    const float r = (float)((double)t - (double)k * (double)EXAQ_LN2);
    float p = EXAQ_EXP_C5;
    p = p * r + EXAQ_EXP_C4;
    p = p * r + EXAQ_EXP_C3;
    p = p * r + EXAQ_EXP_C2;
    p = p * r + EXAQ_EXP_C1;
    p = p * r + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

static double exp_store_sum_scalar(const float *x, size_t n, float shift, float *y) {
    float lanes[EXAQ_LANES] = {0};
    for (size_t j = 0; j < n; ++j) {
        const float e = exp_nonpositive(x[j] - shift);
        y[j] = e;
        lanes[j % EXAQ_LANES] += e;
    }
    double total = 0.0;
    for (int l = 0; l < EXAQ_LANES; ++l) total += lanes[l];
    return total;
}

static void scale_scalar(float *y, size_t n, float factor) {
    for (size_t j = 0; j < n; ++j) y[j] *= factor;
}

/* 64 entries of -inf, as bit patterns */
#define NEG_INF_8 0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u
static const uint32_t neg_inf_block[64] = {NEG_INF_8, NEG_INF_8, NEG_INF_8, NEG_INF_8,
                                           NEG_INF_8, NEG_INF_8, NEG_INF_8, NEG_INF_8};
#undef NEG_INF_8

/* One past the row's last unmasked entry (0 if every entry is masked): a
 * causal or right-padded row ends in a run of -inf that pass 2 of the
 * driver then neither reads nor quantizes.  64
 * entries at a time by memcmp against a block of -inf (the C library's
 * vector compare: every -inf has one bit pattern), then eight at a time as
 * words (all eight are -inf exactly when both the AND and the OR of their
 * bit patterns are -inf's), then one by one. */
static size_t live_end_scalar(const float *row, size_t n) {
    const uint64_t masked_pair = 0xFF800000FF800000ull;
    size_t end = n;
    while (end >= 64 && memcmp(row + end - 64, neg_inf_block, sizeof neg_inf_block) == 0) end -= 64;
    while (end >= 8) {
        uint64_t w[4];
        memcpy(w, row + end - 8, sizeof w);
        if (((w[0] & w[1]) & (w[2] & w[3])) != masked_pair || ((w[0] | w[1]) | (w[2] | w[3])) != masked_pair)
            break;
        end -= 8;
    }
    while (end > 0 && exaq_is_masked(row[end - 1])) --end;
    return end;
}

const exaq_softmax_kernels exaq_softmax_scalar = {
    .row_max = row_max_scalar,
    .row_stats = row_stats_scalar,
    .row_stats_rows = row_stats_rows_scalar,
    .moments = moments_scalar,
    .abs_deviation = abs_deviation_scalar,
    .quantize_count = quantize_count_scalar,
    .expand = expand_scalar,
    .exp_store_sum = exp_store_sum_scalar,
    .scale = scale_scalar,
    .quantize_pack2 = quantize_pack2_scalar,
    .expand_pack2 = expand_pack2_scalar,
    .packed = &exaq_packed_scalar,
    .live_end = live_end_scalar,
};
