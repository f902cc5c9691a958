/* LUT-GEMM kernels, AVX-512 (F + BW + VL): one zmm lane per output row of a
 * 16-row tile, so each row's sums are formed in the scalar kernel's order
 * (bit-exact with it).
 *  MU4: the 16-entry float table of 4 activations is one zmm; vpermps picks 16
 *       entries (one per row) using only the low 4 bits of each dword index, so
 *       the low nibble needs no masking and the high nibble one shift.
 *  MU8: the paper's 256-entry tables, read with vgatherdps. */
#include <immintrin.h>

#include "compiler.h"
#include "exaq.h"

#define TILE EXAQ_LUT_TILE


/* The weights are read once per call, in storage order, and the kernel is fast
 * enough that the hardware prefetcher alone leaves it waiting on DRAM: fetch the
 * bit-planes, alphas and offsets of the (tile, group) PREFETCH_GROUPS ahead. */
#define PREFETCH_GROUPS 4
static inline EXAQ_ALWAYS_INLINE void prefetch_ahead(const exaq_bcq_matrix *w, size_t tg, size_t bits, size_t gb) {
    const size_t ahead = tg + PREFETCH_GROUPS;
    if (ahead >= w->tiles * w->groups) return;
    const char *p = (const char *)(w->planes + ahead * bits * gb * TILE);
    for (size_t o = 0; o < bits * gb * TILE; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    for (size_t o = 0; o < bits * TILE; o += 16)
        _mm_prefetch((const char *)(w->alphas + ahead * bits * TILE + o), _MM_HINT_T0);
    _mm_prefetch((const char *)(w->offsets + ahead * TILE), _MM_HINT_T0);
}

/* Accumulate one group of tile `tg` into yt (alphas and offset applied). */
#define MU4_FINISH(yt, lo, hi, tg)                                                         \
    do {                                                                                   \
        const float *A_ = w->alphas + (tg) * bits * TILE;                                  \
        for (size_t i = 0; i < bits; ++i) {                                                \
            const __m512 prod = _mm512_mul_ps(_mm512_loadu_ps(A_ + i * TILE),              \
                                              _mm512_add_ps(lo[i], hi[i]));                \
            yt = _mm512_add_ps(yt, prod);                                                  \
        }                                                                                  \
        yt = _mm512_add_ps(yt, _mm512_mul_ps(_mm512_loadu_ps(w->offsets + (tg) * TILE),    \
                                             _mm512_set1_ps(gsum[g])));                    \
    } while (0)

#define MU4_LOOKUP(lo, hi, P)                                                              \
    do {                                                                                   \
        const __m128i b_ = _mm_loadu_si128((const __m128i *)((P) + (i * gb + j) * TILE));  \
        const __m512i idx_ = _mm512_cvtepu8_epi32(b_);                                     \
        lo[i] = _mm512_add_ps(lo[i], _mm512_permutexvar_ps(idx_, tlo));                    \
        hi[i] = _mm512_add_ps(hi[i], _mm512_permutexvar_ps(_mm512_srli_epi32(idx_, 4), thi)); \
    } while (0)

static inline EXAQ_ALWAYS_INLINE void mu4_one(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                           size_t t, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    __m512 yt = _mm512_setzero_ps();
    for (size_t g = 0; g < w->groups; ++g) {
        const size_t tg = t * w->groups + g;
        const uint8_t *P = w->planes + tg * bits * gb * TILE;
        const float *T = tables + g * gb * 32;
        prefetch_ahead(w, tg, bits, gb);
        __m512 lo[EXAQ_LUT_MAX_BITS], hi[EXAQ_LUT_MAX_BITS];
        for (size_t i = 0; i < bits; ++i) lo[i] = hi[i] = _mm512_setzero_ps();
        for (size_t j = 0; j < gb; ++j) {
            /* the two tables are loaded once and serve every bit-plane */
            const __m512 tlo = _mm512_loadu_ps(T + j * 32);
            const __m512 thi = _mm512_loadu_ps(T + j * 32 + 16);
            for (size_t i = 0; i < bits; ++i) MU4_LOOKUP(lo, hi, P);
        }
        MU4_FINISH(yt, lo, hi, tg);
    }
    _mm512_storeu_ps(y, yt);
}

/* (A two-tile variant sharing each table load between two tiles measured no
 * faster on Zen 4: the table loads hit L2 and are not the bottleneck.) */
static inline EXAQ_ALWAYS_INLINE void mu4_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                             size_t t0, size_t t1, float *y, const size_t bits) {
    for (size_t t = t0; t < t1; ++t) mu4_one(w, tables, gsum, t, y + (t - t0) * TILE, bits);
}

