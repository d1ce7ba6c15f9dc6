/* ctl_inspect.c — `nexusctl model inspect` and `nexusctl model verify`: what a checkpoint
 * holds (files, alignment, digests, every tensor; for GGUF the version and every key/value)
 * and whether it is valid and intact. Both open the checkpoint with nx_st_open, so they apply
 * exactly the loader's rules, to safetensors and GGUF alike. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "ctl_gguf.h"
#include "nx_loader.h"

typedef struct inspect_args {
    const char *path;
    bool json;
    bool summary; /* inspect only */
} inspect_args_t;

/* Parse "PATH [--json] [--summary]"; returns false after printing a one-line explanation. */
static bool parse_args(int argc, char **argv, bool allow_summary, inspect_args_t *out)
{
    const char *cmd = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--json") == 0)
            out->json = true;
        else if (allow_summary && strcmp(arg, "--summary") == 0)
            out->summary = true;
        else if (arg[0] == '-' && arg[1] != '\0') {
            fprintf(stderr, "nexusctl: model %s: unknown option '%s'\n", cmd, arg);
            return false;
        } else if (out->path) {
            fprintf(stderr, "nexusctl: model %s: one PATH only ('%s' and '%s' given)\n", cmd,
                    out->path, arg);
            return false;
        } else
            out->path = arg;
    }
    if (!out->path) {
        fprintf(stderr,
                "nexusctl: model %s: missing PATH (a .safetensors or .gguf file, or a "
                "directory)\n",
                cmd);
        return false;
    }
    return true;
}

/* Largest power of two dividing the data offset, capped at 4096. */
static uint64_t data_alignment(uint64_t data_offset)
{
    uint64_t align = 1;
    while (align < NX_ST_ALIGN && data_offset % (align * 2) == 0)
        align *= 2;
    return align;
}

