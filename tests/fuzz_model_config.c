/* fuzz_model_config.c — libFuzzer target for a model's config (nx_config_load): every input is
 * one model's config.json, or, when it starts with "GGUF", a whole GGUF file whose metadata
 * and tensor list give the config (agents/config_gguf.c). Both come from model folders a user
 * downloaded. It must never crash, leak or read out of bounds; a refusal must carry a message;
 * an accepted config has every size positive and the shapes the engine divides by consistent.
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_model_config
 *   mkdir -p var/fuzz/config && cp -r tests/fuzz/corpus/fuzz_model_config/. var/fuzz/config/
 *   build/fuzz/fuzz_model_config var/fuzz/config -max_total_time=60
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_engine.h"

static char dir[512];         /* a private folder: DIR/config.json or DIR/model.gguf */
static char json_path[600], gguf_path[600];

static void cleanup(void)
{
    rmdir(dir); /* each input's file is removed after its run */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/nx-fuzz-config-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        perror("fuzz_model_config: mkdtemp");
        abort();
    }
    snprintf(json_path, sizeof json_path, "%s/config.json", dir);
    snprintf(gguf_path, sizeof gguf_path, "%s/model.gguf", dir);
    atexit(cleanup);
    return 0;
}

static bool write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool gguf = size >= 4 && memcmp(data, "GGUF", 4) == 0;
    const char *path = gguf ? gguf_path : json_path;
    if (!write_file(path, data, size))
        return 0;
    nx_model_config_t c;
    nx_err_t err = {0};
    int rc = nx_config_load(gguf ? gguf_path : dir, &c, &err);
    unlink(path);
    if (rc != NX_OK) {
        if (!err.msg[0])
            __builtin_trap(); /* a refusal says why */
        return 0;
    }
    if (!c.hidden || !c.intermediate || !c.layers || !c.heads || !c.kv_heads || !c.head_dim ||
        !c.vocab || c.heads % c.kv_heads != 0 || c.head_dim % 2 != 0 || c.eos_count > NX_MAX_EOS ||
        c.rope_freq_count > NX_MAX_ROPE_FACTORS || c.gguf != gguf ||
        !memchr(c.model_type, '\0', sizeof c.model_type))
        __builtin_trap(); /* accepted a config the engine cannot size */
    (void)nx_arch_name(c.arch);
    (void)nx_kv_bytes(&c, NX_DEVICE_CPU, 16);
    (void)nx_engine_scratch_bytes(&c, NX_DEVICE_CPU);
    return 0;
}
