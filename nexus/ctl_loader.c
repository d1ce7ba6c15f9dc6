/* ctl_loader.c — `nexusctl loader calibrate PATH`: measure the loader's I/O shapes on the file
 * system holding PATH (a checkpoint) and store the best for it (nx_io_cache_store), so every
 * later load from that file system reads with it; `nexusctl loader show PATH`: which shape a
 * load from PATH would use, and why.
 *
 * A trial is the real loader, as `nexusctl model load` runs it, into a fresh pool: reads with
 * O_DIRECT (cold every time without dropping the page cache) into memory never touched before,
 * whose first touch is most of the CPU a load costs on a small machine. Every shape runs once
 * per round, the order rotating between rounds so no shape always follows the same one; the
 * best median wins, unless the device rule's shape is within RULE_MARGIN of it: then the rule's
 * is kept (calibrated), since nearly equal medians are this VM's run-to-run spread, and storing
 * whichever drew the luckier runs would change the shape from one calibration to the next.
 *
 * A few shapes also run buffered, through the page cache: the file's pages are dropped before
 * (and after) each such trial (fsync + POSIX_FADV_DONTNEED, checked with mincore), so they are
 * cold too. Where the host caches the disk (a VM's virtio disk), reading through the page cache
 * can beat O_DIRECT; a calibration that measured so stores cold=buffered. Where the drop leaves
 * pages behind (the file mapped by another process), the buffered shapes are not measured. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl.h"
#include "nx_loader.h"

#define MIB (1024ull * 1024ull)
#define MAX_SHAPES 24
#define MAX_ROUNDS 15
#define RULE_MARGIN 0.05 /* 5% */

typedef struct trial_row {
    nx_io_shape_t shape;
    double seconds[MAX_ROUNDS];
    uint32_t runs;
    double median;
    bool skipped; /* io_uring refused here, or (buffered) the page cache kept the file */
} trial_row_t;

typedef struct cal_args {
    const char *path;
    nx_device_kind_t device;
    uint32_t rounds;
    bool json, save;
    nx_st_t *st; /* the checkpoint, opened once (calibrate) */
} cal_args_t;

static const char calibrate_usage[] =
    "usage: nexusctl loader calibrate PATH [--rounds N] [--device auto|cpu|cuda] [--json]\n"
    "                                 [--no-save]\n"
    "       nexusctl loader show PATH [--json]\n";

static int usage_error(const char *cmd, const char *fmt, const char *what)
{
    fprintf(stderr, "nexusctl loader %s: ", cmd);
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n%s", calibrate_usage);
    return NX_CTL_EXIT_USAGE;
}

static int parse_args(const char *cmd, int argc, char **argv, cal_args_t *a)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        bool calibrate = strcmp(cmd, "calibrate") == 0;
        if (strcmp(opt, "--json") == 0) {
            a->json = true;
        } else if (calibrate && strcmp(opt, "--no-save") == 0) {
            a->save = false;
        } else if (calibrate && strcmp(opt, "--rounds") == 0) {
            if (!nx_cli_parse_u64(val, 1, MAX_ROUNDS, &n))
                return usage_error(cmd, "--rounds takes a number from 1 to 15, not '%s'",
                                   val ? val : "");
            a->rounds = (uint32_t)n;
            i++;
        } else if (calibrate && strcmp(opt, "--device") == 0) {
            if (!val || !nx_device_parse(val, &a->device))
                return usage_error(cmd, "--device takes auto, cpu or cuda, not '%s'",
                                   val ? val : "");
            i++;
        } else if (opt[0] == '-') {
            return usage_error(cmd, "unknown option '%s'", opt);
        } else if (a->path) {
            return usage_error(cmd, "one PATH only; '%s' is extra", opt);
        } else {
            a->path = opt;
        }
    }
    if (!a->path)
        return usage_error(cmd, "%sPATH is missing (a checkpoint: a .safetensors or .gguf "
                                "file, or a model directory)", "");
    return NX_CTL_EXIT_OK;
}

