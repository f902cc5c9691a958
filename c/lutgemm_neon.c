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
/* Integer tables (lutgemm.h): per byte column j, the low nibbles of 16 code
 * bytes index the int8 table of quad 2j and the high nibbles that of quad
 * 2j+1, each one vqtbl1q_s8; the two lookups are added widening to int16
 * (at most EXAQ_LUT8_CHUNK columns, so no overflow), then to int32.  The
 * code positions come back as rows by unzipping even and odd int16 lanes:
 * vector L, half h, lane 2e+o holds row 32h + 16o + 4L + e, so the even
 * lanes of both halves are rows 4L..4L+3 and 32+4L.., the odd ones 16+4L..
 * and 48+4L..  The float part then runs on 4 consecutive rows a vector, in
 * the scalar kernel's order with separate multiplies and adds. */
static void gemv_i8_neon(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales, const float *gsum,
                         size_t t0, size_t t1, float *y) {
    enum { R = EXAQ_LUT8_TILE, QUADS = R / 4 };
    const size_t gb = w->group_size / 8, bits = (size_t)w->bits;
    const uint8x16_t low_nibble = vdupq_n_u8(15);
    for (size_t t = t0; t < t1; ++t) {
        float yt[R] = {0};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *C = w->codes + tg * bits * gb * R;
            const float *A = w->alphas + tg * bits * R;
            const float *O = w->offsets + tg * R;
            const int8_t *Q = tables + g * gb * 32;
            float32x4_t acc[QUADS];
            for (size_t i = 0; i < bits; ++i) {
                const uint8_t *Ci = C + i * gb * R;
                int32x4_t sums[QUADS]; /* sums[k]: rows 4k .. 4k+3 */
                for (int k = 0; k < QUADS; ++k) sums[k] = vdupq_n_s32(0);
                for (size_t j0 = 0; j0 < gb; j0 += EXAQ_LUT8_CHUNK) {
                    const size_t j1 = gb - j0 < EXAQ_LUT8_CHUNK ? gb : j0 + EXAQ_LUT8_CHUNK;
                    int16x8_t part[8]; /* [2L + h]: positions 16L + 8h .. +7 */
                    for (int v = 0; v < 8; ++v) part[v] = vdupq_n_s16(0);
                    for (size_t j = j0; j < j1; ++j) {
                        const int8x16_t q_low = vld1q_s8(Q + j * 32), q_high = vld1q_s8(Q + j * 32 + 16);
                        const uint8_t *Cj = Ci + j * R;
                        for (int L = 0; L < 4; ++L) {
                            const uint8x16_t c = vld1q_u8(Cj + 16 * L);
                            const int8x16_t a = vqtbl1q_s8(q_low, vandq_u8(c, low_nibble));
                            const int8x16_t b = vqtbl1q_s8(q_high, vshrq_n_u8(c, 4));
                            part[2 * L] = vaddq_s16(part[2 * L], vaddl_s8(vget_low_s8(a), vget_low_s8(b)));
                            part[2 * L + 1] = vaddq_s16(part[2 * L + 1], vaddl_high_s8(a, b));
                        }
                    }
                    for (int L = 0; L < 4; ++L) {
                        const int16x8_t even = vuzp1q_s16(part[2 * L], part[2 * L + 1]);
                        const int16x8_t odd = vuzp2q_s16(part[2 * L], part[2 * L + 1]);
                        sums[L] = vaddq_s32(sums[L], vmovl_s16(vget_low_s16(even)));
                        sums[8 + L] = vaddq_s32(sums[8 + L], vmovl_high_s16(even));
                        sums[4 + L] = vaddq_s32(sums[4 + L], vmovl_s16(vget_low_s16(odd)));
                        sums[12 + L] = vaddq_s32(sums[12 + L], vmovl_high_s16(odd));
                    }
                }
                for (int k = 0; k < QUADS; ++k) {
                    const float32x4_t prod = vmulq_f32(vld1q_f32(A + i * R + 4 * k), vcvtq_f32_s32(sums[k]));
                    acc[k] = i ? vaddq_f32(acc[k], prod) : prod;
                }
            }
            const float32x4_t s = vdupq_n_f32(scales[g]), gs = vdupq_n_f32(gsum[g]);
            for (int k = 0; k < QUADS; ++k) {
                float32x4_t v = vaddq_f32(vld1q_f32(yt + 4 * k), vmulq_f32(s, acc[k]));
                v = vaddq_f32(v, vmulq_f32(vld1q_f32(O + 4 * k), gs));
                vst1q_f32(yt + 4 * k, v);
            }
        }
        for (size_t r = 0; r < R; ++r) y[(t - t0) * R + r] = yt[r];
    }
}

const exaq_lutgemm_kernels exaq_lutgemm_neon = {
    .gemv_mu4 = mu4_neon,
    .gemv_mu8 = mu8_neon,
    .preferred = EXAQ_LUT_MU4,
    .gemv_i8 = gemv_i8_neon,
};
