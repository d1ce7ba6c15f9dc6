/* ctl_pull.c — `nexusctl pull REPO[@REV]`: fetch a model repository from a Hugging Face
 * compatible hub into the models folder (pull.h does the work) and show progress: an updating
 * line on a terminal, one plain line per file otherwise, JSON lines with --json. stdout ends
 * with the snapshot path to give `nexusctl run` and the name to put in an agent's `model:`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl.h"
#include "modelstore.h"
#include "pull.h"

#define PULL_MAX_INCLUDES 64

static const char pull_usage[] =
    "usage: nexusctl pull REPO[@REV] [--include GLOB]... [--file NAME] [--models DIR|--config FILE]\n"
    "                     [--json] [--jobs N]\n"
    "\n"
    "Download Org/Name at REV (a branch, tag or commit; default main) from the hub at\n"
    "$HF_ENDPOINT (default https://huggingface.co) into the models folder, in the Hugging Face\n"
    "cache layout (models--Org--Name/{blobs,refs,snapshots}). $HF_TOKEN is sent for gated or\n"
    "private repositories, only to the endpoint's own host.\n"
    "\n"
    "By default: config.json, generation_config.json, the tokenizer files and *.safetensors with\n"
    "model.safetensors.index.json. A GGUF repository needs --file NAME.gguf (one quantization).\n"
    "  --include GLOB  also fetch the files matching GLOB (fnmatch; repeatable)\n"
    "  --file NAME     also fetch this file (picks the .gguf of a GGUF repository)\n"
    "  --models DIR    the models folder (else $NEXUS_MODELS, else models: of --config FILE or\n"
    "                  configs/nexus.yaml)\n"
    "  --jobs N        transfers at once (1-64, default 8)\n"
    "  --json          JSON lines on stdout: start, progress, file, retry, done or error\n"
    "An interrupted pull resumes where it stopped. Tuning for tests: NEXUS_PULL_ATTEMPTS (tries\n"
    "per request, 5), NEXUS_PULL_BACKOFF_MS (first retry delay, 1000), NEXUS_PULL_CHUNK_KIB\n"
    "(bytes per ranged request, 16384).\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "nexusctl pull: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", pull_usage);
    return NX_CTL_EXIT_USAGE;
}

typedef struct view {
    bool json, tty;
    bool line_open; /* a status line is on the terminal */
    size_t files_done;
} view_t;

static void json_line(json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6)) : NULL;
    if (text)
        printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(o);
}

static void clear_line(view_t *v)
{
    if (v->line_open)
        fputs("\r\033[K", stderr);
    v->line_open = false;
}

