/* test_quant.c — ggml's block formats (quant.c) and the CPU matmul over them (cpu_quant.c):
 * fp16 conversion; blocks worked out by hand for given floats (Q8_0, Q4_0, Q5_0) and by hand
 * decoded (Q4_K's packed scales, Q6_K's split codes); round-trip error bounds per type; the
 * activation formats; matmuls of every type on every kernel path the CPU has against a
 * double-precision reference on the dequantized weights and activations (odd shapes, partial
 * tiles, bias and accumulate), the paths bit-identical to each other, and every row's result
 * independent of the batch it came in (n = 1..40); the same independence for the fp32 kernels
 * over BF16, F16 and F32 weights (cpu_kernels.c); attention against a double-precision
 * softmax; the SiLU's vector lanes against its scalar tail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_kernels.h"
#include "cpu_quant.h"
#include "quant.h"

static const nx_dtype_t weight_types[] = {NX_DT_Q8_0, NX_DT_Q4_0, NX_DT_Q5_0, NX_DT_Q4_K,
                                          NX_DT_Q6_K};
#define TYPE_COUNT (sizeof weight_types / sizeof *weight_types)

static uint32_t rng_state = 12345;

static float uniform(void) /* [-1, 1) */
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 8388608.0f - 1.0f;
}

static void fill_random(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * uniform();
}

static uint16_t half_bits_of(_Float16 h)
{
    uint16_t b;
    memcpy(&b, &h, sizeof b);
    return b;
}

/* ------------------------------------------------------------------------------------------
 * fp16
 */
static void test_half_known_values(void **state)
{
    assert_int_equal(nx__f32_to_half(1.0f), 0x3c00);
    assert_int_equal(nx__f32_to_half(-2.0f), 0xc000);
    assert_int_equal(nx__f32_to_half(65504.0f), 0x7bff);
    assert_int_equal(nx__f32_to_half(65519.0f), 0x7bff);   /* below the halfway point */
    assert_int_equal(nx__f32_to_half(65520.0f), 0x7c00);   /* rounds to infinity */
    assert_int_equal(nx__f32_to_half(0x1p-24f), 0x0001);   /* smallest subnormal */
    assert_int_equal(nx__f32_to_half(0x1p-25f), 0x0000);   /* tie to even: 0 */
    assert_int_equal(nx__f32_to_half(0x1.8p-24f), 0x0002); /* tie to even: 2 */
    assert_int_equal(nx__f32_to_half(1.0f + 0x1p-11f), 0x3c00); /* tie to even */
    assert_int_equal(nx__f32_to_half(1.0f + 0x1.8p-11f), 0x3c01); /* 0.75 ulp: up */
    assert_int_equal(nx__f32_to_half(1.0f + 0x1.8p-10f), 0x3c02); /* 1.5 ulp: tie, even */
    assert_int_equal(nx__f32_to_half(-0.0f), 0x8000);
    assert_int_equal(nx__f32_to_half(INFINITY), 0x7c00);
    assert_true(isnan(nx__half_to_f32(nx__f32_to_half(NAN))));
    assert_true(nx__half_to_f32(0x0001) == 0x1p-24f);
    assert_true(nx__half_to_f32(0x3555) == 0.333251953125f);
    assert_true(isinf(nx__half_to_f32(0xfc00)) && nx__half_to_f32(0xfc00) < 0);
}

static void test_half_matches_compiler(void **state)
{
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 ref;
        uint16_t bits = (uint16_t)h;
        memcpy(&ref, &bits, sizeof ref);
        float got = nx__half_to_f32((nx_half_t)h);
        if (isnan((float)ref))
            assert_true(isnan(got));
        else
            assert_true(got == (float)ref && signbit(got) == signbit((float)ref));
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 65537) { /* spread over every exponent */
        uint32_t bits = (uint32_t)u;
        float f;
        memcpy(&f, &bits, sizeof f);
        if (!isnan(f))
            assert_int_equal(nx__f32_to_half(f), half_bits_of((_Float16)f));
    }
}

/* The fp32 kernels widen F16 weights with integer moves and a multiply (cpu_kernels.c): the
 * same floats as IEEE conversion for every half but NaNs, through both the element read and
 * the streaming kernel. */
static void test_f16_weights_widen_exactly(void **state)
{
    static uint16_t halves[65536];
    for (uint32_t h = 0; h < 65536; h++)
        halves[h] = (uint16_t)h;
    nx__wref_t w = {halves, NX_DT_F16, 4096, 16};
    for (uint32_t h = 0; h < 65536; h++) {
        float want = nx__half_to_f32((nx_half_t)h), got = nx__k_weight_at(&w, h);
        if (isnan(want))
            continue;
        assert_true(got == want && signbit(got) == signbit(want));
    }
    /* one-hot rows through the matmul: y = x . w picks the weight out */
    float x[16] = {0}, y[4096];
    x[3] = 1.0f;
    float scratch[NX_K_TILE_COLS * 16];
    for (uint32_t col = 0; col < 4096; col += NX_K_TILE_COLS)
        nx__k_matmul_tile(x, 1, &w, NULL, col, NX_K_TILE_COLS, y, false, scratch);
    for (uint32_t r = 0; r < 4096; r++) {
        float want = nx__half_to_f32(halves[16 * r + 3]);
        if (!isnan(want) && !isinf(want))
            assert_true(y[r] == want);
    }
}

/* ------------------------------------------------------------------------------------------
 * Blocks by hand
 */
