/* test_gen_grammar.c — grammar-constrained generation (nx_gen_set_grammar): a tiny synthesized
 * Qwen3 model sampling at temperature 1 always produces text its grammar accepts, through the
 * engine's pick (nx_generate_grammar) and the host one (nx_gen_advance); end ids only where the
 * grammar accepts; max_tokens still cuts ("length"). The phases before the grammar — lazy
 * triggers by string and by id, a free thinking block, banned ids — are driven by scripted
 * logits (a chosen token far above the rest) through nx_gen_advance, so the test knows what
 * the free text is; the grammar's part is sampled from random logits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "grammar.h"
#include "nx_engine.h"
#include "pick.h" /* nx__seq_defer_mask: the deferred mask's contract with the engine */
#include "synth.h"
#include "tiny_model.h"

typedef struct fixture {
    tiny_model_t tiny;
    nx_tokenizer_t *tok;
    uint32_t vocab;
    int32_t stop_ids[8];
    size_t stop_id_count;
    nx_gram_vocab_t *gvocab;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    nx_err_t err = {0};
    if (tiny_model_open(&f->tiny, "gengram", 5, 512) != 0)
        return -1;
    if (!(f->tok = nx_tokenizer_load(f->tiny.dir, &err))) {
        fprintf(stderr, "set-up: %s\n", err.msg);
        return -1;
    }
    f->vocab = nx_engine_config(f->tiny.engine)->vocab;
    f->stop_id_count = nx_chat_stop_ids(f->tok, NX_CHAT_CHATML, f->stop_ids, 8);
    if (!(f->gvocab = nx_gram_vocab_from_tokenizer(f->tok, f->stop_ids, f->stop_id_count,
                                                   &err))) {
        fprintf(stderr, "set-up: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    nx_gram_vocab_destroy(&f->gvocab);
    nx_tokenizer_destroy(&f->tok);
    tiny_model_close(&f->tiny);
    free(f);
    return 0;
}

static nx_gram_t *schema(const char *text)
{
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_json_schema(text, strlen(text), NULL, &err);
    if (!g)
        fail_msg("schema: %s", err.msg);
    return g;
}

static nx_gram_t *gbnf(const char *text)
{
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_gbnf(text, strlen(text), &err);
    if (!g)
        fail_msg("gbnf: %s", err.msg);
    return g;
}

/* Walk text through a fresh matcher: NX_OK when every byte is accepted; *accepting after. */
static int walk(const nx_gram_t *gram, const char *text, size_t len, bool *accepting)
{
    nx_err_t err = {0};
    nx_gram_matcher_t *m = nx_gram_matcher_new(gram, NULL, &err);
    assert_non_null(m);
    int rc = nx_gram_matcher_advance(m, text, len, &err);
    *accepting = rc == NX_OK && nx_gram_matcher_accepting(m);
    nx_gram_matcher_destroy(&m);
    return rc;
}

/* A run's text against its grammar: a valid prefix always; a sentence unless cut by length. */
static void check_run(const nx_gram_t *gram, const char *text, const char *reason)
{
    bool accepting = false;
    if (walk(gram, text, strlen(text), &accepting) != NX_OK)
        fail_msg("'%s' (%s) is outside the grammar", text, reason);
    if (strcmp(reason, "length") != 0 && !accepting)
        fail_msg("'%s' ended (%s) where the grammar does not accept", text, reason);
    if (strcmp(reason, "length") == 0 && accepting)
        return; /* a cut may fall on a sentence */
}

static nx_sampling_t sampling_t1(uint64_t seed, uint32_t max_tokens)
{
    nx_sampling_t s = nx_sampling_default();
    s.temperature = 1.0f;
    s.seed = seed;
    s.max_tokens = max_tokens;
    return s;
}

static const char *const object_schema =
    "{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"},"
    "\"level\":{\"enum\":[\"low\",\"high\"]},"
    "\"n\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":99}},"
    "\"required\":[\"ok\",\"level\",\"n\"],\"additionalProperties\":false}";

/* The engine picks (nx_generate_grammar) at temperature 1 over several seeds: every run's
 * text is inside the grammar and complete; a finite grammar ends "stop" or "eos". */
static void test_engine_pick_follows_grammar(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = schema(object_schema);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    int32_t prompt[4] = {7, 8, 9, 10};
    for (uint64_t seed = 1; seed <= 8; seed++) {
        nx_sampling_t s = sampling_t1(seed, 120);
        nx_seq_t *seq = nx_seq_new(f->tiny.engine, 0, false, &err);
        assert_non_null(seq);
        nx_gen_result_t r;
        int rc = nx_generate_grammar(f->tiny.engine, seq, f->tok, prompt, 4, &s, f->stop_ids,
                                     f->stop_id_count, &spec, NULL, NULL, &r, &err);
        if (rc != NX_OK)
            fail_msg("seed %llu: %s", (unsigned long long)seed, err.msg);
        assert_true(strcmp(r.stop_reason, "stop") == 0 || strcmp(r.stop_reason, "eos") == 0);
        check_run(gram, r.text, r.stop_reason);
        nx_gen_result_free(&r);
        nx_seq_destroy(f->tiny.engine, &seq);
    }
    nx_gram_destroy(&gram);
}

/* Step generations together, as nexusd steps them, until every one has stopped: each step
 * picks for the running ones, then advances each by its pick (room left while its sequence
 * has any) and feeds what it asks for. */
