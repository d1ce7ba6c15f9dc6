/* pull_fetch.c — moving a pull's bytes: every missing file is cut into fixed-size chunks,
 * each fetched by one ranged GET on a libcurl multi handle (opts->jobs at once, across files),
 * and written with pwrite into blobs/<id>.incomplete at its offset.
 *
 * Resume: beside each .incomplete a small state file (<id>.incomplete.state) records how many
 * bytes of each chunk are written; it is rewritten (temp + rename) about once a second and on
 * the way out, so a run after a cut or a kill asks only for what is missing. A state file that
 * does not check out (magic, sizes, its own xxh64) restarts that file; a resumed file whose
 * checksum then fails is fetched once more from scratch, since only the checksum can tell
 * whether bytes written before a crash reached the disk.
 *
 * Hashing and storing: a thread follows each file's contiguous completed prefix, reading it
 * back with pread (from the page cache, just written) into sha256 (LFS files) or the git blob
 * sha1, so a file's checksum is ready moments after its last byte instead of after a full
 * re-read. It also starts the writeback of what it hashed (sync_file_range), and does the
 * fsync and rename of a verified file itself: an fsync can wait for the disk for a second, and
 * the thread that drives the transfers must not.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include "pull_int.h"

#define FETCH_CHUNK_DEFAULT (16ull << 20)
#define FETCH_HASH_BLOCK (4u << 20)
#define FETCH_STATE_MAGIC "NXPULL01"
#define FETCH_STATE_EVERY_NS 1000000000ull
#define FETCH_PROGRESS_EVERY_NS 250000000ull

typedef struct chunk {
    uint64_t start, len; /* bytes of the file it covers */
    uint64_t done;       /* bytes of it written, from start */
    unsigned attempts;   /* requests that failed */
    uint64_t not_before_ns;
    bool active;
} chunk_t;

typedef struct fetch_file {
    nx__pull_file_t *f;
    int fd;
    char *part_path, *state_path;
    chunk_t *chunks;
    uint32_t chunk_count;
    uint64_t resumed_bytes; /* done when this run began */
    uint64_t fetched;       /* received by this run */
    uint64_t first_ns, state_saved_ns;
    bool state_dirty, finished, restarted;
    bool reprobe;   /* its CDN URL was refused: ask the hub for a fresh one before going on */
    bool reprobed;  /* that happened once already this run */
    /* hashing: `ready` written by the fetch loop; the rest (fd included) belongs to the hasher
     * while hash_state is HS_RUNNING, to the fetch loop otherwise */
    _Atomic uint64_t ready; /* contiguous bytes complete from offset 0 */
    _Atomic int hash_state; /* HS_* */
    uint64_t hashed;
    int hash_errno;
    nx_err_t store_err; /* HS_STORE_FAILED */
    EVP_MD_CTX *md;
    char digest_hex[65];
} fetch_file_t;

typedef struct xfer {
    fetch_file_t *ff;
    chunk_t *c;
    CURL *easy;
    nx__pull_ctx_t *ctx;
    char range[64];
    uint64_t range_start;
    long status;
    double retry_after;
    bool bad_range, overrun, whole_seen;
    int write_errno;
    char body[512];
    size_t body_len;
    char errbuf[CURL_ERROR_SIZE];
} xfer_t;

enum {
    HS_RUNNING = 0,      /* bytes still to hash */
    HS_STORED = 1,       /* checksum matched, blobs/<id> in place (fd closed) */
    HS_READ_ERROR = 2,   /* pread failed: hash_errno */
    HS_MISMATCH = 3,     /* digest_hex differs from the id */
    HS_STORE_FAILED = 4, /* fsync or rename failed: store_err (fd closed) */
};

typedef struct hasher {
    nx__pull_ctx_t *ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    fetch_file_t *files;
    size_t count;
    bool stop;
} hasher_t;

/* ---- the hashing thread -------------------------------------------------------------- */

