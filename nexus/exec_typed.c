/* exec_typed.c — the executor's side of typed answers (typed.h): a job whose task carries an
 * output constraint decodes under it (nx_gen_set_grammar), with the token trie of its model's
 * tokenizer built once, on the first constrained task of that model, and kept (immutable)
 * while the executor lives. The trie's end ids are the generation's stop ids, which depend on
 * the chat template, so a model keeps one trie per distinct stop-id set (in practice one or
 * two: one per chat template its agents use).
 *
 * The jobs of one model under one grammar share a matcher (each generation keeps its own
 * state in it), so the masks one computes serve the others and the next tasks: a schema used
 * again starts warm. Idle matchers are reset (which drops their interned states past a size
 * threshold, keeping the per-terminal token classes) and at most MAX_IDLE_SHARED of them are
 * kept per model, least recently used going first.
 */
#include <stdlib.h>
#include <string.h>

#include "exec_internal.h"
#include "toolset.h"
#include "typed.h"

#define MAX_IDLE_SHARED 16

struct nx__shared {
    struct nx__shared *next;
    nx_typed_t *typed;             /* a reference: its grammar outlives the matcher ... */
    nx_toolset_t *tools;           /* ... or this one's (a tool plan's grammar) */
    const nx_gram_t *gram;
    const nx_gram_vocab_t *vocab;
    nx_gram_matcher_t *matcher;
    uint32_t users;                /* jobs whose generation uses it now */
    uint64_t last_used_ns;
};

static void shared_free(nx__shared_t *s)
{
    nx_gram_matcher_destroy(&s->matcher);
    nx_typed_release(&s->typed);
    nx_toolset_release(&s->tools);
    free(s);
}

/* The model's shared matcher of (the grammar of typed or of tools, vocab), made on first use;
 * NULL when there is no memory (the generation then makes its own). */
static nx__shared_t *shared_get(nx__model_t *m, nx_typed_t *typed, nx_toolset_t *tools,
                                const nx_gram_vocab_t *vocab)
{
    const nx_gram_t *gram = typed ? nx_typed_gram(typed) : nx_toolset_plan(tools)->gram;
    for (nx__shared_t *s = m->shared; s; s = s->next)
        if (s->gram == gram && s->vocab == vocab)
            return s;
    nx__shared_t *s = calloc(1, sizeof *s);
    nx_err_t err = {0};
    if (!s || !(s->matcher = nx_gram_matcher_new(gram, vocab, &err))) {
        free(s);
        return NULL;
    }
    s->gram = gram;
    s->typed = nx_typed_ref(typed);
    s->tools = nx_toolset_ref(tools);
    s->vocab = vocab;
    s->next = m->shared;
    m->shared = s;
    return s;
}

/* Past MAX_IDLE_SHARED idle matchers, the least recently used idle one goes. */
static void shared_trim(nx__model_t *m)
{
    for (;;) {
        size_t idle = 0;
        nx__shared_t **oldest = NULL;
        for (nx__shared_t **p = &m->shared; *p; p = &(*p)->next)
            if ((*p)->users == 0) {
                idle++;
                if (!oldest || (*p)->last_used_ns < (*oldest)->last_used_ns)
                    oldest = p;
            }
        if (idle <= MAX_IDLE_SHARED)
            return;
        nx__shared_t *s = *oldest;
        *oldest = s->next;
        shared_free(s);
    }
}

void nx__typed_teardown(nx__job_t *job)
{
    nx__shared_t *s = job->shared;
    job->shared = NULL;
    if (!s)
        return;
    s->last_used_ns = nx_now_ns();
    if (--s->users == 0) {
        nx_gram_matcher_reset(s->matcher); /* bounded memory between uses */
        shared_trim(job->model);
    }
}

struct nx__vocab {
    struct nx__vocab *next;
    int32_t end_ids[32];
    size_t end_id_count;
    nx_gram_vocab_t *vocab;
};

