/* test_gguf.c — GGUF in the loader: the dtype table's block types against ggml's sizes, a round
 * trip of every key/value and array type through nx_gguf_save and nx_st_open, tensors of every
 * block type, tensor data through nx_loader_load on the CPU pool with nx_model_check, digests
 * (and a flipped byte failing them), files laid out as other writers do (alignment 64, gaps,
 * infos out of order, v2), and the writer's validation and atomicity. The reader's rejection
 * rules are in test_gguf_reject.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_build.h"
#include "nx_loader.h"

#define MiB (1ull << 20)

static char tmpdir[64];

static int setup(void **state)
{
    strcpy(tmpdir, "/tmp/nx_gguf_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *path_in(const char *name)
{
    static char paths[4][256];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", tmpdir, name);
    return path;
}

static nx_st_t *open_ok(const char *path)
{
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(path, &err);
    if (!st)
        fail_msg("open %s: %s", path, err.msg);
    return st;
}

static void save_ok(const char *path, const nx_gguf_kv_spec_t *kvs, size_t kv_count,
                    const nx_st_tensor_spec_t *tensors, size_t count, const nx_st_save_opts_t *opts)
{
    nx_err_t err = {0};
    if (nx_gguf_save(path, kvs, kv_count, tensors, count, opts, &err) != NX_OK)
        fail_msg("save %s: %s", path, err.msg);
}

static void read_at(const char *path, uint64_t offset, void *dst, size_t len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)offset, SEEK_SET), 0);
    assert_int_equal(fread(dst, 1, len, f), len);
    fclose(f);
}

static void flip_byte(const char *path, uint64_t offset)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)offset, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, (long)offset, SEEK_SET), 0);
    fputc(c ^ 0x40, f);
    fclose(f);
}

/* ------------------------------------------------------------------------------------------
 * The dtype table
 */

/* ggml's type_traits (ggml.c) and block structs (ggml-common.h), written out independently. */
static const struct {
    nx_dtype_t dtype;
    const char *name;
    uint32_t ggml, elems, bytes;
} ggml_blocks[] = {
    {NX_DT_Q4_0, "Q4_0", 2, 32, 18},      {NX_DT_Q4_1, "Q4_1", 3, 32, 20},
    {NX_DT_Q5_0, "Q5_0", 6, 32, 22},      {NX_DT_Q5_1, "Q5_1", 7, 32, 24},
    {NX_DT_Q8_0, "Q8_0", 8, 32, 34},      {NX_DT_Q8_1, "Q8_1", 9, 32, 36},
    {NX_DT_Q2_K, "Q2_K", 10, 256, 84},    {NX_DT_Q3_K, "Q3_K", 11, 256, 110},
    {NX_DT_Q4_K, "Q4_K", 12, 256, 144},   {NX_DT_Q5_K, "Q5_K", 13, 256, 176},
    {NX_DT_Q6_K, "Q6_K", 14, 256, 210},   {NX_DT_Q8_K, "Q8_K", 15, 256, 292},
    {NX_DT_IQ2_XXS, "IQ2_XXS", 16, 256, 66}, {NX_DT_IQ2_XS, "IQ2_XS", 17, 256, 74},
    {NX_DT_IQ3_XXS, "IQ3_XXS", 18, 256, 98}, {NX_DT_IQ1_S, "IQ1_S", 19, 256, 50},
    {NX_DT_IQ4_NL, "IQ4_NL", 20, 32, 18}, {NX_DT_IQ3_S, "IQ3_S", 21, 256, 110},
    {NX_DT_IQ2_S, "IQ2_S", 22, 256, 82},  {NX_DT_IQ4_XS, "IQ4_XS", 23, 256, 136},
    {NX_DT_IQ1_M, "IQ1_M", 29, 256, 56},  {NX_DT_TQ1_0, "TQ1_0", 34, 256, 54},
    {NX_DT_TQ2_0, "TQ2_0", 35, 256, 66},  {NX_DT_MXFP4, "MXFP4", 39, 32, 17},
};
#define BLOCK_TYPES (sizeof ggml_blocks / sizeof ggml_blocks[0])

static const struct {
    nx_dtype_t dtype;
    uint32_t ggml, bytes;
} ggml_plain[] = {
    {NX_DT_F32, 0, 4}, {NX_DT_F16, 1, 2},  {NX_DT_BF16, 30, 2}, {NX_DT_I8, 24, 1},
    {NX_DT_I16, 25, 2}, {NX_DT_I32, 26, 4}, {NX_DT_I64, 27, 8},  {NX_DT_F64, 28, 8},
};

