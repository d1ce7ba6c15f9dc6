/* test_gguf_model.c — a GGUF file as a model: the config read from its keys (values, defaults,
 * the tensors that decide biases, q/k norms, tied heads and Llama 3 scaling) and the tokenizer
 * read from tokenizer.ggml.*, with every refusal naming the file and the key. Each test writes
 * a small GGUF with nx_gguf_save (a qwen3-shaped or llama-shaped header and a few tensors)
 * and reads it back through nx_config_load / nx_tokenizer_load, as nexusd does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nx_engine.h"

#define MAX_KV 48

/* The tokenizer: 256 byte tokens in GPT-2's byte-level spelling, "he", "llo", then two
 * control tokens and one user-defined one; merges "h e" and "l lo"... kept tiny. */
typedef struct gguf_doc {
    nx_gguf_kv_spec_t kv[MAX_KV];
    size_t kv_count;
    const char *tokens[300];
    int32_t types[300];
    uint32_t vocab;
    const char *merges[4];
    char byte_text[256][8];
    float embd[300 * 8];
    float norm[8], freqs[2];
    nx_st_tensor_spec_t tensors[4];
    size_t tensor_count;
} gguf_doc_t;

static char tmp_dir[256];

static int setup_dir(void **state)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/nx_test_gguf_model_XXXXXX");
    assert_non_null(mkdtemp(tmp_dir));
    return 0;
}

