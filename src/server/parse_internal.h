/* What the request parser's files share: the arena that owns a parsed request, the parsing
 * context with its growing message and image lists, and typed field readers whose errors name the
 * field. Only parse.c, parse_openai.c and parse_ollama.c include it. */
#ifndef LLAVA_SERVER_PARSE_INTERNAL_H
#define LLAVA_SERVER_PARSE_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"
#include "server/parse.h"

#define SRV_MAX_MESSAGES 4096
#define SRV_MAX_STOP 16
#define SRV_MAX_STOP_LEN 256
#define SRV_MAX_TOKENS_LIMIT 1048576

/* Bump allocation in chunks; freed all at once with the request. */
typedef struct srv_arena {
    struct arena_chunk *head;
} srv_arena;

void *srv_arena_alloc(srv_arena *a, size_t size);
char *srv_arena_strdup(srv_arena *a, const char *s, size_t len);

/* One message while parsing: its images are [first, first + count) of the image list. */
typedef struct pmsg {
    const char *role;
    const char *content;
    size_t first_image, n_images;
} pmsg;

typedef struct pctx {
    srv_parsed *p;
    const srv_parse_options *opt;
    srv_parse_error *err;
    pmsg *msgs;
    size_t n_msgs, cap_msgs;
    llava_image *images;
    srv_image_source *sources;
    size_t n_images, cap_images;
    const char **stop;
    size_t n_stop;
} pctx;

/* Sets err to status 400 for field (may be "" for the whole body); the message is
 * "field: <formatted>". Returns -1 so that callers can `return fail(...)`. */
int pfail(pctx *c, const char *field, const char *fmt, ...) LLAVA_PRINTF(3, 4);
int pfail_oom(pctx *c);

/* obj[key] unless absent or JSON null. */
const json_t *pget(const json_t *obj, const char *key);

/* Typed readers of obj[key] named field in errors. Absent or null: 0 and *present false (when
 * present is not NULL); the wrong type or out of [lo, hi]: -1 with the error set. */
int pget_bool(pctx *c, const json_t *obj, const char *key, const char *field, bool *out);
int pget_number(pctx *c, const json_t *obj, const char *key, const char *field, double lo,
                double hi, double *out, bool *present);
int pget_int(pctx *c, const json_t *obj, const char *key, const char *field, int64_t lo,
             int64_t hi, int64_t *out, bool *present);
int pget_string(pctx *c, const json_t *obj, const char *key, const char *field, const char **out);

/* Stop strings: a string or an array of strings at v. */
int pparse_stop(pctx *c, const json_t *v, const char *field);

/* Adds a message (role and content copied); returns its index or -1. */
int padd_message(pctx *c, const char *role, const char *content, size_t content_len);

/* Adds an image to the last message from a base64 string (plain, or a data: URI when
 * allow_data_uri) or, when allow_urls, an http(s):// or file:// URL; field names it in errors. */
int padd_image(pctx *c, const char *value, size_t len, const char *field, bool allow_urls);

/* Counts <image> markers in text. */
size_t pcount_markers(const char *text);

/* The per-API halves: they fill c (messages, images, stop) and c->p's request fields. */
int parse_openai_chat(pctx *c, const json_t *root);
int parse_ollama(pctx *c, const json_t *root, bool chat);

#endif
