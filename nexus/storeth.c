/* storeth.c — nexusd's store thread: the only thread that touches the SQLite connection.
 *
 * Group commit: it waits for requests, drains everything queued, runs it all in ONE
 * transaction, commits (the WAL fsync), and only then acknowledges each request into the
 * router's mailbox. Under load many tasks share one fsync; "accepted" and "result" are still
 * only sent after the rows they promise are on disk.
 *
 * A task end the database cannot take (its disk full) is kept aside (store_ends.c): listings
 * show the task failed with that end, and it is stored once the database takes writes again,
 * tried before every group and at stop.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

struct nx__storeth {
    nx_store_t *store;
    nx_store_ends_t *ends; /* task ends the database could not take, retried before each group */
    nx_mailbox_t *inbox; /* nx__store_req_t */
    nx_mailbox_t *acks;  /* the router's mailbox */
    pthread_t thread;
};

#define NX__BATCH_MAX 256 /* requests in one group transaction */

/* A sentinel item that tells the thread to stop (never a real request). */
static nx__store_req_t stop_sentinel;

nx__store_req_t *nx__store_req_new(nx__sq_type_t type, void *ctx)
{
    nx__store_req_t *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->kind = NX__MSG_STORE;
    req->type = type;
    req->ctx = ctx;
    return req;
}

static void insert_clear(nx__task_insert_t *ins)
{
    free(ins->agent);
    free(ins->input);
    free(ins->session);
    free(ins->client_id);
    free(ins->params_json);
    free(ins->route_json);
    memset(ins, 0, sizeof *ins);
}

void nx__store_req_free(nx__store_req_t *req)
{
    if (!req || req == &stop_sentinel)
        return;
    insert_clear(&req->insert);
    nx_message_rows_free(req->history, req->history_count);
    free(req->output);
    free(req->error_code);
    free(req->error);
    free(req->msg_session);
    free(req->msg_user);
    free(req->msg_assistant);
    free(req->msg_agent);
    free(req->model);
    free(req->event);
    free(req->reason);
    free(req->filter);
    nx_task_rows_free(req->rows, req->row_count);
    free(req);
}

/* Insert a task row and read the session's turns for it (when asked). */
static int do_insert(nx_store_t *store, nx__store_req_t *req, nx_err_t *err)
{
    const nx__task_insert_t *in = &req->insert;
    nx_task_new_t row = {
        .agent = in->agent,
        .input = in->input,
        .session = in->session,
        .client_id = in->client_id,
        .params_json = in->params_json,
        .route_json = in->route_json,
        .parent = in->parent,
    };
    /* History first: the turns before this task, not including its own input. */
    if (in->history_turns > 0 && in->session) {
        int rc = nx_store_messages(store, in->session, in->history_turns, &req->history,
                                   &req->history_count, err);
        if (rc != NX_OK)
            return rc;
    }
    return nx_store_task_insert(store, &row, &req->task_id, err);
}

/* The end, the session turn and the next stage are one unit: a failure in any of them (a
 * full disk) leaves none of them, so the row never says done while its client was told the
 * end could not be stored. */
static int do_finish(nx_store_t *store, nx__store_req_t *req, nx_err_t *err)
{
    int64_t finished = req->task_id;
    int rc = nx_store_unit_begin(store, err);
    if (rc == NX_OK)
        rc = nx_store_task_finish(store, req->task_id, req->status, req->output,
                                  req->error_code, req->error, &req->timings,
                                  req->prompt_tokens, req->completion_tokens, err);
    if (rc == NX_OK && req->turns_dropped)
        rc = nx_store_task_turns_dropped(store, req->task_id, req->turns_dropped, err);
    if (rc == NX_OK && req->msg_session && req->msg_user)
        rc = nx_store_message_add(store, req->msg_session, "user", req->msg_user,
                                  req->msg_agent, req->msg_task, err);
    if (rc == NX_OK && req->msg_session && req->msg_assistant)
        rc = nx_store_message_add(store, req->msg_session, "assistant", req->msg_assistant,
                                  req->msg_agent, req->msg_task, err);
    if (rc == NX_OK && req->insert.agent)
        rc = do_insert(store, req, err); /* overwrites task_id with the next stage's */
    rc = nx_store_unit_end(store, rc, err);
    if (rc != NX_OK)
        req->task_id = finished;
    return rc;
}

