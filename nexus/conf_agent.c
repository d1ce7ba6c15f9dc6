/* conf_agent.c — one agent's YAML file: fields, defaults and ranges (schemas/agent.schema.json
 * states the same rules). Cross-agent rules (unique names, `next`, model folders) are conf.c's.
 *
 *   name: drafter                 # [A-Za-z0-9_.-]{1,64}, required
 *   description: "..."            # default ""
 *   model: demo-qwen3             # a folder or a .gguf file under `models`; Org/Name[@REV] (the
 *                                 # store, then the Hugging Face cache; modelstore.h); or a path
 *                                 # (./x ../x /x, or a '/' name that is no hub name)
 *   system_prompt: "..."          # optional
 *   chat_template: auto           # auto | chatml | llama3 | raw
 *   generation: {max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed,
 *                stop: [..], thinking: bool}
 *   residency: {pin: bool, priority: -100..100, keep_alive: 10m}   # keep_alive 0 = forever
 *   memory: none | session | {type: none} | {type: session, turns: 20}
 *   next: editor                  # the agent that receives this agent's output
 *   tools: [searcher, calc]       # agents it may call as function tools
 *   limits: {queue: 1..100000, timeout: 5m, tool_steps: 1..64}
 *   output_schema: {type: object, ...}   # a JSON Schema as YAML, or "x.json" (a file beside
 *   input_schema: schemas/in.json        # this one); compiled here: a schema the compiler
 *   output_strict: false                 # refuses is an error at the key (typed.h)
 */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "conf.h"
#include "conf_yaml.h"
#include "typed.h"

#define MAX_STOP_STRINGS 16
#define DEFAULT_TURNS 20
#define DEFAULT_QUEUE 64
#define DEFAULT_TIMEOUT_S 300
#define MAX_TIMEOUT_S 604800u /* a week: fits timeout_ms in 32 bits */

static const char *const agent_keys[] = {"name",      "description", "model",  "system_prompt",
                                         "chat_template", "generation", "residency", "memory",
                                         "next",      "tools",       "limits",
                                         "output_schema", "input_schema", "output_strict",
                                         NULL};
static const char *const agent_required[] = {"name", "model", NULL};
static const char *const gen_keys[] = {"max_tokens", "temperature", "top_p",
                                       "top_k",      "min_p",       "repetition_penalty",
                                       "seed",       "stop",        "thinking",
                                       NULL};
static const char *const res_keys[] = {"pin", "priority", "keep_alive", NULL};
static const char *const mem_keys[] = {"type", "turns", NULL};
static const char *const mem_required[] = {"type", NULL};
static const char *const limit_keys[] = {"queue", "timeout", "tool_steps", NULL};

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return false;
    return true;
}

static int get_name(nx__yfile_t *f, yaml_node_t *node, const char *field, char **out,
                    nx_err_t *err)
{
    int rc = nx__yget_string(f, node, field, false, out, err);
    if (rc == NX_OK && !valid_name(*out))
        rc = nx__yexpect(f, node, field,
                         "an agent name of 1 to 64 letters, digits, '_', '.' or '-'", err);
    return rc;
}

static int get_float(nx__yfile_t *f, yaml_node_t *map, const char *key, nx__yrange_t range,
                     float *out, nx_err_t *err)
{
    yaml_node_t *n = nx__ymap_get(f, map, key);
    if (!n)
        return NX_OK;
    char field[64];
    snprintf(field, sizeof field, "generation.%s", key);
    double v;
    int rc = nx__yget_number(f, n, field, range, &v, err);
    if (rc == NX_OK)
        *out = (float)v;
    return rc;
}

static int parse_stop(nx__yfile_t *f, yaml_node_t *n, nx_agent_conf_t *a, nx_err_t *err)
{
    const char *field = "generation.stop";
    if (n->type != YAML_SEQUENCE_NODE)
        return nx__yexpect(f, n, field, "a list of strings", err);
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > MAX_STOP_STRINGS)
        return nx__yerr(f, n, field, err, "expected at most %d stop strings, got %zu",
                        MAX_STOP_STRINGS, count);
    a->stop_owned = calloc(count + 1, sizeof *a->stop_owned);
    if (!a->stop_owned)
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(&f->doc, n->data.sequence.items.start[i]);
        char item_field[64];
        snprintf(item_field, sizeof item_field, "%s[%zu]", field, i);
        int rc = nx__yget_string(f, item, item_field, false, &a->stop_owned[i], err);
        if (rc != NX_OK)
            return rc;
        a->generation.stop_count = i + 1;
    }
    a->generation.stop = (const char *const *)a->stop_owned;
    return NX_OK;
}

