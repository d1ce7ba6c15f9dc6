/* synth_tokenizer.c — tokenizer.json and tokenizer_config.json for synthesized models, in the
 * Hugging Face tokenizers format, or a copy of a real tokenizer with its bos/eos ids looked up.
 *
 * The synthesized tokenizer is a real byte-level BPE (synth_bpe.c): the 256 byte symbols under
 * GPT-2's byte-to-unicode mapping, the trained merges, then the architecture's special tokens.
 * The pre-tokenizer regex, normalizer, post-processor and merge spelling follow what each
 * architecture's published tokenizer.json uses, so HF tokenizers loads every variant; qwen2
 * writes merges as "a b" strings and qwen3/llama as ["a", "b"] pairs, so both formats exist.
 */
#include "synth_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_bpe.h"

#define TOKENIZER_MERGES 400

/* Qwen2/Qwen3's pre-tokenizer regex; Llama 3's is the same with \p{N}{1,3}. */
static const char qwen_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char llama_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ChatML. Qwen3's variant drops earlier turns' reasoning and, with enable_thinking=false,
 * pre-fills an empty think block, as Qwen3's own template does. */
static const char chatml_template[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
static const char qwen3_template[] =
    "{%- for message in messages %}"
    "{%- set content = message['content'] %}"
    "{%- if message['role'] == 'assistant' and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}";
static const char llama3_template[] =
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

typedef struct special {
    const char *content;
    bool special; /* Qwen3's <think> tags are added but not special */
} special_t;

static const special_t qwen2_specials[] = {
    {"<|endoftext|>", true}, {"<|im_start|>", true}, {"<|im_end|>", true}, {NULL, false}};
static const special_t qwen3_specials[] = {{"<|endoftext|>", true}, {"<|im_start|>", true},
                                           {"<|im_end|>", true},    {"<think>", false},
                                           {"</think>", false},     {NULL, false}};
static const special_t llama_specials[] = {
    {"<|begin_of_text|>", true}, {"<|end_of_text|>", true}, {"<|start_header_id|>", true},
    {"<|end_header_id|>", true}, {"<|eot_id|>", true},      {NULL, false}};

static const special_t *arch_specials(nx_synth_arch_t arch)
{
    return arch == NX_SYNTH_LLAMA ? llama_specials
           : arch == NX_SYNTH_QWEN3 ? qwen3_specials
                                    : qwen2_specials;
}

/* Token strings for bos, eos and pad per architecture (eos2 only for Llama 3). */
typedef struct role_tokens {
    const char *bos_config; /* as config.json's bos_token_id */
    const char *bos_tokcfg; /* tokenizer_config.json's bos_token (NULL: null, as Qwen) */
    const char *eos, *eos2, *pad;
    const char *eos_tokcfg;
} role_tokens_t;

static role_tokens_t arch_roles(nx_synth_arch_t arch)
{
    if (arch == NX_SYNTH_LLAMA)
        return (role_tokens_t){"<|begin_of_text|>", "<|begin_of_text|>", "<|end_of_text|>",
                               "<|eot_id|>",        "<|end_of_text|>",   "<|eot_id|>"};
    return (role_tokens_t){"<|endoftext|>", NULL, "<|im_end|>", NULL, "<|endoftext|>",
                           "<|im_end|>"};
}

/* ------------------------------------------------------------------------------------------
 * Building tokenizer.json
 */

static json_t *added_token_json(uint32_t id, const special_t *sp)
{
    return json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content",
                     sp->content, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                     "special", sp->special);
}

static json_t *byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                     add_prefix_space, "trim_offsets", trim_offsets, "use_regex", use_regex);
}

static json_t *pre_tokenizer_json(nx_synth_arch_t arch)
{
    const char *regex = arch == NX_SYNTH_LLAMA ? llama_regex : qwen_regex;
    json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex",
                              regex, "behavior", "Isolated", "invert", 0);
    return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split,
                     byte_level(false, false, false));
}

