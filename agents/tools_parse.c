/* tools_parse.c — the streaming parser of generated text into content, reasoning and tool
 * calls, driven by the family's description (tools_family.c). It works byte by byte, so any
 * split of the text gives the same events (merged per kind), and holds back only bytes that
 * could still begin a tag (the call trigger, the think tags, a call's closing tag).
 *
 * Inside a call it scans the JSON object leniently (any whitespace, any key order): the
 * name's string gives the CALL event; the arguments' value is passed through as ARGS pieces
 * as it arrives (held until the name is known when it comes first). Arguments given as a JSON
 * string (some fine-tunes write "arguments": "{...}") come out decoded, at the string's end.
 * A call whose text is not such an object comes out as content when no event of it was given
 * yet (the model wrote the tag in prose), else ends where it broke.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>

#include "tools.h"

typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

static bool put(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *data = realloc(b->data, cap < 64 ? 64 : cap);
        if (!data)
            return false;
        b->data = data, b->cap = cap < 64 ? 64 : cap;
    }
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

typedef enum {
    ST_TEXT,     /* content; watching for the trigger (and the think tag at the start) */
    ST_THINK,    /* reasoning; watching for the think close */
    ST_OPEN,     /* after the trigger: the rest of call_open (whitespace), then '{' */
    ST_OBJ,      /* inside the call's object, between members */
    ST_KEY,      /* inside a member's key string */
    ST_COLON,    /* after a key */
    ST_VALUE,    /* a member's value is starting (whitespace skipped) */
    ST_NAME,     /* inside the name's string */
    ST_SCAN,     /* inside a value (the arguments or another member) */
    ST_CLOSE,    /* after the object: whitespace, then the call's closing tag */
    ST_RAW,      /* a malformed call: up to its closing tag */
} state_t;

typedef struct pcall {
    char id[32];
    buf_t name, args;
    bool named, complete;
} pcall_t;

struct nx_tools_parser {
    const nx_tools_format_t *f;
    bool thinking;
    uint64_t rng;
    state_t st;
    buf_t hold;          /* TEXT/THINK/CLOSE: bytes that may begin a tag */
    buf_t ws;            /* whitespace held after a call or the think close */
    bool drop_ws_nl;     /* after </think>: leading newlines of the content are dropped */
    bool after_call;     /* TEXT after a call: whitespace before the next call is dropped */
    bool started;        /* something but whitespace was given as content */
    bool thought;        /* the thinking block is over (there is one at most) */
    buf_t raw;           /* the current call's text from the trigger (content if it fails) */
    buf_t key;           /* the member's key */
    int member;          /* 0 other, 1 name, 2 arguments */
    int depth;           /* ST_SCAN: nesting */
    bool in_str, esc, str_value; /* ST_SCAN: string state; the value is a string */
    buf_t strval;        /* a string-valued arguments member, undecoded */
    bool key_esc;
    pcall_t *calls;
    size_t n_calls, cap_calls;
    bool call_open;      /* a call has been started (calls[n_calls - 1]) */
    buf_t content, reasoning;
    /* this feed's events; texts are offsets into evtext until handed out */
    nx_tools_event_t *ev;
    size_t n_ev, cap_ev;
    buf_t evtext;
    nx_tools_call_t *out_calls; /* nx_tools_parser_calls' view */
    size_t cap_out_calls;
    bool oom;
};

/* --- events -------------------------------------------------------------------------------- */