static int parse_generation(nx__yfile_t *f, yaml_node_t *g, nx_agent_conf_t *a, nx_err_t *err)
{
    int rc = nx__ymap_check(f, g, "generation", gen_keys, NULL, err);
    nx_sampling_t *s = &a->generation;
    yaml_node_t *n;
    uint64_t u;
    const double inf = __builtin_inf();
    if (rc == NX_OK && (n = nx__ymap_get(f, g, "max_tokens")) &&
        (rc = nx__yget_u64(f, n, "generation.max_tokens", 1, 1048576, &u, err)) == NX_OK)
        s->max_tokens = (uint32_t)u;
    if (rc == NX_OK)
        rc = get_float(f, g, "temperature", (nx__yrange_t){0, inf, false, false},
                       &s->temperature, err);
    if (rc == NX_OK)
        rc = get_float(f, g, "top_p", (nx__yrange_t){0, 1, true, false}, &s->top_p, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, g, "top_k")) &&
        (rc = nx__yget_u64(f, n, "generation.top_k", 0, 1048576, &u, err)) == NX_OK)
        s->top_k = (uint32_t)u;
    if (rc == NX_OK)
        rc = get_float(f, g, "min_p", (nx__yrange_t){0, 1, false, true}, &s->min_p, err);
    if (rc == NX_OK)
        rc = get_float(f, g, "repetition_penalty", (nx__yrange_t){0, inf, true, false},
                       &s->repetition_penalty, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, g, "seed")))
        rc = nx__yget_u64(f, n, "generation.seed", 0, UINT64_MAX, &s->seed, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, g, "stop")))
        rc = parse_stop(f, n, a, err);
    bool thinking;
    if (rc == NX_OK && (n = nx__ymap_get(f, g, "thinking")) &&
        (rc = nx__yget_bool(f, n, "generation.thinking", &thinking, err)) == NX_OK)
        a->thinking = thinking ? 1 : 0;
    return rc;
}

static int parse_residency(nx__yfile_t *f, yaml_node_t *r, nx_agent_conf_t *a, nx_err_t *err)
{
    int rc = nx__ymap_check(f, r, "residency", res_keys, NULL, err);
    yaml_node_t *n;
    int64_t priority;
    uint64_t seconds;
    if (rc == NX_OK && (n = nx__ymap_get(f, r, "pin")))
        rc = nx__yget_bool(f, n, "residency.pin", &a->pin, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, r, "priority")) &&
        (rc = nx__yget_int(f, n, "residency.priority", -100, 100, &priority, err)) == NX_OK)
        a->priority = (int)priority;
    if (rc == NX_OK && (n = nx__ymap_get(f, r, "keep_alive")) &&
        (rc = nx__yget_duration(f, n, "residency.keep_alive", 0, UINT32_MAX, &seconds, err)) ==
            NX_OK)
        a->keep_alive_s = (uint32_t)seconds;
    return rc;
}

/* memory: none | session | {type: none} | {type: session, turns: N} */
static int parse_memory(nx__yfile_t *f, yaml_node_t *m, nx_agent_conf_t *a, nx_err_t *err)
{
    const char *expected = "'none', 'session' or a mapping {type: none|session, turns: N}";
    yaml_node_t *type = m;
    const char *field = "memory";
    if (m->type == YAML_MAPPING_NODE) {
        int rc = nx__ymap_check(f, m, "memory", mem_keys, mem_required, err);
        if (rc != NX_OK)
            return rc;
        type = nx__ymap_get(f, m, "type");
        field = "memory.type";
        expected = "'none' or 'session'";
    }
    char *text = NULL;
    int rc = nx__yget_string(f, type, field, false, &text, err);
    if (rc != NX_OK)
        return nx__yexpect(f, type, field, expected, err);
    a->memory_session = strcmp(text, "session") == 0;
    bool known = a->memory_session || strcmp(text, "none") == 0;
    free(text);
    if (!known)
        return nx__yexpect(f, type, field, expected, err);
    yaml_node_t *turns = m->type == YAML_MAPPING_NODE ? nx__ymap_get(f, m, "turns") : NULL;
    if (turns && !a->memory_session)
        return nx__yerr(f, turns, "memory.turns", err, "only allowed with type: session");
    uint64_t u;
    if (turns && (rc = nx__yget_u64(f, turns, "memory.turns", 1, 10000, &u, err)) == NX_OK)
        a->memory_turns = (uint32_t)u;
    return rc;
}

