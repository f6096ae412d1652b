/* The compute pool: threads created once and woken for each kernel call. Workers spin briefly on
 * a generation counter (decode issues thousands of small products per token, too many to pay a
 * sleep/wake each), then sleep on a condition variable; the caller takes part as thread 0. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "tensor/kernels.h"

/* How long a thread spins for the next event before it sleeps. Long enough to bridge the gap
 * between two products of one decode step, short enough not to hold a core when idle. */
#define SPIN_NS 200000L

struct tensor_pool {
    int n_threads;            /* including the caller (thread 0) */
    pthread_t *threads;       /* n_threads - 1 workers */
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* workers sleep here for a new generation */
    pthread_cond_t done;      /* the caller sleeps here for the last worker */
    atomic_uint generation;   /* bumped once per run; publishes fn/ctx */
    atomic_int pending;       /* workers still inside the current run */
    atomic_int sleepers;      /* workers waiting (or about to wait) on `wake` */
    atomic_int caller_sleeps; /* 1 while the caller waits (or is about to wait) on `done` */
    atomic_bool stop;
    void (*fn)(void *ctx, int ith, int nth);
    void *ctx;
    /* Per-thread scratch of the kernels (tensor_pool_scratch); a thread only touches its own. */
    void **scratch;
    size_t *scratch_bytes;
    void *shared;         /* tensor_pool_shared_scratch: one run's threads share it */
    size_t shared_bytes;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Spins until *gen differs from seen or the spin budget is spent; returns the value read. */
static unsigned spin_for_generation(tensor_pool *p, unsigned seen) {
    long deadline = 0;
    for (int i = 0;; i++) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->stop, memory_order_relaxed)) return g;
        if ((i & 63) == 63) {
            long t = now_ns();
            if (!deadline) deadline = t + SPIN_NS;
            else if (t > deadline) return g;
        }
        cpu_relax();
    }
}

typedef struct worker_arg {
    tensor_pool *pool;
    int ith;
} worker_arg;

static void *worker_main(void *arg_) {
    worker_arg *arg = arg_;
    tensor_pool *p = arg->pool;
    int ith = arg->ith;
    free(arg);
    (void)tensor_fp_enter(); /* for the thread's life: it only runs kernels */
    /* Generation 0 is the one at creation: a run may already have bumped it by the time this
     * thread starts, and that run is this thread's to join. */
    unsigned seen = 0;
    for (;;) {
        unsigned g = spin_for_generation(p, seen);
        if (g == seen && !atomic_load(&p->stop)) {
            /* Sleep. The seq_cst increment of sleepers before re-reading the generation pairs
             * with the caller's bump-then-read of sleepers: one of the two sees the other. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        p->fn(p->ctx, ith, p->n_threads);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && /* seq_cst: pairs with caller_sleeps */
            atomic_load(&p->caller_sleeps)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

tensor_pool *tensor_pool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024) n_threads = 1024;
    tensor_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_sleeps, 0);
    atomic_init(&p->stop, false);
    if (pthread_mutex_init(&p->mu, NULL)) goto fail_mu;
    if (pthread_cond_init(&p->wake, NULL)) goto fail_wake;
    if (pthread_cond_init(&p->done, NULL)) goto fail_done;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->scratch = calloc((size_t)n_threads, sizeof *p->scratch);
    p->scratch_bytes = calloc((size_t)n_threads, sizeof *p->scratch_bytes);
    if (!p->threads || !p->scratch || !p->scratch_bytes) goto fail_threads;
    int started = 0;
    for (int i = 1; i < n_threads; i++) {
        worker_arg *arg = malloc(sizeof *arg);
        if (!arg) break;
        arg->pool = p;
        arg->ith = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, arg)) {
            free(arg);
            break;
        }
        started++;
    }
    if (started == n_threads - 1) return p;
    /* Could not start them all: stop those that did. */
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < started; i++) pthread_join(p->threads[i], NULL);
fail_threads:
    free(p->threads);
    free(p->scratch);
    free(p->scratch_bytes);
    pthread_cond_destroy(&p->done);
fail_done:
    pthread_cond_destroy(&p->wake);
fail_wake:
    pthread_mutex_destroy(&p->mu);
fail_mu:
    free(p);
    return NULL;
}

void tensor_pool_destroy(tensor_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    for (int i = 0; i < p->n_threads; i++) free(p->scratch[i]);
    free(p->scratch);
    free(p->scratch_bytes);
    free(p->shared);
    free(p->threads);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int tensor_pool_threads(const tensor_pool *p) { return p ? p->n_threads : 1; }

/* *buf with at least `bytes`: kept if large enough, else replaced (its content is not kept). */
static void *grown(void **buf, size_t *have, size_t bytes) {
    if (*have >= bytes) return *buf;
    void *m = tensor_alloc(bytes);
    if (!m) return NULL;
    free(*buf);
    *buf = m;
    *have = bytes;
    return m;
}

void *tensor_pool_scratch(tensor_pool *p, int ith, size_t bytes) {
    if (!p || ith < 0 || ith >= p->n_threads) return NULL;
    return grown(&p->scratch[ith], &p->scratch_bytes[ith], bytes);
}

void *tensor_pool_shared_scratch(tensor_pool *p, size_t bytes) {
    return p ? grown(&p->shared, &p->shared_bytes, bytes) : NULL;
}

void tensor_pool_run(tensor_pool *p, void (*fn)(void *ctx, int ith, int nth), void *ctx) {
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: publishes fn/ctx/pending */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n_threads);

    /* Wait for the workers: spin first (slices are of equal size), then sleep. */
    long deadline = 0;
    for (int i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        if ((i & 63) == 63) {
            long t = now_ns();
            if (!deadline) {
                deadline = t + SPIN_NS;
            } else if (t > deadline) {
                pthread_mutex_lock(&p->mu);
                atomic_store(&p->caller_sleeps, 1);
                while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
                atomic_store(&p->caller_sleeps, 0);
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
        cpu_relax();
    }
}

/* ---- dynamic parallel-for on top of run ---- */

typedef struct pool_for_ctx {
    atomic_int next;
    int n_items;
    void (*fn)(void *ctx, int item, int ith);
    void *ctx;
} pool_for_ctx;

static void pool_for_slice(void *ctx_, int ith, int nth) {
    (void)nth;
    pool_for_ctx *c = ctx_;
    for (;;) {
        int i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (i >= c->n_items) return;
        c->fn(c->ctx, i, ith);
    }
}

void tensor_pool_for(tensor_pool *pool, int n_items, void (*fn)(void *ctx, int item, int ith),
                     void *ctx) {
    if (n_items <= 0) return;
    if (!pool || pool->n_threads == 1 || n_items == 1) {
        for (int i = 0; i < n_items; i++) fn(ctx, i, 0);
        return;
    }
    pool_for_ctx c = {.n_items = n_items, .fn = fn, .ctx = ctx};
    atomic_init(&c.next, 0);
    tensor_pool_run(pool, pool_for_slice, &c);
}
