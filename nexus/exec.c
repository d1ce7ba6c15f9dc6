/* exec.c — the executor's thread and public face (see exec.h): nx_exec_new reserves the pool,
 * host cache and loader and reads every model's size (residency.c), then one thread drains the
 * inbox (tasks, cancels, commands, loader results), admits, steps one resident model per turn
 * (sched.c), plans loads and evictions (residency.c) and republishes the status copy. Other
 * threads only push messages into the inbox and read the status copy under its lock.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec_internal.h"
#include "toolset.h"
#include "typed.h"

#define NX__IDLE_WAIT_MS 20 /* how often an idle executor checks keep_alive and timeouts */

const char *nx__mstate_name(nx__mstate_t state)
{
    static const char *const names[] = {"disk", "host", "loading", "resident", "evicting"};
    return state <= NX__EVICTING ? names[state] : "?";
}

nx__msg_t *nx__msg_new(nx__msg_kind_t kind)
{
    nx__msg_t *msg = calloc(1, sizeof *msg);
    if (msg)
        msg->kind = kind;
    return msg;
}

void nx__msg_free(void *item)
{
    nx__msg_t *msg = item;
    if (!msg)
        return;
    nx_exec_task_free(msg->task);
    free(msg);
}

/* Frees what a task owns: input, every history turn's strings and calls (malloc'ed by
 * whoever built the task) and the array, the stop_owned strings and array, and the task. The
 * agent and next_model are borrowed from the config and left alone. NULL is fine. */
void nx_exec_task_free(nx_exec_task_t *task)
{
    if (!task)
        return;
    free(task->input);
    for (size_t i = 0; i < task->history_count; i++) {
        nx_chat_msg_t *m = &task->history[i];
        free((char *)m->role);
        free((char *)m->content);
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            free((char *)m->tool_calls[k].id);
            free((char *)m->tool_calls[k].name);
            free((char *)m->tool_calls[k].arguments);
        }
        free((void *)m->tool_calls);
        free((char *)m->tool_call_id);
        free((char *)m->name);
    }
    free(task->history);
    for (size_t i = 0; i < task->stop_owned_count; i++)
        free(task->stop_owned[i]);
    free(task->stop_owned);
    nx_typed_release(&task->output);
    nx_toolset_release(&task->tools);
    free(task);
}

void nx_report_free(nx_report_t *report)
{
    if (!report)
        return;
    free(report->text);
    free(report->message);
    free(report);
}

/* Copy what nx_exec_status shows; the executor calls it once per loop turn and before
 * every report. */
static void publish_status(nx_exec_t *exec)
{
    pthread_mutex_lock(&exec->status_lock);
    for (size_t i = 0; i < exec->model_count; i++) {
        const nx__model_t *m = &exec->models[i];
        nx_model_status_t *s = &exec->status_models[i];
        snprintf(s->name, sizeof s->name, "%s", m->name);
        snprintf(s->path, sizeof s->path, "%s", m->path);
        snprintf(s->source, sizeof s->source, "%s", m->source);
        snprintf(s->state, sizeof s->state, "%s", nx__mstate_name(m->state));
        s->bytes = m->weight_bytes;
        s->pinned = m->pinned;
        s->priority = m->priority;
        s->loads = m->loads;
        s->last_swap_ms = m->last_swap_ms;
        s->queue = m->queued;
        s->running = m->running_count;
        snprintf(s->error, sizeof s->error, "%s", m->error[0] ? m->error : m->load_error);
        exec->status_last_used_ns[i] = m->last_used_ns;
    }
    pthread_mutex_unlock(&exec->status_lock);
}

/* Every report but a token piece republishes the status first, so that whoever sees a report
 * sees a status at least as new. */
void nx__report(nx_exec_t *exec, nx_report_t *report)
{
    if (report->kind != NX_REPORT_TOKEN && exec->status_models)
        publish_status(exec);
    if (exec->opts.report)
        exec->opts.report(exec->opts.report_user, report);
    else
        nx_report_free(report);
}

void nx__report_model(nx_exec_t *exec, const nx__model_t *model, double ms, const char *reason)
{
    nx_report_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->kind = NX_REPORT_MODEL;
    snprintf(r->model, sizeof r->model, "%s", model->name);
    snprintf(r->state, sizeof r->state, "%s", nx__mstate_name(model->state));
    r->bytes = model->weight_bytes;
    r->ms = ms;
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
    nx_log(NX_LOG_INFO, "model %s: %s (%.1f ms, %s)", model->name, r->state, ms, r->reason);
    nx__report(exec, r);
}

void nx__report_command(nx_exec_t *exec, uint64_t id, const char *error_code,
                        const char *message, const nx__model_t *model)
{
    nx_report_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->kind = NX_REPORT_COMMAND;
    r->command_id = id;
    r->error_code = error_code;
    r->message = message ? strdup(message) : NULL;
    if (model) {
        snprintf(r->model, sizeof r->model, "%s", model->name);
        snprintf(r->state, sizeof r->state, "%s", nx__mstate_name(model->state));
        r->bytes = model->weight_bytes;
    }
    nx__report(exec, r);
}

