/* The model with quantized weights against the transformers references: for each fixture and
 * format, the relative error of the vision features, image features and last logits (reported;
 * bounded loosely, since quantization is an approximation by design), the greedy tokens (Q8_0
 * must give the reference's 16 tokens, whose top-2 margins the fixtures keep wide), and the same
 * bits from a checkpoint written by `llava quantize` as from quantizing at load, and from the
 * files read into memory (no_mmap) as from their mapping. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "tensor/tensor.h"

static const st_tensor *ref_tensor(const st_file *f, const char *name) {
    for (size_t i = 0; i < st_file_count(f); i++)
        if (!strcmp(st_file_tensor(f, i)->name, name)) return st_file_tensor(f, i);
    fail_msg("reference tensor %s missing", name);
    return NULL;
}

static double rel_error(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        d += e * e;
        r += (double)b[i] * (double)b[i];
    }
    return sqrt(d) / (sqrt(r) + 1e-30);
}

typedef struct gen_log {
    int32_t ids[64];
    int n;
} gen_log;

static int record(void *user, int32_t id, const char *text, size_t len) {
    (void)text;
    (void)len;
    gen_log *g = user;
    if (id >= 0 && g->n < 64) g->ids[g->n++] = id;
    return 0;
}

typedef struct outputs {
    float *vf, *imf, *logits;
    size_t n_vf, n_imf, n_logits;
    gen_log gen;
} outputs;

static void outputs_free(outputs *o) {
    free(o->vf);
    free(o->imf);
    free(o->logits);
}

/* Same bits, the same greedy tokens. */
static void assert_same_outputs(const outputs *a, const outputs *b) {
    assert_memory_equal(a->logits, b->logits, b->n_logits * sizeof(float));
    assert_memory_equal(a->imf, b->imf, b->n_imf * sizeof(float));
    assert_int_equal(a->gen.n, b->gen.n);
    assert_memory_equal(a->gen.ids, b->gen.ids, (size_t)b->gen.n * sizeof(int32_t));
}

/* Loads dir with the given quantization (read into memory when no_mmap), runs the reference's
 * inputs, fills o. */
static void run_model(const char *dir, llava_quant q, unsigned half, llava_kv_cache kv, int no_mmap,
                      const st_file *ref, outputs *o) {
    llava_error err;
    llava_model_options opt;
    llava_model_options_default(&opt);
    opt.n_threads = 2;
    opt.quant = q;
    opt.half_parts = half;
    opt.kv_cache = kv;
    opt.no_mmap = no_mmap;
    llava_model *m = NULL;
    if (llava_model_load(dir, &opt, &m, &err) != LLAVA_OK) fail_msg("%s", err.message);
    llava_model_info info;
    llava_model_get_info(m, &info);
    const st_tensor *ids = ref_tensor(ref, "input_ids"), *pix = ref_tensor(ref, "pixel_values");
    llava_prepared p = {0};
    p.n_ids = (int)ids->numel;
    p.ids = malloc((size_t)p.n_ids * sizeof *p.ids);
    for (int i = 0; i < p.n_ids; i++) p.ids[i] = (int32_t)((const int64_t *)ids->data)[i];
    p.n_images = (int)pix->shape[0];
    p.image_size = (int)pix->shape[2];
    p.pixel_values = (float *)pix->data;
    p.n_positions = p.n_ids - p.n_images + p.n_images * info.tokens_per_image;
    p.max_tokens = 16;
    size_t rows = (size_t)llava_model_feature_rows(m), n = (size_t)p.n_images;
    o->n_vf = n * rows * info.vision_hidden;
    o->n_imf = n * info.tokens_per_image * info.text_hidden;
    o->n_logits = (size_t)info.vocab_size;
    o->vf = malloc(o->n_vf * sizeof(float));
    o->imf = malloc(o->n_imf * sizeof(float));
    o->logits = malloc(o->n_logits * sizeof(float));
    llava_trace trace = {o->vf, o->imf, NULL, NULL, o->logits};
    llava_session *s = NULL;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    if (llava_evaluate_prompt(s, &p, &trace, NULL, &err) != LLAVA_OK) fail_msg("%s", err.message);
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    gp.max_tokens = 16;
    gp.ignore_eos = true;
    o->gen.n = 0;
    llava_callbacks cb = {.user = &o->gen, .on_token = record};
    llava_generate_result res;
    if (llava_generate(s, &p, &gp, &cb, &res, &err) != LLAVA_OK) fail_msg("%s", err.message);
    llava_session_free(s);
    llava_model_free(m);
    free(p.ids);
}

/* Runs dir as run_model does, read into memory, and checks the outputs are o's bits (the
 * sources of weights made at load are then kept: tests/test_model_variants.py runs the case
 * that needs them, a tied lm_head quantized at load). */
static void check_read_into_memory(const char *dir, llava_quant q, unsigned half, const st_file *ref,
                                   const outputs *o) {
    outputs r = {0};
    run_model(dir, q, half, LLAVA_KV_F32, 1, ref, &r);
    assert_same_outputs(&r, o);
    outputs_free(&r);
}

/* Prints o's errors against the reference and its greedy tokens' agreement, checks the errors
 * against bound, and returns how many of the reference's greedy tokens o has. */
