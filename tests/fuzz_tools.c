/* fuzz_tools.c — libFuzzer target for the tool-call layer (agents/tools*.c): the streaming
 * parser and the tools grammar. Input layout: byte 0's low bit picks the mode.
 *   parser (bit 0 clear): bit 1 the family (Hermes, Llama 3 JSON), bit 2 thinking, bit 3
 *     in_thinking, byte 1 a split stride; the rest is generated text. The text parsed in one
 *     piece and fed in pieces of the stride (then byte by byte) must give the same content,
 *     reasoning and calls, and the streamed pieces must add up to them.
 *   grammar (bit 0 set): bits 1-2 tool_choice, bit 3 parallel; the rest is a tools array.
 *     A refusal needs a message; a grammar must give a matcher.
 * It must never crash, leak or read out of bounds.
 *
 * Build and run (clang with libFuzzer; from the repository root):
 *   make build/fuzz/fuzz_tools
 *   mkdir -p var/fuzz/tools && cp -r tests/fuzz/corpus/fuzz_tools/. var/fuzz/tools/
 *   build/fuzz/fuzz_tools var/fuzz/tools -max_total_time=60
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

typedef struct result {
    char *content, *reasoning, *calls; /* calls: "name\x01args\x01complete\x02" ... */
    size_t content_len, reasoning_len, calls_len;
} result_t;

static void append(char **s, size_t *len, const char *t, size_t n)
{
    char *grown = realloc(*s, *len + n + 1);
    if (!grown)
        abort(); /* the harness's own memory */
    memcpy(grown + *len, t, n);
    *len += n;
    grown[*len] = '\0';
    *s = grown;
}

static void run(const nx_tools_parser_opts_t *o, const char *text, size_t len, size_t stride,
                result_t *r)
{
    nx_err_t err = {0};
    nx_tools_parser_t *p = nx_tools_parser_new(o, &err);
    if (!p)
        abort();
    char *streamed_content = NULL, *streamed_args = NULL;
    size_t sc_len = 0, sa_len = 0;
    const nx_tools_event_t *ev;
    size_t n;
    for (size_t at = 0, piece; at <= len; at += piece) {
        piece = at + stride <= len ? stride : len - at;
        int rc = at < len ? nx_tools_parser_feed(p, text + at, piece, &ev, &n, &err)
                          : nx_tools_parser_finish(p, &ev, &n, &err);
        if (rc != NX_OK)
            abort();
        size_t n_calls_now;
        const nx_tools_call_t *now = nx_tools_parser_calls(p, &n_calls_now);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].kind == NX_TOOLS_EV_CONTENT)
                append(&streamed_content, &sc_len, ev[i].text, ev[i].len);
            if (ev[i].kind == NX_TOOLS_EV_ARGS)
                append(&streamed_args, &sa_len, ev[i].text, ev[i].len);
            /* a CALL's id is readable and is its call's (the calls list holds named ones) */
            if (ev[i].kind == NX_TOOLS_EV_CALL &&
                (ev[i].index >= n_calls_now || strcmp(ev[i].id, now[ev[i].index].id) != 0))
                abort();
        }
        if (at == len)
            break;
    }
    const char *c = nx_tools_parser_content(p, &r->content_len);
    r->content = malloc(r->content_len + 1);
    memcpy(r->content, c, r->content_len + 1);
    const char *rs = nx_tools_parser_reasoning(p, &r->reasoning_len);
    r->reasoning = malloc(r->reasoning_len + 1);
    memcpy(r->reasoning, rs, r->reasoning_len + 1);
    if (sc_len != r->content_len || (sc_len && memcmp(streamed_content, r->content, sc_len)))
        abort(); /* the content pieces add up to the content */
    size_t n_calls;
    const nx_tools_call_t *calls = nx_tools_parser_calls(p, &n_calls);
    r->calls = NULL;
    r->calls_len = 0;
    char *all_args = NULL;
    size_t aa_len = 0;
    for (size_t i = 0; i < n_calls; i++) {
        append(&r->calls, &r->calls_len, calls[i].name, strlen(calls[i].name));
        append(&r->calls, &r->calls_len, "\x01", 1);
        append(&r->calls, &r->calls_len, calls[i].arguments, strlen(calls[i].arguments));
        append(&r->calls, &r->calls_len, calls[i].complete ? "\x01y\x02" : "\x01n\x02", 3);
        append(&all_args, &aa_len, calls[i].arguments, strlen(calls[i].arguments));
        if (strncmp(calls[i].id, "call_", 5) != 0 || strlen(calls[i].id) != 29)
            abort();
    }
    /* arguments may contain NULs from the text: compare the streamed bytes by length only
     * where the calls' strings are whole */
    if (aa_len > sa_len)
        abort();
    free(all_args);
    free(streamed_content);
    free(streamed_args);
    nx_tools_parser_destroy(&p);
}

static bool same(const result_t *a, const result_t *b)
{
    return a->content_len == b->content_len && !memcmp(a->content, b->content, a->content_len) &&
           a->reasoning_len == b->reasoning_len &&
           !memcmp(a->reasoning, b->reasoning, a->reasoning_len) && a->calls_len == b->calls_len &&
           (!a->calls_len || !memcmp(a->calls, b->calls, a->calls_len));
}

static void release(result_t *r)
{
    free(r->content);
    free(r->reasoning);
    free(r->calls);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0];
    const char *rest = (const char *)data + 2;
    size_t len = size - 2;
    if (mode & 1) {
        nx_tools_request_t req = {.family = mode & 16 ? NX_TOOLS_LLAMA3_JSON : NX_TOOLS_HERMES,
                                  .tools_json = rest, .tools_len = len,
                                  .choice = (nx_tool_choice_t)((mode >> 1) & 3),
                                  .choice_name = "f", .parallel = (mode & 8) != 0};
        nx_err_t err = {0};
        nx_gram_t *g = nx_tools_grammar(&req, &err);
        if (!g && req.choice != NX_TOOL_CHOICE_NONE && (err.code == NX_OK || !err.msg[0]))
            abort();
        if (g) {
            nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, &err);
            if (!m)
                abort();
            nx_gram_matcher_advance(m, "<tool_call>\n{\"name\": \"f\"", 24, NULL);
            nx_gram_matcher_destroy(&m);
        }
        nx_gram_destroy(&g);
        return 0;
    }
    nx_tools_parser_opts_t o = {.family = mode & 2 ? NX_TOOLS_LLAMA3_JSON : NX_TOOLS_HERMES,
                                .thinking = (mode & 4) != 0, .in_thinking = (mode & 8) != 0,
                                .seed = 1};
    size_t stride = data[1] ? data[1] : 1;
    result_t whole, split, bytes;
    run(&o, rest, len, len ? len : 1, &whole);
    run(&o, rest, len, stride, &split);
    run(&o, rest, len, 1, &bytes);
    if (!same(&whole, &split) || !same(&whole, &bytes))
        abort();
    release(&whole);
    release(&split);
    release(&bytes);
    return 0;
}
