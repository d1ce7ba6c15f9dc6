/* synth.c — synthesize a Hugging Face style model directory: presets with the real
 * architectures' shapes, config.json, generation_config.json, and random weights streamed
 * through nx_st_save's fill callback (one file, or N shards plus model.safetensors.index.json).
 *
 * Everything is written into OUT.tmp-XXXXXX next to OUT and renamed to OUT at the end, so a
 * reader never sees half a model. Weight values are a pure function of (seed, tensor name,
 * element index): a counter-based hash per pair of elements, Irwin-Hall of four byte-sized
 * uniforms for a roughly normal value, no libm, no state, so sharding or chunking never changes a byte.
 */
#include "synth.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "synth_internal.h"

/* ------------------------------------------------------------------------------------------
 * Presets. The 0.6b/4b/8b rows copy the published config.json of the model named beside them;
 * tiny keeps each architecture's quirks (Qwen3's head_dim != hidden/heads, Qwen2's biases,
 * Llama's untied head and llama3 rope scaling) at a few hundred KB. vocab 0 means "the
 * tokenizer's size rounded up to a multiple of 64".
 */
typedef struct preset {
    const char *source;      /* the real model whose shapes these are */
    uint32_t hidden;         /* hidden_size */
    uint32_t layers;         /* num_hidden_layers */
    uint32_t heads;          /* num_attention_heads */
    uint32_t kv_heads;       /* num_key_value_heads */
    uint32_t head_dim;       /* per head */
    uint32_t intermediate;   /* intermediate_size (MLP) */
    uint32_t vocab;          /* vocab_size; 0: from the tokenizer */
    bool tied;               /* tie_word_embeddings: no lm_head.weight */
    double rope_theta;
    double rms_eps;          /* rms_norm_eps */
    uint32_t max_positions;  /* max_position_embeddings */
    double rope_factor;      /* llama3 rope_scaling factor; 0: rope_scaling null */
} preset_t;

static const preset_t presets[NX_SYNTH_ARCH__COUNT][NX_SYNTH_PRESET__COUNT] = {
    [NX_SYNTH_QWEN3] = {
        {"tiny Qwen3", 64, 2, 4, 2, 32, 128, 0, true, 1e6, 1e-6, 4096, 0},
        {"Qwen3-0.6B", 1024, 28, 16, 8, 128, 3072, 151936, true, 1e6, 1e-6, 40960, 0},
        {"Qwen3-4B", 2560, 36, 32, 8, 128, 9728, 151936, true, 1e6, 1e-6, 40960, 0},
        {"Qwen3-8B", 4096, 36, 32, 8, 128, 12288, 151936, false, 1e6, 1e-6, 40960, 0},
        {"small Qwen3", 256, 2, 4, 2, 128, 512, 0, true, 1e6, 1e-6, 4096, 0},
    },
    [NX_SYNTH_QWEN2] = {
        {"tiny Qwen2.5", 64, 2, 4, 2, 16, 128, 0, true, 1e6, 1e-6, 4096, 0},
        {"Qwen2.5-0.5B", 896, 24, 14, 2, 64, 4864, 151936, true, 1e6, 1e-6, 32768, 0},
        {"Qwen2.5-3B", 2048, 36, 16, 2, 128, 11008, 151936, true, 1e6, 1e-6, 32768, 0},
        {"Qwen2.5-7B", 3584, 28, 28, 4, 128, 18944, 152064, false, 1e6, 1e-6, 131072, 0},
        {"small Qwen2.5", 256, 2, 4, 2, 64, 512, 0, true, 1e6, 1e-6, 4096, 0},
    },
    [NX_SYNTH_LLAMA] = {
        {"tiny Llama 3", 64, 2, 4, 2, 16, 128, 0, false, 500000, 1e-5, 131072, 32},
        {"Llama-3.2-1B", 2048, 16, 32, 8, 64, 8192, 128256, true, 500000, 1e-5, 131072, 32},
        {"Llama-3.2-3B", 3072, 28, 24, 8, 128, 8192, 128256, true, 500000, 1e-5, 131072, 32},
        {"Llama-3.1-8B", 4096, 32, 32, 8, 128, 14336, 128256, false, 500000, 1e-5, 131072, 8},
        {"small Llama 3", 256, 2, 4, 2, 64, 512, 0, false, 500000, 1e-5, 131072, 32},
    },
};

