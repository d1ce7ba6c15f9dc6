/* proto.h — the wire protocol (schemas/protocol.md): one msgpack map per frame. Parsing a
 * request never trusts the frame: every failure is a stable error code plus a sentence naming
 * the field. Replies are built with a small writer over msgpack-c. Used by nexusd (requests
 * in, replies out) and by nexusctl (requests out, replies in).
 */
#ifndef NX_PROTO_H
#define NX_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "nx_err.h"

typedef enum nx_op {
    NX_OP_PING,
    NX_OP_TASK,
    NX_OP_CANCEL,
    NX_OP_STATUS,
    NX_OP_AGENTS,
    NX_OP_MODELS,
    NX_OP_LOAD,
    NX_OP_EVICT,
    NX_OP_PIN,
    NX_OP_UNPIN,
    NX_OP_TASKS,
    NX_OP_HISTORY,
    NX_OP_METRICS,
    NX_OP__COUNT
} nx_op_t;

const char *nx_op_name(nx_op_t op); /* "task", ... */

/* The largest params.max_tokens a request may ask for: the same bound as an agent file's
 * generation.max_tokens (schemas/agent.schema.json). The smallest is 1. */
#define NX_PARAMS_MAX_TOKENS 1048576u

/* Generation overrides from a task's "params"; a field applies only when its flag is set. */
typedef struct nx_params {
    bool has_max_tokens, has_temperature, has_top_p, has_top_k, has_min_p,
        has_repetition_penalty, has_seed, has_stop;
    uint32_t max_tokens;
    float temperature, top_p, min_p, repetition_penalty;
    uint32_t top_k;
    uint64_t seed;
    char **stop; /* stop_count strings */
    size_t stop_count;
} nx_params_t;

/* A call an assistant turn made (OpenAI's tool_calls[i]); strings owned. */
typedef struct nx_turn_call {
    char *id, *name;  /* id may be NULL */
    char *arguments;  /* JSON text */
} nx_turn_call_t;

/* One earlier turn a task brings itself ("history"): role "user", "assistant" (with content,
 * tool_calls or both) or "tool" (a function's result: content, tool_call_id, name). */
typedef struct nx_turn {
    char *role, *content;   /* content NULL: an assistant turn with calls only */
    nx_turn_call_t *calls;  /* assistant: call_count calls, or NULL */
    size_t call_count;
    char *tool_call_id, *name; /* tool: NULL when absent */
} nx_turn_t;

void nx_turn_clear(nx_turn_t *turn); /* frees what it owns; zeroes it */

/* A task's own output constraint: "schema" (+ "strict"), "response_format" or "grammar". */
typedef enum nx_constraint_kind {
    NX_CONSTRAINT_NONE = 0,
    NX_CONSTRAINT_SCHEMA,      /* constraint: the JSON Schema as compact JSON text */
    NX_CONSTRAINT_JSON_OBJECT, /* any JSON object (constraint NULL) */
    NX_CONSTRAINT_GBNF,        /* constraint: the GBNF text */
} nx_constraint_kind_t;

typedef struct nx_request {
    nx_op_t op;
    unsigned char *id;    /* the "id" value's msgpack bytes, echoed verbatim; NULL if absent */
    size_t id_len;
    char *agent, *input, *session, *model; /* NULL when absent */
    bool stream;
    char **route;         /* route_count agent names */
    size_t route_count;
    nx_params_t params;
    nx_turn_t *history;   /* task: history_count earlier turns, oldest first, or NULL */
    size_t history_count;
    nx_constraint_kind_t constraint_kind; /* task: its own output constraint, or NONE */
    char *constraint;     /* the schema's JSON text or the GBNF, or NULL */
    bool constraint_strict; /* strict (OpenAI's): additionalProperties false by default */
    char *tools_json;     /* task: OpenAI's `tools` array as compact JSON text, or NULL */
    char *tool_choice_json; /* task: `tool_choice` as JSON text ("\"auto\"", {...}), or NULL */
    bool parallel_tool_calls; /* task: true unless the request says false */
    bool no_input;        /* task: no `input`: the history ends with tool results, and the
                             prompt ends with them (no new user turn) */
    int64_t task;         /* cancel */
    uint32_t limit;       /* tasks; 20 when absent */
} nx_request_t;

/* Parse one frame. On failure returns an NX_E* code, sets *code_out to the protocol's stable
 * code ("bad_msgpack", "too_large", "unknown_op", "bad_request") and err's message names the
 * field; out->id is still filled when the frame was a map with an "id", so the error can echo
 * it. Strings must be valid UTF-8. Caller clears *out with nx_request_clear in every case. */
int nx_proto_parse(const void *frame, size_t len, size_t max_bytes, nx_request_t *out,
                   const char **code_out, nx_err_t *err);
void nx_request_clear(nx_request_t *req);

/* Apply overrides onto a copy of an agent's sampling settings (stop strings are borrowed from
 * params, so params must outlive the result). NX_EINVAL naming the field when a value is out
 * of range (nx_sampling_validate). */
struct nx_sampling;
int nx_params_apply(const nx_params_t *params, struct nx_sampling *sampling, nx_err_t *err);

/* A reply: a msgpack map built key by key; the map header is written at the end, so callers
 * need not count entries. Nested maps and arrays use the same writer. */
typedef struct nx_writer nx_writer_t;
nx_writer_t *nx_writer_new(void);
void nx_writer_destroy(nx_writer_t **self_p);
/* Start a top-level reply {"op": op, "id": <id bytes or nil>, ...}. */
void nx_writer_reply(nx_writer_t *self, const char *op, const unsigned char *id, size_t id_len);
void nx_writer_str(nx_writer_t *self, const char *key, const char *value); /* NULL -> nil */
void nx_writer_int(nx_writer_t *self, const char *key, int64_t value);
void nx_writer_uint(nx_writer_t *self, const char *key, uint64_t value);
void nx_writer_real(nx_writer_t *self, const char *key, double value);
void nx_writer_bool(nx_writer_t *self, const char *key, bool value);
void nx_writer_nil(nx_writer_t *self, const char *key);
/* Nested containers: key is NULL inside arrays. Every open has its close. */
void nx_writer_map_open(nx_writer_t *self, const char *key);
void nx_writer_map_close(nx_writer_t *self);
void nx_writer_array_open(nx_writer_t *self, const char *key);
void nx_writer_array_close(nx_writer_t *self);
/* A JSON value (jansson's) as msgpack under key: maps, arrays, strings, integers, reals,
 * booleans and nil (proto_schema.c). */
struct json_t;
void nx_writer_json(nx_writer_t *self, const char *key, const struct json_t *value);
/* The finished frame (valid until the writer is reset or destroyed). */
const void *nx_writer_data(nx_writer_t *self, size_t *len_out);
void nx_writer_reset(nx_writer_t *self);

/* {"op":"error","id":...,"code":code,"message":message[,"task":task when > 0]} */
void nx_writer_error(nx_writer_t *self, const unsigned char *id, size_t id_len, const char *code,
                     const char *message, int64_t task);

#endif
