/* The event channel of an engine: producers (the worker, the preprocessing pool, cancel and close)
 * append events; the caller's thread drains them with a non-blocking poll, woken by an eventfd.
 * Terminal events are pushed into slots reserved when their request was accepted, so that they
 * can never be lost to an allocation failure. */
#ifndef LLAVA_ENGINE_EVENTS_H
#define LLAVA_ENGINE_EVENTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "llava.h"

/* An object whose memory an event points into (a finished request and its message): kept until
 * the poll after the one that handed the event out, then released with free_fn. */
typedef struct ev_retired {
    struct ev_retired *next;
    void (*free_fn)(struct ev_retired *self);
} ev_retired;

typedef struct ev_item {
    llava_event ev;
    size_t text_off;  /* ev.text is text + text_off of the batch when in_arena */
    bool in_arena;
} ev_item;

/* Events in order, with the token texts they own. */
typedef struct ev_batch {
    ev_item *items;
    size_t n, cap;
    size_t next;        /* the consumer's position: items before it were handed out */
    char *text;         /* arena of NUL-terminated token texts */
    size_t text_len, text_cap;
    ev_retired *retired;
} ev_batch;

typedef struct ev_channel {
    pthread_mutex_t mu;       /* pending, reserved, signalled, closed_pushed */
    pthread_mutex_t poll_mu;  /* out: one consumer at a time */
    ev_batch pending;         /* filled by producers */
    ev_batch out;             /* being handed out to the consumer */
    size_t reserved;          /* item slots pending must keep free for reserved pushes */
    bool signalled;           /* the eventfd has been written since the consumer reset it */
    int fd;                   /* eventfd, readable while events wait */
} ev_channel;

/* Creates the eventfd and reserves `engine_events` slots (for READY/LOAD_FAILED and CLOSED). */
llava_status ev_channel_init(ev_channel *c, size_t engine_events, llava_error *err);
/* Releases everything, undelivered events included. */
void ev_channel_destroy(ev_channel *c);

/* Reserves n more slots for terminal events; false when memory is short (nothing reserved). */
bool ev_reserve(ev_channel *c, size_t n);
/* Gives back reserved slots that will not be used. */
void ev_unreserve(ev_channel *c, size_t n);

/* Appends an event whose text (len bytes, may be NULL) is copied; false when memory is short
 * (the event is not queued). */
bool ev_push_copy(ev_channel *c, const llava_event *ev, const char *text, size_t len);
/* Appends an event into a reserved slot: never fails. ev->text, if set, must stay valid until
 * retire (which may be NULL) is released after the event has been handed out. */
void ev_push_reserved(ev_channel *c, const llava_event *ev, ev_retired *retire);

/* Moves up to max events into out[]; releases the data of the events of the previous call. */
size_t ev_poll(ev_channel *c, llava_event *out, size_t max);

#endif
