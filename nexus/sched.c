/* sched.c — the executor's scheduler: per-agent FIFO queues; admission of queued tasks into
 * sequences of their resident model (up to max_batch per model, KV from the pool, waiting when
 * the pool is short); one nx_engine_step per turn, models taken in round robin, new sequences
 * prefilling in the same step as running ones decode; timeouts, cancels and the reports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec_internal.h"
#include "toolset.h"

static double ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return to_ns > from_ns ? (double)(to_ns - from_ns) / 1e6 : 0;
}

static void job_free(nx__job_t *job)
{
    if (job->seq)
        nx_seq_destroy(job->model->engine, &job->seq);
    nx_gen_destroy(&job->gen);
    nx__typed_teardown(job);
    free(job->prompt);
    nx_exec_task_free(job->task);
    free(job);
}

/* Report FINISHED and free the job (already unlinked from its queue or running list). */
static void finish(nx_exec_t *exec, nx__job_t *job, nx_task_status_t status,
                   const char *error_code, const char *message)
{
    uint64_t now = nx_now_ns();
    if (job->model) {
        job->model->last_used_ns = now;
        if (job->model->queued == 0 && job->model->running_count == 0)
            job->model->idle_since_ns = now;
    }
    nx_report_t *r = calloc(1, sizeof *r);
    if (r) {
        r->kind = NX_REPORT_FINISHED;
        r->task_id = job->task->task_id;
        r->status = status;
        r->error_code = error_code;
        r->message = message ? strdup(message) : NULL;
        if (status == NX_TASK_DONE) {
            r->text = strdup(job->gen ? nx_gen_text(job->gen) : "");
            r->stop_reason = job->gen ? nx_gen_stop_reason(job->gen) : NULL;
        }
        r->prompt_tokens = (uint32_t)job->prompt_len;
        r->completion_tokens = job->gen ? (uint32_t)nx_gen_count(job->gen) : 0;
        r->turns_dropped = job->turns_dropped;
        uint64_t accepted = job->task->accepted_ns;
        double waiting = job->wait_since_ns ? ms_between(job->wait_since_ns, now) : 0;
        r->timings = (nx_task_timings_t){
            .queue_ms = ms_between(accepted, job->admitted_ns ? job->admitted_ns : now),
            .swap_ms = job->swap_ms + waiting,
            .ttft_ms = job->first_token_ns ? ms_between(accepted, job->first_token_ns) : 0,
            .total_ms = ms_between(accepted, now)};
        nx__report(exec, r);
    }
    job_free(job);
}

/* Finish a task that never became a job (unknown agent, bad prompt, shutting down). */
static void finish_early(nx_exec_t *exec, nx__job_t *job, const char *code, const char *message)
{
    job->model = NULL; /* it was never counted on the model */
    finish(exec, job, NX_TASK_FAILED, code, message);
}

static void report_simple(nx_exec_t *exec, nx_report_kind_t kind, int64_t task_id,
                          const char *text, size_t len)
{
    nx_report_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->kind = kind;
    r->task_id = task_id;
    if (text && !(r->text = strndup(text, len))) {
        free(r);
        return;
    }
    nx__report(exec, r);
}

static int emit_token(void *user, const char *text, size_t len)
{
    nx__job_t *job = user;
    if (job->task->stream && len)
        report_simple(job->exec, NX_REPORT_TOKEN, job->task->task_id, text, len);
    return 0;
}

/* Render the system prompt, the history from message `first` on and the input with the agent's
 * chat template, and tokenize it into job->prompt (replacing what was there). */
