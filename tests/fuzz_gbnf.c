/* fuzz_gbnf.c — libFuzzer target for the GBNF parser (nx_gram_from_gbnf) and the masks of
 * what it compiles. The input is the grammar text. It must never crash, leak, hang or read
 * out of bounds; a refusal has a "LINE:COL: " message (or names the rule of a left
 * recursion); a compiled grammar's masks agree with its matcher for every id of a small
 * vocabulary along a walk the input's bytes steer (fuzz_gram_common.h).
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_gbnf
 *   mkdir -p var/fuzz/gbnf && cp -r tests/fuzz/corpus/fuzz_gbnf/. var/fuzz/gbnf/
 *   build/fuzz/fuzz_gbnf var/fuzz/gbnf -max_total_time=60
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_gram_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_gbnf((const char *)data, size, &err);
    if (!g) {
        bool located = isdigit((unsigned char)err.msg[0]) && strchr(err.msg, ':');
        if (!located && !strstr(err.msg, "left recursion") && err.code != NX_ENOMEM &&
            err.code != NX_ENOTSUP)
            abort(); /* a refusal says where */
        return 0;
    }
    fuzz_walk(g, data, size);
    nx_gram_destroy(&g);
    return 0;
}
