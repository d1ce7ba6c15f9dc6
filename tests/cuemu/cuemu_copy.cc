/* cuemu_copy.cc — cuemu's memory calls and copies (CPU emulation of CUDA for tests: checks
 * index arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 * Every copy checks that each side is where its kind says (device memory for the whole range,
 * or host memory), else cudaErrorInvalidValue, as the call returns on a GPU. Asynchronous
 * copies from pageable memory are staged at the call; from or to pinned memory they happen
 * when the stream runs; to pageable memory the call waits for the stream (CUDA's rules). A
 * synchronous copy or memset runs on the legacy stream after what it orders behind.
 */
#include "cuemu_device.h"
#include "cuemu_stream.h"

#include <stdlib.h>

using namespace cuemu;

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
