/* router_int.h — the router thread's own state, shared by router.c (the loop, envelopes,
 * replies, events), router_task.c (a task's life: accept, stages, reports, results),
 * router_ops.c (the other ops) and router_out.c (replies out, held for slow readers).
 * Everything here is touched by the router thread only. */
#ifndef NX_ROUTER_INT_H
#define NX_ROUTER_INT_H

#include "daemon.h"
#include "metrics.h"
#include "proto.h"
#include "toolset.h"
#include "typed.h"

/* Who to answer: the ZeroMQ envelope (identity, and REQ's empty delimiter) and the request's
 * "id" bytes. envelope NULL: nobody to answer. owner says who sent it, for the ops that care
 * (task, cancel): only a task's owner may cancel it. */
typedef struct nx__client {
    zmsg_t *envelope;
    unsigned char *id;
    size_t id_len;
    char *owner; /* "key:" + the CURVE public key (Z85) when CURVE is on, else "peer:" + the
                    ROUTER's routing identity in hex; NULL for other ops (or out of memory) */
} nx__client_t;

void nx__client_clear(nx__client_t *client);
/* Whether two requests came from the same client (both owners known and equal). */
bool nx__client_same_owner(const nx__client_t *a, const nx__client_t *b);

typedef struct nx__held nx__held_t; /* a reply waiting for a client that reads slowly */
typedef struct nx__peer nx__peer_t; /* such a client (router_out.c) */

/* One task request as it moves through its stages (one stage = one task row). */
typedef struct nx__job {
    struct nx__job *hnext;         /* chain in the router's table (by stage_id); a job is in
                                      the table from its first commit until it is answered */
    nx__client_t client;
    int64_t root_id;               /* the id the client got in "accepted" */
    int64_t stage_id;              /* the current stage's task row; 0 while inserting */
    const nx_agent_conf_t *agent;  /* the current stage's agent */
    char **route;                  /* the request's route (route_count names), or NULL */
    size_t route_count, route_pos; /* route[route_pos] is the stage after the current one */
    size_t stage_index;            /* 0 for the first stage */
    bool stream, started, cancel_requested, in_store;
    char *session, *first_input;
    nx_params_t params;            /* deep copy of the request's overrides */
    nx_turn_t *history;            /* the request's own earlier turns (history_count), for the
                                      first stage only (moved to the executor there), or NULL */
    size_t history_count;
    nx_report_t *finished;         /* the stage's FINISHED report while it is being stored */
    const nx_agent_conf_t *next;   /* the stage being inserted with that FINISH, or NULL */
    uint64_t accepted_ns;
    nx__held_t *held_tokens;       /* its tokens merged while its client is held, or NULL */
    nx_typed_t *task_typed;        /* the request's own output constraint (the last stage's),
                                      or NULL */
    nx_typed_t *stage_typed;       /* the running stage's constraint, or NULL */
    nx_toolset_t *task_tools;      /* the request's tools (the last stage's), or NULL */
    nx_toolset_t *stage_tools;     /* the running stage's tools, or NULL */
    nx_tools_parser_t *parser;     /* the running stage's answer, parsed as it streams */
    bool parser_done;              /* the answer is parsed whole (parser holds it) */
    bool no_input;                 /* the request brought no input (answers tool results) */
    char *tool_choice_json;        /* the request's tool_choice (JSON text), or NULL */
    bool parallel_tool_calls;      /* the request's parallel_tool_calls */
    /* agents as tools (router_tools.c) */
    struct nx__job *parent;        /* a child task running one agent call: the waiting job */
    size_t child_slot;             /* its tool turn in the parent's convo */
    nx_turn_t *base;               /* the stage's first prompt turns (history and input) */
    size_t base_count;
    nx_turn_t *convo;              /* rounds so far: assistant calls, then tool results */
    size_t convo_count;
    uint32_t tool_round;           /* rounds of agent calls run so far */
    uint32_t pending_children;     /* calls of this round still running */
    uint32_t call_base;            /* streamed calls of earlier rounds (their indices) */
    uint32_t rounds_prompt_tokens; /* usage of the agent-call rounds before this one */
    uint32_t rounds_completion_tokens;
} nx__job_t;

/* A load/evict/pin/unpin waiting for its COMMAND report. */
typedef struct nx__cmd {
    struct nx__cmd *next;
    uint64_t id;
    nx__client_t client;
} nx__cmd_t;

#define NX__JOB_BUCKETS 1024
#define NX__TOOLS_CACHE 32 /* distinct tool sets kept compiled */
#define NX__TYPED_CACHE 64 /* distinct schemas kept compiled (least recently used goes) */
#define NX__MAX_STAGES 16 /* a pipeline longer than this (a `next` cycle) ends there */

struct nx__router {
    const nx_nexus_conf_t *conf;
    nx_exec_t *exec;             /* NULL once detached (shutdown) */
    nx__storeth_t *store;
    nx_mailbox_t *mailbox;
    zsock_t *router, *pub;
    int stop_fd;
    nx_writer_t *w;              /* scratch writer for replies */
    bool stopping;
    uint32_t *queued, *running;  /* per agent (index in conf->agents) */
    nx__job_t *jobs[NX__JOB_BUCKETS];
    size_t job_count;            /* jobs alive, in the table or in the store */
    size_t store_waiting;        /* requests sent to the store that will be acked */
    nx__cmd_t *cmds;
    uint64_t next_command_id;
    nx__peer_t *held;            /* clients whose replies wait in router_out.c */
    size_t replies_held;         /* replies waiting there, all clients together */
    uint64_t replies_dropped;    /* replies never sent: client gone (or no memory) */
    int retry_ms;                /* the wait before the next try at held clients */
    nx_metrics_t metrics;        /* counters for the `metrics` op (GET /metrics) */
    nx_typed_cache_t *typed;     /* compiled output and input schemas, by digest */
    nx_toolset_cache_t *tools;   /* compiled tool sets (toolset.h) */
};

