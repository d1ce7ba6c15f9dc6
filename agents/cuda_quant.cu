/* cuda_quant.cu — the CUDA engine's kernels over ggml's block weights (Q8_0, Q4_0, Q5_0, Q4_K,
 * Q6_K; layouts in quant.h, the device-side table in cuda_blocks.cuh): the decode GEMV that
 * reads the packed blocks directly, and the dequantization to BF16 that the cuBLAS path
 * (prefill, batches above the GEMV's rows) multiplies with.
 *
 * NOT YET RUN ON A GPU: written on a machine without one; it compiles for sm_90 and has run
 * only under the CPU emulation of tests/cuemu (make emu-test: index arithmetic, barriers,
 * misaligned vector loads and host orchestration; not the hardware, not speed), where
 * tests/test_cuda_engine.c compares it with the same weights dequantized to F32 and with the
 * CPU backend. Nothing here has been timed.
 *
 * The GEMV (qgemv_kernel): one warp per output row, 8 warps per block, every batch row (up to
 * 8) at once, so each weight byte is read from memory once per step; fp32 activations and
 * accumulation (unlike the CPU, which quantizes activations to int8: see cpu_quant.h). Blocks
 * are 2-byte aligned only (cuda_blocks.cuh), so a warp does not read a block with wide loads
 * of its own: it reads a run of TILE blocks of its row as one contiguous byte range, in
 * 16-byte vectors aligned down from the run's first byte and up past its last (the lead
 * bytes before the run and the tail after it are bytes of the same 16-byte granule, inside
 * the same page of the pool region as the row's own bytes, and never used), into its own
 * slice of shared memory; the lanes then decode their units (RUNS x 8 elements) from shared
 * memory with 16-bit reads and multiply them with the x rows (float4 loads, from L1/L2). The
 * next run's vectors are loaded into registers before the current run is decoded, so a warp
 * has a run in flight while it computes. The fused RMSNorm, bias, residual accumulate and
 * gate-up SiLU have the dense GEMV's semantics (cuda_device.cuh's gemv_finish).
 *
 * What only a GPU can say: whether this reaches the bandwidth roofline (the decode of a unit
 * costs a few integer and float instructions per weight, and at 8 batch rows the fp32 FMAs
 * may bound it before memory does), and how many registers the prefetch takes.
 */
#include "cuda_kernels.h"

#include "cuda_blocks.cuh"
#include "cuda_device.cuh"
#include "cuda_launch.h"
#include <stdint.h>

#define QGEMV_WARPS 8 /* warps (output rows) per block */

static int launched(void)
{
    return (int)cudaGetLastError();
}

/* 16-byte vectors a run of TILE blocks spans, whatever its first byte's offset in a vector
 * (at most 14: blocks are 2-byte aligned). */
template <int DT> struct qtile {
    using Q = qblock<DT>;
    static constexpr int VECS = (14 + Q::TILE * Q::BYTES + 15) / 16;
    static constexpr int PER_LANE = (VECS + 31) / 32; /* vectors a lane loads per run */
    static_assert(Q::TILE * Q::UNITS % 32 == 0, "a full run gives every lane work");
    static_assert(Q::QK % 8 == 0, "units are runs of 8 elements");
};

/* This lane's vectors of the run of blocks [first, first + count) of a row (count > 0):
 * vector i of the run is lane + 32 i's; vectors past the run's end are left zero. */
template <int DT>
static __device__ __forceinline__ void run_load(const uint8_t *row, uint32_t first,
                                                uint32_t count, uint4 *pre)
{
    using Q = qblock<DT>;
    const uint8_t *start = row + (uint64_t)first * Q::BYTES;
    const uint4 *vec = (const uint4 *)((uintptr_t)start & ~(uintptr_t)15);
    uint32_t lead = (uint32_t)(start - (const uint8_t *)vec);
    uint32_t nvec = (lead + count * Q::BYTES + 15) / 16, lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < qtile<DT>::PER_LANE; i++) {
        uint32_t v = lane + 32 * i;
        pre[i] = v < nvec ? __ldcs(vec + v) : make_uint4(0, 0, 0, 0);
    }
}

/* The fused RMSNorm weight's 8 elements at k (a multiple of 8; the norm 16-byte aligned) as
 * fp32, through the read-only cache: every warp reads the same few KiB. */
