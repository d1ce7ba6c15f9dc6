/* cpu_kernels.c — the CPU backend's arithmetic (see cpu_kernels.h).
 *
 * The matmul is the hot spot. A task owns up to NX_K_TILE_COLS weight rows: it converts them
 * once to fp32 (BF16 by a 16-bit shift, F16 through _Float16; F32 is used in place), then runs
 * every batch row against them, four weight rows at a time so each x load feeds four
 * accumulators. So each weight row is read from memory once per step whatever the batch size,
 * which is what decode (memory bound) needs. The inner loop over K uses GCC vector extensions;
 * the same body is compiled twice, plain and with AVX2+FMA, chosen once at run time
 * (NEXUS_CPU_KERNELS=plain forces the plain one, so tests cover it on AVX2 machines).
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));

#define ROW_BLOCK 32 /* batch rows per pass over a tile (keeps x rows in L2) */

static inline float bf16_to_f32(uint16_t bits)
{
    uint32_t wide = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &wide, sizeof f);
    return f;
}

float nx__k_weight_at(const nx__wref_t *w, uint64_t index)
{
    switch (w->dtype) {
    case NX_DT_BF16: return bf16_to_f32(((const uint16_t *)w->ptr)[index]);
    case NX_DT_F16: return (float)((const _Float16 *)w->ptr)[index];
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
        const _Float16 *src = (const _Float16 *)w->ptr + first;
        for (uint32_t i = 0; i < count; i++)
            out[i] = (float)src[i];
    } else {
        memcpy(out, (const float *)w->ptr + first, count * sizeof *out);
    }
}

void nx__k_weight_row(const nx__wref_t *w, uint32_t row, float *out)
{
    convert_span(w, (uint64_t)row * w->cols, w->cols, out);
}

static inline __attribute__((always_inline)) float hsum8(v8f v)
{
    float s = 0;
    for (int i = 0; i < 8; i++)
        s += v[i];
    return s;
}

