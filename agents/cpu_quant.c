/* cpu_quant.c — the CPU matmul over ggml's block weights (see cpu_quant.h for the contract).
 *
 * Activations are quantized once per matmul input (nx__qact_quantize), weights are read as
 * stored. Every output element is a chain of one fma per weight block over the block's exact
 * integer dot product (cpu_quant.h), so the three paths below give the same bits:
 *
 *   plain  — per output element, from the blocks as stored (the reference the others match)
 *   AVX2   — }  a tile of 16 weight rows is decoded so that one vector holds 4 consecutive
 *   AVX-512 — } codes of each of 16 rows (codes made unsigned, scales widened); per 4 values
 *              of k one multiply-accumulate instruction (vpdpbusd) then updates 16 output
 *              elements against 4 activation bytes broadcast from memory. A batch of up to
 *              4 rows (decode) uses each step of 64 decoded values at once, in registers; a
 *              larger one has the tile decoded into scratch and runs against it 6-8 rows per
 *              pass. Either way each weight is read from memory once per step, whatever the
 *              batch (batch-8 decode, prefill).
 *
 * Unsigned codes times signed activations is what vpdpbusd computes; the codes' offsets
 * (8 for Q4_0, 16 for Q5_0, 32 for Q6_K, 128 for Q8_0 made unsigned) come back as offset x
 * the activations' block sum, which the activation format carries (nx__qact_t.offset).
 *
 * Decode is memory bound: nx__q_matmul streams a range of tiles, each step prefetching the
 * bytes a later step will read (cpu_quant_simd.h); bench/quant_matmul.c measures it against
 * the machine's streaming read bandwidth.
 *
 * The SIMD bodies live in cpu_quant_simd.h, compiled here once per instruction set with that
 * set's few primitives (the multiply-accumulate, fma, a gather, a table lookup); the path is
 * chosen once at run time (NEXUS_CPU_KERNELS=plain or =avx2 forces a narrower one). AVX-VNNI
 * (VEX vpdpbusd, on CPUs with AVX2 but not AVX-512) would be a third instantiation; it is not
 * built: no machine or emulator at hand runs it to test.
 */
#include "cpu_quant.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "quant.h"

/* 64-byte vectors pass through static always-inline helpers only (as in cpu_kernels.c). */
#pragma GCC diagnostic ignored "-Wpsabi"

#define AI inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------------
 * Families and activation buffers
 */
nx__qfamily_t nx__q_family(nx_dtype_t dtype)
{
    switch (dtype) {
    case NX_DT_Q8_0: case NX_DT_Q4_0: case NX_DT_Q5_0: return NX__QF_32;
    case NX_DT_Q4_K: case NX_DT_Q6_K: return NX__QF_256;
    default: return NX__QF_NONE;
    }
}

static uint32_t family_block(nx__qfamily_t family)
{
    return family == NX__QF_256 ? 256 : 32;
}

static size_t round64(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

/* The pieces of an activation buffer in order: qs, d, offset, sum32. */
static void qact_sizes(nx__qfamily_t family, uint32_t rows, uint32_t cols, size_t sizes[4])
{
    size_t r = rows, blocks = cols / family_block(family);
    sizes[0] = round64(r * cols);
    sizes[1] = round64(r * blocks * sizeof(float));
    sizes[2] = round64(r * (family == NX__QF_256 ? cols / 16 : blocks) * sizeof(int32_t));
    sizes[3] = family == NX__QF_256 ? round64(r * (cols / 32) * sizeof(int16_t)) : 0;
}

size_t nx__qact_bytes(nx__qfamily_t family, uint32_t rows, uint32_t cols)
{
    size_t sizes[4];
    qact_sizes(family, rows, cols, sizes);
    return sizes[0] + sizes[1] + sizes[2] + sizes[3];
}

void nx__qact_bind(nx__qact_t *a, nx__qfamily_t family, uint32_t rows, uint32_t cols, void *mem)
{
    size_t sizes[4];
    qact_sizes(family, rows, cols, sizes);
    char *p = mem;
    *a = (nx__qact_t){.family = family, .cols = cols, .rows = rows};
    a->qs = (int8_t *)p;
    a->d = (float *)(p += sizes[0]);
    a->offset = (int32_t *)(p += sizes[1]);
    a->sum32 = family == NX__QF_256 ? (int16_t *)(p + sizes[2]) : NULL;
}

/* ------------------------------------------------------------------------------------------
 * Activation quantization. One implementation for every path (built for the baseline target,
 * so no multiply-add is fused), so the int8 rows are the same whichever kernels run.
 */

/* Round to nearest, ties to even: 1.5 * 2^23 added leaves the integer in the low mantissa
 * bits (|v| <= 127.x here). */
static inline int32_t nearest_int(float v)
{
    float shifted = v + 12582912.f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    return (bits & 0x7fffff) - 0x400000;
}

/* NX__QF_32: per 32 values d = amax / 127 rounded to fp16, q = round(x * 127 / amax): ggml's
 * Q8_0 activation blocks exactly (its x86 quantize_row_q8_0), so that the integer sums and
 * scales are llama.cpp's (tests/test_llamacpp.py holds us to its results). */
static void quantize_row_32(const float *x, uint32_t cols, int8_t *qs, float *d, int32_t *offset)
{
    for (uint32_t b = 0; b < cols / 32; b++, x += 32, qs += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float id = amax > 0 ? 127.f / amax : 0.f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            int32_t q = nearest_int(x[j] * id);
            qs[j] = (int8_t)q;
            sum += q;
        }
        d[b] = nx__half_to_f32(nx__f32_to_half(amax / 127.f));
        offset[b] = -sum;
    }
}

/* NX__QF_256: as Q8_K, per 256 values d = max / -127 (max the value of largest magnitude),
 * q = round(x * -127 / max); the sums of every 16 (times -32, Q6_K's offset) and every 32. */
static void quantize_row_256(const float *x, uint32_t cols, int8_t *qs, float *d,
                             int32_t *offset16, int16_t *sum32)
{
    for (uint32_t b = 0; b < cols / 256; b++, x += 256, qs += 256) {
        float amax = 0, max = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float iscale = amax > 0 ? -127.f / max : 0.f;
        for (int j = 0; j < 256; j++) {
            int32_t q = nearest_int(iscale * x[j]);
            qs[j] = (int8_t)(q < 127 ? q : 127);
        }
        d[b] = amax > 0 ? 1 / iscale : 0.f;
        for (int s = 0; s < 16; s++) {
            int32_t sum = 0;
            for (int j = 0; j < 16; j++)
                sum += qs[16 * s + j];
            offset16[16 * b + s] = -32 * sum;
            if (s & 1)
                sum32[8 * b + s / 2] = (int16_t)(sum - offset16[16 * b + s - 1] / 32);
        }
    }
}

/* The same two quantizers with AVX-512: the same products rounded to nearest even
 * (vcvtps2dq under the default rounding mode), the same maxima and integer sums, so the same
 * bytes; only faster. */
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

AVX512_TARGET static void quantize_row_32_avx512(const float *x, uint32_t cols, int8_t *qs,
                                                 float *d, int32_t *offset)
{
    for (uint32_t b = 0; b < cols / 32; b++, x += 32, qs += 32) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        __m512 id = _mm512_set1_ps(amax > 0 ? 127.f / amax : 0.f);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        _mm_storeu_si128((__m128i *)qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtepi32_epi8(q1));
        d[b] = nx__half_to_f32(nx__f32_to_half(amax / 127.f));
        offset[b] = -_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

AVX512_TARGET static void quantize_row_256_avx512(const float *x, uint32_t cols, int8_t *qs,
                                                  float *d, int32_t *offset16, int16_t *sum32)
{
    for (uint32_t b = 0; b < cols / 256; b++, x += 256, qs += 256) {
        __m512 amax_v = _mm512_setzero_ps();
        for (int i = 0; i < 16; i++)
            amax_v = _mm512_max_ps(amax_v, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * i)));
        float amax = _mm512_reduce_max_ps(amax_v), max = 0;
        for (int i = 0; i < 16 && amax > 0; i++) { /* the first element of that magnitude */
            __mmask16 at = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * i)),
                                              _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (at) {
                max = x[16 * i + __builtin_ctz(at)];
                break;
            }
        }
        float iscale = amax > 0 ? -127.f / max : 0.f;
        for (int i = 0; i < 16; i++) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * i),
                                                         _mm512_set1_ps(iscale)));
            q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(qs + 16 * i), _mm512_cvtepi32_epi8(q));
            int32_t sum = _mm512_reduce_add_epi32(q);
            offset16[16 * b + i] = -32 * sum;
            if (i & 1)
                sum32[8 * b + i / 2] = (int16_t)(sum - offset16[16 * b + i - 1] / 32);
        }
        d[b] = amax > 0 ? 1 / iscale : 0.f;
    }
}

void nx__qact_quantize(nx__qact_t *a, uint32_t row, const float *x)
{
    uint32_t blocks = a->cols / family_block(a->family);
    int8_t *qs = a->qs + (size_t)row * a->cols;
    float *d = a->d + (size_t)row * blocks;
    bool avx512 = nx__q_path() == NX__Q_AVX512;
    if (a->family == NX__QF_256) {
        int32_t *offset16 = a->offset + (size_t)row * (a->cols / 16);
        int16_t *sum32 = a->sum32 + (size_t)row * (a->cols / 32);
        if (avx512)
            quantize_row_256_avx512(x, a->cols, qs, d, offset16, sum32);
        else
            quantize_row_256(x, a->cols, qs, d, offset16, sum32);
    } else if (avx512) {
        quantize_row_32_avx512(x, a->cols, qs, d, a->offset + (size_t)row * blocks);
    } else {
        quantize_row_32(x, a->cols, qs, d, a->offset + (size_t)row * blocks);
    }
}

void nx__qact_dequantize(const nx__qact_t *a, uint32_t row, float *out)
{
    uint32_t block = family_block(a->family), blocks = a->cols / block;
    const int8_t *qs = a->qs + (size_t)row * a->cols;
    const float *d = a->d + (size_t)row * blocks;
    for (uint32_t i = 0; i < a->cols; i++)
        out[i] = d[i / block] * qs[i];
}

/* ------------------------------------------------------------------------------------------
 * A tile: what every path needs to know
 */
typedef struct qtile {
    const nx__qact_t *a;
    uint32_t n;             /* batch rows */
    nx_dtype_t dtype;
    const uint8_t *w;       /* the tile's first weight row */
    uint64_t row_bytes;     /* bytes of a weight row */
    uint32_t k;             /* values per row */
    uint32_t count;         /* weight rows in the tile, <= NX_Q_TILE_COLS */
    const float *bias;      /* [count] or NULL */
    float *y;               /* output of row 0, column 0 of the tile */
    uint32_t y_stride;
    bool accumulate;
    uint8_t *scratch;       /* repacked tile (SIMD paths) */
    uint32_t steps;         /* steps of 64 values of k (the kernels' unit of work) */
    uint32_t row_step;      /* bytes of a row a step reads */
    const uint8_t *ahead;   /* the weight's next tile (prefetched meanwhile), or NULL */
    uint32_t ahead_rows;
} qtile_t;

static AI void store_out(const qtile_t *t, uint32_t row, uint32_t c, float v)
{
    float *dst = t->y + (uint64_t)row * t->y_stride + c;
    if (t->bias)
        v += t->bias[c];
    *dst = t->accumulate ? *dst + v : v;
}

/* ------------------------------------------------------------------------------------------
 * The plain path: each output element from the blocks as stored. fmaf is exact (fused) on
 * every target, so this chain is the SIMD paths' bit for bit.
 */
typedef struct qrow {
    const int8_t *qs;
    const float *d;
    const int32_t *offset;
    const int16_t *sum32;
} qrow_t;

