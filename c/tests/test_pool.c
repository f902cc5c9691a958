/* The worker pool under stress: callers on several threads at once, loops of
 * every size, grain and thread count; every item must be run exactly once.
 * Built with ThreadSanitizer by the Makefile (the pool's own atomics and
 * locks are what is tested), and run with short and long spin budgets. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "../threadpool.h"

typedef struct {
    unsigned char *hits;
} loop_items;

static void mark(void *ctx, size_t begin, size_t end) {
    loop_items *items = (loop_items *)ctx;
    for (size_t i = begin; i < end; ++i) __atomic_fetch_add(&items->hits[i], 1, __ATOMIC_RELAXED);
}

static int loops, bad_loops;

static void *caller(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    for (int it = 0; it < 2000; ++it) {
        seed = seed * 1103515245u + 12345u;
        const size_t count = (seed >> 8) % 3000, grain = (seed >> 4) % 65; /* grain 0 means 1 */
        const int threads = (int)((seed >> 20) % 5);                      /* 0 and 1: the caller alone */
        loop_items items = {calloc(count + 1, 1)};
        if (!items.hits) continue;
        exaq_parallel_for(count, grain, threads, mark, &items);
        int once = 1;
        for (size_t i = 0; i < count; ++i) once &= items.hits[i] == 1;
        __atomic_fetch_add(&loops, 1, __ATOMIC_RELAXED);
        if (!once) __atomic_fetch_add(&bad_loops, 1, __ATOMIC_RELAXED);
        free(items.hits);
    }
    return NULL;
}

int main(void) {
    enum { CALLERS = 4 };
    pthread_t t[CALLERS];
    for (int i = 0; i < CALLERS; ++i) pthread_create(&t[i], NULL, caller, (void *)(size_t)(i + 1));
    for (int i = 0; i < CALLERS; ++i) pthread_join(t[i], NULL);
    printf("test_pool: %d loops on %d callers, workers %d\n", loops, CALLERS, exaq_pool_workers());
    printf("%d passed, %d failed\n", loops - bad_loops, bad_loops);
    return bad_loops != 0;
}
