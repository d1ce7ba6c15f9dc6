/* tools_grammar.c — the grammar of a request's tool calls, built from the family's
 * description (tools_family.c) and each tool's parameters schema compiled by the JSON Schema
 * compiler into the same builder, and the plan (trigger and banned ids) that generation needs
 * beside it.
 *
 * Shape, for a family with calls joined by call_sep:
 *   root  := call (call_sep call)*            (parallel; exactly one call otherwise)
 *   call  := call_open obj call_close
 *   obj   := obj_open "NAME_i" obj_mid args_i obj_close   for each tool i (the named one only
 *            under tool_choice FUNCTION)
 * The name comes first so that the arguments' schema is known from the name on. Each tool's
 * schema is compiled with its own root (its $refs are local to its parameters).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gram_schema.h"
#include "nx_engine.h"
#include "tools.h"

/* OpenAI's function names are ^[a-zA-Z0-9_-]{1,64}$; dots and colons are accepted too (MCP
 * tool names use them). A name needs no escaping inside the JSON string, so the grammar's
 * literal and the parser's view agree byte for byte. */
static bool good_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

int nx_tools_choice_parse(const char *text, size_t len, nx_tool_choice_t *choice_out,
                          char **name_out, nx_err_t *err)
{
    *choice_out = NX_TOOL_CHOICE_AUTO;
    *name_out = NULL;
    if (!text || len == 0)
        return NX_OK;
    json_error_t jerr;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!v)
        return nx_err_set(err, NX_EINVAL, "tool_choice: not JSON: %s", jerr.text);
    int rc = NX_OK;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "auto") == 0)
            *choice_out = NX_TOOL_CHOICE_AUTO;
        else if (strcmp(s, "none") == 0)
            *choice_out = NX_TOOL_CHOICE_NONE;
        else if (strcmp(s, "required") == 0)
            *choice_out = NX_TOOL_CHOICE_REQUIRED;
        else
            rc = nx_err_set(err, NX_EINVAL, "tool_choice: '%s' is not auto, none, required or "
                            "a function", s);
    } else {
        const char *type = json_string_value(json_object_get(v, "type"));
        json_t *fn = json_object_get(v, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!json_is_object(v) || !type || strcmp(type, "function") != 0)
            rc = nx_err_set(err, NX_EINVAL, "tool_choice: an object must have \"type\": "
                                            "\"function\"");
        else if (!name)
            rc = nx_err_set(err, NX_EINVAL, "tool_choice.function.name: missing or not a "
                                            "string");
        else if (!(*name_out = strdup(name)))
            rc = nx_err_set(err, NX_ENOMEM, "tool_choice: out of memory");
        else
            *choice_out = NX_TOOL_CHOICE_FUNCTION;
    }
    json_decref(v);
    return rc;
}

/* The rule of one tool's arguments, compiled into b with the parameters as the schema root. */
static uint32_t compile_params(nx__gb_t *b, json_t *params, bool strict, size_t index,
                               nx_err_t *err)
{
    nx_gram_draft_t draft = NX_GRAM_DRAFT_2020_12;
    const char *uri = json_string_value(json_object_get(params, "$schema"));
    if (uri && strstr(uri, "draft-07"))
        draft = NX_GRAM_DRAFT_07;
    else if (uri && !strstr(uri, "2020-12")) {
        nx_err_set(err, NX_ENOTSUP, "tools[%zu].function.parameters: unsupported keyword "
                   "'$schema' at the root: '%s' (draft 2020-12 and draft-07 are built)",
                   index, uri);
        return NX__DEAD;
    }
    nx__sc_t sc = {.b = b, .root = params, .draft = draft, .strict = strict, .err = err,
                   .synth = json_array(), .any_rule = NX__DEAD, .str_term = NX__DEAD,
                   .num_term = NX__DEAD, .int_term = NX__DEAD};
    uint32_t r = NX__DEAD;
    if (!sc.synth) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NX__DEAD;
    }
    r = nx__sc_compile(&sc, params, "");
    if (sc.rc != NX_OK || r == NX__DEAD) {
        if (err && err->code == NX_OK)
            nx_err_set(err, NX_ENOMEM, "out of memory");
        nx_err_prefix(err, "tools[%zu].function.parameters: ", index);
        r = NX__DEAD;
    }
    free(sc.memo_node);
    free(sc.memo_rule);
    json_decref(sc.synth);
    return r;
}

