/* Every backend against scalar, kernel by kernel and through the drivers, on
 * lengths around the vector widths, unaligned pointers, masks and special
 * values.  Rows live at the very end of a heap block, so an overrun is caught
 * by AddressSanitizer.  Run: make -C c/tests (see the Makefile). */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../exaq.h"
#include "check.h"

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

/* row_stats' masked_from: at most n, and only -inf from there on */
static int masked_from_valid(const float *x, size_t n, size_t masked_from) {
    if (masked_from > n) return 0;
    for (size_t j = masked_from; j < n; ++j)
        if (x[j] != -INFINITY) return 0;
    return 1;
}

/* Rows of `live` values then -inf (causal, padding), every live length:
 * statistics as scalar's, and the AVX2 pass stops at the first 64-entry
 * chunk past the live part that it can check (in rows of 256 entries or
 * more; it does not look before its first 32 masked entries in a row, nor
 * past the first 1024-entry block's last whole chunk). */
static void compare_masked_tails(const exaq_backend *ref, const exaq_backend *be) {
    static const size_t lengths[] = {64, 65, 127, 128, 130, 200, 256, 511, 512, 1024, 1500, 2100};
    for (size_t li = 0; li < sizeof lengths / sizeof *lengths; ++li) {
        const size_t n = lengths[li];
        float *x = tight_floats(n);
        for (size_t live = 0; live <= n; live += live < 140 ? 1 : 37) {
          for (int gap = 0; gap < 3; ++gap) {
            fill_row(x, n, 0);
            for (size_t j = live; j < n; ++j) x[j] = -INFINITY;
            if (live > 3) x[live / 3] = -INFINITY; /* a -inf inside the live part too */
            /* a run of -inf before live entries (left padding, a gap): no tail
             * there, and the tail past them is still found */
            const size_t run = gap == 1 ? 40 + live % 90 : gap == 2 ? 100 : 0, start = gap == 1 ? 0 : live / 4;
            for (size_t j = start; j < start + run && j + 1 < live; ++j) x[j] = -INFINITY;
            for (int flags = 0; flags <= EXAQ_STATS_MIN; flags += EXAQ_STATS_MIN) {
                exaq_row_stats a, b;
                ref->softmax->row_stats(x, n, 0.0f, flags, &a);
                be->softmax->row_stats(x, n, 0.0f, flags, &b);
                CHECK(a.unmasked == b.unmasked && same_double(a.sum, b.sum) && same_double(a.sumsq, b.sumsq) &&
                          same_float(a.max, b.max) && same_float(a.min, b.min),
                      "%s masked tail n=%zu live=%zu", be->name, n, live);
                CHECK(masked_from_valid(x, n, b.masked_from), "%s masked_from n=%zu live=%zu", be->name, n, live);
                const size_t chunk = (live + 63) / 64 * 64, whole = (n < 1024 ? n : 1024) / 64 * 64;
                if (strcmp(be->name, "avx2") == 0 && n >= 256 && live > 0 && chunk + 64 <= whole &&
                    (gap == 0 || chunk > 300))
                    CHECK(b.masked_from == chunk, "avx2 stops at %zu, not %zu (n=%zu live=%zu)", b.masked_from,
                          chunk, n, live);
            }
          }
        }
        free(x);
    }
}

