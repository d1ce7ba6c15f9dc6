/* grammar.c — the grammar engine's speed: schema compile time and token mask time, single
 * thread, on a real tokenizer's vocabulary (Qwen3: 151,936 ids; Llama 3: 128,256).
 *
 *   build/bench/grammar TOKENIZER_DIR [--reps 20] [--check]   (make bench-grammar: both)
 *
 * --check (outside the timing): every mask along each schema's first instance is compared
 * with nx_gram_matcher_accept_token for every id of the vocabulary.
 *
 * Schemas of real-world shapes: nested objects, enums, arrays of objects, long free strings,
 * formats, a recursive tree, json_object mode and 300 tools as an anyOf of tool-call objects.
 * Compile: mean of --reps compiles of the schema text (300 tools: of 5). Masks: valid
 * instances written as a model would (English text, numbers), encoded with the tokenizer and
 * walked token by token; each nx_gram_matcher_mask call is timed (the mask before each token
 * and after the last), and each token must be in its mask and the end id in the last one —
 * a correctness check on the full vocabulary too. One matcher per schema across its
 * instances, as a server keeps one per compiled schema: the first instance pays the cold
 * per-terminal walks. Printed: mean, p50, p99, max per schema and over all masks; then a
 * second pass of the same instances through the same matchers (warm per-terminal classes and
 * state masks: what a server that keeps its matchers sees once a schema has been used).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "nx_engine.h"

typedef struct schema_case {
    const char *name;
    char *schema;        /* NULL: json_object mode */
    char *instances[24];
    int n_instances;
} schema_case_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static const char *const WORDS[] = {
    "the", "model", "returns", "a", "structured", "answer", "with", "every", "field", "filled",
    "and", "nothing", "else", "so", "that", "downstream", "agents", "can", "act", "on", "it",
    "without", "parsing", "prose", "or", "retrying", "when", "validation", "fails", "because",
    "decoding", "follows", "schema", "from", "first", "token", "to", "last", "one", "."};

static char *sentence_text(unsigned *seed, int words)
{
    size_t cap = (size_t)words * 16 + 16, len = 0;
    char *s = malloc(cap);
    for (int i = 0; i < words; i++) {
        const char *w = WORDS[rand_r(seed) % (sizeof WORDS / sizeof WORDS[0])];
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? " " : "", w);
    }
    return s;
}

/* 300 tools: tool_i with 1-4 arguments of varied types. */
static const char *const ARG_TYPES[] = {
    "{\"type\":\"string\"}", "{\"type\":\"integer\",\"minimum\":0}", "{\"type\":\"boolean\"}",
    "{\"type\":\"string\",\"enum\":[\"asc\",\"desc\"]}", "{\"type\":\"number\"}",
    "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}"};

static char *tools_schema(void)
{
    size_t cap = 1 << 20, len = 0;
    char *s = malloc(cap);
    len += (size_t)snprintf(s + len, cap - len, "{\"anyOf\":[");
    for (int t = 0; t < 300; t++) {
        int nargs = 1 + t % 4;
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"type\":\"object\",\"properties\":{\"name\":{\"const\":"
                                "\"tool_%03d\"},\"arguments\":{\"type\":\"object\","
                                "\"properties\":{", t ? "," : "", t);
        for (int a = 0; a < nargs; a++)
            len += (size_t)snprintf(s + len, cap - len, "%s\"arg%d\":%s", a ? "," : "", a,
                                    ARG_TYPES[(t + a) % 6]);
        len += (size_t)snprintf(s + len, cap - len, "},\"required\":[");
        for (int a = 0; a < nargs; a++)
            len += (size_t)snprintf(s + len, cap - len, "%s\"arg%d\"", a ? "," : "", a);
        len += (size_t)snprintf(s + len, cap - len, "],\"additionalProperties\":false}},"
                                "\"required\":[\"name\",\"arguments\"],"
                                "\"additionalProperties\":false}");
    }
    snprintf(s + len, cap - len, "]}");
    return s;
}

static char *tool_call(unsigned *seed)
{
    int t = (int)(rand_r(seed) % 300), nargs = 1 + t % 4;
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    len += (size_t)snprintf(s + len, cap - len, "{\"name\":\"tool_%03d\",\"arguments\":{", t);
    for (int a = 0; a < nargs; a++) {
        static const char *const vals[] = {"\"find the cheapest flight to Lisbon\"", "42", "true",
                                           "\"desc\"", "3.25", "[\"alpha\",\"beta\"]"};
        len += (size_t)snprintf(s + len, cap - len, "%s\"arg%d\":%s", a ? "," : "", a,
                                vals[(t + a) % 6]);
    }
    snprintf(s + len, cap - len, "}}");
    return s;
}

