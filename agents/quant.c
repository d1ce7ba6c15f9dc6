/* quant.c — ggml's block formats (quant.h): fp16 conversion, quantizers that choose the scales
 * the way ggml's reference quantizers do, and dequantizers. Not a hot path: these serve
 * `nexusctl model quantize`, the embedding lookup (one row a token) and the tests; the
 * engine's matmuls read the blocks directly (cpu_quant.c, the CUDA kernels).
 *
 * Matching llama.cpp bit for bit matters for Q8_0, Q4_0 and Q5_0 (one scale per 32 values from
 * the element of largest magnitude; the same float operations, so the same bytes). Q4_K and
 * Q6_K search their sub-block scales as ggml does without an importance matrix: Q4_K fits a
 * scale and a min per 32 values by weighted least squares over a sweep of candidate scales,
 * Q6_K tries 19 scales around the max per 16 values; the sub-block scales are then quantized
 * against the super-block's largest and the values re-quantized with the stored scales.
 *
 * Same bytes means the same float operations in the same order: this file is built without
 * FMA (the baseline x86-64 target, like ggml's own quantizers in ggml-base), so no multiply-add
 * is fused behind our back.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * fp16 and bf16
 */
static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float nx__half_to_f32(nx_half_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, mant = h & 0x3ff;
    if (exp == 31) /* inf, nan (the payload kept, quieted as the hardware does) */
        return f32_from_bits(sign | 0x7f800000 | mant << 13 | (mant ? 0x400000 : 0));
    if (exp == 0) { /* zero and subnormals: mant * 2^-24, exact in fp32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
}

nx_half_t nx__f32_to_half(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000, mag = x & 0x7fffffff;
    if (mag > 0x7f800000) /* nan: a quiet nan of the same sign */
        return (nx_half_t)(sign | 0x7e00);
    if (mag >= 0x477ff000) /* >= 65520 rounds to infinity */
        return (nx_half_t)(sign | 0x7c00);
    if (mag < 0x38800000) { /* below 2^-14: a subnormal half, round(|f| * 2^24) to even */
        float scaled = f32_from_bits(mag) * 0x1p24f; /* exact: a power-of-two scaling */
        return (nx_half_t)(sign | (uint32_t)rintf(scaled)); /* 1024 is the smallest normal */
    }
    uint32_t half = ((mag >> 23) - 112) << 10 | (mag >> 13 & 0x3ff);
    uint32_t rest = mag & 0x1fff; /* the 13 bits dropped: round to nearest, ties to even */
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1)))
        half++; /* a carry into the exponent is the right answer, up to infinity */
    return (nx_half_t)(sign | half);
}

static float bf16_to_f32(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40); /* nan stays a (quiet) nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------------------------------
 * The table: which types, how big
 */
bool nx__quant_weight_ok(nx_dtype_t dtype)
{
    switch (dtype) {
    case NX_DT_F32: case NX_DT_F16: case NX_DT_BF16:
    case NX_DT_Q8_0: case NX_DT_Q4_0: case NX_DT_Q5_0: case NX_DT_Q4_K: case NX_DT_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Elements and bytes of one block (1 element for F32/F16/BF16); false for other dtypes. */
static bool block_shape(nx_dtype_t dtype, uint32_t *elems, uint32_t *bytes)
{
    switch (dtype) {
    case NX_DT_F32: *elems = 1, *bytes = 4; return true;
    case NX_DT_F16: case NX_DT_BF16: *elems = 1, *bytes = 2; return true;
    case NX_DT_Q8_0: *elems = NX_QK8_0, *bytes = sizeof(nx_bq8_0_t); return true;
    case NX_DT_Q4_0: *elems = NX_QK4_0, *bytes = sizeof(nx_bq4_0_t); return true;
    case NX_DT_Q5_0: *elems = NX_QK5_0, *bytes = sizeof(nx_bq5_0_t); return true;
    case NX_DT_Q4_K: *elems = NX_QK_K, *bytes = sizeof(nx_bq4_k_t); return true;
    case NX_DT_Q6_K: *elems = NX_QK_K, *bytes = sizeof(nx_bq6_k_t); return true;
    case NX_DT_Q8_K: *elems = NX_QK_K, *bytes = sizeof(nx_bq8_k_t); return true;
    default: return false;
    }
}

uint64_t nx__quant_row_bytes(nx_dtype_t dtype, uint64_t n)
{
    uint32_t elems, bytes;
    if (!block_shape(dtype, &elems, &bytes))
        return 0;
    return n / elems * bytes;
}

/* ------------------------------------------------------------------------------------------
 * Q8_0, Q4_0, Q5_0: one scale per 32 values, as ggml's reference quantizers compute it
 */

/* Round to nearest, ties to even, as ggml's K-quant code does: adding 1.5 * 2^23 leaves the
 * rounded integer in the low mantissa bits (|v| stays far below 2^22 wherever it is used).
 * Inline, unlike rintf: the Q4_K search rounds every value about 20 times. */
static int nearest_int(float v)
{
    uint32_t bits = f32_bits(v + 12582912.f);
    return (int)(bits & 0x7fffff) - 0x400000;
}

/* The element of largest magnitude (the first one when several tie), with its sign. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    return max;
}

static void quantize_q8_0(const float *x, nx_bq8_0_t *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, x += NX_QK8_0) {
        float amax = 0;
        for (int j = 0; j < NX_QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        y[b].d = nx__f32_to_half(d);
        for (int j = 0; j < NX_QK8_0; j++)
            y[b].qs[j] = (int8_t)roundf(x[j] * id); /* roundf: ties away from zero, as ggml */
    }
}

