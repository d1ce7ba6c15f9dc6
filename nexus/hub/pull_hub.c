/* pull_hub.c — the hub side of `nexusctl pull`: the revision's API record (commit and files),
 * which files a model needs, and where each file's bytes are once the hub's redirects are
 * followed. Requests here are few and small, so they are blocking (one easy handle each),
 * retried on 408/429/5xx and transport errors with a doubling delay or the server's
 * Retry-After, and bounded by opts->attempts.
 *
 * The token goes only to the endpoint's own origin: redirects are followed by hand (one HEAD
 * per hop), and a hop to another host (the hub's CDN) is made without it. */
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "pull_int.h"

#define HUB_BODY_MAX (64u << 20) /* an API record larger than this is not a hub's */
#define HUB_HOPS_MAX 6

void nx__pull_emit(const nx__pull_ctx_t *ctx, nx_pull_event_t *ev)
{
    if (!ctx->opts->on_event)
        return;
    ev->repo = ctx->opts->repo;
    ev->revision = ctx->opts->revision;
    ev->commit = ctx->commit;
    ev->files = ctx->file_count;
    ev->bytes_fetched = atomic_load(&((nx__pull_ctx_t *)ctx)->bytes_fetched);
    ev->elapsed_s = (double)(nx_now_ns() - ctx->start_ns) / 1e9;
    ctx->opts->on_event(ctx->opts->ctx, ev);
}

static bool canceled(const nx__pull_ctx_t *ctx)
{
    return ctx->opts->cancel && *ctx->opts->cancel;
}

/* libcurl's progress callback: a nonzero return aborts the transfer on cancel. */
static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    return canceled(user) ? 1 : 0;
}

void nx__pull_easy_setup(const nx__pull_ctx_t *ctx, CURL *easy, const char *url, bool auth)
{
    if (ctx->opts->cancel) {
        curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(easy, CURLOPT_XFERINFODATA, (void *)ctx);
        curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    }
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, NX_PULL_UA);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a transfer that moves under 1 kB/s for 60 s is stalled: a transport error, retried */
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (auth && ctx->opts->token && ctx->opts->token[0]) {
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(easy, CURLOPT_XOAUTH2_BEARER, ctx->opts->token);
    }
}

