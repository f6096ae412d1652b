/* `llava bench`: measurements. `llava bench kernels` times the products on the 7B shapes against
 * the machine's own bounds (read bandwidth, peak f32 FMA rate). Each mode is one function in the
 * table below; the whole-model benchmark (`llava bench -m DIR`) joins it as another mode. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/dtype.h"
#include "cli/cli.h"
#include "tensor/tensor.h"

/* CPU time of the whole process (all its threads). */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Parses a positive int option value; returns -1 if it is not one. */
static int parse_count(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v > 0 && v <= 4096) ? (int)v : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* llava bench kernels                                                                         */

typedef struct product_result {
    int n, k, batch, threads;
    llava_dtype dtype;
    double seconds;     /* best time of one product */
    double gflops, gbs; /* rates of that time */
    double fraction;    /* of the bound: read bandwidth (batch 1) or peak FMA rate */
    double cpu_share;   /* CPU time / (wall time × threads) of that pass: below 1 on a busy machine */
    double fraction_cpu; /* the same with rate and bound each divided by their CPU share */
} product_result;

/* A bound measured a few times: the best wall-clock rate, and the best rate per CPU share (what
 * the threads reach while they run, which a busy shared machine does not hide). */
typedef struct bound {
    double best, best_cpu;
} bound;

typedef struct kernel_bench {
    int threads;
    int quick;
    tensor_pool *pool;                 /* all threads */
    bound bw_all, bw_one;              /* bytes/s */
    bound peak_all, peak_one;          /* flop/s */
    double pool_empty_us;              /* one run of an empty function on the pool (best batch) */
    product_result results[32];
    int n_results;
} kernel_bench;

static void empty_slice(void *ctx, int ith, int nth) {
    (void)ctx;
    (void)ith;
    (void)nth;
}

/* Fills n 16-bit weights of dtype t with values uniform in [-1, 1). */
static void fill_weights(uint16_t *w, size_t n, llava_dtype t) {
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float v = (float)(s >> 40) / 8388608.0f - 1.0f;
        w[i] = t == LLAVA_DTYPE_F16 ? llava_f32_to_f16(v) : llava_f32_to_bf16(v);
    }
}

/* Times y = x·Wᵀ, cycling through copies of W spread over an arena larger than any cache, as a
 * forward pass of a real model does (each weight comes from memory). Best of several passes:
 * on a shared machine the slow passes measure the neighbours. */
static void time_product(kernel_bench *b, const uint16_t *arena, size_t arena_elems, llava_dtype t,
                         int N, int K, int M, tensor_pool *pool, const float *x, float *y) {
    size_t per = (size_t)N * (size_t)K, copies = arena_elems / per;
    if (copies < 1) copies = 1;
    double min_time = b->quick ? 0.05 : 0.25;
    int reps = b->quick ? 2 : 4;
    double best = INFINITY, share = 0;
    size_t c = 0;
    int nth = tensor_pool_threads(pool);
    tensor_matmul(pool, y, x, arena, t, NULL, M, N, K); /* warm-up: pages, pool threads */
    for (int r = 0; r < reps; r++) {
        int calls = 0;
        double t0 = llava_now_s(), c0 = cpu_s(), dt;
        do {
            tensor_matmul(pool, y, x, arena + (c++ % copies) * per, t, NULL, M, N, K);
            calls++;
            dt = llava_now_s() - t0;
        } while (dt < min_time && calls < 1000);
        if (dt / calls < best) {
            best = dt / calls;
            share = (cpu_s() - c0) / (dt * nth);
        }
    }
    product_result *res = &b->results[b->n_results++];
    res->n = N;
    res->k = K;
    res->batch = M;
    res->threads = nth;
    res->cpu_share = share;
    res->dtype = t;
    res->seconds = best;
    res->gflops = 2.0 * M * (double)N * K / best * 1e-9;
    res->gbs = (double)per * 2 / best * 1e-9;
}

/* Measures the bounds; called before and after the products, keeping the best of each, so that a
 * bound taken while the machine was busy does not inflate the fractions. */
static void keep(bound *bd, double rate, double rate_per_cpu) {
    if (rate > bd->best) bd->best = rate;
    if (rate_per_cpu > bd->best_cpu) bd->best_cpu = rate_per_cpu;
}