static int report(const char *fixture, const char *what, const outputs *o, const st_file *ref, double bound) {
    const st_tensor *gen = ref_tensor(ref, "generated_ids");
    double e_vf = rel_error(o->vf, ref_tensor(ref, "vision.features")->data, o->n_vf);
    double e_imf = rel_error(o->imf, ref_tensor(ref, "image_features")->data, o->n_imf);
    double e_log = rel_error(o->logits, ref_tensor(ref, "last_logits")->data, o->n_logits);
    int same = 0;
    for (int i = 0; i < o->gen.n && i < gen->numel; i++) same += o->gen.ids[i] == ((const int64_t *)gen->data)[i];
    print_message("%-16s %s: vision.features rel %.3g, image_features rel %.3g, last_logits rel %.3g, "
                  "greedy %d/%d tokens as the reference\n",
                  fixture, what, e_vf, e_imf, e_log, same, (int)gen->numel);
    assert_true(e_vf < bound && e_imf < bound && e_log < bound);
    return same;
}

static void run_fixture(const char *name) {
    char dir[512], refpath[512];
    snprintf(dir, sizeof dir, "%s/%s/model", LLAVA_FIXTURES, name);
    snprintf(refpath, sizeof refpath, "%s/%s/ref/reference.safetensors", LLAVA_FIXTURES, name);
    llava_error err;
    st_file *ref = NULL;
    assert_int_equal(st_file_open(refpath, &ref, &err), LLAVA_OK);
    const st_tensor *gen = ref_tensor(ref, "generated_ids");
    static const llava_quant quants[2] = {LLAVA_QUANT_Q8_0, LLAVA_QUANT_Q4_0};
    static const char *names[2] = {"q8_0", "q4_0"};
    /* loose bounds: well above what the formats give on these models (Q8_0 ~2e-2, Q4_0 ~2e-1),
     * well below what a wrong layout or scale gives (~1) */
    static const double bound[2] = {0.05, 0.5};
    for (int qi = 0; qi < 2; qi++) {
        outputs o = {0};
        run_model(dir, quants[qi], 0, LLAVA_KV_F32, 0, ref, &o);
        int same = report(name, names[qi], &o, ref, bound[qi]);
        if (quants[qi] == LLAVA_QUANT_Q8_0) {
            assert_int_equal(o.gen.n, gen->numel);
            assert_int_equal(same, gen->numel);
        }
        check_read_into_memory(dir, quants[qi], 0, ref, &o);

        /* the same model through `llava quantize`: identical bits */
        const char *bin = getenv("LLAVA_BIN");
        if (bin) {
            char out[256], cmd[2048];
            snprintf(out, sizeof out, "%s/test_model_quant_%s_%s", getenv("LLAVA_BUILD_DIR") ? getenv("LLAVA_BUILD_DIR") : ".",
                     name, names[qi]);
            snprintf(cmd, sizeof cmd, "rm -rf '%s' && '%s' quantize -m '%s' -o '%s' --type %s -t 2 2>/dev/null", out,
                     bin, dir, out, names[qi]);
            assert_int_equal(system(cmd), 0);
            outputs f = {0};
            run_model(out, LLAVA_QUANT_NONE, 0, LLAVA_KV_F32, 0, ref, &f);
            assert_memory_equal(f.logits, o.logits, o.n_logits * sizeof(float));
            assert_memory_equal(f.imf, o.imf, o.n_imf * sizeof(float));
            assert_int_equal(f.gen.n, o.gen.n);
            assert_memory_equal(f.gen.ids, o.gen.ids, (size_t)o.gen.n * sizeof(int32_t));
            /* asking for a format again on a quantized checkpoint changes nothing */
            outputs g = {0};
            run_model(out, quants[qi], 0, LLAVA_KV_F32, 0, ref, &g);
            assert_memory_equal(g.logits, o.logits, o.n_logits * sizeof(float));
            outputs_free(&g);
            outputs_free(&f);
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
            assert_int_equal(system(cmd), 0);
        }
        outputs_free(&o);
    }

    /* Half-precision products (where the CPU has them; elsewhere the exact path, error ~1e-6):
     * the vision tower and projector, then every part. f16's 11-bit significand gives ~1e-3;
     * a wrong scale or layout gives ~1. */
    static const unsigned halves[2] = {LLAVA_PART_VISION | LLAVA_PART_PROJECTOR, 0xf};
    static const char *half_names[2] = {"half vision,projector", "half all"};
    for (int hi = 0; hi < 2; hi++) {
        outputs o = {0};
        run_model(dir, LLAVA_QUANT_NONE, halves[hi], LLAVA_KV_F32, 0, ref, &o);
        char what[96];
        snprintf(what, sizeof what, "%s (%s)", half_names[hi], tensor_half_available() ? "AVX512-FP16" : "exact: no FP16 here");
        report(name, what, &o, ref, 1e-2);
        if (hi == 1) check_read_into_memory(dir, LLAVA_QUANT_NONE, halves[hi], ref, &o);
        outputs_free(&o);
    }

    /* An f16 KV cache, the weights as stored: keys and values rounded to f16 (11-bit
     * significand) move the logits by ~1e-3 and, with these margins, no greedy token; the image
     * features do not see the cache (the exact path's ~1e-6). */
    outputs o = {0};
    run_model(dir, LLAVA_QUANT_NONE, 0, LLAVA_KV_F16, 0, ref, &o);
    int same = report(name, "kv-cache f16", &o, ref, 1e-2);
    assert_int_equal(o.gen.n, gen->numel);
    assert_int_equal(same, gen->numel);
    assert_true(rel_error(o.imf, ref_tensor(ref, "image_features")->data, o.n_imf) < 1e-4);
    outputs_free(&o);
    st_file_close(ref);
}

static void test_small_f16(void **state) {
    (void)state;
    run_fixture("small-f16");
}

static void test_tiny_f32(void **state) {
    (void)state;
    run_fixture("tiny-f32");
}

static void test_tiny_bf16_gelu(void **state) {
    (void)state;
    run_fixture("tiny-bf16-gelu");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_f16),
        cmocka_unit_test(test_tiny_f32),
        cmocka_unit_test(test_tiny_bf16_gelu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
