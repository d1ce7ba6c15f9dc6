/* test_grammar.c — the grammar engine in C: GBNF and JSON Schema compile errors (named
 * keyword and pointer, LINE:COL), hostile inputs refused rather than crashing, byte matching,
 * state copies, and the token mask checked exhaustively on the committed tiny Qwen2 tokenizer
 * (tests/fixtures/tokenizer/qwen2_tiny, 659 ids): along random constrained walks, a token's
 * mask bit is set exactly when the matcher accepts the token, end ids exactly where the
 * grammar accepts. Run from the repository root (as `make unit` does).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gram_internal.h"
#include "grammar.h"
#include "nx_engine.h"

#define TINY_DIR "tests/fixtures/tokenizer/qwen2_tiny"

static nx_gram_t *schema(const char *text, nx_err_t *err)
{
    return nx_gram_from_json_schema(text, strlen(text), NULL, err);
}

static bool matches(const nx_gram_t *g, const char *text)
{
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, NULL);
    assert_non_null(m);
    bool ok = nx_gram_matcher_advance(m, text, strlen(text), NULL) == NX_OK &&
              nx_gram_matcher_accepting(m);
    nx_gram_matcher_destroy(&m);
    return ok;
}

static void expect_error(const char *schema_text, int code, const char *msg)
{
    nx_err_t err = {0};
    nx_gram_t *g = schema(schema_text, &err);
    if (g)
        fail_msg("compiled, expected '%s'", msg);
    assert_int_equal(err.code, code);
    if (!strstr(err.msg, msg))
        fail_msg("message '%s' lacks '%s'", err.msg, msg);
}

static void test_schema_errors_name_keyword_and_pointer(void **state)
{
    expect_error("{\"properties\":{\"a\":{\"patternProperties\":{}}}}", NX_ENOTSUP,
                 "unsupported keyword 'patternProperties' at /properties/a");
    expect_error("{\"items\":{\"not\":{}}}", NX_ENOTSUP, "unsupported keyword 'not' at /items");
    expect_error("{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", NX_ENOTSUP,
                 "unsupported keyword 'oneOf' at the root");
    expect_error("{\"type\":\"string\",\"format\":\"uri\"}", NX_ENOTSUP, "format 'uri'");
    expect_error("{\"type\":\"string\",\"pattern\":\"(?=a)b\"}", NX_ENOTSUP, "lookahead");
    expect_error("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", NX_ENOTSUP, "backreference");
    expect_error("{\"$ref\":\"http://example.com/s.json\"}", NX_ENOTSUP, "'$ref'");
    expect_error("{\"type\":\"nope\"}", NX_EINVAL, "'type' at the root");
    expect_error("{\"type\":", NX_EINVAL, "not JSON");
    expect_error("{\"$ref\":\"#/$defs/missing\"}", NX_EINVAL, "points at nothing");
}

static void test_schema_hostile_inputs_are_refused(void **state)
{
    /* a reference to itself only, a very deep nesting, a huge length, a huge pattern repeat */
    expect_error("{\"$ref\":\"#\"}", NX_ENOTSUP, "deeper than");
    size_t depth = 1000, len = 0; /* under jansson's own cap of 2048 */
    char *deep = malloc(depth * 12 + 16);
    assert_non_null(deep);
    for (size_t i = 0; i < depth; i++)
        len += (size_t)sprintf(deep + len, "{\"items\":");
    len += (size_t)sprintf(deep + len, "true");
    for (size_t i = 0; i < depth; i++)
        deep[len++] = '}';
    deep[len] = '\0';
    expect_error(deep, NX_ENOTSUP, "nested deeper than");
    free(deep);
    expect_error("{\"type\":\"string\",\"maxLength\":100000}", NX_ENOTSUP, "'maxLength'");
    expect_error("{\"type\":\"string\",\"pattern\":\"^(a{1000}){1000}$\"}", NX_ENOTSUP, "pattern");
    expect_error("{\"type\":\"array\",\"minItems\":1000000}", NX_ENOTSUP, "'minItems'");
    /* a DFA that blows up under its state cap: 80 literals, `.{38}+.{11}`, 130 literals, `.{23}`
     * (from fuzz_json_schema's long run: 182 M steps, 1.2 s here, 51 s under ASan) */
    char pattern[512];
    int n = snprintf(pattern, sizeof pattern, "{\"type\":\"string\",\"pattern\":\"^");
    for (int i = 0; i < 80; i++)
        pattern[n++] = '%';
    n += snprintf(pattern + n, sizeof pattern - (size_t)n, "......................................+...........");
    for (int i = 0; i < 130; i++)
        pattern[n++] = '}';
    snprintf(pattern + n, sizeof pattern - (size_t)n, ".......................$\"}");
    expect_error(pattern, NX_ENOTSUP, "too complex");
}

static void test_schema_bytes(void **state)
{
    nx_err_t err = {0};
    nx_gram_t *g = schema("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\","
                          "\"minimum\":-5,\"exclusiveMaximum\":300},\"tags\":{\"type\":\"array\","
                          "\"items\":{\"enum\":[\"a\",\"b\\n\"]},\"maxItems\":2},\"when\":{\"type\":"
                          "\"string\",\"format\":\"date-time\"}},\"required\":[\"id\"],"
                          "\"additionalProperties\":false}", &err);
    assert_non_null(g);
    assert_true(matches(g, "{\"id\":-5}"));
    assert_true(matches(g, "{\"id\":299,\"tags\":[\"b\\n\",\"a\"]}"));
    assert_true(matches(g, "{\"tags\":[],\"id\":0}")); /* any order */
    assert_true(matches(g, "{\"when\":\"2024-02-29T23:59:59.5+01:00\",\"id\":7}"));
    assert_false(matches(g, "{\"id\":300}"));
    assert_false(matches(g, "{\"id\":-6}"));
    assert_false(matches(g, "{\"id\":1,\"id\":1}"));
    assert_false(matches(g, "{\"id\":1,\"x\":1}"));
    assert_false(matches(g, "{\"tags\":[\"a\",\"a\",\"a\"],\"id\":1}"));
    assert_false(matches(g, "{\"when\":\"2023-02-29T00:00:00Z\",\"id\":1}"));
    assert_false(matches(g, "{ \"id\":1}"));
    nx_gram_destroy(&g);

    g = nx_gram_json_object(&err);
    assert_non_null(g);
    assert_true(matches(g, "{\"a\":[1,-2.5e3,{\"b\":null}],\"c\":\"\\u0001\"}"));
    assert_false(matches(g, "[]"));
    assert_false(matches(g, "{\"a\":01}"));
    nx_gram_destroy(&g);
}

