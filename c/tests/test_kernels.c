/* Every backend against scalar, kernel by kernel and through the drivers, on
 * lengths around the vector widths, unaligned pointers, masks and special
 * values.  Rows live at the very end of a heap block, so an overrun is caught
 * by AddressSanitizer.  Run: make -C c/tests (see the Makefile). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../exaq.h"

static int failures;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            ++failures;                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

static uint64_t rng_state = 88172645463325252ull;
static double uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float normal(void) {
    const double u = uniform() + 1e-12, v = uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* a block of exactly `count` floats: reading one past the end is a heap overflow */
static float *tight_floats(size_t count) { return (float *)malloc(count ? count * sizeof(float) : 1); }

static void fill_row(float *x, size_t n, int pattern) {
    for (size_t j = 0; j < n; ++j) {
        x[j] = normal() * 3.0f;
        if (pattern == 1 && uniform() < 0.3) x[j] = -INFINITY;
        if (pattern == 2 && j >= n / 2) x[j] = -INFINITY; /* causal-like suffix */
    }
    if (pattern == 3 && n) x[n / 2] = NAN;
    if (pattern == 4 && n) x[n - 1] = INFINITY;
    if (pattern == 5)
        for (size_t j = 0; j < n; ++j) x[j] = -INFINITY;
    if (pattern == 6)
        for (size_t j = 0; j < n; ++j) x[j] = (j % 3) ? 1e-40f : -1e-40f; /* denormals */
    if (pattern == 7)
        for (size_t j = 0; j < n; ++j) x[j] = (j % 2) ? 3e38f : -3e38f;
}

static int same_float(float a, float b) { return (a != a && b != b) || memcmp(&a, &b, 4) == 0; }
static int same_double(double a, double b) { return (a != a && b != b) || memcmp(&a, &b, 8) == 0; }

static void compare_kernels(const exaq_backend *ref, const exaq_backend *be, const float *x,
                            size_t n) {
    int bad1, bad2;
    const float m1 = ref->softmax->row_max(x, n, &bad1), m2 = be->softmax->row_max(x, n, &bad2);
    CHECK(bad1 == bad2, "%s row_max invalid n=%zu", be->name, n);
    if (!bad1) CHECK(m1 == m2, "%s row_max n=%zu", be->name, n);
    exaq_row_stats a, b;
    const float pilot = n ? (x[0] == -INFINITY ? 0.0f : x[0]) : 0.0f;
    ref->softmax->row_stats(x, n, pilot, &a);
    be->softmax->row_stats(x, n, pilot, &b);
    CHECK(a.unmasked == b.unmasked, "%s row_stats n=%zu", be->name, n);
    CHECK(same_double(a.sum, b.sum) && same_double(a.sumsq, b.sumsq), "%s row_stats sums n=%zu",
          be->name, n);
    if (bad1 || a.unmasked == 0) return;
    CHECK(a.max == b.max && a.min == b.min && a.max == m1, "%s row_stats max/min n=%zu", be->name, n);
    double s1[EXAQ_LANES] = {0}, q1[EXAQ_LANES] = {0}, s2[EXAQ_LANES] = {0}, q2[EXAQ_LANES] = {0};
    ref->softmax->moments(x, n, a.max, s1, q1);
    be->softmax->moments(x, n, a.max, s2, q2);
    CHECK(memcmp(s1, s2, sizeof s1) == 0 && memcmp(q1, q2, sizeof q1) == 0, "%s moments n=%zu",
          be->name, n);
    double d1[EXAQ_LANES] = {0}, d2[EXAQ_LANES] = {0};
    ref->softmax->abs_deviation(x, n, a.max, -2.5, d1);
    be->softmax->abs_deviation(x, n, a.max, -2.5, d2);
    CHECK(memcmp(d1, d2, sizeof d1) == 0, "%s abs_deviation n=%zu", be->name, n);
    for (int bits = 2; bits <= 4; ++bits) {
        exaq_quantizer q = {a.max, -4.0f, 0.0f, 0.0f, (1 << bits) - 1};
        q.scale = (float)q.levels / 4.0f;
        q.offset = 4.0f * q.scale;
        int64_t c1[EXAQ_MAX_CODES] = {0}, c2[EXAQ_MAX_CODES] = {0};
        uint8_t *k1 = malloc(n), *k2 = malloc(n);
        ref->softmax->quantize_count(x, n, &q, k1, c1);
        be->softmax->quantize_count(x, n, &q, k2, c2);
        CHECK(memcmp(c1, c2, sizeof c1) == 0, "%s counts bits=%d n=%zu", be->name, bits, n);
        CHECK(memcmp(k1, k2, n) == 0, "%s codes bits=%d n=%zu", be->name, bits, n);
        int64_t total = 0;
        for (int k = 0; k < EXAQ_MAX_CODES; ++k) total += c1[k];
        CHECK(total == a.unmasked, "%s counts total bits=%d n=%zu", be->name, bits, n);
        float *y1 = tight_floats(n), *y2 = tight_floats(n);
        float table[EXAQ_MAX_CODES];
        for (int k = 0; k < EXAQ_MAX_CODES; ++k) table[k] = 0.5f + (float)k;
        ref->softmax->expand(k1, n, table, y1);
        be->softmax->expand(k1, n, table, y2);
        CHECK(memcmp(y1, y2, n * sizeof(float)) == 0, "%s expand bits=%d n=%zu", be->name, bits, n);
        free(k1), free(k2), free(y1), free(y2);
    }
    float *e1 = tight_floats(n), *e2 = tight_floats(n);
    const double t1 = ref->softmax->exp_store_sum(x, n, a.max, e1);
    const double t2 = be->softmax->exp_store_sum(x, n, a.max, e2);
    CHECK(fabs(t1 - t2) <= 1e-6 * t1, "%s exp sum n=%zu", be->name, n);
    for (size_t j = 0; j < n; ++j)
        CHECK(fabsf(e1[j] - e2[j]) <= 1e-6f * e1[j] + 1e-37f, "%s exp n=%zu j=%zu", be->name, n, j);
    ref->softmax->scale(e1, n, 0.25f);
    be->softmax->scale(e2, n, 0.25f);
    for (size_t j = 0; j < n; ++j)
        CHECK(fabsf(e1[j] - e2[j]) <= 1e-6f * e1[j] + 1e-37f, "%s scale n=%zu j=%zu", be->name, n, j);
    free(e1), free(e2);
}

