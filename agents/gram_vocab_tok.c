/* gram_vocab_tok.c — a grammar vocabulary from a loaded tokenizer: each id's raw bytes (the
 * byte-level mapping undone) and its special flag. Apart from gram_mask.c so that the
 * grammar engine builds without the tokenizer (the fuzz targets link only gram_*.c).
 */
#include <stdlib.h>

#include "grammar.h"
#include "nx_engine.h"

nx_gram_vocab_t *nx_gram_vocab_from_tokenizer(const nx_tokenizer_t *tok, const int32_t *eos_ids,
                                              size_t eos_count, nx_err_t *err)
{
    uint32_t n = nx_tokenizer_vocab_size(tok);
    const char **bytes = calloc(n ? n : 1, sizeof *bytes);
    uint32_t *lens = calloc(n ? n : 1, sizeof *lens);
    bool *special = calloc(n ? n : 1, sizeof *special);
    nx_gram_vocab_t *v = NULL;
    if (!bytes || !lens || !special) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        goto out;
    }
    for (uint32_t id = 0; id < n; id++) {
        size_t len = 0;
        bytes[id] = nx_tokenizer_token_bytes(tok, (int32_t)id, &len);
        lens[id] = (uint32_t)len;
        special[id] = nx_tokenizer_is_special(tok, (int32_t)id);
    }
    v = nx_gram_vocab_new(bytes, lens, special, n, eos_ids, eos_count, err);
out:
    free(bytes);
    free(lens);
    free(special);
    return v;
}
