/* The prompt's products beside the BLAS libraries Debian ships, in the same seconds.
 *
 *   blas_products [THREADS] [ROUNDS] [M N K]
 *
 * What a demanding reader asks of "the products reach N % of the peak": what do the mature
 * libraries reach on this machine? Each round measures the burst probe `llava bench` judges by
 * (0.2 s), then runs, in an order that rotates from round to round, y[M,N] = x[M,K] · W[N,K]ᵀ:
 * llava.c's exact product on F16 weights (the model's), on F32 weights, and cblas_sgemm of each
 * BLAS library found (F32 weights: they have no F16 input), every one on a fresh copy of W so
 * that it comes from memory as a model's weights do. The libraries are opened at run time
 * (dlopen: nothing of them is linked into the project): Debian's OpenBLAS (libopenblas-dev) and
 * BLIS (libblis-pthread-dev). Both pick their kernels from the CPU's model number and may not
 * know a recent one (OpenBLAS 0.3.21 runs its generic "Prescott" kernels on an unknown Xeon,
 * at a sixth of the speed), so unless OPENBLAS_CORETYPE or BLIS_ARCH_TYPE is set this asks for
 * the AVX-512 (or AVX2) kernels the CPU has. Printed per shape: medians of the times, each as a
 * share of the probe of its own round, and llava.c's time over each library's, round by round.
 * Default shapes: the 641-position prompt's projections (4096 × 4096), up (11008 × 4096) and
 * down (4096 × 11008). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "bench_util.h"
#include "base/dtype.h"
#include "tensor/tensor.h"

enum { MAX_ROUNDS = 64, MAX_RUNS = 4 };

/* cblas_sgemm's enums, as every CBLAS defines them. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);

typedef struct blas_lib {
    const char *name;
    const char *soname;
    const char *env;      /* the variable that chooses its kernels */
    const char *avx512;   /* its name for the AVX-512 kernels */
    const char *avx2;     /* and for the AVX2 ones */
    sgemm_fn sgemm;
    char kernels[64];
} blas_lib;

static blas_lib libs[] = {
    {"OpenBLAS", "libopenblas.so.0", "OPENBLAS_CORETYPE", "SkylakeX", "Haswell", NULL, ""},
    {"BLIS", "libblis.so.4", "BLIS_ARCH_TYPE", "skx", "haswell", NULL, ""},
};
enum { N_LIBS = sizeof libs / sizeof libs[0] };

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Opens one library, with its kernels chosen for this CPU unless the user chose, and its
 * threads set; leaves sgemm NULL (and says why) when it cannot be had. */
static void open_lib(blas_lib *l, int threads) {
    const char *want = getenv(l->env);
    if (!want || !*want) {
        __builtin_cpu_init();
        const char *kern = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
                               ? l->avx512
                               : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? l->avx2 : NULL;
        if (kern) setenv(l->env, kern, 1);
    }
    void *h = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "%s: not found (%s); apt-get install libopenblas-dev libblis-pthread-dev\n", l->name,
                dlerror());
        return;
    }
    l->sgemm = (sgemm_fn)(uintptr_t)dlsym(h, "cblas_sgemm");
    if (!l->sgemm) {
        fprintf(stderr, "%s: no cblas_sgemm in %s\n", l->name, l->soname);
        return;
    }
    void (*set_openblas)(int) = (void (*)(int))(uintptr_t)dlsym(h, "openblas_set_num_threads");
    char *(*corename)(void) = (char *(*)(void))(uintptr_t)dlsym(h, "openblas_get_corename");
    void (*set_blis)(long) = (void (*)(long))(uintptr_t)dlsym(h, "bli_thread_set_num_threads");
    int (*arch_id)(void) = (int (*)(void))(uintptr_t)dlsym(h, "bli_arch_query_id");
    const char *(*arch_name)(int) = (const char *(*)(int))(uintptr_t)dlsym(h, "bli_arch_string");
    if (set_openblas) set_openblas(threads);
    if (set_blis) set_blis(threads);
    const char *k = corename ? corename() : arch_id && arch_name ? arch_name(arch_id()) : "?";
    snprintf(l->kernels, sizeof l->kernels, "%s", k ? k : "?");
}

static void fill(float *v, size_t n, float scale, unsigned *s) {
    for (size_t i = 0; i < n; i++) {
        *s = *s * 1103515245u + 12345u;
        v[i] = scale * ((float)(*s >> 9) / 8388608.0f - 1.0f);
    }
}

