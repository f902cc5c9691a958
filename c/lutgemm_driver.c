/* LUT-GEMM driver, portable C99 + pthreads: pads the activations, builds the
 * tables once per activation vector (shared by every row and every thread),
 * splits the row tiles among threads and calls the active backend's kernel. */
#include <pthread.h>
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

/* One call's work, shared by all its threads.  Steps of TILES_PER_STEP tiles are
 * handed out dynamically (a counter under a mutex, ~tens of steps per call): on
 * a machine where another process holds a core, the thread that runs does the
 * work instead of both waiting for a static half. */
typedef struct {
    exaq_lut_kernel kernel;
    const exaq_bcq_matrix *w;
    const float *tables; /* token n at tables + n * table_floats */
    const float *gsum;   /* token n at gsum + n * groups */
    size_t table_floats, tokens;
    float *y;
    ptrdiff_t y_stride;
    pthread_mutex_t lock;
    size_t next_tile;
} lut_job;

static void *run_job(void *arg) {
    lut_job *job = (lut_job *)arg;
    float buf[TILES_PER_STEP * TILE];
    for (;;) {
        pthread_mutex_lock(&job->lock);
        const size_t t = job->next_tile;
        job->next_tile = t < job->w->tiles ? t + TILES_PER_STEP : t;
        pthread_mutex_unlock(&job->lock);
        if (t >= job->w->tiles) break;
        const size_t te = t + TILES_PER_STEP < job->w->tiles ? t + TILES_PER_STEP : job->w->tiles;
        const size_t r0 = t * TILE;
        size_t r1 = te * TILE;
        if (r1 > job->w->rows) r1 = job->w->rows;
        for (size_t n = 0; n < job->tokens; ++n) {
            job->kernel(job->w, job->tables + n * job->table_floats, job->gsum + n * job->w->groups,
                        t, te, buf);
            memcpy(job->y + (ptrdiff_t)n * job->y_stride + r0, buf, (r1 - r0) * sizeof(float));
        }
    }
    return NULL;
}

/* 64-byte aligned block so table rows never straddle more cache lines than needed. */
static void *alloc64(size_t bytes, void **base) {
    *base = malloc(bytes + 64);
    if (!*base) return NULL;
    return (void *)(((uintptr_t)*base + 63) & ~(uintptr_t)63);
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
    if ((size_t)threads > w->tiles) threads = (int)w->tiles;

    void *base = NULL;
    float *mem = (float *)alloc64((block * (tf + w->groups) + kpad) * sizeof(float), &base);
    if (!mem) return -2;
    float *tables = mem, *gsum = mem + block * tf, *xpad = gsum + block * w->groups;

    pthread_t tids[64];
    if (threads > 64) threads = 64;
    if ((size_t)threads > (w->tiles + TILES_PER_STEP - 1) / TILES_PER_STEP)
        threads = (int)((w->tiles + TILES_PER_STEP - 1) / TILES_PER_STEP);
    lut_job job;
    job.kernel = kernel;
    job.w = w;
    job.tables = tables;
    job.gsum = gsum;
    job.table_floats = tf;
    job.y_stride = y_stride;
    if (pthread_mutex_init(&job.lock, NULL) != 0) {
        free(base);
        return -2;
    }
    int rc = 0;
    for (size_t n0 = 0; n0 < tokens; n0 += block) {
        const size_t nb = n0 + block <= tokens ? block : tokens - n0;
        for (size_t n = 0; n < nb; ++n) {
            const float *xr = x + (ptrdiff_t)(n0 + n) * x_stride;
            memcpy(xpad, xr, w->cols * sizeof(float));
            memset(xpad + w->cols, 0, (kpad - w->cols) * sizeof(float));
            float *T = tables + n * tf;
            if (design == EXAQ_LUT_MU8) exaq_lut_build_tables8(xpad, kpad, T);
            else exaq_lut_build_tables4(xpad, kpad, T);
            for (size_t g = 0; g < w->groups; ++g) {
                float s = 0.0f;
                for (size_t j = 0; j < w->group_size; ++j) s += xpad[g * w->group_size + j];
                gsum[n * w->groups + g] = s;
            }
        }
        job.tokens = nb;
        job.y = y + (ptrdiff_t)n0 * y_stride;
        job.next_tile = 0;
        /* helpers on new threads, and this thread works too; a helper that cannot
         * be started only means fewer hands: the result is complete either way */
        int started = 0;
        for (int th = 1; th < threads; ++th) {
            if (pthread_create(&tids[th], NULL, run_job, &job) != 0) break;
            started = th;
        }
        run_job(&job);
        for (int th = 1; th <= started; ++th) pthread_join(tids[th], NULL);
    }
    pthread_mutex_destroy(&job.lock);
    free(base);
    return rc;
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
