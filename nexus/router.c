/* router.c — nexusd's router thread: one zmq_poll over the ROUTER socket, the mailbox (executor
 * reports and store acks) and the stop signal. It owns the sockets; it never waits on a load,
 * an fsync or inference: those run on the executor's and the store's threads, which answer
 * through the mailbox. This file holds the loop, envelopes, replies, events and the job table;
 * router_task.c a task's life, router_ops.c the other ops, router_out.c the sending of replies
 * (never blocking on a client that reads slowly, never losing its replies).
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "router_int.h"

char *nx__strdup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

void nx__client_clear(nx__client_t *client)
{
    zmsg_destroy(&client->envelope);
    free(client->id);
    free(client->owner);
    client->id = NULL;
    client->id_len = 0;
    client->owner = NULL;
}

/* Who sent `payload`: with CURVE, its public key as zauth vouched for it (the "User-Id" ZAP
 * gave the connection), which stays the same when the client reconnects; without it, the
 * routing identity of the connection. A client cannot pose as another connection: the ROUTER
 * ignores a peer announcing an identity that is connected (no ZMQ_ROUTER_HANDOVER), and the
 * ones it makes up are never shown to anyone. Caller owns the result (NULL: out of memory). */
static char *owner_of(zframe_t *payload, zmsg_t *envelope)
{
    const char *key = zframe_meta(payload, "User-Id");
    if (key && key[0]) {
        char *out = malloc(strlen(key) + 5);
        if (out)
            sprintf(out, "key:%s", key);
        return out;
    }
    zframe_t *identity = zmsg_first(envelope);
    size_t len = identity ? zframe_size(identity) : 0;
    const unsigned char *bytes = identity ? zframe_data(identity) : NULL;
    char *out = malloc(len * 2 + 6);
    if (!out)
        return NULL;
    strcpy(out, "peer:");
    for (size_t i = 0; i < len; i++)
        sprintf(out + 5 + 2 * i, "%02x", bytes[i]);
    return out;
}

bool nx__client_same_owner(const nx__client_t *a, const nx__client_t *b)
{
    return a->owner && b->owner && strcmp(a->owner, b->owner) == 0;
}

/* ------------------------------------------------------------------------------------------
 * Replies and events
 */
void nx__reply(nx__router_t *self, const nx__client_t *client)
{
    if (!client || !client->envelope)
        return; /* a recovered task: nobody is waiting */
    size_t len;
    const void *data = nx_writer_data(self->w, &len);
    if (!data) {
        nx_log(NX_LOG_ERROR, "router: out of memory packing a reply; it is lost");
        self->replies_dropped++;
        return;
    }
    nx__out_send(self, client, data, len);
}

void nx__reply_error(nx__router_t *self, const nx__client_t *client, const char *code,
                     const char *message, int64_t task)
{
    nx_writer_reset(self->w);
    nx_writer_error(self->w, client ? client->id : NULL, client ? client->id_len : 0, code,
                    message, task);
    nx__reply(self, client);
}

/* Events are plain maps (no op/id), so they are packed here rather than with nx_writer. */
static void pack_str(msgpack_packer *pk, const char *key, const char *value)
{
    msgpack_pack_str_with_body(pk, key, strlen(key));
    if (value)
        msgpack_pack_str_with_body(pk, value, strlen(value));
    else
        msgpack_pack_nil(pk);
}

static void publish(nx__router_t *self, const char *topic, msgpack_sbuffer *buf)
{
    zmsg_t *msg = zmsg_new();
    if (!msg || zmsg_addstr(msg, topic) != 0 || zmsg_addmem(msg, buf->data, buf->size) != 0 ||
        zmsg_send(&msg, self->pub) != 0)
        zmsg_destroy(&msg); /* PUB never blocks; a lost event is only a lost notification */
}

void nx__event_task(nx__router_t *self, int64_t task, const char *agent, const char *status)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "task", 4);
    msgpack_pack_int64(&pk, task);
    pack_str(&pk, "agent", agent);
    pack_str(&pk, "status", status);
    publish(self, "task", &buf);
    msgpack_sbuffer_destroy(&buf);
}

