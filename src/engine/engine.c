/* The engine's public face on the caller's side: open, submit, cancel, close, poll, state and
 * metrics. Each call checks its arguments, does its copying before taking the lock, and holds
 * the lock only for O(1) queue work, so that no caller ever waits for the worker. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/internal.h"

#define DEFAULT_CAPACITY 64
#define MAX_POOL 2
#define MAX_THREADS 1024

void llava_engine_config_default(llava_engine_config *cfg) { memset(cfg, 0, sizeof *cfg); }

/* ---- queues and slots (all under e->mu) ---- */

void eng_queue_push(eng_queue *q, eng_request *r) {
    r->next = NULL;
    r->prev = q->tail;
    if (q->tail) q->tail->next = r;
    else q->head = r;
    q->tail = r;
    q->n++;
}

static void queue_remove(eng_queue *q, eng_request *r) {
    if (r->prev) r->prev->next = r->next;
    else q->head = r->next;
    if (r->next) r->next->prev = r->prev;
    else q->tail = r->prev;
    r->prev = r->next = NULL;
    q->n--;
}

eng_request *eng_queue_pop(eng_queue *q) {
    eng_request *r = q->head;
    if (r) queue_remove(q, r);
    return r;
}

static eng_request *find_locked(llava_engine *e, llava_request_id id) {
    size_t slot = (size_t)(id & SLOT_MASK);
    if (slot >= e->n_slots) return NULL;
    eng_request *r = e->slots[slot];
    return r && r->id == id ? r : NULL;
}

void eng_request_free(ev_retired *self) {
    eng_request *r = (eng_request *)self; /* retired is the first member */
    eng_input_free(r->in);
    llava_prepared_free(r->prepared);
    free(r);
}

static void fill_timings(const eng_request *r, llava_timings *t, double now) {
    double queue = 0;
    if (r->t_prep_start > 0) queue += r->t_prep_start - r->t_submit;
    if (r->t_run_start > 0 && r->t_prep_end > 0) queue += r->t_run_start - r->t_prep_end;
    t->queue_ms = queue;
    t->prepare_ms = r->t_prep_end > 0 ? r->t_prep_end - r->t_prep_start : 0;
    t->first_token_ms = r->t_first_token > 0 ? r->t_first_token - r->t_submit : 0;
    t->total_ms = now - r->t_submit;
}

void eng_finish_locked(llava_engine *e, eng_request *r, llava_event *ev) {
    ev->request = r->id;
    ev->user = r->user;
    fill_timings(r, &ev->timings, llava_now_ms());
    size_t slot = (size_t)(r->id & SLOT_MASK);
    e->slots[slot] = NULL;
    e->free_slots[e->n_free++] = (uint32_t)slot;
    if (r->stage == STAGE_RUNNING) {
        eng_uncount(&e->metrics.running, 1);
    } else {
        e->waiting--;
        eng_uncount(&e->metrics.queue_depth, 1);
    }
    e->outstanding--;
    switch (ev->kind) {
    case LLAVA_EVENT_DONE:
        eng_count(ev->reason == LLAVA_DONE_LENGTH ? &e->metrics.done_length
                                                  : &e->metrics.done_stop, 1);
        break;
    case LLAVA_EVENT_CANCELLED: eng_count(&e->metrics.cancelled, 1); break;
    default: eng_count(&e->metrics.failed, 1); break;
    }
    if (e->closing && e->outstanding == 0) pthread_cond_signal(&e->work_cv);
    ev_push_reserved(&e->ch, ev, &r->retired); /* r is the channel's from here */
}

/* Ends a request that sits in a queue (cancel, abort) with CANCELLED. */
static void cancel_queued_locked(llava_engine *e, eng_request *r) {
    queue_remove(r->stage == STAGE_WAIT_PREP ? &e->prep_q : &e->run_q, r);
    /* a prepared request less: the pool, held back by its prepare-ahead limit, may go on */
    if (r->stage == STAGE_WAIT_RUN && e->prep_q.n > 0) pthread_cond_signal(&e->pool_cv);
    llava_event ev = {.kind = LLAVA_EVENT_CANCELLED};
    eng_finish_locked(e, r, &ev);
}

