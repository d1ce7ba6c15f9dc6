/* proto_schema.c — a task's own output constraint from its request map: "schema" (a JSON
 * Schema as a msgpack map) with an optional "strict" bool beside it, OpenAI's
 * "response_format" ({"type": "text" | "json_object" | "json_schema", "json_schema":
 * {"name", "schema", "strict"}}), or "grammar" (GBNF text). At most one of the three. The
 * schema is carried on as compact JSON text; compiling it is the router's (typed.h), so a
 * schema the compiler refuses is a bad_request that names the keyword and JSON pointer.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_int.h"

#define SCHEMA_MAX_DEPTH 64

/* The value under key, NULL when absent or nil; NX_EINVAL when the key is given twice. */
static int get(const msgpack_object *m, const char *key, const char *field,
               const msgpack_object **out, nx_err_t *err)
{
    *out = NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        if (!nx__proto_str_eq(&m->via.map.ptr[i].key, key))
            continue;
        if (*out)
            return nx_err_set(err, NX_EINVAL, "field '%s' is given twice", field);
        *out = &m->via.map.ptr[i].val;
    }
    if (*out && (*out)->type == MSGPACK_OBJECT_NIL)
        *out = NULL;
    return NX_OK;
}

static json_t *to_json(const msgpack_object *o, const char *field, int depth, nx_err_t *err)
{
    if (depth > SCHEMA_MAX_DEPTH) {
        nx_err_set(err, NX_EINVAL, "field '%s': nested deeper than %d", field, SCHEMA_MAX_DEPTH);
        return NULL;
    }
    json_t *out = NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 <= (uint64_t)INT64_MAX)
            return json_integer((json_int_t)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(o->via.f64))
            return json_real(o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        if ((out = json_stringn(o->via.str.ptr, o->via.str.size)))
            return out;
        nx_err_set(err, NX_EINVAL, "field '%s': a string that is not valid UTF-8", field);
        return NULL;
    case MSGPACK_OBJECT_ARRAY:
        out = json_array();
        for (uint32_t i = 0; out && i < o->via.array.size; i++) {
            json_t *item = to_json(&o->via.array.ptr[i], field, depth + 1, err);
            if (!item) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, item);
        }
        return out;
    case MSGPACK_OBJECT_MAP:
        out = json_object();
        for (uint32_t i = 0; out && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            char key[256];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size >= sizeof key ||
                memchr(kv->key.via.str.ptr, 0, kv->key.via.str.size)) {
                nx_err_set(err, NX_EINVAL, "field '%s': map keys must be strings (under 256 "
                           "bytes, no NUL), got %s", field, nx__proto_type_name(&kv->key));
                json_decref(out);
                return NULL;
            }
            memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
            key[kv->key.via.str.size] = '\0';
            if (json_object_get(out, key)) {
                nx_err_set(err, NX_EINVAL, "field '%s': key '%.64s' is given twice", field, key);
                json_decref(out);
                return NULL;
            }
            json_t *v = to_json(&kv->val, field, depth + 1, err);
            if (!v || json_object_set_new(out, key, v) != 0) {
                if (v)
                    nx_err_set(err, NX_EINVAL, "field '%s': key '%.64s' is not valid UTF-8",
                               field, key);
                json_decref(out);
                return NULL;
            }
        }
        return out;
    default:
        break;
    }
    nx_err_set(err, NX_EINVAL, "field '%s': %s has no JSON form", field,
               nx__proto_type_name(o));
    return NULL;
}

/* A schema map as compact JSON text into r. */
static int take_schema(const msgpack_object *v, const char *field, bool strict, nx_request_t *r,
                       nx_err_t *err)
{
    if (v->type != MSGPACK_OBJECT_MAP && v->type != MSGPACK_OBJECT_BOOLEAN)
        return nx_err_set(err, NX_EINVAL, "field '%s': expected a map (a JSON Schema), got %s",
                          field, nx__proto_type_name(v));
    json_t *doc = to_json(v, field, 0, err);
    if (!doc)
        return err && err->code ? err->code : NX_EINVAL;
    r->constraint = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!r->constraint)
        return nx_err_set(err, NX_ENOMEM, "out of memory reading field '%s'", field);
    r->constraint_kind = NX_CONSTRAINT_SCHEMA;
    r->constraint_strict = strict;
    return NX_OK;
}