static void step_together(fixture_t *f, nx_seq_t *const *seqs, nx_gen_t *const *gens,
                          size_t count)
{
    nx_err_t err = {0};
    assert_true(count <= 4);
    for (;;) {
        nx_seq_t *step[4];
        nx_gen_t *stepping[4];
        size_t n = 0;
        for (size_t i = 0; i < count; i++)
            if (!nx_gen_stop_reason(gens[i])) {
                assert_int_equal(nx_gen_pick_next(gens[i], seqs[i], &err), NX_OK);
                step[n] = seqs[i];
                stepping[n++] = gens[i];
            }
        if (n == 0)
            return;
        if (nx_engine_step(f->tiny.engine, step, n, &err) != NX_OK)
            fail_msg("step: %s", err.msg);
        for (size_t i = 0; i < n; i++) {
            int32_t id;
            bool room = nx_seq_len(step[i]) < nx_seq_capacity(step[i]);
            if (nx_gen_advance_id(stepping[i], nx_seq_picked(step[i]), room, &id, &err) != NX_OK)
                fail_msg("%s", err.msg);
            const int32_t *feed;
            size_t fed = nx_gen_next_ids(stepping[i], &feed); /* 0 once stopped */
            if (fed)
                assert_int_equal(nx_seq_feed(step[i], feed, fed, &err), NX_OK);
        }
    }
}

/* Two sequences stepped together share one matcher (nx_gen_grammar_t.matcher), each with its
 * own state in it: both outputs are complete instances, as with matchers of their own. */
static void test_shared_matcher(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = schema(object_schema);
    nx_gram_matcher_t *shared = nx_gram_matcher_new(gram, f->gvocab, &err);
    assert_non_null(shared);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab, .matcher = shared};
    int32_t prompt[2][3] = {{7, 8, 9}, {30, 31, 32}};
    nx_sampling_t s[2] = {sampling_t1(5, 120), sampling_t1(6, 120)};
    nx_seq_t *seqs[2];
    nx_gen_t *gens[2];
    for (int i = 0; i < 2; i++) {
        seqs[i] = nx_seq_new(f->tiny.engine, 0, false, &err);
        gens[i] = nx_gen_new(f->tok, f->vocab, &s[i], prompt[i], 3, f->stop_ids,
                             f->stop_id_count, NULL, NULL, &err);
        assert_int_equal(nx_gen_set_grammar(gens[i], &spec, &err), NX_OK);
        assert_int_equal(nx_seq_feed(seqs[i], prompt[i], 3, &err), NX_OK);
    }
    step_together(f, seqs, gens, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_not_equal(nx_gen_stop_reason(gens[i]), "length");
        check_run(gram, nx_gen_text(gens[i]), nx_gen_stop_reason(gens[i]));
        assert_true(nx_gen_grammar_accepted(gens[i]));
        nx_gen_destroy(&gens[i]);
        nx_seq_destroy(f->tiny.engine, &seqs[i]);
    }
    nx_gram_matcher_destroy(&shared);
    nx_gram_destroy(&gram);
}

/* The host pick (nx_gen_advance on the step's logits) under a grammar whose sentences can
 * always grow: it is never finished, so runs end at an end id (only where it accepts) or at
 * max_tokens. */
static void test_host_pick_follows_grammar(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = gbnf("root ::= item (\",\" item)*\nitem ::= [0-9]+ | \"x\"\n");
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    int32_t prompt[3] = {11, 12, 13};
    int ended = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        nx_sampling_t s = sampling_t1(seed, 40);
        nx_seq_t *seq = nx_seq_new(f->tiny.engine, 0, false, &err);
        nx_gen_t *g = nx_gen_new(f->tok, f->vocab, &s, prompt, 3, f->stop_ids,
                                 f->stop_id_count, NULL, NULL, &err);
        assert_non_null(g);
        assert_int_equal(nx_gen_set_grammar(g, &spec, &err), NX_OK);
        assert_int_equal(nx_gen_set_grammar(g, &spec, &err), NX_ESTATE); /* once only */
        assert_true(nx_gen_grammar_started(g));
        assert_int_equal(nx_seq_feed(seq, prompt, 3, &err), NX_OK);
        while (!nx_gen_stop_reason(g)) {
            assert_int_equal(nx_engine_step(f->tiny.engine, &seq, 1, &err), NX_OK);
            int32_t id;
            bool room = nx_seq_len(seq) < nx_seq_capacity(seq);
            if (nx_gen_advance(g, nx_seq_logits(seq, NULL), room, &id, &err) != NX_OK)
                fail_msg("seed %llu: %s", (unsigned long long)seed, err.msg);
            if (!nx_gen_stop_reason(g))
                assert_int_equal(nx_seq_feed(seq, &id, 1, &err), NX_OK);
        }
        const char *reason = nx_gen_stop_reason(g);
        check_run(gram, nx_gen_text(g), reason);
        assert_true(strcmp(reason, "stop") != 0); /* never finished: no "stop" */
        if (strcmp(reason, "eos") == 0) {
            assert_true(nx_gen_grammar_accepted(g));
            ended++;
        }
        nx_gen_destroy(&g);
        nx_seq_destroy(f->tiny.engine, &seq);
    }
    assert_true(ended > 0); /* the seeds are fixed: some runs end at an end id */
    nx_gram_destroy(&gram);
}