/* A listing shows a task whose end is kept aside (not yet in the database) as it ended. */
static void overlay_ends(const nx_store_ends_t *ends, nx__store_req_t *req)
{
    for (size_t i = 0; nx_store_ends_count(ends) && i < req->row_count; i++) {
        nx_task_row_t *row = &req->rows[i];
        const nx_store_end_t *end = nx_store_ends_find(ends, row->id);
        if (!end || (row->status != NX_TASK_ACCEPTED && row->status != NX_TASK_RUNNING))
            continue;
        char *code = strdup(end->code), *message = strdup(end->message);
        if (!code || !message) {
            free(code);
            free(message);
            continue; /* out of memory: the row is shown as stored */
        }
        free(row->error_code);
        free(row->error);
        row->error_code = code;
        row->error = message;
        row->status = NX_TASK_FAILED;
    }
}

/* Run one request inside the open transaction; its result goes into req->rc / req->err. */
static void run_one(nx__storeth_t *self, nx__store_req_t *req)
{
    nx_store_t *store = self->store;
    nx_err_t *err = &req->err;
    switch (req->type) {
    case NX__SQ_INSERT:
        req->rc = do_insert(store, req, err);
        break;
    case NX__SQ_RUNNING:
        req->rc = nx_store_task_running(store, req->task_id, err);
        break;
    case NX__SQ_FINISH:
        req->rc = do_finish(store, req, err);
        break;
    case NX__SQ_RESIDENCY:
        req->rc = nx_store_residency_event(store, req->model, req->event, req->bytes, req->ms,
                                           req->reason, err);
        break;
    case NX__SQ_TASKS:
        req->rc = nx_store_tasks(store, req->filter, req->limit, &req->rows, &req->row_count,
                                 err);
        overlay_ends(self->ends, req);
        break;
    case NX__SQ_HISTORY:
        req->session_found = nx_store_session_exists(store, req->filter);
        req->rc = req->session_found
                      ? nx_store_messages(store, req->filter, 0, &req->history,
                                          &req->history_count, err)
                      : NX_OK;
        break;
    }
    if (req->rc != NX_OK)
        nx_log(NX_LOG_WARN, "store: request %d failed: %s", (int)req->type, req->err.msg);
}

/* Store the ends kept aside, now that the database may take writes again. Quiet when it
 * still cannot: the failure was logged when the ends were kept. */
static void flush_ends(nx__storeth_t *self)
{
    if (!nx_store_ends_count(self->ends))
        return;
    nx_err_t err = {0};
    if (nx_store_ends_flush(self->ends, self->store, &err) != NX_OK)
        nx_log(NX_LOG_DEBUG, "store: %zu task ends still kept aside: %s",
               nx_store_ends_count(self->ends), err.msg);
}

/* A task end the group could not store: its row still says accepted or running. Keep the end
 * its client is told (an error) aside, so listings show it and it is stored later. */
static void keep_end(nx__storeth_t *self, int64_t task_id, const nx__store_req_t *req)
{
    char message[224];
    if (req->rc == NX_ENOSPC)
        snprintf(message, sizeof message, "the task's end could not be stored: the disk "
                 "holding the database was full");
    else
        snprintf(message, sizeof message, "the task's end could not be stored: %.180s",
                 req->err.msg); /* cut to the slot; the whole text is in the log */
    nx_err_t err = {0};
    if (nx_store_ends_add(self->ends, task_id, nx__store_wire_code(req->rc), message, &err) !=
        NX_OK)
        nx_log(NX_LOG_ERROR, "store: task %lld's end is not kept (%s); a restart will mark it "
               "interrupted", (long long)task_id, err.msg);
}

