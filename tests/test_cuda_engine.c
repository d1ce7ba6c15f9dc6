/* test_cuda_engine.c — the CUDA engine backend against the CPU backend, on tiny synthesized
 * models of each architecture (Qwen3: q/k norms; Qwen2.5: q/k/v biases; Llama 3: llama3 RoPE,
 * untied head) in BF16, F16 and F32: the logits of a prompt (the cuBLAS prefill path), of
 * greedy decode steps (the GEMV path, replayed through CUDA graphs), of a batch of sequences
 * at different positions, and of a prompt longer than one pass. Each comparison runs with the
 * fast kernels and with NEXUS_CUDA_KERNELS=simple.
 *
 * Quantized GGUF files (nx_synth_gguf: Q8_0, Q4_0 and Q4_K_M mixes; the small preset puts Q4_K
 * and Q6_K everywhere, the tiny one makes llama-quantize's Q5_0/Q8_0 fallbacks), compared two
 * ways:
 *  (a) against the same weights dequantized to F32 (the test writes that GGUF itself with
 *      nx__dequantize_row and nx_gguf_save, metadata copied), run by CUDA (the fast kernels:
 *      the F32 GEMV and fp32 cuBLAS) or by the CPU (against the simple kernels): the quantized
 *      GEMV keeps fp32 activations, so prompts it runs (up to 16 rows: 8-row GEMVs, two
 *      slices) agree to 1e-4 of the largest logit with fp32 KV caches (measured under the CPU
 *      emulation: at most 1e-6; the weights are the same floats, only the summation order
 *      differs). Prompts above 16
 *      rows go through BF16 weights (dequantized for cuBLAS) and BF16 activations: 3e-2, as
 *      the dense cuBLAS cases;
 *  (b) against the CPU backend on the same quantized file: the CPU quantizes the activations
 *      to 8 bits per block (cpu_quant.h) before its integer dot products, the GPU does not, so
 *      every matmul differs by that rounding (see Q_VS_CPU_TOL).
 *
 * Without a GPU (or built without CUDA) every GPU test is skipped with the reason; only the
 * check that a CUDA pool fails cleanly runs. compute-sanitizer runs this program in the GPU
 * suite. `make emu-test` runs every test here on the CPU emulation of tests/cuemu (index
 * arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 * Tolerances: the fast path rounds activations to BF16/F16 for cuBLAS in prefill and keeps
 * BF16 KV caches, so logits agree to about 1e-2 of their largest magnitude; the simple kernels
 * and the decode GEMV keep fp32 activations like the CPU, and with NEXUS_CUDA_KV=f32 agree to
 * about 1e-3. A greedy token may differ only where the CPU's top two logits
 * are closer than the tolerance (then the decode comparison stops there, and says so).
 */
#include <fcntl.h>
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

#include "gpu_tests.h"

#include "cuda_kernels.h"
#include "nx_engine.h"
#include "quant.h"
#include "quantize.h"
#include "synth.h"

typedef struct side {
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
} side_t;

/* What the CUDA engine is compared with (the reference side). */
typedef enum ref_kind {
    REF_CPU,      /* the CPU backend on the same model */
    REF_CUDA_F32, /* the CUDA backend (same settings) on the GGUF's weights dequantized to F32 */
    REF_CPU_F32,  /* the CPU backend on them */
} ref_kind_t;

typedef struct params {
    nx_synth_arch_t arch;
    nx_dtype_t dtype;   /* safetensors models; unused for GGUF ones */
    bool simple;       /* NEXUS_CUDA_KERNELS=simple */
    bool graphs_off;   /* NEXUS_CUDA_GRAPHS=0 */
    double tol;        /* max |cuda - ref| / max |ref| over a row */
    uint32_t seqs;     /* test_batch's sequences (0: 2) */
    bool norm_unfused; /* NEXUS_CUDA_FUSE_NORM=0: RMSNorm as its own kernel before the GEMVs */
    bool kv_f32;       /* NEXUS_CUDA_KV=f32: fp32 KV caches like the CPU's (else BF16) */
    bool profile;      /* NEXUS_CUDA_PROFILE=1: an event after every launch, graphs off */
    /* quantized GGUF models */
    bool gguf;         /* a GGUF file by nx_synth_gguf with `mix` (else a safetensors dir) */
    nx_qmix_t mix;
    nx_synth_preset_t preset; /* NX_SYNTH_TINY (0) unless said */
    ref_kind_t against; /* what the CUDA side is compared with */
    uint32_t prompt;   /* test_generation's prompt length; 0: 37 */
    uint32_t dequant_rows; /* NEXUS_CUDA_DEQUANT_ROWS: dequantize in chunks of this many rows */
    char dir[256];
    char model[300];   /* what the CUDA side runs: dir, or the .gguf in it */
    char ref_model[300]; /* what the reference runs: model, or the F32 copy */
    double max_err;    /* the largest relative difference seen (printed at the end) */
    side_t ref, cuda;
} params_t;

/* ------------------------------------------------------------------------------------------
 * Set-up
 */
static void side_close(side_t *s)
{
    nx_engine_destroy(&s->engine);
    if (s->model)
        nx_loader_unload(s->loader, &s->model, false);
    nx_loader_destroy(&s->loader);
    nx_pool_destroy(&s->pool);
}

