/* test_pool.c — the device pool on the CPU backend: regions, stats, exhaustion, the
 * fragmentation guarantee, concurrency, device selection (AUTO falls back to CPU when there is
 * no GPU; explicit CUDA fails cleanly), option checks and the copy helpers. The same binary is
 * built with and without the CUDA backend to prove the fallback in both builds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device.h"
#include "nx_loader.h"

#define KIB (1024ull)
#define MIB (1024ull * 1024ull)

static nx_pool_t *cpu_pool(uint64_t bytes, uint64_t chunk_bytes)
{
    nx_pool_opts_t opts = {.device = NX_DEVICE_CPU, .bytes = bytes, .chunk_bytes = chunk_bytes};
    nx_err_t err;
    nx_pool_t *pool = nx_pool_new(&opts, &err);
    if (!pool)
        fail_msg("nx_pool_new: %s: %s", nx_errname(err.code), err.msg);
    return pool;
}

/* The value of the 8-byte word at `index` of a buffer tagged `seed`. */
static uint64_t pattern_word(uint64_t seed, uint64_t index)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + index;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

static void fill(void *ptr, uint64_t bytes, uint64_t seed)
{
    uint64_t *words = ptr;
    for (uint64_t i = 0; i < bytes / 8; i++)
        words[i] = pattern_word(seed, i);
}

/* Index of the first word that differs, or UINT64_MAX when all match. */
static uint64_t first_bad_word(const void *ptr, uint64_t bytes, uint64_t seed)
{
    const uint64_t *words = ptr;
    for (uint64_t i = 0; i < bytes / 8; i++)
        if (words[i] != pattern_word(seed, i))
            return i;
    return UINT64_MAX;
}

static void assert_pattern(const void *ptr, uint64_t bytes, uint64_t seed)
{
    uint64_t bad = first_bad_word(ptr, bytes, seed);
    if (bad != UINT64_MAX)
        fail_msg("pattern %llu differs at byte %llu of %llu", (unsigned long long)seed,
                 (unsigned long long)(bad * 8), (unsigned long long)bytes);
}

/* ---------------------------------------------------------------------------------------- */

/* Runs first: the fallback line is logged once per process. stderr goes to a file meanwhile. */
static void test_auto_falls_back_to_cpu(void **state)
{
    nx_err_t reason;
    bool cuda = nx_cuda_available(&reason);
    if (!cuda) {
        assert_true(reason.code == NX_EDEVICE || reason.code == NX_ENOTSUP);
        assert_true(strlen(reason.msg) > 0);
    }

    char path[] = "/tmp/test_pool_stderr_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);

    nx_pool_opts_t opts = {.device = NX_DEVICE_AUTO, .bytes = 4 * MIB};
    nx_err_t err;
    nx_pool_t *a = nx_pool_new(&opts, &err);
    nx_pool_t *b = nx_pool_new(&opts, &err);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char log[4096] = {0};
    ssize_t n = pread(fd, log, sizeof log - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n >= 0);

    assert_non_null(a);
    assert_non_null(b);
    nx_device_kind_t want = cuda ? NX_DEVICE_CUDA : NX_DEVICE_CPU;
    assert_int_equal(nx_pool_device(a), want);
    assert_int_equal(nx_pool_device(b), want);
    if (!cuda) {
        const char *line = strstr(log, "using the CPU backend");
        assert_non_null(line);
        assert_null(strstr(line + 1, "using the CPU backend")); /* exactly once */
        assert_non_null(strstr(log, "using the CPU backend: "));
    }
    nx_pool_destroy(&a);
    nx_pool_destroy(&b);
}

static void test_explicit_cuda_fails_cleanly(void **state)
{
    if (nx_cuda_available(NULL))
        skip();
    nx_pool_opts_t opts = {.device = NX_DEVICE_CUDA, .bytes = 4 * MIB};
    nx_err_t err;
    assert_null(nx_pool_new(&opts, &err));
    assert_true(err.code == NX_EDEVICE || err.code == NX_ENOTSUP);
    assert_true(strlen(err.msg) > 10);
    /* The same reason nx_cuda_available gives. */
    nx_err_t reason;
    assert_false(nx_cuda_available(&reason));
    assert_int_equal(reason.code, err.code);
}

