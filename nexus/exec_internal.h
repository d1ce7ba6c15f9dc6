/* exec_internal.h — what the executor's three files share: exec.c (the thread, its inbox,
 * reports and the status snapshot), sched.c (queues, admission, stepping) and residency.c
 * (model states, the loader thread, evictions, keep_alive, prefetch). Everything here is
 * touched by the executor thread only, except the inboxes and the status copy (locked).
 */
#ifndef NX_EXEC_INTERNAL_H
#define NX_EXEC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "exec.h"
#include "mailbox.h"

typedef enum nx__mstate {
    NX__DISK,
    NX__HOST,
    NX__LOADING,
    NX__RESIDENT,
    NX__EVICTING,
} nx__mstate_t;

const char *nx__mstate_name(nx__mstate_t state);

typedef struct nx__model nx__model_t;
typedef struct nx__vocab nx__vocab_t; /* exec_typed.c: a token trie of the model's tokenizer */
typedef struct nx__shared nx__shared_t; /* exec_typed.c: a matcher the model's jobs share */

/* One task inside the executor: queued on its agent's FIFO, then running on a sequence. */
typedef struct nx__job {
    nx_exec_task_t *task;
    struct nx_exec *exec;
    nx__model_t *model;
    size_t agent_index;
    int32_t *prompt;          /* the rendered, tokenized prompt */
    size_t prompt_len;
    uint32_t turns_dropped;   /* older session turns left out of the prompt to fit */
    int32_t stop_ids[32];
    size_t stop_id_count;
    nx_seq_t *seq;            /* while running */
    nx_gen_t *gen;
    nx__shared_t *shared;     /* the shared matcher its generation uses, or NULL */
    uint64_t wait_since_ns;   /* waiting for its model's load since (0: not waiting) */
    double swap_ms;           /* total time waited for loads */
    uint64_t admitted_ns, first_token_ns;
    struct nx__job *next;
} nx__job_t;

typedef struct nx__pending_cmd {
    uint64_t id;
    nx_op_t op; /* NX_OP_LOAD (answered at resident) or NX_OP_EVICT (at host/disk) */
} nx__pending_cmd_t;

struct nx__model {
    char name[128];          /* the folder's or file's name; for a hub model the agent's
                                `model:` as written (Org/Name[@REV]) */
    char path[512];          /* absolute folder or .gguf file */
    char source[16];         /* where it came from: nx_ms_source_name */
    nx__mstate_t state;
    uint64_t weight_bytes;   /* pool bytes of its weights, chunk-rounded; 0 when unreadable */
    uint64_t engine_bytes;   /* pool bytes its engine takes besides (CUDA scratch), rounded */
    uint64_t kv_bytes;       /* pool bytes of one sequence's KV of conf->context tokens */
    nx_model_config_t config;
    nx_tokenizer_t *tok;     /* loaded at start, kept while the executor lives */
    nx_chat_kind_t chat_kind; /* what auto means for this model */
    char error[1200];        /* why it could not be read at start; "" when fine */
    char load_error[1200];   /* why its last load failed; "" once a load succeeds */
    nx_model_t *weights;     /* while resident */
    nx_engine_t *engine;
    bool pinned;             /* sticky pin (from the config, or pin/unpin commands) */
    int priority;            /* max of its agents' residency.priority */
    uint32_t keep_alive_s;   /* max of its agents' keep_alive; 0 = forever */
    uint32_t agent_refs;     /* agents bound to it */
    double recent_use;       /* exponentially decayed task count ... */
    uint64_t recent_at_ns;   /* ... as of this time */
    uint64_t last_used_ns;   /* 0 = never */
    double reload_ms;        /* the last load's ms, or 0 when never loaded */
    uint32_t loads;
    double last_swap_ms;     /* -1 when never loaded */
    uint64_t idle_since_ns;  /* no queued or running task since */
    uint64_t wanted_since_ns; /* non-resident with demand since (0: no demand) */
    uint64_t load_started_ns;
    const char *load_reason;  /* "task", "request", "pin", "prefetch" */
    const char *evict_reason; /* "pressure", "keep_alive", "request" */
    bool want_load;          /* a load command or a pin waits for residency */
    bool prefetch;           /* a pipeline's next stage: load when it fits without evicting */
    nx__pending_cmd_t *cmds; /* commands answered at a state change */
    size_t cmd_count, cmd_cap;
    nx__job_t *running;      /* running jobs (a list) */
    uint32_t running_count;
    uint32_t queued;         /* jobs in its agents' queues */
    size_t rr_agent;         /* admission round robin over agent queues */
    bool draining;           /* admits no new sequence: a starved model needs its room */
    nx__vocab_t *vocabs;     /* token tries for constrained tasks, built on first use */
    nx__shared_t *shared;    /* matchers shared by its constrained jobs, one per grammar */
};

typedef struct nx__agentq {
    const nx_agent_conf_t *agent;
    nx__model_t *model;
    nx__job_t *head, *tail;
} nx__agentq_t;

