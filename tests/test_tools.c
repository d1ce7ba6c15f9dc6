/* test_tools.c — tool calls (agents/tools.h): the grammar of each tool_choice and
 * parallel_tool_calls mode walked byte by byte (canonical calls accepted; wrong names,
 * arguments outside a tool's schema and extra calls refused), compile errors naming the tool,
 * constrained random walks through the masks of the committed Qwen3 and Llama 3 tokenizers
 * that always parse into calls whose arguments satisfy their tool's schema, and the streaming
 * parser: every split of a text gives the same content, reasoning and calls.
 * Run from the repository root (as `make unit` does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "grammar.h"
#include "nx_engine.h"
#include "tools.h"

#define FIXTURES "tests/fixtures/tokenizer"
#include "tok_fixture.h"

/* get_weather is strict (no extra members); add is not (the spec's additionalProperties). */
static const char TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"strict\":true,"
    "\"description\":\"Weather in a city\",\"parameters\":{\"type\":\"object\",\"properties\":"
    "{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]}},"
    "\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
    "\"required\":[\"a\",\"b\"]}}}]";

/* For random walks: a non-strict tool with required members never ends under random picks
 * (random keys seldom spell "a"), so here the open one requires nothing. */
static const char WALK_TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"strict\":true,"
    "\"parameters\":{\"type\":\"object\",\"properties\":"
    "{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]}},"
    "\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}}}}}]";

#define WEATHER "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " \
                "{\"city\":\"Paris\",\"unit\":\"c\"}}\n</tool_call>"
#define ADD "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":-2}}\n</tool_call>"

static nx_gram_t *grammar_of(const char *tools, nx_tools_family_t family,
                             nx_tool_choice_t choice, const char *name, bool parallel,
                             nx_err_t *err)
{
    nx_tools_request_t req = {.family = family, .tools_json = tools, .tools_len = strlen(tools),
                              .choice = choice, .choice_name = name, .parallel = parallel};
    return nx_tools_grammar(&req, err);
}

