/* chat.c — chat templates without a Jinja engine: the two families our checkpoints use,
 * rendered exactly as their own templates render them, and told apart by what the
 * tokenizer_config.json template mentions.
 *   ChatML (Qwen2/Qwen3): "<|im_start|>role\ncontent<|im_end|>\n" per message, generation
 *     prompt "<|im_start|>assistant\n"; with thinking off, a template that knows
 *     enable_thinking (Qwen3) pre-fills an empty "<think>\n\n</think>\n\n".
 *   Llama 3: "<|begin_of_text|>", then "<|start_header_id|>role<|end_header_id|>\n\n" +
 *     trimmed content + "<|eot_id|>" per message, generation prompt the assistant header.
 *   RAW: the messages' contents as they are, joined by blank lines.
 * Tools (OpenAI's tools array, assistant tool_calls, tool results) follow Qwen3's template for
 * ChatML and Llama 3.1's for Llama 3; tool definitions are written as the templates' tojson
 * writes them (Python's json.dumps: ", " and ": " separators, keys in their order, non-ASCII
 * as is, floats in their shortest form).
 */
#include "tok_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct sbuf {
    char *data;
    size_t len, cap;
    bool failed;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->failed = true;
            return;
        }
        b->data = data, b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(sbuf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

nx_chat_kind_t nx_chat_detect(const nx_tokenizer_t *tok)
{
    const char *t = tok ? nx_tokenizer_chat_template(tok) : NULL;
    if (t && strstr(t, "<|im_start|>"))
        return NX_CHAT_CHATML;
    if (t && strstr(t, "<|start_header_id|>"))
        return NX_CHAT_LLAMA3;
    return NX_CHAT_RAW;
}

static const char *const kind_names[] = {"auto", "chatml", "llama3", "raw"};

const char *nx_chat_kind_name(nx_chat_kind_t kind)
{
    return (unsigned)kind < 4 ? kind_names[kind] : "?";
}

bool nx_chat_kind_parse(const char *name, nx_chat_kind_t *kind_out)
{
    for (unsigned k = 0; k < 4; k++) {
        if (name && strcmp(name, kind_names[k]) == 0) {
            *kind_out = (nx_chat_kind_t)k;
            return true;
        }
    }
    return false;
}

/* Does "thinking off" pre-fill an empty think block? Only where the template has the switch
 * (Qwen3), or, with no template at all, where the vocabulary has the think tags. */
static bool knows_thinking(const nx_tokenizer_t *tok)
{
    if (!tok)
        return false;
    const char *t = nx_tokenizer_chat_template(tok);
    if (t)
        return strstr(t, "enable_thinking") != NULL;
    return nx_tokenizer_token_id(tok, "<think>") >= 0 && nx_tokenizer_token_id(tok, "</think>") >= 0;
}

/* --- Python's json.dumps, as the templates' tojson filter calls it ----------------------- */

static void dump_string(sbuf_t *b, const char *s, size_t n)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                      : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                      : c == '\f' ? "\\f" : NULL;
        if (!e && c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            e = esc;
        }
        if (e)
            puts_(b, e);
        else
            put(b, s + i, 1);
    }
    put(b, "\"", 1);
}

/* repr(float): the shortest digits that read back the same, fixed notation for exponents
 * -4..15, else d.ddde+XX. */
static void dump_real(sbuf_t *b, double v)
{
    char buf[64], out[80];
    if (!isfinite(v)) { /* json.dumps writes these though they are not JSON */
        puts_(b, isnan(v) ? "NaN" : v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
    char *e = strchr(buf, 'e');
    int exp10 = atoi(e + 1);
    *e = '\0';
    char digits[32];
    size_t nd = 0;
    bool neg = buf[0] == '-';
    for (char *d = buf + neg; *d; d++)
        if (*d != '.')
            digits[nd++] = *d;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            o += (size_t)snprintf(out + o, sizeof out - o, "0.");
            for (int z = 0; z < -exp10 - 1; z++)
                out[o++] = '0';
            memcpy(out + o, digits, nd), o += nd;
        } else {
            for (int k = 0; k <= exp10; k++)
                out[o++] = (size_t)k < nd ? digits[k] : '0';
            out[o++] = '.';
            if ((size_t)exp10 + 1 < nd)
                memcpy(out + o, digits + exp10 + 1, nd - exp10 - 1), o += nd - exp10 - 1;
            else
                out[o++] = '0';
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1), o += nd - 1;
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+',
                              abs(exp10));
    }
    put(b, out, o);
}