static void handle(nx_exec_t *exec, nx__msg_t *msg)
{
    switch (msg->kind) {
    case NX__MSG_SUBMIT:
        nx__sched_submit(exec, msg->task);
        msg->task = NULL;
        break;
    case NX__MSG_CANCEL:
        nx__sched_cancel(exec, msg->task_id);
        break;
    case NX__MSG_COMMAND:
        nx__res_command(exec, msg);
        break;
    case NX__MSG_STOP:
        exec->stopping = true;
        break;
    case NX__MSG_LOADED:
        nx__res_on_loaded(exec, msg);
        break;
    case NX__MSG_EVICTED:
        nx__res_on_evicted(exec, msg);
        break;
    }
    nx__msg_free(msg);
}

static void *exec_main(void *arg)
{
    nx_exec_t *exec = arg;
    while (!exec->stopping) {
        nx__msg_t *msg;
        while (!exec->stopping && (msg = nx_mailbox_pop(exec->inbox)))
            handle(exec, msg);
        if (exec->stopping)
            break;
        nx__sched_timeouts(exec);
        nx__sched_admit(exec); /* before planning: resident models' queued tasks take KV first */
        nx__res_plan(exec);
        bool stepped = nx__sched_step(exec);
        atomic_store_explicit(&exec->stepping, stepped, memory_order_relaxed);
        publish_status(exec);
        if (!stepped)
            nx_mailbox_wait(exec->inbox, NX__IDLE_WAIT_MS);
    }
    nx__sched_fail_all(exec, "shutting_down", "the executor is stopping");
    nx__res_loader_stop(exec); /* finishes the loader's jobs; their results are in the inbox */
    nx__msg_t *msg;
    while ((msg = nx_mailbox_pop(exec->inbox))) {
        if (msg->kind == NX__MSG_LOADED || msg->kind == NX__MSG_EVICTED)
            handle(exec, msg);
        else if (msg->kind == NX__MSG_SUBMIT) {
            nx__sched_submit(exec, msg->task); /* answered at once: shutting down */
            msg->task = NULL;
            nx__msg_free(msg);
        } else {
            nx__msg_free(msg);
        }
    }
    publish_status(exec);
    return NULL;
}

static int open_device(nx_exec_t *exec, nx_err_t *err)
{
    const nx_nexus_conf_t *conf = exec->conf;
    nx_pool_opts_t popts = {.device = conf->device, .bytes = conf->pool_bytes,
                            .fraction = conf->pool_bytes ? 0 : conf->pool_fraction};
    exec->pool = nx_pool_new(&popts, err);
    if (!exec->pool)
        return err->code;
    if (conf->host_cache_bytes) {
        exec->cache = nx_hostcache_new(exec->pool, conf->host_cache_bytes, err);
        if (!exec->cache)
            return err->code;
    }
    /* The I/O shape for the models folder's file system (a calibration, or its device). */
    nx_loader_opts_t lopts = {.cache = exec->cache, .shape_path = conf->models_dir};
    exec->loader = nx_loader_new(exec->pool, &lopts, err);
    if (!exec->loader)
        return err->code;
    nx_io_shape_t shape;
    nx_io_source_t source;
    char why[256];
    nx_loader_shape(exec->loader, &shape, &source, why, sizeof why);
    nx_log(NX_LOG_INFO,
           "loader: %s, %u thread%s x %u in flight x %llu MiB reads%s (io_source %s%s%s)",
           nx_loader_io_name(shape.io), shape.threads, shape.threads == 1 ? "" : "s",
           shape.queue_depth, (unsigned long long)(shape.chunk_bytes >> 20),
           shape.cold_buffered ? ", buffered" : "",
           nx_io_source_name(source), why[0] ? ": " : "", why);
    return NX_OK;
}

nx_exec_t *nx_exec_new(const nx_exec_opts_t *opts, nx_err_t *err)
{
    assert(opts && opts->conf);
    nx_exec_t *exec = calloc(1, sizeof *exec);
    if (!exec) {
        nx_err_set(err, NX_ENOMEM, "executor: out of memory");
        return NULL;
    }
    exec->opts = *opts;
    exec->conf = opts->conf;
    pthread_mutex_init(&exec->status_lock, NULL);
    exec->inbox = nx_mailbox_new();
    exec->loader_inbox = nx_mailbox_new();
    if (!exec->inbox || !exec->loader_inbox) {
        nx_err_set(err, NX_ENOMEM, "executor: out of memory for its mailboxes");
        goto fail;
    }
    if (open_device(exec, err) != NX_OK || nx__res_init(exec, err) != NX_OK)
        goto fail;
    exec->status_models = calloc(exec->model_count + 1, sizeof *exec->status_models);
    exec->status_last_used_ns = calloc(exec->model_count + 1, sizeof(uint64_t));
    if (!exec->status_models || !exec->status_last_used_ns) {
        nx_err_set(err, NX_ENOMEM, "executor: out of memory for its status");
        goto fail;
    }
    publish_status(exec);
    if (nx__res_loader_start(exec, err) != NX_OK)
        goto fail;
    if (pthread_create(&exec->thread, NULL, exec_main, exec) != 0) {
        nx_err_set(err, NX_ENOMEM, "executor: cannot start its thread");
        goto fail;
    }
    exec->thread_started = true;
    return exec;
fail:
    nx_exec_destroy(&exec);
    return NULL;
}

