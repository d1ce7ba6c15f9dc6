/* cuda_blocks.cuh — ggml's block types (agents/quant.h, bit for bit) on the device: one row
 * per type in a table of template specializations, qblock<NX_CU_...>, which every kernel that
 * reads quantized weights goes through (cuda_kernels.cu's simple GEMV and embedding,
 * cuda_quant.cu's GEMV and dequantization). A new block type is a new row here, not a branch
 * in each kernel.
 *
 * A row gives:
 *   QK, BYTES    elements and bytes per block;
 *   elem(b, j)   element j of the block at b, byte by byte, straight from quant.h's formulas:
 *                the obviously-correct reference (NEXUS_CUDA_KERNELS=simple) and the
 *                embedding lookup;
 *   UNITS, RUNS  how the fast kernels split a block: UNITS units, unit u being RUNS runs of 8
 *                consecutive elements;
 *   unit(b, u, w, k)  unit u decoded: w[r][0..8) the fp32 weights of run r (scales applied,
 *                as quant.c's nx__dequantize_row computes them) and k[r] where the run starts
 *                in the block (a multiple of 8);
 *   TILE         blocks per tile of the quantized GEMV (TILE * UNITS a multiple of 32, so a
 *                full tile gives every lane of a warp the same number of units).
 *
 * Alignment: every block size is even and GGUF tensors start 32-byte aligned, so a block is
 * 2-byte aligned and no more in general (34, 18, 22, 210 bytes; Q4_K's 144 keeps 16). elem
 * and unit therefore read single bytes and 16-bit halves only, which are aligned at any even
 * address, in global or shared memory alike; the wide 16-byte loads are the GEMV's staging
 * (cuda_quant.cu), which reads whole aligned vectors around a run of blocks.
 */
#ifndef NX_CUDA_BLOCKS_CUH
#define NX_CUDA_BLOCKS_CUH

#include "cuda_kernels.h"

#include "cuda_launch.h"
#include <stdint.h>

/* 16 bits at p (even), little-endian as every GPU and x86 host is. */
static __device__ __forceinline__ uint32_t qb_u16(const uint8_t *p)
{
    return *(const uint16_t *)p;
}

/* 32 bits at p (even) from two halves (p may be only 2-byte aligned). */
static __device__ __forceinline__ uint32_t qb_u32(const uint8_t *p)
{
    return qb_u16(p) | qb_u16(p + 2) << 16;
}

/* The IEEE half at p (even) as fp32. */
static __device__ __forceinline__ float qb_half(const uint8_t *p)
{
    __half_raw raw;
    raw.x = (unsigned short)qb_u16(p);
    return __half2float(__half(raw));
}

/* Q4_K's 6-bit scale and min of sub-block s (0..7) from its 12 scale bytes (quant.c's
 * nx__q4k_scale_min, ggml's get_scale_min_k4). */
static __device__ __forceinline__ void qb_q4k_scale_min(const uint8_t *scales, uint32_t s,
                                                        uint32_t *sc, uint32_t *mn)
{
    if (s < 4) {
        *sc = scales[s] & 63;
        *mn = scales[s + 4] & 63;
    } else {
        *sc = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4;
        *mn = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4;
    }
}

template <int DT> struct qblock;

/* Q8_0: half d, int8 qs[32]; value j = d * qs[j]. Unit u: elements [16u, 16u + 16). */
template <> struct qblock<NX_CU_Q8_0> {
    static constexpr int QK = 32, BYTES = 34, UNITS = 2, RUNS = 2, TILE = 32;
    static __device__ __forceinline__ float elem(const uint8_t *b, uint32_t j)
    {
        return qb_half(b) * (float)(int8_t)b[2 + j];
    }
    static __device__ __forceinline__ void unit(const uint8_t *b, uint32_t u,
                                                float (&w)[RUNS][8], uint32_t (&k)[RUNS])
    {
        float d = qb_half(b);
#pragma unroll
        for (int r = 0; r < RUNS; r++) {
            k[r] = 16 * u + 8 * r;
#pragma unroll
            for (int i = 0; i < 8; i += 2) {
                uint32_t h = qb_u16(b + 2 + k[r] + i);
                w[r][i] = d * (float)(int8_t)(h & 255);
                w[r][i + 1] = d * (float)(int8_t)(h >> 8);
            }
        }
    }
};

