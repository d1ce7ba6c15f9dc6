/* tools.h — OpenAI-style tool calls for the model families we serve: one description per
 * family (agents/tools_family.c) from which come the grammar that constrains a request's
 * calls (agents/tools_grammar.c) and the streaming parser that turns generated text back into
 * content, reasoning and calls (agents/tools_parse.c). The prompt side (tools in the system
 * turn, assistant tool_calls, tool results) is nx_chat_render's (agents/chat.c), fed through
 * nx_chat_opts_t.tools_json and nx_chat_msg_t's tool fields.
 *
 * Families:
 *   HERMES (Qwen2, Qwen2.5, Qwen3): a call is
 *     <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>
 *   and calls follow each other separated by "\n"; free text may come before them. In Qwen
 *   vocabularies <tool_call> is one (non-special) token, the lazy grammar's trigger id.
 *   LLAMA3_JSON (Llama 3.1/3.2/3.3 custom tools): the assistant's whole answer is
 *     {"name": "NAME", "parameters": ARGS}
 *   one call per turn (the template refuses more); results come back as ipython turns.
 *
 * Threads: formats are static data; a plan is immutable after creation; a parser belongs to
 * one thread at a time.
 */
#ifndef NX_TOOLS_H
#define NX_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar.h"
#include "nx_err.h"

typedef struct nx_tokenizer nx_tokenizer_t;

/* --- families ------------------------------------------------------------------------------ */

typedef enum nx_tools_family {
    NX_TOOLS_NONE = 0,    /* no tool-call format known for the model */
    NX_TOOLS_HERMES,      /* Qwen2/2.5/3 <tool_call> JSON */
    NX_TOOLS_LLAMA3_JSON, /* Llama 3.x JSON call as the whole answer */
} nx_tools_family_t;

/* The description of one family's call syntax. A call is
 *   call_open + obj_open + NAME + obj_mid + ARGS + obj_close + call_close
 * and calls are joined by call_sep (NULL: one call per turn). */
typedef struct nx_tools_format {
    nx_tools_family_t family;
    const char *name;        /* "hermes", "llama3_json" */
    const char *call_open;   /* "<tool_call>\n"; "" */
    const char *call_close;  /* "\n</tool_call>"; "" */
    const char *call_sep;    /* "\n"; NULL: at most one call */
    const char *obj_open;    /* "{\"name\": \"" */
    const char *obj_mid;     /* "\", \"arguments\": " */
    const char *obj_close;   /* "}" */
    const char *name_key;    /* "name" */
    const char *args_key;    /* "arguments"; "parameters" */
    const char *trigger;     /* text that starts the calls: "<tool_call>"; "{\"name\"" */
    bool trigger_at_start;   /* calls only as the whole answer (leading whitespace aside) */
    const char *think_open;  /* "<think>" where the family may think first; NULL */
    const char *think_close; /* "</think>" */
} nx_tools_format_t;

/* The family's description; NULL for NX_TOOLS_NONE or an unknown value. */
const nx_tools_format_t *nx_tools_format(nx_tools_family_t family);
/* The family of a loaded tokenizer: from its chat template (one that writes <tool_call> is
 * HERMES, a Llama 3 header template LLAMA3_JSON), else from its vocabulary (a <tool_call>
 * token: HERMES). tok may be NULL (NX_TOOLS_NONE). */
nx_tools_family_t nx_tools_family_detect(const nx_tokenizer_t *tok);
const char *nx_tools_family_name(nx_tools_family_t family); /* "none", "hermes", ... */
bool nx_tools_family_parse(const char *name, nx_tools_family_t *family_out);

/* --- a request's constraint ---------------------------------------------------------------- */

