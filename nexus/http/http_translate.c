/* http_translate.c — an OpenAI chat/completions or completions request (JSON) as the `task`
 * request a ZeroMQ client would send (msgpack, schemas/protocol.md). No I/O: it is fuzzed on its
 * own (tests/fuzz_openai.c).
 *
 * The mapping (README: OpenAI-compatible HTTP):
 *   model -> agent (its system prompt, generation defaults, memory and pipeline apply);
 *   messages -> the last message (it must be the user's) is the task's input, the user,
 *     assistant and tool messages before it its `history` (protocol.md), so a client that
 *     resends the conversation gets a multi-turn prompt; when the last message is a tool
 *     result, there is no input and the history ends with it; system and developer messages
 *     are left out: the agent's system prompt is the one that applies (an agent is a persona,
 *     not a model);
 *   tools, tool_choice, parallel_tool_calls -> the task's fields as they are;
 *   prompt (completions) -> input; user -> session; max_tokens (or max_completion_tokens),
 *     temperature, top_p, seed, stop, and the common extensions top_k, min_p,
 *     repetition_penalty -> params (the router validates them as for any client);
 *   stream -> stream, stream_options.include_usage -> a last chunk with the usage;
 *   response_format -> response_format as is (json_object, json_schema strict or not; the
 *     router compiles the schema: a keyword it cannot enforce is a 400 naming it and its JSON
 *     pointer, never an unconstrained answer); the answer's content is the JSON text.
 * Other OpenAI fields (logprobs, penalties...) are ignored, except n other than 1,
 * which cannot be honoured and is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_translate.h"

/* ------------------------------------------------------------------------------------------
 * The request
 */
#define BAD(...) (snprintf(why, cap, __VA_ARGS__), false)

/* A message's content: a string, or a list of {"type": "text", "text": ...} parts joined.
 * NULL (with why) otherwise. Caller frees. */
static char *content_text(json_t *content, size_t index, char *why, size_t cap)
{
    if (json_is_string(content))
        return strdup(json_string_value(content));
    if (!json_is_array(content)) {
        snprintf(why, cap, "messages[%zu].content: expected a string or a list of text parts",
                 index);
        return NULL;
    }
    size_t len = 0, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(json_object_get(part, "type")) ||
            strcmp(json_string_value(json_object_get(part, "type")), "text") != 0 ||
            !json_is_string(text)) {
            snprintf(why, cap, "messages[%zu].content[%zu]: only text parts are supported",
                     index, i);
            return NULL;
        }
        len += json_string_length(text);
    }
    char *out = malloc(len + 1), *p = out;
    if (!out) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(p, json_string_value(text), json_string_length(text));
        p += json_string_length(text);
    }
    *p = 0;
    return out;
}

/* One earlier message as a history turn: user, assistant (its tool_calls as they are, content
 * null or absent when it only called) or tool (tool_call_id, name). */
static bool write_turn(json_t *m, size_t i, const char *role, nx_writer_t *w, char *why,
                       size_t cap)
{
    json_t *content = json_object_get(m, "content");
    json_t *calls = strcmp(role, "assistant") == 0 ? json_object_get(m, "tool_calls") : NULL;
    if (calls && !json_is_null(calls) && !json_is_array(calls))
        return BAD("messages[%zu].tool_calls: expected a list of calls", i);
    bool has_calls = json_array_size(calls) > 0;
    char *text = NULL;
    if (!(has_calls && (!content || json_is_null(content))) &&
        !(text = content_text(content, i, why, cap)))
        return false;
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "role", role);
    if (text)
        nx_writer_str(w, "content", text);
    free(text);
    if (has_calls)
        nx_writer_json(w, "tool_calls", calls);
    if (strcmp(role, "tool") == 0) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        const char *name = json_string_value(json_object_get(m, "name"));
        if (id)
            nx_writer_str(w, "tool_call_id", id);
        if (name)
            nx_writer_str(w, "name", name);
    }
    nx_writer_map_close(w);
    return true;
}

/* messages -> "input" and "history" in w. The last message (system ones aside) is the user's
 * (the input) or a tool result (then there is no input: the history ends with the results). */
