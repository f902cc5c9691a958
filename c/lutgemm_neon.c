/* LUT-GEMM kernels, AArch64 Advanced SIMD (NEON): a 16-row tile is four
 * float32x4 vectors, one lane per output row, each row summed in the scalar
 * kernel's order with separate multiplies and adds (bit-exact with it; the
 * file must be compiled with -ffp-contract=off, as every kernel file).
 *  MU4: the 16-entry float table of 4 activations is 64 bytes; vld4q_u8
 *       splits it into four registers of byte planes (byte k of every
 *       entry), so four 16-byte tbl (vqtbl1q_u8), indexed by the weight
 *       nibbles, look up all 16 rows, and zips rebuild the floats.
 *  MU8: the paper's 256-entry table (1 KiB) does not fit the registers; its
 *       entries are gathered with lane loads. */
#include <arm_neon.h>

#if defined(__AARCH64EB__)
#error "the NEON kernels read float tables as bytes (tbl): little-endian AArch64 only"
#endif

#include "compiler.h"
#include "exaq.h"

#define TILE EXAQ_LUT_TILE


/* Software prefetch of the (tile, group) PREFETCH_GROUPS ahead, as the x86
 * kernels do (docs/lutgemm.md): the weights stream from DRAM once per call. */
#define PREFETCH_GROUPS 4
static inline EXAQ_ALWAYS_INLINE void prefetch_ahead(const exaq_bcq_matrix *w, size_t tg, size_t bits, size_t gb) {
    const size_t ahead = tg + PREFETCH_GROUPS;
    if (ahead >= w->tiles * w->groups) return;
    const char *p = (const char *)(w->planes + ahead * bits * gb * TILE);
    for (size_t o = 0; o < bits * gb * TILE; o += 64) __builtin_prefetch(p + o);
    for (size_t o = 0; o < bits * TILE; o += 16) __builtin_prefetch(w->alphas + ahead * bits * TILE + o);
    __builtin_prefetch(w->offsets + ahead * TILE);
}

/* lut[nibble] for the 16 rows of a tile, from the table's four byte planes
 * (plane k = byte k of each of the 16 floats, as vld4q_u8 splits them): one
 * 16-byte tbl per plane looks up all 16 rows at once, the nibble itself being
 * the index, and two rounds of zips put the bytes of each row's float back
 * together: rows 0..3, 4..7, 8..11, 12..15 in out[0..3]. */
static inline EXAQ_ALWAYS_INLINE void lookup16_rows(const uint8x16x4_t *planes, uint8x16_t nibbles, float32x4_t out[4]) {
    const uint8x16_t b0 = vqtbl1q_u8(planes->val[0], nibbles), b1 = vqtbl1q_u8(planes->val[1], nibbles);
    const uint8x16_t b2 = vqtbl1q_u8(planes->val[2], nibbles), b3 = vqtbl1q_u8(planes->val[3], nibbles);
    const uint16x8_t low_lo = vreinterpretq_u16_u8(vzip1q_u8(b0, b1)), low_hi = vreinterpretq_u16_u8(vzip2q_u8(b0, b1));
    const uint16x8_t high_lo = vreinterpretq_u16_u8(vzip1q_u8(b2, b3)), high_hi = vreinterpretq_u16_u8(vzip2q_u8(b2, b3));
    out[0] = vreinterpretq_f32_u16(vzip1q_u16(low_lo, high_lo));
    out[1] = vreinterpretq_f32_u16(vzip2q_u16(low_lo, high_lo));
    out[2] = vreinterpretq_f32_u16(vzip1q_u16(low_hi, high_hi));
    out[3] = vreinterpretq_f32_u16(vzip2q_u16(low_hi, high_hi));
}

/* Per (tile, group) the bits run one after the other, so the lo/hi sums of a
 * bit for all 16 rows (8 registers) are live at once; every row sums its lo
 * and hi lookups in byte order and then adds alpha * (lo + hi) bit by bit and
 * offset * gsum, the order of gemv_mu4_scalar. */
static inline EXAQ_ALWAYS_INLINE void mu4_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum, size_t t0,
                             size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    const uint8x16_t low_nibble = vdupq_n_u8(15);
    for (size_t t = t0; t < t1; ++t) {
        float32x4_t yt[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 32;
            prefetch_ahead(w, tg, bits, gb);
            for (size_t i = 0; i < bits; ++i) {
                float32x4_t lo[4], hi[4];
                for (int v = 0; v < 4; ++v) lo[v] = hi[v] = vdupq_n_f32(0.0f);
                for (size_t j = 0; j < gb; ++j) {
                    /* the two 16-float tables of byte column j, split into byte planes */
                    const uint8x16x4_t ta = vld4q_u8((const uint8_t *)(T + j * 32));
                    const uint8x16x4_t tb = vld4q_u8((const uint8_t *)(T + j * 32 + 16));
                    const uint8x16_t b = vld1q_u8(P + (i * gb + j) * TILE);
                    float32x4_t f[4];
                    lookup16_rows(&ta, vandq_u8(b, low_nibble), f);
                    for (int v = 0; v < 4; ++v) lo[v] = vaddq_f32(lo[v], f[v]);
                    lookup16_rows(&tb, vshrq_n_u8(b, 4), f);
                    for (int v = 0; v < 4; ++v) hi[v] = vaddq_f32(hi[v], f[v]);
                }
                for (int v = 0; v < 4; ++v)
                    yt[v] = vaddq_f32(yt[v], vmulq_f32(vld1q_f32(A + i * TILE + 4 * v), vaddq_f32(lo[v], hi[v])));
            }
            const float32x4_t sum_x = vdupq_n_f32(gsum[g]);
            for (int v = 0; v < 4; ++v)
                yt[v] = vaddq_f32(yt[v], vmulq_f32(vld1q_f32(w->offsets + tg * TILE + 4 * v), sum_x));
        }
        for (int v = 0; v < 4; ++v) vst1q_f32(y + (t - t0) * TILE + 4 * v, yt[v]);
    }
}

/* T[b[0..3]] as one vector, by lane loads */
static inline EXAQ_ALWAYS_INLINE float32x4_t gather4(const float *T, const uint8_t *b) {
    float32x4_t v = vdupq_n_f32(T[b[0]]);
    v = vld1q_lane_f32(T + b[1], v, 1);
    v = vld1q_lane_f32(T + b[2], v, 2);
    return vld1q_lane_f32(T + b[3], v, 3);
}

static inline EXAQ_ALWAYS_INLINE void mu8_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum, size_t t0,
                             size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    for (size_t t = t0; t < t1; ++t) {
        float32x4_t yt[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 256;
            prefetch_ahead(w, tg, bits, gb);
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
const exaq_lutgemm_kernels exaq_lutgemm_neon = {
    .gemv_mu4 = mu4_neon,
    .gemv_mu8 = mu8_neon,
    .preferred = EXAQ_LUT_MU4,
    /* .gemv_i8 left NULL: the scalar int8 kernel until a NEON one (vqtbl1q_u8) */
};