static int build_cases(schema_case_t *c)
{
    unsigned seed = 7;
    int n = 0;
    c[n] = (schema_case_t){.name = "nested objects", .schema = strdup(
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
        "\"integer\",\"minimum\":0,\"maximum\":150},\"email\":{\"type\":\"string\",\"format\":"
        "\"email\"},\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":"
        "\"string\"},\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\",\"pattern\":"
        "\"^[0-9]{5}$\"},\"country\":{\"enum\":[\"PT\",\"ES\",\"FR\",\"DE\",\"IT\",\"NL\",\"BE\","
        "\"US\",\"CA\",\"JP\"]}},\"required\":[\"city\",\"country\"]}},\"required\":[\"name\","
        "\"address\"]}")};
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"name\":\"Ana Lima\",\"age\":34,\"email\":\"ana.lima@example.org\",\"address\":"
        "{\"street\":\"Rua das Flores 12\",\"city\":\"Lisboa\",\"zip\":\"11000\",\"country\":\"PT\"}}");
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"address\":{\"country\":\"JP\",\"city\":\"Osaka\"},\"name\":\"Kenji\"}");
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"name\":\"Marie Curie\",\"address\":{\"city\":\"Paris\",\"country\":\"FR\","
        "\"street\":\"Rue Cuvier\"},\"age\":66}");
    n++;
    c[n] = (schema_case_t){.name = "enums", .schema = strdup(
        "{\"type\":\"object\",\"properties\":{\"status\":{\"enum\":[\"open\",\"triaged\","
        "\"in_progress\",\"blocked\",\"in_review\",\"approved\",\"merged\",\"deployed\","
        "\"verified\",\"closed\",\"wontfix\",\"duplicate\"]},\"priority\":{\"enum\":[\"low\","
        "\"medium\",\"high\",\"critical\"]},\"team\":{\"enum\":[\"core\",\"infra\",\"ml\",\"web\","
        "\"mobile\",\"data\",\"security\",\"docs\"]}},\"required\":[\"status\",\"priority\","
        "\"team\"],\"additionalProperties\":false}")};
    c[n].instances[c[n].n_instances++] =
        strdup("{\"status\":\"in_review\",\"priority\":\"high\",\"team\":\"infra\"}");
    c[n].instances[c[n].n_instances++] =
        strdup("{\"team\":\"docs\",\"status\":\"closed\",\"priority\":\"low\"}");
    n++;
    c[n] = (schema_case_t){.name = "array of objects", .schema = strdup(
        "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"minItems\":1,"
        "\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\",\"minimum\":1},"
        "\"name\":{\"type\":\"string\",\"maxLength\":40},\"price\":{\"type\":\"number\","
        "\"minimum\":0},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":5}},"
        "\"required\":[\"id\",\"name\",\"price\"]}},\"total\":{\"type\":\"number\"}},"
        "\"required\":[\"items\"]}")};
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"items\":[{\"id\":1,\"name\":\"espresso machine\",\"price\":249.99,\"tags\":[\"kitchen\","
        "\"coffee\"]},{\"id\":2,\"name\":\"grinder\",\"price\":89.5},{\"id\":17,\"name\":\"milk jug\","
        "\"price\":12,\"tags\":[]}],\"total\":351.49}");
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"items\":[{\"name\":\"desk lamp\",\"id\":300,\"price\":0.5,\"tags\":[\"office\",\"light\","
        "\"led\"]}]}");
    n++;
    char *t1 = sentence_text(&seed, 12), *b1 = sentence_text(&seed, 300);
    char *t2 = sentence_text(&seed, 8), *b2 = sentence_text(&seed, 200);
    c[n] = (schema_case_t){.name = "long free strings", .schema = strdup(
        "{\"type\":\"object\",\"properties\":{\"title\":{\"type\":\"string\"},\"summary\":{\"type\":"
        "\"string\"},\"body\":{\"type\":\"string\"}},\"required\":[\"title\",\"body\"]}")};
    c[n].instances[c[n].n_instances++] =
        fmt("{\"title\":\"%s\",\"summary\":\"%s\",\"body\":\"%s\"}", t1, t2, b1);
    c[n].instances[c[n].n_instances++] = fmt("{\"body\":\"%s\\n\\n%s\",\"title\":\"%s\"}", b2, b1, t2);
    free(t1);
    free(b1);
    free(t2);
    free(b2);
    n++;
    c[n] = (schema_case_t){.name = "formats", .schema = strdup(
        "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"
        "\"created\":{\"type\":\"string\",\"format\":\"date-time\"},\"day\":{\"type\":\"string\","
        "\"format\":\"date\"},\"ip\":{\"type\":\"string\",\"format\":\"ipv4\"}},\"required\":"
        "[\"id\",\"created\"]}")};
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"id\":\"3f2504e0-4f89-11d3-9a0c-0305e82c3301\",\"created\":\"2026-12-06T10:15:00Z\","
        "\"day\":\"2024-02-29\",\"ip\":\"192.168.1.20\"}");
    n++;
    c[n] = (schema_case_t){.name = "recursive tree", .schema = strdup(
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"label\":{\"type\":\"string\"},"
        "\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":"
        "[\"label\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}")};
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"label\":\"root\",\"children\":[{\"label\":\"src\",\"children\":[{\"label\":\"main.c\"},"
        "{\"label\":\"util.c\"}]},{\"label\":\"docs\",\"children\":[]}]}");
    n++;
    c[n] = (schema_case_t){.name = "json_object mode", .schema = NULL};
    c[n].instances[c[n].n_instances++] = strdup(
        "{\"answer\":\"yes\",\"confidence\":0.93,\"sources\":[{\"url\":\"https://example.org/a\","
        "\"rank\":1}],\"notes\":null,\"final\":true}");
    n++;
    c[n] = (schema_case_t){.name = "300 tools (anyOf)", .schema = tools_schema()};
    for (int i = 0; i < 12; i++)
        c[n].instances[c[n].n_instances++] = tool_call(&seed);
    n++;
    return n;
}

