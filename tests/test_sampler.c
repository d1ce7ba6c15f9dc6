/* test_sampler.c — the sampler on hand-made distributions: greedy and ties, each filter's
 * effect (top-k keeps exactly k, top-p the smallest nucleus, min-p its threshold), the
 * repetition penalty, seeded reproducibility, empirical frequencies against the softmax, a
 * 152k vocabulary against a brute-force reference, masked picks against the picks of masked
 * rows, and parameter validation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_engine.h"

static nx_sampler_t *make(nx_sampling_t s, uint32_t vocab)
{
    nx_err_t err = {0};
    nx_sampler_t *sampler = nx_sampler_new(&s, vocab, &err);
    if (!sampler)
        fail_msg("nx_sampler_new: %s", err.msg);
    return sampler;
}

static nx_sampling_t sampling(float temperature, uint32_t top_k, float top_p, float min_p,
                              uint64_t seed)
{
    nx_sampling_t s = nx_sampling_default();
    s.temperature = temperature;
    s.top_k = top_k;
    s.top_p = top_p;
    s.min_p = min_p;
    s.seed = seed;
    return s;
}

/* Draw `draws` ids; counts[id]++ for each. */
static void draw(nx_sampler_t *sampler, const float *logits, uint32_t vocab, int draws,
                 int *counts)
{
    memset(counts, 0, vocab * sizeof *counts);
    for (int i = 0; i < draws; i++) {
        int32_t id = nx_sampler_pick(sampler, logits, NULL, 0);
        assert_true(id >= 0 && (uint32_t)id < vocab);
        counts[id]++;
    }
}

/* The hand-made distribution most tests use: probabilities 0.5, 0.3, 0.15, 0.05. */
static const float probs4[4] = {0.5f, 0.3f, 0.15f, 0.05f};
static void logits4(float *out)
{
    for (int i = 0; i < 4; i++)
        out[i] = logf(probs4[i]) + 3.0f; /* a shift changes nothing */
}

static void test_greedy_and_ties(void **state)
{
    nx_sampler_t *s = make(nx_sampling_default(), 6);
    float logits[6] = {0.1f, 2.0f, -3.0f, 5.0f, 4.9f, 1.0f};
    assert_int_equal(nx_sampler_pick(s, logits, NULL, 0), 3);
    float ties[6] = {1.0f, 7.0f, 2.0f, 7.0f, 7.0f, -1.0f};
    assert_int_equal(nx_sampler_pick(s, ties, NULL, 0), 1);
    float nan_first[6] = {NAN, -1.0f, -2.0f, -1.0f, -5.0f, -9.0f};
    assert_int_equal(nx_sampler_pick(s, nan_first, NULL, 0), 1);
    nx_sampler_destroy(&s);
    nx_sampler_destroy(&s); /* safe twice */
    assert_null(s);
}

static void test_top_k_keeps_exactly_k(void **state)
{
    float logits[8] = {0.0f, 3.0f, 1.0f, 2.9f, -1.0f, 2.8f, 0.5f, 2.7f};
    int counts[8];
    nx_sampler_t *s = make(sampling(1.0f, 3, 1.0f, 0.0f, 7), 8);
    draw(s, logits, 8, 3000, counts);
    for (int i = 0; i < 8; i++) {
        bool top3 = i == 1 || i == 3 || i == 5;
        if (top3)
            assert_true(counts[i] > 500);
        else
            assert_int_equal(counts[i], 0);
    }
    nx_sampler_destroy(&s);

    /* Equal logits: exactly k survive, the lowest ids. */
    float flat[6] = {1, 1, 1, 1, 1, 1};
    s = make(sampling(1.0f, 2, 1.0f, 0.0f, 8), 6);
    draw(s, flat, 6, 1000, counts);
    assert_true(counts[0] > 300 && counts[1] > 300);
    assert_int_equal(counts[0] + counts[1], 1000);
    nx_sampler_destroy(&s);

    /* top_k >= vocab is off. */
    s = make(sampling(1.0f, 100, 1.0f, 0.0f, 9), 6);
    draw(s, flat, 6, 1200, counts);
    for (int i = 0; i < 6; i++)
        assert_true(counts[i] > 100);
    nx_sampler_destroy(&s);
}

