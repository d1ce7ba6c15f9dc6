/* engine.c — the engine and its sequences, independent of the backend: read config.json,
 * check and bind every weight the architecture needs (pointers into the model's pool region,
 * used in place), pick the backend from the pool's device, keep sequences (KV cache region,
 * queued tokens, last logits) and turn a step over several sequences into one flat batch of
 * (sequence, position, token) rows for the backend (continuous batching: any set of
 * sequences, each with any number of queued tokens, in any step).
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "quant.h"

struct nx_seq {
    nx_engine_t *engine;
    nx__kv_t kv;
    uint32_t len;           /* tokens in the KV cache */
    int32_t *queue;         /* [kv.capacity] tokens fed, not yet stepped */
    uint32_t queued;
    bool all_logits;
    float *logits;          /* [logits_cap_rows][vocab] */
    size_t logits_rows;     /* rows of the last step */
    size_t logits_cap_rows;
    uint64_t last_step;     /* the step id that last included it (duplicate check) */
    /* nx_seq_pick_next: the next step picks with this sampler (NULL: returns logits) */
    nx_sampler_t *pick_sampler;
    const int32_t *pick_history;
    size_t pick_history_len;
    nx__pick_t pick;        /* the step's plan */
    nx__mask_fn mask_fn;    /* nx__seq_defer_mask: the plan's mask comes late; NULL: in plan */
    void *mask_user;
    int32_t picked;         /* the last step's pick; -1 when none */
};

struct nx_engine {
    nx_model_config_t cfg;
    char model_dir[1024];
    char kv_owner[128];     /* "kv:<model directory name>" */
    nx_pool_t *pool;
    nx__weights_t w;
    const nx__backend_ops_t *ops;
    void *state;
    uint32_t max_context;
    uint64_t step_id;
    /* the step's batch, grown as needed */
    int32_t *tokens;
    uint32_t *positions, *row_seq, rows_cap;
    nx__batch_seq_t *bseqs;
    uint32_t bseqs_cap;
    uint32_t *logit_rows;
    float **logit_out;
    const nx__pick_t **picks;
    int32_t *picked;
    uint32_t logit_cap;
    /* deferred masks (nx__seq_defer_mask): one slot of mask_words per such sequence */
    uint32_t *masks;
    size_t masks_cap;           /* words */
    uint32_t mask_words;        /* (vocab + 31) / 32 */
    nx_seq_t *const *step_seqs; /* the step in progress, for the hook */
    size_t step_count;
    bool masks_pending;         /* the hook has not run yet in this step */
};

/* ------------------------------------------------------------------------------------------
 * Binding the weights
 *
 * Hugging Face checkpoints and GGUF files name the same tensors differently; one table per
 * format gives every weight's name pattern (%u is the layer).
 */
typedef struct weight_names {
    const char *embed, *norm, *lm_head;
    const char *attn_norm, *q, *k, *v, *o, *q_bias, *k_bias, *v_bias, *o_bias, *q_norm, *k_norm;
    const char *mlp_norm, *gate, *up, *down;
} weight_names_t;

static const weight_names_t hf_names = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
    "model.layers.%u.input_layernorm.weight", "model.layers.%u.self_attn.q_proj.weight",
    "model.layers.%u.self_attn.k_proj.weight", "model.layers.%u.self_attn.v_proj.weight",
    "model.layers.%u.self_attn.o_proj.weight", "model.layers.%u.self_attn.q_proj.bias",
    "model.layers.%u.self_attn.k_proj.bias", "model.layers.%u.self_attn.v_proj.bias",
    "model.layers.%u.self_attn.o_proj.bias", "model.layers.%u.self_attn.q_norm.weight",
    "model.layers.%u.self_attn.k_norm.weight", "model.layers.%u.post_attention_layernorm.weight",
    "model.layers.%u.mlp.gate_proj.weight", "model.layers.%u.mlp.up_proj.weight",
    "model.layers.%u.mlp.down_proj.weight",
};

