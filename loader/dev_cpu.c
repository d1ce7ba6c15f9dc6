/* dev_cpu.c — the CPU backend: the pool's memory is ordinary host memory, so every code path
 * runs (and is tested) on machines without a GPU.
 *
 * Nothing is touched at start-up: creating a pool checks that MemAvailable covers it (a pool
 * is never bigger than the RAM that was free for it) and records its shape. A region is a
 * fresh private anonymous mapping of its chunks' bytes, checked against MemAvailable again
 * when it is made and faulted in by whoever writes it first (the load pipeline's readers, in
 * parallel, as the reads land). The largest freed region's memory is kept, already faulted in,
 * and the next region is moved into it (mremap): a swap in the daemon (evict one model, load
 * another) then pays no faults, which cost about 0.45 s per GB of first touch on the VM of
 * bench/RESULTS.md. A region's memory is therefore not zero, as on CUDA, where chunks are
 * reused: the loader clears what no file byte covers.
 *
 * Why not one memfd reserved and prefaulted at start-up, the CPU twin of cuMemCreate that this
 * backend used to be: on the 2-core VM of bench/RESULTS.md, reserving (fallocate) and
 * prefaulting a 1.2 GB pool cost 0.43 + 0.62 s before the first read and closing it 0.32 s
 * after the last, more than the load itself; and faulting shmem pages in lazily costs twice
 * what anonymous pages do (1.0-1.1 s against 0.5-0.57 s per 1.2 GB, freeing 0.33-0.39 s
 * against 0.08 s; bench/RESULTS.md, "Loader as a user times it"). The chunks stay, as the
 * pool's unit of accounting, so the pool behaves as on CUDA: a region that fits in the free
 * total is always granted, and contiguity is never an issue (each region is its own mapping).
 * Streams and events are trivial: every copy has completed when it returns.
 */
#include "device.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; older C library headers lack it */
#endif

typedef struct cpu_dev {
    uint64_t chunk_bytes; /* size of one chunk; 0 before phys_create */
    uint32_t chunk_count;
    uint64_t page_bytes;  /* the granularity */
    pthread_mutex_t lock; /* guards the spare */
    void *spare;          /* a freed region's mapping, kept for the next region; or NULL */
    size_t spare_bytes;   /* its length (its chunks are free in the pool's accounting) */
} cpu_dev_t;

static cpu_dev_t *impl_of(nx_dev_t *dev)
{
    return dev->impl;
}

static void cpu_phys_release(nx_dev_t *dev)
{
    cpu_dev_t *cpu = impl_of(dev);
    if (cpu->spare)
        munmap(cpu->spare, cpu->spare_bytes);
    cpu->spare = NULL;
    cpu->spare_bytes = 0;
    cpu->chunk_bytes = 0;
    cpu->chunk_count = 0;
}