/* router.c */
void nx__reply(nx__router_t *self, const nx__client_t *client); /* sends self->w's frame */
void nx__reply_error(nx__router_t *self, const nx__client_t *client, const char *code,
                     const char *message, int64_t task);
void nx__event_task(nx__router_t *self, int64_t task, const char *agent, const char *status);
void nx__event_model(nx__router_t *self, const nx_report_t *report);
void nx__store_send(nx__router_t *self, nx__store_req_t *req); /* counts acks awaited */
size_t nx__agent_index(const nx__router_t *self, const nx_agent_conf_t *agent);
void nx__job_put(nx__router_t *self, nx__job_t *job);
nx__job_t *nx__job_take(nx__router_t *self, int64_t stage_id); /* removes it */
nx__job_t *nx__job_find(nx__router_t *self, int64_t stage_id);
nx__job_t *nx__job_find_root(nx__router_t *self, int64_t id);   /* by root or stage id */
char *nx__strdup0(const char *s); /* NULL-safe strdup */

/* router_out.c: every reply goes out through these (never blocking, never lost while the
 * client is there; see the file's header) */
void nx__out_send(nx__router_t *self, const nx__client_t *client, const void *frame,
                  size_t len); /* copies the frame when it has to wait */
void nx__out_token(nx__router_t *self, nx__job_t *job, const char *text); /* a stream's piece */
int nx__out_flush(nx__router_t *self); /* retry held clients; the poll timeout (-1: none) */
void nx__out_forget_job(nx__job_t *job); /* before freeing a job */
void nx__out_drop_all(nx__router_t *self); /* at shutdown */

/* router_task.c */
void nx__op_task(nx__router_t *self, nx__client_t *client, nx_request_t *req);
void nx__op_cancel(nx__router_t *self, nx__client_t *client, nx_request_t *req);
void nx__task_report(nx__router_t *self, nx_report_t *report); /* takes ownership */
void nx__task_stored(nx__router_t *self, nx__store_req_t *req);  /* INSERT/FINISH acks */
void nx__job_free(nx__job_t *job);

/* router_task.c, for router_tools.c */
void nx__stage_start(nx__router_t *self, nx__job_t *job, nx__store_req_t *sreq,
                     const char *input); /* sreq NULL: no session turns read */
void nx__stage_finished(nx__router_t *self, nx__job_t *job, nx_report_t *rep); /* takes rep */
nx_report_t *nx__synth_finished(nx__job_t *job, nx_task_status_t status, const char *code,
                                const char *message);
int nx__fill_insert(nx__router_t *self, const nx__job_t *job, const nx_agent_conf_t *agent,
                    const char *input, int64_t parent, size_t route_from,
                    nx__task_insert_t *ins);

/* router_tools.c: tool calls (see its header) */
/* The request's tools compiled for its last stage's model; *out NULL without tools. Errors
 * are bad_requests naming the field (NX_ENOMEM aside). */
int nx__tools_request(nx__router_t *self, const nx_agent_conf_t *agent,
                      const nx_request_t *req, bool typed, nx_toolset_t **out, nx_err_t *err);
/* The stage's tools (its agent's, and the request's on the last stage) for this round, and
 * a streaming parser when it streams. */
int nx__tools_stage_setup(nx__router_t *self, nx__job_t *job, bool last, nx_err_t *err);
/* The stage's parser's events out to the client (token, reasoning, tool_call). */
void nx__tools_send_events(nx__router_t *self, nx__job_t *job, const nx_tools_event_t *ev,
                           size_t count);
/* Before the result: the answer parsed whole (a stream's last events sent). */
void nx__tools_result_parse(nx__router_t *self, nx__job_t *job, const nx_report_t *rep);
/* The result's output, reasoning, tool_calls and finish_reason. */
void nx__tools_result_fields(nx_writer_t *w, nx__job_t *job, const nx_report_t *rep);
/* A stage's end: when its answer calls only agent tools, run them (child tasks) and take
 * the report (true); else false and the stage ends as usual. */
bool nx__tools_intercept(nx__router_t *self, nx__job_t *job, nx_report_t *rep);
/* A child task ended (status "done" with its answer, else the error code and message). */
void nx__tools_child_done(nx__router_t *self, nx__job_t *child, const char *status,
                          const char *text);
/* The stage's first prompt turns kept for later rounds; a later round's turns. */
int nx__tools_save_base(nx__job_t *job, const nx_exec_task_t *t, const char *input);
int nx__tools_history(nx__job_t *job, nx_exec_task_t *t);

/* router_ops.c */
void nx__op_ping(nx__router_t *self, nx__client_t *client);
void nx__op_status(nx__router_t *self, nx__client_t *client, nx_op_t op);
void nx__op_agents(nx__router_t *self, nx__client_t *client);
void nx__op_command(nx__router_t *self, nx__client_t *client, nx_request_t *req);
void nx__op_tasks(nx__router_t *self, nx__client_t *client, nx_request_t *req);
void nx__op_history(nx__router_t *self, nx__client_t *client, nx_request_t *req);
void nx__op_metrics(nx__router_t *self, nx__client_t *client);
void nx__command_report(nx__router_t *self, nx_report_t *report); /* takes ownership */
void nx__query_stored(nx__router_t *self, nx__store_req_t *req);  /* TASKS/HISTORY acks */

#endif