static nx_gram_t *grammar(nx_tools_family_t family, nx_tool_choice_t choice, const char *name,
                          bool parallel, nx_err_t *err)
{
    return grammar_of(TOOLS, family, choice, name, parallel, err);
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

static void test_grammar_auto_parallel(void **state)
{
    nx_err_t err = {0};
    nx_gram_t *g = grammar(NX_TOOLS_HERMES, NX_TOOL_CHOICE_AUTO, NULL, true, &err);
    assert_non_null(g);
    assert_true(matches(g, WEATHER));
    assert_true(matches(g, ADD));
    assert_true(matches(g, WEATHER "\n" ADD));
    assert_true(matches(g, ADD "\n" ADD "\n" WEATHER));
    /* the non-strict tool takes other members, the strict one does not */
    assert_true(matches(g, "<tool_call>\n{\"name\": \"add\", \"arguments\": "
                           "{\"a\":1,\"b\":2,\"c\":\"x\"}}\n</tool_call>"));
    assert_false(matches(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                            "{\"city\":\"P\",\"unit\":\"c\",\"x\":1}}\n</tool_call>"));
    assert_false(matches(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                            "{\"city\":\"P\",\"unit\":\"k\"}}\n</tool_call>"));
    assert_false(matches(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                            "{\"city\":\"P\"}}\n</tool_call>")); /* unit is required */
    assert_false(matches(g, "<tool_call>\n{\"name\": \"add\", \"arguments\": "
                            "{\"a\":1.5,\"b\":2}}\n</tool_call>"));
    assert_false(matches(g, "<tool_call>\n{\"name\": \"sub\", \"arguments\": "
                            "{\"a\":1,\"b\":2}}\n</tool_call>"));
    assert_false(matches(g, "<tool_call>\n{\"arguments\": {\"a\":1,\"b\":2}, "
                            "\"name\": \"add\"}\n</tool_call>")); /* the name comes first */
    assert_false(matches(g, "Sure." ADD));  /* free text is the engine's, before the trigger */
    assert_false(matches(g, ADD "\n"));     /* nothing after the last call */
    nx_gram_destroy(&g);
}

static void test_grammar_single_named_none(void **state)
{
    nx_err_t err = {0};
    nx_gram_t *g = grammar(NX_TOOLS_HERMES, NX_TOOL_CHOICE_REQUIRED, NULL, false, &err);
    assert_non_null(g);
    assert_true(matches(g, WEATHER));
    assert_true(matches(g, ADD));
    assert_false(matches(g, WEATHER "\n" ADD)); /* parallel_tool_calls false: exactly one */
    nx_gram_destroy(&g);

    g = grammar(NX_TOOLS_HERMES, NX_TOOL_CHOICE_FUNCTION, "add", true, &err);
    assert_non_null(g);
    assert_true(matches(g, ADD));
    assert_true(matches(g, ADD "\n" ADD));
    assert_false(matches(g, WEATHER));
    assert_false(matches(g, ADD "\n" WEATHER));
    nx_gram_destroy(&g);

    g = grammar(NX_TOOLS_HERMES, NX_TOOL_CHOICE_FUNCTION, "mul", true, &err);
    assert_null(g);
    assert_int_equal(err.code, NX_EINVAL);
    assert_non_null(strstr(err.msg, "tool_choice: function 'mul' is not among the tools"));

    err = (nx_err_t){0};
    g = grammar(NX_TOOLS_HERMES, NX_TOOL_CHOICE_NONE, NULL, true, &err);
    assert_null(g);
    assert_int_equal(err.code, NX_OK);
}

static void test_grammar_llama3(void **state)
{
    nx_err_t err = {0};
    nx_gram_t *g = grammar(NX_TOOLS_LLAMA3_JSON, NX_TOOL_CHOICE_AUTO, NULL, true, &err);
    assert_non_null(g);
    const char *call = "{\"name\": \"add\", \"parameters\": {\"a\":1,\"b\":2}}";
    assert_true(matches(g, call));
    assert_false(matches(g, "{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":2}}"));
    char two[256];
    snprintf(two, sizeof two, "%s\n%s", call, call);
    assert_false(matches(g, two)); /* one call per turn, as the template says */
    nx_gram_destroy(&g);
    /* no single token starts a call: the trigger is a string, which the grammar starts with */
    nx_tools_request_t req = {.family = NX_TOOLS_LLAMA3_JSON, .tools_json = TOOLS,
                              .tools_len = strlen(TOOLS), .parallel = true};
    nx_tools_plan_t *p = nx_tools_plan_new(&req, NULL, &err);
    assert_non_null(p);
    assert_true(p->lazy);
    assert_true(p->trigger_at_start);
    assert_int_equal(p->n_trigger_ids, 0);
    assert_int_equal(p->n_trigger_strings, 1);
    assert_string_equal(p->trigger_strings[0], "{\"name\"");
    assert_null(p->think_open);
    nx_gram_matcher_t *m = nx_gram_matcher_new(p->gram, NULL, NULL);
    assert_int_equal(nx_gram_matcher_advance(m, "{\"name\"", 7, NULL), NX_OK);
    nx_gram_matcher_destroy(&m);
    nx_tools_plan_destroy(&p);
}

static void expect_error(const char *tools, int code, const char *want)
{
    nx_err_t err = {0};
    nx_tools_request_t req = {.family = NX_TOOLS_HERMES, .tools_json = tools,
                              .tools_len = strlen(tools), .parallel = true};
    nx_gram_t *g = nx_tools_grammar(&req, &err);
    assert_null(g);
    assert_int_equal(err.code, code);
    if (!strstr(err.msg, want))
        fail_msg("error '%s' does not say '%s'", err.msg, want);
}

static void test_errors_name_the_tool(void **state)
{
    expect_error("[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},"
                 "{\"type\":\"function\",\"function\":{\"name\":\"b\",\"parameters\":"
                 "{\"type\":\"object\",\"properties\":{\"q\":{\"patternProperties\":{}}}}}}]",
                 NX_ENOTSUP, "tools[1].function.parameters: unsupported keyword "
                             "'patternProperties' at /properties/q");
    expect_error("[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]", NX_EINVAL,
                 "tools[0].function.name");
    expect_error("[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},"
                 "{\"type\":\"function\",\"function\":{\"name\":\"a\"}}]", NX_EINVAL,
                 "tools[1].function.name: 'a' is also tools[0]'s");
    expect_error("[{\"type\":\"retrieval\"}]", NX_EINVAL, "tools[0].type");
    expect_error("{}", NX_EINVAL, "tools: not an array");
    expect_error("[", NX_EINVAL, "tools: not JSON");
}

static void test_choice_parse(void **state)
{
    nx_tool_choice_t c;
    char *name;
    nx_err_t err = {0};
    assert_int_equal(nx_tools_choice_parse(NULL, 0, &c, &name, &err), NX_OK);
    assert_int_equal(c, NX_TOOL_CHOICE_AUTO);
    assert_int_equal(nx_tools_choice_parse("\"required\"", 10, &c, &name, &err), NX_OK);
    assert_int_equal(c, NX_TOOL_CHOICE_REQUIRED);
    assert_int_equal(nx_tools_choice_parse("\"none\"", 6, &c, &name, &err), NX_OK);
    assert_int_equal(c, NX_TOOL_CHOICE_NONE);
    const char *fn = "{\"type\":\"function\",\"function\":{\"name\":\"add\"}}";
    assert_int_equal(nx_tools_choice_parse(fn, strlen(fn), &c, &name, &err), NX_OK);
    assert_int_equal(c, NX_TOOL_CHOICE_FUNCTION);
    assert_string_equal(name, "add");
    free(name);
    assert_int_equal(nx_tools_choice_parse("\"any\"", 5, &c, &name, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "tool_choice"));
}

/* --- the Qwen3 tokenizer ------------------------------------------------------------------- */

/* The committed real tokenizers (gzipped), unpacked for the group. */
typedef struct qwen3 {
    char dir[64];
    nx_tokenizer_t *tok;   /* Qwen3, 151,669 ids */
    nx_tokenizer_t *llama; /* Llama 3, 128,256 ids */
} qwen3_t;

static int qwen3_setup(void **state)
{
    qwen3_t *q = calloc(1, sizeof *q);
    snprintf(q->dir, sizeof q->dir, "/tmp/nx-tools-XXXXXX");
    if (!mkdtemp(q->dir))
        return -1;
    q->tok = unpack(q->dir, "qwen3");
    q->llama = unpack(q->dir, "llama3");
    *state = q;
    return q->tok && q->llama ? 0 : -1;
}

static int qwen3_teardown(void **state)
{
    qwen3_t *q = *state;
    nx_tokenizer_destroy(&q->tok);
    nx_tokenizer_destroy(&q->llama);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", q->dir);
    if (system(cmd) != 0)
        return -1;
    free(q);
    return 0;
}

static void test_plan_ids(void **state)
{
    qwen3_t *q = *state;
    assert_int_equal(nx_tools_family_detect(q->tok), NX_TOOLS_HERMES);
    int32_t trigger = nx_tokenizer_token_id(q->tok, "<tool_call>");
    assert_int_equal(trigger, 151657);
    nx_err_t err = {0};
    nx_tools_request_t req = {.family = NX_TOOLS_HERMES, .tools_json = TOOLS,
                              .tools_len = strlen(TOOLS), .parallel = true};
    nx_tools_plan_t *p = nx_tools_plan_new(&req, q->tok, &err);
    assert_non_null(p);
    assert_true(p->lazy);
    assert_int_equal(p->n_trigger_ids, 1);
    assert_int_equal(p->trigger_ids[0], trigger);
    assert_int_equal(p->n_trigger_strings, 0);
    assert_int_equal(p->n_banned_ids, 0);
    assert_string_equal(p->think_close, "</think>");
    assert_int_equal(p->think_close_id, 151668);
    nx_tools_plan_destroy(&p);
    nx_tools_plan_destroy(&p);

    req.choice = NX_TOOL_CHOICE_NONE;
    p = nx_tools_plan_new(&req, q->tok, &err);
    assert_non_null(p);
    assert_null(p->gram);
    assert_false(p->lazy);
    assert_int_equal(p->n_banned_ids, 1);
    assert_int_equal(p->banned_ids[0], trigger);
    assert_null(p->think_open); /* no grammar: nothing for the engine to start after */
    nx_tools_plan_destroy(&p);

    req.choice = NX_TOOL_CHOICE_REQUIRED;
    p = nx_tools_plan_new(&req, NULL, &err); /* no tokenizer: no ids */
    assert_non_null(p);
    assert_non_null(p->gram);
    assert_false(p->lazy);
    assert_int_equal(p->n_trigger_ids + p->n_trigger_strings, 0);
    nx_tools_plan_destroy(&p);
}

/* The arguments satisfy the tool's schema: its own grammar (same strictness) accepts them. */
static bool args_valid(const char *name, const char *args)
{
    json_t *tools = json_loads(WALK_TOOLS, 0, NULL);
    size_t i;
    json_t *t;
    bool ok = false;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        if (strcmp(json_string_value(json_object_get(fn, "name")), name) != 0)
            continue;
        char *schema = json_dumps(json_object_get(fn, "parameters"), 0);
        nx_gram_schema_opts_t o = {.strict = json_is_true(json_object_get(fn, "strict"))};
        nx_gram_t *g = nx_gram_from_json_schema(schema, strlen(schema), &o, NULL);
        ok = g && matches(g, args);
        json_t *v = json_loads(args, 0, NULL);
        ok = ok && json_is_object(v);
        json_decref(v);
        nx_gram_destroy(&g);
        free(schema);
    }
    json_decref(tools);
    return ok;
}

