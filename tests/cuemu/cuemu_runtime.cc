/* cuemu_runtime.cc — cuemu's CUDA runtime (CPU emulation of CUDA for tests: checks index
 * arithmetic, barriers and host orchestration; not the hardware, not speed). The functions
 * have the prototypes of CUDA's cuda_runtime_api.h; the emulated programs link this instead
 * of libcudart.
 *
 * Streams are deferred: an operation queued on a stream runs only when the host synchronizes
 * with it (cudaStreamSynchronize, cudaEventSynchronize or cudaEventQuery of a later event,
 * cudaDeviceSynchronize, a synchronous copy on the legacy stream, cudaFree/cudaFreeHost, a
 * copy to pageable memory), so a host that rewrites a buffer before its queued copy has run
 * sees the consequence, as on a GPU where it would be a race. cudaMemcpyAsync from pageable
 * memory copies the source when called (CUDA stages it); from pinned memory when it runs.
 * The legacy default stream orders against blocking streams; non-blocking streams order with
 * nothing. cudaStreamPerThread is taken as the legacy stream.
 *
 * Graph capture (cudaStreamBeginCapture .. EndCapture) records the stream's operations, with
 * the kernel arguments as they were at the launch, into a graph that cudaGraphLaunch replays.
 * A synchronizing call on a capturing stream, or a "potentially unsafe" call (cudaMalloc, a
 * synchronous copy, ...) from a thread whose capture forbids it, fails with
 * cudaErrorStreamCaptureUnsupported and invalidates the capture, as CUDA does.
 *
 * Errors in device work (a kernel's detectors, a fault) are printed and become sticky: every
 * later call returns them, until cudaDeviceReset (which here keeps memory allocated).
 */
#include "cuemu_device.h"
#include "cuemu_internal.h"

#include <atomic>
#include <deque>
#include <memory>
#include <set>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <thread>
#include <time.h>

/* ------------------------------------------------------------------------------------------
 * Handles
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

std::recursive_mutex lock;
static cudaError_t sticky_error = cudaSuccess;
static thread_local cudaError_t last_error = cudaSuccess;
static CUstream_st legacy_stream = {0, true, false, {}, 0, 0, false, false,
                                    cudaStreamCaptureModeGlobal, {}, NULL};
static std::set<CUstream_st *> streams;   /* live, created by the program */
static std::set<CUstream_st *> graveyard; /* destroyed: kept so stale events stay harmless */
static std::set<CUevent_st *> events;
static std::set<CUgraph_st *> graphs;
static std::set<CUgraphExec_st *> execs;
static thread_local int my_strict_captures; /* captures in ThreadLocal or Global mode */
static int global_captures;                 /* captures in Global mode, any thread */

void say(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cuemu: %s\n", msg);
}

void notice(void)
{
    static std::atomic<bool> said;
    if (!said.exchange(true))
        say("CPU emulation of CUDA (device 'cuemu (CPU emulation)'): checks index arithmetic, "
            "barriers and host orchestration; not the hardware, not speed");
}

cudaError_t sticky(void)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    return sticky_error;
}

cudaError_t set_last(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

static void drop_all_work(void)
{
    auto drop = [](CUstream_st *s) {
        s->q.clear();
        s->completed = s->submitted;
    };
    drop(&legacy_stream);
    for (CUstream_st *s : streams)
        drop(s);
}

static void make_sticky(cudaError_t e)
{
    if (sticky_error == cudaSuccess)
        sticky_error = e;
    drop_all_work();
    if (getenv("NX_CUEMU_ABORT")) {
        say("NX_CUEMU_ABORT is set: aborting at the first device error");
        abort();
    }
}

/* NX_CUEMU_TRACE=1: every operation as it is queued, captured and run, on stderr. */
static bool tracing(void)
{
    static int on = -1;
    if (on < 0) {
        const char *env = getenv("NX_CUEMU_TRACE");
        on = env && *env && strcmp(env, "0") != 0;
    }
    return on;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------------------------------
 * Running device work: device memory accessible, faults caught
 */
static thread_local sigjmp_buf *fault_jump;
static thread_local const void *fault_addr;
static thread_local int fault_signal;
static struct sigaction prev_segv, prev_bus, prev_ill;
static int work_depth;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    if (fault_jump) {
        sigjmp_buf *j = fault_jump;
        fault_jump = NULL;
        fault_addr = si->si_addr;
        fault_signal = sig;
        siglongjmp(*j, 1);
    }
    /* not device work: give the fault to whoever had it before (it recurs on return) */
    sigaction(sig, sig == SIGSEGV ? &prev_segv : sig == SIGBUS ? &prev_bus : &prev_ill, NULL);
}

/* An alternate signal stack per host thread that runs device work: the fault may be a stack
 * overflow of an emulated thread. */
struct alt_stack {
    void *mem = NULL;
    ~alt_stack()
    {
        if (!mem)
            return;
        stack_t off = {};
        off.ss_flags = SS_DISABLE;
        sigaltstack(&off, NULL);
        munmap(mem, 1 << 16);
    }
    void ensure()
    {
        if (mem)
            return;
        mem = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            mem = NULL;
            return;
        }
        stack_t ss = {};
        ss.ss_sp = mem;
        ss.ss_size = 1 << 16;
        sigaltstack(&ss, NULL);
    }
};
static thread_local alt_stack my_alt_stack;