void nx_exec_destroy(nx_exec_t **self_p)
{
    nx_exec_t *exec = self_p ? *self_p : NULL;
    if (!exec)
        return;
    if (exec->thread_started) {
        nx__msg_t *stop = nx__msg_new(NX__MSG_STOP);
        while (!stop || !nx_mailbox_push(exec->inbox, stop)) /* out of memory: retry */
            stop = stop ? stop : nx__msg_new(NX__MSG_STOP);
        pthread_join(exec->thread, NULL);
    } else {
        nx__res_loader_stop(exec);
    }
    nx__res_fini(exec);
    nx_loader_destroy(&exec->loader);
    nx_hostcache_destroy(&exec->cache);
    nx_pool_destroy(&exec->pool);
    nx_mailbox_destroy(&exec->inbox, nx__msg_free);
    nx_mailbox_destroy(&exec->loader_inbox, nx__msg_free);
    free(exec->status_models);
    free(exec->status_last_used_ns);
    pthread_mutex_destroy(&exec->status_lock);
    free(exec);
    *self_p = NULL;
}

/* Push or, out of memory, answer as the executor would have: a lost message would leave a
 * client waiting forever. */
static void post(nx_exec_t *self, nx__msg_t *msg)
{
    if (msg && nx_mailbox_push(self->inbox, msg))
        return;
    nx_log(NX_LOG_ERROR, "executor: out of memory queueing a message; it is dropped");
    nx__msg_free(msg);
}

void nx_exec_submit(nx_exec_t *self, nx_exec_task_t *task)
{
    nx__msg_t *msg = nx__msg_new(NX__MSG_SUBMIT);
    if (!msg) {
        nx_exec_task_free(task);
        return;
    }
    msg->task = task;
    post(self, msg);
}

void nx_exec_cancel(nx_exec_t *self, int64_t task_id)
{
    nx__msg_t *msg = nx__msg_new(NX__MSG_CANCEL);
    if (msg)
        msg->task_id = task_id;
    post(self, msg);
}

void nx_exec_command(nx_exec_t *self, nx_op_t op, const char *model, uint64_t command_id)
{
    nx__msg_t *msg = nx__msg_new(NX__MSG_COMMAND);
    if (msg) {
        msg->op = op;
        msg->command_id = command_id;
        snprintf(msg->model, sizeof msg->model, "%s", model ? model : "");
    }
    post(self, msg);
}

int nx_exec_status(nx_exec_t *self, nx_exec_status_t *out, nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    nx_pool_stats(self->pool, &out->pool);
    if (self->cache)
        nx_hostcache_stats(self->cache, &out->host_cache);
    out->models = calloc(self->model_count + 1, sizeof *out->models);
    if (!out->models)
        return nx_err_set(err, NX_ENOMEM, "status: out of memory for %zu models",
                          self->model_count);
    uint64_t now = nx_now_ns();
    pthread_mutex_lock(&self->status_lock);
    memcpy(out->models, self->status_models, self->model_count * sizeof *out->models);
    for (size_t i = 0; i < self->model_count; i++) {
        uint64_t used = self->status_last_used_ns[i];
        out->models[i].last_used_ms_ago = used ? (double)(now - used) / 1e6 : -1;
    }
    pthread_mutex_unlock(&self->status_lock);
    out->model_count = self->model_count;
    return NX_OK;
}

bool nx_exec_model_broken(nx_exec_t *self, const nx_agent_conf_t *agent, char *why,
                          size_t cap)
{
    /* the queues and their models are fixed at start: only the status copy needs the lock */
    const nx__model_t *model = NULL;
    for (size_t i = 0; i < self->queue_count && !model; i++)
        if (self->queues[i].agent == agent ||
            strcmp(self->queues[i].agent->name, agent->name) == 0)
            model = self->queues[i].model;
    if (!model)
        return false;
    pthread_mutex_lock(&self->status_lock);
    const char *error = self->status_models[model - self->models].error;
    bool broken = error[0] != '\0';
    if (broken && cap)
        snprintf(why, cap, "%s", error);
    pthread_mutex_unlock(&self->status_lock);
    return broken;
}

void nx_exec_status_clear(nx_exec_status_t *status)
{
    free(status->models);
    memset(status, 0, sizeof *status);
}

const nx_tokenizer_t *nx_exec_agent_tokenizer(nx_exec_t *self, const nx_agent_conf_t *agent,
                                              nx_chat_kind_t *kind_out)
{
    for (size_t i = 0; i < self->queue_count; i++)
        if (self->queues[i].agent == agent ||
            strcmp(self->queues[i].agent->name, agent->name) == 0) {
            const nx__model_t *m = self->queues[i].model;
            if (kind_out)
                *kind_out = agent->chat_template == NX_CHAT_AUTO ? m->chat_kind
                                                                 : agent->chat_template;
            return m->tok;
        }
    return NULL;
}