static void emit(nx_tools_parser_t *p, nx_tools_ev_kind_t kind, uint32_t index, const char *id,
                 const char *s, size_t n)
{
    if (p->oom || (n == 0 && kind != NX_TOOLS_EV_CALL))
        return;
    nx_tools_event_t *last = p->n_ev ? &p->ev[p->n_ev - 1] : NULL;
    if (kind == NX_TOOLS_EV_CONTENT && !put(&p->content, s, n))
        p->oom = true;
    if (kind == NX_TOOLS_EV_REASONING && !put(&p->reasoning, s, n))
        p->oom = true;
    /* a CALL's id is copied too: the calls array may move before the events are handed out */
    size_t id_off = p->evtext.len;
    if (kind == NX_TOOLS_EV_CALL && !put(&p->evtext, id, strlen(id) + 1)) {
        p->oom = true;
        return;
    }
    size_t off = p->evtext.len;
    if (!put(&p->evtext, s, n)) {
        p->oom = true;
        return;
    }
    if (last && kind != NX_TOOLS_EV_CALL && last->kind == kind && last->index == index) {
        last->len += n; /* merged: the texts are back to back in evtext */
        return;
    }
    if (p->n_ev == p->cap_ev) {
        size_t cap = p->cap_ev ? p->cap_ev * 2 : 16;
        nx_tools_event_t *ev = realloc(p->ev, cap * sizeof *ev);
        if (!ev) {
            p->oom = true;
            return;
        }
        p->ev = ev, p->cap_ev = cap;
    }
    p->ev[p->n_ev++] = (nx_tools_event_t){.kind = kind, .index = index,
                                           .id = id ? (const char *)(uintptr_t)(id_off + 1) : NULL,
                                           .text = (const char *)(uintptr_t)off, .len = n};
}

static void text_out(nx_tools_parser_t *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\t' && s[i] != '\r')
            p->started = true;
    emit(p, NX_TOOLS_EV_CONTENT, 0, NULL, s, n);
}

static pcall_t *cur(nx_tools_parser_t *p)
{
    return &p->calls[p->n_calls - 1];
}

static void args_out(nx_tools_parser_t *p, const char *s, size_t n)
{
    pcall_t *c = cur(p);
    if (!put(&c->args, s, n))
        p->oom = true;
    if (c->named)
        emit(p, NX_TOOLS_EV_ARGS, (uint32_t)(p->n_calls - 1), NULL, s, n);
}

/* --- call ids ------------------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void new_id(nx_tools_parser_t *p, char *out)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    memcpy(out, "call_", 5);
    for (int i = 0; i < 24; i++)
        out[5 + i] = alnum[splitmix(&p->rng) % 62];
    out[29] = '\0';
}

/* --- calls --------------------------------------------------------------------------------- */

static void begin_call(nx_tools_parser_t *p)
{
    if (p->n_calls == p->cap_calls) {
        size_t cap = p->cap_calls ? p->cap_calls * 2 : 4;
        pcall_t *c = realloc(p->calls, cap * sizeof *c);
        if (!c) {
            p->oom = true;
            return;
        }
        p->calls = c, p->cap_calls = cap;
    }
    pcall_t *c = &p->calls[p->n_calls++];
    memset(c, 0, sizeof *c);
    new_id(p, c->id);
    p->call_open = true;
    p->ws.len = 0; /* whitespace between calls is not content */
    p->raw.len = 0;
    p->key.len = 0;
}

/* The name's string ended: decode it and announce the call (with any arguments already seen). */
static void name_done(nx_tools_parser_t *p)
{
    pcall_t *c = cur(p);
    buf_t quoted = {0};
    bool ok = put(&quoted, "\"", 1) && put(&quoted, c->name.data ? c->name.data : "",
                                              c->name.len) && put(&quoted, "\"", 1);
    json_t *s = ok ? json_loadb(quoted.data, quoted.len, JSON_DECODE_ANY, NULL) : NULL;
    free(quoted.data);
    if (s && json_is_string(s)) {
        c->name.len = 0;
        put(&c->name, json_string_value(s), json_string_length(s));
    }
    json_decref(s);
    c->named = true;
    emit(p, NX_TOOLS_EV_CALL, (uint32_t)(p->n_calls - 1), c->id, c->name.data, c->name.len);
    if (c->args.len)
        emit(p, NX_TOOLS_EV_ARGS, (uint32_t)(p->n_calls - 1), NULL, c->args.data, c->args.len);
}

/* A call ended (its object and closing tag). */
static void end_call(nx_tools_parser_t *p)
{
    pcall_t *c = cur(p);
    c->complete = c->named;
    p->call_open = false;
    p->after_call = true;
    p->st = ST_TEXT;
    p->hold.len = 0;
}