/* Q4_0 and Q5_0: the largest-magnitude element maps to -2^(bits-1) exactly; the others are
 * offset by 2^(bits-1) + 0.5 and truncated (so rounded half up), clamped to the top code. */
static void quantize_q4_0(const float *x, nx_bq4_0_t *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, x += NX_QK4_0) {
        float d = signed_absmax(x, NX_QK4_0) / -8, id = d ? 1.0f / d : 0.0f;
        y[b].d = nx__f32_to_half(d);
        for (int j = 0; j < NX_QK4_0 / 2; j++) {
            int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + 16] * id + 8.5f);
            y[b].qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
        }
    }
}

static void quantize_q5_0(const float *x, nx_bq5_0_t *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, x += NX_QK5_0) {
        float d = signed_absmax(x, NX_QK5_0) / -16, id = d ? 1.0f / d : 0.0f;
        y[b].d = nx__f32_to_half(d);
        uint32_t qh = 0;
        for (int j = 0; j < NX_QK5_0 / 2; j++) {
            int lo = (int8_t)(x[j] * id + 16.5f), hi = (int8_t)(x[j + 16] * id + 16.5f);
            lo = lo < 31 ? lo : 31, hi = hi < 31 ? hi : 31;
            y[b].qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
            qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, sizeof qh); /* little-endian, as ggml writes it */
    }
}

/* ------------------------------------------------------------------------------------------
 * Q4_K: per sub-block of 32 a scale and a min, fitted by weighted least squares
 */

/* Fit x[i] ~ scale * q[i] - min_out (q in [0, nmax], min_out >= 0) for n values with weights w:
 * start from the range, then for each candidate inverse scale (nmax + rmin + rdelta*step) /
 * range round the values, solve the 2x2 least-squares for scale and offset on those codes
 * (clamping a positive offset to 0) and keep the fit of least weighted squared error. This is
 * the search ggml runs for Q4_K without an importance matrix. Returns the scale; q[] holds
 * the chosen codes. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *q,
                           float *min_out, float rmin, float rdelta, int steps)
{
    float lo = x[0], hi = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (lo > 0)
        lo = 0; /* the offset only ever lowers values: codes start at 0 */
    if (hi == lo) {
        memset(q, 0, (size_t)n);
        *min_out = -lo;
        return 0;
    }
    float iscale = nmax / (hi - lo), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - lo));
        q[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * q[i] + lo - x[i];
        best += w[i] * diff * diff;
    }
    uint8_t trial[NX_QK_K];
    for (int step = 0; step <= steps; step++) {
        iscale = (rmin + rdelta * step + nmax) / (hi - lo);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - lo));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            trial[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float det = sum_w * sum_l2 - sum_l * sum_l;
        if (det <= 0)
            continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * trial[i] + this_min - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best) {
            memcpy(q, trial, (size_t)n);
            best = err;
            scale = this_scale;
            lo = this_min;
        }
    }
    *min_out = -lo;
    return scale;
}

/* Q4_K's 12 scale bytes: sub-blocks 0-3 keep scale and min in the low 6 bits of bytes 0-3 and
 * 4-7; sub-blocks 4-7 keep their low 4 bits in bytes 8-11 (scale low nibble, min high) and
 * their top 2 bits in the spare top bits of bytes 0-3 (scale) and 4-7 (min). */
