/* chat.c — chat templates without a Jinja engine: the two families our checkpoints use,
 * rendered exactly as their own templates render them, and told apart by what the
 * tokenizer_config.json template mentions.
 *   ChatML (Qwen2/Qwen3): "<|im_start|>role\ncontent<|im_end|>\n" per message, generation
 *     prompt "<|im_start|>assistant\n"; with thinking off, a template that knows
 *     enable_thinking (Qwen3) pre-fills an empty "<think>\n\n</think>\n\n".
 *   Llama 3: "<|begin_of_text|>", then "<|start_header_id|>role<|end_header_id|>\n\n" +
 *     trimmed content + "<|eot_id|>" per message, generation prompt the assistant header.
 *   RAW: the messages' contents as they are, joined by blank lines.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

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
    const char *t = nx_tokenizer_chat_template(tok);
    if (t)
        return strstr(t, "enable_thinking") != NULL;
    return nx_tokenizer_token_id(tok, "<think>") >= 0 && nx_tokenizer_token_id(tok, "</think>") >= 0;
}

static void render_chatml(const nx_tokenizer_t *tok, const nx_chat_opts_t *opts,
                          const nx_chat_msg_t *msgs, size_t count, sbuf_t *b)
{
    for (size_t i = 0; i < count; i++) {
        puts_(b, "<|im_start|>");
        puts_(b, msgs[i].role);
        puts_(b, "\n");
        puts_(b, msgs[i].content);
        puts_(b, "<|im_end|>\n");
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

int nx_chat_render(const nx_tokenizer_t *tok, const nx_chat_opts_t *opts,
                   const nx_chat_msg_t *msgs, size_t count, char **text_out, nx_err_t *err)
{
    *text_out = NULL;
    for (size_t i = 0; i < count; i++) {
        if (!msgs[i].role || !msgs[i].content || !*msgs[i].role)
            return nx_err_set(err, NX_EINVAL, "chat message %zu has no %s", i,
                              msgs[i].role && *msgs[i].role ? "content" : "role");
        if (strpbrk(msgs[i].role, "<>\n"))
            return nx_err_set(err, NX_EINVAL, "chat message %zu: role '%s' may not contain "
                              "'<', '>' or a newline", i, msgs[i].role);
    }
    nx_chat_kind_t kind = opts->kind == NX_CHAT_AUTO ? nx_chat_detect(tok) : opts->kind;
    if (kind != NX_CHAT_CHATML && kind != NX_CHAT_LLAMA3 && kind != NX_CHAT_RAW)
        return nx_err_set(err, NX_EINVAL, "chat template kind %d is unknown", (int)kind);
    sbuf_t b = {0};
    put(&b, "", 0);
    if (kind == NX_CHAT_CHATML) {
        render_chatml(tok, opts, msgs, count, &b);
    } else if (kind == NX_CHAT_LLAMA3) {
        render_llama3(msgs, count, opts->add_generation_prompt, &b);
    } else {
        for (size_t i = 0; i < count; i++) {
            if (i)
                puts_(&b, "\n\n");
            puts_(&b, msgs[i].content);
        }
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
