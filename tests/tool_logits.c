/* tool_logits.c — run the engine on a model for the Python tests (tests/test_forward.py).
 *
 *   tool_logits MODEL_DIR --ids 1,2,3 [--ids 4,5 ...] [--out FILE] [--greedy N]
 *               [--batch-check] [--threads N] [--device cpu|cuda|auto]
 *
 * Loads MODEL_DIR with the loader into a pool on the device (CPU by default; the GPU suite
 * compares --device cuda with transformers), runs the
 * first --ids prompt with all_logits, then N greedy tokens one step at a time, and writes
 * every processed row's logits (float32 little-endian, (prompt + N - 1) rows x vocab) to FILE.
 * Prints JSON: {"vocab", "rows", "greedy": [...]}.
 *
 * --batch-check runs every --ids prompt alone, then all of them together in shared steps:
 * sequence k joins at step k, odd-numbered ones feed their prompt in two chunks on two steps,
 * each leaves (its KV region freed) as soon as it has its N tokens. It adds "batch_check"
 * to the JSON (greedy ids of the batched run, whether they equal the solo runs', and the
 * largest logit difference relative to the largest logit) and exits 1 when they disagree.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_engine.h"

#define MAX_PROMPTS 16

typedef struct args {
    const char *dir, *out;
    int32_t *ids[MAX_PROMPTS];
    size_t len[MAX_PROMPTS];
    size_t prompts;
    uint32_t greedy, threads;
    bool batch_check;
    nx_device_kind_t device; /* --device cpu|cuda|auto; cpu by default */
} args_t;

typedef struct ctx {
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
    uint32_t vocab;
} ctx_t;

static int parse_ids(const char *text, int32_t **out, size_t *len)
{
    size_t cap = strlen(text) + 1, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    const char *p = text;
    while (ids && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[n++] = (int32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (!ids || *p || n == 0) {
        free(ids);
        return -1;
    }
    *out = ids, *len = n;
    return 0;
}

static int parse_args(int argc, char **argv, args_t *a)
{
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--ids") == 0 && val && a->prompts < MAX_PROMPTS) {
            if (parse_ids(val, &a->ids[a->prompts], &a->len[a->prompts]) != 0)
                return -1;
            a->prompts++, i++;
        } else if (strcmp(argv[i], "--out") == 0 && val) {
            a->out = val, i++;
        } else if (strcmp(argv[i], "--greedy") == 0 && val) {
            a->greedy = (uint32_t)atoi(val), i++;
        } else if (strcmp(argv[i], "--threads") == 0 && val) {
            a->threads = (uint32_t)atoi(val), i++;
        } else if (strcmp(argv[i], "--device") == 0 && val) {
            if (!nx_device_parse(val, &a->device))
                return -1;
            i++;
        } else if (strcmp(argv[i], "--batch-check") == 0) {
            a->batch_check = true;
        } else if (argv[i][0] != '-' && !a->dir) {
            a->dir = argv[i];
        } else {
            return -1;
        }
    }
    return a->dir && a->prompts ? 0 : -1;
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
    return (v + to - 1) / to * to;
}

/* Pool: the model, one KV region per prompt, chunk rounding and slack. */
static int open_model(const args_t *a, ctx_t *c, nx_err_t *err)
{
    nx_model_config_t cfg;
    if (nx_config_load(a->dir, &cfg, err) != NX_OK)
        return err->code;
    nx_st_t *st = nx_st_open(a->dir, err);
    if (!st)
        return err->code;
    bool cuda = a->device == NX_DEVICE_CUDA;
    const uint64_t chunk = cuda ? 32ull << 20 : 2ull << 20; /* the backends' default chunks */
    uint64_t bytes = round_up(nx_st_data_bytes(st) + 4096ull * (nx_st_file_count(st) + 1), chunk);
    nx_st_destroy(&st);
    for (size_t i = 0; i < a->prompts; i++) {
        uint64_t ctx_tokens = a->len[i] + a->greedy + 1;
        bytes += round_up(nx_kv_bytes(&cfg, a->device, (uint32_t)ctx_tokens), chunk);
    }
    /* CUDA: room for the backend's scratch and the cuBLAS workspace too. */
    nx_pool_opts_t popts = {.device = a->device, .bytes = bytes + (cuda ? 1ull << 30 : 4 * chunk)};
    if (!(c->pool = nx_pool_new(&popts, err)) ||
        !(c->loader = nx_loader_new(c->pool, NULL, err)) ||
        !(c->model = nx_loader_load(c->loader, a->dir, NULL, NULL, err)))
        return err->code;
    nx_engine_opts_t eopts = {.threads = a->threads};
    if (!(c->engine = nx_engine_new(a->dir, c->model, c->pool, &eopts, err)))
        return err->code;
    c->vocab = nx_engine_config(c->engine)->vocab;
    return NX_OK;
}

