/* The model against Hugging Face transformers, stage by stage: for each reference fixture, the
 * reference input_ids and pixel_values go in (so that tokenizer and image code are judged
 * elsewhere), and vision.features, image_features, inputs_embeds, expanded_input_ids and
 * last_logits must match the reference within 1e-4 relative error, and the 16 greedy tokens and
 * the logits at each step (gen_logits) must match too. */
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

typedef struct fixture {
    const char *name;
    int n_threads;
} fixture;

static const st_tensor *ref_tensor(const st_file *f, const char *name) {
    for (size_t i = 0; i < st_file_count(f); i++)
        if (!strcmp(st_file_tensor(f, i)->name, name)) return st_file_tensor(f, i);
    fail_msg("reference tensor %s missing", name);
    return NULL;
}

/* ‖a − b‖ / ‖b‖ in double. */
static double rel_error(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        d += e * e;
        r += (double)b[i] * (double)b[i];
    }
    return sqrt(d) / (sqrt(r) + 1e-30);
}

static void check_close(const char *fx, const char *what, const float *mine, const st_tensor *ref) {
    assert_int_equal(ref->dtype, LLAVA_DTYPE_F32);
    double rel = rel_error(mine, ref->data, (size_t)ref->numel);
    print_message("%-16s %-18s rel %.3g\n", fx, what, rel);
    assert_true(rel <= 1e-4);
}

typedef struct gen_log {
    int32_t ids[64];
    int n;
} gen_log;

static int record(void *user, int32_t id, const char *text, size_t len) {
    gen_log *g = user;
    if (id >= 0 && g->n < 64) g->ids[g->n++] = id;
    return 0;
}

static void run_fixture(const char *name, int n_threads) {
    char dir[512], refpath[512];
    snprintf(dir, sizeof dir, "%s/%s/model", LLAVA_FIXTURES, name);
    snprintf(refpath, sizeof refpath, "%s/%s/ref/reference.safetensors", LLAVA_FIXTURES, name);
    llava_error err;
    st_file *ref = NULL;
    assert_int_equal(st_file_open(refpath, &ref, &err), LLAVA_OK);
    llava_model_options opt;
    llava_model_options_default(&opt);
    opt.n_threads = n_threads;
    opt.prefill_chunk = 7; /* several chunks, none aligned with the image rows */
    llava_model *m = NULL;
    if (llava_model_load(dir, &opt, &m, &err) != LLAVA_OK) fail_msg("%s", err.message);
    llava_model_info info;
    llava_model_get_info(m, &info);

    /* a prepared request made of the reference inputs */
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
    assert_int_equal(p.image_size, info.image_size);

    const st_tensor *ex = ref_tensor(ref, "expanded_input_ids");
    assert_int_equal(ex->numel, p.n_positions);
    size_t rows = (size_t)llava_model_feature_rows(m), n = (size_t)p.n_images;
    float *vf = malloc(n * rows * info.vision_hidden * sizeof(float));
    float *imf = malloc(n * info.tokens_per_image * info.text_hidden * sizeof(float));
    float *emb = malloc((size_t)p.n_positions * info.text_hidden * sizeof(float));
    float *logits = malloc((size_t)info.vocab_size * sizeof(float));
    int64_t *exp_ids = malloc((size_t)p.n_positions * sizeof(int64_t));
    llava_trace trace = {vf, imf, emb, exp_ids, logits};
    llava_session *s = NULL;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    if (llava_evaluate_prompt(s, &p, &trace, NULL, &err) != LLAVA_OK) fail_msg("%s", err.message);

    assert_memory_equal(exp_ids, ex->data, (size_t)p.n_positions * sizeof(int64_t));
    check_close(name, "vision.features", vf, ref_tensor(ref, "vision.features"));
    check_close(name, "image_features", imf, ref_tensor(ref, "image_features"));
    check_close(name, "inputs_embeds", emb, ref_tensor(ref, "inputs_embeds"));
    check_close(name, "last_logits", logits, ref_tensor(ref, "last_logits"));

    /* greedy generation through the KV cache: the same 16 tokens */
    const st_tensor *gen = ref_tensor(ref, "generated_ids");
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    gp.max_tokens = (int)gen->numel;
    gen_log log = {0};
    llava_callbacks cb = {.user = &log, .on_token = record};
    llava_generate_result res;
    if (llava_generate(s, &p, &gp, &cb, &res, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(log.n, gen->numel);
    for (int i = 0; i < log.n; i++) assert_int_equal(log.ids[i], ((const int64_t *)gen->data)[i]);
    assert_int_equal(res.finish_reason, LLAVA_FINISH_LENGTH);
    assert_int_equal(res.completion_tokens, gen->numel);
    assert_int_equal(res.prompt_tokens, p.n_positions);

    /* and the same again on the reused session */
    log.n = 0;
    assert_int_equal(llava_generate(s, &p, &gp, &cb, &res, &err), LLAVA_OK);
    assert_int_equal(log.n, gen->numel);
    for (int i = 0; i < log.n; i++) assert_int_equal(log.ids[i], ((const int64_t *)gen->data)[i]);

    llava_session_free(s);
    llava_model_free(m);
    free(p.ids);
    free(vf);
    free(imf);
    free(emb);
    free(logits);
    free(exp_ids);
    st_file_close(ref);
}

static void test_tiny_f32(void **state) {
    (void)state;
    run_fixture("tiny-f32", 2);
}

static void test_small_f16(void **state) {
    (void)state;
    run_fixture("small-f16", 2);
}

static void test_tiny_bf16_gelu(void **state) {
    (void)state;
    run_fixture("tiny-bf16-gelu", 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_f32),
        cmocka_unit_test(test_small_f16),
        cmocka_unit_test(test_tiny_bf16_gelu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
