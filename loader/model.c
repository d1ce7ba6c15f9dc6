/* model.c — model handles: tensor name -> dtype, shape and pointer in the pool, plus the
 * independent byte-for-byte check of a loaded model against its files (--check). */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device.h"

struct nx_model {
    char *path;
    nx_st_t *st;
    nx_region_t *region;
    uint64_t *file_base; /* per file: its data section's offset in the region */
    uint64_t layout_bytes;
    uint64_t payload_bytes;
    nx_model_tensor_t *tensors; /* storage order, as nx_st_tensor_at */
    size_t tensor_count;
    char *cache_key, *identity, *files;
};

#define LAYOUT_ALIGN 4096ull

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

void nx__model_layout(const nx_st_t *st, bool mirror_page_offset, uint64_t *file_base_out,
                      uint64_t *total_out)
{
    uint64_t at = 0;
    for (size_t i = 0; i < nx_st_file_count(st); i++) {
        const nx_st_file_t *f = nx_st_file_at(st, i);
        file_base_out[i] = at + (mirror_page_offset ? f->data_offset % LAYOUT_ALIGN : 0);
        at = align_up(file_base_out[i] + f->data_bytes, LAYOUT_ALIGN);
    }
    *total_out = at ? at : LAYOUT_ALIGN;
}

nx_model_t *nx__model_new(const char *path, nx_st_t *st, nx_region_t *region,
                          const uint64_t *file_base, uint64_t layout_bytes, const char *key,
                          const char *identity, const char *files, nx_err_t *err)
{
    nx_model_t *m = calloc(1, sizeof *m);
    size_t nfiles = nx_st_file_count(st);
    size_t count = nx_st_tensor_count(st);
    if (!m)
        goto oom;
    m->path = strdup(path);
    m->file_base = malloc((nfiles ? nfiles : 1) * sizeof *m->file_base);
    m->tensors = calloc(count ? count : 1, sizeof *m->tensors);
    m->cache_key = strdup(key ? key : "");
    m->identity = strdup(identity ? identity : "");
    m->files = strdup(files ? files : "");
    if (!m->path || !m->file_base || !m->tensors || !m->cache_key || !m->identity || !m->files)
        goto oom;
    memcpy(m->file_base, file_base, nfiles * sizeof *file_base);
    m->st = st;
    m->region = region;
    m->layout_bytes = layout_bytes;
    m->tensor_count = count;
    char *base = nx_region_ptr(region);
    for (size_t i = 0; i < count; i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
        nx_model_tensor_t *mt = &m->tensors[i];
        mt->name = t->name;
        mt->dtype = t->dtype;
        mt->ndim = t->ndim;
        memcpy(mt->shape, t->shape, sizeof mt->shape);
        mt->ptr = base + file_base[t->file_index] + t->begin;
        mt->bytes = t->bytes;
        m->payload_bytes += t->bytes;
    }
    return m;
oom:
    if (m) {
        m->st = NULL; /* ownership passes only on success */
        m->region = NULL;
        nx__model_free(m);
    }
    nx_err_set(err, NX_ENOMEM, "model '%s': out of memory", path);
    return NULL;
}

nx_region_t *nx__model_take_region(nx_model_t *model)
{
    nx_region_t *region = model->region;
    model->region = NULL;
    return region;
}

void nx__model_free(nx_model_t *model)
{
    if (!model)
        return;
    nx_st_destroy(&model->st);
    free(model->path);
    free(model->file_base);
    free(model->tensors);
    free(model->cache_key);
    free(model->identity);
    free(model->files);
    free(model);
}

uint64_t nx__model_layout_bytes(const nx_model_t *model) { return model->layout_bytes; }
const char *nx__model_cache_key(const nx_model_t *model) { return model->cache_key; }
const char *nx__model_identity(const nx_model_t *model) { return model->identity; }
const char *nx__model_files(const nx_model_t *model) { return model->files; }
const char *nx_model_path(const nx_model_t *model) { return model->path; }
const nx_st_t *nx_model_checkpoint(const nx_model_t *model) { return model->st; }
size_t nx_model_tensor_count(const nx_model_t *model) { return model->tensor_count; }
uint64_t nx_model_bytes(const nx_model_t *model) { return model->payload_bytes; }
const nx_region_t *nx_model_region(const nx_model_t *model) { return model->region; }