static void close_model(ctx_t *c)
{
    nx_engine_destroy(&c->engine);
    if (c->loader)
        nx_loader_unload(c->loader, &c->model, false);
    nx_loader_destroy(&c->loader);
    nx_pool_destroy(&c->pool);
}

static int32_t argmax(const float *v, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int32_t)best;
}

/* One prompt alone. all_rows (may be NULL) gets every processed row's logits;
 * last_rows gets the logits each greedy token was picked from ([greedy][vocab]). */
static int run_alone(ctx_t *c, const int32_t *ids, size_t len, uint32_t greedy, float *all_rows,
                     float *last_rows, int32_t *tokens, nx_err_t *err)
{
    nx_seq_t *seq = nx_seq_new(c->engine, (uint32_t)(len + greedy + 1), all_rows != NULL, err);
    if (!seq)
        return err->code;
    int rc = nx_seq_feed(seq, ids, len, err);
    size_t done_rows = 0;
    for (uint32_t t = 0; rc == NX_OK; t++) {
        if ((rc = nx_engine_step(c->engine, &seq, 1, err)) != NX_OK)
            break;
        size_t rows;
        const float *logits = nx_seq_logits(seq, &rows);
        if (all_rows)
            memcpy(all_rows + done_rows * c->vocab, logits, rows * c->vocab * sizeof(float));
        done_rows += rows;
        const float *last = logits + (rows - 1) * c->vocab;
        if (t >= greedy)
            break;
        memcpy(last_rows + (size_t)t * c->vocab, last, c->vocab * sizeof(float));
        tokens[t] = argmax(last, c->vocab);
        if (t + 1 == greedy)
            break;
        rc = nx_seq_feed(seq, &tokens[t], 1, err);
    }
    nx_seq_destroy(c->engine, &seq);
    return rc;
}

static void print_ids(const int32_t *ids, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("]");
}


typedef struct batch_state {
    nx_seq_t *seq;
    uint32_t produced;   /* greedy tokens so far */
    bool second_half;    /* the second half of its prompt is still to feed */
    bool done;
    int32_t *tokens;     /* [greedy] */
} batch_state_t;

/* Feed what sequence k needs this step (prompt, half of it, or its last token). */
static int batch_feed(const args_t *a, ctx_t *c, size_t k, batch_state_t *b, nx_err_t *err)
{
    size_t len = a->len[k], half = len / 2;
    if (!b->seq) {
        b->seq = nx_seq_new(c->engine, (uint32_t)(len + a->greedy + 1), false, err);
        if (!b->seq)
            return err->code;
        b->second_half = k % 2 == 1 && half > 0;
        return nx_seq_feed(b->seq, a->ids[k], b->second_half ? half : len, err);
    }
    if (b->second_half) {
        b->second_half = false;
        return nx_seq_feed(b->seq, a->ids[k] + half, len - half, err);
    }
    return nx_seq_feed(b->seq, &b->tokens[b->produced - 1], 1, err);
}