static void test_dtype_table(void **state)
{
    assert_int_equal(BLOCK_TYPES, NX_DT__COUNT - NX_DT_Q4_0); /* every block type listed */
    for (size_t i = 0; i < BLOCK_TYPES; i++) {
        nx_dtype_t d = ggml_blocks[i].dtype, back;
        assert_string_equal(nx_dtype_name(d), ggml_blocks[i].name);
        assert_true(nx_dtype_is_block(d));
        assert_int_equal(nx_dtype_block_elems(d), ggml_blocks[i].elems);
        assert_int_equal(nx_dtype_block_bytes(d), ggml_blocks[i].bytes);
        assert_int_equal(nx_dtype_bits(d), 0);
        assert_int_equal(nx_dtype_to_ggml(d), ggml_blocks[i].ggml);
        assert_true(nx_dtype_from_ggml(ggml_blocks[i].ggml, &back));
        assert_int_equal(back, d);
        assert_false(nx_dtype_parse(ggml_blocks[i].name, NULL)); /* not in safetensors */
        char lower[16];
        for (size_t c = 0; c <= strlen(ggml_blocks[i].name); c++)
            lower[c] = (char)tolower((unsigned char)ggml_blocks[i].name[c]);
        assert_true(nx_dtype_parse_any(lower, &back));
        assert_int_equal(back, d);
    }
    for (size_t i = 0; i < sizeof ggml_plain / sizeof ggml_plain[0]; i++) {
        nx_dtype_t d = ggml_plain[i].dtype, back;
        assert_false(nx_dtype_is_block(d));
        assert_int_equal(nx_dtype_block_elems(d), 1);
        assert_int_equal(nx_dtype_block_bytes(d), ggml_plain[i].bytes);
        assert_int_equal(nx_dtype_to_ggml(d), ggml_plain[i].ggml);
        assert_true(nx_dtype_from_ggml(ggml_plain[i].ggml, &back));
        assert_int_equal(back, d);
    }
    /* ggml ids of removed types and of types newer than our table; safetensors-only dtypes */
    const uint32_t unknown[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 41, 42, 1000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        assert_false(nx_dtype_from_ggml(unknown[i], NULL));
    assert_int_equal(nx_dtype_to_ggml(NX_DT_U8), -1);
    assert_int_equal(nx_dtype_to_ggml(NX_DT_BOOL), -1);
    assert_int_equal(nx_dtype_to_ggml(NX_DT__COUNT), -1);
    assert_int_equal(nx_dtype_block_bytes(NX_DT_F4), 0);
    assert_int_equal(nx_dtype_block_elems(NX_DT__COUNT), 0);
    assert_false(nx_dtype_is_block(NX_DT__COUNT));
    nx_dtype_t d;
    assert_true(nx_dtype_parse_any("bf16", &d));
    assert_int_equal(d, NX_DT_BF16);
    assert_true(nx_dtype_parse("BF16", &d));
    assert_false(nx_dtype_parse_any("Q4_2", NULL));
    assert_false(nx_dtype_parse_any(NULL, NULL));
}

/* Every block type's size rule: a [3, 2 blocks] tensor is 6 blocks of its bytes. */
static void test_block_sizes_round_trip(void **state)
{
    nx_st_tensor_spec_t specs[BLOCK_TYPES];
    uint8_t *data[BLOCK_TYPES];
    char names[BLOCK_TYPES][16];
    for (size_t i = 0; i < BLOCK_TYPES; i++) {
        uint64_t bytes = 6ull * ggml_blocks[i].bytes;
        data[i] = malloc(bytes);
        for (uint64_t k = 0; k < bytes; k++)
            data[i][k] = (uint8_t)(k * 7 + i);
        snprintf(names[i], sizeof names[i], "t.%s", ggml_blocks[i].name);
        specs[i] = (nx_st_tensor_spec_t){.name = names[i], .dtype = ggml_blocks[i].dtype,
                                         .ndim = 2, .shape = {3, 2ull * ggml_blocks[i].elems},
                                         .data = data[i]};
    }
    const char *path = path_in("blocks.gguf");
    save_ok(path, NULL, 0, specs, BLOCK_TYPES, NULL);
    nx_st_t *st = open_ok(path);
    const nx_st_file_t *file = nx_st_file_at(st, 0);
    assert_int_equal(nx_st_tensor_count(st), BLOCK_TYPES);
    uint64_t expect_begin = 0;
    for (size_t i = 0; i < BLOCK_TYPES; i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i); /* written in order: storage order */
        assert_string_equal(t->name, names[i]);
        assert_int_equal(t->dtype, ggml_blocks[i].dtype);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->shape[0], 3);
        assert_int_equal(t->shape[1], 2ull * ggml_blocks[i].elems);
        assert_int_equal(t->bytes, 6ull * ggml_blocks[i].bytes);
        assert_int_equal(t->begin, expect_begin);
        expect_begin = (t->begin + t->bytes + 31) / 32 * 32;
        uint8_t back[6 * 292];
        read_at(path, file->data_offset + t->begin, back, t->bytes);
        assert_memory_equal(back, data[i], t->bytes);
        free(data[i]);
    }
    assert_int_equal(file->data_bytes, expect_begin); /* the last tensor padded to 32 too */
    nx_st_destroy(&st);
}

/* ------------------------------------------------------------------------------------------
 * Key/values
 */

