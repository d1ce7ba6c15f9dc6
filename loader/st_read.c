/* st_read.c — open and fully validate a safetensors checkpoint: one file, or a directory that
 * holds one *.safetensors file or shards listed by model.safetensors.index.json.
 *
 * Every rule of the format is checked before anything is exposed, because the loader reads
 * byte ranges straight into device memory on the strength of these offsets: the header length
 * is bounded, the JSON is well formed and free of duplicate keys, every tensor has a known
 * dtype and a shape whose size matches its range, and the ranges tile the data section with
 * no gap, overlap or trailing byte. A failure names the file, the tensor and the rule.
 * Nothing here trusts the input: the header parser is fuzzed (tests/fuzz_st_header.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "st_internal.h"

#define INDEX_NAME "model.safetensors.index.json"
#define METADATA_KEY "__metadata__"
#define VERIFY_CHUNK_BYTES (16u << 20)
#define ARENA_BLOCK_BYTES (64u << 10)

/* Names, paths and metadata strings live in a chain of blocks that never move. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t cap;
    char data[];
} arena_block_t;

typedef struct meta_pair {
    const char *key;   /* in the arena */
    const char *value; /* in the arena */
} meta_pair_t;

typedef struct file_meta {
    meta_pair_t *pairs; /* this file's __metadata__, in header order */
    size_t count;
} file_meta_t;

struct nx_st {
    char *path;                /* as given to nx_st_open */
    nx_st_file_t *files;       /* file_count entries */
    file_meta_t *metas;        /* parallel to files */
    size_t file_count;
    size_t file_cap;
    nx_st_tensor_t *tensors;   /* storage order */
    size_t tensor_count;
    size_t tensor_cap;
    size_t *slots;             /* open-addressing hash of names: tensor index + 1, 0 = empty */
    size_t slot_count;         /* a power of two */
    uint64_t data_bytes;       /* sum of data sections */
    arena_block_t *arena;
};

/* ------------------------------------------------------------------------------------------
 * Shared helpers (also used by st_write.c)
 */

nx__st_size_rc_t nx__st_tensor_bytes(nx_dtype_t dtype, const uint64_t *shape, uint32_t ndim,
                                     uint64_t *bytes_out)
{
    uint64_t numel = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (__builtin_mul_overflow(numel, shape[i], &numel))
            return NX__ST_SIZE_OVERFLOW;
    }
    uint64_t bits;
    if (__builtin_mul_overflow(numel, (uint64_t)nx_dtype_bits(dtype), &bits))
        return NX__ST_SIZE_OVERFLOW;
    if (bits % 8 != 0)
        return NX__ST_SIZE_PARTIAL;
    *bytes_out = bits / 8;
    return NX__ST_SIZE_OK;
}

const char *nx__st_format_shape(char *buf, size_t cap, const uint64_t *shape, uint32_t ndim)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (uint32_t i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%llu", i ? ", " : "",
                                 (unsigned long long)shape[i]);
    if (used < cap)
        used += (size_t)snprintf(buf + used, cap - used, "]");
    if (used >= cap && cap >= 4)
        memcpy(buf + cap - 4, "...", 4);
    return buf;
}

bool nx__st_parse_digest(const char *value, uint64_t *digest_out)
{
    size_t prefix = strlen(NX__ST_DIGEST_PREFIX);
    if (!value || strlen(value) != NX__ST_DIGEST_CHARS ||
        strncmp(value, NX__ST_DIGEST_PREFIX, prefix) != 0)
        return false;
    uint64_t digest = 0;
    for (const char *c = value + prefix; *c; c++) {
        int nibble;
        if (*c >= '0' && *c <= '9')
            nibble = *c - '0';
        else if (*c >= 'a' && *c <= 'f')
            nibble = *c - 'a' + 10;
        else
            return false;
        digest = digest << 4 | (uint64_t)nibble;
    }
    *digest_out = digest;
    return true;
}

/* ------------------------------------------------------------------------------------------
 * The checkpoint object: arena, growth, hash index
 */

