/* nexusctl.c — the command-line tool: dispatch to the sub-commands in ctl_*.c. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "ctl_daemon.h"

typedef struct command {
    const char *words; /* "model inspect", or one word for a top-level command */
    int (*run)(int argc, char **argv);
    const char *synopsis;
} command_t;

static const command_t commands[] = {
    {"model list", nx_ctl_model_list, "[--models DIR | --config FILE] [--json]"},
    {"model inspect", nx_ctl_model_inspect, "MODEL [--json] [--summary]"},
    {"model verify", nx_ctl_model_verify, "MODEL [--json]"},
    {"model load", nx_ctl_model_load,
     "MODEL [--device auto|cpu|cuda] [--check] [--json] [--threads N] [--chunk-mib N]\n"
     "              [--read auto|direct|buffered] [--pool-mib N] [--queue-depth N]"},
    {"loader calibrate", nx_ctl_loader_calibrate,
     "MODEL [--rounds N] [--device auto|cpu|cuda] [--json] [--no-save]   (measure the\n"
     "              loader's I/O shapes on MODEL's file system, store the best for it)"},
    {"loader show", nx_ctl_loader_show, "PATH [--json]   (the I/O shape a load from PATH uses)"},
    {"model synth", nx_ctl_model_synth,
     "--arch qwen3|qwen2|llama --preset tiny|small|0.6b|4b|8b --out DIR|FILE.gguf\n"
     "              [--seed N] [--dtype bf16|f16|f32|q8_0|q4_0|q4_k_m] [--shards N]\n"
     "              [--tokenizer DIR]"},
    {"model quantize", nx_ctl_model_quantize,
     "MODEL OUT.gguf --type q8_0|q4_0|q4_k_m|f16|bf16|f32 [--threads N] [--json]"},
    {"run", nx_ctl_run,
     "MODEL \"prompt\" [--chat] [--template auto|chatml|llama3|raw] [--system TEXT]\n"
     "              [--no-think] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
     "              [--min-p P] [--repetition-penalty R] [--seed N] [--stop TEXT]...\n"
     "              [--device auto|cpu|cuda] [--threads N] [--context N] [--json]\n"
     "              [--prompt-ids 1,2,3] [--json-schema FILE | --json-object | --grammar FILE.gbnf]"},
    {"tokenize", nx_ctl_tokenize,
     "MODEL TEXT [--chat] [--template auto|chatml|llama3|raw] [--no-think] [--system TEXT]"},
    {"pull", nx_ctl_pull,
     "REPO[@REV] [--include GLOB]... [--file NAME] [--models DIR|--config FILE] [--json] [--jobs N]"},
    /* talking to nexusd: every one takes [--endpoint E] [--key FILE --server-key FILE]
     * [--timeout SECONDS] (or NEXUS_ENDPOINT, NEXUS_CLIENT_KEY, NEXUS_SERVER_KEY) */
    {"status", nx_ctl_status, "[--watch [--count N]] [--json]"},
    {"send", nx_ctl_send,
     "AGENT TEXT [--session S] [--no-stream] [--json] [--timeout SECONDS]\n"
     "              [--json-schema FILE | --json-object | --grammar FILE.gbnf]"},
    {"agents", nx_ctl_agents, "[--json]"},
    {"models", nx_ctl_models, "[--json]"},
    {"load", nx_ctl_model_cmd, "MODEL [--json]"},
    {"evict", nx_ctl_model_cmd, "MODEL [--json]"},
    {"pin", nx_ctl_model_cmd, "MODEL [--json]"},
    {"unpin", nx_ctl_model_cmd, "MODEL [--json]"},
    {"tasks", nx_ctl_tasks, "[--agent A] [--limit N] [--json]"},
    {"history", nx_ctl_history, "SESSION [--json]"},
    {"ping", nx_ctl_ping, "[--json]"},
    {"rm", nx_ctl_rm, "MODEL [--force] [--models DIR | --config FILE] [--json]   (a pulled model)"},
    {"keygen", nx_ctl_keygen, "DIR [--name NAME]   (writes DIR/NAME.key and DIR/NAME.key_secret)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: nexusctl COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %s %s\n", commands[i].words, commands[i].synopsis);
    fprintf(out, "\nMODEL: a model folder or .gguf file, a name in the models folder, or "
                 "Org/Name[@REV]; the\noffline commands take [--models DIR | --config FILE] "
                 "to say which models folder\n(or NEXUS_MODELS; default: configs/nexus.yaml's)\n");
    fprintf(out, "\ndaemon commands also take [--endpoint E] [--key FILE --server-key FILE] "
                 "[--timeout SECONDS]\n(or NEXUS_ENDPOINT, NEXUS_CLIENT_KEY, NEXUS_SERVER_KEY; "
                 "default endpoint " NX_CLIENT_DEFAULT_ENDPOINT ")\n");
}

/* Number of argv words (from argv[1]) that match c->words, or 0. */
static int match(const command_t *c, int argc, char **argv)
{
    const char *w = c->words;
    int used = 0;
    while (*w) {
        const char *sp = strchr(w, ' ');
        size_t n = sp ? (size_t)(sp - w) : strlen(w);
        if (1 + used >= argc || strlen(argv[1 + used]) != n || strncmp(argv[1 + used], w, n) != 0)
            return 0;
        used++;
        w = sp ? sp + 1 : w + n;
    }
    return used;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? NX_CTL_EXIT_USAGE : NX_CTL_EXIT_OK;
    }
    bool group_known = false;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        int used = match(&commands[i], argc, argv);
        if (used)
            return commands[i].run(argc - used, argv + used);
        size_t n = strlen(argv[1]);
        if (strncmp(commands[i].words, argv[1], n) == 0 && commands[i].words[n] == ' ')
            group_known = true;
    }
    if (group_known && argc > 2)
        fprintf(stderr, "nexusctl: '%s %s' is not a command\n", argv[1], argv[2]);
    else if (group_known)
        fprintf(stderr, "nexusctl: '%s' needs a sub-command\n", argv[1]);
    else
        fprintf(stderr, "nexusctl: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return NX_CTL_EXIT_USAGE;
}
