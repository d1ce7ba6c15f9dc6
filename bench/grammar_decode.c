/* grammar_decode.c — what grammar-constrained decoding costs: decode tokens/s of sequences
 * generating under a JSON Schema (nx_gen_set_grammar: the mask on every pick, forced tokens
 * appended without sampling) against the same sequences unconstrained, at batch 1 and 8, with
 * the ratio. Both go through nx_gen and the engine's pick, as nexusd steps.
 *
 *   build/bench/grammar_decode MODEL [--threads N] [--tokens 32] [--batches 1,8]
 *                             [--rounds 2] [--schema FILE] [--device auto|cpu|cuda]
 *                             [--json FILE]
 *   build/bench/grammar_decode --print-schema
 *
 * MODEL is a model folder or a GGUF file (its tokenizer is read from it).
 * --json FILE also writes the figures as JSON (bench/run_grammar_llama.sh reads it);
 * --print-schema prints the built-in schema and exits, so that llama.cpp's side
 * (bench/llama_grammar.mjs) runs the same one.
 *
 * Sampling at temperature 1 (seeded). A constrained sequence whose output ends (the schema is
 * finished, an end id, or its context) starts again from a one-token prompt, so the batch stays
 * full; the restarts' prompt rows are in the time. Two figures per row: output tokens/s (forced
 * tokens count: they are output, as a client sees it) and steps/s (the engine's pace, which
 * forced tokens do not help). Rounds alternate unconstrained and constrained; each figure is
 * the best of the rounds (other load on the machine only slows a round down).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench_pool.h"
#include "ctl.h"
#include "grammar.h"
#include "nx_engine.h"

#define MAX_BATCH 64
#define PROMPT_TOKENS 16

static const char default_schema[] =
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},\"id\":{\"type\":\"integer\"},"
    "\"kind\":{\"enum\":[\"person\",\"place\",\"thing\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
    "\"required\":[\"name\",\"id\",\"kind\",\"tags\"],\"additionalProperties\":false}}";

typedef struct args {
    const char *model_dir, *schema_path, *json_path;
    uint32_t threads, tokens, rounds;
    uint32_t batches[8];
    size_t batch_count;
    nx_device_kind_t device;
} args_t;

typedef struct bench {
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
    nx_tokenizer_t *tok;
    nx_gram_t *gram;
    nx_gram_vocab_t *gvocab;
    nx_gram_matcher_t *matcher; /* shared by the constrained sequences, as an executor would */
    int32_t stop_ids[8];
    size_t stop_count;
    uint32_t vocab, context;
} bench_t;

typedef struct figure {
    double tok_s, steps_s;
    uint64_t tokens, steps, restarts;
} figure_t;

static int usage(const char *what)
{
    fprintf(stderr, "grammar_decode: %s\nusage: grammar_decode MODEL [--threads N] "
            "[--tokens 32] [--batches 1,8] [--rounds 2] [--schema FILE] "
            "[--device auto|cpu|cuda] [--json FILE]\n       grammar_decode --print-schema\n",
            what);
    return 2;
}

static int parse_args(int argc, char **argv, args_t *a)
{
    *a = (args_t){.tokens = 32, .rounds = 2, .batches = {1, 8}, .batch_count = 2,
                  .device = NX_DEVICE_AUTO};
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (opt[0] != '-') {
            a->model_dir = opt;
            continue;
        }
        if (strcmp(opt, "--print-schema") == 0) {
            printf("%s\n", default_schema);
            return 1; /* done: the caller exits with 0 */
        }
        if (!val)
            return usage("an option lacks its value");
        i++;
        if (strcmp(opt, "--threads") == 0 && nx_cli_parse_u64(val, 0, 1024, &n))
            a->threads = (uint32_t)n;
        else if (strcmp(opt, "--tokens") == 0 && nx_cli_parse_u64(val, 1, 100000, &n))
            a->tokens = (uint32_t)n;
        else if (strcmp(opt, "--rounds") == 0 && nx_cli_parse_u64(val, 1, 100, &n))
            a->rounds = (uint32_t)n;
        else if (strcmp(opt, "--schema") == 0)
            a->schema_path = val;
        else if (strcmp(opt, "--json") == 0)
            a->json_path = val;
        else if (strcmp(opt, "--device") == 0 && nx_device_parse(val, &a->device))
            ;
        else if (strcmp(opt, "--batches") == 0) {
            char copy[128];
            snprintf(copy, sizeof copy, "%s", val);
            a->batch_count = 0;
            for (char *save, *t = strtok_r(copy, ",", &save); t && a->batch_count < 8;
                 t = strtok_r(NULL, ",", &save)) {
                if (!nx_cli_parse_u64(t, 1, MAX_BATCH, &n))
                    return usage("--batches takes sizes 1..64 such as 1,8");
                a->batches[a->batch_count++] = (uint32_t)n;
            }
        } else
            return usage("unknown option or bad value");
    }
    return a->model_dir ? 0 : usage("MODEL is missing");
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[len] = '\0';
    fclose(f);
    return buf;
}

