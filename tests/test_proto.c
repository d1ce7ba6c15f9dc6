/* test_proto.c — the wire protocol codec (nexus/proto.h): every op parses with its fields;
 * every kind of bad frame gets its stable code and a message naming the field; ids of any
 * msgpack type echo byte for byte; the writer's output, read back by msgpack-c, is what was
 * written; params apply onto sampling settings and are validated. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_engine.h"
#include "proto.h"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct frame {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} frame_t;

static void frame_init(frame_t *f)
{
    msgpack_sbuffer_init(&f->buf);
    msgpack_packer_init(&f->pk, &f->buf, msgpack_sbuffer_write);
}

static void pack_str(frame_t *f, const char *s)
{
    msgpack_pack_str(&f->pk, strlen(s));
    msgpack_pack_str_body(&f->pk, s, strlen(s));
}

/* Parse the writer's current frame. */
static int parse_writer(nx_writer_t *w, nx_request_t *req, const char **code, nx_err_t *err)
{
    size_t len;
    const void *data = nx_writer_data(w, &len);
    assert_non_null(data);
    return nx_proto_parse(data, len, 1 << 20, req, code, err);
}

/* Expect the frame to fail with `code`, the message containing `needle`. */
static void expect_bad(const void *data, size_t len, size_t max, const char *code,
                       const char *needle)
{
    nx_request_t req;
    const char *got = NULL;
    nx_err_t err = {0};
    int rc = nx_proto_parse(data, len, max, &req, &got, &err);
    assert_true(rc < 0);
    assert_int_equal(err.code, rc);
    assert_non_null(got);
    if (strcmp(got, code) != 0 || !strstr(err.msg, needle))
        fail_msg("expected %s naming '%s', got %s: %s", code, needle, got, err.msg);
    nx_request_clear(&req);
}

static void expect_bad_writer(nx_writer_t *w, const char *code, const char *needle)
{
    size_t len;
    const void *data = nx_writer_data(w, &len);
    assert_non_null(data);
    expect_bad(data, len, 1 << 20, code, needle);
}

/* ---- every op ------------------------------------------------------------------------------ */

static void test_simple_ops_parse(void **state)
{
    nx_writer_t *w = nx_writer_new();
    const nx_op_t ops[] = {NX_OP_PING, NX_OP_STATUS, NX_OP_AGENTS, NX_OP_MODELS};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        nx_writer_reply(w, nx_op_name(ops[i]), NULL, 0);
        nx_request_t req;
        nx_err_t err = {0};
        const char *code = "x";
        assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
        assert_int_equal(req.op, ops[i]);
        assert_null(code);
        /* "id": nil is a value like any other: its bytes are kept */
        assert_int_equal(req.id_len, 1);
        assert_int_equal(req.id[0], 0xc0);
        nx_request_clear(&req);
    }
    nx_writer_destroy(&w);
    nx_writer_destroy(&w); /* safe twice */
}

static void test_task_parses_every_field(void **state)
{
    nx_writer_t *w = nx_writer_new();
    unsigned char id[] = {0x07};
    nx_writer_reply(w, "task", id, 1);
    nx_writer_str(w, "agent", "writer");
    nx_writer_str(w, "input", "Grüße, 世界");
    nx_writer_str(w, "session", "s-1");
    nx_writer_bool(w, "stream", true);
    nx_writer_str(w, "unlisted", "ignored");
    nx_writer_array_open(w, "route");
    nx_writer_str(w, NULL, "critic");
    nx_writer_str(w, NULL, "editor");
    nx_writer_array_close(w);
    nx_writer_map_open(w, "params");
    nx_writer_uint(w, "max_tokens", 64);
    nx_writer_real(w, "temperature", 0.7);
    nx_writer_real(w, "top_p", 0.9);
    nx_writer_uint(w, "top_k", 40);
    nx_writer_int(w, "min_p", 0); /* an integer where a number is expected is fine */
    nx_writer_real(w, "repetition_penalty", 1.1);
    nx_writer_uint(w, "seed", UINT64_MAX);
    nx_writer_array_open(w, "stop");
    nx_writer_str(w, NULL, "\n\n");
    nx_writer_array_close(w);
    nx_writer_map_close(w);

    nx_request_t req;
    nx_err_t err = {0};
    const char *code = NULL;
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_int_equal(req.op, NX_OP_TASK);
    assert_int_equal(req.id_len, 1);
    assert_int_equal(req.id[0], 0x07);
    assert_string_equal(req.agent, "writer");
    assert_string_equal(req.input, "Grüße, 世界");
    assert_string_equal(req.session, "s-1");
    assert_true(req.stream);
    assert_int_equal(req.route_count, 2);
    assert_string_equal(req.route[0], "critic");
    assert_string_equal(req.route[1], "editor");
    const nx_params_t *p = &req.params;
    assert_true(p->has_max_tokens && p->has_temperature && p->has_top_p && p->has_top_k &&
                p->has_min_p && p->has_repetition_penalty && p->has_seed && p->has_stop);
    assert_int_equal(p->max_tokens, 64);
    assert_float_equal(p->temperature, 0.7, 1e-6);
    assert_int_equal(p->top_k, 40);
    assert_true(p->seed == UINT64_MAX);
    assert_int_equal(p->stop_count, 1);
    assert_string_equal(p->stop[0], "\n\n");

    nx_sampling_t s = nx_sampling_default();
    assert_int_equal(nx_params_apply(p, &s, &err), NX_OK);
    assert_int_equal(s.max_tokens, 64);
    assert_float_equal(s.top_p, 0.9, 1e-6);
    assert_int_equal(s.stop_count, 1);
    assert_string_equal(s.stop[0], "\n\n");
    nx_request_clear(&req);
    assert_null(req.agent);

    /* the minimal task: defaults */
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    nx_writer_str(w, "input", "");
    nx_writer_nil(w, "session"); /* nil = absent */
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_false(req.stream);
    assert_null(req.session);
    assert_int_equal(req.route_count, 0);
    assert_false(req.params.has_temperature);
    nx_request_clear(&req);
    nx_writer_destroy(&w);
}

