/* pool.c — the device pool: a fixed set of equal physical chunks reserved once at start-up,
 * handed out as regions that are each a fresh contiguous virtual range with free chunks mapped
 * into it. Because a region never needs its chunks to be physically adjacent, any request that
 * fits in the free total succeeds, however fragmented the pool is (CUDA virtual memory
 * management; on the CPU backend each region is its own anonymous mapping, see dev_cpu.c).
 *
 * This file holds the device-independent part: chunk bookkeeping, regions, stats, device
 * selection and the synchronous copy helpers. The backends (dev_cpu.c, dev_cuda.c) only create
 * chunks and map them.
 */
#include "device.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nx_region {
    nx_pool_t *pool;
    char owner[128];          /* copied from the caller; "" when none was given */
    uint32_t *chunks;         /* physical chunk indices, in virtual-address order */
    uint32_t chunk_count;
    void *va;                 /* base of the contiguous virtual range */
    uint64_t requested_bytes; /* as asked for */
    uint64_t held_bytes;      /* chunk_count * chunk_bytes */
    uint64_t id;              /* 1, 2, ... in allocation order; for logs */
    nx_region_t *prev, *next; /* the pool's list of live regions */
};

struct nx_pool {
    nx_dev_t *dev;
    /* Locked by the const accessors too (stats, regions), so the mutex is logically mutable. */
    pthread_mutex_t lock;
    uint64_t chunk_bytes;
    uint32_t chunk_count;
    uint32_t free_count;
    uint8_t *chunk_used;  /* [chunk_count]: 1 when the chunk belongs to a region */
    nx_region_t *regions; /* live regions, newest first */
    size_t region_count;
    uint64_t next_id;
};

/* ---------------------------------------------------------------------------------------
 * Names and formatting
 */

const char *nx_device_name(nx_device_kind_t kind)
{
    switch (kind) {
    case NX_DEVICE_AUTO:
        return "auto";
    case NX_DEVICE_CPU:
        return "cpu";
    case NX_DEVICE_CUDA:
        return "cuda";
    }
    return "?";
}

bool nx_device_parse(const char *name, nx_device_kind_t *kind_out)
{
    static const nx_device_kind_t kinds[] = {NX_DEVICE_AUTO, NX_DEVICE_CPU, NX_DEVICE_CUDA};
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(name, nx_device_name(kinds[i])) == 0) {
            if (kind_out)
                *kind_out = kinds[i];
            return true;
        }
    }
    return false;
}

/* "96.0 MiB", "1.5 GiB", "512 B" into buf; returns buf. */
static const char *fmt_bytes(uint64_t bytes, char *buf, size_t cap)
{
    static const char *units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, cap, "%" PRIu64 " B", bytes);
        return buf;
    }
    double value = (double)bytes / 1024.0;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    snprintf(buf, cap, "%.1f %s", value, units[unit]);
    return buf;
}

/* ---------------------------------------------------------------------------------------
 * CUDA availability (tried once per process)
 */

static pthread_once_t cuda_probe_once = PTHREAD_ONCE_INIT;
static bool cuda_probe_ok;
static nx_err_t cuda_probe_err;

static void cuda_probe(void)
{
    nx_err_clear(&cuda_probe_err);
    nx_dev_t *dev = nx__dev_cuda_open(0, &cuda_probe_err);
    cuda_probe_ok = dev != NULL;
    nx__dev_close(&dev);
}

bool nx_cuda_available(nx_err_t *reason)
{
    pthread_once(&cuda_probe_once, cuda_probe);
    if (!cuda_probe_ok && reason)
        *reason = cuda_probe_err;
    if (cuda_probe_ok && reason)
        nx_err_clear(reason);
    return cuda_probe_ok;
}

void nx__dev_close(nx_dev_t **dev_p)
{
    if (!dev_p || !*dev_p)
        return;
    nx_dev_t *dev = *dev_p;
    dev->ops->close(dev);
    free(dev);
    *dev_p = NULL;
}

/* ---------------------------------------------------------------------------------------
 * Creating and destroying the pool
 */

static atomic_bool auto_fallback_logged;

