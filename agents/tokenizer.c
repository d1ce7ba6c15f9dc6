/* tokenizer.c — loading tokenizer.json's model (vocab, merges, added tokens) into the tables
 * of tok_internal.h, and the tokenizer's small public getters. The normalizer, pre-tokenizer,
 * decoder and tokenizer_config.json are read by tok_config.c; encoding is tok_encode.c.
 */
#include "tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A vocab string (byte-level symbols, UTF-8) as raw bytes in out (cap >= strlen(s)).
 * Characters outside GPT-2's table keep their own UTF-8 bytes, as HF's ByteLevel decoder does.
 * Returns the byte count. */
static size_t symbols_to_bytes(const char *s, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) {
        int seq = nx__utf8_seq(p, strlen((const char *)p));
        if (seq <= 0) { /* jansson only hands out valid UTF-8; be safe anyway */
            out[n++] = (char)*p++;
            continue;
        }
        uint32_t cp = seq == 1   ? p[0]
                      : seq == 2 ? ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu)
                      : seq == 3 ? ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu)
                                 : ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) |
                                       ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
        int b = nx__cp_to_byte(cp);
        if (b >= 0)
            out[n++] = (char)b;
        else
            memcpy(out + n, p, (size_t)seq), n += (size_t)seq;
        p += seq;
    }
    return n;
}

static int set_token(nx_tokenizer_t *tok, int32_t id, const char *bytes, size_t len)
{
    nx__token_t *t = &tok->tokens[id];
    free(t->bytes);
    t->bytes = malloc(len + 1);
    if (!t->bytes)
        return NX_ENOMEM;
    memcpy(t->bytes, bytes, len);
    t->bytes[len] = '\0';
    t->len = (uint32_t)len;
    t->present = true;
    return NX_OK;
}

/* Highest id in model.vocab and added_tokens + 1, checking every id's type and range. */
static int count_ids(const nx_tokenizer_t *tok, json_t *vocab, json_t *added, uint32_t *out,
                     nx_err_t *err)
{
    int64_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= (1 << 30))
            return nx_err_set(err, NX_EFORMAT,
                              "'%s': model.vocab['%s'] is not a token id (an integer in "
                              "[0, 2^30))", tok->path, key);
        if (json_integer_value(v) > max_id)
            max_id = json_integer_value(v);
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= (1 << 30) ||
            !json_is_string(json_object_get(v, "content")))
            return nx_err_set(err, NX_EFORMAT,
                              "'%s': added_tokens[%zu] needs an integer id in [0, 2^30) and a "
                              "string content", tok->path, i);
        if (json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
    }
    if (max_id < 0)
        return nx_err_set(err, NX_EFORMAT, "'%s': model.vocab is empty", tok->path);
    *out = (uint32_t)(max_id + 1);
    return NX_OK;
}

static int load_vocab(nx_tokenizer_t *tok, json_t *vocab, nx_err_t *err)
{
    const char *key;
    json_t *v;
    char *buf = NULL;
    size_t buf_cap = 0;
    int rc = nx__strmap_init(&tok->vocab, json_object_size(vocab));
    json_object_foreach(vocab, key, v) {
        if (rc != NX_OK)
            break;
        size_t need = strlen(key) + 1;
        if (need > buf_cap) {
            free(buf);
            buf_cap = need * 2;
            if (!(buf = malloc(buf_cap))) {
                rc = NX_ENOMEM;
                break;
            }
        }
        int32_t id = (int32_t)json_integer_value(v);
        if (tok->tokens[id].present) {
            rc = nx_err_set(err, NX_EFORMAT, "'%s': model.vocab gives id %d to '%s' and '%s'",
                            tok->path, id, key, tok->tokens[id].bytes);
            break;
        }
        rc = set_token(tok, id, buf, symbols_to_bytes(key, buf));
        if (rc == NX_OK)
            nx__strmap_put(&tok->vocab, tok->tokens, id);
    }
    free(buf);
    if (rc == NX_ENOMEM)
        nx_err_set(err, rc, "'%s': out of memory reading model.vocab", tok->path);
    return rc;
}

