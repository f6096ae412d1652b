/* llava.h: the public contract of llava.c, a LLaVA vision-language inference engine.
 *
 * Everything a program embedding the engine needs is declared here; nothing under src/ is part
 * of the API. Every function says which thread may call it, whether it can block, and who owns
 * each pointer it takes or returns.
 */
#ifndef LLAVA_H
#define LLAVA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LLAVA_VERSION_MAJOR 0
#define LLAVA_VERSION_MINOR 1
#define LLAVA_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */

/* What went wrong, in classes a caller can act on. */
typedef enum llava_status {
    LLAVA_OK = 0,
    LLAVA_ERR_INVALID_ARGUMENT, /* the caller passed something unusable */
    LLAVA_ERR_IO,               /* a file could not be opened, read or mapped */
    LLAVA_ERR_FORMAT,           /* bytes from outside (file, image, JSON, body) are malformed */
    LLAVA_ERR_UNSUPPORTED,      /* well-formed but asks for something this engine does not do */
    LLAVA_ERR_LIMIT,            /* input exceeds a configured limit (size, pixels, context) */
    LLAVA_ERR_NO_MEMORY,
    LLAVA_ERR_BUSY,             /* the request queue is full: retry later */
    LLAVA_ERR_CANCELLED,
    LLAVA_ERR_STATE,            /* the call is not valid in the object's current state */
    LLAVA_ERR_INTERNAL
} llava_status;

/* An error: a status and a message naming the file, tensor, field or byte offset at fault.
 * Plain value; the caller owns it (usually on its stack). */
typedef struct llava_error {
    llava_status code;
    char message[512];
} llava_error;

/* A static, human-readable name of a status ("format error", ...). Any thread. */
const char *llava_status_name(llava_status status);

/* The library's version as "MAJOR.MINOR.PATCH". Any thread; static storage. */
const char *llava_version(void);

/* ------------------------------------------------------------------------------------------ */
/* A checkpoint folder described without reading its weights: config.json, the safetensors     */
/* headers and the chat template's file only (milliseconds even for a 14 GB checkpoint), with  */
/* the same checks as a load's first step. For model lists and `/api/show`. Any thread.        */

typedef struct llava_model_desc {
    char text_model_type[16];  /* text_config.model_type: "llama", "mistral" */
    int64_t n_params;          /* weights in the files; a matrix of `llava quantize` counts its
                                * rows × columns (rows rounded up to 16: exact for real shapes) */
    char dtype[8];             /* what most of those weights are stored as: "F32", "F16", "BF16",
                                * "Q8_0" or "Q4_0" */
    int context_length;        /* text_config.max_position_embeddings */
    int hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, vocab_size;
    int vision_hidden_size, vision_layers, image_size, patch_size;
    int image_tokens;          /* positions one image takes in the prompt */
    char chat_template[16];    /* the template conversations are rendered with: "llava"
                                * (llava-1.5), "vicuna", "mistral" or "chatml" */
    char chat_template_source[24]; /* the file it was recognised in ("tokenizer_config.json",
                                    * "chat_template.json", "chat_template.jinja"); "" when the
                                    * folder has none and the text model's type chose it */
} llava_model_desc;

