/* fuzz_json_schema.c — libFuzzer target for the JSON Schema compiler (nx_gram_from_json_schema)
 * and the masks of what it compiles. Byte 0 picks the options (draft auto/2020-12/07, strict);
 * the rest is the schema text. It must never crash, leak, hang or read out of bounds; a
 * refusal has a message (ENOTSUP ones name a keyword); a compiled grammar's masks agree with
 * its matcher for every id of a small vocabulary along a walk the input's bytes steer
 * (fuzz_gram_common.h).
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_json_schema
 *   mkdir -p var/fuzz/js && cp -r tests/fuzz/corpus/fuzz_json_schema/. var/fuzz/js/
 *   build/fuzz/fuzz_json_schema var/fuzz/js -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_gram_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    nx_gram_schema_opts_t opts = {.draft = (nx_gram_draft_t)(data[0] % 3),
                                  .strict = data[0] & 4};
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_json_schema((const char *)data + 1, size - 1, &opts, &err);
    if (!g) {
        if (!err.msg[0])
            abort(); /* a refusal says why */
        if (err.code == NX_ENOTSUP && !strstr(err.msg, "'") && !strstr(err.msg, "over") &&
            !strstr(err.msg, "deeper"))
            abort(); /* an unsupported construct is named (or a cap is) */
        return 0;
    }
    fuzz_walk(g, data + 1, size - 1);
    nx_gram_destroy(&g);
    return 0;
}
