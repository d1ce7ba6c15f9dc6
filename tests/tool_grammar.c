/* tool_grammar.c — the grammar engine driven by JSON lines, for tests/test_json_schema_suite.py
 * (one process for the whole suite). Each stdin line is an object:
 *   {"schema": <schema>, "draft": "2020-12"|"draft7"|null, "strict": false, "instances": [TEXT...]}
 *   {"gbnf": "<grammar text>", "instances": [TEXT...]}
 * and each reply line is {"ok": true, "verdicts": [bool...]} (each instance's bytes fed to a
 * matcher that must end accepting) or {"ok": false, "code": "ENOTSUP", "error": "..."}.
 * With "tokenizer": DIR and "generate": N (and "seed", "max_tokens") instead of instances, it
 * samples N token walks through the masks, as a model with random weights would, and replies
 * {"ok": true, "texts": [...], "finished": [bool...]} (finished: ended by the end id).
 * With "model": DIR (a model folder, e.g. a synthesized random one) the tokens come from the
 * model itself: the engine's logits on the CPU, picked by nx_sampler_pick_masked at
 * "temperature" (default 1) under the grammar's mask, after the prompt "JSON: ".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar.h"
#include "nx_engine.h"
#include "nx_loader.h"

/* Random constrained walks: a token picked among the mask's; a closing one (a single '"', '}'
 * or ']') a third of the time where one is allowed, so that strings and containers end; the
 * end id a quarter of the time where allowed. */
static json_t *generate(const nx_gram_t *g, const char *dir, int n, unsigned seed,
                        int max_tokens, nx_err_t *err)
{
    nx_tokenizer_t *tok = nx_tokenizer_load(dir, err);
    if (!tok)
        return NULL;
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, err);
    nx_gram_matcher_t *m = v ? nx_gram_matcher_new(g, v, err) : NULL;
    json_t *texts = json_array(), *finished = json_array();
    uint32_t size = v ? nx_gram_vocab_size(v) : 0;
    uint32_t *mask = calloc((size + 31) / 32 + 1, sizeof *mask);
    int32_t *all = malloc((size + 1) * sizeof *all), *single = malloc((size + 1) * sizeof *single);
    char *text = malloc(1 << 20);
    for (int w = 0; m && w < n; w++) {
        nx_gram_matcher_reset(m);
        size_t len = 0;
        bool done = false;
        for (int step = 0; step < max_tokens && !done; step++) {
            if (nx_gram_matcher_mask(m, mask, err) != NX_OK)
                break;
            uint32_t n_all = 0, n_single = 0;
            bool eos_ok = false;
            for (uint32_t id = 0; id < size; id++) {
                if (!(mask[id >> 5] >> (id & 31) & 1))
                    continue;
                if ((int32_t)id == eos) {
                    eos_ok = true;
                    continue;
                }
                size_t tl;
                all[n_all++] = (int32_t)id;
                const char *tb = nx_tokenizer_token_bytes(tok, (int32_t)id, &tl);
                if (tl == 1 && (tb[0] == '"' || tb[0] == '}' || tb[0] == ']'))
                    single[n_single++] = (int32_t)id;
            }
            int32_t pick;
            if (eos_ok && (n_all == 0 || rand_r(&seed) % 4 == 0))
                pick = eos;
            else if (n_all == 0)
                break;
            else if (n_single && rand_r(&seed) % 3 == 0)
                pick = single[rand_r(&seed) % n_single];
            else
                pick = all[rand_r(&seed) % n_all];
            if (nx_gram_matcher_accept_token(m, pick, err) != NX_OK)
                break;
            if (pick == eos) {
                done = true;
                break;
            }
            size_t tl;
            const char *b = nx_tokenizer_token_bytes(tok, pick, &tl);
            if (len + tl < (1 << 20)) {
                memcpy(text + len, b, tl);
                len += tl;
            }
        }
        /* a walk cut by the cap may end inside a character: keep its whole characters; a
         * finished one must be valid UTF-8 (json_stringn refuses it otherwise: null) */
        size_t keep = len;
        json_t *str;
        while (!(str = json_stringn(text, keep)) && !done && keep && len - keep < 4)
            keep--;
        json_array_append_new(texts, str ? str : json_null());
        json_array_append_new(finished, json_boolean(done));
    }
    free(text);
    free(mask);
    free(all);
    free(single);
    nx_gram_matcher_destroy(&m);
    nx_gram_vocab_destroy(&v);
    nx_tokenizer_destroy(&tok);
    return json_pack("{sbsoso}", "ok", 1, "texts", texts, "finished", finished);
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
    return (v + to - 1) / to * to;
}

