/* One attention head over many queries (the prompt, the image) in blocks of the microkernel's
 * rows: a block's scores against the keys it sees (mr × keys, in L1/L2), their softmax, and their
 * product with V, before the next block. The whole score matrix (n_q × n_keys) is never written,
 * keys a causal or windowed block cannot see are not multiplied, and K and V are packed once per
 * head into the panels the GEMM microkernel streams. */
#include <math.h>
#include <string.h>

#include "tensor/kernels.h"

/* Key positions per S·V microkernel call: the block's packed scores for these keys (mr × this)
 * stay in L1 while each 32-wide tile of V streams past them. */
#define KEY_BLOCK 256

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* Sized for the largest tile of any path: the path may change after the caller sized its
 * scratch (LLAVA_ISA, tensor_isa_set), and the layout below rounds by the active one's tile. */
size_t tensor_attention_scratch_floats(int n_keys, int hd) {
    size_t keys = (size_t)round_up(n_keys > 0 ? n_keys : 1, TENSOR_NR_MAX);
    size_t hdp = (size_t)round_up(hd > 0 ? hd : 1, TENSOR_NR_MAX);
    size_t mr = TENSOR_MR_MAX;
    /* packed K, packed V, the block's scores and their packed copy, the packed queries, the
     * block's output; each part rounded to whole cache lines */
    size_t parts[6] = {keys * (size_t)hd, keys * hdp, mr * keys, mr * keys, mr * (size_t)hd, mr * hdp};
    size_t total = 0;
    for (int i = 0; i < 6; i++) total += (parts[i] + 15) / 16 * 16;
    return total;
}

/* The keys query row r sees: [lo, hi]; hi < lo when none. */
static void visible(int r, int n_keys, int pos0, int window, int *lo, int *hi) {
    *lo = 0;
    *hi = n_keys - 1;
    if (pos0 >= 0) {
        int p = pos0 + r;
        if (p < *hi) *hi = p;
        if (window > 0 && p - window > *lo) *lo = p - window;
    }
}

