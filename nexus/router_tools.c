/* router_tools.c — tool calls on the router thread (toolset.h, agents/tools.h):
 *
 *   - a request's tools (OpenAI's tools, tool_choice, parallel_tool_calls) compiled for its
 *     last stage's model when the request comes, so a bad schema is a bad_request at once;
 *   - the running stage's answer parsed as it streams (tokens carry content only; `reasoning`
 *     and `tool_call` events the rest), and the result's output / tool_calls / finish_reason;
 *   - agents as tools: an agent whose YAML lists agents under `tools:` offers each as a
 *     function (parameters: its input_schema, or {input: string}). When a round of its answer
 *     calls only such agents, each call runs as a child task (its own row, `parent` the
 *     stage's row), the calls and their answers join the conversation as tool turns, and the
 *     stage generates again, in the same row and the same task the client sees. Round
 *     limits.tool_steps is generated with tool_choice "none": a final answer, never an error.
 *     A round that calls any of the request's own tools ends the task (finish_reason
 *     tool_calls), its agent calls left out and not run.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router_int.h"

#define DEFAULT_PARAMS "{\"type\":\"object\",\"properties\":{\"input\":{\"type\":\"string\"}}," \
                       "\"required\":[\"input\"]}"

/* Whether `name` is one of the agent's tools: agents. */
static bool agent_tool(const nx_agent_conf_t *agent, const char *name)
{
    for (size_t i = 0; name && i < agent->tool_count; i++)
        if (strcmp(agent->tools[i], name) == 0)
            return true;
    return false;
}

/* The agent of the request's last stage: its route's last entry, or the end of the agent's
 * `next` chain (as far as a pipeline runs). */
static const nx_agent_conf_t *last_stage(nx__router_t *self, const nx_agent_conf_t *agent,
                                         const nx_request_t *req)
{
    if (req->route_count)
        return nx_nexus_conf_agent(self->conf, req->route[req->route_count - 1]);
    for (size_t i = 1; agent->next && i < NX__MAX_STAGES; i++) {
        const nx_agent_conf_t *next = nx_nexus_conf_agent(self->conf, agent->next);
        if (!next)
            break;
        agent = next;
    }
    return agent;
}

/* The request's tools compiled for its last stage's model; *out NULL without tools. */
int nx__tools_request(nx__router_t *self, const nx_agent_conf_t *agent,
                         const nx_request_t *req, bool typed, nx_toolset_t **out,
                         nx_err_t *err)
{
    *out = NULL;
    const nx_agent_conf_t *last = self->exec ? last_stage(self, agent, req) : NULL;
    if (!last)
        return NX_OK; /* refused elsewhere, or shutting down */
    if (!req->tools_json && req->tool_choice_json && !last->tool_count)
        return nx_err_set(err, NX_EINVAL, "field 'tool_choice' goes with 'tools' (or an agent "
                          "with tools: in its YAML)");
    if (!req->tools_json)
        return NX_OK;
    if (typed || last->output_schema)
        return nx_err_set(err, NX_EINVAL, "field 'tools': a task answers either under its "
                          "tools or under %s, not both", typed ? "its own schema, "
                          "response_format or grammar" : "its last agent's output_schema");
    nx_chat_kind_t kind = NX_CHAT_AUTO;
    const nx_tokenizer_t *tok = nx_exec_agent_tokenizer(self->exec, last, &kind);
    if (!tok)
        return nx_err_set(err, NX_EINVAL, "field 'tools': agent '%s' has no readable model",
                          last->name);
    if (kind == NX_CHAT_RAW) /* nowhere to list the tools, no format for the calls */
        return nx_err_set(err, NX_ENOTSUP, "field 'tools': agent '%s' uses no chat template "
                          "(raw), so its model has no known tool-call format", last->name);
    return nx_toolset_cache_get(self->tools, tok, req->tools_json, req->tool_choice_json,
                                req->parallel_tool_calls, out, err);
}

/* The stage's tools as one JSON array: its agent's tools (as functions) first, then the
 * request's own when this is the last stage. NULL with err set. */
