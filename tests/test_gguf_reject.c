/* test_gguf_reject.c — every rejection rule of the GGUF reader, one test each, on files built
 * byte by byte (tests/gguf_build.h): the code is NX_EFORMAT and the message names the file, the
 * key or tensor, and the problem. Each file is checked through nx_st_open and through
 * nx__gguf_from_buffer (the fuzz target's entry), which must agree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "gguf_build.h"
#include "st_internal.h"

static char tmpdir[64];

static int setup(void **state)
{
    strcpy(tmpdir, "/tmp/nx_gguf_reject_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char path[128];
    snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

/* The file must be refused with a message holding want1 and want2 (may be NULL). */
static void expect_reject(gb_t *b, const char *want1, const char *want2)
{
    char path[128];
    snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
    assert_int_equal(gb_write(b, path), 0);
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(path, &err);
    if (st || err.code != NX_EFORMAT || !strstr(err.msg, "bad.gguf") || !strstr(err.msg, want1) ||
        (want2 && !strstr(err.msg, want2)))
        fail_msg("got %s '%s', expected EFORMAT with '%s' and '%s'", nx_errname(err.code),
                 err.msg, want1, want2 ? want2 : "");
    nx_err_t mem_err = {0};
    st = nx__gguf_from_buffer("mem.gguf", b->data, b->len, &mem_err);
    assert_null(st);
    if (!strstr(mem_err.msg, want1) || (want2 && !strstr(mem_err.msg, want2)))
        fail_msg("from memory: '%s', expected '%s'", mem_err.msg, want1);
    gb_free(b);
}

/* A valid file with one F32 tensor "w" of ne [8, 2] after `kvs` extra key/values (appended by
 * the caller through the callback-free helpers below). */
static void one_tensor_file(gb_t *b, uint32_t ggml_type, uint32_t ndim, const uint64_t *ne,
                            uint64_t offset, size_t data_bytes)
{
    gb_header(b, 3, 1, 1);
    gb_kv_str(b, "general.name", "t");
    gb_tensor(b, "w", ndim, ne, ggml_type, offset);
    gb_pad(b, 32);
    gb_pattern(b, data_bytes, 1);
}

static void test_valid_baseline(void **state)
{
    /* the helpers above make a file the reader takes; each test below breaks one thing */
    gb_t b = {0};
    const uint64_t ne[] = {8, 2};
    one_tensor_file(&b, GGML_F32, 2, ne, 0, 64);
    nx_err_t err = {0};
    nx_st_t *st = nx__gguf_from_buffer("ok.gguf", b.data, b.len, &err);
    if (!st)
        fail_msg("%s", err.msg);
    assert_int_equal(nx_st_find(st, "w")->bytes, 64);
    nx_st_destroy(&st);
    gb_free(&b);
}

static void test_bad_magic(void **state)
{
    gb_t b = {0};
    gb_raw(&b, "GGUX", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 0);
    expect_reject(&b, "not a GGUF file: the magic is 'GGUX'", NULL);
}

static void test_version_1(void **state)
{
    gb_t b = {0};
    gb_header(&b, 1, 0, 0);
    expect_reject(&b, "GGUF v1 is not supported", NULL);
}

static void test_version_unknown(void **state)
{
    gb_t b = {0};
    gb_header(&b, 4, 0, 0);
    expect_reject(&b, "GGUF version 4 is not supported", NULL);
    gb_header(&b, 0, 0, 0);
    expect_reject(&b, "GGUF version 0 is not supported", NULL);
}

static void test_big_endian(void **state)
{
    gb_t b = {0};
    gb_raw(&b, "GGUF", 4);
    gb_raw(&b, "\x00\x00\x00\x03", 4); /* version 3, big-endian */
    gb_raw(&b, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);
    gb_raw(&b, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);
    expect_reject(&b, "0x03000000", "big-endian");
}

static void test_truncated_header(void **state)
{
    gb_t b = {0};
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u32(&b, 0); /* half a tensor count */
    expect_reject(&b, "header: tensor count (8 bytes at offset 8) runs past the end", NULL);
}

static void test_truncated_value(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.file_type", 4);
    gb_raw(&b, "\x01\x00", 2); /* half a u32 */
    expect_reject(&b, "key 'general.file_type': value (4 bytes at offset", "runs past the end");
}

static void test_truncated_tensor_info(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 1, 0);
    gb_str(&b, "weight");
    gb_u32(&b, 2);
    gb_u64(&b, 8); /* one of two dimensions */
    expect_reject(&b, "tensor 'weight': ne (8 bytes at offset 50)", "runs past the end");
}

static void test_kv_count_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1000000);
    gb_kv_str(&b, "a", "b");
    expect_reject(&b, "header: key/value count 1000000 cannot fit", NULL);
}

static void test_tensor_count_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, UINT64_MAX, 0);
    expect_reject(&b, "header: tensor count 18446744073709551615 cannot fit", NULL);
}

static void test_string_length_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.name", 8);
    gb_u64(&b, 1000);
    gb_raw(&b, "short", 5);
    expect_reject(&b, "key 'general.name': string value length 1000 runs past the end", NULL);
}

