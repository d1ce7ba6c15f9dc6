/* cpu_kernels.c — the CPU backend's arithmetic (see cpu_kernels.h).
 *
 * The matmul is the hot spot. A task owns up to NX_K_TILE_COLS weight rows and runs every
 * batch row against them, so each weight row is read from memory once per step whatever the
 * batch size (decode is memory bound). The work is register-blocked: up to ROWS_MAX batch rows
 * x COLS weight rows per pass over K, one accumulator vector of LANES floats per (row, column),
 * so each load feeds several FMAs instead of one.
 *
 * Results never depend on the batch: every output element is accumulated lane-wise over K in
 * the same order (lane l sums k = l, l + LANES, ... in sequence), reduced by the same fixed
 * tree (hsum16), then the K % LANES tail in sequence, whichever block shape, tile or batch
 * size computed it. Only the path (below) changes the rounding, and it is chosen once per
 * process.
 *
 * Weights: with few batch rows (decode), BF16 and F16 weights are widened in registers as
 * they are streamed (no conversion buffer), and the next tile is prefetched meanwhile; with
 * more, a tile is converted once into the caller's scratch and reused by every row; F32 is
 * read in place. BF16 widens by a 16-bit shift, F16 by integer moves and one exact multiply
 * (below); both ways give the same floats.
 *
 * The same bodies are compiled three times, plain, AVX2+FMA and AVX-512F, chosen once at run
 * time (NEXUS_CPU_KERNELS=plain or =avx2 forces a narrower one, so tests cover them). AVX2
 * has kernels of its own (body_avx2), the same arithmetic in ymm registers.
 */
#include "cpu_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
typedef float v4f __attribute__((vector_size(16)));
typedef uint16_t v16h_u __attribute__((vector_size(32), aligned(2)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

/* 64-byte vectors pass through static always-inline helpers only, never across a call, so
 * the ABI note GCC gives for them on the non-AVX-512 paths does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

#define AI inline __attribute__((always_inline))
#define LANES 16      /* k elements per accumulator vector, the same on every path */
#define COLS 4        /* weight rows per register block (hsum16_x4 reduces four) */
#define ROW_BLOCK 32  /* batch rows per pass over a tile (keeps x rows in L2) */
#define FUSED_ROWS 16 /* batches of fewer rows read BF16/F16 weights straight from the pool */

static inline float bf16_to_f32(uint16_t bits)
{
    uint32_t wide = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &wide, sizeof f);
    return f;
}

/* IEEE half to float, exactly, with integer moves and one multiply (no F16C needed, so every
 * path has it): the exponent and mantissa bits shifted into a float's place read as the value
 * times 2^-112 (subnormal halves included), and 2^112 puts it right. Exponent 31 (infinity,
 * NaN) would land on 2^16: its float exponent is set to all ones instead. */
static AI float f16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)(h & 0x7fff) << 13;
    float mag;
    memcpy(&mag, &bits, sizeof mag);
    mag *= 0x1p112f;
    memcpy(&bits, &mag, sizeof bits);
    bits |= (uint32_t)(h & 0x8000) << 16 | ((h & 0x7c00) == 0x7c00 ? 0x7f800000u : 0);
    memcpy(&mag, &bits, sizeof mag);
    return mag;
}

float nx__k_weight_at(const nx__wref_t *w, uint64_t index)
{
    switch (w->dtype) {
    case NX_DT_BF16: return bf16_to_f32(((const uint16_t *)w->ptr)[index]);
    case NX_DT_F16: return f16_to_f32(((const uint16_t *)w->ptr)[index]);
    default: return ((const float *)w->ptr)[index];
    }
}

static void convert_span(const nx__wref_t *w, uint64_t first, uint32_t count, float *out)
{
    if (w->dtype == NX_DT_BF16) {
        const uint16_t *src = (const uint16_t *)w->ptr + first;
        for (uint32_t i = 0; i < count; i++)
            out[i] = bf16_to_f32(src[i]);
    } else if (w->dtype == NX_DT_F16) {
        const uint16_t *src = (const uint16_t *)w->ptr + first;
        for (uint32_t i = 0; i < count; i++)
            out[i] = f16_to_f32(src[i]);
    } else {
        memcpy(out, (const float *)w->ptr + first, count * sizeof *out);
    }
}

void nx__k_weight_row(const nx__wref_t *w, uint32_t row, float *out)
{
    if (nx_dtype_is_block(w->dtype)) { /* a quantized token_embd: one row's blocks */
        uint64_t row_bytes = nx__quant_row_bytes(w->dtype, w->cols);
        nx__dequantize_row(w->dtype, (const uint8_t *)w->ptr + row * row_bytes, out, w->cols);
        return;
    }
    convert_span(w, (uint64_t)row * w->cols, w->cols, out);
}

static AI v16f load_f32(const float *p)
{
    return *(const v16f_u *)p;
}