static char *stage_tools_json(nx__router_t *self, const nx__job_t *job, bool last,
                              nx_err_t *err)
{
    json_t *all = json_array();
    for (size_t i = 0; all && i < job->agent->tool_count; i++) {
        const nx_agent_conf_t *t = nx_nexus_conf_agent(self->conf, job->agent->tools[i]);
        if (!t)
            continue; /* --check refuses it; a config never starts with one */
        json_t *params = json_loads(t->input_schema ? t->input_schema : DEFAULT_PARAMS, 0,
                                    NULL);
        json_array_append_new(all, json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function",
                                             "function", "name", t->name, "description",
                                             t->description ? t->description : "",
                                             "parameters", params ? params : json_object()));
    }
    if (all && last && job->task_tools) {
        json_t *own = json_loads(nx_toolset_tools_json(job->task_tools), 0, NULL);
        size_t i;
        json_t *tool;
        json_array_foreach(own, i, tool) {
            const char *name = json_string_value(
                json_object_get(json_object_get(tool, "function"), "name"));
            if (agent_tool(job->agent, name)) {
                nx_err_set(err, NX_EINVAL, "tools[%zu]: '%s' is also one of agent '%s' tools",
                           i, name, job->agent->name);
                json_decref(own);
                json_decref(all);
                return NULL;
            }
            json_array_append(all, tool);
        }
        json_decref(own);
    }
    char *text = all ? json_dumps(all, JSON_COMPACT) : NULL;
    json_decref(all);
    if (!text)
        nx_err_set(err, NX_ENOMEM, "out of memory for the stage's tools");
    return text;
}

int nx__tools_stage_setup(nx__router_t *self, nx__job_t *job, bool last, nx_err_t *err)
{
    nx_toolset_release(&job->stage_tools);
    nx_tools_parser_destroy(&job->parser);
    job->parser_done = false;
    bool own = last && job->task_tools;
    if (!own && !job->agent->tool_count)
        return NX_OK;
    if (!job->agent->tool_count) {
        job->stage_tools = nx_toolset_ref(job->task_tools);
    } else {
        if (job->stage_typed)
            return nx_err_set(err, NX_EINVAL, "agent '%s' has tools: it cannot answer under "
                              "an output schema as well", job->agent->name);
        char *tools = stage_tools_json(self, job, last, err);
        if (!tools)
            return err->code;
        nx_chat_kind_t kind = NX_CHAT_AUTO;
        const nx_tokenizer_t *tok = self->exec
                                        ? nx_exec_agent_tokenizer(self->exec, job->agent, &kind)
                                        : NULL;
        /* the request's choice holds for the first round; the rounds after the agents'
         * answers choose freely; the last allowed round answers without calls */
        const char *choice = job->tool_round >= job->agent->tool_steps ? "\"none\""
                             : job->tool_round > 0 || !last       ? "\"auto\""
                                                                  : job->tool_choice_json;
        bool parallel = own ? job->parallel_tool_calls : true;
        int rc = !tok ? nx_err_set(err, NX_EINVAL, "agent '%s' has no readable model",
                                   job->agent->name)
                 : kind == NX_CHAT_RAW
                     ? nx_err_set(err, NX_ENOTSUP, "agent '%s' has tools but uses no chat "
                                  "template (raw): no tool-call format", job->agent->name)
                     : nx_toolset_cache_get(self->tools, tok, tools, choice, parallel,
                                            &job->stage_tools, err);
        free(tools);
        if (rc != NX_OK) {
            nx_err_prefix(err, "agent '%s' tools: ", job->agent->name);
            return rc;
        }
    }
    nx_tools_parser_opts_t popts = {.family = nx_toolset_family(job->stage_tools),
                                    .thinking = job->agent->thinking != 0,
                                    .seed = (uint64_t)job->stage_id * 100 + job->tool_round};
    if (job->stream && !(job->parser = nx_tools_parser_new(&popts, err)))
        return NX_ENOMEM;
    return NX_OK;
}

/* Send one frame built in self->w to the job's client, after its tokens so far. */
static void send_event(nx__router_t *self, nx__job_t *job)
{
    size_t len;
    const void *data = nx_writer_data(self->w, &len);
    nx__out_forget_job(job); /* tokens after this frame come after it */
    if (data && job->client.envelope)
        nx__out_send(self, &job->client, data, len);
}

/* The parser's events as the stream's replies: content as `token`, thinking as `reasoning`,
 * calls as `tool_call` (the first of a call with its id and name, then argument pieces). */