static inline EXAQ_ALWAYS_INLINE void mu8_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                             size_t t0, size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    for (size_t t = t0; t < t1; ++t) {
        __m512 yt = _mm512_setzero_ps();
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 256;
            __m512 acc[EXAQ_LUT_MAX_BITS];
            for (size_t i = 0; i < bits; ++i) acc[i] = _mm512_setzero_ps();
            for (size_t j = 0; j < gb; ++j)
                for (size_t i = 0; i < bits; ++i) {
                    const __m128i b = _mm_loadu_si128((const __m128i *)(P + (i * gb + j) * TILE));
                    const __m512i idx = _mm512_cvtepu8_epi32(b);
                    acc[i] = _mm512_add_ps(acc[i], _mm512_i32gather_ps(idx, T + j * 256, 4));
                }
            for (size_t i = 0; i < bits; ++i) {
                const __m512 prod = _mm512_mul_ps(_mm512_loadu_ps(A + i * TILE), acc[i]);
                yt = _mm512_add_ps(yt, prod);
            }
            const __m512 off = _mm512_mul_ps(_mm512_loadu_ps(w->offsets + tg * TILE),
                                             _mm512_set1_ps(gsum[g]));
            yt = _mm512_add_ps(yt, off);
        }
        _mm512_storeu_ps(y + (t - t0) * TILE, yt);
    }
}

/* One instantiation per bit width so the bit-plane loops are fully unrolled
 * and the accumulators live in registers. */
#define BY_BITS(fn)                                                                       \
    static void fn##_avx512(const exaq_bcq_matrix *w, const float *tables,                \
                            const float *gsum, size_t t0, size_t t1, float *y) {          \
        switch (w->bits) {                                                                \
        case 1: fn##_tiles(w, tables, gsum, t0, t1, y, 1); break;                         \
        case 2: fn##_tiles(w, tables, gsum, t0, t1, y, 2); break;                         \
        case 3: fn##_tiles(w, tables, gsum, t0, t1, y, 3); break;                         \
        default: fn##_tiles(w, tables, gsum, t0, t1, y, 4); break;                        \
        }                                                                                 \
    }
BY_BITS(mu4)
BY_BITS(mu8)

/* ---- integer tables (lutgemm.h): a whole 64-row tile per zmm of codes ----
 * The AVX2 scheme at twice the width: the two int8 tables of a byte column are
 * broadcast to the four 128-bit lanes, so one 64-byte load of codes gives 128
 * lookups with two vpermb (VBMI; unlike vpshufb it needs no nibble masks); unpack + maddubs pair and add each row's two
 * lookups into int16, and the even / odd int16 -> int32 split hands back rows
 * 0-15, 16-31 (unpacklo) and 32-47, 48-63 (unpackhi) in natural order. */
#define R8 EXAQ_LUT8_TILE

/* No software prefetch here: the codes stream in storage order and the hardware
 * prefetcher keeps up; prefetching 4 groups ahead as the float kernels do made
 * 4096x4096 4-bit 10-15% slower (thread CPU time, both backends). */

