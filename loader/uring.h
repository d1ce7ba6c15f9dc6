/* uring.h — internal: the few io_uring operations the load pipeline uses (liburing), behind a
 * plain interface so that pipeline.c reads the same whichever way its reads go. */
#ifndef NX_URING_H
#define NX_URING_H

#include "nx_loader.h"

typedef struct nx__ring nx__ring_t;

/* A ring for `depth` reads in flight. bufs[0..buf_count) (buf_bytes each, may be 0 buffers)
 * are registered with the kernel, so reads into them skip pinning their pages each time.
 * Returns NULL with NX_ENOTSUP where io_uring is missing or refused (an old kernel, seccomp,
 * a container: -ENOSYS, -EPERM), with the kernel's reason in the message; buffers the kernel
 * will not register (RLIMIT_MEMLOCK) are left unregistered, not an error. Caller owns it. */
nx__ring_t *nx__ring_new(uint32_t depth, void *const *bufs, uint32_t buf_count,
                         uint64_t buf_bytes, nx_err_t *err);
void nx__ring_destroy(nx__ring_t **ring_p);

/* Queue a read of len bytes at file offset off into dst; buf_index >= 0 names the registered
 * buffer dst lies in (ignored when registration was refused). `tag` comes back with its
 * completion. The caller keeps at most `depth` reads queued or in flight. */
void nx__ring_read(nx__ring_t *ring, int fd, void *dst, uint32_t len, uint64_t off,
                   int buf_index, uint64_t tag);

/* Submit what is queued, wait for at least one completion, and reap up to cap of them:
 * tags[i] and results[i] (bytes read, or -errno as the kernel reported it). Returns how many,
 * or a negative NX_ code (the message names io_uring_submit_and_wait and the reason). */
int nx__ring_wait(nx__ring_t *ring, uint64_t *tags, int32_t *results, uint32_t cap,
                  nx_err_t *err);

#endif
