/* dev_cpu.c — the CPU backend: the pool's memory is ordinary host memory, so every code path
 * runs (and is tested) on machines without a GPU.
 *
 * Physical memory is one memfd, sized and really reserved with fallocate at start-up, so the
 * pool never over-commits: a pool that was created has its pages. A region is a PROT_NONE
 * anonymous reservation with runs of the memfd's chunks mapped over it (MAP_SHARED|MAP_FIXED),
 * which is the CPU twin of cuMemAddressReserve + cuMemMap. Streams and events are trivial:
 * every copy has completed when it returns.
 */
#include "device.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct cpu_dev {
    int memfd;            /* the physical chunks; -1 before phys_create */
    uint64_t chunk_bytes; /* size of one chunk */
    uint32_t chunk_count;
    uint64_t page_bytes;  /* the granularity */
} cpu_dev_t;

static cpu_dev_t *impl_of(nx_dev_t *dev)
{
    return dev->impl;
}

static void cpu_phys_release(nx_dev_t *dev)
{
    cpu_dev_t *cpu = impl_of(dev);
    if (cpu->memfd >= 0)
        close(cpu->memfd);
    cpu->memfd = -1;
    cpu->chunk_count = 0;
}

static void cpu_close(nx_dev_t *dev)
{
    cpu_phys_release(dev);
    free(dev->impl);
    dev->impl = NULL;
}

/* Value of one "Key:   123 kB" line of /proc/meminfo, in bytes; false when absent. */
static bool meminfo_field(const char *text, const char *key, uint64_t *bytes_out)
{
    size_t key_len = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
            unsigned long long kib = 0;
            if (sscanf(line + key_len + 1, "%llu", &kib) != 1)
                return false;
            *bytes_out = (uint64_t)kib * 1024u;
            return true;
        }
    }
    return false;
}

static int cpu_mem_info(nx_dev_t *dev, uint64_t *free_out, uint64_t *total_out, nx_err_t *err)
{
    char text[8192];
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return nx_err_set(err, NX_EIO, "cpu backend: cannot open /proc/meminfo: %s",
                          strerror(errno));
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    uint64_t avail = 0, total = 0;
    if (!meminfo_field(text, "MemAvailable", &avail) || !meminfo_field(text, "MemTotal", &total))
        return nx_err_set(err, NX_EIO,
                          "cpu backend: /proc/meminfo has no MemAvailable or MemTotal line");
    *free_out = avail;
    *total_out = total;
    return NX_OK;
}

static uint64_t cpu_granularity(nx_dev_t *dev)
{
    return impl_of(dev)->page_bytes;
}

/* fallocate on shmem allocates pages but leaves them to be zeroed at their first fault; do
 * that now, at start-up, so the first load into a region pays only for its page tables.
 * Best effort: on failure the faults simply happen later. */
static void prefault(int fd, uint64_t total)
{
    void *map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return;
    if (madvise(map, total, MADV_POPULATE_WRITE) != 0) {
        long page = sysconf(_SC_PAGESIZE);
        for (uint64_t off = 0; off < total; off += (uint64_t)page)
            ((volatile char *)map)[off] = 0;
    }
    munmap(map, total);
}

static int cpu_phys_create(nx_dev_t *dev, uint64_t chunk_bytes, uint32_t count, nx_err_t *err)
{
    cpu_dev_t *cpu = impl_of(dev);
    uint64_t total = chunk_bytes * count;
    uint64_t avail = 0, mem_total = 0;
    int rc = cpu_mem_info(dev, &avail, &mem_total, err);
    if (rc != NX_OK)
        return rc;
    /* fallocate on a memfd does not check this itself: it would push the machine into swap or
     * the OOM killer instead of failing. */
    if (total > avail)
        return nx_err_set(err, NX_ENOMEM,
                          "cpu backend: pool of %" PRIu64 " bytes is more than the %" PRIu64
                          " bytes of available RAM (MemAvailable)",
                          total, avail);
    int fd = memfd_create("nexus-pool", MFD_CLOEXEC);
    if (fd < 0)
        return nx_err_set(err, NX_ENOMEM, "cpu backend: memfd_create failed: %s",
                          strerror(errno));
    if (ftruncate(fd, (off_t)total) != 0) {
        rc = nx_err_set(err, NX_ENOMEM, "cpu backend: ftruncate of the pool memfd to %" PRIu64
                        " bytes failed: %s", total, strerror(errno));
        goto out_close;
    }
    int e = posix_fallocate(fd, 0, (off_t)total);
    if (e != 0) {
        rc = nx_err_set(err, NX_ENOMEM, "cpu backend: reserving %" PRIu64
                        " bytes of RAM for the pool (fallocate) failed: %s", total, strerror(e));
        goto out_close;
    }
    prefault(fd, total);
    cpu->memfd = fd;
    cpu->chunk_bytes = chunk_bytes;
    cpu->chunk_count = count;
    return NX_OK;

out_close:
    close(fd);
    return rc;
}

static void cpu_prepare(nx_dev_t *dev, void *ptr, size_t bytes)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)ptr / page * page;
    uintptr_t end = ((uintptr_t)ptr + bytes + page - 1) / page * page;
    if (end > start)
        madvise((void *)start, end - start, MADV_POPULATE_READ); /* faults later if refused */
}