/* Open the backend that opts ask for; AUTO falls back to CPU with one log line per process. */
static nx_dev_t *open_device(const nx_pool_opts_t *opts, nx_err_t *err)
{
    if (opts->device == NX_DEVICE_CPU)
        return nx__dev_cpu_open(err);
    nx_err_t cuda_err;
    nx_err_clear(&cuda_err);
    nx_dev_t *dev = nx__dev_cuda_open(opts->cuda_ordinal, &cuda_err);
    if (dev)
        return dev;
    if (opts->device == NX_DEVICE_CUDA) {
        if (err)
            *err = cuda_err;
        return NULL;
    }
    if (!atomic_exchange(&auto_fallback_logged, true))
        nx_log(NX_LOG_INFO, "using the CPU backend: %s", cuda_err.msg);
    return nx__dev_cpu_open(err);
}

static int validate_opts(const nx_pool_opts_t *opts, nx_err_t *err)
{
    if (opts->device != NX_DEVICE_AUTO && opts->device != NX_DEVICE_CPU &&
        opts->device != NX_DEVICE_CUDA)
        return nx_err_set(err, NX_EINVAL, "pool options: unknown device kind %d",
                          (int)opts->device);
    if (opts->bytes == 0 && !(opts->fraction > 0.0 && opts->fraction <= 1.0))
        return nx_err_set(err, NX_EINVAL,
                          "pool options: bytes is 0, so fraction must be in (0, 1], not %g",
                          opts->fraction);
    if (opts->cuda_ordinal < 0)
        return nx_err_set(err, NX_EINVAL, "pool options: cuda_ordinal %d is negative",
                          opts->cuda_ordinal);
    return NX_OK;
}

/* The chunk size (a multiple of the granularity) and the number of chunks. */
static int size_pool(nx_pool_t *pool, const nx_pool_opts_t *opts, nx_err_t *err)
{
    nx_dev_t *dev = pool->dev;
    uint64_t gran = dev->ops->granularity(dev);
    /* Each backend says why its default is what it is (dev_cpu.c, dev_cuda.c). */
    uint64_t chunk = opts->chunk_bytes ? opts->chunk_bytes : dev->ops->default_chunk_bytes;
    chunk = (chunk + gran - 1) / gran * gran;

    uint64_t bytes = opts->bytes;
    if (bytes == 0) {
        uint64_t free_bytes = 0, total_bytes = 0;
        int rc = dev->ops->mem_info(dev, &free_bytes, &total_bytes, err);
        if (rc != NX_OK)
            return rc;
        bytes = (uint64_t)((double)free_bytes * opts->fraction);
    }
    uint64_t count = bytes / chunk;
    if (count == 0)
        count = 1;
    if (count > UINT32_MAX) {
        char buf[32], cbuf[32];
        return nx_err_set(err, NX_EINVAL, "pool '%s': %s is more than 2^32 chunks of %s",
                          dev->ops->name, fmt_bytes(bytes, buf, sizeof buf),
                          fmt_bytes(chunk, cbuf, sizeof cbuf));
    }
    pool->chunk_bytes = chunk;
    pool->chunk_count = (uint32_t)count;
    pool->free_count = (uint32_t)count;
    return NX_OK;
}

