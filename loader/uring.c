/* uring.c — the load pipeline's io_uring reads (liburing): one ring per reader, a fixed queue
 * depth, the staging buffers registered once when the ring is made. */
#include "uring.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

struct nx__ring {
    struct io_uring ring;
    bool registered; /* the staging buffers are registered: reads into them use read_fixed */
};

nx__ring_t *nx__ring_new(uint32_t depth, void *const *bufs, uint32_t buf_count,
                         uint64_t buf_bytes, nx_err_t *err)
{
    nx__ring_t *r = calloc(1, sizeof *r);
    if (!r) {
        nx_err_set(err, NX_ENOMEM, "io_uring: out of memory");
        return NULL;
    }
    int rc = io_uring_queue_init(depth, &r->ring, 0);
    if (rc < 0) {
        nx_err_set(err, NX_ENOTSUP, "io_uring_queue_init(%u) failed: %s", depth, strerror(-rc));
        free(r);
        return NULL;
    }
    if (buf_count > 0) {
        struct iovec *iov = calloc(buf_count, sizeof *iov);
        for (uint32_t i = 0; iov && i < buf_count; i++)
            iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = buf_bytes};
        r->registered = iov && io_uring_register_buffers(&r->ring, iov, buf_count) == 0;
        free(iov);
    }
    return r;
}

void nx__ring_destroy(nx__ring_t **ring_p)
{
    if (!ring_p || !*ring_p)
        return;
    io_uring_queue_exit(&(*ring_p)->ring);
    free(*ring_p);
    *ring_p = NULL;
}

void nx__ring_read(nx__ring_t *r, int fd, void *dst, uint32_t len, uint64_t off, int buf_index,
                   uint64_t tag)
{
    /* The caller never queues more than the ring's depth, so a submission entry is free. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (r->registered && buf_index >= 0)
        io_uring_prep_read_fixed(sqe, fd, dst, len, off, buf_index);
    else
        io_uring_prep_read(sqe, fd, dst, len, off);
    io_uring_sqe_set_data64(sqe, tag);
}

int nx__ring_wait(nx__ring_t *r, uint64_t *tags, int32_t *results, uint32_t cap, nx_err_t *err)
{
    int rc;
    /* -EAGAIN/-EBUSY: the kernel is short of request memory or the completion queue is full
     * for a moment; waiting again is right, and giving up would leave reads in flight into
     * memory the pool may hand out again. */
    do
        rc = io_uring_submit_and_wait(&r->ring, 1);
    while (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY);
    if (rc < 0)
        return nx_err_set(err, NX_EIO, "io_uring_submit_and_wait failed: %s", strerror(-rc));
    struct io_uring_cqe *cqe;
    uint32_t n = 0;
    while (n < cap && io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        tags[n] = io_uring_cqe_get_data64(cqe);
        results[n] = cqe->res;
        io_uring_cqe_seen(&r->ring, cqe);
        n++;
    }
    return (int)n;
}
