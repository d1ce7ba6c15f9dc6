/* pipeline.c — the load pipeline: checkpoint files -> one pool region, at the hardware's limit.
 *
 * Each file's data section is cut into chunks on 4 KiB-aligned file offsets. Reader threads
 * take chunks in file order from one shared counter (so the disk sees near-sequential large
 * reads), each keeping queue_depth reads in flight on its io_uring (one pread at a time where
 * io_uring is refused: reader_main). A chunk is read with O_DIRECT when its pages are not in
 * the page cache (mincore) and buffered when they are, into one of the slot's pinned staging
 * buffers, then issue one
 * asynchronous host-to-device copy per chunk on the slot's stream and record an event; a
 * buffer is reused only after its event completed, so reads and copies overlap.
 *
 * Where the pool is host memory (CPU backend) staging is skipped when it can be: buffered
 * reads land directly in the region, and so do O_DIRECT reads, because there the layout puts
 * each data section at its file's offset within a 4 KiB page (nx__model_layout), so region and
 * file offsets are equally aligned even for Hugging Face files, whose data starts anywhere.
 *
 * Staging slots (stream + buffers + events) belong to the loader and are allocated once, in
 * nx_loader_new: no timed load allocates pinned memory. Concurrent loads share the slots.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "device.h"
#include "hostcache.h"
#include "model.h"
#include "uring.h"

#define DIRECT_ALIGN 4096ull
/* Pread threads where io_uring is refused and no thread count was given: measured with
 * bench/loader (bench/RESULTS.md, "Loader defaults"). io_uring's shape comes from
 * nx_io_shape_for (ioshape.c): a calibration, the device rule, or its defaults. */
#define DEFAULT_THREADS 4u
#define DEFAULT_BUFS_PER_SLOT 2u
#define MAX_QUEUE_DEPTH 64u

typedef struct slot {
    nx__ring_t *ring; /* io_uring reads (its staging buffers registered); NULL: pread */
    void *stream;
    void **buf;    /* staging buffers of chunk_bytes each */
    void **event;  /* one per buffer: the copy out of it is done */
    bool *pending; /* event recorded and not yet waited for */
    uint32_t next; /* the buffer to use next (round robin) */
} slot_t;

struct nx_loader {
    nx_pool_t *pool;
    nx_dev_t *dev;
    nx_hostcache_t *cache;
    uint32_t threads;
    uint64_t chunk_bytes;
    uint32_t bufs_per_slot;
    uint32_t queue_depth; /* io_uring reads in flight per reader; 0: pread threads */
    nx_io_source_t source; /* what chose threads, queue_depth and chunk_bytes */
    char source_why[256];  /* nx_io_shape_for's line, or "" */
    nx_read_mode_t read_mode;
    slot_t *slots;
    bool *slot_busy;
    uint32_t slot_count;
    pthread_mutex_t lock;
    pthread_cond_t slot_freed;
};

static uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* ---- set-up --------------------------------------------------------------------------- */

static void slot_release_resources(nx_dev_t *dev, slot_t *s, uint32_t nbuf,
                                   uint64_t buf_bytes)
{
    for (uint32_t j = 0; j < nbuf; j++) {
        if (s->event && s->event[j])
            dev->ops->event_destroy(dev, s->event[j]);
        if (s->buf && s->buf[j])
            dev->ops->host_free(dev, s->buf[j], buf_bytes);
    }
    nx__ring_destroy(&s->ring);
    if (s->stream)
        dev->ops->stream_destroy(dev, s->stream);
    free(s->buf);
    free(s->event);
    free(s->pending);
    memset(s, 0, sizeof *s);
}

static int slot_init(nx_loader_t *self, slot_t *s, nx_err_t *err)
{
    nx_dev_t *dev = self->dev;
    uint32_t n = self->bufs_per_slot;
    s->buf = calloc(n, sizeof *s->buf);
    s->event = calloc(n, sizeof *s->event);
    s->pending = calloc(n, sizeof *s->pending);
    if (!s->buf || !s->event || !s->pending)
        return nx_err_set(err, NX_ENOMEM, "loader: out of memory");
    int rc = dev->ops->stream_new(dev, &s->stream, err);
    for (uint32_t j = 0; rc == NX_OK && j < n; j++) {
        s->buf[j] = dev->ops->host_alloc(dev, self->chunk_bytes, err);
        if (!s->buf[j])
            return err ? err->code : NX_ENOMEM;
        rc = dev->ops->event_new(dev, &s->event[j], err);
    }
    return rc;
}

static atomic_bool uring_fallback_logged;

/* Whether reads can go through io_uring here: a ring of `depth` is made and dropped. Where the
 * kernel refuses (-ENOSYS, -EPERM: an old kernel, seccomp, a container) the loader reads with
 * pread threads instead, with one log line per process, unless `required` (NX_LOADER_IO names
 * io_uring), which makes the refusal an error. */
