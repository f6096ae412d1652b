/* libFuzzer target for encoding and decoding with real tokenizers: the llava-1.5 tokenizer and
 * Mistral-style Metaspace variants of it (first byte of the input picks one, the rest is the
 * text). Checks: ids in range; decode(encode(s)) == s on the legacy LLaMA tokenizer when s holds
 * no added-token text and no metaspace; streamed decode == whole decode; invalid UTF-8 refused
 * with a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

enum { LLAVA, FIRST, ALWAYS_SPLIT, N_TOKENIZERS };
/* Loaded once for the whole run (a fuzzer process is a test harness, not library code). */
static tokenizer *toks[N_TOKENIZERS];

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    char *s = malloc(*len + 1);
    if (s && fread(s, 1, *len, f) != *len) {
        free(s);
        s = NULL;
    }
    fclose(f);
    return s;
}

/* tokenizer.json with normalizer..decoder replaced by a Metaspace pipeline. */
static tokenizer *metaspace_variant(const char *json, const char *cfg, size_t cfg_len,
                                    const char *scheme, const char *split) {
    const char *norm = strstr(json, "\"normalizer\":"), *model = strstr(json, "\"model\":");
    if (!norm || !model) return NULL;
    char parts[512];
    snprintf(parts, sizeof parts,
             "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":"
             "\"\xE2\x96\x81\",\"prepend_scheme\":\"%s\",\"split\":%s},\"post_processor\":null,"
             "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\","
             "\"prepend_scheme\":\"%s\",\"split\":%s},", scheme, split, scheme, split);
    size_t head = (size_t)(norm - json), n = head + strlen(parts) + strlen(model) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)head, json, parts, model);
    tokenizer *tok = NULL;
    llava_error err;
    if (tokenizer_load_buffers(out, strlen(out), cfg, cfg_len, scheme, &tok, &err) != LLAVA_OK)
        fprintf(stderr, "%s\n", err.message);
    free(out);
    return tok;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* The repository's copy of the llava-1.5 tokenizer, found from this source file's place
     * unless LLAVA_TOKENIZER_DIR names another folder. */
    const char *dir = getenv("LLAVA_TOKENIZER_DIR");
    char here[4096], path[4096], cfg_path[4096];
    snprintf(here, sizeof here, "%s", __FILE__);
    char *slash = strrchr(here, '/');
    if (slash) *slash = '\0';
    else snprintf(here, sizeof here, ".");
    if (!dir) {
        strncat(here, "/../tests/data/llava-1.5-7b-hf", sizeof here - strlen(here) - 1);
        dir = here;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    size_t len, cfg_len;
    char *json = read_all(path, &len), *cfg = read_all(cfg_path, &cfg_len);
    if (!json || !cfg) {
        fprintf(stderr, "cannot read %s (set LLAVA_TOKENIZER_DIR)\n", path);
        abort();
    }
    llava_error err;
    if (tokenizer_load_buffers(json, len, cfg, cfg_len, path, &toks[LLAVA], &err) != LLAVA_OK) {
        fprintf(stderr, "%s\n", err.message);
        abort();
    }
    toks[FIRST] = metaspace_variant(json, cfg, cfg_len, "first", "false");
    toks[ALWAYS_SPLIT] = metaspace_variant(json, cfg, cfg_len, "always", "true");
    if (!toks[FIRST] || !toks[ALWAYS_SPLIT]) abort();
    free(json);
    free(cfg);
    return 0;
}

static int lossy(const char *s, size_t len) {
    static const char *const specials[] = {"<image>", "<s>", "</s>", "<unk>", "<pad>",
                                           "\xE2\x96\x81"};
    for (int i = 0; i < 6; i++)
        if (memmem(s, len, specials[i], strlen(specials[i]))) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tokenizer *tok = toks[data[0] % N_TOKENIZERS];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    tokenizer_ids ids = {0};
    llava_error err;
    if (tokenizer_encode(tok, text, len, data[0] & 0x80 ? TOKENIZER_ADD_SPECIAL : 0, &ids, &err) !=
        LLAVA_OK) {
        if (err.code != LLAVA_ERR_INVALID_ARGUMENT || !strstr(err.message, "UTF-8")) abort();
        return 0;
    }
    int32_t n = tokenizer_vocab_size(tok);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.ids[i] < 0 || ids.ids[i] >= n) abort();
    for (unsigned flags = 0; flags <= TOKENIZER_SKIP_SPECIAL; flags++) {
        tokenizer_text whole = {0}, streamed = {0};
        if (tokenizer_decode(tok, ids.ids, ids.n, flags, &whole, &err) != LLAVA_OK) abort();
        tokenizer_stream *s = tokenizer_stream_new(tok, flags);
        for (size_t i = 0; i < ids.n; i++)
            if (tokenizer_stream_push(s, ids.ids[i], &streamed, &err) != LLAVA_OK) abort();
        if (tokenizer_stream_finish(s, &streamed, &err) != LLAVA_OK) abort();
        tokenizer_stream_free(s);
        if (whole.len != streamed.len || (whole.len && memcmp(whole.data, streamed.data, whole.len)))
            abort();
        if (tok == toks[LLAVA] && !(data[0] & 0x80) && !lossy(text, len) &&
            (whole.len != len || (len && memcmp(whole.data, text, len))))
            abort();
        tokenizer_text_free(&whole);
        tokenizer_text_free(&streamed);
    }
    tokenizer_ids_free(&ids);
    return 0;
}