/* out[0..3] = x . w[0..3] over k elements. */
static inline __attribute__((always_inline)) void dot4(const float *x, const float *const *w,
                                                       uint32_t k, float *out)
{
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    uint32_t i = 0;
    for (; i + 8 <= k; i += 8) {
        v8f xv = *(const v8f_unaligned *)(x + i);
        a0 += xv * *(const v8f_unaligned *)(w[0] + i);
        a1 += xv * *(const v8f_unaligned *)(w[1] + i);
        a2 += xv * *(const v8f_unaligned *)(w[2] + i);
        a3 += xv * *(const v8f_unaligned *)(w[3] + i);
    }
    float s0 = hsum8(a0), s1 = hsum8(a1), s2 = hsum8(a2), s3 = hsum8(a3);
    for (; i < k; i++) {
        s0 += x[i] * w[0][i];
        s1 += x[i] * w[1][i];
        s2 += x[i] * w[2][i];
        s3 += x[i] * w[3][i];
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

static inline __attribute__((always_inline)) float dot1(const float *x, const float *w,
                                                        uint32_t k)
{
    v8f a = {0};
    uint32_t i = 0;
    for (; i + 8 <= k; i += 8)
        a += *(const v8f_unaligned *)(x + i) * *(const v8f_unaligned *)(w + i);
    float s = hsum8(a);
    for (; i < k; i++)
        s += x[i] * w[i];
    return s;
}

typedef struct tile_args {
    const float *x;        /* [n][k] */
    uint32_t n, k;
    const float *wrows[NX_K_TILE_COLS]; /* fp32 weight rows of the tile */
    uint32_t cols;
    const float *bias;     /* [cols] or NULL */
    float *y;              /* points at column col_first of row 0 */
    uint32_t y_stride;
    bool accumulate;
} tile_args_t;

static inline __attribute__((always_inline)) void store(const tile_args_t *a, uint32_t i,
                                                        uint32_t c, float v)
{
    float *dst = a->y + (uint64_t)i * a->y_stride + c;
    if (a->bias)
        v += a->bias[c];
    *dst = a->accumulate ? *dst + v : v;
}

/* Hot path: every batch row against the tile's weight rows. */
static inline __attribute__((always_inline)) void tile_body(const tile_args_t *a)
{
    for (uint32_t r0 = 0; r0 < a->n; r0 += ROW_BLOCK) {
        uint32_t r1 = r0 + ROW_BLOCK < a->n ? r0 + ROW_BLOCK : a->n;
        uint32_t c = 0;
        for (; c + 4 <= a->cols; c += 4)
            for (uint32_t i = r0; i < r1; i++) {
                float out[4];
                dot4(a->x + (uint64_t)i * a->k, a->wrows + c, a->k, out);
                for (int j = 0; j < 4; j++)
                    store(a, i, c + j, out[j]);
            }
        for (; c < a->cols; c++)
            for (uint32_t i = r0; i < r1; i++)
                store(a, i, c, dot1(a->x + (uint64_t)i * a->k, a->wrows[c], a->k));
    }
}

__attribute__((target("avx2,fma"))) static void tile_avx2(const tile_args_t *a)
{
    tile_body(a);
}

static void tile_plain(const tile_args_t *a)
{
    tile_body(a);
}

static void (*pick_tile(void))(const tile_args_t *)
{
    static void (*chosen)(const tile_args_t *);
    void (*fn)(const tile_args_t *) = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!fn) { /* every thread that gets here picks the same function */
        const char *force = getenv("NEXUS_CPU_KERNELS"); /* "plain": test the fallback */
        __builtin_cpu_init();
        fn = !(force && strcmp(force, "plain") == 0) && __builtin_cpu_supports("avx2") &&
                     __builtin_cpu_supports("fma")
                 ? tile_avx2
                 : tile_plain;
        __atomic_store_n(&chosen, fn, __ATOMIC_RELAXED);
    }
    return fn;
}

void nx__k_matmul_tile(const float *x, uint32_t n, const nx__wref_t *w, const nx__wref_t *bias,
                       uint32_t col_first, uint32_t col_count, float *y, bool accumulate,
                       float *scratch)
{
    tile_args_t a = {.x = x, .n = n, .k = w->cols, .cols = col_count, .y = y + col_first,
                     .y_stride = w->rows, .accumulate = accumulate};
    for (uint32_t c = 0; c < col_count; c++) {
        uint64_t row = (uint64_t)(col_first + c);
        if (w->dtype == NX_DT_F32) {
            a.wrows[c] = (const float *)w->ptr + row * w->cols;
        } else {
            float *dst = scratch + (uint64_t)c * w->cols;
            convert_span(w, row * w->cols, w->cols, dst);
            a.wrows[c] = dst;
        }
    }
    float bias_vals[NX_K_TILE_COLS];
    if (bias && bias->ptr) {
        for (uint32_t c = 0; c < col_count; c++)
            bias_vals[c] = nx__k_weight_at(bias, col_first + c);
        a.bias = bias_vals;
    }
    pick_tile()(&a);
}

void nx__k_rmsnorm(const float *x, uint32_t dim, const nx__wref_t *weight, float eps,
                   float *out)
{
    double sum_sq = 0;
    for (uint32_t i = 0; i < dim; i++)
        sum_sq += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(sum_sq / dim + (double)eps));
    for (uint32_t i = 0; i < dim; i++)
        out[i] = x[i] * inv * nx__k_weight_at(weight, i);
}

void nx__k_rope(float *v, uint32_t dim, const float *cos_t, const float *sin_t)
{
    uint32_t half = dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cos_t[i] - x2 * sin_t[i];
        v[i + half] = x2 * cos_t[i] + x1 * sin_t[i];
    }
}

void nx__k_silu_mul(float *g, const float *u, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

float nx__k_dot(const float *a, const float *b, uint32_t n)
{
    return dot1(a, b, n);
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