static AI v16f load_bf16(const uint16_t *p)
{
    v16u wide = __builtin_convertvector(*(const v16h_u *)p, v16u) << 16;
    return (v16f)wide;
}

static AI v16f load_f16(const uint16_t *p)
{
    v16u h = __builtin_convertvector(*(const v16h_u *)p, v16u);
    v16f mag = (v16f)((h & 0x7fff) << 13) * 0x1p112f;
    v16u special = (v16u)((h & 0x7c00) == 0x7c00) & 0x7f800000; /* lanes of all ones */
    return (v16f)((v16u)mag | (h & 0x8000) << 16 | special);
}

/* F16C's vcvtph2ps does the same in one instruction, on the paths that have it. Each tile
 * instantiation gets its loader as a constant function pointer (DEFINE_TILE), so no
 * instantiation names another's instructions. */
typedef v16f (*f16_loader_t)(const uint16_t *);

static AI __attribute__((target("avx512f"))) v16f load_f16_avx512(const uint16_t *p)
{
    return (v16f)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static AI __attribute__((target("avx2,f16c"))) v16f load_f16_f16c(const uint16_t *p)
{
    v8f lo = (v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    v8f hi = (v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* How weight rows are read by the kernels: fp32 (F32 in place, or a converted tile in
 * scratch), or BF16 / F16 widened as they are loaded (F16 by `f16`). A constant after
 * inlining. */
enum { W_F32, W_BF16, W_F16 };

static AI v16f load_w(int kind, f16_loader_t f16, const void *p, uint32_t i)
{
    return kind == W_BF16  ? load_bf16((const uint16_t *)p + i)
           : kind == W_F16 ? f16((const uint16_t *)p + i)
                           : load_f32((const float *)p + i);
}

static AI float weight_elem(int kind, const void *p, uint32_t i)
{
    return kind == W_BF16  ? bf16_to_f32(((const uint16_t *)p)[i])
           : kind == W_F16 ? f16_to_f32(((const uint16_t *)p)[i])
                           : ((const float *)p)[i];
}

/* The fixed reduction order every output element goes through. */
static AI float hsum16(v16f v)
{
    v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* hsum16 of four vectors at once, pairing the same elements in the same order (so each
 * result is bit-identical to hsum16's), in a quarter of the shuffles. */
static AI v4f hsum16_x4(v16f v0, v16f v1, v16f v2, v16f v3)
{
    v16f a01 = __builtin_shufflevector(v0, v1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                       22, 23) +
               __builtin_shufflevector(v0, v1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                       29, 30, 31);
    v16f a23 = __builtin_shufflevector(v2, v3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                       22, 23) +
               __builtin_shufflevector(v2, v3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                       29, 30, 31);
    v16f b = __builtin_shufflevector(a01, a23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24,
                                     25, 26, 27) +
             __builtin_shufflevector(a01, a23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28,
                                     29, 30, 31);
    v8f t = __builtin_shufflevector(b, b, 0, 1, 4, 5, 8, 9, 12, 13) +
            __builtin_shufflevector(b, b, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(t, t, 0, 2, 4, 6) + __builtin_shufflevector(t, t, 1, 3, 5, 7);
}

/* The next tile's weights, asked for while a streaming tile is worked on: `step` bytes per
 * LANES values of k (what that step reads of this tile), from *at up to end. */
typedef struct ahead {
    const char *at, *end;
    uint32_t step;
} ahead_t;

/* out[c] = x . w[c] for c < cols, from acc[c] (the lane sums of k < i): reduced in hsum16's
 * order, then k in [i, k) in sequence. */
static AI void finish_row(const v16f *acc, const float *x, const void *const *w, int cols,
                          int kind, uint32_t i, uint32_t k, float *out)
{
    float sums[COLS];
    if (cols == 4) {
        v4f s4 = hsum16_x4(acc[0], acc[1], acc[2], acc[3]);
        for (int c = 0; c < 4; c++)
            sums[c] = s4[c];
    } else {
        for (int c = 0; c < cols; c++)
            sums[c] = hsum16(acc[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < cols; c++) {
        float s = sums[c];
        for (uint32_t j = i; j < k; j++)
            s += x[j] * weight_elem(kind, w[c], j);
        out[c] = s;
    }
}

/* The next tile's prefetch share for one step of a streaming block (prefetcht2). */
static AI void prefetch_ahead(ahead_t *ahead)
{
    if (ahead->at < ahead->end) {
        for (uint32_t b = 0; b < ahead->step; b += 64)
            __builtin_prefetch(ahead->at + b, 0, 1);
        ahead->at += ahead->step;
    }
}

/* out[r * cols + c] = x[r] . w[c] over k elements, for r < rows, c < cols. rows and cols are
 * constants after inlining, so the accumulators live in registers. w rows are read as `kind`
 * says. Hot path. */
static AI void block_dot(const float *const *x, int rows, const void *const *w, int cols,
                         int kind, f16_loader_t f16, uint32_t k, float *out, ahead_t *ahead)
{
    v16f acc[4][COLS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int c = 0; c < cols; c++)
            acc[r][c] = (v16f){0};
    uint32_t i = 0;
    for (; i + LANES <= k; i += LANES) {
        prefetch_ahead(ahead);
        v16f wv[COLS];
#pragma GCC unroll 4
        for (int c = 0; c < cols; c++)
            wv[c] = load_w(kind, f16, w[c], i);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            v16f xv = load_f32(x[r] + i);
#pragma GCC unroll 4
            for (int c = 0; c < cols; c++)
                acc[r][c] += xv * wv[c];
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        finish_row(acc[r], x[r], w, cols, kind, i, k, out + r * cols);
}

typedef struct tile_args {
    const float *x;        /* [n][k] */
    uint32_t n, k;
    const void *wrows[NX_K_TILE_COLS]; /* weight rows of the tile, read as kind says */
    int kind;
    ahead_t ahead;         /* the next tile (streaming tiles only; else at == end) */
    uint32_t cols;
    const float *bias;     /* [cols] or NULL */
    float *y;              /* points at column col_first of row 0 */
    uint32_t y_stride;
    bool accumulate;
} tile_args_t;

static AI void store(const tile_args_t *a, uint32_t i, uint32_t c, float v)
{
    float *dst = a->y + (uint64_t)i * a->y_stride + c;
    if (a->bias)
        v += a->bias[c];
    *dst = a->accumulate ? *dst + v : v;
}

/* Rows [i, i + rows) against columns [c, c + cols): one register block. */
static AI void block(tile_args_t *a, uint32_t i, int rows, uint32_t c, int cols, int kind,
                     f16_loader_t f16)
{
    const float *xr[4];
    float out[4 * COLS];
    for (int r = 0; r < rows; r++)
        xr[r] = a->x + (uint64_t)(i + r) * a->k;
    block_dot(xr, rows, a->wrows + c, cols, kind, f16, a->k, out, &a->ahead);
    for (int r = 0; r < rows; r++)
        for (int cc = 0; cc < cols; cc++)
            store(a, i + r, c + cc, out[r * cols + cc]);
}

/* Rows [i, i + rows) against the whole tile, rows <= rows_max <= 4. */
static AI void row_group(tile_args_t *a, uint32_t i, int rows, int kind, f16_loader_t f16)
{
    uint32_t c = 0;
    for (; c + COLS <= a->cols; c += COLS)
        switch (rows) {
        case 4: block(a, i, 4, c, COLS, kind, f16); break;
        case 3: block(a, i, 3, c, COLS, kind, f16); break;
        case 2: block(a, i, 2, c, COLS, kind, f16); break;
        default: block(a, i, 1, c, COLS, kind, f16); break;
        }
    for (; c < a->cols; c++)
        for (int r = 0; r < rows; r++)
            block(a, i + r, 1, c, 1, kind, f16);
}

/* ---- AVX2 ---------------------------------------------------------------------------
 * GCC splits block_dot's 16-float vectors in two for AVX2 but does not keep them in
 * registers: the accumulators went to the stack and back through general registers at every
 * step (perf annotate of tile_avx2), so batch-1 BF16/F16 decode was compute bound at about
 * 13 GB/s on two Zen 3 cores, 40% of the memory's read rate, and larger batches at 15 GOP/s.
 * These kernels are the same arithmetic with each accumulator held as two ymm registers
 * (lanes 0-7 and 8-15): lane by lane one fma per k in k order, as block_dot's
 * acc += xv * wv contracts to, then block_dot's reduction and tail (finish_row), so the bits
 * are the same. Blocks: 1 batch row x 4 weight rows (decode: 8 accumulators, the widest
 * stretch of weights per pass), else up to 3 x 2 (12 accumulators, 2 weight vectors and an x
 * vector fill the 16 ymm registers). */
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ROWS_AVX2 3

static AI TARGET_AVX2 __m256 load8_w(int kind, const void *p, uint32_t i)
{
    if (kind == W_F32)
        return _mm256_loadu_ps((const float *)p + i);
    __m128i halves = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (kind == W_F16)
        return _mm256_cvtph_ps(halves);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

/* block_dot's contract for rows <= ROWS_AVX2, cols <= COLS, rows * cols <= 6 (constants after
 * inlining). Hot path. */
static AI TARGET_AVX2 void block_dot_avx2(const float *const *x, int rows, const void *const *w,
                                          int cols, int kind, uint32_t k, float *out,
                                          ahead_t *ahead)
{
    __m256 acc[ROWS_AVX2][COLS][2]; /* [row][column][lanes 0-7, 8-15] */
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int c = 0; c < cols; c++)
            acc[r][c][0] = acc[r][c][1] = _mm256_setzero_ps();
    uint32_t i = 0;
    for (; i + LANES <= k; i += LANES) {
        prefetch_ahead(ahead);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256 wv[COLS];
#pragma GCC unroll 4
            for (int c = 0; c < cols; c++)
                wv[c] = load8_w(kind, w[c], i + 8 * h);
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++) {
                __m256 xv = _mm256_loadu_ps(x[r] + i + 8 * h);
#pragma GCC unroll 4
                for (int c = 0; c < cols; c++)
                    acc[r][c][h] = _mm256_fmadd_ps(xv, wv[c], acc[r][c][h]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
        v16f sums[COLS];
#pragma GCC unroll 4
        for (int c = 0; c < cols; c++)
            sums[c] = __builtin_shufflevector((v8f)acc[r][c][0], (v8f)acc[r][c][1], 0, 1, 2, 3,
                                              4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        finish_row(sums, x[r], w, cols, kind, i, k, out + r * cols);
    }
}

/* Rows [i, i + rows) against the whole tile, cols_max weight rows a block. */
static AI TARGET_AVX2 void group_avx2(tile_args_t *a, uint32_t i, int rows, int cols_max,
                                      int kind)
{
    const float *xr[ROWS_AVX2];
    float out[ROWS_AVX2 * COLS];
    for (int r = 0; r < rows; r++)
        xr[r] = a->x + (uint64_t)(i + r) * a->k;
    for (uint32_t c = 0; c < a->cols;) {
        int cols = c + cols_max <= a->cols ? cols_max : 1;
        if (cols == cols_max)
            block_dot_avx2(xr, rows, a->wrows + c, cols_max, kind, a->k, out, &a->ahead);
        else
            block_dot_avx2(xr, rows, a->wrows + c, 1, kind, a->k, out, &a->ahead);
        for (int r = 0; r < rows; r++)
            for (int cc = 0; cc < cols; cc++)
                store(a, i + r, c + cc, out[r * cols + cc]);
        c += (uint32_t)cols;
    }
}

/* tile_body on AVX2: every batch row against the tile. Blocks of 2 weight rows read half of
 * what prepare sized the next tile's prefetch for (4 a step): it is done halfway through the
 * first pass, which is early enough. */
static AI TARGET_AVX2 void body_avx2(tile_args_t *a, int kind)
{
    if (a->n == 1) {
        group_avx2(a, 0, 1, COLS, kind);
        return;
    }
    for (uint32_t r0 = 0; r0 < a->n; r0 += ROW_BLOCK) {
        uint32_t r1 = r0 + ROW_BLOCK < a->n ? r0 + ROW_BLOCK : a->n, i = r0;
        for (; i + ROWS_AVX2 <= r1; i += ROWS_AVX2)
            group_avx2(a, i, ROWS_AVX2, 2, kind);
        if (r1 - i == 2)
            group_avx2(a, i, 2, 2, kind);
        else if (r1 - i == 1)
            group_avx2(a, i, 1, COLS, kind);
    }
}

/* Hot path: every batch row against the tile's weight rows, rows_max at a time. */
static AI void tile_body(tile_args_t *a, int rows_max, int kind, f16_loader_t f16)
{
    for (uint32_t r0 = 0; r0 < a->n; r0 += ROW_BLOCK) {
        uint32_t r1 = r0 + ROW_BLOCK < a->n ? r0 + ROW_BLOCK : a->n;
        uint32_t i = r0;
        for (; i + rows_max <= r1; i += rows_max)
            row_group(a, i, rows_max, kind, f16);
        if (i < r1)
            row_group(a, i, (int)(r1 - i), kind, f16);
    }
}

/* Weight rows [first, first + count) of w widened into out (fp32). */
static AI void convert_rows(const nx__wref_t *w, uint64_t first, uint32_t count, float *out,
                         f16_loader_t f16)
{
    uint64_t n = (uint64_t)count * w->cols, i = 0;
    int kind = w->dtype == NX_DT_BF16 ? W_BF16 : W_F16;
    const uint16_t *src = (const uint16_t *)w->ptr + first * w->cols;
    for (; i + LANES <= n; i += LANES)
        *(v16f_u *)(out + i) = kind == W_BF16 ? load_bf16(src + i) : f16(src + i);
    for (; i < n; i++)
        out[i] = weight_elem(kind, src, (uint32_t)i);
}

/* Points a->wrows at the tile's rows: in place (F32, or BF16/F16 for a small batch, with the
 * next tile prefetched as they stream), or converted into scratch. */
static AI void prepare(tile_args_t *a, const nx__wref_t *w, uint32_t col_first, float *scratch,
                       f16_loader_t f16)
{
    bool stream = w->dtype == NX_DT_F32 || a->n < FUSED_ROWS;
    a->kind = !stream || w->dtype == NX_DT_F32 ? W_F32 : w->dtype == NX_DT_BF16 ? W_BF16 : W_F16;
    if (!stream)
        convert_rows(w, col_first, a->cols, scratch, f16);
    size_t elem = w->dtype == NX_DT_F32 ? 4 : 2;
    for (uint32_t c = 0; c < a->cols; c++) {
        uint64_t row = (uint64_t)(col_first + c);
        a->wrows[c] = stream ? (const char *)w->ptr + row * w->cols * elem
                             : (const void *)(scratch + (uint64_t)c * w->cols);
    }
    uint64_t next = col_first + a->cols, rows = next < w->rows ? w->rows - next : 0;
    a->ahead.at = a->ahead.end = NULL;
    if (stream && rows) {
        a->ahead.at = (const char *)w->ptr + next * w->cols * elem;
        a->ahead.end = a->ahead.at + (rows < NX_K_TILE_COLS ? rows : NX_K_TILE_COLS) *
                                         w->cols * elem;
        a->ahead.step = (uint32_t)(COLS * LANES * elem); /* a block_dot step of 4 rows */
    }
}

#define DEFINE_TILE(name, attrs, rows_max, f16)                                                \
    attrs static void name(tile_args_t *a, const nx__wref_t *w, uint32_t col_first,            \
                           float *scratch)                                                     \
    {                                                                                          \
        prepare(a, w, col_first, scratch, f16);                                                \
        if (a->kind == W_BF16)                                                                 \
            tile_body(a, rows_max, W_BF16, f16);                                               \
        else if (a->kind == W_F16)                                                             \
            tile_body(a, rows_max, W_F16, f16);                                                \
        else                                                                                   \
            tile_body(a, rows_max, W_F32, f16);                                                \
    }

/* AVX-512: 4 x 4 accumulators of 16 floats (16 of the 32 registers) */
DEFINE_TILE(tile_avx512, __attribute__((target("avx512f,fma"))), 4, load_f16_avx512)
DEFINE_TILE(tile_plain, , 1, load_f16)

/* AVX2: kernels of its own (body_avx2) */
TARGET_AVX2 static void tile_avx2(tile_args_t *a, const nx__wref_t *w, uint32_t col_first,
                                  float *scratch)
{
    prepare(a, w, col_first, scratch, load_f16_f16c);
    if (a->kind == W_BF16)
        body_avx2(a, W_BF16);
    else if (a->kind == W_F16)
        body_avx2(a, W_F16);
    else
        body_avx2(a, W_F32);
}

/* ------------------------------------------------------------------------------------------
 * SiLU
 */

/* e^x within a few ulp, for the SiLU (libm's expf, a call per element, was the SiLU's whole
 * cost): 2^n e^r with n = round(x / ln 2), r = x - n ln 2 (two-part ln 2, so r is nearly
 * exact), |r| <= ln 2 / 2, e^r by its Taylor polynomial to r^7 (truncation below 1e-8).
 * x is clamped to [-87, 88] so 2^n stays a normal float; the SiLU needs no more range. */
static AI float exp_scalar(float x)
{
    float v = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float n = (v * 1.44269504f + 12582912.f) - 12582912.f; /* round to nearest */
    float r = (v - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f +
              r * (8.3333338e-3f + r * (1.3888889e-3f + r * 1.9841270e-4f))))));
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* exp_scalar on 16 lanes, the same operations; x already clamped to [-87, 88] by the path's
 * clamp (below). */
static AI v16f exp_v16(v16f v)
{
    v16f n = (v * 1.44269504f + 12582912.f) - 12582912.f;
    v16f r = (v - n * 0.693359375f) - n * -2.12194440e-4f;
    v16f p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f +
             r * (8.3333338e-3f + r * (1.3888889e-3f + r * 1.9841270e-4f))))));
    v16u bits = (v16u)(__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16f)bits;
}

/* x clamped to [-87, 88], a NaN kept, as exp_scalar does. Written with lane masks, GCC 12
 * turned the compares into 16 scalar ones per vector on the AVX2 and AVX-512 paths (the SiLU
 * then 0.79% of a 4B Q4_K_M decode's samples, 0.16% now: bench/profile_b1.sh with
 * PROFILE_BASELINE, bench/RESULTS.md stop 30); so each vector path clamps with its own min
 * and max (the second operand is returned for a NaN: max(lo, x) keeps it), and the SiLU of
 * each path gets its clamp as a constant function pointer, as the tiles get their f16 loader. */
typedef v16f (*clamp_fn_t)(v16f);

static AI v16f clamp_plain(v16f x)
{
    v16f lo = (v16f){0} - 87.0f, hi = (v16f){0} + 88.0f;
    v16i below = (v16i)(x < lo), above = (v16i)(x > hi); /* lanes all ones where true */
    return (v16f)((below & (v16i)lo) | (above & (v16i)hi) | (~(below | above) & (v16i)x));
}

static AI __attribute__((target("avx512f"))) v16f clamp_avx512(v16f x)
{
    return (v16f)_mm512_min_ps(_mm512_set1_ps(88.0f),
                               _mm512_max_ps(_mm512_set1_ps(-87.0f), (__m512)x));
}

static AI __attribute__((target("avx"))) __m256 clamp8_avx(__m256 x)
{
    return _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
}

static AI __attribute__((target("avx"))) v16f clamp_avx2(v16f x)
{
    union { v16f v; __m256 h[2]; } u = {x};
    u.h[0] = clamp8_avx(u.h[0]);
    u.h[1] = clamp8_avx(u.h[1]);
    return u.v;
}

/* g = silu(g) * u = g / (1 + e^-g) * u, element by element (no result depends on another). */
static AI void silu_body(float *g, const float *u, uint32_t n, clamp_fn_t clamp)
{
    uint32_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        v16f gv = load_f32(g + i);
        *(v16f_u *)(g + i) = gv / (1.0f + exp_v16(clamp(-gv))) * load_f32(u + i);
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + exp_scalar(-g[i])) * u[i];
}

typedef void (*silu_fn)(float *, const float *, uint32_t);
__attribute__((target("avx512f,fma"))) static void silu_avx512(float *g, const float *u,
                                                               uint32_t n)
{
    silu_body(g, u, n, clamp_avx512);
}
__attribute__((target("avx2,fma"))) static void silu_avx2(float *g, const float *u, uint32_t n)
{
    silu_body(g, u, n, clamp_avx2);
}
static void silu_plain(float *g, const float *u, uint32_t n)
{
    silu_body(g, u, n, clamp_plain);
}

/* ------------------------------------------------------------------------------------------
 * Attention for one query row over one head's cache (see nx__k_attend)
 *
 * The arithmetic, the same on both paths but for fused multiply-adds (AVX2 fuses, the plain
 * path rounds twice):
 * - scores[t] = scale * (q . keys[t]): the dot in 8 lanes (lane l sums d = l, l + 8, ... in
 *   order), the lanes reduced as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then
 *   the head_dim % 8 tail in order;
 * - p[t] = e^(scores[t] - max) (the polynomial exp of the SiLU), their sum in 8 lanes by
 *   t % 8 reduced the same way;
 * - out[d] = (sum over t in order of p[t] * values[t][d]) / sum.
 * Each score depends only on q and its key and each output element on its row's p and the
 * values: a row's result does not depend on the batch around it. The AVX2 path takes eight
 * keys per register block for the scores and 64 output elements per pass over the values,
 * every accumulator its own chain; AVX-512 CPUs run it too (attention is a small part of a
 * step, bound by the same latencies). */
#define ATTN_KEYS 8 /* keys per block: the scores' lanes and the softmax sum's */

typedef void (*attend_fn)(const float *, const float *, const float *, uint32_t, uint32_t,
                          float, float *, float *);

static AI float lanes_sum8(const float l[8])
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static void attend_plain(const float *q, const float *keys, const float *values, uint32_t len,
                         uint32_t hd, float scale, float *scores, float *out)
{
    uint32_t whole = hd - hd % ATTN_KEYS;
    float max = -INFINITY;
    for (uint32_t t = 0; t < len; t++) {
        const float *k = keys + (uint64_t)t * hd;
        float lane[ATTN_KEYS] = {0};
        for (uint32_t d = 0; d < whole; d++)
            lane[d % ATTN_KEYS] += q[d] * k[d];
        float v = lanes_sum8(lane);
        for (uint32_t d = whole; d < hd; d++)
            v += q[d] * k[d];
        scores[t] = v * scale;
        max = scores[t] > max ? scores[t] : max;
    }
    float lane[ATTN_KEYS] = {0};
    for (uint32_t t = 0; t < len; t++)
        lane[t % ATTN_KEYS] += scores[t] = exp_scalar(scores[t] - max);
    float sum = lanes_sum8(lane);
    for (uint32_t d = 0; d < hd; d++) {
        float o = 0;
        for (uint32_t t = 0; t < len; t++)
            o += scores[t] * values[(uint64_t)t * hd + d];
        out[d] = o / sum;
    }
}

/* The 8 lanes of each of a[0..7] summed as lanes_sum8 does, key j's sum in lane j. */
static AI TARGET_AVX2 __m256 lanes_sum8_x8(const __m256 a[8])
{
    __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
    __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
    __m256 q0 = _mm256_hadd_ps(h01, h23); /* key 0-3's (l0+l1)+(l2+l3), then (l4+l5)+(l6+l7) */
    __m256 q1 = _mm256_hadd_ps(h45, h67); /* keys 4-7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                         _mm256_permute2f128_ps(q0, q1, 0x31));
}

/* exp_scalar's operations on 8 lanes, with fused multiply-adds. */
static AI TARGET_AVX2 __m256 exp8_avx2(__m256 x)
{
    __m256 v = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 magic = _mm256_set1_ps(12582912.f);
    __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(v, _mm256_set1_ps(1.44269504f), magic), magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9841270e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3888889e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3333338e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1666668e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666667e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* out[d0 .. d0 + 8 * vecs) = sum_t p[t] * values[t][...] / sum, vecs accumulators in flight */
static AI TARGET_AVX2 void attn_values_avx2(const float *p, const float *values, uint32_t len,
                                            uint32_t hd, uint32_t d0, int vecs, __m256 sum,
                                            float *out)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < vecs; i++)
        acc[i] = _mm256_setzero_ps();
    const float *v = values + d0;
    for (uint32_t t = 0; t < len; t++, v += hd) { /* hot */
        __m256 pt = _mm256_broadcast_ss(p + t);
#pragma GCC unroll 8
        for (int i = 0; i < vecs; i++)
            acc[i] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + 8 * i), acc[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < vecs; i++)
        _mm256_storeu_ps(out + d0 + 8 * i, _mm256_div_ps(acc[i], sum));
}

TARGET_AVX2 static void attend_avx2(const float *q, const float *keys, const float *values,
                                    uint32_t len, uint32_t hd, float scale, float *scores,
                                    float *out)
{
    uint32_t whole = hd - hd % ATTN_KEYS;
    __m256 max8 = _mm256_set1_ps(-INFINITY);
    for (uint32_t t0 = 0; t0 < len; t0 += ATTN_KEYS) {
        const float *k[ATTN_KEYS];
        __m256 acc[ATTN_KEYS];
#pragma GCC unroll 8
        for (int b = 0; b < ATTN_KEYS; b++) { /* a short last block repeats the last key */
            k[b] = keys + (uint64_t)(t0 + b < len ? t0 + b : len - 1) * hd;
            acc[b] = _mm256_setzero_ps();
        }
        for (uint32_t d = 0; d < whole; d += ATTN_KEYS) { /* hot */
            __m256 qv = _mm256_loadu_ps(q + d);
#pragma GCC unroll 8
            for (int b = 0; b < ATTN_KEYS; b++)
                acc[b] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[b] + d), acc[b]);
        }
        float s[ATTN_KEYS];
        _mm256_storeu_ps(s, lanes_sum8_x8(acc));
        for (int b = 0; b < ATTN_KEYS; b++) {
            for (uint32_t d = whole; d < hd; d++)
                s[b] = __builtin_fmaf(q[d], k[b][d], s[b]);
            s[b] *= scale;
        }
        __m256 sv = _mm256_loadu_ps(s); /* lanes past len repeat the last key: max unchanged */
        max8 = _mm256_max_ps(max8, sv);
        for (int b = 0; b < ATTN_KEYS && t0 + b < len; b++)
            scores[t0 + b] = s[b];
    }
    float m[ATTN_KEYS];
    _mm256_storeu_ps(m, max8);
    float max = m[0];
    for (int i = 1; i < ATTN_KEYS; i++)
        max = m[i] > max ? m[i] : max;
    __m256 maxv = _mm256_set1_ps(max), sum8 = _mm256_setzero_ps();
    uint32_t t = 0;
    for (; t + ATTN_KEYS <= len; t += ATTN_KEYS) {
        __m256 p = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(scores + t), maxv));
        _mm256_storeu_ps(scores + t, p);
        sum8 = _mm256_add_ps(sum8, p);
    }
    if (t < len) { /* the last len % 8 scores: lanes past len add nothing */
        float tail[ATTN_KEYS];
        for (uint32_t i = 0; i < ATTN_KEYS; i++)
            tail[i] = t + i < len ? scores[t + i] : max;
        __m256 p = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(tail), maxv));
        _mm256_storeu_ps(tail, p);
        for (uint32_t i = 0; i < ATTN_KEYS; i++)
            if (t + i >= len)
                tail[i] = 0;
        memcpy(scores + t, tail, (len - t) * sizeof(float));
        sum8 = _mm256_add_ps(sum8, _mm256_loadu_ps(tail));
    }
    float l[ATTN_KEYS];
    _mm256_storeu_ps(l, sum8);
    __m256 sum = _mm256_set1_ps(lanes_sum8(l));
    uint32_t d = 0;
    for (; d + 64 <= hd; d += 64)
        attn_values_avx2(scores, values, len, hd, d, 8, sum, out);
    for (; d + 8 <= hd; d += 8)
        attn_values_avx2(scores, values, len, hd, d, 1, sum, out);
    for (; d < hd; d++) {
        float o = 0;
        for (uint32_t i = 0; i < len; i++)
            o = __builtin_fmaf(scores[i], values[(uint64_t)i * hd + d], o);
        out[d] = o / lanes_sum8(l);
    }
}

