/* gguf_build.h — build GGUF files byte by byte for the tests (test_gguf.c, test_gguf_reject.c),
 * never through our writer, so that the reader is checked against the layout as the spec
 * states it: "GGUF", u32 version, u64 tensor count, u64 key/value count, key/values (u64
 * length + key, u32 type, value), tensor infos (name, u32 n_dims, u64 ne[], u32 ggml type,
 * u64 offset), zero padding to the alignment, data. Little-endian, like the hosts we run on. */
#ifndef NX_TEST_GGUF_BUILD_H
#define NX_TEST_GGUF_BUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gb {
    uint8_t *data;
    size_t len;
    size_t cap;
} gb_t;

/* ggml type ids used by the tests */
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_I32 = 26 };

static inline void gb_raw(gb_t *b, const void *bytes, size_t len)
{
    if (b->cap - b->len < len) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap - b->len < len)
            cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data)
            abort(); /* test code */
        b->cap = cap;
    }
    if (len)
        memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

static inline void gb_u8(gb_t *b, uint8_t v) { gb_raw(b, &v, 1); }
static inline void gb_u32(gb_t *b, uint32_t v) { gb_raw(b, &v, 4); }
static inline void gb_u64(gb_t *b, uint64_t v) { gb_raw(b, &v, 8); }

static inline void gb_strn(gb_t *b, const char *s, size_t len)
{
    gb_u64(b, len);
    gb_raw(b, s, len);
}

static inline void gb_str(gb_t *b, const char *s) { gb_strn(b, s, strlen(s)); }

static inline void gb_header(gb_t *b, uint32_t version, uint64_t tensors, uint64_t kvs)
{
    gb_raw(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, tensors);
    gb_u64(b, kvs);
}

/* Key and value type; the caller appends the value. */
static inline void gb_key(gb_t *b, const char *key, uint32_t type)
{
    gb_str(b, key);
    gb_u32(b, type);
}

static inline void gb_kv_str(gb_t *b, const char *key, const char *value)
{
    gb_key(b, key, 8);
    gb_str(b, value);
}

static inline void gb_kv_u32(gb_t *b, const char *key, uint32_t value)
{
    gb_key(b, key, 4);
    gb_u32(b, value);
}

/* A tensor info; ne in ggml's order (ne[0] innermost). */
static inline void gb_tensor(gb_t *b, const char *name, uint32_t ndim, const uint64_t *ne,
                             uint32_t type, uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, ndim);
    for (uint32_t i = 0; i < ndim; i++)
        gb_u64(b, ne[i]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

static inline void gb_zeros(gb_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gb_u8(b, 0);
}

static inline void gb_pad(gb_t *b, size_t align)
{
    gb_zeros(b, (align - b->len % align) % align);
}

/* n bytes of a pattern that differs per seed. */
static inline void gb_pattern(gb_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        gb_u8(b, (uint8_t)((i * 131 + seed * 17 + (i >> 8)) & 0xff));
}

static inline int gb_write(const gb_t *b, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = fwrite(b->data, 1, b->len, f);
    return fclose(f) == 0 && put == b->len ? 0 : -1;
}

static inline void gb_free(gb_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

#endif
