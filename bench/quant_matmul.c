/* quant_matmul.c — the CPU matmul over quantized weights (cpu_quant.h) beside the BF16 kernel
 * (cpu_kernels.h) on Qwen3-0.6B and 4B layer shapes, on the engine's thread pool, tasks cut as
 * the CPU backend cuts them (cpu_backend.c: runs of 16 consecutive weight rows, 4 tiles a task
 * above batch 8, else 16; at batch 1 one contiguous stripe per thread, which the backend also
 * lets a thread that finished first steal from in 4-tile chunks: here the stripes are equal and
 * nothing is stolen, so a figure is the kernel's). A pass is one matmul:
 * quantizing the input rows (as the backend does once per input) and every tile.
 *
 *   build/bench/quant_matmul [--threads 2] [--rounds 5] [--batches 1,8,128] [--shapes all|0.6b|4b]
 *                            [--types bf16,f16,q8_0,q4_0,q5_0,q4_k,q6_k] [--hot 1]
 *
 * Weights are read from memory, not the caches, as in a forward pass: each kernel cycles
 * through copies of its matrix that together exceed 4 x L3. Batch 1 reports GB/s of weight
 * bytes beside a streaming read bandwidth measured in the same run (all threads, 1 GiB);
 * batches 8 and 128 report GOP/s (2 x multiply-adds per second, int8 or fp32 alike). Every
 * figure carries its speed relative to BF16 on the same shape and batch (above 1: faster).
 * The kernels take turns round by round (bf16, q8_0, ..., then again), and each figure is the
 * median of --rounds passes, so that a busy shared machine disturbs them alike.
 *
 * --hot 1 measures the kernels' compute ceiling instead: each shape cut to HOT_ROWS weight rows
 * per thread (one task each), one copy, every task run HOT_REPEAT times over its rows, which
 * then come from the core's L2 (or L3 for the widest rows): the GB/s a kernel could stream if
 * memory were free. Decode keeps up with memory only when this is well above the read
 * bandwidth per core.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bandwidth.h"
#include "cpu_kernels.h"
#include "cpu_quant.h"
#include "quant.h"
#include "threadpool.h"

#define MAX_TYPES 8
#define MAX_BATCHES 4
#define HOT_ROWS 256   /* --hot: weight rows per thread (one task of 16 tiles) */
#define HOT_REPEAT 64  /* --hot: passes over them per timed matmul */

typedef struct shape {
    const char *name;
    uint32_t rows, cols; /* weight [rows][cols]: output features x input features */
    bool big_batch;      /* also run batch 128 (not for lm_head: prefill wants one row) */
} shape_t;

static const shape_t all_shapes[] = {
    {"0.6b gate/up", 3072, 1024, true},  {"0.6b down", 1024, 3072, true},
    {"4b gate/up", 9728, 2560, true},    {"4b down", 2560, 9728, true},
    {"0.6b lm_head", 151936, 1024, false},
};

/* ---- a matmul as the backend runs it --------------------------------------------------- */

typedef struct job {
    const float *x;     /* [n][cols] */
    uint32_t n;
    nx__wref_t w;
    float *y;           /* [n][rows] */
    nx__qact_t *qact;   /* NULL for fp32 kernels */
    void **scratch;     /* per worker */
    uint32_t repeat;    /* passes of every task over its rows (1; HOT_REPEAT with --hot) */
    uint32_t span;      /* weight rows per task (task_rows) */
} job_t;

static void quantize_task(void *ctx, uint32_t row, uint32_t worker)
{
    job_t *j = ctx;
    nx__qact_quantize(j->qact, row, j->x + (uint64_t)row * j->w.cols);
}

/* Weight rows per task, as cpu_backend.c cuts them (batch 1: a stripe per thread). */
static uint32_t task_rows(const job_t *j, uint32_t threads)
{
    if (j->n > 8)
        return 4 * NX_K_TILE_COLS;
    if (j->n > 1)
        return 16 * NX_K_TILE_COLS;
    uint32_t tiles = (j->w.rows + NX_K_TILE_COLS - 1) / NX_K_TILE_COLS;
    return NX_K_TILE_COLS * ((tiles + threads - 1) / threads);
}