static void compare_kernels(const exaq_backend *ref, const exaq_backend *be, const float *x,
                            size_t n) {
    int bad1, bad2, expected = 0;
    const float m1 = ref->softmax->row_max(x, n, &bad1), m2 = be->softmax->row_max(x, n, &bad2);
    for (size_t j = 0; j < n; ++j)
        expected |= (x[j] != x[j] || x[j] == INFINITY) ? EXAQ_ROW_HAS_INVALID : x[j] == -INFINITY ? EXAQ_ROW_HAS_MASKED : 0;
    if (expected & EXAQ_ROW_HAS_INVALID) expected = EXAQ_ROW_HAS_INVALID; /* a -inf is not reported then */
    CHECK(bad1 == expected && bad2 == expected, "%s row_max specials %d %d (expected %d) n=%zu", be->name, bad1,
          bad2, expected, n);
    if (!(bad1 & EXAQ_ROW_HAS_INVALID)) CHECK(m1 == m2, "%s row_max n=%zu", be->name, n);
    size_t live = n;
    while (live > 0 && x[live - 1] == -INFINITY) --live;
    CHECK(ref->softmax->live_end(x, n) == live, "scalar live_end n=%zu", n);
    if (be->softmax->live_end)
        CHECK(be->softmax->live_end(x, n) == live, "%s live_end n=%zu: %zu vs %zu", be->name, n,
              be->softmax->live_end(x, n), live);
    exaq_row_stats a, b;
    const float pilot = n ? (x[0] == -INFINITY ? 0.0f : x[0]) : 0.0f;
    for (int k = 0; k < 8; ++k) { /* zero/non-zero pilot, min, mask test; ends with min + mask */
        const int variant = (k + 4) % 8;
        const float p = variant & 1 ? pilot : 0.0f;
        const int flags = variant >> 1, with_min = flags & EXAQ_STATS_MIN;
        ref->softmax->row_stats(x, n, p, flags, &a);
        be->softmax->row_stats(x, n, p, flags, &b);
        CHECK(a.unmasked == b.unmasked, "%s row_stats n=%zu", be->name, n);
        CHECK(same_double(a.sum, b.sum) && same_double(a.sumsq, b.sumsq), "%s row_stats sums n=%zu v=%d",
              be->name, n, variant);
        if (!with_min) CHECK(a.min != a.min && b.min != b.min, "%s row_stats no min n=%zu", be->name, n);
        CHECK(masked_from_valid(x, n, b.masked_from) && masked_from_valid(x, n, a.masked_from),
              "%s row_stats masked_from %zu n=%zu", be->name, b.masked_from, n);
        if (flags & EXAQ_STATS_NO_MASK) {
            CHECK(a.unmasked == (int64_t)n, "no-mask count n=%zu", n);
            continue;
        }
        if (!bad1 && a.unmasked)
            CHECK(a.max == b.max && a.max == m1 && same_float(a.min, b.min), "%s row_stats max/min n=%zu",
                  be->name, n);
    }
    if ((bad1 & EXAQ_ROW_HAS_INVALID) || a.unmasked == 0) return; /* rows with -inf are tested too */
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
    for (int form = 0; form < 6; ++form) {
        const int bits = 2 + form % 3;
        exaq_quantizer q;
        exaq_quantizer_init(&q, a.max, -4.0f, (1 << bits) - 1, 1);
        if (form >= 3) q.sub = q.shift, q.add = q.offset; /* the unfolded form of large shifts */
        int64_t c1[EXAQ_MAX_CODES] = {0}, c2[EXAQ_MAX_CODES] = {0};
        uint8_t *k1 = malloc(n), *k2 = malloc(n);
        ref->softmax->quantize_count(x, n, &q, k1, c1);
        be->softmax->quantize_count(x, n, &q, k2, c2);
        CHECK(memcmp(c1, c2, sizeof c1) == 0, "%s counts bits=%d n=%zu", be->name, bits, n);
        CHECK(memcmp(k1, k2, n) == 0, "%s codes bits=%d n=%zu", be->name, bits, n);
        int64_t total = 0;
        for (int k = 0; k < EXAQ_MAX_CODES; ++k) total += c1[k];
        CHECK(total == a.unmasked, "%s counts total bits=%d n=%zu", be->name, bits, n);
        if (a.unmasked == (int64_t)n) { /* no -inf: the kernels may skip the mask test */
            int64_t c3[EXAQ_MAX_CODES] = {0};
            q.may_mask = 0;
            memset(k2, 0xEE, n);
            be->softmax->quantize_count(x, n, &q, k2, c3);
            CHECK(memcmp(c1, c3, sizeof c1) == 0 && memcmp(k1, k2, n) == 0, "%s unmasked fast path bits=%d n=%zu",
                  be->name, bits, n);
        }
        float *y1 = tight_floats(n), *y2 = tight_floats(n);
        float table[EXAQ_MAX_CODES];
        for (int k = 0; k < EXAQ_MAX_CODES; ++k) table[k] = 0.5f + (float)k;
        ref->softmax->expand(k1, n, table, y1);
        be->softmax->expand(k1, n, table, y2);
        CHECK(memcmp(y1, y2, n * sizeof(float)) == 0, "%s expand bits=%d n=%zu", be->name, bits, n);
        free(k1), free(k2), free(y1), free(y2);
    }
    for (int may_mask = 0; may_mask < 2; ++may_mask) { /* 2-bit codes straight to the packed format */
        if (!may_mask && a.unmasked != (int64_t)n) continue;
        exaq_quantizer q;
        exaq_quantizer_init(&q, a.max, -2.5f, 3, may_mask);
        const size_t nb = EXAQ_PACKED_BYTES(n, 2), mb = EXAQ_MASK_BYTES(n);
        uint8_t *codes = malloc(n + 1), *p0 = malloc(nb + 1), *m0 = malloc(mb + 1);
        uint8_t *p1 = malloc(nb + 1), *p2 = malloc(nb + 1), *m1 = malloc(mb + 1), *m2 = malloc(mb + 1);
        /* every byte must be written; the bitmap only with may_mask */
        memset(p2, 0xAB, nb), memset(m1, 0xCD, mb), memset(m2, 0xCD, mb);
        int64_t c0[EXAQ_MAX_CODES] = {0}, c1[4] = {0}, c2[4] = {0};
        ref->softmax->quantize_count(x, n, &q, codes, c0);
        ref->softmax->packed->pack(codes, n, 2, p0, m0);
        const size_t masked1 = ref->softmax->quantize_pack2(x, n, &q, p1, m1, c1);
        const size_t masked2 = be->softmax->quantize_pack2(x, n, &q, p2, m2, c2);
        CHECK(memcmp(p0, p1, nb) == 0 && memcmp(c0, c1, sizeof c1) == 0,
              "scalar pack2 vs quantize_count + pack n=%zu", n);
        CHECK(masked1 == masked2 && memcmp(c1, c2, sizeof c1) == 0, "%s pack2 counts n=%zu", be->name, n);
        CHECK(memcmp(p1, p2, nb) == 0 && memcmp(m1, m2, mb) == 0, "%s pack2 codes n=%zu", be->name, n);
        if (may_mask) {
            CHECK(memcmp(m0, m1, mb) == 0, "scalar pack2 bitmap vs pack n=%zu", n);
        } else {
            for (size_t b = 0; b < mb; ++b) CHECK(m2[b] == 0xCD, "%s pack2 wrote the bitmap without may_mask n=%zu", be->name, n);
            if (mb) memset(m1, 0, mb); /* the bitmap of a row without -inf, for expand_pack2 below */
        }
        CHECK(masked1 == n - (size_t)a.unmasked, "pack2 masked count n=%zu", n);
        const float table[4] = {0.125f, 0.25f, 0.5f, 1.0f};
        for (int with_mask = 0; with_mask < 2; ++with_mask) {
            float *y0 = tight_floats(n), *y1 = tight_floats(n), *y2 = tight_floats(n);
            float table16[EXAQ_MAX_CODES] = {0};
            memcpy(table16, table, sizeof table);
            ref->softmax->expand(codes, n, table16, y0);
            ref->softmax->expand_pack2(p1, with_mask ? m1 : NULL, n, table, y1);
            be->softmax->expand_pack2(p1, with_mask ? m1 : NULL, n, table, y2);
            CHECK(memcmp(y1, y2, n * sizeof(float)) == 0, "%s expand_pack2 n=%zu", be->name, n);
            for (size_t j = 0; j < n; ++j)
                CHECK(y1[j] == (with_mask || codes[j] != EXAQ_MASKED_CODE ? y0[j] : table[0]),
                      "expand_pack2 vs expand n=%zu j=%zu", n, j);
            free(y0), free(y1), free(y2);
        }
        free(codes), free(p0), free(m0), free(p1), free(p2), free(m1), free(m2);
    }
    float *e1 = tight_floats(n), *e2 = tight_floats(n);
    const double t1 = ref->softmax->exp_store_sum(x, n, a.max, e1);
    const double t2 = be->softmax->exp_store_sum(x, n, a.max, e2);
    CHECK(fabs(t1 - t2) <= 1e-6 * t1, "%s exp sum n=%zu", be->name, n);
    for (size_t j = 0; j < n; ++j)
        CHECK(fabsf(e1[j] - e2[j]) <= 1e-6f * e1[j] + 1e-37f, "%s exp n=%zu j=%zu", be->name, n, j);
    if (be == exaq_get_backend(EXAQ_BACKEND_NEON)) /* NEON evaluates scalar's exp to the bit */
        CHECK(same_double(t1, t2) && memcmp(e1, e2, n * sizeof(float)) == 0, "%s exp bit-exact n=%zu", be->name, n);
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
                exaq_params p = {bits, modes[m], -1.66, -1.85, -3.0, (exaq_floor_mode)fl, 1};
                /* the backend's run on one thread or on the pool: neither may change a bit */
                exaq_params p_be = p;
                p_be.threads = 1 + (bits + m + fl) % 3;
                /* poisoned (NaN) first: every output entry must be written, masked runs included */
                memset(y2, 0xFF, rows * n * sizeof *y2);
                CHECK(exaq_softmax_quantized(ref, x, rows, n, n, y1, n, &p, scratch, lo1) == 0, "rc");
                CHECK(exaq_softmax_quantized(be, x, rows, n, n, y2, n, &p_be, scratch, lo2) == 0, "rc");
                for (size_t i = 0; i < rows * n; ++i)
                    if (!same_float(y1[i], y2[i])) {
                        CHECK(0, "%s softmax bits=%d mode=%d rows=%zu n=%zu i=%zu %g vs %g", be->name,
                              bits, m, rows, n, i, y1[i], y2[i]);
                        break;
                    }
                for (size_t r = 0; r < rows; ++r)
                    CHECK(same_float(lo1[r], lo2[r]), "%s lo row %zu", be->name, r);
            }
    exaq_softmax_exact(ref, x, rows, n, n, y1, n, 1);
    exaq_softmax_exact(be, x, rows, n, n, y2, n, 2);
    for (size_t i = 0; i < rows * n; ++i)
        CHECK(same_float(y1[i], y2[i]) || fabsf(y1[i] - y2[i]) <= 1e-6f * y1[i] + 1e-37f,
              "%s exact i=%zu %g vs %g", be->name, i, y1[i], y2[i]);
    exaq_params bad = {5, EXAQ_CLIP_GAUSS, -1.66, -1.85, -3.0, EXAQ_FLOOR_EXP, 1};
    CHECK(exaq_softmax_quantized(be, x, rows, n, n, y2, n, &bad, scratch, NULL) == -1, "bits=5");
    free(y1), free(y2), free(scratch), free(lo1), free(lo2);
}

