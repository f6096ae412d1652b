/* Run-time choice of the kernel path: CPUID (+ XGETBV for the OS's saving of the wider register
 * state) says what the CPU can run, LLAVA_ISA or tensor_isa_set may lower it. The choice is a
 * process-wide fact like the CPU itself, kept in one atomic so any thread may read it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>

static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static tensor_isa detect_x86(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return TENSOR_ISA_SCALAR;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return TENSOR_ISA_SCALAR;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return TENSOR_ISA_SCALAR; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return TENSOR_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int f512 = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (!(avx2 && fma && f16c)) return TENSOR_ISA_SCALAR;
    /* AVX-512 also needs the opmask and both halves of the ZMM state enabled (XCR0 bits 5-7). */
    if (f512 && dq && bw && vl && (xcr0 & 0xe0) == 0xe0) return TENSOR_ISA_AVX512;
    return TENSOR_ISA_AVX2;
}
#endif

/* CPUID traps to the hypervisor in a virtual machine (about 9 µs each measured on one), and
 * the quantized products ask for every call: the answer is read once. -1 until then. */
static atomic_int detected_isa = -1;

tensor_isa tensor_isa_detect(void) {
    int v = atomic_load_explicit(&detected_isa, memory_order_relaxed);
    if (v >= 0) return (tensor_isa)v;
#if defined(__x86_64__)
    v = (int)detect_x86();
#else
    v = (int)TENSOR_ISA_SCALAR;
#endif
    atomic_store_explicit(&detected_isa, v, memory_order_relaxed);
    return (tensor_isa)v;
}

/* AVX512-FP16: CPUID.(7,0):EDX bit 23, on top of the AVX-512 state detect_x86 checked. Read
 * once, as the path is: 0 unknown, 1 no, 2 yes. */
static atomic_int half_known;

int tensor_half_available(void) {
    if (tensor_isa_active() < TENSOR_ISA_AVX512) return 0;
    int v = atomic_load_explicit(&half_known, memory_order_relaxed);
    if (!v) {
        v = 1;
#if defined(__x86_64__)
        unsigned a, b, c, d;
        __cpuid_count(7, 0, a, b, c, d);
        if ((d >> 23) & 1) v = 2;
#endif
        atomic_store_explicit(&half_known, v, memory_order_relaxed);
    }
    return v == 2;
}

/* -1 until first use; then the active path. */
static atomic_int active_isa = -1;

static tensor_isa clamp(tensor_isa want) {
    tensor_isa best = tensor_isa_detect();
    return want > best ? best : want;
}

tensor_isa tensor_isa_active(void) {
    int v = atomic_load_explicit(&active_isa, memory_order_relaxed);
    if (v >= 0) return (tensor_isa)v;
    tensor_isa isa = tensor_isa_detect();
    const char *env = getenv("LLAVA_ISA");
    if (env) {
        if (!strcmp(env, "scalar")) isa = clamp(TENSOR_ISA_SCALAR);
        else if (!strcmp(env, "avx2")) isa = clamp(TENSOR_ISA_AVX2);
        else if (!strcmp(env, "avx512")) isa = clamp(TENSOR_ISA_AVX512);
        /* an unknown value keeps the detected path: the variable only ever lowers it */
    }
    int expected = -1;
    atomic_compare_exchange_strong(&active_isa, &expected, (int)isa);
    return (tensor_isa)atomic_load(&active_isa);
}

tensor_isa tensor_isa_set(tensor_isa isa) {
    if ((int)isa < 0 || isa > TENSOR_ISA_AVX512) isa = TENSOR_ISA_SCALAR;
    tensor_isa v = clamp(isa);
    atomic_store(&active_isa, (int)v);
    return v;
}

const char *tensor_isa_name(tensor_isa isa) {
    switch (isa) {
    case TENSOR_ISA_SCALAR: return "scalar";
    case TENSOR_ISA_AVX2: return "avx2";
    case TENSOR_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

const tensor_kernels *tensor_kernels_for(tensor_isa isa) {
    switch (isa) {
#if defined(__x86_64__)
    case TENSOR_ISA_AVX512: return &tensor_kernels_avx512;
    case TENSOR_ISA_AVX2: return &tensor_kernels_avx2;
#endif
    default: return &tensor_kernels_scalar;
    }
}

const tensor_kernels *tensor_kernels_active(void) { return tensor_kernels_for(tensor_isa_active()); }

int tensor_wfmt_of(llava_dtype t) {
    switch (t) {
    case LLAVA_DTYPE_F32: return TENSOR_WFMT_F32;
    case LLAVA_DTYPE_F16: return TENSOR_WFMT_F16;
    case LLAVA_DTYPE_BF16: return TENSOR_WFMT_BF16;
    default: return -1;
    }
}
