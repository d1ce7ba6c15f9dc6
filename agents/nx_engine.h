/* nx_engine.h — the model engine's public C API: a model's config, its tokenizer and chat
 * template, sampling, and the forward pass over weights the loader put in the pool.
 *
 * The forward pass sits behind a backend table (agents/backend.h): the CPU backend is complete;
 * the CUDA backend implements the same table. Weights are used in place in their pool region
 * (bf16, f16 or f32 as stored, converted on the fly); every sequence's KV cache is a region of
 * the same pool. Nothing here knows ZeroMQ or SQLite: the orchestrator drives the step API.
 *
 * Threading: an engine is driven by one thread at a time (the executor that owns it); the CPU
 * backend uses its own worker threads inside a step. Tokenizers are read-only after loading
 * and may be shared by any number of threads.
 */
#ifndef NX_ENGINE_H
#define NX_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"
#include "nx_loader.h"

/* ------------------------------------------------------------------------------------------
 * config.json
 */
typedef enum nx_arch {
    NX_ARCH_LLAMA, /* model_type llama or mistral */
    NX_ARCH_QWEN2,
    NX_ARCH_QWEN3,
} nx_arch_t;

#define NX_MAX_EOS 8
#define NX_MAX_ROPE_FACTORS 256 /* head_dim up to 512 */

typedef struct nx_model_config {
    nx_arch_t arch;
    char model_type[32];      /* as written in config.json */
    uint32_t hidden;          /* hidden_size */
    uint32_t intermediate;    /* intermediate_size */
    uint32_t layers;          /* num_hidden_layers */
    uint32_t heads;           /* num_attention_heads */
    uint32_t kv_heads;        /* num_key_value_heads (GQA); = heads when absent */
    uint32_t head_dim;        /* head_dim; hidden / heads when absent */
    uint32_t vocab;           /* vocab_size */
    uint32_t max_position;    /* max_position_embeddings */
    float rms_eps;            /* rms_norm_eps */
    double rope_theta;        /* rope_theta */
    bool rope_llama3;         /* rope_scaling.rope_type == "llama3" */
    double rope_factor;       /* rope_scaling.factor */
    double rope_low_freq;     /* rope_scaling.low_freq_factor */
    double rope_high_freq;    /* rope_scaling.high_freq_factor */
    uint32_t rope_original_max; /* rope_scaling.original_max_position_embeddings */
    bool qkv_bias;            /* q/k/v projections have biases (Qwen2; attention_bias) */
    bool qk_norm;             /* per-head RMSNorm on q and k (Qwen3) */
    bool tie_embeddings;      /* tie_word_embeddings (lm_head.weight is used when present) */
    int32_t bos_id;           /* -1 when absent */
    int32_t eos_ids[NX_MAX_EOS];
    uint32_t eos_count;
    /* GGUF files only */
    bool gguf;                /* read from a GGUF file's metadata (tensor names are ggml's) */
    bool rope_adjacent;       /* RoPE rotates adjacent pairs (2i, 2i+1) instead of halves
                               * (i, i + head_dim/2): llama GGUF files, whose q/k rows
                               * llama.cpp's converter permuted into that order. On the
                               * permuted rows it is the same rotation as Hugging Face's on the
                               * original ones, and q.k is unchanged, so the weights are used
                               * in place instead of being permuted back. */
    uint32_t rope_freq_count; /* entries of rope_freqs.weight (head_dim/2), 0 when absent */
    float rope_freq_factors[NX_MAX_ROPE_FACTORS]; /* inv_freq[i] /= factor[i]: how GGUF files
                               * carry Llama 3's rope scaling */
} nx_model_config_t;

/* Read MODEL_DIR/config.json, or the metadata of a GGUF file when the path is one (a regular
 * file starting with "GGUF": general.architecture and its <arch>.* keys). Every value comes
 * from the file (defaults only where Hugging Face or llama.cpp have them: kv_heads = heads,
 * head_dim = hidden / heads, ...). NX_ENOTSUP names an unsupported model_type or
 * architecture; NX_EFORMAT names a missing or ill-typed field or key. */
int nx_config_load(const char *model_dir, nx_model_config_t *out, nx_err_t *err);
/* Whether path is a GGUF file (a regular file whose first four bytes are "GGUF"). */
bool nx_path_is_gguf(const char *path);
const char *nx_arch_name(nx_arch_t arch);

