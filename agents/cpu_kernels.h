/* cpu_kernels.h — internal: the CPU backend's arithmetic. Everything is fp32 in and out;
 * weights are read as stored (BF16, F16, F32) and converted on the fly, a tile at a time into
 * the caller's scratch, or in registers as they stream (BF16, small batches): never a second
 * copy of a whole weight. */
#ifndef NX_CPU_KERNELS_H
#define NX_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

#define NX_K_TILE_COLS 16 /* output columns (weight rows) per matmul task */

/* One weight element / row as fp32 (a row of a block dtype is dequantized: the embedding). */
float nx__k_weight_at(const nx__wref_t *w, uint64_t index);
void nx__k_weight_row(const nx__wref_t *w, uint32_t row, float *out);

/* y[i][c] (=|+=) sum_k x[i][k] * W[c][k] (+ bias[c]) for rows i < n and columns
 * c in [col_first, col_first + col_count), col_count <= NX_K_TILE_COLS. x is [n][w->cols],
 * y is [n][w->rows]. scratch holds NX_K_TILE_COLS * w->cols floats. Each output element's
 * arithmetic depends only on (x row, c), never on n or the tile: batching never changes a
 * result. Hot path. */
void nx__k_matmul_tile(const float *x, uint32_t n, const nx__wref_t *w, const nx__wref_t *bias,
                       uint32_t col_first, uint32_t col_count, float *y, bool accumulate,
                       float *scratch);

/* out = x * rsqrt(mean(x^2) + eps) * weight, as Hugging Face's RMSNorm in fp32. out may be x. */
void nx__k_rmsnorm(const float *x, uint32_t dim, const nx__wref_t *weight, float eps,
                   float *out);

/* RoPE on one head vector: pair i is (v[i], v[i + dim/2]) (Hugging Face's rotate-half) or,
 * with adjacent, (v[2i], v[2i+1]) (llama GGUF files: see nx_model_config_t.rope_adjacent);
 * (x1, x2) = (x1*cos - x2*sin, x2*cos + x1*sin); cos/sin have dim/2 entries. */
void nx__k_rope(float *v, uint32_t dim, const float *cos_t, const float *sin_t, bool adjacent);

/* g[i] = silu(g[i]) * u[i] */
void nx__k_silu_mul(float *g, const float *u, uint32_t n);

/* One query row's attention over one head's cache: out[0..head_dim) = sum_t p_t * values[t]
 * with p = softmax(scale * q . keys[t]) over t < len; keys and values are [len][head_dim],
 * scores holds len floats of scratch. Each score depends only on q and its key, each output
 * element sums over t in order: the result does not depend on what else is in the batch.
 * Hot path (prefill). */
void nx__k_attend(const float *q, const float *keys, const float *values, uint32_t len,
                  uint32_t head_dim, float scale, float *scores, float *out);

/* Dot product of two fp32 vectors. */
float nx__k_dot(const float *a, const float *b, uint32_t n);
/* y += a * x */
void nx__k_axpy(float *y, float a, const float *x, uint32_t n);

/* inv_freq[i] for i < head_dim/2: theta^(-2i/head_dim), then Llama 3 scaling when the config
 * asks (Hugging Face's _compute_llama3_parameters). */
void nx__k_rope_inv_freq(const nx_model_config_t *c, double *inv_freq);

#endif