/* Enter (true) or leave (false) a stretch of device work. Caller holds the lock. */
static void device_work(bool enter)
{
    if (enter && work_depth++ == 0) {
        my_alt_stack.ensure();
        struct sigaction sa = {};
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &prev_segv);
        sigaction(SIGBUS, &sa, &prev_bus);
        sigaction(SIGILL, &sa, &prev_ill); /* the alignment checks' trap in the .cu code */
        device_memory_access(true);
    } else if (!enter && --work_depth == 0) {
        device_memory_access(false);
        sigaction(SIGSEGV, &prev_segv, NULL);
        sigaction(SIGBUS, &prev_bus, NULL);
        sigaction(SIGILL, &prev_ill, NULL);
    }
}

static cudaError_t report_fault(const op &o)
{
    std::string where = where_in_kernel();
    abandon_grid();
    if (fault_signal == SIGILL) { /* -fsanitize-trap=alignment (see the Makefile) */
        say("ERROR: %s%s%s: misaligned address (a vector load or store at an address its type's "
            "alignment does not divide), at instruction %p", o.what.c_str(),
            where.empty() ? "" : ": ", where.c_str(), fault_addr);
        return cudaErrorMisalignedAddress;
    }
    const void *a = fault_addr;
    std::string what = is_stack_guard(a) ? "stack overflow of an emulated thread (raise "
                                           "NX_CUEMU_STACK_KB)"
                                         : "illegal memory access: " + describe_address(a);
    say("ERROR: %s%s%s: %s, at address %p", o.what.c_str(), where.empty() ? "" : ": ",
        where.c_str(), what.c_str(), a);
    return cudaErrorIllegalAddress;
}

cudaError_t run_device_work(const op &o)
{
    if (tracing())
        say("run: %s", o.what.c_str());
    device_work(true);
    sigjmp_buf here;
    sigjmp_buf *outer = fault_jump;
    cudaError_t e;
    if (sigsetjmp(here, 1) == 0) {
        fault_jump = &here;
        e = o.run();
    } else {
        e = report_fault(o);
    }
    fault_jump = outer;
    device_work(false);
    return e;
}

/* ------------------------------------------------------------------------------------------
 * Streams: queueing and draining
 */
static cudaError_t stream_of(cudaStream_t handle, CUstream_st **out)
{
    if (!handle || handle == cudaStreamLegacy || handle == cudaStreamPerThread) {
        *out = &legacy_stream;
        return cudaSuccess;
    }
    if (!streams.count(handle)) {
        say("stream %p is not a live stream (destroyed, or never created)", (void *)handle);
        return cudaErrorInvalidResourceHandle;
    }
    *out = handle;
    return cudaSuccess;
}

static void invalidate_capture(CUstream_st *s, const char *why)
{
    if (s->capturing && !s->invalidated) {
        say("the capture on stream %p is invalidated: %s", (void *)s, why);
        s->invalidated = true;
    }
}

/* Run s's operations up to sequence number `upto` (inclusive). Caller holds the lock. */
static void drain(CUstream_st *s, uint64_t upto)
{
    if (s->completed >= upto || s->q.empty())
        return;
    device_work(true);
    while (s->completed < upto && !s->q.empty()) {
        queued item = std::move(s->q.front());
        s->q.pop_front();
        for (const auto &d : item.deps)
            drain(d.first, d.second);
        if (sticky_error != cudaSuccess)
            break;
        cudaError_t e = run_device_work(item.o);
        s->completed = item.seq;
        if (e != cudaSuccess)
            make_sticky(e);
    }
    if (sticky_error != cudaSuccess)
        drop_all_work();
    device_work(false);
}

static void drain_stream(CUstream_st *s)
{
    drain(s, s->submitted);
}