/* Random walks through the masks, as a model with random weights would pick: a closing token
 * ('"', '}') a third of the time where one is allowed, the end id a quarter of the time. */
static void walks(const nx_tokenizer_t *tok, nx_tools_family_t family, nx_tool_choice_t choice,
                  const char *name, bool parallel, int n_walks, unsigned seed)
{
    nx_err_t err = {0};
    nx_gram_t *g = grammar_of(WALK_TOOLS, family, choice, name, parallel, &err);
    assert_non_null(g);
    int32_t eos = nx_tokenizer_token_id(tok, family == NX_TOOLS_HERMES ? "<|im_end|>"
                                                                        : "<|eot_id|>");
    assert_true(eos >= 0);
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    assert_non_null(v);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, &err);
    assert_non_null(m);
    uint32_t size = nx_gram_vocab_size(v);
    uint32_t *mask = calloc(nx_gram_mask_words(v), sizeof *mask);
    int32_t *all = malloc(size * sizeof *all), *closing = malloc(size * sizeof *closing);
    int ended = 0;
    for (int w = 0; w < n_walks; w++) {
        nx_gram_matcher_reset(m);
        char text[65536];
        size_t len = 0;
        bool done = false;
        for (int step = 0; step < 1500 && !done; step++) {
            assert_int_equal(nx_gram_matcher_mask(m, mask, &err), NX_OK);
            uint32_t n_all = 0, n_closing = 0;
            bool eos_ok = false;
            for (uint32_t id = 0; id < size; id++) {
                if (!(mask[id >> 5] >> (id & 31) & 1))
                    continue;
                if ((int32_t)id == eos) {
                    eos_ok = true;
                    continue;
                }
                size_t tl;
                const char *tb = nx_tokenizer_token_bytes(tok, (int32_t)id, &tl);
                all[n_all++] = (int32_t)id;
                if (tl == 1 && (tb[0] == '"' || tb[0] == '}' || tb[0] == ']'))
                    closing[n_closing++] = (int32_t)id;
            }
            int32_t pick;
            if (eos_ok && (n_all == 0 || rand_r(&seed) % 2 == 0))
                pick = eos;
            else if (n_closing && rand_r(&seed) % 2 == 0)
                pick = closing[rand_r(&seed) % n_closing];
            else {
                assert_true(n_all > 0); /* a live grammar always allows something */
                pick = all[rand_r(&seed) % n_all];
            }
            assert_int_equal(nx_gram_matcher_accept_token(m, pick, &err), NX_OK);
            if (pick == eos) {
                done = true;
                break;
            }
            size_t tl;
            const char *tb = nx_tokenizer_token_bytes(tok, pick, &tl);
            assert_true(len + tl < sizeof text);
            memcpy(text + len, tb, tl);
            len += tl;
        }
        if (!done) {
            if (getenv("NX_TOOLS_DEBUG"))
                fprintf(stderr, "cut: %zu bytes, tail %.*s\n", len, 300, text + (len > 300 ? len - 300 : 0));
            continue;
        } /* cut by the step limit: a truncated answer, not checked here */
        ended++;
        nx_tools_parser_opts_t po = {.family = family, .seed = 1};
        nx_tools_parser_t *p = nx_tools_parse(&po, text, len, &err);
        assert_non_null(p);
        size_t n_calls, content_len;
        const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n_calls);
        nx_tools_parser_content(p, &content_len);
        assert_int_equal(content_len, 0);
        assert_true(n_calls >= 1);
        if (!parallel || family == NX_TOOLS_LLAMA3_JSON)
            assert_int_equal(n_calls, 1);
        for (size_t i = 0; i < n_calls; i++) {
            assert_true(calls[i].complete);
            if (name)
                assert_string_equal(calls[i].name, name);
            if (!args_valid(calls[i].name, calls[i].arguments))
                fail_msg("walk %d call %zu: %s %s invalid in\n%.*s", w, i, calls[i].name,
                         calls[i].arguments, (int)len, text);
        }
        nx_tools_parser_destroy(&p);
    }
    print_message("%s: %d of %d walks ended (choice %d, parallel %d)\n",
                  nx_tools_family_name(family), ended, n_walks, (int)choice, (int)parallel);
    assert_true(ended >= n_walks / 2);
    free(mask);
    free(all);
    free(closing);
    nx_gram_matcher_destroy(&m);
    nx_gram_vocab_destroy(&v);
    nx_gram_destroy(&g);
}