/* ---- packed codes ---- */

static uint8_t *tight_bytes(size_t count) { return (uint8_t *)malloc(count ? count : 1); }

/* the format of docs/packed.md, written out bit by bit */
static unsigned naive_code_at(const uint8_t *packed, size_t j, int bits) {
    unsigned v = 0;
    for (int b = 0; b < bits; ++b) {
        const size_t bit = j * (size_t)bits + (size_t)b;
        v |= (unsigned)((packed[bit / 8] >> (bit % 8)) & 1) << b;
    }
    return v;
}

static void compare_packed(const exaq_backend *ref, const exaq_backend *be, size_t n, int pattern) {
    const exaq_packed_kernels *pr = ref->softmax->packed, *pb = be->softmax->packed;
    for (int bits = 2; bits <= 4; ++bits) {
        const size_t nb = EXAQ_PACKED_BYTES(n, bits), mb = EXAQ_MASK_BYTES(n);
        uint8_t *codes = tight_bytes(n), *back = tight_bytes(n);
        for (size_t j = 0; j < n; ++j) {
            codes[j] = (uint8_t)(uniform() * (1 << bits));
            if ((pattern == 1 && uniform() < 0.3) || (pattern == 2 && j >= n / 2)) codes[j] = EXAQ_MASKED_CODE;
        }
        uint8_t *p1 = tight_bytes(nb), *p2 = tight_bytes(nb), *m1 = tight_bytes(mb), *m2 = tight_bytes(mb);
        memset(p2, 0xAB, nb), memset(m2, 0xCD, mb); /* garbage: every byte must be written */
        pr->pack(codes, n, bits, p1, m1);
        pb->pack(codes, n, bits, p2, m2);
        CHECK(memcmp(p1, p2, nb) == 0, "%s pack bits=%d n=%zu", be->name, bits, n);
        CHECK(memcmp(m1, m2, mb) == 0, "%s maskbits bits=%d n=%zu", be->name, bits, n);
        for (size_t j = 0; j < n; ++j) {
            const int masked = codes[j] == EXAQ_MASKED_CODE;
            CHECK(naive_code_at(p1, j, bits) == (masked ? 0u : codes[j]), "pack format bits=%d j=%zu", bits, j);
            CHECK(((m1[j / 8] >> (j % 8)) & 1) == masked, "mask format j=%zu", j);
        }
        for (size_t bit = n * (size_t)bits; bit < 8 * nb; ++bit) /* padding bits are 0 */
            CHECK(!((p1[bit / 8] >> (bit % 8)) & 1), "padding bits=%d n=%zu", bits, n);
        for (size_t j = n; j < 8 * mb; ++j) CHECK(!((m1[j / 8] >> (j % 8)) & 1), "mask padding n=%zu", n);
        pb->pack(codes, n, bits, p2, NULL); /* no bitmap wanted */
        CHECK(memcmp(p1, p2, nb) == 0, "%s pack without mask bits=%d n=%zu", be->name, bits, n);
        memset(back, 0xEE, n);
        pb->unpack(p1, n, bits, back);
        for (size_t j = 0; j < n; ++j)
            CHECK(back[j] == (codes[j] == EXAQ_MASKED_CODE ? 0 : codes[j]), "%s unpack bits=%d n=%zu j=%zu",
                  be->name, bits, n, j);
        float lut[EXAQ_MAX_CODES];
        for (int k = 0; k < EXAQ_MAX_CODES; ++k) lut[k] = k < (1 << bits) ? (float)exp(-0.7 * k) + 0.01f * (float)k : 1e30f;
        double exact = 0.0;
        for (size_t j = 0; j < n; ++j) exact += lut[naive_code_at(p1, j, bits)];
        const double rtol = 6e-8 * (double)(n + 16); /* float lanes: n roundings at most */
        const double s_ref = pr->lutsum(p1, n, bits, lut), s_be = pb->lutsum(p1, n, bits, lut);
        CHECK(fabs(s_ref - exact) <= rtol * exact + 1e-30, "scalar lutsum bits=%d n=%zu %g vs %g", bits, n, s_ref, exact);
        CHECK(fabs(s_be - exact) <= rtol * exact + 1e-30, "%s lutsum bits=%d n=%zu %g vs %g", be->name, bits, n, s_be, exact);
        double rows_sum[2];
        const int64_t lengths[2] = {(int64_t)n, (int64_t)(n / 3)};
        exaq_lutsum_table_rows(p1, 2, 0, n, lengths, bits, lut, rows_sum);
        double exact3 = 0.0;
        for (size_t j = 0; j < n / 3; ++j) exact3 += lut[naive_code_at(p1, j, bits)];
        CHECK(fabs(rows_sum[0] - exact) <= rtol * exact && fabs(rows_sum[1] - exact3) <= rtol * exact3 + 1e-30,
              "table lutsum bits=%d n=%zu", bits, n);
        /* the counting LUTsum: integer counts, one double sum, exact to float64 rounding */
        double counted[2] = {-1, -1};
        CHECK(exaq_lutsum_count_rows(p1, 2, 0, n, lengths, bits, lut, 0, counted) == 0, "count lutsum rc");
        CHECK(fabs(counted[0] - exact) <= 1e-13 * exact + 1e-30 && fabs(counted[1] - exact3) <= 1e-13 * exact3 + 1e-30,
              "count lutsum bits=%d n=%zu %.17g vs %.17g", bits, n, counted[0], exact);
        /* the entries check their own arguments: bits outside 2..4 would index past the tables */
        for (int bad = 0; bad < 4; ++bad) {
            const int bad_bits = bad == 0 ? 1 : bad == 1 ? 5 : bad == 2 ? 8 : -3;
            double untouched[2] = {7, 7};
            CHECK(exaq_lutsum_table_rows(p1, 2, 0, n, lengths, bad_bits, lut, untouched) == -1 &&
                      exaq_lutsum_count_rows(p1, 2, 0, n, lengths, bad_bits, lut, 0, untouched) == -1 &&
                      untouched[0] == 7 && untouched[1] == 7,
                  "lutsum entries refuse bits=%d", bad_bits);
        }
        CHECK(exaq_lutsum_table_rows(p1, 2, 0, n, lengths, bits, lut, NULL) == -1, "lutsum NULL sums");
        /* the row loops too: a bad width, a missing buffer, overlapping output rows */
        {
            double untouched[2] = {7, 7};
            uint8_t out_rows[64];
            memset(out_rows, 0xAB, sizeof out_rows);
            CHECK(exaq_lutsum_rows(be, p1, 2, 0, n, lengths, 5, lut, 0, untouched) == -1 && untouched[0] == 7,
                  "lutsum_rows refuses bits=5");
            CHECK(exaq_lutsum_rows(be, p1, 2, 0, n, lengths, bits, lut, 0, NULL) == -1, "lutsum_rows NULL sums");
            CHECK(exaq_pack_rows(be, back, 2, n, 0, 9, out_rows, 64, NULL, 0) == -1 && out_rows[0] == 0xAB,
                  "pack_rows refuses bits=9");
            CHECK(n < 8 || exaq_pack_rows(be, back, 2, n, 0, bits, out_rows, 1, NULL, 0) == -1,
                  "pack_rows refuses overlapping output rows");
            CHECK(exaq_unpack_rows(be, p1, 2, n, 0, 0, out_rows, 64) == -1 && out_rows[0] == 0xAB,
                  "unpack_rows refuses bits=0");
            CHECK(n == 0 || exaq_unpack_rows(be, p1, 2, n, 0, bits, NULL, (ptrdiff_t)n) == -1,
                  "unpack_rows refuses NULL codes");
        }
        const double e_be = pb->lutexp_sum(back, n, lut), e_ref = pr->lutexp_sum(back, n, lut);
        CHECK(fabs(e_be - exact) <= rtol * exact + 1e-30 && fabs(e_ref - exact) <= rtol * exact + 1e-30,
              "%s lutexp_sum bits=%d n=%zu", be->name, bits, n);
        free(codes), free(back), free(p1), free(p2), free(m1), free(m2);
    }
}

