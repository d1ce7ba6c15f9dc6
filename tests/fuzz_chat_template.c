/* fuzz_chat_template.c — libFuzzer target for chat rendering (nx_chat_render) and what the
 * daemon does with its result: the prompt is encoded with the same tokenizer, and the stop ids
 * are looked up. Input layout: byte 0 picks the tokenizer (the committed tiny Qwen2 or Llama
 * one, whose tokenizer_config.json templates are ChatML and Llama 3), byte 1 the template kind
 * (auto, chatml, llama3, raw, or an unknown one), thinking (-1, 0, 1) and the generation
 * prompt; byte 0's bit 1 offers a tools array; the rest is messages as
 * "role\0content\0role\0content...". Roles and contents are the fuzzer's, invalid UTF-8 and
 * template markers included. It must never crash, leak or read out of bounds; a refusal needs
 * a message; a rendered prompt holds the tools, every role but "tool" (a result goes into a
 * user turn, or an ipython one) and every (trimmed, for Llama 3) content verbatim but Llama 3's
 * tool results (JSON-encoded, as its template writes them).
 *
 * Build and run (clang with libFuzzer; from the repository root, which holds the fixtures):
 *   make fuzz                                   # builds build/fuzz/fuzz_chat_template
 *   mkdir -p var/fuzz/chat && cp -r tests/fuzz/corpus/fuzz_chat_template/. var/fuzz/chat/
 *   build/fuzz/fuzz_chat_template var/fuzz/chat -max_total_time=60
 * NX_FUZZ_FIXTURES overrides where tests/fixtures/tokenizer is.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_engine.h"

enum { MAX_MSGS = 64 };
static nx_tokenizer_t *toks[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *root = getenv("NX_FUZZ_FIXTURES") ? getenv("NX_FUZZ_FIXTURES")
                                                  : "tests/fixtures/tokenizer";
    const char *names[2] = {"qwen2_tiny", "llama_tiny"};
    for (int i = 0; i < 2; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        nx_err_t err = {0};
        if (!(toks[i] = nx_tokenizer_load(dir, &err))) {
            fprintf(stderr, "fuzz_chat_template: %s: %s (run from the repository root or set "
                    "NX_FUZZ_FIXTURES)\n", dir, err.msg);
            abort();
        }
    }
    return 0;
}

static bool is_trim_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Is content (trimmed when asked) inside text? */
static bool holds(const char *text, const char *content, bool trim)
{
    size_t n = strlen(content);
    while (trim && n && is_trim_space(content[0]))
        content++, n--;
    while (trim && n && is_trim_space(content[n - 1]))
        n--;
    return memmem(text, strlen(text), content, n) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const nx_tokenizer_t *tok = toks[data[0] & 1];
    nx_chat_opts_t opts = {
        .kind = (nx_chat_kind_t)(data[1] % 5), /* 4: a kind no template has */
        .thinking = (int)((data[1] >> 3) % 3) - 1,
        .add_generation_prompt = (data[1] >> 5) & 1,
        .tools_json = data[0] & 2 ? "[{\"type\":\"function\",\"function\":{\"name\":"
                                    "\"fz_tool\",\"parameters\":{\"x\":[1.5,\"\\u00e9\"]}}}]"
                                  : NULL,
    };
    /* the strings: a NUL-terminated copy split at NULs */
    char *buf = malloc(size - 2 + 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 2, size - 2);
    buf[size - 2] = '\0';
    nx_chat_msg_t msgs[MAX_MSGS];
    size_t count = 0;
    for (char *p = buf, *end = buf + (size - 2); p < end && count < MAX_MSGS;) {
        msgs[count] = (nx_chat_msg_t){0};
        msgs[count].role = p;
        p += strlen(p) + 1;
        msgs[count].content = p < end ? p : ""; /* a trailing role gets an empty content */
        if (p < end)
            p += strlen(p) + 1;
        count++;
    }
    char *text = NULL;
    nx_err_t err = {0};
    int rc = nx_chat_render(tok, &opts, msgs, count, &text, &err);
    if (rc != NX_OK) {
        if (!err.msg[0] || text)
            __builtin_trap(); /* a refusal says why and returns nothing */
        goto out;
    }
    nx_chat_kind_t kind = opts.kind == NX_CHAT_AUTO ? nx_chat_detect(tok) : opts.kind;
    if (opts.tools_json && kind != NX_CHAT_RAW && !strstr(text, "\"fz_tool\""))
        __builtin_trap(); /* the tools went missing */
    for (size_t i = 0; i < count; i++) {
        bool result = strcmp(msgs[i].role, "tool") == 0 ||
                      (kind == NX_CHAT_LLAMA3 && strcmp(msgs[i].role, "ipython") == 0);
        if (kind != NX_CHAT_RAW && !result && !holds(text, msgs[i].role, false))
            __builtin_trap(); /* a role went missing */
        if (!(result && kind == NX_CHAT_LLAMA3) &&
            !holds(text, msgs[i].content, kind == NX_CHAT_LLAMA3))
            __builtin_trap(); /* a content went missing */
    }
    /* what the daemon does next: encode the prompt (refused only for invalid UTF-8) */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = nx_tokenizer_encode(tok, text, strlen(text), &ids, &n_ids, &err);
    if (rc != NX_OK && (rc != NX_EINVAL || !err.msg[0]))
        __builtin_trap();
    free(ids);
    int32_t stop[16];
    if (nx_chat_stop_ids(tok, kind, stop, 16) > 16)
        __builtin_trap();
    free(text);
out:
    free(buf);
    return 0;
}