/* The call's text is not a call: give it back as content if nothing of it was announced. */
static void fail_call(nx_tools_parser_t *p)
{
    pcall_t *c = cur(p);
    if (c->named) {
        p->st = ST_RAW; /* keep what was announced; skip to the closing tag */
        return;
    }
    free(c->name.data);
    free(c->args.data);
    p->n_calls--;
    p->call_open = false;
    buf_t raw = p->raw;
    p->raw = (buf_t){0};
    p->st = ST_TEXT;
    p->hold.len = 0;
    if (p->ws.len) /* the whitespace before the tag was held as a call's separator */
        text_out(p, p->ws.data, p->ws.len);
    p->ws.len = 0;
    p->after_call = false;
    text_out(p, raw.data, raw.len);
    free(raw.data);
}

/* --- tags ---------------------------------------------------------------------------------- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

static bool is_prefix(const buf_t *b, const char *tag)
{
    return tag && b->len <= strlen(tag) && memcmp(b->data, tag, b->len) == 0;
}

static bool is_tag(const buf_t *b, const char *tag)
{
    return tag && b->len == strlen(tag) && memcmp(b->data, tag, b->len) == 0;
}

static void byte(nx_tools_parser_t *p, char c);
static void dispatch(nx_tools_parser_t *p, char c);

/* TEXT: the trigger (anywhere, or only at the start), the think open (at the start). */
static void text_byte(nx_tools_parser_t *p, char c)
{
    const nx_tools_format_t *f = p->f;
    const char *think = p->thinking && !p->started && !p->thought && p->n_calls == 0
                            ? f->think_open : NULL;
    const char *trigger = f->trigger_at_start && (p->started || p->n_calls) ? NULL : f->trigger;
    if (p->hold.len == 0 && is_ws(c) && (p->after_call || p->drop_ws_nl || !p->started)) {
        if (p->drop_ws_nl && c == '\n')
            return; /* the template's lstrip('\n') of the content after </think> */
        if (!put(&p->ws, &c, 1))
            p->oom = true;
        return;
    }
    if (!put(&p->hold, &c, 1)) {
        p->oom = true;
        return;
    }
    while (p->hold.len) {
        if (is_tag(&p->hold, trigger)) {
            p->hold.len = 0;
            begin_call(p);
            p->st = ST_OPEN;
            if (f->call_open[0])
                put(&p->raw, trigger, strlen(trigger));
            else /* the trigger is the object's own start: replay it (into raw too) */
                for (const char *t = trigger; *t; t++)
                    byte(p, *t);
            return;
        }
        if (is_tag(&p->hold, think)) {
            p->hold.len = 0;
            p->ws.len = 0;
            p->st = ST_THINK;
            return;
        }
        if (is_prefix(&p->hold, trigger) || is_prefix(&p->hold, think))
            return;
        /* hold[0] is content (after the whitespace held before it); retry with the rest */
        text_out(p, p->ws.data, p->ws.len);
        p->ws.len = 0;
        p->drop_ws_nl = false;
        p->after_call = false;
        text_out(p, p->hold.data, 1);
        memmove(p->hold.data, p->hold.data + 1, --p->hold.len);
    }
}

static void think_byte(nx_tools_parser_t *p, char c)
{
    if (!put(&p->hold, &c, 1)) {
        p->oom = true;
        return;
    }
    while (p->hold.len) {
        if (is_tag(&p->hold, p->f->think_close)) {
            p->hold.len = 0;
            p->st = ST_TEXT;
            p->drop_ws_nl = true;
            p->started = false;
            p->thought = true;
            return;
        }
        if (is_prefix(&p->hold, p->f->think_close))
            return;
        emit(p, NX_TOOLS_EV_REASONING, 0, NULL, p->hold.data, 1);
        memmove(p->hold.data, p->hold.data + 1, --p->hold.len);
    }
}

