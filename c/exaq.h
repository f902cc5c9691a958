/* exaq_cpu kernel interface: per-ISA kernel tables, one dispatch table, and the
 * portable drivers that orchestrate them. Plain C99. */
#ifndef EXAQ_H
#define EXAQ_H

#include <stddef.h>
#include <stdint.h>

#include "lutgemm.h" /* LUT-GEMM kernel tables and driver */
#include "threadpool.h" /* the one worker pool */

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
/* The float sums of the row statistics (exaq_row_stats) use more lanes: four
 * independent 16-wide accumulators keep the AVX-512 pass from waiting on the
 * latency of its adds.  A multiple of every vector width, dividing EXAQ_FLUSH.
 * At each flush the first two levels of the lane tree run in float, folding
 * them to EXAQ_STAT_WIDE lanes that accumulate in double across the blocks;
 * the rest of the tree runs in double at the end of the row. */
#define EXAQ_STAT_LANES 64
#define EXAQ_STAT_WIDE 16
#define EXAQ_STATS_MIN 1
#define EXAQ_STATS_NO_MASK 2
#define EXAQ_MAX_CODES 16
/* code widths the softmax / packed kernels take (exaq_cpu.clipping.KERNEL_BITS mirrors them) */
#define EXAQ_MIN_BITS 2
#define EXAQ_MAX_BITS 4
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
    /* every entry from here to the row's end is -inf: n, or lower where the
     * kernel found the row's final run of -inf on its way (it then stops
     * there: masked entries add nothing to any field, so the fields are the
     * same either way) */
    size_t masked_from;
} exaq_row_stats;

/* The affine quantizer of one row, range [lo, 0] of t = x - shift, levels+1 codes:
 *   scale = levels / -lo, offset = -lo * scale          (float32)
 *   v = fma(x - sub, scale, add)                        (float32, one rounding)
 *   q = max(rint(v), 0)                                 (round half to even)
 * with (sub, add) = (0, offset - shift*scale rounded to float) when
 * |shift*scale| <= EXAQ_FOLD_LIMIT, so the kernels skip the subtraction, and
 * (shift, offset) otherwise.  Either way v is the code position
 * (t - lo) * scale to within 2e-5 of a code step, q = 0 for every t <= lo and
 * q = levels at t = 0.  Masked entries (x == -inf) get EXAQ_MASKED_CODE and
 * are not counted.  Fill with exaq_quantizer_init. */
#define EXAQ_FOLD_LIMIT 256.0
typedef struct {
    float shift;
    float lo;
    float scale;
    float offset;
    float sub, add;
    int levels;   /* 2^bits - 1 */
    int may_mask; /* 0: the caller knows the row holds no -inf (kernels may skip the test) */
} exaq_quantizer;

void exaq_quantizer_init(exaq_quantizer *q, float shift, float lo, int levels, int may_mask);

/* Packed code rows (docs/packed.md): code j of a row sits at bit j*bits of the
 * row's little-endian bit stream, rows start on a byte boundary, padding is 0.
 * bits = 2: four codes a byte; 4: two; 3: eight codes in three bytes, codes
 * straddle byte boundaries.  Mask bitmaps: bit j%8 of byte j/8 set = masked. */
#define EXAQ_PACKED_BYTES(n, bits) (((size_t)(n) * (size_t)(bits) + 7) / 8)
#define EXAQ_MASK_BYTES(n) (((size_t)(n) + 7) / 8)

typedef struct {
    /* codes[0..n) -> packed row (EXAQ_PACKED_BYTES bytes).  Codes >= EXAQ_MAX_CODES are
     * masked: stored as 0 with their bit set in maskbits (EXAQ_MASK_BYTES bytes, all
     * written, padding bits 0).  Other codes must be < 2^bits. */
    void (*pack)(const uint8_t *codes, size_t n, int bits, uint8_t *packed, uint8_t *maskbits);
    /* packed row -> codes[0..n) */
    void (*unpack)(const uint8_t *packed, size_t n, int bits, uint8_t *codes);
    /* LUTsum: sum over the first n codes of a packed row of lut[code] */
    double (*lutsum)(const uint8_t *packed, size_t n, int bits, const float lut[EXAQ_MAX_CODES]);
    /* LUTexp + add: sum over byte codes (each < EXAQ_MAX_CODES) of lut[code] */
    double (*lutexp_sum)(const uint8_t *codes, size_t n, const float lut[EXAQ_MAX_CODES]);
    /* 1: with one table shared by every row, this ISA's LUTsum is the paper's
     * byte-indexed table (exaq_lutsum_table_rows); 0: its lutsum kernel counts
     * codes itself */
    int lutsum_by_table;
} exaq_packed_kernels;

