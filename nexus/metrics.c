/* metrics.c — the router's counters and histograms (metrics.h), and their `metrics` reply. */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

const double nx_metrics_bounds_s[NX_METRICS_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
};

const char *const nx_metrics_refusal_codes[NX_METRICS_REFUSALS] = {
    "bad_request", "unknown_agent", "model_error",   "busy",
    "storage_full", "storage_error", "shutting_down", "internal",
};

static const char *const hist_names[NX_HIST__COUNT] = {
    [NX_HIST_QUEUE] = "queue", [NX_HIST_SWAP] = "swap", [NX_HIST_TTFT] = "ttft",
    [NX_HIST_TOTAL] = "total",
};

int nx_metrics_init(nx_metrics_t *m, size_t agent_count)
{
    memset(m, 0, sizeof *m);
    m->agents = calloc(agent_count ? agent_count : 1, sizeof *m->agents);
    m->agent_count = agent_count;
    return m->agents ? NX_OK : NX_ENOMEM;
}

void nx_metrics_clear(nx_metrics_t *m)
{
    for (size_t i = 0; i < m->model_count; i++)
        free(m->models[i].name);
    free(m->models);
    free(m->agents);
    memset(m, 0, sizeof *m);
}

void nx_metrics_observe(nx_histogram_t *h, double seconds)
{
    if (!(seconds >= 0)) /* NaN or negative: a clock oddity, counted as 0 */
        seconds = 0;
    size_t b = 0;
    while (b < NX_METRICS_BUCKETS && seconds > nx_metrics_bounds_s[b])
        b++;
    h->counts[b]++;
    h->count++;
    h->sum_s += seconds;
}

void nx_metrics_task_end(nx_metrics_t *m, size_t agent_index, nx_task_status_t status,
                         uint32_t prompt_tokens, uint32_t completion_tokens,
                         const nx_task_timings_t *timings)
{
    if (agent_index >= m->agent_count)
        return;
    nx_agent_metrics_t *a = &m->agents[agent_index];
    a->prompt_tokens += prompt_tokens;
    a->completion_tokens += completion_tokens;
    if (status == NX_TASK_DONE)
        a->done++;
    else if (status == NX_TASK_CANCELED)
        a->canceled++;
    else
        a->failed++;
    if (status != NX_TASK_DONE || !timings)
        return; /* a failed task's timings stop where it failed: they would skew these */
    nx_metrics_observe(&m->hist[NX_HIST_QUEUE], timings->queue_ms / 1000.0);
    nx_metrics_observe(&m->hist[NX_HIST_SWAP], timings->swap_ms / 1000.0);
    nx_metrics_observe(&m->hist[NX_HIST_TTFT], timings->ttft_ms / 1000.0);
    nx_metrics_observe(&m->hist[NX_HIST_TOTAL], timings->total_ms / 1000.0);
}

void nx_metrics_refused(nx_metrics_t *m, const char *code)
{
    for (size_t i = 0; code && i < NX_METRICS_REFUSALS; i++)
        if (strcmp(nx_metrics_refusal_codes[i], code) == 0)
            m->refused[i]++;
}

static nx_model_metrics_t *model_slot(nx_metrics_t *m, const char *name)
{
    for (size_t i = 0; i < m->model_count; i++)
        if (strcmp(m->models[i].name, name) == 0)
            return &m->models[i];
    if (m->model_count == m->model_cap) {
        size_t cap = m->model_cap ? m->model_cap * 2 : 8;
        nx_model_metrics_t *grown = realloc(m->models, cap * sizeof *grown);
        if (!grown)
            return NULL;
        m->models = grown;
        m->model_cap = cap;
    }
    nx_model_metrics_t *mm = &m->models[m->model_count];
    memset(mm, 0, sizeof *mm);
    if (!(mm->name = strdup(name)))
        return NULL;
    m->model_count++;
    return mm;
}

double nx_metrics_resident_s(const nx_model_metrics_t *mm, uint64_t now_ns)
{
    double s = mm->resident_s;
    if (mm->resident_since_ns && now_ns > mm->resident_since_ns)
        s += (double)(now_ns - mm->resident_since_ns) / 1e9;
    return s;
}