static const char *shape_text(const nx_st_tensor_t *t, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < t->ndim && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%llu", d ? ", " : "",
                                 (unsigned long long)t->shape[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
    return buf;
}

static void print_text(const nx_st_t *st, bool summary)
{
    printf("checkpoint %s\n", nx_st_path(st));
    for (size_t i = 0; i < nx_st_file_count(st); i++) {
        const nx_st_file_t *f = nx_st_file_at(st, i);
        uint64_t align = data_alignment(f->data_offset);
        printf("file %s\n  file bytes   %llu\n  header bytes %llu\n  data offset  %llu\n"
               "  alignment    %llu (%s)\n  digest       %s\n",
               f->path, (unsigned long long)f->file_bytes, (unsigned long long)f->header_bytes,
               (unsigned long long)f->data_offset, (unsigned long long)align,
               f->data_offset % NX_ST_ALIGN == 0 ? "4 KiB aligned" : "not 4 KiB aligned",
               f->digest ? f->digest : "none");
    }
    if (nx_st_is_gguf(st)) {
        printf("\n");
        nx_ctl_gguf_print_text(st);
    }
    if (!summary) {
        /* dtypes: safetensors names, ggml's (upper case) for block types */
        printf("\n%-56s %-8s %-24s %14s %14s\n", "name", "dtype", "shape", "offset", "bytes");
        for (size_t i = 0; i < nx_st_tensor_count(st); i++) {
            const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
            const nx_st_file_t *f = nx_st_file_at(st, t->file_index);
            char shape[512];
            printf("%-56s %-8s %-24s %14llu %14llu\n", t->name, nx_dtype_name(t->dtype),
                   shape_text(t, shape, sizeof shape),
                   (unsigned long long)(f->data_offset + t->begin), (unsigned long long)t->bytes);
        }
        printf("\n");
    }
    uint64_t total = nx_st_data_bytes(st);
    printf("%zu tensors, %llu bytes (%.3f GiB) in %zu file(s)\n", nx_st_tensor_count(st),
           (unsigned long long)total, (double)total / (1024.0 * 1024.0 * 1024.0),
           nx_st_file_count(st));
}

static json_t *files_json(const nx_st_t *st)
{
    json_t *files = json_array();
    for (size_t i = 0; files && i < nx_st_file_count(st); i++) {
        const nx_st_file_t *f = nx_st_file_at(st, i);
        json_array_append_new(
            files, json_pack("{s:s, s:I, s:I, s:I, s:I, s:o}", "path", f->path, "file_bytes",
                             (json_int_t)f->file_bytes, "header_bytes",
                             (json_int_t)f->header_bytes, "data_offset",
                             (json_int_t)f->data_offset, "data_alignment",
                             (json_int_t)data_alignment(f->data_offset), "digest",
                             f->digest ? json_string(f->digest) : json_null()));
    }
    return files;
}

static json_t *tensors_json(const nx_st_t *st)
{
    json_t *tensors = json_array();
    for (size_t i = 0; tensors && i < nx_st_tensor_count(st); i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
        const nx_st_file_t *f = nx_st_file_at(st, t->file_index);
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        json_array_append_new(
            tensors, json_pack("{s:s, s:s, s:o, s:s, s:I, s:I, s:I}", "name", t->name, "dtype",
                               nx_dtype_name(t->dtype), "shape", shape, "file", f->path,
                               "offset", (json_int_t)(f->data_offset + t->begin), "begin",
                               (json_int_t)t->begin, "bytes", (json_int_t)t->bytes));
    }
    return tensors;
}

static int print_json(const nx_st_t *st, bool summary)
{
    json_t *root = json_pack("{s:s, s:s, s:o, s:o, s:I, s:I}", "path", nx_st_path(st), "format",
                             nx_st_is_gguf(st) ? "gguf" : "safetensors", "files", files_json(st),
                             "tensors", summary ? json_array() : tensors_json(st),
                             "tensor_count", (json_int_t)nx_st_tensor_count(st), "total_bytes",
                             (json_int_t)nx_st_data_bytes(st));
    if (root && nx_st_is_gguf(st)) {
        json_t *gguf = nx_ctl_gguf_json(st, summary);
        if (!gguf || json_object_set_new(root, "gguf", gguf) != 0) {
            json_decref(root);
            root = NULL;
        }
    }
    if (!root) {
        fprintf(stderr, "nexusctl: out of memory building the JSON output\n");
        return NX_CTL_EXIT_FAIL;
    }
    json_dumpf(root, stdout, JSON_INDENT(1));
    printf("\n");
    json_decref(root);
    return NX_CTL_EXIT_OK;
}

int nx_ctl_model_inspect(int argc, char **argv)
{
    inspect_args_t args = {0};
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    if (nx_ctl_store_opts_take("model inspect", &argc, argv, &store) != NX_CTL_EXIT_OK ||
        !parse_args(argc, argv, true, &args))
        return NX_CTL_EXIT_USAGE;
    int rc = nx_ctl_resolve_model("model inspect", &store, args.path, &model_path);
    if (rc != NX_CTL_EXIT_OK)
        return rc;
    args.path = model_path;
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(args.path, &err);
    if (!st) {
        fprintf(stderr, "nexusctl: inspect failed: %s\n", err.msg);
        free(model_path);
        return NX_CTL_EXIT_FAIL;
    }
    if (args.json)
        rc = print_json(st, args.summary);
    else
        print_text(st, args.summary);
    nx_st_destroy(&st);
    free(model_path);
    return rc;
}

/* The failure as one JSON line on stdout too, for scripts; the message stays on stderr. */
static void print_failure_json(const char *path, const nx_err_t *err)
{
    json_t *root = json_pack("{s:b, s:s?, s:s, s:s?}", "ok", 0, "path", path, "code",
                             nx_errname(err->code), "error", err->msg);
    if (root)
        json_dumpf(root, stdout, JSON_COMPACT);
    else
        printf("{\"ok\":false}");
    printf("\n");
    json_decref(root);
}

static int verify(const inspect_args_t *a);

int nx_ctl_model_verify(int argc, char **argv)
{
    inspect_args_t args = {0};
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    if (nx_ctl_store_opts_take("model verify", &argc, argv, &store) != NX_CTL_EXIT_OK ||
        !parse_args(argc, argv, false, &args))
        return NX_CTL_EXIT_USAGE;
    int code = nx_ctl_resolve_model("model verify", &store, args.path, &model_path);
    if (code != NX_CTL_EXIT_OK)
        return code;
    args.path = model_path;
    code = verify(&args);
    free(model_path);
    return code;
}

static int verify(const inspect_args_t *a)
{
    inspect_args_t args = *a;
    nx_err_t err = {0};
    size_t checked = 0;
    nx_st_t *st = nx_st_open(args.path, &err);
    int rc = st ? nx_st_verify_digest(st, &checked, &err) : err.code;
    if (rc != NX_OK) {
        fprintf(stderr, "nexusctl: verify failed: %s\n", err.msg);
        if (args.json)
            print_failure_json(args.path, &err);
        nx_st_destroy(&st);
        return NX_CTL_EXIT_FAIL;
    }
    if (args.json) {
        json_t *root = json_pack("{s:b, s:s, s:I, s:I, s:I, s:I}", "ok", 1, "path", args.path,
                                 "tensor_count", (json_int_t)nx_st_tensor_count(st),
                                 "total_bytes", (json_int_t)nx_st_data_bytes(st), "file_count",
                                 (json_int_t)nx_st_file_count(st), "digest_files",
                                 (json_int_t)checked);
        json_dumpf(root, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(root);
    } else {
        char digest_text[64] = "no digest recorded";
        if (checked)
            snprintf(digest_text, sizeof digest_text, "digest verified in %zu file(s)", checked);
        printf("OK %s: %zu tensors, %llu bytes in %zu file(s); %s\n", args.path,
               nx_st_tensor_count(st), (unsigned long long)nx_st_data_bytes(st),
               nx_st_file_count(st), digest_text);
    }
    nx_st_destroy(&st);
    return NX_CTL_EXIT_OK;
}
