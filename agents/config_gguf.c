/* config_gguf.c — a GGUF file's model config: general.architecture and its <arch>.* keys as
 * llama.cpp's converter writes them, into the same nx_model_config_t a config.json gives.
 *
 * What GGUF says differently from config.json, and how it is read:
 *   - biases, q/k norms and a separate output head are told by the tensors present
 *     (blk.0.attn_q.bias, blk.0.attn_q_norm.weight, output.weight);
 *   - Llama 3's rope scaling is the per-frequency factor tensor rope_freqs.weight (read here,
 *     head_dim/2 floats), not rope_scaling keys;
 *   - llama files have their q/k rows permuted by the converter (for llama.cpp's adjacent-pair
 *     RoPE): rope_adjacent says so and the backends rotate adjacent pairs;
 *   - the vocabulary size is {arch}.vocab_size, else token_embd.weight's row count.
 * Defaults only where llama.cpp has them (head_count_kv = head_count, key_length =
 * embedding_length / head_count, rope.freq_base 10000). Errors name the file and the key.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_engine.h"

bool nx_path_is_gguf(const char *path)
{
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char magic[4];
    bool yes = pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic &&
               memcmp(magic, "GGUF", 4) == 0;
    close(fd);
    return yes;
}

typedef struct gguf_cfg {
    const nx_st_t *st;
    const char *path;
    const char *arch; /* general.architecture */
    nx_err_t *err;
} gguf_cfg_t;

/* The value at "<arch>.<suffix>"; name gets the whole key (for messages). */
static const nx_gguf_kv_t *arch_key(gguf_cfg_t *g, const char *suffix, char *name, size_t cap)
{
    snprintf(name, cap, "%s.%s", g->arch, suffix);
    return nx_st_gguf_find(g->st, name);
}

/* A positive integer key that fits 32 bits; absent is an error unless def_value != 0. */
static int get_u32(gguf_cfg_t *g, const char *suffix, uint32_t def_value, uint32_t *out)
{
    char name[160];
    const nx_gguf_kv_t *kv = arch_key(g, suffix, name, sizeof name);
    if (!kv) {
        if (def_value)
            return *out = def_value, NX_OK;
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' is missing", g->path, name);
    }
    uint64_t v;
    if (nx_gguf_kv_type(kv) == NX_GGUF_ARRAY)
        return nx_err_set(g->err, NX_ENOTSUP, "'%s': key '%s' is a per-layer array; only one "
                          "value for every layer is supported", g->path, name);
    if (!nx_gguf_get_u64(kv, 0, &v) || v == 0 || v > UINT32_MAX)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' must be a positive integer",
                          g->path, name);
    *out = (uint32_t)v;
    return NX_OK;
}

static int get_num(gguf_cfg_t *g, const char *suffix, bool has_default, double def_value,
                   double *out)
{
    char name[160];
    const nx_gguf_kv_t *kv = arch_key(g, suffix, name, sizeof name);
    if (!kv) {
        if (has_default)
            return *out = def_value, NX_OK;
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' is missing", g->path, name);
    }
    if (nx_gguf_kv_type(kv) == NX_GGUF_ARRAY || !nx_gguf_get_f64(kv, 0, out) || !(*out > 0))
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' must be a positive number",
                          g->path, name);
    return NX_OK;
}

static int parse_arch(gguf_cfg_t *g, nx_model_config_t *c)
{
    const nx_gguf_kv_t *kv = nx_st_gguf_find(g->st, "general.architecture");
    g->arch = kv && nx_gguf_kv_type(kv) == NX_GGUF_STRING ? nx_gguf_get_str(kv, 0, NULL) : NULL;
    if (!g->arch)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key 'general.architecture' is missing or "
                          "not a string", g->path);
    if (strcmp(g->arch, "llama") == 0)
        c->arch = NX_ARCH_LLAMA;
    else if (strcmp(g->arch, "qwen2") == 0)
        c->arch = NX_ARCH_QWEN2;
    else if (strcmp(g->arch, "qwen3") == 0)
        c->arch = NX_ARCH_QWEN3;
    else
        return nx_err_set(g->err, NX_ENOTSUP, "'%s': general.architecture '%s' is not "
                          "supported (llama, qwen2, qwen3)", g->path, g->arch);
    snprintf(c->model_type, sizeof c->model_type, "%s", g->arch);
    return NX_OK;
}

