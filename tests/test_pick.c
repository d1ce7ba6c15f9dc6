/* test_pick.c — token picks done by the engine (nx_seq_pick_next): on the CPU backend they
 * give exactly what nx_sampler_pick gives on the same logits with the same seed; the GPU's
 * pick kernel (cuda_sample.cu, through nx__cuda_pick_rows) gives the CPU sampler's greedy ids
 * exactly, and sampled ids that respect every filter and agree with the CPU's on the same
 * draw (the GPU sums weights in float, the CPU in double, so a draw that falls within rounding
 * of a boundary may land on the neighbour). The GPU tests are skipped without a GPU; `make
 * emu-test` runs them on the CPU emulation of tests/cuemu (not the hardware, not speed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpu_tests.h"

#include "backend.h"
#include "grammar.h"
#include "synth.h"
#include "tiny_model.h"

static nx_sampling_t sampling(float temperature, uint32_t top_k, float top_p, float min_p,
                              float penalty, uint64_t seed)
{
    nx_sampling_t s = nx_sampling_default();
    s.temperature = temperature;
    s.top_k = top_k;
    s.top_p = top_p;
    s.min_p = min_p;
    s.repetition_penalty = penalty;
    s.seed = seed;
    return s;
}

static nx_sampler_t *make(nx_sampling_t s, uint32_t vocab)
{
    nx_err_t err = {0};
    nx_sampler_t *sampler = nx_sampler_new(&s, vocab, &err);
    if (!sampler)
        fail_msg("nx_sampler_new: %s", err.msg);
    return sampler;
}

/* ------------------------------------------------------------------------------------------
 * The engine's picks on the CPU backend
 */
typedef tiny_model_t cpu_fixture_t;

static int cpu_setup(void **state)
{
    cpu_fixture_t *f = calloc(1, sizeof *f);
    if (tiny_model_open(f, "pick", 11, 256) != 0)
        return -1;
    *state = f;
    return 0;
}

static int cpu_teardown(void **state)
{
    tiny_model_close(*state);
    free(*state);
    return 0;
}

/* A sequence picking with sampler A and one returning logits, picked on the host with an
 * identically seeded sampler B, give the same ids step after step; the picking sequence has no
 * logits, the other no pick. */
static void test_cpu_picks_equal_sampler(void **state)
{
    cpu_fixture_t *f = *state;
    nx_err_t err = {0};
    uint32_t vocab = nx_engine_config(f->engine)->vocab;
    nx_sampling_t s = sampling(0.9f, 40, 0.9f, 0.02f, 1.3f, 1234);
    nx_sampler_t *a = make(s, vocab), *b = make(s, vocab);
    nx_seq_t *picking = nx_seq_new(f->engine, 0, false, &err);
    nx_seq_t *plain = nx_seq_new(f->engine, 0, false, &err);
    assert_non_null(picking);
    assert_non_null(plain);
    int32_t history[64] = {5, 17, 17, 99, 3};
    size_t len = 5;
    assert_int_equal(nx_seq_feed(picking, history, len, &err), NX_OK);
    assert_int_equal(nx_seq_feed(plain, history, len, &err), NX_OK);
    int differ = 0;
    for (int step = 0; step < 12; step++) {
        assert_int_equal(nx_seq_pick_next(picking, a, history, len, &err), NX_OK);
        nx_seq_t *both[2] = {picking, plain};
        assert_int_equal(nx_engine_step(f->engine, both, 2, &err), NX_OK);
        size_t rows = 7;
        assert_null(nx_seq_logits(picking, &rows));
        assert_int_equal(rows, 0);
        assert_int_equal(nx_seq_picked(plain), -1);
        const float *logits = nx_seq_logits(plain, &rows);
        assert_non_null(logits);
        assert_int_equal(rows, 1);
        int32_t want = nx_sampler_pick(b, logits, history, len);
        int32_t got = nx_seq_picked(picking);
        assert_int_equal(got, want);
        differ += step > 0 && got != history[len - 1];
        history[len++] = got;
        assert_int_equal(nx_seq_feed(picking, &got, 1, &err), NX_OK);
        assert_int_equal(nx_seq_feed(plain, &got, 1, &err), NX_OK);
    }
    assert_true(differ > 0); /* the picks are not one id repeated */
    /* a pick lasts one step: the next step returns logits again */
    nx_seq_t *one[1] = {picking};
    assert_int_equal(nx_engine_step(f->engine, one, 1, &err), NX_OK);
    assert_int_equal(nx_seq_picked(picking), -1);
    assert_non_null(nx_seq_logits(picking, NULL));

    nx_seq_t *all = nx_seq_new(f->engine, 0, true, &err);
    assert_non_null(all);
    assert_int_equal(nx_seq_pick_next(all, a, NULL, 0, &err), NX_EINVAL);
    nx_seq_destroy(f->engine, &all);
    nx_seq_destroy(f->engine, &picking);
    nx_seq_destroy(f->engine, &plain);
    nx_sampler_destroy(&a);
    nx_sampler_destroy(&b);
}