/* 2-bit codes of the fused packed path equal the byte-code path's, with the
 * same tables, in every range mode */
static void compare_pack2_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                                       double static_range) {
    const exaq_clip_mode modes[] = {EXAQ_CLIP_GAUSS, EXAQ_CLIP_LAPLACE, EXAQ_CLIP_ROW,
                                    EXAQ_CLIP_NONE, EXAQ_CLIP_STATIC};
    const size_t nb = EXAQ_PACKED_BYTES(n, 2), mb = EXAQ_MASK_BYTES(n);
    float *scratch = tight_floats(rows), *t1 = tight_floats(rows * 4), *t2 = tight_floats(rows * 4);
    uint8_t *codes = tight_bytes(rows * n), *pk = tight_bytes(rows * nb), *mk = tight_bytes(rows * mb);
    int64_t *len = (int64_t *)malloc(rows * sizeof(int64_t) + 1), interior;
    for (int m = 0; m < 5; ++m)
        for (int fl = 0; fl < 2; ++fl) {
            const double static_lo = m == 4 && fl ? -1e-30 : static_range; /* also a range of a few ulps */
            exaq_params p = {2, modes[m], -1.66, -1.85, static_lo, (exaq_floor_mode)fl, 1 + fl};
            CHECK(exaq_quantize_codes(be, x, rows, n, n, codes, n, &p, scratch, NULL, t1) == 0, "rc");
            CHECK(exaq_softmax_packed(be, x, rows, n, n, &p, scratch, NULL, pk, nb, t2, len, mk, mb, &interior) == 0,
                  "rc");
            for (size_t i = 0; i < rows * 4; ++i) CHECK(same_float(t1[i], t2[i]), "%s pack2 tables mode=%d", be->name, m);
            for (size_t r = 0; r < rows; ++r)
                for (size_t j = 0; j < n; ++j)
                    if (codes[r * n + j] != naive_code_at(pk + r * nb, j, 2)) {
                        CHECK(0, "%s pack2 codes mode=%d floor=%d n=%zu r=%zu j=%zu: %d vs %u", be->name, m, fl,
                              n, r, j, codes[r * n + j], naive_code_at(pk + r * nb, j, 2));
                        break;
                    }
        }
    free(scratch), free(t1), free(t2), free(codes), free(pk), free(mk), free(len);
}

