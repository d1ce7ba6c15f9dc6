/* gguf_write.c — nx_gguf_save: write key/values and tensors as a GGUF v3 file that llama.cpp
 * reads, with our habits on top, as nx_st_save has them for safetensors: the data section
 * starts on a 4 KiB boundary (O_DIRECT reads need no head fix-up), its xxh3-64 is recorded in
 * the file (key nexus.digest), and the write is atomic (st_write.c's writer: temporary file in
 * the same directory, fsync, rename, fsync of the directory).
 *
 * Layout: header, general.alignment (u32 32), the caller's key/values in order, nexus.digest
 * (a fixed-width string, overwritten once the data is hashed), nexus.pad (a string of spaces
 * sized so the tensor infos end on a 4 KiB boundary), the tensor infos, then the data: each
 * tensor at the next multiple of 32, zero bytes between, the last one padded to 32 as ggml's
 * writer does. The digest covers the whole data section, padding included, so that
 * nx_st_verify_digest can hash [data_offset, end of file) for either format.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_internal.h"

#define GGUF_VERSION 3u
#define TENSOR_ALIGN 32u
#define GGML_MAX_NAME 64u /* llama.cpp refuses tensor names of this many bytes or more */
#define ZERO_BYTES 64u    /* enough zeros for any padding to TENSOR_ALIGN */
#define DIGEST_PLACEHOLDER NX__ST_DIGEST_PREFIX "0000000000000000"

_Static_assert(NX_ST_ALIGN % TENSOR_ALIGN == 0, "the 4 KiB data start is tensor-aligned");

/* ------------------------------------------------------------------------------------------
 * Input validation
 */

static bool is_reserved_key(const char *key)
{
    return strcmp(key, NX__GGUF_ALIGNMENT_KEY) == 0 || strcmp(key, NX_ST_DIGEST_KEY) == 0 ||
           strcmp(key, NX__GGUF_PAD_KEY) == 0;
}

/* Whether an integer scalar fits its type. */
static bool int_fits(const nx_gguf_kv_spec_t *kv)
{
    switch (kv->type) {
    case NX_GGUF_U8: return kv->value.u <= UINT8_MAX;
    case NX_GGUF_U16: return kv->value.u <= UINT16_MAX;
    case NX_GGUF_U32: return kv->value.u <= UINT32_MAX;
    case NX_GGUF_I8: return kv->value.i >= INT8_MIN && kv->value.i <= INT8_MAX;
    case NX_GGUF_I16: return kv->value.i >= INT16_MIN && kv->value.i <= INT16_MAX;
    case NX_GGUF_I32: return kv->value.i >= INT32_MIN && kv->value.i <= INT32_MAX;
    default: return true;
    }
}

static int validate_array(const nx_gguf_kv_spec_t *kv, nx_err_t *err)
{
    if (kv->elem_type >= NX_GGUF__COUNT || kv->elem_type == NX_GGUF_ARRAY)
        return nx_err_set(err, NX_EINVAL, "key '%s': array element type %d is not a scalar "
                                          "type or STRING (GGUF arrays do not nest here)",
                          kv->key, (int)kv->elem_type);
    if (kv->count > 0 && !kv->array)
        return nx_err_set(err, NX_EINVAL, "key '%s': %llu array elements but no array", kv->key,
                          (unsigned long long)kv->count);
    if (kv->elem_type == NX_GGUF_STRING) {
        const char *const *strs = kv->array;
        for (uint64_t i = 0; i < kv->count; i++) {
            if (!strs[i])
                return nx_err_set(err, NX_EINVAL, "key '%s': string element %llu is NULL",
                                  kv->key, (unsigned long long)i);
        }
    }
    if (kv->elem_type == NX_GGUF_BOOL) {
        const uint8_t *bools = kv->array;
        for (uint64_t i = 0; i < kv->count; i++) {
            if (bools[i] > 1)
                return nx_err_set(err, NX_EINVAL, "key '%s': bool element %llu is %u, not 0 or 1",
                                  kv->key, (unsigned long long)i, bools[i]);
        }
    }
    return NX_OK;
}

