/* test_cpu_quant_forward.c — the CPU backend's forward pass over quantized weights. A small
 * random Qwen3-shaped model (dims multiples of 256, q/k norms, GQA, 2 layers) is quantized
 * into each block type (and a Q4_K_M-like mix: Q4_K with Q6_K for v, down and the head); the
 * reference is the same backend on those very weights dequantized to F32, so the only
 * difference is that the quantized path also quantizes its matmul inputs to int8. The backend
 * table (nx__cpu_backend) is driven directly, with host buffers as weights and a CPU pool for
 * the KV caches.
 *
 * Tolerance. An int8 activation with one scale per block of B values is off by at most
 * amax / 254 per value (32-value blocks; 256-value blocks for Q4_K/Q6_K, whose amax is larger
 * relative to the rms); rounding errors are independent, so a dot product over k values moves
 * by about rms(w) * sqrt(k) * amax / (254 * sqrt(3)), a fraction ~ (amax / rms(x)) / 440 of its
 * typical size: ~0.7% for 32 values (amax/rms ~ 3), ~1% for 256 (amax/rms ~ 4). Seven matmuls a
 * layer, two layers and the head add such errors roughly in quadrature: a few percent of the
 * logits' rms. The test asks rms(diff) <= 4% and max |diff| <= 25% of rms(logits) (measured
 * here: rms 1.4% for the 32-value types, 1.9% for Q4_K/Q6_K; max 5-8%), and greedy picks equal
 * wherever the reference's top two logits are more than 5 rms(diff) apart. Batched and
 * one-token-at-a-time runs, one thread or two, and every kernel path agree bit for bit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "cpu_quant.h"
#include "quant.h"

#define HIDDEN 256
#define INTER 512
#define LAYERS 2
#define HEADS 4
#define KV_HEADS 2
#define HEAD_DIM 64
#define VOCAB 512
#define PROMPT 8

static uint32_t rng_state = 777;

static float uniform(void) /* [-1, 1) */
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 8388608.0f - 1.0f;
}

/* The model as F32 floats; matrices quantized per variant. */
typedef struct fmodel {
    float *embed, *norm, *lm_head;
    float *attn_norm[LAYERS], *mlp_norm[LAYERS], *q_norm[LAYERS], *k_norm[LAYERS];
    float *q[LAYERS], *k[LAYERS], *v[LAYERS], *o[LAYERS];
    float *gate[LAYERS], *up[LAYERS], *down[LAYERS];
} fmodel_t;

static float *random_matrix(uint32_t rows, uint32_t cols, float scale)
{
    float *m = malloc((size_t)rows * cols * sizeof *m);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        m[i] = scale * uniform();
    return m;
}

static float *norm_vector(uint32_t n)
{
    float *v = malloc(n * sizeof *v);
    for (uint32_t i = 0; i < n; i++)
        v[i] = 1.0f + 0.2f * uniform();
    return v;
}

static void fmodel_make(fmodel_t *m)
{
    float in_scale = 1.7f / sqrtf(HIDDEN), inter_scale = 1.7f / sqrtf(INTER);
    m->embed = random_matrix(VOCAB, HIDDEN, 1.0f);
    m->lm_head = random_matrix(VOCAB, HIDDEN, in_scale * 3);
    m->norm = norm_vector(HIDDEN);
    for (int l = 0; l < LAYERS; l++) {
        m->attn_norm[l] = norm_vector(HIDDEN);
        m->mlp_norm[l] = norm_vector(HIDDEN);
        m->q_norm[l] = norm_vector(HEAD_DIM);
        m->k_norm[l] = norm_vector(HEAD_DIM);
        m->q[l] = random_matrix(HEADS * HEAD_DIM, HIDDEN, in_scale);
        m->k[l] = random_matrix(KV_HEADS * HEAD_DIM, HIDDEN, in_scale);
        m->v[l] = random_matrix(KV_HEADS * HEAD_DIM, HIDDEN, in_scale);
        m->o[l] = random_matrix(HIDDEN, HEADS * HEAD_DIM, in_scale);
        m->gate[l] = random_matrix(INTER, HIDDEN, in_scale);
        m->up[l] = random_matrix(INTER, HIDDEN, in_scale);
        m->down[l] = random_matrix(HIDDEN, INTER, inter_scale);
    }
}

