/* synth_io.c — small durable-file helpers for the model synthesizer: JSON and plain copies,
 * each written in full and fsynced (the directory they land in is renamed into place later,
 * so no per-file temporary is needed). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "synth_internal.h"

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int create_file(const char *dir, const char *name, char *path, size_t cap, nx_err_t *err)
{
    snprintf(path, cap, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        nx_err_set(err, NX_EIO, "creating '%s': %s", path, strerror(errno));
    return fd;
}

static int finish_file(int fd, const char *path, bool ok, nx_err_t *err)
{
    int saved = errno;
    if (ok && fsync(fd) != 0)
        ok = false, saved = errno;
    if (close(fd) != 0 && ok)
        ok = false, saved = errno;
    return ok ? NX_OK : nx_err_set(err, NX_EIO, "writing '%s': %s", path, strerror(saved));
}

int nx__synth_write_json(const char *dir, const char *name, const json_t *root, size_t flags,
                         nx_err_t *err)
{
    char path[8192];
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(10) | flags);
    if (!text)
        return nx_err_set(err, NX_ENOMEM, "serializing '%s/%s': out of memory", dir, name);
    int fd = create_file(dir, name, path, sizeof path, err);
    int rc = NX_EIO;
    if (fd >= 0) {
        bool ok = write_all(fd, text, strlen(text)) == 0 && write_all(fd, "\n", 1) == 0;
        rc = finish_file(fd, path, ok, err);
    }
    free(text);
    return rc;
}

int nx__synth_copy_file(const char *src, const char *dir, const char *name, nx_err_t *err)
{
    char path[8192];
    int rc = NX_OK, in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return nx_err_set(err, NX_EIO, "opening '%s': %s", src, strerror(errno));
    char *buf = malloc(1 << 20);
    if (!buf) {
        rc = nx_err_set(err, NX_ENOMEM, "copying '%s': out of memory", src);
        goto out;
    }
    int out = create_file(dir, name, path, sizeof path, err);
    if (out < 0) {
        rc = NX_EIO;
        goto out;
    }
    bool write_ok = true;
    int read_errno = 0;
    for (;;) {
        ssize_t n = read(in, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            read_errno = errno;
        if (n <= 0 || !(write_ok = write_all(out, buf, (size_t)n) == 0))
            break;
    }
    rc = finish_file(out, path, write_ok && !read_errno, err);
    if (read_errno)
        rc = nx_err_set(err, NX_EIO, "reading '%s': %s", src, strerror(read_errno));
out:
    free(buf);
    close(in);
    return rc;
}
