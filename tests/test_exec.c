/* test_exec.c — the executor end to end on the CPU backend: tiny synthesized models in a temp
 * dir, a config built in code, reports collected through an nx_mailbox. Every wait is bounded
 * (WAIT_MS); nothing asserts on timing figures beyond their order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "exec.h"
#include "mailbox.h"
#include "synth.h"

#define WAIT_MS 20000
#define MAX_LOG 4096

static char root[128];
static char model_a[256], model_b[256], model_bad[256];

typedef struct fixture {
    nx_nexus_conf_t conf;
    nx_agent_conf_t agents[4];
    nx_mailbox_t *mb;
    nx_exec_t *exec;
    nx_report_t *log[MAX_LOG]; /* every report seen, in order */
    size_t log_count;
} fixture_t;

static void on_report(void *user, nx_report_t *report)
{
    fixture_t *fx = user;
    if (!nx_mailbox_push(fx->mb, report))
        nx_report_free(report);
}

static int synth(const char *dir, nx_synth_arch_t arch)
{
    nx_synth_opts_t o = {.arch = arch, .preset = NX_SYNTH_TINY, .out_dir = dir, .seed = 7,
                         .dtype = NX_DT_BF16, .shards = 1};
    nx_err_t err = {0};
    return nx_synth_model(&o, NULL, &err);
}