static void test_walks_parse_into_valid_calls(void **state)
{
    qwen3_t *q = *state;
    walks(q->tok, NX_TOOLS_HERMES, NX_TOOL_CHOICE_REQUIRED, NULL, true, 30, 1);
    walks(q->tok, NX_TOOLS_HERMES, NX_TOOL_CHOICE_REQUIRED, NULL, false, 20, 2);
    walks(q->tok, NX_TOOLS_HERMES, NX_TOOL_CHOICE_FUNCTION, "get_weather", true, 20, 3);
    walks(q->llama, NX_TOOLS_LLAMA3_JSON, NX_TOOL_CHOICE_REQUIRED, NULL, true, 20, 4);
}

/* --- the parser ---------------------------------------------------------------------------- */

typedef struct seen {
    json_t *log; /* ["C"|"R"|"K name id"|"A<i>", ...] with texts merged per run */
    char content[4096], reasoning[4096], args[4][1024];
} seen_t;

static void record(seen_t *s, const nx_tools_event_t *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char tag[128];
        char *dst = NULL;
        switch (ev[i].kind) {
        case NX_TOOLS_EV_CONTENT:
            snprintf(tag, sizeof tag, "C");
            dst = s->content;
            break;
        case NX_TOOLS_EV_REASONING:
            snprintf(tag, sizeof tag, "R");
            dst = s->reasoning;
            break;
        case NX_TOOLS_EV_CALL:
            snprintf(tag, sizeof tag, "K%u %.*s %s", ev[i].index, (int)ev[i].len, ev[i].text,
                     ev[i].id);
            break;
        case NX_TOOLS_EV_ARGS:
            snprintf(tag, sizeof tag, "A%u", ev[i].index);
            assert_true(ev[i].index < 4);
            dst = s->args[ev[i].index];
            break;
        }
        if (dst)
            strncat(dst, ev[i].text, ev[i].len);
        size_t n_log = json_array_size(s->log);
        const char *last = n_log ? json_string_value(json_array_get(s->log, n_log - 1)) : "";
        if (strcmp(last, tag) != 0 || tag[0] == 'K')
            json_array_append_new(s->log, json_string(tag));
    }
}

