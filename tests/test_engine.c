/* test_engine.c — the engine's contract on real files: config.json fields and errors, weight
 * checks (missing tensor, wrong shape, wrong dtype, untied without lm_head), sequence limits
 * (context, vocabulary, empty steps), KV caches that do not fit the pool, reset. Each test
 * writes a tiny Llama-shaped model (hidden 8, 1 layer) with nx_st_save into a temp directory
 * and loads it with the loader into a CPU pool, as nexusctl does. */
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

#define HIDDEN 8
#define INTER 16
#define HEADS 2
#define KV_HEADS 1
#define HEAD_DIM 4
#define VOCAB 32

static const char *const good_config =
    "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16,"
    " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    " \"head_dim\": 4, \"vocab_size\": 32, \"max_position_embeddings\": 64,"
    " \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false,"
    " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16},"
    " \"bos_token_id\": 1, \"eos_token_id\": [2, 3], \"hidden_act\": \"silu\"}";

typedef struct fixture {
    char dir[256];
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
    nx_err_t err;
} fixture_t;

static float values[VOCAB * HIDDEN];

typedef struct tensor_edit {
    const char *skip;      /* leave this tensor out */
    const char *reshape;   /* give this tensor one row more */
    const char *retype;    /* store this tensor as I32 */
} tensor_edit_t;

static void add(nx_st_tensor_spec_t *specs, size_t *n, const tensor_edit_t *e, const char *name,
                uint64_t rows, uint64_t cols)
{
    static char names[32][80];
    if (e->skip && strcmp(e->skip, name) == 0)
        return;
    snprintf(names[*n], sizeof names[*n], "%s", name);
    nx_st_tensor_spec_t *s = &specs[(*n)++];
    *s = (nx_st_tensor_spec_t){.name = names[*n - 1], .dtype = NX_DT_F32, .ndim = cols ? 2 : 1,
                               .data = values};
    s->shape[0] = rows + (e->reshape && strcmp(e->reshape, name) == 0);
    s->shape[1] = cols;
    if (e->retype && strcmp(e->retype, name) == 0)
        s->dtype = NX_DT_I32;
}

static void write_model(const char *dir, const char *config, const tensor_edit_t *e)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(config, f);
    fclose(f);
    nx_st_tensor_spec_t specs[32];
    size_t n = 0;
    const char *p = "model.layers.0.";
    char name[80];