/* Every prompt alone, then all together with joins, chunked prefill and leaves. */
static int batch_check(const args_t *a, ctx_t *c, nx_err_t *err)
{
    size_t K = a->prompts, N = a->greedy ? a->greedy : 1, V = c->vocab;
    float *solo_logits = malloc(K * N * V * sizeof(float));
    int32_t *solo_tokens = malloc(K * N * sizeof(int32_t));
    int32_t *batch_tokens = calloc(K * N, sizeof(int32_t));
    batch_state_t st[MAX_PROMPTS] = {{0}};
    nx_seq_t *active[MAX_PROMPTS];
    size_t active_k[MAX_PROMPTS];
    double max_rel = 0;
    bool match = true;
    uint32_t steps = 0;
    int rc = solo_logits && solo_tokens && batch_tokens ? NX_OK
                                                        : nx_err_set(err, NX_ENOMEM, "oom");
    for (size_t k = 0; rc == NX_OK && k < K; k++)
        rc = run_alone(c, a->ids[k], a->len[k], (uint32_t)N, NULL, solo_logits + k * N * V,
                       solo_tokens + k * N, err);
    for (size_t k = 0; k < K; k++)
        st[k].tokens = batch_tokens + k * N;
    for (uint32_t step = 0; rc == NX_OK; step++) {
        size_t n = 0;
        for (size_t k = 0; rc == NX_OK && k < K && k <= step; k++) {
            if (st[k].done)
                continue;
            rc = batch_feed(a, c, k, &st[k], err);
            active[n] = st[k].seq, active_k[n++] = k;
        }
        if (rc != NX_OK || (n == 0 && step >= K))
            break;
        if (n == 0)
            continue;
        bool halves[MAX_PROMPTS];
        for (size_t i = 0; i < n; i++)
            halves[i] = st[active_k[i]].second_half;
        if ((rc = nx_engine_step(c->engine, active, n, err)) != NX_OK)
            break;
        steps++;
        for (size_t i = 0; i < n; i++) {
            batch_state_t *b = &st[active_k[i]];
            if (halves[i]) /* the first half of a chunked prompt: nothing to sample yet */
                continue;
            const float *got = nx_seq_logits(b->seq, NULL);
            const float *want = solo_logits + (active_k[i] * N + b->produced) * V;
            double diff = 0, scale = 0;
            for (size_t v = 0; v < V; v++) {
                diff = fmax(diff, fabs((double)got[v] - want[v]));
                scale = fmax(scale, fabs((double)want[v]));
            }
            max_rel = fmax(max_rel, scale > 0 ? diff / scale : diff);
            b->tokens[b->produced] = argmax(got, (uint32_t)V);
            match &= b->tokens[b->produced] == solo_tokens[active_k[i] * N + b->produced];
            if (++b->produced == N) {
                b->done = true;
                nx_seq_destroy(c->engine, &b->seq);
            }
        }
    }
    if (rc == NX_OK) {
        printf(", \"batch_check\": {\"sequences\": %zu, \"steps\": %u, \"tokens_match\": %s, "
               "\"max_rel_diff\": %.9g, \"greedy\": [",
               K, steps, match ? "true" : "false", max_rel);
        for (size_t k = 0; k < K; k++) {
            printf("%s", k ? ", " : "");
            print_ids(batch_tokens + k * N, N);
        }
        printf("]}");
    }
    for (size_t k = 0; k < K; k++)
        nx_seq_destroy(c->engine, &st[k].seq);
    free(solo_logits);
    free(solo_tokens);
    free(batch_tokens);
    return rc == NX_OK && match && max_rel <= 1e-5 ? 0 : 1;
}

int main(int argc, char **argv)
{
    args_t a = {.device = NX_DEVICE_CPU};
    if (parse_args(argc, argv, &a) != 0) {
        fprintf(stderr, "usage: tool_logits MODEL_DIR --ids 1,2,3 [--ids ...] [--out FILE] "
                        "[--greedy N] [--batch-check] [--threads N] [--device cpu|cuda|auto]\n");
        return 2;
    }
    nx_err_t err = {0};
    ctx_t c = {0};
    int status = 1;
    float *all_rows = NULL, *last_rows = NULL;
    int32_t *tokens = NULL;
    if (open_model(&a, &c, &err) != NX_OK)
        goto out;
    size_t rows = a.len[0] + (a.greedy ? a.greedy - 1 : 0);
    all_rows = malloc(rows * c.vocab * sizeof(float));
    last_rows = malloc(((size_t)a.greedy + 1) * c.vocab * sizeof(float));
    tokens = malloc(((size_t)a.greedy + 1) * sizeof *tokens);
    if (!all_rows || !last_rows || !tokens) {
        nx_err_set(&err, NX_ENOMEM, "out of memory");
        goto out;
    }
    if (run_alone(&c, a.ids[0], a.len[0], a.greedy, all_rows, last_rows, tokens, &err) != NX_OK)
        goto out;
    if (a.out) {
        FILE *f = fopen(a.out, "wb");
        if (!f || fwrite(all_rows, sizeof(float) * c.vocab, rows, f) != rows) {
            nx_err_set(&err, NX_EIO, "writing '%s' failed", a.out);
            if (f)
                fclose(f);
            goto out;
        }
        fclose(f);
    }
    printf("{\"vocab\": %u, \"rows\": %zu, \"backend\": \"%s\", \"greedy\": ", c.vocab, rows,
           nx_engine_backend_name(c.engine));
    print_ids(tokens, a.greedy);
    status = 0;
    if (a.batch_check)
        status = batch_check(&a, &c, &err);
    printf("}\n");
out:
    if (err.code != NX_OK)
        fprintf(stderr, "tool_logits: %s\n", err.msg);
    free(all_rows);
    free(last_rows);
    free(tokens);
    for (size_t i = 0; i < a.prompts; i++)
        free(a.ids[i]);
    close_model(&c);
    return status;
}
