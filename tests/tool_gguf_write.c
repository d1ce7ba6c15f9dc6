/* tool_gguf_write.c — write a GGUF file with nx_gguf_save from a JSON description, so that the
 * Python tests (tests/test_gguf_py.py, tests/test_loader_cli.py) can read our writer's output
 * with their own reader (tests/tools/gguf_ref.py).
 *
 *   tool_gguf_write SPEC.json OUT.gguf
 *
 * SPEC: {"kvs": [{"key": K, "type": T, "value": V} or
 *                {"key": K, "type": "arr", "elem_type": T, "value": [V, ...]}],
 *        "tensors": [{"name": N, "dtype": "Q8_0", "shape": [rows, cols], "data_file": PATH}
 *                    or {..., "fill": true} (bytes i * 7 + 3, streamed through opts->fill)]}
 * T is ggml's type name (u8 i8 u16 i16 u32 i32 f32 bool str u64 i64 f64); u64 values past
 * 2^63 - 1 may be given as decimal strings. Exit 0 on success; 1 with a message otherwise. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nx_loader.h"

static int die(const char *what, const char *detail)
{
    fprintf(stderr, "tool_gguf_write: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static bool parse_type(const char *name, nx_gguf_type_t *out)
{
    for (int t = 0; name && t < NX_GGUF__COUNT; t++) {
        if (strcmp(nx_gguf_type_name((nx_gguf_type_t)t), name) == 0) {
            *out = (nx_gguf_type_t)t;
            return true;
        }
    }
    return false;
}

/* One JSON value into `dst` as `type` packs it (for arrays). */
static void pack(nx_gguf_type_t type, const json_t *v, void *dst)
{
    uint64_t u = json_is_string(v) ? strtoull(json_string_value(v), NULL, 10)
                                   : (uint64_t)json_integer_value(v);
    int64_t i = (int64_t)json_integer_value(v);
    double f = json_number_value(v);
    switch (type) {
    case NX_GGUF_U8: *(uint8_t *)dst = (uint8_t)u; break;
    case NX_GGUF_I8: *(int8_t *)dst = (int8_t)i; break;
    case NX_GGUF_U16: *(uint16_t *)dst = (uint16_t)u; break;
    case NX_GGUF_I16: *(int16_t *)dst = (int16_t)i; break;
    case NX_GGUF_U32: *(uint32_t *)dst = (uint32_t)u; break;
    case NX_GGUF_I32: *(int32_t *)dst = (int32_t)i; break;
    case NX_GGUF_F32: *(float *)dst = (float)f; break;
    case NX_GGUF_BOOL: *(uint8_t *)dst = json_is_true(v); break;
    case NX_GGUF_U64: *(uint64_t *)dst = u; break;
    case NX_GGUF_I64: *(int64_t *)dst = i; break;
    case NX_GGUF_F64: *(double *)dst = f; break;
    default: break;
    }
}