#define LAYER(suffix, rows, cols) \
    (snprintf(name, sizeof name, "%s%s", p, suffix), add(specs, &n, e, name, rows, cols))
    add(specs, &n, e, "model.embed_tokens.weight", VOCAB, HIDDEN);
    LAYER("input_layernorm.weight", HIDDEN, 0);
    LAYER("self_attn.q_proj.weight", HEADS * HEAD_DIM, HIDDEN);
    LAYER("self_attn.k_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN);
    LAYER("self_attn.v_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN);
    LAYER("self_attn.o_proj.weight", HIDDEN, HEADS * HEAD_DIM);
    LAYER("post_attention_layernorm.weight", HIDDEN, 0);
    LAYER("mlp.gate_proj.weight", INTER, HIDDEN);
    LAYER("mlp.up_proj.weight", INTER, HIDDEN);
    LAYER("mlp.down_proj.weight", HIDDEN, INTER);
    add(specs, &n, e, "model.norm.weight", HIDDEN, 0);
    add(specs, &n, e, "lm_head.weight", VOCAB, HIDDEN);
#undef LAYER
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    nx_err_t err = {0};
    assert_int_equal(nx_st_save(path, specs, n, NULL, &err), NX_OK);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/nx-engine-test-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    for (size_t i = 0; i < VOCAB * HIDDEN; i++)
        values[i] = 0.3f * sinf((float)i * 0.7f);
    nx_pool_opts_t popts = {.device = NX_DEVICE_CPU, .bytes = 16ull << 20};
    fx->pool = nx_pool_new(&popts, &fx->err);
    fx->loader = fx->pool ? nx_loader_new(fx->pool, NULL, &fx->err) : NULL;
    *state = fx;
    return fx->loader ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    nx_engine_destroy(&fx->engine);
    if (fx->model)
        nx_loader_unload(fx->loader, &fx->model, false);
    nx_loader_destroy(&fx->loader);
    nx_pool_destroy(&fx->pool);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", fx->dir);
    free(fx);
    return 0;
}

/* Write the model, load it, and try to make an engine: returns nx_engine_new's code. */
static int open_engine(fixture_t *fx, const char *config, const tensor_edit_t *edit)
{
    tensor_edit_t none = {0};
    write_model(fx->dir, config, edit ? edit : &none);
    fx->model = nx_loader_load(fx->loader, fx->dir, NULL, NULL, &fx->err);
    assert_non_null(fx->model);
    fx->engine = nx_engine_new(fx->dir, fx->model, fx->pool, NULL, &fx->err);
    return fx->engine ? NX_OK : fx->err.code;
}

static void assert_msg_has(const nx_err_t *err, const char *text)
{
    if (!strstr(err->msg, text))
        fail_msg("message '%s' does not name '%s'", err->msg, text);
}

static void test_config_and_engine(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(open_engine(fx, good_config, NULL), NX_OK);
    const nx_model_config_t *c = nx_engine_config(fx->engine);
    assert_int_equal(c->arch, NX_ARCH_LLAMA);
    assert_int_equal(c->head_dim, HEAD_DIM);
    assert_int_equal(c->kv_heads, KV_HEADS);
    assert_true(c->rope_llama3);
    assert_true(c->rope_factor == 8.0 && c->rope_original_max == 16);
    assert_int_equal(c->eos_count, 2);
    assert_int_equal(c->eos_ids[1], 3);
    assert_int_equal(c->bos_id, 1);
    assert_false(c->tie_embeddings);
    assert_string_equal(nx_engine_backend_name(fx->engine), "cpu");
}

static void test_missing_tensor(void **state)
{
    fixture_t *fx = *state;
    tensor_edit_t e = {.skip = "model.layers.0.mlp.up_proj.weight"};
    assert_int_equal(open_engine(fx, good_config, &e), NX_ENOTFOUND);
    assert_msg_has(&fx->err, "model.layers.0.mlp.up_proj.weight");
}

static void test_untied_without_lm_head(void **state)
{
    fixture_t *fx = *state;
    tensor_edit_t e = {.skip = "lm_head.weight"};
    assert_int_equal(open_engine(fx, good_config, &e), NX_ENOTFOUND);
    assert_msg_has(&fx->err, "lm_head.weight");
}

static void test_wrong_shape(void **state)
{
    fixture_t *fx = *state;
    tensor_edit_t e = {.reshape = "model.layers.0.self_attn.k_proj.weight"};
    assert_int_equal(open_engine(fx, good_config, &e), NX_EFORMAT);
    assert_msg_has(&fx->err, "model.layers.0.self_attn.k_proj.weight");
    assert_msg_has(&fx->err, "expected [4, 8]");
}

static void test_wrong_dtype(void **state)
{
    fixture_t *fx = *state;
    tensor_edit_t e = {.retype = "model.norm.weight"};
    assert_int_equal(open_engine(fx, good_config, &e), NX_EFORMAT);
    assert_msg_has(&fx->err, "model.norm.weight");
    assert_msg_has(&fx->err, "I32");
}

/* config text with `from` replaced by `to` */
static char *edited_config(const char *from, const char *to)
{
    static char buf[2048];
    const char *at = strstr(good_config, from);
    assert_non_null(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - good_config), good_config, to,
             at + strlen(from));
    return buf;
}

static void test_unknown_model_type(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(open_engine(fx, edited_config("\"llama\"", "\"gpt2\""), NULL), NX_ENOTSUP);
    assert_msg_has(&fx->err, "gpt2");
}