static void test_other_ops_parse(void **state)
{
    nx_writer_t *w = nx_writer_new();
    nx_request_t req;
    nx_err_t err = {0};
    const char *code;

    nx_writer_reply(w, "cancel", NULL, 0);
    nx_writer_int(w, "task", 42);
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_int_equal(req.op, NX_OP_CANCEL);
    assert_int_equal(req.task, 42);
    nx_request_clear(&req);

    const char *model_ops[] = {"load", "evict", "pin", "unpin"};
    const nx_op_t model_op_ids[] = {NX_OP_LOAD, NX_OP_EVICT, NX_OP_PIN, NX_OP_UNPIN};
    for (int i = 0; i < 4; i++) {
        nx_writer_reply(w, model_ops[i], NULL, 0);
        nx_writer_str(w, "model", "qwen3-0.6b");
        assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
        assert_int_equal(req.op, model_op_ids[i]);
        assert_string_equal(req.model, "qwen3-0.6b");
        assert_string_equal(nx_op_name(req.op), model_ops[i]);
        nx_request_clear(&req);
    }

    nx_writer_reply(w, "tasks", NULL, 0);
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_int_equal(req.op, NX_OP_TASKS);
    assert_int_equal(req.limit, 20);
    assert_null(req.agent);
    nx_request_clear(&req);

    nx_writer_reply(w, "tasks", NULL, 0);
    nx_writer_str(w, "agent", "critic");
    nx_writer_uint(w, "limit", 1000);
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_int_equal(req.limit, 1000);
    assert_string_equal(req.agent, "critic");
    nx_request_clear(&req);

    nx_writer_reply(w, "history", NULL, 0);
    nx_writer_str(w, "session", "chat-9");
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_int_equal(req.op, NX_OP_HISTORY);
    assert_string_equal(req.session, "chat-9");
    nx_request_clear(&req);
    nx_writer_destroy(&w);
}

/* ---- bad frames ------------------------------------------------------------------------------ */

static void test_bad_envelopes(void **state)
{
    /* not a map */
    const unsigned char array[] = {0x92, 0x01, 0x02};
    expect_bad(array, sizeof array, 1024, "bad_msgpack", "array, not a map");
    const unsigned char str[] = {0xa2, 'h', 'i'};
    expect_bad(str, sizeof str, 1024, "bad_msgpack", "str, not a map");
    expect_bad("", 0, 1024, "bad_msgpack", "empty");

    /* truncated, at every length short of the whole */
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "writer");
    nx_writer_str(w, "input", "hello");
    size_t len;
    const unsigned char *good = nx_writer_data(w, &len);
    for (size_t cut = 1; cut < len; cut++)
        expect_bad(good, cut, 1024, "bad_msgpack", "truncated");

    /* trailing garbage */
    unsigned char *more = malloc(len + 2);
    memcpy(more, good, len);
    more[len] = 0xc0;
    more[len + 1] = 0x01;
    expect_bad(more, len + 2, 1024, "bad_msgpack", "2 trailing bytes");
    free(more);

    /* too large: checked before anything else */
    expect_bad(good, len, len - 1, "too_large", "over the limit");
    expect_bad("\xc1garbage", 8, 4, "too_large", "8 bytes");

    /* a byte that is no msgpack type */
    expect_bad("\xc1", 1, 1024, "bad_msgpack", "0xc1");

    /* a container that claims more entries than bytes: refused before any allocation */
    const unsigned char huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_bad(huge_array, sizeof huge_array, 1024, "bad_msgpack", "declares 4294967295");
    const unsigned char huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0};
    expect_bad(huge_map, sizeof huge_map, 1024, "bad_msgpack", "truncated");
    const unsigned char huge_str[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'};
    expect_bad(huge_str, sizeof huge_str, 1024, "bad_msgpack", "truncated");
    nx_writer_destroy(&w);

    /* nested deeper than the unpacker allows: an error, not a crash */
    unsigned char deep[200];
    for (size_t i = 0; i < sizeof deep - 1; i++)
        deep[i] = 0x91;
    deep[sizeof deep - 1] = 0xc0;
    expect_bad(deep, sizeof deep, 1024, "bad_msgpack", "nested too deeply");

    /* ... while an id nested 23 deep inside the map (24 levels) is fine */
    unsigned char ok[64] = {0x82, 0xa2, 'o', 'p', 0xa4, 'p', 'i', 'n', 'g', 0xa2, 'i', 'd'};
    size_t n = 12;
    for (int i = 0; i < 23; i++)
        ok[n++] = 0x91;
    ok[n++] = 0xc0;
    nx_request_t req;
    const char *code;
    nx_err_t err = {0};
    assert_int_equal(nx_proto_parse(ok, n, 1024, &req, &code, &err), NX_OK);
    assert_int_equal(req.id_len, 24);
    nx_request_clear(&req);
}