/* ---- open and free ---- */

_Static_assert((int)LLAVA_HALF_VISION == (int)LLAVA_PART_VISION && (int)LLAVA_HALF_PROJECTOR == (int)LLAVA_PART_PROJECTOR &&
                   (int)LLAVA_HALF_TEXT == (int)LLAVA_PART_TEXT && (int)LLAVA_HALF_LM_HEAD == (int)LLAVA_PART_LM_HEAD,
               "the public part bits are the model's");

static llava_status check_config(const llava_engine_config *c, llava_error *err) {
    if (!c->model_dir || !c->model_dir[0])
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "config.model_dir: not set");
    if (strlen(c->model_dir) > 4000)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "config.model_dir: too long");
    if (c->n_threads > MAX_THREADS)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "config.n_threads: %d (at most %d)", c->n_threads, MAX_THREADS);
    if (c->queue_capacity > MAX_QUEUE_CAPACITY)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "config.queue_capacity: %d (at most %d)", c->queue_capacity,
                               MAX_QUEUE_CAPACITY);
    if (c->half_parts & ~(unsigned)(LLAVA_HALF_VISION | LLAVA_HALF_PROJECTOR | LLAVA_HALF_TEXT | LLAVA_HALF_LM_HEAD))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "config.half_parts: 0x%x names no part",
                               c->half_parts);
    if (c->quant < LLAVA_QUANT_LOAD_NONE || c->quant > LLAVA_QUANT_LOAD_Q4_0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "config.quant: %d (0, Q8_0 or Q4_0)", c->quant);
    if (c->kv_cache != LLAVA_KV_CACHE_F32 && c->kv_cache != LLAVA_KV_CACHE_F16)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "config.kv_cache: %d (F32 or F16)", c->kv_cache);
    if (c->prep_threads > MAX_POOL)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "config.prep_threads: %d (1 or 2)", c->prep_threads);
    if (c->n_ctx < 0 || c->prefill_chunk < 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "config.n_ctx / prefill_chunk: negative (0 means the default)");
    return LLAVA_OK;
}

/* Frees what open built; the threads must have ended (or never started). */
static void engine_destroy(llava_engine *e) {
    ev_channel_destroy(&e->ch);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->work_cv);
    pthread_cond_destroy(&e->pool_cv);
    free(e->slots);
    free(e->free_slots);
    free(e->model_dir);
    free(e);
}

/* Stops and joins the pool threads started so far (when open fails half-way). */
static void stop_pool(llava_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->pool_stop = true;
    pthread_cond_broadcast(&e->pool_cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_pool_started; i++) pthread_join(e->pool[i], NULL);
}