llava_status llava_model_describe(const char *model_dir, llava_model_desc *out, llava_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Engine: one worker thread owns the model; callers talk to it through a request queue and an */
/* event channel, and never wait for it.                                                       */
/*                                                                                             */
/* Threads. The engine has one worker (loads the model, runs every request, one at a time) and */
/* a preprocessing pool of 1-2 threads (decodes images, renders the template, tokenizes). The  */
/* caller's thread (an event loop, or any thread) submits, cancels and drains events; none of  */
/* these calls waits for the worker: each takes a mutex held only for O(1) queue work.         */
/* Results come back as events on the thread that calls llava_engine_poll, woken by the file   */
/* descriptor llava_engine_fd, so the engine fits libevent, libuv, epoll or Python add_reader. */
/*                                                                                             */
/* Life of an engine: open -> (READY | LOAD_FAILED event) -> submit / cancel / poll ->         */
/* llava_engine_close -> poll until the CLOSED event -> llava_engine_free. Every request that  */
/* submit accepted gets exactly one terminal event (DONE, ERROR or CANCELLED), after all of    */
/* its TOKEN events and before CLOSED; none of its events comes after the terminal one.        */

/* A handle to one engine (one model). Two engines are independent. */
typedef struct llava_engine llava_engine;

/* Identifies a request of an engine: non-zero, never reused by that engine, increasing in
 * submission order. */
typedef uint64_t llava_request_id;

typedef struct llava_engine_config {
    const char *model_dir;  /* a llava-hf checkpoint folder; copied by llava_engine_open */
    int n_threads;          /* compute threads of the worker; <= 0: the online cores */
    int n_ctx;              /* context limit in positions; <= 0: the model's own */
    int prefill_chunk;      /* prompt positions per decoder pass (memory: about 50 KB per position
                             * for a 7B); <= 0: 1024. Cancel is polled between layers. */
    int queue_capacity;     /* requests accepted and not yet running; more: LLAVA_ERR_BUSY;
                             * <= 0: 64; at most 65536 */
    int prep_threads;       /* preprocessing pool size, 1 or 2; <= 0: 1 */
    bool lazy_load;         /* load at the first submit instead of at open */
    /* Parts (LLAVA_HALF_* bits; 0: none, the exact path) whose image and prompt products run in
     * half precision: f16 multiply-adds at twice the f32 rate, about 1e-3 relative error, on CPUs
     * with AVX512-FP16 (elsewhere they stay exact). Decode keeps f32 arithmetic. */
    unsigned half_parts;
    /* Weights quantized at load (int8 products, about 1e-2 relative error for Q8_0): 0 keeps
     * them as stored; LLAVA_QUANT_LOAD_Q8_0 or LLAVA_QUANT_LOAD_Q4_0 quantizes every matrix but
     * the embeddings and the patch convolution. A checkpoint stored quantized (`llava quantize`)
     * is used as it is either way. */
    int quant;
    /* The KV cache's element type: LLAVA_KV_CACHE_F32 (0: exact) or LLAVA_KV_CACHE_F16 (half the
     * memory per position and half the cache bytes each decoded token reads; keys and values
     * rounded to f16, about 1e-3 relative error on the logits; llama.cpp's default). */
    int kv_cache;
    /* false: the checkpoint's files are mapped. true: read whole into the engine's memory at
     * load (llama.cpp's --no-mmap): a slower load, but decode streams fresh anonymous memory,
     * faster and more steadily on the machines measured (docs/PERFORMANCE.md). */
    bool no_mmap;
} llava_engine_config;

enum { LLAVA_QUANT_LOAD_NONE = 0, LLAVA_QUANT_LOAD_Q8_0 = 1, LLAVA_QUANT_LOAD_Q4_0 = 2 };

enum { LLAVA_KV_CACHE_F32 = 0, LLAVA_KV_CACHE_F16 = 1 };

enum { LLAVA_HALF_VISION = 1, LLAVA_HALF_PROJECTOR = 2, LLAVA_HALF_TEXT = 4, LLAVA_HALF_LM_HEAD = 8 };

/* Fills the defaults (every field zero: model_dir NULL must still be set). Any thread. */
void llava_engine_config_default(llava_engine_config *cfg);

/* Checks cfg and starts the engine's threads; returns at once (no file is touched on the
 * caller's thread). The worker then loads the model (unless lazy_load) and reports READY or
 * LOAD_FAILED through the event channel. Requests may be submitted at once: they wait until the
 * model is loaded, and each gets an ERROR event with the load message if loading fails.
 * Errors: LLAVA_ERR_INVALID_ARGUMENT (a field out of range), LLAVA_ERR_NO_MEMORY, LLAVA_ERR_INTERNAL
 * (a thread or the event fd could not be created). Any thread; cfg is not kept. On success *out
 * is the caller's until llava_engine_free. */
llava_status llava_engine_open(const llava_engine_config *cfg, llava_engine **out,
                               llava_error *err);

/* The file descriptor to watch for reading: readable while events are waiting in the channel.
 * Do not read or close it (llava_engine_poll resets it; llava_engine_free closes it). The same
 * for the engine's whole life. Any thread, never blocks. */
int llava_engine_fd(const llava_engine *e);

/* ---- events ---- */

typedef enum llava_event_kind {
    LLAVA_EVENT_READY = 1,   /* the model is loaded; engine-wide (request 0) */
    LLAVA_EVENT_LOAD_FAILED, /* loading failed: status and message (which file, what is wrong) */
    LLAVA_EVENT_TOKEN,       /* one generated token of a request and the text it releases */
    LLAVA_EVENT_DONE,        /* terminal: the request finished (reason, usage, timings) */
    LLAVA_EVENT_ERROR,       /* terminal: the request failed (status and message) */
    LLAVA_EVENT_CANCELLED,   /* terminal: the request was cancelled (llava_engine_cancel, abort) */
    LLAVA_EVENT_CLOSED       /* the last event of an engine: after llava_engine_close, when every
                              * request has had its terminal event and the threads are done */
} llava_event_kind;

/* Why a request ended. */
typedef enum llava_done_reason {
    LLAVA_DONE_STOP,      /* an end-of-sequence token or a stop string */
    LLAVA_DONE_LENGTH,    /* max_tokens reached (or the context is full) */
    LLAVA_DONE_CANCELLED  /* only in llava_result: the token callback asked to stop */
} llava_done_reason;

typedef struct llava_usage {
    int prompt_tokens;      /* positions of the prompt, each image counted as its positions */
    int completion_tokens;  /* tokens sampled, an end-of-sequence token included */
} llava_usage;

/* Milliseconds, measured by the engine. */
typedef struct llava_timings {
    double queue_ms;        /* submit to the start of preprocessing, plus waiting for the worker */
    double prepare_ms;      /* template, tokenizer, image decoding and preprocessing */
    double image_ms;        /* vision tower and projector */
    double prefill_ms;      /* decoder over the prompt */
    double decode_ms;       /* the token loop */
    double first_token_ms;  /* submit to the first token */
    double total_ms;        /* submit to the terminal event */
} llava_timings;

/* One event. Which fields are set depends on kind; the rest are zero. Pointers are into the
 * engine's memory and stay valid until the next llava_engine_poll or llava_engine_free. */
typedef struct llava_event {
    llava_event_kind kind;
    llava_request_id request; /* the request; 0 for READY, LOAD_FAILED and CLOSED */
    void *user;               /* the request's llava_request.user, never dereferenced here */
    int32_t token;            /* TOKEN: the token id, or -1 for text released at the end (held
                               * back while it could have begun a stop string) */
    const char *text;         /* TOKEN: the UTF-8 text released (may be empty while a multi-byte
                               * character or a possible stop string is held back);
                               * ERROR, LOAD_FAILED: the message. NUL-terminated; NULL otherwise */
    size_t text_len;
    llava_status status;      /* ERROR, LOAD_FAILED: what went wrong; LLAVA_OK otherwise */
    llava_done_reason reason; /* DONE */
    llava_usage usage;        /* DONE, CANCELLED (as far as it went) */
    llava_timings timings;    /* DONE, CANCELLED (as far as it went) */
} llava_event;

/* Moves up to max waiting events into events[] and returns how many; 0 when none is waiting.
 * Never blocks: call it when llava_engine_fd is readable (or whenever). Data of the events
 * returned by the previous call is released by this call. Call it from one thread at a time
 * (calls from several threads are safe but share one stream of events). */
size_t llava_engine_poll(llava_engine *e, llava_event *events, size_t max);

/* ---- requests ---- */

/* An image, in the first form that is set. Only read during llava_engine_submit. */
typedef struct llava_image {
    const void *data;       /* encoded bytes: JPEG, PNG or WebP (decoded on the pool) */
    size_t size;
    const char *path;       /* or a file, read on the preprocessing pool */
    const uint8_t *rgb;     /* or decoded pixels, RGB8 row-major, width * height * 3 bytes */
    int width, height;
} llava_image;

/* One turn of a conversation. When its text has no <image> marker, its images are placed before
 * the text, one marker each (as llava-hf renders image parts); when it has markers, the images
 * fill them in order and their numbers must be equal (else the request ends with an ERROR). */
typedef struct llava_message {
    const char *role;          /* "system", "user" or "assistant" */
    const char *content;       /* text; NULL: empty */
    const llava_image *images;
    size_t n_images;
} llava_message;

/* Sampling. All zero is greedy with no filter or penalty. */
typedef struct llava_sampling {
    float temperature;         /* <= 0: greedy */
    int top_k;                 /* 0: off */
    float top_p;               /* 0 or 1: off; else keep the smallest set of probability >= top_p */
    float min_p;               /* 0: off; keep p >= min_p * p_max */
    float repetition_penalty;  /* 0 or 1: off; HF's, over prompt and output */
    float presence_penalty;    /* OpenAI's; 0: off */
    float frequency_penalty;   /* OpenAI's; 0: off */
    uint64_t seed;             /* same seed, same request: same tokens */
} llava_sampling;

/* A request: either a conversation (messages, rendered with a chat template) or a raw prompt.
 * Everything is copied by llava_engine_submit; nothing is kept. */
typedef struct llava_request {
    const llava_message *messages;
    size_t n_messages;
    const char *template_name;   /* "llava", "vicuna", "mistral", "chatml"; NULL: the model's */
    const char *prompt;          /* raw mode (messages must be empty): the prompt as is */
    const llava_image *images;   /* raw mode: one image per <image> marker of the prompt */
    size_t n_images;
    llava_sampling sampling;
    int max_tokens;              /* <= 0: until the context is full */
    const char *const *stop;     /* stop strings (never emitted, nor the text after them) */
    size_t n_stop;               /* at most 16, each 1-256 bytes */
    bool ignore_eos;             /* keep going past end-of-sequence (benchmarks) */
    void *user;                  /* returned in every event of the request */
} llava_request;

/* Checks the request's shape (roles, image forms, sampling values, stop strings), copies it and
 * queues it; the template, tokenizer and images are dealt with later on the preprocessing pool,
 * and their errors arrive as an ERROR event. Never blocks and never waits for the worker.
 * Errors (nothing is queued, no event will come): LLAVA_ERR_INVALID_ARGUMENT (message names the
 * field), LLAVA_ERR_BUSY (queue_capacity requests are waiting: retry later), LLAVA_ERR_STATE
 * (the engine is closing, or its model failed to load: the message says so), LLAVA_ERR_NO_MEMORY.
 * Any thread. *id is set on success (it may be NULL). */
llava_status llava_engine_submit(llava_engine *e, const llava_request *req,
                                 llava_request_id *id, llava_error *err);

/* Asks for a request to stop. Queued: it ends with CANCELLED at once. Being prepared or running:
 * its thread stops at its next check (between tokens, decoder layers of the prompt and vision
 * layers) and emits CANCELLED. Returns LLAVA_ERR_STATE if the request has already had its terminal event
 * (or never existed); the request may still end with DONE or ERROR if it was finishing. Any
 * thread, never blocks. */
llava_status llava_engine_cancel(llava_engine *e, llava_request_id id);

typedef enum llava_close_mode {
    LLAVA_CLOSE_DRAIN, /* finish every accepted request, then close */
    LLAVA_CLOSE_ABORT  /* cancel every accepted request, then close */
} llava_close_mode;

/* Starts closing and returns at once: later submits fail with LLAVA_ERR_STATE; accepted
 * requests end (DRAIN: run to completion; ABORT: CANCELLED) and deliver their terminal events;
 * then the threads end, the model is freed on its worker, and CLOSED is the last event. A close
 * while loading waits for the load to end (on the worker). Calling it again with ABORT turns a
 * drain into an abort; other repeated calls do nothing. Any thread, never blocks. */
void llava_engine_close(llava_engine *e, llava_close_mode mode);

/* Frees the engine and drops undelivered events. Whatever is still running is aborted (as by
 * llava_engine_close(e, LLAVA_CLOSE_ABORT)), and the call blocks until the worker has ended: at
 * once after CLOSED was polled, else up to the end of the current vision layer, decoder layer or
 * token, or of a load in progress. Call it once, when no other thread uses e. NULL is fine. */
void llava_engine_free(llava_engine *e);

/* ---- state and metrics (for health checks and monitoring) ---- */

typedef enum llava_load_state {
    LLAVA_LOAD_IDLE,      /* lazy_load: nothing loaded yet (the first submit starts loading) */
    LLAVA_LOAD_LOADING,
    LLAVA_LOAD_READY,
    LLAVA_LOAD_FAILED     /* for good: requests fail with its message */
} llava_load_state;

/* The engine's load state; when LLAVA_LOAD_FAILED and load_error is not NULL, *load_error gets
 * the failure (the same status and message as the LOAD_FAILED event). Any thread, never blocks. */
llava_load_state llava_engine_state(const llava_engine *e, llava_error *load_error);

#define LLAVA_HISTOGRAM_BUCKETS 17

/* A latency histogram: counts[i] counts values in (upper_ms[i-1], upper_ms[i]]; the last
 * bucket holds values above every bound (Prometheus' +Inf). Not cumulative. */
typedef struct llava_histogram {
    double upper_ms[LLAVA_HISTOGRAM_BUCKETS - 1];
    uint64_t counts[LLAVA_HISTOGRAM_BUCKETS];
    uint64_t count;
    double sum_ms;
} llava_histogram;

/* Counters since open. Each field is read atomically; the set is not one snapshot. */
typedef struct llava_engine_metrics {
    llava_load_state state;
    bool closing;
    uint64_t queue_depth;         /* accepted and not yet running (waiting or being prepared) */
    uint64_t running;             /* 0 or 1 */
    uint64_t submitted;           /* accepted by llava_engine_submit */
    uint64_t rejected_busy;       /* refused with LLAVA_ERR_BUSY */
    uint64_t rejected_invalid;    /* refused with LLAVA_ERR_INVALID_ARGUMENT */
    uint64_t done_stop;           /* DONE events by reason */
    uint64_t done_length;
    uint64_t cancelled;           /* CANCELLED events */
    uint64_t failed;              /* ERROR events */
    uint64_t prompt_tokens;       /* of requests that ran */
    uint64_t completion_tokens;
    uint64_t images;              /* images encoded by the vision tower */
    llava_histogram time_to_first_token; /* submit to first token, per request */
    llava_histogram time_per_token;      /* between consecutive tokens of a request */
    llava_histogram image_encode;        /* vision tower + projector, per request with images */
} llava_engine_metrics;

/* Fills *out. Any thread, never blocks (atomic loads only). */
void llava_engine_metrics_get(const llava_engine *e, llava_engine_metrics *out);

/* ---- blocking calls for simple programs, built on the calls above ---- */

/* Called with each TOKEN event's token and text (as llava_event). Return non-zero to stop the
 * request (it is cancelled; the result says LLAVA_DONE_CANCELLED). */
typedef int (*llava_token_fn)(void *user, int32_t token, const char *text, size_t len);

/* How a blocking run ended. */
typedef struct llava_result {
    llava_done_reason reason;
    llava_usage usage;
    llava_timings timings;
} llava_result;

/* Submits req and waits (poll(2) on llava_engine_fd, then llava_engine_poll) until it ends,
 * passing its tokens to on_token (may be NULL) on the calling thread. Returns LLAVA_OK when it
 * ended with DONE or was stopped by on_token, else the status and message of its ERROR event,
 * of submit, or of a failed load. Blocks; use it only on an engine that nothing else polls (it
 * consumes every event; events of other requests are dropped). result may be NULL. */
llava_status llava_engine_run(llava_engine *e, const llava_request *req, llava_token_fn on_token,
                              void *user, llava_result *result, llava_error *err);

/* Opens an engine with cfg, runs one request with llava_engine_run, closes and frees the
 * engine. Blocks until everything is done. Any thread. */
llava_status llava_generate_simple(const llava_engine_config *cfg, const llava_request *req,
                                   llava_token_fn on_token, void *user, llava_result *result,
                                   llava_error *err);

#ifdef __cplusplus
}
#endif
#endif /* LLAVA_H */
