/* http_openai.c — OpenAI's chat/completions and completions: the request translated
 * (http_translate.c) and sent to the router as a `task`, the router's replies shaped as
 * OpenAI's responses, whole or streamed as server-sent events. A client that hangs up has its
 * task cancelled.
 *
 * finish_reason is "tool_calls" when the answer made calls (a task with tools), "length" when
 * generation stopped at max_tokens (or a full context), "stop" at an end-of-turn token or a
 * stop string: the result's finish_reason and stop_reason (protocol.md). Calls stream as
 * OpenAI's delta.tool_calls, a Qwen3 thinking block as delta.reasoning_content.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_int.h"
#include "nx_err.h"

/* ------------------------------------------------------------------------------------------
 * The answer
 */
static json_t *usage_json(const msgpack_object *usage)
{
    int64_t in = nx__mp_int(nx__mp_get(usage, "prompt_tokens"));
    int64_t out = nx__mp_int(nx__mp_get(usage, "completion_tokens"));
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)in, "completion_tokens",
                     (json_int_t)out, "total_tokens", (json_int_t)(in + out));
}

/* A msgpack value from the router as JSON (the result's tool_calls); NULL for what JSON has
 * no form for. */
static json_t *mp_json(const msgpack_object *o, int depth)
{
    if (depth > 64)
        return NULL;
    json_t *out;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
        out = json_array();
        for (uint32_t i = 0; out && i < o->via.array.size; i++)
            json_array_append_new(out, mp_json(&o->via.array.ptr[i], depth + 1));
        return out;
    case MSGPACK_OBJECT_MAP:
        out = json_object();
        for (uint32_t i = 0; out && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            char *key = strndup(kv->key.via.str.ptr, kv->key.via.str.size);
            json_t *v = mp_json(&kv->val, depth + 1);
            if (key && v)
                json_object_set_new(out, key, v);
            else
                json_decref(v);
            free(key);
        }
        return out;
    default:
        return NULL;
    }
}

/* The result's finish_reason when it has one (a task with tools: "tool_calls" when the answer
 * made calls); else from its stop_reason: "length" (max_tokens, or the context full) stays
 * "length"; an end-of-turn token or a stop string is "stop". */
static const char *finish_reason(const nx__link_t *link)
{
    const msgpack_object *given = nx__link_get(link, "finish_reason");
    if (given && given->type == MSGPACK_OBJECT_STR && given->via.str.size == 10 &&
        memcmp(given->via.str.ptr, "tool_calls", 10) == 0)
        return "tool_calls";
    const msgpack_object *why = nx__link_get(link, "stop_reason");
    return why && why->type == MSGPACK_OBJECT_STR && why->via.str.size == 6 &&
                   memcmp(why->via.str.ptr, "length", 6) == 0
               ? "length"
               : "stop";
}

static void response_id(const nx__oa_req_t *oa, int64_t task, char *id, size_t cap)
{
    snprintf(id, cap, "%s-%lld", oa->api == NX__API_CHAT ? "chatcmpl" : "cmpl", (long long)task);
}

/* The `result` reply -> chat.completion or text_completion. */
static json_t *whole_response(const nx__oa_req_t *oa, const nx__link_t *link, int64_t task,
                              int64_t created)
{
    char id[48];
    response_id(oa, task, id, sizeof id);
    const msgpack_object *usage = nx__link_get(link, "usage");
    char *output = nx__mp_strdup(nx__link_get(link, "output"));
    /* a typed answer's content is its JSON: a thinking block before it goes apart */
    char *reasoning = NULL;
    const char *content = output ? output : "";
    if (nx__link_get(link, "schema_digest"))
        content = nx__openai_answer_content(content, &reasoning);
    else if (nx__link_get(link, "reasoning")) /* a task with tools: the router split it */
        reasoning = nx__mp_strdup(nx__link_get(link, "reasoning"));
    const msgpack_object *calls = nx__link_get(link, "tool_calls");
    json_t *choice =
        oa->api == NX__API_CHAT
            ? json_pack("{s:i, s:{s:s, s:s}, s:s}", "index", 0, "message", "role", "assistant",
                        "content", content, "finish_reason", finish_reason(link))
            : json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", content, "logprobs",
                        "finish_reason", finish_reason(link));
    if (reasoning && oa->api == NX__API_CHAT)
        json_object_set_new(json_object_get(choice, "message"), "reasoning_content",
                            json_string(reasoning));
    if (calls && calls->type == MSGPACK_OBJECT_ARRAY && calls->via.array.size &&
        oa->api == NX__API_CHAT) {
        json_t *message = json_object_get(choice, "message");
        json_object_set_new(message, "tool_calls", mp_json(calls, 0));
        if (!content[0]) /* OpenAI: a message that only calls has null content */
            json_object_set_new(message, "content", json_null());
    }
    free(reasoning);
    free(output);
    return json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", id, "object",
                     oa->api == NX__API_CHAT ? "chat.completion" : "text_completion", "created",
                     (json_int_t)created, "model", oa->model, "choices", choice, "usage",
                     usage_json(usage));
}