/* ------------------------------------------------------------------------------------------
 * tokenizer.json: byte-level BPE as Hugging Face tokenizers runs it (Qwen2/Qwen3, Llama 3)
 */
typedef struct nx_tokenizer nx_tokenizer_t;

/* Load MODEL_DIR/tokenizer.json (and tokenizer_config.json when present), or the tokenizer of
 * a GGUF file (tokenizer.ggml.*, tokenizer.chat_template) when the path is one: the same
 * byte-level BPE either way. Caller owns it. */
nx_tokenizer_t *nx_tokenizer_load(const char *model_dir, nx_err_t *err);
void nx_tokenizer_destroy(nx_tokenizer_t **self_p);

/* Encode UTF-8 text as the reference does: added and special tokens split out first, NFC,
 * the pre-tokenizer regex, byte-to-unicode, merges by rank. *ids_out is malloc'ed (caller
 * frees). Invalid UTF-8 is NX_EINVAL naming the byte offset. */
int nx_tokenizer_encode(const nx_tokenizer_t *self, const char *text, size_t len,
                        int32_t **ids_out, size_t *count_out, nx_err_t *err);
/* Decode ids to text (skip_special drops special tokens). *text_out malloc'ed. */
int nx_tokenizer_decode(const nx_tokenizer_t *self, const int32_t *ids, size_t count,
                        bool skip_special, char **text_out, nx_err_t *err);
/* Highest token id + 1. */
uint32_t nx_tokenizer_vocab_size(const nx_tokenizer_t *self);
/* The raw bytes a token stands for; NULL for an unknown id. */
const char *nx_tokenizer_token_bytes(const nx_tokenizer_t *self, int32_t id, size_t *len_out);
/* Id of a token given by its text ("<|im_end|>"); -1 when absent. */
int32_t nx_tokenizer_token_id(const nx_tokenizer_t *self, const char *token);
bool nx_tokenizer_is_special(const nx_tokenizer_t *self, int32_t id);
/* tokenizer_config.json's chat_template, bos_token, eos_token; NULL when absent. */
const char *nx_tokenizer_chat_template(const nx_tokenizer_t *self);
const char *nx_tokenizer_bos_token(const nx_tokenizer_t *self);
const char *nx_tokenizer_eos_token(const nx_tokenizer_t *self);

/* Streaming decode that never splits a UTF-8 character across pieces. */
typedef struct nx_detok {
    const nx_tokenizer_t *tok;
    bool skip_special;
    unsigned char pending[8]; /* bytes of an incomplete character */
    size_t pending_len;
} nx_detok_t;

void nx_detok_init(nx_detok_t *self, const nx_tokenizer_t *tok, bool skip_special);
/* Add one token; writes the complete characters now available to out (NUL-terminated,
 * cap >= 64 + the longest token) and returns their length. */
size_t nx_detok_push(nx_detok_t *self, int32_t id, char *out, size_t cap);
/* End of stream: left-over bytes of an incomplete character come out as U+FFFD. */
size_t nx_detok_flush(nx_detok_t *self, char *out, size_t cap);

/* ------------------------------------------------------------------------------------------
 * Chat templates
 */
typedef enum nx_chat_kind {
    NX_CHAT_AUTO = 0, /* from tokenizer_config.json's chat_template */
    NX_CHAT_CHATML,   /* Qwen: <|im_start|>role\n...<|im_end|>, thinking on/off as Qwen3 */
    NX_CHAT_LLAMA3,   /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    NX_CHAT_RAW,      /* no template: the text as is */
} nx_chat_kind_t;

/* A call an assistant message made (OpenAI's tool_calls[i]). */
typedef struct nx_chat_tool_call {
    const char *id;        /* "call_..."; may be NULL (the templates do not show it) */
    const char *name;      /* the function's name */
    const char *arguments; /* its arguments as JSON text, written as they are */
} nx_chat_tool_call_t;

typedef struct nx_chat_msg {
    const char *role; /* "system", "user", "assistant", "tool" */
    const char *content;   /* NULL only for an assistant message with tool calls */
    /* assistant: the calls it made (n_tool_calls of them), and its thinking text when kept
     * apart from content (NULL: none, or inside content as <think>...</think>) */
    const nx_chat_tool_call_t *tool_calls;
    size_t n_tool_calls;
    const char *reasoning_content;
    /* tool: the call this result answers and the function's name (may be NULL) */
    const char *tool_call_id;
    const char *name;
} nx_chat_msg_t;