static int parse_kv(const json_t *j, nx_gguf_kv_spec_t *kv)
{
    const json_t *value = json_object_get(j, "value");
    kv->key = json_string_value(json_object_get(j, "key"));
    if (!kv->key || !parse_type(json_string_value(json_object_get(j, "type")), &kv->type))
        return die("a kv needs a key and a known type", kv->key);
    if (kv->type == NX_GGUF_STRING) {
        kv->value.str = json_string_value(value);
    } else if (kv->type == NX_GGUF_ARRAY) {
        if (!parse_type(json_string_value(json_object_get(j, "elem_type")), &kv->elem_type) ||
            !json_is_array(value))
            return die("an array kv needs elem_type and a list value", kv->key);
        kv->count = json_array_size(value);
        if (kv->elem_type == NX_GGUF_STRING) {
            const char **strs = calloc(kv->count + 1, sizeof *strs);
            for (size_t k = 0; k < kv->count; k++)
                strs[k] = json_string_value(json_array_get(value, k));
            kv->array = strs;
        } else {
            char *packed = calloc(kv->count + 1, 8);
            size_t size = 0;
            switch (kv->elem_type) {
            case NX_GGUF_U8: case NX_GGUF_I8: case NX_GGUF_BOOL: size = 1; break;
            case NX_GGUF_U16: case NX_GGUF_I16: size = 2; break;
            case NX_GGUF_U32: case NX_GGUF_I32: case NX_GGUF_F32: size = 4; break;
            default: size = 8; break;
            }
            for (size_t k = 0; k < kv->count; k++)
                pack(kv->elem_type, json_array_get(value, k), packed + k * size);
            kv->array = packed;
        }
    } else if (kv->type == NX_GGUF_BOOL) {
        kv->value.b = json_is_true(value);
    } else if (kv->type == NX_GGUF_F32 || kv->type == NX_GGUF_F64) {
        kv->value.f = json_number_value(value);
    } else if (kv->type == NX_GGUF_I8 || kv->type == NX_GGUF_I16 || kv->type == NX_GGUF_I32 ||
               kv->type == NX_GGUF_I64) {
        kv->value.i = (int64_t)json_integer_value(value);
    } else {
        kv->value.u = json_is_string(value) ? strtoull(json_string_value(value), NULL, 10)
                                            : (uint64_t)json_integer_value(value);
    }
    return 0;
}

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc(size > 0 ? (size_t)size : 1);
    *len = data ? fread(data, 1, (size_t)size, f) : 0;
    fclose(f);
    return data;
}

static int parse_tensor(const json_t *j, nx_st_tensor_spec_t *t)
{
    const json_t *shape = json_object_get(j, "shape");
    t->name = json_string_value(json_object_get(j, "name"));
    if (!t->name || !nx_dtype_parse_any(json_string_value(json_object_get(j, "dtype")), &t->dtype) ||
        !json_is_array(shape) || json_array_size(shape) > NX_ST_MAX_DIMS)
        return die("a tensor needs a name, a known dtype and a shape", t->name);
    t->ndim = (uint32_t)json_array_size(shape);
    for (uint32_t d = 0; d < t->ndim; d++)
        t->shape[d] = (uint64_t)json_integer_value(json_array_get(shape, d));
    const char *data_file = json_string_value(json_object_get(j, "data_file"));
    if (data_file) {
        size_t len;
        t->data = read_all(data_file, &len);
        if (!t->data)
            return die("cannot read", data_file);
    }
    return 0;
}

static int fill(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                size_t len, nx_err_t *err)
{
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)dst)[i] = (uint8_t)((offset + i) * 7 + 3);
    return NX_OK;
}

static void free_all(json_t *spec, nx_gguf_kv_spec_t *kv, size_t kv_count,
                     nx_st_tensor_spec_t *t, size_t count)
{
    for (size_t i = 0; kv && i < kv_count; i++)
        free((void *)kv[i].array);
    for (size_t i = 0; t && i < count; i++)
        free((void *)t[i].data);
    free(kv);
    free(t);
    json_decref(spec);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return die("usage: tool_gguf_write SPEC.json OUT.gguf", NULL);
    json_error_t jerr;
    json_t *spec = json_load_file(argv[1], 0, &jerr);
    if (!spec)
        return die("bad spec", jerr.text);
    const json_t *kvs = json_object_get(spec, "kvs"), *tensors = json_object_get(spec, "tensors");
    size_t kv_count = json_array_size(kvs), count = json_array_size(tensors);
    nx_gguf_kv_spec_t *kv = calloc(kv_count + 1, sizeof *kv);
    nx_st_tensor_spec_t *t = calloc(count + 1, sizeof *t);
    int rc = kv && t ? 0 : die("out of memory", NULL);
    for (size_t i = 0; rc == 0 && i < kv_count; i++)
        rc = parse_kv(json_array_get(kvs, i), &kv[i]);
    for (size_t i = 0; rc == 0 && i < count; i++)
        rc = parse_tensor(json_array_get(tensors, i), &t[i]);
    nx_st_save_opts_t opts = {.fill = fill};
    nx_err_t err = {0};
    if (rc == 0 && nx_gguf_save(argv[2], kv, kv_count, t, count, &opts, &err) != NX_OK)
        rc = die("nx_gguf_save failed", err.msg);
    free_all(spec, kv, kv_count, t, count);
    return rc;
}
