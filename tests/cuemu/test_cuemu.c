/* test_cuemu.c — the self-test of cuemu, the CPU emulation of CUDA that `make emu-test` runs
 * the CUDA backend on (it checks index arithmetic, barriers and host orchestration; not the
 * hardware, not speed). Built only in the emulated build.
 *
 * One kernel uses every emulated primitive and its results are checked exactly; then each
 * detector is shown to fire on a kernel or a call broken in that one way (so the detectors are
 * not checks that cannot fail): a full-mask shuffle with an exited lane, threads at different
 * __syncthreads, a shuffle against a __syncthreads (deadlock), a shuffle naming lanes a partial
 * warp lacks, oversized launch configurations, a synchronizing call during graph capture,
 * copies with swapped or overrunning pointers, a host pointer given to a kernel, a read past
 * the end of an allocation, a misaligned float4 load, and the host touching device memory.
 * Also: the deferred stream semantics, graph replay of captured arguments, shared memory
 * refilled per block, the VMM aliasing of one physical chunk in two ranges, and the emulated
 * cuBLAS GEMM against a loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cublas_dl.h"
#include "selftest_kernels.h"

/* ------------------------------------------------------------------------------------------
 * Helpers
 */
static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    assert_int_equal(cudaMalloc(&p, bytes), cudaSuccess);
    return p;
}

