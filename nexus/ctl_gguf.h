/* ctl_gguf.h — `nexusctl model inspect`'s view of a GGUF file's key/values (ctl_gguf.c), as
 * text and as JSON. */
#ifndef NX_CTL_GGUF_H
#define NX_CTL_GGUF_H

#include <stdbool.h>

#include <jansson.h>

#include "nx_loader.h"

/* Arrays longer than this are summarized (text always; JSON with --summary). */
#define NX_CTL_GGUF_ARRAY_HEAD 8

/* "GGUF v3, general.alignment 32, 3 tensors, 30 keys", then one line per key: name, type,
 * value (strings quoted and escaped, long ones cut; arrays as count and first elements). */
void nx_ctl_gguf_print_text(const nx_st_t *st);

/* {"version", "alignment", "kv_count", "metadata": [{"key", "type", "value"} or, for arrays,
 * {"key", "type": "arr", "elem_type", "count", "value": [...], "truncated"}]}. With summary,
 * arrays give their first NX_CTL_GGUF_ARRAY_HEAD elements and "truncated": true when longer;
 * otherwise every element. Values: integers as JSON integers except u64 past 2^63 - 1 (a
 * decimal string); floats as JSON numbers except NaN and infinities ("nan", "inf", "-inf");
 * strings as JSON strings, bytes that are not UTF-8 replaced by U+FFFD. NULL when out of
 * memory. Caller owns the result. */
json_t *nx_ctl_gguf_json(const nx_st_t *st, bool summary);

#endif
