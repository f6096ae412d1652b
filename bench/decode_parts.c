/* The parts of a 7B's token and prompt, each alone, on synthetic data of the model's shapes:
 * where decode stands against the read bandwidth and where attention's time goes.
 *
 *   decode_parts [THREADS] [LAYERS]
 *
 * products  the 7 products of LAYERS decoder layers (distinct weights, beyond the L3) with one
 *           row of x, Q4_0 and Q8_0, as GB/s of weights beside the read probe of this process,
 *           the weights read through 4 KiB pages and through 2 MiB ones (passes alternated);
 *   kv        decode attention over a 7B KV cache (f32, then f16) of 657 positions for 32 layers, as GB/s of
 *           cache read;
 *   prompt    one decoder layer's causal attention over 641 positions (32 heads of 128) and one
 *           vision layer's (577 tokens, 16 heads of 64), ms.
 * Best of several passes each; the read probe runs right before and right after each GB/s part
 * and the better of the two is its bound (on a shared machine the bandwidth moves by the minute).
 * Nothing here is a model run: `llava bench -m DIR` is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "base/clock.h"
#include "bench_util.h"
#include "model/internal.h"
#include "tensor/quant.h"
#include "tensor/tensor.h"

enum { D = 4096, F = 11008, HEADS = 32, HD = 128 };

static void fill(float *x, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u + seed) >> 8 & 0xffff) / 65536.0f - 0.5f;
}

static double probe(tensor_pool *pool) { return tensor_probe_read_bandwidth(pool, (size_t)1 << 30, 4); }

static double max2(double a, double b) { return a > b ? a : b; }

/* size bytes of anonymous memory in 4 KiB pages (huge = 0) or, where the kernel grants them,
 * 2 MiB ones: the same weights read through either, to show what the TLB costs a decode. */
static char *map_pages(size_t size, int huge) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    return p;
}