/* After the object: whitespace, then call_close's tag (its text past the leading whitespace). */
static void close_byte(nx_tools_parser_t *p, char c)
{
    const char *tag = p->f->call_close;
    while (*tag && is_ws(*tag))
        tag++;
    if (!*tag) { /* no closing tag: the call ended with its object */
        end_call(p);
        byte(p, c);
        return;
    }
    if (p->hold.len == 0 && is_ws(c))
        return;
    put(&p->hold, &c, 1);
    if (is_tag(&p->hold, tag))
        end_call(p);
    else if (!is_prefix(&p->hold, tag)) {
        /* the call ended without its tag: what follows is text */
        buf_t rest = p->hold;
        p->hold = (buf_t){0};
        end_call(p);
        for (size_t i = 0; i < rest.len; i++)
            byte(p, rest.data[i]);
        free(rest.data);
    }
}

/* ST_RAW: skip to the closing tag (a malformed call already announced). */
static void raw_byte(nx_tools_parser_t *p, char c)
{
    const char *tag = p->f->call_close;
    while (*tag && is_ws(*tag))
        tag++;
    if (!*tag)
        return; /* no tag to wait for: the rest of the answer belongs to the broken call */
    put(&p->hold, &c, 1);
    while (p->hold.len && !is_prefix(&p->hold, tag))
        memmove(p->hold.data, p->hold.data + 1, --p->hold.len);
    if (is_tag(&p->hold, tag))
        end_call(p);
}

/* --- the call's object --------------------------------------------------------------------- */

static void value_done(nx_tools_parser_t *p)
{
    if (p->member == 2 && p->str_value) { /* "arguments": "<JSON text>" */
        json_t *s = json_loadb(p->strval.data, p->strval.len, JSON_DECODE_ANY, NULL);
        if (json_is_string(s))
            args_out(p, json_string_value(s), json_string_length(s));
        json_decref(s);
        p->strval.len = 0;
    }
    p->st = ST_OBJ;
    p->member = 0;
}

static void scan_byte(nx_tools_parser_t *p, char c)
{
    bool scalar_end = false;
    if (p->in_str) {
        if (p->esc)
            p->esc = false;
        else if (c == '\\')
            p->esc = true;
        else if (c == '"')
            p->in_str = false;
    } else if (c == '"') {
        p->in_str = true;
    } else if (c == '{' || c == '[') {
        p->depth++;
    } else if (c == '}' || c == ']') {
        if (p->depth == 0)
            scalar_end = true;
        else
            p->depth--;
    } else if (p->depth == 0 && (c == ',' || is_ws(c))) {
        scalar_end = true;
    }
    if (scalar_end) { /* a number, true, false or null ended before this byte */
        value_done(p);
        dispatch(p, c);
        return;
    }
    if (p->member == 2) {
        if (p->str_value)
            put(&p->strval, &c, 1);
        else
            args_out(p, &c, 1);
    }
    if (p->depth == 0 && !p->in_str && (c == '}' || c == ']' || c == '"'))
        value_done(p);
}

static void obj_byte(nx_tools_parser_t *p, char c)
{
    const nx_tools_format_t *f = p->f;
    switch (p->st) {
    case ST_OPEN:
        if (is_ws(c))
            return;
        if (c != '{')
            return fail_call(p);
        p->st = ST_OBJ;
        return;
    case ST_OBJ:
        if (is_ws(c) || c == ',')
            return;
        if (c == '}') {
            if (!cur(p)->named)
                return fail_call(p);
            p->st = ST_CLOSE;
            p->hold.len = 0;
            return;
        }
        if (c != '"')
            return fail_call(p);
        p->key.len = 0;
        p->key_esc = false;
        p->st = ST_KEY;
        return;
    case ST_KEY:
        if (c == '"' && !p->key_esc) {
            p->st = ST_COLON;
            put(&p->key, "", 0);
            const char *k = p->key.data;
            p->member = strcmp(k, f->name_key) == 0 && !cur(p)->named ? 1
                        : strcmp(k, f->args_key) == 0 || strcmp(k, "arguments") == 0 ||
                                  strcmp(k, "parameters") == 0
                            ? 2
                            : 0;
            /* the Llama family's trigger is any object: one whose first key is not the
             * name is an answer in JSON, not a call */
            if (f->trigger_at_start && p->member != 1 && !cur(p)->named)
                return fail_call(p);
            return;
        }
        p->key_esc = !p->key_esc && c == '\\';
        put(&p->key, &c, 1);
        return;
    case ST_COLON:
        if (is_ws(c))
            return;
        if (c != ':')
            return fail_call(p);
        p->st = ST_VALUE;
        return;
    case ST_VALUE:
        if (is_ws(c))
            return;
        if (p->member == 1) {
            if (c != '"')
                return fail_call(p);
            p->key_esc = false;
            p->st = ST_NAME;
            return;
        }
        p->st = ST_SCAN;
        p->depth = 0;
        p->in_str = p->esc = false;
        p->str_value = p->member == 2 && c == '"';
        p->strval.len = 0;
        scan_byte(p, c);
        return;
    case ST_NAME:
        if (c == '"' && !p->key_esc) {
            name_done(p);
            p->st = ST_OBJ;
            p->member = 0;
            return;
        }
        p->key_esc = !p->key_esc && c == '\\';
        put(&cur(p)->name, &c, 1);
        return;
    case ST_SCAN:
        scan_byte(p, c);
        return;
    default:
        return;
    }
}

