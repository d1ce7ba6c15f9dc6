/* tok_gguf.c — a GGUF file's tokenizer (tokenizer.ggml.*) as the tokenizer.json it stands for.
 *
 * llama.cpp's converter writes a Hugging Face byte-level BPE tokenizer into GGUF as parallel
 * arrays (tokens in their byte-level spelling, token types, merges "a b") plus the name of the
 * pre-tokenizer (tokenizer.ggml.pre) instead of its regex. Rebuilding the tokenizer.json
 * structure from them and loading it through the same code as a tokenizer.json keeps one
 * tokenizer, so a GGUF model encodes exactly as its Hugging Face original does:
 *   NORMAL and BYTE tokens  -> model.vocab
 *   CONTROL                 -> added_tokens, special: true
 *   USER_DEFINED            -> added_tokens, special: false (Qwen3's <think>)
 *   UNUSED, UNKNOWN         -> left out (vocabulary padding such as "[PAD151643]")
 *   tokenizer.ggml.pre      -> the Split regex, NFC and ignore_merges of that tokenizer family
 * The pre-tokenizer table is shared with `nexusctl model quantize`, which goes the other way.
 */
#include "tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Qwen2/Qwen3's pre-tokenizer regex; Llama 3's is the same with \p{N}{1,3}. */
static const char qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* tokenizer.ggml.pre names llama.cpp gives these families (the first of each is what the
 * converter writes today; the others are older spellings it still reads). */
static const nx__pretok_kind_t pretok_kinds[] = {
    {"qwen2", qwen2_regex, true, false},
    {"llama-bpe", llama3_regex, false, true},
    {"llama3", llama3_regex, false, true},
    {"llama-v3", llama3_regex, false, true},
    {"gpt-2", NULL, false, false},
};

const nx__pretok_kind_t *nx__pretok_by_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof pretok_kinds / sizeof *pretok_kinds; i++)
        if (strcmp(pretok_kinds[i].gguf_name, name) == 0)
            return &pretok_kinds[i];
    return NULL;
}

const nx__pretok_kind_t *nx__pretok_by_regex(const char *split_regex)
{
    for (size_t i = 0; i < sizeof pretok_kinds / sizeof *pretok_kinds; i++) {
        const char *r = pretok_kinds[i].regex;
        if (split_regex ? r && strcmp(r, split_regex) == 0 : !r)
            return &pretok_kinds[i];
    }
    return NULL;
}

const char *nx__pretok_known_names(void)
{
    return "qwen2, llama-bpe (llama3, llama-v3), gpt-2";
}

enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER = 4, TOK_UNUSED = 5,
       TOK_BYTE = 6 };

typedef struct gguf_src {
    const nx_st_t *st;
    const char *path;
    nx_err_t *err;
} gguf_src_t;

static const nx_gguf_kv_t *find_array(gguf_src_t *g, const char *key, nx_gguf_type_t elem,
                                      bool required, int *rc)
{
    const nx_gguf_kv_t *kv = nx_st_gguf_find(g->st, key);
    *rc = NX_OK;
    if (!kv) {
        if (required)
            *rc = nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' is missing", g->path, key);
        return NULL;
    }
    bool ints = elem == NX_GGUF_I32; /* token types: any integer type is fine */
    nx_gguf_type_t have = nx_gguf_kv_elem_type(kv);
    if (nx_gguf_kv_type(kv) != NX_GGUF_ARRAY ||
        (ints ? have == NX_GGUF_STRING || have == NX_GGUF_F32 || have == NX_GGUF_F64 ||
                    have == NX_GGUF_BOOL
              : have != elem)) {
        *rc = nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' must be an array of %s", g->path,
                         key, ints ? "integers" : "strings");
        return NULL;
    }
    return kv;
}

/* A token id key (tokenizer.ggml.bos_token_id, ...): -1 when absent. */
static int token_id_key(gguf_src_t *g, const char *key, uint64_t count, int64_t *out)
{
    const nx_gguf_kv_t *kv = nx_st_gguf_find(g->st, key);
    *out = -1;
    if (!kv)
        return NX_OK;
    uint64_t id;
    if (nx_gguf_kv_type(kv) == NX_GGUF_ARRAY || !nx_gguf_get_u64(kv, 0, &id) || id >= count)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' must be a token id below %llu",
                          g->path, key, (unsigned long long)count);
    *out = (int64_t)id;
    return NX_OK;
}

static json_t *added_token(int64_t id, const char *text, bool special)
{
    return json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content",
                     text, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized",
                     !special, "special", special);
}

