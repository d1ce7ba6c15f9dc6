/* quantize.c — safetensors model directory -> GGUF, as llama.cpp's converter and llama-quantize
 * would write it (quantize.h says what that means).
 *
 * Nothing big is held in memory: the GGUF writer asks for each tensor's bytes a chunk at a
 * time (nx_st_save_opts_t.fill), and a chunk's rows are read from the safetensors file,
 * widened to fp32, permuted where llama needs it and quantized there, spread over a thread
 * pool. Tensor types follow llama-quantize's rules for the mixes we offer (pick_dtype).
 */
#include "quantize.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu_kernels.h" /* nx__k_rope_inv_freq: Llama 3's scaled frequencies */
#include "nx_engine.h"
#include "quant.h"
#include "threadpool.h"
#include "tok_internal.h"

static const char *const mix_names[NX_QMIX__COUNT] = {"f32", "f16", "bf16", "q8_0", "q4_0",
                                                      "q4_k_m"};

const char *nx_qmix_name(nx_qmix_t mix)
{
    return (unsigned)mix < NX_QMIX__COUNT ? mix_names[mix] : "?";
}

bool nx_qmix_parse(const char *name, nx_qmix_t *mix_out)
{
    for (int i = 0; name && i < NX_QMIX__COUNT; i++)
        if (strcasecmp(name, mix_names[i]) == 0)
            return *mix_out = (nx_qmix_t)i, true;
    return false;
}

/* ------------------------------------------------------------------------------------------
 * Which dtype each tensor gets (llama-quantize's choices for these mixes)
 */
typedef enum tensor_role {
    ROLE_EMBED, ROLE_OUTPUT, ROLE_ATTN_V, ROLE_FFN_DOWN, ROLE_MATRIX, ROLE_VECTOR
} tensor_role_t;

