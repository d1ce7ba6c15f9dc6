/* test_loader.c — the load pipeline and the host cache tier on the CPU backend, end to end on
 * real files: aligned and unaligned data sections, O_DIRECT and buffered reads, the tmpfs
 * fallback, shards, pool exhaustion (alone and under concurrent loads), the fragmentation case,
 * concurrent loads, host-tier hits, stale images, LRU eviction, and --check catching a
 * corrupted byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nx_loader.h"

#define MiB (1ull << 20)

static char tmpdir[256];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nx-test-loader-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd);
}

/* Deterministic bytes: tensor `seed`, byte i. */
static uint8_t pattern_byte(uint32_t seed, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32);
    x ^= x >> 29;
    return (uint8_t)(x * 0xBF58476D1CE4E5B9ull >> 56);
}

static int fill_pattern(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                        size_t len, nx_err_t *err)
{
    uint32_t seed = (uint32_t)(uintptr_t)user ^ (uint32_t)strlen(spec->name) * 7919u ^
                    (uint32_t)spec->name[strlen(spec->name) - 1];
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)dst)[i] = pattern_byte(seed, offset + i);
    return NX_OK;
}

/* A checkpoint of `count` F32 tensors of rows x 1024 floats each, data made by fill_pattern. */
static void write_model(const char *path, uint32_t seed, int count, uint64_t rows)
{
    nx_st_tensor_spec_t specs[16];
    char names[16][32];
    assert_true(count <= 16);
    for (int i = 0; i < count; i++) {
        snprintf(names[i], sizeof names[i], "layer.%d.weight", i);
        specs[i] = (nx_st_tensor_spec_t){.name = names[i], .dtype = NX_DT_F32, .ndim = 2,
                                         .shape = {rows + (uint64_t)i, 1024}};
    }
    nx_st_save_opts_t opts = {.fill = fill_pattern, .fill_user = (void *)(uintptr_t)seed};
    nx_err_t err = {0};
    int rc = nx_st_save(path, specs, (size_t)count, &opts, &err);
    if (rc != NX_OK)
        fail_msg("writing %s: %s", path, err.msg);
}

/* A file whose data section starts at an odd offset, as another writer may produce. */
static void write_unaligned(const char *path, uint64_t floats)
{
    char header[256];
    int n = snprintf(header, sizeof header,
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[%llu],\"data_offsets\":[0,%llu]}}",
                     (unsigned long long)floats, (unsigned long long)floats * 4);
    if (n % 8 == 0)
        header[n++] = ' '; /* make sure 8 + n is not a multiple of 8 either */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t len = (uint64_t)n;
    fwrite(&len, 8, 1, f);
    fwrite(header, 1, (size_t)n, f);
    for (uint64_t i = 0; i < floats * 4; i++)
        fputc(pattern_byte(99, i), f);
    fclose(f);
}

static nx_pool_t *cpu_pool(uint64_t bytes)
{
    nx_err_t err = {0};
    nx_pool_opts_t o = {.device = NX_DEVICE_CPU, .bytes = bytes};
    nx_pool_t *pool = nx_pool_new(&o, &err);
    if (!pool)
        fail_msg("pool: %s", err.msg);
    return pool;
}

static nx_model_t *load_ok(nx_loader_t *ld, const char *path, nx_load_stats_t *stats)
{
    nx_err_t err = {0};
    nx_model_t *m = nx_loader_load(ld, path, NULL, stats, &err);
    if (!m)
        fail_msg("load %s: %s", path, err.msg);
    return m;
}

