/* Parsing large request bodies on a helper thread. jansson reads a 30 MiB JSON string at tens of
 * MB/s and base64 adds more, so an inline parse of a big image upload would hold the loop for a
 * second; small bodies (the common case) are still parsed inline. The thread takes jobs from a
 * queue and hands results back through an eventfd watched by the loop; everything about the
 * call stays on the loop thread. */
#include <errno.h>
#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "server/internal.h"

typedef struct parse_job parse_job;
struct parse_job {
    parse_job *next;
    srv_call *call;
    srv_api api;
    srv_parse_options opt;
    struct evbuffer *body;  /* moved out of the HTTP request: ours alone */
    srv_parsed *result;
    srv_parse_error err;
};

typedef struct job_list {
    parse_job *head, *tail;
} job_list;

struct srv_bodies {
    srv_server *s;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;    /* todo, done, stop */
    pthread_cond_t cv;
    job_list todo, done;
    bool stop;
    int fd;                /* eventfd: readable while done has jobs */
    struct event *ev;
};

static void push(job_list *l, parse_job *j) {
    j->next = NULL;
    if (l->tail) l->tail->next = j;
    else l->head = j;
    l->tail = j;
}

static void free_job(parse_job *j) {
    if (j->body) evbuffer_free(j->body);
    srv_parsed_free(j->result);
    free(j);
}

static void free_list(job_list *l) {
    parse_job *j = l->head;
    while (j) {
        parse_job *next = j->next;
        free_job(j);
        j = next;
    }
    l->head = l->tail = NULL;
}

static void *bodies_main(void *arg) {
    srv_bodies *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stop && !b->todo.head) pthread_cond_wait(&b->cv, &b->mu);
        if (b->stop) break;
        parse_job *j = b->todo.head;
        b->todo.head = j->next;
        if (!b->todo.head) b->todo.tail = NULL;
        pthread_mutex_unlock(&b->mu);

        size_t len = evbuffer_get_length(j->body);
        const char *text = (const char *)evbuffer_pullup(j->body, -1);
        if (text) {
            j->result = srv_parse_request(j->api, text, len, &j->opt, &j->err);
        } else {
            j->err.status = 500;
            snprintf(j->err.message, sizeof j->err.message, "out of memory reading the body");
        }
        evbuffer_free(j->body); /* the largest piece of memory: gone before the loop's turn */
        j->body = NULL;

        pthread_mutex_lock(&b->mu);
        push(&b->done, j);
        uint64_t one = 1;
        ssize_t w = write(b->fd, &one, sizeof one);
        (void)w; /* the counter cannot overflow with so few jobs */
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* The loop's side: results come back here, in order. */
static void on_parsed(evutil_socket_t fd, short what, void *arg) {
    srv_bodies *b = arg;
    uint64_t n;
    ssize_t r = read(b->fd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&b->mu);
    parse_job *j = b->done.head;
    b->done.head = b->done.tail = NULL;
    pthread_mutex_unlock(&b->mu);
    while (j) {
        parse_job *next = j->next;
        srv_call_parsed(j->call, j->result, &j->err);
        j->result = NULL; /* the call's now */
        free_job(j);
        j = next;
    }
}

srv_bodies *srv_bodies_new(srv_server *s) {
    srv_bodies *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->s = s;
    b->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->fd < 0) {
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->ev = event_new(s->base, b->fd, EV_READ | EV_PERSIST, on_parsed, b);
    if (!b->ev || event_add(b->ev, NULL) != 0) {
        srv_bodies_free(b);
        return NULL;
    }
    return b;
}

int srv_bodies_spawn(srv_bodies *b) {
    if (pthread_create(&b->thread, NULL, bodies_main, b) != 0) return -1;
    b->started = true;
    return 0;
}

void srv_bodies_free(srv_bodies *b) {
    if (!b) return;
    if (b->started) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    /* jobs not handed back: their calls are freed with the server */
    free_list(&b->todo);
    free_list(&b->done);
    if (b->ev) event_free(b->ev);
    close(b->fd);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

bool srv_bodies_post(srv_bodies *b, srv_call *c, srv_api api, const srv_parse_options *opt,
                     struct evbuffer *in) {
    if (!b->started) return false;
    parse_job *j = calloc(1, sizeof *j);
    if (!j || !(j->body = evbuffer_new())) {
        free(j);
        return false;
    }
    j->call = c;
    j->api = api;
    j->opt = *opt;
    evbuffer_add_buffer(j->body, in); /* moves the chains, no copy */
    pthread_mutex_lock(&b->mu);
    push(&b->todo, j);
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return true;
}
