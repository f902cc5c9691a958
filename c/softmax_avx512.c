/* AVX-512 (F/BW/VL) softmax kernels.  Compiled with AVX-512 flags; only
 * called when dispatch has seen the CPU and OS support them.  Tails use
 * masked loads and stores, so nothing outside [x, x+n) is touched. */
#include <immintrin.h>

#include "softmax_common.h"

#define W 16

static inline __mmask16 tail_mask(size_t remaining) {
    return remaining >= W ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

static void summarize_avx512(const float *x, size_t n, exaq_row_summary *out) {
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    const __m512 pos_inf = _mm512_set1_ps(__builtin_inff());
    __m512 vmax = neg_inf, vmin = pos_inf;
    __mmask16 invalid = 0;
    int64_t unmasked = 0;
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 bad = _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q) |
                              _mm512_mask_cmp_ps_mask(m, v, pos_inf, _CMP_EQ_OQ);
        const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, neg_inf, _CMP_NEQ_UQ);
        const __mmask16 finite = live & (__mmask16)~bad;
        invalid |= bad;
        unmasked += __builtin_popcount((unsigned)live);
        vmax = _mm512_mask_max_ps(vmax, finite, vmax, v);
        vmin = _mm512_mask_min_ps(vmin, finite, vmin, v);
    }
    out->max = _mm512_reduce_max_ps(vmax);
    out->min = _mm512_reduce_min_ps(vmin);
    out->unmasked = unmasked;
    out->invalid = invalid != 0;
}

static inline __m512d low_half_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d high_half_pd(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

static void moments_avx512(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                           double sumsq[EXAQ_LANES]) {
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    const __m512d s = _mm512_set1_pd((double)shift);
    __m512d sum0 = _mm512_loadu_pd(sum), sum1 = _mm512_loadu_pd(sum + 8);
    __m512d sq0 = _mm512_loadu_pd(sumsq), sq1 = _mm512_loadu_pd(sumsq + 8);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, neg_inf, _CMP_NEQ_UQ);
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
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    const __m512d s = _mm512_set1_pd((double)shift), c = _mm512_set1_pd(center);
    __m512d sum0 = _mm512_loadu_pd(sum), sum1 = _mm512_loadu_pd(sum + 8);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, neg_inf, _CMP_NEQ_UQ);
        const __m512d d0 = _mm512_sub_pd(_mm512_sub_pd(low_half_pd(v), s), c);
        const __m512d d1 = _mm512_sub_pd(_mm512_sub_pd(high_half_pd(v), s), c);
        sum0 = _mm512_mask_add_pd(sum0, (__mmask8)live, sum0, _mm512_abs_pd(d0));
        sum1 = _mm512_mask_add_pd(sum1, (__mmask8)(live >> 8), sum1, _mm512_abs_pd(d1));
    }
    _mm512_storeu_pd(sum, sum0);
    _mm512_storeu_pd(sum + 8, sum1);
}

typedef struct {
    __m512 shift, lo, scale;
    __m512i levels;
} quantizer512;

static inline quantizer512 load_quantizer(const exaq_quantizer *q) {
    quantizer512 v;
    v.shift = _mm512_set1_ps(q->shift);
    v.lo = _mm512_set1_ps(q->lo);
    v.scale = _mm512_set1_ps(q->scale);
    v.levels = _mm512_set1_epi32(q->levels);
    return v;
}

/* the same float32 operations, in the same order, as exaq_quantize_one */
static inline __m512i quantize512(__m512 x, const quantizer512 *q) {
    const __m512 t = _mm512_max_ps(_mm512_sub_ps(x, q->shift), q->lo);
    const __m512 v = _mm512_mul_ps(_mm512_sub_ps(t, q->lo), q->scale);
    const __m512i code = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_min_epi32(code, q->levels);
}

/* Each group of four codes is counted in the four bytes of a 32-bit lane
 * (one-hot by a variable shift: counts >= 32 shift to zero), flushed before a
 * byte can overflow. */