/* Which of the 4 ids appear in 4000 draws, as a bit mask. */
static unsigned kept_mask(nx_sampling_t params)
{
    float logits[4];
    logits4(logits);
    int counts[4];
    nx_sampler_t *s = make(params, 4);
    draw(s, logits, 4, 4000, counts);
    nx_sampler_destroy(&s);
    unsigned mask = 0;
    for (int i = 0; i < 4; i++)
        if (counts[i])
            mask |= 1u << i;
    return mask;
}

static void test_top_p_smallest_nucleus(void **state)
{
    assert_int_equal(kept_mask(sampling(1.0f, 0, 0.40f, 0.0f, 1)), 0x1); /* 0.5 >= 0.4 */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 0.75f, 0.0f, 1)), 0x3); /* 0.8 */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 0.85f, 0.0f, 1)), 0x7); /* 0.95 */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 0.99f, 0.0f, 1)), 0xf);
    assert_int_equal(kept_mask(sampling(1.0f, 0, 1.0f, 0.0f, 1)), 0xf);
    /* top-p after top-k renormalises over the k: {0.5, 0.3} -> 0.625, 0.375. */
    assert_int_equal(kept_mask(sampling(1.0f, 2, 0.6f, 0.0f, 1)), 0x1);
    assert_int_equal(kept_mask(sampling(1.0f, 2, 0.7f, 0.0f, 1)), 0x3);
    /* Temperature first: at T=0.5 the probabilities are ~ p^2, the first is 0.25/0.365. */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 0.65f, 0.0f, 1)), 0x3);
    assert_int_equal(kept_mask(sampling(0.5f, 0, 0.65f, 0.0f, 1)), 0x1);
}

static void test_min_p_threshold(void **state)
{
    assert_int_equal(kept_mask(sampling(1.0f, 0, 1.0f, 0.2f, 2)), 0x7);  /* >= 0.1 */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 1.0f, 0.5f, 2)), 0x3);  /* >= 0.25 */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 1.0f, 0.61f, 2)), 0x1); /* >= 0.305 */
    assert_int_equal(kept_mask(sampling(1.0f, 0, 1.0f, 0.09f, 2)), 0xf); /* >= 0.045 */
}

static void test_repetition_penalty(void **state)
{
    nx_sampling_t p = nx_sampling_default();
    p.repetition_penalty = 1.2f;
    nx_sampler_t *s = make(p, 3);
    float pos[3] = {2.0f, 1.9f, -1.0f};
    int32_t none[1] = {2};
    int32_t zero[1] = {0};
    assert_int_equal(nx_sampler_pick(s, pos, none, 1), 0);
    assert_int_equal(nx_sampler_pick(s, pos, zero, 1), 1); /* 2.0 / 1.2 < 1.9 */
    /* Distinct ids only: penalised once however often it occurs (2.0/1.2 = 1.67 > 1.5). */
    float pos2[3] = {2.0f, 1.5f, -1.0f};
    int32_t thrice[3] = {0, 0, 0};
    assert_int_equal(nx_sampler_pick(s, pos2, thrice, 3), 0);
    /* Negative logits are multiplied: -0.5 * 1.2 = -0.6 < -0.55. */
    float neg[3] = {-0.5f, -0.55f, -4.0f};
    assert_int_equal(nx_sampler_pick(s, neg, zero, 1), 1);
    /* The caller's logits are left alone, and out-of-range history ids are ignored. */
    int32_t odd[2] = {-1, 99};
    assert_true(neg[0] == -0.5f);
    assert_int_equal(nx_sampler_pick(s, neg, odd, 2), 0);
    nx_sampler_destroy(&s);
}

static void sequence(uint64_t seed, int32_t *out, int n)
{
    float logits[16];
    for (int i = 0; i < 16; i++)
        logits[i] = (float)((i * 7) % 5) * 0.3f;
    nx_sampler_t *s = make(sampling(1.0f, 0, 1.0f, 0.0f, seed), 16);
    for (int i = 0; i < n; i++)
        out[i] = nx_sampler_pick(s, logits, NULL, 0);
    nx_sampler_destroy(&s);
}

