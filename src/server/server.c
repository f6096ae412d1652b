/* The server's frame: configuration, the listening socket, the engine's descriptor in the loop,
 * routing of requests to handlers, replies and authentication, and the two-signal shutdown
 * (drain within a grace period, then abort). */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/error.h"
#include "server/internal.h"

#define DEFAULT_MAX_BODY ((size_t)32 << 20)
#define DEFAULT_MAX_IMAGES 16
#define DEFAULT_REMOTE_BYTES ((size_t)20 << 20)
#define MAX_HEADERS_SIZE (64 * 1024)
#define FLUSH_WAIT_S 2 /* at exit, how long the last answers may take to be written */
#define EVENTS_PER_POLL 64
#define TRIM_DELAY_US 500000

void srv_config_default(srv_config *cfg) { memset(cfg, 0, sizeof *cfg); }

void srv_log(srv_server *s, const char *fmt, ...) {
    if (!s->cfg.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->cfg.log(s->cfg.log_user, line);
}

uint64_t srv_next_seed(srv_server *s) {
    /* splitmix64: distinct, well-mixed seeds from one state */
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- replies ---- */

static const char *reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return NULL;
    }
}

static void on_reply_written(struct evhttp_request *req, void *arg) {
    srv_server *s = arg;
    if (s->replies_in_flight > 0) s->replies_in_flight--;
    if (s->engine_closed && s->replies_in_flight == 0) event_base_loopexit(s->base, NULL);
}

static void count_status(srv_server *s, int status) {
    if (status == 429) s->stats.http[SRV_HTTP_429]++;
    else if (status >= 500) s->stats.http[SRV_HTTP_5XX]++;
    else if (status >= 400) s->stats.http[SRV_HTTP_4XX]++;
    else s->stats.http[SRV_HTTP_2XX]++;
}

void srv_reply(srv_server *s, struct evhttp_request *req, int status, const char *content_type,
               char *body) {
    static const char oom[] = "{\"error\":\"out of memory\"}";
    if (!body) status = 500;
    count_status(s, status);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type ? content_type : "application/json");
    if (s->draining) evhttp_add_header(h, "Connection", "close");
    struct evbuffer *b = evbuffer_new();
    if (b) {
        if (body) evbuffer_add(b, body, strlen(body));
        else evbuffer_add(b, oom, sizeof oom - 1);
    }
    free(body);
    evhttp_request_set_on_complete_cb(req, on_reply_written, s);
    s->replies_in_flight++;
    evhttp_send_reply(req, status, reason_phrase(status), b);
    if (b) evbuffer_free(b);
}

void srv_reply_error(srv_server *s, struct evhttp_request *req, bool openai, int status,
                     const char *message, const char *param) {
    if (status == 429) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    } else if (status == 401) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    }
    srv_reply(s, req, status, NULL,
              openai ? srv_openai_error(status, message, param) : srv_ollama_error(message));
}

/* ---- authentication ---- */

bool srv_authorized(const srv_server *s, struct evhttp_request *req) {
    if (!s->api_key) return true;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    const char *given = h + 7;
    while (*given == ' ') given++;
    /* constant time in the key: every byte of the key is compared whatever the input, and the
     * length difference is folded into the same accumulator */
    size_t klen = strlen(s->api_key), glen = strlen(given);
    unsigned diff = (unsigned)(klen != glen);
    for (size_t i = 0; i < klen; i++) {
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(g ^ (unsigned char)s->api_key[i]);
    }
    return diff == 0;
}

/* ---- routing ---- */

static bool is_openai_path(const char *path) { return !strncmp(path, "/v1/", 4); }

static void method_not_allowed(srv_server *s, struct evhttp_request *req, bool openai,
                               const char *allow) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    char msg[96];
    snprintf(msg, sizeof msg, "method not allowed (use %s)", allow);
    srv_reply_error(s, req, openai, 405, msg, NULL);
}

