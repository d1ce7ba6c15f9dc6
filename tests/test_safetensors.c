/* test_safetensors.c — the safetensors reader and writer: round trips of every dtype and odd
 * shape, metadata, digests, sharded checkpoints, atomic saves, and every rejection rule of the
 * reader checked for its code and for a message naming the file, tensor and rule. Corrupt
 * files are written byte by byte here, never through the writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_loader.h"

typedef struct fixture {
    char dir[64]; /* fresh mkdtemp directory, removed in teardown */
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/nx_st_test_XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    *state = fx;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static char *path_in(const fixture_t *fx, const char *name)
{
    static char paths[4][512];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", fx->dir, name);
    return path;
}

static void write_file(const char *path, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* A file by hand: 8-byte prefix holding `declared_len` (or the real length when ~0), the
 * header text, then `data_len` bytes of a counting pattern. */
static void write_raw(const char *path, const char *header, uint64_t declared_len,
                      size_t data_len)
{
    size_t header_len = strlen(header);
    uint64_t n = declared_len == ~0ull ? header_len : declared_len;
    size_t total = 8 + header_len + data_len;
    uint8_t *buf = malloc(total);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, header_len);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + header_len + i] = (uint8_t)i;
    write_file(path, buf, total);
    free(buf);
}

static void read_at(const char *path, uint64_t offset, void *dst, size_t len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, dst, len, (off_t)offset), (ssize_t)len);
    close(fd);
}

/* Open must fail with `code` and a message holding every given substring. */
static void expect_reject(const char *path, int code, const char *want1, const char *want2)
{
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(path, &err);
    if (st)
        fail_msg("%s: opened, expected %s containing '%s'", path, nx_errname(code), want1);
    if (err.code != code || (want1 && !strstr(err.msg, want1)) ||
        (want2 && !strstr(err.msg, want2)))
        fail_msg("%s: got %s '%s', expected %s with '%s' and '%s'", path, nx_errname(err.code),
                 err.msg, nx_errname(code), want1, want2 ? want2 : "");
}

static void expect_raw_reject(const fixture_t *fx, const char *header, size_t data_len,
                              const char *want1, const char *want2)
{
    char *path = path_in(fx, "bad.safetensors");
    write_raw(path, header, ~0ull, data_len);
    expect_reject(path, NX_EFORMAT, want1, want2);
    expect_reject(path, NX_EFORMAT, "bad.safetensors", NULL);
}

/* ------------------------------------------------------------------------------------------
 * Round trips
 */

/* The dtypes safetensors defines come before ggml's block types in nx_dtype_t. */
#define ST_DTYPE_COUNT NX_DT_Q4_0

static void test_dtype_table(void **state)
{
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        nx_dtype_t parsed;
        assert_string_not_equal(nx_dtype_name((nx_dtype_t)d), "?");
        assert_true(nx_dtype_parse(nx_dtype_name((nx_dtype_t)d), &parsed));
        assert_int_equal(parsed, d);
        assert_true(nx_dtype_bits((nx_dtype_t)d) > 0);
    }
    assert_int_equal(nx_dtype_bits(NX_DT_F4), 4);
    assert_int_equal(nx_dtype_bits(NX_DT_F6_E3M2), 6);
    assert_int_equal(nx_dtype_bits(NX_DT_C64), 64);
    assert_int_equal(nx_dtype_bits(NX_DT_BOOL), 8);
    assert_string_equal(nx_dtype_name(NX_DT__COUNT), "?");
    /* ggml's block types have names but are never safetensors dtypes. */
    for (int d = ST_DTYPE_COUNT; d < NX_DT__COUNT; d++) {
        assert_string_not_equal(nx_dtype_name((nx_dtype_t)d), "?");
        assert_false(nx_dtype_parse(nx_dtype_name((nx_dtype_t)d), NULL));
        assert_true(nx_dtype_is_block((nx_dtype_t)d));
        assert_int_equal(nx_dtype_bits((nx_dtype_t)d), 0);
    }
    assert_false(nx_dtype_parse("F128", NULL));
    assert_false(nx_dtype_parse("f32", NULL));
}

