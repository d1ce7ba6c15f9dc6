/* proto.c — requests of the wire protocol (schemas/protocol.md) from one msgpack frame into an
 * nx_request_t, with a stable code and a sentence naming the field for every way a frame can
 * be wrong; and a task's "params" onto sampling settings.
 *
 * Codes and their return values: too_large NX_EINVAL, bad_msgpack NX_EFORMAT, unknown_op
 * NX_ENOTSUP, bad_request NX_EINVAL. Rules beyond the spec's table, chosen so that no frame is
 * ambiguous: an optional field given as nil counts as absent; a field the op reads (and `id`)
 * may not be given twice; names (agent, model, session, route entries) may not be empty; every string is
 * valid UTF-8 without NUL bytes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_engine.h"
#include "proto.h"
#include "proto_int.h"

#define ROUTE_MAX 16 /* pipeline stages after `agent` */
#define STOP_MAX 16  /* stop strings in params */
#define HISTORY_MAX 4096 /* earlier turns a task may bring */
#define LIMIT_MAX 1000
#define LIMIT_DEFAULT 20

static const char *const op_names[NX_OP__COUNT] = {
    [NX_OP_PING] = "ping",     [NX_OP_TASK] = "task",     [NX_OP_CANCEL] = "cancel",
    [NX_OP_STATUS] = "status", [NX_OP_AGENTS] = "agents", [NX_OP_MODELS] = "models",
    [NX_OP_LOAD] = "load",     [NX_OP_EVICT] = "evict",   [NX_OP_PIN] = "pin",
    [NX_OP_UNPIN] = "unpin",   [NX_OP_TASKS] = "tasks",   [NX_OP_HISTORY] = "history",
    [NX_OP_METRICS] = "metrics",
};

const char *nx_op_name(nx_op_t op)
{
    return (unsigned)op < NX_OP__COUNT ? op_names[op] : "unknown";
}

/* Parsing state: the error's destination. */
typedef struct ctx {
    const char **code_out;
    nx_err_t *err;
} ctx_t;

static int fail(ctx_t *c, const char *code, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(ctx_t *c, const char *code, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *c->code_out = code;
    nx_err_vset(c->err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

#define BAD_REQUEST(c, ...) fail((c), "bad_request", NX_EINVAL, __VA_ARGS__)

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF, no NUL. Returns the
 * offset of the first bad byte, or len when the text is good. */
static size_t utf8_bad_offset(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char b = s[i];
        if (b == 0)
            return i;
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((b & 0xe0) == 0xc0) { n = 1; cp = b & 0x1f; min = 0x80; }
        else if ((b & 0xf0) == 0xe0) { n = 2; cp = b & 0x0f; min = 0x800; }
        else if ((b & 0xf8) == 0xf0) { n = 3; cp = b & 0x07; min = 0x10000; }
        else return i;
        if (n > len - i - 1)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += n + 1;
    }
    return len;
}

/* A copy of string o as a C string, checked; `field` names it in errors. */
static int take_text(ctx_t *c, const msgpack_object *o, const char *field, bool nonempty,
                     char **out)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return BAD_REQUEST(c, "field '%s': expected a string, got %s", field,
                           nx__proto_type_name(o));
    const unsigned char *s = (const unsigned char *)o->via.str.ptr;
    size_t len = o->via.str.size;
    size_t bad = utf8_bad_offset(s, len);
    if (bad < len)
        return BAD_REQUEST(c, "field '%s': %s at byte %zu", field,
                           s[bad] ? "not valid UTF-8" : "a NUL byte", bad);
    if (nonempty && len == 0)
        return BAD_REQUEST(c, "field '%s': expected a non-empty string", field);
    char *copy = malloc(len + 1);
    if (!copy)
        return fail(c, "internal", NX_ENOMEM, "out of memory copying field '%s'", field);
    memcpy(copy, s, len);
    copy[len] = 0;
    *out = copy;
    return NX_OK;
}

/* The value under key in map m, or *out NULL when absent or nil. A key given twice is a
 * bad_request: which one should win would be a guess. */
static int lookup(ctx_t *c, const msgpack_object *m, const char *key, const char *field,
                  const msgpack_object **out)
{
    *out = NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (!nx__proto_str_eq(&kv->key, key))
            continue;
        if (*out)
            return BAD_REQUEST(c, "field '%s' is given twice", field);
        *out = &kv->val;
    }
    if (*out && (*out)->type == MSGPACK_OBJECT_NIL)
        *out = NULL;
    return NX_OK;
}