static void test_missing_and_ill_typed_fields(void **state)
{
    fixture_t *fx = *state;
    nx_model_config_t c;
    write_model(fx->dir, edited_config("\"hidden_size\": 8,", ""), &(tensor_edit_t){0});
    assert_int_equal(nx_config_load(fx->dir, &c, &fx->err), NX_EFORMAT);
    assert_msg_has(&fx->err, "hidden_size");
    write_model(fx->dir, edited_config("\"num_attention_heads\": 2", "\"num_attention_heads\": \"two\""),
                &(tensor_edit_t){0});
    assert_int_equal(nx_config_load(fx->dir, &c, &fx->err), NX_EFORMAT);
    assert_msg_has(&fx->err, "num_attention_heads");
    write_model(fx->dir, edited_config("\"factor\": 8.0,", ""), &(tensor_edit_t){0});
    assert_int_equal(nx_config_load(fx->dir, &c, &fx->err), NX_EFORMAT);
    assert_msg_has(&fx->err, "rope_scaling.factor");
    write_model(fx->dir, edited_config("[2, 3]", "\"</s>\""), &(tensor_edit_t){0});
    assert_int_equal(nx_config_load(fx->dir, &c, &fx->err), NX_EFORMAT);
    assert_msg_has(&fx->err, "eos_token_id");
    /* defaults where Hugging Face has them: no head_dim, no num_key_value_heads, one eos id */
    write_model(fx->dir,
                edited_config("\"num_key_value_heads\": 1, \"head_dim\": 4,", ""),
                &(tensor_edit_t){0});
    assert_int_equal(nx_config_load(fx->dir, &c, &fx->err), NX_OK);
    assert_int_equal(c.kv_heads, HEADS);
    assert_int_equal(c.head_dim, HIDDEN / HEADS);
    write_model(fx->dir, edited_config("[2, 3]", "7"), &(tensor_edit_t){0});
    assert_int_equal(nx_config_load(fx->dir, &c, &fx->err), NX_OK);
    assert_int_equal(c.eos_count, 1);
    assert_int_equal(c.eos_ids[0], 7);
}

static void test_feed_limits(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(open_engine(fx, good_config, NULL), NX_OK);
    nx_seq_t *seq = nx_seq_new(fx->engine, 4, false, &fx->err);
    assert_non_null(seq);
    assert_int_equal(nx_seq_capacity(seq), 4);
    int32_t ids[5] = {1, 2, 3, 4, 5};
    assert_int_equal(nx_seq_feed(seq, ids, 5, &fx->err), NX_EINVAL);
    assert_msg_has(&fx->err, "prompt of 5 tokens is longer than the context of 4");
    int32_t bad[2] = {1, VOCAB};
    assert_int_equal(nx_seq_feed(seq, bad, 2, &fx->err), NX_EINVAL);
    assert_msg_has(&fx->err, "outside the vocabulary");
    int32_t negative = -1;
    assert_int_equal(nx_seq_feed(seq, &negative, 1, &fx->err), NX_EINVAL);
    /* nothing was queued by the failures: a step over it is an empty sequence */
    assert_int_equal(nx_engine_step(fx->engine, &seq, 1, &fx->err), NX_EINVAL);
    assert_msg_has(&fx->err, "no queued tokens");
    assert_int_equal(nx_engine_step(fx->engine, NULL, 0, &fx->err), NX_EINVAL);
    /* the context fills up across steps too */
    assert_int_equal(nx_seq_feed(seq, ids, 3, &fx->err), NX_OK);
    assert_int_equal(nx_engine_step(fx->engine, &seq, 1, &fx->err), NX_OK);
    assert_int_equal(nx_seq_len(seq), 3);
    assert_int_equal(nx_seq_feed(seq, ids, 2, &fx->err), NX_EINVAL);
    assert_msg_has(&fx->err, "context of 4");
    nx_seq_t *twice[2] = {seq, seq};
    assert_int_equal(nx_seq_feed(seq, ids, 1, &fx->err), NX_OK);
    assert_int_equal(nx_engine_step(fx->engine, twice, 2, &fx->err), NX_EINVAL);
    nx_seq_destroy(fx->engine, &seq);
    assert_null(seq);
}