/* Append one tool's alternative to obj_rule. */
static int add_tool(nx__gb_t *b, const nx_tools_format_t *f, json_t *fn, size_t index,
                    uint32_t obj_rule, nx_err_t *err)
{
    const char *name = json_string_value(json_object_get(fn, "name"));
    json_t *params = json_object_get(fn, "parameters");
    json_t *strict = json_object_get(fn, "strict");
    json_t *dflt = NULL;
    if (!params || json_is_null(params)) /* OpenAI: no parameters is an empty list */
        params = dflt = json_pack("{s:s}", "type", "object");
    if (!params)
        return nx_err_set(err, NX_ENOMEM, "out of memory");
    uint32_t args = compile_params(b, params, json_is_true(strict), index, err);
    json_decref(dflt);
    if (args == NX__DEAD)
        return err ? err->code : NX_EINVAL;
    size_t n_open = strlen(f->obj_open), n_name = strlen(name), n_mid = strlen(f->obj_mid);
    char *head = malloc(n_open + n_name + n_mid + 1);
    if (!head)
        return nx_err_set(err, NX_ENOMEM, "out of memory");
    memcpy(head, f->obj_open, n_open);
    memcpy(head + n_open, name, n_name);
    memcpy(head + n_open + n_name, f->obj_mid, n_mid);
    uint32_t items[3] = {nx__gb_literal(b, head, n_open + n_name + n_mid), NX__REF(args),
                         nx__gb_literal(b, f->obj_close, strlen(f->obj_close))};
    free(head);
    if (items[0] == NX__DEAD || items[2] == NX__DEAD)
        return nx_err_set(err, NX_ENOMEM, "out of memory");
    items[0] = NX__TERM(items[0]);
    items[2] = NX__TERM(items[2]);
    int rc = nx__gb_alt(b, obj_rule, items, 3);
    return rc == NX_OK ? NX_OK : nx_err_set(err, rc, "tools[%zu]: the grammar is too large",
                                            index);
}

/* Check the tools array; every error names tools[i]... */
static int check_tools(json_t *tools, nx_err_t *err)
{
    if (!json_is_array(tools))
        return nx_err_set(err, NX_EINVAL, "tools: not an array");
    if (json_array_size(tools) == 0)
        return nx_err_set(err, NX_EINVAL, "tools: empty");
    size_t i, j;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *type = json_string_value(json_object_get(t, "type"));
        json_t *fn = json_object_get(t, "function");
        if (!json_is_object(t) || !type || strcmp(type, "function") != 0)
            return nx_err_set(err, NX_EINVAL, "tools[%zu].type: must be \"function\"", i);
        if (!json_is_object(fn))
            return nx_err_set(err, NX_EINVAL, "tools[%zu].function: missing or not an object",
                              i);
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name || !good_name(name))
            return nx_err_set(err, NX_EINVAL, "tools[%zu].function.name: must be 1 to 64 of "
                              "a-z, A-Z, 0-9, '_', '-', '.', ':'", i);
        json_t *params = json_object_get(fn, "parameters");
        if (params && !json_is_object(params) && !json_is_null(params) && !json_is_boolean(params))
            return nx_err_set(err, NX_EINVAL, "tools[%zu].function.parameters: not a schema",
                              i);
        json_t *strict = json_object_get(fn, "strict");
        if (strict && !json_is_boolean(strict) && !json_is_null(strict))
            return nx_err_set(err, NX_EINVAL, "tools[%zu].function.strict: not a boolean", i);
        for (j = 0; j < i; j++) {
            json_t *other = json_object_get(json_array_get(tools, j), "function");
            if (strcmp(name, json_string_value(json_object_get(other, "name"))) == 0)
                return nx_err_set(err, NX_EINVAL, "tools[%zu].function.name: '%s' is also "
                                  "tools[%zu]'s", i, name, j);
        }
    }
    return NX_OK;
}