void tensor_attention_head(float *out, size_t ldo, const float *q, size_t ldq, int n_q,
                           const void *kmat, size_t ldk, const void *v, size_t ldv, llava_dtype kv_type,
                           int n_keys, int hd, float scale, int pos0, int window, float *scratch) {
    if (n_q <= 0 || hd <= 0) return;
    const tensor_kernels *k = tensor_kernels_active();
    const int mr = k->mr, nr = k->nr;
    int f = tensor_wfmt_of(kv_type);
    size_t esize = llava_dtype_size(kv_type);
    if (f < 0) { /* a caller bug: loud in the output, as tensor_matmul */
        for (int r = 0; r < n_q; r++)
            for (int d = 0; d < hd; d++) out[(size_t)r * ldo + d] = __builtin_nanf("");
        return;
    }
    if (n_keys <= 0) {
        for (int r = 0; r < n_q; r++) memset(out + (size_t)r * ldo, 0, (size_t)hd * sizeof(float));
        return;
    }
    const int keys = round_up(n_keys, nr), hdp = round_up(hd, nr);
    float *kp = scratch;                                                 /* [keys / nr][hd][nr] */
    float *vp = kp + ((size_t)keys * hd + 15) / 16 * 16;                 /* [hdp / nr][keys][nr] */
    float *s = vp + ((size_t)keys * hdp + 15) / 16 * 16;                 /* [mr][keys] */
    float *sp = s + ((size_t)mr * keys + 15) / 16 * 16;                  /* [keys][mr] */
    float *qp = sp + ((size_t)mr * keys + 15) / 16 * 16;                 /* [hd][mr] */
    float *o = qp + ((size_t)mr * hd + 15) / 16 * 16;                    /* [mr][hdp] */

    for (int j = 0; j < n_keys; j += nr)
        k->pack_w[f](kp + (size_t)j * hd, (const char *)kmat + (size_t)j * ldk * esize, ldk,
                     n_keys - j < nr ? n_keys - j : nr, hd);
    for (int d = 0; d < hd; d += nr) {
        float *dst = vp + (size_t)d * keys;
        k->pack_b[f](dst, (const char *)v + (size_t)d * esize, ldv, hd - d < nr ? hd - d : nr, n_keys);
        /* keys past n_keys meet zero probabilities, but must not be NaN garbage */
        memset(dst + (size_t)n_keys * nr, 0, (size_t)(keys - n_keys) * nr * sizeof(float));
    }

    int lo[TENSOR_MR_MAX], hi[TENSOR_MR_MAX]; /* the block's rows' visible keys; padding sees none */
    for (int r0 = 0; r0 < n_q; r0 += mr) {
        int rows = n_q - r0 < mr ? n_q - r0 : mr;
        /* the key tiles some row of the block sees */
        int lo_min = n_keys, hi_max = -1;
        for (int i = 0; i < mr; i++) {
            lo[i] = 0;
            hi[i] = -1;
            if (i < rows) visible(r0 + i, n_keys, pos0, window, &lo[i], &hi[i]);
            if (hi[i] < lo[i]) continue;
            if (lo[i] < lo_min) lo_min = lo[i];
            if (hi[i] > hi_max) hi_max = hi[i];
        }
        float *ob = out + (size_t)r0 * ldo;
        if (hi_max < 0) { /* no key visible: transformers' fully masked row is undefined; give 0 */
            for (int i = 0; i < rows; i++) memset(ob + (size_t)i * ldo, 0, (size_t)hd * sizeof(float));
            continue;
        }
        int k0 = lo_min / nr * nr, k1 = hi_max / nr * nr + nr; /* whole tiles, k1 <= keys */

        k->pack_x(qp, q + (size_t)r0 * ldq, ldq, rows, hd);
        for (int j = k0; j < k1; j += nr) k->micro(hd, qp, kp + (size_t)j * hd, s + j, (size_t)keys, 0);

        for (int i = 0; i < mr; i++) {
            float *row = s + (size_t)i * keys;
            if (hi[i] < lo[i]) { /* padding row, or a row that sees nothing */
                memset(row + k0, 0, (size_t)(k1 - k0) * sizeof(float));
                continue;
            }
            for (int j = lo[i]; j <= hi[i]; j++) row[j] *= scale;
            k->softmax(row + lo[i], hi[i] - lo[i] + 1);
            if (lo[i] > k0) memset(row + k0, 0, (size_t)(lo[i] - k0) * sizeof(float));
            if (hi[i] + 1 < k1) memset(row + hi[i] + 1, 0, (size_t)(k1 - hi[i] - 1) * sizeof(float));
        }

        /* o = probabilities · V over the visible tiles, KEY_BLOCK keys at a time */
        for (int kb = k0; kb < k1; kb += KEY_BLOCK) {
            int kc = k1 - kb < KEY_BLOCK ? k1 - kb : KEY_BLOCK;
            k->pack_x(sp, s + kb, (size_t)keys, mr, kc);
            for (int d = 0; d < hd; d += nr)
                k->micro(kc, sp, vp + (size_t)d * keys + (size_t)kb * nr, o + d, (size_t)hdp, kb > k0);
        }
        for (int i = 0; i < rows; i++) {
            if (hi[i] < lo[i]) memset(ob + (size_t)i * ldo, 0, (size_t)hd * sizeof(float));
            else memcpy(ob + (size_t)i * ldo, o + (size_t)i * hdp, (size_t)hd * sizeof(float));
        }
    }
}

/* ---- half precision (--half vision) ---- */

/* Key positions per p·v microkernel call: the block's packed probabilities (mr × this words)
 * stay in L1 while the V panel streams past them; a multiple of TENSOR_HALF_KB and of hnr. */
#define KEY_BLOCK_HALF 512

