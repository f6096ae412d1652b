/* Q8_0 / Q4_0: quantizing weights into the interleaved blocks of quant.h, the scalar reference
 * kernels every other path is tested against, the choice of path from the CPU, and the driver
 * of the product (activations quantized once per call, then tiles of rows × row groups split
 * over the pool). */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/clock.h"
#include "tensor/quant_kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* ---- formats ---- */

const char *tensor_qtype_name(tensor_qtype t) {
    switch (t) {
    case TENSOR_Q8_0: return "q8_0";
    case TENSOR_Q4_0: return "q4_0";
    default: return "unknown";
    }
}

int tensor_qtype_parse(const char *name, tensor_qtype *out) {
    if (!name) return -1;
    if (!strcasecmp(name, "q8_0")) *out = TENSOR_Q8_0;
    else if (!strcasecmp(name, "q4_0")) *out = TENSOR_Q4_0;
    else return -1;
    return 0;
}

size_t tensor_qtype_block_bytes(tensor_qtype t) {
    return t == TENSOR_Q8_0 ? sizeof(tensor_block_q8_0) : sizeof(tensor_block_q4_0);
}

int tensor_quant_shape_ok(int rows, int cols) {
    return rows > 0 && cols > 0 && cols % TENSOR_QK == 0;
}

static size_t groups_of(int rows) { return ((size_t)rows + TENSOR_QROWS - 1) / TENSOR_QROWS; }

size_t tensor_quant_bytes(tensor_qtype t, int rows, int cols) {
    return groups_of(rows) * (size_t)(cols / TENSOR_QK) * tensor_qtype_block_bytes(t);
}

/* ---- quantizing weights (ggml's rules; ties to even) ---- */