static void tile_task(void *ctx, uint32_t task, uint32_t worker)
{
    job_t *j = ctx;
    uint32_t span = j->span, first = task * span;
    uint32_t end = j->w.rows - first < span ? j->w.rows : first + span;
    for (uint32_t pass = 0; pass < j->repeat; pass++) {
        if (j->qact) {
            nx__q_matmul(j->qact, j->n, &j->w, NULL, first, end - first, j->y, false,
                         j->scratch[worker], true);
            continue;
        }
        for (uint32_t col = first; col < end; col += NX_K_TILE_COLS) {
            uint32_t cols = end - col < NX_K_TILE_COLS ? end - col : NX_K_TILE_COLS;
            nx__k_matmul_tile(j->x, j->n, &j->w, NULL, col, cols, j->y, false,
                              j->scratch[worker]);
        }
    }
}

static void run_job(nx__tpool_t *tp, job_t *j)
{
    if (j->qact) {
        if ((uint64_t)j->n * j->w.cols <= 8192)
            for (uint32_t r = 0; r < j->n; r++)
                quantize_task(j, r, 0);
        else
            nx__tpool_run(tp, j->n, quantize_task, j);
    }
    j->span = task_rows(j, nx__tpool_size(tp));
    nx__tpool_run(tp, (j->w.rows + j->span - 1) / j->span, tile_task, j);
}

/* ---- weights: copies of one matrix, enough of them to miss the caches ------------------- */

typedef struct weights {
    nx_dtype_t dtype;
    uint8_t **copies;
    uint32_t count, next;
    uint64_t bytes; /* of one copy */
} weights_t;

/* The last-level cache, as sysconf says (capped: some VMs report a whole host's). */
static uint64_t cache_bytes(void)
{
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return l3 > 0 && l3 <= (64l << 20) ? (uint64_t)l3 : 64ull << 20;
}

/* rows x cols of dtype from a few hundred quantized random rows repeated (quantizing all of
 * lm_head with Q4_K's search would take longer than the benchmark). */
static bool weights_make(weights_t *w, nx_dtype_t dtype, uint32_t rows, uint32_t cols,
                         bool hot)
{
    enum { DISTINCT = 64 };
    uint64_t row_bytes = nx__quant_row_bytes(dtype, cols);
    *w = (weights_t){.dtype = dtype, .bytes = row_bytes * rows};
    float *src = malloc((size_t)DISTINCT * cols * sizeof *src);
    uint8_t *rows_q = malloc(row_bytes * DISTINCT);
    if (!src || !rows_q)
        return false;
    uint32_t state = 12345;
    for (size_t i = 0; i < (size_t)DISTINCT * cols; i++) {
        state = state * 1664525u + 1013904223u;
        src[i] = ((float)(state >> 8) / 8388608.0f - 1.0f) * 0.05f;
    }
    for (uint32_t r = 0; r < DISTINCT; r++)
        nx__quantize_row(dtype, src + (size_t)r * cols, rows_q + r * row_bytes, cols);
    uint64_t want = hot ? 1 : 4 * cache_bytes();
    w->count = (uint32_t)((want + w->bytes - 1) / w->bytes);
    w->copies = calloc(w->count, sizeof *w->copies);
    bool ok = w->copies != NULL;
    for (uint32_t c = 0; ok && c < w->count; c++) {
        ok = (w->copies[c] = aligned_alloc(64, (w->bytes + 63) & ~63ull)) != NULL;
        for (uint32_t r = 0; ok && r < rows; r++)
            memcpy(w->copies[c] + r * row_bytes, rows_q + (r % DISTINCT) * row_bytes, row_bytes);
    }
    free(src);
    free(rows_q);
    return ok;
}

static void weights_free(weights_t *w)
{
    for (uint32_t c = 0; c < w->count && w->copies; c++)
        free(w->copies[c]);
    free(w->copies);
    w->copies = NULL;
}

/* ---- the run ------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct args {
    uint32_t threads, rounds;
    uint32_t batches[MAX_BATCHES];
    int batch_count;
    nx_dtype_t types[MAX_TYPES]; /* types[0] is BF16, the baseline */
    int type_count;
    const char *shapes; /* "all", "0.6b", "4b" */
    bool hot;           /* --hot 1: from the caches (see the file comment) */
} args_t;

