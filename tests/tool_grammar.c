/* tool_grammar.c — the grammar engine driven by JSON lines, for tests/test_json_schema_suite.py
 * (one process for the whole suite). Each stdin line is an object:
 *   {"schema": <schema>, "draft": "2020-12"|"draft7"|null, "strict": false, "instances": [TEXT...]}
 *   {"gbnf": "<grammar text>", "instances": [TEXT...]}
 * and each reply line is {"ok": true, "verdicts": [bool...]} (each instance's bytes fed to a
 * matcher that must end accepting) or {"ok": false, "code": "ENOTSUP", "error": "..."}.
 * With "tokenizer": DIR and "generate": N (and "seed", "max_tokens") instead of instances, it
 * samples N token walks through the masks, as a model with random weights would, and replies
 * {"ok": true, "texts": [...], "finished": [bool...]} (finished: ended by the end id).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar.h"
#include "nx_engine.h"

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
