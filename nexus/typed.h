/* typed.h — typed answers and inputs for the daemon: an output constraint (a JSON Schema, any
 * JSON object, or a GBNF grammar) compiled once into a shared, reference-counted grammar with
 * the digest of its canonical text; a bounded cache of them keyed by that digest; a task
 * input checked against an input_schema with the JSON pointer of the first violation; and a
 * constrained answer's JSON value written into a msgpack reply.
 *
 * Canonical text: a schema is serialized compactly (no whitespace) with its keys in the order
 * given, because the compiler admits more than 6 listed properties only in the order
 * `properties` lists them (agents/gram_schema_types.c); the digest is xxh3-128 over the kind,
 * the strict flag and that text, as 32 hex digits.
 *
 * Threads: a compiled constraint is immutable and may be shared (atomic reference count); a
 * cache belongs to one thread (the router's).
 */
#ifndef NX_TYPED_H
#define NX_TYPED_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "grammar.h"
#include "nx_err.h"
#include "proto.h"

/* The kinds are the protocol's (proto.h): a JSON Schema (the answer is a JSON value under
 * it), OpenAI's json_object (any JSON object), a GBNF grammar (the answer is text). */
typedef nx_constraint_kind_t nx_typed_kind_t;
#define NX_TYPED_NONE NX_CONSTRAINT_NONE
#define NX_TYPED_SCHEMA NX_CONSTRAINT_SCHEMA
#define NX_TYPED_JSON_OBJECT NX_CONSTRAINT_JSON_OBJECT
#define NX_TYPED_GBNF NX_CONSTRAINT_GBNF

#define NX_TYPED_DIGEST_HEX 33 /* 32 hex digits and a NUL */

typedef struct nx_typed nx_typed_t;

/* Compile a constraint. For NX_TYPED_SCHEMA, text is the schema's JSON text (any spacing; it
 * is canonicalized first); for NX_TYPED_GBNF the grammar; for NX_TYPED_JSON_OBJECT text is
 * ignored. strict: OpenAI's strict (additionalProperties false unless given). A schema the
 * compiler refuses is its code (NX_ENOTSUP naming the keyword and JSON pointer, NX_EINVAL for
 * a malformed one) with its message; GBNF errors say LINE:COL. Caller owns the reference. */
int nx_typed_new(nx_typed_kind_t kind, const char *text, size_t len, bool strict,
                 nx_typed_t **out, nx_err_t *err);
/* Another reference to the same constraint. */
nx_typed_t *nx_typed_ref(nx_typed_t *self);
/* Drop a reference (the last one frees it); sets *self_p to NULL; NULL is fine. */
void nx_typed_release(nx_typed_t **self_p);

nx_typed_kind_t nx_typed_kind(const nx_typed_t *self);
const nx_gram_t *nx_typed_gram(const nx_typed_t *self);
const char *nx_typed_digest(const nx_typed_t *self); /* 32 hex digits */
/* Whether answers under it are JSON values (schema, json_object): the result carries one. */
bool nx_typed_has_value(const nx_typed_t *self);

/* The digest a constraint of this kind, flag and text would get, without compiling it:
 * NX_EINVAL when a schema's text is not JSON. out holds NX_TYPED_DIGEST_HEX bytes. */
int nx_typed_digest_of(nx_typed_kind_t kind, const char *text, size_t len, bool strict,
                       char *out, nx_err_t *err);

/* --- a cache of compiled constraints (one thread) ---------------------------------------- */

typedef struct nx_typed_cache nx_typed_cache_t;

/* At most `capacity` constraints are kept; the least recently used one is dropped past that
 * (tasks still holding it keep their reference). Caller owns the result. */
nx_typed_cache_t *nx_typed_cache_new(size_t capacity);
void nx_typed_cache_destroy(nx_typed_cache_t **self_p);
/* The compiled constraint for (kind, text, strict): from the cache, or compiled and kept.
 * Errors as nx_typed_new. Caller owns the returned reference. */
int nx_typed_cache_get(nx_typed_cache_t *self, nx_typed_kind_t kind, const char *text,
                       size_t len, bool strict, nx_typed_t **out, nx_err_t *err);
/* Compilations and hits so far, for tests and metrics. */
void nx_typed_cache_counts(const nx_typed_cache_t *self, size_t *compiled, size_t *hits);

/* --- inputs and answers ------------------------------------------------------------------ */

/* Check that `input` is JSON valid under the schema constraint `self`: NX_OK, or NX_EINVAL
 * with a message naming the JSON pointer of the first violation ("input at /items/2: ...")
 * or where the text stops being JSON. The input is written compactly and fed to the schema's
 * matcher piece by piece; object members may come in any order (each member is tried where
 * the schema admits it). */
int nx_typed_check_input(const nx_typed_t *self, const char *input, nx_err_t *err);

/* The JSON value of a constrained answer: the text after a leading thinking block
 * (`<think>...</think>`) and whitespace, parsed. NULL when it is not JSON (an answer cut by
 * max_tokens). Caller owns the result. */
json_t *nx_typed_answer_value(const char *text);

#endif