void nx__tools_send_events(nx__router_t *self, nx__job_t *job, const nx_tools_event_t *ev,
                             size_t count)
{
    for (size_t i = 0; i < count; i++) {
        char *text = strndup(ev[i].text ? ev[i].text : "", ev[i].len);
        if (!text)
            continue;
        if (ev[i].kind == NX_TOOLS_EV_CONTENT) {
            if (ev[i].len)
                nx__out_token(self, job, text);
            free(text);
            continue;
        }
        nx_writer_t *w = self->w;
        nx_writer_reset(w);
        if (ev[i].kind == NX_TOOLS_EV_REASONING) {
            nx_writer_reply(w, "reasoning", job->client.id, job->client.id_len);
            nx_writer_int(w, "task", job->root_id);
            nx_writer_str(w, "text", text);
        } else {
            nx_writer_reply(w, "tool_call", job->client.id, job->client.id_len);
            nx_writer_int(w, "task", job->root_id);
            nx_writer_uint(w, "index", job->call_base + ev[i].index);
            if (ev[i].kind == NX_TOOLS_EV_CALL) {
                nx_writer_str(w, "call_id", ev[i].id);
                nx_writer_str(w, "name", text);
                nx_writer_str(w, "arguments", "");
                if (agent_tool(job->agent, text)) /* run here, not the client's to answer */
                    nx_writer_bool(w, "agent", true);
            } else {
                nx_writer_str(w, "arguments", text);
            }
        }
        free(text);
        send_event(self, job);
    }
}

/* Finish the streamed parser (its last events go out) or parse the whole answer: after it,
 * job->parser holds the answer's content, reasoning and calls. */
static void parse_answer(nx__router_t *self, nx__job_t *job, const nx_report_t *rep)
{
    if (job->parser_done)
        return;
    job->parser_done = true;
    nx_err_t err = {0};
    if (job->parser) {
        const nx_tools_event_t *ev;
        size_t n = 0;
        if (nx_tools_parser_finish(job->parser, &ev, &n, &err) == NX_OK)
            nx__tools_send_events(self, job, ev, n);
        return;
    }
    nx_tools_parser_opts_t opts = {.family = nx_toolset_family(job->stage_tools),
                                   .thinking = job->agent->thinking != 0,
                                   .seed = (uint64_t)job->stage_id * 100 + job->tool_round};
    const char *text = rep->text ? rep->text : "";
    job->parser = nx_tools_parse(&opts, text, strlen(text), &err);
}

void nx__tools_result_parse(nx__router_t *self, nx__job_t *job, const nx_report_t *rep)
{
    parse_answer(self, job, rep);
}

/* The result's tool fields: output is the content (the calls' text and any thinking block
 * out of it), tool_calls every call the answer began for the client (calls of agent tools
 * left out), reasoning the thinking, finish_reason "length" when max_tokens cut the answer
 * (as OpenAI: its last call's arguments may then be cut too, as they were streamed), else
 * "tool_calls" when it made calls, else "stop". */
void nx__tools_result_fields(nx_writer_t *w, nx__job_t *job, const nx_report_t *rep)
{
    size_t n_calls = 0, content_len = 0, reasoning_len = 0;
    const char *content = "", *reasoning = "";
    char *calls = NULL;
    if (job->parser) {
        content = nx_tools_parser_content(job->parser, &content_len);
        reasoning = nx_tools_parser_reasoning(job->parser, &reasoning_len);
        (void)nx_tools_parser_calls(job->parser, &n_calls);
        calls = n_calls ? nx_tools_calls_json(job->parser, true) : NULL;
    }
    nx_writer_str(w, "output", content ? content : "");
    if (reasoning && reasoning_len)
        nx_writer_str(w, "reasoning", reasoning);
    json_t *doc = calls ? json_loads(calls, 0, NULL) : NULL;
    free(calls);
    for (size_t i = json_array_size(doc); i-- > 0;) {
        const char *name = json_string_value(json_object_get(
            json_object_get(json_array_get(doc, i), "function"), "name"));
        if (agent_tool(job->agent, name))
            json_array_remove(doc, i);
    }
    n_calls = json_array_size(doc);
    if (n_calls)
        nx_writer_json(w, "tool_calls", doc);
    json_decref(doc);
    bool cut = rep->stop_reason && strcmp(rep->stop_reason, "length") == 0;
    nx_writer_str(w, "finish_reason", cut ? "length" : n_calls ? "tool_calls" : "stop");
    if (job->tool_round)
        nx_writer_uint(w, "tool_rounds", job->tool_round);
}

/* ------------------------------------------------------------------------------------------
 * Agents as tools
 */
static int turn_dup(nx_turn_t *to, const char *role, const char *content)
{
    memset(to, 0, sizeof *to);
    to->role = strdup(role);
    to->content = content ? strdup(content) : NULL;
    return to->role && (!content || to->content) ? NX_OK : NX_ENOMEM;
}