static void compare_drivers(const exaq_backend *ref, const exaq_backend *be, const float *x,
                            size_t rows, size_t n) {
    const exaq_clip_mode modes[] = {EXAQ_CLIP_GAUSS, EXAQ_CLIP_LAPLACE, EXAQ_CLIP_ROW,
                                    EXAQ_CLIP_NONE, EXAQ_CLIP_STATIC};
    float *y1 = tight_floats(rows * n), *y2 = tight_floats(rows * n);
    float *scratch = tight_floats(rows), *lo1 = tight_floats(rows), *lo2 = tight_floats(rows);
    for (int bits = 2; bits <= 4; ++bits)
        for (int m = 0; m < 5; ++m)
            for (int fl = 0; fl < 2; ++fl) {
                exaq_params p = {bits, modes[m], -1.66, -1.85, -3.0, (exaq_floor_mode)fl};
                CHECK(exaq_softmax_quantized(ref, x, rows, n, n, y1, n, &p, scratch, lo1) == 0, "rc");
                CHECK(exaq_softmax_quantized(be, x, rows, n, n, y2, n, &p, scratch, lo2) == 0, "rc");
                for (size_t i = 0; i < rows * n; ++i)
                    if (!same_float(y1[i], y2[i])) {
                        CHECK(0, "%s softmax bits=%d mode=%d rows=%zu n=%zu i=%zu %g vs %g", be->name,
                              bits, m, rows, n, i, y1[i], y2[i]);
                        break;
                    }
                for (size_t r = 0; r < rows; ++r)
                    CHECK(same_float(lo1[r], lo2[r]), "%s lo row %zu", be->name, r);
            }
    exaq_softmax_exact(ref, x, rows, n, n, y1, n);
    exaq_softmax_exact(be, x, rows, n, n, y2, n);
    for (size_t i = 0; i < rows * n; ++i)
        CHECK(same_float(y1[i], y2[i]) || fabsf(y1[i] - y2[i]) <= 1e-6f * y1[i] + 1e-37f,
              "%s exact i=%zu %g vs %g", be->name, i, y1[i], y2[i]);
    exaq_params bad = {5, EXAQ_CLIP_GAUSS, -1.66, -1.85, -3.0, EXAQ_FLOOR_EXP};
    CHECK(exaq_softmax_quantized(be, x, rows, n, n, y2, n, &bad, scratch, NULL) == -1, "bits=5");
    free(y1), free(y2), free(scratch), free(lo1), free(lo2);
}

int main(void) {
    const exaq_backend *ref = exaq_get_backend(EXAQ_BACKEND_SCALAR);
    int tested = 0;
    static const size_t lengths[] = {0,  1,  2,  3,  4,  5,   7,   8,   9,   15,  16,   17,  31,
                                     32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 1000, 4111};
    for (int id = 0; id < EXAQ_BACKEND_COUNT; ++id) {
        const exaq_backend *be = exaq_get_backend((exaq_backend_id)id);
        if (!be) {
            printf("backend %s: not supported here\n", exaq_backend_name((exaq_backend_id)id));
            continue;
        }
        ++tested;
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; ++li) {
            const size_t n = lengths[li];
            for (int pattern = 0; pattern < 8; ++pattern)
                for (size_t misalign = 0; misalign < 4; ++misalign) {
                    /* the row ends exactly at the end of the allocation */
                    float *block = tight_floats(n + misalign);
                    float *x = block + misalign;
                    fill_row(x, n, pattern);
                    compare_kernels(ref, be, x, n);
                    free(block);
                }
            const size_t rows = 5;
            float *xs = tight_floats(rows * n);
            for (size_t r = 0; r < rows; ++r) fill_row(xs + r * n, n, (int)(r * 3 % 8));
            compare_drivers(ref, be, xs, rows, n);
            free(xs);
        }
        printf("backend %s: checked\n", be->name);
    }
    printf("%d failed checks\n", failures);
    printf("%d passed, %d failed\n", failures ? 0 : tested, failures ? tested : 0);
    return failures ? 1 : 0;
}
