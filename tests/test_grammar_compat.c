/* test_grammar_compat.c — nx_gram_schema_compat, the check behind typed pipelines: a stage's
 * output_schema must admit only instances the next stage's input_schema accepts. Compatible
 * pairs (identical, narrower types, tighter bounds, stricter patterns, $ref recursion, anyOf
 * on either side, draft-07 against 2020-12) must pass; incompatible pairs must fail with a
 * message naming both JSON pointers and why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grammar.h"

static int compat(const char *out, const char *in, bool strict, nx_err_t *err)
{
    nx_gram_schema_opts_t opts = {.draft = NX_GRAM_DRAFT_AUTO, .strict = strict};
    return nx_gram_schema_compat(out, out ? strlen(out) : 0, in, in ? strlen(in) : 0, &opts,
                                 err);
}

/* Soundness on samples: random instances of the output's grammar (byte-level walks, up to 40
 * of them); returns how many the input's grammar refuses, and *finished how many ended. -1
 * where either side does not compile (a keyword the compiler refuses). */
static int samples_refused(const char *out, const char *in, bool strict, int *finished)
{
    int refused = -1;
    *finished = 0;
    nx_gram_schema_opts_t oo = {.strict = strict};
    nx_gram_t *go = nx_gram_from_json_schema(out, strlen(out), &oo, NULL);
    nx_gram_t *gi = nx_gram_from_json_schema(in, strlen(in), NULL, NULL);
    if (go && gi) {
        refused = 0;
        nx_gram_matcher_t *mo = nx_gram_matcher_new(go, NULL, NULL);
        nx_gram_matcher_t *mi = nx_gram_matcher_new(gi, NULL, NULL);
        assert_non_null(mo);
        assert_non_null(mi);
        srand(7);
        char text[256];
        for (int walk = 0; walk < 40; walk++) {
            nx_gram_matcher_reset(mo);
            size_t n = 0;
            bool done = false;
            while (n + 1 < sizeof text && !done) {
                uint8_t allowed[256];
                int count = 0;
                nx_gram_state_t s = nx_gram_matcher_state(mo);
                for (int b = 0; b < 256; b++) {
                    uint8_t byte = (uint8_t)b;
                    if (nx_gram_matcher_advance(mo, &byte, 1, NULL) == NX_OK)
                        allowed[count++] = byte;
                    nx_gram_matcher_set_state(mo, s);
                }
                if (nx_gram_matcher_accepting(mo) && (count == 0 || rand() % 8 == 0))
                    done = true;
                else if (count == 0)
                    break;
                else {
                    text[n] = (char)allowed[rand() % count];
                    assert_int_equal(nx_gram_matcher_advance(mo, &text[n], 1, NULL), NX_OK);
                    n++;
                }
            }
            if (!done)
                continue; /* cut by the length cap */
            text[n] = '\0';
            ++*finished;
            nx_gram_matcher_reset(mi);
            if (nx_gram_matcher_advance(mi, text, n, NULL) != NX_OK ||
                !nx_gram_matcher_accepting(mi)) {
                refused++;
                print_message("output instance %s refused by the input\n", text);
            }
        }
        nx_gram_matcher_destroy(&mo);
        nx_gram_matcher_destroy(&mi);
    }
    nx_gram_destroy(&go);
    nx_gram_destroy(&gi);
    return refused;
}

static void samples_fit(const char *out, const char *in, bool strict)
{
    int finished;
    if (samples_refused(out, in, strict, &finished) > 0)
        fail_msg("compatible, yet an output instance is refused by the input\n  out %s\n  in  %s",
                 out, in);
}

static void ok(const char *out, const char *in)
{
    nx_err_t err = {0};
    int rc = compat(out, in, false, &err);
    if (rc != NX_OK)
        fail_msg("expected compatible:\n  out %s\n  in  %s\n  got %d: %s", out, in, rc,
                 err.msg);
    samples_fit(out, in, false);
}