/* llama.cpp's names (its converter's tensor map for llama, qwen2, qwen3) */
static const weight_names_t gguf_names = {
    "token_embd.weight", "output_norm.weight", "output.weight",
    "blk.%u.attn_norm.weight", "blk.%u.attn_q.weight", "blk.%u.attn_k.weight",
    "blk.%u.attn_v.weight", "blk.%u.attn_output.weight", "blk.%u.attn_q.bias",
    "blk.%u.attn_k.bias", "blk.%u.attn_v.bias", "blk.%u.attn_output.bias",
    "blk.%u.attn_q_norm.weight", "blk.%u.attn_k_norm.weight", "blk.%u.ffn_norm.weight",
    "blk.%u.ffn_gate.weight", "blk.%u.ffn_up.weight", "blk.%u.ffn_down.weight",
};

typedef struct binder {
    const nx_model_t *model;
    const char *dir;
    const nx_model_config_t *cfg;
    const weight_names_t *names;
    nx_err_t *err;
} binder_t;

static void shape_text(const uint64_t *shape, uint32_t ndim, char *out, size_t cap)
{
    size_t used = (size_t)snprintf(out, cap, "[");
    for (uint32_t i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%llu", i ? ", " : "",
                                 (unsigned long long)shape[i]);
    if (used < cap)
        snprintf(out + used, cap - used, "]");
}

/* Vectors (norms, biases) must be BF16, F16 or F32; matrices may also be a block type the
 * engine computes with (quant.h), whose rows hold whole blocks (the shape check sees to the
 * block: a reader accepts a block tensor only when its last dim is a multiple of it). */
static int check_dtype(binder_t *b, const char *name, nx_dtype_t dtype, bool matrix)
{
    bool plain = dtype == NX_DT_BF16 || dtype == NX_DT_F16 || dtype == NX_DT_F32;
    if (plain || (matrix && nx__quant_weight_ok(dtype)))
        return NX_OK;
    return nx_err_set(b->err, nx_dtype_is_block(dtype) ? NX_ENOTSUP : NX_EFORMAT,
                      "model '%s': tensor '%s' has dtype %s, expected %s", b->dir, name,
                      nx_dtype_name(dtype),
                      matrix ? "BF16, F16, F32, Q8_0, Q4_0, Q5_0, Q4_K or Q6_K"
                             : "BF16, F16 or F32");
}

/* Bind the tensor named by `pattern` (with the layer) with shape [rows] (cols == 0) or
 * [rows, cols]. A missing tensor is NX_ENOTFOUND unless optional (then ref->ptr stays NULL
 * and NX_OK). */
static int bind(binder_t *b, nx__wref_t *ref, bool optional, uint64_t rows, uint64_t cols,
                const char *pattern, uint32_t layer)
{
    char name[256];
    snprintf(name, sizeof name, pattern, layer);
    memset(ref, 0, sizeof *ref);
    const nx_model_tensor_t *t = nx_model_find(b->model, name);
    if (!t)
        return optional ? NX_OK
                        : nx_err_set(b->err, NX_ENOTFOUND,
                                     "model '%s': tensor '%s' is missing (%s needs it)", b->dir,
                                     name, b->cfg->model_type);
    int rc = check_dtype(b, name, t->dtype, cols != 0);
    if (rc != NX_OK)
        return rc;
    uint64_t want[2] = {rows, cols};
    uint32_t want_ndim = cols ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char have[128], expected[64];
        shape_text(t->shape, t->ndim, have, sizeof have);
        shape_text(want, want_ndim, expected, sizeof expected);
        return nx_err_set(b->err, NX_EFORMAT,
                          "model '%s': tensor '%s' has shape %s, expected %s from %s", b->dir,
                          name, have, expected,
                          b->cfg->gguf ? "the file's metadata" : "config.json");
    }
    *ref = (nx__wref_t){t->ptr, t->dtype, (uint32_t)rows, cols ? (uint32_t)cols : 1};
    return NX_OK;
}