static void test_q8_0_block_by_hand(void **state)
{
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16); /* amax 16: d = 16/127, codes round((j - 16) * 7.9375) */
    nx_bq8_0_t b;
    assert_int_equal(nx__quantize_row(NX_DT_Q8_0, x, &b, 32), NX_OK);
    /* 16/127 = 0.12598...: exponent -3, mantissa 0.007874 * 1024 = 8.06 -> 0x3008 */
    assert_int_equal(b.d, 0x3008);
    assert_int_equal(b.qs[0], -127); /* -16 * 7.9375 */
    assert_int_equal(b.qs[1], -119); /* -119.0625 */
    assert_int_equal(b.qs[15], -8);  /* -7.9375 */
    assert_int_equal(b.qs[16], 0);
    assert_int_equal(b.qs[17], 8);
    assert_int_equal(b.qs[18], 16);  /* 15.875 */
    assert_int_equal(b.qs[31], 119);
    float back[32];
    nx__dequantize_row(NX_DT_Q8_0, &b, back, 32);
    assert_true(back[0] == 0.1259765625f * -127);
}

static void test_q4_0_block_by_hand(void **state)
{
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16); /* max -16: d = -16 / -8 = 2, code = (int)(x / 2 + 8.5) */
    nx_bq4_0_t b;
    assert_int_equal(nx__quantize_row(NX_DT_Q4_0, x, &b, 32), NX_OK);
    assert_int_equal(b.d, 0x4000); /* 2.0 */
    /* low nibble: x = j - 16 (codes 0,1,1,2,2,...,8); high: x = j (8,9,9,10,...,15, 16 -> 15) */
    const int low[16] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8};
    const int high[16] = {8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15, 15};
    for (int j = 0; j < 16; j++) {
        assert_int_equal(b.qs[j] & 15, low[j]);
        assert_int_equal(b.qs[j] >> 4, high[j]);
    }
    float back[32];
    nx__dequantize_row(NX_DT_Q4_0, &b, back, 32);
    assert_true(back[0] == -16.0f && back[1] == -14.0f && back[31] == 14.0f);
}

static void test_q5_0_block_by_hand(void **state)
{
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16); /* max -16: d = 1, code = (int)(x + 16.5) = j */
    nx_bq5_0_t b;
    assert_int_equal(nx__quantize_row(NX_DT_Q5_0, x, &b, 32), NX_OK);
    assert_int_equal(b.d, 0x3c00);
    for (int j = 0; j < 16; j++) /* codes j (low nibble) and j + 16 (high), bit 4 in qh */
        assert_int_equal(b.qs[j], j | j << 4);
    uint32_t qh;
    memcpy(&qh, b.qh, sizeof qh);
    assert_int_equal(qh, 0xffff0000u);
    float back[32];
    nx__dequantize_row(NX_DT_Q5_0, &b, back, 32);
    for (int j = 0; j < 32; j++)
        assert_true(back[j] == x[j]);
}

static void test_q4_k_scales_by_hand(void **state)
{
    /* sub-blocks 0-3: scale and min in the low 6 bits of bytes 0-3 and 4-7; sub-blocks 4-7:
     * low 4 bits in bytes 8-11 (scale low nibble, min high), top 2 bits in bytes 0-7's
     * spare bits */
    const uint8_t sc[8] = {1, 2, 62, 63, 17, 33, 48, 5};
    const uint8_t mn[8] = {3, 0, 9, 40, 63, 16, 31, 32};
    uint8_t packed[12] = {
        1 | (17 >> 4) << 6, 2 | (33 >> 4) << 6, 62 | (48 >> 4) << 6, 63 | (5 >> 4) << 6,
        3 | (63 >> 4) << 6, 0 | (16 >> 4) << 6, 9 | (31 >> 4) << 6, 40 | (32 >> 4) << 6,
        (17 & 15) | (63 & 15) << 4, (33 & 15) | (16 & 15) << 4, (48 & 15) | (31 & 15) << 4,
        (5 & 15) | (32 & 15) << 4};
    for (int s = 0; s < 8; s++) {
        uint8_t got_sc, got_mn;
        nx__q4k_scale_min(packed, s, &got_sc, &got_mn);
        assert_int_equal(got_sc, sc[s]);
        assert_int_equal(got_mn, mn[s]);
    }
    /* a block built by hand dequantizes to d * sc * q - dmin * mn */
    nx_bq4_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00;    /* 1.0 */
    b.dmin = 0x3800; /* 0.5 */
    memcpy(b.scales, packed, 12);
    for (int i = 0; i < 128; i++)
        b.qs[i] = (uint8_t)((i % 16) | ((i * 7) % 16) << 4);
    float out[256];
    nx__dequantize_row(NX_DT_Q4_K, &b, out, 256);
    for (int j = 0; j < 256; j++) {
        int s = j / 32, byte = 32 * (s / 2) + j % 32;
        int q = (s & 1) ? ((byte * 7) % 16) : byte % 16;
        assert_true(out[j] == 1.0f * sc[s] * q - 0.5f * mn[s]);
    }
}

