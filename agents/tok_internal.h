/* tok_internal.h — the tokenizer's insides, shared by tokenizer.c (loading, the public
 * getters), tok_encode.c (added tokens, NFC, the pre-tokenizer), tok_bpe.c (byte-level
 * mapping, hash maps, merges), detok.c and chat.c. Not a public header.
 */
#ifndef NX_TOK_INTERNAL_H
#define NX_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_engine.h"

/* An open-addressing hash map from byte strings to an int32 id. */
typedef struct nx__strmap {
    uint32_t *slots;  /* cap entries: token id + 1, 0 = empty */
    size_t cap;       /* power of two */
    size_t count;
} nx__strmap_t;

/* An open-addressing hash map from a pair of ids to (merge rank, merged id). */
typedef struct nx__pairmap_slot {
    uint64_t key;   /* (left << 32 | right) + 1; 0 = empty */
    uint32_t rank;  /* index in model.merges */
    int32_t merged; /* id of left+right */
} nx__pairmap_slot_t;

typedef struct nx__pairmap {
    nx__pairmap_slot_t *slots;
    size_t cap; /* power of two */
    size_t count;
} nx__pairmap_t;

typedef struct nx__token {
    char *bytes;   /* raw bytes the token stands for (byte-level mapping undone) */
    uint32_t len;  /* bytes */
    bool present;  /* an id in model.vocab or added_tokens */
    bool special;  /* added token with special: true */
    bool added;    /* from added_tokens: split out before BPE, never merged */
} nx__token_t;

typedef struct nx__added {
    int32_t id;
    const char *content; /* = tokens[id].bytes */
    uint32_t len;
    bool lstrip, rstrip, single_word;
} nx__added_t;

struct nx_tokenizer {
    nx__token_t *tokens;    /* [vocab_size] by id */
    uint32_t vocab_size;    /* highest id + 1 */
    nx__strmap_t vocab;     /* raw bytes of model.vocab entries -> id */
    nx__strmap_t added_map; /* content of added tokens -> id */
    nx__pairmap_t merges;   /* (left id, right id) -> rank, merged id */
    int32_t byte_id[256];   /* id of each single-byte token; -1 when absent */
    nx__added_t *added;     /* added tokens, longest content first */
    size_t added_count;
    bool added_first_byte[256]; /* some added token starts with this byte */
    bool ignore_merges;     /* model.ignore_merges */
    bool nfc;               /* normalizer is NFC */
    bool add_prefix_space;  /* ByteLevel pre-tokenizer's add_prefix_space */
    pcre2_code *regex;      /* the pre-tokenizer's split pattern; NULL: no split */
    bool regex_jit;         /* pcre2_jit_compile succeeded */
    char *chat_template, *bos_token, *eos_token; /* tokenizer_config.json; NULL when absent */
    char *path;             /* tokenizer.json's path, for messages */
};

/* GPT-2's byte-to-unicode table: the code point byte b is written as in vocab strings. */
uint32_t nx__byte_to_cp(unsigned char b);
/* Inverse: the byte a code point stands for, or -1 when it is not in the table. */
int nx__cp_to_byte(uint32_t cp);

uint64_t nx__hash_bytes(const void *data, size_t len);
int nx__strmap_init(nx__strmap_t *m, size_t expected);
void nx__strmap_free(nx__strmap_t *m);
/* Insert (the key is tokens[id].bytes); false when it is already there. */
bool nx__strmap_put(nx__strmap_t *m, const nx__token_t *tokens, int32_t id);
int32_t nx__strmap_get(const nx__strmap_t *m, const nx__token_t *tokens, const char *key,
                       size_t len); /* -1 when absent */

int nx__pairmap_init(nx__pairmap_t *m, size_t expected);
void nx__pairmap_free(nx__pairmap_t *m);
/* Insert; a pair already present keeps its first (lowest) rank. */
void nx__pairmap_put(nx__pairmap_t *m, int32_t left, int32_t right, uint32_t rank,
                     int32_t merged);
const nx__pairmap_slot_t *nx__pairmap_get(const nx__pairmap_t *m, int32_t left, int32_t right);

/* A growable id array. */
typedef struct nx__ids {
    int32_t *ids;
    size_t count, cap;
} nx__ids_t;
int nx__ids_push(nx__ids_t *v, int32_t id);

/* BPE one pre-token (raw bytes) and append its ids to out. NX_ENOMEM or NX_OK. */
int nx__bpe_word(const nx_tokenizer_t *tok, const unsigned char *word, size_t len,
                 nx__ids_t *out);

/* tok_config.c: normalizer, pre_tokenizer and decoder of tokenizer.json (root is its
 * json_t object), then MODEL_DIR/tokenizer_config.json when present. */
int nx__tok_load_pretok(nx_tokenizer_t *tok, void *root, nx_err_t *err);
int nx__tok_load_config(nx_tokenizer_t *tok, const char *model_dir, nx_err_t *err);

/* A pre-tokenizer family as GGUF names it (tokenizer.ggml.pre) and what that name stands for
 * in a tokenizer.json (tok_gguf.c). */
typedef struct nx__pretok_kind {
    const char *gguf_name; /* "qwen2", "llama-bpe", "gpt-2" */
    const char *regex;     /* the Split regex before ByteLevel; NULL: ByteLevel's own (GPT-2) */
    bool nfc;              /* normalizer NFC */
    bool ignore_merges;    /* model.ignore_merges */
} nx__pretok_kind_t;

/* By GGUF name, or by a tokenizer.json's Split regex (NULL: no Split, ByteLevel's regex); NULL
 * when the family is not one we know. */
const nx__pretok_kind_t *nx__pretok_by_name(const char *name);
const nx__pretok_kind_t *nx__pretok_by_regex(const char *split_regex);
const char *nx__pretok_known_names(void); /* for messages */

/* The tokenizer.json a GGUF file's tokenizer.ggml.* keys stand for (a json_t *, caller
 * decrefs), plus the file's chat template and bos/eos token texts set on tok. */
int nx__tok_gguf_json(nx_tokenizer_t *tok, const nx_st_t *st, void **root_out, nx_err_t *err);

/* Length of the longest valid UTF-8 prefix of s[0..len) that ends at a character boundary;
 * *bad_out (may be NULL) is set to true when the rest starts with an invalid sequence rather
 * than an incomplete one. */
size_t nx__utf8_valid_prefix(const unsigned char *s, size_t len, bool *bad_out);
/* Length of the valid UTF-8 sequence at s (1..4), 0 when it is incomplete (s[0..len) is a
 * proper prefix of one), -1 when it is invalid. */
int nx__utf8_seq(const unsigned char *s, size_t len);

#endif