static int hash_start(fetch_file_t *ff)
{
    ff->hashed = 0;
    if (!ff->md && !(ff->md = EVP_MD_CTX_new()))
        return NX_ENOMEM;
    if (!EVP_DigestInit_ex(ff->md, ff->f->lfs ? EVP_sha256() : EVP_sha1(), NULL))
        return NX_ENOMEM;
    if (!ff->f->lfs) {
        char head[40];
        int n = snprintf(head, sizeof head, "blob %llu", (unsigned long long)ff->f->size);
        EVP_DigestUpdate(ff->md, head, (size_t)n + 1); /* with its NUL */
    }
    return NX_OK;
}

/* The digest is complete: store the file when it matches, else leave it to the fetch loop. */
static void hash_finish(nx__pull_ctx_t *ctx, fetch_file_t *ff)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ff->md, md, &n);
    for (unsigned i = 0; i < n; i++)
        snprintf(ff->digest_hex + 2 * i, 3, "%02x", md[i]);
    if (strcmp(ff->digest_hex, ff->f->id) != 0) {
        atomic_store(&ff->hash_state, HS_MISMATCH);
        return;
    }
    int fd = ff->fd;
    ff->fd = -1;
    int rc = nx__pull_store_blob(ctx, ff->f, fd, &ff->store_err);
    atomic_store(&ff->hash_state, rc == NX_OK ? HS_STORED : HS_STORE_FAILED);
}

/* Hash what is ready of one file, at most one block; true when it did something. */
static bool hash_step(nx__pull_ctx_t *ctx, fetch_file_t *ff, unsigned char *buf)
{
    if (atomic_load(&ff->hash_state) != HS_RUNNING || ff->fd < 0)
        return false;
    uint64_t ready = atomic_load(&ff->ready);
    if (ff->hashed == ff->f->size) {
        hash_finish(ctx, ff);
        return true;
    }
    if (ready <= ff->hashed)
        return false;
    uint64_t want = ready - ff->hashed;
    size_t n = want > FETCH_HASH_BLOCK ? FETCH_HASH_BLOCK : (size_t)want;
    ssize_t got = pread(ff->fd, buf, n, (off_t)ff->hashed);
    if (got <= 0) {
        ff->hash_errno = got < 0 ? errno : EIO;
        atomic_store(&ff->hash_state, HS_READ_ERROR);
        return true;
    }
    EVP_DigestUpdate(ff->md, buf, (size_t)got);
    /* start writing it to disk now, so the fsync before the rename has little left to do */
    sync_file_range(ff->fd, (off_t)ff->hashed, got, SYNC_FILE_RANGE_WRITE);
    ff->hashed += (uint64_t)got;
    if (ff->hashed == ff->f->size)
        hash_finish(ctx, ff);
    return true;
}

static void *hasher_main(void *arg)
{
    hasher_t *h = arg;
    unsigned char *buf = malloc(FETCH_HASH_BLOCK);
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        bool did = false;
        pthread_mutex_unlock(&h->lock);
        for (size_t i = 0; i < h->count && buf; i++)
            did |= hash_step(h->ctx, &h->files[i], buf);
        pthread_mutex_lock(&h->lock);
        if (!did && !h->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50000000;
            if (ts.tv_nsec >= 1000000000)
                ts.tv_sec++, ts.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&h->wake, &h->lock, &ts);
        }
    }
    pthread_mutex_unlock(&h->lock);
    free(buf);
    return NULL;
}

static void hasher_poke(hasher_t *h)
{
    pthread_mutex_lock(&h->lock);
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->lock);
}

/* ---- the resume state ----------------------------------------------------------------- */

typedef struct state_head {
    char magic[8];
    uint64_t size, chunk_bytes;
    uint32_t chunk_count, pad;
} state_head_t;

static uint64_t chunk_bytes_of(const nx__pull_ctx_t *ctx)
{
    return ctx->opts->chunk_bytes ? ctx->opts->chunk_bytes : FETCH_CHUNK_DEFAULT;
}

/* Write the state file (temp + rename). Errors are not fatal: a lost state file only costs a
 * restart of that file next time. */