static void q4k_pack_scales(uint8_t *scales, const uint8_t *sc, const uint8_t *mn)
{
    memset(scales, 0, 12);
    for (int s = 0; s < 8; s++) {
        if (s < 4) {
            scales[s] |= sc[s];
            scales[s + 4] |= mn[s];
        } else {
            scales[s + 4] = (uint8_t)((sc[s] & 15) | (mn[s] & 15) << 4);
            scales[s - 4] |= (uint8_t)((sc[s] >> 4) << 6);
            scales[s] |= (uint8_t)((mn[s] >> 4) << 6);
        }
    }
}

void nx__q4k_scale_min(const uint8_t *scales, int s, uint8_t *sc, uint8_t *mn)
{
    if (s < 4) {
        *sc = scales[s] & 63;
        *mn = scales[s + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4);
        *mn = (uint8_t)((scales[s + 4] >> 4) | (scales[s] >> 6) << 4);
    }
}

static void quantize_q4_k(const float *x, nx_bq4_k_t *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, x += NX_QK_K) {
        uint8_t codes[NX_QK_K], sc[8], mn[8];
        float scales[8], mins[8], max_scale = 0, max_min = 0;
        for (int s = 0; s < 8; s++) {
            const float *xs = x + 32 * s;
            float sum_x2 = 0, weights[32];
            for (int i = 0; i < 32; i++)
                sum_x2 += xs[i] * xs[i];
            float rms = sqrtf(sum_x2 / 32); /* weight: larger values matter more */
            for (int i = 0; i < 32; i++)
                weights[i] = rms + fabsf(xs[i]);
            scales[s] = fit_scale_min(32, 15, xs, weights, codes + 32 * s, &mins[s], -1.0f,
                                      0.1f, 20);
            max_scale = scales[s] > max_scale ? scales[s] : max_scale;
            max_min = mins[s] > max_min ? mins[s] : max_min;
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int s = 0; s < 8; s++) {
            int ls = nearest_int(inv_scale * scales[s]), lm = nearest_int(inv_min * mins[s]);
            sc[s] = (uint8_t)(ls < 63 ? ls : 63);
            mn[s] = (uint8_t)(lm < 63 ? lm : 63);
        }
        q4k_pack_scales(y[b].scales, sc, mn);
        y[b].d = nx__f32_to_half(max_scale / 63.f);
        y[b].dmin = nx__f32_to_half(max_min / 63.f);
        /* re-quantize against the scales as stored */
        float d = nx__half_to_f32(y[b].d), dmin = nx__half_to_f32(y[b].dmin);
        for (int s = 0; s < 8; s++) {
            float ds = d * sc[s], ms = dmin * mn[s];
            if (!ds)
                continue;
            for (int i = 0; i < 32; i++) {
                int l = nearest_int((x[32 * s + i] + ms) / ds);
                codes[32 * s + i] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
            }
        }
        for (int p = 0; p < 4; p++) /* sub-blocks 2p (low nibbles) and 2p+1 (high) */
            for (int i = 0; i < 32; i++)
                y[b].qs[32 * p + i] = (uint8_t)(codes[64 * p + i] | codes[64 * p + 32 + i] << 4);
    }
}

/* ------------------------------------------------------------------------------------------
 * Q6_K: per sub-block of 16 a signed scale from 19 candidates around the max
 */

/* Codes q[i] in [-nmax, nmax - 1] for n values and the scale that minimises the error weighted
 * by x^2 over the inverse scales -(nmax + 0.1*step)/max, step in [-9, 9] (the one at step 0
 * first), scale = least squares for the codes; ggml's search for Q6_K without an importance
 * matrix. Returns the scale; 0 (codes 0) for a block of zeros. */
static float fit_scale_signed(int n, int nmax, const float *x, int8_t *q)
{
    float max = signed_absmax(x, n);
    if (fabsf(max) < 1e-15f) {
        memset(q, 0, (size_t)n);
        return 0;
    }
    float best_scale = 0, best = 0;
    for (int step = 0; step <= 18; step++) {
        int offset = step == 0 ? 0 : step <= 9 ? step - 10 : step - 9; /* 0, -9..-1, 1..9 */
        float iscale = -(nmax + 0.1f * offset) / max;
        float sum_lx = 0, sum_l2 = 0;
        int8_t trial[16];
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            trial[i] = (int8_t)l;
            float w = x[i] * x[i];
            sum_lx += w * x[i] * l;
            sum_l2 += w * l * l;
        }
        if (step == 0) {
            memcpy(q, trial, (size_t)n);
            best_scale = sum_l2 ? sum_lx / sum_l2 : 0.0f;
            best = best_scale * sum_lx;
        } else if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
            memcpy(q, trial, (size_t)n);
            best_scale = sum_lx / sum_l2;
            best = best_scale * sum_lx;
        }
    }
    return best_scale;
}