static void test_non_string_key_keeps_id(void **state)
{
    frame_t f;
    frame_init(&f);
    msgpack_pack_map(&f.pk, 3);
    pack_str(&f, "id");
    msgpack_pack_int(&f.pk, 5);
    msgpack_pack_int(&f.pk, 1);
    pack_str(&f, "x");
    pack_str(&f, "op");
    pack_str(&f, "ping");
    expect_bad(f.buf.data, f.buf.size, 1024, "bad_msgpack", "key 2");

    nx_request_t req;
    const char *code;
    nx_err_t err = {0};
    assert_true(nx_proto_parse(f.buf.data, f.buf.size, 1024, &req, &code, &err) < 0);
    assert_int_equal(req.id_len, 1); /* still there for the error reply */
    assert_int_equal(req.id[0], 5);
    nx_request_clear(&req);
    msgpack_sbuffer_destroy(&f.buf);
}

/* Two ids: which one should the reply echo? Refused like any key given twice; the reply
 * still echoes the first, so the client can match it. */
static void test_duplicate_id_is_refused(void **state)
{
    frame_t f;
    frame_init(&f);
    msgpack_pack_map(&f.pk, 3);
    pack_str(&f, "id");
    msgpack_pack_int(&f.pk, 7);
    pack_str(&f, "op");
    pack_str(&f, "ping");
    pack_str(&f, "id");
    msgpack_pack_int(&f.pk, 8);
    expect_bad(f.buf.data, f.buf.size, 1024, "bad_request", "field 'id' is given twice");

    nx_request_t req;
    const char *code;
    nx_err_t err = {0};
    assert_int_equal(nx_proto_parse(f.buf.data, f.buf.size, 1024, &req, &code, &err),
                     NX_EINVAL);
    assert_int_equal(req.id_len, 1);
    assert_int_equal(req.id[0], 7);
    nx_request_clear(&req);
    msgpack_sbuffer_destroy(&f.buf);
}

static void test_bad_ops(void **state)
{
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "ping", NULL, 0); /* then drop "op": a map without it */
    nx_writer_reset(w);
    nx_writer_str(w, "agent", "a");
    expect_bad_writer(w, "unknown_op", "no 'op'");

    nx_writer_reply(w, "fly", NULL, 0);
    expect_bad_writer(w, "unknown_op", "unknown op 'fly'");

    nx_writer_reset(w);
    nx_writer_int(w, "op", 3);
    expect_bad_writer(w, "unknown_op", "field 'op'");

    /* the error can still echo the id */
    unsigned char id[] = {0xa3, 'r', '-', '1'};
    nx_writer_reply(w, "fly", id, sizeof id);
    size_t len;
    const void *data = nx_writer_data(w, &len);
    nx_request_t req;
    const char *code;
    nx_err_t err = {0};
    assert_int_equal(nx_proto_parse(data, len, 1024, &req, &code, &err), NX_ENOTSUP);
    assert_memory_equal(req.id, id, sizeof id);
    nx_request_clear(&req);
    nx_writer_destroy(&w);
}

/* A task request with agent "a", input "hi" and one more field set by `add`. */
typedef void (*add_fn)(nx_writer_t *w);

static void expect_bad_task(add_fn add, bool with_agent, const char *needle)
{
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "task", NULL, 0);
    if (with_agent)
        nx_writer_str(w, "agent", "a");
    nx_writer_str(w, "input", "hi");
    if (add)
        add(w);
    expect_bad_writer(w, "bad_request", needle);
    nx_writer_destroy(&w);
}

