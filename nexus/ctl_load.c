/* ctl_load.c — `nexusctl model load PATH`: load a checkpoint (safetensors or GGUF) through the
 * pipeline into a pool sized for it, print the seconds, bytes, GB/s and the read mode; with
 * --check, compare every tensor in the pool against an independent plain read of the files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctl.h"
#include "nx_loader.h"

typedef struct load_args {
    const char *path;
    nx_device_kind_t device;
    bool check, json;
    uint32_t threads;
    uint32_t queue_depth;
    uint64_t chunk_bytes;
    uint64_t pool_bytes;
    nx_read_mode_t read_mode;
} load_args_t;

static const char load_usage[] =
    "usage: nexusctl model load PATH [--device auto|cpu|cuda] [--check] [--json]\n"
    "                           [--threads N] [--chunk-mib N] [--read auto|direct|buffered]\n"
    "                           [--pool-mib N] [--queue-depth N]\n";

static int usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "nexusctl model load: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n%s", load_usage);
    return NX_CTL_EXIT_USAGE;
}

static int parse_args(int argc, char **argv, load_args_t *a)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(opt, "--check") == 0) {
            a->check = true;
        } else if (strcmp(opt, "--json") == 0) {
            a->json = true;
        } else if (strcmp(opt, "--device") == 0) {
            if (!val || !nx_device_parse(val, &a->device))
                return usage_error("--device takes auto, cpu or cuda, not '%s'", val ? val : "");
            i++;
        } else if (strcmp(opt, "--read") == 0) {
            if (val && strcmp(val, "auto") == 0)
                a->read_mode = NX_READ_AUTO;
            else if (val && strcmp(val, "direct") == 0)
                a->read_mode = NX_READ_DIRECT;
            else if (val && strcmp(val, "buffered") == 0)
                a->read_mode = NX_READ_BUFFERED;
            else
                return usage_error("--read takes auto, direct or buffered, not '%s'",
                                   val ? val : "");
            i++;
        } else if (strcmp(opt, "--threads") == 0) {
            if (!nx_cli_parse_u64(val, 1, 256, &n))
                return usage_error("--threads takes a number from 1 to 256, not '%s'",
                                   val ? val : "");
            a->threads = (uint32_t)n;
            i++;
        } else if (strcmp(opt, "--queue-depth") == 0) {
            if (!nx_cli_parse_u64(val, 1, 64, &n))
                return usage_error("--queue-depth takes a number from 1 to 64, not '%s'",
                                   val ? val : "");
            a->queue_depth = (uint32_t)n;
            i++;
        } else if (strcmp(opt, "--chunk-mib") == 0) {
            if (!nx_cli_parse_u64(val, 1, 1024, &n))
                return usage_error("--chunk-mib takes a number from 1 to 1024, not '%s'",
                                   val ? val : "");
            a->chunk_bytes = n << 20;
            i++;
        } else if (strcmp(opt, "--pool-mib") == 0) {
            if (!nx_cli_parse_u64(val, 1, 1ull << 24, &n))
                return usage_error("--pool-mib takes a positive number of MiB, not '%s'",
                                   val ? val : "");
            a->pool_bytes = n << 20;
            i++;
        } else if (opt[0] == '-') {
            return usage_error("unknown option '%s'", opt);
        } else if (a->path) {
            return usage_error("one PATH only; '%s' is extra", opt);
        } else {
            a->path = opt;
        }
    }
    if (!a->path)
        return usage_error("%sPATH is missing (a .safetensors or .gguf file, or a model directory)",
                           "");
    return NX_CTL_EXIT_OK;
}

/* Enough pool for the model: its bytes, a 4 KiB-aligned start per file, and chunk rounding. */
static uint64_t pool_bytes_for(const char *path, nx_err_t *err)
{
    nx_st_t *st = nx_st_open(path, err);
    if (!st)
        return 0;
    uint64_t bytes = nx_st_data_bytes(st) + 4096ull * (nx_st_file_count(st) + 1);
    nx_st_destroy(&st);
    const uint64_t chunk = 32ull << 20; /* the largest default chunk of any backend */
    return (bytes + chunk - 1) / chunk * chunk + chunk;
}

static void print_human(const load_args_t *a, nx_pool_t *pool, const nx_model_t *model,
                        const nx_load_stats_t *st)
{
    char size[32];
    nx_cli_format_bytes(st->bytes, size, sizeof size);
    printf("loaded %s: %zu tensors, %s into the %s pool in %.4f s = %.2f GB/s\n", a->path,
           nx_model_tensor_count(model), size, nx_device_name(nx_pool_device(pool)),
           st->seconds, st->gbps);
    printf("  read mode: %s (%u fallback%s to buffered), %u thread%s x %llu MiB chunks, %s",
           st->read_mode, st->fallbacks, st->fallbacks == 1 ? "" : "s", st->threads,
           st->threads == 1 ? "" : "s", (unsigned long long)(st->chunk_bytes >> 20), st->io);
    if (strcmp(st->io, "io_uring") == 0)
        printf(" (%u in flight per thread)", st->queue_depth);
    printf("; shape from: %s\n", st->io_source);
}