static void test_seed_reproducible(void **state)
{
    int32_t a[200], b[200], c[200];
    sequence(42, a, 200);
    sequence(42, b, 200);
    sequence(43, c, 200);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

/* Pearson's chi-square of counts against probabilities. */
static double chi_square(const int *counts, const double *p, int k, int draws)
{
    double x2 = 0;
    for (int i = 0; i < k; i++) {
        double expected = p[i] * draws;
        x2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    return x2;
}

static void test_frequencies_match_softmax(void **state)
{
    enum { K = 8, DRAWS = 200000 };
    float logits[K] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f, -1.0f, 0.25f};
    const float temps[2] = {1.0f, 0.7f};
    for (int t = 0; t < 2; t++) {
        double p[K], z = 0;
        for (int i = 0; i < K; i++)
            z += p[i] = exp(logits[i] / temps[t]);
        for (int i = 0; i < K; i++)
            p[i] /= z;
        int counts[K];
        nx_sampler_t *s = make(sampling(temps[t], 0, 1.0f, 0.0f, 1234 + t), K);
        draw(s, logits, K, DRAWS, counts);
        nx_sampler_destroy(&s);
        /* 7 degrees of freedom: P(X2 > 24.3) = 0.001. */
        double x2 = chi_square(counts, p, K, DRAWS);
        if (x2 > 24.3)
            fail_msg("T=%g: chi-square %.2f over 7 degrees of freedom", temps[t], x2);
    }
}

/* A 152k vocabulary: top-k and top-p against a brute-force full sort. */
static int cmp_desc(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    return a > b ? -1 : a < b ? 1 : 0;
}

static void test_large_vocab_against_reference(void **state)
{
    enum { V = 152000, DRAWS = 600 };
    float *logits = malloc(V * sizeof *logits);
    float *sorted = malloc(V * sizeof *sorted);
    int *counts = malloc(V * sizeof *counts);
    uint64_t x = 99;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = (float)((x >> 40) % 100000) / 20000.0f; /* distinct-ish in [0, 5) */
    }
    for (int i = 0; i < 30; i++)
        logits[(i * 4999) % V] = 20.0f + (float)i * 0.02f; /* a head holding ~all the mass */
    memcpy(sorted, logits, V * sizeof *logits);
    qsort(sorted, V, sizeof *sorted, cmp_desc);

    /* top-k 40: every draw is at or above the 40th largest logit. */
    nx_sampler_t *s = make(sampling(1.0f, 40, 1.0f, 0.0f, 5), V);
    draw(s, logits, V, DRAWS, counts);
    for (int i = 0; i < V; i++)
        if (counts[i])
            assert_true(logits[i] >= sorted[39]);
    nx_sampler_destroy(&s);

    /* top-p 0.5 with no top-k: the nucleus from a full sort in double precision. */
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp((double)sorted[i] - sorted[0]);
    double before = 0;
    int nucleus = 0;
    while (before < 0.5 * z)
        before += exp((double)sorted[nucleus++] - sorted[0]);
    float cut = sorted[nucleus - 1];
    s = make(sampling(1.0f, 0, 0.5f, 0.0f, 6), V);
    draw(s, logits, V, DRAWS, counts);
    int distinct = 0;
    for (int i = 0; i < V; i++) {
        if (counts[i]) {
            assert_true(logits[i] >= cut);
            distinct++;
        }
    }
    assert_true(nucleus > 1 && distinct > nucleus / 2);
    nx_sampler_destroy(&s);

    /* A flat distribution: the nucleus is most of the vocabulary (the slow path). */
    for (int i = 0; i < V; i++)
        logits[i] = (float)(i % 7) * 0.01f;
    s = make(sampling(1.0f, 0, 0.8f, 0.0f, 7), V);
    draw(s, logits, V, DRAWS, counts);
    int low = 0;
    for (int i = 0; i < V; i++)
        if (counts[i] && i % 7 == 0)
            low++;
    assert_int_equal(low, 0); /* the top six sevenths hold 86% of the mass */
    nx_sampler_destroy(&s);
    free(logits);
    free(sorted);
    free(counts);
}

