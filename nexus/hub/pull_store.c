/* pull_store.c — the store side of `nexusctl pull` and the pull as a whole (pull.h).
 *
 * A blob gets its final name only after its checksum matched, by fsync of the file, rename
 * from <id>.incomplete, and fsync of blobs/. Snapshot links are made once every selected file
 * is in blobs/, so a failed pull leaves no snapshot entry pointing at nothing; refs/<rev> is
 * written last (temp + rename), so a ref always names a complete snapshot. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelstore.h"
#include "pull_int.h"

int nx__pull_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return NX_EIO;
    int rc = fsync(fd) == 0 ? NX_OK : NX_EIO;
    close(fd);
    return rc;
}

char *nx__pull_blob_path(const nx__pull_ctx_t *ctx, const nx__pull_file_t *f, const char *suffix)
{
    size_t n = strlen(ctx->repo_dir) + strlen(f->id) + strlen(suffix) + 8;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/blobs/%s%s", ctx->repo_dir, f->id, suffix);
    return p;
}

/* mkdir -p of `path` (a copy is cut at each '/'). */
static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char keep = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return errno;
            *p = keep;
            if (!keep)
                return 0;
        }
    }
}

static int store_error(const nx__pull_ctx_t *ctx, const char *file, const char *what,
                       const char *path, int e, nx_err_t *err)
{
    return nx_err_set(err, e == ENOSPC || e == EDQUOT ? NX_ENOSPC : NX_EIO,
                      "%s%s%s%s: %s %s: %s", ctx->opts->repo, file ? ": file '" : "",
                      file ? file : "", file ? "'" : "", what, path,
                      e == ENOSPC ? "no space left on device" : strerror(e));
}

int nx__pull_store_blob(nx__pull_ctx_t *ctx, nx__pull_file_t *f, int fd, nx_err_t *err)
{
    char *part = nx__pull_blob_path(ctx, f, ".incomplete");
    char *final = nx__pull_blob_path(ctx, f, "");
    char *blobs = nx__pull_blob_path(ctx, f, "");
    int rc = NX_OK;
    if (!part || !final || !blobs) {
        close(fd);
        rc = nx_err_set(err, NX_ENOMEM, "no memory");
        goto out;
    }
    *strrchr(blobs, '/') = 0;
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        rc = store_error(ctx, f->name, "syncing", part, e, err);
        goto out;
    }
    close(fd);
    if (rename(part, final) != 0) {
        rc = store_error(ctx, f->name, "renaming", part, errno, err);
        goto out;
    }
    if (nx__pull_fsync_dir(blobs) != NX_OK)
        rc = store_error(ctx, f->name, "syncing", blobs, errno, err);
out:
    free(part);
    free(final);
    free(blobs);
    return rc;
}

/* snapshots/<commit>/<name> -> ../../blobs/<id> (one more ../ per folder in name), made under
 * a temporary name and renamed over whatever was there. */
static int link_file(const nx__pull_ctx_t *ctx, const char *snap, const nx__pull_file_t *f,
                     nx_err_t *err)
{
    char path[PATH_MAX], tmp[PATH_MAX + 16], target[PATH_MAX], dir[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", snap, f->name) >= (int)sizeof path)
        return nx_err_set(err, NX_EINVAL, "%s: file '%s': path too long", ctx->opts->repo,
                          f->name);
    size_t o = 0;
    o += (size_t)snprintf(target, sizeof target, "../../");
    for (const char *s = f->name; *s; s++)
        if (*s == '/')
            o += (size_t)snprintf(target + o, sizeof target - o, "../");
    snprintf(target + o, sizeof target - o, "blobs/%s", f->id);
    char have[PATH_MAX];
    ssize_t n = readlink(path, have, sizeof have - 1);
    if (n > 0 && (have[n] = 0, strcmp(have, target) == 0))
        return NX_OK;
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    int e = mkdirs(dir);
    if (e)
        return store_error(ctx, f->name, "creating", dir, e, err);
    snprintf(tmp, sizeof tmp, "%s.tmp-link", path);
    unlink(tmp);
    if (symlink(target, tmp) != 0)
        return store_error(ctx, f->name, "linking", tmp, errno, err);
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return store_error(ctx, f->name, "renaming", tmp, e, err);
    }
    if (nx__pull_fsync_dir(dir) != NX_OK)
        return store_error(ctx, f->name, "syncing", dir, errno, err);
    return NX_OK;
}

/* refs/<rev> = commit, through a temporary file. */
static int write_ref(const nx__pull_ctx_t *ctx, nx_err_t *err)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8], dir[PATH_MAX];
    snprintf(path, sizeof path, "%s/refs/%s", ctx->repo_dir, ctx->opts->revision);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    int e = mkdirs(dir);
    if (e)
        return store_error(ctx, NULL, "creating", dir, e, err);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return store_error(ctx, NULL, "creating", tmp, errno, err);
    bool ok = write(fd, ctx->commit, 40) == 40 && fsync(fd) == 0;
    e = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        e = ok ? errno : e;
        unlink(tmp);
        return store_error(ctx, NULL, "writing", path, e, err);
    }
    return nx__pull_fsync_dir(dir) == NX_OK ? NX_OK
                                           : store_error(ctx, NULL, "syncing", dir, errno, err);
}