/* max_tokens cuts a constrained run: "length", a valid prefix that is not yet a sentence. */
static void test_length_cuts(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = schema(object_schema);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    int32_t prompt[2] = {3, 4};
    nx_sampling_t s = sampling_t1(3, 3);
    nx_seq_t *seq = nx_seq_new(f->tiny.engine, 0, false, &err);
    nx_gen_result_t r;
    assert_int_equal(nx_generate_grammar(f->tiny.engine, seq, f->tok, prompt, 2, &s, f->stop_ids,
                                         f->stop_id_count, &spec, NULL, NULL, &r, &err),
                     NX_OK);
    assert_string_equal(r.stop_reason, "length");
    assert_int_equal(r.count, 3);
    bool accepting = true;
    assert_int_equal(walk(gram, r.text, strlen(r.text), &accepting), NX_OK);
    assert_false(accepting); /* the shortest sentence is longer than 3 tokens */
    nx_gen_result_free(&r);
    nx_seq_destroy(f->tiny.engine, &seq);
    nx_gram_destroy(&gram);
}

/* nx_gram_matcher_forced: the bytes with no alternative, up to where a choice (or the end)
 * comes; the state is unchanged. */
static void test_forced_bytes(void **state)
{
    (void)state;
    nx_err_t err = {0};
    nx_gram_t *gram = gbnf("root ::= \"{\\\"name\\\":\\\"\" [a-z]+ \"\\\"}\"\n");
    nx_gram_matcher_t *m = nx_gram_matcher_new(gram, NULL, &err);
    char out[64];
    size_t n = nx_gram_matcher_forced(m, out, sizeof out);
    assert_int_equal(n, 9);
    assert_memory_equal(out, "{\"name\":\"", 9);
    assert_int_equal(nx_gram_matcher_forced(m, out, 4), 4); /* cap */
    assert_int_equal(nx_gram_matcher_advance(m, "{\"name\":\"x", 10, &err), NX_OK);
    assert_int_equal(nx_gram_matcher_forced(m, out, sizeof out), 0); /* a letter or '"' */
    assert_int_equal(nx_gram_matcher_advance(m, "\"", 1, &err), NX_OK);
    assert_int_equal(nx_gram_matcher_forced(m, out, sizeof out), 1);
    assert_int_equal(out[0], '}');
    assert_false(nx_gram_matcher_finished(m)); /* unchanged */
    assert_int_equal(nx_gram_matcher_advance(m, "}", 1, &err), NX_OK);
    assert_int_equal(nx_gram_matcher_forced(m, out, sizeof out), 0); /* accepted: the end */
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&gram);
}

/* Forced runs: after a pick, the tokens the grammar forces are appended without sampling and
 * fed in the same step (nx_gen_next_ids gives more than one id); the output stays inside the
 * grammar, and max_tokens still bounds the count exactly. */
static void test_forced_tokens_fast_forward(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = schema(
        "{\"type\":\"object\",\"properties\":{\"description_of_the_answer\":"
        "{\"enum\":[\"a long forced value\",\"another\"]},"
        "\"confidence_level_reported\":{\"type\":\"boolean\"}},"
        "\"required\":[\"description_of_the_answer\",\"confidence_level_reported\"],"
        "\"additionalProperties\":false}");
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    int32_t prompt[3] = {21, 22, 23};
    size_t multi_feeds = 0;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        uint32_t max_tokens = seed == 4 ? 9 : 200;
        nx_sampling_t s = sampling_t1(seed, max_tokens);
        nx_seq_t *seq = nx_seq_new(f->tiny.engine, 0, false, &err);
        nx_gen_t *g = nx_gen_new(f->tok, f->vocab, &s, prompt, 3, f->stop_ids,
                                 f->stop_id_count, NULL, NULL, &err);
        assert_int_equal(nx_gen_set_grammar(g, &spec, &err), NX_OK);
        assert_int_equal(nx_seq_feed(seq, prompt, 3, &err), NX_OK);
        size_t steps = 0;
        for (;;) {
            assert_int_equal(nx_gen_pick_next(g, seq, &err), NX_OK);
            assert_int_equal(nx_engine_step(f->tiny.engine, &seq, 1, &err), NX_OK);
            steps++;
            int32_t id;
            bool room = nx_seq_len(seq) < nx_seq_capacity(seq);
            if (nx_gen_advance_id(g, nx_seq_picked(seq), room, &id, &err) != NX_OK)
                fail_msg("seed %llu: %s", (unsigned long long)seed, err.msg);
            if (nx_gen_stop_reason(g))
                break;
            const int32_t *feed;
            size_t feed_count = nx_gen_next_ids(g, &feed);
            assert_true(feed_count >= 1);
            assert_int_equal(feed[0], id);
            multi_feeds += feed_count > 1;
            assert_int_equal(nx_seq_feed(seq, feed, feed_count, &err), NX_OK);
        }
        const char *reason = nx_gen_stop_reason(g);
        check_run(gram, nx_gen_text(g), reason);
        assert_true(nx_gen_count(g) <= max_tokens);
        if (seed == 4) {
            assert_string_equal(reason, "length");
            assert_int_equal(nx_gen_count(g), max_tokens);
        } else {
            assert_string_not_equal(reason, "length");
            assert_true(steps < nx_gen_count(g)); /* some tokens came without a step */
        }
        nx_gen_destroy(&g);
        nx_seq_destroy(f->tiny.engine, &seq);
    }
    assert_true(multi_feeds > 0);
    nx_gram_destroy(&gram);
}