static void cpu_close(nx_dev_t *dev)
{
    cpu_phys_release(dev);
    pthread_mutex_destroy(&impl_of(dev)->lock);
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

/* Fails with NX_ENOMEM, naming `what`, when MemAvailable is less than `bytes`: anonymous memory
 * is not reserved by mapping it, so this check is what keeps a pool or a region from pushing
 * the machine into swap or the OOM killer instead of failing. */
static int check_available(nx_dev_t *dev, uint64_t bytes, const char *what, nx_err_t *err)
{
    uint64_t avail = 0, mem_total = 0;
    int rc = cpu_mem_info(dev, &avail, &mem_total, err);
    if (rc != NX_OK)
        return rc;
    if (bytes > avail)
        return nx_err_set(err, NX_ENOMEM,
                          "cpu backend: %s of %" PRIu64 " bytes is more than the %" PRIu64
                          " bytes of available RAM (MemAvailable)",
                          what, bytes, avail);
    return NX_OK;
}

static int cpu_phys_create(nx_dev_t *dev, uint64_t chunk_bytes, uint32_t count, nx_err_t *err)
{
    cpu_dev_t *cpu = impl_of(dev);
    int rc = check_available(dev, chunk_bytes * count, "pool", err);
    if (rc != NX_OK)
        return rc;
    cpu->chunk_bytes = chunk_bytes;
    cpu->chunk_count = count;
    return NX_OK;
}

/* The writer builds the page tables of the part it is about to fill, in its own thread, which
 * also allocates and zeroes the pages there (in parallel across readers, overlapped with
 * other readers' I/O): one batched populate instead of a fault per 4 KiB page. POPULATE_WRITE,
 * not _READ: a read populate of anonymous memory maps the shared zero page, and the write
 * that follows faults every page again. Best effort: refused, the faults happen later. */
static void cpu_prepare(nx_dev_t *dev, void *ptr, size_t bytes)
{
    uintptr_t page = (uintptr_t)impl_of(dev)->page_bytes;
    uintptr_t start = (uintptr_t)ptr / page * page;
    uintptr_t end = ((uintptr_t)ptr + bytes + page - 1) / page * page;
    if (end > start)
        madvise((void *)start, end - start, MADV_POPULATE_WRITE);
}

/* MADV_COLLAPSE of the 2 MiB pages wholly inside [ptr, ptr + bytes): the kernel copies each
 * into a fresh huge page and remaps it, whatever the THP settings say (it works with
 * `enabled=madvise` and no MADV_HUGEPAGE, so the load's faults stay 4 KiB and fast). One call
 * per 2 MiB so that a refusal costs only that page: EAGAIN (a page busy) and ENOMEM (no huge
 * page to be had just now: seen on the VM of bench/RESULTS.md under memory pressure, for a
 * third of a 7.5 GB region) skip it, and COLLAPSE_GIVE_UP of them in a row end the call;
 * EINVAL (a kernel before 6.1, or memory it cannot collapse) ends it at once. Counts what is
 * huge afterwards. */
#define COLLAPSE_GIVE_UP 16

static uint64_t cpu_collapse(nx_dev_t *dev, void *ptr, size_t bytes)
{
    const uintptr_t huge = 2u << 20;
    uintptr_t start = ((uintptr_t)ptr + huge - 1) / huge * huge;
    uintptr_t end = ((uintptr_t)ptr + bytes) / huge * huge;
    uint64_t done = 0;
    int refused = 0;
    for (uintptr_t at = start; at < end && refused < COLLAPSE_GIVE_UP; at += huge) {
        if (madvise((void *)at, huge, MADV_COLLAPSE) == 0) {
            done += huge;
            refused = 0;
            continue;
        }
        int e = errno;
        refused = e == EAGAIN || e == ENOMEM ? refused + 1 : COLLAPSE_GIVE_UP;
        nx_log(NX_LOG_DEBUG, "cpu backend: MADV_COLLAPSE of 2 MiB at %p refused (%s)%s",
               (void *)at, strerror(e),
               refused < COLLAPSE_GIVE_UP ? "" : "; the rest stays in 4 KiB pages");
    }
    return done;
}

/* The spare mapping resized to `range` bytes, or NULL when there is none (or mremap refused:
 * then it is dropped). Its pages stay faulted in; growing it faults in only the new part. */
static void *take_spare(nx_dev_t *dev, size_t range, nx_err_t *err, int *rc)
{
    cpu_dev_t *cpu = impl_of(dev);
    pthread_mutex_lock(&cpu->lock);
    void *spare = cpu->spare;
    size_t spare_bytes = cpu->spare_bytes;
    cpu->spare = NULL;
    cpu->spare_bytes = 0;
    pthread_mutex_unlock(&cpu->lock);
    *rc = NX_OK;
    if (!spare || spare_bytes == range)
        return spare;
    if (range > spare_bytes) {
        *rc = check_available(dev, range - spare_bytes, "region", err);
        if (*rc != NX_OK) {
            munmap(spare, spare_bytes);
            return NULL;
        }
    }
    void *moved = mremap(spare, spare_bytes, range, MREMAP_MAYMOVE);
    if (moved != MAP_FAILED)
        return moved;
    munmap(spare, spare_bytes);
    return NULL;
}

static int cpu_map(nx_dev_t *dev, const uint32_t *chunks, uint32_t count, void **va_out,
                   nx_err_t *err)
{
    cpu_dev_t *cpu = impl_of(dev);
    size_t range = (size_t)cpu->chunk_bytes * count;
    int rc;
    void *base = take_spare(dev, range, err, &rc);
    if (rc != NX_OK)
        return rc;
    if (base) {
        *va_out = base;
        return NX_OK;
    }
    rc = check_available(dev, range, "region", err);
    if (rc != NX_OK)
        return rc;
    /* No MAP_POPULATE: faulting 1.2 GB in on this one thread would cost ~0.5 s here before the
     * first read; the readers do it part by part (prepare, or the O_DIRECT read itself). */
    base = mmap(NULL, range, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return nx_err_set(err, NX_ENOMEM, "cpu backend: mapping a region of %zu bytes failed: %s",
                          range, strerror(errno));
    *va_out = base;
    return NX_OK;
}

/* The freed region becomes the spare when it is larger than the one kept (one spare at most:
 * its chunks are free in the pool, so live regions plus the spare never exceed the pool). */
static void cpu_unmap(nx_dev_t *dev, void *va, uint32_t count)
{
    if (!va)
        return;
    cpu_dev_t *cpu = impl_of(dev);
    size_t bytes = (size_t)cpu->chunk_bytes * count;
    pthread_mutex_lock(&cpu->lock);
    if (bytes > cpu->spare_bytes) {
        void *old = cpu->spare;
        size_t old_bytes = cpu->spare_bytes;
        cpu->spare = va;
        cpu->spare_bytes = bytes;
        va = old;
        bytes = old_bytes;
    }
    pthread_mutex_unlock(&cpu->lock);
    if (va)
        munmap(va, bytes);
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
    /* Not populated: host memory on CPU is not pinned, so there is nothing to gain from
     * touching it at start-up, and the host cache (256 MiB by default) and the staging ring
     * (used only for unaligned data sections on CPU) would cost their full size before the
     * first load (64 MiB of staging: 25-60 ms of a 1 s nexusctl model load here). */
    void *p = mmap(NULL, round_to_page(dev, bytes), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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

static int cpu_zero(nx_dev_t *dev, void *dst, size_t bytes, void *stream, nx_err_t *err)
{
    memset(dst, 0, bytes);
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
    .collapse = cpu_collapse,
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
    .zero = cpu_zero,
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
    pthread_mutex_init(&cpu->lock, NULL);
    cpu->page_bytes = page > 0 ? (uint64_t)page : 4096u;
    dev->ops = &cpu_ops;
    dev->kind = NX_DEVICE_CPU;
    dev->ordinal = 0;
    dev->impl = cpu;
    return dev;
}