static int bind_layer(binder_t *b, uint32_t i, nx__layer_weights_t *l)
{
    const nx_model_config_t *c = b->cfg;
    const weight_names_t *n = b->names;
    uint64_t q = (uint64_t)c->heads * c->head_dim, kv = (uint64_t)c->kv_heads * c->head_dim;
    int rc;
    if ((rc = bind(b, &l->attn_norm, false, c->hidden, 0, n->attn_norm, i)) ||
        (rc = bind(b, &l->q, false, q, c->hidden, n->q, i)) ||
        (rc = bind(b, &l->k, false, kv, c->hidden, n->k, i)) ||
        (rc = bind(b, &l->v, false, kv, c->hidden, n->v, i)) ||
        (rc = bind(b, &l->o, false, c->hidden, q, n->o, i)) ||
        (rc = bind(b, &l->mlp_norm, false, c->hidden, 0, n->mlp_norm, i)) ||
        (rc = bind(b, &l->gate, false, c->intermediate, c->hidden, n->gate, i)) ||
        (rc = bind(b, &l->up, false, c->intermediate, c->hidden, n->up, i)) ||
        (rc = bind(b, &l->down, false, c->hidden, c->intermediate, n->down, i)))
        return rc;
    if (c->qkv_bias && ((rc = bind(b, &l->q_bias, false, q, 0, n->q_bias, i)) ||
                        (rc = bind(b, &l->k_bias, false, kv, 0, n->k_bias, i)) ||
                        (rc = bind(b, &l->v_bias, false, kv, 0, n->v_bias, i))))
        return rc;
    /* Hugging Face's Llama and Qwen3 give o_proj a bias too when attention_bias is true;
     * Qwen2's q/k/v biases come without one. A GGUF file says by having the tensor. */
    if (c->qkv_bias && c->arch != NX_ARCH_QWEN2 &&
        (rc = bind(b, &l->o_bias, c->gguf, c->hidden, 0, n->o_bias, i)))
        return rc;
    if (c->qk_norm && ((rc = bind(b, &l->q_norm, false, c->head_dim, 0, n->q_norm, i)) ||
                       (rc = bind(b, &l->k_norm, false, c->head_dim, 0, n->k_norm, i))))
        return rc;
    return NX_OK;
}

static int bind_weights(binder_t *b, nx__weights_t *w)
{
    const nx_model_config_t *c = b->cfg;
    int rc;
    if ((rc = bind(b, &w->embed, false, c->vocab, c->hidden, b->names->embed, 0)) ||
        (rc = bind(b, &w->norm, false, c->hidden, 0, b->names->norm, 0)))
        return rc;
    w->layers = calloc(c->layers, sizeof *w->layers);
    if (!w->layers)
        return nx_err_set(b->err, NX_ENOMEM, "model '%s': out of memory", b->dir);
    for (uint32_t i = 0; i < c->layers; i++)
        if ((rc = bind_layer(b, i, &w->layers[i])))
            return rc;
    /* the head when the file has it (even if tied), else the embeddings when tied */
    if ((rc = bind(b, &w->lm_head, true, c->vocab, c->hidden, b->names->lm_head, 0)))
        return rc;
    if (!w->lm_head.ptr) {
        if (!c->tie_embeddings)
            return nx_err_set(b->err, NX_ENOTFOUND,
                              "model '%s': tensor '%s' is missing and tie_word_embeddings is "
                              "false", b->dir, b->names->lm_head);
        w->lm_head = w->embed;
    }
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * The engine
 */
static void set_owner(nx_engine_t *e, const char *model_dir)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", model_dir);
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        dir[--len] = '\0';
    const char *slash = strrchr(dir, '/');
    snprintf(e->kv_owner, sizeof e->kv_owner, "kv:%s", slash ? slash + 1 : dir);
}

