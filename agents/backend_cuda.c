/* backend_cuda.c — the forward pass on a CUDA GPU, behind the backend table (backend.h).
 *
 * NOT YET RUN ON A GPU: written on a machine without one. It compiles and links, and it has
 * run only under the CPU emulation of tests/cuemu (make emu-test: it checks index arithmetic,
 * barriers and host orchestration; not the hardware, not speed), where tests/test_cuda_engine.c
 * passes. That test compares it with the CPU backend on the first GPU session;
 * NEXUS_CUDA_KERNELS=simple (naive kernels, no cuBLAS, no graphs) and NEXUS_CUDA_GRAPHS=0 are
 * there to bisect.
 *
 * Data: weights are used in place in the pool (BF16/F16/F32 as stored, or ggml's blocks from a
 * GGUF file: Q8_0, Q4_0, Q5_0, Q4_K, Q6_K, read packed by cuda_quant.cu); activations, the
 * residual stream and every accumulation are fp32. KV caches are pool regions per sequence,
 * in the CPU backend's layout [layer][k|v][kv_head][capacity][head_dim], in BF16 (half the
 * VRAM per token of context, so twice the sequences fit beside the resident models, and half
 * the attention's reads); NEXUS_CUDA_KV=f32 keeps them fp32 like the CPU's, to bisect a
 * difference from the CPU backend. All scratch (activations for NX_CUDA_ROWS_MAX rows, attention
 * partials, logits for LOGIT_CHUNK rows, cuBLAS's workspace, the BF16 dequantization buffer of
 * a quantized model) is one pool region taken at init,
 * so a step never allocates and out-of-memory is the pool's NX_EPOOLFULL.
 *
 * A step's rows go through in passes of at most NX_CUDA_ROWS_MAX rows (all layers per pass;
 * correct because a row only attends to positions of its own sequence written by earlier
 * passes or earlier in this pass). In a pass of at most NX_CU_GEMV_MAX_ROWS rows every matmul
 * is the GEMV kernel (each weight streamed once, 16-byte loads; the RMSNorm before the QKV and
 * gate-up products is fused into them, NEXUS_CUDA_FUSE_NORM=0 keeps it a kernel of its own to
 * bisect and to measure the fusion against); in a larger pass they are
 * cuBLAS GEMMs (activations rounded to the weight's 16-bit type, fp32 accumulation; a
 * quantized weight is first dequantized to BF16 into the scratch, the rows of a chunk at a
 * time, except that up to 16 rows still take the quantized GEMV in two slices). A pass of
 * decode rows only (one row per sequence, each wanting its logits) replays a CUDA graph of the
 * whole forward pass, one per row count (up to MAX_GRAPHS of them; cuBLAS is captured too):
 * the per-row scalars it reads (token, position, KV cache) are copied to device memory before
 * the launch, so the graph never changes. The logits then stay on the GPU where the engine
 * asked for picks (nx_seq_pick_next): cuda_sample.cu picks there and only the ids come back.
 */
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_kernels.h" /* nx__k_rope_inv_freq: the same RoPE frequencies as the CPU */
#include "cublas_dl.h"
#include "cuda_kernels.h"
#include "device.h"
#include "kprof_cuda.h"

/* cublas_dl.h spells CUDA's constants itself (it must build without CUDA headers). */
_Static_assert(NX_CUBLAS_OP_N == CUBLAS_OP_N && NX_CUBLAS_OP_T == CUBLAS_OP_T, "cuBLAS ops");
_Static_assert(NX_CUDA_R_32F == CUDA_R_32F && NX_CUDA_R_16F == CUDA_R_16F &&
                   NX_CUDA_R_16BF == CUDA_R_16BF,
               "CUDA data types");
_Static_assert(NX_CUBLAS_COMPUTE_32F == CUBLAS_COMPUTE_32F, "cuBLAS compute type");
_Static_assert(NX_CUBLAS_GEMM_DEFAULT == CUBLAS_GEMM_DEFAULT, "cuBLAS algorithm");
_Static_assert(NX_CUBLAS_STATUS_SUCCESS == CUBLAS_STATUS_SUCCESS, "cuBLAS status");
_Static_assert(sizeof(nx__cu_row_t) == 24, "row scalars as the kernels read them");

#define NX_CUDA_ROWS_MAX 256      /* rows per pass (prefill chunk) */
#define LOGIT_CHUNK 16            /* logit rows computed and copied at a time (>= GEMV rows) */
#define DECODE_SPLITS 32          /* attention splits per row in decode passes */
#define BLAS_WORKSPACE (32u << 20) /* what cuBLAS recommends on Hopper */
#define MAX_GRAPHS 48             /* decode batch sizes with a captured graph, per engine */
/* Quantized weights: the most elements dequantized to BF16 at a time for cuBLAS (64 MiB; a
 * larger matrix goes through in row chunks), and the most rows a quantized matmul takes as
 * GEMV slices of NX_CU_GEMV_MAX_ROWS rows instead of dequantizing (each slice streams the
 * packed weight once, about 0.6 to 1.1 bytes per weight, where the dequantization writes and
 * then reads 2 bytes per weight besides reading the packed ones: two slices are still cheaper
 * on paper; a guess to check on a GPU, not a measurement). */
#define DEQUANT_MAX_ELEMS (32ull << 20)
#define QGEMV_SLICED_ROWS (2 * NX_CU_GEMV_MAX_ROWS)
_Static_assert(LOGIT_CHUNK <= QGEMV_SLICED_ROWS, "a quantized head never needs dequantizing");

