/* cuemu_graph.cc — cuemu's stream capture and graphs (CPU emulation of CUDA for tests: checks
 * index arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 * A capturing stream records its operations (kernels with the arguments they were launched
 * with, copies, cuBLAS calls) into a graph instead of running them; an instantiated graph keeps
 * its own copy and cudaGraphLaunch queues it on a stream as one operation that runs every
 * node in order. One stream's capture only: waiting on events across a capture boundary is
 * not emulated (cudaErrorStreamCaptureIsolation).
 */
#include "cuemu_device.h"
#include "cuemu_stream.h"

#include <set>

using namespace cuemu;

static std::set<CUgraph_st *> graphs;
static std::set<CUgraphExec_st *> execs;

/* ------------------------------------------------------------------------------------------
 * Graphs
 */
cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t handle, enum cudaStreamCaptureMode mode)
{
    LOCKED;
    RETURN_IF_STICKY;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess)
        return set_last(e);
    if (s->legacy) {
        say("cudaStreamBeginCapture on the legacy stream");
        return set_last(cudaErrorStreamCaptureUnsupported);
    }
    if (s->capturing)
        return set_last(cudaErrorIllegalState);
    s->capturing = true;
    s->invalidated = false;
    s->mode = mode;
    s->owner = std::this_thread::get_id();
    s->graph = new CUgraph_st;
    count_capture(mode, +1);
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t handle, cudaGraph_t *graph)
{
    LOCKED;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess || !graph)
        return set_last(e != cudaSuccess ? e : cudaErrorInvalidValue);
    *graph = NULL;
    if (!s->capturing)
        return set_last(cudaErrorIllegalState);
    if (s->mode != cudaStreamCaptureModeRelaxed && s->owner != std::this_thread::get_id())
        return set_last(cudaErrorStreamCaptureWrongThread);
    s->capturing = false;
    count_capture(s->mode, -1);
    CUgraph_st *g = s->graph;
    s->graph = NULL;
    if (s->invalidated || sticky_error != cudaSuccess) {
        delete g;
        return set_last(sticky_error != cudaSuccess ? sticky_error
                                                    : cudaErrorStreamCaptureInvalidated);
    }
    graphs.insert(g);
    *graph = g;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t g)
{
    LOCKED;
    if (!graphs.erase(g))
        return set_last(cudaErrorInvalidValue);
    delete g;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g,
                                           unsigned long long flags)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!exec || !graphs.count(g))
        return set_last(cudaErrorInvalidValue);
    CUgraphExec_st *x = new CUgraphExec_st{std::make_shared<std::vector<op>>(g->nodes)};
    execs.insert(x);
    *exec = x;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t g,
                                                    unsigned long long flags)
{
    return cudaGraphInstantiate(exec, g, flags);
}

cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t x)
{
    LOCKED;
    if (!execs.erase(x))
        return set_last(cudaErrorInvalidValue);
    delete x; /* a queued launch holds its own reference to the nodes */
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t stream)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!execs.count(x))
        return set_last(cudaErrorInvalidValue);
    auto nodes = x->nodes;
    char what[64];
    snprintf(what, sizeof what, "graph launch (%zu nodes)", nodes->size());
    return set_last(submit(stream, op{[nodes]() {
                                          for (const op &n : *nodes) {
                                              cudaError_t e = n.run();
                                              if (e != cudaSuccess)
                                                  return e;
                                          }
                                          return cudaSuccess;
                                      },
                                      what}));
}