nx_engine_t *nx_engine_new(const char *model_dir, const nx_model_t *weights, nx_pool_t *pool,
                           const nx_engine_opts_t *opts, nx_err_t *err)
{
    nx_engine_t *e = calloc(1, sizeof *e);
    if (!e) {
        nx_err_set(err, NX_ENOMEM, "engine for '%s': out of memory", model_dir);
        return NULL;
    }
    snprintf(e->model_dir, sizeof e->model_dir, "%s", model_dir);
    set_owner(e, model_dir);
    e->pool = pool;
    if (nx_config_load(model_dir, &e->cfg, err) != NX_OK)
        goto fail;
    binder_t b = {weights, model_dir, &e->cfg, e->cfg.gguf ? &gguf_names : &hf_names, err};
    if (bind_weights(&b, &e->w) != NX_OK)
        goto fail;
    e->ops = &nx__cpu_backend;
    if (nx_pool_device(pool) == NX_DEVICE_CUDA && !(e->ops = nx__cuda_backend(err))) {
        nx_err_prefix(err, "engine for '%s': ", model_dir);
        goto fail;
    }
    uint32_t def_ctx = e->cfg.max_position < 4096 ? e->cfg.max_position : 4096;
    e->max_context = opts && opts->max_context ? opts->max_context : def_ctx;
    e->mask_words = (e->cfg.vocab + 31) / 32;
    if (e->ops->init(&e->cfg, &e->w, pool, opts, &e->state, err) != NX_OK)
        goto fail;
    return e;
fail:
    nx_engine_destroy(&e);
    return NULL;
}

void nx_engine_destroy(nx_engine_t **self_p)
{
    nx_engine_t *e = *self_p;
    if (!e)
        return;
    if (e->state)
        e->ops->destroy(e->state);
    free(e->w.layers);
    free(e->tokens);
    free(e->positions);
    free(e->row_seq);
    free(e->bseqs);
    free(e->logit_rows);
    free(e->logit_out);
    free(e->picks);
    free(e->picked);
    free(e->masks);
    free(e);
    *self_p = NULL;
}

const nx_model_config_t *nx_engine_config(const nx_engine_t *self)
{
    return &self->cfg;
}

const char *nx_engine_backend_name(const nx_engine_t *self)
{
    return self->ops->name;
}

/* ------------------------------------------------------------------------------------------
 * Sequences
 */
nx_seq_t *nx_seq_new(nx_engine_t *engine, uint32_t capacity, bool all_logits, nx_err_t *err)
{
    if (capacity == 0)
        capacity = engine->max_context;
    nx_seq_t *seq = calloc(1, sizeof *seq);
    if (!seq || !(seq->queue = malloc((size_t)capacity * sizeof *seq->queue))) {
        free(seq);
        nx_err_set(err, NX_ENOMEM, "sequence of %u tokens: out of memory", capacity);
        return NULL;
    }
    if (engine->ops->kv_alloc(engine->state, capacity, engine->kv_owner, &seq->kv, err) !=
        NX_OK) {
        nx_err_prefix(err, "KV cache of %u tokens for '%s': ", capacity, engine->model_dir);
        free(seq->queue);
        free(seq);
        return NULL;
    }
    seq->engine = engine;
    seq->picked = -1;
    seq->all_logits = all_logits;
    return seq;
}

void nx_seq_destroy(nx_engine_t *engine, nx_seq_t **seq_p)
{
    nx_seq_t *seq = *seq_p;
    if (!seq)
        return;
    engine->ops->kv_free(engine->state, &seq->kv);
    free(seq->queue);
    free(seq->logits);
    free(seq);
    *seq_p = NULL;
}

uint32_t nx_seq_len(const nx_seq_t *seq)
{
    return seq->len;
}

uint32_t nx_seq_capacity(const nx_seq_t *seq)
{
    return seq->kv.capacity;
}

int nx_seq_feed(nx_seq_t *seq, const int32_t *ids, size_t n, nx_err_t *err)
{
    uint32_t vocab = seq->engine->cfg.vocab;
    uint64_t total = (uint64_t)seq->len + seq->queued + n;
    if (total > seq->kv.capacity)
        return nx_err_set(err, NX_EINVAL, "prompt of %llu tokens is longer than the context of %u",
                          (unsigned long long)total, seq->kv.capacity);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab)
            return nx_err_set(err, NX_EINVAL,
                              "token %zu of %zu: id %d is outside the vocabulary of %u", i, n,
                              ids[i], vocab);
    memcpy(seq->queue + seq->queued, ids, n * sizeof *ids);
    seq->queued += (uint32_t)n;
    return NX_OK;
}