/* The bytes forced at the very start go in with the prompt: after the first step the output
 * holds them (but the last of their tokens) and the pick. */
static void test_forced_start(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = gbnf("root ::= \"{\\\"description\\\":\\\"\" [a-z]+ \"\\\"}\"\n");
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    int32_t prompt[3] = {21, 22, 23};
    nx_sampling_t s = sampling_t1(2, 100);
    nx_seq_t *seq = nx_seq_new(f->tiny.engine, 0, false, &err);
    nx_gen_t *g = nx_gen_new(f->tok, f->vocab, &s, prompt, 3, f->stop_ids, f->stop_id_count,
                             NULL, NULL, &err);
    assert_int_equal(nx_gen_set_grammar(g, &spec, &err), NX_OK);
    assert_int_equal(nx_seq_feed(seq, prompt, 3, &err), NX_OK);
    assert_int_equal(nx_gen_pick_next(g, seq, &err), NX_OK);
    size_t forced = nx_gen_count(g);
    assert_true(forced >= 1);
    assert_int_equal(nx_seq_queued(seq), 3 + forced);
    assert_true(strncmp("{\"description\":\"", nx_gen_text(g), strlen(nx_gen_text(g))) == 0);
    assert_int_equal(nx_engine_step(f->tiny.engine, &seq, 1, &err), NX_OK);
    int32_t id;
    assert_int_equal(nx_gen_advance_id(g, nx_seq_picked(seq), true, &id, &err), NX_OK);
    assert_true(nx_gen_count(g) > forced);
    bool accepting;
    assert_int_equal(walk(gram, nx_gen_text(g), strlen(nx_gen_text(g)), &accepting), NX_OK);
    nx_gen_destroy(&g);
    nx_seq_destroy(f->tiny.engine, &seq);
    nx_gram_destroy(&gram);
}

/* ------------------------------------------------------------------------------------------
 * Scripted free text
 */
typedef struct script {
    int32_t ids[64];
    size_t count, next;
    uint64_t rng;
} script_t;

static void script_add_text(fixture_t *f, script_t *sc, const char *text)
{
    nx_err_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(nx_tokenizer_encode(f->tok, text, strlen(text), &ids, &n, &err), NX_OK);
    assert_true(sc->count + n <= 64);
    memcpy(sc->ids + sc->count, ids, n * sizeof *ids);
    sc->count += n;
    free(ids);
}

static void script_add_id(script_t *sc, int32_t id) { sc->ids[sc->count++] = id; }

/* The next logits: the scripted token 40 above the rest while the script lasts, random
 * afterwards (uniform in [-2, 2]). */
static void script_logits(script_t *sc, float *row, uint32_t vocab)
{
    for (uint32_t i = 0; i < vocab; i++) {
        sc->rng = sc->rng * 6364136223846793005ull + 1442695040888963407ull;
        row[i] = (float)(sc->rng >> 40) / (float)(1u << 24) * 4.0f - 2.0f;
    }
    if (sc->next < sc->count)
        row[sc->ids[sc->next++]] += 40.0f;
}

/* Run a generation on scripted logits to its end; returns its stop reason. */
static const char *run_scripted(fixture_t *f, nx_gen_t *g, script_t *sc)
{
    nx_err_t err = {0};
    float *row = malloc(f->vocab * sizeof *row);
    while (!nx_gen_stop_reason(g)) {
        int32_t id;
        script_logits(sc, row, f->vocab);
        if (nx_gen_advance(g, row, true, &id, &err) != NX_OK)
            fail_msg("scripted run: %s", err.msg);
    }
    free(row);
    return nx_gen_stop_reason(g);
}

static nx_gen_t *gen_for(fixture_t *f, const nx_sampling_t *s, const nx_gen_grammar_t *spec)
{
    nx_err_t err = {0};
    int32_t prompt[1] = {5};
    nx_gen_t *g = nx_gen_new(f->tok, f->vocab, s, prompt, 1, f->stop_ids, f->stop_id_count,
                             NULL, NULL, &err);
    assert_non_null(g);
    if (nx_gen_set_grammar(g, spec, &err) != NX_OK)
        fail_msg("nx_gen_set_grammar: %s", err.msg);
    return g;
}

static const char *const ab_gbnf = "root ::= \"<tool>{\" [ab]+ \"}\"\n";

/* A trigger string: free text (where a stop string still applies) until "<tool>" appears,
 * then the grammar from the trigger's first byte; a stop string never cuts the grammar. */