static __device__ __forceinline__ void norm8(nx__cu_w_t norm, uint64_t k, float *out)
{
    if (norm.dtype == NX_CU_F32) {
        const uint4 *p = (const uint4 *)((const float *)norm.ptr + k);
        vec16<NX_CU_F32>::unpack(__ldg(p), out);
        vec16<NX_CU_F32>::unpack(__ldg(p + 1), out + 4);
    } else if (norm.dtype == NX_CU_BF16) {
        vec16<NX_CU_BF16>::unpack(__ldg((const uint4 *)((const uint16_t *)norm.ptr + k)), out);
    } else {
        vec16<NX_CU_F16>::unpack(__ldg((const uint4 *)((const uint16_t *)norm.ptr + k)), out);
    }
}

/* acc[r] += w . x_r over one decoded unit (RUNS runs of 8 weights starting at element kb +
 * k[run] of the row), for the batch rows r < n (NB a compile-time bound). With NORM the
 * weights are first scaled by the RMSNorm weight at the same k, so the sum is (x * norm) . w
 * and gemv_finish scales it by the row's 1/rms. Hot path. */
template <int RUNS, int NB, bool NORM>
static __device__ __forceinline__ void unit_dot(float (&w)[RUNS][8], const uint32_t (&k)[RUNS],
                                                uint64_t kb, const nx__cu_gemv_t &g,
                                                float *acc)
{
#pragma unroll
    for (int run = 0; run < RUNS; run++) {
        uint64_t at = kb + k[run];
        if (NORM) {
            float nv[8];
            norm8(g.norm, at, nv);
#pragma unroll
            for (int i = 0; i < 8; i++)
                w[run][i] *= nv[i];
        }
#pragma unroll
        for (int r = 0; r < NB; r++) {
            if (r < (int)g.n) {
                const float4 *xp = (const float4 *)(g.x + (uint64_t)r * g.cols + at);
                float4 a = xp[0], b = xp[1];
                acc[r] += w[run][0] * a.x + w[run][1] * a.y + w[run][2] * a.z +
                          w[run][3] * a.w + w[run][4] * b.x + w[run][5] * b.y +
                          w[run][6] * b.z + w[run][7] * b.w;
            }
        }
    }
}

/* Dot products of one weight row (`blocks` blocks at `row`) with the n x rows, by one warp,
 * through the warp's shared-memory slice `stage` (qtile<DT>::VECS vectors); acc[r] ends up
 * lane-partial. Every lane must call it (it has __syncwarp). Hot path. */
template <int DT, int NB, bool NORM>
static __device__ void qgemv_row(const uint8_t *row, uint32_t blocks, uint4 *stage,
                                 const nx__cu_gemv_t &g, float *acc)
{
    using Q = qblock<DT>;
    using T = qtile<DT>;
    uint32_t lane = threadIdx.x & 31;
    uint4 pre[T::PER_LANE];
    run_load<DT>(row, 0, blocks < Q::TILE ? blocks : Q::TILE, pre);
    for (uint32_t first = 0; first < blocks; first += Q::TILE) {
        uint32_t count = blocks - first < Q::TILE ? blocks - first : Q::TILE;
        const uint8_t *start = row + (uint64_t)first * Q::BYTES;
        uint32_t lead = (uint32_t)((uintptr_t)start & 15);
#pragma unroll
        for (int i = 0; i < T::PER_LANE; i++)
            if (lane + 32 * i < (uint32_t)T::VECS)
                stage[lane + 32 * i] = pre[i];
        __syncwarp(); /* the run is in shared memory for every lane */
        uint32_t next = first + Q::TILE;
        if (next < blocks) /* the next run's loads in flight while this one is decoded */
            run_load<DT>(row, next, blocks - next < Q::TILE ? blocks - next : Q::TILE, pre);
        const uint8_t *bytes = (const uint8_t *)stage + lead;
        for (uint32_t u = lane; u < count * Q::UNITS; u += 32) {
            float w[Q::RUNS][8];
            uint32_t k[Q::RUNS];
            Q::unit(bytes + u / Q::UNITS * Q::BYTES, u % Q::UNITS, w, k);
            unit_dot<Q::RUNS, NB, NORM>(w, k, (uint64_t)(first + u / Q::UNITS) * Q::QK, g, acc);
        }
        __syncwarp(); /* every lane is done with the run before the next overwrites it */
    }
}