/* llama.cpp's "use more bits" layers: the first and last eighth, and every third between. */
static bool use_more_bits(uint32_t layer, uint32_t layers)
{
    return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

static nx_dtype_t fallback(nx_dtype_t dtype, uint64_t cols)
{
    if (cols % nx_dtype_block_elems(dtype) == 0)
        return dtype;
    nx_dtype_t next = dtype == NX_DT_Q4_K ? NX_DT_Q5_0 : dtype == NX_DT_Q6_K ? NX_DT_Q8_0
                                                                            : NX_DT_F16;
    return cols % nx_dtype_block_elems(next) == 0 ? next : NX_DT_F16;
}

static nx_dtype_t pick_dtype(nx_qmix_t mix, tensor_role_t role, bool tied, uint32_t layer,
                             uint32_t layers, uint64_t cols)
{
    static const nx_dtype_t base_of[NX_QMIX__COUNT] = {NX_DT_F32, NX_DT_F16, NX_DT_BF16,
                                                       NX_DT_Q8_0, NX_DT_Q4_0, NX_DT_Q4_K};
    if (role == ROLE_VECTOR)
        return NX_DT_F32; /* norms and biases stay F32, as the converter writes them */
    nx_dtype_t base = base_of[mix], dtype = base;
    if (!nx_dtype_is_block(base))
        return base;
    if (role == ROLE_OUTPUT || (tied && role == ROLE_EMBED)) {
        if (cols % nx_dtype_block_elems(base) != 0)
            dtype = NX_DT_Q8_0;
        else if (base != NX_DT_Q8_0)
            dtype = NX_DT_Q6_K;
    } else if (mix == NX_QMIX_Q4_K_M && (role == ROLE_ATTN_V || role == ROLE_FFN_DOWN) &&
               use_more_bits(layer, layers)) {
        dtype = NX_DT_Q6_K;
    }
    return fallback(dtype, cols);
}

/* ------------------------------------------------------------------------------------------
 * The plan: every tensor to write, where its rows come from
 */
typedef struct qtensor {
    char name[96];
    const nx_st_tensor_t *src; /* NULL: generated (rope_freqs.weight) */
    const float *generated;    /* rows x cols floats when src is NULL */
    nx_dtype_t dtype;          /* written as */
    uint64_t rows, cols;       /* cols: the last dim; rows: the others multiplied */
    uint32_t permute_head_dim; /* 0, or llama's q/k permutation within heads of this size */
} qtensor_t;

typedef struct qctx {
    const nx_quantize_opts_t *opts;
    nx_model_config_t cfg;
    nx_st_t *st;
    int *fds;                  /* per checkpoint file */
    qtensor_t *tensors;
    size_t tensor_count, tensor_cap;
    nx_st_tensor_spec_t *specs;
    float rope_factors[NX_MAX_ROPE_FACTORS];
    nx__tpool_t *pool;
    /* a fill's work, shared with the pool's tasks */
    const qtensor_t *job;
    uint64_t job_row0;
    uint8_t *job_out;          /* rows [job_row0, ...) quantized, back to back */
    uint8_t *src_rows;         /* per worker: one source row */
    float *float_rows;         /* per worker: one row as fp32 */
    size_t src_row_cap;        /* bytes per worker in src_rows */
    uint64_t float_row_cap;    /* floats per worker in float_rows */
    int job_errno;             /* a failed read in a task */
    uint8_t *stage;            /* rows of one fill */
    size_t stage_cap;
    nx_err_t *err;
} qctx_t;

/* Room for one more tensor at q->tensors[q->tensor_count]. */
static int grow_tensors(qctx_t *q)
{
    if (q->tensor_count < q->tensor_cap)
        return NX_OK;
    size_t cap = q->tensor_cap ? q->tensor_cap * 2 : 64;
    qtensor_t *t = realloc(q->tensors, cap * sizeof *t);
    if (!t)
        return nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory");
    q->tensors = t, q->tensor_cap = cap;
    return NX_OK;
}

static int add_tensor(qctx_t *q, const char *name, const nx_st_tensor_t *src, nx_dtype_t dtype,
                      uint32_t permute_head_dim)
{
    int rc = grow_tensors(q);
    if (rc != NX_OK)
        return rc;
    qtensor_t *t = &q->tensors[q->tensor_count++];
    *t = (qtensor_t){.src = src, .dtype = dtype, .permute_head_dim = permute_head_dim};
    snprintf(t->name, sizeof t->name, "%s", name);
    t->cols = src->ndim ? src->shape[src->ndim - 1] : 1;
    t->rows = 1;
    for (uint32_t d = 0; d + 1 < src->ndim; d++)
        t->rows *= src->shape[d];
    return NX_OK;
}

/* The source tensor hf (with the layer), written as gguf with the role's dtype. */
static int plan_one(qctx_t *q, const char *hf, const char *gguf, uint32_t layer,
                    tensor_role_t role, bool optional, uint32_t permute_heads)
{
    char hf_name[160], gguf_name[96];
    snprintf(hf_name, sizeof hf_name, hf, layer);
    snprintf(gguf_name, sizeof gguf_name, gguf, layer);
    const nx_st_tensor_t *src = nx_st_find(q->st, hf_name);
    if (!src)
        return optional ? NX_OK
                        : nx_err_set(q->err, NX_ENOTFOUND, "'%s': tensor '%s' is missing",
                                     q->opts->in_dir, hf_name);
    if (src->dtype != NX_DT_BF16 && src->dtype != NX_DT_F16 && src->dtype != NX_DT_F32)
        return nx_err_set(q->err, NX_ENOTSUP, "'%s': tensor '%s' is %s; quantize reads BF16, "
                          "F16 or F32", q->opts->in_dir, hf_name, nx_dtype_name(src->dtype));
    if (src->ndim < 1 || src->ndim > 2)
        return nx_err_set(q->err, NX_EFORMAT, "'%s': tensor '%s' has %u dims, expected 1 or 2",
                          q->opts->in_dir, hf_name, src->ndim);
    const nx_model_config_t *c = &q->cfg;
    uint64_t cols = src->shape[src->ndim - 1];
    tensor_role_t r = src->ndim == 1 ? ROLE_VECTOR : role;
    nx_dtype_t dtype = pick_dtype(q->opts->mix, r, c->tie_embeddings &&
                                  !nx_st_find(q->st, "lm_head.weight"), layer, c->layers, cols);
    uint32_t head_dim = permute_heads ? c->head_dim : 0;
    if (head_dim && src->shape[0] % head_dim != 0)
        return nx_err_set(q->err, NX_EFORMAT, "'%s': tensor '%s' has %llu rows, not whole "
                          "heads of %u", q->opts->in_dir, hf_name,
                          (unsigned long long)src->shape[0], head_dim);
    return add_tensor(q, gguf_name, src, dtype, head_dim);
}

static int plan_tensors(qctx_t *q)
{
    const nx_model_config_t *c = &q->cfg;
    const char *L = "model.layers.%u.";
    char hf[160];
    bool llama = c->arch == NX_ARCH_LLAMA; /* q/k rows permuted for llama.cpp's RoPE */
    int rc;
#define ONE(h, g, i, role, opt, perm)                                                         \
    do {                                                                                      \
        snprintf(hf, sizeof hf, "%s%s", L, h);                                                \
        if ((rc = plan_one(q, hf, g, i, role, opt, perm)))                                    \
            return rc;                                                                        \
    } while (0)
    if ((rc = plan_one(q, "model.embed_tokens.weight", "token_embd.weight", 0, ROLE_EMBED,
                       false, 0)))
        return rc;
    for (uint32_t i = 0; i < c->layers; i++) {
        ONE("input_layernorm.weight", "blk.%u.attn_norm.weight", i, ROLE_VECTOR, false, 0);
        ONE("self_attn.q_proj.weight", "blk.%u.attn_q.weight", i, ROLE_MATRIX, false, llama);
        ONE("self_attn.k_proj.weight", "blk.%u.attn_k.weight", i, ROLE_MATRIX, false, llama);
        ONE("self_attn.v_proj.weight", "blk.%u.attn_v.weight", i, ROLE_ATTN_V, false, 0);
        ONE("self_attn.o_proj.weight", "blk.%u.attn_output.weight", i, ROLE_MATRIX, false, 0);
        ONE("self_attn.q_proj.bias", "blk.%u.attn_q.bias", i, ROLE_VECTOR, true, llama);
        ONE("self_attn.k_proj.bias", "blk.%u.attn_k.bias", i, ROLE_VECTOR, true, llama);
        ONE("self_attn.v_proj.bias", "blk.%u.attn_v.bias", i, ROLE_VECTOR, true, 0);
        ONE("self_attn.o_proj.bias", "blk.%u.attn_output.bias", i, ROLE_VECTOR, true, 0);
        ONE("self_attn.q_norm.weight", "blk.%u.attn_q_norm.weight", i, ROLE_VECTOR, true, 0);
        ONE("self_attn.k_norm.weight", "blk.%u.attn_k_norm.weight", i, ROLE_VECTOR, true, 0);
        ONE("post_attention_layernorm.weight", "blk.%u.ffn_norm.weight", i, ROLE_VECTOR, false,
            0);
        ONE("mlp.gate_proj.weight", "blk.%u.ffn_gate.weight", i, ROLE_MATRIX, false, 0);
        ONE("mlp.up_proj.weight", "blk.%u.ffn_up.weight", i, ROLE_MATRIX, false, 0);
        ONE("mlp.down_proj.weight", "blk.%u.ffn_down.weight", i, ROLE_FFN_DOWN, false, 0);
    }
#undef ONE
    if ((rc = plan_one(q, "model.norm.weight", "output_norm.weight", 0, ROLE_VECTOR, false,
                       0)) ||
        (rc = plan_one(q, "lm_head.weight", "output.weight", 0, ROLE_OUTPUT,
                       c->tie_embeddings, 0)))
        return rc;
    return NX_OK;
}

/* Llama 3's rope scaling as llama.cpp carries it: factor[i] = plain inv_freq / scaled. */
static int plan_rope_freqs(qctx_t *q)
{
    const nx_model_config_t *c = &q->cfg;
    if (!c->rope_llama3)
        return NX_OK;
    uint32_t half = c->head_dim / 2;
    if (half > NX_MAX_ROPE_FACTORS)
        return nx_err_set(q->err, NX_ENOTSUP, "'%s': head_dim %u is too large",
                          q->opts->in_dir, c->head_dim);
    double scaled[NX_MAX_ROPE_FACTORS], plain[NX_MAX_ROPE_FACTORS];
    nx_model_config_t unscaled = *c;
    unscaled.rope_llama3 = false;
    nx__k_rope_inv_freq(c, scaled);
    nx__k_rope_inv_freq(&unscaled, plain);
    for (uint32_t i = 0; i < half; i++)
        q->rope_factors[i] = (float)(plain[i] / scaled[i]);
    int rc = grow_tensors(q);
    if (rc != NX_OK)
        return rc;
    qtensor_t *t = &q->tensors[q->tensor_count++];
    *t = (qtensor_t){.src = NULL, .generated = q->rope_factors, .dtype = NX_DT_F32,
                     .rows = 1, .cols = half};
    snprintf(t->name, sizeof t->name, "rope_freqs.weight");
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Producing rows
 */

/* Source row of output row r: llama's permutation puts, within each head, row s*hd/2 + j of
 * the original at 2j + s (its converter's reshape(heads, 2, hd/2).swapaxes(1, 2)). */
static uint64_t source_row(const qtensor_t *t, uint64_t r)
{
    uint32_t hd = t->permute_head_dim;
    if (!hd)
        return r;
    uint64_t head = r / hd, within = r % hd;
    return head * hd + (within % 2) * (hd / 2) + within / 2;
}

static void row_task(void *ctx_v, uint32_t task, uint32_t worker)
{
    qctx_t *q = ctx_v;
    const qtensor_t *t = q->job;
    uint64_t r = q->job_row0 + task;
    float *row = q->float_rows + (uint64_t)worker * q->float_row_cap;
    uint64_t out_bytes = nx__quant_row_bytes(t->dtype, t->cols);
    if (t->src) {
        const nx_st_tensor_t *s = t->src;
        uint64_t in_bytes = nx__quant_row_bytes(s->dtype, t->cols);
        uint8_t *raw = q->src_rows + (size_t)worker * q->src_row_cap;
        const nx_st_file_t *f = nx_st_file_at(q->st, s->file_index);
        uint64_t at = f->data_offset + s->begin + source_row(t, r) * in_bytes;
        ssize_t got = pread(q->fds[s->file_index], raw, in_bytes, (off_t)at);
        if (got != (ssize_t)in_bytes) {
            __atomic_store_n(&q->job_errno, got < 0 ? errno : EIO, __ATOMIC_RELAXED);
            return;
        }
        nx__dequantize_row(s->dtype, raw, row, t->cols);
    } else {
        memcpy(row, t->generated + r * t->cols, t->cols * sizeof *row);
    }
    nx__quantize_row(t->dtype, row, q->job_out + (uint64_t)task * out_bytes, t->cols);
}

/* The writer's fill: bytes [offset, offset + len) of tensor `spec`. */
static int fill(void *user, const nx_st_tensor_spec_t *spec, uint64_t offset, void *dst,
                size_t len, nx_err_t *err)
{
    qctx_t *q = user;
    const qtensor_t *t = &q->tensors[spec - q->specs];
    uint64_t row_bytes = nx__quant_row_bytes(t->dtype, t->cols);
    uint64_t r0 = offset / row_bytes, r1 = (offset + len + row_bytes - 1) / row_bytes;
    size_t need = (size_t)((r1 - r0) * row_bytes);
    if (need > q->stage_cap) {
        free(q->stage);
        if (!(q->stage = malloc(need)))
            return q->stage_cap = 0, nx_err_set(err, NX_ENOMEM, "out of memory");
        q->stage_cap = need;
    }
    q->job = t, q->job_row0 = r0, q->job_out = q->stage, q->job_errno = 0;
    nx__tpool_run(q->pool, (uint32_t)(r1 - r0), row_task, q);
    if (q->job_errno)
        return nx_err_set(err, NX_EIO, "reading '%s' from '%s': %s", t->src->name,
                          nx_st_file_at(q->st, t->src->file_index)->path,
                          strerror(q->job_errno));
    memcpy(dst, q->stage + (offset - r0 * row_bytes), len);
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Metadata: the model's keys and the tokenizer's
 */
typedef struct kv_list {
    nx_gguf_kv_spec_t *items;
    size_t count, cap;
    int failed;
} kv_list_t;

static nx_gguf_kv_spec_t *kv_add(kv_list_t *l, const char *key, nx_gguf_type_t type)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        nx_gguf_kv_spec_t *p = realloc(l->items, cap * sizeof *p);
        if (!p) {
            l->failed = 1;
            static nx_gguf_kv_spec_t sink;
            return &sink;
        }
        l->items = p, l->cap = cap;
    }
    nx_gguf_kv_spec_t *kv = &l->items[l->count++];
    *kv = (nx_gguf_kv_spec_t){.key = key, .type = type, .elem_type = type};
    return kv;
}

static void kv_u32(kv_list_t *l, const char *key, uint64_t v)
{
    kv_add(l, key, NX_GGUF_U32)->value.u = v;
}

static void kv_f32(kv_list_t *l, const char *key, double v)
{
    kv_add(l, key, NX_GGUF_F32)->value.f = v;
}

static void kv_str(kv_list_t *l, const char *key, const char *v)
{
    kv_add(l, key, NX_GGUF_STRING)->value.str = v;
}

static void kv_bool(kv_list_t *l, const char *key, bool v)
{
    kv_add(l, key, NX_GGUF_BOOL)->value.b = v;
}

static void kv_array(kv_list_t *l, const char *key, nx_gguf_type_t elem, uint64_t count,
                     const void *data)
{
    nx_gguf_kv_spec_t *kv = kv_add(l, key, NX_GGUF_ARRAY);
    kv->elem_type = elem, kv->count = count, kv->array = data;
}

/* The tokenizer as GGUF arrays, from tokenizer.json (byte-level spellings kept as they are). */
typedef struct gguf_tok {
    json_t *root;
    const char **tokens;   /* [vocab] */
    int32_t *types;        /* [vocab] */
    char **owned;          /* strings we made (padding, joined merges) */
    size_t owned_count;
    const char **merges;
    size_t merge_count;
    const char *pre;
    int64_t bos_id, eos_id;
    bool add_bos;
    char *chat_template;
} gguf_tok_t;

static char *own(gguf_tok_t *g, char *s)
{
    if (s)
        g->owned[g->owned_count++] = s;
    return s;
}

static int read_pre(qctx_t *q, gguf_tok_t *g, const char *path)
{
    json_t *pre = json_object_get(g->root, "pre_tokenizer");
    json_t *list = json_object_get(pre, "pretokenizers");
    const char *regex = NULL;
    size_t n = json_is_array(list) ? json_array_size(list) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *step = json_is_array(list) ? json_array_get(list, i) : pre;
        const char *type = json_string_value(json_object_get(step, "type"));
        if (type && strcmp(type, "Split") == 0)
            regex = json_string_value(json_object_get(json_object_get(step, "pattern"), "Regex"));
    }
    const nx__pretok_kind_t *kind = nx__pretok_by_regex(regex);
    if (!kind)
        return nx_err_set(q->err, NX_ENOTSUP, "'%s': the pre-tokenizer's regex is not one "
                          "llama.cpp knows by name (known: %s)", path,
                          nx__pretok_known_names());
    g->pre = kind->gguf_name;
    return NX_OK;
}