static void test_kv_round_trip(void **state)
{
    static const uint8_t u8s[] = {0, 1, 255};
    static const int8_t i8s[] = {-128, 0, 127};
    static const uint16_t u16s[] = {0, 65535};
    static const int16_t i16s[] = {-32768, 32767};
    static const uint32_t u32s[] = {0, 4294967295u, 7};
    static const int32_t i32s[] = {INT32_MIN, -1, INT32_MAX};
    static const float f32s[] = {1.5f, -0.0f, 3.4e38f, 1e-45f};
    static const uint8_t bools[] = {1, 0, 1};
    static const uint64_t u64s[] = {0, UINT64_MAX};
    static const int64_t i64s[] = {INT64_MIN, INT64_MAX};
    static const double f64s[] = {0.1, -2.5e300};
    static const char *const strs[] = {"hello", "", "\xc4\xa0world", "tab\there"};
    const nx_gguf_kv_spec_t kvs[] = {
        {.key = "general.architecture", .type = NX_GGUF_STRING, .value.str = "qwen3"},
        {.key = "s.u8", .type = NX_GGUF_U8, .value.u = 200},
        {.key = "s.i8", .type = NX_GGUF_I8, .value.i = -100},
        {.key = "s.u16", .type = NX_GGUF_U16, .value.u = 60000},
        {.key = "s.i16", .type = NX_GGUF_I16, .value.i = -30000},
        {.key = "s.u32", .type = NX_GGUF_U32, .value.u = 4000000000u},
        {.key = "s.i32", .type = NX_GGUF_I32, .value.i = -2000000000},
        {.key = "s.f32", .type = NX_GGUF_F32, .value.f = 0.25},
        {.key = "s.bool", .type = NX_GGUF_BOOL, .value.b = true},
        {.key = "s.u64", .type = NX_GGUF_U64, .value.u = UINT64_MAX},
        {.key = "s.i64", .type = NX_GGUF_I64, .value.i = INT64_MIN},
        {.key = "s.f64", .type = NX_GGUF_F64, .value.f = 1e-300},
        {.key = "a.u8", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_U8, .count = 3, .array = u8s},
        {.key = "a.i8", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_I8, .count = 3, .array = i8s},
        {.key = "a.u16", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_U16, .count = 2, .array = u16s},
        {.key = "a.i16", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_I16, .count = 2, .array = i16s},
        {.key = "a.u32", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_U32, .count = 3, .array = u32s},
        {.key = "a.i32", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_I32, .count = 3, .array = i32s},
        {.key = "a.f32", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_F32, .count = 4, .array = f32s},
        {.key = "a.bool", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_BOOL, .count = 3,
         .array = bools},
        {.key = "a.u64", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_U64, .count = 2, .array = u64s},
        {.key = "a.i64", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_I64, .count = 2, .array = i64s},
        {.key = "a.f64", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_F64, .count = 2, .array = f64s},
        {.key = "a.str", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_STRING, .count = 4,
         .array = strs},
        {.key = "a.empty", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_I32, .count = 0},
    };
    const size_t n = sizeof kvs / sizeof kvs[0];
    const char *path = path_in("kv.gguf");
    save_ok(path, kvs, n, NULL, 0, NULL);
    nx_st_t *st = open_ok(path);
    assert_true(nx_st_is_gguf(st));
    assert_int_equal(nx_st_gguf_version(st), 3);
    assert_int_equal(nx_st_gguf_alignment(st), 32);
    assert_int_equal(nx_st_gguf_kv_count(st), n + 3); /* + alignment, digest, pad */
    assert_string_equal(nx_gguf_kv_key(nx_st_gguf_kv_at(st, 0)), "general.alignment");
    assert_string_equal(nx_gguf_kv_key(nx_st_gguf_kv_at(st, n + 1)), NX_ST_DIGEST_KEY);
    assert_string_equal(nx_gguf_kv_key(nx_st_gguf_kv_at(st, n + 2)), "nexus.pad");
    assert_null(nx_st_gguf_kv_at(st, n + 3));
    for (size_t i = 0; i < n; i++) {
        const nx_gguf_kv_t *kv = nx_st_gguf_kv_at(st, i + 1); /* file order */
        assert_ptr_equal(nx_st_gguf_find(st, kvs[i].key), kv);
        assert_string_equal(nx_gguf_kv_key(kv), kvs[i].key);
        assert_int_equal(nx_gguf_kv_type(kv), kvs[i].type);
        if (kvs[i].type == NX_GGUF_ARRAY) {
            assert_int_equal(nx_gguf_kv_elem_type(kv), kvs[i].elem_type);
            assert_int_equal(nx_gguf_kv_count(kv), kvs[i].count);
        } else {
            assert_int_equal(nx_gguf_kv_elem_type(kv), kvs[i].type);
            assert_int_equal(nx_gguf_kv_count(kv), 1);
            assert_null(nx_gguf_kv_array_data(kv));
        }
    }
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    size_t len;
    /* scalars, and the conversion rules */
    assert_string_equal(nx_st_metadata(st, 0, "general.architecture"), "qwen3");
    assert_null(nx_st_metadata(st, 0, "s.u8")); /* strings only */
    assert_true(nx_gguf_get_u64(nx_st_gguf_find(st, "s.u8"), 0, &u) && u == 200);
    assert_true(nx_gguf_get_i64(nx_st_gguf_find(st, "s.i8"), 0, &i) && i == -100);
    assert_false(nx_gguf_get_u64(nx_st_gguf_find(st, "s.i8"), 0, &u)); /* negative */
    assert_true(nx_gguf_get_u64(nx_st_gguf_find(st, "s.u16"), 0, &u) && u == 60000);
    assert_true(nx_gguf_get_i64(nx_st_gguf_find(st, "s.i16"), 0, &i) && i == -30000);
    assert_true(nx_gguf_get_u64(nx_st_gguf_find(st, "s.u32"), 0, &u) && u == 4000000000u);
    assert_true(nx_gguf_get_i64(nx_st_gguf_find(st, "s.i32"), 0, &i) && i == -2000000000);
    assert_true(nx_gguf_get_f64(nx_st_gguf_find(st, "s.f32"), 0, &f) && f == 0.25);
    assert_false(nx_gguf_get_u64(nx_st_gguf_find(st, "s.f32"), 0, &u)); /* floats: no */
    assert_true(nx_gguf_get_bool(nx_st_gguf_find(st, "s.bool"), 0, &b) && b);
    assert_true(nx_gguf_get_u64(nx_st_gguf_find(st, "s.bool"), 0, &u) && u == 1);
    assert_false(nx_gguf_get_f64(nx_st_gguf_find(st, "s.bool"), 0, &f));
    assert_false(nx_gguf_get_bool(nx_st_gguf_find(st, "s.u8"), 0, &b));
    assert_true(nx_gguf_get_u64(nx_st_gguf_find(st, "s.u64"), 0, &u) && u == UINT64_MAX);
    assert_false(nx_gguf_get_i64(nx_st_gguf_find(st, "s.u64"), 0, &i)); /* out of range */
    assert_false(nx_gguf_get_f64(nx_st_gguf_find(st, "s.u64"), 0, &f)); /* not exact */
    assert_true(nx_gguf_get_i64(nx_st_gguf_find(st, "s.i64"), 0, &i) && i == INT64_MIN);
    assert_true(nx_gguf_get_f64(nx_st_gguf_find(st, "s.i64"), 0, &f) && f == -9223372036854775808.0);
    assert_true(nx_gguf_get_f64(nx_st_gguf_find(st, "s.f64"), 0, &f) && f == 1e-300);
    assert_true(nx_gguf_get_f64(nx_st_gguf_find(st, "s.u32"), 0, &f) && f == 4000000000.0);
    assert_null(nx_gguf_get_str(nx_st_gguf_find(st, "s.u32"), 0, NULL));
    assert_string_equal(nx_gguf_get_str(nx_st_gguf_find(st, "general.architecture"), 0, &len),
                        "qwen3");
    assert_int_equal(len, 5);
    assert_false(nx_gguf_get_u64(nx_st_gguf_find(st, "s.u8"), 1, &u)); /* past a scalar */
    /* arrays: element access and the packed fast path */
    const struct {
        const char *key;
        const void *values;
        size_t bytes;
    } packed[] = {
        {"a.u8", u8s, sizeof u8s},   {"a.i8", i8s, sizeof i8s},     {"a.u16", u16s, sizeof u16s},
        {"a.i16", i16s, sizeof i16s}, {"a.u32", u32s, sizeof u32s}, {"a.i32", i32s, sizeof i32s},
        {"a.f32", f32s, sizeof f32s}, {"a.bool", bools, sizeof bools},
        {"a.u64", u64s, sizeof u64s}, {"a.i64", i64s, sizeof i64s}, {"a.f64", f64s, sizeof f64s},
    };
    for (size_t k = 0; k < sizeof packed / sizeof packed[0]; k++) {
        const void *data = nx_gguf_kv_array_data(nx_st_gguf_find(st, packed[k].key));
        assert_non_null(data);
        assert_memory_equal(data, packed[k].values, packed[k].bytes);
    }
    const nx_gguf_kv_t *kv = nx_st_gguf_find(st, "a.i32");
    assert_true(nx_gguf_get_i64(kv, 0, &i) && i == INT32_MIN);
    assert_true(nx_gguf_get_i64(kv, 2, &i) && i == INT32_MAX);
    assert_false(nx_gguf_get_i64(kv, 3, &i));
    kv = nx_st_gguf_find(st, "a.f32");
    assert_true(nx_gguf_get_f64(kv, 2, &f) && f == (double)3.4e38f);
    assert_true(nx_gguf_get_f64(kv, 1, &f) && f == 0 && signbit(f));
    kv = nx_st_gguf_find(st, "a.bool");
    assert_true(nx_gguf_get_bool(kv, 1, &b) && !b);
    kv = nx_st_gguf_find(st, "a.str");
    assert_null(nx_gguf_kv_array_data(kv));
    for (size_t k = 0; k < 4; k++) {
        assert_string_equal(nx_gguf_get_str(kv, k, &len), strs[k]);
        assert_int_equal(len, strlen(strs[k]));
    }
    assert_null(nx_gguf_get_str(kv, 4, &len));
    assert_int_equal(nx_gguf_kv_count(nx_st_gguf_find(st, "a.empty")), 0);
    assert_null(nx_st_gguf_find(st, "missing"));
    assert_null(nx_st_gguf_find(st, NULL));
    assert_non_null(nx_st_file_at(st, 0)->digest);
    size_t checked = 0;
    nx_err_t err = {0};
    assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_OK);
    assert_int_equal(checked, 1);
    assert_int_equal(nx_st_tensor_count(st), 0);
    assert_int_equal(nx_st_file_at(st, 0)->data_offset % NX_ST_ALIGN, 0);
    nx_st_destroy(&st);
    assert_string_equal(nx_gguf_type_name(NX_GGUF_STRING), "str");
    assert_string_equal(nx_gguf_type_name(NX_GGUF__COUNT), "?");
}