static void test_lazy_trigger_string(void **state)
{
    fixture_t *f = *state;
    nx_gram_t *gram = gbnf(ab_gbnf);
    const char *triggers[1] = {"<tool>"};
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab, .trigger_strs = triggers,
                             .trigger_str_count = 1};
    const char *stops[1] = {"b"}; /* inside the grammar only */
    for (uint64_t seed = 1; seed <= 5; seed++) {
        nx_sampling_t s = sampling_t1(seed, 60);
        s.stop = stops;
        s.stop_count = 1;
        script_t sc = {.rng = seed};
        script_add_text(f, &sc, "Sure, calling it: <tool>");
        nx_gen_t *g = gen_for(f, &s, &spec);
        const char *reason = run_scripted(f, g, &sc);
        const char *text = nx_gen_text(g);
        assert_memory_equal(text, "Sure, calling it: <tool>", 24);
        check_run(gram, text + 18, reason);
        assert_true(nx_gen_grammar_started(g));
        if (strcmp(reason, "length") != 0)
            assert_string_equal(reason, "stop"); /* "}" finishes it */
        nx_gen_destroy(&g);
    }
    /* the same stop string cuts free text before the trigger */
    nx_sampling_t s = sampling_t1(1, 60);
    s.stop = (const char *const[]){"call"};
    s.stop_count = 1;
    script_t sc = {.rng = 9};
    script_add_text(f, &sc, "Sure, calling it: <tool>");
    nx_gen_t *g = gen_for(f, &s, &spec);
    assert_string_equal(run_scripted(f, g, &sc), "stop");
    assert_string_equal(nx_gen_text(g), "Sure, ");
    assert_false(nx_gen_grammar_started(g));
    nx_gen_destroy(&g);
    nx_gram_destroy(&gram);
}

/* trigger_at_start (Llama 3's JSON calls are the whole answer): a trigger string counts only
 * at the output's start, leading whitespace aside; once other text came, the output stays
 * free text even when the trigger appears later. */
static void test_lazy_trigger_at_start(void **state)
{
    fixture_t *f = *state;
    nx_gram_t *gram = gbnf(ab_gbnf);
    const char *triggers[1] = {"<tool>"};
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab, .trigger_strs = triggers,
                             .trigger_str_count = 1, .trigger_at_start = true};
    for (uint64_t seed = 1; seed <= 3; seed++) {
        nx_sampling_t s = sampling_t1(seed, 60);
        script_t sc = {.rng = seed};
        script_add_text(f, &sc, "  <tool>");
        nx_gen_t *g = gen_for(f, &s, &spec);
        const char *reason = run_scripted(f, g, &sc);
        assert_true(nx_gen_grammar_started(g));
        check_run(gram, nx_gen_text(g) + 2, reason);
        nx_gen_destroy(&g);
    }
    nx_sampling_t s = sampling_t1(4, 12);
    script_t sc = {.rng = 4};
    script_add_text(f, &sc, "Sure: <tool>{ab}");
    nx_gen_t *g = gen_for(f, &s, &spec);
    run_scripted(f, g, &sc);
    assert_false(nx_gen_grammar_started(g));
    assert_memory_equal(nx_gen_text(g), "Sure: <tool>{ab}", 16);
    nx_gen_destroy(&g);
    nx_gram_destroy(&gram);
}

/* A trigger id: the grammar starts with that token's bytes. */
static void test_lazy_trigger_id(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = gbnf("root ::= \"{\" [ab]+ \"}\"\n");
    int32_t *brace = NULL;
    size_t n = 0;
    assert_int_equal(nx_tokenizer_encode(f->tok, "{", 1, &brace, &n, &err), NX_OK);
    assert_int_equal(n, 1);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab, .trigger_ids = brace,
                             .trigger_id_count = 1};
    for (uint64_t seed = 1; seed <= 5; seed++) {
        nx_sampling_t s = sampling_t1(seed, 60);
        script_t sc = {.rng = seed * 7};
        script_add_text(f, &sc, "ok so ");
        script_add_id(&sc, brace[0]);
        nx_gen_t *g = gen_for(f, &s, &spec);
        const char *reason = run_scripted(f, g, &sc);
        const char *text = nx_gen_text(g);
        assert_memory_equal(text, "ok so {", 7);
        check_run(gram, text + 6, reason);
        nx_gen_destroy(&g);
    }
    free(brace);
    nx_gram_destroy(&gram);
}

/* A thinking block stays free, then the grammar applies after "</think>" and whitespace. */
static void test_think_then_grammar(void **state)
{
    fixture_t *f = *state;
    nx_gram_t *gram = gbnf("root ::= \"{\" [ab]+ \"}\"\n");
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab, .think_open = "<think>",
                             .think_close = "</think>"};
    int32_t open = nx_tokenizer_token_id(f->tok, "<think>");
    int32_t close = nx_tokenizer_token_id(f->tok, "</think>");
    assert_true(open >= 0 && close >= 0);
    for (uint64_t seed = 1; seed <= 5; seed++) {
        nx_sampling_t s = sampling_t1(seed, 80);
        script_t sc = {.rng = seed * 13};
        script_add_id(&sc, open);
        script_add_text(f, &sc, "\nfree text, not JSON: ]]\n");
        script_add_id(&sc, close);
        script_add_text(f, &sc, "\n\n");
        nx_gen_t *g = gen_for(f, &s, &spec);
        assert_false(nx_gen_grammar_started(g));
        const char *reason = run_scripted(f, g, &sc);
        const char *text = nx_gen_text(g);
        const char *want = "<think>\nfree text, not JSON: ]]\n</think>\n\n";
        assert_memory_equal(text, want, strlen(want));
        text += strlen(want);
        text += strspn(text, " \t\r\n"); /* more whitespace before the grammar is free */
        check_run(gram, text, reason);
        nx_gen_destroy(&g);
    }
    /* without a thinking block, the grammar applies from the first token */
    nx_sampling_t s = sampling_t1(4, 80);
    script_t sc = {.rng = 4};
    nx_gen_t *g = gen_for(f, &s, &spec);
    const char *reason = run_scripted(f, g, &sc);
    const char *text = nx_gen_text(g);
    if (strncmp(text, "<think>", 7) != 0) /* the random pick may open one (1 token in many) */
        check_run(gram, text, reason);
    nx_gen_destroy(&g);
    nx_gram_destroy(&gram);
}