static char *arena_strdup(nx_st_t *st, const char *text)
{
    size_t len = strlen(text) + 1;
    arena_block_t *block = st->arena;
    if (!block || block->cap - block->used < len) {
        size_t cap = len > ARENA_BLOCK_BYTES ? len : ARENA_BLOCK_BYTES;
        block = malloc(sizeof *block + cap);
        if (!block)
            return NULL;
        block->next = st->arena;
        block->used = 0;
        block->cap = cap;
        st->arena = block;
    }
    char *copy = block->data + block->used;
    memcpy(copy, text, len);
    block->used += len;
    return copy;
}

static bool grow(void **array, size_t *cap, size_t need, size_t elem_bytes)
{
    if (need <= *cap)
        return true;
    size_t new_cap = *cap ? *cap * 2 : 16;
    while (new_cap < need)
        new_cap *= 2;
    void *grown = realloc(*array, new_cap * elem_bytes);
    if (!grown)
        return false;
    *array = grown;
    *cap = new_cap;
    return true;
}

static nx_st_t *st_new(const char *path)
{
    nx_st_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->path = strdup(path);
    if (!st->path) {
        free(st);
        return NULL;
    }
    return st;
}

void nx_st_destroy(nx_st_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_st_t *st = *self_p;
    for (size_t i = 0; i < st->file_count; i++)
        free(st->metas[i].pairs);
    while (st->arena) {
        arena_block_t *next = st->arena->next;
        free(st->arena);
        st->arena = next;
    }
    free(st->files);
    free(st->metas);
    free(st->tensors);
    free(st->slots);
    free(st->path);
    free(st);
    *self_p = NULL;
}

static uint64_t name_hash(const char *name)
{
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        hash = (hash ^ *c) * 1099511628211ull;
    return hash;
}

/* Index every tensor by name; a name held twice (only possible across shards) is an error. */
static int build_index(nx_st_t *st, nx_err_t *err)
{
    size_t slot_count = 16;
    while (slot_count < st->tensor_count * 2)
        slot_count *= 2;
    size_t *slots = calloc(slot_count, sizeof *slots);
    if (!slots)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory indexing %zu tensors", st->path,
                          st->tensor_count);
    for (size_t i = 0; i < st->tensor_count; i++) {
        const nx_st_tensor_t *t = &st->tensors[i];
        size_t slot = (size_t)name_hash(t->name) & (slot_count - 1);
        while (slots[slot]) {
            const nx_st_tensor_t *other = &st->tensors[slots[slot] - 1];
            if (strcmp(other->name, t->name) == 0) {
                free(slots);
                return nx_err_set(err, NX_EFORMAT, "tensor '%s' is in both %s and %s", t->name,
                                  st->files[other->file_index].path,
                                  st->files[t->file_index].path);
            }
            slot = (slot + 1) & (slot_count - 1);
        }
        slots[slot] = i + 1;
    }
    free(st->slots);
    st->slots = slots;
    st->slot_count = slot_count;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * One file's header
 */

/* The 8-byte prefix: header length N, bounded and inside the file. */
static int check_prefix(const char *label, const uint8_t prefix[8], uint64_t file_bytes,
                        uint64_t *header_bytes_out, nx_err_t *err)
{
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; i--)
        header_bytes = header_bytes << 8 | prefix[i];
    if (header_bytes > NX_ST_MAX_HEADER_BYTES)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: header length %llu is absurd (the limit is %u bytes)", label,
                          (unsigned long long)header_bytes, NX_ST_MAX_HEADER_BYTES);
    if (8 + header_bytes > file_bytes)
        return nx_err_set(err, NX_EFORMAT, "%s: header length %llu exceeds the file (%llu bytes)",
                          label, (unsigned long long)header_bytes,
                          (unsigned long long)file_bytes);
    *header_bytes_out = header_bytes;
    return NX_OK;
}

static int get_u64(const json_t *value, uint64_t *out)
{
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(value);
    return 0;
}