/* Feed text in the pieces cut at the given points; finish; compare to the one-shot results. */
static void feed_split(const nx_tools_parser_opts_t *o, const char *text, const size_t *cuts,
                       size_t n_cuts, seen_t *s)
{
    nx_err_t err = {0};
    nx_tools_parser_t *p = nx_tools_parser_new(o, &err);
    assert_non_null(p);
    const nx_tools_event_t *ev;
    size_t n, at = 0, len = strlen(text);
    for (size_t c = 0; c <= n_cuts; c++) {
        size_t end = c < n_cuts ? cuts[c] : len;
        assert_int_equal(nx_tools_parser_feed(p, text + at, end - at, &ev, &n, &err), NX_OK);
        record(s, ev, n);
        at = end;
    }
    assert_int_equal(nx_tools_parser_finish(p, &ev, &n, &err), NX_OK);
    record(s, ev, n);
    /* the streamed pieces add up to the final results */
    size_t n_calls, len_c;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n_calls);
    assert_string_equal(nx_tools_parser_content(p, &len_c), s->content);
    assert_string_equal(nx_tools_parser_reasoning(p, NULL), s->reasoning);
    for (size_t i = 0; i < n_calls; i++)
        assert_string_equal(calls[i].arguments, s->args[i]);
    nx_tools_parser_destroy(&p);
}

static void every_split(nx_tools_family_t family, bool thinking, const char *text,
                        const char *content, const char *reasoning, const char *calls_json)
{
    nx_tools_parser_opts_t o = {.family = family, .thinking = thinking, .seed = 42};
    seen_t whole = {.log = json_array()};
    feed_split(&o, text, NULL, 0, &whole);
    assert_string_equal(whole.content, content);
    assert_string_equal(whole.reasoning, reasoning);
    /* the calls as [[name, arguments], ...] */
    nx_tools_parser_t *p = nx_tools_parse(&o, text, strlen(text), NULL);
    size_t n_calls;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n_calls);
    json_t *got = json_array();
    for (size_t i = 0; i < n_calls; i++) {
        assert_memory_equal(calls[i].id, "call_", 5);
        assert_int_equal(strlen(calls[i].id), 29);
        json_array_append_new(got, json_pack("[ss]", calls[i].name, calls[i].arguments));
    }
    char *got_text = json_dumps(got, JSON_COMPACT);
    assert_string_equal(got_text, calls_json);
    free(got_text);
    json_decref(got);
    nx_tools_parser_destroy(&p);
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) { /* every split point */
        seen_t s = {.log = json_array()};
        feed_split(&o, text, &cut, 1, &s);
        assert_true(json_equal(s.log, whole.log));
        assert_string_equal(s.content, whole.content);
        assert_string_equal(s.reasoning, whole.reasoning);
        for (int i = 0; i < 4; i++)
            assert_string_equal(s.args[i], whole.args[i]);
        json_decref(s.log);
    }
    size_t *bytes = malloc(len * sizeof *bytes); /* and byte by byte */
    for (size_t i = 0; i < len; i++)
        bytes[i] = i;
    seen_t s = {.log = json_array()};
    feed_split(&o, text, bytes, len, &s);
    assert_true(json_equal(s.log, whole.log));
    json_decref(s.log);
    free(bytes);
    json_decref(whole.log);
}

