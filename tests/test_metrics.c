/* test_metrics.c — the router's counters (nexus/metrics.c): histogram buckets and their
 * edges, task ends by status, and a model's loads, evictions and resident time through a
 * sequence of residency events as the executor reports them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "metrics.h"

static void test_histogram_buckets(void **state)
{
    nx_histogram_t h = {0};
    nx_metrics_observe(&h, 0.005);  /* on a bound: that bucket (le is <=) */
    nx_metrics_observe(&h, 0.0051); /* just over: the next */
    nx_metrics_observe(&h, 0);
    nx_metrics_observe(&h, 1000);   /* past the last bound: +Inf */
    nx_metrics_observe(&h, -1);     /* a clock oddity counts as 0 */
    assert_int_equal(h.counts[0], 3);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[NX_METRICS_BUCKETS], 1);
    assert_int_equal(h.count, 5);
    assert_true(fabs(h.sum_s - 1000.0101) < 1e-9);
}

static void test_task_ends(void **state)
{
    nx_metrics_t m;
    assert_int_equal(nx_metrics_init(&m, 2), NX_OK);
    nx_task_timings_t t = {.queue_ms = 2, .swap_ms = 0, .ttft_ms = 40, .total_ms = 3000};
    nx_metrics_task_end(&m, 1, NX_TASK_DONE, 10, 20, &t);
    nx_metrics_task_end(&m, 1, NX_TASK_FAILED, 5, 0, &t);
    nx_metrics_task_end(&m, 0, NX_TASK_CANCELED, 3, 2, &t);
    nx_metrics_task_end(&m, 7, NX_TASK_DONE, 1, 1, &t); /* no such agent: ignored */
    assert_int_equal(m.agents[1].done, 1);
    assert_int_equal(m.agents[1].failed, 1);
    assert_int_equal(m.agents[0].canceled, 1);
    assert_int_equal(m.agents[1].prompt_tokens, 15);
    assert_int_equal(m.agents[1].completion_tokens, 20);
    /* only the done task is in the histograms */
    assert_int_equal(m.hist[NX_HIST_TOTAL].count, 1);
    assert_int_equal(m.hist[NX_HIST_TOTAL].counts[9], 1);  /* 3 s: (2.5, 5] */
    assert_int_equal(m.hist[NX_HIST_TTFT].counts[3], 1);   /* 0.04 s: (0.025, 0.05] */
    nx_metrics_refused(&m, "busy");
    nx_metrics_refused(&m, "busy");
    nx_metrics_refused(&m, "no_such_code"); /* not a refusal code: ignored */
    nx_metrics_refused(&m, NULL);
    assert_string_equal(nx_metrics_refusal_codes[3], "busy");
    assert_int_equal(m.refused[3], 2);
    uint64_t total = 0;
    for (size_t i = 0; i < NX_METRICS_REFUSALS; i++)
        total += m.refused[i];
    assert_int_equal(total, 2);
    nx_metrics_clear(&m);
}

static void test_model_events(void **state)
{
    nx_metrics_t m;
    assert_int_equal(nx_metrics_init(&m, 0), NX_OK);
    const uint64_t s = 1000000000ull;
    nx_metrics_model_event(&m, "tq", "loading", 100, 0, 1 * s);
    nx_metrics_model_event(&m, "tq", "resident", 100, 250, 2 * s);
    nx_metrics_model_event(&m, "tq", "evicting", 100, 0, 12 * s);
    nx_metrics_model_event(&m, "tq", "host", 100, 50, 13 * s);
    nx_metrics_model_event(&m, "tq", "loading", 100, 0, 20 * s);
    nx_metrics_model_event(&m, "tq", "disk", 100, 5, 21 * s); /* a load that failed */
    nx_metrics_model_event(&m, "tl", "loading", 7, 0, 30 * s);
    nx_metrics_model_event(&m, "tl", "resident", 7, 10, 31 * s);
    assert_int_equal(m.model_count, 2);
    nx_model_metrics_t *tq = &m.models[0], *tl = &m.models[1];
    assert_string_equal(tq->name, "tq");
    assert_int_equal(tq->loads, 1);
    assert_int_equal(tq->load_bytes, 100);
    assert_true(fabs(tq->load_s - 0.25) < 1e-12);
    assert_int_equal(tq->load_failures, 1);
    assert_int_equal(tq->evictions, 1);
    assert_true(fabs(tq->evict_s - 0.05) < 1e-12);
    assert_true(fabs(nx_metrics_resident_s(tq, 40 * s) - 10.0) < 1e-9); /* 2 s .. 12 s */
    assert_true(fabs(nx_metrics_resident_s(tl, 40 * s) - 9.0) < 1e-9);  /* still resident */
    nx_metrics_clear(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_task_ends),
        cmocka_unit_test(test_model_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
