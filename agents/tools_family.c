/* tools_family.c — the tool-call syntax of each model family, as data: the grammar
 * (tools_grammar.c) and the parser (tools_parse.c) both read these descriptions, so a family
 * is described once. The texts are those the families' own chat templates teach the model.
 */
#include <string.h>

#include "nx_engine.h"
#include "tools.h"

static const nx_tools_format_t formats[] = {
    {
        .family = NX_TOOLS_HERMES,
        .name = "hermes",
        .call_open = "<tool_call>\n",
        .call_close = "\n</tool_call>",
        .call_sep = "\n",
        .obj_open = "{\"name\": \"",
        .obj_mid = "\", \"arguments\": ",
        .obj_close = "}",
        .name_key = "name",
        .args_key = "arguments",
        .trigger = "<tool_call>",
        .trigger_at_start = false,
        .think_open = "<think>",
        .think_close = "</think>",
    },
    {
        /* Llama 3.1's template: 'Respond in the format {"name": function name,
         * "parameters": dictionary of argument name and its value}.' and it refuses more
         * than one call per assistant turn. */
        .family = NX_TOOLS_LLAMA3_JSON,
        .name = "llama3_json",
        .call_open = "",
        .call_close = "",
        .call_sep = NULL,
        .obj_open = "{\"name\": \"",
        .obj_mid = "\", \"parameters\": ",
        .obj_close = "}",
        .name_key = "name",
        .args_key = "parameters",
        .trigger = "{\"name\"",
        /* The template wants the call as the whole answer: the engine's lazy start
         * (nx_gen_grammar_t.trigger_at_start) and the parser both take the trigger only at
         * the answer's start (leading whitespace aside); later it is content. */
        .trigger_at_start = true,
        .think_open = NULL,
        .think_close = NULL,
    },
};

static const char *const family_names[] = {"none", "hermes", "llama3_json"};

const nx_tools_format_t *nx_tools_format(nx_tools_family_t family)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].family == family)
            return &formats[i];
    return NULL;
}

nx_tools_family_t nx_tools_family_detect(const nx_tokenizer_t *tok)
{
    if (!tok)
        return NX_TOOLS_NONE;
    const char *t = nx_tokenizer_chat_template(tok);
    if (t && strstr(t, "<tool_call>"))
        return NX_TOOLS_HERMES;
    if (t && strstr(t, "<|start_header_id|>"))
        return NX_TOOLS_LLAMA3_JSON;
    if (nx_tokenizer_token_id(tok, "<tool_call>") >= 0)
        return NX_TOOLS_HERMES;
    if (t && strstr(t, "<|im_start|>"))
        return NX_TOOLS_HERMES; /* ChatML without tools in its template: Qwen's format */
    if (nx_tokenizer_token_id(tok, "<|start_header_id|>") >= 0)
        return NX_TOOLS_LLAMA3_JSON;
    return NX_TOOLS_NONE;
}

const char *nx_tools_family_name(nx_tools_family_t family)
{
    return (unsigned)family < 3 ? family_names[family] : "?";
}

bool nx_tools_family_parse(const char *name, nx_tools_family_t *family_out)
{
    for (unsigned f = 0; f < 3; f++) {
        if (name && strcmp(name, family_names[f]) == 0) {
            *family_out = (nx_tools_family_t)f;
            return true;
        }
    }
    return false;
}
