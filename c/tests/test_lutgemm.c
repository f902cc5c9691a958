/* LUT-GEMM: every backend and both table designs against the scalar kernels
 * (bit for bit: same lane order, no FMA) and against a float64 dot product with
 * the dequantized weights; shapes around the tile (16 rows) and byte (8 columns)
 * boundaries, several group sizes, 1..4 bits, strided and unaligned activations,
 * 1 and 2 threads.  Every buffer is allocated to its exact size so an overrun
 * is caught by AddressSanitizer.  Run: make -C c/tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../exaq.h"
#include "check.h"

typedef struct {
    exaq_bcq_matrix w;
    uint8_t *planes;
    float *alphas, *offsets;
} owned_matrix;

static owned_matrix random_matrix(size_t rows, size_t cols, size_t gs, int bits) {
    owned_matrix o;
    o.w.rows = rows;
    o.w.cols = cols;
    o.w.group_size = gs;
    o.w.bits = bits;
    o.w.tiles = (rows + 15) / 16;
    o.w.groups = (cols + gs - 1) / gs;
    const size_t tg = o.w.tiles * o.w.groups;
    const size_t np = tg * (size_t)bits * (gs / 8) * 16, na = tg * (size_t)bits * 16, no = tg * 16;
    o.planes = (uint8_t *)malloc(np ? np : 1);
    o.alphas = (float *)malloc(na ? na * 4 : 1);
    o.offsets = (float *)malloc(no ? no * 4 : 1);
    for (size_t i = 0; i < np; ++i) o.planes[i] = (uint8_t)(next_u64() >> 56);
    for (size_t i = 0; i < na; ++i) o.alphas[i] = (float)(0.05 + uniform());
    for (size_t i = 0; i < no; ++i) o.offsets[i] = 0.2f * normal();
    o.w.planes = o.planes;
    o.w.alphas = o.alphas;
    o.w.offsets = o.offsets;
    return o;
}

static void free_matrix(owned_matrix *o) {
    free(o->planes);
    free(o->alphas);
    free(o->offsets);
}

static int tested[EXAQ_BACKEND_COUNT];

/* Integer-table mode.  Checks, per case:
 *  - the scalar int8 kernel equals an independent evaluation of the same
 *    arithmetic from the ORIGINAL planes layout (int8 tables from the driver's
 *    builder, integer sums recomputed here, combined in float64): catches
 *    packing / permutation / table-order bugs that the kernels would share;
 *  - it is within the documented worst-case bound of the float64 product:
 *    |y - ref| <= sum_g s_g * (group_size / 8) * sum_i |alpha_i| (each of the
 *    group_size / 4 lookups per plane errs by <= s_g / 2) plus float rounding;
 *  - every SIMD backend equals the scalar int8 kernel bit for bit. */