/* ---- grammar masks ---------------------------------------------------------------------- */

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

/* A grammar-like mask over `bits` ids (words cover `words`): kind 0 a few ids, 1 about a
 * tenth, 2 one id, 3 whole words and stray ids (a string's state), 4 everything; set bits
 * past `bits` too, which must not count. */
static void make_mask(uint32_t *mask, uint32_t words, uint32_t bits, int kind, uint64_t *x)
{
    memset(mask, 0, words * sizeof *mask);
    for (uint32_t id = 0; id < bits; id++) {
        bool on = kind == 1 ? lcg(x) % 10 == 0
                : kind == 3 ? (id / 32) % 3 != 1 || lcg(x) % 4 == 0
                : kind == 4;
        if (on)
            mask[id >> 5] |= 1u << (id & 31);
    }
    int few = kind == 0 ? 5 : 1;
    for (int i = 0; i < few; i++) {
        uint32_t id = (uint32_t)(lcg(x) % bits);
        mask[id >> 5] |= 1u << (id & 31);
    }
    for (uint32_t id = bits; id < words * 32; id++)
        mask[id >> 5] |= 1u << (id & 31);
}

static bool in_mask(const uint32_t *mask, uint32_t bits, uint32_t id)
{
    return id < bits && (mask[id >> 5] >> (id & 31) & 1);
}

/* A masked pick is the pick of the same row with every disallowed logit at -inf, id for id
 * under the same seed, for every filter, the penalty, greedy, NaN logits and masks from one id
 * to the whole vocabulary (allow_bits short of it or past it); when every allowed logit is
 * -inf the lowest allowed id; -1 when the mask allows nothing inside the vocabulary. */
static void test_masked_pick_is_pick_of_masked_row(void **state)
{
    static const uint32_t vocabs[] = {1000, 151936};
    static const uint32_t top_ks[] = {0, 1, 5, 50, 999, 1000, 3};
    static const float top_ps[] = {1.0f, 0.9f, 0.5f, 0.05f};
    static const float min_ps[] = {0.0f, 0.05f, 0.3f};
    static const float temps[] = {0.0f, 0.5f, 1.0f, 1.7f};
    uint64_t x = 7;
    for (size_t v = 0; v < 2; v++) {
        uint32_t vocab = vocabs[v], cases = v == 0 ? 600 : 60;
        uint32_t words = (vocab + 64 + 31) / 32;
        float *logits = malloc(vocab * sizeof *logits), *row = malloc(vocab * sizeof *row);
        uint32_t *mask = malloc(words * sizeof *mask);
        for (uint32_t c = 0; c < cases; c++) {
            float spread = 2.0f + (float)(c % 5) * 4.0f;
            for (uint32_t i = 0; i < vocab; i++)
                logits[i] = (float)(lcg(&x) % 100000) / 100000.0f * spread - spread / 2;
            if (c % 13 == 6)
                logits[lcg(&x) % vocab] = NAN;
            uint32_t bits = c % 4 == 1 ? vocab - vocab / 7 : c % 4 == 2 ? vocab + 40 : vocab;
            make_mask(mask, words, bits, (int)(c % 5), &x);
            bool dead = c % 17 == 9; /* every allowed logit -inf */
            int32_t lowest = -1;
            for (uint32_t i = 0; i < vocab; i++) {
                bool ok = in_mask(mask, bits, i);
                if (ok && lowest < 0)
                    lowest = (int32_t)i;
                if (ok && dead)
                    logits[i] = c % 2 ? -INFINITY : NAN;
                row[i] = ok ? logits[i] : -INFINITY;
            }
            nx_sampling_t s = sampling(temps[c % 4], top_ks[(c / 4) % 7] % (vocab + 1),
                                       top_ps[(c / 3) % 4], min_ps[(c / 2) % 3], 1000 + c);
            s.repetition_penalty = c % 3 == 0 ? 1.3f : 1.0f;
            int32_t history[40];
            for (int i = 0; i < 40; i++)
                history[i] = (int32_t)(lcg(&x) % vocab);
            nx_sampler_t *a = make(s, vocab), *b = make(s, vocab);
            for (int draw_i = 0; draw_i < 3; draw_i++) {
                int32_t got = nx_sampler_pick_masked(a, logits, history, 40, mask, bits);
                int32_t want = nx_sampler_pick(b, row, history, 40);
                if (dead || lowest < 0) /* lowest < 0: only ids past the vocabulary */
                    want = lowest;
                if (got != want)
                    fail_msg("vocab %u case %u draw %d (T %.1f top_k %u top_p %.2f min_p %.2f "
                             "penalty %.1f, allow_bits %u): masked pick %d, pick of the "
                             "masked row %d", vocab, c, draw_i, (double)s.temperature,
                             s.top_k, (double)s.top_p, (double)s.min_p,
                             (double)s.repetition_penalty, bits, got, want);
                assert_true(got < 0 || in_mask(mask, bits, (uint32_t)got));
            }
            nx_sampler_destroy(&a);
            nx_sampler_destroy(&b);
        }
        memset(mask, 0, words * sizeof *mask);
        nx_sampler_t *a = make(sampling(1.0f, 0, 1.0f, 0.0f, 1), vocab);
        assert_int_equal(nx_sampler_pick_masked(a, logits, NULL, 0, mask, vocab), -1);
        mask[0] = ~0u; /* set, but past allow_bits 0 */
        assert_int_equal(nx_sampler_pick_masked(a, logits, NULL, 0, mask, 0), -1);
        nx_sampler_destroy(&a);
        free(logits);
        free(row);
        free(mask);
    }
}