static void to_dev(void *dst, const void *src, size_t bytes)
{
    assert_int_equal(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
}

static void to_host(void *dst, const void *src, size_t bytes)
{
    assert_int_equal(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

/* stderr into a file while a detector speaks, so its message can be checked. */
static int saved_stderr = -1;
static char stderr_path[64];

static void capture_stderr(void)
{
    snprintf(stderr_path, sizeof stderr_path, "/tmp/test_cuemu_XXXXXX");
    int fd = mkstemp(stderr_path);
    assert_true(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* The captured text (static buffer), stderr restored and echoed, marked as expected. */
static const char *captured_stderr(void)
{
    static char text[8192];
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(stderr_path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(stderr_path);
    fprintf(stderr, "(expected, from a deliberately broken kernel or call:)\n%s", text);
    return text;
}

/* Run a broken kernel; its launch is accepted, the synchronization reports `want`, every later
 * call returns it too (sticky), and stderr names the kernel and says `says`. Resets after. */
static void expect_kernel_error(int which, const char *kernel, const char *says,
                                cudaError_t want)
{
    int *out = dev_alloc(64 * sizeof(int));
    capture_stderr();
    int launch = st_launch_broken(which, out);
    cudaError_t sync = cudaDeviceSynchronize();
    cudaError_t later = cudaMemcpy(out, out, 4, cudaMemcpyDeviceToDevice);
    const char *text = captured_stderr();
    assert_int_equal(launch, cudaSuccess);
    assert_int_equal(sync, want);
    assert_int_equal(later, want);
    assert_non_null(strstr(text, kernel));
    assert_non_null(strstr(text, says));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaFree(out), cudaSuccess);
}

/* ------------------------------------------------------------------------------------------
 * The emulated device and its primitives
 */
static void test_device(void **state)
{
    int count = 0;
    assert_int_equal(cudaGetDeviceCount(&count), cudaSuccess);
    assert_int_equal(count, 1);
    struct cudaDeviceProp prop;
    assert_int_equal(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
    assert_string_equal(prop.name, "cuemu (CPU emulation)");
    assert_int_equal(prop.major, 9);
    assert_int_equal(prop.minor, 0);
    assert_int_equal(cudaSetDevice(1), cudaErrorInvalidDevice);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidDevice);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
}

static void test_primitives(void **state)
{
    enum { N = 2 * 64 };
    int in[64], counters[8] = {0, 0, 1 << 30, 0, 0, 0, 0, 0};
    float fcounters[1] = {0};
    for (int i = 0; i < 64; i++)
        in[i] = i * 3;
    int *d_in = dev_alloc(sizeof in), *d_out = dev_alloc(N * ST_SLOTS * sizeof(int));
    float *d_fout = dev_alloc(N * ST_SLOTS * sizeof(float));
    int *d_counters = dev_alloc(sizeof counters);
    float *d_fcounters = dev_alloc(sizeof fcounters);
    to_dev(d_in, in, sizeof in);
    to_dev(d_counters, counters, sizeof counters);
    to_dev(d_fcounters, fcounters, sizeof fcounters);
    assert_int_equal(st_primitives(d_in, d_out, d_fout, d_counters, d_fcounters), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);

    static int out[N * ST_SLOTS];
    static float fout[N * ST_SLOTS];
    to_host(out, d_out, sizeof out);
    to_host(fout, d_fout, sizeof fout);
    to_host(counters, d_counters, sizeof counters);
    to_host(fcounters, d_fcounters, sizeof fcounters);
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3)
        ballot |= 1u << l;
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 64; t++) {
            const int *o = out + (b * 64 + t) * ST_SLOTS;
            const float *fo = fout + (b * 64 + t) * ST_SLOTS;
            int lane = t & 31;
            assert_int_equal(o[0], 30 + b);
            assert_int_equal(o[1], lane ^ 1);
            assert_int_equal(o[2], lane >= 2 ? lane - 2 : lane);
            assert_int_equal(o[3], lane + 4 < 32 ? lane + 4 : lane);
            assert_int_equal(o[4], lane);
            assert_int_equal(o[5], lane % 8 + 4 < 8 ? lane + 4 : lane);
            assert_int_equal((unsigned)o[6], ballot);
            assert_int_equal(o[7], 1);
            assert_int_equal(o[8], 0);
            assert_int_equal(o[9], (63 - t) * 2);
            assert_int_equal(o[10], 10);
            assert_int_equal(o[11], 1);
            assert_int_equal(o[12], 1);
            assert_int_equal(o[13], t * 3 + (63 - t) * 3);
            assert_int_equal((unsigned)o[14], 0x3f800000u);
            assert_int_equal((unsigned)o[15], 0x40400000u); /* 3.0f */
            assert_true(fo[0] == 496.f);
            assert_true(fo[1] == 3.5f);
            assert_true(fo[2] == 0.5f);
            assert_true(fo[3] == 1.f);
            assert_true(fo[4] == 0.25f);
            assert_true(fo[5] == 0.f);
        }
    assert_int_equal(counters[0], N);
    assert_int_equal(counters[1], 163);
    assert_int_equal(counters[2], 0);
    assert_true(counters[3] >= 1 && counters[3] <= 64);
    assert_int_equal(counters[4], 1);
    assert_int_equal(counters[5], 7);
    assert_int_equal(counters[6], 2 * N);
    assert_true(fcounters[0] == 0.5f * N);
    void *bufs[] = {d_in, d_out, d_fout, d_counters, d_fcounters};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        assert_int_equal(cudaFree(bufs[i]), cudaSuccess);
}

static void test_coords(void **state)
{
    enum {
        PER_BLOCK = ST_COORDS_BX * ST_COORDS_BY * ST_COORDS_BZ,
        N = ST_COORDS_GX * ST_COORDS_GY * PER_BLOCK
    };
    int *d = dev_alloc(N * sizeof(int));
    static int out[N];
    assert_int_equal(st_coords(d), cudaSuccess);
    to_host(out, d, sizeof out);
    for (int by = 0; by < ST_COORDS_GY; by++)
        for (int bx = 0; bx < ST_COORDS_GX; bx++)
            for (int z = 0; z < ST_COORDS_BZ; z++)
                for (int y = 0; y < ST_COORDS_BY; y++)
                    for (int x = 0; x < ST_COORDS_BX; x++) {
                        int block = bx + ST_COORDS_GX * by;
                        int t = x + ST_COORDS_BX * (y + ST_COORDS_BY * z);
                        assert_int_equal(out[block * PER_BLOCK + t],
                                         x | y << 4 | z << 8 | bx << 12 | by << 16);
                    }
    assert_int_equal(cudaFree(d), cudaSuccess);
}

/* Shared memory is garbage (0xff bytes) at the start of every block, not the last block's. */
static void test_shared_memory_refilled_per_block(void **state)
{
    unsigned *d = dev_alloc(3 * sizeof(unsigned)), out[3];
    assert_int_equal(st_shared_garbage(d, 3), cudaSuccess);
    to_host(out, d, sizeof out);
    for (int i = 0; i < 3; i++)
        assert_int_equal(out[i], 0xffffffffu);
    assert_int_equal(cudaFree(d), cudaSuccess);
}

/* Without the __syncthreads, thread 0's write is not seen by every thread: the emulation runs
 * block 1's threads in reverse order, so they read before thread 0 writes. With it, all do. */
static void test_missing_barrier_shows(void **state)
{
    enum { BLOCKS = 2, THREADS = 64 };
    int *d = dev_alloc(BLOCKS * THREADS * sizeof(int)), out[BLOCKS * THREADS];
    assert_int_equal(st_publish(d, BLOCKS, THREADS, 0), cudaSuccess);
    to_host(out, d, sizeof out);
    int wrong = 0;
    for (int i = 0; i < BLOCKS * THREADS; i++)
        wrong += out[i] != 42;
    assert_true(wrong > 0);
    assert_int_equal(st_publish(d, BLOCKS, THREADS, 1), cudaSuccess);
    to_host(out, d, sizeof out);
    for (int i = 0; i < BLOCKS * THREADS; i++)
        assert_int_equal(out[i], 42);
    assert_int_equal(cudaFree(d), cudaSuccess);
}

/* ------------------------------------------------------------------------------------------
 * Detectors in kernels
 */
static void test_detects_shuffle_with_exited_lane(void **state)
{
    expect_kernel_error(ST_SHFL_EXITED, "shfl_exited_kernel", "lane 5 has exited",
                        cudaErrorLaunchFailure);
}

static void test_detects_mismatched_barriers(void **state)
{
    expect_kernel_error(ST_MISMATCHED_BARRIER, "mismatched_barrier_kernel",
                        "must reach the same barrier", cudaErrorLaunchFailure);
}

static void test_detects_shuffle_against_barrier(void **state)
{
    expect_kernel_error(ST_BARRIER_VS_SHUFFLE, "barrier_vs_shuffle_kernel", "deadlock",
                        cudaErrorLaunchFailure);
}

static void test_detects_shuffle_in_partial_warp(void **state)
{
    expect_kernel_error(ST_PARTIAL_WARP, "partial_warp_shuffle_kernel", "do not exist",
                        cudaErrorLaunchFailure);
}

static void test_detects_bad_launch_configurations(void **state)
{
    int *out = dev_alloc(64 * sizeof(int));
    int cases[] = {ST_BLOCK_TOO_BIG, ST_BLOCK_Z_TOO_BIG, ST_GRID_Y_TOO_BIG, ST_ZERO_GRID};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        capture_stderr();
        int e = st_launch_broken(cases[i], out);
        const char *text = captured_stderr();
        assert_int_equal(e, cudaErrorInvalidConfiguration);
        assert_non_null(strstr(text, "invalid configuration"));
        /* not sticky, and cudaGetLastError cleared it */
        assert_int_equal(cudaGetLastError(), cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    }
    assert_int_equal(cudaFree(out), cudaSuccess);
}

static void test_detects_host_pointer_argument(void **state)
{
    int host[32];
    capture_stderr();
    int launch = st_store(NULL, host, 1);
    cudaError_t sync = cudaDeviceSynchronize();
    const char *text = captured_stderr();
    assert_int_equal(launch, cudaSuccess);
    assert_int_equal(sync, cudaErrorLaunchFailure);
    assert_non_null(strstr(text, "store_kernel"));
    assert_non_null(strstr(text, "neither device memory nor pinned host memory"));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
}

static void test_detects_read_past_the_end(void **state)
{
    float *in = dev_alloc(1024 * sizeof(float)), *out = dev_alloc(sizeof(float));
    capture_stderr();
    int launch = st_read_past_end(in, 1024 + 16, out);
    cudaError_t sync = cudaDeviceSynchronize();
    const char *text = captured_stderr();
    assert_int_equal(launch, cudaSuccess);
    assert_int_equal(sync, cudaErrorIllegalAddress);
    assert_non_null(strstr(text, "read_past_end_kernel"));
    assert_non_null(strstr(text, "illegal memory access"));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
    assert_int_equal(cudaFree(in), cudaSuccess);
    assert_int_equal(cudaFree(out), cudaSuccess);
}

/* A float4 load needs 16-byte alignment on a GPU (cudaErrorMisalignedAddress otherwise); x86
 * would not mind, the emulated build's alignment trap does. */
static void test_detects_misaligned_vector_load(void **state)
{
    float host[8] = {1, 2, 3, 4, 5, 6, 7, 8}, got = 0;
    float *in = dev_alloc(sizeof host), *out = dev_alloc(sizeof(float));
    to_dev(in, host, sizeof host);
    assert_int_equal(st_vector_load(in, 4, out), cudaSuccess);
    to_host(&got, out, sizeof got);
    assert_true(got == 26.f);
    capture_stderr();
    int launch = st_vector_load(in, 1, out);
    cudaError_t sync = cudaDeviceSynchronize();
    const char *text = captured_stderr();
    assert_int_equal(launch, cudaSuccess);
    assert_int_equal(sync, cudaErrorMisalignedAddress);
    assert_non_null(strstr(text, "vector_load_kernel"));
    assert_non_null(strstr(text, "misaligned address"));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
    assert_int_equal(cudaFree(in), cudaSuccess);
    assert_int_equal(cudaFree(out), cudaSuccess);
}

/* Device memory is not host memory: the host dereferencing a device pointer faults. */
static void test_host_touching_device_memory_faults(void **state)
{
    int *d = dev_alloc(4096);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
        *(volatile int *)d = 1;
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
    assert_int_equal(cudaFree(d), cudaSuccess);
}

/* ------------------------------------------------------------------------------------------
 * Copies and streams
 */
static void test_detects_bad_copies(void **state)
{
    char host[512] = {0};
    char *dev = dev_alloc(256);
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    capture_stderr();
    cudaError_t swapped = cudaMemcpy(host, dev, 256, cudaMemcpyHostToDevice);
    cudaError_t past_end = cudaMemcpy(dev, host, 512 + 4096, cudaMemcpyHostToDevice);
    cudaError_t wrong_kind = cudaMemcpyAsync(dev, host, 256, cudaMemcpyDeviceToHost, s);
    cudaError_t host_as_dev = cudaMemcpy(host, host + 256, 256, cudaMemcpyDeviceToHost);
    const char *text = captured_stderr();
    assert_int_equal(swapped, cudaErrorInvalidValue);
    assert_int_equal(past_end, cudaErrorInvalidValue);
    assert_int_equal(wrong_kind, cudaErrorInvalidValue);
    assert_int_equal(host_as_dev, cudaErrorInvalidValue);
    assert_non_null(strstr(text, "is not device memory"));
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidValue);
    /* not sticky: the right copies work */
    assert_int_equal(cudaMemcpy(dev, host, 256, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(host, dev, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(cudaFree(dev), cudaSuccess);
}

/* Queued work runs when the host synchronizes: a copy from pinned memory reads it then; one
 * from pageable memory was staged at the call; one to pinned memory lands at the sync. */
static void test_streams_are_deferred(void **state)
{
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    int *pinned = NULL, *dev = dev_alloc(2 * sizeof(int)), got[2];
    assert_int_equal(cudaMallocHost((void **)&pinned, 2 * sizeof(int)), cudaSuccess);
    int pageable = 10;
    pinned[0] = 1;
    assert_int_equal(cudaMemcpyAsync(dev, pinned, sizeof(int), cudaMemcpyHostToDevice, s),
                     cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(dev + 1, &pageable, sizeof(int), cudaMemcpyHostToDevice, s),
                     cudaSuccess);
    pinned[0] = 2;  /* before the copy ran: it sees 2 */
    pageable = 20;  /* staged already: the device gets 10 */
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    to_host(got, dev, sizeof got);
    assert_int_equal(got[0], 2);
    assert_int_equal(got[1], 10);

    pinned[1] = -1;
    assert_int_equal(cudaMemcpyAsync(pinned + 1, dev + 1, sizeof(int), cudaMemcpyDeviceToHost,
                                     s),
                     cudaSuccess);
    assert_int_equal(pinned[1], -1); /* not yet */
    cudaEvent_t ev;
    assert_int_equal(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), cudaSuccess);
    assert_int_equal(cudaEventRecord(ev, s), cudaSuccess);
    assert_int_equal(cudaEventSynchronize(ev), cudaSuccess);
    assert_int_equal(pinned[1], 10);
    assert_int_equal(cudaEventDestroy(ev), cudaSuccess);
    assert_int_equal(cudaFreeHost(pinned), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(cudaFree(dev), cudaSuccess);
}

/* ------------------------------------------------------------------------------------------
 * Graphs
 */
static void test_graph_replays_captured_arguments(void **state)
{
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    int *dev = dev_alloc(32 * sizeof(int)), out[32];
    assert_int_equal(cudaMemset(dev, 0, 32 * sizeof(int)), cudaSuccess);
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    int value = 100;
    assert_int_equal(st_store(s, dev, value), cudaSuccess);
    value = 7; /* the graph keeps 100 */
    cudaGraph_t graph = NULL;
    assert_int_equal(cudaStreamEndCapture(s, &graph), cudaSuccess);
    assert_non_null(graph);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    to_host(out, dev, sizeof out);
    assert_int_equal(out[3], 0); /* captured, not run */
    cudaGraphExec_t exec = NULL;
    assert_int_equal(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    assert_int_equal(cudaGraphDestroy(graph), cudaSuccess);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(cudaMemset(dev, 0, 32 * sizeof(int)), cudaSuccess);
        assert_int_equal(cudaGraphLaunch(exec, s), cudaSuccess);
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        to_host(out, dev, sizeof out);
        for (int i = 0; i < 32; i++)
            assert_int_equal(out[i], 100 + i);
    }
    assert_int_equal(cudaGraphExecDestroy(exec), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(cudaFree(dev), cudaSuccess);
}

static void test_detects_sync_during_capture(void **state)
{
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    int *dev = dev_alloc(32 * sizeof(int)), host[32] = {0};
    cudaGraph_t graph = NULL;

    /* a sync of the capturing stream */
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    assert_int_equal(st_store(s, dev, 1), cudaSuccess);
    capture_stderr();
    cudaError_t sync = cudaStreamSynchronize(s);
    cudaError_t end = cudaStreamEndCapture(s, &graph);
    const char *text = captured_stderr();
    assert_int_equal(sync, cudaErrorStreamCaptureUnsupported);
    assert_int_equal(end, cudaErrorStreamCaptureInvalidated);
    assert_null(graph);
    assert_non_null(strstr(text, "capturing stream"));

    /* a synchronous copy from the capturing thread (ThreadLocal mode) */
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    capture_stderr();
    cudaError_t copy = cudaMemcpy(dev, host, sizeof host, cudaMemcpyHostToDevice);
    end = cudaStreamEndCapture(s, &graph);
    captured_stderr();
    assert_int_equal(copy, cudaErrorStreamCaptureUnsupported);
    assert_int_equal(end, cudaErrorStreamCaptureInvalidated);
    assert_null(graph);

    /* Relaxed mode allows it */
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    assert_int_equal(cudaMemcpy(dev, host, sizeof host, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(s, &graph), cudaSuccess);
    assert_non_null(graph);
    assert_int_equal(cudaGraphDestroy(graph), cudaSuccess);

    cudaGetLastError();
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(cudaFree(dev), cudaSuccess);
}

/* ------------------------------------------------------------------------------------------
 * The driver's VMM: one physical chunk seen through two ranges; no access before SetAccess
 */
static void *driver(const char *name)
{
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult found;
    assert_int_equal(cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found),
                     cudaSuccess);
    assert_int_equal(found, cudaDriverEntryPointSuccess);
    assert_non_null(fn);
    return fn;
}

static void test_vmm_aliasing(void **state)
{
    PFN_cuMemCreate_v10020 create = driver("cuMemCreate");
    PFN_cuMemRelease_v10020 release = driver("cuMemRelease");
    PFN_cuMemAddressReserve_v10020 reserve = driver("cuMemAddressReserve");
    PFN_cuMemAddressFree_v10020 address_free = driver("cuMemAddressFree");
    PFN_cuMemMap_v10020 map = driver("cuMemMap");
    PFN_cuMemUnmap_v10020 unmap = driver("cuMemUnmap");
    PFN_cuMemSetAccess_v10020 set_access = driver("cuMemSetAccess");
    PFN_cuMemGetAllocationGranularity_v10020 granularity = driver("cuMemGetAllocationGranularity");

    CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0}};
    size_t gran = 0;
    assert_int_equal(granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED), CUDA_SUCCESS);
    CUmemGenericAllocationHandle h;
    assert_int_equal(create(&h, gran, &prop, 0), CUDA_SUCCESS);
    CUdeviceptr a, b;
    assert_int_equal(reserve(&a, gran, 0, 0, 0), CUDA_SUCCESS);
    assert_int_equal(reserve(&b, gran, 0, 0, 0), CUDA_SUCCESS);
    assert_int_equal(map(a, gran, 0, h, 0), CUDA_SUCCESS);
    assert_int_equal(map(b, gran, 0, h, 0), CUDA_SUCCESS);
    int host[4] = {1, 2, 3, 4}, back[4] = {0};
    CUmemAccessDesc rw = {.location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    assert_int_equal(set_access(a, gran, &rw, 1), CUDA_SUCCESS);
    /* b is mapped but not accessible yet: not device memory to a copy */
    capture_stderr();
    cudaError_t early = cudaMemcpy(back, (void *)(uintptr_t)b, sizeof back, cudaMemcpyDeviceToHost);
    captured_stderr();
    assert_int_equal(early, cudaErrorInvalidValue);
    assert_int_equal(set_access(b, gran, &rw, 1), CUDA_SUCCESS);
    to_dev((void *)(uintptr_t)a, host, sizeof host);
    to_host(back, (void *)(uintptr_t)b, sizeof back);
    assert_memory_equal(back, host, sizeof host);
    assert_int_equal(unmap(a, gran), CUDA_SUCCESS);
    assert_int_equal(unmap(b, gran), CUDA_SUCCESS);
    assert_int_equal(release(h), CUDA_SUCCESS);
    assert_int_equal(address_free(a, gran), CUDA_SUCCESS);
    assert_int_equal(address_free(b, gran), CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------------------------
 * cuBLAS (through cublas_dl.c, as the backend loads it)
 */
static float bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static void test_cublas_gemm(void **state)
{
    const nx__cublas_api_t *api = NULL;
    nx_err_t err = {0};
    assert_int_equal(nx__cublas_load(&api, &err), NX_OK);
    nx__cublas_handle_t h = NULL;
    assert_int_equal(api->create(&h), NX_CUBLAS_STATUS_SUCCESS);
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(api->set_stream(h, s), NX_CUBLAS_STATUS_SUCCESS);

    /* the backend's use: W row-major [m][k] (col-major k x m, taken T), X row-major [n][k] */
    enum { M = 5, N = 3, K = 4 };
    float w[M * K], x[N * K], y[N * M], want[N * M];
    uint16_t wb[M * K], xb[N * K];
    for (int i = 0; i < M * K; i++) {
        w[i] = bf16_round((float)((i * 7) % 11) - 5.f);
        uint32_t u;
        memcpy(&u, &w[i], 4);
        wb[i] = (uint16_t)(u >> 16);
    }
    for (int i = 0; i < N * K; i++) {
        x[i] = bf16_round((float)((i * 5) % 9) * 0.5f - 2.f);
        uint32_t u;
        memcpy(&u, &x[i], 4);
        xb[i] = (uint16_t)(u >> 16);
    }
    for (int r = 0; r < N; r++)
        for (int o = 0; o < M; o++) {
            float acc = 0;
            for (int k = 0; k < K; k++)
                acc += w[o * K + k] * x[r * K + k];
            want[r * M + o] = acc + 1.f; /* beta = 1 over y = 1 */
        }
    void *dw = dev_alloc(sizeof w), *dx = dev_alloc(sizeof x), *dy = dev_alloc(sizeof y);
    for (int type = 0; type < 2; type++) {
        int t = type ? NX_CUDA_R_16BF : NX_CUDA_R_32F;
        to_dev(dw, type ? (void *)wb : (void *)w, type ? sizeof wb : sizeof w);
        to_dev(dx, type ? (void *)xb : (void *)x, type ? sizeof xb : sizeof x);
        for (int i = 0; i < N * M; i++)
            y[i] = 1.f;
        to_dev(dy, y, sizeof y);
        float alpha = 1.f, beta = 1.f;
        assert_int_equal(api->gemm_ex(h, NX_CUBLAS_OP_T, NX_CUBLAS_OP_N, M, N, K, &alpha, dw, t, K,
                                      dx, t, K, &beta, dy, NX_CUDA_R_32F, M,
                                      NX_CUBLAS_COMPUTE_32F, NX_CUBLAS_GEMM_DEFAULT),
                         NX_CUBLAS_STATUS_SUCCESS);
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        to_host(y, dy, sizeof y);
        for (int i = 0; i < N * M; i++)
            assert_float_equal(y[i], want[i], 1e-4);
    }
    /* a leading dimension too small: CUBLAS_STATUS_INVALID_VALUE (7), checked at the call */
    float alpha = 1.f, beta = 0.f;
    capture_stderr();
    int st = api->gemm_ex(h, NX_CUBLAS_OP_T, NX_CUBLAS_OP_N, M, N, K, &alpha, dw, NX_CUDA_R_32F,
                          K - 1, dx, NX_CUDA_R_32F, K, &beta, dy, NX_CUDA_R_32F, M,
                          NX_CUBLAS_COMPUTE_32F, NX_CUBLAS_GEMM_DEFAULT);
    captured_stderr();
    assert_int_equal(st, 7);
    assert_int_equal(api->destroy(h), NX_CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(cudaFree(dw), cudaSuccess);
    assert_int_equal(cudaFree(dx), cudaSuccess);
    assert_int_equal(cudaFree(dy), cudaSuccess);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device),
        cmocka_unit_test(test_primitives),
        cmocka_unit_test(test_coords),
        cmocka_unit_test(test_shared_memory_refilled_per_block),
        cmocka_unit_test(test_missing_barrier_shows),
        cmocka_unit_test(test_detects_shuffle_with_exited_lane),
        cmocka_unit_test(test_detects_mismatched_barriers),
        cmocka_unit_test(test_detects_shuffle_against_barrier),
        cmocka_unit_test(test_detects_shuffle_in_partial_warp),
        cmocka_unit_test(test_detects_bad_launch_configurations),
        cmocka_unit_test(test_detects_host_pointer_argument),
        cmocka_unit_test(test_detects_read_past_the_end),
        cmocka_unit_test(test_detects_misaligned_vector_load),
        cmocka_unit_test(test_host_touching_device_memory_faults),
        cmocka_unit_test(test_detects_bad_copies),
        cmocka_unit_test(test_streams_are_deferred),
        cmocka_unit_test(test_graph_replays_captured_arguments),
        cmocka_unit_test(test_detects_sync_during_capture),
        cmocka_unit_test(test_vmm_aliasing),
        cmocka_unit_test(test_cublas_gemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
