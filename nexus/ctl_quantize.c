/* ctl_quantize.c — 'nexusctl model quantize IN OUT --type T': a safetensors model directory to
 * one GGUF file (agents/quantize.h), with a one-line summary or --json. Usage errors exit 2
 * with a one-line explanation, failures exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "quantize.h"

static const char help_text[] =
    "usage: nexusctl model quantize IN_DIR|IN.gguf OUT.gguf --type q8_0|q4_0|q4_k_m|f16|bf16|f32\n"
    "                               [--threads N] [--json] [--models DIR | --config FILE]\n"
    "\n"
    "Write a Hugging Face model directory (config.json, tokenizer.json, safetensors weights)\n"
    "as one GGUF file that llama.cpp loads and runs, tensor types chosen as llama-quantize\n"
    "chooses them: q4_k_m puts Q6_K on the output head and on attn_v / ffn_down in some layers,\n"
    "q4_0 puts Q6_K on the output head; rows that are not whole blocks fall back to Q5_0, Q8_0\n"
    "or F16 as llama.cpp's do. Norms and biases stay F32. The file is written atomically;\n"
    "folders missing above OUT.gguf are made once IN has been read.\n"
    "IN.gguf (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K or Q6_K) is requantized or dequantized\n"
    "the same way, its tensor names, order and metadata kept. IN may also be a name in the\n"
    "models folder or a hub name Org/Name[@REV] (README: Model names and the store).\n"
    "\n"
    "  --type T      the mix (required)\n"
    "  --threads N   quantizing threads (default: one per core)\n"
    "  --json        print the summary as JSON\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "nexusctl model quantize: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'nexusctl model quantize --help')\n");
    return NX_CTL_EXIT_USAGE;
}

typedef struct args {
    const char *in, *out, *type, *threads;
    bool json;
} args_t;

static int collect(int argc, char **argv, args_t *a)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(help_text, stdout);
            return NX_CTL_EXIT_OK;
        }
        const char **value = strcmp(arg, "--type") == 0      ? &a->type
                             : strcmp(arg, "--threads") == 0 ? &a->threads
                                                             : NULL;
        if (value) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", arg);
            *value = argv[++i];
        } else if (strcmp(arg, "--json") == 0) {
            a->json = true;
        } else if (arg[0] == '-' && arg[1]) {
            return usage_error("unknown option '%s'", arg);
        } else if (!a->in) {
            a->in = arg;
        } else if (!a->out) {
            a->out = arg;
        } else {
            return usage_error("one IN_DIR and one OUT.gguf only ('%s' is a third)", arg);
        }
    }
    return -1;
}

static int to_opts(const args_t *a, nx_quantize_opts_t *o)
{
    *o = (nx_quantize_opts_t){.in_dir = a->in, .out_path = a->out};
    if (!a->in || !a->out)
        return usage_error("%s", "needs IN_DIR and OUT.gguf");
    if (!a->type)
        return usage_error("%s", "--type is required (q8_0, q4_0, q4_k_m, f16, bf16 or f32)");
    if (!nx_qmix_parse(a->type, &o->mix))
        return usage_error("unknown --type '%s' (q8_0, q4_0, q4_k_m, f16, bf16 or f32)",
                           a->type);
    uint64_t threads = 0;
    if (a->threads && !nx_cli_parse_u64(a->threads, 1, 1024, &threads))
        return usage_error("--threads '%s' is not a whole number from 1 to 1024", a->threads);
    o->threads = (uint32_t)threads;
    return -1;
}

static void print_report(const nx_quantize_opts_t *o, const nx_quantize_report_t *r, bool json)
{
    char in[32], out[32], types[512] = "";
    size_t used = 0;
    for (int d = 0; d < NX_DT__COUNT; d++)
        if (r->by_dtype[d] && used < sizeof types)
            used += (size_t)snprintf(types + used, sizeof types - used, "%s%s: %u",
                                     used ? ", " : "", nx_dtype_name((nx_dtype_t)d),
                                     r->by_dtype[d]);
    if (json) {
        printf("{\"in\": \"%s\", \"out\": \"%s\", \"type\": \"%s\", \"tensors\": %zu, "
               "\"in_bytes\": %llu, \"out_bytes\": %llu, \"seconds\": %.3f, \"dtypes\": {",
               o->in_dir, o->out_path, nx_qmix_name(o->mix), r->tensors,
               (unsigned long long)r->in_bytes, (unsigned long long)r->out_bytes, r->seconds);
        bool first = true;
        for (int d = 0; d < NX_DT__COUNT; d++)
            if (r->by_dtype[d]) {
                printf("%s\"%s\": %u", first ? "" : ", ", nx_dtype_name((nx_dtype_t)d),
                       r->by_dtype[d]);
                first = false;
            }
        printf("}}\n");
        return;
    }
    nx_cli_format_bytes(r->in_bytes, in, sizeof in);
    nx_cli_format_bytes(r->out_bytes, out, sizeof out);
    printf("quantized %s -> %s (%s): %zu tensors, %s -> %s in %.1f s (%s)\n", o->in_dir,
           o->out_path, nx_qmix_name(o->mix), r->tensors, in, out, r->seconds, types);
}

int nx_ctl_model_quantize(int argc, char **argv)
{
    args_t args = {0};
    nx_quantize_opts_t opts;
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    if (nx_ctl_store_opts_take("model quantize", &argc, argv, &store) != NX_CTL_EXIT_OK)
        return NX_CTL_EXIT_USAGE;
    int code = collect(argc, argv, &args);
    if (code < 0)
        code = to_opts(&args, &opts);
    if (code >= 0)
        return code;
    code = nx_ctl_resolve_model("model quantize", &store, args.in, &model_path);
    if (code != NX_CTL_EXIT_OK)
        return code;
    opts.in_dir = model_path;
    nx_quantize_report_t report;
    nx_err_t err = {0};
    code = NX_CTL_EXIT_OK;
    if (nx_quantize_model(&opts, &report, &err) != NX_OK) {
        fprintf(stderr, "nexusctl model quantize: %s\n", err.msg);
        code = NX_CTL_EXIT_FAIL;
    } else {
        print_report(&opts, &report, args.json);
    }
    free(model_path);
    return code;
}