static void show_event(void *arg, const nx_pull_event_t *ev)
{
    view_t *v = arg;
    char a[32], b[32];
    if (v->json) {
        switch (ev->kind) {
        case NX_PULL_EV_START:
            json_line(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "event", "start", "repo",
                                ev->repo, "revision", ev->revision, "commit", ev->commit,
                                "files", (json_int_t)ev->files, "bytes_total",
                                (json_int_t)ev->bytes_total, "bytes_to_fetch",
                                (json_int_t)ev->bytes_to_fetch));
            break;
        case NX_PULL_EV_PROGRESS:
            json_line(json_pack("{s:s, s:I, s:I, s:I, s:f, s:f}", "event", "progress",
                                "bytes_done", (json_int_t)ev->bytes_done, "bytes_total",
                                (json_int_t)ev->bytes_total, "bytes_fetched",
                                (json_int_t)ev->bytes_fetched, "rate_bps", ev->rate_bps,
                                "elapsed_s", ev->elapsed_s));
            break;
        case NX_PULL_EV_FILE:
            json_line(json_pack("{s:s, s:s, s:I, s:I, s:b, s:s, s:f}", "event", "file", "file",
                                ev->file, "size", (json_int_t)ev->file_size, "fetched",
                                (json_int_t)ev->file_fetched, "cached", ev->file_fetched == 0 &&
                                ev->file_seconds == 0, "blob", ev->blob_id, "seconds",
                                ev->file_seconds));
            break;
        case NX_PULL_EV_RETRY:
            json_line(json_pack("{s:s, s:s?, s:i, s:f, s:s}", "event", "retry", "file", ev->file,
                                "http_status", ev->http_status, "retry_in_s", ev->retry_in_s,
                                "reason", ev->reason));
            break;
        }
        return;
    }
    switch (ev->kind) {
    case NX_PULL_EV_START:
        nx_cli_format_bytes(ev->bytes_total, a, sizeof a);
        nx_cli_format_bytes(ev->bytes_to_fetch, b, sizeof b);
        fprintf(stderr, "pulling %s@%s (commit %.12s): %zu files, %s, %s to fetch\n", ev->repo,
                ev->revision, ev->commit, ev->files, a, b);
        break;
    case NX_PULL_EV_PROGRESS:
        if (!v->tty)
            break;
        {
            char total[32];
            nx_cli_format_bytes(ev->bytes_done, a, sizeof a);
            nx_cli_format_bytes(ev->bytes_total, total, sizeof total);
            nx_cli_format_bytes((uint64_t)ev->rate_bps, b, sizeof b);
            double eta = ev->rate_bps > 0 && ev->bytes_total > ev->bytes_done
                             ? (double)(ev->bytes_total - ev->bytes_done) / ev->rate_bps : 0;
            clear_line(v);
            fprintf(stderr, "  [%zu/%zu files] %s / %s  %s/s  ETA %.0f s", v->files_done,
                    ev->files, a, total, b, eta);
        }
        v->line_open = true;
        break;
    case NX_PULL_EV_FILE:
        v->files_done++;
        clear_line(v);
        nx_cli_format_bytes(ev->file_size, a, sizeof a);
        if (ev->file_fetched == 0 && ev->file_seconds == 0)
            fprintf(stderr, "  %-40s %10s  already in the store\n", ev->file, a);
        else {
            nx_cli_format_bytes(ev->file_seconds > 0
                                    ? (uint64_t)((double)ev->file_fetched / ev->file_seconds)
                                    : 0, b, sizeof b);
            fprintf(stderr, "  %-40s %10s  %.1f s  %s/s\n", ev->file, a, ev->file_seconds, b);
        }
        break;
    case NX_PULL_EV_RETRY:
        clear_line(v);
        fprintf(stderr, "  %s: %s: retrying in %.1f s\n", ev->file ? ev->file : "(API)",
                ev->reason, ev->retry_in_s);
        break;
    }
    fflush(stderr);
}

static volatile sig_atomic_t interrupted;
static volatile int cancel_flag;

static void on_signal(int sig)
{
    interrupted = sig;
    cancel_flag = 1;
}

static unsigned env_uint(const char *name, unsigned dflt, unsigned max)
{
    uint64_t v;
    const char *text = getenv(name);
    return text && nx_cli_parse_u64(text, 1, max, &v) ? (unsigned)v : dflt;
}

