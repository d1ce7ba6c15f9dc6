/* test_ioshape.c — the loader's I/O shape: the device rule on given sysfs attributes (this VM's
 * virtio disk among them: it must give the shape bench/RESULTS.md's sweep found best here), the
 * sysfs reader on a built tree (a partition walked up to its disk) and on this machine's real
 * /sys, the per-file-system calibration cache (store, lookup, another file system's entry,
 * corrupt and stale lines), and the precedence a loader applies: flags > calibrated > device
 * rule > defaults, as nx_loader_shape and the load's stats report it. Real files in a temp dir. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "nx_loader.h"

#define MIB (1024ull * 1024ull)

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nx-ioshape-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    unsetenv("NX_LOADER_IO");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static nx_blockdev_t dev_of(const char *kind, bool rotational, uint32_t nr_requests,
                            uint32_t max_sectors_kb, uint64_t optimal_io_bytes)
{
    nx_blockdev_t d = {.rotational = rotational, .nr_requests = nr_requests,
                       .max_sectors_kb = max_sectors_kb, .optimal_io_bytes = optimal_io_bytes};
    snprintf(d.kind, sizeof d.kind, "%s", kind);
    snprintf(d.name, sizeof d.name, "x");
    return d;
}

static void assert_shape(const nx_io_shape_t *s, uint32_t threads, uint32_t depth,
                         uint64_t chunk_bytes)
{
    if (s->threads != threads || s->queue_depth != depth || s->chunk_bytes != chunk_bytes)
        fail_msg("shape %u x %u x %llu bytes, expected %u x %u x %llu", s->threads,
                 s->queue_depth, (unsigned long long)s->chunk_bytes, threads, depth,
                 (unsigned long long)chunk_bytes);
}

/* ---- the rule -------------------------------------------------------------------------- */

static void test_rule_this_vm(void **state)
{
    (void)state;
    /* This VM (bench/RESULTS.md): virtio /dev/vda, rotational 1 (virtio's default, not the
     * host's disk), nr_requests 256, max_sectors_kb 4096, 2 cores: the sweep's best shape. */
    nx_blockdev_t d = dev_of("virtio", true, 256, 4096, 0);
    nx_io_shape_t s;
    nx_io_shape_rule(&d, 2, &s);
    assert_int_equal(s.io, NX_LOADER_IO_AUTO);
    assert_shape(&s, 2, 2, 16 * MIB);
    nx_io_shape_t def;
    nx_io_shape_default(&def);
    assert_shape(&def, 2, 2, 16 * MIB);
}

static void test_rule_rotational(void **state)
{
    (void)state;
    /* A spinning SATA disk: one reader, two reads queued; 4 x 1280 KiB is under 8 MiB. */
    nx_blockdev_t d = dev_of("scsi", true, 64, 1280, 0);
    nx_io_shape_t s;
    nx_io_shape_rule(&d, 16, &s);
    assert_shape(&s, 1, 2, 8 * MIB);
}

static void test_rule_nvme(void **state)
{
    (void)state;
    nx_io_shape_t s;
    /* Small requests: 8 MiB reads are 64 requests each; 8 threads x 2 already keep 1024 queued. */
    nx_blockdev_t d = dev_of("nvme", false, 1023, 128, 0);
    nx_io_shape_rule(&d, 16, &s);
    assert_shape(&s, 8, 2, 8 * MIB);
    /* 2 MiB requests: 4 per 8 MiB read; the budget of 8 per core (128) allows 4 in flight. */
    d = dev_of("nvme", false, 1023, 2048, 0);
    nx_io_shape_rule(&d, 16, &s);
    assert_shape(&s, 8, 4, 8 * MIB);
    /* A shallow queue caps the budget: nr_requests 32 / 4 = 8 requests, under 1 read in flight
     * per thread: the floor of 2. */
    d = dev_of("nvme", false, 32, 4096, 0);
    nx_io_shape_rule(&d, 4, &s);
    assert_shape(&s, 4, 2, 16 * MIB);
    /* Many cores: no more than 8 reader threads, and the depth grows instead. */
    d = dev_of("nvme", false, 4096, 4096, 0);
    nx_io_shape_rule(&d, 64, &s);
    assert_shape(&s, 8, 16, 16 * MIB);
}