static void state_save(const nx__pull_ctx_t *ctx, fetch_file_t *ff)
{
    size_t n = ff->chunk_count;
    size_t bytes = sizeof(state_head_t) + n * 8 + 8;
    unsigned char *buf = calloc(1, bytes);
    size_t tmp_len = strlen(ff->state_path) + 8;
    char *tmp = malloc(tmp_len);
    if (!buf || !tmp)
        goto out;
    state_head_t head = {.size = ff->f->size, .chunk_bytes = chunk_bytes_of(ctx),
                         .chunk_count = (uint32_t)n};
    memcpy(head.magic, FETCH_STATE_MAGIC, 8);
    memcpy(buf, &head, sizeof head);
    for (size_t i = 0; i < n; i++)
        memcpy(buf + sizeof head + i * 8, &ff->chunks[i].done, 8);
    uint64_t sum = XXH64(buf, bytes - 8, 0);
    memcpy(buf + bytes - 8, &sum, 8);
    snprintf(tmp, tmp_len, "%s.tmp", ff->state_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto out;
    bool ok = write(fd, buf, bytes) == (ssize_t)bytes;
    close(fd);
    if (!ok || rename(tmp, ff->state_path) != 0)
        unlink(tmp);
    ff->state_dirty = false;
out:
    free(buf);
    free(tmp);
}

/* Fill chunks[].done from the state file; false when it is absent or cannot be trusted. */
static bool state_load(const nx__pull_ctx_t *ctx, fetch_file_t *ff)
{
    size_t n = ff->chunk_count;
    size_t bytes = sizeof(state_head_t) + n * 8 + 8;
    unsigned char *buf = malloc(bytes + 1);
    bool ok = false;
    int fd = open(ff->state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || !buf)
        goto out;
    if (read(fd, buf, bytes + 1) != (ssize_t)bytes)
        goto out;
    state_head_t head;
    memcpy(&head, buf, sizeof head);
    uint64_t sum;
    memcpy(&sum, buf + bytes - 8, 8);
    if (memcmp(head.magic, FETCH_STATE_MAGIC, 8) != 0 || head.size != ff->f->size ||
        head.chunk_bytes != chunk_bytes_of(ctx) || head.chunk_count != n ||
        sum != XXH64(buf, bytes - 8, 0))
        goto out;
    for (size_t i = 0; i < n; i++) {
        uint64_t done;
        memcpy(&done, buf + sizeof head + i * 8, 8);
        if (done > ff->chunks[i].len)
            goto out;
        ff->chunks[i].done = done;
    }
    ok = true;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    if (!ok)
        for (size_t i = 0; i < n; i++)
            ff->chunks[i].done = 0;
    return ok;
}

/* ---- one file: open, resume, verify ---------------------------------------------------- */

static uint64_t file_done_bytes(const fetch_file_t *ff)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < ff->chunk_count; i++)
        sum += ff->chunks[i].done;
    return sum;
}

/* Reserve the file's bytes now, so a full disk is found before any transfer. */
static int reserve(const nx__pull_ctx_t *ctx, fetch_file_t *ff, nx_err_t *err)
{
    if (ff->f->size == 0)
        return NX_OK;
    int rc = fallocate(ff->fd, 0, 0, (off_t)ff->f->size);
    if (rc != 0 && (errno == EOPNOTSUPP || errno == ENOSYS))
        rc = ftruncate(ff->fd, (off_t)ff->f->size);
    if (rc == 0)
        return NX_OK;
    int e = errno;
    return nx_err_set(err, e == ENOSPC || e == EDQUOT ? NX_ENOSPC : NX_EIO,
                      "%s: file '%s': %s: cannot reserve its %llu bytes in %s/blobs",
                      ctx->opts->repo, ff->f->name, e == ENOSPC ? "no space left on device"
                                                                : strerror(e),
                      (unsigned long long)ff->f->size, ctx->repo_dir);
}