typedef void (*tile_fn)(tile_args_t *, const nx__wref_t *, uint32_t, float *);

/* The widest path the CPU has (0 plain, 1 AVX2, 2 AVX-512), or narrower when forced. */
static int pick_path(void)
{
    static int chosen = -1;
    int path = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (path < 0) { /* every thread that gets here picks the same */
        const char *force = getenv("NEXUS_CPU_KERNELS"); /* "plain", "avx2": test those */
        bool plain = force && strcmp(force, "plain") == 0;
        bool avx2_only = force && strcmp(force, "avx2") == 0;
        __builtin_cpu_init();
        bool avx2 = !plain && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        path = avx2 && !avx2_only && __builtin_cpu_supports("avx512f") ? 2 : avx2 ? 1 : 0;
        __atomic_store_n(&chosen, path, __ATOMIC_RELAXED);
    }
    return path;
}

static tile_fn pick_tile(void)
{
    static const tile_fn fns[] = {tile_plain, tile_avx2, tile_avx512};
    return fns[pick_path()];
}

void nx__k_attend(const float *q, const float *keys, const float *values, uint32_t len,
                  uint32_t head_dim, float scale, float *scores, float *out)
{
    static const attend_fn fns[] = {attend_plain, attend_avx2, attend_avx2}; /* see above */
    fns[pick_path()](q, keys, values, len, head_dim, scale, scores, out);
}

