/* st_common.c — the checkpoint object that both readers fill (st_read.c for safetensors,
 * gguf_read.c for GGUF): its arena, name index, file records, the range check that guards the
 * loader's reads, the accessors, and digest verification.
 *
 * The loader reads byte ranges straight into device memory on the strength of these records,
 * so the range check here is the last word: every tensor lies inside its file's data section
 * and no two overlap, whatever the format.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_internal.h"

#define VERIFY_CHUNK_BYTES (16u << 20)
#define ARENA_BLOCK_BYTES (64u << 10)
#define ARENA_OWN_BLOCK_BYTES (16u << 10) /* larger allocations get a block of their own */
#define ARENA_ALIGN 16u

/* ------------------------------------------------------------------------------------------
 * Sizes, shapes, digests
 */

nx__st_size_rc_t nx__st_tensor_bytes(nx_dtype_t dtype, const uint64_t *shape, uint32_t ndim,
                                     uint64_t *bytes_out)
{
    uint64_t numel = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (__builtin_mul_overflow(numel, shape[i], &numel))
            return NX__ST_SIZE_OVERFLOW;
    }
    if (nx_dtype_is_block(dtype)) {
        /* Rows are whole blocks: the innermost dimension is a multiple of the block. */
        uint64_t elems = nx_dtype_block_elems(dtype);
        if (ndim == 0 || shape[ndim - 1] % elems != 0)
            return NX__ST_SIZE_BLOCK;
        uint64_t bytes;
        if (__builtin_mul_overflow(numel / elems, (uint64_t)nx_dtype_block_bytes(dtype), &bytes))
            return NX__ST_SIZE_OVERFLOW;
        *bytes_out = bytes;
        return NX__ST_SIZE_OK;
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

void nx__st_format_digest(char *out, uint64_t digest)
{
    snprintf(out, NX__ST_DIGEST_CHARS + 1, NX__ST_DIGEST_PREFIX "%016llx",
             (unsigned long long)digest);
}

/* ------------------------------------------------------------------------------------------
 * The checkpoint object: arena, growth, hash index
 */

static nx__arena_block_t *arena_block_new(size_t cap)
{
    nx__arena_block_t *block = malloc(sizeof *block + cap);
    if (block) {
        block->next = NULL;
        block->used = 0;
        block->cap = cap;
    }
    return block;
}

void *nx__st_arena_alloc_aligned(nx_st_t *st, size_t bytes, size_t align)
{
    if (bytes > SIZE_MAX - ARENA_ALIGN)
        return NULL;
    if (bytes > ARENA_OWN_BLOCK_BYTES) {
        /* A big table or array: its own block, linked behind the current one so that the
         * current block's free space stays in use. */
        nx__arena_block_t *own = arena_block_new(bytes);
        if (!own)
            return NULL;
        own->used = bytes;
        if (st->arena) {
            own->next = st->arena->next;
            st->arena->next = own;
        } else {
            st->arena = own;
        }
        return own->data;
    }
    nx__arena_block_t *block = st->arena;
    size_t at = block ? (block->used + align - 1) / align * align : 0;
    if (!block || at > block->cap || block->cap - at < bytes) {
        block = arena_block_new(ARENA_BLOCK_BYTES);
        if (!block)
            return NULL;
        block->next = st->arena;
        st->arena = block;
        at = 0;
    }
    block->used = at + bytes;
    return block->data + at;
}

void *nx__st_arena_alloc(nx_st_t *st, size_t bytes)
{
    return nx__st_arena_alloc_aligned(st, bytes, ARENA_ALIGN);
}

char *nx__st_arena_strdup(nx_st_t *st, const char *text)
{
    size_t len = strlen(text) + 1;
    char *copy = nx__st_arena_alloc_aligned(st, len, 1);
    if (copy)
        memcpy(copy, text, len);
    return copy;
}

bool nx__st_grow(void **array, size_t *cap, size_t need, size_t elem_bytes)
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

nx_st_t *nx__st_new(const char *path)
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
        nx__arena_block_t *next = st->arena->next;
        free(st->arena);
        st->arena = next;
    }
    free(st->files);
    free(st->metas);
    free(st->tensors);
    free(st->slots);
    free(st->kvs);
    free(st->kv_slots);
    free(st->path);
    free(st);
    *self_p = NULL;
}

uint64_t nx__st_name_hash(const char *name)
{
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        hash = (hash ^ *c) * 1099511628211ull;
    return hash;
}