/* Open (or resume) the file's .incomplete; chunks from the state file when it checks out. */
static int file_open(nx__pull_ctx_t *ctx, fetch_file_t *ff, bool fresh, nx_err_t *err)
{
    uint64_t cb = chunk_bytes_of(ctx);
    ff->chunk_count = (uint32_t)((ff->f->size + cb - 1) / cb);
    free(ff->chunks);
    ff->chunks = calloc(ff->chunk_count ? ff->chunk_count : 1, sizeof *ff->chunks);
    if (!ff->chunks)
        return nx_err_set(err, NX_ENOMEM, "no memory");
    for (uint32_t i = 0; i < ff->chunk_count; i++) {
        ff->chunks[i].start = (uint64_t)i * cb;
        ff->chunks[i].len = ff->f->size - ff->chunks[i].start < cb
                                ? ff->f->size - ff->chunks[i].start : cb;
    }
    struct stat st;
    bool resume = !fresh && stat(ff->part_path, &st) == 0 && (uint64_t)st.st_size == ff->f->size &&
                  state_load(ctx, ff);
    if (ff->fd >= 0)
        close(ff->fd);
    ff->fd = open(ff->part_path, O_RDWR | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0644);
    if (ff->fd < 0) {
        int e = errno;
        return nx_err_set(err, e == ENOSPC ? NX_ENOSPC : NX_EIO, "%s: file '%s': cannot create "
                          "%s: %s", ctx->opts->repo, ff->f->name, ff->part_path, strerror(e));
    }
    if (!resume)
        unlink(ff->state_path);
    int rc = reserve(ctx, ff, err);
    if (rc != NX_OK) {
        close(ff->fd);
        ff->fd = -1;
        unlink(ff->part_path);
        return rc;
    }
    ff->resumed_bytes = file_done_bytes(ff);
    atomic_store(&ff->ready, 0);
    if (hash_start(ff) != NX_OK)
        return nx_err_set(err, NX_ENOMEM, "no memory for a digest");
    atomic_store(&ff->hash_state, 0);
    ff->state_dirty = true;
    return NX_OK;
}

/* Advance ff->ready over the chunks complete from the start. */
static void update_ready(fetch_file_t *ff)
{
    uint64_t ready = 0;
    for (uint32_t i = 0; i < ff->chunk_count; i++) {
        ready = ff->chunks[i].start + ff->chunks[i].done;
        if (ff->chunks[i].done < ff->chunks[i].len)
            break;
    }
    atomic_store(&ff->ready, ready);
}

static bool file_bytes_complete(const fetch_file_t *ff)
{
    for (uint32_t i = 0; i < ff->chunk_count; i++)
        if (ff->chunks[i].done < ff->chunks[i].len)
            return false;
    return true;
}

static bool file_active(const fetch_file_t *ff)
{
    for (uint32_t i = 0; i < ff->chunk_count; i++)
        if (ff->chunks[i].active)
            return true;
    return false;
}

/* The hasher is done with the file: report it stored, or fail (or restart once after a
 * resume). */
static int file_finish(nx__pull_ctx_t *ctx, fetch_file_t *ff, nx_err_t *err)
{
    const char *algo = ff->f->lfs ? "sha256" : "git blob sha1";
    int state = atomic_load(&ff->hash_state);
    if (state == HS_READ_ERROR)
        return nx_err_set(err, NX_EIO, "%s: file '%s': reading %s back to check its %s: %s",
                          ctx->opts->repo, ff->f->name, ff->part_path, algo,
                          strerror(ff->hash_errno));
    if (state == HS_STORE_FAILED) {
        *err = ff->store_err;
        return err->code;
    }
    if (state == HS_MISMATCH) {
        if (ff->resumed_bytes > 0 && !ff->restarted) {
            /* bytes from an earlier run may not have reached the disk: fetch it all again */
            ff->restarted = true;
            nx_log(NX_LOG_WARN, "%s: file '%s': %s mismatch after a resume: fetching it again",
                   ctx->opts->repo, ff->f->name, algo);
            return file_open(ctx, ff, true, err);
        }
        close(ff->fd);
        ff->fd = -1;
        unlink(ff->part_path);
        unlink(ff->state_path);
        return nx_err_set(err, NX_EDIGEST, "%s: file '%s': %s mismatch: the hub says %s, the "
                          "bytes received give %s (the download was deleted)",
                          ctx->opts->repo, ff->f->name, algo, ff->f->id, ff->digest_hex);
    }
    ff->f->present = true;
    ff->finished = true;
    unlink(ff->state_path);
    nx_pull_event_t ev = {.kind = NX_PULL_EV_FILE, .file = ff->f->name,
                          .file_size = ff->f->size, .file_fetched = ff->fetched,
                          .blob_id = ff->f->id,
                          .file_seconds = ff->first_ns ? (double)(nx_now_ns() - ff->first_ns) / 1e9
                                                       : 0};
    nx__pull_emit(ctx, &ev);
    return NX_OK;
}

