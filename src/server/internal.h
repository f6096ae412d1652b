/* What the server's files share: the server and per-request ("call") structs and the functions
 * one file calls in another. Everything here runs on the loop thread. */
#ifndef LLAVA_SERVER_INTERNAL_H
#define LLAVA_SERVER_INTERNAL_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdint.h>

#include "server/fetch.h"
#include "server/format.h"
#include "server/parse.h"
#include "server/server.h"

typedef struct srv_call srv_call;
typedef struct srv_bodies srv_bodies;

/* HTTP answers by class, for /metrics. */
enum { SRV_HTTP_2XX, SRV_HTTP_4XX, SRV_HTTP_429, SRV_HTTP_5XX, SRV_HTTP_CLASSES };

/* Where the engine's reported request phases go (from DONE events), for /metrics. */
enum { PHASE_QUEUE, PHASE_PREPARE, PHASE_IMAGE, PHASE_PREFILL, PHASE_DECODE, PHASE_COUNT };

typedef struct srv_stats {
    uint64_t http[SRV_HTTP_CLASSES];
    uint64_t disconnects_waiting;   /* client gone before its first token */
    uint64_t disconnects_streaming; /* client gone after tokens started */
    uint64_t fetches, fetch_failures;
    uint64_t accept_pauses;         /* accept() failed (descriptors, memory): paused */
    double phase_sum_ms[PHASE_COUNT];
    uint64_t phase_count;
} srv_stats;

struct srv_server {
    srv_config cfg;                 /* string fields point at the copies below */
    char *model_dir, *model_name, *host, *api_key;
    int port;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    llava_engine *engine;
    struct event *engine_ev;        /* the engine's fd became readable */
    struct event *sig_int, *sig_term;
    struct event *grace_timer;      /* end of the grace period: cancel what still runs */
    struct event *flush_timer;      /* shutdown: wait a little for the last replies to be sent */
    struct event *trim_timer;       /* idle for a moment: give freed heap memory back */
    struct event *accept_timer;     /* accepting paused (out of descriptors): resume */
    double accept_logged;           /* when the last pause was logged (monotonic s) */
    srv_server *next_listening;     /* the process's servers, for the listener's error callback */
    srv_fetcher *fetcher;           /* NULL unless remote images are allowed */
    srv_bodies *bodies;             /* the thread that parses large bodies */
    srv_call *calls;                /* live generation calls */
    size_t n_calls;
    size_t replies_in_flight;       /* answers handed to libevent and not yet written */
    int signals;                    /* SIGINT/SIGTERM received */
    bool draining;                  /* first signal: no new connections or requests */
    bool engine_closed;             /* the CLOSED event arrived */
    int exit_code;
    uint64_t n_ids;                 /* call ids */
    uint64_t rng;                   /* seeds for requests that give none (splitmix64 state) */
    int64_t model_bytes;            /* size of the checkpoint's files */
    int64_t model_mtime;
    char model_digest[24];
    llava_model_desc desc;          /* the folder described at start (llava_model_describe) */
    bool desc_ok;
    srv_stats stats;
};

struct srv_call {
    srv_server *srv;
    srv_call *prev, *next;
    struct evhttp_request *req;     /* NULL once the client is gone or the answer is sent */
    srv_api api;
    srv_parsed *parsed;             /* until submitted (remote images are fetched into it) */
    char (*image_fields)[128];      /* [n_images]: names for engine errors about image k */
    size_t n_images;
    srv_fetch **fetches;            /* [n_images]: running fetches (NULL entries: none) */
    unsigned char **fetched;        /* [n_images]: fetched bytes, owned until submit */
    size_t fetches_left;
    llava_request_id id;            /* 0 until submitted */
    bool gone;                      /* the client disconnected */
    bool parsing;                   /* its body is on the parsing thread */
    bool started;                   /* streaming headers sent */
    bool stream, include_usage;
    bool wait_load;                 /* Ollama load-only request waiting for READY */
    struct evbuffer *text;          /* non-streamed answer so far */
    int tokens;                     /* TOKEN events seen */
    int status;                     /* HTTP status answered (0: none, the client left) */
    double t_start;                 /* monotonic ms, for the log line */
    char id_str[48];
    char created_at[40];
    int64_t created;
    char model[128];
};

/* ---- server.c ---- */
void srv_log(srv_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends a whole answer (JSON unless content_type says otherwise) and counts it. Takes body. */
void srv_reply(srv_server *s, struct evhttp_request *req, int status, const char *content_type,
               char *body);
/* An error in the shape of the API of the request's path (OpenAI under /v1, else Ollama's). */
void srv_reply_error(srv_server *s, struct evhttp_request *req, bool openai, int status,
                     const char *message, const char *param);
/* Called when a call has ended and its client is answered or gone: unlinks and frees it. */
void srv_call_free(srv_call *c);
/* After a call ended: a draining server closes the engine once none is left, and an idle one
 * soon returns freed memory to the system. */
void srv_calls_changed(srv_server *s);
/* A seed for a request that gave none. */
uint64_t srv_next_seed(srv_server *s);
/* Constant-time check of the Authorization header against the API key. */
bool srv_authorized(const srv_server *s, struct evhttp_request *req);

/* ---- call.c: the generation endpoints ---- */
void srv_handle_generate(srv_server *s, struct evhttp_request *req, srv_api api);
/* An engine event of a call (TOKEN or terminal). */
void srv_call_event(srv_call *c, const llava_event *ev);
/* The model finished loading (or failed): answer calls waiting for it. */
void srv_calls_model_state(srv_server *s);

/* The body of c has been parsed (p, or NULL and err): go on with the call. */
void srv_call_parsed(srv_call *c, srv_parsed *p, const srv_parse_error *err);

/* ---- bodies.c: parsing large bodies off the loop ---- */
/* Creates the queue and its eventfd in the loop; srv_bodies_spawn starts the thread (called from
 * the thread whose scheduling priority it should inherit). NULL if out of resources. */
srv_bodies *srv_bodies_new(srv_server *s);
int srv_bodies_spawn(srv_bodies *b);
/* Stops the thread and drops unfinished jobs (their calls are freed by the caller). */
void srv_bodies_free(srv_bodies *b);
/* Moves the bytes of in into a job for c; false if the thread is not running or memory ran out
 * (in is then untouched). */
bool srv_bodies_post(srv_bodies *b, srv_call *c, srv_api api, const srv_parse_options *opt,
                     struct evbuffer *in);

/* ---- info.c: health, metrics, model lists ---- */
void srv_handle_health(srv_server *s, struct evhttp_request *req);
void srv_handle_metrics(srv_server *s, struct evhttp_request *req);
void srv_handle_openai_models(srv_server *s, struct evhttp_request *req, const char *id);
void srv_handle_ollama_tags(srv_server *s, struct evhttp_request *req);
void srv_handle_ollama_show(srv_server *s, struct evhttp_request *req);
void srv_handle_ollama_ps(srv_server *s, struct evhttp_request *req);
void srv_handle_ollama_version(srv_server *s, struct evhttp_request *req);
/* Reads the checkpoint folder's size, time and a digest of its config (at start). */
void srv_model_facts(srv_server *s);

#endif
