/* Helpers of the engine tests: waiting for events with a deadline (a hang fails the test instead
 * of stalling CI), a per-request record of every event that checks the event order, and copies
 * of the tiny-f32 checkpoint that a test can break. Header-only: each test is one program. */
#ifndef TEST_ENGINE_UTIL_H
#define TEST_ENGINE_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "llava.h"

#define TINY LLAVA_FIXTURES "/tiny-f32"
#define TINY_MODEL TINY "/model"
#define TINY_PROMPT "USER: <image>\nWhat is shown in this image? ASSISTANT:"
static const int32_t TINY_IDS[16] = {26992, 7276,  25007, 16534, 6083,  8904, 31411, 6444,
                                     5982,  18715, 19306, 21806, 13851, 30010, 29309, 9089};

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- what happened to each request ---- */

typedef struct req_record {
    llava_request_id id;
    int tokens;             /* TOKEN events with an id */
    int32_t ids[64];
    char text[2048];
    size_t text_len;
    int terminals;          /* DONE + ERROR + CANCELLED: must end at 1 */
    int after_terminal;     /* events that came after the terminal one: must stay 0 */
    llava_event_kind kind;  /* the terminal kind */
    llava_status status;
    llava_done_reason reason;
    llava_usage usage;
    char message[512];
} req_record;

typedef struct event_log {
    req_record *recs;       /* open addressing on id */
    size_t cap;
    int ready, load_failed, closed, after_closed;
    llava_status load_status;
    char load_message[512];
    int unknown;            /* events of ids never recorded */
} event_log;

static inline void log_init(event_log *l, size_t max_requests) {
    memset(l, 0, sizeof *l);
    l->cap = 1;
    while (l->cap < 2 * max_requests + 16) l->cap *= 2;
    l->recs = calloc(l->cap, sizeof *l->recs);
}

static inline void log_free(event_log *l) { free(l->recs); }

static inline size_t log_hash(const event_log *l, llava_request_id id) {
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 20) & (l->cap - 1);
}

/* The record of id; created when add is set (a request the test saw accepted). */
static inline req_record *log_find(event_log *l, llava_request_id id, int add) {
    size_t i = log_hash(l, id);
    while (l->recs[i].id && l->recs[i].id != id) i = (i + 1) & (l->cap - 1);
    if (!l->recs[i].id) {
        if (!add) return NULL;
        l->recs[i].id = id;
    }
    return &l->recs[i];
}

static inline void log_event(event_log *l, const llava_event *ev) {
    if (l->closed) l->after_closed++;
    switch (ev->kind) {
    case LLAVA_EVENT_READY: l->ready++; return;
    case LLAVA_EVENT_LOAD_FAILED:
        l->load_failed++;
        l->load_status = ev->status;
        snprintf(l->load_message, sizeof l->load_message, "%s", ev->text);
        return;
    case LLAVA_EVENT_CLOSED: l->closed++; return;
    default: break;
    }
    req_record *r = log_find(l, ev->request, 1);
    if (r->terminals) r->after_terminal++;
    switch (ev->kind) {
    case LLAVA_EVENT_TOKEN:
        if (ev->token >= 0 && r->tokens < 64) r->ids[r->tokens] = ev->token;
        if (ev->token >= 0) r->tokens++;
        if (r->text_len + ev->text_len < sizeof r->text) {
            memcpy(r->text + r->text_len, ev->text, ev->text_len);
            r->text_len += ev->text_len;
            r->text[r->text_len] = '\0';
        }
        break;
    case LLAVA_EVENT_DONE:
    case LLAVA_EVENT_ERROR:
    case LLAVA_EVENT_CANCELLED:
        r->terminals++;
        r->kind = ev->kind;
        r->status = ev->status;
        r->reason = ev->reason;
        r->usage = ev->usage;
        if (ev->text) snprintf(r->message, sizeof r->message, "%s", ev->text);
        break;
    default: break;
    }
}

/* Drains events into the log until done(l, arg) holds, waiting on the engine's fd; returns 0, or
 * -1 when timeout_ms passed first. */