void nx_seq_reset(nx_seq_t *seq)
{
    seq->len = 0;
    seq->queued = 0;
    seq->logits_rows = 0;
    seq->picked = -1;
    seq->pick_sampler = NULL;
    seq->pick_history = NULL;
    seq->mask_fn = NULL;
    seq->mask_user = NULL;
}

int nx_seq_pick_next(nx_seq_t *seq, nx_sampler_t *sampler, const int32_t *history,
                     size_t history_len, nx_err_t *err)
{
    if (seq->all_logits)
        return nx_err_set(err, NX_EINVAL, "pick: a sequence that keeps all its logits returns "
                          "them instead");
    seq->pick_sampler = sampler;
    seq->pick_history = history;
    seq->pick_history_len = history_len;
    return NX_OK;
}

void nx__seq_defer_mask(nx_seq_t *seq, nx__mask_fn fn, void *user)
{
    seq->mask_fn = fn;
    seq->mask_user = user;
}

uint32_t nx_seq_queued(const nx_seq_t *seq) { return seq->queued; }

int32_t nx_seq_picked(const nx_seq_t *seq)
{
    return seq->picked;
}

const float *nx_seq_logits(const nx_seq_t *seq, size_t *rows_out)
{
    if (rows_out)
        *rows_out = seq->logits_rows;
    return seq->logits_rows ? seq->logits : NULL;
}

/* ------------------------------------------------------------------------------------------
 * A step
 */
static bool grow(void **buf, size_t elem, uint32_t *cap, uint32_t need)
{
    if (need <= *cap)
        return true;
    void *p = realloc(*buf, (size_t)need * elem);
    if (!p)
        return false;
    *buf = p;
    return true;
}

/* Size the batch arrays for `rows` rows, `count` sequences and `logit_count` logit rows. */
static int reserve_batch(nx_engine_t *e, uint32_t rows, uint32_t count, uint32_t logit_count,
                         nx_err_t *err)
{
    uint32_t rows_cap = e->rows_cap, logit_cap = e->logit_cap;
    if (!grow((void **)&e->tokens, sizeof *e->tokens, &rows_cap, rows) ||
        !grow((void **)&e->positions, sizeof *e->positions, &rows_cap, rows) ||
        !grow((void **)&e->row_seq, sizeof *e->row_seq, &rows_cap, rows) ||
        !grow((void **)&e->bseqs, sizeof *e->bseqs, &e->bseqs_cap, count) ||
        !grow((void **)&e->logit_rows, sizeof *e->logit_rows, &logit_cap, logit_count) ||
        !grow((void **)&e->logit_out, sizeof *e->logit_out, &logit_cap, logit_count) ||
        !grow((void **)&e->picks, sizeof *e->picks, &logit_cap, logit_count) ||
        !grow((void **)&e->picked, sizeof *e->picked, &logit_cap, logit_count))
        return nx_err_set(err, NX_ENOMEM, "step of %u rows: out of memory", rows);
    e->rows_cap = rows > e->rows_cap ? rows : e->rows_cap;
    e->bseqs_cap = count > e->bseqs_cap ? count : e->bseqs_cap;
    e->logit_cap = logit_count > e->logit_cap ? logit_count : e->logit_cap;
    return NX_OK;
}

/* Every sequence belongs to this engine, appears once and has something queued. Counts the
 * rows and logit rows of the step. */
static int check_step(nx_engine_t *e, nx_seq_t *const *seqs, size_t count, uint32_t *rows_out,
                      uint32_t *logits_out, nx_err_t *err)
{
    if (count == 0 || count > UINT32_MAX)
        return nx_err_set(err, NX_EINVAL, "a step needs at least one sequence");
    uint64_t rows = 0, logit_rows = 0;
    e->step_id++;
    for (size_t i = 0; i < count; i++) {
        nx_seq_t *seq = seqs[i];
        if (!seq || seq->engine != e)
            return nx_err_set(err, NX_EINVAL, "step: sequence %zu is not one of this engine's",
                              i);
        if (seq->last_step == e->step_id)
            return nx_err_set(err, NX_EINVAL, "step: sequence %zu is listed twice", i);
        seq->last_step = e->step_id;
        if (seq->queued == 0)
            return nx_err_set(err, NX_EINVAL,
                              "step: sequence %zu has no queued tokens (feed it first)", i);
        rows += seq->queued;
        logit_rows += seq->all_logits ? seq->queued : 1;
    }
    if (rows > UINT32_MAX)
        return nx_err_set(err, NX_EINVAL, "step: %llu rows is too many",
                          (unsigned long long)rows);
    *rows_out = (uint32_t)rows;
    *logits_out = (uint32_t)logit_rows;
    return NX_OK;
}

