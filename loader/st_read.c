/* st_read.c — open and fully validate a safetensors checkpoint: one file, or a directory that
 * holds one *.safetensors file or shards listed by model.safetensors.index.json.
 *
 * Every rule of the format is checked before anything is exposed, because the loader reads
 * byte ranges straight into device memory on the strength of these offsets: the header length
 * is bounded, the JSON is well formed and free of duplicate keys, every tensor has a known
 * dtype and a shape whose size matches its range, and the ranges tile the data section with
 * no gap, overlap or trailing byte. A failure names the file, the tensor and the rule.
 * Nothing here trusts the input: the header parser is fuzzed (tests/fuzz_st_header.c).
 * A GGUF file given to nx_st_open goes to gguf_read.c; both fill the checkpoint object of
 * st_common.c.
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
#include "st_internal.h"

#define INDEX_NAME "model.safetensors.index.json"
#define METADATA_KEY "__metadata__"

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
    case NX__ST_SIZE_BLOCK: /* nx_dtype_parse gives no block types; kept for -Wswitch */
        return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': %s is not a safetensors dtype",
                          label, name, nx_dtype_name(t->dtype));
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
    t.name = nx__st_arena_strdup(st, name);
    if (!t.name || !nx__st_grow((void **)&st->tensors, &st->tensor_cap, st->tensor_count + 1,
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
    nx__file_meta_t *fm = &st->metas[st->file_count - 1];
    fm->pairs = calloc(json_object_size(meta) + 1, sizeof *fm->pairs);
    if (!fm->pairs)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory reading __metadata__", label);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value))
            return nx_err_set(err, NX_EFORMAT,
                              "%s: __metadata__ value of '%s' is not a string", label, key);
        nx__meta_pair_t *pair = &fm->pairs[fm->count];
        pair->key = nx__st_arena_strdup(st, key);
        pair->value = nx__st_arena_strdup(st, json_string_value(value));
        if (!pair->key || !pair->value)
            return nx_err_set(err, NX_ENOMEM, "%s: out of memory reading __metadata__", label);
        fm->count++;
        if (strcmp(key, NX_ST_DIGEST_KEY) == 0)
            file->digest = pair->value;
    }
    return NX_OK;
}

/* Validate one file's header (the N bytes after the prefix) and append its tensors. */
static int parse_header(nx_st_t *st, const char *label, const char *header,
                        uint64_t header_bytes, uint64_t file_bytes, nx_err_t *err)
{
    int rc = nx__st_add_file(st, label, file_bytes, header_bytes, 8 + header_bytes, err);
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
    return nx__st_check_ranges(st, label, false, err);
}

/* ------------------------------------------------------------------------------------------
 * Files and directories
 */

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
    rc = nx__st_pread_full(fd, prefix, 8, 0, path, err);
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
    rc = nx__st_pread_full(fd, header, (size_t)header_bytes, 8, path, err);
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
        rc = nx__st_build_index(st, err);
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
        rc = nx__st_build_index(st, err);
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

/* A regular file is GGUF when it starts with GGUF's magic, or when it is named *.gguf (so that
 * a damaged one is reported as a GGUF file with a bad magic, not as a bad safetensors header). */
static bool is_gguf_file(const char *path)
{
    if (has_suffix(path, ".gguf"))
        return true;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false; /* open_file reports why */
    char magic[4];
    bool gguf = pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic && nx__gguf_magic(magic);
    close(fd);
    return gguf;
}

nx_st_t *nx_st_open(const char *path, nx_err_t *err)
{
    if (!path) {
        nx_err_set(err, NX_EINVAL, "nx_st_open: no path");
        return NULL;
    }
    nx_st_t *st = nx__st_new(path);
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
    else if (S_ISREG(sb.st_mode) && is_gguf_file(path)) {
        rc = nx__gguf_open_file(st, path, err);
    } else if (S_ISREG(sb.st_mode)) {
        rc = open_file(st, path, err);
        if (rc == NX_OK)
            rc = nx__st_build_index(st, err);
    } else
        rc = nx_err_set(err, NX_EFORMAT, "%s: not a regular file or a directory", path);
    if (rc != NX_OK)
        nx_st_destroy(&st);
    return st;
}

nx_st_t *nx__st_from_buffer(const char *label, const void *bytes, size_t len, nx_err_t *err)
{
    nx_st_t *st = nx__st_new(label);
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
        rc = nx__st_build_index(st, err);
    if (rc != NX_OK)
        nx_st_destroy(&st);
    return st;
}