/* Banned ids are never picked in free text, however likely; gram may be NULL. */
static void test_banned_ids(void **state)
{
    fixture_t *f = *state;
    int32_t banned = 42;
    nx_gen_grammar_t spec = {.banned_ids = &banned, .banned_id_count = 1};
    nx_sampling_t s = sampling_t1(2, 20);
    script_t sc = {.rng = 2};
    for (int i = 0; i < 20; i++)
        script_add_id(&sc, banned);
    nx_gen_t *g = gen_for(f, &s, &spec);
    run_scripted(f, g, &sc);
    for (size_t i = 0; i < nx_gen_count(g); i++)
        assert_int_not_equal(nx_gen_ids(g)[i], banned);
    assert_false(nx_gen_grammar_started(g));
    nx_gen_destroy(&g);
}

/* Bad combinations are NX_EINVAL naming what is wrong. */
static void test_bad_spec(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = gbnf(ab_gbnf);
    nx_sampling_t s = sampling_t1(1, 8);
    int32_t prompt[1] = {5};
    int32_t outside = (int32_t)f->vocab;
    const char *empty[1] = {""};
    nx_gen_grammar_t bad[] = {
        {.gram = gram},
        {.gram = gram, .vocab = f->gvocab, .think_open = "<think>"},
        {.vocab = f->gvocab, .trigger_strs = (const char *[]){"x"}, .trigger_str_count = 1},
        {.gram = gram, .vocab = f->gvocab, .trigger_ids = &outside, .trigger_id_count = 1},
        {.gram = gram, .vocab = f->gvocab, .trigger_strs = empty, .trigger_str_count = 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nx_gen_t *g = nx_gen_new(f->tok, f->vocab, &s, prompt, 1, NULL, 0, NULL, NULL, &err);
        assert_int_equal(nx_gen_set_grammar(g, &bad[i], &err), NX_EINVAL);
        assert_non_null(strstr(err.msg, "grammar"));
        nx_gen_destroy(&g);
    }
    nx_gram_destroy(&gram);
}

/* One generation through nx_generate_grammar, with the grammar's mask made before the step
 * (NEXUS_GRAMMAR_MASK=eager) or deferred into it (the default). */
static nx_gen_result_t run_masked(fixture_t *f, const nx_gen_grammar_t *spec, uint64_t seed,
                                  float penalty, bool eager)
{
    nx_err_t err = {0};
    nx_sampling_t s = sampling_t1(seed, 60);
    s.repetition_penalty = penalty;
    int32_t prompt[4] = {7, 8, 9, 10};
    if (eager)
        setenv("NEXUS_GRAMMAR_MASK", "eager", 1);
    nx_seq_t *seq = nx_seq_new(f->tiny.engine, 0, false, &err);
    assert_non_null(seq);
    nx_gen_result_t r;
    int rc = nx_generate_grammar(f->tiny.engine, seq, f->tok, prompt, 4, &s, f->stop_ids,
                                 f->stop_id_count, spec, NULL, NULL, &r, &err);
    unsetenv("NEXUS_GRAMMAR_MASK");
    if (rc != NX_OK)
        fail_msg("seed %llu (%s): %s", (unsigned long long)seed, eager ? "eager" : "deferred",
                 err.msg);
    nx_seq_destroy(f->tiny.engine, &seq);
    return r;
}

/* The mask computed during the step picks exactly what the mask computed before it picks:
 * same seeds, same ids, same text (the plan's draw does not depend on when its mask came). */
static void test_deferred_mask_equals_eager(void **state)
{
    fixture_t *f = *state;
    nx_gram_t *gram = schema(object_schema);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    for (uint64_t seed = 1; seed <= 6; seed++) {
        float penalty = seed % 2 ? 1.0f : 1.3f;
        nx_gen_result_t eager = run_masked(f, &spec, seed, penalty, true);
        nx_gen_result_t deferred = run_masked(f, &spec, seed, penalty, false);
        assert_int_equal(deferred.count, eager.count);
        assert_memory_equal(deferred.ids, eager.ids, eager.count * sizeof *eager.ids);
        assert_string_equal(deferred.text, eager.text);
        assert_string_equal(deferred.stop_reason, eager.stop_reason);
        check_run(gram, deferred.text, deferred.stop_reason);
        nx_gen_result_free(&eager);
        nx_gen_result_free(&deferred);
    }
    nx_gram_destroy(&gram);
}

/* Three generations stepped together sharing one matcher, as nexusd steps them; their texts
 * (caller frees) with the masks made before each step or during it. */
static void run_batch_masked(fixture_t *f, const nx_gen_grammar_t *spec, bool eager,
                             char *texts[3])
{
    nx_err_t err = {0};
    int32_t prompt[3][2] = {{7, 8}, {30, 31}, {50, 51}};
    nx_sampling_t s[3] = {sampling_t1(11, 60), sampling_t1(12, 60), sampling_t1(13, 60)};
    nx_seq_t *seqs[3];
    nx_gen_t *gens[3];
    if (eager)
        setenv("NEXUS_GRAMMAR_MASK", "eager", 1);
    for (int i = 0; i < 3; i++) {
        seqs[i] = nx_seq_new(f->tiny.engine, 0, false, &err);
        gens[i] = nx_gen_new(f->tok, f->vocab, &s[i], prompt[i], 2, f->stop_ids,
                             f->stop_id_count, NULL, NULL, &err);
        assert_int_equal(nx_gen_set_grammar(gens[i], spec, &err), NX_OK);
        assert_int_equal(nx_seq_feed(seqs[i], prompt[i], 2, &err), NX_OK);
    }
    unsetenv("NEXUS_GRAMMAR_MASK");
    step_together(f, seqs, gens, 3);
    for (int i = 0; i < 3; i++) {
        texts[i] = strdup(nx_gen_text(gens[i]));
        nx_gen_destroy(&gens[i]);
        nx_seq_destroy(f->tiny.engine, &seqs[i]);
    }
}

/* The same for sequences stepped together on one shared matcher: each deferred mask reads its
 * own generation's state, whatever the order the step calls them in. */
static void test_deferred_mask_equals_eager_batch(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_gram_t *gram = schema(object_schema);
    nx_gram_matcher_t *shared = nx_gram_matcher_new(gram, f->gvocab, &err);
    assert_non_null(shared);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab, .matcher = shared};
    char *eager[3], *deferred[3];
    run_batch_masked(f, &spec, true, eager);
    run_batch_masked(f, &spec, false, deferred);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(deferred[i], eager[i]);
        assert_true(strlen(eager[i]) > 0);
        free(eager[i]);
        free(deferred[i]);
    }
    nx_gram_matcher_destroy(&shared);
    nx_gram_destroy(&gram);
}

