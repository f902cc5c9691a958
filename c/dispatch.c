/* The one dispatch table: which backends this CPU can run, and the active one. */
#include "exaq.h"

#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    /* xgetbv with ecx=0; encoded as bytes so no -mxsave is needed */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static int cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, avx = (c >> 28) & 1;
    const int f16c = (c >> 29) & 1;
    if (!osxsave || !fma || !avx || !f16c) return 0;
    if ((read_xcr0() & 0x6) != 0x6) return 0; /* OS saves XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 5) & 1;
}

static int cpu_has_avx512(void) {
    unsigned a, b, c, d;
    if (!cpu_has_avx2()) return 0;
    if ((read_xcr0() & 0xE6) != 0xE6) return 0; /* plus opmask and ZMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    const int vbmi = (c >> 1) & 1;
    return f && bw && vl && vbmi;
}
#endif

static const exaq_backend backend_table[EXAQ_BACKEND_COUNT] = {
    {"scalar", &exaq_softmax_scalar, &exaq_lutgemm_scalar},
#if defined(__x86_64__) || defined(_M_X64)
    {"avx2", &exaq_softmax_avx2, &exaq_lutgemm_avx2},
    {"avx512", &exaq_softmax_avx512, &exaq_lutgemm_avx512},
#else
    {"avx2", NULL, NULL},
    {"avx512", NULL, NULL},
#endif
#if defined(__aarch64__)
    {"neon", &exaq_softmax_neon, &exaq_lutgemm_neon},
#else
    {"neon", NULL, NULL},
#endif
};

static int supported[EXAQ_BACKEND_COUNT];
static int detected;
static exaq_backend_id active = EXAQ_BACKEND_SCALAR;
/* a thread's own choice (exaq_set_thread_backend); -1 defers to `active` */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
static _Thread_local int thread_choice = -1;
#else
static __thread int thread_choice = -1; /* GCC and Clang in C99 mode */
#endif

static void detect(void) {
    if (detected) return;
    supported[EXAQ_BACKEND_SCALAR] = 1;
#if defined(__x86_64__) || defined(_M_X64)
    supported[EXAQ_BACKEND_AVX2] = cpu_has_avx2();
    supported[EXAQ_BACKEND_AVX512] = cpu_has_avx512();
#endif
#if defined(__aarch64__)
    supported[EXAQ_BACKEND_NEON] = 1; /* Advanced SIMD is baseline on AArch64 */
#endif
    active = EXAQ_BACKEND_SCALAR;
    for (int id = EXAQ_BACKEND_COUNT - 1; id >= 0; --id)
        if (supported[id]) { active = (exaq_backend_id)id; break; }
    detected = 1;
}

int exaq_backend_supported(exaq_backend_id id) {
    detect();
    return id >= 0 && id < EXAQ_BACKEND_COUNT && supported[id];
}

const char *exaq_backend_name(exaq_backend_id id) {
    return (id >= 0 && id < EXAQ_BACKEND_COUNT) ? backend_table[id].name : "unknown";
}

int exaq_backend_from_name(const char *name) {
    for (int id = 0; id < EXAQ_BACKEND_COUNT; ++id)
        if (strcmp(name, backend_table[id].name) == 0) return id;
    return -1;
}

const exaq_backend *exaq_get_backend(exaq_backend_id id) {
    return exaq_backend_supported(id) ? &backend_table[id] : NULL;
}

const exaq_backend *exaq_active_backend(void) {
    detect();
    return &backend_table[thread_choice >= 0 ? (exaq_backend_id)thread_choice : active];
}

exaq_backend_id exaq_active_backend_id(void) {
    detect();
    return thread_choice >= 0 ? (exaq_backend_id)thread_choice : active;
}

int exaq_set_thread_backend(int id) {
    if (id != -1 && !exaq_backend_supported((exaq_backend_id)id)) return -1;
    thread_choice = id;
    return 0;
}

int exaq_thread_backend(void) { return thread_choice; }

int exaq_set_backend(exaq_backend_id id) {
    if (!exaq_backend_supported(id)) return -1;
    active = id;
    return 0;
}