bool nx__pull_status_retryable(long status)
{
    return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

double nx__pull_parse_retry_after(const char *value)
{
    while (*value == ' ' || *value == '\t')
        value++;
    if (!isdigit((unsigned char)*value))
        return -1; /* an HTTP date: rare from hubs; the backoff applies instead */
    return strtod(value, NULL);
}

double nx__pull_retry_delay_s(const nx__pull_ctx_t *ctx, unsigned attempt, double retry_after_s)
{
    if (retry_after_s >= 0)
        return retry_after_s > 120 ? 120 : retry_after_s;
    unsigned base_ms = ctx->opts->backoff_ms ? ctx->opts->backoff_ms : 1000;
    double s = base_ms / 1000.0 * (double)(1u << (attempt > 10 ? 10 : attempt - 1));
    return s > 60 ? 60 : s;
}

/* The server's own words from an error body: the JSON "error" field, else its first line. */
static void body_reason(const char *body, char *out, size_t cap)
{
    out[0] = 0;
    if (!body || !*body)
        return;
    json_t *j = json_loads(body, 0, NULL);
    const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
    if (msg)
        snprintf(out, cap, ": %s", msg);
    else if (!j) {
        size_t n = strcspn(body, "\r\n");
        snprintf(out, cap, ": %.*s", (int)(n > 200 ? 200 : n), body);
    }
    json_decref(j);
}

int nx__pull_http_error(const nx__pull_ctx_t *ctx, const char *file, long status,
                        const char *body, nx_err_t *err)
{
    const nx_pull_opts_t *o = ctx->opts;
    char reason[256];
    body_reason(body, reason, sizeof reason);
    char what[600];
    if (file)
        snprintf(what, sizeof what, "%s: file '%s'", o->repo, file);
    else
        snprintf(what, sizeof what, "%s", o->repo);
    if (status == 401 || status == 403)
        return nx_err_set(err, NX_ENOTSUP,
                          "%s: access denied (HTTP %ld%s): the repository is gated or private "
                          "(or does not exist); %s",
                          what, status, reason,
                          o->token && o->token[0]
                              ? "HF_TOKEN was sent: check that it can read this repository "
                                "and that you accepted the model's licence on its page"
                              : "set HF_TOKEN to a token that can read it and accept the "
                                "model's licence on its page");
    if (status == 404 && !file)
        return nx_err_set(err, NX_ENOTFOUND,
                          "%s: repository or revision '%s' not found on %s (HTTP 404%s)", what,
                          o->revision, ctx->endpoint, reason);
    if (status == 404)
        return nx_err_set(err, NX_ENOTFOUND, "%s: not found at commit %s (HTTP 404%s)", what,
                          ctx->commit, reason);
    return nx_err_set(err, NX_EIO, "%s: HTTP %ld%s", what, status, reason);
}

typedef struct hub_reply {
    long status;
    char *body; /* NUL-terminated, NULL for HEAD */
    size_t body_len;
    char linked_etag[72], etag[72], repo_commit[48];
    int64_t linked_size; /* -1: absent */
    int64_t content_length; /* -1: absent */
    double retry_after;  /* -1: absent */
    char *location;      /* the redirect's absolute URL (curl resolves relative ones) */
    char curl_error[CURL_ERROR_SIZE];
    CURLcode code;
} hub_reply_t;

static void reply_free(hub_reply_t *r)
{
    free(r->body);
    free(r->location);
    memset(r, 0, sizeof *r);
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    hub_reply_t *r = user;
    size_t len = size * n;
    if (r->body_len + len > HUB_BODY_MAX)
        return 0;
    char *grown = realloc(r->body, r->body_len + len + 1);
    if (!grown)
        return 0;
    memcpy(grown + r->body_len, data, len);
    r->body = grown;
    r->body_len += len;
    r->body[r->body_len] = 0;
    return len;
}

/* Copy a header's value without quotes or a weak-validator "W/" prefix. */
static void header_value(const char *v, size_t n, char *out, size_t cap)
{
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= 2 && v[0] == 'W' && v[1] == '/')
        v += 2, n -= 2;
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
        v++, n -= 2;
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), v);
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    hub_reply_t *r = user;
    size_t len = size * n;
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return len;
    size_t key = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vn = len - key - 1;
    char tmp[72];
    if (key == 13 && strncasecmp(data, "x-linked-etag", key) == 0)
        header_value(v, vn, r->linked_etag, sizeof r->linked_etag);
    else if (key == 4 && strncasecmp(data, "etag", key) == 0)
        header_value(v, vn, r->etag, sizeof r->etag);
    else if (key == 13 && strncasecmp(data, "x-repo-commit", key) == 0)
        header_value(v, vn, r->repo_commit, sizeof r->repo_commit);
    else if (key == 13 && strncasecmp(data, "x-linked-size", key) == 0) {
        header_value(v, vn, tmp, sizeof tmp);
        r->linked_size = strtoll(tmp, NULL, 10);
    } else if (key == 11 && strncasecmp(data, "retry-after", key) == 0) {
        header_value(v, vn, tmp, sizeof tmp);
        r->retry_after = nx__pull_parse_retry_after(tmp);
    }
    return len;
}

/* One request; r->code is the transport result, r->status the HTTP status. */
static void hub_request(const nx__pull_ctx_t *ctx, const char *url, bool auth, bool head,
                        hub_reply_t *r)
{
    memset(r, 0, sizeof *r);
    r->linked_size = -1;
    r->content_length = -1;
    r->retry_after = -1;
    CURL *easy = curl_easy_init();
    if (!easy) {
        r->code = CURLE_OUT_OF_MEMORY;
        snprintf(r->curl_error, sizeof r->curl_error, "no memory for a request");
        return;
    }
    nx__pull_easy_setup(ctx, easy, url, auth);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, r->curl_error);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(easy, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT, 120L);
    r->code = curl_easy_perform(easy);
    if (r->code == CURLE_OK) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
        char *loc = NULL;
        curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &loc);
        if (loc)
            r->location = strdup(loc);
        curl_off_t cl = -1;
        curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        r->content_length = cl;
    } else if (!r->curl_error[0])
        snprintf(r->curl_error, sizeof r->curl_error, "%s", curl_easy_strerror(r->code));
    curl_easy_cleanup(easy);
}

/* Sleep s seconds, in 50 ms steps so a cancel is seen. */
static void sleep_s(const nx__pull_ctx_t *ctx, double s)
{
    uint64_t end = nx_now_ns() + (uint64_t)(s * 1e9);
    while (!canceled(ctx) && nx_now_ns() < end) {
        uint64_t left = end - nx_now_ns();
        uint64_t step = left > 50000000 ? 50000000 : left;
        struct timespec ts = {0, (long)step};
        nanosleep(&ts, NULL);
    }
}

