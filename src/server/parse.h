/* The request-body parser: JSON bodies of the OpenAI and Ollama generation endpoints turned into
 * a llava_request, or into an HTTP status and a message naming the field at fault. A pure
 * function of (bytes, options): no I/O, no engine, any thread; the fuzz target drives it. */
#ifndef LLAVA_SERVER_PARSE_H
#define LLAVA_SERVER_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "llava.h"

typedef enum srv_api {
    SRV_API_OPENAI_CHAT,     /* POST /v1/chat/completions */
    SRV_API_OLLAMA_CHAT,     /* POST /api/chat */
    SRV_API_OLLAMA_GENERATE  /* POST /api/generate */
} srv_api;

typedef struct srv_parse_options {
    bool allow_local_files;    /* file:// image URLs (passed to the engine as paths) */
    bool allow_remote_images;  /* http(s):// image URLs (fetched by the server) */
    size_t max_images;         /* per request; 0: no image at all */
} srv_parse_options;

/* Why a body was refused: the HTTP status (400 almost always), the field (OpenAI's "param",
 * empty when the body as a whole is at fault) and a message that starts with that field. */
typedef struct srv_parse_error {
    int status;
    char param[128];
    char message[512];
} srv_parse_error;

/* Where one image of the request comes from; parallel to srv_parsed.images. */
typedef struct srv_image_source {
    char field[128];           /* e.g. "messages[0].content[1].image_url.url" */
    const char *url;           /* http(s) URL still to fetch (remote images), else NULL */
} srv_image_source;

/* A parsed body. Everything (strings, decoded image bytes) lives in its own memory, freed by
 * srv_parsed_free. req points into it and is ready for llava_engine_submit once every image with
 * a url has been filled in (images[i].data/size) by whoever fetched it. */
typedef struct srv_parsed {
    srv_api api;
    llava_request req;
    llava_message *messages;   /* [req.n_messages] (req.messages) */
    llava_image *images;       /* [n_images]: every image in request order; each message's images
                                * (and raw mode's req.images) are a run of this array */
    srv_image_source *sources; /* [n_images] */
    size_t n_images;
    size_t n_remote;           /* images with a url to fetch */
    const char *model;         /* the model named by the request (may be NULL for OpenAI) */
    bool stream;
    bool include_usage;        /* OpenAI stream_options.include_usage */
    bool seed_given;           /* else the server picks a seed (req.sampling.seed is 0) */
    bool load_only;            /* Ollama generate with neither prompt nor images: answer at once */
    struct srv_arena *arena;
} srv_parsed;

/* Parses body (len bytes, not NUL-terminated) for api. Returns the new request, or NULL with
 * *err filled (err->status 400, or 500 when memory ran out). */
srv_parsed *srv_parse_request(srv_api api, const char *body, size_t len,
                              const srv_parse_options *opt, srv_parse_error *err);
void srv_parsed_free(srv_parsed *p);

/* Sniffs the container format of image bytes: "jpeg", "png", "webp", "gif", "bmp" or NULL. */
const char *srv_image_format(const unsigned char *bytes, size_t size);

#endif
