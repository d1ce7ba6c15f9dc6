/* fuzz_gguf_header.c — libFuzzer target for the GGUF reader: every input is taken as a whole
 * GGUF file and run through the same validation nx_st_open applies, then everything the
 * checkpoint exposes is read back: each tensor looked up by name and checked inside the data
 * section, each key found by name and every element of its value converted every way. It must
 * never crash, leak or read out of bounds; rejections are fine.
 *
 * Build and run (clang with libFuzzer; `make fuzz-smoke` runs it briefly):
 *   make fuzz                                   # builds build/fuzz/fuzz_gguf_header
 *   mkdir -p var/fuzz/gguf && UBSAN_OPTIONS=halt_on_error=1 \
 *     build/fuzz/fuzz_gguf_header var/fuzz/gguf -max_total_time=60
 * Seed the corpus with small GGUF files for deeper coverage: ones tests/tools/gguf_ref.py
 * writes (a few hundred bytes each; nx_gguf_save's are at least 4 KiB, so give -max_len=8192).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "st_internal.h"

static void touch_kv(const nx_gguf_kv_t *kv)
{
    uint64_t count = nx_gguf_kv_count(kv);
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < count && i < 64; i++) {
        uint64_t u;
        int64_t s;
        double f;
        bool b;
        size_t len = 0;
        if (nx_gguf_get_u64(kv, i, &u))
            sink += u;
        if (nx_gguf_get_i64(kv, i, &s))
            sink += (uint64_t)s;
        if (nx_gguf_get_f64(kv, i, &f))
            sink += f == f;
        if (nx_gguf_get_bool(kv, i, &b))
            sink += b;
        const char *str = nx_gguf_get_str(kv, i, &len);
        if (str && str[len] != '\0')
            __builtin_trap(); /* strings are NUL-terminated after their length */
        if (str && len)
            sink += (uint8_t)str[len - 1];
    }
    const uint8_t *packed = nx_gguf_kv_array_data(kv);
    if (packed && count)
        sink += packed[count * nx__gguf_type_size(nx_gguf_kv_elem_type(kv)) - 1];
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nx_err_t err = {0};
    nx_st_t *st = nx__gguf_from_buffer("fuzz.gguf", data, size, &err);
    if (!st)
        return 0;
    const nx_st_file_t *file = nx_st_file_at(st, 0);
    if (file->data_offset > size || file->data_offset + file->data_bytes != size)
        __builtin_trap(); /* the data section runs to the end of the file */
    for (size_t i = 0; i < nx_st_tensor_count(st); i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
        if (nx_st_find(st, t->name) != t)
            __builtin_trap(); /* the index must find every exposed tensor */
        if (t->begin + t->bytes > file->data_bytes || t->begin % nx_st_gguf_alignment(st) != 0)
            __builtin_trap(); /* validation let a range out of the data section */
        if (i > 0 && nx_st_tensor_at(st, i - 1)->begin + nx_st_tensor_at(st, i - 1)->bytes >
                         t->begin)
            __builtin_trap(); /* storage order without overlaps */
        volatile uint8_t first = data[file->data_offset + t->begin];
        (void)first;
    }
    for (size_t i = 0; i < nx_st_gguf_kv_count(st); i++) {
        const nx_gguf_kv_t *kv = nx_st_gguf_kv_at(st, i);
        if (nx_st_gguf_find(st, nx_gguf_kv_key(kv)) != kv)
            __builtin_trap(); /* keys are unique and indexed */
        touch_kv(kv);
    }
    nx_st_metadata(st, 0, NX_ST_DIGEST_KEY);
    nx_st_destroy(&st);
    return 0;
}
