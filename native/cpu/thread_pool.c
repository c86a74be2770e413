/*
 * thread_pool.c: a persistent pthread worker pool for ad_fdl_cpu.
 *
 * Workers are created lazily, on the first call that asks for more threads than exist, and live for the
 * life of the process (detached, all signals blocked so the JVM's signal handling is not disturbed). One
 * call uses the pool at a time: ad_pool_acquire takes the call lock with trylock, and a caller that finds
 * it taken gets 0 back and runs its work on its own thread. Dispatch is a generation counter under a mutex
 * and a condition variable; the caller is worker 0. Nothing is allocated per call.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>
#include "fdl_cpu_internal.h"

static pthread_mutex_t g_call_lock = PTHREAD_MUTEX_INITIALIZER; /* held for the whole of one pool call */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;      /* guards the job fields below */
static pthread_cond_t g_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_done = PTHREAD_COND_INITIALIZER;

static int g_created;          /* worker threads started (indices 1..g_created) */
static uint64_t g_generation;  /* bumped once per job */
static ad_pool_fn g_fn;
static void* g_arg;
static int g_nworkers;         /* workers taking part in the current job (caller included) */
static int g_pending;          /* workers of the current job still running */

static uint64_t g_start_generation[AD_POOL_MAX_THREADS]; /* generation current when worker i started */

static atomic_int g_default_threads; /* 0 = not set yet: online CPUs */

/* Online CPUs, read once: sysconf(_SC_NPROCESSORS_ONLN) reads /sys on every call (about 8 us on the build VM,
 * benchmarks/results/overhead-*), and every call with the default thread count asks. CPUs brought online later
 * are not seen (set the pool size explicitly for that). */
static atomic_int g_online;

static int online_cpus(void)
{
    int c = atomic_load_explicit(&g_online, memory_order_relaxed);
    if (c > 0) return c;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > AD_POOL_MAX_THREADS) n = AD_POOL_MAX_THREADS;
    atomic_store_explicit(&g_online, (int)n, memory_order_relaxed);
    return (int)n;
}

int ad_pool_default_threads(void)
{
    int n = atomic_load(&g_default_threads);
    return n > 0 ? n : online_cpus();
}

void ad_pool_set_default_threads(int n)
{
    if (n > AD_POOL_MAX_THREADS) n = AD_POOL_MAX_THREADS;
    atomic_store(&g_default_threads, n > 0 ? n : 0);
}

static void* worker_main(void* p)
{
    const int me = (int)(intptr_t)p;
    pthread_mutex_lock(&g_lock);
    uint64_t seen = g_start_generation[me]; /* a job posted before this thread ran is still seen */
    for (;;) {
        while (g_generation == seen) pthread_cond_wait(&g_work, &g_lock);
        seen = g_generation;
        const ad_pool_fn fn = g_fn;
        void* const arg = g_arg;
        const int nw = g_nworkers;
        if (me >= nw) continue; /* not part of this job */
        pthread_mutex_unlock(&g_lock);
        fn(arg, me, nw);
        pthread_mutex_lock(&g_lock);
        if (--g_pending == 0) pthread_cond_signal(&g_done);
    }
    return NULL;
}

/* Starts workers until `want` exist (or creation fails). Called with g_call_lock held and g_lock not. */
static void grow(int want)
{
    if (want > AD_POOL_MAX_THREADS - 1) want = AD_POOL_MAX_THREADS - 1;
    if (g_created >= want) return;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1u << 20);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the new threads */
    while (g_created < want) {
        pthread_t t;
        g_start_generation[g_created + 1] = g_generation; /* written before the thread exists */
        if (pthread_create(&t, &attr, worker_main, (void*)(intptr_t)(g_created + 1)) != 0) break;
        g_created++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

int ad_pool_acquire(int want)
{
    if (want < 2) return 0;
    if (pthread_mutex_trylock(&g_call_lock) != 0) return 0;
    grow(want - 1);
    const int n = want < g_created + 1 ? want : g_created + 1;
    if (n < 2) {
        pthread_mutex_unlock(&g_call_lock);
        return 0;
    }
    return n;
}

void ad_pool_run(ad_pool_fn fn, void* arg, int nworkers)
{
    pthread_mutex_lock(&g_lock);
    g_fn = fn;
    g_arg = arg;
    g_nworkers = nworkers;
    g_pending = nworkers - 1;
    g_generation++;
    pthread_cond_broadcast(&g_work);
    pthread_mutex_unlock(&g_lock);

    fn(arg, 0, nworkers);

    pthread_mutex_lock(&g_lock);
    while (g_pending > 0) pthread_cond_wait(&g_done, &g_lock);
    pthread_mutex_unlock(&g_lock);
}

void ad_pool_release(void) { pthread_mutex_unlock(&g_call_lock); }
