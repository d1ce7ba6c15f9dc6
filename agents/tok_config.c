/* tok_config.c — the parts of tokenizer.json around the model (normalizer, pre_tokenizer,
 * decoder) and tokenizer_config.json (chat_template, bos_token, eos_token). Only what
 * byte-level BPE checkpoints (Qwen2/Qwen3, Llama 3, GPT-2 style) use is accepted; anything
 * else is NX_ENOTSUP naming the field, so a tokenizer is never run half-understood.
 */
#include "tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What a ByteLevel pre-tokenizer with use_regex true splits by (GPT-2's pattern). */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *type_of(json_t *obj)
{
    const char *t = json_string_value(json_object_get(obj, "type"));
    return t ? t : "?";
}

static int load_normalizer(nx_tokenizer_t *tok, json_t *norm, nx_err_t *err)
{
    if (!norm || json_is_null(norm))
        return NX_OK;
    json_t *list = NULL;
    if (strcmp(type_of(norm), "Sequence") == 0) {
        list = json_object_get(norm, "normalizers");
        if (!json_is_array(list))
            return nx_err_set(err, NX_EFORMAT, "'%s': normalizer.normalizers is not a list",
                              tok->path);
    }
    size_t n = list ? json_array_size(list) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *step = list ? json_array_get(list, i) : norm;
        if (strcmp(type_of(step), "NFC") != 0)
            return nx_err_set(err, NX_ENOTSUP,
                              "'%s': normalizer%s type '%s' is not supported (NFC only)",
                              tok->path, list ? ".normalizers[]" : "", type_of(step));
        tok->nfc = true;
    }
    return NX_OK;
}

static int compile_regex(nx_tokenizer_t *tok, const char *pattern, size_t len, bool literal,
                         nx_err_t *err)
{
    if (tok->regex)
        return nx_err_set(err, NX_ENOTSUP, "'%s': pre_tokenizer: more than one regex split is "
                          "not supported", tok->path);
    int code;
    PCRE2_SIZE offset;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    tok->regex = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &code, &offset, NULL);
    if (!tok->regex) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return nx_err_set(err, NX_EFORMAT, "'%s': pre_tokenizer pattern does not compile at "
                          "offset %zu: %s", tok->path, (size_t)offset, (char *)msg);
    }
    tok->regex_jit = pcre2_jit_compile(tok->regex, PCRE2_JIT_COMPLETE) == 0;
    return NX_OK;
}

static int load_split(nx_tokenizer_t *tok, json_t *split, nx_err_t *err)
{
    json_t *pattern = json_object_get(split, "pattern");
    const char *behavior = json_string_value(json_object_get(split, "behavior"));
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return nx_err_set(err, NX_ENOTSUP, "'%s': pre_tokenizer Split behavior '%s' is not "
                          "supported (Isolated only)", tok->path, behavior ? behavior : "?");
    if (json_is_true(json_object_get(split, "invert")))
        return nx_err_set(err, NX_ENOTSUP, "'%s': pre_tokenizer Split invert is not supported",
                          tok->path);
    json_t *regex = json_object_get(pattern, "Regex"), *str = json_object_get(pattern, "String");
    if (json_is_string(regex))
        return compile_regex(tok, json_string_value(regex), json_string_length(regex), false,
                             err);
    if (json_is_string(str))
        return compile_regex(tok, json_string_value(str), json_string_length(str), true, err);
    return nx_err_set(err, NX_EFORMAT, "'%s': pre_tokenizer Split has no pattern.Regex or "
                      "pattern.String", tok->path);
}