/* One warp per output row (QGEMV_WARPS per block), every batch row at once. The warp exits as
 * a whole (its row index is warp-uniform), so the shuffles and __syncwarp always see 32
 * lanes; with NORM the block first computes the rows' 1/rms together (before any warp
 * exits). */
template <int DT, int NB, bool NORM>
__global__ void __launch_bounds__(256) qgemv_kernel(nx__cu_gemv_t g, uint32_t total_rows)
{
    using Q = qblock<DT>;
    __shared__ uint4 stage[QGEMV_WARPS][qtile<DT>::VECS];
    __shared__ float inv_rms[NB];
    __shared__ float red[32];
    if (NORM)
        rows_inv_rms<NB>(g, inv_rms, red);
    uint32_t warp = threadIdx.x >> 5, o = blockIdx.x * QGEMV_WARPS + warp;
    if (o >= total_rows)
        return;
    uint32_t blocks = g.cols / Q::QK;
    uint64_t row_bytes = (uint64_t)blocks * Q::BYTES;
    float acc[NB], acc2[NB];
#pragma unroll
    for (int r = 0; r < NB; r++)
        acc[r] = acc2[r] = 0.f;
    if (g.silu_pair) {
        qgemv_row<DT, NB, NORM>((const uint8_t *)g.seg[0].w.ptr + o * row_bytes, blocks,
                                stage[warp], g, acc);
        qgemv_row<DT, NB, NORM>((const uint8_t *)g.seg[1].w.ptr + o * row_bytes, blocks,
                                stage[warp], g, acc2);
    } else {
        uint32_t seg_row = o;
        int sgi = find_seg(g, &seg_row);
        qgemv_row<DT, NB, NORM>((const uint8_t *)g.seg[sgi].w.ptr + seg_row * row_bytes,
                                blocks, stage[warp], g, acc);
    }
    gemv_finish<NB, NORM>(g, o, acc, acc2, inv_rms);
}

template <int DT, bool NORM>
static void launch_q(const nx__cu_gemv_t *g, uint32_t total, cudaStream_t stream)
{
    unsigned blocks = (total + QGEMV_WARPS - 1) / QGEMV_WARPS, threads = 32 * QGEMV_WARPS;
    if (g->n <= 1)
        NX_LAUNCH(blocks, threads, 0, stream, qgemv_kernel<DT, 1, NORM>)(*g, total);
    else if (g->n <= 2)
        NX_LAUNCH(blocks, threads, 0, stream, qgemv_kernel<DT, 2, NORM>)(*g, total);
    else if (g->n <= 4)
        NX_LAUNCH(blocks, threads, 0, stream, qgemv_kernel<DT, 4, NORM>)(*g, total);
    else
        NX_LAUNCH(blocks, threads, 0, stream, qgemv_kernel<DT, 8, NORM>)(*g, total);
}

template <int DT>
static void launch_q(const nx__cu_gemv_t *g, uint32_t total, cudaStream_t stream)
{
    if (g->norm.ptr)
        launch_q<DT, true>(g, total, stream);
    else
        launch_q<DT, false>(g, total, stream);
}

extern "C" bool nx__cu_qgemv_ok(const nx__cu_gemv_t *g)
{
    if (g->n == 0 || g->n > NX_CU_GEMV_MAX_ROWS || g->seg_count == 0 || g->seg_count > 3 ||
        (g->silu_pair && g->seg_count != 2) || ((uintptr_t)g->x & 15))
        return false;
    int dt = g->seg[0].w.dtype;
    if (!nx__cu_is_block(dt) || g->cols % nx__cu_block_elems(dt) != 0)
        return false;
    for (uint32_t i = 0; i < g->seg_count; i++)
        if (g->seg[i].w.dtype != dt || ((uintptr_t)g->seg[i].w.ptr & 1))
            return false;
    if (g->norm.ptr && (nx__cu_is_block(g->norm.dtype) || ((uintptr_t)g->norm.ptr & 15)))
        return false;
    return true;
}

extern "C" int nx__cu_qgemv(void *stream, const nx__cu_gemv_t *g, uint32_t total_rows)
{
    if (g->n == 0 || total_rows == 0)
        return 0;
    if (!nx__cu_qgemv_ok(g))
        return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
    switch (g->seg[0].w.dtype) { /* the table: one kernel body, a row per block type */
    case NX_CU_Q8_0: launch_q<NX_CU_Q8_0>(g, total_rows, st); break;
    case NX_CU_Q4_0: launch_q<NX_CU_Q4_0>(g, total_rows, st); break;
    case NX_CU_Q5_0: launch_q<NX_CU_Q5_0>(g, total_rows, st); break;
    case NX_CU_Q4_K: launch_q<NX_CU_Q4_K>(g, total_rows, st); break;
    default: launch_q<NX_CU_Q6_K>(g, total_rows, st); break;
    }
    return launched();
}