/* What a legacy-stream operation waits for, or a blocking stream's operation. */
static std::vector<std::pair<CUstream_st *, uint64_t>> legacy_deps(const CUstream_st *s)
{
    std::vector<std::pair<CUstream_st *, uint64_t>> deps;
    if (s->legacy) {
        for (CUstream_st *b : streams)
            if (!(b->flags & cudaStreamNonBlocking) && b->completed < b->submitted)
                deps.emplace_back(b, b->submitted);
    } else if (!(s->flags & cudaStreamNonBlocking) &&
               legacy_stream.completed < legacy_stream.submitted) {
        deps.emplace_back(&legacy_stream, legacy_stream.submitted);
    }
    return deps;
}

cudaError_t drain_all(void)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    drain_stream(&legacy_stream);
    for (CUstream_st *s : streams)
        drain_stream(s);
    return sticky_error;
}

/* Drain before a synchronous legacy-stream operation: the legacy stream and blocking streams. */
static void drain_for_legacy(void)
{
    drain_stream(&legacy_stream);
    for (CUstream_st *s : streams)
        if (!(s->flags & cudaStreamNonBlocking))
            drain_stream(s);
}

static cudaError_t submit_deps(CUstream_st *s, op o,
                               std::vector<std::pair<CUstream_st *, uint64_t>> deps)
{
    if (s->capturing) {
        if (s->invalidated)
            return cudaErrorStreamCaptureInvalidated;
        if (tracing())
            say("capture (stream %p): %s", (void *)s, o.what.c_str());
        s->graph->nodes.push_back(std::move(o));
        return cudaSuccess;
    }
    if (s->legacy) {
        for (CUstream_st *b : streams)
            if (b->capturing && !(b->flags & cudaStreamNonBlocking)) {
                invalidate_capture(b, "work on the legacy stream while a blocking stream "
                                      "captures");
                return cudaErrorStreamCaptureImplicit;
            }
    }
    for (auto &d : legacy_deps(s))
        deps.push_back(d);
    if (tracing())
        say("queue (stream %p): %s", (void *)s, o.what.c_str());
    s->q.push_back(queued{++s->submitted, std::move(deps), std::move(o)});
    return cudaSuccess;
}

cudaError_t submit(cudaStream_t handle, op o)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky_error != cudaSuccess)
        return sticky_error;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess)
        return e;
    return submit_deps(s, std::move(o), {});
}

cudaError_t capture_allows_unsafe_call(const char *call)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (my_strict_captures == 0 && global_captures == 0)
        return cudaSuccess;
    std::thread::id me = std::this_thread::get_id();
    bool hit = false;
    for (CUstream_st *s : streams) {
        if (!s->capturing || s->mode == cudaStreamCaptureModeRelaxed)
            continue;
        if (s->mode == cudaStreamCaptureModeGlobal || s->owner == me) {
            invalidate_capture(s, call);
            hit = true;
        }
    }
    if (!hit)
        return cudaSuccess;
    say("%s during stream capture: cudaErrorStreamCaptureUnsupported", call);
    return cudaErrorStreamCaptureUnsupported;
}

/* A synchronizing call on s: not while s captures. */
static cudaError_t sync_allowed(CUstream_st *s, const char *call)
{
    if (!s->capturing)
        return cudaSuccess;
    invalidate_capture(s, call);
    say("%s on a capturing stream: cudaErrorStreamCaptureUnsupported", call);
    return cudaErrorStreamCaptureUnsupported;
}

/* ------------------------------------------------------------------------------------------
 * Kernels
 */

/* NX_CUEMU_INJECT=launch:N or kernel:N: the Nth kernel launch fails (a launch error, as a
 * bad configuration gives), or the Nth kernel to run fails (a sticky launch failure), to test
 * the host's error paths. Counted from 1 over the process. */
static bool inject(const char *what)
{
    static long at = -1, count;
    static char kind[16];
    if (at < 0) {
        const char *env = getenv("NX_CUEMU_INJECT");
        at = 0;
        if (env && sscanf(env, "%15[a-z]:%ld", kind, &at) != 2)
            at = 0;
    }
    if (!at || strcmp(kind, what) != 0 || ++count != at)
        return false;
    say("NX_CUEMU_INJECT: failing %s %ld", what, at);
    return true;
}

bool inject_kernel_failure(void)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    return inject("kernel");
}
static bool launch_config_ok(dim3 grid, dim3 block, size_t smem, std::string *why)
{
    char buf[200];
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        threads > 1024)
        snprintf(buf, sizeof buf, "block (%u,%u,%u): at most 1024 x 1024 x 64 and 1024 "
                 "threads, none zero", block.x, block.y, block.z);
    else if (!grid.x || !grid.y || !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 ||
             grid.z > 65535)
        snprintf(buf, sizeof buf, "grid (%u,%u,%u): at most 2^31-1 x 65535 x 65535, none "
                 "zero", grid.x, grid.y, grid.z);
    else if (smem > (48u << 10))
        snprintf(buf, sizeof buf, "%zu bytes of dynamic shared memory (over 48 KiB)", smem);
    else
        return true;
    *why = buf;
    return false;
}

