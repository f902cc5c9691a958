/* AVX-512 (F/BW/VL/VBMI) softmax kernels.  Compiled with AVX-512 flags; only
 * called when dispatch has seen the CPU and OS support them.  Whole vectors
 * in the main loops; the last n % 16 entries use masked loads and stores, so
 * nothing outside the row is touched. */
#include <immintrin.h>
#include <string.h>

#include "softmax_common.h"

#define W 16

static inline __mmask16 first_lanes(size_t count) {
    return count >= W ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u);
}

static inline __mmask16 unmasked16(__m512 v) {
    return _mm512_cmp_ps_mask(v, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_UQ);
}

static float row_max_avx512(const float *x, size_t n, int *invalid) {
    __m512 vmax = _mm512_set1_ps(-__builtin_inff());
    __mmask16 bad = 0;
    size_t j = 0;
    for (; j + W <= n; j += W) {
        const __m512 v = _mm512_loadu_ps(x + j);
        bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        vmax = _mm512_max_ps(v, vmax); /* a NaN in v keeps vmax */
    }
    if (j < n) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        bad |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
        vmax = _mm512_mask_max_ps(vmax, m, v, vmax);
    }
    const float mx = _mm512_reduce_max_ps(vmax);
    *invalid = bad != 0 || mx == __builtin_inff();
    return mx;
}

typedef struct {
    __m512 vmax, vmin, sum, sumsq;
    int64_t unmasked;
} stats512;

static inline void stats_step(stats512 *s, __m512 v, __mmask16 m, __m512 pilot) {
    const __mmask16 live = m & unmasked16(v);
    s->unmasked += __builtin_popcount((unsigned)live);
    s->vmax = _mm512_mask_max_ps(s->vmax, live, s->vmax, v);
    s->vmin = _mm512_mask_min_ps(s->vmin, live, s->vmin, v);
    const __m512 d = _mm512_sub_ps(v, pilot);
    s->sum = _mm512_mask_add_ps(s->sum, live, s->sum, d);
    s->sumsq = _mm512_mask3_fmadd_ps(d, d, s->sumsq, live);
}

static void row_stats_avx512(const float *x, size_t n, float pilot, exaq_row_stats *out) {
    const __m512 p = _mm512_set1_ps(pilot);
    double wide_sum[W] = {0}, wide_sumsq[W] = {0};
    stats512 s = {_mm512_set1_ps(-__builtin_inff()), _mm512_set1_ps(__builtin_inff()),
                  _mm512_setzero_ps(), _mm512_setzero_ps(), 0};
    for (size_t block = 0; block < n; block += EXAQ_FLUSH) {
        const size_t end = n - block < EXAQ_FLUSH ? n : block + EXAQ_FLUSH;
        size_t j = block;
        for (; j + W <= end; j += W) stats_step(&s, _mm512_loadu_ps(x + j), 0xFFFF, p);
        if (j < end) {
            const __mmask16 m = first_lanes(end - j);
            stats_step(&s, _mm512_maskz_loadu_ps(m, x + j), m, p);
        }
        float lanes_sum[W], lanes_sumsq[W];
        _mm512_storeu_ps(lanes_sum, s.sum);
        _mm512_storeu_ps(lanes_sumsq, s.sumsq);
        for (int l = 0; l < W; ++l) {
            wide_sum[l] += (double)lanes_sum[l];
            wide_sumsq[l] += (double)lanes_sumsq[l];
        }
        s.sum = _mm512_setzero_ps();
        s.sumsq = _mm512_setzero_ps();
    }
    out->max = _mm512_reduce_max_ps(s.vmax);
    out->min = _mm512_reduce_min_ps(s.vmin);
    out->unmasked = s.unmasked;
    out->sum = out->sumsq = 0.0;
    for (int l = 0; l < W; ++l) {
        out->sum += wide_sum[l];
        out->sumsq += wide_sumsq[l];
    }
}

