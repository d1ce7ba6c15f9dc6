/* cpu_quant.h — internal: the CPU backend's matmul over ggml's block weights (quant.h).
 *
 * A matmul with a quantized weight first quantizes its activation rows, once per input (q, k
 * and v share theirs), into an nx__qact_t: int8 values with a float scale per block and the
 * block sums the integer dot products need. Two activation formats, one per weight family:
 *   NX__QF_32  (Q8_0, Q4_0, Q5_0 weights): a scale per 32 values, d = amax / 127 in fp16
 *                                          (ggml's Q8_0 activation blocks)
 *   NX__QF_256 (Q4_K, Q6_K weights):       a scale per 256 values, d = max / -127 (ggml's
 *                                          Q8_K), with the sums of every 16 and every 32 values
 * The int8 values and scales are ggml's, so the integer sums are llama.cpp's too.
 * Then every output element is, whatever the path, tile or batch size:
 *   acc = 0; for each weight block in order: acc = fma(float(isum), d_w * d_x, acc)
 * where isum is the block's exact integer dot product (for Q4_K and Q6_K, the super-block's
 * sub-block products times their integer scales, summed exactly; Q4_K then subtracts its mins
 * term with a second fma). Integer sums are exact in any order, so the plain, AVX2 and AVX-512
 * paths give the same bits, and a row's result never depends on the other rows of its batch.
 */
#ifndef NX_CPU_QUANT_H
#define NX_CPU_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define NX_Q_TILE_COLS 16 /* output columns (weight rows) per tile: one AVX-512 register */

typedef enum nx__qfamily {
    NX__QF_NONE, /* not a block dtype: the fp32 kernels (cpu_kernels.h) */
    NX__QF_32,
    NX__QF_256,
} nx__qfamily_t;

/* Activation rows quantized for one family; the buffers are the caller's (nx__qact_bind). */
typedef struct nx__qact {
    nx__qfamily_t family;
    uint32_t cols;    /* values per row: a multiple of 32 (NX__QF_32) or 256 (NX__QF_256) */
    uint32_t rows;    /* rows the buffers hold */
    int8_t *qs;       /* [rows][cols] */
    float *d;         /* [rows][cols / 32 or cols / 256] the scales */
    int32_t *offset;  /* NX__QF_32: [rows][cols / 32] -(sum of the block's values);
                       * NX__QF_256: [rows][cols / 16] -32 * (sum of each 16 values) */
    int16_t *sum32;   /* NX__QF_256: [rows][cols / 32] sum of each 32 values; else NULL */
} nx__qact_t;

/* The family a weight dtype computes in (NX__QF_NONE for F32, F16, BF16 and the rest). */
nx__qfamily_t nx__q_family(nx_dtype_t dtype);

/* Bytes of the buffers for rows x cols activations of a family (64-byte aligned pieces). */
size_t nx__qact_bytes(nx__qfamily_t family, uint32_t rows, uint32_t cols);
/* Point a at mem (nx__qact_bytes of it, 64-byte aligned; the caller owns it). */
void nx__qact_bind(nx__qact_t *a, nx__qfamily_t family, uint32_t rows, uint32_t cols, void *mem);
/* Quantize one row of a->cols floats into row `row` of a. Rows are independent (run them
 * on any threads). */
void nx__qact_quantize(nx__qact_t *a, uint32_t row, const float *x);
/* The values row `row` of a stands for (scale times int8), for tests. */
void nx__qact_dequantize(const nx__qact_t *a, uint32_t row, float *out);

/* Bytes of scratch nx__q_matmul needs for a weight with cols columns (per worker). */
size_t nx__q_scratch_bytes(uint32_t cols);

/* y[i][c] (=|+=) sum_k x[i][k] * W[c][k] (+ bias[c]) for rows i < n and columns
 * c in [col_first, col_first + col_count), where x is the rows of a (quantized for w's
 * family, a->cols == w->cols) and W the block weight w. y is [n][w->rows]; scratch holds
 * nx__q_scratch_bytes(w->cols) bytes, 64-byte aligned. Works through the columns a tile of
 * NX_Q_TILE_COLS weight rows at a time, prefetching each next tile of the range while it
 * works on one: a longer range streams memory better (a thread's share of a decode step).
 * Each output element depends only on (its x row, c): batching never changes a result, nor
 * does how the columns are split between calls. cold: the range's first tile is asked for
 * whole before it starts; false when the caller's previous call ended on the tile just
 * before col_first, which prefetched it. Hot path. */
void nx__q_matmul(const nx__qact_t *a, uint32_t n, const nx__wref_t *w, const nx__wref_t *bias,
                  uint32_t col_first, uint32_t col_count, float *y, bool accumulate,
                  void *scratch, bool cold);

/* The kernel paths. The first use picks the widest the CPU has (NEXUS_CPU_KERNELS=plain or
 * =avx2 forces a narrower one, as for the fp32 kernels); all give the same bits. */
typedef enum nx__q_path {
    NX__Q_PLAIN,
    NX__Q_AVX2,   /* AVX2 + FMA + F16C (vpmaddubsw) */
    NX__Q_AVX512, /* AVX-512 F/BW/VL + VNNI (vpdpbusd) */
} nx__q_path_t;

nx__q_path_t nx__q_path(void);
/* Tests and benchmarks: use `path` from now on; false (nothing changed) when the CPU lacks
 * it. Not thread-safe against running matmuls. */
bool nx__q_set_path(nx__q_path_t path);

#endif