static void int8_case(const exaq_bcq_matrix *w, const float *x, ptrdiff_t xs, size_t tokens,
                      const float *ref, const float *escale, int threads) {
    size_t nc, na, no;
    exaq_bcq_i8_sizes(w, &nc, &na, &no);
    uint8_t *codes = (uint8_t *)malloc(nc ? nc : 1);
    float *alphas = (float *)malloc(na ? na * 4 : 1), *offsets = (float *)malloc(no ? no * 4 : 1);
    exaq_bcq_i8 w8;
    CHECK(exaq_bcq_pack_i8(w, codes, alphas, offsets, &w8) == 0, "pack_i8");
    CHECK(exaq_bcq_i8_check(&w8) == 0, "i8 check");
    const size_t rows = w->rows, cols = w->cols, yn = tokens * rows;
    float *ys = (float *)malloc(yn * 4 + 4), *y = (float *)malloc(yn * 4 + 4);
    CHECK(exaq_lutgemm_i8(&exaq_lutgemm_scalar, &w8, x, tokens, xs, ys, (ptrdiff_t)rows, 1) == 0,
          "scalar i8 call");
    const size_t gs = w->group_size, gb = gs / 8, kpad = w->groups * gs, bits = (size_t)w->bits;
    float *xpad = (float *)malloc(kpad * 4), *sc = (float *)malloc(w->groups * 4);
    int8_t *Q = (int8_t *)malloc(kpad * 4);
    for (size_t n = 0; n < tokens && rows; ++n) {
        memset(xpad, 0, kpad * 4);
        memcpy(xpad, x + n * xs, cols * 4);
        exaq_lut_build_tables_i8(xpad, kpad, gs, Q, sc);
        for (size_t m = 0; m < rows; ++m) {
            const size_t t = m / 16, r = m % 16;
            double yy = 0.0, bound = 0.0;
            for (size_t g = 0; g < w->groups; ++g) {
                const size_t tg = t * w->groups + g;
                double gsum = 0.0, asum = 0.0;
                for (size_t k = 0; k < gs; ++k) gsum += xpad[g * gs + k];
                for (size_t i = 0; i < bits; ++i) {
                    long isum = 0;
                    for (size_t j = 0; j < gb; ++j) {
                        const unsigned b = w->planes[(tg * bits * gb + i * gb + j) * 16 + r];
                        isum += Q[(g * gb + j) * 32 + (b & 15u)] + Q[(g * gb + j) * 32 + 16 + (b >> 4)];
                    }
                    const double a = w->alphas[(tg * bits + i) * 16 + r];
                    yy += (double)sc[g] * a * (double)isum;
                    asum += fabs(a);
                }
                yy += (double)w->offsets[tg * 16 + r] * gsum;
                bound += (double)sc[g] * (double)gb * asum;
            }
            const double got = ys[n * rows + m], tol = 1e-5 * (escale[n * rows + m] + 1e-3);
            CHECK(fabs(got - yy) <= tol,
                  "scalar i8 vs independent int8 evaluation: rows %zu cols %zu gs %zu bits %d row %zu: %g vs %g",
                  rows, cols, gs, w->bits, m, got, yy);
            CHECK(fabs(got - ref[n * rows + m]) <= 1.0001 * bound + tol,
                  "scalar i8 vs float64 beyond the bound: rows %zu cols %zu bits %d row %zu: %g vs %g (bound %g)",
                  rows, cols, w->bits, m, got, ref[n * rows + m], bound);
        }
    }
    for (int id = 1; id < EXAQ_BACKEND_COUNT; ++id) {
        const exaq_backend *be = exaq_get_backend((exaq_backend_id)id);
        /* a backend without its own int8 kernel runs the scalar one (gemv_i8 NULL) */
        if (!be || !be->lutgemm || be->lutgemm == &exaq_lutgemm_scalar) continue;
        memset(y, 0xFF, yn * 4);
        CHECK(exaq_lutgemm_i8(be->lutgemm, &w8, x, tokens, xs, y, (ptrdiff_t)rows, threads) == 0,
              "%s i8 call", be->name);
        for (size_t i = 0; i < yn; ++i)
            CHECK(memcmp(&y[i], &ys[i], 4) == 0,
                  "%s i8 != scalar: rows %zu cols %zu gs %zu bits %d threads %d at %zu: %.9g vs %.9g",
                  be->name, rows, cols, gs, w->bits, threads, i, y[i], ys[i]);
    }
    free(xpad);
    free(sc);
    free(Q);
    free(ys);
    free(y);
    free(codes);
    free(alphas);
    free(offsets);
}