/* rope.scaling.type other than none/llama3-as-factors is refused by name. */
static int check_rope_scaling(gguf_cfg_t *g)
{
    char name[160];
    const nx_gguf_kv_t *kv = arch_key(g, "rope.scaling.type", name, sizeof name);
    const char *type = kv ? nx_gguf_get_str(kv, 0, NULL) : NULL;
    if (kv && !type)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key '%s' must be a string", g->path, name);
    if (type && strcmp(type, "none") != 0)
        return nx_err_set(g->err, NX_ENOTSUP, "'%s': %s '%s' is not supported (none; Llama 3 "
                          "scaling comes as rope_freqs.weight)", g->path, name, type);
    return NX_OK;
}

/* rope_freqs.weight: F32 [head_dim/2], read from the file. */
static int read_rope_freqs(gguf_cfg_t *g, nx_model_config_t *c)
{
    const nx_st_tensor_t *t = nx_st_find(g->st, "rope_freqs.weight");
    if (!t)
        return NX_OK;
    uint32_t half = c->head_dim / 2;
    if (t->dtype != NX_DT_F32 || t->ndim != 1 || t->shape[0] != half || half > NX_MAX_ROPE_FACTORS)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': tensor 'rope_freqs.weight' must be F32 "
                          "[%u] (head_dim / 2)", g->path, half);
    const nx_st_file_t *f = nx_st_file_at(g->st, t->file_index);
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 ? -1
                         : pread(fd, c->rope_freq_factors, t->bytes,
                                 (off_t)(f->data_offset + t->begin));
    int saved = errno;
    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)t->bytes)
        return nx_err_set(g->err, NX_EIO, "'%s': reading tensor 'rope_freqs.weight': %s",
                          g->path, got < 0 ? strerror(saved) : "short read");
    for (uint32_t i = 0; i < half; i++)
        if (!(c->rope_freq_factors[i] > 0))
            return nx_err_set(g->err, NX_EFORMAT, "'%s': rope_freqs.weight[%u] is %g, not a "
                              "positive factor", g->path, i, (double)c->rope_freq_factors[i]);
    c->rope_freq_count = half;
    return NX_OK;
}

/* tokenizer.ggml.eos_token_id, eot_token_id and eom_token_id: each ends a generation. */
static void read_special_ids(gguf_cfg_t *g, nx_model_config_t *c)
{
    static const char *const eos_keys[] = {"tokenizer.ggml.eos_token_id",
                                           "tokenizer.ggml.eot_token_id",
                                           "tokenizer.ggml.eom_token_id"};
    uint64_t id;
    const nx_gguf_kv_t *bos = nx_st_gguf_find(g->st, "tokenizer.ggml.bos_token_id");
    c->bos_id = bos && nx_gguf_get_u64(bos, 0, &id) && id < c->vocab ? (int32_t)id : -1;
    for (size_t i = 0; i < sizeof eos_keys / sizeof *eos_keys; i++) {
        const nx_gguf_kv_t *kv = nx_st_gguf_find(g->st, eos_keys[i]);
        if (!kv || !nx_gguf_get_u64(kv, 0, &id) || id >= c->vocab)
            continue;
        bool seen = false;
        for (uint32_t j = 0; j < c->eos_count; j++)
            seen |= c->eos_ids[j] == (int32_t)id;
        if (!seen && c->eos_count < NX_MAX_EOS)
            c->eos_ids[c->eos_count++] = (int32_t)id;
    }
}

