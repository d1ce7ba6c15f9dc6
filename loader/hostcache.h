/* hostcache.h — internal: what the loader needs from the host cache tier (hostcache.c).
 *
 * An image is a byte copy of a model's region, [0, bytes), split over the cache's fixed-size
 * chunks (chunk i holds bytes [i*chunk_bytes, (i+1)*chunk_bytes)). Chunks need not be adjacent,
 * so the cache never fragments. An acquired image is pinned against eviction until released.
 */
#ifndef NX_HOSTCACHE_INTERNAL_H
#define NX_HOSTCACHE_INTERNAL_H

#include "device.h"

typedef struct nx__hc_image {
    uint64_t bytes;       /* image length */
    uint64_t chunk_bytes; /* every chunk but the last is full */
    uint32_t chunk_count;
    void **chunks;        /* host pointers (pinned on CUDA), chunk_count of them */
} nx__hc_image_t;

/* Identity of a checkpoint's files on disk: "size:mtime_ns:inode" per file, so a rewritten
 * checkpoint never hits a stale image. Returns NX_OK or NX_EIO (stat failed). */
int nx__hostcache_identity(const nx_st_t *st, char *buf, size_t cap, nx_err_t *err);

/* The key under which a checkpoint path is cached: its canonical (realpath) form. */
void nx__hostcache_key(const char *path, char *key, size_t cap);

/* A hit bumps the image to most-recently-used and pins it: release it after copying.
 * NULL on a miss (or a stale entry, which is dropped). */
const nx__hc_image_t *nx__hostcache_acquire(nx_hostcache_t *self, const char *key,
                                            const char *identity);
void nx__hostcache_release(nx_hostcache_t *self, const nx__hc_image_t *image);

/* Copy `bytes` of pool memory at pool_src into a new image under key (replacing an older
 * one), evicting unpinned least-recently-used images to make room. NX_EPOOLFULL when it cannot
 * fit even after evicting everything evictable. `files` lists the checkpoint's file paths,
 * one per line, for nx_hostcache_contains. */
int nx__hostcache_store(nx_hostcache_t *self, const char *key, const char *identity,
                        const char *files, const void *pool_src, uint64_t bytes, nx_err_t *err);

#endif