/* what row_max saw besides the maximum */
#define EXAQ_ROW_HAS_INVALID 1 /* a NaN or +inf */
#define EXAQ_ROW_HAS_MASKED 2  /* a -inf */

typedef struct {
    /* max over non-NaN entries; *specials: EXAQ_ROW_HAS_INVALID, or else
     * EXAQ_ROW_HAS_MASKED if the row holds a -inf */
    float (*row_max)(const float *x, size_t n, int *specials);
    /* one pass: every field of exaq_row_stats; min only with EXAQ_STATS_MIN
     * (else NaN); EXAQ_STATS_NO_MASK: -inf is summed like any value (cheaper;
     * the sums come out non-finite if the row has one).  pilot 0 lets SIMD
     * kernels skip the subtraction (x - 0 is x exactly). */
    void (*row_stats)(const float *x, size_t n, float pilot, int flags, exaq_row_stats *out);
    /* row_stats with pilot 0 over `rows` rows (row r at x + r*xs), one call:
     * per-row setup leaves the loop */
    void (*row_stats_rows)(const float *x, size_t rows, size_t n, ptrdiff_t xs, int flags, exaq_row_stats *out);
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
    /* quantize_count straight into the 2-bit packed format: the packed row
     * (EXAQ_PACKED_BYTES(n, 2) bytes, masked entries 0) and, if q->may_mask,
     * the mask bitmap (EXAQ_MASK_BYTES(n) bytes, every byte written; without
     * may_mask the row has no -inf, its bitmap would be all 0 and is not
     * touched); counts[k] += unmasked entries with code k (levels must be 3);
     * returns the masked count. */
    size_t (*quantize_pack2)(const float *x, size_t n, const exaq_quantizer *q, uint8_t *packed,
                             uint8_t *maskbits, int64_t counts[4]);
    /* y[j] = table[code j of a 2-bit packed row], 0 where maskbits has bit j
     * set (maskbits NULL: nothing masked) */
    void (*expand_pack2)(const uint8_t *packed, const uint8_t *maskbits, size_t n,
                         const float table[4], float *y);
    /* Fused 2-bit float output of `rows` rows holding no NaN or +inf and
     * no -inf before their live ends (NULL: the driver's quantize_count,
     * table and expand per row, which this equals bit for bit).  Row r
     * (x + r*xs, n entries, live[r] of them before a run of -inf to the end,
     * or all n if live is NULL; at least one) is quantized by q (levels 3)
     * reshifted to shifts[r] (exaq_quantizer_reshift), its table made from e
     * (exaq_probability_table) and its probabilities written to y + r*ys,
     * +0.0 from its live end on; `codes` is n bytes of scratch.  One call for a
     * group of short rows: the per-row bookkeeping of the generic path
     * (calls through the table, the quantizer's variants, the sink) is most
     * of a 128-key row's cost. */
    void (*softmax2_rows)(const float *x, size_t rows, size_t n, ptrdiff_t xs, const float *shifts,
                          const size_t *live, const exaq_quantizer *q, const double e[EXAQ_MAX_CODES], uint8_t *codes, float *y,
                          ptrdiff_t ys);
    /* The same for the 2-bit packed output: row r packed to packed + r*ps
     * as quantize_pack2 packs a row without -inf (its bitmap is not
     * touched), and its 4-entry table written to tables + 4r. */
    void (*softmax_pack2_rows)(const float *x, size_t rows, size_t n, ptrdiff_t xs, const float *shifts,
                               const exaq_quantizer *q, const double e[EXAQ_MAX_CODES], uint8_t *packed,
                               ptrdiff_t ps, float *tables);
    const exaq_packed_kernels *packed; /* pack/unpack/LUTsum of the same ISA */
    /* one past the last entry that is not -inf (0 if every entry is): where a
     * causal or right-padded row's masked tail starts.  NULL: the driver uses
     * the scalar table's. */
    size_t (*live_end)(const float *x, size_t n);
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
extern const exaq_packed_kernels exaq_packed_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const exaq_packed_kernels exaq_packed_avx2;
extern const exaq_packed_kernels exaq_packed_avx512;
#endif
#if defined(__aarch64__)
extern const exaq_packed_kernels exaq_packed_neon;
#endif
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
/* The calling thread's own backend, over the process-wide one (-1: none);
 * exaq_active_backend() and the *_active() lookups honour it.  0 ok, -1 if
 * the id is neither -1 nor a backend this CPU runs. */
int exaq_set_thread_backend(int id);
int exaq_thread_backend(void); /* the calling thread's choice, or -1 */
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
    int threads;           /* rows split across this many threads (threadpool.h); 0 or 1: the caller's alone */
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
                       ptrdiff_t x_stride, float *y, ptrdiff_t y_stride, int threads);