static void expect_invalid(nx_sampling_t s, const char *field)
{
    nx_err_t err = {0};
    assert_int_equal(nx_sampling_validate(&s, &err), NX_EINVAL);
    if (!strstr(err.msg, field))
        fail_msg("message '%s' does not name '%s'", err.msg, field);
    assert_null(nx_sampler_new(&s, 10, &err));
}

static void test_validation(void **state)
{
    nx_err_t err = {0};
    nx_sampling_t ok = nx_sampling_default();
    assert_int_equal(nx_sampling_validate(&ok, &err), NX_OK);
    assert_true(ok.temperature == 0.0f && ok.max_tokens == 256 && ok.top_p == 1.0f);

    nx_sampling_t s = ok;
    s.temperature = -1.0f;
    expect_invalid(s, "temperature");
    s.temperature = INFINITY;
    expect_invalid(s, "temperature");
    s.temperature = NAN;
    expect_invalid(s, "temperature");
    s = ok;
    s.top_p = 0.0f;
    expect_invalid(s, "top_p");
    s.top_p = 1.5f;
    expect_invalid(s, "top_p");
    s = ok;
    s.min_p = 1.0f;
    expect_invalid(s, "min_p");
    s.min_p = -0.1f;
    expect_invalid(s, "min_p");
    s = ok;
    s.repetition_penalty = 0.0f;
    expect_invalid(s, "repetition_penalty");
    s.repetition_penalty = NAN;
    expect_invalid(s, "repetition_penalty");
    s = ok;
    s.max_tokens = 0;
    expect_invalid(s, "max_tokens");
    s = ok;
    const char *stops[2] = {"ok", ""};
    s.stop = stops;
    s.stop_count = 2;
    expect_invalid(s, "stop string 1");
    s.stop_count = 1;
    assert_int_equal(nx_sampling_validate(&s, &err), NX_OK);
    assert_null(nx_sampler_new(&ok, 0, &err));
    assert_int_equal(err.code, NX_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_ties),
        cmocka_unit_test(test_top_k_keeps_exactly_k),
        cmocka_unit_test(test_top_p_smallest_nucleus),
        cmocka_unit_test(test_min_p_threshold),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_large_vocab_against_reference),
        cmocka_unit_test(test_masked_pick_is_pick_of_masked_row),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