typedef struct nx_chat_opts {
    nx_chat_kind_t kind;
    int thinking;                /* -1: the template's default; 0 off; 1 on (Qwen3) */
    bool add_generation_prompt; /* end with the assistant's header */
    const char *tools_json;      /* the OpenAI `tools` array as JSON text; NULL: no tools */
} nx_chat_opts_t;

nx_chat_kind_t nx_chat_detect(const nx_tokenizer_t *tok);
const char *nx_chat_kind_name(nx_chat_kind_t kind);
bool nx_chat_kind_parse(const char *name, nx_chat_kind_t *kind_out); /* auto|chatml|llama3|raw */
/* Render messages to the prompt text as the model's own template does, tools included:
 * ChatML (Qwen3's template) lists them in the system turn inside <tools></tools>, writes an
 * assistant's calls as <tool_call> blocks and groups consecutive tool results into one user
 * turn of <tool_response> blocks; Llama 3 (3.1's template) lists them in the first user turn
 * and writes a call as {"name": ..., "parameters": ...}, results as ipython turns. Bad
 * tools JSON or arguments is NX_EINVAL naming the message. *text_out malloc'ed. */
int nx_chat_render(const nx_tokenizer_t *tok, const nx_chat_opts_t *opts,
                   const nx_chat_msg_t *msgs, size_t count, char **text_out, nx_err_t *err);
/* The ids that end a turn for this template (end-of-turn tokens and eos); returns how many
 * were written to ids (at most cap). */
size_t nx_chat_stop_ids(const nx_tokenizer_t *tok, nx_chat_kind_t kind, int32_t *ids,
                        size_t cap);

/* ------------------------------------------------------------------------------------------
 * Sampling
 */
typedef struct nx_sampling {
    float temperature;        /* 0: greedy */
    uint32_t top_k;           /* 0: off */
    float top_p;              /* 1: off; in (0, 1] */
    float min_p;              /* 0: off; in [0, 1) */
    float repetition_penalty; /* 1: off; > 0 */
    uint64_t seed;            /* the same seed and inputs give the same tokens */
    uint32_t max_tokens;      /* tokens to generate at most; > 0 */
    const char *const *stop;  /* stop strings: generation ends when the text contains one */
    size_t stop_count;
} nx_sampling_t;

nx_sampling_t nx_sampling_default(void); /* greedy, 256 tokens */
/* NX_EINVAL naming the field and its allowed range. */
int nx_sampling_validate(const nx_sampling_t *s, nx_err_t *err);

typedef struct nx_sampler nx_sampler_t;
nx_sampler_t *nx_sampler_new(const nx_sampling_t *s, uint32_t vocab, nx_err_t *err);
void nx_sampler_destroy(nx_sampler_t **self_p);
/* The next id from `vocab` logits; history (may be empty) feeds the repetition penalty. */
int32_t nx_sampler_pick(nx_sampler_t *self, const float *logits, const int32_t *history,
                        size_t history_len);
/* The same under a token mask (a grammar's, agents/grammar.h): only ids whose bit is set in
 * allow (allow_bits bits; ids past them are disallowed) can be picked, and the mask applies
 * before the repetition penalty, temperature, top-k, top-p and min-p, so the draw follows the
 * constrained distribution exactly. -1 when the mask allows no id (or out of memory). The
 * engine's picks take the same mask through the generation state (nx_gen_set_grammar), on the
 * CPU and on the GPU alike. */
int32_t nx_sampler_pick_masked(nx_sampler_t *self, const float *logits, const int32_t *history,
                               size_t history_len, const uint32_t *allow, uint32_t allow_bits);

/* ------------------------------------------------------------------------------------------
 * The engine: one model bound to a backend, and its sequences
 */
typedef struct nx_engine nx_engine_t;
typedef struct nx_seq nx_seq_t;

typedef struct nx_engine_opts {
    uint32_t threads;     /* CPU backend worker threads; 0 = one per core */
    uint32_t max_context; /* default KV capacity per sequence; 0 = min(max_position, 4096) */
} nx_engine_opts_t;

/* Bind the weights of a loaded model (borrowed: it must outlive the engine) to the backend of
 * the pool's device. Reads MODEL_DIR/config.json and checks every tensor the architecture
 * needs: a missing one is NX_ENOTFOUND naming it, a wrong shape or dtype NX_EFORMAT naming it
 * with what was expected. opts may be NULL. Caller owns the result. */
