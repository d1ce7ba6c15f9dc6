/* fault_ioerr.c — an LD_PRELOAD library for tests/test_daemon_ioerr.py: a disk that answers
 * EIO, on demand, to the writes and syncs of chosen files, so the daemon's handling of SQLite
 * I/O errors is exercised for real (SQLite's own unix VFS, the real database file) without a
 * failing device.
 *
 *   NX_FAULT_TRIGGER=/path/flag   while this file exists, the faults are on
 *   NX_FAULT_FILES=a,b,c          file names (last path component) whose writes and syncs fail;
 *                                 default nexus.db,nexus.db-wal,nexus.db-journal
 *   NX_FAULT_LOG=/path/count      appended one line per refused call ("write nexus.db-wal")
 *
 * write, pwrite, pwrite64, fsync and fdatasync on such a file fail with errno EIO; everything
 * else passes through to the next definition (libc, or a sanitizer's interceptor).
 * The mapped -shm file is not touched: a disk error does not reach memory SQLite has mapped.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static bool faulty(int fd, const char *what)
{
    const char *trigger = getenv("NX_FAULT_TRIGGER");
    struct stat st;
    if (!trigger || stat(trigger, &st) != 0)
        return false;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return false;
    path[n] = 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *files = getenv("NX_FAULT_FILES");
    if (!files)
        files = "nexus.db,nexus.db-wal,nexus.db-journal";
    size_t len = strlen(base);
    for (const char *p = files; *p;) {
        const char *comma = strchr(p, ',');
        size_t n_item = comma ? (size_t)(comma - p) : strlen(p);
        if (n_item == len && memcmp(p, base, len) == 0) {
            const char *log = getenv("NX_FAULT_LOG");
            int log_fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
            if (log_fd >= 0) {
                dprintf(log_fd, "%s %s\n", what, base);
                close(log_fd);
            }
            return true;
        }
        p += n_item + (comma ? 1 : 0);
    }
    return false;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t count)
{
    if (faulty(fd, "write"))
        return errno = EIO, -1;
    return NEXT(write)(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    if (faulty(fd, "pwrite"))
        return errno = EIO, -1;
    return NEXT(pwrite)(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
    if (faulty(fd, "pwrite"))
        return errno = EIO, -1;
    return NEXT(pwrite64)(fd, buf, count, offset);
}

int fsync(int fd)
{
    if (faulty(fd, "fsync"))
        return errno = EIO, -1;
    return NEXT(fsync)(fd);
}

int fdatasync(int fd)
{
    if (faulty(fd, "fdatasync"))
        return errno = EIO, -1;
    return NEXT(fdatasync)(fd);
}