static void test_q6_k_codes_by_hand(void **state)
{
    /* value j = 128h + 32q + l: low 4 bits in ql[64h + l + 32 (q odd)] (high nibble for
     * q >= 2), top 2 bits in qh[32h + l] at bits 2q; value = d * scale[j / 16] * (code - 32) */
    nx_bq6_k_t b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; /* 0.25 */
    for (int s = 0; s < 16; s++)
        b.scales[s] = (int8_t)(s - 8);
    b.ql[0] = 0x5a;       /* value 0: low 0xa; value 64: low 0x5 */
    b.qh[0] = 0x2 | 0x3 << 4; /* value 0: top 2; value 64: top 3 */
    b.ql[32 + 3] = 0x0f;  /* value 35: low 0xf; value 99: 0 */
    b.qh[3] = 0x1 << 2;   /* value 35: top 1 */
    b.ql[64 + 31] = 0xf0; /* value 128 + 95 = 223: low 0xf (q = 2, high nibble) */
    b.qh[32 + 31] = 0x3 << 4;
    float out[256];
    nx__dequantize_row(NX_DT_Q6_K, &b, out, 256);
    assert_true(out[0] == 0.25f * -8 * ((0xa | 2 << 4) - 32));
    assert_true(out[64] == 0.25f * (4 - 8) * ((0x5 | 3 << 4) - 32));
    assert_true(out[35] == 0.25f * (2 - 8) * ((0xf | 1 << 4) - 32));
    assert_true(out[99] == 0.25f * (6 - 8) * (0 - 32));
    assert_true(out[223] == 0.25f * (13 - 8) * ((0xf | 3 << 4) - 32));
    assert_true(out[1] == 0.25f * -8 * -32); /* an all-zero code */
    /* and the quantizer puts codes where the dequantizer reads them: a ramp comes back */
    float x[256], back[256];
    for (int j = 0; j < 256; j++)
        x[j] = (float)((j * 37) % 64 - 32) / 8.0f;
    assert_int_equal(nx__quantize_row(NX_DT_Q6_K, x, &b, 256), NX_OK);
    nx__dequantize_row(NX_DT_Q6_K, &b, back, 256);
    for (int j = 0; j < 256; j++)
        assert_true(fabsf(back[j] - x[j]) <= 0.6f / 8.0f);
}

static void test_sizes_and_errors(void **state)
{
    assert_int_equal(nx__quant_row_bytes(NX_DT_Q8_0, 64), 68);
    assert_int_equal(nx__quant_row_bytes(NX_DT_Q4_0, 1024), 576);
    assert_int_equal(nx__quant_row_bytes(NX_DT_Q5_0, 96), 66);
    assert_int_equal(nx__quant_row_bytes(NX_DT_Q4_K, 2560), 1440);
    assert_int_equal(nx__quant_row_bytes(NX_DT_Q6_K, 256), 210);
    assert_int_equal(nx__quant_row_bytes(NX_DT_BF16, 10), 20);
    assert_int_equal(nx__quant_row_bytes(NX_DT_Q2_K, 256), 0);
    float x[64] = {0};
    uint8_t out[256];
    assert_int_equal(nx__quantize_row(NX_DT_Q2_K, x, out, 256), NX_ENOTSUP);
    assert_int_equal(nx__quantize_row(NX_DT_Q8_0, x, out, 48), NX_EINVAL);
    assert_int_equal(nx__quantize_row(NX_DT_Q4_K, x, out, 64), NX_EINVAL);
    for (size_t t = 0; t < TYPE_COUNT; t++)
        assert_true(nx__quant_weight_ok(weight_types[t]));
    assert_true(nx__quant_weight_ok(NX_DT_BF16));
    assert_false(nx__quant_weight_ok(NX_DT_Q8_K)); /* activations only */
    assert_false(nx__quant_weight_ok(NX_DT_Q3_K));
    assert_int_equal(nx__q_family(NX_DT_Q5_0), NX__QF_32);
    assert_int_equal(nx__q_family(NX_DT_Q6_K), NX__QF_256);
    assert_int_equal(nx__q_family(NX_DT_F16), NX__QF_NONE);
}

/* ------------------------------------------------------------------------------------------
 * Round trips
 */
static double relative_rms_error(nx_dtype_t dtype, const float *x, size_t n)
{
    uint8_t *q = malloc(nx__quant_row_bytes(dtype, n));
    float *back = malloc(n * sizeof *back);
    assert_int_equal(nx__quantize_row(dtype, x, q, n), NX_OK);
    nx__dequantize_row(dtype, q, back, n);
    double err = 0, norm = 0;
    for (size_t i = 0; i < n; i++) {
        err += ((double)back[i] - x[i]) * ((double)back[i] - x[i]);
        norm += (double)x[i] * x[i];
    }
    free(q);
    free(back);
    return sqrt(err / norm);
}

static void test_round_trip_error_bounds(void **state)
{
    enum { N = 256 * 64 };
    float *x = malloc(N * sizeof *x);
    for (size_t i = 0; i < N; i++) /* roughly Gaussian, as weights are */
        x[i] = 0.02f * (uniform() + uniform() + uniform());
    /* bounds about 1.5x what these types give on such data (bits per value: 8.5, 4.5, 5.5,
     * 4.5, 6.56): the step is max / 2^(bits - 1), the error about step / sqrt(12) */
    struct { nx_dtype_t dtype; double bound; } cases[] = {
        {NX_DT_Q8_0, 0.006}, {NX_DT_Q4_0, 0.12}, {NX_DT_Q5_0, 0.06},
        {NX_DT_Q4_K, 0.09},  {NX_DT_Q6_K, 0.025}, {NX_DT_F16, 0.0005}, {NX_DT_BF16, 0.003},
        {NX_DT_Q8_K, 0.01},
    };
    double got[8];
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        got[c] = relative_rms_error(cases[c].dtype, x, N);
        if (got[c] > cases[c].bound)
            fail_msg("%s: relative rms error %.4f above %.4f", nx_dtype_name(cases[c].dtype),
                     got[c], cases[c].bound);
    }
    assert_true(got[3] < got[1]); /* the scale search beats Q4_0 at the same bits */
    assert_true(got[4] < got[2]);
    assert_true(relative_rms_error(NX_DT_F32, x, N) == 0);
    free(x);
}

