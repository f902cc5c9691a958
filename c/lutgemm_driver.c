/* LUT-GEMM driver, portable C99: pads the activations, builds the tables once
 * per activation vector (shared by every row and every thread), splits the
 * row tiles across the library's worker pool (threadpool.h) and calls the
 * active backend's kernel. */
#include <math.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "exaq.h"

#define TILE EXAQ_LUT_TILE
/* Tiles a worker runs per token before moving to the next token: the weights
 * of 4 tiles (<= 4*16*4096*4/8 = 128 KiB at K = 4096, 4 bits) stay in L2 while
 * every token of a block reads them. */
#define TILES_PER_STEP 4 /* also the unit of work handed to a thread */
/* Table memory of one token block (more tokens are done in blocks): half of a
 * 1 MiB L2, so the tables of a block stay in L2 while the weights stream by. */
#define TABLE_BUDGET_BYTES (512u << 10)

int exaq_bcq_check(const exaq_bcq_matrix *w) {
    if (!w || w->bits < 1 || w->bits > EXAQ_LUT_MAX_BITS) return -1;
    if (w->group_size == 0 || w->group_size % 8) return -1;
    if (w->tiles != (w->rows + TILE - 1) / TILE) return -1;
    if (w->groups != (w->cols + w->group_size - 1) / w->group_size) return -1;
    if (w->rows && w->cols && (!w->planes || !w->alphas || !w->offsets)) return -1;
    return 0;
}

size_t exaq_lut_table_floats(exaq_lut_design design, size_t kpad) {
    return design == EXAQ_LUT_MU8 ? kpad * 32 : kpad * 4;
}

/* Entry idx of the table of activations x[0..3] is sum_t (bit t of idx ? x[t] : -x[t]),
 * summed in the order t = 0, 1, 2, 3.  Two tables per 8 columns: low nibble
 * (columns 0..3 of the byte) then high nibble (columns 4..7). */
void exaq_lut_build_tables4(const float *x, size_t kpad, float *tables) {
    for (size_t c = 0; c < kpad / 4; ++c) {
        const float *xc = x + 4 * c;
        float *T = tables + 16 * c;
        for (unsigned idx = 0; idx < 16; ++idx) {
            float s = (idx & 1u) ? xc[0] : -xc[0];
            s += (idx & 2u) ? xc[1] : -xc[1];
            s += (idx & 4u) ? xc[2] : -xc[2];
            s += (idx & 8u) ? xc[3] : -xc[3];
            T[idx] = s;
        }
    }
}

/* The paper's 256-entry table of 8 activations, as the sum of the two nibble
 * tables: one addition per entry instead of eight. */
void exaq_lut_build_tables8(const float *x, size_t kpad, float *tables) {
    float t4[32];
    for (size_t c = 0; c < kpad / 8; ++c) {
        exaq_lut_build_tables4(x + 8 * c, 8, t4);
        float *T = tables + 256 * c;
        for (unsigned hi = 0; hi < 16; ++hi)
            for (unsigned lo = 0; lo < 16; ++lo) T[hi * 16 + lo] = t4[lo] + t4[16 + hi];
    }
}

/* One call's work, shared by all its threads.  Steps of `step` tiles are
 * handed out by the pool (threadpool.h: each thread's home range first, then
 * the others' leftovers): on a machine where another process holds a core,
 * the thread that runs does the work instead of both waiting for a static
 * half.  Either a float-table kernel (16-row tiles, 4 per step) or an
 * integer-table kernel (64-row tiles, 1 per step) runs. */
typedef struct {
    exaq_lut_kernel kernel;
    exaq_lut8_kernel kernel8;
    const exaq_bcq_matrix *w;
    const exaq_bcq_i8 *w8;
    const float *tables;   /* float tables: token n at tables + n * table_size */
    const int8_t *tables8; /* int8 tables: token n at tables8 + n * table_size */
    const float *scales;   /* int8 table scales: token n at scales + n * groups */
    const float *gsum;     /* token n at gsum + n * groups */
    size_t table_size, tokens, groups, tiles, rows, tile_rows, step;
    float *y;
    ptrdiff_t y_stride;
} lut_job;

#define STEP_ROWS (TILES_PER_STEP * TILE) /* == EXAQ_LUT8_TILE: one buffer serves both */