void submit_kernel(const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   std::function<void()> thread,
                   std::vector<std::pair<int, const void *>> pointer_args)
{
    notice();
    std::lock_guard<std::recursive_mutex> g(lock);
    if (sticky_error != cudaSuccess) {
        set_last(sticky_error);
        return;
    }
    std::string why;
    if (inject("launch"))
        why = "injected (NX_CUEMU_INJECT)";
    if (!why.empty() || !launch_config_ok(grid, block, smem, &why)) {
        say("launch of kernel %s: invalid configuration: %s", name, why.c_str());
        CUstream_st *s;
        if (stream_of(stream, &s) == cudaSuccess)
            invalidate_capture(s, "a launch failed");
        set_last(cudaErrorInvalidConfiguration);
        return;
    }
    auto desc = std::make_shared<grid_desc>(
        grid_desc{name, grid, block, std::move(thread), std::move(pointer_args)});
    char what[256];
    snprintf(what, sizeof what, "kernel %s <<<(%u,%u,%u), (%u,%u,%u)>>>", name, grid.x, grid.y,
             grid.z, block.x, block.y, block.z);
    set_last(submit(stream, op{[desc]() { return run_grid(*desc); }, what}));
}

} /* namespace cuemu */

using namespace cuemu;

#define LOCKED std::lock_guard<std::recursive_mutex> guard_(lock)
#define RETURN_IF_STICKY                                                                      \
    do {                                                                                      \
        if (sticky_error != cudaSuccess)                                                      \
            return set_last(sticky_error);                                                    \
    } while (0)

/* ------------------------------------------------------------------------------------------
 * Errors
 */
static const struct {
    cudaError_t e;
    const char *name, *text;
} error_names[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection",
     "invalid copy direction for memcpy"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle",
     "invalid resource handle"},
    {cudaErrorIllegalState, "cudaErrorIllegalState",
     "the operation cannot be performed in the present state"},
    {cudaErrorSymbolNotFound, "cudaErrorSymbolNotFound", "named symbol not found"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress",
     "an illegal memory access was encountered"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureIsolation, "cudaErrorStreamCaptureIsolation",
     "dependency created on uncaptured work in another stream"},
    {cudaErrorStreamCaptureImplicit, "cudaErrorStreamCaptureImplicit",
     "operation would make the legacy stream depend on a capturing blocking stream"},
    {cudaErrorCapturedEvent, "cudaErrorCapturedEvent",
     "operation not permitted on an event last recorded in a capturing stream"},
    {cudaErrorStreamCaptureWrongThread, "cudaErrorStreamCaptureWrongThread",
     "attempt to terminate a thread-local capture sequence from another thread"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const char *CUDARTAPI cudaGetErrorName(cudaError_t e)
{
    for (const auto &n : error_names)
        if (n.e == e)
            return n.name;
    return "unrecognized error code";
}

const char *CUDARTAPI cudaGetErrorString(cudaError_t e)
{
    for (const auto &n : error_names)
        if (n.e == e)
            return n.text;
    return "unrecognized error code";
}

cudaError_t CUDARTAPI cudaGetLastError(void)
{
    LOCKED;
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return sticky_error != cudaSuccess ? sticky_error : e;
}

cudaError_t CUDARTAPI cudaPeekAtLastError(void)
{
    LOCKED;
    return sticky_error != cudaSuccess ? sticky_error : last_error;
}

/* ------------------------------------------------------------------------------------------
 * Devices
 */
static bool no_device(void)
{
    const char *env = getenv("NX_CUEMU_NO_DEVICE");
    return env && *env && strcmp(env, "0") != 0;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int *count)
{
    notice();
    if (!count)
        return set_last(cudaErrorInvalidValue);
    *count = no_device() ? 0 : 1;
    return *count ? cudaSuccess : set_last(cudaErrorNoDevice);
}

cudaError_t CUDARTAPI cudaSetDevice(int device)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (no_device())
        return set_last(cudaErrorNoDevice);
    return device == 0 ? cudaSuccess : set_last(cudaErrorInvalidDevice);
}

