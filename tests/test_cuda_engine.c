/* test_cuda_engine.c — the CUDA engine backend against the CPU backend, on tiny synthesized
 * models of each architecture (Qwen3: q/k norms; Qwen2.5: q/k/v biases; Llama 3: llama3 RoPE,
 * untied head) in BF16, F16 and F32: the logits of a prompt (the cuBLAS prefill path), of
 * greedy decode steps (the GEMV path, replayed through CUDA graphs), of a batch of sequences
 * at different positions, and of a prompt longer than one pass. Each comparison runs with the
 * fast kernels and with NEXUS_CUDA_KERNELS=simple.
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

#include "nx_engine.h"
#include "synth.h"

typedef struct side {
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
} side_t;

typedef struct params {
    nx_synth_arch_t arch;
    nx_dtype_t dtype;
    bool simple;       /* NEXUS_CUDA_KERNELS=simple */
    bool graphs_off;   /* NEXUS_CUDA_GRAPHS=0 */
    double tol;        /* max |cuda - cpu| / max |cpu| over a row */
    uint32_t seqs;     /* test_batch's sequences (0: 2) */
    bool norm_unfused; /* NEXUS_CUDA_FUSE_NORM=0: RMSNorm as its own kernel before the GEMVs */
    bool kv_f32;       /* NEXUS_CUDA_KV=f32: fp32 KV caches like the CPU's (else BF16) */
    bool profile;      /* NEXUS_CUDA_PROFILE=1: an event after every launch, graphs off */
    char dir[256];
    side_t cpu, cuda;
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