typedef enum nx_tool_choice {
    NX_TOOL_CHOICE_AUTO = 0, /* free text, or calls once the trigger comes (lazy grammar) */
    NX_TOOL_CHOICE_NONE,     /* no calls: no grammar, the trigger id banned */
    NX_TOOL_CHOICE_REQUIRED, /* calls from the start */
    NX_TOOL_CHOICE_FUNCTION, /* calls of one named function from the start */
} nx_tool_choice_t;

/* Parse OpenAI's tool_choice value given as JSON text ("\"auto\"", "\"none\"",
 * "\"required\"", {"type":"function","function":{"name":"f"}}); text NULL or empty is auto.
 * *name_out (FUNCTION only) is malloc'ed, caller frees. NX_EINVAL naming what is wrong. */
int nx_tools_choice_parse(const char *text, size_t len, nx_tool_choice_t *choice_out,
                          char **name_out, nx_err_t *err);

typedef struct nx_tools_request {
    nx_tools_family_t family;
    const char *tools_json;  /* the OpenAI `tools` array as JSON text */
    size_t tools_len;
    nx_tool_choice_t choice;
    const char *choice_name; /* NX_TOOL_CHOICE_FUNCTION: the function's name */
    bool parallel;           /* parallel_tool_calls: true one or more calls, false exactly one */
} nx_tools_request_t;

/* The grammar of a request's calls (both call_open and the trigger included: a lazy grammar
 * starts with the trigger's own bytes), each call's object
 * {"name": "<one of the tools>", "arguments": <that tool's parameters>} with the name first
 * and the arguments in compact JSON under the tool's schema: OpenAI's strict semantics where
 * the tool says "strict": true, the spec's otherwise. NULL with err NX_OK for choice NONE.
 * Errors name the place: "tools[2].function.parameters: unsupported keyword ..." (NX_ENOTSUP),
 * "tools[0].function.name: ..." (NX_EINVAL), "tool_choice: ..." (NX_EINVAL).
 * Caller owns the result. */
nx_gram_t *nx_tools_grammar(const nx_tools_request_t *req, nx_err_t *err);

#define NX_TOOLS_MAX_IDS 4

/* What generation needs beside the grammar (maps onto nx_gen_grammar_t). */
typedef struct nx_tools_plan {
    nx_gram_t *gram;          /* owned; NULL for choice NONE */
    bool lazy;                /* AUTO: free text until a trigger, then the grammar */
    bool trigger_at_start;    /* only a trigger at the answer's start counts (Llama 3) */
    int32_t trigger_ids[NX_TOOLS_MAX_IDS]; /* token ids that start the grammar (lazy) */
    size_t n_trigger_ids;
    const char *trigger_strings[NX_TOOLS_MAX_IDS]; /* texts that start it where no id does */
    size_t n_trigger_strings;
    int32_t banned_ids[NX_TOOLS_MAX_IDS]; /* ids free text may not use (NONE: the trigger) */
    size_t n_banned_ids;
    const char *think_open;   /* a free thinking block before the constraint; NULL */
    const char *think_close;
    int32_t think_open_id, think_close_id; /* their ids; -1 when not single tokens */
} nx_tools_plan_t;

/* The grammar and the ids for a request on a tokenizer (tok may be NULL: no ids, the
 * trigger as a string). Errors as nx_tools_grammar's. Caller owns the result. */
nx_tools_plan_t *nx_tools_plan_new(const nx_tools_request_t *req, const nx_tokenizer_t *tok,
                                   nx_err_t *err);
void nx_tools_plan_destroy(nx_tools_plan_t **self_p);

/* --- the streaming parser ------------------------------------------------------------------ */

typedef enum nx_tools_ev_kind {
    NX_TOOLS_EV_CONTENT = 0, /* text: a piece of the answer's content */
    NX_TOOLS_EV_REASONING,   /* text: a piece of the thinking block */
    NX_TOOLS_EV_CALL,        /* a call begins: index, id, name (text is the name) */
    NX_TOOLS_EV_ARGS,        /* text: a piece of call `index`'s arguments JSON text */
} nx_tools_ev_kind_t;

