/* st_internal.h — internal to the safetensors reader and writer: helpers both share, and a
 * parse-from-memory entry point used by the fuzz target (tests/fuzz_st_header.c). */
#ifndef NX_ST_INTERNAL_H
#define NX_ST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nx_loader.h"

#define NX__ST_DIGEST_PREFIX "xxh3-64:"
#define NX__ST_DIGEST_CHARS 24 /* strlen("xxh3-64:") + 16 hex digits */

/* Parse and validate `bytes` as the whole content of a safetensors file called `label`
 * (prefix, header and data section), exactly as nx_st_open validates a file on disk.
 * Digest verification reads the file by its label, so it is meaningless on the result.
 * Returns NULL and fills *err on any problem. Caller owns the result. */
nx_st_t *nx__st_from_buffer(const char *label, const void *bytes, size_t len, nx_err_t *err);

typedef enum nx__st_size_rc {
    NX__ST_SIZE_OK = 0,
    NX__ST_SIZE_OVERFLOW,  /* numel or numel * bits does not fit in 64 bits */
    NX__ST_SIZE_PARTIAL,   /* numel * bits is not a whole number of bytes */
} nx__st_size_rc_t;

/* Byte size of a tensor: numel * bits / 8, checked as the reference implementation does. */
nx__st_size_rc_t nx__st_tensor_bytes(nx_dtype_t dtype, const uint64_t *shape, uint32_t ndim,
                                     uint64_t *bytes_out);

/* "[2, 3]" into buf (truncated with "..." when it does not fit). Returns buf. */
const char *nx__st_format_shape(char *buf, size_t cap, const uint64_t *shape, uint32_t ndim);

/* Parse "xxh3-64:<16 lowercase hex>"; false when the value has any other form. */
bool nx__st_parse_digest(const char *value, uint64_t *digest_out);

#endif
