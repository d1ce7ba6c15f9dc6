/* ctl_run.c — `nexusctl run MODEL_DIR "prompt"`: load a model through the loader into a pool
 * sized for its weights and one sequence's KV cache, build the engine, tokenize the prompt
 * (optionally through the model's chat template), generate and stream the text to stdout.
 *
 * The figures (load seconds, prefill and decode tokens/s) go to stderr as one line after the
 * text, so stdout holds exactly the generated text. With --json stdout holds one JSON object
 * and nothing else. Sampling values are checked before anything is loaded. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "ctl.h"
#include "grammar.h"
#include "nx_engine.h"

#define RUN_MAX_STOPS 16
#define RUN_MAX_STOP_IDS 32

typedef struct run_args {
    const char *model_dir;
    const char *prompt;
    const char *prompt_ids; /* "1,2,3" as given */
    int32_t *ids;           /* --prompt-ids parsed (malloc'ed), or NULL */
    size_t id_count;
    const char *system;
    nx_chat_kind_t template_kind; /* --template; AUTO: from tokenizer_config.json */
    bool chat, no_think, json;
    nx_device_kind_t device;
    uint32_t threads;
    uint32_t context;
    nx_sampling_t sampling;
    const char *stops[RUN_MAX_STOPS];
    const char *json_schema; /* --json-schema FILE */
    const char *gbnf;        /* --grammar FILE.gbnf */
    bool json_object;        /* --json-object */
    nx_gram_t *gram;         /* compiled from one of the three before the model loads */
} run_args_t;

static const char run_usage[] =
    "usage: nexusctl run MODEL \"prompt\" [--chat] [--template auto|chatml|llama3|raw]\n"
    "         [--system TEXT] [--no-think]\n"
    "         [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
    "         [--repetition-penalty R] [--seed N] [--stop TEXT]... [--device auto|cpu|cuda]\n"
    "         [--threads N] [--context N] [--json] [--prompt-ids 1,2,3]\n"
    "         [--json-schema FILE | --json-object | --grammar FILE.gbnf]\n"
    "         [--models DIR | --config FILE]\n"
    "  MODEL: a model folder or .gguf file, a name in the models folder, or Org/Name[@REV]\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "nexusctl run: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", run_usage);
    return NX_CTL_EXIT_USAGE;
}

/* A whole finite number in [min, max]; false otherwise. */
static bool parse_float(const char *text, double min, double max, float *out)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max)
        return false;
    *out = (float)v;
    return true;
}

