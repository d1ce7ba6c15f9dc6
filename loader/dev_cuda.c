/* dev_cuda.c — the CUDA backend: the pool is VRAM, handed out through CUDA's virtual memory
 * management (cuMemCreate chunks mapped into cuMemAddressReserve ranges), so a region is
 * contiguous in device virtual memory whatever the physical fragmentation.
 *
 * Plain C host code, compiled by the C compiler against the CUDA headers. The runtime is linked
 * statically; the driver API is NOT linked (-lcuda would make the binary fail to start on a
 * machine without a driver). Its functions are looked up at run time through
 * cudaGetDriverEntryPointByVersion, so a machine without a GPU or driver gets a clean NX_EDEVICE
 * here and the pool falls back to the CPU backend.
 *
 * Every CUDA call is checked; a failure becomes NX_EDEVICE naming the call and CUDA's error
 * name and text, never an abort.
 *
 * NOT YET RUN ON A GPU: it has run only under the CPU emulation of tests/cuemu (make emu-test:
 * VMM chunks as memfds mapped into reservations, deferred streams, pinned staging; it checks
 * the host's orchestration, not the hardware, not speed), where models load and read back.
 */
#include "device.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The driver ABI we ask for: every function below has had its current signature since 10.2,
 * and 12.0 is the oldest driver the statically linked runtime supports anyway. */
#define DRIVER_ABI_VERSION 12000

typedef struct driver_api {
    PFN_cuGetErrorName_v6000 cuGetErrorName;
    PFN_cuGetErrorString_v6000 cuGetErrorString;
    PFN_cuDeviceGet_v2000 cuDeviceGet;
    PFN_cuDeviceGetAttribute_v2000 cuDeviceGetAttribute;
    PFN_cuMemGetAllocationGranularity_v10020 cuMemGetAllocationGranularity;
    PFN_cuMemCreate_v10020 cuMemCreate;
    PFN_cuMemRelease_v10020 cuMemRelease;
    PFN_cuMemAddressReserve_v10020 cuMemAddressReserve;
    PFN_cuMemAddressFree_v10020 cuMemAddressFree;
    PFN_cuMemMap_v10020 cuMemMap;
    PFN_cuMemUnmap_v10020 cuMemUnmap;
    PFN_cuMemSetAccess_v10020 cuMemSetAccess;
} driver_api_t;

typedef struct cuda_dev {
    driver_api_t drv;
    CUdevice device;
    CUmemAllocationProp prop;              /* pinned, on this device */
    uint64_t granularity;                  /* recommended allocation granularity */
    uint64_t chunk_bytes;                  /* size of one physical chunk */
    uint32_t chunk_count;
    CUmemGenericAllocationHandle *handles; /* [chunk_count] */
} cuda_dev_t;

static cuda_dev_t *impl_of(nx_dev_t *dev)
{
    return dev->impl;
}

/* ---------------------------------------------------------------------------------------
 * Errors
 */

static int rt_fail(nx_err_t *err, const char *call, cudaError_t e)
{
    cudaGetLastError(); /* clear a non-sticky error so that it does not resurface later */
    return nx_err_set(err, NX_EDEVICE, "cuda backend: %s failed: %s: %s", call,
                      cudaGetErrorName(e), cudaGetErrorString(e));
}

static int drv_fail(const driver_api_t *drv, nx_err_t *err, const char *call, CUresult r)
{
    const char *name = NULL, *text = NULL;
    if (!drv->cuGetErrorName || drv->cuGetErrorName(r, &name) != CUDA_SUCCESS || !name)
        name = "CUDA_ERROR_?";
    if (!drv->cuGetErrorString || drv->cuGetErrorString(r, &text) != CUDA_SUCCESS || !text)
        text = "unknown driver error";
    return nx_err_set(err, NX_EDEVICE, "cuda backend: %s failed: %s (%d): %s", call, name,
                      (int)r, text);
}

/* The runtime's current device is per thread: every entry point that touches the device makes
 * sure it is ours (cheap when it already is). */
