/* fuzz_openai.c — libFuzzer target for the HTTP front's request translation
 * (nexus/http/http_translate.c): the first byte picks the endpoint (even: chat/completions,
 * odd: completions), the rest is the request body. A body jansson reads must be translated or
 * refused with a sentence, never crash or leak; and a translated request must be a frame the
 * router's own parser (nx_proto_parse) reads as a `task` for the named agent with the same
 * stream flag, or refuses only as bad_request (a value out of the protocol's range, such as
 * max_tokens or too many stop strings): the front never sends the router a malformed frame.
 * A task without input is one whose history ends with tool results (answering them).
 * The seed corpus (tests/fuzz/corpus/fuzz_openai, tests/fuzz/make_seeds.py) holds a chat
 * request with every field the front reads, a tool conversation and a completion.
 *
 *   make build/fuzz/fuzz_openai && build/fuzz/fuzz_openai tests/fuzz/corpus/fuzz_openai
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_translate.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return 0; /* jansson's refusal: the front answers 400 with its words */
    nx__oa_req_t oa = {.api = (data[0] & 1) ? NX__API_COMPLETIONS : NX__API_CHAT};
    nx_writer_t *w = nx_writer_new();
    char why[256] = "";
    if (w && nx__openai_translate(root, &oa, w, why, sizeof why)) {
        size_t len;
        const void *frame = nx_writer_data(w, &len);
        nx_request_t req;
        const char *code = NULL;
        nx_err_t err = {0};
        int rc = frame ? nx_proto_parse(frame, len, 1u << 30, &req, &code, &err) : NX_OK;
        if (frame && rc == NX_OK &&
            (req.op != NX_OP_TASK || !req.agent || strcmp(req.agent, oa.model) != 0 ||
             req.stream != oa.stream || (!req.input && !req.no_input)))
            __builtin_trap(); /* the frame says something else than the request */
        if (frame && rc != NX_OK && (!code || strcmp(code, "bad_request") != 0))
            __builtin_trap(); /* a frame the router cannot even read */
        if (frame)
            nx_request_clear(&req);
    } else if (w && !why[0]) {
        __builtin_trap(); /* a refusal says why */
    }
    free(oa.model);
    nx_writer_destroy(&w);
    json_decref(root);
    return 0;
}