static void on_request(struct evhttp_request *req, void *arg) {
    srv_server *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || path[0] != '/') {
        srv_reply_error(s, req, false, 400, "malformed request target", NULL);
        return;
    }
    bool openai = is_openai_path(path);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    bool get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD, post = m == EVHTTP_REQ_POST;
    if (!strcmp(path, "/health")) { /* answers "draining" during a shutdown */
        if (!get) return method_not_allowed(s, req, false, "GET");
        return srv_handle_health(s, req);
    }
    if (s->draining) {
        srv_reply_error(s, req, openai, 503, "the server is shutting down", NULL);
        return;
    }
    if (!strcmp(path, "/metrics")) {
        if (!get) return method_not_allowed(s, req, false, "GET");
        return srv_handle_metrics(s, req);
    }
    if (!strcmp(path, "/")) {
        if (!get) return method_not_allowed(s, req, false, "GET");
        srv_reply(s, req, 200, "text/plain; charset=utf-8", strdup("llava.c is running\n"));
        return;
    }
    bool known = openai || !strncmp(path, "/api/", 5);
    if (!known) {
        srv_reply_error(s, req, false, 404, "no such endpoint", NULL);
        return;
    }
    if (!srv_authorized(s, req)) {
        srv_reply_error(s, req, openai, 401,
                        "missing or wrong API key (send Authorization: Bearer KEY)", NULL);
        return;
    }
    if (post) {
        const char *enc =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Encoding");
        if (enc && strcasecmp(enc, "identity") != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "Content-Encoding '%.64s' is not supported (send the body "
                                      "uncompressed)", enc);
            srv_reply_error(s, req, openai, 415, msg, NULL);
            return;
        }
    }
    if (!strcmp(path, "/v1/chat/completions")) {
        if (!post) return method_not_allowed(s, req, true, "POST");
        return srv_handle_generate(s, req, SRV_API_OPENAI_CHAT);
    }
    if (!strcmp(path, "/api/chat")) {
        if (!post) return method_not_allowed(s, req, false, "POST");
        return srv_handle_generate(s, req, SRV_API_OLLAMA_CHAT);
    }
    if (!strcmp(path, "/api/generate")) {
        if (!post) return method_not_allowed(s, req, false, "POST");
        return srv_handle_generate(s, req, SRV_API_OLLAMA_GENERATE);
    }
    if (!strcmp(path, "/v1/models") || !strncmp(path, "/v1/models/", 11)) {
        if (!get) return method_not_allowed(s, req, true, "GET");
        return srv_handle_openai_models(s, req, path[10] == '/' ? path + 11 : NULL);
    }
    if (!strcmp(path, "/api/tags")) {
        if (!get) return method_not_allowed(s, req, false, "GET");
        return srv_handle_ollama_tags(s, req);
    }
    if (!strcmp(path, "/api/show")) {
        if (!post) return method_not_allowed(s, req, false, "POST");
        return srv_handle_ollama_show(s, req);
    }
    if (!strcmp(path, "/api/ps")) {
        if (!get) return method_not_allowed(s, req, false, "GET");
        return srv_handle_ollama_ps(s, req);
    }
    if (!strcmp(path, "/api/version")) {
        if (!get) return method_not_allowed(s, req, false, "GET");
        return srv_handle_ollama_version(s, req);
    }
    srv_reply_error(s, req, openai, 404, "no such endpoint", NULL);
}

/* ---- the engine's events ---- */

static void on_engine(evutil_socket_t fd, short what, void *arg) {
    srv_server *s = arg;
    llava_event evs[EVENTS_PER_POLL];
    size_t n;
    do {
        n = llava_engine_poll(s->engine, evs, EVENTS_PER_POLL);
        for (size_t i = 0; i < n; i++) {
            const llava_event *ev = &evs[i];
            switch (ev->kind) {
            case LLAVA_EVENT_READY:
                srv_log(s, "model loaded: %s", s->model_dir);
                srv_calls_model_state(s);
                break;
            case LLAVA_EVENT_LOAD_FAILED:
                srv_log(s, "model failed to load: %s", ev->text ? ev->text : "");
                srv_calls_model_state(s);
                break;
            case LLAVA_EVENT_CLOSED:
                s->engine_closed = true;
                if (s->replies_in_flight == 0) {
                    event_base_loopexit(s->base, NULL);
                } else {
                    struct timeval tv = {FLUSH_WAIT_S, 0};
                    evtimer_add(s->flush_timer, &tv);
                }
                break;
            default:
                if (ev->user) srv_call_event(ev->user, ev);
                break;
            }
        }
    } while (n == EVENTS_PER_POLL); /* the events of one poll are released by the next */
}

/* ---- shutdown ---- */

void srv_calls_changed(srv_server *s) {
    if (s->n_calls > 0) return;
    if (s->draining) llava_engine_close(s->engine, LLAVA_CLOSE_DRAIN);
    /* request bodies and images are large, short-lived allocations: once the server has been
     * idle for a moment, hand the freed pages back so its footprint returns to the baseline */
    if (s->trim_timer && !evtimer_pending(s->trim_timer, NULL)) {
        struct timeval tv = {0, TRIM_DELAY_US};
        evtimer_add(s->trim_timer, &tv);
    }
}