/* add_bos_token: tokenizer_config.json says, or a post-processor that starts with a token. */
static bool reads_add_bos(gguf_tok_t *g, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_t *cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, NULL);
    json_t *flag = json_object_get(cfg, "add_bos_token");
    bool yes = json_is_true(flag);
    bool said = json_is_boolean(flag);
    json_decref(cfg);
    if (said)
        return yes;
    json_t *post = json_object_get(g->root, "post_processor");
    json_t *procs = json_object_get(post, "processors");
    size_t n = json_is_array(procs) ? json_array_size(procs) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_is_array(procs) ? json_array_get(procs, i) : post;
        json_t *first = json_array_get(json_object_get(p, "single"), 0);
        if (json_object_get(first, "SpecialToken"))
            return true;
    }
    return false;
}

static int read_tokenizer(qctx_t *q, gguf_tok_t *g)
{
    const char *dir = q->opts->in_dir;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_error_t jerr;
    if (!(g->root = json_load_file(path, JSON_ALLOW_NUL, &jerr)))
        return nx_err_set(q->err, NX_EFORMAT, "'%s' line %d: %s", path, jerr.line, jerr.text);
    uint32_t vocab = q->cfg.vocab;
    json_t *merges = json_object_get(json_object_get(g->root, "model"), "merges");
    json_t *words = json_object_get(json_object_get(g->root, "model"), "vocab");
    json_t *added = json_object_get(g->root, "added_tokens");
    size_t merge_count = json_array_size(merges);
    g->tokens = calloc(vocab, sizeof *g->tokens);
    g->types = calloc(vocab, sizeof *g->types);
    g->merges = calloc(merge_count ? merge_count : 1, sizeof *g->merges);
    g->owned = calloc((size_t)vocab + merge_count + 1, sizeof *g->owned);
    if (!g->tokens || !g->types || !g->merges || !g->owned)
        return nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory for the tokenizer");
    const char *key;
    json_t *v;
    json_object_foreach(words, key, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= vocab)
            return nx_err_set(q->err, NX_EFORMAT, "'%s': model.vocab['%s'] is not an id below "
                              "vocab_size %u", path, key, vocab);
        g->tokens[id] = key, g->types[id] = 1; /* NORMAL */
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *content = json_string_value(json_object_get(v, "content"));
        if (!content || id < 0 || id >= vocab)
            return nx_err_set(q->err, NX_EFORMAT, "'%s': added_tokens[%zu] is not an id below "
                              "vocab_size %u with a content", path, i, vocab);
        g->tokens[id] = content;
        g->types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4; /* CONTROL, USER */
    }
    for (uint32_t id = 0; id < vocab; id++) {
        if (g->tokens[id])
            continue;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%u]", id); /* the converter's filler for unused ids */
        if (!(g->tokens[id] = own(g, strdup(pad))))
            return nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory");
        g->types[id] = 5; /* UNUSED */
    }
    json_array_foreach(merges, i, v) {
        if (json_is_string(v)) {
            g->merges[i] = json_string_value(v);
            continue;
        }
        const char *a = json_string_value(json_array_get(v, 0));
        const char *b = json_string_value(json_array_get(v, 1));
        char *joined = a && b ? malloc(strlen(a) + strlen(b) + 2) : NULL;
        if (!joined)
            return nx_err_set(q->err, a && b ? NX_ENOMEM : NX_EFORMAT,
                              "'%s': model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
                              path, i);
        sprintf(joined, "%s %s", a, b);
        g->merges[i] = own(g, joined);
    }
    g->merge_count = merge_count;
    int rc = read_pre(q, g, path);
    if (rc != NX_OK)
        return rc;
    g->add_bos = reads_add_bos(g, dir);
    nx_tokenizer_t *tok = nx_tokenizer_load(dir, q->err);
    if (!tok)
        return q->err->code;
    const char *tmpl = nx_tokenizer_chat_template(tok);
    const char *eos = nx_tokenizer_eos_token(tok), *bos = nx_tokenizer_bos_token(tok);
    g->eos_id = eos ? nx_tokenizer_token_id(tok, eos) : -1;
    g->bos_id = bos ? nx_tokenizer_token_id(tok, bos) : -1;
    if (g->eos_id < 0 && q->cfg.eos_count)
        g->eos_id = q->cfg.eos_ids[0];
    if (g->bos_id < 0)
        g->bos_id = q->cfg.bos_id;
    g->chat_template = tmpl ? strdup(tmpl) : NULL;
    nx_tokenizer_destroy(&tok);
    return tmpl && !g->chat_template ? nx_err_set(q->err, NX_ENOMEM, "out of memory") : NX_OK;
}