/* Strings may hold NUL bytes and any bytes; the length is what counts. */
static void test_kv_strings_with_nuls(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 2);
    gb_key(&b, "k.nul", 8);
    gb_strn(&b, "a\0b", 3);
    gb_key(&b, "k.arr", 9);
    gb_u32(&b, 8);
    gb_u64(&b, 2);
    gb_strn(&b, "\xff\xfe", 2);
    gb_strn(&b, "x\0", 2);
    const char *path = path_in("nul.gguf");
    assert_int_equal(gb_write(&b, path), 0);
    gb_free(&b);
    nx_st_t *st = open_ok(path);
    size_t len;
    const char *s = nx_gguf_get_str(nx_st_gguf_find(st, "k.nul"), 0, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 4); /* and NUL-terminated after its length */
    const nx_gguf_kv_t *kv = nx_st_gguf_find(st, "k.arr");
    assert_memory_equal(nx_gguf_get_str(kv, 0, &len), "\xff\xfe", 3);
    assert_int_equal(len, 2);
    assert_memory_equal(nx_gguf_get_str(kv, 1, &len), "x\0", 3);
    assert_int_equal(len, 2);
    assert_null(nx_st_file_at(st, 0)->digest);
    size_t checked = 9;
    assert_int_equal(nx_st_verify_digest(st, &checked, NULL), NX_OK);
    assert_int_equal(checked, 0); /* no digest: nothing to check */
    nx_st_destroy(&st);
}