/* indent < 0: one line with ", " and ": "; else Python's indent=N layout with "," and ": ". */
static void dump_json(sbuf_t *b, const json_t *v, int indent, int level)
{
    char num[32];
    size_t i;
    const char *key;
    json_t *item;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY: {
        bool obj = json_is_object(v);
        size_t n = obj ? json_object_size(v) : json_array_size(v);
        put(b, obj ? "{" : "[", 1);
        if (n == 0) {
            put(b, obj ? "}" : "]", 1);
            return;
        }
        size_t k = 0;
        void *it = obj ? json_object_iter((json_t *)v) : NULL;
        for (k = 0; k < n; k++) {
            if (k)
                puts_(b, indent < 0 ? ", " : ",");
            if (indent >= 0) {
                put(b, "\n", 1);
                for (int s = 0; s < indent * (level + 1); s++)
                    put(b, " ", 1);
            }
            if (obj) {
                key = json_object_iter_key(it);
                dump_string(b, key, strlen(key));
                puts_(b, ": ");
                dump_json(b, json_object_iter_value(it), indent, level + 1);
                it = json_object_iter_next((json_t *)v, it);
            } else {
                dump_json(b, json_array_get(v, k), indent, level + 1);
            }
        }
        if (indent >= 0) {
            put(b, "\n", 1);
            for (int s = 0; s < indent * level; s++)
                put(b, " ", 1);
        }
        put(b, obj ? "}" : "]", 1);
        return;
    }
    case JSON_STRING:
        dump_string(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        puts_(b, num);
        return;
    case JSON_REAL:
        dump_real(b, json_real_value(v));
        return;
    case JSON_TRUE:
        puts_(b, "true");
        return;
    case JSON_FALSE:
        puts_(b, "false");
        return;
    case JSON_NULL:
        puts_(b, "null");
        return;
    }
    (void)i, (void)item;
}

/* --- ChatML (Qwen3's template) --------------------------------------------------------------- */

