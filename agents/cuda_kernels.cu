/* cuda_kernels.cu — the CUDA engine backend's element-wise, norm, RoPE and GEMV kernels (see
 * cuda_kernels.h; attention is in cuda_attention.cu, the quantized GEMV and dequantization in
 * cuda_quant.cu, the device helpers both GEMVs share in cuda_device.cuh). Block types reach
 * this file's kernels (the simple GEMV, the embedding) through load_elem, element by element.
 *
 * NOT YET RUN ON A GPU: written on a machine without one; it compiles for sm_90 and has run
 * only under the CPU emulation of tests/cuemu (make emu-test: index arithmetic, barriers and
 * host orchestration; not the hardware, not speed), where tests/test_cuda_engine.c passes.
 * That test compares it with the CPU backend on a GPU.
 *
 * Reading guide: every kernel bounds-checks its indices against the sizes it is given; the
 * only cross-thread communication is (a) warp reductions with __shfl_xor_sync over the full
 * mask, always executed by all 32 lanes of a warp (no lane returns early before them), and
 * (b) block reductions through shared memory between __syncthreads() that every thread of the
 * block reaches.
 */
#include "cuda_kernels.h"

#include "cuda_device.cuh"
#include "cuda_launch.h"
#include <stdint.h>

static int launched(void)
{
    return (int)cudaGetLastError();
}

static unsigned blocks_for(uint64_t count, unsigned threads)
{
    uint64_t b = (count + threads - 1) / threads;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : b);
}

/* ------------------------------------------------------------------------------------------
 * Embedding, RoPE tables, RMSNorm
 */
__global__ void embed_kernel(const nx__cu_row_t *rows, uint32_t n, nx__cu_w_t embed,
                             uint32_t hidden, float *x)
{
    uint32_t r = blockIdx.y;
    if (r >= n)
        return;
    uint64_t base = (uint64_t)(uint32_t)rows[r].token * hidden;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < hidden;
         i += gridDim.x * blockDim.x)
        x[(uint64_t)r * hidden + i] = load_elem(embed, base + i);
}

extern "C" int nx__cu_embed(void *stream, const nx__cu_row_t *rows, uint32_t n,
                            nx__cu_w_t embed, uint32_t hidden, float *x)
{
    if (n == 0)
        return 0;
    dim3 grid(blocks_for(hidden, 256) < 64 ? blocks_for(hidden, 256) : 64, n);
    NX_LAUNCH(grid, 256, 0, (cudaStream_t)stream, embed_kernel)(rows, n, embed, hidden, x);
    return launched();
}

__global__ void rope_table_kernel(const nx__cu_row_t *rows, uint32_t n,
                                  const double *inv_freq, uint32_t half, float *cos_t,
                                  float *sin_t)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (uint64_t)n * half)
        return;
    uint32_t r = (uint32_t)(i / half), f = (uint32_t)(i % half);
    double angle = (double)rows[r].pos * inv_freq[f];
    cos_t[i] = (float)cos(angle);
    sin_t[i] = (float)sin(angle);
}

extern "C" int nx__cu_rope_table(void *stream, const nx__cu_row_t *rows, uint32_t n,
                                 const double *inv_freq, uint32_t half, float *cos_t,
                                 float *sin_t)
{
    if (n == 0 || half == 0)
        return 0;
    NX_LAUNCH(blocks_for((uint64_t)n * half, 128), 128, 0, (cudaStream_t)stream, rope_table_kernel)(
        rows, n, inv_freq, half, cos_t, sin_t);
    return launched();
}

/* One block per row. */
__global__ void rmsnorm_kernel(const float *x, const uint32_t *gather, uint32_t n,
                               uint32_t dim, nx__cu_w_t weight, float eps, float *out)
{
    __shared__ float red[32];
    uint32_t r = blockIdx.x;
    if (r >= n) /* uniform for the block: no thread reaches a barrier */
        return;
    const float *xr = x + (uint64_t)(gather ? gather[r] : r) * dim;
    float sum_sq = 0.f;
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
        sum_sq += xr[i] * xr[i];
    float total = block_sum(sum_sq, red);
    float inv = rsqrtf(total / (float)dim + eps);
    float *o = out + (uint64_t)r * dim;
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = xr[i] * inv * load_elem(weight, i);
}