nx_engine_t *nx_engine_new(const char *model_dir, const nx_model_t *weights, nx_pool_t *pool,
                           const nx_engine_opts_t *opts, nx_err_t *err);
void nx_engine_destroy(nx_engine_t **self_p);
const nx_model_config_t *nx_engine_config(const nx_engine_t *self);
const char *nx_engine_backend_name(const nx_engine_t *self); /* "cpu" or "cuda" */

/* Bytes of one sequence's KV cache of `tokens` tokens on a backend (K and V for every layer
 * and KV head: fp32 on the CPU; BF16 on CUDA, fp32 there too with NEXUS_CUDA_KV=f32): what
 * nx_seq_new takes from the pool, before the pool rounds it up to whole chunks. For sizing
 * pools and admission. */
uint64_t nx_kv_bytes(const nx_model_config_t *config, nx_device_kind_t device, uint32_t tokens);

/* Pool bytes an engine on `device` takes when it is created, besides the weights and the KV
 * caches: on CUDA its scratch region (activations, cuBLAS's workspace); 0 on the CPU, whose
 * scratch is host memory. Before the pool rounds it up to whole chunks. For admission. */
uint64_t nx_engine_scratch_bytes(const nx_model_config_t *config, nx_device_kind_t device);

/* A sequence with a KV cache of `capacity` tokens (0: the engine's max_context) from the pool:
 * NX_EPOOLFULL when it does not fit. all_logits keeps every processed token's logits (tests),
 * otherwise only the last one's. */
nx_seq_t *nx_seq_new(nx_engine_t *engine, uint32_t capacity, bool all_logits, nx_err_t *err);
void nx_seq_destroy(nx_engine_t *engine, nx_seq_t **seq_p);
uint32_t nx_seq_len(const nx_seq_t *seq);      /* tokens already in the KV cache */
uint32_t nx_seq_capacity(const nx_seq_t *seq);
uint32_t nx_seq_queued(const nx_seq_t *seq);   /* tokens fed for the next step */
/* Queue tokens for the next step (a prompt, or the token just sampled). NX_EINVAL when
 * len + queued + n would exceed the capacity ("prompt of N tokens is longer than the context
 * of M"), or an id is outside the vocabulary. */
int nx_seq_feed(nx_seq_t *seq, const int32_t *ids, size_t n, nx_err_t *err);
void nx_seq_reset(nx_seq_t *seq); /* empty again; keeps its KV region */

/* Advance `count` sequences of this engine together: each processes all its queued tokens
 * (prompt rows and single decode rows go through the same matrix-matrix pass), then holds
 * the logits of what it processed. Sequences may join and leave between steps. A sequence
 * with nothing queued is NX_EINVAL. */
int nx_engine_step(nx_engine_t *self, nx_seq_t *const *seqs, size_t count, nx_err_t *err);
/* Logits (host memory, fp32) of the last step: `rows` rows of vocab floats — the last
 * processed token only, or every one with all_logits. Valid until the next step. NULL with
 * rows 0 after a step that picked the sequence's next token (nx_seq_pick_next). */
const float *nx_seq_logits(const nx_seq_t *seq, size_t *rows_out);

/* Have the next step pick the sequence's next token from its last row with `sampler`, instead
 * of returning logits: on the CUDA backend the pick (repetition penalty, greedy or temperature,
 * top-k, top-p, min-p and the draw) runs on the GPU and only the id crosses the bus; on the CPU
 * backend it is nx_sampler_pick on the step's logits. The sampler's draw is taken here, so the
 * same seed gives the same draws on either backend. sampler and history (the repetition
 * penalty's input) are borrowed until that step ends. NX_EINVAL for an all_logits sequence. */
int nx_seq_pick_next(nx_seq_t *seq, nx_sampler_t *sampler, const int32_t *history,
                     size_t history_len, nx_err_t *err);
/* The id the last step picked; -1 when it picked none. */
int32_t nx_seq_picked(const nx_seq_t *seq);

/* ------------------------------------------------------------------------------------------
 * Generation on one sequence (what `nexusctl run` uses; the orchestrator uses the step API)
 */
typedef int (*nx_emit_fn)(void *user, const char *text, size_t len); /* non-zero: stop */

