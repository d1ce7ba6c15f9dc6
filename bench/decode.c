/* decode.c — the engine's speed against the machine's memory bandwidth: prefill tokens/s (one
 * batched prompt) and decode tokens/s at batch 1 and at several concurrent sequences stepped
 * together (continuous batching through nx_engine_step), each beside the fraction of memory
 * bandwidth it uses: weight bytes read per step / step time / a multi-threaded read bandwidth
 * measured in the same run over a buffer far larger than the caches (1 GiB or 4 x L3).
 *
 *   build/bench/decode MODEL_DIR [--threads N] [--prompt 128] [--tokens 64] [--batches 1,8,32]
 *                     [--device auto|cpu|cuda]
 *                      [--decode-prompt 16] [--hugepages on|off] [--json FILE] [--serve]
 *
 * --hugepages on: once loaded, the weights' region is backed by 2 MiB pages
 * (nx_region_collapse, untimed; its seconds are printed) and the bandwidth buffer is too, so
 * the bound beside each figure is for the same pages; off (the default, as nexusd, see
 * NEXUS_HUGEPAGES in nexus/residency.c): both stay in 4 KiB pages.
 *
 * Every step ends with a pick per sequence through the engine, as nexusd steps (on CUDA the
 * GPU picks and only ids come back): greedy, and once more at batch 1 with sampling (T 0.8,
 * top-k 50, top-p 0.9, repetition penalty 1.1: the "sampled" row, to show what the sampling
 * filters cost beside greedy).
 *
 * --serve: load, warm up, then run bursts on demand instead of the figures above (see
 * serve(), used by bench/quant_pair.py to interleave our bursts with llama.cpp's).
 *
 * Before the figures, each runs once untimed (the prompt, 4 steps of each batch), as
 * bench/llama_bench.mjs warms llama.cpp up.
 *
 * Decode sequences start from a short prompt (--decode-prompt, untimed) so that large batches
 * do not spend the run in prefill; the KV cache's reads are not counted in the bytes, so the
 * fraction is a lower bound of what the step reads.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <jansson.h>

#include "bandwidth.h"
#include "bench_pool.h"
#include "ctl.h"
#include "nx_engine.h"

#define MAX_BATCHES 8

typedef struct bench_args {
    const char *model_dir;
    uint32_t threads;      /* 0: one per core */
    uint32_t prompt;       /* prefill prompt tokens */
    uint32_t tokens;       /* decode steps per batch */
    uint32_t decode_prompt;
    uint32_t batches[MAX_BATCHES];
    size_t batch_count;
    const char *json_path;
    nx_device_kind_t device; /* --device; auto by default */
    bool hugepages;          /* --hugepages; off by default */
    bool serve;              /* --serve: bursts on demand (serve()) */
} bench_args_t;

/* ---- arguments ----------------------------------------------------------------------------- */

static int usage(const char *what)
{
    fprintf(stderr, "decode: %s\nusage: decode MODEL_DIR [--threads N] [--prompt 128] "
            "[--tokens 64] [--batches 1,8,32] [--decode-prompt 16] [--device auto|cpu|cuda] "
            "[--hugepages on|off] [--json FILE] [--serve]\n", what);
    return 2;
}

static bool parse_batches(const char *text, bench_args_t *a)
{
    a->batch_count = 0;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", text);
    for (char *save, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t n;
        if (a->batch_count == MAX_BATCHES || !nx_cli_parse_u64(tok, 1, 1024, &n))
            return false;
        a->batches[a->batch_count++] = (uint32_t)n;
    }
    return a->batch_count > 0;
}