/* Llama 3: ByteLevel then a template that puts <|begin_of_text|> in front. */
static json_t *llama_post_processor(uint32_t bos_id)
{
    const char *bos = "<|begin_of_text|>";
    json_t *single = json_pack("[{s:{s:s, s:i}}, {s:{s:s, s:i}}]", "SpecialToken", "id", bos,
                               "type_id", 0, "Sequence", "id", "A", "type_id", 0);
    json_t *pair = json_pack("[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}]",
                             "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A",
                             "type_id", 0, "SpecialToken", "id", bos, "type_id", 1, "Sequence",
                             "id", "B", "type_id", 1);
    json_t *specials = json_pack("{s:{s:s, s:[I], s:[s]}}", bos, "id", bos, "ids",
                                 (json_int_t)bos_id, "tokens", bos);
    json_t *tmpl = json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single",
                             single, "pair", pair, "special_tokens", specials);
    return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "processors",
                     byte_level(true, false, true), tmpl);
}

static json_t *bpe_model_json(const nx__bpe_t *bpe, nx_synth_arch_t arch)
{
    json_t *vocab = json_object(), *merges = json_array();
    char left[4 * NX__BPE_MAX_TOKEN_BYTES + 1], right[sizeof left];
    char joined[2 * sizeof left + 1];
    for (uint32_t id = 0; id < bpe->token_count; id++) {
        nx__bpe_symbol(&bpe->tokens[id], left, sizeof left);
        json_object_set_new(vocab, left, json_integer(id));
    }
    for (uint32_t m = 0; m < bpe->merge_count; m++) {
        nx__bpe_symbol(&bpe->tokens[bpe->merges[m].left], left, sizeof left);
        nx__bpe_symbol(&bpe->tokens[bpe->merges[m].right], right, sizeof right);
        if (arch == NX_SYNTH_QWEN2) { /* byte-level symbols never hold a plain space */
            snprintf(joined, sizeof joined, "%s %s", left, right);
            json_array_append_new(merges, json_string(joined));
        } else {
            json_array_append_new(merges, json_pack("[s, s]", left, right));
        }
    }
    return json_pack("{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                     "dropout", "unk_token", "continuing_subword_prefix", "",
                     "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback", 0,
                     "ignore_merges", arch == NX_SYNTH_LLAMA, "vocab", vocab, "merges", merges);
}

static json_t *tokenizer_json(const nx__bpe_t *bpe, nx_synth_arch_t arch)
{
    const special_t *specials = arch_specials(arch);
    json_t *added = json_array();
    for (uint32_t i = 0; specials[i].content; i++)
        json_array_append_new(added, added_token_json(bpe->token_count + i, &specials[i]));
    bool llama = arch == NX_SYNTH_LLAMA;
    json_t *normalizer = llama ? json_null() : json_pack("{s:s}", "type", "NFC");
    json_t *post = llama ? llama_post_processor(bpe->token_count)
                         : byte_level(false, false, false);
    json_t *decoder = llama ? byte_level(true, true, true) : byte_level(false, false, false);
    return json_pack("{s:s, s:n, s:n, s:o, s:o, s:o, s:o, s:o, s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added, "normalizer", normalizer,
                     "pre_tokenizer", pre_tokenizer_json(arch), "post_processor", post,
                     "decoder", decoder, "model", bpe_model_json(bpe, arch));
}

static json_t *token_or_null(const char *content)
{
    return content ? json_string(content) : json_null();
}