static void add_nothing(nx_writer_t *w) { (void)w; }
static void add_agent_int(nx_writer_t *w) { nx_writer_int(w, "agent", 7); }
static void add_stream_str(nx_writer_t *w) { nx_writer_str(w, "stream", "yes"); }
static void add_session_int(nx_writer_t *w) { nx_writer_int(w, "session", 1); }
static void add_route_str(nx_writer_t *w) { nx_writer_str(w, "route", "critic"); }
static void add_route_int_entry(nx_writer_t *w)
{
    nx_writer_array_open(w, "route");
    nx_writer_str(w, NULL, "critic");
    nx_writer_int(w, NULL, 3);
    nx_writer_array_close(w);
}
static void add_route_too_long(nx_writer_t *w)
{
    nx_writer_array_open(w, "route");
    for (int i = 0; i < 17; i++)
        nx_writer_str(w, NULL, "critic");
    nx_writer_array_close(w);
}
static void add_params_list(nx_writer_t *w)
{
    nx_writer_array_open(w, "params");
    nx_writer_array_close(w);
}
static void add_params_unknown(nx_writer_t *w)
{
    nx_writer_map_open(w, "params");
    nx_writer_real(w, "temprature", 0.5);
    nx_writer_map_close(w);
}
static void add_params_temp_str(nx_writer_t *w)
{
    nx_writer_map_open(w, "params");
    nx_writer_str(w, "temperature", "hot");
    nx_writer_map_close(w);
}
static void add_params_max_tokens_negative(nx_writer_t *w)
{
    nx_writer_map_open(w, "params");
    nx_writer_int(w, "max_tokens", -1);
    nx_writer_map_close(w);
}
static void add_params_stop_int(nx_writer_t *w)
{
    nx_writer_map_open(w, "params");
    nx_writer_array_open(w, "stop");
    nx_writer_int(w, NULL, 1);
    nx_writer_array_close(w);
    nx_writer_map_close(w);
}
static void add_agent_twice(nx_writer_t *w) { nx_writer_str(w, "agent", "b"); }
/* A task whose session is `bytes`, packed by hand (the writer only ever writes valid UTF-8). */
static void expect_bad_session(const char *bytes, const char *needle)
{
    frame_t f;
    frame_init(&f);
    msgpack_pack_map(&f.pk, 4);
    pack_str(&f, "op");
    pack_str(&f, "task");
    pack_str(&f, "agent");
    pack_str(&f, "a");
    pack_str(&f, "input");
    pack_str(&f, "hi");
    pack_str(&f, "session");
    pack_str(&f, bytes);
    expect_bad(f.buf.data, f.buf.size, 1024, "bad_request", needle);
    msgpack_sbuffer_destroy(&f.buf);
}

static void test_bad_task_fields(void **state)
{
    expect_bad_task(add_nothing, false, "field 'agent' is required");
    expect_bad_task(add_agent_int, false, "field 'agent': expected a string, got int");
    expect_bad_task(add_stream_str, true, "field 'stream': expected a bool, got str");
    expect_bad_task(add_session_int, true, "field 'session': expected a string");
    expect_bad_task(add_route_str, true, "field 'route': expected a list of strings, got str");
    expect_bad_task(add_route_int_entry, true, "field 'route[1]': expected a string, got int");
    expect_bad_task(add_route_too_long, true, "field 'route': 17 entries, at most 16");
    expect_bad_task(add_params_list, true, "field 'params': expected a map, got array");
    expect_bad_task(add_params_unknown, true, "unknown key 'temprature'");
    expect_bad_task(add_params_temp_str, true, "field 'params.temperature': expected a number");
    expect_bad_task(add_params_max_tokens_negative, true, "field 'params.max_tokens'");
    expect_bad_task(add_params_stop_int, true, "field 'params.stop[0]'");
    expect_bad_task(add_agent_twice, true, "field 'agent' is given twice");
    expect_bad_session("ok\xff", "field 'session': not valid UTF-8 at byte 2");
    expect_bad_session("\xc0\xaf", "not valid UTF-8");
    expect_bad_session("\xed\xa0\x80", "not valid UTF-8");

    /* a NUL byte inside a string (the writer stops at NUL, so pack it by hand) */
    frame_t f;
    frame_init(&f);
    msgpack_pack_map(&f.pk, 3);
    pack_str(&f, "op");
    pack_str(&f, "task");
    pack_str(&f, "agent");
    msgpack_pack_str(&f.pk, 3);
    msgpack_pack_str_body(&f.pk, "a\0b", 3);
    pack_str(&f, "input");
    pack_str(&f, "hi");
    expect_bad(f.buf.data, f.buf.size, 1024, "bad_request", "field 'agent': a NUL byte at byte 1");
    msgpack_sbuffer_destroy(&f.buf);

    /* input missing */
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    expect_bad_writer(w, "bad_request", "field 'input' is required");
    nx_writer_destroy(&w);
}

