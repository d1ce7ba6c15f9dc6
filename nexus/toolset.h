/* toolset.h — a task's tools for the daemon: the OpenAI `tools` array, tool_choice and
 * parallel_tool_calls of a request, checked and compiled once (agents/tools.h: the family of
 * the model's tokenizer, the plan whose grammar constrains the calls) into a shared,
 * reference-counted object, and a bounded cache of them keyed by everything that shapes the
 * plan (the tokenizer, the tools' JSON text, the choice, the parallel flag), so a client that
 * sends the same tools with every turn compiles them once and its tasks share one matcher in
 * the executor (exec_typed.c).
 *
 * Threads: a toolset is immutable and may be shared (atomic reference count); a cache
 * belongs to one thread (the router's).
 */
#ifndef NX_TOOLSET_H
#define NX_TOOLSET_H

#include <stdbool.h>
#include <stddef.h>

#include "nx_err.h"
#include "tools.h"

typedef struct nx_toolset nx_toolset_t;

/* Check and compile a request's tools for a model's tokenizer (borrowed: it must outlive the
 * result; the executor keeps tokenizers for its life). tool_choice_json NULL is "auto".
 * Errors (the message names the field): no tool format known for the model (NX_ENOTSUP,
 * "tools: ..."), a schema the grammar compiler refuses (NX_ENOTSUP, "tools[i].function.
 * parameters: unsupported keyword ... at /pointer"), a malformed tool or choice (NX_EINVAL),
 * a tool_choice naming no tool (NX_EINVAL). Caller owns the reference. */
int nx_toolset_new(const nx_tokenizer_t *tok, const char *tools_json,
                   const char *tool_choice_json, bool parallel, nx_toolset_t **out,
                   nx_err_t *err);
nx_toolset_t *nx_toolset_ref(nx_toolset_t *self);
void nx_toolset_release(nx_toolset_t **self_p); /* the last reference frees it; NULL is fine */

const nx_tools_plan_t *nx_toolset_plan(const nx_toolset_t *self);
const char *nx_toolset_tools_json(const nx_toolset_t *self); /* as given (compact JSON) */
nx_tools_family_t nx_toolset_family(const nx_toolset_t *self);
nx_tool_choice_t nx_toolset_choice(const nx_toolset_t *self);

typedef struct nx_toolset_cache nx_toolset_cache_t;

/* At most `capacity` toolsets kept, the least recently used dropped past that. */
nx_toolset_cache_t *nx_toolset_cache_new(size_t capacity);
void nx_toolset_cache_destroy(nx_toolset_cache_t **self_p);
/* nx_toolset_new through the cache. Caller owns the returned reference. */
int nx_toolset_cache_get(nx_toolset_cache_t *self, const nx_tokenizer_t *tok,
                         const char *tools_json, const char *tool_choice_json, bool parallel,
                         nx_toolset_t **out, nx_err_t *err);
void nx_toolset_cache_counts(const nx_toolset_cache_t *self, size_t *compiled, size_t *hits);

#endif
