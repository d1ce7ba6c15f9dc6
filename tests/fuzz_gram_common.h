/* fuzz_gram_common.h — shared by fuzz_json_schema.c and fuzz_gbnf.c: a small byte-level
 * vocabulary (every single byte, JSON-shaped multi-byte tokens, one special token, an end id)
 * and the walk that checks a compiled grammar's masks against its matcher: at each step every
 * id's mask bit must equal "the matcher accepts this token", the end id exactly where the
 * grammar accepts; the walk picks its tokens with the fuzz input's bytes.
 */
#ifndef FUZZ_GRAM_COMMON_H
#define FUZZ_GRAM_COMMON_H

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"

static const char *const MULTI[] = {
    "{\"", "\":", "\",\"", "\"}", "\"]", "},{", "[{", "}]", "true", "false", "null", "12",
    "-1", "0.", "e+", "\\\"", "\\n", "\\u00", "ab", "abc\"", "a\":", "\xc3\xa9", "\xe2\x82",
    "  ", "::=", "\":\"", "\",", "1,", "[]", "{}", "the", " the"};
#define N_MULTI (sizeof MULTI / sizeof MULTI[0])
#define FUZZ_SPECIAL (256 + N_MULTI)
#define FUZZ_EOS (FUZZ_SPECIAL + 1)
#define FUZZ_VOCAB (FUZZ_EOS + 1)

static nx_gram_vocab_t *fuzz_vocab(void)
{
    static nx_gram_vocab_t *v;
    if (v)
        return v;
    static char single[256];
    const char *bytes[FUZZ_VOCAB];
    uint32_t lens[FUZZ_VOCAB];
    bool special[FUZZ_VOCAB] = {0};
    for (int b = 0; b < 256; b++) {
        single[b] = (char)b;
        bytes[b] = &single[b];
        lens[b] = 1;
    }
    for (size_t i = 0; i < N_MULTI; i++) {
        bytes[256 + i] = MULTI[i];
        lens[256 + i] = (uint32_t)strlen(MULTI[i]);
    }
    bytes[FUZZ_SPECIAL] = "<|im_start|>";
    lens[FUZZ_SPECIAL] = 12;
    special[FUZZ_SPECIAL] = true;
    bytes[FUZZ_EOS] = "<|im_end|>";
    lens[FUZZ_EOS] = 10;
    special[FUZZ_EOS] = true;
    int32_t eos = FUZZ_EOS;
    v = nx_gram_vocab_new(bytes, lens, special, FUZZ_VOCAB, &eos, 1, NULL);
    assert(v);
    return v;
}

/* Match the input's own bytes (any verdict), then walk up to 24 steps checking every mask. */
static void fuzz_walk(const nx_gram_t *g, const uint8_t *pick, size_t n_pick)
{
    nx_gram_vocab_t *v = fuzz_vocab();
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, NULL);
    if (!m)
        return; /* the start state over the caps: refused, not a crash */
    (void)nx_gram_matcher_advance(m, pick, n_pick, NULL);
    nx_gram_matcher_reset(m);
    uint32_t mask[(FUZZ_VOCAB + 31) / 32];
    int32_t allowed[FUZZ_VOCAB];
    for (size_t step = 0; step < 24; step++) {
        if (nx_gram_matcher_mask(m, mask, NULL) != NX_OK)
            break;
        nx_gram_state_t s = nx_gram_matcher_state(m);
        uint32_t count = 0;
        bool capped = false;
        for (uint32_t id = 0; id < FUZZ_VOCAB && !capped; id++) {
            bool bit = mask[id >> 5] >> (id & 31) & 1;
            int rc = nx_gram_matcher_accept_token(m, (int32_t)id, NULL);
            nx_gram_matcher_set_state(m, s);
            if (rc == NX_ENOMEM) { /* a runaway grammar hit the matcher's caps: refused */
                capped = true;
                break;
            }
            bool ok = rc == NX_OK;
            if (bit != ok) {
                fprintf(stderr, "step %zu: token %u: mask %d, matcher %d\n", step, id, bit, ok);
                abort();
            }
            if (bit)
                allowed[count++] = (int32_t)id;
        }
        if (mask[FUZZ_SPECIAL >> 5] >> (FUZZ_SPECIAL & 31) & 1)
            abort(); /* a special token is never allowed */
        if (capped || count == 0)
            break; /* the caps; an empty language, or a state no byte continues */
        int32_t t = allowed[(step < n_pick ? pick[step] : 0) % count];
        if (getenv("FUZZ_GRAM_TRACE")) /* the walk, to reproduce a finding by hand */
            fprintf(stderr, "step %zu: %u allowed, token %d\n", step, count, t);
        if (nx_gram_matcher_accept_token(m, t, NULL) != NX_OK)
            abort();
        if (t == FUZZ_EOS)
            break;
    }
    nx_gram_matcher_destroy(&m);
}

#endif
