/* Chat templates as fixed renderers (no Jinja): each mirrors the exact text its model was trained
 * on, and template_detect recognises them in a checkpoint's chat_template text. */
#include "text/template.h"

#include <stdlib.h>
#include <string.h>

/* LLaVA's Vicuna v1 conversation (conv_vicuna_v1 / conv_llava_v1). */
#define VICUNA_SYSTEM_TEXT                                                                            \
    "A chat between a curious human and an artificial intelligence assistant. "                      \
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
static const char VICUNA_SYSTEM[] = VICUNA_SYSTEM_TEXT;

static const char *const NAMES[TEMPLATE_COUNT] = {"llava", "vicuna", "mistral", "chatml"};

int template_from_name(const char *name, template_kind *out) {
    if (!name) return -1;
    for (int k = 0; k < TEMPLATE_COUNT; k++)
        if (!strcmp(name, NAMES[k])) {
            *out = (template_kind)k;
            return 0;
        }
    if (!strcmp(name, "llava-1.5") || !strcmp(name, "llava15")) {
        *out = TEMPLATE_LLAVA;
        return 0;
    }
    return -1;
}

/* Each template in Ollama's Go template syntax: the same text for a conversation of plain text
 * messages (Ollama places images itself). Multiple system messages: Ollama's .System joins them,
 * where vicuna and mistral here take the last. */
static const char *const GO_TEXTS[TEMPLATE_COUNT] = {
    "{{ range .Messages }}{{ if eq .Role \"user\" }}USER: {{ else if eq .Role \"assistant\" }}ASSISTANT: "
    "{{ end }}{{ .Content }} {{ end }}ASSISTANT:",
    "{{ if .System }}{{ .System }}{{ else }}" VICUNA_SYSTEM_TEXT "{{ end }} "
    "{{ range .Messages }}{{ if eq .Role \"user\" }}USER: {{ .Content }} {{ else if eq .Role \"assistant\" }}"
    "ASSISTANT: {{ .Content }}</s>{{ end }}{{ end }}ASSISTANT:",
    "{{ $first := true }}{{ range .Messages }}{{ if eq .Role \"user\" }}[INST] {{ if and $first $.System }}"
    "{{ $.System }}\n\n{{ end }}{{ $first = false }}{{ .Content }} [/INST]{{ else if eq .Role \"assistant\" }}"
    " {{ .Content }}</s>{{ end }}{{ end }}",
    "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
};

const char *template_go_text(template_kind kind) {
    return kind >= 0 && kind < TEMPLATE_COUNT ? GO_TEXTS[kind] : "";
}

const char *template_name(template_kind kind) {
    return kind >= 0 && kind < TEMPLATE_COUNT ? NAMES[kind] : "unknown";
}

template_kind template_detect(const char *t, const char *text_model_type) {
    if (t && *t) {
        if (strstr(t, "<|im_start|>")) return TEMPLATE_CHATML;
        if (strstr(t, "[INST]")) return TEMPLATE_MISTRAL;
        if (strstr(t, "A chat between a curious")) return TEMPLATE_VICUNA;
        if (strstr(t, "ASSISTANT:") || strstr(t, "upper() + ': '")) return TEMPLATE_LLAVA;
    }
    if (text_model_type && !strcmp(text_model_type, "mistral")) return TEMPLATE_MISTRAL;
    return TEMPLATE_LLAVA;
}

int template_count_images(const char *text) {
    int n = 0;
    size_t m = strlen(TEMPLATE_IMAGE_MARKER);
    for (const char *p = text ? strstr(text, TEMPLATE_IMAGE_MARKER) : NULL; p;
         p = strstr(p + m, TEMPLATE_IMAGE_MARKER))
        n++;
    return n;
}

/* A growing string; on allocation failure it stays failed and render reports it once. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf;

static void put(sbuf *b, const char *text) {
    size_t n = strlen(text);
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, text, n + 1);
    b->len += n;
}

static void put_images(sbuf *b, int n) {
    for (int i = 0; i < n; i++) put(b, TEMPLATE_IMAGE_MARKER "\n");
}

typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } role;

static llava_status parse_roles(const template_message *m, size_t n, role *roles,
                                llava_error *err) {
    for (size_t i = 0; i < n; i++) {
        const char *r = m[i].role ? m[i].role : "";
        if (!strcmp(r, "system")) roles[i] = ROLE_SYSTEM;
        else if (!strcmp(r, "user")) roles[i] = ROLE_USER;
        else if (!strcmp(r, "assistant")) roles[i] = ROLE_ASSISTANT;
        else
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "message %zu: unknown role '%s' (expected system, user or "
                                   "assistant)", i, r);
        if (m[i].n_images < 0)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "message %zu: negative image count %d", i, m[i].n_images);
    }
    return LLAVA_OK;
}

static const char *text_of(const template_message *m) { return m->text ? m->text : ""; }

/* llava-hf's chat_template: every non-system turn starts "ROLE: ", image parts render as
 * "<image>\n" before the text, every text part is followed by one space, system text has no
 * prefix, and the generation prompt is "ASSISTANT:". */