static void test_rule_odd_inputs(void **state)
{
    (void)state;
    nx_io_shape_t s;
    /* A RAID stripe of 3 MiB: reads are whole stripes. */
    nx_blockdev_t d = dev_of("md", false, 128, 4096, 3 * MIB);
    nx_io_shape_rule(&d, 2, &s);
    assert_int_equal(s.chunk_bytes % (3 * MIB), 0);
    assert_int_equal(s.chunk_bytes, 18 * MIB);
    /* Nothing known: the defaults' depth and chunk, one thread per core. */
    d = dev_of("other", false, 0, 0, 0);
    nx_io_shape_rule(&d, 2, &s);
    assert_shape(&s, 2, 2, 16 * MIB);
    nx_io_shape_rule(&d, 0, &s); /* no core count: one */
    assert_shape(&s, 1, 2, 16 * MIB);
    /* Huge requests stay within 32 MiB reads; a 7 KiB optimal size (not 4 KiB-aligned) is
     * ignored rather than giving reads O_DIRECT refuses. */
    d = dev_of("scsi", false, 256, 65536, 7 * 1024);
    nx_io_shape_rule(&d, 2, &s);
    assert_int_equal(s.chunk_bytes, 32 * MIB);
}

/* ---- sysfs ----------------------------------------------------------------------------- */

static void mkdirs(const char *path)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static void test_sysfs_partition_walk(void **state)
{
    (void)state;
    char root[300], p[600];
    snprintf(root, sizeof root, "%s/sys", tmpdir);
    snprintf(p, sizeof p, "%s/devices/pci0/virtio3/block/vdb/vdb1", root);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/devices/pci0/virtio3/block/vdb/vdb1/partition", root);
    write_file(p, "1\n");
    snprintf(p, sizeof p, "%s/devices/pci0/virtio3/block/vdb/queue", root);
    mkdirs(p);
    const char *attrs[][2] = {{"rotational", "1\n"}, {"nr_requests", "256\n"},
                              {"max_sectors_kb", "4096\n"}, {"optimal_io_size", "0\n"}};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/devices/pci0/virtio3/block/vdb/queue/%s", root, attrs[i][0]);
        write_file(p, attrs[i][1]);
    }
    snprintf(p, sizeof p, "%s/dev/block", root);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/dev/block/253:17", root);
    assert_int_equal(symlink("../../devices/pci0/virtio3/block/vdb/vdb1", p), 0);

    nx_blockdev_t d;
    nx_err_t err = {0};
    assert_int_equal(nx_blockdev_read(root, 253, 17, &d, &err), NX_OK);
    assert_string_equal(d.name, "vdb");
    assert_string_equal(d.kind, "virtio");
    assert_true(d.rotational);
    assert_int_equal(d.nr_requests, 256);
    assert_int_equal(d.max_sectors_kb, 4096);
    assert_int_equal(d.optimal_io_bytes, 0);
    /* No such device (tmpfs: 0:N): not found, not a crash. */
    assert_int_equal(nx_blockdev_read(root, 0, 45, &d, &err), NX_ENOTFOUND);
    /* A garbage attribute is read as absent (0). */
    snprintf(p, sizeof p, "%s/devices/pci0/virtio3/block/vdb/queue/nr_requests", root);
    write_file(p, "lots\n");
    assert_int_equal(nx_blockdev_read(root, 253, 17, &d, &err), NX_OK);
    assert_int_equal(d.nr_requests, 0);
}

static uint32_t cpus_here(void)
{
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? (uint32_t)CPU_COUNT(&set) : 1;
}

