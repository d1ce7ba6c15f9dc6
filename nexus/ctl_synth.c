/* ctl_synth.c — 'nexusctl model synth': parse the options, call nx_synth_model, print one
 * summary line. Usage errors exit 2 with a one-line explanation, failures exit 1. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "quantize.h"
#include "synth.h"

static const char help_text[] =
    "usage: nexusctl model synth --arch qwen3|qwen2|llama --preset tiny|small|0.6b|4b|8b\n"
    "                            --out DIR|FILE.gguf [--seed N] [--dtype D] [--shards N]\n"
    "                            [--tokenizer DIR]\n"
    "\n"
    "Write a Hugging Face style model directory with random weights: config.json,\n"
    "generation_config.json, model.safetensors (or N shards + model.safetensors.index.json),\n"
    "tokenizer.json and tokenizer_config.json. DIR must not exist or be empty.\n"
    "With --out FILE.gguf, the same model as one GGUF file instead, written as\n"
    "'nexusctl model quantize' writes it (--dtype picks the mix).\n"
    "\n"
    "presets (the real models whose shapes they copy):\n"
    "  arch   tiny                 0.6b           4b            8b\n"
    "  qwen3  64 hidden, 2 layers  Qwen3-0.6B     Qwen3-4B      Qwen3-8B\n"
    "  qwen2  64 hidden, 2 layers  Qwen2.5-0.5B   Qwen2.5-3B    Qwen2.5-7B\n"
    "  llama  64 hidden, 2 layers  Llama-3.2-1B   Llama-3.2-3B  Llama-3.1-8B\n"
    "tiny: 4 heads, 2 KV heads, intermediate 128, head_dim 32 (qwen3) or 16, vocab = the\n"
    "tokenizer's size rounded up to 64; a few hundred KB. small: tiny with hidden 256,\n"
    "intermediate 512 and head_dim 128 (qwen3) or 64, so K-quants cover every matrix.\n"
    "\n"
    "  --seed N         weights are a function of the seed and the tensor name (default 0)\n"
    "  --dtype D        bf16 (default), f16 or f32; with FILE.gguf also q8_0, q4_0, q4_k_m\n"
    "  --shards N       1 (default): model.safetensors; N > 1: split by bytes in tensor order\n"
    "  --tokenizer DIR  copy DIR's tokenizer.json (+ tokenizer_config.json,\n"
    "                   generation_config.json) instead of the built-in byte-level BPE\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "nexusctl model synth: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'nexusctl model synth --help')\n");
    return NX_CTL_EXIT_USAGE;
}

static bool is_gguf_path(const char *path)
{
    size_t len = path ? strlen(path) : 0;
    return len > 5 && strcmp(path + len - 5, ".gguf") == 0;
}

static bool parse_dtype(const char *name, nx_dtype_t *out)
{
    static const struct {
        const char *name;
        nx_dtype_t dtype;
    } table[] = {{"bf16", NX_DT_BF16}, {"f16", NX_DT_F16}, {"f32", NX_DT_F32}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(name, table[i].name) == 0)
            return *out = table[i].dtype, true;
    return false;
}

typedef struct args {
    const char *arch, *preset, *out, *seed, *dtype, *shards, *tokenizer;
} args_t;

/* "--name VALUE" or "--name=VALUE" into the matching field; returns the exit code or -1. */
static int collect(int argc, char **argv, args_t *a)
{
    static const char *const names[] = {"--arch", "--preset", "--out", "--seed",
                                        "--dtype", "--shards", "--tokenizer"};
    const char **fields[] = {&a->arch,  &a->preset, &a->out,      &a->seed,
                             &a->dtype, &a->shards, &a->tokenizer};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help_text, stdout);
            return NX_CTL_EXIT_OK;
        }
        size_t k = 0;
        for (; k < sizeof names / sizeof names[0]; k++) {
            size_t len = strlen(names[k]);
            if (strncmp(argv[i], names[k], len) != 0)
                continue;
            if (argv[i][len] == '=') {
                *fields[k] = argv[i] + len + 1;
                break;
            }
            if (argv[i][len] == '\0') {
                if (i + 1 >= argc)
                    return usage_error("%s needs a value", names[k]);
                *fields[k] = argv[++i];
                break;
            }
        }
        if (k == sizeof names / sizeof names[0])
            return usage_error("unknown argument '%s'", argv[i]);
    }
    return -1;
}