static void side_open(side_t *s, nx_device_kind_t device, const char *dir)
{
    nx_err_t err = {0};
    /* CUDA's pool hands out 32 MiB chunks, so each KV cache takes one: test_batch's 20
     * sequences need 640 MiB there */
    nx_pool_opts_t popts = {.device = device,
                            .bytes = (device == NX_DEVICE_CUDA ? 1024ull : 512ull) << 20};
    nx_engine_opts_t eopts = {.threads = 2, .max_context = 512};
    s->pool = nx_pool_new(&popts, &err);
    if (!s->pool)
        fail_msg("%s pool: %s", nx_device_name(device), err.msg);
    s->loader = nx_loader_new(s->pool, NULL, &err);
    if (!s->loader)
        fail_msg("loader: %s", err.msg);
    s->model = nx_loader_load(s->loader, dir, NULL, NULL, &err);
    if (!s->model)
        fail_msg("load %s: %s", dir, err.msg);
    s->engine = nx_engine_new(dir, s->model, s->pool, &eopts, &err);
    if (!s->engine)
        fail_msg("%s engine: %s", nx_device_name(device), err.msg);
}

/* ------------------------------------------------------------------------------------------
 * The F32 copy of a GGUF file: every tensor dequantized by nx__dequantize_row (the reference
 * for ggml's layouts), every key copied except those nx_gguf_save writes itself.
 */
static void copy_kv(const nx_gguf_kv_t *kv, nx_gguf_kv_spec_t *o, const char ***strings)
{
    o->key = nx_gguf_kv_key(kv);
    o->type = nx_gguf_kv_type(kv);
    o->elem_type = nx_gguf_kv_elem_type(kv);
    if (o->type == NX_GGUF_ARRAY) {
        o->count = nx_gguf_kv_count(kv);
        if (o->elem_type != NX_GGUF_STRING) {
            o->array = nx_gguf_kv_array_data(kv);
            return;
        }
        *strings = calloc(o->count ? o->count : 1, sizeof **strings);
        assert_non_null(*strings);
        for (uint64_t i = 0; i < o->count; i++)
            (*strings)[i] = nx_gguf_get_str(kv, i, NULL);
        o->array = *strings;
        return;
    }
    switch (o->type) {
    case NX_GGUF_U8: case NX_GGUF_U16: case NX_GGUF_U32: case NX_GGUF_U64:
        assert_true(nx_gguf_get_u64(kv, 0, &o->value.u));
        break;
    case NX_GGUF_I8: case NX_GGUF_I16: case NX_GGUF_I32: case NX_GGUF_I64:
        assert_true(nx_gguf_get_i64(kv, 0, &o->value.i));
        break;
    case NX_GGUF_F32: case NX_GGUF_F64: assert_true(nx_gguf_get_f64(kv, 0, &o->value.f)); break;
    case NX_GGUF_BOOL: assert_true(nx_gguf_get_bool(kv, 0, &o->value.b)); break;
    default: o->value.str = nx_gguf_get_str(kv, 0, NULL); break;
    }
}

/* The tensor's values as floats (caller frees). */
static float *dequantized(const nx_st_t *st, const nx_st_tensor_t *t, int fd)
{
    const nx_st_file_t *f = nx_st_file_at(st, t->file_index);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        elems *= t->shape[d];
    void *raw = malloc(t->bytes);
    float *out = malloc(elems * sizeof *out);
    assert_non_null(raw);
    assert_non_null(out);
    assert_int_equal(pread(fd, raw, t->bytes, (off_t)(f->data_offset + t->begin)),
                     (ssize_t)t->bytes);
    nx__dequantize_row(t->dtype, raw, out, elems);
    free(raw);
    return out;
}

static void write_f32_copy(const char *src, const char *dst)
{
    nx_err_t err = {0};
    nx_st_t *st = nx_st_open(src, &err);
    if (!st)
        fail_msg("open %s: %s", src, err.msg);
    size_t kv_count = nx_st_gguf_kv_count(st), count = nx_st_tensor_count(st), kept = 0;
    nx_gguf_kv_spec_t *kvs = calloc(kv_count, sizeof *kvs);
    const char ***strings = calloc(kv_count, sizeof *strings);
    nx_st_tensor_spec_t *specs = calloc(count, sizeof *specs);
    float **data = calloc(count, sizeof *data);
    assert_true(kvs && strings && specs && data);
    for (size_t i = 0; i < kv_count; i++) {
        const nx_gguf_kv_t *kv = nx_st_gguf_kv_at(st, i);
        const char *key = nx_gguf_kv_key(kv);
        if (strcmp(key, "general.alignment") == 0 || strncmp(key, "nexus.", 6) == 0)
            continue; /* nx_gguf_save writes these */
        copy_kv(kv, &kvs[kept], &strings[kept]);
        if (strcmp(key, "general.file_type") == 0)
            kvs[kept].value.u = 0; /* ggml's ALL_F32 */
        kept++;
    }
    int fd = open(src, O_RDONLY);
    assert_true(fd >= 0);
    for (size_t i = 0; i < count; i++) {
        const nx_st_tensor_t *t = nx_st_tensor_at(st, i);
        specs[i] = (nx_st_tensor_spec_t){.name = t->name, .dtype = NX_DT_F32, .ndim = t->ndim};
        memcpy(specs[i].shape, t->shape, sizeof t->shape);
        specs[i].data = data[i] = dequantized(st, t, fd);
    }
    close(fd);
    if (nx_gguf_save(dst, kvs, kept, specs, count, NULL, &err) != NX_OK)
        fail_msg("write %s: %s", dst, err.msg);
    for (size_t i = 0; i < count; i++)
        free(data[i]);
    for (size_t i = 0; i < kv_count; i++)
        free(strings[i]);
    free(data);
    free(specs);
    free(strings);
    free(kvs);
    nx_st_destroy(&st);
}