static inline EXAQ_ALWAYS_INLINE void i8_tiles(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales,
                            const float *gsum, size_t t0, size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    const __m512i ones = _mm512_set1_epi8(1);
    for (size_t t = t0; t < t1; ++t) {
        __m512 yt[4];
        for (int q = 0; q < 4; ++q) yt[q] = _mm512_setzero_ps();
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *C = w->codes + tg * bits * gb * R8;
            const float *A = w->alphas + tg * bits * R8;
            const int8_t *Q = tables + g * gb * 32;
            __m512i s32[EXAQ_LUT_MAX_BITS][4]; /* rows 16 q .. 16 q + 15 of plane i */
            for (size_t i = 0; i < bits; ++i)
                for (int q = 0; q < 4; ++q) s32[i][q] = _mm512_setzero_si512();
            for (size_t j0 = 0; j0 < gb; j0 += EXAQ_LUT8_CHUNK) {
                const size_t j1 = j0 + EXAQ_LUT8_CHUNK < gb ? j0 + EXAQ_LUT8_CHUNK : gb;
                __m512i lo[EXAQ_LUT_MAX_BITS], hi[EXAQ_LUT_MAX_BITS];
                for (size_t i = 0; i < bits; ++i) lo[i] = hi[i] = _mm512_setzero_si512();
                for (size_t j = j0; j < j1; ++j) {
                    const __m512i ta = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(Q + j * 32)));
                    const __m512i tb = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(Q + j * 32 + 16)));
                    for (size_t i = 0; i < bits; ++i) {
                        const __m512i v = _mm512_loadu_si512((const void *)(C + (i * gb + j) * R8));
                        /* vpermb reads index bits 0-5 and the table is the same in all four
                         * lanes, so bits 4-5 (the other nibble / the neighbour byte after
                         * the shift) only pick a copy: no masking */
                        const __m512i x = _mm512_permutexvar_epi8(v, ta);
                        const __m512i z = _mm512_permutexvar_epi8(_mm512_srli_epi16(v, 4), tb);
                        lo[i] = _mm512_add_epi16(lo[i], _mm512_maddubs_epi16(ones, _mm512_unpacklo_epi8(x, z)));
                        hi[i] = _mm512_add_epi16(hi[i], _mm512_maddubs_epi16(ones, _mm512_unpackhi_epi8(x, z)));
                    }
                }
                for (size_t i = 0; i < bits; ++i) {
                    s32[i][0] = _mm512_add_epi32(s32[i][0], _mm512_srai_epi32(_mm512_slli_epi32(lo[i], 16), 16));
                    s32[i][1] = _mm512_add_epi32(s32[i][1], _mm512_srai_epi32(lo[i], 16));
                    s32[i][2] = _mm512_add_epi32(s32[i][2], _mm512_srai_epi32(_mm512_slli_epi32(hi[i], 16), 16));
                    s32[i][3] = _mm512_add_epi32(s32[i][3], _mm512_srai_epi32(hi[i], 16));
                }
            }
            const __m512 sc = _mm512_set1_ps(scales[g]), gs = _mm512_set1_ps(gsum[g]);
            for (int q = 0; q < 4; ++q) {
                const size_t r = 16 * (size_t)q;
                __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(A + r), _mm512_cvtepi32_ps(s32[0][q]));
                for (size_t i = 1; i < bits; ++i)
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(A + i * R8 + r),
                                                           _mm512_cvtepi32_ps(s32[i][q])));
                yt[q] = _mm512_add_ps(yt[q], _mm512_mul_ps(sc, acc));
                yt[q] = _mm512_add_ps(yt[q], _mm512_mul_ps(_mm512_loadu_ps(w->offsets + tg * R8 + r), gs));
            }
        }
        for (int q = 0; q < 4; ++q) _mm512_storeu_ps(y + (t - t0) * R8 + 16 * q, yt[q]);
    }
}

static void i8_avx512(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales, const float *gsum,
                      size_t t0, size_t t1, float *y) {
    switch (w->bits) {
    case 1: i8_tiles(w, tables, scales, gsum, t0, t1, y, 1); break;
    case 2: i8_tiles(w, tables, scales, gsum, t0, t1, y, 2); break;
    case 3: i8_tiles(w, tables, scales, gsum, t0, t1, y, 3); break;
    default: i8_tiles(w, tables, scales, gsum, t0, t1, y, 4); break;
    }
}

const exaq_lutgemm_kernels exaq_lutgemm_avx512 = {
    .gemv_mu4 = mu4_avx512,
    .gemv_mu8 = mu8_avx512,
    .preferred = EXAQ_LUT_MU4,
    .gemv_i8 = i8_avx512,
};