/* model.vocab, model.merges and added_tokens from the arrays. */
static int build_model(gguf_src_t *g, json_t *root, const nx_gguf_kv_t *tokens,
                       const nx_gguf_kv_t *types, const nx_gguf_kv_t *merges,
                       bool ignore_merges)
{
    uint64_t count = nx_gguf_kv_count(tokens);
    json_t *vocab = json_object(), *merge_list = json_array(), *added = json_array();
    json_t *model = json_pack("{s:s, s:o, s:o, s:b, s:b}", "type", "BPE", "vocab", vocab,
                              "merges", merge_list, "ignore_merges", ignore_merges,
                              "byte_fallback", 0);
    if (!model || json_object_set_new(root, "model", model) ||
        json_object_set_new(root, "added_tokens", added))
        return nx_err_set(g->err, NX_ENOMEM, "'%s': out of memory for the tokenizer", g->path);
    for (uint64_t i = 0; i < count; i++) {
        size_t len;
        const char *text = nx_gguf_get_str(tokens, i, &len);
        int64_t type = TOK_NORMAL;
        if (types && !nx_gguf_get_i64(types, i, &type))
            return nx_err_set(g->err, NX_EFORMAT, "'%s': tokenizer.ggml.token_type[%llu] is "
                              "not a token type", g->path, (unsigned long long)i);
        if (!text || strlen(text) != len)
            return nx_err_set(g->err, NX_EFORMAT, "'%s': tokenizer.ggml.tokens[%llu] is not "
                              "text without NUL bytes", g->path, (unsigned long long)i);
        if (type == TOK_UNUSED || type == TOK_UNKNOWN || len == 0)
            continue;
        int rc = 0;
        if (type == TOK_CONTROL || type == TOK_USER)
            rc = json_array_append_new(added, added_token((int64_t)i, text, type == TOK_CONTROL));
        else if (type == TOK_NORMAL || type == TOK_BYTE)
            rc = json_object_set_new(vocab, text, json_integer((json_int_t)i));
        else
            return nx_err_set(g->err, NX_EFORMAT, "'%s': tokenizer.ggml.token_type[%llu] is "
                              "%lld, not a GGUF token type (1..6)", g->path,
                              (unsigned long long)i, (long long)type);
        if (rc)
            return nx_err_set(g->err, NX_ENOMEM, "'%s': out of memory for the tokenizer",
                              g->path);
    }
    for (uint64_t i = 0; merges && i < nx_gguf_kv_count(merges); i++) {
        const char *m = nx_gguf_get_str(merges, i, NULL);
        if (!m || json_array_append_new(merge_list, json_string(m)))
            return nx_err_set(g->err, m ? NX_ENOMEM : NX_EFORMAT,
                              "'%s': tokenizer.ggml.merges[%llu] %s", g->path,
                              (unsigned long long)i, m ? "out of memory" : "is not valid text");
    }
    return NX_OK;
}

/* normalizer, pre_tokenizer and decoder of the family named by tokenizer.ggml.pre. */
static int build_pretok(gguf_src_t *g, json_t *root, const nx__pretok_kind_t *kind,
                        bool add_prefix_space)
{
    json_t *byte_level = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel",
                                   "add_prefix_space", add_prefix_space, "trim_offsets", 0,
                                   "use_regex", kind->regex == NULL);
    json_t *pre = byte_level;
    if (kind->regex)
        pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                        "pretokenizers", "type", "Split", "pattern", "Regex", kind->regex,
                        "behavior", "Isolated", "invert", 0, byte_level);
    json_t *norm = kind->nfc ? json_pack("{s:s}", "type", "NFC") : json_null();
    json_t *dec = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                            1, "trim_offsets", 1, "use_regex", 1);
    if (!pre || !norm || !dec || json_object_set_new(root, "pre_tokenizer", pre) ||
        json_object_set_new(root, "normalizer", norm) ||
        json_object_set_new(root, "decoder", dec))
        return nx_err_set(g->err, NX_ENOMEM, "'%s': out of memory for the tokenizer", g->path);
    return NX_OK;
}

static int dup_token_text(gguf_src_t *g, const nx_gguf_kv_t *tokens, int64_t id, char **out)
{
    if (id < 0)
        return NX_OK;
    const char *text = nx_gguf_get_str(tokens, (uint64_t)id, NULL);
    if (text && !(*out = strdup(text)))
        return nx_err_set(g->err, NX_ENOMEM, "'%s': out of memory", g->path);
    return NX_OK;
}