nx_pool_t *nx_pool_new(const nx_pool_opts_t *opts, nx_err_t *err)
{
    nx_err_clear(err);
    if (!opts) {
        nx_err_set(err, NX_EINVAL, "pool options: none given");
        return NULL;
    }
    if (validate_opts(opts, err) != NX_OK)
        return NULL;
    nx_pool_t *pool = calloc(1, sizeof *pool);
    if (!pool) {
        nx_err_set(err, NX_ENOMEM, "pool: out of host memory for the pool object");
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pool->next_id = 1;
    pool->dev = open_device(opts, err);
    if (!pool->dev)
        goto out_free_pool;
    if (size_pool(pool, opts, err) != NX_OK)
        goto out_close_dev;
    pool->chunk_used = calloc(pool->chunk_count, 1);
    if (!pool->chunk_used) {
        nx_err_set(err, NX_ENOMEM, "pool: out of host memory for %" PRIu32 " chunk flags",
                   pool->chunk_count);
        goto out_close_dev;
    }
    if (pool->dev->ops->phys_create(pool->dev, pool->chunk_bytes, pool->chunk_count, err) !=
        NX_OK)
        goto out_free_used;
    char tbuf[32], cbuf[32];
    nx_log(NX_LOG_DEBUG, "pool '%s': reserved %s as %" PRIu32 " chunks of %s",
           pool->dev->ops->name,
           fmt_bytes(pool->chunk_bytes * pool->chunk_count, tbuf, sizeof tbuf),
           pool->chunk_count, fmt_bytes(pool->chunk_bytes, cbuf, sizeof cbuf));
    return pool;

out_free_used:
    free(pool->chunk_used);
out_close_dev:
    nx__dev_close(&pool->dev);
out_free_pool:
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    return NULL;
}

int nx_pool_plan(const nx_pool_opts_t *opts, nx_pool_plan_t *out, nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!opts)
        return nx_err_set(err, NX_EINVAL, "pool options: none given");
    int rc = validate_opts(opts, err);
    if (rc != NX_OK)
        return rc;
    nx_dev_t *dev = open_device(opts, err);
    if (!dev)
        return err && err->code ? err->code : NX_EDEVICE;
    out->device = dev->kind;
    rc = dev->ops->mem_info(dev, &out->free_bytes, &out->total_bytes, err);
    const char *name = dev->ops->name;
    nx__dev_close(&dev);
    if (rc != NX_OK)
        return rc;
    out->bytes = opts->bytes ? opts->bytes : (uint64_t)((double)out->free_bytes * opts->fraction);
    if (out->bytes > out->free_bytes) {
        char want[32], free_text[32], total_text[32];
        return nx_err_set(err, NX_ENOMEM,
                          "pool of %" PRIu64 " bytes (%s) is more than the %" PRIu64
                          " bytes (%s) free of %s on this machine's %s device",
                          out->bytes, fmt_bytes(out->bytes, want, sizeof want), out->free_bytes,
                          fmt_bytes(out->free_bytes, free_text, sizeof free_text),
                          fmt_bytes(out->total_bytes, total_text, sizeof total_text), name);
    }
    return NX_OK;
}

static void region_release(nx_pool_t *pool, nx_region_t *region);

void nx_pool_destroy(nx_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_pool_t *pool = *self_p;
    if (pool->region_count > 0)
        nx_log(NX_LOG_WARN, "pool '%s': destroyed with %zu live region(s); unmapping them",
               pool->dev->ops->name, pool->region_count);
    while (pool->regions) {
        nx_region_t *region = pool->regions;
        nx_log(NX_LOG_WARN, "pool '%s': region %" PRIu64 " ('%s', %" PRIu64 " bytes) was not freed",
               pool->dev->ops->name, region->id, region->owner, region->held_bytes);
        region_release(pool, region);
    }
    pool->dev->ops->phys_release(pool->dev);
    nx__dev_close(&pool->dev);
    free(pool->chunk_used);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    *self_p = NULL;
}

nx_device_kind_t nx_pool_device(const nx_pool_t *self)
{
    return self->dev->kind;
}

nx_dev_t *nx__pool_dev(const nx_pool_t *pool)
{
    return pool->dev;
}

/* ---------------------------------------------------------------------------------------
 * Chunk bookkeeping (called with the lock held)
 */

/* Take `need` free chunks into out[]: the first run of `need` consecutive free chunks when
 * there is one (the CPU backend then maps it with one mmap), else the lowest free chunks. */
static void take_chunks(nx_pool_t *pool, uint32_t need, uint32_t *out)
{
    uint32_t run_start = 0, run_len = 0;
    for (uint32_t i = 0; i < pool->chunk_count && run_len < need; i++) {
        if (pool->chunk_used[i]) {
            run_len = 0;
            continue;
        }
        if (run_len == 0)
            run_start = i;
        run_len++;
    }
    if (run_len == need) {
        for (uint32_t k = 0; k < need; k++)
            out[k] = run_start + k;
    } else {
        uint32_t taken = 0;
        for (uint32_t i = 0; i < pool->chunk_count && taken < need; i++)
            if (!pool->chunk_used[i])
                out[taken++] = i;
    }
    for (uint32_t k = 0; k < need; k++)
        pool->chunk_used[out[k]] = 1;
    pool->free_count -= need;
}

static void give_chunks(nx_pool_t *pool, const uint32_t *chunks, uint32_t count)
{
    for (uint32_t k = 0; k < count; k++) {
        if (!pool->chunk_used[chunks[k]])
            nx_log(NX_LOG_ERROR, "pool: chunk %" PRIu32 " freed twice", chunks[k]);
        pool->chunk_used[chunks[k]] = 0;
    }
    pool->free_count += count;
}