/* steps [s0, s1) of the job's current token block */
static void run_steps(void *arg, size_t s0, size_t s1) {
    const lut_job *job = (const lut_job *)arg;
    float buf[STEP_ROWS];
    for (size_t s = s0; s < s1; ++s) {
        const size_t t = s * job->step;
        const size_t te = t + job->step < job->tiles ? t + job->step : job->tiles;
        const size_t r0 = t * job->tile_rows;
        size_t r1 = te * job->tile_rows;
        if (r1 > job->rows) r1 = job->rows;
        for (size_t n = 0; n < job->tokens; ++n) {
            if (job->kernel8)
                job->kernel8(job->w8, job->tables8 + n * job->table_size, job->scales + n * job->groups,
                             job->gsum + n * job->groups, t, te, buf);
            else
                job->kernel(job->w, job->tables + n * job->table_size, job->gsum + n * job->groups, t,
                            te, buf);
            memcpy(job->y + (ptrdiff_t)n * job->y_stride + r0, buf, (r1 - r0) * sizeof(float));
        }
    }
}

/* The job's current token block on up to `threads` threads of the pool, this
 * one included (the pool takes no more threads than there are steps; a busy
 * pool: this thread alone; the result is complete either way). */
static void run_threads(lut_job *job, int threads) {
    exaq_parallel_for((job->tiles + job->step - 1) / job->step, 1, threads, run_steps, job);
}

/* Sum of the activations of each group, float32, in column order. */
static void group_sums(const float *xpad, size_t groups, size_t gs, float *gsum) {
    for (size_t g = 0; g < groups; ++g) {
        float s = 0.0f;
        for (size_t j = 0; j < gs; ++j) s += xpad[g * gs + j];
        gsum[g] = s;
    }
}

/* 64-byte aligned block so table rows never straddle more cache lines than needed. */
static void *alloc64(size_t bytes, void **base) {
    *base = malloc(bytes + 64);
    if (!*base) return NULL;
    return (void *)(((uintptr_t)*base + 63) & ~(uintptr_t)63);
}

/* ---- integer-table mode ---- */

/* The float tables of exaq_lut_build_tables4, then one flat loop that scales,
 * rounds to the nearest integer (ties to even: the 1.5 * 2^23 trick, exact for
 * |v| < 2^22) and clamps; both loops vectorize on the baseline ISA.  Every
 * backend reads these bytes. */
void exaq_lut_build_tables_i8(const float *x, size_t kpad, size_t group_size, int8_t *tables,
                              float *scales) {
    enum { CH = 32 }; /* quads per pass through the float scratch */
    float T[16 * CH];
    const size_t quads = group_size / 4;
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    for (size_t g = 0; g < kpad / group_size; ++g) {
        const float *xg = x + g * group_size;
        /* the largest entry of a quad's table is |x0| + |x1| + |x2| + |x3| */
        float m = 0.0f;
        for (size_t c = 0; c < quads; ++c) {
            const float *xc = xg + 4 * c;
            const float a = ((fabsf(xc[0]) + fabsf(xc[1])) + fabsf(xc[2])) + fabsf(xc[3]);
            m = a > m ? a : m;
        }
        const float inv = m > 0.0f ? 127.0f / m : 0.0f;
        scales[g] = m / 127.0f;
        for (size_t c0 = 0; c0 < quads; c0 += CH) {
            const size_t nq = quads - c0 < CH ? quads - c0 : CH;
            exaq_lut_build_tables4(xg + 4 * c0, 4 * nq, T);
            int8_t *Q = tables + 16 * (g * quads + c0);
            size_t k = 0;
#if defined(__SSE2__)
            /* the same arithmetic 16 at a time (cvtps2dq rounds to nearest even under
             * the default MXCSR; |v| <= 127 up to rounding, so the saturating packs
             * never clip): compilers do not find this for the loop below */
            const __m128 vinv = _mm_set1_ps(inv), hi = _mm_set1_ps(127.0f), lo = _mm_set1_ps(-127.0f);
            for (; k < 16 * nq; k += 16) {
                __m128i q[4];
                for (int l = 0; l < 4; ++l)
                    q[l] = _mm_cvtps_epi32(_mm_max_ps(_mm_min_ps(_mm_mul_ps(_mm_loadu_ps(T + k + 4 * l), vinv), hi), lo));
                _mm_storeu_si128((__m128i *)(Q + k),
                                 _mm_packs_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3])));
            }