/* One byte in the current state (re-dispatched bytes come here without byte()'s record). */
static void dispatch(nx_tools_parser_t *p, char c)
{
    switch (p->st) {
    case ST_TEXT:
        text_byte(p, c);
        break;
    case ST_THINK:
        think_byte(p, c);
        break;
    case ST_CLOSE:
        close_byte(p, c);
        break;
    case ST_RAW:
        raw_byte(p, c);
        break;
    default:
        obj_byte(p, c);
        break;
    }
}

static void byte(nx_tools_parser_t *p, char c)
{
    if (p->call_open && p->st != ST_CLOSE && p->st != ST_RAW && !put(&p->raw, &c, 1))
        p->oom = true;
    dispatch(p, c);
}

/* --- the API ------------------------------------------------------------------------------- */

nx_tools_parser_t *nx_tools_parser_new(const nx_tools_parser_opts_t *opts, nx_err_t *err)
{
    const nx_tools_format_t *f = nx_tools_format(opts->family);
    if (!f) {
        nx_err_set(err, NX_EINVAL, "tool parser: family '%s' has no tool-call format",
                   nx_tools_family_name(opts->family));
        return NULL;
    }
    nx_tools_parser_t *p = calloc(1, sizeof *p);
    if (!p) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NULL;
    }
    p->f = f;
    p->thinking = (opts->thinking || opts->in_thinking) && f->think_open;
    p->st = opts->in_thinking && f->think_open ? ST_THINK : ST_TEXT;
    p->rng = opts->seed;
    if (!p->rng && getrandom(&p->rng, sizeof p->rng, 0) != (ssize_t)sizeof p->rng)
        p->rng = (uint64_t)(uintptr_t)p ^ 0x5eedull; /* ids need only be unique per answer */
    put(&p->content, "", 0);
    put(&p->reasoning, "", 0);
    return p;
}

static void free_call(pcall_t *c)
{
    free(c->name.data);
    free(c->args.data);
}

void nx_tools_parser_destroy(nx_tools_parser_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_tools_parser_t *p = *self_p;
    for (size_t i = 0; i < p->n_calls; i++)
        free_call(&p->calls[i]);
    free(p->calls);
    free(p->out_calls);
    buf_t *bufs[] = {&p->hold, &p->ws, &p->raw, &p->key, &p->strval, &p->content,
                     &p->reasoning, &p->evtext};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]->data);
    free(p->ev);
    free(p);
    *self_p = NULL;
}

/* Hand out this round's events: offsets become pointers into evtext. */
static int hand_out(nx_tools_parser_t *p, const nx_tools_event_t **events, size_t *n_events,
                    nx_err_t *err)
{
    if (p->oom)
        return nx_err_set(err, NX_ENOMEM, "tool parser: out of memory");
    for (size_t i = 0; i < p->n_ev; i++) {
        p->ev[i].text = p->evtext.data + (uintptr_t)p->ev[i].text;
        if (p->ev[i].id)
            p->ev[i].id = p->evtext.data + (uintptr_t)p->ev[i].id - 1; /* offset + 1 */
    }
    *events = p->ev;
    *n_events = p->n_ev;
    return NX_OK;
}