static void render_llava(sbuf *b, const template_message *m, const role *r, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        if (r[i] == ROLE_USER) put(b, "USER: ");
        if (r[i] == ROLE_ASSISTANT) put(b, "ASSISTANT: ");
        put_images(b, m[i].n_images);
        put(b, text_of(&m[i]));
        put(b, " ");
    }
    if (gen) put(b, "ASSISTANT:");
}

/* LLaVA's SeparatorStyle.TWO: system + " ", "USER: msg" + " ", "ASSISTANT: msg" + "</s>", and a
 * trailing "ASSISTANT:" for the reply. A system message replaces the default system prompt. */
static void render_vicuna(sbuf *b, const template_message *m, const role *r, size_t n, bool gen) {
    const char *system = VICUNA_SYSTEM;
    for (size_t i = 0; i < n; i++)
        if (r[i] == ROLE_SYSTEM) system = text_of(&m[i]);
    put(b, system);
    put(b, " ");
    for (size_t i = 0; i < n; i++) {
        if (r[i] == ROLE_SYSTEM) continue;
        put(b, r[i] == ROLE_USER ? "USER: " : "ASSISTANT: ");
        put_images(b, m[i].n_images);
        put(b, text_of(&m[i]));
        put(b, r[i] == ROLE_USER ? " " : "</s>");
    }
    if (gen) put(b, "ASSISTANT:");
}

/* Mistral instruct: "[INST] text [/INST]" per user turn, " answer</s>" per assistant turn; it has
 * no system role, so system text leads the first user turn (as Mistral's own template does). */
static void render_mistral(sbuf *b, const template_message *m, const role *r, size_t n) {
    const char *system = NULL;
    for (size_t i = 0; i < n; i++)
        if (r[i] == ROLE_SYSTEM) system = text_of(&m[i]);
    bool first_user = true;
    for (size_t i = 0; i < n; i++) {
        if (r[i] == ROLE_SYSTEM) continue;
        if (r[i] == ROLE_USER) {
            put(b, "[INST] ");
            if (first_user && system) {
                put(b, system);
                put(b, "\n\n");
            }
            first_user = false;
            put_images(b, m[i].n_images);
            put(b, text_of(&m[i]));
            put(b, " [/INST]");
        } else {
            put(b, " ");
            put(b, text_of(&m[i]));
            put(b, "</s>");
        }
    }
}

static void render_chatml(sbuf *b, const template_message *m, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, m[i].role);
        put(b, "\n");
        put_images(b, m[i].n_images);
        put(b, text_of(&m[i]));
        put(b, "<|im_end|>\n");
    }
    if (gen) put(b, "<|im_start|>assistant\n");
}

llava_status template_render(template_kind kind, const template_message *messages, size_t n,
                             bool add_generation_prompt, char **out, llava_error *err) {
    *out = NULL;
    if (n > 0 && !messages)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "template: no messages");
    role *roles = calloc(n ? n : 1, sizeof *roles);
    if (!roles) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "template: out of memory");
    llava_status st = parse_roles(messages, n, roles, err);
    sbuf b = {0};
    if (st == LLAVA_OK) {
        put(&b, "");
        switch (kind) {
        case TEMPLATE_LLAVA: render_llava(&b, messages, roles, n, add_generation_prompt); break;
        case TEMPLATE_VICUNA: render_vicuna(&b, messages, roles, n, add_generation_prompt); break;
        case TEMPLATE_MISTRAL: render_mistral(&b, messages, roles, n); break;
        case TEMPLATE_CHATML: render_chatml(&b, messages, n, add_generation_prompt); break;
        default:
            st = llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "template: unknown kind %d",
                                 (int)kind);
        }
        if (st == LLAVA_OK && b.failed)
            st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "template: out of memory");
    }
    free(roles);
    if (st != LLAVA_OK) {
        free(b.s);
        return st;
    }
    *out = b.s;
    return LLAVA_OK;
}
