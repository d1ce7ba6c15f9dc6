/* pull_int.h — what the parts of `nexusctl pull` share: pull_hub.c talks to the hub (API,
 * redirects, retries), pull_fetch.c moves the bytes (ranged transfers, resume state, hashing),
 * pull_store.c puts them in the store (blobs, snapshots, refs) and runs the whole. */
#ifndef NX_PULL_INT_H
#define NX_PULL_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "pull.h"

#define NX_PULL_UA "nexusctl-pull/1"

/* One file of the selection. */
typedef struct nx__pull_file {
    char *name;        /* rfilename, "sub/dir/x.json" */
    uint64_t size;     /* bytes */
    char id[65];       /* blob id: LFS sha256 (64 hex) or git blob sha1 (40 hex) */
    bool lfs;          /* id is a sha256 of the bytes; else sha1("blob <size>\0" + bytes) */
    bool present;      /* blobs/<id> is already complete in the store */
    char *url;         /* where its bytes are, after the hub's redirects (set by the probe) */
    bool url_auth;     /* url is on the endpoint's origin: the token may go there */
} nx__pull_file_t;

/* The hub's view of a revision and the pull's shared settings. */
typedef struct nx__pull_ctx {
    const nx_pull_opts_t *opts;
    char endpoint[512];     /* opts->endpoint without trailing '/' */
    char commit[41];
    nx__pull_file_t *files; /* the selection */
    size_t file_count;
    char *repo_dir;         /* <models>/models--Org--Name */
    uint64_t start_ns;
    atomic_uint_fast64_t bytes_fetched; /* received over the network by this run */
} nx__pull_ctx_t;

/* pull_hub.c */

/* GET the revision's API record, fill ctx->commit and the selection (ctx->files). */
int nx__pull_list(nx__pull_ctx_t *ctx, nx_err_t *err);
/* The parsing half of nx__pull_list: body[0..len) is the API's JSON (outside input; fuzzed by
 * tests/fuzz_pull_listing.c). Every selected name is a safe relative path, every id hex. */
int nx__pull_parse_listing(nx__pull_ctx_t *ctx, const char *body, size_t len, nx_err_t *err);
/* Free ctx->files (names, URLs) and empty the selection. */
void nx__pull_files_free(nx__pull_ctx_t *ctx);
/* Follow the hub's redirects for one file (HEAD requests, retried), set f->url, f->url_auth,
 * and check the size and checksum headers against the API's. */
int nx__pull_probe(nx__pull_ctx_t *ctx, nx__pull_file_t *f, nx_err_t *err);
/* Options every request shares (user agent, timeouts, TLS); the token only when auth. */
void nx__pull_easy_setup(const nx__pull_ctx_t *ctx, CURL *easy, const char *url, bool auth);
/* The delay before attempt `attempt` (1 = first retry): backoff doubling from opts, or the
 * server's Retry-After when it gave one (capped at 120 s). */
double nx__pull_retry_delay_s(const nx__pull_ctx_t *ctx, unsigned attempt, double retry_after_s);
/* True for a status worth retrying: 408, 429, 5xx. */
bool nx__pull_status_retryable(long status);
/* A sentence for a final HTTP status on `file` (NULL: the API request). Returns the code. */
int nx__pull_http_error(const nx__pull_ctx_t *ctx, const char *file, long status,
                        const char *body, nx_err_t *err);
/* Seconds in a Retry-After header line value (delta seconds only); -1 when absent/other. */
double nx__pull_parse_retry_after(const char *value);
/* Report an event with the pull's common fields filled. */
void nx__pull_emit(const nx__pull_ctx_t *ctx, nx_pull_event_t *ev);

/* pull_fetch.c */

/* Fetch every selected file that is not present into blobs/<id>.incomplete (resuming from its
 * state file), verify it, and hand each verified file to nx__pull_store_blob. */
int nx__pull_fetch_all(nx__pull_ctx_t *ctx, nx_err_t *err);

/* pull_store.c */

/* "<repo_dir>/blobs/<id><suffix>". Caller frees. */
char *nx__pull_blob_path(const nx__pull_ctx_t *ctx, const nx__pull_file_t *f, const char *suffix);
/* fsync fd, rename the verified .incomplete to blobs/<id>, fsync the folder. Takes fd (closes
 * it). Runs on the hashing thread: reads ctx's settings only. */
int nx__pull_store_blob(nx__pull_ctx_t *ctx, nx__pull_file_t *f, int fd, nx_err_t *err);
/* fsync a folder. */
int nx__pull_fsync_dir(const char *dir);

#endif