/* Make room for `rows` logit rows in the sequence. */
static int reserve_logits(nx_engine_t *e, nx_seq_t *seq, size_t rows, nx_err_t *err)
{
    if (rows <= seq->logits_cap_rows)
        return NX_OK;
    float *p = realloc(seq->logits, rows * e->cfg.vocab * sizeof(float));
    if (!p)
        return nx_err_set(err, NX_ENOMEM, "logits of %zu rows: out of memory", rows);
    seq->logits = p;
    seq->logits_cap_rows = rows;
    return NX_OK;
}

/* Room for `count` deferred masks, grown once and kept: no allocation per token. */
static int reserve_masks(nx_engine_t *e, uint32_t count, nx_err_t *err)
{
    size_t need = (size_t)count * e->mask_words;
    if (need <= e->masks_cap)
        return NX_OK;
    uint32_t *p = realloc(e->masks, need * sizeof *p);
    if (!p)
        return nx_err_set(err, NX_ENOMEM, "step: no memory for %u grammar masks", count);
    e->masks = p;
    e->masks_cap = need;
    return NX_OK;
}

/* The batch's before_picks hook: every deferred mask of the step into its slot and its
 * plan, once (a backend may call again; nothing is left to do then). A provider's error
 * fails the step, the sequence named. */
static int fill_masks(void *user, nx_err_t *err)
{
    nx_engine_t *e = user;
    if (!e->masks_pending)
        return NX_OK;
    e->masks_pending = false;
    uint32_t slot = 0;
    for (size_t i = 0; i < e->step_count; i++) {
        nx_seq_t *seq = e->step_seqs[i];
        if (!seq->mask_fn || !seq->pick_sampler)
            continue;
        uint32_t *words = e->masks + (size_t)slot++ * e->mask_words;
        uint32_t allow_bits = 0;
        int rc = seq->mask_fn(seq->mask_user, words, e->mask_words, &allow_bits, err);
        if (rc != NX_OK)
            return nx_err_prefix(err, "step: sequence %zu's mask: ", i);
        seq->pick.allow = allow_bits ? words : NULL;
        seq->pick.allow_bits = allow_bits;
    }
    return NX_OK;
}

/* Lay the sequences' queued tokens out as one flat batch of rows. */
static int build_batch(nx_engine_t *e, nx_seq_t *const *seqs, uint32_t count, nx__batch_t *b,
                       nx_err_t *err)
{
    uint32_t row = 0, logit = 0, deferred = 0;
    for (uint32_t i = 0; i < count; i++)
        deferred += seqs[i]->pick_sampler && seqs[i]->mask_fn;
    int rc = reserve_masks(e, deferred, err);
    if (rc != NX_OK)
        return rc;
    for (uint32_t i = 0; i < count; i++) {
        nx_seq_t *seq = seqs[i];
        uint32_t wanted = seq->all_logits ? seq->queued : 1;
        rc = reserve_logits(e, seq, wanted, err);
        if (rc)
            return rc;
        e->bseqs[i] = (nx__batch_seq_t){&seq->kv, row, seq->queued, seq->len};
        for (uint32_t r = 0; r < seq->queued; r++, row++) {
            e->tokens[row] = seq->queue[r];
            e->positions[row] = seq->len + r;
            e->row_seq[row] = i;
        }
        for (uint32_t k = 0; k < wanted; k++, logit++) {
            e->logit_rows[logit] = row - wanted + k;
            e->logit_out[logit] = seq->logits + (size_t)k * e->cfg.vocab;
            e->picks[logit] = NULL;
            e->picked[logit] = -1;
        }
        seq->picked = -1;
        if (seq->pick_sampler) { /* wanted is 1: all_logits sequences do not pick */
            nx__sampler_plan(seq->pick_sampler, seq->pick_history, seq->pick_history_len,
                             &seq->pick);
            e->picks[logit - 1] = &seq->pick;
            if (seq->mask_fn) /* fill_masks sets it */
                seq->pick.allow = NULL, seq->pick.allow_bits = 0;
        }
    }
    bool device = e->ops->picks_on_device;
    *b = (nx__batch_t){e->tokens, e->positions, e->row_seq, row, e->bseqs, count,
                       e->logit_rows, e->logit_out, logit, device ? e->picks : NULL,
                       device ? e->picked : NULL};
    e->step_seqs = seqs;
    e->step_count = count;
    e->masks_pending = deferred > 0;
    if (deferred) {
        b->before_picks = fill_masks;
        b->before_picks_user = e;
    }
    return NX_OK;
}

