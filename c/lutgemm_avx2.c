/* LUT-GEMM kernels, AVX2: a 16-row tile is two ymm halves of 8 rows, one lane
 * per row, each row summed in the scalar kernel's order (bit-exact with it).
 *  MU4: AVX2 has no 16-entry float permute, so the table is two ymm (entries
 *       0..7 and 8..15), both read with vpermps (low 3 index bits) and the
 *       result chosen by index bit 3 with a blend on the sign bit.
 *  MU8: the paper's 256-entry tables, read with vgatherdps. */
#include <immintrin.h>

#include "compiler.h"
#include "exaq.h"

#define TILE EXAQ_LUT_TILE


/* 16-entry lookup: t0 = entries 0..7, t1 = entries 8..15; `sel` has index bit 3
 * in the sign bit. */
static inline EXAQ_ALWAYS_INLINE __m256 lookup16(__m256 t0, __m256 t1, __m256i idx, __m256i sel) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, idx), _mm256_permutevar8x32_ps(t1, idx),
                            _mm256_castsi256_ps(sel));
}

/* Software prefetch of the (tile, group) PREFETCH_GROUPS ahead: the hardware
 * prefetcher alone leaves the kernel waiting on DRAM (docs/lutgemm.md). */
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

static inline EXAQ_ALWAYS_INLINE void mu4_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                             size_t t0, size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    for (size_t t = t0; t < t1; ++t) {
        __m256 yt[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 32;
            prefetch_ahead(w, tg, bits, gb);
            for (int h = 0; h < 2; ++h) {
                __m256 lo[EXAQ_LUT_MAX_BITS], hi[EXAQ_LUT_MAX_BITS];
                for (size_t i = 0; i < bits; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
                for (size_t j = 0; j < gb; ++j) {
                    const __m256 ta0 = _mm256_loadu_ps(T + j * 32), ta1 = _mm256_loadu_ps(T + j * 32 + 8);
                    const __m256 tb0 = _mm256_loadu_ps(T + j * 32 + 16), tb1 = _mm256_loadu_ps(T + j * 32 + 24);
                    for (size_t i = 0; i < bits; ++i) {
                        const __m128i b = _mm_loadl_epi64((const __m128i *)(P + (i * gb + j) * TILE + 8 * h));
                        const __m256i idx = _mm256_cvtepu8_epi32(b);
                        const __m256i hidx = _mm256_srli_epi32(idx, 4);
                        lo[i] = _mm256_add_ps(lo[i], lookup16(ta0, ta1, idx, _mm256_slli_epi32(idx, 28)));
                        hi[i] = _mm256_add_ps(hi[i], lookup16(tb0, tb1, hidx, _mm256_slli_epi32(idx, 24)));
                    }
                }
                for (size_t i = 0; i < bits; ++i) {
                    const __m256 prod = _mm256_mul_ps(_mm256_loadu_ps(A + i * TILE + 8 * h),
                                                      _mm256_add_ps(lo[i], hi[i]));
                    yt[h] = _mm256_add_ps(yt[h], prod);
                }
                const __m256 off = _mm256_mul_ps(_mm256_loadu_ps(w->offsets + tg * TILE + 8 * h),
                                                 _mm256_set1_ps(gsum[g]));
                yt[h] = _mm256_add_ps(yt[h], off);
            }
        }
        _mm256_storeu_ps(y + (t - t0) * TILE, yt[0]);
        _mm256_storeu_ps(y + (t - t0) * TILE + 8, yt[1]);
    }
}

static inline EXAQ_ALWAYS_INLINE void mu8_tiles(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                             size_t t0, size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    for (size_t t = t0; t < t1; ++t) {
        __m256 yt[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *T = tables + g * gb * 256;
            __m256 acc[EXAQ_LUT_MAX_BITS][2];
            for (size_t i = 0; i < bits; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
            for (size_t j = 0; j < gb; ++j)
                for (size_t i = 0; i < bits; ++i) {
                    const __m128i b = _mm_loadu_si128((const __m128i *)(P + (i * gb + j) * TILE));
                    const __m256i i0 = _mm256_cvtepu8_epi32(b);
                    const __m256i i1 = _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(b, b));
                    acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_i32gather_ps(T + j * 256, i0, 4));
                    acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_i32gather_ps(T + j * 256, i1, 4));
                }
            for (int h = 0; h < 2; ++h) {
                for (size_t i = 0; i < bits; ++i) {
                    const __m256 prod = _mm256_mul_ps(_mm256_loadu_ps(A + i * TILE + 8 * h), acc[i][h]);
                    yt[h] = _mm256_add_ps(yt[h], prod);
                }
                const __m256 off = _mm256_mul_ps(_mm256_loadu_ps(w->offsets + tg * TILE + 8 * h),
                                                 _mm256_set1_ps(gsum[g]));
                yt[h] = _mm256_add_ps(yt[h], off);
            }
        }
        _mm256_storeu_ps(y + (t - t0) * TILE, yt[0]);
        _mm256_storeu_ps(y + (t - t0) * TILE + 8, yt[1]);
    }
}

#define BY_BITS(fn)                                                                       \
    static void fn##_avx2(const exaq_bcq_matrix *w, const float *tables,                  \
                          const float *gsum, size_t t0, size_t t1, float *y) {            \
        switch (w->bits) {                                                                \
        case 1: fn##_tiles(w, tables, gsum, t0, t1, y, 1); break;                         \
        case 2: fn##_tiles(w, tables, gsum, t0, t1, y, 2); break;                         \
        case 3: fn##_tiles(w, tables, gsum, t0, t1, y, 3); break;                         \
        default: fn##_tiles(w, tables, gsum, t0, t1, y, 4); break;                        \
        }                                                                                 \
    }
