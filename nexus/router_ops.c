/* router_ops.c — the ops other than task/cancel: ping, status/models and agents (answered at
 * once from nx_exec_status and the router's counts), load/evict/pin/unpin (answered when the
 * executor's COMMAND report comes back) and tasks/history (answered when the store thread has
 * read them). */
#include <stdlib.h>
#include <string.h>

#include "router_int.h"

void nx__op_ping(nx__router_t *self, nx__client_t *client)
{
    nx_writer_reset(self->w);
    nx_writer_reply(self->w, "pong", client->id, client->id_len);
    nx_writer_str(self->w, "version", NX_DAEMON_VERSION);
    nx__reply(self, client);
}

/* Whether the agent's model is this one: the same directory, or the same directory name. */
static bool agent_uses(const nx_agent_conf_t *agent, const nx_model_status_t *model)
{
    const char *path = agent->model_path ? agent->model_path : agent->model;
    if (!path)
        return false;
    if (strcmp(path, model->path) == 0)
        return true;
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    return len - start == strlen(model->name) &&
           strncmp(path + start, model->name, len - start) == 0;
}

static void write_agents(nx__router_t *self)
{
    nx_writer_t *w = self->w;
    nx_writer_array_open(w, "agents");
    for (size_t i = 0; i < self->conf->agent_count; i++) {
        const nx_agent_conf_t *a = &self->conf->agents[i];
        nx_writer_map_open(w, NULL);
        nx_writer_str(w, "name", a->name);
        nx_writer_str(w, "description", a->description ? a->description : "");
        nx_writer_str(w, "model", a->model);
        nx_writer_uint(w, "queue", self->queued[i]);
        nx_writer_uint(w, "running", self->running[i]);
        nx_writer_bool(w, "pin", a->pin);
        nx_writer_int(w, "priority", a->priority);
        nx_writer_str(w, "next", a->next);
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
}

static void write_model(nx__router_t *self, const nx_model_status_t *m)
{
    nx_writer_t *w = self->w;
    nx_writer_map_open(w, NULL);
    nx_writer_str(w, "name", m->name);
    nx_writer_str(w, "path", m->path);
    nx_writer_str(w, "source", m->source);
    nx_writer_str(w, "state", m->state);
    nx_writer_uint(w, "bytes", m->bytes);
    nx_writer_array_open(w, "agents");
    for (size_t i = 0; i < self->conf->agent_count; i++) {
        const nx_agent_conf_t *a = &self->conf->agents[i];
        if (agent_uses(a, m))
            nx_writer_str(w, NULL, a->name); /* inside an array: no key */
    }
    nx_writer_array_close(w);
    nx_writer_bool(w, "pinned", m->pinned);
    nx_writer_int(w, "priority", m->priority);
    nx_writer_real(w, "last_used_ms_ago", m->last_used_ms_ago);
    nx_writer_uint(w, "loads", m->loads);
    nx_writer_real(w, "last_swap_ms", m->last_swap_ms);
    nx_writer_uint(w, "queue", m->queue);
    nx_writer_uint(w, "running", m->running);
    nx_writer_str(w, "error", m->error[0] ? m->error : NULL);
    nx_writer_map_close(w);
}

void nx__op_status(nx__router_t *self, nx__client_t *client, nx_op_t op)
{
    nx_exec_status_t st = {0};
    nx_err_t err = {0};
    if (!self->exec || nx_exec_status(self->exec, &st, &err) != NX_OK) {
        nx__reply_error(self, client, self->exec ? "internal" : "shutting_down",
                        self->exec ? err.msg : "the daemon is stopping", 0);
        return;
    }
    nx_writer_t *w = self->w;
    nx_writer_reset(w);
    nx_writer_reply(w, op == NX_OP_STATUS ? "status" : "models", client->id, client->id_len);
    if (op == NX_OP_STATUS) {
        nx_writer_map_open(w, "pool");
        nx_writer_str(w, "device", nx_device_name(st.pool.device));
        nx_writer_uint(w, "total_bytes", st.pool.total_bytes);
        nx_writer_uint(w, "used_bytes", st.pool.used_bytes);
        nx_writer_uint(w, "free_bytes", st.pool.free_bytes);
        nx_writer_map_close(w);
        nx_writer_map_open(w, "host_cache");
        nx_writer_uint(w, "budget_bytes", st.host_cache.budget_bytes);
        nx_writer_uint(w, "used_bytes", st.host_cache.used_bytes);
        nx_writer_uint(w, "entries", st.host_cache.entries);
        nx_writer_map_close(w);
    }
    nx_writer_array_open(w, "models");
    for (size_t i = 0; i < st.model_count; i++)
        write_model(self, &st.models[i]);
    nx_writer_array_close(w);
    if (op == NX_OP_STATUS) {
        write_agents(self);
        nx_writer_map_open(w, "router");
        nx_writer_uint(w, "tasks_in_flight", self->job_count);
        nx_writer_uint(w, "store_waiting", self->store_waiting);
        nx_writer_uint(w, "replies_held", self->replies_held);
        nx_writer_uint(w, "replies_dropped", self->replies_dropped);
        nx_writer_map_close(w);
    }
    nx__reply(self, client);
    nx_exec_status_clear(&st);
}

void nx__op_agents(nx__router_t *self, nx__client_t *client)
{
    nx_writer_reset(self->w);
    nx_writer_reply(self->w, "agents", client->id, client->id_len);
    write_agents(self);
    nx__reply(self, client);
}

/* Counters and latency histograms since the start (metrics.h); GET /metrics renders them. */
void nx__op_metrics(nx__router_t *self, nx__client_t *client)
{
    const char *names[self->conf->agent_count + 1];
    for (size_t i = 0; i < self->conf->agent_count; i++)
        names[i] = self->conf->agents[i].name;
    nx_writer_t *w = self->w;
    nx_writer_reset(w);
    nx_writer_reply(w, "metrics", client->id, client->id_len);
    nx_metrics_write(&self->metrics, names, w, nx_now_ns());
    nx_writer_map_open(w, "router");
    nx_writer_uint(w, "jobs", self->job_count);
    nx_writer_uint(w, "replies_held", self->replies_held);
    nx_writer_uint(w, "replies_dropped", self->replies_dropped);
    nx_writer_map_close(w);
    nx__reply(self, client);
}

/* ------------------------------------------------------------------------------------------
 * load / evict / pin / unpin
 */
static bool model_known(nx__router_t *self, const char *name)
{
    nx_exec_status_t st = {0};
    nx_err_t err = {0};
    bool found = false;
    if (nx_exec_status(self->exec, &st, &err) != NX_OK)
        return false;
    for (size_t i = 0; i < st.model_count && !found; i++)
        found = strcmp(st.models[i].name, name) == 0 || strcmp(st.models[i].path, name) == 0;
    /* an agent's `model:` as written (Org/Name@main where the model is called Org/Name):
     * the executor finds it the same way (nx__res_find) */
    for (size_t i = 0; i < self->conf->agent_count && !found; i++)
        found = strcmp(self->conf->agents[i].model, name) == 0;
    nx_exec_status_clear(&st);
    return found;
}

void nx__op_command(nx__router_t *self, nx__client_t *client, nx_request_t *req)
{
    if (!self->exec) {
        nx__reply_error(self, client, "shutting_down", "the daemon is stopping", 0);
        return;
    }
    if (!req->model || !model_known(self, req->model)) {
        char message[256];
        snprintf(message, sizeof message, "model '%.128s' is not used by any agent",
                 req->model ? req->model : "");
        nx__reply_error(self, client, "unknown_model", message, 0);
        return;
    }
    nx__cmd_t *cmd = calloc(1, sizeof *cmd);
    if (!cmd) {
        nx__reply_error(self, client, "internal", "out of memory (router_ops.c)", 0);
        return;
    }
    cmd->id = self->next_command_id++;
    cmd->client = *client;
    memset(client, 0, sizeof *client);
    cmd->next = self->cmds;
    self->cmds = cmd;
    nx_exec_command(self->exec, req->op, req->model, cmd->id);
}

void nx__command_report(nx__router_t *self, nx_report_t *rep)
{
    nx__cmd_t *cmd = NULL;
    for (nx__cmd_t **p = &self->cmds; *p; p = &(*p)->next) {
        if ((*p)->id == rep->command_id) {
            cmd = *p;
            *p = cmd->next;
            break;
        }
    }
    if (cmd && rep->error_code) {
        nx__reply_error(self, &cmd->client, rep->error_code,
                        rep->message ? rep->message : rep->error_code, 0);
    } else if (cmd) {
        nx_writer_reset(self->w);
        nx_writer_reply(self->w, "ok", cmd->client.id, cmd->client.id_len);
        nx_writer_str(self->w, "model", rep->model);
        nx_writer_str(self->w, "state", rep->state);
        nx__reply(self, &cmd->client);
    }
    if (cmd) {
        nx__client_clear(&cmd->client);
        free(cmd);
    }
    nx_report_free(rep);
}

/* ------------------------------------------------------------------------------------------
 * tasks / history: read by the store thread
 */
static void query(nx__router_t *self, nx__client_t *client, nx__sq_type_t type,
                  const char *filter, uint32_t limit)
{
    nx__client_t *ctx = malloc(sizeof *ctx);
    nx__store_req_t *sreq = ctx ? nx__store_req_new(type, ctx) : NULL;
    if (!sreq) {
        free(ctx);
        nx__reply_error(self, client, "internal", "out of memory (router_ops.c)", 0);
        return;
    }
    *ctx = *client;
    memset(client, 0, sizeof *client);
    sreq->filter = nx__strdup0(filter);
    sreq->limit = limit;
    nx__store_send(self, sreq);
}

void nx__op_tasks(nx__router_t *self, nx__client_t *client, nx_request_t *req)
{
    query(self, client, NX__SQ_TASKS, req->agent, req->limit ? req->limit : 20);
}

void nx__op_history(nx__router_t *self, nx__client_t *client, nx_request_t *req)
{
    if (!req->session) {
        nx__reply_error(self, client, "bad_request", "field 'session' is required", 0);
        return;
    }
    query(self, client, NX__SQ_HISTORY, req->session, 0);
}

static void write_tasks(nx_writer_t *w, const nx__store_req_t *sreq)
{
    nx_writer_array_open(w, "tasks");
    for (size_t i = 0; i < sreq->row_count; i++) {
        const nx_task_row_t *r = &sreq->rows[i];
        nx_writer_map_open(w, NULL);
        nx_writer_int(w, "task", r->id);
        nx_writer_str(w, "agent", r->agent);
        nx_writer_str(w, "status", nx_task_status_name(r->status));
        nx_writer_str(w, "session", r->session);
        nx_writer_real(w, "created_at", r->created_at);
        nx_writer_map_open(w, "timings");
        nx_writer_real(w, "queue_ms", r->timings.queue_ms);
        nx_writer_real(w, "swap_ms", r->timings.swap_ms);
        nx_writer_real(w, "ttft_ms", r->timings.ttft_ms);
        nx_writer_real(w, "total_ms", r->timings.total_ms);
        nx_writer_map_close(w);
        nx_writer_map_open(w, "usage");
        nx_writer_uint(w, "prompt_tokens", r->prompt_tokens);
        nx_writer_uint(w, "completion_tokens", r->completion_tokens);
        nx_writer_map_close(w);
        nx_writer_uint(w, "turns_dropped", r->turns_dropped);
        nx_writer_str(w, "error", r->error);
        nx_writer_str(w, "error_code", r->error_code);
        nx_writer_str(w, "input", r->input);
        nx_writer_str(w, "output", r->output);
        nx_writer_int(w, "parent", r->parent);
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
}

static void write_history(nx_writer_t *w, const nx__store_req_t *sreq)
{
    nx_writer_str(w, "session", sreq->filter);
    nx_writer_array_open(w, "messages");
    for (size_t i = 0; i < sreq->history_count; i++) {
        const nx_message_row_t *m = &sreq->history[i];
        nx_writer_map_open(w, NULL);
        nx_writer_str(w, "role", m->role);
        nx_writer_str(w, "content", m->content);
        nx_writer_str(w, "agent", m->agent);
        nx_writer_int(w, "task", m->task);
        nx_writer_real(w, "at", m->at);
        nx_writer_map_close(w);
    }
    nx_writer_array_close(w);
}

void nx__query_stored(nx__router_t *self, nx__store_req_t *sreq)
{
    nx__client_t *client = sreq->ctx;
    if (sreq->rc != NX_OK) {
        nx__reply_error(self, client, nx__store_wire_code(sreq->rc), sreq->err.msg, 0);
    } else if (sreq->type == NX__SQ_HISTORY && !sreq->session_found) {
        char message[256];
        snprintf(message, sizeof message, "session '%.128s' does not exist", sreq->filter);
        nx__reply_error(self, client, "not_found", message, 0);
    } else {
        nx_writer_t *w = self->w;
        nx_writer_reset(w);
        bool tasks = sreq->type == NX__SQ_TASKS;
        nx_writer_reply(w, tasks ? "tasks" : "history", client->id, client->id_len);
        if (tasks)
            write_tasks(w, sreq);
        else
            write_history(w, sreq);
        nx__reply(self, client);
    }
    nx__client_clear(client);
    free(client);
    nx__store_req_free(sreq);
}
