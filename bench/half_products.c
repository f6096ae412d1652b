/* Half-precision products against the exact ones on the vision tower's shapes (577 rows of x,
 * F16 weights), alternated in one process, best of 5 each, beside the f32 and f16 FMA peaks of
 * the same threads: `build/bench/half_products [THREADS]`. "half" packs W's f16 panels as it
 * goes (the text model's products); "packed" reads panels made once (the tower's, at load).
 * First, the two microkernels alone on one thread, their panels hot in cache (K block 512, 16
 * tiles of W: what one block of the half product keeps in L2). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/clock.h"
#include "bench_util.h"
#include "tensor/kernels.h"
#include "tensor/tensor.h"

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    tensor_pool *pool = tensor_pool_create(threads);
    if (!pool) return 1;
    if (!tensor_half_available()) {
        printf("no AVX512-FP16 on this CPU (or below the AVX-512 path): tensor_matmul_half is the exact product\n");
        tensor_pool_destroy(pool);
        return 0;
    }
    {
        const tensor_kernels *k = tensor_kernels_active();
        enum { KCB = 512, TILES = 16, ITERS = 2000 };
        uint32_t *a = aligned_alloc(64, sizeof(uint32_t) * TENSOR_MR_MAX * KCB);
        float *af = aligned_alloc(64, sizeof(float) * TENSOR_MR_MAX * KCB);
        uint16_t *b = aligned_alloc(64, sizeof(uint16_t) * (size_t)TENSOR_HNR_MAX * KCB * TILES);
        float *bf = aligned_alloc(64, sizeof(float) * (size_t)TENSOR_HNR_MAX * KCB * TILES);
        float *c = aligned_alloc(64, sizeof(float) * TENSOR_MR_MAX * TENSOR_HNR_MAX * TILES), un[TENSOR_MR_MAX];
        if (!a || !af || !b || !bf || !c) return 1;
        for (int i = 0; i < TENSOR_MR_MAX * KCB; i++) a[i] = 0x3c003c00u, af[i] = 1.0f; /* 1.0 */
        for (int i = 0; i < TENSOR_HNR_MAX * KCB * TILES; i++) b[i] = 0x1000, bf[i] = 0.001f;
        for (int i = 0; i < TENSOR_MR_MAX; i++) un[i] = 1.0f;
        size_t ldc = (size_t)TENSOR_HNR_MAX * TILES;
        double best[2] = {1e9, 1e9};
        for (int rep = 0; rep < 5; rep++) {
            double t0 = llava_now_s();
            for (int it = 0; it < ITERS; it++)
                for (int t = 0; t < TILES; t++)
                    k->micro_half(KCB, a, b + (size_t)t * k->hnr * KCB, c + (size_t)t * k->hnr, ldc, un, 1);
            double t1 = llava_now_s();
            for (int it = 0; it < ITERS; it++)
                for (int t = 0; t < TILES * k->hnr / k->nr; t++)
                    k->micro(KCB, af, bf + (size_t)t * k->nr * KCB, c + (size_t)t * k->nr, ldc, 1);
            double t2 = llava_now_s();
            best[0] = t1 - t0 < best[0] ? t1 - t0 : best[0];
            best[1] = t2 - t1 < best[1] ? t2 - t1 : best[1];
        }
        double flop = 2.0 * ITERS * TILES * k->mr * k->hnr * KCB;
        printf("microkernels, one thread, hot: f16 %.0f GFLOP/s, f32 %.0f GFLOP/s (%.2fx)\n", flop / best[0] * 1e-9,
               flop / best[1] * 1e-9, best[1] / best[0]);
        free(a), free(af), free(b), free(bf), free(c);
    }
    double peak32 = tensor_probe_peak_flops(pool, 0.5), peak16 = tensor_half_probe_peak_flops(pool, 0.5);
    printf("threads %d: f32 FMA peak %.0f GFLOP/s, f16 FMA peak %.0f GFLOP/s\n", threads, peak32 * 1e-9, peak16 * 1e-9);
    static const int shapes[][3] = {{577, 1024, 1024}, {577, 4096, 1024}, {577, 1024, 4096}, {576, 4096, 1024}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *x = malloc(sizeof(float) * (size_t)M * K), *y = malloc(sizeof(float) * (size_t)M * N);
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)N * K);
        if (!x || !y || !w) return 1;
        unsigned s = 1;
        for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f;
        for (size_t i = 0; i < (size_t)N * K; i++)
            w[i] = llava_f32_to_f16(0.02f * ((float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f));
        float absmax = tensor_absmax(w, LLAVA_DTYPE_F16, (size_t)N * K);
        uint16_t *panels = malloc(tensor_half_packed_bytes(N, K));
        if (!panels || tensor_half_pack(pool, panels, w, LLAVA_DTYPE_F16, N, K) != 0) return 1;
        double best[3] = {1e9, 1e9, 1e9};
        for (int rep = 0; rep < 5; rep++)
            for (int v = 0; v < 3; v++) {
                double t0 = llava_now_s();
                if (v == 2) tensor_matmul_half_packed(pool, y, x, w, LLAVA_DTYPE_F16, panels, absmax, NULL, M, N, K);
                else if (v == 1) tensor_matmul_half(pool, y, x, w, LLAVA_DTYPE_F16, absmax, NULL, M, N, K);
                else tensor_matmul(pool, y, x, w, LLAVA_DTYPE_F16, NULL, M, N, K);
                double dt = llava_now_s() - t0;
                if (dt < best[v]) best[v] = dt;
            }
        double flop = 2.0 * M * N * K;
        printf("%4d x %4d x %4d: exact %6.2f ms (%2.0f %% of f32 peak)  half %6.2f ms (%2.0f %% of f16 peak) %.2fx  "
               "packed %6.2f ms (%2.0f %%) %.2fx\n",
               M, N, K, best[0] * 1e3, 100 * flop / best[0] / peak32, best[1] * 1e3, 100 * flop / best[1] / peak16,
               best[0] / best[1], best[2] * 1e3, 100 * flop / best[2] / peak16, best[0] / best[2]);
        free(panels);
        free(x);
        free(y);
        free(w);
    }
    tensor_pool_destroy(pool);
    return 0;
}