extern "C" int nx__cu_rmsnorm(void *stream, const float *x, const uint32_t *gather, uint32_t n,
                              uint32_t dim, nx__cu_w_t weight, float eps, float *out)
{
    if (n == 0)
        return 0;
    NX_LAUNCH(n, 256, 0, (cudaStream_t)stream, rmsnorm_kernel)(x, gather, n, dim, weight, eps, out);
    return launched();
}

/* ------------------------------------------------------------------------------------------
 * q/k norm + RoPE + KV cache write: one block per row, one warp per head
 */
/* The element index of the row's cache slot for (layer, k|v, head), at its position. */
__device__ __forceinline__ uint64_t kv_slot(const nx__cu_row_t &row, const nx__cu_shape_t &s,
                                            uint32_t layer, int kind, uint32_t head)
{
    uint64_t per_head = (uint64_t)row.capacity * s.head_dim;
    return (((uint64_t)layer * 2 + kind) * s.kv_heads + head) * per_head +
           (uint64_t)row.pos * s.head_dim;
}

/* cache[i] = v, as BF16 (rounded to nearest even) or fp32. */
__device__ __forceinline__ void kv_store(void *cache, bool bf16, uint64_t i, float v)
{
    if (bf16)
        ((__nv_bfloat16 *)cache)[i] = __float2bfloat16_rn(v);
    else
        ((float *)cache)[i] = v;
}

/* Norm (optional) and RoPE of one head vector v[hd] by one warp, in place. Lanes own pairs
 * (i, i + half), or (2i, 2i + 1) when adjacent; all 32 lanes run the reduction. */
__device__ void warp_norm_rope(float *v, uint32_t hd, nx__cu_w_t norm, float eps,
                               const float *cos_t, const float *sin_t, bool adjacent)
{
    uint32_t lane = threadIdx.x & 31, half = hd / 2;
    float inv = 1.f;
    if (norm.ptr) {
        float sum_sq = 0.f;
        for (uint32_t i = lane; i < hd; i += 32)
            sum_sq += v[i] * v[i];
        sum_sq = warp_sum(sum_sq);
        inv = rsqrtf(sum_sq / (float)hd + eps);
    }
    __syncwarp(); /* every lane has read v before any lane writes it */
    for (uint32_t i = lane; i < half; i += 32) {
        uint32_t a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + half;
        float x1 = v[a], x2 = v[b];
        if (norm.ptr) {
            x1 = x1 * inv * load_elem(norm, a);
            x2 = x2 * inv * load_elem(norm, b);
        }
        v[a] = x1 * cos_t[i] - x2 * sin_t[i];
        v[b] = x2 * cos_t[i] + x1 * sin_t[i];
    }
    __syncwarp();
}

__global__ void qk_rope_kv_kernel(const nx__cu_row_t *rows, uint32_t n, nx__cu_shape_t s,
                                  uint32_t layer, float *q, float *k, const float *v,
                                  nx__cu_w_t q_norm, nx__cu_w_t k_norm, const float *cos_t,
                                  const float *sin_t)
{
    uint32_t r = blockIdx.x;
    if (r >= n)
        return;
    nx__cu_row_t row = rows[r];
    uint32_t hd = s.head_dim, half = hd / 2, lane = threadIdx.x & 31;
    uint32_t warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float *ct = cos_t + (uint64_t)r * half, *st = sin_t + (uint64_t)r * half;
    uint64_t q_dim = (uint64_t)s.heads * hd, kv_dim = (uint64_t)s.kv_heads * hd;
    bool in_cache = row.pos < row.capacity; /* the host checks; never write past the region */
    /* heads [0, heads) are q's, [heads, heads + kv_heads) k's (with v copied alongside) */
    for (uint32_t h = warp; h < s.heads + s.kv_heads; h += warps) { /* uniform per warp */
        if (h < s.heads) {
            warp_norm_rope(q + r * q_dim + (uint64_t)h * hd, hd, q_norm, s.rms_eps, ct, st,
                           s.rope_adjacent);
            continue;
        }
        uint32_t kh = h - s.heads;
        float *kr = k + r * kv_dim + (uint64_t)kh * hd;
        const float *vr = v + r * kv_dim + (uint64_t)kh * hd;
        warp_norm_rope(kr, hd, k_norm, s.rms_eps, ct, st, s.rope_adjacent);
        if (!in_cache)
            continue;
        uint64_t kc = kv_slot(row, s, layer, 0, kh), vc = kv_slot(row, s, layer, 1, kh);
        for (uint32_t i = lane; i < hd; i += 32) {
            kv_store(row.kv, s.kv_bf16, kc + i, kr[i]);
            kv_store(row.kv, s.kv_bf16, vc + i, vr[i]);
        }
    }
}

