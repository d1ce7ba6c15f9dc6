/* tok_fixture.h — a committed real tokenizer (tests/fixtures/tokenizer/NAME: tokenizer.json.gz
 * and tokenizer_config.json) unpacked into DIR/NAME and loaded, for tests that need a real
 * vocabulary (Qwen3's 151,669 ids, Llama 3's 128,256). The includer defines FIXTURES (the
 * fixtures' tokenizer folder). NULL when it cannot be unpacked or loaded (said on stderr). */
#ifndef NX_TEST_TOK_FIXTURE_H
#define NX_TEST_TOK_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "nx_engine.h"

static inline nx_tokenizer_t *unpack(const char *dir, const char *name)
{
    char cmd[1024], sub[96];
    snprintf(sub, sizeof sub, "%s/%s", dir, name);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && gzip -dc %s/%s/tokenizer.json.gz > "
             "%s/tokenizer.json && cp %s/%s/tokenizer_config.json %s/", sub, FIXTURES, name, sub,
             FIXTURES, name, sub);
    if (system(cmd) != 0)
        return NULL;
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(sub, &err);
    if (!tok)
        fprintf(stderr, "%s tokenizer: %s\n", name, err.msg);
    return tok;
}

#endif
