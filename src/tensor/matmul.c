/* The drivers of the two products: they split the work across the pool and call the active
 * ISA's kernels. Few rows of x (decode): each weight row is read once, straight from the mmap.
 * Many rows (prompt, image): a cache-blocked GEMM that converts each panel of W to f32 once and
 * reuses it for every row of x, with a register-blocked microkernel. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"

/* From this many rows of x on, the blocked GEMM beats the decode kernel (which re-reads each
 * block of W rows from L1/L2 for every 4 rows of x). Measured on one Xeon core (AVX-512),
 * 4096 × 4096 F16, CPU time: M = 16: 7.9 ms decode vs 11.0 ms GEMM; M = 24: 11.3 vs 10.9;
 * M = 32: 14.8 vs 14.1. */
#define GEMM_MIN_M 24
/* K block: an x panel of mr × KC floats stays in L1 while the W tiles (nr × KC) stream from L2. */
#define KC 256
/* Columns of W (weight rows) packed per K block: NC × KC floats (512 KiB), kept in L2. */
#define NC 512
/* GEMM work items hold at least this many columns (whole W tiles, a few per thread). */
#define MIN_ITEM_N 256
/* Rows of W per decode work item (a few per thread and per cache-sized run of W). */
#define GEMV_ITEM_N 64