static void test_key_length_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 1ull << 40);
    gb_raw(&b, "general.name", 12);
    expect_reject(&b, "key #0: key length 1099511627776 is over the limit of 65535", NULL);
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 100);
    gb_raw(&b, "general.name", 12);
    expect_reject(&b, "key #0: key length 100 runs past the end", NULL);
}

static void test_array_count_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "tokenizer.ggml.token_type", 9);
    gb_u32(&b, 5); /* i32 */
    gb_u64(&b, 1ull << 61);
    gb_u32(&b, 1);
    expect_reject(&b, "key 'tokenizer.ggml.token_type': array of 2305843009213693952 i32 runs "
                      "past the end",
                  NULL);
}

static void test_string_array_count_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "tokenizer.ggml.tokens", 9);
    gb_u32(&b, 8);
    gb_u64(&b, 151936);
    gb_str(&b, "a");
    gb_str(&b, "b");
    expect_reject(&b, "key 'tokenizer.ggml.tokens': array of 151936 strings runs past the end",
                  NULL);
}

static void test_unknown_value_type(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "x.y", 13);
    gb_u64(&b, 0);
    expect_reject(&b, "key 'x.y': unknown value type 13", NULL);
}

static void test_unknown_array_type(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "x.y", 9);
    gb_u32(&b, 77);
    gb_u64(&b, 0);
    expect_reject(&b, "key 'x.y': unknown array element type 77", NULL);
}

static void test_nested_array(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "x.y", 9);
    gb_u32(&b, 9);
    gb_u64(&b, 1);
    gb_u32(&b, 4);
    gb_u64(&b, 0);
    expect_reject(&b, "key 'x.y': arrays of arrays are not supported", NULL);
}

static void test_bad_bool(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "x.flag", 7);
    gb_u8(&b, 2);
    expect_reject(&b, "key 'x.flag': bool value 2 (element 0) is neither 0 nor 1", NULL);
}

static void test_empty_key(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "", 4);
    gb_u32(&b, 1);
    expect_reject(&b, "key #0: key is empty", NULL);
}

static void test_key_with_nul(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_strn(&b, "a\0b", 3);
    gb_u32(&b, 4);
    gb_u32(&b, 1);
    expect_reject(&b, "key #0: key holds a NUL byte at 1", NULL);
}

static void test_duplicate_key(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 3);
    gb_kv_str(&b, "general.name", "a");
    gb_kv_u32(&b, "x", 1);
    gb_kv_str(&b, "general.name", "b");
    expect_reject(&b, "key 'general.name' is given twice (key/values #0 and #2)", NULL);
}

static void test_alignment_not_power_of_two(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 48);
    expect_reject(&b, "key 'general.alignment': 48 is not a power of two", NULL);
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 0);
    expect_reject(&b, "key 'general.alignment': 0 is not a power of two", NULL);
}

static void test_alignment_not_u32(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.alignment", 10);
    gb_u64(&b, 32);
    expect_reject(&b, "key 'general.alignment': must be a u32, not u64", NULL);
}

static void test_unknown_tensor_type(void **state)
{
    const uint64_t ne[] = {8, 2};
    const uint32_t ids[] = {4, 31, 40, 1000};
    for (size_t i = 0; i < 4; i++) {
        gb_t b = {0};
        one_tensor_file(&b, ids[i], 2, ne, 0, 64);
        char want[64];
        snprintf(want, sizeof want, "tensor 'w': unknown tensor type (ggml type id %u)", ids[i]);
        expect_reject(&b, want, NULL);
    }
}

static void test_too_many_dims(void **state)
{
    gb_t b = {0};
    const uint64_t ne[] = {8, 1, 1, 1, 2};
    one_tensor_file(&b, GGML_F32, 5, ne, 0, 64);
    expect_reject(&b, "tensor 'w': n_dims is 5 (GGUF allows at most 4 dimensions)", NULL);
}

static void test_zero_dim(void **state)
{
    gb_t b = {0};
    const uint64_t ne[] = {8, 0};
    one_tensor_file(&b, GGML_F32, 2, ne, 0, 64);
    expect_reject(&b, "tensor 'w': ne[1] is 0", NULL);
}

static void test_size_overflow(void **state)
{
    gb_t b = {0};
    const uint64_t ne[] = {1ull << 32, 1ull << 31};
    one_tensor_file(&b, GGML_F32, 2, ne, 0, 64);
    expect_reject(&b, "tensor 'w': shape [2147483648, 4294967296] of F32 overflows", NULL);
    const uint64_t huge[] = {1ull << 63};
    one_tensor_file(&b, GGML_F32, 1, huge, 0, 64);
    expect_reject(&b, "tensor 'w': ne[0] = 9223372036854775808 overflows", NULL);
    const uint64_t big_bytes[] = {1ull << 62}; /* numel fits, bytes do not */
    one_tensor_file(&b, GGML_F32, 1, big_bytes, 0, 64);
    expect_reject(&b, "tensor 'w': shape [4611686018427387904] of F32 overflows", NULL);
}