static void mark_present(nx__pull_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->file_count; i++) {
        nx__pull_file_t *f = &ctx->files[i];
        char *p = nx__pull_blob_path(ctx, f, "");
        struct stat st;
        f->present = p && stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
                     (uint64_t)st.st_size == f->size;
        free(p);
    }
}

static bool is_gguf(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".gguf") == 0;
}

/* The path to give `nexusctl run`: the one .gguf when the selection has exactly one and no
 * safetensors, else the snapshot folder. */
static char *result_path(const nx__pull_ctx_t *ctx, const char *snap)
{
    const char *gguf = NULL;
    size_t ggufs = 0;
    for (size_t i = 0; i < ctx->file_count; i++) {
        const char *n = ctx->files[i].name;
        size_t len = strlen(n);
        if (len > 12 && strcmp(n + len - 12, ".safetensors") == 0)
            return strdup(snap);
        if (is_gguf(n))
            gguf = n, ggufs++;
    }
    if (ggufs != 1)
        return strdup(snap);
    size_t cap = strlen(snap) + strlen(gguf) + 2;
    char *p = malloc(cap);
    if (p)
        snprintf(p, cap, "%s/%s", snap, gguf);
    return p;
}

static void ctx_free(nx__pull_ctx_t *ctx)
{
    nx__pull_files_free(ctx);
    free(ctx->repo_dir);
}

int nx_pull_run(const nx_pull_opts_t *opts, nx_pull_result_t *out, nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    nx__pull_ctx_t ctx = {.opts = opts, .start_ns = nx_now_ns()};
    char snap[PATH_MAX];
    int rc = NX_OK;
    if (!nx_ms_parse_name(opts->repo, NULL))
        return nx_err_set(err, NX_EINVAL, "'%s' is not a hub repository name (Org/Name)",
                          opts->repo);
    snprintf(ctx.endpoint, sizeof ctx.endpoint, "%s", opts->endpoint);
    for (size_t n = strlen(ctx.endpoint); n > 0 && ctx.endpoint[n - 1] == '/'; n--)
        ctx.endpoint[n - 1] = 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return nx_err_set(err, NX_EIO, "libcurl failed to start");
    rc = nx__pull_list(&ctx, err);
    if (rc != NX_OK)
        goto out;
    ctx.repo_dir = nx_ms_repo_dir(opts->models_dir, opts->repo);
    if (!ctx.repo_dir) {
        rc = nx_err_set(err, NX_ENOMEM, "no memory");
        goto out;
    }
    snprintf(snap, sizeof snap, "%s/snapshots/%s", ctx.repo_dir, ctx.commit);
    char blobs[PATH_MAX];
    snprintf(blobs, sizeof blobs, "%s/blobs", ctx.repo_dir);
    int e = mkdirs(blobs);
    if (e) {
        rc = store_error(&ctx, NULL, "creating", blobs, e, err);
        goto out;
    }
    mark_present(&ctx);
    nx_pull_event_t start = {.kind = NX_PULL_EV_START};
    for (size_t i = 0; i < ctx.file_count; i++) {
        start.bytes_total += ctx.files[i].size;
        start.bytes_to_fetch += ctx.files[i].present ? 0 : ctx.files[i].size;
    }
    nx__pull_emit(&ctx, &start);
    for (size_t i = 0; i < ctx.file_count; i++) {
        if (!ctx.files[i].present)
            continue;
        nx_pull_event_t ev = {.kind = NX_PULL_EV_FILE, .file = ctx.files[i].name,
                              .file_size = ctx.files[i].size, .blob_id = ctx.files[i].id};
        nx__pull_emit(&ctx, &ev);
    }
    rc = nx__pull_fetch_all(&ctx, err);
    for (size_t i = 0; i < ctx.file_count && rc == NX_OK; i++)
        rc = link_file(&ctx, snap, &ctx.files[i], err);
    if (rc == NX_OK && strcmp(opts->revision, ctx.commit) != 0)
        rc = write_ref(&ctx, err);
    if (rc != NX_OK)
        goto out;
    memcpy(out->commit, ctx.commit, sizeof out->commit);
    out->path = result_path(&ctx, snap);
    out->files = ctx.file_count;
    out->bytes_total = start.bytes_total;
    if (!out->path)
        rc = nx_err_set(err, NX_ENOMEM, "no memory");
out:
    out->bytes_fetched = atomic_load(&ctx.bytes_fetched);
    out->seconds = (double)(nx_now_ns() - ctx.start_ns) / 1e9;
    ctx_free(&ctx);
    curl_global_cleanup();
    return rc;
}
