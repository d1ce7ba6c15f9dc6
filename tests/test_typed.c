/* test_typed.c — typed answers on the daemon side (nexus/typed.h, nexus/proto_schema.c): the
 * digest of a schema's canonical text, the cache compiling each distinct schema once, input
 * checks that name the JSON pointer of the first violation, answer values after a thinking
 * block, and a task request's schema / response_format / grammar fields. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_translate.h"
#include "proto.h"
#include "typed.h"

static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\",\"maxLength\":5},"
    "\"k\":{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":0}}},"
    "\"required\":[\"q\"]}";

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("'%s' does not contain '%s'", text, part);
}

static void test_digest_is_of_the_canonical_text(void **state)
{
    (void)state;
    char a[NX_TYPED_DIGEST_HEX], b[NX_TYPED_DIGEST_HEX], c[NX_TYPED_DIGEST_HEX];
    nx_err_t err = {0};
    const char *spaced = "{ \"type\" : \"object\",\n \"properties\": {\"q\": {\"type\": "
                         "\"string\", \"maxLength\": 5}, \"k\": {\"type\": \"array\", "
                         "\"items\": {\"type\": \"integer\", \"minimum\": 0}}},"
                         " \"required\": [\"q\"] }";
    assert_int_equal(nx_typed_digest_of(NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, a, &err),
                     NX_OK);
    assert_int_equal(nx_typed_digest_of(NX_TYPED_SCHEMA, spaced, strlen(spaced), false, b, &err),
                     NX_OK);
    assert_int_equal(nx_typed_digest_of(NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), true, c, &err),
                     NX_OK);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c); /* strict is part of what the answer must be */
    assert_int_equal(strlen(a), 32);
    assert_int_equal(nx_typed_digest_of(NX_TYPED_SCHEMA, "{", 1, false, c, &err), NX_EINVAL);
    assert_contains(err.msg, "not JSON");
}

static void test_cache_compiles_each_schema_once(void **state)
{
    (void)state;
    nx_typed_cache_t *cache = nx_typed_cache_new(2);
    nx_typed_t *t1 = NULL, *t2 = NULL, *t3 = NULL;
    nx_err_t err = {0};
    assert_int_equal(nx_typed_cache_get(cache, NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false,
                                        &t1, &err), NX_OK);
    assert_int_equal(nx_typed_cache_get(cache, NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false,
                                        &t2, &err), NX_OK);
    assert_ptr_equal(t1, t2);
    size_t compiled, hits;
    nx_typed_cache_counts(cache, &compiled, &hits);
    assert_int_equal(compiled, 1);
    assert_int_equal(hits, 1);
    assert_true(nx_typed_has_value(t1));
    /* two more distinct ones push the first out; the references held stay valid */
    assert_int_equal(nx_typed_cache_get(cache, NX_TYPED_JSON_OBJECT, NULL, 0, false, &t3, &err),
                     NX_OK);
    nx_typed_release(&t3);
    assert_int_equal(nx_typed_cache_get(cache, NX_TYPED_GBNF, "root ::= \"a\"", 12, false, &t3,
                                        &err), NX_OK);
    assert_false(nx_typed_has_value(t3));
    nx_typed_release(&t3);
    nx_typed_cache_destroy(&cache);
    assert_null(cache);
    assert_non_null(nx_typed_gram(t1));
    nx_typed_release(&t1);
    nx_typed_release(&t2);
    assert_null(t2);
    nx_typed_release(&t2); /* safe twice */
}

static void test_refused_schema_names_keyword_and_pointer(void **state)
{
    (void)state;
    nx_typed_t *t = NULL;
    nx_err_t err = {0};
    const char *bad = "{\"properties\":{\"a\":{\"type\":\"object\",\"minProperties\":2}}}";
    assert_int_equal(nx_typed_new(NX_TYPED_SCHEMA, bad, strlen(bad), false, &t, &err),
                     NX_ENOTSUP);
    assert_null(t);
    assert_contains(err.msg, "'minProperties' at /properties/a");
    const char *gbnf = "root ::= \"a\"\nx ::= [a-";
    assert_int_not_equal(nx_typed_new(NX_TYPED_GBNF, gbnf, strlen(gbnf), false, &t, &err),
                         NX_OK);
    assert_contains(err.msg, "2:");
}

static void check_input_fails(const nx_typed_t *t, const char *input, const char *part)
{
    nx_err_t err = {0};
    assert_int_equal(nx_typed_check_input(t, input, &err), NX_EINVAL);
    assert_contains(err.msg, part);
}