static float weight_at(const void *w, llava_dtype t, size_t i) {
    switch (t) {
    case LLAVA_DTYPE_F16: return llava_f16_to_f32(((const uint16_t *)w)[i]);
    case LLAVA_DTYPE_BF16: return llava_bf16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

/* One row's 32 values of block b into the row's slot r of a Q8_0 block: d = max|x| / 127. */
static void quantize_q8_0_slot(tensor_block_q8_0 *blk, int r, const float *x) {
    float amax = 0;
    for (int k = 0; k < TENSOR_QK; k++) amax = fmaxf(amax, fabsf(x[k]));
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    blk->d[r] = llava_f32_to_f16(d);
    for (int k = 0; k < TENSOR_QK; k++) blk->q[k / 4][r][k % 4] = (uint8_t)((int)nearbyintf(x[k] * id) + 128);
}

/* Q4_0 as ggml's quantize_row_q4_0_ref: d = (the value of largest magnitude) / -8, so that
 * value maps exactly to -8 and the other side gets up to +7. */
static void quantize_q4_0_slot(tensor_block_q4_0 *blk, int r, const float *x) {
    float amax = 0, max = 0;
    for (int k = 0; k < TENSOR_QK; k++)
        if (amax < fabsf(x[k])) {
            amax = fabsf(x[k]);
            max = x[k];
        }
    float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
    blk->d[r] = llava_f32_to_f16(d);
    for (int k = 0; k < 16; k++) {
        int lo = (int8_t)(x[k] * id + 8.5f), hi = (int8_t)(x[16 + k] * id + 8.5f);
        if (lo > 15) lo = 15;
        if (hi > 15) hi = 15;
        blk->q[k / 4][r][k % 4] = (uint8_t)(lo | (hi << 4));
    }
}

typedef struct quantize_ctx {
    uint8_t *dst;
    tensor_qtype t;
    const void *w;
    llava_dtype wt;
    int rows, cols;
} quantize_ctx;

static void quantize_group(void *ctx, int g, int ith) {
    (void)ith;
    const quantize_ctx *c = ctx;
    int nb = c->cols / TENSOR_QK;
    size_t bsize = tensor_qtype_block_bytes(c->t);
    uint8_t *out = c->dst + (size_t)g * nb * bsize;
    memset(out, 0, (size_t)nb * bsize); /* rows past the matrix: zero scale, zero weight */
    float x[TENSOR_QK];
    for (int r = 0; r < TENSOR_QROWS; r++) {
        int row = g * TENSOR_QROWS + r;
        if (row >= c->rows) {
            /* an absent row must read as zero: Q8_0 stores weights + 128, Q4_0 + 8 */
            for (int b = 0; b < nb; b++) {
                uint8_t *blk = out + (size_t)b * bsize;
                if (c->t == TENSOR_Q8_0)
                    for (int j = 0; j < 8; j++) memset(((tensor_block_q8_0 *)blk)->q[j][r], 128, 4);
                else
                    for (int j = 0; j < 4; j++) memset(((tensor_block_q4_0 *)blk)->q[j][r], 0x88, 4);
            }
            continue;
        }
        for (int b = 0; b < nb; b++) {
            size_t base = (size_t)row * c->cols + (size_t)b * TENSOR_QK;
            for (int k = 0; k < TENSOR_QK; k++) x[k] = weight_at(c->w, c->wt, base + k);
            uint8_t *blk = out + (size_t)b * bsize;
            if (c->t == TENSOR_Q8_0) quantize_q8_0_slot((tensor_block_q8_0 *)blk, r, x);
            else quantize_q4_0_slot((tensor_block_q4_0 *)blk, r, x);
        }
    }
}

int tensor_quantize(tensor_pool *pool, void *dst, tensor_qtype t, const void *w, llava_dtype wtype,
                    int rows, int cols) {
    if (!tensor_quant_shape_ok(rows, cols) || (unsigned)t >= TENSOR_QTYPE_COUNT) return -1;
    if (wtype != LLAVA_DTYPE_F32 && wtype != LLAVA_DTYPE_F16 && wtype != LLAVA_DTYPE_BF16) return -1;
    quantize_ctx c = {.dst = dst, .t = t, .w = w, .wt = wtype, .rows = rows, .cols = cols};
    tensor_pool_for(pool, (int)groups_of(rows), quantize_group, &c);
    return 0;
}

void tensor_dequantize_row(float *dst, const void *q, tensor_qtype t, int cols, int r) {
    int nb = cols / TENSOR_QK, g = r / TENSOR_QROWS, rr = r % TENSOR_QROWS;
    size_t bsize = tensor_qtype_block_bytes(t);
    const uint8_t *grp = (const uint8_t *)q + (size_t)g * nb * bsize;
    for (int b = 0; b < nb; b++) {
        float *o = dst + (size_t)b * TENSOR_QK;
        if (t == TENSOR_Q8_0) {
            const tensor_block_q8_0 *blk = (const tensor_block_q8_0 *)(grp + (size_t)b * bsize);
            float d = llava_f16_to_f32(blk->d[rr]);
            for (int k = 0; k < TENSOR_QK; k++) o[k] = (float)(blk->q[k / 4][rr][k % 4] - 128) * d;
        } else {
            const tensor_block_q4_0 *blk = (const tensor_block_q4_0 *)(grp + (size_t)b * bsize);
            float d = llava_f16_to_f32(blk->d[rr]);
            for (int k = 0; k < 16; k++) {
                uint8_t v = blk->q[k / 4][rr][k % 4];
                o[k] = (float)((v & 15) - 8) * d;
                o[16 + k] = (float)((v >> 4) - 8) * d;
            }
        }
    }
}

/* ---- scalar reference kernels ---- */

static void quantize_act_scalar(int8_t *qs, float *d, int32_t *s, const float *x, int K) {
    for (int b = 0; b < K / TENSOR_QK; b++) {
        const float *xb = x + (size_t)b * TENSOR_QK;
        float amax = 0;
        for (int k = 0; k < TENSOR_QK; k++) amax = fmaxf(amax, fabsf(xb[k]));
        float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int k = 0; k < TENSOR_QK; k++) {
            int q = (int)nearbyintf(xb[k] * id);
            qs[(size_t)b * TENSOR_QK + k] = (int8_t)q;
            sum += q;
        }
        d[b] = db;
        s[b] = sum;
    }
}

static void tile_scalar(tensor_qtype t, float *y, size_t ldy, const quant_act *a, int m0, int mr,
                        const uint8_t *w, size_t gstride, int ng, int b0, int b1, int accumulate) {
    size_t bsize = tensor_qtype_block_bytes(t);
    int off = t == TENSOR_Q8_0 ? 128 : 8;
    for (int m = 0; m < mr; m++) {
        const int8_t *aq = a->qs + (size_t)(m0 + m) * a->K;
        const float *ad = a->d + (size_t)(m0 + m) * a->nb;
        const int32_t *as = a->s + (size_t)(m0 + m) * a->nb;
        for (int g = 0; g < ng; g++)
            for (int r = 0; r < TENSOR_QROWS; r++) {
                float *yo = y + (size_t)m * ldy + g * TENSOR_QROWS + r;
                float acc = accumulate ? *yo : 0.0f;
                for (int b = b0; b < b1; b++) {
                    const uint8_t *blk = w + g * gstride + (size_t)(b - b0) * bsize;
                    const int8_t *ab = aq + (size_t)b * TENSOR_QK;
                    int32_t isum = -off * as[b];
                    uint16_t dh;
                    if (t == TENSOR_Q8_0) {
                        const tensor_block_q8_0 *q = (const tensor_block_q8_0 *)blk;
                        dh = q->d[r];
                        for (int k = 0; k < TENSOR_QK; k++) isum += q->q[k / 4][r][k % 4] * ab[k];
                    } else {
                        const tensor_block_q4_0 *q = (const tensor_block_q4_0 *)blk;
                        dh = q->d[r];
                        for (int k = 0; k < 16; k++) {
                            uint8_t v = q->q[k / 4][r][k % 4];
                            isum += (v & 15) * ab[k] + (v >> 4) * ab[16 + k];
                        }
                    }
                    acc = fmaf(llava_f16_to_f32(dh) * ad[b], (float)isum, acc);
                }
                *yo = acc;
            }
    }
}

static void tile_q8_0_scalar(float *y, size_t ldy, const quant_act *a, int m0, int mr, const uint8_t *w,
                             size_t gstride, int ng, int b0, int b1, int accumulate) {
    tile_scalar(TENSOR_Q8_0, y, ldy, a, m0, mr, w, gstride, ng, b0, b1, accumulate);
}

static void tile_q4_0_scalar(float *y, size_t ldy, const quant_act *a, int m0, int mr, const uint8_t *w,
                             size_t gstride, int ng, int b0, int b1, int accumulate) {
    tile_scalar(TENSOR_Q4_0, y, ldy, a, m0, mr, w, gstride, ng, b0, b1, accumulate);
}

static double dot_loop_scalar(long iters) {
    /* 8 independent int32 chains of 4-byte dot products, as the vector paths do per lane */
    volatile int32_t seed = 3;
    int32_t acc[8] = {0}, a = seed, b = seed + 1;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++) acc[j] += (a + j) * b + (a - j) * (b + 1) + a * (b + j) + (a + 1) * b;
    int32_t s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    seed = s;
    return (double)iters * 8 * 4 * 2;
}

