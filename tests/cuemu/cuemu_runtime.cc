/* cuemu_runtime.cc — cuemu's CUDA runtime: streams, events, kernels and device work (CPU
 * emulation of CUDA for tests: checks index arithmetic, barriers and host orchestration; not
 * the hardware, not speed). The functions have the prototypes of CUDA's cuda_runtime_api.h;
 * the emulated programs link this (with cuemu_copy.cc, cuemu_graph.cc and cuemu_devices.cc)
 * instead of libcudart.
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
#include "cuemu_stream.h"

#include <atomic>
#include <set>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

namespace cuemu {

std::recursive_mutex lock;
cudaError_t sticky_error = cudaSuccess;
static thread_local cudaError_t last_error = cudaSuccess;
static CUstream_st legacy_stream = {0, true, false, {}, 0, 0, false, false,
                                    cudaStreamCaptureModeGlobal, {}, NULL};
static std::set<CUstream_st *> streams;   /* live, created by the program */
static std::set<CUstream_st *> graveyard; /* destroyed: kept so stale events stay harmless */
static std::set<CUevent_st *> events;
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

void drop_all_work(void)
{
    auto drop = [](CUstream_st *s) {
        s->q.clear();
        s->completed = s->submitted;
    };
    drop(&legacy_stream);
    for (CUstream_st *s : streams)
        drop(s);
}

void make_sticky(cudaError_t e)
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
cudaError_t stream_of(cudaStream_t handle, CUstream_st **out)
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

void invalidate_capture(CUstream_st *s, const char *why)
{
    if (s->capturing && !s->invalidated) {
        say("the capture on stream %p is invalidated: %s", (void *)s, why);
        s->invalidated = true;
    }
}

/* Run s's operations up to sequence number `upto` (inclusive). Caller holds the lock. */
void drain(CUstream_st *s, uint64_t upto)
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

void drain_stream(CUstream_st *s)
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
void drain_for_legacy(void)
{
    drain_stream(&legacy_stream);
    for (CUstream_st *s : streams)
        if (!(s->flags & cudaStreamNonBlocking))
            drain_stream(s);
}

cudaError_t submit_deps(CUstream_st *s, op o,
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

void count_capture(cudaStreamCaptureMode mode, int delta)
{
    if (mode != cudaStreamCaptureModeRelaxed)
        my_strict_captures += delta;
    if (mode == cudaStreamCaptureModeGlobal)
        global_captures += delta;
}

void forget_captures(void)
{
    my_strict_captures = 0;
    global_captures = 0;
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
cudaError_t sync_allowed(CUstream_st *s, const char *call)
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

/* ------------------------------------------------------------------------------------------
 * Last error, device-wide synchronization
 */
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
    forget_captures();
    sticky_error = cudaSuccess;
    last_error = cudaSuccess;
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
