/* synth.h — synthesize a complete Hugging Face style model directory (config.json,
 * generation_config.json, random safetensors weights, tokenizer.json, tokenizer_config.json)
 * with a real architecture's shapes, for tests and benchmarks of the loader and the engine.
 *
 * Weights are generated on the fly while they are written (nothing big is held in memory) and
 * are a pure function of the seed and the tensor's name, so sharding never changes them.
 */
#ifndef NX_SYNTH_H
#define NX_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"
#include "nx_loader.h"

typedef enum nx_synth_arch {
    NX_SYNTH_QWEN3, /* Qwen3ForCausalLM: q_norm/k_norm, head_dim independent of hidden/heads */
    NX_SYNTH_QWEN2, /* Qwen2ForCausalLM (Qwen2.5 shapes): q/k/v biases */
    NX_SYNTH_LLAMA, /* LlamaForCausalLM (Llama 3.x shapes): llama3 rope scaling */
    NX_SYNTH_ARCH__COUNT
} nx_synth_arch_t;

typedef enum nx_synth_preset {
    NX_SYNTH_TINY, /* a few hundred KB, for tests */
    NX_SYNTH_0_6B, /* Qwen3-0.6B / Qwen2.5-0.5B / Llama-3.2-1B */
    NX_SYNTH_4B,   /* Qwen3-4B / Qwen2.5-3B / Llama-3.2-3B */
    NX_SYNTH_8B,   /* Qwen3-8B / Qwen2.5-7B / Llama-3.1-8B */
    NX_SYNTH_SMALL, /* tiny's quirks with every matrix dimension a multiple of 256, so that
                     * K-quants (Q4_K, Q6_K) apply to every tensor; a few MB, for tests */
    NX_SYNTH_PRESET__COUNT
} nx_synth_preset_t;

typedef struct nx_synth_opts {
    nx_synth_arch_t arch;
    nx_synth_preset_t preset;
    const char *out_dir;       /* must not exist, or be an empty directory; parents are created */
    uint64_t seed;             /* weights are a function of (seed, tensor name) */
    nx_dtype_t dtype;          /* NX_DT_BF16, NX_DT_F16 or NX_DT_F32 */
    uint32_t shards;           /* 1: model.safetensors; N>1: N shards + index; 1..tensor count */
    const char *tokenizer_dir; /* NULL: synthesize a byte-level BPE; else copy this one's */
} nx_synth_opts_t;

typedef struct nx_synth_report {
    size_t tensor_count;
    uint64_t weight_bytes; /* sum of tensor payloads */
    uint32_t files;        /* safetensors files written */
    uint32_t vocab_size;   /* as written to config.json */
    double seconds;        /* wall time of the whole synthesis */
} nx_synth_report_t;

/* Write the model directory described by opts into opts->out_dir, atomically: everything is
 * generated in a temporary sibling directory that is renamed to out_dir at the end, so on
 * error nothing is left at out_dir. Returns NX_OK; NX_EINVAL for bad options (checked before
 * anything touches the disk: unknown arch/preset, dtype other than BF16/F16/F32, shards out of
 * range); NX_EEXIST when out_dir exists and is not empty; NX_ENOTFOUND / NX_EFORMAT for a
 * tokenizer_dir without a usable tokenizer.json; NX_EIO naming the path otherwise.
 * report may be NULL. */
int nx_synth_model(const nx_synth_opts_t *opts, nx_synth_report_t *report, nx_err_t *err);

/* The same model as one GGUF file at out_path (a .gguf path; opts->out_dir is ignored): it is
 * synthesized in F32 into a temporary directory beside out_path, then written by
 * nx_quantize_model with `mix` (an nx_qmix_t: quantize.h), then the directory is removed.
 * report (may be NULL) describes the synthesis. */
int nx_synth_gguf(const nx_synth_opts_t *opts, int mix, const char *out_path,
                  nx_synth_report_t *report, nx_err_t *err);

/* Number of tensors the (arch, preset) checkpoint has, or 0 when either is out of range. */
size_t nx_synth_tensor_count(nx_synth_arch_t arch, nx_synth_preset_t preset);

/* Names as used on the command line ("qwen3", "0.6b"); "?" when out of range. */
const char *nx_synth_arch_name(nx_synth_arch_t arch);
const char *nx_synth_preset_name(nx_synth_preset_t preset);
/* Parse those names; false when unknown. */
bool nx_synth_arch_parse(const char *name, nx_synth_arch_t *arch_out);
bool nx_synth_preset_parse(const char *name, nx_synth_preset_t *preset_out);

#endif