#endif
            for (; k < 16 * nq; ++k) {
                float v = T[k] * inv;
                v = (v + magic) - magic;
                v = v > 127.0f ? 127.0f : v; /* |v| <= 127 up to the rounding of inv */
                v = v < -127.0f ? -127.0f : v;
                Q[k] = (int8_t)(int32_t)v;
            }
        }
    }
}

/* Group sums for the int8 mode: 8 running sums (stride 8) combined pairwise, a
 * fixed order the compiler vectorizes (the exact mode keeps plain column order). */
static void group_sums8(const float *xpad, size_t groups, size_t gs, float *gsum) {
    for (size_t g = 0; g < groups; ++g) {
        float a[8] = {0};
        for (size_t j = 0; j < gs; j += 8)
            for (int l = 0; l < 8; ++l) a[l] += xpad[g * gs + j + l];
        gsum[g] = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    }
}

void exaq_bcq_i8_sizes(const exaq_bcq_matrix *w, size_t *codes, size_t *alphas, size_t *offsets) {
    const size_t tiles8 = (w->rows + EXAQ_LUT8_TILE - 1) / EXAQ_LUT8_TILE;
    const size_t tg = tiles8 * w->groups;
    *codes = tg * (size_t)w->bits * (w->group_size / 8) * EXAQ_LUT8_TILE;
    *alphas = tg * (size_t)w->bits * EXAQ_LUT8_TILE;
    *offsets = tg * EXAQ_LUT8_TILE;
}

int exaq_bcq_i8_check(const exaq_bcq_i8 *w) {
    if (!w || w->bits < 1 || w->bits > EXAQ_LUT_MAX_BITS) return -1;
    if (w->group_size == 0 || w->group_size % 8) return -1;
    if (w->tiles != (w->rows + EXAQ_LUT8_TILE - 1) / EXAQ_LUT8_TILE) return -1;
    if (w->groups != (w->cols + w->group_size - 1) / w->group_size) return -1;
    if (w->rows && w->cols && (!w->codes || !w->alphas || !w->offsets)) return -1;
    return 0;
}

int exaq_bcq_pack_i8(const exaq_bcq_matrix *w, uint8_t *codes, float *alphas, float *offsets,
                     exaq_bcq_i8 *out) {
    if (exaq_bcq_check(w) != 0 || !out) return -1;
    const size_t R = EXAQ_LUT8_TILE, gb = w->group_size / 8, bits = (size_t)w->bits;
    const size_t tiles8 = (w->rows + R - 1) / R;
    unsigned row_of[EXAQ_LUT8_TILE];
    for (unsigned p = 0; p < R; ++p) row_of[p] = exaq_lut8_row_of(p);
    for (size_t t = 0; t < tiles8; ++t)
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg8 = t * w->groups + g;
            uint8_t *C = codes + tg8 * bits * gb * R;
            float *A = alphas + tg8 * bits * R, *O = offsets + tg8 * R;
            for (size_t r = 0; r < R; ++r) { /* row r of this tile is lane r16 of 16-row tile t16 */
                const size_t row = t * R + r, t16 = row / TILE, r16 = row % TILE;
                const int real = t16 < w->tiles; /* rows past the 16-row tiles: padding */
                const size_t tg = t16 * w->groups + g;
                for (size_t i = 0; i < bits; ++i)
                    A[i * R + r] = real ? w->alphas[(tg * bits + i) * TILE + r16] : 0.0f;
                O[r] = real ? w->offsets[tg * TILE + r16] : 0.0f;
            }
            for (size_t i = 0; i < bits; ++i)
                for (size_t j = 0; j < gb; ++j)
                    for (size_t p = 0; p < R; ++p) {
                        const size_t row = t * R + row_of[p], t16 = row / TILE, r16 = row % TILE;
                        C[(i * gb + j) * R + p] =
                            t16 < w->tiles
                                ? w->planes[((t16 * w->groups + g) * bits * gb + i * gb + j) * TILE + r16]
                                : 0;
                    }
        }
    out->codes = codes;
    out->alphas = alphas;
    out->offsets = offsets;
    out->rows = w->rows;
    out->tiles = tiles8;
    out->cols = w->cols;
    out->group_size = w->group_size;
    out->groups = w->groups;
    out->bits = w->bits;
    return 0;
}

