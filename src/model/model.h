/* The LLaVA model: loading a llava-hf checkpoint, preparing a request (template, tokens, pixels)
 * off the model's thread, and running it (CLIP vision tower, projector, LLaMA/Mistral decoder,
 * sampling) on the one thread that owns the model. This header is the whole contract of src/model/.
 *
 * Threads. A llava_model is immutable after llava_model_load except for its compute pool, so:
 *  - llava_prepare may run on any thread, concurrently with everything else (it reads only the
 *    tokenizer, the preprocessing config and the template);
 *  - llava_session_*, llava_generate and llava_evaluate_prompt use the model's compute pool and
 *    must run on one thread at a time per model (the engine worker);
 *  - llava_model_free only when nothing else uses the model. */
#ifndef LLAVA_MODEL_H
#define LLAVA_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "text/sampler.h"
#include "text/template.h"

typedef struct llava_model llava_model;

/* ---- loading ---- */

/* Quantization of weights at load (tensor/quant.h), and the parts it applies to. */
typedef enum llava_quant { LLAVA_QUANT_NONE, LLAVA_QUANT_Q8_0, LLAVA_QUANT_Q4_0 } llava_quant;
/* The KV cache's element type: f32 (exact) or f16 (half the memory and the bytes each decoded
 * token reads; keys and values rounded to f16, attention arithmetic still f32). */
typedef enum llava_kv_cache { LLAVA_KV_F32, LLAVA_KV_F16 } llava_kv_cache;
enum { LLAVA_PART_VISION = 1, LLAVA_PART_PROJECTOR = 2, LLAVA_PART_TEXT = 4, LLAVA_PART_LM_HEAD = 8 };

typedef struct llava_model_options {
    int n_threads;      /* compute pool size; <= 0: the number of online cores */
    int n_ctx;          /* context limit in positions; <= 0: text_config.max_position_embeddings */
    /* Prompt positions per decoder pass; <= 0: 1024. Each pass converts every weight panel once
     * for all its rows, so fewer, longer passes convert less (a 7B's 641-position prompt: 16.1 vs
     * 15.3 tokens/s with passes of 256); their activations take about 50 KB per position for a 7B.
     * Cancel is polled between layers, whatever the pass length. */
    int prefill_chunk;
    /* NONE keeps the weights as stored (exact f32 arithmetic); Q8_0 / Q4_0 quantize the matrices
     * of the parts in quant_parts (LLAVA_PART_* bits; 0: all) and compute them with int8
     * products. Embeddings and the patch convolution stay as stored. Matrices a checkpoint
     * already holds quantized (`llava quantize`) are used as they are, whatever this says. */
    llava_quant quant;
    unsigned quant_parts;
    /* Parts (LLAVA_PART_* bits; 0: none) whose products over many rows (image, prompt; not
     * decode's single row) run in half precision (tensor_matmul_half: f16 multiply-adds, about
     * 1e-3 relative error, twice the f32 rate) where the CPU has AVX512-FP16; elsewhere, and for
     * matrices quantized by `quant`, they stay as they are. Reduced precision: opt-in only. */
    unsigned half_parts;
    /* LLAVA_KV_F32 (0: exact) or LLAVA_KV_F16 (as llama.cpp's default cache; about 1e-3
     * relative error on the logits). Reduced precision: opt-in only. */
    llava_kv_cache kv_cache;
    /* 0: the checkpoint's files are mapped (pages read on first use, shared with the page
     * cache). Non-zero: read whole into this process's memory at load, as llama.cpp's --no-mmap:
     * a slower load and the weights' bytes held twice while the page cache keeps the file, but
     * decode streams fresh anonymous memory faster and more steadily (docs/PERFORMANCE.md). */
    int no_mmap;
} llava_model_options;

/* Fills the defaults above (all zero). */
void llava_model_options_default(llava_model_options *opt);

/* Loads the checkpoint folder dir: config.json, generation_config.json (optional),
 * preprocessor_config.json (optional: CLIP defaults), tokenizer.json (+ tokenizer_config.json,
 * chat_template.json), and model.safetensors or shards. Tensors are found under the hub names
 * (language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.*) or the newer
 * layout (model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*,
 * lm_head.weight); a missing or mis-shaped tensor is an error naming it and the expected shape.
 * Large matrices are used in place from the mapping (F32, F16 or BF16); norm weights and biases
 * are converted to f32. Blocking (I/O); call it on the thread that will own the model.
 * opt may be NULL. On success *out owns everything; free with llava_model_free. */