static int load_pre_tokenizer(nx_tokenizer_t *tok, json_t *pre, nx_err_t *err)
{
    if (!json_is_object(pre))
        return nx_err_set(err, NX_ENOTSUP, "'%s': pre_tokenizer is missing; byte-level BPE "
                          "needs a ByteLevel pre-tokenizer", tok->path);
    json_t *list = NULL;
    if (strcmp(type_of(pre), "Sequence") == 0 &&
        !json_is_array(list = json_object_get(pre, "pretokenizers")))
        return nx_err_set(err, NX_EFORMAT, "'%s': pre_tokenizer.pretokenizers is not a list",
                          tok->path);
    size_t n = list ? json_array_size(list) : 1;
    bool byte_level = false;
    for (size_t i = 0; i < n; i++) {
        json_t *step = list ? json_array_get(list, i) : pre;
        const char *type = type_of(step);
        int rc = NX_OK;
        if (strcmp(type, "Split") == 0 && !byte_level) {
            rc = load_split(tok, step, err);
        } else if (strcmp(type, "ByteLevel") == 0 && !byte_level) {
            byte_level = true;
            tok->add_prefix_space = json_is_true(json_object_get(step, "add_prefix_space"));
            json_t *use_regex = json_object_get(step, "use_regex");
            if (!use_regex || json_is_true(use_regex)) /* HF's default is true */
                rc = compile_regex(tok, gpt2_regex, sizeof gpt2_regex - 1, false, err);
        } else {
            return nx_err_set(err, NX_ENOTSUP, "'%s': pre_tokenizer%s type '%s' is not "
                              "supported here (Split{Regex, Isolated} then ByteLevel)",
                              tok->path, list ? ".pretokenizers[]" : "", type);
        }
        if (rc != NX_OK)
            return rc;
    }
    if (!byte_level)
        return nx_err_set(err, NX_ENOTSUP, "'%s': pre_tokenizer has no ByteLevel step; only "
                          "byte-level BPE is supported", tok->path);
    return NX_OK;
}

static int load_decoder(nx_tokenizer_t *tok, json_t *dec, nx_err_t *err)
{
    if (!dec || json_is_null(dec))
        return NX_OK;
    json_t *list = strcmp(type_of(dec), "Sequence") == 0 ? json_object_get(dec, "decoders")
                                                          : NULL;
    size_t n = list ? json_array_size(list) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *step = list ? json_array_get(list, i) : dec;
        if (strcmp(type_of(step), "ByteLevel") != 0)
            return nx_err_set(err, NX_ENOTSUP, "'%s': decoder%s type '%s' is not supported "
                              "(ByteLevel only)", tok->path, list ? ".decoders[]" : "",
                              type_of(step));
    }
    return NX_OK;
}

int nx__tok_load_pretok(nx_tokenizer_t *tok, void *root_v, nx_err_t *err)
{
    json_t *root = root_v;
    int rc = load_normalizer(tok, json_object_get(root, "normalizer"), err);
    if (rc == NX_OK)
        rc = load_pre_tokenizer(tok, json_object_get(root, "pre_tokenizer"), err);
    if (rc == NX_OK)
        rc = load_decoder(tok, json_object_get(root, "decoder"), err);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * tokenizer_config.json
 */

/* A token field: "text" or {"content": "text"}; NULL otherwise. */
static const char *token_field(json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    return json_string_value(v);
}

/* chat_template: a string, or a list of {"name", "template"} (the one named "default"). */
static const char *template_field(json_t *cfg)
{
    json_t *v = json_object_get(cfg, "chat_template");
    if (json_is_string(v))
        return json_string_value(v);
    size_t i;
    json_t *entry;
    const char *first = NULL;
    json_array_foreach(v, i, entry) {
        const char *name = json_string_value(json_object_get(entry, "name"));
        const char *tmpl = json_string_value(json_object_get(entry, "template"));
        if (tmpl && !first)
            first = tmpl;
        if (tmpl && name && strcmp(name, "default") == 0)
            return tmpl;
    }
    return first;
}

static int dup_field(char **dst, const char *src)
{
    if (!src)
        return NX_OK;
    *dst = strdup(src);
    return *dst ? NX_OK : NX_ENOMEM;
}

int nx__tok_load_config(nx_tokenizer_t *tok, const char *model_dir, nx_err_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return NX_OK; /* optional */
    json_error_t jerr;
    json_t *cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, &jerr); /* Llama 3: 1e30 */
    if (!cfg || !json_is_object(cfg)) {
        json_decref(cfg);
        return nx_err_set(err, NX_EFORMAT, "'%s' line %d: %s", path, cfg ? 1 : jerr.line,
                          cfg ? "not a JSON object" : jerr.text);
    }
    int rc = dup_field(&tok->chat_template, template_field(cfg));
    if (rc == NX_OK)
        rc = dup_field(&tok->bos_token, token_field(cfg, "bos_token"));
    if (rc == NX_OK)
        rc = dup_field(&tok->eos_token, token_field(cfg, "eos_token"));
    json_decref(cfg);
    if (rc != NX_OK)
        return nx_err_set(err, rc, "'%s': out of memory", path);
    return NX_OK;
}
