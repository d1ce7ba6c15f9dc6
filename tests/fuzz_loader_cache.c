/* fuzz_loader_cache.c — libFuzzer target for the loader's calibration cache
 * (loader/ioshape.c): the input is the cache file. A lookup must never crash, leak or read out of
 * bounds; a shape it returns is within the loader's ranges; every problem it reports names the
 * file and a line number. Then a shape is stored over the file, and the file the store wrote
 * must read back clean: the stored shape for its file system, no warning (corrupt and stale
 * lines dropped, the others kept as they were).
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_loader_cache
 *   mkdir -p var/fuzz/lc && cp -r tests/fuzz/corpus/fuzz_loader_cache/. var/fuzz/lc/
 *   build/fuzz/fuzz_loader_cache var/fuzz/lc -max_total_time=60
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_loader.h"

static char dir[64];
static char path[128];

static void remove_dir(void)
{
    unlink(path);
    rmdir(dir);
}

static void shape_in_range(const nx_io_shape_t *s)
{
    assert(s->io == NX_LOADER_IO_URING || s->io == NX_LOADER_IO_THREADS);
    assert(s->threads >= 1 && s->threads <= 256);
    assert(s->queue_depth >= 1 && s->queue_depth <= 64);
    assert(s->chunk_bytes >= 4096 && s->chunk_bytes <= (1ull << 30) && s->chunk_bytes % 4096 == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        /* In memory where it can be: every store fsyncs. */
        snprintf(dir, sizeof dir, "%s/nx-fuzz-lc-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(dir))
            abort();
        snprintf(path, sizeof path, "%s/loader-io.txt", dir);
        atexit(remove_dir);
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);

    /* The file system is the one the input's first entry names, so that entries match. */
    nx_fs_id_t fs = {.major = 254, .minor = 0, .fsid = 0xabc};
    char text[256];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    const char *dev = strstr(text, "dev=");
    unsigned major, minor;
    unsigned long long fsid;
    if (dev && sscanf(dev, "dev=%u:%u fsid=%16llx", &major, &minor, &fsid) == 3)
        fs = (nx_fs_id_t){.major = major, .minor = minor, .fsid = fsid};
    nx_io_shape_t got;
    nx_err_t warn = {0};
    int rc = nx_io_cache_lookup(path, &fs, &got, &warn);
    assert(rc == NX_OK || rc == NX_ENOTFOUND);
    if (rc == NX_OK)
        shape_in_range(&got);
    if (warn.code != NX_OK)
        assert(strstr(warn.msg, path) && strstr(warn.msg, ":"));

    nx_io_shape_t stored = {.io = size % 2 ? NX_LOADER_IO_URING : NX_LOADER_IO_THREADS,
                            .threads = 1 + size % 256, .queue_depth = 1 + size % 64,
                            .chunk_bytes = 4096ull * (1 + size % 1000)};
    nx_err_t err = {0};
    rc = nx_io_cache_store(path, &fs, &stored, &err);
    assert(rc == NX_OK);
    nx_err_clear(&warn);
    rc = nx_io_cache_lookup(path, &fs, &got, &warn);
    assert(rc == NX_OK && warn.code == NX_OK);
    assert(got.io == stored.io && got.threads == stored.threads &&
           got.queue_depth == stored.queue_depth && got.chunk_bytes == stored.chunk_bytes);
    return 0;
}
