/* `llava info`: what a model folder holds (architecture, sizes, dtypes, tensors, bytes, shards,
 * chat template, image size and tokens), read from its config and safetensors headers only, so
 * that it answers in milliseconds even for a 14 GB checkpoint and names what is wrong otherwise. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/json.h"
#include "cli/cli.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "llava.h"
#include "model/model.h"
#include "text/tokenizer.h"

#define INFO_JSON_MAX_BYTES (32u << 20)

static void usage(FILE *out) {
    fprintf(out,
            "usage: llava info -m MODEL_DIR [--json]\n"
            "  -m DIR   a Hugging Face LLaVA folder: config.json and model.safetensors (or shards\n"
            "           with model.safetensors.index.json)\n"
            "  --json   print one JSON object instead of text\n");
}

/* What each template the engine renders looks like, for the text output. */
static const char *template_look(const char *kind) {
    if (!strcmp(kind, "llava")) return "llava-1.5: USER: ... ASSISTANT:";
    if (!strcmp(kind, "vicuna")) return "Vicuna v1: its system prompt, USER: ... ASSISTANT: ...</s>";
    if (!strcmp(kind, "mistral")) return "Mistral: [INST] ... [/INST]";
    if (!strcmp(kind, "chatml")) return "ChatML: <|im_start|>role ... <|im_end|>";
    return "?";
}

/* The first entry of config.json's "architectures", or "?" */
static void architecture(const char *config_path, char *out, size_t cap) {
    snprintf(out, cap, "?");
    json_t *root = llava_json_load_file(config_path, INFO_JSON_MAX_BYTES, true, NULL);
    const json_t *a = root ? json_object_get(root, "architectures") : NULL;
    if (json_is_array(a) && json_is_string(json_array_get(a, 0)))
        snprintf(out, cap, "%s", json_string_value(json_array_get(a, 0)));
    json_decref(root);
}

static void print_bytes(uint64_t n) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    printf("%llu bytes (%.1f %s)", (unsigned long long)n, v, unit[u]);
}

static const char *rope_scaling_name(hf_rope_scaling r) {
    return r == HF_ROPE_LINEAR ? "linear" : r == HF_ROPE_DYNAMIC ? "dynamic" : "none";
}

static int print_json(const char *dir, const char *arch, const hf_llava_config *c, const st_set *s,
                      const size_t *dtype_counts, int image_tokens,
                      const llava_model_desc *desc) {
    const hf_text_config *t = &c->text;
    const hf_vision_config *v = &c->vision;
    json_t *dtypes = json_object();
    for (int d = 0; d < LLAVA_DTYPE_COUNT; d++)
        if (dtype_counts[d]) json_object_set_new(dtypes, llava_dtype_name((llava_dtype)d), json_integer((json_int_t)dtype_counts[d]));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:f, s:i, s:s, s:b},"
        " s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s},"
        " s:{s:s, s:i, s:s}, s:i, s:i, s:o, s:I, s:I, s:I, s:{s:s, s:s?}}",
        "model", dir, "architecture", arch, "model_type", c->model_type,
        "text", "model_type", t->model_type, "vocab_size", t->vocab_size, "hidden_size", t->hidden_size,
        "intermediate_size", t->intermediate_size, "num_hidden_layers", t->num_hidden_layers,
        "num_attention_heads", t->num_attention_heads, "num_key_value_heads", t->num_key_value_heads,
        "head_dim", t->head_dim, "max_position_embeddings", t->max_position_embeddings,
        "rms_norm_eps", t->rms_norm_eps, "rope_theta", t->rope_theta, "rope_scaling",
        rope_scaling_name(t->rope_scaling_type), "rope_scaling_factor", t->rope_scaling_factor,
        "sliding_window", t->sliding_window, "hidden_act", hf_act_name(t->hidden_act), "tie_word_embeddings",
        (int)t->tie_word_embeddings,
        "vision", "model_type", "clip_vision_model", "hidden_size", v->hidden_size, "intermediate_size",
        v->intermediate_size, "num_hidden_layers", v->num_hidden_layers, "num_attention_heads",
        v->num_attention_heads, "image_size", v->image_size, "patch_size", v->patch_size, "layer_norm_eps",
        v->layer_norm_eps, "hidden_act", hf_act_name(v->hidden_act),
        "projector", "hidden_act", hf_act_name(c->projector_hidden_act), "vision_feature_layer",
        c->vision_feature_layer, "vision_feature_select_strategy", c->select_full ? "full" : "default",
        "image_size", v->image_size, "image_tokens", image_tokens, "dtypes", dtypes, "tensors",
        (json_int_t)st_set_count(s), "total_bytes", (json_int_t)st_set_total_bytes(s), "shards",
        (json_int_t)st_set_file_count(s), "template", "kind", desc->chat_template, "source",
        desc->chat_template_source[0] ? desc->chat_template_source : NULL);
    if (!o) return cli_fail("info: cannot build the JSON output");
    json_object_set_new(o, "image_token_index", json_integer(c->image_token_index));
    json_object_set_new(o, "parameters", json_integer((json_int_t)desc->n_params));
    json_object_set_new(o, "parameters_format", json_string(desc->dtype));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!text) return cli_fail("info: cannot format the JSON output");
    puts(text);
    free(text);
    return 0;
}