int nx__st_build_index(nx_st_t *st, nx_err_t *err)
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
        size_t slot = (size_t)nx__st_name_hash(t->name) & (slot_count - 1);
        while (slots[slot]) {
            const nx_st_tensor_t *other = &st->tensors[slots[slot] - 1];
            if (strcmp(other->name, t->name) == 0) {
                free(slots);
                if (other->file_index == t->file_index) /* GGUF: JSON caught it for safetensors */
                    return nx_err_set(err, NX_EFORMAT, "%s: tensor '%s': the name is used twice",
                                      st->files[t->file_index].path, t->name);
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

int nx__st_add_file(nx_st_t *st, const char *label, uint64_t file_bytes, uint64_t header_bytes,
                    uint64_t data_offset, nx_err_t *err)
{
    if (!nx__st_grow((void **)&st->files, &st->file_cap, st->file_count + 1, sizeof *st->files))
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
    nx__file_meta_t *metas = realloc(st->metas, st->file_cap * sizeof *metas);
    if (!metas)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
    st->metas = metas;
    nx_st_file_t *file = &st->files[st->file_count];
    memset(file, 0, sizeof *file);
    memset(&st->metas[st->file_count], 0, sizeof st->metas[0]);
    st->file_count++;
    file->path = nx__st_arena_strdup(st, label);
    if (!file->path)
        return nx_err_set(err, NX_ENOMEM, "%s: out of memory", label);
    file->file_bytes = file_bytes;
    file->header_bytes = header_bytes;
    file->data_offset = data_offset;
    file->data_bytes = file_bytes - data_offset;
    file->tensor_first = st->tensor_count;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * The range check
 */

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

/* Safetensors names the rule "data_offsets"; GGUF calls a tensor's place its offset. */
static int range_error_gap(const char *label, const nx_st_tensor_t *prev, const nx_st_tensor_t *t,
                           uint64_t expected, nx_err_t *err)
{
    unsigned long long b = t->begin, e = t->begin + t->bytes;
    if (!prev)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap of %llu "
                          "bytes at the start of the data section",
                          label, t->name, b, e, b);
    return nx_err_set(err, NX_EFORMAT,
                      "%s: gap of %llu bytes between tensor '%s' (ends at %llu) and "
                      "tensor '%s' (begins at %llu)",
                      label, (unsigned long long)(t->begin - expected), prev->name,
                      (unsigned long long)expected, t->name, b);
}

int nx__st_check_ranges(nx_st_t *st, const char *label, bool gaps_allowed, nx_err_t *err)
{
    nx_st_file_t *file = &st->files[st->file_count - 1];
    file->tensor_count = st->tensor_count - file->tensor_first;
    if (file->tensor_count == 0 && file->data_bytes != 0 && !gaps_allowed)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: no tensors but %llu trailing bytes in the data section", label,
                          (unsigned long long)file->data_bytes);
    nx_st_tensor_t *first = file->tensor_count ? &st->tensors[file->tensor_first] : NULL;
    if (file->tensor_count > 1)
        qsort(first, file->tensor_count, sizeof *first, compare_range);
    const char *field = gaps_allowed ? "offset" : "data_offsets";
    uint64_t expected = 0;
    const nx_st_tensor_t *prev = NULL;
    for (size_t i = 0; i < file->tensor_count; i++) {
        const nx_st_tensor_t *t = &first[i];
        unsigned long long b = t->begin, e = t->begin + t->bytes;
        if (t->begin > expected && !gaps_allowed)
            return range_error_gap(label, prev, t, expected, err);
        if (t->begin < expected)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' (ends at %llu)",
                              label, t->name, b, e, prev->name, (unsigned long long)expected);
        if (t->bytes > file->data_bytes || t->begin > file->data_bytes - t->bytes)
            return nx_err_set(err, NX_EFORMAT,
                              "%s: tensor '%s': %s [%llu, %llu] runs beyond the end of the file "
                              "(the data section has %llu bytes)",
                              label, t->name, field, b, e, (unsigned long long)file->data_bytes);
        expected = t->begin + t->bytes;
        prev = t;
    }
    if (expected < file->data_bytes && !gaps_allowed)
        return nx_err_set(err, NX_EFORMAT,
                          "%s: %llu trailing bytes after the last tensor (tensors end at %llu, "
                          "the data section has %llu bytes)",
                          label, (unsigned long long)(file->data_bytes - expected),
                          (unsigned long long)expected, (unsigned long long)file->data_bytes);
    st->data_bytes += file->data_bytes;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Files
 */

int nx__st_pread_full(int fd, void *buf, size_t len, uint64_t offset, const char *label,
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
    for (size_t slot = (size_t)nx__st_name_hash(name) & mask; self->slots[slot];
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
    if (self->gguf_version)
        return nx__gguf_metadata(self, key);
    const nx__file_meta_t *fm = &self->metas[file_index];
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
        return nx_err_set(err, errno == ENOENT ? NX_ENOTFOUND : NX_EIO, "%s: cannot open: %s",
                          file->path, strerror(errno));
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
        rc = nx__st_pread_full(fd, buf, len, file->data_offset + done, file->path, err);
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
    /* Where the digest is recorded, in each format's words. */
    const char *where = self->gguf_version ? "key '" NX_ST_DIGEST_KEY "'"
                                           : "__metadata__[\"" NX_ST_DIGEST_KEY "\"]";
    for (size_t i = 0; i < self->file_count && rc == NX_OK; i++) {
        const nx_st_file_t *file = &self->files[i];
        if (!file->digest)
            continue;
        uint64_t expected, actual = 0;
        if (!nx__st_parse_digest(file->digest, &expected)) {
            rc = nx_err_set(err, NX_EFORMAT,
                            "%s: %s is '%s', not '" NX__ST_DIGEST_PREFIX
                            "' and 16 lowercase hex digits",
                            file->path, where, file->digest);
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
                            "%s: digest mismatch: %s records " NX__ST_DIGEST_PREFIX
                            "%016llx but the data section hashes to " NX__ST_DIGEST_PREFIX
                            "%016llx",
                            file->path, where, (unsigned long long)expected,
                            (unsigned long long)actual);
        if (rc == NX_OK)
            checked++;
    }
    free(buf);
    if (checked_out)
        *checked_out = checked;
    return rc;
}