void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                      ptrdiff_t x_stride, float *scratch, exaq_call_stats *out);

/* ---- packed output (c/softmax_driver.c, c/packed_*.c, docs/packed.md) ---- */

/* Fused EXAQ softmax straight to packed codes: no float probability is written.
 * Per row: packed codes (row stride p_stride bytes), 2^bits probabilities in
 * `tables`, the valid length (1 + index of the last unmasked entry; n for rows
 * with NaN/+inf, 0 for fully masked rows) in `lengths`, and the mask bitmap row
 * (m_stride bytes).  *interior_rows = rows with a masked entry before their
 * valid length (those need the bitmap); when it is 0 the bitmap may be left
 * partly unwritten (rows without -inf), as the lengths say all there is.
 * Returns as exaq_softmax_quantized. */
int exaq_softmax_packed(const exaq_backend *be, const float *x, size_t rows, size_t n,
                        ptrdiff_t x_stride, const exaq_params *p, float *scratch, float *lo_out,
                        uint8_t *packed, ptrdiff_t p_stride, float *tables, int64_t *lengths,
                        uint8_t *maskbits, ptrdiff_t m_stride, int64_t *interior_rows);
/* The paper's LUTsum: sum of lut[code] over the first n codes of a packed row
 * through a byte-indexed table of sums (256 entries of four 2-bit codes or two
 * 4-bit codes; 4096 entries of four 3-bit codes), built once per call for `rows`
 * rows that share `lut`.  lengths: per-row code counts (NULL: n for every row). */
int exaq_lutsum_table_rows(const uint8_t *packed, size_t rows, ptrdiff_t p_stride, size_t n,
                           const int64_t *lengths, int bits, const float lut[EXAQ_MAX_CODES],
                           double *sums);
/* LUTsum with every code counted in integers and sum_k count_k * lut[k] taken
 * in double: exact to float64 rounding for any length, the same bits on every
 * backend.  luts: lut_stride floats a row (0: one shared table).  Both
 * LUTsum entries return 0, or -1 (nothing written) for bits outside 2..4 or
 * NULL buffers with rows > 0. */
int exaq_lutsum_count_rows(const uint8_t *packed, size_t rows, ptrdiff_t p_stride, size_t n,
                           const int64_t *lengths, int bits, const float *luts, ptrdiff_t lut_stride,
                           double *sums);
/* Row loops over the packed kernels of `be`.  maskbits may be NULL.  lutsum:
 * luts + r*lut_stride is row r's table (lut_stride 0: shared; the scalar backend
 * then builds the paper's sum table once); lengths as above.  Each returns 0,
 * or -1 (nothing written) for bits outside 2..4, NULL buffers or strides
 * shorter than a row. */
int exaq_pack_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n, ptrdiff_t c_stride,
                    int bits, uint8_t *packed, ptrdiff_t p_stride, uint8_t *maskbits, ptrdiff_t m_stride);
/* 2-bit packed rows (`ps` bytes apart) to float probabilities (`ys` floats
 * apart) through each row's 4-entry table (tables + 4 r): entries at or past
 * lengths[r] and those with their maskbits bit set (maskbits NULL: none; rows
 * `ms` bytes apart) are +0.0; a row whose table[0] is NaN (NaN/+inf input) is
 * looked up unmasked, as PackedSoftmax.to_float defines.  0, or -1 for bad
 * arguments. */
int exaq_expand_pack2_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n, ptrdiff_t ps,
                           const int64_t *lengths, const uint8_t *maskbits, ptrdiff_t ms, const float *tables,
                           float *y, ptrdiff_t ys);
int exaq_unpack_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n,
                      ptrdiff_t p_stride, int bits, uint8_t *codes, ptrdiff_t c_stride);
int exaq_lutsum_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, ptrdiff_t p_stride,
                      size_t n, const int64_t *lengths, int bits, const float *luts,
                      ptrdiff_t lut_stride, double *sums);
/* Accumulation-phase baselines, kept as library entries because
 * bench/bench_packed.py measures the paper's comparison through them (LUTexp +
 * add over byte codes against exp + add) on every backend, with the same
 * kernels the softmax runs: sum of lut[code] over byte codes; float sum of
 * exp(x - shift). */
void exaq_lutexp_sum_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n,
                          ptrdiff_t c_stride, const float *luts, ptrdiff_t lut_stride, double *sums);
void exaq_exp_sum_rows(const exaq_backend *be, const float *x, size_t rows, size_t n, ptrdiff_t x_stride,
                       const float *shifts, float *y, double *sums);

#ifdef __cplusplus
}
#endif
#endif