static void test_device_names(void **state)
{
    nx_device_kind_t kind = NX_DEVICE_CUDA;
    assert_true(nx_device_parse("cpu", &kind));
    assert_int_equal(kind, NX_DEVICE_CPU);
    assert_true(nx_device_parse("cuda", &kind));
    assert_int_equal(kind, NX_DEVICE_CUDA);
    assert_true(nx_device_parse("auto", &kind));
    assert_int_equal(kind, NX_DEVICE_AUTO);
    assert_false(nx_device_parse("gpu", &kind));
    assert_false(nx_device_parse(NULL, &kind));
    assert_string_equal(nx_device_name(NX_DEVICE_CPU), "cpu");
    assert_string_equal(nx_device_name(NX_DEVICE_CUDA), "cuda");
    assert_string_equal(nx_device_name(NX_DEVICE_AUTO), "auto");
}

static void test_bad_options(void **state)
{
    nx_err_t err;
    assert_null(nx_pool_new(NULL, &err));
    assert_int_equal(err.code, NX_EINVAL);

    const double bad_fractions[] = {0.0, -0.5, 1.5, NAN};
    for (size_t i = 0; i < sizeof bad_fractions / sizeof bad_fractions[0]; i++) {
        nx_pool_opts_t opts = {.device = NX_DEVICE_CPU, .fraction = bad_fractions[i]};
        nx_err_clear(&err);
        assert_null(nx_pool_new(&opts, &err));
        assert_int_equal(err.code, NX_EINVAL);
        assert_non_null(strstr(err.msg, "fraction"));
    }
    nx_pool_opts_t opts = {.device = (nx_device_kind_t)7, .bytes = MIB};
    assert_null(nx_pool_new(&opts, &err));
    assert_int_equal(err.code, NX_EINVAL);

    /* More than the machine's RAM: refused up front, not over-committed. */
    opts = (nx_pool_opts_t){.device = NX_DEVICE_CPU, .bytes = 1ull << 50};
    assert_null(nx_pool_new(&opts, &err));
    assert_int_equal(err.code, NX_ENOMEM);
    assert_non_null(strstr(err.msg, "available RAM"));
}

static void test_fraction_and_rounding(void **state)
{
    nx_pool_stats_t st;
    /* A tiny fraction of available RAM: at least one chunk, whole chunks. */
    nx_pool_opts_t opts = {.device = NX_DEVICE_CPU, .fraction = 1e-4};
    nx_err_t err;
    nx_pool_t *pool = nx_pool_new(&opts, &err);
    assert_non_null(pool);
    nx_pool_stats(pool, &st);
    assert_int_equal(st.chunk_bytes, 2 * MIB);
    assert_true(st.total_bytes >= st.chunk_bytes);
    assert_int_equal(st.total_bytes % st.chunk_bytes, 0);
    nx_pool_destroy(&pool);

    /* Rounded down to whole chunks; chunk rounded up to the page size. */
    pool = cpu_pool(5 * MIB + 123, 0);
    nx_pool_stats(pool, &st);
    assert_int_equal(st.total_bytes, 4 * MIB);
    nx_pool_destroy(&pool);

    pool = cpu_pool(100 * KIB, 1000);
    nx_pool_stats(pool, &st);
    long page = sysconf(_SC_PAGESIZE);
    assert_int_equal(st.chunk_bytes, (uint64_t)page);
    assert_int_equal(st.total_bytes, 100 * KIB / page * page);
    nx_pool_destroy(&pool);

    /* Less than a chunk still gives one chunk. */
    pool = cpu_pool(1000, 0);
    nx_pool_stats(pool, &st);
    assert_int_equal(st.total_bytes, 2 * MIB);
    nx_pool_destroy(&pool);
}