static nx_gram_t *compile(const schema_case_t *c, nx_err_t *err)
{
    if (!c->schema)
        return nx_gram_json_object(err);
    return nx_gram_from_json_schema(c->schema, strlen(c->schema), NULL, err);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER_DIR [--reps N]\n", argv[0]);
        return 2;
    }
    int reps = 20;
    bool check = false; /* every mask of each first instance compared with accept_token */
    for (int a = 2; a < argc; a++) {
        if (!strcmp(argv[a], "--reps") && a + 1 < argc)
            reps = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--check"))
            check = true;
    }
    size_t checked = 0, wrong = 0;
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(argv[1], &err);
    if (!tok) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int32_t eos = nx_tokenizer_token_id(tok, "<|im_end|>");
    if (eos < 0)
        eos = nx_tokenizer_token_id(tok, "<|eot_id|>");
    uint64_t t0 = nx_now_ns();
    nx_gram_vocab_t *v = nx_gram_vocab_from_tokenizer(tok, &eos, 1, &err);
    if (!v) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("vocabulary: %s, %u ids, token trie built in %.1f ms\n", argv[1],
           nx_gram_vocab_size(v), (double)(nx_now_ns() - t0) / 1e6);
    schema_case_t cases[16];
    int n_cases = build_cases(cases);
    size_t words = nx_gram_mask_words(v), cap_all = 1 << 16, n_all = 0, failures = 0;
    uint32_t *mask = malloc(words * sizeof *mask);
    double *all = malloc(cap_all * sizeof *all), compile_sum = 0;
    size_t cap_warm = 1 << 16, n_warm = 0;
    double *warm = malloc(cap_warm * sizeof *warm), warm_sum = 0;
    double matcher_sum = 0, matcher_max = 0; /* nx_gram_matcher_new, µs */
    printf("| schema | rules / terminals / DFA states | compile ms (mean of %d) | masks | mask µs "
           "mean | p50 | p99 | max | first instance mean |\n|---|---|---:|---:|---:|---:|---:|"
           "---:|---:|\n", reps);
    for (int ci = 0; ci < n_cases; ci++) {
        schema_case_t *c = &cases[ci];
        int r = c->schema && strlen(c->schema) > 100000 ? 5 : reps;
        uint64_t start = nx_now_ns();
        nx_gram_t *g = NULL;
        for (int k = 0; k < r; k++) {
            nx_gram_destroy(&g);
            g = compile(c, &err);
            if (!g) {
                fprintf(stderr, "%s: %s\n", c->name, err.msg);
                return 1;
            }
        }
        double compile_ms = (double)(nx_now_ns() - start) / 1e6 / r;
        compile_sum += compile_ms;
        uint32_t rules, terms, states;
        nx_gram_stats(g, &rules, &terms, &states);
        uint64_t made = nx_now_ns();
        nx_gram_matcher_t *m = nx_gram_matcher_new(g, v, &err);
        double matcher_us = (double)(nx_now_ns() - made) / 1e3;
        matcher_sum += matcher_us;
        if (matcher_us > matcher_max)
            matcher_max = matcher_us;
        double *times = malloc(65536 * sizeof *times), first_sum = 0;
        size_t n_times = 0, first_n = 0;
        for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < c->n_instances; i++) {
            int32_t *ids;
            size_t n_ids;
            if (nx_tokenizer_encode(tok, c->instances[i], strlen(c->instances[i]), &ids, &n_ids,
                                    &err) != NX_OK) {
                fprintf(stderr, "encode: %s\n", err.msg);
                return 1;
            }
            nx_gram_matcher_reset(m);
            for (size_t k = 0; k <= n_ids; k++) {
                uint64_t a = nx_now_ns();
                int rc = nx_gram_matcher_mask(m, mask, &err);
                double us = (double)(nx_now_ns() - a) / 1e3;
                if (rc != NX_OK) {
                    fprintf(stderr, "mask: %s\n", err.msg);
                    return 1;
                }
                if (pass == 1) { /* the same instances again: a matcher kept across them */
                    if (n_warm == cap_warm)
                        warm = realloc(warm, (cap_warm *= 2) * sizeof *warm);
                    warm[n_warm++] = us;
                    warm_sum += us;
                } else
                    times[n_times++] = us;
                if (us > 5000 && getenv("BENCH_GRAMMAR_SLOW")) /* where a slow mask happens */
                    fprintf(stderr, "slow mask %.0f us: %s, instance %d, token %zu\n", us,
                            c->name, i, k);
                if (i == 0 && pass == 0) {
                    first_sum += us;
                    first_n++;
                }
                if (check && i == 0 && pass == 0) { /* outside the timing */
                    nx_gram_state_t st = nx_gram_matcher_state(m);
                    for (uint32_t t = 0; t < nx_gram_vocab_size(v); t++) {
                        bool bit = mask[t >> 5] >> (t & 31) & 1;
                        bool ok = nx_gram_matcher_accept_token(m, (int32_t)t, NULL) == NX_OK;
                        nx_gram_matcher_set_state(m, st);
                        wrong += bit != ok;
                    }
                    checked++;
                }
                int32_t id = k < n_ids ? ids[k] : eos;
                if (!(mask[id >> 5] >> (id & 31) & 1)) {
                    fprintf(stderr, "%s: instance %d token %zu (id %d) not in its mask\n",
                            c->name, i, k, id);
                    failures++;
                    break;
                }
                if (k < n_ids && nx_gram_matcher_accept_token(m, id, NULL) != NX_OK) {
                    fprintf(stderr, "%s: instance %d token %zu refused\n", c->name, i, k);
                    failures++;
                    break;
                }
            }
            free(ids);
        }
        for (size_t k = 0; k < n_times; k++) {
            if (n_all == cap_all)
                all = realloc(all, (cap_all *= 2) * sizeof *all);
            all[n_all++] = times[k];
        }
        double sum = 0;
        for (size_t k = 0; k < n_times; k++)
            sum += times[k];
        qsort(times, n_times, sizeof *times, cmp_double);
        printf("| %s | %u / %u / %u | %.3f | %zu | %.1f | %.1f | %.1f | %.0f | %.1f |\n", c->name,
               rules, terms, states, compile_ms, n_times, sum / (double)n_times,
               times[n_times / 2], times[(size_t)(0.99 * (double)(n_times - 1))],
               times[n_times - 1], first_sum / (double)first_n);
        free(times);
        nx_gram_matcher_destroy(&m);
        nx_gram_destroy(&g);
    }
    double sum = 0;
    for (size_t k = 0; k < n_all; k++)
        sum += all[k];
    qsort(all, n_all, sizeof *all, cmp_double);
    printf("all: %zu masks, mean %.1f µs, p50 %.1f, p99 %.1f, max %.0f; compile mean %.3f ms "
           "over %d schemas; %zu tokens missing from their mask\n", n_all, sum / (double)n_all,
           all[n_all / 2], all[(size_t)(0.99 * (double)(n_all - 1))], all[n_all - 1],
           compile_sum / n_cases, n_cases, failures);
    printf("matcher creation (nx_gram_matcher_new, once per schema): mean %.1f µs, max %.0f\n",
           matcher_sum / n_cases, matcher_max);
    if (check)
        printf("--check: %zu masks compared with the matcher for all %u ids: %zu differ\n",
               checked, nx_gram_vocab_size(v), wrong);
    qsort(warm, n_warm, sizeof *warm, cmp_double);
    printf("second pass, the same instances through the same matchers (reset between them): "
           "%zu masks, mean %.1f µs, p50 %.1f, p99 %.1f, max %.0f\n", n_warm,
           warm_sum / (double)n_warm, warm[n_warm / 2],
           warm[(size_t)(0.99 * (double)(n_warm - 1))], warm[n_warm - 1]);
    free(warm);
    for (int ci = 0; ci < n_cases; ci++) {
        free(cases[ci].schema);
        for (int i = 0; i < cases[ci].n_instances; i++)
            free(cases[ci].instances[i]);
    }
    free(all);
    free(mask);
    nx_gram_vocab_destroy(&v);
    nx_tokenizer_destroy(&tok);
    return failures || wrong ? 1 : 0;
}