/* Options with a value: returns false (after printing a usage error into *rc) on a bad one. */
static bool parse_value_option(const char *opt, const char *val, run_args_t *a, int *rc)
{
    nx_sampling_t *s = &a->sampling;
    uint64_t n;
    const char *shown = val ? val : "";
    if (strcmp(opt, "--max-tokens") == 0) {
        if (!nx_cli_parse_u64(val, 1, UINT32_MAX, &n))
            goto bad_count;
        s->max_tokens = (uint32_t)n;
    } else if (strcmp(opt, "--top-k") == 0) {
        if (!nx_cli_parse_u64(val, 0, UINT32_MAX, &n))
            goto bad_count;
        s->top_k = (uint32_t)n;
    } else if (strcmp(opt, "--seed") == 0) {
        if (!nx_cli_parse_u64(val, 0, UINT64_MAX, &n))
            goto bad_count;
        s->seed = n;
    } else if (strcmp(opt, "--threads") == 0) {
        if (!nx_cli_parse_u64(val, 1, 256, &n))
            goto bad_count;
        a->threads = (uint32_t)n;
    } else if (strcmp(opt, "--context") == 0) {
        if (!nx_cli_parse_u64(val, 1, 1u << 24, &n))
            goto bad_count;
        a->context = (uint32_t)n;
    } else if (strcmp(opt, "--temperature") == 0) {
        if (!parse_float(val, 0, 1e6, &s->temperature))
            goto bad;
    } else if (strcmp(opt, "--top-p") == 0) {
        if (!parse_float(val, 0, 1, &s->top_p) || s->top_p <= 0)
            goto bad;
    } else if (strcmp(opt, "--min-p") == 0) {
        if (!parse_float(val, 0, 1, &s->min_p) || s->min_p >= 1)
            goto bad;
    } else if (strcmp(opt, "--repetition-penalty") == 0) {
        if (!parse_float(val, 0, 1e6, &s->repetition_penalty) || s->repetition_penalty <= 0)
            goto bad;
    } else if (strcmp(opt, "--device") == 0) {
        if (!val || !nx_device_parse(val, &a->device)) {
            *rc = usage_error("--device takes auto, cpu or cuda, not '%s'", shown);
            return false;
        }
    } else if (strcmp(opt, "--stop") == 0) {
        if (!val || !*val) {
            *rc = usage_error("--stop takes a non-empty text");
            return false;
        }
        if (s->stop_count == RUN_MAX_STOPS) {
            *rc = usage_error("--stop is allowed at most %d times", RUN_MAX_STOPS);
            return false;
        }
        a->stops[s->stop_count++] = val;
    } else if (strcmp(opt, "--system") == 0) {
        if (!val) {
            *rc = usage_error("--system takes a text");
            return false;
        }
        a->system = val;
    } else if (strcmp(opt, "--template") == 0) {
        if (!val || !nx_chat_kind_parse(val, &a->template_kind)) {
            *rc = usage_error("--template takes auto, chatml, llama3 or raw, not '%s'", shown);
            return false;
        }
        a->chat = true; /* a template is a chat rendering */
    } else if (strcmp(opt, "--json-schema") == 0 || strcmp(opt, "--grammar") == 0) {
        if (!val || !*val) {
            *rc = usage_error("%s takes a file", opt);
            return false;
        }
        *(opt[2] == 'j' ? &a->json_schema : &a->gbnf) = val;
    } else {
        assert(strcmp(opt, "--prompt-ids") == 0);
        if (!val || !*val) {
            *rc = usage_error("--prompt-ids takes ids such as 1,2,3");
            return false;
        }
        a->prompt_ids = val;
    }
    return true;
bad_count:
    *rc = usage_error("%s takes a whole number in its range, not '%s'", opt, shown);
    return false;
bad:
    *rc = usage_error("%s: '%s' is out of range (temperature >= 0, top-p in (0, 1], "
                      "min-p in [0, 1), repetition-penalty > 0)", opt, shown);
    return false;
}

static const char *const value_options[] = {
    "--max-tokens", "--top-k", "--seed", "--threads", "--context", "--temperature", "--top-p",
    "--min-p", "--repetition-penalty", "--device", "--stop", "--system", "--prompt-ids",
    "--template", "--json-schema", "--grammar"};

static bool takes_value(const char *opt)
{
    for (size_t i = 0; i < sizeof value_options / sizeof value_options[0]; i++)
        if (strcmp(opt, value_options[i]) == 0)
            return true;
    return false;
}

/* "1,2,3" -> ids (malloc'ed); false on anything but comma-separated whole numbers. */
static bool parse_ids(const char *text, int32_t **ids_out, size_t *count_out)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids)
        return false;
    size_t count = 0;
    const char *p = text;
    for (;;) {
        char digits[16];
        size_t len = strcspn(p, ",");
        uint64_t v;
        if (len == 0 || len >= sizeof digits)
            break;
        memcpy(digits, p, len);
        digits[len] = '\0';
        if (!nx_cli_parse_u64(digits, 0, INT32_MAX, &v))
            break;
        ids[count++] = (int32_t)v;
        if (p[len] == '\0') {
            *ids_out = ids;
            *count_out = count;
            return true;
        }
        p += len + 1;
    }
    free(ids);
    return false;
}

/* The whole file (NUL-terminated, malloc'ed), or NULL with errno set. */
static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (ferror(f) || feof(f))
            break;
        char *p = len + 1 >= cap ? realloc(buf, cap *= 2) : buf;
        if (!p)
            free(buf);
        buf = p;
    }
    int failed = !buf || ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        errno = errno ? errno : EIO;
        return NULL;
    }
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

/* --json-schema, --json-object or --grammar, compiled before anything is loaded: a schema's
 * error names the keyword and its JSON pointer, a GBNF grammar's FILE:LINE:COL. */