static int render_prompt(nx__job_t *job, nx_chat_kind_t kind, size_t first, nx_err_t *err)
{
    const nx_exec_task_t *task = job->task;
    size_t n = 0;
    nx_chat_msg_t *msgs = calloc(task->history_count + 2, sizeof *msgs);
    if (!msgs)
        return nx_err_set(err, NX_ENOMEM, "out of memory rendering the prompt");
    if (task->agent->system_prompt)
        msgs[n++] = (nx_chat_msg_t){"system", task->agent->system_prompt};
    for (size_t i = first; i < task->history_count; i++)
        msgs[n++] = task->history[i];
    if (!task->no_input)
        msgs[n++] = (nx_chat_msg_t){.role = "user", .content = task->input ? task->input : ""};
    nx_chat_opts_t opts = {.kind = kind, .thinking = task->agent->thinking,
                           .add_generation_prompt = true,
                           .tools_json = task->tools ? nx_toolset_tools_json(task->tools) : NULL};
    char *text = NULL;
    free(job->prompt);
    job->prompt = NULL;
    job->prompt_len = 0;
    int rc = nx_chat_render(job->model->tok, &opts, msgs, n, &text, err);
    if (rc == NX_OK)
        rc = nx_tokenizer_encode(job->model->tok, text, strlen(text), &job->prompt,
                                 &job->prompt_len, err);
    free(text);
    free(msgs);
    return rc;
}

/* The session's turns must not brick it: keep the system prompt, the input and as many of the
 * NEWEST turns as fit in the context less max_tokens, dropping whole turns (a user message
 * and the replies after it) oldest first. Token counts are not additive across a template's
 * joins, so the cut is found by rendering: all turns first (the common case, one render),
 * else a binary search over how many to drop, ending on a render that was measured. When the
 * input without any turn does not fit either, the prompt is that (nx__sched_submit then checks
 * it against the whole context: context_full). Sets job->turns_dropped. */