static int get_bool(const msgpack_object *m, const char *key, const char *field, bool *out,
                    nx_err_t *err)
{
    const msgpack_object *v;
    int rc = get(m, key, field, &v, err);
    if (rc || !v)
        return rc;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return nx_err_set(err, NX_EINVAL, "field '%s': expected a bool, got %s", field,
                          nx__proto_type_name(v));
    *out = v->via.boolean;
    return NX_OK;
}

static int response_format(const msgpack_object *v, nx_request_t *r, nx_err_t *err)
{
    if (v->type != MSGPACK_OBJECT_MAP)
        return nx_err_set(err, NX_EINVAL, "field 'response_format': expected a map, got %s",
                          nx__proto_type_name(v));
    const msgpack_object *type, *js, *schema;
    int rc = get(v, "type", "response_format.type", &type, err);
    if (rc)
        return rc;
    if (!type || type->type != MSGPACK_OBJECT_STR)
        return nx_err_set(err, NX_EINVAL, "field 'response_format.type' is required: "
                          "\"text\", \"json_object\" or \"json_schema\"");
    if (nx__proto_str_eq(type, "text"))
        return NX_OK;
    if (nx__proto_str_eq(type, "json_object")) {
        r->constraint_kind = NX_CONSTRAINT_JSON_OBJECT;
        return NX_OK;
    }
    if (!nx__proto_str_eq(type, "json_schema"))
        return nx_err_set(err, NX_EINVAL, "field 'response_format.type': expected \"text\", "
                          "\"json_object\" or \"json_schema\", got \"%.*s\"",
                          (int)(type->via.str.size < 32 ? type->via.str.size : 32),
                          type->via.str.ptr);
    if ((rc = get(v, "json_schema", "response_format.json_schema", &js, err)))
        return rc;
    if (!js || js->type != MSGPACK_OBJECT_MAP)
        return nx_err_set(err, NX_EINVAL, "field 'response_format.json_schema' is required: a "
                          "map {name, schema, strict}");
    bool strict = false;
    if ((rc = get_bool(js, "strict", "response_format.json_schema.strict", &strict, err)) ||
        (rc = get(js, "schema", "response_format.json_schema.schema", &schema, err)))
        return rc;
    if (!schema) /* OpenAI allows it: then any JSON object */
        return r->constraint_kind = NX_CONSTRAINT_JSON_OBJECT, NX_OK;
    return take_schema(schema, "response_format.json_schema.schema", strict, r, err);
}

int nx__proto_constraint(const msgpack_object *m, nx_request_t *r, nx_err_t *err)
{
    const msgpack_object *schema, *format, *grammar;
    bool strict = false;
    int rc;
    if ((rc = get(m, "schema", "schema", &schema, err)) ||
        (rc = get(m, "response_format", "response_format", &format, err)) ||
        (rc = get(m, "grammar", "grammar", &grammar, err)) ||
        (rc = get_bool(m, "strict", "strict", &strict, err)))
        return rc;
    if (!!schema + !!format + !!grammar > 1)
        return nx_err_set(err, NX_EINVAL, "fields 'schema', 'response_format' and 'grammar' "
                          "exclude each other: give one");
    const msgpack_object *strict_v;
    if ((rc = get(m, "strict", "strict", &strict_v, err)))
        return rc;
    if (strict_v && !schema)
        return nx_err_set(err, NX_EINVAL, "field 'strict' goes with 'schema' (in "
                          "response_format, json_schema.strict)");
    if (schema)
        return take_schema(schema, "schema", strict, r, err);
    if (format)
        return response_format(format, r, err);
    if (!grammar)
        return NX_OK;
    if (grammar->type != MSGPACK_OBJECT_STR || grammar->via.str.size == 0 ||
        memchr(grammar->via.str.ptr, 0, grammar->via.str.size))
        return nx_err_set(err, NX_EINVAL, "field 'grammar': expected a GBNF grammar (a "
                          "non-empty string without NUL), got %s", nx__proto_type_name(grammar));
    if (!(r->constraint = strndup(grammar->via.str.ptr, grammar->via.str.size)))
        return nx_err_set(err, NX_ENOMEM, "out of memory reading field 'grammar'");
    r->constraint_kind = NX_CONSTRAINT_GBNF;
    return NX_OK;
}