llava_status llava_model_load(const char *dir, const llava_model_options *opt, llava_model **out,
                              llava_error *err);
void llava_model_free(llava_model *m);

/* Sizes a caller needs to size buffers and check requests. */
typedef struct llava_model_info {
    int image_size;          /* S: pixel_values are [3, S, S] per image */
    int tokens_per_image;    /* N: positions one image fills (576 for 336 px / patch 14) */
    int vision_hidden;       /* Dv */
    int text_hidden;         /* Dt */
    int vocab_size;          /* V: columns of the logits (text_config.vocab_size) */
    int n_ctx;               /* the context limit in force */
    int image_token_id;      /* config image_token_index */
    int bos_id;              /* -1 if none */
    int n_eos;
    int eos_ids[8];          /* from generation_config.json, else the tokenizer's */
    template_kind chat_template; /* the template chosen from the model's files */
    int n_threads;
} llava_model_info;
void llava_model_get_info(const llava_model *m, llava_model_info *out);
const hf_llava_config *llava_model_config(const llava_model *m);

/* ---- preparing a request (any thread) ---- */

/* One image of a request, in the first form that is set: encoded file bytes (JPEG, PNG, WebP),
 * a file path, or already decoded RGB8 pixels (row-major, 3 bytes per pixel). */
typedef struct llava_image_input {
    const void *bytes;
    size_t len;
    const char *path;
    const uint8_t *rgb;
    int width, height;
} llava_image_input;

typedef struct llava_prepare_options {
    /* Template by name (template_from_name: "llava", "vicuna", "mistral", "chatml"); NULL: the
     * model's. Ignored in raw mode. An unknown name is LLAVA_ERR_INVALID_ARGUMENT. */
    const char *template_name;
    /* Raw mode: the messages must be exactly one, whose text is the prompt as is (its <image>
     * markers are the image positions; none is added). */
    bool raw;
    /* Tokens the request may generate: prompt positions + max_tokens must fit the context. */
    int max_tokens;
} llava_prepare_options;

/* The model-ready form of a request. Owned by the caller; llava_prepared_free releases it. */
typedef struct llava_prepared {
    char *prompt;            /* the rendered prompt text */
    int32_t *ids;            /* [n_ids] BOS + prompt tokens, ONE image_token_id per image */
    int n_ids;
    int n_images;
    int image_size;          /* S */
    float *pixel_values;     /* [n_images, 3, S, S] CLIP-preprocessed, or NULL without images */
    int n_positions;         /* after each image id becomes tokens_per_image positions */
    int max_tokens;          /* as asked (already checked against the context) */
} llava_prepared;

/* Renders messages with the template (or takes the raw prompt), tokenizes it, decodes and
 * preprocesses the images, and checks the request: the number of <image> markers must equal
 * n_images, and n_positions + max_tokens must fit the context (LLAVA_ERR_LIMIT). Errors name the
 * image (by index and path) or the count at fault. Never touches the compute pool. */
llava_status llava_prepare(const llava_model *m, const template_message *messages,
                           size_t n_messages, const llava_image_input *images, int n_images,
                           const llava_prepare_options *opt, llava_prepared **out,
                           llava_error *err);
void llava_prepared_free(llava_prepared *p);

/* ---- running (the model's thread) ---- */

/* A sequence's state: KV cache and activation buffers. Buffers grow to the largest request seen
 * (at request start, never inside the token loop) and are reused by the next request. */
typedef struct llava_session llava_session;
llava_status llava_session_create(llava_model *m, llava_session **out, llava_error *err);
void llava_session_free(llava_session *s);

typedef enum llava_finish_reason {
    LLAVA_FINISH_STOP,       /* EOS, a stop string, or on_token asked to stop */
    LLAVA_FINISH_LENGTH,     /* max_tokens reached */
    LLAVA_FINISH_CANCELLED   /* the cancel check said so */
} llava_finish_reason;

