/* grammar.h — the grammar engine: JSON Schema and GBNF compiled to a byte-level grammar, a
 * matcher that follows it byte by byte, and the token mask that tells the sampler which
 * tokens keep the output inside the grammar.
 *
 * The shape (see agents/gram_internal.h for the details and the reasons):
 *   - a grammar is a pushdown automaton whose terminals are byte-level DFAs (literals, JSON
 *     strings with their pattern/length/format, numbers with their bounds, GBNF character
 *     classes); rules reference each other, recursion included;
 *   - a matcher holds the set of live parse stacks (nondeterminism is allowed: anyOf branches
 *     run side by side) as an interned set id, so a state is one integer and copying it is free;
 *   - a vocabulary is the token trie of one tokenizer, built once; a mask walks it once per
 *     (terminal, DFA state) to find the tokens that stay inside that terminal, and checks only
 *     the tokens that cross a terminal's end against the real stacks; masks are cached per
 *     state.
 *
 * Threads: a grammar and a vocabulary are immutable after creation and may be shared; a
 * matcher (its states and caches) belongs to one thread at a time. The per-terminal token
 * classes (the cold part of masks) are kept, under locks, in the grammar (for the first
 * vocabulary its matchers bring) and, for DFA terminals, in the vocabulary (by the DFA's
 * content, for every grammar): each (terminal, state) is walked once per grammar, and a
 * free string's, a number's or a format's once per vocabulary (gram_mask.c).
 */
#ifndef NX_GRAMMAR_H
#define NX_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"

typedef struct nx_gram nx_gram_t;
typedef struct nx_gram_vocab nx_gram_vocab_t;
typedef struct nx_gram_matcher nx_gram_matcher_t;
typedef struct nx_tokenizer nx_tokenizer_t;

/* A matcher state: an interned set of parse stacks inside one matcher. Copy it freely; it is
 * valid until the matcher is destroyed or reset (a reset may drop the interned states). */
typedef struct nx_gram_state {
    uint32_t id;
} nx_gram_state_t;

/* --- compiling --------------------------------------------------------------------------- */

typedef enum nx_gram_draft {
    NX_GRAM_DRAFT_AUTO = 0, /* from "$schema"; 2020-12 when absent */
    NX_GRAM_DRAFT_2020_12,
    NX_GRAM_DRAFT_07,
} nx_gram_draft_t;

typedef struct nx_gram_schema_opts {
    nx_gram_draft_t draft;
    bool strict; /* additionalProperties defaults to false (OpenAI's strict); else the spec's true */
} nx_gram_schema_opts_t;

/* Compile a JSON Schema (its text) into a grammar for its instances in compact serialization
 * (no whitespace; strings as json.dumps(ensure_ascii=False) writes them; see gram_schema.c for
 * the property orders admitted and which bounds are exact). A keyword it cannot enforce is
 * NX_ENOTSUP with err naming the keyword and its JSON pointer ("unsupported keyword
 * 'patternProperties' at /properties/a"); malformed input is NX_EINVAL. opts may be NULL.
 * Caller owns the result. */
nx_gram_t *nx_gram_from_json_schema(const char *schema, size_t len,
                                    const nx_gram_schema_opts_t *opts, nx_err_t *err);

/* The grammar of any JSON object (OpenAI's response_format json_object), compact. */
nx_gram_t *nx_gram_json_object(nx_err_t *err);

/* Compile a GBNF grammar (llama.cpp's format; the start rule is `root`). Errors say
 * "LINE:COL: ...". Caller owns the result. */
nx_gram_t *nx_gram_from_gbnf(const char *text, size_t len, nx_err_t *err);

void nx_gram_destroy(nx_gram_t **self_p);

/* NX_OK when every instance valid under `out` is valid under `in` (a stage's output_schema
 * against the next stage's input_schema): a sound structural check over the keywords the
 * compiler supports — types, properties/required/additionalProperties, items/prefixItems/
 * min/maxItems, enum/const, anyOf/oneOf/allOf, $ref (recursion), string length/pattern/format
 * (decided on their DFAs: L(out) ⊆ L(in)), numeric bounds and multipleOf. Otherwise NX_EINVAL
 * (NX_ENOMEM out of memory), err naming both JSON pointers and why ("output /properties/score
 * is a string; input /properties/score wants an integer"; "output (root) may omit 'id', which
 * input (root) requires"; "cannot prove output /properties/s's pattern '^a' satisfies input
 * /properties/s's pattern '^ab': \"a\" ..."). Sound, not complete: what it cannot prove is
 * refused, with the keyword named. `out` NULL means free text (never satisfies an input
 * schema); `in` NULL means the input takes free text (anything does). out_opts (may be NULL)
 * are the output's compile options (draft; strict makes additionalProperties default false,
 * as the output grammar does); the input is read as the spec says, its draft from "$schema".
 * Either side may be draft-07 or 2020-12. */