static int parse_args(int argc, char **argv, bench_args_t *a)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        bool number = strcmp(opt, "--threads") == 0 || strcmp(opt, "--prompt") == 0 ||
                      strcmp(opt, "--tokens") == 0 || strcmp(opt, "--decode-prompt") == 0;
        if (number && !nx_cli_parse_u64(val, 1, 1u << 20, &n))
            return usage("a number option needs a positive whole number");
        if (strcmp(opt, "--threads") == 0)
            a->threads = n > 256 ? 256 : (uint32_t)n;
        else if (strcmp(opt, "--prompt") == 0)
            a->prompt = (uint32_t)n;
        else if (strcmp(opt, "--tokens") == 0)
            a->tokens = (uint32_t)n;
        else if (strcmp(opt, "--decode-prompt") == 0)
            a->decode_prompt = (uint32_t)n;
        else if (strcmp(opt, "--batches") == 0 && val && parse_batches(val, a))
            ;
        else if (strcmp(opt, "--json") == 0 && val)
            a->json_path = val;
        else if (strcmp(opt, "--hugepages") == 0 && val &&
                 (strcmp(val, "on") == 0 || strcmp(val, "off") == 0))
            a->hugepages = strcmp(val, "on") == 0;
        else if (strcmp(opt, "--device") == 0 && val && nx_device_parse(val, &a->device))
            ;
        else if (strcmp(opt, "--serve") == 0) {
            a->serve = true;
            continue; /* a flag: no value */
        } else if (opt[0] != '-' && !a->model_dir) {
            a->model_dir = opt;
            continue;
        } else
            return usage("unknown option or bad value");
        i++;
    }
    return a->model_dir ? 0 : usage("MODEL_DIR is missing");
}

/* ---- the engine ---------------------------------------------------------------------------- */

typedef struct bench_ctx {
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
    uint64_t weight_bytes_per_step; /* every tensor but an untied embedding table */
    uint64_t huge_bytes;            /* of the weights' region, after --hugepages on */
    double collapse_seconds;
} bench_ctx_t;

static uint64_t weights_read_per_step(const nx_model_t *model)
{
    uint64_t bytes = nx_model_bytes(model);
    /* Hugging Face's names or llama.cpp's (GGUF) */
    const nx_model_tensor_t *embed = nx_model_find(model, "model.embed_tokens.weight");
    const nx_model_tensor_t *head = nx_model_find(model, "lm_head.weight");
    if (!embed) {
        embed = nx_model_find(model, "token_embd.weight");
        head = nx_model_find(model, "output.weight");
    }
    if (embed && head)
        bytes -= embed->bytes; /* only the prompt's rows of it are gathered */
    return bytes;
}

static int open_engine(const bench_args_t *a, bench_ctx_t *c, nx_err_t *err)
{
    uint32_t max_batch = 1;
    for (size_t i = 0; i < a->batch_count; i++)
        max_batch = a->batches[i] > max_batch ? a->batches[i] : max_batch;
    uint32_t context = (a->prompt > a->decode_prompt ? a->prompt : a->decode_prompt) + a->tokens;
    nx_model_config_t cfg;
    uint64_t pool_bytes = 0;
    int rc = nx_bench_pool_bytes(a->model_dir, a->device, context, max_batch, &cfg, &pool_bytes,
                                 err);
    if (rc != NX_OK)
        return rc;
    c->pool = nx_pool_new(&(nx_pool_opts_t){.device = a->device, .bytes = pool_bytes}, err);
    if (!c->pool)
        return err->code;
    if (!(c->loader = nx_loader_new(c->pool, NULL, err)))
        return err->code;
    if (!(c->model = nx_loader_load(c->loader, a->model_dir, NULL, NULL, err)))
        return err->code;
    if (a->hugepages) {
        uint64_t t0 = nx_now_ns();
        c->huge_bytes = nx_region_collapse(nx_model_region(c->model), 0, UINT64_MAX);
        c->collapse_seconds = (double)(nx_now_ns() - t0) / 1e9;
    }
    nx_engine_opts_t eopts = {.threads = a->threads, .max_context = context};
    if (!(c->engine = nx_engine_new(a->model_dir, c->model, c->pool, &eopts, err)))
        return err->code;
    c->weight_bytes_per_step = weights_read_per_step(c->model);
    return NX_OK;
}