static void test_roundtrip_every_dtype(void **state)
{
    fixture_t *fx = *state;
    nx_st_tensor_spec_t specs[ST_DTYPE_COUNT];
    uint8_t *data[ST_DTYPE_COUNT];
    uint64_t sizes[ST_DTYPE_COUNT];
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        char *name = malloc(32);
        snprintf(name, 32, "t.%s", nx_dtype_name((nx_dtype_t)d));
        sizes[d] = 4 * 6 * nx_dtype_bits((nx_dtype_t)d) / 8;
        data[d] = malloc(sizes[d]);
        for (uint64_t i = 0; i < sizes[d]; i++)
            data[d][i] = (uint8_t)(i * 7 + d);
        specs[d] = (nx_st_tensor_spec_t){
            .name = name, .dtype = (nx_dtype_t)d, .ndim = 2, .shape = {4, 6}, .data = data[d]};
    }
    char *path = path_in(fx, "all.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, specs, ST_DTYPE_COUNT, NULL, &err), NX_OK);
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    assert_int_equal(nx_st_tensor_count(st), ST_DTYPE_COUNT);
    const nx_st_file_t *file = nx_st_file_at(st, 0);
    assert_int_equal(file->data_offset % NX_ST_ALIGN, 0);
    assert_non_null(file->digest);
    uint64_t begin = 0;
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, (size_t)d); /* storage == given order */
        assert_string_equal(t->name, specs[d].name);
        assert_ptr_equal(nx_st_find(st, specs[d].name), t);
        assert_int_equal(t->dtype, d);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->shape[0], 4);
        assert_int_equal(t->shape[1], 6);
        assert_int_equal(t->bytes, sizes[d]);
        assert_int_equal(t->begin, begin);
        begin += sizes[d];
        uint8_t back[256];
        read_at(path, file->data_offset + t->begin, back, sizes[d]);
        assert_memory_equal(back, data[d], sizes[d]);
    }
    assert_int_equal(nx_st_data_bytes(st), begin);
    assert_null(nx_st_find(st, "missing"));
    assert_null(nx_st_tensor_at(st, ST_DTYPE_COUNT));
    size_t checked = 0;
    assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_OK);
    assert_int_equal(checked, 1);
    nx_st_destroy(&st);
    nx_st_destroy(&st); /* safe twice */
    assert_null(st);
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        free((char *)specs[d].name);
        free(data[d]);
    }
}

/* Fill callback: byte i of tensor = low byte of (i * 31 + name length). */
static int pattern_fill(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                        size_t len, nx_err_t *err)
{
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)dst)[i] = (uint8_t)((offset + i) * 31 + strlen(spec->name));
    return NX_OK;
}