static int group_setup(void **state)
{
    snprintf(root, sizeof root, "/tmp/nx-exec-test-XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(model_a, sizeof model_a, "%s/qwen-a", root);
    snprintf(model_b, sizeof model_b, "%s/llama-b", root);
    snprintf(model_bad, sizeof model_bad, "%s/broken", root);
    if (synth(model_a, NX_SYNTH_QWEN3) != NX_OK || synth(model_b, NX_SYNTH_LLAMA) != NX_OK)
        return -1;
    /* A model whose config and tokenizer are fine but whose weights are garbage. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/config.json %s/tokenizer.json "
             "%s/tokenizer_config.json %s/ && printf 'not a safetensors file' > "
             "%s/model.safetensors", model_bad, model_a, model_a, model_a, model_bad, model_bad);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static nx_agent_conf_t agent(const char *name, const char *model_path, uint32_t max_tokens)
{
    nx_agent_conf_t a = {.name = (char *)name, .description = "", .model = (char *)model_path,
                         .model_path = (char *)model_path, .chat_template = NX_CHAT_AUTO,
                         .thinking = -1, .generation = nx_sampling_default(),
                         .queue_limit = 64, .timeout_ms = 300000, .memory_turns = 20};
    a.generation.max_tokens = max_tokens;
    return a;
}

static fixture_t *fixture(size_t agent_count, const nx_agent_conf_t *agents, uint64_t pool_mib,
                          uint32_t max_batch, uint32_t context)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    memcpy(fx->agents, agents, agent_count * sizeof *agents);
    fx->conf = (nx_nexus_conf_t){.device = NX_DEVICE_CPU, .pool_bytes = pool_mib << 20,
                                 .max_batch = max_batch, .context = context,
                                 .agents = fx->agents, .agent_count = agent_count};
    fx->mb = nx_mailbox_new();
    assert_non_null(fx->mb);
    return fx;
}

static void start(fixture_t *fx, nx_policy_t policy)
{
    nx_err_t err = {0};
    nx_exec_opts_t opts = {.conf = &fx->conf, .policy = policy, .report = on_report,
                           .report_user = fx};
    fx->exec = nx_exec_new(&opts, &err);
    if (!fx->exec)
        fail_msg("nx_exec_new: %s", err.msg);
}

static void report_free_item(void *item) { nx_report_free(item); }

static void finish_fixture(fixture_t *fx)
{
    nx_exec_destroy(&fx->exec);
    nx_exec_destroy(&fx->exec); /* safe twice */
    nx_mailbox_destroy(&fx->mb, report_free_item);
    for (size_t i = 0; i < fx->log_count; i++)
        nx_report_free(fx->log[i]);
    free(fx);
}

static nx_exec_task_t *task(const nx_agent_conf_t *a, int64_t id, const char *input, bool stream)
{
    nx_exec_task_t *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->task_id = id;
    t->agent = a;
    t->input = strdup(input);
    t->sampling = a->generation;
    t->stream = stream;
    t->accepted_ns = nx_now_ns();
    return t;
}

typedef bool (*match_fn)(const nx_report_t *r, const void *arg);

/* Wait (bounded) for a report that matches; every report seen is kept in the log. */
static const nx_report_t *wait_for(fixture_t *fx, match_fn match, const void *arg)
{
    for (size_t i = 0; i < fx->log_count; i++)
        if (match(fx->log[i], arg))
            return fx->log[i];
    uint64_t deadline = nx_now_ns() + (uint64_t)WAIT_MS * 1000000ull;
    while (nx_now_ns() < deadline) {
        if (!nx_mailbox_wait(fx->mb, 100))
            continue;
        nx_report_t *r = nx_mailbox_pop(fx->mb);
        assert_true(fx->log_count < MAX_LOG);
        fx->log[fx->log_count++] = r;
        if (match(r, arg))
            return r;
    }
    nx_exec_status_t st;
    nx_err_t err = {0};
    if (fx->exec && nx_exec_status(fx->exec, &st, &err) == NX_OK) { /* say where it stands */
        fprintf(stderr, "pool: %llu of %llu bytes free\n", (unsigned long long)st.pool.free_bytes,
                (unsigned long long)st.pool.total_bytes);
        for (size_t i = 0; i < st.model_count; i++)
            fprintf(stderr, "model %s: %s queue %u running %u\n", st.models[i].name,
                    st.models[i].state, st.models[i].queue, st.models[i].running);
        nx_exec_status_clear(&st);
    }
    fail_msg("no matching report within %d ms", WAIT_MS);
    return NULL;
}

static bool is_finished(const nx_report_t *r, const void *arg)
{
    return r->kind == NX_REPORT_FINISHED && r->task_id == *(const int64_t *)arg;
}

static bool is_started(const nx_report_t *r, const void *arg)
{
    return r->kind == NX_REPORT_STARTED && r->task_id == *(const int64_t *)arg;
}

static bool is_command(const nx_report_t *r, const void *arg)
{
    return r->kind == NX_REPORT_COMMAND && r->command_id == *(const uint64_t *)arg;
}

typedef struct model_match {
    const char *model, *state, *reason; /* NULL: any */
} model_match_t;

static bool is_model(const nx_report_t *r, const void *arg)
{
    const model_match_t *m = arg;
    return r->kind == NX_REPORT_MODEL && (!m->model || strcmp(r->model, m->model) == 0) &&
           (!m->state || strcmp(r->state, m->state) == 0) &&
           (!m->reason || strcmp(r->reason, m->reason) == 0);
}

static const nx_report_t *finished(fixture_t *fx, int64_t id)
{
    return wait_for(fx, is_finished, &id);
}

static size_t count_model(fixture_t *fx, const char *model, const char *state)
{
    size_t n = 0;
    model_match_t m = {model, state, NULL};
    for (size_t i = 0; i < fx->log_count; i++)
        n += is_model(fx->log[i], &m);
    return n;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    nx_agent_conf_t a = agent("writer", model_a, 12);
    a.system_prompt = "You are terse.";
    fixture_t *fx = fixture(1, &a, 32, 4, 256);
    start(fx, NX_POLICY_COST);
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, "Say hello.", false));
    const nx_report_t *r = finished(fx, 1);
    assert_int_equal(r->status, NX_TASK_DONE);
    assert_null(r->error_code);
    assert_non_null(r->text);
    assert_true(strlen(r->text) > 0);
    assert_true(r->prompt_tokens > 5);
    assert_true(r->completion_tokens >= 1 && r->completion_tokens <= 12);
    assert_true(r->timings.queue_ms >= 0 && r->timings.swap_ms > 0);
    assert_true(r->timings.queue_ms >= r->timings.swap_ms);
    assert_true(r->timings.ttft_ms >= r->timings.queue_ms);
    assert_true(r->timings.total_ms >= r->timings.ttft_ms);
    int64_t id = 1;
    wait_for(fx, is_started, &id); /* STARTED came before FINISHED: already in the log */
    assert_int_equal(count_model(fx, "qwen-a", "loading"), 1);
    assert_int_equal(count_model(fx, "qwen-a", "resident"), 1);
    finish_fixture(fx);
}