/* ---- transfers ------------------------------------------------------------------------- */

static size_t on_xfer_header(char *data, size_t size, size_t n, void *user)
{
    xfer_t *x = user;
    size_t len = size * n;
    if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
        x->retry_after = -1;
        x->status = 0;
    } else if (len > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        x->retry_after = nx__pull_parse_retry_after(data + 12);
    } else if (len > 14 && strncasecmp(data, "content-range:", 14) == 0) {
        unsigned long long a, b, total;
        if (sscanf(data + 14, " bytes %llu-%llu/%llu", &a, &b, &total) != 3 ||
            a != x->range_start || total != x->ff->f->size)
            x->bad_range = true;
    }
    return len;
}

static size_t on_xfer_data(char *data, size_t size, size_t n, void *user)
{
    xfer_t *x = user;
    size_t len = size * n;
    if (!x->status)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    /* a 200 for a one-chunk file is the whole file: a server that ignores Range on a resume
     * sends it from the start again, so it is written from the start again */
    bool whole = x->status == 200 && x->c->start == 0 && x->c->len == x->ff->f->size;
    if (whole && !x->whole_seen) {
        x->whole_seen = true;
        x->c->done = 0;
    }
    if (x->status != 206 && !whole) {
        if (x->status >= 200 && x->status < 300) {
            x->bad_range = true; /* a 200 for a part: the server ignored Range */
            return 0;
        }
        size_t room = sizeof x->body - 1 - x->body_len;
        size_t keep = len < room ? len : room;
        memcpy(x->body + x->body_len, data, keep);
        x->body_len += keep;
        x->body[x->body_len] = 0;
        return len;
    }
    if (x->bad_range)
        return 0;
    if (x->c->done + len > x->c->len) {
        x->overrun = true;
        return 0;
    }
    for (size_t put = 0; put < len;) {
        ssize_t w = pwrite(x->ff->fd, data + put, len - put, (off_t)(x->c->start + x->c->done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            x->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        put += (size_t)w;
        x->c->done += (uint64_t)w;
    }
    x->ff->fetched += len;
    x->ff->state_dirty = true;
    atomic_fetch_add(&x->ctx->bytes_fetched, len);
    return len;
}

static xfer_t *xfer_start(nx__pull_ctx_t *ctx, CURLM *multi, fetch_file_t *ff, chunk_t *c)
{
    xfer_t *x = calloc(1, sizeof *x);
    if (!x || !(x->easy = curl_easy_init())) {
        free(x);
        return NULL;
    }
    x->ff = ff;
    x->c = c;
    x->ctx = ctx;
    x->retry_after = -1;
    x->range_start = c->start + c->done;
    snprintf(x->range, sizeof x->range, "%llu-%llu", (unsigned long long)x->range_start,
             (unsigned long long)(c->start + c->len - 1));
    nx__pull_easy_setup(ctx, x->easy, ff->f->url, ff->f->url_auth);
    curl_easy_setopt(x->easy, CURLOPT_RANGE, x->range);
    curl_easy_setopt(x->easy, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, on_xfer_header);
    curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_xfer_data);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(multi, x->easy) != CURLM_OK) {
        curl_easy_cleanup(x->easy);
        free(x);
        return NULL;
    }
    c->active = true;
    if (!ff->first_ns)
        ff->first_ns = nx_now_ns();
    return x;
}

static void xfer_free(CURLM *multi, xfer_t *x)
{
    x->c->active = false;
    curl_multi_remove_handle(multi, x->easy);
    curl_easy_cleanup(x->easy);
    free(x);
}