/* The id of a merge side (vocab symbols), or -1. */
static int32_t symbol_id(const nx_tokenizer_t *tok, const char *s, size_t len)
{
    char small[256];
    char *buf = len < sizeof small ? small : malloc(len + 1);
    if (!buf)
        return -1;
    char *z = len < sizeof small ? small : buf;
    memcpy(z, s, len);
    z[len] = '\0';
    size_t n = symbols_to_bytes(z, z); /* shrinks or keeps the length: in place is safe */
    int32_t id = nx__strmap_get(&tok->vocab, tok->tokens, z, n);
    if (buf != small)
        free(buf);
    return id;
}

/* One entry of model.merges: "a b" or ["a", "b"]; splits it into the two sides. */
static bool merge_sides(json_t *m, const char **a, size_t *alen, const char **b, size_t *blen)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
            return false;
        *a = s, *alen = (size_t)(sp - s), *b = sp + 1, *blen = strlen(sp + 1);
        return true;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)), *alen = strlen(*a);
        *b = json_string_value(json_array_get(m, 1)), *blen = strlen(*b);
        return true;
    }
    return false;
}

static int load_merges(nx_tokenizer_t *tok, json_t *merges, nx_err_t *err)
{
    if (nx__pairmap_init(&tok->merges, json_array_size(merges)) != NX_OK)
        return nx_err_set(err, NX_ENOMEM, "'%s': out of memory for model.merges", tok->path);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *a, *b;
        size_t alen, blen;
        if (!merge_sides(m, &a, &alen, &b, &blen))
            return nx_err_set(err, NX_EFORMAT,
                              "'%s': model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
                              tok->path, i);
        int32_t left = symbol_id(tok, a, alen), right = symbol_id(tok, b, blen);
        char joined[1024];
        int32_t merged = -1;
        if (alen + blen < sizeof joined) {
            memcpy(joined, a, alen);
            memcpy(joined + alen, b, blen);
            merged = symbol_id(tok, joined, alen + blen);
        }
        if (left < 0 || right < 0 || merged < 0)
            return nx_err_set(err, NX_EFORMAT,
                              "'%s': model.merges[%zu] ('%.*s' + '%.*s'): %s is not in "
                              "model.vocab", tok->path, i, (int)alen, a, (int)blen, b,
                              left < 0 ? "the left side" : right < 0 ? "the right side"
                                                                     : "the merged token");
        nx__pairmap_put(&tok->merges, left, right, (uint32_t)i, merged);
    }
    return NX_OK;
}

static int cmp_added_longest_first(const void *pa, const void *pb)
{
    const nx__added_t *a = pa, *b = pb;
    return a->len != b->len ? (a->len < b->len ? 1 : -1) : (a->id > b->id) - (a->id < b->id);
}

static int load_added(nx_tokenizer_t *tok, json_t *added, nx_err_t *err)
{
    size_t n = json_array_size(added), i;
    json_t *a;
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added || nx__strmap_init(&tok->added_map, n) != NX_OK)
        return nx_err_set(err, NX_ENOMEM, "'%s': out of memory for added_tokens", tok->path);
    json_array_foreach(added, i, a) {
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        const char *content = json_string_value(json_object_get(a, "content"));
        size_t len = strlen(content);
        if (len == 0)
            return nx_err_set(err, NX_EFORMAT, "'%s': added_tokens[%zu] has empty content",
                              tok->path, i);
        nx__token_t *t = &tok->tokens[id];
        if (t->present && !t->added) { /* also in model.vocab (GPT-2 style): same text only */
            if (t->len != len || memcmp(t->bytes, content, len) != 0)
                return nx_err_set(err, NX_EFORMAT,
                                  "'%s': added_tokens[%zu] '%s' has id %d, which model.vocab "
                                  "gives to another token", tok->path, i, content, id);
        } else if (set_token(tok, id, content, len) != NX_OK) {
            return nx_err_set(err, NX_ENOMEM, "'%s': out of memory", tok->path);
        }
        t->added = true;
        t->special = json_is_true(json_object_get(a, "special"));
        if (!nx__strmap_put(&tok->added_map, tok->tokens, id))
            continue; /* same content twice: the first wins */
        tok->added[tok->added_count++] = (nx__added_t){
            .id = id, .content = t->bytes, .len = t->len,
            .lstrip = json_is_true(json_object_get(a, "lstrip")),
            .rstrip = json_is_true(json_object_get(a, "rstrip")),
            .single_word = json_is_true(json_object_get(a, "single_word"))};
        tok->added_first_byte[(unsigned char)content[0]] = true;
    }
    qsort(tok->added, tok->added_count, sizeof *tok->added, cmp_added_longest_first);
    return NX_OK;
}