static void add_history_map(nx_writer_t *w) { nx_writer_map_open(w, "history"); nx_writer_map_close(w); }
static void add_history_system(nx_writer_t *w)
{
    nx_writer_array_open(w, "history");
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "role", "system");
    nx_writer_str(w, "content", "be nice");
    nx_writer_map_close(w);
    nx_writer_array_close(w);
}
static void add_history_no_content(nx_writer_t *w)
{
    nx_writer_array_open(w, "history");
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "role", "user");
    nx_writer_map_close(w);
    nx_writer_array_close(w);
}
static void add_history_str_entry(nx_writer_t *w)
{
    nx_writer_array_open(w, "history");
    nx_writer_str(w, NULL, "hello");
    nx_writer_array_close(w);
}

/* A tool conversation: an assistant turn with calls only, a tool result, no new input; the
 * tools, tool_choice and parallel_tool_calls as JSON text. */
static void write_tool_task(nx_writer_t *w, bool with_input, const char *call_args)
{
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    if (with_input)
        nx_writer_str(w, "input", "more");
    nx_writer_array_open(w, "history");
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "role", "user");
    nx_writer_str(w, "content", "weather?");
    nx_writer_map_close(w);
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "role", "assistant");
    nx_writer_array_open(w, "tool_calls");
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "id", "call_1");
    nx_writer_str(w, "type", "function");
    nx_writer_map_open(w, "function");
    nx_writer_str(w, "name", "get_weather");
    nx_writer_str(w, "arguments", call_args);
    nx_writer_map_close(w);
    nx_writer_map_close(w);
    nx_writer_array_close(w);
    nx_writer_map_close(w);
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "role", "tool");
    nx_writer_str(w, "tool_call_id", "call_1");
    nx_writer_str(w, "content", "sunny");
    nx_writer_map_close(w);
    nx_writer_array_close(w);
    nx_writer_array_open(w, "tools");
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "type", "function");
    nx_writer_map_open(w, "function");
    nx_writer_str(w, "name", "get_weather");
    nx_writer_map_close(w);
    nx_writer_map_close(w);
    nx_writer_array_close(w);
    nx_writer_str(w, "tool_choice", "required");
    nx_writer_bool(w, "parallel_tool_calls", false);
}

static void test_task_tools(void **state)
{
    nx_writer_t *w = nx_writer_new();
    write_tool_task(w, false, "{\"city\": \"Oslo\"}");
    nx_request_t req;
    const char *code = NULL;
    nx_err_t err = {0};
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_null(req.input);
    assert_true(req.no_input);
    assert_int_equal(req.history_count, 3);
    assert_null(req.history[1].content);
    assert_int_equal(req.history[1].call_count, 1);
    assert_string_equal(req.history[1].calls[0].id, "call_1");
    assert_string_equal(req.history[1].calls[0].name, "get_weather");
    assert_string_equal(req.history[1].calls[0].arguments, "{\"city\": \"Oslo\"}");
    assert_string_equal(req.history[2].role, "tool");
    assert_string_equal(req.history[2].tool_call_id, "call_1");
    assert_string_equal(req.tools_json,
                        "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]");
    assert_string_equal(req.tool_choice_json, "\"required\"");
    assert_false(req.parallel_tool_calls);
    nx_request_clear(&req);
    /* arguments that are not JSON */
    nx_writer_reset(w);
    write_tool_task(w, true, "{city");
    expect_bad_writer(w, "bad_request",
                      "field 'history[1].tool_calls[0].function.arguments': not JSON");
    /* no input, and the history does not end with a tool turn */
    nx_writer_reset(w);
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    expect_bad_writer(w, "bad_request", "field 'input' is required");
    /* tool_choice of another type */
    nx_writer_reset(w);
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    nx_writer_str(w, "input", "x");
    nx_writer_int(w, "tool_choice", 3);
    expect_bad_writer(w, "bad_request", "field 'tool_choice': expected \"auto\"");
    nx_writer_destroy(&w);
}