/* A streamed response in progress: the link, and the bytes of SSE events not yet taken. */
typedef struct stream {
    nx_http_t *http;
    struct MHD_Connection *conn;
    nx__link_t link;
    nx__oa_req_t oa;
    int64_t task, created;
    bool sent_role, done;
    /* tool_call events: the router's call index -> the client's (calls of an agent's own
     * tools run in the daemon and are not the client's: -1, not sent); 0 when not seen */
    int32_t call_index[64];
    int32_t client_calls;
    char *out;
    size_t out_len, out_pos;
} stream_t;

/* Append "data: <json>\n\n" (takes ownership of event; NULL: out of memory, ends the stream). */
static void emit(stream_t *s, json_t *event)
{
    char *text = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);
    size_t len = text ? strlen(text) + 8 : 0;
    char *grown = text ? realloc(s->out, s->out_len + len + 1) : NULL;
    if (!grown) {
        free(text);
        s->done = true;
        return;
    }
    s->out = grown;
    s->out_len += (size_t)sprintf(s->out + s->out_len, "data: %s\n\n", text);
    free(text);
}

static void emit_raw(stream_t *s, const char *text)
{
    char *grown = realloc(s->out, s->out_len + strlen(text) + 1);
    if (!grown) {
        s->done = true;
        return;
    }
    s->out = grown;
    memcpy(s->out + s->out_len, text, strlen(text) + 1);
    s->out_len += strlen(text);
}

/* One chunk: a piece of text (or NULL), the role on the first, finish_reason on the last. */
static json_t *chunk(const stream_t *s, const char *text, const char *finish, bool role)
{
    char id[48];
    response_id(&s->oa, s->task, id, sizeof id);
    json_t *choice;
    if (s->oa.api == NX__API_CHAT) {
        json_t *delta = json_object();
        if (role)
            json_object_set_new(delta, "role", json_string("assistant"));
        if (text)
            json_object_set_new(delta, "content", json_string(text));
        choice = json_pack("{s:i, s:o, s:o}", "index", 0, "delta", delta, "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:i, s:s, s:n, s:o}", "index", 0, "text", text ? text : "",
                           "logprobs", "finish_reason",
                           finish ? json_string(finish) : json_null());
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", id, "object",
                     s->oa.api == NX__API_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)s->created, "model", s->oa.model, "choices",
                     choice);
}

/* A `tool_call` event as OpenAI streams it: delta.tool_calls with one element, the first of a
 * call {index, id, type, function: {name, arguments: ""}}, then {index, function:
 * {arguments: piece}}, which the SDKs reassemble. Calls of the agent's own tools (flagged
 * "agent") run in the daemon: they are not streamed, and the client's calls are numbered
 * from 0 without them, as message.tool_calls lists them. */
static void call_chunk(stream_t *s)
{
    const msgpack_object *id = nx__link_get(&s->link, "call_id");
    json_int_t index = (json_int_t)nx__mp_int(nx__link_get(&s->link, "index"));
    const msgpack_object *agent = nx__link_get(&s->link, "agent");
    if (index >= 0 && index < 64) { /* stored as client index + 1; -1: an agent's call */
        int32_t *slot = &s->call_index[index];
        if (id)
            *slot = agent && agent->type == MSGPACK_OBJECT_BOOLEAN && agent->via.boolean
                        ? -1
                        : ++s->client_calls;
        if (*slot < 0)
            return;
        if (*slot > 0)
            index = *slot - 1;
    }
    char *call_id = nx__mp_strdup(id);
    char *name = nx__mp_strdup(nx__link_get(&s->link, "name"));
    char *args = nx__mp_strdup(nx__link_get(&s->link, "arguments"));
    json_t *element = call_id
        ? json_pack("{s:I, s:s, s:s, s:{s:s, s:s}}", "index", index, "id", call_id, "type",
                    "function", "function", "name", name ? name : "", "arguments",
                    args ? args : "")
        : json_pack("{s:I, s:{s:s}}", "index", index, "function", "arguments",
                    args ? args : "");
    free(call_id);
    free(name);
    free(args);
    json_t *c = element ? chunk(s, NULL, NULL, false) : NULL;
    if (!c) {
        json_decref(element);
        emit(s, NULL); /* out of memory: the stream ends */
        return;
    }
    json_t *delta = json_object_get(json_array_get(json_object_get(c, "choices"), 0), "delta");
    json_object_set_new(delta, "tool_calls", json_pack("[o]", element));
    emit(s, c);
}

