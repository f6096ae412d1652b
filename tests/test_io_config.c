/* Tests of src/io/hfconfig: the real llava-1.5-7b-hf and fixture configs parse to their sizes,
 * absent keys take the transformers defaults, and broken configs fail naming the file and key. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"
#include "io/hfconfig.h"

static const char *data_dir(void) {
    const char *d = getenv("LLAVA_TEST_DATA");
    return d ? d : LLAVA_TEST_DATA;
}

static const char *fixtures_dir(void) {
    const char *d = getenv("LLAVA_FIXTURES");
    return d ? d : LLAVA_FIXTURES;
}

static llava_status parse(const char *text, hf_llava_config *c, llava_error *err) {
    return hf_llava_config_parse(text, strlen(text), "cfg.json", c, err);
}

/* Parses text expecting failure with a message containing each of the given fragments. */
static void expect_error(const char *text, const char *frag1, const char *frag2) {
    hf_llava_config c;
    llava_error err;
    llava_error_clear(&err);
    llava_status st = parse(text, &c, &err);
    if (st == LLAVA_OK) fail_msg("accepted: %s", text);
    if (!strstr(err.message, "cfg.json") || !strstr(err.message, frag1) ||
        (frag2 && !strstr(err.message, frag2)))
        fail_msg("for %s\nmessage \"%s\" lacks \"%s\" / \"%s\"", text, err.message, frag1,
                 frag2 ? frag2 : "");
}

static void test_real_llava_15_7b(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/llava-1.5-7b-hf/config.json", data_dir());
    hf_llava_config c;
    llava_error err;
    llava_status st = hf_llava_config_load(path, &c, &err);
    if (st != LLAVA_OK) fail_msg("%s", err.message);
    assert_string_equal(c.model_type, "llava");
    assert_int_equal(c.image_token_index, 32000);
    assert_int_equal(c.pad_token_id, 32001);
    assert_int_equal(c.projector_hidden_act, HF_ACT_GELU);
    assert_int_equal(c.vision_feature_layer, -2);
    assert_false(c.select_full);
    assert_false(c.tie_word_embeddings);
    const hf_text_config *t = &c.text;
    assert_string_equal(t->model_type, "llama");
    assert_int_equal(t->num_hidden_layers, 32);
    assert_int_equal(t->hidden_size, 4096);
    assert_int_equal(t->intermediate_size, 11008);
    assert_int_equal(t->num_attention_heads, 32);
    assert_int_equal(t->num_key_value_heads, 32);
    assert_int_equal(t->head_dim, 128);
    assert_int_equal(t->vocab_size, 32064);
    assert_int_equal(t->max_position_embeddings, 4096);
    assert_true(t->rms_norm_eps == 1e-5);
    assert_true(t->rope_theta == 10000.0);
    assert_int_equal(t->rope_scaling_type, HF_ROPE_NONE);
    assert_int_equal(t->hidden_act, HF_ACT_SILU);
    assert_false(t->tie_word_embeddings);
    assert_false(t->attention_bias);
    assert_int_equal(t->sliding_window, 0);
    const hf_vision_config *v = &c.vision;
    assert_int_equal(v->hidden_size, 1024);
    assert_int_equal(v->num_hidden_layers, 24);
    assert_int_equal(v->num_attention_heads, 16);
    assert_int_equal(v->intermediate_size, 4096);
    assert_int_equal(v->image_size, 336);
    assert_int_equal(v->patch_size, 14);
    assert_int_equal(v->num_channels, 3);
    assert_true(v->layer_norm_eps == 1e-5);
    assert_int_equal(v->hidden_act, HF_ACT_QUICK_GELU);
}

static int json_int(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    assert_non_null(v);
    return (int)json_integer_value(v);
}

static hf_act act_of(const char *s) {
    if (!strcmp(s, "quick_gelu")) return HF_ACT_QUICK_GELU;
    if (!strcmp(s, "gelu")) return HF_ACT_GELU;
    if (!strcmp(s, "silu")) return HF_ACT_SILU;
    fail_msg("activation %s", s);
    return HF_ACT_RELU;
}