static void ok_strict(const char *out, const char *in)
{
    nx_err_t err = {0};
    int rc = compat(out, in, true, &err);
    if (rc != NX_OK)
        fail_msg("expected compatible (strict):\n  out %s\n  in  %s\n  got %d: %s", out, in,
                 rc, err.msg);
    samples_fit(out, in, true);
}

static void bad(const char *out, const char *in, const char *msg)
{
    nx_err_t err = {0};
    int rc = compat(out, in, false, &err);
    if (rc != NX_EINVAL)
        fail_msg("expected incompatible ('%s'):\n  out %s\n  in  %s\n  got %d", msg,
                 out ? out : "(free text)", in, rc);
    if (!strstr(err.msg, msg))
        fail_msg("message '%s' lacks '%s'", err.msg, msg);
}

/* The sampling oracle above can tell: an incompatible pair shows a refused instance. */
static void test_sampling_oracle_can_fail(void **state)
{
    (void)state;
    int finished;
    assert_true(samples_refused("{\"type\":\"array\",\"items\":{\"type\":\"number\"}}",
                                "{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}",
                                false, &finished) > 0);
    assert_true(finished >= 20);
}

static void test_types(void **state)
{
    (void)state;
    ok("{\"type\":\"integer\"}", "{\"type\":\"integer\"}");
    ok("{\"type\":\"integer\"}", "{\"type\":\"number\"}");
    ok("{\"type\":\"string\"}", "{\"type\":[\"string\",\"null\"]}");
    ok("{\"type\":\"string\"}", "true");
    ok("{\"type\":\"string\"}", "{}");
    ok("{\"type\":\"string\"}", "{\"title\":\"anything\",\"description\":\"x\"}");
    ok("false", "{\"type\":\"string\"}");
    ok("{\"type\":[\"integer\",\"boolean\"]}", "{\"type\":[\"number\",\"boolean\",\"null\"]}");
    bad("{\"type\":\"number\"}", "{\"type\":\"integer\"}",
        "output (root) is a number; input (root) wants an integer");
    bad("{\"type\":\"object\",\"properties\":{\"score\":{\"type\":\"string\"}}}",
        "{\"type\":\"object\",\"properties\":{\"score\":{\"type\":\"integer\"}}}",
        "output /properties/score is a string; input /properties/score wants an integer");
    bad("{\"type\":[\"string\",\"null\"]}", "{\"type\":\"string\"}",
        "output (root) may be a null; input (root) wants a string");
    bad("true", "{\"type\":\"object\"}", "output (root) may be any JSON value");
    bad("{\"type\":\"string\"}", "false", "input (root) admits no value");
    bad(NULL, "{\"type\":\"object\"}", "output is free text");
}

static void test_objects(void **state)
{
    (void)state;
    const char *in = "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},"
                     "\"name\":{\"type\":\"string\"}},\"required\":[\"id\"]}";
    ok("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\",\"minimum\":0},"
       "\"name\":{\"type\":\"string\",\"maxLength\":10},\"extra\":{\"type\":\"boolean\"}},"
       "\"required\":[\"id\",\"name\"]}", in);
    bad("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}}}", in,
        "output (root) may omit 'id', which input (root) requires");
    /* an additional property the output may write must fit the input's declared one */
    bad("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},"
        "\"required\":[\"id\"]}", in,
        "output /additionalProperties may be any JSON value");
    ok_strict("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},"
              "\"required\":[\"id\"]}", in);
    ok("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},"
       "\"required\":[\"id\"],\"additionalProperties\":false}", in);
    /* the input forbids keys the output may write */
    bad("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}",
        "{\"type\":\"object\",\"properties\":{\"b\":{}},\"additionalProperties\":false}",
        "input /additionalProperties admits no value");
    ok("{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"null\"}},"
       "\"additionalProperties\":false}",
       "{\"type\":\"object\",\"properties\":{\"b\":{}},\"additionalProperties\":false}");
    /* nested pointers */
    bad("{\"type\":\"object\",\"properties\":{\"u\":{\"type\":\"object\",\"properties\":"
        "{\"x\":{\"type\":\"integer\"}},\"additionalProperties\":false}},"
        "\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{\"u\":{\"type\":\"object\",\"required\":[\"x\"]}}}",
        "output /properties/u may omit 'x', which input /properties/u requires");
    /* keywords the check does not follow on the input side are named */
    bad("{\"type\":\"object\",\"additionalProperties\":false}",
        "{\"type\":\"object\",\"minProperties\":1}", "input (root)'s 'minProperties'");
}