static int fit_history(nx__job_t *job, nx_chat_kind_t kind, size_t budget, nx_err_t *err)
{
    const nx_exec_task_t *task = job->task;
    int rc = render_prompt(job, kind, 0, err);
    if (rc != NX_OK || job->prompt_len <= budget || task->history_count == 0)
        return rc;
    /* starts[t]: the message where turn t begins (a user message; message 0 in any case) */
    size_t *starts = calloc(task->history_count + 1, sizeof *starts);
    if (!starts)
        return nx_err_set(err, NX_ENOMEM, "out of memory fitting the session's turns");
    size_t turns = 0;
    for (size_t i = 0; i < task->history_count; i++)
        if (i == 0 || (task->history[i].role && strcmp(task->history[i].role, "user") == 0))
            starts[turns++] = i;
    starts[turns] = task->history_count; /* dropping every turn */
    size_t lo = 1, hi = turns, rendered = 0; /* dropping hi turns is the fallback: it may fit */
    while (rc == NX_OK && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        rc = render_prompt(job, kind, starts[mid], err);
        rendered = mid;
        if (job->prompt_len <= budget)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (rc == NX_OK && rendered != hi)
        rc = render_prompt(job, kind, starts[hi], err);
    job->turns_dropped = (uint32_t)hi;
    free(starts);
    return rc;
}

/* The agent's chat rendering of system prompt, the session turns that fit and the input,
 * tokenized; stop ids. */
static int build_prompt(nx__job_t *job, size_t context, nx_err_t *err)
{
    nx__model_t *m = job->model;
    const nx_agent_conf_t *agent = job->task->agent;
    nx_chat_kind_t kind = agent->chat_template == NX_CHAT_AUTO ? m->chat_kind
                                                               : agent->chat_template;
    uint32_t max_tokens = job->task->sampling.max_tokens;
    size_t budget = context > max_tokens ? context - max_tokens : 0;
    int rc = fit_history(job, kind, budget, err);
    if (rc != NX_OK)
        return rc;
    int32_t found[40];
    size_t count = 0, cap_ids = sizeof job->stop_ids / sizeof job->stop_ids[0];
    size_t k = nx_chat_stop_ids(m->tok, kind, found, 32);
    for (uint32_t i = 0; i < m->config.eos_count && k < 40; i++)
        found[k++] = m->config.eos_ids[i];
    for (size_t i = 0; i < k && count < cap_ids; i++) {
        bool dup = found[i] < 0;
        for (size_t j = 0; j < count && !dup; j++)
            dup = job->stop_ids[j] == found[i];
        if (!dup)
            job->stop_ids[count++] = found[i];
    }
    job->stop_id_count = count;
    return NX_OK;
}

static nx__agentq_t *queue_of(nx_exec_t *exec, const nx_agent_conf_t *agent, size_t *index)
{
    for (size_t i = 0; i < exec->queue_count; i++)
        if (exec->queues[i].agent == agent ||
            (agent && strcmp(exec->queues[i].agent->name, agent->name) == 0)) {
            *index = i;
            return &exec->queues[i];
        }
    return NULL;
}

void nx__sched_submit(nx_exec_t *exec, nx_exec_task_t *task)
{
    nx__job_t *job = calloc(1, sizeof *job);
    if (!job) {
        nx_log(NX_LOG_ERROR, "executor: out of memory for task %lld", (long long)task->task_id);
        nx_exec_task_free(task);
        return;
    }
    job->task = task;
    job->exec = exec;
    nx_err_t err = {0};
    size_t index = 0;
    nx__agentq_t *q = queue_of(exec, task->agent, &index);
    if (exec->stopping)
        return finish_early(exec, job, "shutting_down", "the executor is stopping");
    if (!q)
        return finish_early(exec, job, "internal", "the task's agent is not in the config");
    job->model = q->model;
    job->agent_index = index;
    if (!q->model->tok)
        return finish_early(exec, job, "model_error", q->model->error);
    if (build_prompt(job, exec->conf->context, &err) != NX_OK)
        return finish_early(exec, job, "internal", err.msg);
    if (job->prompt_len == 0)
        return finish_early(exec, job, "bad_request", "the prompt is empty");
    if (job->prompt_len > exec->conf->context) {
        char msg[160];
        snprintf(msg, sizeof msg, "the prompt has %zu tokens%s, more than the context of %u",
                 job->prompt_len, job->turns_dropped ? " without any session turn" : "",
                 exec->conf->context);
        return finish_early(exec, job, "context_full", msg);
    }
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    nx__model_t *m = q->model;
    m->queued++;
    nx__res_used(exec, m);
    if (m->state != NX__RESIDENT) {
        job->wait_since_ns = nx_now_ns();
        if (!m->wanted_since_ns)
            m->wanted_since_ns = job->wait_since_ns;
    }
    if (task->next_model)
        nx__res_prefetch(exec, task->next_model);
}

/* Unlink `job` from agent queue q (prev is its predecessor or NULL). */
static void unlink_queued(nx__agentq_t *q, nx__job_t *prev, nx__job_t *job)
{
    if (prev)
        prev->next = job->next;
    else
        q->head = job->next;
    if (q->tail == job)
        q->tail = prev;
    job->next = NULL;
    q->model->queued--;
}

static void unlink_running(nx__model_t *m, nx__job_t *job)
{
    for (nx__job_t **p = &m->running; *p; p = &(*p)->next)
        if (*p == job) {
            *p = job->next;
            job->next = NULL;
            m->running_count--;
            return;
        }
}

/* Walk every queued and running job; `fn` returns true when it finished (and freed) it. */
typedef bool (*visit_fn)(nx_exec_t *exec, nx__job_t *job, void *user);

static void visit_all(nx_exec_t *exec, visit_fn fn, void *user, bool queued_only)
{
    for (size_t i = 0; i < exec->queue_count; i++) {
        nx__agentq_t *q = &exec->queues[i];
        nx__job_t *prev = NULL, *job = q->head;
        while (job) {
            nx__job_t *next = job->next;
            unlink_queued(q, prev, job);
            if (!fn(exec, job, user)) { /* keep it: link it back */
                job->next = next;
                if (prev)
                    prev->next = job;
                else
                    q->head = job;
                if (!next)
                    q->tail = job;
                q->model->queued++;
                prev = job;
            }
            job = next;
        }
    }
    for (size_t i = 0; i < exec->model_count && !queued_only; i++) {
        nx__model_t *m = &exec->models[i];
        nx__job_t *job = m->running;
        while (job) {
            nx__job_t *next = job->next;
            (void)fn(exec, job, user); /* when it finishes the job, fn unlinked it */
            job = next;
        }
    }
}

static bool cancel_one(nx_exec_t *exec, nx__job_t *job, void *user)
{
    if (job->task->task_id != *(int64_t *)user)
        return false;
    if (job->seq)
        unlink_running(job->model, job);
    finish(exec, job, NX_TASK_CANCELED, "canceled", "the task was canceled");
    return true;
}

void nx__sched_cancel(nx_exec_t *exec, int64_t task_id)
{
    visit_all(exec, cancel_one, &task_id, false);
}

static bool timeout_one(nx_exec_t *exec, nx__job_t *job, void *user)
{
    uint32_t limit_ms = job->task->agent->timeout_ms;
    uint64_t now = *(uint64_t *)user;
    if (!limit_ms || now < job->task->accepted_ns ||
        now - job->task->accepted_ns <= (uint64_t)limit_ms * 1000000ull)
        return false;
    if (job->seq)
        unlink_running(job->model, job);
    char msg[128];
    snprintf(msg, sizeof msg, "the task ran past the agent's timeout of %u ms", limit_ms);
    finish(exec, job, NX_TASK_FAILED, "timeout", msg);
    return true;
}

void nx__sched_timeouts(nx_exec_t *exec)
{
    uint64_t now = nx_now_ns();
    visit_all(exec, timeout_one, &now, false);
}

typedef struct fail_ctx {
    const nx__model_t *model; /* NULL: every job */
    const char *code, *message;
} fail_ctx_t;

static bool fail_one(nx_exec_t *exec, nx__job_t *job, void *user)
{
    fail_ctx_t *f = user;
    if (f->model && job->model != f->model)
        return false;
    if (job->seq)
        unlink_running(job->model, job);
    finish(exec, job, strcmp(f->code, "canceled") == 0 ? NX_TASK_CANCELED : NX_TASK_FAILED,
           f->code, f->message);
    return true;
}

void nx__sched_fail_model(nx_exec_t *exec, nx__model_t *model, const char *code,
                          const char *message)
{
    fail_ctx_t f = {model, code, message};
    visit_all(exec, fail_one, &f, true);
}

void nx__sched_fail_all(nx_exec_t *exec, const char *code, const char *message)
{
    fail_ctx_t f = {NULL, code, message};
    visit_all(exec, fail_one, &f, false);
}

static bool mark_resident(nx_exec_t *exec, nx__job_t *job, void *user)
{
    uint64_t now = nx_now_ns();
    if (job->model == user && job->wait_since_ns) {
        job->swap_ms += ms_between(job->wait_since_ns, now);
        job->wait_since_ns = 0;
    }
    return false;
}

void nx__sched_model_resident(nx_exec_t *exec, nx__model_t *model)
{
    visit_all(exec, mark_resident, model, true);
}

static bool mark_left(nx_exec_t *exec, nx__job_t *job, void *user)
{
    if (job->model == user && !job->wait_since_ns)
        job->wait_since_ns = nx_now_ns();
    return false;
}

void nx__sched_model_left(nx_exec_t *exec, nx__model_t *model)
{
    visit_all(exec, mark_left, model, true);
}

uint64_t nx__sched_oldest_queued_ns(nx_exec_t *exec, const nx__model_t *model)
{
    uint64_t oldest = 0;
    for (size_t i = 0; i < exec->queue_count; i++) {
        const nx__agentq_t *q = &exec->queues[i];
        if (q->model == model && q->head &&
            (!oldest || q->head->task->accepted_ns < oldest))
            oldest = q->head->task->accepted_ns;
    }
    return oldest;
}

bool nx__sched_any_running(nx_exec_t *exec)
{
    for (size_t i = 0; i < exec->model_count; i++)
        if (exec->models[i].running_count)
            return true;
    return false;
}

/* The next agent queue of this model with a task, round robin; NULL when none. */
static nx__agentq_t *next_queue(nx_exec_t *exec, nx__model_t *m)
{
    for (size_t k = 0; k < exec->queue_count; k++) {
        size_t i = (m->rr_agent + k) % exec->queue_count;
        if (exec->queues[i].model == m && exec->queues[i].head) {
            m->rr_agent = i + 1;
            return &exec->queues[i];
        }
    }
    return NULL;
}

/* Start one job on a new sequence: false when the pool is short for its KV (it stays queued). */
static bool admit_one(nx_exec_t *exec, nx__model_t *m, nx__agentq_t *q)
{
    nx__job_t *job = q->head;
    nx_err_t err = {0};
    if (nx__res_free_bytes(exec) < m->kv_bytes)
        return false;
    nx_seq_t *seq = nx_seq_new(m->engine, exec->conf->context, false, &err);
    if (!seq)
        return false; /* short for KV: wait for a running sequence to leave */
    unlink_queued(q, NULL, job);
    job->seq = seq;
    job->admitted_ns = nx_now_ns();
    job->gen = nx_gen_new(m->tok, m->config.vocab, &job->task->sampling, job->prompt,
                          job->prompt_len, job->stop_ids, job->stop_id_count, emit_token, job,
                          &err);
    if (!job->gen || nx_seq_feed(seq, job->prompt, job->prompt_len, &err) != NX_OK) {
        finish(exec, job, NX_TASK_FAILED, "internal", err.msg);
        return true;
    }
    if (nx__typed_setup(job, &err) != NX_OK) {
        finish(exec, job, NX_TASK_FAILED, "internal", err.msg);
        return true;
    }
    job->next = m->running;
    m->running = job;
    m->running_count++;
    report_simple(exec, NX_REPORT_STARTED, job->task->task_id, NULL, 0);
    return true;
}

void nx__sched_admit(nx_exec_t *exec)
{
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        if (m->state != NX__RESIDENT || m->draining)
            continue;
        nx__agentq_t *q;
        while (m->running_count < exec->conf->max_batch && (q = next_queue(exec, m)))
            if (!admit_one(exec, m, q)) {
                m->rr_agent = (size_t)(q - exec->queues); /* it goes first next time */
                break;
            }
    }
}

