/* LUT-GEMM: GEMV/GEMM with binary-coding quantized (BCQ) weights, computed by
 * table lookups instead of dequantization (docs/semantics.md, section 7).  Plain C99.
 *
 * Weight model, per row m and group g of `group_size` input columns:
 *     w[m, k] = sum_{i<bits} alpha[m, g, i] * b_i[m, k] + offset[m, g],  b_i in {-1, +1}
 * so   y[m] = sum_g ( sum_i alpha[m,g,i] * (sum_{k in g} b_i[m,k] x[k]) + offset[m,g] * sum_{k in g} x[k] ).
 * The inner signed sums are what the tables hold: for a run of `mu` activations,
 * all 2^mu sign patterns are summed once per activation vector and then shared
 * by every output row; each weight byte/nibble just picks one entry.
 *
 * Packed layout (shared by every backend and both table designs, so a matrix
 * packed once runs on any backend):
 *   rows are padded to tiles of EXAQ_LUT_TILE = 16 rows (one zmm of floats);
 *   K is padded to `groups * group_size`, group_size a multiple of 8;
 *   planes [tile][group][bit i][byte j < group_size/8][row r < 16]  uint8
 *       byte bit t (LSB first) = (b_i[row, group*gs + 8j + t] == +1)
 *   alphas [tile][group][bit i][row r]  float32   (0 for padding rows)
 *   offsets[tile][group][row r]         float32
 * Keeping the 16 rows of a tile innermost makes one 16-byte load feed 16 SIMD
 * lanes (one lane per output row), so every backend accumulates each row in the
 * same order as the scalar code and the results agree bit for bit. */
#ifndef EXAQ_LUTGEMM_H
#define EXAQ_LUTGEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EXAQ_LUT_TILE 16
#define EXAQ_LUT_MAX_BITS 4

/* Table designs.  MU4: per 4 activations a 16-entry float table (64 bytes, one
 * zmm), read with vpermps / permutevar8x32; the two nibbles of a weight byte use
 * two tables.  MU8: per 8 activations the paper's 256-entry table (1 KiB),
 * read with scalar loads or gathers. */
typedef enum { EXAQ_LUT_AUTO = 0, EXAQ_LUT_MU4 = 4, EXAQ_LUT_MU8 = 8 } exaq_lut_design;

typedef struct {
    const uint8_t *planes;
    const float *alphas;
    const float *offsets;
    size_t rows;        /* M, valid output rows */
    size_t tiles;       /* ceil(M / 16) */
    size_t cols;        /* K, valid input columns */
    size_t group_size;  /* multiple of 8 */
    size_t groups;      /* ceil(K / group_size) */
    int bits;           /* 1..4 */
} exaq_bcq_matrix;

/* One kernel call computes y for tiles [t0, t1) of one activation vector:
 * y[(t - t0)*16 + r] = row (16 t + r).  `tables` were built by the driver
 * (exaq_lut_build_tables4 / 8) from the zero-padded activations, `gsum[g]` is
 * the sum of the activations of group g (float32, fixed order). */
typedef void (*exaq_lut_kernel)(const exaq_bcq_matrix *w, const float *tables,
                                const float *gsum, size_t t0, size_t t1, float *y);

/* ---- integer-table mode (precision "int8", docs/lutgemm.md) ----
 *
 * Per activation vector and group of 4 activations the 16 partial sums are
 * quantized to int8 with one float scale per weight group g:
 *     s_g = max_{quads c of g} max_idx |T_c[idx]| / 127,  Q_c[idx] = rint(T_c[idx] / s_g)
 * (the driver builds them once, in fixed scalar order, so every backend reads
 * the same bytes).  Per row, group and bit-plane the lookups are summed exactly
 * in integers (int16 within at most EXAQ_LUT8_CHUNK bytes, then int32), and
 *     y[r] += s_g * ( (a_0 * f_0) + (a_1 * f_1) + ... )      then  y[r] += o[r] * gsum_g
 * with f_i the int32 sum converted to float, in exactly this order and without
 * FMA, so every backend's result is bit-identical to the scalar reference.
 *
 * Packed layout (built once from the planes layout by exaq_bcq_pack_i8):
 *   rows in tiles of EXAQ_LUT8_TILE = 64;
 *   codes  [tile][group][bit i][byte j < group_size/8][position p < 64]  uint8
 *          low nibble  = bits of columns 8j..8j+3 (quad 2j),  bit t = column 8j+t
 *          high nibble = bits of columns 8j+4..8j+7 (quad 2j+1)
 *          position p = 16L + 8h + 2e + o  (L, e < 4; h, o < 2) holds
 *          row 32h + 16o + 4L + e of the tile (see exaq_lut8_row_of): the order
 *          in which byte shuffles, unpacklo/hi_epi8 + maddubs and the even/odd
 *          int16 -> int32 split hand back rows 0..63 in natural order;
 *   alphas [tile][group][bit i][row r < 64]  float32 (0 for padding rows)
 *   offsets[tile][group][row r < 64]         float32
 * A 16-byte table feeds one 128-bit shuffle lane (pshufb / vpshufb broadcast
 * per lane / NEON vqtbl1q_u8). */