/* The row is the device rule's shape (read with O_DIRECT, as the rule reads). */
static bool is_rule(const nx_io_shape_t *s, const nx_io_shape_t *rule)
{
    return s->io != NX_LOADER_IO_THREADS && !s->cold_buffered && s->threads == rule->threads &&
           s->queue_depth == rule->queue_depth && s->chunk_bytes == rule->chunk_bytes;
}

/* The shapes tried: io_uring with 1, one per core and two per core reader threads x 1, 2, 4
 * reads in flight x 16 MiB; one per core x 2 in flight x 8 and 32 MiB; pread threads, one and
 * four per core, x 16 MiB; buffered: one per core x 2 and 1 x 4 in flight, and pread threads
 * one per core; and the device rule's shape, where none of these is it. */
static uint32_t grid(uint32_t cpus, const nx_io_shape_t *rule, trial_row_t *rows)
{
    uint32_t n = 0;
    uint32_t per_core[3] = {1, cpus, 2 * cpus};
    for (uint32_t t = 0; t < 3; t++) {
        uint32_t threads = per_core[t] > 16 ? 16 : per_core[t];
        if (t > 0 && threads == rows[n - 1].shape.threads)
            continue;
        for (uint32_t d = 1; d <= 4; d *= 2)
            rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_URING, threads, d, 16 * MIB};
    }
    uint32_t core_threads = cpus > 16 ? 16 : cpus;
    rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_URING, core_threads, 2, 8 * MIB};
    rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_URING, core_threads, 2, 32 * MIB};
    rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_THREADS, core_threads, 1, 16 * MIB};
    uint32_t many = 4 * cpus > 32 ? 32 : 4 * cpus;
    if (many != core_threads)
        rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_THREADS, many, 1, 16 * MIB};
    /* buffered: one per core x 2 and 1 x 4 in flight, and the pread threads */
    rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_URING, core_threads, 2, 16 * MIB, true};
    rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_URING, 1, 4, 16 * MIB, true};
    rows[n++].shape = (nx_io_shape_t){NX_LOADER_IO_THREADS, core_threads, 1, 16 * MIB, true};
    bool have_rule = false;
    for (uint32_t i = 0; i < n; i++)
        have_rule |= is_rule(&rows[i].shape, rule);
    if (!have_rule && n < MAX_SHAPES) {
        rows[n].shape = *rule;
        rows[n++].shape.io = NX_LOADER_IO_URING;
    }
    return n;
}

static uint64_t pool_bytes_for(const nx_st_t *st, uint64_t *payload)
{
    *payload = nx_st_data_bytes(st);
    uint64_t bytes = *payload + 4096ull * (nx_st_file_count(st) + 1);
    return (bytes + 32 * MIB - 1) / (32 * MIB) * (32 * MIB) + 32 * MIB;
}

/* Drop the checkpoint's files from the page cache (fsync, POSIX_FADV_DONTNEED); *left: the
 * bytes mincore still finds cached after it. */
static int drop_cached(const nx_st_t *st, uint64_t *left, nx_err_t *err)
{
    *left = 0;
    int rc = NX_OK;
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < nx_st_file_count(st) && rc == NX_OK; i++) {
        const nx_st_file_t *f = nx_st_file_at(st, i);
        int fd = open(f->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = nx_err_set(err, NX_EIO, "'%s': cannot open: %s", f->path, strerror(errno));
            break;
        }
        fsync(fd); /* dirty pages are not dropped; a read-only file system refuses: fine */
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        void *map = f->file_bytes ? mmap(NULL, f->file_bytes, PROT_READ, MAP_SHARED, fd, 0)
                                  : MAP_FAILED;
        size_t pages = (f->file_bytes + (uint64_t)page - 1) / (uint64_t)page;
        unsigned char *vec = map != MAP_FAILED ? malloc(pages ? pages : 1) : NULL;
        if (vec && mincore(map, f->file_bytes, vec) == 0)
            for (size_t p = 0; p < pages; p++)
                *left += (vec[p] & 1) * (uint64_t)page;
        free(vec);
        if (map != MAP_FAILED)
            munmap(map, f->file_bytes);
        close(fd);
    }
    return rc;
}