static int to_opts(const args_t *a, nx_synth_opts_t *o)
{
    uint64_t v;
    *o = (nx_synth_opts_t){.dtype = NX_DT_BF16, .shards = 1, .tokenizer_dir = a->tokenizer};
    if (!a->arch)
        return usage_error("%s", "--arch is required (qwen3, qwen2 or llama)");
    if (!nx_synth_arch_parse(a->arch, &o->arch))
        return usage_error("unknown --arch '%s' (qwen3, qwen2 or llama)", a->arch);
    if (!a->preset)
        return usage_error("%s", "--preset is required (tiny, small, 0.6b, 4b or 8b)");
    if (!nx_synth_preset_parse(a->preset, &o->preset))
        return usage_error("unknown --preset '%s' (tiny, small, 0.6b, 4b or 8b)", a->preset);
    if (!a->out || !a->out[0])
        return usage_error("%s", "--out DIR is required");
    o->out_dir = a->out;
    nx_qmix_t mix;
    if (is_gguf_path(a->out)) {
        if (a->dtype && !nx_qmix_parse(a->dtype, &mix))
            return usage_error("unknown --dtype '%s' (bf16, f16, f32, q8_0, q4_0 or q4_k_m)",
                               a->dtype);
    } else if (a->dtype && !parse_dtype(a->dtype, &o->dtype)) {
        return usage_error(nx_qmix_parse(a->dtype, &mix)
                               ? "--dtype '%s' needs --out FILE.gguf (safetensors holds bf16, "
                                 "f16 or f32)"
                               : "unknown --dtype '%s' (bf16, f16 or f32)",
                           a->dtype);
    }
    if (a->seed) {
        if (!nx_cli_parse_u64(a->seed, 0, UINT64_MAX, &v))
            return usage_error("--seed '%s' is not a whole number >= 0", a->seed);
        o->seed = v;
    }
    size_t tensors = nx_synth_tensor_count(o->arch, o->preset);
    if (a->shards) {
        if (!nx_cli_parse_u64(a->shards, 1, tensors, &v)) {
            fprintf(stderr,
                    "nexusctl model synth: --shards '%s' must be a whole number from 1 to %zu "
                    "(the tensor count of %s %s)\n",
                    a->shards, tensors, a->arch, a->preset);
            return NX_CTL_EXIT_USAGE;
        }
        o->shards = (uint32_t)v;
    }
    if (a->tokenizer && !a->tokenizer[0])
        return usage_error("%s", "--tokenizer needs a directory");
    return -1;
}

int nx_ctl_model_synth(int argc, char **argv)
{
    args_t args = {0};
    nx_synth_opts_t opts;
    int code = collect(argc, argv, &args);
    if (code < 0)
        code = to_opts(&args, &opts);
    if (code >= 0)
        return code;
    nx_synth_report_t report;
    nx_err_t err = {0};
    nx_qmix_t mix = NX_QMIX_BF16;
    bool gguf = is_gguf_path(args.out);
    if (gguf && args.dtype)
        nx_qmix_parse(args.dtype, &mix); /* checked by to_opts */
    int rc = gguf ? nx_synth_gguf(&opts, (int)mix, args.out, &report, &err)
                  : nx_synth_model(&opts, &report, &err);
    if (rc != NX_OK) {
        fprintf(stderr, "nexusctl model synth: %s\n", err.msg[0] ? err.msg : nx_strerror(rc));
        return rc == NX_EINVAL ? NX_CTL_EXIT_USAGE : NX_CTL_EXIT_FAIL;
    }
    char size[32];
    if (gguf) {
        printf("wrote %s: %s %s %s, %zu tensors, %.1f s\n", args.out, args.arch, args.preset,
               nx_qmix_name(mix), report.tensor_count, report.seconds);
        return NX_CTL_EXIT_OK;
    }
    nx_cli_format_bytes(report.weight_bytes, size, sizeof size);
    printf("wrote %s: %s %s %s, %zu tensors, %s in %u file%s, %.1f s (%.2f GB/s)\n",
           opts.out_dir, args.arch, args.preset, args.dtype ? args.dtype : "bf16",
           report.tensor_count, size, report.files, report.files == 1 ? "" : "s",
           report.seconds,
           report.seconds > 0 ? (double)report.weight_bytes / 1e9 / report.seconds : 0.0);
    return NX_CTL_EXIT_OK;
}
