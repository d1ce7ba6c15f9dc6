/* ioshape.c — the loader's I/O shape (io_uring or pread threads, reader threads, reads in
 * flight, bytes per read) for a file system: from its cached calibration (`nexusctl loader
 * calibrate` measures it once), else from a rule over its block device's sysfs attributes,
 * else the built-in defaults.
 *
 * The rule (README, "Loader I/O shape") is written from bench/RESULTS.md's queue depth x block
 * size sweep: on this project's 2-core VM a cold load is bound by the CPU faulting in fresh
 * memory, not by requests in flight, so one reader per core (up to 8) with two reads each did
 * best, and deeper queues only competed for the cores. The depth grows past 2 only where the
 * device's largest request is small next to a read and the cores can take more completions.
 *
 * The cache is a text file, one line per file system, keyed by the device number and the
 * file system's id (statfs f_fsid, from the UUID on ext4 and xfs), so a disk reformatted under
 * the same device number is not taken for the one calibrated:
 *   v1 dev=254:0 fsid=9f0c1e2d3b4a5968 io=io_uring threads=2 depth=2 chunk_kib=16384 cold=direct
 * (cold: how read mode auto reads files not in the page cache, direct or buffered; a line
 * without it, as the first version wrote them, is direct)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "nx_loader.h"

#define MIB (1024ull * 1024ull)
#define DEFAULT_THREADS 2u
#define DEFAULT_DEPTH 2u
#define DEFAULT_CHUNK (16 * MIB)
/* Reads of 8..32 MiB were all within the run-to-run spread in the sweep; smaller ones pay
 * per-read overhead, larger ones hold more staging memory (CUDA: threads x depth of them). */
#define MIN_CHUNK (8 * MIB)
#define MAX_CHUNK (32 * MIB)
#define MAX_RULE_THREADS 8u
#define MAX_RULE_DEPTH 16u
/* Requests in flight one core keeps up with: each completed read's pages are faulted in by a
 * core. 2 x 8 reads x 4 requests (64 on 2 cores) was 35% slower than 2 x 2 x 4 (16). */
#define REQUESTS_PER_CPU 8u
#define CACHE_VERSION "v1"
#define LINE_MAX_BYTES 1024u

const char *nx_io_source_name(nx_io_source_t source)
{
    switch (source) {
    case NX_IO_SOURCE_DEFAULT: return "default";
    case NX_IO_SOURCE_DEVICE: return "device";
    case NX_IO_SOURCE_CALIBRATED: return "calibrated";
    case NX_IO_SOURCE_FLAG: return "flag";
    }
    return "?";
}

const char *nx_loader_io_name(nx_loader_io_t io)
{
    switch (io) {
    case NX_LOADER_IO_AUTO: return "auto";
    case NX_LOADER_IO_URING: return "io_uring";
    case NX_LOADER_IO_THREADS: return "threads";
    }
    return "?";
}

void nx_io_shape_default(nx_io_shape_t *out)
{
    *out = (nx_io_shape_t){.io = NX_LOADER_IO_AUTO, .threads = DEFAULT_THREADS,
                           .queue_depth = DEFAULT_DEPTH, .chunk_bytes = DEFAULT_CHUNK};
}

int nx_fs_id_of(const char *path, nx_fs_id_t *out, nx_err_t *err)
{
    struct stat st;
    struct statfs sfs;
    if (stat(path, &st) != 0)
        return nx_err_set(err, NX_EIO, "'%s': cannot stat: %s", path, strerror(errno));
    if (statfs(path, &sfs) != 0)
        return nx_err_set(err, NX_EIO, "'%s': cannot statfs: %s", path, strerror(errno));
    uint32_t words[2];
    memcpy(words, &sfs.f_fsid, sizeof words);
    *out = (nx_fs_id_t){.major = major(st.st_dev), .minor = minor(st.st_dev),
                        .fsid = (uint64_t)words[0] << 32 | words[1]};
    return NX_OK;
}

/* ---- sysfs ----------------------------------------------------------------------------- */