static void check_ok(nx_pool_t *pool, const nx_model_t *m)
{
    nx_err_t err = {0};
    int rc = nx_model_check(pool, m, &err);
    if (rc != NX_OK)
        fail_msg("check: %s", err.msg);
}

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void test_modes_and_chunking(void **state)
{
    char path[512];
    path_in(path, sizeof path, "a.safetensors");
    write_model(path, 1, 5, 300); /* ~6 MiB: many small chunks below */
    nx_pool_t *pool = cpu_pool(64 * MiB);
    const nx_read_mode_t modes[] = {NX_READ_AUTO, NX_READ_DIRECT, NX_READ_BUFFERED};
    const char *names[] = {NULL, "direct", "buffered"};
    for (int i = 0; i < 3; i++) {
        nx_loader_opts_t o = {.threads = 3, .chunk_bytes = 256 * 1024, .read_mode = modes[i]};
        nx_err_t err = {0};
        nx_loader_t *ld = nx_loader_new(pool, &o, &err);
        assert_non_null(ld);
        nx_load_stats_t st;
        nx_model_t *m = load_ok(ld, path, &st);
        check_ok(pool, m);
        if (names[i])
            assert_string_equal(st.read_mode, names[i]);
        assert_int_equal(st.fallbacks, 0); /* /tmp here is a disk file system */
        assert_int_equal(nx_model_tensor_count(m), 5);
        const nx_model_tensor_t *t = nx_model_find(m, "layer.3.weight");
        assert_non_null(t);
        assert_int_equal(t->shape[0], 303);
        assert_int_equal(t->bytes, 303 * 1024 * 4);
        assert_null(nx_model_find(m, "nope"));
        nx_loader_unload(ld, &m, false);
        assert_null(m);
        nx_loader_destroy(&ld);
    }
    nx_pool_stats_t ps;
    nx_pool_stats(pool, &ps);
    assert_int_equal(ps.used_bytes, 0);
    nx_pool_destroy(&pool);
}

static void test_unaligned_data_section(void **state)
{
    char path[512];
    path_in(path, sizeof path, "foreign.safetensors");
    write_unaligned(path, 700000); /* 2.8 MB, data at an odd offset */
    nx_pool_t *pool = cpu_pool(16 * MiB);
    const nx_read_mode_t modes[] = {NX_READ_DIRECT, NX_READ_BUFFERED, NX_READ_AUTO};
    for (int i = 0; i < 3; i++) {
        nx_loader_opts_t o = {.threads = 2, .chunk_bytes = 64 * 1024, .read_mode = modes[i]};
        nx_loader_t *ld = nx_loader_new(pool, &o, NULL);
        nx_load_stats_t st;
        nx_model_t *m = load_ok(ld, path, &st);
        check_ok(pool, m);
        const nx_model_tensor_t *t = nx_model_find(m, "w");
        assert_non_null(t);
        for (uint64_t k = 0; k < t->bytes; k += 4099)
            assert_int_equal(((uint8_t *)t->ptr)[k], pattern_byte(99, k));
        nx_loader_unload(ld, &m, false);
        nx_loader_destroy(&ld);
    }
    nx_pool_destroy(&pool);
}

static void test_tmpfs_fallback(void **state)
{
    char dir[] = "/dev/shm/nx-test-XXXXXX";
    if (!mkdtemp(dir))
        skip(); /* no tmpfs on this machine */
    char path[300];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    write_model(path, 2, 2, 64);
    nx_pool_t *pool = cpu_pool(8 * MiB);
    nx_loader_opts_t o = {.read_mode = NX_READ_DIRECT};
    nx_loader_t *ld = nx_loader_new(pool, &o, NULL);
    nx_load_stats_t st;
    nx_model_t *m = load_ok(ld, path, &st);
    check_ok(pool, m);
    /* tmpfs refused O_DIRECT before Linux 6.6 and takes it since; either way the load must
     * be right, and a refusal must show as a fallback. (tests/test_loader_cli.py forces the
     * refusal on ramfs, which still has no O_DIRECT.) */
    int probe = open(path, O_RDONLY | O_DIRECT);
    if (probe >= 0) {
        close(probe);
        assert_int_equal(st.fallbacks, 0);
        assert_string_equal(st.read_mode, "direct");
    } else {
        assert_true(st.fallbacks >= 1);
    }
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
    unlink(path);
    rmdir(dir);
}