static qrow_t qrow(const nx__qact_t *a, uint32_t row)
{
    uint32_t blocks = a->cols / family_block(a->family);
    qrow_t r = {a->qs + (size_t)row * a->cols, a->d + (size_t)row * blocks, NULL, NULL};
    if (a->family == NX__QF_256) {
        r.offset = a->offset + (size_t)row * (a->cols / 16);
        r.sum32 = a->sum32 + (size_t)row * (a->cols / 32);
    } else {
        r.offset = a->offset + (size_t)row * blocks;
    }
    return r;
}

static float plain_q8_0(const nx_bq8_0_t *w, const qrow_t *x, uint32_t blocks)
{
    float acc = 0;
    for (uint32_t b = 0; b < blocks; b++) {
        int32_t isum = 0;
        for (int j = 0; j < 32; j++)
            isum += w[b].qs[j] * x->qs[32 * b + j];
        acc = fmaf((float)isum, nx__half_to_f32(w[b].d) * x->d[b], acc);
    }
    return acc;
}

static float plain_q4_0(const nx_bq4_0_t *w, const qrow_t *x, uint32_t blocks)
{
    float acc = 0;
    for (uint32_t b = 0; b < blocks; b++) {
        const int8_t *xs = x->qs + 32 * b;
        int32_t isum = 8 * x->offset[b];
        for (int j = 0; j < 16; j++)
            isum += (w[b].qs[j] & 15) * xs[j] + (w[b].qs[j] >> 4) * xs[j + 16];
        acc = fmaf((float)isum, nx__half_to_f32(w[b].d) * x->d[b], acc);
    }
    return acc;
}