static int get_text(ctx_t *c, const msgpack_object *m, const char *key, bool required,
                    char **out)
{
    const msgpack_object *v;
    int rc = lookup(c, m, key, key, &v);
    if (rc)
        return rc;
    if (!v)
        return required ? BAD_REQUEST(c, "field '%s' is required: a string", key) : NX_OK;
    return take_text(c, v, key, strcmp(key, "input") != 0, out);
}

/* An integer value in [min, max]; false when o is not one. */
static bool int_in(const msgpack_object *o, int64_t min, uint64_t max, uint64_t *u_out,
                   int64_t *i_out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > max || (min > 0 && o->via.u64 < (uint64_t)min))
            return false;
        if (u_out) *u_out = o->via.u64;
        if (i_out) *i_out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= min) {
        if (u_out) *u_out = 0; /* unreachable with min >= 0 */
        if (i_out) *i_out = o->via.i64;
        return true;
    }
    return false;
}

/* A list of strings: route (names) or stop strings. */
static int take_text_list(ctx_t *c, const msgpack_object *o, const char *field, size_t max,
                          bool nonempty, char ***list_out, size_t *count_out)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return BAD_REQUEST(c, "field '%s': expected a list of strings, got %s", field,
                           nx__proto_type_name(o));
    if (o->via.array.size > max)
        return BAD_REQUEST(c, "field '%s': %u entries, at most %zu allowed", field,
                           o->via.array.size, max);
    char **list = calloc(o->via.array.size + 1, sizeof *list);
    if (!list)
        return fail(c, "internal", NX_ENOMEM, "out of memory reading field '%s'", field);
    *list_out = list; /* owned by the request from here on, so clear frees what is taken */
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s[%u]", field, i);
        int rc = take_text(c, &o->via.array.ptr[i], name, nonempty, &list[i]);
        if (rc)
            return rc;
        (*count_out)++;
    }
    return NX_OK;
}

static int param_number(ctx_t *c, const msgpack_object *v, const char *key, float *out)
{
    double d;
    if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        d = v->via.f64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        d = (double)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d = (double)v->via.i64;
    else
        return BAD_REQUEST(c, "field 'params.%s': expected a number, got %s", key,
                           nx__proto_type_name(v));
    if (!isfinite(d) || fabs(d) > 1e30)
        return BAD_REQUEST(c, "field 'params.%s': expected a finite number", key);
    *out = (float)d;
    return NX_OK;
}

/* An integer in min..max; the message states that range exactly and what came instead. */
static int param_uint(ctx_t *c, const msgpack_object *v, const char *key, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    if (int_in(v, (int64_t)min, max, out, NULL))
        return NX_OK;
    char got[32];
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        snprintf(got, sizeof got, "%llu", (unsigned long long)v->via.u64);
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        snprintf(got, sizeof got, "%lld", (long long)v->via.i64);
    else
        snprintf(got, sizeof got, "%s", nx__proto_type_name(v));
    return BAD_REQUEST(c, "field 'params.%s': expected an integer in %llu..%llu, got %s", key,
                       (unsigned long long)min, (unsigned long long)max, got);
}

/* One "params" entry (key already checked to be a string). */
static int param_one(ctx_t *c, const msgpack_object_kv *kv, nx_params_t *p)
{
    char key[32];
    uint32_t klen = kv->key.via.str.size;
    if (klen >= sizeof key) klen = sizeof key - 1;
    memcpy(key, kv->key.via.str.ptr, klen);
    key[klen] = 0;
    const msgpack_object *v = &kv->val;
    uint64_t u = 0;
    int rc = NX_OK;
    if (v->type == MSGPACK_OBJECT_NIL)
        return NX_OK; /* nil: use the agent's setting */
    if (nx__proto_str_eq(&kv->key, "max_tokens")) {
        if (!(rc = param_uint(c, v, key, 1, NX_PARAMS_MAX_TOKENS, &u)))
            p->max_tokens = (uint32_t)u, p->has_max_tokens = true;
    } else if (nx__proto_str_eq(&kv->key, "top_k")) {
        if (!(rc = param_uint(c, v, key, 0, UINT32_MAX, &u)))
            p->top_k = (uint32_t)u, p->has_top_k = true;
    } else if (nx__proto_str_eq(&kv->key, "seed")) {
        if (!(rc = param_uint(c, v, key, 0, UINT64_MAX, &u)))
            p->seed = u, p->has_seed = true;
    } else if (nx__proto_str_eq(&kv->key, "temperature")) {
        if (!(rc = param_number(c, v, key, &p->temperature)))
            p->has_temperature = true;
    } else if (nx__proto_str_eq(&kv->key, "top_p")) {
        if (!(rc = param_number(c, v, key, &p->top_p)))
            p->has_top_p = true;
    } else if (nx__proto_str_eq(&kv->key, "min_p")) {
        if (!(rc = param_number(c, v, key, &p->min_p)))
            p->has_min_p = true;
    } else if (nx__proto_str_eq(&kv->key, "repetition_penalty")) {
        if (!(rc = param_number(c, v, key, &p->repetition_penalty)))
            p->has_repetition_penalty = true;
    } else if (nx__proto_str_eq(&kv->key, "stop")) {
        if (!(rc = take_text_list(c, v, "params.stop", STOP_MAX, true, &p->stop,
                                  &p->stop_count)))
            p->has_stop = true;
    } else {
        return BAD_REQUEST(c, "field 'params': unknown key '%.*s' (known: max_tokens, "
                           "temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)",
                           (int)(klen < 64 ? klen : 64), kv->key.via.str.ptr);
    }
    return rc;
}