static int read_strings(gguf_src_t *g, nx_tokenizer_t *tok, const nx_gguf_kv_t *tokens)
{
    const nx_gguf_kv_t *tmpl = nx_st_gguf_find(g->st, "tokenizer.chat_template");
    if (tmpl) {
        const char *text = nx_gguf_get_str(tmpl, 0, NULL);
        if (!text || nx_gguf_kv_type(tmpl) != NX_GGUF_STRING)
            return nx_err_set(g->err, NX_EFORMAT,
                              "'%s': key 'tokenizer.chat_template' must be a string", g->path);
        if (!(tok->chat_template = strdup(text)))
            return nx_err_set(g->err, NX_ENOMEM, "'%s': out of memory", g->path);
    }
    uint64_t count = nx_gguf_kv_count(tokens);
    int64_t bos, eos;
    int rc = token_id_key(g, "tokenizer.ggml.bos_token_id", count, &bos);
    if (rc == NX_OK)
        rc = token_id_key(g, "tokenizer.ggml.eos_token_id", count, &eos);
    if (rc == NX_OK)
        rc = dup_token_text(g, tokens, bos, &tok->bos_token);
    if (rc == NX_OK)
        rc = dup_token_text(g, tokens, eos, &tok->eos_token);
    return rc;
}

int nx__tok_gguf_json(nx_tokenizer_t *tok, const nx_st_t *st, void **root_out, nx_err_t *err)
{
    gguf_src_t g = {st, nx_st_path(st), err};
    const nx_gguf_kv_t *model = nx_st_gguf_find(st, "tokenizer.ggml.model");
    const char *model_name = model ? nx_gguf_get_str(model, 0, NULL) : NULL;
    if (!model_name)
        return nx_err_set(err, NX_EFORMAT, "'%s': key 'tokenizer.ggml.model' is missing or not "
                          "a string (the file has no tokenizer)", g.path);
    if (strcmp(model_name, "gpt2") != 0)
        return nx_err_set(err, NX_ENOTSUP, "'%s': tokenizer.ggml.model '%s' is not supported "
                          "(byte-level BPE, 'gpt2', only)", g.path, model_name);
    const nx_gguf_kv_t *pre_kv = nx_st_gguf_find(st, "tokenizer.ggml.pre");
    const char *pre_name = pre_kv ? nx_gguf_get_str(pre_kv, 0, NULL) : NULL;
    const nx__pretok_kind_t *kind = nx__pretok_by_name(pre_name ? pre_name : "gpt-2");
    if (!kind)
        return nx_err_set(err, NX_ENOTSUP, "'%s': tokenizer.ggml.pre '%s' is not supported "
                          "(known: %s)", g.path, pre_name, nx__pretok_known_names());
    int rc;
    const nx_gguf_kv_t *tokens = find_array(&g, "tokenizer.ggml.tokens", NX_GGUF_STRING, true,
                                            &rc);
    const nx_gguf_kv_t *types =
        rc ? NULL : find_array(&g, "tokenizer.ggml.token_type", NX_GGUF_I32, false, &rc);
    const nx_gguf_kv_t *merges =
        rc ? NULL : find_array(&g, "tokenizer.ggml.merges", NX_GGUF_STRING, true, &rc);
    if (rc != NX_OK)
        return rc;
    if (types && nx_gguf_kv_count(types) != nx_gguf_kv_count(tokens))
        return nx_err_set(err, NX_EFORMAT, "'%s': tokenizer.ggml.token_type has %llu entries, "
                          "tokenizer.ggml.tokens %llu", g.path,
                          (unsigned long long)nx_gguf_kv_count(types),
                          (unsigned long long)nx_gguf_kv_count(tokens));
    bool prefix_space = false;
    const nx_gguf_kv_t *space = nx_st_gguf_find(st, "tokenizer.ggml.add_space_prefix");
    if (space && !nx_gguf_get_bool(space, 0, &prefix_space))
        return nx_err_set(err, NX_EFORMAT, "'%s': key 'tokenizer.ggml.add_space_prefix' must "
                          "be a bool", g.path);
    json_t *root = json_object();
    if (!root)
        return nx_err_set(err, NX_ENOMEM, "'%s': out of memory", g.path);
    rc = build_model(&g, root, tokens, types, merges, kind->ignore_merges);
    if (rc == NX_OK)
        rc = build_pretok(&g, root, kind, prefix_space);
    if (rc == NX_OK)
        rc = read_strings(&g, tok, tokens);
    if (rc != NX_OK) {
        json_decref(root);
        return rc;
    }
    *root_out = root;
    return NX_OK;
}