static void print_text(const char *dir, const char *arch, const hf_llava_config *c, const st_set *s,
                       const size_t *dtype_counts, int image_tokens,
                       const llava_model_desc *desc) {
    const hf_text_config *t = &c->text;
    const hf_vision_config *v = &c->vision;
    printf("model         %s\n", dir);
    printf("architecture  %s (%s: %s text model, CLIP vision tower)\n", arch, c->model_type, t->model_type);
    printf("text          %d layers, hidden %d, ffn %d, heads %d, kv heads %d, head dim %d, vocab %d\n",
           t->num_hidden_layers, t->hidden_size, t->intermediate_size, t->num_attention_heads,
           t->num_key_value_heads, t->head_dim, t->vocab_size);
    printf("              context %d, rope theta %g, rope scaling %s", t->max_position_embeddings, t->rope_theta,
           rope_scaling_name(t->rope_scaling_type));
    if (t->rope_scaling_type != HF_ROPE_NONE) printf(" x%g", t->rope_scaling_factor);
    if (t->sliding_window) printf(", sliding window %d", t->sliding_window);
    printf(", rms eps %g, %s, %s lm_head\n", t->rms_norm_eps, hf_act_name(t->hidden_act),
           t->tie_word_embeddings ? "tied" : "separate");
    printf("vision        %d layers, hidden %d, ffn %d, heads %d, patch %d, ln eps %g, %s\n", v->num_hidden_layers,
           v->hidden_size, v->intermediate_size, v->num_attention_heads, v->patch_size, v->layer_norm_eps,
           hf_act_name(v->hidden_act));
    printf("projector     %s, features from vision layer %d, strategy %s\n", hf_act_name(c->projector_hidden_act),
           c->vision_feature_layer, c->select_full ? "full" : "default");
    printf("image         %dx%d, %d image tokens per image (<image> = %d)\n", v->image_size, v->image_size,
           image_tokens, c->image_token_index);
    printf("tensors       %zu in %zu shard%s, ", st_set_count(s), st_set_file_count(s),
           st_set_file_count(s) == 1 ? "" : "s");
    print_bytes(st_set_total_bytes(s));
    printf("\ndtypes        ");
    const char *sep = "";
    for (int d = 0; d < LLAVA_DTYPE_COUNT; d++) {
        if (!dtype_counts[d]) continue;
        printf("%s%s %zu", sep, llava_dtype_name((llava_dtype)d), dtype_counts[d]);
        sep = ", ";
    }
    printf("\nparameters    %lld (%.2f B), mostly %s\n", (long long)desc->n_params, (double)desc->n_params * 1e-9, desc->dtype);
    printf("template      %s (%s), ", desc->chat_template, template_look(desc->chat_template));
    if (desc->chat_template_source[0]) printf("recognised in %s\n", desc->chat_template_source);
    else printf("the folder has no chat_template: chosen by the text model type (%s)\n", t->model_type);
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) {
            dir = argv[++i];
        } else {
            usage(stderr);
            return cli_fail("info: unexpected argument '%s'", argv[i]);
        }
    }
    if (!dir) {
        usage(stderr);
        return cli_fail("info: -m MODEL_DIR is required");
    }

    char config_path[4096];
    if (llava_path_join(config_path, sizeof config_path, dir, "config.json") != 0)
        return cli_fail("info: path too long: %s", dir);
    llava_error err = {0};
    hf_llava_config c;
    if (hf_llava_config_load(config_path, &c, &err) != LLAVA_OK) return cli_fail("%s", err.message);
    st_set *s = NULL;
    if (st_set_open(dir, &s, &err) != LLAVA_OK) return cli_fail("%s", err.message);

    char arch[128];
    architecture(config_path, arch, sizeof arch);
    size_t dtype_counts[LLAVA_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < st_set_count(s); i++) dtype_counts[st_set_tensor(s, i)->dtype]++;
    /* the parameter count, image tokens and template the server's /api/show gives */
    char *tmpl = NULL;
    const char *tmpl_source = NULL;
    if (tokenizer_find_chat_template(dir, &tmpl, &tmpl_source, &err) != LLAVA_OK) {
        st_set_close(s);
        return cli_fail("%s", err.message);
    }
    llava_model_desc desc;
    llava_model_describe_open(&c, s, tmpl, tmpl_source, &desc);
    free(tmpl);
    int image_tokens = desc.image_tokens;
    int rc = 0;
    if (as_json)
        rc = print_json(dir, arch, &c, s, dtype_counts, image_tokens, &desc);
    else
        print_text(dir, arch, &c, s, dtype_counts, image_tokens, &desc);
    st_set_close(s);
    return rc;
}