static void test_input_check_names_the_pointer(void **state)
{
    (void)state;
    nx_typed_t *t = NULL;
    nx_err_t err = {0};
    assert_int_equal(nx_typed_new(NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, &t, &err),
                     NX_OK);
    assert_int_equal(nx_typed_check_input(t, "{\"q\":\"abc\"}", &err), NX_OK);
    /* any member order, spacing, nesting, additional properties (the spec's default) */
    assert_int_equal(nx_typed_check_input(t, " {\"k\": [0, 7], \"x\": {\"y\": null},"
                                             " \"q\": \"\\u00e9t\u00e9\"} ", &err), NX_OK);
    check_input_fails(t, "{\"q\":\"abc\",\"k\":[1,-2]}", "input at /k/1");
    check_input_fails(t, "{\"q\":\"abcdef\"}", "input at /q");
    check_input_fails(t, "{\"k\":[]}", "lacks a required property");
    check_input_fails(t, "[1]", "input at the root");
    check_input_fails(t, "{\"q\":", "not JSON");
    check_input_fails(t, "{\"q\":\"a\",\"q\":\"b\"}", "not JSON");
    nx_typed_release(&t);
    const char *strict_schema = "{\"type\":\"object\",\"properties\":{\"a/b\":{}}}";
    assert_int_equal(nx_typed_new(NX_TYPED_SCHEMA, strict_schema, strlen(strict_schema), true,
                                  &t, &err), NX_OK);
    assert_int_equal(nx_typed_check_input(t, "{\"a/b\":[1,{\"z\":2}]}", &err), NX_OK);
    check_input_fails(t, "{\"a/b\":1,\"c~d\":2}", "input at /c~0d: property 'c~d'");
    nx_typed_release(&t);
}

/* Input is checked as the spec says: 5.0 is an integer (the grammar writes answers as "5", but
 * a caller's 5.0 is fed as its integer text); 5.5 is not, and a number keeps its fraction. */
static void test_input_integral_real_is_an_integer(void **state)
{
    (void)state;
    nx_typed_t *t = NULL;
    nx_err_t err = {0};
    assert_int_equal(nx_typed_new(NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, &t, &err),
                     NX_OK);
    assert_int_equal(nx_typed_check_input(t, "{\"q\":\"a\",\"k\":[5.0,0.000,-0.0,7e0,1E2]}",
                                          &err), NX_OK);
    assert_int_equal(nx_typed_check_input(t, "{\"q\":\"a\",\"k\":[9007199254740992.0]}", &err),
                     NX_OK);
    check_input_fails(t, "{\"q\":\"a\",\"k\":[5.5]}", "input at /k/0: the value 5.5");
    check_input_fails(t, "{\"q\":\"a\",\"k\":[-1.0]}", "input at /k/0"); /* minimum 0 */
    check_input_fails(t, "{\"q\":\"a\",\"k\":[1e300]}", "input at /k/0"); /* past 2^53 */
    nx_typed_release(&t);
    const char *numbers = "{\"type\":\"array\",\"items\":{\"type\":\"number\",\"maximum\":6}}";
    assert_int_equal(nx_typed_new(NX_TYPED_SCHEMA, numbers, strlen(numbers), false, &t, &err),
                     NX_OK);
    assert_int_equal(nx_typed_check_input(t, "[5.0,5.5,6,-2.25]", &err), NX_OK);
    check_input_fails(t, "[6.5]", "input at /0");
    nx_typed_release(&t);
}

static void test_answer_value(void **state)
{
    (void)state;
    json_t *v = nx_typed_answer_value("<think>\nlet me see {not json}\n</think>\n\n{\"a\":[1,2]}");
    assert_non_null(v);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(v, "a"), 1)), 2);
    json_decref(v);
    assert_null(nx_typed_answer_value("{\"a\":[1,"));
    assert_null(nx_typed_answer_value("<think>never closed {}"));
    v = nx_typed_answer_value("true");
    assert_true(json_is_true(v));
    json_decref(v);
}

/* A task frame with the extra fields written by fill. */
static int parse_task(void (*fill)(nx_writer_t *), nx_request_t *req, const char **code,
                      nx_err_t *err)
{
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    nx_writer_str(w, "input", "hi");
    fill(w);
    size_t len;
    const void *data = nx_writer_data(w, &len);
    int rc = nx_proto_parse(data, len, 1 << 20, req, code, err);
    nx_writer_destroy(&w);
    return rc;
}

static void fill_schema(nx_writer_t *w)
{
    nx_writer_map_open(w, "schema");
    nx_writer_str(w, "type", "array");
    nx_writer_map_open(w, "items");
    nx_writer_real(w, "maximum", 2.5);
    nx_writer_map_close(w);
    nx_writer_map_close(w);
    nx_writer_bool(w, "strict", true);
}

static void fill_json_schema(nx_writer_t *w)
{
    nx_writer_map_open(w, "response_format");
    nx_writer_str(w, "type", "json_schema");
    nx_writer_map_open(w, "json_schema");
    nx_writer_str(w, "name", "n");
    nx_writer_map_open(w, "schema");
    nx_writer_str(w, "type", "integer");
    nx_writer_map_close(w);
    nx_writer_map_close(w);
    nx_writer_map_close(w);
}

static void fill_json_object(nx_writer_t *w)
{
    nx_writer_map_open(w, "response_format");
    nx_writer_str(w, "type", "json_object");
    nx_writer_map_close(w);
}

static void fill_grammar(nx_writer_t *w)
{
    nx_writer_str(w, "grammar", "root ::= \"x\"");
}