static int parse_shape(const char *label, const char *name, const json_t *shape,
                       nx_st_tensor_t *t, nx_err_t *err)
{
    if (!json_is_array(shape))
        return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': shape is not a list", label, name);
    size_t ndim = json_array_size(shape);
    if (ndim > NX_ST_MAX_DIMS)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': shape has %zu dimensions (the limit is %d)", label,
                          name, ndim, NX_ST_MAX_DIMS);
    t->ndim = (uint32_t)ndim;
    for (size_t i = 0; i < ndim; i++) {
        if (get_u64(json_array_get(shape, i), &t->shape[i]) != 0)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s': shape[%zu] is not a non-negative integer", label,
                              name, i);
    }
    return NX_OK;
}

static int parse_offsets(const char *label, const char *name, const json_t *offsets,
                         uint64_t *begin, uint64_t *end, nx_err_t *err)
{
    if (!json_is_array(offsets) || json_array_size(offsets) != 2)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': data_offsets is not a list of 2 integers [begin, end]",
                          label, name);
    if (get_u64(json_array_get(offsets, 0), begin) != 0 ||
        get_u64(json_array_get(offsets, 1), end) != 0)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': data_offsets holds a value that is not a "
                          "non-negative integer",
                          label, name);
    if (*begin > *end)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] begins after it ends", label,
                          name, (unsigned long long)*begin, (unsigned long long)*end);
    return NX_OK;
}

/* The size rule: numel x dtype size == end - begin, with overflow and sub-byte checks. */
static int check_tensor_size(const char *label, const char *name, const nx_st_tensor_t *t,
                             uint64_t begin, uint64_t end, nx_err_t *err)
{
    char shape_text[256];
    nx__st_format_shape(shape_text, sizeof shape_text, t->shape, t->ndim);
    uint64_t bytes = 0;
    switch (nx__st_tensor_bytes(t->dtype, t->shape, t->ndim, &bytes)) {
    case NX__ST_SIZE_OVERFLOW:
        return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': shape %s of %s overflows 64 bits",
                          label, name, shape_text, nx_dtype_name(t->dtype));
    case NX__ST_SIZE_PARTIAL:
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': shape %s of %s is not a whole number of bytes", label,
                          name, shape_text, nx_dtype_name(t->dtype));
    case NX__ST_SIZE_OK:
        break;
    }
    if (bytes != end - begin)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': shape %s of %s needs %llu bytes but data_offsets "
                          "[%llu, %llu] span %llu",
                          label, name, shape_text, nx_dtype_name(t->dtype),
                          (unsigned long long)bytes, (unsigned long long)begin,
                          (unsigned long long)end, (unsigned long long)(end - begin));
    return NX_OK;
}

static int parse_tensor(nx_st_t *st, const char *label, const char *name, const json_t *entry,
                        nx_err_t *err)
{
    if (!json_is_object(entry))
        return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': entry is not an object", label,
                          name);
    const char *field;
    const json_t *value;
    json_object_foreach((json_t *)entry, field, value) {
        if (strcmp(field, "dtype") != 0 && strcmp(field, "shape") != 0 &&
            strcmp(field, "data_offsets") != 0)
            return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': unexpected field '%s'", label,
                              name, field);
    }
    static const char *const required[] = {"dtype", "shape", "data_offsets"};
    for (size_t i = 0; i < 3; i++) {
        if (!json_object_get(entry, required[i]))
            return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': missing field '%s'", label,
                              name, required[i]);
    }
    nx_st_tensor_t t = {0};
    const json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype))
        return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': dtype is not a string", label, name);
    if (!nx_dtype_parse(json_string_value(dtype), &t.dtype))
        return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", label, name,
                          json_string_value(dtype));
    int rc = parse_shape(label, name, json_object_get(entry, "shape"), &t, err);
    uint64_t begin = 0, end = 0;
    if (rc == NX_OK)
        rc = parse_offsets(label, name, json_object_get(entry, "data_offsets"), &begin, &end,
                           err);
    if (rc == NX_OK)
        rc = check_tensor_size(label, name, &t, begin, end, err);
    if (rc != NX_OK)
        return rc;
    t.file_index = (uint32_t)(st->file_count - 1);
    t.begin = begin;
    t.bytes = end - begin;
    t.name = arena_strdup(st, name);
    if (!t.name || !grow((void **)&st->tensors, &st->tensor_cap, st->tensor_count + 1,
                         sizeof *st->tensors))
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory at tensor '%s'", label, name);
    st->tensors[st->tensor_count++] = t;
    return NX_OK;
}