/* After the forward pass: the picks the backend did not do, from the logits on the host. */
static void finish_picks(nx_engine_t *e, nx_seq_t *const *seqs, size_t count)
{
    uint32_t logit = 0;
    for (size_t i = 0; i < count; i++) {
        nx_seq_t *seq = seqs[i];
        logit += seq->all_logits ? seq->queued : 1;
        if (!seq->pick_sampler)
            continue;
        seq->picked = e->ops->picks_on_device
                          ? e->picked[logit - 1]
                          : nx__sampler_pick_plan(seq->pick_sampler, &seq->pick, seq->logits);
    }
}

int nx_engine_step(nx_engine_t *self, nx_seq_t *const *seqs, size_t count, nx_err_t *err)
{
    uint32_t rows = 0, logit_rows = 0;
    int rc = check_step(self, seqs, count, &rows, &logit_rows, err);
    if (rc == NX_OK)
        rc = reserve_batch(self, rows, (uint32_t)count, logit_rows, err);
    nx__batch_t batch;
    if (rc == NX_OK)
        rc = build_batch(self, seqs, (uint32_t)count, &batch, err);
    if (rc == NX_OK)
        rc = self->ops->forward(self->state, &batch, err);
    assert(rc != NX_OK || !self->masks_pending); /* the backend called before_picks */
    if (rc == NX_OK)
        finish_picks(self, seqs, count);
    self->masks_pending = false;
    self->step_seqs = NULL;
    for (size_t i = 0; i < count; i++) {
        nx_seq_t *seq = seqs[i];
        seq->pick_sampler = NULL; /* a pick request lasts one step, done or failed */
        seq->pick_history = NULL;
        seq->mask_fn = NULL;
        seq->mask_user = NULL;
        if (rc != NX_OK)
            continue;
        seq->logits_rows = seq->picked >= 0 ? 0 : seq->all_logits ? seq->queued : 1;
        seq->len += seq->queued;
        seq->queued = 0;
    }
    return rc;
}

bool nx__cuda_kv_f32(void)
{
    const char *v = getenv("NEXUS_CUDA_KV");
    return v && strcmp(v, "f32") == 0;
}

uint64_t nx__kv_bytes_elem(const nx_model_config_t *config, uint32_t tokens, uint32_t elem_bytes)
{
    return 2ull * config->layers * config->kv_heads * config->head_dim * tokens * elem_bytes;
}

uint64_t nx_kv_bytes(const nx_model_config_t *config, nx_device_kind_t device, uint32_t tokens)
{
    /* both backends use the same layout; CUDA's elements are BF16 unless told otherwise */
    bool bf16 = device == NX_DEVICE_CUDA && !nx__cuda_kv_f32();
    return nx__kv_bytes_elem(config, tokens, bf16 ? 2 : sizeof(float));
}

uint64_t nx_engine_scratch_bytes(const nx_model_config_t *config, nx_device_kind_t device)
{
    return device == NX_DEVICE_CUDA ? nx__cuda_scratch_bytes(config) : 0;
}