cudaError_t CUDARTAPI cudaGetDevice(int *device)
{
    if (!device)
        return set_last(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDriverGetVersion(int *v)
{
    if (!v)
        return set_last(cudaErrorInvalidValue);
    *v = 13000;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaRuntimeGetVersion(int *v)
{
    if (!v)
        return set_last(cudaErrorInvalidValue);
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (!p)
        return set_last(cudaErrorInvalidValue);
    if (device != 0 || no_device())
        return set_last(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (CPU emulation)");
    p->totalGlobalMem = device_bytes_total();
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->regsPerBlock = 65536;
    p->regsPerMultiprocessor = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->totalConstMem = 64 << 10;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->maxBlocksPerMultiProcessor = 32;
    p->l2CacheSize = 50 << 20;
    p->memoryBusWidth = 5120;
    p->concurrentKernels = 1;
    p->asyncEngineCount = 2;
    p->unifiedAddressing = 1;
    p->canMapHostMemory = 1;
    p->managedMemory = 1;
    p->streamPrioritiesSupported = 1;
    p->memoryPoolsSupported = 1;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (!value)
        return set_last(cudaErrorInvalidValue);
    if (device != 0 || no_device())
        return set_last(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 << 10; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrL2CacheSize: *value = 50 << 20; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    default: *value = 0; break;
    }
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!free_bytes || !total_bytes)
        return set_last(cudaErrorInvalidValue);
    *total_bytes = device_bytes_total();
    *free_bytes = *total_bytes - device_bytes_used();
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void)
{
    LOCKED;
    RETURN_IF_STICKY;
    cudaError_t e = capture_allows_unsafe_call("cudaDeviceSynchronize");
    if (e != cudaSuccess)
        return set_last(e);
    return set_last(drain_all());
}

/* Clears the sticky error, the queues and every capture; keeps memory allocated. */
cudaError_t CUDARTAPI cudaDeviceReset(void)
{
    LOCKED;
    drop_all_work();
    for (CUstream_st *s : streams)
        if (s->capturing) {
            delete s->graph;
            s->graph = NULL;
            s->capturing = false;
        }
    my_strict_captures = 0;
    global_captures = 0;
    sticky_error = cudaSuccess;
    last_error = cudaSuccess;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDriverEntryPointByVersion(const char *symbol, void **fn,
                                                       unsigned int version,
                                                       unsigned long long flags,
                                                       enum cudaDriverEntryPointQueryResult *st)
{
    if (!symbol || !fn)
        return set_last(cudaErrorInvalidValue);
    int status = 0;
    *fn = driver_symbol(symbol, version, &status);
    if (st)
        *st = (enum cudaDriverEntryPointQueryResult)status;
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------
 * Streams
 */
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t *out, unsigned int flags)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!out || (flags & ~cudaStreamNonBlocking))
        return set_last(cudaErrorInvalidValue);
    CUstream_st *s = new CUstream_st{flags, false, false, {}, 0, 0, false, false,
                                     cudaStreamCaptureModeGlobal, {}, NULL};
    streams.insert(s);
    *out = s;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamCreate(cudaStream_t *out)
{
    return cudaStreamCreateWithFlags(out, cudaStreamDefault);
}

cudaError_t CUDARTAPI cudaStreamCreateWithPriority(cudaStream_t *out, unsigned int flags,
                                                   int priority)
{
    return cudaStreamCreateWithFlags(out, flags);
}

/* The device finishes what was queued; the handle dies now. */
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t handle)
{
    LOCKED;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess || s->legacy)
        return set_last(e != cudaSuccess ? e : cudaErrorInvalidResourceHandle);
    if (s->capturing) {
        say("cudaStreamDestroy of a capturing stream");
        delete s->graph;
        s->graph = NULL;
        s->capturing = false;
    }
    drain_stream(s);
    streams.erase(s);
    s->dead = true;
    graveyard.insert(s);
    return sticky_error != cudaSuccess ? set_last(sticky_error) : cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t handle)
{
    LOCKED;
    RETURN_IF_STICKY;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e == cudaSuccess)
        e = sync_allowed(s, "cudaStreamSynchronize");
    if (e == cudaSuccess && s->legacy)
        e = capture_allows_unsafe_call("cudaStreamSynchronize(legacy stream)");
    if (e != cudaSuccess)
        return set_last(e);
    if (s->legacy)
        drain_for_legacy();
    else
        drain(s, s->submitted);
    return set_last(sticky_error);
}

/* Runs what is queued (an emulation has nothing in flight), then reports it done. */
cudaError_t CUDARTAPI cudaStreamQuery(cudaStream_t handle)
{
    LOCKED;
    RETURN_IF_STICKY;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e == cudaSuccess)
        e = sync_allowed(s, "cudaStreamQuery");
    if (e != cudaSuccess)
        return set_last(e);
    drain_stream(s);
    return set_last(sticky_error);
}

cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t handle, cudaEvent_t ev,
                                          unsigned int flags)
{
    LOCKED;
    RETURN_IF_STICKY;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess)
        return set_last(e);
    if (!events.count(ev))
        return set_last(cudaErrorInvalidResourceHandle);
    if (!ev->stream)
        return cudaSuccess;
    if (ev->captured != s->capturing) {
        say("cudaStreamWaitEvent across a capture boundary is not emulated");
        invalidate_capture(s, "cudaStreamWaitEvent on an event outside the capture");
        return set_last(cudaErrorStreamCaptureIsolation);
    }
    if (s->capturing)
        return cudaSuccess; /* captured from one stream: already in order */
    op marker{[]() { return cudaSuccess; }, "cudaStreamWaitEvent"};
    return set_last(submit_deps(s, marker, {{ev->stream, ev->seq}}));
}

cudaError_t CUDARTAPI cudaStreamIsCapturing(cudaStream_t handle,
                                            enum cudaStreamCaptureStatus *status)
{
    LOCKED;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess || !status)
        return set_last(e != cudaSuccess ? e : cudaErrorInvalidValue);
    *status = !s->capturing    ? cudaStreamCaptureStatusNone
              : s->invalidated ? cudaStreamCaptureStatusInvalidated
                               : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void *data)
{
    if (!fn)
        return set_last(cudaErrorInvalidValue);
    return set_last(submit(stream, op{[fn, data]() {
                                          fn(data);
                                          return cudaSuccess;
                                      },
                                      "cudaLaunchHostFunc"}));
}

/* ------------------------------------------------------------------------------------------
 * Events
 */
cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t *out, unsigned int flags)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!out)
        return set_last(cudaErrorInvalidValue);
    CUevent_st *ev = new CUevent_st{flags, NULL, 0, false, 0};
    events.insert(ev);
    *out = ev;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t *out)
{
    return cudaEventCreateWithFlags(out, cudaEventDefault);
}

cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t ev)
{
    LOCKED;
    if (!events.erase(ev))
        return set_last(cudaErrorInvalidResourceHandle);
    delete ev;
    return sticky_error != cudaSuccess ? set_last(sticky_error) : cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t ev, cudaStream_t handle)
{
    LOCKED;
    RETURN_IF_STICKY;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e != cudaSuccess)
        return set_last(e);
    if (!events.count(ev))
        return set_last(cudaErrorInvalidResourceHandle);
    if (s->capturing) {
        ev->stream = s;
        ev->captured = true;
        return cudaSuccess;
    }
    op marker{[ev]() {
                  if (events.count(ev))
                      ev->time_ms = now_ms();
                  return cudaSuccess;
              },
              "cudaEventRecord"};
    e = submit_deps(s, marker, {});
    if (e != cudaSuccess)
        return set_last(e);
    ev->stream = s;
    ev->seq = s->submitted;
    ev->captured = false;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t ev)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!events.count(ev))
        return set_last(cudaErrorInvalidResourceHandle);
    if (ev->captured) {
        say("cudaEventSynchronize of an event recorded in a capture");
        return set_last(cudaErrorCapturedEvent);
    }
    if (ev->stream)
        drain(ev->stream, ev->seq);
    return set_last(sticky_error);
}

cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t ev)
{
    return cudaEventSynchronize(ev);
}

cudaError_t CUDARTAPI cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    LOCKED;
    RETURN_IF_STICKY;
    if (!ms || !events.count(start) || !events.count(end))
        return set_last(cudaErrorInvalidResourceHandle);
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return set_last(cudaErrorInvalidResourceHandle);
    if (!start->stream || !end->stream || start->stream->completed < start->seq ||
        end->stream->completed < end->seq)
        return set_last(cudaErrorNotReady);
    *ms = (float)(end->time_ms - start->time_ms);
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------
 * Memory
 */
cudaError_t CUDARTAPI cudaMalloc(void **p, size_t bytes)
{
    LOCKED;
    RETURN_IF_STICKY;
    cudaError_t e = capture_allows_unsafe_call("cudaMalloc");
    if (e == cudaSuccess)
        e = p ? device_malloc(p, bytes) : cudaErrorInvalidValue;
    return set_last(e);
}

cudaError_t CUDARTAPI cudaFree(void *p)
{
    LOCKED;
    RETURN_IF_STICKY;
    cudaError_t e = capture_allows_unsafe_call("cudaFree");
    if (e != cudaSuccess || !p)
        return set_last(e);
    drain_all();
    RETURN_IF_STICKY;
    e = device_free(p);
    if (e != cudaSuccess)
        say("cudaFree(%p): not an allocation from cudaMalloc", p);
    return set_last(e);
}