/* A deferred mask's provider for the tests: counts its calls, copies what the sequence's
 * logits buffer holds when it runs, allows one id (or none: no mask), or fails. */
typedef struct probe {
    const float *logits; /* the sequence's logits buffer; NULL: not watched */
    float *seen;         /* [vocab] copy of it at the call */
    uint32_t vocab;
    int calls;
    int32_t allow_id;    /* the only id allowed; -1: no mask */
    int fail;            /* NX_OK, or the error to fail with */
} probe_t;

static int probe_mask(void *user, uint32_t *words, uint32_t word_count, uint32_t *allow_bits_out,
                      nx_err_t *err)
{
    probe_t *p = user;
    p->calls++;
    if (p->logits)
        memcpy(p->seen, p->logits, p->vocab * sizeof *p->seen);
    if (p->fail != NX_OK)
        return nx_err_set(err, p->fail, "grammar matcher over its state caps (probe)");
    assert_int_equal(word_count, (p->vocab + 31) / 32);
    if (p->allow_id < 0)
        return NX_OK;
    memset(words, 0, word_count * sizeof *words);
    words[p->allow_id >> 5] |= 1u << (p->allow_id & 31);
    *allow_bits_out = p->vocab;
    return NX_OK;
}

/* The engine calls each deferred mask once per step, during the step, after the forward pass
 * (on the CPU the step's logits are already in the sequence's buffer), and picks under it;
 * sequences without one are not affected, and the request lasts one step. */
static void test_deferred_mask_after_forward(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_sampling_t greedy = nx_sampling_default();
    greedy.temperature = 0.0f;
    nx_seq_t *seqs[3];
    nx_sampler_t *samplers[3];
    int32_t prompt[3] = {7, 8, 9}, next[3] = {11, 12, 12}; /* 2: 1's twin, logits back */
    for (int i = 0; i < 3; i++) {
        seqs[i] = nx_seq_new(f->tiny.engine, 64, false, &err);
        samplers[i] = nx_sampler_new(&greedy, f->vocab, &err);
        assert_non_null(seqs[i]);
        assert_non_null(samplers[i]);
        assert_int_equal(nx_seq_feed(seqs[i], prompt, 3, &err), NX_OK);
    }
    assert_int_equal(nx_engine_step(f->tiny.engine, seqs, 3, &err), NX_OK); /* logits back */
    probe_t one = {.vocab = f->vocab, .allow_id = 42}, none = {.vocab = f->vocab, .allow_id = -1};
    one.logits = nx_seq_logits(seqs[0], NULL);
    one.seen = malloc(f->vocab * sizeof *one.seen);
    float *before = malloc(f->vocab * sizeof *before);
    memcpy(before, one.logits, f->vocab * sizeof *before);
    for (int i = 0; i < 3; i++)
        assert_int_equal(nx_seq_feed(seqs[i], &next[i], 1, &err), NX_OK);
    for (int i = 0; i < 2; i++)
        assert_int_equal(nx_seq_pick_next(seqs[i], samplers[i], NULL, 0, &err), NX_OK);
    nx__seq_defer_mask(seqs[0], probe_mask, &one);
    nx__seq_defer_mask(seqs[1], probe_mask, &none);
    assert_int_equal(one.calls, 0); /* not before the step */
    assert_int_equal(nx_engine_step(f->tiny.engine, seqs, 3, &err), NX_OK);
    assert_int_equal(one.calls, 1);
    assert_int_equal(none.calls, 1);
    assert_int_equal(nx_seq_picked(seqs[0]), 42);
    /* the provider saw this step's logits: the forward pass was done */
    assert_memory_not_equal(one.seen, before, f->vocab * sizeof *before);
    assert_memory_equal(one.seen, one.logits, f->vocab * sizeof *before);
    /* no mask: the plain greedy pick, as on its twin's logits */
    const float *twin = nx_seq_logits(seqs[2], NULL);
    assert_non_null(twin);
    assert_int_equal(nx_seq_picked(seqs[1]), nx_sampler_pick(samplers[2], twin, NULL, 0));
    for (int i = 0; i < 3; i++) {
        int32_t id = i < 2 ? nx_seq_picked(seqs[i]) : 5;
        assert_int_equal(nx_seq_feed(seqs[i], &id, 1, &err), NX_OK);
        assert_int_equal(nx_seq_pick_next(seqs[i], samplers[i], NULL, 0, &err), NX_OK);
    }
    assert_int_equal(nx_engine_step(f->tiny.engine, seqs, 3, &err), NX_OK);
    assert_int_equal(one.calls, 1); /* one step only */
    assert_int_equal(none.calls, 1);
    for (int i = 0; i < 3; i++) {
        nx_sampler_destroy(&samplers[i]);
        nx_seq_destroy(f->tiny.engine, &seqs[i]);
    }
    free(one.seen);
    free(before);
}