static const char *text_of(const char *s)
{
    return s ? s : "";
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* s without leading/trailing newlines (Python's strip('\n') family). */
static void put_stripped(sbuf_t *b, const char *s, size_t n, bool left, bool right)
{
    while (left && n && *s == '\n')
        s++, n--;
    while (right && n && s[n - 1] == '\n')
        n--;
    put(b, s, n);
}

static void chatml_tools_system(const json_t *tools, const nx_chat_msg_t *msgs, size_t count,
                                sbuf_t *b)
{
    puts_(b, "<|im_start|>system\n");
    if (count && strcmp(msgs[0].role, "system") == 0) {
        puts_(b, text_of(msgs[0].content));
        puts_(b, "\n\n");
    }
    puts_(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
             "You are provided with function signatures within <tools></tools> XML tags:\n"
             "<tools>");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        puts_(b, "\n");
        dump_json(b, t, -1, 0);
    }
    puts_(b, "\n</tools>\n\nFor each function call, return a json object with function name "
             "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
             "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"
             "<|im_end|>\n");
}

/* An assistant turn: its thinking (kept only after the last real user query, as Qwen3's
 * template does), its content and its calls. */
static void chatml_assistant(const nx_chat_msg_t *m, bool qwen3, bool after_query, bool last,
                             sbuf_t *b)
{
    const char *content = text_of(m->content);
    size_t content_len = strlen(content);
    const char *reasoning = "";
    size_t reasoning_len = 0;
    if (qwen3 && m->reasoning_content) {
        reasoning = m->reasoning_content, reasoning_len = strlen(reasoning);
    } else if (qwen3 && strstr(content, "</think>")) {
        /* content.split('</think>')[-1].lstrip('\n') and
         * content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
        const char *first_close = strstr(content, "</think>"), *last_close = first_close;
        for (const char *p = first_close; (p = strstr(p + 1, "</think>"));)
            last_close = p;
        size_t head_len = (size_t)(first_close - content);
        while (head_len && content[head_len - 1] == '\n')
            head_len--;
        reasoning = content;
        for (const char *p = content; (p = memmem(p, head_len - (size_t)(p - content),
                                                    "<think>", 7));)
            reasoning = p += 7;
        reasoning_len = head_len - (size_t)(reasoning - content);
        while (reasoning_len && *reasoning == '\n')
            reasoning++, reasoning_len--;
        content = last_close + 8;
        while (*content == '\n')
            content++;
        content_len = strlen(content);
    }
    puts_(b, "<|im_start|>assistant\n");
    if (qwen3 && after_query && (last || reasoning_len)) {
        puts_(b, "<think>\n");
        put_stripped(b, reasoning, reasoning_len, true, true);
        puts_(b, "\n</think>\n\n");
        put_stripped(b, content, content_len, true, false);
    } else {
        put(b, content, content_len);
    }
    for (size_t k = 0; k < m->n_tool_calls; k++) {
        if (k || content_len)
            puts_(b, "\n");
        puts_(b, "<tool_call>\n{\"name\": \"");
        puts_(b, text_of(m->tool_calls[k].name));
        puts_(b, "\", \"arguments\": ");
        puts_(b, text_of(m->tool_calls[k].arguments));
        puts_(b, "}\n</tool_call>");
    }
    puts_(b, "<|im_end|>\n");
}

static void render_chatml(const nx_tokenizer_t *tok, const nx_chat_opts_t *opts,
                          const json_t *tools, const nx_chat_msg_t *msgs, size_t count,
                          sbuf_t *b)
{
    bool qwen3 = knows_thinking(tok);
    size_t first = 0;
    if (tools) {
        chatml_tools_system(tools, msgs, count, b);
        first = count && strcmp(msgs[0].role, "system") == 0;
    }
    /* the last user turn that is a real query, not tool results */
    size_t last_query = count ? count - 1 : 0;
    for (size_t i = count; i-- > 0;) {
        const char *c = text_of(msgs[i].content);
        if (strcmp(msgs[i].role, "user") == 0 &&
            !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = first; i < count; i++) {
        const nx_chat_msg_t *m = &msgs[i];
        if (strcmp(m->role, "assistant") == 0) {
            chatml_assistant(m, qwen3, i > last_query, i + 1 == count, b);
        } else if (strcmp(m->role, "tool") == 0) {
            if (i == 0 || strcmp(msgs[i - 1].role, "tool") != 0)
                puts_(b, "<|im_start|>user");
            puts_(b, "\n<tool_response>\n");
            puts_(b, text_of(m->content));
            puts_(b, "\n</tool_response>");
            if (i + 1 == count || strcmp(msgs[i + 1].role, "tool") != 0)
                puts_(b, "<|im_end|>\n");
        } else {
            puts_(b, "<|im_start|>");
            puts_(b, m->role);
            puts_(b, "\n");
            puts_(b, text_of(m->content));
            puts_(b, "<|im_end|>\n");
        }
    }
    if (!opts->add_generation_prompt)
        return;
    puts_(b, "<|im_start|>assistant\n");
    if (opts->thinking == 0 && knows_thinking(tok))
        puts_(b, "<think>\n\n</think>\n\n");
}

static bool is_trim_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The template's `| trim`. */
static void put_trimmed(sbuf_t *b, const char *c)
{
    size_t n = strlen(c);
    while (n && is_trim_space(c[0]))
        c++, n--;
    while (n && is_trim_space(c[n - 1]))
        n--;
    put(b, c, n);
}

static void render_llama3(const nx_chat_msg_t *msgs, size_t count, bool gen, sbuf_t *b)
{
    puts_(b, "<|begin_of_text|>");
    for (size_t i = 0; i < count; i++) {
        const char *c = msgs[i].content;
        size_t n = strlen(c);
        while (n && is_trim_space(c[0])) /* the template's `| trim` */
            c++, n--;
        while (n && is_trim_space(c[n - 1]))
            n--;
        puts_(b, "<|start_header_id|>");
        puts_(b, msgs[i].role);
        puts_(b, "<|end_header_id|>\n\n");
        put(b, c, n);
        puts_(b, "<|eot_id|>");
    }
    if (gen)
        puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 3.1's template with custom tools (tools_in_user_message, its default): the system
 * turn says "Environment: ipython" and the dates, the tools go into the first user turn
 * (tojson(indent=4)), a call is the whole assistant turn, results are ipython turns
 * (json-encoded: the template's `content is iterable` holds for strings too). */
static int render_llama31_tools(const json_t *tools, const nx_chat_msg_t *msgs, size_t count,
                                bool gen, sbuf_t *b, nx_err_t *err)
{
    puts_(b, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n");
    size_t i = 0;
    if (tools)
        puts_(b, "Environment: ipython\n");
    puts_(b, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
    if (count && strcmp(msgs[0].role, "system") == 0)
        put_trimmed(b, text_of(msgs[i++].content));
    puts_(b, "<|eot_id|>");
    if (tools) {
        /* the template takes the next message whatever its role; a non-user one would lose
         * its role silently, so it is refused */
        if (i == count || strcmp(msgs[i].role, "user") != 0)
            return nx_err_set(err, NX_EINVAL, "chat messages: Llama 3.1's template puts the "
                              "tools into the first user message, and message %zu is %s", i,
                              i == count ? "missing" : "not a user's");
        puts_(b, "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, "
                 "please respond with a JSON for a function call with its proper arguments "
                 "that best answers the given prompt.\n\nRespond in the format {\"name\": "
                 "function name, \"parameters\": dictionary of argument name and its value}."
                 "Do not use variables.\n\n");
        size_t k;
        json_t *t;
        json_array_foreach(tools, k, t) {
            dump_json(b, t, 4, 0);
            puts_(b, "\n\n");
        }
        put_trimmed(b, text_of(msgs[i++].content));
        puts_(b, "<|eot_id|>");
    }
    for (; i < count; i++) {
        const nx_chat_msg_t *m = &msgs[i];
        if (m->n_tool_calls) {
            if (m->n_tool_calls != 1)
                return nx_err_set(err, NX_EINVAL, "chat message %zu: Llama 3.1 makes one tool "
                                  "call per turn, not %zu", i, m->n_tool_calls);
            const char *args = text_of(m->tool_calls[0].arguments);
            json_t *v = json_loads(args, JSON_DECODE_ANY, NULL);
            if (!v)
                return nx_err_set(err, NX_EINVAL, "chat message %zu: tool_calls[0].arguments "
                                  "is not JSON", i);
            puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"");
            puts_(b, text_of(m->tool_calls[0].name));
            puts_(b, "\", \"parameters\": ");
            dump_json(b, v, -1, 0);
            json_decref(v);
            puts_(b, "}<|eot_id|>");
        } else if (strcmp(m->role, "tool") == 0 || strcmp(m->role, "ipython") == 0) {
            puts_(b, "<|start_header_id|>ipython<|end_header_id|>\n\n");
            const char *c = text_of(m->content);
            dump_string(b, c, strlen(c));
            puts_(b, "<|eot_id|>");
        } else {
            puts_(b, "<|start_header_id|>");
            puts_(b, m->role);
            puts_(b, "<|end_header_id|>\n\n");
            put_trimmed(b, text_of(m->content));
            puts_(b, "<|eot_id|>");
        }
    }
    if (gen)
        puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return NX_OK;
}

static bool uses_tools(const nx_chat_msg_t *msgs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (msgs[i].n_tool_calls || strcmp(msgs[i].role, "tool") == 0)
            return true;
    return false;
}

int nx_chat_render(const nx_tokenizer_t *tok, const nx_chat_opts_t *opts,
                   const nx_chat_msg_t *msgs, size_t count, char **text_out, nx_err_t *err)
{
    *text_out = NULL;
    for (size_t i = 0; i < count; i++) {
        if (!msgs[i].role || !*msgs[i].role)
            return nx_err_set(err, NX_EINVAL, "chat message %zu has no role", i);
        if (!msgs[i].content && !msgs[i].n_tool_calls)
            return nx_err_set(err, NX_EINVAL, "chat message %zu has no content", i);
        if (strpbrk(msgs[i].role, "<>\n"))
            return nx_err_set(err, NX_EINVAL, "chat message %zu: role '%s' may not contain "
                              "'<', '>' or a newline", i, msgs[i].role);
        for (size_t k = 0; k < msgs[i].n_tool_calls; k++) {
            const nx_chat_tool_call_t *c = &msgs[i].tool_calls[k];
            if (!c->name || !c->arguments)
                return nx_err_set(err, NX_EINVAL, "chat message %zu: tool_calls[%zu] has no "
                                  "%s", i, k, c->name ? "arguments" : "name");
        }
    }
    nx_chat_kind_t kind = opts->kind == NX_CHAT_AUTO ? nx_chat_detect(tok) : opts->kind;
    if (kind != NX_CHAT_CHATML && kind != NX_CHAT_LLAMA3 && kind != NX_CHAT_RAW)
        return nx_err_set(err, NX_EINVAL, "chat template kind %d is unknown", (int)kind);
    json_t *tools = NULL;
    if (opts->tools_json) {
        json_error_t jerr;
        tools = json_loads(opts->tools_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_array(tools)) {
            json_decref(tools);
            return nx_err_set(err, NX_EINVAL, "tools: not a JSON array%s%s",
                              tools ? "" : ": ", tools ? "" : jerr.text);
        }
        if (json_array_size(tools) == 0) { /* the templates' `if tools`: an empty list is none */
            json_decref(tools);
            tools = NULL;
        }
    }
    sbuf_t b = {0};
    int rc = NX_OK;
    put(&b, "", 0);
    if (kind == NX_CHAT_CHATML) {
        render_chatml(tok, opts, tools, msgs, count, &b);
    } else if (kind == NX_CHAT_LLAMA3 && (tools || uses_tools(msgs, count))) {
        rc = render_llama31_tools(tools, msgs, count, opts->add_generation_prompt, &b, err);
    } else if (kind == NX_CHAT_LLAMA3) {
        render_llama3(msgs, count, opts->add_generation_prompt, &b);
    } else {
        for (size_t i = 0; i < count; i++) {
            if (i)
                puts_(&b, "\n\n");
            puts_(&b, text_of(msgs[i].content));
        }
    }
    json_decref(tools);
    if (rc != NX_OK) {
        free(b.data);
        return rc;
    }
    if (b.failed) {
        free(b.data);
        return nx_err_set(err, NX_ENOMEM, "rendering %zu chat messages: out of memory", count);
    }
    *text_out = b.data;
    return NX_OK;
}

size_t nx_chat_stop_ids(const nx_tokenizer_t *tok, nx_chat_kind_t kind, int32_t *ids,
                        size_t cap)
{
    static const char *const chatml[] = {"<|im_end|>", "<|endoftext|>", NULL};
    static const char *const llama3[] = {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", NULL};
    if (kind == NX_CHAT_AUTO)
        kind = nx_chat_detect(tok);
    const char *const *names = kind == NX_CHAT_CHATML   ? chatml
                               : kind == NX_CHAT_LLAMA3 ? llama3
                                                        : NULL;
    size_t n = 0;
    for (size_t i = 0; names && names[i] && n < cap; i++) {
        int32_t id = nx_tokenizer_token_id(tok, names[i]);
        if (id >= 0)
            ids[n++] = id;
    }
    const char *eos = nx_tokenizer_eos_token(tok); /* the tokenizer's own eos, once */
    int32_t eos_id = eos ? nx_tokenizer_token_id(tok, eos) : -1;
    bool have = eos_id < 0;
    for (size_t i = 0; i < n; i++)
        have = have || ids[i] == eos_id;
    if (!have && n < cap)
        ids[n++] = eos_id;
    return n;
}
