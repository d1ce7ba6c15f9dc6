/* store_ends.c — a side record of task ends the database could not take (its disk full, most
 * often): "<database>-ends", a small file of fixed slots whose space is reserved when it is
 * opened, so that writing an end into it needs no new space on a full disk (on file systems
 * that allocate in place: ext4, xfs, tmpfs; not on copy-on-write ones).
 *
 * Why a file: a task whose end could not be stored still says `accepted` or `running` in its
 * row, and the next start would mark it "interrupted by a restart", which is not what
 * happened. The store thread writes the end here, retries it into the database before each
 * group it runs and when it stops, and the next start stores whatever is left here before it
 * marks unfinished tasks, so the stored reason is the real one.
 *
 * Layout: NX__ENDS_SLOTS slots of sizeof(nx_store_end_t) bytes (native byte order: the file
 * belongs to this machine's database); a slot is empty when its task id is 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

#define NX__ENDS_SLOTS 1024 /* 256 KiB: more ends than a full disk leaves waiting in practice */

_Static_assert(sizeof(nx_store_end_t) == 256, "a slot is 256 bytes");

struct nx_store_ends {
    char *path;                           /* NULL: kept in memory only */
    int fd;                               /* -1 when in memory only */
    nx_store_end_t slots[NX__ENDS_SLOTS]; /* mirror of the file */
    size_t used;                          /* slots with a task id */
};

