/* st_internal.h — internal to the checkpoint readers and writers (st_read.c, st_write.c,
 * gguf_read.c, gguf_write.c): the checkpoint object both formats fill, the helpers they share,
 * and parse-from-memory entry points used by the fuzz targets (tests/fuzz_st_header.c,
 * tests/fuzz_gguf_header.c). */
#ifndef NX_ST_INTERNAL_H
#define NX_ST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

#include "nx_loader.h"

/* GGUF values are read and handed out in place, little-endian; so is every tensor we load. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the loader assumes a little-endian host");

#define NX__ST_DIGEST_PREFIX "xxh3-64:"
#define NX__ST_DIGEST_CHARS 24 /* strlen("xxh3-64:") + 16 hex digits */

#define NX__GGUF_MAGIC "GGUF"
#define NX__GGUF_ALIGNMENT_KEY "general.alignment"
#define NX__GGUF_DEFAULT_ALIGNMENT 32u
#define NX__GGUF_MAX_DIMS 4u
#define NX__GGUF_PAD_KEY "nexus.pad" /* ignored string key that 4 KiB-aligns our data sections */
#define NX__GGUF_MAX_KEY_BYTES 65535u /* the spec's limit on a key's length */
/* Metadata kept in memory (strings, tables, arrays) per GGUF file. A large tokenizer (256k
 * tokens and merges) needs ~30 MiB; anything near this cap is not a model's metadata. */
#define NX__GGUF_MAX_META_BYTES (1ull << 30)

/* ------------------------------------------------------------------------------------------
 * The checkpoint object
 */

/* Names, paths, metadata strings and arrays live in a chain of blocks that never move. */
typedef struct nx__arena_block {
    struct nx__arena_block *next;
    size_t used;
    size_t cap;
    _Alignas(16) char data[];
} nx__arena_block_t;

typedef struct nx__meta_pair {
    const char *key;   /* in the arena */
    const char *value; /* in the arena */
} nx__meta_pair_t;

typedef struct nx__file_meta {
    nx__meta_pair_t *pairs; /* a safetensors file's __metadata__, in header order */
    size_t count;
} nx__file_meta_t;

/* One GGUF string: bytes in the arena, NUL-terminated after len (it may hold NULs itself). */
typedef struct nx__gguf_str {
    const char *ptr;
    uint64_t len;
} nx__gguf_str_t;

struct nx_gguf_kv {
    const char *key;           /* in the arena */
    nx_gguf_type_t type;       /* NX_GGUF_ARRAY for arrays */
    nx_gguf_type_t elem_type;  /* an array's element type; = type for scalars */
    uint64_t count;            /* array length; 1 for scalars */
    uint64_t scalar;           /* a number or bool scalar's bytes as stored (zero-extended) */
    const void *array;         /* numeric/bool arrays: count packed elements, in the arena */
    const nx__gguf_str_t *strs; /* STRING scalars (1 entry) and string arrays (count) */
};

struct nx_st {
    char *path;                 /* as given to nx_st_open */
    nx_st_file_t *files;        /* file_count entries */
    nx__file_meta_t *metas;     /* parallel to files (safetensors __metadata__) */
    size_t file_count;
    size_t file_cap;
    nx_st_tensor_t *tensors;    /* storage order */
    size_t tensor_count;
    size_t tensor_cap;
    size_t *slots;              /* open-addressing hash of names: tensor index + 1, 0 = empty */
    size_t slot_count;          /* a power of two */
    uint64_t data_bytes;        /* sum of data sections */
    nx__arena_block_t *arena;
    /* GGUF only (one file): version 0 means safetensors. */
    uint32_t gguf_version;
    uint32_t gguf_alignment;
    struct nx_gguf_kv *kvs;     /* file order */
    size_t kv_count;
    size_t *kv_slots;           /* open-addressing hash of keys: kv index + 1, 0 = empty */
    size_t kv_slot_count;       /* a power of two */
};

/* An empty checkpoint labelled `path`; NULL when out of memory. */
nx_st_t *nx__st_new(const char *path);

/* `bytes` from the arena, 16-byte aligned (or `align`, a power of two up to 16: 1 for
 * strings), or NULL when out of memory. */
void *nx__st_arena_alloc(nx_st_t *st, size_t bytes);
void *nx__st_arena_alloc_aligned(nx_st_t *st, size_t bytes, size_t align);
char *nx__st_arena_strdup(nx_st_t *st, const char *text);

/* Make room for `need` elements in a growable array. */
bool nx__st_grow(void **array, size_t *cap, size_t need, size_t elem_bytes);

/* FNV-1a of a NUL-terminated name (tensor names, GGUF keys). */
uint64_t nx__st_name_hash(const char *name);

/* Append a file record labelled `label` (path copied into the arena): file_bytes and the
 * data section [data_offset, file_bytes); header_bytes as the format defines it. Its
 * tensors are the ones appended after this call. */
int nx__st_add_file(nx_st_t *st, const char *label, uint64_t file_bytes, uint64_t header_bytes,
                    uint64_t data_offset, nx_err_t *err);

