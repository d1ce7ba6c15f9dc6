/* exec.h — the executor: one thread that owns the device: the pool, the loader and its host
 * cache, the engine of every resident model and every running sequence. It schedules the
 * tasks it is given (per-agent queues; running tasks of one model advance together through
 * nx_engine_step; different resident models interleave fairly, one step each in turn), and it
 * is the residency manager: it decides loads (on a loader thread of its own, so that resident
 * models keep being served) and evictions (never pinned, never with running tasks; lowest
 * priority first, then the cost reload_ms x recent_use / bytes; or plain LRU for comparison;
 * a model starved past NX__SWAP_WAIT_MS makes the models in its way stop admitting, to drain),
 * unloads models idle past keep_alive, and prefetches the next agent's model of a pipeline.
 *
 * Other threads talk to it only through these functions, which queue a message and return at
 * once; it reports back through the report callback (called on the executor's threads; the
 * callback must only queue the report, e.g. into the router's nx_mailbox).
 */
#ifndef NX_EXEC_H
#define NX_EXEC_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "nx_engine.h"
#include "proto.h"
#include "store.h"

typedef struct nx_exec nx_exec_t;

typedef enum nx_policy {
    NX_POLICY_COST = 0, /* the documented policy */
    NX_POLICY_LRU,      /* plain least-recently-used, for bench/swap's comparison */
} nx_policy_t;

/* A task for one agent (one stage of a pipeline). Ownership passes with nx_exec_submit. */
typedef struct nx_exec_task {
    int64_t task_id;
    const nx_agent_conf_t *agent; /* borrowed from the daemon's config */
    char *input;                  /* the user's text for this stage */
    nx_chat_msg_t *history;       /* session turns before it, oldest first (owned, may be 0) */
    size_t history_count;
    nx_sampling_t sampling;       /* the agent's settings with the task's params applied */
    char **stop_owned;            /* storage for sampling.stop when the task brought its own */
    size_t stop_owned_count;
    bool stream;                  /* report NX_REPORT_TOKEN pieces */
    uint64_t accepted_ns;         /* nx_now_ns() when accepted: queue_ms counts from here */
    const char *next_model;       /* a later stage's model dir to prefetch, or NULL */
    struct nx_typed *output;      /* the output constraint (typed.h; a reference the task
                                     owns), or NULL: decoding follows its grammar */
    struct nx_toolset *tools;     /* the tools (toolset.h; a reference the task owns), or
                                     NULL: rendered into the prompt, the calls decoded under
                                     their plan. Never together with output. */
    bool no_input;                /* no new user turn: the prompt ends with the history (tool
                                     results to answer) */
} nx_exec_task_t;

void nx_exec_task_free(nx_exec_task_t *task);

typedef enum nx_report_kind {
    NX_REPORT_STARTED,     /* task_id: admitted to a sequence (status running) */
    NX_REPORT_TOKEN,       /* task_id, text: a streamed piece */
    NX_REPORT_FINISHED,    /* task_id, status, text (output) or error_code/message, usage, timings */
    NX_REPORT_MODEL,       /* model, state, bytes, ms, reason: a residency change */
    NX_REPORT_COMMAND,     /* command_id, error_code (NULL = ok), message, model, state */
} nx_report_kind_t;

typedef struct nx_report {
    nx_report_kind_t kind;
    int64_t task_id;
    uint64_t command_id;
    nx_task_status_t status; /* FINISHED: DONE, FAILED or CANCELED */
    char *text;              /* token piece or output (owned) */
    const char *error_code;  /* static protocol code, or NULL */
    char *message;           /* owned, or NULL */
    uint32_t prompt_tokens, completion_tokens;
    uint32_t turns_dropped;  /* FINISHED: older session turns left out so the prompt fit */
    const char *stop_reason; /* FINISHED done: why generation stopped (nx_gen_stop_reason:
                                "eos", "stop", "length"; static), or NULL */
    nx_task_timings_t timings;
    char model[128];
    char state[16];          /* disk|host|loading|resident|evicting */
    uint64_t bytes;
    double ms;
    char reason[32];         /* pressure|keep_alive|request|prefetch|task */
} nx_report_t;

void nx_report_free(nx_report_t *report);

typedef void (*nx_report_fn)(void *user, nx_report_t *report); /* takes ownership */

typedef struct nx_exec_opts {
    const nx_nexus_conf_t *conf; /* borrowed; outlives the executor */
    nx_policy_t policy;
    nx_report_fn report;
    void *report_user;
} nx_exec_opts_t;

/* Reserve the pool and the host cache on conf->device, size-check every agent's model (a
 * model larger than the pool is NX_EPOOLFULL naming the model and both sizes), pin and
 * preload pinned models, and start the executor's threads. Caller owns the result. */
nx_exec_t *nx_exec_new(const nx_exec_opts_t *opts, nx_err_t *err);
/* Stop: queued and running tasks finish with "shutting_down"; models are unloaded. */
void nx_exec_destroy(nx_exec_t **self_p);

/* Queue a task (takes ownership; the router has already checked the agent's queue limit). */
void nx_exec_submit(nx_exec_t *self, nx_exec_task_t *task);
/* Cancel a queued or running task: it ends with a FINISHED report, status CANCELED. */
void nx_exec_cancel(nx_exec_t *self, int64_t task_id);
/* load / evict / pin / unpin a model (its directory name as in the status); answered by one
 * NX_REPORT_COMMAND with command_id (a load answers when resident). */
void nx_exec_command(nx_exec_t *self, nx_op_t op, const char *model, uint64_t command_id);

typedef struct nx_model_status {
    char name[128];       /* model folder or file name; Org/Name[@REV] for a hub model */
    char path[512];
    char source[16];      /* folder | path | pulled | hf-cache */
    char state[16];
    uint64_t bytes;
    bool pinned;
    int priority;
    double last_used_ms_ago; /* -1 when never used */
    uint32_t loads;
    double last_swap_ms;  /* the last load's ms, -1 when none */
    uint32_t queue, running;
    char error[1200];     /* why it cannot serve tasks: its files did not open at start, or its
                             last load failed (until a load succeeds); "" when fine */
} nx_model_status_t;

typedef struct nx_exec_status {
    nx_pool_stats_t pool;
    nx_hostcache_stats_t host_cache;
    nx_model_status_t *models; /* model_count, malloc'ed: free with nx_exec_status_clear */
    size_t model_count;
} nx_exec_status_t;

/* Whether agent's model is known to be broken (nx_model_status_t.error): then its tasks are
 * refused at once rather than accepted to fail. Copies the reason into why (cap bytes).
 * Callable from any thread (the status lock). */
bool nx_exec_model_broken(nx_exec_t *self, const nx_agent_conf_t *agent, char *why,
                          size_t cap);

/* The tokenizer of agent's model and the chat template its prompts use (the agent's, or what
 * auto means for the model), for the router's checks that need them (tools): both are fixed
 * when the executor starts and kept, immutable, while it lives, so any thread may read them.
 * NULL when the agent is unknown or its model could not be read. */
const nx_tokenizer_t *nx_exec_agent_tokenizer(nx_exec_t *self, const nx_agent_conf_t *agent,
                                              nx_chat_kind_t *kind_out);

/* A consistent snapshot, callable from any thread (it takes the executor's status lock). */
int nx_exec_status(nx_exec_t *self, nx_exec_status_t *out, nx_err_t *err);
void nx_exec_status_clear(nx_exec_status_t *status);

#endif