static void test_stream_concatenates(void **state)
{
    nx_agent_conf_t a = agent("streamer", model_b, 40);
    fixture_t *fx = fixture(1, &a, 32, 4, 256);
    start(fx, NX_POLICY_COST);
    nx_exec_submit(fx->exec, task(&fx->agents[0], 7, "Tell me a story.", true));
    const nx_report_t *r = finished(fx, 7);
    assert_int_equal(r->status, NX_TASK_DONE);
    char joined[8192] = "";
    size_t pieces = 0;
    for (size_t i = 0; i < fx->log_count; i++)
        if (fx->log[i]->kind == NX_REPORT_TOKEN && fx->log[i]->task_id == 7) {
            strncat(joined, fx->log[i]->text, sizeof joined - strlen(joined) - 1);
            pieces++;
        }
    assert_true(pieces >= 1);
    assert_string_equal(joined, r->text);
    finish_fixture(fx);
}

static void test_batched(void **state)
{
    nx_agent_conf_t a = agent("batcher", model_a, 24);
    fixture_t *fx = fixture(1, &a, 64, 8, 128);
    start(fx, NX_POLICY_COST);
    for (int64_t id = 1; id <= 8; id++)
        nx_exec_submit(fx->exec, task(&fx->agents[0], id, id % 2 ? "one" : "two two", false));
    for (int64_t id = 1; id <= 8; id++)
        assert_int_equal(finished(fx, id)->status, NX_TASK_DONE);
    int running = 0, max_running = 0;
    for (size_t i = 0; i < fx->log_count; i++) {
        if (fx->log[i]->kind == NX_REPORT_STARTED)
            running++;
        if (fx->log[i]->kind == NX_REPORT_FINISHED)
            running--;
        if (running > max_running)
            max_running = running;
    }
    assert_true(max_running > 1);
    assert_int_equal(count_model(fx, "qwen-a", "resident"), 1); /* loaded once */
    finish_fixture(fx);
}

/* Pool of 4 MiB (2 MiB chunks): one model's weights (2 MiB) and one sequence's KV (2 MiB)
 * fit, two models do not: every switch evicts. */
static void test_two_models_swap(void **state)
{
    nx_agent_conf_t agents[2] = {agent("a", model_a, 6), agent("b", model_b, 6)};
    fixture_t *fx = fixture(2, agents, 4, 2, 256);
    fx->conf.host_cache_bytes = 16ull << 20;
    start(fx, NX_POLICY_COST);
    for (int64_t id = 1; id <= 6; id++)
        nx_exec_submit(fx->exec, task(&fx->agents[(id - 1) % 2], id, "hi", false));
    for (int64_t id = 1; id <= 6; id++) {
        const nx_report_t *r = finished(fx, id);
        assert_int_equal(r->status, NX_TASK_DONE);
    }
    model_match_t ev = {NULL, "evicting", "pressure"};
    wait_for(fx, is_model, &ev);
    assert_true(count_model(fx, "qwen-a", "resident") >= 1);
    assert_true(count_model(fx, "llama-b", "resident") >= 1);
    assert_true(count_model(fx, NULL, "host") >= 1); /* evicted into the host cache */
    finish_fixture(fx);
}

/* Anti-starvation: in a pool that holds one model (as in test_two_models_swap), agent a's
 * model is kept busy, a new task submitted each time one finishes, four outstanding; b's one
 * task must still be served (its timeout of 10 s is the bound) while a keeps being fed,
 * instead of waiting behind a's stream until it times out. */
static void test_busy_model_does_not_starve_another(void **state)
{
    nx_agent_conf_t agents[2] = {agent("a", model_a, 100), agent("b", model_b, 4)};
    agents[1].timeout_ms = 10000;
    fixture_t *fx = fixture(2, agents, 4, 2, 256);
    start(fx, NX_POLICY_COST);
    int64_t next_a = 1;
    for (; next_a <= 4; next_a++)
        nx_exec_submit(fx->exec, task(&fx->agents[0], next_a, "hi", false));
    int64_t b_id = 1000000;
    bool b_submitted = false, b_done = false;
    uint32_t a_done = 0, a_done_after_b = 0;
    uint64_t deadline = nx_now_ns() + (uint64_t)WAIT_MS * 1000000ull;
    while (nx_now_ns() < deadline && !(b_done && a_done_after_b >= 3)) {
        if (!nx_mailbox_wait(fx->mb, 100))
            continue;
        nx_report_t *r = nx_mailbox_pop(fx->mb); /* not logged: a's stream is long */
        if (r->kind == NX_REPORT_STARTED && !b_submitted) { /* a is resident and running */
            nx_exec_submit(fx->exec, task(&fx->agents[1], b_id, "hi", false));
            b_submitted = true;
        }
        if (r->kind == NX_REPORT_FINISHED && r->task_id == b_id) {
            if (r->status != NX_TASK_DONE)
                fail_msg("b's task ended %s: %s", r->error_code ? r->error_code : "?",
                         r->message ? r->message : "");
            b_done = true;
        } else if (r->kind == NX_REPORT_FINISHED) {
            assert_int_equal(r->status, NX_TASK_DONE);
            a_done++;
            a_done_after_b += b_done;
            nx_exec_submit(fx->exec, task(&fx->agents[0], next_a++, "hi", false)); /* feed a */
        }
        nx_report_free(r);
    }
    assert_true(b_done);
    assert_true(a_done_after_b >= 3); /* a is served again once b is done */
    assert_true(a_done >= 3);
    finish_fixture(fx);
}