static void test_alloc_free(void **state)
{
    nx_pool_t *pool = cpu_pool(8 * MIB, 0);
    assert_int_equal(nx_pool_device(pool), NX_DEVICE_CPU);
    nx_err_t err;
    nx_region_t *r = nx_pool_alloc(pool, 1, "tiny", &err);
    assert_non_null(r);
    assert_int_equal(nx_region_bytes(r), 2 * MIB);
    assert_string_equal(nx_region_owner(r), "tiny");
    assert_int_equal((uintptr_t)nx_region_ptr(r) % 4096, 0);
    memset(nx_region_ptr(r), 0xAB, nx_region_bytes(r));

    nx_pool_stats_t st;
    nx_pool_stats(pool, &st);
    assert_int_equal(st.device, NX_DEVICE_CPU);
    assert_int_equal(st.total_bytes, 8 * MIB);
    assert_int_equal(st.used_bytes, 2 * MIB);
    assert_int_equal(st.free_bytes, 6 * MIB);
    assert_int_equal(st.region_count, 1);

    nx_pool_free(pool, &r);
    assert_null(r);
    nx_pool_free(pool, &r); /* twice is harmless */
    nx_pool_stats(pool, &st);
    assert_int_equal(st.used_bytes, 0);
    assert_int_equal(st.free_bytes, 8 * MIB);
    assert_int_equal(st.region_count, 0);

    /* The whole pool in one region, and a NULL owner. */
    r = nx_pool_alloc(pool, 8 * MIB, NULL, &err);
    assert_non_null(r);
    assert_string_equal(nx_region_owner(r), "");
    nx_pool_free(pool, &r);

    assert_null(nx_pool_alloc(pool, 0, "zero", &err));
    assert_int_equal(err.code, NX_EINVAL);
    nx_pool_destroy(&pool);
    assert_null(pool);
    nx_pool_destroy(&pool); /* twice is harmless */
}

static void test_region_contiguous_across_chunks(void **state)
{
    nx_pool_t *pool = cpu_pool(16 * 64 * KIB, 64 * KIB);
    nx_err_t err;
    uint64_t want = 5 * 64 * KIB + 32 * KIB;
    nx_region_t *r = nx_pool_alloc(pool, want, "span", &err);
    assert_non_null(r);
    assert_int_equal(nx_region_bytes(r), 6 * 64 * KIB);
    fill(nx_region_ptr(r), nx_region_bytes(r), 42);
    assert_pattern(nx_region_ptr(r), nx_region_bytes(r), 42);
    nx_pool_free(pool, &r);
    nx_pool_destroy(&pool);
}

static void test_stats_and_owners(void **state)
{
    nx_pool_t *pool = cpu_pool(16 * MIB, 0);
    nx_err_t err;
    nx_region_t *a = nx_pool_alloc(pool, 3 * MIB, "alpha", &err);
    nx_region_t *b = nx_pool_alloc(pool, 1 * MIB, "beta", &err);
    assert_non_null(a);
    assert_non_null(b);

    nx_pool_region_info_t info[4];
    assert_int_equal(nx_pool_regions(pool, info, 4), 2);
    bool seen_alpha = false, seen_beta = false;
    for (int i = 0; i < 2; i++) {
        if (strcmp(info[i].owner, "alpha") == 0) {
            seen_alpha = true;
            assert_int_equal(info[i].bytes, 4 * MIB);
            assert_int_equal(info[i].address, (uintptr_t)nx_region_ptr(a));
        } else if (strcmp(info[i].owner, "beta") == 0) {
            seen_beta = true;
            assert_int_equal(info[i].bytes, 2 * MIB);
            assert_int_equal(info[i].address, (uintptr_t)nx_region_ptr(b));
        }
    }
    assert_true(seen_alpha && seen_beta);
    assert_int_equal(nx_pool_regions(pool, info, 1), 2); /* count even when cap is short */
    assert_int_equal(nx_pool_regions(pool, NULL, 0), 2);

    nx_pool_stats_t st;
    nx_pool_stats(pool, &st);
    assert_int_equal(st.used_bytes, 6 * MIB);
    assert_int_equal(st.free_bytes, 10 * MIB);
    assert_int_equal(st.region_count, 2);
    assert_int_equal(st.chunk_bytes, 2 * MIB);

    nx_pool_free(pool, &a);
    assert_int_equal(nx_pool_regions(pool, info, 4), 1);
    assert_string_equal(info[0].owner, "beta");
    nx_pool_free(pool, &b);
    nx_pool_destroy(&pool);
}