static nx_gram_t *build(const nx_tools_request_t *req, const nx_tools_format_t *f,
                        json_t *tools, nx_err_t *err)
{
    nx__gb_t *b = nx__gb_new();
    if (!b) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NULL;
    }
    uint32_t obj = nx__gb_rule(b), call = nx__gb_rule(b);
    size_t i, n_alts = 0;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (req->choice == NX_TOOL_CHOICE_FUNCTION && strcmp(name, req->choice_name) != 0)
            continue;
        if (add_tool(b, f, fn, i, obj, err) != NX_OK)
            goto fail;
        n_alts++;
    }
    if (n_alts == 0) {
        nx_err_set(err, NX_EINVAL, "tool_choice: function '%s' is not among the tools",
                   req->choice_name);
        goto fail;
    }
    uint32_t items[3], n = 0;
    if (*f->call_open) {
        uint32_t open = nx__gb_literal(b, f->call_open, strlen(f->call_open));
        if (open == NX__DEAD)
            goto nomem;
        items[n++] = NX__TERM(open);
    }
    items[n++] = NX__REF(obj);
    if (*f->call_close) {
        uint32_t close = nx__gb_literal(b, f->call_close, strlen(f->call_close));
        if (close == NX__DEAD)
            goto nomem;
        items[n++] = NX__TERM(close);
    }
    if (nx__gb_alt(b, call, items, n) != NX_OK)
        goto nomem;
    uint32_t root = call;
    if (req->parallel && f->call_sep) {
        uint32_t sep = nx__gb_literal(b, f->call_sep, strlen(f->call_sep));
        if (sep == NX__DEAD)
            goto nomem;
        root = nx__gb_repeat(b, NX__REF(call), NX__TERM(sep), 1, UINT32_MAX, err);
        if (root == NX__DEAD)
            goto fail;
    }
    return nx__gb_finish(b, root, NULL, 0, err);
nomem:
    nx_err_set(err, NX_ENOMEM, "out of memory");
fail:
    nx__gb_free(b);
    return NULL;
}

nx_gram_t *nx_tools_grammar(const nx_tools_request_t *req, nx_err_t *err)
{
    nx_err_clear(err);
    const nx_tools_format_t *f = nx_tools_format(req->family);
    if (!f) {
        nx_err_set(err, NX_ENOTSUP, "tools: the model's tool-call format is unknown (family "
                   "'%s')", nx_tools_family_name(req->family));
        return NULL;
    }
    if (!req->tools_json) {
        nx_err_set(err, NX_EINVAL, "tools: missing");
        return NULL;
    }
    json_error_t jerr;
    json_t *tools = json_loadb(req->tools_json, req->tools_len,
                               JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!tools) {
        nx_err_set(err, NX_EINVAL, "tools: not JSON: %s at line %d column %d", jerr.text,
                   jerr.line, jerr.column);
        return NULL;
    }
    nx_gram_t *g = NULL;
    if (check_tools(tools, err) != NX_OK)
        goto out;
    if (req->choice == NX_TOOL_CHOICE_FUNCTION && !req->choice_name) {
        nx_err_set(err, NX_EINVAL, "tool_choice: a function choice needs a name");
        goto out;
    }
    if (req->choice == NX_TOOL_CHOICE_NONE)
        goto out; /* still checked: a bad tools array is a bad request under any choice */
    g = build(req, f, tools, err);
out:
    json_decref(tools);
    return g;
}

nx_tools_plan_t *nx_tools_plan_new(const nx_tools_request_t *req, const nx_tokenizer_t *tok,
                                   nx_err_t *err)
{
    nx_err_clear(err);
    nx_tools_plan_t *p = calloc(1, sizeof *p);
    if (!p) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NULL;
    }
    p->think_open_id = p->think_close_id = -1;
    p->gram = nx_tools_grammar(req, err);
    if (!p->gram && (!err || err->code != NX_OK)) {
        free(p);
        return NULL;
    }
    const nx_tools_format_t *f = nx_tools_format(req->family);
    int32_t trigger_id = tok ? nx_tokenizer_token_id(tok, f->trigger) : -1;
    if (req->choice == NX_TOOL_CHOICE_NONE) {
        if (trigger_id >= 0)
            p->banned_ids[p->n_banned_ids++] = trigger_id;
    } else if (req->choice == NX_TOOL_CHOICE_AUTO) {
        p->lazy = true;
        p->trigger_at_start = f->trigger_at_start;
        if (trigger_id >= 0)
            p->trigger_ids[p->n_trigger_ids++] = trigger_id;
        else
            p->trigger_strings[p->n_trigger_strings++] = f->trigger;
    }
    /* the thinking block matters only under a grammar (nx_gen_set_grammar refuses think tags
     * without one) */
    if (p->gram && f->think_open && tok) {
        int32_t open = nx_tokenizer_token_id(tok, f->think_open);
        int32_t close = nx_tokenizer_token_id(tok, f->think_close);
        if (open >= 0 && close >= 0) {
            p->think_open = f->think_open, p->think_close = f->think_close;
            p->think_open_id = open, p->think_close_id = close;
        }
    }
    return p;
}

void nx_tools_plan_destroy(nx_tools_plan_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_gram_destroy(&(*self_p)->gram);
    free(*self_p);
    *self_p = NULL;
}