/* ------------------------------------------------------------------------------------------
 * Dequantization to BF16 for the cuBLAS path
 */

/* One thread per unit of the rows [0, rows) at w: its RUNS runs of 8 BF16, each one 16-byte
 * store (out 16-byte aligned, every run at a multiple of 8 elements). Reads are the units'
 * 16-bit reads straight from global memory: the kernel writes 2 bytes per weight and reads
 * at most 34/32, so the writes bound it. */
template <int DT>
__global__ void dequant_bf16_kernel(const uint8_t *w, uint32_t cols, uint32_t rows,
                                    __nv_bfloat16 *out)
{
    using Q = qblock<DT>;
    uint32_t units_per_row = cols / Q::QK * Q::UNITS;
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (uint64_t)rows * units_per_row)
        return;
    uint32_t r = (uint32_t)(i / units_per_row), u = (uint32_t)(i % units_per_row);
    uint32_t block = u / Q::UNITS;
    const uint8_t *b = w + ((uint64_t)r * (cols / Q::QK) + block) * Q::BYTES;
    float v[Q::RUNS][8];
    uint32_t k[Q::RUNS];
    Q::unit(b, u % Q::UNITS, v, k);
#pragma unroll
    for (int run = 0; run < Q::RUNS; run++) {
        uint32_t packed[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            __nv_bfloat16 lo = __float2bfloat16_rn(v[run][2 * e]);
            __nv_bfloat16 hi = __float2bfloat16_rn(v[run][2 * e + 1]);
            uint16_t lo_bits, hi_bits;
            memcpy(&lo_bits, &lo, sizeof lo_bits);
            memcpy(&hi_bits, &hi, sizeof hi_bits);
            packed[e] = lo_bits | (uint32_t)hi_bits << 16; /* the lower address first */
        }
        uint64_t at = (uint64_t)r * cols + (uint64_t)block * Q::QK + k[run];
        *(uint4 *)(out + at) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
}

template <int DT>
static void launch_dequant(const uint8_t *w, uint32_t cols, uint32_t rows, void *out,
                           cudaStream_t stream)
{
    using Q = qblock<DT>;
    uint64_t units = (uint64_t)rows * (cols / Q::QK) * Q::UNITS;
    uint64_t blocks = (units + 255) / 256;
    NX_LAUNCH((unsigned)(blocks > 0x7fffffffu ? 0x7fffffffu : blocks), 256, 0, stream,
              dequant_bf16_kernel<DT>)(w, cols, rows, (__nv_bfloat16 *)out);
}

extern "C" int nx__cu_dequant_bf16(void *stream, nx__cu_w_t w, uint32_t cols,
                                   uint32_t row_first, uint32_t rows, void *out)
{
    if (!nx__cu_is_block(w.dtype) || cols % nx__cu_block_elems(w.dtype) != 0 ||
        ((uintptr_t)out & 15) || ((uintptr_t)w.ptr & 1))
        return (int)cudaErrorInvalidValue;
    if (rows == 0 || cols == 0)
        return 0;
    uint64_t row_bytes = (uint64_t)cols / nx__cu_block_elems(w.dtype) *
                         nx__cu_block_bytes(w.dtype);
    const uint8_t *first = (const uint8_t *)w.ptr + row_first * row_bytes;
    cudaStream_t st = (cudaStream_t)stream;
    switch (w.dtype) {
    case NX_CU_Q8_0: launch_dequant<NX_CU_Q8_0>(first, cols, rows, out, st); break;
    case NX_CU_Q4_0: launch_dequant<NX_CU_Q4_0>(first, cols, rows, out, st); break;
    case NX_CU_Q5_0: launch_dequant<NX_CU_Q5_0>(first, cols, rows, out, st); break;
    case NX_CU_Q4_K: launch_dequant<NX_CU_Q4_K>(first, cols, rows, out, st); break;
    default: launch_dequant<NX_CU_Q6_K>(first, cols, rows, out, st); break;
    }
    return launched();
}