static int parse_metadata(nx_st_t *st, const char *label, const json_t *meta, nx_err_t *err)
{
    if (!json_is_object(meta))
        return nx_err_set(err, NX_EFORMAT, "%s: __metadata__ is not an object", label);
    nx_st_file_t *file = &st->files[st->file_count - 1];
    file_meta_t *fm = &st->metas[st->file_count - 1];
    fm->pairs = calloc(json_object_size(meta) + 1, sizeof *fm->pairs);
    if (!fm->pairs)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory reading __metadata__", label);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value))
            return nx_err_set(err, NX_EFORMAT,
                              "%s: __metadata__ value of '%s' is not a string", label, key);
        meta_pair_t *pair = &fm->pairs[fm->count];
        pair->key = arena_strdup(st, key);
        pair->value = arena_strdup(st, json_string_value(value));
        if (!pair->key || !pair->value)
            return nx_err_set(err, NX_ENOMEM, "%s: out of memory reading __metadata__", label);
        fm->count++;
        if (strcmp(key, NX_ST_DIGEST_KEY) == 0)
            file->digest = pair->value;
    }
    return NX_OK;
}

static int compare_range(const void *a, const void *b)
{
    const nx_st_tensor_t *x = a, *y = b;
    uint64_t x_end = x->begin + x->bytes, y_end = y->begin + y->bytes;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x_end != y_end)
        return x_end < y_end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sort the file's tensors by range and check that they tile the data section exactly. */
static int check_tiling(nx_st_t *st, const char *label, nx_err_t *err)
{
    nx_st_file_t *file = &st->files[st->file_count - 1];
    if (file->tensor_count == 0)
        return file->data_bytes == 0
                   ? NX_OK
                   : nx_err_set(err, NX_EFORMAT,
                                "%s: no tensors but %llu trailing bytes in the data section",
                                label, (unsigned long long)file->data_bytes);
    nx_st_tensor_t *first = &st->tensors[file->tensor_first];
    qsort(first, file->tensor_count, sizeof *first, compare_range);
    uint64_t expected = 0;
    const nx_st_tensor_t *prev = NULL;
    for (size_t i = 0; i < file->tensor_count; i++) {
        const nx_st_tensor_t *t = &first[i];
        unsigned long long b = t->begin, e = t->begin + t->bytes;
        if (t->begin > expected && !prev)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap of %llu "
                              "bytes at the start of the data section",
                              label, t->name, b, e, b);
        if (t->begin > expected)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: gap of %llu bytes between tensor '%s' (ends at %llu) and "
                              "tensor '%s' (begins at %llu)",
                              label, (unsigned long long)(t->begin - expected), prev->name,
                              (unsigned long long)expected, t->name, b);
        if (t->begin < expected)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' (ends at %llu)",
                              label, t->name, b, e, prev->name, (unsigned long long)expected);
        if (e > file->data_bytes)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] run beyond the end of "
                              "the file (the data section has %llu bytes)",
                              label, t->name, b, e, (unsigned long long)file->data_bytes);
        expected = e;
        prev = t;
    }
    if (expected < file->data_bytes)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: %llu trailing bytes after the last tensor (tensors end at %llu, "
                          "the data section has %llu bytes)",
                          label, (unsigned long long)(file->data_bytes - expected),
                          (unsigned long long)expected, (unsigned long long)file->data_bytes);
    return NX_OK;
}

static int add_file(nx_st_t *st, const char *label, uint64_t file_bytes, uint64_t header_bytes,
                    nx_err_t *err)
{
    if (!grow((void **)&st->files, &st->file_cap, st->file_count + 1, sizeof *st->files))
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
    file_meta_t *metas = realloc(st->metas, st->file_cap * sizeof *metas);
    if (!metas)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
    st->metas = metas;
    nx_st_file_t *file = &st->files[st->file_count];
    memset(file, 0, sizeof *file);
    memset(&st->metas[st->file_count], 0, sizeof st->metas[0]);
    st->file_count++;
    file->path = arena_strdup(st, label);
    if (!file->path)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
    file->file_bytes = file_bytes;
    file->header_bytes = header_bytes;
    file->data_offset = 8 + header_bytes;
    file->data_bytes = file_bytes - 8 - header_bytes;
    file->tensor_first = st->tensor_count;
    return NX_OK;
}