static void on_trim(evutil_socket_t fd, short what, void *arg) {
    srv_server *s = arg;
#ifdef __GLIBC__
    if (s->n_calls == 0) malloc_trim(0);
#else
    (void)s;
#endif
}

static void on_grace_over(evutil_socket_t fd, short what, void *arg) {
    srv_server *s = arg;
    srv_log(s, "grace period over: cancelling %zu request%s", s->n_calls,
            s->n_calls == 1 ? "" : "s");
    llava_engine_close(s->engine, LLAVA_CLOSE_ABORT);
}

static void on_flush_over(evutil_socket_t fd, short what, void *arg) {
    event_base_loopexit(((srv_server *)arg)->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    srv_server *s = arg;
    if (++s->signals > 1) {
        srv_log(s, "second signal: aborting");
        s->exit_code = 1;
        llava_engine_close(s->engine, LLAVA_CLOSE_ABORT);
        event_base_loopbreak(s->base);
        return;
    }
    srv_log(s, "%s: finishing %zu request%s (grace period %.1f s)",
            sig == SIGINT ? "SIGINT" : "SIGTERM", s->n_calls, s->n_calls == 1 ? "" : "s",
            s->cfg.grace_seconds);
    s->draining = true;
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    double g = s->cfg.grace_seconds;
    struct timeval tv = {(time_t)g, (suseconds_t)((g - (double)(time_t)g) * 1e6)};
    evtimer_add(s->grace_timer, &tv);
    srv_calls_changed(s);
}

/* ---- life ---- */

static char *dup_or_null(const char *v) { return v && v[0] ? strdup(v) : NULL; }

static const char *base_name(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    static const char fallback[] = "llava";
    return b < n ? dir + b : fallback;
}

static llava_status check_config(const srv_config *c, llava_error *err) {
    if (!c->model_dir || !c->model_dir[0])
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "model folder: not set (-m DIR)");
    if (c->port < 0 || c->port > 65535)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "--port %d: not in 0..65535",
                               c->port);
    if (c->max_queue > 65536)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "--max-queue %d: at most 65536",
                               c->max_queue);
    if (c->max_body > ((size_t)1 << 31))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "--max-body: at most 2 GiB");
    if (c->max_images > 256)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "--max-images: at most 256");
    if (c->grace_seconds > 86400)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "--grace-seconds: at most 86400");
    if (c->remote_max_bytes > ((size_t)1 << 30))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "--remote-max-bytes: at most 1 GiB");
    if (c->remote_max_redirects > 20)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "--remote-max-redirects: at most 20");
    return LLAVA_OK;
}

/* accept() that fails for want of descriptors (or kernel memory) fails again at once for as long
 * as a connection waits in the backlog: libevent, left to itself, retries in a loop that spins a
 * core and logs a line per try (100 MB of log in 3 s, measured). Instead, stop listening for a
 * moment: the waiting connections stay in the backlog and are taken once descriptors free up. */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_EVERY_S 10.0

/* The listener's error callback is handed libevent's pointer (the evhttp that owns the
 * listener), not ours: each server is found from it in this list. */
static pthread_mutex_t listening_mu = PTHREAD_MUTEX_INITIALIZER;
static srv_server *listening;

static void listening_add(srv_server *s) {
    pthread_mutex_lock(&listening_mu);
    s->next_listening = listening;
    listening = s;
    pthread_mutex_unlock(&listening_mu);
}

static void listening_remove(srv_server *s) {
    pthread_mutex_lock(&listening_mu);
    for (srv_server **p = &listening; *p; p = &(*p)->next_listening)
        if (*p == s) {
            *p = s->next_listening;
            break;
        }
    pthread_mutex_unlock(&listening_mu);
}

static void on_accept_error(struct evconnlistener *listener, void *http) {
    int e = EVUTIL_SOCKET_ERROR();
    pthread_mutex_lock(&listening_mu);
    srv_server *s = listening;
    while (s && s->http != http) s = s->next_listening;
    pthread_mutex_unlock(&listening_mu);
    if (!s) return;
    evconnlistener_disable(listener);
    s->stats.accept_pauses++;
    double now = llava_now_s();
    if (s->stats.accept_pauses == 1 || now - s->accept_logged >= ACCEPT_LOG_EVERY_S) {
        srv_log(s, "accepting connections: %s: paused, retried every %d ms (%llu pauses so far)",
                evutil_socket_error_to_string(e), ACCEPT_PAUSE_MS,
                (unsigned long long)s->stats.accept_pauses);
        s->accept_logged = now;
    }
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(s->accept_timer, &tv);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg) {
    srv_server *s = arg;
    /* draining closed the listener meanwhile: nothing to resume */
    if (s->bound) evconnlistener_enable(evhttp_bound_socket_get_listener(s->bound));
}