static int parse_params(ctx_t *c, const msgpack_object *m, nx_params_t *p)
{
    const msgpack_object *v;
    int rc = lookup(c, m, "params", "params", &v);
    if (rc || !v)
        return rc;
    if (v->type != MSGPACK_OBJECT_MAP)
        return BAD_REQUEST(c, "field 'params': expected a map, got %s", nx__proto_type_name(v));
    for (uint32_t i = 0; i < v->via.map.size; i++) {
        const msgpack_object_kv *kv = &v->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return BAD_REQUEST(c, "field 'params': key %u is a %s, expected a string", i + 1,
                               nx__proto_type_name(&kv->key));
        for (uint32_t j = 0; j < i; j++)
            if (v->via.map.ptr[j].key.type == MSGPACK_OBJECT_STR &&
                v->via.map.ptr[j].key.via.str.size == kv->key.via.str.size &&
                memcmp(v->via.map.ptr[j].key.via.str.ptr, kv->key.via.str.ptr,
                       kv->key.via.str.size) == 0)
                return BAD_REQUEST(c, "field 'params.%.*s' is given twice",
                                   (int)(kv->key.via.str.size < 64 ? kv->key.via.str.size : 64),
                                   kv->key.via.str.ptr);
        if ((rc = param_one(c, kv, p)))
            return rc;
    }
    return NX_OK;
}

/* "history": a list of {"role": "user"|"assistant"|"tool", "content": str}, oldest first; an
 * assistant turn may carry "tool_calls" (then content may be absent), a tool turn
 * "tool_call_id" and "name" (protocol.md). */
static int parse_history(ctx_t *c, const msgpack_object *o, nx_request_t *r)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return BAD_REQUEST(c, "field 'history': expected a list of {role, content} maps, got %s",
                           nx__proto_type_name(o));
    if (o->via.array.size > HISTORY_MAX)
        return BAD_REQUEST(c, "field 'history': %u turns, at most %d allowed",
                           o->via.array.size, HISTORY_MAX);
    if (o->via.array.size == 0)
        return NX_OK;
    if (!(r->history = calloc(o->via.array.size, sizeof *r->history)))
        return fail(c, "internal", NX_ENOMEM, "out of memory reading field 'history'");
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *turn = &o->via.array.ptr[i], *v;
        char field[64];
        int rc;
        if (turn->type != MSGPACK_OBJECT_MAP)
            return BAD_REQUEST(c, "field 'history[%u]': expected a map, got %s", i,
                               nx__proto_type_name(turn));
        nx_turn_t *t = &r->history[r->history_count++]; /* counted now: clear frees it */
        snprintf(field, sizeof field, "history[%u].role", i);
        if ((rc = lookup(c, turn, "role", field, &v)))
            return rc;
        if (!v)
            return BAD_REQUEST(c, "field '%s' is required: \"user\", \"assistant\" or "
                               "\"tool\"", field);
        if ((rc = take_text(c, v, field, true, &t->role)))
            return rc;
        if (strcmp(t->role, "user") != 0 && strcmp(t->role, "assistant") != 0 &&
            strcmp(t->role, "tool") != 0)
            return BAD_REQUEST(c, "field '%s': expected \"user\", \"assistant\" or "
                               "\"tool\", got \"%.32s\"", field, t->role);
        if ((rc = nx__proto_turn_tools(turn, i, t, c->err))) {
            *c->code_out = rc == NX_ENOMEM ? "internal" : "bad_request";
            return rc;
        }
        snprintf(field, sizeof field, "history[%u].content", i);
        if ((rc = lookup(c, turn, "content", field, &v)))
            return rc;
        if (!v && t->call_count)
            continue; /* an assistant turn that only made calls */
        if (!v)
            return BAD_REQUEST(c, "field '%s' is required: a string", field);
        if ((rc = take_text(c, v, field, false, &t->content)))
            return rc;
    }
    return NX_OK;
}