static void test_gbnf_parse_and_errors(void **state)
{
    const char *text = "# a comment\nroot ::= greeting (\" \" name){1,2} \"!\"?\n"
                       "greeting ::= \"hi\" | \"h\\u00e9llo\"\nname ::= [A-Z] [a-z]*\n";
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_gbnf(text, strlen(text), &err);
    assert_non_null(g);
    assert_true(matches(g, "hi Bo!"));
    assert_true(matches(g, "h\xc3\xa9llo Ann Bo"));
    assert_false(matches(g, "hi"));
    assert_false(matches(g, "hi bo"));
    assert_false(matches(g, "hi A B C"));
    nx_gram_destroy(&g);

    static const struct { const char *text, *msg; } bad[] = {
        {"root ::= \"a\"\nx ::= (\"b\"\n", "3:1: expected ')'"},
        {"root ::= foo\n", "1:10: undefined rule 'foo'"},
        {"root ::= root \"a\" | \"b\"\n", "left recursion through rule 'root'"},
        {"a ::= \"x\"\n", "no 'root' rule"},
        {"root ::= [z-a]\n", "1:10: range out of order"},
        {"root ::= \"abc\n", "unterminated string"},
        {"root ::= <think>\n", "token references"},
        /* too large as one terminal and as rules: the item's regex was leaked (fuzz_gbnf;
         * the ASan tree's leak check fails this test without the fix) */
        {"root ::= [b-d]{2,333333} x\nx ::= \"a\"\n", "1:10: repetition bound 333333"},
        {"root ::= (\"ab\" | [b-d]{2,333333} | .?) x\nx ::= \"a\"\n", "repetition bound"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = (nx_err_t){0};
        g = nx_gram_from_gbnf(bad[i].text, strlen(bad[i].text), &err);
        assert_null(g);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].text, err.msg, bad[i].msg);
    }
    /* nesting deeper than the parser's cap is refused, not a stack overflow */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    assert_non_null(deep);
    memcpy(deep, "root ::= ", 9);
    for (size_t i = 0; i < n; i++) { /* a loop: gcc -O1 misreads the bounds of a memset here */
        deep[9 + i] = '(';
        deep[9 + n + i] = ')';
    }
    deep[9 + 2 * n] = '\0';
    g = nx_gram_from_gbnf(deep, strlen(deep), &err);
    assert_null(g);
    free(deep);
}

/* A matcher reused across generations drops its interned states past a threshold at reset
 * (1M stack nodes): nesting 1.1M brackets deep passes it; the matcher still works after. */
static void test_reset_drops_grown_states(void **state)
{
    const char *text = "root ::= \"[\" root \"]\" | \"x\"\n";
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_gbnf(text, strlen(text), &err);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, &err);
    size_t n = 1100000;
    char *deep = malloc(n);
    assert_non_null(deep);
    memset(deep, '[', n);
    assert_int_equal(nx_gram_matcher_advance(m, deep, n, NULL), NX_OK);
    free(deep);
    nx_gram_matcher_reset(m);
    assert_false(nx_gram_matcher_accepting(m));
    assert_int_equal(nx_gram_matcher_advance(m, "[[x]]", 5, NULL), NX_OK);
    assert_true(nx_gram_matcher_accepting(m));
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
}

static void test_state_copy(void **state)
{
    nx_err_t err = {0};
    nx_gram_t *g = schema("{\"type\":\"array\",\"items\":{\"type\":\"boolean\"}}", &err);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, &err);
    assert_int_equal(nx_gram_matcher_advance(m, "[true", 5, NULL), NX_OK);
    nx_gram_state_t s = nx_gram_matcher_state(m);
    assert_int_equal(nx_gram_matcher_advance(m, "]", 1, NULL), NX_OK);
    assert_true(nx_gram_matcher_finished(m));
    nx_gram_matcher_set_state(m, s);
    assert_false(nx_gram_matcher_accepting(m));
    assert_int_equal(nx_gram_matcher_advance(m, ",x", 2, NULL), NX_EINVAL); /* unchanged */
    assert_int_equal(nx_gram_matcher_advance(m, ",false]", 7, NULL), NX_OK);
    assert_true(nx_gram_matcher_accepting(m));
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
}

/* Walk `steps` random allowed tokens; at every step compare the mask with accept_token for
 * every id. */
static int exhaustive_walks(nx_gram_t *g, nx_gram_vocab_t *v, int32_t eos, unsigned seed,
                            int walks)
{
    int steps_done = 0;
    nx_err_t err = {0};
    uint32_t n = nx_gram_vocab_size(v);
    uint32_t *mask = calloc(nx_gram_mask_words(v), sizeof *mask);
    int32_t *allowed = malloc(n * sizeof *allowed);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, &err);
    assert_non_null(m);
    srand(seed);
    for (int w = 0; w < walks; w++) {
        nx_gram_matcher_reset(m);
        for (int step = 0; step < 400; step++) {
            assert_int_equal(nx_gram_matcher_mask(m, mask, &err), NX_OK);
            nx_gram_state_t s = nx_gram_matcher_state(m);
            uint32_t count = 0;
            for (uint32_t id = 0; id < n; id++) {
                bool bit = mask[id >> 5] >> (id & 31) & 1;
                bool ok = nx_gram_matcher_accept_token(m, (int32_t)id, NULL) == NX_OK;
                nx_gram_matcher_set_state(m, s);
                if (bit != ok)
                    fail_msg("walk %d step %d: token %u: mask %d, matcher %d", w, step, id, bit,
                             ok);
                if (bit)
                    allowed[count++] = (int32_t)id;
            }
            assert_true(count > 0); /* never a dead end */
            bool eos_ok = mask[eos >> 5] >> (eos & 31) & 1;
            int32_t pick = eos_ok && (step > 300 || rand() % 16 == 0) ? eos
                                                                      : allowed[rand() % count];
            if (eos_ok && count == 1)
                pick = eos;
            assert_int_equal(nx_gram_matcher_accept_token(m, pick, NULL), NX_OK);
            steps_done++;
            if (pick == eos)
                break;
        }
    }
    nx_gram_matcher_destroy(&m);
    free(mask);
    free(allowed);
    return steps_done;
}

