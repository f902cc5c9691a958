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
    one_case(0, 10, 8, 2, 1, 1);
    one_case(7, 10, 8, 2, 0, 1);
    one_case(5, 0, 8, 2, 2, 1); /* no columns: y = 0 */
    bad_arguments();
    check_backend_coverage("test_lutgemm", tested);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