static void close_engine(bench_ctx_t *c)
{
    nx_engine_destroy(&c->engine);
    if (c->loader)
        nx_loader_unload(c->loader, &c->model, false);
    nx_loader_destroy(&c->loader);
    nx_pool_destroy(&c->pool);
}

/* Deterministic prompt ids in [0, vocab). */
static void prompt_ids(int32_t *ids, uint32_t n, uint32_t vocab, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((seed >> 33) % vocab);
    }
}

/* Every step ends with a pick per sequence through the engine (nx_seq_pick_next), as nexusd
 * does: on CUDA it runs on the GPU and only the ids come back. The history is the sequence's
 * ids so far (the repetition penalty's input). */
static int ask_picks(nx_seq_t **seqs, nx_sampler_t **samplers, uint32_t nseq,
                     int32_t *const *history, size_t len, nx_err_t *err)
{
    int rc = NX_OK;
    for (uint32_t s = 0; rc == NX_OK && s < nseq; s++)
        rc = nx_seq_pick_next(seqs[s], samplers[s], history[s], len, err);
    return rc;
}

static nx_sampling_t sampled_params(void)
{
    nx_sampling_t p = nx_sampling_default();
    p.temperature = 0.8f;
    p.top_k = 50;
    p.top_p = 0.9f;
    p.repetition_penalty = 1.1f;
    p.seed = 42;
    return p;
}

typedef struct figure {
    uint32_t batch;       /* 0: prefill */
    bool sampled;         /* decode with sampled_params() picks, not greedy */
    uint32_t tokens;      /* tokens processed in the timed steps */
    uint32_t steps;
    double seconds;
    double tok_s;
    double bw_fraction;   /* weight bytes per step * steps / seconds / read bandwidth */
} figure_t;

/* Prefill (batch == 0: one sequence, the whole prompt in one step) or `batch` sequences
 * decoding `tokens` steps together, picking greedily or with sampled_params(). */
static int run_figure(const bench_args_t *a, bench_ctx_t *c, uint32_t batch, bool sampled,
                      figure_t *f, nx_err_t *err)
{
    uint32_t vocab = nx_engine_config(c->engine)->vocab;
    uint32_t nseq = batch ? batch : 1, plen = batch ? a->decode_prompt : a->prompt;
    size_t hist_cap = (size_t)plen + a->tokens + 1;
    nx_seq_t **seqs = calloc(nseq, sizeof *seqs);
    nx_sampler_t **samplers = calloc(nseq, sizeof *samplers);
    int32_t **history = calloc(nseq, sizeof *history);
    nx_sampling_t params = sampled ? sampled_params() : nx_sampling_default();
    int rc = seqs && samplers && history ? NX_OK
                                         : nx_err_set(err, NX_ENOMEM, "decode bench: no memory");
    for (uint32_t s = 0; rc == NX_OK && s < nseq; s++) {
        if (!(history[s] = malloc(hist_cap * sizeof **history)))
            rc = nx_err_set(err, NX_ENOMEM, "decode bench: no memory");
        else if (!(seqs[s] = nx_seq_new(c->engine, 0, false, err)) ||
                 !(samplers[s] = nx_sampler_new(&params, vocab, err)))
            rc = err->code;
        if (rc == NX_OK) {
            prompt_ids(history[s], plen, vocab, 1000 + s);
            rc = nx_seq_feed(seqs[s], history[s], plen, err);
        }
    }
    size_t len = plen;
    if (rc == NX_OK)
        rc = ask_picks(seqs, samplers, nseq, history, len, err);
    uint64_t t0 = nx_now_ns();
    if (rc == NX_OK)
        rc = nx_engine_step(c->engine, seqs, nseq, err); /* the timed prefill, or untimed */
    *f = (figure_t){.batch = batch, .sampled = sampled, .tokens = plen, .steps = 1};
    if (batch) {
        t0 = nx_now_ns();
        for (uint32_t t = 0; rc == NX_OK && t < a->tokens; t++) {
            for (uint32_t s = 0; rc == NX_OK && s < nseq; s++) {
                history[s][len] = nx_seq_picked(seqs[s]);
                rc = nx_seq_feed(seqs[s], &history[s][len], 1, err);
            }
            len++;
            if (rc == NX_OK)
                rc = ask_picks(seqs, samplers, nseq, history, len, err);
            if (rc == NX_OK)
                rc = nx_engine_step(c->engine, seqs, nseq, err);
        }
        f->tokens = a->tokens * nseq;
        f->steps = a->tokens;
    }
    f->seconds = (double)(nx_now_ns() - t0) / 1e9;
    f->tok_s = f->tokens / f->seconds;
    for (uint32_t s = 0; s < nseq; s++) {
        if (seqs && seqs[s])
            nx_seq_destroy(c->engine, &seqs[s]);
        if (samplers)
            nx_sampler_destroy(&samplers[s]);
        if (history)
            free(history[s]);
    }
    free(seqs);
    free(samplers);
    free(history);
    return rc;
}