/* An unsigned number from a sysfs attribute; 0 when absent or not a number. */
static uint64_t sysfs_u64(const char *dir, const char *name)
{
    char path[PATH_MAX + 64], text[64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || (*end && *end != '\n') || text[0] == '-')
        return 0;
    return v;
}

static const char *kind_of(const char *name)
{
    static const struct { const char *prefix, *kind; } kinds[] = {
        {"nvme", "nvme"}, {"vd", "virtio"}, {"sd", "scsi"}, {"mmcblk", "mmc"},
        {"xvd", "xen"},   {"loop", "loop"}, {"dm-", "dm"},  {"md", "md"},
        {"zram", "zram"},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(name, kinds[i].prefix, strlen(kinds[i].prefix)) == 0)
            return kinds[i].kind;
    return "other";
}

int nx_blockdev_read(const char *sysfs_root, uint32_t major, uint32_t minor, nx_blockdev_t *out,
                     nx_err_t *err)
{
    char link[PATH_MAX], disk[PATH_MAX + 16], probe[PATH_MAX + 32];
    snprintf(link, sizeof link, "%s/dev/block/%u:%u", sysfs_root ? sysfs_root : "/sys", major,
             minor);
    char *real = realpath(link, NULL);
    if (!real)
        return nx_err_set(err, NX_ENOTFOUND, "no block device %u:%u (%s: %s)", major, minor,
                          link, strerror(errno));
    snprintf(disk, sizeof disk, "%s", real);
    free(real);
    /* A partition has no queue of its own: its whole disk is the folder above it. */
    snprintf(probe, sizeof probe, "%s/partition", disk);
    if (access(probe, F_OK) == 0) {
        char *slash = strrchr(disk, '/');
        if (slash && slash != disk)
            *slash = '\0';
    }
    const char *name = strrchr(disk, '/') ? strrchr(disk, '/') + 1 : disk;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%.31s", name);
    snprintf(out->kind, sizeof out->kind, "%s", kind_of(name));
    snprintf(probe, sizeof probe, "%s/queue", disk);
    out->rotational = sysfs_u64(probe, "rotational") == 1;
    uint64_t v = sysfs_u64(probe, "nr_requests");
    out->nr_requests = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    v = sysfs_u64(probe, "max_sectors_kb");
    out->max_sectors_kb = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    out->optimal_io_bytes = sysfs_u64(probe, "optimal_io_size");
    return NX_OK;
}

/* ---- the rule -------------------------------------------------------------------------- */

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void nx_io_shape_rule(const nx_blockdev_t *dev, uint32_t cpus, nx_io_shape_t *out)
{
    nx_io_shape_default(out);
    if (cpus == 0)
        cpus = 1;
    uint64_t max_request = (uint64_t)dev->max_sectors_kb * 1024;
    /* Each read is 4 of the device's largest requests, so one read keeps several going. */
    uint64_t chunk = max_request ? clamp_u64(4 * max_request, MIN_CHUNK, MAX_CHUNK)
                                 : DEFAULT_CHUNK;
    /* A RAID stripe: reads of whole stripes (when O_DIRECT can take that size). */
    uint64_t opt = dev->optimal_io_bytes;
    if (opt && opt % 4096 == 0 && opt <= MAX_CHUNK)
        chunk = (chunk + opt - 1) / opt * opt;
    out->chunk_bytes = chunk;
    /* virtio-blk reports rotational whatever backs it (the flag is the kernel's default), so
     * it says nothing about the host's disk. A real spinning disk: one reader streaming, with
     * the next read queued while one completes. */
    if (dev->rotational && strcmp(dev->kind, "virtio") != 0) {
        out->threads = 1;
        out->queue_depth = 2;
        return;
    }
    out->threads = cpus < MAX_RULE_THREADS ? cpus : MAX_RULE_THREADS;
    if (!max_request)
        return; /* requests of unknown size: the defaults' depth */
    uint64_t per_read = (chunk + max_request - 1) / max_request;
    uint64_t budget = (uint64_t)REQUESTS_PER_CPU * cpus;
    /* A quarter of the device's queue: room for other users of the disk. */
    if (dev->nr_requests && dev->nr_requests / 4 < budget)
        budget = dev->nr_requests / 4;
    out->queue_depth = (uint32_t)clamp_u64(budget / (out->threads * per_read), 2, MAX_RULE_DEPTH);
}