typedef struct llava_generate_params {
    sampler_params sampling;   /* temperature <= 0: greedy */
    int max_tokens;            /* <= 0: the prepared request's max_tokens */
    const char *const *stop;   /* stop strings (never emitted, nor any prefix of them) */
    int n_stop;
    bool ignore_eos;           /* keep going past EOS (benchmarks) */
} llava_generate_params;

/* Fills greedy sampling, no stop strings. */
void llava_generate_params_default(llava_generate_params *p);

typedef struct llava_callbacks {
    void *user;
    /* Called once per generated token that is not EOS, with the text it releases (UTF-8, not
     * NUL-terminated, possibly empty while text is held back because it could still begin a stop
     * string or completes a multi-byte character), and once more at the end with id -1 if
     * held-back text turned out not to be a stop string. Return non-zero to stop (finish reason
     * stop). May be NULL. Runs on the model's thread: it must not block. */
    int (*on_token)(void *user, int32_t id, const char *text, size_t len);
    /* Polled between tokens, between decoder layers of the prompt and between vision layers;
     * non-zero ends the request with LLAVA_FINISH_CANCELLED. May be NULL. */
    int (*cancelled)(void *user);
} llava_callbacks;

typedef struct llava_generate_result {
    llava_finish_reason finish_reason;
    int prompt_tokens;       /* positions of the prompt (images expanded) */
    int completion_tokens;   /* tokens sampled, EOS included */
    double image_ms;         /* vision tower + projector */
    double prefill_ms;       /* decoder over the prompt, up to the first logits */
    double decode_ms;        /* the token loop */
    double first_token_ms;   /* start of the call to the first token sampled */
} llava_generate_result;

/* Runs a prepared request: images through the vision tower and projector, the prompt through the
 * decoder in chunks, then one token at a time with sampling, until EOS (generation_config.json or
 * config), a stop string, max_tokens, on_token's stop, or cancel. Nothing is allocated inside the
 * token loop. The session may be reused for the next request whatever the outcome. */
llava_status llava_generate(llava_session *s, const llava_prepared *p,
                            const llava_generate_params *params, const llava_callbacks *cb,
                            llava_generate_result *result, llava_error *err);

/* Intermediate tensors of a prompt pass, for `llava dump` and tests. Each pointer is a buffer the
 * caller sized from llava_model_info and the prepared request, or NULL when not wanted. */
typedef struct llava_trace {
    float *vision_features;   /* [n_images, N, Dv]: the selected vision layer, CLS dropped by
                               * the "default" strategy (N + 1 rows for "full") */
    float *image_features;    /* [n_images, N, Dt]: after the projector */
    float *inputs_embeds;     /* [n_positions, Dt]: the merged decoder input */
    int64_t *expanded_ids;    /* [n_positions]: image positions hold image_token_id */
    float *last_logits;       /* [V]: logits at the last prompt position */
} llava_trace;

/* Rows of vision_features per image: N, or N + 1 for the "full" strategy. */
int llava_model_feature_rows(const llava_model *m);

/* llava_model_describe on a config and a set of files already opened (by `llava info`, which
 * reads both for its own lines as well), with the chat template's text (NULL: the folder has
 * none) and the file it came from. */
void llava_model_describe_open(const hf_llava_config *c, const st_set *s, const char *chat_template,
                               const char *chat_template_source, llava_model_desc *out);

/* Runs only the vision tower and projector over the request's images (no decoder, no cache
 * change): image_features [n_images, N, Dt] if not NULL. For benchmarks of the image encoder
 * alone. Returns LLAVA_ERR_CANCELLED when cb->cancelled says so (cb may be NULL). */
llava_status llava_encode_images(llava_session *s, const llava_prepared *p, float *image_features,
                                 const llava_callbacks *cb, llava_error *err);

/* Runs the vision tower, projector, merge and the decoder over the prompt, filling the trace.
 * Leaves the session's cache holding the prompt. Returns LLAVA_ERR_CANCELLED when cb->cancelled
 * says so (cb may be NULL). */
llava_status llava_evaluate_prompt(llava_session *s, const llava_prepared *p, llava_trace *trace,
                                   const llava_callbacks *cb, llava_error *err);

#endif