#define EXAQ_LUT8_TILE 64
#define EXAQ_LUT8_CHUNK 128 /* byte columns summed in int16: 128 * 2 * 127 < 32768 */

typedef struct {
    const uint8_t *codes;
    const float *alphas;
    const float *offsets;
    size_t rows, tiles; /* tiles = ceil(rows / 64) */
    size_t cols, group_size, groups;
    int bits;
} exaq_bcq_i8;

/* Row of a 64-row tile held at byte position p of the codes. */
static inline unsigned exaq_lut8_row_of(unsigned p) {
    const unsigned L = p >> 4, h = (p >> 3) & 1u, e = (p >> 1) & 3u, o = p & 1u;
    return 32u * h + 16u * o + 4u * L + e;
}

/* One call computes y for 64-row tiles [t0, t1): y[(t - t0)*64 + r] = row 64 t + r.
 * `tables`: 16 int8 per quad of 4 columns (kpad/4 quads), `scales[g]` and
 * `gsum[g]` per group. */
typedef void (*exaq_lut8_kernel)(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales,
                                 const float *gsum, size_t t0, size_t t1, float *y);

typedef struct {
    exaq_lut_kernel gemv_mu4;
    exaq_lut_kernel gemv_mu8;
    exaq_lut_design preferred; /* the faster design on this ISA (measured, docs/lutgemm.md) */
    exaq_lut8_kernel gemv_i8;  /* integer tables (may be NULL: the scalar one is used) */
} exaq_lutgemm_kernels;

extern const exaq_lutgemm_kernels exaq_lutgemm_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const exaq_lutgemm_kernels exaq_lutgemm_avx2;
extern const exaq_lutgemm_kernels exaq_lutgemm_avx512;
#endif
#if defined(__aarch64__)
extern const exaq_lutgemm_kernels exaq_lutgemm_neon;
#endif

/* ---- portable driver (lutgemm_driver.c) ---- */

/* Floats of table storage for one activation vector of `kpad` (multiple of 8) columns. */
size_t exaq_lut_table_floats(exaq_lut_design design, size_t kpad);
/* Tables from `kpad` activations (already zero padded).  Entry order is fixed,
 * so every backend reads identical tables. */
void exaq_lut_build_tables4(const float *x, size_t kpad, float *tables);
void exaq_lut_build_tables8(const float *x, size_t kpad, float *tables);

/* y[n, m] = sum_k x[n, k] * W[m, k] for n < tokens, using the kernels of the
 * given lutgemm table.  x rows of w->cols floats at x + n*x_stride; y rows of
 * w->rows floats at y + n*y_stride.  threads >= 1 (pthreads split the tiles).
 * Returns 0, -1 for invalid arguments, -2 if out of memory or a thread could
 * not be started. */
int exaq_lutgemm(const exaq_lutgemm_kernels *k, exaq_lut_design design,
                 const exaq_bcq_matrix *w, const float *x, size_t tokens,
                 ptrdiff_t x_stride, float *y, ptrdiff_t y_stride, int threads);

/* Integer-table mode: int8 tables + per-group scales of `kpad` activations. */
void exaq_lut_build_tables_i8(const float *x, size_t kpad, size_t group_size, int8_t *tables,
                              float *scales);
/* Bytes of the int8 packed arrays of w: codes, and floats of alphas and offsets. */
void exaq_bcq_i8_sizes(const exaq_bcq_matrix *w, size_t *codes, size_t *alphas, size_t *offsets);
/* Repacks w into the integer-table layout (buffers of exaq_bcq_i8_sizes) and
 * fills *out to describe them.  0, or -1 for an invalid matrix. */
int exaq_bcq_pack_i8(const exaq_bcq_matrix *w, uint8_t *codes, float *alphas, float *offsets,
                     exaq_bcq_i8 *out);
/* Checks the geometry of an int8 matrix description: 0 ok, -1 invalid. */
int exaq_bcq_i8_check(const exaq_bcq_i8 *w);
/* exaq_lutgemm in the integer-table mode (same arguments and return codes). */
int exaq_lutgemm_i8(const exaq_lutgemm_kernels *k, const exaq_bcq_i8 *w, const float *x,
                    size_t tokens, ptrdiff_t x_stride, float *y, ptrdiff_t y_stride, int threads);

/* out[m, k] (m < rows, k < cols, row stride ld) = the BCQ weight, float32,
 * evaluated as  ((sum_i alpha_i * b_i) in order i = 0..bits-1) + offset.
 * Returns 0, -1 for an invalid matrix, -2 if out of memory. */
int exaq_bcq_dequantize(const exaq_bcq_matrix *w, float *out, ptrdiff_t ld);

/* The LUT-GEMM kernels of the active backend (scalar if it has none yet). */
const exaq_lutgemm_kernels *exaq_lutgemm_active(void);

/* Checks the geometry of a matrix description: 0 ok, -1 invalid. */
int exaq_bcq_check(const exaq_bcq_matrix *w);

#ifdef __cplusplus
}
#endif
#endif