static int use_device(nx_dev_t *dev, nx_err_t *err)
{
    cudaError_t e = cudaSetDevice(dev->ordinal);
    return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaSetDevice", e);
}

/* ---------------------------------------------------------------------------------------
 * Driver entry points
 */

static int resolve(const char *symbol, void **fn_out, nx_err_t *err)
{
    enum cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e = cudaGetDriverEntryPointByVersion(symbol, fn_out, DRIVER_ABI_VERSION,
                                                     cudaEnableDefault, &found);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return nx_err_set(err, NX_EDEVICE,
                          "cuda backend: cudaGetDriverEntryPointByVersion('%s') failed: %s: %s",
                          symbol, cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (found != cudaDriverEntryPointSuccess || !*fn_out)
        return nx_err_set(err, NX_EDEVICE, "cuda backend: the driver has no '%s' (%s)", symbol,
                          found == cudaDriverEntryPointVersionNotSufficent
                              ? "driver too old"
                              : "symbol not found");
    return NX_OK;
}

static int resolve_driver(driver_api_t *drv, nx_err_t *err)
{
    struct {
        const char *symbol;
        void **slot;
    } table[] = {
        {"cuGetErrorName", (void **)&drv->cuGetErrorName},
        {"cuGetErrorString", (void **)&drv->cuGetErrorString},
        {"cuDeviceGet", (void **)&drv->cuDeviceGet},
        {"cuDeviceGetAttribute", (void **)&drv->cuDeviceGetAttribute},
        {"cuMemGetAllocationGranularity", (void **)&drv->cuMemGetAllocationGranularity},
        {"cuMemCreate", (void **)&drv->cuMemCreate},
        {"cuMemRelease", (void **)&drv->cuMemRelease},
        {"cuMemAddressReserve", (void **)&drv->cuMemAddressReserve},
        {"cuMemAddressFree", (void **)&drv->cuMemAddressFree},
        {"cuMemMap", (void **)&drv->cuMemMap},
        {"cuMemUnmap", (void **)&drv->cuMemUnmap},
        {"cuMemSetAccess", (void **)&drv->cuMemSetAccess},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        int rc = resolve(table[i].symbol, table[i].slot, err);
        if (rc != NX_OK)
            return rc;
    }
    return NX_OK;
}

/* ---------------------------------------------------------------------------------------
 * Memory info and physical chunks
 */

static int cuda_mem_info(nx_dev_t *dev, uint64_t *free_out, uint64_t *total_out, nx_err_t *err)
{
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    size_t free_bytes = 0, total_bytes = 0;
    cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (e != cudaSuccess)
        return rt_fail(err, "cudaMemGetInfo", e);
    *free_out = free_bytes;
    *total_out = total_bytes;
    return NX_OK;
}

static uint64_t cuda_granularity(nx_dev_t *dev)
{
    return impl_of(dev)->granularity;
}

static void release_handles(cuda_dev_t *cuda, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        CUresult r = cuda->drv.cuMemRelease(cuda->handles[i]);
        if (r != CUDA_SUCCESS) {
            nx_err_t err;
            drv_fail(&cuda->drv, &err, "cuMemRelease", r);
            nx_log(NX_LOG_ERROR, "%s", err.msg);
        }
    }
}

static void cuda_phys_release(nx_dev_t *dev)
{
    cuda_dev_t *cuda = impl_of(dev);
    if (cuda->handles) {
        use_device(dev, NULL);
        release_handles(cuda, cuda->chunk_count);
    }
    free(cuda->handles);
    cuda->handles = NULL;
    cuda->chunk_count = 0;
}