/* One load with `shape` into a pool made for it (fresh memory): O_DIRECT, or buffered with the
 * file dropped from the page cache before (NX_EBUSY where pages stayed) and after. */
static int trial(const cal_args_t *a, uint64_t pool_bytes, const nx_io_shape_t *shape,
                 double *seconds, nx_err_t *err)
{
    uint64_t left = 0;
    if (shape->cold_buffered) {
        if (drop_cached(a->st, &left, err) != NX_OK)
            return err->code;
        if (left * 100 > pool_bytes) /* over 1%: it would not be a cold read */
            return nx_err_set(err, NX_EBUSY,
                              "%llu bytes of '%s' stayed in the page cache after dropping it "
                              "(mapped by another process?)",
                              (unsigned long long)left, a->path);
    }
    nx_pool_opts_t popts = {.device = a->device, .bytes = pool_bytes};
    nx_pool_t *pool = nx_pool_new(&popts, err);
    if (!pool)
        return err->code;
    nx_loader_opts_t lopts = {.threads = shape->threads, .chunk_bytes = shape->chunk_bytes,
                              .queue_depth = shape->queue_depth, .io = shape->io,
                              .read_mode = shape->cold_buffered ? NX_READ_BUFFERED
                                                                : NX_READ_DIRECT};
    nx_loader_t *loader = nx_loader_new(pool, &lopts, err);
    int rc = loader ? NX_OK : err->code;
    if (loader) {
        nx_load_stats_t stats;
        nx_model_t *model = nx_loader_load(loader, a->path, NULL, &stats, err);
        rc = model ? NX_OK : err->code;
        *seconds = stats.seconds;
        nx_loader_unload(loader, &model, false);
        nx_loader_destroy(&loader);
    }
    nx_pool_destroy(&pool);
    nx_err_t drop_err = {0};
    if (rc == NX_OK && shape->cold_buffered) /* leave the page cache as it was found */
        drop_cached(a->st, &left, &drop_err);
    return rc;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double median_of(const double *v, uint32_t n)
{
    double sorted[MAX_ROUNDS];
    memcpy(sorted, v, n * sizeof *v);
    qsort(sorted, n, sizeof *sorted, cmp_double);
    return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

static void shape_text(const nx_io_shape_t *s, char *out, size_t cap)
{
    const char *cold = s->cold_buffered ? ", buffered" : "";
    if (s->io == NX_LOADER_IO_THREADS)
        snprintf(out, cap, "pread threads %u x %llu MiB%s", s->threads,
                 (unsigned long long)(s->chunk_bytes / MIB), cold);
    else
        snprintf(out, cap, "io_uring %u x %u x %llu MiB%s", s->threads, s->queue_depth,
                 (unsigned long long)(s->chunk_bytes / MIB), cold);
}

static json_t *shape_json(const nx_io_shape_t *s)
{
    return json_pack("{s:s, s:i, s:i, s:I, s:s}", "io", nx_loader_io_name(s->io), "threads",
                     (int)s->threads, "queue_depth", (int)s->queue_depth, "chunk_bytes",
                     (json_int_t)s->chunk_bytes, "cold_read",
                     s->cold_buffered ? "buffered" : "direct");
}

/* Run the grid, rounds x shapes, alternating; rows get their runs and medians. */
static int run_grid(const cal_args_t *a, uint64_t pool_bytes, trial_row_t *rows, uint32_t n,
                    nx_err_t *err)
{
    for (uint32_t r = 0; r < a->rounds; r++) {
        uint32_t offset = (r * (n / a->rounds + 1)) % n;
        for (uint32_t k = 0; k < n; k++) {
            trial_row_t *row = &rows[(k + offset) % n];
            if (row->skipped)
                continue;
            double s = 0;
            int rc = trial(a, pool_bytes, &row->shape, &s, err);
            if (rc == NX_ENOTSUP && row->shape.io == NX_LOADER_IO_URING) {
                for (uint32_t i = 0; i < n; i++) /* io_uring refused: none of them runs */
                    rows[i].skipped |= rows[i].shape.io == NX_LOADER_IO_URING;
                fprintf(stderr, "nexusctl loader calibrate: io_uring refused here (%s); "
                                "pread threads only\n", err->msg);
                continue;
            }
            if (rc == NX_EBUSY && row->shape.cold_buffered) {
                for (uint32_t i = 0; i < n; i++) /* cannot be cold: no buffered shape runs */
                    rows[i].skipped |= rows[i].shape.cold_buffered;
                fprintf(stderr, "nexusctl loader calibrate: %s; buffered reads not measured\n",
                        err->msg);
                continue;
            }
            if (rc != NX_OK)
                return rc;
            row->seconds[row->runs++] = s;
        }
        if (!a->json)
            fprintf(stderr, "  round %u of %u done\n", r + 1, a->rounds);
    }
    for (uint32_t i = 0; i < n; i++)
        rows[i].median = rows[i].runs ? median_of(rows[i].seconds, rows[i].runs) : 0;
    return NX_OK;
}

/* One calibration: the grid's rows and what was chosen from them. */
typedef struct calibration {
    nx_fs_id_t fs;
    nx_blockdev_t dev;
    bool have_dev;           /* dev was read from sysfs */
    uint32_t cpus;
    uint64_t payload;        /* bytes a load moves */
    nx_io_shape_t rule;      /* the device rule's shape (the defaults without a device) */
    trial_row_t rows[MAX_SHAPES];
    uint32_t n;
    uint32_t fastest;        /* row with the lowest median */
    uint32_t rule_row;       /* row of the rule's shape, n when refused or absent */
    uint32_t best;           /* row stored: fastest, or rule_row within RULE_MARGIN of it */
    char cache[4096];        /* where it was stored; "" when not */
} calibration_t;

/* fastest, rule_row and best from the measured rows; NX_EIO when nothing was measured. */
static int choose(calibration_t *c, const char *path, nx_err_t *err)
{
    c->fastest = c->rule_row = c->n;
    for (uint32_t i = 0; i < c->n; i++) {
        const trial_row_t *r = &c->rows[i];
        if (r->runs && (c->fastest == c->n || r->median < c->rows[c->fastest].median))
            c->fastest = i;
        if (r->runs && r->shape.io == NX_LOADER_IO_URING && is_rule(&r->shape, &c->rule))
            c->rule_row = i;
    }
    if (c->fastest == c->n)
        return nx_err_set(err, NX_EIO, "no shape could load '%s'", path);
    c->best = c->fastest;
    if (c->rule_row < c->n &&
        c->rows[c->rule_row].median <= c->rows[c->fastest].median * (1 + RULE_MARGIN))
        c->best = c->rule_row;
    return NX_OK;
}

static void print_json(const cal_args_t *a, const calibration_t *c)
{
    char devtext[32], fsid[17];
    snprintf(devtext, sizeof devtext, "%u:%u", c->fs.major, c->fs.minor);
    snprintf(fsid, sizeof fsid, "%016llx", (unsigned long long)c->fs.fsid);
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(a->path));
    json_object_set_new(o, "bytes", json_integer((json_int_t)c->payload));
    json_object_set_new(o, "dev", json_string(devtext));
    json_object_set_new(o, "fsid", json_string(fsid));
    json_object_set_new(o, "block_device", c->have_dev ? json_string(c->dev.name) : json_null());
    json_object_set_new(o, "cpus", json_integer(c->cpus));
    json_object_set_new(o, "rounds", json_integer(a->rounds));
    json_t *list = json_array();
    for (uint32_t i = 0; i < c->n; i++) {
        const trial_row_t *row = &c->rows[i];
        json_t *r = shape_json(&row->shape);
        json_t *runs = json_array();
        for (uint32_t k = 0; k < row->runs; k++)
            json_array_append_new(runs, json_real(row->seconds[k]));
        json_object_set_new(r, "seconds", runs);
        json_object_set_new(r, "median", row->runs ? json_real(row->median) : json_null());
        json_object_set_new(r, "refused", json_boolean(row->skipped));
        json_array_append_new(list, r);
    }
    json_object_set_new(o, "shapes", list);
    json_object_set_new(o, "best", shape_json(&c->rows[c->best].shape));
    json_object_set_new(o, "fastest", shape_json(&c->rows[c->fastest].shape));
    json_object_set_new(o, "device_rule", shape_json(&c->rule));
    json_object_set_new(o, "device_rule_median", c->rule_row < c->n
                                                     ? json_real(c->rows[c->rule_row].median)
                                                     : json_null());
    json_object_set_new(o, "cache", c->cache[0] ? json_string(c->cache) : json_null());
    char *text = json_dumps(o, JSON_INDENT(2));
    if (text)
        puts(text);
    free(text);
    json_decref(o);
}

static void print_human(const calibration_t *c)
{
    printf("%-30s %9s %7s  %s\n", "shape", "median s", "GB/s", "runs (s)");
    for (uint32_t i = 0; i < c->n; i++) {
        const trial_row_t *row = &c->rows[i];
        char name[64];
        shape_text(&row->shape, name, sizeof name);
        if (row->skipped) {
            printf("%-30s %9s\n", name, "refused");
            continue;
        }
        printf("%-30s %9.3f %7.2f ", name, row->median, (double)c->payload / row->median / 1e9);
        for (uint32_t r = 0; r < row->runs; r++)
            printf(" %.3f", row->seconds[r]);
        printf("%s\n", i == c->fastest ? "   <- fastest" : "");
    }
    char best_text[64], rule_text[64];
    shape_text(&c->rows[c->best].shape, best_text, sizeof best_text);
    shape_text(&c->rule, rule_text, sizeof rule_text);
    if (c->rule_row < c->n)
        printf("device rule (%s): %s, median %.3f s = %.2f of the fastest's speed%s\n",
               c->have_dev ? c->dev.name : "no block device", rule_text,
               c->rows[c->rule_row].median,
               c->rows[c->fastest].median / c->rows[c->rule_row].median,
               c->best == c->rule_row && c->fastest != c->rule_row ? " (within 5%: kept)" : "");
    printf("best: %s%s%s\n", best_text, c->cache[0] ? "; stored for this file system in " : "",
           c->cache[0] ? c->cache : " (not stored: --no-save)");
}

/* The file system, its device and rule, and the grid of shapes for a.path. */
static int prepare(const cal_args_t *a, calibration_t *c, uint64_t *pool_bytes, nx_err_t *err)
{
    *pool_bytes = pool_bytes_for(a->st, &c->payload);
    if (nx_fs_id_of(a->path, &c->fs, err) != NX_OK)
        return err->code;
    /* The device rule's shape, not the cache's: this run replaces that. */
    nx_err_t dev_err = {0};
    c->have_dev = nx_blockdev_read(NULL, c->fs.major, c->fs.minor, &c->dev, &dev_err) == NX_OK;
    c->cpus = nx_io_cpus();
    if (c->have_dev)
        nx_io_shape_rule(&c->dev, c->cpus, &c->rule);
    else
        nx_io_shape_default(&c->rule);
    c->n = grid(c->cpus, &c->rule, c->rows);
    return NX_OK;
}

int nx_ctl_loader_calibrate(int argc, char **argv)
{
    cal_args_t a = {.device = NX_DEVICE_AUTO, .rounds = 3, .save = true};
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    int rc = nx_ctl_store_opts_take("loader calibrate", &argc, argv, &store);
    if (rc == NX_CTL_EXIT_OK)
        rc = parse_args("calibrate", argc, argv, &a);
    if (rc == NX_CTL_EXIT_OK)
        rc = nx_ctl_resolve_model("loader calibrate", &store, a.path, &model_path);
    if (rc != NX_CTL_EXIT_OK)
        return rc;
    a.path = model_path;
    int exit_code = NX_CTL_EXIT_FAIL;
    nx_err_t err = {0};
    calibration_t *c = calloc(1, sizeof *c);
    uint64_t pool_bytes = 0;
    if (!c) {
        nx_err_set(&err, NX_ENOMEM, "out of memory");
        goto out;
    }
    a.st = nx_st_open(a.path, &err);
    if (!a.st || prepare(&a, c, &pool_bytes, &err) != NX_OK)
        goto out;
    if (!a.json) {
        char size[32];
        nx_cli_format_bytes(c->payload, size, sizeof size);
        printf("calibrating the loader on %u:%u (fsid %016llx%s%s) with %s: %u shapes x %u "
               "rounds, O_DIRECT into fresh memory, %u cpus\n",
               c->fs.major, c->fs.minor, (unsigned long long)c->fs.fsid, c->have_dev ? ", " : "",
               c->have_dev ? c->dev.name : "", size, c->n, a.rounds, c->cpus);
        fflush(stdout);
    }
    if (run_grid(&a, pool_bytes, c->rows, c->n, &err) != NX_OK || choose(c, a.path, &err) != NX_OK)
        goto out;
    if (a.save && !nx_io_cache_path(c->cache, sizeof c->cache)) {
        nx_err_set(&err, NX_EINVAL, "no cache file to store the result in: set "
                                    "NEXUS_LOADER_CACHE, XDG_CACHE_HOME or HOME, or pass --no-save");
        goto out;
    }
    if (a.save && nx_io_cache_store(c->cache, &c->fs, &c->rows[c->best].shape, &err) != NX_OK)
        goto out;
    if (a.json)
        print_json(&a, c);
    else
        print_human(c);
    exit_code = NX_CTL_EXIT_OK;
out:
    if (exit_code != NX_CTL_EXIT_OK)
        fprintf(stderr, "nexusctl loader calibrate: %s\n", err.msg);
    nx_st_destroy(&a.st);
    free(c);
    free(model_path);
    return exit_code;
}

int nx_ctl_loader_show(int argc, char **argv)
{
    cal_args_t a = {0};
    int rc = parse_args("show", argc, argv, &a);
    if (rc != NX_CTL_EXIT_OK)
        return rc;
    if (access(a.path, F_OK) != 0) {
        fprintf(stderr, "nexusctl loader show: '%s' does not exist\n", a.path);
        return NX_CTL_EXIT_FAIL;
    }
    nx_io_shape_t shape;
    char why[512];
    nx_io_source_t source = nx_io_shape_for(a.path, &shape, why, sizeof why);
    char text[64];
    shape_text(&shape, text, sizeof text);
    if (a.json) {
        json_t *o = shape_json(&shape);
        json_object_set_new(o, "path", json_string(a.path));
        json_object_set_new(o, "io_source", json_string(nx_io_source_name(source)));
        json_object_set_new(o, "why", json_string(why));
        char *out = json_dumps(o, JSON_INDENT(2));
        if (out)
            puts(out);
        free(out);
        json_decref(o);
    } else {
        printf("%s: %s (io_source %s: %s)\n", a.path, text, nx_io_source_name(source), why);
    }
    return NX_CTL_EXIT_OK;
}
