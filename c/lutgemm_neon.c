/* LUT-GEMM kernels, AArch64 Advanced SIMD (NEON): a 16-row tile is four
 * float32x4 vectors, one lane per output row, each row summed in the scalar
 * kernel's order with separate multiplies and adds (bit-exact with it; the
 * file must be compiled with -ffp-contract=off, as every kernel file).
 *  MU4: the 16-entry float table of 4 activations is 64 bytes, four q
 *       registers, read with one tbl (vqtbl4q_u8) per 4 rows: the weight
 *       nibble times 4 plus 0..3 is the byte index of the float.
 *  MU8: the paper's 256-entry table (1 KiB) does not fit the registers; its
 *       entries are gathered with lane loads. */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels read float tables as bytes (tbl): little-endian AArch64 only"
#endif

#include "exaq.h"

#define TILE EXAQ_LUT_TILE
#define HALF_VECTORS 2 /* a pass covers 8 rows: the accumulators of 4 bits fit the registers */

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

/* byte indices of the floats of 4 rows: spread[k] repeats byte k of a vector
 * four times (rows 4k'.. of the half), byte_of_float adds 0..3 */
static const uint8_t spread_rows[4][16] = {
    {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
    {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
    {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
    {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
};
static const uint8_t byte_of_float[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};

/* lut[nibble] for rows 4q..4q+3 of the tile: nib_x4 holds 4 * nibble per row */
ALWAYS_INLINE float32x4_t lookup_rows(const uint8x16x4_t *table, uint8x16_t nib_x4, int q, uint8x16_t within) {
    const uint8x16_t idx = vaddq_u8(vqtbl1q_u8(nib_x4, vld1q_u8(spread_rows[q])), within);
    return vreinterpretq_f32_u8(vqtbl4q_u8(*table, idx));
}

ALWAYS_INLINE void mu4_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum, size_t t0,
                             size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    const uint8x16_t within = vld1q_u8(byte_of_float), low_nibble = vdupq_n_u8(15);
    for (size_t t = t0; t < t1; ++t) {
        float32x4_t yt[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 32;
            const float32x4_t sum_x = vdupq_n_f32(gsum[g]);
            for (int h = 0; h < 4; h += HALF_VECTORS) { /* vectors h, h + 1: rows 4h..4h+7 */
                float32x4_t lo[EXAQ_LUT_MAX_BITS][HALF_VECTORS], hi[EXAQ_LUT_MAX_BITS][HALF_VECTORS];
                for (size_t i = 0; i < bits; ++i)
                    for (int v = 0; v < HALF_VECTORS; ++v) lo[i][v] = hi[i][v] = vdupq_n_f32(0.0f);
                for (size_t j = 0; j < gb; ++j) {
                    const uint8x16x4_t ta = vld1q_u8_x4((const uint8_t *)(T + j * 32));
                    const uint8x16x4_t tb = vld1q_u8_x4((const uint8_t *)(T + j * 32 + 16));
                    for (size_t i = 0; i < bits; ++i) {
                        const uint8x16_t b = vld1q_u8(P + (i * gb + j) * TILE);
                        const uint8x16_t lo4 = vshlq_n_u8(vandq_u8(b, low_nibble), 2);
                        const uint8x16_t hi4 = vshlq_n_u8(vshrq_n_u8(b, 4), 2);
                        for (int v = 0; v < HALF_VECTORS; ++v) {
                            lo[i][v] = vaddq_f32(lo[i][v], lookup_rows(&ta, lo4, h + v, within));
                            hi[i][v] = vaddq_f32(hi[i][v], lookup_rows(&tb, hi4, h + v, within));
                        }
                    }
                }
                for (int v = 0; v < HALF_VECTORS; ++v) {
                    for (size_t i = 0; i < bits; ++i) {
                        const float32x4_t prod =
                            vmulq_f32(vld1q_f32(A + i * TILE + 4 * (h + v)), vaddq_f32(lo[i][v], hi[i][v]));
                        yt[h + v] = vaddq_f32(yt[h + v], prod);
                    }
                    const float32x4_t off = vmulq_f32(vld1q_f32(w->offsets + tg * TILE + 4 * (h + v)), sum_x);
                    yt[h + v] = vaddq_f32(yt[h + v], off);
                }
            }
        }
        for (int v = 0; v < 4; ++v) vst1q_f32(y + (t - t0) * TILE + 4 * v, yt[v]);
    }
}

/* T[b[0..3]] as one vector, by lane loads */
ALWAYS_INLINE float32x4_t gather4(const float *T, const uint8_t *b) {
    float32x4_t v = vdupq_n_f32(T[b[0]]);
    v = vld1q_lane_f32(T + b[1], v, 1);
    v = vld1q_lane_f32(T + b[2], v, 2);
    return vld1q_lane_f32(T + b[3], v, 3);
}

ALWAYS_INLINE void mu8_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum, size_t t0,
                             size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    for (size_t t = t0; t < t1; ++t) {
        float32x4_t yt[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 256;
            float32x4_t acc[EXAQ_LUT_MAX_BITS][4];
            for (size_t i = 0; i < bits; ++i)
                for (int v = 0; v < 4; ++v) acc[i][v] = vdupq_n_f32(0.0f);
            for (size_t j = 0; j < gb; ++j)
                for (size_t i = 0; i < bits; ++i) {
                    const uint8_t *b = P + (i * gb + j) * TILE;
                    for (int v = 0; v < 4; ++v) acc[i][v] = vaddq_f32(acc[i][v], gather4(T + j * 256, b + 4 * v));
                }
            const float32x4_t sum_x = vdupq_n_f32(gsum[g]);
            for (int v = 0; v < 4; ++v) {
                for (size_t i = 0; i < bits; ++i)
                    yt[v] = vaddq_f32(yt[v], vmulq_f32(vld1q_f32(A + i * TILE + 4 * v), acc[i][v]));
                yt[v] = vaddq_f32(yt[v], vmulq_f32(vld1q_f32(w->offsets + tg * TILE + 4 * v), sum_x));
            }
        }
        for (int v = 0; v < 4; ++v) vst1q_f32(y + (t - t0) * TILE + 4 * v, yt[v]);
    }
}

#define BY_BITS(fn)                                                                                  \
    static void fn##_neon(const exaq_bcq_matrix *w, const float *tables, const float *gsum, size_t t0, \
                          size_t t1, float *y) {                                                     \
        switch (w->bits) {                                                                           \
        case 1: fn##_tiles(w, tables, gsum, t0, t1, y, 1); break;                                    \
        case 2: fn##_tiles(w, tables, gsum, t0, t1, y, 2); break;                                    \
        case 3: fn##_tiles(w, tables, gsum, t0, t1, y, 3); break;                                    \
        default: fn##_tiles(w, tables, gsum, t0, t1, y, 4); break;                                   \
        }                                                                                            \
    }
BY_BITS(mu4)
BY_BITS(mu8)

/* MU4 preferred: its tables are read from registers by tbl, where MU8 needs
 * four dependent lane loads per vector (no gather on NEON).  Not measured:
 * no Arm machine here (docs/neon.md). */
const exaq_lutgemm_kernels exaq_lutgemm_neon = {mu4_neon, mu8_neon, EXAQ_LUT_MU4};