/* Constrained generation with a real model on the CPU backend. */
static json_t *generate_model(const nx_gram_t *g, const char *dir, int n, unsigned seed,
                              int max_tokens, float temperature, nx_err_t *err)
{
    json_t *out = NULL, *texts = json_array(), *finished = json_array();
    nx_pool_t *pool = NULL;
    nx_loader_t *loader = NULL;
    nx_model_t *model = NULL;
    nx_engine_t *engine = NULL;
    nx_seq_t *seq = NULL;
    nx_sampler_t *sampler = NULL;
    nx_gram_vocab_t *v = NULL;
    nx_gram_matcher_t *m = NULL;
    uint32_t *mask = NULL;
    char *text = malloc(1 << 20);
    int32_t *ids = NULL, *history = malloc((size_t)(max_tokens + 1) * sizeof *history);
    size_t n_ids = 0;
    nx_tokenizer_t *tok = nx_tokenizer_load(dir, err);
    nx_model_config_t cfg;
    nx_st_t *st = tok && nx_config_load(dir, &cfg, err) == NX_OK ? nx_st_open(dir, err) : NULL;
    if (!st || !text || !history)
        goto done;
    const uint64_t chunk = 2ull << 20;
    uint32_t capacity = (uint32_t)max_tokens + 64;
    uint64_t bytes = round_up(nx_st_data_bytes(st) + 4096ull * (nx_st_file_count(st) + 1), chunk) +
                     round_up(nx_kv_bytes(&cfg, NX_DEVICE_CPU, capacity), chunk) + 4 * chunk;
    nx_st_destroy(&st);
    nx_pool_opts_t popts = {.device = NX_DEVICE_CPU, .bytes = bytes};
    nx_engine_opts_t eopts = {.threads = 1};
    nx_sampling_t sp = nx_sampling_default();
    sp.temperature = temperature;
    sp.seed = seed;
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    if (!(pool = nx_pool_new(&popts, err)) || !(loader = nx_loader_new(pool, NULL, err)) ||
        !(model = nx_loader_load(loader, dir, NULL, NULL, err)) ||
        !(engine = nx_engine_new(dir, model, pool, &eopts, err)) ||
        !(seq = nx_seq_new(engine, capacity, false, err)) ||
        !(sampler = nx_sampler_new(&sp, nx_engine_config(engine)->vocab, err)) ||
        !(v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, err)) ||
        !(m = nx_gram_matcher_new(g, v, err)) ||
        nx_tokenizer_encode(tok, "JSON: ", 6, &ids, &n_ids, err) != NX_OK)
        goto done;
    mask = calloc(nx_gram_mask_words(v), sizeof *mask);
    for (int w = 0; mask && w < n; w++) {
        nx_seq_reset(seq);
        nx_gram_matcher_reset(m);
        size_t len = 0, n_hist = 0;
        bool ended = false;
        if (nx_seq_feed(seq, ids, n_ids, err) != NX_OK)
            goto done;
        for (int step = 0; step < max_tokens; step++) {
            size_t rows;
            if (nx_engine_step(engine, &seq, 1, err) != NX_OK ||
                nx_gram_matcher_mask(m, mask, err) != NX_OK)
                goto done;
            const float *logits = nx_seq_logits(seq, &rows);
            int32_t id = nx_sampler_pick_masked(sampler, logits, history, n_hist, mask,
                                                nx_gram_vocab_size(v));
            if (id < 0 || nx_gram_matcher_accept_token(m, id, err) != NX_OK) {
                nx_err_set(err, NX_ESTATE, "picked %d outside the mask at step %d", id, step);
                goto done;
            }
            if (id == eos) {
                ended = true;
                break;
            }
            size_t tl;
            const char *b = nx_tokenizer_token_bytes(tok, id, &tl);
            if (len + tl < (1 << 20)) {
                memcpy(text + len, b, tl);
                len += tl;
            }
            history[n_hist++] = id;
            if (nx_seq_feed(seq, &id, 1, err) != NX_OK)
                goto done;
        }
        size_t keep = len;
        json_t *str;
        while (!(str = json_stringn(text, keep)) && !ended && keep && len - keep < 4)
            keep--;
        json_array_append_new(texts, str ? str : json_null());
        json_array_append_new(finished, json_boolean(ended));
    }
    out = json_pack("{sbsOsO}", "ok", 1, "texts", texts, "finished", finished);
