/* gram_vocab.h — a grammar vocabulary's insides, shared by gram_vocab.c (building it: the
 * token tries and the per-vocabulary masks) and gram_mask.c (walking them). Not public.
 */
#ifndef NX_GRAM_VOCAB_H
#define NX_GRAM_VOCAB_H

#include <stdbool.h>
#include <stdint.h>

#include "grammar.h"

/* A token trie in depth-first order. */
typedef struct trie {
    uint32_t n_nodes;
    uint8_t *t_byte;
    uint16_t *t_depth; /* 1 for the first byte of a token */
    int32_t *t_tok;    /* the first token ending here, -1 for none */
    uint32_t *t_end;   /* index just past the node's subtree */
} trie_t;

struct nx_gram_vocab {
    uint64_t serial;   /* unique per vocabulary made in this process (nx__tc_shared_t) */
    uint32_t size;
    char *bytes;       /* every token's bytes back to back */
    uint32_t *off;     /* [size + 1] */
    uint8_t *kind;     /* TOK_* by id */
    int32_t *eos;
    size_t n_eos;
    trie_t all;        /* every normal token */
    trie_t rest;       /* the tokens outside `plain` */
    trie_t nonword;    /* the tokens outside `word` */
    uint32_t *word;    /* [mask words]: tokens of ASCII letters and digits only (see word_slice) */
    uint32_t *word_ids; /* those tokens, the longest first */
    uint32_t n_word_ids;
    uint32_t *plain;   /* [mask words]: text tokens a JSON string holds raw (see below) */
    uint8_t *plain_chars; /* [size]: characters of a plain token (255 at most), 0 otherwise */
    int32_t *same_next; /* [size]: next token with the same bytes, -1 */
    /* For bounded strings (a slice of r characters): plain_upto[r - 1] holds the plain
     * tokens of at most r characters, r <= SHORT_CHARS; past that, the plain mask less
     * long_ids[0..n_long) (plain tokens of over SHORT_CHARS characters, the longest first). */
    uint32_t *plain_upto; /* [SHORT_CHARS * mask words] */
    uint32_t *long_ids;
    uint32_t n_long;
    uint32_t max_len;
    struct vocab_classes *classes; /* DFA terminals' classes kept across grammars, or NULL */
};

enum { TOK_NORMAL = 0, TOK_NEVER = 1, TOK_EOS = 2 };
#define SHORT_CHARS 16u
#define MAX_TOKEN_BYTES 4096u

/* The DFA terminals' token classes a vocabulary keeps for every grammar (gram_mask.c); NULL
 * from new on no memory (then classes stay per grammar). */
struct vocab_classes *nx__vocab_classes_new(void);
void nx__vocab_classes_free(struct vocab_classes *vc);

#endif