const quant_kernels quant_kernels_scalar = {
    .path = QUANT_PATH_SCALAR,
    .name = "scalar",
    .mr = 1,
    .ng = 1,
    .quantize_act = quantize_act_scalar,
    .tile = {tile_q8_0_scalar, tile_q4_0_scalar},
    .dot_loop = dot_loop_scalar,
};

/* ---- choice of path ---- */

static int path_supported_cpuid(quant_path p) {
    if (p == QUANT_PATH_SCALAR) return 1;
#if defined(__x86_64__)
    tensor_isa isa = tensor_isa_detect();
    unsigned a, b, c, d;
    switch (p) {
    case QUANT_PATH_AVX2: return isa >= TENSOR_ISA_AVX2;
    case QUANT_PATH_AVXVNNI:
        /* CPUID.(7,1):EAX bit 4; VEX-encoded, so the AVX2 state check suffices */
        if (isa < TENSOR_ISA_AVX2 || __get_cpuid_max(0, NULL) < 7) return 0;
        __cpuid_count(7, 1, a, b, c, d);
        return (a >> 4) & 1;
    case QUANT_PATH_AVX512VNNI:
        /* CPUID.(7,0):ECX bit 11, on top of the AVX-512 state tensor_isa_detect checked */
        if (isa < TENSOR_ISA_AVX512) return 0;
        __cpuid_count(7, 0, a, b, c, d);
        return (c >> 11) & 1;
    default: return 0;
    }
#else
    return 0;
#endif
}

/* Read once per path, as tensor_isa_detect does (CPUID is slow under a hypervisor and every
 * quantized product asks): 0 unknown, 1 no, 2 yes. */
static atomic_int path_known[QUANT_PATH_COUNT];

int quant_path_supported(quant_path p) {
    if ((int)p < 0 || p >= QUANT_PATH_COUNT) return 0;
    int v = atomic_load_explicit(&path_known[p], memory_order_relaxed);
    if (!v) {
        v = path_supported_cpuid(p) ? 2 : 1;
        atomic_store_explicit(&path_known[p], v, memory_order_relaxed);
    }
    return v == 2;
}