static void test_zero_blocks(void **state)
{
    float x[256] = {0}, back[256];
    uint8_t q[300];
    for (size_t t = 0; t < TYPE_COUNT; t++) {
        assert_int_equal(nx__quantize_row(weight_types[t], x, q, 256), NX_OK);
        nx__dequantize_row(weight_types[t], q, back, 256);
        for (int j = 0; j < 256; j++)
            assert_true(back[j] == 0);
    }
}

/* ------------------------------------------------------------------------------------------
 * Activations
 */
static void test_activation_formats(void **state)
{
    float x[256];
    for (int j = 0; j < 256; j++)
        x[j] = (float)(j % 32 - 16);
    void *mem = aligned_alloc(64, nx__qact_bytes(NX__QF_32, 1, 256));
    nx__qact_t a;
    nx__qact_bind(&a, NX__QF_32, 1, 256, mem);
    nx__qact_quantize(&a, 0, x);
    /* per 32: amax 16, d = 16/127 in fp16 (0x3008), q = round(x * 127/16) (ties to even),
     * offset = -sum */
    assert_true(a.d[0] == nx__half_to_f32(0x3008));
    assert_int_equal(a.qs[0], -127);
    assert_int_equal(a.qs[1], -119);
    assert_int_equal(a.qs[17], 8);
    int32_t sum = 0;
    for (int j = 0; j < 32; j++)
        sum += a.qs[j];
    assert_int_equal(a.offset[0], -sum);
    assert_int_equal(a.offset[3], -sum);
    free(mem);

    for (int j = 0; j < 256; j++)
        x[j] = (float)(j - 160) / 8; /* the max magnitude is -20 at j = 0 */
    mem = aligned_alloc(64, nx__qact_bytes(NX__QF_256, 1, 256));
    nx__qact_bind(&a, NX__QF_256, 1, 256, mem);
    nx__qact_quantize(&a, 0, x);
    assert_true(a.d[0] == 1 / (-127.f / -20.f));
    assert_int_equal(a.qs[0], -127);
    assert_int_equal(a.qs[160], 0);
    assert_int_equal(a.qs[255], 75); /* 11.875 * 6.35 = 75.4 */
    for (int s = 0; s < 16; s++) {
        int32_t sum16 = 0;
        for (int j = 0; j < 16; j++)
            sum16 += a.qs[16 * s + j];
        assert_int_equal(a.offset[s], -32 * sum16);
        if (s & 1)
            assert_int_equal(a.sum32[s / 2], sum16 - a.offset[s - 1] / 32);
    }
    float back[256];
    nx__qact_dequantize(&a, 0, back);
    for (int j = 0; j < 256; j++)
        assert_true(fabsf(back[j] - x[j]) <= 0.5f * 20.f / 127 * 1.0001f);
    free(mem);
}

/* Every path quantizes activations to the same bytes (the kernels' equality rests on it). */
static void test_activation_paths_agree(void **state)
{
    enum { ROWS = 6, COLS = 1024 };
    float *x = malloc(ROWS * COLS * sizeof *x);
    fill_random(x, ROWS * COLS, 3.0f);
    x[5] = -9.0f, x[300] = 9.0f;          /* a tie in magnitude: the first one decides */
    for (int j = 512; j < 768; j++)       /* an all-zero 256-block */
        x[COLS + j] = 0;
    for (int j = 0; j < 64; j++)          /* exact halves: rounding to even must agree */
        x[2 * COLS + j] = (float)(j - 32) * 0.5f;
    nx__q_path_t original = nx__q_path();
    for (int f = 0; f < 2; f++) {
        nx__qfamily_t family = f ? NX__QF_256 : NX__QF_32;
        size_t bytes = nx__qact_bytes(family, ROWS, COLS);
        void *want = aligned_alloc(64, bytes), *got = aligned_alloc(64, bytes);
        memset(want, 0, bytes);
        memset(got, 0, bytes);
        nx__qact_t a;
        nx__q_set_path(NX__Q_PLAIN);
        nx__qact_bind(&a, family, ROWS, COLS, want);
        for (int r = 0; r < ROWS; r++)
            nx__qact_quantize(&a, r, x + r * COLS);
        for (size_t path = 1; path < 3; path++) {
            if (!nx__q_set_path(path == 1 ? NX__Q_AVX2 : NX__Q_AVX512))
                continue;
            nx__qact_bind(&a, family, ROWS, COLS, got);
            for (int r = 0; r < ROWS; r++)
                nx__qact_quantize(&a, r, x + r * COLS);
            assert_memory_equal(want, got, bytes);
        }
        free(want);
        free(got);
    }
    nx__q_set_path(original);
    free(x);
}

/* ------------------------------------------------------------------------------------------
 * Matmuls
 */