/* The case's model (and its F32 copy when the reference runs that). */
static int make_models(params_t *p)
{
    nx_err_t err = {0};
    nx_synth_opts_t o = {.arch = p->arch, .preset = p->preset, .out_dir = p->dir,
                         .seed = 7 + p->arch, .dtype = p->gguf ? NX_DT_F32 : p->dtype,
                         .shards = 1};
    snprintf(p->model, sizeof p->model, "%s", p->dir);
    snprintf(p->ref_model, sizeof p->ref_model, "%s", p->dir);
    if (!p->gguf) {
        rmdir(p->dir); /* nx_synth_model creates it */
        if (nx_synth_model(&o, NULL, &err) != NX_OK) {
            fprintf(stderr, "nx_synth_model: %s\n", err.msg);
            return -1;
        }
        return 0;
    }
    snprintf(p->model, sizeof p->model, "%s/model-%s.gguf", p->dir, nx_qmix_name(p->mix));
    if (nx_synth_gguf(&o, p->mix, p->model, NULL, &err) != NX_OK) {
        fprintf(stderr, "nx_synth_gguf: %s\n", err.msg);
        return -1;
    }
    snprintf(p->ref_model, sizeof p->ref_model, "%s", p->model);
    if (p->against != REF_CPU) {
        snprintf(p->ref_model, sizeof p->ref_model, "%s/model-f32.gguf", p->dir);
        write_f32_copy(p->model, p->ref_model);
    }
    return 0;
}

static int setup(void **state)
{
    params_t *p = *state;
    if (!have_gpu)
        return 0;
    snprintf(p->dir, sizeof p->dir, "/tmp/nx-cuda-engine-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    p->max_err = 0;
    if (make_models(p) != 0)
        return -1;
    /* read by the CUDA backend when the engine is created */
    setenv("NEXUS_CUDA_KERNELS", p->simple ? "simple" : "fast", 1);
    setenv("NEXUS_CUDA_GRAPHS", p->graphs_off ? "0" : "1", 1);
    setenv("NEXUS_CUDA_FUSE_NORM", p->norm_unfused ? "0" : "1", 1);
    setenv("NEXUS_CUDA_KV", p->kv_f32 ? "f32" : "bf16", 1);
    setenv("NEXUS_CUDA_PROFILE", p->profile ? "1" : "0", 1);
    char rows[16];
    snprintf(rows, sizeof rows, "%u", p->dequant_rows);
    setenv("NEXUS_CUDA_DEQUANT_ROWS", rows, 1);
    return 0;
}

static int teardown(void **state)
{
    params_t *p = *state;
    side_close(&p->cuda);
    side_close(&p->ref);
    if (p->max_err > 0)
        print_message("largest difference from the reference: %.3g of the largest logit "
                      "(tolerance %.3g)\n", p->max_err, p->tol);
    if (p->dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", p->dir);
        p->dir[0] = '\0';
    }
    unsetenv("NEXUS_CUDA_KERNELS");
    unsetenv("NEXUS_CUDA_GRAPHS");
    unsetenv("NEXUS_CUDA_FUSE_NORM");
    unsetenv("NEXUS_CUDA_KV");
    unsetenv("NEXUS_CUDA_PROFILE");
    unsetenv("NEXUS_CUDA_DEQUANT_ROWS");
    return 0;
}

static void open_both(params_t *p)
{
    nx_device_kind_t ref = p->against == REF_CUDA_F32 ? NX_DEVICE_CUDA : NX_DEVICE_CPU;
    side_open(&p->ref, ref, p->ref_model);
    side_open(&p->cuda, NX_DEVICE_CUDA, p->model);
    assert_string_equal(nx_engine_backend_name(p->cuda.engine), "cuda");
    assert_string_equal(nx_engine_backend_name(p->ref.engine), nx_device_name(ref));
}

/* ------------------------------------------------------------------------------------------
 * Comparisons
 */
static double rel_err(const float *got, const float *ref, uint32_t n)
{
    double diff = 0, big = 1e-6;
    for (uint32_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        double d = fabs((double)got[i] - ref[i]);
        diff = d > diff ? d : diff;
        big = fabs(ref[i]) > big ? fabs(ref[i]) : big;
    }
    return diff / big;
}

static void expect_close(params_t *p, const float *got, const float *ref, uint32_t vocab,
                         const char *what, uint32_t row)
{
    double e = rel_err(got, ref, vocab);
    p->max_err = e > p->max_err ? e : p->max_err;
    if (!(e <= p->tol))
        fail_msg("%s, row %u: CUDA logits differ from the reference's (%s) by %.3g of the "
                 "largest (tolerance %.3g)", what, row, p->ref_model, e, p->tol);
}

/* Index of the largest logit, and the gap to the second (relative to the largest |logit|). */
static int32_t argmax(const float *logits, uint32_t vocab, double *margin_out)
{
    uint32_t best = 0, second = vocab > 1 ? 1 : 0;
    if (vocab > 1 && logits[1] > logits[0])
        best = 1, second = 0;
    double big = 1e-6;
    for (uint32_t i = 0; i < vocab; i++) {
        big = fabs(logits[i]) > big ? fabs(logits[i]) : big;
        if (i < 2)
            continue;
        if (logits[i] > logits[best])
            second = best, best = i;
        else if (logits[i] > logits[second])
            second = i;
    }
    *margin_out = ((double)logits[best] - logits[second]) / big;
    return (int32_t)best;
}

static void prompt_ids(int32_t *ids, size_t n, uint32_t vocab, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        ids[i] = (int32_t)((x >> 8) % vocab);
    }
}

