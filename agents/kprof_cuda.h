/* kprof_cuda.h — internal: where a CUDA forward pass spends its GPU time, kernel by kernel
 * (NEXUS_CUDA_PROFILE=1; backend_cuda.c).
 *
 * The backend marks the stream after every launch with the launch's label; after the pass's
 * stream is synchronized, the time between consecutive marks (cudaEventElapsedTime) is added
 * to the later mark's label. While the GPU is behind the host (the usual case on big models:
 * the host queues a pass far faster than the GPU runs it) that is the kernel's GPU time plus
 * the gap before it; for a kernel shorter than the host's launch it includes the wait for the
 * launch. Profiling runs without CUDA graphs, so its totals are for un-graphed passes: it says
 * where the time goes, not how fast a graphed step is.
 */
#ifndef NX_KPROF_CUDA_H
#define NX_KPROF_CUDA_H

#include <cuda_runtime_api.h>

typedef struct nx__kprof nx__kprof_t;

/* A profiler with no events yet; NULL when out of host memory. */
nx__kprof_t *nx__kprof_new(void);
void nx__kprof_destroy(nx__kprof_t **self_p);

/* Marks `stream` after the work queued so far: label names that work (a string literal; it is
 * kept), NULL starts a pass (the time before it is nobody's). Beyond the events a pass may
 * hold, marks are counted as dropped. The cudaError_t of the event calls. */
cudaError_t nx__kprof_mark(nx__kprof_t *self, cudaStream_t stream, const char *label);

/* Adds the pass's times to the table, once every marked event has completed (the caller has
 * synchronized the stream), and starts over. The cudaError_t of the event calls. */
cudaError_t nx__kprof_collect(nx__kprof_t *self);

/* Logs the table (nx_log, info): label, calls, total ms, microseconds a call, share of the
 * total, largest first; nothing when nothing was collected. */
void nx__kprof_report(const nx__kprof_t *self);

#endif