/* hub_request with the retry policy; on return r holds the last reply. NX_OK when a reply
 * with a final (non-retryable) status came, NX_EIO naming `file` after the last attempt. */
static int hub_request_retried(const nx__pull_ctx_t *ctx, const char *file, const char *url,
                               bool auth, bool head, hub_reply_t *r, nx_err_t *err)
{
    unsigned attempts = ctx->opts->attempts ? ctx->opts->attempts : 5;
    for (unsigned attempt = 1;; attempt++) {
        hub_request(ctx, url, auth, head, r);
        if (canceled(ctx))
            return nx_err_set(err, NX_ECANCELED, "%s: interrupted", ctx->opts->repo);
        bool transient = r->code != CURLE_OK || nx__pull_status_retryable(r->status);
        if (!transient)
            return NX_OK;
        char reason[CURL_ERROR_SIZE + 32];
        if (r->code != CURLE_OK)
            snprintf(reason, sizeof reason, "%s", r->curl_error);
        else
            snprintf(reason, sizeof reason, "HTTP %ld", r->status);
        if (attempt >= attempts) {
            int code = nx_err_set(err, NX_EIO, "%s%s%s%s: %s (gave up after %u attempts)",
                                  ctx->opts->repo, file ? ": file '" : "", file ? file : "",
                                  file ? "'" : "", reason, attempts);
            return code;
        }
        double delay = nx__pull_retry_delay_s(ctx, attempt, r->retry_after);
        nx_pull_event_t ev = {.kind = NX_PULL_EV_RETRY, .file = file, .retry_in_s = delay,
                              .http_status = (int)r->status, .reason = reason};
        nx__pull_emit(ctx, &ev);
        reply_free(r);
        sleep_s(ctx, delay);
    }
}

/* "a/b c.json" -> "a/b%20c.json": each path segment escaped, the slashes kept. */
static char *escape_path(const char *path)
{
    size_t cap = strlen(path) * 3 + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (isalnum(*p) || strchr("/-._~", *p))
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", *p);
    }
    out[o] = 0;
    return out;
}

static bool is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    return true;
}

/* A repository path we may create under snapshots/: relative, no "." or ".." segment, no
 * empty segment, no backslash or control character. The hub is outside input. */