static llava_status setup_http(srv_server *s, llava_error *err) {
    s->http = evhttp_new(s->base);
    if (!s->http) return llava_error_set(err, LLAVA_ERR_INTERNAL, "could not create the HTTP server");
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->cfg.max_body);
    evhttp_set_max_headers_size(s->http, MAX_HEADERS_SIZE);
    evhttp_set_timeout(s->http, s->cfg.idle_timeout_s);
    /* read the rest of a too-large body before closing, so the client sees the 413 */
    evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, on_request, s);
    s->bound = evhttp_bind_socket_with_handle(s->http, s->host, (ev_uint16_t)s->cfg.port);
    if (!s->bound)
        return llava_error_set(err, LLAVA_ERR_IO, "cannot listen on %s:%d: %s", s->host,
                               s->cfg.port, strerror(errno));
    s->accept_timer = evtimer_new(s->base, on_accept_resume, s);
    if (!s->accept_timer)
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "could not set up the loop's events");
    listening_add(s);
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(s->bound), on_accept_error);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(s->bound);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return LLAVA_OK;
}

/* The engine is opened from a short-lived thread whose nice value is raised first: every thread
 * the engine starts (worker, preprocessing, compute) inherits it, while the loop thread keeps its
 * own. When the machine's cores are all busy computing, a loop thread woken by a request then
 * preempts the computation at once instead of waiting for a time slice, which is what keeps
 * /health and streaming latency low. Raising a nice value needs no privilege. */
typedef struct engine_opener {
    srv_server *s;
    llava_status st;
    llava_error err;
} engine_opener;

static void *open_engine_thread(void *arg) {
    engine_opener *o = arg;
    srv_server *s = o->s;
    if (s->cfg.engine_nice > 0) {
        errno = 0;
        int now = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
        if (errno == 0)
            setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), now + s->cfg.engine_nice);
    }
    /* the body parser's thread does the same kind of heavy work: the same priority */
    if (srv_bodies_spawn(s->bodies) != 0) {
        o->st = llava_error_set(&o->err, LLAVA_ERR_INTERNAL, "could not start the parsing thread");
        return NULL;
    }
    llava_engine_config ec;
    llava_engine_config_default(&ec);
    ec.model_dir = s->model_dir;
    ec.n_threads = s->cfg.n_threads;
    ec.half_parts = s->cfg.half_parts;
    ec.quant = s->cfg.quant;
    ec.kv_cache = s->cfg.kv_cache;
    ec.no_mmap = s->cfg.no_mmap;
    ec.n_ctx = s->cfg.n_ctx;
    ec.queue_capacity = s->cfg.max_queue;
    ec.prep_threads = s->cfg.prep_threads;
    o->st = llava_engine_open(&ec, &s->engine, &o->err);
    return NULL;
}

static llava_status open_engine(srv_server *s, llava_error *err) {
    engine_opener o = {.s = s, .st = LLAVA_ERR_INTERNAL};
    llava_error_clear(&o.err);
    pthread_t t;
    if (pthread_create(&t, NULL, open_engine_thread, &o) != 0)
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "could not start a thread");
    pthread_join(t, NULL);
    if (o.st != LLAVA_OK) *err = o.err;
    return o.st;
}