static void emit_error(stream_t *s, const char *code, const char *message)
{
    unsigned status = nx__http_status_for(code);
    emit(s, json_pack("{s:{s:s, s:s, s:s, s:n}}", "error", "message", message, "type",
                      status >= 500 ? "server_error" : "invalid_request_error", "code", code,
                      "param"));
    s->done = true;
}

/* The next reply from the router -> events. Returns false when the client is gone. */
static bool next_events(stream_t *s)
{
    nx__wait_t got = nx__link_wait(&s->link, -1);
    if (got == NX__WAIT_GONE)
        return false;
    if (got == NX__WAIT_STOPPING) {
        emit_error(s, "shutting_down", "the daemon is stopping");
    } else if (got != NX__WAIT_OK) {
        emit_error(s, "internal", "the router's reply could not be read (http_openai.c)");
    } else if (nx__link_op_is(&s->link, "token")) {
        char *text = nx__mp_strdup(nx__link_get(&s->link, "text"));
        if (text && text[0])
            emit(s, chunk(s, text, NULL, false));
        free(text);
    } else if (nx__link_op_is(&s->link, "reasoning") && s->oa.api == NX__API_CHAT) {
        char *text = nx__mp_strdup(nx__link_get(&s->link, "text"));
        json_t *c = text && text[0] ? chunk(s, NULL, NULL, false) : NULL;
        if (c)
            json_object_set_new(json_object_get(json_array_get(json_object_get(c, "choices"),
                                                               0), "delta"),
                                "reasoning_content", json_string(text));
        if (c)
            emit(s, c);
        free(text);
    } else if (nx__link_op_is(&s->link, "tool_call") && s->oa.api == NX__API_CHAT) {
        call_chunk(s);
    } else if (nx__link_op_is(&s->link, "result")) {
        const msgpack_object *usage = nx__link_get(&s->link, "usage");
        emit(s, chunk(s, NULL, finish_reason(&s->link), false));
        if (s->oa.include_usage) {
            char id[48];
            response_id(&s->oa, s->task, id, sizeof id);
            emit(s, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", id, "object",
                              s->oa.api == NX__API_CHAT ? "chat.completion.chunk"
                                                        : "text_completion",
                              "created", (json_int_t)s->created, "model", s->oa.model,
                              "choices", "usage", usage_json(usage)));
        }
        emit_raw(s, "data: [DONE]\n\n");
        s->done = true;
    } else if (nx__link_op_is(&s->link, "error")) {
        char *code = nx__mp_strdup(nx__link_get(&s->link, "code"));
        char *message = nx__mp_strdup(nx__link_get(&s->link, "message"));
        emit_error(s, code ? code : "internal", message ? message : "the task failed");
        free(code);
        free(message);
    }
    return true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_t *s = cls;
    for (;;) {
        if (s->out_pos < s->out_len) {
            size_t n = s->out_len - s->out_pos < max ? s->out_len - s->out_pos : max;
            memcpy(buf, s->out + s->out_pos, n);
            s->out_pos += n;
            return (ssize_t)n;
        }
        s->out_len = s->out_pos = 0;
        if (s->done) { /* idle again between requests: the timeout applies again */
            MHD_set_connection_option(s->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                      (unsigned int)s->http->conf->http_idle_timeout_s);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (!s->sent_role) {
            s->sent_role = true;
            emit(s, chunk(s, s->oa.api == NX__API_CHAT ? "" : NULL, NULL, true));
            continue;
        }
        if (!next_events(s)) {
            nx__link_cancel(&s->link, s->task); /* the client hung up: its task is canceled */
            s->done = true;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls)
{
    stream_t *s = cls;
    if (!s->done) /* libmicrohttpd gave up on the client (a failed write) */
        nx__link_cancel(&s->link, s->task);
    nx__link_close(&s->link);
    free(s->oa.model);
    free(s->out);
    free(s);
}

static enum MHD_Result start_stream(nx_http_t *http, struct MHD_Connection *c, nx__link_t *link,
                                    nx__oa_req_t *oa, int64_t task)
{
    stream_t *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    s->http = http;
    s->conn = c;
    s->link = *link; /* the stream owns the link and the request from here on */
    s->oa = *oa;
    s->task = task;
    s->created = (int64_t)time(NULL);
    memset(link, 0, sizeof *link);
    oa->model = NULL;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    /* libmicrohttpd counts a stream waiting in stream_read for its next token as idle and
     * would cut it after http.idle_timeout (a queue, a model's load): no timeout while it
     * streams; a client that hangs up is noticed by the link instead (http_link.c). */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned int)0);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

static int client_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info ? info->connect_fd : -1;
}