/* Buffers a weights table points into, freed together. */
typedef struct arena {
    void *blocks[64];
    int count;
} arena_t;

/* A matrix as dtype (quantized), or dequantized back to F32 when `dequantized`. */
static nx__wref_t matrix(arena_t *a, const float *src, uint32_t rows, uint32_t cols,
                         nx_dtype_t dtype, bool dequantized)
{
    uint64_t row_bytes = nx__quant_row_bytes(dtype, cols);
    uint8_t *q = malloc(row_bytes * rows);
    for (uint32_t r = 0; r < rows; r++)
        assert_int_equal(nx__quantize_row(dtype, src + (size_t)r * cols, q + r * row_bytes,
                                          cols), NX_OK);
    if (!dequantized) {
        a->blocks[a->count++] = q;
        return (nx__wref_t){q, dtype, rows, cols};
    }
    float *f = malloc((size_t)rows * cols * sizeof *f);
    for (uint32_t r = 0; r < rows; r++)
        nx__dequantize_row(dtype, q + r * row_bytes, f + (size_t)r * cols, cols);
    free(q);
    a->blocks[a->count++] = f;
    return (nx__wref_t){f, NX_DT_F32, rows, cols};
}

static nx__wref_t vector(const float *v, uint32_t n)
{
    return (nx__wref_t){v, NX_DT_F32, n, 1};
}

/* Which dtype each kind of matrix gets in a variant. */
typedef struct variant {
    const char *name;
    nx_dtype_t base;  /* q, k, o, gate, up, embed */
    nx_dtype_t heavy; /* v, down, lm_head (Q4_K_M gives these Q6_K) */
} variant_t;

static void weights_make(const fmodel_t *m, const variant_t *v, bool dequantized, arena_t *a,
                         nx__weights_t *w, nx__layer_weights_t *layers)
{
    memset(w, 0, sizeof *w);
    memset(layers, 0, LAYERS * sizeof *layers);
    w->embed = matrix(a, m->embed, VOCAB, HIDDEN, v->base, dequantized);
    w->lm_head = matrix(a, m->lm_head, VOCAB, HIDDEN, v->heavy, dequantized);
    w->norm = vector(m->norm, HIDDEN);
    for (int l = 0; l < LAYERS; l++) {
        nx__layer_weights_t *lw = &layers[l];
        lw->attn_norm = vector(m->attn_norm[l], HIDDEN);
        lw->mlp_norm = vector(m->mlp_norm[l], HIDDEN);
        lw->q_norm = vector(m->q_norm[l], HEAD_DIM);
        lw->k_norm = vector(m->k_norm[l], HEAD_DIM);
        lw->q = matrix(a, m->q[l], HEADS * HEAD_DIM, HIDDEN, v->base, dequantized);
        lw->k = matrix(a, m->k[l], KV_HEADS * HEAD_DIM, HIDDEN, v->base, dequantized);
        lw->v = matrix(a, m->v[l], KV_HEADS * HEAD_DIM, HIDDEN, v->heavy, dequantized);
        lw->o = matrix(a, m->o[l], HIDDEN, HEADS * HEAD_DIM, v->base, dequantized);
        lw->gate = matrix(a, m->gate[l], INTER, HIDDEN, v->base, dequantized);
        lw->up = matrix(a, m->up[l], INTER, HIDDEN, v->base, dequantized);
        lw->down = matrix(a, m->down[l], HIDDEN, INTER, v->heavy, dequantized);
    }
    w->layers = layers;
}

static void arena_free(arena_t *a)
{
    for (int i = 0; i < a->count; i++)
        free(a->blocks[i]);
    a->count = 0;
}

static nx_model_config_t config(void)
{
    nx_model_config_t c = {.arch = NX_ARCH_QWEN3, .hidden = HIDDEN, .intermediate = INTER,
                           .layers = LAYERS, .heads = HEADS, .kv_heads = KV_HEADS,
                           .head_dim = HEAD_DIM, .vocab = VOCAB, .max_position = 64,
                           .rms_eps = 1e-6f, .rope_theta = 10000.0, .qk_norm = true,
                           .bos_id = -1};
    snprintf(c.model_type, sizeof c.model_type, "qwen3");
    return c;
}

static const int32_t prompt[PROMPT] = {5, 300, 17, 511, 42, 42, 256, 99};

