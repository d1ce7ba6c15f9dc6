/* metrics.h — the counters behind `GET /metrics` (and the `metrics` op): kept by the router
 * thread, which sees every task's end and every residency change, so nothing is shared and
 * nothing is locked. Histograms have fixed buckets and integer counts (cheap to keep); the
 * HTTP front renders them in Prometheus text (nexus/http/http_metrics.c). */
#ifndef NX_METRICS_H
#define NX_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "store.h"

/* Upper bounds (seconds) of the latency buckets; one more bucket, +Inf, follows. */
#define NX_METRICS_BUCKETS 14
extern const double nx_metrics_bounds_s[NX_METRICS_BUCKETS];

typedef enum nx_hist_kind {
    NX_HIST_QUEUE, /* accepted -> started, seconds */
    NX_HIST_SWAP,  /* time spent waiting for the model to load */
    NX_HIST_TTFT,  /* accepted -> first token */
    NX_HIST_TOTAL, /* accepted -> end */
    NX_HIST__COUNT
} nx_hist_kind_t;

typedef struct nx_histogram {
    uint64_t counts[NX_METRICS_BUCKETS + 1]; /* per bucket (not cumulative), the last +Inf */
    uint64_t count;                          /* observations */
    double sum_s;                            /* their sum, seconds */
} nx_histogram_t;

typedef struct nx_agent_metrics {
    uint64_t done, failed, canceled;            /* stages ended, by status */
    uint64_t prompt_tokens, completion_tokens;  /* summed over every ended stage */
} nx_agent_metrics_t;

typedef struct nx_model_metrics {
    char *name;                       /* as in the `models` op */
    uint64_t loads, load_bytes;       /* successful loads and the bytes they moved */
    double load_s;                    /* seconds spent in them */
    uint64_t load_failures;
    uint64_t evictions, evict_bytes;  /* evictions finished (to host or disk) */
    double evict_s;
    double resident_s;                /* seconds resident, closed periods only */
    uint64_t resident_since_ns;       /* nx_now_ns() when it became resident; 0: not resident */
    bool loading;                     /* a "loading" event was seen, no end yet */
} nx_model_metrics_t;

/* The error codes a task request can be refused with before `accepted` (protocol.md). */
#define NX_METRICS_REFUSALS 8
extern const char *const nx_metrics_refusal_codes[NX_METRICS_REFUSALS];

typedef struct nx_metrics {
    nx_agent_metrics_t *agents; /* agent_count, in conf->agents order */
    uint64_t refused[NX_METRICS_REFUSALS]; /* task requests refused, by code (same order) */
    size_t agent_count;
    nx_histogram_t hist[NX_HIST__COUNT]; /* over tasks' stages that ended done */
    nx_model_metrics_t *models;
    size_t model_count, model_cap;
} nx_metrics_t;

/* NX_OK, or NX_ENOMEM. */
int nx_metrics_init(nx_metrics_t *m, size_t agent_count);
void nx_metrics_clear(nx_metrics_t *m);
void nx_metrics_observe(nx_histogram_t *h, double seconds);
/* A stage of agent `agent_index` ended with `status`, its usage and timings (from the
 * executor's FINISHED report). */
void nx_metrics_task_end(nx_metrics_t *m, size_t agent_index, nx_task_status_t status,
                         uint32_t prompt_tokens, uint32_t completion_tokens,
                         const nx_task_timings_t *timings);
/* A task request refused with `code` before it was accepted (codes not in the list: ignored). */
void nx_metrics_refused(nx_metrics_t *m, const char *code);
/* A residency event: the model's new state ("loading", "resident", "evicting", "host",
 * "disk"), its bytes and the ms the load or eviction took. now_ns: nx_now_ns(). */
void nx_metrics_model_event(nx_metrics_t *m, const char *model, const char *state,
                            uint64_t bytes, double ms, uint64_t now_ns);
/* Seconds the model has been resident, the current period included. */
double nx_metrics_resident_s(const nx_model_metrics_t *mm, uint64_t now_ns);

/* The `metrics` reply's body (schemas/protocol.md), written into w after nx_writer_reply. */
void nx_metrics_write(const nx_metrics_t *m, const char *const *agent_names, nx_writer_t *w,
                      uint64_t now_ns);

#endif