static void test_odd_shapes(void **state)
{
    fixture_t *fx = *state;
    float scalar = 3.5f;
    nx_st_tensor_spec_t specs[] = {
        {.name = "scalar", .dtype = NX_DT_F32, .ndim = 0, .data = &scalar},
        {.name = "empty", .dtype = NX_DT_F32, .ndim = 2, .shape = {0, 5}, .data = NULL},
        {.name = "tall", .dtype = NX_DT_U8, .ndim = 2, .shape = {1u << 20, 1}, .data = NULL},
        {.name = "nibbles", .dtype = NX_DT_F4, .ndim = 1, .shape = {6}, .data = NULL},
    };
    nx_st_save_opts_t opts = {.fill = pattern_fill};
    char *path = path_in(fx, "odd.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, specs, 4, &opts, &err), NX_OK);
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    const nx_st_tensor_t *t = nx_st_find(st, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->bytes, 4);
    float back;
    read_at(path, nx_st_file_at(st, 0)->data_offset + t->begin, &back, 4);
    assert_true(back == 3.5f);
    assert_int_equal(nx_st_find(st, "empty")->bytes, 0);
    assert_int_equal(nx_st_find(st, "empty")->shape[0], 0);
    t = nx_st_find(st, "tall");
    assert_int_equal(t->shape[0], 1u << 20);
    assert_int_equal(t->bytes, 1u << 20);
    uint8_t tail[4];
    read_at(path, nx_st_file_at(st, 0)->data_offset + t->begin + (1u << 20) - 4, tail, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(tail[i], (uint8_t)(((1u << 20) - 4 + i) * 31 + 4));
    assert_int_equal(nx_st_find(st, "nibbles")->bytes, 3);
    assert_int_equal(nx_st_verify_digest(st, NULL, &err), NX_OK);
    nx_st_destroy(&st);
}

static void test_metadata_pairs(void **state)
{
    fixture_t *fx = *state;
    const char *keys[] = {"format", "nexus.arch"};
    const char *values[] = {"pt", "qwen3 \"tiny\""};
    nx_st_save_opts_t opts = {.meta_keys = keys, .meta_values = values, .meta_count = 2};
    uint16_t w[3] = {1, 2, 3};
    nx_st_tensor_spec_t spec = {.name = "w", .dtype = NX_DT_BF16, .ndim = 1, .shape = {3},
                                .data = w};
    char *path = path_in(fx, "meta.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, &spec, 1, &opts, &err), NX_OK);
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    assert_string_equal(nx_st_metadata(st, 0, "format"), "pt");
    assert_string_equal(nx_st_metadata(st, 0, "nexus.arch"), "qwen3 \"tiny\"");
    assert_non_null(nx_st_metadata(st, 0, NX_ST_DIGEST_KEY));
    assert_null(nx_st_metadata(st, 0, "absent"));
    assert_null(nx_st_metadata(st, 1, "format"));
    nx_st_destroy(&st);
}

static void test_no_tensors(void **state)
{
    fixture_t *fx = *state;
    char *path = path_in(fx, "none.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, NULL, 0, NULL, &err), NX_OK);
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    assert_int_equal(nx_st_tensor_count(st), 0);
    assert_int_equal(nx_st_data_bytes(st), 0);
    nx_st_destroy(&st);
}

static void test_many_tensors_find(void **state)
{
    fixture_t *fx = *state;
    enum { COUNT = 1500 };
    nx_st_tensor_spec_t *specs = calloc(COUNT, sizeof *specs);
    char(*names)[48] = calloc(COUNT, sizeof *names);
    for (int i = 0; i < COUNT; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.weight", i);
        specs[i] = (nx_st_tensor_spec_t){
            .name = names[i], .dtype = NX_DT_F16, .ndim = 1, .shape = {(uint64_t)(i % 5)}};
    }
    nx_st_save_opts_t opts = {.fill = pattern_fill};
    char *path = path_in(fx, "many.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, specs, COUNT, &opts, &err), NX_OK);
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    assert_int_equal(nx_st_tensor_count(st), COUNT);
    for (int i = 0; i < COUNT; i++) {
        const nx_st_tensor_t *t = nx_st_find(st, names[i]);
        assert_non_null(t);
        assert_string_equal(t->name, names[i]);
        assert_int_equal(t->shape[0], i % 5);
    }
    nx_st_destroy(&st);
    free(specs);
    free(names);
}

/* ------------------------------------------------------------------------------------------
 * Digests
 */

static void test_digest_mismatch(void **state)
{
    fixture_t *fx = *state;
    uint8_t data[100];
    for (int i = 0; i < 100; i++)
        data[i] = (uint8_t)i;
    nx_st_tensor_spec_t spec = {.name = "d", .dtype = NX_DT_U8, .ndim = 1, .shape = {100},
                                .data = data};
    char *path = path_in(fx, "flip.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, &spec, 1, NULL, &err), NX_OK);
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    char expected[64];
    snprintf(expected, sizeof expected, "records %s", nx_st_file_at(st, 0)->digest);
    uint64_t data_offset = nx_st_file_at(st, 0)->data_offset;
    nx_st_destroy(&st);
    int fd = open(path, O_RDWR);
    uint8_t flipped = 42 ^ 0x01;
    assert_int_equal(pwrite(fd, &flipped, 1, (off_t)data_offset + 42), 1);
    close(fd);
    st = nx_st_open(path, &err); /* structure is intact: opening succeeds */
    assert_non_null(st);
    size_t checked = 7;
    assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_EDIGEST);
    assert_non_null(strstr(err.msg, "flip.safetensors"));
    assert_non_null(strstr(err.msg, "digest mismatch"));
    assert_non_null(strstr(err.msg, expected));
    assert_int_equal(checked, 0);
    nx_st_destroy(&st);
}

static void test_digest_malformed_and_absent(void **state)
{
    fixture_t *fx = *state;
    char *path = path_in(fx, "dig.safetensors");
    write_raw(path,
              "{\"__metadata__\":{\"nexus.digest\":\"xxh3-64:ABCDEF0123456789\"},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
              ~0ull, 4);
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    assert_int_equal(nx_st_verify_digest(st, NULL, &err), NX_EFORMAT);
    assert_non_null(strstr(err.msg, "dig.safetensors"));
    assert_non_null(strstr(err.msg, "16 lowercase hex"));
    nx_st_destroy(&st);
    write_raw(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", ~0ull, 4);
    st = nx_st_open(path, &err);
    assert_non_null(st);
    size_t checked = 9;
    assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_OK);
    assert_int_equal(checked, 0);
    assert_null(nx_st_file_at(st, 0)->digest);
    nx_st_destroy(&st);
}

/* ------------------------------------------------------------------------------------------
 * Sharded checkpoints
 */

static void save_shard(const fixture_t *fx, const char *file, const char *const *names,
                       size_t count)
{
    nx_st_tensor_spec_t specs[8];
    for (size_t i = 0; i < count; i++)
        specs[i] = (nx_st_tensor_spec_t){
            .name = names[i], .dtype = NX_DT_F32, .ndim = 2, .shape = {2, i + 1}};
    nx_st_save_opts_t opts = {.fill = pattern_fill};
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path_in(fx, file), specs, count, &opts, &err), NX_OK);
}

static void write_index(const fixture_t *fx, const char *weight_map)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":0},\"weight_map\":{%s}}",
             weight_map);
    write_file(path_in(fx, "model.safetensors.index.json"), text, strlen(text));
}

static const char *const shard1_names[] = {"embed", "layer.0"};
static const char *const shard2_names[] = {"layer.1", "norm", "head"};
#define GOOD_MAP                                                                             \
    "\"embed\":\"model-00001-of-00002.safetensors\","                                        \
    "\"layer.0\":\"model-00001-of-00002.safetensors\","                                      \
    "\"layer.1\":\"model-00002-of-00002.safetensors\","                                      \
    "\"norm\":\"model-00002-of-00002.safetensors\","                                         \
    "\"head\":\"model-00002-of-00002.safetensors\""

static void save_two_shards(const fixture_t *fx)
{
    save_shard(fx, "model-00001-of-00002.safetensors", shard1_names, 2);
    save_shard(fx, "model-00002-of-00002.safetensors", shard2_names, 3);
}

static void test_sharded_open(void **state)
{
    fixture_t *fx = *state;
    save_two_shards(fx);
    write_index(fx, GOOD_MAP);
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(fx->dir, &err);
    if (!st)
        fail_msg("%s", err.msg);
    assert_string_equal(nx_st_path(st), fx->dir);
    assert_int_equal(nx_st_file_count(st), 2);
    assert_int_equal(nx_st_tensor_count(st), 5);
    assert_non_null(strstr(nx_st_file_at(st, 0)->path, "model-00001-of-00002.safetensors"));
    assert_int_equal(nx_st_file_at(st, 1)->tensor_first, 2);
    assert_int_equal(nx_st_file_at(st, 1)->tensor_count, 3);
    assert_int_equal(nx_st_find(st, "embed")->file_index, 0);
    assert_int_equal(nx_st_find(st, "head")->file_index, 1);
    assert_int_equal(nx_st_tensor_at(st, 2)->file_index, 1);
    assert_int_equal(nx_st_data_bytes(st),
                     nx_st_file_at(st, 0)->data_bytes + nx_st_file_at(st, 1)->data_bytes);
    size_t checked = 0;
    assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_OK);
    assert_int_equal(checked, 2);
    nx_st_destroy(&st);
}