static int write_slot(nx_store_ends_t *self, size_t i, nx_err_t *err)
{
    if (self->fd < 0)
        return NX_OK;
    const char *p = (const char *)&self->slots[i];
    size_t left = sizeof self->slots[i];
    off_t at = (off_t)(i * sizeof self->slots[i]);
    while (left) {
        ssize_t n = pwrite(self->fd, p, left, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return nx_err_set(err, errno == ENOSPC ? NX_ENOSPC : NX_EIO,
                              "task ends '%s': cannot write slot %zu: %s", self->path, i,
                              n < 0 ? strerror(errno) : "short write");
        p += n;
        left -= (size_t)n;
        at += n;
    }
    if (fdatasync(self->fd) != 0)
        return nx_err_set(err, errno == ENOSPC ? NX_ENOSPC : NX_EIO,
                          "task ends '%s': cannot sync it: %s", self->path, strerror(errno));
    return NX_OK;
}

/* Read what a previous run left; slots past the end of a short file stay empty. */
static int read_slots(nx_store_ends_t *self, nx_err_t *err)
{
    size_t have = 0, want = sizeof self->slots;
    while (have < want) {
        ssize_t n = pread(self->fd, (char *)self->slots + have, want - have, (off_t)have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return nx_err_set(err, NX_EIO, "task ends '%s': cannot read it: %s", self->path,
                              strerror(errno));
        if (n == 0)
            break;
        have += (size_t)n;
    }
    for (size_t i = 0; i < NX__ENDS_SLOTS; i++) {
        nx_store_end_t *s = &self->slots[i];
        s->code[sizeof s->code - 1] = '\0'; /* whatever the file holds, strings end */
        s->message[sizeof s->message - 1] = '\0';
        if (s->task_id < 0)
            s->task_id = 0;
        self->used += s->task_id != 0;
    }
    return NX_OK;
}

nx_store_ends_t *nx_store_ends_open(const char *db_path, nx_err_t *err)
{
    nx_store_ends_t *self = calloc(1, sizeof *self);
    if (!self) {
        nx_err_set(err, NX_ENOMEM, "task ends: out of memory");
        return NULL;
    }
    self->fd = -1;
    if (!db_path)
        return self;
    size_t cap = strlen(db_path) + 8;
    if (!(self->path = malloc(cap))) {
        nx_err_set(err, NX_ENOMEM, "task ends: out of memory");
        goto out_free;
    }
    snprintf(self->path, cap, "%s-ends", db_path);
    self->fd = open(self->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat st;
    if (self->fd < 0 || fstat(self->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        nx_err_set(err, NX_EIO, "task ends '%s': cannot open it as a regular file: %s",
                   self->path, self->fd < 0 ? strerror(errno) : "not a regular file");
        goto out_free;
    }
    if (read_slots(self, err) != NX_OK)
        goto out_free;
    int rc = posix_fallocate(self->fd, 0, (off_t)sizeof self->slots);
    if (rc != 0) /* still usable while there is space; said once, here */
        nx_log(NX_LOG_WARN, "task ends '%s': cannot reserve its %zu bytes (%s): on a full disk "
               "an end that the database cannot take may be lost",
               self->path, sizeof self->slots, strerror(rc));
    return self;
out_free:
    nx_store_ends_close(&self);
    return NULL;
}

void nx_store_ends_close(nx_store_ends_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_store_ends_t *self = *self_p;
    if (self->fd >= 0)
        close(self->fd);
    free(self->path);
    free(self);
    *self_p = NULL;
}

int nx_store_ends_add(nx_store_ends_t *self, int64_t task_id, const char *code,
                      const char *message, nx_err_t *err)
{
    size_t free_slot = NX__ENDS_SLOTS;
    for (size_t i = 0; i < NX__ENDS_SLOTS; i++) {
        if (self->slots[i].task_id == task_id) {
            free_slot = i; /* a task ends once: the newer word replaces the older */
            break;
        }
        if (self->slots[i].task_id == 0 && free_slot == NX__ENDS_SLOTS)
            free_slot = i;
    }
    if (free_slot == NX__ENDS_SLOTS)
        return nx_err_set(err, NX_ENOSPC, "task ends: all %d slots are taken; task %lld's end "
                          "is not kept", NX__ENDS_SLOTS, (long long)task_id);
    nx_store_end_t *s = &self->slots[free_slot];
    self->used += s->task_id == 0;
    memset(s, 0, sizeof *s);
    s->task_id = task_id;
    snprintf(s->code, sizeof s->code, "%s", code);
    snprintf(s->message, sizeof s->message, "%s", message);
    return write_slot(self, free_slot, err);
}

const nx_store_end_t *nx_store_ends_find(const nx_store_ends_t *self, int64_t task_id)
{
    for (size_t i = 0; self && self->used && i < NX__ENDS_SLOTS; i++)
        if (self->slots[i].task_id == task_id)
            return &self->slots[i];
    return NULL;
}

size_t nx_store_ends_count(const nx_store_ends_t *self)
{
    return self ? self->used : 0;
}

int nx_store_ends_flush(nx_store_ends_t *self, nx_store_t *store, nx_err_t *err)
{
    if (!self->used)
        return NX_OK;
    int rc = nx_store_begin(store, err);
    for (size_t i = 0; rc == NX_OK && i < NX__ENDS_SLOTS; i++) {
        const nx_store_end_t *s = &self->slots[i];
        if (!s->task_id)
            continue;
        nx_err_t one = {0};
        nx_task_timings_t none = {0};
        rc = nx_store_task_finish(store, s->task_id, NX_TASK_FAILED, NULL, s->code, s->message,
                                  &none, 0, 0, &one);
        if (rc == NX_ESTATE || rc == NX_ENOTFOUND)
            rc = NX_OK; /* already final, or gone: nothing left to say about it */
        else if (rc != NX_OK && err)
            *err = one;
    }
    if (rc == NX_OK)
        rc = nx_store_commit(store, err);
    else
        nx_store_rollback(store);
    if (rc != NX_OK)
        return rc;
    size_t stored = self->used;
    for (size_t i = 0; i < NX__ENDS_SLOTS; i++) {
        if (!self->slots[i].task_id)
            continue;
        memset(&self->slots[i], 0, sizeof self->slots[i]);
        write_slot(self, i, NULL); /* stored: a stale slot would only be stored again, a no-op */
    }
    self->used = 0;
    nx_log(NX_LOG_INFO, "store: %zu task ends kept aside while the disk was full are stored",
           stored);
    return NX_OK;
}