/* Rows whose entries sit a few ulps around the rounding boundaries of a static
 * range [lo, 0] (t = (k - 1/2) * lo / 3 for 2 bits), where two ways of
 * computing the codes are most likely to disagree. */
static void compare_pack2_boundaries(const exaq_backend *be) {
    static const float shifts[] = {0.0f, 1.7f, -3.3f, 1000.5f, 1e-3f, -250.25f};
    static const double ranges[] = {-3.0, -2.9, -0.37, -7.1};
    const size_t rows = 6, n = 3 * 9 + 1;
    float *x = tight_floats(rows * n);
    for (size_t ri = 0; ri < sizeof ranges / sizeof *ranges; ++ri) {
        for (size_t r = 0; r < rows; ++r) {
            float *row = x + r * n;
            row[0] = shifts[r];
            for (int k = 1; k <= 3; ++k)
                for (int u = -4; u <= 4; ++u) {
                    float v = shifts[r] + (float)((k - 0.5) * -ranges[ri] / 3.0) + (float)ranges[ri];
                    for (int step = 0; step < (u < 0 ? -u : u); ++step) v = nextafterf(v, u < 0 ? -INFINITY : INFINITY);
                    row[1 + (size_t)(k - 1) * 9 + (size_t)(u + 4)] = v > shifts[r] ? shifts[r] : v;
                }
        }
        compare_pack2_codes(be, x, rows, n, ranges[ri]);
    }
    free(x);
}