typedef struct cuda_state {
    const nx_model_config_t *cfg;
    const nx__weights_t *w;
    nx_pool_t *pool;
    int device;
    bool simple;     /* NEXUS_CUDA_KERNELS=simple: naive kernels, no cuBLAS, no graphs */
    bool use_graphs; /* NEXUS_CUDA_GRAPHS=0 turns graphs off */
    bool fuse_norm;  /* NEXUS_CUDA_FUSE_NORM=0: RMSNorm as its own kernel before every GEMV */
    bool pick_exact; /* NEXUS_CUDA_PICK=exact: sampled picks without the fast path */
    nx__kprof_t *prof; /* NEXUS_CUDA_PROFILE=1 (graphs off): GPU time by launch; else NULL */
    nx__cu_shape_t shape;
    cudaStream_t stream;
    const nx__cublas_api_t *blas;
    nx__cublas_handle_t blas_handle;
    nx_region_t *scratch; /* every device buffer below lives in it */
    /* device, [NX_CUDA_ROWS_MAX][...] unless said */
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *rope_cos, *rope_sin;
    void *xh;             /* [rows][widest] BF16/F16: cuBLAS's input */
    float *logits;        /* [LOGIT_CHUNK][vocab] */
    float *partial;       /* attention partials, partial_entries * (head_dim + 2) */
    uint64_t partial_entries; /* (row, head, split) triples it holds */
    double *inv_freq;     /* [head_dim / 2] */
    nx__cu_row_t *rows_dev;
    uint32_t *gather_dev; /* [NX_CUDA_ROWS_MAX] logit rows of the pass */
    void *blas_workspace;
    void *wdq;            /* BF16 [dequant_elems]: a quantized weight's rows for cuBLAS, or
                           * NULL when no weight is quantized (or simple) */
    uint64_t dequant_elems;
    uint32_t dequant_rows_max; /* NEXUS_CUDA_DEQUANT_ROWS (tests): rows per chunk at most; 0 */
    nx__cu_pick_t *picks_dev; /* [LOGIT_CHUNK] picks of a logits chunk */
    int32_t *penalty_dev;     /* [vocab] their penalty ids (one pick's always fit) */
    uint32_t *masks_dev;      /* [LOGIT_CHUNK][mask_words] their grammar masks */
    int32_t *ids_dev;         /* [LOGIT_CHUNK] the picked ids */
    /* pinned host */
    nx__cu_row_t *rows_host;
    uint32_t *gather_host;
    float *logits_host;   /* [LOGIT_CHUNK][vocab] */
    nx__cu_pick_t *picks_host;
    int32_t *penalty_host;
    uint32_t *masks_host;     /* [LOGIT_CHUNK][mask_words] */
    int32_t *ids_host;
    cudaGraphExec_t graphs[NX_CUDA_ROWS_MAX + 1]; /* by decode row count; NULL: none yet */
    uint32_t graph_count; /* captured so far (at most MAX_GRAPHS) */
} cuda_state_t;

/* ------------------------------------------------------------------------------------------
 * Errors: every CUDA call is checked and becomes NX_EDEVICE naming it, never an abort.
 */
static int cu_fail(nx_err_t *err, const char *call, cudaError_t e)
{
    cudaGetLastError(); /* clear a non-sticky error so it does not resurface later */
    return nx_err_set(err, NX_EDEVICE, "CUDA engine: %s failed: %s: %s", call,
                      cudaGetErrorName(e), cudaGetErrorString(e));
}

#define CU(call, what)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess)                                                                \
            return cu_fail(err, what, e_);                                                    \
    } while (0)

/* Marks the stream after `what` when profiling (kprof_cuda.h); NULL starts a pass. */
#define MARK(what)                                                                            \
    do {                                                                                      \
        if (s->prof)                                                                          \
            CU(nx__kprof_mark(s->prof, s->stream, what), "cudaEventRecord (profile)");        \
    } while (0)

/* A launcher's result (cuda_kernels.h): the launch's cudaError_t as an int; then the profile's
 * mark (every LAUNCH is in a function with the state `s`). */
#define LAUNCH(call, what)                                                                    \
    do {                                                                                      \
        CU((cudaError_t)(call), what);                                                        \
        MARK(what);                                                                           \
    } while (0)

#define TRY(call)                                                                             \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_ != NX_OK)                                                                     \
            return rc_;                                                                       \
    } while (0)

/* The kernels' code of a dtype the binder accepts (engine.c: BF16, F16, F32 and, for
 * matrices, quant.h's block types). */
static int32_t cu_dtype(nx_dtype_t dtype)
{
    switch (dtype) {
    case NX_DT_BF16: return NX_CU_BF16;
    case NX_DT_F16: return NX_CU_F16;
    case NX_DT_Q8_0: return NX_CU_Q8_0;
    case NX_DT_Q4_0: return NX_CU_Q4_0;
    case NX_DT_Q5_0: return NX_CU_Q5_0;
    case NX_DT_Q4_K: return NX_CU_Q4_K;
    case NX_DT_Q6_K: return NX_CU_Q6_K;
    default: return NX_CU_F32;
    }
}

static nx__cu_w_t cuw(const nx__wref_t *w)
{
    if (!w || !w->ptr)
        return (nx__cu_w_t){NULL, NX_CU_F32};
    return (nx__cu_w_t){w->ptr, cu_dtype(w->dtype)};
}

static bool quantized(const nx__wref_t *w)
{
    return w->ptr && nx__cu_is_block(cu_dtype(w->dtype));
}

static uint32_t q_dim(const nx_model_config_t *c) { return c->heads * c->head_dim; }
static uint32_t kv_dim(const nx_model_config_t *c) { return c->kv_heads * c->head_dim; }

