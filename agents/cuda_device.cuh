/* cuda_device.cuh — device helpers that cuda_kernels.cu and cuda_quant.cu share: element loads
 * of any weight type, warp and block sums, and the GEMV's fused RMSNorm scale and epilogue
 * (bias, residual accumulate, the gate-up SiLU), so the dense and the quantized GEMV finish
 * their rows the same way. Everything here is static or a template: each .cu file gets its own
 * copy (no relocatable device code).
 *
 * Reductions: warp sums are __shfl_xor_sync over the full mask, always executed by all 32
 * lanes; block sums go through shared memory between __syncthreads() that every thread of the
 * block reaches.
 */
#ifndef NX_CUDA_DEVICE_CUH
#define NX_CUDA_DEVICE_CUH

#include "cuda_blocks.cuh"
#include "cuda_kernels.h"

#include "cuda_launch.h"
#include <stdint.h>

#define FULL_MASK 0xffffffffu

static __device__ __forceinline__ float bf16_bits_to_f32(uint32_t bits16)
{
    return __uint_as_float(bits16 << 16);
}

/* Element i of a weight of any dtype, as fp32 (the simple path, the embedding and scalar
 * epilogues): one switch over the types, each block type's row of cuda_blocks.cuh. */
static __device__ __forceinline__ float load_elem(nx__cu_w_t w, uint64_t i)
{
    switch (w.dtype) {
    case NX_CU_BF16: return bf16_bits_to_f32(((const uint16_t *)w.ptr)[i]);
    case NX_CU_F16: return __half2float(((const __half *)w.ptr)[i]);
    case NX_CU_Q8_0: return qblock_elem_at<NX_CU_Q8_0>(w.ptr, i);
    case NX_CU_Q4_0: return qblock_elem_at<NX_CU_Q4_0>(w.ptr, i);
    case NX_CU_Q5_0: return qblock_elem_at<NX_CU_Q5_0>(w.ptr, i);
    case NX_CU_Q4_K: return qblock_elem_at<NX_CU_Q4_K>(w.ptr, i);
    case NX_CU_Q6_K: return qblock_elem_at<NX_CU_Q6_K>(w.ptr, i);
    default: return ((const float *)w.ptr)[i];
    }
}

/* 16 bytes of a plain dtype as fp32: 8 BF16, 8 F16 or 4 F32. */
template <int DT> struct vec16;
template <> struct vec16<NX_CU_BF16> {
    static constexpr int N = 8;
    static __device__ __forceinline__ void unpack(uint4 v, float *f)
    {
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = __uint_as_float(w[i] << 16);            /* the lower address */
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
};
template <> struct vec16<NX_CU_F16> {
    static constexpr int N = 8;
    static __device__ __forceinline__ void unpack(uint4 v, float *f)
    {
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __half2 h;
            memcpy(&h, &w[i], sizeof h);
            float2 p = __half22float2(h); /* .x is the lower address */
            f[2 * i] = p.x;
            f[2 * i + 1] = p.y;
        }
    }
};
template <> struct vec16<NX_CU_F32> {
    static constexpr int N = 4;
    static __device__ __forceinline__ void unpack(uint4 v, float *f)
    {
        f[0] = __uint_as_float(v.x);
        f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z);
        f[3] = __uint_as_float(v.w);
    }
};

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
 * Every thread of the block must call it. `red` holds 32 floats. */
static __device__ float block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float total = 0.f;
    for (int i = 0; i < warps; i++) /* every thread sums in the same order: same result */
        total += red[i];
    return total;
}

/* ------------------------------------------------------------------------------------------
 * GEMV. Output rows are numbered across the segments: [0, seg[0].rows) are seg 0's, and so on.
 */
static __device__ __forceinline__ float silu(float g)
{
    return g / (1.f + expf(-g));
}

/* Store one output element: bias, then = or +=. */
static __device__ __forceinline__ void gemv_store(const nx__cu_gemv_seg_t &sg, bool accumulate,
                                                  uint32_t r, uint32_t o, float acc)
{
    if (sg.bias.ptr)
        acc += load_elem(sg.bias, o);
    float *dst = sg.y + (uint64_t)r * sg.rows + o;
    *dst = accumulate ? *dst + acc : acc;
}

/* The fused gate-up-SiLU output: silu(gate + bias) * (up + bias) into segment 0's rows. */
static __device__ __forceinline__ void store_silu_pair(const nx__cu_gemv_t &g, uint32_t r,
                                                       uint32_t o, float gate, float up)
{
    if (g.seg[0].bias.ptr)
        gate += load_elem(g.seg[0].bias, o);
    if (g.seg[1].bias.ptr)
        up += load_elem(g.seg[1].bias, o);
    g.seg[0].y[(uint64_t)r * g.seg[0].rows + o] = silu(gate) * up;
}

static __device__ __forceinline__ int find_seg(const nx__cu_gemv_t &g, uint32_t *o)
{
    int sgi = 0;
    while (sgi + 1 < (int)g.seg_count && *o >= g.seg[sgi].rows) {
        *o -= g.seg[sgi].rows;
        sgi++;
    }
    return sgi;
}

/* inv[r] = 1 / rms(x row r) for r < n, by the whole block (every thread must call it; it ends
 * with a barrier, so every thread then reads every inv[r]). Each block of a fused GEMV
 * computes the same values in the same order: rows are read from L2, cols * 4 bytes each,
 * against the block's 8 weight rows from memory. */
template <int NB>
static __device__ void rows_inv_rms(const nx__cu_gemv_t &g, float *inv, float *red)
{
    uint32_t nv4 = g.cols / 4;
    for (int r = 0; r < NB && r < (int)g.n; r++) { /* uniform for the block */
        const float4 *xr = (const float4 *)(g.x + (uint64_t)r * g.cols);
        float sum_sq = 0.f;
        for (uint32_t i = threadIdx.x; i < nv4; i += blockDim.x) {
            float4 v = xr[i];
            sum_sq += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        float total = block_sum(sum_sq, red);
        if (threadIdx.x == 0)
            inv[r] = rsqrtf(total / (float)g.cols + g.norm_eps);
    }
    __syncthreads();
}

/* The end of output row o of a one-warp-per-row GEMV: acc[r] (and acc2[r], up's, with
 * silu_pair) are lane-partial dot products; the warp reduces them, applies the rows' 1/rms
 * (NORM), and lane 0 stores with bias, accumulate or the SiLU. All 32 lanes must call it. */
template <int NB, bool NORM>
static __device__ __forceinline__ void gemv_finish(const nx__cu_gemv_t &g, uint32_t o,
                                                   float *acc, float *acc2,
                                                   const float *inv_rms)
{
#pragma unroll
    for (int r = 0; r < NB; r++) {
        acc[r] = warp_sum(acc[r]);
        acc2[r] = warp_sum(acc2[r]);
        if (NORM && r < (int)g.n) {
            acc[r] *= inv_rms[r];
            acc2[r] *= inv_rms[r];
        }
    }
    if ((threadIdx.x & 31) != 0)
        return;
    if (g.silu_pair) {
        for (int r = 0; r < NB && r < (int)g.n; r++)
            store_silu_pair(g, r, o, acc[r], acc2[r]);
        return;
    }
    int sgi = find_seg(g, &o);
#pragma unroll
    for (int r = 0; r < NB; r++)
        if (r < (int)g.n)
            gemv_store(g.seg[sgi], g.accumulate, (uint32_t)r, o, acc[r]);
}

#endif