typedef struct nx_gen_result {
    int32_t *ids;           /* generated ids (malloc'ed) */
    size_t count;
    char *text;             /* their text (malloc'ed) */
    uint32_t prompt_tokens;
    double prefill_seconds; /* the prompt's step */
    double decode_seconds;  /* all later steps */
    const char *stop_reason; /* "eos", "stop", "length" or "emit" (static string) */
} nx_gen_result_t;

/* Feed the prompt, then sample until a stop id, a stop string, max_tokens or the context's
 * end; stream text pieces (whole characters) through emit (may be NULL). */
int nx_generate(nx_engine_t *engine, nx_seq_t *seq, const nx_tokenizer_t *tok,
                const int32_t *prompt, size_t prompt_len, const nx_sampling_t *sampling,
                const int32_t *stop_ids, size_t stop_id_count, nx_emit_fn emit, void *user,
                nx_gen_result_t *out, nx_err_t *err);
void nx_gen_result_free(nx_gen_result_t *result);

/* Generation state of one sequence, for callers that drive the step API themselves (the
 * orchestrator's executor): sampling, stop ids, stop strings with hold-back, streaming
 * detokenization and max_tokens, exactly as nx_generate applies them (it is built on this).
 * The caller feeds the prompt, steps, then calls nx_gen_advance with the sequence's last
 * logits after every step until nx_gen_stop_reason is non-NULL, feeding *next_out otherwise
 * (under a grammar: every id of nx_gen_next_ids, which starts with *next_out). */
typedef struct nx_gen nx_gen_t;

/* sampling (and its stop strings) and tok are borrowed and must outlive the state; the prompt
 * and stop ids are copied. emit (may be NULL) receives decided text pieces. Caller owns it. */
nx_gen_t *nx_gen_new(const nx_tokenizer_t *tok, uint32_t vocab, const nx_sampling_t *sampling,
                     const int32_t *prompt, size_t prompt_len, const int32_t *stop_ids,
                     size_t stop_id_count, nx_emit_fn emit, void *user, nx_err_t *err);
void nx_gen_destroy(nx_gen_t **self_p);
/* Sample the next token from `logits` (vocab floats). room_left: the sequence can hold one
 * more token. When generation goes on, *next_out is the id to feed before the next step;
 * when it ends, nx_gen_stop_reason says why and all decided text has been emitted. */
int nx_gen_advance(nx_gen_t *self, const float *logits, bool room_left, int32_t *next_out,
                   nx_err_t *err);
/* The same with the next token picked by the engine: nx_gen_pick_next asks the sequence's next
 * step to pick with this generation's sampler and history (nx_seq_pick_next); after the step,
 * nx_gen_advance_id takes nx_seq_picked(seq) where nx_gen_advance would have sampled. Under a
 * grammar, the first nx_gen_pick_next also feeds seq the tokens the grammar forces at the
 * start of the output (they are output: ids, text, max_tokens), so they share the prompt's
 * step. The grammar's mask for the pick is computed during the step, once the forward pass is
 * issued (on a GPU, while it runs): `self` must outlive the step, and a mask's error (the
 * matcher over its caps) fails nx_engine_step. NEXUS_GRAMMAR_MASK=eager (read by nx_gen_new)
 * computes it here instead; the picks are the same. */
int nx_gen_pick_next(nx_gen_t *self, nx_seq_t *seq, nx_err_t *err);
int nx_gen_advance_id(nx_gen_t *self, int32_t id, bool room_left, int32_t *next_out,
                      nx_err_t *err);
/* The ids to feed before the next step, after nx_gen_advance / nx_gen_advance_id went on:
 * *next_out first, then the tokens a grammar forced after it (appended to the output without
 * sampling: counted in max_tokens, streamed, never past the sequence's room as known at
 * nx_gen_pick_next). Without a grammar (or a forced run) it is just *next_out. Valid until the
 * next advance; 0 once generation ended. Feed them all at once (nx_seq_feed takes many; the
 * step processes every queued row). */
size_t nx_gen_next_ids(const nx_gen_t *self, const int32_t **ids);
/* "eos", "stop", "length", "emit", or NULL while generating. */
const char *nx_gen_stop_reason(const nx_gen_t *self);
const char *nx_gen_text(const nx_gen_t *self);        /* the text so far (NUL-terminated) */
size_t nx_gen_count(const nx_gen_t *self);            /* generated ids so far */
const int32_t *nx_gen_ids(const nx_gen_t *self);      /* nx_gen_count of them */