static void test_parser_every_split(void **state)
{
    every_split(NX_TOOLS_HERMES, false, "Let me check.\n" WEATHER "\n" ADD "\n",
                "Let me check.\n",  "",
                "[[\"get_weather\",\"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"],"
                "[\"add\",\"{\\\"a\\\":1,\\\"b\\\":-2}\"]]");
    every_split(NX_TOOLS_HERMES, true, "<think>\nweather, so call it\n</think>\n\n" WEATHER,
                "", "\nweather, so call it\n",
                "[[\"get_weather\",\"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"]]");
    every_split(NX_TOOLS_HERMES, true, "<think>\nno tool\n</think>\n\nIt is <b>sunny</b>.",
                "It is <b>sunny</b>.", "\nno tool\n", "[]");
    /* arguments first, other members, spaces, a scalar and a string as arguments */
    every_split(NX_TOOLS_HERMES, false,
                "<tool_call>\n{ \"arguments\" : {\"a\": [1, {\"b\": \"}\\\"\"}]}, \"id\": 7,"
                " \"name\" : \"add\" }\n</tool_call>"
                "<tool_call>{\"name\":\"add\",\"arguments\":\"{\\\"a\\\":1}\"}</tool_call>",
                "", "",
                "[[\"add\",\"{\\\"a\\\": [1, {\\\"b\\\": \\\"}\\\\\\\"\\\"}]}\"],"
                "[\"add\",\"{\\\"a\\\":1}\"]]");
    /* the tag in prose is content; a cut call keeps what came */
    every_split(NX_TOOLS_HERMES, false, "Write <tool_call> tags, or <tool", 
                "Write <tool_call> tags, or <tool", "", "[]");
    every_split(NX_TOOLS_HERMES, false, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\"",
                "", "", "[[\"add\",\"{\\\"a\\\"\"]]");
    every_split(NX_TOOLS_LLAMA3_JSON, false,
                "  {\"name\": \"add\", \"parameters\": {\"a\":1,\"b\":2}}", "", "",
                "[[\"add\",\"{\\\"a\\\":1,\\\"b\\\":2}\"]]");
    every_split(NX_TOOLS_LLAMA3_JSON, false, "{\"answer\": 42} and {\"name\": 1}",
                "{\"answer\": 42} and {\"name\": 1}", "", "[]");
    /* a call is the whole answer (trigger_at_start, as the engine's lazy start): after
     * text, the same JSON is content */
    every_split(NX_TOOLS_LLAMA3_JSON, false,
                "Sure: {\"name\": \"add\", \"parameters\": {\"a\":1}}",
                "Sure: {\"name\": \"add\", \"parameters\": {\"a\":1}}", "", "[]");
}

/* A prompt that opened the thinking block: the output starts inside it; one block only. */
static void test_parser_in_thinking(void **state)
{
    nx_tools_parser_opts_t o = {.family = NX_TOOLS_HERMES, .in_thinking = true, .seed = 5};
    const char *text = "plan</think>\n\n<think>not again</think>" ADD;
    nx_tools_parser_t *p = nx_tools_parse(&o, text, strlen(text), NULL);
    assert_non_null(p);
    assert_string_equal(nx_tools_parser_reasoning(p, NULL), "plan");
    assert_string_equal(nx_tools_parser_content(p, NULL), "<think>not again</think>");
    size_t n;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n);
    assert_int_equal(n, 1);
    assert_string_equal(calls[0].name, "add");
    nx_tools_parser_destroy(&p);
    nx_err_t err = {0};
    o.family = NX_TOOLS_NONE;
    assert_null(nx_tools_parser_new(&o, &err));
    assert_int_equal(err.code, NX_EINVAL);
}