static void test_sharded(void **state)
{
    char dir[512], p1[600], p2[600], idx[600];
    path_in(dir, sizeof dir, "sharded");
    mkdir(dir, 0755);
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    nx_st_tensor_spec_t a = {.name = "a", .dtype = NX_DT_BF16, .ndim = 1, .shape = {5000}};
    nx_st_tensor_spec_t b = {.name = "b", .dtype = NX_DT_F16, .ndim = 2, .shape = {33, 77}};
    nx_st_save_opts_t so = {.fill = fill_pattern, .fill_user = (void *)5};
    assert_int_equal(nx_st_save(p1, &a, 1, &so, NULL), NX_OK);
    assert_int_equal(nx_st_save(p2, &b, 1, &so, NULL), NX_OK);
    FILE *f = fopen(idx, "w");
    fprintf(f, "{\"metadata\":{\"total_size\":%d},\"weight_map\":{"
               "\"a\":\"model-00001-of-00002.safetensors\","
               "\"b\":\"model-00002-of-00002.safetensors\"}}",
            10000 + 33 * 77 * 2);
    fclose(f);
    nx_pool_t *pool = cpu_pool(8 * MiB);
    nx_loader_t *ld = nx_loader_new(pool, NULL, NULL);
    nx_model_t *m = load_ok(ld, dir, NULL);
    check_ok(pool, m);
    assert_int_equal(nx_model_tensor_count(m), 2);
    assert_int_equal(nx_model_bytes(m), 10000 + 33 * 77 * 2);
    const nx_model_tensor_t *tb = nx_model_find(m, "b");
    assert_non_null(tb);
    assert_int_equal((uintptr_t)tb->ptr % 4096, 0); /* each shard starts 4 KiB aligned */
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

/* Bytes no file covers (between two shards, after the last one up to the region's end) read
 * as zero, even where the pool's memory held something else before. */
static void test_uncovered_bytes_are_zero(void **state)
{
    char dir[512];
    path_in(dir, sizeof dir, "sharded");
    test_sharded(state); /* writes the two-shard checkpoint (again: idempotent) */
    nx_pool_t *pool = cpu_pool(8 * MiB);
    nx_err_t err = {0};
    nx_region_t *old = nx_pool_alloc(pool, 8 * MiB, "old", &err);
    assert_non_null(old);
    memset(nx_region_ptr(old), 0xAB, nx_region_bytes(old));
    nx_pool_free(pool, &old);
    nx_loader_t *ld = nx_loader_new(pool, NULL, NULL);
    nx_model_t *m = load_ok(ld, dir, NULL);
    check_ok(pool, m);
    const nx_region_t *r = nx_model_region(m);
    const uint8_t *base = nx_region_ptr(r);
    const nx_model_tensor_t *ta = nx_model_find(m, "a"), *tb = nx_model_find(m, "b");
    const uint8_t *a_end = (const uint8_t *)ta->ptr + ta->bytes;
    const uint8_t *b_end = (const uint8_t *)tb->ptr + tb->bytes;
    for (const uint8_t *p = a_end; p < (const uint8_t *)tb->ptr; p++)
        if (*p)
            fail_msg("byte %td between the shards is %d", p - base, *p);
    for (const uint8_t *p = b_end; p < base + nx_region_bytes(r); p++)
        if (*p)
            fail_msg("byte %td after the last shard is %d", p - base, *p);
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

/* Load `path` with reads forced through `io` (NX_LOADER_IO), several reads in flight and
 * small chunks; returns a malloc'd copy of the region's layout bytes. */
static uint8_t *load_with_io(const char *path, const char *io, nx_read_mode_t mode,
                             uint64_t *bytes_out)
{
    setenv("NX_LOADER_IO", io, 1);
    nx_pool_t *pool = cpu_pool(32 * MiB);
    nx_loader_opts_t o = {.threads = 2, .queue_depth = 3, .chunk_bytes = 64 * 1024,
                          .read_mode = mode};
    nx_err_t err = {0};
    nx_loader_t *ld = nx_loader_new(pool, &o, &err);
    unsetenv("NX_LOADER_IO");
    if (!ld)
        fail_msg("loader with NX_LOADER_IO=%s: %s", io, err.msg);
    nx_load_stats_t st;
    nx_model_t *m = load_ok(ld, path, &st);
    check_ok(pool, m);
    assert_string_equal(st.io, io);
    assert_int_equal(st.queue_depth, strcmp(io, "io_uring") == 0 ? 3 : 1);
    uint64_t n = nx_region_bytes(nx_model_region(m));
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, nx_region_ptr(nx_model_region(m)), n);
    *bytes_out = n;
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
    return copy;
}

/* io_uring and the pread threads give byte-identical regions (tensors, gaps and tail), for
 * aligned and unaligned data sections, O_DIRECT, buffered and auto. */
static void test_io_paths_agree(void **state)
{
    char aligned[512], foreign[512];
    path_in(aligned, sizeof aligned, "io-aligned.safetensors");
    path_in(foreign, sizeof foreign, "io-foreign.safetensors");
    write_model(aligned, 4, 3, 200);
    write_unaligned(foreign, 300001);
    const char *paths[] = {aligned, foreign};
    const nx_read_mode_t modes[] = {NX_READ_DIRECT, NX_READ_BUFFERED, NX_READ_AUTO};
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 3; i++) {
            uint64_t n_uring = 0, n_threads = 0;
            uint8_t *a = load_with_io(paths[p], "io_uring", modes[i], &n_uring);
            uint8_t *b = load_with_io(paths[p], "threads", modes[i], &n_threads);
            assert_int_equal(n_uring, n_threads);
            assert_memory_equal(a, b, n_uring);
            free(a);
            free(b);
        }
}