/* logits[PROMPT][VOCAB] of the prompt in one batch (batched) or one token a step. */
static void run_prompt(const nx__weights_t *w, nx_pool_t *pool, uint32_t threads, bool batched,
                       float *logits)
{
    nx_model_config_t c = config();
    nx_engine_opts_t opts = {.threads = threads};
    nx_err_t err = {0};
    void *state = NULL;
    assert_int_equal(nx__cpu_backend.init(&c, w, pool, &opts, &state, &err), NX_OK);
    nx__kv_t kv = {0};
    assert_int_equal(nx__cpu_backend.kv_alloc(state, 16, "test", &kv, &err), NX_OK);
    uint32_t step = batched ? PROMPT : 1;
    for (uint32_t first = 0; first < PROMPT; first += step) {
        uint32_t positions[PROMPT], row_seq[PROMPT] = {0}, logit_rows[PROMPT];
        float *out[PROMPT];
        for (uint32_t i = 0; i < step; i++) {
            positions[i] = first + i;
            logit_rows[i] = i;
            out[i] = logits + (size_t)(first + i) * VOCAB;
        }
        nx__batch_seq_t seq = {.kv = &kv, .row_first = 0, .row_count = step, .pos_first = first};
        nx__batch_t b = {.tokens = prompt + first, .positions = positions, .row_seq = row_seq,
                         .rows = step, .seqs = &seq, .seq_count = 1, .logit_rows = logit_rows,
                         .logit_out = out, .logit_count = step};
        assert_int_equal(nx__cpu_backend.forward(state, &b, &err), NX_OK);
    }
    nx__cpu_backend.kv_free(state, &kv);
    nx__cpu_backend.destroy(state);
}

static int argmax(const float *v, uint32_t n, float *gap)
{
    int best = 0, second = -1;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) {
            second = best;
            best = (int)i;
        } else if (second < 0 || v[i] > v[second]) {
            second = (int)i;
        }
    *gap = v[best] - v[second];
    return best;
}

static void fmodel_free(fmodel_t *m)
{
    free(m->embed), free(m->lm_head), free(m->norm);
    for (int l = 0; l < LAYERS; l++) {
        float *all[] = {m->attn_norm[l], m->mlp_norm[l], m->q_norm[l], m->k_norm[l], m->q[l],
                        m->k[l], m->v[l], m->o[l], m->gate[l], m->up[l], m->down[l]};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            free(all[i]);
    }
}

typedef struct fixture {
    fmodel_t model;
    nx_pool_t *pool;
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    fmodel_make(&fx->model);
    nx_pool_opts_t popts = {.device = NX_DEVICE_CPU, .bytes = 16ull << 20};
    nx_err_t err = {0};
    fx->pool = nx_pool_new(&popts, &err);
    *state = fx;
    return fx->pool ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    nx_pool_destroy(&fx->pool);
    fmodel_free(&fx->model);
    free(fx);
    return 0;
}