static void one_case(size_t rows, size_t cols, size_t gs, int bits, size_t tokens, int threads) {
    owned_matrix o = random_matrix(rows, cols, gs, bits);
    const exaq_bcq_matrix *w = &o.w;
    /* activations: row stride cols + 3, and the block starts one float in, so
     * rows are unaligned; the last row ends exactly at the end of the block */
    const ptrdiff_t xs = (ptrdiff_t)cols + 3;
    const size_t xn = 1 + (tokens ? (tokens - 1) * (size_t)xs + cols : 0);
    float *xb = (float *)malloc(xn * 4 + 4), *x = xb + 1;
    for (size_t i = 0; i < xn; ++i) xb[i + 1] = normal();
    float *wd = (float *)malloc(rows * cols * 4 + 4);
    CHECK(exaq_bcq_dequantize(w, wd, (ptrdiff_t)cols) == 0, "dequantize");
    const size_t yn = tokens * rows;
    float *ref = (float *)malloc(yn * 4 + 4), *yref = (float *)malloc(yn * 4 + 4);
    float *y = (float *)malloc(yn * 4 + 4);
    for (size_t n = 0; n < tokens; ++n)
        for (size_t m = 0; m < rows; ++m) {
            double s = 0.0, a = 0.0;
            for (size_t k = 0; k < cols; ++k) {
                s += (double)x[n * xs + k] * wd[m * cols + k];
                /* the kernels sum alpha_i * (sum +-x) and offset * (sum x) separately,
                 * so the error scales with the alphas and offset, not with |w| */
                a += fabs((double)x[n * xs + k]) * (1.1 * bits + 1.0);
            }
            ref[n * rows + m] = (float)s;
            yref[n * rows + m] = (float)a; /* error scale */
        }
    const exaq_lut_design designs[2] = {EXAQ_LUT_MU4, EXAQ_LUT_MU8};
    for (int d = 0; d < 2; ++d) {
        float *ys = (float *)malloc(yn * 4 + 4);
        CHECK(exaq_lutgemm(&exaq_lutgemm_scalar, designs[d], w, x, tokens, xs, ys, (ptrdiff_t)rows, 1) == 0,
              "scalar call");
        for (size_t i = 0; i < yn; ++i)
            CHECK(fabs((double)ys[i] - ref[i]) <= 1e-5 * (yref[i] + 1e-3),
                  "scalar mu%d vs float64: rows %zu cols %zu gs %zu bits %d: %g vs %g", (int)designs[d],
                  rows, cols, gs, bits, ys[i], ref[i]);
        for (int id = 1; id < EXAQ_BACKEND_COUNT; ++id) {
            const exaq_backend *be = exaq_get_backend((exaq_backend_id)id);
            if (!be || !be->lutgemm) continue;
            if (be->lutgemm == &exaq_lutgemm_scalar) { /* scalar against scalar tests nothing */
                CHECK(0, "backend %s: its LUT-GEMM kernels are the scalar ones", be->name);
                continue;
            }
            tested[id] = 1;
            memset(y, 0xFF, yn * 4);
            CHECK(exaq_lutgemm(be->lutgemm, designs[d], w, x, tokens, xs, y, (ptrdiff_t)rows, threads) == 0,
                  "%s call", be->name);
            for (size_t i = 0; i < yn; ++i)
                CHECK(memcmp(&y[i], &ys[i], 4) == 0,
                      "%s mu%d != scalar: rows %zu cols %zu gs %zu bits %d threads %d at %zu: %.9g vs %.9g",
                      be->name, (int)designs[d], rows, cols, gs, bits, threads, i, y[i], ys[i]);
        }
        free(ys);
    }
    int8_case(w, x, xs, tokens, ref, yref, threads);
    free(xb);
    free(wd);
    free(ref);
    free(yref);
    free(y);
    free_matrix(&o);
}

static void bad_arguments(void) {
    owned_matrix o = random_matrix(5, 20, 8, 2);
    float x[20] = {0}, y[5];
    exaq_bcq_matrix w = o.w;
    CHECK(exaq_lutgemm(&exaq_lutgemm_scalar, EXAQ_LUT_MU4, &w, x, 1, 20, y, 5, 0) == -1, "threads 0");
    CHECK(exaq_lutgemm(&exaq_lutgemm_scalar, (exaq_lut_design)5, &w, x, 1, 20, y, 5, 1) == -1, "design");
    w.bits = 5;
    CHECK(exaq_bcq_check(&w) == -1, "bits 5");
    w = o.w;
    w.group_size = 12;
    CHECK(exaq_bcq_check(&w) == -1, "group 12");
    w = o.w;
    w.tiles = 2;
    CHECK(exaq_bcq_check(&w) == -1, "tiles");
    free_matrix(&o);
}

int main(void) {
    const size_t rows_list[] = {1, 15, 16, 17, 40};
    const size_t cols_list[] = {1, 7, 8, 9, 64, 130};
    const size_t gs_list[] = {8, 16, 64, 0}; /* 0: one group per row (rounded up to 8) */
    for (size_t a = 0; a < sizeof rows_list / sizeof *rows_list; ++a)
        for (size_t b = 0; b < sizeof cols_list / sizeof *cols_list; ++b)
            for (size_t c = 0; c < sizeof gs_list / sizeof *gs_list; ++c)
                for (int bits = 1; bits <= 4; ++bits) {
                    const size_t cols = cols_list[b];
                    const size_t gs = gs_list[c] ? gs_list[c] : (cols + 7) / 8 * 8;
                    one_case(rows_list[a], cols, gs, bits, 1 + (a + b + bits) % 3, 1 + (int)((a + c) % 2));
                }
    one_case(300, 520, 128, 3, 2, 2); /* several steps of tiles per worker */
    one_case(130, 2100, 2096, 4, 1, 1); /* int8: a group past EXAQ_LUT8_CHUNK byte columns */
    one_case(64, 64, 32, 2, 3, 2);      /* int8: exactly one 64-row tile */
    one_case(0, 10, 8, 2, 1, 1);
    one_case(7, 10, 8, 2, 0, 1);
    one_case(5, 0, 8, 2, 2, 1); /* no columns: y = 0 */
    bad_arguments();
    check_backend_coverage("test_lutgemm", tested);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