typedef struct nx_tools_event {
    nx_tools_ev_kind_t kind;
    uint32_t index;   /* CALL, ARGS: the call's index, from 0 */
    const char *id;   /* CALL: "call_" + 24 letters and digits */
    const char *text; /* the piece (not NUL-terminated): len bytes */
    size_t len;
} nx_tools_event_t;

typedef struct nx_tools_call {
    const char *id;        /* "call_..." */
    const char *name;
    const char *arguments; /* the arguments JSON text, the ARGS pieces concatenated */
    bool complete;         /* the call's text ended (false: cut by the end of the output) */
} nx_tools_call_t;

typedef struct nx_tools_parser_opts {
    nx_tools_family_t family;
    bool thinking;    /* the output may open with the family's thinking block */
    bool in_thinking; /* the prompt already opened it: the output starts inside it */
    uint64_t seed;    /* call ids: the same seed gives the same ids; 0: random */
} nx_tools_parser_opts_t;

typedef struct nx_tools_parser nx_tools_parser_t;

/* A parser for one answer. Caller owns the result. */
nx_tools_parser_t *nx_tools_parser_new(const nx_tools_parser_opts_t *opts, nx_err_t *err);
void nx_tools_parser_destroy(nx_tools_parser_t **self_p);
/* Feed the next piece of generated text (any split, even inside a UTF-8 character). The
 * events it gives are in *events (parser-owned, valid until the next feed or finish):
 * consecutive pieces of one kind are merged; only text that could still be a trigger or a
 * tag is held back. NX_ENOMEM only. */
int nx_tools_parser_feed(nx_tools_parser_t *self, const char *text, size_t len,
                         const nx_tools_event_t **events, size_t *n_events, nx_err_t *err);
/* The end of the output: what was held back comes out. Then the results below are final. */
int nx_tools_parser_finish(nx_tools_parser_t *self, const nx_tools_event_t **events,
                           size_t *n_events, nx_err_t *err);
/* The calls so far (complete after finish); parser-owned, valid until the next feed or
 * finish (calling this again, or nx_tools_calls_json, leaves them valid). On no memory,
 * *n_calls is 0. */
const nx_tools_call_t *nx_tools_parser_calls(const nx_tools_parser_t *self, size_t *n_calls);
/* The content and reasoning so far, NUL-terminated; parser-owned. */
const char *nx_tools_parser_content(const nx_tools_parser_t *self, size_t *len_out);
const char *nx_tools_parser_reasoning(const nx_tools_parser_t *self, size_t *len_out);

/* A finished answer in one call: a parser fed the whole text and finished. Use the getters
 * above on the result, then destroy it. Caller owns the result. */
nx_tools_parser_t *nx_tools_parse(const nx_tools_parser_opts_t *opts, const char *text,
                                  size_t len, nx_err_t *err);

/* --- OpenAI JSON ---------------------------------------------------------------------------- */

/* The calls as OpenAI's message.tool_calls array:
 * [{"id":"call_...","type":"function","function":{"name":"f","arguments":"{...}"}}, ...]
 * (only complete calls unless with_incomplete). malloc'ed compact JSON text; NULL on no
 * memory. */
char *nx_tools_calls_json(const nx_tools_parser_t *parser, bool with_incomplete);

/* One CALL or ARGS event as an element of a streamed chunk's delta.tool_calls, which the
 * official SDKs reassemble: CALL {"index":i,"id":"call_...","type":"function","function":
 * {"name":"f","arguments":""}}, ARGS {"index":i,"function":{"arguments":"piece"}}. NULL for
 * other kinds or on no memory; malloc'ed compact JSON text. A piece that ends inside a UTF-8
 * character is not valid in JSON text: feed the parser whole characters (nx_detok does). */
char *nx_tools_event_delta_json(const nx_tools_event_t *event);

#endif