static int run_shape(tensor_pool *pool, int threads, int rounds, int M, int N, int K) {
    size_t wn = (size_t)N * K;
    /* enough copies of W to fill 1 GiB, so that none is still in cache when it comes round */
    size_t copies = ((size_t)1 << 30) / (wn * sizeof(float)) + 2;
    float *x = tensor_alloc(sizeof(float) * (size_t)M * K), *y = tensor_alloc(sizeof(float) * (size_t)M * N);
    float *wf = tensor_alloc(sizeof(float) * wn * copies);
    uint16_t *wh = tensor_alloc(sizeof(uint16_t) * wn * copies);
    if (!x || !y || !wf || !wh) {
        fprintf(stderr, "blas_products: out of memory for %d x %d x %d\n", M, N, K);
        free(x), free(y), free(wf), free(wh);
        return 1;
    }
    unsigned s = 1;
    fill(x, (size_t)M * K, 1.0f, &s);
    fill(wf, wn, 0.02f, &s);
    for (size_t i = 0; i < wn; i++) wf[i] = llava_f16_to_f32(wh[i] = llava_f32_to_f16(wf[i]));
    for (size_t c = 1; c < copies; c++) {
        memcpy(wf + c * wn, wf, wn * sizeof(float));
        memcpy(wh + c * wn, wh, wn * sizeof(uint16_t));
    }
    /* runs: 0 llava F16, 1 llava F32, 2.. the libraries found */
    const char *names[MAX_RUNS] = {"llava.c F16 W", "llava.c F32 W"};
    const blas_lib *run_lib[MAX_RUNS] = {NULL, NULL};
    int runs = 2;
    for (int i = 0; i < N_LIBS && runs < MAX_RUNS; i++)
        if (libs[i].sgemm) {
            run_lib[runs] = &libs[i];
            names[runs++] = libs[i].name;
        }
    static double t[MAX_RUNS][MAX_ROUNDS], share[MAX_RUNS][MAX_ROUNDS], ratio[MAX_RUNS][MAX_ROUNDS];
    double probe[MAX_ROUNDS];
    double flops = 2.0 * M * (double)N * K;
    size_t next = 0;
    for (int r = 0; r < rounds; r++) {
        probe[r] = tensor_probe_peak_flops(pool, 0.2);
        for (int j = 0; j < runs; j++) {
            int v = (j + r) % runs;
            size_t c = next++ % copies;
            /* OpenBLAS's threads spin for a while after each call: let them settle first */
            usleep(200000);
            double t0 = llava_now_s();
            if (v == 0) tensor_matmul(pool, y, x, wh + c * wn, LLAVA_DTYPE_F16, NULL, M, N, K);
            else if (v == 1) tensor_matmul(pool, y, x, wf + c * wn, LLAVA_DTYPE_F32, NULL, M, N, K);
            else
                run_lib[v]->sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, M, N, K, 1.0f, x, K, wf + c * wn, K,
                                  0.0f, y, N);
            t[v][r] = llava_now_s() - t0;
            share[v][r] = probe[r] > 0 ? flops / t[v][r] / probe[r] : 0;
        }
        for (int v = 0; v < runs; v++) ratio[v][r] = t[0][r] / t[v][r];
    }
    printf("\n%d x %d x %d, %d thread%s, %d rounds (probe median %.1f GFLOP/s)\n", M, N, K, threads,
           threads == 1 ? "" : "s", rounds,
           1e-9 * median(probe, rounds));
    printf("| product | median ms | of the probe (median) | llava.c F16's time ÷ its time (median; below 1: llava.c faster) |\n");
    printf("| --- | --- | --- | --- |\n");
    for (int v = 0; v < runs; v++) {
        char label[96];
        snprintf(label, sizeof label, "%s%s%s%s", names[v], run_lib[v] ? " sgemm (" : "",
                 run_lib[v] ? run_lib[v]->kernels : "", run_lib[v] ? ")" : "");
        printf("| %s | %.1f | %.1f %% | %.3f |\n", label, 1e3 * median(t[v], rounds), 100 * median(share[v], rounds),
               median(ratio[v], rounds));
    }
    fflush(stdout);
    free(x), free(y), free(wf), free(wh);
    return 0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, rounds = argc > 2 ? atoi(argv[2]) : 9;
    /* THREADS, ROUNDS and M N K come in that order: 0, 1, 2 or 5 arguments */
    if (threads < 1 || threads > 256 || rounds < 1 || rounds > MAX_ROUNDS || argc == 4 || argc == 5 || argc > 6) {
        fprintf(stderr, "usage: blas_products [THREADS] [ROUNDS (1-%d)] [M N K]\n", MAX_ROUNDS);
        return 2;
    }
    int shapes[3][3] = {{641, 4096, 4096}, {641, 11008, 4096}, {641, 4096, 11008}}, n_shapes = 3;
    if (argc == 6) {
        for (int i = 0; i < 3; i++) {
            shapes[0][i] = atoi(argv[3 + i]);
            if (shapes[0][i] < 1 || shapes[0][i] > 65536) {
                fprintf(stderr, "blas_products: M, N and K must be 1-65536\n");
                return 2;
            }
        }
        n_shapes = 1;
    }
    for (int i = 0; i < N_LIBS; i++) open_lib(&libs[i], threads);
    for (int i = 0; i < N_LIBS; i++)
        if (libs[i].sgemm) printf("%s: kernels %s\n", libs[i].name, libs[i].kernels);
    tensor_pool *pool = tensor_pool_create(threads);
    if (!pool) return 1;
    int rc = 0;
    for (int i = 0; i < n_shapes && !rc; i++) rc = run_shape(pool, threads, rounds, shapes[i][0], shapes[i][1], shapes[i][2]);
    tensor_pool_destroy(pool);
    return rc;
}