static void test_sysfs_real(void **state)
{
    (void)state;
    char cache[400];
    snprintf(cache, sizeof cache, "%s/no-such-cache.txt", tmpdir);
    setenv("NEXUS_LOADER_CACHE", cache, 1);
    nx_fs_id_t fs;
    nx_err_t err = {0};
    assert_int_equal(nx_fs_id_of(tmpdir, &fs, &err), NX_OK);
    struct stat st;
    assert_int_equal(stat(tmpdir, &st), 0);
    assert_int_equal(fs.major, major(st.st_dev));
    assert_int_equal(fs.minor, minor(st.st_dev));

    nx_blockdev_t d;
    nx_io_shape_t s, expected;
    char why[256];
    nx_io_source_t src = nx_io_shape_for(tmpdir, &s, why, sizeof why);
    if (nx_blockdev_read(NULL, fs.major, fs.minor, &d, &err) != NX_OK) {
        assert_int_equal(src, NX_IO_SOURCE_DEFAULT);
        nx_io_shape_default(&expected);
        assert_shape(&s, expected.threads, expected.queue_depth, expected.chunk_bytes);
        print_message("  (no block device under %s: %s)\n", tmpdir, why);
        return;
    }
    /* The attributes as the kernel shows them, read here independently. */
    char p[300];
    snprintf(p, sizeof p, "/sys/block/%s/queue/max_sectors_kb", d.name);
    char *text = read_text(p);
    assert_non_null(text);
    assert_int_equal(d.max_sectors_kb, strtoul(text, NULL, 10));
    snprintf(p, sizeof p, "/sys/block/%s/queue/rotational", d.name);
    text = read_text(p);
    assert_non_null(text);
    assert_int_equal(d.rotational, text[0] == '1');

    assert_int_equal(src, NX_IO_SOURCE_DEVICE);
    nx_io_shape_rule(&d, cpus_here(), &expected);
    assert_shape(&s, expected.threads, expected.queue_depth, expected.chunk_bytes);
    assert_non_null(strstr(why, d.name));
    print_message("  %s: %s\n", tmpdir, why);
    /* This VM (bench/RESULTS.md's machine): the documented shape. */
    if (strcmp(d.kind, "virtio") == 0 && d.nr_requests == 256 && d.max_sectors_kb == 4096 &&
        cpus_here() == 2)
        assert_shape(&s, 2, 2, 16 * MIB);
    unsetenv("NEXUS_LOADER_CACHE");
}

/* ---- the cache ------------------------------------------------------------------------- */

static void test_cache_store_lookup(void **state)
{
    (void)state;
    char cache[400];
    snprintf(cache, sizeof cache, "%s/deep/er/loader-io.txt", tmpdir);
    nx_fs_id_t a = {.major = 254, .minor = 0, .fsid = 0x1234abcd5678ef01ull};
    nx_fs_id_t b = {.major = 8, .minor = 1, .fsid = 42};
    nx_io_shape_t sa = {.io = NX_LOADER_IO_URING, .threads = 3, .queue_depth = 5,
                        .chunk_bytes = 8 * MIB};
    nx_io_shape_t sb = {.io = NX_LOADER_IO_THREADS, .threads = 8, .queue_depth = 1,
                        .chunk_bytes = 32 * MIB, .cold_buffered = true};
    nx_err_t err = {0}, warn = {0};
    nx_io_shape_t got;
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_ENOTFOUND);
    assert_int_equal(warn.code, NX_OK);
    assert_int_equal(nx_io_cache_store(cache, &a, &sa, &err), NX_OK);
    assert_int_equal(nx_io_cache_store(cache, &b, &sb, &err), NX_OK);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(got.io, NX_LOADER_IO_URING);
    assert_shape(&got, 3, 5, 8 * MIB);
    assert_false(got.cold_buffered);
    assert_int_equal(nx_io_cache_lookup(cache, &b, &got, &warn), NX_OK);
    assert_int_equal(got.io, NX_LOADER_IO_THREADS);
    assert_shape(&got, 8, 1, 32 * MIB);
    assert_true(got.cold_buffered);
    assert_int_equal(warn.code, NX_OK);
    /* Another file system's entry is never used. */
    nx_fs_id_t c = {.major = 259, .minor = 2, .fsid = 7};
    assert_int_equal(nx_io_cache_lookup(cache, &c, &got, &warn), NX_ENOTFOUND);
    assert_int_equal(warn.code, NX_OK);
    /* Storing again replaces a's entry and keeps b's; no temporary file is left behind. */
    sa.threads = 1;
    assert_int_equal(nx_io_cache_store(cache, &a, &sa, &err), NX_OK);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(got.threads, 1);
    assert_int_equal(nx_io_cache_lookup(cache, &b, &got, &warn), NX_OK);
    char *text = read_text(cache);
    size_t entries = 0;
    for (char *l = strstr(text, "dev="); l; l = strstr(l + 1, "dev="))
        entries++;
    assert_int_equal(entries, 2);
    char dir[400];
    snprintf(dir, sizeof dir, "ls -A '%s/deep/er' | grep -v '^loader-io.txt$'", tmpdir);
    assert_int_not_equal(system(dir), 0); /* grep found nothing else */
}