/* A big vocabulary: 150k tokens and merges, ~14 MB of header, more than one read window. */
static void test_big_string_arrays(void **state)
{
    enum { TOKENS = 151936 };
    const char **tokens = malloc(TOKENS * sizeof *tokens);
    char *text = malloc(TOKENS * 48);
    int32_t *types = malloc(TOKENS * sizeof *types);
    for (int i = 0; i < TOKENS; i++) {
        tokens[i] = text + i * 48;
        snprintf(text + i * 48, 48, "token %d, long enough to pass 8 MiB %d", i, i * 7);
        types[i] = i % 7;
    }
    const nx_gguf_kv_spec_t kvs[] = {
        {.key = "tokenizer.ggml.tokens", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_STRING,
         .count = TOKENS, .array = tokens},
        {.key = "tokenizer.ggml.merges", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_STRING,
         .count = TOKENS, .array = tokens},
        {.key = "tokenizer.ggml.token_type", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_I32,
         .count = TOKENS, .array = types},
    };
    const char *path = path_in("vocab.gguf");
    save_ok(path, kvs, 3, NULL, 0, NULL);
    nx_st_t *st = open_ok(path);
    const nx_gguf_kv_t *kv = nx_st_gguf_find(st, "tokenizer.ggml.merges");
    assert_int_equal(nx_gguf_kv_count(kv), TOKENS);
    size_t len;
    for (int i = 0; i < TOKENS; i += 997) {
        assert_string_equal(nx_gguf_get_str(kv, (uint64_t)i, &len), tokens[i]);
        assert_int_equal(len, strlen(tokens[i]));
    }
    assert_memory_equal(nx_gguf_kv_array_data(nx_st_gguf_find(st, "tokenizer.ggml.token_type")),
                        types, TOKENS * sizeof *types);
    nx_st_destroy(&st);
    free(tokens);
    free(text);
    free(types);
}

/* ------------------------------------------------------------------------------------------
 * Tensors through the loader
 */

static int fill_pattern(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                        size_t len, nx_err_t *err)
{
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)dst)[i] = (uint8_t)((offset + i) * 13 + strlen(spec->name));
    return NX_OK;
}

static uint8_t pattern_at(const char *name, uint64_t i)
{
    return (uint8_t)(i * 13 + strlen(name));
}

static void check_loaded(const nx_model_t *m, const char *name, const void *data,
                         uint64_t bytes)
{
    const nx_model_tensor_t *t = nx_model_find(m, name);
    assert_non_null(t);
    assert_int_equal(t->bytes, bytes);
    if (data) {
        assert_memory_equal(t->ptr, data, bytes);
        return;
    }
    for (uint64_t i = 0; i < bytes; i++)
        if (((uint8_t *)t->ptr)[i] != pattern_at(name, i))
            fail_msg("tensor '%s' byte %llu", name, (unsigned long long)i);
}

