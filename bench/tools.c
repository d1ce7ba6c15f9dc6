/* tools.c — tool-call grammars' speed: nx_tools_grammar compile time for 1, 10 and 300 tools
 * (OpenAI tools arrays of five real-world shapes, every tool's schema distinct, half of them
 * strict) and the token mask
 * time along canonical call texts, single thread, on a real tokenizer's vocabulary.
 *
 *   build/bench/tools TOKENIZER_DIR [--reps 20]
 *
 * Compile: mean and max of --reps nx_tools_grammar calls (tool_choice auto, parallel calls;
 * 300 tools: 5 reps). Masks: Hermes call texts (<tool_call>\n{"name": ..., "arguments": ...}
 * \n</tool_call>, two calls per answer) encoded with the tokenizer and walked token by token;
 * each nx_gram_matcher_mask call is timed, each token must be in its mask (a correctness check
 * on the full vocabulary). One matcher per tools array; a cold pass (first use) and a warm
 * pass (the same answers again, as a server keeping the matcher sees); then a fresh pass: a
 * new matcher on the same grammar (a server that makes one per task), which finds the token
 * classes the first matcher built in the grammar's shared table and pays only its own state
 * masks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "nx_engine.h"
#include "tools.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Tool i of a generated set: five shapes in turn. */
static void tool_json(char *out, size_t cap, int i)
{
    static const char *const shapes[] = {
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"description\":"
        "\"City name\"},\"unit\":{\"type\":\"string\",\"enum\":[\"celsius\",\"fahrenheit\"]}},"
        "\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\",\"maxLength\":%d},"
        "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":50}},\"required\":[\"query\"]"
        ",\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{\"to\":{\"type\":\"array\",\"items\":{\"type\":"
        "\"string\",\"format\":\"email\"},\"minItems\":1},\"subject\":{\"type\":\"string\"},"
        "\"body\":{\"type\":\"string\"}},\"required\":[\"to\",\"subject\",\"body\"],"
        "\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{\"event\":{\"type\":\"object\",\"properties\":{"
        "\"title\":{\"type\":\"string\"},\"start\":{\"type\":\"string\",\"format\":\"date-time\"}"
        ",\"attendees\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
        "\"name\":{\"type\":\"string\"},\"optional\":{\"type\":\"boolean\"}},\"required\":"
        "[\"name\",\"optional\"],\"additionalProperties\":false}}},\"required\":[\"title\","
        "\"start\",\"attendees\"],\"additionalProperties\":false}},\"required\":[\"event\"],"
        "\"additionalProperties\":false}",
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"type\":"
        "\"number\"},\"op\":{\"enum\":[\"add\",\"sub\",\"mul\",\"div\"]}},\"required\":[\"a\","
        "\"b\",\"op\"]}",
    };
    /* every tool distinct (maxLength 40..239 in the search shape), so no two schemas are
     * the same text */
    char params[1024];
    snprintf(params, sizeof params, shapes[i % 5], 40 + i % 200);
    snprintf(out, cap, "{\"type\":\"function\",\"function\":{\"name\":\"tool_%d\",\"description\":"
             "\"Tool number %d\",\"strict\":%s,\"parameters\":%s}}", i, i,
             i % 2 ? "false" : "true", params);
}

static const char *const ARGS[] = {
    "{\"city\":\"San Francisco\",\"unit\":\"celsius\"}",
    "{\"query\":\"structured output for agents\",\"limit\":10}",
    "{\"to\":[\"ana@example.com\"],\"subject\":\"Meeting\",\"body\":\"See you at ten.\"}",
    "{\"event\":{\"title\":\"Review\",\"start\":\"2026-12-06T10:00:00Z\",\"attendees\":"
    "[{\"name\":\"Bo\",\"optional\":false}]}}",
    "{\"a\":1.5,\"b\":2,\"op\":\"mul\"}",
};