/* A task's own earlier turns ("history"): user and assistant maps, in order. */
static void test_task_history(void **state)
{
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    nx_writer_str(w, "input", "and now?");
    nx_writer_array_open(w, "history");
    const char *turns[][2] = {{"user", "first"}, {"assistant", ""}, {"user", "second"}};
    for (size_t i = 0; i < 3; i++) {
        nx_writer_map_open(w, NULL);
        nx_writer_str(w, "role", turns[i][0]);
        nx_writer_str(w, "content", turns[i][1]);
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
    nx_request_t req;
    const char *code = NULL;
    nx_err_t err = {0};
    assert_int_equal(parse_writer(w, &req, &code, &err), NX_OK);
    assert_int_equal(req.history_count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(req.history[i].role, turns[i][0]);
        assert_string_equal(req.history[i].content, turns[i][1]);
    }
    nx_request_clear(&req);
    nx_writer_destroy(&w);
    expect_bad_task(add_history_map, true, "field 'history': expected a list");
    expect_bad_task(add_history_system, true,
                    "field 'history[0].role': expected \"user\", \"assistant\" or \"tool\", "
                    "got \"system\"");
    expect_bad_task(add_history_no_content, true, "field 'history[0].content' is required");
    expect_bad_task(add_history_str_entry, true, "field 'history[0]': expected a map, got str");
}

static void test_bad_other_fields(void **state)
{
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "tasks", NULL, 0);
    nx_writer_int(w, "limit", 0);
    expect_bad_writer(w, "bad_request", "field 'limit': expected an integer in 1..1000");
    nx_writer_reply(w, "tasks", NULL, 0);
    nx_writer_int(w, "limit", 1001);
    expect_bad_writer(w, "bad_request", "field 'limit'");
    nx_writer_reply(w, "tasks", NULL, 0);
    nx_writer_str(w, "limit", "5");
    expect_bad_writer(w, "bad_request", "got str");

    nx_writer_reply(w, "cancel", NULL, 0);
    expect_bad_writer(w, "bad_request", "field 'task' is required");
    nx_writer_reply(w, "cancel", NULL, 0);
    nx_writer_str(w, "task", "12");
    expect_bad_writer(w, "bad_request", "field 'task': expected a positive integer");
    nx_writer_reply(w, "cancel", NULL, 0);
    nx_writer_int(w, "task", -3);
    expect_bad_writer(w, "bad_request", "field 'task'");

    nx_writer_reply(w, "load", NULL, 0);
    expect_bad_writer(w, "bad_request", "field 'model' is required");
    nx_writer_reply(w, "pin", NULL, 0);
    nx_writer_str(w, "model", "");
    expect_bad_writer(w, "bad_request", "field 'model': expected a non-empty string");
    nx_writer_reply(w, "history", NULL, 0);
    nx_writer_bool(w, "session", true);
    expect_bad_writer(w, "bad_request", "field 'session': expected a string, got bool");
    nx_writer_destroy(&w);
}

static void test_params_apply_validates(void **state)
{
    nx_params_t p = {0};
    p.has_temperature = true;
    p.temperature = -1.0f;
    nx_sampling_t s = nx_sampling_default();
    nx_err_t err = {0};
    assert_int_equal(nx_params_apply(&p, &s, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "temperature"));

    p = (nx_params_t){.has_max_tokens = true, .max_tokens = 0};
    s = nx_sampling_default();
    assert_int_equal(nx_params_apply(&p, &s, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "max_tokens"));

    p = (nx_params_t){.has_top_p = true, .top_p = 0.5f, .has_seed = true, .seed = 9};
    s = nx_sampling_default();
    uint32_t max_tokens = s.max_tokens;
    assert_int_equal(nx_params_apply(&p, &s, &err), NX_OK);
    assert_float_equal(s.top_p, 0.5, 1e-6);
    assert_true(s.seed == 9);
    assert_int_equal(s.max_tokens, max_tokens); /* untouched without its flag */
}

/* params.max_tokens: the range the error states is exactly the range that parses (0 and one
 * past the top are refused at parse time with that range, not later by another check). */
static int parse_max_tokens(int64_t value, nx_err_t *err)
{
    nx_writer_t *w = nx_writer_new();
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", "a");
    nx_writer_str(w, "input", "hi");
    nx_writer_map_open(w, "params");
    nx_writer_int(w, "max_tokens", value);
    nx_writer_map_close(w);
    nx_request_t req;
    const char *code = NULL;
    int rc = parse_writer(w, &req, &code, err);
    if (rc == NX_OK) {
        assert_true(req.params.has_max_tokens);
        assert_int_equal(req.params.max_tokens, value);
    } else {
        assert_string_equal(code, "bad_request");
    }
    nx_request_clear(&req);
    nx_writer_destroy(&w);
    return rc;
}

#define MAX_TOKENS_TOP 1048576 /* schemas/protocol.md, as generation.max_tokens in an agent */

static void test_max_tokens_range_is_what_is_accepted(void **state)
{
    nx_err_t err = {0};
    char range[64];
    snprintf(range, sizeof range, "expected an integer in 1..%d", MAX_TOKENS_TOP);
    const int64_t refused[] = {0, -1, MAX_TOKENS_TOP + 1, (int64_t)UINT32_MAX};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        err = (nx_err_t){0};
        if (parse_max_tokens(refused[i], &err) == NX_OK)
            fail_msg("max_tokens %lld parsed; the range should be 1..%d", (long long)refused[i],
                     MAX_TOKENS_TOP);
        if (!strstr(err.msg, "field 'params.max_tokens'") || !strstr(err.msg, range))
            fail_msg("max_tokens %lld: message '%s' does not state %s", (long long)refused[i],
                     err.msg, range);
    }
    err = (nx_err_t){0};
    parse_max_tokens(0, &err);
    assert_non_null(strstr(err.msg, "got 0")); /* the value, not just its type */
    assert_int_equal(parse_max_tokens(1, &err), NX_OK);
    assert_int_equal(parse_max_tokens(MAX_TOKENS_TOP, &err), NX_OK);
    /* what parses also applies */
    nx_params_t p = {.has_max_tokens = true, .max_tokens = 1};
    nx_sampling_t s = nx_sampling_default();
    assert_int_equal(nx_params_apply(&p, &s, &err), NX_OK);
}