int nx_ctl_pull(int argc, char **argv)
{
    const char *name = NULL, *file = NULL, *models = NULL, *config = NULL;
    const char *includes[PULL_MAX_INCLUDES];
    size_t include_count = 0;
    uint64_t jobs = 8;
    view_t view = {0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        bool takes = strcmp(arg, "--include") == 0 || strcmp(arg, "--file") == 0 ||
                     strcmp(arg, "--models") == 0 || strcmp(arg, "--config") == 0 ||
                     strcmp(arg, "--jobs") == 0;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(pull_usage, stdout);
            return NX_CTL_EXIT_OK;
        }
        if (strcmp(arg, "--json") == 0) {
            view.json = true;
            continue;
        }
        if (takes && i + 1 >= argc)
            return usage_error("%s needs a value", arg);
        const char *val = takes ? argv[++i] : NULL;
        if (strcmp(arg, "--include") == 0) {
            if (include_count == PULL_MAX_INCLUDES)
                return usage_error("%s", "at most 64 --include");
            includes[include_count++] = val;
        } else if (strcmp(arg, "--file") == 0)
            file = val;
        else if (strcmp(arg, "--models") == 0)
            models = val;
        else if (strcmp(arg, "--config") == 0)
            config = val;
        else if (strcmp(arg, "--jobs") == 0) {
            if (!nx_cli_parse_u64(val, 1, 64, &jobs))
                return usage_error("--jobs takes 1 to 64, not '%s'", val);
        } else if (arg[0] == '-' && arg[1])
            return usage_error("unknown option '%s'", arg);
        else if (name)
            return usage_error("one repository at a time ('%s' is one too many)", arg);
        else
            name = arg;
    }
    if (!name)
        return usage_error("%s", "which repository? (Org/Name[@REV])");
    nx_ms_name_t parsed;
    if (!nx_ms_parse_name(name, &parsed))
        return usage_error("'%s' is not a hub repository name (Org/Name or Org/Name@REV)", name);

    nx_err_t err = {0};
    char *models_dir = NULL;
    int rc = nx_ms_models_dir(models, config, &models_dir, &err);
    if (rc != NX_OK) {
        fprintf(stderr, "nexusctl pull: %s\n", err.msg);
        return rc == NX_ENOTFOUND ? NX_CTL_EXIT_USAGE : NX_CTL_EXIT_FAIL;
    }
    const char *endpoint = getenv("HF_ENDPOINT");
    const char *token = getenv("HF_TOKEN");
    if (!token || !*token)
        token = getenv("HUGGING_FACE_HUB_TOKEN");
    view.tty = !view.json && isatty(STDERR_FILENO);
    nx_pull_opts_t opts = {
        .endpoint = endpoint && *endpoint ? endpoint : "https://huggingface.co",
        .token = token && *token ? token : NULL,
        .repo = parsed.repo,
        .revision = parsed.rev,
        .models_dir = models_dir,
        .includes = includes,
        .include_count = include_count,
        .file = file,
        .jobs = (unsigned)jobs,
        .chunk_bytes = (uint64_t)env_uint("NEXUS_PULL_CHUNK_KIB", 16384, 1u << 22) * 1024,
        .attempts = env_uint("NEXUS_PULL_ATTEMPTS", 5, 100),
        .backoff_ms = env_uint("NEXUS_PULL_BACKOFF_MS", 1000, 600000),
        .on_event = show_event,
        .ctx = &view,
        .cancel = &cancel_flag,
    };
    /* Ctrl-C or a TERM: stop cleanly, so the state files hold every byte that arrived */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    nx_pull_result_t res;
    rc = nx_pull_run(&opts, &res, &err);
    clear_line(&view);
    if (rc != NX_OK) {
        if (view.json)
            json_line(json_pack("{s:s, s:s, s:s, s:I}", "event", "error", "code",
                                nx_errname(rc), "message", err.msg, "bytes_fetched",
                                (json_int_t)res.bytes_fetched));
        fprintf(stderr, "nexusctl pull: %s\n", err.msg);
        free(models_dir);
        /* a GGUF repository without --file: the command line lacks a choice */
        if (interrupted)
            return 128 + interrupted; /* as the shell reports a death by that signal */
        return rc == NX_EINVAL ? NX_CTL_EXIT_USAGE : NX_CTL_EXIT_FAIL;
    }
    char model_name[NX_MS_REPO_MAX + NX_MS_REV_MAX + 2];
    snprintf(model_name, sizeof model_name, "%s%s%s", parsed.repo,
             parsed.rev_given && strcmp(parsed.rev, "main") != 0 ? "@" : "",
             parsed.rev_given && strcmp(parsed.rev, "main") != 0 ? parsed.rev : "");
    if (view.json) {
        json_line(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "event", "done",
                            "repo", parsed.repo, "revision", parsed.rev, "commit", res.commit,
                            "path", res.path, "model", model_name, "files", (json_int_t)res.files,
                            "bytes", (json_int_t)res.bytes_total, "bytes_fetched",
                            (json_int_t)res.bytes_fetched, "seconds", res.seconds));
    } else {
        char a[32], b[32];
        nx_cli_format_bytes(res.bytes_total, a, sizeof a);
        nx_cli_format_bytes(res.seconds > 0 ? (uint64_t)((double)res.bytes_fetched / res.seconds)
                                            : 0, b, sizeof b);
        fprintf(stderr, "pulled %s@%s: %zu files, %s (%llu bytes fetched) in %.2f s, %s/s\n",
                parsed.repo, parsed.rev, res.files, a, (unsigned long long)res.bytes_fetched,
                res.seconds, b);
        printf("snapshot: %s\nmodel: %s\n", res.path, model_name);
    }
    free(res.path);
    free(models_dir);
    return NX_CTL_EXIT_OK;
}