/* Q4_0: half d, qs[16]; value j = d * ((j < 16 ? qs[j] & 15 : qs[j - 16] >> 4) - 8).
 * Unit u: qs[8u, 8u + 8), whose low nibbles are elements 8u.. and high ones 16 + 8u.. */
template <> struct qblock<NX_CU_Q4_0> {
    static constexpr int QK = 32, BYTES = 18, UNITS = 2, RUNS = 2, TILE = 64;
    static __device__ __forceinline__ float elem(const uint8_t *b, uint32_t j)
    {
        uint32_t q = j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4;
        return qb_half(b) * (float)((int)q - 8);
    }
    static __device__ __forceinline__ void unit(const uint8_t *b, uint32_t u,
                                                float (&w)[RUNS][8], uint32_t (&k)[RUNS])
    {
        float d = qb_half(b);
        k[0] = 8 * u;
        k[1] = 16 + 8 * u;
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            uint32_t h = qb_u16(b + 2 + 8 * u + i);
            w[0][i] = d * (float)((int)(h & 15) - 8);
            w[1][i] = d * (float)((int)(h >> 4 & 15) - 8);
            w[0][i + 1] = d * (float)((int)(h >> 8 & 15) - 8);
            w[1][i + 1] = d * (float)((int)(h >> 12) - 8);
        }
    }
};

/* Q5_0: half d, qh[4] (bit j: the 5th bit of element j), qs[16] as Q4_0; value j =
 * d * ((nibble | bit j << 4) - 16). Units as Q4_0's. */
template <> struct qblock<NX_CU_Q5_0> {
    static constexpr int QK = 32, BYTES = 22, UNITS = 2, RUNS = 2, TILE = 64;
    static __device__ __forceinline__ float elem(const uint8_t *b, uint32_t j)
    {
        uint32_t q = j < 16 ? b[6 + j] & 15 : b[6 + j - 16] >> 4;
        q |= (qb_u32(b + 2) >> j & 1) << 4;
        return qb_half(b) * (float)((int)q - 16);
    }
    static __device__ __forceinline__ void unit(const uint8_t *b, uint32_t u,
                                                float (&w)[RUNS][8], uint32_t (&k)[RUNS])
    {
        float d = qb_half(b);
        uint32_t qh = qb_u32(b + 2);
        uint32_t lo_bits = qh >> 8 * u, hi_bits = qh >> (16 + 8 * u); /* bit i: element i */
        k[0] = 8 * u;
        k[1] = 16 + 8 * u;
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            uint32_t h = qb_u16(b + 6 + 8 * u + i);
            w[0][i] = d * (float)((int)((h & 15) | (lo_bits >> i & 1) << 4) - 16);
            w[1][i] = d * (float)((int)((h >> 4 & 15) | (hi_bits >> i & 1) << 4) - 16);
            w[0][i + 1] =
                d * (float)((int)((h >> 8 & 15) | (lo_bits >> (i + 1) & 1) << 4) - 16);
            w[1][i + 1] = d * (float)((int)((h >> 12) | (hi_bits >> (i + 1) & 1) << 4) - 16);
        }
    }
};

/* Q4_K: half d, half dmin, scales[12], qs[128]; sub-block s (32 elements) has 6-bit scale sc
 * and min m; value = d * sc * q - dmin * m, q the nibble of qs[32 (s / 2) + j % 32], low for
 * even s. Unit u = 4p + v: qs[32p + 8v, +8), low nibbles elements 64p + 8v.. (sub-block 2p),
 * high ones 64p + 32 + 8v.. (sub-block 2p + 1). */
