/* proto_int.h — internals of the protocol codec that the client shares: checking and
 * unpacking one frame as exactly one msgpack map (used for requests in proto.c and for
 * replies in client.c). Not part of the public protocol API (proto.h).
 */
#ifndef NX_PROTO_INT_H
#define NX_PROTO_INT_H

#include <stddef.h>

#include <msgpack.h>

#include "nx_err.h"

/* Unpack `frame` into *out (initialised by the caller with msgpack_unpacked_init and destroyed
 * by it with msgpack_unpacked_destroy in every case). The frame must be at most max_bytes
 * (0 = no limit), hold exactly one msgpack value with nothing after it, and that value must be
 * a map whose keys are all strings. On failure returns NX_EINVAL with *code_out "too_large" or
 * NX_EFORMAT with *code_out "bad_msgpack", and a sentence in err. out->data is a map exactly
 * when the frame was one (even when a key was not a string), so an error can still echo its
 * "id"; otherwise it is nil. Strings and bins in out->data point into `frame` (msgpack-c does
 * not copy them): keep the frame alive while reading them. */
int nx__proto_unpack_map(const void *frame, size_t len, size_t max_bytes, msgpack_unpacked *out,
                         const char **code_out, nx_err_t *err);

/* "nil", "bool", "int", "float", "str", "array", "map", "bin", "ext": for messages. */
const char *nx__proto_type_name(const msgpack_object *o);

/* True when o is a string equal to text. */
bool nx__proto_str_eq(const msgpack_object *o, const char *text);

/* The value of string key `key` in map o (the first one), or NULL when o is not a map or has
 * no such key. */
const msgpack_object *nx__proto_get(const msgpack_object *o, const char *key);

/* proto_schema.c: the task's "schema" / "strict" / "response_format" / "grammar" into r.
 * NX_EINVAL (a bad_request) or NX_ENOMEM with err naming the field. */
struct nx_request;
int nx__proto_constraint(const msgpack_object *m, struct nx_request *r, nx_err_t *err);
/* proto_schema.c: "tools", "tool_choice", "parallel_tool_calls" into r (JSON text). */
int nx__proto_tools(const msgpack_object *m, struct nx_request *r, nx_err_t *err);
/* proto_schema.c: a history turn's tool fields (role already read into t): an assistant's
 * "tool_calls", a tool turn's "tool_call_id" and "name". */
struct nx_turn;
int nx__proto_turn_tools(const msgpack_object *turn, unsigned index, struct nx_turn *t,
                         nx_err_t *err);

#endif