/* The model's trie for these end ids, built now if it is the first. NULL with err set. */
static const nx_gram_vocab_t *model_vocab(nx__model_t *m, const int32_t *end_ids,
                                          size_t end_id_count, nx_err_t *err)
{
    for (nx__vocab_t *v = m->vocabs; v; v = v->next)
        if (v->end_id_count == end_id_count &&
            memcmp(v->end_ids, end_ids, end_id_count * sizeof *end_ids) == 0)
            return v->vocab;
    if (end_id_count > sizeof m->vocabs->end_ids / sizeof m->vocabs->end_ids[0]) {
        nx_err_set(err, NX_EINVAL, "more than 32 stop ids");
        return NULL;
    }
    nx__vocab_t *v = calloc(1, sizeof *v);
    if (!v) {
        nx_err_set(err, NX_ENOMEM, "out of memory for a token trie");
        return NULL;
    }
    uint64_t t0 = nx_now_ns();
    if (!(v->vocab = nx_gram_vocab_from_tokenizer(m->tok, end_ids, end_id_count, err))) {
        free(v);
        return NULL;
    }
    memcpy(v->end_ids, end_ids, end_id_count * sizeof *end_ids);
    v->end_id_count = end_id_count;
    v->next = m->vocabs;
    m->vocabs = v;
    nx_log(NX_LOG_INFO, "model %s: token trie of %u tokens built in %.1f ms", m->name,
           nx_gram_vocab_size(v->vocab), (double)(nx_now_ns() - t0) / 1e6);
    return v->vocab;
}

void nx__typed_vocabs_free(nx__model_t *m)
{
    while (m->shared) {
        nx__shared_t *s = m->shared;
        m->shared = s->next;
        shared_free(s);
    }
    while (m->vocabs) {
        nx__vocab_t *v = m->vocabs;
        m->vocabs = v->next;
        nx_gram_vocab_destroy(&v->vocab);
        free(v);
    }
}

/* A task's tools: their plan (toolset.h) as the generation's grammar, triggers and bans. */
static int tools_setup(nx__job_t *job, nx_err_t *err)
{
    const nx_tools_plan_t *plan = nx_toolset_plan(job->task->tools);
    nx_gen_grammar_t g = {.banned_ids = plan->banned_ids, .banned_id_count = plan->n_banned_ids};
    nx__shared_t *shared = NULL;
    if (plan->gram) {
        nx__model_t *m = job->model;
        const nx_gram_vocab_t *vocab = model_vocab(m, job->stop_ids, job->stop_id_count, err);
        if (!vocab)
            return err && err->code ? err->code : NX_ENOMEM;
        g.gram = plan->gram;
        g.vocab = vocab;
        if (plan->lazy) {
            g.trigger_ids = plan->trigger_ids;
            g.trigger_id_count = plan->n_trigger_ids;
            g.trigger_strs = plan->trigger_strings;
            g.trigger_str_count = plan->n_trigger_strings;
            g.trigger_at_start = plan->trigger_at_start;
        }
        if ((shared = shared_get(m, NULL, job->task->tools, vocab)))
            g.matcher = shared->matcher;
        if (plan->think_open && job->task->agent->thinking != 0) {
            g.think_open = plan->think_open;
            g.think_close = plan->think_close;
        }
    } else if (!g.banned_id_count) {
        return NX_OK;
    }
    int rc = nx_gen_set_grammar(job->gen, &g, err);
    if (rc == NX_OK && shared) {
        shared->users++;
        job->shared = shared;
    }
    return rc;
}

int nx__typed_setup(nx__job_t *job, nx_err_t *err)
{
    if (job->task->tools)
        return tools_setup(job, err);
    const nx_typed_t *typed = job->task->output;
    if (!typed)
        return NX_OK;
    nx__model_t *m = job->model;
    const nx_gram_vocab_t *vocab = model_vocab(m, job->stop_ids, job->stop_id_count, err);
    if (!vocab)
        return err && err->code ? err->code : NX_ENOMEM;
    nx_gen_grammar_t g = {.gram = nx_typed_gram(typed), .vocab = vocab};
    nx__shared_t *shared = shared_get(m, job->task->output, NULL, vocab);
    if (shared)
        g.matcher = shared->matcher;
    /* a thinking block stays free where the model may open one (Qwen3 with thinking not
     * off: with it off, the prompt pre-fills an empty block) */
    const nx_agent_conf_t *agent = job->task->agent;
    nx_chat_kind_t kind = agent->chat_template == NX_CHAT_AUTO ? m->chat_kind
                                                               : agent->chat_template;
    if (kind == NX_CHAT_CHATML && agent->thinking != 0 &&
        nx_tokenizer_token_id(m->tok, "<think>") >= 0 &&
        nx_tokenizer_token_id(m->tok, "</think>") >= 0) {
        g.think_open = "<think>";
        g.think_close = "</think>";
    }
    int rc = nx_gen_set_grammar(job->gen, &g, err);
    if (rc == NX_OK && shared) {
        shared->users++;
        job->shared = shared;
    }
    return rc;
}