static inline __m512d low_half_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d high_half_pd(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

static void moments_avx512(const float *x, size_t n, float shift, double sum[EXAQ_LANES],
                           double sumsq[EXAQ_LANES]) {
    const __m512d s = _mm512_set1_pd((double)shift);
    __m512d sum0 = _mm512_loadu_pd(sum), sum1 = _mm512_loadu_pd(sum + 8);
    __m512d sq0 = _mm512_loadu_pd(sumsq), sq1 = _mm512_loadu_pd(sumsq + 8);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = m & unmasked16(v);
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
    const __m512d s = _mm512_set1_pd((double)shift), c = _mm512_set1_pd(center);
    __m512d sum0 = _mm512_loadu_pd(sum), sum1 = _mm512_loadu_pd(sum + 8);
    for (size_t j = 0; j < n; j += W) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = m & unmasked16(v);
        const __m512d d0 = _mm512_sub_pd(_mm512_sub_pd(low_half_pd(v), s), c);
        const __m512d d1 = _mm512_sub_pd(_mm512_sub_pd(high_half_pd(v), s), c);
        sum0 = _mm512_mask_add_pd(sum0, (__mmask8)live, sum0, _mm512_abs_pd(d0));
        sum1 = _mm512_mask_add_pd(sum1, (__mmask8)(live >> 8), sum1, _mm512_abs_pd(d1));
    }
    _mm512_storeu_pd(sum, sum0);
    _mm512_storeu_pd(sum + 8, sum1);
}

typedef struct {
    __m512 shift, lo, scale, offset;
} quantizer512;

/* the float32 operations of exaq_quantize_one, in the same order; masked
 * lanes get EXAQ_MASKED_CODE */
static inline __m512i quantize512(__m512 x, __mmask16 live, const quantizer512 *q) {
    const __m512 t = _mm512_max_ps(_mm512_sub_ps(x, q->shift), q->lo);
    const __m512 v = _mm512_fmadd_ps(t, q->scale, q->offset);
    return _mm512_mask_cvt_roundps_epi32(_mm512_set1_epi32(EXAQ_MASKED_CODE), live, v,
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Counting: code k adds 1 << 8*(k % 4) to the 32-bit lanes of accumulator
 * k / 4 (a one-hot byte, looked up with a permute), so each accumulator holds
 * four byte counters per lane; they are drained before a byte can overflow. */
static inline void drain_byte_counters(__m512i acc, int64_t *counts4) {
    const __m512i byte = _mm512_set1_epi32(0xFF);
    for (int b = 0; b < 4; ++b)
        counts4[b] += _mm512_reduce_add_epi32(_mm512_and_si512(_mm512_srli_epi32(acc, 8 * b), byte));
}

static inline void quantize_count_groups(const float *x, size_t n, const exaq_quantizer *q,
                                         uint8_t *codes, int64_t counts[EXAQ_MAX_CODES],
                                         const int groups) {
    const quantizer512 vq = {_mm512_set1_ps(q->shift), _mm512_set1_ps(q->lo),
                             _mm512_set1_ps(q->scale), _mm512_set1_ps(q->offset)};
    /* one_hot[g][k] = 1 << 8*(k - 4g) for k in group g, else 0 (incl. masked 16) */
    __m512i one_hot[4];
    for (int g = 0; g < 4; ++g) {
        int32_t t[W];
        for (int k = 0; k < W; ++k) t[k] = (k / 4 == g) ? (int32_t)(1u << (8 * (k % 4))) : 0;
        one_hot[g] = _mm512_loadu_si512(t);
    }
    __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
    /* whole vectors in chunks of at most 255, so no byte counter overflows */
    size_t j = 0;
    while (j + W <= n) {
        const size_t chunk_end = (n - j) / W > 255 ? j + 255 * W : j + (n - j) / W * W;
        for (; j < chunk_end; j += W) {
            const __m512 v = _mm512_loadu_ps(x + j);
            const __mmask16 live = unmasked16(v);
            const __m512i code = quantize512(v, live, &vq);
            /* register down-convert + plain store: the masked memory form is slow on Zen 4 */
            _mm_storeu_si128((__m128i *)(codes + j), _mm512_cvtepi32_epi8(code));
            for (int g = 0; g < groups; ++g) /* the permute reads index 16 as 0: mask it */
                acc[g] = _mm512_mask_add_epi32(acc[g], live, acc[g],
                                               _mm512_permutexvar_epi32(code, one_hot[g]));
        }
        for (int g = 0; g < groups; ++g) {
            drain_byte_counters(acc[g], counts + 4 * g);
            acc[g] = _mm512_setzero_si512();
        }
    }
    if (j < n) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        const __mmask16 live = m & unmasked16(v);
        const __m512i code = quantize512(v, live, &vq);
        _mm512_mask_cvtepi32_storeu_epi8(codes + j, m, code);
        for (int g = 0; g < groups; ++g) {
            acc[g] = _mm512_mask_add_epi32(acc[g], live, acc[g], _mm512_permutexvar_epi32(code, one_hot[g]));
            drain_byte_counters(acc[g], counts + 4 * g);
        }
    }
}

static void quantize_count_avx512(const float *x, size_t n, const exaq_quantizer *q,
                                  uint8_t *codes, int64_t counts[EXAQ_MAX_CODES]) {
    if (q->levels <= 3)
        quantize_count_groups(x, n, q, codes, counts, 1);
    else if (q->levels <= 7)
        quantize_count_groups(x, n, q, codes, counts, 2);
    else
        quantize_count_groups(x, n, q, codes, counts, 4);
}

static void expand_avx512(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES],
                          float *y) {
    const __m512 tab = _mm512_loadu_ps(table), zeros = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + W <= n; j += W) {
        const __m512i code = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + j)));
        _mm512_storeu_ps(y + j, _mm512_permutex2var_ps(tab, code, zeros));
    }
    if (j < n) {
        const __mmask16 m = first_lanes(n - j);
        const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + j));
        _mm512_mask_storeu_ps(y + j, m, _mm512_permutex2var_ps(tab, code, zeros));
    }
}

