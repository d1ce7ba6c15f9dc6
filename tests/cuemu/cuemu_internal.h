/* cuemu_internal.h — what the emulator's files share (CPU emulation of CUDA for tests: checks
 * index arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 *   cuemu_sched.cc    coroutines, the block scheduler, barriers and warp collectives
 *   cuemu_runtime.cc  cudart: streams, events, kernels, device work and its faults
 *   cuemu_copy.cc     cudart: cudaMalloc/cudaMallocHost and friends, copies, memsets
 *   cuemu_graph.cc    cudart: stream capture and graphs
 *   cuemu_devices.cc  cudart: the one device's properties, error names
 *   cuemu_memory.cc   the device memory map, pinned memory, the driver's VMM calls
 *   cuemu_cublas.cc   cuBLAS (the GemmEx the backend uses), through cublas_dl's seam
 * (cuemu_stream.h: the stream internals the cudart files share)
 *
 * One recursive lock (cuemu::lock) guards all of it; device work (the queued operations) runs
 * on whichever host thread synchronizes, holding the lock, one operation at a time.
 */
#ifndef NX_CUEMU_INTERNAL_H
#define NX_CUEMU_INTERNAL_H

#include <cuda_runtime_api.h>

#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cuemu {

extern std::recursive_mutex lock;

/* One queued operation. run() does the work (device memory is accessible meanwhile) and
 * returns cudaSuccess or the error to make sticky, after printing what went wrong. */
struct op {
    std::function<cudaError_t()> run;
    std::string what; /* for diagnostics: "kernel rmsnorm_kernel <<<...>>>" */
};

/* Queue `o` on `stream` (NULL: the legacy default stream) or record it into the graph the stream
 * captures. Returns the error for the call (sticky error, bad stream, capture rules). */
cudaError_t submit(cudaStream_t stream, op o);

/* The error every call returns once device work has failed (cudaSuccess when none). */
cudaError_t sticky(void);
/* Record `e` as the calling thread's last error and return it (cudaSuccess passes through). */
cudaError_t set_last(cudaError_t e);
/* Print "cuemu: <message>" on stderr (one line). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The one-line notice that this is an emulation, once per process. */
void notice(void);
/* Whether the calling thread may make a "potentially unsafe" call (cudaMalloc, a synchronous
 * copy...) with respect to stream capture: cudaSuccess, or the error (the capture that forbids it
 * is invalidated, as CUDA does). */
cudaError_t capture_allows_unsafe_call(const char *call);

/* Runs `o` now as device work: device memory accessible, faults caught and reported as an
 * illegal address. Returns the op's result. Caller holds the lock. */
cudaError_t run_device_work(const op &o);

/* The grid runner (cuemu_sched.cc): runs every block of the grid; the error and its message
 * (already printed) when a detector fired or the kernel faulted. */
struct grid_desc {
    const char *name;
    dim3 grid, block;
    std::function<void()> thread;
    std::vector<std::pair<int, const void *>> pointer_args;
};
cudaError_t run_grid(const grid_desc &g);
/* Whether NX_CUEMU_INJECT=kernel:N says this kernel run fails. */
bool inject_kernel_failure(void);
/* Called from the fault handler while a kernel runs: where it happened, for the message. */
std::string where_in_kernel(void);
/* The block scheduler's view of a fault on one of its stacks' guard pages. */
bool is_stack_guard(const void *addr);
/* Forget the kernel in progress (after a fault unwound it). */
void abandon_grid(void);

/* ------------------------------------------------------------------------------------------
 * Memory map (cuemu_memory.cc)
 */
enum mem_kind { MEM_PAGEABLE = 0, MEM_DEVICE = 1, MEM_PINNED = 2 };
/* What `p` points into. For device memory, *lo_out and *hi_out (when given) are the accessible
 * contiguous extent around p (adjacent VMM mappings join); for pinned memory, the allocation. */
mem_kind classify(const void *p, uintptr_t *lo_out, uintptr_t *hi_out);
/* Whether [p, p+bytes) lies entirely in device memory (bytes 0: p in or one past the end). */
bool is_device_range(const void *p, size_t bytes);
/* Whether [p, p+bytes) lies entirely in one pinned allocation. */
bool is_pinned_range(const void *p, size_t bytes);
/* Make device memory accessible to the host thread doing device work (true) or not (false). */
void device_memory_access(bool on);
/* Whether `addr` is device memory that exists but is inaccessible right now, for the message. */
bool is_device_address(const void *addr);
/* Where a faulting address lies relative to device memory, for the message. */
std::string describe_address(const void *addr);
/* Bytes allocated on the emulated device, and its capacity (NX_CUEMU_VRAM_MB). */
size_t device_bytes_used(void);
size_t device_bytes_total(void);
/* Pinned host memory (cudaMallocHost, cudaHostAlloc). */
void *pinned_alloc(size_t bytes);
bool pinned_free(void *p);
/* The driver entry points (cudaGetDriverEntryPointByVersion). */
void *driver_symbol(const char *symbol, unsigned version, int *status_out);
/* cudaMalloc / cudaFree on the emulated device. */
cudaError_t device_malloc(void **p, size_t bytes);
cudaError_t device_free(void *p);
/* Drain every stream (cudaFree and cudaFreeHost synchronize). */
cudaError_t drain_all(void);

} /* namespace cuemu */

#endif