/* A finished transfer: NX_OK (complete or scheduled again) or the pull's fatal error. */
static int xfer_done(nx__pull_ctx_t *ctx, xfer_t *x, CURLcode code, nx_err_t *err)
{
    const char *repo = ctx->opts->repo, *file = x->ff->f->name;
    if (code == CURLE_ABORTED_BY_CALLBACK && ctx->opts->cancel && *ctx->opts->cancel)
        return NX_OK; /* the loop stops next; what arrived is kept */
    if (!x->status)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->write_errno) {
        int e = x->write_errno;
        return nx_err_set(err, e == ENOSPC || e == EDQUOT ? NX_ENOSPC : NX_EIO,
                          "%s: file '%s': writing %s: %s", repo, file, x->ff->part_path,
                          e == ENOSPC ? "no space left on device" : strerror(e));
    }
    if (x->bad_range || x->overrun)
        return nx_err_set(err, NX_EIO, "%s: file '%s': the server answered the byte range %s "
                          "with other bytes (%s)", repo, file, x->range,
                          x->overrun ? "more than asked" : "no or another range");
    if (code == CURLE_OK && (x->status == 206 || x->status == 200) && x->c->done == x->c->len)
        return NX_OK;
    bool transient = code != CURLE_OK || nx__pull_status_retryable(x->status) ||
                     (x->status == 206 || x->status == 200);
    /* a signed CDN URL that expired mid-pull: the hub gives a fresh one (once per file) */
    if (!transient && !x->ff->f->url_auth && !x->ff->reprobed &&
        (x->status == 401 || x->status == 403 || x->status == 404 || x->status == 410)) {
        x->ff->reprobe = true;
        return NX_OK;
    }
    if (!transient)
        return nx__pull_http_error(ctx, file, x->status, x->body, err);
    char reason[CURL_ERROR_SIZE + 64];
    if (code != CURLE_OK)
        snprintf(reason, sizeof reason, "connection failed or cut: %s",
                 x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
    else if (x->status == 206 || x->status == 200)
        snprintf(reason, sizeof reason, "the transfer ended early");
    else
        snprintf(reason, sizeof reason, "HTTP %ld", x->status);
    unsigned attempts = ctx->opts->attempts ? ctx->opts->attempts : 5;
    if (++x->c->attempts >= attempts)
        return nx_err_set(err, NX_EIO, "%s: file '%s': %s (gave up after %u attempts; %llu of "
                          "%llu bytes are kept for a resume)", repo, file, reason, attempts,
                          (unsigned long long)file_done_bytes(x->ff),
                          (unsigned long long)x->ff->f->size);
    double delay = nx__pull_retry_delay_s(ctx, x->c->attempts, x->retry_after);
    x->c->not_before_ns = nx_now_ns() + (uint64_t)(delay * 1e9);
    nx_pull_event_t ev = {.kind = NX_PULL_EV_RETRY, .file = file, .retry_in_s = delay,
                          .http_status = (int)x->status, .reason = reason};
    nx__pull_emit(ctx, &ev);
    return NX_OK;
}

/* ---- the loop -------------------------------------------------------------------------- */

typedef struct loop {
    nx__pull_ctx_t *ctx;
    CURLM *multi;
    fetch_file_t *files;
    size_t count;
    unsigned running;
    xfer_t *xfers[64]; /* the transfers running, NULL in free slots */
    hasher_t hasher;
    uint64_t progress_ns, rate_bytes;
    double rate_bps;
} loop_t;

/* Start transfers up to opts->jobs; returns the ns until the next delayed chunk may go. */
static uint64_t fill(loop_t *l, int *rc, nx_err_t *err)
{
    unsigned jobs = l->ctx->opts->jobs ? l->ctx->opts->jobs : 8;
    jobs = jobs > 64 ? 64 : jobs;
    uint64_t now = nx_now_ns(), wait = 100000000;
    for (size_t i = 0; i < l->count && l->running < jobs; i++) {
        fetch_file_t *ff = &l->files[i];
        for (uint32_t k = 0; k < ff->chunk_count && l->running < jobs; k++) {
            chunk_t *c = &ff->chunks[k];
            if (c->active || c->done == c->len || ff->finished || ff->reprobe)
                continue;
            if (c->not_before_ns > now) {
                wait = c->not_before_ns - now < wait ? c->not_before_ns - now : wait;
                continue;
            }
            xfer_t *x = xfer_start(l->ctx, l->multi, ff, c);
            if (!x) {
                *rc = nx_err_set(err, NX_ENOMEM, "no memory for a transfer");
                return 0;
            }
            for (size_t s = 0; s < 64; s++)
                if (!l->xfers[s]) {
                    l->xfers[s] = x;
                    break;
                }
            l->running++;
        }
    }
    return wait;
}