static void free_tokenizer(gguf_tok_t *g)
{
    for (size_t i = 0; i < g->owned_count; i++)
        free(g->owned[i]);
    free(g->owned);
    free(g->tokens);
    free(g->types);
    free(g->merges);
    free(g->chat_template);
    json_decref(g->root);
}

static uint32_t file_type(nx_qmix_t mix)
{
    /* llama.cpp's llama_ftype values */
    static const uint32_t ftype[NX_QMIX__COUNT] = {0, 1, 32, 7, 2, 15};
    return ftype[mix];
}

/* "<arch>.<suffix>" kept in keys (the list points at it until the file is written). */
static const char *arch_key(char *keys, size_t *used, size_t cap, const char *arch,
                            const char *suffix)
{
    char *at = keys + *used;
    int n = snprintf(at, cap - *used, "%s.%s", arch, suffix);
    *used += n >= 0 && (size_t)n < cap - *used ? (size_t)n + 1 : 0;
    return at;
}

static void model_keys(qctx_t *q, kv_list_t *l, const char *name, char *keys, size_t key_cap)
{
    const nx_model_config_t *c = &q->cfg;
    const char *arch = nx_arch_name(c->arch);
    size_t used = 0;
    struct {
        const char *suffix;
        uint64_t value;
    } u32s[] = {{"context_length", c->max_position},   {"embedding_length", c->hidden},
                {"block_count", c->layers},            {"feed_forward_length", c->intermediate},
                {"attention.head_count", c->heads},    {"attention.head_count_kv", c->kv_heads},
                {"attention.key_length", c->head_dim}, {"attention.value_length", c->head_dim},
                {"rope.dimension_count", c->head_dim}, {"vocab_size", c->vocab}};
    kv_str(l, "general.architecture", arch);
    kv_str(l, "general.name", name);
    kv_u32(l, "general.file_type", file_type(q->opts->mix));
    if (q->opts->mix >= NX_QMIX_Q8_0)
        kv_u32(l, "general.quantization_version", 2);
    for (size_t i = 0; i < sizeof u32s / sizeof *u32s; i++)
        kv_u32(l, arch_key(keys, &used, key_cap, arch, u32s[i].suffix), u32s[i].value);
    kv_f32(l, arch_key(keys, &used, key_cap, arch, "rope.freq_base"), c->rope_theta);
    kv_f32(l, arch_key(keys, &used, key_cap, arch, "attention.layer_norm_rms_epsilon"),
           c->rms_eps);
}

