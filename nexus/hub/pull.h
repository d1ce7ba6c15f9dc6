/* pull.h — download a model repository from a Hugging Face compatible hub into the store
 * (`nexusctl pull`; the store's layout is modelstore.h's).
 *
 * One call, nx_pull_run: ask the hub's API which commit the revision is and which files it
 * holds, pick the files the engine needs, fetch the missing ones (several files and byte
 * ranges at once), check each against the hub's checksum, and only then give it its final
 * name and a snapshot entry. Progress is reported through a callback, so the caller chooses
 * between a terminal line, plain lines or JSON.
 */
#ifndef NX_PULL_H
#define NX_PULL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"

typedef enum nx_pull_event_kind {
    NX_PULL_EV_START,    /* the file list is known: files, bytes_total, bytes_to_fetch */
    NX_PULL_EV_PROGRESS, /* every ~0.25 s while bytes move: bytes_done, rate */
    NX_PULL_EV_FILE,     /* one file is in place (fetched or already in the store) */
    NX_PULL_EV_RETRY,    /* a request is retried: file, http_status, retry_in_s, reason */
} nx_pull_event_kind_t;

typedef struct nx_pull_event {
    nx_pull_event_kind_t kind;
    const char *repo;        /* "Org/Name" */
    const char *revision;    /* as asked: "main", a tag or a commit */
    const char *commit;      /* 40 hex digits */
    size_t files;            /* files selected */
    uint64_t bytes_total;    /* bytes of the selected files */
    uint64_t bytes_to_fetch; /* START: bytes not yet in the store (.incomplete parts count) */
    uint64_t bytes_done;     /* PROGRESS: bytes of the selection complete so far */
    uint64_t bytes_fetched;  /* bytes received over the network so far by this run */
    double rate_bps;         /* PROGRESS: recent receive rate, bytes per second */
    double elapsed_s;        /* seconds since the start of the pull */
    /* FILE and RETRY: */
    const char *file;        /* its name in the repository */
    uint64_t file_size;      /* bytes */
    uint64_t file_fetched;   /* FILE: bytes of it received by this run (0: was in the store) */
    double file_seconds;     /* FILE: seconds from its first byte to its rename */
    const char *blob_id;     /* FILE: its sha256 or git sha1 */
    int http_status;         /* RETRY: the status that is retried, 0 for a transport error */
    double retry_in_s;       /* RETRY: seconds until the next attempt */
    const char *reason;      /* RETRY: a few words */
} nx_pull_event_t;

typedef void (*nx_pull_event_fn)(void *ctx, const nx_pull_event_t *ev);

typedef struct nx_pull_opts {
    const char *endpoint;        /* "https://huggingface.co" or a mirror; no trailing '/' needed */
    const char *token;           /* bearer token (HF_TOKEN) or NULL */
    const char *repo;            /* "Org/Name" (checked by nx_ms_parse_name) */
    const char *revision;        /* branch, tag or commit */
    const char *models_dir;      /* the store's root, absolute */
    const char *const *includes; /* fnmatch globs adding files to the default selection */
    size_t include_count;
    const char *file;            /* --file: one more file, required to pick a GGUF */
    unsigned jobs;               /* transfers at once (1-64) */
    uint64_t chunk_bytes;        /* bytes per ranged request (0: 16 MiB) */
    unsigned attempts;           /* tries per request before giving up (0: 5) */
    unsigned backoff_ms;         /* first retry delay, doubled each time (0: 1000) */
    nx_pull_event_fn on_event;   /* may be NULL */
    void *ctx;
    const volatile int *cancel;  /* when it turns nonzero (a signal handler), the pull stops
                                  * within ~20 ms, keeps what arrived for a resume and returns
                                  * NX_ECANCELED; may be NULL */
} nx_pull_opts_t;

typedef struct nx_pull_result {
    char commit[41];         /* the revision's commit */
    char *path;              /* snapshot folder, or the .gguf file in it when one was picked;
                              * caller frees */
    size_t files;            /* files in the selection */
    uint64_t bytes_total;    /* their bytes */
    uint64_t bytes_fetched;  /* bytes received by this run */
    double seconds;          /* wall time of the whole pull */
} nx_pull_result_t;

/* Pull opts->repo at opts->revision into opts->models_dir. NX_OK and *out filled, or an error
 * whose message names the repository, the file where one is concerned, and the reason:
 * NX_ENOTFOUND (unknown repository, revision or file), NX_EINVAL (a GGUF repository without
 * --file, or a selection that is empty), NX_ENOTSUP (401/403: gated or private), NX_EIO (HTTP
 * or transport failures after the retries), NX_EDIGEST (checksum mismatch), NX_ENOSPC (disk
 * full). Never leaves a file under its final blob name or in the snapshot unless it matched
 * its checksum. Caller frees out->path (also set to NULL on failure). */
int nx_pull_run(const nx_pull_opts_t *opts, nx_pull_result_t *out, nx_err_t *err);

#endif