static void test_mask_exact_on_tiny_tokenizer(void **state)
{
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(TINY_DIR, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    assert_non_null(v);
    static const char *const schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
        "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},\"tags\":{\"type\":\"array\","
        "\"items\":{\"enum\":[\"red\",\"green\",\"the end\"]}}},\"required\":[\"name\",\"age\"]}",
        "{\"anyOf\":[{\"type\":\"number\",\"minimum\":-10},{\"type\":\"string\",\"pattern\":"
        "\"^[a-f0-9]{2,8}$\"},{\"type\":\"null\"}]}",
        "{\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"boolean\"},"
        "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/t\"},\"maxItems\":2}},"
        "\"additionalProperties\":false}},\"$ref\":\"#/$defs/t\"}",
        "true",
        /* bounded strings read from their state numbers (slice_of): a min only, a max past
         * SLICE_MAX_CHARS, both */
        "{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\",\"minLength\":3},{\"type\":"
        "\"string\",\"maxLength\":70},{\"type\":\"string\",\"minLength\":2,\"maxLength\":5}],"
        "\"items\":false,\"minItems\":3}",
    };
    for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++) {
        nx_gram_t *g = schema(schemas[i], &err);
        if (!g)
            fail_msg("%s", err.msg);
        int steps = exhaustive_walks(g, v, eos, 17 + (unsigned)i, 6);
        print_message("schema %zu: %d tokens checked against all %u ids\n", i, steps,
                      nx_gram_vocab_size(v));
        assert_true(steps >= 30);
        nx_gram_destroy(&g);
    }
    const char *gbnf = "root ::= \"(\" item (\", \" item)* \")\"\nitem ::= [a-z]+ | \"the\" | "
                       "[0-9]{1,3}\n";
    nx_gram_t *g = nx_gram_from_gbnf(gbnf, strlen(gbnf), &err);
    assert_non_null(g);
    assert_true(exhaustive_walks(g, v, eos, 99, 6) >= 30);
    nx_gram_destroy(&g);
    /* literals ending in a space or a quote, where most tokens beginning with the literal's
     * last bytes cross into what follows (the literal classes of tclass_build_literal) */
    const char *lits = "root ::= \"name: \" item \" \\\"\" [a-z ]* \"\\\"\"\n"
                       "item ::= \"the\" | [a-z]+ \" \" [0-9] | \"(\" root \")\"\n";
    g = nx_gram_from_gbnf(lits, strlen(lits), &err);
    if (!g)
        fail_msg("%s", err.msg);
    assert_true(exhaustive_walks(g, v, eos, 7, 6) >= 30);
    nx_gram_destroy(&g);
    nx_gram_vocab_destroy(&v);
    nx_tokenizer_destroy(&tok);
}

/* Regular pieces of a GBNF grammar (groups and quantifiers over literals and classes) are
 * folded into one DFA terminal: the nested `+` that fuzz_gbnf found slow (every parse stack
 * could hold either frame at each of 26 levels) stay a handful of rules and DFA states, and
 * folding keeps the language: matches as before, masks exact on the tiny tokenizer. */
static void test_gbnf_regular_pieces_fold(void **state)
{
    char text[256];
    int n = snprintf(text, sizeof text, "root ::= (\"a:= rou\" | [b-d]{2,3} | .? ) x+\n"
                                        "x ::= \"\\u15e9\" | [^\\x00-\\x7f]");
    for (int i = 0; i < 26; i++)
        text[n++] = '+';
    text[n++] = '\n';
    text[n] = '\0';
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_gbnf(text, strlen(text), &err);
    if (!g)
        fail_msg("%s", err.msg);
    uint32_t rules, terms, dfa_states;
    nx_gram_stats(g, &rules, &terms, &dfa_states);
    print_message("nested +: %u rules, %u terminals, %u DFA states\n", rules, terms, dfa_states);
    assert_true(rules <= 12);     /* as rules: one per `+` and more (over 30) */
    assert_true(dfa_states <= 256); /* each piece once, and the folds */
    assert_true(matches(g, "bb\xc3\xa9\xc3\xa9"));
    assert_true(matches(g, "a:= rou\xe1\x97\xa9"));
    assert_false(matches(g, "bbe"));
    assert_false(matches(g, "bb"));
    nx_gram_destroy(&g);

    const char *folded = "root ::= (\"ab\" | [0-9]{2,3})+ \"!\" (\" \" [a-z]*)? end\n"
                         "end ::= \"\" | (\"x\" end)\n";
    g = nx_gram_from_gbnf(folded, strlen(folded), &err);
    if (!g)
        fail_msg("%s", err.msg);
    assert_true(matches(g, "ab12!"));
    assert_true(matches(g, "123ab! zz"));
    assert_true(matches(g, "ab! xx"));
    assert_true(matches(g, "ab!xxx"));
    assert_false(matches(g, "ab1!"));
    assert_true(matches(g, "ab1234!")); /* 12 34 */
    assert_false(matches(g, "abc!"));
    assert_false(matches(g, "!"));
    assert_false(matches(g, "ab! 1"));
    nx_tokenizer_t *tok = nx_tokenizer_load(TINY_DIR, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    assert_non_null(v);
    assert_true(exhaustive_walks(g, v, eos, 5, 6) >= 20);
    nx_gram_destroy(&g);
    nx_gram_vocab_destroy(&v);
    nx_tokenizer_destroy(&tok);
}

/* A token that completes a terminal which must end there is only allowed if something can
 * follow: here the key "b" has the schema false, so after {"b the token ": is refused. Found by
 * fuzz_json_schema (the mask allowed it). */
static void test_mask_token_ending_a_terminal_needs_a_continuation(void **state)
{
    static const char *const toks[] = {"{\"", "b", "\":", "\"b\":", "}", "1", "c", "<end>"};
    const char *bytes[8];
    uint32_t lens[8];
    bool special[8] = {[7] = true};
    for (int i = 0; i < 8; i++) {
        bytes[i] = toks[i];
        lens[i] = (uint32_t)strlen(toks[i]);
    }
    int32_t eos = 7;
    nx_err_t err = {0};
    nx_gram_vocab_t *v = nx_gram_vocab_new(bytes, lens, special, 8, &eos, 1, &err);
    nx_gram_t *g = schema("{\"type\":\"object\",\"properties\":{\"b\":false}}", &err);
    assert_non_null(v);
    assert_non_null(g);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, &err);
    uint32_t mask[1];
    assert_int_equal(nx_gram_matcher_accept_token(m, 0, NULL), NX_OK); /* {" */
    assert_int_equal(nx_gram_matcher_accept_token(m, 1, NULL), NX_OK); /* b */
    assert_int_equal(nx_gram_matcher_mask(m, mask, &err), NX_OK);
    /* "bc", "b}", "b{"... are additional keys; "b" itself cannot end the key */
    assert_int_equal(mask[0], 1u << 0 | 1u << 1 | 1u << 4 | 1u << 5 | 1u << 6);
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
    nx_gram_vocab_destroy(&v);
}

