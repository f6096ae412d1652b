/* Peak arithmetic rate of each multiply-add instruction the products could use, on one core:
 * register-only loops of 12 independent chains (enough to cover each instruction's latency),
 * best of several passes. f32 FMA and the int8 dot product are the probes `llava bench` judges
 * its figures by (tensor.h, quant.h); BF16 and FP16 are measured here, and f32 FMA on a subnormal
 * operand with and without the model's flushing mode (tensor.h). Tells which reduced-precision formats can speed up compute-bound work
 * (the vision tower, the prompt) on this CPU: a format whose instruction does fewer operations
 * per second than f32 FMA cannot beat the exact f32 path, whatever it saves in memory.
 *
 *   isa_rates [SECONDS_PER_PASS]
 *
 * The instructions are written in asm so that the compiler cannot add register copies to the
 * loop (GCC does, for some of these intrinsics, and the copies halve the rate). */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/clock.h"
#include "bench_util.h"
#include "tensor/quant.h"
#include "tensor/tensor.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* 12 chains of one instruction on ZMM registers; returns the operations done (2 per
 * multiply-add). OPS: multiply-adds per instruction; B: the constant multiplicand. */
#define RATE_LOOP(NAME, TARGET, INSN, OPS, B)                                                    \
    __attribute__((target(TARGET))) static double NAME(long iters) {                            \
        __m512 acc[12];                                                                         \
        __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(B);                               \
        _Pragma("GCC unroll 12") for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_ps((float)j); \
        for (long i = 0; i < iters; i++) {                                                      \
            _Pragma("GCC unroll 12") for (int j = 0; j < 12; j++)                               \
                __asm__(INSN " %2, %1, %0" : "+v"(acc[j]) : "v"(a), "v"(b));                    \
        }                                                                                       \
        __m512 s = acc[0];                                                                      \
        _Pragma("GCC unroll 12") for (int j = 1; j < 12; j++) s = _mm512_add_ps(s, acc[j]);     \
        volatile float sink = _mm512_reduce_add_ps(s);                                          \
        (void)sink;                                                                             \
        return (double)iters * 12 * 2 * (OPS);                                                  \
    }

RATE_LOOP(loop_dp_bf16, "avx512f,avx512bf16", "vdpbf16ps", 32, 1e-7f)
RATE_LOOP(loop_fma_f16, "avx512f,avx512fp16", "vfmadd231ph", 32, 1e-7f)
/* f32 FMA with a subnormal operand (1e-39 < 2^-126): the price of gradual underflow, paid
 * unless the thread flushes subnormals (tensor_fp_enter) */
RATE_LOOP(loop_fma_f32_subnormal, "avx512f", "vfmadd231ps", 16, 1e-39f)

static double subnormal_rate_ieee(long iters) { return loop_fma_f32_subnormal(iters); }

static double subnormal_rate_flushed(long iters) {
    unsigned saved = tensor_fp_enter();
    double ops = loop_fma_f32_subnormal(iters);
    tensor_fp_leave(saved);
    return ops;
}

static double best_rate(double (*loop)(long), double seconds) {
    long iters = 1000;
    for (;;) { /* calibrate: one pass of about `seconds` */
        double t0 = llava_now_s();
        loop(iters);
        double dt = llava_now_s() - t0;
        if (dt > seconds / 4 || iters > (1L << 40)) {
            iters = (long)((double)iters * seconds / (dt > 0 ? dt : 1e-9)) + 1;
            break;
        }
        iters *= 2;
    }
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        double t0 = llava_now_s();
        double ops = loop(iters);
        double rate = ops / (llava_now_s() - t0);
        if (rate > best) best = rate;
    }
    return best;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.2;
    if (!(seconds > 0 && seconds < 60)) {
        fprintf(stderr, "usage: isa_rates [SECONDS_PER_PASS (0..60)]\n");
        return 2;
    }
    unsigned a, b, c, d, a1 = 0, b1, c1, d1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        fprintf(stderr, "isa_rates: no CPUID leaf 7\n");
        return 1;
    }
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    int has_avx512f = (b >> 16) & 1 && __builtin_cpu_supports("avx512f");
    int has_fp16 = has_avx512f && ((d >> 23) & 1), has_bf16 = has_avx512f && ((a1 >> 5) & 1);
    /* the project's own probes: the kernel path in use, as llava bench measures it */
    double f32 = tensor_probe_peak_flops(NULL, 5 * seconds);
    double int8 = tensor_quant_probe_peak_ops(NULL, 5 * seconds);
    printf("%-12s %-44s %12s %10s\n", "instruction", "arithmetic", "Gop/s", "vs f32");
    printf("%-12s %-44s %12.1f %9.2fx\n", "f32 FMA", tensor_isa_name(tensor_isa_active()), f32 * 1e-9, 1.0);
    printf("%-12s %-44s %12.1f %9.2fx\n", "int8 dot", tensor_quant_path_name(), int8 * 1e-9, int8 / f32);
    struct {
        const char *name, *what;
        int ok;
        double (*loop)(long);
    } rows[] = {
        {"vdpbf16ps", "BF16 pairs into f32 (AVX512_BF16)", has_bf16, loop_dp_bf16},
        {"vfmadd231ph", "f16 FMA, f16 accumulators (AVX512_FP16)", has_fp16, loop_fma_f16},
        {"vfmadd231ps", "f32 FMA, a subnormal operand, IEEE mode", has_avx512f, subnormal_rate_ieee},
        {"vfmadd231ps", "the same, subnormals flushed (the model's mode)", has_avx512f, subnormal_rate_flushed},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!rows[i].ok) {
            printf("%-12s %-44s %12s %10s\n", rows[i].name, rows[i].what, "absent", "-");
            continue;
        }
        double r = best_rate(rows[i].loop, seconds);
        printf("%-12s %-44s %12.1f %9.2fx\n", rows[i].name, rows[i].what, r * 1e-9, r / f32);
    }
    printf("one core; operations = 2 per multiply-add; f32 and int8: llava bench's probes over %.1f s; "
           "the others: best of 5 passes of %.2f s\n", 5 * seconds, seconds);
    return 0;
}
#else
int main(void) {
    printf("isa_rates: x86-64 only\n");
    return 0;
}
#endif