static int remove_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* GPT-2's byte-to-unicode spelling of byte b, as UTF-8. */
static void byte_symbol(unsigned b, char *out)
{
    unsigned cp = b;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (!printable) {
        unsigned n = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

static nx_gguf_kv_spec_t *kv(gguf_doc_t *d, const char *key, nx_gguf_type_t type)
{
    assert_true(d->kv_count < MAX_KV);
    nx_gguf_kv_spec_t *k = &d->kv[d->kv_count++];
    *k = (nx_gguf_kv_spec_t){.key = key, .type = type, .elem_type = type};
    return k;
}

static void kv_u32(gguf_doc_t *d, const char *key, uint64_t v) { kv(d, key, NX_GGUF_U32)->value.u = v; }
static void kv_f32(gguf_doc_t *d, const char *key, double v) { kv(d, key, NX_GGUF_F32)->value.f = v; }
static void kv_str(gguf_doc_t *d, const char *key, const char *v)
{
    kv(d, key, NX_GGUF_STRING)->value.str = v;
}

static void kv_arr(gguf_doc_t *d, const char *key, nx_gguf_type_t elem, uint64_t n,
                   const void *data)
{
    nx_gguf_kv_spec_t *k = kv(d, key, NX_GGUF_ARRAY);
    k->elem_type = elem, k->count = n, k->array = data;
}

/* Remove a key (by name) from the document. */
static void drop(gguf_doc_t *d, const char *key)
{
    for (size_t i = 0; i < d->kv_count; i++)
        if (strcmp(d->kv[i].key, key) == 0) {
            memmove(&d->kv[i], &d->kv[i + 1], (d->kv_count - i - 1) * sizeof d->kv[0]);
            d->kv_count--;
            return;
        }
    fail_msg("no key %s to drop", key);
}

static nx_gguf_kv_spec_t *find(gguf_doc_t *d, const char *key)
{
    for (size_t i = 0; i < d->kv_count; i++)
        if (strcmp(d->kv[i].key, key) == 0)
            return &d->kv[i];
    fail_msg("no key %s", key);
    return NULL;
}

static void add_tensor(gguf_doc_t *d, const char *name, uint64_t rows, uint64_t cols,
                       const float *data)
{
    nx_st_tensor_spec_t *t = &d->tensors[d->tensor_count++];
    *t = (nx_st_tensor_spec_t){.name = name, .dtype = NX_DT_F32, .data = data};
    if (cols)
        t->ndim = 2, t->shape[0] = rows, t->shape[1] = cols;
    else
        t->ndim = 1, t->shape[0] = rows;
}

/* A qwen3-shaped document: hidden 8, 2 heads of 8 (key_length != hidden / heads), 1 KV head. */
static void qwen3_doc(gguf_doc_t *d)
{
    memset(d, 0, sizeof *d);
    kv_str(d, "general.architecture", "qwen3");
    kv_u32(d, "qwen3.context_length", 512);
    kv_u32(d, "qwen3.embedding_length", 8);
    kv_u32(d, "qwen3.block_count", 1);
    kv_u32(d, "qwen3.feed_forward_length", 16);
    kv_u32(d, "qwen3.attention.head_count", 2);
    kv_u32(d, "qwen3.attention.head_count_kv", 1);
    kv_u32(d, "qwen3.attention.key_length", 8);
    kv_f32(d, "qwen3.rope.freq_base", 1000000.0);
    kv_f32(d, "qwen3.attention.layer_norm_rms_epsilon", 1e-6);
    d->vocab = 0;
    for (unsigned b = 0; b < 256; b++) {
        byte_symbol(b, d->byte_text[b]);
        d->tokens[d->vocab] = d->byte_text[b], d->types[d->vocab++] = 1;
    }
    d->tokens[d->vocab] = "he", d->types[d->vocab++] = 1;        /* 256 */
    d->tokens[d->vocab] = "llo", d->types[d->vocab++] = 1;       /* 257 */
    d->tokens[d->vocab] = "ll", d->types[d->vocab++] = 1;        /* 258 */
    d->tokens[d->vocab] = "<|end|>", d->types[d->vocab++] = 3;   /* 259 CONTROL */
    d->tokens[d->vocab] = "<think>", d->types[d->vocab++] = 4;   /* 260 USER_DEFINED */
    d->tokens[d->vocab] = "[PAD261]", d->types[d->vocab++] = 5;  /* 261 UNUSED */
    d->merges[0] = "h e", d->merges[1] = "l l", d->merges[2] = "ll o";
    kv_str(d, "tokenizer.ggml.model", "gpt2");
    kv_str(d, "tokenizer.ggml.pre", "qwen2");
    kv_arr(d, "tokenizer.ggml.tokens", NX_GGUF_STRING, d->vocab, d->tokens);
    kv_arr(d, "tokenizer.ggml.token_type", NX_GGUF_I32, d->vocab, d->types);
    kv_arr(d, "tokenizer.ggml.merges", NX_GGUF_STRING, 3, d->merges);
    kv_u32(d, "tokenizer.ggml.eos_token_id", 259);
    kv_str(d, "tokenizer.chat_template", "{% for m in messages %}<|im_start|>{% endfor %}");
    add_tensor(d, "token_embd.weight", d->vocab, 8, d->embd);
    add_tensor(d, "output_norm.weight", 8, 0, d->norm);
}

static char *write_doc(gguf_doc_t *d, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", tmp_dir, name);
    nx_err_t err = {0};
    int rc = nx_gguf_save(path, d->kv, d->kv_count, d->tensors, d->tensor_count, NULL, &err);
    if (rc != NX_OK)
        fail_msg("nx_gguf_save: %s", err.msg);
    return path;
}

/* nx_config_load fails with code, and the message holds every one of the NULL-ended words. */
static void expect_config_error(gguf_doc_t *d, const char *name, int code, ...)
{
    const char *path = write_doc(d, name);
    nx_model_config_t c;
    nx_err_t err = {0};
    int rc = nx_config_load(path, &c, &err);
    if (rc != code)
        fail_msg("%s: expected code %d, got %d (%s)", name, code, rc, err.msg);
    assert_non_null(strstr(err.msg, name)); /* the file */
    va_list ap;
    va_start(ap, code);
    for (const char *w; (w = va_arg(ap, const char *));)
        if (!strstr(err.msg, w))
            fail_msg("%s: message '%s' does not say '%s'", name, err.msg, w);
    va_end(ap);
}

static void expect_tokenizer_error(gguf_doc_t *d, const char *name, int code, const char *word)
{
    const char *path = write_doc(d, name);
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(path, &err);
    if (tok || err.code != code)
        fail_msg("%s: expected code %d, got %s (%s)", name, code, tok ? "a tokenizer" : "error",
                 err.msg);
    if (!strstr(err.msg, word))
        fail_msg("%s: message '%s' does not say '%s'", name, err.msg, word);
}

/* ------------------------------------------------------------------------------------------ */

static void test_config_values(void **state)
{
    gguf_doc_t *d = calloc(1, sizeof *d);
    qwen3_doc(d);
    const char *path = write_doc(d, "good");
    assert_true(nx_path_is_gguf(path));
    assert_false(nx_path_is_gguf(tmp_dir));
    nx_model_config_t c;
    nx_err_t err = {0};
    assert_int_equal(nx_config_load(path, &c, &err), NX_OK);
    assert_true(c.gguf);
    assert_int_equal(c.arch, NX_ARCH_QWEN3);
    assert_string_equal(c.model_type, "qwen3");
    assert_int_equal(c.hidden, 8);
    assert_int_equal(c.intermediate, 16);
    assert_int_equal(c.layers, 1);
    assert_int_equal(c.heads, 2);
    assert_int_equal(c.kv_heads, 1);
    assert_int_equal(c.head_dim, 8); /* key_length, not hidden / heads */
    assert_int_equal(c.vocab, d->vocab); /* token_embd's rows: no vocab_size key */
    assert_int_equal(c.max_position, 512);
    assert_true(fabs(c.rope_theta - 1e6) < 1e-3);
    assert_true(fabsf(c.rms_eps - 1e-6f) < 1e-12f);
    assert_true(c.qk_norm == false);      /* no blk.0.attn_q_norm.weight in this file */
    assert_true(c.tie_embeddings);        /* no output.weight */
    assert_false(c.rope_adjacent);        /* qwen3: rotate-half, no permutation */
    assert_int_equal(c.rope_freq_count, 0);
    assert_int_equal(c.eos_count, 1);
    assert_int_equal(c.eos_ids[0], 259);
    assert_int_equal(c.bos_id, -1);
    free(d);
}

static void test_config_llama_rope_freqs(void **state)
{
    gguf_doc_t *d = calloc(1, sizeof *d);
    qwen3_doc(d);
    find(d, "general.architecture")->value.str = "llama";
    /* rename the qwen3.* keys */
    static const char *const llama_keys[] = {
        "general.architecture", "llama.context_length", "llama.embedding_length",
        "llama.block_count", "llama.feed_forward_length", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.attention.key_length", "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon"};
    for (size_t i = 1; i < sizeof llama_keys / sizeof *llama_keys; i++)
        d->kv[i].key = llama_keys[i];
    find(d, "llama.attention.key_length")->value.u = 4; /* head_dim 4: rope_freqs has 2 */
    d->freqs[0] = 1.0f, d->freqs[1] = 8.0f;
    add_tensor(d, "rope_freqs.weight", 2, 0, d->freqs);
    const char *path = write_doc(d, "llama");
    nx_model_config_t c;
    nx_err_t err = {0};
    assert_int_equal(nx_config_load(path, &c, &err), NX_OK);
    assert_int_equal(c.arch, NX_ARCH_LLAMA);
    assert_true(c.rope_adjacent); /* the converter permuted q/k for adjacent pairs */
    assert_int_equal(c.rope_freq_count, 2);
    assert_true(c.rope_freq_factors[1] == 8.0f);
    /* a factor tensor of the wrong length is refused by name */
    d->tensors[d->tensor_count - 1].shape[0] = 1;
    expect_config_error(d, "llama_freqs", NX_EFORMAT, "rope_freqs.weight", NULL);
    /* a zero factor too */
    d->tensors[d->tensor_count - 1].shape[0] = 2;
    d->freqs[1] = 0.0f;
    expect_config_error(d, "llama_zero", NX_EFORMAT, "rope_freqs.weight[1]", NULL);
    free(d);
}

static void test_config_refusals(void **state)
{
    gguf_doc_t *d = calloc(1, sizeof *d);
    qwen3_doc(d);
    drop(d, "general.architecture");
    expect_config_error(d, "no_arch", NX_EFORMAT, "general.architecture", NULL);

    qwen3_doc(d);
    find(d, "general.architecture")->value.str = "gemma3";
    expect_config_error(d, "gemma", NX_ENOTSUP, "gemma3", "llama, qwen2, qwen3", NULL);

    qwen3_doc(d);
    drop(d, "qwen3.embedding_length");
    expect_config_error(d, "no_hidden", NX_EFORMAT, "qwen3.embedding_length", "missing", NULL);

    qwen3_doc(d);
    find(d, "qwen3.block_count")->value.u = 0;
    expect_config_error(d, "zero_layers", NX_EFORMAT, "qwen3.block_count", "positive", NULL);

    qwen3_doc(d);
    find(d, "qwen3.attention.layer_norm_rms_epsilon")->type = NX_GGUF_STRING;
    find(d, "qwen3.attention.layer_norm_rms_epsilon")->value.str = "tiny";
    expect_config_error(d, "eps_string", NX_EFORMAT, "layer_norm_rms_epsilon", NULL);

    qwen3_doc(d);
    static const uint32_t per_layer[1] = {2};
    nx_gguf_kv_spec_t *heads = find(d, "qwen3.attention.head_count");
    heads->type = NX_GGUF_ARRAY, heads->elem_type = NX_GGUF_U32, heads->count = 1;
    heads->array = per_layer;
    expect_config_error(d, "per_layer", NX_ENOTSUP, "qwen3.attention.head_count", "per-layer",
                        NULL);

    qwen3_doc(d);
    kv_u32(d, "qwen3.attention.value_length", 4);
    expect_config_error(d, "value_len", NX_ENOTSUP, "value_length", NULL);

    qwen3_doc(d);
    kv_str(d, "qwen3.rope.scaling.type", "yarn");
    expect_config_error(d, "yarn", NX_ENOTSUP, "yarn", NULL);

    qwen3_doc(d);
    find(d, "qwen3.attention.head_count_kv")->value.u = 3;
    expect_config_error(d, "gqa", NX_EFORMAT, "head_count_kv", NULL);

    qwen3_doc(d);
    d->tensor_count = 1;
    d->tensors[0].name = "output_norm.weight", d->tensors[0].ndim = 1;
    d->tensors[0].shape[0] = 8;
    expect_config_error(d, "no_embd", NX_EFORMAT, "token_embd.weight", NULL);
    free(d);
}

static void test_tokenizer(void **state)
{
    gguf_doc_t *d = calloc(1, sizeof *d);
    qwen3_doc(d);
    const char *path = write_doc(d, "tok");
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(path, &err);
    if (!tok)
        fail_msg("%s", err.msg);
    int32_t *ids = NULL;
    size_t n = 0;
    const char text[] = "hello<|end|><think>";
    assert_int_equal(nx_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err), NX_OK);
    /* he + llo by the merges (ranks: "h e", "l l", "ll o"), then the control token and the
     * user-defined token split out whole */
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 256);
    assert_int_equal(ids[1], 257);
    assert_int_equal(ids[2], 259);
    assert_int_equal(ids[3], 260);
    assert_true(nx_tokenizer_is_special(tok, 259));
    assert_false(nx_tokenizer_is_special(tok, 260));
    assert_int_equal(nx_tokenizer_token_id(tok, "[PAD261]"), -1); /* padding is no token */
    assert_string_equal(nx_tokenizer_eos_token(tok), "<|end|>");
    assert_null(nx_tokenizer_bos_token(tok));
    assert_non_null(strstr(nx_tokenizer_chat_template(tok), "<|im_start|>"));
    char *back = NULL;
    assert_int_equal(nx_tokenizer_decode(tok, ids, n, false, &back, &err), NX_OK);
    assert_string_equal(back, text);
    free(back);
    free(ids);
    nx_tokenizer_destroy(&tok);
    free(d);
}

static void test_tokenizer_refusals(void **state)
{
    gguf_doc_t *d = calloc(1, sizeof *d);
    qwen3_doc(d);
    find(d, "tokenizer.ggml.model")->value.str = "llama";
    expect_tokenizer_error(d, "spm", NX_ENOTSUP, "'llama'");

    qwen3_doc(d);
    find(d, "tokenizer.ggml.pre")->value.str = "deepseek-coder";
    expect_tokenizer_error(d, "pre", NX_ENOTSUP, "deepseek-coder");

    qwen3_doc(d);
    drop(d, "tokenizer.ggml.tokens");
    expect_tokenizer_error(d, "no_tokens", NX_EFORMAT, "tokenizer.ggml.tokens");

    qwen3_doc(d);
    find(d, "tokenizer.ggml.token_type")->count = 10;
    expect_tokenizer_error(d, "types", NX_EFORMAT, "token_type");

    qwen3_doc(d);
    d->types[5] = 9;
    expect_tokenizer_error(d, "bad_type", NX_EFORMAT, "token_type[5]");

    qwen3_doc(d);
    find(d, "tokenizer.ggml.eos_token_id")->value.u = 100000;
    expect_tokenizer_error(d, "eos", NX_EFORMAT, "eos_token_id");

    qwen3_doc(d);
    d->merges[2] = "ll zz"; /* a merge whose result is no token */
    expect_tokenizer_error(d, "merge", NX_EFORMAT, "merges");
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_values),
        cmocka_unit_test(test_config_llama_rope_freqs),
        cmocka_unit_test(test_config_refusals),
        cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_tokenizer_refusals),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
