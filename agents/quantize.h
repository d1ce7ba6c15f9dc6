/* quantize.h — a Hugging Face safetensors model directory (config.json, tokenizer.json,
 * tokenizer_config.json, the weights) to one GGUF file that llama.cpp loads and runs, as its
 * converter and llama-quantize would write it: llama.cpp's tensor names and metadata keys,
 * llama's q/k rows permuted for its adjacent-pair RoPE, Llama 3's rope scaling as
 * rope_freqs.weight, the tokenizer as tokenizer.ggml.*, and the type of every tensor chosen as
 * llama-quantize chooses it for the requested mix (Q4_K_M: Q6_K for the output head, and for
 * attn_v and ffn_down in the layers where llama.cpp "uses more bits"; fallbacks to Q5_0 / Q8_0
 * / F16 for rows that are not a whole number of blocks).
 */
#ifndef NX_QUANTIZE_H
#define NX_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"
#include "nx_loader.h"

typedef enum nx_qmix {
    NX_QMIX_F32,
    NX_QMIX_F16,
    NX_QMIX_BF16,
    NX_QMIX_Q8_0,
    NX_QMIX_Q4_0,
    NX_QMIX_Q4_K_M,
    NX_QMIX__COUNT
} nx_qmix_t;

const char *nx_qmix_name(nx_qmix_t mix);                /* "q4_k_m"; "?" out of range */
bool nx_qmix_parse(const char *name, nx_qmix_t *mix_out); /* case-insensitive */

typedef struct nx_quantize_opts {
    const char *in_dir;   /* a model directory (config.json, tokenizer.json, safetensors),
                           * or a GGUF file */
    const char *out_path; /* the .gguf to write (atomically: nothing there on failure) */
    nx_qmix_t mix;
    uint32_t threads;     /* quantizing threads; 0 = one per core */
    const char *name;     /* general.name; NULL: the input directory's name */
} nx_quantize_opts_t;

typedef struct nx_quantize_report {
    size_t tensors;
    uint64_t in_bytes;  /* weights read */
    uint64_t out_bytes; /* the GGUF file's size */
    uint32_t by_dtype[NX_DT__COUNT]; /* tensors written per dtype */
    double seconds;
} nx_quantize_report_t;

/* Write opts->out_path from opts->in_dir. in_dir may also be a GGUF file (F32, F16, BF16 or a
 * block type the engine computes with): its tensors are requantized (or dequantized) to the
 * mix with the same rules, names, order and keys kept (general.file_type updated). NX_EINVAL for bad options; NX_ENOTSUP naming what
 * llama.cpp could not be given (a tokenizer whose pre-tokenizer it does not know by name, an
 * architecture other than llama/qwen2/qwen3); the reader's errors for a bad model directory;
 * NX_EIO naming the path. report may be NULL. */
int nx_quantize_model(const nx_quantize_opts_t *opts, nx_quantize_report_t *report,
                      nx_err_t *err);

#endif