static int cuda_phys_create(nx_dev_t *dev, uint64_t chunk_bytes, uint32_t count, nx_err_t *err)
{
    cuda_dev_t *cuda = impl_of(dev);
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    cuda->handles = calloc(count, sizeof *cuda->handles);
    if (!cuda->handles)
        return nx_err_set(err, NX_ENOMEM, "cuda backend: out of host memory for %" PRIu32
                          " chunk handles", count);
    for (uint32_t i = 0; i < count; i++) {
        CUresult r = cuda->drv.cuMemCreate(&cuda->handles[i], chunk_bytes, &cuda->prop, 0);
        if (r != CUDA_SUCCESS) {
            drv_fail(&cuda->drv, err, "cuMemCreate", r);
            nx_err_prefix(err, "creating chunk %" PRIu32 " of %" PRIu32 " (%" PRIu64
                          " bytes each): ", i + 1, count, chunk_bytes);
            release_handles(cuda, i);
            free(cuda->handles);
            cuda->handles = NULL;
            return NX_EDEVICE;
        }
    }
    cuda->chunk_bytes = chunk_bytes;
    cuda->chunk_count = count;
    return NX_OK;
}

/* ---------------------------------------------------------------------------------------
 * Regions: reserve a virtual range, map chunks into it, grant access
 */

/* Undo the first `mapped` chunk mappings and the reservation; errors are only logged (this
 * runs on paths that already report an error, or that cannot report one). */
static void unmap_range(cuda_dev_t *cuda, CUdeviceptr base, uint32_t mapped, uint32_t count)
{
    nx_err_t err;
    for (uint32_t i = 0; i < mapped; i++) {
        CUresult r = cuda->drv.cuMemUnmap(base + (CUdeviceptr)i * cuda->chunk_bytes,
                                          cuda->chunk_bytes);
        if (r != CUDA_SUCCESS) {
            drv_fail(&cuda->drv, &err, "cuMemUnmap", r);
            nx_log(NX_LOG_ERROR, "%s", err.msg);
        }
    }
    CUresult r = cuda->drv.cuMemAddressFree(base, (size_t)cuda->chunk_bytes * count);
    if (r != CUDA_SUCCESS) {
        drv_fail(&cuda->drv, &err, "cuMemAddressFree", r);
        nx_log(NX_LOG_ERROR, "%s", err.msg);
    }
}

static int cuda_map(nx_dev_t *dev, const uint32_t *chunks, uint32_t count, void **va_out,
                    nx_err_t *err)
{
    cuda_dev_t *cuda = impl_of(dev);
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    size_t range = (size_t)cuda->chunk_bytes * count;
    CUdeviceptr base = 0;
    CUresult r = cuda->drv.cuMemAddressReserve(&base, range, 0, 0, 0);
    if (r != CUDA_SUCCESS)
        return drv_fail(&cuda->drv, err, "cuMemAddressReserve", r);
    /* Each chunk is its own allocation handle, so one cuMemMap per chunk (even when the
     * indices are consecutive). */
    for (uint32_t i = 0; i < count; i++) {
        r = cuda->drv.cuMemMap(base + (CUdeviceptr)i * cuda->chunk_bytes, cuda->chunk_bytes, 0,
                               cuda->handles[chunks[i]], 0);
        if (r != CUDA_SUCCESS) {
            drv_fail(&cuda->drv, err, "cuMemMap", r);
            unmap_range(cuda, base, i, count);
            return NX_EDEVICE;
        }
    }
    CUmemAccessDesc access = {
        .location = cuda->prop.location,
        .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
    };
    r = cuda->drv.cuMemSetAccess(base, range, &access, 1);
    if (r != CUDA_SUCCESS) {
        drv_fail(&cuda->drv, err, "cuMemSetAccess", r);
        unmap_range(cuda, base, count, count);
        return NX_EDEVICE;
    }
    *va_out = (void *)(uintptr_t)base;
    return NX_OK;
}

/* Device memory is never written by the host directly: nothing to prepare. */
static void cuda_prepare(nx_dev_t *dev, void *ptr, size_t bytes)
{
}

static void cuda_unmap(nx_dev_t *dev, void *va, uint32_t count)
{
    if (!va)
        return;
    use_device(dev, NULL);
    unmap_range(impl_of(dev), (CUdeviceptr)(uintptr_t)va, count, count);
}

/* ---------------------------------------------------------------------------------------
 * Pinned host memory, streams, events, copies
 */