void nx__k_matmul_tile(const float *x, uint32_t n, const nx__wref_t *w, const nx__wref_t *bias,
                       uint32_t col_first, uint32_t col_count, float *y, bool accumulate,
                       float *scratch)
{
    tile_args_t a = {.x = x, .n = n, .k = w->cols, .cols = col_count, .y = y + col_first,
                     .y_stride = w->rows, .accumulate = accumulate};
    float bias_vals[NX_K_TILE_COLS];
    if (bias && bias->ptr) {
        for (uint32_t c = 0; c < col_count; c++)
            bias_vals[c] = nx__k_weight_at(bias, col_first + c);
        a.bias = bias_vals;
    }
    pick_tile()(&a, w, col_first, scratch);
}

void nx__k_rmsnorm(const float *x, uint32_t dim, const nx__wref_t *weight, float eps,
                   float *out)
{
    /* 8 partial sums (i mod 8) added in a fixed order, the same for every row: an eighth
     * of the dependency chain of one running sum */
    double part[8] = {0};
    uint32_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; j++)
            part[j] += (double)x[i + j] * x[i + j];
    double sum_sq = ((part[0] + part[1]) + (part[2] + part[3])) +
                    ((part[4] + part[5]) + (part[6] + part[7]));
    for (; i < dim; i++)
        sum_sq += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(sum_sq / dim + (double)eps));
    switch (weight->dtype) { /* one loop per dtype: no switch per element */
    case NX_DT_BF16:
        for (i = 0; i < dim; i++)
            out[i] = x[i] * inv * bf16_to_f32(((const uint16_t *)weight->ptr)[i]);
        break;
    case NX_DT_F16:
        for (i = 0; i < dim; i++)
            out[i] = x[i] * inv * (float)((const _Float16 *)weight->ptr)[i];
        break;
    default:
        for (i = 0; i < dim; i++)
            out[i] = x[i] * inv * ((const float *)weight->ptr)[i];
        break;
    }
}