static void test_row_not_whole_blocks(void **state)
{
    gb_t b = {0};
    const uint64_t ne[] = {48, 2}; /* Q8_0 blocks are 32 */
    one_tensor_file(&b, GGML_Q8_0, 2, ne, 0, 102);
    expect_reject(&b, "tensor 'w': shape [2, 48]: a Q8_0 row (ne[0] = 48) is not a multiple of "
                      "the block (32 elements)",
                  NULL);
    const uint64_t ne_k[] = {128};
    one_tensor_file(&b, GGML_Q4_K, 1, ne_k, 0, 144);
    expect_reject(&b, "a Q4_K row (ne[0] = 128) is not a multiple of the block (256", NULL);
}

static void test_offset_not_aligned(void **state)
{
    gb_t b = {0};
    const uint64_t ne[] = {4};
    one_tensor_file(&b, GGML_F32, 1, ne, 16, 64);
    expect_reject(&b, "tensor 'w': offset 16 is not a multiple of general.alignment (32)", NULL);
}

static void test_offset_outside_data(void **state)
{
    gb_t b = {0};
    const uint64_t ne[] = {8, 2}; /* 64 bytes, the data section holds 64 */
    one_tensor_file(&b, GGML_F32, 2, ne, 32, 64);
    expect_reject(&b, "tensor 'w': offset [32, 96] runs beyond the end of the file",
                  "data section has 64 bytes");
    one_tensor_file(&b, GGML_F32, 2, ne, 1ull << 62, 64);
    expect_reject(&b, "tensor 'w'", "runs beyond the end of the file");
}

static void test_data_start_past_end(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 1, 0);
    const uint64_t ne[] = {1};
    gb_tensor(&b, "w", 1, ne, GGML_F32, 0); /* infos end at 57; the data would start at 64 */
    expect_reject(&b, "header: the data section would start at 64", "past the end of the file");
}

static void test_overlap(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 2, 0);
    const uint64_t ne[] = {16}; /* 64 bytes each */
    gb_tensor(&b, "a", 1, ne, GGML_F32, 0);
    gb_tensor(&b, "b", 1, ne, GGML_F32, 32);
    gb_pad(&b, 32);
    gb_pattern(&b, 128, 2);
    expect_reject(&b, "tensor 'b' [32, 96] overlaps tensor 'a' (ends at 64)", NULL);
}

static void test_duplicate_tensor_name(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 2, 0);
    const uint64_t ne[] = {8};
    gb_tensor(&b, "w", 1, ne, GGML_F32, 0);
    gb_tensor(&b, "w", 1, ne, GGML_F32, 32);
    gb_pad(&b, 32);
    gb_pattern(&b, 64, 3);
    expect_reject(&b, "tensor 'w': the name is used twice", NULL);
}

static void test_tensor_name_with_nul(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 1, 0);
    gb_strn(&b, "w\0x", 3);
    gb_u32(&b, 1);
    gb_u64(&b, 8);
    gb_u32(&b, GGML_F32);
    gb_u64(&b, 0);
    gb_pad(&b, 32);
    gb_pattern(&b, 32, 4);
    expect_reject(&b, "tensor #0: name holds a NUL byte at 1", NULL);
}

/* A string array whose (pointer, length) table alone passes the 1 GiB metadata cap, in a sparse
 * file big enough that its count passes the bytes-left check. */
static void test_metadata_cap(void **state)
{
    gb_t b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "tokenizer.ggml.tokens", 9);
    gb_u32(&b, 8);
    gb_u64(&b, 1ull << 27); /* 128 Mi strings: 1 GiB of lengths, 2 GiB of table */
    char path[128];
    snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
    assert_int_equal(gb_write(&b, path), 0);
    if (truncate(path, (off_t)(b.len + (1ull << 30) + 4096)) != 0)
        skip(); /* no sparse files here */
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(path, &err);
    assert_null(st);
    if (!strstr(err.msg, "key 'tokenizer.ggml.tokens': metadata needs more than 1024 MiB"))
        fail_msg("got '%s'", err.msg);
    gb_free(&b);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_valid_baseline),
        T(test_bad_magic),
        T(test_version_1),
        T(test_version_unknown),
        T(test_big_endian),
        T(test_truncated_header),
        T(test_truncated_value),
        T(test_truncated_tensor_info),
        T(test_kv_count_past_end),
        T(test_tensor_count_past_end),
        T(test_string_length_past_end),
        T(test_key_length_past_end),
        T(test_array_count_past_end),
        T(test_string_array_count_past_end),
        T(test_unknown_value_type),
        T(test_unknown_array_type),
        T(test_nested_array),
        T(test_bad_bool),
        T(test_empty_key),
        T(test_key_with_nul),
        T(test_duplicate_key),
        T(test_alignment_not_power_of_two),
        T(test_alignment_not_u32),
        T(test_unknown_tensor_type),
        T(test_too_many_dims),
        T(test_zero_dim),
        T(test_size_overflow),
        T(test_row_not_whole_blocks),
        T(test_offset_not_aligned),
        T(test_offset_outside_data),
        T(test_data_start_past_end),
        T(test_overlap),
        T(test_duplicate_tensor_name),
        T(test_tensor_name_with_nul),
        T(test_metadata_cap),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