static void test_load_through_pipeline(void **state)
{
    static float f32[5][7];
    static uint16_t f16[64], bf16[3][2][8];
    static uint8_t q8[4 * 3 * 34];
    static int32_t i32[3];
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 7; c++)
            f32[r][c] = (float)(r * 7 + c) / 8;
    for (int k = 0; k < 64; k++)
        f16[k] = (uint16_t)(0x3c00 + k);
    for (int k = 0; k < 48; k++)
        ((uint16_t *)bf16)[k] = (uint16_t)(0x3f80 + k);
    for (size_t k = 0; k < sizeof q8; k++)
        q8[k] = (uint8_t)(k * 5);
    i32[0] = -1, i32[1] = 7, i32[2] = 1 << 30;
    const nx_st_tensor_spec_t specs[] = {
        {.name = "w.f32", .dtype = NX_DT_F32, .ndim = 2, .shape = {5, 7}, .data = f32},
        {.name = "v.f16", .dtype = NX_DT_F16, .ndim = 1, .shape = {64}, .data = f16},
        {.name = "bf", .dtype = NX_DT_BF16, .ndim = 3, .shape = {3, 2, 8}, .data = bf16},
        {.name = "q8", .dtype = NX_DT_Q8_0, .ndim = 4, .shape = {2, 2, 3, 32}, .data = q8},
        {.name = "ids", .dtype = NX_DT_I32, .ndim = 1, .shape = {3}, .data = i32},
        /* streamed through fill: ~3 MiB, more than one fill buffer chunk of the test loader */
        {.name = "big.q4k", .dtype = NX_DT_Q4_K, .ndim = 2, .shape = {1000, 5 * 256}},
    };
    const size_t n = sizeof specs / sizeof specs[0];
    const char *path = path_in("model.gguf");
    nx_st_save_opts_t opts = {.fill = fill_pattern};
    save_ok(path, NULL, 0, specs, n, &opts);

    nx_st_t *st = open_ok(path);
    const nx_st_file_t *file = nx_st_file_at(st, 0);
    assert_int_equal(file->data_offset % NX_ST_ALIGN, 0);
    assert_int_equal(file->data_offset + file->data_bytes, file->file_bytes);
    assert_true(file->header_bytes <= file->data_offset);
    const nx_st_tensor_t *q4k = nx_st_find(st, "big.q4k");
    assert_int_equal(q4k->bytes, 1000ull * 5 * 144);
    assert_int_equal(nx_st_find(st, "q8")->shape[3], 32);
    assert_int_equal(nx_st_find(st, "q8")->bytes, sizeof q8);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(nx_st_tensor_at(st, i)->begin % 32, 0);
    nx_st_destroy(&st);

    nx_err_t err = {0};
    nx_pool_opts_t po = {.device = NX_DEVICE_CPU, .bytes = 64 * MiB};
    nx_pool_t *pool = nx_pool_new(&po, &err);
    assert_non_null(pool);
    const nx_read_mode_t modes[] = {NX_READ_AUTO, NX_READ_DIRECT, NX_READ_BUFFERED};
    for (int mode = 0; mode < 3; mode++) {
        nx_loader_opts_t lo = {.threads = 3, .chunk_bytes = 256 * 1024, .read_mode = modes[mode]};
        nx_loader_t *ld = nx_loader_new(pool, &lo, &err);
        assert_non_null(ld);
        nx_load_stats_t stats;
        nx_model_t *m = nx_loader_load(ld, path, NULL, &stats, &err);
        if (!m)
            fail_msg("load: %s", err.msg);
        assert_int_equal(nx_model_tensor_count(m), n);
        for (size_t i = 0; i < n; i++) {
            const nx_model_tensor_t *t = nx_model_find(m, specs[i].name);
            assert_int_equal(t->dtype, specs[i].dtype);
            assert_int_equal(t->ndim, specs[i].ndim);
            assert_memory_equal(t->shape, specs[i].shape, specs[i].ndim * sizeof t->shape[0]);
        }
        check_loaded(m, "w.f32", f32, sizeof f32);
        check_loaded(m, "v.f16", f16, sizeof f16);
        check_loaded(m, "bf", bf16, sizeof bf16);
        check_loaded(m, "q8", q8, sizeof q8);
        check_loaded(m, "ids", i32, sizeof i32);
        check_loaded(m, "big.q4k", NULL, 1000ull * 5 * 144);
        if (nx_model_check(pool, m, &err) != NX_OK)
            fail_msg("check: %s", err.msg);
        assert_true(nx_st_is_gguf(nx_model_checkpoint(m)));
        nx_loader_unload(ld, &m, false);
        nx_loader_destroy(&ld);
    }
    nx_pool_destroy(&pool);
}

/* A file as other writers lay it out: general.alignment 64, tensor infos out of offset order,
 * extra padding between tensors, the data section not 4 KiB aligned. */
static void test_foreign_layout_loads(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 3, 2);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_u32(&b, "general.alignment", 64);
    const uint64_t ne_a[] = {32, 3}; /* Q8_0: 3 rows of one block = 102 bytes */
    const uint64_t ne_b[] = {10};    /* F32: 40 bytes */
    const uint64_t ne_c[] = {4, 1, 2}; /* F16: 16 bytes */
    gb_tensor(&b, "late", 1, ne_b, GGML_F32, 256);
    gb_tensor(&b, "early", 2, ne_a, GGML_Q8_0, 0);
    gb_tensor(&b, "mid", 3, ne_c, GGML_F16, 128);
    gb_pad(&b, 64);
    uint64_t data_offset = b.len;
    gb_pattern(&b, 102, 1);
    gb_zeros(&b, 128 - 102);
    gb_pattern(&b, 16, 2);
    gb_zeros(&b, 256 - 128 - 16);
    gb_pattern(&b, 40, 3);
    gb_zeros(&b, 24); /* trailing padding */
    const char *path = path_in("foreign.gguf");
    assert_int_equal(gb_write(&b, path), 0);

    nx_st_t *st = open_ok(path);
    assert_int_equal(nx_st_gguf_alignment(st), 64);
    const nx_st_file_t *file = nx_st_file_at(st, 0);
    assert_int_equal(file->data_offset, data_offset);
    assert_int_equal(file->data_bytes, b.len - data_offset);
    assert_int_equal(nx_st_data_bytes(st), b.len - data_offset);
    /* storage order is by offset */
    assert_string_equal(nx_st_tensor_at(st, 0)->name, "early");
    assert_string_equal(nx_st_tensor_at(st, 1)->name, "mid");
    assert_string_equal(nx_st_tensor_at(st, 2)->name, "late");
    const nx_st_tensor_t *mid = nx_st_find(st, "mid");
    assert_int_equal(mid->ndim, 3);
    assert_int_equal(mid->shape[0], 2); /* ne reversed */
    assert_int_equal(mid->shape[1], 1);
    assert_int_equal(mid->shape[2], 4);
    assert_int_equal(mid->begin, 128);
    assert_int_equal(mid->bytes, 16);
    const nx_st_tensor_t *early = nx_st_find(st, "early");
    assert_int_equal(early->shape[0], 3);
    assert_int_equal(early->shape[1], 32);
    assert_int_equal(early->bytes, 102);
    assert_string_equal(nx_st_metadata(st, 0, "general.architecture"), "llama");
    assert_null(nx_st_metadata(st, 0, "general.alignment"));
    assert_null(nx_st_metadata(st, 1, "general.architecture"));
    nx_st_destroy(&st);

    nx_err_t err = {0};
    nx_pool_opts_t po = {.device = NX_DEVICE_CPU, .bytes = 8 * MiB};
    nx_pool_t *pool = nx_pool_new(&po, &err);
    nx_loader_t *ld = nx_loader_new(pool, NULL, &err);
    nx_model_t *m = nx_loader_load(ld, path, NULL, NULL, &err);
    if (!m)
        fail_msg("load: %s", err.msg);
    assert_memory_equal(nx_model_find(m, "early")->ptr, b.data + data_offset, 102);
    assert_memory_equal(nx_model_find(m, "mid")->ptr, b.data + data_offset + 128, 16);
    assert_memory_equal(nx_model_find(m, "late")->ptr, b.data + data_offset + 256, 40);
    assert_int_equal(nx_model_check(pool, m, &err), NX_OK);
    nx_loader_unload(ld, &m, false);
    nx_loader_destroy(&ld);
    nx_pool_destroy(&pool);
    gb_free(&b);
}