static int cpu_map(nx_dev_t *dev, const uint32_t *chunks, uint32_t count, void **va_out,
                   nx_err_t *err)
{
    cpu_dev_t *cpu = impl_of(dev);
    size_t chunk = cpu->chunk_bytes;
    size_t range = chunk * count;
    char *base = mmap(NULL, range, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return nx_err_set(err, NX_ENOMEM, "cpu backend: reserving %zu bytes of address space "
                          "failed: %s", range, strerror(errno));
    /* One mmap per run of consecutive chunk indices. The page tables are not built here
     * (MAP_POPULATE would do it on this one thread: 35 ms for 1.2 GB on the 2-core VM, a
     * quarter of a warm load); writers call prepare() on the part they are about to fill,
     * in parallel, which keeps the benefit (one batched populate instead of a fault per
     * 4 KiB page: 31 ms vs 83 ms for map + first memcpy of 256 MiB) without the serial cost. */
    for (uint32_t i = 0; i < count;) {
        uint32_t run = 1;
        while (i + run < count && chunks[i + run] == chunks[i] + run)
            run++;
        void *at = mmap(base + (size_t)i * chunk, (size_t)run * chunk, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_FIXED, cpu->memfd,
                        (off_t)chunks[i] * (off_t)chunk);
        if (at == MAP_FAILED) {
            int e = errno;
            munmap(base, range);
            return nx_err_set(err, NX_ENOMEM, "cpu backend: mapping chunks %" PRIu32 "..%" PRIu32
                              " failed: %s", chunks[i], chunks[i] + run - 1, strerror(e));
        }
        i += run;
    }
    *va_out = base;
    return NX_OK;
}

static void cpu_unmap(nx_dev_t *dev, void *va, uint32_t count)
{
    if (va)
        munmap(va, (size_t)impl_of(dev)->chunk_bytes * count);
}

static size_t round_to_page(nx_dev_t *dev, size_t bytes)
{
    size_t page = impl_of(dev)->page_bytes;
    return (bytes + page - 1) / page * page;
}

static void *cpu_host_alloc(nx_dev_t *dev, size_t bytes, nx_err_t *err)
{
    if (bytes == 0) {
        nx_err_set(err, NX_EINVAL, "cpu backend: host allocation of 0 bytes");
        return NULL;
    }
    void *p = mmap(NULL, round_to_page(dev, bytes), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        nx_err_set(err, NX_ENOMEM, "cpu backend: host allocation of %zu bytes failed: %s", bytes,
                   strerror(errno));
        return NULL;
    }
    return p;
}

static void cpu_host_free(nx_dev_t *dev, void *ptr, size_t bytes)
{
    if (ptr)
        munmap(ptr, round_to_page(dev, bytes));
}

/* Streams and events need only be distinct from NULL: there is nothing to wait for. */
static char cpu_stream_token, cpu_event_token;

static int cpu_stream_new(nx_dev_t *dev, void **stream_out, nx_err_t *err)
{
    *stream_out = &cpu_stream_token;
    return NX_OK;
}

static void cpu_stream_destroy(nx_dev_t *dev, void *stream)
{
}

static int cpu_stream_sync(nx_dev_t *dev, void *stream, nx_err_t *err)
{
    return NX_OK;
}

static int cpu_event_new(nx_dev_t *dev, void **event_out, nx_err_t *err)
{
    *event_out = &cpu_event_token;
    return NX_OK;
}

static void cpu_event_destroy(nx_dev_t *dev, void *event)
{
}

static int cpu_event_record(nx_dev_t *dev, void *event, void *stream, nx_err_t *err)
{
    return NX_OK;
}

static int cpu_event_sync(nx_dev_t *dev, void *event, nx_err_t *err)
{
    return NX_OK;
}

static int cpu_copy(nx_dev_t *dev, void *dst, const void *src, size_t bytes, void *stream,
                    nx_err_t *err)
{
    memcpy(dst, src, bytes);
    return NX_OK;
}

static const nx_dev_ops_t cpu_ops = {
    .name = "cpu",
    .host_visible = true,
    /* 2 MiB: small enough that rounding wastes little, large enough that a model is a few
     * hundred mmap runs at most (and a transparent huge page where shmem uses them). */
    .default_chunk_bytes = 2ull << 20,
    .close = cpu_close,
    .mem_info = cpu_mem_info,
    .granularity = cpu_granularity,
    .phys_create = cpu_phys_create,
    .phys_release = cpu_phys_release,
    .map = cpu_map,
    .unmap = cpu_unmap,
    .prepare = cpu_prepare,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .stream_new = cpu_stream_new,
    .stream_destroy = cpu_stream_destroy,
    .stream_sync = cpu_stream_sync,
    .event_new = cpu_event_new,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_sync = cpu_event_sync,
    .copy_h2d = cpu_copy,
    .copy_d2h = cpu_copy,
};

nx_dev_t *nx__dev_cpu_open(nx_err_t *err)
{
    nx_dev_t *dev = calloc(1, sizeof *dev);
    cpu_dev_t *cpu = calloc(1, sizeof *cpu);
    if (!dev || !cpu) {
        free(dev);
        free(cpu);
        nx_err_set(err, NX_ENOMEM, "cpu backend: out of host memory opening the device");
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    cpu->memfd = -1;
    cpu->page_bytes = page > 0 ? (uint64_t)page : 4096u;
    dev->ops = &cpu_ops;
    dev->kind = NX_DEVICE_CPU;
    dev->ordinal = 0;
    dev->impl = cpu;
    return dev;
}
