/* Remote image fetching: libcurl's multi-socket API bridged to libevent (curl tells us which
 * sockets and timeout to watch; the loop tells curl when they fire), so that a slow or large
 * download never holds up the loop. Limits: bytes (declared and actual), total time, redirects,
 * http/https only. */
#include "server/fetch.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv_fetcher {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;   /* curl's single timeout */
    srv_fetch_limits lim;
    srv_fetch *active;     /* transfers not yet called back */
};

struct srv_fetch {
    srv_fetcher *f;
    srv_fetch *prev, *next;
    CURL *easy;
    srv_fetch_cb cb;
    void *user;
    size_t index;
    unsigned char *buf;
    size_t len, cap;
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
};

/* A socket curl asked us to watch. */
typedef struct watched {
    struct event *ev;
} watched;

static void check_done(srv_fetcher *f);

static void on_socket_event(evutil_socket_t fd, short what, void *arg) {
    srv_fetcher *f = arg;
    int action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running = 0;
    curl_multi_socket_action(f->multi, fd, action, &running);
    check_done(f);
    if (running == 0 && evtimer_pending(f->timer, NULL)) evtimer_del(f->timer);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    srv_fetcher *f = arg;
    int running = 0;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket. */
static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    srv_fetcher *f = userp;
    watched *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            event_free(w->ev);
            free(w);
        }
        curl_multi_assign(f->multi, s, NULL);
        return 0;
    }
    short kind = EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) |
                 (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!w) {
        if (!(w = calloc(1, sizeof *w))) return -1;
        curl_multi_assign(f->multi, s, w);
    } else {
        event_free(w->ev);
    }
    w->ev = event_new(f->base, s, kind, on_socket_event, f);
    if (!w->ev || event_add(w->ev, NULL) != 0) return -1;
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called after timeout_ms (-1: never). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    srv_fetcher *f = userp;
    if (timeout_ms < 0) {
        evtimer_del(f->timer);
        return 0;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return evtimer_add(f->timer, &tv);
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp) {
    srv_fetch *t = userp;
    size_t add = size * n;
    if (add > t->f->lim.max_bytes - t->len) {
        t->too_big = true;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    if (t->len + add > t->cap) {
        size_t cap = t->cap ? t->cap : 64 * 1024;
        while (cap < t->len + add) cap *= 2;
        if (cap > t->f->lim.max_bytes) cap = t->f->lim.max_bytes;
        unsigned char *b = realloc(t->buf, cap);
        if (!b) return 0;
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, add);
    t->len += add;
    return add;
}

static void unlink_fetch(srv_fetch *t) {
    srv_fetcher *f = t->f;
    if (t->prev) t->prev->next = t->next;
    else f->active = t->next;
    if (t->next) t->next->prev = t->prev;
    curl_multi_remove_handle(f->multi, t->easy);
    curl_easy_cleanup(t->easy);
}

/* Hands every finished transfer to its callback. */
static void check_done(srv_fetcher *f) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *easy = m->easy_handle;
        CURLcode res = m->data.result;
        srv_fetch *t = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        char error[320] = "";
        long code = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
        if (t->too_big || res == CURLE_FILESIZE_EXCEEDED) {
            snprintf(error, sizeof error, "the image is larger than %zu bytes",
                     f->lim.max_bytes);
        } else if (res != CURLE_OK) {
            snprintf(error, sizeof error, "%s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(res));
        } else if (code < 200 || code > 299) {
            snprintf(error, sizeof error, "the server answered HTTP %ld", code);
        } else if (t->len == 0) {
            snprintf(error, sizeof error, "the server sent no data");
        }
        unlink_fetch(t); /* m is not used after this */
        unsigned char *bytes = error[0] ? NULL : t->buf;
        if (error[0]) free(t->buf);
        srv_fetch_cb cb = t->cb;
        void *user = t->user;
        size_t index = t->index, len = t->len;
        free(t);
        cb(user, index, bytes, bytes ? len : 0, error[0] ? error : NULL);
    }
}

srv_fetcher *srv_fetcher_new(struct event_base *base, const srv_fetch_limits *lim, char *msg,
                             size_t cap) {
    srv_fetcher *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(msg, cap, "out of memory");
        return NULL;
    }
    f->base = base;
    f->lim = *lim;
    f->multi = curl_multi_init();
    f->timer = evtimer_new(base, on_timer, f);
    if (!f->multi || !f->timer) {
        snprintf(msg, cap, "could not set up libcurl");
        srv_fetcher_free(f);
        return NULL;
    }
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    return f;
}

void srv_fetcher_free(srv_fetcher *f) {
    if (!f) return;
    while (f->active) srv_fetch_cancel(f->active);
    if (f->multi) curl_multi_cleanup(f->multi);
    if (f->timer) event_free(f->timer);
    free(f);
}

srv_fetch *srv_fetch_start(srv_fetcher *f, const char *url, srv_fetch_cb cb, void *user,
                           size_t index, char *msg, size_t cap) {
    srv_fetch *t = calloc(1, sizeof *t);
    if (!t || !(t->easy = curl_easy_init())) {
        free(t);
        snprintf(msg, cap, "out of memory starting a fetch");
        return NULL;
    }
    t->f = f;
    t->cb = cb;
    t->user = user;
    t->index = index;
    CURL *e = t->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 1L);
    SET(CURLOPT_MAXREDIRS, f->lim.max_redirects);
    SET(CURLOPT_TIMEOUT_MS, f->lim.timeout_ms);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->lim.max_bytes);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_PRIVATE, (char *)t);
    SET(CURLOPT_USERAGENT, "llava.c-server");
#undef SET
    if (rc != CURLE_OK) {
        snprintf(msg, cap, "%s", curl_easy_strerror(rc));
        curl_easy_cleanup(e);
        free(t);
        return NULL;
    }
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        snprintf(msg, cap, "could not start the transfer");
        curl_easy_cleanup(e);
        free(t);
        return NULL;
    }
    t->next = f->active;
    if (f->active) f->active->prev = t;
    f->active = t;
    return t;
}

void srv_fetch_cancel(srv_fetch *t) {
    if (!t) return;
    unlink_fetch(t);
    free(t->buf);
    free(t);
}