void nx_metrics_model_event(nx_metrics_t *m, const char *model, const char *state,
                            uint64_t bytes, double ms, uint64_t now_ns)
{
    nx_model_metrics_t *mm = model_slot(m, model);
    if (!mm)
        return; /* out of memory: a lost sample, never a lost task */
    bool resident = strcmp(state, "resident") == 0;
    if (!resident && mm->resident_since_ns) { /* leaving residency closes the period */
        mm->resident_s = nx_metrics_resident_s(mm, now_ns);
        mm->resident_since_ns = 0;
    }
    if (strcmp(state, "loading") == 0) {
        mm->loading = true;
    } else if (resident) {
        mm->loads++;
        mm->load_bytes += bytes;
        mm->load_s += ms / 1000.0;
        mm->loading = false;
        mm->resident_since_ns = now_ns;
    } else if (strcmp(state, "host") == 0 || strcmp(state, "disk") == 0) {
        if (mm->loading) { /* a load that ended without making it resident */
            mm->load_failures++;
            mm->loading = false;
        } else {
            mm->evictions++;
            mm->evict_bytes += bytes;
            mm->evict_s += ms / 1000.0;
        }
    }
}

void nx_metrics_write(const nx_metrics_t *m, const char *const *agent_names, nx_writer_t *w,
                      uint64_t now_ns)
{
    nx_writer_array_open(w, "bounds_s");
    for (size_t b = 0; b < NX_METRICS_BUCKETS; b++)
        nx_writer_real(w, NULL, nx_metrics_bounds_s[b]);
    nx_writer_array_close(w);
    nx_writer_map_open(w, "histograms");
    for (size_t k = 0; k < NX_HIST__COUNT; k++) {
        const nx_histogram_t *h = &m->hist[k];
        nx_writer_map_open(w, hist_names[k]);
        nx_writer_array_open(w, "counts");
        for (size_t b = 0; b <= NX_METRICS_BUCKETS; b++)
            nx_writer_uint(w, NULL, h->counts[b]);
        nx_writer_array_close(w);
        nx_writer_uint(w, "count", h->count);
        nx_writer_real(w, "sum_s", h->sum_s);
        nx_writer_map_close(w);
    }
    nx_writer_map_close(w);
    nx_writer_array_open(w, "agents");
    for (size_t i = 0; i < m->agent_count; i++) {
        const nx_agent_metrics_t *a = &m->agents[i];
        nx_writer_map_open(w, NULL);
        nx_writer_str(w, "name", agent_names[i]);
        nx_writer_uint(w, "done", a->done);
        nx_writer_uint(w, "failed", a->failed);
        nx_writer_uint(w, "canceled", a->canceled);
        nx_writer_uint(w, "prompt_tokens", a->prompt_tokens);
        nx_writer_uint(w, "completion_tokens", a->completion_tokens);
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
    nx_writer_map_open(w, "refused");
    for (size_t i = 0; i < NX_METRICS_REFUSALS; i++)
        nx_writer_uint(w, nx_metrics_refusal_codes[i], m->refused[i]);
    nx_writer_map_close(w);
    nx_writer_array_open(w, "models");
    for (size_t i = 0; i < m->model_count; i++) {
        const nx_model_metrics_t *mm = &m->models[i];
        nx_writer_map_open(w, NULL);
        nx_writer_str(w, "name", mm->name);
        nx_writer_uint(w, "loads", mm->loads);
        nx_writer_uint(w, "load_bytes", mm->load_bytes);
        nx_writer_real(w, "load_s", mm->load_s);
        nx_writer_uint(w, "load_failures", mm->load_failures);
        nx_writer_uint(w, "evictions", mm->evictions);
        nx_writer_uint(w, "evict_bytes", mm->evict_bytes);
        nx_writer_real(w, "evict_s", mm->evict_s);
        nx_writer_real(w, "resident_s", nx_metrics_resident_s(mm, now_ns));
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
}