typedef struct mm_ctx {
    const tensor_kernels *k;
    tensor_pool *pool; /* for its per-thread scratch; NULL: allocate per call */
    float *y;
    size_t ldy;
    const float *x;
    size_t ldx;
    const float *xp; /* x packed once for the whole product (gemm_product), or NULL */
    size_t xp_rows;  /* its rows: M rounded up to whole panels */
    const void *w;  /* W [N, K] (tensor_matmul), or B [K, N] when nn (matmul_nn) */
    size_t ldw;
    int fmt;        /* w's tensor_wfmt */
    int nn;         /* w is B [K, N] */
    size_t esize;   /* bytes per element of w */
    const float *bias;
    const uint32_t *xw;           /* half-precision products: x as f16 words (to_half_words) */
    const uint16_t *wp;           /* and W's panels made once (tensor_half_pack), or NULL */
    const float *unscale;         /* and the factor undoing each row's scale */
    int M, N, K;
    int item_n, item_m; /* columns and rows per work item */
    int items_n, items_m;
    atomic_int next;
} mm_ctx;

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* restrict: y never overlaps the bias (tensor_matmul's contract), which lets the compiler
 * vectorize the loop (it was a tenth of a half-precision product's time as scalar adds). */
static void add_bias(const mm_ctx *c, int m0, int m1, int n0, int n1) {
    if (!c->bias) return;
    const float *restrict b = c->bias + n0;
    for (int m = m0; m < m1; m++) {
        float *restrict yr = c->y + (size_t)m * c->ldy + n0;
        for (int n = 0; n < n1 - n0; n++) yr[n] += b[n];
    }
}

/* ---- few rows: stream W once ---- */

static void gemv_item(void *ctx, int item, int ith) {
    (void)ith;
    const mm_ctx *c = ctx;
    int n0 = item * c->item_n, n1 = n0 + c->item_n > c->N ? c->N : n0 + c->item_n;
    const char *w = (const char *)c->w + (size_t)n0 * c->ldw * c->esize;
    c->k->gemv[c->fmt](c->y + n0, c->ldy, c->x, c->ldx, w, c->ldw, c->M, n1 - n0, c->K);
    add_bias(c, 0, c->M, n0, n1);
}

/* ---- many rows: blocked GEMM ---- */

/* An edge tile (fewer than mr rows or nr columns) goes through a full-size scratch tile: the
 * mt × nt part that exists is copied in (when accumulating) and out. */
static void edge_tile(float *dst, size_t ldd, const float *src, size_t lds, int mt, int nt) {
    for (int i = 0; i < mt; i++) memcpy(dst + (size_t)i * ldd, src + (size_t)i * lds, (size_t)nt * sizeof(float));
}

typedef struct gemm_scratch {
    float *ap;  /* packed x panel: mr × KC */
    float *bp;  /* packed W block: NC × KC */
    float *ct;  /* one edge tile: mr × nr */
} gemm_scratch;

/* Loop order: a block of NC columns at a time, its K blocks in order, so that the block of y
 * stays in L2 across K and consecutive packs read each W row onward (the hardware prefetcher
 * follows them; W usually comes from memory). Within a K block, an x panel (mr rows) sits in L1
 * while the packed W tiles stream from L2 through the microkernel. */
static void gemm_block(const mm_ctx *c, const gemm_scratch *s, int m0, int m1, int n0, int n1) {
    const tensor_kernels *k = c->k;
    const int mr = k->mr, nr = k->nr;
    for (int nb = n0; nb < n1; nb += NC) {
        int ne = nb + NC < n1 ? nb + NC : n1;
        for (int kb = 0; kb < c->K; kb += KC) {
            int kc = c->K - kb < KC ? c->K - kb : KC, acc = kb > 0;
            for (int n = nb; n < ne; n += nr) {
                int nt = ne - n < nr ? ne - n : nr;
                float *bt = s->bp + (size_t)(n - nb) * KC;
                if (!c->nn)
                    k->pack_w[c->fmt](bt, (const char *)c->w + ((size_t)n * c->ldw + kb) * c->esize,
                                      c->ldw, nt, kc);
                else
                    k->pack_b[c->fmt](bt, (const char *)c->w + ((size_t)kb * c->ldw + n) * c->esize, c->ldw, nt, kc);
            }
            for (int mb = m0; mb < m1; mb += mr) {
                int mt = m1 - mb < mr ? m1 - mb : mr;
                /* items start on whole panels (gemm_run): mb is a multiple of mr, so this panel of
                 * the packed x sits mb · kc floats into its K block */
                const float *ap = c->xp ? c->xp + (size_t)kb * c->xp_rows + (size_t)mb * kc : s->ap;
                if (!c->xp) k->pack_x(s->ap, c->x + (size_t)mb * c->ldx + kb, c->ldx, mt, kc);
                for (int n = nb; n < ne; n += nr) {
                    int nt = ne - n < nr ? ne - n : nr;
                    const float *bt = s->bp + (size_t)(n - nb) * KC;
                    float *yt = c->y + (size_t)mb * c->ldy + n;
                    if (mt == mr && nt == nr) {
                        k->micro(kc, ap, bt, yt, c->ldy, acc);
                        continue;
                    }
                    if (acc) edge_tile(s->ct, (size_t)nr, yt, c->ldy, mt, nt);
                    k->micro(kc, ap, bt, s->ct, (size_t)nr, acc);
                    edge_tile(yt, c->ldy, s->ct, (size_t)nr, mt, nt);
                }
            }
        }
    }
    add_bias(c, m0, m1, n0, n1);
}

/* The exact product of one item with no scratch memory: the decode kernel, only slower. */
static void item_without_scratch(const mm_ctx *c, int m0, int m1, int n0, int n1) {
    const tensor_kernels *k = c->k;
    if (!c->nn) {
        const char *w = (const char *)c->w + (size_t)n0 * c->ldw * c->esize;
        k->gemv[c->fmt](c->y + (size_t)m0 * c->ldy + n0, c->ldy, c->x + (size_t)m0 * c->ldx, c->ldx, w, c->ldw,
                        m1 - m0, n1 - n0, c->K);
        add_bias(c, m0, m1, n0, n1);
    } else {
        for (int m = m0; m < m1; m++)
            k->gemv_nn[c->fmt](c->y + (size_t)m * c->ldy + n0, c->x + (size_t)m * c->ldx,
                                (const char *)c->w + (size_t)n0 * c->esize, c->ldw, n1 - n0, c->K);
    }
}

/* One thread's share of a blocked product: items taken in turn, each run by block on `bytes`
 * of scratch (the pool keeps each thread's between calls: attention makes many small GEMMs), or
 * exactly without it when none can be had. */
static void run_items(mm_ctx *c, int ith, size_t bytes,
                      void (*block)(const mm_ctx *c, char *mem, int m0, int m1, int n0, int n1)) {
    char *mem = c->pool ? tensor_pool_scratch(c->pool, ith, bytes) : NULL;
    int owned = 0;
    if (!mem) {
        mem = tensor_alloc(bytes);
        owned = 1;
    }
    int n_items = c->items_n * c->items_m;
    for (;;) {
        int item = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (item >= n_items) break;
        int im = item / c->items_n, in = item % c->items_n;
        int m0 = im * c->item_m, m1 = m0 + c->item_m < c->M ? m0 + c->item_m : c->M;
        int n0 = in * c->item_n, n1 = n0 + c->item_n < c->N ? n0 + c->item_n : c->N;
        if (mem) block(c, mem, m0, m1, n0, n1);
        else item_without_scratch(c, m0, m1, n0, n1);
    }
    if (owned) free(mem);
}

#define BYTES_AP ((size_t)TENSOR_MR_MAX * KC * sizeof(float))
#define BYTES_BP ((size_t)NC * KC * sizeof(float))
#define BYTES_CT ((size_t)TENSOR_MR_MAX * TENSOR_NR_MAX * sizeof(float))

static void gemm_item(const mm_ctx *c, char *mem, int m0, int m1, int n0, int n1) {
    gemm_scratch s = {(float *)mem, (float *)(mem + BYTES_AP), (float *)(mem + BYTES_AP + BYTES_BP)};
    memset(s.ct, 0, BYTES_CT); /* an edge tile's unused part: numbers, not leftovers */
    gemm_block(c, &s, m0, m1, n0, n1);
}

static void gemm_slice(void *ctx, int ith, int nth) {
    (void)nth;
    run_items(ctx, ith, BYTES_AP + BYTES_BP + BYTES_CT, gemm_item);
}

/* Splits N into items of whole tiles, a few per thread; when N alone gives too few items
 * (a narrow product with many rows) M is split too. */
static void gemm_run(tensor_pool *pool, mm_ctx *c, void (*slice)(void *ctx, int ith, int nth), int mr, int nr,
                     int min_item_n, int per_thread) {
    int nth = tensor_pool_threads(pool);
    int want = nth == 1 ? 1 : per_thread * nth;
    int item_n = round_up((c->N + want - 1) / want, nr);
    if (item_n < min_item_n) item_n = round_up(min_item_n, nr);
    c->item_n = item_n;
    c->items_n = (c->N + item_n - 1) / item_n;
    c->item_m = c->M;
    c->items_m = 1;
    if (c->items_n < want && c->M >= 4 * mr) {
        int split = (want + c->items_n - 1) / c->items_n;
        int item_m = round_up((c->M + split - 1) / split, mr);
        if (item_m < 4 * mr) item_m = 4 * mr;
        /* A number of items the threads divide evenly (577 rows in items of 84 made 7: one thread
         * then works through a whole item while the other waits), when a slightly larger item
         * gets there. */
        for (int m = item_m; m <= item_m + item_m / 2; m += mr)
            if ((c->items_n * ((c->M + m - 1) / m)) % nth == 0) {
                item_m = m;
                break;
            }
        c->item_m = item_m;
        c->items_m = (c->M + item_m - 1) / item_m;
    }
    atomic_init(&c->next, 0);
    if (c->items_n * c->items_m == 1 || nth == 1) slice(c, 0, 1);
    else tensor_pool_run(pool, slice, c);
}

/* One panel of x (mr rows), every K block, into the layout gemm_block reads: K block after K
 * block, and within one, the panels in row order (block kb at xp + kb · xp_rows, its panel p at
 * + p · mr · kc): an item walks its panels of a block as one sequential stream. */
static void pack_x_item(void *ctx, int item, int ith) {
    (void)ith;
    const mm_ctx *c = ctx;
    int mr = c->k->mr, mb = item * mr, mt = c->M - mb < mr ? c->M - mb : mr;
    for (int kb = 0; kb < c->K; kb += KC) {
        int kc = c->K - kb < KC ? c->K - kb : KC;
        c->k->pack_x((float *)c->xp + (size_t)kb * c->xp_rows + (size_t)mb * kc, c->x + (size_t)mb * c->ldx + kb,
                     c->ldx, mt, kc);
    }
}

/* The blocked product. When W is wider than one column block, x is packed once for all items
 * and threads into the pool's shared scratch, instead of once per item and block of NC columns
 * (8 times for 4096 columns, 22 for 11008): that packing was 5 % of a prompt's samples, and
 * packing once took 1.5 % off the products' time (docs/PERFORMANCE.md). Without a pool
 * (attention's small products) or the memory, each item packs its own panels. */
static void gemm_product(tensor_pool *pool, mm_ctx *c) {
    int mr = c->k->mr, panels = (c->M + mr - 1) / mr;
    if (c->N > NC) {
        size_t rows = (size_t)panels * (size_t)mr;
        float *xp = tensor_pool_shared_scratch(pool, rows * (size_t)c->K * sizeof(float));
        if (xp) {
            c->xp = xp;
            c->xp_rows = rows;
            tensor_pool_for(pool, panels, pack_x_item, c);
        }
    }
    gemm_run(pool, c, gemm_slice, mr, c->k->nr, MIN_ITEM_N, 4);
}

void tensor_matmul(tensor_pool *pool, float *y, const float *x, const void *w, llava_dtype wtype,
                   const float *bias, int M, int N, int K) {
    if (M <= 0 || N <= 0) return;
    int fmt = tensor_wfmt_of(wtype);
    if (fmt < 0) {
        /* A caller bug (the model checks dtypes at load): make it loud in the output. */
        for (size_t i = 0; i < (size_t)M * (size_t)N; i++) y[i] = __builtin_nanf("");
        return;
    }
    mm_ctx c = {.k = tensor_kernels_active(), .pool = pool, .y = y, .ldy = (size_t)N, .x = x, .ldx = (size_t)K,
                .w = w, .ldw = (size_t)K, .fmt = fmt, .esize = llava_dtype_size(wtype),
                .bias = bias, .M = M, .N = N, .K = K};
    if (K <= 0) {
        for (int m = 0; m < M; m++) memset(y + (size_t)m * N, 0, (size_t)N * sizeof(float));
        add_bias(&c, 0, M, 0, N);
        return;
    }
    if (M < GEMM_MIN_M) {
        c.item_n = GEMV_ITEM_N;
        int nth = tensor_pool_threads(pool);
        /* Small products: items no smaller than needed to give each thread a few. */
        if (N / (4 * nth) < GEMV_ITEM_N) c.item_n = N / (4 * nth) > 16 ? N / (4 * nth) : 16;
        c.items_n = (N + c.item_n - 1) / c.item_n;
        tensor_pool_for(pool, c.items_n, gemv_item, &c);
        return;
    }
    gemm_product(pool, &c);
}

/* ---- half-precision products ---- */

/* The half GEMM's blocks: twice the K and N of the f32 one, as its panels take half the bytes
 * and its microkernel twice the flops per cycle (so C and the x panels, re-read per block, cost
 * twice as much per flop). The x panel is 14 × 512 words (28 KiB, L1), the W block 1024 × 512
 * f16 (1 MiB, L2). */
#define KC_HALF 512
#define NC_HALF 1024

typedef struct half_scratch {
    uint32_t *ap; /* packed x panel: mr × KC_HALF words */
    uint16_t *bp; /* packed W block: NC_HALF × KC_HALF f16 */
    float *ct;    /* one edge tile: mr × hnr */
} half_scratch;

/* gemm_block's loops, on f16 panels; each row block's scales go with its panel. */
static void gemm_block_half(const mm_ctx *c, const half_scratch *s, int m0, int m1, int n0, int n1) {
    const tensor_kernels *k = c->k;
    const int mr = k->mr, nr = k->hnr;
    for (int nb = n0; nb < n1; nb += NC_HALF) {
        int ne = nb + NC_HALF < n1 ? nb + NC_HALF : n1;
        for (int kb = 0; kb < c->K; kb += KC_HALF) {
            int kc = c->K - kb < KC_HALF ? c->K - kb : KC_HALF, acc = kb > 0;
            for (int n = nb; n < ne && !c->wp; n += nr) {
                int nt = ne - n < nr ? ne - n : nr;
                k->pack_w_half[c->fmt](s->bp + (size_t)(n - nb) * KC_HALF,
                                       (const char *)c->w + ((size_t)n * c->ldw + kb) * c->esize, c->ldw, nt, kc);
            }
            for (int mb = m0; mb < m1; mb += mr) {
                int mt = m1 - mb < mr ? m1 - mb : mr;
                /* the words move as floats do: pack_x only copies */
                k->pack_x((float *)(void *)s->ap, (const float *)(const void *)(c->xw + (size_t)mb * c->ldx + kb),
                          c->ldx, mt, kc);
                float unscale[TENSOR_MR_MAX];
                for (int i = 0; i < mr; i++) unscale[i] = i < mt ? c->unscale[mb + i] : 0.0f;
                for (int n = nb; n < ne; n += nr) {
                    int nt = ne - n < nr ? ne - n : nr;
                    /* n is a multiple of nr: items and blocks are whole tiles */
                    const uint16_t *bt = c->wp ? c->wp + (size_t)kb * (size_t)round_up(c->N, nr) + (size_t)(n / nr) * kc * nr
                                               : s->bp + (size_t)(n - nb) * KC_HALF;
                    float *yt = c->y + (size_t)mb * c->ldy + n;
                    if (mt == mr && nt == nr) {
                        k->micro_half(kc, s->ap, bt, yt, c->ldy, unscale, acc);
                        continue;
                    }
                    if (acc) edge_tile(s->ct, (size_t)nr, yt, c->ldy, mt, nt);
                    k->micro_half(kc, s->ap, bt, s->ct, (size_t)nr, unscale, acc);
                    edge_tile(yt, c->ldy, s->ct, (size_t)nr, mt, nt);
                }
            }
        }
    }
    add_bias(c, m0, m1, n0, n1);
}

#define BYTES_AP_HALF ((size_t)TENSOR_MR_MAX * KC_HALF * sizeof(uint32_t))
#define BYTES_BP_HALF ((size_t)NC_HALF * KC_HALF * sizeof(uint16_t))
#define BYTES_CT_HALF ((size_t)TENSOR_MR_MAX * TENSOR_HNR_MAX * sizeof(float))

static void gemm_item_half(const mm_ctx *c, char *mem, int m0, int m1, int n0, int n1) {
    half_scratch s = {(uint32_t *)mem, (uint16_t *)(mem + BYTES_AP_HALF), (float *)(mem + BYTES_AP_HALF + BYTES_BP_HALF)};
    memset(s.ct, 0, BYTES_CT_HALF);
    gemm_block_half(c, &s, m0, m1, n0, n1);
}

/* Without scratch memory an item is the exact product (more precise, slower). */
static void gemm_slice_half(void *ctx, int ith, int nth) {
    (void)nth;
    run_items(ctx, ith, BYTES_AP_HALF + BYTES_BP_HALF + BYTES_CT_HALF, gemm_item_half);
}

/* The largest |x·scale| any row may have: every f16 sum (TENSOR_HALF_KB products of at most
 * that times w_absmax) stays within 2^14, and values stay well inside f16 (max 65504). */
float tensor_half_x_bound(float w_absmax) {
    float cap = 32768.0f;
    if (w_absmax > 0) {
        float b = 16384.0f / ((float)TENSOR_HALF_KB * w_absmax);
        if (b < cap) cap = b;
    }
    return cap;
}

void tensor_half_row(const tensor_kernels *k, uint32_t *dst, const float *x, size_t n, float cap, float *unscale) {
    float mx = k->absmax_f32(x, n);
    /* 1 for a zero row, or one whose maximum is not finite: the product then carries the inf
     * or NaN as the exact one would */
    int e = 0;
    if (mx > 0 && mx < INFINITY) {
        frexpf(cap / mx, &e);
        e -= 1;
        e = e < -100 ? -100 : e > 100 ? 100 : e;
    }
    *unscale = ldexpf(1.0f, -e);
    k->to_half_words(dst, x, ldexpf(1.0f, e), n);
}

typedef struct half_rows_ctx {
    const tensor_kernels *k;
    const float *x;
    uint32_t *xw;
    float *unscale;
    int M, K;
    float cap;
} half_rows_ctx;

/* HALF_ROWS rows of x into f16 words, each with its own scale (tensor_half_row). */
#define HALF_ROWS 16
static void half_rows_item(void *ctx, int item, int ith) {
    (void)ith;
    const half_rows_ctx *h = ctx;
    int m1 = (item + 1) * HALF_ROWS < h->M ? (item + 1) * HALF_ROWS : h->M;
    for (int m = item * HALF_ROWS; m < m1; m++)
        tensor_half_row(h->k, h->xw + (size_t)m * h->K, h->x + (size_t)m * h->K, (size_t)h->K, h->cap, &h->unscale[m]);
}

void tensor_matmul_half_with(const tensor_kernels *k, tensor_pool *pool, float *y, const float *x,
                             const void *w, llava_dtype wtype, const uint16_t *panels, float w_absmax,
                             const float *bias, int M, int N, int K) {
    int fmt = tensor_wfmt_of(wtype);
    /* Weights f16 cannot hold (or a maximum that is not a number) have no half-precision form. */
    if (M <= 0 || N <= 0 || K <= 0 || fmt < 0 || k->hnr <= 0 || !(w_absmax <= 65504.0f)) {
        tensor_matmul(pool, y, x, w, wtype, bias, M, N, K);
        return;
    }
    uint32_t *xw = tensor_alloc((size_t)M * (size_t)K * sizeof *xw);
    float *unscale = malloc((size_t)M * sizeof *unscale);
    if (!xw || !unscale) {
        free(xw);
        free(unscale);
        tensor_matmul(pool, y, x, w, wtype, bias, M, N, K);
        return;
    }
    half_rows_ctx h = {.k = k, .x = x, .xw = xw, .unscale = unscale, .M = M, .K = K, .cap = tensor_half_x_bound(w_absmax)};
    tensor_pool_for(pool, (M + HALF_ROWS - 1) / HALF_ROWS, half_rows_item, &h);
    mm_ctx c = {.k = k, .pool = pool, .y = y, .ldy = (size_t)N, .x = x, .ldx = (size_t)K,
                .w = w, .ldw = (size_t)K, .fmt = fmt, .esize = llava_dtype_size(wtype),
                .bias = bias, .xw = xw, .wp = panels, .unscale = unscale, .M = M, .N = N, .K = K};
    /* With W's panels made, a block of rows may take every column at no packing cost: items
     * split M, and each x panel serves all N's tiles instead of one item's few (N = 1024 over
     * 2 threads: 2.6 vs 3.8 ms; 4096 columns: 11.6 vs 12.6). */
    gemm_run(pool, &c, gemm_slice_half, k->mr, k->hnr, panels ? N : MIN_ITEM_N, 4);
    free(xw);
    free(unscale);
}

void tensor_matmul_half(tensor_pool *pool, float *y, const float *x, const void *w, llava_dtype wtype,
                        float w_absmax, const float *bias, int M, int N, int K) {
    if (M < GEMM_MIN_M || !tensor_half_available()) {
        tensor_matmul(pool, y, x, w, wtype, bias, M, N, K);
        return;
    }
    tensor_matmul_half_with(tensor_kernels_active(), pool, y, x, w, wtype, NULL, w_absmax, bias, M, N, K);
}

/* ---- W packed once ---- */

typedef struct half_pack_ctx {
    const tensor_kernels *k;
    uint16_t *dst;
    const void *w;
    int fmt;
    size_t esize;
    int N, K;
} half_pack_ctx;

/* The panels in the order the product reads them: K block by K block (KC_HALF, the last one
 * shorter), and in each, tile after tile of nr columns, so that a block of tiles the product
 * keeps in L2 is one contiguous run. (Whole-K panels, one after the other, put every tile's
 * same k at strides of 64·K·2 bytes: one L2 set for all of them, and misses.) Item: one tile of
 * one K block. */
static void half_pack_item(void *ctx, int item, int ith) {
    (void)ith;
    const half_pack_ctx *h = ctx;
    int nr = h->k->hnr, tiles = (h->N + nr - 1) / nr, kb = item / tiles * KC_HALF, t = item % tiles;
    int kc = h->K - kb < KC_HALF ? h->K - kb : KC_HALF, n = t * nr, nt = h->N - n < nr ? h->N - n : nr;
    h->k->pack_w_half[h->fmt](h->dst + (size_t)kb * (size_t)tiles * nr + (size_t)t * kc * nr,
                              (const char *)h->w + ((size_t)n * h->K + kb) * h->esize, (size_t)h->K, nt, kc);
}

size_t tensor_half_packed_bytes_with(const tensor_kernels *k, int N, int K) {
    if (k->hnr <= 0 || N <= 0 || K <= 0) return 0;
    return (size_t)((N + k->hnr - 1) / k->hnr) * (size_t)k->hnr * (size_t)K * sizeof(uint16_t);
}

int tensor_half_pack_with(const tensor_kernels *k, tensor_pool *pool, uint16_t *dst, const void *w,
                          llava_dtype t, int N, int K) {
    int fmt = tensor_wfmt_of(t);
    if (fmt < 0 || k->hnr <= 0 || N <= 0 || K <= 0) return -1;
    half_pack_ctx h = {.k = k, .dst = dst, .w = w, .fmt = fmt, .esize = llava_dtype_size(t), .N = N, .K = K};
    tensor_pool_for(pool, (N + k->hnr - 1) / k->hnr * ((K + KC_HALF - 1) / KC_HALF), half_pack_item, &h);
    return 0;
}

/* The panels' layout is the AVX512-FP16 table's, whatever path is active (only a CPU that has
 * it packs). */
size_t tensor_half_packed_bytes(int N, int K) {
    return tensor_half_available() ? tensor_half_packed_bytes_with(tensor_kernels_for(TENSOR_ISA_AVX512), N, K) : 0;
}

int tensor_half_pack(tensor_pool *pool, uint16_t *dst, const void *w, llava_dtype t, int N, int K) {
    if (!tensor_half_available()) return -1;
    return tensor_half_pack_with(tensor_kernels_for(TENSOR_ISA_AVX512), pool, dst, w, t, N, K);
}

void tensor_matmul_half_packed(tensor_pool *pool, float *y, const float *x, const void *w, llava_dtype wtype,
                               const uint16_t *panels, float w_absmax, const float *bias, int M, int N, int K) {
    tensor_matmul_half_with(tensor_kernels_for(TENSOR_ISA_AVX512), pool, y, x, w, wtype, panels, w_absmax, bias,
                            M, N, K);
}

/* On the magnitude bits: for every format, non-negative values order as their bit patterns, and
 * patterns above infinity's are NaNs (F32 through the kernel table's absmax_f32, which does just
 * that; the 16-bit formats in a loop the compiler vectorizes). */
float tensor_absmax(const void *w, llava_dtype t, size_t n) {
    if (t == LLAVA_DTYPE_F32) return tensor_kernels_active()->absmax_f32(w, n);
    if (t != LLAVA_DTYPE_F16 && t != LLAVA_DTYPE_BF16) return NAN;
    const uint16_t *p = w;
    uint16_t mb = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t v = p[i] & 0x7fff;
        mb = v > mb ? v : mb;
    }
    if (t == LLAVA_DTYPE_F16) return mb > 0x7c00 ? NAN : llava_f16_to_f32(mb);
    return mb > 0x7f80 ? NAN : llava_bf16_to_f32(mb);
}

/* ---- y = x · B with B [K, N] (attention) ---- */

static void nn_rows_item(void *ctx, int item, int ith) {
    (void)ith;
    const mm_ctx *c = ctx;
    int n0 = item * c->item_n, n1 = n0 + c->item_n > c->N ? c->N : n0 + c->item_n;
    const char *b = (const char *)c->w + (size_t)n0 * c->esize;
    for (int m = 0; m < c->M; m++)
        c->k->gemv_nn[c->fmt](c->y + (size_t)m * c->ldy + n0, c->x + (size_t)m * c->ldx, b, c->ldw, n1 - n0, c->K);
}

void tensor_matmul_nn(tensor_pool *pool, float *y, int ldy, const float *x, int ldx,
                      const void *b, llava_dtype btype, int ldb, int M, int N, int K) {
    if (M <= 0 || N <= 0) return;
    int fmt = tensor_wfmt_of(btype);
    if (fmt < 0) { /* a caller bug: loud in the output, as tensor_matmul */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) y[(size_t)m * ldy + n] = __builtin_nanf("");
        return;
    }
    mm_ctx c = {.k = tensor_kernels_active(), .pool = pool, .y = y, .ldy = (size_t)ldy, .x = x, .ldx = (size_t)ldx,
                .w = b, .ldw = (size_t)ldb, .fmt = fmt, .nn = 1, .esize = llava_dtype_size(btype),
                .M = M, .N = N, .K = K};
    if (K <= 0) {
        for (int m = 0; m < M; m++) memset(y + (size_t)m * ldy, 0, (size_t)N * sizeof(float));
        return;
    }
    if (M < GEMM_MIN_M) {
        c.item_n = N < 256 ? N : 256;
        c.items_n = (N + c.item_n - 1) / c.item_n;
        tensor_pool_for(pool, c.items_n, nn_rows_item, &c);
        return;
    }
    gemm_product(pool, &c);
}

int tensor_matmul_supports(llava_dtype t) { return tensor_wfmt_of(t) >= 0; }
