/* gguf_read.c — open and fully validate a GGUF file (v2 or v3, little-endian) as a checkpoint of
 * one file, so that the loader, the host tier and `nexusctl model` take it like safetensors.
 *
 * Nothing in the file is trusted: every count and length is checked against the bytes left
 * before anything is allocated for it, metadata memory is capped, and each rule that fails
 * names the file, the key or tensor, and the field. The header region is read through one
 * large window of buffered preads (a tokenizer's 150k strings are 300k small fields). The
 * parser is fuzzed (tests/fuzz_gguf_header.c) through nx__gguf_from_buffer.
 *
 * Layout (docs/gguf.md in ggml): magic "GGUF", u32 version, u64 tensor count, u64 key/value
 * count, the key/values, the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml type,
 * u64 offset), padding to general.alignment, the data section. ne[0] is the innermost
 * dimension, so our row-major shape is ne reversed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_internal.h"

#define WINDOW_BYTES (8u << 20)   /* the most one pread of the header region asks for */
#define MIN_KV_BYTES 13u          /* key length 8 + a 1-byte key + type 4 */
#define MIN_TENSOR_INFO_BYTES 24u /* name length 8 + n_dims 4 + type 4 + offset 8 */
#define STRING_PREFIX_BYTES 8u    /* a string's u64 length */
#define MAX_NAME_BYTES 65535u     /* tensor names: ggml takes 63; this only bounds nonsense */

typedef struct parser {
    nx_st_t *st;
    const char *label;
    nx_err_t *err;
    int fd;               /* -1 when reading from mem */
    const uint8_t *mem;
    uint64_t size;        /* bytes in the file */
    uint64_t pos;         /* next byte to parse */
    uint8_t *window;      /* fd only: bytes [window_at, window_at + window_len) of the file */
    size_t window_cap;
    uint64_t window_at;
    size_t window_len;
    uint64_t meta_bytes;  /* metadata memory held so far */
    /* What is being read, for messages: "key" or "tensor" (NULL: the header), its name once
     * known, else its index. */
    const char *what;
    const char *name;
    uint64_t index;
} parser_t;

