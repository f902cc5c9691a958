/* Shared by the C test drivers: a counting CHECK and a small deterministic RNG. */
#ifndef EXAQ_TEST_CHECK_H
#define EXAQ_TEST_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int failures, checks;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        ++checks;                                                          \
        if (!(cond)) {                                                     \
            ++failures;                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double uniform(void) { return (double)(next_u64() >> 11) / 9007199254740992.0; }
static float normal(void) {
    const double u = uniform() + 1e-12, v = uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* ---- backend coverage: every backend this build compiled and this CPU runs
 * must have been compared with scalar (the scalar reference is not counted:
 * scalar against scalar proves nothing) ---- */
#include "../exaq.h"

/* the backends whose kernels dispatch.c links on this architecture */
static int backend_compiled(int id) {
    if (id == EXAQ_BACKEND_SCALAR) return 1;
#if defined(__x86_64__) || defined(_M_X64)
    if (id == EXAQ_BACKEND_AVX2 || id == EXAQ_BACKEND_AVX512) return 1;
#endif
#if defined(__aarch64__)
    if (id == EXAQ_BACKEND_NEON) return 1;
#endif
    return 0;
}

/* One line per compiled SIMD backend.  Compiled but unsupported by this CPU:
 * said once and not counted as passed.  Compiled, supported and not compared
 * (tested[id] == 0): a failure. */
static void check_backend_coverage(const char *what, const int tested[EXAQ_BACKEND_COUNT]) {
    for (int id = 1; id < EXAQ_BACKEND_COUNT; ++id) {
        const char *name = exaq_backend_name((exaq_backend_id)id);
        if (!backend_compiled(id)) continue;
        if (!exaq_backend_supported((exaq_backend_id)id)) {
            printf("%s: backend %s compiled, but this CPU lacks it: NOT tested (not counted as passed)\n", what,
                   name);
            continue;
        }
        ++checks;
        if (tested[id]) {
            printf("%s: backend %s compared with scalar\n", what, name);
        } else {
            ++failures;
            fprintf(stderr, "FAIL %s: backend %s is compiled and supported but was not exercised\n", what, name);
        }
    }
}

#endif
