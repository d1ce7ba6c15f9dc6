/* tiny_model.h — a tiny synthesized Qwen3 (NX_SYNTH_TINY, bf16, one shard) written into a
 * fresh /tmp folder and loaded on the CPU backend (a 256 MiB pool, an engine of 2 threads),
 * for tests that run the real engine on a model cheap enough to build in a set-up. */
#ifndef NX_TEST_TINY_MODEL_H
#define NX_TEST_TINY_MODEL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nx_engine.h"
#include "synth.h"

typedef struct tiny_model {
    char dir[64];          /* the model's folder (config, weights, tokenizer) */
    nx_pool_t *pool;
    nx_loader_t *loader;
    nx_model_t *model;
    nx_engine_t *engine;
} tiny_model_t;

/* Synthesize the model (weights a function of seed) into /tmp/nx-TAG-XXXXXX and load it
 * with an engine whose sequences hold max_context tokens. 0, or -1 (said on stderr as
 * "set-up: ..." where the library gave a reason); what was made before a failure stays in
 * *m. */
static inline int tiny_model_open(tiny_model_t *m, const char *tag, uint64_t seed,
                                  uint32_t max_context)
{
    nx_err_t err = {0};
    snprintf(m->dir, sizeof m->dir, "/tmp/nx-%s-XXXXXX", tag);
    if (!mkdtemp(m->dir))
        return -1;
    rmdir(m->dir);
    nx_synth_opts_t o = {.arch = NX_SYNTH_QWEN3, .preset = NX_SYNTH_TINY, .out_dir = m->dir,
                         .seed = seed, .dtype = NX_DT_BF16, .shards = 1};
    nx_pool_opts_t popts = {.device = NX_DEVICE_CPU, .bytes = 256ull << 20};
    nx_engine_opts_t eopts = {.threads = 2, .max_context = max_context};
    if (nx_synth_model(&o, NULL, &err) != NX_OK || !(m->pool = nx_pool_new(&popts, &err)) ||
        !(m->loader = nx_loader_new(m->pool, NULL, &err)) ||
        !(m->model = nx_loader_load(m->loader, m->dir, NULL, NULL, &err)) ||
        !(m->engine = nx_engine_new(m->dir, m->model, m->pool, &eopts, &err))) {
        fprintf(stderr, "set-up: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Free what tiny_model_open made and remove the model's folder. */
static inline void tiny_model_close(tiny_model_t *m)
{
    nx_engine_destroy(&m->engine);
    if (m->model)
        nx_loader_unload(m->loader, &m->model, false);
    nx_loader_destroy(&m->loader);
    nx_pool_destroy(&m->pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", m->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", m->dir);
}

#endif