/* Validate one file's header (the N bytes after the prefix) and append its tensors. */
static int parse_header(nx_st_t *st, const char *label, const char *header,
                        uint64_t header_bytes, uint64_t file_bytes, nx_err_t *err)
{
    int rc = add_file(st, label, file_bytes, header_bytes, err);
    if (rc != NX_OK)
        return rc;
    if (header_bytes == 0 || header[0] != '{')
        return nx_err_set(err, NX_EFORMAT, "%s: header does not start with '{'", label);
    json_error_t jerr;
    json_t *root = json_loadb(header, (size_t)header_bytes, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return nx_err_set(err, NX_EFORMAT, "%s: header JSON is malformed at line %d, column %d: %s",
                          label, jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return nx_err_set(err, NX_EFORMAT, "%s: header is not a JSON object", label);
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, METADATA_KEY) == 0)
            rc = parse_metadata(st, label, value, err);
        else
            rc = parse_tensor(st, label, key, value, err);
        if (rc != NX_OK)
            break;
    }
    json_decref(root);
    if (rc != NX_OK)
        return rc;
    nx_st_file_t *file = &st->files[st->file_count - 1];
    file->tensor_count = st->tensor_count - file->tensor_first;
    rc = check_tiling(st, label, err);
    if (rc == NX_OK)
        st->data_bytes += file->data_bytes;
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Files and directories
 */

static int pread_full(int fd, void *buf, size_t len, uint64_t offset, const char *label,
                      nx_err_t *err)
{
    size_t done = 0;
    while (done < len) {
        ssize_t got = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return nx_err_set(err, NX_EIO, "%s: read of %zu bytes at offset %llu failed: %s",
                              label, len, (unsigned long long)offset, strerror(errno));
        if (got == 0)
            return nx_err_set(err, NX_EIO, "%s: file ended at offset %llu while reading",
                              label, (unsigned long long)(offset + done));
        done += (size_t)got;
    }
    return NX_OK;
}

static int open_error(const char *path, nx_err_t *err)
{
    int code = errno == ENOENT || errno == ENOTDIR ? NX_ENOTFOUND : NX_EIO;
    return nx_err_set(err, code, "%s: cannot open: %s", path, strerror(errno));
}

static int open_file(nx_st_t *st, const char *path, nx_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return open_error(path, err);
    char *header = NULL;
    struct stat sb;
    int rc;
    if (fstat(fd, &sb) != 0) {
        rc = nx_err_set(err, NX_EIO, "%s: stat failed: %s", path, strerror(errno));
        goto out_close;
    }
    uint64_t file_bytes = (uint64_t)sb.st_size;
    if (file_bytes < 8) {
        rc = nx_err_set(err, NX_EFORMAT,
                        "%s: file is %llu bytes, too short for the 8-byte header length", path,
                        (unsigned long long)file_bytes);
        goto out_close;
    }
    uint8_t prefix[8];
    uint64_t header_bytes = 0;
    rc = pread_full(fd, prefix, 8, 0, path, err);
    if (rc == NX_OK)
        rc = check_prefix(path, prefix, file_bytes, &header_bytes, err);
    if (rc != NX_OK)
        goto out_close;
    header = malloc(header_bytes ? header_bytes : 1);
    if (!header) {
        rc = nx_err_set(err, NX_ENOMEM, "%s: out of memory for a %llu-byte header", path,
                        (unsigned long long)header_bytes);
        goto out_close;
    }
    rc = pread_full(fd, header, (size_t)header_bytes, 8, path, err);
    if (rc == NX_OK)
        rc = parse_header(st, path, header, header_bytes, file_bytes, err);
    free(header);
out_close:
    close(fd);
    return rc;
}

static char *join_path(const char *dir, const char *name)
{
    size_t dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/')
        dir_len--;
    char *path = malloc(dir_len + 1 + strlen(name) + 1);
    if (path)
        sprintf(path, "%.*s/%s", (int)dir_len, dir, name);
    return path;
}