/* Where io_uring is refused (seccomp answers io_uring_setup with EPERM, as a container may),
 * the loader falls back to pread threads and loads the same bytes. In a child process: the
 * filter cannot be removed once installed. */
static void test_io_uring_refused_falls_back(void **state)
{
    char path[512];
    path_in(path, sizeof path, "io-refused.safetensors");
    write_model(path, 6, 2, 100);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
            _exit(3);
        nx_pool_opts_t po = {.device = NX_DEVICE_CPU, .bytes = 8 * MiB};
        nx_pool_t *pool = nx_pool_new(&po, NULL);
        nx_loader_t *ld = pool ? nx_loader_new(pool, NULL, NULL) : NULL;
        nx_load_stats_t st;
        nx_model_t *m = ld ? nx_loader_load(ld, path, NULL, &st, NULL) : NULL;
        int code = !m ? 4 : strcmp(st.io, "threads") != 0 ? 5 : nx_model_check(pool, m, NULL);
        setenv("NX_LOADER_IO", "io_uring", 1); /* asked for by name: an error, not a fallback */
        nx_err_t err = {0};
        nx_loader_t *strict = pool ? nx_loader_new(pool, NULL, &err) : NULL;
        if (code == 0 && (strict || err.code != NX_ENOTSUP || !strstr(err.msg, "io_uring")))
            code = 6;
        nx_loader_destroy(&strict);
        nx_loader_unload(ld, &m, false);
        nx_loader_destroy(&ld);
        nx_pool_destroy(&pool);
        _exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_pool_exhaustion(void **state)
{
    char path[512];
    path_in(path, sizeof path, "big.safetensors");
    write_model(path, 3, 4, 1024); /* ~16 MiB */
    nx_pool_t *pool = cpu_pool(8 * MiB);
    nx_loader_t *ld = nx_loader_new(pool, NULL, NULL);
    nx_err_t err = {0};
    nx_model_t *m = nx_loader_load(ld, path, NULL, NULL, &err);
    assert_null(m);
    assert_int_equal(err.code, NX_EPOOLFULL);
    assert_non_null(strstr(err.msg, "big.safetensors"));
    nx_pool_stats_t ps;
    nx_pool_stats(pool, &ps);
    assert_int_equal(ps.used_bytes, 0); /* nothing leaked by the failed load */
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

/* Load A, B, C; unload B; D (larger than B, smaller than the free total) still loads. */
static void test_fragmentation(void **state)
{
    char pa[512], pb[512], pc[512], pd[512];
    path_in(pa, sizeof pa, "fa.safetensors");
    path_in(pb, sizeof pb, "fb.safetensors");
    path_in(pc, sizeof pc, "fc.safetensors");
    path_in(pd, sizeof pd, "fd.safetensors");
    write_model(pa, 10, 1, 1000); /* ~3.9 MiB -> 2 chunks of 2 MiB */
    write_model(pb, 11, 1, 1000); /* 2 chunks */
    write_model(pc, 12, 1, 1000); /* 2 chunks */
    write_model(pd, 13, 1, 1500); /* ~5.9 MiB -> 3 chunks: more than B's hole */
    nx_pool_t *pool = cpu_pool(10 * MiB); /* 5 chunks of 2 MiB... */
    nx_pool_destroy(&pool);
    pool = cpu_pool(14 * MiB); /* 7 chunks: A B C use 6, one free */
    nx_loader_t *ld = nx_loader_new(pool, NULL, NULL);
    nx_model_t *a = load_ok(ld, pa, NULL), *b = load_ok(ld, pb, NULL), *c = load_ok(ld, pc, NULL);
    nx_loader_unload(ld, &b, false); /* hole of 2 chunks between A and C, plus 1 at the end */
    nx_pool_stats_t ps;
    nx_pool_stats(pool, &ps);
    assert_int_equal(ps.free_bytes, 6 * MiB);
    nx_model_t *d = load_ok(ld, pd, NULL); /* needs 3 chunks: not contiguous physically */
    check_ok(pool, d);
    check_ok(pool, a);
    check_ok(pool, c);
    nx_loader_unload(ld, &a, false);
    nx_loader_unload(ld, &c, false);
    nx_loader_unload(ld, &d, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

typedef struct conc_arg {
    nx_loader_t *ld;
    nx_pool_t *pool;
    const char *path;
    int rc;
    char msg[1024];
} conc_arg_t;

static void *conc_main(void *p)
{
    conc_arg_t *a = p;
    nx_err_t err = {0};
    a->rc = NX_OK;
    for (int round = 0; round < 3 && a->rc == NX_OK; round++) {
        nx_model_t *m = nx_loader_load(a->ld, a->path, NULL, NULL, &err);
        if (!m || nx_model_check(a->pool, m, &err) != NX_OK)
            a->rc = err.code ? err.code : NX_EIO;
        nx_loader_unload(a->ld, &m, false);
    }
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    return NULL;
}

static void test_concurrent_loads(void **state)
{
    char p1[512], p2[512];
    path_in(p1, sizeof p1, "c1.safetensors");
    path_in(p2, sizeof p2, "c2.safetensors");
    write_model(p1, 20, 3, 400);
    write_model(p2, 21, 4, 300);
    nx_pool_t *pool = cpu_pool(32 * MiB);
    nx_loader_opts_t o = {.threads = 2, .chunk_bytes = 128 * 1024, .read_mode = NX_READ_DIRECT};
    nx_loader_t *ld = nx_loader_new(pool, &o, NULL);
    conc_arg_t args[2] = {{ld, pool, p1, 0, ""}, {ld, pool, p2, 0, ""}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, conc_main, &args[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (args[i].rc != NX_OK)
            fail_msg("concurrent load of %s: %s", args[i].path, args[i].msg);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

typedef struct crowd_arg {
    nx_loader_t *ld;
    nx_pool_t *pool;
    const char *path;
    int loaded, refused; /* loads that fit, loads refused with pool_full */
    char failure[1100];  /* empty when every load either succeeded or was refused cleanly */
} crowd_arg_t;

/* Load, check and unload, 6 times; a refusal must be NX_EPOOLFULL naming the file. */
static void *crowd_main(void *p)
{
    crowd_arg_t *a = p;
    for (int round = 0; round < 6 && !a->failure[0]; round++) {
        nx_err_t err = {0};
        nx_model_t *m = nx_loader_load(a->ld, a->path, NULL, NULL, &err);
        if (!m) {
            if (err.code == NX_EPOOLFULL && strstr(err.msg, a->path))
                a->refused++;
            else
                snprintf(a->failure, sizeof a->failure, "load %s: code %d: %s", a->path,
                         err.code, err.msg);
            continue;
        }
        if (nx_model_check(a->pool, m, &err) != NX_OK)
            snprintf(a->failure, sizeof a->failure, "check %s: %s", a->path, err.msg);
        a->loaded++;
        nx_loader_unload(a->ld, &m, false);
    }
    return NULL;
}

/* Four threads load four ~4 MiB models into a pool that holds two at a time: every load
 * either succeeds intact or is refused with pool_full naming its file, and once all are
 * unloaded the pool's accounting is back to zero (ASan and TSan see the same run). */
static void test_pool_exhaustion_concurrent(void **state)
{
    enum { CROWD = 4 };
    char paths[CROWD][512];
    for (int i = 0; i < CROWD; i++) {
        char name[32];
        snprintf(name, sizeof name, "crowd%d.safetensors", i);
        path_in(paths[i], sizeof paths[i], name);
        write_model(paths[i], 40u + (uint32_t)i, 1, 1000); /* ~3.9 MiB -> 2 chunks of 2 MiB */
    }
    nx_pool_t *pool = cpu_pool(10 * MiB); /* 5 chunks: two models at a time */
    nx_loader_opts_t o = {.threads = 2, .chunk_bytes = 256 * 1024};
    nx_loader_t *ld = nx_loader_new(pool, &o, NULL);
    crowd_arg_t args[CROWD];
    pthread_t t[CROWD];
    for (int i = 0; i < CROWD; i++) {
        args[i] = (crowd_arg_t){.ld = ld, .pool = pool, .path = paths[i]};
        assert_int_equal(pthread_create(&t[i], NULL, crowd_main, &args[i]), 0);
    }
    int loaded = 0, refused = 0;
    for (int i = 0; i < CROWD; i++) {
        pthread_join(t[i], NULL);
        if (args[i].failure[0])
            fail_msg("%s", args[i].failure);
        loaded += args[i].loaded;
        refused += args[i].refused;
    }
    print_message("crowd: %d loads fitted, %d refused with pool_full\n", loaded, refused);
    assert_true(loaded > 0);
    nx_pool_stats_t ps;
    nx_pool_stats(pool, &ps);
    assert_int_equal(ps.used_bytes, 0);
    assert_int_equal(ps.region_count, 0);
    assert_int_equal(ps.free_bytes, 10 * MiB);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

static void test_host_cache(void **state)
{
    char p1[512], p2[512], p3[512];
    path_in(p1, sizeof p1, "h1.safetensors");
    path_in(p2, sizeof p2, "h2.safetensors");
    path_in(p3, sizeof p3, "h3.safetensors");
    write_model(p1, 30, 2, 500); /* ~4 MiB each */
    write_model(p2, 31, 2, 500);
    write_model(p3, 32, 2, 500);
    nx_pool_t *pool = cpu_pool(32 * MiB);
    nx_err_t err = {0};
    nx_hostcache_t *hc = nx_hostcache_new(pool, 64 * MiB, &err); /* two 32 MiB chunks */
    assert_non_null(hc);
    nx_loader_opts_t o = {.cache = hc};
    nx_loader_t *ld = nx_loader_new(pool, &o, NULL);

    nx_load_stats_t st;
    nx_model_t *m = load_ok(ld, p1, &st);
    assert_string_not_equal(st.read_mode, "host-cache");
    assert_false(nx_hostcache_contains(hc, p1));
    nx_loader_unload(ld, &m, true);
    assert_true(nx_hostcache_contains(hc, p1));
    m = load_ok(ld, p1, &st);
    assert_string_equal(st.read_mode, "host-cache");
    check_ok(pool, m);
    nx_loader_unload(ld, &m, true);

    /* LRU: the budget holds two images; a third pushes out the least recently used. */
    m = load_ok(ld, p2, NULL);
    nx_loader_unload(ld, &m, true);
    m = load_ok(ld, p3, NULL);
    nx_loader_unload(ld, &m, true);
    assert_false(nx_hostcache_contains(hc, p1));
    assert_true(nx_hostcache_contains(hc, p2));
    assert_true(nx_hostcache_contains(hc, p3));
    nx_hostcache_stats_t hs;
    nx_hostcache_stats(hc, &hs);
    assert_int_equal(hs.entries, 2);
    assert_true(hs.evictions >= 1);
    assert_true(hs.hits >= 1);

    /* A rewritten file makes its image stale: the next load reads the disk. */
    sleep(0); /* mtime has ns resolution; inode changes on the atomic rename anyway */
    write_model(p2, 33, 2, 500);
    assert_false(nx_hostcache_contains(hc, p2));
    m = load_ok(ld, p2, &st);
    assert_string_not_equal(st.read_mode, "host-cache");
    check_ok(pool, m);
    nx_loader_unload(ld, &m, false);

    /* Explicit eviction. */
    assert_int_equal(nx_hostcache_evict(hc, p3, NULL), NX_OK);
    assert_false(nx_hostcache_contains(hc, p3));
    assert_int_equal(nx_hostcache_evict(hc, p3, &err), NX_ENOTFOUND);
    nx_hostcache_evict_all(hc);
    nx_hostcache_stats(hc, &hs);
    assert_int_equal(hs.entries, 0);
    assert_int_equal(hs.used_bytes, 0);

    nx_loader_destroy(&ld);
    nx_hostcache_destroy(&hc);
    nx_pool_destroy(&pool);
}

static void test_check_catches_corruption(void **state)
{
    char path[512];
    path_in(path, sizeof path, "k.safetensors");
    write_model(path, 40, 3, 100);
    nx_pool_t *pool = cpu_pool(8 * MiB);
    nx_loader_t *ld = nx_loader_new(pool, NULL, NULL);
    nx_model_t *m = load_ok(ld, path, NULL);
    const nx_model_tensor_t *t = nx_model_find(m, "layer.1.weight");
    ((uint8_t *)t->ptr)[12345] ^= 0x40;
    nx_err_t err = {0};
    assert_int_equal(nx_model_check(pool, m, &err), NX_EMISMATCH);
    assert_non_null(strstr(err.msg, "layer.1.weight"));
    assert_non_null(strstr(err.msg, "12345"));
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

static void test_bad_inputs(void **state)
{
    nx_pool_t *pool = cpu_pool(4 * MiB);
    nx_err_t err = {0};
    nx_loader_opts_t bad = {.read_mode = (nx_read_mode_t)9};
    assert_null(nx_loader_new(pool, &bad, &err));
    assert_int_equal(err.code, NX_EINVAL);
    assert_null(nx_loader_new(NULL, NULL, &err));
    nx_loader_t *ld = nx_loader_new(pool, NULL, NULL);
    assert_null(nx_loader_load(ld, "/nonexistent/model", NULL, NULL, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/model"));
    char path[512];
    path_in(path, sizeof path, "garbage.safetensors");
    FILE *f = fopen(path, "wb");
    fputs("not a safetensors file at all", f);
    fclose(f);
    assert_null(nx_loader_load(ld, path, NULL, NULL, &err));
    assert_int_equal(err.code, NX_EFORMAT);
    nx_pool_stats_t ps;
    nx_pool_stats(pool, &ps);
    assert_int_equal(ps.used_bytes, 0);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modes_and_chunking),
        cmocka_unit_test(test_unaligned_data_section),
        cmocka_unit_test(test_tmpfs_fallback),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_uncovered_bytes_are_zero),
        cmocka_unit_test(test_io_paths_agree),
        cmocka_unit_test(test_io_uring_refused_falls_back),
        cmocka_unit_test(test_pool_exhaustion),
        cmocka_unit_test(test_fragmentation),
        cmocka_unit_test(test_concurrent_loads),
        cmocka_unit_test(test_pool_exhaustion_concurrent),
        cmocka_unit_test(test_host_cache),
        cmocka_unit_test(test_check_catches_corruption),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests_name("loader", tests, setup_dir, teardown_dir);
}