static void test_pinned_never_evicted(void **state)
{
    nx_agent_conf_t agents[2] = {agent("a", model_a, 6), agent("b", model_b, 6)};
    agents[0].pin = true;
    fixture_t *fx = fixture(2, agents, 4, 2, 256);
    start(fx, NX_POLICY_COST);
    model_match_t res = {"qwen-a", "resident", NULL};
    wait_for(fx, is_model, &res); /* pinned: loaded at start */
    nx_exec_submit(fx->exec, task(&fx->agents[1], 2, "hi", false));
    const nx_report_t *r = finished(fx, 2);
    assert_int_equal(r->status, NX_TASK_FAILED);
    assert_string_equal(r->error_code, "model_error");
    assert_non_null(strstr(r->message, "pinned"));
    nx_exec_submit(fx->exec, task(&fx->agents[0], 3, "hi", false));
    assert_int_equal(finished(fx, 3)->status, NX_TASK_DONE);
    assert_int_equal(count_model(fx, "qwen-a", "evicting"), 0);
    finish_fixture(fx);
}

static void test_keep_alive(void **state)
{
    nx_agent_conf_t a = agent("brief", model_a, 4);
    a.keep_alive_s = 1;
    fixture_t *fx = fixture(1, &a, 32, 2, 128);
    start(fx, NX_POLICY_COST);
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, "hi", false));
    assert_int_equal(finished(fx, 1)->status, NX_TASK_DONE);
    model_match_t gone = {"qwen-a", "disk", "keep_alive"};
    wait_for(fx, is_model, &gone);
    nx_exec_status_t st;
    nx_err_t err = {0};
    for (int i = 0; i < 100; i++) { /* the status copy follows within a loop turn */
        assert_int_equal(nx_exec_status(fx->exec, &st, &err), NX_OK);
        bool disk = strcmp(st.models[0].state, "disk") == 0;
        nx_exec_status_clear(&st);
        if (disk)
            break;
        usleep(20000);
    }
    assert_int_equal(nx_exec_status(fx->exec, &st, &err), NX_OK);
    assert_string_equal(st.models[0].state, "disk");
    nx_exec_status_clear(&st);
    finish_fixture(fx);
}

static void test_cancel(void **state)
{
    nx_agent_conf_t a = agent("long", model_a, 3000); /* qwen tiny never says eos */
    fixture_t *fx = fixture(1, &a, 64, 1, 4096);
    start(fx, NX_POLICY_COST);
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, "go on", false));
    nx_exec_submit(fx->exec, task(&fx->agents[0], 2, "queued", false));
    int64_t id = 1;
    wait_for(fx, is_started, &id);
    nx_exec_cancel(fx->exec, 2); /* queued: max_batch 1 keeps it waiting */
    const nx_report_t *r = finished(fx, 2);
    assert_int_equal(r->status, NX_TASK_CANCELED);
    assert_string_equal(r->error_code, "canceled");
    nx_exec_cancel(fx->exec, 1); /* running */
    r = finished(fx, 1);
    assert_int_equal(r->status, NX_TASK_CANCELED);
    assert_true(r->completion_tokens < 3000);
    for (size_t i = 0; i < fx->log_count; i++) /* the canceled queued task never started */
        assert_false(fx->log[i]->kind == NX_REPORT_STARTED && fx->log[i]->task_id == 2);
    finish_fixture(fx);
}

