/* st_write.c — nx_st_save: write a tensor dict as a plain safetensors file.
 *
 * The file is one any reader accepts, with three habits of ours on top: the header is padded
 * with spaces so the data section starts on a 4 KiB boundary (O_DIRECT reads need no head
 * fix-up), __metadata__ carries the xxh3-64 of the data section, and the write is atomic
 * (temporary file in the same directory, fsync, rename, fsync of the directory).
 *
 * The header precedes the data but the digest covers the data, so the header is written with a
 * fixed-width placeholder digest whose bytes are overwritten once the data has been hashed.
 * The writer helpers (temporary file, hashed writes, fill, commit) serve gguf_write.c too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "st_internal.h"

#define FILL_BUFFER_BYTES (8u << 20)
#define WRITE_CHUNK_BYTES (64u << 20)
#define DIGEST_PLACEHOLDER NX__ST_DIGEST_PREFIX "0000000000000000"

/* ------------------------------------------------------------------------------------------
 * Input validation
 */

static int compare_spec_names(const void *a, const void *b)
{
    const nx_st_tensor_spec_t *x = *(const nx_st_tensor_spec_t *const *)a;
    const nx_st_tensor_spec_t *y = *(const nx_st_tensor_spec_t *const *)b;
    return strcmp(x->name, y->name);
}

static int validate_spec(const nx_st_tensor_spec_t *t, size_t index, const nx_st_save_opts_t *opts,
                         nx_err_t *err)
{
    if (!t->name || !*t->name)
        return nx_err_set(err, NX_EINVAL, "tensor #%zu has an empty name", index);
    if (strcmp(t->name, "__metadata__") == 0)
        return nx_err_set(err, NX_EINVAL, "tensor #%zu: '__metadata__' is reserved, not a "
                                          "tensor name", index);
    if ((unsigned)t->dtype >= NX_DT__COUNT)
        return nx_err_set(err, NX_EINVAL, "tensor '%s': dtype %d is not a known dtype", t->name,
                          (int)t->dtype);
    if (nx_dtype_is_block(t->dtype))
        return nx_err_set(err, NX_EINVAL,
                          "tensor '%s': %s is a ggml block type, which safetensors cannot hold "
                          "(write GGUF: nx_gguf_save)",
                          t->name, nx_dtype_name(t->dtype));
    if (t->ndim > NX_ST_MAX_DIMS)
        return nx_err_set(err, NX_EINVAL, "tensor '%s': %u dimensions (the limit is %d)",
                          t->name, t->ndim, NX_ST_MAX_DIMS);
    char shape_text[256];
    uint64_t bytes;
    nx__st_size_rc_t size_rc = nx__st_tensor_bytes(t->dtype, t->shape, t->ndim, &bytes);
    if (size_rc == NX__ST_SIZE_OVERFLOW || (size_rc == NX__ST_SIZE_OK && bytes > INT64_MAX))
        return nx_err_set(err, NX_EINVAL, "tensor '%s': shape %s of %s overflows", t->name,
                          nx__st_format_shape(shape_text, sizeof shape_text, t->shape, t->ndim),
                          nx_dtype_name(t->dtype));
    if (size_rc == NX__ST_SIZE_PARTIAL)
        return nx_err_set(err, NX_EINVAL,
                          "tensor '%s': shape %s of %s is not a whole number of bytes", t->name,
                          nx__st_format_shape(shape_text, sizeof shape_text, t->shape, t->ndim),
                          nx_dtype_name(t->dtype));
    if (!t->data && bytes > 0 && !(opts && opts->fill))
        return nx_err_set(err, NX_EINVAL, "tensor '%s' has no data and no fill callback",
                          t->name);
    return NX_OK;
}

static int check_unique_names(const nx_st_tensor_spec_t *tensors, size_t count, nx_err_t *err)
{
    if (count < 2)
        return NX_OK;
    const nx_st_tensor_spec_t **sorted = malloc(count * sizeof *sorted);
    if (!sorted)
        return nx_err_set(err, NX_ENOMEM, "out of memory checking %zu tensor names", count);
    for (size_t i = 0; i < count; i++)
        sorted[i] = &tensors[i];
    qsort(sorted, count, sizeof *sorted, compare_spec_names);
    int rc = NX_OK;
    for (size_t i = 1; i < count && rc == NX_OK; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            rc = nx_err_set(err, NX_EINVAL, "tensor '%s' is given twice", sorted[i]->name);
    }
    free(sorted);
    return rc;
}

