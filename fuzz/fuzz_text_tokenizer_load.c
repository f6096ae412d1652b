/* libFuzzer target for tokenizer.json / tokenizer_config.json loading. The input is
 * tokenizer.json, optionally followed by a NUL byte and tokenizer_config.json. A tokenizer that
 * loads must then encode, decode and stream without fault, and the streamed text must equal the
 * whole decode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const tokenizer *tok) {
    static const char *const texts[] = {"", "a b", " hi <s> x", "\xE2\x96\x81\xE2\x96\x81z",
                                        "\xF0\x9F\x98\x80 \xC3\xA9\n\t", "ab\xFF"};
    llava_error err;
    int32_t n = tokenizer_vocab_size(tok);
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        tokenizer_ids ids = {0};
        llava_status st = tokenizer_encode(tok, texts[t], strlen(texts[t]), TOKENIZER_ADD_SPECIAL,
                                           &ids, &err);
        if (st != LLAVA_OK && !err.message[0]) abort();
        for (size_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || ids.ids[i] >= n || !tokenizer_token_text(tok, ids.ids[i])) abort();
        tokenizer_ids_free(&ids);
    }
    /* Every id, decoded whole and streamed, with and without special tokens. */
    int32_t *all = malloc((size_t)(n > 0 ? n : 1) * sizeof *all);
    size_t k = 0;
    for (int32_t id = 0; id < n && k < 4096; id++)
        if (tokenizer_token_text(tok, id)) all[k++] = id;
    for (unsigned flags = 0; flags <= TOKENIZER_SKIP_SPECIAL; flags++) {
        tokenizer_text whole = {0}, streamed = {0};
        if (tokenizer_decode(tok, all, k, flags, &whole, &err) != LLAVA_OK) abort();
        tokenizer_stream *s = tokenizer_stream_new(tok, flags);
        if (!s) abort();
        for (size_t i = 0; i < k; i++)
            if (tokenizer_stream_push(s, all[i], &streamed, &err) != LLAVA_OK) abort();
        if (tokenizer_stream_finish(s, &streamed, &err) != LLAVA_OK) abort();
        tokenizer_stream_free(s);
        if (whole.len != streamed.len || (whole.len && memcmp(whole.data, streamed.data, whole.len)))
            abort();
        tokenizer_text_free(&whole);
        tokenizer_text_free(&streamed);
    }
    free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *json = (const char *)data, *cfg = NULL;
    size_t json_len = size, cfg_len = 0;
    const uint8_t *nul = memchr(data, 0, size);
    if (nul) {
        json_len = (size_t)(nul - data);
        cfg = (const char *)nul + 1;
        cfg_len = size - json_len - 1;
    }
    tokenizer *tok = NULL;
    llava_error err;
    llava_status st = tokenizer_load_buffers(json, json_len, cfg, cfg_len, "fuzz.json", &tok, &err);
    if (st != LLAVA_OK) {
        if (tok || !err.message[0]) abort();
        return 0;
    }
    exercise(tok);
    tokenizer_free(tok);
    return 0;
}
