/* loader.c — the fast loader's benchmark. For each checkpoint, in one run: cold (page cache
 * dropped) and warm (files in the page cache) loads three ways, ours through the pipeline, the
 * naive safetensors way (mmap, then one copy per tensor into a pool region) and the physical
 * limit (multi-threaded O_DIRECT reads for the disk, buffered reads for the page cache, and the
 * host -> pool copy bandwidth: memcpy on CPU, pinned host-to-device on CUDA), plus the host-tier
 * hit path. Median of --repeat runs; one table per checkpoint with the ratios and a verdict
 * against the targets; --json writes every figure for the GPU suite.
 *
 * Pinned host memory and host-to-device copies come from device.h's backend table, so this
 * file measures the CPU and the CUDA backends with no #ifdef and no direct CUDA call.
 *
 *   build/bench/loader MODEL_DIR [MODEL_DIR...] [--device cpu|cuda|auto] [--repeat N]
 *                      [--threads N] [--chunk-mib N] [--json FILE]
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "nx_loader.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)
#define MAX_REPEAT 64
#define MAX_READ_THREADS 8
#define MAX_BLOCK_BYTES (64 * MIB)
#define SWEEP_SAMPLE_BYTES (1 * GIB)      /* each read-limit configuration is tried on this much */
#define COPY_PIECE_BYTES (64 * MIB)       /* one copy_h2d call in the copy-limit measurement */
#define RESIDENT_WARN_FRACTION 0.01       /* cold: warn when more than this is still cached */
#define TARGET_FRACTION 0.90              /* cold vs disk limit; warm vs pinned H2D on a GPU */

static const uint32_t read_thread_counts[] = {1, 2, 4, 8};
static const uint64_t read_block_sizes[] = {16 * MIB, 64 * MIB};

typedef struct bench_opts {
    nx_device_kind_t device;
    int repeat;
    uint32_t threads;        /* loader reader threads, 0 = the loader's default */
    uint64_t chunk_bytes;    /* loader chunk, 0 = the loader's default */
    const char *json_path;   /* NULL: no JSON */
} bench_opts_t;

enum {
    ROW_COLD_OURS,
    ROW_COLD_NAIVE,
    ROW_COLD_LIMIT,
    ROW_WARM_OURS,
    ROW_WARM_NAIVE,
    ROW_WARM_LIMIT,
    ROW_HOST_OURS,
    ROW_COPY_LIMIT,
    ROW__COUNT
};

static const char *const row_keys[ROW__COUNT] = {
    "cold_ours", "cold_naive", "cold_limit", "warm_ours",
    "warm_naive", "warm_limit", "host_tier_ours", "copy_limit",
};

typedef struct row {
    bool measured;
    double seconds[MAX_REPEAT]; /* one per repeat */
    int samples;
    uint64_t bytes;             /* bytes moved per run */
    char note[128];             /* how: read mode, threads x block, why skipped */
} row_t;

/* The checkpoint's files, for cache control and the limit reads. */
typedef struct ckpt_files {
    size_t count;
    char **paths;
    uint64_t *file_bytes;
    uint64_t *data_offset;
    uint64_t *data_bytes;
    uint64_t total_file_bytes;
    uint64_t total_data_bytes;
    size_t tensor_count;
} ckpt_files_t;

/* One checkpoint's bench state: built before any timing, torn down after. */
typedef struct bench {
    const bench_opts_t *opts;
    const char *path;
    ckpt_files_t files;
    nx_pool_t *pool;
    nx_dev_t *dev;
    nx_loader_t *loader;
    char *read_buffers[MAX_READ_THREADS]; /* host_alloc'd, MAX_BLOCK_BYTES each */
    row_t rows[ROW__COUNT];
    double cold_resident_fraction;        /* of the files' pages still cached after a drop */
    double warm_resident_fraction;
    bool checked_ours, checked_naive, checked_host;
    bool cuda;                            /* the pool is on the CUDA backend */
} bench_t;

static bool drop_caches_refused; /* /proc/sys/vm/drop_caches could not be written (once) */

/* ------------------------------------------------------------------------------------------
 * small helpers
 */