void nx_writer_json(nx_writer_t *w, const char *key, const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        nx_writer_map_open(w, key);
        const char *k;
        json_t *member;
        json_object_foreach((json_t *)value, k, member)
            nx_writer_json(w, k, member);
        nx_writer_map_close(w);
        break;
    }
    case JSON_ARRAY:
        nx_writer_array_open(w, key);
        for (size_t i = 0; i < json_array_size(value); i++)
            nx_writer_json(w, NULL, json_array_get(value, i));
        nx_writer_array_close(w);
        break;
    case JSON_STRING:
        nx_writer_str(w, key, json_string_value(value));
        break;
    case JSON_INTEGER:
        nx_writer_int(w, key, json_integer_value(value));
        break;
    case JSON_REAL:
        nx_writer_real(w, key, json_real_value(value));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        nx_writer_bool(w, key, json_is_true(value));
        break;
    default:
        nx_writer_nil(w, key);
        break;
    }
}

/* ------------------------------------------------------------------------------------------
 * Tools: a task's "tools", "tool_choice", "parallel_tool_calls", and the tool fields of its
 * history turns. The tools are carried on as compact JSON text; what they say (names,
 * parameters the grammar compiler can enforce, a tool_choice naming one of them) is the
 * router's check (toolset.h), so errors name tools[i].function.parameters, the keyword and
 * the JSON pointer.
 */
static char *json_text_of(const msgpack_object *v, const char *field, nx_err_t *err)
{
    json_t *doc = to_json(v, field, 0, err);
    if (!doc)
        return NULL;
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!text)
        nx_err_set(err, NX_ENOMEM, "out of memory reading field '%s'", field);
    return text;
}

int nx__proto_tools(const msgpack_object *m, nx_request_t *r, nx_err_t *err)
{
    const msgpack_object *tools, *choice;
    int rc;
    r->parallel_tool_calls = true;
    if ((rc = get(m, "tools", "tools", &tools, err)) ||
        (rc = get(m, "tool_choice", "tool_choice", &choice, err)) ||
        (rc = get_bool(m, "parallel_tool_calls", "parallel_tool_calls", &r->parallel_tool_calls,
                       err)))
        return rc;
    if (tools && tools->type != MSGPACK_OBJECT_ARRAY)
        return nx_err_set(err, NX_EINVAL, "field 'tools': expected a list of {type: "
                          "\"function\", function: {name, description, parameters}} maps, got %s",
                          nx__proto_type_name(tools));
    if (tools && tools->via.array.size == 0)
        tools = NULL; /* no tools: a plain task */
    /* tool_choice without tools may still choose among an agent's own tools (router) */
    if (choice && choice->type != MSGPACK_OBJECT_STR && choice->type != MSGPACK_OBJECT_MAP)
        return nx_err_set(err, NX_EINVAL, "field 'tool_choice': expected \"auto\", \"none\", "
                          "\"required\" or {type: \"function\", function: {name}}, got %s",
                          nx__proto_type_name(choice));
    if (tools && !(r->tools_json = json_text_of(tools, "tools", err)))
        return err && err->code ? err->code : NX_ENOMEM;
    if (choice && !(r->tool_choice_json = json_text_of(choice, "tool_choice", err)))
        return err && err->code ? err->code : NX_ENOMEM;
    return NX_OK;
}

/* A string field of a turn into *out (NULL when absent). */
static int turn_str(const msgpack_object *turn, const char *key, const char *field, char **out,
                    nx_err_t *err)
{
    const msgpack_object *v;
    int rc = get(turn, key, field, &v, err);
    if (rc || !v)
        return rc;
    if (v->type != MSGPACK_OBJECT_STR || memchr(v->via.str.ptr, 0, v->via.str.size))
        return nx_err_set(err, NX_EINVAL, "field '%s': expected a string, got %s", field,
                          nx__proto_type_name(v));
    if (!(*out = strndup(v->via.str.ptr, v->via.str.size)))
        return nx_err_set(err, NX_ENOMEM, "out of memory reading field '%s'", field);
    return NX_OK;
}