static void test_sharded_disagreements(void **state)
{
    fixture_t *fx = *state;
    save_two_shards(fx);
    /* the index maps a tensor to the other shard */
    write_index(fx, "\"embed\":\"model-00002-of-00002.safetensors\","
                    "\"layer.0\":\"model-00001-of-00002.safetensors\","
                    "\"layer.1\":\"model-00002-of-00002.safetensors\","
                    "\"norm\":\"model-00002-of-00002.safetensors\","
                    "\"head\":\"model-00002-of-00002.safetensors\"");
    expect_reject(fx->dir, NX_EFORMAT, "tensor 'embed' is listed in", "model-00001");
    /* a shard holds a tensor the index does not list */
    write_index(fx, "\"embed\":\"model-00001-of-00002.safetensors\","
                    "\"layer.0\":\"model-00001-of-00002.safetensors\","
                    "\"layer.1\":\"model-00002-of-00002.safetensors\","
                    "\"norm\":\"model-00002-of-00002.safetensors\"");
    expect_reject(fx->dir, NX_EFORMAT, "tensor 'head' is not listed", "model-00002");
    /* the index lists a tensor that its shard does not hold */
    write_index(fx, GOOD_MAP ",\"ghost\":\"model-00002-of-00002.safetensors\"");
    expect_reject(fx->dir, NX_EFORMAT, "tensor 'ghost'", "does not hold it");
    /* the index names a shard file that does not exist */
    write_index(fx, GOOD_MAP ",\"ghost\":\"model-00003-of-00003.safetensors\"");
    expect_reject(fx->dir, NX_EFORMAT, "model-00003-of-00003.safetensors", "not a file");
    /* a shard file name that leaves the directory */
    write_index(fx, GOOD_MAP ",\"ghost\":\"../x.safetensors\"");
    expect_reject(fx->dir, NX_EFORMAT, "'ghost'", "not a file name");
    /* no weight_map; malformed index */
    write_file(path_in(fx, "model.safetensors.index.json"), "{\"metadata\":{}}", 15);
    expect_reject(fx->dir, NX_EFORMAT, "weight_map", "index.json");
    write_file(path_in(fx, "model.safetensors.index.json"), "{\"weight_map\":", 14);
    expect_reject(fx->dir, NX_EFORMAT, "malformed JSON", "index.json");
}