/* ---------------------------------------------------------------------------------------
 * Regions
 */

static int pool_full(nx_pool_t *pool, uint64_t need_bytes, const char *owner, nx_err_t *err)
{
    char want[32], free_s[32], total[32];
    return nx_err_set(err, NX_EPOOLFULL, "pool '%s': cannot allocate %s for '%s': %s free of %s",
                      pool->dev->ops->name, fmt_bytes(need_bytes, want, sizeof want), owner,
                      fmt_bytes((uint64_t)pool->free_count * pool->chunk_bytes, free_s,
                                sizeof free_s),
                      fmt_bytes((uint64_t)pool->chunk_count * pool->chunk_bytes, total,
                                sizeof total));
}

nx_region_t *nx_pool_alloc(nx_pool_t *self, uint64_t bytes, const char *owner, nx_err_t *err)
{
    nx_err_clear(err);
    const char *who = owner ? owner : "";
    if (bytes == 0) {
        nx_err_set(err, NX_EINVAL, "pool '%s': cannot allocate 0 bytes for '%s'",
                   self->dev->ops->name, who);
        return NULL;
    }
    uint64_t need64 = bytes / self->chunk_bytes + (bytes % self->chunk_bytes != 0);
    nx_region_t *region = calloc(1, sizeof *region);
    uint32_t *chunks = need64 <= self->chunk_count ? malloc(need64 * sizeof *chunks) : NULL;
    if (!region || (!chunks && need64 <= self->chunk_count)) {
        nx_err_set(err, NX_ENOMEM, "pool '%s': out of host memory for a region of '%s'",
                   self->dev->ops->name, who);
        goto out_free;
    }
    uint32_t need = (uint32_t)need64;

    pthread_mutex_lock(&self->lock);
    if (need64 > self->free_count) {
        /* The request rounded up to whole chunks, unless that would overflow. */
        uint64_t want = need64 <= UINT64_MAX / self->chunk_bytes ? need64 * self->chunk_bytes
                                                                  : bytes;
        pool_full(self, want, who, err);
        pthread_mutex_unlock(&self->lock);
        goto out_free;
    }
    take_chunks(self, need, chunks);
    region->id = self->next_id++;
    pthread_mutex_unlock(&self->lock);

    /* Mapping may populate page tables (slow for big regions): done outside the lock. The
     * chunks are already ours, so no other thread can hand them out meanwhile. */
    int rc = self->dev->ops->map(self->dev, chunks, need, &region->va, err);
    if (rc != NX_OK) {
        nx_err_prefix(err, "pool '%s': region for '%s': ", self->dev->ops->name, who);
        pthread_mutex_lock(&self->lock);
        give_chunks(self, chunks, need);
        pthread_mutex_unlock(&self->lock);
        goto out_free;
    }
    region->pool = self;
    snprintf(region->owner, sizeof region->owner, "%s", who);
    region->chunks = chunks;
    region->chunk_count = need;
    region->requested_bytes = bytes;
    region->held_bytes = need64 * self->chunk_bytes;

    pthread_mutex_lock(&self->lock);
    region->next = self->regions;
    if (self->regions)
        self->regions->prev = region;
    self->regions = region;
    self->region_count++;
    pthread_mutex_unlock(&self->lock);
    return region;

out_free:
    free(chunks);
    free(region);
    return NULL;
}

/* Unlink, unmap, give the chunks back and free the struct. */
static void region_release(nx_pool_t *pool, nx_region_t *region)
{
    pthread_mutex_lock(&pool->lock);
    if (region->prev)
        region->prev->next = region->next;
    else
        pool->regions = region->next;
    if (region->next)
        region->next->prev = region->prev;
    pool->region_count--;
    pthread_mutex_unlock(&pool->lock);

    /* Unmapped before the chunks go back, so that no new region can see them while they
     * are still mapped here. */
    pool->dev->ops->unmap(pool->dev, region->va, region->chunk_count);

    pthread_mutex_lock(&pool->lock);
    give_chunks(pool, region->chunks, region->chunk_count);
    pthread_mutex_unlock(&pool->lock);
    free(region->chunks);
    free(region);
}