static int parse_limits(nx__yfile_t *f, yaml_node_t *l, nx_agent_conf_t *a, nx_err_t *err)
{
    int rc = nx__ymap_check(f, l, "limits", limit_keys, NULL, err);
    yaml_node_t *n;
    uint64_t u;
    if (rc == NX_OK && (n = nx__ymap_get(f, l, "queue")) &&
        (rc = nx__yget_u64(f, n, "limits.queue", 1, 100000, &u, err)) == NX_OK)
        a->queue_limit = (uint32_t)u;
    if (rc == NX_OK && (n = nx__ymap_get(f, l, "timeout")) &&
        (rc = nx__yget_duration(f, n, "limits.timeout", 1, MAX_TIMEOUT_S, &u, err)) == NX_OK)
        a->timeout_ms = (uint32_t)(u * 1000);
    if (rc == NX_OK && (n = nx__ymap_get(f, l, "tool_steps")) &&
        (rc = nx__yget_u64(f, n, "limits.tool_steps", 1, 64, &u, err)) == NX_OK)
        a->tool_steps = (uint32_t)u;
    return rc;
}

/* tools: a list of agent names (whether they exist, and cycles, are conf.c's checks). */
static int parse_tools(nx__yfile_t *f, yaml_node_t *n, nx_agent_conf_t *a,
                       nx__agent_marks_t *marks, nx_err_t *err)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return nx__yexpect(f, n, "tools", "a list of agent names", err);
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > NX__AGENT_MAX_TOOLS)
        return nx__yerr(f, n, "tools", err, "expected at most %d agents, got %zu",
                        NX__AGENT_MAX_TOOLS, count);
    if (count && !(a->tools = calloc(count, sizeof *a->tools)))
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(&f->doc, n->data.sequence.items.start[i]);
        char field[32];
        snprintf(field, sizeof field, "tools[%zu]", i);
        marks->tools[i] = item->start_mark;
        a->tool_count = i + 1; /* counted first: a name refused after its copy is freed too */
        int rc = get_name(f, item, field, &a->tools[i], err);
        if (rc != NX_OK)
            return rc;
        for (size_t k = 0; k < i; k++)
            if (strcmp(a->tools[k], a->tools[i]) == 0)
                return nx__yerr(f, item, field, err, "agent '%s' is listed twice",
                                a->tools[i]);
    }
    return NX_OK;
}

/* A schema file beside the agent file: its JSON text (caller frees), or NULL with err set at
 * the key's node. */
static char *read_schema_file(nx__yfile_t *f, yaml_node_t *n, const char *field, nx_err_t *err)
{
    char *name = NULL;
    if (nx__yget_string(f, n, field, false, &name, err) != NX_OK)
        return NULL;
    char *path = nx__conf_abspath(f->dir, name);
    free(name);
    json_error_t jerr;
    json_t *doc = path ? json_load_file(path, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!text)
        nx__yerr(f, n, field, err, "%s: %s (line %d column %d)", path ? path : "?",
                 doc ? "no memory" : jerr.text, doc ? 0 : jerr.line, doc ? 0 : jerr.column);
    json_decref(doc);
    free(path);
    return text;
}

/* The key node of `key` in mapping `map` (for messages about the whole value). */
static yaml_node_t *key_node(nx__yfile_t *f, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&f->doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return k;
    }
    return NULL;
}

/* output_schema / input_schema: an inline mapping or a .json file name; compiled here so a
 * schema the grammar compiler refuses stops start-up at the key, with its keyword and JSON
 * pointer. *out is the canonical text. */
