/* nx_loader.h — the fast loader's public C API.
 *
 * Four pieces, bottom up:
 *   1. safetensors: open and validate a checkpoint (one file or a sharded directory), save a
 *      tensor dict as a plain, 4 KiB-aligned, atomically written safetensors file;
 *   2. the device pool: memory reserved once at start-up (VRAM with CUDA, host memory on CPU),
 *      handed out as regions that are contiguous in virtual memory, so a request that fits in
 *      the free total never fails from fragmentation;
 *   3. the loader: reader threads, a ring of pinned staging buffers, overlapped reads and
 *      copies, giving a model handle (tensor name -> dtype, shape, pointer in the pool);
 *   4. the host cache tier: pinned host RAM holding the images of recently evicted models.
 *
 * Threading: every function here may be called from any thread; pool, loader and host cache
 * lock internally. Objects follow new/destroy; destroy sets the caller's pointer to NULL.
 */
#ifndef NX_LOADER_H
#define NX_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"

/* ------------------------------------------------------------------------------------------
 * dtypes: every dtype the safetensors format defines.
 */
typedef enum nx_dtype {
    NX_DT_BOOL,
    NX_DT_U8,
    NX_DT_I8,
    NX_DT_F8_E5M2,
    NX_DT_F8_E4M3,
    NX_DT_F8_E8M0,
    NX_DT_I16,
    NX_DT_U16,
    NX_DT_F16,
    NX_DT_BF16,
    NX_DT_I32,
    NX_DT_U32,
    NX_DT_F32,
    NX_DT_F64,
    NX_DT_I64,
    NX_DT_U64,
    NX_DT_C64,
    NX_DT_F4,
    NX_DT_F6_E2M3,
    NX_DT_F6_E3M2,
    NX_DT_F8_E4M3FNUZ, /* added after the first list: newer safetensors releases define both */
    NX_DT_F8_E5M2FNUZ,
    /* ggml's block types (GGUF files only; never valid in a safetensors header). A tensor of
     * one is a sequence of blocks along its last (innermost) dimension, bit for bit as ggml
     * lays them out (see agents/quant.h for the ones the engine computes with). */
    NX_DT_Q4_0,
    NX_DT_Q4_1,
    NX_DT_Q5_0,
    NX_DT_Q5_1,
    NX_DT_Q8_0,
    NX_DT_Q8_1,
    NX_DT_Q2_K,
    NX_DT_Q3_K,
    NX_DT_Q4_K,
    NX_DT_Q5_K,
    NX_DT_Q6_K,
    NX_DT_Q8_K,
    NX_DT_IQ2_XXS,
    NX_DT_IQ2_XS,
    NX_DT_IQ3_XXS,
    NX_DT_IQ1_S,
    NX_DT_IQ4_NL,
    NX_DT_IQ3_S,
    NX_DT_IQ2_S,
    NX_DT_IQ4_XS,
    NX_DT_IQ1_M,
    NX_DT_TQ1_0,
    NX_DT_TQ2_0,
    NX_DT_MXFP4,
    NX_DT__COUNT
} nx_dtype_t;

/* The name used in safetensors headers ("BF16"), ggml's name in upper case for block types
 * ("Q4_K"), or "?" when out of range. */
const char *nx_dtype_name(nx_dtype_t dtype);
/* Parse a safetensors header dtype name; false when unknown (block types are not accepted:
 * safetensors does not define them). */
bool nx_dtype_parse(const char *name, nx_dtype_t *dtype_out);
/* Parse any name nx_dtype_name gives, case-insensitively ("q4_k", "BF16"); false when
 * unknown. For command lines. */
bool nx_dtype_parse_any(const char *name, nx_dtype_t *dtype_out);
/* Size of one element in bits (1 byte = 8; F4 is 4, F6_* are 6); 0 for block types. */
uint32_t nx_dtype_bits(nx_dtype_t dtype);
/* Whether dtype is one of ggml's block types (Q4_0 ... MXFP4). */
bool nx_dtype_is_block(nx_dtype_t dtype);
/* Elements per block (32 for Q8_0, 256 for Q4_K; 1 for element types) and bytes per block
 * (34, 144; for element types bits / 8, 0 for the sub-byte F4 and F6_*). */