/* Many calls in one piece: each CALL event's id stays valid (the calls' storage grows while
 * the events are built), and an empty name is an empty string. */
static void test_parser_many_calls_one_feed(void **state)
{
    nx_tools_parser_opts_t o = {.family = NX_TOOLS_HERMES, .seed = 11};
    char text[4096] = "";
    for (int i = 0; i < 9; i++)
        strcat(text, ADD "\n");
    strcat(text, "<tool_call>\n{\"name\": \"\", \"arguments\": {}}\n</tool_call>");
    nx_err_t err = {0};
    nx_tools_parser_t *p = nx_tools_parser_new(&o, &err);
    const nx_tools_event_t *ev;
    size_t n, n_calls;
    assert_int_equal(nx_tools_parser_feed(p, text, strlen(text), &ev, &n, &err), NX_OK);
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n_calls);
    assert_int_equal(n_calls, 10);
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].kind != NX_TOOLS_EV_CALL)
            continue;
        assert_string_equal(ev[i].id, calls[ev[i].index].id);
        for (size_t j = 0; j < ev[i].index; j++)
            assert_string_not_equal(calls[j].id, ev[i].id);
        seen++;
    }
    assert_int_equal(seen, 10);
    assert_string_equal(calls[9].name, "");
    assert_string_equal(calls[9].arguments, "{}");
    nx_tools_parser_destroy(&p);
}

static void test_parser_incomplete_flag(void **state)
{
    nx_tools_parser_opts_t o = {.family = NX_TOOLS_HERMES, .seed = 7};
    const char *text = ADD "\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":";
    nx_tools_parser_t *p = nx_tools_parse(&o, text, strlen(text), NULL);
    assert_non_null(p);
    size_t n;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n);
    assert_int_equal(n, 2);
    assert_true(calls[0].complete);
    assert_false(calls[1].complete);
    assert_string_not_equal(calls[0].id, calls[1].id);
    nx_tools_parser_destroy(&p);
    nx_tools_parser_destroy(&p);
}

/* The OpenAI shapes: the calls array, and stream deltas whose arguments add up to it. */
static void test_openai_json(void **state)
{
    nx_tools_parser_opts_t o = {.family = NX_TOOLS_HERMES, .seed = 9};
    nx_err_t err = {0};
    nx_tools_parser_t *p = nx_tools_parser_new(&o, &err);
    const char *pieces[] = {"<tool_call>\n{\"name\": \"add\", \"argu", "ments\": {\"a\"",
                            ":1,\"b\":2}}\n</tool_call>"};
    json_t *deltas = json_array();
    const nx_tools_event_t *ev;
    size_t n;
    for (int k = 0; k < 4; k++) {
        if (k < 3)
            assert_int_equal(nx_tools_parser_feed(p, pieces[k], strlen(pieces[k]), &ev, &n,
                                                  &err), NX_OK);
        else
            assert_int_equal(nx_tools_parser_finish(p, &ev, &n, &err), NX_OK);
        for (size_t i = 0; i < n; i++) {
            char *d = nx_tools_event_delta_json(&ev[i]);
            if (d)
                json_array_append_new(deltas, json_loads(d, 0, NULL));
            free(d);
        }
    }
    size_t n_calls;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n_calls);
    char want[512];
    snprintf(want, sizeof want, "[{\"index\":0,\"id\":\"%s\",\"type\":\"function\",\"function\":"
             "{\"name\":\"add\",\"arguments\":\"\"}},{\"index\":0,\"function\":{\"arguments\":"
             "\"{\\\"a\\\"\"}},{\"index\":0,\"function\":{\"arguments\":\":1,\\\"b\\\":2}\"}}]",
             calls[0].id);
    char *got = json_dumps(deltas, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(got, want);
    free(got);
    json_decref(deltas);
    char *arr = nx_tools_calls_json(p, false);
    snprintf(want, sizeof want, "[{\"id\":\"%s\",\"type\":\"function\",\"function\":"
             "{\"name\":\"add\",\"arguments\":\"{\\\"a\\\":1,\\\"b\\\":2}\"}}]", calls[0].id);
    assert_string_equal(arr, want);
    free(arr);
    nx_tools_parser_destroy(&p);
}

/* --- prompts ------------------------------------------------------------------------------- */

static char *render(nx_chat_kind_t kind, const char *tools, const nx_chat_msg_t *msgs,
                    size_t count, nx_err_t *err)
{
    nx_chat_opts_t o = {.kind = kind, .thinking = -1, .add_generation_prompt = true,
                        .tools_json = tools};
    char *text = NULL;
    return nx_chat_render(NULL, &o, msgs, count, &text, err) == NX_OK ? text : NULL;
}