cudaError_t CUDARTAPI cudaHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    LOCKED;
    RETURN_IF_STICKY;
    cudaError_t e = capture_allows_unsafe_call("cudaHostAlloc");
    if (e != cudaSuccess)
        return set_last(e);
    if (!p || (flags & ~(cudaHostAllocPortable | cudaHostAllocMapped |
                         cudaHostAllocWriteCombined)))
        return set_last(cudaErrorInvalidValue);
    *p = pinned_alloc(bytes);
    return *p ? cudaSuccess : set_last(cudaErrorMemoryAllocation);
}

cudaError_t CUDARTAPI cudaMallocHost(void **p, size_t bytes)
{
    return cudaHostAlloc(p, bytes, cudaHostAllocDefault);
}

cudaError_t CUDARTAPI cudaFreeHost(void *p)
{
    LOCKED;
    cudaError_t e = capture_allows_unsafe_call("cudaFreeHost");
    if (e != cudaSuccess)
        return set_last(e);
    if (!p)
        return sticky_error != cudaSuccess ? set_last(sticky_error) : cudaSuccess;
    drain_all(); /* implicit synchronization: queued copies from it run first */
    if (!pinned_free(p)) {
        say("cudaFreeHost(%p): not pinned memory from cudaMallocHost/cudaHostAlloc", p);
        return set_last(cudaErrorInvalidValue);
    }
    return sticky_error != cudaSuccess ? set_last(sticky_error) : cudaSuccess;
}