/* nx_generate (which now picks through the engine) is reproducible with a seed. */
static void test_cpu_generate_reproducible(void **state)
{
    cpu_fixture_t *f = *state;
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(f->dir, &err);
    assert_non_null(tok);
    int32_t prompt[4] = {7, 8, 9, 10};
    nx_sampling_t s = sampling(1.0f, 0, 0.95f, 0.0f, 1.1f, 99);
    s.max_tokens = 16;
    int32_t first[16];
    size_t first_count = 0;
    for (int run = 0; run < 2; run++) {
        nx_seq_t *seq = nx_seq_new(f->engine, 0, false, &err);
        nx_gen_result_t r;
        assert_int_equal(nx_generate(f->engine, seq, tok, prompt, 4, &s, NULL, 0, NULL, NULL,
                                     &r, &err),
                         NX_OK);
        if (run == 0) {
            first_count = r.count;
            memcpy(first, r.ids, r.count * sizeof *r.ids);
        } else {
            assert_int_equal(r.count, first_count);
            assert_memory_equal(r.ids, first, r.count * sizeof *r.ids);
        }
        nx_gen_result_free(&r);
        nx_seq_destroy(f->engine, &seq);
    }
    assert_true(first_count > 0);
    nx_tokenizer_destroy(&tok);
}

/* ------------------------------------------------------------------------------------------
 * The GPU pick kernel against the CPU sampler
 */
static uint32_t rng_next(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*x >> 33);
}

static float rng_uniform(uint64_t *x)
{
    return (float)rng_next(x) / 2147483648.0f; /* [0, 1) */
}

/* Logits of one row: spread `spread`; quantized to steps of 0.25 when `ties` (equal logits). */
static void fill_row(float *row, uint32_t vocab, float spread, bool ties, uint64_t *x)
{
    for (uint32_t i = 0; i < vocab; i++) {
        float v = (rng_uniform(x) - 0.5f) * spread;
        if (rng_next(x) % 50 == 0)
            v += spread; /* a few clear favourites */
        row[i] = ties ? roundf(v * 4.0f) / 4.0f : v;
    }
}

typedef struct cand {
    double logit;
    uint32_t id;
} cand_t;