static void *cuda_host_alloc(nx_dev_t *dev, size_t bytes, nx_err_t *err)
{
    if (use_device(dev, err) != NX_OK)
        return NULL;
    void *ptr = NULL;
    cudaError_t e = cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        rt_fail(err, "cudaHostAlloc", e);
        return NULL;
    }
    return ptr;
}

static void cuda_host_free(nx_dev_t *dev, void *ptr, size_t bytes)
{
    if (!ptr)
        return;
    cudaError_t e = cudaFreeHost(ptr);
    if (e != cudaSuccess) {
        nx_err_t err;
        rt_fail(&err, "cudaFreeHost", e);
        nx_log(NX_LOG_ERROR, "%s", err.msg);
    }
}

static int cuda_stream_new(nx_dev_t *dev, void **stream_out, nx_err_t *err)
{
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    cudaStream_t stream = NULL;
    cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (e != cudaSuccess)
        return rt_fail(err, "cudaStreamCreateWithFlags", e);
    *stream_out = stream;
    return NX_OK;
}

static void cuda_stream_destroy(nx_dev_t *dev, void *stream)
{
    if (stream)
        cudaStreamDestroy((cudaStream_t)stream);
}

static int cuda_stream_sync(nx_dev_t *dev, void *stream, nx_err_t *err)
{
    cudaError_t e = cudaStreamSynchronize((cudaStream_t)stream);
    return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaStreamSynchronize", e);
}

static int cuda_event_new(nx_dev_t *dev, void **event_out, nx_err_t *err)
{
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    cudaEvent_t event = NULL;
    cudaError_t e = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
    if (e != cudaSuccess)
        return rt_fail(err, "cudaEventCreateWithFlags", e);
    *event_out = event;
    return NX_OK;
}

static void cuda_event_destroy(nx_dev_t *dev, void *event)
{
    if (event)
        cudaEventDestroy((cudaEvent_t)event);
}

static int cuda_event_record(nx_dev_t *dev, void *event, void *stream, nx_err_t *err)
{
    cudaError_t e = cudaEventRecord((cudaEvent_t)event, (cudaStream_t)stream);
    return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaEventRecord", e);
}

static int cuda_event_sync(nx_dev_t *dev, void *event, nx_err_t *err)
{
    cudaError_t e = cudaEventSynchronize((cudaEvent_t)event);
    return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaEventSynchronize", e);
}

/* stream NULL: synchronous (cudaMemcpy); else queued on the stream. */
static int copy(nx_dev_t *dev, void *dst, const void *src, size_t bytes, void *stream,
                enum cudaMemcpyKind kind, nx_err_t *err)
{
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    cudaError_t e;
    if (stream) {
        e = cudaMemcpyAsync(dst, src, bytes, kind, (cudaStream_t)stream);
        return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaMemcpyAsync", e);
    }
    e = cudaMemcpy(dst, src, bytes, kind);
    return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaMemcpy", e);
}

static int cuda_copy_h2d(nx_dev_t *dev, void *dst, const void *src, size_t bytes, void *stream,
                         nx_err_t *err)
{
    return copy(dev, dst, src, bytes, stream, cudaMemcpyHostToDevice, err);
}

static int cuda_copy_d2h(nx_dev_t *dev, void *dst, const void *src, size_t bytes, void *stream,
                         nx_err_t *err)
{
    return copy(dev, dst, src, bytes, stream, cudaMemcpyDeviceToHost, err);
}

/* stream NULL: synchronous (cudaMemset); else queued on the stream. */
static int cuda_zero(nx_dev_t *dev, void *dst, size_t bytes, void *stream, nx_err_t *err)
{
    int rc = use_device(dev, err);
    if (rc != NX_OK)
        return rc;
    cudaError_t e;
    if (stream) {
        e = cudaMemsetAsync(dst, 0, bytes, (cudaStream_t)stream);
        return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaMemsetAsync", e);
    }
    e = cudaMemset(dst, 0, bytes);
    return e == cudaSuccess ? NX_OK : rt_fail(err, "cudaMemset", e);
}