cudaError_t CUDARTAPI cudaHostGetDevicePointer(void **dev, void *host, unsigned int flags)
{
    if (!dev || !is_pinned_range(host, 0))
        return set_last(cudaErrorInvalidValue);
    *dev = host; /* unified addressing */
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaPointerGetAttributes(struct cudaPointerAttributes *attr,
                                               const void *p)
{
    if (!attr)
        return set_last(cudaErrorInvalidValue);
    memset(attr, 0, sizeof *attr);
    switch (classify(p, NULL, NULL)) {
    case MEM_DEVICE:
        attr->type = cudaMemoryTypeDevice;
        attr->devicePointer = (void *)p;
        break;
    case MEM_PINNED:
        attr->type = cudaMemoryTypeHost;
        attr->hostPointer = attr->devicePointer = (void *)p;
        break;
    default: attr->type = cudaMemoryTypeUnregistered; attr->device = -2; return cudaSuccess;
    }
    attr->device = 0;
    return cudaSuccess;
}

/* Where the two sides of a copy must be, checked at the call (cudaErrorInvalidValue). */
static cudaError_t check_copy(const char *call, void *dst, const void *src, size_t bytes,
                              enum cudaMemcpyKind *kind)
{
    bool dst_dev = is_device_range(dst, bytes), src_dev = is_device_range(src, bytes);
    if (*kind == cudaMemcpyDefault) {
        bool d = classify(dst, NULL, NULL) == MEM_DEVICE;
        bool s = classify(src, NULL, NULL) == MEM_DEVICE;
        *kind = d ? (s ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                  : (s ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    }
    bool want_dst_dev, want_src_dev;
    switch (*kind) {
    case cudaMemcpyHostToDevice: want_dst_dev = true, want_src_dev = false; break;
    case cudaMemcpyDeviceToHost: want_dst_dev = false, want_src_dev = true; break;
    case cudaMemcpyDeviceToDevice: want_dst_dev = want_src_dev = true; break;
    case cudaMemcpyHostToHost: want_dst_dev = want_src_dev = false; break;
    default:
        say("%s: copy kind %d", call, (int)*kind);
        return cudaErrorInvalidMemcpyDirection;
    }
    static const char *kinds[] = {"H2H", "H2D", "D2H", "D2D"};
    const char *k = kinds[*kind];
    if (want_dst_dev && !dst_dev) {
        say("%s(%s, %zu bytes): dst %p is not device memory, or the copy runs past the end of "
            "its allocation", call, k, bytes, dst);
        return cudaErrorInvalidValue;
    }
    if (want_src_dev && !src_dev) {
        say("%s(%s, %zu bytes): src %p is not device memory, or the copy runs past the end of "
            "its allocation", call, k, bytes, src);
        return cudaErrorInvalidValue;
    }
    if (!want_dst_dev && classify(dst, NULL, NULL) == MEM_DEVICE) {
        say("%s(%s, %zu bytes): dst %p is device memory, not host memory", call, k, bytes, dst);
        return cudaErrorInvalidValue;
    }
    if (!want_src_dev && classify(src, NULL, NULL) == MEM_DEVICE) {
        say("%s(%s, %zu bytes): src %p is device memory, not host memory", call, k, bytes, src);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

static op copy_op(void *dst, const void *src, size_t bytes, const char *what)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s (%zu bytes, %p -> %p)", what, bytes, src, dst);
    return op{[dst, src, bytes]() {
                  memcpy(dst, src, bytes);
                  return cudaSuccess;
              },
              buf};
}

cudaError_t CUDARTAPI cudaMemcpy(void *dst, const void *src, size_t bytes,
                                 enum cudaMemcpyKind kind)
{
    LOCKED;
    RETURN_IF_STICKY;
    cudaError_t e = capture_allows_unsafe_call("cudaMemcpy");
    if (e == cudaSuccess && bytes)
        e = check_copy("cudaMemcpy", dst, src, bytes, &kind);
    if (e != cudaSuccess || !bytes)
        return set_last(e);
    drain_for_legacy();
    RETURN_IF_STICKY;
    e = run_device_work(copy_op(dst, src, bytes, "cudaMemcpy"));
    if (e != cudaSuccess)
        make_sticky(e);
    return set_last(e);
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void *dst, const void *src, size_t bytes,
                                      enum cudaMemcpyKind kind, cudaStream_t handle)
{
    LOCKED;
    RETURN_IF_STICKY;
    CUstream_st *s;
    cudaError_t e = stream_of(handle, &s);
    if (e == cudaSuccess && bytes)
        e = check_copy("cudaMemcpyAsync", dst, src, bytes, &kind);
    if (e != cudaSuccess || !bytes)
        return set_last(e);
    bool src_pageable = classify(src, NULL, NULL) == MEM_PAGEABLE;
    bool dst_pageable = classify(dst, NULL, NULL) == MEM_PAGEABLE;
    if ((src_pageable || dst_pageable) && s->capturing) {
        invalidate_capture(s, "a copy with pageable host memory");
        say("cudaMemcpyAsync with pageable host memory during capture");
        return set_last(cudaErrorStreamCaptureUnsupported);
    }
    if (dst_pageable) {
        /* to pageable memory: the call returns when the copy is done */
        drain_stream(s);
        RETURN_IF_STICKY;
        e = run_device_work(copy_op(dst, src, bytes, "cudaMemcpyAsync to pageable memory"));
        if (e != cudaSuccess)
            make_sticky(e);
        return set_last(e);
    }
    if (src_pageable) {
        /* from pageable memory: staged now, delivered when the stream gets there */
        auto staged = std::make_shared<std::vector<char>>((const char *)src,
                                                          (const char *)src + bytes);
        char buf[160];
        snprintf(buf, sizeof buf, "cudaMemcpyAsync from pageable memory (%zu bytes -> %p)",
                 bytes, dst);
        return set_last(submit_deps(s, op{[dst, staged]() {
                                               memcpy(dst, staged->data(), staged->size());
                                               return cudaSuccess;
                                           },
                                           buf},
                                    {}));
    }
    return set_last(submit_deps(s, copy_op(dst, src, bytes, "cudaMemcpyAsync"), {}));
}

static op memset_op(void *dst, int value, size_t bytes, const char *what)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s (%zu bytes at %p)", what, bytes, dst);
    return op{[dst, value, bytes]() {
                  memset(dst, value, bytes);
                  return cudaSuccess;
              },
              buf};
}

cudaError_t CUDARTAPI cudaMemset(void *dst, int value, size_t bytes)
{
    LOCKED;
    RETURN_IF_STICKY;
    cudaError_t e = capture_allows_unsafe_call("cudaMemset");
    if (e == cudaSuccess && !is_device_range(dst, bytes)) {
        say("cudaMemset(%p, %zu bytes): not device memory", dst, bytes);
        e = cudaErrorInvalidValue;
    }
    if (e != cudaSuccess || !bytes)
        return set_last(e);
    drain_for_legacy();
    RETURN_IF_STICKY;
    e = run_device_work(memset_op(dst, value, bytes, "cudaMemset"));
    if (e != cudaSuccess)
        make_sticky(e);
    return set_last(e);
}

cudaError_t CUDARTAPI cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream)
{
    if (!is_device_range(dst, bytes)) {
        say("cudaMemsetAsync(%p, %zu bytes): not device memory", dst, bytes);
        return set_last(cudaErrorInvalidValue);
    }
    if (!bytes)
        return cudaSuccess;
    return set_last(submit(stream, memset_op(dst, value, bytes, "cudaMemsetAsync")));
}

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
    if (mode != cudaStreamCaptureModeRelaxed)
        my_strict_captures++;
    if (mode == cudaStreamCaptureModeGlobal)
        global_captures++;
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
    if (s->mode != cudaStreamCaptureModeRelaxed)
        my_strict_captures--;
    if (s->mode == cudaStreamCaptureModeGlobal)
        global_captures--;
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