static const char *const arch_names[] = {"qwen3", "qwen2", "llama"};
static const char *const preset_names[] = {"tiny", "0.6b", "4b", "8b", "small"};
static const char *const hf_archs[] = {"Qwen3ForCausalLM", "Qwen2ForCausalLM",
                                       "LlamaForCausalLM"};

const char *nx_synth_arch_name(nx_synth_arch_t arch)
{
    return (unsigned)arch < NX_SYNTH_ARCH__COUNT ? arch_names[arch] : "?";
}

const char *nx_synth_preset_name(nx_synth_preset_t preset)
{
    return (unsigned)preset < NX_SYNTH_PRESET__COUNT ? preset_names[preset] : "?";
}

bool nx_synth_arch_parse(const char *name, nx_synth_arch_t *arch_out)
{
    for (int i = 0; i < NX_SYNTH_ARCH__COUNT; i++)
        if (name && strcmp(name, arch_names[i]) == 0)
            return *arch_out = (nx_synth_arch_t)i, true;
    return false;
}

bool nx_synth_preset_parse(const char *name, nx_synth_preset_t *preset_out)
{
    for (int i = 0; i < NX_SYNTH_PRESET__COUNT; i++)
        if (name && strcmp(name, preset_names[i]) == 0)
            return *preset_out = (nx_synth_preset_t)i, true;
    return false;
}

static uint32_t tensors_per_layer(nx_synth_arch_t arch)
{
    /* 2 norms, q/k/v/o, gate/up/down; Qwen2 adds q/k/v biases, Qwen3 q_norm and k_norm */
    return 9 + (arch == NX_SYNTH_QWEN2 ? 3 : arch == NX_SYNTH_QWEN3 ? 2 : 0);
}

size_t nx_synth_tensor_count(nx_synth_arch_t arch, nx_synth_preset_t preset)
{
    if ((unsigned)arch >= NX_SYNTH_ARCH__COUNT || (unsigned)preset >= NX_SYNTH_PRESET__COUNT)
        return 0;
    const preset_t *p = &presets[arch][preset];
    return 2 + (size_t)p->layers * tensors_per_layer(arch) + (p->tied ? 0 : 1);
}

/* ------------------------------------------------------------------------------------------
 * The tensor list and the value generator
 */
typedef enum init_kind { INIT_MATRIX, INIT_NORM, INIT_BIAS } init_kind_t;

typedef struct tensor_meta {
    char name[96];
    init_kind_t init;
    uint64_t key;   /* XXH3-64 of the name, seeded with the model seed */
    uint64_t bytes;
} tensor_meta_t;

typedef struct weights {
    nx_st_tensor_spec_t *specs; /* count entries, in storage order */
    tensor_meta_t *meta;        /* parallel to specs */
    size_t count;
    uint64_t total_bytes;
} weights_t;

static void add_tensor(weights_t *w, const nx_synth_opts_t *o, init_kind_t init, uint64_t rows,
                       uint64_t cols, const char *name)
{
    tensor_meta_t *m = &w->meta[w->count];
    nx_st_tensor_spec_t *s = &w->specs[w->count];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->init = init;
    m->key = XXH3_64bits_withSeed(m->name, strlen(m->name), o->seed);
    *s = (nx_st_tensor_spec_t){.name = m->name, .dtype = o->dtype, .ndim = cols ? 2 : 1};
    s->shape[0] = rows;
    s->shape[1] = cols;
    m->bytes = rows * (cols ? cols : 1) * (nx_dtype_bits(o->dtype) / 8);
    w->total_bytes += m->bytes;
    w->count++;
}