static float plain_q5_0(const nx_bq5_0_t *w, const qrow_t *x, uint32_t blocks)
{
    float acc = 0;
    for (uint32_t b = 0; b < blocks; b++) {
        const int8_t *xs = x->qs + 32 * b;
        uint32_t qh;
        memcpy(&qh, w[b].qh, sizeof qh);
        int32_t isum = 16 * x->offset[b];
        for (int j = 0; j < 16; j++) {
            int lo = (w[b].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (w[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += lo * xs[j] + hi * xs[j + 16];
        }
        acc = fmaf((float)isum, nx__half_to_f32(w[b].d) * x->d[b], acc);
    }
    return acc;
}

static float plain_q4_k(const nx_bq4_k_t *w, const qrow_t *x, uint32_t blocks)
{
    float acc = 0;
    for (uint32_t b = 0; b < blocks; b++) {
        int32_t s1 = 0, s2 = 0;
        for (int s = 0; s < 8; s++) {
            const uint8_t *q = w[b].qs + 32 * (s / 2);
            const int8_t *xs = x->qs + 256 * b + 32 * s;
            int32_t t = 0;
            for (int j = 0; j < 32; j++)
                t += ((s & 1) ? q[j] >> 4 : q[j] & 15) * xs[j];
            uint8_t sc, mn;
            nx__q4k_scale_min(w[b].scales, s, &sc, &mn);
            s1 += sc * t;
            s2 += mn * x->sum32[8 * b + s];
        }
        float da = x->d[b];
        acc = fmaf((float)s1, nx__half_to_f32(w[b].d) * da, acc);
        acc = fmaf(-(float)s2, nx__half_to_f32(w[b].dmin) * da, acc);
    }
    return acc;
}

static float plain_q6_k(const nx_bq6_k_t *w, const qrow_t *x, uint32_t blocks)
{
    float acc = 0;
    for (uint32_t b = 0; b < blocks; b++) {
        int32_t s1 = 0;
        for (int s = 0; s < 16; s++) {
            int32_t t = x->offset[16 * b + s];
            for (int j = 16 * s; j < 16 * s + 16; j++) {
                int h = j / 128, l = j % 32, quarter = (j % 128) / 32;
                uint8_t low = w[b].ql[64 * h + l + 32 * (quarter & 1)];
                int code = (quarter >= 2 ? low >> 4 : low & 15) |
                           ((w[b].qh[32 * h + l] >> (2 * quarter)) & 3) << 4;
                t += code * x->qs[256 * b + j];
            }
            s1 += w[b].scales[s] * t;
        }
        acc = fmaf((float)s1, nx__half_to_f32(w[b].d) * x->d[b], acc);
    }
    return acc;
}

static void tile_plain(const qtile_t *t)
{
    uint32_t blocks = t->k / family_block(nx__q_family(t->dtype));
    for (uint32_t r = 0; r < t->n; r++) {
        qrow_t x = qrow(t->a, r);
        for (uint32_t c = 0; c < t->count; c++) {
            const void *w = t->w + c * t->row_bytes;
            float v;
            switch (t->dtype) {
            case NX_DT_Q8_0: v = plain_q8_0(w, &x, blocks); break;
            case NX_DT_Q4_0: v = plain_q4_0(w, &x, blocks); break;
            case NX_DT_Q5_0: v = plain_q5_0(w, &x, blocks); break;
            case NX_DT_Q4_K: v = plain_q4_k(w, &x, blocks); break;
            default: v = plain_q6_k(w, &x, blocks); break;
            }
            store_out(t, r, c, v);
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * The SIMD paths: the body in cpu_quant_simd.h over 64-byte GCC vectors, plus each
 * instruction set's primitives. On AVX2 a 64-byte vector is a pair of registers.
 */
typedef int32_t qv_i32 __attribute__((vector_size(64)));
typedef uint32_t qv_u32 __attribute__((vector_size(64)));
typedef float qv_f32 __attribute__((vector_size(64)));
typedef uint16_t qv_u16 __attribute__((vector_size(32)));
typedef int32_t qv_i32x8 __attribute__((vector_size(32)));
typedef int32_t qv_i32x8_u __attribute__((vector_size(32), aligned(1)));
typedef int32_t qv_i32x4_u __attribute__((vector_size(16), aligned(1)));

/* A full tile's 16 weight rows for the SIMD bodies: the rows 0, 4, 8, 12 and the row stride,
 * so that every row's address is one base plus 0, 1, 2 or 3 strides (few registers), and
 * index[c] = c * stride for gathers. A partial tile's rows are first copied into scratch,
 * the last one repeated. */
typedef struct cols {
    const uint8_t *g[4];
    uint64_t rs, rs3; /* row stride, 3 x row stride */
    qv_i32 index;
} cols_t;

/* Row c's bytes from `at` on (c a constant after inlining). The empty asm keeps base + at in
 * one register, so the 16 rows are 4 registers plus the strides in the addressing mode; left
 * alone, GCC makes each row its own induction variable and spills them. */
static AI const uint8_t *col_at(const cols_t *cs, int c, uint64_t at)
{
    const uint8_t *g = cs->g[c / 4] + at;
    __asm__("" : "+r"(g));
    switch (c % 4) {
    case 0: return g;
    case 1: return g + cs->rs;
    case 2: return g + 2 * cs->rs;
    default: return g + cs->rs3;
    }
}

/* Bytes of a decoded tile (16 rows) per weight block; layouts in cpu_quant_simd.h. */
#define T32_BYTES 576  /* Q8_0, Q4_0, Q5_0: per 32 values */
#define T4K_BYTES 4992 /* Q4_K: per 256 */
#define T6K_BYTES 5184 /* Q6_K: per 256 */

/* AVX-512: VNNI's vpdpbusd (u8 x s8, four products into each int32, no saturation) and
 * vpdpwssd (s16 x s16 pairs); Q8_0's signed codes are made unsigned (+128) when repacked. */
#define QS_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define QN(name) name##_avx512
#define QS_ROWS 8       /* batch rows per pass: 2 accumulators each, of the 32 registers */
#define QS_ROWS_K 6     /* Q4_K / Q6_K: 3 accumulators each */
#define QS_FUSED_ROWS 4 /* batches this small repack in registers (decode) */
#define QS_Q8_UNSIGNED 1
#define QS_Q4K_HIGH16 1 /* Q4_K's high nibbles used as 16 x code (vpdpbusd: no saturation) */

static AI QS_TARGET qv_i32 dot4_avx512(qv_i32 acc, qv_i32 w, qv_i32 x)
{
    return (qv_i32)_mm512_dpbusd_epi32((__m512i)acc, (__m512i)w, (__m512i)x);
}

static AI QS_TARGET qv_i32 dot4_q8_avx512(qv_i32 acc, qv_i32 w, qv_i32 x)
{
    return dot4_avx512(acc, w, x);
}

static AI QS_TARGET qv_i32 dot2_avx512(qv_i32 acc, qv_i32 w, qv_i32 x)
{
    return (qv_i32)_mm512_dpwssd_epi32((__m512i)acc, (__m512i)w, (__m512i)x);
}

static AI QS_TARGET qv_f32 fmadd_avx512(qv_f32 a, qv_f32 b, qv_f32 c)
{
    return (qv_f32)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}

static AI QS_TARGET qv_f32 fnmadd_avx512(qv_f32 a, qv_f32 b, qv_f32 c)
{
    return (qv_f32)_mm512_fnmadd_ps((__m512)a, (__m512)b, (__m512)c);
}

/* lane c = the 4 bytes at base + index[c] */
static AI QS_TARGET qv_i32 gather_avx512(const uint8_t *base, qv_i32 index)
{
    return (qv_i32)_mm512_i32gather_epi32((__m512i)index, (const void *)base, 1);
}

/* lane c = table[index[c] & 15] */
static AI QS_TARGET qv_i32 lookup16_avx512(qv_i32 table, qv_i32 index)
{
    return (qv_i32)_mm512_permutexvar_epi32((__m512i)index, (__m512i)table);
}

/* lane c = the fp16 in the low half of lane c, as a float */
static AI QS_TARGET qv_f32 half_avx512(qv_i32 v)
{
    return (qv_f32)_mm512_cvtph_ps(_mm512_cvtepi32_epi16((__m512i)v));
}

#include "cpu_quant_simd.h"

#undef QS_TARGET
#undef QN
#undef QS_ROWS
#undef QS_ROWS_K
#undef QS_FUSED_ROWS
#undef QS_Q8_UNSIGNED
#undef QS_Q4K_HIGH16

/* ------------------------------------------------------------------------------------------
 * Q4_0 at batch 1 on AVX-512 (+ GFNI): per weight row, no transpose of the weights. Hot path
 * (decode).
 *
 * The tile kernels above decode 16 rows' codes into "row per lane" vectors; for Q4_0 that is a
 * 16 x 8 int32 transpose per 64 values and a 16-lane vpgatherdd of the rows' fp16 scales per
 * block (the gathers alone were a third of its time). At batch 1 that kernel could not keep up
 * with memory: bench/quant_matmul --hot 1 (one core, weights in L2) 18-19 GB/s, where two
 * cores share 32-55 GB/s. Here each row is read as stored, 4 blocks (72 bytes, 128 values) a
 * step: two loads, one vpermw that drops the fp16 scales from between the blocks' codes, the
 * nibbles split (an and; a GFNI affine for the high ones: on Zen 4 shifts share the two
 * shuffle pipes that bound this kernel), two vpdpbusd against the activations' low and high
 * halves (a vshufi64x2 each, once for the 16 rows): a vector of 4 partial dwords per block.
 * Only the sums are transposed to "row per lane": 4 rows' vectors reduced by packs and
 * vpmaddwd (q4r_sum4), then 128-bit lanes exchanged over the 16 rows. The scales come out of
 * the same loads: a masked two-table vpermw per pair of rows drops their 8 halves into place,
 * two more put them in block order. The block sums are exact integers (plus 8 x the block's
 * -sum(x): Q4_0's codes are nibble - 8), and every row then runs the one fma per block in block
 * order: the contract of cpu_quant.h, the same bits as the other paths. 33 GB/s a core hot.
 */
#define Q4R_TARGET                                                                              \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c,gfni")))
#define Q4R_BLOCK_BYTES 18 /* sizeof(nx_bq4_0_t): fp16 d, 16 code bytes */

/* The batch-1 row kernels' result: lane c of acc is the tile's column c. */
static AI Q4R_TARGET void q4r_store(const qtile_t *t, __m512 acc)
{
    float out[NX_Q_TILE_COLS];
    _mm512_storeu_ps(out, acc);
    for (uint32_t c = 0; c < t->count; c++)
        store_out(t, 0, c, out[c]);
}

/* The 4 int32 lanes of every 128-bit lane of a, b, c, d summed: lane j of the result holds
 * a's, b's, c's and d's sums for 128-bit lane j, in that order. Each lane of the inputs is a
 * sum of 8 products of a code (0-15) and an activation (|x| <= 127), so |lane| <= 15240 and
 * every pair of them fits int16: packed to words (vpackssdw, no saturation) and summed in
 * pairs by vpmaddwd, twice; fewer shuffles than a tree of unpacks. */
static AI Q4R_TARGET __m512i q4r_sum4(__m512i a, __m512i b, __m512i c, __m512i d)
{
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i ab = _mm512_madd_epi16(_mm512_packs_epi32(a, b), ones);
    __m512i cd = _mm512_madd_epi16(_mm512_packs_epi32(c, d), ones);
    return _mm512_madd_epi16(_mm512_packs_epi32(ab, cd), ones);
}

/* The weight's next tile, prefetched (to L2) while this one is read: one sequential run of
 * its lines (its rows are consecutive), spread evenly over this tile's steps, so that memory
 * sees one forward stream per core and each step asks for about as many lines as it reads.
 * Prefetching each row's bytes 8 steps ahead instead (16 short streams a core, a third
 * of them crossing into the next tile) was slower from memory: bench/quant_matmul, passes of
 * the two alternating, 4b gate/up 1.05-1.11x, 0.6b gate/up 1.10x, 4b down 1.03-1.07x. */
typedef struct q4r_ahead {
    const uint8_t *next;  /* the next line to prefetch of the next tile, or NULL */
    uint64_t lines, part; /* lines in all; lines x steps so far - steps x lines prefetched */
} q4r_ahead_t;

static q4r_ahead_t q4r_ahead(const qtile_t *t)
{
    if (!t->ahead)
        return (q4r_ahead_t){NULL, 0, 0};
    uintptr_t start = (uintptr_t)t->ahead & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)t->ahead + (uint64_t)t->ahead_rows * t->row_bytes;
    return (q4r_ahead_t){(const uint8_t *)start, (end - start + 63) / 64, 0};
}

/* Before each of `steps` steps, in order: the next tile's lines up to (step + 1) / steps of
 * them, counted without a division (a 64-bit divide per step was a tenth of Q4_0's batch-1
 * kernel on Zen 3). */
static AI void q4r_prefetch(q4r_ahead_t *a, uint32_t steps)
{
    for (a->part += a->lines; a->part >= steps; a->part -= steps, a->next += 64)
        __builtin_prefetch(a->next, 0, 1);
}

/* One step: blocks b0 .. b0 + nblk - 1 (nblk 4, or 1-3 at the end of a row: masked loads, the
 * missing blocks' lanes then zero and unused) of the 16 rows, into acc. */
static AI Q4R_TARGET __m512 q4r_step(const cols_t *cs, const qrow_t *x, uint32_t b0, int nblk,
                                     __m512 acc)
{
    /* word i of the 16-bit vpermw tables: A = the 64 bytes at the step's start, B = the 64
     * at +8, so that word 32 + i is the span's word i + 4 */
    const __m512i code_index = _mm512_set_epi16(
        63, 62, 61, 60, 31, 30, 29, 28, 26, 25, 24, 23, 22, 21, 20, 19, /* blocks 3, 2 */
        17, 16, 15, 14, 13, 12, 11, 10, 8, 7, 6, 5, 4, 3, 2, 1);        /* blocks 1, 0 */
    /* the scales: lane 4r + j of halves[h] = block j's d of row 8h + r (word 9j of A), two
     * rows at a time (tables A of an even row and of the next) */
    const __m512i scale_index = _mm512_set_epi16(59, 50, 41, 32, 27, 18, 9, 0, 59, 50, 41, 32,
                                                 27, 18, 9, 0, 59, 50, 41, 32, 27, 18, 9, 0, 59,
                                                 50, 41, 32, 27, 18, 9, 0);
    /* then lane 16 p + c of by_block[q] = block 2q + p's d of row c */
    const __m512i block01 = _mm512_set_epi16(61, 57, 53, 49, 45, 41, 37, 33, 29, 25, 21, 17,
                                             13, 9, 5, 1, 60, 56, 52, 48, 44, 40, 36, 32, 28,
                                             24, 20, 16, 12, 8, 4, 0);
    const __m512i block23 = _mm512_add_epi16(block01, _mm512_set1_epi16(2));
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    /* GF(2) affine bit matrix: output bit i (row 7 - i of the matrix) = input bit i + 4 */
    const __m512i high_nibble = _mm512_set1_epi64(0x1020408000000000ll);
    bool full = nblk == 4;
    __mmask64 a_mask = full ? ~0ull : (1ull << (Q4R_BLOCK_BYTES * nblk)) - 1;
    __mmask64 b_mask = full ? ~0ull : (1ull << (Q4R_BLOCK_BYTES * nblk - 8)) - 1;
    __mmask64 x_mask = full ? ~0ull : nblk >= 2 ? ~0ull : (1ull << 32) - 1;
    __mmask64 x2_mask = full ? ~0ull : nblk == 3 ? (1ull << 32) - 1 : 0;
    /* the activations' 16-value halves: [lo of block 0 | 1 | 2 | 3], [hi ...] */
    __m512i xa = _mm512_maskz_loadu_epi8(x_mask, x->qs + 32 * b0);
    __m512i xb = _mm512_maskz_loadu_epi8(x2_mask, x->qs + 32 * b0 + 64);
    __m512i x_lo = _mm512_shuffle_i64x2(xa, xb, _MM_SHUFFLE(2, 0, 2, 0));
    __m512i x_hi = _mm512_shuffle_i64x2(xa, xb, _MM_SHUFFLE(3, 1, 3, 1));
    __m512i halves[2] = {scale_index, scale_index}, group[4];
    uint64_t at = (uint64_t)b0 * Q4R_BLOCK_BYTES;
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        __m512i sums[4], even_a = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            int c = 4 * g + i;
            const uint8_t *row = col_at(cs, c, at);
            __m512i a = _mm512_maskz_loadu_epi8(a_mask, row);
            __m512i b = _mm512_maskz_loadu_epi8(b_mask, row + 8);
            __m512i codes = _mm512_permutex2var_epi16(a, code_index, b);
            __m512i lo = _mm512_and_si512(codes, low4);
            __m512i hi = _mm512_gf2p8affine_epi64_epi8(codes, high_nibble, 0);
            sums[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, x_lo),
                                          hi, x_hi);
            if (c % 2 == 0)
                even_a = a;
            else
                halves[c / 8] = _mm512_mask2_permutex2var_epi16(
                    even_a, halves[c / 8], (__mmask32)(0xffu << 4 * (c % 8 - 1)), a);
        }
        group[g] = q4r_sum4(sums[0], sums[1], sums[2], sums[3]);
    }
    /* group[g] 128-bit lane j: block j of rows 4g..4g+3; isum[j]: block j of the 16 rows */
    __m512i t0 = _mm512_shuffle_i64x2(group[0], group[1], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i t1 = _mm512_shuffle_i64x2(group[0], group[1], _MM_SHUFFLE(3, 2, 3, 2));
    __m512i t2 = _mm512_shuffle_i64x2(group[2], group[3], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i t3 = _mm512_shuffle_i64x2(group[2], group[3], _MM_SHUFFLE(3, 2, 3, 2));
    __m512i isum[4] = {_mm512_shuffle_i64x2(t0, t2, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_i64x2(t0, t2, _MM_SHUFFLE(3, 1, 3, 1)),
                       _mm512_shuffle_i64x2(t1, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_i64x2(t1, t3, _MM_SHUFFLE(3, 1, 3, 1))};
    __m512i by_block[2] = {_mm512_permutex2var_epi16(halves[0], block01, halves[1]),
                           _mm512_permutex2var_epi16(halves[0], block23, halves[1])};
    __m512 dw[4] = {_mm512_cvtph_ps(_mm512_castsi512_si256(by_block[0])),
                    _mm512_cvtph_ps(_mm512_extracti64x4_epi64(by_block[0], 1)),
                    _mm512_cvtph_ps(_mm512_castsi512_si256(by_block[1])),
                    _mm512_cvtph_ps(_mm512_extracti64x4_epi64(by_block[1], 1))};
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        if (j >= nblk) /* past the end of the row: not read */
            break;
        /* Q4_0's codes are nibble - 8: each block's sum is 8 x -sum(x) more */
        __m512i block_sum = _mm512_add_epi32(isum[j], _mm512_set1_epi32(8 * x->offset[b0 + j]));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(block_sum),
                              _mm512_mul_ps(dw[j], _mm512_set1_ps(x->d[b0 + j])), acc);
    }
    return acc;
}

static Q4R_TARGET void q4_0_rows_avx512(const qtile_t *t, const cols_t *cs)
{
    qrow_t x = qrow(t->a, 0);
    uint32_t blocks = t->k / 32, full_steps = blocks / 4;
    __m512 acc = _mm512_setzero_ps();
    q4r_ahead_t ahead = q4r_ahead(t);
    for (uint32_t step = 0; step < full_steps; step++) { /* hot */
        q4r_prefetch(&ahead, full_steps);
        acc = q4r_step(cs, &x, 4 * step, 4, acc);
    }
    if (blocks % 4)
        acc = q4r_step(cs, &x, 4 * full_steps, (int)(blocks % 4), acc);
    q4r_store(t, acc);
}

/* Lane c of the result: the sum of the 16 int32 of rows[c] (the batch-1 row kernels' rows
 * to "row per lane": a tree of unpacks and adds, then 128-bit lanes exchanged). */
static AI Q4R_TARGET __m512i rows_sum16(const __m512i rows[16])
{
    __m512i quad[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) { /* dword m of each 128-bit lane: a part of row 4q + m */
        const __m512i *r = rows + 4 * q;
        __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(r[0], r[1]),
                                     _mm512_unpackhi_epi32(r[0], r[1]));
        __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(r[2], r[3]),
                                     _mm512_unpackhi_epi32(r[2], r[3]));
        quad[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    }
    /* 128-bit lanes: [rows 0-3, 0-3, 4-7, 4-7] and [8-11, 8-11, 12-15, 12-15] */
    __m512i lo = _mm512_add_epi32(_mm512_shuffle_i64x2(quad[0], quad[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_i64x2(quad[0], quad[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512i hi = _mm512_add_epi32(_mm512_shuffle_i64x2(quad[2], quad[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_i64x2(quad[2], quad[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(_mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* ------------------------------------------------------------------------------------------
 * Q4_K at batch 1 on AVX-512 (+ GFNI): per weight row, as q4_0_rows_avx512 does for Q4_0,
 * with each row's scales applied in the row's own vector. Hot path (decode).
 *
 * A block's 128 code bytes are two 64-byte loads per row: qs[0..63] holds sub-blocks 0 and 2
 * in its low nibbles (values 0-31, 64-95), 1 and 3 in its high ones (32-63, 96-127); qs[64..]
 * the same for 4-7. So the activations are rearranged once per block for all 16 rows (a
 * vshufi64x2 each of four vectors), and per row the nibbles are split (an and, a GFNI affine)
 * into four vpdpbusd against them: 16 dwords each, 4 products per dword (|dword| <= 7620),
 * 128-bit lanes 0-1 one sub-block and 2-3 another. Packed to words in pairs (vpackssdw, no
 * saturation), every 128-bit lane holds two sub-blocks' words, four each, and one vpmaddwd
 * and one vpdpwssd against the row's scales laid out the same way (words; a vpshufb each of
 * the row's 8 scale bytes broadcast) leave 16 dwords whose sum is the row's s1. The 16 rows'
 * vectors are summed to "row per lane" (rows_sum16). The scales come from the block headers
 * of the 16 rows at once (rows16: lane c = row c's bytes), unpacked as bytes (6 bits, the
 * high 2 of sub-blocks 4-7 from the bytes 0-3) and written row by row to a small table that
 * each row broadcasts from; the mins the same way, as the word pairs of a vpdpwssd against
 * the activations' per-sub-block sums. s1 and s2 are the block's exact integers, then the
 * two fma per block in block order: the contract of cpu_quant.h, the same bits as the other
 * paths.
 *
 * The first version reduced each row's four vectors to its 8 sub-block sums (packs and
 * vpmaddwd by ones), transposed them 16 x 8 and multiplied by the scales there, with the
 * scales unpacked one dword vector per sub-block: per 16 rows a third more instructions, and
 * its tail (transpose and scales) alone cost a quarter of the block. bench/quant_matmul --hot 1
 * (one core, the weights in L2), the two alternating: 34-37 GB/s against 26-28.
 */

/* Row c's 8 scale bytes in the per-block table: the two vectors of vpunpck{l,h}dq of the
 * scale bytes 0-3 and 4-7 (lane c = row c), stored one after the other. */
static AI int q4kr_at(int c)
{
    return (c % 4 >= 2 ? 64 : 0) + 16 * (c / 4) + 8 * (c % 2);
}

/* word w of 128-bit lane L: sub-block (L < 2 ? lo : hi) + (w >= 4), as a vpshufb index (the
 * high byte zeroed) */
#define Q4KR_W(s) -128, (s)
#define Q4KR_INDEX(a, b, c, d)                                                                  \
    _mm512_set_epi8(Q4KR_W(d), Q4KR_W(d), Q4KR_W(d), Q4KR_W(d), Q4KR_W(c), Q4KR_W(c),           \
                    Q4KR_W(c), Q4KR_W(c), Q4KR_W(d), Q4KR_W(d), Q4KR_W(d), Q4KR_W(d),           \
                    Q4KR_W(c), Q4KR_W(c), Q4KR_W(c), Q4KR_W(c), Q4KR_W(b), Q4KR_W(b),           \
                    Q4KR_W(b), Q4KR_W(b), Q4KR_W(a), Q4KR_W(a), Q4KR_W(a), Q4KR_W(a),           \
                    Q4KR_W(b), Q4KR_W(b), Q4KR_W(b), Q4KR_W(b), Q4KR_W(a), Q4KR_W(a),           \
                    Q4KR_W(a), Q4KR_W(a))

static Q4R_TARGET void q4_k_rows_avx512(const qtile_t *t, const cols_t *cs)
{
    qrow_t x = qrow(t->a, 0);
    const int32_t *x_sum32 = (const int32_t *)x.sum32; /* int16 pairs: sub-blocks 2p, 2p + 1 */
    uint32_t blocks = t->k / 256;
    const __m512i low4 = _mm512_set1_epi8(0x0f), low6 = _mm512_set1_epi8(0x3f);
    const __m512i bits45 = _mm512_set1_epi8(0x30);
    const __m512i high_nibble = _mm512_set1_epi64(0x1020408000000000ll); /* see q4r_step */
    /* the scales for packs(t0, t1) (sub-blocks 0, 1 | 2, 3) and packs(t2, t3) (4, 5 | 6, 7) */
    const __m512i scale_03 = Q4KR_INDEX(0, 1, 2, 3), scale_47 = Q4KR_INDEX(4, 5, 6, 7);
    /* per dword of 4 bytes: words [byte 0, byte 1] and [byte 2, byte 3] (a 128-bit lane's
     * dwords at bytes 0, 4, 8, 12) */
    const __m512i pair_01 = _mm512_set4_epi32((int)0x800d800c, (int)0x80098008,
                                              (int)0x80058004, (int)0x80018000);
    const __m512i pair_23 = _mm512_set4_epi32((int)0x800f800e, (int)0x800b800a,
                                              (int)0x80078006, (int)0x80038002);
    _Alignas(64) uint8_t table[128];
    __m512 acc = _mm512_setzero_ps();
    q4r_ahead_t ahead = q4r_ahead(t);
    for (uint32_t b = 0; b < blocks; b++) { /* hot */
        q4r_prefetch(&ahead, blocks);
        const int8_t *xb = x.qs + 256 * b;
        __m512i x0 = _mm512_loadu_si512(xb), x1 = _mm512_loadu_si512(xb + 64);
        __m512i x2 = _mm512_loadu_si512(xb + 128), x3 = _mm512_loadu_si512(xb + 192);
        /* [values 0-31 | 64-95], [32-63 | 96-127], then the same + 128 */
        __m512i xs[4] = {_mm512_shuffle_i64x2(x0, x1, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_i64x2(x0, x1, _MM_SHUFFLE(3, 2, 3, 2)),
                         _mm512_shuffle_i64x2(x2, x3, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_i64x2(x2, x3, _MM_SHUFFLE(3, 2, 3, 2))};
        uint64_t at = (uint64_t)b * sizeof(nx_bq4_k_t);
        qv_i32 head[4]; /* lane c: row c's d | dmin, then its scale bytes 0-3, 4-7, 8-11 */
        rows16_avx512(cs, at, head);
        __m512i h1 = (__m512i)head[1], h2 = (__m512i)head[2], h3 = (__m512i)head[3];
        /* as nx__q4k_scale_min: sub-block j < 4 the low 6 bits of byte j (mins: j + 4); j >= 4
         * the low (mins: high) nibble of byte j + 4 and the top 2 bits of byte j - 4 (j) */
        __m512i scale_lo = _mm512_and_si512(h1, low6);
        __m512i scale_hi = _mm512_or_si512(_mm512_and_si512(h3, low4),
                                           _mm512_and_si512(_mm512_srli_epi32(h1, 2), bits45));
        __m512i min_lo = _mm512_and_si512(h2, low6);
        __m512i min_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(h3, 4), low4),
                                         _mm512_and_si512(_mm512_srli_epi32(h2, 2), bits45));
        _mm512_store_si512(table, _mm512_unpacklo_epi32(scale_lo, scale_hi));
        _mm512_store_si512(table + 64, _mm512_unpackhi_epi32(scale_lo, scale_hi));
        __m512i rows[16];
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++) {
            const uint8_t *row = col_at(cs, c, at + 16);
            __m512i a = _mm512_loadu_si512(row), cc = _mm512_loadu_si512(row + 64);
            __m512i zero = _mm512_setzero_si512();
            __m512i t0 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(a, low4), xs[0]);
            __m512i t1 = _mm512_dpbusd_epi32(
                zero, _mm512_gf2p8affine_epi64_epi8(a, high_nibble, 0), xs[1]);
            __m512i t2 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(cc, low4), xs[2]);
            __m512i t3 = _mm512_dpbusd_epi32(
                zero, _mm512_gf2p8affine_epi64_epi8(cc, high_nibble, 0), xs[3]);
            /* row c's 8 scales in every 64 bits (read back from the table just stored) */
            __m512i scales = _mm512_set1_epi64(*(const int64_t *)(table + q4kr_at(c)));
            rows[c] = _mm512_dpwssd_epi32(
                _mm512_madd_epi16(_mm512_packs_epi32(t0, t1),
                                  _mm512_shuffle_epi8(scales, scale_03)),
                _mm512_packs_epi32(t2, t3), _mm512_shuffle_epi8(scales, scale_47));
        }
        qv_i32 s1 = (qv_i32)rows_sum16(rows), s2 = {0};
        const __m512i min_words[4] = {_mm512_shuffle_epi8(min_lo, pair_01),
                                      _mm512_shuffle_epi8(min_lo, pair_23),
                                      _mm512_shuffle_epi8(min_hi, pair_01),
                                      _mm512_shuffle_epi8(min_hi, pair_23)};
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            s2 = dot2_avx512(s2, (qv_i32)min_words[p], splat_avx512(x_sum32[4 * b + p]));
        qv_f32 d = half_avx512(head[0]), dmin = half_avx512(head[0] >> 16);
        acc = (__m512)fmadd_avx512(__builtin_convertvector(s1, qv_f32), d * x.d[b], (qv_f32)acc);
        acc = (__m512)fnmadd_avx512(__builtin_convertvector(s2, qv_f32), dmin * x.d[b],
                                    (qv_f32)acc);
    }
    q4r_store(t, acc);
}

#undef Q4KR_INDEX
#undef Q4KR_W

/* ------------------------------------------------------------------------------------------
 * Q6_K at batch 1 on AVX-512 (+ GFNI): per weight row, no transpose of the codes. Hot path
 * (decode; the output projection of these GGUF files is Q6_K).
 *
 * Each half of a block (128 values) is one 64-byte load of ql and a 32-byte broadcast of its
 * qh: the low nibbles of ql are values 0-63 of the half in order, the high nibbles 64-127, and
 * byte l of qh holds the top 2 bits of values l, l + 32, l + 64, l + 96. A GFNI affine per
 * vector moves bits 2q, 2q + 1 (q differs between the two 256-bit halves: the matrix is per
 * qword) to bits 4, 5, so two codes vectors of 64 values cost an and, two affines and two ors,
 * and line up with the activations as stored. Four vpdpbusd then give 16 dwords per 64 values
 * whose 128-bit lane k is sub-block 4m + k. Packed to words (|lane| <= 4 x 63 x 127 fits) and
 * multiplied by the row's scales as words (vpmaddwd: the 16 int8 scales sign-extended, one
 * vpermw per 8 sub-blocks), with the activations' -32 x sum per sub-block added the same way
 * (as 4 x (-8 sum) against the 4 copies of each scale, vpdpwssd), every lane of the row's
 * vector is a piece of s1. A tree of unpacks and adds sums the 16 rows' vectors into one,
 * row per lane; then d (a gather) and the one fma per block, in block order: the exact
 * integer s1 and the float chain of cpu_quant.h, the same bits as the other paths. The next
 * tile is prefetched in order over the blocks (q4r_prefetch).
 */

/* word 8k + w of a 128-bit lane k: sub-block k (w < 4) or 4 + k, of 16 words [sub-block]
 * (the second half of a block: + 8) */
static const int16_t q6kr_index[2][32] = {
    {0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5,
     2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7},
    {8, 8, 8, 8, 12, 12, 12, 12, 9, 9, 9, 9, 13, 13, 13, 13,
     10, 10, 10, 10, 14, 14, 14, 14, 11, 11, 11, 11, 15, 15, 15, 15}};

static Q4R_TARGET void q6_k_rows_avx512(const qtile_t *t, const cols_t *cs)
{
    qrow_t x = qrow(t->a, 0);
    uint32_t blocks = t->k / 256;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i high_nibble = _mm512_set1_epi64(0x1020408000000000ll); /* see q4r_step */
    /* bits 2q, 2q + 1 to bits 4, 5 (rows 3 and 2 of the matrix): q 0 | 1 for the low
     * nibbles' values, q 2 | 3 for the high ones' */
    const __m512i top_lo = _mm512_set_epi64(0x04080000, 0x04080000, 0x04080000, 0x04080000,
                                            0x01020000, 0x01020000, 0x01020000, 0x01020000);
    const __m512i top_hi = _mm512_set_epi64(0x40800000, 0x40800000, 0x40800000, 0x40800000,
                                            0x10200000, 0x10200000, 0x10200000, 0x10200000);
    const __m512i index[2] = {_mm512_loadu_si512(q6kr_index[0]),
                              _mm512_loadu_si512(q6kr_index[1])};
    __m512 acc = _mm512_setzero_ps();
    q4r_ahead_t ahead = q4r_ahead(t);
    for (uint32_t b = 0; b < blocks; b++) { /* hot */
        q4r_prefetch(&ahead, blocks);
        const int8_t *xb = x.qs + 256 * b;
        __m512i xs[4];
#pragma GCC unroll 4
        for (int m = 0; m < 4; m++)
            xs[m] = _mm512_loadu_si512(xb + 64 * m);
        /* the activations' -32 x sum per sub-block / 4 as words, laid out as the scales */
        __m512i off = _mm512_srai_epi32(_mm512_loadu_si512(x.offset + 16 * b), 2);
        __m512i off16 = _mm512_castsi256_si512(_mm512_cvtepi32_epi16(off));
        __m512i offs[2] = {_mm512_permutexvar_epi16(index[0], off16),
                           _mm512_permutexvar_epi16(index[1], off16)};
        uint64_t at = (uint64_t)b * sizeof(nx_bq6_k_t);
        __m512i rows[16];
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++) {
            const uint8_t *row = col_at(cs, c, at);
            __m512i scales = _mm512_castsi256_si512(
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + 192))));
            __m512i sum = _mm512_setzero_si512();
#pragma GCC unroll 2
            for (int hf = 0; hf < 2; hf++) {
                __m512i ql = _mm512_loadu_si512(row + 64 * hf);
                __m512i qh = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)(row + 128 + 32 * hf)));
                __m512i lo = _mm512_or_si512(_mm512_and_si512(ql, low4),
                                             _mm512_gf2p8affine_epi64_epi8(qh, top_lo, 0));
                __m512i hi = _mm512_or_si512(_mm512_gf2p8affine_epi64_epi8(ql, high_nibble, 0),
                                             _mm512_gf2p8affine_epi64_epi8(qh, top_hi, 0));
                __m512i zero = _mm512_setzero_si512();
                __m512i codes_x = _mm512_packs_epi32(_mm512_dpbusd_epi32(zero, lo, xs[2 * hf]),
                                                     _mm512_dpbusd_epi32(zero, hi, xs[2 * hf + 1]));
                __m512i scale = _mm512_permutexvar_epi16(index[hf], scales);
                sum = _mm512_dpwssd_epi32(sum, codes_x, scale);
                sum = _mm512_dpwssd_epi32(sum, offs[hf], scale);
            }
            rows[c] = sum;
        }
        __m512i s1 = rows_sum16(rows);
        qv_f32 d = half_at_avx512(cs, at + 206, true);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), (__m512)(d * x.d[b]), acc);
    }
    q4r_store(t, acc);
}

/* AVX2: vpmaddubsw (u8 x s8 pairs into saturating int16) then vpmaddwd by ones: exact here,
 * as no pair of products passes 32767 (codes <= 63, or |Q8_0 code| <= 128 through the sign
 * trick, times |x| <= 127). Q8_0 stays signed: |w| times x with w's sign. */
#define QS_TARGET __attribute__((target("avx2,fma,f16c")))
#define QN(name) name##_avx2
#define QS_ROWS 2
#define QS_ROWS_K 2
#define QS_FUSED_ROWS 1
#define QS_Q8_UNSIGNED 0
#define QS_Q4K_HIGH16 0 /* vpmaddubsw would saturate 2 x 240 x 127 */

static AI QS_TARGET __m256i lo256(qv_i32 v)
{
    return (__m256i)__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
}

static AI QS_TARGET __m256i hi256(qv_i32 v)
{
    return (__m256i)__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}

static AI QS_TARGET qv_i32 join256(__m256i lo, __m256i hi)
{
    return __builtin_shufflevector((qv_i32x8)lo, (qv_i32x8)hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                   10, 11, 12, 13, 14, 15);
}

static AI QS_TARGET __m256i dot4_half(__m256i acc, __m256i w, __m256i x)
{
    __m256i pairs = _mm256_maddubs_epi16(w, x);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

static AI QS_TARGET qv_i32 dot4_avx2(qv_i32 acc, qv_i32 w, qv_i32 x)
{
    return join256(dot4_half(lo256(acc), lo256(w), lo256(x)),
                   dot4_half(hi256(acc), hi256(w), hi256(x)));
}

static AI QS_TARGET qv_i32 dot4_q8_avx2(qv_i32 acc, qv_i32 w, qv_i32 x)
{
    __m256i wl = lo256(w), wh = hi256(w), xl = lo256(x), xh = hi256(x);
    return join256(dot4_half(lo256(acc), _mm256_abs_epi8(wl), _mm256_sign_epi8(xl, wl)),
                   dot4_half(hi256(acc), _mm256_abs_epi8(wh), _mm256_sign_epi8(xh, wh)));
}

static AI QS_TARGET qv_i32 dot2_avx2(qv_i32 acc, qv_i32 w, qv_i32 x)
{
    return acc + join256(_mm256_madd_epi16(lo256(w), lo256(x)),
                         _mm256_madd_epi16(hi256(w), hi256(x)));
}

static AI QS_TARGET qv_f32 fmadd_avx2(qv_f32 a, qv_f32 b, qv_f32 c)
{
    __m256 lo = _mm256_fmadd_ps((__m256)lo256((qv_i32)a), (__m256)lo256((qv_i32)b),
                                (__m256)lo256((qv_i32)c));
    __m256 hi = _mm256_fmadd_ps((__m256)hi256((qv_i32)a), (__m256)hi256((qv_i32)b),
                                (__m256)hi256((qv_i32)c));
    return (qv_f32)join256((__m256i)lo, (__m256i)hi);
}

static AI QS_TARGET qv_f32 fnmadd_avx2(qv_f32 a, qv_f32 b, qv_f32 c)
{
    __m256 lo = _mm256_fnmadd_ps((__m256)lo256((qv_i32)a), (__m256)lo256((qv_i32)b),
                                 (__m256)lo256((qv_i32)c));
    __m256 hi = _mm256_fnmadd_ps((__m256)hi256((qv_i32)a), (__m256)hi256((qv_i32)b),
                                 (__m256)hi256((qv_i32)c));
    return (qv_f32)join256((__m256i)lo, (__m256i)hi);
}

static AI QS_TARGET qv_i32 gather_avx2(const uint8_t *base, qv_i32 index)
{
    return join256(_mm256_i32gather_epi32((const int *)base, lo256(index), 1),
                   _mm256_i32gather_epi32((const int *)base, hi256(index), 1));
}

static AI QS_TARGET __m256i lookup8x2(__m256i lo, __m256i hi, __m256i index)
{
    __m256i from_lo = _mm256_permutevar8x32_epi32(lo, index);
    __m256i from_hi = _mm256_permutevar8x32_epi32(hi, index);
    __m256i high = _mm256_slli_epi32(index, 28); /* bit 3 of the index to the sign bit */
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(from_lo),
                                                _mm256_castsi256_ps(from_hi),
                                                _mm256_castsi256_ps(high)));
}

static AI QS_TARGET qv_i32 lookup16_avx2(qv_i32 table, qv_i32 index)
{
    return join256(lookup8x2(lo256(table), hi256(table), lo256(index)),
                   lookup8x2(lo256(table), hi256(table), hi256(index)));
}

static AI QS_TARGET qv_f32 half_avx2(qv_i32 v)
{
    /* packus interleaves 128-bit lanes: [0-3, 8-11 | 4-7, 12-15]; put them back in order */
    __m256i words = _mm256_packus_epi32(_mm256_and_si256(lo256(v), _mm256_set1_epi32(0xffff)),
                                        _mm256_and_si256(hi256(v), _mm256_set1_epi32(0xffff)));
    words = _mm256_permute4x64_epi64(words, 0xd8);
    return (qv_f32)join256((__m256i)_mm256_cvtph_ps(_mm256_castsi256_si128(words)),
                           (__m256i)_mm256_cvtph_ps(_mm256_extracti128_si256(words, 1)));
}

#include "cpu_quant_simd.h"

/* ------------------------------------------------------------------------------------------
 * AVX2: per weight row, 8 rows at a time, every batch size. Hot path (decode and prefill on
 * CPUs without AVX-512, e.g. Zen 2/3 and most laptops).
 *
 * The tile kernels above decode 16 rows into "row per lane" vectors, a transpose per 64 values,
 * which on AVX2 (no vpdpbusd, 16 registers) costs several times the bytes it reads: 4B Q4_0 and
 * Q4_K decoded at 3.8 GB/s on two Zen 3 cores, a seventh of the memory. Here each row's block
 * is used as stored: its codes split into nibbles (and the Q6_K top bits) lined up with the
 * activations, vpmaddubsw against them (unsigned code x signed activation: no pair passes
 * 32767, see each kernel) and vpmaddwd by ones or by the sub-block scales, one vector of int32
 * per row and block. Only those sums are transposed: a tree of vphaddd over 8 rows makes lane r
 * row r's exact block integer (r2_sum8), and the 8 rows then take the block's fma, or two for
 * Q4_K, in block order: the contract of cpu_quant.h, the same bits as the other paths. The
 * block scales of the 8 rows come by one gather. A tile is two groups of 8 rows, each streamed
 * front to back; the next tile is prefetched in order over both (q4r_prefetch). Batches go
 * through the same kernels, R2_BATCH rows per pass over the tile (r2_rows), each block of 8
 * rows decoded once per pass: 4B shapes on two Zen 3 cores (quant_matmul, GOP/s, the tile
 * kernels -> these) batch 8 Q4_K 12.7 -> 121-172, Q4_0 12.2 -> 112-138; batch 128 Q4_K 29 ->
 * 165-190.
 */
#define R2_TARGET __attribute__((target("avx2,fma,f16c")))

/* r2_sum8 of v[0..7] from h[k] = vphaddd(v[2k], v[2k + 1]): the rows can be summed in pairs
 * as they are made, so that the 8 are never live at once (AVX2 has 16 registers; the
 * K-quants' activations and constants hold the rest). */
static AI R2_TARGET __m256i r2_sum8_pairs(const __m256i h[4])
{
    __m256i q0 = _mm256_hadd_epi32(h[0], h[1]), q1 = _mm256_hadd_epi32(h[2], h[3]);
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                            _mm256_permute2x128_si256(q0, q1, 0x31));
}