/* ------------------------------------------------------------------------------------------
 * Grammar-constrained generation (agents/gen_grammar.c; the grammar engine is agents/grammar.h)
 *
 * While the grammar applies, every pick is masked to the tokens that keep the output inside
 * it (on the CPU the pick plan carries the mask into sampler.c, on CUDA into the GPU's pick),
 * before the repetition penalty, temperature, top-k, top-p and min-p: the draw follows the
 * constrained distribution exactly, nothing is resampled. The generation's stop ids are
 * allowed only where the grammar accepts. Generation ends
 *   - "eos" when the model picks a stop id (only possible where the grammar accepts);
 *   - "stop" when the matcher is finished (it accepts and no byte can follow): the last
 *     token completed the sentence, no end id is needed;
 *   - "length" at max_tokens or the context's end, as without a grammar.
 * Stop strings apply to free text only (before the grammar starts, the thinking block); text
 * generated under the grammar is never cut by a stop string (the grammar decides its end).
 */
typedef struct nx_gram nx_gram_t;
typedef struct nx_gram_vocab nx_gram_vocab_t;

typedef struct nx_gen_grammar {
    const nx_gram_t *gram;          /* borrowed, outlives the nx_gen; NULL: only banned_ids */
    const nx_gram_vocab_t *vocab;   /* borrowed: the trie of the model's tokenizer, built with
                                     * the generation's stop ids as its end ids */
    /* Lazy start: free text until one of these is generated, then the grammar applies,
     * starting with the trigger's own bytes (and any bytes after it in the same token), fed to
     * the matcher. None: from the start. */
    const int32_t *trigger_ids;
    size_t trigger_id_count;
    const char *const *trigger_strs;
    size_t trigger_str_count;
    /* A trigger counts only at the output's start (after the thinking block and leading
     * whitespace): Llama 3's JSON calls are the whole answer. */
    bool trigger_at_start;
    /* A thinking block stays free: when the output opens with think_open (e.g. "<think>"),
     * the grammar (or trigger search) starts after think_close ("</think>") and any
     * whitespace after it. NULL: none. Without triggers, the first pick may be think_open's
     * first token as well as what the grammar allows. */
    const char *think_open, *think_close;
    /* Ids never picked in free text (before the trigger, thinking included): tool_choice
     * "none" bans the tool-call opener. */
    const int32_t *banned_ids;
    size_t banned_id_count;
    /* Optional, borrowed: a matcher of gram and vocab (grammar.h) shared by the generations
     * that one thread drives (an executor's), each with its own state in it, so the masks
     * (and the token-class walks behind them) one generation computes serve all: without it,
     * every generation has a matcher of its own and starts with cold masks. Must outlive the
     * nx_gen and not be reset while one uses it. NULL: a matcher of its own. */
    struct nx_gram_matcher *matcher;
} nx_gen_grammar_t;

/* Constrain generation by a grammar. Before the first pick (NX_ESTATE after it). Copies what
 * it needs (ids, strings); gram and vocab stay borrowed. NX_EINVAL on a bad combination
 * (gram without vocab, a vocabulary larger than the model's, think_open without
 * think_close, triggers or think without a grammar, an id outside the vocabulary, an empty
 * trigger string). */
int nx_gen_set_grammar(nx_gen_t *g, const nx_gen_grammar_t *grammar, nx_err_t *err);
/* The grammar has started (the trigger was generated, or no trigger). */
bool nx_gen_grammar_started(const nx_gen_t *g);
/* The grammar's text so far is a complete sentence (it accepts; it may be finished). */
bool nx_gen_grammar_accepted(const nx_gen_t *g);
/* nx_generate under a grammar (NULL: nx_generate itself): the grammar is set on the
 * generation's state before the prompt's step, so the first pick is already masked. */
int nx_generate_grammar(nx_engine_t *engine, nx_seq_t *seq, const nx_tokenizer_t *tok,
                        const int32_t *prompt, size_t prompt_len, const nx_sampling_t *sampling,
                        const int32_t *stop_ids, size_t stop_id_count,
                        const nx_gen_grammar_t *grammar, nx_emit_fn emit, void *user,
                        nx_gen_result_t *out, nx_err_t *err);

#endif