static void tokenizer_keys(kv_list_t *l, const gguf_tok_t *g, uint32_t vocab)
{
    kv_str(l, "tokenizer.ggml.model", "gpt2");
    kv_str(l, "tokenizer.ggml.pre", g->pre);
    kv_array(l, "tokenizer.ggml.tokens", NX_GGUF_STRING, vocab, g->tokens);
    kv_array(l, "tokenizer.ggml.token_type", NX_GGUF_I32, vocab, g->types);
    kv_array(l, "tokenizer.ggml.merges", NX_GGUF_STRING, g->merge_count, g->merges);
    if (g->bos_id >= 0)
        kv_u32(l, "tokenizer.ggml.bos_token_id", (uint64_t)g->bos_id);
    if (g->eos_id >= 0)
        kv_u32(l, "tokenizer.ggml.eos_token_id", (uint64_t)g->eos_id);
    kv_bool(l, "tokenizer.ggml.add_bos_token", g->add_bos);
    if (g->chat_template)
        kv_str(l, "tokenizer.chat_template", g->chat_template);
}

/* ------------------------------------------------------------------------------------------
 * A GGUF file as the source (requantize, or dequantize to F32/F16/BF16): its tensors keep
 * their names and order, their roles come from the names, its keys are copied
 */
static tensor_role_t gguf_role(const char *name, uint32_t *layer)
{
    unsigned l;
    *layer = sscanf(name, "blk.%u.", &l) == 1 ? l : 0;
    if (strcmp(name, "token_embd.weight") == 0)
        return ROLE_EMBED;
    if (strcmp(name, "output.weight") == 0)
        return ROLE_OUTPUT;
    if (strstr(name, ".attn_v.weight"))
        return ROLE_ATTN_V;
    return strstr(name, ".ffn_down.weight") ? ROLE_FFN_DOWN : ROLE_MATRIX;
}