/* the fused packed softmax against the float softmax and across backends */
static void compare_packed_driver(const exaq_backend *ref, const exaq_backend *be, const float *x,
                                  size_t rows, size_t n) {
    float *scratch = tight_floats(rows), *y = tight_floats(rows * n);
    for (int bits = 2; bits <= 4; ++bits) {
        exaq_params p = {bits, EXAQ_CLIP_GAUSS, -1.66, -1.85, -3.0, EXAQ_FLOOR_EXP, 1};
        const size_t nb = EXAQ_PACKED_BYTES(n, bits), mb = EXAQ_MASK_BYTES(n), nc = (size_t)1 << bits;
        uint8_t *pk[2], *mk[2];
        float *tb[2];
        int64_t *len[2], interior[2];
        const exaq_backend *bes[2] = {ref, be};
        for (int i = 0; i < 2; ++i) {
            pk[i] = tight_bytes(rows * nb), mk[i] = tight_bytes(rows * mb);
            memset(mk[i], i ? 0x3C : 0xC3, rows * mb); /* a byte left unwritten differs */
            tb[i] = tight_floats(rows * nc), len[i] = (int64_t *)malloc(rows * sizeof(int64_t) + 1);
            CHECK(exaq_softmax_packed(bes[i], x, rows, n, n, &p, scratch, NULL, pk[i], nb, tb[i], len[i], mk[i],
                                      mb, &interior[i]) == 0, "packed rc");
        }
        /* the bitmap is defined when some row needs it (else the lengths say all) */
        CHECK(memcmp(pk[0], pk[1], rows * nb) == 0 && (!interior[0] || memcmp(mk[0], mk[1], rows * mb) == 0),
              "%s packed softmax bits=%d n=%zu", be->name, bits, n);
        CHECK(interior[0] == interior[1], "%s interior", be->name);
        for (size_t i = 0; i < rows * nc; ++i) CHECK(same_float(tb[0][i], tb[1][i]), "%s packed table", be->name);
        for (size_t r = 0; r < rows; ++r) CHECK(len[0][r] == len[1][r], "%s lengths", be->name);
        /* expanding codes with the table gives the float softmax bit for bit */
        CHECK(exaq_softmax_quantized(ref, x, rows, n, n, y, n, &p, scratch, NULL) == 0, "rc");
        for (size_t r = 0; r < rows; ++r)
            for (size_t j = 0; j < n; ++j) {
                const int masked = (int)(j >= (size_t)len[1][r]) | (interior[1] && ((mk[1][r * mb + j / 8] >> (j % 8)) & 1));
                const float v = masked && tb[1][r * nc] == tb[1][r * nc] ? 0.0f
                                                                        : tb[1][r * nc + naive_code_at(pk[1] + r * nb, j, bits)];
                if (!same_float(v, y[r * n + j])) {
                    CHECK(0, "%s packed vs float bits=%d n=%zu r=%zu j=%zu", be->name, bits, n, r, j);
                    break;
                }
            }
        for (int i = 0; i < 2; ++i) free(pk[i]), free(mk[i]), free(tb[i]), free(len[i]);
    }
    free(scratch), free(y);
}

/* The AVX-512 passes read 64-byte aligned vectors: the statistics rotate
 * their lanes by the row's offset from the 64-byte grid, the 2-bit packing
 * starts with a partial chunk.  Rows at every float offset of that grid,
 * lengths around the chunks and flush blocks, each row and each output ending
 * at the end of its allocation. */
static void compare_offsets(const exaq_backend *ref, const exaq_backend *be) {
    static const size_t lengths[] = {1,   4,    5,    12,   15,   17,   63,   65,   76,
                                     130, 1023, 1024, 1025, 1040, 2047, 2048, 2049, 3100};
    for (size_t li = 0; li < sizeof lengths / sizeof *lengths; ++li)
        for (size_t offset = 0; offset < 64; offset += sizeof(float)) {
            const size_t n = lengths[li], bytes = offset + n * sizeof(float);
            void *block = NULL;
            if (posix_memalign(&block, 64, bytes) != 0) continue;
            float *x = (float *)((char *)block + offset);
            float row[3100];
            fill_row(row, n, (int)(offset % 3)); /* plain, scattered -inf, -inf suffix */
            memcpy(x, row, n * sizeof(float));
            exaq_row_stats a, b;
            int s1, s2;
            const float m1 = ref->softmax->row_max(row, n, &s1), m2 = be->softmax->row_max(x, n, &s2);
            CHECK(s1 == s2 && same_float(m1, m2), "%s row_max offset=%zu n=%zu", be->name, offset, n);
            for (int variant = 0; variant < 8; ++variant) {
                const float pilot = variant & 1 ? 0.75f : 0.0f;
                const int flags = variant >> 1;
                ref->softmax->row_stats(row, n, pilot, flags, &a);
                be->softmax->row_stats(x, n, pilot, flags, &b);
                CHECK(a.unmasked == b.unmasked && same_double(a.sum, b.sum) && same_double(a.sumsq, b.sumsq) &&
                          same_float(a.max, b.max) && same_float(a.min, b.min),
                      "%s row_stats offset=%zu n=%zu v=%d", be->name, offset, n, variant);
            }
            const size_t nb = EXAQ_PACKED_BYTES(n, 2), mb = EXAQ_MASK_BYTES(n);
            ref->softmax->row_stats(row, n, 0.0f, 0, &a); /* counts the -inf */
            for (int may_mask = 0; may_mask < 2; ++may_mask) {
                if (!may_mask && a.unmasked != (int64_t)n) continue;
                exaq_quantizer q;
                exaq_quantizer_init(&q, a.max, -2.5f, 3, may_mask);
                uint8_t *p1 = tight_bytes(nb), *p2 = tight_bytes(nb), *m1 = tight_bytes(mb), *m2 = tight_bytes(mb);
                memset(p2, 0xAB, nb), memset(m1, 0xCD, mb), memset(m2, 0xCD, mb); /* bitmap: only with may_mask */
                int64_t c1[4] = {0}, c2[4] = {0};
                const size_t masked1 = ref->softmax->quantize_pack2(row, n, &q, p1, m1, c1);
                const size_t masked2 = be->softmax->quantize_pack2(x, n, &q, p2, m2, c2);
                CHECK(masked1 == masked2 && memcmp(c1, c2, sizeof c1) == 0 && memcmp(p1, p2, nb) == 0 &&
                          memcmp(m1, m2, mb) == 0,
                      "%s pack2 offset=%zu n=%zu may_mask=%d", be->name, offset, n, may_mask);
                free(p1), free(p2), free(m1), free(m2);
            }
            free(block);
        }
}