static int check_model(const nx_tokenizer_t *tok, json_t *model, nx_err_t *err)
{
    if (!json_is_object(model))
        return nx_err_set(err, NX_EFORMAT, "'%s': no \"model\" object", tok->path);
    json_t *type = json_object_get(model, "type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0))
        return nx_err_set(err, NX_ENOTSUP,
                          "'%s': model.type '%s' is not supported (byte-level BPE only)",
                          tok->path, json_is_string(type) ? json_string_value(type) : "?");
    if (!json_is_object(json_object_get(model, "vocab")))
        return nx_err_set(err, NX_EFORMAT, "'%s': model.vocab is missing or not an object",
                          tok->path);
    if (!json_is_array(json_object_get(model, "merges")))
        return nx_err_set(err, NX_EFORMAT, "'%s': model.merges is missing or not a list",
                          tok->path);
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return nx_err_set(err, NX_ENOTSUP, "'%s': model.byte_fallback is not supported "
                          "(SentencePiece-style BPE)", tok->path);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(model, affix[i]));
        if (s && *s)
            return nx_err_set(err, NX_ENOTSUP, "'%s': model.%s '%s' is not supported",
                              tok->path, affix[i], s);
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return nx_err_set(err, NX_ENOTSUP, "'%s': model.dropout is not supported", tok->path);
    return NX_OK;
}

static int load_json(nx_tokenizer_t *tok, json_t *root, nx_err_t *err)
{
    json_t *model = json_object_get(root, "model");
    int rc = check_model(tok, model, err);
    if (rc != NX_OK)
        return rc;
    json_t *vocab = json_object_get(model, "vocab"), *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return nx_err_set(err, NX_EFORMAT, "'%s': added_tokens is not a list", tok->path);
    if ((rc = count_ids(tok, vocab, added, &tok->vocab_size, err)) != NX_OK)
        return rc;
    if (!(tok->tokens = calloc(tok->vocab_size, sizeof *tok->tokens)))
        return nx_err_set(err, NX_ENOMEM, "'%s': out of memory", tok->path);
    if ((rc = load_vocab(tok, vocab, err)) != NX_OK)
        return rc;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        tok->byte_id[b] = nx__strmap_get(&tok->vocab, tok->tokens, &c, 1);
    }
    if ((rc = load_merges(tok, json_object_get(model, "merges"), err)) != NX_OK)
        return rc;
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    if ((rc = load_added(tok, added, err)) != NX_OK)
        return rc;
    return nx__tok_load_pretok(tok, root, err);
}

/* A GGUF file's tokenizer: its keys rebuilt into tokenizer.json's structure (tok_gguf.c). */
static nx_tokenizer_t *load_gguf(const char *path, nx_err_t *err)
{
    nx_tokenizer_t *tok = calloc(1, sizeof *tok);
    json_t *root = NULL;
    nx_st_t *st = NULL;
    if (!tok || !(tok->path = strdup(path))) {
        nx_err_set(err, NX_ENOMEM, "loading the tokenizer of '%s': out of memory", path);
        goto fail;
    }
    if (!(st = nx_st_open(path, err)))
        goto fail;
    void *root_v = NULL;
    if (nx__tok_gguf_json(tok, st, &root_v, err) != NX_OK)
        goto fail;
    root = root_v;
    if (load_json(tok, root, err) != NX_OK)
        goto fail;
    json_decref(root);
    nx_st_destroy(&st);
    return tok;
fail:
    json_decref(root);
    nx_st_destroy(&st);
    nx_tokenizer_destroy(&tok);
    return NULL;
}