void nx__event_model(nx__router_t *self, const nx_report_t *report)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "model", report->model);
    pack_str(&pk, "state", report->state);
    msgpack_pack_str_with_body(&pk, "bytes", 5);
    msgpack_pack_uint64(&pk, report->bytes);
    msgpack_pack_str_with_body(&pk, "ms", 2);
    msgpack_pack_double(&pk, report->ms);
    pack_str(&pk, "reason", report->reason[0] ? report->reason : NULL);
    publish(self, "model", &buf);
    msgpack_sbuffer_destroy(&buf);
}

/* ------------------------------------------------------------------------------------------
 * The job table (by the current stage's task id) and the store
 */
static size_t bucket(int64_t id)
{
    return (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull >> 54) % NX__JOB_BUCKETS;
}

void nx__job_put(nx__router_t *self, nx__job_t *job)
{
    size_t b = bucket(job->stage_id);
    job->hnext = self->jobs[b];
    self->jobs[b] = job;
}

nx__job_t *nx__job_take(nx__router_t *self, int64_t stage_id)
{
    for (nx__job_t **p = &self->jobs[bucket(stage_id)]; *p; p = &(*p)->hnext) {
        if ((*p)->stage_id == stage_id) {
            nx__job_t *job = *p;
            *p = job->hnext;
            job->hnext = NULL;
            return job;
        }
    }
    return NULL;
}

nx__job_t *nx__job_find(nx__router_t *self, int64_t stage_id)
{
    for (nx__job_t *j = self->jobs[bucket(stage_id)]; j; j = j->hnext)
        if (j->stage_id == stage_id)
            return j;
    return NULL;
}

nx__job_t *nx__job_find_root(nx__router_t *self, int64_t id)
{
    nx__job_t *job = nx__job_find(self, id);
    if (job)
        return job;
    for (size_t b = 0; b < NX__JOB_BUCKETS; b++) /* a later stage of a pipeline: rare */
        for (nx__job_t *j = self->jobs[b]; j; j = j->hnext)
            if (j->root_id == id)
                return j;
    return NULL;
}

void nx__store_send(nx__router_t *self, nx__store_req_t *req)
{
    if (!req->no_ack)
        self->store_waiting++;
    nx__storeth_submit(self->store, req);
}

size_t nx__agent_index(const nx__router_t *self, const nx_agent_conf_t *agent)
{
    return (size_t)(agent - self->conf->agents);
}

/* ------------------------------------------------------------------------------------------
 * Requests
 */
static void dispatch(nx__router_t *self, nx__client_t *client, nx_request_t *req)
{
    switch (req->op) {
    case NX_OP_PING:
        nx__op_ping(self, client);
        break;
    case NX_OP_TASK:
        nx__op_task(self, client, req);
        break;
    case NX_OP_CANCEL:
        nx__op_cancel(self, client, req);
        break;
    case NX_OP_STATUS:
    case NX_OP_MODELS:
        nx__op_status(self, client, req->op);
        break;
    case NX_OP_AGENTS:
        nx__op_agents(self, client);
        break;
    case NX_OP_LOAD:
    case NX_OP_EVICT:
    case NX_OP_PIN:
    case NX_OP_UNPIN:
        nx__op_command(self, client, req);
        break;
    case NX_OP_TASKS:
        nx__op_tasks(self, client, req);
        break;
    case NX_OP_HISTORY:
        nx__op_history(self, client, req);
        break;
    case NX_OP_METRICS:
        nx__op_metrics(self, client);
        break;
    default:
        nx__reply_error(self, client, "unknown_op", "op is not supported", 0);
        break;
    }
}

/* Split [identity][empty?][frame] into the envelope to echo and the payload frame. A message
 * of any other shape is answered bad_msgpack (to its identity) and dropped. */
static zframe_t *split_envelope(zmsg_t *msg, nx__client_t *client)
{
    size_t frames = zmsg_size(msg);
    zframe_t *second = NULL;
    if (frames >= 2) {
        zmsg_first(msg);
        second = zmsg_next(msg);
    }
    bool dealer = frames == 2;
    bool req = frames == 3 && second && zframe_size(second) == 0;
    zframe_t *payload = (dealer || req) ? zmsg_last(msg) : NULL;
    if (payload)
        zmsg_remove(msg, payload); /* detached, not destroyed: now ours */
    client->envelope = msg; /* what is left: identity (+ delimiter) — or the whole odd message */
    return payload;
}

