/* router_task.c — a task's life on the router thread:
 *
 *   request -> checks (agent, route, queue, params) -> store INSERT -> commit -> "accepted",
 *   executor submit -> STARTED (row running) -> TOKENs (final stage, streaming) -> FINISHED ->
 *   store FINISH (+ the next stage's INSERT in the same transaction) -> commit ->
 *   the next stage goes to the executor, or the last one answers "result" / "error".
 *
 * The client always sees the first stage's task id (the root); each stage is its own row
 * with `parent` pointing at the stage before it.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "router_int.h"

/* ------------------------------------------------------------------------------------------
 * Small helpers
 */
static char **strv_dup(char *const *v, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++) {
        out[i] = strdup(v[i]);
        if (!out[i]) {
            while (i--)
                free(out[i]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void nx__job_free(nx__job_t *job)
{
    if (!job)
        return;
    nx__out_forget_job(job);
    nx__client_clear(&job->client);
    strv_free(job->route, job->route_count);
    strv_free(job->params.stop, job->params.stop_count);
    free(job->session);
    free(job->first_input);
    for (size_t i = 0; i < job->history_count; i++)
        nx_turn_clear(&job->history[i]);
    free(job->history);
    nx_report_free(job->finished);
    nx_typed_release(&job->task_typed);
    nx_typed_release(&job->stage_typed);
    nx_toolset_release(&job->task_tools);
    nx_toolset_release(&job->stage_tools);
    nx_tools_parser_destroy(&job->parser);
    free(job->tool_choice_json);
    for (size_t i = 0; i < job->base_count; i++)
        nx_turn_clear(&job->base[i]);
    free(job->base);
    for (size_t i = 0; i < job->convo_count; i++)
        nx_turn_clear(&job->convo[i]);
    free(job->convo);
    free(job);
}

/* ------------------------------------------------------------------------------------------
 * Typed agents (typed.h): the constraint a stage decodes under, and its input check
 */
static const char *constraint_field(const nx_request_t *req)
{
    return req->constraint_kind == NX_CONSTRAINT_GBNF ? "grammar" : "schema";
}

/* The stage's output constraint: the request's own for the last stage, else the agent's
 * output_schema; *out NULL when neither. Compiled once per distinct text (the cache). */
static int stage_constraint(nx__router_t *self, const nx__job_t *job,
                            const nx_agent_conf_t *agent, bool last, nx_typed_t **out,
                            nx_err_t *err)
{
    *out = NULL;
    if (last && job->task_typed) {
        *out = nx_typed_ref(job->task_typed);
        return NX_OK;
    }
    if (!agent->output_schema)
        return NX_OK;
    int rc = nx_typed_cache_get(self->typed, NX_TYPED_SCHEMA, agent->output_schema,
                                strlen(agent->output_schema), agent->output_strict, out, err);
    if (rc != NX_OK)
        nx_err_prefix(err, "agent '%s': output_schema: ", agent->name);
    return rc;
}

/* An agent with input_schema takes JSON valid under it: NX_EINVAL naming the pointer. */
static int check_input(nx__router_t *self, const nx_agent_conf_t *agent, const char *input,
                       nx_err_t *err)
{
    if (!agent->input_schema)
        return NX_OK;
    nx_typed_t *schema = NULL;
    int rc = nx_typed_cache_get(self->typed, NX_TYPED_SCHEMA, agent->input_schema,
                                strlen(agent->input_schema), false, &schema, err);
    if (rc == NX_OK)
        rc = nx_typed_check_input(schema, input, err);
    nx_typed_release(&schema);
    if (rc != NX_OK)
        nx_err_prefix(err, "agent '%s': ", agent->name);
    return rc;
}

/* The request's id for the tasks table: its text when it is a string, else its bytes in hex. */
static char *client_id_text(const nx__client_t *client)
{
    if (!client->id)
        return NULL;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    char *out = NULL;
    if (msgpack_unpack_next(&u, (const char *)client->id, client->id_len, NULL) ==
            MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_STR) {
        out = strndup(u.data.via.str.ptr, u.data.via.str.size);
    } else if ((out = malloc(client->id_len * 2 + 1))) {
        for (size_t i = 0; i < client->id_len; i++)
            sprintf(out + 2 * i, "%02x", client->id[i]);
        out[client->id_len * 2] = '\0';
    }
    msgpack_unpacked_destroy(&u);
    return out;
}

static char *params_json(const nx_params_t *p)
{
    json_t *o = json_object();
    if (p->has_max_tokens)
        json_object_set_new(o, "max_tokens", json_integer(p->max_tokens));
    if (p->has_temperature)
        json_object_set_new(o, "temperature", json_real(p->temperature));
    if (p->has_top_p)
        json_object_set_new(o, "top_p", json_real(p->top_p));
    if (p->has_top_k)
        json_object_set_new(o, "top_k", json_integer(p->top_k));
    if (p->has_min_p)
        json_object_set_new(o, "min_p", json_real(p->min_p));
    if (p->has_repetition_penalty)
        json_object_set_new(o, "repetition_penalty", json_real(p->repetition_penalty));
    if (p->has_seed)
        json_object_set_new(o, "seed", json_integer((json_int_t)p->seed));
    if (p->has_stop) {
        json_t *a = json_array();
        for (size_t i = 0; i < p->stop_count; i++)
            json_array_append_new(a, json_string(p->stop[i]));
        json_object_set_new(o, "stop", a);
    }
    char *text = json_object_size(o) ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* The route still ahead after the stage at route[from - 1], as a JSON array, or NULL. */
static char *route_json(const nx__job_t *job, size_t from)
{
    if (!job->route || from >= job->route_count)
        return NULL;
    json_t *a = json_array();
    for (size_t i = from; i < job->route_count; i++)
        json_array_append_new(a, json_string(job->route[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

/* The agent of the stage after the current one: the route's next entry, or (without a
 * route) the agent's `next`; NULL at the end. */
static const nx_agent_conf_t *next_agent(nx__router_t *self, const nx__job_t *job)
{
    if (job->stage_index + 1 >= NX__MAX_STAGES)
        return NULL;
    if (job->route)
        return job->route_pos < job->route_count
                   ? nx_nexus_conf_agent(self->conf, job->route[job->route_pos])
                   : NULL;
    return job->agent->next ? nx_nexus_conf_agent(self->conf, job->agent->next) : NULL;
}

/* Fill an INSERT for `agent` (the first stage or the next one). */
int nx__fill_insert(nx__router_t *self, const nx__job_t *job, const nx_agent_conf_t *agent,
                       const char *input, int64_t parent, size_t route_from,
                       nx__task_insert_t *ins)
{
    ins->agent = strdup(agent->name);
    ins->input = strdup(input ? input : "");
    ins->session = nx__strdup0(job->session);
    ins->client_id = client_id_text(&job->client);
    ins->params_json = params_json(&job->params);
    ins->route_json = route_json(job, route_from);
    ins->parent = parent;
    ins->history_turns = agent->memory_session && job->session ? agent->memory_turns : 0;
    if (agent->memory_session && job->session && ins->history_turns == 0)
        ins->history_turns = 1000000; /* memory_turns 0: every turn */
    if (parent == 0 && job->history_count)
        ins->history_turns = 0; /* the request brought its conversation: the session's is
                                   not read (protocol.md: task, history) */
    return ins->agent && ins->input ? NX_OK : NX_ENOMEM;
}

/* The first stage the request would run (the agent, then its route, or its `next` chain)
 * whose model is known to be broken, with the reason in why; NULL when none is. */
static const nx_agent_conf_t *broken_stage(nx__router_t *self, const nx_agent_conf_t *agent,
                                           const nx_request_t *req, char *why, size_t cap)
{
    if (!self->exec)
        return NULL;
    const nx_agent_conf_t *stage = agent;
    for (size_t i = 0; stage && i < NX__MAX_STAGES; i++) {
        if (nx_exec_model_broken(self->exec, stage, why, cap))
            return stage;
        if (req->route_count)
            stage = i < req->route_count ? nx_nexus_conf_agent(self->conf, req->route[i]) : NULL;
        else
            stage = stage->next ? nx_nexus_conf_agent(self->conf, stage->next) : NULL;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * The request
 */
/* A task request answered with an error instead of `accepted`: counted for /metrics. */
/* A request's own route is a pipeline too: each stage with an input_schema must accept every
 * answer of the stage before (its agent's output_schema; free text never fits), as
 * `nexusd --check` requires of `next` chains (conf.c), here by the same sound check
 * (nx_gram_schema_compat). NX_EINVAL naming the route entry and why. */
static int check_route_types(nx__router_t *self, const nx_agent_conf_t *agent,
                             const nx_request_t *req, nx_err_t *err)
{
    const nx_agent_conf_t *prev = agent;
    for (size_t i = 0; i < req->route_count; i++) {
        const nx_agent_conf_t *at = nx_nexus_conf_agent(self->conf, req->route[i]);
        if (at && at->input_schema) {
            const char *out = prev->output_schema;
            nx_gram_schema_opts_t opts = {.strict = prev->output_strict};
            int rc = nx_gram_schema_compat(out, out ? strlen(out) : 0, at->input_schema,
                                           strlen(at->input_schema), &opts, err);
            if (rc != NX_OK) {
                if (rc == NX_ENOMEM)
                    return rc;
                if (!out)
                    nx_err_set(err, NX_EINVAL, "route[%zu] '%s': '%s' answers free text (no "
                               "output_schema), and '%s' takes only JSON valid under its "
                               "input_schema", i, at->name, prev->name, at->name);
                else
                    nx_err_prefix(err, "route[%zu] '%s': '%s' output_schema does not fit its "
                                  "input_schema: ", i, at->name, prev->name);
                return NX_EINVAL;
            }
        }
        if (at)
            prev = at;
    }
    return NX_OK;
}

static void refuse(nx__router_t *self, const nx__client_t *client, const char *code,
                   const char *message)
{
    nx_metrics_refused(&self->metrics, code);
    nx__reply_error(self, client, code, message, 0);
}

void nx__op_task(nx__router_t *self, nx__client_t *client, nx_request_t *req)
{
    char message[256];
    const nx_agent_conf_t *agent = nx_nexus_conf_agent(self->conf, req->agent);
    if (!agent) {
        snprintf(message, sizeof message, "agent '%.64s' is not configured", req->agent);
        refuse(self, client, "unknown_agent", message);
        return;
    }
    for (size_t i = 0; i < req->route_count; i++) {
        if (!nx_nexus_conf_agent(self->conf, req->route[i])) {
            snprintf(message, sizeof message, "route[%zu] '%.64s' names no agent", i,
                     req->route[i]);
            refuse(self, client, "unknown_agent", message);
            return;
        }
    }
    nx_err_t fit = {0};
    if (check_route_types(self, agent, req, &fit) != NX_OK) {
        refuse(self, client, fit.code == NX_ENOMEM ? "internal" : "bad_request", fit.msg);
        return;
    }
    char why[1200];
    const nx_agent_conf_t *broken = broken_stage(self, agent, req, why, sizeof why);
    if (broken) { /* it could only fail: say so now rather than accept it */
        char text[1300];
        snprintf(text, sizeof text, "agent '%.64s': %s", broken->name, why);
        refuse(self, client, "model_error", text);
        return;
    }
    size_t ai = nx__agent_index(self, agent);
    if (self->queued[ai] + self->running[ai] >= agent->queue_limit) {
        snprintf(message, sizeof message,
                 "agent '%s' has %u tasks queued or running (limits.queue is %u)", agent->name,
                 self->queued[ai] + self->running[ai], agent->queue_limit);
        refuse(self, client, "busy", message);
        return;
    }
    nx_sampling_t sampling = agent->generation;
    nx_err_t err = {0};
    if (nx_params_apply(&req->params, &sampling, &err) != NX_OK) {
        refuse(self, client, "bad_request", err.msg);
        return;
    }
    nx_typed_t *task_typed = NULL;
    if (req->constraint_kind != NX_CONSTRAINT_NONE) {
        const char *text = req->constraint ? req->constraint : "";
        int rc = nx_typed_cache_get(self->typed, req->constraint_kind, text, strlen(text),
                                    req->constraint_strict, &task_typed, &err);
        if (rc != NX_OK) {
            nx_err_prefix(&err, "field '%s': ", constraint_field(req));
            refuse(self, client, rc == NX_ENOMEM ? "internal" : "bad_request", err.msg);
            return;
        }
    }
    nx_toolset_t *task_tools = NULL;
    if (nx__tools_request(self, agent, req, task_typed != NULL, &task_tools, &err) != NX_OK) {
        nx_typed_release(&task_typed);
        refuse(self, client, err.code == NX_ENOMEM ? "internal" : "bad_request", err.msg);
        return;
    }
    if (check_input(self, agent, req->input ? req->input : "", &err) != NX_OK) {
        nx_typed_release(&task_typed);
        nx_toolset_release(&task_tools);
        nx_err_prefix(&err, "field 'input': ");
        refuse(self, client, "bad_request", err.msg);
        return;
    }
    nx__job_t *job = calloc(1, sizeof *job);
    if (job) {
        job->task_typed = task_typed;
        job->task_tools = task_tools;
        job->no_input = req->no_input;
        job->parallel_tool_calls = req->parallel_tool_calls;
        job->tool_choice_json = nx__strdup0(req->tool_choice_json);
    } else {
        nx_typed_release(&task_typed);
        nx_toolset_release(&task_tools);
    }
    nx__store_req_t *sreq = nx__store_req_new(NX__SQ_INSERT, job);
    if (!job || !sreq)
        goto out_nomem;
    job->agent = agent;
    job->stream = req->stream;
    job->accepted_ns = nx_now_ns();
    job->session = nx__strdup0(req->session);
    job->first_input = strdup(req->input ? req->input : "");
    job->params = req->params;
    job->params.stop = NULL;
    if (req->params.stop_count &&
        !(job->params.stop = strv_dup(req->params.stop, req->params.stop_count)))
        job->params.stop_count = 0;
    if (req->route_count) {
        job->route = strv_dup(req->route, req->route_count);
        job->route_count = job->route ? req->route_count : 0;
    }
    job->history = req->history; /* moved: the request no longer owns them */
    job->history_count = req->history_count;
    req->history = NULL;
    req->history_count = 0;
    job->client = *client; /* the job answers this client from now on */
    memset(client, 0, sizeof *client);
    if (nx__fill_insert(self, job, agent, req->input, 0, 0, &sreq->insert) != NX_OK)
        goto out_nomem;
    self->queued[ai]++;
    self->job_count++;
    job->in_store = true;
    nx__store_send(self, sreq);
    return;
out_nomem:
    refuse(self, job ? &job->client : client, "internal",
           "out of memory accepting a task (router_task.c)");
    nx__store_req_free(sreq);
    nx__job_free(job);
}

/* ------------------------------------------------------------------------------------------
 * Stages
 */
nx_report_t *nx__synth_finished(nx__job_t *job, nx_task_status_t status, const char *code,
                                   const char *message)
{
    nx_report_t *rep = calloc(1, sizeof *rep);
    if (rep) {
        rep->kind = NX_REPORT_FINISHED;
        rep->task_id = job->stage_id;
        rep->status = status;
        rep->error_code = code;
        rep->message = strdup(message);
    }
    return rep;
}


/* Hand the stage to the executor, with the session's turns the store read for it. */
void nx__stage_start(nx__router_t *self, nx__job_t *job, nx__store_req_t *sreq,
                     const char *input)
{
    nx_report_t *early = NULL;
    if (!self->exec || job->cancel_requested) { /* it never reaches the executor */
        early = !self->exec ? nx__synth_finished(job, NX_TASK_FAILED, "shutting_down",
                                             "the daemon is stopping")
                            : nx__synth_finished(job, NX_TASK_CANCELED, "canceled",
                                             "the task was canceled");
        if (early)
            nx__stage_finished(self, job, early);
        return;
    }
    const nx_agent_conf_t *next = next_agent(self, job);
    nx_err_t err = {0};
    nx_typed_release(&job->stage_typed);
    if ((job->stage_index > 0 && job->tool_round == 0 &&
         check_input(self, job->agent, input, &err) != NX_OK) ||
        stage_constraint(self, job, job->agent, !next, &job->stage_typed, &err) != NX_OK) {
        if ((early = nx__synth_finished(job, NX_TASK_FAILED, "bad_request", err.msg)))
            nx__stage_finished(self, job, early);
        return;
    }
    nx_exec_task_t *t = NULL;
    int rc = nx__tools_stage_setup(self, job, !next, &err);
    if (rc == NX_ENOMEM)
        goto out_nomem;
    if (rc != NX_OK) {
        if ((early = nx__synth_finished(job, NX_TASK_FAILED, "bad_request", err.msg)))
            nx__stage_finished(self, job, early);
        return;
    }
    if (!(t = calloc(1, sizeof *t)))
        goto out_nomem;
    t->output = nx_typed_ref(job->stage_typed);
    t->tools = nx_toolset_ref(job->stage_tools);
    t->no_input = job->stage_index == 0 && job->no_input;
    t->task_id = job->stage_id;
    t->agent = job->agent;
    t->input = strdup(input ? input : "");
    t->sampling = job->agent->generation;
    if (nx_params_apply(&job->params, &t->sampling, &err) != NX_OK) {
        nx_log(NX_LOG_WARN, "task %lld: params do not apply to agent '%s' (%s); its own "
               "settings are used", (long long)job->stage_id, job->agent->name, err.msg);
        t->sampling = job->agent->generation;
    } else if (job->params.has_stop) {
        t->stop_owned = strv_dup(job->params.stop, job->params.stop_count);
        t->stop_owned_count = t->stop_owned ? job->params.stop_count : 0;
        t->sampling.stop = (const char *const *)t->stop_owned;
        t->sampling.stop_count = t->stop_owned_count;
    }
    if (job->tool_round > 0) { /* a later round of agent tool calls: the turns so far */
        if (nx__tools_history(job, t) != NX_OK)
            goto out_nomem;
    } else if (sreq && sreq->history_count &&
               (t->history = calloc(sreq->history_count, sizeof *t->history))) {
        for (size_t i = 0; i < sreq->history_count; i++) { /* the strings move over */
            t->history[i].role = sreq->history[i].role;
            t->history[i].content = sreq->history[i].content;
            sreq->history[i].role = sreq->history[i].content = NULL;
        }
        t->history_count = sreq->history_count;
    } else if (job->stage_index == 0 && job->history_count &&
               (t->history = calloc(job->history_count, sizeof *t->history))) {
        for (size_t i = 0; i < job->history_count; i++) { /* the request's turns move over */
            nx_turn_t *from = &job->history[i];
            nx_chat_msg_t *to = &t->history[i];
            nx_chat_tool_call_t *calls =
                from->call_count ? calloc(from->call_count, sizeof *calls) : NULL;
            if (from->call_count && !calls) {
                t->history_count = i;
                goto out_nomem;
            }
            for (size_t k = 0; k < from->call_count; k++) {
                calls[k] = (nx_chat_tool_call_t){from->calls[k].id, from->calls[k].name,
                                                 from->calls[k].arguments};
                from->calls[k] = (nx_turn_call_t){0};
            }
            *to = (nx_chat_msg_t){.role = from->role, .content = from->content,
                                  .tool_calls = calls, .n_tool_calls = from->call_count,
                                  .tool_call_id = from->tool_call_id, .name = from->name};
            from->role = from->content = from->tool_call_id = from->name = NULL;
        }
        t->history_count = job->history_count;
    }
    if (job->agent->tool_count && job->tool_round == 0 &&
        nx__tools_save_base(job, t, input) != NX_OK)
        goto out_nomem;
    t->stream = job->stream && !next; /* only the last stage streams */
    t->accepted_ns = job->stage_index == 0 ? job->accepted_ns : nx_now_ns();
    t->next_model =
        next && strcmp(next->model_path, job->agent->model_path) != 0 ? next->model_path : NULL;
    if (!t->input)
        goto out_nomem;
    nx_exec_submit(self->exec, t);
    return;
out_nomem:
    if (t)
        nx_exec_task_free(t);
    early = nx__synth_finished(job, NX_TASK_FAILED, "internal", "out of memory starting a task");
    if (early)
        nx__stage_finished(self, job, early);
}

/* A stage ended (report from the executor, or made up when it never reached it): store it;
 * with a next stage, insert that in the same transaction. */
void nx__stage_finished(nx__router_t *self, nx__job_t *job, nx_report_t *rep)
{
    size_t ai = nx__agent_index(self, job->agent);
    if (job->started)
        self->running[ai]--;
    else
        self->queued[ai]--;
    job->started = false;
    if (job->cancel_requested && rep->status != NX_TASK_CANCELED) {
        /* The client was told "canceled" while this end was on its way from the executor: the
         * task ends canceled (stored so), as that answer promised, not with a result. */
        rep->status = NX_TASK_CANCELED;
        rep->error_code = "canceled";
        free(rep->message);
        rep->message = strdup("the task was canceled");
    }
    if (rep->status == NX_TASK_DONE && !self->exec && next_agent(self, job)) {
        /* A stage finished during shutdown but the pipeline has more: its output is not the
         * answer, and the next stage cannot run. */
        rep->status = NX_TASK_FAILED;
        rep->error_code = "shutting_down";
        free(rep->message);
        rep->message = strdup("the daemon stopped before the pipeline's next stage could run");
    }
    if (rep->status == NX_TASK_DONE && job->stage_typed && rep->stop_reason &&
        !strcmp(rep->stop_reason, "length") && next_agent(self, job)) {
        /* A typed stage cut by max_tokens has no complete answer to hand on: the pipeline
         * ends here, saying why, rather than at the next stage's input check. */
        char text[400];
        snprintf(text, sizeof text, "agent '%s' stopped at its token limit (max_tokens, or "
                 "its context) after %u tokens, before its answer under output_schema was "
                 "complete, so the pipeline cannot go on to '%s' (raise generation.max_tokens)",
                 job->agent->name, (unsigned)rep->completion_tokens,
                 next_agent(self, job)->name);
        rep->status = NX_TASK_FAILED;
        rep->error_code = "incomplete";
        free(rep->message);
        rep->message = strdup(text);
    }
    nx__store_req_t *sreq = nx__store_req_new(NX__SQ_FINISH, job);
    if (!sreq) {
        nx_log(NX_LOG_ERROR, "task %lld: out of memory storing its end", (long long)rep->task_id);
        nx_report_free(rep);
        return; /* recovery at the next start marks the row failed */
    }
    sreq->task_id = job->stage_id;
    sreq->status = rep->status;
    sreq->output = nx__strdup0(rep->status == NX_TASK_DONE ? rep->text : NULL);
    sreq->error_code = nx__strdup0(rep->status == NX_TASK_DONE ? NULL : rep->error_code);
    sreq->error = nx__strdup0(rep->status == NX_TASK_DONE ? NULL : rep->message);
    sreq->timings = rep->timings;
    sreq->prompt_tokens = rep->prompt_tokens;
    sreq->completion_tokens = rep->completion_tokens;
    sreq->turns_dropped = rep->turns_dropped;
    const nx_agent_conf_t *next =
        rep->status == NX_TASK_DONE && self->exec ? next_agent(self, job) : NULL;
    job->next = next;
    if (next) {
        size_t from = job->route ? job->route_pos + 1 : 0;
        nx__fill_insert(self, job, next, rep->text, job->stage_id, from, &sreq->insert);
        self->queued[nx__agent_index(self, next)]++;
    } else if (job->session && rep->status == NX_TASK_DONE) {
        sreq->msg_session = strdup(job->session);
        sreq->msg_user = nx__strdup0(job->first_input);
        sreq->msg_assistant = strdup(rep->text ? rep->text : "");
        sreq->msg_agent = strdup(job->agent->name);
        sreq->msg_task = job->root_id;
    }
    job->finished = rep;
    job->in_store = true;
    nx__store_send(self, sreq);
}

/* A constrained answer: schema_digest, and its JSON value unless max_tokens cut it. */
static void write_typed(nx_writer_t *w, const nx_typed_t *typed, const nx_report_t *rep)
{
    if (!typed)
        return;
    nx_writer_str(w, "schema_digest", nx_typed_digest(typed));
    if (!nx_typed_has_value(typed) || (rep->stop_reason && !strcmp(rep->stop_reason, "length")))
        return;
    json_t *value = nx_typed_answer_value(rep->text);
    if (value)
        nx_writer_json(w, "value", value);
    json_decref(value);
}

static void reply_final(nx__router_t *self, nx__job_t *job, const nx__store_req_t *sreq)
{
    nx_report_t *rep = job->finished;
    /* An end that could not be stored is not the end the client is told: it fails (and the
     * store thread keeps that end aside for listings and for the database). */
    const char *status = nx_task_status_name(sreq->rc != NX_OK ? NX_TASK_FAILED : rep->status);
    nx__event_task(self, job->stage_id, job->agent->name, status);
    if (sreq->rc != NX_OK) {
        char message[1200];
        snprintf(message, sizeof message, "the task's end could not be stored: %s",
                 sreq->err.msg);
        nx__reply_error(self, &job->client, nx__store_wire_code(sreq->rc), message,
                        job->root_id);
    } else if (rep->status != NX_TASK_DONE) {
        nx__reply_error(self, &job->client, rep->error_code ? rep->error_code : "internal",
                        rep->message ? rep->message : "the task failed", job->root_id);
    } else {
        nx_writer_t *w = self->w;
        if (job->stage_tools)
            nx__tools_result_parse(self, job, rep); /* may send the stream's last events */
        nx_writer_reset(w);
        nx_writer_reply(w, "result", job->client.id, job->client.id_len);
        nx_writer_int(w, "task", job->root_id);
        if (job->stage_tools)
            nx__tools_result_fields(w, job, rep);
        else
            nx_writer_str(w, "output", rep->text ? rep->text : "");
        nx_writer_str(w, "agent", job->agent->name);
        nx_writer_map_open(w, "usage");
        nx_writer_uint(w, "prompt_tokens", rep->prompt_tokens);
        nx_writer_uint(w, "completion_tokens", rep->completion_tokens);
        nx_writer_map_close(w);
        nx_writer_uint(w, "turns_dropped", rep->turns_dropped);
        nx_writer_str(w, "stop_reason", rep->stop_reason);
        write_typed(w, job->stage_typed, rep);
        nx_writer_map_open(w, "timings");
        nx_writer_real(w, "queue_ms", rep->timings.queue_ms);
        nx_writer_real(w, "swap_ms", rep->timings.swap_ms);
        nx_writer_real(w, "ttft_ms", rep->timings.ttft_ms);
        nx_writer_real(w, "total_ms", rep->timings.total_ms);
        nx_writer_map_close(w);
        nx__reply(self, &job->client);
    }
}

static void job_done(nx__router_t *self, nx__job_t *job)
{
    nx__job_take(self, job->stage_id);
    self->job_count--;
    nx__job_free(job);
}

void nx__task_stored(nx__router_t *self, nx__store_req_t *sreq)
{
    nx__job_t *job = sreq->ctx;
    job->in_store = false;
    if (sreq->type == NX__SQ_INSERT) { /* the first stage */
        if (sreq->rc != NX_OK) {
            char message[1200];
            snprintf(message, sizeof message, "the task could not be stored: %s",
                     sreq->err.msg);
            self->queued[nx__agent_index(self, job->agent)]--;
            if (job->parent)
                nx__tools_child_done(self, job, nx__store_wire_code(sreq->rc), message);
            refuse(self, &job->client, nx__store_wire_code(sreq->rc), message);
            self->job_count--;
            nx__job_free(job);
            goto out;
        }
        job->stage_id = job->root_id = sreq->task_id;
        nx__job_put(self, job);
        nx_writer_reset(self->w);
        nx_writer_reply(self->w, "accepted", job->client.id, job->client.id_len);
        nx_writer_int(self->w, "task", job->root_id);
        nx__reply(self, &job->client);
        nx__event_task(self, job->stage_id, job->agent->name, "accepted");
        nx__stage_start(self, job, sreq, job->first_input);
        goto out;
    }
    /* FINISH of a stage */
    nx_report_t *end = job->finished;
    nx_metrics_task_end(&self->metrics, nx__agent_index(self, job->agent),
                        sreq->rc != NX_OK ? NX_TASK_FAILED : end->status, end->prompt_tokens,
                        end->completion_tokens, &end->timings);
    if (job->next && sreq->rc == NX_OK) {
        nx_report_t *rep = job->finished;
        job->finished = NULL;
        nx__job_take(self, job->stage_id);
        nx__event_task(self, job->stage_id, job->agent->name, "done");
        job->agent = job->next;
        job->next = NULL;
        job->stage_id = sreq->task_id;
        job->stage_index++;
        if (job->route)
            job->route_pos++;
        nx__job_put(self, job);
        nx__event_task(self, job->stage_id, job->agent->name, "accepted");
        nx__stage_start(self, job, sreq, rep->text);
        nx_report_free(rep);
        goto out;
    }
    if (job->next) /* the next stage was not stored: it never counts as queued */
        self->queued[nx__agent_index(self, job->next)]--;
    if (job->parent) { /* an agent tool's answer goes back to the task that called it */
        nx_report_t *rep = job->finished;
        bool ok = sreq->rc == NX_OK && rep->status == NX_TASK_DONE;
        nx__event_task(self, job->stage_id, job->agent->name,
                       nx_task_status_name(ok ? NX_TASK_DONE : NX_TASK_FAILED));
        nx__tools_child_done(self, job, ok ? "done" : rep->error_code ? rep->error_code
                                                                     : "failed",
                             ok ? rep->text : rep->message);
    } else {
        reply_final(self, job, sreq);
    }
    job_done(self, job);
out:
    nx__store_req_free(sreq);
}

/* ------------------------------------------------------------------------------------------
 * Executor reports about tasks and models
 */
static void on_started(nx__router_t *self, nx__job_t *job)
{
    if (!job->started) {
        size_t ai = nx__agent_index(self, job->agent);
        self->queued[ai]--;
        self->running[ai]++;
        job->started = true;
    }
    nx__store_req_t *sreq = nx__store_req_new(NX__SQ_RUNNING, NULL);
    if (sreq) {
        sreq->task_id = job->stage_id;
        sreq->no_ack = true;
        nx__store_send(self, sreq);
    }
    nx__event_task(self, job->stage_id, job->agent->name, "running");
}

static void on_token(nx__router_t *self, nx__job_t *job, const nx_report_t *rep)
{
    if (!job->stream || !rep->text || next_agent(self, job))
        return;
    if (job->parser) {
        const nx_tools_event_t *ev;
        size_t n = 0;
        nx_err_t err = {0};
        if (nx_tools_parser_feed(job->parser, rep->text, strlen(rep->text), &ev, &n, &err) ==
            NX_OK)
            nx__tools_send_events(self, job, ev, n);
        return;
    }
    nx__out_token(self, job, rep->text);
}

static void on_model(nx__router_t *self, const nx_report_t *rep)
{
    nx__store_req_t *sreq = nx__store_req_new(NX__SQ_RESIDENCY, NULL);
    if (sreq) {
        sreq->no_ack = true;
        sreq->model = strdup(rep->model);
        sreq->event = strdup(rep->state);
        sreq->reason = rep->reason[0] ? strdup(rep->reason) : NULL;
        sreq->bytes = rep->bytes;
        sreq->ms = rep->ms;
        nx__store_send(self, sreq);
    }
    nx_metrics_model_event(&self->metrics, rep->model, rep->state, rep->bytes, rep->ms,
                           nx_now_ns());
    nx__event_model(self, rep);
}

void nx__task_report(nx__router_t *self, nx_report_t *rep)
{
    if (rep->kind == NX_REPORT_MODEL) {
        on_model(self, rep);
        nx_report_free(rep);
        return;
    }
    nx__job_t *job = nx__job_find(self, rep->task_id);
    if (!job || job->in_store) {
        nx_log(NX_LOG_WARN, "router: a report for task %lld, which is not running",
               (long long)rep->task_id);
        nx_report_free(rep);
        return;
    }
    switch (rep->kind) {
    case NX_REPORT_STARTED:
        on_started(self, job);
        break;
    case NX_REPORT_TOKEN:
        on_token(self, job, rep);
        break;
    case NX_REPORT_FINISHED:
        if (!nx__tools_intercept(self, job, rep)) { /* agent tool calls run, or it ends */
            rep->prompt_tokens += job->rounds_prompt_tokens; /* its earlier rounds' usage */
            rep->completion_tokens += job->rounds_completion_tokens;
            job->rounds_prompt_tokens = job->rounds_completion_tokens = 0; /* next stage's own */
            nx__stage_finished(self, job, rep);
        }
        return; /* the job holds the report now */
    default:
        break;
    }
    nx_report_free(rep);
}

void nx__op_cancel(nx__router_t *self, nx__client_t *client, nx_request_t *req)
{
    nx__job_t *job = nx__job_find_root(self, req->task);
    if (job && !nx__client_same_owner(&job->client, client))
        job = NULL; /* someone else's task: answered as an unknown id, so ids tell nothing */
    if (!job) {
        char message[128];
        snprintf(message, sizeof message, "task %lld is not queued or running",
                 (long long)req->task);
        nx__reply_error(self, client, "not_found", message, 0);
        return;
    }
    if (job->in_store && job->finished && !job->next) {
        /* its last stage ended and that end is being committed: too late to cancel */
        char message[128];
        snprintf(message, sizeof message, "task %lld has already finished",
                 (long long)req->task);
        nx__reply_error(self, client, "not_found", message, 0);
        return;
    }
    job->cancel_requested = true;
    if (!job->in_store && self->exec)
        nx_exec_cancel(self->exec, job->stage_id);
    nx_writer_reset(self->w);
    nx_writer_reply(self->w, "canceled", client->id, client->id_len);
    nx_writer_int(self->w, "task", job->root_id);
    nx__reply(self, client);
}
