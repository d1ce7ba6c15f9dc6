/* matmul.c — the CPU backend's matmul kernel alone (nx__k_matmul_tile), one thread, on BF16
 * weights shaped like Qwen3-0.6B's: GFLOP/s for a batch of n rows against a [rows][k] matrix
 * that stays in the caches (the compute-bound case: prefill, batched decode), and GB/s of
 * weights streamed at n = 1 from a matrix far larger than the caches (batch-1 decode).
 *
 *   build/bench/matmul [--reps 5] [--stream-mib 512]
 *
 * Each figure is the median of --reps timed passes (one untimed pass first). NEXUS_CPU_KERNELS
 * (plain, avx2) picks the kernel path as it does for the engine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "ctl.h"

typedef struct shape {
    uint32_t n, rows, k;
} shape_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds of one pass: every tile of w against n rows of x, as the backend's tasks do. */
static double one_pass(const float *x, uint32_t n, const nx__wref_t *w, float *y, float *scratch)
{
    uint64_t t0 = nx_now_ns();
    for (uint32_t col = 0; col < w->rows; col += NX_K_TILE_COLS) {
        uint32_t cols = w->rows - col < NX_K_TILE_COLS ? w->rows - col : NX_K_TILE_COLS;
        nx__k_matmul_tile(x, n, w, NULL, col, cols, y, false, scratch);
    }
    return (double)(nx_now_ns() - t0) / 1e9;
}

/* Median seconds per pass over reps passes. */
static double median_pass(const float *x, uint32_t n, const nx__wref_t *w, float *y,
                          float *scratch, int reps)
{
    double times[64];
    one_pass(x, n, w, y, scratch);
    for (int r = 0; r < reps; r++)
        times[r] = one_pass(x, n, w, y, scratch);
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    return times[reps / 2];
}

static uint16_t *random_bf16(uint64_t count)
{
    uint16_t *v = malloc(count * sizeof *v);
    if (!v)
        return NULL;
    uint32_t state = 12345;
    for (uint64_t i = 0; i < count; i++) {
        state = state * 1664525u + 1013904223u;
        v[i] = (uint16_t)(0x3c00 | (state >> 24)); /* small positive values */
    }
    return v;
}

int main(int argc, char **argv)
{
    int reps = 5;
    uint64_t stream_mib = 512;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--stream-mib") == 0 && i + 1 < argc) {
            stream_mib = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: matmul [--reps 5] [--stream-mib 512]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64)
        reps = 5;
    const shape_t shapes[] = {{4, 3072, 1024}, {8, 3072, 1024},  {32, 3072, 1024},
                              {128, 3072, 1024}, {128, 1024, 3072}, {1, 3072, 1024}};
    uint32_t max_k = 3072, max_n = 128, max_rows = 3072;
    /* 64-byte aligned, as the CPU backend allocates activations and scratch */
    float *x = aligned_alloc(64, (size_t)max_n * max_k * sizeof *x);
    float *y = malloc((size_t)max_n * max_rows * sizeof *y);
    float *scratch = aligned_alloc(64, (size_t)NX_K_TILE_COLS * max_k * sizeof *scratch);
    uint16_t *w_small = random_bf16((uint64_t)max_rows * max_k);
    if (!x || !y || !scratch || !w_small)
        return 1;
    for (size_t i = 0; i < (size_t)max_n * max_k; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    printf("kernel path: %s\n", getenv("NEXUS_CPU_KERNELS") ? getenv("NEXUS_CPU_KERNELS")
                                                               : "(best available)");
    printf("%-28s %10s %10s\n", "shape (bf16, in cache)", "ms/pass", "GFLOP/s");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        nx__wref_t w = {w_small, NX_DT_BF16, shapes[s].rows, shapes[s].k};
        double sec = median_pass(x, shapes[s].n, &w, y, scratch, reps);
        char label[64];
        snprintf(label, sizeof label, "n=%u x [%u][%u]", shapes[s].n, shapes[s].rows,
                 shapes[s].k);
        printf("%-28s %10.3f %10.1f\n", label, sec * 1e3,
               2.0 * shapes[s].n * shapes[s].rows * shapes[s].k / sec / 1e9);
    }
    uint32_t k = 1024, rows = (uint32_t)(stream_mib * 1024 * 1024 / 2 / k);
    uint16_t *w_big = random_bf16((uint64_t)rows * k);
    if (!w_big)
        return 1;
    nx__wref_t w = {w_big, NX_DT_BF16, rows, k};
    float *y_big = malloc((size_t)rows * sizeof *y_big);
    if (!y_big)
        return 1;
    double sec = median_pass(x, 1, &w, y_big, scratch, reps);
    printf("n=1 x [%u][%u] streamed: %.1f ms/pass, %.2f GB/s of weights\n", rows, k, sec * 1e3,
           (double)rows * k * 2 / sec / 1e9);
    free(y_big);
    free(w_big);
    free(w_small);
    free(scratch);
    free(y);
    free(x);
    return 0;
}
