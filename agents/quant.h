/* quant.h — internal: ggml's quantized block layouts that the engine computes with, bit for bit
 * (so the same GGUF file runs here and in llama.cpp), and the per-type table the backends use.
 *
 * A quantized weight [rows][cols] is rows x (cols / block elems) blocks, row after row, each
 * row's blocks in column order; cols is a multiple of the block's elements. Scales are IEEE
 * fp16 (nx_half_t bits) except where noted. The value of element j of a block:
 *   Q8_0: d * qs[j]
 *   Q4_0: d * ((j < 16 ? qs[j] & 15 : qs[j - 16] >> 4) - 8)
 *   Q5_0: d * ((low nibble as Q4_0 | bit j of qh (little-endian u32) << 4) - 16)
 *   Q4_K: 8 sub-blocks of 32; sub-block s has a 6-bit scale sc[s] and min m[s] packed in
 *         scales[12]; value = d * sc[s] * q - dmin * m[s], q the 4-bit quant: element j of
 *         the pair of sub-blocks (2p, 2p+1) lives in qs[32p + (j % 32)], low nibble for 2p,
 *         high for 2p+1
 *   Q6_K: 16 sub-blocks of 16, an int8 scale each; value = d * scales[s] * (q - 32), q 6 bits:
 *         low 4 in ql, high 2 in qh (ggml's interleaving, see quant.c)
 *   Q8_K: (activations only) float d, 256 int8 quants, bsums[16] = sums of each 16 quants
 */
#ifndef NX_QUANT_H
#define NX_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_loader.h"

typedef uint16_t nx_half_t; /* IEEE binary16 bits */

#define NX_QK8_0 32
#define NX_QK4_0 32
#define NX_QK5_0 32
#define NX_QK_K 256

typedef struct nx_bq8_0 {
    nx_half_t d;
    int8_t qs[NX_QK8_0];
} nx_bq8_0_t;

typedef struct nx_bq4_0 {
    nx_half_t d;
    uint8_t qs[NX_QK4_0 / 2];
} nx_bq4_0_t;

typedef struct nx_bq5_0 {
    nx_half_t d;
    uint8_t qh[4];
    uint8_t qs[NX_QK5_0 / 2];
} nx_bq5_0_t;

typedef struct nx_bq4_k {
    nx_half_t d;    /* super-block scale for the sub-block scales */
    nx_half_t dmin; /* super-block scale for the sub-block mins */
    uint8_t scales[12];
    uint8_t qs[NX_QK_K / 2];
} nx_bq4_k_t;

typedef struct nx_bq6_k {
    uint8_t ql[NX_QK_K / 2];
    uint8_t qh[NX_QK_K / 4];
    int8_t scales[NX_QK_K / 16];
    nx_half_t d;
} nx_bq6_k_t;

typedef struct nx_bq8_k {
    float d;
    int8_t qs[NX_QK_K];
    int16_t bsums[NX_QK_K / 16];
} nx_bq8_k_t;

_Static_assert(sizeof(nx_bq8_0_t) == 34, "Q8_0 block");
_Static_assert(sizeof(nx_bq4_0_t) == 18, "Q4_0 block");
_Static_assert(sizeof(nx_bq5_0_t) == 22, "Q5_0 block");
_Static_assert(sizeof(nx_bq4_k_t) == 144, "Q4_K block");
_Static_assert(sizeof(nx_bq6_k_t) == 210, "Q6_K block");
_Static_assert(sizeof(nx_bq8_k_t) == 292, "Q8_K block");

/* Q4_K sub-block s's (0..7) 6-bit scale and min from a block's 12 scale bytes. */
void nx__q4k_scale_min(const uint8_t *scales, int s, uint8_t *sc, uint8_t *mn);

float nx__half_to_f32(nx_half_t h);
nx_half_t nx__f32_to_half(float f); /* round to nearest even, as ggml's conversion */

/* Whether the engine computes with weights of this dtype (matrices; vectors such as norms and
 * biases must be F32, F16 or BF16): F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K. */
bool nx__quant_weight_ok(nx_dtype_t dtype);

/* Quantize n floats (a multiple of the block's elements) into blocks of dtype (Q8_0, Q4_0,
 * Q5_0, Q4_K, Q6_K, Q8_K; also F32, F16, BF16 as plain conversions), choosing scales the way
 * ggml's reference quantizers do, so that a file we write holds what llama.cpp would have
 * written for those floats (up to the K-quants' scale search). NX_ENOTSUP for other dtypes,
 * NX_EINVAL when n is not a whole number of blocks. */
int nx__quantize_row(nx_dtype_t dtype, const float *src, void *dst, uint64_t n);
/* The inverse: n values of a row stored as dtype (any dtype nx__quant_weight_ok accepts). */
void nx__dequantize_row(nx_dtype_t dtype, const void *src, float *dst, uint64_t n);
/* Bytes of a row of n elements of dtype (n a multiple of the block's elements). */
uint64_t nx__quant_row_bytes(nx_dtype_t dtype, uint64_t n);

#endif
