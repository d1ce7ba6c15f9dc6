/* test_toolset.c — a request's tools compiled for a model (nexus/toolset.h) on the committed
 * Qwen3 and Llama 3 tokenizers: the family and the plan each choice gets, the errors a request
 * can cause (a schema the compiler refuses, a choice naming no tool, a model with no tool
 * format), and the cache: the same tools, choice and flag on the same tokenizer compile once,
 * anything else that shapes the plan compiles again, and the least recently used goes first.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "nx_engine.h"
#include "toolset.h"

#define FIXTURES "tests/fixtures/tokenizer"
#include "tok_fixture.h"

#define TOOLS "[{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":" \
              "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}," \
              "\"required\":[\"a\"]}}}]"
#define BAD_TOOLS "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":" \
                  "{\"type\":\"object\",\"properties\":{\"m\":{\"type\":\"object\"," \
                  "\"patternProperties\":{\"^a\":{}}}}}}}]"

typedef struct toks {
    char dir[64];
    nx_tokenizer_t *qwen3, *llama3;
} toks_t;

static int setup(void **state)
{
    toks_t *t = calloc(1, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/nx-toolset-XXXXXX");
    if (!mkdtemp(t->dir))
        return -1;
    t->qwen3 = unpack(t->dir, "qwen3");
    t->llama3 = unpack(t->dir, "llama3");
    *state = t;
    return t->qwen3 && t->llama3 ? 0 : -1;
}

static int teardown(void **state)
{
    toks_t *t = *state;
    nx_tokenizer_destroy(&t->qwen3);
    nx_tokenizer_destroy(&t->llama3);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", t->dir);
    if (system(cmd) != 0)
        return -1;
    free(t);
    return 0;
}

static void test_families_and_choices(void **state)
{
    toks_t *t = *state;
    nx_err_t err = {0};
    nx_toolset_t *set = NULL;
    assert_int_equal(nx_toolset_new(t->qwen3, TOOLS, NULL, true, &set, &err), NX_OK);
    assert_int_equal(nx_toolset_family(set), NX_TOOLS_HERMES);
    assert_int_equal(nx_toolset_choice(set), NX_TOOL_CHOICE_AUTO);
    assert_true(nx_toolset_plan(set)->lazy);
    assert_non_null(nx_toolset_plan(set)->gram);
    assert_string_equal(nx_toolset_tools_json(set), TOOLS);
    nx_toolset_t *again = nx_toolset_ref(set);
    nx_toolset_release(&set);
    assert_null(set);
    assert_int_equal(nx_toolset_family(again), NX_TOOLS_HERMES); /* still alive */
    nx_toolset_release(&again);
    nx_toolset_release(&again); /* NULL: fine */

    assert_int_equal(nx_toolset_new(t->qwen3, TOOLS, "\"none\"", true, &set, &err), NX_OK);
    assert_null(nx_toolset_plan(set)->gram);
    assert_true(nx_toolset_plan(set)->n_banned_ids >= 1); /* <tool_call> */
    nx_toolset_release(&set);

    assert_int_equal(nx_toolset_new(t->llama3, TOOLS, "\"required\"", false, &set, &err), NX_OK);
    assert_int_equal(nx_toolset_family(set), NX_TOOLS_LLAMA3_JSON);
    assert_false(nx_toolset_plan(set)->lazy);
    nx_toolset_release(&set);
}

static void test_errors_name_the_field(void **state)
{
    toks_t *t = *state;
    nx_err_t err = {0};
    nx_toolset_t *set = NULL;
    assert_int_equal(nx_toolset_new(t->qwen3, BAD_TOOLS, NULL, true, &set, &err), NX_ENOTSUP);
    assert_null(set);
    assert_non_null(strstr(err.msg, "tools[0].function.parameters"));
    assert_non_null(strstr(err.msg, "patternProperties"));
    assert_non_null(strstr(err.msg, "/properties/m"));

    err = (nx_err_t){0};
    const char *named = "{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}";
    assert_int_equal(nx_toolset_new(t->qwen3, TOOLS, named, true, &set, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "nope"));

    err = (nx_err_t){0};
    /* no tokenizer to tell a family (any template or tool token would: tools_family.c) */
    assert_int_equal(nx_toolset_new(NULL, TOOLS, NULL, true, &set, &err), NX_ENOTSUP);
    assert_non_null(strstr(err.msg, "no known tool-call format"));

    err = (nx_err_t){0};
    assert_int_equal(nx_toolset_new(t->qwen3, "[{\"type\":\"function\"}]", NULL, true, &set,
                                    &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "tools[0]"));
}

static void test_cache(void **state)
{
    toks_t *t = *state;
    nx_err_t err = {0};
    nx_toolset_cache_t *cache = nx_toolset_cache_new(2);
    nx_toolset_t *a = NULL, *b = NULL, *c = NULL;
    size_t compiled, hits;
    assert_int_equal(nx_toolset_cache_get(cache, t->qwen3, TOOLS, NULL, true, &a, &err), NX_OK);
    assert_int_equal(nx_toolset_cache_get(cache, t->qwen3, TOOLS, NULL, true, &b, &err), NX_OK);
    assert_ptr_equal(a, b); /* one compile, one shared plan */
    nx_toolset_cache_counts(cache, &compiled, &hits);
    assert_int_equal(compiled, 1);
    assert_int_equal(hits, 1);
    nx_toolset_release(&b);
    /* what shapes the plan: the choice, the flag, the tokenizer */
    assert_int_equal(nx_toolset_cache_get(cache, t->qwen3, TOOLS, "\"required\"", true, &b,
                                          &err), NX_OK);
    assert_ptr_not_equal(a, b);
    assert_int_equal(nx_toolset_cache_get(cache, t->qwen3, TOOLS, NULL, false, &c, &err), NX_OK);
    assert_ptr_not_equal(a, c);
    nx_toolset_release(&b);
    nx_toolset_release(&c);
    nx_toolset_cache_counts(cache, &compiled, &hits);
    assert_int_equal(compiled, 3);
    /* capacity 2: the first (least recently used) went; a is still valid (its reference) */
    assert_int_equal(nx_toolset_cache_get(cache, t->qwen3, TOOLS, NULL, true, &b, &err), NX_OK);
    assert_ptr_not_equal(a, b);
    assert_int_equal(nx_toolset_family(a), NX_TOOLS_HERMES);
    nx_toolset_release(&b);
    assert_int_equal(nx_toolset_cache_get(cache, t->llama3, TOOLS, NULL, true, &b, &err), NX_OK);
    assert_int_equal(nx_toolset_family(b), NX_TOOLS_LLAMA3_JSON);
    nx_toolset_release(&b);
    /* an error is not cached */
    assert_int_equal(nx_toolset_cache_get(cache, t->qwen3, BAD_TOOLS, NULL, true, &b, &err),
                     NX_ENOTSUP);
    assert_null(b);
    nx_toolset_release(&a);
    nx_toolset_cache_destroy(&cache);
    assert_null(cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_and_choices),
        cmocka_unit_test(test_errors_name_the_field),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