static void progress(loop_t *l, bool force)
{
    uint64_t now = nx_now_ns();
    if (!force && now - l->progress_ns < FETCH_PROGRESS_EVERY_NS)
        return;
    uint64_t fetched = atomic_load(&l->ctx->bytes_fetched);
    double dt = (double)(now - l->progress_ns) / 1e9;
    double inst = dt > 0 ? (double)(fetched - l->rate_bytes) / dt : 0;
    l->rate_bps = l->rate_bps == 0 ? inst : 0.7 * l->rate_bps + 0.3 * inst;
    l->progress_ns = now;
    l->rate_bytes = fetched;
    nx_pull_event_t ev = {.kind = NX_PULL_EV_PROGRESS, .rate_bps = l->rate_bps};
    for (size_t i = 0; i < l->ctx->file_count; i++)
        if (l->ctx->files[i].present)
            ev.bytes_done += l->ctx->files[i].size;
    for (size_t i = 0; i < l->count; i++) /* finished ones are present, counted above */
        ev.bytes_done += l->files[i].finished ? 0 : file_done_bytes(&l->files[i]);
    for (size_t i = 0; i < l->ctx->file_count; i++)
        ev.bytes_total += l->ctx->files[i].size;
    nx__pull_emit(l->ctx, &ev);
}

/* One pass over the files: feed the hasher, finish verified files, save states. */
static int sweep(loop_t *l, bool *all_done, nx_err_t *err)
{
    uint64_t now = nx_now_ns();
    *all_done = true;
    for (size_t i = 0; i < l->count; i++) {
        fetch_file_t *ff = &l->files[i];
        if (ff->finished)
            continue;
        *all_done = false;
        update_ready(ff);
        /* no transfer of it may still hold a chunk: a restart frees them */
        if (file_bytes_complete(ff) && !file_active(ff) &&
            atomic_load(&ff->hash_state) != HS_RUNNING) {
            int rc = file_finish(l->ctx, ff, err);
            if (rc != NX_OK)
                return rc;
            continue;
        }
        if (ff->state_dirty && now - ff->state_saved_ns > FETCH_STATE_EVERY_NS) {
            state_save(l->ctx, ff);
            ff->state_saved_ns = now;
        }
    }
    hasher_poke(&l->hasher);
    return NX_OK;
}

