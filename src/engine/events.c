/* The event channel: two batches that swap. Producers append to `pending` under `mu`; the consumer
 * takes the whole pending batch in one O(1) swap and hands it out from `out` without holding `mu`,
 * so a slow consumer never holds up the worker and the worker never waits for the consumer. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/error.h"
#include "engine/events.h"

#define TEXT_RESERVE 4096
#define ITEMS_RESERVE 64

static bool batch_reserve_items(ev_batch *b, size_t need) {
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : ITEMS_RESERVE;
    while (cap < need) cap *= 2;
    ev_item *q = realloc(b->items, cap * sizeof *q);
    if (!q) return false;
    b->items = q;
    b->cap = cap;
    return true;
}

static bool batch_reserve_text(ev_batch *b, size_t need) {
    if (need <= b->text_cap) return true;
    size_t cap = b->text_cap ? b->text_cap : TEXT_RESERVE;
    while (cap < need) cap *= 2;
    char *q = realloc(b->text, cap);
    if (!q) return false;
    b->text = q;
    b->text_cap = cap;
    return true;
}

/* Empties a batch that has been handed out, releasing what its events pointed into. */
static void batch_reset(ev_batch *b) {
    while (b->retired) {
        ev_retired *r = b->retired;
        b->retired = r->next;
        r->free_fn(r);
    }
    b->n = b->next = b->text_len = 0;
}

static void batch_free(ev_batch *b) {
    batch_reset(b);
    free(b->items);
    free(b->text);
    memset(b, 0, sizeof *b);
}

/* The eventfd is written once per transition to "something waits" and read back (reset) by the
 * consumer, so producers make at most one syscall per batch. Both under mu. */
static void signal_locked(ev_channel *c) {
    if (c->signalled) return;
    uint64_t one = 1;
    /* cannot fail short of a bad fd: the counter is far from its maximum */
    ssize_t n = write(c->fd, &one, sizeof one);
    (void)n;
    c->signalled = true;
}

static void unsignal_locked(ev_channel *c) {
    if (!c->signalled) return;
    uint64_t v;
    ssize_t n = read(c->fd, &v, sizeof v); /* non-blocking: EAGAIN if already reset */
    (void)n;
    c->signalled = false;
}

llava_status ev_channel_init(ev_channel *c, size_t engine_events, llava_error *err) {
    memset(c, 0, sizeof *c);
    c->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->fd < 0)
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "engine: eventfd: %s", strerror(errno));
    c->reserved = engine_events;
    if (!batch_reserve_items(&c->pending, ITEMS_RESERVE + engine_events) ||
        !batch_reserve_items(&c->out, ITEMS_RESERVE + engine_events) ||
        !batch_reserve_text(&c->pending, TEXT_RESERVE) || !batch_reserve_text(&c->out, TEXT_RESERVE)) {
        batch_free(&c->pending);
        batch_free(&c->out);
        close(c->fd);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "engine: out of memory for events");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->poll_mu, NULL);
    return LLAVA_OK;
}

void ev_channel_destroy(ev_channel *c) {
    batch_free(&c->pending);
    batch_free(&c->out);
    close(c->fd);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->poll_mu);
}

bool ev_reserve(ev_channel *c, size_t n) {
    pthread_mutex_lock(&c->mu);
    bool ok = batch_reserve_items(&c->pending, c->pending.n + c->reserved + n);
    if (ok) c->reserved += n;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void ev_unreserve(ev_channel *c, size_t n) {
    pthread_mutex_lock(&c->mu);
    c->reserved -= n;
    pthread_mutex_unlock(&c->mu);
}

bool ev_push_copy(ev_channel *c, const llava_event *ev, const char *text, size_t len) {
    pthread_mutex_lock(&c->mu);
    ev_batch *b = &c->pending;
    /* the reserved slots stay free whatever the tokens take */
    bool ok = batch_reserve_items(b, b->n + c->reserved + 1) &&
              batch_reserve_text(b, b->text_len + len + 1);
    if (ok) {
        ev_item *it = &b->items[b->n++];
        it->ev = *ev;
        it->ev.text = NULL;
        it->ev.text_len = len;
        it->in_arena = true;
        it->text_off = b->text_len;
        if (len) memcpy(b->text + b->text_len, text, len);
        b->text[b->text_len + len] = '\0';
        b->text_len += len + 1;
        signal_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void ev_push_reserved(ev_channel *c, const llava_event *ev, ev_retired *retire) {
    pthread_mutex_lock(&c->mu);
    ev_batch *b = &c->pending;
    /* b->n + c->reserved <= b->cap holds (ev_reserve, ev_poll), so this slot exists */
    ev_item *it = &b->items[b->n++];
    c->reserved--;
    it->ev = *ev;
    it->in_arena = false;
    it->text_off = 0;
    if (retire) {
        retire->next = b->retired;
        b->retired = retire;
    }
    signal_locked(c);
    pthread_mutex_unlock(&c->mu);
}

size_t ev_poll(ev_channel *c, llava_event *out, size_t max) {
    pthread_mutex_lock(&c->poll_mu);
    ev_batch *b = &c->out;
    if (b->next == b->n) {
        /* everything of `out` was handed out by earlier calls: its data may go now */
        batch_reset(b);
        pthread_mutex_lock(&c->mu);
        /* the emptied batch becomes `pending` and must hold the reserved slots; when memory is
         * too short for that, the events wait for a later call */
        if (c->pending.n > 0 && batch_reserve_items(b, c->reserved + ITEMS_RESERVE)) {
            ev_batch t = c->pending;
            c->pending = *b;
            *b = t;
        }
        if (c->pending.n == 0) unsignal_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
    size_t k = b->n - b->next;
    if (k > max) k = max;
    for (size_t i = 0; i < k; i++) {
        const ev_item *it = &b->items[b->next + i];
        out[i] = it->ev;
        if (it->in_arena) out[i].text = b->text + it->text_off;
    }
    b->next += k;
    if (b->next < b->n) { /* some are left: keep the fd readable so that the loop comes back */
        pthread_mutex_lock(&c->mu);
        signal_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&c->poll_mu);
    return k;
}
