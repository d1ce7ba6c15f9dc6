/* cuda_attention.cu — causal GQA attention over the KV caches, BF16 or fp32 (see
 * cuda_kernels.h); scores, softmax and outputs in fp32.
 *
 * NOT YET RUN ON A GPU: written on a machine without one; compiled for sm_90 and run only under
 * the CPU emulation of tests/cuemu (make emu-test: index arithmetic, barriers and host
 * orchestration; not the hardware, not speed), where tests/test_cuda_engine.c passes.
 *
 * Fast version (flash-decoding): a row's context 0..pos is cut into S_eff splits of equal
 * length; block (split, head, row) runs an online softmax over its split, four warps taking
 * every fourth position, then merges its warps through shared memory and writes the split's
 * (max, sum, unnormalized output) to `partial`; a second kernel merges the splits. S_eff is
 * computed on the device from the row's position (at least ATTN_MIN_CHUNK positions a split,
 * at most `splits`), so the grid is fixed and one captured graph serves every step.
 *
 * Known limits, for the GPU session: each q head reads its kv head's keys itself (the heads
 * of a GQA group share them through L2, not registers); keys are read one element a lane,
 * coalesced across the warp (64 B per warp access in BF16), not 16-byte vectors; prefill rows
 * use the same kernel, one query row at a time (no reuse of K/V across query rows as flash
 * attention would). Correct, not yet fast for long prompts.
 */
#include "cuda_kernels.h"

#include "cuda_launch.h"
#include <math.h>
#include <stdint.h>

#define FULL_MASK 0xffffffffu
#define ATTN_WARPS 4
#define ATTN_MIN_CHUNK 64
#define PER_LANE (NX_CU_MAX_HEAD_DIM / 32)

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

/* Positions the row attends to: 0..pos, never past the cache (the host checks pos < capacity;
 * this only keeps a bad row from reading outside its region). */
__device__ __forceinline__ uint32_t row_len(const nx__cu_row_t &row)
{
    return row.pos < row.capacity ? row.pos + 1 : row.capacity;
}

__device__ __forceinline__ uint32_t eff_splits(uint32_t len, uint32_t splits)
{
    uint32_t want = (len + ATTN_MIN_CHUNK - 1) / ATTN_MIN_CHUNK;
    want = want < 1 ? 1 : want;
    return want < splits ? want : splits;
}

/* The element index where (layer, k|v, kv_head)'s positions start in the row's cache. */
__device__ __forceinline__ uint64_t kv_head(const nx__cu_row_t &row, const nx__cu_shape_t &s,
                                            uint32_t layer, int kind, uint32_t kv_head)
{
    uint64_t per_head = (uint64_t)row.capacity * s.head_dim;
    return (((uint64_t)layer * 2 + kind) * s.kv_heads + kv_head) * per_head;
}

/* Element i of a KV cache as fp32 (BF16: its bits are fp32's upper half). */
template <bool BF16>
__device__ __forceinline__ float kv_at(const void *cache, uint64_t i)
{
    if (BF16)
        return __uint_as_float((uint32_t)((const uint16_t *)cache)[i] << 16);
    return ((const float *)cache)[i];
}

__device__ __forceinline__ float kv_load(const void *cache, bool bf16, uint64_t i)
{
    return bf16 ? kv_at<true>(cache, i) : kv_at<false>(cache, i);
}

/* ------------------------------------------------------------------------------------------
 * Simple: one thread per (row, head), three passes over the context, as the CPU backend.
 */
