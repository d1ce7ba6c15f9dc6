/* typed.c — what typed answers cost the daemon per request, outside decoding (nexus/typed.h),
 * single thread:
 *   - a task's schema found in the router's cache (canonical text, digest, lookup) against
 *     compiling it (what every request would pay without the cache);
 *   - an input checked against an input_schema (parse, walk, matcher), small and ~4 KB;
 *   - with a tokenizer folder: the token trie the executor builds once per model.
 *
 *   build/bench/typed [TOKENIZER_DIR] [--reps 2000]
 *   (tokenizer folders as bench-grammar unpacks them: build/bench/tok/qwen3, .../llama3)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nx_engine.h"
#include "typed.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":80},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",\"c\",\"d\"]},\"maxItems\":8},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},"
    "\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},"
    "\"required\":[\"city\"]},"
    "\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
    "\"sku\":{\"type\":\"string\"},\"qty\":{\"type\":\"integer\",\"minimum\":1},"
    "\"price\":{\"type\":\"number\",\"minimum\":0}},\"required\":[\"sku\",\"qty\"]}}},"
    "\"required\":[\"id\",\"name\",\"items\"]}";

static char *big_input(void)
{
    size_t cap = 8192, len = 0;
    char *s = malloc(cap);
    len += (size_t)snprintf(s + len, cap - len,
                            "{\"name\":\"Ada Lovelace\",\"id\":\"123e4567-e89b-12d3-a456-"
                            "426614174000\",\"email\":\"ada@example.org\",\"age\":36,"
                            "\"tags\":[\"a\",\"c\"],\"address\":{\"city\":\"London\","
                            "\"zip\":\"12345\"},\"items\":[");
    for (int i = 0; i < 60; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s{\"sku\":\"SKU-%04d\",\"qty\":%d,"
                                "\"price\":%d.%02d}", i ? "," : "", i, i + 1, i * 3, i % 100);
    snprintf(s + len, cap - len, "]}");
    return s;
}

int main(int argc, char **argv)
{
    const char *tok_dir = NULL;
    int reps = 2000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else
            tok_dir = argv[i];
    }
    nx_err_t err = {0};
    nx_typed_cache_t *cache = nx_typed_cache_new(64);
    nx_typed_t *t = NULL;
    int compile_reps = reps / 20 > 0 ? reps / 20 : 1;
    double t0 = now_us();
    for (int i = 0; i < compile_reps; i++) {
        if (nx_typed_new(NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, &t, &err) != NX_OK) {
            fprintf(stderr, "compile: %s\n", err.msg);
            return 1;
        }
        nx_typed_release(&t);
    }
    double compile_us = (now_us() - t0) / compile_reps;
    nx_typed_cache_get(cache, NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, &t, &err);
    nx_typed_release(&t);
    t0 = now_us();
    for (int i = 0; i < reps; i++) {
        nx_typed_cache_get(cache, NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, &t, &err);
        nx_typed_release(&t);
    }
    double hit_us = (now_us() - t0) / reps;
    printf("schema of %zu bytes: compile %.1f us (mean of %d), cache hit %.2f us (mean of %d)\n",
           strlen(SCHEMA), compile_us, compile_reps, hit_us, reps);

    nx_typed_cache_get(cache, NX_TYPED_SCHEMA, SCHEMA, strlen(SCHEMA), false, &t, &err);
    const char *small = "{\"id\":\"123e4567-e89b-12d3-a456-426614174000\",\"name\":\"Ada\","
                        "\"items\":[{\"sku\":\"x\",\"qty\":1}]}";
    char *big = big_input();
    const char *inputs[] = {small, big};
    for (int k = 0; k < 2; k++) {
        if (nx_typed_check_input(t, inputs[k], &err) != NX_OK) {
            fprintf(stderr, "input %d: %s\n", k, err.msg);
            return 1;
        }
        t0 = now_us();
        for (int i = 0; i < reps / 10; i++)
            nx_typed_check_input(t, inputs[k], &err);
        printf("input check, %zu bytes: %.1f us (mean of %d)\n", strlen(inputs[k]),
               (now_us() - t0) / (reps / 10), reps / 10);
    }
    free(big);
    nx_typed_release(&t);
    nx_typed_cache_destroy(&cache);

    if (tok_dir) {
        nx_tokenizer_t *tok = nx_tokenizer_load(tok_dir, &err);
        if (!tok) {
            fprintf(stderr, "%s: %s\n", tok_dir, err.msg);
            return 1;
        }
        int32_t end_ids[] = {0};
        for (int i = 0; i < 3; i++) {
            t0 = now_us();
            nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, end_ids, 1, &err);
            double ms = (now_us() - t0) / 1e3;
            if (!v) {
                fprintf(stderr, "trie: %s\n", err.msg);
                return 1;
            }
            printf("token trie of %u ids (%s): %.1f ms\n", nx_gram_vocab_size(v), tok_dir, ms);
            nx_gram_vocab_destroy(&v);
        }
        nx_tokenizer_destroy(&tok);
    }
    return 0;
}