const quant_kernels *quant_kernels_for(quant_path p) {
    switch (p) {
#if defined(__x86_64__)
    case QUANT_PATH_AVX2: return &quant_kernels_avx2;
    case QUANT_PATH_AVXVNNI: return &quant_kernels_avxvnni;
    case QUANT_PATH_AVX512VNNI: return &quant_kernels_avx512vnni;
#endif
    default: return &quant_kernels_scalar;
    }
}

const quant_kernels *quant_kernels_active(void) {
    tensor_isa isa = tensor_isa_active();
    if (isa >= TENSOR_ISA_AVX512 && quant_path_supported(QUANT_PATH_AVX512VNNI))
        return quant_kernels_for(QUANT_PATH_AVX512VNNI);
    if (isa >= TENSOR_ISA_AVX2 && quant_path_supported(QUANT_PATH_AVXVNNI))
        return quant_kernels_for(QUANT_PATH_AVXVNNI);
    if (isa >= TENSOR_ISA_AVX2 && quant_path_supported(QUANT_PATH_AVX2))
        return quant_kernels_for(QUANT_PATH_AVX2);
    return &quant_kernels_scalar;
}

const char *tensor_quant_path_name(void) { return quant_kernels_active()->name; }

/* ---- peak rate probe ---- */

typedef struct dot_probe {
    const quant_kernels *k;
    long iters;
    _Atomic double ops;
} dot_probe;

static void dot_probe_slice(void *ctx, int ith, int nth) {
    (void)ith;
    (void)nth;
    dot_probe *c = ctx;
    double f = c->k->dot_loop(c->iters);
    double old = atomic_load(&c->ops);
    while (!atomic_compare_exchange_weak(&c->ops, &old, old + f)) {}
}

double tensor_quant_probe_peak_ops(tensor_pool *pool, double seconds) {
    dot_probe c = {.k = quant_kernels_active(), .iters = 1000};
    for (;;) { /* calibrate: one pass about a tenth of the time asked for */
        double t0 = llava_now_s();
        c.k->dot_loop(c.iters);
        if (llava_now_s() - t0 > seconds / 10 || c.iters > (1L << 40)) break;
        c.iters *= 2;
    }
    double best = 0, t_end = llava_now_s() + seconds;
    do {
        atomic_store(&c.ops, 0.0);
        double t0 = llava_now_s();
        tensor_pool_run(pool, dot_probe_slice, &c);
        double rate = atomic_load(&c.ops) / (llava_now_s() - t0);
        if (rate > best) best = rate;
    } while (llava_now_s() < t_end);
    return best;
}

/* ---- the product ---- */

/* Activations on the stack up to this many values (a 7B decode row is 11008). */
#define STACK_ACT 16384
/* K is processed in chunks of this many blocks when x has more rows than one tile: the tile's
 * rows of x (4 × 1 KiB) stay in L1 while an item's weights for the chunk (64 rows × 1 KiB)
 * stay in L2. */
#define CHUNK_BLOCKS 32
/* Row groups (16 rows) per work item: 64 rows, a few items per thread on any real shape. */
#define ITEM_GROUPS 4

typedef struct qmm_ctx {
    const quant_kernels *k;
    tensor_qtype t;
    float *y;
    const float *x;
    quant_act a;
    int8_t *qs;
    float *d;
    int32_t *s;
    const uint8_t *w;
    size_t gstride, bsize;
    const float *bias;
    int M, N, K, groups, chunk;
} qmm_ctx;

static void quantize_rows(void *ctx, int m, int ith) {
    (void)ith;
    const qmm_ctx *c = ctx;
    int nb = c->K / TENSOR_QK;
    c->k->quantize_act(c->qs + (size_t)m * c->K, c->d + (size_t)m * nb, c->s + (size_t)m * nb,
                       c->x + (size_t)m * c->K, c->K);
}

