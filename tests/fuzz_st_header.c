/* fuzz_st_header.c — libFuzzer target for the safetensors header parser: every input is taken
 * as a whole safetensors file and run through the same validation nx_st_open applies, then
 * every exposed tensor is looked up again by name. It must never crash, leak or read out of
 * bounds; rejections are fine.
 *
 * Build and run (clang with libFuzzer; `make fuzz-smoke` runs it briefly):
 *   make fuzz                                   # builds build/fuzz/fuzz_st_header
 *   mkdir -p var/fuzz/st && build/fuzz/fuzz_st_header var/fuzz/st -max_total_time=60
 * Seed the corpus with real files for deeper coverage, e.g.
 *   cp some/model.safetensors var/fuzz/st/   (small ones: -max_len defaults to 4096)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "st_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nx_err_t err = {0};
    nx_st_t *st = nx__st_from_buffer("fuzz.safetensors", data, size, &err);
    if (!st)
        return 0;
    for (size_t i = 0; i < nx_st_tensor_count(st); i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
        if (nx_st_find(st, t->name) != t)
            __builtin_trap(); /* the index must find every exposed tensor */
        if (t->begin + t->bytes > nx_st_file_at(st, 0)->data_bytes)
            __builtin_trap(); /* validation let a range out of the data section */
    }
    nx_st_metadata(st, 0, NX_ST_DIGEST_KEY);
    nx_st_destroy(&st);
    return 0;
}
