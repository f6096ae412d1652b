/* The row and element-wise kernels of tensor.h (norms, softmax, activations, RoPE, conversion):
 * each forwards to the active ISA's table; RoPE's angles are computed here once per call. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tensor/kernels.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#define MXCSR_FTZ 0x8000u /* results below 2^-126 written as zero */
#define MXCSR_DAZ 0x0040u /* operands below 2^-126 read as zero */

unsigned tensor_fp_enter(void) {
    unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | MXCSR_FTZ | MXCSR_DAZ);
    return saved;
}

void tensor_fp_leave(unsigned saved) { _mm_setcsr(saved); }
#else
unsigned tensor_fp_enter(void) { return 0; }
void tensor_fp_leave(unsigned saved) { (void)saved; }
#endif

void *tensor_alloc(size_t bytes) {
    if (bytes > SIZE_MAX - 63) return NULL;
    /* aligned_alloc wants a multiple of the alignment; 0 bytes still gets a line */
    size_t size = bytes ? (bytes + 63) / 64 * 64 : 64;
    return aligned_alloc(64, size);
}

void tensor_layernorm(float *y, const float *x, const float *w, const float *b, int rows, int n,
                      float eps) {
    const tensor_kernels *k = tensor_kernels_active();
    for (int r = 0; r < rows; r++) k->layernorm(y + (size_t)r * n, x + (size_t)r * n, w, b, n, eps);
}

void tensor_rmsnorm(float *y, const float *x, const float *w, int rows, int n, float eps) {
    const tensor_kernels *k = tensor_kernels_active();
    for (int r = 0; r < rows; r++) k->rmsnorm(y + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

void tensor_softmax(float *x, int rows, int n) {
    const tensor_kernels *k = tensor_kernels_active();
    for (int r = 0; r < rows; r++) k->softmax(x + (size_t)r * n, n);
}

void tensor_gelu(float *x, size_t n) { tensor_kernels_active()->gelu(x, n); }
void tensor_gelu_tanh(float *x, size_t n) { tensor_kernels_active()->gelu_tanh(x, n); }
void tensor_quick_gelu(float *x, size_t n) { tensor_kernels_active()->quick_gelu(x, n); }
void tensor_silu(float *x, size_t n) { tensor_kernels_active()->silu(x, n); }
void tensor_silu_mul(float *gate, const float *up, size_t n) {
    tensor_kernels_active()->silu_mul(gate, up, n);
}

/* transformers: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)),
 * with base a Python float and the exponent a float32 tensor, so the power is a float32 pow of
 * float32(base) and the division a float32 division. (Debian's torch takes the power of the first
 * multiple of 16 entries with SLEEF's vector powf, the rest with powf; the two agree bit for bit
 * for LLaMA's θ = 1e4, head_dim 128, and differ by one ulp in rare entries elsewhere, e.g. 1 of
 * 64 for θ = 1e6, head_dim 128.) */
void tensor_rope_inv_freq(float *inv_freq, int head_dim, double theta) {
    float base = (float)theta, dim = (float)head_dim;
    for (int i = 0; i < head_dim / 2; i++) {
        float e = (float)(2 * i) / dim;
        inv_freq[i] = 1.0f / powf(base, e);
    }
}

void tensor_rope_angles(float *cos_out, float *sin_out, int head_dim, float pos,
                        const float *inv_freq) {
    for (int i = 0; i < head_dim / 2; i++) {
        float a = pos * inv_freq[i]; /* float32 product, as the float32 matmul in transformers */
        cos_out[i] = cosf(a);
        sin_out[i] = sinf(a);
    }
}

void tensor_rope_apply(float *x, int n_heads, int head_dim, const float *cos_a,
                       const float *sin_a) {
    const tensor_kernels *k = tensor_kernels_active();
    int h = head_dim / 2;
    for (int hd = 0; hd < n_heads; hd++) k->rope(x + (size_t)hd * head_dim, cos_a, sin_a, h);
}

void tensor_rope(float *x, int n_heads, int head_dim, float pos, const float *inv_freq) {
    /* Angle tables on the stack up to head_dim 512 (every model we load); beyond, per pair. */
    float cs[256], sn[256];
    int h = head_dim / 2;
    if (h > 256) {
        for (int i = 0; i < h; i++) {
            float a = pos * inv_freq[i], c = cosf(a), s = sinf(a);
            for (int hd = 0; hd < n_heads; hd++) {
                float *v = x + (size_t)hd * head_dim;
                float p = v[i], q = v[i + h];
                v[i] = p * c - q * s;
                v[i + h] = q * c + p * s;
            }
        }
        return;
    }
    tensor_rope_angles(cs, sn, head_dim, pos, inv_freq);
    tensor_rope_apply(x, n_heads, head_dim, cs, sn);
}

void tensor_to_f16(uint16_t *dst, const float *src, size_t n) { tensor_kernels_active()->to_f16(dst, src, n); }

void tensor_to_f32(float *dst, const void *src, llava_dtype type, size_t n) {
    int f = tensor_wfmt_of(type);
    if (f < 0) {
        for (size_t i = 0; i < n; i++) dst[i] = __builtin_nanf("");
        return;
    }
    tensor_kernels_active()->to_f32[f](dst, src, n);
}
