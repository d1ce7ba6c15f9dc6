/* config.c — read a Hugging Face config.json (llama, mistral, qwen2, qwen3) into
 * nx_model_config_t. Every value comes from the file; defaults only where Hugging Face's
 * config classes have them (num_key_value_heads = heads, head_dim = hidden / heads,
 * attention_bias = false, tie_word_embeddings = false). Errors name the file and the field.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "nx_engine.h"

/* config_gguf.c */
int nx__config_load_gguf(const char *path, nx_model_config_t *out, nx_err_t *err);

const char *nx_arch_name(nx_arch_t arch)
{
    switch (arch) {
    case NX_ARCH_LLAMA: return "llama";
    case NX_ARCH_QWEN2: return "qwen2";
    case NX_ARCH_QWEN3: return "qwen3";
    }
    return "?";
}

typedef struct cfg_reader {
    const char *path;
    json_t *root;
    nx_err_t *err;
} cfg_reader_t;

/* A positive integer field; absent is an error unless def_value != 0 (then it is used). */
static int get_u32(cfg_reader_t *r, json_t *obj, const char *prefix, const char *key,
                   uint32_t def_value, uint32_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (def_value)
            return *out = def_value, NX_OK;
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field '%s%s' is missing", r->path,
                          prefix, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
        json_integer_value(v) > (json_int_t)UINT32_MAX)
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field '%s%s' must be a positive integer",
                          r->path, prefix, key);
    *out = (uint32_t)json_integer_value(v);
    return NX_OK;
}

/* A positive number (integer or real); absent is an error unless has_default. */
static int get_num(cfg_reader_t *r, json_t *obj, const char *prefix, const char *key,
                   bool has_default, double def_value, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (has_default)
            return *out = def_value, NX_OK;
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field '%s%s' is missing", r->path,
                          prefix, key);
    }
    if (!json_is_number(v) || json_number_value(v) <= 0)
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field '%s%s' must be a positive number",
                          r->path, prefix, key);
    *out = json_number_value(v);
    return NX_OK;
}

static int get_bool(cfg_reader_t *r, const char *key, bool def_value, bool *out)
{
    json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v))
        return *out = def_value, NX_OK;
    if (!json_is_boolean(v))
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field '%s' must be true or false",
                          r->path, key);
    *out = json_is_true(v);
    return NX_OK;
}

static int parse_arch(cfg_reader_t *r, nx_model_config_t *c)
{
    json_t *v = json_object_get(r->root, "model_type");
    if (!v)
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field 'model_type' is missing", r->path);
    if (!json_is_string(v))
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field 'model_type' must be a string",
                          r->path);
    const char *type = json_string_value(v);
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    if (strcmp(type, "llama") == 0 || strcmp(type, "mistral") == 0)
        c->arch = NX_ARCH_LLAMA;
    else if (strcmp(type, "qwen2") == 0)
        c->arch = NX_ARCH_QWEN2;
    else if (strcmp(type, "qwen3") == 0)
        c->arch = NX_ARCH_QWEN3;
    else
        return nx_err_set(r->err, NX_ENOTSUP,
                          "'%s': model_type '%s' is not supported (llama, mistral, qwen2, qwen3)",
                          r->path, type);
    return NX_OK;
}

/* The rope scaling object: rope_scaling (transformers 4: null, or {rope_type|type: "llama3",
 * factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}), or, when that
 * is absent, rope_parameters (transformers 5 writes the same fields there, with rope_theta).
 * "default" means no scaling; other scaling types change the numbers: NX_ENOTSUP. */