static void probe_bounds(kernel_bench *b) {
    size_t bw_bytes = (size_t)1 << 30;
    int reps = b->quick ? 2 : 4;
    double peak_s = b->quick ? 0.2 : 0.5, pc;
    double v = tensor_probe_read_bandwidth_ex(b->pool, bw_bytes, reps, &pc);
    keep(&b->bw_all, v, pc);
    v = tensor_probe_read_bandwidth_ex(NULL, bw_bytes, reps, &pc);
    keep(&b->bw_one, v, pc);
    v = tensor_probe_peak_flops_ex(b->pool, peak_s, &pc);
    keep(&b->peak_all, v, pc);
    v = tensor_probe_peak_flops_ex(NULL, peak_s, &pc);
    keep(&b->peak_one, v, pc);
}

static void set_fractions(kernel_bench *b) {
    for (int i = 0; i < b->n_results; i++) {
        product_result *r = &b->results[i];
        const bound *bd = r->batch == 1 ? (r->threads == 1 ? &b->bw_one : &b->bw_all)
                                        : (r->threads == 1 ? &b->peak_one : &b->peak_all);
        double rate = r->batch == 1 ? r->gbs * 1e9 : r->gflops * 1e9;
        r->fraction = rate / bd->best;
        r->fraction_cpu = r->cpu_share > 0 ? rate / r->cpu_share / bd->best_cpu : 0;
    }
}

static void print_text(const kernel_bench *b) {
    printf("kernel path %s, %d threads\n", tensor_isa_name(tensor_isa_active()), b->threads);
    printf("read bandwidth   %8.2f GB/s (%d threads)   %8.2f GB/s (1 thread)   per CPU share: %.2f / %.2f\n",
           b->bw_all.best * 1e-9, b->threads, b->bw_one.best * 1e-9, b->bw_all.best_cpu * 1e-9,
           b->bw_one.best_cpu * 1e-9);
    printf("peak f32 FMA     %8.1f GFLOP/s (%d threads) %7.1f GFLOP/s (1 thread) per CPU share: %.1f / %.1f\n",
           b->peak_all.best * 1e-9, b->threads, b->peak_one.best * 1e-9, b->peak_all.best_cpu * 1e-9,
           b->peak_one.best_cpu * 1e-9);
    printf("pool empty run   %8.2f us\n\n", b->pool_empty_us);
    printf("%-12s %-5s %5s %7s %10s %9s %8s %9s %5s %9s\n", "W (out×in)", "dtype", "batch", "threads", "ms",
           "GFLOP/s", "GB/s", "of bound", "cpu", "(per cpu)");
    for (int i = 0; i < b->n_results; i++) {
        const product_result *r = &b->results[i];
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", r->n, r->k);
        printf("%-12s %-5s %5d %7d %10.3f %9.1f %8.2f %8.1f%% %4.0f%% %8.1f%% %s\n", shape,
               llava_dtype_name(r->dtype), r->batch, r->threads, r->seconds * 1e3, r->gflops, r->gbs,
               100 * r->fraction, 100 * r->cpu_share, 100 * r->fraction_cpu,
               r->batch == 1 ? "read bandwidth" : "peak FMA");
    }
    printf("\ncpu: CPU time / (wall × threads) during the best pass; well below 100%% means the machine\n"
           "was busy with other work and the wall-clock figures (and bounds) are low. (per cpu): the\n"
           "fraction with the figure and its bound each divided by their CPU share.\n");
}

static void print_json(const kernel_bench *b) {
    printf("{\"isa\":\"%s\",\"threads\":%d,", tensor_isa_name(tensor_isa_active()), b->threads);
    printf("\"read_bandwidth_gbs\":{\"all\":%.3f,\"one\":%.3f,\"all_per_cpu\":%.3f,\"one_per_cpu\":%.3f},",
           b->bw_all.best * 1e-9, b->bw_one.best * 1e-9, b->bw_all.best_cpu * 1e-9, b->bw_one.best_cpu * 1e-9);
    printf("\"peak_gflops\":{\"all\":%.2f,\"one\":%.2f,\"all_per_cpu\":%.2f,\"one_per_cpu\":%.2f},",
           b->peak_all.best * 1e-9, b->peak_one.best * 1e-9, b->peak_all.best_cpu * 1e-9, b->peak_one.best_cpu * 1e-9);
    printf("\"pool_empty_run_us\":%.3f,\"products\":[", b->pool_empty_us);
    for (int i = 0; i < b->n_results; i++) {
        const product_result *r = &b->results[i];
        printf("%s{\"n\":%d,\"k\":%d,\"dtype\":\"%s\",\"batch\":%d,\"threads\":%d,\"ms\":%.4f,"
               "\"gflops\":%.2f,\"gbs\":%.3f,\"bound\":\"%s\",\"fraction\":%.4f,\"cpu_share\":%.3f,\"fraction_per_cpu\":%.4f}",
               i ? "," : "", r->n, r->k, llava_dtype_name(r->dtype), r->batch, r->threads, r->seconds * 1e3,
               r->gflops, r->gbs, r->batch == 1 ? "read_bandwidth" : "peak_fma", r->fraction, r->cpu_share, r->fraction_cpu);
    }
    printf("]}\n");
}