typedef struct problem {
    nx_dtype_t dtype;
    uint32_t rows, cols, n; /* weight rows, k, batch rows */
    uint8_t *w;
    nx__wref_t wref;
    float *x;
    void *act_mem;
    nx__qact_t act;
    void *scratch;
} problem_t;

static void problem_make(problem_t *p, nx_dtype_t dtype, uint32_t rows, uint32_t cols,
                         uint32_t n)
{
    *p = (problem_t){.dtype = dtype, .rows = rows, .cols = cols, .n = n};
    uint64_t row_bytes = nx__quant_row_bytes(dtype, cols);
    float *wf = malloc((size_t)rows * cols * sizeof *wf);
    fill_random(wf, (size_t)rows * cols, 0.05f);
    p->w = malloc(row_bytes * rows);
    for (uint32_t r = 0; r < rows; r++)
        assert_int_equal(nx__quantize_row(dtype, wf + (size_t)r * cols, p->w + r * row_bytes,
                                          cols), NX_OK);
    free(wf);
    p->wref = (nx__wref_t){p->w, dtype, rows, cols};
    p->x = malloc((size_t)n * cols * sizeof *p->x);
    for (size_t i = 0; i < (size_t)n * cols; i++) /* an outlier now and then, as in real rows */
        p->x[i] = uniform() * (i % 97 == 0 ? 8.0f : 1.0f);
    nx__qfamily_t family = nx__q_family(dtype);
    p->act_mem = aligned_alloc(64, nx__qact_bytes(family, n, cols));
    nx__qact_bind(&p->act, family, n, cols, p->act_mem);
    for (uint32_t r = 0; r < n; r++)
        nx__qact_quantize(&p->act, r, p->x + (size_t)r * cols);
    p->scratch = aligned_alloc(64, nx__q_scratch_bytes(cols));
}

static void problem_free(problem_t *p)
{
    free(p->w);
    free(p->x);
    free(p->act_mem);
    free(p->scratch);
}

/* y = act[0..n) x W^T, tile by tile, on the current path. */
static void problem_run(problem_t *p, uint32_t n, const nx__wref_t *bias, float *y,
                        bool accumulate)
{
    for (uint32_t col = 0; col < p->rows; col += NX_Q_TILE_COLS) {
        uint32_t count = p->rows - col < NX_Q_TILE_COLS ? p->rows - col : NX_Q_TILE_COLS;
        nx__q_matmul(&p->act, n, &p->wref, bias, col, count, y, accumulate, p->scratch, true);
    }
}

static const nx__q_path_t all_paths[] = {NX__Q_PLAIN, NX__Q_AVX2, NX__Q_AVX512};
static const char *const path_names[] = {"plain", "avx2", "avx512"};

/* Every type x shape on every path, batches of 5 and of 1 (decode has kernels of its own):
 * within float rounding of the double reference on the dequantized operands, and the same bits
 * on every path. The widths leave 1, 2, 3 and no blocks of 32 past a multiple of 4 (kernels
 * that take 4 blocks a step). */
static void test_matmul_matches_reference(void **state)
{
    const uint32_t shapes[][2] = {{1, 32}, {7, 64}, {16, 96}, {17, 256}, {37, 768},
                                  {33, 1280}, {5, 2560}, {19, 1120}};
    nx__q_path_t original = nx__q_path();
    for (size_t t = 0; t < TYPE_COUNT; t++)
        for (size_t s = 0; s < 2 * sizeof shapes / sizeof *shapes; s++) {
            uint32_t rows = shapes[s / 2][0], cols = shapes[s / 2][1], n = s % 2 ? 1 : 5;
            if (cols % (nx__q_family(weight_types[t]) == NX__QF_256 ? 256 : 32))
                continue;
            problem_t p;
            problem_make(&p, weight_types[t], rows, cols, n);
            float *ref_y = calloc((size_t)n * rows, sizeof *ref_y);
            float *first = NULL;
            for (size_t path = 0; path < 3; path++) {
                if (!nx__q_set_path(all_paths[path])) {
                    printf("  (no %s path on this CPU)\n", path_names[path]);
                    continue;
                }
                float *y = calloc((size_t)n * rows, sizeof *y);
                problem_run(&p, n, NULL, y, false);
                if (!first) {
                    first = y;
                    continue;
                }
                if (memcmp(first, y, (size_t)n * rows * sizeof *y) != 0)
                    fail_msg("%s %ux%u: path %s differs from plain",
                             nx_dtype_name(p.dtype), rows, cols, path_names[path]);
                free(y);
            }
            float *wrow = malloc(cols * sizeof *wrow), *xrow = malloc(cols * sizeof *xrow);
            uint64_t row_bytes = nx__quant_row_bytes(p.dtype, cols);
            for (uint32_t i = 0; i < n; i++) {
                nx__qact_dequantize(&p.act, i, xrow);
                for (uint32_t c = 0; c < rows; c++) {
                    nx__dequantize_row(p.dtype, p.w + c * row_bytes, wrow, cols);
                    double dot = 0, mag = 0;
                    for (uint32_t k = 0; k < cols; k++) {
                        dot += (double)wrow[k] * xrow[k];
                        mag += fabs((double)wrow[k] * xrow[k]);
                    }
                    double err = fabs(first[i * rows + c] - dot);
                    /* a float chain of one fma per block: a few roundings of the partial
                     * sums, each at most 2^-24 of the magnitudes summed so far */
                    if (err > 4e-7 * mag + 1e-30)
                        fail_msg("%s %ux%u row %u col %u: %.9g vs %.9g (mag %.3g)",
                                 nx_dtype_name(p.dtype), rows, cols, i, c, first[i * rows + c],
                                 dot, mag);
                }
            }
            free(wrow);
            free(xrow);
            free(first);
            free(ref_y);
            problem_free(&p);
        }
    nx__q_set_path(original);
}

