/* nexusctl.c — the command-line tool: dispatch to the sub-commands in ctl_*.c. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"

typedef struct command {
    const char *group; /* "model", or NULL for a top-level command */
    const char *name;
    int (*run)(int argc, char **argv);
    const char *synopsis;
} command_t;

static const command_t commands[] = {
    {"model", "inspect", nx_ctl_model_inspect, "PATH [--json] [--summary]"},
    {"model", "verify", nx_ctl_model_verify, "PATH [--json]"},
    {"model", "load", nx_ctl_model_load,
     "PATH [--device auto|cpu|cuda] [--check] [--json] [--threads N] [--chunk-mib N]\n"
     "              [--read auto|direct|buffered] [--pool-mib N]"},
    {"model", "synth", nx_ctl_model_synth,
     "--arch qwen3|qwen2|llama --preset tiny|0.6b|4b|8b --out DIR [--seed N]\n"
     "              [--dtype bf16|f16|f32] [--shards N] [--tokenizer DIR]"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: nexusctl COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %s %s %s\n", commands[i].group, commands[i].name, commands[i].synopsis);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? NX_CTL_EXIT_USAGE : NX_CTL_EXIT_OK;
    }
    const char *group = argv[1];
    const char *name = argc > 2 ? argv[2] : NULL;
    bool group_known = false;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const command_t *c = &commands[i];
        if (strcmp(c->group, group) != 0)
            continue;
        group_known = true;
        if (name && strcmp(c->name, name) == 0)
            return c->run(argc - 2, argv + 2);
    }
    if (group_known && name)
        fprintf(stderr, "nexusctl: '%s %s' is not a command\n", group, name);
    else if (group_known)
        fprintf(stderr, "nexusctl: '%s' needs a sub-command\n", group);
    else
        fprintf(stderr, "nexusctl: unknown command '%s'\n", group);
    usage(stderr);
    return NX_CTL_EXIT_USAGE;
}