static int parse_rope_scaling(cfg_reader_t *r, nx_model_config_t *c)
{
    const char *field = "rope_scaling";
    json_t *s = json_object_get(r->root, field);
    if (!s || json_is_null(s)) {
        field = "rope_parameters";
        s = json_object_get(r->root, field);
    }
    if (!s || json_is_null(s))
        return NX_OK;
    if (!json_is_object(s))
        return nx_err_set(r->err, NX_EFORMAT, "'%s': field '%s' must be an object", r->path,
                          field);
    json_t *type = json_object_get(s, "rope_type");
    if (!type)
        type = json_object_get(s, "type");
    if (!json_is_string(type))
        return nx_err_set(r->err, NX_EFORMAT,
                          "'%s': field '%s.rope_type' is missing or not a string", r->path, field);
    const char *name = json_string_value(type);
    if (strcmp(name, "default") == 0)
        return NX_OK;
    if (strcmp(name, "llama3") != 0)
        return nx_err_set(r->err, NX_ENOTSUP, "'%s': %s.rope_type '%s' is not supported (llama3)",
                          r->path, field, name);
    c->rope_llama3 = true;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", field);
    int rc;
    if ((rc = get_num(r, s, prefix, "factor", false, 0, &c->rope_factor)) ||
        (rc = get_num(r, s, prefix, "low_freq_factor", false, 0, &c->rope_low_freq)) ||
        (rc = get_num(r, s, prefix, "high_freq_factor", false, 0, &c->rope_high_freq)) ||
        (rc = get_u32(r, s, prefix, "original_max_position_embeddings", 0,
                      &c->rope_original_max)))
        return rc;
    if (c->rope_high_freq <= c->rope_low_freq)
        return nx_err_set(r->err, NX_EFORMAT,
                          "'%s': %s.high_freq_factor (%g) must exceed low_freq_factor (%g)",
                          r->path, field, c->rope_high_freq, c->rope_low_freq);
    return NX_OK;
}

/* rope_theta at the top level (transformers 4), else in rope_parameters (transformers 5). */
static int parse_rope_theta(cfg_reader_t *r, nx_model_config_t *c)
{
    json_t *params = json_object_get(r->root, "rope_parameters");
    if (json_object_get(r->root, "rope_theta") || !json_is_object(params))
        return get_num(r, r->root, "", "rope_theta", false, 0, &c->rope_theta);
    return get_num(r, params, "rope_parameters.", "rope_theta", false, 0, &c->rope_theta);
}

/* bos_token_id: int or null; eos_token_id: int, list of ints, or null. */
static int parse_special_ids(cfg_reader_t *r, nx_model_config_t *c)
{
    json_t *bos = json_object_get(r->root, "bos_token_id");
    c->bos_id = -1;
    if (json_is_integer(bos) && json_integer_value(bos) >= 0)
        c->bos_id = (int32_t)json_integer_value(bos);
    else if (bos && !json_is_null(bos))
        return nx_err_set(r->err, NX_EFORMAT,
                          "'%s': field 'bos_token_id' must be a token id or null", r->path);
    json_t *eos = json_object_get(r->root, "eos_token_id");
    c->eos_count = 0;
    if (!eos || json_is_null(eos))
        return NX_OK;
    if (json_is_integer(eos) && json_integer_value(eos) >= 0) {
        c->eos_ids[c->eos_count++] = (int32_t)json_integer_value(eos);
        return NX_OK;
    }
    if (!json_is_array(eos))
        return nx_err_set(r->err, NX_EFORMAT,
                          "'%s': field 'eos_token_id' must be a token id or a list of them",
                          r->path);
    size_t i;
    json_t *item;
    json_array_foreach(eos, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0)
            return nx_err_set(r->err, NX_EFORMAT,
                              "'%s': eos_token_id[%zu] must be a token id", r->path, i);
        if (c->eos_count < NX_MAX_EOS)
            c->eos_ids[c->eos_count++] = (int32_t)json_integer_value(item);
    }
    return NX_OK;
}