static void qmm_item(void *ctx, int item, int ith) {
    (void)ith;
    const qmm_ctx *c = ctx;
    const quant_kernels *k = c->k;
    int g0 = item * ITEM_GROUPS, g1 = g0 + ITEM_GROUPS < c->groups ? g0 + ITEM_GROUPS : c->groups;
    int nb = c->K / TENSOR_QK;
    for (int b0 = 0; b0 < nb; b0 += c->chunk) {
        int b1 = b0 + c->chunk < nb ? b0 + c->chunk : nb;
        for (int m0 = 0; m0 < c->M; m0 += k->mr) {
            int mt = c->M - m0 < k->mr ? c->M - m0 : k->mr;
            for (int g = g0; g < g1; g += k->ng) {
                int gt = g1 - g < k->ng ? g1 - g : k->ng;
                int n0 = g * TENSOR_QROWS;
                const uint8_t *w = c->w + (size_t)g * c->gstride + (size_t)b0 * c->bsize;
                float *yt = c->y + (size_t)m0 * c->N + n0;
                if (n0 + gt * TENSOR_QROWS <= c->N) {
                    k->tile[c->t](yt, (size_t)c->N, &c->a, m0, mt, w, c->gstride, gt, b0, b1, b0 > 0);
                    continue;
                }
                /* The last group of a matrix whose rows are not a multiple of 16: W has the
                 * (zero) rows, y does not; go through a full-width tile. */
                float tmp[QUANT_MR_MAX * QUANT_NG_MAX * TENSOR_QROWS];
                int ld = gt * TENSOR_QROWS, valid = c->N - n0;
                for (int m = 0; m < mt; m++)
                    for (int j = 0; j < ld; j++) tmp[m * ld + j] = j < valid && b0 > 0 ? yt[(size_t)m * c->N + j] : 0;
                k->tile[c->t](tmp, (size_t)ld, &c->a, m0, mt, w, c->gstride, gt, b0, b1, b0 > 0);
                for (int m = 0; m < mt; m++) memcpy(yt + (size_t)m * c->N, tmp + m * ld, (size_t)valid * sizeof(float));
            }
        }
    }
    if (c->bias) {
        int n1 = g1 * TENSOR_QROWS < c->N ? g1 * TENSOR_QROWS : c->N;
        for (int m = 0; m < c->M; m++)
            for (int n = g0 * TENSOR_QROWS; n < n1; n++) c->y[(size_t)m * c->N + n] += c->bias[n];
    }
}

void quant_matmul_with(const quant_kernels *k, tensor_pool *pool, float *y, const float *x,
                       const void *w, tensor_qtype t, const float *bias, int M, int N, int K) {
    if (M <= 0 || N <= 0) return;
    if ((unsigned)t >= TENSOR_QTYPE_COUNT || !tensor_quant_shape_ok(N, K)) {
        /* a caller bug (shapes are checked when weights are quantized): loud in the output */
        for (size_t i = 0; i < (size_t)M * (size_t)N; i++) y[i] = __builtin_nanf("");
        return;
    }
    int nb = K / TENSOR_QK;
    size_t n_act = (size_t)M * (size_t)K;
    int8_t stack_qs[STACK_ACT];
    float stack_d[STACK_ACT / TENSOR_QK];
    int32_t stack_s[STACK_ACT / TENSOR_QK];
    void *heap = NULL;
    qmm_ctx c = {.k = k, .t = t, .y = y, .x = x, .w = w, .bias = bias, .M = M, .N = N, .K = K};
    if (n_act <= STACK_ACT) {
        c.qs = stack_qs;
        c.d = stack_d;
        c.s = stack_s;
    } else {
        size_t nblk = (size_t)M * nb;
        heap = malloc(n_act + nblk * (sizeof(float) + sizeof(int32_t)));
        if (!heap) { /* no memory for the quantized rows: say so in the output */
            for (size_t i = 0; i < (size_t)M * (size_t)N; i++) y[i] = __builtin_nanf("");
            return;
        }
        c.d = heap;
        c.s = (int32_t *)(c.d + nblk);
        c.qs = (int8_t *)(c.s + nblk);
    }
    if (M >= 4) tensor_pool_for(pool, M, quantize_rows, &c);
    else
        for (int m = 0; m < M; m++) quantize_rows(&c, m, 0);
    c.a = (quant_act){.qs = c.qs, .d = c.d, .s = c.s, .K = K, .nb = nb};
    c.bsize = tensor_qtype_block_bytes(t);
    c.gstride = (size_t)nb * c.bsize;
    c.groups = (int)groups_of(N);
    /* one pass over K when x fits in a tile; chunks keep many rows of x in cache otherwise */
    c.chunk = M <= k->mr ? nb : CHUNK_BLOCKS;
    tensor_pool_for(pool, (c.groups + ITEM_GROUPS - 1) / ITEM_GROUPS, qmm_item, &c);
    free(heap);
}

void tensor_matmul_q(tensor_pool *pool, float *y, const float *x, const void *w, tensor_qtype t,
                     const float *bias, int M, int N, int K) {
    quant_matmul_with(quant_kernels_active(), pool, y, x, w, t, bias, M, N, K);
}