static void step_one(side_t *s, nx_seq_t *seq)
{
    nx_err_t err = {0};
    if (nx_engine_step(s->engine, &seq, 1, &err) != NX_OK)
        fail_msg("step: %s", err.msg);
}

static void feed(nx_seq_t *seq, const int32_t *ids, size_t n)
{
    nx_err_t err = {0};
    if (nx_seq_feed(seq, ids, n, &err) != NX_OK)
        fail_msg("feed: %s", err.msg);
}

/* A prompt of prompt_len tokens (every row's logits compared), then greedy decode steps. */
static void compare_generation(params_t *p, uint32_t prompt_len, uint32_t decode_steps)
{
    open_both(p);
    uint32_t vocab = nx_engine_config(p->ref.engine)->vocab;
    nx_err_t err = {0};
    nx_seq_t *a = nx_seq_new(p->ref.engine, 0, true, &err);
    assert_non_null(a);
    nx_seq_t *b = nx_seq_new(p->cuda.engine, 0, true, &err);
    if (!b)
        fail_msg("CUDA sequence: %s", err.msg);
    int32_t *ids = malloc(prompt_len * sizeof *ids);
    prompt_ids(ids, prompt_len, vocab, prompt_len);
    feed(a, ids, prompt_len);
    feed(b, ids, prompt_len);
    step_one(&p->ref, a);
    step_one(&p->cuda, b);
    size_t rows_a = 0, rows_b = 0;
    const float *la = nx_seq_logits(a, &rows_a), *lb = nx_seq_logits(b, &rows_b);
    assert_int_equal(rows_a, prompt_len);
    assert_int_equal(rows_b, prompt_len);
    for (uint32_t r = 0; r < prompt_len; r++)
        expect_close(p, lb + (size_t)r * vocab, la + (size_t)r * vocab, vocab, "prompt", r);

    for (uint32_t step = 0; step < decode_steps; step++) {
        la = nx_seq_logits(a, &rows_a);
        lb = nx_seq_logits(b, &rows_b);
        const float *last_a = la + (rows_a - 1) * vocab, *last_b = lb + (rows_b - 1) * vocab;
        expect_close(p, last_b, last_a, vocab, "decode", step);
        double margin_a, margin_b;
        int32_t ta = argmax(last_a, vocab, &margin_a), tb = argmax(last_b, vocab, &margin_b);
        if (ta != tb) {
            if (margin_a < 2 * p->tol) {
                print_message("decode step %u: tokens %d (reference) and %d (CUDA) differ on a "
                              "near tie (margin %.3g); stopping the comparison there\n",
                              step, ta, tb, margin_a);
                break;
            }
            fail_msg("decode step %u: greedy token %d on CUDA, %d on the reference (margin %.3g)",
                     step, tb, ta, margin_a);
        }
        feed(a, &ta, 1);
        feed(b, &tb, 1);
        step_one(&p->ref, a);
        step_one(&p->cuda, b);
    }
    free(ids);
    nx_seq_destroy(p->ref.engine, &a);
    nx_seq_destroy(p->cuda.engine, &b);
}

/* ------------------------------------------------------------------------------------------
 * Tests
 */
static void test_cuda_pool_fails_cleanly_without_gpu(void **state)
{
    if (have_gpu)
        skip(); /* the GPU tests below cover this machine */
    nx_err_t err = {0};
    nx_pool_opts_t popts = {.device = NX_DEVICE_CUDA, .bytes = 64ull << 20};
    nx_pool_t *pool = nx_pool_new(&popts, &err);
    assert_null(pool);
    assert_true(err.code == NX_EDEVICE || err.code == NX_ENOTSUP);
    assert_true(strlen(err.msg) > 0);
}

static void test_generation(void **state)
{
    NEED_GPU();
    params_t *p = *state;
    compare_generation(p, p->prompt ? p->prompt : 37, p->gguf ? 8 : 12);
}

/* More rows than one pass (256): the second pass attends to the first one's cache. */
static void test_long_prompt(void **state)
{
    NEED_GPU();
    compare_generation(*state, 300, 3);
}

/* Two sequences at different positions in every step: a prefill batch of 7 + 19 rows, then
 * decode steps of two rows (a graph of two rows), each compared with the CPU stepping the same
 * sequences together. */
#define BATCH_MAX 24

static void test_batch(void **state)
{
    NEED_GPU();
    params_t *p = *state;
    open_both(p);
    uint32_t vocab = nx_engine_config(p->ref.engine)->vocab;
    nx_err_t err = {0};
    uint32_t count = p->seqs ? p->seqs : 2;
    assert_true(count <= BATCH_MAX);
    nx_seq_t *ref_seqs[BATCH_MAX], *cuda_seqs[BATCH_MAX];
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len = i == 0 ? 7 : 19 - (i * 5) % 13; /* different positions */
        int32_t ids[19];
        prompt_ids(ids, len, vocab, 100 + i);
        ref_seqs[i] = nx_seq_new(p->ref.engine, 64 + 32 * (i % 2), false, &err);
        cuda_seqs[i] = nx_seq_new(p->cuda.engine, 64 + 32 * (i % 2), false, &err);
        if (!ref_seqs[i] || !cuda_seqs[i])
            fail_msg("sequence: %s", err.msg);
        feed(ref_seqs[i], ids, len);
        feed(cuda_seqs[i], ids, len);
    }
    /* step 0 is prefill of every prompt together; then decode steps of `count` rows (GEMV up
     * to 8 rows, cuBLAS above, in graphs; above 16 rows the graph ends before the heads) */
    for (uint32_t step = 0; step < 8; step++) {
        if (nx_engine_step(p->ref.engine, ref_seqs, count, &err) != NX_OK ||
            nx_engine_step(p->cuda.engine, cuda_seqs, count, &err) != NX_OK)
            fail_msg("step %u: %s", step, err.msg);
        for (uint32_t i = 0; i < count; i++) {
            const float *la = nx_seq_logits(ref_seqs[i], NULL);
            const float *lb = nx_seq_logits(cuda_seqs[i], NULL);
            expect_close(p, lb, la, vocab, "batch", step * count + i);
            double margin;
            int32_t next = argmax(la, vocab, &margin); /* both follow the CPU's choice */
            feed(ref_seqs[i], &next, 1);
            feed(cuda_seqs[i], &next, 1);
        }
    }
    for (uint32_t i = 0; i < count; i++) {
        nx_seq_destroy(p->ref.engine, &ref_seqs[i]);
        nx_seq_destroy(p->cuda.engine, &cuda_seqs[i]);
    }
}

