/* fuzz_nexus_conf.c — libFuzzer target for the daemon's YAML reader (nx_nexus_conf_load):
 * every input is one nexus.yaml, read from a private folder that also holds an agents folder
 * (two agents, one the other's `next`) and the model folders they name, so an input that
 * parses goes on through the agents' loading and cross-checks. fuzz_conf covers the agent
 * files themselves. It must never crash, leak or read out of bounds; a refusal must carry a
 * message and return nothing; an accepted file has every path absolute.
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_nexus_conf
 *   mkdir -p var/fuzz/nexus && cp -r tests/fuzz/corpus/fuzz_nexus_conf/. var/fuzz/nexus/
 *   build/fuzz/fuzz_nexus_conf var/fuzz/nexus -max_total_time=60
 * Inputs may name other folders (`agents: /somewhere`): those are only read, never written.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"

static char dir[512];         /* the folder of nexus.yaml */
static char yaml_path[600];

/* What LLVMFuzzerInitialize made, deepest first, removed at exit. */
static const char *const made[] = {
    "nexus.yaml", "agents/writer.yaml", "agents/editor.yaml", "agents",
    "var/models/demo-qwen3", "var/models/demo-llama", "var/models", "var",
    "models/demo-qwen3", "models/demo-llama", "models", ""};

static void cleanup(void)
{
    for (size_t i = 0; i < sizeof made / sizeof *made; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, made[i]);
        if (unlink(path) != 0)
            rmdir(path);
    }
}

static void put(const char *rel, const char *text)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (!text) {
        mkdir(path, 0700);
        return;
    }
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/nx-fuzz-nexus-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        perror("fuzz_nexus_conf: mkdtemp");
        abort();
    }
    snprintf(yaml_path, sizeof yaml_path, "%s/nexus.yaml", dir);
    put("agents", NULL);
    put("agents/writer.yaml", "name: writer\nmodel: demo-qwen3\nnext: editor\n");
    put("agents/editor.yaml", "name: editor\nmodel: demo-llama\nmemory: session\n");
    /* the models folder by default (<home>/models, home ./var) and as `models: models` */
    put("var", NULL);
    put("var/models", NULL);
    put("var/models/demo-qwen3", NULL);
    put("var/models/demo-llama", NULL);
    put("models", NULL);
    put("models/demo-qwen3", NULL);
    put("models/demo-llama", NULL);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(yaml_path, "wb");
    if (!f)
        return 0;
    bool ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0 || !ok)
        return 0;
    nx_nexus_conf_t *conf = NULL;
    nx_err_t err = {0};
    int rc = nx_nexus_conf_load(yaml_path, &conf, &err);
    if (rc == NX_OK) {
        if (!conf || !conf->home || conf->home[0] != '/' || !conf->agents_dir ||
            conf->agents_dir[0] != '/' || !conf->models_dir || conf->models_dir[0] != '/')
            __builtin_trap(); /* accepted with a relative or missing path */
        for (size_t i = 0; i < conf->agent_count; i++)
            if (nx_nexus_conf_agent(conf, conf->agents[i].name) != &conf->agents[i])
                __builtin_trap(); /* two agents by one name */
        nx_nexus_conf_free(&conf);
        nx_nexus_conf_free(&conf); /* safe twice */
    } else if (!err.msg[0] || conf) {
        __builtin_trap(); /* a refusal must say why and return nothing */
    }
    return 0;
}