static json_t *tokenizer_config_json(uint32_t first_special, nx_synth_arch_t arch)
{
    const special_t *specials = arch_specials(arch);
    role_tokens_t roles = arch_roles(arch);
    bool llama = arch == NX_SYNTH_LLAMA;
    json_t *decoder = json_object();
    for (uint32_t i = 0; specials[i].content; i++) {
        char key[16];
        snprintf(key, sizeof key, "%u", first_special + i);
        json_object_set_new(decoder, key,
                            json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content",
                                      specials[i].content, "lstrip", 0, "normalized", 0,
                                      "rstrip", 0, "single_word", 0, "special",
                                      specials[i].special));
    }
    const char *tmpl = llama ? llama3_template
                       : arch == NX_SYNTH_QWEN3 ? qwen3_template
                                                : chatml_template;
    return json_pack("{s:b, s:b, s:o, s:o, s:s, s:b, s:o, s:I, s:o, s:s, s:b}", "add_bos_token",
                     llama, "add_prefix_space", 0, "added_tokens_decoder", decoder,
                     "bos_token", token_or_null(roles.bos_tokcfg), "chat_template", tmpl,
                     "clean_up_tokenization_spaces", 0, "eos_token",
                     token_or_null(roles.eos_tokcfg), "model_max_length",
                     (json_int_t)131072, "pad_token", token_or_null(roles.pad),
                     "tokenizer_class", llama ? "PreTrainedTokenizerFast" : "Qwen2Tokenizer",
                     "split_special_tokens", 0);
}

/* ------------------------------------------------------------------------------------------
 * Looking token ids up (in what we wrote, or in a copied tokenizer.json)
 */

/* The id of added token `content` in a tokenizer.json, or -1. */
static int64_t added_token_id(const json_t *tokenizer, const char *content)
{
    if (!content)
        return -1;
    size_t i;
    json_t *entry;
    json_array_foreach(json_object_get(tokenizer, "added_tokens"), i, entry) {
        const char *c = json_string_value(json_object_get(entry, "content"));
        json_t *id = json_object_get(entry, "id");
        if (c && json_is_integer(id) && strcmp(c, content) == 0)
            return json_integer_value(id);
    }
    return -1;
}