static void handle_message(nx__router_t *self, zmsg_t *msg)
{
    nx__client_t client = {0};
    nx_request_t req = {0};
    nx_err_t err = {0};
    zframe_t *payload = split_envelope(msg, &client);
    if (!payload) {
        /* keep the identity only, so the error still reaches the sender */
        while (zmsg_size(client.envelope) > 1) {
            zframe_t *f = zmsg_last(client.envelope);
            zmsg_remove(client.envelope, f);
            zframe_destroy(&f);
        }
        nx__reply_error(self, &client, "bad_msgpack",
                        "a request is one frame holding one msgpack map", 0);
        goto out;
    }
    size_t len = zframe_size(payload);
    size_t max = self->conf->max_message_bytes;
    const char *code = NULL;
    if (len > max) {
        char message[160];
        snprintf(message, sizeof message, "the message is %zu bytes, over max_message_bytes %zu",
                 len, max);
        nx__reply_error(self, &client, "too_large", message, 0);
        goto out;
    }
    if (nx_proto_parse(zframe_data(payload), len, max, &req, &code, &err) != NX_OK) {
        if (req.op == NX_OP_TASK) /* the op was read, a field was wrong */
            nx_metrics_refused(&self->metrics, code ? code : "bad_request");
        if (req.id) { /* the error echoes the id when the frame had one */
            client.id = req.id;
            client.id_len = req.id_len;
            req.id = NULL;
        }
        nx__reply_error(self, &client, code ? code : "bad_request", err.msg, 0);
        goto out;
    }
    client.id = req.id; /* the client takes the id bytes over */
    client.id_len = req.id_len;
    req.id = NULL;
    req.id_len = 0;
    if (req.op == NX_OP_TASK || req.op == NX_OP_CANCEL)
        client.owner = owner_of(payload, client.envelope);
    if (self->stopping && req.op != NX_OP_PING) {
        if (req.op == NX_OP_TASK)
            nx_metrics_refused(&self->metrics, "shutting_down");
        nx__reply_error(self, &client, "shutting_down", "the daemon is stopping", 0);
    } else {
        dispatch(self, &client, &req);
    }
out:
    nx_request_clear(&req);
    zframe_destroy(&payload);
    nx__client_clear(&client); /* ops that keep the client moved it out (envelope NULL) */
}

/* ------------------------------------------------------------------------------------------
 * The mailbox: executor reports and store acks
 */
static void handle_item(nx__router_t *self, void *item)
{
    nx__msg_kind_t kind = *(nx__msg_kind_t *)item;
    if (kind == NX__MSG_REPORT) {
        nx__report_msg_t *m = item;
        nx_report_t *report = m->report;
        free(m);
        if (report->kind == NX_REPORT_COMMAND)
            nx__command_report(self, report);
        else
            nx__task_report(self, report);
        return;
    }
    nx__store_req_t *req = item;
    self->store_waiting--;
    if (req->type == NX__SQ_INSERT || req->type == NX__SQ_FINISH)
        nx__task_stored(self, req);
    else if (req->type == NX__SQ_TASKS || req->type == NX__SQ_HISTORY)
        nx__query_stored(self, req);
    else
        nx__store_req_free(req);
}

/* At most `budget` items per turn, so a flood of tokens cannot starve the socket. */
static void drain_mailbox(nx__router_t *self, size_t budget)
{
    void *item;
    while (budget-- && (item = nx_mailbox_pop(self->mailbox)))
        handle_item(self, item);
}

void nx__report_to_mailbox(void *user, nx_report_t *report)
{
    nx__report_msg_t *m = malloc(sizeof *m);
    if (m) {
        m->kind = NX__MSG_REPORT;
        m->report = report;
    }
    if (!m || !nx_mailbox_push(user, m)) {
        nx_log(NX_LOG_ERROR, "router: out of memory queueing an executor report; dropped");
        free(m);
        nx_report_free(report);
    }
}

void nx__mailbox_item_free(void *item)
{
    if (*(nx__msg_kind_t *)item == NX__MSG_REPORT) {
        nx__report_msg_t *m = item;
        nx_report_free(m->report);
        free(m);
    } else {
        nx__store_req_free(item);
    }
}

/* ------------------------------------------------------------------------------------------
 * The loop
 */
