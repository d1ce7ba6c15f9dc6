/* gen_grammar.h — internal: the grammar side of one generation (nx_gen_set_grammar). It
 * follows the generated tokens through the phases of a constrained output — an optional
 * thinking block, free text up to a trigger, the grammar, its end — and gives each pick its
 * mask. generate.c owns one per nx_gen and calls it around every pick.
 */
#ifndef NX_GEN_GRAMMAR_H
#define NX_GEN_GRAMMAR_H

#include "nx_engine.h"

typedef struct nx__gg nx__gg_t;

/* A copy of what `spec` needs for a model of `vocab` ids whose end ids are stop_ids (copied).
 * NX_EINVAL naming a bad combination. Caller owns the result. */
nx__gg_t *nx__gg_new(const nx_gen_grammar_t *spec, const nx_tokenizer_t *tok, uint32_t vocab,
                     const int32_t *stop_ids, size_t stop_id_count, nx_err_t *err);
void nx__gg_destroy(nx__gg_t **self_p);

/* The mask of the next pick: *allow_out NULL when any id may be picked (free text without
 * banned ids), else vocab bits valid until the next call. An empty mask is NX_ESTATE naming
 * the matcher state (a grammar with a dead end; should not happen). */
int nx__gg_mask(nx__gg_t *self, const uint32_t **allow_out, uint32_t *allow_bits_out,
                nx_err_t *err);

/* nx__gg_mask into the caller's words[0, word_count) (word_count >= (vocab + 31) / 32; words
 * past the vocabulary's are zeroed), for a mask computed during the step (nx__seq_defer_mask):
 * *allow_bits_out 0 when any id may be picked (words untouched), else vocab. An error (the
 * matcher over its caps: NX_ENOMEM; an empty mask: NX_ESTATE) names the phase and the
 * matcher state. */
int nx__gg_mask_into(nx__gg_t *self, uint32_t *words, uint32_t word_count,
                     uint32_t *allow_bits_out, nx_err_t *err);

/* After a pick of `id` (not a stop id): move through the phases, feed the matcher.
 * *finished_out: the matcher is finished, generation ends ("stop"). */
int nx__gg_observe(nx__gg_t *self, int32_t id, bool *finished_out, nx_err_t *err);

/* The tokens the grammar forces next (gram_forced.c's bytes, tokenized by the model's
 * tokenizer), at most cap of them, already fed to the matcher: the caller appends them
 * without sampling. The last token of the forced bytes is left to the model unless the
 * grammar is finished after it (it could merge with what follows, as llguidance does);
 * special tokens stop the run; !may_finish: the last token is always left (the output goes on
 * with a pick). *finished_out: the matcher is finished after them. Nothing in
 * free phases. */
int nx__gg_forced(nx__gg_t *self, int32_t *out, size_t cap, bool may_finish,
                  size_t *count_out, bool *finished_out, nx_err_t *err);

/* A stop id was picked: NX_OK where it may end the output (free text, or the grammar
 * accepts), NX_ESTATE otherwise. */
int nx__gg_end(nx__gg_t *self, nx_err_t *err);

bool nx__gg_free_text(const nx__gg_t *self); /* stop strings apply */
bool nx__gg_started(const nx__gg_t *self);
bool nx__gg_accepted(const nx__gg_t *self);

#endif
