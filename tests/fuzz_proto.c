/* fuzz_proto.c — libFuzzer target for the wire protocol's request parser: every input is one
 * frame for nx_proto_parse. It must never crash, leak or read out of bounds, and never ask for
 * memory out of proportion to the frame; rejections are fine but must carry a stable code and
 * a message. An accepted request is echoed through the writer (its id and every field of
 * every op: agent, input, history, session, model, stream, route, task, limit, params with its stop
 * strings) and the reply must read back as one map; its params must apply (or be refused)
 * without harm. The seed corpus (tests/fuzz/corpus/fuzz_proto) holds one request of each op
 * with all its fields, so the fuzzer starts past the op names.
 *
 * Build and run (clang with libFuzzer; `make fuzz-smoke` runs it briefly):
 *   make fuzz                                   # builds build/fuzz/fuzz_proto
 *   mkdir -p var/fuzz/proto && cp -r tests/fuzz/corpus/fuzz_proto/. var/fuzz/proto/
 *   build/fuzz/fuzz_proto var/fuzz/proto -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nx_engine.h"
#include "proto.h"

/* The writer's frame must read back as exactly one msgpack map. */
static void check_frame(nx_writer_t *w)
{
    size_t len;
    const char *data = nx_writer_data(w, &len);
    if (!data)
        return;
    msgpack_unpacked un;
    msgpack_unpacked_init(&un);
    size_t off = 0;
    if (msgpack_unpack_next(&un, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        un.data.type != MSGPACK_OBJECT_MAP)
        __builtin_trap(); /* the writer made a frame msgpack-c cannot read */
    msgpack_unpacked_destroy(&un);
}

/* A refusal's reply echoes the id the parser kept (also from frames it refused). */
static void echo_error(const nx_request_t *req, const char *code, const char *message)
{
    nx_writer_t *w = nx_writer_new();
    if (!w)
        return;
    nx_writer_error(w, req->id, req->id_len, code, message, 0);
    check_frame(w);
    nx_writer_destroy(&w);
}

static void echo(const nx_request_t *req)
{
    nx_writer_t *w = nx_writer_new();
    if (!w)
        return;
    nx_writer_reply(w, nx_op_name(req->op), req->id, req->id_len);
    nx_writer_str(w, "agent", req->agent);
    nx_writer_array_open(w, "route");
    for (size_t i = 0; i < req->route_count; i++)
        nx_writer_str(w, NULL, req->route[i]);
    nx_writer_array_close(w);
    nx_writer_str(w, "input", req->input);
    nx_writer_array_open(w, "history");
    for (size_t i = 0; i < req->history_count; i++) {
        nx_writer_map_open(w, NULL);
        nx_writer_str(w, "role", req->history[i].role);
        nx_writer_str(w, "content", req->history[i].content);
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
    nx_writer_str(w, "session", req->session);
    nx_writer_str(w, "model", req->model);
    nx_writer_bool(w, "stream", req->stream);
    nx_writer_int(w, "task", req->task);
    nx_writer_uint(w, "limit", req->limit);
    const nx_params_t *p = &req->params;
    nx_writer_map_open(w, "params");
    if (p->has_max_tokens)
        nx_writer_uint(w, "max_tokens", p->max_tokens);
    if (p->has_temperature)
        nx_writer_real(w, "temperature", p->temperature);
    if (p->has_top_p)
        nx_writer_real(w, "top_p", p->top_p);
    if (p->has_top_k)
        nx_writer_uint(w, "top_k", p->top_k);
    if (p->has_min_p)
        nx_writer_real(w, "min_p", p->min_p);
    if (p->has_repetition_penalty)
        nx_writer_real(w, "repetition_penalty", p->repetition_penalty);
    if (p->has_seed)
        nx_writer_uint(w, "seed", p->seed);
    nx_writer_array_open(w, "stop");
    for (size_t i = 0; p->has_stop && i < p->stop_count; i++)
        nx_writer_str(w, NULL, p->stop[i]);
    nx_writer_array_close(w);
    nx_writer_map_close(w);
    check_frame(w);
    nx_writer_destroy(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nx_request_t req;
    const char *code = NULL;
    nx_err_t err = {0};
    int rc = nx_proto_parse(data, size, 1 << 20, &req, &code, &err);
    if (rc != NX_OK && (!code || !err.msg[0]))
        __builtin_trap(); /* every rejection has a code and a sentence */
    if (rc != NX_OK)
        echo_error(&req, code, err.msg);
    if (rc == NX_OK) {
        echo(&req);
        nx_sampling_t s = nx_sampling_default();
        (void)nx_params_apply(&req.params, &s, &err);
    }
    nx_request_clear(&req);
    return 0;
}