__global__ void attn_simple_kernel(const nx__cu_row_t *rows, uint32_t n, nx__cu_shape_t s,
                                   uint32_t layer, const float *q, float *att)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (uint64_t)n * s.heads)
        return;
    uint32_t r = (uint32_t)(i / s.heads), h = (uint32_t)(i % s.heads), hd = s.head_dim;
    nx__cu_row_t row = rows[r];
    uint32_t len = row_len(row), kvh = h / (s.heads / s.kv_heads);
    uint64_t keys = kv_head(row, s, layer, 0, kvh), vals = kv_head(row, s, layer, 1, kvh);
    const float *qr = q + (uint64_t)r * s.heads * hd + (uint64_t)h * hd;
    float *out = att + (uint64_t)r * s.heads * hd + (uint64_t)h * hd;
    float scale = 1.f / sqrtf((float)hd), max = -INFINITY;
    for (uint32_t t = 0; t < len; t++) {
        float dot = 0.f;
        for (uint32_t d = 0; d < hd; d++)
            dot += qr[d] * kv_load(row.kv, s.kv_bf16, keys + (uint64_t)t * hd + d);
        max = fmaxf(max, dot * scale);
    }
    float sum = 0.f;
    for (uint32_t d = 0; d < hd; d++)
        out[d] = 0.f;
    for (uint32_t t = 0; t < len; t++) {
        float dot = 0.f;
        for (uint32_t d = 0; d < hd; d++)
            dot += qr[d] * kv_load(row.kv, s.kv_bf16, keys + (uint64_t)t * hd + d);
        float p = expf(dot * scale - max);
        sum += p;
        for (uint32_t d = 0; d < hd; d++)
            out[d] += p * kv_load(row.kv, s.kv_bf16, vals + (uint64_t)t * hd + d);
    }
    for (uint32_t d = 0; d < hd; d++)
        out[d] /= sum;
}

/* ------------------------------------------------------------------------------------------
 * Fast: partial softmax per split, then the merge.
 */
template <bool BF16>
__global__ void __launch_bounds__(ATTN_WARPS * 32)
    attn_partial_kernel(const nx__cu_row_t *rows, uint32_t n, nx__cu_shape_t s, uint32_t layer,
                        const float *q, uint32_t splits, float *partial)
{
    __shared__ float sm_m[ATTN_WARPS], sm_l[ATTN_WARPS];
    __shared__ float sm_o[ATTN_WARPS][NX_CU_MAX_HEAD_DIM];
    uint32_t split = blockIdx.x, h = blockIdx.y, r = blockIdx.z;
    if (r >= n || h >= s.heads)
        return;
    nx__cu_row_t row = rows[r];
    uint32_t len = row_len(row), s_eff = eff_splits(len, splits);
    if (split >= s_eff) /* uniform for the block; the merge reads only splits < s_eff */
        return;
    uint32_t chunk = (len + s_eff - 1) / s_eff, t0 = split * chunk;
    uint32_t t1 = t0 + chunk < len ? t0 + chunk : len;
    uint32_t hd = s.head_dim, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t kvh = h / (s.heads / s.kv_heads);
    uint64_t keys = kv_head(row, s, layer, 0, kvh), vals = kv_head(row, s, layer, 1, kvh);
    const float *qr = q + (uint64_t)r * s.heads * hd + (uint64_t)h * hd;
    float scale = 1.f / sqrtf((float)hd);

    float qv[PER_LANE], acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        uint32_t d = lane + 32 * i;
        qv[i] = d < hd ? qr[d] : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (uint32_t t = t0 + warp; t < t1; t += ATTN_WARPS) { /* uniform per warp */
        uint64_t kt = keys + (uint64_t)t * hd, vt = vals + (uint64_t)t * hd;
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            uint32_t d = lane + 32 * i;
            if (d < hd)
                dot += qv[i] * kv_at<BF16>(row.kv, kt + d);
        }
        float score = warp_sum(dot) * scale; /* all 32 lanes */
        float m_new = fmaxf(m, score);
        float c = expf(m - m_new); /* m = -inf at first: c = 0 (score is finite) */
        float p = expf(score - m_new);
        l = l * c + p;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            uint32_t d = lane + 32 * i;
            if (d < hd)
                acc[i] = acc[i] * c + p * kv_at<BF16>(row.kv, vt + d);
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        uint32_t d = lane + 32 * i;
        if (d < hd)
            sm_o[warp][d] = acc[i];
    }
    __syncthreads();
    float big = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++)
        big = fmaxf(big, sm_m[w]);
    float weight[ATTN_WARPS];
    for (int w = 0; w < ATTN_WARPS; w++) /* a warp that saw no position has m = -inf: 0 */
        weight[w] = sm_m[w] == -INFINITY ? 0.f : expf(sm_m[w] - big);
    float *out = partial + (((uint64_t)r * s.heads + h) * splits + split) * (hd + 2);
    for (uint32_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < ATTN_WARPS; w++)
            o += weight[w] * sm_o[w][d];
        out[2 + d] = o;
    }
    if (threadIdx.x == 0) {
        float sum = 0.f;
        for (int w = 0; w < ATTN_WARPS; w++)
            sum += weight[w] * sm_l[w];
        out[0] = big; /* -inf with sum 0 when the split was empty */
        out[1] = sum;
    }
}