/* ---- threads: rows on the pool give the very bits of one thread ---- */

static void compare_threads(const exaq_backend *be) {
    static const size_t shapes[][2] = {{9, 1}, {40, 7}, {67, 33}, {130, 130}, {17, 1100}, {300, 64}};
    const exaq_clip_mode modes[] = {EXAQ_CLIP_GAUSS, EXAQ_CLIP_LAPLACE, EXAQ_CLIP_ROW, EXAQ_CLIP_NONE,
                                    EXAQ_CLIP_STATIC};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; ++s) {
        const size_t rows = shapes[s][0], n = shapes[s][1];
        const size_t nb = EXAQ_PACKED_BYTES(n, 2), mb = EXAQ_MASK_BYTES(n);
        float *x = tight_floats(rows * n), *y1 = tight_floats(rows * n), *y2 = tight_floats(rows * n);
        float *scratch = tight_floats(rows), *lo1 = tight_floats(rows), *lo2 = tight_floats(rows);
        float *t1 = tight_floats(rows * 4), *t2 = tight_floats(rows * 4);
        uint8_t *pk1 = tight_bytes(rows * nb), *pk2 = tight_bytes(rows * nb);
        uint8_t *mk1 = tight_bytes(rows * mb), *mk2 = tight_bytes(rows * mb);
        int64_t *len1 = (int64_t *)malloc(rows * sizeof(int64_t)), *len2 = (int64_t *)malloc(rows * sizeof(int64_t));
        for (size_t r = 0; r < rows; ++r) fill_row(x + r * n, n, (int)(r * 5 % 8));
        for (int bits = 2; bits <= 4; ++bits)
            for (int m = 0; m < 5; ++m)
                for (int threads = 2; threads <= 3; ++threads) {
                    exaq_params one = {bits, modes[m], -1.66, -1.85, -3.0, EXAQ_FLOOR_EXP, 1}, many = one;
                    many.threads = threads;
                    CHECK(exaq_softmax_quantized(be, x, rows, n, n, y1, n, &one, scratch, lo1) == 0, "rc");
                    CHECK(exaq_softmax_quantized(be, x, rows, n, n, y2, n, &many, scratch, lo2) == 0, "rc");
                    for (size_t i = 0; i < rows * n; ++i)
                        if (!same_float(y1[i], y2[i])) {
                            CHECK(0, "%s threads=%d softmax bits=%d mode=%d rows=%zu n=%zu i=%zu", be->name, threads,
                                  bits, m, rows, n, i);
                            break;
                        }
                    for (size_t r = 0; r < rows; ++r)
                        CHECK(same_float(lo1[r], lo2[r]), "%s threads=%d lo row %zu", be->name, threads, r);
                    if (bits != 2) continue;
                    int64_t interior1, interior2;
                    CHECK(exaq_softmax_packed(be, x, rows, n, n, &one, scratch, NULL, pk1, nb, t1, len1, mk1, mb,
                                              &interior1) == 0, "rc");
                    CHECK(exaq_softmax_packed(be, x, rows, n, n, &many, scratch, NULL, pk2, nb, t2, len2, mk2, mb,
                                              &interior2) == 0, "rc");
                    CHECK(interior1 == interior2, "%s threads=%d packed interior rows", be->name, threads);
                    CHECK(memcmp(pk1, pk2, rows * nb) == 0, "%s threads=%d packed codes n=%zu", be->name, threads, n);
                    CHECK(memcmp(len1, len2, rows * sizeof(int64_t)) == 0, "%s threads=%d lengths", be->name, threads);
                    for (size_t i = 0; i < rows * 4; ++i)
                        CHECK(same_float(t1[i], t2[i]), "%s threads=%d packed tables", be->name, threads);
                    if (interior1) CHECK(memcmp(mk1, mk2, rows * mb) == 0, "%s threads=%d bitmap", be->name, threads);
                }
        exaq_softmax_exact(be, x, rows, n, n, y1, n, 1);
        exaq_softmax_exact(be, x, rows, n, n, y2, n, 3);
        CHECK(memcmp(y1, y2, rows * n * sizeof(float)) == 0 || n == 0, "%s exact threads rows=%zu n=%zu", be->name,
              rows, n);
        free(x), free(y1), free(y2), free(scratch), free(lo1), free(lo2), free(t1), free(t2);
        free(pk1), free(pk2), free(mk1), free(mk2), free(len1), free(len2);
    }
}

/* a SIMD backend whose table points at scalar kernels would be compared
 * with itself: that is not a test of it */
static int has_own_kernels(const exaq_backend *be) {
    return be->softmax != &exaq_softmax_scalar && be->softmax->packed != &exaq_packed_scalar;
}

/* 2-bit codes packed four to a byte, low bits first (docs/packed.md), written plainly */
static void ref_pack_codes(const uint8_t *codes, size_t n, uint8_t *packed) {
    memset(packed, 0, EXAQ_PACKED_BYTES(n, 2));
    for (size_t j = 0; j < n; ++j) packed[j / 4] |= (uint8_t)(codes[j] << (2 * (j % 4)));
}