/* v2 has the same layout as v3 (v3 only added big-endian files); no kvs, no alignment key. */
static void test_v2_and_defaults(void **state)
{
    gb_t b = {0};
    gb_header(&b, 2, 1, 0);
    const uint64_t ne[] = {8};
    gb_tensor(&b, "x", 1, ne, GGML_F32, 0);
    gb_pad(&b, 32);
    gb_pattern(&b, 32, 5);
    const char *path = path_in("v2.model"); /* found by its magic, not its name */
    assert_int_equal(gb_write(&b, path), 0);
    gb_free(&b);
    nx_st_t *st = open_ok(path);
    assert_int_equal(nx_st_gguf_version(st), 2);
    assert_int_equal(nx_st_gguf_alignment(st), 32);
    assert_int_equal(nx_st_gguf_kv_count(st), 0);
    assert_int_equal(nx_st_find(st, "x")->bytes, 32);
    assert_int_equal(nx_st_file_at(st, 0)->data_offset % 32, 0);
    nx_st_destroy(&st);
}

/* ------------------------------------------------------------------------------------------
 * Digests
 */

static void test_digest_verify_and_flip(void **state)
{
    static float a[100], c[9];
    for (int i = 0; i < 100; i++)
        a[i] = (float)i;
    const nx_st_tensor_spec_t specs[] = {
        {.name = "a", .dtype = NX_DT_F32, .ndim = 1, .shape = {100}, .data = a},
        {.name = "c", .dtype = NX_DT_F32, .ndim = 1, .shape = {9}, .data = c},
    };
    const nx_gguf_kv_spec_t kv = {.key = "general.name", .type = NX_GGUF_STRING,
                                  .value.str = "digest test"};
    const char *path = path_in("d.gguf");
    save_ok(path, &kv, 1, specs, 2, NULL);
    nx_st_t *st = open_ok(path);
    const nx_st_file_t *file = nx_st_file_at(st, 0);
    assert_non_null(file->digest);
    assert_ptr_equal(file->digest, nx_st_metadata(st, 0, NX_ST_DIGEST_KEY));
    assert_int_equal(strlen(file->digest), 24);
    assert_memory_equal(file->digest, "xxh3-64:", 8);
    size_t checked = 0;
    nx_err_t err = {0};
    assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_OK);
    assert_int_equal(checked, 1);
    uint64_t in_tensor = file->data_offset + 4 * 37;
    uint64_t in_padding = file->data_offset + 400 + 5; /* between a (400 bytes) and c (at 416) */
    nx_st_destroy(&st);

    const uint64_t flips[] = {in_tensor, in_padding};
    for (int k = 0; k < 2; k++) {
        flip_byte(path, flips[k]);
        st = open_ok(path); /* still a valid file */
        assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_EDIGEST);
        assert_non_null(strstr(err.msg, "d.gguf"));
        assert_non_null(strstr(err.msg, "key 'nexus.digest' records xxh3-64:"));
        assert_int_equal(checked, 0);
        nx_st_destroy(&st);
        flip_byte(path, flips[k]); /* back */
        st = open_ok(path);
        assert_int_equal(nx_st_verify_digest(st, &checked, &err), NX_OK);
        nx_st_destroy(&st);
    }
}

/* ------------------------------------------------------------------------------------------
 * The writer's validation and atomicity
 */

static void expect_save_fails(const nx_gguf_kv_spec_t *kvs, size_t kv_count,
                              const nx_st_tensor_spec_t *tensors, size_t count,
                              const nx_st_save_opts_t *opts, int code, const char *want)
{
    const char *path = path_in("bad-save.gguf");
    nx_err_t err = {0};
    int rc = nx_gguf_save(path, kvs, kv_count, tensors, count, opts, &err);
    if (rc != code || !strstr(err.msg, want))
        fail_msg("got %s '%s', expected %s with '%s'", nx_errname(rc), err.msg, nx_errname(code),
                 want);
    assert_int_not_equal(access(path, F_OK), 0);
}

static int fill_fails(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                      size_t len, nx_err_t *err)
{
    return nx_err_set(err, NX_EIO, "the source went away");
}

