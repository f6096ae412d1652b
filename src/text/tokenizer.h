/* The text tokenizer: Hugging Face tokenizer.json (SentencePiece-style BPE with byte fallback, as
 * shipped with LLaMA-2/Vicuna and Mistral checkpoints) plus tokenizer_config.json, encoding to
 * exactly the ids Hugging Face tokenizers produces and decoding back, whole or streamed.
 *
 * A tokenizer is immutable once loaded: any number of threads may encode and decode with the same
 * one at once. A tokenizer_stream (incremental decoder) belongs to one thread at a time. */
#ifndef LLAVA_TEXT_TOKENIZER_H
#define LLAVA_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct tokenizer tokenizer;

/* A growable array of token ids; start from {0} and free with tokenizer_ids_free. */
typedef struct tokenizer_ids {
    int32_t *ids;
    size_t n;   /* ids in use */
    size_t cap; /* ids allocated */
} tokenizer_ids;

/* A growable byte string, always NUL-terminated once non-empty; start from {0}, free with
 * tokenizer_text_free. The text may hold NUL bytes when the tokens do (len counts them). */
typedef struct tokenizer_text {
    char *data;
    size_t len; /* bytes in use, excluding the terminating NUL */
    size_t cap;
} tokenizer_text;

/* Flags of tokenizer_encode. */
enum {
    /* Add BOS/EOS as tokenizer_config.json says (add_bos_token, add_eos_token), or as the
     * post_processor of tokenizer.json says when the config does not. Hugging Face's
     * add_special_tokens=True. */
    TOKENIZER_ADD_SPECIAL = 1u << 0,
};

/* Flags of tokenizer_decode and tokenizer_stream_new. */
enum {
    /* Leave out special added tokens (<s>, </s>, <image>, ...): skip_special_tokens=True. */
    TOKENIZER_SKIP_SPECIAL = 1u << 0,
};

/* Loads a tokenizer from path: either a folder holding tokenizer.json, or the tokenizer.json
 * file itself. tokenizer_config.json next to it is read when present (add_bos_token,
 * add_eos_token, bos/eos/unk/pad tokens, legacy, chat_template); a chat template is also taken
 * from chat_template.jinja or chat_template.json in that folder when the config has none.
 * Anything the files ask for that this tokenizer does not implement is LLAVA_ERR_UNSUPPORTED,
 * never a silent difference. Blocks on file I/O; *out is owned by the caller. */
llava_status tokenizer_load(const char *path, tokenizer **out, llava_error *err);

/* Builds a tokenizer from the contents of tokenizer.json and (may be NULL) tokenizer_config.json;
 * `what` names the source in error messages. For tests, fuzzing and embedded files. */
llava_status tokenizer_load_buffers(const char *tokenizer_json, size_t tokenizer_json_len,
                                    const char *config_json, size_t config_json_len,
                                    const char *what, tokenizer **out, llava_error *err);

void tokenizer_free(tokenizer *tok);

/* Encodes len bytes of UTF-8 text (NUL bytes allowed) and APPENDS the ids to out. Invalid UTF-8
 * is LLAVA_ERR_INVALID_ARGUMENT naming the byte offset, and out is left as it was. Thread-safe. */
llava_status tokenizer_encode(const tokenizer *tok, const char *text, size_t len, unsigned flags,
                              tokenizer_ids *out, llava_error *err);

/* Decodes n ids into out (replacing its contents) as Hugging Face's decode does, through the
 * decoder of tokenizer.json (e.g. "▁" -> " ", <0xNN> bytes fused, one leading space stripped).
 * Byte runs that are not valid UTF-8 become U+FFFD, one per byte, so the result is always valid
 * UTF-8. An id outside the vocabulary is LLAVA_ERR_INVALID_ARGUMENT. Thread-safe. */
llava_status tokenizer_decode(const tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                              tokenizer_text *out, llava_error *err);

/* Incremental decoding for streaming. Feed ids one at a time; each call APPENDS to out only text
 * that is final: never part of a UTF-8 sequence, never a space that the whole-sequence decode
 * would strip. The concatenation of everything appended by tokenizer_stream_push and
 * tokenizer_stream_finish equals tokenizer_decode of the same ids with the same flags. */
typedef struct tokenizer_stream tokenizer_stream;

/* The stream keeps a pointer to tok, which must outlive it. NULL when out of memory. */
tokenizer_stream *tokenizer_stream_new(const tokenizer *tok, unsigned flags);
llava_status tokenizer_stream_push(tokenizer_stream *s, int32_t id, tokenizer_text *out,
                                   llava_error *err);
/* Appends what is still held back (an unfinished byte run) and resets the stream for reuse. */
llava_status tokenizer_stream_finish(tokenizer_stream *s, tokenizer_text *out, llava_error *err);
/* Drops what is held back and starts a new sequence, appending nothing. */
void tokenizer_stream_reset(tokenizer_stream *s);
void tokenizer_stream_free(tokenizer_stream *s);

/* Number of ids: the model vocabulary plus added tokens (the largest id + 1). */
int32_t tokenizer_vocab_size(const tokenizer *tok);
/* The id of a token given by its exact text ("<image>", "</s>", "▁the"), or -1. */
int32_t tokenizer_token_id(const tokenizer *tok, const char *text);
/* The raw piece of an id, as in the vocabulary ("▁the", "<0x0A>", "</s>"), or NULL when out of
 * range. Valid while tok lives. For stop-string checks and debugging. */
const char *tokenizer_token_text(const tokenizer *tok, int32_t id);
/* 1 when id is a special added token (<s>, </s>, <image>, ...), else 0. */
int tokenizer_is_special(const tokenizer *tok, int32_t id);
/* Special ids from tokenizer_config.json (or tokenizer.json); -1 when the tokenizer has none. */
int32_t tokenizer_bos_id(const tokenizer *tok);
int32_t tokenizer_eos_id(const tokenizer *tok);
int32_t tokenizer_unk_id(const tokenizer *tok);
int32_t tokenizer_pad_id(const tokenizer *tok);
/* Whether TOKENIZER_ADD_SPECIAL adds BOS / EOS. */
bool tokenizer_adds_bos(const tokenizer *tok);
bool tokenizer_adds_eos(const tokenizer *tok);
/* The chat template (Jinja source) from the model folder, or NULL. Valid while tok lives. */
const char *tokenizer_chat_template(const tokenizer *tok);

/* The chat template a folder gives, found as tokenizer_load finds it (tokenizer_config.json's
 * "chat_template", else chat_template.jinja, else chat_template.json's), without loading the
 * tokenizer: *text is a new string the caller frees, or NULL when the folder has none; *source
 * names the file it came from (static). A malformed file is an error naming it. */
llava_status tokenizer_find_chat_template(const char *dir, char **text, const char **source, llava_error *err);

/* A "chat_template" value: a string, or a list of {"name", "template"} (the one named "default",
 * else the first). 0 with *text pointing into v (NULL when v is absent, null or holds none);
 * -1 when v is of another type. */
struct json_t;
int tokenizer_template_value(const struct json_t *v, const char **text);

void tokenizer_ids_free(tokenizer_ids *ids);
void tokenizer_text_free(tokenizer_text *text);

#endif