nx_tokenizer_t *nx_tokenizer_load(const char *model_dir, nx_err_t *err)
{
    if (nx_path_is_gguf(model_dir))
        return load_gguf(model_dir, err);
    nx_tokenizer_t *tok = calloc(1, sizeof *tok);
    json_t *root = NULL;
    int rc = NX_ENOMEM;
    size_t plen = strlen(model_dir) + sizeof "/tokenizer.json";
    if (!tok || !(tok->path = malloc(plen))) {
        nx_err_set(err, NX_ENOMEM, "loading the tokenizer of '%s': out of memory", model_dir);
        goto fail;
    }
    snprintf(tok->path, plen, "%s/tokenizer.json", model_dir);
    struct stat st;
    if (stat(tok->path, &st) != 0) {
        nx_err_set(err, NX_ENOTFOUND, "'%s': no such file", tok->path);
        goto fail;
    }
    json_error_t jerr;
    if (!(root = json_load_file(tok->path, JSON_ALLOW_NUL, &jerr)) || !json_is_object(root)) {
        nx_err_set(err, NX_EFORMAT, "'%s' line %d: %s", tok->path, root ? 1 : jerr.line,
                   root ? "not a JSON object" : jerr.text);
        goto fail;
    }
    if ((rc = load_json(tok, root, err)) != NX_OK)
        goto fail;
    if ((rc = nx__tok_load_config(tok, model_dir, err)) != NX_OK)
        goto fail;
    json_decref(root);
    return tok;
fail:
    json_decref(root);
    nx_tokenizer_destroy(&tok);
    return NULL;
}

void nx_tokenizer_destroy(nx_tokenizer_t **self_p)
{
    nx_tokenizer_t *tok = self_p ? *self_p : NULL;
    if (!tok)
        return;
    for (uint32_t i = 0; tok->tokens && i < tok->vocab_size; i++)
        free(tok->tokens[i].bytes);
    free(tok->tokens);
    nx__strmap_free(&tok->vocab);
    nx__strmap_free(&tok->added_map);
    nx__pairmap_free(&tok->merges);
    free(tok->added);
    pcre2_code_free(tok->regex);
    free(tok->chat_template);
    free(tok->bos_token);
    free(tok->eos_token);
    free(tok->path);
    free(tok);
    *self_p = NULL;
}

uint32_t nx_tokenizer_vocab_size(const nx_tokenizer_t *self)
{
    return self->vocab_size;
}

const char *nx_tokenizer_token_bytes(const nx_tokenizer_t *self, int32_t id, size_t *len_out)
{
    if (id < 0 || (uint32_t)id >= self->vocab_size || !self->tokens[id].present)
        return NULL;
    if (len_out)
        *len_out = self->tokens[id].len;
    return self->tokens[id].bytes;
}

int32_t nx_tokenizer_token_id(const nx_tokenizer_t *self, const char *token)
{
    int32_t id = nx__strmap_get(&self->added_map, self->tokens, token, strlen(token));
    return id >= 0 ? id : nx__strmap_get(&self->vocab, self->tokens, token, strlen(token));
}

bool nx_tokenizer_is_special(const nx_tokenizer_t *self, int32_t id)
{
    return id >= 0 && (uint32_t)id < self->vocab_size && self->tokens[id].special;
}

const char *nx_tokenizer_chat_template(const nx_tokenizer_t *self)
{
    return self->chat_template;
}

const char *nx_tokenizer_bos_token(const nx_tokenizer_t *self)
{
    return self->bos_token;
}

const char *nx_tokenizer_eos_token(const nx_tokenizer_t *self)
{
    return self->eos_token;
}