done:
    json_decref(texts);
    json_decref(finished);
    free(mask);
    free(text);
    free(ids);
    free(history);
    nx_gram_matcher_destroy(&m);
    nx_gram_vocab_destroy(&v);
    nx_sampler_destroy(&sampler);
    if (seq)
        nx_seq_destroy(engine, &seq);
    nx_engine_destroy(&engine);
    if (loader)
        nx_loader_unload(loader, &model, false);
    nx_loader_destroy(&loader);
    nx_pool_destroy(&pool);
    nx_tokenizer_destroy(&tok);
    return out;
}

static json_t *run(json_t *req)
{
    nx_err_t err = {0};
    nx_gram_t *g = NULL;
    json_t *gbnf = json_object_get(req, "gbnf"), *schema = json_object_get(req, "schema");
    if (json_is_string(gbnf)) {
        g = nx_gram_from_gbnf(json_string_value(gbnf), json_string_length(gbnf), &err);
    } else if (schema) {
        nx_gram_schema_opts_t opts = {0};
        const char *draft = json_string_value(json_object_get(req, "draft"));
        if (draft && !strcmp(draft, "draft7"))
            opts.draft = NX_GRAM_DRAFT_07;
        else if (draft && !strcmp(draft, "2020-12"))
            opts.draft = NX_GRAM_DRAFT_2020_12;
        opts.strict = json_is_true(json_object_get(req, "strict"));
        char *text = json_dumps(schema, JSON_ENCODE_ANY | JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text)
            g = nx_gram_from_json_schema(text, strlen(text), &opts, &err);
        free(text);
    } else {
        return json_pack("{sbssss}", "ok", 0, "code", "EINVAL", "error", "no schema or gbnf");
    }
    if (!g)
        return json_pack("{sbssss}", "ok", 0, "code", nx_errname(err.code), "error", err.msg);
    const char *model_dir = json_string_value(json_object_get(req, "model"));
    if (model_dir) {
        json_t *t = json_object_get(req, "temperature");
        json_t *out = generate_model(
            g, model_dir, (int)json_integer_value(json_object_get(req, "generate")),
            (unsigned)json_integer_value(json_object_get(req, "seed")),
            (int)(json_integer_value(json_object_get(req, "max_tokens")) ?: 200),
            t ? (float)json_number_value(t) : 1.0f, &err);
        nx_gram_destroy(&g);
        return out ? out : json_pack("{sbssss}", "ok", 0, "code", nx_errname(err.code), "error",
                                     err.msg);
    }
    const char *dir = json_string_value(json_object_get(req, "tokenizer"));
    if (dir) {
        json_t *out = generate(g, dir, (int)json_integer_value(json_object_get(req, "generate")),
                               (unsigned)json_integer_value(json_object_get(req, "seed")),
                               (int)(json_integer_value(json_object_get(req, "max_tokens")) ?: 300),
                               &err);
        nx_gram_destroy(&g);
        return out ? out : json_pack("{sbssss}", "ok", 0, "code", nx_errname(err.code), "error",
                                     err.msg);
    }
    json_t *verdicts = json_array();
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, &err);
    json_t *inst;
    size_t i;
    json_array_foreach(json_object_get(req, "instances"), i, inst) {
        bool ok = false;
        if (m) {
            nx_gram_matcher_reset(m);
            ok = nx_gram_matcher_advance(m, json_string_value(inst), json_string_length(inst),
                                         NULL) == NX_OK &&
                 nx_gram_matcher_accepting(m);
        }
        json_array_append_new(verdicts, json_boolean(ok));
    }
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
    return json_pack("{sbso}", "ok", 1, "verdicts", verdicts);
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        json_error_t jerr;
        json_t *req = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        json_t *reply = req ? run(req)
                            : json_pack("{sbssss}", "ok", 0, "code", "EINVAL", "error", jerr.text);
        char *out = json_dumps(reply, JSON_COMPACT);
        printf("%s\n", out);
        fflush(stdout);
        free(out);
        json_decref(reply);
        json_decref(req);
    }
    free(line);
    return 0;
}