static char *tools_array(int n)
{
    size_t cap = (size_t)n * 1200 + 16, len = 0;
    char *s = malloc(cap), one[1200];
    s[len++] = '[';
    for (int i = 0; i < n; i++) {
        tool_json(one, sizeof one, i);
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", one);
    }
    s[len++] = ']';
    s[len] = '\0';
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tools TOKENIZER_DIR [--reps N]\n");
        return 2;
    }
    int reps = argc > 3 && strcmp(argv[2], "--reps") == 0 ? atoi(argv[3]) : 20;
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(argv[1], &err);
    if (!tok) {
        fprintf(stderr, "tools: %s\n", err.msg);
        return 1;
    }
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    if (!v) {
        fprintf(stderr, "tools: %s\n", err.msg);
        return 1;
    }
    uint32_t *mask = calloc(nx_gram_mask_words(v), sizeof *mask);
    printf("%-10s %12s %12s | %-5s %9s %9s %9s %9s %7s\n", "tools", "compile ms", "max ms",
           "pass", "mask µs", "p50", "p99", "max", "masks");
    static const int sizes[] = {1, 10, 300};
    int rc = 0;
    for (size_t si = 0; si < 3; si++) {
        int n_tools = sizes[si];
        char *tools = tools_array(n_tools);
        nx_tools_request_t req = {.family = NX_TOOLS_HERMES, .tools_json = tools,
                                  .tools_len = strlen(tools), .parallel = true};
        int r = n_tools >= 300 ? 5 : reps;
        double total = 0, worst = 0;
        nx_gram_t *g = NULL;
        for (int k = 0; k < r; k++) {
            nx_gram_destroy(&g);
            uint64_t t0 = nx_now_ns();
            g = nx_tools_grammar(&req, &err);
            double ms = (double)(nx_now_ns() - t0) / 1e6;
            total += ms;
            worst = ms > worst ? ms : worst;
            if (!g) {
                fprintf(stderr, "tools: %s\n", err.msg);
                return 1;
            }
        }
        nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, &err);
        /* answers: two calls each, over the first tools of the set */
        int n_answers = n_tools < 5 ? n_tools : 5;
        double *times = malloc(4096 * sizeof *times);
        static const char *const pass_names[] = {"cold", "warm", "fresh"};
        for (int pass = 0; pass < 3; pass++) {
            size_t n_times = 0;
            if (pass == 2) {
                nx_gram_matcher_destroy(&m);
                m = nx_gram_matcher_new(g, v, &err);
            }
            for (int a = 0; a < n_answers; a++) {
                int t1 = a, t2 = (a + 1) % n_answers;
                char text[2048];
                snprintf(text, sizeof text, "<tool_call>\n{\"name\": \"tool_%d\", \"arguments\": "
                         "%s}\n</tool_call>\n<tool_call>\n{\"name\": \"tool_%d\", \"arguments\": "
                         "%s}\n</tool_call>", t1, ARGS[t1 % 5], t2, ARGS[t2 % 5]);
                int32_t *ids = NULL;
                size_t n_ids = 0;
                nx_tokenizer_encode(tok, text, strlen(text), &ids, &n_ids, &err);
                nx_gram_matcher_reset(m);
                for (size_t i = 0; i <= n_ids; i++) {
                    uint64_t t0 = nx_now_ns();
                    if (nx_gram_matcher_mask(m, mask, &err) != NX_OK) {
                        fprintf(stderr, "tools: mask: %s\n", err.msg);
                        return 1;
                    }
                    times[n_times++] = (double)(nx_now_ns() - t0) / 1e3;
                    int32_t id = i < n_ids ? ids[i] : eos;
                    if (!(mask[id >> 5] >> (id & 31) & 1) ||
                        nx_gram_matcher_accept_token(m, id, &err) != NX_OK) {
                        fprintf(stderr, "tools: %d tools: token %zu (id %d) refused in\n%s\n",
                                n_tools, i, id, text);
                        rc = 1;
                        break;
                    }
                }
                free(ids);
            }
            double sum = 0;
            for (size_t i = 0; i < n_times; i++)
                sum += times[i];
            qsort(times, n_times, sizeof *times, cmp_double);
            printf("%-10d %12.3f %12.3f | %-5s %9.1f %9.1f %9.1f %9.1f %7zu\n", n_tools,
                   total / r, worst, pass_names[pass], sum / (double)n_times,
                   times[n_times / 2], times[n_times * 99 / 100], times[n_times - 1], n_times);
        }
        free(times);
        nx_gram_matcher_destroy(&m);
        nx_gram_destroy(&g);
        free(tools);
    }
    free(mask);
    nx_gram_vocab_destroy(&v);
    nx_tokenizer_destroy(&tok);
    return rc;
}