static int plan_gguf(qctx_t *q)
{
    bool tied = nx_st_find(q->st, "output.weight") == NULL;
    for (size_t i = 0; i < nx_st_tensor_count(q->st); i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(q->st, i);
        bool plain = t->dtype == NX_DT_F32 || t->dtype == NX_DT_F16 || t->dtype == NX_DT_BF16;
        if (t->ndim < 1 || t->ndim > 2 || !(plain || nx__quant_weight_ok(t->dtype)))
            return nx_err_set(q->err, NX_ENOTSUP, "'%s': tensor '%s' (%s, %u dims) cannot be "
                              "read: quantize reads F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K and "
                              "Q6_K matrices and vectors", q->opts->in_dir, t->name,
                              nx_dtype_name(t->dtype), t->ndim);
        uint32_t layer = 0;
        tensor_role_t role = t->ndim == 1 ? ROLE_VECTOR : gguf_role(t->name, &layer);
        nx_dtype_t dtype = pick_dtype(q->opts->mix, role, tied, layer, q->cfg.layers,
                                      t->shape[t->ndim - 1]);
        int rc = add_tensor(q, t->name, t, dtype, 0);
        if (rc != NX_OK)
            return rc;
    }
    return NX_OK;
}

#define MAX_STRING_ARRAYS 16 /* tokens, merges, ...: a model has two or three */