static inline int log_until(llava_engine *e, event_log *l, int (*done)(event_log *, void *),
                            void *arg, double timeout_ms) {
    double end = now_ms() + timeout_ms;
    llava_event ev[32];
    for (;;) {
        size_t n;
        while ((n = llava_engine_poll(e, ev, 32)) > 0)
            for (size_t i = 0; i < n; i++) log_event(l, &ev[i]);
        if (done(l, arg)) return 0;
        double left = end - now_ms();
        if (left <= 0) return -1;
        struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
        poll(&p, 1, left > 100 ? 100 : (int)left + 1);
    }
}

static inline int until_closed(event_log *l, void *arg) {
    (void)arg;
    return l->closed > 0;
}
static inline int until_loaded(event_log *l, void *arg) {
    (void)arg;
    return l->ready + l->load_failed > 0;
}
/* until the request *(llava_request_id *)arg has its terminal event */
static inline int until_finished(event_log *l, void *arg) {
    req_record *r = log_find(l, *(llava_request_id *)arg, 0);
    return r && r->terminals > 0;
}

/* ---- requests ---- */

static inline llava_request raw_request(const char *prompt, const llava_image *images,
                                        size_t n_images, int max_tokens) {
    llava_request r;
    memset(&r, 0, sizeof r);
    r.prompt = prompt;
    r.images = images;
    r.n_images = n_images;
    r.max_tokens = max_tokens;
    return r;
}

static inline llava_engine *open_engine(const char *dir, int capacity, llava_error *err) {
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = dir;
    cfg.n_threads = 2;
    cfg.queue_capacity = capacity;
    llava_engine *e = NULL;
    if (llava_engine_open(&cfg, &e, err) != LLAVA_OK) return NULL;
    return e;
}

/* ---- checkpoint copies ---- */

static inline char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len) *len = (size_t)n;
    }
    return buf;
}

static inline int write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Copies tiny-f32's model folder into a new temporary folder (symlinks followed), except the
 * file named `skip` (may be NULL). Returns the folder (caller frees), or NULL. */
static inline char *copy_tiny_model(const char *skip) {
    static const char *files[] = {"config.json", "generation_config.json",
                                  "preprocessor_config.json", "tokenizer.json", "tokenizer.model",
                                  "tokenizer_config.json", "special_tokens_map.json",
                                  "added_tokens.json", "chat_template.json", "model.safetensors"};
    char *dir = strdup("/tmp/llava-engine-test-XXXXXX");
    if (!dir || !mkdtemp(dir)) return NULL;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (skip && !strcmp(skip, files[i])) continue;
        char src[1024], dst[1024];
        snprintf(src, sizeof src, "%s/%s", TINY_MODEL, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        size_t n;
        char *data = read_all(src, &n);
        if (!data) continue; /* optional files */
        int rc = write_all(dst, data, n);
        free(data);
        if (rc != 0) return NULL;
    }
    return dir;
}

/* A checkpoint whose only shard is a FIFO: the loader blocks in open(2) until release_fifo. */
static inline char *fifo_model(char *fifo, size_t cap) {
    char *dir = copy_tiny_model("model.safetensors");
    if (!dir) return NULL;
    snprintf(fifo, cap, "%s/model-00001-of-00001.safetensors", dir);
    if (mkfifo(fifo, 0600) != 0) return NULL;
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    const char *index = "{\"metadata\": {}, \"weight_map\": {\"language_model.model.norm.weight\": "
                        "\"model-00001-of-00001.safetensors\"}}";
    return write_all(path, index, strlen(index)) == 0 ? dir : NULL;
}

/* Waits until the loader has the FIFO open for reading (a non-blocking writer can open it only
 * then), and closes the write end: the loader finds a FIFO, not a file, and fails. */
static inline int release_fifo(const char *fifo, double timeout_ms) {
    double end = now_ms() + timeout_ms;
    int fd;
    while ((fd = open(fifo, O_WRONLY | O_NONBLOCK)) < 0) {
        if (errno != ENXIO || now_ms() > end) return -1;
        usleep(1000);
    }
    close(fd);
    return 0;
}

static inline void remove_dir(char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    free(dir);
}

#endif