/* A KV cache larger than the pool is NX_EPOOLFULL (the orchestrator evicts on it). */
static void test_kv_pool_full(void **state)
{
    NEED_GPU();
    params_t *p = *state;
    open_both(p);
    nx_err_t err = {0};
    nx_seq_t *seq = nx_seq_new(p->cuda.engine, 4000000, false, &err);
    assert_null(seq);
    assert_int_equal(err.code, NX_EPOOLFULL);
}

/* ------------------------------------------------------------------------------------------
 * The quantized kernels on their own, where the engine cases cannot reach: rows longer than
 * one staged run of blocks (the small preset's rows fit in one), so the GEMV goes through
 * several runs with the next one's loads in flight and a partial last run; weights at 2-byte
 * offsets that GGUF's 32-byte alignment never gives; the dequantization of a row range.
 *
 * The kernels' launchers exist only in builds with CUDA (the CUDA backend pulls them into the
 * link); weak references leave them NULL in a build without, which then skips (as it has no
 * GPU anyway).
 */
#pragma weak nx__cu_gemv
#pragma weak nx__cu_gemv_fast_ok
#pragma weak nx__cu_dequant_bf16

#define QK_ROWS 19    /* output rows: two blocks of 8 warps and a partial one */
#define QK_COLS 2304  /* 9 blocks of 256, 72 of 32: two or three runs of every type */
#define QK_N 8

static float frand(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return (float)((*x >> 8) & 0xffff) / 32768.f - 1.f;
}

static float bf16_value(uint16_t bits)
{
    uint32_t wide = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &wide, sizeof f);
    return f;
}

/* y_ref[r][o] = (x_r (* norm * 1/rms)) . w_o in double. */
static void qk_reference(const float *w, const float *x, const float *norm, uint32_t n,
                         double *y)
{
    for (uint32_t r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * QK_COLS;
        double inv = 1, sum_sq = 0;
        for (uint32_t k = 0; k < QK_COLS; k++)
            sum_sq += (double)xr[k] * xr[k];
        if (norm)
            inv = 1 / sqrt(sum_sq / QK_COLS + 1e-6);
        for (uint32_t o = 0; o < QK_ROWS; o++) {
            double acc = 0;
            for (uint32_t k = 0; k < QK_COLS; k++)
                acc += (double)xr[k] * (norm ? norm[k] : 1.f) * w[(size_t)o * QK_COLS + k];
            y[r * QK_ROWS + o] = acc * inv;
        }
    }
}

static double qk_error(const float *got, const double *ref, uint32_t count)
{
    double diff = 0, big = 1e-30;
    for (uint32_t i = 0; i < count; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        diff = fmax(diff, fabs(got[i] - ref[i]));
        big = fmax(big, fabs(ref[i]));
    }
    return diff / big;
}

typedef struct qk_bufs { /* device pointers in one region */
    uint8_t *w;
    float *x, *y, *norm;
    uint16_t *dq;
} qk_bufs_t;

/* The GEMV of one dtype at n rows, fast (with or without the fused norm) and simple. */
static void qk_gemv(nx_pool_t *pool, const qk_bufs_t *d, int32_t cu, const char *name,
                    uint32_t n, bool with_norm, const float *w, const float *x,
                    const float *norm, double *worst)
{
    nx_err_t err = {0};
    nx__cu_gemv_t g = {.seg = {{{d->w, cu}, QK_ROWS, {NULL, NX_CU_F32}, d->y}}, .seg_count = 1,
                       .cols = QK_COLS, .x = d->x, .n = n};
    if (with_norm)
        g.norm = (nx__cu_w_t){d->norm, NX_CU_F32}, g.norm_eps = 1e-6f;
    double ref[QK_N * QK_ROWS];
    float got[QK_N * QK_ROWS];
    qk_reference(w, x, with_norm ? norm : NULL, n, ref);
    for (int simple = 0; simple < (with_norm ? 1 : 2); simple++) {
        assert_true(simple || nx__cu_gemv_fast_ok(&g));
        assert_int_equal(nx__cu_gemv(NULL, &g, simple), 0);
        if (nx_pool_copy_to_host(pool, got, d->y, n * QK_ROWS * sizeof *got, &err) != NX_OK)
            fail_msg("%s GEMV (n %u%s%s): %s", name, n, with_norm ? ", norm" : "",
                     simple ? ", simple" : "", err.msg);
        double e = qk_error(got, ref, n * QK_ROWS);
        *worst = fmax(*worst, e);
        if (!(e <= 1e-5))
            fail_msg("%s GEMV (n %u%s%s): %.3g of the largest output from the reference",
                     name, n, with_norm ? ", norm" : "", simple ? ", simple" : "", e);
    }
}