static void test_arrays(void **state)
{
    (void)state;
    ok("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
       "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":1}");
    bad("{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}",
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"maxItems\":3}",
        "output (root) may have more items than input (root)'s maxItems 3");
    bad("{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}",
        "{\"type\":\"array\",\"minItems\":1}",
        "output (root) may have fewer items than input (root)'s minItems 1");
    bad("{\"type\":\"array\",\"items\":{\"type\":\"string\"}}",
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}",
        "output /items is a string; input /items wants an integer");
    /* tuples: 2020-12 prefixItems against draft-07 items arrays */
    ok("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\"}],"
       "\"items\":false}",
       "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"array\","
       "\"items\":[{\"type\":\"number\"},{\"type\":\"string\"}],\"additionalItems\":false}");
    bad("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}",
        "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"array\","
        "\"items\":[{\"type\":\"number\"},{\"type\":\"integer\"}]}",
        "output /prefixItems/1 is a string; input /items/1 wants an integer");
}

static void test_numbers(void **state)
{
    (void)state;
    ok("{\"type\":\"integer\",\"minimum\":1,\"maximum\":5}",
       "{\"type\":\"integer\",\"exclusiveMinimum\":0,\"maximum\":10}");
    ok("{\"type\":\"number\",\"exclusiveMinimum\":0}", "{\"type\":\"number\",\"minimum\":0}");
    bad("{\"type\":\"number\",\"minimum\":0}", "{\"type\":\"number\",\"exclusiveMinimum\":0}",
        "output (root)'s values may be at or below input (root)'s exclusiveMinimum 0");
    bad("{\"type\":\"integer\"}", "{\"type\":\"integer\",\"minimum\":1}",
        "output (root) has no lower bound; input (root)'s minimum is 1");
    bad("{\"type\":\"integer\",\"maximum\":11}", "{\"type\":\"integer\",\"maximum\":10}",
        "output (root)'s values may be above input (root)'s maximum 10");
    /* decimal bounds, compared as the decimals the schemas wrote and named that way */
    ok("{\"type\":\"number\",\"minimum\":0.5,\"maximum\":99.99}",
       "{\"type\":\"number\",\"exclusiveMinimum\":0.1,\"maximum\":99.99}");
    ok("{\"type\":\"number\",\"minimum\":-0.25,\"exclusiveMaximum\":1e-3}",
       "{\"type\":\"number\",\"minimum\":-0.25,\"maximum\":0.001}");
    bad("{\"type\":\"number\",\"minimum\":0.1}",
        "{\"type\":\"number\",\"exclusiveMinimum\":0.1}",
        "output (root)'s values may be at or below input (root)'s exclusiveMinimum 0.1");
    bad("{\"type\":\"number\",\"maximum\":0.1234568}",
        "{\"type\":\"number\",\"maximum\":0.1234567}",
        "above input (root)'s maximum 0.1234567 (output's maximum is 0.1234568)");
    bad("{\"type\":\"number\",\"minimum\":-1234567.0000001}",
        "{\"type\":\"number\",\"minimum\":-1234567}",
        "below input (root)'s minimum -1234567 (output's minimum is -1234567.0000001)");
    /* integers inside decimal bounds: >= 1.5 is >= 2, < 3.5 is <= 3 */
    ok("{\"type\":\"integer\",\"minimum\":1.5,\"exclusiveMaximum\":3.5}",
       "{\"type\":\"number\",\"minimum\":2,\"maximum\":3}");
    ok("{\"type\":\"integer\",\"exclusiveMinimum\":-2.5}",
       "{\"type\":\"integer\",\"minimum\":-2}");
    bad("{\"type\":\"integer\",\"minimum\":1.5}", "{\"type\":\"number\",\"minimum\":2.01}",
        "below input (root)'s minimum 2.01");
    ok("{\"type\":\"integer\",\"multipleOf\":4}", "{\"type\":\"integer\",\"multipleOf\":2}");
    bad("{\"type\":\"integer\"}", "{\"type\":\"integer\",\"multipleOf\":2}",
        "input (root)'s multipleOf 2");
    /* decimal multiples compared exactly (0.3 / 0.1 is 2.9999999999999996 in doubles) */
    ok("{\"type\":\"number\",\"multipleOf\":0.3,\"minimum\":0,\"maximum\":3}",
       "{\"type\":\"number\",\"multipleOf\":0.1}");
    ok("{\"type\":\"number\",\"multipleOf\":0.6}", "{\"type\":\"number\",\"multipleOf\":0.2}");
    ok("{\"type\":\"integer\",\"minimum\":-50,\"maximum\":50}",
       "{\"type\":\"number\",\"multipleOf\":0.125}");
    bad("{\"type\":\"number\",\"multipleOf\":0.1}", "{\"type\":\"number\",\"multipleOf\":0.3}",
        "input (root)'s multipleOf 0.3");
    bad("{\"type\":\"integer\"}", "{\"type\":\"number\",\"multipleOf\":0.3}",
        "input (root)'s multipleOf 0.3");
    /* integers are written without a fraction: an output const 5.0 generates "5", which an
     * integer input takes; a number under multipleOf 1 is still not proven an integer */
    ok("{\"const\":5.0}", "{\"type\":\"integer\",\"maximum\":5}");
    ok("{\"enum\":[1.0,-0.0,2]}", "{\"type\":\"integer\",\"minimum\":0}");
    bad("{\"type\":\"number\",\"multipleOf\":1}", "{\"type\":\"integer\"}",
        "output (root) is a number; input (root) wants an integer");
    ok("{\"type\":\"integer\",\"multipleOf\":3}",
       "{\"type\":\"number\",\"multipleOf\":1.5}");
}