/* Each fixture's config.json (a diff to the defaults) parses to the sizes of its spec.json. */
static void test_fixture_configs(void **state) {
    (void)state;
    const char *cases[] = {"tiny-f32", "small-f16", "tiny-bf16-gelu"};
    for (size_t i = 0; i < 3; i++) {
        char path[1024];
        llava_error err;
        snprintf(path, sizeof path, "%s/%s/spec.json", fixtures_dir(), cases[i]);
        json_t *spec = llava_json_load_file(path, 1 << 20, true, &err);
        if (!spec) fail_msg("%s", err.message);
        snprintf(path, sizeof path, "%s/%s/model/config.json", fixtures_dir(), cases[i]);
        hf_llava_config c;
        if (hf_llava_config_load(path, &c, &err) != LLAVA_OK) fail_msg("%s", err.message);
        const json_t *sv = json_object_get(spec, "vision"), *stx = json_object_get(spec, "text");
        assert_int_equal(c.vision.image_size, json_int(sv, "image_size"));
        assert_int_equal(c.vision.patch_size, json_int(sv, "patch_size"));
        assert_int_equal(c.vision.hidden_size, json_int(sv, "hidden_size"));
        assert_int_equal(c.vision.num_hidden_layers, json_int(sv, "num_hidden_layers"));
        assert_int_equal(c.vision.num_attention_heads, json_int(sv, "num_attention_heads"));
        assert_int_equal(c.vision.intermediate_size, json_int(sv, "intermediate_size"));
        assert_int_equal(c.vision.hidden_act, act_of(json_string_value(json_object_get(sv, "hidden_act"))));
        assert_true(c.vision.layer_norm_eps == json_real_value(json_object_get(sv, "layer_norm_eps")));
        assert_int_equal(c.text.hidden_size, json_int(stx, "hidden_size"));
        assert_int_equal(c.text.num_hidden_layers, json_int(stx, "num_hidden_layers"));
        assert_int_equal(c.text.num_attention_heads, json_int(stx, "num_attention_heads"));
        assert_int_equal(c.text.num_key_value_heads, json_int(stx, "num_key_value_heads"));
        assert_int_equal(c.text.intermediate_size, json_int(stx, "intermediate_size"));
        assert_int_equal(c.text.max_position_embeddings, json_int(stx, "max_position_embeddings"));
        const json_t *vocab = json_object_get(stx, "vocab_size");
        /* "auto" = the tokenizer's length: 32000 + <image> + <pad> */
        assert_int_equal(c.text.vocab_size, json_is_integer(vocab) ? (int)json_integer_value(vocab) : 32002);
        assert_true(c.text.rope_theta == json_real_value(json_object_get(stx, "rope_theta")));
        assert_true(c.text.rms_norm_eps == json_real_value(json_object_get(stx, "rms_norm_eps")));
        assert_int_equal(c.text.hidden_act, act_of(json_string_value(json_object_get(stx, "hidden_act"))));
        assert_int_equal(c.projector_hidden_act,
                         act_of(json_string_value(json_object_get(spec, "projector_hidden_act"))));
        assert_int_equal(c.vision_feature_layer, json_int(spec, "vision_feature_layer"));
        assert_false(c.select_full);
        assert_false(c.text.tie_word_embeddings);
        json_decref(spec);
    }
}