/* Lane r: the sum of the 8 int32 of v[r] (vphaddd pairs rows, 128-bit halves meet last). */
static AI R2_TARGET __m256i r2_sum8(const __m256i v[8])
{
    const __m256i h[4] = {_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]),
                          _mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7])};
    return r2_sum8_pairs(h);
}

/* The fp16 at byte `at` (high: at + 2) of rows 8g .. 8g + 7, as floats: one gather of the 4
 * bytes there, the halves packed to 8 words. */
static AI R2_TARGET __m256 r2_halves(const cols_t *cs, int g, uint64_t at, bool high)
{
    const __m256i index = _mm256_loadu_si256((const __m256i *)((const int32_t *)&cs->index + 8 * g));
    __m256i v = _mm256_i32gather_epi32((const int *)(cs->g[0] + at), index, 1);
    const __m256i low_words = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1,
                                               -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1,
                                               -1, -1, -1, -1);
    if (high)
        v = _mm256_srli_epi32(v, 16);
    v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, low_words), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(v));
}

/* Row i's columns 8g .. 8g + 7 of the tile from acc (lane r: column 8g + r). */
static AI R2_TARGET void r2_store(const qtile_t *t, uint32_t i, int g, __m256 acc)
{
    float out[8];
    _mm256_storeu_ps(out, acc);
    for (uint32_t c = 8 * (uint32_t)g; c < t->count && c < 8 * (uint32_t)g + 8; c++)
        store_out(t, i, c, out[c - 8 * (uint32_t)g]);
}