static void fill_two(nx_writer_t *w)
{
    fill_grammar(w);
    fill_json_object(w);
}

static void fill_schema_list(nx_writer_t *w)
{
    nx_writer_array_open(w, "schema");
    nx_writer_array_close(w);
}

static void fill_rf_unknown(nx_writer_t *w)
{
    nx_writer_map_open(w, "response_format");
    nx_writer_str(w, "type", "xml");
    nx_writer_map_close(w);
}

static void fill_strict_alone(nx_writer_t *w)
{
    nx_writer_bool(w, "strict", true);
    fill_json_object(w);
}

static void test_task_constraint_fields(void **state)
{
    (void)state;
    nx_request_t req;
    const char *code;
    nx_err_t err = {0};
    assert_int_equal(parse_task(fill_schema, &req, &code, &err), NX_OK);
    assert_int_equal(req.constraint_kind, NX_CONSTRAINT_SCHEMA);
    assert_string_equal(req.constraint, "{\"type\":\"array\",\"items\":{\"maximum\":2.5}}");
    assert_true(req.constraint_strict);
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_json_schema, &req, &code, &err), NX_OK);
    assert_int_equal(req.constraint_kind, NX_CONSTRAINT_SCHEMA);
    assert_string_equal(req.constraint, "{\"type\":\"integer\"}");
    assert_false(req.constraint_strict);
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_json_object, &req, &code, &err), NX_OK);
    assert_int_equal(req.constraint_kind, NX_CONSTRAINT_JSON_OBJECT);
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_grammar, &req, &code, &err), NX_OK);
    assert_int_equal(req.constraint_kind, NX_CONSTRAINT_GBNF);
    assert_string_equal(req.constraint, "root ::= \"x\"");
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_two, &req, &code, &err), NX_EINVAL);
    assert_string_equal(code, "bad_request");
    assert_contains(err.msg, "exclude each other");
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_schema_list, &req, &code, &err), NX_EINVAL);
    assert_contains(err.msg, "field 'schema': expected a map");
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_rf_unknown, &req, &code, &err), NX_EINVAL);
    assert_contains(err.msg, "response_format.type");
    nx_request_clear(&req);
    assert_int_equal(parse_task(fill_strict_alone, &req, &code, &err), NX_EINVAL);
    assert_contains(err.msg, "field 'strict' goes with 'schema'");
    nx_request_clear(&req);
}

static void test_value_written_as_msgpack(void **state)
{
    (void)state;
    json_t *v = json_loads("{\"a\":[1,-2,2.5,\"x\",true,null],\"b\":{}}", 0, NULL);
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "result", NULL, 0);
    nx_writer_json(w, "value", v);
    size_t len;
    const char *data = nx_writer_data(w, &len);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, data, len, NULL), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *value = NULL;
    for (uint32_t i = 0; i < u.data.via.map.size; i++)
        if (u.data.via.map.ptr[i].key.via.str.size == 5 &&
            !memcmp(u.data.via.map.ptr[i].key.via.str.ptr, "value", 5))
            value = &u.data.via.map.ptr[i].val;
    assert_non_null(value);
    assert_int_equal(value->type, MSGPACK_OBJECT_MAP);
    const msgpack_object *a = &value->via.map.ptr[0].val;
    assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(a->via.array.size, 6);
    assert_int_equal(a->via.array.ptr[1].via.i64, -2);
    assert_true(a->via.array.ptr[2].via.f64 == 2.5);
    assert_int_equal(a->via.array.ptr[5].type, MSGPACK_OBJECT_NIL);
    msgpack_unpacked_destroy(&u);
    nx_writer_destroy(&w);
    json_decref(v);
}

/* The HTTP front's content of a typed answer: the JSON after a thinking block. */
static void test_http_content_after_thinking(void **state)
{
    (void)state;
    char *reasoning = NULL;
    const char *content = nx__openai_answer_content("<think>\nhmm {x}\n</think>\n\n{\"a\":1}",
                                                    &reasoning);
    assert_string_equal(content, "{\"a\":1}");
    assert_string_equal(reasoning, "\nhmm {x}\n");
    free(reasoning);
    content = nx__openai_answer_content("{\"a\":1}", &reasoning);
    assert_string_equal(content, "{\"a\":1}");
    assert_null(reasoning);
    content = nx__openai_answer_content("<think>cut by max_tokens", &reasoning);
    assert_string_equal(content, "<think>cut by max_tokens"); /* no end: left whole */
    assert_null(reasoning);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_is_of_the_canonical_text),
        cmocka_unit_test(test_cache_compiles_each_schema_once),
        cmocka_unit_test(test_refused_schema_names_keyword_and_pointer),
        cmocka_unit_test(test_input_check_names_the_pointer),
        cmocka_unit_test(test_input_integral_real_is_an_integer),
        cmocka_unit_test(test_answer_value),
        cmocka_unit_test(test_task_constraint_fields),
        cmocka_unit_test(test_value_written_as_msgpack),
        cmocka_unit_test(test_http_content_after_thinking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
