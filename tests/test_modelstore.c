/* test_modelstore.c — nexus/hub/modelstore.c without files: which texts are hub names and how they
 * split (nx_ms_parse_name), the repo folder name, the Hugging Face cache folders the
 * environment gives, and the name forms nx_ms_resolve tells apart before it looks anything up.
 * Lookups in real stores are tests/test_model_store.py's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modelstore.h"

static void test_valid_names(void **state)
{
    char org96[97], rev128[129], long_name[400];
    memset(org96, 'a', 96);
    org96[96] = '\0';
    memset(rev128, 'r', 128);
    rev128[128] = '\0';
    static const struct {
        const char *text, *repo, *rev;
        bool rev_given;
    } cases[] = {
        {"Org/Name", "Org/Name", "main", false},
        {"Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", "main", false},
        {"o.r_g-1/N.a_m-e@v1.0", "o.r_g-1/N.a_m-e", "v1.0", true},
        {"a/b@refs/pr/1", "a/b", "refs/pr/1", true},
        {"0rg/9@0123456789abcdef0123456789abcdef01234567", "0rg/9",
         "0123456789abcdef0123456789abcdef01234567", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nx_ms_name_t n;
        memset(&n, 0x55, sizeof n);
        if (!nx_ms_parse_name(cases[i].text, &n))
            fail_msg("'%s' is a hub name", cases[i].text);
        assert_string_equal(n.repo, cases[i].repo);
        assert_string_equal(n.rev, cases[i].rev);
        assert_int_equal(n.rev_given, cases[i].rev_given);
        assert_true(nx_ms_parse_name(cases[i].text, NULL)); /* out may be NULL */
    }
    snprintf(long_name, sizeof long_name, "%s/%s@%s", org96, org96, rev128); /* at the limits */
    nx_ms_name_t n;
    assert_true(nx_ms_parse_name(long_name, &n));
    assert_int_equal(strlen(n.repo), 193);
    assert_string_equal(n.rev, rev128);
}

static void test_invalid_names(void **state)
{
    char org97[120], rev129[160];
    snprintf(org97, sizeof org97, "%0*d/Name", 97, 0);
    snprintf(rev129, sizeof rev129, "Org/Name@%0*d", 129, 0);
    const char *bad[] = {
        "", "Org", "/Name", "Org/", "Org/Name/extra", "-Org/Name", "Org/.Name", "Org/_Name",
        "Org/Name.", "Org./Name", "Org/Na--me", "Or--g/Name", "Org/Na..me", "Org/Name@",
        "Org/Name@../x", "Org/Name@a/../b", "Org/Name@/x", "Org/Name@x/", "Org/Name@a b",
        "Org/Name@v1@v2", "./Org/Name", "../Org/Name", "Org/Na me", "Org/Näme", "Org@v1/Name",
        "Org/Name@v1;rm", org97, rev129, NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        nx_ms_name_t n = {.repo = "untouched"};
        if (nx_ms_parse_name(bad[i], &n))
            fail_msg("'%s' is no hub name", bad[i]);
        assert_string_equal(n.repo, "untouched"); /* out is filled only when true */
    }
    assert_false(nx_ms_parse_name(NULL, NULL));
}

static void test_repo_dir(void **state)
{
    char *dir = nx_ms_repo_dir("/srv/models", "Qwen/Qwen3-0.6B");
    assert_string_equal(dir, "/srv/models/models--Qwen--Qwen3-0.6B");
    free(dir);
    assert_null(nx_ms_repo_dir("/srv/models", "no-slash"));
}

static void set_env(const char *hub, const char *hf_home, const char *xdg, const char *home)
{
    const char *names[] = {"HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"};
    const char *values[] = {hub, hf_home, xdg, home};
    for (int i = 0; i < 4; i++) {
        if (values[i])
            setenv(names[i], values[i], 1);
        else
            unsetenv(names[i]);
    }
}

static void expect_roots(const char *const *want, size_t want_count)
{
    char **roots = NULL;
    size_t count = 0;
    assert_int_equal(nx_ms_hf_roots(&roots, &count), NX_OK);
    assert_int_equal(count, want_count);
    for (size_t i = 0; i < count; i++)
        assert_string_equal(roots[i], want[i]);
    nx_ms_free_roots(roots, count);
}

static void test_hf_roots(void **state)
{
    set_env("/a", "/b", "/c", "/d");
    expect_roots((const char *[]){"/a", "/b/hub", "/c/huggingface/hub",
                                  "/d/.cache/huggingface/hub"}, 4);
    set_env("/b/hub/", "/b", NULL, "/d"); /* the same folder twice is looked in once */
    expect_roots((const char *[]){"/b/hub", "/d/.cache/huggingface/hub"}, 2);
    set_env(NULL, NULL, NULL, NULL);
    expect_roots(NULL, 0);
    set_env("rel/hub", NULL, NULL, NULL); /* relative: to the working folder */
    char *cwd = getcwd(NULL, 0), want[4200];
    snprintf(want, sizeof want, "%s/rel/hub", cwd);
    expect_roots((const char *[]){want}, 1);
    free(cwd);
}

static void expect_resolved(const char *name, const char *models_dir, const char *base,
                            nx_ms_source_t source, const char *path)
{
    nx_ms_model_t m;
    nx_err_t err = {0};
    if (nx_ms_resolve(name, models_dir, base, &m, &err) != NX_OK)
        fail_msg("'%s': %s", name, err.msg);
    assert_int_equal(m.source, source);
    assert_string_equal(m.path, path);
    assert_null(m.repo_dir);
    assert_string_equal(m.commit, "");
    nx_ms_model_clear(&m);
}

static void test_resolve_forms(void **state)
{
    set_env("/nonexistent-nx-hub", NULL, NULL, "/nonexistent-nx-home");
    expect_resolved("demo", "/m", "/agents", NX_MS_FOLDER, "/m/demo");
    expect_resolved("demo.gguf", "/m", "/agents", NX_MS_FOLDER, "/m/demo.gguf");
    expect_resolved("./x", "/m", "/agents", NX_MS_PATH, "/agents/x");
    expect_resolved("../x", "/m", "/agents/sub", NX_MS_PATH, "/agents/x");
    expect_resolved("/abs/x", "/m", "/agents", NX_MS_PATH, "/abs/x");
    expect_resolved("a/b/c", "/m", "/agents", NX_MS_PATH, "/agents/a/b/c"); /* no hub name */
    expect_resolved("a/.b", NULL, "/agents", NX_MS_PATH, "/agents/a/.b");

    nx_ms_model_t m;
    nx_err_t err = {0};
    assert_int_equal(nx_ms_resolve("demo", NULL, "/agents", &m, &err), NX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "model 'demo': no models folder"));
    assert_int_equal(nx_ms_resolve("", "/m", NULL, &m, &err), NX_EINVAL);
    assert_int_equal(nx_ms_resolve("Org/Name@v1", "/nonexistent-nx-models", "/nonexistent-nx",
                                   &m, &err),
                     NX_ENOTFOUND);
    assert_string_equal(err.msg, "model 'Org/Name@v1' not found in /nonexistent-nx-models or "
                                 "the Hugging Face cache (/nonexistent-nx-hub, "
                                 "/nonexistent-nx-home/.cache/huggingface/hub): run `nexusctl "
                                 "pull Org/Name@v1`");
    assert_null(m.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_names),   cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_repo_dir),      cmocka_unit_test(test_hf_roots),
        cmocka_unit_test(test_resolve_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