static size_t lines(size_t floats) { return (floats + 15) / 16 * 16; }

size_t tensor_attention_half_scratch_floats(int n_keys, int hd) {
    size_t keys = (size_t)round_up(n_keys > 0 ? n_keys : 1, TENSOR_HNR_MAX);
    size_t d = (size_t)(hd > 0 ? hd : 1), hdp = (size_t)round_up((int)d, TENSOR_HNR_MAX), mr = TENSOR_MR_MAX;
    /* K and V panels (f16, two to a float), the block's scores and their f16 words, the packed
     * words of a key block, the block's query words and their packed copy, one scaled query row,
     * the block's output */
    size_t half = lines(keys * d / 2 + 1) + lines(hdp * keys / 2 + 1) + 2 * lines(mr * keys) +
                  lines((size_t)KEY_BLOCK_HALF * mr) + 2 * lines(mr * d) + lines(d) + lines(mr * hdp);
    /* also room for the exact head, which it falls back to */
    size_t exact = tensor_attention_scratch_floats(n_keys, hd);
    return half > exact ? half : exact;
}

void tensor_attention_head_half_with(const tensor_kernels *k, float *out, size_t ldo, const float *q, size_t ldq,
                                     int n_q, const float *kmat, size_t ldk, const float *v, size_t ldv,
                                     int n_keys, int hd, float scale, float *scratch) {
    if (n_q <= 0 || hd <= 0) return;
    if (n_keys <= 0) {
        for (int r = 0; r < n_q; r++) memset(out + (size_t)r * ldo, 0, (size_t)hd * sizeof(float));
        return;
    }
    const int mr = k->mr, nr = k->hnr;
    const int keys = round_up(n_keys, nr), hdp = round_up(hd, nr);
    size_t d = (size_t)hd;
    uint16_t *kp = (uint16_t *)(void *)scratch;                               /* [keys / nr][hd][nr] */
    uint16_t *vp = (uint16_t *)(void *)(scratch + lines((size_t)keys * d / 2 + 1)); /* [hdp / nr][keys][nr] */
    float *s = scratch + lines((size_t)keys * d / 2 + 1) + lines((size_t)hdp * keys / 2 + 1); /* [mr][keys] */
    uint32_t *pw = (uint32_t *)(void *)(s + lines((size_t)TENSOR_MR_MAX * keys));          /* [mr][keys] */
    uint32_t *pp = pw + lines((size_t)TENSOR_MR_MAX * keys);                              /* [block][mr] */
    uint32_t *qw = pp + lines((size_t)KEY_BLOCK_HALF * TENSOR_MR_MAX);                    /* [mr][hd] */
    uint32_t *qp = qw + lines((size_t)TENSOR_MR_MAX * d);                                 /* [hd][mr] */
    float *qrow = (float *)(void *)(qp + lines((size_t)TENSOR_MR_MAX * d));               /* [hd] */
    float *o = qrow + lines(d);                                                           /* [mr][hdp] */

    /* K as the scores' W (keys × hd), V as the output's W read key-major: each key's row of V is
     * already a row of its panel, so V is converted, not transposed. Padding keys are zero. */
    float k_max = 0, v_max = 0;
    for (int j = 0; j < n_keys; j++) {
        float a = k->absmax_f32(kmat + (size_t)j * ldk, d), b = k->absmax_f32(v + (size_t)j * ldv, d);
        k_max = a > k_max || a != a ? a : k_max;
        v_max = b > v_max || b != b ? b : v_max;
    }
    if (!(k_max <= 65504.0f && v_max <= 65504.0f)) { /* no f16 form (or a NaN): the exact head */
        tensor_attention_head(out, ldo, q, ldq, n_q, kmat, ldk, v, ldv, LLAVA_DTYPE_F32, n_keys, hd, scale, -1, 0,
                              scratch);
        return;
    }
    for (int j = 0; j < keys; j += nr)
        k->pack_w_half[TENSOR_WFMT_F32](kp + (size_t)j * d, kmat + (size_t)j * ldk, ldk,
                                        n_keys - j < nr ? n_keys - j : nr, hd);
    for (int t = 0; t < hdp; t += nr) {
        int w = hd - t < nr ? hd - t : nr;
        for (int j = 0; j < keys; j++) {
            uint16_t *row = vp + (size_t)t * keys + (size_t)j * nr;
            int have = j < n_keys ? w : 0;
            if (have) k->to_f16(row, v + (size_t)j * ldv + t, (size_t)have);
            memset(row + have, 0, (size_t)(nr - have) * sizeof *row);
        }
    }
    /* The same bounds on each row's f16 sums as tensor_matmul_half's. Queries get a scale per
     * row as its x rows do; probabilities are at most 1, so one scale serves every row: scaled,
     * every probability above 6e-5 / scale keeps f16's 11 significant bits, and the ones below
     * would vanish in any f16 sum of the row's larger ones anyway. */
    float q_cap = tensor_half_x_bound(k_max);
    int e = 0;
    frexpf(tensor_half_x_bound(v_max), &e);
    float p_scale = ldexpf(1.0f, e - 1), unq[TENSOR_MR_MAX], unp[TENSOR_MR_MAX];

    for (int r0 = 0; r0 < n_q; r0 += mr) {
        int rows = n_q - r0 < mr ? n_q - r0 : mr;
        for (int i = 0; i < mr; i++) {
            unq[i] = 0;
            unp[i] = i < rows ? 1.0f / p_scale : 0;
        }
        for (int i = 0; i < rows; i++) {
            const float *qr = q + (size_t)(r0 + i) * ldq;
            for (size_t c = 0; c < d; c++) qrow[c] = qr[c] * scale;
            tensor_half_row(k, qw + (size_t)i * d, qrow, d, q_cap, &unq[i]);
        }
        k->pack_x((float *)(void *)qp, (const float *)(const void *)qw, d, rows, hd);
        for (int j = 0; j < keys; j += nr) k->micro_half(hd, qp, kp + (size_t)j * d, s + j, (size_t)keys, unq, 0);

        for (int i = 0; i < rows; i++) {
            float *row = s + (size_t)i * keys;
            k->softmax(row, n_keys);
            memset(row + n_keys, 0, (size_t)(keys - n_keys) * sizeof *row);
            k->to_half_words(pw + (size_t)i * keys, row, p_scale, (size_t)keys);
        }
        for (int kb = 0; kb < keys; kb += KEY_BLOCK_HALF) {
            int kc = keys - kb < KEY_BLOCK_HALF ? keys - kb : KEY_BLOCK_HALF;
            k->pack_x((float *)(void *)pp, (const float *)(const void *)(pw + kb), (size_t)keys, rows, kc);
            for (int t = 0; t < hdp; t += nr)
                k->micro_half(kc, pp, vp + (size_t)t * keys + (size_t)kb * nr, o + t, (size_t)hdp, unp, kb > 0);
        }
        for (int i = 0; i < rows; i++) memcpy(out + (size_t)(r0 + i) * ldo, o + (size_t)i * hdp, d * sizeof(float));
    }
}

void tensor_attention_head_half(float *out, size_t ldo, const float *q, size_t ldq, int n_q, const float *kmat,
                                size_t ldk, const float *v, size_t ldv, int n_keys, int hd, float scale,
                                float *scratch) {
    if (!tensor_half_available()) {
        tensor_attention_head(out, ldo, q, ldq, n_q, kmat, ldk, v, ldv, LLAVA_DTYPE_F32, n_keys, hd, scale, -1, 0,
                              scratch);
        return;
    }
    tensor_attention_head_half_with(tensor_kernels_for(TENSOR_ISA_AVX512), out, ldo, q, ldq, n_q, kmat, ldk, v, ldv,
                                    n_keys, hd, scale, scratch);
}
