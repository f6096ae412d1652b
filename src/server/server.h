/* The HTTP server behind `llava serve`: OpenAI- and Ollama-compatible endpoints on one libevent
 * loop that also watches the engine's event descriptor, so no request ever waits for the model.
 * A server is a value (two can run in one process, each on its own thread and loop). */
#ifndef LLAVA_SERVER_SERVER_H
#define LLAVA_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "llava.h"

/* One line of the server's log (start, requests, shutdown), without a newline. */
typedef void (*srv_log_fn)(void *user, const char *line);

typedef struct srv_config {
    const char *model_dir;       /* a llava-hf checkpoint folder (required) */
    const char *model_name;      /* reported by /v1/models and /api/tags; NULL: the folder name */
    const char *host;            /* address to listen on; NULL: 127.0.0.1 */
    int port;                    /* 0: any free port (see srv_port) */
    int max_queue;               /* requests waiting for the engine; more get 429; <= 0: 64 */
    size_t max_body;             /* request body bytes; more get 413; 0: 32 MiB */
    size_t max_images;           /* images per request; 0: 16 */
    bool allow_local_files;      /* file:// image URLs */
    bool allow_remote_images;    /* http(s):// image URLs, fetched by the server */
    size_t remote_max_bytes;     /* size limit of one fetched image; 0: 20 MiB */
    int remote_timeout_ms;       /* whole-transfer limit of one fetch; <= 0: 10000 */
    int remote_max_redirects;    /* < 0: 3 */
    const char *api_key;         /* NULL or "": no authentication */
    double grace_seconds;        /* after SIGINT/SIGTERM, how long in-flight requests may run;
                                  * < 0: 30 */
    int idle_timeout_s;          /* keep-alive connections and slow request bodies; <= 0: 60 */
    int n_threads;               /* engine compute threads; <= 0: the online cores */
    unsigned half_parts;         /* llava_engine_config.half_parts */
    int quant;                   /* llava_engine_config.quant */
    int kv_cache;                /* llava_engine_config.kv_cache */
    bool no_mmap;                /* llava_engine_config.no_mmap */
    int n_ctx;                   /* context limit; <= 0: the model's */
    int prep_threads;            /* engine preprocessing threads (1-2); <= 0: 1 */
    int engine_nice;             /* the engine's threads run this much nicer than the loop
                                  * (0..19), so that the loop preempts them when it wakes */
    srv_log_fn log;              /* NULL: silent */
    void *log_user;
} srv_config;

typedef struct srv_server srv_server;

/* Zeroes cfg (every field then means its default; model_dir must still be set). */
void srv_config_default(srv_config *cfg);

/* Checks cfg, binds the listening socket and starts the engine (which loads the model in the
 * background: /health says "loading" meanwhile). Strings of cfg are copied. Errors name the
 * option or the address at fault. */
llava_status srv_create(const srv_config *cfg, srv_server **out, llava_error *err);

/* The port actually bound (useful with port 0). */
int srv_port(const srv_server *s);

/* Runs the event loop on the calling thread until SIGINT or SIGTERM: the first stops accepting
 * connections and lets in-flight requests finish within the grace period (then cancels them),
 * the second aborts at once. Returns 0 after a graceful stop, 1 after an abort. Signals are
 * handled through the loop, so only one server per process should run this. */
int srv_run(srv_server *s);

/* Frees the server (the engine included). NULL is fine. */
void srv_free(srv_server *s);

#endif