/* A tokenizer_config.json token field: a string or {"content": ...}; NULL otherwise. */
static const char *tokcfg_token(const json_t *tokcfg, const char *key)
{
    json_t *v = json_object_get(tokcfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    return json_string_value(v);
}

static void find_roles(const json_t *tokenizer, const json_t *tokcfg, nx_synth_arch_t arch,
                       nx__synth_tokinfo_t *info)
{
    role_tokens_t roles = arch_roles(arch);
    info->bos_id = added_token_id(tokenizer, tokcfg_token(tokcfg, "bos_token"));
    if (info->bos_id < 0)
        info->bos_id = added_token_id(tokenizer, roles.bos_config);
    info->pad_id = added_token_id(tokenizer, tokcfg_token(tokcfg, "pad_token"));
    if (info->pad_id < 0)
        info->pad_id = added_token_id(tokenizer, roles.pad);
    info->eos_count = 0;
    const char *eos_names[3] = {roles.eos, roles.eos2, NULL};
    if (arch != NX_SYNTH_LLAMA) /* Qwen: the tokenizer's own eos first */
        eos_names[0] = tokcfg_token(tokcfg, "eos_token"), eos_names[1] = roles.eos;
    for (int k = 0; k < 2 && info->eos_count < (arch == NX_SYNTH_LLAMA ? 2u : 1u); k++) {
        int64_t id = added_token_id(tokenizer, eos_names[k]);
        if (id >= 0)
            info->eos_ids[info->eos_count++] = id;
    }
    if (info->eos_count == 0) { /* last resort: whatever the tokenizer calls eos */
        int64_t id = added_token_id(tokenizer, tokcfg_token(tokcfg, "eos_token"));
        if (id >= 0)
            info->eos_ids[info->eos_count++] = id;
    }
}

/* Highest id in model.vocab and added_tokens, plus one. */
static uint32_t token_count(const json_t *tokenizer)
{
    int64_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(json_object_get(tokenizer, "model"), "vocab"), key, v) {
        if (json_is_integer(v) && json_integer_value(v) > max_id)
            max_id = json_integer_value(v);
    }
    size_t i;
    json_array_foreach(json_object_get(tokenizer, "added_tokens"), i, v) {
        json_t *id = json_object_get(v, "id");
        if (json_is_integer(id) && json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
    }
    return (uint32_t)(max_id + 1);
}

/* ------------------------------------------------------------------------------------------
 * Entry points
 */

int nx__synth_tokenizer_write(const char *dir, nx_synth_arch_t arch, nx__synth_tokinfo_t *info,
                              nx_err_t *err)
{
    json_t *tokenizer = NULL, *tokcfg = NULL;
    nx__bpe_t *bpe = malloc(sizeof *bpe);
    int rc = bpe ? nx__bpe_train(bpe, TOKENIZER_MERGES, arch == NX_SYNTH_LLAMA ? 3 : 1)
                 : NX_ENOMEM;
    if (rc != NX_OK) {
        nx_err_set(err, rc, "training the tokenizer: %s", nx_strerror(rc));
        goto out;
    }
    tokenizer = tokenizer_json(bpe, arch);
    tokcfg = tokenizer_config_json(bpe->token_count, arch);
    if (!tokenizer || !tokcfg) {
        rc = nx_err_set(err, NX_ENOMEM, "building tokenizer.json: out of memory");
        goto out;
    }
    rc = nx__synth_write_json(dir, "tokenizer.json", tokenizer, 0, err);
    if (rc == NX_OK)
        rc = nx__synth_write_json(dir, "tokenizer_config.json", tokcfg, 0, err);
    if (rc != NX_OK)
        goto out;
    memset(info, 0, sizeof *info);
    info->token_count = token_count(tokenizer);
    find_roles(tokenizer, tokcfg, arch, info);
out:
    json_decref(tokenizer);
    json_decref(tokcfg);
    free(bpe);
    return rc;
}

static bool file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

int nx__synth_tokenizer_copy(const char *dir, const char *src_dir, nx_synth_arch_t arch,
                             nx__synth_tokinfo_t *info, nx_err_t *err)
{
    char path[4096];
    json_error_t jerr;
    json_t *tokenizer = NULL, *tokcfg = NULL;
    int rc = NX_OK;
    snprintf(path, sizeof path, "%s/tokenizer.json", src_dir);
    if (!file_exists(path))
        return nx_err_set(err, NX_ENOTFOUND, "--tokenizer '%s': no tokenizer.json there",
                          src_dir);
    tokenizer = json_load_file(path, 0, &jerr);
    if (!tokenizer || !json_is_object(json_object_get(tokenizer, "model")) ||
        !json_is_array(json_object_get(tokenizer, "added_tokens"))) {
        rc = nx_err_set(err, NX_EFORMAT, "'%s' is not a tokenizer.json (%s)", path,
                        tokenizer ? "no model or added_tokens" : jerr.text);
        goto out;
    }
    memset(info, 0, sizeof *info);
    info->token_count = token_count(tokenizer);
    if ((rc = nx__synth_copy_file(path, dir, "tokenizer.json", err)) != NX_OK)
        goto out;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", src_dir);
    if (file_exists(path)) {
        tokcfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, &jerr); /* Llama 3: 1e30 */
        if (!tokcfg) {
            rc = nx_err_set(err, NX_EFORMAT, "'%s' line %d: %s", path, jerr.line, jerr.text);
            goto out;
        }
        if ((rc = nx__synth_copy_file(path, dir, "tokenizer_config.json", err)) != NX_OK)
            goto out;
    }
    snprintf(path, sizeof path, "%s/generation_config.json", src_dir);
    if (file_exists(path)) {
        if ((rc = nx__synth_copy_file(path, dir, "generation_config.json", err)) != NX_OK)
            goto out;
        info->has_generation_config = true;
    }
    find_roles(tokenizer, tokcfg, arch, info);
out:
    json_decref(tokenizer);
    json_decref(tokcfg);
    return rc;
}