static int compile_grammar(run_args_t *a)
{
    int given = (a->json_schema != NULL) + (a->gbnf != NULL) + a->json_object;
    if (given == 0)
        return NX_CTL_EXIT_OK;
    if (given > 1)
        return usage_error("give one of --json-schema, --json-object and --grammar");
    nx_err_t err = {0};
    if (a->json_object) {
        a->gram = nx_gram_json_object(&err);
        return a->gram ? NX_CTL_EXIT_OK : usage_error("--json-object: %s", err.msg);
    }
    const char *path = a->json_schema ? a->json_schema : a->gbnf;
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text)
        return usage_error("cannot read '%s': %s", path, strerror(errno));
    a->gram = a->json_schema ? nx_gram_from_json_schema(text, len, NULL, &err)
                             : nx_gram_from_gbnf(text, len, &err);
    free(text);
    if (!a->gram)
        return usage_error("%s:%s%s", path, a->gbnf ? "" : " ", err.msg);
    return NX_CTL_EXIT_OK;
}

static int parse_args(int argc, char **argv, run_args_t *a)
{
    int rc = NX_CTL_EXIT_OK;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--chat") == 0) {
            a->chat = true;
        } else if (strcmp(opt, "--no-think") == 0) {
            a->no_think = true;
        } else if (strcmp(opt, "--json") == 0) {
            a->json = true;
        } else if (strcmp(opt, "--json-object") == 0) {
            a->json_object = true;
        } else if (takes_value(opt)) {
            if (!parse_value_option(opt, i + 1 < argc ? argv[i + 1] : NULL, a, &rc))
                return rc;
            i++;
        } else if (opt[0] == '-' && opt[1] != '\0') {
            return usage_error("unknown option '%s'", opt);
        } else if (!a->model_dir) {
            a->model_dir = opt;
        } else if (!a->prompt) {
            a->prompt = opt;
        } else {
            return usage_error("one MODEL_DIR and one prompt only; '%s' is extra", opt);
        }
    }
    a->sampling.stop = a->stops;
    if (!a->model_dir)
        return usage_error("MODEL_DIR is missing");
    if (!a->prompt == !a->prompt_ids)
        return usage_error("give either a prompt or --prompt-ids, exactly one of them");
    if (a->prompt_ids && a->chat)
        return usage_error("--prompt-ids are used as they are; --chat needs a text prompt");
    if ((a->system || a->no_think) && !a->chat)
        return usage_error("--system and --no-think apply to --chat only");
    if (a->prompt_ids && !parse_ids(a->prompt_ids, &a->ids, &a->id_count))
        return usage_error("--prompt-ids takes whole numbers such as 1,2,3, not '%s'",
                           a->prompt_ids);
    nx_err_t err = {0};
    if (nx_sampling_validate(&a->sampling, &err) != NX_OK)
        return usage_error("%s", err.msg);
    return compile_grammar(a);
}

/* ---- the run ------------------------------------------------------------------------------- */

typedef struct run_ctx {
    nx_model_config_t config;
    nx_tokenizer_t *tok;
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
    nx_seq_t *seq;
    nx_load_stats_t load_stats;
    uint32_t context; /* tokens the sequence holds */
} run_ctx_t;

/* Weights (a 4 KiB-aligned start per file) + one sequence's K and V in fp32 + slack for the
 * engine's own pool allocations and chunk rounding (32 MiB chunks on CUDA). */
static uint64_t pool_bytes_for(const run_args_t *a, const run_ctx_t *c, nx_err_t *err)
{
    nx_st_t *st = nx_st_open(a->model_dir, err);
    if (!st)
        return 0;
    uint64_t weights = nx_st_data_bytes(st) + 4096ull * (nx_st_file_count(st) + 1);
    nx_st_destroy(&st);
    const nx_model_config_t *cfg = &c->config;
    uint64_t kv = nx_kv_bytes(cfg, a->device, c->context);
    const uint64_t chunk = 32ull << 20;
    return (weights + chunk - 1) / chunk * chunk + (kv + chunk - 1) / chunk * chunk + 4 * chunk;
}

