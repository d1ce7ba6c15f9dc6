/* toolset.c — a request's tools compiled once and shared (toolset.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toolset.h"

struct nx_toolset {
    atomic_uint refs;
    nx_tools_plan_t *plan;
    char *tools_json;
    nx_tools_family_t family;
    nx_tool_choice_t choice;
    bool parallel;
};

int nx_toolset_new(const nx_tokenizer_t *tok, const char *tools_json,
                   const char *tool_choice_json, bool parallel, nx_toolset_t **out,
                   nx_err_t *err)
{
    *out = NULL;
    nx_tools_family_t family = nx_tools_family_detect(tok);
    if (family == NX_TOOLS_NONE)
        return nx_err_set(err, NX_ENOTSUP, "tools: the agent's model has no known tool-call "
                          "format (its chat template writes no <tool_call> and it is not a "
                          "Llama 3 template)");
    nx_tool_choice_t choice = NX_TOOL_CHOICE_AUTO;
    char *name = NULL;
    int rc = nx_tools_choice_parse(tool_choice_json,
                                   tool_choice_json ? strlen(tool_choice_json) : 0, &choice,
                                   &name, err);
    if (rc != NX_OK)
        return rc;
    nx_tools_request_t req = {.family = family, .tools_json = tools_json,
                              .tools_len = strlen(tools_json), .choice = choice,
                              .choice_name = name, .parallel = parallel};
    nx_toolset_t *t = calloc(1, sizeof *t);
    if (!t || !(t->tools_json = strdup(tools_json))) {
        free(t);
        free(name);
        return nx_err_set(err, NX_ENOMEM, "tools: out of memory");
    }
    t->plan = nx_tools_plan_new(&req, tok, err);
    free(name);
    if (!t->plan) {
        free(t->tools_json);
        free(t);
        return err && err->code ? err->code : NX_ENOMEM;
    }
    atomic_init(&t->refs, 1);
    t->family = family;
    t->choice = choice;
    t->parallel = parallel;
    *out = t;
    return NX_OK;
}

nx_toolset_t *nx_toolset_ref(nx_toolset_t *self)
{
    if (self)
        atomic_fetch_add(&self->refs, 1);
    return self;
}

void nx_toolset_release(nx_toolset_t **self_p)
{
    nx_toolset_t *t = self_p ? *self_p : NULL;
    if (!t)
        return;
    *self_p = NULL;
    if (atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    nx_tools_plan_destroy(&t->plan);
    free(t->tools_json);
    free(t);
}

const nx_tools_plan_t *nx_toolset_plan(const nx_toolset_t *self) { return self->plan; }
const char *nx_toolset_tools_json(const nx_toolset_t *self) { return self->tools_json; }
nx_tools_family_t nx_toolset_family(const nx_toolset_t *self) { return self->family; }
nx_tool_choice_t nx_toolset_choice(const nx_toolset_t *self) { return self->choice; }

/* --- the cache ------------------------------------------------------------------------- */

typedef struct entry {
    struct entry *next;
    char *key;             /* tokenizer address, parallel flag, choice and tools text */
    nx_toolset_t *set;     /* the cache's reference */
    unsigned long long last_use;
} entry_t;

struct nx_toolset_cache {
    entry_t *head;
    size_t count, capacity, compiled, hits;
    unsigned long long clock;
};

nx_toolset_cache_t *nx_toolset_cache_new(size_t capacity)
{
    nx_toolset_cache_t *c = calloc(1, sizeof *c);
    if (c)
        c->capacity = capacity ? capacity : 1;
    return c;
}

void nx_toolset_cache_destroy(nx_toolset_cache_t **self_p)
{
    nx_toolset_cache_t *c = self_p ? *self_p : NULL;
    if (!c)
        return;
    while (c->head) {
        entry_t *e = c->head;
        c->head = e->next;
        nx_toolset_release(&e->set);
        free(e->key);
        free(e);
    }
    free(c);
    *self_p = NULL;
}

static char *make_key(const nx_tokenizer_t *tok, const char *tools, const char *choice,
                      bool parallel)
{
    size_t len = strlen(tools) + (choice ? strlen(choice) : 0) + 64;
    char *key = malloc(len);
    if (key)
        snprintf(key, len, "%p|%d|%s|%s", (const void *)tok, parallel, choice ? choice : "",
                 tools);
    return key;
}

int nx_toolset_cache_get(nx_toolset_cache_t *self, const nx_tokenizer_t *tok,
                         const char *tools_json, const char *tool_choice_json, bool parallel,
                         nx_toolset_t **out, nx_err_t *err)
{
    *out = NULL;
    char *key = make_key(tok, tools_json, tool_choice_json, parallel);
    if (!key)
        return nx_err_set(err, NX_ENOMEM, "tools: out of memory");
    for (entry_t *e = self->head; e; e = e->next)
        if (strcmp(e->key, key) == 0) {
            free(key);
            e->last_use = ++self->clock;
            self->hits++;
            *out = nx_toolset_ref(e->set);
            return NX_OK;
        }
    nx_toolset_t *set = NULL;
    int rc = nx_toolset_new(tok, tools_json, tool_choice_json, parallel, &set, err);
    if (rc != NX_OK) {
        free(key);
        return rc;
    }
    self->compiled++;
    entry_t *e = calloc(1, sizeof *e);
    if (!e) { /* not kept: still a good answer */
        free(key);
        *out = set;
        return NX_OK;
    }
    e->key = key;
    e->set = nx_toolset_ref(set);
    e->last_use = ++self->clock;
    e->next = self->head;
    self->head = e;
    if (++self->count > self->capacity) {
        entry_t **oldest = NULL;
        for (entry_t **p = &self->head; *p; p = &(*p)->next)
            if (!oldest || (*p)->last_use < (*oldest)->last_use)
                oldest = p;
        entry_t *gone = *oldest;
        *oldest = gone->next;
        nx_toolset_release(&gone->set);
        free(gone->key);
        free(gone);
        self->count--;
    }
    *out = set;
    return NX_OK;
}

void nx_toolset_cache_counts(const nx_toolset_cache_t *self, size_t *compiled, size_t *hits)
{
    *compiled = self->compiled;
    *hits = self->hits;
}
