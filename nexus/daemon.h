/* daemon.h — nexusd's internals, shared by nexusd.c (main), router*.c (the router thread) and
 * storeth.c (the store thread). Not a public API: nothing outside nexusd includes it.
 *
 * Threads pass messages through nx_mailbox (mailbox.h). The router's mailbox carries two kinds
 * of item, told apart by their first field: executor reports (wrapped) and store requests
 * coming back acknowledged (the same struct the router sent, with its results filled in).
 */
#ifndef NX_DAEMON_H
#define NX_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "conf.h"
#include "exec.h"
#include "mailbox.h"
#include "nx_err.h"
#include "store.h"

#define NX_DAEMON_VERSION "0.1"

typedef enum nx__msg_kind {
    NX__MSG_REPORT = 1, /* nx__report_msg_t: an executor report */
    NX__MSG_STORE,      /* nx__store_req_t: a store request, acknowledged after its commit */
} nx__msg_kind_t;

typedef struct nx__report_msg {
    nx__msg_kind_t kind; /* NX__MSG_REPORT */
    nx_report_t *report; /* owned */
} nx__report_msg_t;

/* The executor's report callback: wraps the report and queues it in the mailbox `user`. */
void nx__report_to_mailbox(void *user, nx_report_t *report);
/* Free any router mailbox item (report or store request). */
void nx__mailbox_item_free(void *item);

/* `nexusd --check` beyond the files (daemon_check.c): the home can be written, the pool fits
 * this machine's device, every agent's model opens (headers, config and tokenizer; no
 * weights). NX_OK with a one-line summary ("2 agents; pool 64.0 MiB of cpu memory, ...") in
 * summary, or the first problem in err naming the config file, the field or agent, and why. */
int nx__daemon_check(const nx_nexus_conf_t *conf, char *summary, size_t cap, nx_err_t *err);

/* ------------------------------------------------------------------------------------------
 * The store thread (storeth.c)
 */
typedef enum nx__sq_type {
    NX__SQ_INSERT,    /* insert a task (+ read the session's last turns) -> task_id, history */
    NX__SQ_RUNNING,   /* mark task_id running */
    NX__SQ_FINISH,    /* finish task_id; append session messages; optionally insert the next
                         pipeline stage in the same transaction (next.agent != NULL) */
    NX__SQ_RESIDENCY, /* a residency event */
    NX__SQ_TASKS,     /* list tasks -> rows */
    NX__SQ_HISTORY,   /* read a session -> messages, session_found */
} nx__sq_type_t;

typedef struct nx__task_insert {
    char *agent, *input, *session, *client_id, *params_json, *route_json; /* owned */
    int64_t parent;
    uint32_t history_turns; /* > 0: read the session's last turns too (session memory) */
} nx__task_insert_t;

typedef struct nx__store_req {
    nx__msg_kind_t kind; /* NX__MSG_STORE */
    nx__sq_type_t type;
    void *ctx;           /* the router's context; the store thread never touches it */
    bool no_ack;         /* the store thread frees it after the commit instead of acking */

    int rc;              /* result: NX_OK or the first failure, with err */
    nx_err_t err;

    nx__task_insert_t insert; /* INSERT; FINISH's next stage when insert.agent != NULL */
    int64_t task_id;          /* INSERT, and FINISH's next stage: out. RUNNING/FINISH: in */
    nx_message_row_t *history; /* INSERT (and FINISH's next stage): out, oldest first */
    size_t history_count;

    nx_task_status_t status;  /* FINISH */
    char *output, *error_code, *error;
    nx_task_timings_t timings;
    uint32_t prompt_tokens, completion_tokens;
    uint32_t turns_dropped;   /* FINISH: session turns left out of the prompt */
    char *msg_session, *msg_user, *msg_assistant, *msg_agent; /* FINISH: session turn, or NULL */
    int64_t msg_task;

    char *model, *event, *reason; /* RESIDENCY */
    uint64_t bytes;
    double ms;

    char *filter; /* TASKS: agent or NULL; HISTORY: session */
    uint32_t limit;
    nx_task_row_t *rows; /* TASKS: out */
    size_t row_count;
    bool session_found;  /* HISTORY: out */
} nx__store_req_t;

nx__store_req_t *nx__store_req_new(nx__sq_type_t type, void *ctx);
void nx__store_req_free(nx__store_req_t *req);

typedef struct nx__storeth nx__storeth_t;

/* Start the store thread; it takes ownership of *store_p (sets it to NULL) and acks each
 * request into `acks` after the transaction holding it committed. */
nx__storeth_t *nx__storeth_start(nx_store_t **store_p, nx_mailbox_t *acks, nx_err_t *err);
/* Queue a request (takes ownership). */
void nx__storeth_submit(nx__storeth_t *self, nx__store_req_t *req);
/* The wire error code for a store request that failed with rc: "storage_full" when the disk
 * holding the database is full (NX_ENOSPC), "storage_error" when the disk failed or the file
 * cannot be written (NX_EDISK, NX_EFORMAT from nx__store_sqlerr), else "internal" (a bug). */
const char *nx__store_wire_code(int rc);
/* Process what is queued, stop the thread and close the database. */
void nx__storeth_stop(nx__storeth_t **self_p);

/* ------------------------------------------------------------------------------------------
 * The router (router.c, router_task.c, router_ops.c)
 */
typedef struct nx__router nx__router_t;

typedef struct nx__router_opts {
    const nx_nexus_conf_t *conf;
    nx_exec_t *exec;
    nx__storeth_t *store;
    nx_mailbox_t *mailbox; /* reports and store acks */
    zsock_t *router;       /* ROUTER, bound (the router owns it from now on) */
    zsock_t *pub;          /* PUB, bound (owned from now on) */
    int stop_fd;           /* readable when the daemon must stop (an eventfd) */
} nx__router_opts_t;

nx__router_t *nx__router_new(const nx__router_opts_t *opts, nx_err_t *err);
/* Serve until stop_fd is readable; then stop accepting tasks. */
void nx__router_run(nx__router_t *self);
/* After the executor is gone: answer what its last reports say and wait (at most timeout_ms)
 * for the store to commit them. */
void nx__router_drain(nx__router_t *self, int timeout_ms);
/* The executor is about to go away: tasks must not be handed to it any more. */
void nx__router_detach_exec(nx__router_t *self);
void nx__router_destroy(nx__router_t **self_p);

#endif