/* [low nibbles | high nibbles] of 16 bytes: Q4_0's values 0-15 and 16-31 */
static AI R2_TARGET __m256i r2_nibbles(const uint8_t *p)
{
    __m128i q = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

/* sum + the 32 codes (0-63) against the 32 activations at xb, by vpmaddubsw, times their
 * scale words by vpmaddwd: the K-quants' step per 32 values. */
static AI R2_TARGET __m256i r2_scaled_dot(__m256i sum, __m256i codes, __m256i scale,
                                          const int8_t *xb)
{
    __m256i p = _mm256_maddubs_epi16(codes, _mm256_loadu_si256((const __m256i *)xb));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(p, scale));
}

/* Batch rows are taken R2_BATCH at a time, each group of 8 weight rows going through the
 * blocks once for all of them: the 8 rows' block is read from memory and decoded once, and
 * the accumulators stay in L1. 16 rather than 8: batch 128 about 10% faster (fewer decodes),
 * within this VM's noise at 32. */
#define R2_BATCH 16

/* One block of weight rows 8g .. 8g + 7 (at byte `at` of each row, block b) against each of
 * `batch` activation rows xs, into acc[i]. The 8 rows' block is decoded first (codes lined up
 * with the activations, scales broadcast: in registers for Q8_0 and Q4_0, in a local array in
 * L1 for the K-quants, whose batch of one uses each row's block as loaded instead) and taken
 * from there for every activation row; the block scales come by one gather for all of them.
 * `q8` picks Q8_0 over Q4_0 in r2_block_32. */
