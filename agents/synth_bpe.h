/* synth_bpe.h — the byte-level BPE trainer behind synthesized tokenizers (synth_bpe.c).
 * Internal to agents/synth*.c. */
#ifndef NX_SYNTH_BPE_H
#define NX_SYNTH_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"

#define NX__BPE_MAX_MERGES 1024
#define NX__BPE_MAX_TOKEN_BYTES 32 /* longer merges are never made */

typedef struct nx__bpe_token {
    unsigned char bytes[NX__BPE_MAX_TOKEN_BYTES]; /* the raw bytes the token stands for */
    uint32_t len;
} nx__bpe_token_t;

typedef struct nx__bpe_merge {
    uint32_t left, right; /* token ids merged, in rank order */
    uint32_t result;      /* the token id they make (may predate the merge) */
} nx__bpe_merge_t;

typedef struct nx__bpe {
    nx__bpe_token_t tokens[256 + NX__BPE_MAX_MERGES]; /* ids 0..255 are the bytes */
    uint32_t token_count;
    nx__bpe_merge_t merges[NX__BPE_MAX_MERGES];
    uint32_t merge_count;
} nx__bpe_t;

/* Train on the built-in corpus: up to merges_wanted merges (capped at NX__BPE_MAX_MERGES),
 * digit runs pre-split into groups of at most max_digits (1 for Qwen, 3 for Llama 3).
 * Deterministic. NX_OK or NX_ENOMEM. */
int nx__bpe_train(nx__bpe_t *bpe, uint32_t merges_wanted, uint32_t max_digits);

/* The token as a GPT-2 byte-level symbol string (each byte mapped by bytes_to_unicode, UTF-8
 * encoded) into out (NUL-terminated, truncated to cap); returns the full length. */
size_t nx__bpe_symbol(const nx__bpe_token_t *token, char *out, size_t cap);

#endif