/* A copy of a turn as the executor's message (strings malloc'ed, freed with its task). */
static int turn_to_msg(const nx_turn_t *from, nx_chat_msg_t *to)
{
    memset(to, 0, sizeof *to);
    to->role = strdup(from->role);
    to->content = from->content ? strdup(from->content) : NULL;
    to->tool_call_id = from->tool_call_id ? strdup(from->tool_call_id) : NULL;
    to->name = from->name ? strdup(from->name) : NULL;
    if (from->call_count) {
        nx_chat_tool_call_t *calls = calloc(from->call_count, sizeof *calls);
        if (!calls)
            return NX_ENOMEM;
        to->tool_calls = calls;
        to->n_tool_calls = from->call_count;
        for (size_t k = 0; k < from->call_count; k++) {
            calls[k].id = from->calls[k].id ? strdup(from->calls[k].id) : NULL;
            calls[k].name = strdup(from->calls[k].name);
            calls[k].arguments = strdup(from->calls[k].arguments);
            if (!calls[k].name || !calls[k].arguments)
                return NX_ENOMEM;
        }
    }
    return to->role ? NX_OK : NX_ENOMEM;
}

static int msg_to_turn(const nx_chat_msg_t *from, nx_turn_t *to)
{
    memset(to, 0, sizeof *to);
    to->role = strdup(from->role ? from->role : "user");
    to->content = from->content ? strdup(from->content) : NULL;
    to->tool_call_id = from->tool_call_id ? strdup(from->tool_call_id) : NULL;
    to->name = from->name ? strdup(from->name) : NULL;
    if (from->n_tool_calls && !(to->calls = calloc(from->n_tool_calls, sizeof *to->calls)))
        return NX_ENOMEM;
    for (size_t k = 0; k < from->n_tool_calls; k++) {
        to->call_count = k + 1;
        to->calls[k].id = from->tool_calls[k].id ? strdup(from->tool_calls[k].id) : NULL;
        to->calls[k].name = strdup(from->tool_calls[k].name);
        to->calls[k].arguments = strdup(from->tool_calls[k].arguments);
    }
    return to->role ? NX_OK : NX_ENOMEM;
}

static nx_turn_t *turns_grow(nx_turn_t **turns, size_t *count, size_t more)
{
    nx_turn_t *grown = realloc(*turns, (*count + more) * sizeof *grown);
    if (!grown)
        return NULL;
    memset(grown + *count, 0, more * sizeof *grown);
    *turns = grown;
    return grown + *count;
}

int nx__tools_save_base(nx__job_t *job, const nx_exec_task_t *t, const char *input)
{
    for (size_t i = 0; i < job->base_count; i++)
        nx_turn_clear(&job->base[i]);
    free(job->base);
    job->base = NULL;
    job->base_count = 0;
    nx_turn_t *at = turns_grow(&job->base, &job->base_count, t->history_count + 1);
    if (!at)
        return NX_ENOMEM;
    for (size_t i = 0; i < t->history_count; i++, job->base_count++)
        if (msg_to_turn(&t->history[i], &at[i]) != NX_OK)
            return NX_ENOMEM;
    if (!t->no_input) {
        if (turn_dup(&at[t->history_count], "user", input ? input : "") != NX_OK)
            return NX_ENOMEM;
        job->base_count++;
    }
    return NX_OK;
}

int nx__tools_history(nx__job_t *job, nx_exec_task_t *t)
{
    size_t n = job->base_count + job->convo_count;
    if (!(t->history = calloc(n ? n : 1, sizeof *t->history)))
        return NX_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const nx_turn_t *from = i < job->base_count ? &job->base[i]
                                                    : &job->convo[i - job->base_count];
        t->history_count = i + 1; /* counted now: the task's free frees it */
        if (turn_to_msg(from, &t->history[i]) != NX_OK)
            return NX_ENOMEM;
    }
    t->no_input = true;
    return NX_OK;
}

/* A child task for one call: its input is the call's arguments (JSON) when the agent takes
 * typed input, else their "input" string. */