/* Only model_type: LlamaConfig() for the text and LlavaConfig's CLIP ViT-L/14-336 vision tower. */
static void test_defaults_when_absent(void **state) {
    (void)state;
    hf_llava_config c;
    llava_error err;
    if (parse("{\"model_type\": \"llava\"}", &c, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(c.image_token_index, 32000);
    assert_int_equal(c.pad_token_id, -1);
    assert_int_equal(c.vision_feature_layer, -2);
    assert_true(c.tie_word_embeddings);
    assert_string_equal(c.text.model_type, "llama");
    assert_int_equal(c.text.vocab_size, 32000);
    assert_int_equal(c.text.hidden_size, 4096);
    assert_int_equal(c.text.intermediate_size, 11008);
    assert_int_equal(c.text.num_hidden_layers, 32);
    assert_int_equal(c.text.num_key_value_heads, 32);
    assert_int_equal(c.text.max_position_embeddings, 2048);
    assert_true(c.text.rms_norm_eps == 1e-6);
    assert_int_equal(c.vision.hidden_size, 1024);
    assert_int_equal(c.vision.intermediate_size, 4096);
    assert_int_equal(c.vision.num_hidden_layers, 24);
    assert_int_equal(c.vision.num_attention_heads, 16);
    assert_int_equal(c.vision.image_size, 336);
    assert_int_equal(c.vision.patch_size, 14);

    /* a present but empty vision_config gets CLIPVisionConfig's own defaults */
    if (parse("{\"model_type\": \"llava\", \"vision_config\": {}, \"text_config\": {\"num_attention_heads\": 64,"
              " \"num_key_value_heads\": 8}, \"vision_feature_select_strategy\": \"full\"}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(c.vision.hidden_size, 768);
    assert_int_equal(c.vision.intermediate_size, 3072);
    assert_int_equal(c.vision.num_hidden_layers, 12);
    assert_int_equal(c.vision.num_attention_heads, 12);
    assert_int_equal(c.vision.image_size, 224);
    assert_int_equal(c.vision.patch_size, 32);
    assert_int_equal(c.vision.hidden_act, HF_ACT_QUICK_GELU);
    assert_int_equal(c.text.num_key_value_heads, 8);
    assert_int_equal(c.text.head_dim, 64);
    assert_true(c.select_full);
}

static void test_mistral_and_rope_scaling(void **state) {
    (void)state;
    hf_llava_config c;
    llava_error err;
    if (parse("{\"model_type\": \"llava\", \"text_config\": {\"model_type\": \"mistral\"}}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_string_equal(c.text.model_type, "mistral");
    assert_int_equal(c.text.intermediate_size, 14336);
    assert_int_equal(c.text.num_key_value_heads, 8);
    assert_int_equal(c.text.max_position_embeddings, 131072);
    assert_int_equal(c.text.sliding_window, 4096);
    if (parse("{\"model_type\": \"llava\", \"text_config\": {\"model_type\": \"mistral\", \"sliding_window\": null,"
              " \"num_key_value_heads\": null, \"rope_theta\": 1000000.0}}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(c.text.sliding_window, 0);
    assert_int_equal(c.text.num_key_value_heads, 32);
    assert_true(c.text.rope_theta == 1e6);

    if (parse("{\"model_type\": \"llava\", \"text_config\": {\"rope_scaling\": {\"type\": \"linear\", "
              "\"factor\": 2.0}}}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(c.text.rope_scaling_type, HF_ROPE_LINEAR);
    assert_true(c.text.rope_scaling_factor == 2.0);
    if (parse("{\"model_type\": \"llava\", \"text_config\": {\"rope_scaling\": {\"rope_type\": \"dynamic\", "
              "\"factor\": 4}}}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(c.text.rope_scaling_type, HF_ROPE_DYNAMIC);
    assert_true(c.text.rope_scaling_factor == 4.0);
    /* an older config carrying only the top-level vocab_size */
    if (parse("{\"model_type\": \"llava\", \"vocab_size\": 32064}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(c.text.vocab_size, 32064);
    /* integers written as floats are accepted */
    if (parse("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": 2048.0}}", &c, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(c.text.hidden_size, 2048);
}

static void test_broken_configs(void **state) {
    (void)state;
    expect_error("{\"model_type\": \"llava_next\"}", "\"model_type\"", "llava_next");
    expect_error("{\"text_config\": {}}", "\"model_type\"", "missing");
    expect_error("{\"model_type\": 7}", "\"model_type\"", "string");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"model_type\": \"gpt2\"}}",
                 "text_config.model_type", "gpt2");
    expect_error("{\"model_type\": \"llava\", \"vision_config\": {\"model_type\": \"siglip_vision_model\"}}",
                 "vision_config.model_type", "siglip");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": 4100}}",
                 "text_config.hidden_size", "not divisible");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": 4000}}",
                 "text_config.hidden_size", "even");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"num_key_value_heads\": 5}}",
                 "text_config.num_key_value_heads", "does not divide");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"num_hidden_layers\": 0}}",
                 "text_config.num_hidden_layers", "must be in");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"intermediate_size\": -5}}",
                 "text_config.intermediate_size", "-5");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": \"4096\"}}",
                 "text_config.hidden_size", "must be an integer");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": 4096.5}}",
                 "text_config.hidden_size", "must be an integer");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"rms_norm_eps\": 0}}",
                 "text_config.rms_norm_eps", "> 0");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"rope_theta\": \"big\"}}",
                 "text_config.rope_theta", "must be a number");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"tie_word_embeddings\": 1}}",
                 "text_config.tie_word_embeddings", "true or false");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_act\": \"mish\"}}",
                 "text_config.hidden_act", "mish");
    expect_error("{\"model_type\": \"llava\", \"text_config\": [1, 2]}", "\"text_config\"", "object");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"rope_scaling\": {\"type\": \"yarn\", "
                 "\"factor\": 2}}}", "rope_scaling.type", "yarn");
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"rope_scaling\": {\"type\": \"linear\", "
                 "\"factor\": 1}}}", "rope_scaling.factor", "> 1");
    expect_error("{\"model_type\": \"llava\", \"vocab_size\": 32064, \"text_config\": {\"vocab_size\": 32000}}",
                 "\"vocab_size\"", "disagrees");
    expect_error("{\"model_type\": \"llava\", \"vision_config\": {\"image_size\": 300, \"patch_size\": 14}}",
                 "vision_config.image_size", "patch_size");
    expect_error("{\"model_type\": \"llava\", \"vision_config\": {\"hidden_size\": 100}}",
                 "vision_config.hidden_size", "not divisible");
    expect_error("{\"model_type\": \"llava\", \"vision_config\": {\"num_channels\": 1}}",
                 "vision_config.num_channels", "must be in");
    expect_error("{\"model_type\": \"llava\", \"vision_feature_layer\": 25}", "vision_feature_layer",
                 "out of range");
    expect_error("{\"model_type\": \"llava\", \"vision_feature_layer\": -26}", "vision_feature_layer",
                 "out of range");
    expect_error("{\"model_type\": \"llava\", \"vision_feature_select_strategy\": \"cls\"}",
                 "vision_feature_select_strategy", "cls");
    expect_error("{\"model_type\": \"llava\", \"projector_hidden_act\": 3}", "projector_hidden_act", "string");
    expect_error("[1, 2, 3]", "top level", NULL);
    expect_error("{\"model_type\": \"llava\",", "invalid JSON", NULL);
    /* -25 is hidden_states[0] of 24 layers: valid */
    hf_llava_config c;
    llava_error err;
    assert_int_equal(parse("{\"model_type\": \"llava\", \"vision_feature_layer\": -25}", &c, &err), LLAVA_OK);
}