static void quantize_q6_k(const float *x, nx_bq6_k_t *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, x += NX_QK_K) {
        int8_t codes[NX_QK_K];
        float scales[16], max_scale = 0, max_abs = 0;
        for (int s = 0; s < 16; s++) {
            scales[s] = fit_scale_signed(16, 32, x + 16 * s, codes + 16 * s);
            if (fabsf(scales[s]) > max_abs) {
                max_abs = fabsf(scales[s]);
                max_scale = scales[s];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        if (max_abs < 1e-15f)
            continue; /* all zeros: d = 0, every code 0 (stored as 32 - 32) */
        float iscale = -128.f / max_scale;
        y[b].d = nx__f32_to_half(1 / iscale);
        for (int s = 0; s < 16; s++) {
            int l = nearest_int(iscale * scales[s]);
            y[b].scales[s] = (int8_t)(l < 127 ? l : 127);
        }
        float d = nx__half_to_f32(y[b].d);
        uint8_t u[NX_QK_K]; /* codes + 32, in [0, 63] */
        for (int s = 0; s < 16; s++) {
            float ds = d * y[b].scales[s];
            for (int i = 0; i < 16; i++) {
                int l = codes[16 * s + i];
                if (ds) {
                    l = nearest_int(x[16 * s + i] / ds);
                    l = l < -32 ? -32 : l > 31 ? 31 : l;
                }
                u[16 * s + i] = (uint8_t)(l + 32);
            }
        }
        /* per half of 128: ql[l] = low nibbles of values l (low) and l+64 (high), ql[32+l]
         * those of l+32 and l+96; qh[l] the top 2 bits of l, l+32, l+64, l+96 */
        for (int h = 0; h < 2; h++) {
            const uint8_t *v = u + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((v[l] & 15) | (v[l + 64] & 15) << 4);
                ql[l + 32] = (uint8_t)((v[l + 32] & 15) | (v[l + 96] & 15) << 4);
                qh[l] = (uint8_t)(v[l] >> 4 | (v[l + 32] >> 4) << 2 | (v[l + 64] >> 4) << 4 |
                                  (v[l + 96] >> 4) << 6);
            }
        }
    }
}

/* Q6_K's 6-bit code of value j (0..255) of a block, in [0, 63]. */
static int q6k_code(const nx_bq6_k_t *blk, int j)
{
    int h = j / 128, l = j % 32, quarter = (j % 128) / 32; /* which of l, l+32, l+64, l+96 */
    uint8_t low = blk->ql[64 * h + l + 32 * (quarter & 1)];
    low = quarter >= 2 ? low >> 4 : low & 15;
    return low | ((blk->qh[32 * h + l] >> (2 * quarter)) & 3) << 4;
}

/* ------------------------------------------------------------------------------------------
 * Q8_K: activations (for tests and tools; the CPU matmul has its own activation format)
 */
static void quantize_q8_k(const float *x, nx_bq8_k_t *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, x += NX_QK_K) {
        float max = signed_absmax(x, NX_QK_K);
        memset(&y[b], 0, sizeof y[b]);
        if (max == 0)
            continue;
        float iscale = -127.f / max;
        for (int j = 0; j < NX_QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int s = 0; s < 16; s++) {
            int sum = 0;
            for (int i = 0; i < 16; i++)
                sum += y[b].qs[16 * s + i];
            y[b].bsums[s] = (int16_t)sum;
        }
        y[b].d = 1 / iscale;
    }
}

/* ------------------------------------------------------------------------------------------
 * Entry points
 */