int nx_tools_parser_feed(nx_tools_parser_t *self, const char *text, size_t len,
                         const nx_tools_event_t **events, size_t *n_events, nx_err_t *err)
{
    self->n_ev = 0;
    self->evtext.len = 0;
    for (size_t i = 0; i < len && !self->oom; i++)
        byte(self, text[i]);
    return hand_out(self, events, n_events, err);
}

int nx_tools_parser_finish(nx_tools_parser_t *self, const nx_tools_event_t **events,
                           size_t *n_events, nx_err_t *err)
{
    nx_tools_parser_t *p = self;
    p->n_ev = 0;
    p->evtext.len = 0;
    switch (p->st) {
    case ST_TEXT: /* a partial tag is text after all; trailing whitespace after calls is not */
        if (p->hold.len) {
            if (p->ws.len)
                text_out(p, p->ws.data, p->ws.len);
            text_out(p, p->hold.data, p->hold.len);
        } else if (p->ws.len && !p->after_call && !p->drop_ws_nl) {
            text_out(p, p->ws.data, p->ws.len);
        }
        break;
    case ST_THINK:
        emit(p, NX_TOOLS_EV_REASONING, 0, NULL, p->hold.data, p->hold.len);
        break;
    case ST_CLOSE: /* the object ended; its closing tag did not come */
        end_call(p);
        break;
    default: /* cut inside a call */
        if (p->call_open && !cur(p)->named)
            fail_call(p);
        else if (p->call_open)
            p->call_open = false; /* cut: the call stays incomplete */
        break;
    }
    p->hold.len = 0;
    p->ws.len = 0;
    p->st = ST_TEXT;
    return hand_out(p, events, n_events, err);
}

const nx_tools_call_t *nx_tools_parser_calls(const nx_tools_parser_t *self, size_t *n_calls)
{
    /* The view is rebuilt in place (it grows only with new calls), so a second call without
     * feeding in between leaves the first one's pointers valid. */
    nx_tools_parser_t *p = (nx_tools_parser_t *)self;
    if (p->n_calls > p->cap_out_calls) {
        nx_tools_call_t *grown = realloc(p->out_calls, p->n_calls * sizeof *grown);
        if (!grown) {
            *n_calls = 0;
            return p->out_calls;
        }
        p->out_calls = grown, p->cap_out_calls = p->n_calls;
    }
    size_t n = 0;
    for (size_t i = 0; i < p->n_calls; i++) {
        pcall_t *c = &p->calls[i];
        if (!c->named)
            continue;
        put(&c->args, "", 0); /* both NUL-terminated, even when empty */
        put(&c->name, "", 0);
        p->out_calls[n++] = (nx_tools_call_t){.id = c->id, .name = c->name.data,
                                              .arguments = c->args.data,
                                              .complete = c->complete};
    }
    *n_calls = n;
    return p->out_calls;
}

const char *nx_tools_parser_content(const nx_tools_parser_t *self, size_t *len_out)
{
    if (len_out)
        *len_out = self->content.len;
    return self->content.data;
}

const char *nx_tools_parser_reasoning(const nx_tools_parser_t *self, size_t *len_out)
{
    if (len_out)
        *len_out = self->reasoning.len;
    return self->reasoning.data;
}

nx_tools_parser_t *nx_tools_parse(const nx_tools_parser_opts_t *opts, const char *text,
                                  size_t len, nx_err_t *err)
{
    nx_tools_parser_t *p = nx_tools_parser_new(opts, err);
    const nx_tools_event_t *ev;
    size_t n;
    if (p && (nx_tools_parser_feed(p, text, len, &ev, &n, err) != NX_OK ||
              nx_tools_parser_finish(p, &ev, &n, err) != NX_OK))
        nx_tools_parser_destroy(&p);
    return p;
}
