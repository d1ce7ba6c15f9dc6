/* tool_grammar.c — the grammar engine driven by JSON lines, for tests/test_json_schema_suite.py
 * (one process for the whole suite). Each stdin line is an object:
 *   {"schema": <schema>, "draft": "2020-12"|"draft7"|null, "strict": false, "instances": [TEXT...]}
 *   {"gbnf": "<grammar text>", "instances": [TEXT...]}
 * and each reply line is {"ok": true, "verdicts": [bool...]} (each instance's bytes fed to a
 * matcher that must end accepting) or {"ok": false, "code": "ENOTSUP", "error": "..."}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar.h"

static json_t *run(json_t *req)
{
    nx_err_t err = {0};
    nx_gram_t *g = NULL;
    json_t *gbnf = json_object_get(req, "gbnf"), *schema = json_object_get(req, "schema");
    if (json_is_string(gbnf)) {
        g = nx_gram_from_gbnf(json_string_value(gbnf), json_string_length(gbnf), &err);
    } else if (schema) {
        nx_gram_schema_opts_t opts = {0};
        const char *draft = json_string_value(json_object_get(req, "draft"));
        if (draft && !strcmp(draft, "draft7"))
            opts.draft = NX_GRAM_DRAFT_07;
        else if (draft && !strcmp(draft, "2020-12"))
            opts.draft = NX_GRAM_DRAFT_2020_12;
        opts.strict = json_is_true(json_object_get(req, "strict"));
        char *text = json_dumps(schema, JSON_ENCODE_ANY | JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text)
            g = nx_gram_from_json_schema(text, strlen(text), &opts, &err);
        free(text);
    } else {
        return json_pack("{sbssss}", "ok", 0, "code", "EINVAL", "error", "no schema or gbnf");
    }
    if (!g)
        return json_pack("{sbssss}", "ok", 0, "code", nx_errname(err.code), "error", err.msg);
    json_t *verdicts = json_array();
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, &err);
    json_t *inst;
    size_t i;
    json_array_foreach(json_object_get(req, "instances"), i, inst) {
        bool ok = false;
        if (m) {
            nx_gram_matcher_reset(m);
            ok = nx_gram_matcher_advance(m, json_string_value(inst), json_string_length(inst),
                                         NULL) == NX_OK &&
                 nx_gram_matcher_accepting(m);
        }
        json_array_append_new(verdicts, json_boolean(ok));
    }
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
    return json_pack("{sbso}", "ok", 1, "verdicts", verdicts);
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        json_error_t jerr;
        json_t *req = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        json_t *reply = req ? run(req)
                            : json_pack("{sbssss}", "ok", 0, "code", "EINVAL", "error", jerr.text);
        char *out = json_dumps(reply, JSON_COMPACT);
        printf("%s\n", out);
        fflush(stdout);
        free(out);
        json_decref(reply);
        json_decref(req);
    }
    free(line);
    return 0;
}