static int turn_call(const msgpack_object *c, const char *at, nx_turn_call_t *call,
                     nx_err_t *err)
{
    char field[160];
    const msgpack_object *fn, *args;
    int rc;
    if (c->type != MSGPACK_OBJECT_MAP)
        return nx_err_set(err, NX_EINVAL, "field '%s': expected a map {id, type, function: "
                          "{name, arguments}}, got %s", at, nx__proto_type_name(c));
    snprintf(field, sizeof field, "%s.id", at);
    if ((rc = turn_str(c, "id", field, &call->id, err)))
        return rc;
    snprintf(field, sizeof field, "%s.function", at);
    if ((rc = get(c, "function", field, &fn, err)))
        return rc;
    if (!fn || fn->type != MSGPACK_OBJECT_MAP)
        return nx_err_set(err, NX_EINVAL, "field '%s' is required: a map {name, arguments}",
                          field);
    snprintf(field, sizeof field, "%s.function.name", at);
    if ((rc = turn_str(fn, "name", field, &call->name, err)))
        return rc;
    if (!call->name || !call->name[0])
        return nx_err_set(err, NX_EINVAL, "field '%s' is required: a non-empty string", field);
    snprintf(field, sizeof field, "%s.function.arguments", at);
    if ((rc = get(fn, "arguments", field, &args, err)))
        return rc;
    if (!args) /* no arguments: an empty object */
        return (call->arguments = strdup("{}")) ? NX_OK
                                                : nx_err_set(err, NX_ENOMEM, "out of memory");
    if (args->type == MSGPACK_OBJECT_MAP)
        return (call->arguments = json_text_of(args, field, err)) ? NX_OK : err->code;
    if ((rc = turn_str(fn, "arguments", field, &call->arguments, err)))
        return rc;
    json_error_t jerr;
    json_t *doc = json_loads(call->arguments, JSON_DECODE_ANY, &jerr);
    if (!doc)
        return nx_err_set(err, NX_EINVAL, "field '%s': not JSON text: %s (column %d)", field,
                          jerr.text, jerr.column);
    json_decref(doc);
    return NX_OK;
}

int nx__proto_turn_tools(const msgpack_object *turn, unsigned index, nx_turn_t *t,
                         nx_err_t *err)
{
    char field[64];
    int rc;
    if (strcmp(t->role, "tool") == 0) {
        snprintf(field, sizeof field, "history[%u].tool_call_id", index);
        if ((rc = turn_str(turn, "tool_call_id", field, &t->tool_call_id, err)))
            return rc;
        snprintf(field, sizeof field, "history[%u].name", index);
        return turn_str(turn, "name", field, &t->name, err);
    }
    if (strcmp(t->role, "assistant") != 0)
        return NX_OK;
    const msgpack_object *calls;
    snprintf(field, sizeof field, "history[%u].tool_calls", index);
    if ((rc = get(turn, "tool_calls", field, &calls, err)) || !calls)
        return rc;
    if (calls->type != MSGPACK_OBJECT_ARRAY)
        return nx_err_set(err, NX_EINVAL, "field '%s': expected a list of calls, got %s", field,
                          nx__proto_type_name(calls));
    if (calls->via.array.size == 0)
        return NX_OK;
    if (!(t->calls = calloc(calls->via.array.size, sizeof *t->calls)))
        return nx_err_set(err, NX_ENOMEM, "out of memory reading field '%s'", field);
    for (uint32_t i = 0; i < calls->via.array.size; i++) {
        char at[80];
        snprintf(at, sizeof at, "history[%u].tool_calls[%u]", index, i);
        t->call_count++; /* counted now: clear frees it */
        if ((rc = turn_call(&calls->via.array.ptr[i], at, &t->calls[i], err)))
            return rc;
    }
    return NX_OK;
}
