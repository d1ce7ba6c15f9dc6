/* threadpool.h — internal: persistent worker threads for the CPU backend. A run hands out
 * task indices [0, count) from one atomic counter to the workers and the calling thread, and
 * returns when every task is done; no thread is created per run. */
#ifndef NX_THREADPOOL_H
#define NX_THREADPOOL_H

#include <stdint.h>

#include "nx_err.h"

typedef struct nx__tpool nx__tpool_t;

/* fn(ctx, task, worker): worker in [0, nx__tpool_size) says whose scratch to use. */
typedef void (*nx__task_fn)(void *ctx, uint32_t task, uint32_t worker);

/* threads counts the caller: threads - 1 workers are started. 0 = online CPUs. */
nx__tpool_t *nx__tpool_new(uint32_t threads, nx_err_t *err);
void nx__tpool_destroy(nx__tpool_t **self_p);
uint32_t nx__tpool_size(const nx__tpool_t *self);
/* Run fn over [0, count) and wait. Not reentrant: one run at a time per pool. */
void nx__tpool_run(nx__tpool_t *self, uint32_t count, nx__task_fn fn, void *ctx);

#endif