int nx__quantize_row(nx_dtype_t dtype, const float *src, void *dst, uint64_t n)
{
    uint32_t elems, bytes;
    if (!block_shape(dtype, &elems, &bytes))
        return NX_ENOTSUP;
    if (n % elems)
        return NX_EINVAL;
    uint64_t blocks = n / elems;
    switch (dtype) {
    case NX_DT_F32: memcpy(dst, src, n * sizeof(float)); break;
    case NX_DT_F16:
        for (uint64_t i = 0; i < n; i++)
            ((nx_half_t *)dst)[i] = nx__f32_to_half(src[i]);
        break;
    case NX_DT_BF16:
        for (uint64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = f32_to_bf16(src[i]);
        break;
    case NX_DT_Q8_0: quantize_q8_0(src, dst, blocks); break;
    case NX_DT_Q4_0: quantize_q4_0(src, dst, blocks); break;
    case NX_DT_Q5_0: quantize_q5_0(src, dst, blocks); break;
    case NX_DT_Q4_K: quantize_q4_k(src, dst, blocks); break;
    case NX_DT_Q6_K: quantize_q6_k(src, dst, blocks); break;
    case NX_DT_Q8_K: quantize_q8_k(src, dst, blocks); break;
    default: return NX_ENOTSUP;
    }
    return NX_OK;
}

static void dequantize_q4_k(const nx_bq4_k_t *x, float *y, uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++, y += NX_QK_K) {
        float d = nx__half_to_f32(x[b].d), dmin = nx__half_to_f32(x[b].dmin);
        for (int s = 0; s < 8; s++) {
            uint8_t sc, mn;
            nx__q4k_scale_min(x[b].scales, s, &sc, &mn);
            float ds = d * sc, ms = dmin * mn;
            const uint8_t *q = x[b].qs + 32 * (s / 2);
            for (int i = 0; i < 32; i++)
                y[32 * s + i] = ds * ((s & 1) ? q[i] >> 4 : q[i] & 15) - ms;
        }
    }
}

void nx__dequantize_row(nx_dtype_t dtype, const void *src, float *dst, uint64_t n)
{
    switch (dtype) {
    case NX_DT_F32: memcpy(dst, src, n * sizeof(float)); return;
    case NX_DT_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = nx__half_to_f32(((const nx_half_t *)src)[i]);
        return;
    case NX_DT_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(((const uint16_t *)src)[i]);
        return;
    case NX_DT_Q8_0:
        for (uint64_t b = 0; b < n / NX_QK8_0; b++) {
            const nx_bq8_0_t *blk = (const nx_bq8_0_t *)src + b;
            float d = nx__half_to_f32(blk->d);
            for (int j = 0; j < NX_QK8_0; j++)
                dst[NX_QK8_0 * b + j] = d * blk->qs[j];
        }
        return;
    case NX_DT_Q4_0:
        for (uint64_t b = 0; b < n / NX_QK4_0; b++) {
            const nx_bq4_0_t *blk = (const nx_bq4_0_t *)src + b;
            float d = nx__half_to_f32(blk->d);
            for (int j = 0; j < 16; j++) {
                dst[NX_QK4_0 * b + j] = d * ((blk->qs[j] & 15) - 8);
                dst[NX_QK4_0 * b + j + 16] = d * ((blk->qs[j] >> 4) - 8);
            }
        }
        return;
    case NX_DT_Q5_0:
        for (uint64_t b = 0; b < n / NX_QK5_0; b++) {
            const nx_bq5_0_t *blk = (const nx_bq5_0_t *)src + b;
            float d = nx__half_to_f32(blk->d);
            uint32_t qh;
            memcpy(&qh, blk->qh, sizeof qh);
            for (int j = 0; j < 16; j++) {
                int lo = (blk->qs[j] & 15) | (int)((qh >> j) & 1) << 4;
                int hi = (blk->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                dst[NX_QK5_0 * b + j] = d * (lo - 16);
                dst[NX_QK5_0 * b + j + 16] = d * (hi - 16);
            }
        }
        return;
    case NX_DT_Q4_K: dequantize_q4_k(src, dst, n / NX_QK_K); return;
    case NX_DT_Q6_K:
        for (uint64_t b = 0; b < n / NX_QK_K; b++) {
            const nx_bq6_k_t *blk = (const nx_bq6_k_t *)src + b;
            float d = nx__half_to_f32(blk->d);
            for (int j = 0; j < NX_QK_K; j++)
                dst[NX_QK_K * b + j] = d * blk->scales[j / 16] * (q6k_code(blk, j) - 32);
        }
        return;
    case NX_DT_Q8_K:
        for (uint64_t b = 0; b < n / NX_QK_K; b++) {
            const nx_bq8_k_t *blk = (const nx_bq8_k_t *)src + b;
            for (int j = 0; j < NX_QK_K; j++)
                dst[NX_QK_K * b + j] = blk->d * blk->qs[j];
        }
        return;
    default:
        return; /* not a weight dtype: the engine's checks keep these out */
    }
}