/* ---- --serve: bursts on demand ------------------------------------------------------------ */

/* bench/quant_pair.py keeps this process and llama.cpp's (bench/llama_bench.mjs --serve)
 * loaded side by side and asks each in turn for a short burst, so the two engines are
 * measured in the same seconds of this VM's memory bandwidth, which swings by a third from
 * one minute to the next. One command per line on stdin, one JSON line on stdout for each:
 *   decode N    batch-1 greedy decode, N steps (1 <= N <= --tokens) of a fresh sequence after
 *               its untimed --decode-prompt: {op, tokens, seconds, tokens_per_s, major_faults}
 *   bandwidth   the streaming-read limit now (nx_bench_read_bandwidth_pages, same threads and
 *               pages as the weights): {op, bytes_per_s}
 *   quit        (or the end of input)
 * A bad command or a failed burst answers {"error": ...} and the process keeps serving. The
 * first line, once the model is loaded and warmed up, is {"ready": true, ...}. */
static long major_faults(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_majflt : 0;
}

static void say(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (text)
        printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(o);
}

static void serve_decode(bench_args_t *a, bench_ctx_t *c, uint64_t steps, json_t *o)
{
    uint32_t max_tokens = a->tokens;
    figure_t f;
    nx_err_t err = {0};
    long faults = major_faults();
    a->tokens = (uint32_t)steps;
    int rc = run_figure(a, c, 1, false, &f, &err);
    a->tokens = max_tokens;
    if (rc != NX_OK) {
        json_object_set_new(o, "error", json_string(err.msg));
        return;
    }
    json_object_set_new(o, "op", json_string("decode"));
    json_object_set_new(o, "tokens", json_integer(f.tokens));
    json_object_set_new(o, "seconds", json_real(f.seconds));
    json_object_set_new(o, "tokens_per_s", json_real(f.tok_s));
    json_object_set_new(o, "major_faults", json_integer(major_faults() - faults));
}

