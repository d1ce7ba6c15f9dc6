/* cuda_kernels.h — internal: the CUDA engine backend's kernels, as C-callable launchers
 * (defined in cuda_kernels.cu and cuda_attention.cu; called by backend_cuda.c).
 *
 * Every launcher queues its kernel(s) on `stream` (a cudaStream_t) and returns the
 * cudaError_t of the launch as an int (0: queued; cudaGetLastError is read right after each
 * launch, so a bad configuration surfaces here, not at the next sync). None of them
 * synchronizes, allocates or copies between host and device, so all of them can be captured
 * in a CUDA graph.
 *
 * Conventions: activations are fp32, dense, row-major [n][dim]; weights are as stored in the
 * pool, row-major [rows][cols] in BF16, F16 or F32, or matrices in ggml's blocks (NX_CU_*).
 * Each launcher that has a "simple" flag has two versions: the simple one (one thread per
 * output, no shared memory, no shuffles) is there to be obviously correct and to bisect the
 * fast one against (NEXUS_CUDA_KERNELS=simple).
 *
 * The step's per-row scalars (token, position, KV cache) live in device memory (nx__cu_row_t),
 * written before each pass, so one captured graph replays unchanged for every decode step.
 *
 * KV cache (one pool region per sequence, in the CPU backend's layout):
 *   [layer][k|v][kv_head][capacity][head_dim]
 * of BF16 (half the bytes: twice the sequences or context in the same VRAM, half the
 * attention's reads) or, with NEXUS_CUDA_KV=f32, fp32 as on the CPU (nx__cu_shape_t.kv_bf16).
 * Attention reads BF16 keys and values into fp32 and accumulates in fp32.
 */
#ifndef NX_CUDA_KERNELS_H
#define NX_CUDA_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Weight element types (kernel-side codes; backend_cuda.c maps nx_dtype_t to these): plain
 * elements, then ggml's block types (quant.h's layouts, bit for bit; matrices only: norms and
 * biases are plain). A block type's matrix [rows][cols] is rows x cols / QK blocks, row after
 * row; cols is a multiple of QK. cuda_blocks.cuh is the device-side table of the block types. */
enum {
    NX_CU_BF16 = 0,
    NX_CU_F16 = 1,
    NX_CU_F32 = 2,
    NX_CU_Q8_0 = 3, /* 32 elements in 34 bytes */
    NX_CU_Q4_0 = 4, /* 32 in 18 */
    NX_CU_Q5_0 = 5, /* 32 in 22 */
    NX_CU_Q4_K = 6, /* 256 in 144 */
    NX_CU_Q6_K = 7, /* 256 in 210 */
};

/* Whether dt is one of the block types. */
static inline bool nx__cu_is_block(int32_t dt)
{
    return dt >= NX_CU_Q8_0 && dt <= NX_CU_Q6_K;
}
/* Elements and bytes per block of a block type (1 and the element size for plain types). */
static inline uint32_t nx__cu_block_elems(int32_t dt)
{
    return dt == NX_CU_Q4_K || dt == NX_CU_Q6_K ? 256 : nx__cu_is_block(dt) ? 32 : 1;
}
static inline uint32_t nx__cu_block_bytes(int32_t dt)
{
    static const uint8_t bytes[] = {2, 2, 4, 34, 18, 22, 144, 210};
    return dt >= 0 && dt <= NX_CU_Q6_K ? bytes[dt] : 0;
}

/* A vector or matrix in the pool. */
typedef struct nx__cu_w {
    const void *ptr; /* device pointer; NULL: absent (optional biases, q/k norms) */
    int32_t dtype;   /* NX_CU_* */
} nx__cu_w_t;

/* One batch row's step scalars, in device memory. 24 bytes. */
typedef struct nx__cu_row {
    void *kv;          /* its sequence's KV cache (device; BF16 or fp32 as shape.kv_bf16) */
    uint32_t pos;      /* its position; its attention covers cache positions 0..pos */
    uint32_t capacity; /* the cache's capacity in tokens (pos < capacity) */
    int32_t token;
    uint32_t reserved;
} nx__cu_row_t;