/* exp(t) for t <= 0.  t is clamped at EXAQ_EXP_FLOOR, where p * 2^k underflows
 * to exactly 0, so masked (-inf) entries give 0 with no extra select;
 * between that and EXAQ_EXP_MIN the result is denormal (the scalar kernel
 * returns 0 there: both are within 1.2e-38 of the true value). */
static inline __m512 exp512_nonpositive(__m512 t) {
    t = _mm512_max_ps(t, _mm512_set1_ps(EXAQ_EXP_FLOOR));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(EXAQ_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXAQ_LN2), t);
    __m512 p = _mm512_set1_ps(EXAQ_EXP_C5);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXAQ_EXP_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

static double exp_store_sum_avx512(const float *x, size_t n, float shift, float *y) {
    const __m512 s = _mm512_set1_ps(shift);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {
        const __m512 e0 = exp512_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + j), s));
        const __m512 e1 = exp512_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + j + W), s));
        acc0 = _mm512_add_ps(acc0, e0);
        acc1 = _mm512_add_ps(acc1, e1);
        _mm512_storeu_ps(y + j, e0);
        _mm512_storeu_ps(y + j + W, e1);
    }
    for (; j < n; j += W) {
        const __mmask16 m = first_lanes(n - j);
        const __m512 e = exp512_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), s));
        acc0 = _mm512_mask_add_ps(acc0, m, acc0, e);
        _mm512_mask_storeu_ps(y + j, m, e);
    }
    return (double)_mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

static void scale_avx512(float *y, size_t n, float factor) {
    const __m512 f = _mm512_set1_ps(factor);
    size_t j = 0;
    for (; j + W <= n; j += W) _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_loadu_ps(y + j), f));
    if (j < n) {
        const __mmask16 m = first_lanes(n - j);
        _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + j), f));
    }
}

const exaq_softmax_kernels exaq_softmax_avx512 = {
    row_max_avx512,        row_stats_avx512, moments_avx512,       abs_deviation_avx512,
    quantize_count_avx512, expand_avx512,    exp_store_sum_avx512, scale_avx512,
    &exaq_packed_avx512,
};