extern "C" int nx__cu_qk_rope_kv(void *stream, const nx__cu_row_t *rows, uint32_t n,
                                 const nx__cu_shape_t *shape, uint32_t layer, float *q,
                                 float *k, const float *v, nx__cu_w_t q_norm,
                                 nx__cu_w_t k_norm, const float *cos_t, const float *sin_t)
{
    if (n == 0)
        return 0;
    NX_LAUNCH(n, 256, 0, (cudaStream_t)stream, qk_rope_kv_kernel)(
        rows, n, *shape, layer, q, k, v, q_norm, k_norm, cos_t, sin_t);
    return launched();
}

/* ------------------------------------------------------------------------------------------
 * GEMV (the helpers it shares with cuda_quant.cu's are in cuda_device.cuh)
 */

/* Simple: one thread per (row r, output o), a plain loop over k (load_elem decodes block
 * types element by element). */
__global__ void gemv_simple_kernel(nx__cu_gemv_t g, uint32_t total_rows)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (uint64_t)g.n * total_rows)
        return;
    uint32_t r = (uint32_t)(i / total_rows), o = (uint32_t)(i % total_rows);
    const float *x = g.x + (uint64_t)r * g.cols;
    if (g.silu_pair) {
        float gate = 0.f, up = 0.f;
        for (uint32_t k = 0; k < g.cols; k++) {
            gate += x[k] * load_elem(g.seg[0].w, (uint64_t)o * g.cols + k);
            up += x[k] * load_elem(g.seg[1].w, (uint64_t)o * g.cols + k);
        }
        store_silu_pair(g, r, o, gate, up);
        return;
    }
    int sgi = find_seg(g, &o);
    float acc = 0.f;
    for (uint32_t k = 0; k < g.cols; k++)
        acc += x[k] * load_elem(g.seg[sgi].w, (uint64_t)o * g.cols + k);
    gemv_store(g.seg[sgi], g.accumulate, r, o, acc);
}

/* acc[r] += w[0..N) . x_r[k0..k0+N) for the rows r < n (NB a compile-time bound). With NORM
 * each weight is first scaled by the RMSNorm weight's element at the same k (gv: its 16 bytes
 * there), so the sum is (x * norm) . w and the caller scales it by the row's 1/rms. */
template <int DT, int NB, bool NORM>
__device__ __forceinline__ void gemv_fma(uint4 wv, uint4 gv, const float *x, uint32_t cols,
                                         uint32_t n, uint64_t k0, float *acc)
{
    constexpr int N = vec16<DT>::N;
    float wf[N];
    vec16<DT>::unpack(wv, wf);
    if (NORM) {
        float gf[N];
        vec16<DT>::unpack(gv, gf);
#pragma unroll
        for (int i = 0; i < N; i++)
            wf[i] *= gf[i];
    }
#pragma unroll
    for (int r = 0; r < NB; r++) {
        if (r < (int)n) {
            const float4 *xp = (const float4 *)(x + (uint64_t)r * cols + k0);
#pragma unroll
            for (int j = 0; j < N / 4; j++) {
                float4 xv = xp[j];
                acc[r] += wf[4 * j] * xv.x + wf[4 * j + 1] * xv.y + wf[4 * j + 2] * xv.z +
                          wf[4 * j + 3] * xv.w;
            }
        }
    }
}

/* The RMSNorm weight's 16-byte vector v (NORM), read through the cache: every warp of every
 * block reads the same few KiB, which stay in L1/L2. */
template <bool NORM>
__device__ __forceinline__ uint4 norm_vec(const uint4 *norm, uint32_t v)
{
    return NORM ? __ldg(norm + v) : make_uint4(0, 0, 0, 0);
}

