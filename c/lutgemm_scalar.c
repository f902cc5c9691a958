/* LUT-GEMM kernels, portable C: the reference every SIMD backend must match.
 * Each output row is accumulated in exactly the order the SIMD kernels use for
 * their lane (see lutgemm.h), without fused multiply-add, so they agree bit for
 * bit. */
#include "exaq.h"

/* MU4: each weight byte is two nibbles, each indexing its own 16-entry table.
 * The two nibble streams are summed in separate accumulators (the SIMD kernels
 * need two independent dependency chains) and combined per group and bit. */
static void gemv_mu4_scalar(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                            size_t t0, size_t t1, float *y) {
    const size_t gb = w->group_size / 8, bits = (size_t)w->bits;
    for (size_t t = t0; t < t1; ++t) {
        float yt[EXAQ_LUT_TILE] = {0};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * EXAQ_LUT_TILE;
            const float *A = w->alphas + tg * bits * EXAQ_LUT_TILE;
            const float *O = w->offsets + tg * EXAQ_LUT_TILE;
            const float *T = tables + g * gb * 32;
            for (size_t i = 0; i < bits; ++i) {
                const uint8_t *Pi = P + i * gb * EXAQ_LUT_TILE;
                for (int r = 0; r < EXAQ_LUT_TILE; ++r) {
                    float lo = 0.0f, hi = 0.0f;
                    for (size_t j = 0; j < gb; ++j) {
                        const unsigned b = Pi[j * EXAQ_LUT_TILE + r];
                        lo += T[j * 32 + (b & 15u)];
                        hi += T[j * 32 + 16 + (b >> 4)];
                    }
                    const float prod = A[i * EXAQ_LUT_TILE + r] * (lo + hi);
                    yt[r] += prod;
                }
            }
            for (int r = 0; r < EXAQ_LUT_TILE; ++r) {
                const float prod = O[r] * gsum[g];
                yt[r] += prod;
            }
        }
        for (int r = 0; r < EXAQ_LUT_TILE; ++r) y[(t - t0) * EXAQ_LUT_TILE + r] = yt[r];
    }
}

/* MU8: the paper's design, one 256-entry table per 8 activations. */
static void gemv_mu8_scalar(const exaq_bcq_matrix *w, const float *tables, const float *gsum,
                            size_t t0, size_t t1, float *y) {
    const size_t gb = w->group_size / 8, bits = (size_t)w->bits;
    for (size_t t = t0; t < t1; ++t) {
        float yt[EXAQ_LUT_TILE] = {0};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * EXAQ_LUT_TILE;
            const float *A = w->alphas + tg * bits * EXAQ_LUT_TILE;
            const float *O = w->offsets + tg * EXAQ_LUT_TILE;
            const float *T = tables + g * gb * 256;
            for (size_t i = 0; i < bits; ++i) {
                const uint8_t *Pi = P + i * gb * EXAQ_LUT_TILE;
                float acc[EXAQ_LUT_TILE] = {0};
                /* rows innermost: the 16 lookups of one byte column share a table */
                for (size_t j = 0; j < gb; ++j)
                    for (int r = 0; r < EXAQ_LUT_TILE; ++r)
                        acc[r] += T[j * 256 + Pi[j * EXAQ_LUT_TILE + r]];
                for (int r = 0; r < EXAQ_LUT_TILE; ++r) {
                    const float prod = A[i * EXAQ_LUT_TILE + r] * acc[r];
                    yt[r] += prod;
                }
            }
            for (int r = 0; r < EXAQ_LUT_TILE; ++r) {
                const float prod = O[r] * gsum[g];
                yt[r] += prod;
            }
        }
        for (int r = 0; r < EXAQ_LUT_TILE; ++r) y[(t - t0) * EXAQ_LUT_TILE + r] = yt[r];
    }
}

/* Integer tables: the reference arithmetic of every backend's int8 kernel
 * (lutgemm.h).  The lookups of a row, group and bit-plane are summed exactly
 * (int32; the SIMD kernels' int16 partial sums cannot overflow, see
 * EXAQ_LUT8_CHUNK), and the float part runs in the fixed order
 *     t = a_0 * f_0;  t = t + a_i * f_i (i = 1..bits-1);  y = y + s_g * t;  y = y + o * gsum_g. */
static void gemv_i8_scalar(const exaq_bcq_i8 *w, const int8_t *tables, const float *scales,
                           const float *gsum, size_t t0, size_t t1, float *y) {
    const size_t R = EXAQ_LUT8_TILE, gb = w->group_size / 8, bits = (size_t)w->bits;
    unsigned pos_of[EXAQ_LUT8_TILE]; /* byte position of each row */
    for (unsigned p = 0; p < R; ++p) pos_of[exaq_lut8_row_of(p)] = p;
    for (size_t t = t0; t < t1; ++t) {
        float yt[EXAQ_LUT8_TILE] = {0};
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *C = w->codes + tg * bits * gb * R;
            const float *A = w->alphas + tg * bits * R;
            const float *O = w->offsets + tg * R;
            const int8_t *Q = tables + g * gb * 32;
            for (size_t r = 0; r < R; ++r) {
                const unsigned p = pos_of[r];
                float acc = 0.0f;
                for (size_t i = 0; i < bits; ++i) {
                    const uint8_t *Ci = C + i * gb * R + p;
                    int32_t s = 0;
                    for (size_t j = 0; j < gb; ++j) {
                        const unsigned b = Ci[j * R];
                        s += Q[j * 32 + (b & 15u)] + Q[j * 32 + 16 + (b >> 4)];
                    }
                    const float prod = A[i * R + r] * (float)s;
                    acc = i ? acc + prod : prod;
                }
                const float scaled = scales[g] * acc;
                yt[r] += scaled;
                const float off = O[r] * gsum[g];
                yt[r] += off;
            }
        }
        for (size_t r = 0; r < R; ++r) y[(t - t0) * R + r] = yt[r];
    }
}

const exaq_lutgemm_kernels exaq_lutgemm_scalar = {
    .gemv_mu4 = gemv_mu4_scalar,
    .gemv_mu8 = gemv_mu8_scalar,
    .preferred = EXAQ_LUT_MU8,
    .gemv_i8 = gemv_i8_scalar,
};
