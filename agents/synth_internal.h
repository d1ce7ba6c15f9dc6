/* synth_internal.h — what synth.c and synth_tokenizer.c share: the tokenizer facts config.json
 * needs, the tokenizer writer and copier, and small file helpers. Not a public API. */
#ifndef NX_SYNTH_INTERNAL_H
#define NX_SYNTH_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "synth.h"

/* What config.json and generation_config.json take from the tokenizer. */
typedef struct nx__synth_tokinfo {
    uint32_t token_count;  /* highest token id + 1, over the BPE vocab and the added tokens */
    int64_t bos_id;        /* -1 when the tokenizer has none */
    int64_t eos_ids[2];    /* llama: <|end_of_text|>, <|eot_id|>; qwen: one id */
    uint32_t eos_count;    /* 0 when none was found */
    int64_t pad_id;        /* -1 when none */
    bool has_generation_config; /* a generation_config.json was copied with it */
} nx__synth_tokinfo_t;

/* Train the built-in byte-level BPE for `arch` and write tokenizer.json and
 * tokenizer_config.json into dir. Fills *info. */
int nx__synth_tokenizer_write(const char *dir, nx_synth_arch_t arch, nx__synth_tokinfo_t *info,
                              nx_err_t *err);

/* Copy src_dir's tokenizer.json (required), tokenizer_config.json and generation_config.json
 * (when present) into dir; find bos/eos/pad ids for `arch` in it. NX_ENOTFOUND when src_dir
 * has no tokenizer.json, NX_EFORMAT when it does not parse as a tokenizer. Fills *info. */
int nx__synth_tokenizer_copy(const char *dir, const char *src_dir, nx_synth_arch_t arch,
                             nx__synth_tokinfo_t *info, nx_err_t *err);

/* Write root as indented JSON to dir/name, fsynced. Does not take ownership of root. */
int nx__synth_write_json(const char *dir, const char *name, const json_t *root, size_t flags,
                         nx_err_t *err);

/* Copy the file src to dir/name byte for byte, fsynced. */
int nx__synth_copy_file(const char *src, const char *dir, const char *name, nx_err_t *err);

#endif