static int open_bench(const args_t *a, bench_t *b, nx_err_t *err)
{
    uint32_t max_batch = 1;
    for (size_t i = 0; i < a->batch_count; i++)
        max_batch = a->batches[i] > max_batch ? a->batches[i] : max_batch;
    b->context = PROMPT_TOKENS + a->tokens + 64;
    nx_model_config_t cfg;
    uint64_t pool_bytes = 0;
    int rc = nx_bench_pool_bytes(a->model_dir, a->device, b->context, max_batch, &cfg,
                                 &pool_bytes, err);
    if (rc != NX_OK)
        return rc;
    if (!(b->pool = nx_pool_new(&(nx_pool_opts_t){.device = a->device, .bytes = pool_bytes},
                                err)) ||
        !(b->loader = nx_loader_new(b->pool, NULL, err)) ||
        !(b->model = nx_loader_load(b->loader, a->model_dir, NULL, NULL, err)) ||
        !(b->engine = nx_engine_new(a->model_dir, b->model, b->pool,
                                    &(nx_engine_opts_t){.threads = a->threads,
                                                        .max_context = b->context},
                                    err)) ||
        !(b->tok = nx_tokenizer_load(a->model_dir, err)))
        return err->code;
    b->vocab = nx_engine_config(b->engine)->vocab;
    b->stop_count = nx_chat_stop_ids(b->tok, NX_CHAT_CHATML, b->stop_ids, 8);
    char *schema = a->schema_path ? read_all(a->schema_path) : strdup(default_schema);
    if (!schema)
        return nx_err_set(err, NX_EIO, "cannot read '%s'", a->schema_path);
    b->gram = nx_gram_from_json_schema(schema, strlen(schema), NULL, err);
    free(schema);
    if (!b->gram ||
        !(b->gvocab = nx_gram_vocab_from_tokenizer(b->tok, b->stop_ids, b->stop_count, err)) ||
        !(b->matcher = nx_gram_matcher_new(b->gram, b->gvocab, err)))
        return err->code;
    return NX_OK;
}

static void close_bench(bench_t *b)
{
    nx_gram_matcher_destroy(&b->matcher);
    nx_gram_vocab_destroy(&b->gvocab);
    nx_gram_destroy(&b->gram);
    nx_tokenizer_destroy(&b->tok);
    nx_engine_destroy(&b->engine);
    if (b->loader)
        nx_loader_unload(b->loader, &b->model, false);
    nx_loader_destroy(&b->loader);
    nx_pool_destroy(&b->pool);
}

/* A fresh generation on seqs[s] (reset), its prompt fed: PROMPT_TOKENS ids the first time,
 * one on a restart. */
static int start_seq(bench_t *b, nx_seq_t *seq, nx_gen_t **gen, const nx_sampling_t *s,
                     bool constrained, bool first, uint32_t salt, nx_err_t *err)
{
    int32_t prompt[PROMPT_TOKENS];
    uint64_t x = 1000 + salt;
    for (uint32_t i = 0; i < PROMPT_TOKENS; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((x >> 33) % nx_tokenizer_vocab_size(b->tok));
    }
    size_t n = first ? PROMPT_TOKENS : 1;
    nx_gen_destroy(gen);
    nx_seq_reset(seq);
    *gen = nx_gen_new(b->tok, b->vocab, s, prompt, n, b->stop_ids, b->stop_count, NULL, NULL,
                      err);
    if (!*gen)
        return err->code;
    nx_gen_grammar_t spec = {.gram = b->gram, .vocab = b->gvocab, .matcher = b->matcher};
    int rc = constrained ? nx_gen_set_grammar(*gen, &spec, err) : NX_OK;
    return rc == NX_OK ? nx_seq_feed(seq, prompt, n, err) : rc;
}