static void test_cache_corrupt_and_stale(void **state)
{
    (void)state;
    char cache[400];
    snprintf(cache, sizeof cache, "%s/corrupt.txt", tmpdir);
    nx_fs_id_t a = {.major = 254, .minor = 0, .fsid = 0xabcull};
    nx_io_shape_t got;
    nx_err_t warn = {0}, err = {0};
    /* Line 2 is garbage, line 3 a bad value; line 4 is a's entry: used, with a warning. */
    write_file(cache, "# nexus loader I/O shapes\n"
                      "v1 dev=254:0 fsid=zz io=io_uring threads=2\n"
                      "v1 dev=254:0 fsid=0000000000000abc io=io_uring threads=0 depth=2 chunk_kib=16384\n"
                      "v1 dev=254:0 fsid=0000000000000abc io=threads threads=6 depth=1 chunk_kib=4096\n");
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_shape(&got, 6, 1, 4 * MIB);
    assert_int_not_equal(warn.code, NX_OK);
    char where[420];
    snprintf(where, sizeof where, "%s:2", cache);
    assert_non_null(strstr(warn.msg, where));
    /* Binary junk only: not found, warned, no crash. */
    write_file(cache, "\x01\x02\xff garbage = = =\n\n   \nv9 dev=1:2\n");
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_ENOTFOUND);
    snprintf(where, sizeof where, "%s:1", cache);
    assert_non_null(strstr(warn.msg, where));
    /* Stale: the device number matches, the file system on it is another one (reformatted). */
    write_file(cache, "v1 dev=254:0 fsid=0000000000000def io=io_uring threads=2 depth=2 "
                      "chunk_kib=16384\n");
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_ENOTFOUND);
    assert_non_null(strstr(warn.msg, "stale"));
    snprintf(where, sizeof where, "%s:1", cache);
    assert_non_null(strstr(warn.msg, where));
    /* A line past 1 KiB is one corrupt line, not several. */
    static char longline[4000];
    memset(longline, 'x', 3000);
    snprintf(longline + 3000, sizeof longline - 3000,
             "\nv1 dev=254:0 fsid=0000000000000abc io=io_uring threads=7 depth=2 chunk_kib=4096\n");
    write_file(cache, longline);
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(got.threads, 7);
    snprintf(where, sizeof where, "%s:1: ignored: longer", cache);
    assert_non_null(strstr(warn.msg, where));
    assert_null(strstr(warn.msg, "problem lines"));
    /* A NUL byte spoils its own line only, not the next one. */
    static const char nul[] = "v1 dev=254:0\0 junk\n"
                              "v1 dev=254:0 fsid=0000000000000abc io=threads threads=9 depth=1 "
                              "chunk_kib=4096\n";
    FILE *f = fopen(cache, "w");
    assert_non_null(f);
    fwrite(nul, 1, sizeof nul - 1, f);
    fclose(f);
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(got.threads, 9);
    assert_non_null(strstr(warn.msg, "NUL"));
    /* Storing over a corrupt file drops its bad lines. */
    write_file(cache, "junk\n");
    nx_io_shape_t s = {.io = NX_LOADER_IO_URING, .threads = 2, .queue_depth = 4,
                       .chunk_bytes = 16 * MIB};
    assert_int_equal(nx_io_cache_store(cache, &a, &s, &err), NX_OK);
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(warn.code, NX_OK);
    assert_null(strstr(read_text(cache), "junk"));
    /* cold: direct or buffered; absent (a line as the first version wrote it) is direct; any
     * other value spoils its line, named. */
    write_file(cache, "v1 dev=254:0 fsid=0000000000000abc io=io_uring threads=2 depth=2 "
                      "chunk_kib=16384 cold=sideways\n"
                      "v1 dev=254:0 fsid=0000000000000abc io=io_uring threads=3 depth=2 "
                      "chunk_kib=16384 cold=buffered\n");
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(got.threads, 3);
    assert_true(got.cold_buffered);
    snprintf(where, sizeof where, "%s:1", cache);
    assert_non_null(strstr(warn.msg, where));
    assert_non_null(strstr(warn.msg, "cold"));
    write_file(cache, "v1 dev=254:0 fsid=0000000000000abc io=io_uring threads=2 depth=2 "
                      "chunk_kib=16384\n");
    nx_err_clear(&warn);
    assert_int_equal(nx_io_cache_lookup(cache, &a, &got, &warn), NX_OK);
    assert_int_equal(warn.code, NX_OK);
    assert_false(got.cold_buffered);
}

