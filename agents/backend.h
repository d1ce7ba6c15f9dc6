/* backend.h — internal: the table of functions the engine drives a forward pass through.
 *
 * engine.c is backend-agnostic: it reads the config, validates and binds the weights (pointers
 * into the model's pool region), keeps the sequences and builds each step's batch. A backend
 * (cpu_backend.c now; a CUDA one later, behind the same table) computes. Weights and KV caches
 * are pool regions, so on CUDA they are device pointers and nothing here assumes host memory
 * except the logits destinations, which are always host buffers.
 *
 * A step is a flat batch of rows, one per token: rows of a sequence are contiguous and at
 * consecutive positions starting at that sequence's current length. Attention of a row covers
 * its sequence's KV cache up to and including its own position (causal).
 */
#ifndef NX_BACKEND_H
#define NX_BACKEND_H

#include "nx_engine.h"
#include "pick.h"

/* A weight as stored in the pool: dtype BF16, F16 or F32, row-major [rows][cols]. */
typedef struct nx__wref {
    const void *ptr; /* NULL when the model has no such tensor (optional biases) */
    nx_dtype_t dtype;
    uint32_t rows;   /* shape[0] */
    uint32_t cols;   /* shape[1]; 1 for vectors */
} nx__wref_t;

typedef struct nx__layer_weights {
    nx__wref_t attn_norm;             /* [hidden] input_layernorm */
    nx__wref_t q, k, v, o;            /* [heads*hd, hidden], [kv*hd, hidden] x2, [hidden, heads*hd] */
    nx__wref_t q_bias, k_bias, v_bias; /* [heads*hd], [kv*hd] x2; ptr NULL without qkv_bias */
    nx__wref_t o_bias;                /* [hidden]; llama/qwen3 with attention_bias, else NULL */
    nx__wref_t q_norm, k_norm;        /* [hd] per-head RMSNorm (qwen3), else NULL */
    nx__wref_t mlp_norm;              /* [hidden] post_attention_layernorm */
    nx__wref_t gate, up, down;        /* [inter, hidden] x2, [hidden, inter] */
} nx__layer_weights_t;

typedef struct nx__weights {
    nx__wref_t embed;            /* [vocab, hidden] */
    nx__wref_t norm;             /* [hidden] final norm */
    nx__wref_t lm_head;          /* [vocab, hidden]: lm_head.weight, or embed when tied */
    nx__layer_weights_t *layers; /* config.layers entries */
} nx__weights_t;

/* A sequence's KV cache as the backend keeps it (a pool region). */
typedef struct nx__kv {
    nx_region_t *region;
    void *base;        /* nx_region_ptr(region) */
    uint32_t capacity; /* tokens */
} nx__kv_t;

typedef struct nx__batch_seq {
    nx__kv_t *kv;
    uint32_t row_first; /* its rows are [row_first, row_first + row_count) */
    uint32_t row_count;
    uint32_t pos_first; /* position of its first row = tokens already in its cache */
} nx__batch_seq_t;

typedef struct nx__batch {
    const int32_t *tokens;       /* [rows] */
    const uint32_t *positions;   /* [rows] */
    const uint32_t *row_seq;     /* [rows] index into seqs */
    uint32_t rows;
    const nx__batch_seq_t *seqs; /* [seq_count] */
    uint32_t seq_count;
    const uint32_t *logit_rows;  /* [logit_count] rows whose logits are wanted */
    float *const *logit_out;     /* [logit_count] host destinations, vocab floats each */
    uint32_t logit_count;
    /* Only for a backend with picks_on_device, else NULL: [logit_count] a plan where the
     * backend picks that row's token itself and writes the id to picked[i] instead of the
     * logits to logit_out[i]; NULL where the logits are wanted. */
    const nx__pick_t *const *picks;
    int32_t *picked;             /* [logit_count] */
    /* The engine's hook for deferred masks (nx__seq_defer_mask), NULL when the step has none:
     * forward calls it once the forward pass is issued and before any pick, and fails with
     * its error. It sets picks[i]->allow of the plans whose masks were deferred. A backend
     * that picks on the device calls it after enqueuing the layers, before the masks go up,
     * so the host computes them while the device runs; the engine does the work at the first
     * call of a step (later calls return NX_OK). */
    int (*before_picks)(void *user, nx_err_t *err);
    void *before_picks_user;
} nx__batch_t;

typedef struct nx__backend_ops {
    const char *name; /* "cpu", "cuda" */
    bool picks_on_device; /* forward carries out batch->picks (else the engine picks on the
                           * host from the logits) */
    /* Per engine: keep config and weights (both outlive the backend state). */
    int (*init)(const nx_model_config_t *config, const nx__weights_t *weights, nx_pool_t *pool,
                const nx_engine_opts_t *opts, void **state_out, nx_err_t *err);
    void (*destroy)(void *state);
    /* A KV cache for `capacity` tokens as a pool region owned by `owner`. */
    int (*kv_alloc)(void *state, uint32_t capacity, const char *owner, nx__kv_t *kv_out,
                    nx_err_t *err);
    void (*kv_free)(void *state, nx__kv_t *kv);
    /* Run every row of the batch through the model, write K/V of each row into its
     * sequence's cache, and the logits of batch->logit_rows to batch->logit_out; call
     * batch->before_picks (when set) between issuing the pass and the picks. */
    int (*forward)(void *state, const nx__batch_t *batch, nx_err_t *err);
} nx__backend_ops_t;

extern const nx__backend_ops_t nx__cpu_backend;

/* The CUDA backend's table (backend_cuda.c), or NULL with NX_ENOTSUP when the build has no
 * CUDA (backend_nocuda.c). */
const nx__backend_ops_t *nx__cuda_backend(nx_err_t *err);

/* Whether CUDA KV caches are fp32 (NEXUS_CUDA_KV=f32, to bisect or compare with the CPU
 * exactly) rather than BF16: read by nx_kv_bytes and the CUDA backend alike (engine.c). */
bool nx__cuda_kv_f32(void);

/* Bytes of a KV cache of `tokens` tokens with elements of elem_bytes (the layout both backends
 * share); nx_kv_bytes is this with the device's element size. */
uint64_t nx__kv_bytes_elem(const nx_model_config_t *config, uint32_t tokens, uint32_t elem_bytes);

/* Pool bytes the CUDA backend's scratch region (activations, cuBLAS's workspace) takes for a
 * model of this shape, at most (with the workspace); 0 in a build without CUDA. */
uint64_t nx__cuda_scratch_bytes(const nx_model_config_t *config);

/* The GPU's pick kernel on its own, for tests and benchmarks: ids[i] = plans[i] carried out
 * on row i of logits ([rows][vocab], host memory; copied, not changed) on the current device.
 * NX_ENOTSUP without CUDA in the build, NX_EDEVICE naming the failed call. */
int nx__cuda_pick_rows(const float *logits, uint32_t rows, uint32_t vocab,
                       const nx__pick_t *plans, int32_t *ids, nx_err_t *err);

#endif