uint32_t nx_dtype_block_elems(nx_dtype_t dtype);
uint32_t nx_dtype_block_bytes(nx_dtype_t dtype);
/* ggml's type id (GGUF's tensor type field) <-> dtype: false / -1 where the other side has no
 * such type (ggml ids of removed types, safetensors-only dtypes). */
bool nx_dtype_from_ggml(uint32_t ggml_type, nx_dtype_t *dtype_out);
int32_t nx_dtype_to_ggml(nx_dtype_t dtype);

/* ------------------------------------------------------------------------------------------
 * safetensors: reading
 */
#define NX_ST_MAX_DIMS 16
#define NX_ST_MAX_HEADER_BYTES (100u * 1024u * 1024u) /* as the reference implementation */
#define NX_ST_DIGEST_KEY "nexus.digest"               /* __metadata__ key: "xxh3-64:<16 hex>" */
#define NX_ST_ALIGN 4096u                             /* data-section alignment we write */

typedef struct nx_st_tensor {
    const char *name;              /* owned by the checkpoint */
    nx_dtype_t dtype;
    uint32_t ndim;                 /* 0 for a scalar */
    uint64_t shape[NX_ST_MAX_DIMS];
    uint32_t file_index;           /* which file of the checkpoint holds it */
    uint64_t begin;                /* byte offset relative to that file's data section */
    uint64_t bytes;                /* end - begin */
} nx_st_tensor_t;

typedef struct nx_st_file {
    const char *path;      /* as opened (directory + file name for shards) */
    uint64_t file_bytes;   /* size of the whole file */
    uint64_t header_bytes; /* N, the JSON length from the 8-byte prefix (GGUF: the bytes of
                            * header, key/values and tensor infos, before the padding) */
    uint64_t data_offset;  /* 8 + N: where the data section starts in the file */
    uint64_t data_bytes;   /* file_bytes - data_offset */
    const char *digest;    /* value of __metadata__[NX_ST_DIGEST_KEY], or NULL */
    size_t tensor_first;   /* this file's tensors are [tensor_first, tensor_first+tensor_count) */
    size_t tensor_count;
} nx_st_file_t;

typedef struct nx_st nx_st_t;

/* Open and fully validate a checkpoint: a .safetensors file, or a directory holding either
 * model.safetensors.index.json (sharded) or exactly one model.safetensors / *.safetensors.
 * Validation follows the format's rules: header length bounded, JSON well formed, known
 * dtypes, shape x dtype size == byte range, ranges inside the file, ranges contiguous and
 * covering the data section, no duplicate names (also across shards), index and shards agree.
 * Returns NULL and fills *err naming the file, the tensor and the rule. Caller owns the result. */
nx_st_t *nx_st_open(const char *path, nx_err_t *err);
void nx_st_destroy(nx_st_t **self_p);

const char *nx_st_path(const nx_st_t *self);
size_t nx_st_tensor_count(const nx_st_t *self);
/* Tensors in storage order: file by file, by begin offset. NULL when out of range. */
const nx_st_tensor_t *nx_st_tensor_at(const nx_st_t *self, size_t index);
/* NULL when there is no such tensor. */
const nx_st_tensor_t *nx_st_find(const nx_st_t *self, const char *name);
size_t nx_st_file_count(const nx_st_t *self);
const nx_st_file_t *nx_st_file_at(const nx_st_t *self, size_t index);
/* Sum of all data sections. */
uint64_t nx_st_data_bytes(const nx_st_t *self);
/* A string from a file's __metadata__, or NULL. */
const char *nx_st_metadata(const nx_st_t *self, size_t file_index, const char *key);

/* Read every file that carries a digest and compare. *checked_out (may be NULL) gets the number
 * of files that had one. NX_OK, NX_EDIGEST (message names the file, expected and actual), or
 * an I/O error. */