static void add_layer_tensor(weights_t *w, const nx_synth_opts_t *o, init_kind_t init,
                             uint64_t rows, uint64_t cols, uint32_t layer, const char *suffix)
{
    char name[96];
    snprintf(name, sizeof name, "model.layers.%u.%s", layer, suffix);
    add_tensor(w, o, init, rows, cols, name);
}

static void add_layer(weights_t *w, const nx_synth_opts_t *o, const preset_t *p, uint32_t i)
{
    uint64_t q = (uint64_t)p->heads * p->head_dim, kv = (uint64_t)p->kv_heads * p->head_dim;
    add_layer_tensor(w, o, INIT_NORM, p->hidden, 0, i, "input_layernorm.weight");
    add_layer_tensor(w, o, INIT_MATRIX, q, p->hidden, i, "self_attn.q_proj.weight");
    add_layer_tensor(w, o, INIT_MATRIX, kv, p->hidden, i, "self_attn.k_proj.weight");
    add_layer_tensor(w, o, INIT_MATRIX, kv, p->hidden, i, "self_attn.v_proj.weight");
    if (o->arch == NX_SYNTH_QWEN2) {
        add_layer_tensor(w, o, INIT_BIAS, q, 0, i, "self_attn.q_proj.bias");
        add_layer_tensor(w, o, INIT_BIAS, kv, 0, i, "self_attn.k_proj.bias");
        add_layer_tensor(w, o, INIT_BIAS, kv, 0, i, "self_attn.v_proj.bias");
    }
    add_layer_tensor(w, o, INIT_MATRIX, p->hidden, q, i, "self_attn.o_proj.weight");
    if (o->arch == NX_SYNTH_QWEN3) {
        add_layer_tensor(w, o, INIT_NORM, p->head_dim, 0, i, "self_attn.q_norm.weight");
        add_layer_tensor(w, o, INIT_NORM, p->head_dim, 0, i, "self_attn.k_norm.weight");
    }
    add_layer_tensor(w, o, INIT_NORM, p->hidden, 0, i, "post_attention_layernorm.weight");
    add_layer_tensor(w, o, INIT_MATRIX, p->intermediate, p->hidden, i, "mlp.gate_proj.weight");
    add_layer_tensor(w, o, INIT_MATRIX, p->intermediate, p->hidden, i, "mlp.up_proj.weight");
    add_layer_tensor(w, o, INIT_MATRIX, p->hidden, p->intermediate, i, "mlp.down_proj.weight");
}

/* The HF tensor list in HF's order (embeddings, layers, final norm, lm_head). */
static int build_weights(weights_t *w, const nx_synth_opts_t *o, const preset_t *p,
                         uint32_t vocab)
{
    size_t cap = nx_synth_tensor_count(o->arch, o->preset);
    memset(w, 0, sizeof *w);
    w->specs = calloc(cap, sizeof *w->specs);
    w->meta = calloc(cap, sizeof *w->meta);
    if (!w->specs || !w->meta)
        return NX_ENOMEM;
    add_tensor(w, o, INIT_MATRIX, vocab, p->hidden, "model.embed_tokens.weight");
    for (uint32_t i = 0; i < p->layers; i++)
        add_layer(w, o, p, i);
    add_tensor(w, o, INIT_NORM, p->hidden, 0, "model.norm.weight");
    if (!p->tied)
        add_tensor(w, o, INIT_MATRIX, vocab, p->hidden, "lm_head.weight");
    assert(w->count == cap);
    return NX_OK;
}

static void free_weights(weights_t *w)
{
    free(w->specs);
    free(w->meta);
    memset(w, 0, sizeof *w);
}