static int use_device(cuda_state_t *s, nx_err_t *err)
{
    CU(cudaSetDevice(s->device), "cudaSetDevice");
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Matmuls: y[n][w->rows] (=|+=) x[n][w->cols] W^T (+ bias)
 */

/* cuBLAS, column-major: Y^T (rows x n, ld rows) = op(W) X^T where W row-major [rows][cols] is
 * column-major [cols][rows] (ld cols), taken transposed; X row-major [n][cols] is column-major
 * [cols][n] (ld cols). Rows [row_first, row_first + rows) of the output from `a` (those rows
 * of W, in `type`), into y's columns from row_first on (ld stays w->rows). */
static int gemm_rows(cuda_state_t *s, const void *a, const void *b, int type, uint32_t n,
                     const nx__wref_t *w, uint32_t row_first, uint32_t rows, float *y,
                     bool accumulate, nx_err_t *err)
{
    float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    int st = s->blas->gemm_ex(s->blas_handle, NX_CUBLAS_OP_T, NX_CUBLAS_OP_N, (int)rows,
                              (int)n, (int)w->cols, &alpha, a, type, (int)w->cols, b, type,
                              (int)w->cols, &beta, y + row_first, NX_CUDA_R_32F, (int)w->rows,
                              NX_CUBLAS_COMPUTE_32F, NX_CUBLAS_GEMM_DEFAULT);
    if (st != NX_CUBLAS_STATUS_SUCCESS)
        return nx__cublas_fail(s->blas, err, "cublasGemmEx", st);
    return NX_OK;
}

/* Rows of a quantized weight dequantized at a time into s->wdq. */
static uint32_t dequant_chunk_rows(const cuda_state_t *s, const nx__wref_t *w)
{
    uint64_t rows = s->dequant_elems / w->cols;
    if (s->dequant_rows_max && rows > s->dequant_rows_max)
        rows = s->dequant_rows_max;
    return rows > w->rows ? w->rows : (uint32_t)rows;
}

/* y (+)= x w^T by cuBLAS. BF16/F16 weights need the same type for X: converted into s->xh. A
 * quantized weight is dequantized to BF16 into s->wdq, as many rows at a time as fit (all of
 * a layer's matrix, unless it passes DEQUANT_MAX_ELEMS), each chunk multiplied before the
 * next overwrites it (one stream: in order, graph-safe). */
static int gemm(cuda_state_t *s, const float *x, uint32_t n, const nx__wref_t *w, float *y,
                bool accumulate, const char *what, nx_err_t *err)
{
    const void *b = x;
    int type = NX_CUDA_R_32F;
    bool quant = quantized(w);
    if (w->dtype != NX_DT_F32) {
        bool bf16 = w->dtype == NX_DT_BF16 || quant;
        LAUNCH(nx__cu_to_half(s->stream, x, (uint64_t)n * w->cols, bf16 ? NX_CU_BF16 : NX_CU_F16,
                              s->xh),
               "to_half");
        b = s->xh;
        type = bf16 ? NX_CUDA_R_16BF : NX_CUDA_R_16F;
    }
    if (!quant) {
        TRY(gemm_rows(s, w->ptr, b, type, n, w, 0, w->rows, y, accumulate, err));
        MARK(what);
        return NX_OK;
    }
    uint32_t chunk = dequant_chunk_rows(s, w);
    if (!s->wdq || chunk == 0)
        return nx_err_set(err, NX_EINVAL, "CUDA engine: %s: no dequantization buffer for a "
                          "%s weight of %u columns", what, nx_dtype_name(w->dtype), w->cols);
    for (uint32_t r0 = 0; r0 < w->rows; r0 += chunk) {
        uint32_t rows = w->rows - r0 < chunk ? w->rows - r0 : chunk;
        LAUNCH(nx__cu_dequant_bf16(s->stream, cuw(w), w->cols, r0, rows, s->wdq), "dequant");
        TRY(gemm_rows(s, s->wdq, b, type, n, w, r0, rows, y, accumulate, err));
        MARK(what);
    }
    return NX_OK;
}

static nx__cu_gemv_seg_t seg_of(const nx__wref_t *w, const nx__wref_t *bias, float *y)
{
    return (nx__cu_gemv_seg_t){cuw(w), w->rows, cuw(bias), y};
}

/* The GEMV takes g when simple (it then handles anything) or when the fast kernel fits. */
static bool gemv_takes(const cuda_state_t *s, const nx__cu_gemv_t *g)
{
    return s->simple || nx__cu_gemv_fast_ok(g);
}

/* A quantized weight with more rows than one GEMV takes but at most QGEMV_SLICED_ROWS: the
 * GEMV over slices of NX_CU_GEMV_MAX_ROWS rows of x and y. *done is false when a slice does
 * not fit the kernel (then nothing was launched). */
static int gemv_sliced(cuda_state_t *s, const nx__cu_gemv_t *g, const char *what, bool *done,
                       nx_err_t *err)
{
    const nx__cu_gemv_seg_t *sg = &g->seg[0];
    *done = false;
    if (s->simple || g->seg_count != 1 || !nx__cu_is_block(sg->w.dtype) ||
        g->n > QGEMV_SLICED_ROWS)
        return NX_OK;
    for (uint32_t r0 = 0; r0 < g->n; r0 += NX_CU_GEMV_MAX_ROWS) { /* every slice fits? */
        nx__cu_gemv_t slice = *g;
        slice.x = g->x + (uint64_t)r0 * g->cols;
        slice.n = g->n - r0 < NX_CU_GEMV_MAX_ROWS ? g->n - r0 : NX_CU_GEMV_MAX_ROWS;
        if (!nx__cu_gemv_fast_ok(&slice))
            return NX_OK;
    }
    for (uint32_t r0 = 0; r0 < g->n; r0 += NX_CU_GEMV_MAX_ROWS) {
        nx__cu_gemv_t slice = *g;
        slice.x = g->x + (uint64_t)r0 * g->cols;
        slice.n = g->n - r0 < NX_CU_GEMV_MAX_ROWS ? g->n - r0 : NX_CU_GEMV_MAX_ROWS;
        slice.seg[0].y = sg->y + (uint64_t)r0 * sg->rows;
        LAUNCH(nx__cu_gemv(s->stream, &slice, false), what);
    }
    *done = true;
    return NX_OK;
}

/* y (+)= x w^T (+ bias) by the GEMV kernel (in slices for a quantized weight) or cuBLAS;
 * `what` names it in errors and the profile ("o_proj", ...). */
static int matmul(cuda_state_t *s, const float *x, uint32_t n, const nx__wref_t *w,
                  const nx__wref_t *bias, float *y, bool accumulate, const char *what,
                  nx_err_t *err)
{
    nx__cu_gemv_t g = {.seg = {seg_of(w, bias, y)}, .seg_count = 1, .cols = w->cols, .x = x,
                       .n = n, .accumulate = accumulate};
    if (gemv_takes(s, &g)) {
        LAUNCH(nx__cu_gemv(s->stream, &g, s->simple), what);
        return NX_OK;
    }
    bool done;
    TRY(gemv_sliced(s, &g, what, &done, err));
    if (done)
        return NX_OK;
    TRY(gemm(s, x, n, w, y, accumulate, what, err));
    if (bias && bias->ptr)
        LAUNCH(nx__cu_add_bias(s->stream, y, n, w->rows, cuw(bias)), "add_bias");
    return NX_OK;
}

/* Whether every segment of g (not a silu pair) fits the fast kernel on its own. */
static bool each_seg_fast_ok(const nx__cu_gemv_t *g)
{
    if (g->silu_pair || g->seg_count < 2)
        return false;
    for (uint32_t i = 0; i < g->seg_count; i++) {
        nx__cu_gemv_t one = *g;
        one.seg[0] = g->seg[i];
        one.seg_count = 1;
        if (!nx__cu_gemv_fast_ok(&one))
            return false;
    }
    return true;
}

/* g (whose x is s->xn) on rmsnorm(s->x) * norm: one fused GEMV launch when the fast kernel
 * takes it with the norm; one fused launch per segment when only their dtypes differ (a
 * Q4_K_M layer's Q6_K v beside Q4_K q and k: each launch computes the rows' 1/rms itself);
 * else the RMSNorm kernel into s->xn and then g when a GEMV takes it. *done is false when
 * neither GEMV takes g (s->xn then holds the normed rows for the caller's matmuls). */
static int norm_gemv(cuda_state_t *s, const nx__cu_gemv_t *g, const nx__wref_t *norm,
                     const char *what, bool *done, nx_err_t *err)
{
    nx__cu_gemv_t fused = *g;
    fused.x = s->x;
    fused.norm = cuw(norm);
    fused.norm_eps = s->cfg->rms_eps;
    *done = true;
    if (s->fuse_norm && !s->simple && nx__cu_gemv_fast_ok(&fused)) {
        LAUNCH(nx__cu_gemv(s->stream, &fused, false), what);
        return NX_OK;
    }
    if (s->fuse_norm && !s->simple && each_seg_fast_ok(&fused)) {
        for (uint32_t i = 0; i < g->seg_count; i++) {
            nx__cu_gemv_t one = fused;
            one.seg[0] = fused.seg[i];
            one.seg_count = 1;
            LAUNCH(nx__cu_gemv(s->stream, &one, false), what);
        }
        return NX_OK;
    }
    LAUNCH(nx__cu_rmsnorm(s->stream, s->x, NULL, g->n, s->cfg->hidden, cuw(norm),
                          s->cfg->rms_eps, s->xn),
           "rmsnorm");
    if (gemv_takes(s, g)) {
        LAUNCH(nx__cu_gemv(s->stream, g, s->simple), what);
        return NX_OK;
    }
    *done = false;
    return NX_OK;
}

/* q, k, v (+ biases) of the attention-normed rows: one GEMV launch (with the RMSNorm fused)
 * when it fits, else the norm and three matmuls. */
static int qkv(cuda_state_t *s, const nx__layer_weights_t *lw, uint32_t n, nx_err_t *err)
{
    nx__cu_gemv_t g = {.seg = {seg_of(&lw->q, &lw->q_bias, s->q), seg_of(&lw->k, &lw->k_bias, s->k),
                               seg_of(&lw->v, &lw->v_bias, s->v)},
                       .seg_count = 3, .cols = lw->q.cols, .x = s->xn, .n = n};
    bool done;
    TRY(norm_gemv(s, &g, &lw->attn_norm, "qkv gemv", &done, err));
    if (done)
        return NX_OK;
    TRY(matmul(s, s->xn, n, &lw->q, &lw->q_bias, s->q, false, "q_proj", err));
    TRY(matmul(s, s->xn, n, &lw->k, &lw->k_bias, s->k, false, "k_proj", err));
    return matmul(s, s->xn, n, &lw->v, &lw->v_bias, s->v, false, "v_proj", err);
}

/* gate = silu(xn gate^T) * (xn up^T) with xn the MLP-normed rows: one fused GEMV (RMSNorm,
 * both products and the SiLU) when it fits, else the norm, two GEMMs and silu_mul. */
static int gate_up(cuda_state_t *s, const nx__layer_weights_t *lw, uint32_t n, nx_err_t *err)
{
    nx__cu_gemv_t g = {.seg = {seg_of(&lw->gate, NULL, s->gate), seg_of(&lw->up, NULL, s->up)},
                       .seg_count = 2, .cols = lw->gate.cols, .x = s->xn, .n = n,
                       .silu_pair = true};
    bool done;
    TRY(norm_gemv(s, &g, &lw->mlp_norm, "gate_up gemv", &done, err));
    if (done)
        return NX_OK;
    TRY(matmul(s, s->xn, n, &lw->gate, NULL, s->gate, false, "gate_proj", err));
    TRY(matmul(s, s->xn, n, &lw->up, NULL, s->up, false, "up_proj", err));
    LAUNCH(nx__cu_silu_mul(s->stream, s->gate, s->up, (uint64_t)n * s->cfg->intermediate),
           "silu_mul");
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * The forward pass of one pass's rows (all device work, nothing synchronizes: graph-safe)
 */
static uint32_t attn_splits(const cuda_state_t *s, uint32_t n)
{
    uint64_t fit = s->partial_entries / ((uint64_t)n * s->cfg->heads);
    return fit >= DECODE_SPLITS ? DECODE_SPLITS : fit ? (uint32_t)fit : 1;
}

static int layer_forward(cuda_state_t *s, uint32_t layer, uint32_t n, nx_err_t *err)
{
    const nx__layer_weights_t *lw = &s->w->layers[layer];
    TRY(qkv(s, lw, n, err));
    LAUNCH(nx__cu_qk_rope_kv(s->stream, s->rows_dev, n, &s->shape, layer, s->q, s->k, s->v,
                             cuw(&lw->q_norm), cuw(&lw->k_norm), s->rope_cos, s->rope_sin),
           "qk_rope_kv");
    LAUNCH(nx__cu_attention(s->stream, s->rows_dev, n, &s->shape, layer, s->q, s->att,
                            attn_splits(s, n), s->partial, s->simple),
           "attention");
    TRY(matmul(s, s->att, n, &lw->o, &lw->o_bias, s->x, true, "o_proj", err));
    TRY(gate_up(s, lw, n, err));
    return matmul(s, s->gate, n, &lw->down, NULL, s->x, true, "down_proj", err);
}

static int body(cuda_state_t *s, uint32_t n, nx_err_t *err)
{
    const nx_model_config_t *c = s->cfg;
    LAUNCH(nx__cu_embed(s->stream, s->rows_dev, n, cuw(&s->w->embed), c->hidden, s->x),
           "embed");
    LAUNCH(nx__cu_rope_table(s->stream, s->rows_dev, n, s->inv_freq, c->head_dim / 2,
                             s->rope_cos, s->rope_sin),
           "rope_table");
    for (uint32_t layer = 0; layer < c->layers; layer++)
        TRY(layer_forward(s, layer, n, err));
    return NX_OK;
}

/* Final norm of `count` rows (gather: device indices into the pass, NULL for 0..count) and
 * lm_head into s->logits. */
static int head(cuda_state_t *s, const uint32_t *gather, uint32_t count, nx_err_t *err)
{
    const nx_model_config_t *c = s->cfg;
    LAUNCH(nx__cu_rmsnorm(s->stream, s->x, gather, count, c->hidden, cuw(&s->w->norm),
                          c->rms_eps, s->xn),
           "final rmsnorm");
    return matmul(s, s->xn, count, &s->w->lm_head, NULL, s->logits, false, "lm_head", err);
}

/* The batch's pick for logit number i, or NULL when it wants the logits. */
static const nx__pick_t *pick_of(const nx__batch_t *b, uint32_t i)
{
    return b->picks ? b->picks[i] : NULL;
}

static uint32_t mask_words_of(uint32_t vocab) { return (vocab + 31) / 32; }

/* The kernel's plan; a mask (p->allow) goes to mask slot mask_slot. */
static nx__cu_pick_t cu_pick(const nx__pick_t *p, uint32_t row, uint32_t penalty_first,
                             bool exact, uint32_t mask_slot)
{
    float draw = (float)p->draw; /* rounding must not make it 1 */
    if (draw >= 1.0f)
        draw = 0x1.fffffep-1f;
    uint32_t flags = (exact ? NX_CU_PICK_EXACT : 0) | (p->allow ? NX_CU_PICK_MASK : 0);
    return (nx__cu_pick_t){row, p->top_k, p->temperature, p->top_p, p->min_p,
                           p->repetition_penalty, draw, penalty_first, p->penalty_count,
                           flags, p->allow ? p->allow_bits : 0, mask_slot};
}

/* Copy a plan's mask into a slot of `words` words: the words allow_bits covers, zeros after
 * (ids past allow_bits are disallowed in the kernel too; this keeps the slot clean). */
static void copy_mask(uint32_t *slot, uint32_t words, const nx__pick_t *p)
{
    uint32_t have = mask_words_of(p->allow_bits);
    have = have < words ? have : words;
    memcpy(slot, p->allow, have * sizeof *slot);
    memset(slot + have, 0, (words - have) * sizeof *slot);
}

/* The picks among s->logits' first `count` rows (logit numbers logit_index[0..count)), on
 * the GPU: plans and penalty ids up, the ids down. In groups whose penalty ids fit. */
static int picks_on_gpu(cuda_state_t *s, const nx__batch_t *b, const uint32_t *logit_index,
                        uint32_t count, nx_err_t *err)
{
    uint32_t slot[LOGIT_CHUNK];
    uint32_t words = mask_words_of(s->cfg->vocab);
    for (uint32_t i = 0; i < count;) {
        uint32_t n = 0, penalty = 0, masks = 0;
        for (; i < count; i++) {
            const nx__pick_t *p = pick_of(b, logit_index[i]);
            if (!p)
                continue;
            if (n > 0 && penalty + p->penalty_count > s->cfg->vocab)
                break; /* the next group */
            s->picks_host[n] = cu_pick(p, i, penalty, s->pick_exact, masks);
            if (p->allow) /* at most one per pick: LOGIT_CHUNK slots always do */
                copy_mask(s->masks_host + (size_t)masks++ * words, words, p);
            if (p->penalty_count)
                memcpy(s->penalty_host + penalty, p->penalty_ids,
                       p->penalty_count * sizeof *p->penalty_ids);
            penalty += p->penalty_count;
            slot[n++] = logit_index[i];
        }
        if (n == 0)
            break;
        CU(cudaMemcpyAsync(s->picks_dev, s->picks_host, n * sizeof *s->picks_host,
                           cudaMemcpyHostToDevice, s->stream),
           "cudaMemcpyAsync(picks)");
        if (penalty)
            CU(cudaMemcpyAsync(s->penalty_dev, s->penalty_host, penalty * sizeof(int32_t),
                               cudaMemcpyHostToDevice, s->stream),
               "cudaMemcpyAsync(penalty ids)");
        if (masks)
            CU(cudaMemcpyAsync(s->masks_dev, s->masks_host,
                               (size_t)masks * words * sizeof(uint32_t), cudaMemcpyHostToDevice,
                               s->stream),
               "cudaMemcpyAsync(grammar masks)");
        MARK("copy: picks to the GPU");
        LAUNCH(nx__cu_sample(s->stream, s->logits, s->cfg->vocab, s->picks_dev, n,
                             s->penalty_dev, s->masks_dev, words, s->ids_dev),
               "sample (token picks)");
        CU(cudaMemcpyAsync(s->ids_host, s->ids_dev, n * sizeof *s->ids_host,
                           cudaMemcpyDeviceToHost, s->stream),
           "cudaMemcpyAsync(picked ids)");
        MARK("copy: picked ids to the host");
        /* also: the pinned plans are rewritten by the next group */
        CU(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize");
        for (uint32_t j = 0; j < n; j++)
            b->picked[slot[j]] = s->ids_host[j];
    }
    return NX_OK;
}

/* s->logits holds `count` logit rows, logit numbers logit_index[0..count): the picks among
 * them are done on the GPU (only their ids come back), the other rows are copied to their
 * host destinations. */
static int deliver(cuda_state_t *s, const nx__batch_t *b, const uint32_t *logit_index,
                   uint32_t count, nx_err_t *err)
{
    TRY(picks_on_gpu(s, b, logit_index, count, err));
    size_t row_bytes = (size_t)s->cfg->vocab * sizeof(float);
    uint32_t wanted = 0, last = 0;
    for (uint32_t i = 0; i < count; i++)
        if (!pick_of(b, logit_index[i]))
            wanted++, last = i;
    if (wanted == 0)
        return NX_OK;
    /* rows [0, last] in one copy (picked rows in between come along; they are few) */
    CU(cudaMemcpyAsync(s->logits_host, s->logits, (last + 1) * row_bytes,
                       cudaMemcpyDeviceToHost, s->stream),
       "cudaMemcpyAsync(logits)");
    MARK("copy: logits to the host");
    CU(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize");
    for (uint32_t i = 0; i < count; i++)
        if (!pick_of(b, logit_index[i]))
            memcpy(b->logit_out[logit_index[i]], s->logits_host + (size_t)i * s->cfg->vocab,
                   row_bytes);
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * CUDA graphs for decode passes
 */
static void drop_graphs(cuda_state_t *s)
{
    for (uint32_t i = 0; i <= NX_CUDA_ROWS_MAX; i++)
        if (s->graphs[i]) {
            cudaGraphExecDestroy(s->graphs[i]);
            s->graphs[i] = NULL;
        }
    s->graph_count = 0;
}

/* Whether the graph of n decode rows ends with the logits of all of them (they fit s->logits);
 * a larger one holds the layers only, and the heads run after it chunk by chunk. */
static bool graph_has_head(uint32_t n)
{
    return n <= LOGIT_CHUNK;
}

/* Capture body (+ head) for n decode rows: GEMV kernels up to NX_CU_GEMV_MAX_ROWS rows,
 * cuBLAS GEMMs above (captured too; its workspace is set, so it allocates nothing). A failure
 * to capture is not fatal: graphs are turned off for this engine (logged once) and *exec_out
 * stays NULL; the caller runs directly. */
static int capture(cuda_state_t *s, uint32_t n, cudaGraphExec_t *exec_out, nx_err_t *err)
{
    *exec_out = NULL;
    CU(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal),
       "cudaStreamBeginCapture");
    nx_err_t inner = {0};
    int rc = body(s, n, &inner);
    if (rc == NX_OK && graph_has_head(n))
        rc = head(s, NULL, n, &inner);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(s->stream, &graph); /* always ends the capture */
    cudaGraphExec_t exec = NULL;
    if (rc == NX_OK && e == cudaSuccess && graph)
        e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (rc != NX_OK || e != cudaSuccess || !exec) {
        cudaGetLastError();
        nx_log(NX_LOG_WARN, "CUDA engine: decode graph of %u rows not captured (%s); running "
               "without graphs", n, rc != NX_OK ? inner.msg : cudaGetErrorString(e));
        s->use_graphs = false;
        return NX_OK;
    }
    *exec_out = exec;
    s->graph_count++;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * A step
 */

/* The engine's deferred masks (b->before_picks), called with the pass enqueued and before
 * its picks: the host computes the masks while the GPU runs the layers (the engine does the
 * work at the first call of the step). On an error the pass in flight is waited for, since
 * the next step rewrites the pinned buffers its copies read. */
static int masks_ready(cuda_state_t *s, const nx__batch_t *b, nx_err_t *err)
{
    if (!b->before_picks)
        return NX_OK;
    int rc = b->before_picks(b->before_picks_user, err);
    if (rc != NX_OK)
        cudaStreamSynchronize(s->stream); /* its own failure would not say more than rc */
    return rc;
}

/* Rows [first, first + n) of the batch: their scalars and logit rows to the device, then the
 * model, then their logits to the host. */
static int run_pass(cuda_state_t *s, const nx__batch_t *b, uint32_t first, uint32_t n,
                    nx_err_t *err)
{
    uint32_t logit_count = 0;
    uint32_t index[NX_CUDA_ROWS_MAX]; /* the batch's logit number of each gathered row */
    bool decode_only = true;
    for (uint32_t i = 0; i < n; i++) {
        const nx__batch_seq_t *seq = &b->seqs[b->row_seq[first + i]];
        s->rows_host[i] = (nx__cu_row_t){seq->kv->base, b->positions[first + i],
                                         seq->kv->capacity, b->tokens[first + i], 0};
        decode_only = decode_only && seq->row_count == 1;
    }
    for (uint32_t i = 0; i < b->logit_count; i++)
        if (b->logit_rows[i] >= first && b->logit_rows[i] - first < n) {
            s->gather_host[logit_count] = b->logit_rows[i] - first;
            index[logit_count++] = i;
        }
    bool in_order = logit_count == n;
    for (uint32_t i = 0; in_order && i < n; i++)
        in_order = s->gather_host[i] == i;
    MARK(NULL);
    CU(cudaMemcpyAsync(s->rows_dev, s->rows_host, n * sizeof *s->rows_host,
                       cudaMemcpyHostToDevice, s->stream),
       "cudaMemcpyAsync(row scalars)");
    if (logit_count)
        CU(cudaMemcpyAsync(s->gather_dev, s->gather_host, logit_count * sizeof *s->gather_host,
                           cudaMemcpyHostToDevice, s->stream),
           "cudaMemcpyAsync(logit rows)");
    MARK("copy: row scalars to the GPU");

    bool graphed = false;
    if (s->use_graphs && !s->simple && decode_only && in_order) {
        if (!s->graphs[n] && s->graph_count < MAX_GRAPHS)
            TRY(capture(s, n, &s->graphs[n], err));
        if (s->graphs[n]) {
            CU(cudaGraphLaunch(s->graphs[n], s->stream), "cudaGraphLaunch");
            if (graph_has_head(n)) {
                TRY(masks_ready(s, b, err));
                return deliver(s, b, index, n, err);
            }
            graphed = true;
        }
    }
    if (!graphed)
        TRY(body(s, n, err));
    for (uint32_t c0 = 0; c0 < logit_count; c0 += LOGIT_CHUNK) {
        uint32_t count = logit_count - c0 < LOGIT_CHUNK ? logit_count - c0 : LOGIT_CHUNK;
        TRY(head(s, s->gather_dev + c0, count, err));
        TRY(masks_ready(s, b, err));
        TRY(deliver(s, b, index + c0, count, err));
    }
    /* the pinned row scalars are rewritten by the next pass: their copy must be done */
    CU(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize");
    if (s->prof)
        CU(nx__kprof_collect(s->prof), "cudaEventElapsedTime (profile)");
    return NX_OK;
}

static int cuda_forward(void *state, const nx__batch_t *b, nx_err_t *err)
{
    cuda_state_t *s = state;
    TRY(use_device(s, err));
    for (uint32_t r = 0; r < b->rows; r++) {
        const nx__batch_seq_t *seq = &b->seqs[b->row_seq[r]];
        if (b->positions[r] >= seq->kv->capacity)
            return nx_err_set(err, NX_EINVAL, "CUDA engine: row %u at position %u is past its "
                              "KV cache of %u tokens", r, b->positions[r], seq->kv->capacity);
    }
    for (uint32_t first = 0; first < b->rows; first += NX_CUDA_ROWS_MAX) {
        uint32_t n = b->rows - first < NX_CUDA_ROWS_MAX ? b->rows - first : NX_CUDA_ROWS_MAX;
        TRY(run_pass(s, b, first, n, err));
    }
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * KV caches
 */
static int cuda_kv_alloc(void *state, uint32_t capacity, const char *owner, nx__kv_t *kv_out,
                         nx_err_t *err)
{
    cuda_state_t *s = state;
    /* the element type this engine chose when it was created (the environment may change) */
    uint64_t bytes = nx__kv_bytes_elem(s->cfg, capacity, s->shape.kv_bf16 ? 2 : sizeof(float));
    nx_region_t *r = nx_pool_alloc(s->pool, bytes, owner, err);
    if (!r)
        return err ? err->code : NX_EPOOLFULL; /* NX_EPOOLFULL: the orchestrator evicts */
    *kv_out = (nx__kv_t){.region = r, .base = nx_region_ptr(r), .capacity = capacity};
    return NX_OK;
}

static void cuda_kv_free(void *state, nx__kv_t *kv)
{
    cuda_state_t *s = state;
    if (kv->region) {
        /* a step in flight may still read it: every forward ends synchronized, so none is */
        nx_pool_free(s->pool, &kv->region);
    }
    kv->base = NULL;
}

/* ------------------------------------------------------------------------------------------
 * Set-up
 */

/* Carves the scratch region: each call returns the next `bytes`, 256-byte aligned. With
 * base NULL it only counts. */
typedef struct carver {
    char *base;
    uint64_t used;
} carver_t;

static void *carve(carver_t *cv, uint64_t bytes)
{
    uint64_t at = (cv->used + 255) & ~(uint64_t)255;
    cv->used = at + bytes;
    return cv->base ? cv->base + at : NULL;
}

/* Elements of the BF16 dequantization buffer: the largest matrix of a layer, whole, unless it
 * passes DEQUANT_MAX_ELEMS (then row chunks); never less than one row of any matrix. The
 * token embedding and the head (vocab x hidden) go through in chunks when they go through at
 * all (the head's logit rows are at most LOGIT_CHUNK, which the GEMV slices take). */
static uint64_t dequant_elems(const nx_model_config_t *c)
{
    uint64_t hidden = c->hidden, largest = (uint64_t)c->intermediate * hidden;
    largest = (uint64_t)q_dim(c) * hidden > largest ? (uint64_t)q_dim(c) * hidden : largest;
    largest = largest < DEQUANT_MAX_ELEMS ? largest : DEQUANT_MAX_ELEMS;
    uint64_t widest_row = hidden > c->intermediate ? hidden : c->intermediate;
    widest_row = q_dim(c) > widest_row ? q_dim(c) : widest_row;
    return largest > widest_row ? largest : widest_row;
}

/* Whether the scratch holds a dequantization buffer: never with the simple kernels (no
 * cuBLAS); for a GGUF model (the only files with block types) when any matrix is quantized,
 * or, when only counting (no weights: nx__cuda_scratch_bytes), always for GGUF, so the count
 * is an upper bound. */
static bool needs_dequant(const cuda_state_t *s)
{
    if (s->simple || !s->cfg->gguf)
        return false;
    if (!s->w)
        return true;
    if (quantized(&s->w->embed) || quantized(&s->w->lm_head))
        return true;
    for (uint32_t i = 0; i < s->cfg->layers; i++) {
        const nx__layer_weights_t *l = &s->w->layers[i];
        if (quantized(&l->q) || quantized(&l->k) || quantized(&l->v) || quantized(&l->o) ||
            quantized(&l->gate) || quantized(&l->up) || quantized(&l->down))
            return true;
    }
    return false;
}

static void layout(cuda_state_t *s, carver_t *cv)
{
    const nx_model_config_t *c = s->cfg;
    uint64_t rows = NX_CUDA_ROWS_MAX, f = sizeof(float);
    uint64_t widest = c->hidden > c->intermediate ? c->hidden : c->intermediate;
    widest = q_dim(c) > widest ? q_dim(c) : widest;
    s->x = carve(cv, rows * c->hidden * f);
    s->xn = carve(cv, rows * c->hidden * f);
    s->q = carve(cv, rows * q_dim(c) * f);
    s->att = carve(cv, rows * q_dim(c) * f);
    s->k = carve(cv, rows * kv_dim(c) * f);
    s->v = carve(cv, rows * kv_dim(c) * f);
    s->gate = carve(cv, rows * c->intermediate * f);
    s->up = carve(cv, rows * c->intermediate * f);
    s->rope_cos = carve(cv, rows * (c->head_dim / 2) * f);
    s->rope_sin = carve(cv, rows * (c->head_dim / 2) * f);
    s->xh = carve(cv, rows * widest * 2);
    s->logits = carve(cv, (uint64_t)LOGIT_CHUNK * c->vocab * f);
    uint64_t decode = (uint64_t)NX_CU_GEMV_MAX_ROWS * DECODE_SPLITS;
    s->partial_entries = (decode > rows ? decode : rows) * c->heads;
    s->partial = carve(cv, s->partial_entries * (c->head_dim + 2) * f);
    s->inv_freq = carve(cv, (c->head_dim / 2) * sizeof(double));
    s->rows_dev = carve(cv, rows * sizeof(nx__cu_row_t));
    s->gather_dev = carve(cv, rows * sizeof(uint32_t));
    s->blas_workspace = s->simple ? NULL : carve(cv, BLAS_WORKSPACE);
    s->dequant_elems = needs_dequant(s) ? dequant_elems(c) : 0;
    s->wdq = s->dequant_elems ? carve(cv, s->dequant_elems * 2) : NULL;
    s->picks_dev = carve(cv, LOGIT_CHUNK * sizeof(nx__cu_pick_t));
    s->penalty_dev = carve(cv, (uint64_t)c->vocab * sizeof(int32_t));
    s->masks_dev = carve(cv, (uint64_t)LOGIT_CHUNK * mask_words_of(c->vocab) * sizeof(uint32_t));
    s->ids_dev = carve(cv, LOGIT_CHUNK * sizeof(int32_t));
}

uint64_t nx__cuda_scratch_bytes(const nx_model_config_t *config)
{
    /* not simple: the cuBLAS workspace is counted; no weights: a GGUF model's dequantization
     * buffer is counted */
    cuda_state_t s = {.cfg = config};
    carver_t count = {NULL, 0};
    layout(&s, &count);
    return count.used;
}

static bool env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

static void cuda_destroy(void *state)
{
    cuda_state_t *s = state;
    if (!s)
        return;
    cudaSetDevice(s->device);
    if (s->stream)
        cudaStreamSynchronize(s->stream);
    drop_graphs(s);
    if (s->prof) {
        nx__kprof_report(s->prof);
        nx__kprof_destroy(&s->prof);
    }
    if (s->blas_handle)
        s->blas->destroy(s->blas_handle);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    cudaFreeHost(s->rows_host);
    cudaFreeHost(s->gather_host);
    cudaFreeHost(s->logits_host);
    cudaFreeHost(s->picks_host);
    cudaFreeHost(s->penalty_host);
    cudaFreeHost(s->masks_host);
    cudaFreeHost(s->ids_host);
    if (s->scratch)
        nx_pool_free(s->pool, &s->scratch);
    cudaGetLastError();
    free(s);
}

static int check_shape(const nx_model_config_t *c, nx_err_t *err)
{
    if (c->head_dim == 0 || c->head_dim % 2 || c->head_dim > NX_CU_MAX_HEAD_DIM)
        return nx_err_set(err, NX_ENOTSUP, "CUDA engine: head_dim %u is not supported (even, "
                          "at most %d)", c->head_dim, NX_CU_MAX_HEAD_DIM);
    if (c->kv_heads == 0 || c->heads % c->kv_heads)
        return nx_err_set(err, NX_ENOTSUP, "CUDA engine: %u heads over %u kv heads", c->heads,
                          c->kv_heads);
    if (c->heads > 65535)
        return nx_err_set(err, NX_ENOTSUP, "CUDA engine: %u heads is too many", c->heads);
    return NX_OK;
}

static int open_blas(cuda_state_t *s, nx_err_t *err)
{
    TRY(nx__cublas_load(&s->blas, err));
    int st = s->blas->create(&s->blas_handle);
    if (st != NX_CUBLAS_STATUS_SUCCESS) {
        s->blas_handle = NULL;
        return nx__cublas_fail(s->blas, err, "cublasCreate", st);
    }
    if ((st = s->blas->set_stream(s->blas_handle, s->stream)) != NX_CUBLAS_STATUS_SUCCESS)
        return nx__cublas_fail(s->blas, err, "cublasSetStream", st);
    return NX_OK;
}

static int init_device(cuda_state_t *s, nx_err_t *err)
{
    const nx_model_config_t *c = s->cfg;
    TRY(use_device(s, err));
    CU(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    if (!s->simple)
        TRY(open_blas(s, err));
    carver_t count = {NULL, 0};
    layout(s, &count);
    s->scratch = nx_pool_alloc(s->pool, count.used, "cuda-engine-scratch", err);
    if (!s->scratch)
        return nx_err_prefix(err, "CUDA engine: scratch buffers (%llu bytes): ",
                             (unsigned long long)count.used);
    carver_t real = {nx_region_ptr(s->scratch), 0};
    layout(s, &real);
    if (s->blas_handle) {
        int st = s->blas->set_workspace(s->blas_handle, s->blas_workspace, BLAS_WORKSPACE);
        if (st != NX_CUBLAS_STATUS_SUCCESS)
            return nx__cublas_fail(s->blas, err, "cublasSetWorkspace", st);
    }
    double *inv_freq = calloc(c->head_dim / 2, sizeof *inv_freq);
    if (!inv_freq)
        return nx_err_set(err, NX_ENOMEM, "CUDA engine: out of host memory");
    nx__k_rope_inv_freq(c, inv_freq);
    cudaError_t e = cudaMemcpy(s->inv_freq, inv_freq, (c->head_dim / 2) * sizeof *inv_freq,
                               cudaMemcpyHostToDevice);
    free(inv_freq);
    CU(e, "cudaMemcpy(rope frequencies)");
    CU(cudaMallocHost((void **)&s->rows_host, NX_CUDA_ROWS_MAX * sizeof *s->rows_host),
       "cudaMallocHost(row scalars)");
    CU(cudaMallocHost((void **)&s->gather_host, NX_CUDA_ROWS_MAX * sizeof *s->gather_host),
       "cudaMallocHost(logit rows)");
    CU(cudaMallocHost((void **)&s->logits_host, (size_t)LOGIT_CHUNK * c->vocab * sizeof(float)),
       "cudaMallocHost(logits)");
    CU(cudaMallocHost((void **)&s->picks_host, LOGIT_CHUNK * sizeof *s->picks_host),
       "cudaMallocHost(picks)");
    CU(cudaMallocHost((void **)&s->penalty_host, (size_t)c->vocab * sizeof *s->penalty_host),
       "cudaMallocHost(penalty ids)");
    CU(cudaMallocHost((void **)&s->masks_host,
                      (size_t)LOGIT_CHUNK * mask_words_of(c->vocab) * sizeof *s->masks_host),
       "cudaMallocHost(grammar masks)");
    CU(cudaMallocHost((void **)&s->ids_host, LOGIT_CHUNK * sizeof *s->ids_host),
       "cudaMallocHost(picked ids)");
    return NX_OK;
}

static int cuda_init(const nx_model_config_t *cfg, const nx__weights_t *w, nx_pool_t *pool,
                     const nx_engine_opts_t *opts, void **state_out, nx_err_t *err)
{
    TRY(check_shape(cfg, err));
    nx_dev_t *dev = nx__pool_dev(pool);
    if (!dev || dev->kind != NX_DEVICE_CUDA)
        return nx_err_set(err, NX_EINVAL, "CUDA engine: the pool is not on a CUDA device");
    cuda_state_t *s = calloc(1, sizeof *s);
    if (!s)
        return nx_err_set(err, NX_ENOMEM, "CUDA engine: out of host memory");
    s->cfg = cfg, s->w = w, s->pool = pool, s->device = dev->ordinal;
    s->simple = env_is("NEXUS_CUDA_KERNELS", "simple");
    s->use_graphs = !env_is("NEXUS_CUDA_GRAPHS", "0");
    s->fuse_norm = !env_is("NEXUS_CUDA_FUSE_NORM", "0");
    s->pick_exact = env_is("NEXUS_CUDA_PICK", "exact");
    const char *rows = getenv("NEXUS_CUDA_DEQUANT_ROWS"); /* tests: chunks of few rows */
    s->dequant_rows_max = rows ? (uint32_t)strtoul(rows, NULL, 10) : 0;
    if (env_is("NEXUS_CUDA_PROFILE", "1") && (s->prof = nx__kprof_new()))
        s->use_graphs = false; /* a mark between launches; a graph has none */
    s->shape = (nx__cu_shape_t){cfg->hidden, cfg->heads, cfg->kv_heads, cfg->head_dim,
                                cfg->layers, cfg->rms_eps, !nx__cuda_kv_f32(),
                                cfg->rope_adjacent};
    int rc = init_device(s, err);
    if (rc != NX_OK) {
        cuda_destroy(s);
        return rc;
    }
    if (s->simple)
        nx_log(NX_LOG_INFO, "CUDA engine: simple kernels (NEXUS_CUDA_KERNELS=simple)");
    *state_out = s;
    return NX_OK;
}

static const nx__backend_ops_t cuda_ops = {
    .name = "cuda",
    .picks_on_device = true,
    .init = cuda_init,
    .destroy = cuda_destroy,
    .kv_alloc = cuda_kv_alloc,
    .kv_free = cuda_kv_free,
    .forward = cuda_forward,
};

const nx__backend_ops_t *nx__cuda_backend(nx_err_t *err)
{
    return &cuda_ops;
}

/* ------------------------------------------------------------------------------------------
 * The pick kernel on its own (tests, benchmarks)
 */
typedef struct pick_bufs {
    float *logits;
    nx__cu_pick_t *picks;
    int32_t *penalty, *ids;
    uint32_t *masks;
} pick_bufs_t;

static int pick_rows_on(pick_bufs_t *d, const float *logits, uint32_t rows, uint32_t vocab,
                        const nx__pick_t *plans, int32_t *ids, nx_err_t *err)
{
    uint64_t penalty = 0;
    for (uint32_t i = 0; i < rows; i++)
        penalty += plans[i].penalty_count;
    CU(cudaMalloc((void **)&d->logits, (size_t)rows * vocab * sizeof(float)), "cudaMalloc");
    CU(cudaMalloc((void **)&d->picks, rows * sizeof *d->picks), "cudaMalloc");
    CU(cudaMalloc((void **)&d->penalty, (penalty ? penalty : 1) * sizeof(int32_t)),
       "cudaMalloc");
    CU(cudaMalloc((void **)&d->ids, rows * sizeof(int32_t)), "cudaMalloc");
    uint32_t words = mask_words_of(vocab);
    CU(cudaMalloc((void **)&d->masks, (size_t)rows * words * sizeof(uint32_t)), "cudaMalloc");
    CU(cudaMemcpy(d->logits, logits, (size_t)rows * vocab * sizeof(float),
                  cudaMemcpyHostToDevice),
       "cudaMemcpy(logits)");
    uint32_t first = 0;
    bool exact = env_is("NEXUS_CUDA_PICK", "exact");
    for (uint32_t i = 0; i < rows; i++) {
        nx__cu_pick_t p = cu_pick(&plans[i], i, first, exact, i);
        CU(cudaMemcpy(d->picks + i, &p, sizeof p, cudaMemcpyHostToDevice), "cudaMemcpy(pick)");
        if (plans[i].allow) {
            uint32_t *slot = malloc(words * sizeof *slot);
            if (!slot)
                return nx_err_set(err, NX_ENOMEM, "pick: no memory for a mask");
            copy_mask(slot, words, &plans[i]);
            cudaError_t e = cudaMemcpy(d->masks + (size_t)i * words, slot,
                                       words * sizeof *slot, cudaMemcpyHostToDevice);
            free(slot);
            CU(e, "cudaMemcpy(grammar mask)");
        }
        if (plans[i].penalty_count)
            CU(cudaMemcpy(d->penalty + first, plans[i].penalty_ids,
                          plans[i].penalty_count * sizeof(int32_t), cudaMemcpyHostToDevice),
               "cudaMemcpy(penalty ids)");
        first += plans[i].penalty_count;
    }
    CU((cudaError_t)nx__cu_sample(NULL, d->logits, vocab, d->picks, rows, d->penalty, d->masks,
                                  words, d->ids),
       "sample kernel launch");
    CU(cudaMemcpy(ids, d->ids, rows * sizeof(int32_t), cudaMemcpyDeviceToHost),
       "cudaMemcpy(ids)");
    return NX_OK;
}

int nx__cuda_pick_rows(const float *logits, uint32_t rows, uint32_t vocab,
                       const nx__pick_t *plans, int32_t *ids, nx_err_t *err)
{
    pick_bufs_t d = {0};
    int rc = pick_rows_on(&d, logits, rows, vocab, plans, ids, err);
    cudaFree(d.logits);
    cudaFree(d.picks);
    cudaFree(d.penalty);
    cudaFree(d.ids);
    cudaFree(d.masks);
    cudaGetLastError();
    return rc;
}