static bool write_messages(json_t *messages, nx_writer_t *w, char *why, size_t cap)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return BAD("messages: expected a non-empty list of {role, content}");
    size_t n = json_array_size(messages), last = n, turns = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role)
            return BAD("messages[%zu]: expected an object with a string role", i);
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
            continue; /* the agent's system prompt applies */
        if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
            strcmp(role, "tool") != 0)
            return BAD("messages[%zu].role: '%.32s' is not supported (user, assistant, tool, "
                       "system)", i, role);
        last = i;
        turns++;
    }
    const char *last_role =
        last == n ? NULL
                  : json_string_value(json_object_get(json_array_get(messages, last), "role"));
    if (!last_role || (strcmp(last_role, "user") != 0 && strcmp(last_role, "tool") != 0))
        return BAD("messages: the last message (system messages aside) must be the user's or "
                   "a tool result");
    bool answers_tools = strcmp(last_role, "tool") == 0;
    if (!answers_tools) {
        char *input = content_text(json_object_get(json_array_get(messages, last), "content"),
                                   last, why, cap);
        if (!input)
            return false;
        nx_writer_str(w, "input", input);
        free(input);
        if (turns < 2)
            return true;
    }
    size_t end = answers_tools ? last + 1 : last;
    nx_writer_array_open(w, "history");
    for (size_t i = 0; i < end; i++) {
        json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
            continue;
        if (!write_turn(m, i, role, w, why, cap)) {
            nx_writer_array_close(w);
            return false;
        }
    }
    nx_writer_array_close(w);
    return true;
}

/* tools, tool_choice, parallel_tool_calls -> the task's fields as they are (the router checks
 * them: a parameters schema it cannot enforce is a 400 naming tools[i] and the keyword). */
static bool write_tools(json_t *root, nx_writer_t *w, char *why, size_t cap)
{
    json_t *tools = json_object_get(root, "tools");
    if (!tools || json_is_null(tools))
        return true;
    if (!json_is_array(tools))
        return BAD("tools: expected a list of {type: \"function\", function: {...}}");
    if (json_array_size(tools) == 0)
        return true;
    nx_writer_json(w, "tools", tools);
    json_t *choice = json_object_get(root, "tool_choice");
    if (choice && !json_is_null(choice)) {
        if (!json_is_string(choice) && !json_is_object(choice))
            return BAD("tool_choice: expected \"auto\", \"none\", \"required\" or "
                       "{type: \"function\", function: {name}}");
        nx_writer_json(w, "tool_choice", choice);
    }
    json_t *parallel = json_object_get(root, "parallel_tool_calls");
    if (parallel && !json_is_null(parallel)) {
        if (!json_is_boolean(parallel))
            return BAD("parallel_tool_calls: expected a boolean");
        nx_writer_bool(w, "parallel_tool_calls", json_is_true(parallel));
    }
    return true;
}

static bool write_prompt(json_t *prompt, nx_writer_t *w, char *why, size_t cap)
{
    if (json_is_array(prompt) && json_array_size(prompt) == 1)
        prompt = json_array_get(prompt, 0);
    if (!json_is_string(prompt))
        return BAD("prompt: expected a string (or a list of one string)");
    nx_writer_str(w, "input", json_string_value(prompt));
    return true;
}