typedef void (*r2_block_t)(const cols_t *cs, const qrow_t *xs, uint32_t batch, uint32_t b,
                           uint64_t at, int g, __m256 *acc, bool q8);

static AI R2_TARGET void r2_block_32(const cols_t *cs, const qrow_t *xs, uint32_t batch,
                                     uint32_t b, uint64_t at, int g, __m256 *acc, bool q8);
static AI R2_TARGET void r2_pair_q4_0(const cols_t *cs, const qrow_t *xs, uint32_t batch,
                                      uint32_t pair, uint64_t at, int g, __m256 *acc, bool unused);

/* The loops every kernel below shares (block a constant after inlining): chunks of batch rows,
 * the two groups of 8 weight rows, the blocks in order (the next tile prefetched over them,
 * first chunk only), each batch row's accumulator. */
static AI R2_TARGET void r2_rows(const qtile_t *t, const cols_t *cs, uint32_t block_values,
                                 uint64_t block_bytes, r2_block_t block, bool q8)
{
    /* Q4_0 takes two blocks a step (r2_pair_q4_0); an odd last one goes alone */
    bool pairs = block == r2_pair_q4_0, odd = pairs && t->k / 32 % 2;
    uint32_t blocks = t->k / block_values;
    q4r_ahead_t ahead = q4r_ahead(t);
    for (uint32_t i0 = 0; i0 < t->n; i0 += R2_BATCH) {
        uint32_t batch = t->n - i0 < R2_BATCH ? t->n - i0 : R2_BATCH;
        qrow_t xs[R2_BATCH];
        for (uint32_t i = 0; i < batch; i++)
            xs[i] = qrow(t->a, i0 + i);
        for (int g = 0; g < 2; g++) {
            __m256 acc[R2_BATCH];
            for (uint32_t i = 0; i < batch; i++)
                acc[i] = _mm256_setzero_ps();
            for (uint32_t b = 0; b < blocks; b++) { /* hot */
                if (i0 == 0)
                    q4r_prefetch(&ahead, 2 * blocks); /* step g x blocks + b */
                block(cs, xs, batch, b, b * block_bytes, g, acc, q8);
            }
            if (odd)
                r2_block_32(cs, xs, batch, 2 * blocks, blocks * block_bytes, g, acc, false);
            for (uint32_t i = 0; i < batch; i++)
                r2_store(t, i0 + i, g, acc[i]);
        }
    }
}

/* Q4_0's two blocks b, b + 1 of 8 rows into acc: v[r] holds row r's block b in its low 128-bit
 * lane and b + 1 in its high one, so one vphaddd tree and two lane exchanges make both blocks'
 * integers (plus 8 x the activations' -sums), then the two block fmas in order. */
static AI R2_TARGET __m256 r2_pair_acc(const __m256i v[8], const qrow_t *x, uint32_t b,
                                       __m256 d0, __m256 d1, __m256 acc)
{
    __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    __m256i s0 = _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                                  _mm256_set1_epi32(8 * x->offset[b]));
    __m256i s1 = _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x31),
                                  _mm256_set1_epi32(8 * x->offset[b + 1]));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(d0, _mm256_set1_ps(x->d[b])), acc);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1),
                           _mm256_mul_ps(d1, _mm256_set1_ps(x->d[b + 1])), acc);
}

/* Q8_0 and Q4_0: a block of 32 per row; the codes against the activations by vpmaddubsw
 * (Q4_0: code 0-15 x |x| <= 127; Q8_0: |w| <= 128 x x with w's sign, |x| <= 127: a pair at
 * most 32512), summed by vpmaddwd by ones. Q4_0's codes are nibble - 8: 8 x the block's
 * -sum(x) more. Decoded for a batch: Q4_0's nibbles, Q8_0's codes and their magnitudes. */
static AI R2_TARGET void r2_block_32(const cols_t *cs, const qrow_t *xs, uint32_t batch,
                                     uint32_t b, uint64_t at, int g, __m256 *acc, bool q8)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 d = r2_halves(cs, g, at, false);
    __m256i codes[8], mags[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        const uint8_t *row = col_at(cs, 8 * g + r, at) + 2;
        codes[r] = q8 ? _mm256_loadu_si256((const __m256i *)row) : r2_nibbles(row);
        if (q8)
            mags[r] = _mm256_abs_epi8(codes[r]);
    }
    for (uint32_t i = 0; i < batch; i++) {
        const qrow_t *x = &xs[i];
        __m256i xv = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * b));
        __m256i v[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            __m256i p = q8 ? _mm256_maddubs_epi16(mags[r], _mm256_sign_epi8(xv, codes[r]))
                           : _mm256_maddubs_epi16(codes[r], xv);
            v[r] = _mm256_madd_epi16(p, ones);
        }
        __m256i isum = r2_sum8(v);
        if (!q8)
            isum = _mm256_add_epi32(isum, _mm256_set1_epi32(8 * x->offset[b]));
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                 _mm256_mul_ps(d, _mm256_set1_ps(x->d[b])), acc[i]);
    }
}


/* Q4_0, two blocks (b = 2 pair, b + 1) a step: each row's 32 code bytes as [block b | b + 1]
 * per nibble half, against the activations rearranged the same way once for the 8 rows, the
 * low and high halves' products added as words (at most 2 x 2 x 15 x 127); the vphaddd tree
 * then leaves block b in the low 128-bit lanes and b + 1 in the high ones, so one tree and two
 * lane exchanges serve both blocks (r2_sum8 per block took twice that). */
static AI R2_TARGET void r2_pair_q4_0(const cols_t *cs, const qrow_t *xs, uint32_t batch,
                                      uint32_t pair, uint64_t at, int g, __m256 *acc, bool unused)
{
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
    uint32_t b = 2 * pair;
    uint64_t at1 = at + sizeof(nx_bq4_0_t);
    __m256 d0 = r2_halves(cs, g, at, false), d1 = r2_halves(cs, g, at1, false);
    __m256i codes[8][2]; /* [row][low | high nibbles], each [block b | b + 1] */
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        __m256i q = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(col_at(cs, 8 * g + r, at1) + 2)),
                                     _mm_loadu_si128((const __m128i *)(col_at(cs, 8 * g + r, at) + 2)));
        codes[r][0] = _mm256_and_si256(q, low4);
        codes[r][1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    }
    for (uint32_t i = 0; i < batch; i++) {
        const qrow_t *x = &xs[i];
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * b));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * b + 32));
        __m256i xlo = _mm256_permute2x128_si256(x0, x1, 0x20); /* values 0-15 of b | of b + 1 */
        __m256i xhi = _mm256_permute2x128_si256(x0, x1, 0x31); /* 16-31 */
        __m256i v[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++)
            v[r] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(codes[r][0], xlo),
                                                      _mm256_maddubs_epi16(codes[r][1], xhi)),
                                     ones);
        acc[i] = r2_pair_acc(v, x, b, d0, d1, acc[i]);
    }
}


/* Q4_K: per 64 values, 32 code bytes whose low nibbles are sub-block 2j and high ones 2j + 1,
 * each against its 32 activations by vpmaddubsw (code 0-15: a pair at most 3810), then
 * vpmaddwd by the sub-block's scale (6 bits) broadcast: lane sums of s1. The mins' term s2 is
 * one vpmaddwd of the 8 mins and the activations' sums of 32. */

/* A block's sub-block scales as words in both 128-bit lanes, and its mins as words. */
static AI R2_TARGET __m256i q4k_scales8_avx2(const uint8_t *blk, __m128i *mins)
{
    uint32_t u[3]; /* the 12 scale bytes (see nx__q4k_scale_min), each word loaded as such */
    memcpy(&u[0], blk + 4, 4);
    memcpy(&u[1], blk + 8, 4);
    memcpy(&u[2], blk + 12, 4);
    uint64_t sc = (u[0] & 0x3f3f3f3fu) |
                  (uint64_t)((u[2] & 0x0f0f0f0fu) | (u[0] >> 6 & 0x03030303u) << 4) << 32;
    uint64_t mn = (u[1] & 0x3f3f3f3fu) |
                  (uint64_t)((u[2] >> 4 & 0x0f0f0f0fu) | (u[1] >> 6 & 0x03030303u) << 4) << 32;
    *mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn));
    return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
}

/* Sub-block s's codes (s = 2j: low nibbles of the 32 bytes at 16 + 32j, s = 2j + 1: high) and
 * its scale broadcast from q4k_scales_avx2's vector. */
static AI R2_TARGET __m256i q4k_codes_avx2(const uint8_t *blk, int s)
{
    __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * (s / 2)));
    return _mm256_and_si256(s % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0f));
}

static AI R2_TARGET __m256i q4k_scale_avx2(__m256i scales, int s)
{
    return _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0100 + 0x0202 * s)));
}

/* Q4_K's 8 rows of a block decoded for a batch. */
typedef struct q4k_dec {
    __m256i codes[8][8], scales[8][8]; /* [row][sub-block] */
    __m128i mins[8];
} q4k_dec_t;

static AI R2_TARGET void q4k_block_avx2(const cols_t *cs, const qrow_t *xs, uint32_t batch,
                                        uint32_t b, uint64_t at, int g, __m256 *acc, bool unused)
{
    __m256 d = r2_halves(cs, g, at, false), dmin = r2_halves(cs, g, at, true);
    q4k_dec_t dec;
    if (batch > 1)
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = col_at(cs, 8 * g + r, at);
            __m256i scales = q4k_scales8_avx2(blk, &dec.mins[r]);
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                dec.codes[r][s] = q4k_codes_avx2(blk, s);
                dec.scales[r][s] = q4k_scale_avx2(scales, s);
            }
        }
    for (uint32_t i = 0; i < batch; i++) {
        const qrow_t *x = &xs[i];
        const int8_t *xb = x->qs + 256 * b;
        __m128i sum32 = _mm_loadu_si128((const __m128i *)(x->sum32 + 8 * b));
        __m256i v1[8], v2[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = col_at(cs, 8 * g + r, at);
            __m128i mins;
            __m256i scales = batch > 1 ? _mm256_setzero_si256() : q4k_scales8_avx2(blk, &mins);
            if (batch > 1)
                mins = dec.mins[r];
            __m256i sum = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                __m256i codes = batch > 1 ? dec.codes[r][s] : q4k_codes_avx2(blk, s);
                __m256i scale = batch > 1 ? dec.scales[r][s] : q4k_scale_avx2(scales, s);
                sum = r2_scaled_dot(sum, codes, scale, xb + 32 * s);
            }
            v1[r] = sum;
            v2[r] = _mm256_zextsi128_si256(_mm_madd_epi16(mins, sum32));
        }
        __m256i s1 = r2_sum8(v1), s2 = r2_sum8(v2);
        __m256 dx = _mm256_set1_ps(x->d[b]);
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(d, dx), acc[i]);
        acc[i] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(s2), _mm256_mul_ps(dmin, dx), acc[i]);
    }
}