void nx__k_rope(float *v, uint32_t dim, const float *cos_t, const float *sin_t, bool adjacent)
{
    uint32_t half = dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        uint32_t a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + half;
        float x1 = v[a], x2 = v[b];
        v[a] = x1 * cos_t[i] - x2 * sin_t[i];
        v[b] = x2 * cos_t[i] + x1 * sin_t[i];
    }
}

void nx__k_silu_mul(float *g, const float *u, uint32_t n)
{
    static const silu_fn fns[] = {silu_plain, silu_avx2, silu_avx512};
    fns[pick_path()](g, u, n);
}

float nx__k_dot(const float *a, const float *b, uint32_t n)
{
    v8f acc = {0};
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc += *(const v8f_u *)(a + i) * *(const v8f_u *)(b + i);
    float s = 0;
    for (int l = 0; l < 8; l++)
        s += acc[l];
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void nx__k_axpy(float *y, float a, const float *x, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void nx__k_rope_inv_freq(const nx_model_config_t *c, double *inv_freq)
{
    uint32_t half = c->head_dim / 2;
    for (uint32_t i = 0; i < half; i++)
        inv_freq[i] = 1.0 / pow(c->rope_theta, (double)(2 * i) / c->head_dim);
    /* GGUF: the scaling comes as per-frequency factors (rope_freqs.weight), as llama.cpp
     * divides theta by them; config reading checked there are head_dim/2 of them */
    for (uint32_t i = 0; i < c->rope_freq_count && i < half; i++)
        inv_freq[i] /= c->rope_freq_factors[i];
    if (!c->rope_llama3)
        return;
    /* Llama 3: long wavelengths slowed by `factor`, short ones kept, a smooth blend between */
    double old_ctx = c->rope_original_max;
    double low_wavelen = old_ctx / c->rope_low_freq, high_wavelen = old_ctx / c->rope_high_freq;
    for (uint32_t i = 0; i < half; i++) {
        double wavelen = 2 * M_PI / inv_freq[i];
        if (wavelen > low_wavelen) {
            inv_freq[i] /= c->rope_factor;
        } else if (wavelen >= high_wavelen) {
            double smooth = (old_ctx / wavelen - c->rope_low_freq) /
                            (c->rope_high_freq - c->rope_low_freq);
            inv_freq[i] = (1 - smooth) * inv_freq[i] / c->rope_factor + smooth * inv_freq[i];
        }
    }
}