/* `batch` sequences stepped together for a->tokens timed steps (after an untimed prefill). */
static int run_figure(const args_t *a, bench_t *b, uint32_t batch, bool constrained,
                      figure_t *f, nx_err_t *err)
{
    nx_seq_t *seqs[MAX_BATCH] = {0};
    nx_gen_t *gens[MAX_BATCH] = {0};
    nx_sampling_t s[MAX_BATCH];
    uint64_t done_tokens = 0;
    int rc = NX_OK;
    *f = (figure_t){0};
    for (uint32_t i = 0; rc == NX_OK && i < batch; i++) {
        s[i] = nx_sampling_default();
        s[i].temperature = 1.0f;
        s[i].seed = 7 + i;
        s[i].max_tokens = 1u << 30;
        if (!(seqs[i] = nx_seq_new(b->engine, b->context, false, err)))
            rc = err->code;
        else
            rc = start_seq(b, seqs[i], &gens[i], &s[i], constrained, true, i, err);
    }
    uint64_t t0 = 0;
    for (uint32_t step = 0; rc == NX_OK && step <= a->tokens; step++) {
        if (step == 1)
            t0 = nx_now_ns(); /* the prefill step is not timed */
        for (uint32_t i = 0; rc == NX_OK && i < batch; i++)
            rc = nx_gen_pick_next(gens[i], seqs[i], err);
        if (rc == NX_OK)
            rc = nx_engine_step(b->engine, seqs, batch, err);
        for (uint32_t i = 0; rc == NX_OK && i < batch; i++) {
            int32_t id;
            size_t before = nx_gen_count(gens[i]);
            bool room = nx_seq_len(seqs[i]) < nx_seq_capacity(seqs[i]);
            rc = nx_gen_advance_id(gens[i], nx_seq_picked(seqs[i]), room, &id, err);
            if (rc != NX_OK)
                break;
            if (step > 0)
                done_tokens += nx_gen_count(gens[i]) - before;
            if (nx_gen_stop_reason(gens[i])) {
                f->restarts += step > 0;
                rc = start_seq(b, seqs[i], &gens[i], &s[i], constrained, false,
                               (uint32_t)(f->restarts * 131 + i), err);
                continue;
            }
            const int32_t *feed;
            size_t feed_count = nx_gen_next_ids(gens[i], &feed);
            rc = nx_seq_feed(seqs[i], feed, feed_count, err);
        }
    }
    double seconds = (double)(nx_now_ns() - t0) / 1e9;
    f->tokens = done_tokens;
    f->steps = a->tokens;
    f->tok_s = (double)done_tokens / seconds;
    f->steps_s = (double)a->tokens / seconds;
    for (uint32_t i = 0; i < batch; i++) {
        nx_gen_destroy(&gens[i]);
        if (seqs[i])
            nx_seq_destroy(b->engine, &seqs[i]);
    }
    return rc;
}

static json_t *json_figure(const figure_t *fig)
{
    return json_pack("{sI sI sI sf sf}", "tokens", (json_int_t)fig->tokens, "steps",
                     (json_int_t)fig->steps, "restarts", (json_int_t)fig->restarts, "tok_s",
                     fig->tok_s, "steps_s", fig->steps_s);
}

int main(int argc, char **argv)
{
    args_t a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    json_t *figures = json_array();
    bench_t b = {0};
    nx_err_t err = {0};
    if (open_bench(&a, &b, &err) != NX_OK) {
        fprintf(stderr, "grammar_decode: %s\n", err.msg);
        close_bench(&b);
        return 1;
    }
    const nx_model_config_t *cfg = nx_engine_config(b.engine);
    printf("model %s (%s, %u layers, hidden %u, vocab %u, tokenizer %u) on %s, %u threads; "
           "%u timed steps, best of %u rounds; schema %s\n", a.model_dir,
           nx_arch_name(cfg->arch), cfg->layers, cfg->hidden, cfg->vocab,
           nx_tokenizer_vocab_size(b.tok), nx_engine_backend_name(b.engine), a.threads,
           a.tokens, a.rounds, a.schema_path ? a.schema_path : "(built in: array of objects)");
    printf("%-6s %14s %14s %12s %12s %9s %10s %10s\n", "batch", "free tok/s", "schema tok/s",
           "free step/s", "schema st/s", "restarts", "tok ratio", "step ratio");
    for (size_t k = 0; k < a.batch_count; k++) {
        figure_t best[2] = {{0}}, fig;
        for (uint32_t r = 0; r < a.rounds; r++)
            for (int c = 0; c < 2; c++) {
                if (run_figure(&a, &b, a.batches[k], c == 1, &fig, &err) != NX_OK) {
                    fprintf(stderr, "grammar_decode: %s\n", err.msg);
                    close_bench(&b);
                    json_decref(figures);
                    return 1;
                }
                if (fig.steps_s > best[c].steps_s)
                    best[c] = fig;
            }
        printf("%-6u %14.2f %14.2f %12.3f %12.3f %9llu %9.1f%% %9.1f%%\n", a.batches[k],
               best[0].tok_s, best[1].tok_s, best[0].steps_s, best[1].steps_s,
               (unsigned long long)best[1].restarts, 100.0 * best[1].tok_s / best[0].tok_s,
               100.0 * best[1].steps_s / best[0].steps_s);
        json_array_append_new(figures, json_pack("{sI so so}", "batch", (json_int_t)a.batches[k],
                                                 "free", json_figure(&best[0]), "schema",
                                                 json_figure(&best[1])));
    }
    json_t *doc = json_pack("{ss ss ss sI sI sI sI so}", "tool", "nexus", "model", a.model_dir,
                            "backend", nx_engine_backend_name(b.engine), "threads",
                            (json_int_t)a.threads, "tokens", (json_int_t)a.tokens, "rounds",
                            (json_int_t)a.rounds, "tokenizer_vocab",
                            (json_int_t)nx_tokenizer_vocab_size(b.tok), "figures", figures);
    close_bench(&b);
    rc = 0;
    if (a.json_path && (!doc || json_dump_file(doc, a.json_path, JSON_INDENT(1)) != 0)) {
        fprintf(stderr, "grammar_decode: cannot write '%s'\n", a.json_path);
        rc = 1;
    }
    json_decref(doc);
    return rc;
}