static void test_exhaustion(void **state)
{
    nx_pool_t *pool = cpu_pool(4 * MIB, 1 * MIB);
    nx_err_t err;
    nx_region_t *a = nx_pool_alloc(pool, 3 * MIB, "first", &err);
    assert_non_null(a);
    nx_err_clear(&err);
    assert_null(nx_pool_alloc(pool, 2 * MIB - 100, "modelA", &err));
    assert_int_equal(err.code, NX_EPOOLFULL);
    assert_string_equal(err.msg,
                        "pool 'cpu': cannot allocate 2.0 MiB for 'modelA': 1.0 MiB free of 4.0 MiB");
    /* The failed request took nothing. */
    nx_pool_stats_t st;
    nx_pool_stats(pool, &st);
    assert_int_equal(st.free_bytes, 1 * MIB);
    assert_int_equal(st.region_count, 1);
    /* An absurd request is the same error, not an overflow. */
    assert_null(nx_pool_alloc(pool, UINT64_MAX, "huge", &err));
    assert_int_equal(err.code, NX_EPOOLFULL);
    assert_string_equal(err.msg,
                        "pool 'cpu': cannot allocate 16.0 EiB for 'huge': 1.0 MiB free of 4.0 MiB");
    /* What is left still fits exactly. */
    nx_region_t *b = nx_pool_alloc(pool, 1 * MIB, "last", &err);
    assert_non_null(b);
    nx_pool_free(pool, &a);
    nx_pool_free(pool, &b);
    nx_pool_destroy(&pool);
}

/* Pool of 10 chunks; A=3, B=2, C=3; free B: 4 chunks free but in two holes (2 + 2). D=4
 * chunks must still succeed, be contiguous and writable, and leave A and C intact. */