static void cuda_close(nx_dev_t *dev)
{
    cuda_phys_release(dev);
    free(dev->impl);
    dev->impl = NULL;
}

static const nx_dev_ops_t cuda_ops = {
    .name = "cuda",
    .host_visible = false,
    /* 32 MiB: every chunk is one cuMemCreate handle and one cuMemMap per region, so a 16 GB
     * model is ~500 maps instead of ~8000 at the 2 MiB granularity; the rounding waste (under
     * one chunk per model) is small next to a model's size. */
    .default_chunk_bytes = 32ull << 20,
    .close = cuda_close,
    .mem_info = cuda_mem_info,
    .granularity = cuda_granularity,
    .phys_create = cuda_phys_create,
    .phys_release = cuda_phys_release,
    .map = cuda_map,
    .unmap = cuda_unmap,
    .prepare = cuda_prepare,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .stream_new = cuda_stream_new,
    .stream_destroy = cuda_stream_destroy,
    .stream_sync = cuda_stream_sync,
    .event_new = cuda_event_new,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .event_sync = cuda_event_sync,
    .copy_h2d = cuda_copy_h2d,
    .copy_d2h = cuda_copy_d2h,
    .zero = cuda_zero,
};

/* ---------------------------------------------------------------------------------------
 * Opening the device
 */

/* Device present, selected, VMM-capable; fills cuda->device, prop and granularity. */
static int probe_device(cuda_dev_t *cuda, int ordinal, nx_err_t *err)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return nx_err_set(err, NX_EDEVICE, "no CUDA device: %s: %s", cudaGetErrorName(e),
                          cudaGetErrorString(e));
    }
    if (ordinal < 0 || ordinal >= count)
        return nx_err_set(err, NX_EDEVICE, "no CUDA device %d: %d device(s) present", ordinal,
                          count);
    e = cudaSetDevice(ordinal);
    if (e != cudaSuccess)
        return rt_fail(err, "cudaSetDevice", e);
    int rc = resolve_driver(&cuda->drv, err);
    if (rc != NX_OK)
        return rc;
    CUresult r = cuda->drv.cuDeviceGet(&cuda->device, ordinal);
    if (r != CUDA_SUCCESS)
        return drv_fail(&cuda->drv, err, "cuDeviceGet", r);
    int vmm = 0;
    r = cuda->drv.cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                       cuda->device);
    if (r != CUDA_SUCCESS)
        return drv_fail(&cuda->drv, err, "cuDeviceGetAttribute(VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED)",
                        r);
    if (!vmm)
        return nx_err_set(err, NX_EDEVICE, "CUDA device %d does not support virtual memory "
                          "management, which the pool needs", ordinal);
    memset(&cuda->prop, 0, sizeof cuda->prop);
    cuda->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    cuda->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    cuda->prop.location.id = ordinal;
    size_t gran = 0;
    r = cuda->drv.cuMemGetAllocationGranularity(&gran, &cuda->prop,
                                                CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
    if (r != CUDA_SUCCESS)
        return drv_fail(&cuda->drv, err, "cuMemGetAllocationGranularity", r);
    if (gran == 0)
        return nx_err_set(err, NX_EDEVICE, "CUDA device %d reports an allocation granularity "
                          "of 0", ordinal);
    cuda->granularity = gran;
    return NX_OK;
}

nx_dev_t *nx__dev_cuda_open(int ordinal, nx_err_t *err)
{
    nx_dev_t *dev = calloc(1, sizeof *dev);
    cuda_dev_t *cuda = calloc(1, sizeof *cuda);
    if (!dev || !cuda) {
        nx_err_set(err, NX_ENOMEM, "cuda backend: out of host memory opening the device");
        goto out_free;
    }
    if (probe_device(cuda, ordinal, err) != NX_OK)
        goto out_free;
    dev->ops = &cuda_ops;
    dev->kind = NX_DEVICE_CUDA;
    dev->ordinal = ordinal;
    dev->impl = cuda;
    return dev;

out_free:
    free(cuda);
    free(dev);
    return NULL;
}