/* ---- ids and the writer ------------------------------------------------------------------- */

typedef void (*pack_id_fn)(msgpack_packer *pk);
static void id_int(msgpack_packer *pk) { msgpack_pack_int64(pk, -1234567890123LL); }
static void id_str(msgpack_packer *pk)
{
    msgpack_pack_str(pk, 6);
    msgpack_pack_str_body(pk, "req-42", 6);
}
static void id_bin(msgpack_packer *pk)
{
    msgpack_pack_bin(pk, 4);
    msgpack_pack_bin_body(pk, "\x00\xff\x10\x80", 4);
}
static void id_array(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_nil(pk);
    msgpack_pack_map(pk, 1);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "k", 1);
    msgpack_pack_double(pk, 2.5);
}

static void test_id_echo_round_trip(void **state)
{
    pack_id_fn ids[] = {id_int, id_str, id_bin, id_array};
    nx_writer_t *w = nx_writer_new();
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        frame_t f, idf;
        frame_init(&f);
        frame_init(&idf);
        ids[i](&idf.pk);
        msgpack_pack_map(&f.pk, 2);
        pack_str(&f, "id");
        ids[i](&f.pk);
        pack_str(&f, "op");
        pack_str(&f, "ping");

        nx_request_t req;
        const char *code;
        nx_err_t err = {0};
        assert_int_equal(nx_proto_parse(f.buf.data, f.buf.size, 1024, &req, &code, &err), NX_OK);
        assert_int_equal(req.id_len, idf.buf.size);
        assert_memory_equal(req.id, idf.buf.data, idf.buf.size);

        /* echo it in a reply and read the reply back */
        nx_writer_reply(w, "pong", req.id, req.id_len);
        nx_writer_str(w, "version", "0.1");
        size_t len;
        const char *data = nx_writer_data(w, &len);
        msgpack_unpacked un, want;
        msgpack_unpacked_init(&un);
        msgpack_unpacked_init(&want);
        size_t off = 0, off2 = 0;
        assert_int_equal(msgpack_unpack_next(&un, data, len, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, len);
        assert_int_equal(msgpack_unpack_next(&want, idf.buf.data, idf.buf.size, &off2),
                         MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(un.data.type, MSGPACK_OBJECT_MAP);
        assert_int_equal(un.data.via.map.size, 3);
        assert_true(msgpack_object_equal(un.data.via.map.ptr[1].val, want.data));
        msgpack_unpacked_destroy(&un);
        msgpack_unpacked_destroy(&want);
        nx_request_clear(&req);
        msgpack_sbuffer_destroy(&f.buf);
        msgpack_sbuffer_destroy(&idf.buf);
    }
    nx_writer_destroy(&w);
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    fail_msg("no key '%s'", key);
    return NULL;
}

static void assert_str(const msgpack_object *o, const char *want)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, strlen(want));
    assert_memory_equal(o->via.str.ptr, want, o->via.str.size);
}