/* Rows give the same bits whether they come alone or in a batch of any size. */
static void test_batch_invariance(void **state)
{
    nx__q_path_t original = nx__q_path();
    for (size_t path = 0; path < 3; path++) {
        if (!nx__q_set_path(all_paths[path]))
            continue;
        for (size_t t = 0; t < TYPE_COUNT; t++) {
            uint32_t rows = 21, cols = 512, most = 40;
            problem_t p;
            problem_make(&p, weight_types[t], rows, cols, most);
            float *solo = calloc((size_t)most * rows, sizeof *solo);
            float *y = calloc((size_t)most * rows, sizeof *y);
            for (uint32_t i = 0; i < most; i++) { /* each row alone: a batch of one */
                nx__qact_t one = p.act;
                uint32_t blocks = cols / (p.act.family == NX__QF_256 ? 256 : 32);
                one.qs += (size_t)i * cols;
                one.d += (size_t)i * blocks;
                one.offset += (size_t)i * (p.act.family == NX__QF_256 ? cols / 16 : blocks);
                if (one.sum32)
                    one.sum32 += (size_t)i * (cols / 32);
                for (uint32_t col = 0; col < rows; col += NX_Q_TILE_COLS) {
                    uint32_t count = rows - col < NX_Q_TILE_COLS ? rows - col : NX_Q_TILE_COLS;
                    nx__q_matmul(&one, 1, &p.wref, NULL, col, count, solo + i * rows,
                                      false, p.scratch, true);
                }
            }
            for (uint32_t n = 1; n <= most; n++) {
                memset(y, 0, (size_t)most * rows * sizeof *y);
                problem_run(&p, n, NULL, y, false);
                if (memcmp(y, solo, (size_t)n * rows * sizeof *y) != 0)
                    fail_msg("%s on %s: a batch of %u differs from its rows alone",
                             nx_dtype_name(p.dtype), path_names[path], n);
            }
            free(solo);
            free(y);
            problem_free(&p);
        }
    }
    nx__q_set_path(original);
}

/* Batches of 3 and of 1 (decode's own kernels), for a type of each family. */
static void test_bias_and_accumulate(void **state)
{
    const nx_dtype_t types[] = {NX_DT_Q4_K, NX_DT_Q4_0};
    for (size_t t = 0; t < 2; t++)
        for (uint32_t n = 1; n <= 3; n += 2) {
            problem_t p;
            problem_make(&p, types[t], 19, 256, n);
            float bias_vals[19];
            fill_random(bias_vals, 19, 1.0f);
            nx__wref_t bias = {bias_vals, NX_DT_F32, 19, 1};
            float plain[3 * 19], with_bias[3 * 19], acc[3 * 19];
            problem_run(&p, n, NULL, plain, false);
            problem_run(&p, n, &bias, with_bias, false);
            for (uint32_t i = 0; i < n * 19; i++)
                acc[i] = 10.0f;
            problem_run(&p, n, &bias, acc, true);
            for (uint32_t i = 0; i < n * 19; i++) {
                assert_true(with_bias[i] == plain[i] + bias_vals[i % 19]);
                assert_true(acc[i] == 10.0f + (plain[i] + bias_vals[i % 19]));
            }
            problem_free(&p);
        }
}

/* x . w as cpu_kernels.c's contract computes it: 16 lanes, lane l summing the products at
 * k = l, l + 16, ... in order, reduced in hsum16's order, then the tail in sequence. fused:
 * each lane step one fma (paths with FMA), else a rounded product added (the plain path);
 * tail_fused the same for the tail, which the compiler contracts only from -O2 (the
 * sanitizer builds are -O1, where the AVX2 kernels' explicit fma meet an unfused tail). */
static float contract_dot(const float *x, const float *w, uint32_t k, bool fused,
                          bool tail_fused)
{
    float lane[16] = {0};
    uint32_t i = 0;
    for (; i + 16 <= k; i += 16)
        for (int l = 0; l < 16; l++) {
            volatile float product = x[i + l] * w[i + l]; /* rounded: never contracted */
            lane[l] = fused ? fmaf(x[i + l], w[i + l], lane[l]) : lane[l] + product;
        }
    float a[8], b[4];
    for (int l = 0; l < 8; l++)
        a[l] = lane[l] + lane[l + 8];
    for (int l = 0; l < 4; l++)
        b[l] = a[l] + a[l + 4];
    float s = (b[0] + b[2]) + (b[1] + b[3]);
    for (; i < k; i++) {
        volatile float product = x[i] * w[i];
        s = tail_fused ? fmaf(x[i], w[i], s) : s + product;
    }
    return s;
}

/* The fp32 kernels (BF16, F16 and F32 weights, cpu_kernels.c): a row alone is the contract's
 * sum (contract_dot), bit for bit, and the same bits in a small batch (weights widened as
 * they stream) and in a large one (widened into scratch), with bias and accumulate, on the
 * path this process runs (NEXUS_CPU_KERNELS=avx2 or plain picks a narrower one). The widths leave
 * 0, 5 and 7 k past a multiple of 16; 45 weight rows leave tiles of 13 (one row past blocks
 * of 4). */