/* ---- exact ties: the quantizer rounds half to even ----
 * With lo = -levels the scale is exactly 1, so a half-integer shifted score t
 * lands exactly halfway between two codes: v = t + levels.  docs/semantics.md section 2 (numpy.rint,
 * torch.round) wants the even code; floor(v + 0.5) would pass every random-row
 * test above and break these.  Rows of every length below and above each
 * block size; the expected codes come from the C library's nearbyint, not from
 * the scalar backend. */
static void check_ties(const exaq_backend *be) {
    static const size_t lengths[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000};
    for (size_t li = 0; li < sizeof lengths / sizeof *lengths; ++li) {
        const size_t n = lengths[li];
        float *x = tight_floats(n);
        uint8_t *codes = malloc(n), *expect = malloc(n);
        for (int bits = 2; bits <= 4; ++bits) {
            const int levels = (1 << bits) - 1;
            for (int si = 0; si < 2; ++si) {
                const float shift = si ? 5.0f : 0.0f;
                for (size_t j = 0; j < n; ++j) { /* t = -k/2, k in 0..2*levels; the row max t = 0 at one place */
                    const int k = (j == n / 2) ? 0 : (int)(next_u64() % (uint64_t)(2 * levels + 1));
                    x[j] = shift - 0.5f * (float)k;
                    expect[j] = (uint8_t)nearbyint((double)levels - 0.5 * k); /* default mode: half to even */
                }
                exaq_quantizer q;
                exaq_quantizer_init(&q, shift, -(float)levels, levels, 1);
                int64_t counts[EXAQ_MAX_CODES] = {0}, want[EXAQ_MAX_CODES] = {0};
                for (size_t j = 0; j < n; ++j) ++want[expect[j]];
                be->softmax->quantize_count(x, n, &q, codes, counts);
                CHECK(memcmp(codes, expect, n) == 0, "%s ties: codes not rounded half to even bits=%d n=%zu shift=%g",
                      be->name, bits, n, shift);
                CHECK(memcmp(counts, want, sizeof want) == 0, "%s ties: counts bits=%d n=%zu", be->name, bits, n);
                if (bits == 2) {
                    const size_t nb = EXAQ_PACKED_BYTES(n, 2), mb = EXAQ_MASK_BYTES(n);
                    uint8_t *packed = malloc(nb), *want_packed = malloc(nb), *mask = malloc(mb);
                    int64_t c2[4] = {0};
                    be->softmax->quantize_pack2(x, n, &q, packed, mask, c2);
                    ref_pack_codes(expect, n, want_packed);
                    CHECK(memcmp(packed, want_packed, nb) == 0, "%s ties: pack2 bits=2 n=%zu", be->name, n);
                    free(packed), free(want_packed), free(mask);
                }
            }
        }
        free(x), free(codes), free(expect);
    }
}

int main(void) {
    const exaq_backend *ref = exaq_get_backend(EXAQ_BACKEND_SCALAR);
    int tested[EXAQ_BACKEND_COUNT] = {0};
    static const size_t lengths[] = {0,   1,   2,   3,   4,   5,   7,   8,   9,   15,   16,   17,   31,   32,
                                     33,  63,  64,  65,  100, 127, 128, 129, 255, 256, 1000, 4064, 4081, 4111};
    for (int id = 1; id < EXAQ_BACKEND_COUNT; ++id) { /* scalar is the reference, not a backend under test */
        const exaq_backend *be = exaq_get_backend((exaq_backend_id)id);
        if (!be) continue; /* check_backend_coverage says why */
        if (!has_own_kernels(be)) {
            CHECK(0, "backend %s: its softmax or packed kernels are the scalar ones", be->name);
            continue;
        }
        const int failures_before = failures, checks_before = checks;
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
            compare_packed_driver(ref, be, xs, rows, n);
            compare_pack2_codes(be, xs, rows, n, -3.0);
            for (int pattern = 0; pattern < 3; ++pattern) compare_packed(ref, be, n, pattern);
            free(xs);
            /* Groups of clean rows (the fused 2-bit kernels' case: whole
             * groups of 8 with nothing special, then rows ending in runs of
             * -inf of every length, then a group broken by one -inf inside) */
            const size_t clean_count = 27;
            float *clean = tight_floats(clean_count * n);
            for (size_t r = 0; r < clean_count; ++r) {
                float *row = clean + r * n;
                fill_row(row, n, 0);
                if (r >= 8 && r < 24)
                    for (size_t j = 1 + (r - 8) * n / 16; j < n; ++j) row[j] = -INFINITY;
                if (r == 25 && n > 2) row[n / 2] = -INFINITY;
            }
            compare_drivers(ref, be, clean, clean_count, n);
            compare_packed_driver(ref, be, clean, clean_count, n);
            free(clean);
        }
        /* every length 0..130 at every float offset of a 16-byte vector, each
         * kernel alone (the drivers above take the listed lengths) */
        for (size_t n = 0; n <= 130; ++n)
            for (size_t misalign = 0; misalign < 4; ++misalign) {
                float *block = tight_floats(n + misalign);
                fill_row(block + misalign, n, (int)((n + misalign) % 8));
                compare_kernels(ref, be, block + misalign, n);
                free(block);
                compare_packed(ref, be, n, (int)(misalign % 3));
            }
        compare_pack2_boundaries(be);
        compare_masked_tails(ref, be);
        compare_offsets(ref, be);
        compare_threads(be);
        check_ties(be);
        tested[id] = checks > checks_before;
        printf("backend %s: %d checks, %d failed\n", be->name, checks - checks_before, failures - failures_before);
    }
    compare_threads(ref); /* the pool is the driver's: the scalar backend's rows too */
    check_ties(ref);
    check_backend_coverage("test_kernels", tested);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