static void print_json(const load_args_t *a, nx_pool_t *pool, const nx_model_t *model,
                       const nx_load_stats_t *st, int check_rc, const nx_err_t *check_err,
                       double check_seconds)
{
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(a->path));
    json_object_set_new(o, "device", json_string(nx_device_name(nx_pool_device(pool))));
    json_object_set_new(o, "tensors", json_integer((json_int_t)nx_model_tensor_count(model)));
    json_object_set_new(o, "bytes", json_integer((json_int_t)st->bytes));
    json_object_set_new(o, "seconds", json_real(st->seconds));
    json_object_set_new(o, "gbps", json_real(st->gbps));
    json_object_set_new(o, "read_mode", json_string(st->read_mode));
    json_object_set_new(o, "fallbacks", json_integer(st->fallbacks));
    json_object_set_new(o, "threads", json_integer(st->threads));
    json_object_set_new(o, "chunk_bytes", json_integer((json_int_t)st->chunk_bytes));
    json_object_set_new(o, "io", json_string(st->io));
    json_object_set_new(o, "queue_depth", json_integer(st->queue_depth));
    json_object_set_new(o, "io_source", json_string(st->io_source));
    if (!a->check) {
        json_object_set_new(o, "check", json_null());
    } else {
        json_t *c = json_object();
        json_object_set_new(c, "ok", json_boolean(check_rc == NX_OK));
        json_object_set_new(c, "seconds", json_real(check_seconds));
        if (check_rc != NX_OK)
            json_object_set_new(c, "error", json_string(check_err->msg));
        json_object_set_new(o, "check", c);
    }
    char *text = json_dumps(o, JSON_INDENT(2));
    if (text)
        puts(text);
    free(text);
    json_decref(o);
}

int nx_ctl_model_load(int argc, char **argv)
{
    load_args_t a = {.device = NX_DEVICE_AUTO};
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    int rc = nx_ctl_store_opts_take("model load", &argc, argv, &store);
    if (rc == NX_CTL_EXIT_OK)
        rc = parse_args(argc, argv, &a);
    if (rc == NX_CTL_EXIT_OK)
        rc = nx_ctl_resolve_model("model load", &store, a.path, &model_path);
    if (rc != NX_CTL_EXIT_OK)
        return rc;
    a.path = model_path;

    nx_err_t err = {0};
    nx_pool_t *pool = NULL;
    nx_loader_t *loader = NULL;
    nx_model_t *model = NULL;
    int exit_code = NX_CTL_EXIT_FAIL;

    uint64_t pool_bytes = a.pool_bytes ? a.pool_bytes : pool_bytes_for(a.path, &err);
    if (!pool_bytes)
        goto out;
    nx_pool_opts_t popts = {.device = a.device, .bytes = pool_bytes};
    pool = nx_pool_new(&popts, &err);
    if (!pool)
        goto out;
    nx_loader_opts_t lopts = {.threads = a.threads, .chunk_bytes = a.chunk_bytes,
                              .queue_depth = a.queue_depth, .read_mode = a.read_mode,
                              .shape_path = a.path};
    loader = nx_loader_new(pool, &lopts, &err);
    if (!loader)
        goto out;
    nx_load_stats_t stats;
    model = nx_loader_load(loader, a.path, NULL, &stats, &err);
    if (!model)
        goto out;

    int check_rc = NX_OK;
    nx_err_t check_err = {0};
    double check_seconds = 0;
    if (a.check) {
        uint64_t t0 = nx_now_ns();
        check_rc = nx_model_check(pool, model, &check_err);
        check_seconds = (double)(nx_now_ns() - t0) / 1e9;
    }
    if (a.json) {
        print_json(&a, pool, model, &stats, check_rc, &check_err, check_seconds);
    } else {
        print_human(&a, pool, model, &stats);
        if (a.check && check_rc == NX_OK) {
            char size[32];
            nx_cli_format_bytes(stats.bytes, size, sizeof size);
            printf("  check: every tensor matches the file (%s compared in %.2f s)\n", size,
                   check_seconds);
        }
    }
    if (a.check && check_rc != NX_OK) {
        fprintf(stderr, "nexusctl: check failed: %s\n", check_err.msg);
        goto out;
    }
    exit_code = NX_CTL_EXIT_OK;
out:
    if (exit_code != NX_CTL_EXIT_OK && err.code != NX_OK)
        fprintf(stderr, "nexusctl: load failed: %s\n", err.msg);
    if (loader)
        nx_loader_unload(loader, &model, false);
    nx_loader_destroy(&loader);
    nx_pool_destroy(&pool);
    free(model_path);
    return exit_code;
}