/* One block per (head, row): merge the row's splits. */
__global__ void attn_combine_kernel(const nx__cu_row_t *rows, uint32_t n, nx__cu_shape_t s,
                                    uint32_t splits, const float *partial, float *att)
{
    uint32_t h = blockIdx.x, r = blockIdx.y, hd = s.head_dim;
    if (r >= n || h >= s.heads)
        return;
    uint32_t s_eff = eff_splits(row_len(rows[r]), splits);
    const float *part = partial + ((uint64_t)r * s.heads + h) * splits * (hd + 2);
    float big = -INFINITY;
    for (uint32_t i = 0; i < s_eff; i++)
        big = fmaxf(big, part[(uint64_t)i * (hd + 2)]);
    float sum = 0.f;
    for (uint32_t i = 0; i < s_eff; i++) {
        float m = part[(uint64_t)i * (hd + 2)];
        if (m != -INFINITY)
            sum += expf(m - big) * part[(uint64_t)i * (hd + 2) + 1];
    }
    float inv = sum > 0.f ? 1.f / sum : 0.f;
    float *out = att + (uint64_t)r * s.heads * hd + (uint64_t)h * hd;
    for (uint32_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.f;
        for (uint32_t i = 0; i < s_eff; i++) {
            float m = part[(uint64_t)i * (hd + 2)];
            if (m != -INFINITY)
                o += expf(m - big) * part[(uint64_t)i * (hd + 2) + 2 + d];
        }
        out[d] = o * inv;
    }
}

extern "C" int nx__cu_attention(void *stream, const nx__cu_row_t *rows, uint32_t n,
                                const nx__cu_shape_t *shape, uint32_t layer, const float *q,
                                float *att, uint32_t splits, float *partial, bool simple)
{
    if (n == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    if (shape->head_dim > NX_CU_MAX_HEAD_DIM || shape->kv_heads == 0 ||
        shape->heads % shape->kv_heads != 0)
        return (int)cudaErrorInvalidValue;
    if (simple) {
        uint64_t threads = (uint64_t)n * shape->heads;
        NX_LAUNCH((unsigned)((threads + 63) / 64), 64, 0, st, attn_simple_kernel)(
            rows, n, *shape, layer, q, att);
        return (int)cudaGetLastError();
    }
    if (splits == 0 || splits > 65535 || shape->heads > 65535 || n > 65535)
        return (int)cudaErrorInvalidValue;
    dim3 grid(splits, shape->heads, n);
    if (shape->kv_bf16)
        NX_LAUNCH(grid, ATTN_WARPS * 32, 0, st, attn_partial_kernel<true>)(
            rows, n, *shape, layer, q, splits, partial);
    else
        NX_LAUNCH(grid, ATTN_WARPS * 32, 0, st, attn_partial_kernel<false>)(
            rows, n, *shape, layer, q, splits, partial);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return (int)e;
    NX_LAUNCH(dim3(shape->heads, n), 128, 0, st, attn_combine_kernel)(
        rows, n, *shape, splits, partial, att);
    return (int)cudaGetLastError();
}