static void test_sharded_duplicate_across_shards(void **state)
{
    fixture_t *fx = *state;
    static const char *const a[] = {"x", "dup"};
    static const char *const b[] = {"y", "dup"};
    save_shard(fx, "s1.safetensors", a, 2);
    save_shard(fx, "s2.safetensors", b, 2);
    write_index(fx, "\"x\":\"s1.safetensors\",\"dup\":\"s1.safetensors\","
                    "\"y\":\"s2.safetensors\"");
    expect_reject(fx->dir, NX_EFORMAT, "s2.safetensors: tensor 'dup' is listed in", "s1");
}

static void test_directory_without_index(void **state)
{
    fixture_t *fx = *state;
    expect_reject(fx->dir, NX_ENOTFOUND, "no *.safetensors file", NULL);
    static const char *const a[] = {"only"};
    save_shard(fx, "weights.safetensors", a, 1);
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(fx->dir, &err);
    assert_non_null(st);
    assert_non_null(nx_st_find(st, "only"));
    nx_st_destroy(&st);
    save_shard(fx, "other.safetensors", a, 1);
    expect_reject(fx->dir, NX_EFORMAT, "other.safetensors, weights.safetensors",
                  "no model.safetensors.index.json");
    expect_reject(path_in(fx, "nope.safetensors"), NX_ENOTFOUND, "nope.safetensors", NULL);
}

/* ------------------------------------------------------------------------------------------
 * Rejections of corrupt files, written by hand
 */

#define T_A "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_reject_truncated(void **state)
{
    fixture_t *fx = *state;
    char *path = path_in(fx, "cut.safetensors");
    write_file(path, "\x10\x00\x00\x00\x00", 5); /* cut inside the prefix */
    expect_reject(path, NX_EFORMAT, "cut.safetensors", "too short for the 8-byte header");
    write_raw(path, "{" T_A "}", 400, 0); /* cut inside the header */
    expect_reject(path, NX_EFORMAT, "header length 400 exceeds the file", "cut.safetensors");
    write_raw(path, "{" T_A "}", ~0ull, 5); /* cut inside the data */
    expect_reject(path, NX_EFORMAT, "tensor 'a'", "beyond the end of the file");
}

static void test_reject_absurd_header_length(void **state)
{
    fixture_t *fx = *state;
    char *path = path_in(fx, "absurd.safetensors");
    write_raw(path, "{" T_A "}", 1ull << 63, 8);
    expect_reject(path, NX_EFORMAT, "header length 9223372036854775808 is absurd",
                  "absurd.safetensors");
    write_raw(path, "{" T_A "}", 200ull << 20, 8);
    expect_reject(path, NX_EFORMAT, "is absurd", "104857600");
    write_raw(path, "{" T_A "}", 100000, 8);
    expect_reject(path, NX_EFORMAT, "exceeds the file", NULL);
}