static void test_dense_batch_invariance(void **state)
{
    static const nx_dtype_t dtypes[] = {NX_DT_BF16, NX_DT_F16, NX_DT_F32};
    static const uint32_t widths[] = {7, 16, 37, 597, 1024};
    static const uint32_t batches[] = {2, 3, 15, 20};
    const uint32_t rows = 45, most = 20;
    float bias_vals[45];
    fill_random(bias_vals, rows, 1.0f);
    nx__wref_t bias = {bias_vals, NX_DT_F32, rows, 1};
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++)
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
            uint32_t cols = widths[wi];
            size_t count = (size_t)rows * cols;
            float *wf = malloc(count * sizeof *wf), *x = malloc(most * cols * sizeof *x);
            uint16_t *halves = malloc(count * sizeof *halves);
            fill_random(wf, count, 0.05f);
            fill_random(x, (size_t)most * cols, 1.0f);
            for (size_t i = 0; i < count; i++) {
                uint32_t bits;
                memcpy(&bits, &wf[i], sizeof bits);
                halves[i] = dtypes[d] == NX_DT_BF16 ? (uint16_t)(bits >> 16)
                                                    : nx__f32_to_half(wf[i]);
            }
            nx__wref_t w = {dtypes[d] == NX_DT_F32 ? (void *)wf : (void *)halves, dtypes[d],
                            rows, cols};
            float *scratch = malloc((size_t)NX_K_TILE_COLS * cols * sizeof *scratch);
            float *solo = malloc((size_t)most * rows * sizeof *solo);
            float *y = malloc((size_t)most * rows * sizeof *y);
            for (size_t i = 0; i < (size_t)most * rows; i++)
                solo[i] = (float)(i % 7) - 3.0f;
            for (uint32_t i = 0; i < most; i++)
                for (uint32_t col = 0; col < rows; col += NX_K_TILE_COLS)
                    nx__k_matmul_tile(x + (size_t)i * cols, 1, &w, &bias, col,
                                      rows - col < NX_K_TILE_COLS ? rows - col : NX_K_TILE_COLS,
                                      solo + (size_t)i * rows, true, scratch);
            float *wv = malloc(count * sizeof *wv); /* the weights as the kernels read them */
            for (size_t i = 0; i < count; i++)
                wv[i] = nx__k_weight_at(&w, i);
            bool fused = true, separate = true, mixed = true;
            for (uint32_t i = 0; i < most; i++)
                for (uint32_t c = 0; c < rows; c++) {
                    float prior = (float)((i * rows + c) % 7) - 3.0f, got = solo[i * rows + c];
                    const float *xi = x + (size_t)i * cols, *wc = wv + (size_t)c * cols;
                    fused &= got ==
                             prior + (contract_dot(xi, wc, cols, true, true) + bias_vals[c]);
                    separate &= got ==
                                prior + (contract_dot(xi, wc, cols, false, false) + bias_vals[c]);
                    mixed &= got ==
                             prior + (contract_dot(xi, wc, cols, true, false) + bias_vals[c]);
                }
            if (!fused && !separate && !mixed)
                fail_msg("%s width %u: a row alone is not the contract's sum",
                         nx_dtype_name(dtypes[d]), cols);
            free(wv);
            for (size_t b = 0; b < sizeof batches / sizeof *batches; b++) {
                uint32_t n = batches[b];
                for (size_t i = 0; i < (size_t)n * rows; i++)
                    y[i] = (float)(i % 7) - 3.0f;
                for (uint32_t col = 0; col < rows; col += NX_K_TILE_COLS)
                    nx__k_matmul_tile(x, n, &w, &bias, col,
                                      rows - col < NX_K_TILE_COLS ? rows - col : NX_K_TILE_COLS,
                                      y, true, scratch);
                if (memcmp(y, solo, (size_t)n * rows * sizeof *y) != 0)
                    fail_msg("%s width %u: a batch of %u differs from its rows alone",
                             nx_dtype_name(dtypes[d]), cols, n);
            }
            free(wf);
            free(x);
            free(halves);
            free(scratch);
            free(solo);
            free(y);
        }
}

/* Attention over one head's cache (nx__k_attend, cpu_kernels.c) on the path this process runs
 * against a double-precision softmax: head dims with and without a tail past a multiple of 8,
 * lengths across the 8-key blocks, scores from about -12 to 12. Every output element is a
 * convex combination of values in [-1, 1], so the error is absolute; 2e-6 is a few float ulps
 * of the exp, the sums and the division. The scratch past len and the output past head_dim
 * stay untouched. */