/* What the grammar makes and the parser reads is what the template writes for a call, so a
 * parsed call goes back into the next prompt as the model wrote it. */
static void test_call_round_trip(void **state)
{
    nx_tools_parser_opts_t po = {.family = NX_TOOLS_HERMES, .seed = 3};
    const char *answer = WEATHER "\n" ADD;
    nx_tools_parser_t *p = nx_tools_parse(&po, answer, strlen(answer), NULL);
    size_t n;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n);
    assert_int_equal(n, 2);
    nx_chat_tool_call_t tc[2] = {{calls[0].id, calls[0].name, calls[0].arguments},
                                 {calls[1].id, calls[1].name, calls[1].arguments}};
    nx_chat_msg_t msgs[] = {{.role = "user", .content = "q"},
                            {.role = "assistant", .content = NULL, .tool_calls = tc,
                             .n_tool_calls = 2},
                            {.role = "tool", .content = "r1", .tool_call_id = calls[0].id},
                            {.role = "tool", .content = "r2", .tool_call_id = calls[1].id}};
    nx_err_t err = {0};
    char *text = render(NX_CHAT_CHATML, NULL, msgs, 4, &err);
    assert_non_null(text);
    assert_string_equal(text, "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n" WEATHER
                              "\n" ADD "<|im_end|>\n<|im_start|>user\n<tool_response>\nr1\n"
                              "</tool_response>\n<tool_response>\nr2\n</tool_response>"
                              "<|im_end|>\n<|im_start|>assistant\n");
    free(text);
    nx_tools_parser_destroy(&p);
}

/* Llama 3.1's custom-tool prompt (its template's format; see agents/chat.c). */
static void test_llama31_prompt(void **state)
{
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"add\","
                        "\"parameters\":{\"type\":\"object\"}}}]";
    nx_chat_tool_call_t tc = {"call_1", "add", "{\"a\":1,\"b\":2.50}"};
    nx_chat_msg_t msgs[] = {{.role = "system", .content = " Be brief. "},
                            {.role = "user", .content = "1+2?\n"},
                            {.role = "assistant", .content = NULL, .tool_calls = &tc,
                             .n_tool_calls = 1},
                            {.role = "tool", .content = "3.5"}};
    nx_err_t err = {0};
    char *text = render(NX_CHAT_LLAMA3, tools, msgs, 4, &err);
    assert_non_null(text);
    assert_string_equal(text,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief."
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, "
        "please respond with a JSON for a function call with its proper arguments that best "
        "answers the given prompt.\n\nRespond in the format {\"name\": function name, "
        "\"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n"
        "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"add\",\n"
        "        \"parameters\": {\n            \"type\": \"object\"\n        }\n    }\n}"
        "\n\n1+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": "
        "\"add\", \"parameters\": {\"a\": 1, \"b\": 2.5}}<|eot_id|><|start_header_id|>"
        "ipython<|end_header_id|>\n\n\"3.5\"<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\n");
    free(text);
    nx_chat_tool_call_t two[2] = {tc, tc};
    msgs[2].tool_calls = two, msgs[2].n_tool_calls = 2;
    assert_null(render(NX_CHAT_LLAMA3, tools, msgs, 4, &err));
    assert_non_null(strstr(err.msg, "one tool call per turn"));
    assert_null(render(NX_CHAT_LLAMA3, tools, msgs, 1, &err));
    assert_non_null(strstr(err.msg, "first user message"));
    assert_null(render(NX_CHAT_CHATML, "{\"a\":1}", msgs, 1, &err));
    assert_non_null(strstr(err.msg, "tools: not a JSON array"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grammar_auto_parallel),
        cmocka_unit_test(test_grammar_single_named_none),
        cmocka_unit_test(test_grammar_llama3),
        cmocka_unit_test(test_errors_name_the_tool),
        cmocka_unit_test(test_choice_parse),
        cmocka_unit_test(test_parser_every_split),
        cmocka_unit_test(test_parser_incomplete_flag),
        cmocka_unit_test(test_parser_in_thinking),
        cmocka_unit_test(test_parser_many_calls_one_feed),
        cmocka_unit_test(test_openai_json),
        cmocka_unit_test(test_call_round_trip),
        cmocka_unit_test(test_llama31_prompt),
    };
    const struct CMUnitTest qwen3_tests[] = {
        cmocka_unit_test(test_plan_ids),
        cmocka_unit_test(test_walks_parse_into_valid_calls),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests(qwen3_tests, qwen3_setup, qwen3_teardown);
}
