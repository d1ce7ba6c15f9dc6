/* fuzz_conf.c — libFuzzer target for the agent YAML reader (nx_agent_conf_load: libyaml's
 * document, the typed getters, every field's rules). Every input is one agent file. It must
 * never crash, leak or read out of bounds; a rejection must carry NX_EFORMAT (or NX_EIO) and a
 * message naming FILE:LINE:COL or the file.
 *
 * Build and run (clang with libFuzzer; `make fuzz-smoke` runs it briefly):
 *   make fuzz                                   # builds build/fuzz/fuzz_conf
 *   mkdir -p var/fuzz/conf && cp -r tests/fuzz/corpus/fuzz_conf/. var/fuzz/conf/
 *   build/fuzz/fuzz_conf var/fuzz/conf -max_total_time=60
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

/* A real file in a private folder: the reader resolves the file's path (for the agent's
 * source_path), which an in-memory file (/proc/self/fd/N of a memfd) does not have, so every
 * input read that way was refused before the YAML was parsed. */
static char dir[512], yaml_path[600];

static void cleanup(void)
{
    unlink(yaml_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(dir, sizeof dir, "%s/nx-fuzz-agent-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz_conf: mkdtemp");
        abort();
    }
    snprintf(yaml_path, sizeof yaml_path, "%s/agent.yaml", dir);
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
    nx_agent_conf_t *agent = NULL;
    nx_err_t err = {0};
    int rc = nx_agent_conf_load(yaml_path, &agent, &err);
    if (rc == NX_OK) {
        if (!agent || !agent->name || !agent->name[0])
            __builtin_trap(); /* accepted without a name */
        nx_agent_conf_free(&agent);
    } else if (err.msg[0] == '\0' || agent) {
        __builtin_trap(); /* a refusal must say why and return nothing */
    }
    return 0;
}