static void check_variant(fixture_t *fx, const variant_t *v)
{
    arena_t quant_arena = {0}, ref_arena = {0};
    nx__weights_t wq, wr;
    nx__layer_weights_t lq[LAYERS], lr[LAYERS];
    weights_make(&fx->model, v, false, &quant_arena, &wq, lq);
    weights_make(&fx->model, v, true, &ref_arena, &wr, lr);
    size_t count = (size_t)PROMPT * VOCAB;
    float *got = malloc(count * sizeof *got), *ref = malloc(count * sizeof *ref);
    float *solo = malloc(count * sizeof *solo), *threads1 = malloc(count * sizeof *threads1);
    run_prompt(&wq, fx->pool, 2, true, got);
    run_prompt(&wr, fx->pool, 2, true, ref);
    run_prompt(&wq, fx->pool, 2, false, solo);
    run_prompt(&wq, fx->pool, 1, true, threads1);
    if (memcmp(got, solo, count * sizeof *got) != 0)
        fail_msg("%s: one token a step differs from the batched prompt", v->name);
    if (memcmp(got, threads1, count * sizeof *got) != 0)
        fail_msg("%s: one thread differs from two", v->name);
    double sum_sq = 0, diff_sq = 0, max_diff = 0;
    for (size_t i = 0; i < count; i++) {
        double d = (double)got[i] - ref[i];
        sum_sq += (double)ref[i] * ref[i];
        diff_sq += d * d;
        max_diff = fabs(d) > max_diff ? fabs(d) : max_diff;
    }
    double rms = sqrt(sum_sq / count), rms_diff = sqrt(diff_sq / count);
    int picks_checked = 0;
    for (int r = 0; r < PROMPT; r++) {
        float gap, gap_got;
        int want = argmax(ref + (size_t)r * VOCAB, VOCAB, &gap);
        int have = argmax(got + (size_t)r * VOCAB, VOCAB, &gap_got);
        if (gap > 5 * rms_diff) {
            picks_checked++;
            if (want != have)
                fail_msg("%s row %d: greedy pick %d, reference %d (gap %.3g)", v->name, r,
                         have, want, gap);
        }
    }
    printf("  %-7s rms(logits) %.3f  rms(diff) %.4f (%.2f%%)  max|diff| %.4f (%.1f%%)  "
           "picks checked %d/%d\n", v->name, rms, rms_diff, 100 * rms_diff / rms, max_diff,
           100 * max_diff / rms, picks_checked, PROMPT);
    assert_true(rms > 0.5); /* logits of a working model, not noise around zero */
    if (rms_diff > 0.04 * rms || max_diff > 0.25 * rms)
        fail_msg("%s: logits off the dequantized model's by rms %.4f, max %.4f (rms %.3f)",
                 v->name, rms_diff, max_diff, rms);
    assert_true(picks_checked >= PROMPT / 2);
    free(got);
    free(ref);
    free(solo);
    free(threads1);
    arena_free(&quant_arena);
    arena_free(&ref_arena);
}

static void test_q8_0(void **state) { check_variant(*state, &(variant_t){"Q8_0", NX_DT_Q8_0, NX_DT_Q8_0}); }
static void test_q4_0(void **state) { check_variant(*state, &(variant_t){"Q4_0", NX_DT_Q4_0, NX_DT_Q4_0}); }
static void test_q5_0(void **state) { check_variant(*state, &(variant_t){"Q5_0", NX_DT_Q5_0, NX_DT_Q5_0}); }
static void test_q4_k(void **state) { check_variant(*state, &(variant_t){"Q4_K", NX_DT_Q4_K, NX_DT_Q4_K}); }
static void test_q6_k(void **state) { check_variant(*state, &(variant_t){"Q6_K", NX_DT_Q6_K, NX_DT_Q6_K}); }
static void test_q4_k_m(void **state) { check_variant(*state, &(variant_t){"Q4_K_M", NX_DT_Q4_K, NX_DT_Q6_K}); }
static void test_mixed_families(void **state) { check_variant(*state, &(variant_t){"Q8+Q6K", NX_DT_Q8_0, NX_DT_Q6_K}); }

/* Every path gives the same logits (the kernels' sums are exact integers). */
static void test_paths_agree(void **state)
{
    fixture_t *fx = *state;
    variant_t v = {"Q4_K_M", NX_DT_Q4_K, NX_DT_Q6_K};
    arena_t arena = {0};
    nx__weights_t w;
    nx__layer_weights_t layers[LAYERS];
    weights_make(&fx->model, &v, false, &arena, &w, layers);
    size_t count = (size_t)PROMPT * VOCAB;
    float *first = NULL;
    nx__q_path_t original = nx__q_path();
    for (nx__q_path_t path = NX__Q_PLAIN; path <= NX__Q_AVX512; path++) {
        if (!nx__q_set_path(path))
            continue;
        float *logits = malloc(count * sizeof *logits);
        run_prompt(&w, fx->pool, 2, true, logits);
        if (!first)
            first = logits;
        else if (memcmp(first, logits, count * sizeof *logits) != 0)
            fail_msg("path %d gives other logits than the plain path", (int)path);
        else
            free(logits);
    }
    nx__q_set_path(original);
    free(first);
    arena_free(&arena);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0),   cmocka_unit_test(test_q4_0),
        cmocka_unit_test(test_q5_0),   cmocka_unit_test(test_q4_k),
        cmocka_unit_test(test_q6_k),   cmocka_unit_test(test_q4_k_m),
        cmocka_unit_test(test_mixed_families), cmocka_unit_test(test_paths_agree),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