static int validate_meta(const nx_st_save_opts_t *opts, nx_err_t *err)
{
    if (!opts || opts->meta_count == 0)
        return NX_OK;
    if (!opts->meta_keys || !opts->meta_values)
        return nx_err_set(err, NX_EINVAL, "meta_count is %zu but the key or value list is NULL",
                          opts->meta_count);
    for (size_t i = 0; i < opts->meta_count; i++) {
        const char *key = opts->meta_keys[i];
        if (!key || !opts->meta_values[i])
            return nx_err_set(err, NX_EINVAL, "__metadata__ pair #%zu has a NULL key or value",
                              i);
        if (strcmp(key, NX_ST_DIGEST_KEY) == 0)
            return nx_err_set(err, NX_EINVAL,
                              "__metadata__ key '" NX_ST_DIGEST_KEY "' is written by the saver");
        for (size_t j = 0; j < i; j++) {
            if (strcmp(opts->meta_keys[j], key) == 0)
                return nx_err_set(err, NX_EINVAL, "__metadata__ key '%s' is given twice", key);
        }
    }
    return NX_OK;
}

static int validate_inputs(const nx_st_tensor_spec_t *tensors, size_t count,
                           const nx_st_save_opts_t *opts, nx_err_t *err)
{
    if (count > 0 && !tensors)
        return nx_err_set(err, NX_EINVAL, "%zu tensors but no tensor list", count);
    for (size_t i = 0; i < count; i++) {
        int rc = validate_spec(&tensors[i], i, opts, err);
        if (rc != NX_OK)
            return rc;
    }
    int rc = check_unique_names(tensors, count, err);
    return rc == NX_OK ? validate_meta(opts, err) : rc;
}

/* ------------------------------------------------------------------------------------------
 * The header
 */

static uint64_t spec_bytes(const nx_st_tensor_spec_t *t)
{
    uint64_t bytes = 0;
    nx__st_tensor_bytes(t->dtype, t->shape, t->ndim, &bytes); /* validated already */
    return bytes;
}

static json_t *tensor_entry(const nx_st_tensor_spec_t *t, uint64_t begin, uint64_t end)
{
    json_t *shape = json_array();
    for (uint32_t d = 0; shape && d < t->ndim; d++) {
        if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0) {
            json_decref(shape);
            return NULL;
        }
    }
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", nx_dtype_name(t->dtype), "shape", shape,
                     "data_offsets", (json_int_t)begin, (json_int_t)end);
}

static json_t *header_json(const nx_st_tensor_spec_t *tensors, size_t count,
                           const nx_st_save_opts_t *opts, uint64_t *data_bytes_out)
{
    json_t *root = json_object();
    json_t *meta = json_object();
    bool ok = root && meta && json_object_set_new(meta, NX_ST_DIGEST_KEY,
                                                  json_string(DIGEST_PLACEHOLDER)) == 0;
    for (size_t i = 0; ok && opts && i < opts->meta_count; i++)
        ok = json_object_set_new(meta, opts->meta_keys[i], json_string(opts->meta_values[i])) == 0;
    ok = ok && json_object_set(root, "__metadata__", meta) == 0;
    uint64_t offset = 0;
    for (size_t i = 0; ok && i < count; i++) {
        uint64_t bytes = spec_bytes(&tensors[i]);
        ok = !__builtin_add_overflow(offset, bytes, &offset) && offset <= INT64_MAX &&
             json_object_set_new(root, tensors[i].name,
                                 tensor_entry(&tensors[i], offset - bytes, offset)) == 0;
    }
    json_decref(meta);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    *data_bytes_out = offset;
    return root;
}

/* The prefix and the space-padded header: 8 + N is a multiple of NX_ST_ALIGN. */
static int build_header(const char *path, const nx_st_tensor_spec_t *tensors, size_t count,
                        const nx_st_save_opts_t *opts, char **head_out, size_t *head_bytes_out,
                        size_t *digest_at_out, uint64_t *data_bytes_out, nx_err_t *err)
{
    json_t *root = header_json(tensors, count, opts, data_bytes_out);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text)
        return nx_err_set(err, NX_ENOMEM,
                          "%s: cannot build the header (out of memory, invalid UTF-8 in a name "
                          "or data over 2^63 bytes)",
                          path);
    static const char digest_field[] = "{\"__metadata__\":{\"" NX_ST_DIGEST_KEY "\":\"";
    size_t text_len = strlen(text);
    size_t head_bytes = (8 + text_len + NX_ST_ALIGN - 1) / NX_ST_ALIGN * NX_ST_ALIGN;
    char *head = malloc(head_bytes);
    if (!head) {
        free(text);
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory for a %zu-byte header", path,
                          head_bytes);
    }
    uint64_t header_len = head_bytes - 8;
    for (int i = 0; i < 8; i++)
        head[i] = (char)(header_len >> (8 * i));
    memcpy(head + 8, text, text_len);
    memset(head + 8 + text_len, ' ', head_bytes - 8 - text_len);
    /* __metadata__ is the first key and the digest its first entry (jansson keeps insertion
     * order), so the placeholder sits right after this fixed opening. */
    if (strncmp(text, digest_field, sizeof digest_field - 1) != 0 ||
        strncmp(text + sizeof digest_field - 1, DIGEST_PLACEHOLDER, NX__ST_DIGEST_CHARS) != 0) {
        free(text);
        free(head);
        return nx_err_set(err, NX_EINVAL, "%s: the digest placeholder is not where expected",
                          path);
    }
    *digest_at_out = 8 + sizeof digest_field - 1;
    free(text);
    *head_out = head;
    *head_bytes_out = head_bytes;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Writing
 */