/* The mask comes before every other filter: the best logit is disallowed, top-k 1 would keep
 * only it without the mask; picks stay inside the mask, greedy or at temperature 1. */
static void test_sampler_pick_masked(void **state)
{
    float logits[64];
    for (int i = 0; i < 64; i++)
        logits[i] = (float)(i % 7);
    logits[5] = 100.0f;                 /* disallowed below */
    uint32_t allow[2] = {0x00F00000u, 0x1u}; /* ids 20-23 and 32 */
    nx_err_t err = {0};
    for (int greedy = 0; greedy < 2; greedy++) {
        nx_sampling_t sp = nx_sampling_default();
        sp.temperature = greedy ? 0.0f : 1.0f;
        sp.top_k = 1;
        sp.seed = 3;
        nx_sampler_t *s = nx_sampler_new(&sp, 64, &err);
        assert_non_null(s);
        for (int k = 0; k < 50; k++) {
            int32_t id = nx_sampler_pick_masked(s, logits, NULL, 0, allow, 64);
            assert_true((id >= 20 && id <= 23) || id == 32);
            if (greedy)
                assert_int_equal(id, 20); /* 20 % 7 = 6: the best allowed logit */
        }
        uint32_t none[2] = {0, 0};
        assert_int_equal(nx_sampler_pick_masked(s, logits, NULL, 0, none, 64), -1);
        /* ids past allow_bits are disallowed: only 20-23 remain of 32 bits */
        int32_t id = nx_sampler_pick_masked(s, logits, NULL, 0, allow, 32);
        assert_true(id >= 20 && id <= 23);
        nx_sampler_destroy(&s);
    }
}


/* A bounded string's DFA, built directly with a character counter (gram_strlen.c), has the
 * language of the regex `"[\s\S]{min,max}"` in json.dumps's encoding: the differences both
 * ways are empty. And through the schema compiler, lengths count code points and escapes. */
static void test_string_length_dfa(void **state)
{
    static const uint32_t bounds[][2] = {{0, 0}, {0, 1}, {1, 3}, {3, 3}, {5, 40}, {0, UINT32_MAX},
                                         {2, UINT32_MAX}, {17, UINT32_MAX}};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        uint32_t lo = bounds[i][0], hi = bounds[i][1];
        char re[64];
        if (hi == UINT32_MAX)
            snprintf(re, sizeof re, "[\\s\\S]{%u,}", lo);
        else
            snprintf(re, sizeof re, "[\\s\\S]{%u,%u}", lo, hi);
        nx__dfa_t direct, regex, diff;
        nx_err_t err = {0};
        assert_int_equal(nx__dfa_json_length(lo, hi, &direct, &err), NX_OK);
        assert_int_equal(nx__regex_dfa(re, false, NX__ENC_JSON, "\"", "\"", &regex, &err), NX_OK);
        assert_int_equal(nx__dfa_product(&direct, &regex, true, &diff, &err), NX_OK);
        if (diff.n_states)
            fail_msg("%u..%u: the direct DFA accepts more than %s", lo, hi, re);
        nx__dfa_free(&diff);
        assert_int_equal(nx__dfa_product(&regex, &direct, true, &diff, &err), NX_OK);
        if (diff.n_states)
            fail_msg("%u..%u: the direct DFA misses strings of %s", lo, hi, re);
        nx__dfa_free(&diff);
        nx__dfa_free(&direct);
        nx__dfa_free(&regex);
    }
    nx_err_t err = {0};
    nx_gram_t *g = schema("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", &err);
    assert_non_null(g);
    assert_true(matches(g, "\"a\\n\xc3\xa9\""));  /* a, newline, é: 3 */
    assert_true(matches(g, "\"\\u0001\xf0\x9f\x98\x80\""));
    assert_false(matches(g, "\"abcd\""));
    assert_false(matches(g, "\"\xc3\xa9\""));
    assert_true(matches(g, "\"\xc3\xa9\xc3\xa9\""));
    assert_false(matches(g, "\"a\"b\""));
    nx_gram_destroy(&g);
    expect_error("{\"type\":\"string\",\"maxLength\":10000}", NX_ENOTSUP, "'maxLength'");
}

/* The same format, bounded string or number range in many places of one grammar (300 tools
 * with an e-mail field) is one terminal, built once: three e-mail fields cost the DFA states
 * of one. */
static void test_keyed_terminals_shared(void **state)
{
    nx_err_t err = {0};
    const char *one = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\","
                      "\"format\":\"email\",\"maxLength\":50}},\"required\":[\"a\"],"
                      "\"additionalProperties\":false}";
    const char *three = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\","
                        "\"format\":\"email\",\"maxLength\":50},\"b\":{\"type\":\"string\","
                        "\"format\":\"email\",\"maxLength\":50},\"c\":{\"type\":\"array\","
                        "\"items\":{\"type\":\"string\",\"format\":\"email\",\"maxLength\":50}}},"
                        "\"required\":[\"a\",\"b\",\"c\"],\"additionalProperties\":false}";
    nx_gram_t *g1 = schema(one, &err), *g3 = schema(three, &err);
    assert_non_null(g1);
    assert_non_null(g3);
    uint32_t rules, terms1, terms3, states1, states3;
    nx_gram_stats(g1, &rules, &terms1, &states1);
    nx_gram_stats(g3, &rules, &terms3, &states3);
    print_message("one e-mail field: %u DFA states; three: %u\n", states1, states3);
    assert_true(states3 < states1 + 100); /* not 3 x 6,300: the e-mail DFA once */
    assert_true(matches(g3, "{\"c\":[\"x@y.io\"],\"a\":\"a@b.cd\",\"b\":\"q@r.st\"}"));
    assert_false(matches(g3, "{\"c\":[\"x@y\"],\"a\":\"a@b.cd\",\"b\":\"q@r.st\"}"));
    nx_gram_destroy(&g1);
    nx_gram_destroy(&g3);
}