static void test_attention_matches_reference(void **state)
{
    static const uint32_t dims[] = {8, 12, 64, 72, 128, 131};
    static const uint32_t lens[] = {1, 2, 7, 8, 9, 15, 16, 17, 33, 64, 129};
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            uint32_t hd = dims[di], len = lens[li];
            float scale = 1.0f / sqrtf((float)hd);
            float *q = malloc(hd * sizeof *q), *out = malloc((hd + 4) * sizeof *out);
            float *keys = malloc((size_t)len * hd * sizeof *keys);
            float *values = malloc((size_t)len * hd * sizeof *values);
            float *scores = malloc((len + 4) * sizeof *scores);
            double *p = malloc(len * sizeof *p);
            fill_random(q, hd, 3.0f);
            fill_random(keys, (size_t)len * hd, 1.5f);
            fill_random(values, (size_t)len * hd, 1.0f);
            for (uint32_t i = 0; i < 4; i++)
                scores[len + i] = out[hd + i] = 1234.5f;
            nx__k_attend(q, keys, values, len, hd, scale, scores, out);
            double max = -INFINITY, sum = 0;
            for (uint32_t t = 0; t < len; t++) {
                double dot = 0;
                for (uint32_t d = 0; d < hd; d++)
                    dot += (double)q[d] * keys[(size_t)t * hd + d];
                p[t] = dot * scale;
                max = p[t] > max ? p[t] : max;
            }
            for (uint32_t t = 0; t < len; t++)
                sum += p[t] = exp(p[t] - max);
            for (uint32_t d = 0; d < hd; d++) {
                double want = 0;
                for (uint32_t t = 0; t < len; t++)
                    want += p[t] / sum * values[(size_t)t * hd + d];
                if (fabs(out[d] - want) > 2e-6)
                    fail_msg("head_dim %u, len %u, element %u: %.9g, want %.9g", hd, len, d,
                             out[d], want);
            }
            for (uint32_t i = 0; i < 4; i++)
                if (scores[len + i] != 1234.5f || out[hd + i] != 1234.5f)
                    fail_msg("head_dim %u, len %u: wrote past the scratch or the output", hd,
                             len);
            free(q);
            free(out);
            free(keys);
            free(values);
            free(scores);
            free(p);
        }
}

/* The SiLU (nx__k_silu_mul) on the path this process runs: each element's result is the same
 * bits whether it lands in a vector lane or in the scalar tail (an element alone), across the
 * clamp of e^-g at [-87, 88] (g = +-87.5, +-100, +-inf), zero, -0, a subnormal and NaN (kept),
 * and within 2 ulp-ish (1e-6 relative) of the double-precision g / (1 + e^-g) * u elsewhere.
 * GCC 12 once compiled the vector clamp into 16 scalar compares; the result was right, so
 * this checks the semantics the vector clamp must keep, not the speed. */
static void test_silu_lanes_match_tail(void **state)
{
    float g[48], u[48];
    fill_random(g, 48, 12.0f);
    fill_random(u, 48, 2.0f);
    static const float special[] = {87.5f, -87.5f, 100.0f, -100.0f, 0.0f, -0.0f, 1e-40f,
                                    88.0f, -87.0f, 90.0f, -89.0f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        g[3 * i] = special[i];
    g[40] = INFINITY;
    g[41] = -INFINITY;
    g[42] = NAN;
    float lanes[48];
    memcpy(lanes, g, sizeof lanes);
    nx__k_silu_mul(lanes, u, 48); /* 48: three vectors of 16, no tail */
    for (uint32_t i = 0; i < 48; i++) {
        float alone = g[i];
        nx__k_silu_mul(&alone, &u[i], 1);
        if (isnan(alone) != isnan(lanes[i]) ||
            (!isnan(alone) && memcmp(&alone, &lanes[i], sizeof alone) != 0))
            fail_msg("g %.9g: %.9g in a lane, %.9g in the tail", g[i], lanes[i], alone);
        if (!isfinite(g[i]))
            continue;
        double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        if (fabs(lanes[i] - want) > 1e-6 * fabs(want) + 1e-30)
            fail_msg("g %.9g u %.9g: %.9g, want %.9g", g[i], u[i], lanes[i], want);
    }
    assert_true(isnan(lanes[42]));
    assert_true(lanes[40] == INFINITY * (u[40] > 0 ? 1 : -1));
}

/* The embedding lookup dequantizes a row of a quantized token_embd. */
static void test_embedding_row(void **state)
{
    for (size_t t = 0; t < TYPE_COUNT; t++) {
        float x[3 * 256], want[256], got[256];
        fill_random(x, 3 * 256, 1.0f);
        uint64_t row_bytes = nx__quant_row_bytes(weight_types[t], 256);
        uint8_t *w = malloc(3 * row_bytes);
        for (int r = 0; r < 3; r++)
            nx__quantize_row(weight_types[t], x + 256 * r, w + r * row_bytes, 256);
        nx__wref_t ref = {w, weight_types[t], 3, 256};
        nx__k_weight_row(&ref, 2, got);
        nx__dequantize_row(weight_types[t], w + 2 * row_bytes, want, 256);
        assert_memory_equal(got, want, sizeof want);
        free(w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_known_values),
        cmocka_unit_test(test_half_matches_compiler),
        cmocka_unit_test(test_f16_weights_widen_exactly),
        cmocka_unit_test(test_q8_0_block_by_hand),
        cmocka_unit_test(test_q4_0_block_by_hand),
        cmocka_unit_test(test_q5_0_block_by_hand),
        cmocka_unit_test(test_q4_k_scales_by_hand),
        cmocka_unit_test(test_q6_k_codes_by_hand),
        cmocka_unit_test(test_sizes_and_errors),
        cmocka_unit_test(test_round_trip_error_bounds),
        cmocka_unit_test(test_zero_blocks),
        cmocka_unit_test(test_activation_formats),
        cmocka_unit_test(test_activation_paths_agree),
        cmocka_unit_test(test_matmul_matches_reference),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_bias_and_accumulate),
        cmocka_unit_test(test_dense_batch_invariance),
        cmocka_unit_test(test_attention_matches_reference),
        cmocka_unit_test(test_silu_lanes_match_tail),
        cmocka_unit_test(test_embedding_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
