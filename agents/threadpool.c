/* threadpool.c — persistent workers for the CPU backend (see threadpool.h). A run bumps a
 * generation number under the mutex and broadcasts; workers and the caller take tasks from an
 * atomic counter; the run ends when every worker has checked in (a barrier). A forward pass is
 * hundreds of short runs back to back, so workers and the caller first spin briefly (SPIN_ROUNDS
 * pauses, tens of microseconds) on the generation / check-in count before sleeping on a
 * condition variable: a futex wake per run costs more than the run at batch 1. Between forward
 * passes they sleep, so an idle engine costs no CPU. */
#include "threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ROUNDS 4000 /* pause instructions before sleeping */

static void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

struct nx__tpool {
    pthread_t *workers;      /* size - 1 threads */
    uint32_t size;           /* workers + the caller */
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* a new run or shutdown */
    pthread_cond_t done;     /* every worker checked in */
    uint64_t generation;     /* bumped per run (written under lock, read atomically) */
    int stop;
    /* the current run */
    nx__task_fn fn;
    void *ctx;
    uint32_t count;
    uint32_t next;           /* atomic: next task index */
    uint32_t arrived;        /* workers done with this run (written under lock) */
};

typedef struct worker_arg {
    nx__tpool_t *pool;
    uint32_t index;
} worker_arg_t;

/* Take tasks until none are left. */
static void drain(nx__tpool_t *p, uint32_t worker)
{
    for (;;) {
        uint32_t task = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (task >= p->count)
            break;
        p->fn(p->ctx, task, worker);
    }
}

static void *worker_main(void *arg)
{
    nx__tpool_t *p = ((worker_arg_t *)arg)->pool;
    uint32_t index = ((worker_arg_t *)arg)->index;
    free(arg);
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN_ROUNDS &&
                        __atomic_load_n(&p->generation, __ATOMIC_ACQUIRE) == seen &&
                        !__atomic_load_n(&p->stop, __ATOMIC_RELAXED);
             i++)
            spin_pause();
        pthread_mutex_lock(&p->lock);
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        drain(p, index);
        pthread_mutex_lock(&p->lock);
        if (__atomic_add_fetch(&p->arrived, 1, __ATOMIC_RELEASE) == p->size - 1)
            pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

nx__tpool_t *nx__tpool_new(uint32_t threads, nx_err_t *err)
{
    if (threads == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        threads = online > 0 ? (uint32_t)online : 1;
    }
    nx__tpool_t *p = calloc(1, sizeof *p);
    if (!p || !(p->workers = calloc(threads, sizeof *p->workers))) {
        free(p);
        nx_err_set(err, NX_ENOMEM, "thread pool of %u threads: out of memory", threads);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->size = 1;
    for (uint32_t i = 1; i < threads; i++) {
        worker_arg_t *arg = malloc(sizeof *arg);
        if (arg)
            *arg = (worker_arg_t){p, i};
        if (!arg || pthread_create(&p->workers[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            nx_err_set(err, NX_ENOMEM, "thread pool: could not start worker %u of %u", i,
                       threads - 1);
            nx__tpool_destroy(&p);
            return NULL;
        }
        p->size++;
    }
    return p;
}

void nx__tpool_destroy(nx__tpool_t **self_p)
{
    nx__tpool_t *p = *self_p;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (uint32_t i = 1; i < p->size; i++)
        pthread_join(p->workers[i - 1], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->workers);
    free(p);
    *self_p = NULL;
}

uint32_t nx__tpool_size(const nx__tpool_t *self)
{
    return self->size;
}

void nx__tpool_run(nx__tpool_t *self, uint32_t count, nx__task_fn fn, void *ctx)
{
    if (count == 0)
        return;
    if (self->size == 1 || count == 1) { /* nobody to wake: run inline */
        for (uint32_t t = 0; t < count; t++)
            fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&self->lock);
    self->fn = fn;
    self->ctx = ctx;
    self->count = count;
    __atomic_store_n(&self->next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&self->arrived, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&self->generation, self->generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
    drain(self, 0);
    for (int i = 0; i < SPIN_ROUNDS &&
                    __atomic_load_n(&self->arrived, __ATOMIC_ACQUIRE) < self->size - 1;
         i++)
        spin_pause();
    pthread_mutex_lock(&self->lock);
    /* every worker passes through every run (a barrier), so none is still inside drain()
     * when the next run resets the counters */
    while (self->arrived < self->size - 1)
        pthread_cond_wait(&self->done, &self->lock);
    pthread_mutex_unlock(&self->lock);
}
