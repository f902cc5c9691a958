/* One persistent pool of worker threads for every parallel loop of the library
 * (softmax rows, LUT-GEMM row tiles).  Plain C99 + POSIX threads.
 *
 * Workers are started on first need and then kept, parked on a condition
 * variable (after a short spin, so that back-to-back calls do not pay a wake
 * up); no thread is created per call.  One loop runs on the pool at a time: a
 * caller that finds the pool busy (another Python thread in a parallel loop)
 * runs its loop alone on its own thread, so several callers never put more
 * threads on the cores than the pool has.  Items are handed out in chunks of
 * `grain`, each thread first from a home range of its own (so a second loop
 * over the same items finds them in the cache of the core that touched them),
 * then from the others' leftovers; which thread runs a chunk never changes
 * what the chunk computes, so results do not depend on the thread count. */
#ifndef EXAQ_THREADPOOL_H
#define EXAQ_THREADPOOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EXAQ_MAX_THREADS 64

/* fn(ctx, begin, end): process items [begin, end) */
typedef void (*exaq_range_fn)(void *ctx, size_t begin, size_t end);

/* Runs fn over items [0, count) in chunks of `grain` (>= 1) on up to `threads`
 * threads, the caller's included; returns when every chunk is done.  threads
 * <= 1, a single chunk, a busy pool or a worker that cannot be started: the
 * caller runs what is left itself.  Returns the number of threads that were
 * offered the work (1 when it ran on the caller alone). */
int exaq_parallel_for(size_t count, size_t grain, int threads, exaq_range_fn fn, void *ctx);

/* processors this process may run on (sched affinity where known), >= 1 */
int exaq_cpu_count(void);

/* worker threads started so far (they persist) */
int exaq_pool_workers(void);

#ifdef __cplusplus
}
#endif
#endif
