/* bench_pool.h — how the engine benches (decode.c, grammar_decode.c) size their pool: the
 * checkpoint's data (and a page per file), max_batch + 1 KV caches of `context` tokens, each
 * rounded up to whole 32 MiB chunks, four chunks of slack, and on CUDA a GiB for the backend's
 * scratch and cuBLAS's workspace. Loads the config into *cfg. */
#ifndef NX_BENCH_POOL_H
#define NX_BENCH_POOL_H

#include "nx_engine.h"

static inline int nx_bench_pool_bytes(const char *model_dir, nx_device_kind_t device,
                                      uint32_t context, uint32_t max_batch,
                                      nx_model_config_t *cfg, uint64_t *bytes_out,
                                      nx_err_t *err)
{
    int rc = nx_config_load(model_dir, cfg, err);
    if (rc != NX_OK)
        return rc;
    nx_st_t *st = nx_st_open(model_dir, err);
    if (!st)
        return err->code;
    uint64_t weights = nx_st_data_bytes(st) + 4096ull * (nx_st_file_count(st) + 1);
    nx_st_destroy(&st);
    const uint64_t chunk = 32ull << 20;
    uint64_t kv = nx_kv_bytes(cfg, device, context);
    uint64_t bytes = (weights / chunk + 1) * chunk + (max_batch + 1) * ((kv / chunk + 1) * chunk) +
                     4 * chunk;
    if (device == NX_DEVICE_CUDA || (device == NX_DEVICE_AUTO && nx_cuda_available(NULL)))
        bytes += 1ull << 30;
    *bytes_out = bytes;
    return NX_OK;
}

#endif