static int serve(bench_args_t *a, bench_ctx_t *c, size_t bw_bytes)
{
    figure_t warm;
    nx_err_t err = {0};
    uint32_t max_tokens = a->tokens;
    a->tokens = max_tokens < 4 ? max_tokens : 4; /* first touch of every weight, untimed */
    int rc = run_figure(a, c, 1, false, &warm, &err);
    a->tokens = max_tokens;
    if (rc != NX_OK) {
        fprintf(stderr, "decode: %s\n", err.msg);
        return 1;
    }
    json_t *ready = json_object();
    json_object_set_new(ready, "ready", json_true());
    json_object_set_new(ready, "backend", json_string(nx_engine_backend_name(c->engine)));
    json_object_set_new(ready, "weight_bytes_per_step",
                        json_integer((json_int_t)c->weight_bytes_per_step));
    json_object_set_new(ready, "max_tokens", json_integer(max_tokens));
    say(ready);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char op[32] = "", extra[2];
        unsigned long long n = 0;
        int got = sscanf(line, "%31s %llu %1s", op, &n, extra);
        json_t *o = json_object();
        if (got == 1 && strcmp(op, "quit") == 0) {
            json_decref(o);
            break;
        }
        if (got == 2 && strcmp(op, "decode") == 0 && n >= 1 && n <= max_tokens)
            serve_decode(a, c, n, o);
        else if (got == 1 && strcmp(op, "bandwidth") == 0) {
            json_object_set_new(o, "op", json_string("bandwidth"));
            json_object_set_new(o, "bytes_per_s",
                                json_real(nx_bench_read_bandwidth_pages(a->threads, bw_bytes,
                                                                        a->hugepages)));
        } else {
            char msg[160];
            line[strcspn(line, "\r\n")] = '\0';
            snprintf(msg, sizeof msg, "unknown command '%.60s' (decode N with 1 <= N <= %u, "
                     "bandwidth, quit)", line, max_tokens);
            json_object_set_new(o, "error", json_string(msg));
        }
        say(o);
    }
    return 0;
}

/* ---- report -------------------------------------------------------------------------------- */

static void print_table(const bench_args_t *a, const bench_ctx_t *c, double bandwidth,
                        size_t bw_bytes, const figure_t *figs, size_t n)
{
    const nx_model_config_t *cfg = nx_engine_config(c->engine);
    char wbytes[32];
    nx_cli_format_bytes(c->weight_bytes_per_step, wbytes, sizeof wbytes);
    printf("model %s (%s, %u layers, hidden %u, vocab %u) on %s, %u thread%s\n", a->model_dir,
           nx_arch_name(cfg->arch), cfg->layers, cfg->hidden, cfg->vocab,
           nx_engine_backend_name(c->engine), a->threads, a->threads == 1 ? "" : "s");
    bool gpu = strcmp(nx_engine_backend_name(c->engine), "cpu") != 0;
    printf("weights read per step: %s; host memory read bandwidth (%zu MiB, %u threads, %s "
           "pages): %.2f GB/s\n", wbytes, bw_bytes >> 20, a->threads,
           a->hugepages ? "2 MiB" : "4 KiB", bandwidth / 1e9);
    if (a->hugepages)
        printf("weights in 2 MiB pages: %.1f of %.1f MiB (MADV_COLLAPSE after the load: %.2f s)\n",
               c->huge_bytes / 1048576.0, nx_region_bytes(nx_model_region(c->model)) / 1048576.0,
               c->collapse_seconds);
    if (gpu) /* the column below is against host RAM: meaningless for a GPU's weights */
        printf("(on %s the weights are in device memory: the roofline against the device's "
               "bandwidth is bench/gpu_decode.py's)\n", nx_engine_backend_name(c->engine));
    printf("%-26s %8s %7s %10s %12s %12s\n", "phase", "tokens", "steps", "seconds", "tokens/s",
           gpu ? "of host bw" : "of mem bw");
    for (size_t i = 0; i < n; i++) {
        char phase[32];
        if (figs[i].batch)
            snprintf(phase, sizeof phase, "decode batch %u%s", figs[i].batch,
                     figs[i].sampled ? " sampled" : "");
        else
            snprintf(phase, sizeof phase, "prefill %u-token prompt", figs[i].tokens);
        printf("%-26s %8u %7u %10.4f %12.1f %11.1f%%\n", phase, figs[i].tokens, figs[i].steps,
               figs[i].seconds, figs[i].tok_s, 100 * figs[i].bw_fraction);
    }
}