int nx_gram_schema_compat(const char *out, size_t out_len, const char *in, size_t in_len,
                          const nx_gram_schema_opts_t *out_opts, nx_err_t *err);

/* Sizes for messages and benches: rules, terminals, total DFA states. */
void nx_gram_stats(const nx_gram_t *self, uint32_t *rules, uint32_t *terminals,
                   uint32_t *dfa_states);

/* --- vocabularies ------------------------------------------------------------------------ */

/* The token trie of a vocabulary given as byte strings: bytes[id] of lens[id] bytes (NULL or
 * 0 for a missing id), special[id] marks control tokens (never allowed inside a grammar;
 * special may be NULL). eos_ids are allowed exactly where the grammar accepts. Copies what
 * it needs; caller owns the result. */
nx_gram_vocab_t *nx_gram_vocab_new(const char *const *bytes, const uint32_t *lens,
                                   const bool *special, uint32_t vocab_size,
                                   const int32_t *eos_ids, size_t eos_count, nx_err_t *err);
/* The same from a loaded tokenizer (its special tokens, the given end ids). */
nx_gram_vocab_t *nx_gram_vocab_from_tokenizer(const nx_tokenizer_t *tok, const int32_t *eos_ids,
                                              size_t eos_count, nx_err_t *err);
void nx_gram_vocab_destroy(nx_gram_vocab_t **self_p);
uint32_t nx_gram_vocab_size(const nx_gram_vocab_t *self);
/* 32-bit words of a mask: (vocab_size + 31) / 32. */
size_t nx_gram_mask_words(const nx_gram_vocab_t *self);

/* --- matching ---------------------------------------------------------------------------- */

/* A matcher at the grammar's start. vocab may be NULL (then only byte matching is possible).
 * Both are borrowed and must outlive it. Caller owns the result. */
nx_gram_matcher_t *nx_gram_matcher_new(const nx_gram_t *gram, const nx_gram_vocab_t *vocab,
                                       nx_err_t *err);
void nx_gram_matcher_destroy(nx_gram_matcher_t **self_p);
/* Back to the start state for a new generation under the same grammar, keeping its state
 * masks (the per-terminal token classes stay in the grammar in any case, see above). Past a size threshold (or after a cap was hit)
 * the interned states are dropped here, so reuse does not grow memory without end. */
void nx_gram_matcher_reset(nx_gram_matcher_t *self);

nx_gram_state_t nx_gram_matcher_state(const nx_gram_matcher_t *self);
void nx_gram_matcher_set_state(nx_gram_matcher_t *self, nx_gram_state_t state);

/* Consume bytes. NX_OK; NX_EINVAL when the grammar rejects them (the state is then unchanged);
 * NX_ENOMEM when the matcher's state space passed its cap (err says so; may be NULL). */
int nx_gram_matcher_advance(nx_gram_matcher_t *self, const void *bytes, size_t len,
                            nx_err_t *err);
/* Consume one token: its bytes, or for an end id NX_OK exactly when the grammar accepts (the
 * matcher is then finished). A special token is always NX_EINVAL. */
int nx_gram_matcher_accept_token(nx_gram_matcher_t *self, int32_t token, nx_err_t *err);
/* The input so far is a complete sentence of the grammar. */
bool nx_gram_matcher_accepting(const nx_gram_matcher_t *self);
/* No byte can follow: the grammar accepts and nothing longer is possible (or it is dead). */
bool nx_gram_matcher_finished(const nx_gram_matcher_t *self);

/* The bytes the grammar forces from here (gram_forced.c): while the input is not a sentence
 * and exactly one byte can follow, that byte. Writes at most cap bytes to out and returns how
 * many; the matcher's state is unchanged (feed them with nx_gram_matcher_advance). */
size_t nx_gram_matcher_forced(nx_gram_matcher_t *self, char *out, size_t cap);

/* The grammar's start state (gram_forced.c), for several generations sharing one matcher: each
 * keeps its own state and sets it before using the matcher, so the masks one computes are
 * cached for all. Valid until the matcher is reset. */
nx_gram_state_t nx_gram_matcher_start(const nx_gram_matcher_t *self);

/* The tokens allowed next, as a bitmask of nx_gram_mask_words() words (bit id % 32 of word
 * id / 32): tokens whose bytes the grammar accepts from here, plus the end ids where it
 * accepts. NX_OK, NX_ESTATE without a vocabulary, NX_ENOMEM past the state cap. */
int nx_gram_matcher_mask(nx_gram_matcher_t *self, uint32_t *mask, nx_err_t *err);

#endif