/* wyrand at counter `counter`: one 64x64->128 multiply for 64 good bits. */
static inline uint64_t counter_hash(uint64_t key, uint64_t counter)
{
    uint64_t s = key + counter * 0xA0761D6478BD642Full;
    __uint128_t t = (__uint128_t)(s ^ 0xE7037ED1A0B428DBull) * s;
    return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* Each 64-bit hash makes two elements: each is the sum of four of its bytes (Irwin-Hall of
 * four uniforms on 0..255: mean 510, standard deviation 147.8), a bell shape on +-3.45 sigma
 * in 1021 steps, plenty for BF16's 8-bit mantissa. */
#define IH4_MEAN 510
#define IH4_STD 147.80f

static inline void two_sums(uint64_t h, int32_t *lo, int32_t *hi)
{
    uint64_t pairs = (h & 0x00FF00FF00FF00FFull) + ((h >> 8) & 0x00FF00FF00FF00FFull);
    *lo = (int32_t)((pairs & 0xFFFF) + ((pairs >> 16) & 0xFFFF)) - IH4_MEAN;
    *hi = (int32_t)(((pairs >> 32) & 0xFFFF) + (pairs >> 48)) - IH4_MEAN;
}

static void init_params(init_kind_t init, float *base, float *scale)
{
    float sigma = init == INIT_MATRIX ? 0.02f : init == INIT_NORM ? 0.02f : 0.01f;
    *base = init == INIT_NORM ? 1.0f : 0.0f;
    *scale = sigma / IH4_STD;
}

/* Hot path: values of elements [first, first+n) as floats; element e comes from hash
 * e/2 (low half for even e, high half for odd). */
static void gen_values(uint64_t key, init_kind_t init, uint64_t first, float *out, size_t n)
{
    float base, scale;
    int32_t lo, hi;
    size_t i = 0;
    init_params(init, &base, &scale);
    if (n > 0 && (first & 1)) {
        two_sums(counter_hash(key, first >> 1), &lo, &hi);
        out[i++] = base + scale * (float)hi;
    }
    for (; i + 1 < n; i += 2) {
        two_sums(counter_hash(key, (first + i) >> 1), &lo, &hi);
        out[i] = base + scale * (float)lo;
        out[i + 1] = base + scale * (float)hi;
    }
    if (i < n) {
        two_sums(counter_hash(key, (first + i) >> 1), &lo, &hi);
        out[i] = base + scale * (float)lo;
    }
}

static void to_dtype(nx_dtype_t dtype, const float *in, void *out, size_t n)
{
    if (dtype == NX_DT_F32) {
        memcpy(out, in, n * sizeof *in);
    } else if (dtype == NX_DT_F16) {
        _Float16 *h = out;
        for (size_t i = 0; i < n; i++)
            h[i] = (_Float16)in[i];
    } else { /* BF16, round to nearest even (values are finite) */
        uint16_t *b = out;
        for (size_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &in[i], sizeof bits);
            b[i] = (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
        }
    }
}

#define FILL_BLOCK 4096 /* elements per generated block */

typedef struct fill_ctx {
    const weights_t *weights;
} fill_ctx_t;

/* nx_st_fill_fn: bytes [offset, offset+len) of a tensor, generated block by block. */
static int fill_tensor(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                       size_t len, nx_err_t *err)
{
    const weights_t *w = ((const fill_ctx_t *)user)->weights;
    size_t index = (size_t)(spec - w->specs);
    if (index >= w->count || spec->name != w->meta[index].name)
        return nx_err_set(err, NX_ESTATE, "synth: fill asked for unknown tensor '%s'",
                          spec->name);
    const tensor_meta_t *m = &w->meta[index];
    size_t esize = nx_dtype_bits(spec->dtype) / 8;
    float values[FILL_BLOCK];
    unsigned char bytes[FILL_BLOCK * sizeof(float)];
    unsigned char *out = dst;
    uint64_t end = offset + len;
    for (uint64_t elem = offset / esize; elem * esize < end; elem += FILL_BLOCK) {
        uint64_t block_begin = elem * esize, block_end = block_begin + FILL_BLOCK * esize;
        gen_values(m->key, m->init, elem, values, FILL_BLOCK);
        to_dtype(spec->dtype, values, bytes, FILL_BLOCK);
        uint64_t from = block_begin > offset ? block_begin : offset;
        uint64_t to = block_end < end ? block_end : end;
        memcpy(out + (from - offset), bytes + (from - block_begin), to - from);
    }
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * config.json and generation_config.json
 */
static const char *torch_dtype(nx_dtype_t dtype)
{
    return dtype == NX_DT_F32 ? "float32" : dtype == NX_DT_F16 ? "float16" : "bfloat16";
}

static json_t *id_or_null(int64_t id)
{
    return id >= 0 ? json_integer(id) : json_null();
}

/* eos_token_id: a list for Llama 3 (as its config.json), else one id. */
static json_t *eos_json(nx_synth_arch_t arch, const nx__synth_tokinfo_t *tok)
{
    if (tok->eos_count == 0)
        return json_null();
    if (arch != NX_SYNTH_LLAMA || tok->eos_count == 1)
        return json_integer(tok->eos_ids[0]);
    json_t *list = json_array();
    for (uint32_t i = 0; i < tok->eos_count; i++)
        json_array_append_new(list, json_integer(tok->eos_ids[i]));
    return list;
}

static json_t *rope_scaling_json(const preset_t *p)
{
    if (p->rope_factor == 0)
        return json_null();
    return json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", p->rope_factor, "low_freq_factor",
                     1.0, "high_freq_factor", 4.0, "original_max_position_embeddings", 8192,
                     "rope_type", "llama3");
}

static json_t *config_json(const nx_synth_opts_t *o, const preset_t *p, uint32_t vocab,
                           const nx__synth_tokinfo_t *tok)
{
    json_t *c = json_pack(
        "{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f, s:f, s:o, s:I, s:I, s:b, s:s,"
        " s:o, s:o, s:f, s:f, s:b, s:s}",
        "architectures", hf_archs[o->arch], "model_type", o->arch == NX_SYNTH_LLAMA ? "llama"
                                                          : o->arch == NX_SYNTH_QWEN3 ? "qwen3"
                                                                                      : "qwen2",
        "hidden_size", (json_int_t)p->hidden, "intermediate_size", (json_int_t)p->intermediate,
        "num_hidden_layers", (json_int_t)p->layers, "num_attention_heads", (json_int_t)p->heads,
        "num_key_value_heads", (json_int_t)p->kv_heads, "head_dim", (json_int_t)p->head_dim,
        "hidden_act", "silu", "rms_norm_eps", p->rms_eps, "rope_theta", p->rope_theta,
        "rope_scaling", rope_scaling_json(p), "max_position_embeddings",
        (json_int_t)p->max_positions, "vocab_size", (json_int_t)vocab, "tie_word_embeddings",
        p->tied, "torch_dtype", torch_dtype(o->dtype), "bos_token_id", id_or_null(tok->bos_id),
        "eos_token_id", eos_json(o->arch, tok), "initializer_range", 0.02, "attention_dropout",
        0.0, "use_cache", 1, "transformers_version", "4.51.0");
    if (!c)
        return NULL;
    if (o->arch != NX_SYNTH_QWEN2) /* Qwen2 has q/k/v biases by definition, no flag */
        json_object_set_new(c, "attention_bias", json_false());
    if (o->arch == NX_SYNTH_LLAMA) {
        json_object_set_new(c, "mlp_bias", json_false());
        json_object_set_new(c, "pretraining_tp", json_integer(1));
    } else {
        json_object_set_new(c, "use_sliding_window", json_false());
        json_object_set_new(c, "sliding_window", json_null());
        json_object_set_new(c, "max_window_layers", json_integer(p->layers));
    }
    return c;
}

static json_t *generation_config_json(const nx_synth_opts_t *o, const nx__synth_tokinfo_t *tok)
{
    json_t *g = json_pack("{s:o, s:o, s:s}", "bos_token_id", id_or_null(tok->bos_id),
                          "eos_token_id", eos_json(o->arch, tok), "transformers_version",
                          "4.51.0");
    if (g && tok->pad_id >= 0)
        json_object_set_new(g, "pad_token_id", json_integer(tok->pad_id));
    return g;
}

/* ------------------------------------------------------------------------------------------
 * Weights: one file, or shards split by bytes in tensor order plus the index
 */

/* shard_first[k] = index of shard k's first tensor; shard_first[shards] = count. Every shard
 * gets at least one tensor; otherwise a shard ends once it reaches its share of the bytes. */
static void split_shards(const weights_t *w, uint32_t shards, size_t *shard_first)
{
    size_t t = 0;
    uint64_t cumulative = 0;
    for (uint32_t k = 0; k < shards; k++) {
        shard_first[k] = t;
        uint64_t target = w->total_bytes / shards * (k + 1);
        size_t must_leave = shards - 1 - k;
        do
            cumulative += w->meta[t++].bytes;
        while (t < w->count - must_leave && (cumulative < target || k == shards - 1));
    }
    shard_first[shards] = w->count;
}

static int save_file(const char *dir, const char *name, const weights_t *w, size_t first,
                     size_t count, nx_err_t *err)
{
    static const char *const keys[] = {"format"}, *const values[] = {"pt"};
    char path[8192];
    fill_ctx_t ctx = {w};
    nx_st_save_opts_t opts = {keys, values, 1, fill_tensor, &ctx};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return nx_st_save(path, w->specs + first, count, &opts, err);
}

static int write_weights(const char *dir, const weights_t *w, uint32_t shards, nx_err_t *err)
{
    if (shards == 1)
        return save_file(dir, "model.safetensors", w, 0, w->count, err);
    size_t *first = calloc(shards + 1, sizeof *first);
    json_t *map = json_object();
    int rc = NX_OK;
    if (!first || !map) {
        rc = nx_err_set(err, NX_ENOMEM, "splitting %u shards: out of memory", shards);
        goto out;
    }
    split_shards(w, shards, first);
    for (uint32_t k = 0; k < shards && rc == NX_OK; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05u-of-%05u.safetensors", k + 1, shards);
        rc = save_file(dir, name, w, first[k], first[k + 1] - first[k], err);
        for (size_t t = first[k]; t < first[k + 1]; t++)
            json_object_set_new(map, w->meta[t].name, json_string(name));
    }
    if (rc == NX_OK) {
        json_t *index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size",
                                  (json_int_t)w->total_bytes, "weight_map", map);
        rc = index ? nx__synth_write_json(dir, "model.safetensors.index.json", index,
                                          JSON_SORT_KEYS, err)
                   : nx_err_set(err, NX_ENOMEM, "building the shard index: out of memory");
        json_decref(index);
    }
out:
    json_decref(map);
    free(first);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * The atomic output directory
 */

/* NX_OK when path is absent or an empty directory; NX_EEXIST otherwise. */
static int check_out_dir(const char *path, nx_err_t *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? NX_OK
                               : nx_err_set(err, NX_EIO, "'%s': %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return nx_err_set(err, NX_EEXIST, "'%s' exists and is not a directory", path);
    DIR *d = opendir(path);
    if (!d)
        return nx_err_set(err, NX_EIO, "'%s': %s", path, strerror(errno));
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty ? NX_OK
                 : nx_err_set(err, NX_EEXIST, "'%s' exists and is not empty; not overwriting",
                              path);
}

/* Best effort: the temporary directory only ever holds plain files we wrote. */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void fsync_parent(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (slash == buf)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(buf, sizeof buf, ".");
    int fd = open(buf, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ------------------------------------------------------------------------------------------
 * The whole model
 */
static int check_opts(const nx_synth_opts_t *o, nx_err_t *err)
{
    if (!o->out_dir || !o->out_dir[0])
        return nx_err_set(err, NX_EINVAL, "no output directory given");
    if ((unsigned)o->arch >= NX_SYNTH_ARCH__COUNT)
        return nx_err_set(err, NX_EINVAL, "unknown architecture %d", (int)o->arch);
    if ((unsigned)o->preset >= NX_SYNTH_PRESET__COUNT)
        return nx_err_set(err, NX_EINVAL, "unknown preset %d", (int)o->preset);
    if (o->dtype != NX_DT_BF16 && o->dtype != NX_DT_F16 && o->dtype != NX_DT_F32)
        return nx_err_set(err, NX_EINVAL, "dtype %s is not one of BF16, F16, F32",
                          nx_dtype_name(o->dtype));
    size_t count = nx_synth_tensor_count(o->arch, o->preset);
    if (o->shards < 1 || o->shards > count)
        return nx_err_set(err, NX_EINVAL, "%u shards: must be 1 to %zu (the tensor count of %s %s)",
                          o->shards, count, arch_names[o->arch], preset_names[o->preset]);
    if (strlen(o->out_dir) > 4000)
        return nx_err_set(err, NX_EINVAL, "output path is too long");
    return NX_OK;
}

/* Tokenizer, config files and weights, all into dir. */
static int write_model(const char *dir, const nx_synth_opts_t *o, nx_synth_report_t *report,
                       nx_err_t *err)
{
    const preset_t *p = &presets[o->arch][o->preset];
    nx__synth_tokinfo_t tok;
    weights_t w = {0};
    json_t *config = NULL, *gen = NULL;
    int rc = o->tokenizer_dir ? nx__synth_tokenizer_copy(dir, o->tokenizer_dir, o->arch, &tok, err)
                              : nx__synth_tokenizer_write(dir, o->arch, &tok, err);
    if (rc != NX_OK)
        goto out;
    uint32_t vocab = p->vocab ? p->vocab : (tok.token_count + 63) / 64 * 64;
    if (tok.token_count > vocab) {
        rc = nx_err_set(err, NX_EFORMAT,
                        "the tokenizer has %u tokens, more than %s %s's vocab_size %u",
                        tok.token_count, arch_names[o->arch], preset_names[o->preset], vocab);
        goto out;
    }
    config = config_json(o, p, vocab, &tok);
    gen = tok.has_generation_config ? NULL : generation_config_json(o, &tok);
    if (!config || (!gen && !tok.has_generation_config)) {
        rc = nx_err_set(err, NX_ENOMEM, "building config.json: out of memory");
        goto out;
    }
    rc = nx__synth_write_json(dir, "config.json", config, JSON_SORT_KEYS, err);
    if (rc == NX_OK && gen)
        rc = nx__synth_write_json(dir, "generation_config.json", gen, JSON_SORT_KEYS, err);
    if (rc == NX_OK && (rc = build_weights(&w, o, p, vocab)) != NX_OK)
        nx_err_set(err, rc, "listing tensors: out of memory");
    if (rc == NX_OK)
        rc = write_weights(dir, &w, o->shards, err);
    report->tensor_count = w.count;
    report->weight_bytes = w.total_bytes;
    report->files = o->shards;
    report->vocab_size = vocab;
out:
    json_decref(config);
    json_decref(gen);
    free_weights(&w);
    return rc;
}

int nx_synth_model(const nx_synth_opts_t *opts, nx_synth_report_t *report, nx_err_t *err)
{
    assert(opts);
    uint64_t start_ns = nx_now_ns();
    nx_synth_report_t local;
    report = report ? report : &local;
    memset(report, 0, sizeof *report);
    int rc = check_opts(opts, err);
    if (rc != NX_OK)
        return rc;
    char out[4096], tmp[4096 + 16];
    snprintf(out, sizeof out, "%s", opts->out_dir);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
        out[n - 1] = '\0';
    if ((rc = check_out_dir(out, err)) != NX_OK || (rc = nx_st_make_parents(out, err)) != NX_OK)
        return rc;
    snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", out);
    if (!mkdtemp(tmp))
        return nx_err_set(err, NX_EIO, "creating '%s': %s", tmp, strerror(errno));
    chmod(tmp, 0755);
    rc = write_model(tmp, opts, report, err);
    if (rc == NX_OK && (rc = check_out_dir(out, err)) == NX_OK && rename(tmp, out) != 0)
        rc = nx_err_set(err, NX_EIO, "renaming '%s' to '%s': %s", tmp, out, strerror(errno));
    if (rc != NX_OK) {
        remove_tree(tmp);
        return rc;
    }
    fsync_parent(out);
    report->seconds = (double)(nx_now_ns() - start_ns) / 1e9;
    return NX_OK;
}
