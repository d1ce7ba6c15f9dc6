/* fuzz_proto.c — libFuzzer target for the wire protocol's request parser: every input is one
 * frame for nx_proto_parse. It must never crash, leak or read out of bounds, and never ask for
 * memory out of proportion to the frame; rejections are fine but must carry a stable code and
 * a message. An accepted request is echoed through the writer (its id verbatim) and the reply
 * must read back as one map, and its params must apply (or be refused) without harm.
 *
 * Build and run (clang with libFuzzer; not part of `make test`):
 *   make fuzz                                   # builds build/fuzz/fuzz_proto
 *   mkdir -p var/fuzz/proto && build/fuzz/fuzz_proto var/fuzz/proto -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nx_engine.h"
#include "proto.h"

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
    size_t len;
    const char *data = nx_writer_data(w, &len);
    if (data) {
        msgpack_unpacked un;
        msgpack_unpacked_init(&un);
        size_t off = 0;
        if (msgpack_unpack_next(&un, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
            un.data.type != MSGPACK_OBJECT_MAP)
            __builtin_trap(); /* the writer made a frame msgpack-c cannot read */
        msgpack_unpacked_destroy(&un);
    }
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
    if (rc == NX_OK) {
        echo(&req);
        nx_sampling_t s = nx_sampling_default();
        (void)nx_params_apply(&req.params, &s, &err);
    }
    nx_request_clear(&req);
    return 0;
}