static int uring_probe(uint32_t depth, bool required, bool *usable, nx_err_t *err)
{
    nx_err_t ring_err = {0};
    nx__ring_t *ring = nx__ring_new(depth, NULL, 0, 0, &ring_err);
    *usable = ring != NULL;
    nx__ring_destroy(&ring);
    if (*usable)
        return NX_OK;
    if (required || ring_err.code != NX_ENOTSUP) {
        *err = ring_err;
        nx_err_prefix(err, "loader: ");
        return err->code;
    }
    if (!atomic_exchange(&uring_fallback_logged, true))
        nx_log(NX_LOG_INFO, "loader: reading with pread threads: %s", ring_err.msg);
    return NX_OK;
}

/* One ring per slot, the slot's staging buffers registered with it where reads land in them:
 * on host memory they land in the region (even for unaligned data sections: nx__model_layout),
 * and registering would fault in and pin buffers never used (~50 ms of a 1 s nexusctl model
 * load here). */
static int rings_init(nx_loader_t *self, nx_err_t *err)
{
    uint32_t registered = self->dev->ops->host_visible ? 0 : self->bufs_per_slot;
    for (uint32_t i = 0; i < self->slot_count; i++) {
        slot_t *s = &self->slots[i];
        s->ring = nx__ring_new(self->queue_depth, s->buf, registered, self->chunk_bytes, err);
        if (!s->ring) {
            nx_err_prefix(err, "loader: ");
            return err->code;
        }
    }
    return NX_OK;
}

/* The shape: explicit values (opts, NX_LOADER_IO) over nx_io_shape_for(shape_path) (a
 * calibration, the device rule) over the defaults. Any explicit value makes it "flag". */
static nx_io_source_t choose_shape(const nx_loader_opts_t *o, nx_io_shape_t *shape,
                                   bool *uring_required, char *why, size_t why_cap)
{
    nx_io_source_t source = NX_IO_SOURCE_DEFAULT;
    why[0] = '\0';
    if (o->shape_path && !(o->threads && o->queue_depth && o->chunk_bytes))
        source = nx_io_shape_for(o->shape_path, shape, why, why_cap);
    else
        nx_io_shape_default(shape);
    nx_loader_io_t io = o->io;
    const char *env = getenv("NX_LOADER_IO");
    if (env && strcmp(env, "threads") == 0)
        io = NX_LOADER_IO_THREADS;
    else if (env && strcmp(env, "io_uring") == 0)
        io = NX_LOADER_IO_URING;
    bool flag = io != NX_LOADER_IO_AUTO || o->threads || o->queue_depth || o->chunk_bytes;
    if (io != NX_LOADER_IO_AUTO)
        shape->io = io;
    else if (o->queue_depth && shape->io == NX_LOADER_IO_THREADS)
        shape->io = NX_LOADER_IO_AUTO; /* reads in flight asked for: io_uring where allowed */
    /* Asked for by name, a refused io_uring is an error; a calibration's is a fallback. */
    *uring_required = io == NX_LOADER_IO_URING;
    if (o->threads)
        shape->threads = o->threads;
    if (o->queue_depth)
        shape->queue_depth = o->queue_depth;
    if (o->chunk_bytes)
        shape->chunk_bytes = o->chunk_bytes;
    return flag ? NX_IO_SOURCE_FLAG : source;
}

