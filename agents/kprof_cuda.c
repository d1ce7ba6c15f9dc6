/* kprof_cuda.c — where a CUDA forward pass spends its GPU time, by launch label (see
 * kprof_cuda.h; NEXUS_CUDA_PROFILE=1). */
#include "kprof_cuda.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KPROF_EVENTS 4096 /* marks a pass may hold (a prefill pass of 36 layers takes ~600) */
#define KPROF_LABELS 64

typedef struct kprof_row {
    const char *label;
    double ms;
    uint64_t calls;
} kprof_row_t;

struct nx__kprof {
    cudaEvent_t events[KPROF_EVENTS]; /* created as first needed */
    const char *labels[KPROF_EVENTS]; /* the work before events[i]; NULL: a pass starts */
    uint32_t created, marked;
    uint64_t dropped;     /* marks past KPROF_EVENTS in a pass, or past KPROF_LABELS labels */
    kprof_row_t rows[KPROF_LABELS];
    uint32_t row_count;
};

nx__kprof_t *nx__kprof_new(void)
{
    return calloc(1, sizeof(nx__kprof_t));
}

void nx__kprof_destroy(nx__kprof_t **self_p)
{
    nx__kprof_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    for (uint32_t i = 0; i < self->created; i++)
        cudaEventDestroy(self->events[i]);
    free(self);
    *self_p = NULL;
}

cudaError_t nx__kprof_mark(nx__kprof_t *self, cudaStream_t stream, const char *label)
{
    if (self->marked == KPROF_EVENTS) {
        self->dropped++;
        return cudaSuccess;
    }
    if (self->marked == self->created) {
        cudaError_t e = cudaEventCreate(&self->events[self->created]);
        if (e != cudaSuccess)
            return e;
        self->created++;
    }
    self->labels[self->marked] = label;
    return cudaEventRecord(self->events[self->marked++], stream);
}

static kprof_row_t *row_of(nx__kprof_t *self, const char *label)
{
    for (uint32_t i = 0; i < self->row_count; i++)
        if (strcmp(self->rows[i].label, label) == 0)
            return &self->rows[i];
    if (self->row_count == KPROF_LABELS)
        return NULL;
    self->rows[self->row_count] = (kprof_row_t){label, 0, 0};
    return &self->rows[self->row_count++];
}

cudaError_t nx__kprof_collect(nx__kprof_t *self)
{
    cudaError_t rc = cudaSuccess;
    for (uint32_t i = 1; i < self->marked && rc == cudaSuccess; i++) {
        if (!self->labels[i])
            continue; /* a pass starts here: the time before it is nobody's */
        float ms = 0;
        rc = cudaEventElapsedTime(&ms, self->events[i - 1], self->events[i]);
        kprof_row_t *row = rc == cudaSuccess ? row_of(self, self->labels[i]) : NULL;
        if (!row) {
            self->dropped++;
            continue;
        }
        row->ms += ms;
        row->calls++;
    }
    self->marked = 0;
    return rc;
}

static int by_time(const void *pa, const void *pb)
{
    const kprof_row_t *a = pa, *b = pb;
    return a->ms < b->ms ? 1 : a->ms > b->ms ? -1 : 0;
}

void nx__kprof_report(const nx__kprof_t *self)
{
    if (self->row_count == 0)
        return;
    kprof_row_t rows[KPROF_LABELS];
    memcpy(rows, self->rows, self->row_count * sizeof *rows);
    qsort(rows, self->row_count, sizeof *rows, by_time);
    double total = 0;
    for (uint32_t i = 0; i < self->row_count; i++)
        total += rows[i].ms;
    /* one fprintf per line, as nx_log: the user asked for this table (NEXUS_CUDA_PROFILE=1) */
    fprintf(stderr, "nexus profile: CUDA engine, GPU time between launches (graphs off; "
                    "kprof_cuda.h says what it counts)\n");
    fprintf(stderr, "nexus profile: %-34s %9s %11s %9s %6s\n", "launch", "calls", "total ms",
            "us/call", "share");
    for (uint32_t i = 0; i < self->row_count; i++)
        fprintf(stderr, "nexus profile: %-34s %9llu %11.3f %9.2f %5.1f%%\n", rows[i].label,
                (unsigned long long)rows[i].calls, rows[i].ms,
                rows[i].calls ? 1000.0 * rows[i].ms / (double)rows[i].calls : 0.0,
                total > 0 ? 100.0 * rows[i].ms / total : 0.0);
    fprintf(stderr, "nexus profile: %-34s %9s %11.3f%s\n", "total", "", total,
            self->dropped ? " (some marks dropped: past the table's limits)" : "");
}