static void test_context_full_and_timeout(void **state)
{
    nx_agent_conf_t agents[2] = {agent("small", model_a, 4), agent("late", model_a, 4)};
    agents[1].timeout_ms = 5000;
    fixture_t *fx = fixture(2, agents, 32, 2, 32);
    start(fx, NX_POLICY_COST);
    char input[2048];
    memset(input, 0, sizeof input);
    for (int i = 0; i < 60; i++)
        strcat(input, "words and ");
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, input, false));
    const nx_report_t *r = finished(fx, 1);
    assert_int_equal(r->status, NX_TASK_FAILED);
    assert_string_equal(r->error_code, "context_full");
    nx_exec_task_t *t = task(&fx->agents[1], 2, "hi", false);
    t->accepted_ns = nx_now_ns() - 10ull * 1000000000ull; /* accepted 10 s ago: past 5 s */
    nx_exec_submit(fx->exec, t);
    r = finished(fx, 2);
    assert_int_equal(r->status, NX_TASK_FAILED);
    assert_string_equal(r->error_code, "timeout");
    nx_exec_submit(fx->exec, task(&fx->agents[1], 3, "hi", false)); /* a fresh one is fine */
    assert_int_equal(finished(fx, 3)->status, NX_TASK_DONE);
    finish_fixture(fx);
}

static void test_model_error(void **state)
{
    nx_agent_conf_t agents[2] = {agent("bad", model_bad, 4), agent("good", model_a, 4)};
    fixture_t *fx = fixture(2, agents, 32, 2, 128);
    start(fx, NX_POLICY_COST);
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, "hi", false));
    nx_exec_submit(fx->exec, task(&fx->agents[1], 2, "hi", false));
    const nx_report_t *r = finished(fx, 1);
    assert_int_equal(r->status, NX_TASK_FAILED);
    assert_string_equal(r->error_code, "model_error");
    assert_non_null(strstr(r->message, "broken"));
    assert_int_equal(finished(fx, 2)->status, NX_TASK_DONE);
    finish_fixture(fx);
}

static void test_status_and_commands(void **state)
{
    nx_agent_conf_t agents[3] = {agent("a1", model_a, 4), agent("a2", model_a, 4),
                                 agent("b", model_b, 4)};
    agents[1].priority = 5;
    fixture_t *fx = fixture(3, agents, 32, 2, 128);
    start(fx, NX_POLICY_COST);
    nx_exec_status_t st;
    nx_err_t err = {0};
    assert_int_equal(nx_exec_status(fx->exec, &st, &err), NX_OK);
    assert_int_equal(st.model_count, 2); /* two agents share qwen-a */
    assert_string_equal(st.models[0].name, "qwen-a");
    assert_string_equal(st.models[0].state, "disk");
    assert_int_equal(st.models[0].priority, 5);
    assert_true(st.models[0].last_used_ms_ago < 0);
    assert_true(st.models[0].bytes > 0);
    assert_int_equal(st.pool.total_bytes, 32ull << 20);
    nx_exec_status_clear(&st);

    uint64_t cmd = 1;
    nx_exec_command(fx->exec, NX_OP_LOAD, "qwen-a", cmd);
    const nx_report_t *r = wait_for(fx, is_command, &cmd);
    assert_null(r->error_code);
    assert_string_equal(r->state, "resident");
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, "hi", false));
    nx_exec_submit(fx->exec, task(&fx->agents[1], 2, "hi", false));
    assert_int_equal(finished(fx, 1)->status, NX_TASK_DONE);
    assert_int_equal(finished(fx, 2)->timings.swap_ms, 0); /* already resident */
    assert_int_equal(count_model(fx, "qwen-a", "loading"), 1); /* weights loaded once */

    cmd = 2;
    nx_exec_command(fx->exec, NX_OP_PIN, "qwen-a", cmd);
    assert_null(wait_for(fx, is_command, &cmd)->error_code);
    cmd = 3;
    nx_exec_command(fx->exec, NX_OP_EVICT, "qwen-a", cmd);
    r = wait_for(fx, is_command, &cmd);
    assert_string_equal(r->error_code, "busy");
    cmd = 4;
    nx_exec_command(fx->exec, NX_OP_UNPIN, "qwen-a", cmd);
    assert_null(wait_for(fx, is_command, &cmd)->error_code);
    cmd = 5;
    nx_exec_command(fx->exec, NX_OP_EVICT, "qwen-a", cmd);
    r = wait_for(fx, is_command, &cmd);
    assert_null(r->error_code);
    assert_string_equal(r->state, "disk");
    cmd = 6;
    nx_exec_command(fx->exec, NX_OP_LOAD, "no-such-model", cmd);
    r = wait_for(fx, is_command, &cmd);
    assert_string_equal(r->error_code, "unknown_model");

    assert_int_equal(nx_exec_status(fx->exec, &st, &err), NX_OK);
    assert_string_equal(st.models[0].state, "disk");
    assert_int_equal(st.models[0].loads, 1);
    assert_true(st.models[0].last_swap_ms > 0);
    assert_true(st.models[0].last_used_ms_ago >= 0);
    assert_int_equal(st.models[0].queue + st.models[0].running, 0);
    assert_string_equal(st.models[1].state, "disk");
    assert_int_equal(st.models[1].loads, 0);
    nx_exec_status_clear(&st);
    finish_fixture(fx);
}