nx_loader_t *nx_loader_new(nx_pool_t *pool, const nx_loader_opts_t *opts, nx_err_t *err)
{
    if (!pool) {
        nx_err_set(err, NX_EINVAL, "loader: no pool given");
        return NULL;
    }
    nx_loader_opts_t o = opts ? *opts : (nx_loader_opts_t){0};
    if (o.read_mode != NX_READ_AUTO && o.read_mode != NX_READ_DIRECT &&
        o.read_mode != NX_READ_BUFFERED) {
        nx_err_set(err, NX_EINVAL, "loader: unknown read mode %d", (int)o.read_mode);
        return NULL;
    }
    if (o.threads > 256 || o.chunk_bytes > (1ull << 30) || o.staging_buffers > 1024 ||
        o.queue_depth > MAX_QUEUE_DEPTH) {
        nx_err_set(err, NX_EINVAL,
                   "loader: threads (%u, at most 256), chunk (%llu bytes, at most 1 GiB), "
                   "staging buffers (%u, at most 1024) or queue depth (%u, at most %u) out of "
                   "range",
                   o.threads, (unsigned long long)o.chunk_bytes, o.staging_buffers,
                   o.queue_depth, MAX_QUEUE_DEPTH);
        return NULL;
    }
    if (o.io != NX_LOADER_IO_AUTO && o.io != NX_LOADER_IO_URING && o.io != NX_LOADER_IO_THREADS) {
        nx_err_set(err, NX_EINVAL, "loader: unknown io %d", (int)o.io);
        return NULL;
    }
    nx_loader_t *self = calloc(1, sizeof *self);
    if (!self) {
        nx_err_set(err, NX_ENOMEM, "loader: out of memory");
        return NULL;
    }
    nx_io_shape_t shape;
    bool uring_required;
    self->source = choose_shape(&o, &shape, &uring_required, self->source_why,
                                sizeof self->source_why);
    bool want_uring = shape.io != NX_LOADER_IO_THREADS;
    if (want_uring && uring_probe(shape.queue_depth, uring_required, &want_uring, err) != NX_OK) {
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->slot_freed, NULL);
    self->pool = pool;
    self->dev = nx__pool_dev(pool);
    self->cache = o.cache;
    /* A calibration that found reading through the page cache faster: auto reads buffered. */
    self->read_mode = o.read_mode == NX_READ_AUTO && shape.cold_buffered ? NX_READ_BUFFERED
                                                                          : o.read_mode;
    self->queue_depth = want_uring ? shape.queue_depth : 0;
    /* io_uring refused where the shape was made for it: the pread threads' own default. */
    bool fell_back = !want_uring && shape.io != NX_LOADER_IO_THREADS;
    self->threads = fell_back && !o.threads ? DEFAULT_THREADS : shape.threads;
    self->chunk_bytes = align_up(shape.chunk_bytes, DIRECT_ALIGN);
    self->bufs_per_slot = o.staging_buffers ? (o.staging_buffers + self->threads - 1) / self->threads
                                            : DEFAULT_BUFS_PER_SLOT;
    if (self->bufs_per_slot < 1)
        self->bufs_per_slot = 1;
    /* Each read in flight needs its own staging buffer: a slot holds queue_depth of them. */
    if (self->bufs_per_slot < self->queue_depth)
        self->bufs_per_slot = self->queue_depth;
    self->slot_count = self->threads;
    self->slots = calloc(self->slot_count, sizeof *self->slots);
    self->slot_busy = calloc(self->slot_count, sizeof *self->slot_busy);
    if (!self->slots || !self->slot_busy) {
        nx_err_set(err, NX_ENOMEM, "loader: out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < self->slot_count; i++)
        if (slot_init(self, &self->slots[i], err) != NX_OK) {
            nx_err_prefix(err, "loader: staging buffers (%u x %llu bytes): ",
                          self->slot_count * self->bufs_per_slot,
                          (unsigned long long)self->chunk_bytes);
            goto fail;
        }
    if (self->queue_depth && rings_init(self, err) != NX_OK)
        goto fail;
    return self;
fail:
    nx_loader_destroy(&self);
    return NULL;
}

void nx_loader_shape(const nx_loader_t *self, nx_io_shape_t *shape, nx_io_source_t *source,
                     char *why, size_t why_cap)
{
    *shape = (nx_io_shape_t){
        .io = self->queue_depth ? NX_LOADER_IO_URING : NX_LOADER_IO_THREADS,
        .threads = self->threads,
        .queue_depth = self->queue_depth ? self->queue_depth : 1,
        .chunk_bytes = self->chunk_bytes,
        .cold_buffered = self->read_mode == NX_READ_BUFFERED,
    };
    *source = self->source;
    if (why && why_cap)
        snprintf(why, why_cap, "%s", self->source_why);
}

void nx_loader_destroy(nx_loader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_loader_t *self = *self_p;
    for (uint32_t i = 0; self->slots && i < self->slot_count; i++)
        slot_release_resources(self->dev, &self->slots[i], self->bufs_per_slot,
                               self->chunk_bytes);
    free(self->slots);
    free(self->slot_busy);
    pthread_cond_destroy(&self->slot_freed);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

static slot_t *slot_acquire(nx_loader_t *self)
{
    pthread_mutex_lock(&self->lock);
    for (;;) {
        for (uint32_t i = 0; i < self->slot_count; i++)
            if (!self->slot_busy[i]) {
                self->slot_busy[i] = true;
                pthread_mutex_unlock(&self->lock);
                return &self->slots[i];
            }
        pthread_cond_wait(&self->slot_freed, &self->lock);
    }
}

/* Wait for the slot's copies, then hand it back. Returns the first copy error. */
static int slot_release(nx_loader_t *self, slot_t *s, nx_err_t *err)
{
    int rc = self->dev->ops->stream_sync(self->dev, s->stream, err);
    memset(s->pending, 0, self->bufs_per_slot * sizeof *s->pending);
    pthread_mutex_lock(&self->lock);
    self->slot_busy[s - self->slots] = false;
    pthread_cond_signal(&self->slot_freed);
    pthread_mutex_unlock(&self->lock);
    return rc;
}

/* ---- one load ------------------------------------------------------------------------- */

typedef struct file_job {
    const nx_st_file_t *file;
    int fd;                 /* buffered */
    int fd_direct;          /* O_DIRECT, or -1 when unusable */
    atomic_bool direct_ok;  /* cleared on the first EINVAL */
    uint64_t window0;       /* data_offset rounded down to 4 KiB */
    uint64_t chunk_first;   /* global index of this file's first chunk */
    uint64_t chunk_count;
    uint64_t region_base;   /* where the data section lands in the region */
    unsigned char *resident; /* mincore vector over [window0, file end), or NULL */
} file_job_t;

typedef struct load_ctx {
    nx_loader_t *loader;
    char *region;
    bool host_visible;
    file_job_t *files;
    size_t file_count;
    uint64_t chunk_total;
    const nx__hc_image_t *image; /* restore from the host cache instead of files */
    atomic_uint_fast64_t next_chunk;
    atomic_bool failed;
    atomic_uint direct_chunks, buffered_chunks, fallbacks;
    pthread_mutex_t err_lock;
    nx_err_t err;
} load_ctx_t;

static void ctx_fail(load_ctx_t *ctx, const nx_err_t *err)
{
    pthread_mutex_lock(&ctx->err_lock);
    if (!atomic_load(&ctx->failed)) {
        ctx->err = *err;
        atomic_store(&ctx->failed, true);
    }
    pthread_mutex_unlock(&ctx->err_lock);
}

static int read_exact(int fd, char *dst, uint64_t n, uint64_t off, const char *path,
                      nx_err_t *err)
{
    uint64_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, dst + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return nx_err_set(err, NX_EIO, "'%s': read of %llu bytes at %llu failed: %s", path,
                              (unsigned long long)(n - got), (unsigned long long)(off + got),
                              strerror(errno));
        if (r == 0)
            return nx_err_set(err, NX_EIO,
                              "'%s': file ends at byte %llu, expected at least %llu "
                              "(did it change while loading?)",
                              path, (unsigned long long)(off + got), (unsigned long long)(off + n));
        got += (uint64_t)r;
    }
    return NX_OK;
}

/* O_DIRECT read of [off, off+len) (both 4 KiB aligned) into an aligned dst; the file may end
 * inside it. Falls back to buffered reads on EINVAL or on a short read before the end. */
static int read_direct(load_ctx_t *ctx, file_job_t *f, char *dst, uint64_t off, uint64_t len,
                       nx_err_t *err)
{
    uint64_t need = f->file->file_bytes - off < len ? f->file->file_bytes - off : len;
    uint64_t got = 0;
    while (got < need) {
        ssize_t r = pread(f->fd_direct, dst + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EINVAL) {
            atomic_store(&f->direct_ok, false); /* e.g. a file system without O_DIRECT */
            break;
        }
        if (r < 0)
            return nx_err_set(err, NX_EIO, "'%s': O_DIRECT read at %llu failed: %s",
                              f->file->path, (unsigned long long)(off + got), strerror(errno));
        if (r == 0)
            break;
        got += (uint64_t)r;
        if (got < need && got % DIRECT_ALIGN != 0)
            break; /* short read mid-file: finish buffered */
    }
    if (got < need) {
        atomic_fetch_add(&ctx->fallbacks, 1);
        return read_exact(f->fd, dst + got, need - got, off + got, f->file->path, err);
    }
    return NX_OK;
}

static bool chunk_wants_direct(const load_ctx_t *ctx, file_job_t *f, uint64_t start,
                               uint64_t end)
{
    nx_read_mode_t mode = ctx->loader->read_mode;
    if (mode == NX_READ_BUFFERED || f->fd_direct < 0 || !atomic_load(&f->direct_ok))
        return false;
    if (mode == NX_READ_DIRECT || !f->resident)
        return true;
    uint64_t page = DIRECT_ALIGN, first = (start - f->window0) / page;
    uint64_t last = (end - f->window0 + page - 1) / page, resident = 0;
    for (uint64_t p = first; p < last; p++)
        resident += f->resident[p] & 1;
    return resident * 2 < last - first; /* mostly on disk: bypass the page cache */
}

static file_job_t *file_of_chunk(load_ctx_t *ctx, uint64_t chunk)
{
    size_t lo = 0, hi = ctx->file_count;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (ctx->files[mid].chunk_first <= chunk)
            lo = mid;
        else
            hi = mid;
    }
    return &ctx->files[lo];
}

/* Get the slot's next staging buffer, waiting until the copy out of it finished. */
static char *staging_next(load_ctx_t *ctx, slot_t *s, uint32_t *index, nx_err_t *err)
{
    nx_dev_t *dev = ctx->loader->dev;
    uint32_t j = s->next;
    s->next = (j + 1) % ctx->loader->bufs_per_slot;
    if (s->pending[j]) {
        if (dev->ops->event_sync(dev, s->event[j], err) != NX_OK)
            return NULL;
        s->pending[j] = false;
    }
    *index = j;
    return s->buf[j];
}

static int copy_out(load_ctx_t *ctx, slot_t *s, uint32_t j, char *dst, const char *src,
                    uint64_t n, nx_err_t *err)
{
    nx_dev_t *dev = ctx->loader->dev;
    int rc = dev->ops->copy_h2d(dev, dst, src, n, s->stream, err);
    if (rc == NX_OK)
        rc = dev->ops->event_record(dev, s->event[j], s->stream, err);
    if (rc == NX_OK)
        s->pending[j] = true;
    return rc;
}

/* Region and file offsets of f are equally aligned (nx__model_layout mirrors the data
 * section's page offset on host memory): an O_DIRECT window can land in the region itself. */
static bool lands_aligned(const file_job_t *f)
{
    return f->region_base % DIRECT_ALIGN == f->file->data_offset % DIRECT_ALIGN;
}

static int load_chunk(load_ctx_t *ctx, uint64_t chunk, slot_t **slot, nx_err_t *err)
{
    file_job_t *f = file_of_chunk(ctx, chunk);
    const nx_st_file_t *file = f->file;
    uint64_t chunk_bytes = ctx->loader->chunk_bytes;
    uint64_t win_start = f->window0 + (chunk - f->chunk_first) * chunk_bytes;
    uint64_t win_end = win_start + chunk_bytes < file->file_bytes ? win_start + chunk_bytes
                                                                  : file->file_bytes;
    uint64_t use_start = win_start > file->data_offset ? win_start : file->data_offset;
    uint64_t use_len = win_end - use_start;
    char *dst = ctx->region + f->region_base + (use_start - file->data_offset);
    bool direct = chunk_wants_direct(ctx, f, win_start, win_end);
    atomic_fetch_add(direct ? &ctx->direct_chunks : &ctx->buffered_chunks, 1);
    nx_dev_t *dev = ctx->loader->dev;
    if (ctx->host_visible)
        dev->ops->prepare(dev, dst, use_len);

    if (ctx->host_visible && !direct)
        return read_exact(f->fd, dst, use_len, use_start, file->path, err);
    if (ctx->host_visible && lands_aligned(f)) /* the window's head (header bytes) too */
        return read_direct(ctx, f, dst - (use_start - win_start), win_start,
                           align_up(win_end - win_start, DIRECT_ALIGN), err);

    if (!*slot)
        *slot = slot_acquire(ctx->loader);
    uint32_t j;
    char *buf = staging_next(ctx, *slot, &j, err);
    if (!buf)
        return err->code;
    int rc;
    const char *src = buf;
    if (direct) {
        rc = read_direct(ctx, f, buf, win_start, align_up(win_end - win_start, DIRECT_ALIGN), err);
        src = buf + (use_start - win_start);
    } else {
        rc = read_exact(f->fd, buf, use_len, use_start, file->path, err);
    }
    return rc == NX_OK ? copy_out(ctx, *slot, j, dst, src, use_len, err) : rc;
}

/* Host tier hit: chunk c of the image goes to region offset c * image chunk size. */
static int restore_chunk(load_ctx_t *ctx, uint64_t chunk, slot_t **slot, nx_err_t *err)
{
    const nx__hc_image_t *img = ctx->image;
    uint64_t off = chunk * img->chunk_bytes;
    uint64_t n = img->bytes - off < img->chunk_bytes ? img->bytes - off : img->chunk_bytes;
    if (!*slot)
        *slot = slot_acquire(ctx->loader);
    nx_dev_t *dev = ctx->loader->dev;
    dev->ops->prepare(dev, ctx->region + off, n);
    return dev->ops->copy_h2d(dev, ctx->region + off, img->chunks[chunk], n, (*slot)->stream,
                              err);
}

static void *reader_main(void *arg)
{
    load_ctx_t *ctx = arg;
    slot_t *slot = NULL;
    nx_err_t err = {0};
    while (!atomic_load(&ctx->failed)) {
        uint64_t chunk = atomic_fetch_add(&ctx->next_chunk, 1);
        if (chunk >= ctx->chunk_total)
            break;
        int rc = ctx->image ? restore_chunk(ctx, chunk, &slot, &err)
                            : load_chunk(ctx, chunk, &slot, &err);
        if (rc != NX_OK)
            ctx_fail(ctx, &err);
    }
    if (slot && slot_release(ctx->loader, slot, &err) != NX_OK)
        ctx_fail(ctx, &err);
    return NULL;
}

/* ---- io_uring readers -------------------------------------------------------------------
 * The same chunks, in the same order, as reader_main, but each reader keeps queue_depth reads
 * in flight on its slot's ring: while the disk works on them, the thread faults in the pool
 * memory of the next ones (prepare) and copies finished staging buffers out. Request j uses
 * staging buffer j (the slot holds queue_depth of them), so a buffer is never read into twice
 * before its copy is done. */

typedef struct uring_req {
    file_job_t *f;
    bool staged;        /* lands in staging buffer j, then copy_out to dst */
    bool direct;        /* fd_direct, 4 KiB-aligned window */
    char *target;       /* where the read lands: the region (dst) or buffer j */
    uint64_t off, need; /* file offset read from; bytes that must arrive (up to end of file) */
    uint32_t len;       /* bytes asked for (the window, rounded up to 4 KiB when direct) */
    char *dst;          /* the region: where [use_start, +use_len) of the file belongs */
    uint64_t use_start, use_len;
} uring_req_t;

/* Plan chunk `chunk` as request j of slot s; false on error (err set). */
static bool uring_plan(load_ctx_t *ctx, slot_t *s, uint32_t j, uint64_t chunk, uring_req_t *q,
                       nx_err_t *err)
{
    file_job_t *f = file_of_chunk(ctx, chunk);
    const nx_st_file_t *file = f->file;
    uint64_t chunk_bytes = ctx->loader->chunk_bytes;
    uint64_t win_start = f->window0 + (chunk - f->chunk_first) * chunk_bytes;
    uint64_t win_end = win_start + chunk_bytes < file->file_bytes ? win_start + chunk_bytes
                                                                  : file->file_bytes;
    *q = (uring_req_t){.f = f};
    q->use_start = win_start > file->data_offset ? win_start : file->data_offset;
    q->use_len = win_end - q->use_start;
    q->dst = ctx->region + f->region_base + (q->use_start - file->data_offset);
    q->direct = chunk_wants_direct(ctx, f, win_start, win_end);
    atomic_fetch_add(q->direct ? &ctx->direct_chunks : &ctx->buffered_chunks, 1);
    nx_dev_t *dev = ctx->loader->dev;
    if (ctx->host_visible)
        dev->ops->prepare(dev, q->dst, q->use_len);
    q->staged = !ctx->host_visible || (q->direct && !lands_aligned(f));
    if (q->staged && s->pending[j]) {
        if (dev->ops->event_sync(dev, s->event[j], err) != NX_OK)
            return false;
        s->pending[j] = false;
    }
    if (q->direct) {
        q->off = win_start;
        q->len = (uint32_t)align_up(win_end - win_start, DIRECT_ALIGN);
        q->need = win_end - win_start;
        q->target = q->staged ? s->buf[j] : q->dst - (q->use_start - win_start);
    } else {
        q->off = q->use_start;
        q->len = (uint32_t)q->use_len;
        q->need = q->use_len;
        q->target = q->staged ? s->buf[j] : q->dst;
    }
    return true;
}

/* A read came back with `res`: finish it (a short read or a refused O_DIRECT read goes on
 * with plain pread, as reader_main's reads do), then copy a staged buffer out. */
static int uring_finish(load_ctx_t *ctx, slot_t *s, uint32_t j, uring_req_t *q, int32_t res,
                        nx_err_t *err)
{
    const char *path = q->f->file->path;
    if (res == -EINVAL && q->direct) {
        atomic_store(&q->f->direct_ok, false); /* e.g. a file system without O_DIRECT */
        res = 0;
    }
    if (res < 0 && res != -EINTR && res != -EAGAIN)
        return nx_err_set(err, NX_EIO, "'%s': %sread of %u bytes at %llu failed: %s", path,
                          q->direct ? "O_DIRECT " : "", q->len, (unsigned long long)q->off,
                          strerror(-res));
    uint64_t got = res > 0 ? (uint64_t)res : 0;
    if (got < q->need) {
        atomic_fetch_add(&ctx->fallbacks, 1);
        int rc = read_exact(q->f->fd, q->target + got, q->need - got, q->off + got, path, err);
        if (rc != NX_OK)
            return rc;
    }
    if (!q->staged)
        return NX_OK;
    return copy_out(ctx, s, j, q->dst, q->target + (q->use_start - q->off), q->use_len, err);
}

static void *reader_main_uring(void *arg)
{
    load_ctx_t *ctx = arg;
    nx_loader_t *ld = ctx->loader;
    uint32_t depth = ld->queue_depth;
    slot_t *s = slot_acquire(ld);
    uring_req_t req[MAX_QUEUE_DEPTH];
    bool busy[MAX_QUEUE_DEPTH] = {0};
    uint64_t tags[MAX_QUEUE_DEPTH];
    int32_t results[MAX_QUEUE_DEPTH];
    uint32_t inflight = 0;
    bool more = true;
    nx_err_t err = {0};
    for (;;) {
        /* Fill the queue (a failure anywhere stops new reads; those in flight are drained). */
        for (uint32_t j = 0; j < depth && more && !atomic_load(&ctx->failed); j++) {
            if (busy[j])
                continue;
            uint64_t chunk = atomic_fetch_add(&ctx->next_chunk, 1);
            if (chunk >= ctx->chunk_total) {
                more = false;
                break;
            }
            if (!uring_plan(ctx, s, j, chunk, &req[j], &err)) {
                ctx_fail(ctx, &err);
                break;
            }
            uring_req_t *q = &req[j];
            int fd = q->direct ? q->f->fd_direct : q->f->fd;
            nx__ring_read(s->ring, fd, q->target, q->len, q->off, q->staged ? (int)j : -1, j);
            busy[j] = true;
            inflight++;
        }
        if (inflight == 0)
            break;
        int n = nx__ring_wait(s->ring, tags, results, depth, &err);
        if (n < 0) {
            /* The ring itself failed: nothing more will complete on it. */
            ctx_fail(ctx, &err);
            break;
        }
        for (int i = 0; i < n; i++) {
            uint32_t j = (uint32_t)tags[i];
            busy[j] = false;
            inflight--;
            if (!atomic_load(&ctx->failed) &&
                uring_finish(ctx, s, j, &req[j], results[i], &err) != NX_OK)
                ctx_fail(ctx, &err);
        }
    }
    if (slot_release(ld, s, &err) != NX_OK)
        ctx_fail(ctx, &err);
    return NULL;
}

static int run_readers(load_ctx_t *ctx, uint32_t *threads_out, nx_err_t *err)
{
    uint32_t n = ctx->loader->threads;
    if (n > ctx->chunk_total)
        n = ctx->chunk_total ? (uint32_t)ctx->chunk_total : 1;
    void *(*reader)(void *) = ctx->loader->queue_depth && !ctx->image ? reader_main_uring
                                                                      : reader_main;
    pthread_t tids[256];
    uint32_t started = 0;
    for (; started < n; started++)
        if (pthread_create(&tids[started], NULL, reader, ctx) != 0)
            break;
    if (started == 0)
        reader(ctx); /* no thread could start: read on this one */
    for (uint32_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    *threads_out = started ? started : 1;
    if (atomic_load(&ctx->failed)) {
        *err = ctx->err;
        return err->code;
    }
    return NX_OK;
}

/* Zero what no file byte covers: between one file's data and the next file's base, and from the
 * last one to the region's end (the host cache image: from its end). Only these bytes: the
 * rest is overwritten by the load, so it is never cleared first. Runs after the readers (an
 * O_DIRECT read of a file's last page may write past its end on the way) on one slot's stream,
 * asynchronously on CUDA; the slot's release waits for it (at most a chunk and a page per
 * file). */
static int clear_uncovered(load_ctx_t *ctx, uint64_t region_bytes, nx_err_t *err)
{
    nx_dev_t *dev = ctx->loader->dev;
    slot_t *slot = slot_acquire(ctx->loader);
    int rc = NX_OK;
    uint64_t covered_end = ctx->image ? ctx->image->bytes : 0;
    for (size_t i = 0; !ctx->image && i <= ctx->file_count && rc == NX_OK; i++) {
        uint64_t next = i < ctx->file_count ? ctx->files[i].region_base : region_bytes;
        if (next > covered_end)
            rc = dev->ops->zero(dev, ctx->region + covered_end, next - covered_end, slot->stream,
                                err);
        if (i < ctx->file_count)
            covered_end = ctx->files[i].region_base + ctx->files[i].file->data_bytes;
    }
    if (ctx->image && rc == NX_OK && region_bytes > covered_end)
        rc = dev->ops->zero(dev, ctx->region + covered_end, region_bytes - covered_end,
                            slot->stream, err);
    nx_err_t sync_err = {0};
    int sync_rc = slot_release(ctx->loader, slot, &sync_err);
    if (rc == NX_OK && sync_rc != NX_OK)
        *err = sync_err;
    return rc != NX_OK ? rc : sync_rc;
}

/* Residency of a file's pages in the page cache, from `from` to the end (NULL on failure). */
static unsigned char *residency(int fd, uint64_t file_bytes, uint64_t from)
{
    if (file_bytes <= from)
        return NULL;
    void *map = mmap(NULL, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return NULL;
    uint64_t pages = (file_bytes - from + DIRECT_ALIGN - 1) / DIRECT_ALIGN;
    long page_size = sysconf(_SC_PAGESIZE);
    unsigned char *vec = NULL;
    if (page_size == (long)DIRECT_ALIGN) /* otherwise the vector's units differ: treat as cold */
        vec = malloc(pages);
    if (vec && mincore((char *)map + from, file_bytes - from, vec) != 0) {
        free(vec);
        vec = NULL;
    }
    munmap(map, file_bytes);
    return vec;
}

static int open_files(load_ctx_t *ctx, const nx_st_t *st, const uint64_t *file_base,
                      nx_err_t *err)
{
    uint64_t chunk_bytes = ctx->loader->chunk_bytes;
    for (size_t i = 0; i < ctx->file_count; i++) {
        file_job_t *f = &ctx->files[i];
        f->file = nx_st_file_at(st, i);
        f->fd_direct = -1;
        f->fd = open(f->file->path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0)
            return nx_err_set(err, NX_EIO, "'%s': cannot open: %s", f->file->path,
                              strerror(errno));
        if (ctx->loader->read_mode != NX_READ_BUFFERED) {
            f->fd_direct = open(f->file->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
            if (f->fd_direct < 0)
                atomic_fetch_add(&ctx->fallbacks, 1); /* EINVAL on tmpfs: buffered it is */
        }
        atomic_store(&f->direct_ok, f->fd_direct >= 0);
        f->window0 = align_down(f->file->data_offset, DIRECT_ALIGN);
        if (ctx->loader->read_mode == NX_READ_AUTO && f->fd_direct >= 0)
            f->resident = residency(f->fd, f->file->file_bytes, f->window0);
        f->region_base = file_base[i];
        f->chunk_first = ctx->chunk_total;
        f->chunk_count = f->file->data_bytes
                             ? (f->file->file_bytes - f->window0 + chunk_bytes - 1) / chunk_bytes
                             : 0;
        ctx->chunk_total += f->chunk_count;
    }
    return NX_OK;
}

static void close_files(load_ctx_t *ctx)
{
    for (size_t i = 0; ctx->files && i < ctx->file_count; i++) {
        file_job_t *f = &ctx->files[i];
        if (f->fd >= 0)
            close(f->fd);
        if (f->fd_direct >= 0)
            close(f->fd_direct);
        free(f->resident);
    }
    free(ctx->files);
}

static void fill_stats(nx_load_stats_t *stats, const load_ctx_t *ctx, uint64_t start_ns,
                       uint64_t bytes, uint32_t threads, uint64_t chunk_bytes)
{
    if (!stats)
        return;
    memset(stats, 0, sizeof *stats);
    stats->seconds = (double)(nx_now_ns() - start_ns) / 1e9;
    stats->bytes = bytes;
    stats->gbps = stats->seconds > 0 ? (double)bytes / stats->seconds / 1e9 : 0;
    unsigned direct = atomic_load(&ctx->direct_chunks);
    unsigned buffered = atomic_load(&ctx->buffered_chunks);
    const char *mode = ctx->image            ? "host-cache"
                       : direct && buffered  ? "mixed"
                       : direct              ? "direct"
                                             : "buffered";
    snprintf(stats->read_mode, sizeof stats->read_mode, "%s", mode);
    stats->fallbacks = atomic_load(&ctx->fallbacks);
    stats->threads = threads;
    stats->chunk_bytes = chunk_bytes;
    bool uring = ctx->loader->queue_depth && !ctx->image;
    snprintf(stats->io, sizeof stats->io, "%s", uring ? "io_uring" : "threads");
    stats->queue_depth = uring ? ctx->loader->queue_depth : 1;
    snprintf(stats->io_source, sizeof stats->io_source, "%s",
             nx_io_source_name(ctx->loader->source));
}

/* Paths of the checkpoint's files, absolute, one per line (the host cache re-stats them). */
static char *file_list(const nx_st_t *st)
{
    size_t cap = 1, len = 0;
    for (size_t i = 0; i < nx_st_file_count(st); i++)
        cap += 4097;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; i < nx_st_file_count(st); i++) {
        char *real = realpath(nx_st_file_at(st, i)->path, NULL);
        len += (size_t)snprintf(out + len, cap - len, "%s\n",
                                real ? real : nx_st_file_at(st, i)->path);
        free(real);
    }
    return out;
}

nx_model_t *nx_loader_load(nx_loader_t *self, const char *path, const char *owner,
                           nx_load_stats_t *stats, nx_err_t *err)
{
    uint64_t start_ns = nx_now_ns();
    nx_model_t *model = NULL;
    nx_region_t *region = NULL;
    uint64_t *file_base = NULL;
    char *files = NULL;
    char key[512], identity[8192];
    load_ctx_t ctx = {.loader = self, .host_visible = self->dev->ops->host_visible};
    pthread_mutex_init(&ctx.err_lock, NULL);

    nx_st_t *st = nx_st_open(path, err);
    if (!st)
        goto out;
    ctx.file_count = nx_st_file_count(st);
    file_base = calloc(ctx.file_count ? ctx.file_count : 1, sizeof *file_base);
    ctx.files = calloc(ctx.file_count ? ctx.file_count : 1, sizeof *ctx.files);
    files = file_list(st);
    if (!file_base || !ctx.files || !files) {
        nx_err_set(err, NX_ENOMEM, "loading '%s': out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < ctx.file_count; i++)
        ctx.files[i].fd = ctx.files[i].fd_direct = -1;
    uint64_t layout_bytes;
    nx__model_layout(st, ctx.host_visible, file_base, &layout_bytes);
    nx__hostcache_key(path, key, sizeof key);
    if (nx__hostcache_identity(st, identity, sizeof identity, err) != NX_OK)
        goto out;

    region = nx_pool_alloc(self->pool, layout_bytes, owner ? owner : path, err);
    if (!region) {
        nx_err_prefix(err, "loading '%s': ", path);
        goto out;
    }
    ctx.region = nx_region_ptr(region);

    if (self->cache)
        ctx.image = nx__hostcache_acquire(self->cache, key, identity);
    if (ctx.image) {
        ctx.chunk_total = (ctx.image->bytes + ctx.image->chunk_bytes - 1) / ctx.image->chunk_bytes;
    } else if (open_files(&ctx, st, file_base, err) != NX_OK) {
        goto out;
    }
    uint32_t threads = 0;
    int rc = run_readers(&ctx, &threads, err);
    if (rc == NX_OK)
        rc = clear_uncovered(&ctx, nx_region_bytes(region), err);
    if (ctx.image)
        nx__hostcache_release(self->cache, ctx.image);
    if (rc != NX_OK) {
        nx_err_prefix(err, "loading '%s': ", path);
        goto out;
    }
    uint64_t payload = nx_st_data_bytes(st);
    model = nx__model_new(path, st, region, file_base, layout_bytes, key, identity, files, err);
    if (!model)
        goto out;
    st = NULL;
    region = NULL;
    fill_stats(stats, &ctx, start_ns, payload, threads, self->chunk_bytes);
    nx_log(NX_LOG_DEBUG, "loaded '%s': %llu bytes, %s", path, (unsigned long long)payload,
           ctx.image ? "from the host cache" : "from disk");
out:
    if (region)
        nx_pool_free(self->pool, &region);
    nx_st_destroy(&st);
    close_files(&ctx);
    pthread_mutex_destroy(&ctx.err_lock);
    free(file_base);
    free(files);
    return model;
}

void nx_loader_unload(nx_loader_t *self, nx_model_t **model_p, bool keep_in_cache)
{
    if (!model_p || !*model_p)
        return;
    nx_model_t *model = *model_p;
    if (keep_in_cache && self->cache) {
        nx_err_t err = {0};
        if (nx__hostcache_store(self->cache, nx__model_cache_key(model),
                                nx__model_identity(model), nx__model_files(model),
                                nx_region_ptr(nx_model_region(model)),
                                nx__model_layout_bytes(model), &err) != NX_OK)
            nx_log(NX_LOG_INFO, "not kept in the host cache: %s", err.msg);
    }
    nx_region_t *region = nx__model_take_region(model);
    nx_pool_free(self->pool, &region);
    nx__model_free(model);
    *model_p = NULL;
}
