/* fuzz_gram_compat.c — libFuzzer target for nx_gram_schema_compat (typed pipelines: does an
 * output_schema's every instance fit an input_schema?). Byte 0 picks the output's options
 * (draft auto/2020-12/07, strict); the rest is two schema texts split at the first NUL byte
 * (output, then input; no NUL: the output is free text). It must never crash, leak, hang or
 * read out of bounds; a refusal says why. Soundness: where the answer is NX_OK and both
 * schemas compile, an instance of the output's grammar, walked byte by byte as the input's
 * bytes steer, must be accepted by the input's grammar.
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_gram_compat
 *   mkdir -p var/fuzz/gc && cp -r tests/fuzz/corpus/fuzz_gram_compat/. var/fuzz/gc/
 *   build/fuzz/fuzz_gram_compat var/fuzz/gc -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"

/* An instance of g, steered by pick[]: at each step one of the bytes the matcher takes; ends
 * where it accepts and the steering byte's top bit says so. Returns its length, or -1 when
 * the walk found no end within cap bytes. */
static int walk_instance(const nx_gram_t *g, const uint8_t *pick, size_t n_pick, char *text,
                         int cap)
{
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, NULL);
    if (!m)
        return -1;
    int n = 0, len = -1;
    for (size_t step = 0; n < cap; step++) {
        uint8_t steer = n_pick ? pick[step % n_pick] : 0;
        uint8_t allowed[256];
        int count = 0;
        nx_gram_state_t s = nx_gram_matcher_state(m);
        for (int b = 0; b < 256; b++) {
            uint8_t byte = (uint8_t)b;
            int rc = nx_gram_matcher_advance(m, &byte, 1, NULL);
            nx_gram_matcher_set_state(m, s);
            if (rc == NX_ENOMEM)
                goto out; /* a runaway grammar over the matcher's caps */
            if (rc == NX_OK)
                allowed[count++] = byte;
        }
        if (nx_gram_matcher_accepting(m) && (count == 0 || (steer & 0x80) || step > 200)) {
            len = n;
            break;
        }
        if (count == 0)
            break;
        text[n] = (char)allowed[(steer + step) % (size_t)count];
        if (nx_gram_matcher_advance(m, &text[n], 1, NULL) != NX_OK)
            abort(); /* a byte the matcher just took */
        n++;
    }
out:
    nx_gram_matcher_destroy(&m);
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    nx_gram_schema_opts_t opts = {.draft = (nx_gram_draft_t)(data[0] % 3),
                                  .strict = data[0] & 4};
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const char *nul = memchr(text, '\0', len);
    const char *out = nul ? text : NULL, *in = nul ? nul + 1 : text;
    size_t out_len = nul ? (size_t)(nul - text) : 0, in_len = nul ? len - out_len - 1 : len;
    nx_err_t err = {0};
    int rc = nx_gram_schema_compat(out, out_len, in, in_len, &opts, &err);
    if (rc != NX_OK) {
        if (!err.msg[0] || (rc != NX_EINVAL && rc != NX_ENOMEM))
            abort(); /* a refusal says why, with one of the documented codes */
        return 0;
    }
    if (!out)
        return 0;
    nx_gram_t *go = nx_gram_from_json_schema(out, out_len, &opts, NULL);
    nx_gram_t *gi = nx_gram_from_json_schema(in, in_len, NULL, NULL);
    if (go && gi) {
        char instance[512];
        int n = walk_instance(go, data, size, instance, (int)sizeof instance);
        if (n >= 0) {
            nx_gram_matcher_t *mi = nx_gram_matcher_new(gi, NULL, NULL);
            if (mi && (nx_gram_matcher_advance(mi, instance, (size_t)n, NULL) == NX_EINVAL ||
                       (!nx_gram_matcher_accepting(mi) &&
                        nx_gram_matcher_advance(mi, "", 0, NULL) == NX_OK))) {
                fprintf(stderr, "compatible, yet the input refuses the output's %.*s\n", n,
                        instance);
                abort();
            }
            nx_gram_matcher_destroy(&mi);
        }
    }
    nx_gram_destroy(&go);
    nx_gram_destroy(&gi);
    return 0;
}