static void test_load_errors_name_the_file(void **state) {
    (void)state;
    char dir[] = "/tmp/llava_test_io_config_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    hf_llava_config c;
    llava_error err;
    assert_int_not_equal(hf_llava_config_load(path, &c, &err), LLAVA_OK); /* absent */
    assert_non_null(strstr(err.message, path));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"model_type\": \"llava\", \"text_config\": {\"num_attention_heads\": 0}}", f);
    fclose(f);
    assert_int_equal(hf_llava_config_load(path, &c, &err), LLAVA_ERR_FORMAT);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "text_config.num_attention_heads"));
    unlink(path);
    rmdir(dir);
}

static void test_generation_config(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/llava-1.5-7b-hf/generation_config.json", data_dir());
    hf_generation_config g;
    llava_error err;
    if (hf_generation_config_load(path, &g, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(g.bos_token_id, 1);
    assert_int_equal(g.n_eos, 1);
    assert_int_equal(g.eos_token_ids[0], 2);
    assert_int_equal(g.pad_token_id, 32001);
    assert_int_equal(g.max_new_tokens, 0);
    assert_false(g.do_sample);
    assert_true(g.temperature == 1.0 && g.top_p == 1.0 && g.top_k == 50 && g.repetition_penalty == 1.0);

    const char *list = "{\"eos_token_id\": [2, 32007], \"do_sample\": true, \"temperature\": 0.6, "
                       "\"top_p\": 0.9, \"top_k\": 0, \"max_new_tokens\": 512, \"pad_token_id\": null}";
    if (hf_generation_config_parse(list, strlen(list), "gen.json", &g, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_token_ids[1], 32007);
    assert_true(g.do_sample);
    assert_true(g.temperature == 0.6 && g.top_p == 0.9);
    assert_int_equal(g.top_k, 0);
    assert_int_equal(g.max_new_tokens, 512);
    assert_int_equal(g.bos_token_id, -1);
    assert_int_equal(g.pad_token_id, -1);

    const struct {
        const char *text, *frag;
    } bad[] = {
        {"{\"eos_token_id\": \"2\"}", "\"eos_token_id\""},
        {"{\"eos_token_id\": [2, -1]}", "\"eos_token_id\""},
        {"{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}", "at most 8"},
        {"{\"bos_token_id\": 1.5}", "\"bos_token_id\""},
        {"{\"top_p\": 1.5}", "\"top_p\""},
        {"{\"temperature\": -1}", "\"temperature\""},
        {"{\"do_sample\": \"yes\"}", "\"do_sample\""},
        {"{\"max_new_tokens\": -3}", "\"max_new_tokens\""},
        {"[]", "top level"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (hf_generation_config_parse(bad[i].text, strlen(bad[i].text), "gen.json", &g, &err) == LLAVA_OK)
            fail_msg("accepted %s", bad[i].text);
        if (!strstr(err.message, "gen.json") || !strstr(err.message, bad[i].frag))
            fail_msg("%s: message \"%s\" lacks %s", bad[i].text, err.message, bad[i].frag);
    }
}

static void test_preprocess_config(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/llava-1.5-7b-hf/preprocessor_config.json", data_dir());
    hf_preprocess_config p;
    llava_error err;
    if (hf_preprocess_config_load(path, &p, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_true(p.do_resize && p.do_center_crop && p.do_rescale && p.do_normalize && p.do_convert_rgb);
    assert_false(p.do_pad);
    assert_int_equal(p.shortest_edge, 336);
    assert_int_equal(p.resize_height, 0);
    assert_int_equal(p.crop_height, 336);
    assert_int_equal(p.crop_width, 336);
    assert_int_equal(p.resample, 3);
    assert_true(p.rescale_factor == 0.00392156862745098);
    assert_true(p.image_mean[0] == 0.48145466f && p.image_std[2] == 0.27577711f);

    /* fixture files carry "_valid_processor_keys": ignored */
    snprintf(path, sizeof path, "%s/tiny-f32/model/preprocessor_config.json", fixtures_dir());
    if (hf_preprocess_config_load(path, &p, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(p.shortest_edge, 56);
    assert_int_equal(p.crop_width, 56);

    hf_preprocess_config d;
    hf_preprocess_config_default(&d);
    assert_int_equal(d.shortest_edge, 224);
    assert_int_equal(d.crop_height, 224);
    assert_true(d.rescale_factor == 1.0 / 255.0);

    const char *forms = "{\"size\": 448, \"crop_size\": 448, \"do_pad\": true, \"image_mean\": 0.5, "
                        "\"image_std\": [0.5, 0.5, 0.5], \"something_new\": {\"x\": 1}}";
    if (hf_preprocess_config_parse(forms, strlen(forms), "pp.json", &p, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(p.shortest_edge, 448);
    assert_int_equal(p.crop_height, 448);
    assert_int_equal(p.crop_width, 448);
    assert_true(p.do_pad);
    assert_true(p.image_mean[1] == 0.5f);
    const char *hw = "{\"size\": {\"height\": 384, \"width\": 512}, \"crop_size\": {\"height\": 300, \"width\": 200}}";
    if (hf_preprocess_config_parse(hw, strlen(hw), "pp.json", &p, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(p.shortest_edge, 0);
    assert_int_equal(p.resize_height, 384);
    assert_int_equal(p.resize_width, 512);
    assert_int_equal(p.crop_height, 300);
    assert_int_equal(p.crop_width, 200);

    const struct {
        const char *text, *frag;
    } bad[] = {
        {"{\"size\": {\"longest_edge\": 3}}", "\"size\""},
        {"{\"size\": 0}", "\"size\""},
        {"{\"size\": {\"shortest_edge\": \"336\"}}", "size.shortest_edge"},
        {"{\"crop_size\": {\"shortest_edge\": 336}}", "\"crop_size\""},
        {"{\"crop_size\": {\"height\": 336, \"width\": -1}}", "crop_size.width"},
        {"{\"image_mean\": [0.5, 0.5]}", "\"image_mean\""},
        {"{\"image_std\": [0.5, 0, 0.5]}", "image_std[1]"},
        {"{\"image_mean\": [0.5, \"a\", 0.5]}", "image_mean[1]"},
        {"{\"resample\": 9}", "\"resample\""},
        {"{\"rescale_factor\": 0}", "\"rescale_factor\""},
        {"{\"do_pad\": \"yes\"}", "\"do_pad\""},
        {"{\"do_resize\": 1}", "\"do_resize\""},
        {"[1]", "top level"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (hf_preprocess_config_parse(bad[i].text, strlen(bad[i].text), "pp.json", &p, &err) == LLAVA_OK)
            fail_msg("accepted %s", bad[i].text);
        if (!strstr(err.message, "pp.json") || !strstr(err.message, bad[i].frag))
            fail_msg("%s: message \"%s\" lacks %s", bad[i].text, err.message, bad[i].frag);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_llava_15_7b),
        cmocka_unit_test(test_fixture_configs),
        cmocka_unit_test(test_defaults_when_absent),
        cmocka_unit_test(test_mistral_and_rope_scaling),
        cmocka_unit_test(test_broken_configs),
        cmocka_unit_test(test_load_errors_name_the_file),
        cmocka_unit_test(test_generation_config),
        cmocka_unit_test(test_preprocess_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
