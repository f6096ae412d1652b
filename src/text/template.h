/* Chat templates: turning a conversation into the prompt text a model was trained on
 * (llava-1.5 as llava-hf's chat_template renders it, Vicuna v1, Mistral instruct, ChatML), and
 * recognising which one a checkpoint wants from its files. Pure string work, any thread. */
#ifndef LLAVA_TEXT_TEMPLATE_H
#define LLAVA_TEXT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

typedef enum template_kind {
    TEMPLATE_LLAVA,    /* llava-hf llava-1.5: "USER: <image>\n{text} ASSISTANT:" */
    TEMPLATE_VICUNA,   /* Vicuna v1 with its system prompt, assistant turns end with </s> */
    TEMPLATE_MISTRAL,  /* "[INST] <image>\n{text} [/INST]" */
    TEMPLATE_CHATML,   /* <|im_start|>role\n...<|im_end|>\n */
    TEMPLATE_COUNT
} template_kind;

/* The marker that stands for one image in prompt text. */
#define TEMPLATE_IMAGE_MARKER "<image>"

/* One turn. Images of a message that are not written as markers in its text are placed by the
 * template, one "<image>\n" each, before the text (as llava-hf's template renders image parts). */
typedef struct template_message {
    const char *role;   /* "system", "user" or "assistant" */
    const char *text;   /* may contain <image> markers */
    int n_images;       /* images to place before the text (not counting markers in text) */
} template_message;

/* "llava" (also "llava-1.5"), "vicuna", "mistral", "chatml" -> kind; -1 if unknown. */
int template_from_name(const char *name, template_kind *out);
const char *template_name(template_kind kind);
/* The template in Ollama's Go template syntax (its /api/show "template"); "" for an unknown kind. */
const char *template_go_text(template_kind kind);

/* Picks the template a checkpoint expects: from its chat template text (tokenizer_config.json's
 * chat_template or chat_template.json; may be NULL), else from the text model type ("mistral"
 * -> mistral, else llava). */
template_kind template_detect(const char *chat_template, const char *text_model_type);

/* Renders messages (system messages first or anywhere; roles other than system/user/assistant
 * are LLAVA_ERR_INVALID_ARGUMENT naming the message) and, with add_generation_prompt, the start
 * of the assistant's turn. *out is a new NUL-terminated string the caller frees. */
llava_status template_render(template_kind kind, const template_message *messages, size_t n,
                             bool add_generation_prompt, char **out, llava_error *err);

/* Number of <image> markers in text. */
int template_count_images(const char *text);

#endif