/* Sort the last file's tensors by range and check them against its data section. Safetensors
 * (gaps_allowed false): the ranges tile the section exactly. GGUF (true): padding may sit
 * between, before and after tensors; overlaps and ranges past the end are still errors.
 * Adds the file's data bytes to the checkpoint's total on success. */
int nx__st_check_ranges(nx_st_t *st, const char *label, bool gaps_allowed, nx_err_t *err);

/* Index every tensor by name (again after reordering); a name held twice is an error. */
int nx__st_build_index(nx_st_t *st, nx_err_t *err);

/* Read exactly len bytes at offset; NX_EIO naming label on an error or early end. */
int nx__st_pread_full(int fd, void *buf, size_t len, uint64_t offset, const char *label,
                      nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * Safetensors
 */

/* Parse and validate `bytes` as the whole content of a safetensors file called `label`
 * (prefix, header and data section), exactly as nx_st_open validates a file on disk.
 * Digest verification reads the file by its label, so it is meaningless on the result.
 * Returns NULL and fills *err on any problem. Caller owns the result. */
nx_st_t *nx__st_from_buffer(const char *label, const void *bytes, size_t len, nx_err_t *err);

typedef enum nx__st_size_rc {
    NX__ST_SIZE_OK = 0,
    NX__ST_SIZE_OVERFLOW,  /* numel or the byte count does not fit in 64 bits */
    NX__ST_SIZE_PARTIAL,   /* numel * bits is not a whole number of bytes */
    NX__ST_SIZE_BLOCK,     /* a block type whose last dimension is not a multiple of the block
                            * (or a block-type scalar) */
} nx__st_size_rc_t;

/* Byte size of a tensor: numel * bits / 8 for element types, checked as the safetensors
 * reference implementation does; for block types, numel / block_elems * block_bytes. */
nx__st_size_rc_t nx__st_tensor_bytes(nx_dtype_t dtype, const uint64_t *shape, uint32_t ndim,
                                     uint64_t *bytes_out);

/* "[2, 3]" into buf (truncated with "..." when it does not fit). Returns buf. */
const char *nx__st_format_shape(char *buf, size_t cap, const uint64_t *shape, uint32_t ndim);

/* Parse "xxh3-64:<16 lowercase hex>"; false when the value has any other form. */
bool nx__st_parse_digest(const char *value, uint64_t *digest_out);
/* Write "xxh3-64:<16 lowercase hex>" and a NUL into out (NX__ST_DIGEST_CHARS + 1 bytes). */
void nx__st_format_digest(char *out, uint64_t digest);

/* ------------------------------------------------------------------------------------------
 * Writing (st_write.c), shared by nx_st_save and nx_gguf_save
 */

typedef struct nx__st_writer {
    const char *path;   /* the final path, for messages */
    int fd;             /* the temporary file */
    uint64_t offset;    /* next write position in the file */
    XXH3_state_t *hash; /* over the data section */
    void *fill_buf;     /* allocated on first use, reused */
} nx__st_writer_t;

/* Create a temporary file beside path (same directory, so rename stays in one file system),
 * mode 0644, and a writer on it with the hash reset. On error nothing is left behind. */
int nx__st_writer_open(nx__st_writer_t *w, const char *path, char **tmp_out, nx_err_t *err);
int nx__st_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset, const char *path,
                       nx_err_t *err);
/* Write at w->offset, hashing the bytes. */
int nx__st_write_hashed(nx__st_writer_t *w, const void *buf, size_t len, nx_err_t *err);
/* A tensor's `bytes` bytes, from spec->data or, when that is NULL, from opts->fill. */
int nx__st_write_tensor(nx__st_writer_t *w, const nx_st_tensor_spec_t *spec, uint64_t bytes,
                        const nx_st_save_opts_t *opts, nx_err_t *err);
/* Finish: when rc is NX_OK, fsync, close, rename tmp over path and fsync the directory;
 * otherwise (or when any step fails) close and unlink tmp. Frees the writer's buffers and tmp.
 * Returns the first error. */
int nx__st_writer_finish(nx__st_writer_t *w, char *tmp, int rc, nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * GGUF (gguf_read.c)
 */

/* Whether the first bytes of a file (at least 4) are GGUF's magic. */
bool nx__gguf_magic(const void *first4);

/* Open the GGUF file at path into st (which must be empty) as its one file. */
int nx__gguf_open_file(nx_st_t *st, const char *path, nx_err_t *err);

/* Parse and validate `bytes` as the whole content of a GGUF file called `label`, exactly as
 * nx_st_open validates a file on disk (digest verification is meaningless on the result).
 * Returns NULL and fills *err on any problem. Caller owns the result. */
nx_st_t *nx__gguf_from_buffer(const char *label, const void *bytes, size_t len, nx_err_t *err);

/* A GGUF checkpoint's STRING value for key, or NULL. */
const char *nx__gguf_metadata(const nx_st_t *st, const char *key);

/* Bytes of one element of a scalar type (BOOL 1); 0 for STRING, ARRAY and unknown types. */
uint32_t nx__gguf_type_size(nx_gguf_type_t type);

#endif