int exaq_lutgemm_i8(const exaq_lutgemm_kernels *k, const exaq_bcq_i8 *w, const float *x,
                    size_t tokens, ptrdiff_t x_stride, float *y, ptrdiff_t y_stride, int threads) {
    if (!k || exaq_bcq_i8_check(w) != 0 || threads < 1) return -1;
    if (tokens == 0 || w->rows == 0) return 0;
    if (!y || (!x && w->cols)) return -1;
    if (w->cols == 0) {
        for (size_t n = 0; n < tokens; ++n) memset(y + (ptrdiff_t)n * y_stride, 0, w->rows * sizeof(float));
        return 0;
    }
    const exaq_lut8_kernel kernel = k->gemv_i8 ? k->gemv_i8 : exaq_lutgemm_scalar.gemv_i8;
    const size_t kpad = w->groups * w->group_size;
    const size_t tb = kpad * 4; /* int8 table bytes per token (16 per 4 columns) */
    /* the tables are small (16 KiB at K = 4096): a block of tokens shares one pass over the weights */
    size_t block = TABLE_BUDGET_BYTES / (tb + 8 * w->groups);
    if (block < 1) block = 1;
    if (block > tokens) block = tokens;

    void *base = NULL;
    const size_t nfloat = block * 2 * w->groups + kpad;
    float *mem = (float *)alloc64(nfloat * sizeof(float) + block * tb, &base);
    if (!mem) return -2;
    float *scales = mem, *gsum = mem + block * w->groups, *xpad = gsum + block * w->groups;
    int8_t *tables = (int8_t *)(mem + nfloat);
    lut_job job;
    memset(&job, 0, sizeof job);
    job.kernel8 = kernel;
    job.w8 = w;
    job.tables8 = tables;
    job.scales = scales;
    job.gsum = gsum;
    job.table_size = tb;
    job.groups = w->groups;
    job.tiles = w->tiles;
    job.rows = w->rows;
    job.tile_rows = EXAQ_LUT8_TILE;
    job.step = 1;
    job.y_stride = y_stride;
    for (size_t n0 = 0; n0 < tokens; n0 += block) {
        const size_t nb = n0 + block <= tokens ? block : tokens - n0;
        for (size_t n = 0; n < nb; ++n) {
            const float *xr = x + (ptrdiff_t)(n0 + n) * x_stride;
            memcpy(xpad, xr, w->cols * sizeof(float));
            memset(xpad + w->cols, 0, (kpad - w->cols) * sizeof(float));
            exaq_lut_build_tables_i8(xpad, kpad, w->group_size, tables + n * tb, scales + n * w->groups);
            group_sums8(xpad, w->groups, w->group_size, gsum + n * w->groups);
        }
        job.tokens = nb;
        job.y = y + (ptrdiff_t)n0 * y_stride;
        run_threads(&job, threads);
    }
    free(base);
    return 0;
}

