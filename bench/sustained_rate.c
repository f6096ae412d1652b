/* What the machine sustains, and how much of it the exact product gets, in the same seconds.
 *
 *   sustained_rate [THREADS] [ROUNDS] [M N K]
 *
 * Each round runs, on every thread, the f32 microkernel hot (its x panel in L1, 16 W tiles in
 * L2, K block 256: the loop the blocked product spends its time in) for about half a second,
 * then the whole product y[M,N] = x[M,K] · W[N,K]ᵀ with F16 weights for about as long (default
 * 641 × 4096 × 4096, the prompt's attention projections), each W a fresh copy out of 512 MiB of
 * them so that it comes from memory as a model's weights do. Both are printed as a share of the
 * burst probe `llava bench` judges the prompt by (the better of two, before and after), and the
 * product also as a share of the hot microkernel of its own round: the machine's speed moves
 * by tens of percent from one second to the next on a shared host, and the last column is the
 * product's efficiency with that taken out. Medians at the end. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "bench_util.h"
#include "tensor/kernels.h"
#include "tensor/tensor.h"

enum { KCB = 256, TILES = 16, MAX_ROUNDS = 200 };

/* The hot microkernel on every thread until the caller's deadline: each thread its own panels. */
typedef struct hot_ctx {
    double until;
    atomic_llong tiles; /* microkernel calls done, all threads */
} hot_ctx;

static void hot_slice(void *ctx, int ith, int nth) {
    (void)ith;
    (void)nth;
    hot_ctx *h = ctx;
    const tensor_kernels *k = tensor_kernels_active();
    float *a = aligned_alloc(64, sizeof(float) * TENSOR_MR_MAX * KCB);
    float *b = aligned_alloc(64, sizeof(float) * (size_t)TENSOR_NR_MAX * KCB * TILES);
    float *c = aligned_alloc(64, sizeof(float) * TENSOR_MR_MAX * TENSOR_NR_MAX * TILES);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return;
    }
    for (int i = 0; i < TENSOR_MR_MAX * KCB; i++) a[i] = 1e-3f * (float)(i % 97);
    for (int i = 0; i < TENSOR_NR_MAX * KCB * TILES; i++) b[i] = 1e-4f * (float)(i % 977);
    memset(c, 0, sizeof(float) * TENSOR_MR_MAX * TENSOR_NR_MAX * TILES);
    long long done = 0;
    size_t ldc = (size_t)k->nr * TILES;
    while (llava_now_s() < h->until) {
        for (int t = 0; t < TILES; t++)
            k->micro(KCB, a, b + (size_t)t * k->nr * KCB, c + (size_t)t * k->nr, ldc, 1);
        done += TILES;
    }
    atomic_fetch_add(&h->tiles, done);
    free(a), free(b), free(c);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, rounds = argc > 2 ? atoi(argv[2]) : 20;
    int M = argc > 5 ? atoi(argv[3]) : 641, N = argc > 5 ? atoi(argv[4]) : 4096, K = argc > 5 ? atoi(argv[5]) : 4096;
    if (threads < 1 || rounds < 1 || rounds > MAX_ROUNDS || M < 1 || N < 1 || K < 1 || (argc > 3 && argc != 6)) {
        fprintf(stderr, "usage: sustained_rate [THREADS] [ROUNDS (1..%d)] [M N K]\n", MAX_ROUNDS);
        return 2;
    }
    tensor_pool *pool = tensor_pool_create(threads);
    if (!pool) return 1;
    const tensor_kernels *k = tensor_kernels_active();
    size_t wn = (size_t)N * K;
    size_t copies = ((size_t)512 << 20) / (wn * sizeof(uint16_t)) + 1;
    float *x = tensor_alloc(sizeof(float) * (size_t)M * K), *y = tensor_alloc(sizeof(float) * (size_t)M * N);
    uint16_t *w = tensor_alloc(sizeof(uint16_t) * wn * copies);
    if (!x || !y || !w) {
        fprintf(stderr, "sustained_rate: out of memory for %zu copies of a %d x %d F16 W\n", copies, N, K);
        return 1;
    }
    unsigned s = 1;
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f;
    for (size_t i = 0; i < wn; i++)
        w[i] = llava_f32_to_f16(0.02f * ((float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f));
    for (size_t c = 1; c < copies; c++) memcpy(w + c * wn, w, wn * sizeof(uint16_t));

    double peak = tensor_probe_peak_flops(pool, 0.5);
    double flops = 2.0 * M * N * K, tile_flops = 2.0 * k->mr * k->nr * KCB;
    double hot[MAX_ROUNDS], prod[MAX_ROUNDS], rel[MAX_ROUNDS];
    size_t next = 0;
    printf("%d threads, kernel path %s, product %d x %d x %d (F16 W, %zu copies)\n", threads,
           tensor_isa_name(tensor_isa_active()), M, N, K, copies);
    printf("round  hot microkernel  product  product / hot\n");
    for (int r = 0; r < rounds; r++) {
        hot_ctx h = {.until = llava_now_s() + 0.5};
        atomic_init(&h.tiles, 0);
        double t0 = llava_now_s();
        tensor_pool_run(pool, hot_slice, &h);
        hot[r] = (double)atomic_load(&h.tiles) * tile_flops / (llava_now_s() - t0);
        double p0 = llava_now_s(), spent = 0;
        int n = 0;
        do {
            tensor_matmul(pool, y, x, w + (next++ % copies) * wn, LLAVA_DTYPE_F16, NULL, M, N, K);
            n++;
            spent = llava_now_s() - p0;
        } while (spent < 0.5);
        prod[r] = flops * n / spent;
        rel[r] = prod[r] / hot[r];
        printf("%5d  %14.1f%%  %6.1f%%  %13.3f\n", r + 1, 100 * hot[r] / peak, 100 * prod[r] / peak, rel[r]);
    }
    double after = tensor_probe_peak_flops(pool, 0.5);
    if (after > peak) peak = after;
    qsort(hot, (size_t)rounds, sizeof(double), cmp_double);
    qsort(prod, (size_t)rounds, sizeof(double), cmp_double);
    qsort(rel, (size_t)rounds, sizeof(double), cmp_double);
    printf("burst probe %.1f GFLOP/s (the better of before and after; the rows are against the one before)\n",
           peak * 1e-9);
    printf("median, of the better probe: hot microkernel %.1f%%, product %.1f%%; product / hot %.3f\n",
           100 * hot[rounds / 2] / peak, 100 * prod[rounds / 2] / peak, rel[rounds / 2]);
    printf("range,  of the better probe: hot microkernel %.1f-%.1f%%, product %.1f-%.1f%%; product / hot %.3f-%.3f\n",
           100 * hot[0] / peak,
           100 * hot[rounds - 1] / peak, 100 * prod[0] / peak, 100 * prod[rounds - 1] / peak, rel[0], rel[rounds - 1]);
    free(x), free(y), free(w);
    tensor_pool_destroy(pool);
    return 0;
}