void nx_turn_clear(nx_turn_t *turn)
{
    free(turn->role);
    free(turn->content);
    for (size_t i = 0; i < turn->call_count; i++) {
        free(turn->calls[i].id);
        free(turn->calls[i].name);
        free(turn->calls[i].arguments);
    }
    free(turn->calls);
    free(turn->tool_call_id);
    free(turn->name);
    memset(turn, 0, sizeof *turn);
}

static int parse_task(ctx_t *c, const msgpack_object *m, nx_request_t *r)
{
    int rc;
    const msgpack_object *v;
    if ((rc = get_text(c, m, "agent", true, &r->agent)) ||
        (rc = get_text(c, m, "input", false, &r->input)) ||
        (rc = get_text(c, m, "session", false, &r->session)))
        return rc;
    if ((rc = lookup(c, m, "stream", "stream", &v)))
        return rc;
    if (v && v->type != MSGPACK_OBJECT_BOOLEAN)
        return BAD_REQUEST(c, "field 'stream': expected a bool, got %s", nx__proto_type_name(v));
    r->stream = v && v->via.boolean;
    if ((rc = lookup(c, m, "route", "route", &v)))
        return rc;
    if (v && (rc = take_text_list(c, v, "route", ROUTE_MAX, true, &r->route, &r->route_count)))
        return rc;
    if ((rc = lookup(c, m, "history", "history", &v)))
        return rc;
    if (v && (rc = parse_history(c, v, r)))
        return rc;
    /* input may be left out only to answer tool results: the prompt then ends with them */
    if (!r->input && !(r->history_count && strcmp(r->history[r->history_count - 1].role,
                                                  "tool") == 0))
        return BAD_REQUEST(c, "field 'input' is required: a string (it may be left out only "
                           "when 'history' ends with \"tool\" turns)");
    r->no_input = !r->input;
    if ((rc = nx__proto_constraint(m, r, c->err)) || (rc = nx__proto_tools(m, r, c->err))) {
        *c->code_out = rc == NX_ENOMEM ? "internal" : "bad_request";
        return rc;
    }
    return parse_params(c, m, &r->params);
}

static int parse_fields(ctx_t *c, const msgpack_object *m, nx_request_t *r)
{
    const msgpack_object *v;
    int rc;
    switch (r->op) {
    case NX_OP_TASK:
        return parse_task(c, m, r);
    case NX_OP_CANCEL:
        if ((rc = lookup(c, m, "task", "task", &v)))
            return rc;
        if (!v)
            return BAD_REQUEST(c, "field 'task' is required: the server task id (an integer)");
        if (!int_in(v, 1, INT64_MAX, NULL, &r->task))
            return BAD_REQUEST(c, "field 'task': expected a positive integer, got %s",
                               nx__proto_type_name(v));
        return NX_OK;
    case NX_OP_LOAD: case NX_OP_EVICT: case NX_OP_PIN: case NX_OP_UNPIN:
        return get_text(c, m, "model", true, &r->model);
    case NX_OP_TASKS:
        if ((rc = get_text(c, m, "agent", false, &r->agent)) ||
            (rc = lookup(c, m, "limit", "limit", &v)))
            return rc;
        uint64_t limit = LIMIT_DEFAULT;
        if (v && !int_in(v, 1, LIMIT_MAX, &limit, NULL))
            return BAD_REQUEST(c, "field 'limit': expected an integer in 1..%d, got %s%s",
                               LIMIT_MAX, nx__proto_type_name(v),
                               (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                                v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) ? " out of range" : "");
        r->limit = (uint32_t)limit;
        return NX_OK;
    case NX_OP_HISTORY:
        return get_text(c, m, "session", true, &r->session);
    default:
        return NX_OK; /* ping, status, agents, models: no fields */
    }
}

/* Keep the "id" value's msgpack bytes (re-packed from the object) to echo verbatim. An id
 * given twice is a bad_request like any other key given twice; the first one is still kept,
 * so the error reply carries an id the client sent. */
