/* http_metrics.c — GET /metrics: the router's `status` and `metrics` replies rendered in the
 * Prometheus text exposition format (version 0.0.4). Names follow Prometheus' conventions:
 * nexus_ prefix, base units in the name (_seconds, _bytes), counters end in _total.
 * README: OpenAI-compatible HTTP lists every family. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"
#include "metrics.h"
#include "nx_err.h"

static const char *const model_states[] = {"disk", "host", "loading", "resident", "evicting"};

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format wants (backslash, quote, newline). */
static void label_value(FILE *f, const msgpack_object *o)
{
    fputc('"', f);
    for (uint32_t i = 0; o && o->type == MSGPACK_OBJECT_STR && i < o->via.str.size; i++) {
        char ch = o->via.str.ptr[i];
        if (ch == '\\' || ch == '"')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void sample(FILE *f, const char *name, const char *label, const msgpack_object *value_of,
                   const char *label2, const char *value2, double value)
{
    fputs(name, f);
    if (label) {
        fprintf(f, "{%s=", label);
        label_value(f, value_of);
        if (label2)
            fprintf(f, ",%s=\"%s\"", label2, value2);
        fputc('}', f);
    }
    fprintf(f, " %.17g\n", value);
}

static const msgpack_object *array_of(const msgpack_object *map, const char *key)
{
    const msgpack_object *a = nx__mp_get(map, key);
    return a && a->type == MSGPACK_OBJECT_ARRAY ? a : NULL;
}

/* Per-item samples of one family: for each map in `items`, its `field` under label `label`. */
static void per_item(FILE *f, const msgpack_object *items, const char *name, const char *type,
                     const char *help, const char *label, const char *field, double scale)
{
    family(f, name, type, help);
    for (uint32_t i = 0; items && i < items->via.array.size; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        sample(f, name, label, nx__mp_get(it, "name"), NULL, NULL,
               nx__mp_real(nx__mp_get(it, field)) * scale);
    }
}

static void histogram(FILE *f, const msgpack_object *metrics, const char *key, const char *name,
                      const char *help)
{
    const msgpack_object *h = nx__mp_get(nx__mp_get(metrics, "histograms"), key);
    const msgpack_object *counts = array_of(h, "counts");
    const msgpack_object *bounds = array_of(metrics, "bounds_s");
    family(f, name, "histogram", help);
    uint64_t cumulative = 0;
    size_t n = bounds ? bounds->via.array.size : 0;
    for (size_t b = 0; b < n; b++) {
        if (counts && b < counts->via.array.size)
            cumulative += (uint64_t)nx__mp_int(&counts->via.array.ptr[b]);
        fprintf(f, "%s_bucket{le=\"%.17g\"} %llu\n", name, nx__mp_real(&bounds->via.array.ptr[b]),
                (unsigned long long)cumulative);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name,
            (unsigned long long)nx__mp_int(nx__mp_get(h, "count")));
    fprintf(f, "%s_sum %.17g\n", name, nx__mp_real(nx__mp_get(h, "sum_s")));
    fprintf(f, "%s_count %llu\n", name, (unsigned long long)nx__mp_int(nx__mp_get(h, "count")));
}

static void task_families(FILE *f, const msgpack_object *metrics, const msgpack_object *status)
{
    const msgpack_object *agents = array_of(metrics, "agents");
    static const char *const statuses[] = {"done", "failed", "canceled"};
    family(f, "nexus_tasks_total", "counter",
           "Task stages ended, by agent and status (failed includes every error code).");
    for (uint32_t i = 0; agents && i < agents->via.array.size; i++)
        for (size_t s = 0; s < 3; s++)
            sample(f, "nexus_tasks_total", "agent", nx__mp_get(&agents->via.array.ptr[i], "name"),
                   "status", statuses[s],
                   nx__mp_real(nx__mp_get(&agents->via.array.ptr[i], statuses[s])));
    per_item(f, agents, "nexus_prompt_tokens_total", "counter",
             "Prompt tokens read (tokens in), by agent.", "agent", "prompt_tokens", 1);
    per_item(f, agents, "nexus_completion_tokens_total", "counter",
             "Tokens generated (tokens out), by agent.", "agent", "completion_tokens", 1);
    const msgpack_object *refused = nx__mp_get(metrics, "refused");
    family(f, "nexus_task_refusals_total", "counter",
           "Task requests answered with an error instead of accepted, by code.");
    for (uint32_t i = 0; refused && refused->type == MSGPACK_OBJECT_MAP &&
                         i < refused->via.map.size; i++)
        sample(f, "nexus_task_refusals_total", "code", &refused->via.map.ptr[i].key, NULL,
               NULL, nx__mp_real(&refused->via.map.ptr[i].val));
    const msgpack_object *live = array_of(status, "agents");
    per_item(f, live, "nexus_agent_queued_tasks", "gauge", "Tasks waiting, by agent.", "agent",
             "queue", 1);
    per_item(f, live, "nexus_agent_running_tasks", "gauge", "Tasks running, by agent.", "agent",
             "running", 1);
    histogram(f, metrics, "queue", "nexus_task_queue_seconds",
              "From accepted to started, for tasks that ended done.");
    histogram(f, metrics, "swap", "nexus_task_swap_seconds",
              "Time a task waited for its model to be loaded.");
    histogram(f, metrics, "ttft", "nexus_task_ttft_seconds",
              "From accepted to the first token.");
    histogram(f, metrics, "total", "nexus_task_duration_seconds",
              "From accepted to the end (total latency).");
}

static void model_families(FILE *f, const msgpack_object *metrics, const msgpack_object *status)
{
    const msgpack_object *models = array_of(status, "models");
    family(f, "nexus_models", "gauge", "Models by residency state.");
    for (size_t s = 0; s < sizeof model_states / sizeof model_states[0]; s++) {
        unsigned count = 0;
        for (uint32_t i = 0; models && i < models->via.array.size; i++) {
            const msgpack_object *st = nx__mp_get(&models->via.array.ptr[i], "state");
            count += st && st->type == MSGPACK_OBJECT_STR &&
                     st->via.str.size == strlen(model_states[s]) &&
                     memcmp(st->via.str.ptr, model_states[s], st->via.str.size) == 0;
        }
        fprintf(f, "nexus_models{state=\"%s\"} %u\n", model_states[s], count);
    }
    per_item(f, models, "nexus_model_size_bytes", "gauge", "A model's weight bytes.", "model",
             "bytes", 1);
    const msgpack_object *counted = array_of(metrics, "models");
    per_item(f, counted, "nexus_model_loads_total", "counter", "Loads that made the model "
             "resident.", "model", "loads", 1);
    per_item(f, counted, "nexus_model_load_bytes_total", "counter", "Bytes those loads moved.",
             "model", "load_bytes", 1);
    per_item(f, counted, "nexus_model_load_seconds_total", "counter", "Seconds spent loading.",
             "model", "load_s", 1);
    per_item(f, counted, "nexus_model_load_failures_total", "counter", "Loads that failed.",
             "model", "load_failures", 1);
    per_item(f, counted, "nexus_model_evictions_total", "counter", "Evictions (to the host "
             "cache or to disk).", "model", "evictions", 1);
    per_item(f, counted, "nexus_model_evicted_bytes_total", "counter", "Bytes evicted.",
             "model", "evict_bytes", 1);
    per_item(f, counted, "nexus_model_eviction_seconds_total", "counter",
             "Seconds spent evicting.", "model", "evict_s", 1);
    per_item(f, counted, "nexus_model_resident_seconds_total", "counter",
             "Seconds the model has been resident.", "model", "resident_s", 1);
}

static void gauge(FILE *f, const char *name, const char *help, const msgpack_object *map,
                  const char *key)
{
    family(f, name, "gauge", help);
    fprintf(f, "%s %.17g\n", name, nx__mp_real(nx__mp_get(map, key)));
}

char *nx__metrics_render(const msgpack_object *status, const msgpack_object *metrics,
                         nx_http_t *http)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    task_families(f, metrics, status);
    model_families(f, metrics, status);
    const msgpack_object *pool = nx__mp_get(status, "pool");
    const msgpack_object *cache = nx__mp_get(status, "host_cache");
    gauge(f, "nexus_pool_used_bytes", "Device pool bytes in use.", pool, "used_bytes");
    gauge(f, "nexus_pool_total_bytes", "Device pool size.", pool, "total_bytes");
    gauge(f, "nexus_host_cache_used_bytes", "Pinned host tier bytes in use.", cache,
          "used_bytes");
    gauge(f, "nexus_host_cache_total_bytes", "Pinned host tier budget.", cache, "budget_bytes");
    const msgpack_object *router = nx__mp_get(metrics, "router");
    gauge(f, "nexus_tasks_in_flight", "Tasks accepted and not yet answered.", router, "jobs");
    gauge(f, "nexus_replies_held", "Replies waiting for clients that read slowly.", router,
          "replies_held");
    family(f, "nexus_replies_dropped_total", "counter", "Replies never sent (client gone).");
    fprintf(f, "nexus_replies_dropped_total %.17g\n",
            nx__mp_real(nx__mp_get(router, "replies_dropped")));
    if (http)
        nx__http_write_requests(http, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

enum MHD_Result nx__metrics_get(nx_http_t *http, struct MHD_Connection *c)
{
    nx__link_t status, metrics;
    int rs = nx__link_open(&status, http, -1), rm = nx__link_open(&metrics, http, -1);
    char *text = NULL;
    if (rs == NX_OK && rm == NX_OK && nx__link_call(&status, "status", 5000) == NX__WAIT_OK &&
        nx__link_op_is(&status, "status") &&
        nx__link_call(&metrics, "metrics", 5000) == NX__WAIT_OK &&
        nx__link_op_is(&metrics, "metrics"))
        text = nx__metrics_render(&status.reply.data, &metrics.reply.data, http);
    nx__link_close(&status);
    nx__link_close(&metrics);
    if (!text)
        return nx__http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              "the router did not answer");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}
