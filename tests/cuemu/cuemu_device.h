/* cuemu_device.h — the device side of cuemu, a CPU emulation of the CUDA subset this project
 * uses. CPU EMULATION: it checks index arithmetic, barriers and host orchestration; it is not
 * the hardware and says nothing about speed. It is a test harness for CUDA code that cannot
 * run on a machine without a GPU (`make emu-test`), never a replacement for the GPU suite.
 *
 * The project's .cu files are compiled by the C++ compiler with -DNX_CUEMU; cuda_launch.h then
 * includes this header instead of CUDA's and turns NX_LAUNCH into cuemu::launch. A launch is
 * queued on its stream like on a GPU (it runs when something synchronizes the stream, or is
 * recorded into a graph while the stream captures). When it runs, the blocks of the grid run
 * one after another on the synchronizing host thread; every CUDA thread of a block is a
 * coroutine with its own stack, and the threads of a block interleave only at barriers
 * (__syncthreads, __syncwarp and the warp collectives: shuffles, votes). Between barriers a
 * thread runs alone; the order in which the threads of a block take their turns alternates
 * between forward and reverse from block to block (NX_CUEMU_ORDER=forward|reverse|mixed), so a
 * missing barrier shows up as a wrong result in one of the two orders.
 *
 * What it reports as a kernel error (printed with the kernel, block and thread, then a sticky
 * cudaErrorLaunchFailure or cudaErrorIllegalAddress from the next runtime call, as on a GPU):
 *  - a warp collective (__shfl*_sync, __ballot_sync, __any/__all_sync, __syncwarp) whose mask
 *    names a lane that has exited, that waits at __syncthreads, that is at another kind of warp
 *    operation or passed another mask, or that does not exist (a partial last warp);
 *  - threads of a block waiting at different __syncthreads (file and line differ), and any
 *    other state in which the waiting threads can never be released (a deadlock). Exited
 *    threads do not hold a __syncthreads back (sm_70 and later behave so), so a block whose
 *    threads leave early and uniformly is fine;
 *  - a kernel pointer argument that is neither NULL nor device memory nor pinned host memory;
 *  - a memory fault while the kernel runs (device memory is only accessible while emulated
 *    device work runs, and every device range has guard pages around it), or a stack overflow;
 *  - a misaligned vector access (a float4 or uint4 at an address 16 does not divide): the .cu
 *    files are built with -fsanitize=alignment trapping, reported as cudaErrorMisalignedAddress.
 * A bad launch configuration (block over 1024 threads or its dims over 1024 x 1024 x 64, grid
 * over 2^31-1 x 65535 x 65535, a zero dim, dynamic shared memory over 48 KiB) is not queued:
 * cudaGetLastError returns cudaErrorInvalidConfiguration.
 *
 * Shared memory: __shared__ variables are function statics placed in one linker section, which
 * is filled with 0xff bytes (NaN as float) before every block, so a block reading what it never
 * wrote sees garbage, not the previous block's values or zeros. Dynamic shared memory
 * (extern __shared__) is not supported.
 *
 * Not modelled: timing, occupancy, registers, __launch_bounds__ limits, memory coalescing or
 * bank conflicts, data races between threads within one barrier interval (except as far as
 * the alternating order exposes them), global-memory ordering between blocks (blocks never run
 * concurrently), the exact results of fast-math intrinsics (__expf is expf), and warp-
 * synchronous code that relies on lock-step execution without __syncwarp.
 */
#ifndef NX_CUEMU_DEVICE_H
#define NX_CUEMU_DEVICE_H

#ifndef __cplusplus
#error "cuemu_device.h is for the C++ compiler (the .cu files under -DNX_CUEMU)"
#endif

#include <cuda_runtime_api.h>
#include <vector_types.h>
#include <vector_functions.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

/* ------------------------------------------------------------------------------------------
 * Qualifiers. CUDA's host_defines.h leaves most of them empty for a host compiler; __shared__
 * becomes a function static in the section that is refilled before every block.
 */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("cuemu_shared"), aligned(16)))

/* ------------------------------------------------------------------------------------------
 * Built-in variables: set by the scheduler before it resumes each thread.
 */
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

namespace cuemu {

/* What a thread waits for at a warp collective (see cuemu_sched.cc). */
enum warp_kind {
    WARP_SYNC,      /* __syncwarp */
    WARP_SHFL,      /* __shfl_sync: arg is the source lane */
    WARP_SHFL_XOR,  /* arg is the lane mask */
    WARP_SHFL_UP,   /* arg is delta */
    WARP_SHFL_DOWN, /* arg is delta */
    WARP_BALLOT,    /* value != 0 is the predicate */
    WARP_ANY,
    WARP_ALL,
};
/* What a thread waits for at a block barrier. */
enum block_kind { BLOCK_SYNC, BLOCK_COUNT, BLOCK_AND, BLOCK_OR };

/* Called by a thread of the running block: wait until the collective completes; its result. */
uint64_t warp_op(int kind, unsigned mask, uint64_t value, int arg, int width, const char *file,
                 int line);
int block_barrier(int kind, int pred, const char *file, int line);
/* A kernel error found by device code itself (an invalid argument to a primitive). */
[[noreturn]] void device_fail(const char *file, int line, const char *what);

template <typename T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "a warp collective carries at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    return bits;
}