static int compare_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Check each shard's tensors against the index's weight_map, then the reverse. */
static int check_shard_tensors(nx_st_t *st, const json_t *weight_map, const char *shard,
                               nx_err_t *err)
{
    const nx_st_file_t *file = &st->files[st->file_count - 1];
    for (size_t i = 0; i < file->tensor_count; i++) {
        const char *name = st->tensors[file->tensor_first + i].name;
        const json_t *listed = json_object_get(weight_map, name);
        if (!listed)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s' is not listed in " INDEX_NAME, file->path, name);
        if (strcmp(json_string_value(listed), shard) != 0)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s' is listed in " INDEX_NAME " for shard '%s'",
                              file->path, name, json_string_value(listed));
    }
    return NX_OK;
}

static int check_index_entries(nx_st_t *st, const char *dir, const json_t *weight_map,
                               nx_err_t *err)
{
    const char *name;
    const json_t *shard;
    json_object_foreach((json_t *)weight_map, name, shard) {
        if (!nx_st_find(st, name))
            return nx_err_set(err, NX_EFORMAT,
                              "%s/" INDEX_NAME ": tensor '%s' is listed for shard '%s' but that "
                              "shard does not hold it",
                              dir, name, json_string_value(shard));
    }
    return NX_OK;
}

/* weight_map's distinct shard names, sorted; each a plain file name. */
static int index_shards(const char *index_path, const json_t *weight_map, const char ***out,
                        size_t *count_out, nx_err_t *err)
{
    size_t count = 0;
    const char **shards = calloc(json_object_size(weight_map) + 1, sizeof *shards);
    if (!shards)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", index_path);
    const char *name;
    const json_t *shard;
    json_object_foreach((json_t *)weight_map, name, shard) {
        const char *file = json_string_value(shard);
        if (!file || !*file || strchr(file, '/') || strcmp(file, ".") == 0 ||
            strcmp(file, "..") == 0) {
            free(shards);
            return nx_err_set(err, NX_EFORMAT,
                              "%s: weight_map entry for tensor '%s' is not a file name in the "
                              "directory",
                              index_path, name);
        }
        shards[count++] = file;
    }
    qsort(shards, count, sizeof *shards, compare_str);
    size_t unique = 0;
    for (size_t i = 0; i < count; i++) {
        if (unique == 0 || strcmp(shards[unique - 1], shards[i]) != 0)
            shards[unique++] = shards[i];
    }
    *out = shards;
    *count_out = unique;
    return NX_OK;
}

static int open_shard(nx_st_t *st, const char *dir, const char *index_path,
                      const json_t *weight_map, const char *shard, nx_err_t *err)
{
    char *path = join_path(dir, shard);
    if (!path)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", index_path);
    struct stat sb;
    int rc;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        rc = nx_err_set(err, NX_EFORMAT, "%s: lists shard '%s' but %s is not a file",
                        index_path, shard, path);
    else
        rc = open_file(st, path, err);
    if (rc == NX_OK)
        rc = check_shard_tensors(st, weight_map, shard, err);
    free(path);
    return rc;
}

static int open_sharded(nx_st_t *st, const char *dir, const char *index_path, nx_err_t *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return nx_err_set(err, NX_EFORMAT, "%s: malformed JSON at line %d, column %d: %s",
                          index_path, jerr.line, jerr.column, jerr.text);
    const char **shards = NULL;
    size_t shard_count = 0;
    int rc;
    const json_t *weight_map = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(weight_map)) {
        rc = nx_err_set(err, NX_EFORMAT, "%s: has no \"weight_map\" object", index_path);
        goto out_free;
    }
    if (json_object_size(weight_map) == 0) {
        rc = nx_err_set(err, NX_EFORMAT, "%s: \"weight_map\" is empty", index_path);
        goto out_free;
    }
    rc = index_shards(index_path, weight_map, &shards, &shard_count, err);
    for (size_t i = 0; rc == NX_OK && i < shard_count; i++)
        rc = open_shard(st, dir, index_path, weight_map, shards[i], err);
    if (rc == NX_OK)
        rc = build_index(st, err);
    if (rc == NX_OK)
        rc = check_index_entries(st, dir, weight_map, err);