static int bench_kernels(int argc, char **argv) {
    kernel_bench b = {.threads = 0};
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--quick")) {
            b.quick = 1;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if ((b.threads = parse_count(argv[++i])) < 0) return cli_fail("bench kernels: --threads wants a positive count, got '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: llava bench kernels [--threads N] [--json] [--quick]\n"
                   "  GFLOP/s and GB/s of the products on the 7B shapes (F16, BF16; batch 1 and 512;\n"
                   "  1 and N threads) beside the measured read bandwidth and peak f32 FMA rate.\n");
            return 0;
        } else {
            return cli_fail("bench kernels: unknown option '%s' (see --help)", argv[i]);
        }
    }
    b.pool = tensor_pool_create(b.threads);
    if (!b.pool) return cli_fail("bench kernels: cannot start %d threads", b.threads);
    b.threads = tensor_pool_threads(b.pool);

    probe_bounds(&b);
    if (b.bw_all.best <= 0 || b.bw_one.best <= 0) {
        tensor_pool_destroy(b.pool);
        return cli_fail("bench kernels: cannot allocate the 1 GiB bandwidth buffer");
    }
    /* The pool's own cost: an empty function run on every thread, best batch of 1000. */
    b.pool_empty_us = INFINITY;
    for (int batch = 0; batch < 20; batch++) {
        double t0 = llava_now_s();
        for (int i = 0; i < 1000; i++) tensor_pool_run(b.pool, empty_slice, NULL);
        double us = (llava_now_s() - t0) / 1000 * 1e6;
        if (us < b.pool_empty_us) b.pool_empty_us = us;
    }

    static const int shapes[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}; /* out × in */
    static const llava_dtype dtypes[2] = {LLAVA_DTYPE_F16, LLAVA_DTYPE_BF16};
    const int big_m = 512, max_k = 11008, max_n = 11008;
    size_t arena_elems = ((size_t)1 << 30) / sizeof(uint16_t);
    uint16_t *arena = malloc(arena_elems * sizeof(uint16_t));
    float *x = malloc(sizeof(float) * (size_t)big_m * max_k), *y = malloc(sizeof(float) * (size_t)big_m * max_n);
    if (!arena || !x || !y) {
        free(arena);
        free(x);
        free(y);
        tensor_pool_destroy(b.pool);
        return cli_fail("bench kernels: out of memory for the 1 GiB weight arena");
    }
    for (size_t i = 0; i < (size_t)big_m * max_k; i++) x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    for (int d = 0; d < 2; d++) {
        fill_weights(arena, arena_elems, dtypes[d]);
        for (int s = 0; s < 3; s++)
            for (int m = 0; m < 2; m++)
                for (int th = 0; th < 2; th++) {
                    if (th == 1 && b.threads == 1) continue;
                    time_product(&b, arena, arena_elems, dtypes[d], shapes[s][0], shapes[s][1], m ? big_m : 1,
                                 th ? b.pool : NULL, x, y);
                }
    }
    free(arena);
    free(x);
    free(y);
    probe_bounds(&b);
    set_fractions(&b);
    tensor_pool_destroy(b.pool);
    if (json) print_json(&b);
    else print_text(&b);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

typedef struct bench_mode {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} bench_mode;

static const bench_mode modes[] = {
    {"kernels", bench_kernels, "products and machine bounds (read bandwidth, peak FMA rate)"},
};

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && argv[1][0] == '-' && strcmp(argv[1], "-h") && strcmp(argv[1], "--help"))
        return bench_model(argc, argv); /* llava bench -m DIR ... (bench_model.c) */
    if (argc >= 2)
        for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
            if (!strcmp(argv[1], modes[i].name)) return modes[i].run(argc - 1, argv + 1);
    FILE *out = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(out, "usage: llava bench -m DIR [options]   a whole model: image, prompt, decode, beside their\n"
                 "                                     hardware floors (llava bench -m DIR --help)\n"
                 "       llava bench MODE [options]     (llava bench MODE --help)\n\nmodes:\n");
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        fprintf(out, "  %-10s %s\n", modes[i].name, modes[i].summary);
    return out == stdout ? 0 : 2;
}