int nx_st_verify_digest(const nx_st_t *self, size_t *checked_out, nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * safetensors: writing
 */
typedef struct nx_st_tensor_spec {
    const char *name;
    nx_dtype_t dtype;
    uint32_t ndim;
    uint64_t shape[NX_ST_MAX_DIMS];
    const void *data; /* exactly the tensor's bytes, or NULL to have opts->fill produce them */
} nx_st_tensor_spec_t;

/* Produce bytes [offset, offset+len) of tensor `spec` into dst. Return NX_OK or an error. */
typedef int (*nx_st_fill_fn)(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset,
                             void *dst, size_t len, nx_err_t *err);

typedef struct nx_st_save_opts {
    const char *const *meta_keys; /* extra __metadata__ string pairs */
    const char *const *meta_values;
    size_t meta_count;
    nx_st_fill_fn fill; /* used for tensors whose data is NULL */
    void *fill_user;
} nx_st_save_opts_t;

/* Write a plain safetensors file that any reader accepts: tensors in the given order, the
 * header padded with spaces so that the data section starts on a 4 KiB boundary, the xxh3-64
 * of the data section in __metadata__[NX_ST_DIGEST_KEY], written to a temporary file in the
 * same directory, fsynced, then renamed over `path` (the directory is fsynced too). On error
 * nothing is left at `path` that was not there before. opts may be NULL. */
int nx_st_save(const char *path, const nx_st_tensor_spec_t *tensors, size_t count,
               const nx_st_save_opts_t *opts, nx_err_t *err);

/* mkdir -p of the folders above `path` (not of path itself), for a writer's output: NX_OK, or
 * an error naming the folder that could not be made and why (a file in the way, no right, a
 * path longer than PATH_MAX). */
int nx_st_make_parents(const char *path, nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * GGUF (v2 and v3, little-endian): nx_st_open opens a GGUF file too (a regular file whose first
 * four bytes are "GGUF"), as a checkpoint of one file, so the loader, the host tier and
 * `nexusctl model` treat both formats alike. For a GGUF file:
 *   - tensor shapes are row-major like safetensors' (the reverse of ggml's ne[]: a weight of
 *     ne = [cols, rows] has shape [rows, cols]); block types have shape[ndim-1] a multiple of
 *     the block's elements; at most 4 dimensions;
 *   - the file's data section starts at the first multiple of general.alignment (default 32)
 *     after the tensor infos (file->data_offset) and runs to the end of the file
 *     (file->data_bytes, padding included); begin is relative to it, a multiple of the
 *     alignment; bytes = rows x blocks per row x block bytes; tensors may leave padding
 *     between them but never overlap or reach past the end of the file; storage order (as
 *     nx_st_tensor_at) is by begin, which may differ from the order of the tensor infos;
 *   - a dimension of 0 is refused (ggml would take it; no model has one);
 *   - the metadata key/values are kept (below); nx_st_metadata returns string-valued ones;
 *   - file->digest is the string value of NX_ST_DIGEST_KEY when present (files we write).
 * Rejected with file, tensor and field named: bad magic or version, big-endian files,
 * truncation, counts or string lengths past the end, unknown value or tensor types, nested
 * arrays, bools other than 0 and 1, more than 4 dims, sizes that overflow, offsets that are
 * not multiples of the alignment, outside the data or overlapping, duplicate tensor names or
 * keys, keys that are empty, hold a NUL or pass 65535 bytes, general.alignment that is not
 * a U32 power of two, metadata needing more than 1 GiB of memory.
 * Metadata memory: strings live in the checkpoint's arena (NUL-terminated, length kept); a
 * string array is one table of (pointer, length), so nx_gguf_get_str(kv, i, &len) is O(1);
 * a numeric array is one packed copy (nx_gguf_kv_array_data).
 */
typedef enum nx_gguf_type { /* GGUF's value type ids */
    NX_GGUF_U8 = 0,
    NX_GGUF_I8 = 1,
    NX_GGUF_U16 = 2,
    NX_GGUF_I16 = 3,
    NX_GGUF_U32 = 4,
    NX_GGUF_I32 = 5,
    NX_GGUF_F32 = 6,
    NX_GGUF_BOOL = 7,
    NX_GGUF_STRING = 8,
    NX_GGUF_ARRAY = 9,
    NX_GGUF_U64 = 10,
    NX_GGUF_I64 = 11,
    NX_GGUF_F64 = 12,
    NX_GGUF__COUNT
} nx_gguf_type_t;

typedef struct nx_gguf_kv nx_gguf_kv_t; /* owned by the checkpoint */

/* ggml's name of a value type ("u8", "i32", "f32", "bool", "str", "arr", "u64"); "?" when out
 * of range. */
const char *nx_gguf_type_name(nx_gguf_type_t type);

bool nx_st_is_gguf(const nx_st_t *self);
uint32_t nx_st_gguf_version(const nx_st_t *self);   /* 2 or 3; 0 for safetensors */
uint32_t nx_st_gguf_alignment(const nx_st_t *self); /* general.alignment (32 by default); 0
                                                     * for safetensors */
size_t nx_st_gguf_kv_count(const nx_st_t *self);    /* 0 for safetensors */
const nx_gguf_kv_t *nx_st_gguf_kv_at(const nx_st_t *self, size_t index); /* file order */
/* The value of `key`, or NULL when absent (always NULL for safetensors). */
const nx_gguf_kv_t *nx_st_gguf_find(const nx_st_t *self, const char *key);

const char *nx_gguf_kv_key(const nx_gguf_kv_t *kv);
nx_gguf_type_t nx_gguf_kv_type(const nx_gguf_kv_t *kv);      /* NX_GGUF_ARRAY for arrays */
nx_gguf_type_t nx_gguf_kv_elem_type(const nx_gguf_kv_t *kv); /* an array's; = type otherwise */
uint64_t nx_gguf_kv_count(const nx_gguf_kv_t *kv);           /* array length; 1 for scalars */
/* Element i (0 for a scalar) converted, or false when it does not convert exactly: u64/i64
 * from any integer type (and bool as 0/1) in range; f64 from any number type; bool from BOOL
 * only; a string from STRING only (NUL-terminated, *len_out (may be NULL) its byte length; it
 * may hold NULs). Out-of-range i is false / NULL. */
bool nx_gguf_get_u64(const nx_gguf_kv_t *kv, uint64_t i, uint64_t *out);
bool nx_gguf_get_i64(const nx_gguf_kv_t *kv, uint64_t i, int64_t *out);
bool nx_gguf_get_f64(const nx_gguf_kv_t *kv, uint64_t i, double *out);
bool nx_gguf_get_bool(const nx_gguf_kv_t *kv, uint64_t i, bool *out);
const char *nx_gguf_get_str(const nx_gguf_kv_t *kv, uint64_t i, size_t *len_out);
/* The array's elements as stored (little-endian, packed, elem_type), NULL for strings and
 * scalars: a fast path for big numeric arrays (token types, scores). */
const void *nx_gguf_kv_array_data(const nx_gguf_kv_t *kv);

/* A key/value to write. */
typedef struct nx_gguf_kv_spec {
    const char *key;
    nx_gguf_type_t type;      /* a scalar type, STRING, or ARRAY */
    nx_gguf_type_t elem_type; /* ARRAY: a scalar type or STRING (no nested arrays) */
    uint64_t count;           /* ARRAY: number of elements */
    union {
        uint64_t u; /* U8..U64 */
        int64_t i;  /* I8..I64 */
        double f;   /* F32, F64 */
        bool b;
        const char *str; /* STRING (NUL-terminated) */
    } value;
    const void *array; /* ARRAY of numbers/bools: count packed elements of elem_type (host
                        * order = little-endian); ARRAY of STRING: const char *const[count] */
} nx_gguf_kv_spec_t;

/* Write a GGUF v3 file that llama.cpp reads. Key/values in this order: general.alignment (u32
 * 32, written by this function; a key of that name in kvs is NX_EINVAL), the kvs in the given
 * order, NX_ST_DIGEST_KEY (string "xxh3-64:<16 hex>", the xxh3-64 of the whole data section,
 * padding included, as nx_st_save writes it), "nexus.pad" (a string of spaces that pads the
 * header so the data section starts on a 4 KiB boundary: O_DIRECT needs no head fix-up); both
 * nexus keys are reserved too. Then the tensor infos in the given order with shapes reversed
 * into ggml's ne[], and the data: each tensor on the next 32-byte boundary in the given order,
 * zero bytes between, the last padded to 32 (as ggml's writer does). Tensors: names unique,
 * 1 to 63 bytes (llama.cpp's limit); 1 to 4 dimensions, none 0; any dtype with a ggml id
 * (block dtypes with shape[ndim-1] a multiple of the block). Keys: unique, 1 to 65535 bytes;
 * integer values must fit their type; arrays do not nest; bools are 0 or 1. Atomic like
 * nx_st_save (temporary file, fsync, rename, directory fsync); opts->meta_* must be empty (use
 * kvs); opts->fill works as for nx_st_save (tensors with data NULL are streamed through it). */
int nx_gguf_save(const char *path, const nx_gguf_kv_spec_t *kvs, size_t kv_count,
                 const nx_st_tensor_spec_t *tensors, size_t count, const nx_st_save_opts_t *opts,
                 nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * The device pool
 */
typedef enum nx_device_kind {
    NX_DEVICE_AUTO = 0, /* CUDA when a device and driver are present, else CPU (logged once) */
    NX_DEVICE_CPU,
    NX_DEVICE_CUDA,
} nx_device_kind_t;

const char *nx_device_name(nx_device_kind_t kind); /* "auto", "cpu", "cuda" */
bool nx_device_parse(const char *name, nx_device_kind_t *kind_out);
/* true when the CUDA backend was built in and a device with a working driver is present;
 * reason (may be NULL) gets why not. */
bool nx_cuda_available(nx_err_t *reason);

typedef struct nx_pool_opts {
    nx_device_kind_t device;
    int cuda_ordinal;     /* which GPU; 0 by default */
    uint64_t bytes;       /* pool size; 0 means use `fraction` */
    double fraction;      /* of free device memory (CUDA) or available RAM (CPU) when bytes==0 */
    uint64_t chunk_bytes; /* physical chunk; 0 = backend default, rounded to its granularity */
} nx_pool_opts_t;

typedef struct nx_pool nx_pool_t;
typedef struct nx_region nx_region_t;

/* Reserve the pool's memory now (physically: CUDA chunks created, host pages allocated).
 * Caller owns the result. */
nx_pool_t *nx_pool_new(const nx_pool_opts_t *opts, nx_err_t *err);
/* All regions must have been freed. */
void nx_pool_destroy(nx_pool_t **self_p);
/* What nx_pool_new would reserve with these options on this machine, without reserving it:
 * the device opened (AUTO resolved as nx_pool_new resolves it) and its memory read. NX_ENOMEM
 * naming both figures when the pool is more than the device's free memory (CPU: MemAvailable);
 * a missing device as nx_pool_new says it. For `nexusd --check`. */
typedef struct nx_pool_plan {
    nx_device_kind_t device; /* the backend that would be used (never AUTO) */
    uint64_t bytes;          /* the pool's size: opts->bytes, or fraction of free_bytes */
    uint64_t free_bytes;     /* the device's free memory now (CPU: MemAvailable) */
    uint64_t total_bytes;    /* the device's memory (CPU: MemTotal) */
} nx_pool_plan_t;
int nx_pool_plan(const nx_pool_opts_t *opts, nx_pool_plan_t *out, nx_err_t *err);

/* The backend actually in use (never AUTO). */
nx_device_kind_t nx_pool_device(const nx_pool_t *self);

/* A region of at least `bytes`, contiguous in (device) virtual memory, aligned to at least
 * 4 KiB; owner is copied (for stats). Succeeds whenever bytes rounded up to the chunk size is
 * at most the free total. NX_EPOOLFULL names the request and the free bytes. */
nx_region_t *nx_pool_alloc(nx_pool_t *self, uint64_t bytes, const char *owner, nx_err_t *err);
void nx_pool_free(nx_pool_t *self, nx_region_t **region_p);

void *nx_region_ptr(const nx_region_t *region);      /* device pointer (host pointer on CPU) */
uint64_t nx_region_bytes(const nx_region_t *region); /* usable bytes (>= requested) */
const char *nx_region_owner(const nx_region_t *region);
/* Back the region's bytes [offset, offset + bytes) (clipped to the region) with 2 MiB pages
 * where the device allows it, contents unchanged: on CPU, MADV_COLLAPSE of every 2 MiB page
 * wholly inside; fewer TLB misses when the weights are streamed (bench/RESULTS.md, "Huge
 * pages"). Slow (it copies, ~1-2.5 s per GiB on the VM of bench/RESULTS.md), so never on a
 * load's path: the caller runs it when the model is resident, piece by piece if it must stay
 * responsive; the memory may be read meanwhile. Returns the bytes now huge; 0 where the
 * device has nothing to do (CUDA) or the kernel refused (logged at debug, never an error). */
uint64_t nx_region_collapse(const nx_region_t *region, uint64_t offset, uint64_t bytes);

typedef struct nx_pool_stats {
    nx_device_kind_t device;
    uint64_t total_bytes;
    uint64_t used_bytes;
    uint64_t free_bytes;
    uint64_t chunk_bytes;
    size_t region_count;
} nx_pool_stats_t;

typedef struct nx_pool_region_info {
    char owner[128];
    uint64_t bytes; /* as held, whole chunks */
    uintptr_t address;
} nx_pool_region_info_t;

void nx_pool_stats(const nx_pool_t *self, nx_pool_stats_t *out);
/* Copy up to `cap` region descriptions into out; returns how many regions exist. */
size_t nx_pool_regions(const nx_pool_t *self, nx_pool_region_info_t *out, size_t cap);

/* Copy between the pool and host memory, synchronously (tests, --check, tools). */
int nx_pool_copy_to_host(nx_pool_t *self, void *host_dst, const void *pool_src, size_t bytes,
                         nx_err_t *err);
int nx_pool_copy_from_host(nx_pool_t *self, void *pool_dst, const void *host_src, size_t bytes,
                           nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * The host cache tier: pinned host RAM (plain RAM on CPU) holding images of evicted models.
 */
typedef struct nx_hostcache nx_hostcache_t;

/* Reserve `budget_bytes` of pinned host memory now (for the pool's device). */
nx_hostcache_t *nx_hostcache_new(nx_pool_t *pool, uint64_t budget_bytes, nx_err_t *err);
void nx_hostcache_destroy(nx_hostcache_t **self_p);

typedef struct nx_hostcache_entry_info {
    char key[512];     /* the checkpoint's canonical path */
    uint64_t bytes;
    uint64_t last_use_ns; /* nx_now_ns() at insert or last hit */
} nx_hostcache_entry_info_t;

typedef struct nx_hostcache_stats {
    uint64_t budget_bytes;
    uint64_t used_bytes;
    size_t entries;
    uint64_t hits, misses, evictions;
} nx_hostcache_stats_t;

void nx_hostcache_stats(const nx_hostcache_t *self, nx_hostcache_stats_t *out);
size_t nx_hostcache_entries(const nx_hostcache_t *self, nx_hostcache_entry_info_t *out,
                            size_t cap);
/* Whether an up-to-date image of the checkpoint at `path` is cached. */
bool nx_hostcache_contains(const nx_hostcache_t *self, const char *path);
/* Drop one image (NX_ENOTFOUND when absent) or all of them. */
int nx_hostcache_evict(nx_hostcache_t *self, const char *path, nx_err_t *err);
void nx_hostcache_evict_all(nx_hostcache_t *self);

/* ------------------------------------------------------------------------------------------
 * The loader and model handles
 */
typedef enum nx_read_mode {
    NX_READ_AUTO = 0, /* O_DIRECT unless the file is in the page cache (mincore) */
    NX_READ_DIRECT,   /* O_DIRECT, falling back to buffered on EINVAL or a short read */
    NX_READ_BUFFERED,
} nx_read_mode_t;

/* ------------------------------------------------------------------------------------------
 * The loader's I/O shape: how it reads (io_uring or pread threads), how many reader threads,
 * reads in flight per thread and bytes per read. Chosen, first match wins, from: the caller's
 * explicit values (flags), a calibration cached for the file system (`nexusctl loader
 * calibrate`), a rule over the file system's block device in sysfs, the built-in defaults.
 */
typedef enum nx_loader_io {
    NX_LOADER_IO_AUTO = 0, /* io_uring where the kernel allows it, else pread threads */
    NX_LOADER_IO_URING,    /* io_uring; refused by the kernel: an error */
    NX_LOADER_IO_THREADS,  /* one pread at a time per reader thread */
} nx_loader_io_t;

typedef enum nx_io_source {
    NX_IO_SOURCE_DEFAULT = 0, /* the built-in constants */
    NX_IO_SOURCE_DEVICE,      /* nx_io_shape_rule over the block device's sysfs attributes */
    NX_IO_SOURCE_CALIBRATED,  /* the cached calibration of the file system */
    NX_IO_SOURCE_FLAG,        /* the caller's explicit value(s), or NX_LOADER_IO */
} nx_io_source_t;

typedef struct nx_io_shape {
    nx_loader_io_t io;
    uint32_t threads;     /* reader threads, 1..256 */
    uint32_t queue_depth; /* io_uring reads in flight per thread, 1..64 (1 with pread) */
    uint64_t chunk_bytes; /* bytes per read, a multiple of 4 KiB */
    bool cold_buffered;   /* read mode auto: files not in the page cache are read through it
                           * (buffered) instead of with O_DIRECT; only a calibration that
                           * measured it faster sets it (disks the host caches) */
} nx_io_shape_t;

/* The block device under a file system: the whole disk's queue attributes. */
typedef struct nx_blockdev {
    char name[32];             /* the whole disk: "vda", "nvme0n1", "sda" (not "sda1") */
    char kind[16];             /* nvme, virtio, scsi, mmc, xen, loop, dm, md, zram, other */
    bool rotational;           /* queue/rotational (virtio disks report 1 whatever backs them) */
    uint32_t nr_requests;      /* queue/nr_requests; 0 when absent */
    uint32_t max_sectors_kb;   /* queue/max_sectors_kb: the largest request, KiB; 0 absent */
    uint64_t optimal_io_bytes; /* queue/optimal_io_size; 0 when the device names none */
} nx_blockdev_t;

/* Which file system a path is on: the cache's key. */
typedef struct nx_fs_id {
    uint32_t major, minor; /* st_dev of the path */
    uint64_t fsid;         /* statfs f_fsid (ext4, xfs: from the file system's UUID) */
} nx_fs_id_t;

const char *nx_io_source_name(nx_io_source_t source); /* "default", "device", ... */
const char *nx_loader_io_name(nx_loader_io_t io);     /* "auto", "io_uring", "threads" */
/* The built-in defaults: io_uring (auto), 2 threads x 2 in flight x 16 MiB. */
void nx_io_shape_default(nx_io_shape_t *out);
int nx_fs_id_of(const char *path, nx_fs_id_t *out, nx_err_t *err);
/* Read the block device major:minor from sysfs_root (NULL: "/sys"): /dev/block/MAJ:MIN, a
 * partition walked up to its whole disk. NX_ENOTFOUND where there is none (tmpfs, overlay,
 * network and btrfs file systems have anonymous device numbers). */
int nx_blockdev_read(const char *sysfs_root, uint32_t major, uint32_t minor, nx_blockdev_t *out,
                     nx_err_t *err);
/* The cores this process may run on (its affinity mask; else the online count; at least 1). */
uint32_t nx_io_cpus(void);
/* The device rule (README, "Loader I/O shape"); cpus: the cores this process may run on. */
void nx_io_shape_rule(const nx_blockdev_t *dev, uint32_t cpus, nx_io_shape_t *out);
/* The cache file: NEXUS_LOADER_CACHE, else $XDG_CACHE_HOME/nexus/loader-io.txt, else
 * $HOME/.cache/nexus/loader-io.txt. false when none can be named (no HOME). */
bool nx_io_cache_path(char *buf, size_t cap);
/* The shape calibrated for `fs` in cache_path: NX_OK, or NX_ENOTFOUND (no file, no entry).
 * A corrupt line, or an entry for the same device number whose fsid differs (stale), is
 * skipped; *warn (may be NULL) then holds the first such problem naming file and line. */
int nx_io_cache_lookup(const char *cache_path, const nx_fs_id_t *fs, nx_io_shape_t *out,
                       nx_err_t *warn);
/* Store `shape` for `fs`, replacing that device's entry and dropping corrupt lines, keeping
 * other file systems' entries; atomically (a temporary file in the same folder, renamed). */
int nx_io_cache_store(const char *cache_path, const nx_fs_id_t *fs, const nx_io_shape_t *shape,
                      nx_err_t *err);
/* The shape for loads from `path`: the cached calibration of its file system, else the device
 * rule, else the defaults; never fails. why (may be NULL) gets a line saying where it came
 * from; a corrupt or stale cache entry is logged once (a warning naming file and line). */
nx_io_source_t nx_io_shape_for(const char *path, nx_io_shape_t *out, char *why, size_t why_cap);

typedef struct nx_loader_opts {
    uint32_t threads;          /* reader threads; 0 = from shape_path (or the defaults) */
    uint64_t chunk_bytes;      /* bytes per read; 0 = as threads; rounded to 4 KiB */
    uint32_t staging_buffers;  /* pinned staging ring; 0 = 2 per thread (io_uring: queue_depth) */
    uint32_t queue_depth;      /* io_uring reads in flight per reader thread; 0 = as threads */
    nx_read_mode_t read_mode;
    nx_hostcache_t *cache;     /* optional host tier: consulted on load, filled on unload */
    nx_loader_io_t io;         /* AUTO = from shape_path; NX_LOADER_IO overrides it */
    const char *shape_path;    /* a file or folder on the file system the loads read: the
                                * fields left 0 come from nx_io_shape_for(shape_path); NULL:
                                * from the defaults */
} nx_loader_opts_t;

typedef struct nx_loader nx_loader_t;

/* Allocate the staging ring (pinned) now, so no timed load ever allocates it. opts may be NULL.
 * The pool (and cache) must outlive the loader. Caller owns the result.
 * Reads go through io_uring (queue_depth in flight per reader thread) where the kernel allows
 * it, else through pread in each reader thread, with one log line saying why. The environment
 * variable NX_LOADER_IO=threads forces the threads (tests, comparisons); NX_LOADER_IO=io_uring
 * (or opts->io NX_LOADER_IO_URING) makes a refused io_uring an error instead of a fallback.
 * The shape: the fields of opts given (or NX_LOADER_IO) over nx_io_shape_for(shape_path) over
 * nx_io_shape_default; where io_uring is refused and threads was not given, 4 pread threads. */
nx_loader_t *nx_loader_new(nx_pool_t *pool, const nx_loader_opts_t *opts, nx_err_t *err);
void nx_loader_destroy(nx_loader_t **self_p);
/* The shape the loader reads with (io: io_uring or threads, after any fallback) and what chose
 * it; why (may be NULL) gets nx_io_shape_for's line, or "" where no shape_path was given. */
void nx_loader_shape(const nx_loader_t *self, nx_io_shape_t *shape, nx_io_source_t *source,
                     char *why, size_t why_cap);

typedef struct nx_load_stats {
    double seconds;       /* wall time of the load, open and validation included */
    uint64_t bytes;       /* payload bytes moved into the pool */
    double gbps;          /* bytes / seconds / 1e9 */
    char read_mode[16];   /* "direct", "buffered", "mixed" or "host-cache" */
    uint32_t fallbacks;   /* O_DIRECT attempts that fell back to buffered */
    uint32_t threads;
    uint64_t chunk_bytes;
    char io[16];          /* "io_uring" or "threads" (pread in each reader thread) */
    uint32_t queue_depth; /* io_uring reads in flight per thread; 1 with threads */
    char io_source[16];   /* what chose the shape: nx_io_source_name (flag, calibrated, ...) */
} nx_load_stats_t;

typedef struct nx_model_tensor {
    const char *name;
    nx_dtype_t dtype;
    uint32_t ndim;
    uint64_t shape[NX_ST_MAX_DIMS];
    void *ptr;            /* in the pool: device pointer with CUDA, host pointer on CPU */
    uint64_t bytes;
} nx_model_tensor_t;

typedef struct nx_model nx_model_t;

/* Load the checkpoint at `path` (file or directory) into one region of the pool owned by
 * `owner` (NULL: the path). Served from the host cache when it holds an up-to-date image.
 * stats may be NULL. Caller owns the result and must nx_loader_unload it. */
nx_model_t *nx_loader_load(nx_loader_t *self, const char *path, const char *owner,
                           nx_load_stats_t *stats, nx_err_t *err);
/* Free the model's region. With keep_in_cache and a host cache, its image is copied to the
 * cache first (older images are evicted, LRU, to make room; skipped when it cannot fit). */
void nx_loader_unload(nx_loader_t *self, nx_model_t **model_p, bool keep_in_cache);

const char *nx_model_path(const nx_model_t *model);
const nx_st_t *nx_model_checkpoint(const nx_model_t *model);
size_t nx_model_tensor_count(const nx_model_t *model);
const nx_model_tensor_t *nx_model_tensor_at(const nx_model_t *model, size_t index);
const nx_model_tensor_t *nx_model_find(const nx_model_t *model, const char *name);
uint64_t nx_model_bytes(const nx_model_t *model); /* payload bytes */
const nx_region_t *nx_model_region(const nx_model_t *model);

/* Compare every tensor's bytes in the pool against an independent plain read (pread) of the
 * files. NX_OK or NX_EMISMATCH naming the first tensor and byte that differ. */
int nx_model_check(nx_pool_t *pool, const nx_model_t *model, nx_err_t *err);

#endif
