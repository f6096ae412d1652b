/* Fetching remote images over http(s) with libcurl's multi interface driven by the server's
 * libevent loop: transfers never block the loop, and each one is bounded in bytes, time and
 * redirects. */
#ifndef LLAVA_SERVER_FETCH_H
#define LLAVA_SERVER_FETCH_H

#include <stddef.h>

struct event_base;

typedef struct srv_fetcher srv_fetcher;
typedef struct srv_fetch srv_fetch;

typedef struct srv_fetch_limits {
    size_t max_bytes;    /* body size limit */
    long timeout_ms;     /* the whole transfer, redirects included */
    long max_redirects;
} srv_fetch_limits;

/* Called once per fetch on the loop thread: bytes (malloc'd, the callee frees them) and size on
 * success, or bytes NULL and error naming what failed. Never called after srv_fetch_cancel. */
typedef void (*srv_fetch_cb)(void *user, size_t index, unsigned char *bytes, size_t size,
                             const char *error);

/* NULL if libcurl could not be set up (msg says why). */
srv_fetcher *srv_fetcher_new(struct event_base *base, const srv_fetch_limits *lim, char *msg,
                             size_t cap);
/* Cancels what is still running (no callbacks) and frees the fetcher. */
void srv_fetcher_free(srv_fetcher *f);

/* Starts fetching url; NULL with msg set if it could not start. The callback may come during a
 * later turn of the loop, never from inside this call. */
srv_fetch *srv_fetch_start(srv_fetcher *f, const char *url, srv_fetch_cb cb, void *user,
                           size_t index, char *msg, size_t cap);
/* Stops a fetch that has not called back yet; its callback will not be called. */
void srv_fetch_cancel(srv_fetch *t);

#endif