static int usage(void)
{
    fprintf(stderr, "usage: quant_matmul [--threads 2] [--rounds 5] [--batches 1,8,128] "
                    "[--shapes all|0.6b|4b] [--types bf16,f16,q8_0,q4_0,q5_0,q4_k,q6_k] "
                    "[--hot 1]\n");
    return 2;
}

static bool parse_args(int argc, char **argv, args_t *a)
{
    *a = (args_t){.threads = 2, .rounds = 5, .batches = {1, 8, 128}, .batch_count = 3,
                  .shapes = "all"};
    const char *types = "bf16,q8_0,q4_0,q5_0,q4_k,q6_k";
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return false;
        if (strcmp(argv[i], "--threads") == 0)
            a->threads = (uint32_t)atoi(val);
        else if (strcmp(argv[i], "--rounds") == 0)
            a->rounds = (uint32_t)atoi(val);
        else if (strcmp(argv[i], "--shapes") == 0)
            a->shapes = val;
        else if (strcmp(argv[i], "--hot") == 0)
            a->hot = atoi(val) != 0;
        else if (strcmp(argv[i], "--types") == 0)
            types = val;
        else if (strcmp(argv[i], "--batches") == 0) {
            char copy[64];
            snprintf(copy, sizeof copy, "%s", val);
            a->batch_count = 0;
            for (char *s, *t = strtok_r(copy, ",", &s); t && a->batch_count < MAX_BATCHES;
                 t = strtok_r(NULL, ",", &s))
                a->batches[a->batch_count++] = (uint32_t)atoi(t);
        } else
            return false;
        i++;
    }
    char copy[128];
    snprintf(copy, sizeof copy, "%s", types);
    a->types[a->type_count++] = NX_DT_BF16;
    for (char *s, *t = strtok_r(copy, ",", &s); t; t = strtok_r(NULL, ",", &s)) {
        nx_dtype_t d;
        if (!nx_dtype_parse_any(t, &d) || !nx__quant_weight_ok(d) || d == NX_DT_F32)
            return false;
        if (d != NX_DT_BF16 && a->type_count < MAX_TYPES)
            a->types[a->type_count++] = d;
    }
    return a->threads >= 1 && a->threads <= 64 && a->rounds >= 1 && a->rounds <= 99 &&
           a->batch_count > 0;
}