/* Dot products of one weight row (16-byte vectors [0, nvec)) with the n x rows, by one warp;
 * acc[r] ends up lane-partial (the caller reduces). UNROLL independent 16-byte loads are in
 * flight per lane before the first is used. Weights are read once: __ldcs (evict-first) keeps
 * them from pushing the activations out of L2. `norm`: the RMSNorm weight's vectors (NORM).
 * Hot path. */
template <int DT, int NB, bool NORM>
__device__ __forceinline__ void gemv_row(const uint4 *w, const uint4 *norm, uint32_t nvec,
                                         const float *x, uint32_t cols, uint32_t n, float *acc)
{
    constexpr int N = vec16<DT>::N, UNROLL = 4;
    uint32_t lane = threadIdx.x & 31, v = lane;
    for (; v + 32 * (UNROLL - 1) < nvec; v += 32 * UNROLL) {
        uint4 wv[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
            wv[u] = __ldcs(w + v + 32 * u);
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
            gemv_fma<DT, NB, NORM>(wv[u], norm_vec<NORM>(norm, v + 32 * u), x, cols, n,
                                   (uint64_t)(v + 32 * u) * N, acc);
    }
    for (; v < nvec; v += 32)
        gemv_fma<DT, NB, NORM>(__ldcs(w + v), norm_vec<NORM>(norm, v), x, cols, n,
                               (uint64_t)v * N, acc);
}

/* Fast: one warp per output row (8 warps per block), every batch row at once. The warp exits
 * as a whole (its row index is warp-uniform), so the shuffles always see 32 lanes; with NORM
 * the block first computes the rows' 1/rms together (before any warp exits). */
template <int DT, int NB, bool NORM>
__global__ void __launch_bounds__(256) gemv_fast_kernel(nx__cu_gemv_t g, uint32_t total_rows)
{
    __shared__ float inv_rms[NB];
    __shared__ float red[32];
    if (NORM)
        rows_inv_rms<NB>(g, inv_rms, red);
    uint32_t o = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (o >= total_rows)
        return;
    uint32_t nvec = g.cols / vec16<DT>::N;
    const uint4 *norm = (const uint4 *)g.norm.ptr;
    float acc[NB], acc2[NB];
#pragma unroll
    for (int r = 0; r < NB; r++)
        acc[r] = acc2[r] = 0.f;
    if (g.silu_pair) {
        gemv_row<DT, NB, NORM>((const uint4 *)g.seg[0].w.ptr + (uint64_t)o * nvec, norm, nvec,
                               g.x, g.cols, g.n, acc);
        gemv_row<DT, NB, NORM>((const uint4 *)g.seg[1].w.ptr + (uint64_t)o * nvec, norm, nvec,
                               g.x, g.cols, g.n, acc2);
    } else {
        uint32_t seg_row = o;
        int sgi = find_seg(g, &seg_row);
        gemv_row<DT, NB, NORM>((const uint4 *)g.seg[sgi].w.ptr + (uint64_t)seg_row * nvec,
                               norm, nvec, g.x, g.cols, g.n, acc);
    }
    gemv_finish<NB, NORM>(g, o, acc, acc2, inv_rms);
}

static uint32_t gemv_total_rows(const nx__cu_gemv_t *g)
{
    if (g->silu_pair)
        return g->seg[0].rows;
    uint32_t total = 0;
    for (uint32_t i = 0; i < g->seg_count; i++)
        total += g->seg[i].rows;
    return total;
}

extern "C" bool nx__cu_gemv_fast_ok(const nx__cu_gemv_t *g)
{
    if (g->n == 0 || g->n > NX_CU_GEMV_MAX_ROWS || g->seg_count == 0 || g->seg_count > 3 ||
        (g->silu_pair && g->seg_count != 2) || ((uintptr_t)g->x & 15))
        return false;
    int dt = g->seg[0].w.dtype;
    if (nx__cu_is_block(dt))
        return nx__cu_qgemv_ok(g);
    uint32_t per_vec = dt == NX_CU_F32 ? 4 : 8;
    if (g->cols % per_vec != 0 || g->cols % 4 != 0) /* x rows: float4 loads */
        return false;
    for (uint32_t i = 0; i < g->seg_count; i++)
        if (g->seg[i].w.dtype != dt || ((uintptr_t)g->seg[i].w.ptr & 15))
            return false;
    if (g->norm.ptr && (g->norm.dtype != dt || ((uintptr_t)g->norm.ptr & 15)))
        return false;
    return true;
}

template <int DT, bool NORM>
static void launch_fast(const nx__cu_gemv_t *g, uint32_t total, cudaStream_t stream)
{
    unsigned blocks = (total + 7) / 8;
    if (g->n <= 1)
        NX_LAUNCH(blocks, 256, 0, stream, gemv_fast_kernel<DT, 1, NORM>)(*g, total);
    else if (g->n <= 2)
        NX_LAUNCH(blocks, 256, 0, stream, gemv_fast_kernel<DT, 2, NORM>)(*g, total);
    else if (g->n <= 4)
        NX_LAUNCH(blocks, 256, 0, stream, gemv_fast_kernel<DT, 4, NORM>)(*g, total);
    else
        NX_LAUNCH(blocks, 256, 0, stream, gemv_fast_kernel<DT, 8, NORM>)(*g, total);
}

template <int DT>
static void launch_fast(const nx__cu_gemv_t *g, uint32_t total, cudaStream_t stream)
{
    if (g->norm.ptr)
        launch_fast<DT, true>(g, total, stream);
    else
        launch_fast<DT, false>(g, total, stream);
}

extern "C" int nx__cu_gemv(void *stream, const nx__cu_gemv_t *g, bool simple)
{
    uint32_t total = gemv_total_rows(g);
    if (g->n == 0 || total == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    bool fast = !simple && nx__cu_gemv_fast_ok(g);
    if (g->norm.ptr && !fast)
        return (int)cudaErrorInvalidValue; /* the simple kernel has no fused norm */
    if (!fast) {
        NX_LAUNCH(blocks_for((uint64_t)g->n * total, 128), 128, 0, st, gemv_simple_kernel)(
            *g, total);
        return launched();
    }
    if (nx__cu_is_block(g->seg[0].w.dtype))
        return nx__cu_qgemv(st, g, total);
    switch (g->seg[0].w.dtype) {
    case NX_CU_BF16: launch_fast<NX_CU_BF16>(g, total, st); break;
    case NX_CU_F16: launch_fast<NX_CU_F16>(g, total, st); break;
    default: launch_fast<NX_CU_F32>(g, total, st); break;
    }
    return launched();
}

/* ------------------------------------------------------------------------------------------
 * Small element-wise kernels for the cuBLAS path
 */
__global__ void silu_mul_kernel(float *g, const float *u, uint64_t count)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count)
        g[i] = silu(g[i]) * u[i];
}