static int setup(void **state)
{
    params_t *p = *state;
    if (!have_gpu)
        return 0;
    snprintf(p->dir, sizeof p->dir, "/tmp/nx-cuda-engine-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    rmdir(p->dir); /* nx_synth_model creates it */
    nx_synth_opts_t o = {.arch = p->arch, .preset = NX_SYNTH_TINY, .out_dir = p->dir,
                         .seed = 7 + p->arch, .dtype = p->dtype, .shards = 1};
    nx_err_t err = {0};
    if (nx_synth_model(&o, NULL, &err) != NX_OK) {
        fprintf(stderr, "nx_synth_model: %s\n", err.msg);
        return -1;
    }
    /* read by the CUDA backend when the engine is created */
    setenv("NEXUS_CUDA_KERNELS", p->simple ? "simple" : "fast", 1);
    setenv("NEXUS_CUDA_GRAPHS", p->graphs_off ? "0" : "1", 1);
    setenv("NEXUS_CUDA_FUSE_NORM", p->norm_unfused ? "0" : "1", 1);
    setenv("NEXUS_CUDA_KV", p->kv_f32 ? "f32" : "bf16", 1);
    setenv("NEXUS_CUDA_PROFILE", p->profile ? "1" : "0", 1);
    return 0;
}

static int teardown(void **state)
{
    params_t *p = *state;
    side_close(&p->cuda);
    side_close(&p->cpu);
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
    return 0;
}

static void open_both(params_t *p)
{
    side_open(&p->cpu, NX_DEVICE_CPU, p->dir);
    side_open(&p->cuda, NX_DEVICE_CUDA, p->dir);
    assert_string_equal(nx_engine_backend_name(p->cuda.engine), "cuda");
    assert_string_equal(nx_engine_backend_name(p->cpu.engine), "cpu");
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

static void expect_close(const float *got, const float *ref, uint32_t vocab, double tol,
                         const char *what, uint32_t row)
{
    double e = rel_err(got, ref, vocab);
    if (!(e <= tol))
        fail_msg("%s, row %u: CUDA logits differ from the CPU's by %.3g of the largest "
                 "(tolerance %.3g)", what, row, e, tol);
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
    uint32_t vocab = nx_engine_config(p->cpu.engine)->vocab;
    nx_err_t err = {0};
    nx_seq_t *a = nx_seq_new(p->cpu.engine, 0, true, &err);
    assert_non_null(a);
    nx_seq_t *b = nx_seq_new(p->cuda.engine, 0, true, &err);
    if (!b)
        fail_msg("CUDA sequence: %s", err.msg);
    int32_t *ids = malloc(prompt_len * sizeof *ids);
    prompt_ids(ids, prompt_len, vocab, prompt_len);
    feed(a, ids, prompt_len);
    feed(b, ids, prompt_len);
    step_one(&p->cpu, a);
    step_one(&p->cuda, b);
    size_t rows_a = 0, rows_b = 0;
    const float *la = nx_seq_logits(a, &rows_a), *lb = nx_seq_logits(b, &rows_b);
    assert_int_equal(rows_a, prompt_len);
    assert_int_equal(rows_b, prompt_len);
    for (uint32_t r = 0; r < prompt_len; r++)
        expect_close(lb + (size_t)r * vocab, la + (size_t)r * vocab, vocab, p->tol, "prompt", r);

    for (uint32_t step = 0; step < decode_steps; step++) {
        la = nx_seq_logits(a, &rows_a);
        lb = nx_seq_logits(b, &rows_b);
        const float *last_a = la + (rows_a - 1) * vocab, *last_b = lb + (rows_b - 1) * vocab;
        expect_close(last_b, last_a, vocab, p->tol, "decode", step);
        double margin_a, margin_b;
        int32_t ta = argmax(last_a, vocab, &margin_a), tb = argmax(last_b, vocab, &margin_b);
        if (ta != tb) {
            if (margin_a < 2 * p->tol) {
                print_message("decode step %u: tokens %d (CPU) and %d (CUDA) differ on a near "
                              "tie (margin %.3g); stopping the comparison there\n",
                              step, ta, tb, margin_a);
                break;
            }
            fail_msg("decode step %u: greedy token %d on CUDA, %d on the CPU (margin %.3g)",
                     step, tb, ta, margin_a);
        }
        feed(a, &ta, 1);
        feed(b, &tb, 1);
        step_one(&p->cpu, a);
        step_one(&p->cuda, b);
    }
    free(ids);
    nx_seq_destroy(p->cpu.engine, &a);
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
    compare_generation(*state, 37, 12);
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
    uint32_t vocab = nx_engine_config(p->cpu.engine)->vocab;
    nx_err_t err = {0};
    uint32_t count = p->seqs ? p->seqs : 2;
    assert_true(count <= BATCH_MAX);
    nx_seq_t *cpu_seqs[BATCH_MAX], *cuda_seqs[BATCH_MAX];
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len = i == 0 ? 7 : 19 - (i * 5) % 13; /* different positions */
        int32_t ids[19];
        prompt_ids(ids, len, vocab, 100 + i);
        cpu_seqs[i] = nx_seq_new(p->cpu.engine, 64 + 32 * (i % 2), false, &err);
        cuda_seqs[i] = nx_seq_new(p->cuda.engine, 64 + 32 * (i % 2), false, &err);
        if (!cpu_seqs[i] || !cuda_seqs[i])
            fail_msg("sequence: %s", err.msg);
        feed(cpu_seqs[i], ids, len);
        feed(cuda_seqs[i], ids, len);
    }
    /* step 0 is prefill of every prompt together; then decode steps of `count` rows (GEMV up
     * to 8 rows, cuBLAS above, in graphs; above 16 rows the graph ends before the heads) */
    for (uint32_t step = 0; step < 8; step++) {
        if (nx_engine_step(p->cpu.engine, cpu_seqs, count, &err) != NX_OK ||
            nx_engine_step(p->cuda.engine, cuda_seqs, count, &err) != NX_OK)
            fail_msg("step %u: %s", step, err.msg);
        for (uint32_t i = 0; i < count; i++) {
            const float *la = nx_seq_logits(cpu_seqs[i], NULL);
            const float *lb = nx_seq_logits(cuda_seqs[i], NULL);
            expect_close(lb, la, vocab, p->tol, "batch", step * count + i);
            double margin;
            int32_t next = argmax(la, vocab, &margin); /* both follow the CPU's choice */
            feed(cpu_seqs[i], &next, 1);
            feed(cuda_seqs[i], &next, 1);
        }
    }
    for (uint32_t i = 0; i < count; i++) {
        nx_seq_destroy(p->cpu.engine, &cpu_seqs[i]);
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
};

#define CASE(fn, i) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &cases[i])

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_pool_fails_cleanly_without_gpu),
        CASE(test_generation, 0), CASE(test_generation, 1), CASE(test_generation, 2),
        CASE(test_generation, 3), CASE(test_generation, 4), CASE(test_generation, 5),
        CASE(test_generation, 6), CASE(test_generation, 7), CASE(test_generation, 8),
        CASE(test_generation, 16), CASE(test_generation, 17), CASE(test_generation, 18),
        CASE(test_long_prompt, 9), CASE(test_long_prompt, 10),
        CASE(test_batch, 11),      CASE(test_batch, 12),
        CASE(test_batch, 14),      CASE(test_batch, 15),
        CASE(test_kv_pool_full, 13),
    };
    return cmocka_run_group_tests(tests, gpu_group_setup, NULL);
}