/* Keys this writer sets itself, not copied from the source. */
static bool key_is_ours(const char *key)
{
    return strcmp(key, "general.alignment") == 0 || strcmp(key, "general.file_type") == 0 ||
           strcmp(key, "general.quantization_version") == 0 || strncmp(key, "nexus.", 6) == 0;
}

static int copy_kv(qctx_t *q, kv_list_t *l, const nx_gguf_kv_t *kv, const char ***strings)
{
    const char *key = nx_gguf_kv_key(kv);
    nx_gguf_type_t type = nx_gguf_kv_type(kv), elem = nx_gguf_kv_elem_type(kv);
    nx_gguf_kv_spec_t *out = kv_add(l, key, type);
    out->elem_type = elem;
    if (type == NX_GGUF_ARRAY) {
        uint64_t n = nx_gguf_kv_count(kv);
        out->count = n;
        if (elem != NX_GGUF_STRING) {
            out->array = nx_gguf_kv_array_data(kv);
            return NX_OK;
        }
        const char **list = malloc((n ? n : 1) * sizeof *list);
        if (!list)
            return nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory for '%s'", key);
        *strings = list;
        for (uint64_t i = 0; i < n; i++)
            list[i] = nx_gguf_get_str(kv, i, NULL);
        out->array = list;
        return NX_OK;
    }
    bool ok = true;
    switch (type) {
    case NX_GGUF_I8: case NX_GGUF_I16: case NX_GGUF_I32: case NX_GGUF_I64:
        ok = nx_gguf_get_i64(kv, 0, &out->value.i);
        break;
    case NX_GGUF_F32: case NX_GGUF_F64:
        ok = nx_gguf_get_f64(kv, 0, &out->value.f);
        break;
    case NX_GGUF_BOOL:
        ok = nx_gguf_get_bool(kv, 0, &out->value.b);
        break;
    case NX_GGUF_STRING:
        ok = (out->value.str = nx_gguf_get_str(kv, 0, NULL)) != NULL;
        break;
    default:
        ok = nx_gguf_get_u64(kv, 0, &out->value.u);
    }
    return ok ? NX_OK : nx_err_set(q->err, NX_EFORMAT, "'%s': key '%s' cannot be read",
                                   q->opts->in_dir, key);
}

/* Every key of the source but the writer's own, general.file_type for the new mix. The string
 * arrays' pointer lists go to strings[] (freed by the caller). */
