/* cuemu_stream.h — what the emulated CUDA runtime's files share (cuemu_runtime.cc: streams,
 * events, device work; cuemu_copy.cc: memory and copies; cuemu_graph.cc: capture and graphs;
 * cuemu_devices.cc: device queries and error names). CPU emulation of CUDA for tests: it
 * checks index arithmetic, barriers and host orchestration; not the hardware, not speed.
 * Everything here is guarded by cuemu::lock.
 */
#ifndef NX_CUEMU_STREAM_H
#define NX_CUEMU_STREAM_H

#include "cuemu_internal.h"

#include <deque>
#include <memory>
#include <thread>

/* ------------------------------------------------------------------------------------------
 * Handles (CUDA's opaque types, defined by the emulation)
 */
struct queued {
    uint64_t seq;
    std::vector<std::pair<CUstream_st *, uint64_t>> deps; /* drain these first */
    cuemu::op o;
};

struct CUgraph_st {
    std::vector<cuemu::op> nodes;
};

struct CUgraphExec_st {
    std::shared_ptr<std::vector<cuemu::op>> nodes;
};

struct CUstream_st {
    unsigned flags;
    bool legacy, dead;
    std::deque<queued> q;
    uint64_t submitted, completed;
    /* capture */
    bool capturing, invalidated;
    cudaStreamCaptureMode mode;
    std::thread::id owner;
    CUgraph_st *graph;
};

struct CUevent_st {
    unsigned flags;
    CUstream_st *stream; /* the stream of the last record, NULL: never recorded */
    uint64_t seq;
    bool captured;       /* recorded into a capture */
    double time_ms;      /* host time when the record ran */
};

namespace cuemu {

extern cudaError_t sticky_error; /* the error every call returns once device work failed */

/* The stream a handle names (NULL, cudaStreamLegacy, cudaStreamPerThread: the legacy stream);
 * cudaErrorInvalidResourceHandle for one that is not live. */
cudaError_t stream_of(cudaStream_t handle, CUstream_st **out);
/* Queue o on s after `deps` (and what the legacy stream's ordering adds), or record it into
 * s's capture. */
cudaError_t submit_deps(CUstream_st *s, op o,
                        std::vector<std::pair<CUstream_st *, uint64_t>> deps);
/* Run s's queued operations up to sequence number `upto` / all of them. */
void drain(CUstream_st *s, uint64_t upto);
void drain_stream(CUstream_st *s);
/* Before a synchronous legacy-stream operation: the legacy stream and the blocking streams. */
void drain_for_legacy(void);
/* Record a device error as sticky and drop every queued operation. */
void make_sticky(cudaError_t e);
void drop_all_work(void);
/* Mark s's capture invalid (EndCapture then fails), saying why. */
void invalidate_capture(CUstream_st *s, const char *why);
/* cudaSuccess, or cudaErrorStreamCaptureUnsupported (capture invalidated) while s captures. */
cudaError_t sync_allowed(CUstream_st *s, const char *call);
/* A capture in `mode` began (+1) or ended (-1) on this thread; forget all (cudaDeviceReset). */
void count_capture(cudaStreamCaptureMode mode, int delta);
void forget_captures(void);

} /* namespace cuemu */

#define LOCKED std::lock_guard<std::recursive_mutex> guard_(cuemu::lock)
#define RETURN_IF_STICKY                                                                      \
    do {                                                                                      \
        if (cuemu::sticky_error != cudaSuccess)                                               \
            return cuemu::set_last(cuemu::sticky_error);                                      \
    } while (0)

#endif