BY_BITS(mu4)
BY_BITS(mu8)

/* ---- integer tables (lutgemm.h): 32 rows per ymm of codes ----
 * Per byte column j the two int8 tables (quads 2j, 2j+1) are broadcast to both
 * 128-bit lanes; per bit-plane one 32-byte load of codes gives 64 lookups with
 * two vpshufb (low / high nibbles), unpacklo/hi_epi8 pairs each row's two
 * lookups and maddubs with ones adds them into int16.  After at most
 * EXAQ_LUT8_CHUNK byte columns the int16 sums are widened (even / odd elements,
 * which the packing made rows r and r + 16) into int32. */
#define R8 EXAQ_LUT8_TILE

/* No software prefetch here: the codes stream in storage order and the hardware
 * prefetcher keeps up; prefetching 4 groups ahead as the float kernels do made
 * 4096x4096 4-bit 10-15% slower (thread CPU time, both backends). */

static inline EXAQ_ALWAYS_INLINE void i8_tiles(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales,
                            const float *gsum, size_t t0, size_t t1, float *y, const size_t bits) {
    const size_t gb = w->group_size / 8;
    const __m256i m0f = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi8(1);
    for (size_t t = t0; t < t1; ++t) {
        __m256 yt[2][4];
        for (int h = 0; h < 2; ++h)
            for (int q = 0; q < 4; ++q) yt[h][q] = _mm256_setzero_ps();
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *C = w->codes + tg * bits * gb * R8;
            const float *A = w->alphas + tg * bits * R8;
            const int8_t *Q = tables + g * gb * 32;
            for (int h = 0; h < 2; ++h) {
                /* s32[i][q]: rows 16 q + 8 h .. + 7 of plane i */
                __m256i s32[EXAQ_LUT_MAX_BITS][4];
                for (size_t i = 0; i < bits; ++i)
                    for (int q = 0; q < 4; ++q) s32[i][q] = _mm256_setzero_si256();
                for (size_t j0 = 0; j0 < gb; j0 += EXAQ_LUT8_CHUNK) {
                    const size_t j1 = j0 + EXAQ_LUT8_CHUNK < gb ? j0 + EXAQ_LUT8_CHUNK : gb;
                    __m256i lo[EXAQ_LUT_MAX_BITS], hi[EXAQ_LUT_MAX_BITS];
                    for (size_t i = 0; i < bits; ++i) lo[i] = hi[i] = _mm256_setzero_si256();
                    for (size_t j = j0; j < j1; ++j) {
                        const __m256i ta = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(Q + j * 32)));
                        const __m256i tb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(Q + j * 32 + 16)));
                        for (size_t i = 0; i < bits; ++i) {
                            const __m256i v = _mm256_loadu_si256((const __m256i *)(C + (i * gb + j) * R8 + 32 * h));
                            const __m256i x = _mm256_shuffle_epi8(ta, _mm256_and_si256(v, m0f));
                            const __m256i z = _mm256_shuffle_epi8(tb, _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f));
                            lo[i] = _mm256_add_epi16(lo[i], _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(x, z)));
                            hi[i] = _mm256_add_epi16(hi[i], _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(x, z)));
                        }
                    }
                    for (size_t i = 0; i < bits; ++i) {
                        s32[i][0] = _mm256_add_epi32(s32[i][0], _mm256_srai_epi32(_mm256_slli_epi32(lo[i], 16), 16));
                        s32[i][1] = _mm256_add_epi32(s32[i][1], _mm256_srai_epi32(lo[i], 16));
                        s32[i][2] = _mm256_add_epi32(s32[i][2], _mm256_srai_epi32(_mm256_slli_epi32(hi[i], 16), 16));
                        s32[i][3] = _mm256_add_epi32(s32[i][3], _mm256_srai_epi32(hi[i], 16));
                    }
                }
                const __m256 sc = _mm256_set1_ps(scales[g]), gs = _mm256_set1_ps(gsum[g]);
                for (int q = 0; q < 4; ++q) {
                    const size_t r = 16 * (size_t)q + 8 * (size_t)h;
                    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(A + r), _mm256_cvtepi32_ps(s32[0][q]));
                    for (size_t i = 1; i < bits; ++i)
                        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(A + i * R8 + r),
                                                               _mm256_cvtepi32_ps(s32[i][q])));
                    yt[h][q] = _mm256_add_ps(yt[h][q], _mm256_mul_ps(sc, acc));
                    yt[h][q] = _mm256_add_ps(yt[h][q], _mm256_mul_ps(_mm256_loadu_ps(w->offsets + tg * R8 + r), gs));
                }
            }
        }
        for (int h = 0; h < 2; ++h)
            for (int q = 0; q < 4; ++q) _mm256_storeu_ps(y + (t - t0) * R8 + 16 * q + 8 * h, yt[h][q]);
    }
}

static void i8_avx2(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales, const float *gsum,
                    size_t t0, size_t t1, float *y) {
    switch (w->bits) {
    case 1: i8_tiles(w, tables, scales, gsum, t0, t1, y, 1); break;
    case 2: i8_tiles(w, tables, scales, gsum, t0, t1, y, 2); break;
    case 3: i8_tiles(w, tables, scales, gsum, t0, t1, y, 3); break;
    default: i8_tiles(w, tables, scales, gsum, t0, t1, y, 4); break;
    }
}

const exaq_lutgemm_kernels exaq_lutgemm_avx2 = {
    .gemv_mu4 = mu4_avx2,
    .gemv_mu8 = mu8_avx2,
    .preferred = EXAQ_LUT_MU4,
    .gemv_i8 = i8_avx2,
};