static int copy_kvs(qctx_t *q, kv_list_t *l, const char ***strings, size_t *string_count)
{
    kv_u32(l, "general.file_type", file_type(q->opts->mix));
    if (q->opts->mix >= NX_QMIX_Q8_0)
        kv_u32(l, "general.quantization_version", 2);
    for (size_t i = 0; i < nx_st_gguf_kv_count(q->st); i++) {
        const nx_gguf_kv_t *kv = nx_st_gguf_kv_at(q->st, i);
        if (key_is_ours(nx_gguf_kv_key(kv)))
            continue;
        if (*string_count == MAX_STRING_ARRAYS)
            return nx_err_set(q->err, NX_ENOTSUP, "'%s': more than %d string arrays in the "
                              "metadata", q->opts->in_dir, MAX_STRING_ARRAYS);
        const char **list = NULL;
        int rc = copy_kv(q, l, kv, &list);
        if (list)
            strings[(*string_count)++] = list;
        if (rc != NX_OK)
            return rc;
    }
    return l->failed ? nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory") : NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * The whole conversion
 */
static int open_inputs(qctx_t *q)
{
    const nx_quantize_opts_t *o = q->opts;
    struct stat sb;
    if (stat(o->in_dir, &sb) != 0)
        return nx_err_set(q->err, NX_ENOTFOUND, "'%s': %s (quantize reads a model directory "
                          "or a GGUF file)", o->in_dir, strerror(errno));
    int rc = nx_config_load(o->in_dir, &q->cfg, q->err);
    if (rc != NX_OK)
        return rc;
    if (!(q->st = nx_st_open(o->in_dir, q->err)))
        return q->err->code;
    size_t files = nx_st_file_count(q->st);
    if (!(q->fds = malloc(files * sizeof *q->fds)))
        return nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory");
    for (size_t i = 0; i < files; i++)
        q->fds[i] = -1;
    for (size_t i = 0; i < files; i++) {
        const char *path = nx_st_file_at(q->st, i)->path;
        if ((q->fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            return nx_err_set(q->err, NX_EIO, "'%s': %s", path, strerror(errno));
    }
    return NX_OK;
}

static int make_workspace(qctx_t *q)
{
    if (!(q->pool = nx__tpool_new(q->opts->threads, q->err)))
        return q->err->code;
    uint64_t widest = 1;
    for (size_t i = 0; i < q->tensor_count; i++)
        widest = q->tensors[i].cols > widest ? q->tensors[i].cols : widest;
    uint32_t workers = nx__tpool_size(q->pool);
    q->float_row_cap = widest;
    q->src_row_cap = (size_t)widest * sizeof(float);
    q->float_rows = malloc((size_t)workers * widest * sizeof(float));
    q->src_rows = malloc((size_t)workers * q->src_row_cap);
    q->specs = calloc(q->tensor_count, sizeof *q->specs);
    if (!q->float_rows || !q->src_rows || !q->specs)
        return nx_err_set(q->err, NX_ENOMEM, "quantize: out of memory");
    for (size_t i = 0; i < q->tensor_count; i++) {
        const qtensor_t *t = &q->tensors[i];
        nx_st_tensor_spec_t *s = &q->specs[i];
        *s = (nx_st_tensor_spec_t){.name = t->name, .dtype = t->dtype, .data = NULL};
        if (t->src && t->src->ndim == 2)
            s->ndim = 2, s->shape[0] = t->rows, s->shape[1] = t->cols;
        else
            s->ndim = 1, s->shape[0] = t->cols;
    }
    return NX_OK;
}

static void close_all(qctx_t *q)
{
    if (q->fds)
        for (size_t i = 0; q->st && i < nx_st_file_count(q->st); i++)
            if (q->fds[i] >= 0)
                close(q->fds[i]);
    free(q->fds);
    nx__tpool_destroy(&q->pool);
    free(q->float_rows);
    free(q->src_rows);
    free(q->stage);
    free(q->specs);
    free(q->tensors);
    nx_st_destroy(&q->st);
}

static const char *base_name(const char *dir, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", dir);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

static void report_out(const qctx_t *q, const char *path, uint64_t t0,
                       nx_quantize_report_t *report)
{
    nx_quantize_report_t r = {.tensors = q->tensor_count, .in_bytes = nx_st_data_bytes(q->st)};
    for (size_t i = 0; i < q->tensor_count; i++)
        r.by_dtype[q->tensors[i].dtype]++;
    struct stat sb;
    if (stat(path, &sb) == 0)
        r.out_bytes = (uint64_t)sb.st_size;
    r.seconds = (double)(nx_now_ns() - t0) / 1e9;
    *report = r;
}

int nx_quantize_model(const nx_quantize_opts_t *opts, nx_quantize_report_t *report,
                      nx_err_t *err)
{
    nx_err_t local = {0};
    if (!err)
        err = &local;
    if (!opts || !opts->in_dir || !opts->out_path || (unsigned)opts->mix >= NX_QMIX__COUNT)
        return nx_err_set(err, NX_EINVAL, "quantize: needs an input directory, an output path "
                          "and a type");
    uint64_t t0 = nx_now_ns();
    qctx_t q = {.opts = opts, .err = err};
    gguf_tok_t tok = {0};
    kv_list_t kvs = {0};
    char name_buf[1024], keys[4096];
    const char **strings[MAX_STRING_ARRAYS] = {0}; /* a GGUF source's string arrays */
    size_t string_count = 0;
    int rc = open_inputs(&q);
    if (rc == NX_OK && q.cfg.gguf) {
        rc = plan_gguf(&q);
        if (rc == NX_OK)
            rc = make_workspace(&q);
        if (rc == NX_OK)
            rc = copy_kvs(&q, &kvs, strings, &string_count);
    } else if (rc == NX_OK) {
        rc = plan_tensors(&q);
        if (rc == NX_OK)
            rc = plan_rope_freqs(&q);
        if (rc == NX_OK)
            rc = read_tokenizer(&q, &tok);
        if (rc == NX_OK)
            rc = make_workspace(&q);
        if (rc == NX_OK) {
            model_keys(&q, &kvs,
                       opts->name ? opts->name
                                  : base_name(opts->in_dir, name_buf, sizeof name_buf),
                       keys, sizeof keys);
            tokenizer_keys(&kvs, &tok, q.cfg.vocab);
            if (kvs.failed)
                rc = nx_err_set(err, NX_ENOMEM, "quantize: out of memory");
        }
    }
    if (rc == NX_OK) /* the inputs are good: the output's folder may be made */
        rc = nx_st_make_parents(opts->out_path, err);
    if (rc == NX_OK) {
        nx_st_save_opts_t save = {.fill = fill, .fill_user = &q};
        rc = nx_gguf_save(opts->out_path, kvs.items, kvs.count, q.specs, q.tensor_count, &save,
                          err);
    }
    if (rc == NX_OK && report)
        report_out(&q, opts->out_path, t0, report);
    free(kvs.items);
    for (size_t i = 0; i < string_count; i++)
        free(strings[i]);
    free_tokenizer(&tok);
    close_all(&q);
    return rc;
}