/* Token classes are shared by the matchers of a grammar (built once, then read by all), and a
 * DFA terminal's by every grammar with the same DFA under one vocabulary:
 * matchers on four threads walking the same tokens get the masks of a lone matcher, and a
 * matcher under a second vocabulary gets exact masks of its own (the classes of the first
 * vocabulary, claimed first, are not used for it). */
typedef struct walk_job {
    const nx_gram_t *g;
    const nx_gram_vocab_t *v;
    const int32_t *ids;
    size_t n_ids;
    const uint32_t *want; /* [n_ids + 1 masks] */
    bool same;
} walk_job_t;

static void *walk_thread(void *arg)
{
    walk_job_t *job = arg;
    size_t words = nx_gram_mask_words(job->v);
    uint32_t *mask = malloc(words * sizeof *mask);
    nx_gram_matcher_t *m = nx_gram_matcher_new(job->g, job->v, NULL);
    job->same = m && mask;
    for (size_t i = 0; job->same && i <= job->n_ids; i++) {
        job->same = nx_gram_matcher_mask(m, mask, NULL) == NX_OK &&
                    !memcmp(mask, job->want + i * words, words * sizeof *mask);
        if (i < job->n_ids)
            job->same = job->same && nx_gram_matcher_accept_token(m, job->ids[i], NULL) == NX_OK;
    }
    nx_gram_matcher_destroy(&m);
    free(mask);
    return NULL;
}