static void test_kv_does_not_fit(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(open_engine(fx, good_config, NULL), NX_OK);
    nx_seq_t *seq = nx_seq_new(fx->engine, 1u << 20, false, &fx->err); /* 32 MiB of KV */
    assert_null(seq);
    assert_int_equal(fx->err.code, NX_EPOOLFULL);
    nx_pool_stats_t st;
    nx_pool_stats(fx->pool, &st);
    assert_int_equal(st.region_count, 1); /* only the model: nothing leaked */
    seq = nx_seq_new(fx->engine, 0, false, &fx->err); /* default: max_position (64) */
    assert_non_null(seq);
    assert_int_equal(nx_seq_capacity(seq), 64);
    nx_pool_region_info_t info[4];
    assert_int_equal(nx_pool_regions(fx->pool, info, 4), 2);
    assert_true(strncmp(info[0].owner, "kv:", 3) == 0 || strncmp(info[1].owner, "kv:", 3) == 0);
    nx_seq_destroy(fx->engine, &seq);
}

/* KV sizes for planning: K and V of every layer and KV head per token, fp32 on the CPU, BF16
 * on CUDA unless NEXUS_CUDA_KV=f32 (pure arithmetic: no GPU needed). */
static void test_kv_bytes(void **state)
{
    nx_model_config_t c = {.layers = 3, .kv_heads = 2, .head_dim = 16};
    uint64_t elems = 2ull * 3 * 2 * 16 * 100;
    assert_int_equal(nx_kv_bytes(&c, NX_DEVICE_CPU, 100), elems * 4);
    unsetenv("NEXUS_CUDA_KV");
    assert_int_equal(nx_kv_bytes(&c, NX_DEVICE_CUDA, 100), elems * 2);
    setenv("NEXUS_CUDA_KV", "f32", 1);
    assert_int_equal(nx_kv_bytes(&c, NX_DEVICE_CUDA, 100), elems * 4);
    assert_int_equal(nx_kv_bytes(&c, NX_DEVICE_CPU, 100), elems * 4);
    unsetenv("NEXUS_CUDA_KV");
}

static void test_reset_and_all_logits(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(open_engine(fx, good_config, NULL), NX_OK);
    nx_seq_t *seq = nx_seq_new(fx->engine, 16, true, &fx->err);
    assert_non_null(seq);
    int32_t ids[3] = {4, 9, 30};
    size_t rows = 99;
    assert_null(nx_seq_logits(seq, &rows));
    assert_int_equal(rows, 0);
    assert_int_equal(nx_seq_feed(seq, ids, 3, &fx->err), NX_OK);
    assert_int_equal(nx_engine_step(fx->engine, &seq, 1, &fx->err), NX_OK);
    const float *logits = nx_seq_logits(seq, &rows);
    assert_int_equal(rows, 3);
    float first[3 * VOCAB];
    memcpy(first, logits, sizeof first);
    assert_true(memcmp(first, first + VOCAB, VOCAB * sizeof(float)) != 0);
    nx_seq_reset(seq);
    assert_int_equal(nx_seq_len(seq), 0);
    assert_int_equal(nx_seq_feed(seq, ids, 3, &fx->err), NX_OK);
    assert_int_equal(nx_engine_step(fx->engine, &seq, 1, &fx->err), NX_OK);
    logits = nx_seq_logits(seq, &rows);
    assert_int_equal(rows, 3);
    assert_memory_equal(logits, first, sizeof first);
    nx_seq_destroy(fx->engine, &seq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_and_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_tensor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untied_without_lm_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_model_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_ill_typed_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feed_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_does_not_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_and_all_logits, setup, teardown),
        cmocka_unit_test(test_kv_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