static void test_strings(void **state)
{
    (void)state;
    ok("{\"type\":\"string\",\"pattern\":\"^ab\"}", "{\"type\":\"string\",\"pattern\":\"^a\"}");
    ok("{\"type\":\"string\",\"pattern\":\"^(?=x)\"}",
       "{\"type\":\"string\",\"pattern\":\"^(?=x)\"}"); /* identical: fine unbuilt */
    ok("{\"type\":\"string\",\"format\":\"date\"}",
       "{\"type\":\"string\",\"pattern\":\"^[0-9]{4}-\"}");
    ok("{\"type\":\"string\",\"enum\":[\"ab\",\"abc\"]}",
       "{\"type\":\"string\",\"pattern\":\"^ab\",\"maxLength\":3}");
    ok("{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}",
       "{\"type\":\"string\",\"minLength\":1,\"maxLength\":8}");
    bad("{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"pattern\":\"^a\"}}}",
        "{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"pattern\":\"^ab\"}}}",
        "cannot prove output /properties/s's pattern '^a' satisfies input /properties/s's "
        "pattern '^ab'");
    bad("{\"type\":\"string\",\"pattern\":\"^a\"}", "{\"type\":\"string\",\"pattern\":\"^ab\"}",
        "\"a\"");
    bad("{\"type\":\"string\"}", "{\"type\":\"string\",\"maxLength\":5}",
        "cannot prove output (root)'s any string satisfies input (root)'s maxLength 5");
    bad("{\"type\":\"string\",\"enum\":[\"ab\",\"b\"]}",
        "{\"type\":\"string\",\"pattern\":\"^a\"}",
        "output (root) may be \"b\", which input (root) refuses");
    bad("{\"type\":\"string\"}", "{\"enum\":[\"x\",\"y\"]}",
        "output (root) may be any string; input (root) allows only [\"x\",\"y\"]");
    ok("{\"const\":\"x\"}", "{\"enum\":[\"x\",\"y\"]}");
    ok("{\"type\":\"boolean\"}", "{\"enum\":[true,false,null]}");
}