static void test_save_validation(void **state)
{
    float x[64] = {0};
    nx_st_tensor_spec_t t[2] = {
        {.name = "a", .dtype = NX_DT_F32, .ndim = 1, .shape = {4}, .data = x},
        {.name = "b", .dtype = NX_DT_F32, .ndim = 1, .shape = {4}, .data = x},
    };
    nx_gguf_kv_spec_t kv[2] = {
        {.key = "k1", .type = NX_GGUF_U32, .value.u = 1},
        {.key = "k2", .type = NX_GGUF_U32, .value.u = 2},
    };
    t[1].name = "a";
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "tensor 'a' is given twice");
    t[1].name = "";
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "tensor #1 has an empty name");
    t[1].name = "a.name.longer.than.sixty.three.bytes.which.llama.cpp.would.not.take";
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "llama.cpp takes at most 63");
    t[1].name = "b";
    t[1].ndim = 0;
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "tensor 'b': 0 dimensions");
    t[1].ndim = 5;
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "tensor 'b': 5 dimensions");
    t[1].ndim = 2;
    t[1].shape[1] = 0;
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "has dimension 1 of 0");
    t[1].shape[1] = 4;
    t[1].dtype = NX_DT_U8;
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "tensor 'b': dtype U8 has no GGUF type");
    t[1].dtype = NX_DT_Q4_0;
    t[1].shape[1] = 48;
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "not a multiple of Q4_0's block (32");
    t[1] = (nx_st_tensor_spec_t){.name = "b", .dtype = NX_DT_F32, .ndim = 1, .shape = {4}};
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "tensor 'b' has no data and no fill");
    t[1].data = x;
    t[1].shape[0] = 1ull << 62;
    expect_save_fails(NULL, 0, t, 2, NULL, NX_EINVAL, "overflows");
    t[1].shape[0] = 4;

    kv[1].key = "k1";
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'k1' is given twice");
    kv[1].key = "general.alignment";
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'general.alignment' is written by");
    kv[1].key = NX_ST_DIGEST_KEY;
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'nexus.digest' is written by");
    kv[1].key = "";
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key/value #1 has no key");
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF_U8, .value.u = 256};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'k2': value does not fit u8");
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF_I16, .value.i = -40000};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'k2': value does not fit i16");
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF__COUNT};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'k2': value type 13");
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF_STRING};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "key 'k2': string value is NULL");
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_ARRAY,
                                .count = 1, .array = x};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "do not nest");
    kv[1].elem_type = NX_GGUF_U32;
    kv[1].array = NULL;
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "1 array elements but no array");
    const uint8_t bad_bools[] = {0, 2};
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_BOOL,
                                .count = 2, .array = bad_bools};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "bool element 1 is 2");
    const char *strs[] = {"x", NULL};
    kv[1] = (nx_gguf_kv_spec_t){.key = "k2", .type = NX_GGUF_ARRAY, .elem_type = NX_GGUF_STRING,
                                .count = 2, .array = strs};
    expect_save_fails(kv, 2, t, 2, NULL, NX_EINVAL, "string element 1 is NULL");

    const char *meta_key = "x", *meta_value = "y";
    nx_st_save_opts_t meta = {.meta_keys = &meta_key, .meta_values = &meta_value,
                              .meta_count = 1};
    expect_save_fails(kv, 1, t, 2, &meta, NX_EINVAL, "give GGUF key/values in kvs");
    nx_err_t err = {0};
    assert_int_equal(nx_gguf_save(NULL, NULL, 0, NULL, 0, NULL, &err), NX_EINVAL);
}

/* A failed save leaves what was at the path (and no temporary file) behind. */
static void test_save_is_atomic(void **state)
{
    float x[4] = {1, 2, 3, 4};
    nx_st_tensor_spec_t t[2] = {
        {.name = "a", .dtype = NX_DT_F32, .ndim = 1, .shape = {4}, .data = x},
        {.name = "b", .dtype = NX_DT_F32, .ndim = 1, .shape = {1 << 20}},
    };
    const char *path = path_in("keep.gguf");
    save_ok(path, NULL, 0, t, 1, NULL);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    nx_st_save_opts_t opts = {.fill = fill_fails};
    nx_err_t err = {0};
    assert_int_equal(nx_gguf_save(path, NULL, 0, t, 2, &opts, &err), NX_EIO);
    assert_non_null(strstr(err.msg, "filling tensor 'b' at byte 0: the source went away"));
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(before.st_size, after.st_size);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -q tmp", tmpdir);
    assert_int_not_equal(system(cmd), 0); /* no temporary file left */
    nx_st_t *st = open_ok(path);
    assert_int_equal(nx_st_tensor_count(st), 1);
    nx_st_destroy(&st);
}

/* Safetensors checkpoints answer the GGUF accessors with nothing. */
static void test_safetensors_has_no_gguf(void **state)
{
    float x[2] = {1, 2};
    const nx_st_tensor_spec_t t = {.name = "a", .dtype = NX_DT_F32, .ndim = 1, .shape = {2},
                                   .data = x};
    const char *path = path_in("m.safetensors");
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, &t, 1, NULL, &err), NX_OK);
    nx_st_t *st = open_ok(path);
    assert_false(nx_st_is_gguf(st));
    assert_int_equal(nx_st_gguf_version(st), 0);
    assert_int_equal(nx_st_gguf_alignment(st), 0);
    assert_int_equal(nx_st_gguf_kv_count(st), 0);
    assert_null(nx_st_gguf_kv_at(st, 0));
    assert_null(nx_st_gguf_find(st, "general.architecture"));
    assert_non_null(nx_st_metadata(st, 0, NX_ST_DIGEST_KEY));
    nx_st_destroy(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test_setup_teardown(test_block_sizes_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_strings_with_nuls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_string_arrays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_through_pipeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_layout_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_and_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_verify_and_flip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_is_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_safetensors_has_no_gguf, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