/* Model shape the kernels need. */
typedef struct nx__cu_shape {
    uint32_t hidden, heads, kv_heads, head_dim, layers;
    float rms_eps;
    bool kv_bf16; /* the KV caches hold BF16 (else fp32) */
    bool rope_adjacent; /* RoPE pairs (2i, 2i+1), else (i, i + head_dim/2): see
                         * nx_model_config_t.rope_adjacent */
} nx__cu_shape_t;

/* x[r] = embed[rows[r].token] as fp32, r < n (any NX_CU_* type). */
int nx__cu_embed(void *stream, const nx__cu_row_t *rows, uint32_t n, nx__cu_w_t embed,
                 uint32_t hidden, float *x);

/* RoPE tables: cos_t[r][i] = cos(pos_r * inv_freq[i]) (computed in double, as the CPU
 * backend), sin_t likewise; [n][half]. */
int nx__cu_rope_table(void *stream, const nx__cu_row_t *rows, uint32_t n,
                      const double *inv_freq, uint32_t half, float *cos_t, float *sin_t);

/* out[r] = rmsnorm(x[gather ? gather[r] : r]) * weight, r < n; rows of `dim` floats. */
int nx__cu_rmsnorm(void *stream, const float *x, const uint32_t *gather, uint32_t n,
                   uint32_t dim, nx__cu_w_t weight, float eps, float *out);

/* The matrix-vector product for decode: y = x W^T (+ bias) for up to NX_CU_GEMV_MAX_ROWS
 * rows, each weight streamed from memory once for all rows. Up to three weights with the same
 * cols (q, k, v) in one launch; or silu_pair: seg[0] is gate and seg[1] up, and
 * seg[0].y = silu(x gate^T) * (x up^T). */
#define NX_CU_GEMV_MAX_ROWS 8
typedef struct nx__cu_gemv_seg {
    nx__cu_w_t w;     /* [rows][cols] */
    uint32_t rows;    /* output features */
    nx__cu_w_t bias;  /* [rows] or ptr NULL */
    float *y;         /* [n][rows] */
} nx__cu_gemv_seg_t;

typedef struct nx__cu_gemv {
    nx__cu_gemv_seg_t seg[3];
    uint32_t seg_count; /* 1..3; 2 with silu_pair */
    uint32_t cols;      /* K of every segment */
    const float *x;     /* [n][cols] */
    uint32_t n;
    bool accumulate;    /* y += instead of y = (residual adds) */
    bool silu_pair;
    /* The fused RMSNorm: when norm.ptr is set, the product is taken with rmsnorm(x) * norm
     * ([cols], norm_eps) instead of x. Fast kernel only (nx__cu_gemv_fast_ok says whether it
     * takes it); the caller otherwise runs nx__cu_rmsnorm first and leaves norm.ptr NULL. */
    nx__cu_w_t norm;
    float norm_eps;
} nx__cu_gemv_t;

/* Whether the fast kernel takes g (else the caller uses simple or cuBLAS): n <= 8, every
 * segment of one dtype. Plain dtypes: the norm (if any) of that dtype too, cols a multiple of
 * a 16-byte vector, weights, norm and x 16-byte aligned. Block types (cuda_quant.cu): cols a
 * multiple of the block, weights 2-byte aligned (any GGUF tensor), x 16-byte aligned, the norm
 * (if any) plain and 16-byte aligned. */
bool nx__cu_gemv_fast_ok(const nx__cu_gemv_t *g);
/* simple: one thread per output element (any n; block types decoded element by element from
 * quant.h's formulas). Fast: one warp per output row (block types: the quantized GEMV of
 * cuda_quant.cu, fp32 activations). A g with a norm that the fast kernel does not take (or
 * with simple) is cudaErrorInvalidValue. */
int nx__cu_gemv(void *stream, const nx__cu_gemv_t *g, bool simple);

/* The quantized GEMV (cuda_quant.cu), what nx__cu_gemv calls for a block type: whether it
 * takes g, and its launch (g taken; total_rows: output rows over all segments, or gate's rows
 * with silu_pair). */
bool nx__cu_qgemv_ok(const nx__cu_gemv_t *g);
int nx__cu_qgemv(void *stream, const nx__cu_gemv_t *g, uint32_t total_rows);

/* out = rows [row_first, row_first + rows) of the block-type matrix w ([*][cols]) as BF16,
 * row-major [rows][cols] (out 16-byte aligned): what the cuBLAS path multiplies with when the
 * weight is quantized (cuda_quant.cu). cudaErrorInvalidValue for a plain dtype. */