template <> struct qblock<NX_CU_Q4_K> {
    static constexpr int QK = 256, BYTES = 144, UNITS = 16, RUNS = 2, TILE = 8;
    static __device__ __forceinline__ float elem(const uint8_t *b, uint32_t j)
    {
        uint32_t s = j / 32, sc, mn;
        qb_q4k_scale_min(b + 4, s, &sc, &mn);
        uint32_t byte = b[16 + 32 * (s / 2) + j % 32];
        uint32_t q = s & 1 ? byte >> 4 : byte & 15;
        return qb_half(b) * (float)sc * (float)q - qb_half(b + 2) * (float)mn;
    }
    static __device__ __forceinline__ void unit(const uint8_t *b, uint32_t u,
                                                float (&w)[RUNS][8], uint32_t (&k)[RUNS])
    {
        uint32_t p = u / 4, v = u % 4, sc0, mn0, sc1, mn1;
        float d = qb_half(b), dmin = qb_half(b + 2);
        qb_q4k_scale_min(b + 4, 2 * p, &sc0, &mn0);
        qb_q4k_scale_min(b + 4, 2 * p + 1, &sc1, &mn1);
        float ds0 = d * (float)sc0, ms0 = dmin * (float)mn0;
        float ds1 = d * (float)sc1, ms1 = dmin * (float)mn1;
        k[0] = 64 * p + 8 * v;
        k[1] = k[0] + 32;
        const uint8_t *q = b + 16 + 32 * p + 8 * v;
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            uint32_t h = qb_u16(q + i);
            w[0][i] = ds0 * (float)(h & 15) - ms0;
            w[1][i] = ds1 * (float)(h >> 4 & 15) - ms1;
            w[0][i + 1] = ds0 * (float)(h >> 8 & 15) - ms0;
            w[1][i + 1] = ds1 * (float)(h >> 12) - ms1;
        }
    }
};

/* Q6_K: ql[128], qh[64], int8 scales[16], half d; value j = d * scales[j / 16] * (q - 32), q
 * 6 bits: in half h = j / 128, with l = j % 32 and quarter r = (j % 128) / 32, the low 4 bits
 * are ql[64h + l + 32 (r & 1)] (low nibble for r < 2, high for r >= 2) and the top 2 are bits
 * 2r, 2r + 1 of qh[32h + l]. Unit u = 4h + v: l in [8v, 8v + 8) of half h, all four quarters
 * (runs at 128h + 32r + 8v). */
template <> struct qblock<NX_CU_Q6_K> {
    static constexpr int QK = 256, BYTES = 210, UNITS = 8, RUNS = 4, TILE = 8;
    static __device__ __forceinline__ float elem(const uint8_t *b, uint32_t j)
    {
        uint32_t h = j / 128, l = j % 32, r = j % 128 / 32;
        uint32_t low = b[64 * h + l + 32 * (r & 1)];
        low = r >= 2 ? low >> 4 : low & 15;
        uint32_t q = low | (b[128 + 32 * h + l] >> 2 * r & 3) << 4;
        return qb_half(b + 208) * (float)(int8_t)b[192 + j / 16] * (float)((int)q - 32);
    }
    static __device__ __forceinline__ void unit(const uint8_t *b, uint32_t u,
                                                float (&w)[RUNS][8], uint32_t (&k)[RUNS])
    {
        uint32_t h = u / 4, v = u % 4;
        float d = qb_half(b + 208), ds[RUNS];
#pragma unroll
        for (int r = 0; r < RUNS; r++) {
            k[r] = 128 * h + 32 * r + 8 * v;
            ds[r] = d * (float)(int8_t)b[192 + k[r] / 16];
        }
        const uint8_t *ql = b + 64 * h + 8 * v, *qh = b + 128 + 32 * h + 8 * v;
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            uint32_t a = qb_u16(ql + i), c = qb_u16(ql + 32 + i), hi = qb_u16(qh + i);
#pragma unroll
            for (int e = 0; e < 2; e++) { /* byte e of each half: element i + e */
                uint32_t la = a >> 8 * e & 255, lc = c >> 8 * e & 255, he = hi >> 8 * e & 255;
                w[0][i + e] = ds[0] * (float)((int)((la & 15) | (he & 3) << 4) - 32);
                w[1][i + e] = ds[1] * (float)((int)((lc & 15) | (he >> 2 & 3) << 4) - 32);
                w[2][i + e] = ds[2] * (float)((int)((la >> 4) | (he >> 4 & 3) << 4) - 32);
                w[3][i + e] = ds[3] * (float)((int)((lc >> 4) | (he >> 6) << 4) - 32);
            }
        }
    }
};

/* Element i of a row-major block-type matrix at w (flat index; rows hold whole blocks). */
template <int DT>
static __device__ __forceinline__ float qblock_elem_at(const void *w, uint64_t i)
{
    using Q = qblock<DT>;
    return Q::elem((const uint8_t *)w + i / Q::QK * Q::BYTES, (uint32_t)(i % Q::QK));
}

#endif