/* This process's anonymous memory in huge pages (Linux; 0 where it cannot be read). */
static double anon_huge_bytes(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

static double products_pass(tensor_pool *pool, const char *q, size_t total, const size_t *offs,
                            const int (*shape)[2], int layers, tensor_qtype t, float *y, const float *x) {
    double t0 = llava_now_s();
    for (int l = 0; l < layers; l++)
        for (int j = 0; j < 7; j++)
            tensor_matmul_q(pool, y, x, q + (size_t)l * total + offs[j], t, NULL, 1, shape[j][0], shape[j][1]);
    return llava_now_s() - t0;
}

static int products(tensor_pool *pool, int layers, tensor_qtype t) {
    static const int shape[7][2] = {{D, D}, {D, D}, {D, D}, {D, D}, {F, D}, {F, D}, {D, F}};
    size_t total = 0, offs[7];
    for (int j = 0; j < 7; j++) {
        offs[j] = total;
        total += tensor_quant_bytes(t, shape[j][0], shape[j][1]);
    }
    size_t bytes = total * (size_t)layers;
    float *w = malloc((size_t)F * D * sizeof(float)), *x = malloc(F * sizeof(float)), *y = malloc(F * sizeof(float));
    char *q = map_pages(bytes, 0), *qh = map_pages(bytes, 1);
    if (!w || !x || !y || !q || !qh) {
        fprintf(stderr, "decode_parts: out of memory for %d layers\n", layers);
        return 1;
    }
    fill(w, (size_t)F * D, 1);
    fill(x, F, 2);
    double huge0 = anon_huge_bytes();
    for (int l = 0; l < layers; l++)
        for (int j = 0; j < 7; j++)
            tensor_quantize(pool, q + (size_t)l * total + offs[j], t, w, LLAVA_DTYPE_F32, shape[j][0], shape[j][1]);
    memcpy(qh, q, bytes);
    double huge = anon_huge_bytes() - huge0;
    /* The two copies alternate pass by pass, so the machine's minute weighs on both alike. */
    enum { PASSES = 9 };
    double bw = probe(pool), dt[2][PASSES];
    for (int pass = 0; pass < PASSES; pass++) {
        dt[0][pass] = products_pass(pool, q, total, offs, shape, layers, t, y, x);
        dt[1][pass] = products_pass(pool, qh, total, offs, shape, layers, t, y, x);
    }
    bw = max2(bw, probe(pool));
    for (int h = 0; h < 2; h++) {
        qsort(dt[h], PASSES, sizeof(double), cmp_double);
        double s = dt[h][0], gbs = (double)bytes / s * 1e-9, med = (double)bytes / dt[h][PASSES / 2] * 1e-9;
        printf("products %s, %s: %d layers, %.0f MB in %.1f ms: %.2f GB/s, %.0f %% of the read probe (%.2f GB/s); "
               "median pass %.0f %%\n",
               tensor_qtype_name(t), h ? "2 MiB pages" : "4 KiB pages", layers, (double)bytes * 1e-6, s * 1e3, gbs,
               100 * gbs / (bw * 1e-9), bw * 1e-9, 100 * med / (bw * 1e-9));
    }
    printf("  (%.0f %% of the 2 MiB-page copy got huge pages; time 2 MiB / 4 KiB pages: best %.3f, median %.3f)\n",
           100 * huge / (double)bytes, dt[1][0] / dt[0][0], dt[1][PASSES / 2] / dt[0][PASSES / 2]);
    free(w);
    free(x);
    free(y);
    munmap(q, bytes);
    munmap(qh, bytes);
    return 0;
}

/* attention_run as the model calls it; causal: the decoder's cache layout, else the tower's.
 * K and V of type kv (F32, or F16 as an f16 KV cache holds them); half: the tower's attention
 * under --half vision. */
static double attention_ms(tensor_pool *pool, llava_dtype kv, int n_q, int n_keys, int heads, int hd, int causal,
                           int half, int layers, size_t *scratch_bytes) {
    int dv = heads * hd;
    size_t layer = (size_t)heads * n_keys * hd, es = llava_dtype_size(kv);
    float *q = malloc((size_t)n_q * dv * sizeof(float)), *o = malloc((size_t)n_q * dv * sizeof(float));
    float *k = malloc(layer * layers * sizeof(float)), *v = malloc(layer * layers * sizeof(float));
    int threads = tensor_pool_threads(pool);
    size_t per = attention_scratch_floats(n_q, n_keys, hd, half);
    float *scratch = malloc(per * threads * sizeof(float));
    if (!q || !o || !k || !v || !scratch) {
        fprintf(stderr, "decode_parts: out of memory for attention\n");
        exit(1);
    }
    fill(q, (size_t)n_q * dv, 3);
    fill(k, layer * layers, 4);
    fill(v, layer * layers, 5);
    uint16_t *k16 = NULL, *v16 = NULL; /* the cache as an f16 one holds it */
    if (kv == LLAVA_DTYPE_F16) {
        k16 = malloc(layer * layers * sizeof *k16);
        v16 = malloc(layer * layers * sizeof *v16);
        if (!k16 || !v16) {
            fprintf(stderr, "decode_parts: out of memory for attention\n");
            exit(1);
        }
        tensor_to_f16(k16, k, layer * layers);
        tensor_to_f16(v16, v, layer * layers);
    }
    const char *kc = k16 ? (const char *)k16 : (const char *)k, *vc = v16 ? (const char *)v16 : (const char *)v;
    double best = 1e30;
    for (int pass = 0; pass < 7; pass++) {
        double t0 = llava_now_s();
        for (int l = 0; l < layers; l++) {
            attention_args a = {
                .q = q, .ldq = dv, .k = kc + layer * l * es, .v = vc + layer * l * es,
                .kv_type = kv, .ldk = causal ? hd : dv,
                .kv_head_stride = causal ? (size_t)n_keys * hd : (size_t)hd, .out = o, .ldo = dv,
                .n_q = n_q, .n_keys = n_keys, .n_heads = heads, .n_kv_heads = heads, .hd = hd,
                .scale = 0.088f, .causal = causal, .q_pos0 = n_keys - n_q, .half = half, .scratch = scratch,
                .scratch_per_thread = per,
            };
            attention_run(pool, &a);
        }
        double dt = llava_now_s() - t0;
        if (dt < best) best = dt;
    }
    *scratch_bytes = per * sizeof(float);
    free(q);
    free(o);
    free(k);
    free(v);
    free(k16);
    free(v16);
    free(scratch);
    return best * 1e3;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, layers = argc > 2 ? atoi(argv[2]) : 8;
    if (threads < 1 || threads > 256 || layers < 1 || layers > 32) {
        fprintf(stderr, "usage: decode_parts [THREADS (1..256)] [LAYERS (1..32)]\n");
        return 2;
    }
    tensor_pool *pool = tensor_pool_create(threads);
    if (!pool) return 1;
    printf("%d threads, kernel path %s, int8 path %s\n", threads, tensor_isa_name(tensor_isa_active()),
           tensor_quant_path_name());
    if (products(pool, layers, TENSOR_Q4_0) || products(pool, layers, TENSOR_Q8_0)) return 1;
    size_t sb;
    double bw = probe(pool);
    double ms = attention_ms(pool, LLAVA_DTYPE_F32, 1, 657, HEADS, HD, 1, 0, 32, &sb);
    double ms16 = attention_ms(pool, LLAVA_DTYPE_F16, 1, 657, HEADS, HD, 1, 0, 32, &sb);
    bw = max2(bw, probe(pool));
    for (int f16 = 0; f16 < 2; f16++) {
        double kv = 2.0 * 32 * HEADS * 657 * HD * (f16 ? 2 : 4), t = f16 ? ms16 : ms;
        printf("kv: decode attention, 32 layers x 657 positions, %s cache (%.0f MB): %.1f ms, %.2f GB/s, %.0f %% of "
               "the read probe (%.2f GB/s)\n", f16 ? "f16" : "f32", kv * 1e-6, t, kv / t * 1e-6,
               100 * kv / t * 1e-6 / (bw * 1e-9), bw * 1e-9);
    }
    ms = attention_ms(pool, LLAVA_DTYPE_F32, 641, 641, HEADS, HD, 1, 0, 1, &sb);
    printf("prompt: causal attention of one 7B layer, 641 positions: %.2f ms (scratch %.2f MiB per thread)\n", ms,
           (double)sb / (1024.0 * 1024.0));
    /* the tower's attention exact and, where there is a half path, half (--half vision), alternated */
    for (int round = 0; round < 3; round++)
        for (int half = 0; half < 1 + tensor_half_available(); half++) {
            ms = attention_ms(pool, LLAVA_DTYPE_F32, 577, 577, 16, 64, 0, half, 1, &sb);
            printf("prompt: attention of one vision layer, 577 tokens, %s: %.2f ms (scratch %.2f MiB per thread)\n",
                   half ? "half" : "exact", ms, (double)sb / (1024.0 * 1024.0));
        }
    tensor_pool_destroy(pool);
    return 0;
}
