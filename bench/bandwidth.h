/* bandwidth.h — the physical limit the CPU benchmarks print beside their figures: the memory
 * read bandwidth of a plain multi-threaded streaming read over a buffer far larger than the
 * caches, measured in the same run. Header-only: each bench/ file is its own program. */
#ifndef NX_BENCH_BANDWIDTH_H
#define NX_BENCH_BANDWIDTH_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nx_err.h"

#define NX_BENCH_MAX_READ_THREADS 256

typedef struct nx_bench_read_job {
    const uint64_t *words;
    size_t count;
    uint64_t sum; /* keeps the reads from being optimised away */
} nx_bench_read_job_t;

static void *nx_bench_read_words(void *arg)
{
    nx_bench_read_job_t *job = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= job->count; i += 4) { /* hot: a plain streaming read */
        s0 += job->words[i];
        s1 += job->words[i + 1];
        s2 += job->words[i + 2];
        s3 += job->words[i + 3];
    }
    job->sum = s0 ^ s1 ^ s2 ^ s3;
    return NULL;
}

/* Bytes of the buffer: 1 GiB, or 4 x the last-level cache when that is larger. */
static inline size_t nx_bench_bandwidth_bytes(void)
{
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    size_t bytes = 1ull << 30;
    if (l3 > 0 && 4 * (size_t)l3 > bytes)
        bytes = 4 * (size_t)l3;
    return bytes;
}

/* Best of 5 reads of `bytes` split over `threads` threads (1..NX_BENCH_MAX_READ_THREADS), in
 * bytes per second; 0 when the buffer cannot be had. `huge`: the buffer in 2 MiB pages
 * (MADV_HUGEPAGE before it is faulted in), as weights are after nx_region_collapse; else
 * whatever malloc gives (4 KiB pages where THP is `madvise`, as this VM's is). */
static inline double nx_bench_read_bandwidth_pages(uint32_t threads, size_t bytes, bool huge)
{
    if (threads == 0 || threads > NX_BENCH_MAX_READ_THREADS)
        return 0;
    uint64_t *buf = aligned_alloc(2u << 20, (bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20));
    if (!buf)
        return 0;
    if (huge)
        madvise(buf, bytes, MADV_HUGEPAGE);
    memset(buf, 1, bytes); /* fault every page in before timing */
    nx_bench_read_job_t jobs[NX_BENCH_MAX_READ_THREADS];
    pthread_t tids[NX_BENCH_MAX_READ_THREADS];
    size_t per = bytes / sizeof *buf / threads;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t t0 = nx_now_ns();
        for (uint32_t t = 0; t < threads; t++) {
            jobs[t] = (nx_bench_read_job_t){buf + t * per, per, 0};
            pthread_create(&tids[t], NULL, nx_bench_read_words, &jobs[t]);
        }
        for (uint32_t t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
        double seconds = (double)(nx_now_ns() - t0) / 1e9;
        double rate = (double)(per * threads * sizeof *buf) / seconds;
        best = rate > best ? rate : best;
    }
    free(buf);
    return best;
}

static inline double nx_bench_read_bandwidth(uint32_t threads, size_t bytes)
{
    return nx_bench_read_bandwidth_pages(threads, bytes, false);
}

#endif