static int take_id(ctx_t *c, const msgpack_object *m, nx_request_t *r)
{
    const msgpack_object *v = nx__proto_get(m, "id");
    if (!v)
        return NX_OK;
    uint32_t ids = 0;
    for (uint32_t i = 0; i < m->via.map.size; i++)
        ids += nx__proto_str_eq(&m->via.map.ptr[i].key, "id");
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *v) != 0 || buf.size == 0) {
        msgpack_sbuffer_destroy(&buf);
        return fail(c, "internal", NX_ENOMEM, "out of memory copying the request's id");
    }
    r->id_len = buf.size;
    r->id = (unsigned char *)msgpack_sbuffer_release(&buf);
    return ids > 1 ? BAD_REQUEST(c, "field 'id' is given twice") : NX_OK;
}

static int parse_op(ctx_t *c, const msgpack_object *m, nx_request_t *r)
{
    const msgpack_object *v;
    int rc = lookup(c, m, "op", "op", &v);
    if (rc)
        return rc;
    if (!v)
        return fail(c, "unknown_op", NX_ENOTSUP, "the request has no 'op' (a string such as "
                    "\"task\" or \"ping\")");
    if (v->type != MSGPACK_OBJECT_STR)
        return fail(c, "unknown_op", NX_ENOTSUP, "field 'op': expected a string naming an "
                    "operation, got %s", nx__proto_type_name(v));
    for (int op = 0; op < NX_OP__COUNT; op++)
        if (nx__proto_str_eq(v, op_names[op])) {
            r->op = (nx_op_t)op;
            return NX_OK;
        }
    uint32_t n = v->via.str.size;
    bool printable = utf8_bad_offset((const unsigned char *)v->via.str.ptr, n) == n;
    return fail(c, "unknown_op", NX_ENOTSUP, "unknown op '%.*s' (known: ping, task, cancel, "
                "status, agents, models, load, evict, pin, unpin, tasks, history, metrics)",
                printable ? (int)(n < 64 ? n : 64) : 1, printable ? v->via.str.ptr : "?");
}

int nx_proto_parse(const void *frame, size_t len, size_t max_bytes, nx_request_t *out,
                   const char **code_out, nx_err_t *err)
{
    static const char *ignored_code;
    ctx_t c = {.code_out = code_out ? code_out : &ignored_code, .err = err};
    memset(out, 0, sizeof *out);
    out->limit = LIMIT_DEFAULT;
    *c.code_out = NULL;
    msgpack_unpacked un;
    msgpack_unpacked_init(&un);
    int rc = nx__proto_unpack_map(frame, len, max_bytes, &un, c.code_out, err);
    if (un.data.type == MSGPACK_OBJECT_MAP) {
        int id_rc = take_id(&c, &un.data, out);
        rc = rc ? rc : id_rc;
    }
    if (!rc)
        rc = parse_op(&c, &un.data, out);
    if (!rc)
        rc = parse_fields(&c, &un.data, out);
    msgpack_unpacked_destroy(&un);
    if (!rc) {
        *c.code_out = NULL;
        nx_err_clear(err);
    }
    return rc;
}

static void free_list(char **list, size_t count)
{
    if (!list)
        return;
    for (size_t i = 0; i < count; i++)
        free(list[i]);
    free(list);
}

void nx_request_clear(nx_request_t *req)
{
    if (!req)
        return;
    free(req->id);
    free(req->agent);
    free(req->input);
    free(req->session);
    free(req->model);
    free(req->constraint);
    /* a list being filled when parsing failed holds count taken entries, the rest NULL */
    free_list(req->route, req->route_count + 1);
    free_list(req->params.stop, req->params.stop_count + 1);
    for (size_t i = 0; i < req->history_count; i++)
        nx_turn_clear(&req->history[i]);
    free(req->history);
    free(req->tools_json);
    free(req->tool_choice_json);
    memset(req, 0, sizeof *req);
    req->limit = LIMIT_DEFAULT;
}

int nx_params_apply(const nx_params_t *params, struct nx_sampling *sampling, nx_err_t *err)
{
    if (params->has_max_tokens) sampling->max_tokens = params->max_tokens;
    if (params->has_temperature) sampling->temperature = params->temperature;
    if (params->has_top_p) sampling->top_p = params->top_p;
    if (params->has_top_k) sampling->top_k = params->top_k;
    if (params->has_min_p) sampling->min_p = params->min_p;
    if (params->has_repetition_penalty)
        sampling->repetition_penalty = params->repetition_penalty;
    if (params->has_seed) sampling->seed = params->seed;
    if (params->has_stop) {
        sampling->stop = (const char *const *)params->stop;
        sampling->stop_count = params->stop_count;
    }
    int rc = nx_sampling_validate(sampling, err);
    if (rc)
        nx_err_prefix(err, "field 'params': ");
    return rc;
}