const nx_model_tensor_t *nx_model_tensor_at(const nx_model_t *model, size_t index)
{
    return index < model->tensor_count ? &model->tensors[index] : NULL;
}

const nx_model_tensor_t *nx_model_find(const nx_model_t *model, const char *name)
{
    /* The checkpoint's index is the fast path; both arrays are in storage order. */
    const nx_st_tensor_t *t = nx_st_find(model->st, name);
    if (!t)
        return NULL;
    const nx_st_tensor_t *first = nx_st_tensor_at(model->st, 0);
    size_t i = (size_t)(t - first);
    if (i < model->tensor_count && nx_st_tensor_at(model->st, i) == t)
        return &model->tensors[i];
    for (i = 0; i < model->tensor_count; i++) /* not one array after all: search */
        if (strcmp(model->tensors[i].name, name) == 0)
            return &model->tensors[i];
    return NULL;
}

/* ---- the check ------------------------------------------------------------------------- */

#define CHECK_BLOCK (64ull << 20)

static int pread_full(int fd, void *dst, size_t n, uint64_t off, const char *path,
                      nx_err_t *err)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)dst + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return nx_err_set(err, NX_EIO, "'%s': read at byte %llu failed: %s", path,
                              (unsigned long long)(off + got), strerror(errno));
        if (r == 0)
            return nx_err_set(err, NX_EIO, "'%s': file ends at byte %llu, expected %llu", path,
                              (unsigned long long)(off + got), (unsigned long long)(off + n));
        got += (size_t)r;
    }
    return NX_OK;
}

/* Name the tensor of `file` holding data-section byte `pos`. */
static const nx_st_tensor_t *tensor_at_byte(const nx_st_t *st, size_t file, uint64_t pos)
{
    const nx_st_file_t *f = nx_st_file_at(st, file);
    for (size_t i = f->tensor_first; i < f->tensor_first + f->tensor_count; i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
        if (pos >= t->begin && pos < t->begin + t->bytes)
            return t;
    }
    return NULL;
}

static int check_file(nx_pool_t *pool, const nx_model_t *m, size_t fi, char *file_buf,
                      char *pool_buf, nx_err_t *err)
{
    const nx_st_file_t *f = nx_st_file_at(m->st, fi);
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return nx_err_set(err, NX_EIO, "'%s': cannot open: %s", f->path, strerror(errno));
    int rc = NX_OK;
    const char *region = nx_region_ptr(m->region);
    for (uint64_t pos = 0; pos < f->data_bytes && rc == NX_OK; pos += CHECK_BLOCK) {
        size_t n = f->data_bytes - pos < CHECK_BLOCK ? f->data_bytes - pos : CHECK_BLOCK;
        rc = pread_full(fd, file_buf, n, f->data_offset + pos, f->path, err);
        if (rc == NX_OK)
            rc = nx_pool_copy_to_host(pool, pool_buf, region + m->file_base[fi] + pos, n, err);
        if (rc != NX_OK || memcmp(file_buf, pool_buf, n) == 0)
            continue;
        size_t k = 0;
        while (file_buf[k] == pool_buf[k])
            k++;
        const nx_st_tensor_t *t = tensor_at_byte(m->st, fi, pos + k);
        rc = nx_err_set(err, NX_EMISMATCH,
                        "'%s': tensor '%s' differs at its byte %llu (file 0x%02x, pool 0x%02x)",
                        f->path, t ? t->name : "?",
                        (unsigned long long)(t ? pos + k - t->begin : pos + k),
                        (unsigned char)file_buf[k], (unsigned char)pool_buf[k]);
    }
    close(fd);
    return rc;
}

int nx_model_check(nx_pool_t *pool, const nx_model_t *model, nx_err_t *err)
{
    if (!pool || !model || !model->region)
        return nx_err_set(err, NX_EINVAL, "check: no pool or model");
    char *file_buf = malloc(CHECK_BLOCK);
    char *pool_buf = malloc(CHECK_BLOCK);
    int rc = NX_OK;
    if (!file_buf || !pool_buf)
        rc = nx_err_set(err, NX_ENOMEM, "check: out of memory");
    for (size_t fi = 0; rc == NX_OK && fi < nx_st_file_count(model->st); fi++)
        rc = check_file(pool, model, fi, file_buf, pool_buf, err);
    free(file_buf);
    free(pool_buf);
    return rc;
}