out_free:
    free(shards);
    json_decref(root);
    return rc;
}

static bool has_suffix(const char *name, const char *suffix)
{
    size_t len = strlen(name), suffix_len = strlen(suffix);
    return len > suffix_len && strcmp(name + len - suffix_len, suffix) == 0;
}

/* Without an index a directory must hold exactly one *.safetensors file. */
static int open_single_in_dir(nx_st_t *st, const char *dir, nx_err_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return open_error(dir, err);
    char *names[8];
    size_t count = 0;
    int rc = NX_OK;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (!has_suffix(entry->d_name, ".safetensors"))
            continue;
        if (count < 8 && !(names[count] = strdup(entry->d_name))) {
            rc = nx_err_set(err, NX_ENOMEM, "%s: out of memory", dir);
            break;
        }
        count++;
    }
    closedir(d);
    size_t kept = count < 8 ? count : 8;
    if (rc == NX_OK && count == 0)
        rc = nx_err_set(err, NX_ENOTFOUND, "%s: no " INDEX_NAME " and no *.safetensors file",
                        dir);
    if (rc == NX_OK && count > 1) {
        qsort(names, kept, sizeof *names, compare_str);
        char list[600] = "";
        for (size_t i = 0; i < kept; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     names[i]);
        rc = nx_err_set(err, NX_EFORMAT,
                        "%s: %zu *.safetensors files (%s%s) and no " INDEX_NAME
                        " to say how they fit together",
                        dir, count, list, count > kept ? ", ..." : "");
    }
    if (rc == NX_OK) {
        char *path = join_path(dir, names[0]);
        rc = path ? open_file(st, path, err) : nx_err_set(err, NX_ENOMEM, "out of memory");
        free(path);
    }
    if (rc == NX_OK)
        rc = build_index(st, err);
    for (size_t i = 0; i < kept; i++)
        free(names[i]);
    return rc;
}

static int open_dir(nx_st_t *st, const char *dir, nx_err_t *err)
{
    char *index_path = join_path(dir, INDEX_NAME);
    if (!index_path)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", dir);
    struct stat sb;
    int rc;
    if (stat(index_path, &sb) == 0)
        rc = open_sharded(st, dir, index_path, err);
    else
        rc = open_single_in_dir(st, dir, err);
    free(index_path);
    return rc;
}