static void test_reject_ranges(void **state)
{
    fixture_t *fx = *state;
    expect_raw_reject(fx,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "tensor 'b' [4, 12] overlaps tensor 'a'", NULL);
    expect_raw_reject(fx,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                      20, "gap of 4 bytes between tensor 'a'", "tensor 'b'");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "tensor 'a'", "gap of 4 bytes at the start");
    expect_raw_reject(fx, "{" T_A "}", 11, "3 trailing bytes", NULL);
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 0,
                      "tensor 'a'", "begins after it ends");
}

static void test_reject_json(void **state)
{
    fixture_t *fx = *state;
    expect_raw_reject(fx, "{" T_A ",}", 8, "malformed at line 1", NULL);
    expect_raw_reject(fx, "[1, 2]", 0, "does not start with '{'", NULL);
    expect_raw_reject(fx, "   {" T_A "}", 8, "does not start with '{'", NULL);
    expect_raw_reject(fx, "{" T_A "," T_A "}", 8, "duplicate", "'\"a\"'");
    expect_raw_reject(fx, "{" T_A "}  x", 8, "malformed", NULL);
    /* trailing spaces are padding, not an error */
    char *path = path_in(fx, "padded.safetensors");
    write_raw(path, "{" T_A "}      ", ~0ull, 8);
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    nx_st_destroy(&st);
}

static void test_reject_tensor_fields(void **state)
{
    fixture_t *fx = *state;
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                      "tensor 'a': shape [3] of F32 needs 12 bytes but data_offsets [0, 8] "
                      "span 8",
                      NULL);
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                      "tensor 'a'", "unknown dtype 'F31'");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
                      "tensor 'a'", "shape is not a list");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                      "tensor 'a'", "shape[0] is not a non-negative integer");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",
                      8, "tensor 'a'", "shape[0] is not a non-negative integer");
    expect_raw_reject(fx,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
                      "\"data_offsets\":[0,4]}}",
                      4, "tensor 'a'", "17 dimensions");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}",
                      8, "tensor 'a'", "data_offsets is not a list of 2");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                      "tensor 'a'", "data_offsets is not a list of 2");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", 8,
                      "tensor 'a'", "not a non-negative integer");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor 'a'",
                      "missing field 'data_offsets'");
    expect_raw_reject(fx,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}",
                      8, "tensor 'a'", "unexpected field 'x'");
    expect_raw_reject(fx, "{\"a\":[1]}", 0, "tensor 'a'", "not an object");
    expect_raw_reject(fx,
                      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
                      "\"data_offsets\":[0,8]}}",
                      8, "tensor 'a'", "overflows");
    expect_raw_reject(fx, "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                      "tensor 'a'", "not a whole number of bytes");
}

static void test_reject_metadata(void **state)
{
    fixture_t *fx = *state;
    expect_raw_reject(fx, "{\"__metadata__\":{\"format\":1}," T_A "}", 8, "__metadata__",
                      "'format' is not a string");
    expect_raw_reject(fx, "{\"__metadata__\":[\"pt\"]," T_A "}", 8, "__metadata__",
                      "not an object");
}

/* ------------------------------------------------------------------------------------------
 * Writer: validation and atomicity
 */