static void test_fragmentation(void **state)
{
    const uint64_t chunk = 64 * KIB;
    nx_pool_t *pool = cpu_pool(10 * chunk, chunk);
    nx_err_t err;
    nx_region_t *a = nx_pool_alloc(pool, 3 * chunk, "A", &err);
    nx_region_t *b = nx_pool_alloc(pool, 2 * chunk, "B", &err);
    nx_region_t *c = nx_pool_alloc(pool, 3 * chunk, "C", &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    fill(nx_region_ptr(a), 3 * chunk, 1);
    fill(nx_region_ptr(b), 2 * chunk, 2);
    fill(nx_region_ptr(c), 3 * chunk, 3);

    nx_pool_free(pool, &b);
    nx_pool_stats_t st;
    nx_pool_stats(pool, &st);
    assert_int_equal(st.free_bytes, 4 * chunk);

    nx_region_t *d = nx_pool_alloc(pool, 4 * chunk, "D", &err);
    if (!d)
        fail_msg("fragmented alloc failed: %s", err.msg);
    assert_int_equal(nx_region_bytes(d), 4 * chunk);
    fill(nx_region_ptr(d), 4 * chunk, 4);
    assert_pattern(nx_region_ptr(d), 4 * chunk, 4);
    assert_pattern(nx_region_ptr(a), 3 * chunk, 1);
    assert_pattern(nx_region_ptr(c), 3 * chunk, 3);
    nx_pool_stats(pool, &st);
    assert_int_equal(st.free_bytes, 0);

    /* Freeing A and refilling the hole does not disturb D or C either. */
    nx_pool_free(pool, &a);
    nx_region_t *e = nx_pool_alloc(pool, 3 * chunk, "E", &err);
    assert_non_null(e);
    fill(nx_region_ptr(e), 3 * chunk, 5);
    assert_pattern(nx_region_ptr(d), 4 * chunk, 4);
    assert_pattern(nx_region_ptr(c), 3 * chunk, 3);

    nx_pool_free(pool, &c);
    nx_pool_free(pool, &d);
    nx_pool_free(pool, &e);
    nx_pool_destroy(&pool);
}

typedef struct worker {
    nx_pool_t *pool;
    unsigned seed;
    int id;
    uint64_t chunk;
    int allocs, fulls;
    char failure[1100]; /* empty when all went well */
} worker_t;

/* Allocate and free random sizes, keeping up to 3 regions live, each filled with its own
 * pattern; any pattern damaged by another thread's region means overlap. */
static void *worker_main(void *arg)
{
    worker_t *w = arg;
    nx_region_t *live[3] = {0};
    uint64_t seeds[3] = {0};
    for (int iter = 0; iter < 300 && !w->failure[0]; iter++) {
        int slot = rand_r(&w->seed) % 3;
        if (live[slot]) {
            if (first_bad_word(nx_region_ptr(live[slot]), nx_region_bytes(live[slot]),
                               seeds[slot]) != UINT64_MAX)
                snprintf(w->failure, sizeof w->failure, "thread %d: region pattern damaged",
                         w->id);
            nx_pool_free(w->pool, &live[slot]);
            continue;
        }
        uint64_t bytes = 1 + (uint64_t)(rand_r(&w->seed) % (6 * w->chunk));
        char owner[32];
        snprintf(owner, sizeof owner, "t%d-%d", w->id, iter);
        nx_err_t err;
        live[slot] = nx_pool_alloc(w->pool, bytes, owner, &err);
        if (!live[slot]) {
            if (err.code == NX_EPOOLFULL)
                w->fulls++;
            else
                snprintf(w->failure, sizeof w->failure, "thread %d: %s", w->id, err.msg);
            continue;
        }
        w->allocs++;
        if (strcmp(nx_region_owner(live[slot]), owner) != 0)
            snprintf(w->failure, sizeof w->failure, "thread %d: owner mixed up", w->id);
        seeds[slot] = ((uint64_t)w->id << 32) | (uint64_t)iter;
        fill(nx_region_ptr(live[slot]), nx_region_bytes(live[slot]), seeds[slot]);
    }
    for (int s = 0; s < 3; s++) {
        if (live[s] && first_bad_word(nx_region_ptr(live[s]), nx_region_bytes(live[s]),
                                      seeds[s]) != UINT64_MAX && !w->failure[0])
            snprintf(w->failure, sizeof w->failure, "thread %d: final pattern damaged", w->id);
        nx_pool_free(w->pool, &live[s]);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    const uint64_t chunk = 64 * KIB;
    nx_pool_t *pool = cpu_pool(48 * chunk, chunk);
    worker_t workers[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (worker_t){.pool = pool, .seed = 1234u + (unsigned)i, .id = i,
                                .chunk = chunk};
        assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
    }
    int allocs = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        if (workers[i].failure[0])
            fail_msg("%s", workers[i].failure);
        allocs += workers[i].allocs;
    }
    assert_true(allocs > 100);
    nx_pool_stats_t st;
    nx_pool_stats(pool, &st);
    assert_int_equal(st.used_bytes, 0);
    assert_int_equal(st.region_count, 0);
    assert_int_equal(st.free_bytes, 48 * chunk);
    nx_pool_destroy(&pool);
}

static void test_copy_round_trip(void **state)
{
    nx_pool_t *pool = cpu_pool(4 * MIB, 0);
    nx_err_t err;
    nx_region_t *r = nx_pool_alloc(pool, 3 * MIB, "copy", &err);
    assert_non_null(r);
    size_t n = 2 * MIB + 4096;
    uint8_t *src = malloc(n), *dst = malloc(n);
    assert_non_null(src);
    assert_non_null(dst);
    fill(src, n, 77);
    char *at = (char *)nx_region_ptr(r) + 1000; /* straddles the chunk boundary */
    assert_int_equal(nx_pool_copy_from_host(pool, at, src, n, &err), NX_OK);
    memset(dst, 0, n);
    assert_int_equal(nx_pool_copy_to_host(pool, dst, at, n, &err), NX_OK);
    assert_memory_equal(src, dst, n);

    /* Past the region's end: an error, not a fault. */
    char *end = (char *)nx_region_ptr(r) + nx_region_bytes(r);
    assert_int_equal(nx_pool_copy_to_host(pool, dst, end - 10, 20, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "not inside one region"));
    assert_int_equal(nx_pool_copy_from_host(pool, src, dst, 20, &err), NX_EINVAL);
    free(src);
    free(dst);
    nx_pool_free(pool, &r);
    nx_pool_destroy(&pool);
}

static void test_backend_table(void **state)
{
    nx_pool_t *pool = cpu_pool(2 * MIB, 0);
    nx_dev_t *dev = nx__pool_dev(pool);
    assert_non_null(dev);
    const nx_dev_ops_t *ops = dev->ops;
    assert_string_equal(ops->name, "cpu");
    assert_true(ops->host_visible);
    nx_err_t err;
    uint64_t free_bytes = 0, total_bytes = 0;
    assert_int_equal(ops->mem_info(dev, &free_bytes, &total_bytes, &err), NX_OK);
    assert_true(free_bytes > 0 && free_bytes <= total_bytes);

    void *host = ops->host_alloc(dev, 10000, &err);
    assert_non_null(host);
    assert_int_equal((uintptr_t)host % 4096, 0);
    memset(host, 1, 10000);
    void *stream = NULL, *event = NULL;
    assert_int_equal(ops->stream_new(dev, &stream, &err), NX_OK);
    assert_int_equal(ops->event_new(dev, &event, &err), NX_OK);
    assert_non_null(stream);
    assert_non_null(event);
    nx_region_t *r = nx_pool_alloc(pool, 10000, "ops", &err);
    assert_non_null(r);
    assert_int_equal(ops->copy_h2d(dev, nx_region_ptr(r), host, 10000, stream, &err), NX_OK);
    assert_int_equal(ops->event_record(dev, event, stream, &err), NX_OK);
    assert_int_equal(ops->event_sync(dev, event, &err), NX_OK);
    assert_int_equal(ops->stream_sync(dev, stream, &err), NX_OK);
    assert_int_equal(((uint8_t *)nx_region_ptr(r))[9999], 1);
    ops->event_destroy(dev, event);
    ops->stream_destroy(dev, stream);
    ops->host_free(dev, host, 10000);
    nx_pool_free(pool, &r);
    nx_pool_destroy(&pool);
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A CPU pool touches no memory when it is made (start-up costs what is used, not the pool):
 * 1 GiB of pool adds less than 16 MiB of RSS; a region's pages arrive when written; the
 * backend's zero op clears what it is given. */
static void test_cpu_pool_is_lazy(void **state)
{
    uint64_t before = rss_bytes();
    nx_pool_t *pool = cpu_pool(1024 * MIB, 0);
    assert_true(rss_bytes() < before + 16 * MIB);
    nx_err_t err;
    nx_region_t *r = nx_pool_alloc(pool, 512 * MIB, "lazy", &err);
    assert_non_null(r);
    assert_true(rss_bytes() < before + 16 * MIB);
    nx_dev_t *dev = nx__pool_dev(pool);
    memset(nx_region_ptr(r), 5, 4 * MIB);
    assert_int_equal(dev->ops->zero(dev, (char *)nx_region_ptr(r) + 4096, 8192, NULL, &err),
                     NX_OK);
    assert_int_equal(((uint8_t *)nx_region_ptr(r))[4095], 5);
    assert_int_equal(((uint8_t *)nx_region_ptr(r))[4096], 0);
    assert_int_equal(((uint8_t *)nx_region_ptr(r))[12287], 0);
    assert_int_equal(((uint8_t *)nx_region_ptr(r))[12288], 5);
    nx_pool_free(pool, &r);
    nx_pool_destroy(&pool);
}

/* Bytes of AnonHugePages in the mapping that holds `ptr` (/proc/self/smaps); 0 if not found. */
static uint64_t huge_bytes_at(const void *ptr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    bool inside = false;
    uint64_t kib = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long lo, hi, n;
        if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)ptr >= lo && (uintptr_t)ptr < hi;
        else if (inside && sscanf(line, "AnonHugePages: %llu kB", &n) == 1)
            kib = n;
    }
    if (f)
        fclose(f);
    return kib * 1024;
}