int nx__st_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset, const char *path,
                       nx_err_t *err)
{
    size_t done = 0;
    while (done < len) {
        ssize_t put = pwrite(fd, (const char *)buf + done, len - done, (off_t)(offset + done));
        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return nx_err_set(err, NX_EIO, "%s: write of %zu bytes at offset %llu failed: %s",
                              path, len - done, (unsigned long long)(offset + done),
                              put < 0 ? strerror(errno) : "no progress");
        done += (size_t)put;
    }
    return NX_OK;
}

int nx__st_write_hashed(nx__st_writer_t *w, const void *buf, size_t len, nx_err_t *err)
{
    XXH3_64bits_update(w->hash, buf, len);
    int rc = nx__st_pwrite_full(w->fd, buf, len, w->offset, w->path, err);
    w->offset += len;
    return rc;
}

static int write_filled(nx__st_writer_t *w, const nx_st_tensor_spec_t *t, uint64_t bytes,
                        const nx_st_save_opts_t *opts, nx_err_t *err)
{
    if (!w->fill_buf && !(w->fill_buf = malloc(FILL_BUFFER_BYTES)))
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory for the fill buffer", w->path);
    for (uint64_t done = 0; done < bytes;) {
        size_t len = bytes - done < FILL_BUFFER_BYTES ? (size_t)(bytes - done) : FILL_BUFFER_BYTES;
        nx_err_t fill_err = {0};
        int rc = opts->fill(opts->fill_user, t, done, w->fill_buf, len, &fill_err);
        if (rc != NX_OK)
            return nx_err_set(err, rc, "%s: filling tensor '%s' at byte %llu: %s", w->path,
                              t->name, (unsigned long long)done,
                              fill_err.msg[0] ? fill_err.msg : nx_strerror(rc));
        rc = nx__st_write_hashed(w, w->fill_buf, len, err);
        if (rc != NX_OK)
            return rc;
        done += len;
    }
    return NX_OK;
}

int nx__st_write_tensor(nx__st_writer_t *w, const nx_st_tensor_spec_t *t, uint64_t bytes,
                        const nx_st_save_opts_t *opts, nx_err_t *err)
{
    if (!t->data)
        return write_filled(w, t, bytes, opts, err);
    int rc = NX_OK;
    for (uint64_t done = 0; rc == NX_OK && done < bytes;) {
        size_t len = bytes - done < WRITE_CHUNK_BYTES ? (size_t)(bytes - done) : WRITE_CHUNK_BYTES;
        rc = nx__st_write_hashed(w, (const char *)t->data + done, len, err);
        done += len;
    }
    return rc;
}

static int write_data(nx__st_writer_t *w, const nx_st_tensor_spec_t *tensors, size_t count,
                      const nx_st_save_opts_t *opts, nx_err_t *err)
{
    for (size_t i = 0; i < count; i++) {
        int rc = nx__st_write_tensor(w, &tensors[i], spec_bytes(&tensors[i]), opts, err);
        if (rc != NX_OK)
            return rc;
    }
    return NX_OK;
}

int nx_st_make_parents(const char *path, nx_err_t *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return nx_err_set(err, NX_EINVAL, "'%.64s...': path too long", path);
    for (char *slash = strchr(buf + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return nx_err_set(err, NX_EIO, "creating '%s': %s", buf, strerror(errno));
        *slash = '/';
    }
    return NX_OK;
}

/* "<dir>/.<name>.tmp-XXXXXX" beside path, so that rename stays within one file system. */
static char *temp_template(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path + 1) : 0;
    const char *base = slash ? slash + 1 : path;
    char *tmpl = malloc(strlen(path) + 16);
    if (tmpl)
        sprintf(tmpl, "%.*s.%s.tmp-XXXXXX", (int)dir_len, path, base);
    return tmpl;
}