llava_status llava_engine_open(const llava_engine_config *cfg, llava_engine **out,
                               llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    if (!out) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "out: NULL");
    *out = NULL;
    if (!cfg) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "config: NULL");
    llava_status st = check_config(cfg, err);
    if (st != LLAVA_OK) return st;

    llava_engine *e = calloc(1, sizeof *e);
    if (!e) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for an engine");
    e->capacity = cfg->queue_capacity > 0 ? (size_t)cfg->queue_capacity : DEFAULT_CAPACITY;
    e->n_pool = cfg->prep_threads > 0 ? cfg->prep_threads : 1;
    e->lazy = cfg->lazy_load;
    llava_model_options_default(&e->mopt);
    e->mopt.n_threads = cfg->n_threads;
    e->mopt.n_ctx = cfg->n_ctx;
    e->mopt.prefill_chunk = cfg->prefill_chunk;
    e->mopt.half_parts = cfg->half_parts;
    e->mopt.kv_cache = cfg->kv_cache == LLAVA_KV_CACHE_F16 ? LLAVA_KV_F16 : LLAVA_KV_F32;
    e->mopt.no_mmap = cfg->no_mmap;
    e->mopt.quant = cfg->quant == LLAVA_QUANT_LOAD_Q8_0   ? LLAVA_QUANT_Q8_0
                    : cfg->quant == LLAVA_QUANT_LOAD_Q4_0 ? LLAVA_QUANT_Q4_0
                                                          : LLAVA_QUANT_NONE;
    e->n_slots = e->capacity + 1; /* the waiting ones and the running one */
    e->model_dir = strdup(cfg->model_dir);
    e->slots = calloc(e->n_slots, sizeof *e->slots);
    e->free_slots = malloc(e->n_slots * sizeof *e->free_slots);
    /* READY or LOAD_FAILED, and CLOSED, each get a reserved slot */
    st = ev_channel_init(&e->ch, 2, err);
    if (st != LLAVA_OK || !e->model_dir || !e->slots || !e->free_slots) {
        if (st == LLAVA_OK) ev_channel_destroy(&e->ch);
        free(e->slots);
        free(e->free_slots);
        free(e->model_dir);
        free(e);
        return st != LLAVA_OK ? st
                              : llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for an "
                                                "engine");
    }
    for (size_t i = 0; i < e->n_slots; i++) e->free_slots[i] = (uint32_t)(e->n_slots - 1 - i);
    e->n_free = e->n_slots;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work_cv, NULL);
    pthread_cond_init(&e->pool_cv, NULL);
    eng_metrics_init(&e->metrics);
    atomic_init(&e->state, e->lazy ? LLAVA_LOAD_IDLE : LLAVA_LOAD_LOADING);
    atomic_init(&e->closing_flag, false);
    atomic_init(&e->pool_wake, false);

    int rc = 0;
    for (int i = 0; i < e->n_pool && rc == 0; i++)
        if ((rc = pthread_create(&e->pool[i], NULL, eng_pool_main, e)) == 0) e->n_pool_started++;
    if (rc == 0) rc = pthread_create(&e->worker, NULL, eng_worker_main, e);
    if (rc != 0) {
        stop_pool(e);
        engine_destroy(e);
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "engine: cannot start a thread: %s",
                               strerror(rc));
    }
    *out = e;
    return LLAVA_OK;
}

void llava_engine_free(llava_engine *e) {
    if (!e) return;
    llava_engine_close(e, LLAVA_CLOSE_ABORT);
    pthread_join(e->worker, NULL); /* the worker joins the pool */
    engine_destroy(e);
}

/* ---- the caller's calls ---- */

int llava_engine_fd(const llava_engine *e) { return e ? e->ch.fd : -1; }

size_t llava_engine_poll(llava_engine *e, llava_event *events, size_t max) {
    if (!e || !events || max == 0) return 0;
    return ev_poll(&e->ch, events, max);
}

