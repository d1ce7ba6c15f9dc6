/* test_policy.c — the eviction victim rules of nexus/policy.c, one by one: pinned and running
 * models are never chosen, nor models that are not resident; models with queued tasks only
 * when nothing else frees enough; priority before cost; cost ordering; LRU ordering; the
 * impossible case; no victims when the pool already has room. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy.h"

#define MIB (1ull << 20)

/* A resident, idle, unpinned model of `mib` MiB with the given cost inputs. */
static nx_policy_model_t model(uint64_t mib, double reload_ms, double recent_use)
{
    return (nx_policy_model_t){.resident = true, .bytes = mib * MIB, .reload_ms = reload_ms,
                               .recent_use = recent_use, .last_used_ns = 1};
}

static int victims(nx_policy_t policy, const nx_policy_model_t *models, size_t count,
                   uint64_t free_mib, uint64_t need_mib, size_t *out, size_t *n)
{
    return nx_policy_victims(policy, models, count, free_mib * MIB, need_mib * MIB, out, n);
}

static void test_no_victims_when_it_fits(void **state)
{
    nx_policy_model_t m[1] = {model(4, 100, 1)};
    size_t out[1], n = 99;
    assert_int_equal(victims(NX_POLICY_COST, m, 1, 8, 8, out, &n), NX_OK);
    assert_int_equal(n, 0);
}

static void test_pinned_running_and_absent_never(void **state)
{
    nx_policy_model_t m[4] = {model(8, 1, 0), model(8, 1, 0), model(8, 1, 0), model(2, 900, 9)};
    m[0].pinned = true;
    m[1].running = 1;
    m[2].resident = false;
    size_t out[4], n = 0;
    assert_int_equal(victims(NX_POLICY_COST, m, 4, 0, 2, out, &n), NX_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 3); /* the only allowed one, however costly */
    assert_int_equal(victims(NX_POLICY_LRU, m, 4, 0, 2, out, &n), NX_OK);
    assert_int_equal(out[0], 3);
}

static void test_impossible(void **state)
{
    nx_policy_model_t m[3] = {model(8, 1, 0), model(8, 1, 0), model(2, 1, 0)};
    m[0].pinned = true;
    m[1].running = 3;
    size_t out[3], n = 7;
    assert_int_equal(victims(NX_POLICY_COST, m, 3, 1, 4, out, &n), NX_EPOOLFULL);
    assert_int_equal(n, 0);
    assert_int_equal(victims(NX_POLICY_LRU, m, 3, 1, 4, out, &n), NX_EPOOLFULL);
    assert_int_equal(n, 0);
}

static void test_queued_only_when_needed(void **state)
{
    nx_policy_model_t m[2] = {model(4, 1, 0), model(4, 5000, 50)};
    m[0].queued = 2; /* the cheapest, but tasks wait for it */
    size_t out[2], n = 0;
    assert_int_equal(victims(NX_POLICY_COST, m, 2, 0, 4, out, &n), NX_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 1);
    assert_int_equal(victims(NX_POLICY_COST, m, 2, 0, 8, out, &n), NX_OK); /* both needed */
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 0);
}

static void test_priority_before_cost(void **state)
{
    nx_policy_model_t m[2] = {model(4, 1, 0), model(4, 5000, 50)};
    m[0].priority = 10; /* cheap but important */
    size_t out[2], n = 0;
    assert_int_equal(victims(NX_POLICY_COST, m, 2, 0, 4, out, &n), NX_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 1);
}

static void test_cost_ordering(void **state)
{
    /* cost = reload_ms x recent_use / bytes */
    nx_policy_model_t m[4] = {
        model(4, 1000, 10), /* 2500 per MiB: rarely cheap */
        model(4, 1000, 1),  /*  250 */
        model(16, 1000, 2), /*  125: large frees much */
        model(4, 100, 1),   /*   25: reloads fast */
    };
    assert_true(nx_policy_cost(&m[3]) < nx_policy_cost(&m[2]));
    assert_true(nx_policy_cost(&m[2]) < nx_policy_cost(&m[1]));
    assert_true(nx_policy_cost(&m[1]) < nx_policy_cost(&m[0]));
    size_t out[4], n = 0;
    assert_int_equal(victims(NX_POLICY_COST, m, 4, 0, 28, out, &n), NX_OK);
    assert_int_equal(n, 4);
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 2);
    assert_int_equal(out[2], 1);
    assert_int_equal(out[3], 0);
    assert_int_equal(victims(NX_POLICY_COST, m, 4, 0, 4, out, &n), NX_OK);
    assert_int_equal(n, 1); /* stops as soon as enough is free */
    assert_int_equal(out[0], 3);
    assert_int_equal(victims(NX_POLICY_COST, m, 4, 2, 18, out, &n), NX_OK);
    assert_int_equal(n, 2); /* 2 free + 4 + 16 >= 18 */
}

static void test_lru_ordering(void **state)
{
    nx_policy_model_t m[3] = {model(4, 100, 1), model(4, 1, 100), model(4, 9, 9)};
    m[0].last_used_ns = 300;
    m[1].last_used_ns = 200; /* costly to lose, but least recently used */
    m[2].last_used_ns = 100;
    m[0].priority = 50; /* LRU ignores priority */
    size_t out[3], n = 0;
    assert_int_equal(victims(NX_POLICY_LRU, m, 3, 0, 12, out, &n), NX_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 0);
    assert_int_equal(victims(NX_POLICY_COST, m, 3, 0, 4, out, &n), NX_OK);
    assert_int_equal(out[0], 2); /* cost: 9*9 < 100*1... */
    m[2].recent_use = 1000;
    assert_int_equal(victims(NX_POLICY_COST, m, 3, 0, 4, out, &n), NX_OK);
    assert_int_equal(out[0], 1); /* ...until model 2 is used much: 1*100 is cheapest */
}

static void test_decay(void **state)
{
    assert_true(nx_policy_decay(0) == 1.0);
    double half = nx_policy_decay((uint64_t)(NX_POLICY_HALF_LIFE_S * 1e9));
    assert_true(half > 0.49 && half < 0.51);
    assert_true(nx_policy_decay(3600ull * 1000000000ull) < 0.01);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_victims_when_it_fits),
        cmocka_unit_test(test_pinned_running_and_absent_never),
        cmocka_unit_test(test_impossible),
        cmocka_unit_test(test_queued_only_when_needed),
        cmocka_unit_test(test_priority_before_cost),
        cmocka_unit_test(test_cost_ordering),
        cmocka_unit_test(test_lru_ordering),
        cmocka_unit_test(test_decay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