void nx__router_run(nx__router_t *self)
{
    zmq_pollitem_t items[3] = {
        {.socket = zsock_resolve(self->router), .events = ZMQ_POLLIN},
        {.fd = nx_mailbox_fd(self->mailbox), .events = ZMQ_POLLIN},
        {.fd = self->stop_fd, .events = ZMQ_POLLIN},
    };
    while (!self->stopping) {
        int timeout_ms = nx__out_flush(self); /* -1 (none) unless a client is held */
        if (zmq_poll(items, 3, timeout_ms) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            nx_log(NX_LOG_ERROR, "router: zmq_poll failed: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (items[2].revents & ZMQ_POLLIN)
            self->stopping = true;
        if (items[1].revents & ZMQ_POLLIN)
            drain_mailbox(self, 512);
        /* Up to 64 requests per turn, received without blocking. */
        for (int i = 0; i < 64 && !self->stopping; i++) {
            zmsg_t *msg = NULL;
            if (zsock_events(self->router) & ZMQ_POLLIN)
                msg = zmsg_recv(self->router);
            if (!msg)
                break;
            handle_message(self, msg);
        }
    }
    self->stopping = true;
    nx_log(NX_LOG_INFO, "nexusd: stopping: no new tasks are accepted");
}

void nx__router_detach_exec(nx__router_t *self)
{
    self->stopping = true;
    self->exec = NULL;
}

void nx__router_drain(nx__router_t *self, int timeout_ms)
{
    uint64_t deadline = nx_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while ((self->store_waiting > 0 || nx_mailbox_count(self->mailbox) > 0) &&
           nx_now_ns() < deadline) {
        if (nx_mailbox_wait(self->mailbox, 50))
            drain_mailbox(self, SIZE_MAX);
        nx__out_flush(self); /* results of the last tasks to clients still reading */
    }
    /* Clients still held get a second more to read; what they leave is dropped (logged). */
    uint64_t held_deadline = nx_now_ns() + 1000000000ull;
    int wait_ms;
    while ((wait_ms = nx__out_flush(self)) >= 0 && nx_now_ns() < held_deadline &&
           nx_now_ns() < deadline)
        poll(NULL, 0, wait_ms);
    if (self->store_waiting > 0)
        nx_log(NX_LOG_WARN, "nexusd: %zu store requests still waiting at shutdown",
               self->store_waiting);
}

nx__router_t *nx__router_new(const nx__router_opts_t *opts, nx_err_t *err)
{
    nx__router_t *self = calloc(1, sizeof *self);
    if (!self)
        goto out_nomem;
    self->conf = opts->conf;
    self->exec = opts->exec;
    self->store = opts->store;
    self->mailbox = opts->mailbox;
    self->stop_fd = opts->stop_fd;
    self->w = nx_writer_new();
    size_t n = opts->conf->agent_count ? opts->conf->agent_count : 1;
    self->queued = calloc(n, sizeof *self->queued);
    self->running = calloc(n, sizeof *self->running);
    self->typed = nx_typed_cache_new(NX__TYPED_CACHE);
    self->tools = nx_toolset_cache_new(NX__TOOLS_CACHE);
    if (!self->w || !self->queued || !self->running || !self->typed || !self->tools ||
        nx_metrics_init(&self->metrics, opts->conf->agent_count) != NX_OK)
        goto out_free;
    self->router = opts->router;
    self->pub = opts->pub;
    self->next_command_id = 1;
    return self;
out_free:
    nx_typed_cache_destroy(&self->typed);
    nx_toolset_cache_destroy(&self->tools);
    nx_metrics_clear(&self->metrics);
    nx_writer_destroy(&self->w);
    free(self->queued);
    free(self->running);
    free(self);
out_nomem:
    nx_err_set(err, NX_ENOMEM, "router: out of memory");
    return NULL;
}

void nx__router_destroy(nx__router_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx__router_t *self = *self_p;
    for (size_t b = 0; b < NX__JOB_BUCKETS; b++) {
        while (self->jobs[b]) {
            nx__job_t *job = self->jobs[b];
            self->jobs[b] = job->hnext;
            nx__job_free(job);
        }
    }
    nx__out_drop_all(self);
    while (self->cmds) {
        nx__cmd_t *cmd = self->cmds;
        self->cmds = cmd->next;
        nx__client_clear(&cmd->client);
        free(cmd);
    }
    zsock_destroy(&self->router);
    zsock_destroy(&self->pub);
    nx_writer_destroy(&self->w);
    nx_metrics_clear(&self->metrics);
    nx_typed_cache_destroy(&self->typed);
    nx_toolset_cache_destroy(&self->tools);
    free(self->queued);
    free(self->running);
    free(self);
    *self_p = NULL;
}
