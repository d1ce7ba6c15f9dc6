/* device.h — internal: the backend table that the pool, the load pipeline and the host cache
 * share. One implementation per device (dev_cpu.c, dev_cuda.c); dev_nocuda.c stands in for
 * dev_cuda.c when the build has no CUDA toolkit, so no .c file needs an #ifdef.
 *
 * The model is CUDA's virtual memory management: physical memory is a fixed set of equal
 * chunks created once; a region is a fresh contiguous virtual range with chunks mapped into
 * it. On CPU the chunks are units of accounting only: a region is a fresh anonymous mapping,
 * faulted in by its writers (dev_cpu.c says why), which gives the same guarantee: no
 * fragmentation failures.
 */
#ifndef NX_DEVICE_H
#define NX_DEVICE_H

#include "nx_loader.h"

typedef struct nx_dev nx_dev_t;

typedef struct nx_dev_ops {
    const char *name;  /* "cpu" or "cuda" */
    bool host_visible; /* pool memory is ordinary host memory (CPU): reads may land in it */
    uint64_t default_chunk_bytes; /* chunk size when nx_pool_opts_t.chunk_bytes is 0 */

    /* Release everything the backend holds (phys chunks included) and free dev->impl. */
    void (*close)(nx_dev_t *dev);

    /* Free and total memory of the device (CPU: MemAvailable and MemTotal). */
    int (*mem_info)(nx_dev_t *dev, uint64_t *free_out, uint64_t *total_out, nx_err_t *err);
    /* Smallest chunk the backend can map (CPU: page size; CUDA: allocation granularity). */
    uint64_t (*granularity)(nx_dev_t *dev);

    /* Create `count` physical chunks of `chunk_bytes` each (a multiple of granularity). */
    int (*phys_create)(nx_dev_t *dev, uint64_t chunk_bytes, uint32_t count, nx_err_t *err);
    void (*phys_release)(nx_dev_t *dev);
    /* Reserve a virtual range of count*chunk_bytes and map chunks[0..count) into it in order. */
    int (*map)(nx_dev_t *dev, const uint32_t *chunks, uint32_t count, void **va_out,
               nx_err_t *err);
    void (*unmap)(nx_dev_t *dev, void *va, uint32_t count);
    /* Pool memory [ptr, ptr+bytes) is about to be written by the host (host_visible backends):
     * fault it in now, in the thread that will write it, rather than one fault per page. A
     * no-op where the pool is not host memory. Best effort: never fails a load. */
    void (*prepare)(nx_dev_t *dev, void *ptr, size_t bytes);
    /* Back pool memory [ptr, ptr+bytes) with huge pages where the backend can (CPU: the 2 MiB
     * pages wholly inside it, by MADV_COLLAPSE, its contents kept); returns how many of its
     * bytes are now huge. Best effort and slow (it copies): never on a load's path. NULL where
     * there is nothing to do (CUDA). */
    uint64_t (*collapse)(nx_dev_t *dev, void *ptr, size_t bytes);

    /* Host memory for staging and the host cache: pinned on CUDA, page-aligned on both.
     * Allocated at start-up only, never inside a timed load. */
    void *(*host_alloc)(nx_dev_t *dev, size_t bytes, nx_err_t *err);
    void (*host_free)(nx_dev_t *dev, void *ptr, size_t bytes);

    /* Streams and events. On CPU these are trivial: copies complete before they return. */
    int (*stream_new)(nx_dev_t *dev, void **stream_out, nx_err_t *err);
    void (*stream_destroy)(nx_dev_t *dev, void *stream);
    int (*stream_sync)(nx_dev_t *dev, void *stream, nx_err_t *err);
    int (*event_new)(nx_dev_t *dev, void **event_out, nx_err_t *err);
    void (*event_destroy)(nx_dev_t *dev, void *event);
    int (*event_record)(nx_dev_t *dev, void *event, void *stream, nx_err_t *err);
    int (*event_sync)(nx_dev_t *dev, void *event, nx_err_t *err); /* host waits for it */

    /* Asynchronous on CUDA (ordered on `stream`), synchronous memcpy on CPU. host memory
     * should come from host_alloc for full speed on CUDA. */
    int (*copy_h2d)(nx_dev_t *dev, void *dst, const void *src, size_t bytes, void *stream,
                    nx_err_t *err);
    int (*copy_d2h)(nx_dev_t *dev, void *dst, const void *src, size_t bytes, void *stream,
                    nx_err_t *err);
    /* Zero pool memory [dst, dst+bytes): asynchronous on CUDA (ordered on `stream`), memset on
     * CPU. The loader clears only what no file byte covers (gaps between files, the tail). */
    int (*zero)(nx_dev_t *dev, void *dst, size_t bytes, void *stream, nx_err_t *err);
} nx_dev_ops_t;

struct nx_dev {
    const nx_dev_ops_t *ops;
    nx_device_kind_t kind;
    int ordinal;
    void *impl; /* backend state */
};

/* Open a backend. CPU always succeeds unless out of memory. CUDA fails with NX_ENOTSUP when
 * built without CUDA, NX_EDEVICE when there is no device or driver (message says which).
 * Caller owns the result. */
nx_dev_t *nx__dev_cpu_open(nx_err_t *err);
nx_dev_t *nx__dev_cuda_open(int ordinal, nx_err_t *err);
void nx__dev_close(nx_dev_t **dev_p);

/* The pool's device, for the pipeline and the host cache. */
nx_dev_t *nx__pool_dev(const nx_pool_t *pool);

#endif