llava_status srv_create(const srv_config *cfg, srv_server **out, llava_error *err) {
    *out = NULL;
    llava_status st = check_config(cfg, err);
    if (st != LLAVA_OK) return st;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    s->cfg = *cfg;
    s->model_dir = strdup(cfg->model_dir);
    s->model_name = strdup(cfg->model_name && cfg->model_name[0] ? cfg->model_name
                                                                   : base_name(cfg->model_dir));
    s->host = strdup(cfg->host && cfg->host[0] ? cfg->host : "127.0.0.1");
    s->api_key = dup_or_null(cfg->api_key);
    if (!s->model_dir || !s->model_name || !s->host || (cfg->api_key && cfg->api_key[0] &&
                                                        !s->api_key)) {
        srv_free(s);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    }
    srv_config *c = &s->cfg;
    c->model_dir = s->model_dir;
    c->model_name = s->model_name;
    c->host = s->host;
    c->api_key = s->api_key;
    if (c->max_body == 0) c->max_body = DEFAULT_MAX_BODY;
    if (c->max_images == 0) c->max_images = DEFAULT_MAX_IMAGES;
    if (c->remote_max_bytes == 0) c->remote_max_bytes = DEFAULT_REMOTE_BYTES;
    if (c->remote_timeout_ms <= 0) c->remote_timeout_ms = 10000;
    if (c->remote_max_redirects < 0) c->remote_max_redirects = 3;
    if (c->grace_seconds < 0) c->grace_seconds = 30;
    if (c->idle_timeout_s <= 0) c->idle_timeout_s = 60;
    if (c->engine_nice < 0) c->engine_nice = 0;
    if (c->engine_nice > 19) c->engine_nice = 19;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^
             (uint64_t)(uintptr_t)s;

    s->base = event_base_new();
    if (!s->base) {
        srv_free(s);
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "could not create the event loop");
    }
    if ((st = setup_http(s, err)) != LLAVA_OK) {
        srv_free(s);
        return st;
    }
    if (c->allow_remote_images) {
        srv_fetch_limits lim = {.max_bytes = c->remote_max_bytes,
                                .timeout_ms = c->remote_timeout_ms,
                                .max_redirects = c->remote_max_redirects};
        char msg[160];
        if (!(s->fetcher = srv_fetcher_new(s->base, &lim, msg, sizeof msg))) {
            srv_free(s);
            return llava_error_set(err, LLAVA_ERR_INTERNAL, "remote images: %s", msg);
        }
    }
    srv_model_facts(s);
    if (!(s->bodies = srv_bodies_new(s))) {
        srv_free(s);
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "could not set up the parsing queue");
    }

    if ((st = open_engine(s, err)) != LLAVA_OK) {
        srv_free(s);
        return st;
    }
    s->engine_ev = event_new(s->base, llava_engine_fd(s->engine), EV_READ | EV_PERSIST, on_engine,
                             s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->grace_timer = evtimer_new(s->base, on_grace_over, s);
    s->flush_timer = evtimer_new(s->base, on_flush_over, s);
    s->trim_timer = evtimer_new(s->base, on_trim, s);
    if (!s->engine_ev || !s->sig_int || !s->sig_term || !s->grace_timer || !s->flush_timer ||
        !s->trim_timer ||
        event_add(s->engine_ev, NULL) != 0) {
        srv_free(s);
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "could not set up the loop's events");
    }
    *out = s;
    return LLAVA_OK;
}

int srv_port(const srv_server *s) { return s->port; }

int srv_run(srv_server *s) {
    if (evsignal_add(s->sig_int, NULL) != 0 || evsignal_add(s->sig_term, NULL) != 0) {
        srv_log(s, "could not install the signal handlers");
        return 1;
    }
    srv_log(s, "listening on http://%s:%d (model %s, loading)", s->host, s->port, s->model_name);
    event_base_dispatch(s->base);
    evsignal_del(s->sig_int);
    evsignal_del(s->sig_term);
    srv_log(s, s->exit_code == 0 ? "stopped" : "aborted");
    return s->exit_code;
}

void srv_free(srv_server *s) {
    if (!s) return;
    srv_bodies_free(s->bodies); /* first: its jobs point at calls */
    /* calls still alive (an abort): their events will never be read */
    while (s->calls) {
        srv_call *c = s->calls;
        c->gone = true; /* their HTTP requests die with evhttp_free below */
        srv_call_free(c);
    }
    llava_engine_free(s->engine); /* aborts whatever runs and joins the worker */
    srv_fetcher_free(s->fetcher);
    listening_remove(s);
    if (s->http) evhttp_free(s->http);
    if (s->engine_ev) event_free(s->engine_ev);
    if (s->sig_int) event_free(s->sig_int);
    if (s->sig_term) event_free(s->sig_term);
    if (s->grace_timer) event_free(s->grace_timer);
    if (s->flush_timer) event_free(s->flush_timer);
    if (s->trim_timer) event_free(s->trim_timer);
    if (s->accept_timer) event_free(s->accept_timer);
    if (s->base) event_base_free(s->base);
    free(s->model_dir);
    free(s->model_name);
    free(s->host);
    free(s->api_key);
    free(s);
}
