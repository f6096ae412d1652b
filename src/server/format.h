/* The JSON the server writes: OpenAI chat completions (whole and as SSE chunks), Ollama chat and
 * generate answers (whole and as NDJSON lines), and both APIs' error shapes. Pure functions that
 * return new NUL-terminated strings (the caller frees them), or NULL when memory runs out. */
#ifndef LLAVA_SERVER_FORMAT_H
#define LLAVA_SERVER_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llava.h"

/* What every answer to one request repeats. */
typedef struct srv_answer {
    const char *id;          /* OpenAI: "chatcmpl-..." */
    int64_t created;         /* Unix seconds */
    const char *created_at;  /* Ollama: RFC 3339 UTC with microseconds */
    const char *model;
} srv_answer;

/* OpenAI's finish_reason for a DONE event's reason. */
const char *srv_finish_reason(llava_done_reason reason);

/* One SSE chunk payload (without "data: "): a delta with role and/or content (either may be
 * NULL), or with finish_reason set, an empty delta and that reason. usage_null adds
 * "usage": null (stream_options.include_usage asks for it on every chunk). */
char *srv_openai_chunk(const srv_answer *a, const char *role, const char *content, size_t len,
                       const char *finish_reason, bool usage_null);
/* The chunk that carries only usage (choices empty), sent last with include_usage. */
char *srv_openai_usage_chunk(const srv_answer *a, const llava_usage *u);
/* A whole chat.completion object. */
char *srv_openai_completion(const srv_answer *a, const char *text, size_t len,
                            const char *finish_reason, const llava_usage *u);
/* {"error":{"message","type","param","code"}}; param may be NULL or "" (JSON null). */
char *srv_openai_error(int status, const char *message, const char *param);

/* Ollama: one streamed piece ({"message":{...}} for chat, {"response":...} for generate). */
char *srv_ollama_chunk(const srv_answer *a, bool chat, const char *text, size_t len);
/* The final object: done true, done_reason, the durations (nanoseconds, from the engine's
 * timings) and counts. text is the whole answer (non-streamed) or "" (streamed). */
char *srv_ollama_final(const srv_answer *a, bool chat, const char *text, size_t len,
                       const char *done_reason, const llava_usage *u, const llava_timings *t);
/* {"error": message} */
char *srv_ollama_error(const char *message);

/* Copies len bytes of s to a new string in which each invalid UTF-8 sequence is replaced by
 * U+FFFD; *out_len gets its length. Model output can hold such bytes (byte-fallback tokens), and
 * JSON strings cannot. */
char *srv_utf8_clean(const char *s, size_t len, size_t *out_len);

#endif