/* Q6_K: per half of a block (128 values) ql's two 32-byte rows and qh's 32 bytes make four
 * vectors of 32 codes (0-63) in the activations' order: ql0 & 15, ql1 & 15, ql0 >> 4,
 * ql1 >> 4, each or'ed with its 2 bits of qh moved to bits 4-5. vpmaddubsw against the
 * activations (a pair at most 2 x 63 x 127 = 16002), then vpmaddwd by the scales of the two
 * sub-blocks of 16 the vector holds (one per 128-bit lane). The codes are code - 32: the
 * activations' offsets (-32 x sum of 16) times the scales, added as 32 x (scale . offset / 32)
 * in words. */

/* Codes 32k .. 32k + 31 of a block (k = 4h + q: half h, quarter q). */
static AI R2_TARGET __m256i q6k_codes_avx2(const uint8_t *blk, int k)
{
    const __m256i low4 = _mm256_set1_epi8(0x0f), top2 = _mm256_set1_epi8(0x30);
    int h = k / 4, q = k % 4;
    __m256i ql = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32 * (q & 1)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
    __m256i low = _mm256_and_si256(q >= 2 ? _mm256_srli_epi16(ql, 4) : ql, low4);
    /* bits 2q, 2q + 1 of qh to bits 4, 5 */
    __m256i top = q == 0 ? _mm256_slli_epi16(qh, 4)
                  : q == 1 ? _mm256_slli_epi16(qh, 2)
                  : q == 2 ? qh
                           : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(low, _mm256_and_si256(top, top2));
}

/* The scales of sub-blocks 2k (low 128-bit lane) and 2k + 1 (high) as words, from the 16
 * scales as words. */
static AI R2_TARGET __m256i q6k_scale_avx2(__m256i sc16, int k)
{
    /* scales 8h .. 8h + 7 (h = k / 4) in both 128-bit lanes; two calls, as the selector
     * must be an immediate even where -O1 does not fold k */
    __m256i half = k >= 4 ? _mm256_permute4x64_epi64(sc16, 0xee)
                          : _mm256_permute4x64_epi64(sc16, 0x44);
    int q = k % 4;
    __m256i pick = _mm256_add_epi8(_mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,
                                                    1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
                                                    2, 3),
                                   _mm256_set1_epi8((char)(4 * q)));
    return _mm256_shuffle_epi8(half, pick);
}

static AI R2_TARGET __m256i q6k_sc16_avx2(const uint8_t *blk)
{
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
}

/* Q6_K's 8 rows of a block decoded for a batch. */
typedef struct q6k_dec {
    __m256i codes[8][8], scales[8][8]; /* [row][32 values] */
    __m256i sc16[8];
} q6k_dec_t;

static AI R2_TARGET void q6k_block_avx2(const cols_t *cs, const qrow_t *xs, uint32_t batch,
                                        uint32_t b, uint64_t at, int g, __m256 *acc, bool unused)
{
    __m256 d = r2_halves(cs, g, at + 206, true); /* d is the block's last 2 bytes */
    q6k_dec_t dec;
    if (batch > 1)
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = col_at(cs, 8 * g + r, at);
            dec.sc16[r] = q6k_sc16_avx2(blk);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                dec.codes[r][k] = q6k_codes_avx2(blk, k);
                dec.scales[r][k] = q6k_scale_avx2(dec.sc16[r], k);
            }
        }
    for (uint32_t i = 0; i < batch; i++) {
        const qrow_t *x = &xs[i];
        const int8_t *xb = x->qs + 256 * b;
        /* the 16 offsets / 32 as words, in order (packs interleaves 128-bit lanes) */
        const __m256i *o = (const __m256i *)(x->offset + 16 * b);
        __m256i offset = _mm256_permute4x64_epi64(
            _mm256_packs_epi32(_mm256_srai_epi32(_mm256_loadu_si256(o), 5),
                               _mm256_srai_epi32(_mm256_loadu_si256(o + 1), 5)),
            0xd8);
        __m256i v[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = col_at(cs, 8 * g + r, at);
            __m256i sc16 = batch > 1 ? dec.sc16[r] : q6k_sc16_avx2(blk);
            __m256i sum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, offset), 5);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m256i codes = batch > 1 ? dec.codes[r][k] : q6k_codes_avx2(blk, k);
                __m256i scale = batch > 1 ? dec.scales[r][k] : q6k_scale_avx2(sc16, k);
                sum = r2_scaled_dot(sum, codes, scale, xb + 32 * k);
            }
            v[r] = sum;
        }
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(r2_sum8(v)),
                                 _mm256_mul_ps(d, _mm256_set1_ps(x->d[b])), acc[i]);
    }
}

/* Batch 1: the same arithmetic as the kernels above for a batch of one (the same bits), with
 * each row's block used as loaded and its address kept as base + stride x {0, 1, 2, 3}: 8
 * rows in 4 registers (r2_row). Through r2_rows GCC kept the rows' addresses on the stack and
 * the decode arrays' frame (a Q4_0 step of about 370 instructions held 119 scalar moves) and
 * took the block scales by gathers, which wait on all 8 rows' lines; here they come by word
 * loads. Zen 3, 2 cores, 4b shapes from L2 (quant_matmul --hot 1), GB/s: Q8_0 31-32 -> 54-55,
 * Q4_0 20 -> 37-39, Q4_K 28-29 -> 33-34, Q6_K 34 -> 35-37 (the memory's streaming read: 30). */
typedef uint16_t v8_u16 __attribute__((vector_size(16)));

static AI const uint8_t *r2_row(const uint8_t *p0, const uint8_t *p4, uint64_t rs,
                                uint64_t rs3, int r)
{
    const uint8_t *p = r < 4 ? p0 : p4; /* rows 0-3 of the group from p0, 4-7 from p4 */
    return r % 4 == 3 ? p + rs3 : p + (uint64_t)(r % 4) * rs;
}

/* The fp16 at byte `off` of the 8 rows' blocks, as floats (elements, not an immediate's
 * lanes: the -O1 sanitizer builds do not fold them). */
static AI R2_TARGET __m256 r2_words(const uint8_t *p0, const uint8_t *p4, uint64_t rs,
                                    uint64_t rs3, uint32_t off)
{
    v8_u16 h = {0};
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        uint16_t w;
        memcpy(&w, r2_row(p0, p4, rs, rs3, r) + off, 2);
        h[r] = w;
    }
    return _mm256_cvtph_ps((__m128i)h);
}

typedef __m256 (*r2_one_t)(const uint8_t *p0, const uint8_t *p4, uint64_t rs, uint64_t rs3,
                           const qrow_t *x, uint32_t b, __m256 acc);

/* r2_block_32 with q8 for one activation row */
static AI R2_TARGET __m256 q8_0_one(const uint8_t *p0, const uint8_t *p4, uint64_t rs,
                                    uint64_t rs3, const qrow_t *x, uint32_t b, __m256 acc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i xv = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * b));
    __m256i v[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(r2_row(p0, p4, rs, rs3, r) + 2));
        v[r] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w)), ones);
    }
    __m256 d = r2_words(p0, p4, rs, rs3, 0);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(r2_sum8(v)),
                           _mm256_mul_ps(d, _mm256_set1_ps(x->d[b])), acc);
}

/* r2_pair_q4_0 for one activation row: blocks 2 pair and 2 pair + 1 */
static AI R2_TARGET __m256 q4_0_one(const uint8_t *p0, const uint8_t *p4, uint64_t rs,
                                    uint64_t rs3, const qrow_t *x, uint32_t pair, __m256 acc)
{
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
    uint32_t b = 2 * pair;
    __m256i x0 = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * b));
    __m256i x1 = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * b + 32));
    __m256i xlo = _mm256_permute2x128_si256(x0, x1, 0x20), xhi = _mm256_permute2x128_si256(x0, x1, 0x31);
    __m256i v[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        const uint8_t *row = r2_row(p0, p4, rs, rs3, r);
        __m256i q = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(row + sizeof(nx_bq4_0_t) + 2)),
                                     _mm_loadu_si128((const __m128i *)(row + 2)));
        __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        v[r] = _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi)), ones);
    }
    return r2_pair_acc(v, x, b, r2_words(p0, p4, rs, rs3, 0),
                       r2_words(p0, p4, rs, rs3, sizeof(nx_bq4_0_t)), acc);
}

/* Row blk's Q4_K block against xb: the scaled codes' sum (8 lanes) and the mins' (4 lanes). */
static AI R2_TARGET __m256i q4_k_row(const uint8_t *blk, const int8_t *xb, __m128i sum32,
                                     __m128i *min_sum)
{
    __m128i mins;
    __m256i scales = q4k_scales8_avx2(blk, &mins), sum = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int s = 0; s < 8; s++)
        sum = r2_scaled_dot(sum, q4k_codes_avx2(blk, s), q4k_scale_avx2(scales, s), xb + 32 * s);
    *min_sum = _mm_madd_epi16(mins, sum32);
    return sum;
}

/* q4k_block_avx2 for one activation row. The mins' sums, 4 lanes a row, go two rows to a
 * vector: three vphaddd leave row r's total in lane (r % 2) x 4 + r / 2, one vpermd puts it in
 * lane r (r2_sum8 of the zero-extended rows made the same integers with twice the work). */
static AI R2_TARGET __m256 q4_k_one(const uint8_t *p0, const uint8_t *p4, uint64_t rs,
                                    uint64_t rs3, const qrow_t *x, uint32_t b, __m256 acc)
{
    const int8_t *xb = x->qs + 256 * b;
    __m128i sum32 = _mm_loadu_si128((const __m128i *)(x->sum32 + 8 * b));
    __m256i h1[4], h2[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        __m128i m0, m1;
        __m256i v0 = q4_k_row(r2_row(p0, p4, rs, rs3, 2 * k), xb, sum32, &m0);
        __m256i v1 = q4_k_row(r2_row(p0, p4, rs, rs3, 2 * k + 1), xb, sum32, &m1);
        h1[k] = _mm256_hadd_epi32(v0, v1);
        h2[k] = _mm256_set_m128i(m1, m0);
    }
    __m256i s1 = r2_sum8_pairs(h1);
    __m256i s2 = _mm256_hadd_epi32(_mm256_hadd_epi32(h2[0], h2[1]), _mm256_hadd_epi32(h2[2], h2[3]));
    s2 = _mm256_permutevar8x32_epi32(s2, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    __m256 dx = _mm256_set1_ps(x->d[b]);
    __m256 d = r2_words(p0, p4, rs, rs3, 0), dmin = r2_words(p0, p4, rs, rs3, 2);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(d, dx), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(s2), _mm256_mul_ps(dmin, dx), acc);
}