static double seconds_since(uint64_t start_ns)
{
    return (double)(nx_now_ns() - start_ns) / 1e9;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_seconds(const row_t *row)
{
    double sorted[MAX_REPEAT];
    memcpy(sorted, row->seconds, sizeof(double) * (size_t)row->samples);
    qsort(sorted, (size_t)row->samples, sizeof(double), compare_double);
    int mid = row->samples / 2;
    return row->samples % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

static double row_gbps(const row_t *row)
{
    if (!row->measured || row->samples == 0)
        return 0;
    double s = median_seconds(row);
    return s > 0 ? (double)row->bytes / s / 1e9 : 0;
}

static void row_add(row_t *row, double seconds, uint64_t bytes)
{
    if (row->samples < MAX_REPEAT)
        row->seconds[row->samples++] = seconds;
    row->bytes = bytes;
    row->measured = true;
}

static uint64_t mem_available_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024ull;
}

static uint64_t round_up(uint64_t value, uint64_t unit)
{
    return (value + unit - 1) / unit * unit;
}

/* ------------------------------------------------------------------------------------------
 * the checkpoint's files
 */
static int files_open(ckpt_files_t *files, const char *path, nx_err_t *err)
{
    nx_st_t *st = nx_st_open(path, err);
    if (!st)
        return err ? err->code : NX_EFORMAT;
    size_t count = nx_st_file_count(st);
    files->count = count;
    files->paths = calloc(count, sizeof(char *));
    files->file_bytes = calloc(count, sizeof(uint64_t));
    files->data_offset = calloc(count, sizeof(uint64_t));
    files->data_bytes = calloc(count, sizeof(uint64_t));
    if (!files->paths || !files->file_bytes || !files->data_offset || !files->data_bytes) {
        nx_st_destroy(&st);
        return nx_err_set(err, NX_ENOMEM, "out of memory listing '%s'", path);
    }
    for (size_t i = 0; i < count; i++) {
        const nx_st_file_t *f = nx_st_file_at(st, i);
        files->paths[i] = strdup(f->path);
        files->file_bytes[i] = f->file_bytes;
        files->data_offset[i] = f->data_offset;
        files->data_bytes[i] = f->data_bytes;
        files->total_file_bytes += f->file_bytes;
    }
    files->total_data_bytes = nx_st_data_bytes(st);
    files->tensor_count = nx_st_tensor_count(st);
    nx_st_destroy(&st);
    return NX_OK;
}

static void files_close(ckpt_files_t *files)
{
    for (size_t i = 0; i < files->count && files->paths; i++)
        free(files->paths[i]);
    free(files->paths);
    free(files->file_bytes);
    free(files->data_offset);
    free(files->data_bytes);
    memset(files, 0, sizeof *files);
}

/* ------------------------------------------------------------------------------------------
 * page cache control: drop (fsync + POSIX_FADV_DONTNEED, plus drop_caches when permitted),
 * warm (read every byte), and measure what is resident (mincore).
 */
static void drop_file_pages(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    fsync(fd); /* dirty pages cannot be dropped */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static void drop_system_caches(void)
{
    if (drop_caches_refused || geteuid() != 0)
        return;
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0 || write(fd, "1", 1) != 1) {
        drop_caches_refused = true;
        nx_log(NX_LOG_WARN, "bench: cannot write /proc/sys/vm/drop_caches (%s); relying on "
               "posix_fadvise alone", strerror(errno));
    }
    if (fd >= 0)
        close(fd);
}

/* Fraction of the files' pages in the page cache, 0..1. */
static double files_resident_fraction(const ckpt_files_t *files)
{
    uint64_t page_bytes = (uint64_t)sysconf(_SC_PAGESIZE), pages = 0, resident = 0;
    for (size_t i = 0; i < files->count; i++) {
        int fd = open(files->paths[i], O_RDONLY);
        if (fd < 0)
            continue;
        size_t len = files->file_bytes[i];
        void *map = len ? mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        close(fd);
        if (map == MAP_FAILED)
            continue;
        size_t page_count = (len + page_bytes - 1) / page_bytes;
        unsigned char *vec = malloc(page_count);
        if (vec && mincore(map, len, vec) == 0) {
            for (size_t p = 0; p < page_count; p++)
                resident += vec[p] & 1;
            pages += page_count;
        }
        free(vec);
        munmap(map, len);
    }
    return pages ? (double)resident / (double)pages : 0;
}

static double files_drop(const ckpt_files_t *files)
{
    for (size_t i = 0; i < files->count; i++)
        drop_file_pages(files->paths[i]);
    drop_system_caches();
    return files_resident_fraction(files);
}

/* ------------------------------------------------------------------------------------------
 * the read limit: threads pull fixed-size blocks of the files, in file order, and pread them
 * into their own reused aligned buffer; O_DIRECT for the disk, buffered for the page cache.
 */
typedef struct seq_read {
    const ckpt_files_t *files;
    int fds[64];                 /* one per file (a checkpoint has at most a few dozen shards) */
    uint64_t first_block[65];    /* file i's blocks are [first_block[i], first_block[i+1]) */
    uint64_t block_bytes;
    uint64_t block_count;        /* blocks to read: all, or the sweep sample */
    bool direct;
    char *dest;                  /* NULL: reused per-thread buffers; else file i lands at
                                  * dest + dest_base[i], like a load into a region */
    uint64_t dest_base[65];
    atomic_uint_fast64_t next_block;
    atomic_uint_fast64_t bytes_read;
    atomic_int error;            /* errno of the first failure, 0 if none */
} seq_read_t;

typedef struct seq_worker {
    seq_read_t *job;
    char *buffer;
} seq_worker_t;

static void read_one_block(seq_read_t *job, uint64_t block, char *buffer)
{
    size_t file = 0;
    while (block >= job->first_block[file + 1])
        file++;
    uint64_t offset = (block - job->first_block[file]) * job->block_bytes;
    uint64_t real_bytes = job->files->file_bytes[file] - offset;
    if (real_bytes > job->block_bytes)
        real_bytes = job->block_bytes;
    /* O_DIRECT wants whole 4 KiB units; the tail read past EOF simply comes back short. */
    uint64_t ask_bytes = job->direct ? round_up(real_bytes, 4096) : real_bytes;
    if (job->dest)
        buffer = job->dest + job->dest_base[file] + offset;
    uint64_t done = 0;
    while (done < real_bytes) {
        ssize_t got = pread(job->fds[file], buffer + done, ask_bytes - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int expected = 0;
            atomic_compare_exchange_strong(&job->error, &expected, errno);
            return;
        }
        if (got == 0)
            break;
        done += (uint64_t)got;
    }
    atomic_fetch_add(&job->bytes_read, done < real_bytes ? done : real_bytes);
}

static void *seq_read_worker(void *arg)
{
    seq_worker_t *worker = arg;
    seq_read_t *job = worker->job;
    for (;;) {
        uint64_t block = atomic_fetch_add(&job->next_block, 1);
        if (block >= job->block_count || atomic_load(&job->error))
            break;
        read_one_block(job, block, worker->buffer);
    }
    return NULL;
}

static int seq_read_open(seq_read_t *job, const ckpt_files_t *files, bool direct, nx_err_t *err)
{
    memset(job, 0, sizeof *job);
    job->files = files;
    job->direct = direct;
    if (files->count > 64)
        return nx_err_set(err, NX_ENOTSUP, "more than 64 shards");
    for (size_t i = 0; i < files->count; i++) {
        job->fds[i] = open(files->paths[i], O_RDONLY | (direct ? O_DIRECT : 0));
        if (job->fds[i] < 0) {
            int saved = errno;
            nx_err_set(err, NX_EIO, "open '%s'%s: %s", files->paths[i],
                       direct ? " with O_DIRECT" : "", strerror(saved));
            while (i-- > 0)
                close(job->fds[i]);
            return NX_EIO;
        }
    }
    return NX_OK;
}

static void seq_read_close(seq_read_t *job)
{
    for (size_t i = 0; i < job->files->count; i++)
        close(job->fds[i]);
}

/* Read (a sample of) the files with `threads` x `block_bytes`; *seconds_out and *bytes_out. */
static int seq_read_run(bench_t *b, seq_read_t *job, uint32_t threads, uint64_t block_bytes,
                        uint64_t sample_bytes, double *seconds_out, uint64_t *bytes_out,
                        nx_err_t *err)
{
    job->block_bytes = block_bytes;
    job->first_block[0] = 0;
    for (size_t i = 0; i < b->files.count; i++)
        job->first_block[i + 1] =
            job->first_block[i] + (b->files.file_bytes[i] + block_bytes - 1) / block_bytes;
    job->block_count = job->first_block[b->files.count];
    if (sample_bytes && job->block_count > (sample_bytes + block_bytes - 1) / block_bytes)
        job->block_count = (sample_bytes + block_bytes - 1) / block_bytes;
    atomic_store(&job->next_block, 0);
    atomic_store(&job->bytes_read, 0);
    atomic_store(&job->error, 0);

    pthread_t tids[MAX_READ_THREADS];
    seq_worker_t workers[MAX_READ_THREADS];
    uint32_t started = 0;
    uint64_t start_ns = nx_now_ns();
    for (; started < threads; started++) {
        workers[started] = (seq_worker_t){job, b->read_buffers[started]};
        if (pthread_create(&tids[started], NULL, seq_read_worker, &workers[started]) != 0)
            break;
    }
    if (started == 0)
        seq_read_worker(&(seq_worker_t){job, b->read_buffers[0]});
    for (uint32_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    *seconds_out = seconds_since(start_ns);
    *bytes_out = atomic_load(&job->bytes_read);
    int failure = atomic_load(&job->error);
    if (failure)
        return nx_err_set(err, NX_EIO, "%s read of '%s': %s", job->direct ? "O_DIRECT" : "buffered",
                          b->path, strerror(failure));
    return NX_OK;
}

/* The best threads x block configuration for reading the files, tried on a sample. */
static int pick_read_config(bench_t *b, seq_read_t *job, bool cold, uint32_t *threads_out,
                            uint64_t *block_out, nx_err_t *err)
{
    double best_gbps = 0;
    *threads_out = 1;
    *block_out = read_block_sizes[0];
    for (size_t t = 0; t < sizeof read_thread_counts / sizeof read_thread_counts[0]; t++) {
        for (size_t k = 0; k < sizeof read_block_sizes / sizeof read_block_sizes[0]; k++) {
            double seconds;
            uint64_t bytes;
            if (cold)
                files_drop(&b->files);
            int rc = seq_read_run(b, job, read_thread_counts[t], read_block_sizes[k],
                                  SWEEP_SAMPLE_BYTES, &seconds, &bytes, err);
            if (rc != NX_OK)
                return rc;
            double gbps = (double)bytes / seconds / 1e9;
            nx_log(NX_LOG_DEBUG, "bench: %s %u thr x %llu MiB: %.2f GB/s",
                   cold ? "O_DIRECT" : "buffered", read_thread_counts[t],
                   (unsigned long long)(read_block_sizes[k] / MIB), gbps);
            if (gbps > best_gbps) {
                best_gbps = gbps;
                *threads_out = read_thread_counts[t];
                *block_out = read_block_sizes[k];
            }
        }
    }
    return NX_OK;
}

/* The read limit, set up once per cold/warm pass: the best configuration, and for warm reads
 * on a host-memory pool a destination as large as the checkpoint (a reused small buffer would
 * stay in the CPU cache and measure the cache, not the copy out of the page cache). */
typedef struct read_limit {
    seq_read_t job;
    uint32_t threads;
    uint64_t block;
    bool with_dest;
    uint64_t dest_bytes;
    nx_region_t *dest_region;
} read_limit_t;

static int read_limit_open(bench_t *b, bool cold, read_limit_t *lim, nx_err_t *err)
{
    memset(lim, 0, sizeof *lim);
    int rc = seq_read_open(&lim->job, &b->files, cold, err);
    if (rc != NX_OK)
        return rc;
    lim->with_dest = !cold && !b->cuda;
    uint64_t at = 0;
    for (size_t i = 0; i < b->files.count; i++) {
        lim->job.dest_base[i] = at;
        at = round_up(at + b->files.file_bytes[i], 4096);
    }
    lim->dest_bytes = at;
    return pick_read_config(b, &lim->job, cold, &lim->threads, &lim->block, err);
}

/* The destination is taken from the pool only around each timed run (outside the timing), so
 * the pool never has to hold it and a loaded model at once. */
static int read_limit_dest(bench_t *b, read_limit_t *lim, bool take, nx_err_t *err)
{
    if (!lim->with_dest)
        return NX_OK;
    if (!take) {
        nx_pool_free(b->pool, &lim->dest_region);
        lim->job.dest = NULL;
        return NX_OK;
    }
    lim->dest_region = nx_pool_alloc(b->pool, lim->dest_bytes, "bench-read-limit", err);
    if (!lim->dest_region)
        return err ? err->code : NX_EPOOLFULL;
    lim->job.dest = nx_region_ptr(lim->dest_region);
    /* A limit, not a load: the destination's page tables are built before the clock starts. */
    b->dev->ops->prepare(b->dev, lim->job.dest, lim->dest_bytes);
    return NX_OK;
}

static int read_limit_once(bench_t *b, bool cold, read_limit_t *lim, row_t *row, nx_err_t *err)
{
    double seconds;
    uint64_t bytes;
    if (cold)
        files_drop(&b->files);
    int rc = read_limit_dest(b, lim, true, err);
    if (rc == NX_OK)
        rc = seq_read_run(b, &lim->job, lim->threads, lim->block, 0, &seconds, &bytes, err);
    read_limit_dest(b, lim, false, NULL);
    if (rc != NX_OK)
        return rc;
    row_add(row, seconds, bytes);
    snprintf(row->note, sizeof row->note, "%s pread %s, best: %u thr x %llu MiB",
             cold ? "O_DIRECT" : "buffered",
             lim->with_dest ? "into a checkpoint-sized region" : "into reused buffers",
             lim->threads, (unsigned long long)(lim->block / MIB));
    return NX_OK;
}

static void read_limit_close(bench_t *b, read_limit_t *lim)
{
    seq_read_close(&lim->job);
}

/* ------------------------------------------------------------------------------------------
 * the copy limit: host_alloc'd (pinned on CUDA) memory into a pool region with copy_h2d, one
 * stream per thread, 1..N threads, the best median. memcpy bandwidth on CPU, PCIe on CUDA.
 */
typedef struct copy_worker {
    nx_dev_t *dev;
    void *stream;
    char *dst;
    const char *src;
    uint64_t bytes;
    int rc;
    nx_err_t err;
} copy_worker_t;

static void *copy_worker_run(void *arg)
{
    copy_worker_t *w = arg;
    for (uint64_t done = 0; done < w->bytes && w->rc == NX_OK; done += COPY_PIECE_BYTES) {
        uint64_t piece = w->bytes - done < COPY_PIECE_BYTES ? w->bytes - done : COPY_PIECE_BYTES;
        w->rc = w->dev->ops->copy_h2d(w->dev, w->dst + done, w->src + done, piece, w->stream,
                                      &w->err);
    }
    if (w->rc == NX_OK)
        w->rc = w->dev->ops->stream_sync(w->dev, w->stream, &w->err);
    return NULL;
}

static int copy_run(nx_dev_t *dev, void **streams, uint32_t threads, char *dst, const char *src,
                    uint64_t bytes, double *seconds_out, nx_err_t *err)
{
    copy_worker_t workers[MAX_READ_THREADS];
    pthread_t tids[MAX_READ_THREADS];
    uint64_t slice = round_up(bytes / threads, 4096);
    uint64_t start_ns = nx_now_ns();
    uint32_t started = 0;
    for (uint32_t t = 0; t < threads; t++) {
        uint64_t begin = slice * t < bytes ? slice * t : bytes;
        uint64_t end = begin + slice < bytes ? begin + slice : bytes;
        workers[t] = (copy_worker_t){dev, streams[t], dst + begin, src + begin, end - begin,
                                     NX_OK, {0}};
        if (pthread_create(&tids[t], NULL, copy_worker_run, &workers[t]) != 0)
            copy_worker_run(&workers[t]);
        else
            started |= 1u << t;
    }
    for (uint32_t t = 0; t < threads; t++)
        if (started & (1u << t))
            pthread_join(tids[t], NULL);
    *seconds_out = seconds_since(start_ns);
    for (uint32_t t = 0; t < threads; t++)
        if (workers[t].rc != NX_OK) {
            if (err)
                *err = workers[t].err;
            return workers[t].rc;
        }
    return NX_OK;
}

/* How much the copy limit moves. CUDA: several GB, as a load of a big model. CPU: as much as
 * the checkpoint (up to 1 GiB), because a copy that fits the last-level cache (260 MiB on the
 * development VM) runs at cache speed, and so does the load of a checkpoint that small. */
static uint64_t copy_limit_bytes(bool cuda, uint64_t checkpoint_bytes)
{
    if (cuda)
        return 4 * GIB;
    uint64_t bytes = round_up(checkpoint_bytes, 64 * MIB);
    return bytes < 1 * GIB ? bytes : 1 * GIB;
}

static int measure_copy_limit(bench_t *b, row_t *row, nx_err_t *err)
{
    bool cuda = b->cuda;
    nx_pool_stats_t stats;
    nx_pool_stats(b->pool, &stats);
    uint64_t want_bytes = copy_limit_bytes(cuda, b->files.total_data_bytes);
    uint64_t bytes = want_bytes < stats.free_bytes ? want_bytes : stats.free_bytes;
    bytes = bytes / (64 * MIB) * (64 * MIB);
    if (bytes == 0)
        return nx_err_set(err, NX_EPOOLFULL, "no pool space for the copy limit");
    nx_region_t *region = nx_pool_alloc(b->pool, bytes, "bench-copy-limit", err);
    if (!region)
        return err ? err->code : NX_EPOOLFULL;
    char *host = b->dev->ops->host_alloc(b->dev, bytes, err);
    void *streams[MAX_READ_THREADS] = {0};
    uint32_t max_threads = cuda ? 2 : MAX_READ_THREADS;
    int rc = host ? NX_OK : (err ? err->code : NX_ENOMEM);
    for (uint32_t t = 0; t < max_threads && rc == NX_OK; t++)
        rc = b->dev->ops->stream_new(b->dev, &streams[t], err);
    if (rc != NX_OK)
        goto out;
    memset(host, 0x5a, bytes); /* fault the pages in outside the timing */
    row_t best = {0};
    for (uint32_t threads = 1; threads <= max_threads && rc == NX_OK; threads *= 2) {
        row_t trial = {0};
        for (int r = 0; r < b->opts->repeat + 1 && rc == NX_OK; r++) {
            double seconds;
            rc = copy_run(b->dev, streams, threads, nx_region_ptr(region), host, bytes, &seconds,
                          err);
            if (r > 0) /* the first run warms up the streams and the TLB */
                row_add(&trial, seconds, bytes);
        }
        nx_log(NX_LOG_DEBUG, "bench: copy limit, %u thread(s): %.2f GB/s", threads,
               row_gbps(&trial));
        if (rc == NX_OK && row_gbps(&trial) > row_gbps(&best)) {
            best = trial;
            snprintf(best.note, sizeof best.note, "%s, %llu MiB, %u thread%s",
                     cuda ? "pinned host -> device" : "host_alloc -> pool memcpy",
                     (unsigned long long)(bytes / MIB), threads, threads > 1 ? "s" : "");
        }
    }
    if (rc == NX_OK)
        *row = best;
out:
    for (uint32_t t = 0; t < max_threads; t++)
        if (streams[t])
            b->dev->ops->stream_destroy(b->dev, streams[t]);
    if (host)
        b->dev->ops->host_free(b->dev, host, bytes);
    nx_pool_free(b->pool, &region);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * the naive way: parse the header, mmap each file, one nx_pool_copy_from_host per tensor
 */
static int naive_load(bench_t *b, nx_region_t **region_out, nx_err_t *err)
{
    nx_st_t *st = nx_st_open(b->path, err);
    if (!st)
        return err ? err->code : NX_EFORMAT;
    int rc = NX_OK;
    nx_region_t *region = nx_pool_alloc(b->pool, nx_st_data_bytes(st), "bench-naive", err);
    if (!region) {
        rc = err ? err->code : NX_EPOOLFULL;
        goto out;
    }
    char *base = nx_region_ptr(region);
    for (size_t i = 0; i < nx_st_file_count(st) && rc == NX_OK; i++) {
        const nx_st_file_t *f = nx_st_file_at(st, i);
        int fd = open(f->path, O_RDONLY);
        void *map = fd < 0 ? MAP_FAILED : mmap(NULL, f->file_bytes, PROT_READ, MAP_SHARED, fd, 0);
        if (fd >= 0)
            close(fd);
        if (map == MAP_FAILED) {
            rc = nx_err_set(err, NX_EIO, "mmap '%s': %s", f->path, strerror(errno));
            break;
        }
        const char *data = (const char *)map + f->data_offset;
        for (size_t k = f->tensor_first; k < f->tensor_first + f->tensor_count && rc == NX_OK; k++) {
            const nx_st_tensor_t *t = nx_st_tensor_at(st, k);
            if (t->bytes)
                rc = nx_pool_copy_from_host(b->pool, base + t->begin, data + t->begin, t->bytes,
                                            err);
        }
        munmap(map, f->file_bytes);
        base += f->data_bytes;
    }
out:
    nx_st_destroy(&st);
    if (rc != NX_OK)
        nx_pool_free(b->pool, &region);
    *region_out = region;
    return rc;
}

/* Compare the naive region against a plain pread of the files, through the read buffers. */
static int naive_check(bench_t *b, nx_region_t *region, nx_err_t *err)
{
    const char *base = nx_region_ptr(region);
    char *from_file = b->read_buffers[0], *from_pool = b->read_buffers[1];
    for (size_t i = 0; i < b->files.count; i++) {
        int fd = open(b->files.paths[i], O_RDONLY);
        if (fd < 0)
            return nx_err_set(err, NX_EIO, "open '%s': %s", b->files.paths[i], strerror(errno));
        for (uint64_t done = 0; done < b->files.data_bytes[i];) {
            uint64_t want = b->files.data_bytes[i] - done;
            want = want < MAX_BLOCK_BYTES ? want : MAX_BLOCK_BYTES;
            ssize_t got = pread(fd, from_file, want, (off_t)(b->files.data_offset[i] + done));
            int rc = got == (ssize_t)want ? nx_pool_copy_to_host(b->pool, from_pool, base + done,
                                                                 want, err)
                                          : nx_err_set(err, NX_EIO, "short read of '%s'",
                                                       b->files.paths[i]);
            if (rc == NX_OK && memcmp(from_file, from_pool, want) != 0)
                rc = nx_err_set(err, NX_EMISMATCH, "naive copy of '%s' differs near data byte %llu",
                                b->files.paths[i], (unsigned long long)done);
            if (rc != NX_OK) {
                close(fd);
                return rc;
            }
            done += want;
        }
        base += b->files.data_bytes[i];
        close(fd);
    }
    return NX_OK;
}

static int measure_naive_once(bench_t *b, row_t *row, nx_err_t *err)
{
    nx_region_t *region = NULL;
    uint64_t start_ns = nx_now_ns();
    int rc = naive_load(b, &region, err);
    double seconds = seconds_since(start_ns);
    if (rc != NX_OK)
        return rc;
    row_add(row, seconds, b->files.total_data_bytes);
    snprintf(row->note, sizeof row->note, "mmap + %zu x nx_pool_copy_from_host",
             b->files.tensor_count);
    if (!b->checked_naive) {
        rc = naive_check(b, region, err);
        b->checked_naive = rc == NX_OK;
    }
    nx_pool_free(b->pool, &region);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * ours: nx_loader_load through the pipeline
 */
static int measure_ours_once(bench_t *b, nx_loader_t *loader, row_t *row, bool *checked,
                             bool keep_in_cache, nx_err_t *err)
{
    nx_load_stats_t stats = {0};
    uint64_t start_ns = nx_now_ns();
    nx_model_t *model = nx_loader_load(loader, b->path, "bench", &stats, err);
    double seconds = seconds_since(start_ns);
    if (!model)
        return err ? err->code : NX_EIO;
    row_add(row, seconds, nx_model_bytes(model));
    snprintf(row->note, sizeof row->note, "%s, %u thr x %u x %llu MiB (%s)%s", stats.read_mode,
             stats.threads, stats.queue_depth, (unsigned long long)(stats.chunk_bytes / MIB),
             stats.io_source, stats.fallbacks ? ", with O_DIRECT fallbacks" : "");
    int rc = NX_OK;
    if (!*checked) {
        rc = nx_model_check(b->pool, model, err);
        *checked = rc == NX_OK;
    }
    nx_loader_unload(loader, &model, keep_in_cache);
    return rc;
}

/* The host-tier hit: a second loader with a host cache; load once from disk, unload into the
 * cache, then time the loads that the cache serves. Skipped (with a note) without the RAM. */
static int measure_host_tier(bench_t *b, row_t *row, nx_err_t *err)
{
    files_drop(&b->files); /* frees the RAM the page cache held, and makes a miss visible */
    uint64_t budget_bytes = round_up(b->files.total_data_bytes, 64 * MIB) + 256 * MIB;
    uint64_t available_bytes = mem_available_bytes();
    if (available_bytes < budget_bytes + 1 * GIB) {
        snprintf(row->note, sizeof row->note, "skipped: needs %.1f GB of RAM, %.1f GB available",
                 (double)(budget_bytes + GIB) / 1e9, (double)available_bytes / 1e9);
        return NX_OK;
    }
    nx_hostcache_t *cache = nx_hostcache_new(b->pool, budget_bytes, err);
    if (!cache)
        return err ? err->code : NX_ENOMEM;
    nx_loader_opts_t opts = {.threads = b->opts->threads, .chunk_bytes = b->opts->chunk_bytes,
                             .cache = cache, .shape_path = b->path};
    nx_loader_t *loader = nx_loader_new(b->pool, &opts, err);
    int rc = loader ? NX_OK : (err ? err->code : NX_ENOMEM);
    row_t fill = {0};
    bool fill_checked = true; /* the disk path is checked elsewhere */
    if (rc == NX_OK)
        rc = measure_ours_once(b, loader, &fill, &fill_checked, true, err);
    if (rc == NX_OK && !nx_hostcache_contains(cache, b->path))
        nx_log(NX_LOG_WARN, "bench: '%s' is not in the host cache after unload", b->path);
    for (int r = 0; r < b->opts->repeat && rc == NX_OK; r++)
        rc = measure_ours_once(b, loader, row, &b->checked_host, true, err);
    if (rc == NX_OK && strncmp(row->note, "host-cache", 10) != 0)
        nx_log(NX_LOG_WARN, "bench: host-tier load was not served by the cache (%s)", row->note);
    nx_loader_destroy(&loader);
    nx_hostcache_destroy(&cache);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * one checkpoint
 */
static void warm_files(bench_t *b)
{
    seq_read_t job;
    double seconds;
    uint64_t bytes;
    if (seq_read_open(&job, &b->files, false, NULL) != NX_OK)
        return;
    seq_read_run(b, &job, 2, MAX_BLOCK_BYTES, 0, &seconds, &bytes, NULL);
    seq_read_close(&job);
}

/* Each repeat runs the limit, ours and naive back to back, so that all three see the same
 * state of a noisy machine and the ratios hold even when absolute figures move. */
static int measure_cold(bench_t *b, nx_err_t *err)
{
    read_limit_t lim;
    int rc = read_limit_open(b, true, &lim, err);
    for (int r = 0; r < b->opts->repeat && rc == NX_OK; r++) {
        rc = read_limit_once(b, true, &lim, &b->rows[ROW_COLD_LIMIT], err);
        if (rc != NX_OK)
            break;
        double resident = files_drop(&b->files);
        if (resident > b->cold_resident_fraction)
            b->cold_resident_fraction = resident;
        rc = measure_ours_once(b, b->loader, &b->rows[ROW_COLD_OURS], &b->checked_ours, false, err);
        if (rc == NX_OK) {
            files_drop(&b->files);
            rc = measure_naive_once(b, &b->rows[ROW_COLD_NAIVE], err);
        }
    }
    read_limit_close(b, &lim);
    if (b->cold_resident_fraction > RESIDENT_WARN_FRACTION)
        fprintf(stderr, "warning: %s: %.1f%% of the files stayed in the page cache after "
                "dropping it; the cold figures are optimistic\n", b->path,
                b->cold_resident_fraction * 100);
    return rc;
}

static int measure_warm(bench_t *b, nx_err_t *err)
{
    warm_files(b);
    read_limit_t lim;
    int rc = read_limit_open(b, false, &lim, err);
    b->warm_resident_fraction = 1;
    for (int r = 0; r < b->opts->repeat && rc == NX_OK; r++) {
        rc = read_limit_once(b, false, &lim, &b->rows[ROW_WARM_LIMIT], err);
        if (rc != NX_OK)
            break;
        double resident = files_resident_fraction(&b->files);
        if (resident < b->warm_resident_fraction)
            b->warm_resident_fraction = resident;
        rc = measure_ours_once(b, b->loader, &b->rows[ROW_WARM_OURS], &b->checked_ours, false, err);
        if (rc == NX_OK)
            rc = measure_naive_once(b, &b->rows[ROW_WARM_NAIVE], err);
    }
    read_limit_close(b, &lim);
    if (b->warm_resident_fraction < 1 - RESIDENT_WARN_FRACTION)
        fprintf(stderr, "warning: %s: only %.1f%% of the files were in the page cache for the "
                "warm runs (not enough RAM?)\n", b->path, b->warm_resident_fraction * 100);
    return rc;
}

static nx_device_kind_t resolve_device(nx_device_kind_t asked)
{
    if (asked != NX_DEVICE_AUTO)
        return asked;
    return nx_cuda_available(NULL) ? NX_DEVICE_CUDA : NX_DEVICE_CPU;
}

static int bench_setup(bench_t *b, nx_err_t *err)
{
    int rc = files_open(&b->files, b->path, err);
    if (rc != NX_OK)
        return rc;
    nx_device_kind_t device = resolve_device(b->opts->device);
    uint64_t copy_bytes = copy_limit_bytes(device == NX_DEVICE_CUDA, b->files.total_data_bytes);
    uint64_t need_bytes = b->files.total_data_bytes > copy_bytes ? b->files.total_data_bytes
                                                                 : copy_bytes;
    nx_pool_opts_t pool_opts = {.device = device, .bytes = round_up(need_bytes, 64 * MIB) + 512 * MIB};
    b->pool = nx_pool_new(&pool_opts, err);
    if (!b->pool)
        return err ? err->code : NX_ENOMEM;
    b->dev = nx__pool_dev(b->pool);
    b->cuda = nx_pool_device(b->pool) == NX_DEVICE_CUDA;
    for (int t = 0; t < MAX_READ_THREADS; t++) {
        b->read_buffers[t] = b->dev->ops->host_alloc(b->dev, MAX_BLOCK_BYTES, err);
        if (!b->read_buffers[t])
            return err ? err->code : NX_ENOMEM;
    }
    /* The shape a user's load gets on this file system (calibrated, device rule, defaults). */
    nx_loader_opts_t opts = {.threads = b->opts->threads, .chunk_bytes = b->opts->chunk_bytes,
                             .shape_path = b->path};
    b->loader = nx_loader_new(b->pool, &opts, err);
    return b->loader ? NX_OK : (err ? err->code : NX_ENOMEM);
}

static void bench_teardown(bench_t *b)
{
    nx_loader_destroy(&b->loader);
    for (int t = 0; t < MAX_READ_THREADS; t++)
        if (b->read_buffers[t])
            b->dev->ops->host_free(b->dev, b->read_buffers[t], MAX_BLOCK_BYTES);
    nx_pool_destroy(&b->pool);
    files_close(&b->files);
}

static int bench_run(bench_t *b, nx_err_t *err)
{
    int rc = measure_cold(b, err);
    if (rc == NX_OK)
        rc = measure_warm(b, err);
    if (rc == NX_OK)
        rc = measure_copy_limit(b, &b->rows[ROW_COPY_LIMIT], err);
    if (rc == NX_OK)
        rc = measure_host_tier(b, &b->rows[ROW_HOST_OURS], err);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * report: the table, the verdict, the JSON
 */
static const char *row_label(const bench_t *b, int row)
{
    static const char *const labels[ROW__COUNT] = {
        "cold  ours", "cold  naive", "cold  limit (disk)", "warm  ours", "warm  naive",
        "warm  limit (page cache)", "host-tier ours", "copy limit",
    };
    if (row == ROW_COPY_LIMIT)
        return b->cuda ? "pinned H2D limit" : "memcpy limit";
    return labels[row];
}

/* The limit and the naive row each "ours" row is compared with (-1: none). */
static void row_references(const bench_t *b, int row, int *limit_row, int *naive_row)
{
    bool cuda = b->cuda;
    *limit_row = *naive_row = -1;
    if (row == ROW_COLD_OURS) {
        *limit_row = ROW_COLD_LIMIT;
        *naive_row = ROW_COLD_NAIVE;
    } else if (row == ROW_WARM_OURS) {
        *limit_row = cuda ? ROW_COPY_LIMIT : ROW_WARM_LIMIT;
        *naive_row = ROW_WARM_NAIVE;
    } else if (row == ROW_HOST_OURS) {
        *limit_row = ROW_COPY_LIMIT;
        *naive_row = ROW_WARM_NAIVE;
    }
}

static double ratio(const bench_t *b, int row, int other)
{
    if (other < 0 || !b->rows[row].measured || !b->rows[other].measured)
        return 0;
    double denominator = row_gbps(&b->rows[other]);
    return denominator > 0 ? row_gbps(&b->rows[row]) / denominator : 0;
}

static void print_verdict(const bench_t *b)
{
    bool cuda = b->cuda;
    double cold = ratio(b, ROW_COLD_OURS, ROW_COLD_LIMIT);
    printf("verdict: cold ours = %.1f%% of the disk limit (target >= %.0f%%): %s", cold * 100,
           TARGET_FRACTION * 100, cold >= TARGET_FRACTION ? "PASS" : "FAIL");
    if (cuda) {
        double warm = ratio(b, ROW_WARM_OURS, ROW_COPY_LIMIT);
        double host = ratio(b, ROW_HOST_OURS, ROW_COPY_LIMIT);
        double best = warm > host ? warm : host;
        printf("; warm ours = %.1f%%, host tier = %.1f%% of pinned H2D (target >= %.0f%%): %s\n",
               warm * 100, host * 100, TARGET_FRACTION * 100,
               best >= TARGET_FRACTION ? "PASS" : "FAIL");
    } else {
        printf("; warm ours = %.1f%% of the page-cache read limit, host tier = %.1f%% of memcpy "
               "(the warm target applies on a GPU)\n",
               ratio(b, ROW_WARM_OURS, ROW_WARM_LIMIT) * 100,
               ratio(b, ROW_HOST_OURS, ROW_COPY_LIMIT) * 100);
    }
}

static void print_table(const bench_t *b)
{
    printf("\n%s: %.2f GB in %zu file%s, %zu tensors, device %s, median of %d\n", b->path,
           (double)b->files.total_data_bytes / 1e9, b->files.count, b->files.count > 1 ? "s" : "",
           b->files.tensor_count, nx_device_name(nx_pool_device(b->pool)), b->opts->repeat);
    printf("  %-26s %8s %9s %11s %11s  %s\n", "way", "GB/s", "seconds", "ours/limit",
           "ours/naive", "how");
    for (int r = 0; r < ROW__COUNT; r++) {
        const row_t *row = &b->rows[r];
        if (!row->measured) {
            printf("  %-26s %8s %9s %11s %11s  %s\n", row_label(b, r), "-", "-", "", "",
                   row->note[0] ? row->note : "not measured");
            continue;
        }
        int limit_row, naive_row;
        row_references(b, r, &limit_row, &naive_row);
        char limit_text[16] = "", naive_text[16] = "";
        if (limit_row >= 0)
            snprintf(limit_text, sizeof limit_text, "%.1f%%", ratio(b, r, limit_row) * 100);
        if (naive_row >= 0)
            snprintf(naive_text, sizeof naive_text, "%.2fx", ratio(b, r, naive_row));
        printf("  %-26s %8.2f %9.4f %11s %11s  %s\n", row_label(b, r), row_gbps(row),
               median_seconds(row), limit_text, naive_text, row->note);
    }
    print_verdict(b);
    printf("checked: ours %s, naive %s, host tier %s (nx_model_check / pread compare)\n",
           b->checked_ours ? "ok" : "NOT CHECKED", b->checked_naive ? "ok" : "NOT CHECKED",
           b->checked_host ? "ok" : "not checked");
    fflush(stdout);
}

static json_t *row_json(const bench_t *b, int r)
{
    const row_t *row = &b->rows[r];
    json_t *samples = json_array();
    for (int i = 0; i < row->samples; i++)
        json_array_append_new(samples, json_real(row->seconds[i]));
    int limit_row, naive_row;
    row_references(b, r, &limit_row, &naive_row);
    return json_pack("{s:b, s:f, s:f, s:I, s:o, s:s, s:f, s:f}", "measured", row->measured,
                     "gbps", row_gbps(row), "seconds", row->samples ? median_seconds(row) : 0.0,
                     "bytes", (json_int_t)row->bytes, "samples_seconds", samples, "note",
                     row->note, "ratio_limit", ratio(b, r, limit_row), "ratio_naive",
                     ratio(b, r, naive_row));
}

static json_t *bench_json(const bench_t *b, int rc, const nx_err_t *err)
{
    json_t *rows = json_object();
    for (int r = 0; r < ROW__COUNT; r++)
        json_object_set_new(rows, row_keys[r], row_json(b, r));
    bool cuda = b->cuda;
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:i, s:f, s:f, s:b, s:b, s:b, s:o, s:s, s:s}",
                     "path", b->path, "device",
                     b->pool ? nx_device_name(nx_pool_device(b->pool)) : "none", "data_bytes",
                     (json_int_t)b->files.total_data_bytes, "files", (json_int_t)b->files.count,
                     "tensors", (json_int_t)b->files.tensor_count, "repeat", b->opts->repeat,
                     "cold_resident_fraction", b->cold_resident_fraction,
                     "warm_resident_fraction", b->warm_resident_fraction, "checked_ours",
                     b->checked_ours, "checked_naive", b->checked_naive, "checked_host_tier",
                     b->checked_host, "rows", rows, "copy_limit_kind",
                     cuda ? "pinned_h2d" : "memcpy", "error", rc == NX_OK ? "" : err->msg);
}

/* ------------------------------------------------------------------------------------------
 * main
 */
static void usage(FILE *out)
{
    fprintf(out, "usage: loader MODEL_DIR [MODEL_DIR...] [--device cpu|cuda|auto] [--repeat N]\n"
                 "              [--threads N] [--chunk-mib N] [--json FILE]\n");
}

static bool parse_args(int argc, char **argv, bench_opts_t *opts, const char **paths,
                       int *path_count)
{
    *opts = (bench_opts_t){.device = NX_DEVICE_AUTO, .repeat = 3};
    *path_count = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_value = strncmp(arg, "--", 2) == 0;
        if (takes_value && !value)
            return false;
        if (strcmp(arg, "--device") == 0) {
            if (!nx_device_parse(value, &opts->device))
                return false;
        } else if (strcmp(arg, "--repeat") == 0) {
            opts->repeat = atoi(value);
            if (opts->repeat < 1 || opts->repeat > MAX_REPEAT)
                return false;
        } else if (strcmp(arg, "--threads") == 0) {
            opts->threads = (uint32_t)atoi(value);
        } else if (strcmp(arg, "--chunk-mib") == 0) {
            opts->chunk_bytes = (uint64_t)atoll(value) * MIB;
        } else if (strcmp(arg, "--json") == 0) {
            opts->json_path = value;
        } else if (takes_value) {
            return false;
        } else {
            paths[(*path_count)++] = arg;
            continue;
        }
        i++;
    }
    return *path_count > 0;
}

int main(int argc, char **argv)
{
    bench_opts_t opts;
    const char **paths = calloc((size_t)argc, sizeof(char *));
    int path_count = 0;
    if (!paths || !parse_args(argc, argv, &opts, paths, &path_count)) {
        usage(stderr);
        return 2;
    }
    json_t *models = json_array();
    int failures = 0;
    for (int i = 0; i < path_count; i++) {
        bench_t b = {.opts = &opts, .path = paths[i]};
        nx_err_t err = {0};
        int rc = bench_setup(&b, &err);
        if (rc == NX_OK)
            rc = bench_run(&b, &err);
        if (rc != NX_OK) {
            fprintf(stderr, "loader bench: %s: %s (%s)\n", paths[i], err.msg, nx_errname(rc));
            failures++;
        }
        if (b.pool)
            print_table(&b);
        json_array_append_new(models, bench_json(&b, rc, &err));
        bench_teardown(&b);
    }
    if (opts.json_path) {
        time_t now = time(NULL);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        json_t *root = json_pack("{s:s, s:s, s:i, s:I, s:I, s:f, s:o}", "bench", "loader",
                                 "time", stamp, "repeat", opts.repeat, "threads",
                                 (json_int_t)opts.threads, "chunk_bytes",
                                 (json_int_t)opts.chunk_bytes, "target_fraction",
                                 TARGET_FRACTION, "models", models);
        if (json_dump_file(root, opts.json_path, JSON_INDENT(2)) != 0) {
            fprintf(stderr, "loader bench: cannot write '%s'\n", opts.json_path);
            failures++;
        }
        json_decref(root);
    } else {
        json_decref(models);
    }
    free(paths);
    return failures ? 1 : 0;
}