static int validate_kv(const nx_gguf_kv_spec_t *kv, size_t index, nx_err_t *err)
{
    if (!kv->key || !*kv->key)
        return nx_err_set(err, NX_EINVAL, "key/value #%zu has no key", index);
    if (strlen(kv->key) > NX__GGUF_MAX_KEY_BYTES)
        return nx_err_set(err, NX_EINVAL, "key #%zu is %zu bytes (GGUF's limit is %u)", index,
                          strlen(kv->key), NX__GGUF_MAX_KEY_BYTES);
    if (is_reserved_key(kv->key))
        return nx_err_set(err, NX_EINVAL, "key '%s' is written by nx_gguf_save", kv->key);
    if (kv->type >= NX_GGUF__COUNT)
        return nx_err_set(err, NX_EINVAL, "key '%s': value type %d is not a GGUF type", kv->key,
                          (int)kv->type);
    if (kv->type == NX_GGUF_ARRAY)
        return validate_array(kv, err);
    if (kv->type == NX_GGUF_STRING && !kv->value.str)
        return nx_err_set(err, NX_EINVAL, "key '%s': string value is NULL", kv->key);
    if (!int_fits(kv))
        return nx_err_set(err, NX_EINVAL, "key '%s': value does not fit %s", kv->key,
                          nx_gguf_type_name(kv->type));
    return NX_OK;
}

static int compare_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* names[i] = name of item i (NULL-free); reports the first name given twice. */
static int check_unique(const char **names, size_t count, const char *what, nx_err_t *err)
{
    qsort(names, count, sizeof *names, compare_str_ptr);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(names[i - 1], names[i]) == 0)
            return nx_err_set(err, NX_EINVAL, "%s '%s' is given twice", what, names[i]);
    }
    return NX_OK;
}

static int validate_tensor(const nx_st_tensor_spec_t *t, size_t index,
                           const nx_st_save_opts_t *opts, uint64_t *bytes_out, nx_err_t *err)
{
    if (!t->name || !*t->name)
        return nx_err_set(err, NX_EINVAL, "tensor #%zu has an empty name", index);
    if (strlen(t->name) >= GGML_MAX_NAME)
        return nx_err_set(err, NX_EINVAL,
                          "tensor '%s': the name is %zu bytes (llama.cpp takes at most %u)",
                          t->name, strlen(t->name), GGML_MAX_NAME - 1);
    if ((unsigned)t->dtype >= NX_DT__COUNT || nx_dtype_to_ggml(t->dtype) < 0)
        return nx_err_set(err, NX_EINVAL, "tensor '%s': dtype %s has no GGUF type", t->name,
                          nx_dtype_name(t->dtype));
    if (t->ndim < 1 || t->ndim > NX__GGUF_MAX_DIMS)
        return nx_err_set(err, NX_EINVAL, "tensor '%s': %u dimensions (GGUF takes 1 to %u)",
                          t->name, t->ndim, NX__GGUF_MAX_DIMS);
    char shape[160];
    nx__st_format_shape(shape, sizeof shape, t->shape, t->ndim);
    for (uint32_t d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0 || t->shape[d] > INT64_MAX)
            return nx_err_set(err, NX_EINVAL, "tensor '%s': shape %s has dimension %u of %llu",
                              t->name, shape, d, (unsigned long long)t->shape[d]);
    }
    switch (nx__st_tensor_bytes(t->dtype, t->shape, t->ndim, bytes_out)) {
    case NX__ST_SIZE_BLOCK:
        return nx_err_set(err, NX_EINVAL,
                          "tensor '%s': shape %s: the last dimension is not a multiple of %s's "
                          "block (%u elements)",
                          t->name, shape, nx_dtype_name(t->dtype),
                          nx_dtype_block_elems(t->dtype));
    case NX__ST_SIZE_OVERFLOW:
    case NX__ST_SIZE_PARTIAL:
        return nx_err_set(err, NX_EINVAL, "tensor '%s': shape %s of %s overflows", t->name,
                          shape, nx_dtype_name(t->dtype));
    case NX__ST_SIZE_OK:
        break;
    }
    if (*bytes_out > INT64_MAX / 2)
        return nx_err_set(err, NX_EINVAL, "tensor '%s': shape %s of %s overflows", t->name, shape,
                          nx_dtype_name(t->dtype));
    if (!t->data && !(opts && opts->fill))
        return nx_err_set(err, NX_EINVAL, "tensor '%s' has no data and no fill callback",
                          t->name);
    return NX_OK;
}