static int fsync_parent_dir(const char *path, nx_err_t *err)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", path);
    int rc = NX_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = nx_err_set(err, NX_EIO, "%s: fsync of directory %s failed: %s", path, dir,
                        strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

int nx__st_writer_open(nx__st_writer_t *w, const char *path, char **tmp_out, nx_err_t *err)
{
    memset(w, 0, sizeof *w);
    w->path = path;
    w->fd = -1;
    char *tmp = temp_template(path);
    w->hash = XXH3_createState();
    int rc = NX_OK;
    if (!tmp || !w->hash) {
        rc = nx_err_set(err, NX_ENOMEM, "%s: out of memory", path);
        goto out_fail;
    }
    XXH3_64bits_reset(w->hash);
    w->fd = mkstemp(tmp);
    if (w->fd < 0) {
        rc = nx_err_set(err, NX_EIO, "%s: cannot create a temporary file %s: %s", path, tmp,
                        strerror(errno));
        goto out_fail;
    }
    if (fchmod(w->fd, 0644) != 0) {
        rc = nx_err_set(err, NX_EIO, "%s: chmod of %s failed: %s", path, tmp, strerror(errno));
        close(w->fd);
        unlink(tmp);
        goto out_fail;
    }
    *tmp_out = tmp;
    return NX_OK;
out_fail:
    if (w->hash)
        XXH3_freeState(w->hash);
    w->hash = NULL;
    w->fd = -1;
    free(tmp);
    return rc;
}

int nx__st_writer_finish(nx__st_writer_t *w, char *tmp, int rc, nx_err_t *err)
{
    if (rc == NX_OK && fsync(w->fd) != 0)
        rc = nx_err_set(err, NX_EIO, "%s: fsync failed: %s", w->path, strerror(errno));
    if (close(w->fd) != 0 && rc == NX_OK)
        rc = nx_err_set(err, NX_EIO, "%s: close failed: %s", w->path, strerror(errno));
    w->fd = -1;
    if (rc == NX_OK && rename(tmp, w->path) != 0)
        rc = nx_err_set(err, NX_EIO, "%s: rename from %s failed: %s", w->path, tmp,
                        strerror(errno));
    if (rc != NX_OK)
        unlink(tmp);
    else
        rc = fsync_parent_dir(w->path, err);
    XXH3_freeState(w->hash);
    w->hash = NULL;
    free(w->fill_buf);
    w->fill_buf = NULL;
    free(tmp);
    return rc;
}

/* Header, data, then the digest into the placeholder. */
static int write_body(nx__st_writer_t *w, const char *head, size_t head_bytes, size_t digest_at,
                      const nx_st_tensor_spec_t *tensors, size_t count,
                      const nx_st_save_opts_t *opts, nx_err_t *err)
{
    int rc = nx__st_pwrite_full(w->fd, head, head_bytes, 0, w->path, err);
    w->offset = head_bytes;
    if (rc == NX_OK)
        rc = write_data(w, tensors, count, opts, err);
    if (rc != NX_OK)
        return rc;
    char digest[NX__ST_DIGEST_CHARS + 1];
    nx__st_format_digest(digest, XXH3_64bits_digest(w->hash));
    return nx__st_pwrite_full(w->fd, digest, NX__ST_DIGEST_CHARS, digest_at, w->path, err);
}

int nx_st_save(const char *path, const nx_st_tensor_spec_t *tensors, size_t count,
               const nx_st_save_opts_t *opts, nx_err_t *err)
{
    if (!path || !*path)
        return nx_err_set(err, NX_EINVAL, "nx_st_save: no path");
    int rc = validate_inputs(tensors, count, opts, err);
    if (rc != NX_OK)
        return nx_err_prefix(err, "%s: ", path);
    char *head = NULL, *tmp = NULL;
    size_t head_bytes = 0, digest_at = 0;
    uint64_t data_bytes = 0;
    rc = build_header(path, tensors, count, opts, &head, &head_bytes, &digest_at, &data_bytes,
                      err);
    if (rc != NX_OK)
        return rc;
    nx__st_writer_t w;
    rc = nx__st_writer_open(&w, path, &tmp, err);
    if (rc == NX_OK) {
        rc = write_body(&w, head, head_bytes, digest_at, tensors, count, opts, err);
        rc = nx__st_writer_finish(&w, tmp, rc, err);
    }
    free(head);
    return rc;
}