/* Rows [5, 16) dequantized to BF16: each within half a BF16 step of the reference value. */
static void qk_dequant(nx_pool_t *pool, const qk_bufs_t *d, int32_t cu, const char *name,
                       const float *w)
{
    nx_err_t err = {0};
    enum { FIRST = 5, COUNT = 11 };
    uint16_t *got = malloc((size_t)COUNT * QK_COLS * sizeof *got);
    assert_non_null(got);
    assert_int_equal(nx__cu_dequant_bf16(NULL, (nx__cu_w_t){d->w, cu}, QK_COLS, FIRST, COUNT,
                                         d->dq), 0);
    if (nx_pool_copy_to_host(pool, got, d->dq, (size_t)COUNT * QK_COLS * sizeof *got, &err))
        fail_msg("%s dequantization: %s", name, err.msg);
    for (size_t i = 0; i < (size_t)COUNT * QK_COLS; i++) {
        float want = w[(size_t)FIRST * QK_COLS + i], have = bf16_value(got[i]);
        if (!(fabsf(have - want) <= fabsf(want) * 0x1p-8f))
            fail_msg("%s dequantization: element %zu is %g, expected %g", name, i, have, want);
    }
    free(got);
}

static void test_quant_kernels(void **state)
{
    (void)state;
    NEED_GPU();
    if (!nx__cu_gemv || !nx__cu_gemv_fast_ok || !nx__cu_dequant_bf16)
        skip();
    static const struct { nx_dtype_t dtype; int32_t cu; } types[] = {
        {NX_DT_Q8_0, NX_CU_Q8_0}, {NX_DT_Q4_0, NX_CU_Q4_0}, {NX_DT_Q5_0, NX_CU_Q5_0},
        {NX_DT_Q4_K, NX_CU_Q4_K}, {NX_DT_Q6_K, NX_CU_Q6_K}};
    nx_err_t err = {0};
    nx_pool_t *pool = nx_pool_new(&(nx_pool_opts_t){.device = NX_DEVICE_CUDA,
                                                    .bytes = 64ull << 20}, &err);
    if (!pool)
        fail_msg("CUDA pool: %s", err.msg);
    nx_region_t *region = nx_pool_alloc(pool, 1u << 20, "quant kernels", &err);
    assert_non_null(region);
    uint8_t *base = nx_region_ptr(region);
    qk_bufs_t d = {.x = (float *)(base + (256u << 10)), .y = (float *)(base + (512u << 10)),
                   .norm = (float *)(base + (544u << 10)), .dq = (uint16_t *)(base + (640u << 10))};
    size_t elems = (size_t)QK_ROWS * QK_COLS;
    float *src = malloc(elems * sizeof *src), *w = malloc(elems * sizeof *w);
    float *x = malloc((size_t)QK_N * QK_COLS * sizeof *x), *norm = malloc(QK_COLS * sizeof *norm);
    uint8_t *packed = malloc(elems * 2);
    assert_true(src && w && x && norm && packed);
    uint32_t seed = 12345;
    for (size_t i = 0; i < elems; i++)
        src[i] = frand(&seed) * (1 + (float)(i % 7)); /* blocks of different scales */
    for (size_t i = 0; i < (size_t)QK_N * QK_COLS; i++)
        x[i] = frand(&seed);
    for (size_t i = 0; i < QK_COLS; i++)
        norm[i] = 1 + 0.5f * frand(&seed);
    assert_int_equal(nx_pool_copy_from_host(pool, d.x, x, (size_t)QK_N * QK_COLS * sizeof *x,
                                            &err), NX_OK);
    assert_int_equal(nx_pool_copy_from_host(pool, d.norm, norm, QK_COLS * sizeof *norm, &err),
                     NX_OK);
    double worst = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const char *name = nx_dtype_name(types[t].dtype);
        uint64_t row_bytes = nx__quant_row_bytes(types[t].dtype, QK_COLS);
        for (uint32_t r = 0; r < QK_ROWS; r++) {
            assert_int_equal(nx__quantize_row(types[t].dtype, src + (size_t)r * QK_COLS,
                                              packed + r * row_bytes, QK_COLS), NX_OK);
            nx__dequantize_row(types[t].dtype, packed + r * row_bytes, w + (size_t)r * QK_COLS,
                               QK_COLS);
        }
        d.w = base + 32 + 2 * t; /* 32, 34, ... 40: every type at a different 16-byte lead */
        assert_int_equal(nx_pool_copy_from_host(pool, d.w, packed, QK_ROWS * row_bytes, &err),
                         NX_OK);
        for (uint32_t n = 1; n <= QK_N; n += 3 + (n == 4)) /* 1, 4, 8 */
            for (int with_norm = 0; with_norm < 2; with_norm++)
                qk_gemv(pool, &d, types[t].cu, name, n, with_norm, w, x, norm, &worst);
        qk_dequant(pool, &d, types[t].cu, name, w);
    }
    print_message("quantized GEMVs: largest difference %.3g of the largest output\n", worst);
    free(src);
    free(w);
    free(x);
    free(norm);
    free(packed);
    nx_pool_free(pool, &region);
    nx_pool_destroy(&pool);
}

/* nx_engine_scratch_bytes counts a GGUF model's BF16 dequantization buffer (the largest
 * matrix of a layer, two bytes an element), which safetensors models never need. */
