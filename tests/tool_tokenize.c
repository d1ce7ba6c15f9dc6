/* tool_tokenize.c — helper for tests/test_tokenizer.py: runs the tokenizer over a JSON list
 * of cases in one process and prints one JSON object per case per line.
 *
 *   tool_tokenize encode MODEL_DIR CORPUS.json
 *       {"ids": [...], "decoded": "...", "pieces": ["...", ...], "flushed": "..."} per string
 *       (pieces: nx_detok_push per id; every piece must be valid UTF-8), or {"error": "..."}
 *   tool_tokenize chat MODEL_DIR CASES.json
 *       {"text": "...", "ids": [...]} per {"messages", "add_generation_prompt", "thinking",
 *       "tools"} (messages in OpenAI's shape: tool_calls with arguments as JSON text,
 *       reasoning_content, tool_call_id, name)
 *   tool_tokenize stop MODEL_DIR      the stop ids of the detected template, as a JSON list
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_engine.h"

static json_t *ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static void print_line(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
    puts(s ? s : "{\"error\": \"output is not valid UTF-8\"}");
    free(s);
    json_decref(obj);
}

static json_t *stream(const nx_tokenizer_t *tok, const int32_t *ids, size_t n, json_t *obj)
{
    nx_detok_t d;
    nx_detok_init(&d, tok, false);
    char piece[4096];
    json_t *pieces = json_array();
    for (size_t i = 0; i < n; i++) {
        size_t len = nx_detok_push(&d, ids[i], piece, sizeof piece);
        json_t *s = json_stringn(piece, len);
        if (!s) {
            json_decref(pieces);
            json_object_set_new(obj, "error", json_sprintf("piece %zu is not valid UTF-8", i));
            return obj;
        }
        json_array_append_new(pieces, s);
    }
    size_t len = nx_detok_flush(&d, piece, sizeof piece);
    json_object_set_new(obj, "pieces", pieces);
    json_object_set_new(obj, "flushed", json_stringn(piece, len));
    return obj;
}

static json_t *encode_case(const nx_tokenizer_t *tok, const char *text, size_t len)
{
    nx_err_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    char *decoded = NULL;
    json_t *obj = json_object();
    if (nx_tokenizer_encode(tok, text, len, &ids, &n, &err) != NX_OK ||
        nx_tokenizer_decode(tok, ids, n, false, &decoded, &err) != NX_OK) {
        json_object_set_new(obj, "error", json_string(err.msg));
        free(ids);
        return obj;
    }
    json_object_set_new(obj, "ids", ids_json(ids, n));
    json_object_set_new(obj, "decoded", json_string(decoded));
    stream(tok, ids, n, obj);
    free(decoded);
    free(ids);
    return obj;
}

static json_t *chat_case(const nx_tokenizer_t *tok, json_t *c)
{
    json_t *msgs_json = json_object_get(c, "messages"), *m, *obj = json_object();
    size_t count = json_array_size(msgs_json), i;
    nx_chat_msg_t *msgs = calloc(count ? count : 1, sizeof *msgs);
    nx_chat_tool_call_t *calls = calloc(64, sizeof *calls);
    size_t n_calls = 0;
    json_array_foreach(msgs_json, i, m) {
        msgs[i].role = json_string_value(json_object_get(m, "role"));
        msgs[i].content = json_string_value(json_object_get(m, "content"));
        msgs[i].reasoning_content = json_string_value(json_object_get(m, "reasoning_content"));
        msgs[i].tool_call_id = json_string_value(json_object_get(m, "tool_call_id"));
        msgs[i].name = json_string_value(json_object_get(m, "name"));
        json_t *tc = json_object_get(m, "tool_calls"), *c;
        size_t k;
        msgs[i].tool_calls = calls + n_calls;
        json_array_foreach(tc, k, c) {
            json_t *fn = json_object_get(c, "function");
            if (n_calls == 64)
                break;
            calls[n_calls++] = (nx_chat_tool_call_t){
                .id = json_string_value(json_object_get(c, "id")),
                .name = json_string_value(json_object_get(fn, "name")),
                .arguments = json_string_value(json_object_get(fn, "arguments"))};
            msgs[i].n_tool_calls++;
        }
    }
    char *tools = json_object_get(c, "tools") ? json_dumps(json_object_get(c, "tools"),
                                                           JSON_COMPACT) : NULL;
    nx_chat_opts_t opts = {
        .kind = NX_CHAT_AUTO,
        .thinking = (int)json_integer_value(json_object_get(c, "thinking")),
        .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
        .tools_json = tools};
    nx_err_t err = {0};
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (nx_chat_render(tok, &opts, msgs, count, &text, &err) != NX_OK ||
        nx_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err) != NX_OK) {
        json_object_set_new(obj, "error", json_string(err.msg));
    } else {
        json_object_set_new(obj, "text", json_string(text));
        json_object_set_new(obj, "ids", ids_json(ids, n));
    }
    free(ids);
    free(text);
    free(msgs);
    free(calls);
    free(tools);
    return obj;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tool_tokenize encode|chat|stop MODEL_DIR [CASES.json]\n");
        return 2;
    }
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(argv[2], &err);
    if (!tok) {
        fprintf(stderr, "tool_tokenize: %s\n", err.msg);
        return 1;
    }
    if (strcmp(argv[1], "stop") == 0) {
        int32_t ids[8];
        size_t n = nx_chat_stop_ids(tok, NX_CHAT_AUTO, ids, 8);
        printf("{\"kind\": \"%s\", \"ids\": [", nx_chat_kind_name(nx_chat_detect(tok)));
        for (size_t i = 0; i < n; i++)
            printf(i ? ", %d" : "%d", ids[i]);
        printf("]}\n");
        nx_tokenizer_destroy(&tok);
        return 0;
    }
    json_error_t jerr;
    json_t *cases = argc > 3 ? json_load_file(argv[3], JSON_ALLOW_NUL, &jerr) : NULL;
    if (!json_is_array(cases)) {
        fprintf(stderr, "tool_tokenize: %s: not a JSON list\n", argc > 3 ? argv[3] : "?");
        nx_tokenizer_destroy(&tok);
        return 2;
    }
    bool chat = strcmp(argv[1], "chat") == 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        print_line(chat ? chat_case(tok, c)
                        : encode_case(tok, json_string_value(c), json_string_length(c)));
    }
    json_decref(cases);
    nx_tokenizer_destroy(&tok);
    return 0;
}