int exaq_lutgemm(const exaq_lutgemm_kernels *k, exaq_lut_design design,
                 const exaq_bcq_matrix *w, const float *x, size_t tokens,
                 ptrdiff_t x_stride, float *y, ptrdiff_t y_stride, int threads) {
    if (!k || exaq_bcq_check(w) != 0 || threads < 1) return -1;
    if (design == EXAQ_LUT_AUTO) design = k->preferred;
    if (design != EXAQ_LUT_MU4 && design != EXAQ_LUT_MU8) return -1;
    if (tokens == 0 || w->rows == 0) return 0;
    if (!y || (!x && w->cols)) return -1;
    if (w->cols == 0) { /* empty sum */
        for (size_t n = 0; n < tokens; ++n) memset(y + (ptrdiff_t)n * y_stride, 0, w->rows * sizeof(float));
        return 0;
    }
    const exaq_lut_kernel kernel = design == EXAQ_LUT_MU8 ? k->gemv_mu8 : k->gemv_mu4;
    const size_t kpad = w->groups * w->group_size;
    const size_t tf = exaq_lut_table_floats(design, kpad);
    size_t block = TABLE_BUDGET_BYTES / (tf * sizeof(float));
    if (block < 1) block = 1;
    if (block > tokens) block = tokens;

    void *base = NULL;
    float *mem = (float *)alloc64((block * (tf + w->groups) + kpad) * sizeof(float), &base);
    if (!mem) return -2;
    float *tables = mem, *gsum = mem + block * tf, *xpad = gsum + block * w->groups;

    lut_job job;
    memset(&job, 0, sizeof job);
    job.kernel = kernel;
    job.w = w;
    job.tables = tables;
    job.gsum = gsum;
    job.table_size = tf;
    job.groups = w->groups;
    job.tiles = w->tiles;
    job.rows = w->rows;
    job.tile_rows = TILE;
    job.step = TILES_PER_STEP;
    job.y_stride = y_stride;
    for (size_t n0 = 0; n0 < tokens; n0 += block) {
        const size_t nb = n0 + block <= tokens ? block : tokens - n0;
        for (size_t n = 0; n < nb; ++n) {
            const float *xr = x + (ptrdiff_t)(n0 + n) * x_stride;
            memcpy(xpad, xr, w->cols * sizeof(float));
            memset(xpad + w->cols, 0, (kpad - w->cols) * sizeof(float));
            float *T = tables + n * tf;
            if (design == EXAQ_LUT_MU8) exaq_lut_build_tables8(xpad, kpad, T);
            else exaq_lut_build_tables4(xpad, kpad, T);
            group_sums(xpad, w->groups, w->group_size, gsum + n * w->groups);
        }
        job.tokens = nb;
        job.y = y + (ptrdiff_t)n0 * y_stride;
        run_threads(&job, threads);
    }
    free(base);
    return 0;
}

int exaq_bcq_dequantize(const exaq_bcq_matrix *w, float *out, ptrdiff_t ld) {
    if (exaq_bcq_check(w) != 0) return -1;
    if (w->rows == 0 || w->cols == 0) return 0;
    if (!out) return -1;
    const size_t gs = w->group_size, gb = gs / 8, bits = (size_t)w->bits;
    /* One group of one tile at a time into a small buffer laid out [row][column],
     * walking the bytes in storage order; the sign is a multiplication by +-1
     * (exact) so the loops have no branches and vectorize. */
    float *buf = (float *)malloc(TILE * gs * sizeof(float));
    if (!buf) return -2;
    float sign[256][8]; /* the +-1 pattern of every byte, so a byte expands with one 8-wide multiply */
    for (unsigned b = 0; b < 256; ++b)
        for (unsigned s = 0; s < 8; ++s) sign[b][s] = ((b >> s) & 1u) ? 1.0f : -1.0f;
    for (size_t t = 0; t < w->tiles; ++t) {
        const size_t r_end = (t + 1) * TILE <= w->rows ? TILE : w->rows - t * TILE;
        for (size_t g = 0; g < w->groups; ++g) {
            const size_t tg = t * w->groups + g;
            const uint8_t *P = w->planes + tg * bits * gb * TILE;
            const float *A = w->alphas + tg * bits * TILE;
            const float *O = w->offsets + tg * TILE;
            memset(buf, 0, TILE * gs * sizeof(float));
            for (size_t i = 0; i < bits; ++i)
                for (size_t j = 0; j < gb; ++j)
                    for (size_t r = 0; r < TILE; ++r) {
                        const unsigned b = P[(i * gb + j) * TILE + r];
                        const float a = A[i * TILE + r];
                        float *v = buf + r * gs + 8 * j;
                        for (unsigned s = 0; s < 8; ++s) v[s] += a * sign[b][s];
                    }
            const size_t k0 = g * gs, kn = k0 + gs < w->cols ? gs : w->cols - k0;
            for (size_t r = 0; r < r_end; ++r) {
                float *row = out + (ptrdiff_t)(t * TILE + r) * ld + k0;
                for (size_t k = 0; k < kn; ++k) row[k] = buf[r * gs + k] + O[r];
            }
        }
    }
    free(buf);
    return 0;
}

const exaq_lutgemm_kernels *exaq_lutgemm_active(void) {
    const exaq_backend *be = exaq_active_backend();
    return be && be->lutgemm ? be->lutgemm : &exaq_lutgemm_scalar;
}
