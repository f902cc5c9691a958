/* exaq_cpu kernel interface: per-ISA kernel tables, one dispatch table, and the
 * portable drivers that orchestrate them. Plain C99. */
#ifndef EXAQ_H
#define EXAQ_H

#include <stddef.h>
#include <stdint.h>

#include "lutgemm.h" /* LUT-GEMM kernel tables and driver */

#ifdef __cplusplus
extern "C" {
#endif

/* Every reduction whose result feeds the choice of the quantization range is
 * accumulated in this many interleaved lanes (element j of a row goes to lane
 * j % EXAQ_LANES), flushed from float to double lanes every EXAQ_FLUSH
 * entries of the row, and the lanes are combined in a fixed order.  Every
 * backend follows this schedule, so they agree bit for bit on sigma, on the
 * range and so on the codes. */
#define EXAQ_LANES 16
#define EXAQ_FLUSH 1024
#define EXAQ_MAX_CODES 16
/* code written for a masked (-inf) entry: indexes past every table, reads as 0 */
#define EXAQ_MASKED_CODE 16

typedef struct {
    float max;         /* over the unmasked entries */
    float min;         /* over the unmasked entries (+inf if none) */
    int64_t unmasked;  /* entries that are not -inf (NaN counts as unmasked) */
    /* sums over unmasked entries of d = x - pilot and d*d, float lanes
     * flushed to double.  Not finite if the row holds NaN or +inf (then max
     * and min are meaningless) or if d*d overflowed: the driver tells which. */
    double sum, sumsq;
} exaq_row_stats;

/* The affine quantizer of one row:
 *   t = max(x - shift, lo)             (float32)
 *   v = fma(t, scale, offset)          (one rounding; offset = -lo*scale in float32)
 *   q = rint(v)                        (round half to even; t <= 0 keeps q <= levels)
 * and masked entries (x == -inf) get EXAQ_MASKED_CODE and are not counted. */
typedef struct {
    float shift;
    float lo;
    float scale;
    float offset;
    int levels;  /* 2^bits - 1 */
} exaq_quantizer;

typedef struct {
    /* max over non-NaN entries, and whether a NaN or +inf is present */
    float (*row_max)(const float *x, size_t n, int *invalid);
    /* one pass: every field of exaq_row_stats */
    void (*row_stats)(const float *x, size_t n, float pilot, exaq_row_stats *out);
    /* lane sums of t and t*t over unmasked entries, t = (double)x - (double)shift;
     * the overflow-proof path for rows whose float sums overflowed */
    void (*moments)(const float *x, size_t n, float shift,
                    double sum[EXAQ_LANES], double sumsq[EXAQ_LANES]);
    /* lane sums of |t - center| in double over unmasked entries */
    void (*abs_deviation)(const float *x, size_t n, float shift, double center,
                          double sum[EXAQ_LANES]);
    /* codes[j] = q_j (EXAQ_MASKED_CODE if masked); counts[k] += entries with code k */
    void (*quantize_count)(const float *x, size_t n, const exaq_quantizer *q, uint8_t *codes,
                           int64_t counts[EXAQ_MAX_CODES]);
    /* y[j] = table[codes[j]], 0 for EXAQ_MASKED_CODE */
    void (*expand)(const uint8_t *codes, size_t n, const float table[EXAQ_MAX_CODES], float *y);
    /* y[j] = exp(x[j] - shift) (0 for masked), returns the sum of y */
    double (*exp_store_sum)(const float *x, size_t n, float shift, float *y);
    void (*scale)(float *y, size_t n, float factor);
} exaq_softmax_kernels;

typedef enum {
    EXAQ_BACKEND_SCALAR = 0,
    EXAQ_BACKEND_AVX2 = 1,
    EXAQ_BACKEND_AVX512 = 2,
    EXAQ_BACKEND_NEON = 3,
    EXAQ_BACKEND_COUNT = 4
} exaq_backend_id;

typedef struct {
    const char *name;
    const exaq_softmax_kernels *softmax;
    const exaq_lutgemm_kernels *lutgemm; /* LUT-GEMM (lutgemm.h) */
} exaq_backend;

/* Per-ISA tables; only those compiled for this architecture exist. */
extern const exaq_softmax_kernels exaq_softmax_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const exaq_softmax_kernels exaq_softmax_avx2;
extern const exaq_softmax_kernels exaq_softmax_avx512;
#endif
#if defined(__aarch64__)
extern const exaq_softmax_kernels exaq_softmax_neon;
#endif

/* Dispatch: the table is chosen once (first use) from CPUID/XGETBV and can be
 * switched to any backend this CPU supports. */
int exaq_backend_supported(exaq_backend_id id);
const char *exaq_backend_name(exaq_backend_id id);
int exaq_backend_from_name(const char *name); /* -1 if unknown */
const exaq_backend *exaq_active_backend(void);
exaq_backend_id exaq_active_backend_id(void);
int exaq_set_backend(exaq_backend_id id); /* 0 ok, -1 unsupported */
const exaq_backend *exaq_get_backend(exaq_backend_id id); /* NULL if unsupported */

/* ---- softmax drivers (portable; call the kernels of `be`) ---- */

typedef enum {
    EXAQ_CLIP_GAUSS = 0,   /* C = a*sigma + c, sigma pooled over the call */
    EXAQ_CLIP_LAPLACE = 1, /* C = a*b + c, b = pooled mean |t - mean t| */
    EXAQ_CLIP_ROW = 2,     /* gauss law with sigma and min of each row */
    EXAQ_CLIP_NONE = 3,    /* naive: lo = pooled min */
    EXAQ_CLIP_STATIC = 4   /* lo = the given value */
} exaq_clip_mode;

typedef enum { EXAQ_FLOOR_EXP = 0, EXAQ_FLOOR_ZERO = 1 } exaq_floor_mode;

typedef struct {
    int bits;              /* 2..4 (the kernels support up to 4) */
    exaq_clip_mode clip;
    double law_slope;      /* a in C = a*s + c (gauss, laplace, row) */
    double law_intercept;  /* c */
    double static_lo;      /* EXAQ_CLIP_STATIC */
    exaq_floor_mode floor;
} exaq_params;

/* Statistics of the shifted, unmasked scores pooled over a whole call. */
typedef struct {
    int64_t count;
    double mean, sigma, min, mean_abs_dev;
    int64_t invalid_rows;
} exaq_call_stats;

/* x: rows of n floats, row r at x + r*x_stride (elements).  y likewise.
 * y may equal x (in place).  `scratch` must hold `rows` floats (row maxima).
 * `lo_out` (optional, `rows` floats) receives each row's range low end.
 * Returns 0, -1 for invalid parameters, -2 if out of memory. */
int exaq_softmax_quantized(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t x_stride, float *y, ptrdiff_t y_stride,
                           const exaq_params *p, float *scratch, float *lo_out);
/* Same range selection, but writes codes (0 for masked) instead of probabilities,
 * and each row's table of probabilities (2^bits floats per row) when `tables` is non-NULL. */
int exaq_quantize_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t x_stride, uint8_t *codes, ptrdiff_t c_stride,
                        const exaq_params *p, float *scratch, float *lo_out, float *tables);
int exaq_softmax_exact(const exaq_backend *be, const float *x, size_t rows, size_t n,
                       ptrdiff_t x_stride, float *y, ptrdiff_t y_stride);
void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                      ptrdiff_t x_stride, float *scratch, exaq_call_stats *out);

#ifdef __cplusplus
}
#endif
#endif