static int parse_shape(gguf_cfg_t *g, nx_model_config_t *c)
{
    int rc;
    double eps = 0;
    if ((rc = get_u32(g, "embedding_length", 0, &c->hidden)) ||
        (rc = get_u32(g, "feed_forward_length", 0, &c->intermediate)) ||
        (rc = get_u32(g, "block_count", 0, &c->layers)) ||
        (rc = get_u32(g, "attention.head_count", 0, &c->heads)) ||
        (rc = get_u32(g, "attention.head_count_kv", c->heads, &c->kv_heads)) ||
        (rc = get_u32(g, "context_length", 0, &c->max_position)) ||
        (rc = get_num(g, "attention.layer_norm_rms_epsilon", false, 0, &eps)) ||
        (rc = get_num(g, "rope.freq_base", true, 10000.0, &c->rope_theta)))
        return rc;
    c->rms_eps = (float)eps;
    char key_length[160];
    if (c->hidden % c->heads != 0 &&
        !arch_key(g, "attention.key_length", key_length, sizeof key_length))
        return nx_err_set(g->err, NX_EFORMAT, "'%s': no %s.attention.key_length and "
                          "embedding_length (%u) is not a multiple of head_count (%u)",
                          g->path, g->arch, c->hidden, c->heads);
    uint32_t value_len = 0, rope_dims = 0;
    if ((rc = get_u32(g, "attention.key_length", c->hidden / c->heads, &c->head_dim)) ||
        (rc = get_u32(g, "attention.value_length", c->head_dim, &value_len)) ||
        (rc = get_u32(g, "rope.dimension_count", c->head_dim, &rope_dims)))
        return rc;
    if (value_len != c->head_dim || rope_dims != c->head_dim)
        return nx_err_set(g->err, NX_ENOTSUP, "'%s': %s.attention.value_length (%u) and "
                          "rope.dimension_count (%u) must equal key_length (%u)", g->path,
                          g->arch, value_len, rope_dims, c->head_dim);
    const nx_st_tensor_t *embd = nx_st_find(g->st, "token_embd.weight");
    if (!embd || embd->ndim != 2)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': tensor 'token_embd.weight' is missing or "
                          "not a matrix", g->path);
    return get_u32(g, "vocab_size", (uint32_t)embd->shape[0], &c->vocab);
}

static int check_shape(gguf_cfg_t *g, const nx_model_config_t *c)
{
    if (c->heads % c->kv_heads != 0)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': %s.attention.head_count (%u) is not a "
                          "multiple of head_count_kv (%u)", g->path, g->arch, c->heads,
                          c->kv_heads);
    if (c->head_dim % 2 != 0)
        return nx_err_set(g->err, NX_EFORMAT, "'%s': key_length (%u) must be even for RoPE",
                          g->path, c->head_dim);
    return NX_OK;
}

int nx__config_load_gguf(const char *path, nx_model_config_t *out, nx_err_t *err)
{
    nx_st_t *st = nx_st_open(path, err);
    if (!st)
        return err ? err->code : NX_EFORMAT;
    gguf_cfg_t g = {st, path, NULL, err};
    nx_model_config_t c = {0};
    c.gguf = true;
    int rc = parse_arch(&g, &c);
    if (rc == NX_OK)
        rc = parse_shape(&g, &c);
    if (rc == NX_OK)
        rc = check_shape(&g, &c);
    if (rc == NX_OK)
        rc = check_rope_scaling(&g);
    if (rc == NX_OK)
        rc = read_rope_freqs(&g, &c);
    if (rc == NX_OK) {
        c.rope_adjacent = c.arch == NX_ARCH_LLAMA;
        c.qk_norm = nx_st_find(st, "blk.0.attn_q_norm.weight") != NULL;
        c.qkv_bias = nx_st_find(st, "blk.0.attn_q.bias") != NULL;
        c.tie_embeddings = nx_st_find(st, "output.weight") == NULL;
        read_special_ids(&g, &c);
        *out = c;
    }
    nx_st_destroy(&st);
    return rc;
}