static bool safe_rel_path(const char *p)
{
    if (!p[0] || p[0] == '/' || strlen(p) > 1024)
        return false;
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '\\')
            return false;
    const char *seg = p;
    for (;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        if (!seg[n])
            return true;
        seg += n + 1;
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The files the engine reads from a safetensors repository (top level only). */
static bool default_wanted(const char *name)
{
    static const char *const names[] = {
        "config.json",          "generation_config.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.json",            "vocab.txt",
        "merges.txt",           "special_tokens_map.json", "added_tokens.json",
        "tokenizer.model",      "model.safetensors.index.json"};
    if (strchr(name, '/'))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return ends_with(name, ".safetensors");
}

/* Parse one sibling into *f; false (with a message) when the hub sent something unusable. */
static bool parse_sibling(const nx__pull_ctx_t *ctx, json_t *s, nx__pull_file_t *f,
                          nx_err_t *err)
{
    const char *name = json_string_value(json_object_get(s, "rfilename"));
    if (!name || !safe_rel_path(name)) {
        nx_err_set(err, NX_EFORMAT, "%s: the hub listed a file name that is not a safe "
                   "relative path ('%s')", ctx->opts->repo, name ? name : "(none)");
        return false;
    }
    json_t *lfs = json_object_get(s, "lfs");
    const char *sha256 = json_string_value(json_object_get(lfs, "sha256"));
    const char *blob = json_string_value(json_object_get(s, "blobId"));
    json_t *size = json_object_get(lfs ? lfs : s, "size");
    if (!json_is_integer(size) || json_integer_value(size) < 0 ||
        (sha256 ? !is_hex(sha256, 64) : !is_hex(blob, 40))) {
        nx_err_set(err, NX_EFORMAT, "%s: file '%s': the hub gave no usable size and checksum "
                   "(an lfs.sha256 or a blobId; is the endpoint a Hugging Face compatible "
                   "hub?)", ctx->opts->repo, name);
        return false;
    }
    f->name = strdup(name);
    if (!f->name) {
        nx_err_set(err, NX_ENOMEM, "no memory");
        return false;
    }
    f->size = (uint64_t)json_integer_value(size);
    f->lfs = sha256 != NULL;
    snprintf(f->id, sizeof f->id, "%s", sha256 ? sha256 : blob);
    return true;
}

static bool selected(const nx_pull_opts_t *o, const char *name, bool gguf_repo)
{
    if (o->file && strcmp(o->file, name) == 0)
        return true;
    for (size_t i = 0; i < o->include_count; i++)
        if (fnmatch(o->includes[i], name, 0) == 0)
            return true;
    if (gguf_repo)
        return default_wanted(name) && !ends_with(name, ".safetensors");
    return default_wanted(name);
}

/* The list of a GGUF repository's .gguf files for the error message. */
static void gguf_list(json_t *siblings, char *out, size_t cap)
{
    size_t o = 0, i;
    json_t *s;
    out[0] = 0;
    json_array_foreach(siblings, i, s)
    {
        const char *name = json_string_value(json_object_get(s, "rfilename"));
        if (name && ends_with(name, ".gguf") && o + 8 < cap)
            o += (size_t)snprintf(out + o, cap - o, "\n  %s", name);
    }
}

static int select_files(nx__pull_ctx_t *ctx, json_t *siblings, nx_err_t *err)
{
    const nx_pull_opts_t *o = ctx->opts;
    size_t n = json_array_size(siblings), i;
    bool has_gguf = false, has_st = false, file_found = false, gguf_picked = false;
    json_t *s;
    json_array_foreach(siblings, i, s)
    {
        const char *name = json_string_value(json_object_get(s, "rfilename"));
        if (!name)
            continue;
        has_gguf |= ends_with(name, ".gguf");
        has_st |= ends_with(name, ".safetensors");
        file_found |= o->file && strcmp(name, o->file) == 0;
    }
    if (o->file && !file_found)
        return nx_err_set(err, NX_ENOTFOUND, "%s: file '%s' is not in the repository at "
                          "revision '%s' (commit %s)", o->repo, o->file, o->revision,
                          ctx->commit);
    bool gguf_repo = has_gguf && !has_st;
    ctx->files = calloc(n ? n : 1, sizeof *ctx->files);
    if (!ctx->files)
        return nx_err_set(err, NX_ENOMEM, "no memory");
    json_array_foreach(siblings, i, s)
    {
        const char *name = json_string_value(json_object_get(s, "rfilename"));
        if (!name || !selected(o, name, gguf_repo))
            continue;
        nx__pull_file_t *f = &ctx->files[ctx->file_count];
        if (!parse_sibling(ctx, s, f, err))
            return err->code;
        ctx->file_count++;
        gguf_picked |= ends_with(name, ".gguf");
    }
    if (gguf_repo && !gguf_picked) {
        char list[4096];
        gguf_list(siblings, list, sizeof list);
        return nx_err_set(err, NX_EINVAL, "%s: a GGUF repository: choose one file with "
                          "--file NAME; its .gguf files:%s", o->repo, list);
    }
    if (ctx->file_count == 0)
        return nx_err_set(err, NX_EINVAL, "%s: nothing to pull at revision '%s': no "
                          "safetensors, GGUF or config file matched (use --include GLOB or "
                          "--file NAME)", o->repo, o->revision);
    return NX_OK;
}

void nx__pull_files_free(nx__pull_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->file_count; i++) {
        free(ctx->files[i].name);
        free(ctx->files[i].url);
    }
    free(ctx->files);
    ctx->files = NULL;
    ctx->file_count = 0;
}

int nx__pull_parse_listing(nx__pull_ctx_t *ctx, const char *body, size_t len, nx_err_t *err)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *sha = json_string_value(json_object_get(j, "sha"));
    json_t *siblings = json_object_get(j, "siblings");
    int rc;
    if (!is_hex(sha, 40) || !json_is_array(siblings))
        rc = nx_err_set(err, NX_EFORMAT, "%s: the hub's answer for revision '%s' has no commit "
                        "sha and file list: is %s a Hugging Face compatible hub?",
                        ctx->opts->repo, ctx->opts->revision, ctx->endpoint);
    else {
        memcpy(ctx->commit, sha, 41);
        rc = select_files(ctx, siblings, err);
    }
    json_decref(j);
    return rc;
}