static void test_cache_path(void **state)
{
    (void)state;
    char buf[512];
    setenv("NEXUS_LOADER_CACHE", "/x/y.txt", 1);
    assert_true(nx_io_cache_path(buf, sizeof buf));
    assert_string_equal(buf, "/x/y.txt");
    unsetenv("NEXUS_LOADER_CACHE");
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    assert_true(nx_io_cache_path(buf, sizeof buf));
    assert_string_equal(buf, "/xdg/nexus/loader-io.txt");
    unsetenv("XDG_CACHE_HOME");
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("HOME", "/home/u", 1);
    assert_true(nx_io_cache_path(buf, sizeof buf));
    assert_string_equal(buf, "/home/u/.cache/nexus/loader-io.txt");
    unsetenv("HOME");
    assert_false(nx_io_cache_path(buf, sizeof buf));
    if (home)
        setenv("HOME", home, 1);
    free(home);
}

/* ---- precedence in a loader ------------------------------------------------------------ */

static nx_pool_t *cpu_pool(void)
{
    nx_pool_opts_t o = {.device = NX_DEVICE_CPU, .bytes = 64 * MIB};
    nx_err_t err = {0};
    nx_pool_t *pool = nx_pool_new(&o, &err);
    if (!pool)
        fail_msg("pool: %s", err.msg);
    return pool;
}

static void model_file(char *path, size_t cap)
{
    snprintf(path, cap, "%s/m.safetensors", tmpdir);
    static float data[50000];
    for (size_t i = 0; i < 50000; i++)
        data[i] = (float)i;
    nx_st_tensor_spec_t t = {.name = "w", .dtype = NX_DT_F32, .ndim = 1, .shape = {50000},
                             .data = data};
    nx_err_t err = {0};
    if (nx_st_save(path, &t, 1, NULL, &err) != NX_OK)
        fail_msg("save: %s", err.msg);
}

static void loader_source(nx_pool_t *pool, const nx_loader_opts_t *o, const char *model,
                          nx_io_source_t want_source, nx_io_shape_t *shape_out)
{
    nx_err_t err = {0};
    nx_loader_t *ld = nx_loader_new(pool, o, &err);
    if (!ld)
        fail_msg("loader: %s", err.msg);
    nx_io_source_t src;
    nx_loader_shape(ld, shape_out, &src, NULL, 0);
    assert_int_equal(src, want_source);
    nx_load_stats_t st;
    nx_model_t *m = nx_loader_load(ld, model, NULL, &st, &err);
    if (!m)
        fail_msg("load: %s", err.msg);
    assert_string_equal(st.io_source, nx_io_source_name(want_source));
    assert_int_equal(st.chunk_bytes, shape_out->chunk_bytes);
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
}