static void test_classes_shared_between_matchers(void **state)
{
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(TINY_DIR, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    assert_non_null(v);
    nx_gram_t *g = schema("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
                          "\"maxLength\":20},\"tags\":{\"type\":\"array\",\"items\":{\"enum\":"
                          "[\"red\",\"green\"]}}},\"required\":[\"name\",\"tags\"],"
                          "\"additionalProperties\":false}", &err);
    assert_non_null(g);
    const char *text = "{\"name\":\"the end of it\",\"tags\":[\"green\",\"red\"]}";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    assert_int_equal(nx_tokenizer_encode(tok, text, strlen(text), &ids, &n_ids, &err), NX_OK);
    size_t words = nx_gram_mask_words(v);
    uint32_t *want = malloc((n_ids + 1) * words * sizeof *want);
    assert_non_null(want);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, &err);
    for (size_t i = 0; i <= n_ids; i++) {
        assert_int_equal(nx_gram_matcher_mask(m, want + i * words, &err), NX_OK);
        if (i < n_ids)
            assert_int_equal(nx_gram_matcher_accept_token(m, ids[i], &err), NX_OK);
    }
    nx_gram_matcher_destroy(&m);
    walk_job_t jobs[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (walk_job_t){.g = g, .v = v, .ids = ids, .n_ids = n_ids, .want = want};
        assert_int_equal(pthread_create(&th[k], NULL, walk_thread, &jobs[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        assert_true(jobs[k].same);
    }
    /* a second vocabulary for the same grammar: a few pieces and every single character the
     * instances need (so no walk dead-ends for want of a token), then the end id */
    static const char *const pieces[] = {"{\"", "name", "\":\"", "the", " end", "\",\"",
                                         "tags", "\":[", "\"green", "\"red", "\"]"};
    const char *chars = " \"{}[],:abcdefghijklmnopqrstuvwxyz";
    size_t n_pieces = sizeof pieces / sizeof pieces[0], n2 = n_pieces + strlen(chars) + 1;
    const char **strs = calloc(n2, sizeof *strs);
    uint32_t *lens = calloc(n2, sizeof *lens);
    assert_non_null(strs);
    assert_non_null(lens);
    for (size_t i = 0; i < n2 - 1; i++) {
        strs[i] = i < n_pieces ? pieces[i] : chars + (i - n_pieces);
        lens[i] = i < n_pieces ? (uint32_t)strlen(pieces[i]) : 1;
    }
    strs[n2 - 1] = "<end>";
    lens[n2 - 1] = 5;
    int32_t eos2 = (int32_t)n2 - 1;
    nx_gram_vocab_t *v2 = nx_gram_vocab_new(strs, lens, NULL, (uint32_t)n2, &eos2, 1, &err);
    assert_non_null(v2);
    assert_true(exhaustive_walks(g, v2, eos2, 5, 6) >= 30);
    free(strs);
    free(lens);
    nx_gram_vocab_destroy(&v2);
    /* the vocabulary that claimed the grammar's classes goes (its own classes with it), a new
     * one comes, perhaps at the same address: the grammar's table is not used for it, and a
     * second grammar with the same DFA terminals finds the new vocabulary's classes exact */
    nx_gram_vocab_destroy(&v);
    v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    assert_non_null(v);
    assert_true(exhaustive_walks(g, v, eos, 8, 4) >= 20);
    nx_gram_t *g2 = schema("{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":"
                           "20}}", &err);
    assert_non_null(g2);
    assert_true(exhaustive_walks(g2, v, eos, 9, 4) >= 20);
    nx_gram_destroy(&g2);
    free(want);
    free(ids);
    nx_gram_destroy(&g);
    nx_gram_vocab_destroy(&v);
    nx_tokenizer_destroy(&tok);
}

/* --- decimal number bounds: exact, checked against a decimal-text oracle ------------------------ */

typedef struct dec {
    bool neg;
    char ip[40], fp[80]; /* integer digits without leading zeros, fraction without trailing */
} dec_t;

/* "-?digits(.digits)?" as an exact decimal; false for anything else (exponents included). */
static bool dec_parse(const char *s, dec_t *d)
{
    memset(d, 0, sizeof *d);
    if (*s == '-')
        d->neg = *s++ == '-';
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n >= sizeof d->ip || (s[0] == '0' && n > 1))
        return false;
    size_t skip = strspn(s, "0");
    if (skip == n)
        skip = n; /* zero: no integer digits */
    memcpy(d->ip, s + skip, n - skip);
    s += n;
    if (*s == '.') {
        size_t f = strspn(++s, "0123456789");
        if (f == 0 || f >= sizeof d->fp)
            return false;
        memcpy(d->fp, s, f);
        s += f;
        while (f && d->fp[f - 1] == '0')
            d->fp[--f] = '\0';
    }
    if (*s)
        return false;
    if (!d->ip[0] && !d->fp[0])
        d->neg = false; /* -0 is 0 */
    return true;
}

/* -1, 0, 1 as a < b, a == b, a > b, by the digits: the oracle. */
static int dec_cmp(const dec_t *a, const dec_t *b)
{
    if (a->neg != b->neg)
        return a->neg ? -1 : 1;
    int s = a->neg ? -1 : 1, c;
    size_t la = strlen(a->ip), lb = strlen(b->ip);
    if (la != lb)
        return la < lb ? -s : s;
    if ((c = strcmp(a->ip, b->ip)) != 0)
        return c < 0 ? -s : s;
    for (size_t i = 0; a->fp[i] || b->fp[i]; i++) {
        char x = a->fp[i] ? a->fp[i] : '0', y = b->fp[i] ? b->fp[i] : '0';
        if (x != y)
            return x < y ? -s : s;
        if (!a->fp[i] || !b->fp[i]) {
            /* one ran out: the other's rest decides (it has a nonzero digit, none trailing) */
            return a->fp[i] ? s : -s;
        }
    }
    return 0;
}

/* Instances around the decimal p: p, p with zeros, p nudged by one in its last digit and by a
 * tiny amount, and the same negated. */
static size_t around(const char *p, char out[][96], size_t n)
{
    char base[64], tmp[96];
    snprintf(base, sizeof base, "%s", p[0] == '-' ? p + 1 : p);
    bool dot = strchr(base, '.') != NULL;
    size_t len = strlen(base);
    const char *forms[8];
    char nudge_up[64], nudge_down[64];
    snprintf(nudge_up, sizeof nudge_up, "%s", base);
    snprintf(nudge_down, sizeof nudge_down, "%s", base);
    forms[0] = "";
    forms[1] = dot ? "0" : ".0";
    forms[2] = dot ? "000" : ".000";
    forms[3] = dot ? "0000000001" : ".0000000001";
    forms[4] = dot ? "9" : ".9";
    size_t k = 0;
    for (int sign = 0; sign < 2; sign++) {
        for (int f = 0; f < 5 && k < n; f++) {
            snprintf(tmp, sizeof tmp, "%s%s%s", sign ? "-" : "", base, forms[f]);
            snprintf(out[k++], 96, "%s", tmp);
        }
        if (base[len - 1] < '9' && k < n) {
            nudge_up[len - 1] = (char)(base[len - 1] + 1);
            snprintf(out[k++], 96, "%s%s", sign ? "-" : "", nudge_up);
        }
        if (base[len - 1] > '0' && k < n && !(len == 1 && base[0] == '1')) {
            nudge_down[len - 1] = (char)(base[len - 1] - 1);
            if (nudge_down[0] != '0' || len == 1 || nudge_down[1] == '.')
                snprintf(out[k++], 96, "%s%s", sign ? "-" : "", nudge_down);
        }
    }
    return k;
}

static const struct { const char *json, *plain; } DEC_BOUNDS[] = {
    {"0.5", "0.5"},     {"-0.5", "-0.5"},   {"0", "0"},         {"99.99", "99.99"},
    {"-99.99", "-99.99"}, {"0.1", "0.1"},   {"-0.1", "-0.1"},   {"1e-3", "0.001"},
    {"-1E-3", "-0.001"}, {"12.345", "12.345"}, {"-3.25", "-3.25"}, {"1.5", "1.5"},
    {"100", "100"},     {"-7", "-7"},       {"0.05", "0.05"},   {"10.01", "10.01"},
    {"2.5e1", "25"},    {"0.0", "0"},       {"-0.0", "0"},      {"1234.000001", "1234.000001"},
    {"0.999", "0.999"}, {"9.9", "9.9"},     {"-10.5", "-10.5"},
};
static const char *const DEC_KEYS[] = {"minimum", "exclusiveMinimum", "maximum",
                                       "exclusiveMaximum"};

/* Every instance near every bound, under each bound kind on one schema, against the oracle. */
static void check_bounds(const char *type, const char *const *keys, const int *which, int n_keys)
{
    static char inst[512][96];
    size_t n_inst = 0;
    static const char *const fixed[] = {"0", "-0", "0.0", "-0.0", "1", "-1", "2", "-2", "0.4999",
                                        "0.50", "0.5000001", "100.0", "99.999", "99.98", "3",
                                        "12345678", "-12345678", "0.00099", "0.0010", "25.0",
                                        "24.99999999999", "1e2", "-1e-9", "1.0e0"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        snprintf(inst[n_inst++], 96, "%s", fixed[i]);
    for (size_t b = 0; b < sizeof DEC_BOUNDS / sizeof *DEC_BOUNDS; b++)
        n_inst += around(DEC_BOUNDS[b].plain, inst + n_inst, 512 - n_inst);
    char text[512];
    int len = snprintf(text, sizeof text, "{\"type\":\"%s\"", type);
    for (int k = 0; k < n_keys; k++)
        len += snprintf(text + len, sizeof text - (size_t)len, ",\"%s\":%s", keys[k],
                        DEC_BOUNDS[which[k]].json);
    snprintf(text + len, sizeof text - (size_t)len, "}");
    nx_err_t err = {0};
    nx_gram_t *g = schema(text, &err);
    if (!g)
        fail_msg("%s: %s", text, err.msg);
    for (size_t i = 0; i < n_inst; i++) {
        dec_t x, m;
        bool want = dec_parse(inst[i], &x);
        if (want && !strcmp(type, "integer"))
            want = !strchr(inst[i], '.'); /* written as an integer: no fraction, not even .0 */
        for (int k = 0; k < n_keys && want; k++) {
            assert_true(dec_parse(DEC_BOUNDS[which[k]].plain, &m));
            int c = dec_cmp(&x, &m);
            want = !strcmp(keys[k], "minimum") ? c >= 0
                 : !strcmp(keys[k], "exclusiveMinimum") ? c > 0
                 : !strcmp(keys[k], "maximum") ? c <= 0 : c < 0;
        }
        if (matches(g, inst[i]) != want)
            fail_msg("%s: instance %s should be %s", text, inst[i],
                     want ? "accepted" : "rejected");
    }
    nx_gram_destroy(&g);
}

static void test_number_decimal_bounds(void **state)
{
    (void)state;
    size_t n_bounds = sizeof DEC_BOUNDS / sizeof *DEC_BOUNDS;
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 4; k++)
            for (size_t b = 0; b < n_bounds; b++)
                check_bounds(t ? "integer" : "number", &DEC_KEYS[k], (int[]){(int)b}, 1);
    /* lower and upper together (the DFA product) */
    static const int pairs[][2] = {{5, 3}, {1, 0}, {4, 6}, {7, 15}, {22, 11}, {2, 21}};
    for (int t = 0; t < 2; t++)
        for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++)
            for (int lo = 0; lo < 2; lo++)
                for (int hi = 2; hi < 4; hi++)
                    check_bounds(t ? "integer" : "number",
                                 (const char *[]){DEC_KEYS[lo], DEC_KEYS[hi]}, pairs[p], 2);
    /* by hand: trailing zeros, -0, many digits, exponents refused under a bound */
    nx_err_t err = {0};
    nx_gram_t *g = schema("{\"type\":\"number\",\"minimum\":0.5,\"exclusiveMaximum\":99.99}",
                          &err);
    assert_non_null(g);
    assert_true(matches(g, "0.5") && matches(g, "0.50") && matches(g, "0.500000") &&
                matches(g, "99.98999999999999999999") && matches(g, "1"));
    assert_false(matches(g, "0.49999999999999999999") || matches(g, "99.99") ||
                 matches(g, "99.990") || matches(g, "-0") || matches(g, "5e1") ||
                 matches(g, "0.5.0") || matches(g, "00.5"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"integer\",\"minimum\":1.5,\"maximum\":3.5}", &err);
    assert_non_null(g);
    assert_true(matches(g, "2") && matches(g, "3"));
    assert_false(matches(g, "1") || matches(g, "4") || matches(g, "2.5") || matches(g, "3.0"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"number\",\"minimum\":0,\"maximum\":0}", &err);
    assert_non_null(g);
    assert_true(matches(g, "0") && matches(g, "-0") && matches(g, "-0.000"));
    assert_false(matches(g, "0.0000000000000000000001") || matches(g, "-0.01"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"integer\",\"exclusiveMinimum\":2.5,\"exclusiveMaximum\":3}", &err);
    assert_non_null(g); /* no integer fits: the schema admits nothing */
    assert_false(matches(g, "3") || matches(g, "2") || matches(g, "2.75"));
    nx_gram_destroy(&g);
    /* a bound whose decimal a double does not keep exactly is refused, by name */
    expect_error("{\"type\":\"number\",\"maximum\":0.12345678901234567}", NX_ENOTSUP,
                 "unsupported keyword 'maximum' at the root");
    expect_error("{\"type\":\"integer\",\"minimum\":9007199254740993}", NX_ENOTSUP,
                 "unsupported keyword 'minimum' at the root");
    expect_error("{\"type\":\"number\",\"minimum\":1e-300}", NX_ENOTSUP,
                 "unsupported keyword 'minimum' at the root");
}

/* Integers are written as integers: 5.0 is an integer in JSON Schema, but Go's encoding/json
 * and serde_json refuse it for an int field and Python reads a float, so the grammar of
 * `type: integer` (plain, bounded, decimal bounds, multipleOf, type lists, integral enum and
 * const values) admits no fraction part at all. -0 stays (it is 0, and every parser reads it
 * as the integer 0). Numbers keep their fractions. */
static void test_integer_written_without_fraction(void **state)
{
    (void)state;
    static const char *const integers[] = {
        "{\"type\":\"integer\"}",
        "{\"type\":\"integer\",\"minimum\":-10,\"maximum\":10}",
        "{\"type\":\"integer\",\"minimum\":-1.5,\"exclusiveMaximum\":7.5}",
        "{\"type\":\"integer\",\"exclusiveMinimum\":-1}",
        "{\"type\":\"integer\",\"multipleOf\":5}",
        "{\"type\":\"integer\",\"multipleOf\":0.5}",
        "{\"type\":\"integer\",\"multipleOf\":5,\"minimum\":-100,\"maximum\":100}",
        "{\"type\":[\"integer\",\"string\"]}",
        "{\"type\":[\"integer\",\"null\"],\"minimum\":0}",
        "{\"enum\":[0,5,\"x\"]}",
        "{\"enum\":[0.0,5.0]}",
        "{\"anyOf\":[{\"const\":5.0},{\"const\":-0.0}]}",
        "{\"anyOf\":[{\"const\":0},{\"type\":\"integer\",\"minimum\":5,\"maximum\":5}]}",
    };
    for (size_t i = 0; i < sizeof integers / sizeof *integers; i++) {
        nx_err_t err = {0};
        nx_gram_t *g = schema(integers[i], &err);
        if (!g)
            fail_msg("%s: %s", integers[i], err.msg);
        if (!matches(g, "5") || !matches(g, "0") || !matches(g, "-0"))
            fail_msg("%s: 5, 0 or -0 rejected", integers[i]);
        static const char *const fractions[] = {"5.0", "5.000", "0.0", "-0.0", "5.", "5e0"};
        for (size_t f = 0; f < sizeof fractions / sizeof *fractions; f++)
            if (matches(g, fractions[f]))
                fail_msg("%s: %s accepted", integers[i], fractions[f]);
        nx_gram_destroy(&g);
    }
    static const char *const numbers[] = {
        "{\"type\":\"number\"}",
        "{\"type\":\"number\",\"minimum\":-10,\"maximum\":10}",
        "{\"type\":\"number\",\"multipleOf\":5}",
        "{\"type\":[\"number\",\"string\"]}",
        "{\"type\":[\"integer\",\"number\"]}",
    };
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
        nx_err_t err = {0};
        nx_gram_t *g = schema(numbers[i], &err);
        if (!g)
            fail_msg("%s: %s", numbers[i], err.msg);
        if (!matches(g, "5") || !matches(g, "5.0") || !matches(g, "5.000") ||
            !matches(g, "-0.0"))
            fail_msg("%s: a number with a zero fraction rejected", numbers[i]);
        nx_gram_destroy(&g);
    }
    nx_err_t err = {0};
    nx_gram_t *g = schema("{\"enum\":[2.5,-1]}", &err); /* a fraction stays a fraction */
    assert_non_null(g);
    assert_true(matches(g, "2.5") && matches(g, "-1"));
    assert_false(matches(g, "-1.0") || matches(g, "2.50"));
    nx_gram_destroy(&g);    /* an integral enum value beside other keywords is checked as the "5" it is written as */
    g = schema("{\"type\":\"integer\",\"minimum\":0,\"enum\":[5.0,-1,2.5]}", &err);
    assert_non_null(g);
    assert_true(matches(g, "5"));
    assert_false(matches(g, "5.0") || matches(g, "-1") || matches(g, "2.5"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},"
               "\"enum\":[[1.0,2],[0.5]]}", &err);
    assert_non_null(g);
    assert_true(matches(g, "[1,2]"));
    assert_false(matches(g, "[1.0,2]") || matches(g, "[0.5]"));
    nx_gram_destroy(&g);
}

/* multipleOf: a residue DFA over the digits (scaled by 10^fraction digits), no exponents */
static void test_number_multiple_of(void **state)
{
    (void)state;
    nx_err_t err = {0};
    nx_gram_t *g = schema("{\"type\":\"number\",\"multipleOf\":0.01,\"minimum\":0,"
                          "\"maximum\":100}", &err);
    assert_non_null(g);
    assert_true(matches(g, "0") && matches(g, "19.99") && matches(g, "19.9") &&
                matches(g, "19.990") && matches(g, "100.00") && matches(g, "-0"));
    assert_false(matches(g, "19.999") || matches(g, "100.01") || matches(g, "-0.01") ||
                 matches(g, "1e1") || matches(g, "0.001"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"integer\",\"multipleOf\":7}", &err);
    assert_non_null(g);
    assert_true(matches(g, "0") && matches(g, "-7") && matches(g, "700000000000000000007"));
    assert_false(matches(g, "14.0") || matches(g, "8") || matches(g, "7.5") ||
                 matches(g, "70000000000000000008"));
    nx_gram_destroy(&g);
    g = schema("{\"multipleOf\":1.5}", &err); /* any type: numbers only are constrained */
    assert_non_null(g);
    assert_true(matches(g, "4.5") && matches(g, "-4.5") && matches(g, "\"foo\""));
    assert_false(matches(g, "35") || matches(g, "4.55"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"integer\",\"multipleOf\":1e-8}", &err);
    assert_non_null(g);
    assert_true(matches(g, "12391239123"));
    nx_gram_destroy(&g);
    g = schema("{\"type\":\"integer\",\"multipleOf\":5,\"exclusiveMinimum\":0,"
               "\"exclusiveMaximum\":5}", &err);
    assert_non_null(g); /* no multiple of 5 in (0, 5): admits nothing */
    assert_false(matches(g, "0") || matches(g, "5") || matches(g, "1"));
    nx_gram_destroy(&g);
    /* allOf of two multiples: their least common multiple (of decimals, exactly) */
    g = schema("{\"allOf\":[{\"multipleOf\":2},{\"multipleOf\":3}]}", &err);
    assert_non_null(g);
    assert_true(matches(g, "6") && matches(g, "-12") && matches(g, "0"));
    assert_false(matches(g, "4") || matches(g, "9") || matches(g, "3.0001"));
    nx_gram_destroy(&g);
    g = schema("{\"allOf\":[{\"multipleOf\":0.5},{\"multipleOf\":0.3}]}", &err);
    assert_non_null(g); /* 1.5 */
    assert_true(matches(g, "1.5") && matches(g, "4.5") && matches(g, "3"));
    assert_false(matches(g, "0.5") || matches(g, "0.3") || matches(g, "0.6") || matches(g, "1"));
    nx_gram_destroy(&g);
    g = schema("{\"allOf\":[{\"multipleOf\":0.25},{\"multipleOf\":0.1}]}", &err);
    assert_non_null(g); /* 0.5 */
    assert_true(matches(g, "0.5") && matches(g, "2.5") && matches(g, "-1"));
    assert_false(matches(g, "0.25") || matches(g, "0.1") || matches(g, "0.75"));
    nx_gram_destroy(&g);
    expect_error("{\"allOf\":[{\"multipleOf\":9007199254740881},{\"multipleOf\":3}]}",
                 NX_ENOTSUP, "unsupported keyword 'multipleOf'");
    expect_error("{\"type\":\"integer\",\"multipleOf\":123456789}", NX_ENOTSUP,
                 "unsupported keyword 'multipleOf' at the root");
    expect_error("{\"properties\":{\"a\":{\"multipleOf\":0}}}", NX_EINVAL,
                 "'multipleOf' at /properties/a");
    expect_error("{\"multipleOf\":\"2\"}", NX_EINVAL, "'multipleOf' at the root");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_errors_name_keyword_and_pointer),
        cmocka_unit_test(test_schema_hostile_inputs_are_refused),
        cmocka_unit_test(test_schema_bytes),
        cmocka_unit_test(test_number_decimal_bounds),
        cmocka_unit_test(test_number_multiple_of),
        cmocka_unit_test(test_integer_written_without_fraction),
        cmocka_unit_test(test_string_length_dfa),
        cmocka_unit_test(test_keyed_terminals_shared),
        cmocka_unit_test(test_gbnf_parse_and_errors),
        cmocka_unit_test(test_state_copy),
        cmocka_unit_test(test_reset_drops_grown_states),
        cmocka_unit_test(test_mask_exact_on_tiny_tokenizer),
        cmocka_unit_test(test_mask_token_ending_a_terminal_needs_a_continuation),
        cmocka_unit_test(test_classes_shared_between_matchers),
        cmocka_unit_test(test_gbnf_regular_pieces_fold),
        cmocka_unit_test(test_sampler_pick_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