/* Wait for the task's end (the router sends no tokens: stream was false). */
static enum MHD_Result finish_whole(nx_http_t *http, struct MHD_Connection *c, nx__link_t *link,
                                    const nx__oa_req_t *oa, int64_t task)
{
    int64_t created = (int64_t)time(NULL);
    for (;;) {
        nx__wait_t got = nx__link_wait(link, -1);
        if (got == NX__WAIT_GONE) {
            nx__link_cancel(link, task);
            return MHD_NO; /* nobody to answer: close */
        }
        if (got == NX__WAIT_STOPPING)
            return nx__http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                                  "the daemon is stopping");
        if (got != NX__WAIT_OK)
            return nx__http_error(c, 500, "internal", "the router's reply could not be read");
        if (nx__link_op_is(link, "result"))
            return nx__http_json(c, MHD_HTTP_OK, whole_response(oa, link, task, created));
        if (nx__link_op_is(link, "error"))
            return nx__http_proto_error(c, link);
    }
}

enum MHD_Result nx__openai_create(nx_http_t *http, struct MHD_Connection *c, nx__api_t api,
                                  const char *body, size_t len)
{
    char why[256] = "";
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(why, sizeof why, "the body is not JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return nx__http_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", why);
    }
    nx__oa_req_t oa = {.api = api};
    nx_writer_t *w = nx_writer_new();
    nx__link_t link = {0};
    enum MHD_Result ret;
    if (!w) {
        ret = MHD_NO;
        goto out;
    }
    if (!nx__openai_translate(root, &oa, w, why, sizeof why)) {
        ret = nx__http_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", why);
        goto out;
    }
    if (nx__link_open(&link, http, client_fd(c)) != NX_OK || nx__link_send(&link, w) != NX_OK) {
        ret = nx__http_error(c, 500, "internal", "cannot reach the router (http_openai.c)");
        goto out;
    }
    nx__wait_t got = nx__link_wait(&link, -1);
    if (got == NX__WAIT_OK && nx__link_op_is(&link, "accepted")) {
        int64_t task = nx__mp_int(nx__link_get(&link, "task"));
        ret = oa.stream ? start_stream(http, c, &link, &oa, task)
                        : finish_whole(http, c, &link, &oa, task);
        goto out;
    }
    if (got == NX__WAIT_GONE)
        ret = MHD_NO; /* not accepted yet: if it is, the router runs it to its end, stored */
    else if (got == NX__WAIT_STOPPING)
        ret = nx__http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                             "the daemon is stopping");
    else if (got == NX__WAIT_OK && nx__link_op_is(&link, "error"))
        ret = nx__http_proto_error(c, &link);
    else
        ret = nx__http_error(c, 500, "internal", "unexpected reply from the router");
out:
    nx__link_close(&link);
    nx_writer_destroy(&w);
    free(oa.model);
    json_decref(root);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * GET /v1/models
 */
enum MHD_Result nx__openai_models(nx_http_t *http, struct MHD_Connection *c)
{
    nx__link_t link;
    if (nx__link_open(&link, http, -1) != NX_OK ||
        nx__link_call(&link, "agents", 5000) != NX__WAIT_OK || !nx__link_op_is(&link, "agents")) {
        nx__link_close(&link);
        return nx__http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              "the router did not answer");
    }
    json_t *data = json_array();
    const msgpack_object *agents = nx__link_get(&link, "agents");
    for (uint32_t i = 0; agents && agents->type == MSGPACK_OBJECT_ARRAY &&
                         i < agents->via.array.size; i++) {
        const msgpack_object *a = &agents->via.array.ptr[i];
        char *name = nx__mp_strdup(nx__mp_get(a, "name"));
        char *description = nx__mp_strdup(nx__mp_get(a, "description"));
        char *model = nx__mp_strdup(nx__mp_get(a, "model"));
        if (name)
            json_array_append_new(
                data, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "id", name, "object", "model",
                                "created", (json_int_t)http->started_s, "owned_by", "nexus",
                                "description", description ? description : "", "model",
                                model ? model : ""));
        free(name);
        free(description);
        free(model);
    }
    nx__link_close(&link);
    return nx__http_json(c, MHD_HTTP_OK, json_pack("{s:s, s:o}", "object", "list", "data", data));
}