static void test_loader_precedence(void **state)
{
    (void)state;
    char model[300], cache[400];
    model_file(model, sizeof model);
    snprintf(cache, sizeof cache, "%s/prec.txt", tmpdir);
    unlink(cache);
    setenv("NEXUS_LOADER_CACHE", cache, 1);
    nx_pool_t *pool = cpu_pool();
    nx_io_shape_t shape;

    /* No shape_path: the defaults. */
    nx_loader_opts_t o = {0};
    loader_source(pool, &o, model, NX_IO_SOURCE_DEFAULT, &shape);
    /* shape_path, no cache: the device rule (or the defaults without a block device). */
    nx_blockdev_t d;
    nx_fs_id_t fs;
    nx_err_t err = {0};
    assert_int_equal(nx_fs_id_of(model, &fs, &err), NX_OK);
    bool have_dev = nx_blockdev_read(NULL, fs.major, fs.minor, &d, &err) == NX_OK;
    o.shape_path = model;
    loader_source(pool, &o, model, have_dev ? NX_IO_SOURCE_DEVICE : NX_IO_SOURCE_DEFAULT,
                  &shape);
    /* Calibrated: the stored shape. */
    nx_io_shape_t cal = {.io = NX_LOADER_IO_URING, .threads = 3, .queue_depth = 3,
                         .chunk_bytes = 1 * MIB};
    assert_int_equal(nx_io_cache_store(cache, &fs, &cal, &err), NX_OK);
    loader_source(pool, &o, model, NX_IO_SOURCE_CALIBRATED, &shape);
    assert_shape(&shape, 3, 3, 1 * MIB);
    /* A flag wins over the calibration, field by field. */
    o.threads = 2;
    loader_source(pool, &o, model, NX_IO_SOURCE_FLAG, &shape);
    assert_shape(&shape, 2, 3, 1 * MIB);
    o.threads = 0;
    /* Calibrated pread threads. */
    cal = (nx_io_shape_t){.io = NX_LOADER_IO_THREADS, .threads = 5, .queue_depth = 1,
                          .chunk_bytes = 2 * MIB};
    assert_int_equal(nx_io_cache_store(cache, &fs, &cal, &err), NX_OK);
    loader_source(pool, &o, model, NX_IO_SOURCE_CALIBRATED, &shape);
    assert_int_equal(shape.io, NX_LOADER_IO_THREADS);
    assert_shape(&shape, 5, 1, 2 * MIB);
    /* --queue-depth over a calibration of pread threads: reads in flight, so io_uring (where
     * the kernel allows it; refused, the pread threads' own default of 4). */
    o.queue_depth = 3;
    loader_source(pool, &o, model, NX_IO_SOURCE_FLAG, &shape);
    if (shape.io == NX_LOADER_IO_URING)
        assert_shape(&shape, 5, 3, 2 * MIB);
    else
        assert_shape(&shape, 4, 1, 2 * MIB);
    o.queue_depth = 0;
    /* A corrupt cache: ignored (the device rule again), never an error. */
    write_file(cache, "v1 dev=what\n");
    loader_source(pool, &o, model, have_dev ? NX_IO_SOURCE_DEVICE : NX_IO_SOURCE_DEFAULT,
                  &shape);
    nx_pool_destroy(&pool);
    unsetenv("NEXUS_LOADER_CACHE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_this_vm),
        cmocka_unit_test(test_rule_rotational),
        cmocka_unit_test(test_rule_nvme),
        cmocka_unit_test(test_rule_odd_inputs),
        cmocka_unit_test(test_sysfs_partition_walk),
        cmocka_unit_test(test_sysfs_real),
        cmocka_unit_test(test_cache_store_lookup),
        cmocka_unit_test(test_cache_corrupt_and_stale),
        cmocka_unit_test(test_cache_path),
        cmocka_unit_test(test_loader_precedence),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
