/* fuzz_conf.c — libFuzzer target for the agent YAML reader (nx_agent_conf_load: libyaml's
 * document, the typed getters, every field's rules). Every input is one agent file. It must
 * never crash, leak or read out of bounds; a rejection must carry NX_EFORMAT (or NX_EIO) and a
 * message naming FILE:LINE:COL or the file.
 *
 * Build and run (clang with libFuzzer; not part of `make test`):
 *   make fuzz                                   # builds build/fuzz/fuzz_conf
 *   mkdir -p var/fuzz/conf && cp tests/fixtures/conf/good/agent/*.yaml var/fuzz/conf/
 *   build/fuzz/fuzz_conf var/fuzz/conf -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The reader takes a path: give it an in-memory file. */
    int fd = memfd_create("fuzz-agent.yaml", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    nx_agent_conf_t *agent = NULL;
    nx_err_t err = {0};
    int rc = nx_agent_conf_load(path, &agent, &err);
    if (rc == NX_OK) {
        if (!agent || !agent->name || !agent->name[0])
            __builtin_trap(); /* accepted without a name */
        nx_agent_conf_free(&agent);
    } else if (err.msg[0] == '\0' || agent) {
        __builtin_trap(); /* a refusal must say why and return nothing */
    }
    close(fd);
    return 0;
}