/* nx_region_collapse keeps every byte (of the range and around it), clips to the region,
 * counts only 2 MiB pages wholly inside the range, and what it counts is huge in smaps; the
 * memory stays writable. 0 is a legal answer (a kernel without MADV_COLLAPSE), never an error. */
static void test_cpu_region_collapse(void **state)
{
    nx_pool_t *pool = cpu_pool(64 * MIB, 0);
    nx_err_t err;
    nx_region_t *r = nx_pool_alloc(pool, 24 * MIB, "collapse", &err);
    assert_non_null(r);
    char *p = nx_region_ptr(r);
    fill(p, 24 * MIB, 7);
    uint64_t huge = nx_region_collapse(r, 3 * MIB + 4096, 9 * MIB);
    assert_true(huge <= 8 * MIB); /* [3 MiB + 4 KiB, 12 MiB + 4 KiB) holds 4 whole 2 MiB pages */
    assert_int_equal(huge % (2 * MIB), 0);
    assert_true(huge_bytes_at(p) >= huge);
    assert_pattern(p, 24 * MIB, 7);
    uint64_t all = nx_region_collapse(r, 0, UINT64_MAX); /* clipped to the region */
    assert_true(all >= huge && all <= nx_region_bytes(r));
    assert_int_equal(nx_region_collapse(r, nx_region_bytes(r), 1), 0);
    assert_pattern(p, 24 * MIB, 7);
    fill(p, 24 * MIB, 8);
    assert_pattern(p, 24 * MIB, 8);
    nx_pool_free(pool, &r);
    nx_pool_destroy(&pool);
}