static int parse_schema(nx__yfile_t *f, yaml_node_t *root, yaml_node_t *n, const char *field,
                        bool strict, char **out, nx_err_t *err)
{
    char *text = NULL;
    if (n->type == YAML_MAPPING_NODE) {
        json_t *doc;
        int rc = nx__yget_json(f, n, field, &doc, err);
        if (rc != NX_OK)
            return rc;
        text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(doc);
        if (!text)
            return nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    } else if (n->type == YAML_SCALAR_NODE) {
        if (!(text = read_schema_file(f, n, field, err)))
            return err && err->code ? err->code : NX_EFORMAT;
    } else {
        return nx__yexpect(f, n, field, "a JSON Schema (a mapping) or the name of a .json "
                           "file beside this one", err);
    }
    nx_typed_t *typed = NULL;
    nx_err_t e = {0};
    if (nx_typed_new(NX_TYPED_SCHEMA, text, strlen(text), strict, &typed, &e) != NX_OK) {
        free(text);
        yaml_node_t *key = key_node(f, root, field);
        return nx__yerr(f, key ? key : n, field, err, "%s", e.msg);
    }
    nx_typed_release(&typed);
    *out = text;
    return NX_OK;
}

static int parse_schemas(nx__yfile_t *f, yaml_node_t *root, nx_agent_conf_t *a, nx_err_t *err)
{
    yaml_node_t *n;
    int rc = NX_OK;
    if ((n = nx__ymap_get(f, root, "output_strict")))
        rc = nx__yget_bool(f, n, "output_strict", &a->output_strict, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "output_schema")))
        rc = parse_schema(f, root, n, "output_schema", a->output_strict, &a->output_schema,
                          err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "input_schema")))
        rc = parse_schema(f, root, n, "input_schema", false, &a->input_schema, err);
    return rc;
}

static bool model_is_path(const char *model)
{
    return model[0] == '/' || strncmp(model, "./", 2) == 0 || strncmp(model, "../", 3) == 0 ||
           strcmp(model, ".") == 0 || strcmp(model, "..") == 0 ||
           (strchr(model, '/') && !nx_ms_parse_name(model, NULL));
}

/* With a models folder, the name is resolved (modelstore.h): a hub name found nowhere is an
 * error here, naming this file and line, with the `nexusctl pull` that fetches it. On its own
 * (models_dir NULL) only a path can be resolved; a bare or hub name needs the store. */
static int parse_model(nx__yfile_t *f, yaml_node_t *n, const char *models_dir,
                       nx_agent_conf_t *a, nx_err_t *err)
{
    int rc = nx__yget_string(f, n, "model", false, &a->model, err);
    if (rc != NX_OK)
        return rc;
    if (!models_dir && !model_is_path(a->model))
        return NX_OK;
    nx_ms_model_t m;
    nx_err_t e = {0};
    rc = nx_ms_resolve(a->model, models_dir, f->dir, &m, &e);
    if (rc == NX_ENOMEM)
        return nx_err_set(err, rc, "%s: no memory", f->path);
    if (rc != NX_OK) {
        nx__yerr(f, n, "model", err, "%s", e.msg);
        if (err)
            err->code = rc; /* NX_ENOTFOUND for a missing model, as for a missing folder */
        return rc;
    }
    a->model_path = m.path; /* moves it */
    a->model_source = m.source;
    m.path = NULL;
    nx_ms_model_clear(&m);
    return NX_OK;
}

static void set_defaults(nx_agent_conf_t *a)
{
    a->chat_template = NX_CHAT_AUTO;
    a->thinking = -1;
    a->generation = nx_sampling_default();
    a->generation.stop = NULL;
    a->generation.stop_count = 0;
    a->memory_turns = DEFAULT_TURNS;
    a->queue_limit = DEFAULT_QUEUE;
    a->timeout_ms = DEFAULT_TIMEOUT_S * 1000;
    a->tool_steps = 8;
}

