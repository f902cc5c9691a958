/* The persistent worker pool of threadpool.h. */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif
#include "threadpool.h"

#include <pthread.h>
#include <time.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* A worker that finished a loop polls for the next one for a while before it
 * sleeps on the condition variable (the caller waits for its workers the same
 * way): EXAQ_CPU_SPIN_US microseconds, default 1 ms.  Waking a sleeping
 * thread costs a system call and a reschedule, and on a virtual machine whose
 * idle vCPU the host has halted it took 0.1-5 ms (a 2-vCPU KVM guest: with a
 * 30 us spin, a 250 us softmax on two threads interleaved with other work ran
 * slower than on one).  A worker woken late no longer holds a loop up (see
 * job_state), so the spin only decides whether it arrives in time to help.
 * OpenMP runtimes spin for the same reason (0.2-200 ms by default). */
#define DEFAULT_SPIN_US 1000L
#define POLLS_PER_CLOCK 64
/* atomic: EXAQ_CPU_SPIN_US (microseconds) or the default, in ns; read from the
 * environment on first use (threads racing there all store the same value) */
static long long spin_ns = -1;

static long long spin_budget_ns(void) {
    long long ns = __atomic_load_n(&spin_ns, __ATOMIC_RELAXED);
    if (ns < 0) {
        const char *env = getenv("EXAQ_CPU_SPIN_US");
        char *end = NULL;
        const long us = env ? strtol(env, &end, 10) : -1;
        ns = (env && end != env && *end == '\0' && us >= 0 && us <= 1000000 ? us : DEFAULT_SPIN_US) * 1000LL;
        __atomic_store_n(&spin_ns, ns, __ATOMIC_RELAXED);
    }
    return ns;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* The one loop on the pool.  Its fields are written by the caller before it
 * publishes the loop's id in `state` and hands it to worker i through
 * assigned[i] (release).  A worker takes part only if it joins while the
 * loop is open (a compare-and-swap on `state`: the id must match and the
 * loop not be closed); once the caller has run out of chunks it closes the
 * loop and waits only for the workers that joined.  A worker woken late
 * (asleep, or its vCPU descheduled by the host) so never holds the caller
 * up: it finds the loop closed, or another loop's id, and goes back to wait.
 * The fields are not touched again until every worker that joined is done.
 *
 * Items are split into one home range per participant (the caller is
 * participant 0, worker i participant i + 1), and each range is handed out
 * in chunks by its own counter: a participant runs the chunks of its home
 * range first, then takes what is left of the others'.  Consecutive loops
 * over the same items (the two passes of a softmax) so give each thread the
 * items it touched before, still in its own core's cache, and a thread that
 * was delayed (another process on its core) loses its work to the others. */
typedef struct {
    size_t next, end; /* next: atomic, first item of the range not yet handed out */
    char pad[64 - 2 * sizeof(size_t)]; /* one counter a cache line */
} home_range;

static struct {
    exaq_range_fn fn;
    void *ctx;
    size_t grain;
    int participants;
    home_range ranges[EXAQ_MAX_THREADS];
} job;

/* job_state: the loop's id (31 bits) << 33 | closed << 32 | workers joined and not done */
static unsigned long long job_state; /* atomic */
#define STATE_ACTIVE 0xFFFFFFFFull
#define STATE_CLOSED (1ull << 32)
#define STATE_ID_SHIFT 33

static unsigned long long state_of_id(unsigned long id) {
    return ((unsigned long long)id & 0x7FFFFFFFull) << STATE_ID_SHIFT;
}

/* the worker joins loop `id` if it is the open loop; 1 if it joined */
static int join_loop(unsigned long id) {
    unsigned long long s = __atomic_load_n(&job_state, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((s & ~(STATE_CLOSED | STATE_ACTIVE)) != state_of_id(id) || (s & STATE_CLOSED)) return 0;
        if (__atomic_compare_exchange_n(&job_state, &s, s + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return 1;
    }
}

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER; /* held by the caller of the loop on the pool */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards the sleeps and the worker count */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;   /* a worker was given a loop */
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;   /* the last worker finished */
static unsigned long assigned[EXAQ_MAX_THREADS];        /* atomic: loop id given to worker i */
static unsigned long last_id;                            /* ids of loops, under busy */
static int workers;                                      /* started so far, under lock */
static int fork_handler_set;

/* chunks of participant p's home range, then of every other range */
static void run_chunks(int p) {
    const size_t grain = job.grain;
    for (int k = 0; k < job.participants; ++k) {
        home_range *range = &job.ranges[(p + k) % job.participants];
        for (;;) {
            const size_t begin = __atomic_fetch_add(&range->next, grain, __ATOMIC_RELAXED);
            if (begin >= range->end) break;
            job.fn(job.ctx, begin, range->end - begin < grain ? range->end : begin + grain);
        }
    }
}

static long long monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Polls *word until it differs from `seen` (returns the new value) or the spin
 * budget has passed (returns `seen`). */
static unsigned long spin_until_changed(const unsigned long *word, unsigned long seen) {
    const long long deadline = monotonic_ns() + spin_budget_ns();
    for (;;) {
        for (int polls = 0; polls < POLLS_PER_CLOCK; ++polls) {
            const unsigned long now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
            if (now != seen) return now;
            cpu_relax();
        }
        if (monotonic_ns() > deadline) return seen;
    }
}

static void *worker_main(void *arg) {
    const int index = (int)(intptr_t)arg;
    unsigned long seen = 0; /* ids start at 1: a loop may be given before this thread first looks */
    for (;;) {
        unsigned long id = spin_until_changed(&assigned[index], seen);
        if (id == seen) {
            pthread_mutex_lock(&lock);
            while ((id = __atomic_load_n(&assigned[index], __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&wake, &lock);
            pthread_mutex_unlock(&lock);
        }
        seen = id;
        if (!join_loop(id)) continue; /* woken too late: the loop was done without this thread */
        run_chunks(index + 1);
        const unsigned long long after = __atomic_sub_fetch(&job_state, 1, __ATOMIC_ACQ_REL);
        if ((after & STATE_CLOSED) && (after & STATE_ACTIVE) == 0) { /* the caller waits for this one */
            pthread_mutex_lock(&lock);
            pthread_cond_signal(&done);
            pthread_mutex_unlock(&lock);
        }
    }
    return NULL;
}

/* A forked child has none of the parent's threads: it starts with an empty
 * pool, and locks that were held at the fork are made anew. */
static void after_fork_in_child(void) {
    pthread_mutex_t fresh_mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    busy = fresh_mutex;
    lock = fresh_mutex;
    wake = fresh_cond;
    done = fresh_cond;
    workers = 0;
    job_state = 0;
    for (int i = 0; i < EXAQ_MAX_THREADS; ++i) assigned[i] = 0;
}

/* starts workers until `wanted` exist (under lock); returns how many exist */
static int ensure_workers(int wanted) {
    if (!fork_handler_set) {
        pthread_atfork(NULL, NULL, after_fork_in_child);
        fork_handler_set = 1;
    }
    while (workers < wanted) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&tid, &attr, worker_main, (void *)(intptr_t)workers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        ++workers;
    }
    return workers;
}

int exaq_parallel_for(size_t count, size_t grain, int threads, exaq_range_fn fn, void *ctx) {
    if (count == 0) return 1;
    if (grain == 0) grain = 1;
    const size_t chunks = (count - 1) / grain + 1;
    if (threads > EXAQ_MAX_THREADS) threads = EXAQ_MAX_THREADS;
    if ((size_t)threads > chunks) threads = (int)chunks;
    if (threads <= 1 || pthread_mutex_trylock(&busy) != 0) { /* alone, or the pool is taken */
        fn(ctx, 0, count);
        return 1;
    }
    pthread_mutex_lock(&lock);
    int helpers = ensure_workers(threads - 1);
    pthread_mutex_unlock(&lock);
    if (helpers > threads - 1) helpers = threads - 1;
    if (helpers == 0) {
        pthread_mutex_unlock(&busy);
        fn(ctx, 0, count);
        return 1;
    }
    job.fn = fn;
    job.ctx = ctx;
    job.grain = grain;
    job.participants = helpers + 1;
    for (int p = 0; p <= helpers; ++p) { /* home ranges of whole chunks, as even as can be */
        job.ranges[p].next = (size_t)((chunks * p) / (size_t)(helpers + 1)) * grain;
        job.ranges[p].end = (size_t)((chunks * (p + 1)) / (size_t)(helpers + 1)) * grain;
        if (job.ranges[p].end > count) job.ranges[p].end = count;
    }
    const unsigned long id = ++last_id;
    __atomic_store_n(&job_state, state_of_id(id), __ATOMIC_RELEASE); /* open, nobody joined */
    for (int i = 0; i < helpers; ++i) __atomic_store_n(&assigned[i], id, __ATOMIC_RELEASE);
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    run_chunks(0); /* returns once every chunk is taken, by this thread or a worker */
    if (__atomic_or_fetch(&job_state, STATE_CLOSED, __ATOMIC_ACQ_REL) & STATE_ACTIVE) {
        /* workers still running chunks they took: a short wait */
        const long long deadline = monotonic_ns() + spin_budget_ns();
        while ((__atomic_load_n(&job_state, __ATOMIC_ACQUIRE) & STATE_ACTIVE) && monotonic_ns() < deadline)
            for (int polls = 0; polls < POLLS_PER_CLOCK; ++polls) cpu_relax();
        pthread_mutex_lock(&lock);
        while (__atomic_load_n(&job_state, __ATOMIC_ACQUIRE) & STATE_ACTIVE) pthread_cond_wait(&done, &lock);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_unlock(&busy);
    return helpers + 1;
}

int exaq_cpu_count(void) {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n >= 1) return n;
    }
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)(n < EXAQ_MAX_THREADS ? n : EXAQ_MAX_THREADS) : 1;
}

int exaq_pool_workers(void) {
    pthread_mutex_lock(&lock);
    const int n = workers;
    pthread_mutex_unlock(&lock);
    return n;
}