static void test_scratch_counts_dequant(void **state)
{
    (void)state;
    nx_model_config_t c = {.hidden = 2560, .intermediate = 9728, .layers = 36, .heads = 32,
                           .kv_heads = 8, .head_dim = 128, .vocab = 151936};
    uint64_t dense = nx_engine_scratch_bytes(&c, NX_DEVICE_CUDA);
    if (dense == 0)
        skip(); /* a build without CUDA */
    c.gguf = true;
    uint64_t gguf = nx_engine_scratch_bytes(&c, NX_DEVICE_CUDA);
    assert_true(gguf >= dense + 2ull * 9728 * 2560);
    c.intermediate = 12288 * 4; /* past the 64 MiB cap: row chunks, the buffer stays capped */
    c.gguf = false;
    dense = nx_engine_scratch_bytes(&c, NX_DEVICE_CUDA);
    c.gguf = true;
    assert_true(nx_engine_scratch_bytes(&c, NX_DEVICE_CUDA) - dense <= (64ull << 20) + 256);
}

/* Quantized cases: (a) against the same weights in F32 with the quantized GEMV or the simple
 * kernels (fp32 activations, fp32 KV): only the summation order differs. (b) against the CPU
 * on the same file, which rounds every activation to an int8 step of its block's max / 127:
 * at most 0.4% of the block max per value, RMS about 0.23%; a dot product's error grows with
 * sqrt(K) like its value, so each matmul's result moves by a few tenths of a percent relative
 * (more where the activations are peaked), and 7 matmuls per layer, 2 layers and the head add
 * up. Measured under the CPU emulation: 0.6% to 2.2% of the largest logit (cases 31-33); 5e-2
 * leaves twice the largest. */
#define Q_VS_F32_TOL 1e-4
#define Q_VS_CPU_TOL 5e-2

/* One parameter set per case (arch, dtype, simple kernels, graphs off, tolerance, ...). The
 * cases with tolerances under 1e-2 keep fp32 KV caches (NEXUS_CUDA_KV=f32), as the CPU does:
 * BF16 caches alone move logits by about 3e-3 of the largest. */
