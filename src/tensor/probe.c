/* Measurements of the machine itself: read bandwidth (a STREAM-like sum over a buffer larger than
 * any cache) and peak f32 FMA rate (a register-only loop), the bounds against which the kernels'
 * figures are judged. Always the best path the CPU has, whatever path is active. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "tensor/kernels.h"

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A pass's rate divided by its CPU share (CPU time / (wall × threads)): what the threads reach
 * while they run. */
static double per_cpu_rate(double amount, double cpu, int nth) {
    return cpu > 0 ? amount / (cpu / nth) : 0;
}

typedef struct bw_ctx {
    const tensor_kernels *k;
    float *buf;
    size_t n;
    _Atomic float sink;
} bw_ctx;

static void bw_touch(void *ctx_, int ith, int nth) {
    bw_ctx *c = ctx_;
    /* Each thread writes its own share first, so pages land near the thread that reads them. */
    size_t per = c->n / (size_t)nth / 64 * 64, b = per * (size_t)ith, e = ith == nth - 1 ? c->n : b + per;
    for (size_t i = b; i < e; i++) c->buf[i] = (float)(i & 7);
}

static void bw_read(void *ctx_, int ith, int nth) {
    bw_ctx *c = ctx_;
    size_t per = c->n / (size_t)nth / 64 * 64, b = per * (size_t)ith, e = ith == nth - 1 ? c->n : b + per;
    float s = c->k->read_sum(c->buf + b, e - b);
    atomic_store_explicit(&c->sink, s, memory_order_relaxed);
}

double tensor_probe_read_bandwidth_ex(tensor_pool *pool, size_t bytes, int reps, double *per_cpu) {
    bw_ctx c = {.k = tensor_kernels_for(tensor_isa_detect()), .n = bytes / sizeof(float) / 64 * 64};
    if (per_cpu) *per_cpu = 0;
    if (c.n == 0) return 0;
    c.buf = tensor_alloc(c.n * sizeof(float));
    if (!c.buf) return 0;
    tensor_pool_run(pool, bw_touch, &c);
    double best = 0, best_cpu = 0, amount = (double)(c.n * sizeof(float));
    for (int r = 0; r < (reps > 0 ? reps : 1); r++) {
        double t0 = llava_now_s(), c0 = cpu_s();
        tensor_pool_run(pool, bw_read, &c);
        double dt = llava_now_s() - t0, dc = cpu_s() - c0;
        if (amount / dt > best) best = amount / dt;
        double pc = per_cpu_rate(amount, dc, tensor_pool_threads(pool));
        if (pc > best_cpu) best_cpu = pc;
    }
    free(c.buf);
    if (per_cpu) *per_cpu = best_cpu;
    return best;
}

double tensor_probe_read_bandwidth(tensor_pool *pool, size_t bytes, int reps) {
    return tensor_probe_read_bandwidth_ex(pool, bytes, reps, NULL);
}

typedef struct fma_ctx {
    double (*loop)(long iters);
    long iters;
    _Atomic double flops;
} fma_ctx;

static void fma_slice(void *ctx_, int ith, int nth) {
    (void)ith;
    (void)nth;
    fma_ctx *c = ctx_;
    double f = c->loop(c->iters);
    double old = atomic_load(&c->flops);
    while (!atomic_compare_exchange_weak(&c->flops, &old, old + f)) {}
}

static double peak_of(double (*loop)(long), tensor_pool *pool, double seconds, double *per_cpu) {
    fma_ctx c = {.loop = loop, .iters = 1000};
    /* Calibrate on the caller so that one pass takes about a tenth of the time asked for. */
    for (;;) {
        double t0 = llava_now_s();
        c.loop(c.iters);
        double dt = llava_now_s() - t0;
        if (dt > seconds / 10 || c.iters > (1L << 40)) break;
        c.iters *= 2;
    }
    double best = 0, best_cpu = 0, t_end = llava_now_s() + seconds;
    do {
        atomic_store(&c.flops, 0.0);
        double t0 = llava_now_s(), c0 = cpu_s();
        tensor_pool_run(pool, fma_slice, &c);
        double dt = llava_now_s() - t0, dc = cpu_s() - c0, f = atomic_load(&c.flops);
        if (f / dt > best) best = f / dt;
        double pc = per_cpu_rate(f, dc, tensor_pool_threads(pool));
        if (pc > best_cpu) best_cpu = pc;
    } while (llava_now_s() < t_end);
    if (per_cpu) *per_cpu = best_cpu;
    return best;
}

double tensor_probe_peak_flops_ex(tensor_pool *pool, double seconds, double *per_cpu) {
    return peak_of(tensor_kernels_for(tensor_isa_detect())->fma_loop, pool, seconds, per_cpu);
}

double tensor_half_probe_peak_flops(tensor_pool *pool, double seconds) {
    if (!tensor_half_available()) return 0;
    return peak_of(tensor_kernels_active()->fma_loop_half, pool, seconds, NULL);
}

double tensor_probe_peak_flops(tensor_pool *pool, double seconds) {
    return tensor_probe_peak_flops_ex(pool, seconds, NULL);
}
