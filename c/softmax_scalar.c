/* Scalar softmax kernels: the reference every SIMD backend is tested against. */
#include <string.h>

#include "softmax_common.h"

static void summarize_scalar(const float *x, size_t n, exaq_row_summary *out) {
    float mx = -__builtin_inff(), mn = __builtin_inff();
    int64_t unmasked = 0;
    int invalid = 0;
    for (size_t j = 0; j < n; ++j) {
        const float v = x[j];
        if (v != v || v == __builtin_inff()) { invalid = 1; ++unmasked; continue; }
        if (exaq_is_masked(v)) continue;
        ++unmasked;
        if (v > mx) mx = v;
        if (v < mn) mn = v;
    }
    out->max = mx;
    out->min = mn;
    out->unmasked = unmasked;
    out->invalid = invalid;
}

static void moments_scalar(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                           double sumsq[EXAQ_LANES]) {
    for (size_t j = 0; j < n; ++j) {
        if (exaq_is_masked(x[j])) continue;
        const double t = (double)x[j] - (double)shift;
        sum[j % EXAQ_LANES] += t;
        sumsq[j % EXAQ_LANES] += t * t;
    }
}

static void abs_deviation_scalar(const float *x, size_t n, float shift, double center,
                                 double sum[EXAQ_LANES]) {
    for (size_t j = 0; j < n; ++j) {
        if (exaq_is_masked(x[j])) continue;
        const double d = ((double)x[j] - (double)shift) - center;
        sum[j % EXAQ_LANES] += d < 0 ? -d : d;
    }
}

static void code_counts_scalar(const float *x, size_t n, const exaq_quantizer *q,
                               int64_t counts[EXAQ_MAX_CODES]) {
    for (size_t j = 0; j < n; ++j)
        if (!exaq_is_masked(x[j])) ++counts[exaq_quantize_one(x[j], q)];
}

static void lookup_store_scalar(const float *x, size_t n, const exaq_quantizer *q,
                                const float table[EXAQ_MAX_CODES], float *y) {
    for (size_t j = 0; j < n; ++j)
        y[j] = exaq_is_masked(x[j]) ? 0.0f : table[exaq_quantize_one(x[j], q)];
}

static void codes_scalar(const float *x, size_t n, const exaq_quantizer *q, uint8_t *codes) {
    for (size_t j = 0; j < n; ++j)
        codes[j] = exaq_is_masked(x[j]) ? 0 : (uint8_t)exaq_quantize_one(x[j], q);
}

static float exp_nonpositive(float t) {
    if (!(t >= EXAQ_EXP_MIN)) return 0.0f;
    const float k = exaq_round_even(t * EXAQ_LOG2E);
    float r = t - k * EXAQ_LN2_HI;
    r = r - k * EXAQ_LN2_LO;
    float p = EXAQ_EXP_P0;
    p = p * r + EXAQ_EXP_P1;
    p = p * r + EXAQ_EXP_P2;
    p = p * r + EXAQ_EXP_P3;
    p = p * r + EXAQ_EXP_P4;
    p = p * r + EXAQ_EXP_P5;
    p = p * r * r + r + 1.0f;
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

const exaq_softmax_kernels exaq_softmax_scalar = {
    summarize_scalar,   moments_scalar, abs_deviation_scalar, code_counts_scalar,
    lookup_store_scalar, codes_scalar,  exp_store_sum_scalar, scale_scalar,
};