static inline void flush_byte_counters(__m512i acc, int64_t *counts4) {
    const __m512i byte = _mm512_set1_epi32(0xFF);
    for (int b = 0; b < 4; ++b)
        counts4[b] += _mm512_reduce_add_epi32(_mm512_and_si512(_mm512_srli_epi32(acc, 8 * b), byte));
}

static inline void code_counts_groups(const float *x, size_t n, const exaq_quantizer *q,
                                      int64_t counts[EXAQ_MAX_CODES], const int groups) {
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    const __m512i one = _mm512_set1_epi32(1);
    const quantizer512 vq = load_quantizer(q);
    __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
    int pending = 0;
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, neg_inf, _CMP_NEQ_UQ);
        const __m512i shift_bits = _mm512_slli_epi32(quantize512(v, &vq), 3);
        for (int g = 0; g < groups; ++g) {
            const __m512i s = _mm512_sub_epi32(shift_bits, _mm512_set1_epi32(32 * g));
            acc[g] = _mm512_mask_add_epi32(acc[g], live, acc[g], _mm512_sllv_epi32(one, s));
        }
        if (++pending == 255) {
            for (int g = 0; g < groups; ++g) {
                flush_byte_counters(acc[g], counts + 4 * g);
                acc[g] = _mm512_setzero_si512();
            }
            pending = 0;
        }
    }
    for (int g = 0; g < groups; ++g) flush_byte_counters(acc[g], counts + 4 * g);
}

static void code_counts_avx512(const float *x, size_t n, const exaq_quantizer *q,
                               int64_t counts[EXAQ_MAX_CODES]) {
    if (q->levels <= 3)
        code_counts_groups(x, n, q, counts, 1);
    else if (q->levels <= 7)
        code_counts_groups(x, n, q, counts, 2);
    else
        code_counts_groups(x, n, q, counts, 4);
}

static void lookup_store_avx512(const float *x, size_t n, const exaq_quantizer *q,
                                const float table[EXAQ_MAX_CODES], float *y) {
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    const __m512 tab = _mm512_loadu_ps(table);
    const quantizer512 vq = load_quantizer(q);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = _mm512_cmp_ps_mask(v, neg_inf, _CMP_NEQ_UQ);
        const __m512 p = _mm512_maskz_permutexvar_ps(live, quantize512(v, &vq), tab);
        _mm512_mask_storeu_ps(y + j, m, p);
    }
}

static void codes_avx512(const float *x, size_t n, const exaq_quantizer *q, uint8_t *codes) {
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    const quantizer512 vq = load_quantizer(q);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = _mm512_cmp_ps_mask(v, neg_inf, _CMP_NEQ_UQ);
        const __m512i code = _mm512_maskz_mov_epi32(live, quantize512(v, &vq));
        _mm512_mask_cvtepi32_storeu_epi8(codes + j, m, code);
    }
}

static inline __m512 exp512_nonpositive(__m512 t) {
    const __m512 lowest = _mm512_set1_ps(EXAQ_EXP_MIN);
    const __mmask16 representable = _mm512_cmp_ps_mask(t, lowest, _CMP_GE_OQ);
    t = _mm512_max_ps(t, lowest);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(EXAQ_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXAQ_LN2_HI), t);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXAQ_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXAQ_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(representable, _mm512_scalef_ps(p, k));
}

static double exp_store_sum_avx512(const float *x, size_t n, float shift, float *y) {
    const __m512 s = _mm512_set1_ps(shift);
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        const __m512 e = exp512_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), s));
        acc = _mm512_mask_add_ps(acc, m, acc, e);
        _mm512_mask_storeu_ps(y + j, m, e);
    }
    float lanes[W];
    _mm512_storeu_ps(lanes, acc);
    double total = 0.0;
    for (int l = 0; l < W; ++l) total += lanes[l];
    return total;
}

static void scale_avx512(float *y, size_t n, float factor) {
    const __m512 f = _mm512_set1_ps(factor);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = tail_mask(n - j);
        _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + j), f));
    }
}

const exaq_softmax_kernels exaq_softmax_avx512 = {
    summarize_avx512,    moments_avx512, abs_deviation_avx512, code_counts_avx512,
    lookup_store_avx512, codes_avx512,   exp_store_sum_avx512, scale_avx512,
};