/* A provider's error fails the step with its message, the sequence named, nothing advanced;
 * the sequences step again afterwards, and a generation whose step failed is destroyed
 * cleanly. */
static void test_deferred_mask_error_fails_step(void **state)
{
    fixture_t *f = *state;
    nx_err_t err = {0};
    nx_sampling_t greedy = nx_sampling_default();
    greedy.temperature = 0.0f;
    nx_sampler_t *sampler = nx_sampler_new(&greedy, f->vocab, &err);
    nx_seq_t *seqs[2] = {nx_seq_new(f->tiny.engine, 64, false, &err),
                         nx_seq_new(f->tiny.engine, 64, false, &err)};
    int32_t prompt[3] = {7, 8, 9};
    probe_t failing = {.vocab = f->vocab, .fail = NX_ENOMEM};
    for (int i = 0; i < 2; i++)
        assert_int_equal(nx_seq_feed(seqs[i], prompt, 3, &err), NX_OK);
    assert_int_equal(nx_seq_pick_next(seqs[1], sampler, NULL, 0, &err), NX_OK);
    nx__seq_defer_mask(seqs[1], probe_mask, &failing);
    assert_int_equal(nx_engine_step(f->tiny.engine, seqs, 2, &err), NX_ENOMEM);
    assert_non_null(strstr(err.msg, "sequence 1"));
    assert_non_null(strstr(err.msg, "state caps"));
    assert_int_equal(failing.calls, 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(nx_seq_len(seqs[i]), 0);
        assert_int_equal(nx_seq_queued(seqs[i]), 3);
        assert_int_equal(nx_seq_picked(seqs[i]), -1);
    }
    assert_int_equal(nx_engine_step(f->tiny.engine, seqs, 2, &err), NX_OK); /* no request left */
    assert_int_equal(failing.calls, 1);
    assert_int_equal(nx_seq_len(seqs[1]), 3);
    for (int i = 0; i < 2; i++)
        nx_seq_destroy(f->tiny.engine, &seqs[i]);
    nx_sampler_destroy(&sampler);

    /* a generation under a grammar whose step failed (its mask stood in for by the probe) */
    nx_gram_t *gram = schema(object_schema);
    nx_gen_grammar_t spec = {.gram = gram, .vocab = f->gvocab};
    nx_sampling_t s = sampling_t1(3, 20);
    nx_seq_t *seq = nx_seq_new(f->tiny.engine, 64, false, &err);
    nx_gen_t *g = nx_gen_new(f->tok, f->vocab, &s, prompt, 3, f->stop_ids, f->stop_id_count,
                             NULL, NULL, &err);
    assert_int_equal(nx_gen_set_grammar(g, &spec, &err), NX_OK);
    assert_int_equal(nx_seq_feed(seq, prompt, 3, &err), NX_OK);
    assert_int_equal(nx_gen_pick_next(g, seq, &err), NX_OK);
    nx__seq_defer_mask(seq, probe_mask, &failing);
    assert_int_equal(nx_engine_step(f->tiny.engine, &seq, 1, &err), NX_ENOMEM);
    nx_gen_destroy(&g);
    nx_seq_destroy(f->tiny.engine, &seq);
    assert_null(g);
    assert_null(seq);
    nx_gram_destroy(&gram);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_pick_follows_grammar),
        cmocka_unit_test(test_shared_matcher),
        cmocka_unit_test(test_host_pick_follows_grammar),
        cmocka_unit_test(test_length_cuts),
        cmocka_unit_test(test_forced_bytes),
        cmocka_unit_test(test_forced_tokens_fast_forward),
        cmocka_unit_test(test_forced_start),
        cmocka_unit_test(test_lazy_trigger_string),
        cmocka_unit_test(test_lazy_trigger_at_start),
        cmocka_unit_test(test_lazy_trigger_id),
        cmocka_unit_test(test_think_then_grammar),
        cmocka_unit_test(test_banned_ids),
        cmocka_unit_test(test_bad_spec),
        cmocka_unit_test(test_deferred_mask_equals_eager),
        cmocka_unit_test(test_deferred_mask_equals_eager_batch),
        cmocka_unit_test(test_deferred_mask_after_forward),
        cmocka_unit_test(test_deferred_mask_error_fails_step),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