static int open_model(const run_args_t *a, run_ctx_t *c, nx_err_t *err)
{
    struct stat sb;
    if (stat(a->model_dir, &sb) != 0)
        return nx_err_set(err, NX_ENOTFOUND, "model '%s': %s", a->model_dir,
                          strerror(errno));
    if (!S_ISDIR(sb.st_mode) && !nx_path_is_gguf(a->model_dir))
        return nx_err_set(err, NX_EINVAL, "'%s' is neither a model directory nor a GGUF file",
                          a->model_dir);
    int rc = nx_config_load(a->model_dir, &c->config, err);
    if (rc != NX_OK)
        return rc;
    c->tok = nx_tokenizer_load(a->model_dir, err);
    if (!c->tok)
        return err->code;
    c->context = a->context ? a->context
                 : c->config.max_position < 4096 ? c->config.max_position : 4096;
    uint64_t pool_bytes = pool_bytes_for(a, c, err);
    if (!pool_bytes)
        return err->code;
    c->pool = nx_pool_new(&(nx_pool_opts_t){.device = a->device, .bytes = pool_bytes}, err);
    if (!c->pool)
        return err->code;
    c->loader = nx_loader_new(c->pool, NULL, err);
    if (!c->loader)
        return err->code;
    c->model = nx_loader_load(c->loader, a->model_dir, NULL, &c->load_stats, err);
    if (!c->model)
        return err->code;
    nx_engine_opts_t eopts = {.threads = a->threads, .max_context = c->context};
    c->engine = nx_engine_new(a->model_dir, c->model, c->pool, &eopts, err);
    if (!c->engine)
        return err->code;
    c->seq = nx_seq_new(c->engine, c->context, false, err);
    return c->seq ? NX_OK : err->code;
}

static void close_model(run_ctx_t *c)
{
    if (c->engine)
        nx_seq_destroy(c->engine, &c->seq);
    nx_engine_destroy(&c->engine);
    if (c->loader)
        nx_loader_unload(c->loader, &c->model, false);
    nx_loader_destroy(&c->loader);
    nx_pool_destroy(&c->pool);
    nx_tokenizer_destroy(&c->tok);
}

/* The prompt's ids: --prompt-ids as given, the text through the chat template with --chat,
 * else the text as is. */
static int prompt_ids(const run_args_t *a, const run_ctx_t *c, int32_t **ids, size_t *count,
                      nx_err_t *err)
{
    if (a->ids) {
        *ids = malloc(a->id_count * sizeof **ids);
        if (!*ids)
            return nx_err_set(err, NX_ENOMEM, "no memory for %zu prompt ids", a->id_count);
        memcpy(*ids, a->ids, a->id_count * sizeof **ids);
        *count = a->id_count;
        return NX_OK;
    }
    if (!a->chat)
        return nx_tokenizer_encode(c->tok, a->prompt, strlen(a->prompt), ids, count, err);
    nx_chat_msg_t msgs[2];
    size_t n = 0;
    if (a->system)
        msgs[n++] = (nx_chat_msg_t){"system", a->system};
    msgs[n++] = (nx_chat_msg_t){"user", a->prompt};
    nx_chat_opts_t opts = {.kind = a->template_kind, .thinking = a->no_think ? 0 : -1,
                           .add_generation_prompt = true};
    char *text = NULL;
    int rc = nx_chat_render(c->tok, &opts, msgs, n, &text, err);
    if (rc == NX_OK)
        rc = nx_tokenizer_encode(c->tok, text, strlen(text), ids, count, err);
    free(text);
    return rc;
}

/* The config's eos ids, plus the template's end-of-turn ids with --chat; no duplicates. */
static size_t stop_ids(const run_args_t *a, const run_ctx_t *c, int32_t *out, size_t cap)
{
    int32_t found[RUN_MAX_STOP_IDS];
    size_t n = 0, count = 0;
    for (uint32_t i = 0; i < c->config.eos_count && n < RUN_MAX_STOP_IDS; i++)
        found[n++] = c->config.eos_ids[i];
    if (a->chat)
        n += nx_chat_stop_ids(c->tok,
                              a->template_kind == NX_CHAT_AUTO ? nx_chat_detect(c->tok)
                                                               : a->template_kind,
                              found + n, RUN_MAX_STOP_IDS - n);
    for (size_t i = 0; i < n && count < cap; i++) {
        bool dup = false;
        for (size_t j = 0; j < count; j++)
            dup = dup || out[j] == found[i];
        if (!dup && found[i] >= 0)
            out[count++] = found[i];
    }
    return count;
}

static int emit_stdout(void *user, const char *text, size_t len)
{
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return ferror(stdout) ? 1 : 0;
}

typedef struct run_figures {
    double load_s, prefill_s, decode_s, prefill_tok_s, decode_tok_s;
    uint32_t prompt_tokens, decode_steps;
} run_figures_t;