template <typename T> inline T from_bits(uint64_t bits)
{
    T v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

} /* namespace cuemu */

/* ------------------------------------------------------------------------------------------
 * Barriers and warp collectives. The file/line defaults name the call site in diagnostics and
 * tell one __syncthreads from another.
 */
inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    cuemu::block_barrier(cuemu::BLOCK_SYNC, 0, file, line);
}
inline int __syncthreads_count(int pred, const char *file = __builtin_FILE(),
                               int line = __builtin_LINE())
{
    return cuemu::block_barrier(cuemu::BLOCK_COUNT, pred != 0, file, line);
}
inline int __syncthreads_and(int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE())
{
    return cuemu::block_barrier(cuemu::BLOCK_AND, pred != 0, file, line);
}
inline int __syncthreads_or(int pred, const char *file = __builtin_FILE(),
                            int line = __builtin_LINE())
{
    return cuemu::block_barrier(cuemu::BLOCK_OR, pred != 0, file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(),
                       int line = __builtin_LINE())
{
    cuemu::warp_op(cuemu::WARP_SYNC, mask, 0, 0, 32, file, line);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return cuemu::from_bits<T>(
        cuemu::warp_op(cuemu::WARP_SHFL, mask, cuemu::to_bits(var), src_lane, width, file, line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WARP_SHFL_XOR, mask, cuemu::to_bits(var),
                                              lane_mask, width, file, line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WARP_SHFL_UP, mask, cuemu::to_bits(var),
                                              (int)delta, width, file, line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WARP_SHFL_DOWN, mask, cuemu::to_bits(var),
                                              (int)delta, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE())
{
    return (unsigned)cuemu::warp_op(cuemu::WARP_BALLOT, mask, pred != 0, 0, 32, file, line);
}
inline int __any_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                      int line = __builtin_LINE())
{
    return (int)cuemu::warp_op(cuemu::WARP_ANY, mask, pred != 0, 0, 32, file, line);
}
inline int __all_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                      int line = __builtin_LINE())
{
    return (int)cuemu::warp_op(cuemu::WARP_ALL, mask, pred != 0, 0, 32, file, line);
}

/* Memory fences: blocks never run concurrently and threads switch only at barriers. */
inline void __threadfence(void) {}
inline void __threadfence_block(void) {}
inline void __threadfence_system(void) {}

/* ------------------------------------------------------------------------------------------
 * Atomics: only one emulated thread runs at a time, so a plain read-modify-write is atomic.
 */
#define CUEMU_ATOMIC_RMW(name, type, expr)                                                    \
    inline type name(type *address, type val)                                                 \
    {                                                                                         \
        type old = *address;                                                                  \
        *address = (expr);                                                                    \
        return old;                                                                           \
    }
CUEMU_ATOMIC_RMW(atomicAdd, int, old + val)
CUEMU_ATOMIC_RMW(atomicAdd, unsigned int, old + val)
CUEMU_ATOMIC_RMW(atomicAdd, unsigned long long, old + val)
CUEMU_ATOMIC_RMW(atomicAdd, float, old + val)
CUEMU_ATOMIC_RMW(atomicAdd, double, old + val)
CUEMU_ATOMIC_RMW(atomicSub, int, old - val)
CUEMU_ATOMIC_RMW(atomicSub, unsigned int, old - val)
CUEMU_ATOMIC_RMW(atomicExch, int, val)
CUEMU_ATOMIC_RMW(atomicExch, unsigned int, val)
CUEMU_ATOMIC_RMW(atomicExch, unsigned long long, val)
CUEMU_ATOMIC_RMW(atomicExch, float, val)
CUEMU_ATOMIC_RMW(atomicMax, int, old > val ? old : val)
CUEMU_ATOMIC_RMW(atomicMax, unsigned int, old > val ? old : val)
CUEMU_ATOMIC_RMW(atomicMax, long long, old > val ? old : val)
CUEMU_ATOMIC_RMW(atomicMax, unsigned long long, old > val ? old : val)
CUEMU_ATOMIC_RMW(atomicMin, int, old < val ? old : val)
CUEMU_ATOMIC_RMW(atomicMin, unsigned int, old < val ? old : val)
CUEMU_ATOMIC_RMW(atomicMin, long long, old < val ? old : val)
CUEMU_ATOMIC_RMW(atomicMin, unsigned long long, old < val ? old : val)
CUEMU_ATOMIC_RMW(atomicAnd, int, old & val)
CUEMU_ATOMIC_RMW(atomicAnd, unsigned int, old & val)
CUEMU_ATOMIC_RMW(atomicOr, int, old | val)
CUEMU_ATOMIC_RMW(atomicOr, unsigned int, old | val)
CUEMU_ATOMIC_RMW(atomicXor, int, old ^ val)
CUEMU_ATOMIC_RMW(atomicXor, unsigned int, old ^ val)
CUEMU_ATOMIC_RMW(atomicInc, unsigned int, old >= val ? 0u : old + 1u)
CUEMU_ATOMIC_RMW(atomicDec, unsigned int, (old == 0u || old > val) ? val : old - 1u)
#undef CUEMU_ATOMIC_RMW

#define CUEMU_ATOMIC_CAS(type)                                                                \
    inline type atomicCAS(type *address, type compare, type val)                              \
    {                                                                                         \
        type old = *address;                                                                  \
        if (old == compare)                                                                   \
            *address = val;                                                                   \
        return old;                                                                           \
    }
CUEMU_ATOMIC_CAS(int)
CUEMU_ATOMIC_CAS(unsigned int)
CUEMU_ATOMIC_CAS(unsigned long long)
CUEMU_ATOMIC_CAS(unsigned short)
#undef CUEMU_ATOMIC_CAS

/* ------------------------------------------------------------------------------------------
 * Loads with cache hints are plain loads.
 */
template <typename T> inline T __ldg(const T *p) { return *p; }
template <typename T> inline T __ldcs(const T *p) { return *p; }
template <typename T> inline T __ldca(const T *p) { return *p; }
template <typename T> inline T __ldcg(const T *p) { return *p; }
template <typename T> inline T __ldlu(const T *p) { return *p; }
template <typename T> inline T __ldcv(const T *p) { return *p; }
template <typename T> inline void __stcs(T *p, T v) { *p = v; }
template <typename T> inline void __stcg(T *p, T v) { *p = v; }
template <typename T> inline void __stwb(T *p, T v) { *p = v; }
template <typename T> inline void __stwt(T *p, T v) { *p = v; }

/* ------------------------------------------------------------------------------------------
 * Bit casts and math. The fast intrinsics are the precise functions (results may differ from
 * the GPU's in the last bits, never more than CUDA documents).
 */
inline float __uint_as_float(unsigned int u) { return cuemu::from_bits<float>(u); }
inline unsigned int __float_as_uint(float f) { return (unsigned int)cuemu::to_bits(f); }
inline float __int_as_float(int i) { return cuemu::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)cuemu::to_bits(f); }
inline double __longlong_as_double(long long i) { return cuemu::from_bits<double>((uint64_t)i); }
inline long long __double_as_longlong(double d) { return (long long)cuemu::to_bits(d); }

inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : x > 1.f ? 1.f : x; }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; i++)
        r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

/* CUDA's min/max overloads for device code. */
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

inline long long clock64(void)
{
    static long long ticks;
    return ++ticks;
}
inline void __nanosleep(unsigned ns) { (void)ns; }

/* ------------------------------------------------------------------------------------------
 * Launch: NX_LAUNCH(grid, block, smem, stream, kernel)(args...) is
 * cuemu::launch("kernel", kernel, grid, block, smem, stream)(args...). The arguments are
 * converted to the kernel's parameter types and copied at the launch (a graph keeps the copies
 * it captured, as CUDA does).
 */
namespace cuemu {

/* Validate the configuration (cudaErrorInvalidConfiguration into cudaGetLastError when bad),
 * then queue the grid on `stream` or record it into the graph the stream captures. `thread`
 * runs one CUDA thread; `pointer_args` are the kernel's pointer arguments (index, value),
 * checked when the grid runs. */
void submit_kernel(const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   std::function<void()> thread,
                   std::vector<std::pair<int, const void *>> pointer_args);

template <typename T>
inline void note_pointer(std::vector<std::pair<int, const void *>> &out, int index, const T &v)
{
    if constexpr (std::is_pointer<T>::value)
        out.emplace_back(index, (const void *)v);
}

template <typename... P> struct launcher {
    const char *name;
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;

    template <size_t... I>
    void note_all(std::vector<std::pair<int, const void *>> &out,
                  const std::tuple<P...> &args, std::index_sequence<I...>) const
    {
        (note_pointer(out, (int)I, std::get<I>(args)), ...);
    }

    void operator()(P... args) const
    {
        std::tuple<P...> copied(args...);
        std::vector<std::pair<int, const void *>> pointers;
        note_all(pointers, copied, std::index_sequence_for<P...>{});
        auto fn = kernel;
        submit_kernel(name, grid, block, smem, stream,
                      [fn, copied]() { std::apply(fn, copied); }, std::move(pointers));
    }
};

template <typename... P>
inline launcher<P...> launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                             size_t smem, cudaStream_t stream)
{
    return launcher<P...>{name, kernel, grid, block, smem, stream};
}

} /* namespace cuemu */

#endif