static void test_destroy_with_live_regions(void **state)
{
    nx_pool_t *pool = cpu_pool(8 * MIB, 0);
    nx_err_t err;
    nx_region_t *a = nx_pool_alloc(pool, 1 * MIB, "leaked-a", &err);
    nx_region_t *b = nx_pool_alloc(pool, 3 * MIB, "leaked-b", &err);
    assert_non_null(a);
    assert_non_null(b);
    memset(nx_region_ptr(b), 7, 3 * MIB);
    nx_pool_destroy(&pool); /* logs warnings, unmaps, frees */
    assert_null(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_falls_back_to_cpu),
        cmocka_unit_test(test_explicit_cuda_fails_cleanly),
        cmocka_unit_test(test_device_names),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_fraction_and_rounding),
        cmocka_unit_test(test_alloc_free),
        cmocka_unit_test(test_region_contiguous_across_chunks),
        cmocka_unit_test(test_stats_and_owners),
        cmocka_unit_test(test_exhaustion),
        cmocka_unit_test(test_fragmentation),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_copy_round_trip),
        cmocka_unit_test(test_backend_table),
        cmocka_unit_test(test_destroy_with_live_regions),
        cmocka_unit_test(test_cpu_pool_is_lazy),
        cmocka_unit_test(test_cpu_region_collapse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