static void test_combinators_and_refs(void **state)
{
    (void)state;
    ok("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}",
       "{\"type\":[\"string\",\"number\"]}");
    ok("{\"type\":\"integer\"}", "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}");
    bad("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"null\"}]}",
        "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}",
        "output /anyOf/1 fits none of input (root)'s anyOf branches");
    ok("{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}",
       "{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"number\"}]}");
    /* a oneOf whose other branch also takes the output's instances: not exactly one */
    bad("{\"type\":\"integer\"}", "{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}",
        "oneOf");
    /* discriminated unions */
    const char *in = "{\"oneOf\":[{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"a\"},"
                     "\"x\":{\"type\":\"integer\"}},\"required\":[\"kind\",\"x\"]},"
                     "{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"b\"}},"
                     "\"required\":[\"kind\"]}]}";
    ok("{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"a\"},\"x\":{\"type\":"
       "\"integer\"}},\"required\":[\"kind\",\"x\"],\"additionalProperties\":false}", in);
    ok("{\"allOf\":[{\"type\":\"integer\"},{\"minimum\":3}]}",
       "{\"type\":\"integer\",\"minimum\":2}");
    /* recursion through $ref on both sides */
    const char *tree_out = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{"
                           "\"v\":{\"type\":\"integer\"},\"kids\":{\"type\":\"array\",\"items\":"
                           "{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\",\"kids\"],"
                           "\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}";
    const char *tree_in = "{\"$schema\":\"http://json-schema.org/draft-07/schema#\","
                          "\"definitions\":{\"t\":{\"type\":\"object\",\"properties\":{"
                          "\"v\":{\"type\":\"number\"},\"kids\":{\"type\":\"array\",\"items\":"
                          "{\"$ref\":\"#/definitions/t\"}}},\"required\":[\"v\"]}},"
                          "\"$ref\":\"#/definitions/t\"}";
    ok(tree_out, tree_in);
    bad(tree_in, tree_out, "output (root) may omit 'kids', which input (root) requires");
    const char *tree_in2 = "{\"$schema\":\"http://json-schema.org/draft-07/schema#\","
                           "\"definitions\":{\"t\":{\"type\":\"object\",\"properties\":{"
                           "\"v\":{\"type\":\"number\"},\"kids\":{\"type\":\"array\","
                           "\"items\":{\"$ref\":\"#/definitions/t\"}}},\"required\":"
                           "[\"v\",\"kids\"],\"additionalProperties\":false}},"
                           "\"$ref\":\"#/definitions/t\"}";
    bad(tree_in2, tree_out, "output /properties/v is a number; input /properties/v wants an "
                            "integer");
    /* a reference loop with no value between is not taken as proof */
    bad("{\"type\":\"integer\"}",
        "{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"string\"}]}},"
        "\"$ref\":\"#/$defs/a\"}", "input");
    /* bad input */
    nx_err_t err = {0};
    assert_int_equal(compat("{", "{}", false, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "output schema is not JSON"));
    assert_int_equal(compat("{}", "{\"$ref\":\"#/nowhere\"}", false, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "nowhere"));
    /* free text into free text */
    assert_int_equal(compat(NULL, NULL, false, &err), NX_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampling_oracle_can_fail),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_combinators_and_refs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