static int run_loop(loop_t *l, nx_err_t *err)
{
    int rc = NX_OK;
    for (;;) {
        uint64_t wait_ns = fill(l, &rc, err);
        if (rc != NX_OK)
            return rc;
        int still = 0;
        curl_multi_perform(l->multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(l->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            xfer_t *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode code = msg->data.result;
            int xrc = xfer_done(l->ctx, x, code, err);
            for (size_t s = 0; s < 64; s++)
                if (l->xfers[s] == x)
                    l->xfers[s] = NULL;
            xfer_free(l->multi, x);
            l->running--;
            if (xrc != NX_OK)
                return xrc;
        }
        for (size_t i = 0; i < l->count && rc == NX_OK; i++) {
            fetch_file_t *ff = &l->files[i];
            if (!ff->reprobe || file_active(ff))
                continue;
            /* blocking, but rare: one HEAD chain to the hub for this file */
            free(ff->f->url);
            ff->f->url = NULL;
            ff->reprobe = false;
            ff->reprobed = true;
            rc = nx__pull_probe(l->ctx, ff->f, err);
        }
        if (rc != NX_OK)
            return rc;
        bool all_done;
        rc = sweep(l, &all_done, err);
        if (rc != NX_OK || all_done)
            return rc;
        if (l->ctx->opts->cancel && *l->ctx->opts->cancel) {
            uint64_t kept = 0, total = 0;
            for (size_t i = 0; i < l->count; i++)
                if (!l->files[i].finished) {
                    kept += file_done_bytes(&l->files[i]);
                    total += l->files[i].f->size;
                }
            return nx_err_set(err, NX_ECANCELED, "%s: interrupted; %llu of the %llu bytes of "
                              "the unfinished files are kept: the same command resumes",
                              l->ctx->opts->repo, (unsigned long long)kept,
                              (unsigned long long)total);
        }
        progress(l, false);
        int timeout_ms = (int)(wait_ns / 1000000);
        curl_multi_poll(l->multi, NULL, 0, timeout_ms < 1 ? 1 : (timeout_ms > 20 ? 20 : timeout_ms),
                        NULL);
    }
}

static void loop_teardown(loop_t *l, bool failed)
{
    for (size_t s = 0; s < 64; s++)
        if (l->xfers[s])
            xfer_free(l->multi, l->xfers[s]);
    if (l->multi)
        curl_multi_cleanup(l->multi);
    for (size_t i = 0; i < l->count; i++) {
        fetch_file_t *ff = &l->files[i];
        if (failed && !ff->finished && ff->fd >= 0 && ff->chunks)
            state_save(l->ctx, ff); /* what arrived is kept for the next run */
        if (ff->fd >= 0)
            close(ff->fd);
        EVP_MD_CTX_free(ff->md);
        free(ff->chunks);
        free(ff->part_path);
        free(ff->state_path);
    }
    free(l->files);
}

int nx__pull_fetch_all(nx__pull_ctx_t *ctx, nx_err_t *err)
{
    loop_t l = {.ctx = ctx};
    int rc = NX_OK;
    for (size_t i = 0; i < ctx->file_count; i++)
        l.count += !ctx->files[i].present;
    if (l.count == 0)
        return NX_OK;
    l.files = calloc(l.count, sizeof *l.files);
    if (!l.files)
        return nx_err_set(err, NX_ENOMEM, "no memory");
    for (size_t i = 0, k = 0; i < ctx->file_count; i++) {
        if (ctx->files[i].present)
            continue;
        fetch_file_t *ff = &l.files[k++];
        ff->f = &ctx->files[i];
        ff->fd = -1;
        ff->part_path = nx__pull_blob_path(ctx, ff->f, ".incomplete");
        ff->state_path = nx__pull_blob_path(ctx, ff->f, ".incomplete.state");
        if (!ff->part_path || !ff->state_path) {
            rc = nx_err_set(err, NX_ENOMEM, "no memory");
            goto out;
        }
    }
    /* every file's place is reserved before the first byte moves */
    for (size_t i = 0; i < l.count && rc == NX_OK; i++) {
        rc = nx__pull_probe(ctx, l.files[i].f, err);
        if (rc == NX_OK)
            rc = file_open(ctx, &l.files[i], false, err);
    }
    if (rc != NX_OK)
        goto out;
    l.multi = curl_multi_init();
    if (!l.multi) {
        rc = nx_err_set(err, NX_ENOMEM, "no memory for transfers");
        goto out;
    }
    l.hasher.ctx = ctx;
    l.hasher.files = l.files;
    l.hasher.count = l.count;
    pthread_mutex_init(&l.hasher.lock, NULL);
    pthread_cond_init(&l.hasher.wake, NULL);
    if (pthread_create(&l.hasher.thread, NULL, hasher_main, &l.hasher) != 0) {
        rc = nx_err_set(err, NX_ENOMEM, "cannot start the hashing thread");
        goto out_sync;
    }
    l.progress_ns = nx_now_ns();
    rc = run_loop(&l, err);
    progress(&l, true);
    pthread_mutex_lock(&l.hasher.lock);
    l.hasher.stop = true;
    pthread_cond_signal(&l.hasher.wake);
    pthread_mutex_unlock(&l.hasher.lock);
    pthread_join(l.hasher.thread, NULL);
out_sync:
    pthread_cond_destroy(&l.hasher.wake);
    pthread_mutex_destroy(&l.hasher.lock);
out:
    loop_teardown(&l, rc != NX_OK);
    return rc;
}