int nx__pull_list(nx__pull_ctx_t *ctx, nx_err_t *err)
{
    const nx_pull_opts_t *o = ctx->opts;
    char *rev = curl_easy_escape(NULL, o->revision, 0);
    char *repo = escape_path(o->repo);
    size_t cap = strlen(ctx->endpoint) + (rev ? strlen(rev) : 0) + (repo ? strlen(repo) : 0) + 64;
    char *url = malloc(cap);
    int rc = NX_OK;
    hub_reply_t r = {0};
    if (!rev || !repo || !url) {
        rc = nx_err_set(err, NX_ENOMEM, "no memory");
        goto out;
    }
    snprintf(url, cap, "%s/api/models/%s/revision/%s?blobs=true", ctx->endpoint, repo, rev);
    rc = hub_request_retried(ctx, NULL, url, true, false, &r, err);
    if (rc != NX_OK)
        goto out;
    if (r.status != 200) {
        rc = nx__pull_http_error(ctx, NULL, r.status, r.body, err);
        goto out;
    }
    rc = nx__pull_parse_listing(ctx, r.body ? r.body : "", r.body_len, err);
out:
    reply_free(&r);
    free(url);
    free(repo);
    curl_free(rev);
    return rc;
}

/* Same scheme, host and port: the token may go there. */
static bool same_origin(const char *a, const char *b)
{
    CURLU *ua = curl_url(), *ub = curl_url();
    bool same = false;
    if (ua && ub && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
        curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK) {
        same = true;
        CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
        for (size_t i = 0; i < 3 && same; i++) {
            char *pa = NULL, *pb = NULL;
            curl_url_get(ua, parts[i], &pa, CURLU_DEFAULT_PORT);
            curl_url_get(ub, parts[i], &pb, CURLU_DEFAULT_PORT);
            same = pa && pb && strcasecmp(pa, pb) == 0;
            curl_free(pa);
            curl_free(pb);
        }
    }
    curl_url_cleanup(ua);
    curl_url_cleanup(ub);
    return same;
}

int nx__pull_probe(nx__pull_ctx_t *ctx, nx__pull_file_t *f, nx_err_t *err)
{
    const char *repo_name = ctx->opts->repo;
    char *repo = escape_path(repo_name), *file = escape_path(f->name);
    size_t cap = strlen(ctx->endpoint) + (repo ? strlen(repo) : 0) + (file ? strlen(file) : 0) + 64;
    char *url = malloc(cap);
    int rc = NX_OK;
    if (!repo || !file || !url) {
        free(url);
        url = NULL;
        rc = nx_err_set(err, NX_ENOMEM, "no memory");
        goto out;
    }
    snprintf(url, cap, "%s/%s/resolve/%s/%s", ctx->endpoint, repo, ctx->commit, file);
    char linked_etag[72] = "";
    int64_t linked_size = -1, final_size = -1;
    for (int hop = 0;; hop++) {
        hub_reply_t r;
        bool auth = same_origin(url, ctx->endpoint);
        rc = hub_request_retried(ctx, f->name, url, auth, true, &r, err);
        if (rc != NX_OK)
            goto out;
        if (r.linked_etag[0] && !linked_etag[0])
            memcpy(linked_etag, r.linked_etag, sizeof linked_etag);
        if (r.linked_size >= 0 && linked_size < 0)
            linked_size = r.linked_size;
        if (r.status >= 300 && r.status < 400 && r.location && hop < HUB_HOPS_MAX) {
            free(url);
            url = r.location;
            r.location = NULL;
            reply_free(&r);
            continue;
        }
        if (r.status < 200 || r.status > 299) {
            rc = r.status >= 300 && r.status < 400
                     ? nx_err_set(err, NX_EIO, "%s: file '%s': more than %d redirects",
                                  repo_name, f->name, HUB_HOPS_MAX)
                     : nx__pull_http_error(ctx, f->name, r.status, r.body, err);
            reply_free(&r);
            goto out;
        }
        f->url_auth = auth;
        final_size = r.content_length;
        reply_free(&r);
        break;
    }
    if (f->lfs && linked_etag[0] && strcmp(linked_etag, f->id) != 0) {
        rc = nx_err_set(err, NX_EDIGEST, "%s: file '%s': the hub's X-Linked-Etag (sha256 %s) "
                        "differs from its API (sha256 %s)", repo_name, f->name, linked_etag,
                        f->id);
        goto out;
    }
    int64_t said = linked_size >= 0 ? linked_size : final_size;
    if (said >= 0 && (uint64_t)said != f->size) {
        rc = nx_err_set(err, NX_EFORMAT, "%s: file '%s': the hub serves %lld bytes, its API "
                        "says %llu", repo_name, f->name, (long long)said,
                        (unsigned long long)f->size);
        goto out;
    }
    f->url = url;
    url = NULL;
out:
    free(url);
    free(repo);
    free(file);
    return rc;
}