/* The generation fields -> "params". */
static bool write_params(json_t *root, nx_writer_t *w, nx__oa_req_t *oa, char *why, size_t cap)
{
    static const char *const numbers[] = {"temperature", "top_p", "min_p",
                                          "repetition_penalty"};
    nx_writer_map_open(w, "params");
    bool ok = true;
    json_t *v = json_object_get(root, "max_completion_tokens");
    if (!v || json_is_null(v))
        v = json_object_get(root, "max_tokens");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            ok = BAD("max_tokens: expected a positive integer");
        else {
            nx_writer_uint(w, "max_tokens", (uint64_t)json_integer_value(v));
        }
    }
    for (size_t i = 0; ok && i < sizeof numbers / sizeof numbers[0]; i++) {
        v = json_object_get(root, numbers[i]);
        if (v && !json_is_null(v) && !json_is_number(v))
            ok = BAD("%s: expected a number", numbers[i]);
        else if (v && !json_is_null(v))
            nx_writer_real(w, numbers[i], json_number_value(v));
    }
    const char *const ints[] = {"seed", "top_k"};
    for (size_t i = 0; ok && i < 2; i++) {
        v = json_object_get(root, ints[i]);
        if (v && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 0))
            ok = BAD("%s: expected a non-negative integer", ints[i]);
        else if (v && !json_is_null(v))
            nx_writer_uint(w, ints[i], (uint64_t)json_integer_value(v));
    }
    v = json_object_get(root, "stop");
    if (ok && json_is_string(v)) {
        nx_writer_array_open(w, "stop");
        nx_writer_str(w, NULL, json_string_value(v));
        nx_writer_array_close(w);
    } else if (ok && json_is_array(v)) {
        size_t i;
        json_t *s;
        json_array_foreach(v, i, s) if (!json_is_string(s)) ok = BAD("stop[%zu]: expected a "
                                                                     "string", i);
        if (ok && json_array_size(v)) {
            nx_writer_array_open(w, "stop");
            json_array_foreach(v, i, s) nx_writer_str(w, NULL, json_string_value(s));
            nx_writer_array_close(w);
        }
    } else if (ok && v && !json_is_null(v)) {
        ok = BAD("stop: expected a string or a list of strings");
    }
    nx_writer_map_close(w);
    return ok;
}

/* response_format -> the task's response_format (proto_schema.c reads it); "text" is the
 * default and adds nothing. */
static bool write_response_format(json_t *root, nx_writer_t *w, char *why, size_t cap)
{
    json_t *rf = json_object_get(root, "response_format");
    if (!rf || json_is_null(rf))
        return true;
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!json_is_object(rf) || !type)
        return BAD("response_format: expected an object with a string type");
    if (strcmp(type, "text") == 0)
        return true;
    if (strcmp(type, "json_object") != 0 && strcmp(type, "json_schema") != 0)
        return BAD("response_format.type: '%.32s' is not supported (text, json_object, "
                   "json_schema)", type);
    json_t *js = json_object_get(rf, "json_schema");
    if (strcmp(type, "json_schema") == 0 && !json_is_object(js))
        return BAD("response_format.json_schema: expected an object {name, schema, strict}");
    nx_writer_json(w, "response_format", rf);
    return true;
}

const char *nx__openai_answer_content(const char *text, char **reasoning_out)
{
    *reasoning_out = NULL;
    const char *s = text;
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    const char *end = strncmp(s, "<think>", 7) == 0 ? strstr(s + 7, "</think>") : NULL;
    if (!end || !(*reasoning_out = strndup(s + 7, (size_t)(end - s - 7))))
        return text;
    for (s = end + 8; *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';)
        s++;
    return s;
}

bool nx__openai_translate(json_t *root, nx__oa_req_t *oa, nx_writer_t *w, char *why, size_t cap)
{
    if (!json_is_object(root))
        return BAD("the body must be a JSON object");
    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0)
        return BAD("model: expected the name of an agent (GET /v1/models lists them)");
    json_t *v = json_object_get(root, "n");
    if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        return BAD("n: only 1 choice per request is supported");
    v = json_object_get(root, "stream");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return BAD("stream: expected a boolean");
    oa->stream = json_is_true(v);
    oa->include_usage =
        json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    v = json_object_get(root, "user");
    if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) == 0))
        return BAD("user: expected a non-empty string (it names the session)");
    if (!(oa->model = strdup(json_string_value(model))))
        return BAD("out of memory");
    nx_writer_reply(w, "task", NULL, 0);
    nx_writer_str(w, "agent", oa->model);
    nx_writer_bool(w, "stream", oa->stream);
    if (v && json_is_string(v))
        nx_writer_str(w, "session", json_string_value(v));
    bool ok = oa->api == NX__API_CHAT ? write_messages(json_object_get(root, "messages"), w, why, cap)
                                      : write_prompt(json_object_get(root, "prompt"), w, why, cap);
    return ok && write_params(root, w, oa, why, cap) && write_response_format(root, w, why, cap) &&
           (oa->api != NX__API_CHAT || write_tools(root, w, why, cap));
}

