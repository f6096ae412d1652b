/* What the files of src/engine/ share: the engine and request structs, the lock that guards the
 * queues, and the few functions one file calls in another. Nothing here is public API. */
#ifndef LLAVA_ENGINE_INTERNAL_H
#define LLAVA_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "base/clock.h"
#include "engine/events.h"
#include "engine/metrics.h"
#include "llava.h"
#include "model/model.h"

/* A request id is (submission number << SLOT_BITS) | slot, so that cancel finds the request in
 * O(1) and ids still grow in submission order and are never reused. */
#define SLOT_BITS 20
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define MAX_QUEUE_CAPACITY 65536

/* A llava_request as the engine keeps it (request.c): one allocation holding everything. */
typedef struct eng_input {
    template_message *msgs;
    size_t n_msgs;
    llava_image_input *images;
    int n_images;
    llava_prepare_options popt;
    llava_generate_params gen;
} eng_input;

/* Checks the shape of req and copies it (caller's thread). */
llava_status eng_input_copy(const llava_request *req, eng_input **out, llava_error *err);
void eng_input_free(eng_input *in);

/* Where a request is. Each stage has one owner: WAIT_* belong to the queue (under e->mu); a
 * PREPARING request to the pool thread preparing it; a RUNNING one to the worker. */
typedef enum req_stage {
    STAGE_WAIT_PREP,  /* in prep_q: waiting for the model to load, or for a pool thread */
    STAGE_PREPARING,
    STAGE_WAIT_RUN,   /* in run_q: prepared, waiting for the worker */
    STAGE_RUNNING
} req_stage;

typedef struct eng_request eng_request;
struct eng_request {
    ev_retired retired;        /* after its terminal event: freed by the channel */
    llava_engine *e;
    llava_request_id id;
    void *user;
    req_stage stage;           /* under e->mu */
    atomic_bool cancel;        /* set by cancel or an abort; polled by the owner of the stage */
    eng_request *prev, *next;  /* links in prep_q or run_q (under e->mu) */
    eng_input *in;             /* the copied request */
    llava_prepared *prepared;  /* the pool's result */
    llava_error err;           /* the message of its ERROR event lives here */
    /* times in ms (eng_now_ms), 0 while not reached; each written by the stage's owner */
    double t_submit, t_prep_start, t_prep_end, t_run_start, t_first_token, t_last_token;
    bool token_oom;            /* a TOKEN event could not be queued */
};

typedef struct eng_queue {
    eng_request *head, *tail;
    size_t n;
} eng_queue;

struct llava_engine {
    /* fixed at open */
    char *model_dir;
    llava_model_options mopt;
    size_t capacity;           /* waiting requests at most */
    int n_pool;                /* preprocessing threads */
    bool lazy;
    ev_channel ch;
    eng_metrics metrics;
    pthread_t worker;
    pthread_t pool[2];
    int n_pool_started;
    /* the worker's id, recorded by the worker itself before it touches the model; read by the
     * debug checks (published to the pool through mu, before the model is) */
    pthread_t owner;

    pthread_mutex_t mu;        /* everything below; held only for O(1) queue work */
    pthread_cond_t work_cv;    /* worker: a prepared request, the first submit (lazy), close */
    pthread_cond_t pool_cv;    /* pool: the model is ready, a request to prepare, room, stop */
    eng_queue prep_q, run_q;
    eng_request **slots;       /* [n_slots]: accepted requests without their terminal event */
    uint32_t *free_slots;      /* stack of free slot numbers */
    size_t n_slots, n_free;
    uint64_t seq;              /* requests accepted so far */
    size_t waiting;            /* accepted and not running: bounded by capacity */
    size_t outstanding;        /* accepted without a terminal event yet */
    size_t preparing;
    bool load_wanted;          /* lazy: a request came */
    bool closing, aborting;
    bool pool_stop;
    bool worker_running;       /* the worker is inside a request (it then wakes the pool) */
    llava_model *model;        /* set with READY; the pool reads it after seeing READY */

    atomic_int state;          /* llava_load_state: changed under mu, read anywhere */
    atomic_bool closing_flag;  /* closing, for lock-free readers */
    atomic_bool pool_wake;     /* a submit left waking the pool to the running worker */
    llava_error load_error;    /* written before state becomes FAILED, constant after */
};

/* ---- engine.c ---- */
void eng_queue_push(eng_queue *q, eng_request *r);
eng_request *eng_queue_pop(eng_queue *q);
/* Ends r with its terminal event ev (request, user and timings are filled in here): frees its
 * slot, updates the counts and metrics, and hands r to the channel. Called with e->mu held;
 * r must not be touched afterwards. */
void eng_finish_locked(llava_engine *e, eng_request *r, llava_event *ev);
/* Frees a request and what it still holds (the channel's release function). */
void eng_request_free(ev_retired *self);

/* ---- worker.c ---- */
/* Wakes a pool thread if a submit asked the worker to (called on the worker, without e->mu). */
void eng_wake_pool_deferred(llava_engine *e);
void *eng_worker_main(void *arg);
void *eng_pool_main(void *arg);

#endif