/* ---- the cache ------------------------------------------------------------------------- */

bool nx_io_cache_path(char *buf, size_t cap)
{
    const char *env = getenv("NEXUS_LOADER_CACHE");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (env && *env)
        n = snprintf(buf, cap, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(buf, cap, "%s/nexus/loader-io.txt", xdg);
    else if (home && *home)
        n = snprintf(buf, cap, "%s/.cache/nexus/loader-io.txt", home);
    else
        return false;
    return n > 0 && (size_t)n < cap;
}

typedef struct cache_entry {
    nx_fs_id_t fs;
    nx_io_shape_t shape;
} cache_entry_t;

static bool parse_u64(const char *text, int base, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*text || *text == '-' || *text == '+')
        return false;
    unsigned long long v = strtoull(text, &end, base);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool bad(const char **why, const char *what)
{
    *why = what;
    return false;
}

/* One cache line into *e; false with *why naming the problem. */
static bool parse_line(char *line, cache_entry_t *e, const char **why)
{
    bool have_dev = false, have_fsid = false, have_io = false, have_threads = false,
         have_depth = false, have_chunk = false;
    char *save = NULL;
    char *tok = strtok_r(line, " \t", &save);
    if (!tok || strcmp(tok, CACHE_VERSION) != 0) {
        return bad(why, "not a '" CACHE_VERSION "' entry");
    }
    memset(e, 0, sizeof *e);
    while ((tok = strtok_r(NULL, " \t", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return bad(why, "a word without '='");
        *eq = '\0';
        const char *key = tok, *val = eq + 1;
        uint64_t v, v2;
        if (strcmp(key, "dev") == 0) {
            char *colon = strchr(val, ':');
            if (!colon)
                return bad(why, "dev is not MAJOR:MINOR");
            *colon = '\0';
            if (!parse_u64(val, 10, 0, UINT32_MAX, &v) ||
                !parse_u64(colon + 1, 10, 0, UINT32_MAX, &v2))
                return bad(why, "dev is not MAJOR:MINOR");
            e->fs.major = (uint32_t)v;
            e->fs.minor = (uint32_t)v2;
            have_dev = true;
        } else if (strcmp(key, "fsid") == 0) {
            if (strlen(val) != 16 || !parse_u64(val, 16, 0, UINT64_MAX, &v))
                return bad(why, "fsid is not 16 hex digits");
            e->fs.fsid = v;
            have_fsid = true;
        } else if (strcmp(key, "io") == 0) {
            if (strcmp(val, "io_uring") == 0)
                e->shape.io = NX_LOADER_IO_URING;
            else if (strcmp(val, "threads") == 0)
                e->shape.io = NX_LOADER_IO_THREADS;
            else
                return bad(why, "io is neither io_uring nor threads");
            have_io = true;
        } else if (strcmp(key, "threads") == 0) {
            if (!parse_u64(val, 10, 1, 256, &v))
                return bad(why, "threads is not 1..256");
            e->shape.threads = (uint32_t)v;
            have_threads = true;
        } else if (strcmp(key, "depth") == 0) {
            if (!parse_u64(val, 10, 1, 64, &v))
                return bad(why, "depth is not 1..64");
            e->shape.queue_depth = (uint32_t)v;
            have_depth = true;
        } else if (strcmp(key, "chunk_kib") == 0) {
            if (!parse_u64(val, 10, 4, 1024 * 1024, &v) || v % 4 != 0)
                return bad(why, "chunk_kib is not a multiple of 4 from 4 to 1048576");
            e->shape.chunk_bytes = v * 1024;
            have_chunk = true;
        } else if (strcmp(key, "cold") == 0) {
            if (strcmp(val, "direct") != 0 && strcmp(val, "buffered") != 0)
                return bad(why, "cold is neither direct nor buffered");
            e->shape.cold_buffered = strcmp(val, "buffered") == 0;
        } /* other keys (a note, the date) are for people */
    }
    if (!(have_dev && have_fsid && have_io && have_threads && have_depth && have_chunk))
        return bad(why, "missing one of dev, fsid, io, threads, depth, chunk_kib");
    return true;
}

/* The next line of f into *buf, its line end removed: false at the end of the file. *bad gets
 * why it cannot be an entry (a NUL byte in it, longer than LINE_MAX_BYTES), else NULL. */
static bool next_line(FILE *f, char **buf, size_t *cap, const char **bad)
{
    ssize_t n = getline(buf, cap, f);
    if (n < 0)
        return false;
    if (n > 0 && (*buf)[n - 1] == '\n')
        (*buf)[--n] = '\0';
    if (n > 0 && (*buf)[n - 1] == '\r')
        (*buf)[--n] = '\0';
    *bad = strlen(*buf) != (size_t)n  ? "holds a NUL byte"
           : n > (ssize_t)LINE_MAX_BYTES ? "longer than 1 KiB"
                                         : NULL;
    return true;
}

static bool blank_or_comment(const char *line)
{
    line += strspn(line, " \t\r\n");
    return *line == '\0' || *line == '#';
}

int nx_io_cache_lookup(const char *cache_path, const nx_fs_id_t *fs, nx_io_shape_t *out,
                       nx_err_t *warn)
{
    FILE *f = fopen(cache_path, "r");
    if (!f)
        return NX_ENOTFOUND;
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0, problems = 0;
    bool found = false;
    nx_err_t first = {0};
    const char *why;
    while (next_line(f, &line, &cap, &why)) {
        lineno++;
        if (!why && blank_or_comment(line))
            continue;
        cache_entry_t e;
        if (why || !parse_line(line, &e, &why)) {
            if (problems++ == 0)
                nx_err_set(&first, NX_EFORMAT, "%s:%u: ignored: %s", cache_path, lineno, why);
            continue;
        }
        if (e.fs.major != fs->major || e.fs.minor != fs->minor)
            continue; /* another file system's */
        if (e.fs.fsid != fs->fsid) {
            if (problems++ == 0)
                nx_err_set(&first, NX_EFORMAT,
                           "%s:%u: ignored: stale: calibrated for file system %016llx on "
                           "device %u:%u, which now holds %016llx (run `nexusctl loader "
                           "calibrate` again)",
                           cache_path, lineno, (unsigned long long)e.fs.fsid, fs->major,
                           fs->minor, (unsigned long long)fs->fsid);
            continue;
        }
        *out = e.shape; /* the last entry for this file system wins */
        found = true;
    }
    free(line);
    fclose(f);
    if (problems > 1 && first.code)
        nx_err_prefix(&first, "(%u problem lines; the first) ", problems);
    if (warn)
        *warn = first;
    return found ? NX_OK : NX_ENOTFOUND;
}

/* mkdir -p of the folder holding `path`. */
static int make_parent(const char *path, nx_err_t *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return NX_OK;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return nx_err_set(err, NX_EIO, "cannot make folder '%s': %s", dir, strerror(errno));
        *p = '/';
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return nx_err_set(err, NX_EIO, "cannot make folder '%s': %s", dir, strerror(errno));
    return NX_OK;
}

int nx_io_cache_store(const char *cache_path, const nx_fs_id_t *fs, const nx_io_shape_t *shape,
                      nx_err_t *err)
{
    if (shape->io == NX_LOADER_IO_AUTO || !shape->threads || !shape->queue_depth ||
        !shape->chunk_bytes || shape->chunk_bytes % 4096)
        return nx_err_set(err, NX_EINVAL, "loader cache: a shape to store names its io "
                                          "(io_uring or threads) and all three sizes");
    if (make_parent(cache_path, err) != NX_OK)
        return err->code;
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", cache_path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return nx_err_set(err, NX_EIO, "'%s': cannot create: %s", tmp, strerror(errno));
    FILE *out = fdopen(fd, "w");
    if (!out) {
        close(fd);
        unlink(tmp);
        return nx_err_set(err, NX_EIO, "'%s': %s", tmp, strerror(errno));
    }
    fprintf(out, "# nexus loader I/O shapes, one line per file system (nexusctl loader "
                 "calibrate)\n");
    /* Keep the other file systems' good entries; drop this device's and corrupt lines. */
    FILE *in = fopen(cache_path, "r");
    char *line = NULL, copy[LINE_MAX_BYTES + 1];
    size_t cap = 0;
    const char *why;
    while (in && next_line(in, &line, &cap, &why)) {
        if (why || blank_or_comment(line))
            continue; /* corrupt lines are dropped, and comments (the header is rewritten) */
        snprintf(copy, sizeof copy, "%s", line);
        cache_entry_t e;
        if (!parse_line(copy, &e, &why) || (e.fs.major == fs->major && e.fs.minor == fs->minor))
            continue;
        fprintf(out, "%s\n", line);
    }
    free(line);
    if (in)
        fclose(in);
    fprintf(out,
            CACHE_VERSION " dev=%u:%u fsid=%016llx io=%s threads=%u depth=%u chunk_kib=%llu "
                          "cold=%s\n",
            fs->major, fs->minor, (unsigned long long)fs->fsid, nx_loader_io_name(shape->io),
            shape->threads, shape->queue_depth, (unsigned long long)(shape->chunk_bytes / 1024),
            shape->cold_buffered ? "buffered" : "direct");
    bool ok = fflush(out) == 0 && fsync(fd) == 0;
    ok = fclose(out) == 0 && ok;
    if (!ok || rename(tmp, cache_path) != 0) {
        int e = errno;
        unlink(tmp);
        return nx_err_set(err, NX_EIO, "'%s': cannot write: %s", cache_path, strerror(e));
    }
    return NX_OK;
}

/* ---- the choice ------------------------------------------------------------------------ */

uint32_t nx_io_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (uint32_t)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
}

nx_io_source_t nx_io_shape_for(const char *path, nx_io_shape_t *out, char *why, size_t why_cap)
{
    char note[512];
    nx_io_shape_default(out);
    nx_fs_id_t fs;
    nx_err_t err = {0};
    nx_io_source_t source = NX_IO_SOURCE_DEFAULT;
    if (nx_fs_id_of(path, &fs, &err) != NX_OK) {
        snprintf(note, sizeof note, "%.400s", err.msg);
        goto out;
    }
    char cache[PATH_MAX];
    if (nx_io_cache_path(cache, sizeof cache)) {
        nx_err_t warn = {0};
        int rc = nx_io_cache_lookup(cache, &fs, out, &warn);
        if (warn.code != NX_OK)
            nx_log(NX_LOG_WARN, "loader: %s", warn.msg);
        if (rc == NX_OK) {
            snprintf(note, sizeof note, "calibrated for %u:%u (%.400s)", fs.major, fs.minor, cache);
            source = NX_IO_SOURCE_CALIBRATED;
            goto out;
        }
    }
    nx_blockdev_t dev;
    if (nx_blockdev_read(NULL, fs.major, fs.minor, &dev, &err) != NX_OK) {
        snprintf(note, sizeof note, "%u:%u has no block device", fs.major, fs.minor);
        goto out;
    }
    uint32_t cpus = nx_io_cpus();
    nx_io_shape_rule(&dev, cpus, out);
    snprintf(note, sizeof note,
             "%s (%s, rotational %d, nr_requests %u, max_sectors_kb %u, "
             "optimal_io_size %llu), %u cpus",
             dev.name, dev.kind, dev.rotational, dev.nr_requests, dev.max_sectors_kb,
             (unsigned long long)dev.optimal_io_bytes, cpus);
    source = NX_IO_SOURCE_DEVICE;
out:
    if (why && why_cap)
        snprintf(why, why_cap, "%s", note);
    return source;
}