llava_status llava_engine_submit(llava_engine *e, const llava_request *req,
                                 llava_request_id *id, llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    if (id) *id = 0;
    if (!e || !req)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "engine or request: NULL");
    eng_input *in = NULL;
    llava_status st = eng_input_copy(req, &in, err);
    if (st != LLAVA_OK) {
        if (st == LLAVA_ERR_INVALID_ARGUMENT) eng_count(&e->metrics.rejected_invalid, 1);
        return st;
    }
    eng_request *r = calloc(1, sizeof *r);
    if (!r || !ev_reserve(&e->ch, 1)) {
        free(r);
        eng_input_free(in);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory queueing a request");
    }
    r->retired.free_fn = eng_request_free;
    r->e = e;
    r->user = req->user;
    r->in = in;
    atomic_init(&r->cancel, false);
    r->t_submit = llava_now_ms();

    pthread_mutex_lock(&e->mu);
    int state = atomic_load_explicit(&e->state, memory_order_relaxed);
    if (e->closing) {
        st = llava_error_set(err, LLAVA_ERR_STATE, "the engine is closing");
    } else if (state == LLAVA_LOAD_FAILED) {
        st = llava_error_set(err, LLAVA_ERR_STATE, "the model failed to load: %s",
                             e->load_error.message);
    } else if (e->waiting >= e->capacity) {
        st = llava_error_set(err, LLAVA_ERR_BUSY, "the queue is full (%zu requests waiting)",
                             e->waiting);
    } else {
        /* waiting < capacity and at most one runs, so a slot is free */
        uint32_t slot = e->free_slots[--e->n_free];
        r->id = (++e->seq << SLOT_BITS) | slot;
        e->slots[slot] = r;
        r->stage = STAGE_WAIT_PREP;
        eng_queue_push(&e->prep_q, r);
        e->waiting++;
        e->outstanding++;
        /* counted under the lock, before the worker can take it and count it down */
        eng_count(&e->metrics.submitted, 1);
        eng_count(&e->metrics.queue_depth, 1);
        if (e->lazy && !e->load_wanted) {
            e->load_wanted = true;
            pthread_cond_signal(&e->work_cv);
        }
        /* Waking a sleeping pool thread is a syscall, after which a loaded machine's scheduler
         * may take the CPU from this caller for milliseconds. While the worker runs a request
         * it does the waking instead, at its next check (token, decoder layer, vision layer):
         * the new request could not start before then anyway. */
        if (state == LLAVA_LOAD_READY) {
            if (e->worker_running) atomic_store_explicit(&e->pool_wake, true, memory_order_relaxed);
            else pthread_cond_signal(&e->pool_cv);
        }
        if (id) *id = r->id;
    }
    pthread_mutex_unlock(&e->mu);
    if (st != LLAVA_OK) {
        ev_unreserve(&e->ch, 1);
        if (st == LLAVA_ERR_BUSY) eng_count(&e->metrics.rejected_busy, 1);
        eng_request_free(&r->retired);
        return st;
    }
    return LLAVA_OK;
}

llava_status llava_engine_cancel(llava_engine *e, llava_request_id id) {
    if (!e || id == 0) return LLAVA_ERR_INVALID_ARGUMENT;
    llava_status st = LLAVA_OK;
    pthread_mutex_lock(&e->mu);
    eng_request *r = find_locked(e, id);
    if (!r) st = LLAVA_ERR_STATE;
    else if (r->stage == STAGE_WAIT_PREP || r->stage == STAGE_WAIT_RUN) cancel_queued_locked(e, r);
    else atomic_store_explicit(&r->cancel, true, memory_order_relaxed);
    pthread_mutex_unlock(&e->mu);
    return st;
}

void llava_engine_close(llava_engine *e, llava_close_mode mode) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->closing = true;
    atomic_store_explicit(&e->closing_flag, true, memory_order_relaxed);
    if (mode == LLAVA_CLOSE_ABORT && !e->aborting) {
        e->aborting = true;
        eng_request *r;
        while ((r = e->prep_q.head)) cancel_queued_locked(e, r);
        while ((r = e->run_q.head)) cancel_queued_locked(e, r);
        for (size_t i = 0; i < e->n_slots; i++) /* the ones being prepared or running */
            if (e->slots[i]) atomic_store_explicit(&e->slots[i]->cancel, true, memory_order_relaxed);
    }
    pthread_cond_broadcast(&e->work_cv);
    pthread_cond_broadcast(&e->pool_cv);
    pthread_mutex_unlock(&e->mu);
}

llava_load_state llava_engine_state(const llava_engine *e, llava_error *load_error) {
    if (!e) return LLAVA_LOAD_FAILED;
    int s = atomic_load_explicit((atomic_int *)&e->state, memory_order_acquire);
    if (s == LLAVA_LOAD_FAILED && load_error) *load_error = e->load_error;
    return (llava_load_state)s;
}

void llava_engine_metrics_get(const llava_engine *e, llava_engine_metrics *out) {
    memset(out, 0, sizeof *out);
    if (!e) return;
    eng_metrics_read(&e->metrics, out);
    out->state = llava_engine_state(e, NULL);
    out->closing = atomic_load_explicit((atomic_bool *)&e->closing_flag, memory_order_relaxed);
}
