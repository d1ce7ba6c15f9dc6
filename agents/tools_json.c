/* tools_json.c — the parser's calls and events in OpenAI's JSON shapes (message.tool_calls and
 * the streamed delta.tool_calls elements), so the HTTP front and the ZeroMQ results write the
 * same thing.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools.h"

char *nx_tools_calls_json(const nx_tools_parser_t *parser, bool with_incomplete)
{
    size_t n;
    const nx_tools_call_t *calls = nx_tools_parser_calls(parser, &n);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        if (!calls[i].complete && !with_incomplete)
            continue;
        json_t *c = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", calls[i].id, "type", "function",
                              "function", "name", calls[i].name, "arguments",
                              calls[i].arguments);
        if (!c || json_array_append_new(arr, c) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    char *text = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return text;
}

char *nx_tools_event_delta_json(const nx_tools_event_t *event)
{
    json_t *d = NULL;
    if (event->kind == NX_TOOLS_EV_CALL)
        d = json_pack("{s:i,s:s,s:s,s:{s:s%,s:s}}", "index", (json_int_t)event->index, "id",
                      event->id, "type", "function", "function", "name", event->text,
                      event->len, "arguments", "");
    else if (event->kind == NX_TOOLS_EV_ARGS)
        d = json_pack("{s:i,s:{s:s%}}", "index", (json_int_t)event->index, "function",
                      "arguments", event->text, event->len);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    return text;
}