/* Validate everything and give each tensor's bytes and offset in the data section. */
static int validate_inputs(const nx_gguf_kv_spec_t *kvs, size_t kv_count,
                           const nx_st_tensor_spec_t *tensors, size_t count,
                           const nx_st_save_opts_t *opts, uint64_t *bytes, uint64_t *begins,
                           uint64_t *data_bytes_out, nx_err_t *err)
{
    if ((kv_count && !kvs) || (count && !tensors))
        return nx_err_set(err, NX_EINVAL, "%zu key/values and %zu tensors but a NULL list",
                          kv_count, count);
    if (opts && opts->meta_count)
        return nx_err_set(err, NX_EINVAL,
                          "opts->meta_* are safetensors __metadata__; give GGUF key/values in kvs");
    int rc = NX_OK;
    for (size_t i = 0; rc == NX_OK && i < kv_count; i++)
        rc = validate_kv(&kvs[i], i, err);
    uint64_t at = 0;
    for (size_t i = 0; rc == NX_OK && i < count; i++) {
        rc = validate_tensor(&tensors[i], i, opts, &bytes[i], err);
        begins[i] = (at + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
        if (rc == NX_OK && bytes[i] > INT64_MAX - begins[i] - TENSOR_ALIGN)
            rc = nx_err_set(err, NX_EINVAL, "tensor '%s': the data section passes 2^63 bytes",
                            tensors[i].name);
        at = begins[i] + bytes[i];
    }
    *data_bytes_out = (at + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
    size_t names_count = kv_count > count ? kv_count : count;
    const char **names = malloc((names_count ? names_count : 1) * sizeof *names);
    if (rc == NX_OK && !names)
        rc = nx_err_set(err, NX_ENOMEM, "out of memory checking names");
    for (size_t i = 0; rc == NX_OK && i < kv_count; i++)
        names[i] = kvs[i].key;
    if (rc == NX_OK)
        rc = check_unique(names, kv_count, "key", err);
    for (size_t i = 0; rc == NX_OK && i < count; i++)
        names[i] = tensors[i].name;
    if (rc == NX_OK)
        rc = check_unique(names, count, "tensor", err);
    free(names);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * The header, built in memory
 */

typedef struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool oom;
} buf_t;

static void put(buf_t *b, const void *bytes, size_t len)
{
    if (b->oom)
        return;
    if (b->cap - b->len < len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < len)
            cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    if (len)
        memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

static void put_u32(buf_t *b, uint32_t v) { put(b, &v, 4); } /* host order is little-endian */
static void put_u64(buf_t *b, uint64_t v) { put(b, &v, 8); }

static void put_str(buf_t *b, const char *s)
{
    size_t len = strlen(s);
    put_u64(b, len);
    put(b, s, len);
}

/* One scalar's bytes (not STRING, not ARRAY). */
static void put_scalar(buf_t *b, nx_gguf_type_t type, const nx_gguf_kv_spec_t *kv)
{
    uint64_t u = kv->value.u;
    int64_t i = kv->value.i;
    switch (type) {
    case NX_GGUF_U8: put(b, &(uint8_t){(uint8_t)u}, 1); break;
    case NX_GGUF_I8: put(b, &(int8_t){(int8_t)i}, 1); break;
    case NX_GGUF_U16: put(b, &(uint16_t){(uint16_t)u}, 2); break;
    case NX_GGUF_I16: put(b, &(int16_t){(int16_t)i}, 2); break;
    case NX_GGUF_U32: put_u32(b, (uint32_t)u); break;
    case NX_GGUF_I32: put(b, &(int32_t){(int32_t)i}, 4); break;
    case NX_GGUF_F32: put(b, &(float){(float)kv->value.f}, 4); break;
    case NX_GGUF_BOOL: put(b, &(uint8_t){kv->value.b ? 1 : 0}, 1); break;
    case NX_GGUF_U64: put_u64(b, u); break;
    case NX_GGUF_I64: put(b, &i, 8); break;
    case NX_GGUF_F64: put(b, &kv->value.f, 8); break;
    default: break; /* validated */
    }
}

static void put_kv(buf_t *b, const nx_gguf_kv_spec_t *kv)
{
    put_str(b, kv->key);
    put_u32(b, (uint32_t)kv->type);
    if (kv->type == NX_GGUF_STRING) {
        put_str(b, kv->value.str);
    } else if (kv->type != NX_GGUF_ARRAY) {
        put_scalar(b, kv->type, kv);
    } else {
        put_u32(b, (uint32_t)kv->elem_type);
        put_u64(b, kv->count);
        if (kv->elem_type == NX_GGUF_STRING) {
            const char *const *strs = kv->array;
            for (uint64_t i = 0; i < kv->count; i++)
                put_str(b, strs[i]);
        } else {
            put(b, kv->array, (size_t)(kv->count * nx__gguf_type_size(kv->elem_type)));
        }
    }
}

static void put_tensor_info(buf_t *b, const nx_st_tensor_spec_t *t, uint64_t begin)
{
    put_str(b, t->name);
    put_u32(b, t->ndim);
    for (uint32_t j = 0; j < t->ndim; j++)
        put_u64(b, t->shape[t->ndim - 1 - j]); /* ne[0] is the innermost dimension */
    put_u32(b, (uint32_t)nx_dtype_to_ggml(t->dtype));
    put_u64(b, begin);
}

/* The whole header, its length a multiple of NX_ST_ALIGN; *digest_at_out is where the
 * digest's 24 characters sit. */
static int build_header(const char *path, const nx_gguf_kv_spec_t *kvs, size_t kv_count,
                        const nx_st_tensor_spec_t *tensors, size_t count, const uint64_t *begins,
                        buf_t *head, size_t *digest_at_out, nx_err_t *err)
{
    buf_t infos = {0};
    put(head, NX__GGUF_MAGIC, 4);
    put_u32(head, GGUF_VERSION);
    put_u64(head, count);
    put_u64(head, kv_count + 3); /* + alignment, digest, pad */
    nx_gguf_kv_spec_t align = {.key = NX__GGUF_ALIGNMENT_KEY, .type = NX_GGUF_U32,
                               .value.u = TENSOR_ALIGN};
    put_kv(head, &align);
    for (size_t i = 0; i < kv_count; i++)
        put_kv(head, &kvs[i]);
    put_str(head, NX_ST_DIGEST_KEY);
    put_u32(head, NX_GGUF_STRING);
    put_u64(head, NX__ST_DIGEST_CHARS);
    *digest_at_out = head->len;
    put(head, DIGEST_PLACEHOLDER, NX__ST_DIGEST_CHARS);
    for (size_t i = 0; i < count; i++)
        put_tensor_info(&infos, &tensors[i], begins[i]);
    /* The pad string's length makes header + pad key + infos a multiple of 4 KiB. */
    size_t pad_key_bytes = 8 + strlen(NX__GGUF_PAD_KEY) + 4 + 8;
    size_t unpadded = head->len + pad_key_bytes + infos.len;
    size_t pad = (NX_ST_ALIGN - unpadded % NX_ST_ALIGN) % NX_ST_ALIGN;
    put_str(head, NX__GGUF_PAD_KEY);
    put_u32(head, NX_GGUF_STRING);
    put_u64(head, pad);
    char spaces[64];
    memset(spaces, ' ', sizeof spaces);
    for (size_t left = pad; left > 0;) {
        size_t n = left < sizeof spaces ? left : sizeof spaces;
        put(head, spaces, n);
        left -= n;
    }
    put(head, infos.data, infos.len);
    bool oom = head->oom || infos.oom;
    free(infos.data);
    if (oom)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory building the header", path);
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Writing
 */

static int write_zeros(nx__st_writer_t *w, uint64_t n, nx_err_t *err)
{
    static const uint8_t zeros[ZERO_BYTES];
    return n ? nx__st_write_hashed(w, zeros, (size_t)n, err) : NX_OK;
}

static int write_data(nx__st_writer_t *w, uint64_t data_start, const nx_st_tensor_spec_t *tensors,
                      size_t count, const uint64_t *bytes, const uint64_t *begins,
                      uint64_t data_bytes, const nx_st_save_opts_t *opts, nx_err_t *err)
{
    int rc = NX_OK;
    for (size_t i = 0; rc == NX_OK && i < count; i++) {
        rc = write_zeros(w, data_start + begins[i] - w->offset, err);
        if (rc == NX_OK)
            rc = nx__st_write_tensor(w, &tensors[i], bytes[i], opts, err);
    }
    if (rc == NX_OK)
        rc = write_zeros(w, data_start + data_bytes - w->offset, err);
    return rc;
}

int nx_gguf_save(const char *path, const nx_gguf_kv_spec_t *kvs, size_t kv_count,
                 const nx_st_tensor_spec_t *tensors, size_t count, const nx_st_save_opts_t *opts,
                 nx_err_t *err)
{
    if (!path || !*path)
        return nx_err_set(err, NX_EINVAL, "nx_gguf_save: no path");
    uint64_t *bytes = calloc(count ? count : 1, sizeof *bytes);
    uint64_t *begins = calloc(count ? count : 1, sizeof *begins);
    buf_t head = {0};
    char *tmp = NULL;
    uint64_t data_bytes = 0;
    size_t digest_at = 0;
    int rc = NX_OK;
    if (!bytes || !begins) {
        rc = nx_err_set(err, NX_ENOMEM, "%s: out of memory", path);
        goto out_free;
    }
    rc = validate_inputs(kvs, kv_count, tensors, count, opts, bytes, begins, &data_bytes, err);
    if (rc != NX_OK) {
        nx_err_prefix(err, "%s: ", path);
        goto out_free;
    }
    rc = build_header(path, kvs, kv_count, tensors, count, begins, &head, &digest_at, err);
    if (rc != NX_OK)
        goto out_free;
    nx__st_writer_t w;
    rc = nx__st_writer_open(&w, path, &tmp, err);
    if (rc != NX_OK)
        goto out_free;
    rc = nx__st_pwrite_full(w.fd, head.data, head.len, 0, path, err);
    w.offset = head.len;
    if (rc == NX_OK)
        rc = write_data(&w, head.len, tensors, count, bytes, begins, data_bytes, opts, err);
    if (rc == NX_OK) {
        char digest[NX__ST_DIGEST_CHARS + 1];
        nx__st_format_digest(digest, XXH3_64bits_digest(w.hash));
        rc = nx__st_pwrite_full(w.fd, digest, NX__ST_DIGEST_CHARS, digest_at, path, err);
    }
    rc = nx__st_writer_finish(&w, tmp, rc, err);
out_free:
    free(head.data);
    free(bytes);
    free(begins);
    return rc;
}