static int fail(parser_t *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(parser_t *p, int code, const char *fmt, ...)
{
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (!p->what)
        return nx_err_set(p->err, code, "%s: header: %s", p->label, detail);
    if (p->name)
        return nx_err_set(p->err, code, "%s: %s '%.200s': %s", p->label, p->what, p->name,
                          detail);
    return nx_err_set(p->err, code, "%s: %s #%llu: %s", p->label, p->what,
                      (unsigned long long)p->index, detail);
}

static uint64_t bytes_left(const parser_t *p)
{
    return p->size - p->pos;
}

static int truncated(parser_t *p, const char *field, uint64_t need)
{
    return fail(p, NX_EFORMAT,
                "%s (%llu bytes at offset %llu) runs past the end of the file (%llu bytes)", field,
                (unsigned long long)need, (unsigned long long)p->pos,
                (unsigned long long)p->size);
}

/* Fill the window from p->pos on. */
static int refill(parser_t *p)
{
    uint64_t left = bytes_left(p);
    size_t len = left < p->window_cap ? (size_t)left : p->window_cap;
    int rc = nx__st_pread_full(p->fd, p->window, len, p->pos, p->label, p->err);
    p->window_at = p->pos;
    p->window_len = rc == NX_OK ? len : 0;
    return rc;
}

/* The next n bytes (n at most 8: one field) in place; NULL after setting the error. */
static const uint8_t *take(parser_t *p, size_t n, const char *field)
{
    if (n > bytes_left(p)) {
        truncated(p, field, n);
        return NULL;
    }
    const uint8_t *at;
    if (p->fd < 0) {
        at = p->mem + p->pos;
    } else {
        if (p->pos < p->window_at || p->pos + n > p->window_at + p->window_len) {
            if (refill(p) != NX_OK)
                return NULL;
        }
        at = p->window + (p->pos - p->window_at);
    }
    p->pos += n;
    return at;
}

/* Copy the next n bytes (any size) into dst. */
static int copy_out(parser_t *p, void *dst, uint64_t n, const char *field)
{
    if (n > bytes_left(p))
        return truncated(p, field, n);
    if (p->fd < 0) {
        memcpy(dst, p->mem + p->pos, (size_t)n);
        p->pos += n;
        return NX_OK;
    }
    uint8_t *out = dst;
    while (n > 0) {
        if (p->pos >= p->window_at && p->pos < p->window_at + p->window_len) {
            size_t have = (size_t)(p->window_at + p->window_len - p->pos);
            size_t len = n < have ? (size_t)n : have;
            memcpy(out, p->window + (p->pos - p->window_at), len);
            out += len;
            p->pos += len;
            n -= len;
        } else if (n >= p->window_cap) {
            /* A big array: straight into its place, no detour through the window. */
            int rc = nx__st_pread_full(p->fd, out, (size_t)n, p->pos, p->label, p->err);
            if (rc != NX_OK)
                return rc;
            p->pos += n;
            n = 0;
        } else if (refill(p) != NX_OK) {
            return p->err->code;
        }
    }
    return NX_OK;
}

static int read_u32(parser_t *p, const char *field, uint32_t *out)
{
    *out = 0; /* defined on failure too */
    const uint8_t *at = take(p, 4, field);
    if (!at)
        return p->err->code;
    memcpy(out, at, 4);
    return NX_OK;
}

static int read_u64(parser_t *p, const char *field, uint64_t *out)
{
    *out = 0; /* defined on failure too */
    const uint8_t *at = take(p, 8, field);
    if (!at)
        return p->err->code;
    memcpy(out, at, 8);
    return NX_OK;
}

/* Arena memory for metadata (8-byte aligned arrays and tables, unaligned string bytes),
 * counted against the cap. */
static void *meta_alloc_aligned(parser_t *p, uint64_t bytes, size_t align)
{
    if (bytes > NX__GGUF_MAX_META_BYTES - p->meta_bytes) {
        fail(p, NX_EFORMAT, "metadata needs more than %llu MiB of memory",
             (unsigned long long)(NX__GGUF_MAX_META_BYTES >> 20));
        return NULL;
    }
    void *out = nx__st_arena_alloc_aligned(p->st, bytes ? (size_t)bytes : 1, align);
    if (!out)
        fail(p, NX_ENOMEM, "out of memory for %llu bytes of metadata",
             (unsigned long long)bytes);
    p->meta_bytes += bytes;
    return out;
}

static void *meta_alloc(parser_t *p, uint64_t bytes)
{
    return meta_alloc_aligned(p, bytes, 8);
}

/* A GGUF string (u64 length, bytes) into the arena, NUL-terminated. */
static int read_string(parser_t *p, const char *field, uint64_t max_len, nx__gguf_str_t *out)
{
    uint64_t len;
    int rc = read_u64(p, field, &len);
    if (rc != NX_OK)
        return rc;
    if (len > max_len)
        return fail(p, NX_EFORMAT, "%s length %llu is over the limit of %llu bytes", field,
                    (unsigned long long)len, (unsigned long long)max_len);
    if (len > bytes_left(p))
        return fail(p, NX_EFORMAT,
                    "%s length %llu runs past the end of the file (%llu bytes left at offset "
                    "%llu)",
                    field, (unsigned long long)len, (unsigned long long)bytes_left(p),
                    (unsigned long long)p->pos);
    char *text = meta_alloc_aligned(p, len + 1, 1);
    if (!text)
        return p->err->code;
    rc = copy_out(p, text, len, field);
    text[len] = '\0';
    out->ptr = text;
    out->len = len;
    return rc;
}

/* A key or tensor name: not empty (keys), no NUL inside (we hand names out NUL-terminated). */
static int read_name(parser_t *p, const char *field, uint64_t max_len, bool empty_ok,
                     const char **out)
{
    nx__gguf_str_t name;
    int rc = read_string(p, field, max_len, &name);
    if (rc != NX_OK)
        return rc;
    if (name.len == 0 && !empty_ok)
        return fail(p, NX_EFORMAT, "%s is empty", field);
    if (strlen(name.ptr) != name.len)
        return fail(p, NX_EFORMAT, "%s holds a NUL byte at %zu", field, strlen(name.ptr));
    *out = name.ptr;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Value types
 */

static const struct {
    const char *name; /* as ggml's gguf_type_name */
    uint32_t size;    /* bytes of one element; 0 for str and arr */
} type_info[NX_GGUF__COUNT] = {
    [NX_GGUF_U8] = {"u8", 1},    [NX_GGUF_I8] = {"i8", 1},     [NX_GGUF_U16] = {"u16", 2},
    [NX_GGUF_I16] = {"i16", 2},  [NX_GGUF_U32] = {"u32", 4},   [NX_GGUF_I32] = {"i32", 4},
    [NX_GGUF_F32] = {"f32", 4},  [NX_GGUF_BOOL] = {"bool", 1}, [NX_GGUF_STRING] = {"str", 0},
    [NX_GGUF_ARRAY] = {"arr", 0}, [NX_GGUF_U64] = {"u64", 8},  [NX_GGUF_I64] = {"i64", 8},
    [NX_GGUF_F64] = {"f64", 8},
};

const char *nx_gguf_type_name(nx_gguf_type_t type)
{
    return (unsigned)type < NX_GGUF__COUNT ? type_info[type].name : "?";
}

uint32_t nx__gguf_type_size(nx_gguf_type_t type)
{
    return (unsigned)type < NX_GGUF__COUNT ? type_info[type].size : 0;
}

/* Bools are one byte, 0 or 1: "anything else is invalid" (the spec). */
static int check_bools(parser_t *p, const uint8_t *values, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        if (values[i] > 1)
            return fail(p, NX_EFORMAT, "bool value %u (element %llu) is neither 0 nor 1",
                        values[i], (unsigned long long)i);
    }
    return NX_OK;
}

static int read_array(parser_t *p, nx_gguf_kv_t *kv)
{
    uint32_t elem_type;
    int rc = read_u32(p, "array element type", &elem_type);
    if (rc == NX_OK)
        rc = read_u64(p, "array length", &kv->count);
    if (rc != NX_OK)
        return rc;
    if (elem_type == NX_GGUF_ARRAY)
        return fail(p, NX_EFORMAT, "arrays of arrays are not supported");
    if (elem_type >= NX_GGUF__COUNT)
        return fail(p, NX_EFORMAT, "unknown array element type %u", elem_type);
    kv->elem_type = (nx_gguf_type_t)elem_type;
    uint64_t count = kv->count;
    if (elem_type == NX_GGUF_STRING) {
        if (count > bytes_left(p) / STRING_PREFIX_BYTES)
            return fail(p, NX_EFORMAT,
                        "array of %llu strings runs past the end of the file (%llu bytes left "
                        "at offset %llu)",
                        (unsigned long long)count, (unsigned long long)bytes_left(p),
                        (unsigned long long)p->pos);
        nx__gguf_str_t *table = meta_alloc(p, count * sizeof *table);
        if (!table)
            return p->err->code;
        for (uint64_t i = 0; i < count && rc == NX_OK; i++)
            rc = read_string(p, "array string", UINT64_MAX, &table[i]);
        kv->strs = table;
        return rc;
    }
    uint32_t size = type_info[elem_type].size;
    if (count > bytes_left(p) / size)
        return fail(p, NX_EFORMAT,
                    "array of %llu %s runs past the end of the file (%llu bytes left at offset "
                    "%llu)",
                    (unsigned long long)count, type_info[elem_type].name,
                    (unsigned long long)bytes_left(p), (unsigned long long)p->pos);
    void *values = meta_alloc(p, count * size);
    if (!values)
        return p->err->code;
    rc = copy_out(p, values, count * size, "array data");
    if (rc == NX_OK && elem_type == NX_GGUF_BOOL)
        rc = check_bools(p, values, count);
    kv->array = values;
    return rc;
}

static int read_value(parser_t *p, nx_gguf_kv_t *kv)
{
    uint32_t type;
    int rc = read_u32(p, "value type", &type);
    if (rc != NX_OK)
        return rc;
    if (type >= NX_GGUF__COUNT)
        return fail(p, NX_EFORMAT, "unknown value type %u", type);
    kv->type = kv->elem_type = (nx_gguf_type_t)type;
    kv->count = 1;
    if (type == NX_GGUF_ARRAY)
        return read_array(p, kv);
    if (type == NX_GGUF_STRING) {
        nx__gguf_str_t *one = meta_alloc(p, sizeof *one);
        if (!one)
            return p->err->code;
        kv->strs = one;
        return read_string(p, "string value", UINT64_MAX, one);
    }
    const uint8_t *at = take(p, type_info[type].size, "value");
    if (!at)
        return p->err->code;
    memcpy(&kv->scalar, at, type_info[type].size);
    return type == NX_GGUF_BOOL ? check_bools(p, at, 1) : NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Key/values
 */

static const nx_gguf_kv_t *kv_lookup(const nx_st_t *st, const char *key)
{
    if (!key || !st->kv_slots)
        return NULL;
    size_t mask = st->kv_slot_count - 1;
    for (size_t slot = (size_t)nx__st_name_hash(key) & mask; st->kv_slots[slot];
         slot = (slot + 1) & mask) {
        const nx_gguf_kv_t *kv = &st->kvs[st->kv_slots[slot] - 1];
        if (strcmp(kv->key, key) == 0)
            return kv;
    }
    return NULL;
}

/* Index the keys; a key given twice is an error. */
static int index_keys(parser_t *p)
{
    nx_st_t *st = p->st;
    size_t slot_count = 16;
    while (slot_count < st->kv_count * 2)
        slot_count *= 2;
    st->kv_slots = calloc(slot_count, sizeof *st->kv_slots);
    if (!st->kv_slots)
        return nx_err_set(p->err, NX_ENOMEM, "%s: out of memory indexing %zu keys", p->label,
                          st->kv_count);
    st->kv_slot_count = slot_count;
    for (size_t i = 0; i < st->kv_count; i++) {
        const char *key = st->kvs[i].key;
        size_t slot = (size_t)nx__st_name_hash(key) & (slot_count - 1);
        for (; st->kv_slots[slot]; slot = (slot + 1) & (slot_count - 1)) {
            size_t other = st->kv_slots[slot] - 1;
            if (strcmp(st->kvs[other].key, key) == 0)
                return nx_err_set(p->err, NX_EFORMAT,
                                  "%s: key '%.200s' is given twice (key/values #%zu and #%zu)",
                                  p->label, key, other, i);
        }
        st->kv_slots[slot] = i + 1;
    }
    return NX_OK;
}

static int read_kvs(parser_t *p, uint64_t kv_count)
{
    nx_st_t *st = p->st;
    size_t cap = 0;
    p->what = "key";
    for (uint64_t i = 0; i < kv_count; i++) {
        p->name = NULL;
        p->index = i;
        if (!nx__st_grow((void **)&st->kvs, &cap, st->kv_count + 1, sizeof *st->kvs))
            return fail(p, NX_ENOMEM, "out of memory");
        nx_gguf_kv_t *kv = &st->kvs[st->kv_count];
        memset(kv, 0, sizeof *kv);
        int rc = read_name(p, "key", NX__GGUF_MAX_KEY_BYTES, false, &kv->key);
        if (rc != NX_OK)
            return rc;
        p->name = kv->key;
        rc = read_value(p, kv);
        if (rc != NX_OK)
            return rc;
        st->kv_count++;
    }
    p->what = NULL;
    return index_keys(p);
}

/* general.alignment: absent (32), or a U32 power of two. */
static int read_alignment(parser_t *p)
{
    const nx_gguf_kv_t *kv = kv_lookup(p->st, NX__GGUF_ALIGNMENT_KEY);
    p->st->gguf_alignment = NX__GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return NX_OK;
    p->what = "key";
    p->name = kv->key;
    if (kv->type != NX_GGUF_U32)
        return fail(p, NX_EFORMAT, "must be a u32, not %s%s%s", nx_gguf_type_name(kv->type),
                    kv->type == NX_GGUF_ARRAY ? " of " : "",
                    kv->type == NX_GGUF_ARRAY ? nx_gguf_type_name(kv->elem_type) : "");
    uint32_t alignment = (uint32_t)kv->scalar;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        return fail(p, NX_EFORMAT, "%u is not a power of two", alignment);
    p->st->gguf_alignment = alignment;
    p->what = NULL;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Tensor infos
 */

static int read_shape(parser_t *p, nx_st_tensor_t *t)
{
    uint32_t ndim;
    int rc = read_u32(p, "n_dims", &ndim);
    if (rc != NX_OK)
        return rc;
    if (ndim > NX__GGUF_MAX_DIMS)
        return fail(p, NX_EFORMAT, "n_dims is %u (GGUF allows at most %u dimensions)", ndim,
                    NX__GGUF_MAX_DIMS);
    t->ndim = ndim;
    for (uint32_t j = 0; j < ndim; j++) {
        uint64_t ne;
        rc = read_u64(p, "ne", &ne);
        if (rc != NX_OK)
            return rc;
        if (ne == 0)
            return fail(p, NX_EFORMAT, "ne[%u] is 0 (an empty tensor)", j);
        if (ne > INT64_MAX)
            return fail(p, NX_EFORMAT, "ne[%u] = %llu overflows (ggml's limit is 2^63 - 1)", j,
                        (unsigned long long)ne);
        t->shape[ndim - 1 - j] = ne; /* ne[0] is innermost: the last of a row-major shape */
    }
    return NX_OK;
}

static int read_type_and_size(parser_t *p, nx_st_tensor_t *t)
{
    uint32_t ggml_type;
    int rc = read_u32(p, "type", &ggml_type);
    if (rc != NX_OK)
        return rc;
    if (!nx_dtype_from_ggml(ggml_type, &t->dtype))
        return fail(p, NX_EFORMAT, "unknown tensor type (ggml type id %u)", ggml_type);
    char shape[160];
    nx__st_format_shape(shape, sizeof shape, t->shape, t->ndim);
    uint64_t bytes = 0;
    switch (nx__st_tensor_bytes(t->dtype, t->shape, t->ndim, &bytes)) {
    case NX__ST_SIZE_BLOCK:
        return fail(p, NX_EFORMAT,
                    "shape %s: a %s row (ne[0] = %llu) is not a multiple of the block (%u "
                    "elements)",
                    shape, nx_dtype_name(t->dtype),
                    (unsigned long long)(t->ndim ? t->shape[t->ndim - 1] : 1),
                    nx_dtype_block_elems(t->dtype));
    case NX__ST_SIZE_OVERFLOW:
    case NX__ST_SIZE_PARTIAL: /* no GGUF type has sub-byte elements */
        return fail(p, NX_EFORMAT, "shape %s of %s overflows 64 bits", shape,
                    nx_dtype_name(t->dtype));
    case NX__ST_SIZE_OK:
        break;
    }
    if (bytes > INT64_MAX)
        return fail(p, NX_EFORMAT, "shape %s of %s is %llu bytes, which overflows", shape,
                    nx_dtype_name(t->dtype), (unsigned long long)bytes);
    t->bytes = bytes;
    return NX_OK;
}

static int read_tensor_info(parser_t *p, uint64_t index)
{
    nx_st_t *st = p->st;
    nx_st_tensor_t t = {.file_index = 0};
    p->what = "tensor";
    p->name = NULL;
    p->index = index;
    int rc = read_name(p, "name", MAX_NAME_BYTES, true, &t.name);
    if (rc != NX_OK)
        return rc;
    p->name = t.name;
    rc = read_shape(p, &t);
    if (rc == NX_OK)
        rc = read_type_and_size(p, &t);
    if (rc == NX_OK)
        rc = read_u64(p, "offset", &t.begin);
    if (rc != NX_OK)
        return rc;
    if (t.begin % st->gguf_alignment != 0)
        return fail(p, NX_EFORMAT, "offset %llu is not a multiple of general.alignment (%u)",
                    (unsigned long long)t.begin, st->gguf_alignment);
    if (!nx__st_grow((void **)&st->tensors, &st->tensor_cap, st->tensor_count + 1,
                     sizeof *st->tensors))
        return fail(p, NX_ENOMEM, "out of memory");
    st->tensors[st->tensor_count++] = t;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * The file
 */

bool nx__gguf_magic(const void *first4)
{
    return memcmp(first4, NX__GGUF_MAGIC, 4) == 0;
}

static int read_preamble(parser_t *p, uint64_t *tensor_count, uint64_t *kv_count)
{
    const uint8_t *magic = take(p, 4, "magic");
    if (!magic)
        return p->err->code;
    if (!nx__gguf_magic(magic)) {
        char shown[5];
        for (int i = 0; i < 4; i++)
            shown[i] = magic[i] >= 0x20 && magic[i] < 0x7f ? (char)magic[i] : '?';
        shown[4] = '\0';
        return fail(p, NX_EFORMAT,
                    "not a GGUF file: the magic is '%s' (%02x %02x %02x %02x), not 'GGUF'", shown,
                    magic[0], magic[1], magic[2], magic[3]);
    }
    uint32_t version;
    int rc = read_u32(p, "version", &version);
    if (rc != NX_OK)
        return rc;
    p->st->gguf_version = version;
    if (version == 1)
        return fail(p, NX_EFORMAT, "GGUF v1 is not supported (only v2 and v3)");
    /* A big-endian file's version 3 reads as 0x03000000 here: the low half is 0 for every
     * version that makes sense byte-swapped (the check llama.cpp makes). */
    if (version != 0 && (version & 0xffffu) == 0)
        return fail(p, NX_EFORMAT,
                    "version reads as 0x%08x, which is a byte-swapped version: a big-endian GGUF "
                    "file (only little-endian files are supported)",
                    version);
    if (version != 2 && version != 3)
        return fail(p, NX_EFORMAT, "GGUF version %u is not supported (only v2 and v3)", version);
    rc = read_u64(p, "tensor count", tensor_count);
    if (rc == NX_OK)
        rc = read_u64(p, "key/value count", kv_count);
    if (rc != NX_OK)
        return rc;
    if (*kv_count > bytes_left(p) / MIN_KV_BYTES)
        return fail(p, NX_EFORMAT,
                    "key/value count %llu cannot fit in the %llu bytes after the header",
                    (unsigned long long)*kv_count, (unsigned long long)bytes_left(p));
    if (*tensor_count > bytes_left(p) / MIN_TENSOR_INFO_BYTES)
        return fail(p, NX_EFORMAT, "tensor count %llu cannot fit in the %llu bytes after the header",
                    (unsigned long long)*tensor_count, (unsigned long long)bytes_left(p));
    return NX_OK;
}

/* Where the data section starts: the first multiple of the alignment after the infos. */
static int place_data_section(parser_t *p)
{
    nx_st_t *st = p->st;
    nx_st_file_t *file = &st->files[0];
    uint64_t align = st->gguf_alignment;
    uint64_t data_offset = (p->pos + align - 1) / align * align;
    p->what = NULL;
    if (data_offset > p->size) {
        if (st->tensor_count > 0)
            return fail(p, NX_EFORMAT,
                        "the data section would start at %llu (the tensor infos end at %llu, "
                        "aligned to %llu), past the end of the file (%llu bytes)",
                        (unsigned long long)data_offset, (unsigned long long)p->pos,
                        (unsigned long long)align, (unsigned long long)p->size);
        data_offset = p->size; /* no tensors: a missing tail of padding harms nobody */
    }
    file->header_bytes = p->pos;
    file->data_offset = data_offset;
    file->data_bytes = p->size - data_offset;
    return NX_OK;
}

static int parse(parser_t *p)
{
    nx_st_t *st = p->st;
    int rc = nx__st_add_file(st, p->label, p->size, 0, 0, p->err);
    uint64_t tensor_count = 0, kv_count = 0;
    if (rc == NX_OK)
        rc = read_preamble(p, &tensor_count, &kv_count);
    if (rc == NX_OK)
        rc = read_kvs(p, kv_count);
    if (rc == NX_OK)
        rc = read_alignment(p);
    for (uint64_t i = 0; rc == NX_OK && i < tensor_count; i++)
        rc = read_tensor_info(p, i);
    if (rc == NX_OK)
        rc = place_data_section(p);
    /* Names first, so that a name given twice is reported as such rather than as an overlap;
     * then the ranges (which sorts the tensors into storage order), then the index again. */
    if (rc == NX_OK)
        rc = nx__st_build_index(st, p->err);
    if (rc == NX_OK)
        rc = nx__st_check_ranges(st, p->label, true, p->err);
    if (rc == NX_OK)
        rc = nx__st_build_index(st, p->err);
    if (rc == NX_OK)
        st->files[0].digest = nx__gguf_metadata(st, NX_ST_DIGEST_KEY);
    return rc;
}

int nx__gguf_open_file(nx_st_t *st, const char *path, nx_err_t *err)
{
    nx_err_t local_err;
    if (!err)
        err = &local_err; /* the parser reads the code back from it */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return nx_err_set(err, errno == ENOENT || errno == ENOTDIR ? NX_ENOTFOUND : NX_EIO,
                          "%s: cannot open: %s", path, strerror(errno));
    parser_t p = {.st = st, .label = path, .err = err, .fd = fd};
    struct stat sb;
    int rc;
    if (fstat(fd, &sb) != 0) {
        rc = nx_err_set(err, NX_EIO, "%s: stat failed: %s", path, strerror(errno));
        goto out_close;
    }
    p.size = (uint64_t)sb.st_size;
    p.window_cap = p.size < WINDOW_BYTES ? (size_t)p.size : WINDOW_BYTES;
    p.window = malloc(p.window_cap ? p.window_cap : 1);
    if (!p.window) {
        rc = nx_err_set(err, NX_ENOMEM, "%s: out of memory for a %zu-byte read window", path,
                        p.window_cap);
        goto out_close;
    }
    rc = parse(&p);
    free(p.window);
out_close:
    close(fd);
    return rc;
}

nx_st_t *nx__gguf_from_buffer(const char *label, const void *bytes, size_t len, nx_err_t *err)
{
    nx_err_t local_err;
    if (!err)
        err = &local_err;
    nx_st_t *st = nx__st_new(label);
    if (!st) {
        nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
        return NULL;
    }
    parser_t p = {.st = st, .label = label, .err = err, .fd = -1, .mem = bytes, .size = len};
    if (parse(&p) != NX_OK)
        nx_st_destroy(&st);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * Accessors
 */

bool nx_st_is_gguf(const nx_st_t *self)
{
    return self && self->gguf_version != 0;
}

uint32_t nx_st_gguf_version(const nx_st_t *self)
{
    return self ? self->gguf_version : 0;
}

uint32_t nx_st_gguf_alignment(const nx_st_t *self)
{
    return self ? self->gguf_alignment : 0;
}

size_t nx_st_gguf_kv_count(const nx_st_t *self)
{
    return self ? self->kv_count : 0;
}

const nx_gguf_kv_t *nx_st_gguf_kv_at(const nx_st_t *self, size_t index)
{
    return self && index < self->kv_count ? &self->kvs[index] : NULL;
}

const nx_gguf_kv_t *nx_st_gguf_find(const nx_st_t *self, const char *key)
{
    return self ? kv_lookup(self, key) : NULL;
}

const char *nx__gguf_metadata(const nx_st_t *st, const char *key)
{
    const nx_gguf_kv_t *kv = kv_lookup(st, key);
    return kv && kv->type == NX_GGUF_STRING ? kv->strs[0].ptr : NULL;
}

const char *nx_gguf_kv_key(const nx_gguf_kv_t *kv)
{
    return kv->key;
}

nx_gguf_type_t nx_gguf_kv_type(const nx_gguf_kv_t *kv)
{
    return kv->type;
}

nx_gguf_type_t nx_gguf_kv_elem_type(const nx_gguf_kv_t *kv)
{
    return kv->elem_type;
}

uint64_t nx_gguf_kv_count(const nx_gguf_kv_t *kv)
{
    return kv->count;
}

const void *nx_gguf_kv_array_data(const nx_gguf_kv_t *kv)
{
    return kv->type == NX_GGUF_ARRAY ? kv->array : NULL;
}

/* Element i of a number or bool kv, as stored (zero-extended); false for strings or past the
 * end. */
static bool load_elem(const nx_gguf_kv_t *kv, uint64_t i, uint64_t *raw)
{
    uint32_t size = nx__gguf_type_size(kv->elem_type);
    if (i >= kv->count || size == 0)
        return false;
    const void *from = kv->type == NX_GGUF_ARRAY ? (const char *)kv->array + i * size
                                                 : (const void *)&kv->scalar;
    *raw = 0;
    memcpy(raw, from, size);
    return true;
}

/* An integer element as a sign and magnitude; false for floats and strings. */
static bool load_int(const nx_gguf_kv_t *kv, uint64_t i, bool *negative, uint64_t *magnitude)
{
    uint64_t raw;
    if (!load_elem(kv, i, &raw))
        return false;
    int64_t s;
    switch (kv->elem_type) {
    case NX_GGUF_U8: case NX_GGUF_U16: case NX_GGUF_U32: case NX_GGUF_U64: case NX_GGUF_BOOL:
        *negative = false;
        *magnitude = raw;
        return true;
    case NX_GGUF_I8: s = (int8_t)raw; break;
    case NX_GGUF_I16: s = (int16_t)raw; break;
    case NX_GGUF_I32: s = (int32_t)raw; break;
    case NX_GGUF_I64: s = (int64_t)raw; break;
    default:
        return false;
    }
    *negative = s < 0;
    *magnitude = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return true;
}

bool nx_gguf_get_u64(const nx_gguf_kv_t *kv, uint64_t i, uint64_t *out)
{
    bool negative;
    uint64_t magnitude;
    if (!kv || !load_int(kv, i, &negative, &magnitude) || negative)
        return false;
    *out = magnitude;
    return true;
}

bool nx_gguf_get_i64(const nx_gguf_kv_t *kv, uint64_t i, int64_t *out)
{
    bool negative;
    uint64_t magnitude;
    if (!kv || !load_int(kv, i, &negative, &magnitude))
        return false;
    if (negative) {
        if (magnitude > (uint64_t)INT64_MAX + 1)
            return false;
        *out = magnitude == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)magnitude;
    } else {
        if (magnitude > INT64_MAX)
            return false;
        *out = (int64_t)magnitude;
    }
    return true;
}

bool nx_gguf_get_f64(const nx_gguf_kv_t *kv, uint64_t i, double *out)
{
    uint64_t raw;
    if (!kv || kv->elem_type == NX_GGUF_BOOL || !load_elem(kv, i, &raw))
        return false;
    if (kv->elem_type == NX_GGUF_F32) {
        float f;
        uint32_t bits = (uint32_t)raw;
        memcpy(&f, &bits, sizeof f);
        *out = f;
        return true;
    }
    if (kv->elem_type == NX_GGUF_F64) {
        memcpy(out, &raw, sizeof *out);
        return true;
    }
    bool negative;
    uint64_t magnitude;
    if (!load_int(kv, i, &negative, &magnitude))
        return false;
    /* Integers past 2^53 convert only when the double holds them exactly. */
    double value = (double)magnitude;
    if (magnitude > (1ull << 53) && (value >= 18446744073709551616.0 || (uint64_t)value != magnitude))
        return false;
    *out = negative ? -value : value;
    return true;
}

bool nx_gguf_get_bool(const nx_gguf_kv_t *kv, uint64_t i, bool *out)
{
    uint64_t raw;
    if (!kv || kv->elem_type != NX_GGUF_BOOL || !load_elem(kv, i, &raw))
        return false;
    *out = raw != 0;
    return true;
}

const char *nx_gguf_get_str(const nx_gguf_kv_t *kv, uint64_t i, size_t *len_out)
{
    if (!kv || kv->elem_type != NX_GGUF_STRING || i >= kv->count)
        return NULL;
    if (len_out)
        *len_out = (size_t)kv->strs[i].len;
    return kv->strs[i].ptr;
}