static void test_writer_round_trip(void **state)
{
    nx_writer_t *w = nx_writer_new();
    for (int pass = 0; pass < 2; pass++) { /* the second pass reuses the buffers */
        nx_writer_reply(w, "status", NULL, 0);
        nx_writer_uint(w, "big", UINT64_MAX);
        nx_writer_int(w, "small", INT64_MIN);
        nx_writer_real(w, "pi", 3.141592653589793);
        nx_writer_bool(w, "yes", true);
        nx_writer_bool(w, "no", false);
        nx_writer_nil(w, "none");
        nx_writer_str(w, "null_str", NULL);
        nx_writer_map_open(w, "pool");
        nx_writer_str(w, "device", "cpu");
        nx_writer_map_open(w, "inner");
        nx_writer_map_close(w); /* an empty map */
        nx_writer_map_close(w);
        nx_writer_array_open(w, "models");
        for (int i = 0; i < 20; i++) { /* past a fixarray's 15 */
            nx_writer_map_open(w, NULL);
            nx_writer_int(w, "i", i);
            nx_writer_array_open(w, "agents");
            nx_writer_str(w, NULL, "a");
            nx_writer_array_close(w);
            nx_writer_map_close(w);
        }
        nx_writer_array_close(w);

        size_t len;
        const char *data = nx_writer_data(w, &len);
        assert_non_null(data);
        msgpack_unpacked un;
        msgpack_unpacked_init(&un);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&un, data, len, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, len);
        const msgpack_object *m = &un.data;
        assert_int_equal(m->via.map.size, 11);
        assert_str(get(m, "op"), "status");
        assert_int_equal(get(m, "id")->type, MSGPACK_OBJECT_NIL);
        assert_true(get(m, "big")->via.u64 == UINT64_MAX);
        assert_int_equal(get(m, "small")->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
        assert_true(get(m, "small")->via.i64 == INT64_MIN);
        assert_true(get(m, "pi")->via.f64 == 3.141592653589793);
        assert_int_equal(get(m, "yes")->type, MSGPACK_OBJECT_BOOLEAN);
        assert_true(get(m, "yes")->via.boolean);
        assert_false(get(m, "no")->via.boolean);
        assert_int_equal(get(m, "none")->type, MSGPACK_OBJECT_NIL);
        assert_int_equal(get(m, "null_str")->type, MSGPACK_OBJECT_NIL);
        const msgpack_object *pool = get(m, "pool");
        assert_int_equal(pool->via.map.size, 2);
        assert_str(get(pool, "device"), "cpu");
        assert_int_equal(get(pool, "inner")->via.map.size, 0);
        const msgpack_object *models = get(m, "models");
        assert_int_equal(models->type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(models->via.array.size, 20);
        for (int i = 0; i < 20; i++) {
            const msgpack_object *e = &models->via.array.ptr[i];
            assert_int_equal(get(e, "i")->via.i64, i);
            assert_int_equal(get(e, "agents")->via.array.size, 1);
        }
        msgpack_unpacked_destroy(&un);
    }
    nx_writer_destroy(&w);
}

static void test_writer_error(void **state)
{
    nx_writer_t *w = nx_writer_new();
    unsigned char id[] = {0x2a};
    nx_writer_str(w, "leftover", "x"); /* reply starts a fresh frame */
    nx_writer_error(w, id, 1, "busy", "the agent's queue is full (64)", 17);
    size_t len;
    const char *data = nx_writer_data(w, &len);
    msgpack_unpacked un;
    msgpack_unpacked_init(&un);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&un, data, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(un.data.via.map.size, 5);
    assert_str(get(&un.data, "op"), "error");
    assert_int_equal(get(&un.data, "id")->via.u64, 42);
    assert_str(get(&un.data, "code"), "busy");
    assert_str(get(&un.data, "message"), "the agent's queue is full (64)");
    assert_int_equal(get(&un.data, "task")->via.i64, 17);
    msgpack_unpacked_destroy(&un);

    nx_writer_error(w, NULL, 0, "bad_msgpack", "no map", 0); /* no task field */
    data = nx_writer_data(w, &len);
    msgpack_unpacked_init(&un);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&un, data, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(un.data.via.map.size, 4);
    assert_int_equal(get(&un.data, "id")->type, MSGPACK_OBJECT_NIL);
    msgpack_unpacked_destroy(&un);
    nx_writer_destroy(&w);
}

/* Every str the writer emits is valid UTF-8, whatever it is given: an error message cut by
 * snprintf in the middle of a character, or raw bytes from a request, must not make the reply
 * undecodable to a strict client (msgpack str is UTF-8 by the spec). */
static void test_writer_keeps_utf8_valid(void **state)
{
    nx_writer_t *w = nx_writer_new();
    const char cut[] = "agent 'a\xc3\xa9\xc3' is not configured";   /* a 2-byte char cut */
    const char raw[] = "key '\xff\xfezz' \xe2\x82 end";              /* stray and short */
    const char good[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"; /* untouched */
    nx_writer_error(w, NULL, 0, "unknown_agent", cut, 0);
    nx_writer_str(w, "raw", raw);
    nx_writer_str(w, "good", good);
    size_t len;
    const char *data = nx_writer_data(w, &len);
    msgpack_unpacked un;
    msgpack_unpacked_init(&un);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&un, data, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_str(get(&un.data, "message"), "agent 'a\xc3\xa9\xef\xbf\xbd' is not configured");
    assert_str(get(&un.data, "raw"),
               "key '\xef\xbf\xbd\xef\xbf\xbdzz' \xef\xbf\xbd\xef\xbf\xbd end");
    assert_str(get(&un.data, "good"), good);
    msgpack_unpacked_destroy(&un);
    nx_writer_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_ops_parse),
        cmocka_unit_test(test_task_parses_every_field),
        cmocka_unit_test(test_other_ops_parse),
        cmocka_unit_test(test_bad_envelopes),
        cmocka_unit_test(test_non_string_key_keeps_id),
        cmocka_unit_test(test_duplicate_id_is_refused),
        cmocka_unit_test(test_bad_ops),
        cmocka_unit_test(test_bad_task_fields),
        cmocka_unit_test(test_task_history),
        cmocka_unit_test(test_task_tools),
        cmocka_unit_test(test_bad_other_fields),
        cmocka_unit_test(test_params_apply_validates),
        cmocka_unit_test(test_max_tokens_range_is_what_is_accepted),
        cmocka_unit_test(test_id_echo_round_trip),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_writer_error),
        cmocka_unit_test(test_writer_keeps_utf8_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