/* After a step: sample each sequence's next token, finish the ones that ended. */
static void advance_all(nx_exec_t *exec, nx__model_t *m, nx__job_t **jobs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        nx__job_t *job = jobs[i];
        nx_err_t err = {0};
        if (!job->first_token_ns)
            job->first_token_ns = nx_now_ns();
        bool room = nx_seq_len(job->seq) < nx_seq_capacity(job->seq);
        int32_t next = 0;
        int rc = nx_gen_advance_id(job->gen, nx_seq_picked(job->seq), room, &next, &err);
        if (rc == NX_OK && !nx_gen_stop_reason(job->gen)) {
            const int32_t *feed; /* the picked id, and any tokens a grammar forced after it */
            size_t feed_count = nx_gen_next_ids(job->gen, &feed);
            rc = nx_seq_feed(job->seq, feed, feed_count, &err);
        }
        if (rc != NX_OK || nx_gen_stop_reason(job->gen)) {
            unlink_running(m, job);
            if (rc != NX_OK)
                finish(exec, job, NX_TASK_FAILED, "internal", err.msg);
            else
                finish(exec, job, NX_TASK_DONE, NULL, NULL);
        }
    }
}

bool nx__sched_step(nx_exec_t *exec)
{
    for (size_t k = 0; k < exec->model_count; k++) {
        size_t i = (exec->step_cursor + k) % exec->model_count;
        nx__model_t *m = &exec->models[i];
        if (!m->running_count)
            continue;
        exec->step_cursor = i + 1;
        nx__job_t **jobs = calloc(m->running_count, sizeof *jobs);
        nx_seq_t **seqs = calloc(m->running_count, sizeof *seqs);
        nx_err_t err = {0};
        size_t n = 0;
        for (nx__job_t *job = m->running; jobs && seqs && job; job = job->next) {
            jobs[n] = job;
            seqs[n++] = job->seq;
        }
        if (n < m->running_count)
            nx_err_set(&err, NX_ENOMEM, "out of memory stepping %u sequences",
                       m->running_count);
        /* each step ends with a token picked for every sequence (on the GPU with CUDA) */
        for (size_t j = 0; err.code == NX_OK && j < n; j++)
            nx_gen_pick_next(jobs[j]->gen, jobs[j]->seq, &err);
        if (err.code == NX_OK)
            nx_engine_step(m->engine, seqs, n, &err);
        if (err.code != NX_OK) {
            for (size_t j = 0; j < n; j++) {
                unlink_running(m, jobs[j]);
                finish(exec, jobs[j], NX_TASK_FAILED, "model_error", err.msg);
            }
        } else {
            advance_all(exec, m, jobs, n);
        }
        free(jobs);
        free(seqs);
        return true;
    }
    return false;
}