static params_t cases[] = {
    /* fast kernels: cuBLAS prefill (16-bit activations), GEMV decode in graphs, BF16 KV */
    {NX_SYNTH_QWEN3, NX_DT_BF16, false, false, 3e-2}, /* 0 */
    {NX_SYNTH_QWEN2, NX_DT_BF16, false, false, 3e-2}, /* 1 */
    {NX_SYNTH_LLAMA, NX_DT_BF16, false, false, 3e-2}, /* 2 */
    {NX_SYNTH_QWEN2, NX_DT_F16, false, false, 3e-2},  /* 3 */
    {NX_SYNTH_LLAMA, NX_DT_F32, false, false, 1e-3, .kv_f32 = true}, /* 4 */
    {NX_SYNTH_QWEN3, NX_DT_BF16, false, true, 3e-2},  /* 5: graphs off */
    /* simple kernels with fp32 KV: fp32 everywhere, close to the CPU */
    {NX_SYNTH_QWEN3, NX_DT_BF16, true, false, 2e-3, .kv_f32 = true}, /* 6 */
    {NX_SYNTH_QWEN2, NX_DT_BF16, true, false, 2e-3, .kv_f32 = true}, /* 7 */
    {NX_SYNTH_LLAMA, NX_DT_F16, true, false, 2e-3, .kv_f32 = true},  /* 8 */
    /* for the long prompt, batch and pool tests */
    {NX_SYNTH_LLAMA, NX_DT_BF16, false, false, 3e-2}, /* 9 */
    {NX_SYNTH_QWEN3, NX_DT_BF16, true, false, 2e-3, .kv_f32 = true}, /* 10 */
    {NX_SYNTH_QWEN3, NX_DT_BF16, false, false, 3e-2}, /* 11 */
    {NX_SYNTH_QWEN2, NX_DT_BF16, true, false, 2e-3, .kv_f32 = true}, /* 12 */
    {NX_SYNTH_LLAMA, NX_DT_BF16, false, false, 0},    /* 13 */
    /* batches of 5 (the 8-row GEMV) and 20 (cuBLAS decode in a graph without the heads) */
    {NX_SYNTH_QWEN3, NX_DT_BF16, false, false, 3e-2, 5},  /* 14 */
    {NX_SYNTH_LLAMA, NX_DT_BF16, false, false, 3e-2, 20}, /* 15 */
    /* the fast GEMVs with the RMSNorm as its own kernel (every other fast case fuses it) */
    {NX_SYNTH_QWEN2, NX_DT_F32, false, false, 1e-3, .norm_unfused = true, .kv_f32 = true}, /* 16 */
    /* simple kernels over BF16 KV caches */
    {NX_SYNTH_QWEN3, NX_DT_BF16, true, false, 1e-2}, /* 17 */
    /* profiled (its table goes to stderr when the engine is destroyed): the same results */
    {NX_SYNTH_QWEN2, NX_DT_BF16, false, false, 3e-2, .profile = true}, /* 18 */
    /* quantized GGUF files, (a): against their weights dequantized to F32. Prompts of at most
     * 16 rows run the quantized GEMV (fp32 activations; fp32 KV caches): tight */
#define Q(arch_, mix_, preset_, against_, tol_, kv_f32_, ...)                                   \
    {.arch = arch_, .tol = tol_, .kv_f32 = kv_f32_, .gguf = true, .mix = mix_,                 \
     .preset = preset_, .against = against_, __VA_ARGS__}
#define SMALL NX_SYNTH_SMALL
#define TINY NX_SYNTH_TINY
    Q(NX_SYNTH_QWEN3, NX_QMIX_Q4_K_M, SMALL, REF_CUDA_F32, Q_VS_F32_TOL, true,
      .prompt = 7),                                             /* 19: Q4_K, Q6_K */
    Q(NX_SYNTH_LLAMA, NX_QMIX_Q4_0, SMALL, REF_CUDA_F32, Q_VS_F32_TOL, true,
      .prompt = 13),                                            /* 20: two GEMV slices */
    Q(NX_SYNTH_QWEN2, NX_QMIX_Q8_0, SMALL, REF_CUDA_F32, Q_VS_F32_TOL, true,
      .prompt = 6),                                             /* 21: with biases */
    Q(NX_SYNTH_QWEN3, NX_QMIX_Q4_K_M, TINY, REF_CUDA_F32, Q_VS_F32_TOL, true,
      .prompt = 5),                                             /* 22: Q5_0, Q8_0 */
    Q(NX_SYNTH_LLAMA, NX_QMIX_Q4_K_M, SMALL, REF_CUDA_F32, Q_VS_F32_TOL, true,
      .prompt = 8, .norm_unfused = true),                       /* 23: RMSNorm kernel */
    /* the simple kernels (fp32 throughout) against the CPU on the F32 copy */
    Q(NX_SYNTH_QWEN2, NX_QMIX_Q4_K_M, SMALL, REF_CPU_F32, Q_VS_F32_TOL, true,
      .prompt = 20, .simple = true),                            /* 24 */
    Q(NX_SYNTH_LLAMA, NX_QMIX_Q4_K_M, TINY, REF_CPU_F32, Q_VS_F32_TOL, true,
      .prompt = 9, .simple = true),                             /* 25 */
    /* prompts above 16 rows: weights dequantized to BF16 for cuBLAS (in chunks of 48 rows
     * in 26), BF16 activations and KV caches, as the dense cuBLAS cases */
    Q(NX_SYNTH_QWEN3, NX_QMIX_Q4_K_M, SMALL, REF_CUDA_F32, 3e-2, false,
      .prompt = 40, .dequant_rows = 48),                        /* 26 */
    Q(NX_SYNTH_LLAMA, NX_QMIX_Q8_0, TINY, REF_CUDA_F32, 3e-2, false,
      .prompt = 24),                                            /* 27 */
    /* batches: 3 sequences (prefill of 3 x ~15 rows through cuBLAS, then 3-row GEMVs), 12
     * (two slices) and 20 (cuBLAS decode in a graph without the heads); tiny, for time */
    Q(NX_SYNTH_QWEN3, NX_QMIX_Q4_0, TINY, REF_CUDA_F32, 3e-2, false, .seqs = 3), /* 28 */
    Q(NX_SYNTH_QWEN2, NX_QMIX_Q4_K_M, TINY, REF_CUDA_F32, 3e-2, false, .seqs = 12), /* 29 */
    Q(NX_SYNTH_LLAMA, NX_QMIX_Q8_0, TINY, REF_CUDA_F32, 3e-2, false, .seqs = 20,
      .dequant_rows = 40),                                      /* 30 */
    /* (b): against the CPU backend on the same quantized file (int8 activations there) */
    Q(NX_SYNTH_QWEN3, NX_QMIX_Q4_K_M, SMALL, REF_CPU, Q_VS_CPU_TOL, true, .prompt = 7), /* 31 */
    Q(NX_SYNTH_LLAMA, NX_QMIX_Q4_0, SMALL, REF_CPU, Q_VS_CPU_TOL, true, .prompt = 6), /* 32 */
    Q(NX_SYNTH_QWEN2, NX_QMIX_Q8_0, TINY, REF_CPU, Q_VS_CPU_TOL, true, .prompt = 6), /* 33 */
    /* Q4_0 by the simple kernels (24 and 25 cover the other types) */
    Q(NX_SYNTH_QWEN3, NX_QMIX_Q4_0, SMALL, REF_CPU_F32, Q_VS_F32_TOL, true, .prompt = 5,
      .simple = true),                                          /* 34 */
};

#define CASE(fn, i) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &cases[i])

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_pool_fails_cleanly_without_gpu),
        cmocka_unit_test(test_quant_kernels),
        cmocka_unit_test(test_scratch_counts_dequant),
        CASE(test_generation, 0), CASE(test_generation, 1), CASE(test_generation, 2),
        CASE(test_generation, 3), CASE(test_generation, 4), CASE(test_generation, 5),
        CASE(test_generation, 6), CASE(test_generation, 7), CASE(test_generation, 8),
        CASE(test_generation, 16), CASE(test_generation, 17), CASE(test_generation, 18),
        CASE(test_long_prompt, 9), CASE(test_long_prompt, 10),
        CASE(test_batch, 11),      CASE(test_batch, 12),
        CASE(test_batch, 14),      CASE(test_batch, 15),
        CASE(test_kv_pool_full, 13),
        CASE(test_generation, 19), CASE(test_generation, 20), CASE(test_generation, 21),
        CASE(test_generation, 22), CASE(test_generation, 23), CASE(test_generation, 24),
        CASE(test_generation, 25), CASE(test_generation, 26), CASE(test_generation, 27),
        CASE(test_batch, 28),      CASE(test_batch, 29),      CASE(test_batch, 30),
        CASE(test_generation, 31), CASE(test_generation, 32), CASE(test_generation, 33),
        CASE(test_generation, 34),
    };
    return cmocka_run_group_tests(tests, gpu_group_setup, NULL);
}
