/* The tokenizer loader's shared parts: its state, the typed JSON lookups whose errors name the
 * file and field, and one entry per part of tokenizer.json / tokenizer_config.json, each in the
 * file of src/text/ that reads it (model, added tokens, pipeline). */
#ifndef LLAVA_TEXT_TOKENIZER_LOAD_H
#define LLAVA_TEXT_TOKENIZER_LOAD_H

#include <jansson.h>

#include "text/tokenizer_internal.h"
#include "text/tokenizer_json.h"

/* Ids beyond this are refused: real vocabularies are dense and below a few hundred thousand,
 * and per-id tables are allocated up to the largest id. */
#define TL_MAX_TOKEN_ID ((1 << 24) - 1)

/* What the loader carries around: the tokenizer being built and the names for errors. */
typedef struct loader {
    tokenizer *tok;
    const char *what;        /* tokenizer.json's name */
    const char *config_what; /* tokenizer_config.json's name */
    llava_error *err;
    size_t pool_bound;       /* bytes the pool can ever need: the sizes of both files */
} loader;

/* Pool and per-id tables (tokenizer_load.c). */
uint32_t tl_pool_add(tokenizer *tok, const char *s, size_t len);
int tl_ensure_ids(tokenizer *tok, int32_t n);
void tl_set_piece(tokenizer *tok, int32_t id, uint32_t off, size_t len, uint8_t flags);

/* JSON lookups (tokenizer_load.c); `where` is the path of obj inside the file. */
const char *tl_need_string(loader *L, const json_t *obj, const char *key, const char *where,
                           size_t *len);
int tl_need_char(loader *L, const json_t *obj, const char *key, const char *where, uint32_t *cp);
int tl_get_bool_in(loader *L, const char *file, const json_t *obj, const char *key,
                   const char *where, bool *out);
int tl_get_bool(loader *L, const json_t *obj, const char *key, const char *where, bool *out);
int tl_get_pattern(loader *L, const json_t *obj, const char *where, char **pat, size_t *len);
char *tl_dup_bytes(const char *s, size_t len);
int tl_type_is(const json_t *obj, const char *type);
const char *tl_type_of(const json_t *obj);
int tl_oom(loader *L);

/* The BPE model (tokenizer_model.c). model.vocab and model.merges are read straight from the
 * raw text at the cursor (which ends after the value); vocab must come first. tl_load_model then
 * reads the rest of "model" from jansson's view, where both are blanked. */
int tl_load_vocab(loader *L, tj_cursor *c);
int tl_load_merges(loader *L, tj_cursor *c);
int tl_load_model(loader *L, const json_t *model);
int tl_prepare_word_cuts(tokenizer *tok);

/* Added tokens and special ids (tokenizer_added.c). */
int tl_load_added_tokens(loader *L, const json_t *root);
int tl_load_config_tokens(loader *L, const json_t *cfg);
int tl_finish_added(loader *L);
int tl_load_specials(loader *L, const json_t *root, const json_t *cfg);
int tl_load_config_misc(loader *L, const json_t *cfg);

/* Normalizer, pre-tokenizer, decoder (tokenizer_pipeline.c). */
int tl_load_normalizer(loader *L, const json_t *root);
int tl_load_pre_tokenizer(loader *L, const json_t *root);
int tl_load_decoder(loader *L, const json_t *root);

#endif