static int write_json(const bench_args_t *a, const bench_ctx_t *c, double bandwidth,
                      const figure_t *figs, size_t n)
{
    json_t *o = json_object(), *rows = json_array();
    json_object_set_new(o, "model", json_string(a->model_dir));
    json_object_set_new(o, "backend", json_string(nx_engine_backend_name(c->engine)));
    json_object_set_new(o, "threads", json_integer(a->threads));
    json_object_set_new(o, "weight_bytes_per_step",
                        json_integer((json_int_t)c->weight_bytes_per_step));
    json_object_set_new(o, "read_bandwidth_gbps", json_real(bandwidth / 1e9));
    json_object_set_new(o, "hugepages", json_boolean(a->hugepages));
    json_object_set_new(o, "huge_bytes", json_integer((json_int_t)c->huge_bytes));
    json_object_set_new(o, "collapse_seconds", json_real(c->collapse_seconds));
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_object();
        json_object_set_new(r, "phase", json_string(!figs[i].batch  ? "prefill"
                                                    : figs[i].sampled ? "decode_sampled"
                                                                      : "decode"));
        json_object_set_new(r, "batch", json_integer(figs[i].batch ? figs[i].batch : 1));
        json_object_set_new(r, "tokens", json_integer(figs[i].tokens));
        json_object_set_new(r, "steps", json_integer(figs[i].steps));
        json_object_set_new(r, "seconds", json_real(figs[i].seconds));
        json_object_set_new(r, "tokens_per_s", json_real(figs[i].tok_s));
        json_object_set_new(r, "bandwidth_fraction", json_real(figs[i].bw_fraction));
        json_array_append_new(rows, r);
    }
    json_object_set_new(o, "figures", rows);
    int rc = json_dump_file(o, a->json_path, JSON_INDENT(2));
    json_decref(o);
    if (rc != 0)
        fprintf(stderr, "decode: cannot write %s\n", a->json_path);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    bench_args_t a = {.prompt = 128, .tokens = 64, .decode_prompt = 16,
                      .batches = {1, 8, 32}, .batch_count = 3, .hugepages = false};
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc;
    if (!a.threads) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        a.threads = cores > 0 ? (uint32_t)(cores > 256 ? 256 : cores) : 1;
    }
    size_t bw_bytes = nx_bench_bandwidth_bytes();
    double bandwidth = a.serve ? 0 : nx_bench_read_bandwidth_pages(a.threads, bw_bytes, a.hugepages);
    nx_err_t err = {0};
    bench_ctx_t c = {0};
    figure_t figs[MAX_BATCHES + 2];
    size_t n = 0;
    int exit_code = 1;
    if (open_engine(&a, &c, &err) != NX_OK)
        goto out;
    if (a.serve) {
        exit_code = serve(&a, &c, bw_bytes);
        goto out;
    }
    /* Untimed warm-up, as bench/llama_bench.mjs gives llama.cpp: the prompt once and each
     * batch 4 steps (first touch of the step's buffers and the KV pages, each batch size's
     * thread split), then every figure timed. */
    uint32_t tokens = a.tokens;
    a.tokens = tokens < 4 ? tokens : 4;
    for (size_t i = 0; i <= a.batch_count; i++) {
        figure_t warm;
        if (run_figure(&a, &c, i == 0 ? 0 : a.batches[i - 1], false, &warm, &err) != NX_OK)
            goto out;
    }
    a.tokens = tokens;
    for (size_t i = 0; i <= a.batch_count + 1; i++, n++) { /* prefill, batches, sampled b1 */
        uint32_t batch = i == 0 ? 0 : i <= a.batch_count ? a.batches[i - 1] : 1;
        if (run_figure(&a, &c, batch, i > a.batch_count, &figs[n], &err) != NX_OK)
            goto out;
        figs[n].bw_fraction = bandwidth > 0 ? (double)c.weight_bytes_per_step * figs[n].steps /
                                                  figs[n].seconds / bandwidth
                                            : 0;
    }
    print_table(&a, &c, bandwidth, bw_bytes, figs, n);
    exit_code = a.json_path ? write_json(&a, &c, bandwidth, figs, n) : 0;
out:
    if (err.code != NX_OK)
        fprintf(stderr, "decode: %s\n", err.msg);
    close_engine(&c);
    return exit_code;
}