typedef enum nx__msg_kind {
    NX__MSG_SUBMIT,
    NX__MSG_CANCEL,
    NX__MSG_COMMAND,
    NX__MSG_STOP,
    NX__MSG_LOADED,  /* from the loader thread */
    NX__MSG_EVICTED, /* from the loader thread */
} nx__msg_kind_t;

/* A message into the executor's inbox (or, for LOADED/EVICTED as jobs, into the loader's). */
typedef struct nx__msg {
    nx__msg_kind_t kind;
    nx_exec_task_t *task;   /* SUBMIT (owned) */
    int64_t task_id;        /* CANCEL */
    nx_op_t op;             /* COMMAND */
    uint64_t command_id;
    char model[512];        /* COMMAND: the name given */
    nx__model_t *target;    /* LOADED / EVICTED */
    nx_model_t *weights;    /* LOADED: the result; EVICTED job: what to unload */
    nx_engine_t *engine;    /* LOADED */
    double ms;
    double gbps;
    int rc;
    char error[1024];
} nx__msg_t;

struct nx_exec {
    nx_exec_opts_t opts;
    const nx_nexus_conf_t *conf;
    nx_pool_t *pool;
    nx_hostcache_t *cache;
    nx_loader_t *loader;
    nx__model_t *models;
    size_t model_count;
    nx__agentq_t *queues;    /* one per conf agent, same order */
    size_t queue_count;
    nx_mailbox_t *inbox;     /* nx__msg_t *: commands and loader results */
    nx_mailbox_t *loader_inbox; /* nx__msg_t *: LOADED / EVICTED jobs; NULL item = stop */
    pthread_t thread, loader_thread;
    bool thread_started, loader_started;
    uint32_t loader_jobs;    /* jobs posted to the loader and not answered yet */
    atomic_bool stepping;    /* the executor's last pass stepped sequences (the loader reads
                              * it: it collapses pages only while nothing decodes) */
    nx__model_t *loading;    /* the model being loaded, or NULL */
    size_t step_cursor;      /* round robin over models for stepping */
    double last_gbps;        /* observed by the last load; 0 when none yet */
    bool stopping;
    pthread_mutex_t status_lock;
    nx_model_status_t *status_models; /* model_count entries, under status_lock */
    uint64_t *status_last_used_ns;
};

/* exec.c */
void nx__report(nx_exec_t *exec, nx_report_t *report); /* takes ownership */
void nx__report_model(nx_exec_t *exec, const nx__model_t *model, double ms, const char *reason);
void nx__report_command(nx_exec_t *exec, uint64_t id, const char *error_code,
                        const char *message, const nx__model_t *model);
nx__msg_t *nx__msg_new(nx__msg_kind_t kind);
void nx__msg_free(void *msg);

/* sched.c */
void nx__sched_submit(nx_exec_t *exec, nx_exec_task_t *task);
void nx__sched_cancel(nx_exec_t *exec, int64_t task_id);
void nx__sched_admit(nx_exec_t *exec);
bool nx__sched_step(nx_exec_t *exec);          /* true when a step ran */
void nx__sched_timeouts(nx_exec_t *exec);
void nx__sched_fail_model(nx_exec_t *exec, nx__model_t *model, const char *code,
                          const char *message); /* queued tasks of one model */
void nx__sched_fail_all(nx_exec_t *exec, const char *code, const char *message);
void nx__sched_model_resident(nx_exec_t *exec, nx__model_t *model); /* swap_ms bookkeeping */
void nx__sched_model_left(nx_exec_t *exec, nx__model_t *model);     /* queued tasks wait again */
uint64_t nx__sched_oldest_queued_ns(nx_exec_t *exec, const nx__model_t *model);
bool nx__sched_any_running(nx_exec_t *exec);

/* exec_typed.c */
/* Constrain the job's fresh generation state by its task's output constraint, if any (right
 * after nx_gen_new, before the first pick); builds the model's token trie on first use. */
int nx__typed_setup(nx__job_t *job, nx_err_t *err);
/* After the job's generation is destroyed: it no longer uses its shared matcher. */
void nx__typed_teardown(nx__job_t *job);
void nx__typed_vocabs_free(nx__model_t *model); /* at the executor's end */

/* residency.c */
int nx__res_init(nx_exec_t *exec, nx_err_t *err);
void nx__res_fini(nx_exec_t *exec);
int nx__res_loader_start(nx_exec_t *exec, nx_err_t *err);
void nx__res_loader_stop(nx_exec_t *exec);
nx__model_t *nx__res_find(nx_exec_t *exec, const char *name_or_path);
void nx__res_plan(nx_exec_t *exec);
void nx__res_on_loaded(nx_exec_t *exec, nx__msg_t *msg);
void nx__res_on_evicted(nx_exec_t *exec, nx__msg_t *msg);
void nx__res_command(nx_exec_t *exec, nx__msg_t *msg);
void nx__res_prefetch(nx_exec_t *exec, const char *model);
void nx__res_used(nx_exec_t *exec, nx__model_t *model); /* a task for it arrived */
uint64_t nx__res_free_bytes(nx_exec_t *exec);  /* pool free minus an in-flight load's need */

#endif