extern "C" int nx__cu_silu_mul(void *stream, float *g, const float *u, uint64_t count)
{
    if (count == 0)
        return 0;
    NX_LAUNCH(blocks_for(count, 256), 256, 0, (cudaStream_t)stream, silu_mul_kernel)(g, u, count);
    return launched();
}

__global__ void add_bias_kernel(float *y, uint32_t n, uint32_t cols, nx__cu_w_t bias)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (uint64_t)n * cols)
        y[i] += load_elem(bias, i % cols);
}

extern "C" int nx__cu_add_bias(void *stream, float *y, uint32_t n, uint32_t cols,
                               nx__cu_w_t bias)
{
    if (n == 0 || cols == 0 || !bias.ptr)
        return 0;
    NX_LAUNCH(blocks_for((uint64_t)n * cols, 256), 256, 0, (cudaStream_t)stream, add_bias_kernel)(
        y, n, cols, bias);
    return launched();
}

__global__ void to_half_kernel(const float *x, uint64_t count, int32_t dtype, void *out)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count)
        return;
    if (dtype == NX_CU_BF16)
        ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(x[i]);
    else
        ((__half *)out)[i] = __float2half_rn(x[i]);
}

extern "C" int nx__cu_to_half(void *stream, const float *x, uint64_t count, int32_t dtype,
                              void *out)
{
    if (count == 0)
        return 0;
    NX_LAUNCH(blocks_for(count, 256), 256, 0, (cudaStream_t)stream, to_half_kernel)(
        x, count, dtype, out);
    return launched();
}
