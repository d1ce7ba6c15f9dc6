/* ctl_tokenize.c — `nexusctl tokenize MODEL_DIR TEXT [--chat] [--template KIND] [--no-think]
 *                  [--system TEXT]`:
 * print the ids of TEXT (with --chat: of the user message TEXT rendered with the model's chat
 * template, a generation prompt after it) as a JSON array on one line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "nx_engine.h"

typedef struct tokenize_args {
    const char *model_dir, *text, *system;
    nx_chat_kind_t template_kind; /* --template (implies --chat); AUTO by default */
    bool chat, no_think;
} tokenize_args_t;

static int parse_args(int argc, char **argv, tokenize_args_t *a)
{
    const char *positional[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--chat") == 0) {
            a->chat = true;
        } else if (strcmp(argv[i], "--no-think") == 0) {
            a->no_think = true;
        } else if (strcmp(argv[i], "--template") == 0) {
            if (i + 1 >= argc || !nx_chat_kind_parse(argv[i + 1], &a->template_kind)) {
                fprintf(stderr, "nexusctl tokenize: --template takes auto, chatml, llama3 or "
                                "raw\n");
                return NX_CTL_EXIT_USAGE;
            }
            a->chat = true;
            i++;
        } else if (strcmp(argv[i], "--system") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "nexusctl tokenize: --system needs a TEXT\n");
                return NX_CTL_EXIT_USAGE;
            }
            a->system = argv[++i];
        } else if (strncmp(argv[i], "--", 2) == 0 && argv[i][2]) {
            fprintf(stderr, "nexusctl tokenize: unknown option '%s'\n", argv[i]);
            return NX_CTL_EXIT_USAGE;
        } else if (npos < 2) {
            positional[npos++] = argv[i];
        } else {
            fprintf(stderr, "nexusctl tokenize: unexpected argument '%s' (quote the TEXT)\n",
                    argv[i]);
            return NX_CTL_EXIT_USAGE;
        }
    }
    if (npos < 2) {
        fprintf(stderr, "usage: nexusctl tokenize MODEL_DIR TEXT [--chat] [--template KIND] "
                        "[--no-think] [--system TEXT]\n");
        return NX_CTL_EXIT_USAGE;
    }
    if ((a->no_think || a->system) && !a->chat) {
        fprintf(stderr, "nexusctl tokenize: %s only applies with --chat\n",
                a->no_think ? "--no-think" : "--system");
        return NX_CTL_EXIT_USAGE;
    }
    a->model_dir = positional[0];
    a->text = positional[1];
    return NX_CTL_EXIT_OK;
}

static int render(const nx_tokenizer_t *tok, const tokenize_args_t *a, char **prompt,
                  nx_err_t *err)
{
    nx_chat_msg_t msgs[2];
    size_t n = 0;
    if (a->system)
        msgs[n++] = (nx_chat_msg_t){"system", a->system};
    msgs[n++] = (nx_chat_msg_t){"user", a->text};
    nx_chat_opts_t opts = {.kind = a->template_kind, .thinking = a->no_think ? 0 : -1,
                           .add_generation_prompt = true};
    return nx_chat_render(tok, &opts, msgs, n, prompt, err);
}

int nx_ctl_tokenize(int argc, char **argv)
{
    tokenize_args_t a = {0};
    nx_ctl_store_opts_t store = {0};
    char *model_path = NULL;
    int code = nx_ctl_store_opts_take("tokenize", &argc, argv, &store);
    if (code == NX_CTL_EXIT_OK)
        code = parse_args(argc, argv, &a);
    if (code == NX_CTL_EXIT_OK)
        code = nx_ctl_resolve_model("tokenize", &store, a.model_dir, &model_path);
    if (code != NX_CTL_EXIT_OK)
        return code;
    a.model_dir = model_path;
    nx_err_t err = {0};
    char *prompt = NULL;
    int32_t *ids = NULL;
    size_t count = 0;
    nx_tokenizer_t *tok = nx_tokenizer_load(a.model_dir, &err);
    if (!tok)
        goto fail;
    if (a.chat && render(tok, &a, &prompt, &err) != NX_OK)
        goto fail;
    const char *text = prompt ? prompt : a.text;
    if (nx_tokenizer_encode(tok, text, strlen(text), &ids, &count, &err) != NX_OK)
        goto fail;
    putchar('[');
    for (size_t i = 0; i < count; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    printf("]\n");
    code = NX_CTL_EXIT_OK;
    goto out;
fail:
    fprintf(stderr, "nexusctl tokenize: %s\n", err.msg[0] ? err.msg : nx_strerror(err.code));
    code = NX_CTL_EXIT_FAIL;
out:
    free(ids);
    free(prompt);
    nx_tokenizer_destroy(&tok);
    free(model_path);
    return code;
}
