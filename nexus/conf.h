/* conf.h — the daemon's configuration: nexus.yaml and one YAML file per agent (libyaml),
 * validated with errors that name the file, line, column and field and say what was expected.
 * schemas/nexus.schema.json and schemas/agent.schema.json state the same rules for editors;
 * tests check that both give the same verdict on good and bad examples.
 */
#ifndef NX_CONF_H
#define NX_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_engine.h"
#include "nx_loader.h"
#include "modelstore.h"

typedef struct nx_agent_conf {
    char *name;          /* unique; [A-Za-z0-9_.-]{1,64} */
    char *description;   /* may be "" */
    char *model;         /* as written: a name under models, Org/Name[@REV], or a path */
    char *model_path;    /* resolved absolute folder or .gguf file (nx_ms_resolve) */
    nx_ms_source_t model_source; /* where model_path was found */
    char *system_prompt; /* may be NULL */
    nx_chat_kind_t chat_template; /* auto by default */
    int thinking;        /* -1 default, 0 off, 1 on (generation.thinking) */
    nx_sampling_t generation;     /* defaults: nx_sampling_default(); stop strings owned here */
    char **stop_owned;   /* storage behind generation.stop */
    bool pin;            /* residency.pin */
    int priority;        /* residency.priority, higher stays longer; default 0, -100..100 */
    uint32_t keep_alive_s; /* residency.keep_alive; 0 = forever */
    bool memory_session; /* memory: session */
    uint32_t memory_turns; /* turn limit for session memory (default 20) */
    char *next;          /* the agent that receives this agent's output, or NULL */
    char *output_schema; /* output_schema as canonical JSON text (compact), or NULL: answers
                            are decoded under it (typed.h) */
    bool output_strict;  /* output_strict: additionalProperties false unless given */
    char *input_schema;  /* input_schema as canonical JSON text, or NULL: a task's input must
                            be JSON valid under it */
    char **tools;        /* tool_count agents this agent may call as function tools (its
                            answer's calls run them as child tasks), or NULL */
    size_t tool_count;
    uint32_t tool_steps; /* limits.tool_steps: rounds of agent calls in one task, default 8 */
    uint32_t queue_limit; /* limits.queue, default 64 */
    uint32_t timeout_ms;  /* limits.timeout (seconds in YAML), default 300 s */
    char *source_path;   /* the YAML file */
    char hash[17];       /* xxh3-64 hex of the file's bytes */
} nx_agent_conf_t;

typedef struct nx_nexus_conf {
    char *source_path;     /* the nexus.yaml read ("" for built-in defaults) */
    char *home;            /* data folder (database, keys); default ./var */
    char *listen;          /* default tcp://127.0.0.1:5555 */
    char *events;          /* default tcp://127.0.0.1:5556 */
    char *agents_dir;      /* default <dir of nexus.yaml>/agents */
    char *models_dir;      /* default <home>/models */
    nx_device_kind_t device; /* auto by default */
    uint64_t pool_bytes;   /* pool: "8GiB" / 8589934592; 0 when given as a percent */
    double pool_fraction;  /* pool: "80%" -> 0.8; default 0.8 */
    uint64_t host_cache_bytes; /* host_cache; default 0 (off) */
    uint32_t max_message_bytes; /* default 1 MiB */
    uint64_t max_message_hard_bytes; /* larger frames are not read: the connection closes;
                                        default 64 MiB (max_message_bytes if larger) */
    uint32_t send_hwm;     /* replies ZeroMQ queues per client (ZMQ_SNDHWM), default 100000 */
    uint32_t max_batch;    /* sequences per model per step, default 16 */
    uint32_t context;      /* KV tokens per sequence, default 2048 */
    char *curve_secret_key; /* curve.secret_key: certificate file, or NULL */
    char *curve_clients;    /* curve.clients: folder of allowed public certificates */
    /* http: the OpenAI-compatible HTTP front (nexus/http/), off unless the key is present */
    bool http_enabled;
    char *http_host;        /* http.listen's host (an IP literal or localhost), default 127.0.0.1 */
    uint16_t http_port;     /* http.listen's port, default 8080; 0: a free port (logged) */
    char **http_api_keys;   /* http.api_keys: http_api_key_count bearer tokens, or NULL (none) */
    size_t http_api_key_count;
    uint32_t http_idle_timeout_s;   /* http.idle_timeout: an idle connection closes (30 s) */
    uint32_t http_max_connections;  /* http.max_connections, default 64 */
    nx_agent_conf_t *agents; /* agent_count of them, sorted by name */
    size_t agent_count;
} nx_nexus_conf_t;

/* Read nexus.yaml at `path` and every *.yaml / *.yml in its agents folder. Relative paths in
 * the file are relative to the file's folder. Errors: NX_EFORMAT with "FILE:LINE:COL: field
 * 'x.y': expected ..., got ..." (unknown keys are errors too, so typos are caught); an agent
 * whose model directory does not exist or whose `next` names no agent is an error naming the
 * agent's file, and so is a hub name (Org/Name[@REV]) found neither in the models folder nor
 * in the Hugging Face cache (with the `nexusctl pull` to run). Caller owns *out
 * (nx_nexus_conf_free). */
int nx_nexus_conf_load(const char *path, nx_nexus_conf_t **out, nx_err_t *err);
void nx_nexus_conf_free(nx_nexus_conf_t **conf_p);

/* nexus.yaml alone, as nx_nexus_conf_load reads it but without the agents folder (agent_count
 * 0): what nexusctl needs to find the models folder even while an agent file is broken. */
int nx_nexus_conf_read(const char *path, nx_nexus_conf_t **out, nx_err_t *err);

/* Validate one agent file on its own (no cross-agent checks, no model directory check):
 * what `nexusd --check-agent FILE` runs. Caller owns *out (nx_agent_conf_free). */
int nx_agent_conf_load(const char *path, nx_agent_conf_t **out, nx_err_t *err);
void nx_agent_conf_free(nx_agent_conf_t **agent_p);

/* Whether an HTTP host (http.listen's host part) is a loopback address: 127.0.0.0/8, ::1 or
 * localhost. Anything else needs http.api_keys. */
bool nx_http_host_is_loopback(const char *host);

/* The agent named `name`, or NULL. */
const nx_agent_conf_t *nx_nexus_conf_agent(const nx_nexus_conf_t *conf, const char *name);

/* True when `endpoint` is loopback-only (tcp://127.x, tcp://localhost, tcp://[::1], ipc://,
 * inproc://), so CURVE is not required. */
bool nx_endpoint_is_loopback(const char *endpoint);

#endif
