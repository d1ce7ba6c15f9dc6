/* tool_conf.c — the config loaders from the command line, for the Python tests:
 *
 *   tool_conf nexus FILE   nx_nexus_conf_load (agents folder and cross-file rules included)
 *   tool_conf agent FILE   nx_agent_conf_load (one file on its own)
 *
 * Exit 0 printing the parsed config as JSON on stdout, 1 printing the error (its code name, then
 * the message) on stderr, 2 on a usage error.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *agent_json(const nx_agent_conf_t *a)
{
    const nx_sampling_t *g = &a->generation;
    json_t *stop = json_array();
    for (size_t i = 0; i < g->stop_count; i++)
        json_array_append_new(stop, json_string(g->stop[i]));
    char seed[24]; /* a JSON string: jansson's integers stop at INT64_MAX */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    json_t *gen = json_pack("{s:i, s:f, s:f, s:i, s:f, s:f, s:s, s:o, s:i}", "max_tokens",
                            (int)g->max_tokens, "temperature", (double)g->temperature, "top_p",
                            (double)g->top_p, "top_k", (int)g->top_k, "min_p", (double)g->min_p,
                            "repetition_penalty", (double)g->repetition_penalty, "seed",
                            seed, "stop", stop, "thinking", a->thinking);
    json_t *res = json_pack("{s:b, s:i, s:I}", "pin", a->pin, "priority", a->priority,
                            "keep_alive_s", (json_int_t)a->keep_alive_s);
    json_t *mem = json_pack("{s:s, s:I}", "type", a->memory_session ? "session" : "none", "turns",
                            (json_int_t)a->memory_turns);
    json_t *lim = json_pack("{s:I, s:I}", "queue", (json_int_t)a->queue_limit, "timeout_ms",
                            (json_int_t)a->timeout_ms);
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:s, s:s}", "name",
                     a->name, "description", a->description, "model", a->model, "model_path",
                     str_or_null(a->model_path), "system_prompt", str_or_null(a->system_prompt),
                     "chat_template", nx_chat_kind_name(a->chat_template), "generation", gen,
                     "residency", res, "memory", mem, "next", str_or_null(a->next), "limits", lim,
                     "source_path", a->source_path, "hash", a->hash);
}

static json_t *nexus_json(const nx_nexus_conf_t *c)
{
    json_t *agents = json_array();
    for (size_t i = 0; i < c->agent_count; i++)
        json_array_append_new(agents, agent_json(&c->agents[i]));
    json_t *curve = c->curve_secret_key
                        ? json_pack("{s:s, s:s}", "secret_key", c->curve_secret_key, "clients",
                                    c->curve_clients)
                        : json_null();
    json_t *http = json_null();
    if (c->http_enabled) {
        json_t *keys = json_array();
        for (size_t i = 0; i < c->http_api_key_count; i++)
            json_array_append_new(keys, json_string(c->http_api_keys[i]));
        http = json_pack("{s:s, s:I, s:o, s:I, s:I}", "host", c->http_host, "port",
                         (json_int_t)c->http_port, "api_keys", keys, "idle_timeout_s",
                         (json_int_t)c->http_idle_timeout_s, "max_connections",
                         (json_int_t)c->http_max_connections);
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:f, s:I, s:I, s:I, s:I, s:I, "
                     "s:I, s:o, s:o, s:o}",
                     "source_path", c->source_path, "home", c->home, "listen", c->listen, "events",
                     c->events, "agents_dir", c->agents_dir, "models_dir", c->models_dir, "device",
                     nx_device_name(c->device), "pool_bytes", (json_int_t)c->pool_bytes,
                     "pool_fraction", c->pool_fraction, "host_cache_bytes",
                     (json_int_t)c->host_cache_bytes, "max_message_bytes",
                     (json_int_t)c->max_message_bytes, "max_message_hard_bytes",
                     (json_int_t)c->max_message_hard_bytes, "send_hwm", (json_int_t)c->send_hwm,
                     "max_batch", (json_int_t)c->max_batch,
                     "context", (json_int_t)c->context, "curve", curve, "http", http,
                     "agents", agents);
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "nexus") != 0 && strcmp(argv[1], "agent") != 0)) {
        fprintf(stderr, "usage: tool_conf nexus|agent FILE\n");
        return 2;
    }
    nx_err_t err = {0};
    json_t *out = NULL;
    int rc;
    if (strcmp(argv[1], "nexus") == 0) {
        nx_nexus_conf_t *c = NULL;
        if ((rc = nx_nexus_conf_load(argv[2], &c, &err)) == NX_OK)
            out = nexus_json(c);
        nx_nexus_conf_free(&c);
    } else {
        nx_agent_conf_t *a = NULL;
        if ((rc = nx_agent_conf_load(argv[2], &a, &err)) == NX_OK)
            out = agent_json(a);
        nx_agent_conf_free(&a);
    }
    if (rc != NX_OK) {
        fprintf(stderr, "%s: %s\n", nx_errname(rc), err.msg);
        return 1;
    }
    if (!out) {
        fprintf(stderr, "ENOMEM: cannot build the JSON\n");
        return 1;
    }
    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    fputc('\n', stdout);
    json_decref(out);
    return 0;
}