void nx_pool_free(nx_pool_t *self, nx_region_t **region_p)
{
    if (!region_p || !*region_p)
        return;
    nx_region_t *region = *region_p;
    assert(region->pool == self);
    region_release(self, region);
    *region_p = NULL;
}

void *nx_region_ptr(const nx_region_t *region)
{
    return region->va;
}

uint64_t nx_region_bytes(const nx_region_t *region)
{
    return region->held_bytes;
}

uint64_t nx_region_collapse(const nx_region_t *region, uint64_t offset, uint64_t bytes)
{
    nx_dev_t *dev = region->pool->dev;
    if (!dev->ops->collapse || offset >= region->held_bytes)
        return 0;
    if (bytes > region->held_bytes - offset)
        bytes = region->held_bytes - offset;
    return dev->ops->collapse(dev, (char *)region->va + offset, (size_t)bytes);
}

const char *nx_region_owner(const nx_region_t *region)
{
    return region->owner;
}

/* ---------------------------------------------------------------------------------------
 * Stats
 */

void nx_pool_stats(const nx_pool_t *self, nx_pool_stats_t *out)
{
    nx_pool_t *pool = (nx_pool_t *)self; /* for the lock only */
    pthread_mutex_lock(&pool->lock);
    out->device = pool->dev->kind;
    out->chunk_bytes = pool->chunk_bytes;
    out->total_bytes = (uint64_t)pool->chunk_count * pool->chunk_bytes;
    out->free_bytes = (uint64_t)pool->free_count * pool->chunk_bytes;
    out->used_bytes = out->total_bytes - out->free_bytes;
    out->region_count = pool->region_count;
    pthread_mutex_unlock(&pool->lock);
}

size_t nx_pool_regions(const nx_pool_t *self, nx_pool_region_info_t *out, size_t cap)
{
    nx_pool_t *pool = (nx_pool_t *)self; /* for the lock only */
    pthread_mutex_lock(&pool->lock);
    size_t i = 0;
    for (const nx_region_t *r = pool->regions; r && i < cap; r = r->next, i++) {
        snprintf(out[i].owner, sizeof out[i].owner, "%s", r->owner);
        out[i].bytes = r->held_bytes;
        out[i].address = (uintptr_t)r->va;
    }
    size_t count = pool->region_count;
    pthread_mutex_unlock(&pool->lock);
    return count;
}

/* ---------------------------------------------------------------------------------------
 * Synchronous copies
 */

/* NX_OK when [ptr, ptr+bytes) lies inside one live region: a bad range becomes an error
 * message instead of a device fault. */
static int check_range(nx_pool_t *pool, const void *ptr, size_t bytes, const char *what,
                       nx_err_t *err)
{
    uintptr_t lo = (uintptr_t)ptr;
    int rc = NX_EINVAL;
    pthread_mutex_lock(&pool->lock);
    for (const nx_region_t *r = pool->regions; r; r = r->next) {
        uintptr_t base = (uintptr_t)r->va;
        if (lo >= base && lo - base <= r->held_bytes && bytes <= r->held_bytes - (lo - base)) {
            rc = NX_OK;
            break;
        }
    }
    pthread_mutex_unlock(&pool->lock);
    if (rc != NX_OK)
        nx_err_set(err, rc, "pool '%s': %s of %zu bytes at %p is not inside one region",
                   pool->dev->ops->name, what, bytes, ptr);
    return rc;
}

int nx_pool_copy_to_host(nx_pool_t *self, void *host_dst, const void *pool_src, size_t bytes,
                         nx_err_t *err)
{
    nx_err_clear(err);
    if (bytes == 0)
        return NX_OK;
    int rc = check_range(self, pool_src, bytes, "copy to host", err);
    if (rc != NX_OK)
        return rc;
    return self->dev->ops->copy_d2h(self->dev, host_dst, pool_src, bytes, NULL, err);
}

int nx_pool_copy_from_host(nx_pool_t *self, void *pool_dst, const void *host_src, size_t bytes,
                           nx_err_t *err)
{
    nx_err_clear(err);
    if (bytes == 0)
        return NX_OK;
    int rc = check_range(self, pool_dst, bytes, "copy from host", err);
    if (rc != NX_OK)
        return rc;
    return self->dev->ops->copy_h2d(self->dev, pool_dst, host_src, bytes, NULL, err);
}