static void expect_save_reject(const fixture_t *fx, const nx_st_tensor_spec_t *specs,
                               size_t count, const nx_st_save_opts_t *opts, const char *want)
{
    nx_err_t err = {0};
    char *path = path_in(fx, "rejected.safetensors");
    assert_int_equal(nx_st_save(path, specs, count, opts, &err), NX_EINVAL);
    if (!strstr(err.msg, want))
        fail_msg("save: '%s' lacks '%s'", err.msg, want);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_save_validation(void **state)
{
    fixture_t *fx = *state;
    uint8_t byte = 0;
    nx_st_tensor_spec_t s[2] = {
        {.name = "a", .dtype = NX_DT_U8, .ndim = 1, .shape = {1}, .data = &byte},
        {.name = "a", .dtype = NX_DT_U8, .ndim = 1, .shape = {1}, .data = &byte},
    };
    expect_save_reject(fx, s, 2, NULL, "tensor 'a' is given twice");
    s[1].name = "";
    expect_save_reject(fx, s, 2, NULL, "tensor #1 has an empty name");
    s[1].name = "__metadata__";
    expect_save_reject(fx, s, 2, NULL, "'__metadata__' is reserved");
    s[1] = (nx_st_tensor_spec_t){.name = "b", .dtype = NX_DT__COUNT, .ndim = 1, .shape = {1},
                                 .data = &byte};
    expect_save_reject(fx, s, 2, NULL, "tensor 'b': dtype");
    s[1].dtype = NX_DT_Q8_0;
    s[1].shape[0] = 32;
    expect_save_reject(fx, s, 2, NULL, "tensor 'b': Q8_0 is a ggml block type");
    s[1].shape[0] = 1;
    s[1].dtype = NX_DT_U8;
    s[1].ndim = NX_ST_MAX_DIMS + 1;
    expect_save_reject(fx, s, 2, NULL, "tensor 'b': 17 dimensions");
    s[1] = (nx_st_tensor_spec_t){.name = "b", .dtype = NX_DT_F6_E2M3, .ndim = 1, .shape = {3},
                                 .data = &byte};
    expect_save_reject(fx, s, 2, NULL, "tensor 'b': shape [3] of F6_E2M3 is not a whole");
    s[1] = (nx_st_tensor_spec_t){.name = "b", .dtype = NX_DT_F64, .ndim = 2,
                                 .shape = {1ull << 40, 1ull << 30}, .data = &byte};
    expect_save_reject(fx, s, 2, NULL, "tensor 'b': shape");
    s[1] = (nx_st_tensor_spec_t){.name = "b", .dtype = NX_DT_U8, .ndim = 1, .shape = {4}};
    expect_save_reject(fx, s, 2, NULL, "tensor 'b' has no data and no fill");
    const char *keys[] = {NX_ST_DIGEST_KEY};
    const char *values[] = {"x"};
    nx_st_save_opts_t opts = {.meta_keys = keys, .meta_values = values, .meta_count = 1};
    expect_save_reject(fx, s, 1, &opts, "written by the saver");
}

typedef struct failing_fill {
    uint64_t fail_at; /* offset of the first chunk that fails */
} failing_fill_t;

static int fail_midway(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                       size_t len, nx_err_t *err)
{
    failing_fill_t *ff = user;
    if (offset >= ff->fail_at)
        return nx_err_set(err, NX_EIO, "source went away");
    memset(dst, 0xab, len);
    return NX_OK;
}

static size_t count_temp_files(const char *dir)
{
    size_t count = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return count;
}

static void test_atomic_save(void **state)
{
    fixture_t *fx = *state;
    char *path = path_in(fx, "atomic.safetensors");
    uint32_t old_data[4] = {1, 2, 3, 4};
    nx_st_tensor_spec_t old_spec = {.name = "old", .dtype = NX_DT_U32, .ndim = 1, .shape = {4},
                                    .data = old_data};
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, &old_spec, 1, NULL, &err), NX_OK);
    struct stat before;
    assert_int_equal(stat(path, &before), 0);

    failing_fill_t ff = {.fail_at = 8u << 20}; /* the second 8 MiB chunk fails */
    nx_st_tensor_spec_t big = {.name = "big", .dtype = NX_DT_U8, .ndim = 1, .shape = {20u << 20}};
    nx_st_save_opts_t opts = {.fill = fail_midway, .fill_user = &ff};
    assert_int_equal(nx_st_save(path, &big, 1, &opts, &err), NX_EIO);
    assert_non_null(strstr(err.msg, "tensor 'big'"));
    assert_non_null(strstr(err.msg, "source went away"));
    assert_int_equal(count_temp_files(fx->dir), 0);

    nx_st_t *st = nx_st_open(path, &err);
    assert_non_null(st);
    assert_int_equal(nx_st_tensor_count(st), 1);
    assert_non_null(nx_st_find(st, "old"));
    assert_int_equal(nx_st_verify_digest(st, NULL, &err), NX_OK);
    nx_st_destroy(&st);
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(before.st_size, after.st_size);

    /* a failed first save leaves nothing at all */
    char *fresh = path_in(fx, "fresh.safetensors");
    assert_int_equal(nx_st_save(fresh, &big, 1, &opts, &err), NX_EIO);
    assert_int_equal(access(fresh, F_OK), -1);
    assert_int_equal(count_temp_files(fx->dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test_setup_teardown(test_roundtrip_every_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_odd_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_tensors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_tensors_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_malformed_and_absent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_disagreements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_duplicate_across_shards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_without_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_absurd_header_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_tensor_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_save, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