/* q6k_block_avx2 for one activation row */
static AI R2_TARGET __m256 q6_k_one(const uint8_t *p0, const uint8_t *p4, uint64_t rs,
                                    uint64_t rs3, const qrow_t *x, uint32_t b, __m256 acc)
{
    const int8_t *xb = x->qs + 256 * b;
    const __m256i *o = (const __m256i *)(x->offset + 16 * b); /* see q6k_block_avx2 */
    __m256i offset = _mm256_permute4x64_epi64(
        _mm256_packs_epi32(_mm256_srai_epi32(_mm256_loadu_si256(o), 5),
                           _mm256_srai_epi32(_mm256_loadu_si256(o + 1), 5)),
        0xd8);
    __m256i h[4], v[2];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        const uint8_t *blk = r2_row(p0, p4, rs, rs3, r);
        __m256i sc16 = q6k_sc16_avx2(blk);
        __m256i sum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, offset), 5);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            sum = r2_scaled_dot(sum, q6k_codes_avx2(blk, k), q6k_scale_avx2(sc16, k),
                                xb + 32 * k);
        v[r % 2] = sum;
        if (r % 2)
            h[r / 2] = _mm256_hadd_epi32(v[0], v[1]);
    }
    __m256 d = r2_words(p0, p4, rs, rs3, sizeof(nx_bq6_k_t) - 2); /* the block's last 2 bytes */
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(r2_sum8_pairs(h)),
                           _mm256_mul_ps(d, _mm256_set1_ps(x->d[b])), acc);
}

/* The two groups of 8 rows, each front to back in steps of `step_values` (Q4_0: a pair of
 * blocks, an odd last block by r2_block_32), the next tile prefetched as r2_rows does. */
static AI R2_TARGET void r2_row1(const qtile_t *t, const cols_t *cs, uint32_t step_values,
                                 uint32_t step_bytes, r2_one_t one)
{
    const qrow_t x = qrow(t->a, 0);
    uint32_t steps = t->k / step_values;
    uint64_t rs = cs->rs, rs3 = cs->rs3;
    q4r_ahead_t ahead = q4r_ahead(t);
    for (int g = 0; g < 2; g++) {
        const uint8_t *p0 = cs->g[2 * g], *p4 = cs->g[2 * g + 1];
        __m256 acc = _mm256_setzero_ps();
        for (uint32_t b = 0; b < steps; b++, p0 += step_bytes, p4 += step_bytes) { /* hot */
            q4r_prefetch(&ahead, 2 * steps);
            acc = one(p0, p4, rs, rs3, &x, b, acc);
        }
        if (one == q4_0_one && t->k / 32 % 2)
            r2_block_32(cs, &x, 1, 2 * steps, (uint64_t)steps * step_bytes, g, &acc, false);
        r2_store(t, 0, g, acc);
    }
}

/* Batch 1 by r2_row1, larger batches by r2_rows (both loops inline, `one` and `block`
 * constants). */
static AI R2_TARGET void r2_kernel(const qtile_t *t, const cols_t *cs, uint32_t step_values,
                                   uint32_t step_bytes, r2_one_t one, r2_block_t block, bool q8)
{
    if (t->n == 1)
        r2_row1(t, cs, step_values, step_bytes, one);
    else
        r2_rows(t, cs, step_values, step_bytes, block, q8);
}

static R2_TARGET void q8_0_rows_avx2(const qtile_t *t, const cols_t *cs)
{
    r2_kernel(t, cs, 32, sizeof(nx_bq8_0_t), q8_0_one, r2_block_32, true);
}

static R2_TARGET void q4_0_rows_avx2(const qtile_t *t, const cols_t *cs)
{
    r2_kernel(t, cs, 64, 2 * sizeof(nx_bq4_0_t), q4_0_one, r2_pair_q4_0, false);
}

static R2_TARGET void q4_k_rows_avx2(const qtile_t *t, const cols_t *cs)
{
    r2_kernel(t, cs, 256, sizeof(nx_bq4_k_t), q4_k_one, q4k_block_avx2, false);
}

static R2_TARGET void q6_k_rows_avx2(const qtile_t *t, const cols_t *cs)
{
    r2_kernel(t, cs, 256, sizeof(nx_bq6_k_t), q6_k_one, q6k_block_avx2, false);
}

/* ------------------------------------------------------------------------------------------
 * Choosing the path
 */
typedef void (*tile_fn)(const qtile_t *);

static nx__q_path_t chosen_path = (nx__q_path_t)-1;

static bool cpu_has(nx__q_path_t path)
{
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
    switch (path) {
    case NX__Q_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    case NX__Q_AVX2: return avx2;
    default: return true;
    }
}

/* GFNI (Ice Lake and later, Zen 4): q4_0_rows_avx512 splits nibbles with it; AVX-512 CPUs
 * without it (Skylake-SP, Cascade Lake) keep the tile kernel for Q4_0 at batch 1. */
static bool cpu_has_gfni(void)
{
    static int has = -1;
    int known = __atomic_load_n(&has, __ATOMIC_RELAXED);
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("gfni") ? 1 : 0;
        __atomic_store_n(&has, known, __ATOMIC_RELAXED);
    }
    return known;
}

nx__q_path_t nx__q_path(void)
{
    int path = __atomic_load_n(&chosen_path, __ATOMIC_RELAXED);
    if (path < 0) { /* every thread that gets here picks the same */
        const char *force = getenv("NEXUS_CPU_KERNELS"); /* "plain", "avx2": test those */
        path = force && strcmp(force, "plain") == 0  ? NX__Q_PLAIN
               : force && strcmp(force, "avx2") == 0 ? NX__Q_AVX2
                                                     : NX__Q_AVX512;
        while (path > NX__Q_PLAIN && !cpu_has((nx__q_path_t)path))
            path--;
        __atomic_store_n(&chosen_path, path, __ATOMIC_RELAXED);
    }
    return (nx__q_path_t)path;
}

bool nx__q_set_path(nx__q_path_t path)
{
    if (!cpu_has(path))
        return false;
    __atomic_store_n(&chosen_path, path, __ATOMIC_RELAXED);
    return true;
}

/* Scratch: the decoded tile (the largest per value is Q6_K's, 5184 bytes per 256 = 648 per
 * 32; the 32-value types write an odd last block twice), then room for a partial tile's rows
 * (Q8_0's are the longest, 34 bytes per 32 values). */
static size_t decoded_bytes(uint32_t cols)
{
    return round64((size_t)cols / 32 * 648 + T32_BYTES);
}

static size_t pad_bytes(uint32_t cols)
{
    return round64((size_t)NX_Q_TILE_COLS * (cols / 32) * 34);
}

size_t nx__q_scratch_bytes(uint32_t cols)
{
    return decoded_bytes(cols) + pad_bytes(cols);
}

/* One tile: columns [col_first, col_first + col_count), col_count <= NX_Q_TILE_COLS. */
static void matmul_tile(const nx__qact_t *a, uint32_t n, const nx__wref_t *w,
                        const nx__wref_t *bias, uint32_t col_first, uint32_t col_count,
                        float *y, bool accumulate, void *scratch)
{
    uint64_t row_bytes = nx__quant_row_bytes(w->dtype, w->cols);
    uint32_t next = col_first + col_count;
    qtile_t t = {.a = a, .n = n, .dtype = w->dtype,
                 .w = (const uint8_t *)w->ptr + col_first * row_bytes, .row_bytes = row_bytes,
                 .k = w->cols, .count = col_count, .y = y + col_first, .y_stride = w->rows,
                 .accumulate = accumulate, .scratch = scratch,
                 .steps = nx__q_family(w->dtype) == NX__QF_256 ? w->cols / 64
                                                                : (w->cols / 32 + 1) / 2,
                 .row_step = (uint32_t)(nx__quant_row_bytes(w->dtype, 256) / 4),
                 .ahead = next < w->rows ? (const uint8_t *)w->ptr + next * row_bytes : NULL,
                 .ahead_rows = w->rows - next < NX_Q_TILE_COLS ? w->rows - next
                                                                : NX_Q_TILE_COLS};
    float bias_vals[NX_Q_TILE_COLS];
    if (bias && bias->ptr) {
        for (uint32_t c = 0; c < col_count; c++)
            bias_vals[c] = nx__k_weight_at(bias, col_first + c);
        t.bias = bias_vals;
    }
    nx__q_path_t path = nx__q_path();
    if (path == NX__Q_PLAIN) {
        tile_plain(&t);
        return;
    }
    const uint8_t *rows = t.w;
    if (col_count < NX_Q_TILE_COLS) { /* a partial tile: its rows padded to 16 in scratch */
        uint8_t *pad = (uint8_t *)scratch + decoded_bytes(w->cols); /* pad_bytes of room */
        for (uint32_t c = 0; c < NX_Q_TILE_COLS; c++)
            memcpy(pad + c * row_bytes, t.w + (c < col_count ? c : col_count - 1) * row_bytes,
                   row_bytes);
        rows = pad;
    }
    cols_t cs = {{rows, rows + 4 * row_bytes, rows + 8 * row_bytes, rows + 12 * row_bytes},
                 row_bytes, 3 * row_bytes, {0}};
    for (int c = 0; c < NX_Q_TILE_COLS; c++)
        cs.index[c] = (int32_t)(c * row_bytes);
    bool by_row = path == NX__Q_AVX512 && n == 1 && cpu_has_gfni(); /* batch 1 */
    /* AVX2: any batch (see r2_rows). AVX-512 CPUs run Q8_0 at batch 1 through the AVX2 row
     * kernel too (the same bits): tile_avx512 streamed a 4B Q8_0 step at 24-25 GB/s against
     * 33-36 for the row kernel on Zen 4 (bench/RESULTS.md, stop 27) */
    bool by_row_avx2 = path == NX__Q_AVX2 || (n == 1 && w->dtype == NX_DT_Q8_0);
    if (by_row_avx2 && w->dtype == NX_DT_Q8_0)
        q8_0_rows_avx2(&t, &cs);
    else if (by_row_avx2 && w->dtype == NX_DT_Q4_0)
        q4_0_rows_avx2(&t, &cs);
    else if (by_row_avx2 && w->dtype == NX_DT_Q4_K)
        q4_k_rows_avx2(&t, &cs);
    else if (by_row_avx2 && w->dtype == NX_DT_Q6_K)
        q6_k_rows_avx2(&t, &cs);
    else if (by_row && w->dtype == NX_DT_Q4_0)
        q4_0_rows_avx512(&t, &cs);
    else if (by_row && w->dtype == NX_DT_Q4_K)
        q4_k_rows_avx512(&t, &cs);
    else if (by_row && w->dtype == NX_DT_Q6_K)
        q6_k_rows_avx512(&t, &cs);
    else if (path == NX__Q_AVX512)
        tile_avx512(&t, &cs);
    else
        tile_avx2(&t, &cs);
}

void nx__q_matmul(const nx__qact_t *a, uint32_t n, const nx__wref_t *w, const nx__wref_t *bias,
                  uint32_t col_first, uint32_t col_count, float *y, bool accumulate,
                  void *scratch, bool cold)
{
    uint64_t row_bytes = nx__quant_row_bytes(w->dtype, w->cols);
    const uint8_t *first = (const uint8_t *)w->ptr + col_first * row_bytes;
    uint32_t end = col_first + col_count;
    /* each tile prefetches the next tile of the weight (in this range or not: with several
     * threads it is often another's, which then finds it nearer than memory); nobody
     * prefetched a cold range's first tile, so it is asked for whole now */
    uint32_t first_count = col_count < NX_Q_TILE_COLS ? col_count : NX_Q_TILE_COLS;
    for (uint64_t i = 0; cold && i < first_count * row_bytes; i += 64)
        __builtin_prefetch(first + i, 0, 1);
    for (uint32_t col = col_first; col < end; col += NX_Q_TILE_COLS) {
        uint32_t count = end - col < NX_Q_TILE_COLS ? end - col : NX_Q_TILE_COLS;
        matmul_tile(a, n, w, bias, col, count, y, accumulate, scratch);
    }
}