static int by_rank(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;
    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Whether `id` is allowed by the plan's filters on `row` (already penalized), with a little
 * slack on the top-p cut for float sums. */
static bool allowed(const float *row, uint32_t vocab, const nx__pick_t *p, int32_t id)
{
    cand_t *c = malloc(vocab * sizeof *c);
    for (uint32_t i = 0; i < vocab; i++)
        c[i] = (cand_t){isnan(row[i]) ? -INFINITY : row[i], i};
    qsort(c, vocab, sizeof *c, by_rank);
    uint32_t n = p->top_k > 0 && p->top_k < vocab ? p->top_k : vocab;
    double total = 0, before = 0;
    bool seen = false, ok = false;
    for (uint32_t i = 0; i < n; i++)
        total += exp((c[i].logit - c[0].logit) / p->temperature);
    for (uint32_t i = 0; i < n && !seen; i++) {
        double w = exp((c[i].logit - c[0].logit) / p->temperature);
        if (c[i].id == (uint32_t)id) {
            seen = true;
            ok = w > 0 && w >= p->min_p * (1 - 1e-5) &&
                 (p->top_p >= 1.0f || before < p->top_p * total * (1 + 1e-5));
        }
        before += w;
    }
    free(c);
    return ok;
}

static bool mask_has(const nx__pick_t *p, uint32_t id)
{
    return !p->allow || (id < p->allow_bits && (p->allow[id >> 5] >> (id & 31) & 1));
}

/* A grammar-like mask for row r: a few allowed ids (most rows), about a tenth, or a single
 * one; allow_bits sometimes short of the vocabulary (the ids past it are disallowed). */
static void fill_mask(uint32_t *mask, uint32_t vocab, uint32_t r, uint64_t *x,
                      uint32_t *bits_out)
{
    uint32_t words = (vocab + 31) / 32;
    memset(mask, 0, words * sizeof *mask);
    uint32_t bits = r % 4 == 3 ? vocab - vocab / 7 : vocab;
    uint32_t kind = r % 3;
    if (kind == 0) {
        for (int i = 0; i < 5; i++) {
            uint32_t id = rng_next(x) % bits;
            mask[id >> 5] |= 1u << (id & 31);
        }
    } else if (kind == 1) {
        for (uint32_t id = 0; id < bits; id++)
            if (rng_next(x) % 10 == 0)
                mask[id >> 5] |= 1u << (id & 31);
    }
    uint32_t one = rng_next(x) % bits; /* at least one id */
    mask[one >> 5] |= 1u << (one & 31);
    for (uint32_t id = bits; id < words * 32; id++) /* set past allow_bits: must not count */
        mask[id >> 5] |= 1u << (id & 31);
    *bits_out = bits;
}

/* Plans for `rows` rows of every kind; CPU ids by nx__sampler_pick_plan, GPU ids by the
 * kernel; penalty ids copied out of the samplers (they are only valid until the next plan).
 * masked: every plan carries a grammar mask (pick.h allow), and both sides must pick inside
 * it. */
static void compare_rows_masked(uint32_t vocab, uint32_t rows, uint64_t seed, bool greedy,
                                bool masked)
{
    /* calloc: gcc -O1 (make asan) cannot see the loop below fill it */
    float *logits = calloc((size_t)rows * vocab, sizeof *logits);
    float *penalized = malloc((size_t)rows * vocab * sizeof *penalized);
    nx__pick_t *plans = calloc(rows, sizeof *plans);
    int32_t *pen = malloc((size_t)rows * 64 * sizeof *pen);
    int32_t *cpu = malloc(rows * sizeof *cpu), *gpu = malloc(rows * sizeof *gpu);
    uint32_t words = (vocab + 31) / 32;
    uint32_t *masks = calloc((size_t)rows * words, sizeof *masks);
    static const uint32_t top_ks[] = {0, 1, 5, 50, 999, 1000, 3};
    static const float top_ps[] = {1.0f, 0.9f, 0.5f, 0.05f};
    static const float min_ps[] = {0.0f, 0.05f, 0.3f};
    static const float temps[] = {0.5f, 1.0f, 1.7f};
    uint64_t x = seed;
    for (uint32_t r = 0; r < rows; r++) {
        float *row = logits + (size_t)r * vocab;
        fill_row(row, vocab, 4.0f + (float)(r % 5) * 3.0f, r % 3 == 1, &x);
        if (r % 11 == 4)
            row[rng_next(&x) % vocab] = NAN;
        if (greedy && r == rows - 1)
            for (uint32_t i = 0; i < vocab; i++)
                row[i] = -INFINITY; /* nothing possible: id 0 */
        nx_sampling_t s = greedy ? sampling(0.0f, 0, 1.0f, 0.0f, r % 2 ? 1.3f : 1.0f, r)
                                 : sampling(temps[r % 3], top_ks[r % 7] % (vocab + 1),
                                            top_ps[(r / 3) % 4], min_ps[(r / 2) % 3],
                                            r % 4 == 0 ? 1.2f : 1.0f, seed + r);
        nx_sampler_t *sampler = make(s, vocab);
        int32_t history[48];
        for (int i = 0; i < 48; i++)
            history[i] = (int32_t)(rng_next(&x) % vocab);
        uint32_t *mask = masks + (size_t)r * words, bits = 0;
        if (masked) {
            fill_mask(mask, vocab, r, &x, &bits);
            nx__sampler_set_allow(sampler, mask, bits);
        }
        nx__sampler_plan(sampler, history, 48, &plans[r]);
        assert_true(plans[r].allow == (masked ? mask : NULL));
        memcpy(pen + (size_t)r * 64, plans[r].penalty_ids,
               plans[r].penalty_count * sizeof *pen);
        plans[r].penalty_ids = plans[r].penalty_count ? pen + (size_t)r * 64 : NULL;
        cpu[r] = nx__sampler_pick_plan(sampler, &plans[r], row);
        nx_sampler_destroy(&sampler);
        memcpy(penalized + (size_t)r * vocab, row, vocab * sizeof *row);
        for (uint32_t i = 0; i < vocab; i++)
            if (!mask_has(&plans[r], i))
                penalized[(size_t)r * vocab + i] = -INFINITY;
        for (uint32_t i = 0; i < plans[r].penalty_count; i++) {
            float *l = penalized + (size_t)r * vocab + plans[r].penalty_ids[i];
            *l = *l < 0 ? *l * plans[r].repetition_penalty : *l / plans[r].repetition_penalty;
        }
    }
    nx_err_t err = {0};
    if (nx__cuda_pick_rows(logits, rows, vocab, plans, gpu, &err) != NX_OK)
        fail_msg("nx__cuda_pick_rows: %s", err.msg);
    uint32_t agree = 0;
    for (uint32_t r = 0; r < rows; r++) {
        if (gpu[r] < 0 || (uint32_t)gpu[r] >= vocab)
            fail_msg("row %u: the GPU picked %d, outside the vocabulary of %u", r, gpu[r],
                     vocab);
        if (!mask_has(&plans[r], (uint32_t)gpu[r]) || !mask_has(&plans[r], (uint32_t)cpu[r]))
            fail_msg("row %u: GPU id %d or CPU id %d is outside the mask", r, gpu[r], cpu[r]);
        if (greedy && gpu[r] != cpu[r])
            fail_msg("row %u: greedy GPU id %d, CPU id %d", r, gpu[r], cpu[r]);
        if (!greedy && !allowed(penalized + (size_t)r * vocab, vocab, &plans[r], gpu[r]))
            fail_msg("row %u (T %.2f, top_k %u, top_p %.2f, min_p %.2f): the GPU picked %d, "
                     "which the filters exclude (CPU: %d)", r, (double)plans[r].temperature,
                     plans[r].top_k, (double)plans[r].top_p, (double)plans[r].min_p, gpu[r],
                     cpu[r]);
        agree += gpu[r] == cpu[r];
    }
    print_message("%s%s, vocab %u: GPU and CPU ids agree on %u of %u rows\n",
                  greedy ? "greedy" : "sampled", masked ? " under masks" : "", vocab, agree,
                  rows);
    assert_true(agree * 100 >= rows * 95);
    free(logits);
    free(penalized);
    free(plans);
    free(pen);
    free(cpu);
    free(gpu);
    free(masks);
}

static void compare_rows(uint32_t vocab, uint32_t rows, uint64_t seed, bool greedy)
{
    compare_rows_masked(vocab, rows, seed, greedy, false);
}

static void test_gpu_greedy_picks_equal_cpu(void **state)
{
    NEED_GPU();
    compare_rows(1000, 24, 1, true);
    compare_rows(151936, 2, 2, true); /* Qwen's vocabulary */
}

static void test_gpu_sampled_picks_follow_cpu(void **state)
{
    NEED_GPU();
    /* the fast path (a sorted prefix of the ranking in shared memory) wherever it applies */
    compare_rows(1000, 84, 3, false);
    compare_rows(151936, 7, 4, false);
    /* the exact search over the whole row, which decides where the fast path cannot */
    setenv("NEXUS_CUDA_PICK", "exact", 1);
    compare_rows(1000, 84, 3, false);
    compare_rows(151936, 3, 4, false);
    unsetenv("NEXUS_CUDA_PICK");
}

/* Under grammar masks the GPU picks inside the mask, greedy exactly as the CPU (the last
 * greedy row, all -inf, falls back to the lowest allowed id on both), sampled following the
 * same constrained distribution on both paths of the kernel. */
static void test_gpu_masked_picks_equal_cpu(void **state)
{
    NEED_GPU();
    compare_rows_masked(1000, 24, 5, true, true);
    compare_rows_masked(151936, 3, 6, true, true);
    compare_rows_masked(1000, 84, 7, false, true);
    compare_rows_masked(151936, 3, 8, false, true);
    setenv("NEXUS_CUDA_PICK", "exact", 1);
    compare_rows_masked(1000, 84, 7, false, true);
    unsetenv("NEXUS_CUDA_PICK");
}

/* A deferred mask (nx__seq_defer_mask) for the GPU engine test: counts its calls, allows one
 * id or fails. */
typedef struct gpu_probe {
    uint32_t vocab;
    int calls;
    int32_t allow_id;
    int fail;
} gpu_probe_t;

static int gpu_probe_mask(void *user, uint32_t *words, uint32_t word_count,
                          uint32_t *allow_bits_out, nx_err_t *err)
{
    gpu_probe_t *p = user;
    p->calls++;
    if (p->fail != NX_OK)
        return nx_err_set(err, p->fail, "grammar matcher over its state caps (probe)");
    memset(words, 0, word_count * sizeof *words);
    words[p->allow_id >> 5] |= 1u << (p->allow_id & 31);
    *allow_bits_out = p->vocab;
    return NX_OK;
}

/* The CUDA backend calls the engine's hook once per step, before the pick (whose mask it
 * carries up); a provider's error fails the step and the stream is left clean for the next. */
static void check_gpu_deferred_hook(nx_engine_t *engine)
{
    nx_err_t err = {0};
    uint32_t vocab = nx_engine_config(engine)->vocab;
    nx_sampler_t *sampler = make(sampling(0.0f, 0, 1.0f, 0.0f, 1.0f, 1), vocab);
    nx_seq_t *seq = nx_seq_new(engine, 64, false, &err);
    assert_non_null(seq);
    int32_t prompt[3] = {7, 8, 9};
    gpu_probe_t one = {.vocab = vocab, .allow_id = 42};
    gpu_probe_t failing = {.vocab = vocab, .fail = NX_ENOMEM};
    assert_int_equal(nx_seq_feed(seq, prompt, 3, &err), NX_OK);
    assert_int_equal(nx_seq_pick_next(seq, sampler, NULL, 0, &err), NX_OK);
    nx__seq_defer_mask(seq, gpu_probe_mask, &failing);
    assert_int_equal(nx_engine_step(engine, &seq, 1, &err), NX_ENOMEM);
    assert_non_null(strstr(err.msg, "state caps"));
    assert_int_equal(failing.calls, 1);
    assert_int_equal(nx_seq_len(seq), 0);
    assert_int_equal(nx_seq_pick_next(seq, sampler, NULL, 0, &err), NX_OK);
    nx__seq_defer_mask(seq, gpu_probe_mask, &one);
    assert_int_equal(one.calls, 0);
    if (nx_engine_step(engine, &seq, 1, &err) != NX_OK)
        fail_msg("step after a failed one: %s", err.msg);
    assert_int_equal(one.calls, 1);
    assert_int_equal(nx_seq_picked(seq), 42);
    assert_int_equal(nx_seq_len(seq), 3);
    nx_seq_destroy(engine, &seq);
    nx_sampler_destroy(&sampler);
}

/* The engine's GPU pick (the plan's mask uploaded with it) keeps a constrained generation
 * inside its grammar: a tiny model at temperature 1, every run a complete JSON instance; the
 * mask deferred into the step (the default) picks exactly what one made before it picks
 * (NEXUS_GRAMMAR_MASK=eager). */
static void test_gpu_engine_grammar(void **state)
{
    NEED_GPU();
    nx_err_t err = {0};
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/nx-pickg-XXXXXX");
    assert_non_null(mkdtemp(dir));
    rmdir(dir);
    nx_synth_opts_t o = {.arch = NX_SYNTH_QWEN3, .preset = NX_SYNTH_TINY, .out_dir = dir,
                         .seed = 5, .dtype = NX_DT_BF16, .shards = 1};
    nx_pool_opts_t popts = {.device = NX_DEVICE_CUDA, .bytes = 256ull << 20};
    nx_engine_opts_t eopts = {.threads = 2, .max_context = 256};
    nx_pool_t *pool = NULL;
    nx_loader_t *loader = NULL;
    nx_model_t *model = NULL;
    nx_engine_t *engine = NULL;
    nx_tokenizer_t *tok = NULL;
    if (nx_synth_model(&o, NULL, &err) != NX_OK || !(pool = nx_pool_new(&popts, &err)) ||
        !(loader = nx_loader_new(pool, NULL, &err)) ||
        !(model = nx_loader_load(loader, dir, NULL, NULL, &err)) ||
        !(engine = nx_engine_new(dir, model, pool, &eopts, &err)) ||
        !(tok = nx_tokenizer_load(dir, &err)))
        fail_msg("set-up: %s", err.msg);
    assert_string_equal(nx_engine_backend_name(engine), "cuda");
    int32_t stops[8];
    size_t stop_count = nx_chat_stop_ids(tok, NX_CHAT_CHATML, stops, 8);
    nx_gram_vocab_t *vocab = nx_gram_vocab_from_tokenizer(tok, stops, stop_count, &err);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"},"
                         "\"level\":{\"enum\":[\"low\",\"high\"]}},"
                         "\"required\":[\"ok\",\"level\"],\"additionalProperties\":false}";
    nx_gram_t *gram = nx_gram_from_json_schema(schema, strlen(schema), NULL, &err);
    assert_non_null(vocab);
    assert_non_null(gram);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = vocab};
    int32_t prompt[4] = {7, 8, 9, 10};
    for (uint64_t seed = 1; seed <= 3; seed++) {
        nx_sampling_t s = sampling(1.0f, 0, 1.0f, 0.0f, seed == 2 ? 1.3f : 1.0f, seed);
        s.max_tokens = 100;
        nx_gen_result_t r, eager;
        for (int deferred = 0; deferred < 2; deferred++) {
            if (!deferred)
                setenv("NEXUS_GRAMMAR_MASK", "eager", 1);
            nx_seq_t *seq = nx_seq_new(engine, 0, false, &err);
            int rc = nx_generate_grammar(engine, seq, tok, prompt, 4, &s, stops, stop_count,
                                         &spec, NULL, NULL, deferred ? &r : &eager, &err);
            unsetenv("NEXUS_GRAMMAR_MASK");
            nx_seq_destroy(engine, &seq);
            if (rc != NX_OK)
                fail_msg("seed %llu: %s", (unsigned long long)seed, err.msg);
        }
        assert_int_equal(r.count, eager.count);
        assert_memory_equal(r.ids, eager.ids, r.count * sizeof *r.ids);
        assert_string_equal(r.text, eager.text);
        nx_gen_result_free(&eager);
        nx_gram_matcher_t *m = nx_gram_matcher_new(gram, NULL, &err);
        assert_int_equal(nx_gram_matcher_advance(m, r.text, strlen(r.text), &err), NX_OK);
        if (!nx_gram_matcher_accepting(m) || strcmp(r.stop_reason, "length") == 0)
            fail_msg("seed %llu: '%s' (%s, %zu tokens) is not a complete instance",
                     (unsigned long long)seed, r.text, r.stop_reason, r.count);
        nx_gram_matcher_destroy(&m);
        nx_gen_result_free(&r);
    }
    check_gpu_deferred_hook(engine);
    nx_gram_destroy(&gram);
    nx_gram_vocab_destroy(&vocab);
    nx_tokenizer_destroy(&tok);
    nx_engine_destroy(&engine);
    nx_loader_unload(loader, &model, false);
    nx_loader_destroy(&loader);
    nx_pool_destroy(&pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cpu_picks_equal_sampler, cpu_setup,
                                        cpu_teardown),
        cmocka_unit_test_setup_teardown(test_cpu_generate_reproducible, cpu_setup,
                                        cpu_teardown),
        cmocka_unit_test(test_gpu_greedy_picks_equal_cpu),
        cmocka_unit_test(test_gpu_sampled_picks_follow_cpu),
        cmocka_unit_test(test_gpu_masked_picks_equal_cpu),
        cmocka_unit_test(test_gpu_engine_grammar),
    };
    return cmocka_run_group_tests(tests, gpu_group_setup, NULL);
}