/* Seconds of one pass of kernel `t` (its next weight copy) on batch n. */
static double time_pass(nx__tpool_t *tp, weights_t *w, const shape_t *s, uint32_t n,
                        const float *x, float *y, nx__qact_t *qact, void *qact_mem,
                        void **scratch, uint32_t repeat)
{
    job_t j = {x, n, {w->copies[w->next], w->dtype, s->rows, s->cols}, y, NULL, scratch,
               repeat};
    w->next = (w->next + 1) % w->count;
    nx__qfamily_t family = nx__q_family(w->dtype);
    if (family != NX__QF_NONE) {
        nx__qact_bind(qact, family, n, s->cols, qact_mem);
        j.qact = qact;
    }
    uint64_t t0 = nx_now_ns();
    run_job(tp, &j);
    return (nx_now_ns() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    args_t a;
    if (!parse_args(argc, argv, &a))
        return usage();
    nx_err_t err = {0};
    nx__tpool_t *tp = nx__tpool_new(a.threads, &err);
    if (!tp) {
        fprintf(stderr, "quant_matmul: %s\n", err.msg);
        return 1;
    }
    double bandwidth = nx_bench_read_bandwidth(a.threads, 1ull << 30);
    const char *paths[] = {"plain", "avx2", "avx512 (vnni)"};
    printf("quant_matmul: %u threads, quantized kernels %s, rounds %u, L3 %llu MiB; "
           "streaming read %.1f GB/s\n", a.threads, paths[nx__q_path()], a.rounds,
           (unsigned long long)(cache_bytes() >> 20), bandwidth / 1e9);
    printf("batch 1: GB/s of weights (%% of the streaming read); batch > 1: GOP/s; "
           "x: speed relative to bf16 on the same row\n\n");

    uint32_t max_cols = 9728, max_rows = 151936, max_n = 128;
    float *x = aligned_alloc(64, (size_t)max_n * max_cols * sizeof *x);
    float *y = aligned_alloc(64, (size_t)max_n * max_rows * sizeof *y);
    size_t qact_bytes = nx__qact_bytes(NX__QF_32, max_n, max_cols);
    size_t k_bytes = nx__qact_bytes(NX__QF_256, max_n, max_cols);
    void *qact_mem = aligned_alloc(64, qact_bytes > k_bytes ? qact_bytes : k_bytes);
    size_t scratch_bytes = nx__q_scratch_bytes(max_cols);
    if ((size_t)NX_K_TILE_COLS * max_cols * sizeof(float) > scratch_bytes)
        scratch_bytes = (size_t)NX_K_TILE_COLS * max_cols * sizeof(float);
    void *scratch[64];
    for (uint32_t i = 0; i < a.threads; i++)
        scratch[i] = aligned_alloc(64, scratch_bytes);
    if (!x || !y || !qact_mem)
        return 1;
    for (size_t i = 0; i < (size_t)max_n * max_cols; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    nx__qact_t qact;

    printf("%-14s %5s", "shape", "batch");
    for (int t = 0; t < a.type_count; t++)
        printf(" %17s", nx_dtype_name(a.types[t]));
    printf("\n");
    for (size_t si = 0; si < sizeof all_shapes / sizeof *all_shapes; si++) {
        shape_t cut = all_shapes[si];
        const shape_t *s = &cut;
        if (strcmp(a.shapes, "all") != 0 && strncmp(s->name, a.shapes, strlen(a.shapes)) != 0)
            continue;
        uint32_t repeat = a.hot ? HOT_REPEAT : 1;
        if (a.hot && cut.rows > HOT_ROWS * a.threads)
            cut.rows = HOT_ROWS * a.threads;
        weights_t w[MAX_TYPES];
        bool ok = true;
        for (int t = 0; t < a.type_count; t++)
            ok = ok && weights_make(&w[t], a.types[t], s->rows, s->cols, a.hot);
        if (!ok) {
            fprintf(stderr, "quant_matmul: out of memory for %s\n", s->name);
            return 1;
        }
        for (int bi = 0; bi < a.batch_count; bi++) {
            uint32_t n = a.batches[bi];
            if (n > max_n || (n > 8 && !s->big_batch))
                continue;
            double times[MAX_TYPES][100];
            for (int t = 0; t < a.type_count; t++) /* warm-up: page in, pick paths */
                time_pass(tp, &w[t], s, n, x, y, &qact, qact_mem, scratch, repeat);
            for (uint32_t r = 0; r < a.rounds; r++)
                for (int t = 0; t < a.type_count; t++)
                    times[t][r] = time_pass(tp, &w[t], s, n, x, y, &qact, qact_mem, scratch,
                                            repeat);
            printf("%-14s %5u", s->name, n);
            double base = 0;
            for (int t = 0; t < a.type_count; t++) {
                qsort(times[t], a.rounds, sizeof(double), cmp_double);
                double sec = times[t][a.rounds / 2] / repeat;
                base = t == 0 ? sec : base;
                char cell[40];
                if (n == 1)
                    snprintf(cell, sizeof cell, "%5.1f (%3.0f%%) %4.2fx", w[t].bytes / sec / 1e9,
                             100 * w[t].bytes / sec / bandwidth, base / sec);
                else
                    snprintf(cell, sizeof cell, "%6.1f %4.2fx",
                             2.0 * n * s->rows * s->cols / sec / 1e9, base / sec);
                printf(" %17s", cell);
            }
            printf("\n");
            fflush(stdout);
        }
        for (int t = 0; t < a.type_count; t++)
            weights_free(&w[t]);
    }
    for (uint32_t i = 0; i < a.threads; i++)
        free(scratch[i]);
    free(qact_mem);
    free(x);
    free(y);
    nx__tpool_destroy(&tp);
    return 0;
}