static void print_json(const nx_gen_result_t *r, const run_figures_t *f)
{
    json_t *o = json_object(), *ids = json_array(), *t = json_object();
    for (size_t i = 0; i < r->count; i++)
        json_array_append_new(ids, json_integer(r->ids[i]));
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "text", json_stringn(r->text, strlen(r->text)));
    json_object_set_new(t, "load_s", json_real(f->load_s));
    json_object_set_new(t, "prefill_s", json_real(f->prefill_s));
    json_object_set_new(t, "decode_s", json_real(f->decode_s));
    json_object_set_new(t, "prefill_tok_s", json_real(f->prefill_tok_s));
    json_object_set_new(t, "decode_tok_s", json_real(f->decode_tok_s));
    json_object_set_new(t, "prompt_tokens", json_integer(f->prompt_tokens));
    json_object_set_new(t, "generated_tokens", json_integer((json_int_t)r->count));
    json_object_set_new(o, "timings", t);
    json_object_set_new(o, "stop_reason", json_string(r->stop_reason));
    char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    if (text)
        puts(text);
    free(text);
    json_decref(o);
}

int nx_ctl_run(int argc, char **argv)
{
    run_args_t a = {.device = NX_DEVICE_AUTO, .sampling = nx_sampling_default()};
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    int rc = nx_ctl_store_opts_take("run", &argc, argv, &store);
    if (rc == NX_CTL_EXIT_OK)
        rc = parse_args(argc, argv, &a);
    if (rc == NX_CTL_EXIT_OK)
        rc = nx_ctl_resolve_model("run", &store, a.model_dir, &model_path);
    if (rc != NX_CTL_EXIT_OK) {
        free(a.ids);
        nx_gram_destroy(&a.gram);
        return rc;
    }
    a.model_dir = model_path;
    nx_err_t err = {0};
    run_ctx_t c = {0};
    int32_t *ids = NULL;
    size_t id_count = 0;
    nx_gen_result_t result = {0};
    nx_gram_vocab_t *gvocab = NULL;
    int exit_code = NX_CTL_EXIT_FAIL;

    if (open_model(&a, &c, &err) != NX_OK || prompt_ids(&a, &c, &ids, &id_count, &err) != NX_OK)
        goto out;
    if (id_count > nx_seq_capacity(c.seq)) {
        nx_err_set(&err, NX_EINVAL, "the prompt has %zu tokens, more than the context of %u "
                   "(raise --context)", id_count, nx_seq_capacity(c.seq));
        goto out;
    }
    int32_t stops[RUN_MAX_STOP_IDS];
    size_t stop_count = stop_ids(&a, &c, stops, RUN_MAX_STOP_IDS);
    nx_gen_grammar_t spec = {.gram = a.gram};
    if (a.gram && !(gvocab = nx_gram_vocab_from_tokenizer(c.tok, stops, stop_count, &err)))
        goto out;
    spec.vocab = gvocab;
    if (nx_generate_grammar(c.engine, c.seq, c.tok, ids, id_count, &a.sampling, stops,
                            stop_count, a.gram ? &spec : NULL, a.json ? NULL : emit_stdout,
                            NULL, &result, &err) != NX_OK)
        goto out;
    run_figures_t f = {.load_s = c.load_stats.seconds, .prefill_s = result.prefill_seconds,
                       .decode_s = result.decode_seconds, .prompt_tokens = result.prompt_tokens,
                       .decode_steps = nx_seq_len(c.seq) - result.prompt_tokens};
    f.prefill_tok_s = f.prefill_s > 0 ? f.prompt_tokens / f.prefill_s : 0;
    f.decode_tok_s = f.decode_s > 0 && f.decode_steps ? f.decode_steps / f.decode_s : 0;
    if (a.json) {
        print_json(&result, &f);
    } else {
        printf("\n");
        fflush(stdout);
        fprintf(stderr, "[%s, %s] load %.3f s | prefill %u tokens %.1f tok/s | decode %u "
                "tokens %.1f tok/s | stop: %s\n", nx_engine_backend_name(c.engine),
                nx_arch_name(c.config.arch), f.load_s, f.prompt_tokens, f.prefill_tok_s,
                f.decode_steps, f.decode_tok_s, result.stop_reason);
    }
    exit_code = NX_CTL_EXIT_OK;
out:
    if (exit_code != NX_CTL_EXIT_OK)
        fprintf(stderr, "nexusctl run: %s\n", err.msg[0] ? err.msg : nx_strerror(err.code));
    nx_gen_result_free(&result);
    nx_gram_vocab_destroy(&gvocab);
    nx_gram_destroy(&a.gram);
    free(ids);
    free(a.ids);
    close_model(&c);
    free(model_path);
    return exit_code;
}