/* One group: everything in `batch`, one transaction, then the acks. */
static void run_batch(nx__storeth_t *self, nx__store_req_t **batch, size_t count)
{
    int64_t finish_ids[NX__BATCH_MAX]; /* FINISH's task_id is overwritten by a next stage's */
    for (size_t i = 0; i < count; i++)
        finish_ids[i] = batch[i]->task_id;
    flush_ends(self);
    nx_err_t err = {0};
    int rc = nx_store_begin(self->store, &err);
    for (size_t i = 0; rc == NX_OK && i < count; i++)
        run_one(self, batch[i]);
    if (rc == NX_OK)
        rc = nx_store_commit(self->store, &err);
    if (rc != NX_OK) {
        nx_store_rollback(self->store);
        for (size_t i = 0; i < count; i++) /* a full disk is why, when a request met it */
            if (batch[i]->rc == NX_ENOSPC) {
                err = batch[i]->err;
                rc = NX_ENOSPC;
                break;
            }
        nx_log(NX_LOG_ERROR, "store: a transaction of %zu requests failed: %s", count, err.msg);
        for (size_t i = 0; i < count; i++) {
            batch[i]->rc = rc; /* nothing of it is on disk: say so to every request */
            batch[i]->err = err;
        }
    }
    bool kept = false;
    for (size_t i = 0; i < count; i++) {
        if (batch[i]->type == NX__SQ_FINISH && batch[i]->rc != NX_OK) {
            batch[i]->task_id = finish_ids[i];
            keep_end(self, finish_ids[i], batch[i]);
            kept = true;
        }
    }
    if (kept)
        flush_ends(self); /* a bare end is small: it may fit where the whole group did not */
    for (size_t i = 0; i < count; i++) {
        if (batch[i]->no_ack || !nx_mailbox_push(self->acks, batch[i]))
            nx__store_req_free(batch[i]);
    }
}

static void *thread_main(void *arg)
{
    nx__storeth_t *self = arg;
    nx__store_req_t *batch[NX__BATCH_MAX];
    bool stop = false;
    while (!stop) {
        nx_mailbox_wait(self->inbox, -1);
        size_t count = 0;
        nx__store_req_t *req;
        while (count < NX__BATCH_MAX && (req = nx_mailbox_pop(self->inbox))) {
            if (req == &stop_sentinel) {
                stop = true; /* the sentinel is queued last: everything before it is here */
                break;
            }
            batch[count++] = req;
        }
        if (count)
            run_batch(self, batch, count);
    }
    flush_ends(self); /* a last try; what is still aside is stored at the next start */
    return NULL;
}

const char *nx__store_wire_code(int rc)
{
    switch (rc) {
    case NX_ENOSPC:
        return "storage_full";
    case NX_EDISK: /* the disk failed or the file turned read-only (nx__store_sqlerr) */
    case NX_EFORMAT: /* the file was damaged under us */
        return "storage_error";
    default:
        return "internal";
    }
}

nx__storeth_t *nx__storeth_start(nx_store_t **store_p, nx_mailbox_t *acks, nx_err_t *err)
{
    nx__storeth_t *self = calloc(1, sizeof *self);
    if (!self)
        goto out_nomem;
    self->inbox = nx_mailbox_new();
    if (!self->inbox)
        goto out_free;
    self->acks = acks;
    self->store = *store_p;
    nx_err_t ends_err = {0};
    self->ends = nx_store_ends_open(nx_store_path(self->store), &ends_err);
    if (!self->ends) {
        nx_log(NX_LOG_WARN, "store: %s; task ends the database cannot take are kept in "
               "memory only", ends_err.msg);
        if (!(self->ends = nx_store_ends_open(NULL, &ends_err)))
            goto out_inbox;
    }
    if (pthread_create(&self->thread, NULL, thread_main, self) != 0)
        goto out_inbox;
    *store_p = NULL;
    return self;
out_inbox:
    nx_store_ends_close(&self->ends);
    nx_mailbox_destroy(&self->inbox, NULL);
out_free:
    free(self);
out_nomem:
    nx_err_set(err, NX_ENOMEM, "store thread: out of memory or threads");
    return NULL;
}

void nx__storeth_submit(nx__storeth_t *self, nx__store_req_t *req)
{
    if (!nx_mailbox_push(self->inbox, req)) {
        nx_log(NX_LOG_ERROR, "store thread: out of memory queueing a request; dropped");
        nx__store_req_free(req);
    }
}

void nx__storeth_stop(nx__storeth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx__storeth_t *self = *self_p;
    while (!nx_mailbox_push(self->inbox, &stop_sentinel))
        ; /* out of memory for one node: retry, the thread must learn to stop */
    pthread_join(self->thread, NULL);
    nx_mailbox_destroy(&self->inbox, (void (*)(void *))nx__store_req_free);
    nx_store_ends_close(&self->ends);
    nx_store_close(&self->store);
    free(self);
    *self_p = NULL;
}