static int start_child(nx__router_t *self, nx__job_t *job, const nx_agent_conf_t *agent,
                       const char *arguments, size_t slot)
{
    char *input = NULL;
    if (agent->input_schema) {
        input = strdup(arguments);
    } else {
        json_t *args = json_loads(arguments, 0, NULL);
        const char *text = json_string_value(json_object_get(args, "input"));
        input = text ? strdup(text) : strdup(arguments);
        json_decref(args);
    }
    nx__job_t *child = calloc(1, sizeof *child);
    nx__store_req_t *sreq = child ? nx__store_req_new(NX__SQ_INSERT, child) : NULL;
    if (!input || !child || !sreq ||
        !(child->first_input = strdup(input))) {
        free(input);
        nx__store_req_free(sreq);
        nx__job_free(child);
        return NX_ENOMEM;
    }
    child->agent = agent;
    child->parent = job;
    child->child_slot = slot;
    child->accepted_ns = nx_now_ns();
    int rc = nx__fill_insert(self, child, agent, input, job->stage_id, 0, &sreq->insert);
    free(input);
    if (rc != NX_OK) {
        nx__store_req_free(sreq);
        nx__job_free(child);
        return NX_ENOMEM;
    }
    self->queued[nx__agent_index(self, agent)]++;
    self->job_count++;
    child->in_store = true;
    job->pending_children++;
    nx__store_send(self, sreq);
    return NX_OK;
}

bool nx__tools_intercept(nx__router_t *self, nx__job_t *job, nx_report_t *rep)
{
    if (!job->agent->tool_count || !job->stage_tools || rep->status != NX_TASK_DONE ||
        job->cancel_requested || !self->exec ||
        (rep->stop_reason && strcmp(rep->stop_reason, "length") == 0))
        return false;
    parse_answer(self, job, rep);
    size_t n_calls = 0;
    const nx_tools_call_t *calls = job->parser ? nx_tools_parser_calls(job->parser, &n_calls)
                                               : NULL;
    if (!n_calls)
        return false;
    for (size_t i = 0; i < n_calls; i++)
        if (!calls[i].complete || !agent_tool(job->agent, calls[i].name))
            return false; /* the client's calls: the task ends with them */
    /* the assistant's turn (its calls), then one tool turn per call, answered as they end */
    nx_turn_t *at = turns_grow(&job->convo, &job->convo_count, n_calls + 1);
    if (!at)
        return false;
    size_t content_len = 0;
    const char *content = nx_tools_parser_content(job->parser, &content_len);
    int rc = turn_dup(&at[0], "assistant", content_len ? content : NULL);
    job->convo_count++;
    if (rc == NX_OK && !(at[0].calls = calloc(n_calls, sizeof *at[0].calls)))
        rc = NX_ENOMEM;
    for (size_t i = 0; rc == NX_OK && i < n_calls; i++) {
        at[0].call_count = i + 1;
        at[0].calls[i].id = strdup(calls[i].id);
        at[0].calls[i].name = strdup(calls[i].name);
        at[0].calls[i].arguments = strdup(calls[i].arguments);
        rc = turn_dup(&at[1 + i], "tool", "");
        job->convo_count++;
        if (rc == NX_OK && (!(at[1 + i].tool_call_id = strdup(calls[i].id)) ||
                            !(at[1 + i].name = strdup(calls[i].name))))
            rc = NX_ENOMEM;
    }
    if (rc != NX_OK)
        return false; /* out of memory: the answer stands as it is */
    size_t first = job->convo_count - n_calls;
    job->call_base += (uint32_t)n_calls;
    job->tool_round++;
    nx_log(NX_LOG_INFO, "task %lld: agent '%s' calls %zu agent tool(s), round %u",
           (long long)job->stage_id, job->agent->name, n_calls, job->tool_round);
    for (size_t i = 0; i < n_calls; i++) {
        const nx_agent_conf_t *agent = nx_nexus_conf_agent(self->conf, calls[i].name);
        if (!agent || start_child(self, job, agent, calls[i].arguments, first + i) != NX_OK) {
            free(job->convo[first + i].content);
            job->convo[first + i].content = strdup("error: the agent could not be started");
        }
    }
    job->rounds_prompt_tokens += rep->prompt_tokens; /* usage counts every round */
    job->rounds_completion_tokens += rep->completion_tokens;
    nx_report_free(rep);
    if (!job->pending_children)
        nx__stage_start(self, job, NULL, "");
    return true;
}

void nx__tools_child_done(nx__router_t *self, nx__job_t *child, const char *status,
                          const char *text)
{
    nx__job_t *job = child->parent;
    child->parent = NULL;
    if (!job)
        return;
    nx_turn_t *turn = &job->convo[child->child_slot];
    free(turn->content);
    if (strcmp(status, "done") == 0) {
        turn->content = strdup(text ? text : "");
    } else {
        size_t len = strlen(status) + (text ? strlen(text) : 0) + 16;
        if ((turn->content = malloc(len)))
            snprintf(turn->content, len, "error (%s): %s", status, text ? text : "");
    }
    if (!turn->content)
        turn->content = strdup("");
    if (--job->pending_children == 0)
        nx__stage_start(self, job, NULL, "");
}