int nx__cu_dequant_bf16(void *stream, nx__cu_w_t w, uint32_t cols, uint32_t row_first,
                        uint32_t rows, void *out);

/* Per row r and head: q/k per-head RMSNorm (when q_norm/k_norm are given), rotate-half RoPE
 * (cos_t/sin_t from nx__cu_rope_table), then k and v into the row's cache slot at `layer`.
 * q [n][heads*hd], k and v [n][kv_heads*hd] (q and k are changed in place). */
int nx__cu_qk_rope_kv(void *stream, const nx__cu_row_t *rows, uint32_t n,
                      const nx__cu_shape_t *shape, uint32_t layer, float *q, float *k,
                      const float *v, nx__cu_w_t q_norm, nx__cu_w_t k_norm,
                      const float *cos_t, const float *sin_t);

/* Causal GQA attention of every row over its sequence's cache (positions 0..pos):
 * att[r][h*hd..] = softmax(q k^T / sqrt(hd)) v. The fast version splits a row's context
 * across up to `splits` blocks (flash-decoding: partial max/sum/output per split in
 * `partial`, then a combine kernel); partial holds n * heads * splits * (hd + 2) floats.
 * head_dim <= NX_CU_MAX_HEAD_DIM. */
#define NX_CU_MAX_HEAD_DIM 256
int nx__cu_attention(void *stream, const nx__cu_row_t *rows, uint32_t n,
                     const nx__cu_shape_t *shape, uint32_t layer, const float *q, float *att,
                     uint32_t splits, float *partial, bool simple);

/* g[i] = silu(g[i]) * u[i], i < count (the cuBLAS path's MLP). */
int nx__cu_silu_mul(void *stream, float *g, const float *u, uint64_t count);
/* y[r][c] += bias[c], r < n, c < cols. */
int nx__cu_add_bias(void *stream, float *y, uint32_t n, uint32_t cols, nx__cu_w_t bias);
/* out = x as BF16 or F16 (dtype), count elements (the cuBLAS path's input). */
int nx__cu_to_half(void *stream, const float *x, uint64_t count, int32_t dtype, void *out);
/* One token pick on the GPU (pick.h's plan, as the kernel reads it), in device memory. */
typedef struct nx__cu_pick {
    uint32_t row;            /* the logits row it picks from */
    uint32_t top_k;          /* 0, or >= vocab: off */
    float temperature;       /* 0: greedy */
    float top_p;             /* 1: off */
    float min_p;             /* 0: off */
    float repetition_penalty;
    float draw;              /* uniform in [0, 1) */
    uint32_t penalty_first;  /* its distinct ids are penalty_ids[first, first + count) */
    uint32_t penalty_count;
    uint32_t flags;          /* NX_CU_PICK_* */
    uint32_t allow_bits;     /* NX_CU_PICK_MASK: ids < allow_bits whose bit is set may be
                              * picked, the bits at masks[mask_slot * mask_words] */
    uint32_t mask_slot;
} nx__cu_pick_t;

/* Skip the fast path (a sorted prefix in shared memory) and decide by the exact search over
 * the whole row: NEXUS_CUDA_PICK=exact, to bisect and to test both paths. */
#define NX_CU_PICK_EXACT 1u
/* The pick carries a grammar's token mask (pick.h allow): disallowed logits become -inf before
 * everything else, so the draw follows the constrained distribution; all allowed logits -inf
 * picks the lowest allowed id (the CPU sampler's fallback). */
#define NX_CU_PICK_MASK 2u

/* ids[i] = the token picks[i] chooses from row picks[i].row of logits ([rows][vocab]), i <
 * count, one block per pick (cuda_sample.cu): the repetition penalty (applied to the row in
 * place), then the greedy argmax, or temperature, top-k, top-p, min-p and the draw, with the
 * CPU sampler's semantics (ranking by logit, lower id first among equals). Deterministic: the
 * same logits and plan give the same id. */
int nx__cu_sample(void *stream, float *logits, uint32_t vocab, const nx__cu_pick_t *picks,
                  uint32_t count, const int32_t *penalty_ids, const uint32_t *masks,
                  uint32_t mask_words, int32_t *ids);

#ifdef __cplusplus
}
#endif

#endif