/* Features of the architectures that this engine does not compute: refuse them by name. */
static int refuse_unsupported(cfg_reader_t *r, const nx_model_config_t *c)
{
    json_t *act = json_object_get(r->root, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0))
        return nx_err_set(r->err, NX_ENOTSUP, "'%s': hidden_act must be \"silu\"", r->path);
    bool flag = false;
    int rc = get_bool(r, "mlp_bias", false, &flag);
    if (rc)
        return rc;
    if (flag)
        return nx_err_set(r->err, NX_ENOTSUP, "'%s': mlp_bias true is not supported", r->path);
    if ((rc = get_bool(r, "use_sliding_window", false, &flag)))
        return rc;
    if (flag)
        return nx_err_set(r->err, NX_ENOTSUP, "'%s': use_sliding_window true is not supported",
                          r->path);
    if (c->heads % c->kv_heads != 0)
        return nx_err_set(r->err, NX_EFORMAT,
                          "'%s': num_attention_heads (%u) is not a multiple of "
                          "num_key_value_heads (%u)",
                          r->path, c->heads, c->kv_heads);
    if (c->head_dim % 2 != 0)
        return nx_err_set(r->err, NX_EFORMAT, "'%s': head_dim (%u) must be even for RoPE",
                          r->path, c->head_dim);
    return NX_OK;
}

static int parse_fields(cfg_reader_t *r, nx_model_config_t *c)
{
    int rc;
    double eps = 0;
    if ((rc = parse_arch(r, c)) || (rc = get_u32(r, r->root, "", "hidden_size", 0, &c->hidden)) ||
        (rc = get_u32(r, r->root, "", "intermediate_size", 0, &c->intermediate)) ||
        (rc = get_u32(r, r->root, "", "num_hidden_layers", 0, &c->layers)) ||
        (rc = get_u32(r, r->root, "", "num_attention_heads", 0, &c->heads)) ||
        (rc = get_u32(r, r->root, "", "num_key_value_heads", c->heads, &c->kv_heads)) ||
        (rc = get_u32(r, r->root, "", "vocab_size", 0, &c->vocab)) ||
        (rc = get_u32(r, r->root, "", "max_position_embeddings", 0, &c->max_position)) ||
        (rc = get_num(r, r->root, "", "rms_norm_eps", false, 0, &eps)) ||
        (rc = parse_rope_theta(r, c)))
        return rc;
    c->rms_eps = (float)eps;
    if (c->hidden % c->heads != 0 && !json_object_get(r->root, "head_dim"))
        return nx_err_set(r->err, NX_EFORMAT,
                          "'%s': no head_dim and hidden_size (%u) is not a multiple of "
                          "num_attention_heads (%u)",
                          r->path, c->hidden, c->heads);
    if ((rc = get_u32(r, r->root, "", "head_dim", c->hidden / c->heads, &c->head_dim)) ||
        (rc = parse_rope_scaling(r, c)) || (rc = parse_special_ids(r, c)) ||
        (rc = get_bool(r, "tie_word_embeddings", false, &c->tie_embeddings)))
        return rc;
    c->qk_norm = c->arch == NX_ARCH_QWEN3;
    if (c->arch == NX_ARCH_QWEN2)
        c->qkv_bias = true;
    else if ((rc = get_bool(r, "attention_bias", false, &c->qkv_bias)))
        return rc;
    return refuse_unsupported(r, c);
}

int nx_config_load(const char *model_dir, nx_model_config_t *out, nx_err_t *err)
{
    if (nx_path_is_gguf(model_dir))
        return nx__config_load_gguf(model_dir, out, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return nx_err_set(err, jerr.line <= 0 && jerr.position == 0 ? NX_EIO : NX_EFORMAT,
                          "'%s': %s (line %d)", path, jerr.text, jerr.line);
    cfg_reader_t r = {path, root, err};
    nx_model_config_t c = {0};
    int rc = json_is_object(root)
                 ? parse_fields(&r, &c)
                 : nx_err_set(err, NX_EFORMAT, "'%s': not a JSON object", path);
    json_decref(root);
    if (rc == NX_OK)
        *out = c;
    return rc;
}