nx_st_t *nx_st_open(const char *path, nx_err_t *err)
{
    if (!path) {
        nx_err_set(err, NX_EINVAL, "nx_st_open: no path");
        return NULL;
    }
    nx_st_t *st = st_new(path);
    if (!st) {
        nx_err_set(err, NX_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    struct stat sb;
    int rc;
    if (stat(path, &sb) != 0)
        rc = open_error(path, err);
    else if (S_ISDIR(sb.st_mode))
        rc = open_dir(st, path, err);
    else if (S_ISREG(sb.st_mode)) {
        rc = open_file(st, path, err);
        if (rc == NX_OK)
            rc = build_index(st, err);
    } else
        rc = nx_err_set(err, NX_EFORMAT, "%s: not a regular file or a directory", path);
    if (rc != NX_OK)
        nx_st_destroy(&st);
    return st;
}

nx_st_t *nx__st_from_buffer(const char *label, const void *bytes, size_t len, nx_err_t *err)
{
    nx_st_t *st = st_new(label);
    if (!st) {
        nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
        return NULL;
    }
    uint64_t header_bytes = 0;
    int rc;
    if (len < 8)
        rc = nx_err_set(err, NX_EFORMAT,
                        "%s: file is %zu bytes, too short for the 8-byte header length", label,
                        len);
    else
        rc = check_prefix(label, bytes, len, &header_bytes, err);
    if (rc == NX_OK)
        rc = parse_header(st, label, (const char *)bytes + 8, header_bytes, len, err);
    if (rc == NX_OK)
        rc = build_index(st, err);
    if (rc != NX_OK)
        nx_st_destroy(&st);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * Accessors
 */

const char *nx_st_path(const nx_st_t *self)
{
    return self->path;
}

size_t nx_st_tensor_count(const nx_st_t *self)
{
    return self->tensor_count;
}

const nx_st_tensor_t *nx_st_tensor_at(const nx_st_t *self, size_t index)
{
    return index < self->tensor_count ? &self->tensors[index] : NULL;
}

const nx_st_tensor_t *nx_st_find(const nx_st_t *self, const char *name)
{
    if (!name || !self->slots)
        return NULL;
    size_t mask = self->slot_count - 1;
    for (size_t slot = (size_t)name_hash(name) & mask; self->slots[slot];
         slot = (slot + 1) & mask) {
        const nx_st_tensor_t *t = &self->tensors[self->slots[slot] - 1];
        if (strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

size_t nx_st_file_count(const nx_st_t *self)
{
    return self->file_count;
}

const nx_st_file_t *nx_st_file_at(const nx_st_t *self, size_t index)
{
    return index < self->file_count ? &self->files[index] : NULL;
}

uint64_t nx_st_data_bytes(const nx_st_t *self)
{
    return self->data_bytes;
}

const char *nx_st_metadata(const nx_st_t *self, size_t file_index, const char *key)
{
    if (file_index >= self->file_count || !key)
        return NULL;
    const file_meta_t *fm = &self->metas[file_index];
    for (size_t i = 0; i < fm->count; i++) {
        if (strcmp(fm->pairs[i].key, key) == 0)
            return fm->pairs[i].value;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Digest verification
 */

static int hash_data_section(const nx_st_file_t *file, void *buf, uint64_t *digest_out,
                             nx_err_t *err)
{
    int fd = open(file->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return open_error(file->path, err);
    XXH3_state_t *state = XXH3_createState();
    int rc = NX_OK;
    if (!state) {
        rc = nx_err_set(err, NX_ENOMEM, "%s: out of memory for the hash state", file->path);
        goto out_close;
    }
    XXH3_64bits_reset(state);
    for (uint64_t done = 0; done < file->data_bytes;) {
        uint64_t left = file->data_bytes - done;
        size_t len = left < VERIFY_CHUNK_BYTES ? (size_t)left : VERIFY_CHUNK_BYTES;
        rc = pread_full(fd, buf, len, file->data_offset + done, file->path, err);
        if (rc != NX_OK)
            goto out_free;
        XXH3_64bits_update(state, buf, len);
        done += len;
    }
    *digest_out = XXH3_64bits_digest(state);
out_free:
    XXH3_freeState(state);
out_close:
    close(fd);
    return rc;
}

int nx_st_verify_digest(const nx_st_t *self, size_t *checked_out, nx_err_t *err)
{
    size_t checked = 0;
    void *buf = NULL;
    int rc = NX_OK;
    for (size_t i = 0; i < self->file_count && rc == NX_OK; i++) {
        const nx_st_file_t *file = &self->files[i];
        if (!file->digest)
            continue;
        uint64_t expected, actual = 0;
        if (!nx__st_parse_digest(file->digest, &expected)) {
            rc = nx_err_set(err, NX_EFORMAT,
                            "%s: __metadata__[\"" NX_ST_DIGEST_KEY "\"] is '%s', not '"
                            NX__ST_DIGEST_PREFIX "' and 16 lowercase hex digits",
                            file->path, file->digest);
            break;
        }
        if (!buf && !(buf = malloc(VERIFY_CHUNK_BYTES))) {
            rc = nx_err_set(err, NX_ENOMEM, "out of memory for a %u-byte read buffer",
                            VERIFY_CHUNK_BYTES);
            break;
        }
        rc = hash_data_section(file, buf, &actual, err);
        if (rc == NX_OK && actual != expected)
            rc = nx_err_set(err, NX_EDIGEST,
                            "%s: digest mismatch: __metadata__ records " NX__ST_DIGEST_PREFIX
                            "%016llx but the data section hashes to " NX__ST_DIGEST_PREFIX
                            "%016llx",
                            file->path, (unsigned long long)expected,
                            (unsigned long long)actual);
        if (rc == NX_OK)
            checked++;
    }
    free(buf);
    if (checked_out)
        *checked_out = checked;
    return rc;
}