static void test_prefetch_next_model(void **state)
{
    nx_agent_conf_t agents[2] = {agent("first", model_a, 4), agent("second", model_b, 4)};
    fixture_t *fx = fixture(2, agents, 32, 2, 128);
    start(fx, NX_POLICY_COST);
    nx_exec_task_t *t = task(&fx->agents[0], 1, "hi", false);
    t->next_model = model_b;
    nx_exec_submit(fx->exec, t);
    model_match_t pre = {"llama-b", "resident", "prefetch"};
    wait_for(fx, is_model, &pre); /* loaded with nothing queued for it */
    assert_int_equal(finished(fx, 1)->status, NX_TASK_DONE);
    nx_exec_submit(fx->exec, task(&fx->agents[1], 2, "hi", false));
    const nx_report_t *r = finished(fx, 2);
    assert_int_equal(r->status, NX_TASK_DONE);
    assert_true(r->timings.swap_ms == 0); /* already there */
    assert_int_equal(count_model(fx, "llama-b", "loading"), 1);
    finish_fixture(fx);
}

static void test_shutdown_finishes_tasks(void **state)
{
    nx_agent_conf_t a = agent("long", model_a, 3000);
    fixture_t *fx = fixture(1, &a, 64, 1, 4096);
    start(fx, NX_POLICY_COST);
    nx_exec_submit(fx->exec, task(&fx->agents[0], 1, "go on", false));
    nx_exec_submit(fx->exec, task(&fx->agents[0], 2, "queued", false));
    int64_t id = 1;
    wait_for(fx, is_started, &id);
    nx_exec_destroy(&fx->exec); /* the reports are already in the mailbox */
    for (id = 1; id <= 2; id++) {
        const nx_report_t *r = finished(fx, id);
        assert_int_equal(r->status, NX_TASK_FAILED);
        assert_string_equal(r->error_code, "shutting_down");
    }
    finish_fixture(fx);
}

static void test_refuses_model_larger_than_pool(void **state)
{
    nx_agent_conf_t a = agent("big", model_a, 4);
    fixture_t *fx = fixture(1, &a, 2, 2, 256); /* 2 MiB: weights fit, weights + KV do not */
    nx_err_t err = {0};
    nx_exec_opts_t opts = {.conf = &fx->conf, .report = on_report, .report_user = fx};
    fx->exec = nx_exec_new(&opts, &err);
    assert_null(fx->exec);
    assert_int_equal(err.code, NX_EPOOLFULL);
    assert_non_null(strstr(err.msg, "qwen-a"));
    finish_fixture(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_stream_concatenates),
        cmocka_unit_test(test_batched),
        cmocka_unit_test(test_two_models_swap),
        cmocka_unit_test(test_busy_model_does_not_starve_another),
        cmocka_unit_test(test_pinned_never_evicted),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_context_full_and_timeout),
        cmocka_unit_test(test_model_error),
        cmocka_unit_test(test_status_and_commands),
        cmocka_unit_test(test_prefetch_next_model),
        cmocka_unit_test(test_shutdown_finishes_tasks),
        cmocka_unit_test(test_refuses_model_larger_than_pool),
    };
    if (getenv("NX_TEST_FILTER")) /* run some tests only: a glob on their names */
        cmocka_set_test_filter(getenv("NX_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