static int parse_texts(nx__yfile_t *f, yaml_node_t *root, nx_agent_conf_t *a, nx_err_t *err)
{
    yaml_node_t *n;
    int rc = NX_OK;
    if ((n = nx__ymap_get(f, root, "description")))
        rc = nx__yget_string(f, n, "description", true, &a->description, err);
    else if (!(a->description = strdup("")))
        rc = nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "system_prompt")))
        rc = nx__yget_string(f, n, "system_prompt", true, &a->system_prompt, err);
    char *kind = NULL;
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "chat_template")) &&
        (rc = nx__yget_string(f, n, "chat_template", false, &kind, err)) == NX_OK &&
        !nx_chat_kind_parse(kind, &a->chat_template))
        rc = nx__yexpect(f, n, "chat_template", "one of auto, chatml, llama3, raw", err);
    free(kind);
    return rc;
}

static int parse_sections(nx__yfile_t *f, yaml_node_t *root, nx_agent_conf_t *a,
                          nx__agent_marks_t *marks, nx_err_t *err)
{
    yaml_node_t *n;
    int rc = NX_OK;
    if ((n = nx__ymap_get(f, root, "generation")))
        rc = parse_generation(f, n, a, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "residency")))
        rc = parse_residency(f, n, a, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "memory")))
        rc = parse_memory(f, n, a, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "next"))) {
        marks->next = n->start_mark;
        rc = get_name(f, n, "next", &a->next, err);
    }
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "tools")))
        rc = parse_tools(f, n, a, marks, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "limits")))
        rc = parse_limits(f, n, a, err);
    if (rc == NX_OK && nx_sampling_validate(&a->generation, err) != NX_OK) {
        /* the per-field checks above use the same ranges; this is a second line of defence */
        nx_err_prefix(err, "%s: generation: ", f->path);
        rc = NX_EFORMAT;
        if (err)
            err->code = rc;
    }
    return rc;
}

int nx__agent_parse(nx__yfile_t *f, const char *models_dir, nx_agent_conf_t *a,
                    nx__agent_marks_t *marks, nx_err_t *err)
{
    set_defaults(a);
    if (!(a->source_path = strdup(f->path)))
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    snprintf(a->hash, sizeof a->hash, "%016llx",
             (unsigned long long)XXH3_64bits(f->bytes, f->len));
    yaml_node_t *root = nx__yfile_root(f);
    int rc = nx__ymap_check(f, root, "", agent_keys, agent_required, err);
    yaml_node_t *name = nx__ymap_get(f, root, "name");
    yaml_node_t *model = nx__ymap_get(f, root, "model");
    if (rc == NX_OK) {
        marks->name = name->start_mark;
        marks->model = model->start_mark;
        rc = get_name(f, name, "name", &a->name, err);
    }
    if (rc == NX_OK)
        rc = parse_model(f, model, models_dir, a, err);
    if (rc == NX_OK)
        rc = parse_texts(f, root, a, err);
    if (rc == NX_OK)
        rc = parse_sections(f, root, a, marks, err);
    if (rc == NX_OK)
        rc = parse_schemas(f, root, a, err);
    return rc;
}

void nx__agent_clear(nx_agent_conf_t *a)
{
    free(a->name);
    free(a->description);
    free(a->model);
    free(a->model_path);
    free(a->system_prompt);
    if (a->stop_owned)
        for (char **s = a->stop_owned; *s; s++)
            free(*s);
    free(a->stop_owned);
    free(a->next);
    for (size_t i = 0; i < a->tool_count; i++)
        free(a->tools[i]);
    free(a->tools);
    free(a->output_schema);
    free(a->input_schema);
    free(a->source_path);
    memset(a, 0, sizeof *a);
}

int nx_agent_conf_load(const char *path, nx_agent_conf_t **out, nx_err_t *err)
{
    *out = NULL;
    nx__yfile_t f;
    nx__agent_marks_t marks;
    nx_agent_conf_t *a = calloc(1, sizeof *a);
    if (!a)
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", path);
    int rc = nx__yfile_open(&f, path, err);
    if (rc == NX_OK)
        rc = nx__agent_parse(&f, NULL, a, &marks, err);
    nx__yfile_close(&f);
    if (rc != NX_OK) {
        nx_agent_conf_free(&a);
        return rc;
    }
    *out = a;
    return NX_OK;
}

void nx_agent_conf_free(nx_agent_conf_t **agent_p)
{
    if (!*agent_p)
        return;
    nx__agent_clear(*agent_p);
    free(*agent_p);
    *agent_p = NULL;
}
